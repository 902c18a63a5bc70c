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
use crate::wire::ip_proto;

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
            ip_proto::UDP if available >= 8 => L4Checksum::Udp(l4 + 6),
            ip_proto::TCP if available >= 18 => L4Checksum::Other(l4 + 16),
            ip_proto::ICMPV6 if available >= 4 => L4Checksum::Other(l4 + 2),
            _ => L4Checksum::None,
        }
    }
}

const V4_SRC: usize = 12;
const V4_DST: usize = 16;
const V4_CSUM: usize = 10;
const V4_TTL: usize = 8;
const V6_SRC: usize = 8;
const V6_DST: usize = 24;
const V6_HOP_LIMIT: usize = 7;

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
    let proto = ip[V4_TTL + 1];
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

/// Recomputes an ICMPv4 message's checksum over `icmp` (the whole message). Used after the
/// quoted header of an ICMP error changed: the quote is short, and a recompute is simpler to
/// trust than chaining several incremental updates.
pub fn refill_icmpv4_checksum(icmp: &mut [u8]) {
    if icmp.len() < 4 {
        return;
    }
    icmp[2] = 0;
    icmp[3] = 0;
    let c = checksum::checksum(icmp);
    icmp[2..4].copy_from_slice(&c.to_be_bytes());
}

/// Recomputes an ICMPv6 message's checksum (pseudo-header with the packet's final addresses).
pub fn refill_icmpv6_checksum(icmp: &mut [u8], src: &Ipv6Addr, dst: &Ipv6Addr) {
    if icmp.len() < 4 {
        return;
    }
    icmp[2] = 0;
    icmp[3] = 0;
    let Ok(len) = u32::try_from(icmp.len()) else {
        return;
    };
    let acc = checksum::pseudo_header_v6(src, dst, ip_proto::ICMPV6, len);
    let c = !checksum::fold(checksum::sum(acc, icmp));
    icmp[2..4].copy_from_slice(&c.to_be_bytes());
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
