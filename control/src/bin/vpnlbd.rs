//! vpnlbd: the vpnlb appliance daemon.
//!
//! `vpnlbd --config FILE` runs the appliance on DPDK; `vpnlbd replay` runs the same pipeline
//! over capture files; `vpnlbd check` validates a configuration (see docs/operations.md). The command
//! line is defined in `control::cli::vpnlbd`, where the man page generator reads it too.

#![forbid(unsafe_code)]
#![cfg_attr(not(test), deny(clippy::cast_possible_truncation))]

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use control::cli::vpnlbd::{Cli, Command};
use control::logging;
use control::{config, daemon, replay};

fn main() -> ExitCode {
    let cli = Cli::parse();
    match logging::filter(cli.log_level.as_deref()) {
        Ok(filter) => logging::init(cli.log_format, filter, logging::Output::detect()),
        Err(e) => {
            eprintln!("vpnlbd: {e}");
            return ExitCode::from(2);
        }
    }
    let Some(command) = cli.command else {
        let Some(path) = cli.config else {
            eprintln!("vpnlbd: give --config FILE to run, or a subcommand (see --help)");
            return ExitCode::from(2);
        };
        return run_daemon(&path, cli.stop_after_idle_ms, cli.run_for_s);
    };
    match command {
        Command::Check { config } => check(&config),
        Command::Replay {
            config,
            inputs,
            out_dir,
            affinity,
        } => {
            let spec = match config::load(&config) {
                Ok(s) => s,
                Err(e) => {
                    tracing::error!(error = %e, "invalid configuration");
                    return ExitCode::from(2);
                }
            };
            match replay::run(spec, &inputs, &out_dir, affinity) {
                Ok(report) => print_report(&report),
                Err(e) => {
                    tracing::error!(error = %e, "replay failed");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

/// `vpnlbd check`: the configuration file, then what the daemon checks before it touches a
/// device (the same errors), so a configuration that passes does not fail those at start.
fn check(path: &std::path::Path) -> ExitCode {
    let c = match config::load_config(path) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "invalid configuration");
            return ExitCode::from(2);
        }
    };
    if let Err(e) = daemon::appliance::preflight(&c) {
        tracing::error!(error = %e, "vpnlbd failed");
        return ExitCode::from(2);
    }
    tracing::info!(
        config = %path.display(),
        ports = c.spec.ports.len(),
        services = c.spec.services.len(),
        workers = c.dataplane.workers.len(),
        "configuration is valid"
    );
    ExitCode::SUCCESS
}

fn run_daemon(path: &std::path::Path, idle_ms: Option<u64>, run_for_s: Option<u64>) -> ExitCode {
    // Everything is validated before any device is touched.
    let cfg = match config::load_config(path) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "invalid configuration");
            return ExitCode::from(2);
        }
    };
    // SIGHUP reloads (as `vpnlbctl reload`); its default action would end the daemon.
    let signals = daemon::Signals::default();
    for (sig, flag) in [
        (signal_hook::consts::SIGINT, &signals.stop),
        (signal_hook::consts::SIGTERM, &signals.stop),
        (signal_hook::consts::SIGHUP, &signals.reload),
    ] {
        if let Err(e) = signal_hook::flag::register(sig, Arc::clone(flag)) {
            tracing::error!(error = %e, "cannot install signal handlers");
            return ExitCode::FAILURE;
        }
    }
    let opts = daemon::RunOptions {
        stop_after_idle: idle_ms.map(Duration::from_millis),
        run_for: run_for_s.map(Duration::from_secs),
    };
    match daemon::run(cfg, path, opts, &signals) {
        Ok(report) => print_report(&report),
        Err(e) => {
            tracing::error!(error = %e, "vpnlbd failed");
            ExitCode::FAILURE
        }
    }
}

/// Prints a final report as one JSON object on stdout.
fn print_report(report: &impl serde::Serialize) -> ExitCode {
    match serde_json::to_string(report) {
        Ok(json) => {
            println!("{json}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot serialise the report");
            ExitCode::FAILURE
        }
    }
}
