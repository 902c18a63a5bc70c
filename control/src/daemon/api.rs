//! Answers control-socket requests from the daemon's state: worker reports (published every
//! 100 ms), port statistics, the current snapshot, the neighbor cache, and, for affinity
//! entries, the workers themselves (each owns its shard and answers between bursts).

use std::fmt::Write as _;
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
use dataplane::neighbor::NeighborCounters;

use super::control::{Control, IdMap};
use super::exception::ExceptionCounters;
use super::ha::{Ha, VrrpMetrics};
use super::loads::LoadReports;
use super::pending::{Deferred, Gather, Origin, Question, QuestionKind, LISTING_TIMEOUT};
use super::rates::GatewayRates;
use super::runtime_state::RuntimeState;
use super::sync::{PairSync, SyncMetrics};
use super::watchdog::Watchdog;
use super::worker::{IoCounters, WorkerReport};
use super::PortReport;
use crate::config::Config;
use crate::ctlsock::{Answer, ControlSocketStats, Reply, Request, SocketStats};
use crate::health::checker::{CheckStatus, Checker};

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
}

/// All workers' counters summed.
#[derive(Default)]
struct Totals {
    counters: WorkerCounters,
    io: IoCounters,
}

impl Ctx<'_> {
    fn workers(&self) -> Vec<WorkerReport> {
        super::appliance::collect_reports(self.reports)
    }

    fn totals(&self) -> Totals {
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
        Request::ShowGateways => Reply::Ok(Value::Array(gateways(ctx))),
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
        Request::StatsPrometheus => Reply::Text(prometheus(ctx)),
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

fn gateways(ctx: &Ctx<'_>) -> Vec<Value> {
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
                None => "unchecked",
                Some(_) if ctx.ctl.is_unhealthy(name, &gw.name) => "down",
                Some(_) => "up",
            };
            rows.push(json!({
                "service": name, "gateway": gw.name,
                "ipv4": gw.ipv4, "ipv6": gw.ipv6,
                // What the workers do, from the operator's state and the gateway's health.
                "state": gw.state.as_str(), "admin_state": admin.as_str(), "health": health,
                "weight": gw.weight, "clients": clients, "new_clients": c.new_clients,
                "admin_state_source": sources.0.as_str(), "weight_source": sources.1.as_str(),
                "new_clients_per_s": ctx.rates.per_second(name, &gw.name),
                "to_gateway_packets": c.to_gateway_packets,
                "from_gateway_packets": c.from_gateway_packets,
                "to_gateway_bytes": c.to_gateway_bytes,
                "from_gateway_bytes": c.from_gateway_bytes,
                "health_transitions": checked.map_or(0, |h| h.transitions),
                "redirects": c.redirects,
                "routed_to_gateway_packets": c.routed_to_gateway_packets,
                "routed_from_gateway_packets": c.routed_from_gateway_packets,
                "routed_to_gateway_bytes": c.routed_to_gateway_bytes,
                "routed_from_gateway_bytes": c.routed_from_gateway_bytes,
            }));
            if let (Some(l), Some(Value::Object(row))) = (ctx.loads, rows.last_mut()) {
                // Redirect mode: what the workers choose by.
                let v = l.view(s, g, now);
                row.insert("reported_tunnels".into(), json!(v.reported_tunnels));
                row.insert("report_age_ms".into(), json!(v.report_age_ms));
                row.insert("load".into(), json!(v.load));
                row.insert("load_from_report".into(), json!(v.from_report));
            }
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

/// Prometheus samples of one metric: (labels, value).
type Samples = Vec<(String, u64)>;

/// The Prometheus text exposition being written; every name gets the `vpnlb_` prefix.
#[derive(Default)]
struct Exposition {
    out: String,
}

impl Exposition {
    fn metric(&mut self, name: &str, help: &str, kind: &str, samples: &[(String, u64)]) {
        let _ = writeln!(
            self.out,
            "# HELP vpnlb_{name} {help}\n# TYPE vpnlb_{name} {kind}"
        );
        for (labels, v) in samples {
            let _ = writeln!(self.out, "vpnlb_{name}{labels} {v}");
        }
    }

    fn counter(&mut self, name: &str, help: &str, samples: &[(String, u64)]) {
        self.metric(name, help, "counter", samples);
    }

    fn gauge(&mut self, name: &str, help: &str, samples: &[(String, u64)]) {
        self.metric(name, help, "gauge", samples);
    }
}

/// One unlabelled sample.
fn one(v: u64) -> Samples {
    vec![(String::new(), v)]
}

/// A counter with a `direction` label: received, sent.
fn in_out(received: u64, sent: u64) -> Samples {
    vec![
        ("{direction=\"in\"}".to_string(), received),
        ("{direction=\"out\"}".to_string(), sent),
    ]
}

/// The `{service=...,gateway=...}` labels of a `show gateways` row.
fn gateway_label(r: &Value) -> String {
    format!(
        "{{service=\"{}\",gateway=\"{}\"}}",
        r["service"].as_str().unwrap_or(""),
        r["gateway"].as_str().unwrap_or("")
    )
}

/// One sample per gateway row: the row's `key`.
fn per_gateway(rows: &[Value], key: &str) -> Samples {
    rows.iter()
        .map(|r| (gateway_label(r), r[key].as_u64().unwrap_or(0)))
        .collect()
}

/// The Prometheus text exposition of the counters, family group by family group.
fn prometheus(ctx: &Ctx<'_>) -> String {
    let totals = ctx.totals();
    let mut x = Exposition::default();
    traffic_metrics(&mut x, &totals);
    let rows = gateways(ctx);
    gateway_metrics(&mut x, &rows);
    if ctx.loads.is_some() {
        redirect_metrics(&mut x, ctx, &rows, &totals.counters);
    }
    if let Some(l) = ctx.loads {
        load_metrics(&mut x, l, &rows);
    }
    if let Some(status) = ctx.health.as_ref().map(Checker::status) {
        health_metrics(&mut x, &status.checks);
    }
    neighbor_metrics(&mut x, &ctx.ctl.neighbor_counters());
    if let Some(e) = ctx.ctl.exception_counters() {
        exception_metrics(&mut x, &e);
    }
    if let Some(h) = ctx.ha {
        vrrp_metrics(&mut x, &h.metrics());
    }
    if let Some(s) = ctx.sync.as_deref() {
        sync_metrics(&mut x, &s.metrics(std::time::Instant::now()));
    }
    control_socket_metrics(&mut x, &ctx.sockets);
    watchdog_metrics(&mut x, ctx.watchdog);
    x.gauge(
        "snapshot_generation",
        "Generation of the configuration snapshot the workers run.",
        &one(ctx.ctl.snapshot().generation),
    );
    x.out
}

/// Frames and bytes in and out, by class, drops by reason, hand-offs.
fn traffic_metrics(x: &mut Exposition, t: &Totals) {
    let c = &t.counters;
    x.counter(
        "rx_packets_total",
        "Frames received by the workers.",
        &one(c.rx_packets),
    );
    x.counter(
        "tx_packets_total",
        "Frames transmitted by the workers.",
        &one(c.tx_packets),
    );
    x.counter(
        "rx_bytes_total",
        "Bytes received by the workers.",
        &one(c.rx_bytes),
    );
    x.counter(
        "tx_bytes_total",
        "Bytes transmitted by the workers.",
        &one(c.tx_bytes),
    );
    x.counter(
        "class_packets_total",
        "Packets by traffic class.",
        &Class::ALL
            .iter()
            .map(|k| (format!("{{class=\"{}\"}}", k.name()), c.class(*k)))
            .collect::<Vec<_>>(),
    );
    x.counter(
        "drops_total",
        "Frames dropped, by reason.",
        &DropReason::ALL
            .iter()
            .map(|r| (format!("{{reason=\"{}\"}}", r.name()), c.dropped(*r)))
            .collect::<Vec<_>>(),
    );
    x.counter(
        "mtu_fragmented_total",
        "IPv4 datagrams without DF longer than their egress port's MTU, fragmented.",
        &one(c.mtu.fragmented),
    );
    x.counter(
        "mtu_fragments_total",
        "Fragments made of them (also in tx_packets_total).",
        &one(c.mtu.fragments),
    );
    x.counter(
        "mtu_fragments_no_mbuf_total",
        "Fragments not sent for want of an mbuf.",
        &one(t.io.fragments_no_mbuf),
    );
    x.counter(
        "icmp_too_big_sent_total",
        "ICMP errors sent for packets longer than their egress port's MTU: fragmentation needed (IPv4 with DF), packet too big (IPv6).",
        &[
            ("{family=\"ipv4\"}".to_string(), c.mtu.frag_needed),
            ("{family=\"ipv6\"}".to_string(), c.mtu.packet_too_big),
        ],
    );
    x.counter(
        "affinity_prefix_quota_total",
        "Establishments refused because the client's prefix held its quota of established entries in a worker's shard ([affinity] prefix_quota_v4, prefix_quota_v6).",
        &one(c.affinity.prefix_quota),
    );
    x.counter(
        "handoffs_total",
        "Frames handed between workers (software steering).",
        &one(t.io.handoff_out),
    );
    x.counter(
        "exception_class_policed_total",
        "Frames for the control thread over their class's per-worker budget ([exception] urgent_rate_pps, worker_rate_pps).",
        &ExceptionClass::ALL
            .iter()
            .map(|k| {
                let n = t.io.exception_policed[*k as usize];
                (format!("{{class=\"{}\"}}", k.name()), n)
            })
            .collect::<Vec<_>>(),
    );
    x.counter(
        "exception_suspect_total",
        "Frames for the control thread that failed their class's rule (forged or routed VRRP, neighbor discovery, gateway or peer sources off the backend side).",
        &Suspect::ALL
            .iter()
            .map(|r| {
                let n = t.io.exception_suspect[*r as usize];
                (format!("{{reason=\"{}\"}}", r.name()), n)
            })
            .collect::<Vec<_>>(),
    );
}

/// Per gateway: clients, traffic, state and health.
fn gateway_metrics(x: &mut Exposition, rows: &[Value]) {
    x.gauge(
        "gateway_clients",
        "Clients whose affinity names the gateway.",
        &per_gateway(rows, "clients"),
    );
    x.counter(
        "gateway_to_packets_total",
        "Client packets forwarded to the gateway.",
        &per_gateway(rows, "to_gateway_packets"),
    );
    x.counter(
        "gateway_from_packets_total",
        "Gateway packets forwarded to clients.",
        &per_gateway(rows, "from_gateway_packets"),
    );
    let up: Samples = rows
        .iter()
        .map(|r| (gateway_label(r), u64::from(r["state"] == "up")))
        .collect();
    x.gauge("gateway_up", "1 when the gateway takes new clients.", &up);
    let healthy: Samples = rows
        .iter()
        .filter(|r| r["health"] != "unchecked")
        .map(|r| (gateway_label(r), u64::from(r["health"] == "up")))
        .collect();
    x.gauge(
        "gateway_healthy",
        "1 when every health check of the gateway passes (checked gateways only).",
        &healthy,
    );
    x.counter(
        "gateway_health_transitions_total",
        "Up/down changes of the gateway's health.",
        &per_gateway(rows, "health_transitions"),
    );
    x.counter(
        "gateway_new_clients_total",
        "Clients scheduled to the gateway.",
        &per_gateway(rows, "new_clients"),
    );
    x.counter(
        "gateway_to_bytes_total",
        "Client bytes forwarded to the gateway.",
        &per_gateway(rows, "to_gateway_bytes"),
    );
    x.counter(
        "gateway_from_bytes_total",
        "Gateway bytes forwarded to clients.",
        &per_gateway(rows, "from_gateway_bytes"),
    );
}

/// Redirect mode: redirects and routed traffic per gateway, fallbacks and malformed
/// requests per service.
fn redirect_metrics(x: &mut Exposition, ctx: &Ctx<'_>, rows: &[Value], c: &WorkerCounters) {
    x.counter(
        "gateway_redirects_total",
        "IKE_SA_INIT requests answered with a REDIRECT to the gateway.",
        &per_gateway(rows, "redirects"),
    );
    let routed: Samples = rows
        .iter()
        .flat_map(|r| {
            let l = gateway_label(r);
            let l = &l[1..l.len() - 1];
            [
                (
                    format!("{{{l},direction=\"to-gateway\"}}"),
                    r["routed_to_gateway_packets"].as_u64().unwrap_or(0),
                ),
                (
                    format!("{{{l},direction=\"from-gateway\"}}"),
                    r["routed_from_gateway_packets"].as_u64().unwrap_or(0),
                ),
            ]
        })
        .collect();
    x.counter(
        "gateway_routed_packets_total",
        "Redirected clients' packets routed (not translated) to and from the gateway.",
        &routed,
    );
    let reported: Samples = rows
        .iter()
        .filter_map(|r| Some((gateway_label(r), r["reported_tunnels"].as_u64()?)))
        .collect();
    x.gauge(
        "gateway_reported_tunnels",
        "Tunnels in the gateway's last load report.",
        &reported,
    );
    let mut fallbacks = Vec::new();
    let mut malformed = Vec::new();
    for (s, svc) in ctx.ctl.snapshot().services.iter().enumerate() {
        let sc = c.services.get(s).copied().unwrap_or_default();
        let name = &svc.spec.name;
        for f in Fallback::ALL {
            fallbacks.push((
                format!("{{service=\"{name}\",reason=\"{}\"}}", f.name()),
                sc.fallbacks(*f),
            ));
        }
        malformed.push((format!("{{service=\"{name}\"}}"), sc.malformed_ike_sa_init));
    }
    x.counter(
        "redirect_fallbacks_total",
        "IKE traffic of a redirecting service handed to NAT mode, by reason.",
        &fallbacks,
    );
    x.counter(
        "redirect_malformed_total",
        "IKE_SA_INIT requests to a redirecting service dropped unanswered.",
        &malformed,
    );
}

/// Redirect mode: the load reports and the loads redirects choose by.
fn load_metrics(x: &mut Exposition, l: &LoadReports, rows: &[Value]) {
    let rc = l.counters();
    let mut results = vec![("{result=\"accepted\"}".to_string(), rc.accepted)];
    for (r, n) in crate::loads::Reject::ALL.iter().zip(rc.rejected) {
        results.push((format!("{{result=\"{}\"}}", r.name()), n));
    }
    x.counter(
        "load_reports_total",
        "Gateway load reports, accepted or refused by reason.",
        &results,
    );
    // Milli-tunnels: the load is fractional while redirects decay.
    let loads: Samples = rows
        .iter()
        .filter_map(|r| {
            let load = r["load"].as_f64()?.max(0.0) * 1000.0;
            // Rounded first; `as` saturates (NaN: 0), the clamp wanted here.
            #[allow(clippy::cast_possible_truncation)]
            let millitunnels = load.round() as u64;
            Some((gateway_label(r), millitunnels))
        })
        .collect();
    x.gauge(
        "gateway_load_millitunnels",
        "The load redirects choose by (tunnels reported plus recent redirects, or decaying redirects), in thousandths of a tunnel.",
        &loads,
    );
}

/// Per health check: its state and its probes by result.
fn health_metrics(x: &mut Exposition, checks: &[CheckStatus]) {
    let check_label = |c: &CheckStatus| {
        format!(
            "service=\"{}\",gateway=\"{}\",check=\"{}\"",
            c.service, c.gateway, c.check
        )
    };
    x.gauge(
        "health_check_up",
        "1 when the health check passes (after rise/fall).",
        &checks
            .iter()
            .map(|c| {
                (
                    format!("{{{}}}", check_label(c)),
                    u64::from(c.state == "up"),
                )
            })
            .collect::<Vec<_>>(),
    );
    let mut probes = Vec::new();
    for c in checks {
        for (result, v) in [
            ("alive", c.alive),
            ("timeout", c.timeouts),
            ("refused", c.refused),
            ("unreachable", c.unreachable),
            ("bad-response", c.bad_responses),
            ("socket", c.socket_errors),
        ] {
            probes.push((format!("{{{},result=\"{result}\"}}", check_label(c)), v));
        }
    }
    x.counter("health_probes_total", "Health probes by result.", &probes);
}

/// The neighbor cache: resolutions, and the answers and resolutions it refused, by reason.
fn neighbor_metrics(x: &mut Exposition, n: &NeighborCounters) {
    x.counter(
        "neighbor_resolved_total",
        "Neighbors resolved by ARP or neighbor discovery.",
        &one(n.resolved),
    );
    let reason = |r: &str, v: u64| (format!("{{reason=\"{r}\"}}"), v);
    x.counter(
        "neighbor_refused_total",
        "Neighbor answers (and resolutions, cache-full) the neighbor cache refused.",
        &[
            reason("off-subnet", n.off_subnet),
            reason("wrong-interface", n.wrong_interface),
            reason("unsolicited", n.unsolicited_ignored),
            reason("static-override", n.static_override_ignored),
            reason("cache-full", n.cache_full),
        ],
    );
    x.counter(
        "neighbor_evicted_total",
        "Failed or incomplete neighbor entries dropped to make room.",
        &one(n.evicted),
    );
}

/// The exception path's frames both ways, its drops and what it policed.
fn exception_metrics(x: &mut Exposition, e: &ExceptionCounters) {
    x.counter(
        "exception_frames_total",
        "Frames on the exception path to and from the kernel.",
        &[
            ("{direction=\"to-kernel\"}".to_string(), e.to_kernel),
            ("{direction=\"from-kernel\"}".to_string(), e.from_kernel),
        ],
    );
    x.counter(
        "exception_dropped_total",
        "Frames the exception path could not pass on.",
        &[
            ("{direction=\"to-kernel\"}".to_string(), e.to_kernel_dropped),
            (
                "{direction=\"from-kernel\"}".to_string(),
                e.from_kernel_dropped,
            ),
        ],
    );
    x.counter(
        "exception_policed_total",
        "Frames for the kernel over [exception] rate_pps (urgent ones are policed by the workers).",
        &one(e.policed),
    );
    x.counter(
        "exception_sync_total",
        "HA sync peer datagrams for the kernel, on their own budget ([ha] sync_rate_pps).",
        &one(e.sync_in),
    );
    x.counter(
        "exception_sync_policed_total",
        "HA sync peer datagrams over [ha] sync_rate_pps (dropped).",
        &one(e.sync_policed),
    );
}

/// Per control socket (`socket` label: `read-write`, `read-only`): clients, refused writes,
/// idle disconnects.
fn control_socket_metrics(x: &mut Exposition, s: &ControlSocketStats) {
    let sockets: Vec<&SocketStats> = [Some(&s.read_write), s.read_only.as_ref()]
        .into_iter()
        .flatten()
        .collect();
    let per_socket = |value: fn(&SocketStats) -> u64| -> Samples {
        sockets
            .iter()
            .map(|s| (format!("{{socket=\"{}\"}}", s.access.name()), value(s)))
            .collect()
    };
    x.gauge(
        "control_clients",
        "Clients connected to the control socket.",
        &per_socket(|s| s.clients as u64),
    );
    x.counter(
        "control_refused_writes_total",
        "State-changing requests refused because the control socket is read-only.",
        &per_socket(|s| s.counters.refused_writes),
    );
    x.counter(
        "control_idle_disconnects_total",
        "Control clients disconnected for sending no request within [control] client_idle_timeout.",
        &per_socket(|s| s.counters.idle_disconnects),
    );
}

/// Per watched thread (`worker0`, ..., `health-checker`): stalled now, stalls so far; and the
/// times the appliance stepped down for one.
fn watchdog_metrics(x: &mut Exposition, w: &Watchdog) {
    let per_thread = |f: &dyn Fn(&super::watchdog::Watch) -> u64| -> Samples {
        w.watches()
            .map(|(t, s)| (format!("{{thread=\"{}\"}}", t.label()), f(s)))
            .collect()
    };
    x.gauge(
        "watchdog_stalled",
        "1 while the thread has made no progress for longer than [dataplane] watchdog.",
        &per_thread(&|s| u64::from(s.stalled)),
    );
    x.counter(
        "watchdog_stalls_total",
        "Times the thread made no progress for longer than [dataplane] watchdog.",
        &per_thread(&|s| s.stalls),
    );
    x.counter(
        "watchdog_step_downs_total",
        "Times a stalled thread made the appliance step down (VRRP priority 0, then backup).",
        &one(w.step_downs()),
    );
}

fn vrrp_metrics(x: &mut Exposition, m: &VrrpMetrics) {
    x.gauge(
        "vrrp_master",
        "1 while this appliance is the VRRP master.",
        &one(u64::from(m.master)),
    );
    x.counter(
        "vrrp_transitions_total",
        "VRRP state changes.",
        &one(m.transitions),
    );
    x.counter(
        "vrrp_adverts_total",
        "VRRP adverts received (valid) and sent.",
        &in_out(m.adverts_in, m.adverts_out),
    );
    x.counter(
        "vrrp_errors_total",
        "VRRP messages rejected (bad TTL, version, checksum, VRID, addresses, ...).",
        &one(m.errors),
    );
}

fn sync_metrics(x: &mut Exposition, m: &SyncMetrics) {
    let sc = &m.session;
    x.gauge(
        "sync_peer_alive",
        "1 while the HA peer's sync heartbeat is heard.",
        &one(u64::from(m.peer_alive)),
    );
    x.gauge(
        "sync_synced",
        "1 once this appliance holds the master's whole affinity table.",
        &one(u64::from(m.synced)),
    );
    x.gauge(
        "sync_lag_messages",
        "Sync messages sent that the peer has not acknowledged yet.",
        &one(m.lag),
    );
    x.gauge(
        "sync_entries",
        "Affinity entries in the sync mirror.",
        &one(m.entries as u64),
    );
    x.counter(
        "sync_messages_total",
        "Sync messages sent and accepted.",
        &in_out(sc.messages_in, sc.messages_out),
    );
    x.counter(
        "sync_entries_total",
        "Affinity changes carried by sync messages.",
        &in_out(sc.entries_in, sc.entries_out),
    );
    x.counter(
        "sync_resyncs_total",
        "Bulk transfers of the whole table, sent and received.",
        &in_out(sc.bulks_received, sc.bulks_sent),
    );
    x.counter(
        "sync_rejected_total",
        "Sync datagrams rejected (bad tag, replayed, malformed, other layout, ...).",
        &one(sc.rejects.total()),
    );
    x.counter(
        "sync_gaps_total",
        "Losses seen in the peer's sequence numbers.",
        &one(sc.gaps),
    );
    x.counter(
        "sync_resumes_total",
        "Bulk resumes after a loss: asked for (in), and served (out).",
        &in_out(sc.resumes_requested, sc.bulks_resumed),
    );
    x.counter(
        "sync_resumes_refused_total",
        "Resume requests too old for the resume log: the bulk restarted from the beginning.",
        &one(sc.resumes_refused),
    );
    x.counter(
        "sync_bulk_entries_sent_total",
        "Entries sent in bulk chunks, resent ones included.",
        &one(sc.bulk_entries_out),
    );
    x.counter(
        "sync_bulk_paced_total",
        "Polls where the bulk pacing ([ha] sync_bulk_rate) held chunks back.",
        &one(sc.bulk_paced),
    );
    x.counter(
        "sync_unconfirmed_skipped_total",
        "Entries not established that were not replicated.",
        &one(m.pair.unconfirmed_skipped),
    );
    x.counter(
        "sync_preempt_hold_expired_total",
        "Times preemption stopped being held before the master's table arrived \
         ([ha] sync_hold_max).",
        &one(m.pair.preempt_hold_expired),
    );
    x.counter(
        "sync_peer_deaths_total",
        "Times the peer's heartbeat stopped.",
        &one(m.pair.peer_deaths),
    );
    x.gauge(
        "ha_dual_master",
        "1 while both appliances are master: this one, and the peer by its authenticated sync \
         messages (for longer than the sync dead interval). VRRP itself is unauthenticated.",
        &one(u64::from(m.dual_master)),
    );
    x.counter(
        "ha_dual_master_events_total",
        "Times both appliances were master at once (one per episode).",
        &one(sc.dual_master_events),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sync(dual_master: bool, events: u64) -> SyncMetrics {
        SyncMetrics {
            peer_alive: true,
            synced: true,
            lag: 0,
            session: crate::sync::SyncCounters {
                dual_master_events: events,
                ..Default::default()
            },
            pair: Default::default(),
            entries: 0,
            dual_master,
        }
    }

    #[test]
    fn dual_master_is_a_gauge_and_a_counter() {
        let mut x = Exposition::default();
        sync_metrics(&mut x, &sync(false, 0));
        assert!(x
            .out
            .contains("# TYPE vpnlb_ha_dual_master gauge\nvpnlb_ha_dual_master 0\n"));
        assert!(x.out.contains(
            "# TYPE vpnlb_ha_dual_master_events_total counter\nvpnlb_ha_dual_master_events_total 0\n"
        ));
        let mut x = Exposition::default();
        sync_metrics(&mut x, &sync(true, 3));
        assert!(x.out.contains("\nvpnlb_ha_dual_master 1\n"), "{}", x.out);
        assert!(x.out.contains("\nvpnlb_ha_dual_master_events_total 3\n"));
    }
}
