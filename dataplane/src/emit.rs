//! Whole frames composed from the `wire` Reprs: the one way packets are written from scratch.
//!
//! The control plane sends what is built here (ARP requests and gratuitous ARP, neighbor
//! solicitations and unsolicited advertisements, VRRP adverts), and the test kit
//! (`vpnlb-testkit`) builds its frames on the same functions. Each function sizes the buffer
//! from the Reprs' `buffer_len`, then lets every Repr emit its header through its view, inner
//! to outer where a checksum needs the payload. Per-packet rewrites on the fast path do not come
//! here: they change a few fields of a received frame in place.

use std::net::{IpAddr, Ipv6Addr};

use crate::wire::arp::{ArpPacket, ArpRepr};
use crate::wire::ethernet::{ethertype, EthernetAddress, EthernetFrame, EthernetRepr, Vlan};
use crate::wire::icmpv6::{Icmpv6Packet, NdpRepr};
use crate::wire::ip_proto;
use crate::wire::ipv4::{Ipv4Packet, Ipv4Repr};
use crate::wire::ipv6::{Ipv6Packet, Ipv6Repr};
use crate::wire::vrrp::{self, Family, VrrpPacket, VrrpRepr};
use crate::wire::Result;

/// The Ethernet header of a frame to build, less the EtherType (which follows from what it
/// carries).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct L2 {
    pub src: EthernetAddress,
    pub dst: EthernetAddress,
    /// VLAN tags; VIDs above 4095 keep their low 12 bits.
    pub vlan: Vlan,
}

impl L2 {
    /// An untagged header from `src` to `dst`.
    pub const fn new(src: EthernetAddress, dst: EthernetAddress) -> Self {
        L2 {
            src,
            dst,
            vlan: Vlan::Untagged,
        }
    }

    /// The same header with `vlan` tags.
    pub const fn with_vlan(self, vlan: Vlan) -> Self {
        L2 { vlan, ..self }
    }

    /// The Ethernet Repr for a payload of `ethertype`.
    pub const fn repr(&self, ethertype: u16) -> EthernetRepr {
        EthernetRepr {
            src: self.src,
            dst: self.dst,
            vlan: self.vlan,
            ethertype,
        }
    }
}

/// A frame of `l2` carrying `payload_len` bytes of `ethertype`: the Ethernet header written,
/// the payload zeroed and left to `emit_payload`.
pub fn ethernet_frame(
    l2: &L2,
    ethertype: u16,
    payload_len: usize,
    emit_payload: impl FnOnce(&mut [u8]),
) -> Vec<u8> {
    let eth = l2.repr(ethertype);
    let mut out = vec![0; eth.buffer_len() + payload_len];
    let mut frame = EthernetFrame::new_unchecked(&mut out[..]);
    eth.emit(&mut frame);
    emit_payload(frame.payload_mut());
    out
}

/// An ARP packet in a frame of `l2`.
pub fn arp_frame(l2: &L2, arp: &ArpRepr) -> Vec<u8> {
    ethernet_frame(l2, ethertype::ARP, arp.buffer_len(), |p| {
        arp.emit(&mut ArpPacket::new_unchecked(p))
    })
}

/// An IPv4 packet (header `ip`, no options) in a frame of `l2`: `emit_payload` writes the
/// `ip.payload_len` bytes after the header, and may read the header the payload's checksum
/// needs from the Repr.
pub fn ipv4_frame(l2: &L2, ip: &Ipv4Repr, emit_payload: impl FnOnce(&mut [u8])) -> Vec<u8> {
    ethernet_frame(l2, ethertype::IPV4, ip.buffer_len() + ip.payload_len, |p| {
        let (header, payload) = p.split_at_mut(ip.buffer_len());
        emit_payload(payload);
        ip.emit(&mut Ipv4Packet::new_unchecked(header));
    })
}

/// An IPv6 packet (fixed header `ip`) in a frame of `l2`: `emit_payload` writes the
/// `ip.payload_len` bytes after the fixed header (extension headers included).
pub fn ipv6_frame(l2: &L2, ip: &Ipv6Repr, emit_payload: impl FnOnce(&mut [u8])) -> Vec<u8> {
    ethernet_frame(l2, ethertype::IPV6, ip.buffer_len() + ip.payload_len, |p| {
        let (header, payload) = p.split_at_mut(ip.buffer_len());
        emit_payload(payload);
        ip.emit(&mut Ipv6Packet::new_unchecked(header));
    })
}

/// The hop limit of every NDP message (RFC 4861 §7.1: receivers drop anything else).
pub const NDP_HOP_LIMIT: u8 = 255;

/// A neighbor solicitation or advertisement from `src` to `dst` in a frame of `l2`. For a
/// solicitation `dst` is the target's [`solicited_node`](crate::wire::ipv6::solicited_node)
/// address and `l2.dst` its multicast MAC, or the neighbor itself to re-check it.
pub fn ndp_frame(l2: &L2, src: &Ipv6Addr, dst: &Ipv6Addr, ndp: &NdpRepr) -> Vec<u8> {
    let ip = Ipv6Repr::new(
        *src,
        *dst,
        ip_proto::ICMPV6,
        ndp.buffer_len(),
        NDP_HOP_LIMIT,
    );
    ipv6_frame(l2, &ip, |p| {
        ndp.emit(&mut Icmpv6Packet::new_unchecked(p), src, dst)
    })
}

/// A VRRPv3 advertisement from `src` to `dst` (the group) in a frame of `l2`, with TTL or hop
/// limit [`vrrp::TTL`]. Errors as [`VrrpRepr::check`].
pub fn vrrp_frame(l2: &L2, advert: &VrrpRepr, src: IpAddr, dst: IpAddr) -> Result<Vec<u8>> {
    let family = advert.check(src, dst)?;
    let len = advert.buffer_len(family);
    let mut result = Ok(());
    let mut emit = |p: &mut [u8]| {
        result = advert.emit(&mut VrrpPacket::new_unchecked(p, family), src, dst);
    };
    let frame = match (src, dst, family) {
        (IpAddr::V4(s), IpAddr::V4(d), Family::Ipv4) => ipv4_frame(
            l2,
            &Ipv4Repr::new(s, d, ip_proto::VRRP, len, vrrp::TTL),
            &mut emit,
        ),
        (IpAddr::V6(s), IpAddr::V6(d), Family::Ipv6) => ipv6_frame(
            l2,
            &Ipv6Repr::new(s, d, ip_proto::VRRP, len, vrrp::TTL),
            &mut emit,
        ),
        _ => return Err(crate::wire::Error::BadHeader),
    };
    result.map(|()| frame)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::arp::ARP_REQUEST;
    use crate::wire::icmpv6::NDP_FLAG_OVERRIDE;
    use crate::wire::ipv6::solicited_node;
    use std::net::Ipv4Addr;

    const MAC: EthernetAddress = EthernetAddress([0x02, 0, 0, 0, 0x01, 0x01]);

    #[test]
    fn gratuitous_arp_bytes() {
        let vip = Ipv4Addr::new(198, 18, 0, 100);
        let l2 = L2::new(MAC, EthernetAddress::BROADCAST).with_vlan(Vlan::Single { vid: 10 });
        let frame = arp_frame(
            &l2,
            &ArpRepr {
                operation: ARP_REQUEST,
                sender_hw: MAC,
                sender_ip: vip,
                target_hw: EthernetAddress::default(),
                target_ip: vip,
            },
        );
        #[rustfmt::skip]
        let expected = [
            0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02, 0, 0, 0, 0x01, 0x01,
            0x81, 0x00, 0x00, 0x0a, 0x08, 0x06,
            0, 1, 0x08, 0x00, 6, 4, 0, 1,
            0x02, 0, 0, 0, 0x01, 0x01, 198, 18, 0, 100,
            0, 0, 0, 0, 0, 0, 198, 18, 0, 100,
        ];
        assert_eq!(frame, expected);
    }

    #[test]
    fn ndp_frames_parse_back() {
        let src = Ipv6Addr::new(0x2001, 2, 0, 1, 0, 0, 0, 1);
        let target = Ipv6Addr::new(0x2001, 2, 0, 1, 0, 0, 0, 0xfe);
        let group = solicited_node(&target);
        let ns = NdpRepr::NeighborSolicit {
            target,
            source_lladdr: Some(MAC),
        };
        let l2 = L2::new(MAC, EthernetAddress::ipv6_multicast(&group));
        let frame = ndp_frame(&l2, &src, &group, &ns);
        let eth = EthernetFrame::new_checked(&frame[..]).unwrap();
        assert_eq!(EthernetRepr::parse(&eth).unwrap(), l2.repr(ethertype::IPV6));
        let ip = Ipv6Packet::new_checked(eth.payload()).unwrap();
        assert_eq!(
            Ipv6Repr::parse(&ip).unwrap(),
            Ipv6Repr::new(src, group, ip_proto::ICMPV6, 32, 255)
        );
        let icmp = Icmpv6Packet::new_checked(ip.payload()).unwrap();
        assert!(icmp.verify_checksum(&src, &group));
        assert_eq!(NdpRepr::parse(&icmp).unwrap(), ns);

        let na = NdpRepr::NeighborAdvert {
            flags: NDP_FLAG_OVERRIDE,
            target,
            target_lladdr: Some(MAC),
        };
        let frame = ndp_frame(&l2, &target, &src, &na);
        let icmp = Icmpv6Packet::new_checked(&frame[54..]).unwrap();
        assert!(icmp.verify_checksum(&target, &src));
        assert_eq!(NdpRepr::parse(&icmp).unwrap(), na);
    }

    /// The scapy advert of `wire::vrrp`'s tests, with its IP header.
    #[test]
    fn vrrp_frame_matches_scapy() {
        let advert = VrrpRepr {
            vrid: 51,
            priority: 200,
            max_adver_int: 100,
            addresses: vec![
                IpAddr::V4(Ipv4Addr::new(198, 19, 0, 1)),
                IpAddr::V4(Ipv4Addr::new(198, 18, 0, 100)),
            ],
        };
        let src = IpAddr::V4(Ipv4Addr::new(198, 19, 0, 2));
        let dst = IpAddr::V4(vrrp::VRRP_V4_GROUP);
        let l2 = L2::new(
            vrrp::virtual_mac(51, false),
            EthernetAddress::ipv4_multicast(vrrp::VRRP_V4_GROUP),
        );
        let frame = vrrp_frame(&l2, &advert, src, dst).unwrap();
        assert_eq!(
            frame[14 + 20..],
            [0x31, 0x33, 0xc8, 0x02, 0x00, 0x64, 0xd3, 0x31, 198, 19, 0, 1, 198, 18, 0, 100]
        );
        let ip = Ipv4Packet::new_checked(&frame[14..]).unwrap();
        assert_eq!(
            Ipv4Repr::parse(&ip).unwrap(),
            Ipv4Repr::new(
                Ipv4Addr::new(198, 19, 0, 2),
                vrrp::VRRP_V4_GROUP,
                ip_proto::VRRP,
                16,
                255
            )
        );
        let v6 = IpAddr::V6(vrrp::VRRP_V6_GROUP);
        assert!(vrrp_frame(&l2, &advert, src, v6).is_err());
    }
}
