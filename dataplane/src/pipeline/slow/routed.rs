//! Redirected clients' traffic to and from their gateways' own addresses: routed, not
//! translated.

use crate::pipeline::fast::emit_egress;
use crate::pipeline::fast::rewrite_flow;
use crate::pipeline::fast::ttl_allows;
use crate::pipeline::flow::{Touch, Touched};
use crate::pipeline::parse::Flow;
use crate::pipeline::State;
use crate::pipeline::Verdict;

use crate::affinity::{self};
use crate::counters::DropReason;
use crate::frame::Frame;
use crate::model::Snapshot;
use crate::nat::Side;

impl State {
    /// Routes a redirected client's packet to its gateway's own address, or the gateway's
    /// packet back to it: TTL decremented, addresses untouched. A gateway's packet whose
    /// client has no direct entry for it is a NAT-mode client's, and is translated.
    #[inline(never)]
    pub(in crate::pipeline) fn route<F: Frame>(
        &mut self,
        snap: &Snapshot,
        now: u32,
        f: &Flow,
        frame: &mut F,
    ) -> Verdict {
        let svc = &snap.services[usize::from(f.service)];
        if !ttl_allows(frame, f) {
            return Verdict::Drop(DropReason::TtlExpired);
        }
        let Some(&Some((gateway_addr, gateway_hop))) =
            svc.family(f.v6).gateways.get(usize::from(f.gateway))
        else {
            return Verdict::Drop(DropReason::NoGateway);
        };
        let (side, egress) = if f.inbound {
            if let Err(r) = self.remember_direct(svc, now, (f.key, f.hash), f.gateway, f.proof) {
                return Verdict::Drop(r);
            }
            match self.egress_to(snap, gateway_addr, gateway_hop) {
                Ok(e) => (Side::Dst, e),
                Err(v) => return v,
            }
        } else {
            let answer = Touch::Answer {
                gateway: f.gateway,
                confirmed_s: svc.spec.persistence_timeout_s,
                unconfirmed_s: svc.spec.unconfirmed_timeout_s,
                challenge: f.proof,
            };
            match self.touch(&f.key, f.hash, now, answer) {
                Touched::Live(_) | Touched::OverQuota(_) => {}
                // Not a redirected client of this gateway: a NAT-mode client's traffic.
                Touched::Absent | Touched::Mismatch => {
                    let key = f.key.nat();
                    let nat = Flow {
                        key,
                        hash: self.shard.hash(&key),
                        direct: false,
                        ..*f
                    };
                    return self.forward(snap, now, &nat, affinity::NO_HINT, frame);
                }
            }
            match self.client_egress(snap, f.client()) {
                Ok(e) => (Side::Src, e),
                Err(v) => return v,
            }
        };
        // The address "changes" to itself: one TTL update, the checksums stay right.
        let ip_len = match rewrite_flow(frame, f, side, gateway_addr) {
            Ok(n) => n,
            Err(r) => return Verdict::Drop(r),
        };
        let c = &mut self.counters.gateways[usize::from(f.service)][usize::from(f.gateway)];
        c.routed(f.inbound, ip_len);
        emit_egress(snap, frame, f.at, egress, f.v6)
    }
}
