//! `vpnlbd --config FILE`: the dataplane on DPDK.
//!
//! [`run`] is four steps. [`Appliance::build`] (in `appliance.rs`) starts everything in named
//! steps, so that a bad configuration never touches a device: checks, the first snapshot, the
//! control socket, the exception path and VRRP routers, then the EAL (control core only), the
//! ports (one RX and one TX queue per worker), the rings, the workers (pinned, registered with
//! the EAL), the control thread's state, and the health checker, HA sync and load reports.
//! [`ControlLoop::start`] (in `control_loop.rs`) announces the VIPs and starts VRRP; its
//! `run_until` is the control thread: it resolves neighbors (ARP / ND) for the workers,
//! publishes snapshots, runs the HA pair, answers the control socket, until SIGINT/SIGTERM or
//! an optional stop condition. `shutdown` stops the workers (each flushes its TX buffers), then
//! the ports, and returns the final counters.

pub mod api;
pub mod appliance;
pub mod control;
pub mod control_loop;
pub mod exception;
pub mod ha;
pub mod loads;
pub mod loglimit;
pub mod metrics;
pub mod metrics_http;
pub mod pending;
pub mod rates;
pub mod reload;
pub mod runtime_state;
pub mod sync;
pub mod watchdog;
pub mod worker;

use std::collections::HashSet;
use std::path::Path;
use std::time::Duration;

use dataplane::counters::WorkerCounters;
use dataplane::neighbor::NeighborCounters;
use dpdk::EalArgs;
use serde::Serialize;

use crate::config::{Config, OnGatewayDown};
use crate::health::checker::{self, Checker, CheckerError};
pub use appliance::{Appliance, StartError};
pub use control_loop::{ControlLoop, Signals};
use runtime_state::RuntimeState;
use worker::{IoCounters, WorkerReport};

/// When to stop besides a signal (tests and benchmarks).
#[derive(Clone, Copy, Debug, Default)]
pub struct RunOptions {
    /// Stop once frames have been received and none arrived for this long.
    pub stop_after_idle: Option<Duration>,
    /// Stop after this long.
    pub run_for: Option<Duration>,
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
        // A core id past u32::MAX (no such core: check_resources refuses it first) stays out
        // of range for the EAL, which refuses it too.
        .main_lcore(u32::try_from(d.control_core).unwrap_or(u32::MAX))
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

/// Runs the daemon until `stop` is set (by a signal handler) or an option says so: build,
/// start, loop, shut down.
///
/// The operator's runtime values kept in `[control] state_file` apply from the first snapshot
/// on (see `runtime_state`).
pub fn run(
    mut cfg: Config,
    config_path: &Path,
    opts: RunOptions,
    signals: &Signals,
) -> Result<DaemonReport, StartError> {
    let runtime = RuntimeState::load(cfg.control.state_file.as_deref(), &cfg.spec);
    let file_spec = cfg.spec.clone();
    runtime.apply(&mut cfg.spec);
    let appliance = Appliance::build(cfg)?;
    let mut control = ControlLoop::start(appliance, config_path, opts, runtime, file_spec);
    control.run_until(signals);
    Ok(control.shutdown())
}

/// Starts the health checker for `cfg`'s checks (`None`: there are none). It runs in the
/// exception path's namespace, so probes leave from the appliance's own addresses.
pub fn start_checker(cfg: &Config) -> Result<Option<Checker>, CheckerError> {
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
