//! Start-up in named steps, so that a bad configuration never touches a device.
//!
//! [`Appliance::build`] runs, in order: `check_resources` (devices named, cores available),
//! the first snapshot, `bind_control_socket` (a second daemon on the same socket stops
//! here), `open_exception_path` and the HA routers (refused before any device when the
//! namespace is missing or a TAP cannot be made), `start_eal` (the control core only),
//! `start_ports` (one mbuf pool per NUMA socket, one RX and one TX queue per worker, RSS on
//! the L3 source for client ports and destination for backend ports), `Rings::create` (the
//! hand-off and control rings), `spawn_workers` (pinned, registered with the EAL), the
//! control thread's [`Control`], `wait_for_workers` (before VRRP), then the health checker,
//! the HA affinity sync and the redirect load reports. Each step is a function of its own and
//! fails with a [`StartError`] that names it.

use std::collections::{BTreeMap, HashSet};
use std::io;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use dataplane::affinity::HashKey;
use dataplane::model::{Role, Snapshot, SnapshotError};
use dataplane::steer::{Steering, RSS_KEY};
use dpdk::{
    DpdkError, Eal, Mempool, Port, PortConfig, Ring, RingConsumer, RingProducer, RssMode, RssStatus,
};
use tracing::{info, warn};

use super::api::WorkerQuery;
use super::control::{Control, Update};
use super::exception::{ExceptionError, ExceptionPath};
use super::ha::{Ha, HaError};
use super::loads::{LoadReports, LoadReportsError};
use super::metrics_http::{MetricsError, MetricsServer};
use super::sync::{PairSync, PairSyncError, SyncChannels};
use super::watchdog::Heartbeat;
use super::worker::{
    self, Clock, PortQueues, WorkerChannels, WorkerIdentity, WorkerQueues, WorkerReport,
    WorkerSetup, WorkerStart, WorkerSync, WorkerTiming,
};
use super::{device_name, eal_args, health_policy, start_checker, PortReport};
use crate::config::Config;
use crate::config::MetricsNamespace;
use crate::ctlsock::{Access, ControlSocket, ControlSockets, SocketOptions};
use crate::health::checker::{Checker, CheckerError};
use dataplane::exception::{ExceptionPolicer, ExceptionRates, ExceptionRules};

/// How long the control thread waits for the workers to start before VRRP begins.
const WORKER_START_LIMIT: Duration = Duration::from_secs(60);

/// Affinity changes a worker may record between two drains (one loop iteration: a few bursts
/// per port); more are counted as lost and the peer gets the whole table again.
const WORKER_CHANGE_LOG: usize = 4096;

/// Depth of every DPDK ring: enough to ride out a worker that is descheduled for a while (a
/// few ms at line rate).
const RING_SIZE: u32 = 4096;

/// Why the daemon could not start; each variant names the step that failed.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A port has no DPDK device.
    #[error("port.{port}.device: the daemon needs a DPDK device (a vdev string or a PCI address)")]
    NoDevice { port: String },
    /// `[exception] netns` names a namespace `ip netns add` has not made.
    #[error("exception.netns: no network namespace `{netns}` (/run/netns/{netns}; `ip netns add {netns}`)")]
    NoNetns { netns: String },
    /// `[dataplane] hugepages` with fewer free hugepages than `memory_mb`.
    #[error(
        "dataplane.memory_mb: {want_mb} MB of hugepages asked for, {free_mb} MB free (/proc/meminfo)"
    )]
    HugepagesShort { want_mb: u64, free_mb: u64 },
    /// A configured core is not in this process's affinity mask.
    #[error("dataplane: core {core} is not available to this process ({available} cores)")]
    CoreUnavailable { core: usize, available: usize },
    /// More workers than DPDK's 16-bit queue ids count (the configuration allows far fewer).
    #[error("dataplane.workers: {workers} workers, more than a port's queue ids can number")]
    TooManyWorkers { workers: usize },
    /// The first snapshot cannot be built from the configuration.
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
    /// The control socket cannot be bound (another daemon, a bad path).
    #[error("control socket {}: {source}", path.display())]
    ControlSocket { path: PathBuf, source: io::Error },
    #[error(transparent)]
    Exception(#[from] ExceptionError),
    #[error(transparent)]
    Ha(#[from] HaError),
    /// A DPDK call: `what` says which (EAL init, a port, a ring, a pool, a queue).
    #[error("{what}: {source}")]
    Dpdk { what: String, source: DpdkError },
    /// A ring meant for several producers refused another one.
    #[error("{ring} ring is single-producer")]
    SingleProducer { ring: &'static str },
    /// The OS refused a worker thread.
    #[error("cannot start worker {worker}: {source}")]
    WorkerThread { worker: usize, source: io::Error },
    /// Some worker did not allocate its shard in time.
    #[error("workers did not start within {} s", WORKER_START_LIMIT.as_secs())]
    WorkersLate,
    #[error(transparent)]
    Health(#[from] CheckerError),
    #[error(transparent)]
    Sync(#[from] PairSyncError),
    #[error(transparent)]
    Loads(#[from] LoadReportsError),
    #[error(transparent)]
    Metrics(#[from] MetricsError),
}

/// Names a failed DPDK call.
fn dpdk<T>(what: impl Into<String>, r: Result<T, DpdkError>) -> Result<T, StartError> {
    r.map_err(|source| StartError::Dpdk {
        what: what.into(),
        source,
    })
}

/// The started ports, how each steers clients to workers, and the mbuf pools.
pub(super) struct Ports {
    pub ports: Vec<Port>,
    pub reports: Vec<PortReport>,
    /// `Some` when clients are steered to workers in software.
    pub steering: Option<Steering>,
    /// `Some` when the NICs steer clients (RSS) to more than one worker: only ICMP errors are
    /// steered in software then.
    pub error_steering: Option<Steering>,
    /// One pool per NUMA socket that has ports.
    pools: Pools,
}

/// The worker threads and the control thread's links to them.
pub(super) struct Workers {
    pub threads: Vec<JoinHandle<()>>,
    /// What each worker publishes every 100 ms.
    pub reports: Vec<Arc<Mutex<WorkerReport>>>,
    /// Operator questions, one channel per worker.
    pub queries: Vec<Sender<WorkerQuery>>,
    /// Each worker's heartbeat, for the control thread's watchdog.
    pub progress: Vec<Heartbeat>,
    pub stop: Arc<AtomicBool>,
    /// Workers that have allocated their shard and entered their loop.
    pub running: Arc<AtomicUsize>,
}

impl Workers {
    /// A copy of every worker's last report.
    pub fn snapshot_reports(&self) -> Vec<WorkerReport> {
        collect_reports(&self.reports)
    }

    /// Stops the workers (each flushes its TX buffers) and waits for them.
    pub fn stop_and_join(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            if t.join().is_err() {
                warn!("a worker thread panicked");
            }
        }
    }
}

/// A copy of each report (a default one for a worker that panicked holding its lock).
pub(super) fn collect_reports(reports: &[Arc<Mutex<WorkerReport>>]) -> Vec<WorkerReport> {
    reports
        .iter()
        .map(|r| r.lock().map(|r| r.clone()).unwrap_or_default())
        .collect()
}

/// The side services of the control thread: each `None` when not configured.
pub(super) struct Services {
    pub ha: Option<Ha>,
    pub sync: Option<PairSync>,
    pub health: Option<Checker>,
    pub loads: Option<LoadReports>,
    /// `/metrics` over HTTP, when `[metrics] listen` is set.
    pub metrics: Option<MetricsServer>,
}

/// Everything built, before the control loop starts.
pub struct Appliance {
    pub(super) cfg: Config,
    /// When start-up began: the control thread's millisecond clock and `run_for` count from it.
    pub(super) started: Instant,
    pub(super) first: Arc<Snapshot>,
    pub(super) sock: ControlSockets,
    pub(super) ports: Ports,
    pub(super) workers: Workers,
    pub(super) ctl: Control,
    pub(super) services: Services,
}

impl Appliance {
    /// Builds the appliance from a validated configuration, step by step (see the module
    /// documentation); the workers are running when it returns.
    pub fn build(cfg: Config) -> Result<Appliance, StartError> {
        let started = Instant::now();
        preflight(&cfg)?;
        let first = Arc::new(Snapshot::build(cfg.spec.clone(), 1)?);
        let sock = bind_control_socket(&cfg)?;
        let exception = open_exception_path(&cfg)?;
        let ha = cfg.ha.as_ref().map(|h| Ha::new(h, &cfg.spec)).transpose()?;
        start_eal(&cfg)?;
        let mut ports = start_ports(&cfg)?;
        let rings = Rings::create(cfg.dataplane.workers.len())?;
        let clock = Clock::start();
        // The affinity sync with the other vpnlbd of an HA pair (not with a keepalived peer).
        let sync_channels = cfg
            .ha
            .as_ref()
            .filter(|h| h.peer.is_some())
            .map(|_| SyncChannels::new(cfg.dataplane.workers.len()));
        let (workers, links) = spawn_workers(
            &cfg,
            &first,
            &ports,
            rings.workers,
            sync_channels.as_ref(),
            clock,
        )?;
        let mut ctl = Control::new(
            Arc::clone(&first),
            rings.control.from_control,
            ports.pools.control_pool()?,
            rings.control.to_control,
            links.misses,
            links.updates,
        );
        if let Some(mut x) = exception {
            // The sync peer's datagrams get their own budget, apart from the exception
            // policer's (shared with whatever else aims at the appliance's addresses).
            if let Some((peer, h)) = cfg.ha.as_ref().and_then(|h| h.peer.map(|p| (p, h))) {
                x.set_sync_peer(peer, h.sync_port, h.sync_rate_pps);
            }
            ctl.set_exception_path(x);
        }
        // VRRP only once every worker receives: a router that cannot hear its peer's adverts
        // would take the VIPs after Master_Down_Interval (allocating a large shard takes
        // longer).
        if ha.is_some() {
            wait_for_workers(&workers, cfg.dataplane.workers.len())?;
        }
        let services = Services {
            ha,
            health: start_checker(&cfg)?,
            sync: start_pair_sync(&cfg, sync_channels.as_ref(), clock)?,
            loads: start_load_reports(&cfg, &first)?,
            metrics: start_metrics(&cfg)?,
        };
        Ok(Appliance {
            cfg,
            started,
            first,
            sock,
            ports,
            workers,
            ctl,
            services,
        })
    }

    /// Announces the addresses, starts VRRP and applies the health policy: what the control
    /// thread does once before its loop.
    pub(super) fn start(&mut self) {
        self.ctl.announce(&self.first);
        if let Some(h) = &mut self.services.ha {
            h.start(&mut self.ctl, Instant::now());
        }
        let (keep, checked): (HashSet<String>, HashSet<(String, String)>) =
            health_policy(&self.cfg);
        self.ctl.set_health_policy(keep, &checked);
    }
}

/// Every port names a device, and every configured core is ours.
/// What the daemon checks before it touches a device, beyond the configuration file itself:
/// every port has a device, every core is available, the exception path's namespace exists,
/// and hugepages (when asked for) cover `memory_mb`. `vpnlbd check` runs it too, so a
/// configuration it passes does not fail these at start.
pub fn preflight(cfg: &Config) -> Result<(), StartError> {
    let d = &cfg.dataplane;
    if let Some(p) = cfg.spec.ports.iter().find(|p| p.device.is_empty()) {
        return Err(StartError::NoDevice {
            port: p.name.clone(),
        });
    }
    let cores = core_affinity::get_core_ids().unwrap_or_default();
    for c in d.workers.iter().chain([&d.control_core]) {
        if !cores.iter().any(|id| id.id == *c) {
            return Err(StartError::CoreUnavailable {
                core: *c,
                available: cores.len(),
            });
        }
    }
    if let Some(ns) = cfg
        .exception
        .netns
        .as_ref()
        .filter(|_| cfg.exception.enabled)
    {
        if !std::path::Path::new("/run/netns").join(ns).exists() {
            return Err(StartError::NoNetns { netns: ns.clone() });
        }
    }
    if d.hugepages {
        let free_mb = free_hugepages_mb();
        if free_mb < u64::from(d.memory_mb) {
            return Err(StartError::HugepagesShort {
                want_mb: u64::from(d.memory_mb),
                free_mb,
            });
        }
    }
    if d.workers.contains(&d.control_core) {
        warn!(
            core = d.control_core,
            "the control thread shares its core with a worker (VRRP and the watchdog then \
             compete with a busy-polling loop): give it a core of its own in production"
        );
    }
    Ok(())
}

/// Free hugepages in MB, from `/proc/meminfo` (0 when it cannot be read).
fn free_hugepages_mb() -> u64 {
    let text = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let field = |name: &str| -> u64 {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    };
    field("HugePages_Free:") * field("Hugepagesize:") / 1024
}

/// The control sockets (the read-write one, and the read-only one if configured), bound before
/// any device.
fn bind_control_socket(cfg: &Config) -> Result<ControlSockets, StartError> {
    let c = &cfg.control;
    let bind = |path: &PathBuf,
                access: Access,
                group: &Option<crate::config::Group>|
     -> Result<ControlSocket, StartError> {
        if let Some(dir) = path.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        let options = SocketOptions {
            access,
            group: group.as_ref().map(|g| g.gid),
            idle_timeout: c.client_idle_timeout,
        };
        let sock = ControlSocket::bind_with(path, options).map_err(|source| {
            StartError::ControlSocket {
                path: path.clone(),
                source,
            }
        })?;
        info!(
            socket = %path.display(),
            access = access.name(),
            group = group.as_ref().map_or("", |g| g.name.as_str()),
            "control socket ready"
        );
        Ok(sock)
    };
    let read_write = bind(&c.socket, Access::ReadWrite, &c.socket_group)?;
    let read_only = c
        .readonly_socket
        .as_ref()
        .map(|p| bind(p, Access::ReadOnly, &c.readonly_socket_group))
        .transpose()?;
    Ok(ControlSockets {
        read_write,
        read_only,
    })
}

/// The kernel's side of the appliance's own addresses, when enabled.
fn open_exception_path(cfg: &Config) -> Result<Option<ExceptionPath>, StartError> {
    if !cfg.exception.enabled {
        return Ok(None);
    }
    Ok(Some(ExceptionPath::open(
        &cfg.exception,
        &cfg.spec,
        cfg.dataplane.mtu,
    )?))
}

fn start_eal(cfg: &Config) -> Result<(), StartError> {
    let args = eal_args(cfg);
    info!(args = ?args, "starting the EAL");
    dpdk("EAL init", Eal::init(&args)).map(drop)
}

/// The mbuf pools, one per NUMA socket that has ports, so mbufs are local to the NIC that
/// fills them; created on first use.
struct Pools {
    pools: BTreeMap<i32, Mempool>,
    mbufs: u32,
    data_room: u16,
}

impl Pools {
    /// Sized from `[dataplane]`: every descriptor, ring and buffer full at once, with room.
    fn new(cfg: &Config) -> Pools {
        let d = &cfg.dataplane;
        // Counted in u64: a count past u32::MAX (which no machine holds) becomes u32::MAX,
        // which the pool's creation then refuses, rather than a wrapped small one.
        let n_workers = d.workers.len() as u64;
        let n_ports = cfg.spec.ports.len() as u64;
        let mbufs = d.mbufs.unwrap_or_else(|| {
            let per_port =
                n_workers * (u64::from(d.rx_desc) + u64::from(d.tx_desc)) + u64::from(d.tx_desc);
            let buffers = n_workers * (n_ports + n_workers + 2) * 32;
            let total =
                n_ports * per_port + (n_workers + 1) * u64::from(RING_SIZE) + buffers + 4096;
            u32::try_from(total).unwrap_or(u32::MAX)
        });
        // The largest port's frames (and fragments, which are no longer) must fit one mbuf.
        let mtu = cfg.spec.ports.iter().map(|p| p.mtu).fold(d.mtu, u16::max);
        let data_room = (mtu + 14 + 8 + 4 + dpdk::MBUF_HEADROOM).max(dpdk::DEFAULT_DATA_ROOM);
        Pools {
            pools: BTreeMap::new(),
            mbufs,
            data_room,
        }
    }

    /// The pool of a NUMA socket (`None`: unknown, any socket).
    fn socket_pool(&mut self, socket: Option<u32>) -> Result<Mempool, StartError> {
        let key = socket
            .and_then(|s| i32::try_from(s).ok())
            .unwrap_or(dpdk::SOCKET_ANY);
        if let Some(p) = self.pools.get(&key) {
            return Ok(*p);
        }
        let name = match socket {
            Some(s) => format!("vpnlb-s{s}"),
            None => "vpnlb-any".to_string(),
        };
        let (mbufs, data_room) = (self.mbufs, self.data_room);
        let pool = dpdk(
            format!("mbuf pool {name}"),
            Mempool::new(&name, mbufs, 256, data_room, key),
        )?;
        info!(pool = %name, mbufs, data_room, "mbuf pool created");
        self.pools.insert(key, pool);
        Ok(pool)
    }

    /// The pool `start_port` made for `port`'s socket (workers build fragments for the port
    /// in it); `None` before that.
    fn port_pool(&self, port: &Port) -> Option<Mempool> {
        let key = port
            .socket_id()
            .and_then(|s| i32::try_from(s).ok())
            .unwrap_or(dpdk::SOCKET_ANY);
        self.pools.get(&key).copied()
    }

    /// The pool the control thread builds its frames in: the first port's.
    fn control_pool(&mut self) -> Result<Mempool, StartError> {
        match self.pools.values().next() {
            Some(p) => Ok(*p),
            None => self.socket_pool(None),
        }
    }
}

/// Attaches, configures and starts every port: one RX and one TX queue per worker. The
/// control thread's own frames go out through worker 0, as some PMDs (net_af_packet among
/// them) tie RX and TX queues in pairs and an RX queue nobody polls would lose frames.
fn start_ports(cfg: &Config) -> Result<Ports, StartError> {
    let n_workers = cfg.dataplane.workers.len();
    let queues = worker_count(cfg)?;
    let mut pools = Pools::new(cfg);
    let mut ports = Vec::new();
    let mut hardware_steering = n_workers.is_power_of_two();
    let mut notes = Vec::new();
    for i in 0..cfg.spec.ports.len() {
        let (port, rss) = start_port(cfg, i, &mut pools)?;
        let hw = matches!(
            rss,
            RssStatus::Enabled {
                reta_spread: true,
                ..
            }
        );
        if n_workers > 1 && !hw {
            hardware_steering = false;
        }
        notes.push(format!("{rss:?}"));
        ports.push(port);
    }
    let steering = (n_workers > 1 && !hardware_steering).then(|| Steering::new(queues));
    // The NICs steer clients; ICMP errors, hashed on a router's address, are re-steered by
    // the quoted client in software with the same key and table.
    let error_steering = (n_workers > 1 && hardware_steering).then(|| Steering::new(queues));
    let reports = cfg
        .spec
        .ports
        .iter()
        .zip(&notes)
        .map(|(p, note)| {
            let how = if n_workers == 1 {
                "single worker".to_string()
            } else if hardware_steering {
                format!("hardware RSS ({note})")
            } else {
                format!("software hand-off (RSS: {note})")
            };
            info!(port = %p.name, device = %p.device, steering = %how, "port started");
            PortReport {
                name: p.name.clone(),
                device: p.device.clone(),
                steering: how,
                rx_packets: 0,
                tx_packets: 0,
                rx_missed: 0,
                rx_errors: 0,
                tx_errors: 0,
            }
        })
        .collect();
    Ok(Ports {
        ports,
        reports,
        steering,
        error_steering,
        pools,
    })
}

/// The number of workers, which is every port's RX and TX queue count.
fn worker_count(cfg: &Config) -> Result<u16, StartError> {
    let workers = cfg.dataplane.workers.len();
    u16::try_from(workers).map_err(|_| StartError::TooManyWorkers { workers })
}

/// Port `i` of the configuration, configured and started; with what RSS came to.
fn start_port(cfg: &Config, i: usize, pools: &mut Pools) -> Result<(Port, RssStatus), StartError> {
    let d = &cfg.dataplane;
    let n_workers = d.workers.len();
    let p = &cfg.spec.ports[i];
    let name = device_name(&p.device);
    let port = dpdk(format!("port {} ({name})", p.name), Port::by_name(name))?;
    if usize::from(port.id()) != i {
        warn!(port = %p.name, dpdk_id = port.id(), "DPDK port id differs from config order");
    }
    let pool = pools.socket_pool(port.socket_id())?;
    let mut pc = PortConfig::new(pool);
    let queues = worker_count(cfg)?;
    pc.rx_queues = queues;
    pc.tx_queues = queues;
    pc.rx_desc = d.rx_desc;
    pc.tx_desc = d.tx_desc;
    pc.rss = if n_workers > 1 {
        rss_mode(cfg, i)
    } else {
        RssMode::None
    };
    pc.rss_key = RSS_KEY;
    pc.checksum_offload = false;
    pc.mtu = p.mtu;
    let setup = dpdk(format!("configure port {}", p.name), port.configure(&pc))?;
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
    Ok((port, setup.rss))
}

/// RSS on the L3 source for a port of client interfaces, on the destination for backend
/// ones; none for a port carrying both (on VLANs), which cannot be hashed on one address.
fn rss_mode(cfg: &Config, port: usize) -> RssMode {
    let roles: Vec<Role> = cfg
        .spec
        .interfaces
        .iter()
        .filter(|itf| usize::from(itf.port) == port)
        .map(|itf| itf.role)
        .collect();
    match (
        roles.contains(&Role::Client),
        roles.contains(&Role::Backend),
    ) {
        (true, false) => RssMode::L3Src,
        (false, true) => RssMode::L3Dst,
        _ => RssMode::None,
    }
}

/// The DPDK rings: one hand-off ring per worker (any worker may produce), two to the control
/// thread, one from it.
struct Rings {
    workers: WorkerRings,
    control: ControlRings,
}

/// The workers' ends of the rings.
struct WorkerRings {
    handoff_producers: Vec<RingProducer>,
    handoff_consumers: Vec<RingConsumer>,
    /// Urgent, then other (see `dataplane::exception`).
    to_control: [RingProducer; 2],
    /// Worker 0's.
    from_control: RingConsumer,
}

/// The control thread's ends of the rings.
struct ControlRings {
    to_control: [RingConsumer; 2],
    from_control: RingProducer,
}

impl Rings {
    fn create(n_workers: usize) -> Result<Rings, StartError> {
        let mut handoff_producers = Vec::new();
        let mut handoff_consumers = Vec::new();
        for w in 0..n_workers {
            let ring = dpdk(
                "hand-off ring",
                Ring::new(
                    &format!("handoff{w}"),
                    RING_SIZE,
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
        // gateways) on a ring of their own, so a flood at the appliance's address cannot crowd
        // them out; see dataplane::exception.
        let to_control = |name: &str| {
            dpdk(
                format!("{name} ring"),
                Ring::new(name, RING_SIZE, dpdk::SOCKET_ANY, false, true),
            )
            .map(Ring::split)
        };
        let (urgent_tx, urgent_rx) = to_control("to-control-urgent")?;
        let (other_tx, other_rx) = to_control("to-control")?;
        // The control thread's own frames (ARP/ND, announcements) and the kernel's (exception
        // path), sent by worker 0.
        let from_control = dpdk(
            "from-control ring",
            Ring::new("from-control", RING_SIZE, dpdk::SOCKET_ANY, true, true),
        )?;
        let (from_tx, from_rx) = from_control.split();
        Ok(Rings {
            workers: WorkerRings {
                handoff_producers,
                handoff_consumers,
                to_control: [urgent_tx, other_tx],
                from_control: from_rx,
            },
            control: ControlRings {
                to_control: [urgent_rx, other_rx],
                from_control: from_tx,
            },
        })
    }
}

/// What the control thread keeps of the channels made for the workers.
struct WorkerLinks {
    /// Snapshot and reload updates, one channel per worker.
    updates: Vec<Sender<Update>>,
    /// Neighbor misses and requests heard, from all workers.
    misses: Receiver<dataplane::neighbor::NeighborReport>,
}

/// Starts one thread per configured worker core; each pins itself, allocates its pipeline
/// there and waits for the others (see [`worker::main`]).
fn spawn_workers(
    cfg: &Config,
    first: &Arc<Snapshot>,
    ports: &Ports,
    mut rings: WorkerRings,
    sync: Option<&SyncChannels>,
    clock: Clock,
) -> Result<(Workers, WorkerLinks), StartError> {
    let d = &cfg.dataplane;
    let n_workers = d.workers.len();
    // One affinity hash key for this run, unknown outside: chosen colliding addresses cannot
    // be aimed at one index bucket.
    let hash_key = HashKey::from_random(crate::random::words("affinity hash key"));
    let (miss_tx, miss_rx) = crossbeam_channel::bounded(1024);
    let mut workers = Workers {
        threads: Vec::new(),
        reports: Vec::new(),
        queries: Vec::new(),
        progress: Vec::new(),
        stop: Arc::new(AtomicBool::new(false)),
        running: Arc::new(AtomicUsize::new(0)),
    };
    let mut updates = Vec::new();
    let mut from_control = Some(rings.from_control);
    for (w, &core) in d.workers.iter().enumerate() {
        let index =
            u16::try_from(w).map_err(|_| StartError::TooManyWorkers { workers: n_workers })?;
        let queues = WorkerQueues {
            ports: worker_port_queues(ports, index)?,
            handoff_out: (0..n_workers)
                .map(|o| {
                    if o == w {
                        None
                    } else {
                        rings.handoff_producers[o].try_clone()
                    }
                })
                .collect(),
            handoff_in: rings.handoff_consumers.remove(0),
            to_control: [
                shared_producer(&rings.to_control[0], "to-control-urgent")?,
                shared_producer(&rings.to_control[1], "to-control")?,
            ],
            from_control: if w == 0 { from_control.take() } else { None },
        };
        let (update_tx, update_rx) = crossbeam_channel::bounded(4);
        updates.push(update_tx);
        let (query_tx, query_rx) = crossbeam_channel::bounded(1);
        workers.queries.push(query_tx);
        let report = Arc::new(Mutex::new(WorkerReport::default()));
        workers.reports.push(Arc::clone(&report));
        workers.progress.push(Heartbeat::new());
        let setup = WorkerSetup {
            identity: WorkerIdentity { index, core },
            queues,
            channels: WorkerChannels {
                updates: update_rx,
                queries: query_rx,
                misses: miss_tx.clone(),
                report,
                sync: sync.map(|c| WorkerSync {
                    changes_out: c.from_workers.0.clone(),
                    changes_in: c.to_workers[w].1.clone(),
                    lost: Arc::clone(&c.lost),
                }),
                progress: workers.progress[w].clone(),
            },
            timing: WorkerTiming {
                clock,
                tx_flush_us: d.tx_flush_us,
            },
            steering: ports.steering.clone(),
            error_steering: ports.error_steering.clone(),
            exception: ExceptionPolicer::new(
                ExceptionRates {
                    urgent_pps: cfg.exception.urgent_rate_pps,
                    other_pps: cfg.exception.worker_rate_pps,
                },
                // The HA peer's sync and heartbeat are urgent when they come from the backend.
                ExceptionRules {
                    peer: cfg.ha.as_ref().and_then(|h| h.peer),
                },
            ),
            stop: Arc::clone(&workers.stop),
        };
        let start = WorkerStart {
            snapshot: Arc::clone(first),
            running: Arc::clone(&workers.running),
            workers: n_workers,
            change_log: setup.channels.sync.is_some().then_some(WORKER_CHANGE_LOG),
            hash_key,
        };
        let t = std::thread::Builder::new()
            .name(format!("vpnlb-w{w}"))
            .spawn(move || worker::main(setup, start))
            .map_err(|source| StartError::WorkerThread { worker: w, source })?;
        workers.threads.push(t);
    }
    Ok((
        workers,
        WorkerLinks {
            updates,
            misses: miss_rx,
        },
    ))
}

/// Worker `w`'s RX and TX queue on every port, and the port's pool.
fn worker_port_queues(ports: &Ports, w: u16) -> Result<Vec<PortQueues>, StartError> {
    ports
        .ports
        .iter()
        .enumerate()
        .map(|(p, port)| {
            let pool = match ports.pools.port_pool(port) {
                Some(pool) => pool,
                None => dpdk(
                    format!("mbuf pool of port {p}"),
                    Err(DpdkError::PoolExhausted),
                )?,
            };
            Ok(PortQueues {
                rx: dpdk(format!("RX queue {w} of port {p}"), port.rx_queue(w))?,
                tx: dpdk(format!("TX queue {w} of port {p}"), port.tx_queue(w))?,
                pool,
            })
        })
        .collect()
}

fn shared_producer(ring: &RingProducer, name: &'static str) -> Result<RingProducer, StartError> {
    ring.try_clone()
        .ok_or(StartError::SingleProducer { ring: name })
}

/// Waits until every worker has its shard and polls, at most [`WORKER_START_LIMIT`].
fn wait_for_workers(workers: &Workers, n_workers: usize) -> Result<(), StartError> {
    let deadline = Instant::now() + WORKER_START_LIMIT;
    while workers.running.load(Ordering::Acquire) < n_workers {
        if Instant::now() >= deadline {
            return Err(StartError::WorkersLate);
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    Ok(())
}

/// The exception path's namespace, where the appliance's own sockets live (when enabled).
fn exception_netns(cfg: &Config) -> Option<&str> {
    cfg.exception
        .netns
        .as_deref()
        .filter(|_| cfg.exception.enabled)
}

/// The affinity sync with the HA peer, when `[ha]` names one.
fn start_pair_sync(
    cfg: &Config,
    channels: Option<&SyncChannels>,
    clock: Clock,
) -> Result<Option<PairSync>, StartError> {
    match (&cfg.ha, channels) {
        (Some(h), Some(c)) => Ok(Some(PairSync::new(
            h,
            &cfg.spec,
            exception_netns(cfg),
            c,
            clock,
        )?)),
        _ => Ok(None),
    }
}

/// The Prometheus endpoint, when `[metrics] listen` is set: in the exception path's namespace
/// or the daemon's own.
fn start_metrics(cfg: &Config) -> Result<Option<MetricsServer>, StartError> {
    let Some(addr) = cfg.metrics.listen else {
        return Ok(None);
    };
    let netns = match cfg.metrics.namespace {
        MetricsNamespace::Exception => exception_netns(cfg),
        MetricsNamespace::Management => None,
    };
    Ok(Some(MetricsServer::start(addr, netns)?))
}

/// Redirect mode's load reports, when a service redirects.
fn start_load_reports(cfg: &Config, first: &Snapshot) -> Result<Option<LoadReports>, StartError> {
    Ok(LoadReports::new(
        &cfg.redirect,
        first,
        exception_netns(cfg),
    )?)
}
