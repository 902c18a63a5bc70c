//! Frames answered in place on their ingress interface: ARP, neighbor solicitations, echo
//! requests to the appliance's addresses and VIPs.

use crate::pipeline::parse::L3;
use crate::pipeline::Verdict;
use std::net::IpAddr;

use crate::counters::DropReason;
use crate::frame::Frame;
use crate::model::{LocalKind, Role, Snapshot};
use crate::nat::{self};
use crate::wire::arp::{ArpPacket, ARP_REPLY};
use crate::wire::ethernet::EthernetAddress;
use crate::wire::icmp::icmpv4_type;
use crate::wire::icmpv6::{self, icmpv6_type, NdpNeighbor};
use crate::wire::{self};

/// Whether `addr` is answered on `interface`: `Some(true)` for the appliance's own addresses
/// (anywhere), `Some(false)` for VIPs (client-facing interfaces only).
pub(in crate::pipeline) fn answers_for(
    snap: &Snapshot,
    interface: u16,
    addr: IpAddr,
) -> Option<bool> {
    match snap.local(addr)? {
        LocalKind::Interface { .. } | LocalKind::Floating { .. } => Some(true),
        LocalKind::Vip { .. } if snap.interface_view(interface).role == Role::Client => Some(false),
        LocalKind::Vip { .. } | LocalKind::Standby => None,
    }
}

/// The MAC `addr` is answered with on `interface`: the virtual MAC for what moves with HA
/// mastership (VIPs, floating addresses), the port's own for the rest.
pub(in crate::pipeline) fn answer_mac(
    snap: &Snapshot,
    interface: u16,
    addr: IpAddr,
) -> EthernetAddress {
    let itf = snap.interface_view(interface);
    match snap.local(addr) {
        Some(LocalKind::Vip { .. } | LocalKind::Floating { .. }) => itf.forward_mac(addr.is_ipv6()),
        _ => itf.mac,
    }
}

/// Turns a frame around on its ingress interface: the peer's MAC becomes the destination,
/// `src` (the MAC the answered address goes with) the source.
pub(in crate::pipeline) fn reply_l2<F: Frame>(
    snap: &Snapshot,
    frame: &mut F,
    interface: u16,
    src: EthernetAddress,
) -> Verdict {
    let itf = snap.interface_view(interface);
    let bytes = frame.bytes_mut();
    bytes.copy_within(6..12, 0);
    bytes[6..12].copy_from_slice(&src.0);
    Verdict::Tx { port: itf.port }
}

pub(in crate::pipeline) fn arp_reply<F: Frame>(
    snap: &Snapshot,
    interface: u16,
    l3: usize,
    frame: &mut F,
) -> Verdict {
    let Ok(mut arp) = ArpPacket::new_checked(&mut frame.bytes_mut()[l3..]) else {
        return Verdict::Drop(DropReason::Truncated);
    };
    let (peer_hw, peer_ip, target) = (arp.sender_hw(), arp.sender_ip(), arp.target_ip());
    let mac = answer_mac(snap, interface, IpAddr::V4(target));
    arp.set_operation(ARP_REPLY);
    arp.set_sender_hw(mac);
    arp.set_sender_ip(target);
    arp.set_target_hw(peer_hw);
    arp.set_target_ip(peer_ip);
    reply_l2(snap, frame, interface, mac)
}

pub(in crate::pipeline) fn nd_advert<F: Frame>(
    snap: &Snapshot,
    interface: u16,
    l3: L3,
    router: bool,
    frame: &mut F,
) -> Verdict {
    let (IpAddr::V6(peer), Some(l4)) = (l3.src, l3.l4) else {
        return Verdict::Drop(DropReason::NdUnhandled);
    };
    let bytes = frame.bytes_mut();
    let icmp = &mut bytes[l4..l3.end];
    let Ok(mut na) = NdpNeighbor::new_checked(&mut *icmp) else {
        return Verdict::Drop(DropReason::Truncated);
    };
    let target = na.target();
    let mac = answer_mac(snap, interface, IpAddr::V6(target));
    // Solicited and Override always; Router on the appliance's own addresses (it routes for
    // the gateways), not on VIPs.
    na.set_flags(0x60 | if router { 0x80 } else { 0 });
    // The solicitation's source link-layer option becomes our target link-layer option: same
    // size, so the advertisement fits in place.
    let opts = &mut icmp[24..];
    if opts.len() >= 8 && opts[0] == icmpv6::NDP_OPT_SOURCE_LLADDR && opts[1] == 1 {
        opts[0] = icmpv6::NDP_OPT_TARGET_LLADDR;
        opts[2..8].copy_from_slice(&mac.0);
    }
    icmp[0] = icmpv6_type::NEIGHBOR_ADVERT;
    icmp[1] = 0;
    let ip = &mut bytes[l3.at..l3.end];
    ip[7] = 255;
    ip[8..24].copy_from_slice(&target.octets());
    ip[24..40].copy_from_slice(&peer.octets());
    nat::refill_icmpv6_checksum(&mut ip[l4 - l3.at..], &target, &peer);
    reply_l2(snap, frame, interface, mac)
}

pub(in crate::pipeline) fn echo_reply<F: Frame>(
    snap: &Snapshot,
    interface: u16,
    l3: L3,
    frame: &mut F,
) -> Verdict {
    let Some(l4) = l3.l4 else {
        return Verdict::Drop(DropReason::IcmpUnhandled);
    };
    let ip = &mut frame.bytes_mut()[l3.at..l3.end];
    let icmp_at = l4 - l3.at;
    match (l3.src, l3.dst) {
        (IpAddr::V4(src), IpAddr::V4(dst)) => {
            ip[8] = 64;
            ip[12..16].copy_from_slice(&dst.octets());
            ip[16..20].copy_from_slice(&src.octets());
            ip[10] = 0;
            ip[11] = 0;
            let c = wire::checksum::checksum(&ip[..icmp_at]);
            ip[10..12].copy_from_slice(&c.to_be_bytes());
            ip[icmp_at] = icmpv4_type::ECHO_REPLY;
            nat::refill_icmpv4_checksum(&mut ip[icmp_at..]);
        }
        (IpAddr::V6(src), IpAddr::V6(dst)) => {
            ip[7] = 64;
            ip[8..24].copy_from_slice(&dst.octets());
            ip[24..40].copy_from_slice(&src.octets());
            ip[icmp_at] = icmpv6_type::ECHO_REPLY;
            nat::refill_icmpv6_checksum(&mut ip[icmp_at..], &dst, &src);
        }
        _ => return Verdict::Drop(DropReason::IcmpUnhandled),
    }
    let mac = answer_mac(snap, interface, l3.dst);
    reply_l2(snap, frame, interface, mac)
}
