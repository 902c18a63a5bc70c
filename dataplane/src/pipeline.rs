//! One burst in, verdicts out: the code every worker (and `vpnlbd replay`) runs.
//!
//! The shape follows VPP and l3fwd: a first pass parses every frame of the burst into a small
//! `Plan` (what the packet is, where its affinity entry lives) and prefetches the affinity
//! buckets, and a few packets later, once a bucket has arrived, the entry it points at; a second
//! pass decides and rewrites each packet in place. By the time the second pass touches the
//! table, both of a lookup's cache lines are in cache, which is what keeps a large table close
//! to a small one (what remains at millions of clients is mostly TLB misses).
//!
//! The per-packet path is written for the compiler: the IPv4 and IPv6 arms of the planner are
//! inlined separately (addresses stay in registers as integers), plans are written in place in
//! the burst's array, and a forwarded packet's TTL and address change in one checksum update.
//!
//! Decisions, in order:
//! - ARP requests and neighbor solicitations for our addresses and VIPs, and echo requests to
//!   them, are answered in place.
//! - Client → VIP: classified, the client's affinity entry found or created (scheduling a gateway),
//!   the destination rewritten to the gateway.
//! - Gateway → client: the source rewritten to the VIP; the client's entry confirmed (or learned).
//! - ICMP errors quoting a translated packet: outer and quoted headers translated, sent on.
//! - Anything else addressed to us goes to the control plane; everything else is dropped under a
//!   named reason.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use crate::affinity::{
    self, AffinityKey, AffinityShard, AffinityValue, InsertOutcome, Lookup, Removed,
};
use crate::changes::{refresh_is_news, AffinityChange, ChangeLog, ChangeOp};
use crate::classify::{self, Detail, L4View, SniStats};
use crate::counters::{DropReason, GatewayCounters, ServiceCounters, WorkerCounters};
use crate::frame::Frame;
use crate::model::{LocalKind, NextHop, Role, ServiceMode, ServiceView, Snapshot};
use crate::nat::{self, L4Checksum, Side};
use crate::redirect::{self, Choice, Fallback, Inspection, SaInitRequest};
use crate::schedule::{client_hash, GatewayState, Scheduler, SchedulerKind};
use crate::wire::arp::{ArpPacket, ARP_REPLY, ARP_REQUEST};
use crate::wire::ethernet::{emit_header, ethertype, EthernetAddress, EthernetFrame, Vlan};
use crate::wire::icmp::{self, icmpv4_type};
use crate::wire::icmpv6::{self, icmpv6_type, NdpNeighbor};
use crate::wire::ipv4::Ipv4Packet;
use crate::wire::ipv6::Ipv6Packet;
use crate::wire::tcp::TcpPacket;
use crate::wire::udp::UdpPacket;
use crate::wire::{self, ip_proto};

/// Largest burst the pipeline handles at once (as DPDK's usual RX burst).
pub const MAX_BURST: usize = 32;

/// How many packets behind itself pass 1 prefetches affinity entries (their buckets, prefetched
/// that many packets earlier, have arrived by then).
const ENTRY_AHEAD: usize = 4;

/// Affinity slots examined per burst by the incremental expiry sweep.
const SWEEP_SLOTS_PER_BURST: usize = 64;

/// What happens to a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Transmit the (rewritten) frame on this port.
    Tx {
        port: u16,
    },
    /// For the appliance itself and not answered here: hand to the control plane.
    ToControl,
    Drop(DropReason),
}

/// A packet's addresses and layout, family-independent.
#[derive(Clone, Copy, Debug)]
struct L3 {
    v6: bool,
    /// Offset of the IP header in the frame.
    at: usize,
    src: IpAddr,
    dst: IpAddr,
    /// Transport protocol (after IPv6 extension headers).
    protocol: u8,
    /// Offset of the transport header in the frame; `None` for a non-first fragment.
    l4: Option<usize>,
    /// Any fragment, first or not (the packet is not whole).
    fragment: bool,
    /// End of the IP packet in the frame (excludes Ethernet padding).
    end: usize,
}

/// A client packet to translate: all pass 2 needs, kept small (the addresses it needs again
/// are in the key or re-read from the frame).
#[derive(Clone, Copy, Debug)]
struct Flow {
    /// `key.hash()`.
    hash: u64,
    key: AffinityKey,
    /// Offset of the IP header in the frame.
    at: usize,
    /// End of the IP packet in the frame.
    end: usize,
    /// L4 checksum location relative to the IP header.
    l4_csum: L4Checksum,
    service: u16,
    /// Outbound: the gateway the packet came from (unused inbound).
    gateway: u16,
    /// Client → VIP (else gateway → client); with `direct`, client → gateway's own address.
    inbound: bool,
    /// A redirected client's traffic to or from its gateway's own address: routed, not
    /// translated. `key` is then the client's direct key. Outbound it is only a candidate:
    /// pass 2 routes it if the client's direct entry names this gateway, else translates it.
    direct: bool,
    v6: bool,
}

impl Flow {
    /// The client's address (the key holds it; IPv4 as `::ffff:a.b.c.d`).
    #[inline]
    fn client(&self) -> IpAddr {
        if self.v6 {
            IpAddr::V6(Ipv6Addr::from(self.key.client))
        } else {
            let c = &self.key.client;
            IpAddr::V4(Ipv4Addr::new(c[12], c[13], c[14], c[15]))
        }
    }
}

/// An ICMP error about a translated flow: where the quoted packet is and how to translate it.
#[derive(Clone, Copy, Debug)]
struct IcmpError {
    outer: L3,
    /// Offset of the ICMP header in the frame.
    icmp_at: usize,
    /// Offset of the quoted IP header in the frame.
    inner_at: usize,
    /// Quoted transport checksum, relative to the quoted IP header.
    inner_csum: L4Checksum,
    inbound: bool,
    service: u16,
    /// Outbound only: the gateway the quoted packet was sent to.
    gateway: u16,
    key: AffinityKey,
    hash: u64,
}

#[derive(Clone, Copy, Debug)]
enum Plan {
    Drop(DropReason),
    ToControl,
    ArpReply {
        interface: u16,
        l3: usize,
    },
    NdAdvert {
        interface: u16,
        l3: L3,
        router: bool,
    },
    EchoReply {
        interface: u16,
        l3: L3,
    },
    Flow(Flow),
    IcmpError(IcmpError),
    Redirect(Redirect),
    RoutedIcmp(RoutedIcmp),
}

/// ICMP between a client and a gateway's own address, routed untouched (no affinity entry is
/// created or refreshed by it).
#[derive(Clone, Copy, Debug)]
struct RoutedIcmp {
    /// The client's direct key: a gateway's ICMP (other than an error, see `IcmpError`) goes
    /// to a client only if this entry names the gateway.
    key: AffinityKey,
    service: u16,
    gateway: u16,
    at: usize,
    /// Client → gateway (else gateway → client).
    inbound: bool,
    v6: bool,
}

/// An IKE_SA_INIT request to a redirecting service, to answer with a REDIRECT.
#[derive(Clone, Copy, Debug)]
struct Redirect {
    /// The request as a NAT-mode flow: what happens to it when no gateway can be named.
    flow: Flow,
    /// Where it arrived (the answer leaves there).
    interface: u16,
    /// Offset of the UDP header in the frame.
    udp_at: u16,
    request: SaInitRequest,
}

/// Scheduler state of one service on this worker.
struct ServiceState {
    v4: Scheduler,
    v6: Scheduler,
    /// Clients of this shard per gateway (least-connections input).
    active: Vec<u32>,
}

fn scheduler(kind: SchedulerKind, fam: &crate::model::FamilyView, gateways: usize) -> Scheduler {
    match (kind, &fam.maglev) {
        (SchedulerKind::Maglev, Some(t)) => Scheduler::Maglev(Arc::clone(t)),
        (SchedulerKind::RoundRobin, _) => {
            Scheduler::RoundRobin(crate::schedule::round_robin::RoundRobin::new(gateways))
        }
        _ => Scheduler::LeastConn(crate::schedule::least_conn::LeastConn::new(gateways)),
    }
}

/// One worker's pipeline: its snapshot, affinity shard, scheduler state and counters.
pub struct Worker {
    snap: Arc<Snapshot>,
    st: State,
    plans: [Plan; MAX_BURST],
}

/// Everything a worker mutates; kept apart from the snapshot so the hot path can borrow both
/// without reference-count traffic.
struct State {
    shard: AffinityShard,
    services: Vec<ServiceState>,
    counters: WorkerCounters,
    sni: SniStats,
    misses: MissRing,
    /// Affinity changes for an HA peer (disabled without one).
    changes: ChangeLog,
}

/// Destinations whose next hop had no MAC, for the control plane to resolve. Fixed size and
/// overwrite-free: when full, further misses are only counted (the control plane drains it
/// every loop, and one report per destination is enough to start resolution).
struct MissRing {
    addrs: [IpAddr; MISS_RING],
    len: usize,
    lost: u64,
}

/// Neighbor misses a worker remembers between two drains.
const MISS_RING: usize = 16;

impl MissRing {
    fn new() -> Self {
        MissRing {
            addrs: [IpAddr::V4(Ipv4Addr::UNSPECIFIED); MISS_RING],
            len: 0,
            lost: 0,
        }
    }

    fn push(&mut self, a: IpAddr) {
        if self.addrs[..self.len].contains(&a) {
            return;
        }
        match self.addrs.get_mut(self.len) {
            Some(slot) => {
                *slot = a;
                self.len += 1;
            }
            None => self.lost += 1,
        }
    }
}

impl Worker {
    /// Creates a worker; its affinity shard is allocated now, at full capacity.
    pub fn new(snap: Arc<Snapshot>) -> Worker {
        Self::new_advised(snap, &mut |_, _| {})
    }

    /// [`new`](Self::new), handing the affinity shard's memory to `advise(address, bytes)`
    /// before it is first written (see [`AffinityShard::try_new_advised`]).
    pub fn new_advised(snap: Arc<Snapshot>, advise: &mut dyn FnMut(usize, usize)) -> Worker {
        let a = snap.spec.affinity;
        let shard = match AffinityShard::try_new_advised(a.capacity, a.max_unconfirmed, advise) {
            Ok(s) => s,
            Err(_) => std::alloc::handle_alloc_error(std::alloc::Layout::new::<AffinityShard>()),
        };
        let mut w = Worker {
            st: State {
                shard,
                services: Vec::new(),
                counters: WorkerCounters::default(),
                sni: SniStats::new(32),
                misses: MissRing::new(),
                changes: ChangeLog::default(),
            },
            plans: [Plan::ToControl; MAX_BURST],
            snap: Arc::clone(&snap),
        };
        w.adopt(snap);
        w
    }

    /// Switches to a new snapshot (between bursts). Scheduler state is rebuilt; active-client
    /// counts are kept where the service and gateway lists kept their shape, else recounted
    /// from the shard.
    pub fn adopt(&mut self, snap: Arc<Snapshot>) {
        let st = &mut self.st;
        let same_shape = st.services.len() == snap.services.len()
            && st
                .services
                .iter()
                .zip(&snap.services)
                .all(|(s, v)| s.active.len() == v.spec.gateways.len());
        let mut services: Vec<ServiceState> = snap
            .services
            .iter()
            .map(|v| {
                let n = v.spec.gateways.len();
                ServiceState {
                    v4: scheduler(v.spec.scheduler, &v.v4, n),
                    v6: scheduler(v.spec.scheduler, &v.v6, n),
                    active: vec![0; n],
                }
            })
            .collect();
        if same_shape {
            for (new, old) in services.iter_mut().zip(&st.services) {
                new.active.clone_from(&old.active);
            }
        } else {
            for (k, v) in st.shard.iter() {
                if let Some(c) = active_slot(&mut services, &k, v.gateway) {
                    *c += 1;
                }
            }
        }
        st.services = services;
        st.counters
            .services
            .resize(snap.services.len(), ServiceCounters::default());
        st.counters.gateways = snap
            .services
            .iter()
            .enumerate()
            .map(|(i, v)| {
                let mut g = st.counters.gateways.get(i).cloned().unwrap_or_default();
                g.resize(v.spec.gateways.len(), GatewayCounters::default());
                g
            })
            .collect();
        self.snap = snap;
    }

    pub fn snapshot(&self) -> &Arc<Snapshot> {
        &self.snap
    }

    /// Frames this worker has processed (without copying the counters).
    #[inline]
    pub fn rx_packets(&self) -> u64 {
        self.st.counters.rx_packets
    }

    /// A copy of the counters, with the affinity shard's own counters filled in.
    pub fn counters(&self) -> WorkerCounters {
        let mut c = self.st.counters.clone();
        c.affinity = self.st.shard.counters();
        c
    }

    pub fn sni_stats(&self) -> &SniStats {
        &self.st.sni
    }

    pub fn affinity(&self) -> &AffinityShard {
        &self.st.shard
    }

    /// Hands over the destinations that could not be reached for want of a neighbor entry
    /// since the last call (each once), and returns how many more were not remembered.
    pub fn drain_neighbor_misses(&mut self, mut f: impl FnMut(IpAddr)) -> u64 {
        let m = &mut self.st.misses;
        for a in &m.addrs[..m.len] {
            f(*a);
        }
        m.len = 0;
        std::mem::take(&mut m.lost)
    }

    /// Removes the affinity entries of `client` (all entries when `None`), for the operator's
    /// `affinity flush`; the clients are scheduled afresh on their next packet. Returns how many
    /// entries went. Walks the whole shard: a control-plane operation, run between bursts.
    pub fn flush_affinity(&mut self, client: Option<IpAddr>) -> usize {
        let want = client.map(|c| affinity_key(c, 0).client);
        let (services, changes) = (&mut self.st.services, &mut self.st.changes);
        let mut removed = 0;
        self.st.shard.retain(
            |k, _| want.is_some_and(|w| w != k.client),
            |r| {
                forget(services, changes, &r);
                removed += 1;
            },
        );
        removed
    }

    /// Re-keys the affinity entries for a new configuration whose services or gateways moved:
    /// `map(service, gateway)` gives the entry's new ids, or `None` when its service or gateway
    /// is gone (the entry is removed; the client is scheduled afresh). Call right before
    /// adopting the snapshot the ids refer to. Returns (moved, removed).
    pub fn remap_affinity(
        &mut self,
        map: &dyn Fn(u16, u16) -> Option<(u16, u16)>,
    ) -> (usize, usize) {
        // (key, value, new ids) of the entries that must move or go.
        type Change = (AffinityKey, AffinityValue, Option<(u16, u16)>);
        let changes: Vec<Change> = self
            .st
            .shard
            .iter()
            .filter_map(|(k, v)| {
                let to = map(k.service_index(), v.gateway);
                (to != Some((k.service_index(), v.gateway))).then_some((k, v, to))
            })
            .collect();
        let (mut moved, mut removed) = (0, 0);
        for (k, v, to) in changes {
            self.st.shard.remove(&k, k.hash());
            match to {
                Some((service, gateway)) => {
                    let direct = k.service & affinity::DIRECT;
                    let key = AffinityKey {
                        service: service | direct,
                        ..k
                    };
                    let value = AffinityValue { gateway, ..v };
                    // Room is certain: the entry just left it.
                    let _ = self.st.shard.insert(key, key.hash(), value, v.last_seen);
                    moved += 1;
                }
                None => removed += 1,
            }
        }
        // Active counts are rebuilt by `adopt` from the re-keyed shard.
        for s in &mut self.st.services {
            s.active.clear();
        }
        (moved, removed)
    }

    /// Starts recording affinity changes for an HA peer, up to `capacity` between drains.
    pub fn record_changes(&mut self, capacity: usize) {
        self.st.changes = ChangeLog::with_capacity(capacity);
    }

    /// Hands the recorded affinity changes to `f`, oldest first; returns how many were lost
    /// because the log was full.
    pub fn drain_changes(&mut self, f: impl FnMut(AffinityChange)) -> u64 {
        self.st.changes.drain(f)
    }

    /// Applies a change the HA peer's master made to its table (`expires_at` already in this
    /// worker's clock), keeping the active-client counts right. Not recorded as a change of
    /// ours. Returns false when the table had no room for it.
    pub fn apply_synced(&mut self, now: u32, c: &AffinityChange) -> bool {
        let st = &mut self.st;
        let hash = c.key.hash();
        let (gateway, confirmed, expires_at) = match c.op {
            ChangeOp::Delete => {
                if let Some(r) = st.shard.remove(&c.key, hash) {
                    release(&mut st.services, &r);
                }
                return true;
            }
            ChangeOp::Upsert {
                gateway,
                confirmed,
                expires_at,
            } => (gateway, confirmed, expires_at),
        };
        let service = usize::from(c.key.service_index());
        let known = self
            .snap
            .services
            .get(service)
            .is_some_and(|s| usize::from(gateway) < s.spec.gateways.len());
        if !known {
            return true;
        }
        match st.shard.lookup(&c.key, hash, now) {
            Lookup::Hit(mut e) => {
                let old = e.value().gateway;
                if old != gateway {
                    e.set_gateway(gateway);
                    if let Some(n) = active_slot(&mut st.services, &c.key, old) {
                        *n = n.saturating_sub(1);
                    }
                    if let Some(n) = active_slot(&mut st.services, &c.key, gateway) {
                        *n += 1;
                    }
                }
                if confirmed {
                    e.confirm();
                }
                e.refresh(now, expires_at);
                return true;
            }
            Lookup::Expired(r) => release(&mut st.services, &r),
            Lookup::Miss => {}
        }
        let value = AffinityValue {
            gateway,
            last_seen: now,
            expires_at,
            confirmed,
        };
        match st.shard.insert(c.key, hash, value, now) {
            InsertOutcome::Inserted => {}
            InsertOutcome::InsertedEvicting(r) => release(&mut st.services, &r),
            InsertOutcome::Full => return false,
        }
        if let Some(n) = active_slot(&mut st.services, &c.key, gateway) {
            *n += 1;
        }
        true
    }

    /// Active clients of this worker per service and gateway.
    pub fn active_clients(&self) -> Vec<Vec<u32>> {
        self.st.services.iter().map(|s| s.active.clone()).collect()
    }

    /// Runs the pipeline over one burst received on `rx_port`. `now` is the clock in seconds.
    /// `verdicts[i]` says what to do with `frames[i]`; frames to transmit were rewritten in place.
    // Never inlined: once per burst it costs nothing, and `perf/instructions.sh` counts it by name.
    #[inline(never)]
    pub fn process_burst<F: Frame>(
        &mut self,
        now: u32,
        rx_port: u16,
        frames: &mut [F],
        verdicts: &mut [Verdict],
    ) {
        for (frames, verdicts) in frames
            .chunks_mut(MAX_BURST)
            .zip(verdicts.chunks_mut(MAX_BURST))
        {
            self.process_chunk(now, rx_port, frames, verdicts);
        }
        let (services, changes) = (&mut self.st.services, &mut self.st.changes);
        self.st.shard.sweep(now, SWEEP_SLOTS_PER_BURST, |r| {
            forget(services, changes, &r)
        });
    }

    /// One frame (a burst of one).
    pub fn process<F: Frame>(&mut self, now: u32, rx_port: u16, frame: &mut F) -> Verdict {
        let mut v = [Verdict::ToControl];
        self.process_burst(now, rx_port, std::slice::from_mut(frame), &mut v);
        v[0]
    }

    fn process_chunk<F: Frame>(
        &mut self,
        now: u32,
        rx_port: u16,
        frames: &mut [F],
        verdicts: &mut [Verdict],
    ) {
        let snap = &*self.snap;
        let st = &mut self.st;
        let n = frames.len().min(verdicts.len()).min(MAX_BURST);
        // Pass 1: parse, classify, and prefetch the affinity buckets.
        let mut rx_bytes = 0u64;
        let mut hashes = [None; MAX_BURST];
        for (i, (frame, plan)) in frames[..n].iter().zip(self.plans.iter_mut()).enumerate() {
            let bytes = frame.bytes();
            rx_bytes += bytes.len() as u64;
            let hash = st.plan(snap, rx_port, bytes, plan);
            if let Some(h) = hash {
                st.shard.prefetch(h);
            }
            if let Some(slot) = hashes.get_mut(i) {
                *slot = hash;
            }
            // Second stage, ENTRY_AHEAD packets behind: that bucket has had time to arrive.
            if let Some(Some(h)) = i.checked_sub(ENTRY_AHEAD).and_then(|j| hashes.get(j)) {
                st.shard.prefetch_entry(*h);
            }
        }
        st.counters.rx_packets += n as u64;
        st.counters.rx_bytes += rx_bytes;
        for h in hashes[n.saturating_sub(ENTRY_AHEAD)..n].iter().flatten() {
            st.shard.prefetch_entry(*h);
        }
        // Pass 2: decide and rewrite.
        let (mut tx_packets, mut tx_bytes) = (0u64, 0u64);
        for ((frame, plan), verdict) in frames[..n].iter_mut().zip(&self.plans).zip(verdicts) {
            let v = st.act(snap, now, plan, frame);
            match v {
                Verdict::Tx { .. } => {
                    tx_packets += 1;
                    tx_bytes += frame.bytes().len() as u64;
                }
                Verdict::ToControl => st.counters.to_control += 1,
                Verdict::Drop(r) => st.counters.drop(r),
            }
            *verdict = v;
        }
        st.counters.tx_packets += tx_packets;
        st.counters.tx_bytes += tx_bytes;
    }
}

impl State {
    /// No MAC for the next hop towards `dst`: remember it for the control plane, drop.
    #[cold]
    fn neighbor_miss(&mut self, dst: IpAddr) -> Verdict {
        self.misses.push(dst);
        Verdict::Drop(DropReason::NoNeighbor)
    }

    // ---- pass 1: what is this packet? ----

    /// Plans one frame into `out` and returns the hash of the affinity entry pass 2 will look
    /// up, if any, for prefetching. Plans are written to `out` in place: building a flow's
    /// plan elsewhere and copying it into the burst's array cost a memcpy per packet.
    #[inline(always)]
    fn plan(&mut self, snap: &Snapshot, rx_port: u16, bytes: &[u8], out: &mut Plan) -> Option<u64> {
        let eth = match EthernetFrame::new_checked(bytes) {
            Ok(e) => e,
            Err(e) => return store(out, Plan::Drop(wire_drop(e))),
        };
        let Some(interface) = snap.interface(rx_port, eth.vlan()) else {
            return store(out, Plan::Drop(DropReason::UnknownVlan));
        };
        let itf = snap.interface_view(interface);
        let dst_mac = eth.dst();
        if dst_mac.is_unicast() && !itf.accepts_mac(dst_mac) {
            return store(out, Plan::Drop(DropReason::NotOurMac));
        }
        let role = itf.role;
        let at = eth.header_len();
        let payload = eth.payload();
        match eth.ethertype() {
            ethertype::ARP => store(out, plan_arp(snap, interface, at, payload)),
            ethertype::IPV4 => match parse_v4(at, payload) {
                Ok(l3) => self.plan_ip(snap, interface, role, bytes, l3, out),
                Err(r) => store(out, Plan::Drop(r)),
            },
            ethertype::IPV6 => match parse_v6(at, payload) {
                Ok(l3) => self.plan_ip(snap, interface, role, bytes, l3, out),
                Err(r) => store(out, Plan::Drop(r)),
            },
            _ => store(out, Plan::Drop(DropReason::UnknownEthertype)),
        }
    }

    // Inlined into each family's arm of `plan`, where the addresses' family is known: the
    // address matches below fold away and `l3` stays in registers.
    #[inline(always)]
    fn plan_ip(
        &mut self,
        snap: &Snapshot,
        interface: u16,
        role: Role,
        bytes: &[u8],
        l3: L3,
        out: &mut Plan,
    ) -> Option<u64> {
        // Neighbor solicitations go to a solicited-node multicast address, and duplicate
        // address detection sends them from `::`: look at them before the source checks.
        if l3.v6 && l3.protocol == ip_proto::ICMPV6 {
            if let Some(l4) = l3.l4 {
                let icmp = &bytes[l4..l3.end];
                if icmp.first() == Some(&icmpv6_type::NEIGHBOR_SOLICIT) {
                    return store(out, plan_ns(snap, interface, bytes, l3, icmp));
                }
            }
        }
        if bad_source(l3.src) {
            return store(out, Plan::Drop(DropReason::BadSource));
        }
        // One scan of our addresses for both: the source must not be one, the destination
        // decides what happens next.
        let Some(dst_kind) = snap.local_pair(l3.src, l3.dst) else {
            return store(out, Plan::Drop(DropReason::BadSource));
        };
        match dst_kind {
            Some(LocalKind::Vip { .. }) if role == Role::Client => {
                self.plan_inbound(snap, interface, bytes, l3, out)
            }
            Some(LocalKind::Vip { .. }) => store(out, Plan::Drop(DropReason::WrongSide)),
            Some(LocalKind::Interface { .. } | LocalKind::Floating { .. })
                if is_echo_request(bytes, &l3) =>
            {
                store(out, Plan::EchoReply { interface, l3 })
            }
            Some(LocalKind::Interface { .. } | LocalKind::Floating { .. }) => {
                store(out, Plan::ToControl)
            }
            Some(LocalKind::Standby) => store(out, Plan::Drop(DropReason::NotMaster)),
            None if is_multicast(l3.dst) => store(out, Plan::ToControl),
            None if role == Role::Backend => self.plan_outbound(snap, bytes, l3, out),
            None => self.plan_routed_in(snap, bytes, l3, out),
        }
    }

    #[inline(always)]
    fn plan_inbound(
        &mut self,
        snap: &Snapshot,
        interface: u16,
        bytes: &[u8],
        l3: L3,
        out: &mut Plan,
    ) -> Option<u64> {
        let icmp = matches!(l3.protocol, ip_proto::ICMP | ip_proto::ICMPV6);
        if icmp && is_echo_request(bytes, &l3) {
            // Answered on the link: a link-local source is fine here.
            return store(out, Plan::EchoReply { interface, l3 });
        }
        // Everything else is forwarded, and link-local addresses are not (RFC 4291 §2.5.6,
        // RFC 3927 §7).
        if is_link_local(l3.src) {
            return store(out, Plan::Drop(DropReason::BadSource));
        }
        if icmp {
            let plan = if is_icmp_error(bytes, &l3) {
                plan_icmp_error(snap, bytes, l3, true)
            } else {
                Plan::Drop(DropReason::IcmpUnhandled)
            };
            return store(out, plan);
        }
        let (port, l4_csum, view) = match transport(bytes, &l3, true) {
            Ok(t) => t,
            Err(r) => return store(out, Plan::Drop(r)),
        };
        let Some(service) = snap.service_for(l3.dst, l3.protocol, port) else {
            return store(out, Plan::Drop(DropReason::NoService));
        };
        self.count_class(snap, service, &view);
        let key = affinity_key(l3.src, service);
        let hash = key.hash();
        let flow = Flow {
            hash,
            key,
            at: l3.at,
            end: l3.end,
            l4_csum,
            service,
            gateway: 0,
            inbound: true,
            direct: false,
            v6: l3.v6,
        };
        let svc = &snap.services[usize::from(service)];
        if svc.spec.mode == ServiceMode::Redirect
            && l3.protocol == ip_proto::UDP
            && port.is_some()
            && port == svc.spec.listeners.ike
        {
            let counters = &mut self.counters.services[usize::from(service)];
            let inspection = if l3.fragment {
                Inspection::Fallback(Fallback::Fragment)
            } else if view.payload.len() != view.datagram_len {
                Inspection::Malformed
            } else {
                redirect::inspect(view.payload)
            };
            match (inspection, l3.l4.map(u16::try_from)) {
                (Inspection::Redirect(request), Some(Ok(udp_at))) => {
                    *out = Plan::Redirect(Redirect {
                        flow,
                        interface,
                        udp_at,
                        request,
                    });
                    return None;
                }
                (Inspection::Fallback(why), _) => counters.fallback(why),
                _ => {
                    counters.malformed_ike_sa_init += 1;
                    return store(out, Plan::Drop(DropReason::MalformedIkeSaInit));
                }
            }
        }
        *out = Plan::Flow(flow);
        Some(hash)
    }

    /// Client-side traffic to no VIP and none of our addresses: routed if it is for a gateway
    /// of a service that routes to its gateways (a redirected client), else dropped.
    #[inline(never)]
    fn plan_routed_in(
        &mut self,
        snap: &Snapshot,
        bytes: &[u8],
        l3: L3,
        out: &mut Plan,
    ) -> Option<u64> {
        let memberships = snap.gateway_by_addr(l3.dst);
        if !memberships
            .iter()
            .any(|&(s, _)| routes_to_gateways(snap, s))
        {
            return store(out, Plan::Drop(DropReason::NotAVip));
        }
        if is_link_local(l3.src) {
            return store(out, Plan::Drop(DropReason::BadSource));
        }
        if matches!(l3.protocol, ip_proto::ICMP | ip_proto::ICMPV6) {
            // Pings to a gateway, errors about its packets: routed, stateless.
            return store(out, plan_routed_icmp(snap, memberships, &l3, true));
        }
        let (port, l4_csum, view) = match transport(bytes, &l3, true) {
            Ok(t) => t,
            Err(r) => return store(out, Plan::Drop(r)),
        };
        let found = memberships.iter().find(|&&(s, _)| {
            routes_to_gateways(snap, s)
                && routable(&snap.services[usize::from(s)], l3.protocol, port)
        });
        let Some(&(service, gateway)) = found else {
            return store(out, Plan::Drop(DropReason::NoService));
        };
        self.count_class(snap, service, &view);
        let key = affinity_key(l3.src, service).direct();
        let hash = key.hash();
        *out = Plan::Flow(Flow {
            hash,
            key,
            at: l3.at,
            end: l3.end,
            l4_csum,
            service,
            gateway,
            inbound: true,
            direct: true,
            v6: l3.v6,
        });
        Some(hash)
    }

    #[inline(always)]
    fn plan_outbound(
        &mut self,
        snap: &Snapshot,
        bytes: &[u8],
        l3: L3,
        out: &mut Plan,
    ) -> Option<u64> {
        // Clients are never link-local (their packets are not forwarded in, see
        // `plan_inbound`), and link-local traffic is not forwarded out either.
        if is_link_local(l3.src) || is_link_local(l3.dst) {
            return store(out, Plan::Drop(DropReason::NoRoute));
        }
        if matches!(l3.protocol, ip_proto::ICMP | ip_proto::ICMPV6) && is_icmp_error(bytes, &l3) {
            return store(out, plan_icmp_error(snap, bytes, l3, false));
        }
        let memberships = snap.gateway_by_addr(l3.src);
        if memberships.is_empty() {
            return store(out, Plan::Drop(DropReason::UnknownSource));
        }
        if matches!(l3.protocol, ip_proto::ICMP | ip_proto::ICMPV6) {
            // A gateway's pings and echo replies: to redirected clients only (pass 2 checks).
            return store(out, plan_routed_icmp(snap, memberships, &l3, false));
        }
        let (port, l4_csum, view) = match transport(bytes, &l3, false) {
            Ok(t) => t,
            Err(r) => return store(out, Plan::Drop(r)),
        };
        let mut found = None;
        for &(s, g) in memberships {
            if listens(snap, s, l3.protocol, port) {
                found = Some((s, g));
                break;
            }
        }
        let Some((service, gateway)) = found else {
            return store(out, Plan::Drop(DropReason::NoService));
        };
        self.count_class(snap, service, &view);
        let svc = &snap.services[usize::from(service)];
        let direct = svc.spec.route_to_gateways && routable(svc, l3.protocol, port);
        let key = affinity_key(l3.dst, service);
        let key = if direct { key.direct() } else { key };
        let hash = key.hash();
        *out = Plan::Flow(Flow {
            hash,
            key,
            at: l3.at,
            end: l3.end,
            l4_csum,
            service,
            gateway,
            inbound: false,
            direct,
            v6: l3.v6,
        });
        Some(hash)
    }

    fn count_class(&mut self, snap: &Snapshot, service: u16, view: &L4View<'_>) {
        let plan = snap.services[usize::from(service)].port_plan;
        let c = classify::classify(view, &plan);
        self.counters.classes[c.class.index()] += 1;
        match c.detail {
            Detail::Tls {
                client_hello: true,
                sni,
            } => {
                self.counters.tls_client_hellos += 1;
                if let Some(name) = sni {
                    self.sni.record(name);
                }
            }
            Detail::Dtls { client_hello: true } => self.counters.dtls_client_hellos += 1,
            _ => {}
        }
    }

    // ---- pass 2: decide and rewrite ----

    #[inline]
    fn act<F: Frame>(&mut self, snap: &Snapshot, now: u32, plan: &Plan, frame: &mut F) -> Verdict {
        match *plan {
            Plan::Drop(r) => Verdict::Drop(r),
            Plan::ToControl => Verdict::ToControl,
            Plan::ArpReply { interface, l3 } => {
                self.counters.arp_replies += 1;
                arp_reply(snap, interface, l3, frame)
            }
            Plan::NdAdvert {
                interface,
                l3,
                router,
            } => {
                self.counters.nd_replies += 1;
                nd_advert(snap, interface, l3, router, frame)
            }
            Plan::EchoReply { interface, l3 } => {
                self.counters.echo_replies += 1;
                echo_reply(snap, interface, l3, frame)
            }
            Plan::Flow(ref f) if f.direct => self.route(snap, now, f, frame),
            Plan::Flow(ref f) => self.forward(snap, now, f, frame),
            Plan::IcmpError(e) => self.forward_icmp_error(snap, now, e, frame),
            Plan::Redirect(ref r) => self.redirect(snap, now, r, frame),
            Plan::RoutedIcmp(r) => self.route_icmp(snap, now, r, frame),
        }
    }

    #[inline]
    fn forward<F: Frame>(&mut self, snap: &Snapshot, now: u32, f: &Flow, frame: &mut F) -> Verdict {
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

    /// Answers an IKE_SA_INIT request with a REDIRECT to the least-loaded gateway (or the one
    /// the client already has), in place; forwards it in NAT mode when no gateway can be named.
    #[inline(never)]
    fn redirect<F: Frame>(
        &mut self,
        snap: &Snapshot,
        now: u32,
        r: &Redirect,
        frame: &mut F,
    ) -> Verdict {
        let f = &r.flow;
        let svc = &snap.services[usize::from(f.service)];
        let target = self.redirect_target(snap, now, f).and_then(|g| {
            match svc.family(f.v6).gateways.get(usize::from(g)) {
                Some(&Some((addr, _))) => Some((g, addr)),
                _ => None,
            }
        });
        let Some((gateway, gateway_addr)) = target else {
            self.counters.services[usize::from(f.service)].fallback(Fallback::NoGatewayAddress);
            return self.forward(snap, now, f, frame);
        };
        let Some(vip) = svc.vip(f.v6) else {
            return Verdict::Drop(DropReason::NoService);
        };
        if let Err(reason) = answer_redirect(frame, r, gateway_addr) {
            if reason == DropReason::MalformedIkeSaInit {
                self.counters.services[usize::from(f.service)].malformed_ike_sa_init += 1;
            }
            return Verdict::Drop(reason);
        }
        let key = f.key.direct();
        self.remember_direct(svc, now, key, key.hash(), gateway);
        snap.loads.count_redirect(f.service, gateway);
        self.counters.gateways[usize::from(f.service)][usize::from(gateway)].redirects += 1;
        let mac = answer_mac(snap, r.interface, vip);
        reply_l2(snap, frame, r.interface, mac)
    }

    /// The gateway to redirect a client to: the one its redirected (direct) entry names, else
    /// the one its NAT-mode entry names (all of a client's flows on one gateway), if that
    /// gateway is not down and has an address of the client's family; else the eligible
    /// gateway with the least load per weight.
    fn redirect_target(&mut self, snap: &Snapshot, now: u32, f: &Flow) -> Option<u16> {
        let fam = snap.services[usize::from(f.service)].family(f.v6);
        let addressed = |g: u16| matches!(fam.gateways.get(usize::from(g)), Some(Some(_)));
        for key in [f.key.direct(), f.key] {
            match self.shard.lookup(&key, key.hash(), now) {
                Lookup::Hit(e) => {
                    let g = e.value().gateway;
                    let up = fam
                        .candidates
                        .get(usize::from(g))
                        .is_some_and(|c| c.state != GatewayState::Down);
                    if up && addressed(g) {
                        return Some(g);
                    }
                }
                Lookup::Expired(r) => forget(&mut self.services, &mut self.changes, &r),
                Lookup::Miss => {}
            }
        }
        let choices = fam.candidates.iter().enumerate().map(|(i, c)| {
            let gateway = u16::try_from(i).unwrap_or(u16::MAX);
            Choice {
                gateway,
                weight: c.weight,
                eligible: c.eligible() && addressed(gateway),
            }
        });
        let start = hash_client(f.client()) as usize;
        redirect::least_loaded(choices, |g| snap.loads.load(f.service, g), start)
    }

    /// Records that a redirected client talks to `gateway` directly: its direct entry is
    /// created (unconfirmed), re-pointed or refreshed.
    fn remember_direct(
        &mut self,
        svc: &ServiceView,
        now: u32,
        key: AffinityKey,
        hash: u64,
        gateway: u16,
    ) {
        match self.shard.lookup(&key, hash, now) {
            Lookup::Hit(mut e) => {
                let v = e.value();
                let timeout = if v.confirmed {
                    svc.spec.persistence_timeout_s
                } else {
                    svc.spec.unconfirmed_timeout_s
                };
                let expires_at = now.saturating_add(timeout);
                if v.gateway != gateway {
                    e.set_gateway(gateway);
                }
                e.refresh(now, expires_at);
                if v.gateway != gateway || refresh_is_news(v.expires_at, expires_at) {
                    self.changes.upsert(key, gateway, v.confirmed, expires_at);
                }
                return;
            }
            Lookup::Expired(r) => forget(&mut self.services, &mut self.changes, &r),
            Lookup::Miss => {}
        }
        let value = AffinityValue {
            gateway,
            last_seen: now,
            expires_at: now.saturating_add(svc.spec.unconfirmed_timeout_s),
            confirmed: false,
        };
        match self.shard.insert(key, hash, value, now) {
            InsertOutcome::Inserted => {}
            InsertOutcome::InsertedEvicting(r) => forget(&mut self.services, &mut self.changes, &r),
            InsertOutcome::Full => {
                self.counters.clients.learn_failed_table_full += 1;
                return;
            }
        }
        self.changes.upsert(key, gateway, false, value.expires_at);
    }

    /// Routes a redirected client's packet to its gateway's own address, or the gateway's
    /// packet back to it: TTL decremented, addresses untouched. A gateway's packet whose
    /// client has no direct entry for it is a NAT-mode client's, and is translated.
    #[inline(never)]
    fn route<F: Frame>(&mut self, snap: &Snapshot, now: u32, f: &Flow, frame: &mut F) -> Verdict {
        let svc = &snap.services[usize::from(f.service)];
        if !ttl_allows(frame, f) {
            return Verdict::Drop(DropReason::TtlExpired);
        }
        let Some(&Some((gateway_addr, gateway_hop))) =
            svc.family(f.v6).gateways.get(usize::from(f.gateway))
        else {
            return Verdict::Drop(DropReason::NoGateway);
        };
        let (side, hop) = if f.inbound {
            self.remember_direct(svc, now, f.key, f.hash, f.gateway);
            let Some(hop) = gateway_hop else {
                return self.neighbor_miss(gateway_addr);
            };
            (Side::Dst, hop)
        } else {
            match self.shard.lookup(&f.key, f.hash, now) {
                Lookup::Hit(mut e) if e.value().gateway == f.gateway => {
                    let v = e.value();
                    let expires_at = now.saturating_add(svc.spec.persistence_timeout_s);
                    let confirmed = e.confirm();
                    e.refresh(now, expires_at);
                    if confirmed || refresh_is_news(v.expires_at, expires_at) {
                        self.changes.upsert(f.key, f.gateway, true, expires_at);
                    }
                }
                other => {
                    if let Lookup::Expired(r) = other {
                        forget(&mut self.services, &mut self.changes, &r);
                    }
                    let key = f.key.nat();
                    let nat = Flow {
                        key,
                        hash: key.hash(),
                        direct: false,
                        ..*f
                    };
                    return self.forward(snap, now, &nat, frame);
                }
            }
            let client = f.client();
            match client_side_hop(snap, client) {
                Ok(h) => (Side::Src, h),
                Err(DropReason::NoNeighbor) => return self.neighbor_miss(client),
                Err(r) => return Verdict::Drop(r),
            }
        };
        // The address "changes" to itself: one TTL update, the checksums stay right.
        let ip_len = match rewrite_flow(frame, f, side, gateway_addr) {
            Ok(n) => n,
            Err(r) => return Verdict::Drop(r),
        };
        let c = &mut self.counters.gateways[usize::from(f.service)][usize::from(f.gateway)];
        if f.inbound {
            c.routed_to_gateway_packets += 1;
            c.routed_to_gateway_bytes += ip_len;
        } else {
            c.routed_from_gateway_packets += 1;
            c.routed_from_gateway_bytes += ip_len;
        }
        emit_l2(snap, frame, f.at, hop, f.v6)
    }

    /// Whether `key`'s live entry names `gateway` (without refreshing it).
    fn names_gateway(&mut self, now: u32, key: &AffinityKey, gateway: u16) -> bool {
        match self.shard.lookup(key, key.hash(), now) {
            Lookup::Hit(e) => e.value().gateway == gateway,
            Lookup::Expired(r) => {
                forget(&mut self.services, &mut self.changes, &r);
                false
            }
            Lookup::Miss => false,
        }
    }

    /// Routes ICMP between a client and a gateway's own address: TTL decremented, nothing
    /// else changed. From a gateway only to a client whose direct entry names it.
    #[inline(never)]
    fn route_icmp<F: Frame>(
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
        let hop = if r.inbound {
            match gateway_hop {
                Some(h) => h,
                None => return self.neighbor_miss(gateway_addr),
            }
        } else {
            if !self.names_gateway(now, &r.key, r.gateway) {
                return Verdict::Drop(DropReason::NoService);
            }
            let client = r.key.client_ip();
            match client_side_hop(snap, client) {
                Ok(h) => h,
                Err(DropReason::NoNeighbor) => return self.neighbor_miss(client),
                Err(e) => return Verdict::Drop(e),
            }
        };
        let Some(ip) = frame.bytes_mut().get_mut(r.at..) else {
            return Verdict::Drop(DropReason::Truncated);
        };
        if !decrement_ttl(ip, r.v6) {
            return Verdict::Drop(DropReason::TtlExpired);
        }
        let len = ip_total_len(ip, r.v6);
        let c = &mut self.counters.gateways[usize::from(r.service)][usize::from(r.gateway)];
        if r.inbound {
            c.routed_to_gateway_packets += 1;
            c.routed_to_gateway_bytes += len;
        } else {
            c.routed_from_gateway_packets += 1;
            c.routed_from_gateway_bytes += len;
        }
        emit_l2(snap, frame, r.at, hop, r.v6)
    }

    /// Picks a gateway for a client of `service`, counting it as active there.
    fn schedule(&mut self, snap: &Snapshot, f: &Flow) -> Option<u16> {
        let fam = snap.services[usize::from(f.service)].family(f.v6);
        let state = &mut self.services[usize::from(f.service)];
        let sched = if f.v6 { &mut state.v6 } else { &mut state.v4 };
        let g = sched.pick(hash_client(f.client()), &fam.candidates, &state.active)?;
        if let Some(c) = state.active.get_mut(usize::from(g)) {
            *c += 1;
        }
        Some(g)
    }

    /// The gateway for a client packet: its entry's (rescheduled if that gateway is down), or
    /// a newly scheduled one.
    fn client_gateway(&mut self, snap: &Snapshot, now: u32, f: &Flow) -> Result<u16, DropReason> {
        let svc = &snap.services[usize::from(f.service)];
        let (confirmed_timeout, unconfirmed_timeout) = (
            svc.spec.persistence_timeout_s,
            svc.spec.unconfirmed_timeout_s,
        );
        let fam = svc.family(f.v6);
        let current = match self.shard.lookup(&f.key, f.hash, now) {
            Lookup::Hit(mut e) => {
                let v = e.value();
                let timeout = if v.confirmed {
                    confirmed_timeout
                } else {
                    unconfirmed_timeout
                };
                let expires_at = now.saturating_add(timeout);
                e.refresh(now, expires_at);
                if refresh_is_news(v.expires_at, expires_at) {
                    self.changes
                        .upsert(f.key, v.gateway, v.confirmed, expires_at);
                }
                let up = fam
                    .candidates
                    .get(usize::from(v.gateway))
                    .is_some_and(|c| c.state != GatewayState::Down);
                if up {
                    return Ok(v.gateway);
                }
                Some(v.gateway)
            }
            Lookup::Expired(r) => {
                forget(&mut self.services, &mut self.changes, &r);
                None
            }
            Lookup::Miss => None,
        };
        let gateway = self.schedule(snap, f).ok_or(DropReason::NoGateway)?;
        if let Some(old) = current {
            // The client's gateway is down: move the client, keep its entry.
            if let Lookup::Hit(mut e) = self.shard.lookup(&f.key, f.hash, now) {
                e.set_gateway(gateway);
                let v = e.value();
                self.changes
                    .upsert(f.key, gateway, v.confirmed, v.expires_at);
            }
            if let Some(c) = self.services[usize::from(f.service)]
                .active
                .get_mut(usize::from(old))
            {
                *c = c.saturating_sub(1);
            }
            self.counters.clients.rescheduled += 1;
            return Ok(gateway);
        }
        let value = AffinityValue {
            gateway,
            last_seen: now,
            expires_at: now.saturating_add(unconfirmed_timeout),
            confirmed: false,
        };
        match self.shard.insert(f.key, f.hash, value, now) {
            InsertOutcome::Inserted => {}
            InsertOutcome::InsertedEvicting(r) => forget(&mut self.services, &mut self.changes, &r),
            InsertOutcome::Full => {
                // Undo `schedule`'s count: the client was not admitted.
                if let Some(c) = self.services[usize::from(f.service)]
                    .active
                    .get_mut(usize::from(gateway))
                {
                    *c = c.saturating_sub(1);
                }
                return Err(DropReason::TableFull);
            }
        }
        self.changes.upsert(f.key, gateway, false, value.expires_at);
        self.counters.clients.scheduled += 1;
        self.counters.gateways[usize::from(f.service)][usize::from(gateway)].new_clients += 1;
        Ok(gateway)
    }

    /// Return traffic from `gateway` to a client: confirms the client's entry, or learns one.
    fn gateway_seen(&mut self, snap: &Snapshot, now: u32, f: &Flow, gateway: u16) {
        let svc = &snap.services[usize::from(f.service)];
        let expires_at = now.saturating_add(svc.spec.persistence_timeout_s);
        match self.shard.lookup(&f.key, f.hash, now) {
            Lookup::Hit(mut e) => {
                let v = e.value();
                if v.gateway == gateway {
                    let confirmed = e.confirm();
                    e.refresh(now, expires_at);
                    if confirmed || refresh_is_news(v.expires_at, expires_at) {
                        self.changes.upsert(f.key, gateway, true, expires_at);
                    }
                } else {
                    self.counters.clients.gateway_mismatch += 1;
                }
                return;
            }
            Lookup::Expired(r) => forget(&mut self.services, &mut self.changes, &r),
            Lookup::Miss => {}
        }
        let value = AffinityValue {
            gateway,
            last_seen: now,
            expires_at,
            confirmed: true,
        };
        match self.shard.insert(f.key, f.hash, value, now) {
            InsertOutcome::Inserted => {}
            InsertOutcome::InsertedEvicting(r) => forget(&mut self.services, &mut self.changes, &r),
            InsertOutcome::Full => {
                self.counters.clients.learn_failed_table_full += 1;
                return;
            }
        }
        self.changes.upsert(f.key, gateway, true, expires_at);
        if let Some(c) = self.services[usize::from(f.service)]
            .active
            .get_mut(usize::from(gateway))
        {
            *c += 1;
        }
        self.counters.clients.learned_from_gateway += 1;
    }

    fn forward_icmp_error<F: Frame>(
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
            match self.shard.lookup(&e.key, e.hash, now) {
                Lookup::Hit(entry) => entry.value().gateway,
                Lookup::Expired(r) => {
                    forget(&mut self.services, &mut self.changes, &r);
                    return Verdict::Drop(DropReason::IcmpNoFlow);
                }
                Lookup::Miss => return Verdict::Drop(DropReason::IcmpNoFlow),
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
        let hop = if e.inbound {
            match gw_hop {
                Some(h) => h,
                None => return self.neighbor_miss(gw_addr),
            }
        } else {
            match client_side_hop(snap, e.outer.dst) {
                Ok(h) => h,
                Err(DropReason::NoNeighbor) => return self.neighbor_miss(e.outer.dst),
                Err(r) => return Verdict::Drop(r),
            }
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
        emit_l2(snap, frame, e.outer.at, hop, v6)
    }
}

fn plan_arp(snap: &Snapshot, interface: u16, at: usize, payload: &[u8]) -> Plan {
    let arp = match ArpPacket::new_checked(payload) {
        Ok(a) => a,
        Err(e) => return Plan::Drop(wire_drop(e)),
    };
    let target = IpAddr::V4(arp.target_ip());
    let gratuitous = arp.operation() == ARP_REQUEST && arp.sender_ip() == arp.target_ip();
    if arp.operation() == ARP_REPLY || gratuitous {
        // Replies and gratuitous ARP feed the control plane's neighbor cache; an announcement
        // is never answered, not even for an address of ours (a VRRP peer taking a VIP over
        // announces it while we may still hold it).
        Plan::ToControl
    } else if arp.operation() == ARP_REQUEST && snap.local(target) == Some(LocalKind::Standby) {
        Plan::Drop(DropReason::NotMaster)
    } else if arp.operation() == ARP_REQUEST && answers_for(snap, interface, target).is_some() {
        Plan::ArpReply { interface, l3: at }
    } else {
        Plan::Drop(DropReason::ArpUnhandled)
    }
}

fn plan_ns(snap: &Snapshot, interface: u16, bytes: &[u8], l3: L3, icmp: &[u8]) -> Plan {
    let (IpAddr::V6(src), IpAddr::V6(dst)) = (l3.src, l3.dst) else {
        return Plan::Drop(DropReason::NdUnhandled);
    };
    let ns = match NdpNeighbor::new_checked(icmp) {
        Ok(ns) => ns,
        Err(e) => return Plan::Drop(wire_drop(e)),
    };
    // RFC 4861 §7.1.1: hop limit 255, code 0, valid checksum. A DAD probe (unspecified
    // source) is not answered: the address is ours, the prober will notice on its own.
    let valid = bytes[l3.at + 7] == 255
        && icmp[1] == 0
        && !src.is_unspecified()
        && !src.is_multicast()
        && icmpv6::Icmpv6Packet::new_checked(icmp).is_ok_and(|p| p.verify_checksum(&src, &dst));
    if !valid {
        return Plan::Drop(DropReason::NdUnhandled);
    }
    let target = IpAddr::V6(ns.target());
    if snap.local(target) == Some(LocalKind::Standby) {
        return Plan::Drop(DropReason::NotMaster);
    }
    match answers_for(snap, interface, target) {
        Some(own) => Plan::NdAdvert {
            interface,
            l3,
            router: own,
        },
        None => Plan::Drop(DropReason::NdUnhandled),
    }
}

/// An ICMP error to a VIP (inbound: it quotes a VIP → client packet we sent) or from the
/// backend to a client (outbound: it quotes a client → gateway packet we forwarded).
fn plan_icmp_error(snap: &Snapshot, bytes: &[u8], outer: L3, inbound: bool) -> Plan {
    let Some(icmp_at) = outer.l4 else {
        return Plan::Drop(DropReason::IcmpNoFlow);
    };
    let inner_at = icmp_at + 8;
    let Some(quoted) = bytes.get(inner_at..outer.end) else {
        return Plan::Drop(DropReason::Truncated);
    };
    let Some(q) = parse_quoted(quoted, outer.v6) else {
        return Plan::Drop(DropReason::IcmpNoFlow);
    };
    let (service, gateway, client) = if inbound {
        // We sent VIP:port → client; the error reached the VIP.
        match snap.service_for(q.src, q.protocol, q.src_port) {
            Some(s) if q.src == outer.dst => (s, 0, q.dst),
            _ => return Plan::Drop(DropReason::IcmpNoFlow),
        }
    } else {
        // We forwarded client → gateway:port; the error goes back to the client.
        let found = snap
            .gateway_by_addr(q.dst)
            .iter()
            .find(|(s, _)| listens(snap, *s, q.protocol, q.dst_port));
        match found {
            Some(&(s, g)) if q.src == outer.dst => (s, g, q.src),
            _ => return Plan::Drop(DropReason::IcmpNoFlow),
        }
    };
    let key = affinity_key(client, service);
    Plan::IcmpError(IcmpError {
        outer,
        icmp_at,
        inner_at,
        inner_csum: q.l4_csum,
        inbound,
        service,
        gateway,
        hash: key.hash(),
        key,
    })
}

/// Whether `addr` is answered on `interface`: `Some(true)` for the appliance's own addresses
/// (anywhere), `Some(false)` for VIPs (client-facing interfaces only).
fn answers_for(snap: &Snapshot, interface: u16, addr: IpAddr) -> Option<bool> {
    match snap.local(addr)? {
        LocalKind::Interface { .. } | LocalKind::Floating { .. } => Some(true),
        LocalKind::Vip { .. } if snap.interface_view(interface).role == Role::Client => Some(false),
        LocalKind::Vip { .. } | LocalKind::Standby => None,
    }
}

/// The MAC `addr` is answered with on `interface`: the virtual MAC for what moves with HA
/// mastership (VIPs, floating addresses), the port's own for the rest.
fn answer_mac(snap: &Snapshot, interface: u16, addr: IpAddr) -> EthernetAddress {
    let itf = snap.interface_view(interface);
    match snap.local(addr) {
        Some(LocalKind::Vip { .. } | LocalKind::Floating { .. }) => itf.forward_mac(addr.is_ipv6()),
        _ => itf.mac,
    }
}

/// Whether a flow's packet may be forwarded: its TTL or hop limit does not reach zero here.
#[inline(always)]
fn ttl_allows<F: Frame>(frame: &F, f: &Flow) -> bool {
    frame
        .bytes()
        .get(f.at..f.end)
        .is_some_and(|ip| nat::ttl_allows_forwarding(ip, f.v6))
}

/// Writes `addr` as the flow's `side` address and decrements the TTL, in one checksum update;
/// returns the IP packet's length.
#[inline(always)]
fn rewrite_flow<F: Frame>(
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

/// Whether `service` routes its clients' traffic to and from its gateways' own addresses.
#[inline]
fn routes_to_gateways(snap: &Snapshot, service: u16) -> bool {
    snap.services[usize::from(service)].spec.route_to_gateways
}

/// ICMP between a client and a gateway's own address (`memberships`: the services and ids
/// of that gateway), routed statelessly by the first service that routes to its gateways.
fn plan_routed_icmp(snap: &Snapshot, memberships: &[(u16, u16)], l3: &L3, inbound: bool) -> Plan {
    let client = if inbound { l3.src } else { l3.dst };
    match memberships
        .iter()
        .find(|&&(s, _)| routes_to_gateways(snap, s))
    {
        Some(&(service, gateway)) => Plan::RoutedIcmp(RoutedIcmp {
            key: affinity_key(client, service).direct(),
            service,
            gateway,
            at: l3.at,
            inbound,
            v6: l3.v6,
        }),
        None => Plan::Drop(DropReason::NoService),
    }
}

/// Whether traffic of this protocol and service port is what a redirected client exchanges
/// with its gateway directly: IKE, NAT-T (IKE and ESP in UDP) and ESP. TLS and DTLS go
/// through the VIP in either mode. A non-first fragment has no port: UDP ones count (an
/// IP-fragmented IKE_AUTH must pass whole).
fn routable(svc: &ServiceView, protocol: u8, port: Option<u16>) -> bool {
    let l = &svc.spec.listeners;
    match (protocol, port) {
        (ip_proto::UDP, Some(_)) => port == l.ike || port == l.natt,
        (ip_proto::UDP, None) => l.ike.is_some() || l.natt.is_some(),
        (ip_proto::ESP, _) => l.esp,
        _ => false,
    }
}

/// Writes the REDIRECT answer to the request `r` over it: IP (without options or extension
/// headers) and UDP headers back to the client, from the VIP and the IKE port, and the IKE
/// response; the frame is cut to the answer's length. Nothing is answered (and the frame is
/// left as it is) for a request with a bad UDP checksum or one shorter than its answer.
fn answer_redirect<F: Frame>(
    frame: &mut F,
    r: &Redirect,
    gateway: IpAddr,
) -> Result<(), DropReason> {
    let f = &r.flow;
    let (at, udp_at) = (f.at, usize::from(r.udp_at));
    let ike_len = usize::from(r.request.len);
    let ike_at = udp_at + 8;
    let udp_end = ike_at + ike_len;
    let bytes = frame.bytes_mut();
    if udp_end > f.end || udp_end > bytes.len() {
        return Err(DropReason::Truncated);
    }
    let (client, vip) = if f.v6 {
        (
            IpAddr::V6(ipv6_at(bytes, at + 8)),
            IpAddr::V6(ipv6_at(bytes, at + 24)),
        )
    } else {
        (
            IpAddr::V4(ipv4_at(bytes, at + 12)),
            IpAddr::V4(ipv4_at(bytes, at + 16)),
        )
    };
    let udp_len = (8 + ike_len) as u16;
    let request_csum = u16::from_be_bytes([bytes[udp_at + 6], bytes[udp_at + 7]]);
    let pseudo = pseudo_header(vip, client, udp_len);
    // IPv4 allows "no checksum" (0); otherwise the sum over the datagram must be all ones.
    let csum_ok = (!f.v6 && request_csum == 0)
        || wire::checksum::fold(wire::checksum::sum(pseudo, &bytes[udp_at..udp_end])) == 0xffff;
    if !csum_ok {
        return Err(DropReason::MalformedIkeSaInit);
    }
    let (client_port, vip_port) = (
        u16::from_be_bytes([bytes[udp_at], bytes[udp_at + 1]]),
        u16::from_be_bytes([bytes[udp_at + 2], bytes[udp_at + 3]]),
    );
    let n = redirect::write_response(&mut bytes[ike_at..udp_end], &r.request, gateway)
        .ok_or(DropReason::MalformedIkeSaInit)?;
    let ip_len = if f.v6 { 40 } else { 20 };
    let new_udp_at = at + ip_len;
    bytes.copy_within(ike_at..ike_at + n, new_udp_at + 8);
    let udp_len = (8 + n) as u16;
    let ip = &mut bytes[at..new_udp_at];
    match (vip, client) {
        (IpAddr::V4(vip), IpAddr::V4(client)) => {
            ip[0] = 0x45;
            ip[1] = 0;
            ip[2..4].copy_from_slice(&(ip_len as u16 + udp_len).to_be_bytes());
            ip[4..6].fill(0); // identification: not fragmented
            ip[6..8].copy_from_slice(&0x4000u16.to_be_bytes()); // DF
            ip[8] = 64;
            ip[9] = ip_proto::UDP;
            ip[10..12].fill(0);
            ip[12..16].copy_from_slice(&vip.octets());
            ip[16..20].copy_from_slice(&client.octets());
            let c = wire::checksum::checksum(ip);
            ip[10..12].copy_from_slice(&c.to_be_bytes());
        }
        (IpAddr::V6(vip), IpAddr::V6(client)) => {
            ip[0..4].copy_from_slice(&0x6000_0000u32.to_be_bytes());
            ip[4..6].copy_from_slice(&udp_len.to_be_bytes());
            ip[6] = ip_proto::UDP;
            ip[7] = 64;
            ip[8..24].copy_from_slice(&vip.octets());
            ip[24..40].copy_from_slice(&client.octets());
        }
        _ => return Err(DropReason::BadHeader),
    }
    let udp = &mut bytes[new_udp_at..new_udp_at + 8 + n];
    udp[0..2].copy_from_slice(&vip_port.to_be_bytes());
    udp[2..4].copy_from_slice(&client_port.to_be_bytes());
    udp[4..6].copy_from_slice(&udp_len.to_be_bytes());
    udp[6..8].fill(0);
    let c = !wire::checksum::fold(wire::checksum::sum(
        pseudo_header(vip, client, udp_len),
        udp,
    ));
    udp[6..8].copy_from_slice(&(if c == 0 { 0xffff } else { c }).to_be_bytes());
    if frame.truncate(new_udp_at + 8 + n) {
        Ok(())
    } else {
        Err(DropReason::Truncated)
    }
}

/// The UDP pseudo-header sum for a datagram from `src` to `dst`.
fn pseudo_header(src: IpAddr, dst: IpAddr, udp_len: u16) -> u32 {
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            wire::checksum::pseudo_header_v4(s, d, ip_proto::UDP, udp_len)
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            wire::checksum::pseudo_header_v6(&s, &d, ip_proto::UDP, u32::from(udp_len))
        }
        _ => 0,
    }
}

fn listens(snap: &Snapshot, service: u16, protocol: u8, port: Option<u16>) -> bool {
    let l = &snap.services[usize::from(service)].spec.listeners;
    match port {
        Some(p) => l.accepts(protocol, p),
        None => l.accepts_protocol(protocol),
    }
}

/// Next hop for traffic to a client: it must leave through a client-facing interface.
#[inline(always)]
fn client_side_hop(snap: &Snapshot, dst: IpAddr) -> Result<NextHop, DropReason> {
    match snap.next_hop(dst) {
        Ok(h) if snap.interface_view(h.interface).role == Role::Client => Ok(h),
        Ok(_) | Err(false) => Err(DropReason::NoRoute),
        Err(true) => Err(DropReason::NoNeighbor),
    }
}

/// Replaces the Ethernet header (and VLAN tags) for the egress interface. `v6` is the family of
/// the IP packet at `l3_at` (it picks the EtherType).
#[inline]
fn emit_l2<F: Frame>(
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

/// Turns a frame around on its ingress interface: the peer's MAC becomes the destination,
/// `src` (the MAC the answered address goes with) the source.
fn reply_l2<F: Frame>(
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

fn arp_reply<F: Frame>(snap: &Snapshot, interface: u16, l3: usize, frame: &mut F) -> Verdict {
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

fn nd_advert<F: Frame>(
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

fn echo_reply<F: Frame>(snap: &Snapshot, interface: u16, l3: L3, frame: &mut F) -> Verdict {
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

/// Stores `plan` in `out` and returns the hash to prefetch for it (an ICMP error's entry).
#[inline(always)]
fn store(out: &mut Plan, plan: Plan) -> Option<u64> {
    let hash = match plan {
        Plan::IcmpError(e) => Some(e.hash),
        _ => None,
    };
    *out = plan;
    hash
}

/// A removed entry: out of the active-client counts, and news for an HA peer.
fn forget(services: &mut [ServiceState], changes: &mut ChangeLog, r: &Removed) {
    release(services, r);
    changes.delete(r.key);
}

/// Forgets a removed entry's client in the active-client counts.
fn release(services: &mut [ServiceState], r: &Removed) {
    if let Some(c) = active_slot(services, &r.key, r.value.gateway) {
        *c = c.saturating_sub(1);
    }
}

/// The active-client count an entry of `key` on `gateway` belongs to. Redirected clients'
/// (direct) entries are in none: the NAT-mode scheduler balances NAT-mode clients, and the
/// redirect choice reads the gateways' own tunnel counts.
fn active_slot<'a>(
    services: &'a mut [ServiceState],
    key: &AffinityKey,
    gateway: u16,
) -> Option<&'a mut u32> {
    if key.is_direct() {
        return None;
    }
    services
        .get_mut(usize::from(key.service))?
        .active
        .get_mut(usize::from(gateway))
}

#[inline(always)]
fn affinity_key(client: IpAddr, service: u16) -> AffinityKey {
    match client {
        IpAddr::V4(a) => AffinityKey::from_v4(a, service),
        IpAddr::V6(a) => AffinityKey::from_v6(&a, service),
    }
}

fn wire_drop(e: wire::Error) -> DropReason {
    match e {
        wire::Error::Truncated => DropReason::Truncated,
        wire::Error::BadHeader => DropReason::BadHeader,
        wire::Error::BadLength => DropReason::BadLength,
    }
}

#[inline(always)]
fn bad_source(a: IpAddr) -> bool {
    match a {
        IpAddr::V4(a) => {
            a.is_multicast() || a.is_broadcast() || a.is_unspecified() || a.is_loopback()
        }
        IpAddr::V6(a) => a.is_multicast() || a.is_loopback() || a.is_unspecified(),
    }
}

/// 169.254.0.0/16 and fe80::/10: valid on a link, never forwarded.
#[inline(always)]
fn is_link_local(a: IpAddr) -> bool {
    match a {
        IpAddr::V4(a) => a.is_link_local(),
        IpAddr::V6(a) => a.segments()[0] & 0xffc0 == 0xfe80,
    }
}

#[inline(always)]
fn is_multicast(a: IpAddr) -> bool {
    match a {
        IpAddr::V4(a) => a.is_multicast() || a.is_broadcast(),
        IpAddr::V6(a) => a.is_multicast(),
    }
}

/// A whole echo request (a fragment of one is not answered piecemeal: the first fragment's reply
/// would carry a partial payload).
fn is_echo_request(bytes: &[u8], l3: &L3) -> bool {
    if l3.fragment {
        return false;
    }
    let Some(l4) = l3.l4 else { return false };
    let t = bytes.get(l4).copied();
    match l3.protocol {
        ip_proto::ICMP if !l3.v6 => t == Some(icmpv4_type::ECHO_REQUEST) && l3.end - l4 >= 8,
        ip_proto::ICMPV6 if l3.v6 => t == Some(icmpv6_type::ECHO_REQUEST) && l3.end - l4 >= 8,
        _ => false,
    }
}

fn is_icmp_error(bytes: &[u8], l3: &L3) -> bool {
    let Some(t) = l3.l4.and_then(|l4| bytes.get(l4).copied()) else {
        return false;
    };
    match l3.protocol {
        ip_proto::ICMP if !l3.v6 => icmp::is_error(t),
        ip_proto::ICMPV6 if l3.v6 => icmpv6::is_error(t),
        _ => false,
    }
}

/// The scheduler's hash of a client: over the address's own bytes (4 for IPv4), so it is the
/// same on every appliance and in the capture generator.
fn hash_client(client: IpAddr) -> u64 {
    match client {
        IpAddr::V4(a) => client_hash(&a.octets()),
        IpAddr::V6(a) => client_hash(&a.octets()),
    }
}

fn ipv4_at(b: &[u8], at: usize) -> Ipv4Addr {
    let mut o = [0u8; 4];
    if let Some(s) = b.get(at..at + 4) {
        o.copy_from_slice(s);
    }
    Ipv4Addr::from(o)
}

fn ipv6_at(b: &[u8], at: usize) -> Ipv6Addr {
    let mut o = [0u8; 16];
    if let Some(s) = b.get(at..at + 16) {
        o.copy_from_slice(s);
    }
    Ipv6Addr::from(o)
}

/// The IP packet's length from its header (IPv4 total length, IPv6 40 + payload length).
fn ip_total_len(ip: &[u8], v6: bool) -> u64 {
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

fn decrement_ttl(ip: &mut [u8], v6: bool) -> bool {
    if v6 {
        nat::decrement_hop_limit_v6(ip)
    } else {
        nat::decrement_ttl_v4(ip)
    }
}

fn rewrite(ip: &mut [u8], side: Side, new: IpAddr, l4: L4Checksum) {
    match new {
        IpAddr::V4(a) => nat::rewrite_v4(ip, side, a, l4),
        IpAddr::V6(a) => nat::rewrite_v6(ip, side, &a, l4),
    }
}

#[inline(always)]
fn parse_v4(at: usize, payload: &[u8]) -> Result<L3, DropReason> {
    let ip = Ipv4Packet::new_checked(payload).map_err(wire_drop)?;
    if !ip.verify_checksum() {
        return Err(DropReason::BadChecksum);
    }
    let hl = ip.header_len();
    Ok(L3 {
        v6: false,
        at,
        src: IpAddr::V4(ip.src_addr()),
        dst: IpAddr::V4(ip.dst_addr()),
        protocol: ip.protocol(),
        l4: ip.is_first_fragment().then_some(at + hl),
        fragment: ip.is_fragment(),
        end: at + usize::from(ip.total_len()),
    })
}

#[inline(always)]
fn parse_v6(at: usize, payload: &[u8]) -> Result<L3, DropReason> {
    let ip = Ipv6Packet::new_checked(payload).map_err(wire_drop)?;
    let upper = ip.upper_layer().map_err(wire_drop)?;
    let first = upper.fragment.is_none_or(|f| f.offset == 0);
    Ok(L3 {
        v6: true,
        at,
        src: IpAddr::V6(ip.src_addr()),
        dst: IpAddr::V6(ip.dst_addr()),
        protocol: upper.protocol,
        l4: first.then_some(at + upper.offset),
        fragment: upper.fragment.is_some(),
        end: at + 40 + usize::from(ip.payload_len()),
    })
}

/// Transport port (server side), checksum location and the classifier's view of a packet.
#[inline(always)]
fn transport<'a>(
    bytes: &'a [u8],
    l3: &L3,
    inbound: bool,
) -> Result<(Option<u16>, L4Checksum, L4View<'a>), DropReason> {
    let Some(l4) = l3.l4 else {
        let view = L4View {
            protocol: l3.protocol,
            server_port: 0,
            payload: &[],
            datagram_len: 0,
            non_first_fragment: true,
        };
        return Ok((None, L4Checksum::None, view));
    };
    let seg = &bytes[l4..l3.end];
    let rel = l4 - l3.at;
    let pick = |src: u16, dst: u16| if inbound { dst } else { src };
    match l3.protocol {
        ip_proto::UDP => {
            let udp = UdpPacket::new_partial(seg).map_err(wire_drop)?;
            let port = pick(udp.src_port(), udp.dst_port());
            // The view borrows `seg` through `udp`; slice `seg` itself so the payload outlives it.
            let end = usize::from(udp.len()).min(seg.len());
            let view = L4View {
                protocol: l3.protocol,
                server_port: port,
                payload: seg.get(8..end).unwrap_or(&[]),
                datagram_len: usize::from(udp.len()).saturating_sub(8),
                non_first_fragment: false,
            };
            Ok((Some(port), L4Checksum::Udp(rel + 6), view))
        }
        ip_proto::TCP => {
            let tcp = TcpPacket::new_checked(seg).map_err(wire_drop)?;
            let port = pick(tcp.src_port(), tcp.dst_port());
            let payload = seg.get(tcp.header_len()..).unwrap_or(&[]);
            let view = L4View {
                protocol: l3.protocol,
                server_port: port,
                payload,
                datagram_len: payload.len(),
                non_first_fragment: false,
            };
            Ok((Some(port), L4Checksum::Other(rel + 16), view))
        }
        _ => {
            let view = L4View {
                protocol: l3.protocol,
                server_port: 0,
                payload: seg,
                datagram_len: seg.len(),
                non_first_fragment: false,
            };
            // ESP (and anything else) has no ports and no checksum over the addresses.
            Ok((Some(0), L4Checksum::None, view))
        }
    }
}

/// The header of a packet quoted in an ICMP error: often cut short, so lengths in it are not
/// checked against what is present.
struct Quoted {
    src: IpAddr,
    dst: IpAddr,
    protocol: u8,
    src_port: Option<u16>,
    dst_port: Option<u16>,
    l4_csum: L4Checksum,
}

fn parse_quoted(b: &[u8], v6: bool) -> Option<Quoted> {
    let (src, dst, protocol, l4) = if v6 {
        if b.len() < 40 || b[0] >> 4 != 6 {
            return None;
        }
        let src = Ipv6Addr::from(<[u8; 16]>::try_from(&b[8..24]).ok()?);
        let dst = Ipv6Addr::from(<[u8; 16]>::try_from(&b[24..40]).ok()?);
        // Quoted packets with extension headers are not followed: the flow is ours only when
        // the transport header comes right after.
        (IpAddr::V6(src), IpAddr::V6(dst), b[6], 40)
    } else {
        if b.len() < 20 || b[0] >> 4 != 4 {
            return None;
        }
        let hl = usize::from(b[0] & 0x0f) * 4;
        if hl < 20 || b.len() < hl {
            return None;
        }
        // A quoted non-first fragment carries no ports.
        let frag_offset = u16::from_be_bytes([b[6], b[7]]) & 0x1fff;
        if frag_offset != 0 {
            return None;
        }
        let src = Ipv4Addr::new(b[12], b[13], b[14], b[15]);
        let dst = Ipv4Addr::new(b[16], b[17], b[18], b[19]);
        (IpAddr::V4(src), IpAddr::V4(dst), b[9], hl)
    };
    let rest = &b[l4..];
    let (src_port, dst_port) = match protocol {
        ip_proto::UDP | ip_proto::TCP if rest.len() >= 4 => (
            Some(u16::from_be_bytes([rest[0], rest[1]])),
            Some(u16::from_be_bytes([rest[2], rest[3]])),
        ),
        ip_proto::UDP | ip_proto::TCP => return None,
        _ => (Some(0), Some(0)),
    };
    Some(Quoted {
        src,
        dst,
        protocol,
        src_port,
        dst_port,
        l4_csum: L4Checksum::locate(protocol, l4, rest.len()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::craft::lab::{self, appliance_spec};
    use crate::craft::{self, Ipv4Opts, L2, L4};
    use crate::frame::VecFrame;
    use crate::model::AffinitySpec;
    use proptest::prelude::*;

    fn worker() -> Worker {
        // Building a snapshot builds its Maglev tables: once for all tests.
        static SNAP: std::sync::OnceLock<Arc<Snapshot>> = std::sync::OnceLock::new();
        let snap = SNAP.get_or_init(|| {
            let spec = appliance_spec(AffinitySpec {
                capacity: 4096,
                max_unconfirmed: 1024,
            });
            Arc::new(Snapshot::build(spec, 1).unwrap())
        });
        Worker::new(Arc::clone(snap))
    }

    fn client4(i: u8) -> Ipv4Addr {
        Ipv4Addr::new(198, 18, 1, i)
    }

    fn client6(i: u8) -> Ipv6Addr {
        Ipv6Addr::new(0x2001, 2, 0, 0x64, 0, 0, 0, u16::from(i))
    }

    /// Client-side (port 0) frames: every kind of plan, and flows of both families.
    fn from_clients() -> Vec<Vec<u8>> {
        let l2 = L2::new(lab::ROUTER_MAC, lab::CLIENT_PORT_MAC);
        let esp = craft::esp_payload(0x1234, 1, 60);
        fn udp(src: u16, dst: u16, payload: &[u8]) -> L4<'_> {
            L4::Udp { src, dst, payload }
        }
        let mut v = Vec::new();
        for i in 1..6 {
            let l4 = udp(4500, 4500, &esp);
            v.push(craft::ipv4(
                &l2,
                client4(i),
                lab::VIP_V4,
                &Ipv4Opts::default(),
                &l4,
            ));
            v.push(craft::ipv6(&l2, &client6(i), &lab::VIP_V6, 64, &[], &l4));
        }
        let ttl1 = Ipv4Opts {
            ttl: 1,
            ..Ipv4Opts::default()
        };
        let hello = craft::tls_client_hello(Some("vpn.example.net"));
        let tcp = L4::Tcp {
            src: 50_000,
            dst: 443,
            seq: 1,
            ack: 0,
            flags: craft::tcp_flags::ACK,
            payload: &hello,
        };
        v.push(craft::ipv4(
            &l2,
            client4(7),
            lab::VIP_V4,
            &ttl1,
            &udp(4500, 4500, &esp),
        ));
        v.push(craft::ipv4(
            &l2,
            client4(8),
            lab::VIP_V4,
            &Ipv4Opts::default(),
            &tcp,
        ));
        v.push(craft::ipv4(
            &l2,
            client4(9),
            lab::VIP_V4,
            &Ipv4Opts::default(),
            &udp(9, 9, b"x"),
        ));
        let echo = L4::Icmpv4 {
            msg_type: 8,
            code: 0,
            rest: 0x0001_0001,
            payload: b"ping",
        };
        v.push(craft::ipv4(
            &l2,
            client4(10),
            lab::VIP_V4,
            &Ipv4Opts::default(),
            &echo,
        ));
        let arp_l2 = L2::new(
            lab::ROUTER_MAC,
            crate::wire::ethernet::EthernetAddress::BROADCAST,
        );
        v.push(craft::arp(
            &arp_l2,
            1,
            lab::ROUTER_MAC,
            lab::ROUTER_V4,
            crate::wire::ethernet::EthernetAddress([0; 6]),
            lab::VIP_V4,
        ));
        // Spoofed source, not a VIP, garbage.
        v.push(craft::ipv4(
            &l2,
            lab::VIP_V4,
            lab::VIP_V4,
            &Ipv4Opts::default(),
            &udp(4500, 4500, &esp),
        ));
        v.push(craft::ipv4(
            &l2,
            client4(11),
            client4(12),
            &Ipv4Opts::default(),
            &udp(4500, 4500, &esp),
        ));
        v.push(vec![0xff; 13]);
        v
    }

    /// Gateway-side (port 1) frames: replies to some of the clients above, and strays.
    fn from_gateways() -> Vec<Vec<u8>> {
        let esp = craft::esp_payload(0x5678, 1, 60);
        let l4 = L4::Udp {
            src: 4500,
            dst: 4500,
            payload: &esp,
        };
        let mut v = Vec::new();
        for g in 0..3 {
            let l2 = L2::new(lab::GATEWAY_MACS[g], lab::BACKEND_PORT_MAC);
            for i in 1..4 {
                let c = client4(i);
                v.push(craft::ipv4(
                    &l2,
                    lab::GATEWAYS_V4[g],
                    c,
                    &Ipv4Opts::default(),
                    &l4,
                ));
                v.push(craft::ipv6(
                    &l2,
                    &lab::GATEWAYS_V6[g],
                    &client6(i),
                    64,
                    &[],
                    &l4,
                ));
            }
        }
        let l2 = L2::new(lab::GATEWAY_MACS[0], lab::BACKEND_PORT_MAC);
        let stranger = Ipv4Addr::new(198, 19, 0, 99);
        v.push(craft::ipv4(
            &l2,
            stranger,
            client4(1),
            &Ipv4Opts::default(),
            &l4,
        ));
        v
    }

    /// Runs `frames` through `w` as bursts on `port`, returning verdicts and output bytes.
    fn run_burst(w: &mut Worker, port: u16, frames: &[Vec<u8>]) -> Vec<(Verdict, Vec<u8>)> {
        let mut out = Vec::new();
        for chunk in frames.chunks(MAX_BURST) {
            let mut f: Vec<VecFrame> = chunk.iter().map(|b| VecFrame::new(b)).collect();
            let mut v = vec![Verdict::ToControl; f.len()];
            w.process_burst(100, port, &mut f, &mut v);
            out.extend(v.into_iter().zip(f.iter().map(|f| f.bytes().to_vec())));
        }
        out
    }

    fn run_single(w: &mut Worker, port: u16, frames: &[Vec<u8>]) -> Vec<(Verdict, Vec<u8>)> {
        frames
            .iter()
            .map(|b| {
                let mut f = VecFrame::new(b);
                let v = w.process(100, port, &mut f);
                (v, f.bytes().to_vec())
            })
            .collect()
    }

    fn forwarded(results: &[(Verdict, Vec<u8>)]) -> usize {
        results
            .iter()
            .filter(|(v, _)| matches!(v, Verdict::Tx { .. }))
            .count()
    }

    /// The two passes and the prefetch stages change nothing: a burst gives what the same
    /// frames give one at a time (verdicts, bytes, counters, table).
    #[test]
    fn a_burst_is_the_frames_one_by_one() {
        let (mut a, mut b) = (worker(), worker());
        let clients = from_clients();
        let gateways = from_gateways();
        let ra = run_burst(&mut a, 0, &clients);
        let rb = run_single(&mut b, 0, &clients);
        assert_eq!(ra, rb);
        // 10 flows, the TLS client, the echo reply, the ARP reply.
        assert_eq!(forwarded(&ra), 13);
        let ra = run_burst(&mut a, 1, &gateways);
        let rb = run_single(&mut b, 1, &gateways);
        assert_eq!(ra, rb);
        assert_eq!(forwarded(&ra), 18, "mismatched gateways are forwarded too");
        assert_eq!(a.counters(), b.counters());
        assert_eq!(a.affinity().len(), b.affinity().len());
        assert_eq!(a.active_clients(), b.active_clients());
        let c = a.counters();
        assert_eq!(c.dropped(DropReason::TtlExpired), 1);
        assert_eq!(c.dropped(DropReason::BadSource), 1);
        assert_eq!(c.dropped(DropReason::NotAVip), 1);
        assert_eq!(c.dropped(DropReason::NoService), 1);
        assert_eq!(c.dropped(DropReason::UnknownSource), 1);
        assert_eq!(c.dropped(DropReason::Truncated), 1);
    }

    /// The HA peer's view: a master's recorded changes, applied to a backup worker, give the
    /// backup the master's table (clients, gateways, confirmation, active counts), and a
    /// client's later packets cost no change until its expiry moves by a refresh step.
    #[test]
    fn recorded_changes_rebuild_the_table_on_a_peer() {
        fn table(w: &Worker) -> Vec<(AffinityKey, u16, bool)> {
            let mut t: Vec<_> = w
                .affinity()
                .iter()
                .map(|(k, v)| (k, v.gateway, v.confirmed))
                .collect();
            t.sort_by_key(|(k, _, _)| (k.client, k.service));
            t
        }
        fn ship(master: &mut Worker, backup: &mut Worker) -> usize {
            let mut changes = Vec::new();
            assert_eq!(master.drain_changes(|c| changes.push(c)), 0);
            for c in &changes {
                assert!(backup.apply_synced(100, c));
            }
            changes.len()
        }
        let (mut master, mut backup) = (worker(), worker());
        master.record_changes(1024);
        run_burst(&mut master, 0, &from_clients());
        assert!(ship(&mut master, &mut backup) > 0);
        assert_eq!(table(&backup), table(&master));
        // Gateways answer: confirmations travel.
        run_burst(&mut master, 1, &from_gateways());
        assert!(ship(&mut master, &mut backup) > 0);
        assert_eq!(table(&backup), table(&master));
        assert!(table(&backup).iter().any(|(_, _, confirmed)| *confirmed));
        assert_eq!(backup.active_clients(), master.active_clients());
        // The same packets again, same second: nothing new.
        run_burst(&mut master, 0, &from_clients());
        assert_eq!(ship(&mut master, &mut backup), 0);
        // A flush travels as deletes; the backup records nothing of its own.
        let n = master.flush_affinity(Some(IpAddr::V4(client4(1))));
        assert!(n > 0);
        assert_eq!(ship(&mut master, &mut backup), n);
        assert_eq!(table(&backup), table(&master));
        assert_eq!(backup.active_clients(), master.active_clients());
        assert_eq!(
            backup.drain_changes(|_| panic!("a backup records nothing")),
            0
        );
    }

    #[test]
    fn a_flow_plan_keeps_the_client_address() {
        let key = AffinityKey::from_v4(client4(7), 3);
        let f = Flow {
            hash: key.hash(),
            key,
            at: 14,
            end: 50,
            l4_csum: L4Checksum::None,
            service: 3,
            gateway: 0,
            inbound: true,
            direct: false,
            v6: false,
        };
        assert_eq!(f.client(), IpAddr::V4(client4(7)));
        let key = AffinityKey::from_v6(&client6(7), 3);
        let f = Flow { key, v6: true, ..f };
        assert_eq!(f.client(), IpAddr::V6(client6(7)));
        // An IPv4-mapped IPv6 client stays IPv6.
        let mapped: Ipv6Addr = "::ffff:198.18.1.7".parse().unwrap();
        let f = Flow {
            key: AffinityKey::from_v6(&mapped, 3),
            ..f
        };
        assert_eq!(f.client(), IpAddr::V6(mapped));
    }

    proptest! {
        /// Damaged frames never panic, and bursts still equal single frames.
        #[test]
        fn damaged_bursts_are_the_frames_one_by_one(
            port in 0u16..2,
            picks in proptest::collection::vec((any::<prop::sample::Index>(), any::<prop::sample::Index>(), any::<u8>(), 0usize..80), 1..48),
        ) {
            let templates = if port == 0 { from_clients() } else { from_gateways() };
            let frames: Vec<Vec<u8>> = picks
                .iter()
                .map(|(t, at, byte, cut)| {
                    let mut f = t.get(&templates).clone();
                    let i = at.index(f.len());
                    f[i] = *byte;
                    f.truncate(f.len().saturating_sub(*cut % 8 * (*cut / 8 % 2)));
                    f
                })
                .collect();
            let (mut a, mut b) = (worker(), worker());
            prop_assert_eq!(run_burst(&mut a, port, &frames), run_single(&mut b, port, &frames));
            prop_assert_eq!(a.counters(), b.counters());
        }
    }
}
