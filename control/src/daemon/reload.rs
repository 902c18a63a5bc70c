//! `reload` (and SIGHUP): the configuration file again, applied whole or not at all.
//!
//! A reload is a transaction in two phases. [`begin`] reads and checks the file and builds
//! everything it changes without applying any of it: the snapshot (static neighbors, subnets,
//! services, gateways with the operator's runtime values), the VRRP routers' address lists, the
//! `[redirect]` settings, and the exception path's TAP addresses and routes. Any failure there
//! refuses the reload with the reason and changes nothing. Then every worker *prepares* (keeps
//! the snapshot and the affinity re-keying map aside); only once all have said so does
//! [`ReloadTxn::poll`] *commit*: the TAPs are changed (undone again if that fails, and the
//! workers told to abort), then the workers switch, and the neighbor cache, the HA sync's
//! layout, VRRP's address lists, the load reports' key and settings, the health checks, the
//! operator's runtime values and the running configuration follow. A worker that does not
//! prepare within [`WORKER_TIMEOUT`] (a stalled one) makes the reload refused and aborted on
//! every worker: no worker ever runs a configuration the reply calls refused. The control
//! thread never waits: each phase is checked once per control round.

use std::time::Instant;

use serde_json::json;
use tracing::info;

use super::api::{id_map, needs_restart};
use super::control::{Control, IdMap, ReloadAnswer, StagedReload};
use super::ha::{Ha, StagedRouters};
use super::loads::LoadReports;
use super::pending::{Gather, Origin, WORKER_TIMEOUT};
use super::runtime_state::RuntimeState;
use super::sync::PairSync;
use crate::config::{self, Config};
use crate::ctlsock::Reply;
use crate::health::checker::{self, Checker};

/// How long a committed reload waits for the workers' re-keying counts (incremental: about 2 s
/// for 10 M entries whose services all moved) before replying with the workers still at it.
const REKEY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// What a reload reads and changes.
pub struct Parts<'a> {
    pub ctl: &'a mut Control,
    pub running: &'a mut Config,
    pub path: &'a std::path::Path,
    pub health: &'a mut Option<Checker>,
    pub ha: Option<&'a mut Ha>,
    pub sync: Option<&'a mut PairSync>,
    pub loads: &'a mut Option<LoadReports>,
    pub runtime: &'a mut RuntimeState,
}

/// A reload under way.
pub struct ReloadTxn {
    pub origin: Origin,
    new: Config,
    map: IdMap,
    /// The health checker the new file needs where none runs yet, started at stage time (a
    /// failure to start it refuses the reload).
    checker: Option<Checker>,
    phase: Phase,
}

enum Phase {
    /// The workers prepare.
    Preparing {
        staged: StagedReload,
        routers: Option<StagedRouters>,
        ready: Gather<()>,
    },
    /// Committed; the workers' re-keying counts come in.
    Committed {
        answers: Gather<(usize, usize)>,
        reply: serde_json::Map<String, serde_json::Value>,
    },
    Done,
}

/// Reads the file and stages everything it changes; the workers start preparing. `Err`: the
/// reload is refused (the reason), nothing changed.
pub fn begin(parts: &mut Parts<'_>, origin: Origin, now: Instant) -> Result<ReloadTxn, String> {
    let new = config::load_config(parts.path)
        .map_err(|e| format!("reload refused, the running configuration stays: {e}"))?;
    if let Some(what) = needs_restart(parts.running, &new) {
        return Err(format!(
            "reload refused: {what} changed, which needs a restart of vpnlbd"
        ));
    }
    check_redirect(parts, &new)?;
    // What the workers will run: the file, with the operator's runtime values the file leaves
    // alone (previewed here; recorded at commit).
    let mut base = new.spec.clone();
    parts.runtime.preview(&new.spec).apply(&mut base);
    let staged = parts
        .ctl
        .stage_reload(base)
        .map_err(|e| format!("reload refused: {e}"))?;
    let routers = match &parts.ha {
        Some(h) => Some(
            h.stage(&new.spec)
                .map_err(|e| format!("reload refused: {e}"))?,
        ),
        None => None,
    };
    parts
        .ctl
        .check_exception_reload(&parts.running.spec, &new.spec)
        .map_err(|e| format!("reload refused: {e}"))?;
    let checker = match parts.health {
        Some(_) => None,
        None => super::start_checker(&new)
            .map_err(|e| format!("reload refused: health checks cannot start: {e}"))?,
    };
    let map = id_map(&parts.running.spec, &new.spec);
    let ready = parts.ctl.prepare_reload(&staged, map.clone());
    let ready = Gather::over(ready.into_iter().map(Some).collect(), now);
    Ok(ReloadTxn {
        origin,
        new,
        map,
        checker,
        phase: Phase::Preparing {
            staged,
            routers,
            ready,
        },
    })
}

/// `[redirect]`: the key and timings change on a reload; the report socket does not.
fn check_redirect(parts: &Parts<'_>, new: &Config) -> Result<(), String> {
    let redirects = |c: &Config| {
        c.spec
            .services
            .iter()
            .any(|s| s.mode == dataplane::model::ServiceMode::Redirect)
    };
    if redirects(parts.running) != redirects(new) {
        return Err(
            "reload refused: whether any service redirects changed (the load report \
                    socket is opened at start), which needs a restart of vpnlbd"
                .into(),
        );
    }
    if parts.running.redirect.report_port != new.redirect.report_port {
        return Err(
            "reload refused: [redirect] report_port changed, which needs a restart of vpnlbd"
                .into(),
        );
    }
    Ok(())
}

impl ReloadTxn {
    /// The next step, if its time has come; `Some(reply)` once the reload is over (applied or
    /// refused).
    pub fn poll(&mut self, parts: &mut Parts<'_>, now: Instant) -> Option<Reply> {
        match &mut self.phase {
            Phase::Preparing { ready, .. } => match ready.poll(now)? {
                Ok(_) => self.commit(parts, now),
                Err(_) => {
                    let silent = ready.silent();
                    let Phase::Preparing { staged, .. } =
                        std::mem::replace(&mut self.phase, Phase::Done)
                    else {
                        return None;
                    };
                    parts.ctl.abort_reload(&staged);
                    Some(Reply::Error(format!(
                        "reload refused: worker(s) {silent:?} did not prepare within {} ms (stalled?); \
                         nothing changed",
                        WORKER_TIMEOUT.as_millis()
                    )))
                }
            },
            Phase::Committed { answers, reply } => {
                // Committed is applied: late re-keying answers are named, not waited for.
                let (moved, removed, pending) = match answers.poll(now)? {
                    Ok(counts) => {
                        let (m, r) = counts.iter().fold((0, 0), |(m, r), (a, b)| (m + a, r + b));
                        (m, r, Vec::new())
                    }
                    Err(_) => {
                        let pending = answers.silent();
                        let (m, r) = answers
                            .take_partial()
                            .into_iter()
                            .flatten()
                            .fold((0, 0), |(m, r), (a, b)| (m + a, r + b));
                        (m, r, pending)
                    }
                };
                let mut reply = std::mem::take(reply);
                reply.insert("affinity_moved".into(), json!(moved));
                reply.insert("affinity_removed".into(), json!(removed));
                reply.insert("pending_workers".into(), json!(pending));
                info!(
                    generation = reply.get("generation").and_then(serde_json::Value::as_u64),
                    moved,
                    removed,
                    pending_workers = ?pending,
                    "configuration reloaded"
                );
                self.phase = Phase::Done;
                Some(Reply::Ok(serde_json::Value::Object(reply)))
            }
            Phase::Done => None,
        }
    }

    /// Every worker is prepared: the TAPs first (the only step that can still fail, undone if it
    /// does), then everything else, which cannot.
    fn commit(&mut self, parts: &mut Parts<'_>, now: Instant) -> Option<Reply> {
        let Phase::Preparing {
            staged, routers, ..
        } = std::mem::replace(&mut self.phase, Phase::Done)
        else {
            return None;
        };
        if let Err(e) = parts
            .ctl
            .reload_exception(&parts.running.spec, &self.new.spec)
        {
            parts.ctl.abort_reload(&staged);
            return Some(Reply::Error(format!(
                "reload refused: {e}; the TAPs are as they were, nothing changed"
            )));
        }
        let superseded = parts.runtime.reload(&self.new.spec);
        let mut base = self.new.spec.clone();
        parts.runtime.apply(&mut base);
        let snapshot = std::sync::Arc::clone(staged.snapshot());
        let answers = parts.ctl.commit_reload(staged, base);
        if let Some(s) = parts.sync.as_deref_mut() {
            s.relayout(&self.new.spec, &self.map);
        }
        if let (Some(h), Some(r)) = (parts.ha.as_deref_mut(), routers) {
            h.relayout(parts.ctl, r);
        }
        if let Some(l) = parts.loads.as_mut() {
            l.set_settings(&self.new.redirect);
        }
        let health = apply_health(parts.ctl, parts.health, self.checker.take(), &self.new);
        if parts.ctl.is_master() || self.new.spec.ha.is_none() {
            // New VIPs and addresses are announced at once.
            parts.ctl.announce(&snapshot);
        }
        *parts.running = self.new.clone();
        let mut reply = serde_json::Map::new();
        reply.insert("generation".into(), json!(snapshot.generation));
        reply.insert("services".into(), json!(snapshot.services.len()));
        reply.insert(
            "gateways".into(),
            json!(snapshot
                .services
                .iter()
                .map(|s| s.spec.gateways.len())
                .sum::<usize>()),
        );
        reply.insert("health_checks".into(), json!(health));
        reply.insert("runtime_values_superseded".into(), json!(superseded));
        self.phase = Phase::Committed {
            answers: Gather::until(
                answers
                    .into_iter()
                    .map(Some)
                    .collect::<Vec<Option<ReloadAnswer>>>(),
                now + REKEY_TIMEOUT,
            ),
            reply,
        };
        self.poll(parts, now)
    }
}

/// Brings the health checks in line with a reloaded configuration: unchanged checks keep
/// their state; a gateway no longer checked counts as healthy; `started` is the checker started
/// at stage time where none ran. Says what happened.
fn apply_health(
    ctl: &mut Control,
    health: &mut Option<Checker>,
    started: Option<Checker>,
    new: &Config,
) -> String {
    let plans = checker::plans(new);
    let n = plans.len();
    let outcome = match (health.as_ref(), n) {
        (_, 0) => {
            *health = None;
            "none".to_string()
        }
        (Some(c), _) => {
            c.replace(plans);
            format!("{n} checks")
        }
        (None, _) => {
            *health = started;
            format!("{n} checks (started)")
        }
    };
    let (keep, checked) = super::health_policy(new);
    ctl.set_health_policy(keep, &checked);
    outcome
}
