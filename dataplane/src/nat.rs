//! Address-only NAT: one address of an IP packet is replaced and every checksum that covers it is
//! updated incrementally (RFC 1624), so the cost does not depend on the payload size. Ports are
//! never touched.
//!
//! The functions take the packet from its IP header on (`ip`) and the offset of the transport
//! checksum within it, which the caller knows from parsing. A non-first fragment carries no
//! transport header: its caller passes [`L4Checksum::None`] (the pseudo-header change is
//! accounted for in the first fragment, which carries the checksum of the whole datagram).

use std::net::{Ipv4Addr, Ipv6Addr};

use crate::wire::checksum;
use crate::wire::ipv4::{self, IPV4_HEADER_LEN};
use crate::wire::ipv6::{self, IPV6_HEADER_LEN};
use crate::wire::{icmp, icmpv6, ip_proto, tcp, udp};

/// Which address of the packet changes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    Src,
    Dst,
}

/// Where the transport checksum that covers the addresses (through the pseudo-header) sits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum L4Checksum {
    /// No transport checksum to fix: ESP, ICMPv4, non-first fragments, or a quoted header cut
    /// short before its checksum.
    None,
    /// UDP checksum at this offset from the IP header. Over IPv4 a zero checksum means "none"
    /// and stays zero.
    Udp(usize),
    /// TCP or ICMPv6 checksum at this offset from the IP header.
    Other(usize),
}

impl L4Checksum {
    /// The checksum location for a transport header at `l4` (offset from the IP header) of
    /// `protocol`, when `available` bytes of it are present.
    pub fn locate(protocol: u8, l4: usize, available: usize) -> L4Checksum {
        match protocol {
            ip_proto::UDP if available >= udp::UDP_HEADER_LEN => {
                L4Checksum::Udp(l4 + udp::field::CHECKSUM)
            }
            ip_proto::TCP if available >= tcp::field::CHECKSUM + 2 => {
                L4Checksum::Other(l4 + tcp::field::CHECKSUM)
            }
            ip_proto::ICMPV6 if available >= icmpv6::field::CHECKSUM + 2 => {
                L4Checksum::Other(l4 + icmpv6::field::CHECKSUM)
            }
            _ => L4Checksum::None,
        }
    }
}

// The header offsets, from the wire views (constants: no cost on the fast path).
const V4_SRC: usize = ipv4::field::SRC.start;
const V4_DST: usize = ipv4::field::DST.start;
const V4_CSUM: usize = ipv4::field::CHECKSUM;
const V4_TTL: usize = ipv4::field::TTL;
const V4_PROTOCOL: usize = ipv4::field::PROTOCOL;
const V6_SRC: usize = ipv6::field::SRC.start;
const V6_DST: usize = ipv6::field::DST.start;
const V6_HOP_LIMIT: usize = ipv6::field::HOP_LIMIT;

fn fix_l4(ip: &mut [u8], l4: L4Checksum, old: &[u8], new: &[u8], v4: bool) {
    let (at, udp) = match l4 {
        L4Checksum::None => return,
        L4Checksum::Udp(at) => (at, true),
        L4Checksum::Other(at) => (at, false),
    };
    let Some(field) = ip.get_mut(at..at + 2) else {
        return;
    };
    let csum = u16::from_be_bytes([field[0], field[1]]);
    if udp && v4 && csum == 0 {
        // RFC 768: zero means the sender computed no checksum; keep it that way.
        return;
    }
    let mut updated = checksum::update_bytes(csum, old, new);
    if udp && updated == 0 {
        // A computed zero is transmitted as all ones (RFC 768, RFC 8200 §8.1).
        updated = 0xffff;
    }
    field.copy_from_slice(&updated.to_be_bytes());
}

/// Replaces the source or destination of an IPv4 packet. `ip` must hold at least the 20-byte
/// header (the caller parsed it).
pub fn rewrite_v4(ip: &mut [u8], side: Side, new: Ipv4Addr, l4: L4Checksum) {
    let at = match side {
        Side::Src => V4_SRC,
        Side::Dst => V4_DST,
    };
    let mut old = [0u8; 4];
    old.copy_from_slice(&ip[at..at + 4]);
    let new = new.octets();
    ip[at..at + 4].copy_from_slice(&new);
    let csum = u16::from_be_bytes([ip[V4_CSUM], ip[V4_CSUM + 1]]);
    let csum = checksum::update_bytes(csum, &old, &new);
    ip[V4_CSUM..V4_CSUM + 2].copy_from_slice(&csum.to_be_bytes());
    fix_l4(ip, l4, &old, &new, true);
}

/// Replaces the source or destination of an IPv6 packet. `ip` must hold the 40-byte header.
pub fn rewrite_v6(ip: &mut [u8], side: Side, new: &Ipv6Addr, l4: L4Checksum) {
    let at = match side {
        Side::Src => V6_SRC,
        Side::Dst => V6_DST,
    };
    let mut old = [0u8; 16];
    old.copy_from_slice(&ip[at..at + 16]);
    let new = new.octets();
    ip[at..at + 16].copy_from_slice(&new);
    fix_l4(ip, l4, &old, &new, false);
}

/// Decrements the IPv4 TTL, fixing the header checksum. Returns false (and changes nothing)
/// when the packet must not be forwarded (TTL 0 or 1).
pub fn decrement_ttl_v4(ip: &mut [u8]) -> bool {
    let ttl = ip[V4_TTL];
    if ttl <= 1 {
        return false;
    }
    let proto = ip[V4_PROTOCOL];
    let csum = u16::from_be_bytes([ip[V4_CSUM], ip[V4_CSUM + 1]]);
    let old = u16::from_be_bytes([ttl, proto]);
    let new = u16::from_be_bytes([ttl - 1, proto]);
    ip[V4_TTL] = ttl - 1;
    let csum = checksum::update16(csum, old, new);
    ip[V4_CSUM..V4_CSUM + 2].copy_from_slice(&csum.to_be_bytes());
    true
}

/// Decrements the IPv6 hop limit (no checksum covers it). False when it must not be forwarded.
pub fn decrement_hop_limit_v6(ip: &mut [u8]) -> bool {
    let hl = ip[V6_HOP_LIMIT];
    if hl <= 1 {
        return false;
    }
    ip[V6_HOP_LIMIT] = hl - 1;
    true
}

/// Whether a packet may be forwarded: its TTL (IPv4) or hop limit (IPv6) is above 1. Reads
/// only; false for a buffer too short to hold the field.
#[inline]
pub fn ttl_allows_forwarding(ip: &[u8], v6: bool) -> bool {
    let at = if v6 { V6_HOP_LIMIT } else { V4_TTL };
    ip.get(at).is_some_and(|&t| t > 1)
}

/// The transport checksum field at `l4`, if the packet has one to fix and it is present.
#[inline]
fn l4_field(ip: &mut [u8], l4: L4Checksum) -> Option<(&mut [u8; 2], bool)> {
    let (at, udp) = match l4 {
        L4Checksum::None => return None,
        L4Checksum::Udp(at) => (at, true),
        L4Checksum::Other(at) => (at, false),
    };
    Some((ip.get_mut(at..)?.first_chunk_mut::<2>()?, udp))
}

/// Applies an address change's `delta` to the transport checksum (see [`fix_l4`]).
#[inline]
fn apply_l4(ip: &mut [u8], l4: L4Checksum, delta: u32, v4: bool) {
    let Some((field, udp)) = l4_field(ip, l4) else {
        return;
    };
    let csum = u16::from_be_bytes(*field);
    if udp && v4 && csum == 0 {
        // RFC 768: zero means the sender computed no checksum; keep it that way.
        return;
    }
    let mut updated = checksum::apply(csum, delta);
    if udp && updated == 0 {
        // A computed zero is transmitted as all ones (RFC 768, RFC 8200 §8.1).
        updated = 0xffff;
    }
    *field = updated.to_be_bytes();
}

/// Forwards an IPv4 packet with one address replaced: decrements the TTL and writes `new`,
/// updating the header checksum once for both changes and the transport checksum for the
/// address. The result is byte for byte that of [`decrement_ttl_v4`] then [`rewrite_v4`].
/// Returns false, changing nothing, when the TTL is 0 or 1 or `ip` is shorter than 20 bytes.
#[inline]
pub fn forward_v4(ip: &mut [u8], side: Side, new: Ipv4Addr, l4: L4Checksum) -> bool {
    let Some(hdr) = ip.first_chunk_mut::<IPV4_HEADER_LEN>() else {
        return false;
    };
    let ttl = hdr[V4_TTL];
    if ttl <= 1 {
        return false;
    }
    let at = match side {
        Side::Src => V4_SRC,
        Side::Dst => V4_DST,
    };
    let old = [hdr[at], hdr[at + 1], hdr[at + 2], hdr[at + 3]];
    let new = new.octets();
    let delta = checksum::delta4(old, new);
    // The TTL is the high byte of its 16-bit word: one less is `~0x0100` in one's complement.
    const TTL_DELTA: u32 = !0x0100u16 as u32;
    let csum = u16::from_be_bytes([hdr[V4_CSUM], hdr[V4_CSUM + 1]]);
    let csum = checksum::apply(csum, delta + TTL_DELTA);
    hdr[V4_TTL] = ttl - 1;
    hdr[at..at + 4].copy_from_slice(&new);
    hdr[V4_CSUM..V4_CSUM + 2].copy_from_slice(&csum.to_be_bytes());
    apply_l4(ip, l4, delta, true);
    true
}

/// Forwards an IPv6 packet with one address replaced: decrements the hop limit, writes `new`
/// and updates the transport checksum. Byte for byte [`decrement_hop_limit_v6`] then
/// [`rewrite_v6`]. False, changing nothing, when the hop limit is 0 or 1 or `ip` is shorter
/// than 40 bytes.
#[inline]
pub fn forward_v6(ip: &mut [u8], side: Side, new: &Ipv6Addr, l4: L4Checksum) -> bool {
    let Some(hdr) = ip.first_chunk_mut::<IPV6_HEADER_LEN>() else {
        return false;
    };
    let hl = hdr[V6_HOP_LIMIT];
    if hl <= 1 {
        return false;
    }
    let field = match side {
        Side::Src => hdr[V6_SRC..V6_SRC + 16].first_chunk_mut::<16>(),
        Side::Dst => hdr[V6_DST..V6_DST + 16].first_chunk_mut::<16>(),
    };
    let Some(field) = field else {
        return false;
    };
    let new = new.octets();
    let delta = checksum::delta16(field, &new);
    *field = new;
    hdr[V6_HOP_LIMIT] = hl - 1;
    apply_l4(ip, l4, delta, false);
    true
}

/// Recomputes an ICMPv4 message's checksum over `icmp` (the whole message). Used after the
/// quoted header of an ICMP error changed: the quote is short, and a recompute is simpler to
/// trust than chaining several incremental updates.
pub fn refill_icmpv4_checksum(icmp: &mut [u8]) {
    const AT: usize = icmp::field::CHECKSUM;
    if icmp.len() < AT + 2 {
        return;
    }
    icmp[AT..AT + 2].fill(0);
    let c = checksum::checksum(icmp);
    icmp[AT..AT + 2].copy_from_slice(&c.to_be_bytes());
}

/// Recomputes an ICMPv6 message's checksum (pseudo-header with the packet's final addresses).
pub fn refill_icmpv6_checksum(icmp: &mut [u8], src: &Ipv6Addr, dst: &Ipv6Addr) {
    const AT: usize = icmpv6::field::CHECKSUM;
    if icmp.len() < AT + 2 {
        return;
    }
    icmp[AT..AT + 2].fill(0);
    let Ok(len) = u32::try_from(icmp.len()) else {
        return;
    };
    let acc = checksum::pseudo_header_v6(src, dst, ip_proto::ICMPV6, len);
    let c = !checksum::fold(checksum::sum(acc, icmp));
    icmp[AT..AT + 2].copy_from_slice(&c.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::checksum::{checksum, fold, pseudo_header_v4, pseudo_header_v6, sum};
    use proptest::prelude::*;

    /// IPv4 + UDP packet with correct checksums (built by hand: this module must not depend on
    /// the builder it helps test).
    fn v4_udp(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
        let total = 28 + payload.len();
        let mut p = vec![0u8; total];
        p[0] = 0x45;
        p[2..4].copy_from_slice(&(total as u16).to_be_bytes());
        p[8] = 64;
        p[9] = ip_proto::UDP;
        p[12..16].copy_from_slice(&src);
        p[16..20].copy_from_slice(&dst);
        let c = checksum(&p[..20]);
        p[10..12].copy_from_slice(&c.to_be_bytes());
        p[20..22].copy_from_slice(&sport.to_be_bytes());
        p[22..24].copy_from_slice(&dport.to_be_bytes());
        p[24..26].copy_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
        p[28..].copy_from_slice(payload);
        let acc = pseudo_header_v4(
            src.into(),
            dst.into(),
            ip_proto::UDP,
            (8 + payload.len()) as u16,
        );
        let mut c = !fold(sum(acc, &p[20..]));
        if c == 0 {
            c = 0xffff;
        }
        p[26..28].copy_from_slice(&c.to_be_bytes());
        p
    }

    fn v4_udp_verifies(p: &[u8]) -> bool {
        let src: [u8; 4] = p[12..16].try_into().unwrap();
        let dst: [u8; 4] = p[16..20].try_into().unwrap();
        let acc = pseudo_header_v4(src.into(), dst.into(), ip_proto::UDP, (p.len() - 20) as u16);
        checksum(&p[..20]) == 0 && fold(sum(acc, &p[20..])) == 0xffff
    }

    fn v6_tcp(src: Ipv6Addr, dst: Ipv6Addr, payload: &[u8]) -> Vec<u8> {
        let l4 = 20 + payload.len();
        let mut p = vec![0u8; 40 + l4];
        p[0] = 0x60;
        p[4..6].copy_from_slice(&(l4 as u16).to_be_bytes());
        p[6] = ip_proto::TCP;
        p[7] = 64;
        p[8..24].copy_from_slice(&src.octets());
        p[24..40].copy_from_slice(&dst.octets());
        p[40..42].copy_from_slice(&50000u16.to_be_bytes());
        p[42..44].copy_from_slice(&443u16.to_be_bytes());
        p[52] = 5 << 4;
        p[53] = 0x18;
        p[60..].copy_from_slice(payload);
        let acc = pseudo_header_v6(&src, &dst, ip_proto::TCP, l4 as u32);
        let c = !fold(sum(acc, &p[40..]));
        p[56..58].copy_from_slice(&c.to_be_bytes());
        p
    }

    fn v6_tcp_verifies(p: &[u8]) -> bool {
        let src = Ipv6Addr::from(<[u8; 16]>::try_from(&p[8..24]).unwrap());
        let dst = Ipv6Addr::from(<[u8; 16]>::try_from(&p[24..40]).unwrap());
        let acc = pseudo_header_v6(&src, &dst, ip_proto::TCP, (p.len() - 40) as u32);
        fold(sum(acc, &p[40..])) == 0xffff
    }

    #[test]
    fn dnat_v4_udp_fixes_both_checksums_and_keeps_ports() {
        let mut p = v4_udp(
            [198, 18, 64, 7],
            [198, 18, 0, 100],
            500,
            500,
            b"ike payload",
        );
        let orig = p.clone();
        rewrite_v4(
            &mut p,
            Side::Dst,
            Ipv4Addr::new(198, 19, 0, 12),
            L4Checksum::Udp(26),
        );
        assert_eq!(&p[16..20], &[198, 19, 0, 12]);
        assert_eq!(&p[20..24], &orig[20..24], "ports unchanged");
        assert_eq!(&p[28..], &orig[28..], "payload unchanged");
        assert!(v4_udp_verifies(&p));
    }

    #[test]
    fn zero_udp_checksum_stays_zero_over_ipv4() {
        let mut p = v4_udp([198, 18, 64, 7], [198, 18, 0, 100], 4500, 4500, &[0xff]);
        p[26] = 0;
        p[27] = 0;
        rewrite_v4(
            &mut p,
            Side::Dst,
            Ipv4Addr::new(198, 19, 0, 11),
            L4Checksum::Udp(26),
        );
        assert_eq!(&p[26..28], &[0, 0]);
        assert_eq!(checksum(&p[..20]), 0);
    }

    #[test]
    fn ttl_decrement_keeps_header_checksum_valid() {
        let mut p = v4_udp([198, 18, 64, 7], [198, 18, 0, 100], 500, 500, b"x");
        assert!(decrement_ttl_v4(&mut p));
        assert_eq!(p[8], 63);
        assert_eq!(checksum(&p[..20]), 0);
        p[8] = 1;
        let before = p.clone();
        assert!(!decrement_ttl_v4(&mut p));
        assert_eq!(p, before);
    }

    #[test]
    fn hop_limit_decrement() {
        let mut p = v6_tcp(
            "2001:2:0:64::5".parse().unwrap(),
            "2001:2:0:1::100".parse().unwrap(),
            b"",
        );
        assert!(decrement_hop_limit_v6(&mut p));
        assert_eq!(p[7], 63);
        p[7] = 1;
        assert!(!decrement_hop_limit_v6(&mut p));
        assert_eq!(p[7], 1);
    }

    /// Client 198.18.1.7:4500 -> VIP 198.18.0.100:4500, UDP carrying ESP (SPI 0x1234, seq 1),
    /// TTL 64, DF: checksums as a sender computes them.
    const V4_TO_VIP: [u8; 36] = [
        0x45, 0x00, 0x00, 0x24, 0x1c, 0x46, 0x40, 0x00, 0x40, 0x11, 0x90, 0xf3, 0xc6, 0x12, 0x01,
        0x07, 0xc6, 0x12, 0x00, 0x64, 0x11, 0x94, 0x11, 0x94, 0x00, 0x10, 0x3c, 0xe1, 0x00, 0x00,
        0x12, 0x34, 0x00, 0x00, 0x00, 0x01,
    ];
    /// The same packet as sent on to gw2 (198.19.0.12), TTL 63, checksums recomputed from
    /// scratch.
    const V4_TO_GW2: [u8; 36] = [
        0x45, 0x00, 0x00, 0x24, 0x1c, 0x46, 0x40, 0x00, 0x3f, 0x11, 0x92, 0x4a, 0xc6, 0x12, 0x01,
        0x07, 0xc6, 0x13, 0x00, 0x0c, 0x11, 0x94, 0x11, 0x94, 0x00, 0x10, 0x3d, 0x38, 0x00, 0x00,
        0x12, 0x34, 0x00, 0x00, 0x00, 0x01,
    ];
    /// 2001:2:0:2::12:4500 -> client 2001:2:0:64::5:4500, UDP (ESP SPI 0x1234, seq 2), hop
    /// limit 64.
    const V6_FROM_GW: [u8; 56] = [
        0x60, 0x00, 0x00, 0x00, 0x00, 0x10, 0x11, 0x40, 0x20, 0x01, 0x00, 0x02, 0x00, 0x00, 0x00,
        0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x12, 0x20, 0x01, 0x00, 0x02, 0x00, 0x00,
        0x00, 0x64, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x05, 0x11, 0x94, 0x11, 0x94, 0x00,
        0x10, 0x89, 0xed, 0x00, 0x00, 0x12, 0x34, 0x00, 0x00, 0x00, 0x02,
    ];
    /// The same from the VIP 2001:2:0:1::100, hop limit 63, checksum recomputed.
    const V6_FROM_VIP: [u8; 56] = [
        0x60, 0x00, 0x00, 0x00, 0x00, 0x10, 0x11, 0x3f, 0x20, 0x01, 0x00, 0x02, 0x00, 0x00, 0x00,
        0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x20, 0x01, 0x00, 0x02, 0x00, 0x00,
        0x00, 0x64, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x05, 0x11, 0x94, 0x11, 0x94, 0x00,
        0x10, 0x89, 0x00, 0x00, 0x00, 0x12, 0x34, 0x00, 0x00, 0x00, 0x02,
    ];

    #[test]
    fn forward_v4_fixture() {
        let mut p = V4_TO_VIP;
        let gw2 = Ipv4Addr::new(198, 19, 0, 12);
        assert!(forward_v4(&mut p, Side::Dst, gw2, L4Checksum::Udp(26)));
        assert_eq!(p, V4_TO_GW2);
        // Through the step-by-step functions: the same bytes.
        let mut q = V4_TO_VIP;
        assert!(decrement_ttl_v4(&mut q));
        rewrite_v4(&mut q, Side::Dst, gw2, L4Checksum::Udp(26));
        assert_eq!(q, V4_TO_GW2);
    }

    #[test]
    fn forward_v6_fixture() {
        let mut p = V6_FROM_GW;
        let vip: Ipv6Addr = "2001:2:0:1::100".parse().unwrap();
        assert!(forward_v6(&mut p, Side::Src, &vip, L4Checksum::Udp(46)));
        assert_eq!(p, V6_FROM_VIP);
    }

    #[test]
    fn forward_refuses_expiring_and_short_packets_unchanged() {
        for ttl in [0, 1] {
            let mut p = V4_TO_VIP;
            p[8] = ttl;
            let before = p;
            assert!(!ttl_allows_forwarding(&p, false));
            assert!(!forward_v4(
                &mut p,
                Side::Dst,
                Ipv4Addr::new(198, 19, 0, 11),
                L4Checksum::Udp(26)
            ));
            assert_eq!(p, before);
            let mut q = V6_FROM_GW;
            q[7] = ttl;
            let before = q;
            assert!(!ttl_allows_forwarding(&q, true));
            assert!(!forward_v6(
                &mut q,
                Side::Src,
                &Ipv6Addr::LOCALHOST,
                L4Checksum::Udp(46)
            ));
            assert_eq!(q, before);
        }
        assert!(ttl_allows_forwarding(&V4_TO_VIP, false));
        assert!(ttl_allows_forwarding(&V6_FROM_GW, true));
        for len in 0..20 {
            let mut p = V4_TO_VIP[..len].to_vec();
            assert_eq!(ttl_allows_forwarding(&p, false), len > 8);
            assert!(!forward_v4(
                &mut p,
                Side::Src,
                Ipv4Addr::new(198, 18, 0, 100),
                L4Checksum::None
            ));
            assert_eq!(p, V4_TO_VIP[..len]);
        }
        for len in 0..40 {
            let mut q = V6_FROM_GW[..len].to_vec();
            assert_eq!(ttl_allows_forwarding(&q, true), len > 7);
            assert!(!forward_v6(
                &mut q,
                Side::Dst,
                &Ipv6Addr::LOCALHOST,
                L4Checksum::None
            ));
            assert_eq!(q, V6_FROM_GW[..len]);
        }
        // A transport checksum beyond the buffer is left alone, the rest is done.
        let mut p = V4_TO_VIP;
        assert!(forward_v4(
            &mut p[..27],
            Side::Dst,
            Ipv4Addr::new(198, 19, 0, 12),
            L4Checksum::Udp(26)
        ));
        assert_eq!(p[..26], V4_TO_GW2[..26]);
        assert_eq!(p[26..], V4_TO_VIP[26..]);
    }

    proptest! {
        /// DNAT on the way in and SNAT on the way back leave ports and payload as they were,
        /// and every rewritten checksum verifies at each step.
        #[test]
        fn nat_there_and_back_v4(
            client in any::<[u8; 4]>(),
            gw in any::<[u8; 4]>(),
            sport in any::<u16>(),
            dport in any::<u16>(),
            payload in proptest::collection::vec(any::<u8>(), 0..300),
        ) {
            let vip = [198, 18, 0, 100];
            let orig = v4_udp(client, vip, sport, dport, &payload);
            let mut p = orig.clone();
            rewrite_v4(&mut p, Side::Dst, gw.into(), L4Checksum::Udp(26));
            prop_assert!(v4_udp_verifies(&p));
            // The gateway answers: swap addresses and ports, keep the payload.
            let mut r = v4_udp(gw, client, dport, sport, &payload);
            rewrite_v4(&mut r, Side::Src, vip.into(), L4Checksum::Udp(26));
            prop_assert!(v4_udp_verifies(&r));
            prop_assert_eq!(&r[12..16], &vip[..]);
            prop_assert_eq!(&r[20..22], &dport.to_be_bytes()[..]);
            prop_assert_eq!(&r[22..24], &sport.to_be_bytes()[..]);
            prop_assert_eq!(&r[28..], &payload[..]);
            // And translating the forward packet back restores it byte for byte.
            rewrite_v4(&mut p, Side::Dst, vip.into(), L4Checksum::Udp(26));
            let same_csum = p[26..28] == orig[26..28]
                || (u16::from_be_bytes([p[26], p[27]]) | u16::from_be_bytes([orig[26], orig[27]])) == 0xffff;
            prop_assert!(same_csum);
            prop_assert_eq!(&p[..26], &orig[..26]);
            prop_assert_eq!(&p[28..], &orig[28..]);
        }

        /// The combined forward is byte for byte TTL decrement then rewrite, on any header,
        /// either side, any transport checksum location and value (zero UDP included).
        #[test]
        fn forward_v4_is_decrement_then_rewrite(
            mut p in proptest::collection::vec(any::<u8>(), 20..64),
            new in any::<[u8; 4]>(),
            dst in any::<bool>(),
            l4 in (0usize..3, 0usize..70),
            zero_csum in any::<bool>(),
        ) {
            let side = if dst { Side::Dst } else { Side::Src };
            let l4 = match l4 {
                (0, _) => L4Checksum::None,
                (1, at) => L4Checksum::Udp(at),
                (_, at) => L4Checksum::Other(at),
            };
            if let (true, L4Checksum::Udp(at)) = (zero_csum, l4) {
                if let Some(f) = p.get_mut(at..at + 2) {
                    f.copy_from_slice(&[0, 0]);
                }
            }
            let mut want = p.clone();
            let ok = decrement_ttl_v4(&mut want);
            if ok {
                rewrite_v4(&mut want, side, new.into(), l4);
            }
            prop_assert_eq!(forward_v4(&mut p, side, new.into(), l4), ok);
            prop_assert_eq!(p, want);
        }

        #[test]
        fn forward_v6_is_decrement_then_rewrite(
            mut p in proptest::collection::vec(any::<u8>(), 40..90),
            new in any::<[u8; 16]>(),
            dst in any::<bool>(),
            l4 in (0usize..3, 0usize..100),
        ) {
            let side = if dst { Side::Dst } else { Side::Src };
            let l4 = match l4 {
                (0, _) => L4Checksum::None,
                (1, at) => L4Checksum::Udp(at),
                (_, at) => L4Checksum::Other(at),
            };
            let new = Ipv6Addr::from(new);
            let mut want = p.clone();
            let ok = decrement_hop_limit_v6(&mut want);
            if ok {
                rewrite_v6(&mut want, side, &new, l4);
            }
            prop_assert_eq!(forward_v6(&mut p, side, &new, l4), ok);
            prop_assert_eq!(p, want);
        }

        #[test]
        fn nat_there_and_back_v6_tcp(
            client in any::<[u8; 16]>(),
            gw in any::<[u8; 16]>(),
            payload in proptest::collection::vec(any::<u8>(), 0..300),
        ) {
            let vip: Ipv6Addr = "2001:2:0:1::100".parse().unwrap();
            let orig = v6_tcp(client.into(), vip, &payload);
            let mut p = orig.clone();
            rewrite_v6(&mut p, Side::Dst, &gw.into(), L4Checksum::Other(56));
            prop_assert!(v6_tcp_verifies(&p));
            prop_assert_eq!(&p[40..44], &orig[40..44]);
            rewrite_v6(&mut p, Side::Dst, &vip, L4Checksum::Other(56));
            prop_assert!(v6_tcp_verifies(&p));
            prop_assert_eq!(&p[60..], &orig[60..]);
            prop_assert_eq!(&p[..56], &orig[..56]);
        }
    }
}
