//! vpnlbd: the vpnlb appliance daemon.
//!
//! `vpnlbd replay` runs the worker pipeline over capture files (see README.md).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use control::{config, replay};

#[derive(Parser)]
#[command(name = "vpnlbd", version, about = "VPN gateway load balancer")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the dataplane pipeline over capture files and write what it transmits.
    Replay {
        /// Configuration file (TOML).
        #[arg(long)]
        config: PathBuf,
        /// PORT=CAPTURE: frames in CAPTURE (pcap or pcapng) arrive on port PORT. Repeatable;
        /// captures are merged by timestamp.
        #[arg(long = "in", value_name = "PORT=CAPTURE", required = true)]
        inputs: Vec<replay::Input>,
        /// Directory for `<port>.pcap`, one per configured port.
        #[arg(long)]
        out_dir: PathBuf,
        /// Also list every affinity entry at the end.
        #[arg(long)]
        affinity: bool,
    },
    /// Validate a configuration file and exit.
    Check {
        #[arg(long)]
        config: PathBuf,
    },
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match cli.command {
        Command::Check { config } => match config::load(&config) {
            Ok(spec) => {
                tracing::info!(
                    config = %config.display(),
                    ports = spec.ports.len(),
                    services = spec.services.len(),
                    "configuration is valid"
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                tracing::error!(error = %e, "invalid configuration");
                ExitCode::from(2)
            }
        },
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
                Ok(report) => match serde_json::to_string(&report) {
                    Ok(json) => {
                        println!("{json}");
                        ExitCode::SUCCESS
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "cannot serialise the report");
                        ExitCode::FAILURE
                    }
                },
                Err(e) => {
                    tracing::error!(error = %e, "replay failed");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
