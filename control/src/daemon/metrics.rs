//! The daemon's metrics in the Prometheus text format: `stats prometheus` on the control
//! socket and `/metrics` over HTTP (see [`super::metrics_http`]) render the same page.
//!
//! Everything is read from what the control thread already holds: the workers' reports
//! (published every 100 ms), port statistics, the snapshot, the checker's and the HA parts'
//! counters. Rendering never asks a worker anything. Names follow the Prometheus naming guide:
//! base units in the name (`_seconds`, `_bytes`), `_total` on counters.

use dataplane::classify::Class;
use dataplane::counters::DropReason;
use dataplane::exception::{ExceptionClass, Suspect};
use dataplane::model::ServiceMode;
use dataplane::neighbor::NeighborCounters;
use dataplane::redirect::Fallback;
use dataplane::schedule::GatewayState;

use super::api::{Ctx, GatewayRow, Health, Totals};
use super::exception::ExceptionCounters;
use super::ha::VrrpMetrics;
use super::loads::LoadReports;
use super::metrics_http::HttpCounts;
use super::sync::SyncMetrics;
use super::watchdog::Watchdog;
use super::worker::WorkerReport;
use crate::ctlsock::{ControlSocketStats, SocketStats};
use crate::exposition::{Exposition, HistogramValue};
use crate::health::checker::CheckStatus;

/// The daemon's life so far: when it started, and how its reloads went.
#[derive(Clone, Debug)]
pub struct Lifecycle {
    /// Unix time the daemon started, in seconds.
    pub started_unix_s: f64,
    pub reloads_applied: u64,
    pub reloads_refused: u64,
    /// Whether the last reload was applied (the start counts as one that was).
    pub last_reload_ok: bool,
    /// Unix time of the configuration that runs: the start, or the last applied reload.
    pub last_applied_unix_s: f64,
}

impl Lifecycle {
    pub fn starting_now() -> Self {
        let now = unix_now_s();
        Lifecycle {
            started_unix_s: now,
            reloads_applied: 0,
            reloads_refused: 0,
            last_reload_ok: true,
            last_applied_unix_s: now,
        }
    }

    /// A reload is over: applied or refused.
    pub fn reload_over(&mut self, applied: bool) {
        self.last_reload_ok = applied;
        if applied {
            self.reloads_applied += 1;
            self.last_applied_unix_s = unix_now_s();
        } else {
            self.reloads_refused += 1;
        }
    }
}

fn unix_now_s() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// Upper bounds of the burst latency histogram, in seconds: a burst of 32 frames takes a few
/// microseconds; hundreds mean the core is shared or the affinity table misses its cache.
const BURST_BUCKETS_S: [f64; 12] = [
    1e-6, 2e-6, 5e-6, 10e-6, 20e-6, 50e-6, 100e-6, 200e-6, 500e-6, 1e-3, 10e-3, 100e-3,
];

/// The whole page.
pub fn render(ctx: &Ctx<'_>) -> String {
    let mut x = Exposition::default();
    lifecycle_metrics(&mut x, ctx.lifecycle, ctx.ctl.snapshot().generation);
    let totals = ctx.totals();
    traffic_metrics(&mut x, &totals);
    port_metrics(&mut x, ctx);
    let workers = ctx.workers();
    worker_metrics(&mut x, &workers, dpdk::lcore::tsc_hz());
    let rows = super::api::gateways(ctx);
    gateway_metrics(&mut x, &rows);
    // The families of parts that are not configured are declared all the same, without
    // samples: a dashboard or alert can name every metric, whatever the appliance runs.
    redirect_metrics(&mut x, ctx, &rows, &totals);
    load_metrics(&mut x, ctx.loads, &rows);
    let checks = ctx
        .health
        .as_ref()
        .map(|c| c.status().checks)
        .unwrap_or_default();
    health_metrics(&mut x, &checks);
    neighbor_metrics(&mut x, &ctx.ctl.neighbor_counters());
    exception_metrics(&mut x, ctx.ctl.exception_counters().as_ref());
    vrrp_metrics(&mut x, ctx.ha.map(|h| h.metrics()).as_ref());
    let sync = ctx
        .sync
        .as_deref()
        .map(|s| s.metrics(std::time::Instant::now()));
    sync_metrics(&mut x, sync.as_ref());
    control_socket_metrics(&mut x, &ctx.sockets);
    http_metrics(&mut x, ctx.http.as_ref());
    watchdog_metrics(&mut x, ctx.watchdog);
    x.finish()
}

fn lifecycle_metrics(x: &mut Exposition, l: &Lifecycle, generation: u64) {
    x.gauge("build_info", "The running build: 1, with its version.")
        .sample(&[("version", env!("CARGO_PKG_VERSION"))], 1u64);
    x.gauge(
        "start_time_seconds",
        "When the daemon started, Unix time in seconds.",
    )
    .value(l.started_unix_s);
    x.counter(
        "config_reloads_total",
        "Reloads (SIGHUP, vpnlbctl reload), applied or refused.",
    )
    .sample(&[("result", "applied")], l.reloads_applied)
    .sample(&[("result", "refused")], l.reloads_refused);
    x.gauge(
        "config_last_reload_successful",
        "1 when the last reload was applied (or none was asked for), 0 when it was refused.",
    )
    .value(l.last_reload_ok);
    x.gauge(
        "config_last_reload_success_timestamp_seconds",
        "When the running configuration was applied (start or reload), Unix time in seconds.",
    )
    .value(l.last_applied_unix_s);
    x.gauge(
        "snapshot_generation",
        "Generation of the configuration snapshot the workers run.",
    )
    .value(generation);
}

/// Frames and bytes in and out, by class, drops by reason, hand-offs.
fn traffic_metrics(x: &mut Exposition, t: &Totals) {
    let c = &t.counters;
    x.counter("rx_packets_total", "Frames received by the workers.")
        .value(c.rx_packets);
    x.counter("tx_packets_total", "Frames transmitted by the workers.")
        .value(c.tx_packets);
    x.counter("rx_bytes_total", "Bytes received by the workers.")
        .value(c.rx_bytes);
    x.counter("tx_bytes_total", "Bytes transmitted by the workers.")
        .value(c.tx_bytes);
    let mut f = x.counter("class_packets_total", "Packets by traffic class.");
    for k in Class::ALL {
        f.sample(&[("class", k.name())], c.class(k));
    }
    let mut f = x.counter("drops_total", "Frames dropped, by reason.");
    for r in DropReason::ALL {
        f.sample(&[("reason", r.name())], c.dropped(*r));
    }
    x.counter(
        "mtu_fragmented_total",
        "IPv4 datagrams without DF longer than their egress port's MTU, fragmented.",
    )
    .value(c.mtu.fragmented);
    x.counter(
        "mtu_fragments_total",
        "Fragments made of them (also in tx_packets_total).",
    )
    .value(c.mtu.fragments);
    x.counter(
        "mtu_fragments_no_mbuf_total",
        "Fragments not sent for want of an mbuf.",
    )
    .value(t.io.fragments_no_mbuf);
    x.counter(
        "icmp_too_big_sent_total",
        "ICMP errors sent for packets longer than their egress port's MTU: fragmentation needed (IPv4 with DF), packet too big (IPv6).",
    )
    .sample(&[("family", "ipv4")], c.mtu.frag_needed)
    .sample(&[("family", "ipv6")], c.mtu.packet_too_big);
    x.counter(
        "affinity_prefix_quota_total",
        "Establishments refused because the client's prefix held its quota of established entries in a worker's shard ([affinity] prefix_quota_v4, prefix_quota_v6).",
    )
    .value(c.affinity.prefix_quota);
    x.counter(
        "handoffs_total",
        "Frames handed between workers (software steering).",
    )
    .value(t.io.handoff_out);
    let mut f = x.counter(
        "exception_class_policed_total",
        "Frames for the control thread over their class's per-worker budget ([exception] urgent_rate_pps, worker_rate_pps).",
    );
    for k in ExceptionClass::ALL {
        f.sample(&[("class", k.name())], t.io.exception_policed[*k as usize]);
    }
    let mut f = x.counter(
        "exception_suspect_total",
        "Frames for the control thread that failed their class's rule (forged or routed VRRP, neighbor discovery, gateway or peer sources off the backend side).",
    );
    for r in Suspect::ALL {
        f.sample(&[("reason", r.name())], t.io.exception_suspect[*r as usize]);
    }
}

/// A port counter: name, help, and where it is in the port's statistics.
type PortCounter = (&'static str, &'static str, fn(&dpdk::PortStats) -> u64);

/// Per port: link, and the NIC's own counters (what the workers never saw).
fn port_metrics(x: &mut Exposition, ctx: &Ctx<'_>) {
    let ports: Vec<_> = ctx
        .port_reports
        .iter()
        .zip(ctx.ports)
        .map(|(r, p)| {
            (
                r.name.as_str(),
                p.link().unwrap_or_default(),
                p.stats().unwrap_or_default(),
            )
        })
        .collect();
    let mut f = x.gauge("port_link_up", "1 while the port's link is up.");
    for (name, link, _) in &ports {
        f.sample(&[("port", name)], link.up);
    }
    let mut f = x.gauge(
        "port_speed_bytes_per_second",
        "The link's speed (the Prometheus base unit is bytes: multiply by 8 for bits).",
    );
    for (name, link, _) in &ports {
        f.sample(&[("port", name)], u64::from(link.speed_mbps) * 125_000);
    }
    let counters: [PortCounter; 6] = [
        (
            "port_rx_packets_total",
            "Frames the port received.",
            |s| s.ipackets,
        ),
        (
            "port_tx_packets_total",
            "Frames the port sent.",
            |s| s.opackets,
        ),
        (
            "port_rx_missed_packets_total",
            "Frames the NIC dropped because its receive queues were full (imissed): the workers did not keep up.",
            |s| s.imissed,
        ),
        (
            "port_rx_nombuf_total",
            "Receive mbuf allocation failures: the mbuf pool ran dry.",
            |s| s.rx_nombuf,
        ),
        (
            "port_rx_errors_total",
            "Erroneous frames received.",
            |s| s.ierrors,
        ),
        (
            "port_tx_errors_total",
            "Frames the port failed to send.",
            |s| s.oerrors,
        ),
    ];
    for (name, help, value) in counters {
        let mut f = x.counter(name, help);
        for (port, _, stats) in &ports {
            f.sample(&[("port", port)], value(stats));
        }
    }
}

/// Per worker: busy and idle time (utilisation is their rates' ratio), the burst latency
/// histogram; the affinity table's occupancy.
fn worker_metrics(x: &mut Exposition, workers: &[WorkerReport], tsc_hz: u64) {
    let hz = tsc_hz.max(1) as f64;
    let seconds = |cycles: u64| cycles as f64 / hz;
    let labels: Vec<String> = (0..workers.len()).map(|i| i.to_string()).collect();
    let mut f = x.counter(
        "worker_busy_seconds_total",
        "Time a worker spent on bursts that carried frames (utilisation: its rate over busy plus idle).",
    );
    for (w, l) in workers.iter().zip(&labels) {
        f.sample(&[("worker", l)], seconds(w.io.busy_cycles));
    }
    let mut f = x.counter(
        "worker_idle_seconds_total",
        "Time a worker spent polling empty queues.",
    );
    for (w, l) in workers.iter().zip(&labels) {
        f.sample(&[("worker", l)], seconds(w.io.idle_cycles));
    }
    let mut f = x.histogram(
        "burst_latency_seconds",
        "Time to process one received burst, from the first parse to the verdicts.",
    );
    for (w, l) in workers.iter().zip(&labels) {
        f.observe(&[("worker", l)], &burst_histogram(w, hz));
    }
    let (confirmed, unconfirmed) = workers
        .iter()
        .fold((0, 0), |(a, b), w| (a + w.confirmed, b + w.unconfirmed));
    x.gauge(
        "affinity_entries",
        "Affinity entries: established (confirmed) and not yet (unconfirmed).",
    )
    .sample(&[("state", "confirmed")], confirmed)
    .sample(&[("state", "unconfirmed")], unconfirmed);
    x.gauge(
        "affinity_capacity_entries",
        "Entries the affinity table holds at most, all workers' shards together.",
    )
    .value(workers.iter().map(|w| w.affinity_capacity).sum::<usize>());
    x.gauge(
        "affinity_memory_bytes",
        "Memory of the affinity table, all shards.",
    )
    .value(workers.iter().map(|w| w.affinity_bytes).sum::<usize>());
}

/// A worker's burst cycles as a Prometheus histogram in seconds (cumulative since start, as
/// the worker's own histogram is).
fn burst_histogram(w: &WorkerReport, hz: f64) -> HistogramValue {
    let h = &w.burst_cycles;
    // Bounds in cycles; rounded down, so a bucket never claims a slower burst.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let buckets = BURST_BUCKETS_S
        .iter()
        .map(|&le| (le, h.count_between(0, (le * hz) as u64)))
        .collect();
    HistogramValue {
        buckets,
        count: h.len(),
        sum: h.mean() * h.len() as f64 / hz,
    }
}

/// Per gateway: clients, traffic, state, weight and health.
fn gateway_metrics(x: &mut Exposition, rows: &[GatewayRow]) {
    fn each<T: Into<crate::exposition::Number>>(
        x: &mut Exposition,
        rows: &[GatewayRow],
        counter: bool,
        name: &str,
        help: &str,
        value: impl Fn(&GatewayRow) -> Option<T>,
    ) {
        let mut f = if counter {
            x.counter(name, help)
        } else {
            x.gauge(name, help)
        };
        for r in rows {
            if let Some(v) = value(r) {
                f.sample(&[("service", &r.service), ("gateway", &r.gateway)], v);
            }
        }
    }
    each(
        x,
        rows,
        false,
        "gateway_clients",
        "Clients whose affinity names the gateway.",
        |r| Some(r.clients),
    );
    each(
        x,
        rows,
        true,
        "gateway_to_packets_total",
        "Client packets forwarded to the gateway.",
        |r| Some(r.to_gateway_packets),
    );
    each(
        x,
        rows,
        true,
        "gateway_from_packets_total",
        "Gateway packets forwarded to clients.",
        |r| Some(r.from_gateway_packets),
    );
    each(
        x,
        rows,
        true,
        "gateway_to_bytes_total",
        "Client bytes forwarded to the gateway.",
        |r| Some(r.to_gateway_bytes),
    );
    each(
        x,
        rows,
        true,
        "gateway_from_bytes_total",
        "Gateway bytes forwarded to clients.",
        |r| Some(r.from_gateway_bytes),
    );
    each(
        x,
        rows,
        true,
        "gateway_new_clients_total",
        "Clients scheduled to the gateway.",
        |r| Some(r.new_clients),
    );
    each(
        x,
        rows,
        false,
        "gateway_up",
        "1 when the gateway takes new clients (the operator's state and its health together).",
        |r| Some(r.state == GatewayState::Up),
    );
    each(
        x,
        rows,
        false,
        "gateway_healthy",
        "1 when every health check of the gateway passes (checked gateways only).",
        |r| (r.health != Health::Unchecked).then_some(r.health == Health::Up),
    );
    each(
        x,
        rows,
        true,
        "gateway_health_transitions_total",
        "Up/down changes of the gateway's health.",
        |r| Some(r.health_transitions),
    );
    each(
        x,
        rows,
        false,
        "gateway_weight",
        "The gateway's weight (the file's, or the operator's from vpnlbctl).",
        |r| Some(r.weight),
    );
    let mut f = x.gauge(
        "gateway_admin_state",
        "1 for the state the operator set (up, draining, down), health aside.",
    );
    for r in rows {
        for s in [GatewayState::Up, GatewayState::Draining, GatewayState::Down] {
            f.sample(
                &[
                    ("service", &r.service),
                    ("gateway", &r.gateway),
                    ("state", s.as_str()),
                ],
                r.admin_state == s,
            );
        }
    }
}

/// Redirect mode: redirects and routed traffic per gateway, fallbacks and malformed
/// requests per service.
fn redirect_metrics(x: &mut Exposition, ctx: &Ctx<'_>, rows: &[GatewayRow], t: &Totals) {
    let rows: Vec<&GatewayRow> = rows.iter().filter(|r| r.load.is_some()).collect();
    let mut f = x.counter(
        "gateway_redirects_total",
        "IKE_SA_INIT requests answered with a REDIRECT to the gateway.",
    );
    for r in &rows {
        f.sample(
            &[("service", &r.service), ("gateway", &r.gateway)],
            r.redirects,
        );
    }
    let mut f = x.counter(
        "gateway_routed_packets_total",
        "Redirected clients' packets routed (not translated) to and from the gateway.",
    );
    for r in &rows {
        for (direction, n) in [
            ("to-gateway", r.routed_to_gateway_packets),
            ("from-gateway", r.routed_from_gateway_packets),
        ] {
            f.sample(
                &[
                    ("service", &r.service),
                    ("gateway", &r.gateway),
                    ("direction", direction),
                ],
                n,
            );
        }
    }
    let mut f = x.gauge(
        "gateway_reported_tunnels",
        "Tunnels in the gateway's last load report.",
    );
    for r in &rows {
        if let Some(n) = r.load.and_then(|l| l.reported_tunnels) {
            f.sample(&[("service", &r.service), ("gateway", &r.gateway)], n);
        }
    }
    let snap = ctx.ctl.snapshot();
    let redirecting = |mode: ServiceMode| mode == ServiceMode::Redirect;
    let mut f = x.counter(
        "redirect_fallbacks_total",
        "IKE traffic of a redirecting service handed to NAT mode, by reason.",
    );
    for (s, svc) in snap.services.iter().enumerate() {
        if !redirecting(svc.spec.mode) {
            continue;
        }
        let sc = t.counters.services.get(s).copied().unwrap_or_default();
        for r in Fallback::ALL {
            f.sample(
                &[("service", &svc.spec.name), ("reason", r.name())],
                sc.fallbacks(*r),
            );
        }
    }
    let mut f = x.counter(
        "redirect_malformed_total",
        "IKE_SA_INIT requests to a redirecting service dropped unanswered.",
    );
    for (s, svc) in snap.services.iter().enumerate() {
        if !redirecting(svc.spec.mode) {
            continue;
        }
        let sc = t.counters.services.get(s).copied().unwrap_or_default();
        f.sample(&[("service", &svc.spec.name)], sc.malformed_ike_sa_init);
    }
}

/// Redirect mode: the load reports and the loads redirects choose by.
fn load_metrics(x: &mut Exposition, l: Option<&LoadReports>, rows: &[GatewayRow]) {
    let mut f = x.counter(
        "load_reports_total",
        "Gateway load reports, accepted or refused by reason.",
    );
    if let Some(rc) = l.map(LoadReports::counters) {
        f.sample(&[("result", "accepted")], rc.accepted);
        for (r, n) in crate::loads::Reject::ALL.iter().zip(rc.rejected) {
            f.sample(&[("result", r.name())], n);
        }
    }
    let mut f = x.gauge(
        "gateway_load_tunnels",
        "The load redirects choose by: tunnels reported plus pending redirects, or decaying redirects without a fresh report.",
    );
    for r in rows {
        if let Some(load) = r.load {
            f.sample(
                &[("service", &r.service), ("gateway", &r.gateway)],
                load.load,
            );
        }
    }
}

/// Per health check: its state and its probes by result.
fn health_metrics(x: &mut Exposition, checks: &[CheckStatus]) {
    let mut f = x.gauge(
        "health_check_up",
        "1 when the health check passes (after rise/fall).",
    );
    for c in checks {
        f.sample(
            &[
                ("service", &c.service),
                ("gateway", &c.gateway),
                ("check", &c.check),
            ],
            c.state == "up",
        );
    }
    let mut f = x.counter("health_probes_total", "Health probes by result.");
    for c in checks {
        for (result, v) in [
            ("alive", c.alive),
            ("timeout", c.timeouts),
            ("refused", c.refused),
            ("unreachable", c.unreachable),
            ("bad-response", c.bad_responses),
            ("socket", c.socket_errors),
        ] {
            f.sample(
                &[
                    ("service", &c.service),
                    ("gateway", &c.gateway),
                    ("check", &c.check),
                    ("result", result),
                ],
                v,
            );
        }
    }
}

/// The neighbor cache: resolutions, and the answers and resolutions it refused, by reason.
fn neighbor_metrics(x: &mut Exposition, n: &NeighborCounters) {
    x.counter(
        "neighbor_resolved_total",
        "Neighbors resolved by ARP or neighbor discovery.",
    )
    .value(n.resolved);
    x.counter(
        "neighbor_refused_total",
        "Neighbor answers (and resolutions, cache-full) the neighbor cache refused.",
    )
    .sample(&[("reason", "off-subnet")], n.off_subnet)
    .sample(&[("reason", "wrong-interface")], n.wrong_interface)
    .sample(&[("reason", "unsolicited")], n.unsolicited_ignored)
    .sample(&[("reason", "static-override")], n.static_override_ignored)
    .sample(&[("reason", "cache-full")], n.cache_full);
    x.counter(
        "neighbor_evicted_total",
        "Failed or incomplete neighbor entries dropped to make room.",
    )
    .value(n.evicted);
}

/// The exception path's frames both ways, its drops and what it policed.
fn exception_metrics(x: &mut Exposition, e: Option<&ExceptionCounters>) {
    let mut f = x.counter(
        "exception_frames_total",
        "Frames on the exception path to and from the kernel.",
    );
    if let Some(e) = e {
        f.sample(&[("direction", "to-kernel")], e.to_kernel)
            .sample(&[("direction", "from-kernel")], e.from_kernel);
    }
    let mut f = x.counter(
        "exception_dropped_total",
        "Frames the exception path could not pass on.",
    );
    if let Some(e) = e {
        f.sample(&[("direction", "to-kernel")], e.to_kernel_dropped)
            .sample(&[("direction", "from-kernel")], e.from_kernel_dropped);
    }
    let mut p = Part { x, part: e };
    p.counter(
        "exception_policed_total",
        "Frames for the kernel over [exception] rate_pps (urgent ones are policed by the workers).",
        |e| e.policed,
    );
    p.counter(
        "exception_sync_total",
        "HA sync peer datagrams for the kernel, on their own budget ([ha] sync_rate_pps).",
        |e| e.sync_in,
    );
    p.counter(
        "exception_sync_policed_total",
        "HA sync peer datagrams over [ha] sync_rate_pps (dropped).",
        |e| e.sync_policed,
    );
}

/// Per control socket (`socket` label: `read-write`, `read-only`): clients, refused writes,
/// idle disconnects.
fn control_socket_metrics(x: &mut Exposition, s: &ControlSocketStats) {
    let sockets: Vec<&SocketStats> = [Some(&s.read_write), s.read_only.as_ref()]
        .into_iter()
        .flatten()
        .collect();
    let mut f = x.gauge(
        "control_clients",
        "Clients connected to the control socket.",
    );
    for s in &sockets {
        f.sample(&[("socket", s.access.name())], s.clients);
    }
    let mut f = x.counter(
        "control_refused_writes_total",
        "State-changing requests refused because the control socket is read-only.",
    );
    for s in &sockets {
        f.sample(&[("socket", s.access.name())], s.counters.refused_writes);
    }
    let mut f = x.counter(
        "control_idle_disconnects_total",
        "Control clients disconnected for sending no request within [control] client_idle_timeout.",
    );
    for s in &sockets {
        f.sample(&[("socket", s.access.name())], s.counters.idle_disconnects);
    }
}

/// The `/metrics` server's answers by status code, and the clients it dropped unanswered.
fn http_metrics(x: &mut Exposition, h: Option<&HttpCounts>) {
    let mut f = x.counter(
        "metrics_http_responses_total",
        "Answers of the /metrics server by HTTP status code (503: the control thread did not render in time).",
    );
    if let Some(h) = h {
        f.sample(&[("code", "200")], h.ok)
            .sample(&[("code", "4xx")], h.client_errors)
            .sample(&[("code", "503")], h.unavailable);
    }
    let mut p = Part { x, part: h };
    p.counter(
        "metrics_http_clients_dropped_total",
        "/metrics clients dropped unanswered: too slow, too long a request, gone before it ended.",
        |h| h.dropped,
    );
}

/// Per watched thread (`worker0`, ..., `health-checker`): stalled now, stalls so far; and the
/// times the appliance stepped down for one.
fn watchdog_metrics(x: &mut Exposition, w: &Watchdog) {
    let mut f = x.gauge(
        "watchdog_stalled",
        "1 while the thread has made no progress for longer than [dataplane] watchdog.",
    );
    for (t, s) in w.watches() {
        f.sample(&[("thread", &t.label())], s.stalled);
    }
    let mut f = x.counter(
        "watchdog_stalls_total",
        "Times the thread made no progress for longer than [dataplane] watchdog.",
    );
    for (t, s) in w.watches() {
        f.sample(&[("thread", &t.label())], s.stalls);
    }
    x.counter(
        "watchdog_step_downs_total",
        "Times a stalled thread made the appliance step down (VRRP priority 0, then backup).",
    )
    .value(w.step_downs());
}

/// The families of a part of the appliance that may not be configured (VRRP, the pair sync):
/// declared either way, with samples only when the part is there.
struct Part<'a, T> {
    x: &'a mut Exposition,
    part: Option<&'a T>,
}

impl<T> Part<'_, T> {
    fn counter(&mut self, name: &str, help: &str, value: impl Fn(&T) -> u64) {
        let mut f = self.x.counter(name, help);
        if let Some(p) = self.part {
            f.value(value(p));
        }
    }

    fn gauge(&mut self, name: &str, help: &str, value: impl Fn(&T) -> u64) {
        let mut f = self.x.gauge(name, help);
        if let Some(p) = self.part {
            f.value(value(p));
        }
    }

    /// A counter with a `direction` label: (in, out).
    fn in_out(&mut self, name: &str, help: &str, value: impl Fn(&T) -> (u64, u64)) {
        let mut f = self.x.counter(name, help);
        if let Some(p) = self.part {
            let (received, sent) = value(p);
            f.sample(&[("direction", "in")], received)
                .sample(&[("direction", "out")], sent);
        }
    }
}

fn vrrp_metrics(x: &mut Exposition, m: Option<&VrrpMetrics>) {
    let mut p = Part { x, part: m };
    p.gauge(
        "vrrp_master",
        "1 while this appliance is the VRRP master.",
        |m| u64::from(m.master),
    );
    p.counter("vrrp_transitions_total", "VRRP state changes.", |m| {
        m.transitions
    });
    p.in_out(
        "vrrp_adverts_total",
        "VRRP adverts received (valid) and sent.",
        |m| (m.adverts_in, m.adverts_out),
    );
    p.counter(
        "vrrp_errors_total",
        "VRRP messages rejected (bad TTL, version, checksum, VRID, addresses, ...).",
        |m| m.errors,
    );
}

fn sync_metrics(x: &mut Exposition, m: Option<&SyncMetrics>) {
    let mut p = Part { x, part: m };
    p.gauge(
        "sync_peer_alive",
        "1 while the HA peer's sync heartbeat is heard.",
        |m| u64::from(m.peer_alive),
    );
    p.gauge(
        "sync_synced",
        "1 once this appliance holds the master's whole affinity table.",
        |m| u64::from(m.synced),
    );
    p.gauge(
        "sync_lag_messages",
        "Sync messages sent that the peer has not acknowledged yet.",
        |m| m.lag,
    );
    p.gauge(
        "sync_entries",
        "Affinity entries in the sync mirror.",
        |m| m.entries as u64,
    );
    p.in_out(
        "sync_messages_total",
        "Sync messages sent and accepted.",
        |m| (m.session.messages_in, m.session.messages_out),
    );
    p.in_out(
        "sync_entries_total",
        "Affinity changes carried by sync messages.",
        |m| (m.session.entries_in, m.session.entries_out),
    );
    p.in_out(
        "sync_resyncs_total",
        "Bulk transfers of the whole table, sent and received.",
        |m| (m.session.bulks_received, m.session.bulks_sent),
    );
    p.counter(
        "sync_rejected_total",
        "Sync datagrams rejected (bad tag, replayed, malformed, other layout, ...).",
        |m| m.session.rejects.total(),
    );
    p.counter(
        "sync_gaps_total",
        "Losses seen in the peer's sequence numbers.",
        |m| m.session.gaps,
    );
    p.in_out(
        "sync_resumes_total",
        "Bulk resumes after a loss: asked for (in), and served (out).",
        |m| (m.session.resumes_requested, m.session.bulks_resumed),
    );
    p.counter(
        "sync_resumes_refused_total",
        "Resume requests too old for the resume log: the bulk restarted from the beginning.",
        |m| m.session.resumes_refused,
    );
    p.counter(
        "sync_bulk_entries_sent_total",
        "Entries sent in bulk chunks, resent ones included.",
        |m| m.session.bulk_entries_out,
    );
    p.counter(
        "sync_bulk_paced_total",
        "Polls where the bulk pacing ([ha] sync_bulk_rate) held chunks back.",
        |m| m.session.bulk_paced,
    );
    p.counter(
        "sync_unconfirmed_skipped_total",
        "Entries not established that were not replicated.",
        |m| m.pair.unconfirmed_skipped,
    );
    p.counter(
        "sync_preempt_hold_expired_total",
        "Times preemption stopped being held before the master's table arrived ([ha] sync_hold_max).",
        |m| m.pair.preempt_hold_expired,
    );
    p.counter(
        "sync_peer_deaths_total",
        "Times the peer's heartbeat stopped.",
        |m| m.pair.peer_deaths,
    );
    p.gauge(
        "ha_dual_master",
        "1 while both appliances are master: this one, and the peer by its authenticated sync messages (for longer than the sync dead interval). VRRP itself is unauthenticated.",
        |m| u64::from(m.dual_master),
    );
    p.counter(
        "ha_dual_master_events_total",
        "Times both appliances were master at once (one per episode).",
        |m| m.session.dual_master_events,
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
        sync_metrics(&mut x, Some(&sync(false, 0)));
        let page = x.finish();
        assert!(page.contains("# TYPE vpnlb_ha_dual_master gauge\nvpnlb_ha_dual_master 0\n"));
        assert!(page.contains(
            "# TYPE vpnlb_ha_dual_master_events_total counter\nvpnlb_ha_dual_master_events_total 0\n"
        ));
        let mut x = Exposition::default();
        sync_metrics(&mut x, Some(&sync(true, 3)));
        let page = x.finish();
        assert!(page.contains("\nvpnlb_ha_dual_master 1\n"), "{page}");
        assert!(page.contains("\nvpnlb_ha_dual_master_events_total 3\n"));
    }

    #[test]
    fn burst_latency_buckets_are_cumulative_seconds() {
        let mut w = WorkerReport::default();
        // A 1 GHz clock: 1 µs is 1000 cycles.
        for cycles in [500, 900, 1_500, 40_000, 2_000_000] {
            w.burst_cycles.record(cycles).unwrap();
        }
        let h = burst_histogram(&w, 1e9);
        assert_eq!(h.count, 5);
        let at = |le: f64| h.buckets.iter().find(|b| b.0 == le).unwrap().1;
        assert_eq!(at(1e-6), 2);
        assert_eq!(at(2e-6), 3);
        assert_eq!(at(50e-6), 4);
        assert_eq!(at(1e-3), 4);
        assert_eq!(at(10e-3), 5);
        assert!((h.sum - 0.002_042_9).abs() < 1e-5, "{}", h.sum);
        assert!(h.buckets.windows(2).all(|p| p[0].1 <= p[1].1));
    }

    #[test]
    fn the_lifecycle_counts_reloads() {
        let mut l = Lifecycle::starting_now();
        l.reload_over(false);
        assert!(!l.last_reload_ok);
        l.reload_over(true);
        let mut x = Exposition::default();
        lifecycle_metrics(&mut x, &l, 3);
        let page = x.finish();
        assert!(page.contains("vpnlb_config_reloads_total{result=\"applied\"} 1\n"));
        assert!(page.contains("vpnlb_config_reloads_total{result=\"refused\"} 1\n"));
        assert!(page.contains("vpnlb_config_last_reload_successful 1\n"));
        assert!(page.contains("vpnlb_snapshot_generation 3\n"));
        assert!(page.contains(&format!(
            "vpnlb_build_info{{version=\"{}\"}} 1\n",
            env!("CARGO_PKG_VERSION")
        )));
    }
}
