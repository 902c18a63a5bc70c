//! Frames answered in place on their ingress interface: ARP, neighbor solicitations, echo
//! requests to the appliance's addresses and VIPs.

use crate::pipeline::parse::L3;
use crate::pipeline::{ReportRing, Verdict};
use std::net::IpAddr;

use crate::counters::DropReason;
use crate::emit;
use crate::frame::Frame;
use crate::model::{LocalKind, Role, Snapshot};
use crate::nat::{self};
use crate::neighbor::Heard;
use crate::wire::arp::{ArpPacket, ARP_REPLY};
use crate::wire::ethernet::EthernetAddress;
use crate::wire::icmp::{icmpv4_type, Icmpv4Packet};
use crate::wire::icmpv6::{self, icmpv6_type, Icmpv6Packet, NdpNeighbor};
use crate::wire::ipv4::Ipv4Packet;
use crate::wire::ipv6::Ipv6Packet;

/// The TTL or hop limit of echo replies.
const ECHO_REPLY_TTL: u8 = 64;

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

/// Remembers a neighbor that asked for one of our addresses, for the control plane's cache
/// (which learns it only by its rules: on a subnet of `interface`, not static, ...). Not an
/// address probe's unspecified sender, nor a group MAC.
fn heard_from(
    heard: &mut ReportRing<Heard>,
    interface: u16,
    address: IpAddr,
    mac: EthernetAddress,
) {
    if mac.is_unicast() && !address.is_unspecified() {
        heard.push(Heard {
            interface,
            address,
            mac,
        });
    }
}

pub(in crate::pipeline) fn arp_reply<F: Frame>(
    snap: &Snapshot,
    interface: u16,
    l3: usize,
    frame: &mut F,
    heard: &mut ReportRing<Heard>,
) -> Verdict {
    let Ok(mut arp) = ArpPacket::new_checked(&mut frame.bytes_mut()[l3..]) else {
        return Verdict::Drop(DropReason::Truncated);
    };
    let (peer_hw, peer_ip, target) = (arp.sender_hw(), arp.sender_ip(), arp.target_ip());
    heard_from(heard, interface, IpAddr::V4(peer_ip), peer_hw);
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
    heard: &mut ReportRing<Heard>,
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
    let router = if router { icmpv6::NDP_FLAG_ROUTER } else { 0 };
    na.set_flags(icmpv6::NDP_FLAG_SOLICITED | icmpv6::NDP_FLAG_OVERRIDE | router);
    // The solicitation's source link-layer option becomes our target link-layer option: same
    // size, so the advertisement fits in place.
    let opts = na.options();
    if opts.len() >= icmpv6::NDP_LLADDR_OPTION_LEN
        && opts[0] == icmpv6::NDP_OPT_SOURCE_LLADDR
        && opts[1] == 1
    {
        let mut peer_mac = [0; 6];
        peer_mac.copy_from_slice(&opts[2..8]);
        heard_from(
            heard,
            interface,
            IpAddr::V6(peer),
            EthernetAddress(peer_mac),
        );
        na.set_lladdr_option(icmpv6::NDP_OPT_TARGET_LLADDR, mac);
    }
    let mut msg = Icmpv6Packet::new_unchecked(&mut *icmp);
    msg.set_msg_type(icmpv6_type::NEIGHBOR_ADVERT);
    msg.set_code(0);
    let mut ip = Ipv6Packet::new_unchecked(&mut bytes[l3.at..l3.end]);
    ip.set_hop_limit(emit::NDP_HOP_LIMIT);
    ip.set_src_addr(&target);
    ip.set_dst_addr(&peer);
    nat::refill_icmpv6_checksum(&mut bytes[l4..l3.end], &target, &peer);
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
            let mut header = Ipv4Packet::new_unchecked(&mut ip[..icmp_at]);
            header.set_ttl(ECHO_REPLY_TTL);
            header.set_src_addr(dst);
            header.set_dst_addr(src);
            header.fill_checksum();
            Icmpv4Packet::new_unchecked(&mut ip[icmp_at..]).set_msg_type(icmpv4_type::ECHO_REPLY);
            nat::refill_icmpv4_checksum(&mut ip[icmp_at..]);
        }
        (IpAddr::V6(src), IpAddr::V6(dst)) => {
            let mut header = Ipv6Packet::new_unchecked(&mut ip[..]);
            header.set_hop_limit(ECHO_REPLY_TTL);
            header.set_src_addr(&dst);
            header.set_dst_addr(&src);
            Icmpv6Packet::new_unchecked(&mut ip[icmp_at..]).set_msg_type(icmpv6_type::ECHO_REPLY);
            nat::refill_icmpv6_checksum(&mut ip[icmp_at..], &dst, &src);
        }
        _ => return Verdict::Drop(DropReason::IcmpUnhandled),
    }
    let mac = answer_mac(snap, interface, l3.dst);
    reply_l2(snap, frame, interface, mac)
}
