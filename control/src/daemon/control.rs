//! The control thread's share of the dataplane: neighbor resolution for the workers, VIP
//! announcements, and snapshot publication.
//!
//! Workers report destinations they could not reach for want of a MAC and hand over ARP replies
//! and neighbor advertisements; this resolves next hops with the [`NeighborCache`], sends ARP
//! requests and neighbor solicitations (through worker 0, which owns TX queues), and publishes a new
//! snapshot whenever the usable neighbor entries change. Workers pick snapshots up between
//! bursts; a worker whose channel is full gets the newest one on a later poll.

use std::collections::{HashSet, VecDeque};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use crossbeam_channel::{Receiver, Sender, TrySendError};
use dataplane::emit::{self, L2};
use dataplane::frame::Frame;
use dataplane::model::{ApplianceSpec, IpCidr, NeighborSpec, Role, Snapshot, SnapshotError};
use dataplane::neighbor::{
    NeighborCache, NeighborCounters, NeighborReport, NeighborTimers, Probe, Refusal,
};
use dataplane::schedule::GatewayState;
use dataplane::wire::arp::{ArpPacket, ArpRepr, ARP_REPLY, ARP_REQUEST};
use dataplane::wire::ethernet::{ethertype, EthernetAddress, EthernetFrame};
use dataplane::wire::icmpv6::{self, icmpv6_type, NdpNeighbor, NdpRepr};
use dataplane::wire::ip_proto;
use dataplane::wire::ipv6::{solicited_node, Ipv6Packet};
use dpdk::{Burst, Mbuf, Mempool, RingConsumer, RingProducer};

use super::exception::{ExceptionCounters, ExceptionError, ExceptionPath};
use super::loglimit::LogLimit;
use serde::Serialize;
use tracing::{debug, info, warn};

/// Why the control thread refused a change.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// The snapshot of the new appliance spec cannot be built (the dataplane says why).
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
    /// No gateway of any service has the name.
    #[error("no gateway is called `{name}`")]
    NoSuchGateway { name: String },
}

/// Counters of the control thread's dataplane work.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ControlCounters {
    /// Frames the workers handed to the control thread.
    pub frames_in: u64,
    /// ARP replies and gratuitous ARP the neighbor cache took (refusals: its counters).
    pub arp_learned: u64,
    /// Neighbor advertisements the neighbor cache took.
    pub nd_learned: u64,
    /// Frames for the appliance itself that the exception path is off for (or not Ethernet).
    pub exception_unhandled: u64,
    pub probes_sent: u64,
    pub announcements_sent: u64,
    /// Frames the control thread could not transmit (no mbuf, full TX ring).
    pub tx_failed: u64,
    pub snapshots_published: u64,
    pub snapshot_errors: u64,
    /// VRRP messages beyond what one control round keeps (a flood).
    pub vrrp_dropped: u64,
}

/// A VRRP message the workers handed over, for the HA module.
#[derive(Clone, Debug)]
pub struct VrrpFrame {
    pub interface: u16,
    pub ttl: u8,
    pub src: IpAddr,
    pub dst: IpAddr,
    /// The VRRP message (the IP payload).
    pub vrrp: Vec<u8>,
}

/// VRRP messages kept between two control rounds at most; more are a flood, dropped.
const VRRP_BACKLOG: usize = 64;

/// What the control thread hands a worker, in order, over one channel per worker.
pub enum Update {
    /// A newer snapshot of the same layout (neighbors, gateway states, weights).
    Snapshot(Arc<Snapshot>),
    /// A reloaded configuration, phase one: keep `snapshot` and `map` (old service, old gateway
    /// → new ids; `None`: gone) for reload `txn`, run nothing new yet, and say so on `ready`.
    Prepare {
        txn: u64,
        snapshot: Arc<Snapshot>,
        map: Arc<IdMap>,
        ready: Sender<()>,
    },
    /// Phase two, sent once every worker is ready: re-key the affinity entries with the
    /// prepared map and adopt the prepared snapshot, in one step between bursts. Answers
    /// (entries moved, entries removed). Snapshots sent after it use the new layout, so the
    /// channel's order is what keeps ids and entries consistent.
    Commit {
        txn: u64,
        reply: Sender<(usize, usize)>,
    },
    /// Phase two when some worker was not ready in time: forget what was prepared.
    Abort { txn: u64 },
}

/// Where a worker answers a reload's commit: (affinity entries moved, entries removed).
pub type ReloadAnswer = Receiver<(usize, usize)>;

/// A reloaded appliance spec, checked and built into a snapshot, not yet applied: nothing the
/// workers or the neighbor cache use has changed.
pub struct StagedReload {
    pub txn: u64,
    spec: ApplianceSpec,
    snapshot: Arc<Snapshot>,
    /// The generation counter when staged: newer snapshots published since (of the old layout)
    /// mean the staged one is followed by a fresh one at commit.
    generation: u64,
}

impl StagedReload {
    pub fn snapshot(&self) -> &Arc<Snapshot> {
        &self.snapshot
    }
}

/// `[old service][old gateway]` → new (service, gateway) ids.
pub type IdMap = Vec<Vec<Option<(u16, u16)>>>;

pub struct Control {
    snap: Arc<Snapshot>,
    base: ApplianceSpec,
    generation: u64,
    neighbors: NeighborCache,
    /// Frames to transmit, handed to worker 0 (the mbuf's port says where).
    tx: RingProducer,
    pool: Mempool,
    /// Frames from the workers: urgent ones, then the rest.
    from_workers: [RingConsumer; 2],
    misses: Receiver<NeighborReport>,
    senders: Vec<Sender<Update>>,
    /// Per worker, updates its channel had no room for yet. Consecutive snapshots collapse
    /// into the newest; reloads are never dropped or reordered.
    pending: Vec<VecDeque<Update>>,
    counters: ControlCounters,
    last_tick_ms: u64,
    health: HealthOverlay,
    exception: Option<ExceptionPath>,
    /// HA pair: whether VRRP has this appliance master (the spec's own flag is the config's).
    ha_master: bool,
    vrrp_in: Vec<VrrpFrame>,
    refusals: RefusalLog,
    /// The last reload transaction's number.
    next_txn: u64,
}

/// Logs refused neighbor answers at most once a second (they are what anyone on a link can
/// send); the counters have every one.
#[derive(Default)]
struct RefusalLog(LogLimit);

impl RefusalLog {
    fn note(&mut self, r: Refusal, address: IpAddr, mac: EthernetAddress, interface: Option<u16>) {
        let Some(suppressed) = self.0.allow(Instant::now()) else {
            return;
        };
        match r {
            // Someone claims an address that belongs to another side or to nobody here.
            Refusal::WrongInterface | Refusal::StaticOverride | Refusal::OffSubnet => warn!(
                reason = r.name(),
                neighbor = %address,
                %mac,
                interface,
                suppressed,
                "neighbor answer refused"
            ),
            // Announcements nobody asked for are ordinary on a busy link, and so is a full
            // cache's refusing requests (a resolution still makes room).
            Refusal::Unsolicited | Refusal::CacheFull => debug!(
                reason = r.name(),
                neighbor = %address,
                %mac,
                interface,
                suppressed,
                "neighbor answer refused"
            ),
        }
    }
}

/// Every interface's connected subnets, for the neighbor cache.
fn subnets(spec: &ApplianceSpec) -> Vec<(u16, IpCidr)> {
    spec.interfaces
        .iter()
        .enumerate()
        .filter_map(|(i, itf)| Some((u16::try_from(i).ok()?, itf)))
        .flat_map(|(i, itf)| itf.addresses.iter().map(move |c| (i, *c)))
        .collect()
}

/// Gateways the health checks have down, and what that means per service.
#[derive(Default)]
struct HealthOverlay {
    /// (service, gateway) names.
    down: HashSet<(String, String)>,
    /// Services whose down gateways keep their clients until they time out.
    keep_clients: HashSet<String>,
}

impl HealthOverlay {
    fn is_down(&self, service: &str, gateway: &str) -> bool {
        // Few gateways are down at a time: a scan beats building an owned key per lookup.
        self.down.iter().any(|(s, g)| s == service && g == gateway)
    }
}

/// The state the workers see for a gateway the health checks have down: no new clients either
/// way; its clients move elsewhere on their next packet (`Down`) unless the service keeps them
/// until they time out (`Draining`). An operator's `Down` stays `Down`.
pub fn health_down_state(admin: GatewayState, keep_clients: bool) -> GatewayState {
    match admin {
        GatewayState::Down => GatewayState::Down,
        _ if keep_clients => GatewayState::Draining,
        _ => GatewayState::Down,
    }
}

/// How often neighbor timers run.
const TICK_MS: u64 = 50;

impl Control {
    pub fn new(
        snap: Arc<Snapshot>,
        tx: RingProducer,
        pool: Mempool,
        from_workers: [RingConsumer; 2],
        misses: Receiver<NeighborReport>,
        senders: Vec<Sender<Update>>,
    ) -> Control {
        let statics = snap.spec.neighbors.iter().map(|n| (n.address, n.mac));
        let mut neighbors = NeighborCache::new(NeighborTimers::default(), statics);
        neighbors.set_subnets(subnets(&snap.spec));
        Control {
            base: snap.spec.clone(),
            generation: snap.generation,
            pending: senders.iter().map(|_| VecDeque::new()).collect(),
            snap,
            neighbors,
            tx,
            pool,
            from_workers,
            misses,
            senders,
            counters: ControlCounters::default(),
            last_tick_ms: 0,
            health: HealthOverlay::default(),
            exception: None,
            ha_master: false,
            vrrp_in: Vec::new(),
            refusals: RefusalLog::default(),
            next_txn: 0,
        }
    }

    pub fn counters(&self) -> ControlCounters {
        self.counters
    }

    /// Hands frames for the appliance itself to the kernel through `path` from now on.
    pub fn set_exception_path(&mut self, path: ExceptionPath) {
        self.exception = Some(path);
    }

    /// Whether the exception path (if any) can follow a reload from `old` to `new`.
    pub fn check_exception_reload(
        &self,
        old: &ApplianceSpec,
        new: &ApplianceSpec,
    ) -> Result<(), ExceptionError> {
        match &self.exception {
            Some(_) => ExceptionPath::check_reload(old, new),
            None => Ok(()),
        }
    }

    /// The exception path's TAPs get `new`'s addresses and routes (all or none).
    pub fn reload_exception(
        &mut self,
        old: &ApplianceSpec,
        new: &ApplianceSpec,
    ) -> Result<(), ExceptionError> {
        match &mut self.exception {
            Some(x) => x.reload(old, new),
            None => Ok(()),
        }
    }

    pub fn exception_counters(&self) -> Option<ExceptionCounters> {
        self.exception.as_ref().map(ExceptionPath::counters)
    }

    pub fn neighbor_counters(&self) -> NeighborCounters {
        self.neighbors.counters()
    }

    pub fn neighbor_view(&self) -> Vec<dataplane::neighbor::NeighborView> {
        self.neighbors.view()
    }

    /// The snapshot the workers run (or are about to).
    pub fn snapshot(&self) -> &Arc<Snapshot> {
        &self.snap
    }

    /// Checks a reloaded appliance spec and builds its snapshot (with the new static neighbors
    /// and subnets, on a copy of the neighbor cache), changing nothing the workers use: a
    /// refusal here leaves everything as it was.
    pub fn stage_reload(&mut self, spec: ApplianceSpec) -> Result<StagedReload, ControlError> {
        let mut neighbors = self.neighbors.clone();
        neighbors.set_statics(spec.neighbors.iter().map(|n| (n.address, n.mac)));
        neighbors.set_subnets(subnets(&spec));
        let mut snap =
            Snapshot::build(self.effective_with(&spec, &neighbors), self.generation + 1)?;
        // Loads carry over while the services and gateways keep their names and order.
        snap.share_loads(&self.snap.loads);
        self.generation += 1;
        self.next_txn += 1;
        Ok(StagedReload {
            txn: self.next_txn,
            spec,
            snapshot: Arc::new(snap),
            generation: self.generation,
        })
    }

    /// Phase one: every worker keeps the staged snapshot and `map` aside and says when it has
    /// (one channel per worker). Queued behind what the workers have not picked up yet.
    pub fn prepare_reload(&mut self, staged: &StagedReload, map: IdMap) -> Vec<Receiver<()>> {
        let map = Arc::new(map);
        let mut ready = Vec::with_capacity(self.pending.len());
        for p in &mut self.pending {
            let (tx, rx) = crossbeam_channel::bounded(1);
            p.push_back(Update::Prepare {
                txn: staged.txn,
                snapshot: Arc::clone(&staged.snapshot),
                map: Arc::clone(&map),
                ready: tx,
            });
            ready.push(rx);
        }
        self.send_pending();
        ready
    }

    /// Phase two, refused: every worker forgets what it prepared.
    pub fn abort_reload(&mut self, staged: &StagedReload) {
        for p in &mut self.pending {
            p.push_back(Update::Abort { txn: staged.txn });
        }
        self.send_pending();
    }

    /// Phase two: the new static neighbors and subnets, `base` (the staged spec with what the
    /// operator set at run time) and the staged snapshot become the running ones, and every
    /// worker switches, re-keying its affinity entries. Returns, per worker, the channel its
    /// answer arrives on.
    pub fn commit_reload(
        &mut self,
        staged: StagedReload,
        base: ApplianceSpec,
    ) -> Vec<ReloadAnswer> {
        let statics: Vec<(IpAddr, EthernetAddress)> = staged
            .spec
            .neighbors
            .iter()
            .map(|n| (n.address, n.mac))
            .collect();
        self.neighbors.set_statics(statics);
        self.neighbors.set_subnets(subnets(&staged.spec));
        self.neighbors.take_changed();
        self.snap = Arc::clone(&staged.snapshot);
        let mut answers = Vec::with_capacity(self.pending.len());
        for p in &mut self.pending {
            let (reply, answer) = crossbeam_channel::bounded(1);
            p.push_back(Update::Commit {
                txn: staged.txn,
                reply,
            });
            answers.push(answer);
        }
        self.send_pending();
        // What changed while the workers prepared (neighbors, health, the operator) follows at
        // once, in the new layout.
        let moved_on = self.generation != staged.generation || base != staged.spec;
        self.base = base;
        if moved_on {
            self.publish();
            self.send_pending();
        }
        answers
    }

    /// Applies `change` to every gateway called `name` (in every service) and publishes the
    /// result. Returns in how many services the gateway was found.
    pub fn change_gateways(
        &mut self,
        name: &str,
        change: impl Fn(&mut dataplane::model::GatewaySpec),
    ) -> Result<usize, ControlError> {
        let mut n = 0;
        for svc in &mut self.base.services {
            for gw in svc.gateways.iter_mut().filter(|g| g.name == name) {
                change(gw);
                n += 1;
            }
        }
        if n == 0 {
            return Err(ControlError::NoSuchGateway {
                name: name.to_string(),
            });
        }
        info!(
            gateway = name,
            services = n,
            "gateway changed by the operator"
        );
        self.publish();
        Ok(n)
    }

    /// Gratuitous ARP and unsolicited neighbor advertisements for every VIP (client-facing
    /// interfaces) and every interface address, so switches and neighbors learn where they
    /// are at once.
    pub fn announce(&mut self, snap: &Snapshot) {
        // What moves with HA mastership is announced only by the master, from the virtual MAC.
        let holding = snap.spec.ha.as_ref().is_none_or(|ha| ha.master);
        let mut frames = Vec::new();
        for (i, itf) in snap.spec.interfaces.iter().enumerate() {
            let Ok(i) = u16::try_from(i) else { continue };
            let view = *snap.interface_view(i);
            let mut addrs: Vec<(IpAddr, EthernetAddress)> =
                itf.addresses.iter().map(|c| (c.addr, view.mac)).collect();
            if holding {
                let mut moving: Vec<IpAddr> = Vec::new();
                if itf.role == Role::Client {
                    for s in &snap.spec.services {
                        moving.extend(s.vip4.map(IpAddr::V4));
                        moving.extend(s.vip6.map(IpAddr::V6));
                    }
                }
                let floating = snap.spec.ha.iter().flat_map(|ha| &ha.floating);
                moving.extend(floating.filter(|(f, _)| *f == i).map(|(_, a)| *a));
                addrs.extend(
                    moving
                        .into_iter()
                        .map(|a| (a, view.forward_mac(a.is_ipv6()))),
                );
            }
            for (a, mac) in addrs {
                let frame = match a {
                    IpAddr::V4(v4) => emit::arp_frame(
                        &L2 {
                            src: mac,
                            dst: EthernetAddress::BROADCAST,
                            vlan: view.vlan,
                        },
                        &ArpRepr {
                            operation: ARP_REQUEST,
                            sender_hw: mac,
                            sender_ip: v4,
                            target_hw: EthernetAddress::default(),
                            target_ip: v4,
                        },
                    ),
                    IpAddr::V6(v6) => {
                        let all_nodes = std::net::Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);
                        emit::ndp_frame(
                            &L2 {
                                src: mac,
                                dst: EthernetAddress::ipv6_multicast(&all_nodes),
                                vlan: view.vlan,
                            },
                            &v6,
                            &all_nodes,
                            &NdpRepr::NeighborAdvert {
                                flags: icmpv6::NDP_FLAG_OVERRIDE,
                                target: v6,
                                target_lladdr: Some(mac),
                            },
                        )
                    }
                };
                frames.push((view.port, frame));
            }
        }
        for (port, frame) in frames {
            if self.transmit(port, &frame) {
                self.counters.announcements_sent += 1;
            }
        }
        info!(
            sent = self.counters.announcements_sent,
            holding, "announced interface addresses (and VIPs, floating addresses when held)"
        );
    }

    /// One round of control work; `now_ms` is a monotonic clock.
    pub fn poll(&mut self, now_ms: u64) {
        let mut burst = Burst::new();
        // Urgent frames first. Bounded: a flood at our own addresses cannot keep this thread
        // from its timers; the rest gets a larger budget so its ring drains faster than a
        // flood fills it (what the policer then drops costs little).
        for (ring, bursts) in [(0, 16), (1, 64)] {
            for _ in 0..bursts {
                if self.from_workers[ring].dequeue_burst(&mut burst) == 0 {
                    break;
                }
                for m in burst.drain() {
                    self.counters.frames_in += 1;
                    self.handle_frame(&m, now_ms, ring == 0);
                }
            }
        }
        if let Some(mut x) = self.exception.take() {
            x.from_kernel(|interface, frame| {
                let port = self.snap.interface_view(interface).port;
                self.transmit(port, frame)
            });
            self.exception = Some(x);
        }
        while let Ok(report) = self.misses.try_recv() {
            match report {
                NeighborReport::Miss(dst) => self.resolve(dst, now_ms),
                NeighborReport::Heard(h) => {
                    if let Err(r) = self.neighbors.heard(h.address, h.mac, h.interface, now_ms) {
                        self.refusals.note(r, h.address, h.mac, Some(h.interface));
                    }
                }
            }
        }
        if now_ms >= self.last_tick_ms + TICK_MS {
            self.last_tick_ms = now_ms;
            for p in self.neighbors.tick(now_ms) {
                self.probe(p);
            }
        }
        if self.neighbors.take_changed() {
            self.publish();
        }
        self.send_pending();
    }

    /// A worker waits for the next hop towards `dst`: resolve it.
    fn resolve(&mut self, dst: IpAddr, now_ms: u64) {
        let Some((_, next_hop)) = self.snap.resolution_target(dst) else {
            debug!(%dst, "no route to resolve");
            return;
        };
        if let Some(p) = self.neighbors.miss(next_hop, now_ms) {
            self.probe(p);
        }
    }

    fn handle_frame(&mut self, m: &Mbuf, now_ms: u64, urgent: bool) {
        let Ok(eth) = EthernetFrame::new_checked(m.bytes()) else {
            self.counters.exception_unhandled += 1;
            return;
        };
        // The interface the frame came in on: neighbor answers are only learned for addresses
        // on its subnets, and only change entries that belong to it.
        let interface = self.snap.interface(m.port(), eth.vlan());
        // Neighbor answers teach both the dataplane and the kernel. The pipeline answers
        // requests for our addresses itself and hands over only replies and gratuitous ARP.
        let to_kernel = match eth.ethertype() {
            ethertype::ARP => match ArpPacket::new_checked(eth.payload()) {
                Ok(arp) if arp.operation() == ARP_REPLY || arp.operation() == ARP_REQUEST => {
                    let address = IpAddr::V4(arp.sender_ip());
                    if self.learn(address, arp.sender_hw(), interface, now_ms) {
                        self.counters.arp_learned += 1;
                    }
                    true
                }
                _ => false,
            },
            ethertype::IPV6 => {
                if let Some((target, mac)) = neighbor_advert(eth.payload(), eth.src()) {
                    if self.learn(IpAddr::V6(target), mac, interface, now_ms) {
                        self.counters.nd_learned += 1;
                    }
                }
                true
            }
            _ => true,
        };
        if !to_kernel {
            return;
        }
        if let (Some(i), Some(v)) = (interface, vrrp_message(eth.ethertype(), eth.payload())) {
            if self.vrrp_in.len() < VRRP_BACKLOG {
                self.vrrp_in.push(VrrpFrame { interface: i, ..v });
            } else {
                self.counters.vrrp_dropped += 1;
            }
            return;
        }
        match (&mut self.exception, interface) {
            (Some(x), Some(i)) => x.to_kernel(i, m.bytes(), urgent, now_ms),
            _ => self.counters.exception_unhandled += 1,
        }
    }

    /// Offers a neighbor answer from `interface` (`None`: a port and VLAN no interface has,
    /// which holds no subnet) to the cache; true when it was taken.
    fn learn(
        &mut self,
        address: IpAddr,
        mac: EthernetAddress,
        interface: Option<u16>,
        now_ms: u64,
    ) -> bool {
        // No interface has the subnets of an unknown one: count it as the cache would.
        let from = interface.unwrap_or(u16::MAX);
        match self.neighbors.learn(address, mac, from, now_ms) {
            Ok(()) => true,
            Err(r) => {
                self.refusals.note(r, address, mac, interface);
                false
            }
        }
    }

    fn probe(&mut self, p: Probe) {
        let Some((itf, _)) = self.snap.resolution_target(p.address) else {
            return;
        };
        let Some(src) = self.snap.source_address_for(itf, p.address) else {
            warn!(neighbor = %p.address, "no own address of its family on its interface");
            return;
        };
        let view = *self.snap.interface_view(itf);
        let frame = match (src, p.address) {
            (IpAddr::V4(src), IpAddr::V4(target)) => emit::arp_frame(
                &L2 {
                    src: view.mac,
                    dst: p.unicast.unwrap_or(EthernetAddress::BROADCAST),
                    vlan: view.vlan,
                },
                &ArpRepr {
                    operation: ARP_REQUEST,
                    sender_hw: view.mac,
                    sender_ip: src,
                    target_hw: EthernetAddress::default(),
                    target_ip: target,
                },
            ),
            (IpAddr::V6(src), IpAddr::V6(target)) => {
                let group = solicited_node(&target);
                emit::ndp_frame(
                    &L2 {
                        src: view.mac,
                        dst: p
                            .unicast
                            .unwrap_or_else(|| EthernetAddress::ipv6_multicast(&group)),
                        vlan: view.vlan,
                    },
                    &src,
                    &group,
                    &NdpRepr::NeighborSolicit {
                        target,
                        source_lladdr: Some(view.mac),
                    },
                )
            }
            _ => return,
        };
        if self.transmit(view.port, &frame) {
            self.counters.probes_sent += 1;
            debug!(neighbor = %p.address, unicast = p.unicast.is_some(), "neighbor probe sent");
        }
    }

    /// Sends one frame on `port`, through worker 0.
    fn transmit(&mut self, port: u16, frame: &[u8]) -> bool {
        let Ok(mut m) = Mbuf::from_bytes(&self.pool, frame) else {
            self.counters.tx_failed += 1;
            return false;
        };
        m.set_port(port);
        let mut b = Burst::new();
        if b.push(m).is_err() {
            return false;
        }
        self.tx.enqueue_burst(&mut b);
        if b.is_empty() {
            true
        } else {
            self.counters.tx_failed += 1;
            false
        }
    }

    /// What the workers should run for `spec`: the static and learned neighbor entries, and
    /// the gateways' states with their health applied. The operator's state stays in `base`,
    /// so a gateway that recovers goes back to what the operator chose (a drained gateway
    /// stays drained).
    fn effective(&self, spec: &ApplianceSpec) -> ApplianceSpec {
        self.effective_with(spec, &self.neighbors)
    }

    /// [`Self::effective`] with the neighbor entries of `neighbors`.
    fn effective_with(&self, spec: &ApplianceSpec, neighbors: &NeighborCache) -> ApplianceSpec {
        let mut spec = spec.clone();
        spec.neighbors = neighbors
            .usable()
            .map(|(address, mac)| NeighborSpec { address, mac })
            .collect();
        spec.neighbors.sort_by_key(|n| n.address);
        if let Some(ha) = &mut spec.ha {
            ha.master = self.ha_master;
        }
        for svc in &mut spec.services {
            let keep = self.health.keep_clients.contains(&svc.name);
            for gw in &mut svc.gateways {
                if self.health.is_down(&svc.name, &gw.name) {
                    gw.state = health_down_state(gw.state, keep);
                }
            }
        }
        spec
    }

    /// Applies a health transition of `gateway` in `service`; publishes when it changes what
    /// the workers run.
    pub fn set_health(&mut self, service: &str, gateway: &str, up: bool) {
        let key = (service.to_string(), gateway.to_string());
        let changed = if up {
            self.health.down.remove(&key)
        } else {
            self.health.down.insert(key)
        };
        if changed {
            self.publish();
        }
    }

    /// Which services keep a down gateway's clients on it (`on_gateway_down = "keep"`);
    /// forgets health states of gateways no longer checked.
    pub fn set_health_policy(
        &mut self,
        keep_clients: HashSet<String>,
        checked: &HashSet<(String, String)>,
    ) {
        self.health.keep_clients = keep_clients;
        self.health.down.retain(|k| checked.contains(k));
        self.publish();
    }

    /// HA mastership changed (VRRP): the workers take over or give up the VIPs and floating
    /// addresses with the next snapshot; a new master announces them at once.
    pub fn set_master(&mut self, master: bool) {
        if self.ha_master == master {
            return;
        }
        self.ha_master = master;
        self.publish();
        self.send_pending();
        if master {
            let snap = Arc::clone(&self.snap);
            self.announce(&snap);
        }
    }

    pub fn is_master(&self) -> bool {
        self.ha_master
    }

    /// The VRRP messages received since the last call.
    pub fn take_vrrp(&mut self) -> Vec<VrrpFrame> {
        std::mem::take(&mut self.vrrp_in)
    }

    /// Sends `frame` on `port` through worker 0 (VRRP adverts); false when it could not.
    pub fn send_frame(&mut self, port: u16, frame: &[u8]) -> bool {
        self.transmit(port, frame)
    }

    /// Whether health checks have `gateway` of `service` down now.
    pub fn is_unhealthy(&self, service: &str, gateway: &str) -> bool {
        self.health.is_down(service, gateway)
    }

    /// The gateway states as the operator set them (config and vpnlbctl), before health.
    pub fn base(&self) -> &ApplianceSpec {
        &self.base
    }

    /// A new snapshot with the usable neighbor entries.
    fn publish(&mut self) {
        let spec = self.effective(&self.base);
        self.generation += 1;
        match Snapshot::build(spec, self.generation) {
            Ok(mut s) => {
                s.share_loads(&self.snap.loads);
                let s = Arc::new(s);
                self.snap = Arc::clone(&s);
                for p in &mut self.pending {
                    if let Some(Update::Snapshot(_)) = p.back() {
                        p.pop_back();
                    }
                    p.push_back(Update::Snapshot(Arc::clone(&s)));
                }
                self.counters.snapshots_published += 1;
                debug!(generation = self.generation, "snapshot published");
            }
            Err(e) => {
                self.counters.snapshot_errors += 1;
                warn!(error = %e, "cannot build a snapshot");
            }
        }
    }

    fn send_pending(&mut self) {
        for (p, tx) in self.pending.iter_mut().zip(&self.senders) {
            while let Some(u) = p.pop_front() {
                match tx.try_send(u) {
                    Ok(()) => {}
                    Err(TrySendError::Disconnected(_)) => p.clear(),
                    Err(TrySendError::Full(u)) => {
                        p.push_front(u);
                        break;
                    }
                }
            }
        }
    }
}

/// A VRRP message (IP protocol 112) in an IPv4 or IPv6 packet, with the fields validation
/// needs (`interface` is filled in by the caller).
fn vrrp_message(ethertype: u16, payload: &[u8]) -> Option<VrrpFrame> {
    match ethertype {
        ethertype::IPV4 => {
            let ip = dataplane::wire::ipv4::Ipv4Packet::new_checked(payload).ok()?;
            (ip.protocol() == ip_proto::VRRP).then(|| VrrpFrame {
                interface: 0,
                ttl: ip.ttl(),
                src: IpAddr::V4(ip.src_addr()),
                dst: IpAddr::V4(ip.dst_addr()),
                vrrp: ip.payload().to_vec(),
            })
        }
        ethertype::IPV6 => {
            let ip = Ipv6Packet::new_checked(payload).ok()?;
            (ip.next_header() == ip_proto::VRRP).then(|| VrrpFrame {
                interface: 0,
                ttl: ip.hop_limit(),
                src: IpAddr::V6(ip.src_addr()),
                dst: IpAddr::V6(ip.dst_addr()),
                vrrp: ip.payload().to_vec(),
            })
        }
        _ => None,
    }
}

/// A neighbor advertisement's target and link-layer address (its option, else the frame's
/// source).
fn neighbor_advert(
    payload: &[u8],
    eth_src: EthernetAddress,
) -> Option<(std::net::Ipv6Addr, EthernetAddress)> {
    let ip = Ipv6Packet::new_checked(payload).ok()?;
    let up = ip.upper_layer().ok()?;
    if up.protocol != ip_proto::ICMPV6 || up.fragment.is_some() {
        return None;
    }
    let icmp = payload.get(up.offset..40 + usize::from(ip.payload_len()))?;
    if icmp.first() != Some(&icmpv6_type::NEIGHBOR_ADVERT) || ip.hop_limit() != 255 {
        return None;
    }
    let p = icmpv6::Icmpv6Packet::new_checked(icmp).ok()?;
    if !p.verify_checksum(&ip.src_addr(), &ip.dst_addr()) {
        return None;
    }
    let na = NdpNeighbor::new_checked(icmp).ok()?;
    let mac = icmpv6::ndp_lladdr_option(na.options(), icmpv6::NDP_OPT_TARGET_LLADDR)
        .ok()?
        .unwrap_or(eth_src);
    Some((na.target(), mac))
}
