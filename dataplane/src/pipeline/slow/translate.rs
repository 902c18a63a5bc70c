//! NAT-mode translation of everything the fast path declines: new clients (scheduled),
//! clients whose gateway is down (moved), gateway traffic for clients this shard has not seen
//! (learned), next hops without a MAC, and the drops.

use crate::counters::DropReason;
use crate::frame::Frame;
use crate::model::Snapshot;
use crate::nat::Side;
use crate::pipeline::fast::{emit_egress, rewrite_flow, ttl_allows};
use crate::pipeline::parse::Flow;
use crate::pipeline::{State, Verdict};

impl State {
    /// Translates any NAT-mode flow's packet: schedules new clients, moves clients off down
    /// gateways, learns clients from their gateways' traffic, awaits unresolved neighbors and
    /// drops under a named reason.
    #[inline(never)]
    pub(in crate::pipeline) fn translate<F: Frame>(
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
        let (gateway, new_addr, side, egress) = if f.inbound {
            let gateway = match self.client_gateway(snap, now, f) {
                Ok(g) => g,
                Err(r) => return Verdict::Drop(r),
            };
            let fam = svc.family(f.v6);
            let Some(&Some((gw_addr, hop))) = fam.gateways.get(usize::from(gateway)) else {
                return Verdict::Drop(DropReason::NoGateway);
            };
            let egress = match self.egress_to(snap, gw_addr, hop) {
                Ok(e) => e,
                Err(v) => return v,
            };
            (gateway, gw_addr, Side::Dst, egress)
        } else {
            self.gateway_seen(snap, now, f, f.gateway);
            let Some(vip) = svc.vip(f.v6) else {
                return Verdict::Drop(DropReason::NoService);
            };
            let egress = match self.client_egress(snap, f.client()) {
                Ok(e) => e,
                Err(v) => return v,
            };
            (f.gateway, vip, Side::Src, egress)
        };
        let ip_len = match rewrite_flow(frame, f, side, new_addr) {
            Ok(n) => n,
            Err(r) => return Verdict::Drop(r),
        };
        let c = &mut self.counters.gateways[usize::from(f.service)][usize::from(gateway)];
        c.translated(side == Side::Dst, ip_len);
        emit_egress(snap, frame, f.at, egress, f.v6)
    }
}
