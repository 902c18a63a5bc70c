//! The common case: established client <-> gateway traffic, translated (address and TTL in one
//! checksum update) and given its new Ethernet header.

use crate::pipeline::parse::Flow;
use crate::pipeline::State;
use crate::pipeline::Verdict;
use std::net::IpAddr;

use crate::counters::DropReason;
use crate::frame::Frame;
use crate::model::{NextHop, Role, Snapshot};
use crate::nat::{self, Side};
use crate::wire::ethernet::{emit_header, ethertype, Vlan};

/// Whether a flow's packet may be forwarded: its TTL or hop limit does not reach zero here.
#[inline(always)]
pub(super) fn ttl_allows<F: Frame>(frame: &F, f: &Flow) -> bool {
    frame
        .bytes()
        .get(f.at..f.end)
        .is_some_and(|ip| nat::ttl_allows_forwarding(ip, f.v6))
}

/// Writes `addr` as the flow's `side` address and decrements the TTL, in one checksum update;
/// returns the IP packet's length.
#[inline(always)]
pub(super) fn rewrite_flow<F: Frame>(
    frame: &mut F,
    f: &Flow,
    side: Side,
    addr: IpAddr,
) -> Result<u64, DropReason> {
    let Some(ip) = frame.bytes_mut().get_mut(f.at..f.end) else {
        return Err(DropReason::Truncated);
    };
    let forwarded = match addr {
        IpAddr::V4(a) => nat::forward_v4(ip, side, a, f.l4_csum),
        IpAddr::V6(a) => nat::forward_v6(ip, side, &a, f.l4_csum),
    };
    if forwarded {
        Ok((f.end - f.at) as u64)
    } else {
        Err(DropReason::TtlExpired)
    }
}

/// Next hop for traffic to a client: it must leave through a client-facing interface.
#[inline(always)]
pub(super) fn client_side_hop(snap: &Snapshot, dst: IpAddr) -> Result<NextHop, DropReason> {
    match snap.next_hop(dst) {
        Ok(h) if snap.interface_view(h.interface).role == Role::Client => Ok(h),
        Ok(_) | Err(false) => Err(DropReason::NoRoute),
        Err(true) => Err(DropReason::NoNeighbor),
    }
}

/// Replaces the Ethernet header (and VLAN tags) for the egress interface. `v6` is the family of
/// the IP packet at `l3_at` (it picks the EtherType).
#[inline]
pub(super) fn emit_l2<F: Frame>(
    snap: &Snapshot,
    frame: &mut F,
    l3_at: usize,
    hop: NextHop,
    v6: bool,
) -> Verdict {
    let itf = snap.interface_view(hop.interface);
    let want = itf.vlan.header_len();
    if want > l3_at {
        if !frame.push_front(want - l3_at) {
            return Verdict::Drop(DropReason::NoHeadroom);
        }
    } else if want < l3_at && !frame.pull_front(l3_at - want) {
        return Verdict::Drop(DropReason::Truncated);
    }
    let ethertype = if v6 { ethertype::IPV6 } else { ethertype::IPV4 };
    // Forwarded frames come from a VIP or go to clients through the gateways' next hop: the
    // virtual MAC of an HA master, so switches keep it on the master's port.
    let src = itf.forward_mac(v6);
    let bytes = frame.bytes_mut();
    if let (Vlan::Untagged, Some(hdr)) = (itf.vlan, bytes.first_chunk_mut::<14>()) {
        // The common case, written straight (what `emit_header` writes for no tags).
        hdr[..6].copy_from_slice(&hop.mac.0);
        hdr[6..12].copy_from_slice(&src.0);
        hdr[12..].copy_from_slice(&ethertype.to_be_bytes());
    } else if emit_header(bytes, hop.mac, src, itf.vlan, ethertype).is_err() {
        return Verdict::Drop(DropReason::Truncated);
    }
    Verdict::Tx { port: itf.port }
}

impl State {
    #[inline]
    pub(super) fn forward<F: Frame>(
        &mut self,
        snap: &Snapshot,
        now: u32,
        f: &Flow,
        frame: &mut F,
    ) -> Verdict {
        let svc = &snap.services[usize::from(f.service)];
        // Checked before the table is touched: an expiring packet neither creates nor refreshes
        // an entry. The TTL itself changes with the address, below, in one checksum update.
        if !ttl_allows(frame, f) {
            return Verdict::Drop(DropReason::TtlExpired);
        }
        let (gateway, new_addr, side, hop) = if f.inbound {
            let gateway = match self.client_gateway(snap, now, f) {
                Ok(g) => g,
                Err(r) => return Verdict::Drop(r),
            };
            let fam = svc.family(f.v6);
            let Some(&Some((gw_addr, hop))) = fam.gateways.get(usize::from(gateway)) else {
                return Verdict::Drop(DropReason::NoGateway);
            };
            let Some(hop) = hop else {
                return self.neighbor_miss(gw_addr);
            };
            (gateway, gw_addr, Side::Dst, hop)
        } else {
            self.gateway_seen(snap, now, f, f.gateway);
            let Some(vip) = svc.vip(f.v6) else {
                return Verdict::Drop(DropReason::NoService);
            };
            let client = f.client();
            let hop = match client_side_hop(snap, client) {
                Ok(h) => h,
                Err(DropReason::NoNeighbor) => return self.neighbor_miss(client),
                Err(r) => return Verdict::Drop(r),
            };
            (f.gateway, vip, Side::Src, hop)
        };
        let ip_len = match rewrite_flow(frame, f, side, new_addr) {
            Ok(n) => n,
            Err(r) => return Verdict::Drop(r),
        };
        let c = &mut self.counters.gateways[usize::from(f.service)][usize::from(gateway)];
        if side == Side::Dst {
            c.to_gateway_packets += 1;
            c.to_gateway_bytes += ip_len;
        } else {
            c.from_gateway_packets += 1;
            c.from_gateway_bytes += ip_len;
        }
        emit_l2(snap, frame, f.at, hop, f.v6)
    }
}
