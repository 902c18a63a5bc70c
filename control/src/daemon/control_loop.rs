//! The control thread's loop, once the [`Appliance`] is built: each round drains the frames
//! the workers handed over ([`Control::poll`]), runs VRRP and the HA sync, takes the health
//! checker's transitions and the gateways' load reports, samples the gateway rates, answers
//! the control socket, and checks the stop conditions; then it sleeps 200 µs. Each of these is
//! a method of [`ControlLoop`], and each timer lives in `Timers`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dataplane::counters::WorkerCounters;
use dataplane::exception::{ExceptionClass, Suspect};
use dataplane::model::ApplianceSpec;
use tracing::{info, warn};

use super::api;
use super::appliance::{Appliance, Ports, Services, Workers};
use super::control::Control;
use super::metrics::{self, Lifecycle};
use super::pending::{Deferred, Origin};
use super::rates::GatewayRates;
use super::reload::{self, ReloadTxn};
use super::runtime_state::RuntimeState;
use super::watchdog::{self, Thread, Transition, Watchdog};
use super::worker::IoCounters;
use super::{DaemonReport, RunOptions};
use crate::config::Config;
use crate::ctlsock::{ControlSockets, Reply};
use crate::notify::Notifier;

/// How often systemd gets a new status line.
const STATUS_EVERY: Duration = Duration::from_secs(5);
/// How often the gateway rates are sampled.
const RATES_EVERY: Duration = Duration::from_secs(1);
/// How often the stop conditions (traffic idle, run time) are checked.
const STOP_CHECK_EVERY: Duration = Duration::from_millis(20);
/// The pause between two rounds.
const ROUND_PAUSE: Duration = Duration::from_micros(200);

/// The control loop's clocks.
struct Timers {
    /// When start-up began: the millisecond clock of [`Control::poll`] and `run_for`.
    started: Instant,
    last_rates: Instant,
    last_stop_check: Instant,
    /// Frames the ports had received at the last stop check, and since when that has not
    /// changed.
    last_rx: u64,
    idle_since: Instant,
    /// The last look at the workers' and the health checker's heartbeats.
    last_watchdog: Instant,
    last_status: Instant,
}

impl Timers {
    fn new(started: Instant) -> Timers {
        let now = Instant::now();
        Timers {
            started,
            last_rates: now,
            last_stop_check: now,
            last_rx: 0,
            idle_since: now,
            last_watchdog: now,
            last_status: now,
        }
    }

    /// Milliseconds since start-up.
    fn clock_ms(&self) -> u64 {
        crate::units::millis(self.started.elapsed())
    }
}

/// The running configuration and the file a reload re-reads.
struct Running {
    cfg: Config,
    path: PathBuf,
}

/// The control thread's state between start and shutdown.
pub struct ControlLoop {
    ctl: Control,
    sock: ControlSockets,
    running: Running,
    ports: Ports,
    workers: Workers,
    services: Services,
    rates: GatewayRates,
    timers: Timers,
    opts: RunOptions,
    /// The workers' exception counters at the last second's sample: what grew is logged.
    exception_seen: ExceptionSeen,
    /// The workers' and the health checker's progress (see `daemon::watchdog`).
    watchdog: Watchdog,
    /// Requests answered later: questions to the workers, reloads asked for.
    deferred: Deferred,
    /// The reload under way, if any (one at a time).
    reload: Option<ReloadTxn>,
    /// What the operator set at run time.
    runtime: RuntimeState,
    /// systemd's notify socket, when systemd started the daemon.
    notifier: Notifier,
    /// When the daemon started, how its reloads went (metrics).
    lifecycle: Lifecycle,
}

/// What the signal handlers set: stop (SIGINT, SIGTERM), reload (SIGHUP).
#[derive(Clone, Default)]
pub struct Signals {
    pub stop: Arc<AtomicBool>,
    pub reload: Arc<AtomicBool>,
}

/// The workers' exception policing and rule counters, summed.
#[derive(Clone, Copy, Default, PartialEq, Eq)]
struct ExceptionSeen {
    policed: [u64; ExceptionClass::COUNT],
    suspect: [u64; Suspect::COUNT],
}

/// The request handlers' view of the control loop's state (a macro, so that the borrows stay
/// per field and the control socket can be polled while they are held).
macro_rules! api_ctx {
    ($s:ident, $sockets:expr) => {
        api::Ctx {
            ctl: &mut $s.ctl,
            reports: &$s.workers.reports,
            queries: &$s.workers.queries,
            ports: &$s.ports.ports,
            port_reports: &$s.ports.reports,
            config_path: &$s.running.path,
            running: &mut $s.running.cfg,
            health: &mut $s.services.health,
            rates: &$s.rates,
            ha: $s.services.ha.as_ref(),
            sync: $s.services.sync.as_mut(),
            loads: $s.services.loads.as_ref(),
            sockets: $sockets,
            deferred: &mut $s.deferred,
            reload_running: $s.reload.is_some(),
            runtime: &mut $s.runtime,
            watchdog: &$s.watchdog,
            lifecycle: &$s.lifecycle,
            http: $s.services.metrics.as_ref().map(|m| m.counts()),
        }
    };
}

impl ControlLoop {
    /// Starts the control thread's work on a built appliance: announcements, VRRP, the health
    /// policy.
    /// `file_spec` is the configuration file's spec (the appliance runs it with the `runtime`
    /// values applied).
    pub fn start(
        mut appliance: Appliance,
        config_path: &Path,
        opts: RunOptions,
        runtime: RuntimeState,
        file_spec: ApplianceSpec,
    ) -> ControlLoop {
        appliance.start();
        let Appliance {
            cfg,
            started,
            first: _,
            sock,
            ports,
            workers,
            ctl,
            services,
        } = appliance;
        let mut cfg = cfg;
        cfg.spec = file_spec;
        let watchdog = Watchdog::new(cfg.dataplane.watchdog, workers.progress.len(), started);
        ControlLoop {
            watchdog,
            ctl,
            sock,
            running: Running {
                cfg,
                path: config_path.to_path_buf(),
            },
            ports,
            workers,
            services,
            rates: GatewayRates::default(),
            timers: Timers::new(started),
            opts,
            exception_seen: ExceptionSeen::default(),
            deferred: Deferred::default(),
            reload: None,
            runtime,
            notifier: Notifier::from_env(),
            lifecycle: Lifecycle::starting_now(),
        }
    }

    /// Runs rounds until `signals.stop` is set or a stop condition of [`RunOptions`] holds;
    /// `signals.reload` asks for a reload.
    pub fn run_until(&mut self, signals: &Signals) {
        // The workers forward from here on.
        let status = self.status_line();
        self.notifier.ready(&status);
        while !signals.stop.load(Ordering::Relaxed) {
            if signals.reload.swap(false, Ordering::Relaxed) {
                info!("SIGHUP: reloading the configuration");
                self.deferred.reloads.push(Origin::Signal);
            }
            if !self.round() {
                break;
            }
            std::thread::sleep(ROUND_PAUSE);
        }
    }

    /// One round; false when a stop condition says to stop.
    fn round(&mut self) -> bool {
        self.ctl.poll(self.timers.clock_ms());
        self.poll_ha();
        self.poll_health();
        self.poll_loads();
        if self.timers.last_watchdog.elapsed() >= watchdog::CHECK_EVERY {
            self.check_watchdog();
        }
        if self.timers.last_rates.elapsed() >= RATES_EVERY {
            self.sample_rates();
        }
        if self.notifier.is_active() {
            self.notify();
        }
        self.serve_control_socket();
        self.serve_metrics();
        self.poll_deferred();
        if self.timers.last_stop_check.elapsed() >= STOP_CHECK_EVERY {
            return !self.should_stop();
        }
        true
    }

    /// VRRP's adverts and timers; the pair sync, whose heartbeat may declare the master dead
    /// and holds preemption while this appliance pulls the master's table.
    fn poll_ha(&mut self) {
        let Some(h) = &mut self.services.ha else {
            return;
        };
        h.poll(&mut self.ctl, Instant::now());
        if let Some(s) = &mut self.services.sync {
            let now = Instant::now();
            s.poll(now, h.is_master());
            if s.master_silent_since().is_some() {
                h.peer_dead(&mut self.ctl, now);
            }
            h.hold_preemption(s.hold_preemption(now));
        }
    }

    /// The workers' and the health checker's heartbeats. A stall (or the end of the last one)
    /// is logged; the first stall makes the appliance step down from VRRP master, and the end
    /// of the last one brings back its priority, after the master's table (see `Ha::watchdog`).
    fn check_watchdog(&mut self) {
        let now = Instant::now();
        self.timers.last_watchdog = now;
        let was = self.watchdog.any_stalled();
        let w = &mut self.watchdog;
        w.begin(now);
        let cores = &self.running.cfg.dataplane.workers;
        for (i, beat) in self.workers.progress.iter().enumerate() {
            let t = w.observe(Thread::Worker(i), beat.read(), now);
            log_watchdog(Thread::Worker(i), cores.get(i).copied(), t);
        }
        let t = match &self.services.health {
            Some(c) => w.observe(Thread::HealthChecker, c.progress().read(), now),
            None => w.absent(Thread::HealthChecker, now),
        };
        log_watchdog(Thread::HealthChecker, None, t);
        let stalled = w.any_stalled();
        if stalled == was {
            return;
        }
        if let Some(h) = &mut self.services.ha {
            h.watchdog(&mut self.ctl, now, stalled);
        }
        if let Some(s) = self.services.sync.as_mut().filter(|_| !stalled) {
            s.pull_table(now);
        }
    }

    /// The health checker's gateway transitions, into the snapshots.
    fn poll_health(&mut self) {
        if let Some(c) = &self.services.health {
            while let Ok(ev) = c.events().try_recv() {
                self.ctl.set_health(&ev.service, &ev.gateway, ev.up);
            }
        }
    }

    /// Redirect mode: the gateways' load reports.
    fn poll_loads(&mut self) {
        if let Some(l) = &mut self.services.loads {
            l.poll(self.ctl.snapshot(), Instant::now());
        }
    }

    /// New clients per second per gateway, from the workers' reports.
    fn sample_rates(&mut self) {
        self.timers.last_rates = Instant::now();
        let workers = self.workers.snapshot_reports();
        self.rates
            .sample(self.ctl.snapshot(), &workers, self.timers.last_rates);
        let mut now = ExceptionSeen::default();
        for w in &workers {
            for (a, b) in now.policed.iter_mut().zip(w.io.exception_policed) {
                *a += b;
            }
            for (a, b) in now.suspect.iter_mut().zip(w.io.exception_suspect) {
                *a += b;
            }
        }
        log_exception_growth(&self.exception_seen, &now);
        self.exception_seen = now;
    }

    /// Answers what the control sockets' clients asked.
    fn serve_control_socket(&mut self) {
        let sockets = self.sock.stats();
        let mut ctx = api_ctx!(self, sockets);
        self.sock.poll(&mut |req| api::handle(req, &mut ctx));
    }

    /// Renders `/metrics` when the HTTP server asks for it.
    fn serve_metrics(&mut self) {
        let Some(server) = self.services.metrics.as_ref() else {
            return;
        };
        let sockets = self.sock.stats();
        let ctx = api_ctx!(self, sockets);
        server.answer(|| metrics::render(&ctx));
    }

    /// Requests answered later: starts the reloads asked for, moves the one under way on, and
    /// delivers what the workers answered.
    fn poll_deferred(&mut self) {
        let now = Instant::now();
        for (ticket, reply) in self.deferred.poll_questions(now) {
            self.sock.complete(ticket, &reply);
        }
        for origin in std::mem::take(&mut self.deferred.reloads) {
            if self.reload.is_some() {
                self.reply(
                    origin,
                    &Reply::Error("reload refused: a reload is in progress; try again".into()),
                );
                continue;
            }
            self.notifier.reloading();
            let mut parts = self.reload_parts();
            match reload::begin(&mut parts, origin, now) {
                Ok(txn) => self.reload = Some(txn),
                Err(e) => self.reload_over(origin, &Reply::Error(e)),
            }
        }
        let Some(mut txn) = self.reload.take() else {
            return;
        };
        let mut parts = self.reload_parts();
        match txn.poll(&mut parts, now) {
            Some(reply) => self.reload_over(txn.origin, &reply),
            None => self.reload = Some(txn),
        }
    }

    /// A reload is over, applied or refused: its reply, and systemd hears the daemon is ready
    /// again (a refused reload leaves the running configuration, which is ready).
    fn reload_over(&mut self, origin: Origin, reply: &Reply) {
        self.reply(origin, reply);
        self.lifecycle
            .reload_over(!matches!(reply, Reply::Error(_)));
        let status = match reply {
            Reply::Error(_) => format!("{} (last reload refused)", self.status_line()),
            _ => self.status_line(),
        };
        self.notifier.ready(&status);
    }

    /// systemd: the status line every few seconds, and its watchdog's ping while every worker
    /// and the health checker progress.
    fn notify(&mut self) {
        let now = Instant::now();
        self.notifier.watchdog(now, !self.watchdog.any_stalled());
        if self.timers.last_status.elapsed() >= STATUS_EVERY {
            self.timers.last_status = now;
            let status = self.status_line();
            self.notifier.status(&status);
        }
    }

    /// One line for `systemctl status`: VRRP state, gateways up, clients, traffic.
    fn status_line(&self) -> String {
        let role = match &self.services.ha {
            Some(h) if h.is_master() => "master",
            Some(_) => "backup",
            None => "standalone",
        };
        let snap = self.ctl.snapshot();
        let (mut up, mut all) = (0, 0);
        for svc in &snap.services {
            for gw in &svc.spec.gateways {
                all += 1;
                up += usize::from(gw.state == dataplane::schedule::GatewayState::Up);
            }
        }
        let workers = self.workers.snapshot_reports();
        let clients: usize = workers.iter().map(|w| w.affinity_entries).sum();
        let stalled = if self.watchdog.any_stalled() {
            ", a worker STALLED"
        } else {
            ""
        };
        format!(
            "{role}, {up}/{all} gateways up, {clients} clients, {} workers{stalled}",
            workers.len()
        )
    }

    fn reload_parts(&mut self) -> reload::Parts<'_> {
        reload::Parts {
            ctl: &mut self.ctl,
            running: &mut self.running.cfg,
            path: &self.running.path,
            health: &mut self.services.health,
            ha: self.services.ha.as_mut(),
            sync: self.services.sync.as_mut(),
            loads: &mut self.services.loads,
            runtime: &mut self.runtime,
        }
    }

    /// A reply to whoever asked: the control client, or the log for SIGHUP.
    fn reply(&mut self, origin: Origin, reply: &Reply) {
        match origin {
            Origin::Socket(ticket) => {
                self.sock.complete(ticket, reply);
            }
            Origin::Signal => match reply {
                Reply::Error(error) => warn!(%error, "SIGHUP reload"),
                Reply::Ok(v) => info!(reply = %v, "SIGHUP reload"),
                Reply::Text(t) => info!(reply = %t, "SIGHUP reload"),
            },
        }
    }

    /// Whether traffic stopped for `stop_after_idle` (after some arrived) or `run_for` is
    /// over.
    fn should_stop(&mut self) -> bool {
        let t = &mut self.timers;
        t.last_stop_check = Instant::now();
        let rx: u64 = self
            .ports
            .ports
            .iter()
            .filter_map(|p| p.stats().ok())
            .map(|s| s.ipackets)
            .sum();
        if rx != t.last_rx {
            t.last_rx = rx;
            t.idle_since = Instant::now();
        }
        if let Some(idle) = self.opts.stop_after_idle {
            if t.last_rx > 0 && t.idle_since.elapsed() >= idle {
                info!(idle_ms = crate::units::millis(idle), "no traffic: stopping");
                return true;
            }
        }
        if self.opts.run_for.is_some_and(|d| t.started.elapsed() >= d) {
            info!("run time elapsed: stopping");
            return true;
        }
        false
    }

    /// Leaves the HA pair, stops the workers, takes what they handed over last, stops the
    /// ports, and reports the final counters.
    pub fn shutdown(mut self) -> DaemonReport {
        if let Some(h) = &mut self.services.ha {
            // A master leaves with a priority-0 advert, so the backup takes over at once; give
            // worker 0 a moment to send it.
            h.shutdown(&mut self.ctl);
            std::thread::sleep(Duration::from_millis(5));
        }
        info!("stopping workers");
        self.workers.stop_and_join();
        // Frames the workers handed over last.
        self.ctl.poll(self.timers.clock_ms());
        self.stop_ports();
        let workers = self.workers.snapshot_reports();
        let mut counters = WorkerCounters::default();
        let mut io = IoCounters::default();
        for w in &workers {
            counters.add(&w.counters);
            io.add(&w.io);
        }
        let by_port: BTreeMap<&str, u64> = self
            .ports
            .reports
            .iter()
            .map(|p| (p.name.as_str(), p.rx_packets))
            .collect();
        info!(rx = ?by_port, tx = counters.tx_packets, drops = counters.total_drops(), "stopped");
        DaemonReport {
            ports: self.ports.reports,
            workers,
            counters,
            io,
            neighbors: self.ctl.neighbor_counters(),
            control: self.ctl.counters(),
        }
    }

    /// The ports' final statistics into their reports, then each port stopped.
    fn stop_ports(&mut self) {
        for (r, port) in self.ports.reports.iter_mut().zip(&self.ports.ports) {
            if let Ok(s) = port.stats() {
                r.rx_packets = s.ipackets;
                r.tx_packets = s.opackets;
                r.rx_missed = s.imissed;
                r.rx_errors = s.ierrors;
                r.tx_errors = s.oerrors;
            }
            let _ = port.stop();
        }
    }
}

/// A watched thread's stall or recovery, logged (nothing when `t` is `None`).
fn log_watchdog(thread: Thread, core: Option<usize>, t: Option<Transition>) {
    let (worker, core) = match thread {
        Thread::Worker(i) => (Some(i), core),
        Thread::HealthChecker => (None, None),
    };
    let thread = thread.label();
    match t {
        Some(Transition::Stalled { stalled_ms }) if worker.is_some() => warn!(
            worker, core, stalled_ms, %thread,
            "watchdog: a worker has stopped polling (its clients are black-holed): stepping down"
        ),
        Some(Transition::Stalled { stalled_ms }) => warn!(
            stalled_ms, %thread,
            "watchdog: the health checker has stalled (gateway health is stale): stepping down"
        ),
        Some(Transition::Recovered { stalled_ms }) => {
            info!(worker, core, stalled_ms, %thread, "watchdog: progress again")
        }
        None => {}
    }
}

/// Frames for the appliance that failed their class's rule or went over its budget in the last
/// second: one line a second at most (this runs once a second), only while it happens; the
/// counters (`show stats` → `exception_classes`) have the totals.
fn log_exception_growth(before: &ExceptionSeen, now: &ExceptionSeen) {
    if before == now {
        return;
    }
    let grown = |names: &mut dyn Iterator<Item = &'static str>, b: &[u64], n: &[u64]| {
        names
            .zip(b.iter().zip(n))
            .filter(|(_, (b, n))| n > b)
            .map(|(name, (b, n))| format!("{name}={}", n - b))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let suspect = grown(
        &mut Suspect::ALL.iter().map(|r| r.name()),
        &before.suspect,
        &now.suspect,
    );
    let policed = grown(
        &mut ExceptionClass::ALL.iter().map(|k| k.name()),
        &before.policed,
        &now.policed,
    );
    warn!(
        %suspect,
        %policed,
        "frames for the appliance itself refused in the last second (forged or over budget)"
    );
}
