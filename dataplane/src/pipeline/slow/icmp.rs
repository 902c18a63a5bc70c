//! ICMP that is not answered here: errors about translated flows (outer and quoted headers
//! translated) and ICMP routed between redirected clients and their gateways.

use crate::pipeline::fast::emit_egress;
use crate::pipeline::flow::{Touch, Touched};
use crate::pipeline::ipv6_at;
use crate::pipeline::parse::IcmpError;
use crate::pipeline::parse::RoutedIcmp;
use crate::pipeline::State;
use crate::pipeline::Verdict;
use std::net::IpAddr;

use crate::counters::DropReason;
use crate::frame::Frame;
use crate::model::Snapshot;
use crate::nat::{self, L4Checksum, Side};

/// The IP packet's length from its header (IPv4 total length, IPv6 40 + payload length).
pub(in crate::pipeline) fn ip_total_len(ip: &[u8], v6: bool) -> u64 {
    let field = |at: usize| {
        ip.get(at..at + 2)
            .map_or(0, |b| u16::from_be_bytes([b[0], b[1]]))
    };
    if v6 {
        40 + u64::from(field(4))
    } else {
        u64::from(field(2))
    }
}

pub(in crate::pipeline) fn decrement_ttl(ip: &mut [u8], v6: bool) -> bool {
    if v6 {
        nat::decrement_hop_limit_v6(ip)
    } else {
        nat::decrement_ttl_v4(ip)
    }
}

pub(in crate::pipeline) fn rewrite(ip: &mut [u8], side: Side, new: IpAddr, l4: L4Checksum) {
    match new {
        IpAddr::V4(a) => nat::rewrite_v4(ip, side, a, l4),
        IpAddr::V6(a) => nat::rewrite_v6(ip, side, &a, l4),
    }
}

impl State {
    /// Routes ICMP between a client and a gateway's own address: TTL decremented, nothing
    /// else changed. From a gateway only to a client whose direct entry names it.
    #[inline(never)]
    pub(in crate::pipeline) fn route_icmp<F: Frame>(
        &mut self,
        snap: &Snapshot,
        now: u32,
        r: RoutedIcmp,
        frame: &mut F,
    ) -> Verdict {
        let fam = snap.services[usize::from(r.service)].family(r.v6);
        let Some(&Some((gateway_addr, gateway_hop))) = fam.gateways.get(usize::from(r.gateway))
        else {
            return Verdict::Drop(DropReason::NoGateway);
        };
        let egress = if r.inbound {
            self.egress_to(snap, gateway_addr, gateway_hop)
        } else {
            if !self.names_gateway(now, &r.key, r.gateway) {
                return Verdict::Drop(DropReason::NoService);
            }
            self.client_egress(snap, r.key.client_ip())
        };
        let egress = match egress {
            Ok(e) => e,
            Err(v) => return v,
        };
        let Some(ip) = frame.bytes_mut().get_mut(r.at..) else {
            return Verdict::Drop(DropReason::Truncated);
        };
        if !decrement_ttl(ip, r.v6) {
            return Verdict::Drop(DropReason::TtlExpired);
        }
        let len = ip_total_len(ip, r.v6);
        let c = &mut self.counters.gateways[usize::from(r.service)][usize::from(r.gateway)];
        c.routed(r.inbound, len);
        emit_egress(snap, frame, r.at, egress, r.v6)
    }

    pub(in crate::pipeline) fn forward_icmp_error<F: Frame>(
        &mut self,
        snap: &Snapshot,
        now: u32,
        e: IcmpError,
        frame: &mut F,
    ) -> Verdict {
        let svc = &snap.services[usize::from(e.service)];
        let v6 = e.outer.v6;
        let Some(vip) = svc.vip(v6) else {
            return Verdict::Drop(DropReason::IcmpNoFlow);
        };
        let gateway = if e.inbound {
            match self.touch(&e.key, e.hash, now, Touch::Peek) {
                Touched::Live(v) | Touched::OverQuota(v) => v.gateway,
                Touched::Absent | Touched::Mismatch => {
                    return Verdict::Drop(DropReason::IcmpNoFlow)
                }
            }
        } else {
            e.gateway
        };
        if !e.inbound && svc.spec.route_to_gateways {
            // An error about a redirected client's packet to the gateway's own address: the
            // client knows the gateway by that address, so it goes back untranslated.
            let routed = RoutedIcmp {
                key: e.key.direct(),
                service: e.service,
                gateway,
                at: e.outer.at,
                inbound: false,
                v6,
            };
            if self.names_gateway(now, &routed.key, gateway) {
                return self.route_icmp(snap, now, routed, frame);
            }
        }
        let Some(&Some((gw_addr, gw_hop))) = svc.family(v6).gateways.get(usize::from(gateway))
        else {
            return Verdict::Drop(DropReason::IcmpNoFlow);
        };
        let egress = if e.inbound {
            self.egress_to(snap, gw_addr, gw_hop)
        } else {
            self.client_egress(snap, e.outer.dst)
        };
        let egress = match egress {
            Ok(e) => e,
            Err(v) => return v,
        };
        let ip = &mut frame.bytes_mut()[e.outer.at..e.outer.end];
        if !decrement_ttl(ip, v6) {
            return Verdict::Drop(DropReason::TtlExpired);
        }
        let inner_at = e.inner_at - e.outer.at;
        let icmp_at = e.icmp_at - e.outer.at;
        // Inbound errors go on to the gateway; outbound ones appear to come from the VIP. The
        // quoted packet is rewritten the way the packet it quotes was.
        let (outer_side, inner_side, new) = if e.inbound {
            (Side::Dst, Side::Src, gw_addr)
        } else {
            (Side::Src, Side::Dst, vip)
        };
        rewrite(ip, outer_side, new, L4Checksum::None);
        rewrite(&mut ip[inner_at..], inner_side, new, e.inner_csum);
        match (outer_side, new) {
            (Side::Dst, IpAddr::V6(gw)) => {
                let src = ipv6_at(ip, 8);
                nat::refill_icmpv6_checksum(&mut ip[icmp_at..], &src, &gw);
            }
            (Side::Src, IpAddr::V6(vip)) => {
                let dst = ipv6_at(ip, 24);
                nat::refill_icmpv6_checksum(&mut ip[icmp_at..], &vip, &dst);
            }
            _ => nat::refill_icmpv4_checksum(&mut ip[icmp_at..]),
        }
        self.counters.icmp_errors_translated += 1;
        emit_egress(snap, frame, e.outer.at, egress, v6)
    }
}
