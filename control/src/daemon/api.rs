//! Answers control-socket requests from the daemon's state: worker reports (published every
//! 100 ms), port statistics, the current snapshot, the neighbor cache, and, for affinity
//! entries, the workers themselves (each owns its shard and answers between bursts).

use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;
use dataplane::classify::Class;
use dataplane::counters::{DropReason, WorkerCounters};
use dataplane::exception::{ExceptionClass, Suspect};
use dataplane::redirect::Fallback;
use dataplane::schedule::GatewayState;
use dpdk::Port;
use serde::Serialize;
use serde_json::{json, Value};

use dataplane::model::ApplianceSpec;

use super::control::{Control, IdMap};
use super::ha::Ha;
use super::loads::LoadReports;
use super::pending::{Deferred, Gather, Origin, Question, QuestionKind, LISTING_TIMEOUT};
use super::rates::GatewayRates;
use super::runtime_state::{RuntimeState, Source};
use super::sync::PairSync;
use super::watchdog::Watchdog;
use super::worker::{IoCounters, WorkerReport};
use super::PortReport;
use crate::config::Config;
use crate::ctlsock::{Answer, ControlSocketStats, Reply, Request};
use crate::health::checker::Checker;

/// A question the control thread asks a worker; answered between bursts.
pub enum WorkerQuery {
    /// Entries of `client` (all when `None`), at most `limit`.
    Affinity {
        client: Option<IpAddr>,
        limit: usize,
        reply: Sender<Vec<AffinityRow>>,
    },
    /// Removes the entries of `client` (all when `None`); answers how many went.
    Flush {
        client: Option<IpAddr>,
        reply: Sender<usize>,
    },
    /// Tests only (`debug worker N ...`, `[control] fault_injection`): not answered.
    Fault(WorkerFault),
}

/// A fault a worker injects into itself when asked (tests only).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WorkerFault {
    /// Spin this long without polling or beating the heartbeat.
    Stall(Duration),
    /// Panic.
    Panic,
    /// Add this many synthetic established entries (measurements at scale).
    Fill { entries: u64 },
}

/// One affinity entry as `show affinity` lists it.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct AffinityRow {
    pub client: IpAddr,
    pub service: String,
    pub gateway: String,
    pub confirmed: bool,
    /// A redirected client, talking to the gateway's own address (routed, not translated).
    pub direct: bool,
    pub last_seen: u32,
    pub expires_at: u32,
    pub worker: usize,
}

/// Why the workers could not answer an operator's question.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum WorkerQueryError {
    /// The worker has not taken an earlier question yet.
    #[error("worker {worker} is busy; try again")]
    Busy { worker: usize },
    /// The worker did not answer within `pending::WORKER_TIMEOUT` (500 ms).
    #[error("worker {worker} did not answer")]
    NoAnswer { worker: usize },
}

/// Most entries `show affinity` lists.
const AFFINITY_LIMIT: usize = 1000;

/// What the handler reads and changes.
pub struct Ctx<'a> {
    pub ctl: &'a mut Control,
    pub reports: &'a [Arc<Mutex<WorkerReport>>],
    pub queries: &'a [Sender<WorkerQuery>],
    pub ports: &'a [Port],
    pub port_reports: &'a [PortReport],
    /// The file `reload` re-reads, and what is running now.
    pub config_path: &'a std::path::Path,
    pub running: &'a mut Config,
    /// The health checker, when any check is configured.
    pub health: &'a mut Option<Checker>,
    pub rates: &'a GatewayRates,
    /// The HA pair's VRRP, when `[ha]` is configured.
    pub ha: Option<&'a Ha>,
    /// The affinity sync with the other vpnlbd of the pair, when `[ha]` names a peer.
    pub sync: Option<&'a mut PairSync>,
    /// Redirect mode's load reports and loads, when a service redirects.
    pub loads: Option<&'a LoadReports>,
    /// The control sockets' clients and counters (as of the start of this poll).
    pub sockets: ControlSocketStats,
    /// Requests answered later (questions to the workers, reloads).
    pub deferred: &'a mut Deferred,
    /// A reload is under way (one at a time).
    pub reload_running: bool,
    /// What the operator set at run time.
    pub runtime: &'a mut RuntimeState,
    /// The workers' and the health checker's watchdog.
    pub watchdog: &'a Watchdog,
    /// When the daemon started, how its reloads went.
    pub lifecycle: &'a super::metrics::Lifecycle,
    /// The `/metrics` server's answers, when `[metrics] listen` is set.
    pub http: Option<super::metrics_http::HttpCounts>,
}

/// All workers' counters summed.
#[derive(Default)]
pub(super) struct Totals {
    pub counters: WorkerCounters,
    pub io: IoCounters,
}

impl Ctx<'_> {
    pub(super) fn workers(&self) -> Vec<WorkerReport> {
        super::appliance::collect_reports(self.reports)
    }

    pub(super) fn totals(&self) -> Totals {
        let mut t = Totals::default();
        for w in self.workers() {
            t.counters.add(&w.counters);
            t.io.add(&w.io);
        }
        t
    }
}

/// Answers `req`: now, or later for what needs the workers (see [`super::pending`]).
pub fn handle(req: Request, ctx: &mut Ctx<'_>) -> Answer {
    match req {
        Request::ShowAffinity { client } => show_affinity(ctx, client),
        Request::AffinityFlush { client } => affinity_flush(ctx, client),
        Request::Reload => {
            if ctx.reload_running {
                return Answer::Now(Reply::Error(
                    "reload refused: a reload is in progress; try again".into(),
                ));
            }
            let ticket = ctx.deferred.ticket();
            ctx.deferred.reloads.push(Origin::Socket(ticket));
            Answer::Later(ticket)
        }
        req => Answer::Now(handle_now(req, ctx)),
    }
}

/// The requests answered from the control thread's own state.
fn handle_now(req: Request, ctx: &mut Ctx<'_>) -> Reply {
    match req {
        Request::Ping => Reply::Ok(json!("pong")),
        Request::ShowStats => Reply::Ok(show_stats(ctx)),
        Request::ShowPorts => Reply::Ok(show_ports(ctx)),
        Request::ShowWorkers => Reply::Ok(show_workers(ctx)),
        Request::ShowGateways => Reply::Ok(json!(gateways(ctx))),
        Request::ShowHealth => Reply::Ok(Value::Array(health_rows(ctx))),
        Request::ShowVrrp => match ctx.ha {
            Some(h) => Reply::Ok(h.status()),
            None => Reply::Error("no [ha] section: this appliance is not part of a pair".into()),
        },
        Request::ShowSync => match &ctx.sync {
            Some(s) => Reply::Ok(s.status(std::time::Instant::now())),
            None => Reply::Error(
                "no affinity sync: [ha] has no peer (a keepalived peer, or no pair)".into(),
            ),
        },
        Request::ShowRedirect => Reply::Ok(redirect_status(ctx)),
        Request::ShowClasses => Reply::Ok(show_classes(ctx)),
        Request::ShowDrops => Reply::Ok(show_drops(ctx)),
        Request::ShowNeighbors => Reply::Ok(show_neighbors(ctx)),
        Request::GatewayDrain { name } => {
            set_gateway(ctx, &name, Some(GatewayState::Draining), None)
        }
        Request::GatewayEnable { name } => set_gateway(ctx, &name, Some(GatewayState::Up), None),
        Request::GatewayDisable { name } => set_gateway(ctx, &name, Some(GatewayState::Down), None),
        Request::GatewayWeight { name, weight } => set_gateway(ctx, &name, None, Some(weight)),
        Request::StatsPrometheus => Reply::Text(super::metrics::render(ctx)),
        Request::ShowAffinity { .. } | Request::AffinityFlush { .. } | Request::Reload => {
            Reply::Error("answered later".into())
        }
        r @ (Request::DebugWorkerStall { .. }
        | Request::DebugWorkerPanic { .. }
        | Request::DebugAffinityFill { .. }
        | Request::DebugHealthStall { .. }) => debug(ctx, &r),
    }
}

/// Tests only: `debug worker N stall MS`, `debug worker N panic`, `debug health stall MS`,
/// refused unless `[control] fault_injection`. Never waits: the worker takes the fault
/// between bursts and does not answer.
fn debug(ctx: &Ctx<'_>, req: &Request) -> Reply {
    if !ctx.running.control.fault_injection {
        return Reply::Error(
            "fault injection is off: `debug` commands need [control] fault_injection = true \
             (tests only)"
                .into(),
        );
    }
    let (worker, fault) = match *req {
        Request::DebugWorkerStall { worker, ms } => {
            (worker, WorkerFault::Stall(Duration::from_millis(ms)))
        }
        Request::DebugWorkerPanic { worker } => (worker, WorkerFault::Panic),
        Request::DebugAffinityFill { entries } => return fill(ctx, entries),
        Request::DebugHealthStall { ms } => {
            return match ctx.health.as_ref() {
                Some(c) => {
                    c.stall(Duration::from_millis(ms));
                    Reply::Ok(json!({"thread": "health-checker", "stall_ms": ms}))
                }
                None => Reply::Error("no health checks: there is no health checker".into()),
            };
        }
        _ => return Reply::Error(format!("`{req}` is not a debug command")),
    };
    let Some(q) = ctx.queries.get(worker) else {
        return Reply::Error(format!(
            "no worker {worker} (workers 0-{})",
            ctx.queries.len().saturating_sub(1)
        ));
    };
    match q.try_send(WorkerQuery::Fault(fault)) {
        Ok(()) => Reply::Ok(match fault {
            WorkerFault::Stall(d) => {
                json!({"thread": format!("worker{worker}"), "stall_ms": crate::units::millis(d)})
            }
            WorkerFault::Panic => json!({"thread": format!("worker{worker}"), "panic": true}),
            WorkerFault::Fill { entries } => json!({"worker": worker, "entries": entries}),
        }),
        Err(_) => Reply::Error(WorkerQueryError::Busy { worker }.to_string()),
    }
}

/// `show stats`: the summed counters, utilisation, burst latency and affinity occupancy.
fn show_stats(ctx: &Ctx<'_>) -> Value {
    let Totals { counters: c, io } = ctx.totals();
    let workers = ctx.workers();
    let mut hist = super::worker::burst_histogram();
    for w in &workers {
        let _ = hist.add(&w.burst_cycles);
    }
    let hz = dpdk::lcore::tsc_hz().max(1) as f64;
    let us = |cycles: u64| (cycles as f64 * 1e6 / hz * 100.0).round() / 100.0;
    let (confirmed, unconfirmed) = workers
        .iter()
        .fold((0, 0), |(a, b), w| (a + w.confirmed, b + w.unconfirmed));
    let capacity: usize = workers.iter().map(|w| w.affinity_capacity).sum();
    let bytes: usize = workers.iter().map(|w| w.affinity_bytes).sum();
    json!({
        "counters": c,
        "io": io,
        "utilisation": utilisation(&io),
        "burst_latency_us": {
            "bursts": hist.len(),
            "p50": us(hist.value_at_quantile(0.5)),
            "p99": us(hist.value_at_quantile(0.99)),
            "p99_9": us(hist.value_at_quantile(0.999)),
            "max": us(hist.max()),
        },
        "affinity_occupancy": {
            "confirmed": confirmed,
            "unconfirmed": unconfirmed,
            "capacity": capacity,
            "bytes": bytes,
            "bytes_per_entry": if capacity == 0 { 0.0 } else {
                (bytes as f64 / capacity as f64 * 10.0).round() / 10.0
            },
        },
        "neighbors": ctx.ctl.neighbor_counters(),
        "control": ctx.ctl.counters(),
        "exception": ctx.ctl.exception_counters(),
        "exception_classes": exception_classes(&io),
        "control_socket": control_socket_status(&ctx.sockets),
        "watchdog": ctx.watchdog.status(),
    })
}

/// `show stats`' `exception_classes`: per class of frames for the control thread, what its
/// per-worker budgets policed; per reason, the frames that failed their class's rule.
fn exception_classes(io: &super::worker::IoCounters) -> Value {
    let policed: serde_json::Map<String, Value> = ExceptionClass::ALL
        .iter()
        .map(|k| {
            (
                k.name().to_string(),
                json!(io.exception_policed[*k as usize]),
            )
        })
        .collect();
    let suspect: serde_json::Map<String, Value> = Suspect::ALL
        .iter()
        .map(|r| {
            (
                r.name().to_string(),
                json!(io.exception_suspect[*r as usize]),
            )
        })
        .collect();
    json!({"policed": policed, "suspect": suspect})
}

/// `show stats`' `control_socket`: per socket (`read_write`, and `read_only` when configured)
/// its clients, accepted clients, refused writes and idle disconnects.
fn control_socket_status(s: &ControlSocketStats) -> Value {
    let mut out = serde_json::Map::new();
    out.insert("read_write".into(), json!(s.read_write));
    if let Some(ro) = &s.read_only {
        out.insert("read_only".into(), json!(ro));
    }
    Value::Object(out)
}

/// `show ports`: link and statistics of each port.
fn show_ports(ctx: &Ctx<'_>) -> Value {
    Value::Array(
        ctx.port_reports
            .iter()
            .zip(ctx.ports)
            .map(|(r, p)| {
                let s = p.stats().unwrap_or_default();
                let link = p.link().unwrap_or_default();
                json!({
                    "name": r.name, "device": r.device, "link_up": link.up,
                    "speed_mbps": link.speed_mbps, "rx_packets": s.ipackets,
                    "tx_packets": s.opackets, "rx_missed": s.imissed,
                    "rx_errors": s.ierrors, "tx_errors": s.oerrors,
                    "rx_nombuf": s.rx_nombuf, "steering": r.steering,
                })
            })
            .collect(),
    )
}

/// `show workers`: one row per worker.
fn show_workers(ctx: &Ctx<'_>) -> Value {
    Value::Array(
        ctx.workers()
            .iter()
            .enumerate()
            .map(|(i, w)| {
                json!({
                    "worker": i, "core": w.core, "utilisation": utilisation(&w.io),
                    "bursts": w.io.rx_bursts, "rx_packets": w.counters.rx_packets,
                    "tx_packets": w.counters.tx_packets, "drops": w.counters.total_drops(),
                    "to_control": w.counters.to_control, "clients": w.affinity_entries,
                    "handoff_out": w.io.handoff_out, "handoff_in": w.io.handoff_in,
                    "handoff_dropped": w.io.handoff_dropped, "tx_dropped": w.io.tx_dropped,
                    "stalled": ctx.watchdog.worker(i).is_some_and(|x| x.stalled),
                    "stalls": ctx.watchdog.worker(i).map_or(0, |x| x.stalls),
                    "loop_max_us": w.loop_max_us, "loop_max_us_ever": w.loop_max_us_ever,
                })
            })
            .collect(),
    )
}

/// `show classes`: packets by traffic class.
fn show_classes(ctx: &Ctx<'_>) -> Value {
    let c = ctx.totals().counters;
    Value::Array(
        Class::ALL
            .iter()
            .map(|k| json!({"class": k.name(), "packets": c.class(*k)}))
            .collect(),
    )
}

/// `show drops`: the pipeline's drop reasons, then the workers' and exception path's own.
fn show_drops(ctx: &Ctx<'_>) -> Value {
    let Totals { counters: c, io } = ctx.totals();
    let mut rows: Vec<Value> = DropReason::ALL
        .iter()
        .map(|r| json!({"reason": r.name(), "packets": c.dropped(*r)}))
        .collect();
    for (name, n) in [
        ("handoff-ring-full", io.handoff_dropped),
        ("tx-ring-full", io.tx_dropped),
        ("fragment-no-mbuf", io.fragments_no_mbuf),
        ("control-ring-full", io.to_control_dropped),
        ("control-urgent-ring-full", io.to_control_urgent_dropped),
        (
            "exception-policed",
            ctx.ctl.exception_counters().map_or(0, |x| x.policed),
        ),
    ] {
        rows.push(json!({"reason": name, "packets": n}));
    }
    for k in ExceptionClass::ALL {
        let n = io.exception_policed[*k as usize];
        rows.push(json!({"reason": format!("exception-policed-{}", k.name()), "packets": n}));
    }
    for r in Suspect::ALL.iter().filter(|r| r.drops()) {
        let n = io.exception_suspect[*r as usize];
        rows.push(json!({"reason": format!("exception-{}", r.name()), "packets": n}));
    }
    Value::Array(rows)
}

/// `show neighbors`: the neighbor cache.
fn show_neighbors(ctx: &Ctx<'_>) -> Value {
    Value::Array(
        ctx.ctl
            .neighbor_view()
            .iter()
            .map(|n| {
                let interfaces = &ctx.ctl.snapshot().spec.interfaces;
                let interface = n
                    .interface
                    .and_then(|i| interfaces.get(usize::from(i)))
                    .map(|t| t.name.as_str());
                json!({"address": n.address, "mac": n.mac.map(|m| m.to_string()), "state": n.state,
                    "interface": interface})
            })
            .collect(),
    )
}

/// `show affinity [CLIENT]`: asks every worker; the reply ([`affinity_reply`]) comes when
/// they have answered.
fn show_affinity(ctx: &mut Ctx<'_>, client: Option<IpAddr>) -> Answer {
    let now = Instant::now();
    let asked = Gather::ask(ctx.queries, now, |reply| WorkerQuery::Affinity {
        client,
        limit: AFFINITY_LIMIT,
        reply,
    })
    .map(|g| match client {
        Some(_) => g,
        None => g.with_deadline(now + LISTING_TIMEOUT),
    });
    defer(ctx, asked.map(QuestionKind::Affinity))
}

/// The workers' entries, sorted, at most [`AFFINITY_LIMIT`].
pub fn affinity_reply(mut rows: Vec<AffinityRow>) -> Reply {
    rows.sort_by(|a, b| (a.client, &a.service).cmp(&(b.client, &b.service)));
    rows.truncate(AFFINITY_LIMIT);
    Reply::Ok(serde_json::to_value(rows).unwrap_or(Value::Null))
}

/// `affinity flush [CLIENT]`: how many entries the workers removed, when they have answered.
fn affinity_flush(ctx: &mut Ctx<'_>, client: Option<IpAddr>) -> Answer {
    let asked = Gather::ask(ctx.queries, Instant::now(), |reply| WorkerQuery::Flush {
        client,
        reply,
    });
    defer(ctx, asked.map(QuestionKind::Flush))
}

fn defer(ctx: &mut Ctx<'_>, asked: Result<QuestionKind, WorkerQueryError>) -> Answer {
    match asked {
        Ok(kind) => {
            let ticket = ctx.deferred.ticket();
            ctx.deferred.questions.push(Question { ticket, kind });
            Answer::Later(ticket)
        }
        Err(e) => Answer::Now(Reply::Error(e.to_string())),
    }
}

/// What a reload cannot change in a running daemon, if anything changed.
pub fn needs_restart(old: &Config, new: &Config) -> Option<&'static str> {
    let ports = |c: &Config| -> Vec<(String, String, u16)> {
        c.spec
            .ports
            .iter()
            .map(|p| (p.name.clone(), p.device.clone(), p.mtu))
            .collect()
    };
    if ports(old) != ports(new) {
        Some("the ports (names, devices or MTUs)")
    } else if old.dataplane != new.dataplane {
        Some("[dataplane]")
    } else if old.spec.affinity != new.spec.affinity {
        Some("[affinity] sizing")
    } else if old.control != new.control {
        Some("[control]")
    } else if old.exception != new.exception {
        Some("[exception]")
    } else if old.metrics != new.metrics {
        Some("[metrics]")
    } else if old.ha != new.ha || old.spec.ha != new.spec.ha {
        Some("[ha]")
    } else {
        None
    }
}

/// Old (service, gateway) ids → new ones, matched by name.
pub fn id_map(old: &ApplianceSpec, new: &ApplianceSpec) -> IdMap {
    old.services
        .iter()
        .map(|svc| {
            let s_new = new.services.iter().position(|n| n.name == svc.name);
            svc.gateways
                .iter()
                .map(|gw| {
                    let s = s_new?;
                    let g = new.services[s]
                        .gateways
                        .iter()
                        .position(|n| n.name == gw.name)?;
                    Some((u16::try_from(s).ok()?, u16::try_from(g).ok()?))
                })
                .collect()
        })
        .collect()
}

/// Busy share of a worker's (or all workers') cycles, 0.0-1.0 with 3 decimals.
fn utilisation(io: &IoCounters) -> f64 {
    let total = io.busy_cycles + io.idle_cycles;
    if total == 0 {
        return 0.0;
    }
    (io.busy_cycles as f64 / total as f64 * 1000.0).round() / 1000.0
}

/// `gateway NAME drain|enable|disable|weight N`: the new value runs at once, is remembered as
/// the operator's (it survives reloads and, with a state file, restarts), and the gateways'
/// rows say so.
fn set_gateway(
    ctx: &mut Ctx<'_>,
    name: &str,
    state: Option<GatewayState>,
    weight: Option<u32>,
) -> Reply {
    let changed = ctx.ctl.change_gateways(name, |g| {
        if let Some(s) = state {
            g.state = s;
        }
        if let Some(w) = weight {
            g.weight = w;
        }
    });
    match changed {
        Ok(n) => {
            ctx.runtime.set(&ctx.running.spec, name, state, weight);
            Reply::Ok(json!({"gateway": name, "services": n}))
        }
        Err(e) => Reply::Error(e.to_string()),
    }
}

/// A gateway's health as the checker sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Health {
    /// No health check is configured for it.
    Unchecked,
    Up,
    Down,
}

/// One gateway of one service, as `show gateways` lists it and the metrics export it.
#[derive(Clone, Debug, Serialize)]
pub struct GatewayRow {
    pub service: String,
    pub gateway: String,
    pub ipv4: Option<std::net::Ipv4Addr>,
    pub ipv6: Option<std::net::Ipv6Addr>,
    /// What the workers do, from the operator's state and the gateway's health.
    pub state: GatewayState,
    /// What the operator set (file, `vpnlbctl`, state file), health aside.
    pub admin_state: GatewayState,
    pub health: Health,
    pub weight: u32,
    pub clients: u64,
    pub new_clients: u64,
    pub admin_state_source: Source,
    pub weight_source: Source,
    pub new_clients_per_s: f64,
    pub to_gateway_packets: u64,
    pub from_gateway_packets: u64,
    pub to_gateway_bytes: u64,
    pub from_gateway_bytes: u64,
    pub health_transitions: u64,
    pub redirects: u64,
    pub routed_to_gateway_packets: u64,
    pub routed_from_gateway_packets: u64,
    pub routed_to_gateway_bytes: u64,
    pub routed_from_gateway_bytes: u64,
    /// Redirect mode: what the workers choose by.
    #[serde(flatten)]
    pub load: Option<GatewayLoad>,
}

/// A redirecting gateway's load.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct GatewayLoad {
    pub reported_tunnels: Option<u32>,
    pub report_age_ms: Option<u64>,
    pub load: f64,
    pub load_from_report: bool,
}

pub(super) fn gateways(ctx: &Ctx<'_>) -> Vec<GatewayRow> {
    let now = std::time::Instant::now();
    let snap = ctx.ctl.snapshot();
    let workers = ctx.workers();
    let status = ctx.health.as_ref().map(Checker::status);
    let base = ctx.ctl.base();
    let mut rows = Vec::new();
    for (s, svc) in snap.services.iter().enumerate() {
        for (g, gw) in svc.spec.gateways.iter().enumerate() {
            let mut c = dataplane::counters::GatewayCounters::default();
            let mut clients = 0u64;
            for w in &workers {
                if let Some(x) = w.counters.gateways.get(s).and_then(|v| v.get(g)) {
                    c.add(x);
                }
                if let Some(n) = w.active_clients.get(s).and_then(|v| v.get(g)) {
                    clients += u64::from(*n);
                }
            }
            let name = &svc.spec.name;
            let admin = base
                .services
                .iter()
                .find(|b| &b.name == name)
                .and_then(|b| b.gateways.iter().find(|b| b.name == gw.name))
                .map_or(gw.state, |b| b.state);
            let checked = status.as_ref().and_then(|st| st.gateway(name, &gw.name));
            let sources = ctx.runtime.sources(&gw.name);
            let health = match checked {
                None => Health::Unchecked,
                Some(_) if ctx.ctl.is_unhealthy(name, &gw.name) => Health::Down,
                Some(_) => Health::Up,
            };
            let load = ctx.loads.map(|l| {
                let v = l.view(s, g, now);
                GatewayLoad {
                    reported_tunnels: v.reported_tunnels,
                    report_age_ms: v.report_age_ms,
                    load: v.load,
                    load_from_report: v.from_report,
                }
            });
            rows.push(GatewayRow {
                service: name.clone(),
                gateway: gw.name.clone(),
                ipv4: gw.ipv4,
                ipv6: gw.ipv6,
                state: gw.state,
                admin_state: admin,
                health,
                weight: gw.weight,
                clients,
                new_clients: c.new_clients,
                admin_state_source: sources.0,
                weight_source: sources.1,
                new_clients_per_s: ctx.rates.per_second(name, &gw.name),
                to_gateway_packets: c.to_gateway_packets,
                from_gateway_packets: c.from_gateway_packets,
                to_gateway_bytes: c.to_gateway_bytes,
                from_gateway_bytes: c.from_gateway_bytes,
                health_transitions: checked.map_or(0, |h| h.transitions),
                redirects: c.redirects,
                routed_to_gateway_packets: c.routed_to_gateway_packets,
                routed_from_gateway_packets: c.routed_from_gateway_packets,
                routed_to_gateway_bytes: c.routed_to_gateway_bytes,
                routed_from_gateway_bytes: c.routed_from_gateway_bytes,
                load,
            });
        }
    }
    rows
}

/// `show redirect`: per service its mode, what was not redirected and why, and the load
/// reports.
fn redirect_status(ctx: &Ctx<'_>) -> Value {
    let c = ctx.totals().counters;
    let snap = ctx.ctl.snapshot();
    let services: Vec<Value> = snap
        .services
        .iter()
        .enumerate()
        .map(|(s, svc)| {
            let sc = c.services.get(s).copied().unwrap_or_default();
            let fallbacks: serde_json::Map<String, Value> = Fallback::ALL
                .iter()
                .map(|f| (f.name().to_string(), json!(sc.fallbacks(*f))))
                .collect();
            let redirects: u64 = c
                .gateways
                .get(s)
                .map_or(0, |g| g.iter().map(|x| x.redirects).sum());
            json!({
                "service": svc.spec.name, "mode": svc.spec.mode.as_str(),
                "route_to_gateways": svc.spec.route_to_gateways,
                "redirects": redirects, "fallbacks": fallbacks,
                "malformed": sc.malformed_ike_sa_init,
            })
        })
        .collect();
    json!({
        "services": services,
        "reports": ctx.loads.map(LoadReports::status),
    })
}

/// One row per health check of every gateway.
fn health_rows(ctx: &Ctx<'_>) -> Vec<Value> {
    let Some(status) = ctx.health.as_ref().map(Checker::status) else {
        return Vec::new();
    };
    status
        .checks
        .iter()
        .map(|c| {
            json!({
                "service": c.service, "gateway": c.gateway, "check": c.check,
                "target": c.target, "state": c.state, "for_s": c.for_s, "last": c.last,
                "rtt_ms": c.rtt_us.map(|us| (us as f64 / 10.0).round() / 100.0),
                "probes": c.probes, "alive": c.alive, "timeouts": c.timeouts,
                "refused": c.refused, "unreachable": c.unreachable,
                "bad_responses": c.bad_responses, "socket_errors": c.socket_errors,
                "transitions": c.transitions,
            })
        })
        .collect()
}

/// `debug affinity fill N`: each worker adds its share of N synthetic entries, at its own pace
/// (`show stats` → affinity entries says how far they are).
fn fill(ctx: &Ctx<'_>, entries: u64) -> Reply {
    let n = ctx.queries.len().max(1) as u64;
    for (worker, q) in ctx.queries.iter().enumerate() {
        let share = entries / n + u64::from((worker as u64) < entries % n);
        if q.try_send(WorkerQuery::Fault(WorkerFault::Fill { entries: share }))
            .is_err()
        {
            return Reply::Error(WorkerQueryError::Busy { worker }.to_string());
        }
    }
    Reply::Ok(json!({"entries": entries, "workers": n}))
}
