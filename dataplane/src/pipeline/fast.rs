//! The common case: established client <-> gateway traffic, translated (address and TTL in one
//! checksum update) and given its new Ethernet header.

use std::net::IpAddr;

use crate::pipeline::flow::{apply_touch, Touch};
use crate::pipeline::parse::{Flow, Proof};
use crate::pipeline::{State, Verdict};
use crate::schedule::GatewayState;

use crate::counters::DropReason;
use crate::frame::Frame;
use crate::hold;
use crate::model::{NextHop, Role, Snapshot, Unreachable};
use crate::nat::{self, Side};
use crate::wire::ethernet::{
    self, emit_header, ethertype, EthernetAddress, Vlan, ETHERNET_HEADER_LEN,
};

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
    if forward_ip(ip, side, addr, f.l4_csum) {
        Ok((f.end - f.at) as u64)
    } else {
        Err(DropReason::TtlExpired)
    }
}

/// Writes `addr` as the packet's `side` address and decrements the TTL, in one checksum
/// update; false, changing nothing, when the TTL does not allow forwarding.
#[inline(always)]
fn forward_ip(ip: &mut [u8], side: Side, addr: IpAddr, l4: nat::L4Checksum) -> bool {
    match addr {
        IpAddr::V4(a) => nat::forward_v4(ip, side, a, l4),
        IpAddr::V6(a) => nat::forward_v6(ip, side, &a, l4),
    }
}

/// The EtherType of an IP packet of family `v6`.
#[inline(always)]
fn ethertype_of(v6: bool) -> u16 {
    if v6 {
        ethertype::IPV6
    } else {
        ethertype::IPV4
    }
}

/// Writes an untagged Ethernet header for an IP packet of family `v6`.
#[inline(always)]
fn untagged_header(
    hdr: &mut [u8; ETHERNET_HEADER_LEN],
    dst: EthernetAddress,
    src: EthernetAddress,
    v6: bool,
) {
    hdr[ethernet::field::DST].copy_from_slice(&dst.0);
    hdr[ethernet::field::SRC].copy_from_slice(&src.0);
    hdr[ethernet::field::TYPE0..].copy_from_slice(&ethertype_of(v6).to_be_bytes());
}

/// Next hop for traffic to a client: it must leave through a client-facing interface.
#[inline(always)]
pub(super) fn client_side_hop(snap: &Snapshot, dst: IpAddr) -> Result<NextHop, DropReason> {
    match snap.next_hop(dst) {
        Ok(h) if snap.interface_view(h.interface).role == Role::Client => Ok(h),
        Ok(_) | Err(Unreachable::NoRoute) => Err(DropReason::NoRoute),
        Err(Unreachable::NoNeighbor) => Err(DropReason::NoNeighbor),
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
    // Forwarded frames come from a VIP or go to clients through the gateways' next hop: the
    // virtual MAC of an HA master, so switches keep it on the master's port.
    let src = itf.forward_mac(v6);
    let bytes = frame.bytes_mut();
    if let (Vlan::Untagged, Some(hdr)) = (itf.vlan, bytes.first_chunk_mut::<ETHERNET_HEADER_LEN>())
    {
        // The common case, written straight (what `emit_header` writes for no tags).
        untagged_header(hdr, hop.mac, src, v6);
    } else if emit_header(bytes, hop.mac, src, itf.vlan, ethertype_of(v6)).is_err() {
        return Verdict::Drop(DropReason::Truncated);
    }
    Verdict::Tx { port: itf.port }
}

/// Where a packet leaves: a resolved next hop, or one whose MAC is awaited (`awaiting`: the
/// neighbor; `hop` then carries [`hold::UNRESOLVED_MAC`]).
#[derive(Clone, Copy, Debug)]
pub(super) struct Egress {
    pub(super) hop: NextHop,
    pub(super) awaiting: Option<IpAddr>,
}

impl Egress {
    #[inline(always)]
    pub(super) fn ready(hop: NextHop) -> Egress {
        Egress {
            hop,
            awaiting: None,
        }
    }
}

/// [`emit_l2`] for an [`Egress`]: a frame whose neighbor is awaited is finished all the same
/// (only its destination MAC is left to fill in) and waits, [`Verdict::AwaitNeighbor`].
#[inline]
pub(super) fn emit_egress<F: Frame>(
    snap: &Snapshot,
    frame: &mut F,
    l3_at: usize,
    egress: Egress,
    v6: bool,
) -> Verdict {
    match (emit_l2(snap, frame, l3_at, egress.hop, v6), egress.awaiting) {
        (Verdict::Tx { port }, Some(next_hop)) => Verdict::AwaitNeighbor { port, next_hop },
        (v, _) => v,
    }
}

impl State {
    /// The egress of a packet to `dst` whose next hop is `hop` (`None`: it has no MAC yet);
    /// for the latter, the neighbor is reported to the control plane and awaited.
    #[inline]
    pub(super) fn egress_to(
        &mut self,
        snap: &Snapshot,
        dst: IpAddr,
        hop: Option<NextHop>,
    ) -> Result<Egress, Verdict> {
        match hop {
            Some(h) => Ok(Egress::ready(h)),
            None => self.await_neighbor(snap, dst, None),
        }
    }

    /// The egress towards a client: through a client-facing interface.
    #[inline]
    pub(super) fn client_egress(
        &mut self,
        snap: &Snapshot,
        client: IpAddr,
    ) -> Result<Egress, Verdict> {
        match client_side_hop(snap, client) {
            Ok(h) => Ok(Egress::ready(h)),
            Err(DropReason::NoNeighbor) => self.await_neighbor(snap, client, Some(Role::Client)),
            Err(r) => Err(Verdict::Drop(r)),
        }
    }

    /// No MAC for the next hop towards `dst`: remember `dst` for the control plane to resolve,
    /// and leave by the interface its route names (which must have `role`, when given), with
    /// the destination MAC to be filled in.
    #[cold]
    fn await_neighbor(
        &mut self,
        snap: &Snapshot,
        dst: IpAddr,
        role: Option<Role>,
    ) -> Result<Egress, Verdict> {
        let Some((interface, neighbor)) = snap.awaited_neighbor(dst) else {
            return Err(Verdict::Drop(DropReason::NoNeighbor));
        };
        if role.is_some_and(|r| snap.interface_view(interface).role != r) {
            return Err(Verdict::Drop(DropReason::NoRoute));
        }
        self.misses.push(dst);
        Ok(Egress {
            hop: NextHop {
                interface,
                mac: hold::UNRESOLVED_MAC,
            },
            awaiting: Some(neighbor),
        })
    }

    /// A NAT-mode flow's packet (pass 2): through the fast path when its client is
    /// established, else [`State::translate`]. `hint`: the slab slot pass 1 found the entry
    /// probably in (or `affinity::NO_HINT`).
    #[inline(always)]
    pub(super) fn forward<F: Frame>(
        &mut self,
        snap: &Snapshot,
        now: u32,
        f: &Flow,
        hint: u32,
        frame: &mut F,
    ) -> Verdict {
        if self.fast {
            if let Some(v) = self.forward_established(snap, now, f, hint, frame) {
                return v;
            }
        }
        self.translate(snap, now, f, frame)
    }

    /// The fast path: a client with a live entry whose gateway is not down, both next hops
    /// resolved. Key → entry → address and TTL in one checksum update → Ethernet header.
    /// `None`, having changed nothing, for anything else ([`State::translate`] takes it), so
    /// that what it does is exactly what `translate` would have done.
    #[inline(always)]
    fn forward_established<F: Frame>(
        &mut self,
        snap: &Snapshot,
        now: u32,
        f: &Flow,
        hint: u32,
        frame: &mut F,
    ) -> Option<Verdict> {
        let svc = snap.services.get(usize::from(f.service))?;
        let spec = &svc.spec;
        let fam = svc.family(f.v6);
        let mut entry = self.shard.live_hinted(&f.key, f.hash, now, hint)?;
        let value = entry.value();
        // A packet that may establish its client (or set the proof it must echo) takes the
        // general path; an unconfirmed client's ESP and the like need no more than a refresh.
        if !value.confirmed && f.proof != Proof::None {
            return None;
        }
        let (gateway, new_addr, side, hop) = if f.inbound {
            let gateway = value.gateway;
            let up = fam
                .candidates
                .get(usize::from(gateway))
                .is_some_and(|c| c.state != GatewayState::Down);
            let &Some((gw_addr, Some(hop))) = fam.gateways.get(usize::from(gateway))? else {
                return None;
            };
            if !up {
                return None;
            }
            (gateway, gw_addr, Side::Dst, hop)
        } else {
            if value.gateway != f.gateway {
                return None;
            }
            let vip = svc.vip(f.v6)?;
            let hop = client_side_hop(snap, f.client()).ok()?;
            (f.gateway, vip, Side::Src, hop)
        };
        let itf = snap.interface_view(hop.interface);
        let bytes = frame.bytes_mut();
        if f.at != ETH_LEN || itf.vlan != Vlan::Untagged || f.end > bytes.len() {
            return None;
        }
        let (eth, rest) = bytes.split_first_chunk_mut::<ETH_LEN>()?;
        let ip = &mut rest[..f.end - ETH_LEN];
        // The TTL, checked before the entry is touched (an expiring packet neither creates
        // nor refreshes one); it changes with the address below, in one checksum update.
        if !nat::ttl_allows_forwarding(ip, f.v6) {
            return None;
        }
        // Committed: the entry is refreshed by the rules every other packet of the client
        // follows. (A literal rule per call, so that each inlines to just its own arm; the
        // packet carries no proof, or the entry is established, so no proof is looked at.)
        let (changes, clients, key) = (&mut self.changes, &mut self.counters.clients, &f.key);
        if f.inbound {
            let refresh = Touch::Refresh {
                confirmed_s: spec.persistence_timeout_s,
                unconfirmed_s: spec.unconfirmed_timeout_s,
                echo: Proof::None,
            };
            apply_touch(&mut entry, changes, clients, key, value, now, refresh);
        } else {
            let answer = Touch::Answer {
                gateway,
                confirmed_s: spec.persistence_timeout_s,
                unconfirmed_s: spec.unconfirmed_timeout_s,
                challenge: Proof::None,
            };
            apply_touch(&mut entry, changes, clients, key, value, now, answer);
        }
        if !forward_ip(ip, side, new_addr, f.l4_csum) {
            return Some(Verdict::Drop(DropReason::TtlExpired));
        }
        let ip_len = ip.len() as u64;
        let c = &mut self.counters.gateways[usize::from(f.service)][usize::from(gateway)];
        c.translated(f.inbound, ip_len);
        // The source MAC as `emit_l2` picks it (an HA master's virtual MAC).
        untagged_header(eth, hop.mac, itf.forward_mac(f.v6), f.v6);
        Some(Verdict::Tx { port: itf.port })
    }
}

/// Length of an untagged Ethernet header: the fast path's frames arrive and leave untagged.
const ETH_LEN: usize = 14;
