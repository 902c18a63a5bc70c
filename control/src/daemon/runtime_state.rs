//! What the operator set at run time (`vpnlbctl gateway NAME drain|enable|disable|weight N`),
//! kept apart from the configuration file so that it survives a reload and, through a small
//! state file (HAProxy's server-state-file idea), a restart.
//!
//! Each value remembers what the file said when it was set. On a reload (or at start, for the
//! state file's values) a value whose file value has changed since is dropped: the operator
//! edited the file for that gateway, so the file wins, and that is logged. A value set back to
//! what the file says is no override at all.
//!
//! The state file is JSON, rewritten atomically (a temporary file in the same directory,
//! fsynced, renamed over the old one) on every change. A missing file is an empty state; an
//! unreadable or malformed one is logged and ignored, so a bad file never keeps the dataplane
//! down.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use dataplane::model::ApplianceSpec;
use dataplane::schedule::GatewayState;
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

/// Where a gateway's admin state or weight comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Source {
    /// The configuration file.
    Config,
    /// `vpnlbctl`, since this daemon started.
    Vpnlbctl,
    /// The state file, read at start (set by `vpnlbctl` before a restart).
    StateFile,
}

impl Source {
    pub const fn as_str(self) -> &'static str {
        match self {
            Source::Config => "config",
            Source::Vpnlbctl => "vpnlbctl",
            Source::StateFile => "state-file",
        }
    }
}

/// A value the operator set, and what the file said at the time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Override<T> {
    pub value: T,
    /// The configuration file's value when this was set.
    pub config: T,
    #[serde(skip, default = "state_file")]
    pub source: Source,
}

fn state_file() -> Source {
    Source::StateFile
}

/// A gateway's runtime values (by gateway name, as `vpnlbctl` names them: in every service).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GatewayOverride {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin_state: Option<Override<GatewayState>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<Override<u32>>,
}

impl GatewayOverride {
    fn is_empty(&self) -> bool {
        self.admin_state.is_none() && self.weight.is_none()
    }
}

/// The state file's contents.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StateFile {
    version: u32,
    gateways: BTreeMap<String, GatewayOverride>,
}

const STATE_FILE_VERSION: u32 = 1;

/// Why the state file could not be written.
#[derive(Debug, thiserror::Error)]
#[error("state file {path}: {source}")]
pub struct StateFileError {
    path: PathBuf,
    #[source]
    source: std::io::Error,
}

/// A runtime value the file's value replaced (logged, and named in the reload's reply).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Superseded {
    pub gateway: String,
    pub what: &'static str,
    pub runtime: String,
    pub config_was: String,
    pub config_now: String,
}

/// The operator's runtime values, by gateway name.
#[derive(Debug, Default)]
pub struct RuntimeState {
    path: Option<PathBuf>,
    gateways: BTreeMap<String, GatewayOverride>,
}

/// The file's (state, weight) of the first gateway called `name` in `spec`.
fn file_values(spec: &ApplianceSpec, name: &str) -> Option<(GatewayState, u32)> {
    spec.services
        .iter()
        .flat_map(|s| &s.gateways)
        .find(|g| g.name == name)
        .map(|g| (g.state, g.weight))
}

impl RuntimeState {
    /// The state kept in `path` (none without a path), reconciled with the configuration file
    /// `spec`: values for gateways the file no longer has, or whose file value changed since
    /// they were set, are dropped (and logged).
    pub fn load(path: Option<&Path>, spec: &ApplianceSpec) -> RuntimeState {
        let mut st = RuntimeState {
            path: path.map(Path::to_path_buf),
            gateways: BTreeMap::new(),
        };
        let Some(path) = path else { return st };
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                info!(path = %path.display(), "no state file yet: the configuration's values apply");
                return st;
            }
            Err(e) => {
                warn!(path = %path.display(), error = %e, "state file unreadable: ignored");
                return st;
            }
        };
        match serde_json::from_str::<StateFile>(&text) {
            Ok(f) if f.version == STATE_FILE_VERSION => st.gateways = f.gateways,
            Ok(f) => warn!(
                path = %path.display(),
                version = f.version,
                "state file of another version: ignored"
            ),
            Err(e) => warn!(path = %path.display(), error = %e, "state file malformed: ignored"),
        }
        let dropped = st.reconcile(spec);
        log_superseded(&dropped);
        info!(
            path = %path.display(),
            gateways = st.gateways.len(),
            superseded = dropped.len(),
            "runtime state restored from the state file"
        );
        if !dropped.is_empty() {
            st.save_logged();
        }
        st
    }

    /// Records what `vpnlbctl` set for `name`, given the configuration file `spec`. A value
    /// equal to the file's is no override.
    pub fn set(
        &mut self,
        spec: &ApplianceSpec,
        name: &str,
        state: Option<GatewayState>,
        weight: Option<u32>,
    ) {
        let Some((file_state, file_weight)) = file_values(spec, name) else {
            return;
        };
        let o = self.gateways.entry(name.to_string()).or_default();
        if let Some(value) = state {
            o.admin_state = (value != file_state).then_some(Override {
                value,
                config: file_state,
                source: Source::Vpnlbctl,
            });
        }
        if let Some(value) = weight {
            o.weight = (value != file_weight).then_some(Override {
                value,
                config: file_weight,
                source: Source::Vpnlbctl,
            });
        }
        if o.is_empty() {
            self.gateways.remove(name);
        }
        self.save_logged();
    }

    /// A reload of the file, now `file`: drops what the file changed or no longer has, returns
    /// it (each logged).
    pub fn reload(&mut self, file: &ApplianceSpec) -> Vec<Superseded> {
        let dropped = self.reconcile(file);
        log_superseded(&dropped);
        if !dropped.is_empty() {
            self.save_logged();
        }
        dropped
    }

    /// Drops the values whose gateway `file` no longer has, or whose file value is no longer
    /// the one recorded when they were set (the file was edited for them: it wins).
    fn reconcile(&mut self, file: &ApplianceSpec) -> Vec<Superseded> {
        let mut dropped = Vec::new();
        self.gateways.retain(|name, o| {
            let Some((state_now, weight_now)) = file_values(file, name) else {
                return false;
            };
            if let Some(s) = o.admin_state.filter(|s| s.config != state_now) {
                dropped.push(superseded(
                    name,
                    "admin_state",
                    s.value,
                    s.config,
                    state_now,
                ));
                o.admin_state = None;
            }
            if let Some(w) = o.weight.filter(|w| w.config != weight_now) {
                dropped.push(superseded(name, "weight", w.value, w.config, weight_now));
                o.weight = None;
            }
            !o.is_empty()
        });
        dropped
    }

    /// What [`Self::reload`] would leave for `file`, without recording or saving anything (a
    /// reload that may still be refused).
    pub fn preview(&self, file: &ApplianceSpec) -> RuntimeState {
        let mut p = RuntimeState {
            path: None,
            gateways: self.gateways.clone(),
        };
        p.reconcile(file);
        p
    }
}

fn log_superseded(dropped: &[Superseded]) {
    for d in dropped {
        warn!(
            gateway = %d.gateway,
            what = d.what,
            runtime = %d.runtime,
            config_was = %d.config_was,
            config_now = %d.config_now,
            "the configuration file changed this value: the file's value replaces the one set at run time"
        );
    }
}

impl RuntimeState {
    /// Puts the runtime values into `spec` (the file's view): what the workers should run.
    pub fn apply(&self, spec: &mut ApplianceSpec) {
        for gw in spec.services.iter_mut().flat_map(|s| &mut s.gateways) {
            if let Some(o) = self.gateways.get(&gw.name) {
                if let Some(s) = o.admin_state {
                    gw.state = s.value;
                }
                if let Some(w) = o.weight {
                    gw.weight = w.value;
                }
            }
        }
    }

    /// Where `gateway`'s (admin state, weight) come from.
    pub fn sources(&self, gateway: &str) -> (Source, Source) {
        let o = self.gateways.get(gateway);
        (
            o.and_then(|o| o.admin_state)
                .map_or(Source::Config, |s| s.source),
            o.and_then(|o| o.weight)
                .map_or(Source::Config, |w| w.source),
        )
    }

    fn save_logged(&self) {
        if let Err(e) = self.save() {
            warn!(error = %e, "runtime state not saved: a restart would lose it");
        }
    }

    /// Writes the state file atomically: a temporary file beside it, fsynced, renamed over it,
    /// and the directory fsynced, so a crash leaves the old file or the new one.
    pub fn save(&self) -> Result<(), StateFileError> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        let err = |source| StateFileError {
            path: path.clone(),
            source,
        };
        let file = StateFile {
            version: STATE_FILE_VERSION,
            gateways: self.gateways.clone(),
        };
        let text = serde_json::to_string_pretty(&file).map_err(|e| err(e.into()))?;
        let dir = path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let mut tmp = path.clone().into_os_string();
        tmp.push(format!(".tmp.{}", std::process::id()));
        let tmp = PathBuf::from(tmp);
        let written = (|| {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(text.as_bytes())?;
            f.write_all(b"\n")?;
            f.sync_all()?;
            std::fs::rename(&tmp, path)?;
            std::fs::File::open(dir)?.sync_all()
        })();
        if written.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        written.map_err(err)
    }
}

fn superseded<T: ToString>(
    gateway: &str,
    what: &'static str,
    runtime: T,
    config_was: T,
    config_now: T,
) -> Superseded {
    Superseded {
        gateway: gateway.to_string(),
        what,
        runtime: runtime.to_string(),
        config_was: config_was.to_string(),
        config_now: config_now.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dataplane::model::GatewaySpec;

    fn spec(gws: &[(&str, GatewayState, u32)]) -> ApplianceSpec {
        let lab = concat!(env!("CARGO_MANIFEST_DIR"), "/../conf/lab.toml");
        let mut s = crate::config::load(Path::new(lab)).unwrap();
        s.services.truncate(1);
        s.services[0].gateways = gws
            .iter()
            .map(|&(name, state, weight)| GatewaySpec {
                name: name.into(),
                ipv4: None,
                ipv6: None,
                weight,
                state,
            })
            .collect();
        s
    }

    const UP: GatewayState = GatewayState::Up;
    const DRAINING: GatewayState = GatewayState::Draining;

    #[test]
    fn drain_and_weight_survive_a_reload_that_leaves_them_alone() {
        let file = spec(&[("gw1", UP, 1), ("gw2", UP, 1)]);
        let mut st = RuntimeState::default();
        st.set(&file, "gw2", Some(DRAINING), None);
        st.set(&file, "gw1", None, Some(5));
        assert!(st.reload(&file).is_empty());
        let mut run = file.clone();
        st.apply(&mut run);
        let gws = &run.services[0].gateways;
        assert_eq!((gws[0].state, gws[0].weight), (UP, 5));
        assert_eq!((gws[1].state, gws[1].weight), (DRAINING, 1));
        assert_eq!(st.sources("gw2"), (Source::Vpnlbctl, Source::Config));
        assert_eq!(st.sources("gw1"), (Source::Config, Source::Vpnlbctl));
    }

    #[test]
    fn a_weight_the_file_changes_wins_and_the_drain_stays() {
        let old = spec(&[("gw1", UP, 1), ("gw2", UP, 1)]);
        let mut st = RuntimeState::default();
        st.set(&old, "gw2", Some(DRAINING), Some(7));
        let new = spec(&[("gw1", UP, 1), ("gw2", UP, 3)]);
        let dropped = st.reload(&new);
        assert_eq!(dropped.len(), 1);
        assert_eq!(
            (dropped[0].what, dropped[0].runtime.as_str()),
            ("weight", "7")
        );
        let mut run = new.clone();
        st.apply(&mut run);
        assert_eq!(
            (
                run.services[0].gateways[1].state,
                run.services[0].gateways[1].weight
            ),
            (DRAINING, 3)
        );
    }

    #[test]
    fn setting_the_file_value_back_is_no_override_and_gone_gateways_are_dropped() {
        let file = spec(&[("gw1", UP, 1), ("gw2", UP, 1)]);
        let mut st = RuntimeState::default();
        st.set(&file, "gw2", Some(DRAINING), None);
        st.set(&file, "gw2", Some(UP), None);
        assert_eq!(st.sources("gw2"), (Source::Config, Source::Config));
        st.set(&file, "gw1", Some(DRAINING), None);
        let new = spec(&[("gw2", UP, 1)]);
        st.reload(&new);
        assert!(st.gateways.is_empty());
    }

    #[test]
    fn the_state_file_round_trips_and_the_file_wins_after_a_restart_too() {
        let dir = std::env::temp_dir().join(format!("vpnlb-state-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("state.json");
        let _ = std::fs::remove_file(&path);
        let file = spec(&[("gw1", UP, 1), ("gw2", UP, 1)]);
        let mut st = RuntimeState::load(Some(&path), &file);
        st.set(&file, "gw2", Some(DRAINING), Some(4));
        st.set(&file, "gw1", None, Some(9));
        // A restart with the same file: everything comes back, from the state file.
        let back = RuntimeState::load(Some(&path), &file);
        assert_eq!(back.sources("gw2"), (Source::StateFile, Source::StateFile));
        let mut run = file.clone();
        back.apply(&mut run);
        assert_eq!(run.services[0].gateways[1].state, DRAINING);
        assert_eq!(run.services[0].gateways[0].weight, 9);
        // A restart after gw1's weight was edited in the file: gw1's runtime weight goes.
        let edited = spec(&[("gw1", UP, 2), ("gw2", UP, 1)]);
        let back = RuntimeState::load(Some(&path), &edited);
        assert_eq!(back.sources("gw1"), (Source::Config, Source::Config));
        assert_eq!(back.sources("gw2"), (Source::StateFile, Source::StateFile));
        // ... and the file on disk says so, with no temporary file left.
        let again = RuntimeState::load(Some(&path), &edited);
        assert!(!again.gateways.contains_key("gw1"));
        let names: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("state.json")]);
        // A malformed file is ignored, not fatal.
        std::fs::write(&path, "{not json").unwrap();
        assert!(RuntimeState::load(Some(&path), &file).gateways.is_empty());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
