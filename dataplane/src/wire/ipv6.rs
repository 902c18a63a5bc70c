//! IPv6 headers (RFC 8200) and the extension-header walk to the upper layer.
//!
//! ```text
//!  0       4               12                              31
//! +-------+---------------+--------------------------------+
//! |version| traffic class |           flow label           |
//! +-------+---------------+--------+-----------+-----------+
//! |        payload length          |next header| hop limit |
//! +--------------------------------+-----------+-----------+
//! |                source address (16 bytes)               |
//! |             destination address (16 bytes)             |
//! +--------------------------------------------------------+
//! ```

use std::net::Ipv6Addr;

use super::{be16, be32, ip_proto, set_be16, set_be32, Error, Result};

/// Length of the fixed IPv6 header.
pub const IPV6_HEADER_LEN: usize = 40;

/// The most extension headers [`Ipv6Packet::upper_layer`] walks before giving up.
pub const MAX_EXTENSION_HEADERS: usize = 8;

/// Offsets of the header's fields, for code that rewrites them in place where a view would
/// cost (the NAT fast path).
pub mod field {
    use core::ops::Range;
    pub const VER_TC_FLOW: usize = 0;
    pub const PAYLOAD_LEN: usize = 4;
    pub const NEXT_HEADER: usize = 6;
    pub const HOP_LIMIT: usize = 7;
    pub const SRC: Range<usize> = 8..24;
    pub const DST: Range<usize> = 24..40;
}

/// Length of the IPv6 fragment header.
const FRAG_HEADER_LEN: usize = 8;

/// The fragment header found while walking to the upper layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ipv6Fragment {
    /// Fragment offset in bytes.
    pub offset: u16,
    /// The M (more fragments) flag.
    pub more: bool,
    /// Identification, for reassembly.
    pub ident: u32,
}

/// Where the upper-layer header starts, as found by [`Ipv6Packet::upper_layer`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ipv6Upper {
    /// Upper-layer protocol ([`ip_proto`] value; 59 for "no next header").
    pub protocol: u8,
    /// Offset of the upper-layer header from the start of the IPv6 header.
    pub offset: usize,
    /// The fragment header, if there was one. With a non-zero offset the walk stopped right
    /// after it: the bytes at `offset` are a continuation, not an upper-layer header.
    pub fragment: Option<Ipv6Fragment>,
}

impl Ipv6Upper {
    /// Whether the bytes at `offset` begin the upper-layer header (not a later fragment).
    pub fn has_upper_header(&self) -> bool {
        !matches!(self.fragment, Some(f) if f.offset != 0)
    }
}

/// A read/write view of an IPv6 packet.
///
/// The buffer may extend past the payload length (Ethernet padding);
/// [`payload`](Self::payload) stops at `40 + payload_len`. Jumbograms (payload length 0 with a
/// Jumbo Payload option) are not supported: they do not occur on Ethernet.
#[derive(Debug, Clone)]
pub struct Ipv6Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Ipv6Packet<T> {
    /// Wraps `buffer` without validation. Accessors may panic unless `buffer` passed
    /// [`new_checked`](Self::new_checked) before.
    pub const fn new_unchecked(buffer: T) -> Self {
        Ipv6Packet { buffer }
    }

    /// Wraps `buffer` after validating it: `Truncated` if shorter than 40 bytes or than
    /// `40 + payload_len`; `BadHeader` for a version other than 6.
    pub fn new_checked(buffer: T) -> Result<Self> {
        let b = buffer.as_ref();
        if b.len() < IPV6_HEADER_LEN {
            return Err(Error::Truncated);
        }
        if b[field::VER_TC_FLOW] >> 4 != 6 {
            return Err(Error::BadHeader);
        }
        if IPV6_HEADER_LEN + usize::from(be16(b, field::PAYLOAD_LEN)) > b.len() {
            return Err(Error::Truncated);
        }
        Ok(Ipv6Packet { buffer })
    }

    /// Returns the underlying buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// IP version (6 for a checked packet).
    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[field::VER_TC_FLOW] >> 4
    }

    /// Traffic class (DSCP/ECN).
    pub fn traffic_class(&self) -> u8 {
        // Bits 4..12 of the first word; the shift leaves exactly 8 bits.
        ((be32(self.buffer.as_ref(), field::VER_TC_FLOW) >> 20) & 0xff) as u8
    }

    /// Flow label (20 bits).
    pub fn flow_label(&self) -> u32 {
        be32(self.buffer.as_ref(), field::VER_TC_FLOW) & 0x000f_ffff
    }

    /// Payload length: bytes after the fixed header, extension headers included.
    pub fn payload_len(&self) -> u16 {
        be16(self.buffer.as_ref(), field::PAYLOAD_LEN)
    }

    /// The Next Header field of the fixed header.
    pub fn next_header(&self) -> u8 {
        self.buffer.as_ref()[field::NEXT_HEADER]
    }

    /// Hop limit.
    pub fn hop_limit(&self) -> u8 {
        self.buffer.as_ref()[field::HOP_LIMIT]
    }

    /// Source address.
    pub fn src_addr(&self) -> Ipv6Addr {
        addr(&self.buffer.as_ref()[field::SRC])
    }

    /// Destination address.
    pub fn dst_addr(&self) -> Ipv6Addr {
        addr(&self.buffer.as_ref()[field::DST])
    }

    /// End of the packet (`40 + payload_len`) clamped to the buffer.
    fn end(&self) -> usize {
        let b = self.buffer.as_ref();
        (IPV6_HEADER_LEN + usize::from(self.payload_len())).min(b.len())
    }

    /// Bytes 40..40+payload_len (extension headers included, padding excluded).
    pub fn payload(&self) -> &[u8] {
        let b = self.buffer.as_ref();
        b.get(IPV6_HEADER_LEN..self.end()).unwrap_or(&[])
    }

    /// Bytes from `upper.offset` (as returned by [`upper_layer`](Self::upper_layer)) to the end
    /// of the packet; empty if the offset is past it.
    pub fn upper_payload(&self, upper: &Ipv6Upper) -> &[u8] {
        let b = self.buffer.as_ref();
        b.get(upper.offset..self.end()).unwrap_or(&[])
    }

    /// Walks the extension headers to the upper layer.
    ///
    /// Hop-by-hop options are accepted only first; routing, fragment, destination options and
    /// AH headers are skipped; any other value (59, "no next header", included) is the upper
    /// layer. `BadHeader` for a misplaced hop-by-hop header or more than
    /// [`MAX_EXTENSION_HEADERS`]; `Truncated` for a header running past `40 + payload_len`. A
    /// fragment header with a non-zero offset ends the walk (see [`Ipv6Upper::fragment`]).
    pub fn upper_layer(&self) -> Result<Ipv6Upper> {
        let b = self.buffer.as_ref();
        // Only the bytes the IPv6 header claims: padding is not parsed as headers.
        let data = b.get(..self.end()).unwrap_or(&[]);
        let mut protocol = self.next_header();
        let mut offset = IPV6_HEADER_LEN;
        let mut fragment = None;
        let mut count = 0;
        loop {
            let len = match protocol {
                ip_proto::HOPOPT | ip_proto::IPV6_ROUTE | ip_proto::IPV6_OPTS => {
                    if protocol == ip_proto::HOPOPT && count != 0 {
                        return Err(Error::BadHeader);
                    }
                    let hdr_len = data.get(offset + 1).ok_or(Error::Truncated)?;
                    (usize::from(*hdr_len) + 1) * 8
                }
                ip_proto::AH => {
                    let hdr_len = data.get(offset + 1).ok_or(Error::Truncated)?;
                    (usize::from(*hdr_len) + 2) * 4
                }
                ip_proto::IPV6_FRAG => FRAG_HEADER_LEN,
                _ => {
                    return Ok(Ipv6Upper {
                        protocol,
                        offset,
                        fragment,
                    })
                }
            };
            if count == MAX_EXTENSION_HEADERS {
                return Err(Error::BadHeader);
            }
            count += 1;
            // Every extension header is at least 8 bytes, so the fixed reads below are in range.
            let hdr = data.get(offset..offset + len).ok_or(Error::Truncated)?;
            let next = hdr[0];
            let is_fragment_header = protocol == ip_proto::IPV6_FRAG;
            protocol = next;
            offset += len;
            if is_fragment_header {
                let word = be16(hdr, 2);
                let frag = Ipv6Fragment {
                    // The 13-bit offset in 8-byte units sits in the top bits: masking the low 3
                    // bits yields bytes.
                    offset: word & 0xfff8,
                    more: word & 0x0001 != 0,
                    ident: be32(hdr, 4),
                };
                fragment = Some(frag);
                if frag.offset != 0 {
                    // Not the first fragment: what follows is the middle of a datagram.
                    return Ok(Ipv6Upper {
                        protocol,
                        offset,
                        fragment,
                    });
                }
            }
        }
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Ipv6Packet<T> {
    /// Sets the source address (no IPv6 header checksum; upper-layer checksums are the caller's).
    pub fn set_src_addr(&mut self, addr: &Ipv6Addr) {
        self.buffer.as_mut()[field::SRC].copy_from_slice(&addr.octets());
    }

    /// Sets the destination address.
    pub fn set_dst_addr(&mut self, addr: &Ipv6Addr) {
        self.buffer.as_mut()[field::DST].copy_from_slice(&addr.octets());
    }

    /// Sets the hop limit.
    pub fn set_hop_limit(&mut self, value: u8) {
        self.buffer.as_mut()[field::HOP_LIMIT] = value;
    }

    /// Bytes 40..40+payload_len, writable.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let end = self.end();
        self.buffer
            .as_mut()
            .get_mut(IPV6_HEADER_LEN..end)
            .unwrap_or(&mut [])
    }
}

/// The 16 bytes of a validated range as an address.
fn addr(b: &[u8]) -> Ipv6Addr {
    let mut a = [0u8; 16];
    a.copy_from_slice(b);
    Ipv6Addr::from(a)
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Ipv6Packet<T> {
    /// Writes the first word: version 6, `traffic_class` and the low 20 bits of `flow_label`.
    pub fn set_version_class_flow(&mut self, traffic_class: u8, flow_label: u32) {
        let word = (6 << 28) | (u32::from(traffic_class) << 20) | (flow_label & 0x000f_ffff);
        set_be32(self.buffer.as_mut(), field::VER_TC_FLOW, word);
    }

    /// Sets the payload length. [`payload`](Ipv6Packet::payload) is clamped to the buffer if
    /// the value exceeds it.
    pub fn set_payload_len(&mut self, value: u16) {
        set_be16(self.buffer.as_mut(), field::PAYLOAD_LEN, value);
    }

    /// Sets the Next Header field of the fixed header.
    pub fn set_next_header(&mut self, value: u8) {
        self.buffer.as_mut()[field::NEXT_HEADER] = value;
    }
}

/// The high-level form of the fixed IPv6 header (smoltcp's `Ipv6Repr`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ipv6Repr {
    pub src: Ipv6Addr,
    pub dst: Ipv6Addr,
    /// The Next Header field: the first extension header or the upper layer.
    pub next_header: u8,
    /// Bytes after the fixed header, extension headers included.
    pub payload_len: usize,
    pub hop_limit: u8,
    pub traffic_class: u8,
    /// 20 bits.
    pub flow_label: u32,
}

impl Ipv6Repr {
    /// A header with traffic class and flow label 0.
    pub const fn new(
        src: Ipv6Addr,
        dst: Ipv6Addr,
        next_header: u8,
        payload_len: usize,
        hop_limit: u8,
    ) -> Self {
        Ipv6Repr {
            src,
            dst,
            next_header,
            payload_len,
            hop_limit,
            traffic_class: 0,
            flow_label: 0,
        }
    }

    /// Reads the fixed header of a checked packet.
    pub fn parse<T: AsRef<[u8]>>(packet: &Ipv6Packet<T>) -> Result<Ipv6Repr> {
        Ok(Ipv6Repr {
            src: packet.src_addr(),
            dst: packet.dst_addr(),
            next_header: packet.next_header(),
            payload_len: usize::from(packet.payload_len()),
            hop_limit: packet.hop_limit(),
            traffic_class: packet.traffic_class(),
            flow_label: packet.flow_label(),
        })
    }

    /// [`IPV6_HEADER_LEN`].
    pub const fn buffer_len(&self) -> usize {
        IPV6_HEADER_LEN
    }

    /// Writes the fixed header through the view's setters; the payload length is saturated at
    /// 65535 (no jumbograms).
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, packet: &mut Ipv6Packet<T>) {
        packet.set_version_class_flow(self.traffic_class, self.flow_label);
        packet.set_payload_len(u16::try_from(self.payload_len).unwrap_or(u16::MAX));
        packet.set_next_header(self.next_header);
        packet.set_hop_limit(self.hop_limit);
        packet.set_src_addr(&self.src);
        packet.set_dst_addr(&self.dst);
    }

    /// The pseudo-header of an upper-layer checksum (with a Routing header, the final
    /// destination belongs there instead of `dst`).
    pub const fn pseudo_header(&self) -> super::checksum::PseudoHeader {
        super::checksum::PseudoHeader::V6 {
            src: self.src,
            dst: self.dst,
        }
    }
}

/// The solicited-node multicast address of `addr` (RFC 4291 §2.7.1): `ff02::1:ffXX:XXXX`.
pub fn solicited_node(addr: &Ipv6Addr) -> Ipv6Addr {
    let o = addr.octets();
    Ipv6Addr::from([
        0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0xff, o[13], o[14], o[15],
    ])
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// ICMPv6 echo request from a client (2001:2:0:3::10) to the VIP: traffic class 0xb8,
    /// flow label 0x12345, hop limit 64, 12 bytes of ICMPv6, then 2 bytes of padding.
    const ECHO: [u8; 54] = [
        0x6b, 0x81, 0x23, 0x45, 0x00, 0x0c, 0x3a, 0x40, //
        0x20, 0x01, 0x00, 0x02, 0x00, 0x00, 0x00, 0x03, 0, 0, 0, 0, 0, 0, 0x00, 0x10, //
        0x20, 0x01, 0x00, 0x02, 0x00, 0x00, 0x00, 0x01, 0, 0, 0, 0, 0, 0, 0x01, 0x00, //
        0x80, 0x00, 0x12, 0x34, 0x00, 0x01, 0x00, 0x07, 0x61, 0x62, 0x63, 0x64, //
        0xee, 0xee,
    ];

    fn client() -> Ipv6Addr {
        "2001:2:0:3::10".parse().unwrap()
    }

    fn vip() -> Ipv6Addr {
        "2001:2:0:1::100".parse().unwrap()
    }

    /// A packet from client to VIP with `next` in the fixed header and `rest` after it.
    fn packet(next: u8, rest: &[u8]) -> Vec<u8> {
        let mut b = ECHO[..40].to_vec();
        b[4..6].copy_from_slice(&(rest.len() as u16).to_be_bytes());
        b[6] = next;
        b.extend_from_slice(rest);
        b
    }

    /// A UDP header (port 4500 -> 4500, length 8).
    const UDP: [u8; 8] = [0x11, 0x94, 0x11, 0x94, 0x00, 0x08, 0x00, 0x00];

    #[test]
    fn parses_echo() {
        let p = Ipv6Packet::new_checked(&ECHO[..]).unwrap();
        assert_eq!(p.version(), 6);
        assert_eq!(p.traffic_class(), 0xb8);
        assert_eq!(p.flow_label(), 0x12345);
        assert_eq!(p.payload_len(), 12);
        assert_eq!(p.next_header(), ip_proto::ICMPV6);
        assert_eq!(p.hop_limit(), 64);
        assert_eq!(p.src_addr(), client());
        assert_eq!(p.dst_addr(), vip());
        // Padding excluded.
        assert_eq!(p.payload(), &ECHO[40..52]);
        let up = p.upper_layer().unwrap();
        assert_eq!(
            up,
            Ipv6Upper {
                protocol: ip_proto::ICMPV6,
                offset: 40,
                fragment: None
            }
        );
        assert!(up.has_upper_header());
        assert_eq!(p.upper_payload(&up), &ECHO[40..52]);
    }

    #[test]
    fn walks_extension_chain() {
        let mut rest = vec![
            // Hop-by-hop: next = dest opts, len 0 (8 bytes), PadN.
            60, 0, 1, 4, 0, 0, 0, 0, //
            // Destination options: next = routing, len 1 (16 bytes).
            43, 1, 1, 12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, //
            // Routing (type 4 SRH stub), next = fragment, len 0.
            44, 0, 4, 0, 0, 0, 0, 0, //
            // Fragment: next = AH, offset 0, M set, ident 0x01020304.
            51, 0, 0x00, 0x01, 0x01, 0x02, 0x03, 0x04, //
            // AH: next = UDP, payload len 4 -> (4 + 2) * 4 = 24 bytes.
            17, 4, 0, 0, 0, 0, 0x10, 0x00, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        ];
        rest.extend_from_slice(&UDP);
        let b = packet(ip_proto::HOPOPT, &rest);
        let p = Ipv6Packet::new_checked(&b[..]).unwrap();
        let up = p.upper_layer().unwrap();
        assert_eq!(
            up,
            Ipv6Upper {
                protocol: ip_proto::UDP,
                offset: 40 + 8 + 16 + 8 + 8 + 24,
                fragment: Some(Ipv6Fragment {
                    offset: 0,
                    more: true,
                    ident: 0x0102_0304
                })
            }
        );
        assert!(up.has_upper_header());
        assert_eq!(p.upper_payload(&up), &UDP);
    }

    #[test]
    fn non_first_fragment_stops_after_fragment_header() {
        // Offset 1448 bytes = 181 units -> field 181 << 3 = 0x05a8; M clear; then more options
        // that must not be parsed.
        let rest = [
            44, 0, 4, 0, 0, 0, 0, 0, // routing
            17, 0, 0x05, 0xa8, 0xde, 0xad, 0xbe, 0xef, // fragment
            0xff, 0xff, 0xff, 0xff, // arbitrary continuation bytes
        ];
        let b = packet(ip_proto::IPV6_ROUTE, &rest);
        let p = Ipv6Packet::new_checked(&b[..]).unwrap();
        let up = p.upper_layer().unwrap();
        assert_eq!(
            up,
            Ipv6Upper {
                protocol: ip_proto::UDP,
                offset: 56,
                fragment: Some(Ipv6Fragment {
                    offset: 1448,
                    more: false,
                    ident: 0xdead_beef
                })
            }
        );
        assert!(!up.has_upper_header());
        assert_eq!(p.upper_payload(&up), &[0xff; 4]);
        // Even if the "next header" of a later fragment names another extension header, the
        // walk stops.
        let mut rest2 = rest;
        rest2[8] = ip_proto::IPV6_OPTS;
        let b = packet(ip_proto::IPV6_ROUTE, &rest2);
        let up = Ipv6Packet::new_checked(&b[..])
            .unwrap()
            .upper_layer()
            .unwrap();
        assert_eq!(up.protocol, ip_proto::IPV6_OPTS);
        assert_eq!(up.offset, 56);
    }

    #[test]
    fn no_next_header_is_an_upper_layer() {
        let b = packet(ip_proto::IPV6_OPTS, &[59, 0, 1, 4, 0, 0, 0, 0]);
        let up = Ipv6Packet::new_checked(&b[..])
            .unwrap()
            .upper_layer()
            .unwrap();
        assert_eq!(up.protocol, ip_proto::IPV6_NONXT);
        assert_eq!(up.offset, 48);
        // Upper layer at the very end (no bytes): fine, the caller's view will say Truncated.
        let b = packet(ip_proto::TCP, &[]);
        let p = Ipv6Packet::new_checked(&b[..]).unwrap();
        let up = p.upper_layer().unwrap();
        assert_eq!((up.protocol, up.offset), (ip_proto::TCP, 40));
        assert!(p.upper_payload(&up).is_empty());
    }

    #[test]
    fn hop_by_hop_only_first() {
        let b = packet(
            ip_proto::IPV6_OPTS,
            &[0, 0, 1, 4, 0, 0, 0, 0, 17, 0, 1, 4, 0, 0, 0, 0],
        );
        let p = Ipv6Packet::new_checked(&b[..]).unwrap();
        assert_eq!(p.upper_layer().unwrap_err(), Error::BadHeader);
    }

    fn dest_opts_chain(n: usize) -> Vec<u8> {
        let mut rest = Vec::new();
        for i in 0..n {
            let next = if i + 1 == n { 17 } else { 60 };
            rest.extend_from_slice(&[next, 0, 1, 4, 0, 0, 0, 0]);
        }
        rest.extend_from_slice(&UDP);
        packet(ip_proto::IPV6_OPTS, &rest)
    }

    #[test]
    fn at_most_eight_extension_headers() {
        let b = dest_opts_chain(8);
        let up = Ipv6Packet::new_checked(&b[..])
            .unwrap()
            .upper_layer()
            .unwrap();
        assert_eq!((up.protocol, up.offset), (ip_proto::UDP, 40 + 64));
        let b = dest_opts_chain(9);
        assert_eq!(
            Ipv6Packet::new_checked(&b[..])
                .unwrap()
                .upper_layer()
                .unwrap_err(),
            Error::BadHeader
        );
    }

    #[test]
    fn truncated_extension_headers() {
        // The full chain, cut at every length: the payload length always matches the buffer,
        // so only the walk can notice.
        // dest opts (16 bytes) -> AH (12 bytes) -> fragment (8 bytes) -> UDP at 36.
        let rest = [
            51, 1, 1, 12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, //
            44, 1, 0, 0, 0, 0, 0x10, 0x00, 0, 0, 0, 1, //
            17, 0, 0, 0, 0, 0, 0, 0,
        ];
        let b = packet(ip_proto::IPV6_OPTS, &rest);
        let up = Ipv6Packet::new_checked(&b[..])
            .unwrap()
            .upper_layer()
            .unwrap();
        assert_eq!(up.offset, 40 + 36);
        assert_eq!(up.protocol, ip_proto::UDP);
        for cut in 0..rest.len() {
            let b = packet(ip_proto::IPV6_OPTS, &rest[..cut]);
            assert_eq!(
                Ipv6Packet::new_checked(&b[..])
                    .unwrap()
                    .upper_layer()
                    .unwrap_err(),
                Error::Truncated,
                "cut {cut}"
            );
        }
        // Padding after payload_len is not read as headers.
        let mut b = packet(ip_proto::IPV6_OPTS, &rest[..20]);
        b.extend_from_slice(&rest[20..]);
        assert_eq!(
            Ipv6Packet::new_checked(&b[..])
                .unwrap()
                .upper_layer()
                .unwrap_err(),
            Error::Truncated
        );
    }

    #[test]
    fn truncated_at_every_length() {
        for len in 0..52 {
            assert_eq!(
                Ipv6Packet::new_checked(&ECHO[..len]).unwrap_err(),
                Error::Truncated,
                "len {len}"
            );
        }
        assert!(Ipv6Packet::new_checked(&ECHO[..52]).is_ok());
    }

    #[test]
    fn bad_version() {
        for v in [0x4b, 0x0b, 0x7b, 0xfb] {
            let mut b = ECHO;
            b[0] = v;
            assert_eq!(
                Ipv6Packet::new_checked(&b[..]).unwrap_err(),
                Error::BadHeader
            );
        }
    }

    #[test]
    fn setters() {
        let mut b = ECHO;
        let mut p = Ipv6Packet::new_checked(&mut b[..]).unwrap();
        let gw1: Ipv6Addr = "2001:2:0:2::11".parse().unwrap();
        p.set_src_addr(&vip());
        p.set_dst_addr(&gw1);
        p.set_hop_limit(63);
        p.payload_mut()[0] = 0x81;
        assert_eq!(p.src_addr(), vip());
        assert_eq!(p.dst_addr(), gw1);
        assert_eq!(p.hop_limit(), 63);
        assert_eq!(p.payload_mut().len(), 12);
        assert_eq!(&b[8..24], &ECHO[24..40]);
        assert_eq!(
            &b[24..40],
            &[0x20, 0x01, 0, 0x02, 0, 0, 0, 0x02, 0, 0, 0, 0, 0, 0, 0, 0x11]
        );
        assert_eq!((b[7], b[40], b[41]), (63, 0x81, 0x00));
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..120)) {
            if let Ok(p) = Ipv6Packet::new_checked(&data[..]) {
                let _ = (p.traffic_class(), p.flow_label(), p.next_header(), p.hop_limit());
                let _ = (p.src_addr(), p.dst_addr());
                prop_assert_eq!(p.payload().len(), usize::from(p.payload_len()));
                if let Ok(up) = p.upper_layer() {
                    prop_assert!(up.offset >= IPV6_HEADER_LEN);
                    prop_assert!(up.offset <= IPV6_HEADER_LEN + p.payload().len());
                    let _ = p.upper_payload(&up);
                }
            }
        }

        #[test]
        fn random_extension_chains_never_panic(
            headers in proptest::collection::vec(
                (prop_oneof![Just(0u8), Just(43), Just(44), Just(51), Just(60), Just(17), any::<u8>()],
                 0u8..4, any::<u16>()),
                0..12),
            first in prop_oneof![Just(0u8), Just(44), Just(60)],
            cut in any::<prop::sample::Index>(),
        ) {
            // Extension headers with plausible types and lengths, cut anywhere.
            let mut rest = Vec::new();
            for (next, len, frag) in &headers {
                rest.push(*next);
                rest.push(*len);
                rest.extend_from_slice(&frag.to_be_bytes());
                rest.extend_from_slice(&[0; 4]);
                rest.resize(rest.len() + usize::from(*len) * 8, 0);
            }
            let cut = cut.index(rest.len() + 1);
            let b = packet(first, &rest[..cut]);
            let p = Ipv6Packet::new_checked(&b[..]).unwrap();
            if let Ok(up) = p.upper_layer() {
                prop_assert!(up.offset <= b.len());
                if let Some(f) = up.fragment {
                    prop_assert_eq!(f.offset % 8, 0);
                }
            }
        }

        #[test]
        fn setters_roundtrip(src in any::<[u8; 16]>(), dst in any::<[u8; 16]>(), hop in any::<u8>()) {
            let mut b = ECHO;
            let mut p = Ipv6Packet::new_checked(&mut b[..]).unwrap();
            p.set_src_addr(&Ipv6Addr::from(src));
            p.set_dst_addr(&Ipv6Addr::from(dst));
            p.set_hop_limit(hop);
            prop_assert_eq!(p.src_addr(), Ipv6Addr::from(src));
            prop_assert_eq!(p.dst_addr(), Ipv6Addr::from(dst));
            prop_assert_eq!(p.hop_limit(), hop);
            prop_assert_eq!(p.payload(), &ECHO[40..52]);
        }
    }
}

#[cfg(test)]
mod repr_tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn emits_known_bytes() {
        let repr = Ipv6Repr::new(
            "fe80::200:ff:fe00:202".parse().unwrap(),
            "ff02::12".parse().unwrap(),
            ip_proto::VRRP,
            40,
            255,
        );
        let mut buf = [0xee; IPV6_HEADER_LEN];
        repr.emit(&mut Ipv6Packet::new_unchecked(&mut buf[..]));
        #[rustfmt::skip]
        let expected = [
            0x60, 0, 0, 0, 0, 40, 112, 255,
            0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0x02, 0x00, 0x00, 0xff, 0xfe, 0x00, 0x02, 0x02,
            0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x12,
        ];
        assert_eq!(buf, expected);
    }

    proptest! {
        #[test]
        fn round_trip(
            src in any::<[u8; 16]>(), dst in any::<[u8; 16]>(), next_header in any::<u8>(),
            payload_len in 0usize..2000, hop_limit in any::<u8>(), traffic_class in any::<u8>(),
            flow_label in 0u32..0x10_0000,
        ) {
            let repr = Ipv6Repr {
                src: Ipv6Addr::from(src),
                dst: Ipv6Addr::from(dst),
                next_header,
                payload_len,
                hop_limit,
                traffic_class,
                flow_label,
            };
            let mut buf = vec![0xa5u8; repr.buffer_len() + payload_len];
            repr.emit(&mut Ipv6Packet::new_unchecked(&mut buf[..]));
            let p = Ipv6Packet::new_checked(&buf[..]).unwrap();
            prop_assert_eq!(Ipv6Repr::parse(&p).unwrap(), repr);
        }
    }
}
