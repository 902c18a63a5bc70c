//! `vpnlbd --config FILE`: the dataplane on DPDK.
//!
//! Start-up, in order, so that a bad configuration never touches a device: the configuration is
//! validated and the first snapshot built; the EAL starts on the control core only; ports are
//! attached, configured (one RX and one TX queue per worker: the control thread's own frames go
//! out through worker 0, as some PMDs, net_af_packet among them, tie RX and TX queues in pairs
//! and an RX queue nobody polls would lose frames), and RSS is requested on the L3 source (client ports) or destination (backend ports);
//! worker threads are pinned to their cores and registered with the EAL. Then this thread
//! becomes the control thread: it resolves neighbors (ARP / ND) for the workers, announces the
//! VIPs, publishes snapshots, and collects counters, until SIGINT/SIGTERM or an optional stop
//! condition. Shutdown stops the workers (each flushes its TX buffers), then the ports, and
//! returns the final counters.

pub mod api;
pub mod control;
pub mod exception;
pub mod ha;
pub mod loads;
pub mod rates;
pub mod sync;
pub mod worker;

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dataplane::counters::WorkerCounters;
use dataplane::model::{Role, Snapshot};
use dataplane::neighbor::NeighborCounters;
use dataplane::pipeline::Worker;
use dataplane::steer::{Steering, RSS_KEY};
use dpdk::{
    DpdkError, Eal, EalArgs, Mempool, Port, PortConfig, Ring, RingConsumer, RssMode, RssStatus,
};
use serde::Serialize;
use tracing::{info, warn};

use crate::config::{Config, OnGatewayDown};
use crate::ctlsock::ControlSocket;
use crate::health::checker::{self, Checker};
use worker::{Clock, IoCounters, PortQueues, WorkerReport, WorkerSetup};

/// How long the control thread waits for the workers to start before VRRP begins.
const WORKER_START_LIMIT: Duration = Duration::from_secs(60);

/// Affinity changes a worker may record between two drains (one loop iteration: a few bursts
/// per port); more are counted as lost and the peer gets the whole table again.
const WORKER_CHANGE_LOG: usize = 4096;

/// When to stop besides a signal (tests and benchmarks).
#[derive(Clone, Copy, Debug, Default)]
pub struct RunOptions {
    /// Stop once frames have been received and none arrived for this long.
    pub stop_after_idle: Option<Duration>,
    /// Stop after this long.
    pub run_for: Option<Duration>,
}

#[derive(Debug)]
pub enum DaemonError {
    Config(String),
    Dpdk { what: String, error: DpdkError },
    Thread(String),
}

impl fmt::Display for DaemonError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DaemonError::Config(e) => write!(f, "{e}"),
            DaemonError::Dpdk { what, error } => write!(f, "{what}: {error}"),
            DaemonError::Thread(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for DaemonError {}

fn dpdk<T>(what: impl Into<String>, r: Result<T, DpdkError>) -> Result<T, DaemonError> {
    r.map_err(|error| DaemonError::Dpdk {
        what: what.into(),
        error,
    })
}

/// How each port steers clients to workers.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct PortReport {
    pub name: String,
    pub device: String,
    pub steering: String,
    pub rx_packets: u64,
    pub tx_packets: u64,
    pub rx_missed: u64,
    pub rx_errors: u64,
    pub tx_errors: u64,
}

/// What the daemon prints when it stops.
#[derive(Clone, Debug, Serialize)]
pub struct DaemonReport {
    pub ports: Vec<PortReport>,
    pub workers: Vec<WorkerReport>,
    /// All workers' pipeline counters summed.
    pub counters: WorkerCounters,
    pub io: IoCounters,
    pub neighbors: NeighborCounters,
    pub control: control::ControlCounters,
}

/// EAL arguments for a configuration: the control core only (workers are our threads),
/// memory, hugepages or not, and the ports' devices.
pub fn eal_args(cfg: &Config) -> Vec<String> {
    let d = &cfg.dataplane;
    let mut a = EalArgs::new()
        .cores(&d.control_core.to_string())
        .main_lcore(d.control_core as u32)
        .memory_mb(d.memory_mb)
        .no_huge(!d.hugepages)
        .no_telemetry(true)
        .log_level("notice");
    if d.hugepages {
        a = a.arg("--in-memory");
    }
    let mut pci = false;
    for p in &cfg.spec.ports {
        let dev = device_args(&p.device, d.workers.len());
        if dev.starts_with("net_") || dev.starts_with("eth_") {
            a = a.vdev(&dev);
        } else {
            pci = true;
            a = a.allow(&dev);
        }
    }
    if !pci {
        a = a.no_pci(true);
    }
    let mut args = a.to_args();
    args.extend(d.eal_args.iter().cloned());
    args
}

/// The device string as given, with one af_packet queue pair per worker when the
/// configuration did not say.
fn device_args(device: &str, workers: usize) -> String {
    if device.starts_with("net_af_packet") && !device.contains("qpairs=") {
        format!("{device},qpairs={workers}")
    } else {
        device.to_string()
    }
}

/// The DPDK name of a configured device: a vdev's name, or a PCI address.
fn device_name(device: &str) -> &str {
    device.split(',').next().unwrap_or(device)
}

/// Runs the daemon until `stop` is set (by a signal handler) or an option says so.
pub fn run(
    mut cfg: Config,
    config_path: &std::path::Path,
    opts: RunOptions,
    stop: Arc<AtomicBool>,
) -> Result<DaemonReport, DaemonError> {
    let started = Instant::now();
    let d = cfg.dataplane.clone();
    for p in &cfg.spec.ports {
        if p.device.is_empty() {
            return Err(DaemonError::Config(format!(
                "port.{}.device: the daemon needs a DPDK device (a vdev string or a PCI address)",
                p.name
            )));
        }
    }
    let cores = core_affinity::get_core_ids().unwrap_or_default();
    for c in d.workers.iter().chain([&d.control_core]) {
        if !cores.iter().any(|id| id.id == *c) {
            return Err(DaemonError::Config(format!(
                "dataplane: core {c} is not available to this process ({} cores)",
                cores.len()
            )));
        }
    }
    if d.workers.contains(&d.control_core) {
        warn!(
            core = d.control_core,
            "the control thread shares its core with a worker"
        );
    }
    let first = Snapshot::build(cfg.spec.clone(), 1).map_err(DaemonError::Config)?;
    let first = Arc::new(first);
    // The control socket before any device: a second daemon on the same socket stops here.
    let sock_path = &cfg.control.socket;
    if let Some(dir) = sock_path.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    let mut sock = ControlSocket::bind(sock_path)
        .map_err(|e| DaemonError::Config(format!("control socket {}: {e}", sock_path.display())))?;
    info!(socket = %sock_path.display(), "control socket ready");

    // The kernel's side of the appliance's own addresses; refused here, before any device,
    // when the namespace is missing or a TAP cannot be made.
    let exception = if cfg.exception.enabled {
        Some(
            exception::ExceptionPath::open(&cfg.exception, &cfg.spec, d.mtu)
                .map_err(DaemonError::Config)?,
        )
    } else {
        None
    };

    let mut ha = match &cfg.ha {
        Some(h) => Some(ha::Ha::new(h, &cfg.spec).map_err(DaemonError::Config)?),
        None => None,
    };

    let args = eal_args(&cfg);
    info!(args = ?args, "starting the EAL");
    dpdk("EAL init", Eal::init(&args))?;

    let n_workers = d.workers.len();
    let n_ports = cfg.spec.ports.len();
    // Deep enough to ride out a worker that is descheduled for a while (a few ms at line rate).
    let ring_size = 4096u32;
    let mbufs = d.mbufs.unwrap_or_else(|| {
        let per_port =
            n_workers as u32 * (u32::from(d.rx_desc) + u32::from(d.tx_desc)) + u32::from(d.tx_desc);
        let buffers = n_workers as u32 * (n_ports as u32 + n_workers as u32 + 2) * 32;
        n_ports as u32 * per_port + (n_workers as u32 + 1) * ring_size + buffers + 4096
    });
    let data_room = (d.mtu + 14 + 8 + 4 + dpdk::MBUF_HEADROOM).max(dpdk::DEFAULT_DATA_ROOM);
    // One pool per NUMA socket that has ports, so mbufs are local to the NIC that fills them.
    let mut pools: BTreeMap<i32, Mempool> = BTreeMap::new();

    // Ports: one RX and one TX queue per worker.
    let mut ports = Vec::new();
    let mut hardware_steering = n_workers.is_power_of_two();
    let mut steering_notes = Vec::new();
    for (i, p) in cfg.spec.ports.iter().enumerate() {
        let name = device_name(&p.device);
        let port = dpdk(format!("port {} ({name})", p.name), Port::by_name(name))?;
        if usize::from(port.id()) != i {
            warn!(port = %p.name, dpdk_id = port.id(), "DPDK port id differs from config order");
        }
        let roles: Vec<Role> = cfg
            .spec
            .interfaces
            .iter()
            .filter(|itf| usize::from(itf.port) == i)
            .map(|itf| itf.role)
            .collect();
        let rss = match (
            roles.contains(&Role::Client),
            roles.contains(&Role::Backend),
        ) {
            (true, false) => RssMode::L3Src,
            (false, true) => RssMode::L3Dst,
            // A port carrying both roles (on VLANs) cannot be hashed on one address.
            _ => RssMode::None,
        };
        let pool = socket_pool(&mut pools, port.socket_id(), mbufs, data_room)?;
        let mut pc = PortConfig::new(pool);
        pc.rx_queues = n_workers as u16;
        pc.tx_queues = n_workers as u16;
        pc.rx_desc = d.rx_desc;
        pc.tx_desc = d.tx_desc;
        pc.rss = if n_workers > 1 { rss } else { RssMode::None };
        pc.rss_key = RSS_KEY;
        pc.checksum_offload = false;
        pc.mtu = d.mtu;
        let setup = dpdk(format!("configure port {}", p.name), port.configure(&pc))?;
        let hw = matches!(
            setup.rss,
            RssStatus::Enabled {
                reta_spread: true,
                ..
            }
        );
        if n_workers > 1 && !hw {
            hardware_steering = false;
        }
        steering_notes.push(format!("{:?}", setup.rss));
        if let Ok(mac) = port.mac() {
            if mac != p.mac.0 {
                info!(port = %p.name, device_mac = ?mac, configured = %p.mac,
                    "device MAC differs from the configured one; frames use the configured MAC");
            }
        }
        dpdk(
            format!("promiscuous mode on {}", p.name),
            port.set_promiscuous(true),
        )
        .unwrap_or_else(|e| warn!(port = %p.name, error = %e, "cannot enable promiscuous mode"));
        dpdk(format!("start port {}", p.name), port.start())?;
        ports.push(port);
    }
    let steering = (n_workers > 1 && !hardware_steering).then(|| Steering::new(n_workers as u16));
    let mut port_reports = Vec::new();
    for (p, note) in cfg.spec.ports.iter().zip(&steering_notes) {
        let how = if n_workers == 1 {
            "single worker".to_string()
        } else if hardware_steering {
            format!("hardware RSS ({note})")
        } else {
            format!("software hand-off (RSS: {note})")
        };
        info!(port = %p.name, device = %p.device, steering = %how, "port started");
        port_reports.push(PortReport {
            name: p.name.clone(),
            device: p.device.clone(),
            steering: how,
            rx_packets: 0,
            tx_packets: 0,
            rx_missed: 0,
            rx_errors: 0,
            tx_errors: 0,
        });
    }

    // Rings: one hand-off ring per worker (any worker may produce), one to the control thread.
    let mut handoff_producers = Vec::new();
    let mut handoff_consumers = Vec::new();
    for w in 0..n_workers {
        let ring = dpdk(
            "hand-off ring",
            Ring::new(
                &format!("handoff{w}"),
                ring_size,
                dpdk::SOCKET_ANY,
                false,
                true,
            ),
        )?;
        let (tx, rx) = ring.split();
        handoff_producers.push(tx);
        handoff_consumers.push(rx);
    }
    // Frames for the control thread: urgent ones (neighbor discovery, VRRP, answers from
    // gateways) on a ring of their own, so a flood at the appliance's address cannot crowd them
    // out; see dataplane::exception.
    let mut control_producers = Vec::new();
    let mut control_consumers = Vec::new();
    for name in ["to-control-urgent", "to-control"] {
        let ring = dpdk(
            format!("{name} ring"),
            Ring::new(name, ring_size, dpdk::SOCKET_ANY, false, true),
        )?;
        let (tx, rx) = ring.split();
        control_producers.push(tx);
        control_consumers.push(rx);
    }
    let [urgent_consumer, control_consumer]: [RingConsumer; 2] = control_consumers
        .try_into()
        .map_err(|_| DaemonError::Thread("two control rings".into()))?;
    // The control thread's own frames (ARP/ND, announcements) and the kernel's (exception
    // path), sent by worker 0.
    let from_control = dpdk(
        "from-control ring",
        Ring::new("from-control", ring_size, dpdk::SOCKET_ANY, true, true),
    )?;
    let (from_control_producer, from_control_consumer) = from_control.split();
    let mut from_control_consumer = Some(from_control_consumer);

    let clock = Clock::start();
    let (miss_tx, miss_rx) = crossbeam_channel::bounded(1024);
    // The affinity sync with the other vpnlbd of an HA pair (not with a keepalived peer).
    let sync_channels = cfg
        .ha
        .as_ref()
        .filter(|h| h.peer.is_some())
        .map(|_| sync::SyncChannels::new(n_workers));
    let worker_stop = Arc::new(AtomicBool::new(false));
    // Workers that have allocated their shard and entered their loop.
    let workers_running = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut snapshot_senders = Vec::new();
    let mut query_senders = Vec::new();
    let mut reports = Vec::new();
    let mut threads = Vec::new();
    for (w, &core) in d.workers.iter().enumerate() {
        let mut queues = Vec::new();
        for (p, port) in ports.iter().enumerate() {
            let rx = dpdk(format!("RX queue {w} of port {p}"), port.rx_queue(w as u16))?;
            let tx = dpdk(format!("TX queue {w} of port {p}"), port.tx_queue(w as u16))?;
            queues.push(PortQueues { rx, tx });
        }
        let handoff_out = (0..n_workers)
            .map(|o| {
                if o == w {
                    None
                } else {
                    handoff_producers[o].try_clone()
                }
            })
            .collect();
        let (snap_tx, snap_rx) = crossbeam_channel::bounded(4);
        snapshot_senders.push(snap_tx);
        let (query_tx, query_rx) = crossbeam_channel::bounded(1);
        query_senders.push(query_tx);
        let report = Arc::new(Mutex::new(WorkerReport::default()));
        reports.push(Arc::clone(&report));
        let setup = WorkerSetup {
            index: w,
            core,
            ports: queues,
            steering: steering.clone(),
            handoff_out,
            handoff_in: handoff_consumers.remove(0),
            to_control: [
                control_producers[0]
                    .try_clone()
                    .ok_or_else(|| DaemonError::Thread("control ring is single-producer".into()))?,
                control_producers[1]
                    .try_clone()
                    .ok_or_else(|| DaemonError::Thread("control ring is single-producer".into()))?,
            ],
            updates: snap_rx,
            queries: query_rx,
            from_control: if w == 0 {
                from_control_consumer.take()
            } else {
                None
            },
            misses: miss_tx.clone(),
            report,
            stop: Arc::clone(&worker_stop),
            clock,
            tx_flush_us: d.tx_flush_us,
            sync: sync_channels.as_ref().map(|c| worker::WorkerSync {
                changes_out: c.from_workers.0.clone(),
                changes_in: c.to_workers[w].1.clone(),
                lost: Arc::clone(&c.lost),
            }),
        };
        let record_changes = setup.sync.is_some();
        let running = Arc::clone(&workers_running);
        let stop = Arc::clone(&worker_stop);
        let snap = Arc::clone(&first);
        let t = std::thread::Builder::new()
            .name(format!("vpnlb-w{w}"))
            .spawn(move || {
                if !core_affinity::set_for_current(core_affinity::CoreId { id: core }) {
                    warn!(worker = w, core, "cannot pin the worker thread");
                }
                let _registration = match dpdk::lcore::register_thread() {
                    Ok(r) => Some(r),
                    Err(e) => {
                        warn!(worker = w, error = %e, "cannot register with the EAL (no mempool cache)");
                        None
                    }
                };
                // Allocated here, on the worker's core, so its memory is local to it.
                // Huge pages for the shard: millions of entries looked up at random.
                let mut huge = 0;
                let mut pipeline = Worker::new_advised(snap, &mut |addr, bytes| {
                    huge += usize::from(dpdk::memory::advise_huge_pages(addr, bytes));
                });
                if record_changes {
                    pipeline.record_changes(WORKER_CHANGE_LOG);
                }
                running.fetch_add(1, Ordering::Release);
                // No worker polls its queues before every worker does: under software
                // steering a frame handed to a worker still allocating its shard would find
                // that worker's ring full, and be lost.
                while running.load(Ordering::Acquire) < n_workers && !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_micros(200));
                }
                info!(worker = w, core, huge_page_regions = huge, "worker running");
                worker::run(setup, pipeline);
            })
            .map_err(|e| DaemonError::Thread(format!("cannot start worker {w}: {e}")))?;
        threads.push(t);
    }
    drop(miss_tx);

    let control_pool = match pools.values().next() {
        Some(p) => *p,
        None => socket_pool(&mut pools, None, mbufs, data_room)?,
    };
    let mut ctl = control::Control::new(
        Arc::clone(&first),
        from_control_producer,
        control_pool,
        [urgent_consumer, control_consumer],
        miss_rx,
        snapshot_senders,
    );
    if let Some(x) = exception {
        ctl.set_exception_path(x);
    }
    // VRRP only once every worker receives: a router that cannot hear its peer's adverts
    // would take the VIPs after Master_Down_Interval (allocating a large shard takes longer).
    if ha.is_some() {
        let deadline = Instant::now() + WORKER_START_LIMIT;
        while workers_running.load(Ordering::Acquire) < n_workers {
            if Instant::now() >= deadline {
                return Err(DaemonError::Thread(format!(
                    "workers did not start within {} s",
                    WORKER_START_LIMIT.as_secs()
                )));
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    ctl.announce(&first);
    if let Some(h) = &mut ha {
        h.start(&mut ctl, Instant::now());
    }
    let (keep, checked) = health_policy(&cfg);
    ctl.set_health_policy(keep, &checked);
    let mut checker = start_checker(&cfg).map_err(|e| DaemonError::Config(e.to_string()))?;
    let mut pair_sync = match (&cfg.ha, &sync_channels) {
        (Some(h), Some(c)) => {
            let netns = cfg
                .exception
                .netns
                .as_deref()
                .filter(|_| cfg.exception.enabled);
            Some(sync::PairSync::new(h, &cfg.spec, netns, c, clock).map_err(DaemonError::Config)?)
        }
        _ => None,
    };
    let mut load_reports = {
        let netns = cfg
            .exception
            .netns
            .as_deref()
            .filter(|_| cfg.exception.enabled);
        loads::LoadReports::new(&cfg.redirect, &first, netns).map_err(DaemonError::Config)?
    };
    let mut rates = rates::GatewayRates::default();
    let mut last_rates = Instant::now();
    let mut last_rx = 0u64;
    let mut idle_since = Instant::now();
    let mut last_check = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        ctl.poll(clock_ms(started));
        if let Some(h) = &mut ha {
            h.poll(&mut ctl, Instant::now());
            if let Some(s) = &mut pair_sync {
                let now = Instant::now();
                s.poll(now, h.is_master());
                if s.master_silent_since().is_some() {
                    h.peer_dead(&mut ctl, now);
                }
                h.hold_preemption(s.hold_preemption(now));
            }
        }
        if let Some(c) = &checker {
            while let Ok(ev) = c.events().try_recv() {
                ctl.set_health(&ev.service, &ev.gateway, ev.up);
            }
        }
        if let Some(l) = &mut load_reports {
            l.poll(ctl.snapshot(), Instant::now());
        }
        if last_rates.elapsed() >= Duration::from_secs(1) {
            last_rates = Instant::now();
            let workers: Vec<WorkerReport> = reports
                .iter()
                .map(|r| r.lock().map(|r| r.clone()).unwrap_or_default())
                .collect();
            rates.sample(ctl.snapshot(), &workers, last_rates);
        }
        {
            let mut ctx = api::Ctx {
                ctl: &mut ctl,
                reports: &reports,
                queries: &query_senders,
                ports: &ports,
                port_reports: &port_reports,
                config_path,
                running: &mut cfg,
                health: &mut checker,
                rates: &rates,
                ha: ha.as_ref(),
                sync: pair_sync.as_mut(),
                loads: load_reports.as_ref(),
            };
            sock.poll(&mut |req| api::handle(req, &mut ctx));
        }
        if last_check.elapsed() >= Duration::from_millis(20) {
            last_check = Instant::now();
            let rx: u64 = ports
                .iter()
                .filter_map(|p| p.stats().ok())
                .map(|s| s.ipackets)
                .sum();
            if rx != last_rx {
                last_rx = rx;
                idle_since = Instant::now();
            }
            if let Some(idle) = opts.stop_after_idle {
                if last_rx > 0 && idle_since.elapsed() >= idle {
                    info!(idle_ms = idle.as_millis() as u64, "no traffic: stopping");
                    break;
                }
            }
            if opts.run_for.is_some_and(|t| started.elapsed() >= t) {
                info!("run time elapsed: stopping");
                break;
            }
        }
        std::thread::sleep(Duration::from_micros(200));
    }
    if let Some(h) = &mut ha {
        // A master leaves with a priority-0 advert, so the backup takes over at once; give
        // worker 0 a moment to send it.
        h.shutdown(&mut ctl);
        std::thread::sleep(Duration::from_millis(5));
    }
    info!("stopping workers");
    worker_stop.store(true, Ordering::Relaxed);
    for t in threads {
        if t.join().is_err() {
            warn!("a worker thread panicked");
        }
    }
    // Frames the workers handed over last.
    ctl.poll(clock_ms(started));
    for (r, port) in port_reports.iter_mut().zip(&ports) {
        if let Ok(s) = port.stats() {
            r.rx_packets = s.ipackets;
            r.tx_packets = s.opackets;
            r.rx_missed = s.imissed;
            r.rx_errors = s.ierrors;
            r.tx_errors = s.oerrors;
        }
        let _ = port.stop();
    }
    let workers: Vec<WorkerReport> = reports
        .iter()
        .map(|r| r.lock().map(|r| r.clone()).unwrap_or_default())
        .collect();
    let mut counters = WorkerCounters::default();
    let mut io = IoCounters::default();
    for w in &workers {
        counters.add(&w.counters);
        io.add(&w.io);
    }
    let mut by_port = BTreeMap::new();
    for p in &port_reports {
        by_port.insert(p.name.clone(), p.rx_packets);
    }
    info!(rx = ?by_port, tx = counters.tx_packets, drops = counters.total_drops(), "stopped");
    Ok(DaemonReport {
        ports: port_reports,
        workers,
        counters,
        io,
        neighbors: ctl.neighbor_counters(),
        control: ctl.counters(),
    })
}

/// Starts the health checker for `cfg`'s checks (`None`: there are none). It runs in the
/// exception path's namespace, so probes leave from the appliance's own addresses.
pub fn start_checker(cfg: &Config) -> Result<Option<Checker>, checker::CheckerError> {
    let plans = checker::plans(cfg);
    if plans.is_empty() {
        return Ok(None);
    }
    let netns = cfg
        .exception
        .netns
        .clone()
        .filter(|_| cfg.exception.enabled);
    Checker::start(netns, plans).map(Some)
}

/// Services that keep a down gateway's clients, and every checked (service, gateway).
pub fn health_policy(cfg: &Config) -> (HashSet<String>, HashSet<(String, String)>) {
    let keep = cfg
        .health
        .iter()
        .filter(|h| h.on_gateway_down == OnGatewayDown::Keep)
        .map(|h| h.service.clone())
        .collect();
    let checked = checker::plans(cfg)
        .into_iter()
        .map(|p| (p.service, p.gateway))
        .collect();
    (keep, checked)
}

/// The mbuf pool of a NUMA socket (`None`: unknown, any socket), created on first use.
fn socket_pool(
    pools: &mut BTreeMap<i32, Mempool>,
    socket: Option<u32>,
    mbufs: u32,
    data_room: u16,
) -> Result<Mempool, DaemonError> {
    let key = socket
        .and_then(|s| i32::try_from(s).ok())
        .unwrap_or(dpdk::SOCKET_ANY);
    if let Some(p) = pools.get(&key) {
        return Ok(*p);
    }
    let name = match socket {
        Some(s) => format!("vpnlb-s{s}"),
        None => "vpnlb-any".to_string(),
    };
    let pool = dpdk(
        format!("mbuf pool {name}"),
        Mempool::new(&name, mbufs, 256, data_room, key),
    )?;
    info!(pool = %name, mbufs, data_room, "mbuf pool created");
    pools.insert(key, pool);
    Ok(pool)
}

fn clock_ms(started: Instant) -> u64 {
    started.elapsed().as_millis() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eal_args_for_the_lab() {
        let cfg = crate::config::load_config(std::path::Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../conf/lab.toml"
        )))
        .unwrap();
        let a = eal_args(&cfg);
        let joined = a.join(" ");
        assert!(joined.contains("--no-huge"), "{joined}");
        assert!(
            joined.contains("net_af_packet0,iface=vlb-cl0,qpairs=1"),
            "{joined}"
        );
        assert!(joined.contains("--no-pci"), "{joined}");
        assert_eq!(device_name("net_pcap0,rx_pcap=a.pcap"), "net_pcap0");
        assert_eq!(device_args("0000:3b:00.0", 4), "0000:3b:00.0");
        assert_eq!(
            device_args("net_af_packet1,iface=x,qpairs=8", 4),
            "net_af_packet1,iface=x,qpairs=8"
        );
    }
}
