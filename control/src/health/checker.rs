//! The health checker thread: runs every check of every gateway on its interval, counts
//! consecutive results against rise and fall, and reports gateway transitions to the control
//! thread.
//!
//! It lives in the exception path's network namespace, so probes leave from the appliance's
//! own addresses like any socket there. Probes never block: each is a non-blocking socket
//! polled every few milliseconds, so one dead gateway cannot delay the checks of the others.
//! A gateway is healthy while all of its checks are up; checks start up, so a restarted
//! appliance serves at once and a dead gateway is found within fall × interval.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, unbounded, Receiver, RecvTimeoutError, Sender};
use serde::Serialize;
use tracing::{info, warn};

use super::probe::{InFlight, Outcome, ProbeKind, ProbeSpec};
use crate::config::{CheckKind, Config, HealthCheck};
use crate::daemon::watchdog::Heartbeat;

/// One check of one gateway.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckPlan {
    pub service: String,
    pub gateway: String,
    /// e.g. `ike:500`.
    pub check: String,
    pub probe: ProbeSpec,
    pub interval: Duration,
    pub rise: u32,
    pub fall: u32,
}

/// Every check of every gateway in `cfg`.
pub fn plans(cfg: &Config) -> Vec<CheckPlan> {
    let mut out = Vec::new();
    for (svc, health) in cfg.spec.services.iter().zip(&cfg.health) {
        for gw in &svc.gateways {
            for c in &health.checks {
                // The config refuses checks of a family some gateway lacks.
                let Some(addr) = gw.address(c.ipv6) else {
                    continue;
                };
                out.push(CheckPlan {
                    service: svc.name.clone(),
                    gateway: gw.name.clone(),
                    check: c.label(),
                    probe: probe_spec(c, addr),
                    interval: c.interval,
                    rise: c.rise,
                    fall: c.fall,
                });
            }
        }
    }
    out
}

fn probe_spec(c: &HealthCheck, addr: IpAddr) -> ProbeSpec {
    let kind = match c.kind {
        CheckKind::Tcp => ProbeKind::Tcp,
        CheckKind::Ike => ProbeKind::Ike,
        CheckKind::Tls => ProbeKind::Tls { sni: c.sni.clone() },
        CheckKind::Dtls => ProbeKind::Dtls,
        CheckKind::Icmp => ProbeKind::Icmp,
    };
    ProbeSpec {
        kind,
        target: SocketAddr::new(addr, c.port),
        source: c.source,
        timeout: c.timeout,
    }
}

/// A gateway's health changed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GatewayHealth {
    pub service: String,
    pub gateway: String,
    pub up: bool,
}

/// One check as `show gateways` reports it.
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct CheckStatus {
    pub service: String,
    pub gateway: String,
    pub check: String,
    pub target: String,
    /// "up" or "down".
    pub state: &'static str,
    /// The last answer ("INVALID_KE_PAYLOAD", "connected", ...) or failure ("timeout", ...).
    pub last: String,
    /// Round-trip time of the last answered probe, microseconds.
    pub rtt_us: Option<u64>,
    pub probes: u64,
    pub alive: u64,
    pub timeouts: u64,
    pub refused: u64,
    pub unreachable: u64,
    pub bad_responses: u64,
    pub socket_errors: u64,
    /// Up/down changes of this check.
    pub transitions: u64,
    /// Seconds since the last change (or since the check started).
    pub for_s: u64,
}

/// A gateway's health as a whole.
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct GatewayStatus {
    pub service: String,
    pub gateway: String,
    pub up: bool,
    /// Up/down changes of the gateway.
    pub transitions: u64,
}

/// What the checker thread publishes after every probe result.
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct HealthStatus {
    pub checks: Vec<CheckStatus>,
    pub gateways: Vec<GatewayStatus>,
}

impl HealthStatus {
    /// The checks of one gateway.
    pub fn checks_of<'a>(
        &'a self,
        service: &'a str,
        gateway: &'a str,
    ) -> impl Iterator<Item = &'a CheckStatus> + 'a {
        self.checks
            .iter()
            .filter(move |c| c.service == service && c.gateway == gateway)
    }

    pub fn gateway(&self, service: &str, gateway: &str) -> Option<&GatewayStatus> {
        self.gateways
            .iter()
            .find(|g| g.service == service && g.gateway == gateway)
    }
}

enum Command {
    Replace(Vec<CheckPlan>),
    /// Tests only (`debug health stall MS`): the thread sleeps this long, as a stuck one would.
    Stall(Duration),
    Stop,
}

/// Why the health checker could not start.
#[derive(Debug, thiserror::Error)]
pub enum CheckerError {
    /// The checker's thread cannot enter the exception path's namespace.
    #[error("health checks cannot enter network namespace `{netns}`: {source}")]
    Netns {
        netns: String,
        source: std::io::Error,
    },
    /// The thread cannot be spawned.
    #[error("cannot start the health checker: {0}")]
    Spawn(#[source] std::io::Error),
    /// The thread ended before saying it was ready.
    #[error("the health checker stopped while starting")]
    Stopped,
}

/// The running checker thread. Dropping it stops the thread.
pub struct Checker {
    thread: Option<JoinHandle<()>>,
    commands: Sender<Command>,
    events: Receiver<GatewayHealth>,
    status: Arc<Mutex<HealthStatus>>,
    /// Beaten once per loop pass; the control thread's watchdog reads it.
    progress: Heartbeat,
}

/// How often in-flight probes are polled: the resolution of the round-trip times reported.
const POLL: Duration = Duration::from_millis(1);
/// The longest the thread waits between two passes with nothing to do, so its heartbeat moves
/// well within the watchdog's shortest bound (100 ms).
const IDLE_WAIT: Duration = Duration::from_millis(50);

impl Checker {
    /// Starts the thread in network namespace `netns` (`None`: this one) with `plans`.
    pub fn start(netns: Option<String>, plans: Vec<CheckPlan>) -> Result<Checker, CheckerError> {
        let (commands, command_rx) = unbounded();
        let (event_tx, events) = unbounded();
        let status = Arc::new(Mutex::new(HealthStatus::default()));
        let (ready_tx, ready_rx) = bounded(1);
        let shared = Arc::clone(&status);
        let progress = Heartbeat::new();
        let beat = progress.clone();
        let thread = std::thread::Builder::new()
            .name("vpnlb-health".into())
            .spawn(move || {
                let _netns = match netns.as_deref().map(netdev::netns::enter).transpose() {
                    Ok(g) => g,
                    Err(source) => {
                        let _ = ready_tx.send(Err(CheckerError::Netns {
                            netns: netns.clone().unwrap_or_default(),
                            source,
                        }));
                        return;
                    }
                };
                let _ = ready_tx.send(Ok(()));
                let mut run = Run::new(event_tx, shared);
                run.replace(plans, Instant::now());
                run.main(command_rx, &beat);
            })
            .map_err(CheckerError::Spawn)?;
        match ready_rx.recv() {
            Ok(Ok(())) => Ok(Checker {
                thread: Some(thread),
                commands,
                events,
                status,
                progress,
            }),
            Ok(Err(e)) => {
                let _ = thread.join();
                Err(e)
            }
            Err(_) => {
                let _ = thread.join();
                Err(CheckerError::Stopped)
            }
        }
    }

    /// New checks (a reload); checks that stay the same keep their state and counters.
    pub fn replace(&self, plans: Vec<CheckPlan>) {
        let _ = self.commands.send(Command::Replace(plans));
    }

    /// Gateway transitions, in order.
    pub fn events(&self) -> &Receiver<GatewayHealth> {
        &self.events
    }

    pub fn status(&self) -> HealthStatus {
        self.status.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// The thread's heartbeat (one beat per pass of its loop).
    pub fn progress(&self) -> &Heartbeat {
        &self.progress
    }

    /// Tests only: the thread sleeps for `d` (a stuck checker), without beating.
    pub fn stall(&self, d: Duration) {
        let _ = self.commands.send(Command::Stall(d));
    }
}

impl Drop for Checker {
    fn drop(&mut self) {
        let _ = self.commands.send(Command::Stop);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

struct CheckState {
    plan: CheckPlan,
    up: bool,
    /// Consecutive results against the current state.
    streak: u32,
    next_due: Instant,
    since: Instant,
    in_flight: Option<InFlight>,
    status: CheckStatus,
}

/// The thread's state.
struct Run {
    checks: Vec<CheckState>,
    /// (service, gateway) → (up as last reported, transitions).
    gateways: HashMap<(String, String), (bool, u64)>,
    events: Sender<GatewayHealth>,
    shared: Arc<Mutex<HealthStatus>>,
}

impl Run {
    fn new(events: Sender<GatewayHealth>, shared: Arc<Mutex<HealthStatus>>) -> Run {
        Run {
            checks: Vec::new(),
            gateways: HashMap::new(),
            events,
            shared,
        }
    }

    fn main(&mut self, commands: Receiver<Command>, progress: &Heartbeat) {
        loop {
            progress.beat();
            let now = Instant::now();
            self.step(now);
            let next = self
                .checks
                .iter()
                .filter(|c| c.in_flight.is_none())
                .map(|c| c.next_due)
                .min();
            let busy = self.checks.iter().any(|c| c.in_flight.is_some());
            let wait = match next {
                _ if busy => POLL,
                Some(t) => t.saturating_duration_since(now).min(IDLE_WAIT),
                None => IDLE_WAIT,
            };
            match commands.recv_timeout(wait.max(Duration::from_millis(1))) {
                Ok(Command::Replace(plans)) => self.replace(plans, Instant::now()),
                Ok(Command::Stall(d)) => {
                    warn!(
                        stall_ms = crate::units::millis(d),
                        "fault injection: the health checker stalls"
                    );
                    std::thread::sleep(d);
                }
                Ok(Command::Stop) | Err(RecvTimeoutError::Disconnected) => return,
                Err(RecvTimeoutError::Timeout) => {}
            }
        }
    }

    /// Polls in-flight probes and starts those that are due.
    fn step(&mut self, now: Instant) {
        let mut changed = false;
        for i in 0..self.checks.len() {
            let c = &mut self.checks[i];
            if let Some(p) = &mut c.in_flight {
                if let Some(outcome) = p.poll(now) {
                    c.in_flight = None;
                    changed = true;
                    if c.record(outcome, now) {
                        self.gateway_changed(i);
                    }
                }
            } else if now >= c.next_due {
                c.next_due += c.plan.interval;
                if c.next_due <= now {
                    // Late (a stalled thread): start the cadence again from now.
                    c.next_due = now + c.plan.interval;
                }
                c.status.probes += 1;
                c.in_flight = Some(InFlight::start(&c.plan.probe, now));
            }
        }
        if changed {
            self.publish(now);
        }
    }

    /// Re-derives the health of check `i`'s gateway and reports a change.
    fn gateway_changed(&mut self, i: usize) {
        let (service, gateway) = {
            let p = &self.checks[i].plan;
            (p.service.clone(), p.gateway.clone())
        };
        let up = self
            .checks
            .iter()
            .filter(|c| c.plan.service == service && c.plan.gateway == gateway)
            .all(|c| c.up);
        let entry = self
            .gateways
            .entry((service.clone(), gateway.clone()))
            .or_insert((true, 0));
        if entry.0 == up {
            return;
        }
        entry.0 = up;
        entry.1 += 1;
        if up {
            info!(service, gateway, "gateway up: every health check passes");
        } else {
            let failing: Vec<&str> = self
                .checks
                .iter()
                .filter(|c| c.plan.service == service && c.plan.gateway == gateway && !c.up)
                .map(|c| c.plan.check.as_str())
                .collect();
            warn!(service, gateway, failing = ?failing, "gateway down: health checks fail");
        }
        let _ = self.events.send(GatewayHealth {
            service,
            gateway,
            up,
        });
    }

    /// Installs `plans`; a check with the same gateway, name and probe keeps its state.
    fn replace(&mut self, plans: Vec<CheckPlan>, now: Instant) {
        let mut old: Vec<Option<CheckState>> = self.checks.drain(..).map(Some).collect();
        // Duration divides by u32: past u32::MAX checks (never), the last ones share slots.
        let n = u32::try_from(plans.len().max(1)).unwrap_or(u32::MAX);
        for (i, plan) in plans.into_iter().enumerate() {
            let kept = old
                .iter_mut()
                .find(|o| o.as_ref().is_some_and(|o| o.plan == plan))
                .and_then(Option::take);
            let state = match kept {
                Some(s) => s,
                None => {
                    // Spread first probes over the interval so checks do not go in lockstep.
                    let slot = u32::try_from(i).unwrap_or(u32::MAX) % n;
                    let offset = plan.interval / n * slot;
                    CheckState {
                        status: CheckStatus {
                            service: plan.service.clone(),
                            gateway: plan.gateway.clone(),
                            check: plan.check.clone(),
                            target: target_text(&plan.probe),
                            state: "up",
                            ..CheckStatus::default()
                        },
                        up: true,
                        streak: 0,
                        next_due: now + offset,
                        since: now,
                        in_flight: None,
                        plan,
                    }
                }
            };
            self.checks.push(state);
        }
        info!(checks = self.checks.len(), "health checks configured");
        // Gateways no longer checked are healthy again; the rest follow their checks.
        let keys: Vec<(String, String)> = self.gateways.keys().cloned().collect();
        for key in keys {
            let still = self
                .checks
                .iter()
                .position(|c| c.plan.service == key.0 && c.plan.gateway == key.1);
            match still {
                Some(i) => self.gateway_changed(i),
                None => {
                    if let Some((false, _)) = self.gateways.remove(&key) {
                        let _ = self.events.send(GatewayHealth {
                            service: key.0,
                            gateway: key.1,
                            up: true,
                        });
                    }
                }
            }
        }
        for i in 0..self.checks.len() {
            let p = &self.checks[i].plan;
            let key = (p.service.clone(), p.gateway.clone());
            if let std::collections::hash_map::Entry::Vacant(e) = self.gateways.entry(key) {
                e.insert((true, 0));
                self.gateway_changed(i);
            }
        }
        self.publish(now);
    }

    fn publish(&self, now: Instant) {
        let mut status = HealthStatus {
            checks: self
                .checks
                .iter()
                .map(|c| {
                    let mut s = c.status.clone();
                    s.for_s = now.saturating_duration_since(c.since).as_secs();
                    s
                })
                .collect(),
            gateways: self
                .gateways
                .iter()
                .map(|((service, gateway), (up, transitions))| GatewayStatus {
                    service: service.clone(),
                    gateway: gateway.clone(),
                    up: *up,
                    transitions: *transitions,
                })
                .collect(),
        };
        status
            .gateways
            .sort_by(|a, b| (&a.service, &a.gateway).cmp(&(&b.service, &b.gateway)));
        if let Ok(mut s) = self.shared.lock() {
            *s = status;
        }
    }
}

impl CheckState {
    /// Counts one result; true when the check changed state.
    fn record(&mut self, outcome: Outcome, now: Instant) -> bool {
        let alive = match &outcome {
            Outcome::Alive { rtt, answer } => {
                self.status.alive += 1;
                self.status.rtt_us = Some(u64::try_from(rtt.as_micros()).unwrap_or(u64::MAX));
                self.status.last = answer.clone();
                true
            }
            Outcome::Dead(f) => {
                use super::probe::Failure;
                match f {
                    Failure::Timeout => self.status.timeouts += 1,
                    Failure::Refused => self.status.refused += 1,
                    Failure::Unreachable(_) => self.status.unreachable += 1,
                    Failure::BadResponse(_) => self.status.bad_responses += 1,
                    Failure::Socket(_) => self.status.socket_errors += 1,
                }
                self.status.last = match f {
                    Failure::Unreachable(d) | Failure::BadResponse(d) | Failure::Socket(d) => {
                        format!("{}: {d}", f.reason())
                    }
                    _ => f.reason().to_string(),
                };
                false
            }
        };
        if alive == self.up {
            self.streak = 0;
            return false;
        }
        self.streak += 1;
        let needed = if self.up {
            self.plan.fall
        } else {
            self.plan.rise
        };
        if self.streak < needed {
            return false;
        }
        self.up = alive;
        self.streak = 0;
        self.since = now;
        self.status.state = if alive { "up" } else { "down" };
        self.status.transitions += 1;
        info!(
            service = self.plan.service,
            gateway = self.plan.gateway,
            check = self.plan.check,
            state = self.status.state,
            last = self.status.last,
            "health check changed state"
        );
        true
    }
}

fn target_text(p: &ProbeSpec) -> String {
    match p.kind {
        ProbeKind::Icmp => p.target.ip().to_string(),
        _ => p.target.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health::probe::Failure;

    fn state(rise: u32, fall: u32) -> CheckState {
        let plan = CheckPlan {
            service: "vpn".into(),
            gateway: "gw1".into(),
            check: "ike:500".into(),
            probe: ProbeSpec {
                kind: ProbeKind::Ike,
                target: "198.19.0.11:500".parse().unwrap(),
                source: None,
                timeout: Duration::from_millis(100),
            },
            interval: Duration::from_millis(200),
            rise,
            fall,
        };
        let now = Instant::now();
        CheckState {
            status: CheckStatus::default(),
            up: true,
            streak: 0,
            next_due: now,
            since: now,
            in_flight: None,
            plan,
        }
    }

    fn alive() -> Outcome {
        Outcome::Alive {
            rtt: Duration::from_millis(1),
            answer: "INVALID_KE_PAYLOAD".into(),
        }
    }

    #[test]
    fn fall_failures_in_a_row_take_a_check_down_and_rise_answers_bring_it_up() {
        let mut c = state(2, 3);
        let now = Instant::now();
        // Two failures, an answer: the streak starts over.
        assert!(!c.record(Outcome::Dead(Failure::Timeout), now));
        assert!(!c.record(Outcome::Dead(Failure::Refused), now));
        assert!(!c.record(alive(), now));
        assert!(c.up);
        assert!(!c.record(Outcome::Dead(Failure::Timeout), now));
        assert!(!c.record(Outcome::Dead(Failure::Timeout), now));
        assert!(
            c.record(Outcome::Dead(Failure::Refused), now),
            "third failure"
        );
        assert!(!c.up);
        assert_eq!(c.status.state, "down");
        assert_eq!(c.status.last, "refused");
        // Down: one answer is not enough, a failure in between starts over.
        assert!(!c.record(alive(), now));
        assert!(!c.record(Outcome::Dead(Failure::Timeout), now));
        assert!(!c.record(alive(), now));
        assert!(c.record(alive(), now), "second answer in a row");
        assert!(c.up);
        assert_eq!(c.status.transitions, 2);
        assert_eq!(
            (c.status.alive, c.status.timeouts, c.status.refused),
            (4, 4, 2)
        );
        assert_eq!(c.status.last, "INVALID_KE_PAYLOAD");
    }

    #[test]
    fn a_gateway_is_down_while_any_check_is_and_transitions_are_reported_once() {
        let (tx, rx) = unbounded();
        let mut run = Run::new(tx, Arc::new(Mutex::new(HealthStatus::default())));
        let mut tls = state(1, 1).plan;
        tls.check = "tls:443".into();
        tls.probe.kind = ProbeKind::Tls { sni: None };
        run.replace(vec![state(1, 1).plan, tls], Instant::now());
        assert!(rx.try_recv().is_err(), "checks start up: nothing to report");
        let now = Instant::now();
        assert!(run.checks[0].record(Outcome::Dead(Failure::Timeout), now));
        run.gateway_changed(0);
        assert!(run.checks[1].record(Outcome::Dead(Failure::Timeout), now));
        run.gateway_changed(1);
        let down: Vec<GatewayHealth> = rx.try_iter().collect();
        assert_eq!(
            down,
            [GatewayHealth {
                service: "vpn".into(),
                gateway: "gw1".into(),
                up: false
            }]
        );
        assert!(run.checks[0].record(alive(), now));
        run.gateway_changed(0);
        assert!(rx.try_recv().is_err(), "still down: tls fails");
        assert!(run.checks[1].record(alive(), now));
        run.gateway_changed(1);
        assert!(rx.try_recv().unwrap().up);
        // The checks go away (a reload): the gateway is no longer checked, and was up.
        run.replace(Vec::new(), Instant::now());
        assert!(rx.try_recv().is_err());
    }

    #[test]
    fn a_reload_keeps_the_state_of_unchanged_checks_and_frees_gateways_no_longer_checked() {
        let (tx, rx) = unbounded();
        let mut run = Run::new(tx, Arc::new(Mutex::new(HealthStatus::default())));
        let plan = state(1, 1).plan;
        run.replace(vec![plan.clone()], Instant::now());
        assert!(run.checks[0].record(Outcome::Dead(Failure::Timeout), Instant::now()));
        run.gateway_changed(0);
        assert!(!rx.try_recv().unwrap().up);
        run.replace(vec![plan.clone()], Instant::now());
        assert!(!run.checks[0].up, "same check, same state");
        assert!(rx.try_recv().is_err());
        run.replace(Vec::new(), Instant::now());
        assert!(
            rx.try_recv().unwrap().up,
            "no longer checked: healthy again"
        );
    }
}
