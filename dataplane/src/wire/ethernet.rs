//! Ethernet II frames with up to two 802.1Q / 802.1ad VLAN tags.
//!
//! ```text
//!  0      6      12          14 (untagged) / 18 (one tag) / 22 (two tags)
//! +------+------+-[TPID TCI]-[TPID TCI]-+-----------+---------
//! | dst  | src  |  optional VLAN tags    | ethertype | payload
//! +------+------+------------------------+-----------+---------
//! ```

use core::fmt;
use core::str::FromStr;
use std::net::{Ipv4Addr, Ipv6Addr};

use super::{be16, set_be16, Error, Result};

/// EtherType values the dataplane recognises.
pub mod ethertype {
    /// Internet Protocol version 4.
    pub const IPV4: u16 = 0x0800;
    /// Address Resolution Protocol.
    pub const ARP: u16 = 0x0806;
    /// Internet Protocol version 6.
    pub const IPV6: u16 = 0x86dd;
    /// IEEE 802.1Q customer VLAN tag (C-tag).
    pub const VLAN: u16 = 0x8100;
    /// IEEE 802.1ad service VLAN tag (S-tag, "QinQ").
    pub const QINQ: u16 = 0x88a8;
}

/// Length of an untagged Ethernet II header.
pub const ETHERNET_HEADER_LEN: usize = 14;
/// Length of one VLAN tag (TPID + TCI).
pub const VLAN_TAG_LEN: usize = 4;

/// A 48-bit IEEE 802 MAC address.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default, PartialOrd, Ord)]
pub struct EthernetAddress(pub [u8; 6]);

impl EthernetAddress {
    /// `ff:ff:ff:ff:ff:ff`.
    pub const BROADCAST: EthernetAddress = EthernetAddress([0xff; 6]);

    /// The address in the first six bytes of `bytes`, or `None` if fewer than six are given.
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        let b: [u8; 6] = bytes.get(..6)?.try_into().ok()?;
        Some(EthernetAddress(b))
    }

    /// The six octets.
    pub const fn as_bytes(&self) -> &[u8; 6] {
        &self.0
    }

    /// `ff:ff:ff:ff:ff:ff`.
    pub fn is_broadcast(&self) -> bool {
        *self == Self::BROADCAST
    }

    /// The I/G bit is set (group address). Broadcast is multicast too.
    pub fn is_multicast(&self) -> bool {
        self.0[0] & 0x01 != 0
    }

    /// The I/G bit is clear (individual address).
    pub fn is_unicast(&self) -> bool {
        !self.is_multicast()
    }

    /// The U/L bit is set (locally administered, like the lab's `02:..` addresses).
    pub fn is_locally_administered(&self) -> bool {
        self.0[0] & 0x02 != 0
    }

    /// The multicast MAC an IPv4 group maps to (RFC 1112 §6.4): `01:00:5e` + low 23 bits.
    pub fn ipv4_multicast(addr: Ipv4Addr) -> Self {
        let o = addr.octets();
        EthernetAddress([0x01, 0x00, 0x5e, o[1] & 0x7f, o[2], o[3]])
    }

    /// The multicast MAC an IPv6 group maps to (RFC 2464 §7): `33:33` + low 32 bits.
    pub fn ipv6_multicast(addr: &Ipv6Addr) -> Self {
        let o = addr.octets();
        EthernetAddress([0x33, 0x33, o[12], o[13], o[14], o[15]])
    }
}

impl fmt::Display for EthernetAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = &self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            b[0], b[1], b[2], b[3], b[4], b[5]
        )
    }
}

impl fmt::Debug for EthernetAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EthernetAddress({self})")
    }
}

/// A string that is not a MAC address in `02:00:00:00:01:01` form.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParseMacError;

impl fmt::Display for ParseMacError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("invalid MAC address: expected six two-digit hex octets like 02:00:00:00:01:01")
    }
}

impl std::error::Error for ParseMacError {}

impl FromStr for EthernetAddress {
    type Err = ParseMacError;

    /// Parses six two-digit hex octets separated by `:` (or, consistently, by `-`).
    fn from_str(s: &str) -> core::result::Result<Self, ParseMacError> {
        let bytes = s.as_bytes();
        // "xx:xx:xx:xx:xx:xx" is exactly 17 bytes; checking first keeps the indexing below in range.
        if bytes.len() != 17 {
            return Err(ParseMacError);
        }
        let sep = bytes[2];
        if sep != b':' && sep != b'-' {
            return Err(ParseMacError);
        }
        let mut out = [0u8; 6];
        for (i, octet) in out.iter_mut().enumerate() {
            let at = i * 3;
            if i > 0 && bytes[at - 1] != sep {
                return Err(ParseMacError);
            }
            let hi = hex_digit(bytes[at]).ok_or(ParseMacError)?;
            let lo = hex_digit(bytes[at + 1]).ok_or(ParseMacError)?;
            *octet = (hi << 4) | lo;
        }
        Ok(EthernetAddress(out))
    }
}

fn hex_digit(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

impl serde::Serialize for EthernetAddress {
    fn serialize<S: serde::Serializer>(
        &self,
        serializer: S,
    ) -> core::result::Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for EthernetAddress {
    fn deserialize<D: serde::Deserializer<'de>>(
        deserializer: D,
    ) -> core::result::Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = EthernetAddress;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a MAC address string like \"02:00:00:00:01:01\"")
            }
            fn visit_str<E: serde::de::Error>(
                self,
                v: &str,
            ) -> core::result::Result<Self::Value, E> {
                v.parse().map_err(E::custom)
            }
        }
        deserializer.deserialize_str(Visitor)
    }
}

/// The VLAN tagging of a frame. VIDs are the low 12 bits of the TCI; PCP and DEI are not kept.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default)]
pub enum Vlan {
    /// No tag.
    #[default]
    Untagged,
    /// One 802.1Q (0x8100) or 802.1ad (0x88a8) tag.
    Single {
        /// VLAN identifier, 0..=4095.
        vid: u16,
    },
    /// QinQ: an outer tag (0x88a8, or 0x8100) followed by an inner 0x8100 tag.
    Double {
        /// Outer (service) VLAN identifier.
        outer: u16,
        /// Inner (customer) VLAN identifier.
        inner: u16,
    },
}

impl Vlan {
    /// Bytes the tags occupy: 0, 4 or 8.
    pub fn tag_len(self) -> usize {
        match self {
            Vlan::Untagged => 0,
            Vlan::Single { .. } => VLAN_TAG_LEN,
            Vlan::Double { .. } => 2 * VLAN_TAG_LEN,
        }
    }

    /// Length of the whole Ethernet header with these tags: 14, 18 or 22.
    pub fn header_len(self) -> usize {
        ETHERNET_HEADER_LEN + self.tag_len()
    }
}

/// Offsets of the header's fields, for code that rewrites them in place where a view would
/// cost (the NAT fast path).
pub mod field {
    pub const DST: core::ops::Range<usize> = 0..6;
    pub const SRC: core::ops::Range<usize> = 6..12;
    /// EtherType of an untagged frame, or the TPID of the outer tag.
    pub const TYPE0: usize = 12;
    pub const TCI0: usize = 14;
    pub const TYPE1: usize = 16;
    pub const TCI1: usize = 18;
    pub const TYPE2: usize = 20;
}

const VID_MASK: u16 = 0x0fff;

fn is_tpid(t: u16) -> bool {
    t == ethertype::VLAN || t == ethertype::QINQ
}

/// A read/write view of an Ethernet II frame.
#[derive(Debug, Clone)]
pub struct EthernetFrame<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> EthernetFrame<T> {
    /// Wraps `buffer` without validation. Accessors may panic unless `buffer` passed
    /// [`new_checked`](Self::new_checked) before.
    pub const fn new_unchecked(buffer: T) -> Self {
        EthernetFrame { buffer }
    }

    /// Wraps `buffer` after checking that the header, including any VLAN tags, fits.
    ///
    /// `Truncated` if the buffer ends inside the header; `BadHeader` for a third VLAN tag or an
    /// 802.1ad S-tag nested inside another tag.
    pub fn new_checked(buffer: T) -> Result<Self> {
        let b = buffer.as_ref();
        if b.len() < ETHERNET_HEADER_LEN {
            return Err(Error::Truncated);
        }
        if is_tpid(be16(b, field::TYPE0)) {
            if b.len() < ETHERNET_HEADER_LEN + VLAN_TAG_LEN {
                return Err(Error::Truncated);
            }
            match be16(b, field::TYPE1) {
                ethertype::VLAN => {
                    if b.len() < ETHERNET_HEADER_LEN + 2 * VLAN_TAG_LEN {
                        return Err(Error::Truncated);
                    }
                    if is_tpid(be16(b, field::TYPE2)) {
                        return Err(Error::BadHeader);
                    }
                }
                // An S-tag only ever comes outermost.
                ethertype::QINQ => return Err(Error::BadHeader),
                _ => {}
            }
        }
        Ok(EthernetFrame { buffer })
    }

    /// Returns the underlying buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// Number of VLAN tags (0, 1 or 2), read from a validated buffer.
    fn tags(&self) -> usize {
        let b = self.buffer.as_ref();
        if !is_tpid(be16(b, field::TYPE0)) {
            0
        } else if be16(b, field::TYPE1) == ethertype::VLAN {
            2
        } else {
            1
        }
    }

    /// Destination MAC address.
    pub fn dst(&self) -> EthernetAddress {
        let mut a = [0u8; 6];
        a.copy_from_slice(&self.buffer.as_ref()[field::DST]);
        EthernetAddress(a)
    }

    /// Source MAC address.
    pub fn src(&self) -> EthernetAddress {
        let mut a = [0u8; 6];
        a.copy_from_slice(&self.buffer.as_ref()[field::SRC]);
        EthernetAddress(a)
    }

    /// The VLAN tags (VIDs only).
    pub fn vlan(&self) -> Vlan {
        let b = self.buffer.as_ref();
        match self.tags() {
            0 => Vlan::Untagged,
            1 => Vlan::Single {
                vid: be16(b, field::TCI0) & VID_MASK,
            },
            _ => Vlan::Double {
                outer: be16(b, field::TCI0) & VID_MASK,
                inner: be16(b, field::TCI1) & VID_MASK,
            },
        }
    }

    /// 802.1p priority code point of the outermost tag; 0 when untagged.
    pub fn pcp(&self) -> u8 {
        if self.tags() == 0 {
            0
        } else {
            self.buffer.as_ref()[field::TCI0] >> 5
        }
    }

    /// EtherType of the payload (the one after any tags).
    pub fn ethertype(&self) -> u16 {
        be16(self.buffer.as_ref(), self.ethertype_at())
    }

    fn ethertype_at(&self) -> usize {
        field::TYPE0 + self.tags() * VLAN_TAG_LEN
    }

    /// Header length including tags: 14, 18 or 22.
    pub fn header_len(&self) -> usize {
        ETHERNET_HEADER_LEN + self.tags() * VLAN_TAG_LEN
    }

    /// Everything after the header (including any trailing padding).
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[self.header_len()..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> EthernetFrame<T> {
    /// Sets the destination MAC address.
    pub fn set_dst(&mut self, addr: EthernetAddress) {
        self.buffer.as_mut()[field::DST].copy_from_slice(&addr.0);
    }

    /// Sets the source MAC address.
    pub fn set_src(&mut self, addr: EthernetAddress) {
        self.buffer.as_mut()[field::SRC].copy_from_slice(&addr.0);
    }

    /// Sets the payload EtherType (after any tags). Setting a TPID value here would change how
    /// the frame parses; callers pass payload types only.
    pub fn set_ethertype(&mut self, value: u16) {
        let at = self.ethertype_at();
        set_be16(self.buffer.as_mut(), at, value);
    }

    /// Everything after the header, writable.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let at = self.header_len();
        &mut self.buffer.as_mut()[at..]
    }
}

/// Writes an Ethernet header at `buf[0..]` and returns its length (14, 18 or 22).
///
/// A double tag uses TPID 0x88a8 outside and 0x8100 inside; PCP and DEI are written as 0.
/// `Truncated` if `buf` is too short; `BadHeader` for a VID above 4095.
pub fn emit_header(
    buf: &mut [u8],
    dst: EthernetAddress,
    src: EthernetAddress,
    vlan: Vlan,
    ethertype: u16,
) -> Result<usize> {
    let len = vlan.header_len();
    let hdr = buf.get_mut(..len).ok_or(Error::Truncated)?;
    let tags: [(u16, u16); 2];
    let tags: &[(u16, u16)] = match vlan {
        Vlan::Untagged => &[],
        Vlan::Single { vid } => {
            tags = [(ethertype::VLAN, vid), (0, 0)];
            &tags[..1]
        }
        Vlan::Double { outer, inner } => {
            tags = [(ethertype::QINQ, outer), (ethertype::VLAN, inner)];
            &tags[..]
        }
    };
    if tags.iter().any(|&(_, vid)| vid > VID_MASK) {
        return Err(Error::BadHeader);
    }
    hdr[field::DST].copy_from_slice(&dst.0);
    hdr[field::SRC].copy_from_slice(&src.0);
    let mut at = field::TYPE0;
    for &(tpid, vid) in tags {
        set_be16(hdr, at, tpid);
        set_be16(hdr, at + 2, vid);
        at += VLAN_TAG_LEN;
    }
    set_be16(hdr, at, ethertype);
    Ok(len)
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> EthernetFrame<T> {
    /// Writes the VLAN tags (TPID 0x88a8 outside and 0x8100 inside for a double tag, PCP and DEI
    /// 0; VIDs keep their low 12 bits) and clears the EtherType field after them: call
    /// [`set_ethertype`](Self::set_ethertype) next. The buffer must hold the header with these
    /// tags ([`Vlan::header_len`]).
    pub fn set_vlan(&mut self, vlan: Vlan) {
        let b = self.buffer.as_mut();
        let mut at = field::TYPE0;
        let tags: [(u16, u16); 2] = match vlan {
            Vlan::Untagged => [(0, 0); 2],
            Vlan::Single { vid } => [(ethertype::VLAN, vid), (0, 0)],
            Vlan::Double { outer, inner } => [(ethertype::QINQ, outer), (ethertype::VLAN, inner)],
        };
        for (tpid, vid) in tags.into_iter().take(vlan.tag_len() / VLAN_TAG_LEN) {
            set_be16(b, at, tpid);
            set_be16(b, at + 2, vid & VID_MASK);
            at += VLAN_TAG_LEN;
        }
        set_be16(b, at, 0);
    }
}

/// The high-level form of an Ethernet II header (smoltcp's `EthernetRepr`): addresses, VLAN
/// tags and the payload's EtherType.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct EthernetRepr {
    pub src: EthernetAddress,
    pub dst: EthernetAddress,
    /// The tags; VIDs above 4095 are written with their low 12 bits.
    pub vlan: Vlan,
    /// The payload's EtherType (after any tags).
    pub ethertype: u16,
}

impl EthernetRepr {
    /// Reads the header of a checked frame.
    pub fn parse<T: AsRef<[u8]>>(frame: &EthernetFrame<T>) -> Result<EthernetRepr> {
        Ok(EthernetRepr {
            src: frame.src(),
            dst: frame.dst(),
            vlan: frame.vlan(),
            ethertype: frame.ethertype(),
        })
    }

    /// The header's length: 14, 18 or 22.
    pub fn buffer_len(&self) -> usize {
        self.vlan.header_len()
    }

    /// Writes the header through the view's setters. The buffer must be at least
    /// [`buffer_len`](Self::buffer_len) bytes long.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, frame: &mut EthernetFrame<T>) {
        frame.set_dst(self.dst);
        frame.set_src(self.src);
        frame.set_vlan(self.vlan);
        frame.set_ethertype(self.ethertype);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const CLIENT_PORT: EthernetAddress = EthernetAddress([0x02, 0, 0, 0, 0x01, 0x01]);
    const ROUTER: EthernetAddress = EthernetAddress([0x02, 0, 0, 0, 0x01, 0xfe]);

    /// Untagged frame from the upstream router to the appliance client port, carrying the first
    /// bytes of an IPv4 header, plus two bytes of padding.
    const UNTAGGED: [u8; 18] = [
        0x02, 0x00, 0x00, 0x00, 0x01, 0x01, // dst
        0x02, 0x00, 0x00, 0x00, 0x01, 0xfe, // src
        0x08, 0x00, // IPv4
        0x45, 0x00, 0x00, 0x00,
    ];

    /// 802.1Q tag, PCP 5, VID 100, carrying IPv6.
    const SINGLE: [u8; 20] = [
        0x02, 0x00, 0x00, 0x00, 0x01, 0x01, //
        0x02, 0x00, 0x00, 0x00, 0x01, 0xfe, //
        0x81, 0x00, 0xa0, 0x64, // TPID, PCP 5 / VID 100
        0x86, 0xdd, // IPv6
        0x60, 0x00,
    ];

    /// 802.1ad S-tag VID 200 (PCP 3, DEI 1), C-tag VID 4095, carrying ARP.
    const DOUBLE: [u8; 24] = [
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, //
        0x02, 0x00, 0x00, 0x00, 0x01, 0xfe, //
        0x88, 0xa8, 0x70, 0xc8, // S-tag: PCP 3, DEI 1, VID 200
        0x81, 0x00, 0x0f, 0xff, // C-tag: VID 4095
        0x08, 0x06, // ARP
        0x00, 0x01,
    ];

    #[test]
    fn parses_untagged() {
        let f = EthernetFrame::new_checked(&UNTAGGED[..]).unwrap();
        assert_eq!(f.dst(), CLIENT_PORT);
        assert_eq!(f.src(), ROUTER);
        assert_eq!(f.vlan(), Vlan::Untagged);
        assert_eq!(f.pcp(), 0);
        assert_eq!(f.ethertype(), ethertype::IPV4);
        assert_eq!(f.header_len(), 14);
        assert_eq!(f.payload(), &[0x45, 0, 0, 0]);
    }

    #[test]
    fn parses_single_tag() {
        let f = EthernetFrame::new_checked(&SINGLE[..]).unwrap();
        assert_eq!(f.vlan(), Vlan::Single { vid: 100 });
        assert_eq!(f.pcp(), 5);
        assert_eq!(f.ethertype(), ethertype::IPV6);
        assert_eq!(f.header_len(), 18);
        assert_eq!(f.payload(), &[0x60, 0x00]);
    }

    #[test]
    fn parses_single_s_tag() {
        let mut b = SINGLE;
        b[12..14].copy_from_slice(&[0x88, 0xa8]);
        let f = EthernetFrame::new_checked(&b[..]).unwrap();
        assert_eq!(f.vlan(), Vlan::Single { vid: 100 });
        assert_eq!(f.ethertype(), ethertype::IPV6);
    }

    #[test]
    fn parses_double_tag() {
        let f = EthernetFrame::new_checked(&DOUBLE[..]).unwrap();
        assert!(f.dst().is_broadcast());
        assert_eq!(
            f.vlan(),
            Vlan::Double {
                outer: 200,
                inner: 4095
            }
        );
        assert_eq!(f.pcp(), 3);
        assert_eq!(f.ethertype(), ethertype::ARP);
        assert_eq!(f.header_len(), 22);
        assert_eq!(f.payload(), &[0x00, 0x01]);
        // 0x8100 outside 0x8100 is also QinQ (older equipment).
        let mut b = DOUBLE;
        b[12..14].copy_from_slice(&[0x81, 0x00]);
        let f = EthernetFrame::new_checked(&b[..]).unwrap();
        assert_eq!(
            f.vlan(),
            Vlan::Double {
                outer: 200,
                inner: 4095
            }
        );
    }

    #[test]
    fn rejects_third_tag_and_nested_s_tag() {
        for tpid in [[0x81, 0x00], [0x88, 0xa8]] {
            let mut b = DOUBLE;
            b[20..22].copy_from_slice(&tpid);
            assert_eq!(
                EthernetFrame::new_checked(&b[..]).unwrap_err(),
                Error::BadHeader
            );
        }
        let mut b = DOUBLE;
        b[16..18].copy_from_slice(&[0x88, 0xa8]);
        assert_eq!(
            EthernetFrame::new_checked(&b[..]).unwrap_err(),
            Error::BadHeader
        );
    }

    #[test]
    fn truncated_at_every_length() {
        for (frame, hdr) in [(&UNTAGGED[..], 14), (&SINGLE[..], 18), (&DOUBLE[..], 22)] {
            for len in 0..hdr {
                assert_eq!(
                    EthernetFrame::new_checked(&frame[..len]).unwrap_err(),
                    Error::Truncated,
                    "len {len}"
                );
            }
            // Header only: valid, empty payload.
            let f = EthernetFrame::new_checked(&frame[..hdr]).unwrap();
            assert!(f.payload().is_empty());
        }
    }

    #[test]
    fn setters() {
        let mut b = DOUBLE;
        let mut f = EthernetFrame::new_checked(&mut b[..]).unwrap();
        f.set_dst(CLIENT_PORT);
        f.set_src(ROUTER);
        f.set_ethertype(ethertype::IPV4);
        f.payload_mut()[0] = 0x45;
        assert_eq!(f.dst(), CLIENT_PORT);
        assert_eq!(f.ethertype(), ethertype::IPV4);
        assert_eq!(&b[..6], &CLIENT_PORT.0);
        assert_eq!(&b[20..23], &[0x08, 0x00, 0x45]);
        // The tags are untouched.
        assert_eq!(&b[12..20], &DOUBLE[12..20]);
    }

    #[test]
    fn emit_matches_fixtures() {
        let mut buf = [0u8; 22];
        let n = emit_header(
            &mut buf,
            CLIENT_PORT,
            ROUTER,
            Vlan::Untagged,
            ethertype::IPV4,
        )
        .unwrap();
        assert_eq!(n, 14);
        assert_eq!(buf[..14], UNTAGGED[..14]);

        let n = emit_header(
            &mut buf,
            CLIENT_PORT,
            ROUTER,
            Vlan::Single { vid: 100 },
            ethertype::IPV6,
        )
        .unwrap();
        assert_eq!(n, 18);
        // PCP is emitted as 0.
        assert_eq!(
            buf[..18],
            [&SINGLE[..14], &[0x00, 0x64, 0x86, 0xdd]].concat()[..]
        );

        let vlan = Vlan::Double {
            outer: 200,
            inner: 4095,
        };
        let n = emit_header(
            &mut buf,
            EthernetAddress::BROADCAST,
            ROUTER,
            vlan,
            ethertype::ARP,
        )
        .unwrap();
        assert_eq!(n, 22);
        assert_eq!(
            buf,
            [
                0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02, 0x00, 0x00, 0x00, 0x01, 0xfe, 0x88, 0xa8,
                0x00, 0xc8, 0x81, 0x00, 0x0f, 0xff, 0x08, 0x06
            ]
        );
    }

    #[test]
    fn emit_errors() {
        for vlan in [
            Vlan::Untagged,
            Vlan::Single { vid: 1 },
            Vlan::Double { outer: 1, inner: 2 },
        ] {
            let mut buf = vec![0u8; vlan.header_len() - 1];
            assert_eq!(
                emit_header(&mut buf, CLIENT_PORT, ROUTER, vlan, ethertype::IPV4),
                Err(Error::Truncated)
            );
        }
        let mut buf = [0u8; 22];
        assert_eq!(
            emit_header(
                &mut buf,
                CLIENT_PORT,
                ROUTER,
                Vlan::Single { vid: 4096 },
                0x0800
            ),
            Err(Error::BadHeader)
        );
        assert_eq!(
            emit_header(
                &mut buf,
                CLIENT_PORT,
                ROUTER,
                Vlan::Double {
                    outer: 1,
                    inner: 0xffff
                },
                0x0800
            ),
            Err(Error::BadHeader)
        );
        // Nothing written on error.
        assert_eq!(buf, [0u8; 22]);
    }

    #[test]
    fn vlan_lengths() {
        assert_eq!(Vlan::Untagged.tag_len(), 0);
        assert_eq!(Vlan::Single { vid: 7 }.tag_len(), 4);
        assert_eq!(Vlan::Double { outer: 1, inner: 2 }.tag_len(), 8);
        assert_eq!(Vlan::default().header_len(), 14);
        assert_eq!(Vlan::Single { vid: 7 }.header_len(), 18);
        assert_eq!(Vlan::Double { outer: 1, inner: 2 }.header_len(), 22);
    }

    #[test]
    fn address_classes() {
        assert!(EthernetAddress::BROADCAST.is_broadcast());
        assert!(EthernetAddress::BROADCAST.is_multicast());
        assert!(!EthernetAddress::BROADCAST.is_unicast());
        assert!(CLIENT_PORT.is_unicast());
        assert!(!CLIENT_PORT.is_multicast());
        assert!(CLIENT_PORT.is_locally_administered());
        assert!(!CLIENT_PORT.is_broadcast());
        assert_eq!(
            EthernetAddress::ipv4_multicast(Ipv4Addr::new(224, 0, 0, 18)),
            EthernetAddress([0x01, 0x00, 0x5e, 0x00, 0x00, 0x12])
        );
        // The high bit of the second octet is dropped.
        assert_eq!(
            EthernetAddress::ipv4_multicast(Ipv4Addr::new(239, 255, 1, 2)),
            EthernetAddress([0x01, 0x00, 0x5e, 0x7f, 0x01, 0x02])
        );
        // Solicited-node multicast for gw1's IPv6 address.
        let sn: Ipv6Addr = "ff02::1:ff00:11".parse().unwrap();
        assert_eq!(
            EthernetAddress::ipv6_multicast(&sn),
            EthernetAddress([0x33, 0x33, 0xff, 0x00, 0x00, 0x11])
        );
        assert!(EthernetAddress::ipv6_multicast(&sn).is_multicast());
    }

    #[test]
    fn from_bytes() {
        assert_eq!(EthernetAddress::from_bytes(&UNTAGGED[..5]), None);
        assert_eq!(EthernetAddress::from_bytes(&UNTAGGED), Some(CLIENT_PORT));
    }

    #[test]
    fn display_and_parse() {
        assert_eq!(CLIENT_PORT.to_string(), "02:00:00:00:01:01");
        assert_eq!(
            format!("{CLIENT_PORT:?}"),
            "EthernetAddress(02:00:00:00:01:01)"
        );
        assert_eq!("02:00:00:00:01:fe".parse(), Ok(ROUTER));
        assert_eq!("02:00:00:00:01:FE".parse(), Ok(ROUTER));
        assert_eq!("02-00-00-00-01-fe".parse(), Ok(ROUTER));
        for bad in [
            "",
            "02:00:00:00:01",
            "02:00:00:00:01:fe:",
            "02:00:00:00:01:f",
            "02:00:00:00:01:fg",
            "02-00:00:00:01:fe",
            "02.00.00.00.01.fe",
            "2:0:0:0:1:fe",
            "02:00:00:00:01:fé",
            "002:00:00:00:01:f",
        ] {
            assert_eq!(
                bad.parse::<EthernetAddress>(),
                Err(ParseMacError),
                "{bad:?}"
            );
        }
        assert!(ParseMacError.to_string().contains("MAC"));
    }

    #[test]
    fn serde_as_string() {
        use serde::de::value::{Error as DeError, StrDeserializer};
        use serde::de::IntoDeserializer;
        use serde::Deserialize;
        let de: StrDeserializer<'_, DeError> = "02:00:00:00:02:0b".into_deserializer();
        assert_eq!(
            EthernetAddress::deserialize(de).unwrap(),
            EthernetAddress([2, 0, 0, 0, 2, 0x0b])
        );
        let de: StrDeserializer<'_, DeError> = "not a mac".into_deserializer();
        assert!(EthernetAddress::deserialize(de).is_err());
        // Serialize goes through Display: check with a minimal string-capturing serializer.
        assert_eq!(serialize_to_string(&CLIENT_PORT), "02:00:00:00:01:01");
    }

    /// Runs `Serialize` through a minimal serializer that accepts only strings (the crate has
    /// no serde format as a dependency).
    fn serialize_to_string(a: &EthernetAddress) -> String {
        use serde::ser::{Impossible, Serializer};
        struct S;
        #[derive(Debug)]
        struct E;
        impl fmt::Display for E {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("e")
            }
        }
        impl std::error::Error for E {}
        impl serde::ser::Error for E {
            fn custom<M: fmt::Display>(_: M) -> Self {
                E
            }
        }
        macro_rules! unsupported {
            ($($f:ident($($t:ty),*)),*) => {$(
                fn $f(self $(, _: $t)*) -> core::result::Result<String, E> { Err(E) }
            )*};
        }
        impl Serializer for S {
            type Ok = String;
            type Error = E;
            type SerializeSeq = Impossible<String, E>;
            type SerializeTuple = Impossible<String, E>;
            type SerializeTupleStruct = Impossible<String, E>;
            type SerializeTupleVariant = Impossible<String, E>;
            type SerializeMap = Impossible<String, E>;
            type SerializeStruct = Impossible<String, E>;
            type SerializeStructVariant = Impossible<String, E>;
            fn serialize_str(self, v: &str) -> core::result::Result<String, E> {
                Ok(v.to_owned())
            }
            unsupported!(
                serialize_bool(bool),
                serialize_i8(i8),
                serialize_i16(i16),
                serialize_i32(i32),
                serialize_i64(i64),
                serialize_u8(u8),
                serialize_u16(u16),
                serialize_u32(u32),
                serialize_u64(u64),
                serialize_f32(f32),
                serialize_f64(f64),
                serialize_char(char),
                serialize_bytes(&[u8]),
                serialize_none(),
                serialize_unit(),
                serialize_unit_struct(&'static str),
                serialize_unit_variant(&'static str, u32, &'static str)
            );
            fn serialize_some<V: ?Sized + serde::Serialize>(
                self,
                _: &V,
            ) -> core::result::Result<String, E> {
                Err(E)
            }
            fn serialize_newtype_struct<V: ?Sized + serde::Serialize>(
                self,
                _: &'static str,
                _: &V,
            ) -> core::result::Result<String, E> {
                Err(E)
            }
            fn serialize_newtype_variant<V: ?Sized + serde::Serialize>(
                self,
                _: &'static str,
                _: u32,
                _: &'static str,
                _: &V,
            ) -> core::result::Result<String, E> {
                Err(E)
            }
            fn serialize_seq(
                self,
                _: Option<usize>,
            ) -> core::result::Result<Self::SerializeSeq, E> {
                Err(E)
            }
            fn serialize_tuple(self, _: usize) -> core::result::Result<Self::SerializeTuple, E> {
                Err(E)
            }
            fn serialize_tuple_struct(
                self,
                _: &'static str,
                _: usize,
            ) -> core::result::Result<Self::SerializeTupleStruct, E> {
                Err(E)
            }
            fn serialize_tuple_variant(
                self,
                _: &'static str,
                _: u32,
                _: &'static str,
                _: usize,
            ) -> core::result::Result<Self::SerializeTupleVariant, E> {
                Err(E)
            }
            fn serialize_map(
                self,
                _: Option<usize>,
            ) -> core::result::Result<Self::SerializeMap, E> {
                Err(E)
            }
            fn serialize_struct(
                self,
                _: &'static str,
                _: usize,
            ) -> core::result::Result<Self::SerializeStruct, E> {
                Err(E)
            }
            fn serialize_struct_variant(
                self,
                _: &'static str,
                _: u32,
                _: &'static str,
                _: usize,
            ) -> core::result::Result<Self::SerializeStructVariant, E> {
                Err(E)
            }
        }
        serde::Serialize::serialize(a, S).unwrap()
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..40)) {
            if let Ok(f) = EthernetFrame::new_checked(&data[..]) {
                let _ = (f.dst(), f.src(), f.vlan(), f.pcp(), f.ethertype());
                prop_assert_eq!(f.header_len() + f.payload().len(), data.len());
                prop_assert_eq!(f.header_len(), f.vlan().header_len());
            }
        }

        #[test]
        fn tagged_bytes_never_panic(
            tpids in proptest::collection::vec(
                prop_oneof![Just(0x8100u16), Just(0x88a8u16), any::<u16>()], 1..4),
            len in 0usize..30,
        ) {
            // Frames biased towards tag TPIDs, truncated anywhere.
            let mut data = vec![0x02u8; 12];
            for t in &tpids {
                data.extend_from_slice(&t.to_be_bytes());
                data.extend_from_slice(&[0x20, 0x05]);
            }
            data.truncate(len);
            if let Ok(f) = EthernetFrame::new_checked(&data[..]) {
                let _ = (f.vlan(), f.pcp(), f.ethertype(), f.payload());
            }
        }

        #[test]
        fn emit_then_parse(
            dst in any::<[u8; 6]>(),
            src in any::<[u8; 6]>(),
            kind in 0u8..3,
            a in 0u16..4096,
            b in 0u16..4096,
            et in any::<u16>().prop_filter("not a TPID", |t| !is_tpid(*t)),
            payload in proptest::collection::vec(any::<u8>(), 0..16),
        ) {
            let vlan = match kind {
                0 => Vlan::Untagged,
                1 => Vlan::Single { vid: a },
                _ => Vlan::Double { outer: a, inner: b },
            };
            let mut buf = vec![0u8; vlan.header_len() + payload.len()];
            let n = emit_header(&mut buf, EthernetAddress(dst), EthernetAddress(src), vlan, et).unwrap();
            buf[n..].copy_from_slice(&payload);
            let f = EthernetFrame::new_checked(&buf[..]).unwrap();
            prop_assert_eq!(f.dst(), EthernetAddress(dst));
            prop_assert_eq!(f.src(), EthernetAddress(src));
            prop_assert_eq!(f.vlan(), vlan);
            prop_assert_eq!(f.pcp(), 0);
            prop_assert_eq!(f.ethertype(), et);
            prop_assert_eq!(f.payload(), &payload[..]);
        }

        #[test]
        fn mac_display_parse_roundtrip(b in any::<[u8; 6]>()) {
            let a = EthernetAddress(b);
            prop_assert_eq!(a.to_string().parse::<EthernetAddress>(), Ok(a));
        }

        #[test]
        fn mac_parse_never_panics(s in ".{0,20}") {
            let _ = s.parse::<EthernetAddress>();
        }
    }
}

#[cfg(test)]
mod repr_tests {
    use super::*;
    use proptest::prelude::*;

    const A: EthernetAddress = EthernetAddress([0x02, 0, 0, 0, 0x01, 0x01]);
    const B: EthernetAddress = EthernetAddress([0x02, 0, 0, 0, 0x01, 0xfe]);

    fn emit(repr: &EthernetRepr, garbage: u8) -> Vec<u8> {
        let mut buf = vec![garbage; repr.buffer_len()];
        repr.emit(&mut EthernetFrame::new_unchecked(&mut buf[..]));
        buf
    }

    #[test]
    fn emits_known_bytes() {
        let repr = EthernetRepr {
            src: B,
            dst: EthernetAddress::BROADCAST,
            vlan: Vlan::Double {
                outer: 200,
                inner: 4095,
            },
            ethertype: ethertype::ARP,
        };
        #[rustfmt::skip]
        let expected = [
            0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02, 0, 0, 0, 0x01, 0xfe,
            0x88, 0xa8, 0x00, 0xc8, 0x81, 0x00, 0x0f, 0xff, 0x08, 0x06,
        ];
        // Whatever the buffer held before (here 0x81 bytes that look like tags).
        assert_eq!(emit(&repr, 0x81), expected);
        let single = EthernetRepr {
            vlan: Vlan::Single { vid: 100 },
            ..repr
        };
        assert_eq!(
            emit(&single, 0x81)[12..],
            [0x81, 0x00, 0x00, 0x64, 0x08, 0x06]
        );
        let untagged = EthernetRepr {
            vlan: Vlan::Untagged,
            ethertype: ethertype::IPV4,
            src: A,
            dst: B,
        };
        assert_eq!(
            emit(&untagged, 0x81),
            [2, 0, 0, 0, 1, 0xfe, 2, 0, 0, 0, 1, 1, 8, 0]
        );
    }

    #[test]
    fn emit_agrees_with_emit_header() {
        for vlan in [
            Vlan::Untagged,
            Vlan::Single { vid: 7 },
            Vlan::Double { outer: 1, inner: 2 },
        ] {
            let repr = EthernetRepr {
                src: A,
                dst: B,
                vlan,
                ethertype: ethertype::IPV6,
            };
            let mut other = [0u8; 22];
            let n = emit_header(&mut other, B, A, vlan, ethertype::IPV6).unwrap();
            assert_eq!(emit(&repr, 0), other[..n]);
        }
    }

    fn vlan() -> impl Strategy<Value = Vlan> {
        prop_oneof![
            Just(Vlan::Untagged),
            (0u16..4096).prop_map(|vid| Vlan::Single { vid }),
            (0u16..4096, 0u16..4096).prop_map(|(outer, inner)| Vlan::Double { outer, inner }),
        ]
    }

    proptest! {
        #[test]
        fn round_trip(
            src in any::<[u8; 6]>(),
            dst in any::<[u8; 6]>(),
            vlan in vlan(),
            et in prop_oneof![Just(ethertype::IPV4), Just(ethertype::IPV6), Just(ethertype::ARP), 0u16..0x8000],
            garbage in any::<u8>(),
        ) {
            let repr = EthernetRepr {
                src: EthernetAddress(src),
                dst: EthernetAddress(dst),
                vlan,
                ethertype: et,
            };
            let buf = emit(&repr, garbage);
            let frame = EthernetFrame::new_checked(&buf[..]).unwrap();
            prop_assert_eq!(frame.header_len(), repr.buffer_len());
            prop_assert_eq!(EthernetRepr::parse(&frame).unwrap(), repr);
        }
    }
}
