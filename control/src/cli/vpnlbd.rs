//! `vpnlbd`'s command line.

use std::path::PathBuf;

use clap::{CommandFactory, Parser, Subcommand};

use super::Section;
use crate::logging::LogFormat;
use crate::replay;

const LONG_ABOUT: &str = "\
vpnlbd is a DPDK appliance that load-balances VPN gateways: IKEv2/IPsec (UDP 500, NAT-T on \
UDP 4500, raw ESP) and TLS VPNs (TCP 443, DTLS on UDP 443). Every flow of one client reaches \
the same gateway, and only the destination (on the way in) and the source (on the way back) \
are rewritten.

vpnlbd --config FILE validates the whole configuration before it touches a device, starts the \
EAL, configures the ports, pins one poll-mode worker per configured core and runs the control \
thread: health checks, ARP/ND, VRRP and the affinity sync of an HA pair, the control socket \
that vpnlbctl(8) talks to, and live reloads. It runs in the foreground, logs to stderr, tells \
systemd when it is ready (Type=notify) and prints its final counters as one JSON object on \
stdout when it stops.

vpnlbd check validates a configuration as the daemon would before touching a device; vpnlbd \
replay runs the same pipeline over capture files (the scheduler's oracle).";

/// What `vpnlbd --help` ends with and what the man page has beyond the options.
pub const SECTIONS: &[Section] = &[
    Section {
        title: "SIGNALS",
        items: &[
            (
                "SIGHUP",
                "reload the configuration file (as vpnlbctl reload): applied whole or refused, \
                 the running configuration stays on a refusal",
            ),
            (
                "SIGTERM, SIGINT",
                "stop: the workers flush their queues and the final counters are printed",
            ),
        ],
    },
    Section {
        title: "FILES",
        items: &[
            (
                "/etc/vpnlb/vpnlb.toml",
                "the configuration (the package's commented example; give it with --config)",
            ),
            (
                "/run/vpnlb/vpnlbd.sock",
                "the control socket, mode 0660 ([control] socket); [control] readonly_socket \
                 adds a read-only one",
            ),
        ],
    },
    Section {
        title: "ENVIRONMENT",
        items: &[
            ("RUST_LOG", "log directives when --log-level is not given"),
            (
                "JOURNAL_STREAM",
                "set by systemd: log lines carry no timestamp (journald adds its own)",
            ),
            (
                "NOTIFY_SOCKET, WATCHDOG_USEC",
                "set by systemd: readiness, reload and status notifications, and the watchdog",
            ),
        ],
    },
    Section {
        title: "EXIT STATUS",
        items: &[
            (
                "0",
                "stopped cleanly (a signal, --run-for-s, --stop-after-idle-ms); check: the \
                 configuration is valid; replay: done",
            ),
            (
                "1",
                "failed after the configuration was read (the EAL, a device, a core, a \
                 namespace, a capture)",
            ),
            (
                "2",
                "a bad command line or an invalid configuration; check: also any check the \
                 daemon makes before touching a device",
            ),
        ],
    },
    Section {
        title: "SEE ALSO",
        items: &[("vpnlbctl(8)", "inspect and steer a running vpnlbd")],
    },
];

#[derive(Parser, Debug)]
#[command(
    name = "vpnlbd",
    version,
    about = "VPN gateway load balancer",
    long_about = LONG_ABOUT,
    after_help = super::after_help(SECTIONS),
)]
pub struct Cli {
    /// Run the appliance with this configuration (TOML).
    #[arg(long, global = false, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Stop once traffic was seen and none arrived for this many milliseconds (tests).
    #[arg(long, value_name = "MS")]
    pub stop_after_idle_ms: Option<u64>,
    /// Stop after this many seconds.
    #[arg(long, value_name = "S")]
    pub run_for_s: Option<u64>,
    /// Log line format: text (colour only on a terminal) or json (one object per line).
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,
    /// Log level (error, warn, info, debug, trace) or directives as in RUST_LOG; default:
    /// $RUST_LOG, else info.
    #[arg(long, value_name = "LEVEL", global = true)]
    pub log_level: Option<String>,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the dataplane pipeline over capture files and write what it transmits.
    Replay {
        /// Configuration file (TOML).
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
        /// PORT=CAPTURE: frames in CAPTURE (pcap or pcapng) arrive on port PORT. Repeatable;
        /// captures are merged by timestamp.
        #[arg(long = "in", value_name = "PORT=CAPTURE", required = true)]
        inputs: Vec<replay::Input>,
        /// Directory for `<port>.pcap`, one per configured port.
        #[arg(long, value_name = "DIR")]
        out_dir: PathBuf,
        /// Also list every affinity entry at the end.
        #[arg(long)]
        affinity: bool,
    },
    /// Validate a configuration file and exit.
    Check {
        /// Configuration file (TOML).
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
    },
}

/// The clap command, for the man page and completions.
pub fn command() -> clap::Command {
    Cli::command()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn files_name_the_defaults() {
        let files = SECTIONS.iter().find(|s| s.title == "FILES").unwrap();
        for path in [super::super::CONFIG_FILE, crate::ctlsock::DEFAULT_SOCKET] {
            assert!(files.items.iter().any(|(t, _)| *t == path), "{path}");
        }
    }

    #[test]
    fn parses_as_before() {
        let cli =
            Cli::try_parse_from(["vpnlbd", "--config", "a.toml", "--run-for-s", "3"]).unwrap();
        assert_eq!(cli.config, Some(PathBuf::from("a.toml")));
        assert_eq!(cli.run_for_s, Some(3));
        assert!(cli.command.is_none());
        let cli = Cli::try_parse_from([
            "vpnlbd",
            "replay",
            "--config",
            "a.toml",
            "--in",
            "client0=x.pcap",
            "--in",
            "backend0=y.pcap",
            "--out-dir",
            "out",
            "--log-format",
            "json",
        ])
        .unwrap();
        assert_eq!(cli.log_format, LogFormat::Json);
        match cli.command {
            Some(Command::Replay {
                inputs, affinity, ..
            }) => {
                assert_eq!(inputs.len(), 2);
                assert!(!affinity);
            }
            other => panic!("{other:?}"),
        }
        let cli = Cli::try_parse_from(["vpnlbd", "check", "--config", "a.toml"]).unwrap();
        assert!(matches!(cli.command, Some(Command::Check { .. })));
    }
}
