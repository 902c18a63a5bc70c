//! One burst in, verdicts out: the code every worker (and `vpnlbd replay`) runs.
//!
//! The shape follows VPP and l3fwd: a first pass parses every frame of the burst into a small
//! `Plan` (what the packet is, where its affinity entry lives) and prefetches the affinity
//! buckets, and a few packets later, once a bucket has arrived, the entry it points at; a second
//! pass decides and rewrites each packet in place. By the time the second pass touches the
//! table, both of a lookup's cache lines are in cache, which is what keeps a large table close
//! to a small one (what remains at millions of clients is mostly TLB misses).
//!
//! Each pass has a fast path for the traffic a balancer carries nearly all the time, an
//! established client and its gateway exchanging ESP-in-UDP, IKE, ESP, TLS or DTLS: pass 1
//! recognises it in one lean parse of untagged, unfragmented, option-free headers, and pass 2
//! forwards it with one lookup, one address-and-TTL checksum update and a new Ethernet header.
//! Anything either fast path declines, it declines before changing anything, and the general
//! code then handles it exactly as it would have: the fast paths change the cost, never the
//! verdict.
//!
//! The stages, one file each:
//!
//! - `parse`: pass 1, the only parser (the fast prelude, then everything else);
//! - `flow`: the affinity state machine (entries found, refreshed, created, confirmed, moved);
//! - `fast`: pass 2 for established client <-> gateway traffic;
//! - `slow/`: answers (ARP, ND, echo), ICMP errors, redirects, routed traffic, and NAT-mode
//!   translation of everything the fast path declines (new clients among them);
//! - `egress`: the egress port's MTU, on frames longer than the smallest one (fragment, or
//!   tell the sender with an ICMP error).
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

mod egress;
mod fast;
mod flow;
mod parse;
mod slow;

pub use egress::TOO_BIG_ERRORS_PER_SECOND;
use flow::{active_slot, forget, release};
use parse::Plan;
use slow::answer::{arp_reply, echo_reply, nd_advert};

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use crate::affinity::{
    self, AffinityKey, AffinityShard, AffinityValue, HashKey, InsertOutcome, Lookup, Remap,
    RemapProgress,
};
use crate::changes::{AffinityChange, ChangeLog, ChangeOp};
use crate::classify::SniStats;
use crate::counters::{DropReason, GatewayCounters, ServiceCounters, WorkerCounters};
use crate::frame::Frame;
use crate::hold::{self, HoldQueue};
use crate::model::Snapshot;
use crate::neighbor::Heard;
use crate::schedule::{client_hash, Scheduler};
use crate::steer::Steering;
use crate::wire::ethernet::EthernetAddress;
use crate::wire::{self};

/// Largest burst the pipeline handles at once (as DPDK's usual RX burst).
pub const MAX_BURST: usize = 32;

/// How many packets behind itself pass 1 prefetches affinity entries (their buckets, prefetched
/// that many packets earlier, have arrived by then).
const ENTRY_AHEAD: usize = 8;

/// Affinity slots examined per burst by the incremental expiry sweep.
const SWEEP_SLOTS_PER_BURST: usize = 64;

/// Work a running remap (a reload's re-keying, a flush) does per burst, in the units of
/// [`AffinityShard::remap_step`]: 512 slots visited (16 KB read in order), or 32 entries
/// re-indexed or removed. See `dataplane/tests/remap_cost.rs` for what a slice costs.
pub const REMAP_BUDGET_PER_BURST: usize = 512;

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
    /// Software steering: another worker owns the frame's client; hand the frame to it as it
    /// came in (untouched, and not counted here: the owner counts it).
    HandOff {
        worker: u16,
    },
    /// An IPv4 datagram without DF longer than the egress port's MTU: transmit its fragments
    /// on `port`, cut for `mtu` by [`crate::fragment::Fragments`] (the pipeline checked that
    /// they can be, and counted them as transmitted).
    Fragment {
        port: u16,
        mtu: u16,
    },
    /// Finished for `port` but for its destination MAC: `next_hop` (the neighbor) is being
    /// resolved. Hold it ([`Pipeline::hold`]) until a snapshot knows the MAC
    /// ([`Pipeline::release_held`]); not counted as transmitted until then.
    AwaitNeighbor {
        port: u16,
        next_hop: IpAddr,
    },
}

/// Scheduler state of one service on this worker.
struct ServiceState {
    v4: Scheduler,
    v6: Scheduler,
    /// Clients of this shard per gateway (least-connections input).
    active: Vec<u32>,
}

/// One worker's pipeline: its snapshot, affinity shard, scheduler state and counters.
pub struct Pipeline {
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
    misses: ReportRing<IpAddr>,
    heard: ReportRing<Heard>,
    /// Affinity changes for an HA peer (disabled without one).
    changes: ChangeLog,
    /// Whether the fast paths run (see [`Pipeline::set_fast_path`]).
    fast: bool,
    /// Software steering, where this worker must hand other workers' clients over.
    steer: Option<Steer>,
    /// Hardware steering: only ICMP errors are handed over (see
    /// [`Pipeline::set_error_steering`]).
    error_steer: Option<Steer>,
    /// The burst in hand was handed over by another worker: it is ours, steering or not.
    handed_over: bool,
    /// The head of the frame in hand as received, when it may be too big for its egress.
    saved: egress::SavedHead,
    /// The budget of ICMP errors about packets too big.
    too_big_budget: egress::ErrorBudget,
    /// Remaps completed since the last [`Pipeline::drain_finished_remaps`], oldest first.
    finished: Vec<RemapProgress>,
}

/// Software steering as one worker sees it.
struct Steer {
    steering: Steering,
    /// This worker's index in `steering`'s redirection table.
    me: u16,
}

/// Reports for the control plane's neighbor cache: destinations whose next hop had no MAC
/// (to resolve), neighbors heard asking for our addresses (to learn). Fixed size and
/// overwrite-free: when full, further reports are only counted (the control plane drains it
/// every loop, and one report of each is enough).
struct ReportRing<T> {
    items: [T; REPORT_RING],
    len: usize,
    lost: u64,
}

/// Reports of each kind a worker remembers between two drains.
const REPORT_RING: usize = 16;

impl<T: Copy + PartialEq> ReportRing<T> {
    fn new(fill: T) -> Self {
        ReportRing {
            items: [fill; REPORT_RING],
            len: 0,
            lost: 0,
        }
    }

    fn push(&mut self, a: T) {
        if self.items[..self.len].contains(&a) {
            return;
        }
        match self.items.get_mut(self.len) {
            Some(slot) => {
                *slot = a;
                self.len += 1;
            }
            None => self.lost += 1,
        }
    }

    /// Hands over what was reported since the last call; returns how many more were lost.
    fn drain(&mut self, mut f: impl FnMut(T)) -> u64 {
        for a in &self.items[..self.len] {
            f(*a);
        }
        self.len = 0;
        std::mem::take(&mut self.lost)
    }
}

impl Pipeline {
    /// Creates a worker; its affinity shard is allocated now, at full capacity.
    ///
    /// Its affinity hash has the fixed, public key ([`HashKey::FIXED`]): the same layout on
    /// every run, for replay and tests. The daemon passes a key drawn at start to
    /// [`Self::new_advised`].
    pub fn new(snap: Arc<Snapshot>) -> Pipeline {
        Self::new_advised(snap, HashKey::FIXED, &mut |_, _| {})
    }

    /// [`new`](Self::new) with the affinity hash keyed by `hash_key`, handing the affinity
    /// shard's memory to `advise(address, bytes)` before it is first written (see
    /// [`AffinityShard::try_new_advised`]).
    pub fn new_advised(
        snap: Arc<Snapshot>,
        hash_key: HashKey,
        advise: &mut dyn FnMut(usize, usize),
    ) -> Pipeline {
        let a = snap.spec.affinity;
        let shard = match AffinityShard::try_new_advised(a.capacity, a.max_unconfirmed, advise) {
            Ok(s) => s
                .with_hash_key(hash_key)
                .with_prefix_quota(a.prefix_quota()),
            Err(_) => std::alloc::handle_alloc_error(std::alloc::Layout::new::<AffinityShard>()),
        };
        let mut w = Pipeline {
            st: State {
                shard,
                services: Vec::new(),
                counters: WorkerCounters::default(),
                sni: SniStats::new(32),
                misses: ReportRing::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED)),
                heard: ReportRing::new(Heard {
                    interface: 0,
                    address: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
                    mac: EthernetAddress([0; 6]),
                }),
                changes: ChangeLog::default(),
                fast: true,
                steer: None,
                error_steer: None,
                handed_over: false,
                saved: egress::SavedHead::new(),
                too_big_budget: egress::ErrorBudget::new(),
                finished: Vec::new(),
            },
            plans: [Plan::ToControl; MAX_BURST],
            snap: Arc::clone(&snap),
        };
        w.adopt(snap);
        w
    }

    /// Switches to a new snapshot (between bursts). Scheduler state is rebuilt; active-client
    /// counts are kept where the service and gateway lists kept their shape. A snapshot of
    /// another shape comes with a reload, through [`Self::begin_remap`]; here (the first
    /// snapshot, or a caller's mistake) the counts are recounted from the shard, which walks
    /// it unless it is empty.
    pub fn adopt(&mut self, snap: Arc<Snapshot>) {
        let st = &mut self.st;
        let same_shape = st.services.len() == snap.services.len()
            && st
                .services
                .iter()
                .zip(&snap.services)
                .all(|(s, v)| s.active.len() == v.spec.gateways.len());
        let mut services = service_states(&snap);
        if same_shape {
            for (new, old) in services.iter_mut().zip(&st.services) {
                new.active.clone_from(&old.active);
            }
        } else if !st.shard.is_empty() {
            for (k, v) in st.shard.iter() {
                if let Some(c) = active_slot(&mut services, &k, v.gateway) {
                    *c += 1;
                }
            }
        }
        self.install(snap, services);
    }

    /// Takes `snap` with scheduler state `services`, and sizes the counters to it.
    fn install(&mut self, snap: Arc<Snapshot>, services: Vec<ServiceState>) {
        let st = &mut self.st;
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

    /// Steers in software (for ports whose NICs cannot hash on the client address alone):
    /// pass 1 gives a frame whose client `steering` assigns to another worker
    /// [`Verdict::HandOff`], from the same parse that plans it, before anything is counted or
    /// changed. `me` is this worker's index. `None` (the default) hands nothing over.
    pub fn set_steering(&mut self, steering: Option<Steering>, me: u16) {
        self.st.steer = steering.map(|steering| Steer { steering, me });
    }

    /// With hardware steering (the NICs hash clients onto workers, see `steer`): ICMP and
    /// ICMPv6 errors, which a NIC hashes on a router's address, are handed to the worker
    /// owning the quoted packet's client ([`Verdict::HandOff`]); nothing else is. `me` is
    /// this worker's index. Without it (`None`, the default) an error landing on another
    /// worker than its client's finds no flow there.
    pub fn set_error_steering(&mut self, steering: Option<Steering>, me: u16) {
        self.st.error_steer = steering.map(|steering| Steer { steering, me });
    }

    /// Turns the fast paths off (or on again; they are on by default): every frame then goes
    /// the general way. Verdicts, frames, counters and affinity changes are the same either
    /// way (the differential tests and the pipeline fuzz target hold the fast paths to that);
    /// this is for those tests and for ruling the fast paths out while investigating.
    pub fn set_fast_path(&mut self, on: bool) {
        self.st.fast = on;
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
        let mut c = WorkerCounters::default();
        self.counters_into(&mut c);
        c
    }

    /// [`Self::counters`] into `out`, reusing its allocations (see
    /// [`WorkerCounters::copy_into`]).
    pub fn counters_into(&self, out: &mut WorkerCounters) {
        self.st.counters.copy_into(out);
        out.affinity = self.st.shard.counters();
    }

    pub fn sni_stats(&self) -> &SniStats {
        &self.st.sni
    }

    pub fn affinity(&self) -> &AffinityShard {
        &self.st.shard
    }

    /// Hands over the destinations that could not be reached for want of a neighbor entry
    /// since the last call (each once), and returns how many more were not remembered.
    pub fn drain_neighbor_misses(&mut self, f: impl FnMut(IpAddr)) -> u64 {
        self.st.misses.drain(f)
    }

    /// Hands over the neighbors heard asking for our addresses since the last call (ARP
    /// requests and neighbor solicitations answered here), for the control plane's cache to
    /// learn under its rules; returns how many more were not remembered.
    pub fn drain_heard_neighbors(&mut self, f: impl FnMut(Heard)) -> u64 {
        self.st.heard.drain(f)
    }

    /// Keeps a frame given [`Verdict::AwaitNeighbor`] in `held` until its neighbor resolves;
    /// counted as held. When refused (the bounds), it comes back, counted as dropped
    /// (`neighbor-hold-full`): the caller frees it.
    pub fn hold<F: Frame>(
        &mut self,
        held: &mut HoldQueue<F>,
        port: u16,
        next_hop: IpAddr,
        frame: F,
        now_ms: u64,
    ) -> Option<F> {
        match held.hold(port, next_hop, frame, now_ms) {
            Ok(()) => {
                self.st.counters.neighbor_held += 1;
                None
            }
            Err(frame) => {
                self.st.counters.drop(DropReason::NeighborHoldFull);
                Some(frame)
            }
        }
    }

    /// Sends the held frames whose neighbor the current snapshot knows (call after adopting
    /// one): the destination MAC filled in, in the order they came, through `send(port, frame,
    /// cut)`; counted as transmitted. `cut` is `Some(mtu)` for a frame longer than its port's
    /// MTU that may be fragmented: send its fragments, as for [`Verdict::Fragment`].
    pub fn release_held<F: Frame>(
        &mut self,
        held: &mut HoldQueue<F>,
        mut send: impl FnMut(u16, F, Option<u16>),
    ) {
        let (snap, c) = (&self.snap, &mut self.st.counters);
        held.release(
            |n| snap.neighbor(n),
            |port, mut frame, mac| {
                // Every held frame has its Ethernet header: the fill cannot fail.
                let _ = hold::fill_destination(&mut frame, mac);
                c.neighbor_released += 1;
                if egress::fits(snap, port, frame.bytes()) {
                    c.tx_packets += 1;
                    c.tx_bytes += frame.bytes().len() as u64;
                    send(port, frame, None);
                    return;
                }
                let mtu = egress::port_mtu(snap, port);
                match crate::fragment::Fragments::plan(frame.bytes(), mtu) {
                    Ok(f) => {
                        c.mtu.fragmented += 1;
                        c.mtu.fragments += f.count() as u64;
                        c.tx_packets += f.count() as u64;
                        c.tx_bytes += f.total_len() as u64;
                        send(port, frame, Some(mtu));
                    }
                    // Not cut when held (see pass 2) and no longer cuttable: dropped, counted
                    // (the frame goes with the closure's end).
                    Err(_) => c.drop(DropReason::MtuExceeded),
                }
            },
        );
    }

    /// Hands the frames held longer than the resolution time to `free`, counted as dropped
    /// (`neighbor-hold-timeout`). One compare until the earliest deadline.
    pub fn expire_held<F>(&mut self, held: &mut HoldQueue<F>, now_ms: u64, free: impl FnMut(F)) {
        let n = held.expire(now_ms, free);
        self.st.counters.drops[DropReason::NeighborHoldTimeout as usize] += n as u64;
    }

    /// Removes the affinity entries of `client` (all entries when `None`), for the operator's
    /// `affinity flush`; the clients are scheduled afresh on their next packet. Returns how
    /// many entries went. One client: O(services), a few index probes. All: O(1) here, a flush
    /// ([`Self::begin_flush`]): the entries are gone for every lookup at once, and their
    /// memory is reclaimed a bounded slice per burst.
    pub fn flush_affinity(&mut self, client: Option<IpAddr>) -> usize {
        let Some(client) = client else {
            return self.begin_flush();
        };
        let mut removed = 0;
        for key in self.client_keys(client) {
            self.settle(&key);
            let st = &mut self.st;
            let hash = st.shard.hash(&key);
            if let Some(r) = st.shard.remove(&key, hash) {
                forget(&mut st.services, &mut st.changes, &r);
                removed += 1;
            }
        }
        removed
    }

    /// Flushes every affinity entry: they are gone for every lookup at once (their clients
    /// are scheduled afresh), and the slots are reclaimed by [`Self::remap_step`], a bounded
    /// slice per burst. Returns how many entries the flush removes. O(1), plus completing a
    /// remap still running (see [`AffinityShard::begin_remap`]).
    pub fn begin_flush(&mut self) -> usize {
        self.finish_remap();
        let n = self.st.shard.len();
        for s in &mut self.st.services {
            s.active.fill(0);
        }
        self.st.finished.reserve(1);
        let _ = self.st.shard.begin_remap(Remap::flush(), |_| {});
        n
    }

    /// The affinity entries of `client` (expired ones not reclaimed yet included), one per
    /// service and kind (NAT-mode, redirected): O(services) index probes, never a walk.
    pub fn client_entries(
        &mut self,
        client: IpAddr,
        mut f: impl FnMut(AffinityKey, AffinityValue),
    ) {
        for key in self.client_keys(client) {
            self.settle(&key);
            let hash = self.st.shard.hash(&key);
            if let Some(v) = self.st.shard.peek(&key, hash) {
                f(key, v);
            }
        }
    }

    /// Every key `client` can have under the current snapshot.
    fn client_keys(&self, client: IpAddr) -> impl Iterator<Item = AffinityKey> {
        let n = u16::try_from(self.snap.services.len()).unwrap_or(u16::MAX);
        (0..n).flat_map(move |s| {
            let key = affinity_key(client, s);
            [key, key.direct()]
        })
    }

    /// A running remap's translation of `key`'s old entries, now (see
    /// [`AffinityShard::settle`]).
    fn settle(&mut self, key: &AffinityKey) {
        self.st.settle(key);
    }

    /// Starts re-keying the affinity entries for a reloaded configuration whose services or
    /// gateways moved, and adopts `snap`, the snapshot `remap`'s new ids refer to. O(services
    /// x gateways): the active-client counts are carried over through `remap`, and the entries
    /// are translated by [`Self::remap_step`] (a bounded slice per burst) or when a packet
    /// needs one first. An entry whose service or gateway is gone is removed (its client is
    /// scheduled afresh). Cannot fail. The result arrives in [`Self::drain_finished_remaps`].
    /// A remap still running is completed first (a walk of what it has left of the table).
    pub fn begin_remap(&mut self, snap: Arc<Snapshot>, remap: Remap) {
        self.finish_remap();
        let mut services = service_states(&snap);
        for (old_s, state) in (0..=u16::MAX).zip(&self.st.services) {
            for (old_g, &n) in (0..=u16::MAX).zip(&state.active) {
                let Some((s, g)) = remap.to(old_s, old_g) else {
                    continue;
                };
                let new = services.get_mut(usize::from(s));
                if let Some(c) = new.and_then(|v| v.active.get_mut(usize::from(g))) {
                    *c += n;
                }
            }
        }
        self.st.finished.reserve(1);
        let _ = self.st.shard.begin_remap(remap, |_| {});
        self.install(snap, services);
    }

    /// One bounded slice ([`REMAP_BUDGET_PER_BURST`]) of the running remap; `process_burst`
    /// does one per burst, and an idle worker loop should call this. True while a remap runs.
    pub fn remap_step(&mut self) -> bool {
        self.st.remap_step(REMAP_BUDGET_PER_BURST)
    }

    /// Completes the running remap at once: a walk of what it has left of the table, for
    /// tests, tools and a remap that begins before the previous one is done.
    pub fn finish_remap(&mut self) {
        while self.st.remap_step(usize::MAX) {}
    }

    /// The running remap's progress, if any.
    pub fn remap_progress(&self) -> Option<RemapProgress> {
        self.st.shard.remap_progress()
    }

    /// Hands over the results of the remaps completed since the last call, oldest first
    /// (remaps complete in the order they began).
    pub fn drain_finished_remaps(&mut self, f: impl FnMut(RemapProgress)) {
        self.st.finished.drain(..).for_each(f);
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
        st.settle(&c.key);
        let hash = st.shard.hash(&c.key);
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
                    // Over this appliance's prefix quota (its hash key differs from the
                    // master's, so its counters collide differently): left unconfirmed.
                    let _ = e.confirm();
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
            InsertOutcome::Full | InsertOutcome::PrefixQuota => return false,
        }
        if let Some(n) = active_slot(&mut st.services, &c.key, gateway) {
            *n += 1;
        }
        true
    }

    /// Active clients of this worker per service and gateway.
    pub fn active_clients(&self) -> Vec<Vec<u32>> {
        let mut v = Vec::new();
        self.active_clients_into(&mut v);
        v
    }

    /// [`Self::active_clients`] into `out`, reusing its allocations once the shapes match.
    pub fn active_clients_into(&self, out: &mut Vec<Vec<u32>>) {
        out.resize_with(self.st.services.len(), Vec::new);
        out.truncate(self.st.services.len());
        for (o, s) in out.iter_mut().zip(&self.st.services) {
            o.clone_from(&s.active);
        }
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
        if self.st.shard.remapping() {
            self.st.remap_step(REMAP_BUDGET_PER_BURST);
        }
    }

    /// [`Self::process_burst`] for frames another worker handed over (software steering):
    /// they are this worker's by construction and are never handed on, whatever a snapshot
    /// adopted since would say.
    pub fn process_handed_over<F: Frame>(
        &mut self,
        now: u32,
        rx_port: u16,
        frames: &mut [F],
        verdicts: &mut [Verdict],
    ) {
        self.st.handed_over = true;
        self.process_burst(now, rx_port, frames, verdicts);
        self.st.handed_over = false;
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
        // Where each packet's entry probably is (the second prefetch stage found it).
        let mut hints = [affinity::NO_HINT; MAX_BURST];
        for (i, (frame, plan)) in frames[..n].iter().zip(self.plans.iter_mut()).enumerate() {
            let bytes = frame.bytes();
            rx_bytes += bytes.len() as u64;
            let hash = st.plan(snap, rx_port, bytes, frame.rx_ipv4_checksum_good(), plan);
            if let Some(h) = hash {
                st.shard.prefetch(h);
            }
            if let Some(slot) = hashes.get_mut(i) {
                *slot = hash;
            }
            // Second stage, ENTRY_AHEAD packets behind: that bucket has had time to arrive.
            if let Some(j) = i.checked_sub(ENTRY_AHEAD) {
                if let (Some(Some(h)), Some(hint)) = (hashes.get(j), hints.get_mut(j)) {
                    *hint = st.shard.prefetch_entry(*h);
                }
            }
        }
        for j in n.saturating_sub(ENTRY_AHEAD)..n {
            if let (Some(Some(h)), Some(hint)) = (hashes.get(j), hints.get_mut(j)) {
                *hint = st.shard.prefetch_entry(*h);
            }
        }
        // Pass 2: decide and rewrite.
        let (mut tx_packets, mut tx_bytes) = (0u64, 0u64);
        let (mut handed_packets, mut handed_bytes) = (0u64, 0u64);
        for (((frame, plan), verdict), &hint) in frames[..n]
            .iter_mut()
            .zip(&self.plans)
            .zip(verdicts)
            .zip(&hints)
        {
            // Only a frame longer than the smallest MTU may need the egress check, which
            // needs the frame as received.
            let big = egress::may_exceed(snap, frame.bytes().len());
            if big {
                st.saved.save(frame.bytes());
            }
            let mut v = st.act(snap, now, plan, hint, frame);
            match (big, v) {
                (true, Verdict::Tx { port }) => {
                    v = st.egress(snap, now, rx_port, port, plan, frame)
                }
                // Held for its neighbor: one that may not be cut gets its ICMP error now (that
                // goes back where it came from); one that may waits whole, and is cut when sent
                // (`release_held`).
                (true, Verdict::AwaitNeighbor { port, .. })
                    if !egress::fits(snap, port, frame.bytes())
                        && !egress::may_fragment(frame.bytes()) =>
                {
                    v = st.egress(snap, now, rx_port, port, plan, frame);
                }
                _ => {}
            }
            match v {
                Verdict::Tx { .. } => {
                    tx_packets += 1;
                    tx_bytes += frame.bytes().len() as u64;
                }
                // Its fragments were counted as transmitted when they were planned.
                Verdict::Fragment { .. } => {}
                Verdict::ToControl => st.counters.to_control += 1,
                Verdict::Drop(r) => st.counters.drop(r),
                Verdict::HandOff { .. } => {
                    handed_packets += 1;
                    handed_bytes += frame.bytes().len() as u64;
                }
                // Counted when held, sent or dropped (`Pipeline::hold`).
                Verdict::AwaitNeighbor { .. } => {}
            }
            *verdict = v;
        }
        // What was handed over is the owner's to count.
        st.counters.rx_packets += n as u64 - handed_packets;
        st.counters.rx_bytes += rx_bytes - handed_bytes;
        st.counters.tx_packets += tx_packets;
        st.counters.tx_bytes += tx_bytes;
    }
}

impl State {
    /// Software steering, unless off or the burst was handed over.
    #[inline(always)]
    fn steer(&self) -> Option<&Steer> {
        self.steer.as_ref().filter(|_| !self.handed_over)
    }

    /// Pass 2: carries out one frame's plan (`parse` made it), in place.
    // Always inlined: its one call site is the burst loop, whose hot path it is (out of line
    // it cost ~55 instructions a packet in spills and argument passing, perf/instructions.sh).
    #[inline(always)]
    fn act<F: Frame>(
        &mut self,
        snap: &Snapshot,
        now: u32,
        plan: &Plan,
        hint: u32,
        frame: &mut F,
    ) -> Verdict {
        match *plan {
            Plan::Drop(r) => Verdict::Drop(r),
            Plan::ToControl => Verdict::ToControl,
            Plan::HandOff(worker) => Verdict::HandOff { worker },
            Plan::ArpReply { interface, l3 } => {
                self.counters.arp_replies += 1;
                arp_reply(snap, interface, l3, frame, &mut self.heard)
            }
            Plan::NdAdvert {
                interface,
                l3,
                router,
            } => {
                self.counters.nd_replies += 1;
                nd_advert(snap, interface, l3, router, frame, &mut self.heard)
            }
            Plan::EchoReply { interface, l3 } => {
                self.counters.echo_replies += 1;
                echo_reply(snap, interface, l3, frame)
            }
            Plan::Flow(ref f) if f.direct => self.route(snap, now, f, frame),
            Plan::Flow(ref f) => self.forward(snap, now, f, hint, frame),
            Plan::IcmpError(e) => self.forward_icmp_error(snap, now, e, frame),
            Plan::Redirect(ref r) => self.redirect(snap, now, r, frame),
            Plan::RoutedIcmp(r) => self.route_icmp(snap, now, r, frame),
        }
    }
}

#[inline(always)]
/// Scheduler state for `snap`'s services, with no active clients.
fn service_states(snap: &Snapshot) -> Vec<ServiceState> {
    snap.services
        .iter()
        .map(|v| ServiceState {
            v4: v.v4.scheduler.clone(),
            v6: v.v6.scheduler.clone(),
            active: vec![0; v.spec.gateways.len()],
        })
        .collect()
}

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::VecFrame;
    use crate::model::AffinitySpec;
    use crate::nat::L4Checksum;
    use crate::testkit::lab::{self, appliance_spec};
    use crate::testkit::{self, Ipv4Opts, L2, L4};
    use parse::Flow;
    use parse::Proof;
    use proptest::prelude::*;

    fn worker() -> Pipeline {
        // Building a snapshot builds its Maglev tables: once for all tests.
        static SNAP: std::sync::OnceLock<Arc<Snapshot>> = std::sync::OnceLock::new();
        let snap = SNAP.get_or_init(|| {
            let spec = appliance_spec(AffinitySpec {
                capacity: 4096,
                max_unconfirmed: 1024,
                ..AffinitySpec::default()
            });
            Arc::new(Snapshot::build(spec, 1).unwrap())
        });
        Pipeline::new(Arc::clone(snap))
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
        let esp = testkit::esp_payload(0x1234, 1, 60);
        fn udp(src: u16, dst: u16, payload: &[u8]) -> L4<'_> {
            L4::Udp { src, dst, payload }
        }
        let mut v = Vec::new();
        for i in 1..6 {
            let l4 = udp(4500, 4500, &esp);
            v.push(testkit::ipv4(
                &l2,
                client4(i),
                lab::VIP_V4,
                &Ipv4Opts::default(),
                &l4,
            ));
            v.push(testkit::ipv6(&l2, &client6(i), &lab::VIP_V6, 64, &[], &l4));
        }
        let ttl1 = Ipv4Opts {
            ttl: 1,
            ..Ipv4Opts::default()
        };
        let hello = testkit::tls_client_hello(Some("vpn.example.net"));
        let tcp = L4::Tcp {
            src: 50_000,
            dst: 443,
            seq: 1,
            ack: 0,
            flags: testkit::tcp_flags::ACK,
            payload: &hello,
        };
        v.push(testkit::ipv4(
            &l2,
            client4(7),
            lab::VIP_V4,
            &ttl1,
            &udp(4500, 4500, &esp),
        ));
        v.push(testkit::ipv4(
            &l2,
            client4(8),
            lab::VIP_V4,
            &Ipv4Opts::default(),
            &tcp,
        ));
        v.push(testkit::ipv4(
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
        v.push(testkit::ipv4(
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
        v.push(testkit::arp(
            &arp_l2,
            1,
            lab::ROUTER_MAC,
            lab::ROUTER_V4,
            crate::wire::ethernet::EthernetAddress([0; 6]),
            lab::VIP_V4,
        ));
        // Spoofed source, not a VIP, garbage.
        v.push(testkit::ipv4(
            &l2,
            lab::VIP_V4,
            lab::VIP_V4,
            &Ipv4Opts::default(),
            &udp(4500, 4500, &esp),
        ));
        v.push(testkit::ipv4(
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
        let esp = testkit::esp_payload(0x5678, 1, 60);
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
                v.push(testkit::ipv4(
                    &l2,
                    lab::GATEWAYS_V4[g],
                    c,
                    &Ipv4Opts::default(),
                    &l4,
                ));
                v.push(testkit::ipv6(
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
        v.push(testkit::ipv4(
            &l2,
            stranger,
            client4(1),
            &Ipv4Opts::default(),
            &l4,
        ));
        v
    }

    /// The responder SPI every gateway picks for client `i`'s IKE SA in these tests.
    fn spi_r(i: u8) -> u64 {
        0x5151_0000_0000_0000 | u64::from(i)
    }

    /// Gateway-side IKE_SA_INIT responses from every gateway to clients 1-3 (IPv4): only the
    /// client's own gateway's counts.
    fn ike_answers() -> Vec<Vec<u8>> {
        let mut v = Vec::new();
        for g in 0..3 {
            let l2 = L2::new(lab::GATEWAY_MACS[g], lab::BACKEND_PORT_MAC);
            for i in 1..4 {
                let resp =
                    testkit::ike_sa_init_response(u64::from(i), spi_r(i), &[7; 32], 19, 64, &[]);
                let l4 = L4::Udp {
                    src: 500,
                    dst: 500,
                    payload: &resp,
                };
                v.push(testkit::ipv4(
                    &l2,
                    lab::GATEWAYS_V4[g],
                    client4(i),
                    &Ipv4Opts::default(),
                    &l4,
                ));
            }
        }
        v
    }

    /// Client-side IKE_AUTH requests of clients 1-3, carrying their responder SPIs.
    fn ike_echoes() -> Vec<Vec<u8>> {
        let l2 = L2::new(lab::ROUTER_MAC, lab::CLIENT_PORT_MAC);
        (1..4)
            .map(|i| {
                let auth = testkit::ike_message(
                    u64::from(i),
                    spi_r(i),
                    crate::wire::ike::exchange::IKE_AUTH,
                    crate::wire::ike::flags::INITIATOR,
                    1,
                    &[0x42; 80],
                );
                let l4 = L4::Udp {
                    src: 500,
                    dst: 500,
                    payload: &auth,
                };
                testkit::ipv4(&l2, client4(i), lab::VIP_V4, &Ipv4Opts::default(), &l4)
            })
            .collect()
    }

    /// Runs `frames` through `w` as bursts on `port`, returning verdicts and output bytes.
    fn run_burst(w: &mut Pipeline, port: u16, frames: &[Vec<u8>]) -> Vec<(Verdict, Vec<u8>)> {
        let mut out = Vec::new();
        for chunk in frames.chunks(MAX_BURST) {
            let mut f: Vec<VecFrame> = chunk.iter().map(|b| VecFrame::new(b)).collect();
            let mut v = vec![Verdict::ToControl; f.len()];
            w.process_burst(100, port, &mut f, &mut v);
            out.extend(v.into_iter().zip(f.iter().map(|f| f.bytes().to_vec())));
        }
        out
    }

    fn run_single(w: &mut Pipeline, port: u16, frames: &[Vec<u8>]) -> Vec<(Verdict, Vec<u8>)> {
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
    /// backup the master's established entries (clients, gateways, confirmation); entries not
    /// established yet never travel, and a client's later packets cost no change until its
    /// expiry moves by a refresh step.
    #[test]
    fn recorded_changes_rebuild_the_table_on_a_peer() {
        /// The established (confirmed) entries: all a peer is told about.
        fn table(w: &Pipeline) -> Vec<(AffinityKey, u16, bool)> {
            let mut t: Vec<_> = w
                .affinity()
                .iter()
                .filter(|(_, v)| v.confirmed)
                .map(|(k, v)| (k, v.gateway, v.confirmed))
                .collect();
            t.sort_by_key(|(k, _, _)| (k.client, k.service));
            t
        }
        fn ship(master: &mut Pipeline, backup: &mut Pipeline) -> usize {
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
        assert!(!master.affinity().is_empty());
        assert_eq!(
            ship(&mut master, &mut backup),
            0,
            "entries not established are no news"
        );
        assert!(backup.affinity().is_empty());
        assert_eq!(table(&backup), table(&master));
        // Gateways answer (their answers alone establish no one), clients echo what only the
        // answers showed: establishments travel.
        run_burst(&mut master, 1, &from_gateways());
        assert_eq!(
            ship(&mut master, &mut backup),
            0,
            "answers alone are no news"
        );
        assert!(!table(&master).iter().any(|(_, _, confirmed)| *confirmed));
        run_burst(&mut master, 1, &ike_answers());
        run_burst(&mut master, 0, &ike_echoes());
        assert!(ship(&mut master, &mut backup) > 0);
        assert_eq!(table(&backup), table(&master));
        assert!(table(&backup).iter().any(|(_, _, confirmed)| *confirmed));
        assert!(
            backup.affinity().iter().all(|(_, v)| v.confirmed),
            "the backup holds established entries only"
        );
        // The same packets again, same second: nothing new.
        run_burst(&mut master, 0, &from_clients());
        assert_eq!(ship(&mut master, &mut backup), 0);
        // A flush travels as deletes of the established entries it removes; the backup records
        // nothing of its own.
        let established = table(&master).len();
        let n = master.flush_affinity(Some(IpAddr::V4(client4(1))));
        assert!(n > 0);
        let gone = established - table(&master).len();
        assert_eq!(ship(&mut master, &mut backup), gone);
        assert_eq!(table(&backup), table(&master));
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
            proof: Proof::None,
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

    fn handed_off(v: &Verdict) -> bool {
        matches!(v, Verdict::HandOff { .. })
    }

    /// A worker's state as the differential test compares it: the table, in slot order.
    fn table(w: &Pipeline) -> Vec<(AffinityKey, AffinityValue)> {
        w.affinity().iter().collect()
    }

    /// Changes recorded for an HA peer since the last call.
    fn changes(w: &mut Pipeline) -> Vec<AffinityChange> {
        let mut v = Vec::new();
        let lost = w.drain_changes(|c| v.push(c));
        assert_eq!(lost, 0);
        v
    }

    #[test]
    fn counters_are_copied_without_allocating_again() {
        let mut w = worker();
        run_burst(&mut w, 0, &from_clients());
        run_burst(&mut w, 1, &from_gateways());
        let (mut counters, mut active) = (WorkerCounters::default(), Vec::new());
        w.counters_into(&mut counters);
        w.active_clients_into(&mut active);
        assert_eq!(counters, w.counters());
        assert_eq!(active, w.active_clients());
        let buffers = (
            counters.gateways.as_ptr(),
            counters.gateways[0].as_ptr(),
            active[0].as_ptr(),
        );
        run_burst(&mut w, 0, &from_clients());
        w.counters_into(&mut counters);
        w.active_clients_into(&mut active);
        assert_eq!(counters, w.counters());
        assert_eq!(active, w.active_clients());
        assert_eq!(
            buffers,
            (
                counters.gateways.as_ptr(),
                counters.gateways[0].as_ptr(),
                active[0].as_ptr()
            )
        );
    }

    #[test]
    fn the_fast_path_takes_the_common_traffic() {
        // Clients, then their gateways' answers, then the clients again: after the first
        // round every client is established, and the fast path must have carried the rest.
        let (mut fast, mut general) = (worker(), worker());
        general.set_fast_path(false);
        for w in [&mut fast, &mut general] {
            run_burst(w, 0, &from_clients());
            run_burst(w, 1, &from_gateways());
        }
        let (a, b) = (
            run_burst(&mut fast, 0, &from_clients()),
            run_burst(&mut general, 0, &from_clients()),
        );
        assert_eq!(a, b);
        assert_eq!(fast.counters(), general.counters());
        assert!(forwarded(&a) >= 10, "the clients' ESP is forwarded");
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

        /// Software steering from pass 1 hands over exactly the frames whose client the
        /// steering table gives another worker (by `Steering::owner`, as the daemon did before
        /// the pipeline took it over), untouched and uncounted; the rest are processed exactly
        /// as an unsteered worker processes them alone.
        #[test]
        fn steering_hands_over_other_workers_clients(
            port in 0u16..2,
            workers in 2u16..5,
            me in 0u16..5,
            fast in any::<bool>(),
            picks in proptest::collection::vec((any::<prop::sample::Index>(), any::<prop::sample::Index>(), any::<u8>(), any::<bool>()), 1..64),
        ) {
            let me = me % workers;
            let templates = if port == 0 { from_clients() } else { from_gateways() };
            let frames: Vec<Vec<u8>> = picks
                .iter()
                .map(|(t, at, byte, damage)| {
                    let mut f = t.get(&templates).clone();
                    if *damage {
                        let i = at.index(f.len());
                        f[i] = *byte;
                    }
                    f
                })
                .collect();
            let steering = Steering::new(workers);
            let role = if port == 0 { crate::model::Role::Client } else { crate::model::Role::Backend };
            let (mut steered, mut alone) = (worker(), worker());
            steered.set_steering(Some(steering.clone()), me);
            steered.set_fast_path(fast);
            let out = run_burst(&mut steered, port, &frames);
            let mut mine = Vec::new();
            for (frame, (verdict, bytes)) in frames.iter().zip(&out) {
                match steering.owner(frame, role) {
                    Some(w) if w != me => {
                        prop_assert_eq!(*verdict, Verdict::HandOff { worker: w });
                        prop_assert_eq!(bytes, frame);
                    }
                    _ => {
                        prop_assert!(!handed_off(verdict));
                        mine.push(frame.clone());
                    }
                }
            }
            let kept: Vec<_> = out.into_iter().filter(|(v, _)| !handed_off(v)).collect();
            prop_assert_eq!(kept, run_burst(&mut alone, port, &mine));
            prop_assert_eq!(steered.counters(), alone.counters());
            // Handed-over frames are the receiver's own, whatever the table says.
            let mut handed = vec![Verdict::ToControl; frames.len().min(MAX_BURST)];
            let mut f: Vec<VecFrame> = frames.iter().take(MAX_BURST).map(|b| VecFrame::new(b)).collect();
            steered.process_handed_over(100, port, &mut f, &mut handed);
            prop_assert!(!handed.iter().any(handed_off));
        }

        /// The fast paths change the cost, never the outcome: bursts of lab traffic from both
        /// sides, damaged or not, over a clock that lets entries expire, give the same
        /// verdicts, frames, counters, affinity tables and HA changes with them as without.
        #[test]
        fn the_fast_path_changes_nothing(
            bursts in proptest::collection::vec(
                (
                    0u16..2,
                    0u32..40,
                    proptest::collection::vec(
                        (any::<prop::sample::Index>(), any::<prop::sample::Index>(), any::<u8>(), 0usize..40, any::<bool>()),
                        1..40,
                    ),
                ),
                1..8,
            ),
        ) {
            let (mut fast, mut general) = (worker(), worker());
            general.set_fast_path(false);
            for w in [&mut fast, &mut general] {
                w.record_changes(4096);
            }
            let (clients, gateways) = (from_clients(), from_gateways());
            let mut now = 100;
            for (port, tick, picks) in &bursts {
                now += tick;
                let templates = if *port == 0 { &clients } else { &gateways };
                let frames: Vec<VecFrame> = picks
                    .iter()
                    .map(|(t, at, byte, cut, damage)| {
                        let mut f = t.get(templates).clone();
                        if *damage {
                            let i = at.index(f.len());
                            f[i] = *byte;
                            f.truncate(f.len().saturating_sub(*cut % 8 * (*cut / 8 % 2)));
                        }
                        VecFrame::new(&f)
                    })
                    .collect();
                let mut results = Vec::new();
                for w in [&mut fast, &mut general] {
                    let mut f = frames.clone();
                    let mut v = vec![Verdict::ToControl; f.len()];
                    w.process_burst(now, *port, &mut f, &mut v);
                    results.push((v, f));
                }
                prop_assert_eq!(&results[0], &results[1]);
                prop_assert_eq!(fast.counters(), general.counters());
                prop_assert_eq!(table(&fast), table(&general));
                prop_assert_eq!(changes(&mut fast), changes(&mut general));
                prop_assert_eq!(fast.active_clients(), general.active_clients());
            }
        }
    }
}
