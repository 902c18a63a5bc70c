//! A poll-mode worker: one thread pinned to one core, owning one RX and one TX queue on every
//! port, its affinity shard (inside [`Pipeline`]) and its counters.
//!
//! [`main`] starts the thread in steps (pin, register with the EAL, allocate the pipeline on its
//! core, wait for every other worker); [`run`] is the loop. Each pass
//! (`WorkerLoop::iteration`): adopt a new snapshot if the control thread published one; poll
//! every port for a burst and run the pipeline on it (with software steering, its first pass
//! picks out the frames whose client another worker owns, which go to that worker's ring) and on
//! what other workers handed over; buffer transmissions per port and flush a buffer when it is
//! full or, at the latest, after the TX flush budget (as l3fwd drains); hand frames for the
//! appliance itself to the control thread. The packet path allocates nothing, takes no lock and
//! makes no system call. Every 100 ms the counters are copied into the report (`try_lock`, never
//! waiting) with `publish`, into the report's own buffers: nothing is allocated once their
//! shapes are known (a new snapshot with more services or gateways grows them once). Only
//! answering an operator's query (e.g. `show affinity`) and adopting a new snapshot build
//! anything.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender};
use dataplane::affinity::{AffinityKey, AffinityValue, HashKey, Remap};
use dataplane::changes::{AffinityChange, ChangeOp};
use dataplane::counters::WorkerCounters;
use dataplane::exception::{ExceptionClass, ExceptionPolicer, ExceptionQueue, Suspect};
use dataplane::fragment::Fragments;
use dataplane::frame::Frame;
use dataplane::hold::HoldQueue;
use dataplane::model::Snapshot;
use dataplane::neighbor::NeighborReport;
use dataplane::pipeline::{Pipeline, Verdict, MAX_BURST};
use dataplane::steer::Steering;
use dpdk::lcore::rdtsc;
use dpdk::{Burst, FreeBatch, Mbuf, Mempool, RingConsumer, RingProducer, RxQueue, TxQueue};
use hdrhistogram::Histogram;
use serde::Serialize;
use tracing::{info, warn};

use super::api::{AffinityRow, WorkerFault, WorkerQuery};
use super::control::Update;
use super::watchdog::Heartbeat;

/// I/O counters of one worker (the pipeline's own are in [`WorkerCounters`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct IoCounters {
    /// Loop iterations.
    pub polls: u64,
    /// RX bursts that brought at least one frame.
    pub rx_bursts: u64,
    /// Frames handed to the worker owning their client (software steering).
    pub handoff_out: u64,
    /// Frames received from other workers.
    pub handoff_in: u64,
    /// Frames dropped because the owner's hand-off ring was full.
    pub handoff_dropped: u64,
    /// Frames dropped because the NIC's TX ring was full.
    pub tx_dropped: u64,
    /// Fragments not sent because the port's mbuf pool was empty (the pipeline counted
    /// them as transmitted).
    pub fragments_no_mbuf: u64,
    /// Frames for the control thread dropped because its ring was full (urgent: neighbor
    /// discovery, VRRP, frames from gateways; other: the rest).
    pub to_control_urgent_dropped: u64,
    pub to_control_dropped: u64,
    /// Frames for the control thread over their class's budget, by
    /// `dataplane::exception::ExceptionClass` (`[exception] urgent_rate_pps`, `rate_pps`).
    pub exception_policed: [u64; ExceptionClass::COUNT],
    /// Frames for the control thread that failed their class's rule (forged or routed VRRP,
    /// neighbor discovery, gateway sources), by `dataplane::exception::Suspect`.
    pub exception_suspect: [u64; Suspect::COUNT],
    /// Neighbor reports (misses, requests heard) lost because the control thread's channel,
    /// or the pipeline's report ring, was full.
    pub miss_reports_lost: u64,
    /// Snapshots adopted.
    pub snapshots_adopted: u64,
    /// HA sync: the master's changes applied, refused (shard full), and own changes lost
    /// (log or queue full).
    pub sync_applied: u64,
    pub sync_refused: u64,
    pub sync_lost: u64,
    /// TSC cycles spent in loop iterations that moved at least one frame, and in empty polls:
    /// utilisation = busy / (busy + idle).
    pub busy_cycles: u64,
    pub idle_cycles: u64,
}

/// Indices of the two control rings.
const URGENT: usize = 0;
const OTHER: usize = 1;

impl IoCounters {
    /// Adds another worker's counters: every field, by construction (a new field that is not
    /// summed here does not compile).
    pub fn add(&mut self, o: &IoCounters) {
        let IoCounters {
            polls,
            rx_bursts,
            handoff_out,
            handoff_in,
            handoff_dropped,
            tx_dropped,
            fragments_no_mbuf,
            to_control_urgent_dropped,
            to_control_dropped,
            exception_policed,
            exception_suspect,
            miss_reports_lost,
            snapshots_adopted,
            sync_applied,
            sync_refused,
            sync_lost,
            busy_cycles,
            idle_cycles,
        } = *o;
        self.polls += polls;
        self.rx_bursts += rx_bursts;
        self.handoff_out += handoff_out;
        self.handoff_in += handoff_in;
        self.handoff_dropped += handoff_dropped;
        self.tx_dropped += tx_dropped;
        self.fragments_no_mbuf += fragments_no_mbuf;
        self.to_control_urgent_dropped += to_control_urgent_dropped;
        self.to_control_dropped += to_control_dropped;
        for (a, b) in self.exception_policed.iter_mut().zip(exception_policed) {
            *a += b;
        }
        for (a, b) in self.exception_suspect.iter_mut().zip(exception_suspect) {
            *a += b;
        }
        self.miss_reports_lost += miss_reports_lost;
        self.snapshots_adopted += snapshots_adopted;
        self.sync_applied += sync_applied;
        self.sync_refused += sync_refused;
        self.sync_lost += sync_lost;
        self.busy_cycles += busy_cycles;
        self.idle_cycles += idle_cycles;
    }
}

/// Per-burst processing time, in TSC cycles. Fixed bounds, so recording never allocates.
pub fn burst_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 1 << 36, 3).expect("static histogram bounds")
}

/// What a worker reports to the control thread.
#[derive(Clone, Debug, Serialize)]
pub struct WorkerReport {
    pub core: usize,
    pub counters: WorkerCounters,
    pub io: IoCounters,
    pub affinity_entries: usize,
    /// Active clients per service and gateway.
    pub active_clients: Vec<Vec<u32>>,
    /// Confirmed and unconfirmed entries of the shard.
    pub confirmed: usize,
    pub unconfirmed: usize,
    /// The shard's capacity (entries) and the memory it holds, allocated at start.
    pub affinity_capacity: usize,
    pub affinity_bytes: usize,
    /// Processing time of every burst since start (TSC cycles).
    #[serde(skip)]
    pub burst_cycles: Histogram<u64>,
    /// The longest loop pass in the last report period (100 ms), and since start, in
    /// microseconds: how long the worker left its RX queues unpolled at worst (a pass longer
    /// than its RX ring takes to fill at line rate loses packets).
    pub loop_max_us: u64,
    pub loop_max_us_ever: u64,
}

impl Default for WorkerReport {
    fn default() -> Self {
        WorkerReport {
            core: 0,
            counters: WorkerCounters::default(),
            io: IoCounters::default(),
            affinity_entries: 0,
            active_clients: Vec::new(),
            confirmed: 0,
            unconfirmed: 0,
            affinity_capacity: 0,
            affinity_bytes: 0,
            burst_cycles: burst_histogram(),
            loop_max_us: 0,
            loop_max_us_ever: 0,
        }
    }
}

/// Seconds since the Unix epoch, from the TSC (no system call per loop).
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    pub unix_at_start: u64,
    pub tsc_at_start: u64,
    pub tsc_hz: u64,
}

impl Clock {
    pub fn start() -> Clock {
        let unix_at_start = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        Clock {
            unix_at_start,
            tsc_at_start: rdtsc(),
            tsc_hz: dpdk::lcore::tsc_hz().max(1),
        }
    }

    #[inline]
    pub fn now_s(&self) -> u32 {
        let elapsed = rdtsc().wrapping_sub(self.tsc_at_start) / self.tsc_hz;
        u32::try_from(self.unix_at_start + elapsed).unwrap_or(u32::MAX)
    }

    /// Milliseconds since the clock started (monotonic).
    #[inline]
    pub fn now_ms(&self) -> u64 {
        rdtsc().wrapping_sub(self.tsc_at_start) / (self.tsc_hz / 1000).max(1)
    }

    /// TSC cycles in `us` microseconds.
    pub fn cycles(&self, us: u64) -> u64 {
        self.tsc_hz / 1_000_000 * us
    }

    /// Microseconds in `cycles` TSC cycles.
    pub fn micros(&self, cycles: u64) -> u64 {
        cycles / (self.tsc_hz / 1_000_000).max(1)
    }
}

/// The RX and TX queue a worker owns on one port, and the pool its fragments come from.
pub struct PortQueues {
    pub rx: RxQueue,
    pub tx: TxQueue,
    pub pool: Mempool,
}

/// Everything a worker thread needs; moved into the thread.
pub struct WorkerSetup {
    pub identity: WorkerIdentity,
    pub queues: WorkerQueues,
    pub channels: WorkerChannels,
    pub timing: WorkerTiming,
    /// `Some` when frames must be steered in software (see `dataplane::steer`).
    pub steering: Option<Steering>,
    /// `Some` under hardware steering with several workers: ICMP errors are re-steered by
    /// their quoted client.
    pub error_steering: Option<Steering>,
    /// The classification and budgets of frames for the control thread.
    pub exception: ExceptionPolicer,
    pub stop: Arc<AtomicBool>,
}

/// Which worker this is, and where it runs.
#[derive(Clone, Copy, Debug)]
pub struct WorkerIdentity {
    /// Also the worker's RX and TX queue id on every port.
    pub index: u16,
    pub core: usize,
}

/// The DPDK queues and rings a worker owns or feeds.
pub struct WorkerQueues {
    /// One RX and one TX queue per port, by port index.
    pub ports: Vec<PortQueues>,
    /// Hand-off rings of all workers, by worker index (`None` for this one).
    pub handoff_out: Vec<Option<RingProducer>>,
    pub handoff_in: RingConsumer,
    /// Frames for the control thread: urgent ones (see `dataplane::exception`), then the rest.
    pub to_control: [RingProducer; 2],
    /// Worker 0 only: frames the control thread wants sent (the mbuf's port says where).
    pub from_control: Option<RingConsumer>,
}

/// The worker's channels to and from the control thread.
pub struct WorkerChannels {
    pub updates: Receiver<Update>,
    /// Operator questions (show affinity, affinity flush), answered between bursts.
    pub queries: Receiver<WorkerQuery>,
    /// Neighbor misses (to resolve) and requests heard (to learn).
    pub misses: Sender<NeighborReport>,
    pub report: Arc<Mutex<WorkerReport>>,
    /// With an HA peer: this worker's affinity changes out, the master's changes in.
    pub sync: Option<WorkerSync>,
    /// Beaten once per loop pass; the control thread's watchdog reads it.
    pub progress: Heartbeat,
}

/// The worker's clock and its TX flush budget.
#[derive(Clone, Copy, Debug)]
pub struct WorkerTiming {
    pub clock: Clock,
    pub tx_flush_us: u32,
}

/// How a worker thread starts: on its core, with its shard allocated there, and not before
/// every other worker has its shard too.
pub struct WorkerStart {
    pub snapshot: Arc<Snapshot>,
    /// Workers that have allocated their shard and entered their loop (shared by all).
    pub running: Arc<AtomicUsize>,
    /// How many workers there are.
    pub workers: usize,
    /// Affinity changes to record between two drains (with an HA peer to sync with).
    pub change_log: Option<usize>,
    /// The affinity hash's key, drawn once at start (see `dataplane::affinity::HashKey`).
    pub hash_key: HashKey,
}

/// A worker's end of the HA affinity sync (see `daemon::sync`).
pub struct WorkerSync {
    pub changes_out: Sender<AffinityChange>,
    pub changes_in: Receiver<AffinityChange>,
    /// Changes this worker could not report, summed over all workers.
    pub lost: Arc<AtomicU64>,
}

/// The master's changes a worker applies per loop iteration at most, so a bulk resync never
/// holds a burst back for long.
const SYNC_APPLY_PER_LOOP: usize = 1024;

/// Buffers and queues of the loop, apart from the pipeline so both can be borrowed at once.
struct Io {
    ports: Vec<PortQueues>,
    tx_bufs: Vec<Burst>,
    handoff_out: Vec<Option<RingProducer>>,
    handoff_bufs: Vec<Burst>,
    to_control: [RingProducer; 2],
    control_bufs: [Burst; 2],
    /// Classifies frames for the control thread and polices them, class by class.
    exception: ExceptionPolicer,
    /// The worker's clock in milliseconds, read once per loop pass (the policer's time).
    now_ms: u64,
    /// Frames dropped during a burst, freed together at its end (one bulk call, not one per
    /// frame).
    drops: FreeBatch,
    /// Frames waiting for their next hop's MAC (see `dataplane::hold`).
    held: HoldQueue<Mbuf>,
    counters: IoCounters,
    burst_cycles: Histogram<u64>,
}

impl Io {
    fn flush_tx(&mut self, port: usize) {
        let (Some(q), Some(buf)) = (self.ports.get_mut(port), self.tx_bufs.get_mut(port)) else {
            return;
        };
        q.tx.tx_burst(buf);
        if !buf.is_empty() {
            // The NIC's ring is full: drop rather than stall the worker (as l3fwd does).
            self.counters.tx_dropped += buf.len() as u64;
            buf.clear();
        }
    }

    fn flush_all_tx(&mut self) {
        for p in 0..self.tx_bufs.len() {
            self.flush_tx(p);
        }
    }

    fn flush_handoff(&mut self, worker: usize) {
        let (Some(Some(ring)), Some(buf)) = (
            self.handoff_out.get_mut(worker),
            self.handoff_bufs.get_mut(worker),
        ) else {
            return;
        };
        let n = buf.len();
        ring.enqueue_burst(buf);
        self.counters.handoff_out += (n - buf.len()) as u64;
        self.counters.handoff_dropped += buf.len() as u64;
        buf.clear();
    }

    /// Every hand-off buffer that holds frames.
    fn flush_handoffs(&mut self) {
        for w in 0..self.handoff_bufs.len() {
            if !self.handoff_bufs[w].is_empty() {
                self.flush_handoff(w);
            }
        }
    }

    fn flush_control(&mut self, class: usize) {
        let buf = &mut self.control_bufs[class];
        if buf.is_empty() {
            return;
        }
        self.to_control[class].enqueue_burst(buf);
        let dropped = buf.len() as u64;
        buf.clear();
        if class == URGENT {
            self.counters.to_control_urgent_dropped += dropped;
        } else {
            self.counters.to_control_dropped += dropped;
        }
    }

    fn transmit(&mut self, port: usize, m: Mbuf) {
        if self.tx_bufs.get(port).is_some_and(Burst::is_full) {
            self.flush_tx(port);
        }
        match self.tx_bufs.get_mut(port) {
            Some(buf) => {
                if let Err(m) = buf.push(m) {
                    self.counters.tx_dropped += 1;
                    self.drops.add(m);
                }
            }
            None => {
                self.counters.tx_dropped += 1;
                self.drops.add(m);
            }
        }
    }

    /// Transmits the fragments of `m` (the pipeline planned them, see `Verdict::Fragment`)
    /// on `port`, each written into an mbuf from the port's pool; `m` itself is dropped.
    fn fragment(&mut self, port: usize, mtu: u16, m: Mbuf) {
        let plan = Fragments::plan(m.bytes(), mtu);
        if let (Ok(plan), Some(pool)) = (plan, self.ports.get(port).map(|q| q.pool)) {
            for i in 0..plan.count() {
                let built = Mbuf::alloc(&pool).and_then(|mut f| {
                    let len = u16::try_from(plan.frame_len(i)).ok()?;
                    plan.write(m.bytes(), i, f.append(len)?)?;
                    Some(f)
                });
                match built {
                    Some(f) => self.transmit(port, f),
                    None => self.counters.fragments_no_mbuf += 1,
                }
            }
        }
        self.drops.add(m);
    }

    fn send_to_control(&mut self, class: usize, m: Mbuf) {
        if self.control_bufs[class].is_full() {
            self.flush_control(class);
        }
        if let Err(m) = self.control_bufs[class].push(m) {
            self.counters.to_control_dropped += 1;
            self.drops.add(m);
        }
    }

    fn hand_off(&mut self, worker: usize, m: Mbuf) {
        if self.handoff_bufs.get(worker).is_some_and(Burst::is_full) {
            self.flush_handoff(worker);
        }
        match self.handoff_bufs.get_mut(worker) {
            Some(buf) => {
                if let Err(m) = buf.push(m) {
                    self.counters.handoff_dropped += 1;
                    self.drops.add(m);
                }
            }
            None => {
                self.counters.handoff_dropped += 1;
                self.drops.add(m);
            }
        }
    }
}

/// Runs the pipeline on `burst` (all received on `port`; `handed_over`: by another worker)
/// and dispatches the verdicts.
fn process(
    pipeline: &mut Pipeline,
    io: &mut Io,
    verdicts: &mut [Verdict; MAX_BURST],
    now: u32,
    port: u16,
    burst: &mut Burst,
    handed_over: bool,
) {
    let n = burst.len();
    if n == 0 {
        return;
    }
    let t0 = rdtsc();
    let (frames, verdicts) = (burst.as_mut_slice(), &mut verdicts[..n]);
    if handed_over {
        pipeline.process_handed_over(now, port, frames, verdicts);
    } else {
        pipeline.process_burst(now, port, frames, verdicts);
    }
    io.burst_cycles
        .saturating_record(rdtsc().wrapping_sub(t0).max(1));
    for (m, v) in burst.drain().zip(verdicts.iter()) {
        match *v {
            Verdict::Tx { port } => io.transmit(usize::from(port), m),
            Verdict::Fragment { port, mtu } => io.fragment(usize::from(port), mtu, m),
            Verdict::ToControl => {
                // Classified by the port it arrived on (a hand-off keeps its RX port) and
                // policed per class: a flood of one kind costs that kind its budget alone.
                match io
                    .exception
                    .admit(pipeline.snapshot(), port, m.bytes(), io.now_ms)
                {
                    Some(ExceptionQueue::Urgent) => io.send_to_control(URGENT, m),
                    Some(ExceptionQueue::Other) => io.send_to_control(OTHER, m),
                    None => io.drops.add(m),
                }
            }
            Verdict::Drop(_) => io.drops.add(m),
            Verdict::AwaitNeighbor { port, next_hop } => {
                if let Some(m) = pipeline.hold(&mut io.held, port, next_hop, m, io.now_ms) {
                    io.drops.add(m);
                }
            }
            Verdict::HandOff { worker } => {
                let mut m = m;
                m.set_port(port);
                io.hand_off(usize::from(worker), m);
            }
        }
    }
    io.drops.free();
}

/// The worker thread's body: pins the thread, registers it with the EAL, allocates the
/// pipeline on its core, waits for every other worker, then runs the loop until `stop`.
pub fn main(setup: WorkerSetup, start: WorkerStart) {
    let WorkerIdentity { index, core } = setup.identity;
    pin(setup.identity);
    let _registration = register_with_eal(index);
    let (pipeline, huge) = allocate(&start);
    start.running.fetch_add(1, Ordering::Release);
    wait_for_all(&start, &setup.stop);
    info!(
        worker = index,
        core,
        huge_page_regions = huge,
        "worker running"
    );
    run(setup, pipeline);
}

fn pin(id: WorkerIdentity) {
    if !core_affinity::set_for_current(core_affinity::CoreId { id: id.core }) {
        warn!(
            worker = id.index,
            core = id.core,
            "cannot pin the worker thread"
        );
    }
}

fn register_with_eal(index: u16) -> Option<dpdk::lcore::ThreadRegistration> {
    match dpdk::lcore::register_thread() {
        Ok(r) => Some(r),
        Err(e) => {
            warn!(worker = index, error = %e, "cannot register with the EAL (no mempool cache)");
            None
        }
    }
}

/// The pipeline, allocated here, on the worker's core, so its memory is local to it; huge
/// pages for the shard (millions of entries looked up at random). Also returns how many
/// regions got huge pages.
fn allocate(start: &WorkerStart) -> (Pipeline, usize) {
    let mut huge = 0;
    let snapshot = Arc::clone(&start.snapshot);
    let mut pipeline = Pipeline::new_advised(snapshot, start.hash_key, &mut |addr, bytes| {
        huge += usize::from(dpdk::memory::advise_huge_pages(addr, bytes));
    });
    if let Some(n) = start.change_log {
        pipeline.record_changes(n);
    }
    (pipeline, huge)
}

/// No worker polls its queues before every worker does: under software steering a frame
/// handed to a worker still allocating its shard would find that worker's ring full, and be
/// lost.
fn wait_for_all(start: &WorkerStart, stop: &AtomicBool) {
    while start.running.load(Ordering::Acquire) < start.workers && !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_micros(200));
    }
}

/// What the loop receives besides its RX queues: other workers' hand-offs and, on worker 0,
/// the control thread's frames; with the bursts they are read into.
struct Inbound {
    handoff_in: RingConsumer,
    from_control: Option<RingConsumer>,
    rx: Burst,
    /// Handed-over frames regrouped by their RX port.
    by_port: Vec<Burst>,
}

/// When the loop last flushed its TX buffers and published its report, in TSC cycles.
struct LoopTimers {
    flush_cycles: u64,
    report_cycles: u64,
    last_flush: u64,
    last_report: u64,
    loop_start: u64,
    /// The longest pass since the last report, in cycles.
    loop_max: u64,
}

/// The worker loop's state: the pipeline, its I/O, and its links to the control thread.
struct WorkerLoop {
    identity: WorkerIdentity,
    pipeline: Pipeline,
    io: Io,
    inbound: Inbound,
    channels: WorkerChannels,
    verdicts: [Verdict; MAX_BURST],
    clock: Clock,
    timers: LoopTimers,
    /// A reload prepared and waiting for its commit (or abort).
    prepared: Option<Prepared>,
    /// Tests and measurements: synthetic entries still to add.
    fill: Option<FillJob>,
    /// `show affinity` (all) under way.
    listing: Option<Listing>,
    /// Reloads whose re-keying runs, oldest first: each is answered when its remap completes.
    reload_replies: VecDeque<Sender<(usize, usize)>>,
}

/// The worker loop. Returns when `stop` is set, after flushing everything.
pub fn run(setup: WorkerSetup, pipeline: Pipeline) {
    let stop = Arc::clone(&setup.stop);
    let mut l = WorkerLoop::new(setup, pipeline);
    while !stop.load(Ordering::Relaxed) {
        l.iteration();
    }
    l.finish();
}

impl WorkerLoop {
    fn new(setup: WorkerSetup, mut pipeline: Pipeline) -> WorkerLoop {
        let WorkerSetup {
            identity,
            queues,
            channels,
            timing,
            steering,
            error_steering,
            exception,
            stop: _,
        } = setup;
        // Software steering runs in the pipeline's first pass, from the parse that plans a
        // frame.
        pipeline.set_steering(steering, identity.index);
        pipeline.set_error_steering(error_steering, identity.index);
        let n_ports = queues.ports.len();
        let n_workers = queues.handoff_out.len();
        let io = Io {
            ports: queues.ports,
            tx_bufs: (0..n_ports).map(|_| Burst::new()).collect(),
            handoff_out: queues.handoff_out,
            handoff_bufs: (0..n_workers).map(|_| Burst::new()).collect(),
            to_control: queues.to_control,
            control_bufs: [Burst::new(), Burst::new()],
            exception,
            now_ms: timing.clock.now_ms(),
            drops: FreeBatch::new(),
            held: HoldQueue::with_defaults(),
            counters: IoCounters::default(),
            burst_cycles: burst_histogram(),
        };
        let now = rdtsc();
        WorkerLoop {
            identity,
            pipeline,
            io,
            inbound: Inbound {
                handoff_in: queues.handoff_in,
                from_control: queues.from_control,
                rx: Burst::new(),
                by_port: (0..n_ports).map(|_| Burst::new()).collect(),
            },
            channels,
            verdicts: [Verdict::ToControl; MAX_BURST],
            reload_replies: VecDeque::new(),
            clock: timing.clock,
            timers: LoopTimers {
                flush_cycles: timing.clock.cycles(u64::from(timing.tx_flush_us)),
                report_cycles: timing.clock.cycles(100_000),
                last_flush: now,
                last_report: now,
                loop_start: now,
                loop_max: 0,
            },
            prepared: None,
            fill: None,
            listing: None,
        }
    }

    /// One pass: control-thread input, the ports, hand-offs, flushes, then what goes back.
    #[inline]
    fn iteration(&mut self) {
        self.channels.progress.beat();
        self.io.counters.polls += 1;
        // Frames this iteration moved: processed here, or handed to their owner.
        let moved_before = self.moved();
        self.take_updates();
        self.answer_query();
        self.advance_remap();
        let now = self.clock.now_s();
        self.io.now_ms = self.clock.now_ms();
        self.apply_synced(now);
        self.fill_step(now);
        self.poll_ports(now);
        self.poll_handoffs(now);
        self.send_control_frames();
        let io = &mut self.io;
        self.pipeline
            .expire_held(&mut io.held, io.now_ms, |m| io.drops.add(m));
        // What the hand-offs, the control thread's frames and the hold queue dropped (bursts
        // free their own).
        self.io.drops.free();
        self.io.flush_handoffs();
        self.io.flush_control(URGENT);
        self.io.flush_control(OTHER);
        let t = rdtsc();
        self.account_cycles(t, moved_before);
        if t.wrapping_sub(self.timers.last_flush) >= self.timers.flush_cycles {
            self.io.flush_all_tx();
            self.timers.last_flush = t;
        }
        self.report_misses();
        self.report_changes();
        if t.wrapping_sub(self.timers.last_report) >= self.timers.report_cycles {
            if let Ok(mut r) = self.channels.report.try_lock() {
                publish(&mut r, self.identity.core, &self.pipeline, &self.io);
                r.loop_max_us = self.clock.micros(self.timers.loop_max);
                r.loop_max_us_ever = r.loop_max_us_ever.max(r.loop_max_us);
                self.timers.loop_max = 0;
            }
            self.timers.last_report = t;
        }
    }

    #[inline]
    fn moved(&self) -> u64 {
        self.pipeline.rx_packets() + self.io.counters.handoff_out
    }

    /// New snapshots and reloads, in order: a reload re-keys the affinity entries for the
    /// layout of the snapshots that follow it.
    fn take_updates(&mut self) {
        let mut adopted = false;
        while let Ok(u) = self.channels.updates.try_recv() {
            apply_update(
                &mut self.pipeline,
                &mut self.prepared,
                u,
                &mut self.reload_replies,
            );
            self.io.counters.snapshots_adopted += 1;
            adopted = true;
        }
        if adopted && !self.io.held.is_empty() {
            // Frames waiting for a neighbor the new snapshot knows go now, before this
            // pass's new frames. Taken out for the loop (moving it allocates nothing).
            let mut held = std::mem::take(&mut self.io.held);
            let io = &mut self.io;
            self.pipeline
                .release_held(&mut held, |port, m, cut| match cut {
                    None => io.transmit(usize::from(port), m),
                    Some(mtu) => io.fragment(usize::from(port), mtu, m),
                });
            self.io.held = held;
        }
    }

    /// A slice of the running remap (bursts do one each; this one keeps an idle worker's
    /// going), and the answers of the reloads whose re-keying completed.
    #[inline]
    fn advance_remap(&mut self) {
        if self.pipeline.remap_progress().is_some() {
            self.pipeline.remap_step();
        }
        // Also drains completed flushes (a burst may have completed either kind).
        let replies = &mut self.reload_replies;
        self.pipeline.drain_finished_remaps(|p| {
            // Flushes were answered when they began.
            if !p.flush {
                if let Some(reply) = replies.pop_front() {
                    let _ = reply.try_send((p.moved, p.removed));
                }
            }
        });
    }

    fn answer_query(&mut self) {
        match self.channels.queries.try_recv() {
            Ok(WorkerQuery::Fault(WorkerFault::Fill { entries })) => {
                self.fill = Some(FillJob::new(self.identity.index, entries));
            }
            // One listing at a time: the control thread asks again only after an answer.
            Ok(q) => {
                if let Some(l) = answer(&mut self.pipeline, usize::from(self.identity.index), q) {
                    self.listing = Some(l);
                }
            }
            Err(_) => {}
        }
        if let Some(l) = &mut self.listing {
            if l.step(&self.pipeline, usize::from(self.identity.index)) {
                self.listing = None;
            }
        }
    }

    /// Tests and measurements: a slice of the synthetic entries asked for.
    fn fill_step(&mut self, now: u32) {
        if let Some(job) = &mut self.fill {
            if job.step(&mut self.pipeline, now) {
                info!(
                    worker = self.identity.index,
                    added = job.added,
                    refused = job.refused,
                    entries = self.pipeline.affinity().len(),
                    "fault injection: affinity fill done"
                );
                self.fill = None;
            }
        }
    }

    /// The HA master's changes, a bounded number per pass.
    fn apply_synced(&mut self, now: u32) {
        let Some(s) = &self.channels.sync else {
            return;
        };
        for c in s.changes_in.try_iter().take(SYNC_APPLY_PER_LOOP) {
            if self.pipeline.apply_synced(now, &c) {
                self.io.counters.sync_applied += 1;
            } else {
                self.io.counters.sync_refused += 1;
            }
        }
    }

    /// One RX burst from every port, through the pipeline.
    #[inline]
    fn poll_ports(&mut self, now: u32) {
        // Port indices are u16, as DPDK's port ids (a bounded range: no wrap, no cast).
        for (p, port) in (0..self.io.ports.len()).zip(0..=u16::MAX) {
            if self.io.ports[p].rx.rx_burst(&mut self.inbound.rx) == 0 {
                continue;
            }
            self.io.counters.rx_bursts += 1;
            process(
                &mut self.pipeline,
                &mut self.io,
                &mut self.verdicts,
                now,
                port,
                &mut self.inbound.rx,
                false,
            );
        }
    }

    /// Frames other workers received for clients of ours, grouped by their RX port.
    #[inline]
    fn poll_handoffs(&mut self, now: u32) {
        let inbound = &mut self.inbound;
        if inbound.handoff_in.dequeue_burst(&mut inbound.rx) == 0 {
            return;
        }
        self.io.counters.handoff_in += inbound.rx.len() as u64;
        for m in inbound.rx.drain() {
            // A burst holds at most what the ring gave, so per-port bursts cannot overflow.
            if let Some(b) = inbound.by_port.get_mut(usize::from(m.port())) {
                let _ = b.push(m);
            }
        }
        for (b, p) in inbound.by_port.iter_mut().zip(0..=u16::MAX) {
            process(
                &mut self.pipeline,
                &mut self.io,
                &mut self.verdicts,
                now,
                p,
                b,
                true,
            );
        }
    }

    /// Worker 0: what the control thread wants sent.
    fn send_control_frames(&mut self) {
        let inbound = &mut self.inbound;
        if let Some(ring) = &mut inbound.from_control {
            if ring.dequeue_burst(&mut inbound.rx) > 0 {
                for m in inbound.rx.drain() {
                    let port = usize::from(m.port());
                    self.io.transmit(port, m);
                }
            }
        }
    }

    /// Adds the pass's cycles to busy (it moved a frame) or idle.
    #[inline]
    fn account_cycles(&mut self, t: u64, moved_before: u64) {
        let spent = t.wrapping_sub(self.timers.loop_start);
        self.timers.loop_start = t;
        self.timers.loop_max = self.timers.loop_max.max(spent);
        if self.moved() != moved_before {
            self.io.counters.busy_cycles += spent;
        } else {
            self.io.counters.idle_cycles += spent;
        }
    }

    /// Destinations without a neighbor entry, and neighbors heard asking for our addresses,
    /// to the control thread (never waiting).
    fn report_misses(&mut self) {
        let (misses, counters) = (&self.channels.misses, &mut self.io.counters);
        let mut send = |r: NeighborReport| {
            if misses.try_send(r).is_err() {
                counters.miss_reports_lost += 1;
            }
        };
        let lost = self
            .pipeline
            .drain_neighbor_misses(|a| send(NeighborReport::Miss(a)))
            + self
                .pipeline
                .drain_heard_neighbors(|h| send(NeighborReport::Heard(h)));
        counters.miss_reports_lost += lost;
    }

    /// With an HA peer: this worker's affinity changes, to the sync (never waiting).
    fn report_changes(&mut self) {
        let Some(s) = &self.channels.sync else {
            return;
        };
        let mut failed = 0;
        let lost = self.pipeline.drain_changes(|c| {
            if s.changes_out.try_send(c).is_err() {
                failed += 1;
            }
        });
        if lost + failed > 0 {
            self.io.counters.sync_lost += lost + failed;
            s.lost.fetch_add(lost + failed, Ordering::Relaxed);
        }
    }

    /// Flushes every buffer and publishes the report a last time (waiting for its lock).
    fn finish(mut self) {
        let io = &mut self.io;
        io.held.clear(|m| io.drops.add(m));
        io.drops.free();
        self.io.flush_all_tx();
        for w in 0..self.io.handoff_bufs.len() {
            self.io.flush_handoff(w);
        }
        self.io.flush_control(URGENT);
        self.io.flush_control(OTHER);
        let final_report = self.channels.report.lock();
        if let Ok(mut r) = final_report {
            publish(&mut r, self.identity.core, &self.pipeline, &self.io);
        }
    }
}

/// Copies the counters into the report's own buffers: no allocation once their shapes match
/// (the histograms share bounds; `active_clients_into` reuses the report's vectors).
fn publish(r: &mut WorkerReport, core: usize, pipeline: &Pipeline, io: &Io) {
    r.core = core;
    pipeline.counters_into(&mut r.counters);
    r.io = io.counters;
    r.io.exception_policed = io.exception.policed;
    r.io.exception_suspect = io.exception.suspect;
    r.confirmed = pipeline.affinity().confirmed_len();
    r.unconfirmed = pipeline.affinity().unconfirmed_len();
    r.affinity_capacity = pipeline.affinity().capacity();
    r.affinity_bytes = pipeline.affinity().memory_bytes();
    // Same bounds on both sides: copying never allocates.
    r.burst_cycles.reset();
    let _ = r.burst_cycles.add(&io.burst_cycles);
    r.affinity_entries = pipeline.affinity().len();
    pipeline.active_clients_into(&mut r.active_clients);
}

/// Answers the control thread's questions about this worker's affinity shard.
fn answer(pipeline: &mut Pipeline, index: usize, q: WorkerQuery) -> Option<Listing> {
    match q {
        // One client: its few keys, looked up, answered at once.
        WorkerQuery::Affinity {
            client: Some(c),
            limit,
            reply,
        } => {
            let snap = Arc::clone(pipeline.snapshot());
            let mut rows = Vec::new();
            pipeline.client_entries(c, |k, v| {
                if rows.len() < limit {
                    rows.push(affinity_row(&snap, index, k, v));
                }
            });
            let _ = reply.try_send(rows);
        }
        // All: the first `limit` entries, found a bounded slice of the table per loop pass.
        WorkerQuery::Affinity {
            client: None,
            limit,
            reply,
        } => {
            return Some(Listing {
                next_slot: 0,
                rows: Vec::with_capacity(limit.min(LISTING_MAX_ROWS)),
                limit,
                reply,
            })
        }
        WorkerQuery::Flush { client, reply } => {
            let _ = reply.try_send(pipeline.flush_affinity(client));
        }
        WorkerQuery::Fault(f) => inject(index, f),
    }
    None
}

/// `show affinity` without a client: the table read [`LISTING_SLOTS_PER_PASS`] slots per loop
/// pass (a walk of a large, sparse table in one go would leave the RX queues unpolled for tens
/// of milliseconds), answered once it has `limit` rows or reached the end.
pub struct Listing {
    next_slot: usize,
    rows: Vec<AffinityRow>,
    limit: usize,
    reply: Sender<Vec<AffinityRow>>,
}

/// Slab slots a listing reads per loop pass (about 4096 x 64 bytes: tens of microseconds).
const LISTING_SLOTS_PER_PASS: usize = 4096;
/// Rows a listing allocates room for up front.
const LISTING_MAX_ROWS: usize = 1000;

impl Listing {
    /// One slice; true when answered.
    fn step(&mut self, pipeline: &Pipeline, index: usize) -> bool {
        let snap = pipeline.snapshot();
        let shard = pipeline.affinity();
        let end = self.next_slot + LISTING_SLOTS_PER_PASS;
        for (k, v) in shard.iter_slots(self.next_slot..end) {
            if self.rows.len() >= self.limit {
                break;
            }
            self.rows.push(affinity_row(snap, index, k, v));
        }
        self.next_slot = end;
        if self.rows.len() >= self.limit || end >= shard.capacity() {
            let _ = self.reply.try_send(std::mem::take(&mut self.rows));
            return true;
        }
        false
    }
}

/// An affinity entry as `show affinity` lists it.
fn affinity_row(snap: &Snapshot, index: usize, k: AffinityKey, v: AffinityValue) -> AffinityRow {
    let svc = snap.services.get(usize::from(k.service_index()));
    AffinityRow {
        client: k.client_ip(),
        service: svc.map_or_else(|| k.service_index().to_string(), |s| s.spec.name.clone()),
        direct: k.is_direct(),
        gateway: svc
            .and_then(|s| s.spec.gateways.get(usize::from(v.gateway)))
            .map_or_else(|| v.gateway.to_string(), |g| g.name.clone()),
        confirmed: v.confirmed,
        last_seen: v.last_seen,
        expires_at: v.expires_at,
        worker: index,
    }
}

/// Tests only (`[control] fault_injection`): the fault the operator asked for. A stall spins
/// here without polling anything or beating the heartbeat, as a worker stuck in a loop would;
/// a panic is a worker's crash (with the release profile's `panic = "abort"`, the process's).
fn inject(index: usize, f: WorkerFault) {
    match f {
        WorkerFault::Stall(d) => {
            warn!(
                worker = index,
                stall_ms = crate::units::millis(d),
                "fault injection: the worker stalls"
            );
            let until = std::time::Instant::now() + d;
            while std::time::Instant::now() < until {
                std::hint::spin_loop();
            }
            info!(worker = index, "fault injection: the worker polls again");
        }
        WorkerFault::Panic => {
            panic!("fault injection: worker {index} panics as asked (`debug worker {index} panic`)")
        }
        // Taken by the loop itself (`WorkerLoop::answer_query`).
        WorkerFault::Fill { .. } => {}
    }
}

/// Synthetic established entries a worker adds when asked (`debug affinity fill N`, tests and
/// measurements only): IPv6 clients of 2001:2::/48, spread over its /64s, on the first service's
/// gateways in turn; [`FILL_PER_PASS`] per loop pass so traffic keeps flowing meanwhile.
struct FillJob {
    worker: u16,
    next: u64,
    end: u64,
    added: u64,
    refused: u64,
}

/// Entries a fill adds per loop pass.
const FILL_PER_PASS: u64 = 1024;

impl FillJob {
    fn new(worker: u16, entries: u64) -> FillJob {
        FillJob {
            worker,
            next: 0,
            end: entries,
            added: 0,
            refused: 0,
        }
    }

    /// The `i`th client of worker `w`: 2001:2:0:SUBNET:w:HIGH:LOW, one /64 after another.
    fn client(w: u16, i: u64) -> [u8; 16] {
        let mut c = [0u8; 16];
        c[..4].copy_from_slice(&[0x20, 0x01, 0x00, 0x02]);
        c[6..8].copy_from_slice(&((i & 0xffff) as u16).to_be_bytes());
        c[8..10].copy_from_slice(&w.to_be_bytes());
        c[10..16].copy_from_slice(&(i >> 16).to_be_bytes()[2..]);
        c
    }

    /// One slice; true when done.
    fn step(&mut self, pipeline: &mut Pipeline, now: u32) -> bool {
        let gateways = pipeline
            .snapshot()
            .services
            .first()
            .map_or(0, |s| s.spec.gateways.len());
        let Ok(gateways) = u64::try_from(gateways) else {
            return true;
        };
        if gateways == 0 {
            return true;
        }
        let stop = self.end.min(self.next + FILL_PER_PASS);
        for i in self.next..stop {
            let change = AffinityChange {
                key: AffinityKey {
                    client: Self::client(self.worker, i),
                    service: 0,
                },
                op: ChangeOp::Upsert {
                    gateway: u16::try_from(i % gateways).unwrap_or(0),
                    confirmed: true,
                    expires_at: now.saturating_add(86_400),
                },
            };
            if pipeline.apply_synced(now, &change) {
                self.added += 1;
            } else {
                self.refused += 1;
            }
        }
        self.next = stop;
        self.next >= self.end
    }
}

/// A reload a worker has prepared and not yet committed.
pub struct Prepared {
    txn: u64,
    snapshot: Arc<Snapshot>,
    /// Built when prepared, so the commit allocates nothing.
    remap: Remap,
}

/// Adopts a snapshot, or takes a reload's phase: keeps it aside (prepare), re-keys the affinity
/// entries and adopts its snapshot (commit: incremental, the reply, queued in `replies`, is sent
/// when the re-keying completes), or forgets it (abort).
fn apply_update(
    pipeline: &mut Pipeline,
    prepared: &mut Option<Prepared>,
    u: Update,
    replies: &mut VecDeque<Sender<(usize, usize)>>,
) {
    match u {
        // Collapsed snapshots are newest-last; an older one never undoes a newer one.
        Update::Snapshot(s) if s.generation > pipeline.snapshot().generation => pipeline.adopt(s),
        Update::Snapshot(_) => {}
        Update::Prepare {
            txn,
            snapshot,
            map,
            ready,
        } => {
            *prepared = Some(Prepared {
                txn,
                snapshot,
                remap: Remap::new(&map),
            });
            let _ = ready.try_send(());
        }
        Update::Commit { txn, reply } => {
            let Some(p) = prepared.take_if(|p| p.txn == txn) else {
                return;
            };
            pipeline.begin_remap(p.snapshot, p.remap);
            replies.push_back(reply);
        }
        Update::Abort { txn } => {
            prepared.take_if(|p| p.txn == txn);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A pipeline on the lab's configuration with a small table and `n` synthetic entries.
    fn filled(capacity: usize, n: u64) -> Pipeline {
        let lab = concat!(env!("CARGO_MANIFEST_DIR"), "/../conf/lab.toml");
        let mut spec = crate::config::load(std::path::Path::new(lab)).unwrap();
        spec.affinity.capacity = capacity;
        let mut p = Pipeline::new(Arc::new(Snapshot::build(spec, 1).unwrap()));
        let mut job = FillJob::new(0, n);
        while !job.step(&mut p, 100) {}
        assert_eq!((job.added, job.refused), (n, 0));
        p
    }

    #[test]
    fn a_listing_reads_a_bounded_slice_per_pass_and_answers_once() {
        let p = filled(64 * 1024, 3000);
        let capacity = p.affinity().capacity();
        let (tx, rx) = crossbeam_channel::bounded(1);
        let mut all = Listing {
            next_slot: 0,
            rows: Vec::new(),
            limit: 10_000,
            reply: tx,
        };
        let mut passes = 0;
        while !all.step(&p, 0) {
            assert!(rx.try_recv().is_err(), "no answer before the end");
            passes += 1;
        }
        assert_eq!(passes + 1, capacity.div_ceil(LISTING_SLOTS_PER_PASS));
        let rows = rx.try_recv().unwrap();
        assert_eq!(rows.len(), 3000);
        assert!(rows.iter().all(|r| r.confirmed && r.worker == 0));
        // A limit is met before the end: answered as soon as it is.
        let (tx, rx) = crossbeam_channel::bounded(1);
        let mut some = Listing {
            next_slot: 0,
            rows: Vec::new(),
            limit: 5,
            reply: tx,
        };
        let mut passes = 1;
        while !some.step(&p, 0) {
            passes += 1;
        }
        assert_eq!(rx.try_recv().unwrap().len(), 5);
        assert!(passes < capacity / LISTING_SLOTS_PER_PASS);
    }

    #[test]
    fn io_counters_add_every_field() {
        let one = IoCounters {
            polls: 1,
            rx_bursts: 1,
            handoff_out: 1,
            handoff_in: 1,
            handoff_dropped: 1,
            tx_dropped: 1,
            fragments_no_mbuf: 1,
            to_control_urgent_dropped: 1,
            to_control_dropped: 1,
            exception_policed: [1; ExceptionClass::COUNT],
            exception_suspect: [1; Suspect::COUNT],
            miss_reports_lost: 1,
            snapshots_adopted: 1,
            sync_applied: 1,
            sync_refused: 1,
            sync_lost: 1,
            busy_cycles: 1,
            idle_cycles: 1,
        };
        let mut sum = one;
        sum.add(&one);
        // Checked through the report's serialization: every field a report shows.
        let sum = serde_json::to_value(sum).unwrap();
        // Per-class counters are arrays: every element.
        let twos = |v: &serde_json::Value| match v {
            serde_json::Value::Array(a) => a.iter().all(|x| x == 2),
            x => x == 2,
        };
        assert!(sum.as_object().unwrap().values().all(twos), "{sum}");
    }
}
