//! IPv4 headers (RFC 791).
//!
//! ```text
//!  0       4       8              16     19               31
//! +-------+-------+--------------+------------------------+
//! |version|  IHL  |  DSCP / ECN  |      total length      |
//! +-------+-------+--------------+-----+------------------+
//! |        identification        |flags| fragment offset  |
//! +---------------+--------------+-----+------------------+
//! |      TTL      |   protocol   |     header checksum    |
//! +---------------+--------------+------------------------+
//! |                    source address                     |
//! |                  destination address                  |
//! |                 options (IHL > 5) ...                 |
//! +-------------------------------------------------------+
//! ```

use std::net::Ipv4Addr;

use super::checksum;
use super::{be16, set_be16, Error, Result};

/// Length of an IPv4 header without options.
pub const IPV4_HEADER_LEN: usize = 20;

/// Offsets of the header's fields, for code that rewrites them in place where a view would
/// cost (the NAT fast path).
pub mod field {
    use core::ops::Range;
    pub const VER_IHL: usize = 0;
    pub const DSCP_ECN: usize = 1;
    pub const TOTAL_LEN: usize = 2;
    pub const IDENT: usize = 4;
    pub const FLAGS_FRAG: usize = 6;
    pub const TTL: usize = 8;
    pub const PROTOCOL: usize = 9;
    pub const CHECKSUM: usize = 10;
    pub const SRC: Range<usize> = 12..16;
    pub const DST: Range<usize> = 16..20;
}

/// Option types (RFC 791 §3.1) the fragmenter needs to tell apart.
pub mod option {
    /// End of Option List: one byte, ends the list.
    pub const END: u8 = 0;
    /// No Operation: one byte, padding between options.
    pub const NOP: u8 = 1;
    /// The type's "copied" flag: the option goes into every fragment.
    pub const COPIED: u8 = 0x80;
}

const FLAG_DF: u16 = 0x4000;
const FLAG_MF: u16 = 0x2000;
const FRAG_OFFSET_MASK: u16 = 0x1fff;

/// A read/write view of an IPv4 packet.
///
/// The buffer may extend past `total_len` (Ethernet padding); [`payload`](Self::payload) stops at
/// `total_len`.
#[derive(Debug, Clone)]
pub struct Ipv4Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Ipv4Packet<T> {
    /// Wraps `buffer` without validation. Accessors may panic unless `buffer` passed
    /// [`new_checked`](Self::new_checked) before.
    pub const fn new_unchecked(buffer: T) -> Self {
        Ipv4Packet { buffer }
    }

    /// Wraps `buffer` after validating the header and the lengths.
    ///
    /// `Truncated` if the buffer is shorter than 20 bytes, than the IHL or than `total_len`;
    /// `BadHeader` for a version other than 4 or an IHL below 5; `BadLength` for a `total_len`
    /// shorter than the header.
    pub fn new_checked(buffer: T) -> Result<Self> {
        let b = buffer.as_ref();
        if b.len() < IPV4_HEADER_LEN {
            return Err(Error::Truncated);
        }
        if b[field::VER_IHL] >> 4 != 4 {
            return Err(Error::BadHeader);
        }
        let ihl = usize::from(b[field::VER_IHL] & 0x0f) * 4;
        if ihl < IPV4_HEADER_LEN {
            return Err(Error::BadHeader);
        }
        if ihl > b.len() {
            return Err(Error::Truncated);
        }
        let total = usize::from(be16(b, field::TOTAL_LEN));
        if total < ihl {
            return Err(Error::BadLength);
        }
        if total > b.len() {
            return Err(Error::Truncated);
        }
        Ok(Ipv4Packet { buffer })
    }

    /// Returns the underlying buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// IP version (4 for a checked packet).
    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[field::VER_IHL] >> 4
    }

    /// Header length in bytes (IHL * 4), options included.
    pub fn header_len(&self) -> usize {
        usize::from(self.buffer.as_ref()[field::VER_IHL] & 0x0f) * 4
    }

    /// The DSCP/ECN byte (formerly TOS).
    pub fn dscp_ecn(&self) -> u8 {
        self.buffer.as_ref()[field::DSCP_ECN]
    }

    /// Total length (header + payload) in bytes.
    pub fn total_len(&self) -> u16 {
        be16(self.buffer.as_ref(), field::TOTAL_LEN)
    }

    /// Identification, for reassembly.
    pub fn ident(&self) -> u16 {
        be16(self.buffer.as_ref(), field::IDENT)
    }

    fn flags_frag(&self) -> u16 {
        be16(self.buffer.as_ref(), field::FLAGS_FRAG)
    }

    /// The Don't Fragment flag.
    pub fn dont_frag(&self) -> bool {
        self.flags_frag() & FLAG_DF != 0
    }

    /// The More Fragments flag.
    pub fn more_frags(&self) -> bool {
        self.flags_frag() & FLAG_MF != 0
    }

    /// Fragment offset in bytes (the field is in units of 8 bytes).
    pub fn frag_offset(&self) -> u16 {
        // At most 0x1fff * 8 = 65528: cannot overflow.
        (self.flags_frag() & FRAG_OFFSET_MASK) * 8
    }

    /// Whether this is any fragment of a larger datagram (MF set or a non-zero offset).
    pub fn is_fragment(&self) -> bool {
        self.more_frags() || self.frag_offset() != 0
    }

    /// Whether this packet starts its datagram (offset 0), so it carries the L4 header.
    /// True for unfragmented packets as well.
    pub fn is_first_fragment(&self) -> bool {
        self.frag_offset() == 0
    }

    /// Time to live.
    pub fn ttl(&self) -> u8 {
        self.buffer.as_ref()[field::TTL]
    }

    /// Protocol of the payload (see [`ip_proto`](super::ip_proto)).
    pub fn protocol(&self) -> u8 {
        self.buffer.as_ref()[field::PROTOCOL]
    }

    /// Header checksum field.
    pub fn checksum(&self) -> u16 {
        be16(self.buffer.as_ref(), field::CHECKSUM)
    }

    /// Source address.
    pub fn src_addr(&self) -> Ipv4Addr {
        let b = &self.buffer.as_ref()[field::SRC];
        Ipv4Addr::new(b[0], b[1], b[2], b[3])
    }

    /// Destination address.
    pub fn dst_addr(&self) -> Ipv4Addr {
        let b = &self.buffer.as_ref()[field::DST];
        Ipv4Addr::new(b[0], b[1], b[2], b[3])
    }

    /// Options (bytes 20..IHL*4; empty without options).
    pub fn options(&self) -> &[u8] {
        &self.buffer.as_ref()[IPV4_HEADER_LEN..self.header_len()]
    }

    /// The whole header, options included.
    pub fn header(&self) -> &[u8] {
        &self.buffer.as_ref()[..self.header_len()]
    }

    /// End of the payload: `total_len`, clamped to the buffer so that a later
    /// [`set_total_len`](Ipv4Packet::set_total_len) cannot make accessors read out of bounds.
    fn payload_end(&self) -> usize {
        let b = self.buffer.as_ref();
        usize::from(self.total_len()).clamp(self.header_len(), b.len())
    }

    /// The payload: from the end of the header to `total_len` (trailing padding excluded).
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[self.header_len()..self.payload_end()]
    }

    /// Whether the header checksum is valid.
    pub fn verify_checksum(&self) -> bool {
        checksum::checksum(self.header()) == 0
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Ipv4Packet<T> {
    /// Sets the source address. The checksum is not updated: call
    /// [`fill_checksum`](Self::fill_checksum) or adjust it with [`checksum::update_bytes`].
    pub fn set_src_addr(&mut self, addr: Ipv4Addr) {
        self.buffer.as_mut()[field::SRC].copy_from_slice(&addr.octets());
    }

    /// Sets the destination address (checksum not updated, as for `set_src_addr`).
    pub fn set_dst_addr(&mut self, addr: Ipv4Addr) {
        self.buffer.as_mut()[field::DST].copy_from_slice(&addr.octets());
    }

    /// Sets the time to live (checksum not updated).
    pub fn set_ttl(&mut self, ttl: u8) {
        self.buffer.as_mut()[field::TTL] = ttl;
    }

    /// Sets the DSCP/ECN byte (checksum not updated).
    pub fn set_dscp_ecn(&mut self, value: u8) {
        self.buffer.as_mut()[field::DSCP_ECN] = value;
    }

    /// Sets the identification (checksum not updated).
    pub fn set_ident(&mut self, value: u16) {
        set_be16(self.buffer.as_mut(), field::IDENT, value);
    }

    /// Sets the protocol (checksum not updated).
    pub fn set_protocol(&mut self, value: u8) {
        self.buffer.as_mut()[field::PROTOCOL] = value;
    }

    /// Sets the total length (checksum not updated). [`payload`](Ipv4Packet::payload) is clamped
    /// to the buffer if the new value exceeds it.
    pub fn set_total_len(&mut self, value: u16) {
        set_be16(self.buffer.as_mut(), field::TOTAL_LEN, value);
    }

    /// Sets the header checksum field.
    pub fn set_checksum(&mut self, value: u16) {
        set_be16(self.buffer.as_mut(), field::CHECKSUM, value);
    }

    /// Computes and stores the header checksum.
    pub fn fill_checksum(&mut self) {
        self.set_checksum(0);
        let c = checksum::checksum(self.header());
        self.set_checksum(c);
    }

    /// The payload, writable.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let (start, end) = (self.header_len(), self.payload_end());
        &mut self.buffer.as_mut()[start..end]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Ipv4Packet<T> {
    /// Sets version 4 and the header length in bytes (`len / 4` words, at most 60; checksum not
    /// updated). Options are the caller's to write, before [`fill_checksum`](Self::fill_checksum).
    pub fn set_header_len(&mut self, len: usize) {
        // len <= 60, so len / 4 fits the nibble.
        self.buffer.as_mut()[field::VER_IHL] =
            0x40 | (u8::try_from(len / 4).unwrap_or(0x0f) & 0x0f);
    }

    /// Sets the flags and the fragment offset (in bytes; its low 3 bits are dropped, and it
    /// keeps 13 bits of 8-byte units). Checksum not updated.
    pub fn set_frag(&mut self, dont_frag: bool, more_frags: bool, offset: u16) {
        let mut v = (offset / 8) & FRAG_OFFSET_MASK;
        if dont_frag {
            v |= FLAG_DF;
        }
        if more_frags {
            v |= FLAG_MF;
        }
        set_be16(self.buffer.as_mut(), field::FLAGS_FRAG, v);
    }

    /// Options (bytes 20..IHL*4), writable.
    pub fn options_mut(&mut self) -> &mut [u8] {
        let end = self.header_len();
        &mut self.buffer.as_mut()[IPV4_HEADER_LEN..end]
    }
}

/// The high-level form of an IPv4 header without options (smoltcp's `Ipv4Repr`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ipv4Repr {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    /// Protocol of the payload (see [`ip_proto`](super::ip_proto)).
    pub protocol: u8,
    /// Bytes after the header (total length less the header's).
    pub payload_len: usize,
    pub ttl: u8,
    pub ident: u16,
    pub dscp_ecn: u8,
    pub dont_frag: bool,
    pub more_frags: bool,
    /// Fragment offset in bytes (a multiple of 8).
    pub frag_offset: u16,
}

impl Ipv4Repr {
    /// An unfragmented packet with TTL `ttl`, ident 0, DSCP/ECN 0 and DF clear.
    pub const fn new(
        src: Ipv4Addr,
        dst: Ipv4Addr,
        protocol: u8,
        payload_len: usize,
        ttl: u8,
    ) -> Self {
        Ipv4Repr {
            src,
            dst,
            protocol,
            payload_len,
            ttl,
            ident: 0,
            dscp_ecn: 0,
            dont_frag: false,
            more_frags: false,
            frag_offset: 0,
        }
    }

    /// Reads a checked packet; `BadHeader` when the header checksum is wrong. Options are
    /// skipped (`payload_len` starts after them).
    pub fn parse<T: AsRef<[u8]>>(packet: &Ipv4Packet<T>) -> Result<Ipv4Repr> {
        if !packet.verify_checksum() {
            return Err(Error::BadHeader);
        }
        Ok(Ipv4Repr {
            src: packet.src_addr(),
            dst: packet.dst_addr(),
            protocol: packet.protocol(),
            payload_len: usize::from(packet.total_len()) - packet.header_len(),
            ttl: packet.ttl(),
            ident: packet.ident(),
            dscp_ecn: packet.dscp_ecn(),
            dont_frag: packet.dont_frag(),
            more_frags: packet.more_frags(),
            frag_offset: packet.frag_offset(),
        })
    }

    /// The header's length: [`IPV4_HEADER_LEN`].
    pub const fn buffer_len(&self) -> usize {
        IPV4_HEADER_LEN
    }

    /// Writes the header (20 bytes, no options) through the view's setters, header checksum
    /// included. The total length is saturated at 65535.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, packet: &mut Ipv4Packet<T>) {
        packet.set_header_len(IPV4_HEADER_LEN);
        packet.set_dscp_ecn(self.dscp_ecn);
        let total = (IPV4_HEADER_LEN + self.payload_len).min(usize::from(u16::MAX));
        packet.set_total_len(u16::try_from(total).unwrap_or(u16::MAX));
        packet.set_ident(self.ident);
        packet.set_frag(self.dont_frag, self.more_frags, self.frag_offset);
        packet.set_ttl(self.ttl);
        packet.set_protocol(self.protocol);
        packet.set_src_addr(self.src);
        packet.set_dst_addr(self.dst);
        packet.fill_checksum();
    }

    /// The pseudo-header of the payload's checksum.
    pub const fn pseudo_header(&self) -> checksum::PseudoHeader {
        checksum::PseudoHeader::V4 {
            src: self.src,
            dst: self.dst,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::ip_proto;
    use proptest::prelude::*;

    /// UDP from a client (198.18.1.10) to the VIP, DF set, TTL 64, 8 bytes of UDP header + 4 of
    /// payload, followed by 6 bytes of Ethernet padding.
    const UDP_PACKET: [u8; 38] = [
        0x45, 0x00, 0x00, 0x20, 0x1c, 0x46, 0x40, 0x00, 0x40, 0x11, 0x00, 0x00, // cksum below
        198, 18, 1, 10, 198, 18, 0, 100, //
        0x11, 0x94, 0x11, 0x94, 0x00, 0x0c, 0x00, 0x00, 0xde, 0xad, 0xbe, 0xef, //
        0, 0, 0, 0, 0, 0,
    ];

    fn udp_packet() -> [u8; 38] {
        let mut b = UDP_PACKET;
        let c = checksum::checksum(&b[..20]);
        b[10..12].copy_from_slice(&c.to_be_bytes());
        b
    }

    /// A header with IHL 6 (one 4-byte option: router alert) carrying 4 bytes.
    const WITH_OPTIONS: [u8; 28] = [
        0x46, 0xb8, 0x00, 0x1c, 0x00, 0x01, 0x20, 0x00, 0x01, 0x70, 0x00, 0x00, //
        198, 19, 0, 11, 198, 18, 0, 100, //
        0x94, 0x04, 0x00, 0x00, // router alert
        1, 2, 3, 4,
    ];

    #[test]
    fn parses_udp_packet() {
        let b = udp_packet();
        let p = Ipv4Packet::new_checked(&b[..]).unwrap();
        assert_eq!(p.version(), 4);
        assert_eq!(p.header_len(), 20);
        assert_eq!(p.dscp_ecn(), 0);
        assert_eq!(p.total_len(), 32);
        assert_eq!(p.ident(), 0x1c46);
        assert!(p.dont_frag());
        assert!(!p.more_frags());
        assert_eq!(p.frag_offset(), 0);
        assert!(!p.is_fragment());
        assert!(p.is_first_fragment());
        assert_eq!(p.ttl(), 64);
        assert_eq!(p.protocol(), ip_proto::UDP);
        assert_eq!(p.src_addr(), Ipv4Addr::new(198, 18, 1, 10));
        assert_eq!(p.dst_addr(), Ipv4Addr::new(198, 18, 0, 100));
        assert!(p.options().is_empty());
        assert_eq!(p.header(), &b[..20]);
        // Padding excluded.
        assert_eq!(p.payload(), &b[20..32]);
        assert!(p.verify_checksum());
        assert_eq!(p.checksum(), u16::from_be_bytes([b[10], b[11]]));
    }

    #[test]
    fn known_checksum_value() {
        // Wikipedia's worked example header: checksum 0xb861.
        let mut hdr = [
            0x45, 0x00, 0x00, 0x14, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0x00, 0x00, 0xc0, 0xa8,
            0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7,
        ];
        let mut p = Ipv4Packet::new_checked(&mut hdr[..]).unwrap();
        assert!(!p.verify_checksum());
        // Total length differs from the example (0x73 -> 0x14): 0xb861 + 0x73 - 0x14 = 0xb8c0.
        p.fill_checksum();
        assert_eq!(p.checksum(), 0xb8c0);
        assert!(p.verify_checksum());
    }

    #[test]
    fn parses_options() {
        let p = Ipv4Packet::new_checked(&WITH_OPTIONS[..]).unwrap();
        assert_eq!(p.header_len(), 24);
        assert_eq!(p.dscp_ecn(), 0xb8);
        assert_eq!(p.options(), &[0x94, 0x04, 0x00, 0x00]);
        assert_eq!(p.payload(), &[1, 2, 3, 4]);
        assert!(p.more_frags());
        assert!(p.is_fragment());
        assert!(p.is_first_fragment());
        assert!(!p.dont_frag());
    }

    #[test]
    fn fragment_offsets_in_bytes() {
        let mut b = udp_packet();
        // MF clear, offset field 185 -> 1480 bytes: the last fragment.
        b[6..8].copy_from_slice(&185u16.to_be_bytes());
        let p = Ipv4Packet::new_checked(&b[..]).unwrap();
        assert_eq!(p.frag_offset(), 1480);
        assert!(p.is_fragment());
        assert!(!p.is_first_fragment());
        assert!(!p.more_frags());
        // Maximum offset field.
        b[6..8].copy_from_slice(&0x3fffu16.to_be_bytes());
        let p = Ipv4Packet::new_checked(&b[..]).unwrap();
        assert_eq!(p.frag_offset(), 65528);
        assert!(p.more_frags());
        assert!(!p.dont_frag());
    }

    #[test]
    fn truncated_at_every_length() {
        let b = udp_packet();
        for len in 0..32 {
            assert_eq!(
                Ipv4Packet::new_checked(&b[..len]).unwrap_err(),
                Error::Truncated,
                "len {len}"
            );
        }
        for len in 0..WITH_OPTIONS.len() {
            assert_eq!(
                Ipv4Packet::new_checked(&WITH_OPTIONS[..len]).unwrap_err(),
                Error::Truncated,
                "len {len}"
            );
        }
        assert!(Ipv4Packet::new_checked(&b[..32]).is_ok());
    }

    #[test]
    fn bad_headers_and_lengths() {
        let b = udp_packet();
        for v in [0x05, 0x65, 0x00, 0xf5] {
            let mut x = b;
            x[0] = v;
            assert_eq!(
                Ipv4Packet::new_checked(&x[..]).unwrap_err(),
                Error::BadHeader
            );
        }
        for ihl in 0..5 {
            let mut x = b;
            x[0] = 0x40 | ihl;
            assert_eq!(
                Ipv4Packet::new_checked(&x[..]).unwrap_err(),
                Error::BadHeader
            );
        }
        // IHL 15 = 60 bytes > 38-byte buffer.
        let mut x = b;
        x[0] = 0x4f;
        assert_eq!(
            Ipv4Packet::new_checked(&x[..]).unwrap_err(),
            Error::Truncated
        );
        for total in [0u16, 19] {
            let mut x = b;
            x[2..4].copy_from_slice(&total.to_be_bytes());
            assert_eq!(
                Ipv4Packet::new_checked(&x[..]).unwrap_err(),
                Error::BadLength
            );
        }
        // total_len shorter than IHL * 4 with options.
        let mut x = WITH_OPTIONS;
        x[2..4].copy_from_slice(&22u16.to_be_bytes());
        assert_eq!(
            Ipv4Packet::new_checked(&x[..]).unwrap_err(),
            Error::BadLength
        );
        let mut x = b;
        x[2..4].copy_from_slice(&39u16.to_be_bytes());
        assert_eq!(
            Ipv4Packet::new_checked(&x[..]).unwrap_err(),
            Error::Truncated
        );
        // total_len exactly the header: empty payload.
        let mut x = b;
        x[2..4].copy_from_slice(&20u16.to_be_bytes());
        assert!(Ipv4Packet::new_checked(&x[..])
            .unwrap()
            .payload()
            .is_empty());
    }

    #[test]
    fn setters() {
        let mut b = udp_packet();
        let mut p = Ipv4Packet::new_checked(&mut b[..]).unwrap();
        p.set_src_addr(Ipv4Addr::new(198, 19, 0, 12));
        p.set_dst_addr(Ipv4Addr::new(198, 19, 0, 13));
        p.set_ttl(63);
        p.set_dscp_ecn(0x2e << 2);
        p.set_ident(0xbeef);
        p.set_protocol(ip_proto::TCP);
        assert!(!p.verify_checksum());
        p.fill_checksum();
        assert!(p.verify_checksum());
        p.payload_mut()[0] = 0xaa;
        assert_eq!(p.payload().len(), 12);
        let mut expected = [
            0x45, 0xb8, 0x00, 0x20, 0xbe, 0xef, 0x40, 0x00, 0x3f, 0x06, 0, 0, 198, 19, 0, 12, 198,
            19, 0, 13,
        ];
        let c = checksum::checksum(&expected);
        expected[10..12].copy_from_slice(&c.to_be_bytes());
        assert_eq!(b[..20], expected);
        assert_eq!(b[20], 0xaa);
    }

    #[test]
    fn set_total_len_past_buffer_clamps() {
        let mut b = udp_packet();
        let mut p = Ipv4Packet::new_checked(&mut b[..]).unwrap();
        p.set_total_len(1500);
        assert_eq!(p.payload().len(), 38 - 20);
        assert_eq!(p.payload_mut().len(), 38 - 20);
        p.set_total_len(4);
        assert!(p.payload().is_empty());
    }

    #[test]
    fn incremental_update_agrees_with_fill() {
        let mut b = udp_packet();
        let mut p = Ipv4Packet::new_checked(&mut b[..]).unwrap();
        let old = p.dst_addr();
        let new = Ipv4Addr::new(198, 19, 0, 11);
        let c = checksum::update_bytes(p.checksum(), &old.octets(), &new.octets());
        p.set_dst_addr(new);
        p.set_checksum(c);
        assert!(p.verify_checksum());
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..80)) {
            if let Ok(p) = Ipv4Packet::new_checked(&data[..]) {
                let _ = (p.version(), p.dscp_ecn(), p.ident(), p.dont_frag(), p.more_frags());
                let _ = (p.frag_offset(), p.is_fragment(), p.is_first_fragment(), p.ttl());
                let _ = (p.protocol(), p.checksum(), p.src_addr(), p.dst_addr(), p.options());
                let _ = p.verify_checksum();
                prop_assert_eq!(p.header().len(), p.header_len());
                prop_assert_eq!(p.header_len() + p.payload().len(), usize::from(p.total_len()));
            }
        }

        #[test]
        fn plausible_headers_never_panic(
            ihl in 0u8..16,
            total in 0u16..90,
            rest in proptest::collection::vec(any::<u8>(), 0..80),
        ) {
            let mut data = vec![0x40 | ihl, 0];
            data.extend_from_slice(&total.to_be_bytes());
            data.extend_from_slice(&rest);
            if let Ok(mut p) = Ipv4Packet::new_checked(&mut data[..]) {
                prop_assert!(p.header_len() >= 20);
                let _ = (p.options(), p.payload(), p.verify_checksum());
                p.fill_checksum();
                prop_assert!(p.verify_checksum());
            }
        }

        #[test]
        fn setters_roundtrip(
            src in any::<[u8; 4]>(),
            dst in any::<[u8; 4]>(),
            ttl in any::<u8>(),
            ident in any::<u16>(),
            cksum in any::<u16>(),
        ) {
            let mut b = udp_packet();
            let mut p = Ipv4Packet::new_checked(&mut b[..]).unwrap();
            p.set_src_addr(Ipv4Addr::from(src));
            p.set_dst_addr(Ipv4Addr::from(dst));
            p.set_ttl(ttl);
            p.set_ident(ident);
            p.set_checksum(cksum);
            prop_assert_eq!(p.src_addr(), Ipv4Addr::from(src));
            prop_assert_eq!(p.dst_addr(), Ipv4Addr::from(dst));
            prop_assert_eq!(p.ttl(), ttl);
            prop_assert_eq!(p.ident(), ident);
            prop_assert_eq!(p.checksum(), cksum);
            p.fill_checksum();
            prop_assert!(p.verify_checksum());
        }
    }
}

#[cfg(test)]
mod repr_tests {
    use super::*;
    use crate::wire::ip_proto;
    use proptest::prelude::*;

    #[test]
    fn emits_known_bytes() {
        // The VRRP advert header of vrrp.rs's scapy sample: 198.19.0.2 -> 224.0.0.18, TTL 255,
        // 16 bytes of VRRP.
        let repr = Ipv4Repr::new(
            Ipv4Addr::new(198, 19, 0, 2),
            Ipv4Addr::new(224, 0, 0, 18),
            ip_proto::VRRP,
            16,
            255,
        );
        let mut buf = [0xee; IPV4_HEADER_LEN];
        repr.emit(&mut Ipv4Packet::new_unchecked(&mut buf[..]));
        let mut expected = [
            0x45, 0, 0, 36, 0, 0, 0, 0, 255, 112, 0, 0, 198, 19, 0, 2, 224, 0, 0, 18,
        ];
        let c = checksum::checksum(&expected);
        expected[10..12].copy_from_slice(&c.to_be_bytes());
        assert_eq!(buf, expected);
    }

    proptest! {
        #[test]
        fn round_trip(
            src in any::<u32>(), dst in any::<u32>(), protocol in any::<u8>(),
            payload_len in 0usize..2000, ttl in any::<u8>(), ident in any::<u16>(),
            dscp_ecn in any::<u8>(), dont_frag in any::<bool>(), more_frags in any::<bool>(),
            frag_units in 0u16..0x2000,
        ) {
            let repr = Ipv4Repr {
                src: Ipv4Addr::from(src),
                dst: Ipv4Addr::from(dst),
                protocol,
                payload_len,
                ttl,
                ident,
                dscp_ecn,
                dont_frag,
                more_frags,
                frag_offset: frag_units * 8,
            };
            let mut buf = vec![0x5au8; repr.buffer_len() + payload_len];
            repr.emit(&mut Ipv4Packet::new_unchecked(&mut buf[..]));
            let p = Ipv4Packet::new_checked(&buf[..]).unwrap();
            prop_assert_eq!(Ipv4Repr::parse(&p).unwrap(), repr);
        }
    }
}
