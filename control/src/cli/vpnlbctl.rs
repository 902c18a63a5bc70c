//! `vpnlbctl`'s command line: global options and one subcommand per control request.
//!
//! The daemon's grammar is [`ctlsock::parse_request`]; every subcommand maps to one
//! [`Request`] ([`Command::request`]), whose `Display` is the line sent. `vpnlbctl` parses that
//! line back with `parse_request` before sending it, and the tests here do so for every
//! subcommand, so clap and the daemon cannot disagree on what a command means.

use std::net::IpAddr;
use std::path::PathBuf;

use clap::{value_parser, CommandFactory, Parser, Subcommand, ValueEnum};

use super::Section;
use crate::ctlsock::{Request, MAX_FILL, MAX_STALL_MS, MAX_WEIGHT};

const LONG_ABOUT: &str = "\
vpnlbctl sends one command to a running vpnlbd(8) over its control socket and prints the \
reply: tables for lists (the columns an operator reads first; -o wide for all of them), \
key-value lines for objects, JSON with --json or -o json.

The socket is --socket, else $VPNLB_SOCKET, else /run/vpnlb/vpnlbd.sock. The daemon's \
read-only socket ([control] readonly_socket) answers show, stats and ping with its group's \
rights; gateway, affinity flush and reload are refused there.";

/// What `vpnlbctl --help` ends with (after the full command list) and what the man page has
/// beyond the options and commands.
pub const SECTIONS: &[Section] = &[
    Section {
        title: "ENVIRONMENT",
        items: &[(
            "VPNLB_SOCKET",
            "the control socket when --socket is not given",
        )],
    },
    Section {
        title: "FILES",
        items: &[
            (
                "/run/vpnlb/vpnlbd.sock",
                "vpnlbd's control socket (its [control] socket), mode 0660",
            ),
            (
                "/etc/vpnlb/vpnlb.toml",
                "vpnlbd's configuration, re-read by reload",
            ),
        ],
    },
    Section {
        title: "EXIT STATUS",
        items: &[
            ("0", "the daemon carried the command out"),
            (
                "1",
                "the daemon answered with an error, or the command is malformed",
            ),
            ("2", "the daemon could not be reached or did not answer"),
        ],
    },
    Section {
        title: "SEE ALSO",
        items: &[("vpnlbd(8)", "the daemon")],
    },
];

/// How replies are printed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// Tables of the columns an operator reads first; key-value lines for objects.
    Table,
    /// Tables of every column.
    Wide,
    /// The reply's data as JSON (the whole reply on an error).
    Json,
}

#[derive(Parser, Debug)]
#[command(
    name = "vpnlbctl",
    version,
    about = "Inspect and steer a running vpnlbd",
    long_about = LONG_ABOUT,
    disable_help_subcommand = true,
)]
pub struct Cli {
    /// The daemon's control socket, or its read-only one [default: $VPNLB_SOCKET, else
    /// /run/vpnlb/vpnlbd.sock].
    #[arg(long, value_name = "PATH", global = true)]
    pub socket: Option<PathBuf>,
    /// Print JSON: the same as -o json.
    #[arg(long, global = true, conflicts_with = "output")]
    pub json: bool,
    /// Output format: table (the main columns), wide (every column) or json.
    #[arg(short, long, value_enum, value_name = "FORMAT", global = true)]
    pub output: Option<Output>,
    #[command(subcommand)]
    pub command: Command,
}

impl Cli {
    /// The output format: `--json` is `-o json`; neither is `table`.
    pub fn output(&self) -> Output {
        match (self.json, self.output) {
            (true, _) => Output::Json,
            (false, Some(o)) => o,
            (false, None) => Output::Table,
        }
    }
}

#[derive(Subcommand, Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Show the daemon's state.
    #[command(subcommand)]
    Show(Show),
    /// Change a gateway in every service that has it.
    ///
    /// A NAME that is also an action's name (drain, enable, disable, weight) is read as the
    /// action, so such a gateway cannot be changed with vpnlbctl.
    Gateway {
        /// The gateway's name in the configuration.
        #[arg(value_name = "NAME")]
        name: String,
        #[command(subcommand)]
        action: GatewayAction,
    },
    /// Forget clients: they are scheduled afresh on their next packet.
    #[command(subcommand)]
    Affinity(AffinityAction),
    /// Counters in another format.
    #[command(subcommand)]
    Stats(StatsFormat),
    /// Re-read the configuration file: applied whole, or refused (the running one stays).
    Reload,
    /// Check that the daemon answers.
    Ping,
    /// Tests only, refused unless the daemon has [control] fault_injection = true.
    #[command(subcommand, hide = true)]
    Debug(DebugCommand),
}

#[derive(Subcommand, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Show {
    /// Counters, utilisation, burst latency, affinity occupancy, the watchdog.
    Stats,
    /// Per port: device, link, packets, missed and errors, steering.
    Ports,
    /// Per worker: core, utilisation, packets, drops, clients, hand-offs, stalls.
    Workers,
    /// Per gateway: state, admin state, health, weight, clients, traffic, load.
    Gateways,
    /// Per health check: state and for how long, last answer, round-trip time.
    Health,
    /// The HA pair's VRRP state and counters.
    Vrrp,
    /// The affinity sync with the peer appliance.
    Sync,
    /// Per service: redirect mode, redirects, fallbacks by reason; the load reports.
    Redirect,
    /// Packets per traffic class.
    Classes,
    /// Packets per drop reason.
    Drops,
    /// The ARP/ND cache.
    Neighbors,
    /// Affinity entries: every client (at most 1000), or CLIENT's.
    Affinity {
        /// A client's IP address.
        #[arg(value_name = "CLIENT")]
        client: Option<IpAddr>,
    },
}

#[derive(Subcommand, Debug, Clone, Copy, PartialEq, Eq)]
pub enum GatewayAction {
    /// Keep its clients, give it no new ones.
    Drain,
    /// Back to up (health permitting).
    Enable,
    /// Down: its clients move on their next packet.
    Disable,
    /// Its share of new clients (0: none).
    Weight {
        #[arg(value_name = "N", value_parser = value_parser!(u32).range(..=i64::from(MAX_WEIGHT)))]
        weight: u32,
    },
}

#[derive(Subcommand, Debug, Clone, Copy, PartialEq, Eq)]
pub enum AffinityAction {
    /// Forget every client, or CLIENT.
    Flush {
        /// A client's IP address.
        #[arg(value_name = "CLIENT")]
        client: Option<IpAddr>,
    },
}

#[derive(Subcommand, Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatsFormat {
    /// The counters in Prometheus text format.
    Prometheus,
}

#[derive(Subcommand, Debug, Clone, Copy, PartialEq, Eq)]
pub enum DebugCommand {
    /// Stall or panic worker N.
    Worker {
        #[arg(value_name = "N")]
        worker: usize,
        #[command(subcommand)]
        fault: WorkerFault,
    },
    /// Stall the health checker.
    #[command(subcommand)]
    Health(HealthFault),
    /// Add synthetic affinity entries.
    #[command(subcommand)]
    Affinity(AffinityFault),
}

#[derive(Subcommand, Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkerFault {
    /// Spin for MS milliseconds without polling.
    Stall {
        #[arg(value_name = "MS", value_parser = value_parser!(u64).range(1..=MAX_STALL_MS))]
        ms: u64,
    },
    /// Panic (the release build aborts the daemon).
    Panic,
}

#[derive(Subcommand, Debug, Clone, Copy, PartialEq, Eq)]
pub enum HealthFault {
    /// Sleep for MS milliseconds.
    Stall {
        #[arg(value_name = "MS", value_parser = value_parser!(u64).range(1..=MAX_STALL_MS))]
        ms: u64,
    },
}

#[derive(Subcommand, Debug, Clone, Copy, PartialEq, Eq)]
pub enum AffinityFault {
    /// N entries between the workers (IPv6 clients in 2001:2::/48).
    Fill {
        #[arg(value_name = "N", value_parser = value_parser!(u64).range(1..=MAX_FILL))]
        entries: u64,
    },
}

impl Command {
    /// The control request this command is; its `Display` is the line sent to the daemon.
    pub fn request(&self) -> Request {
        match self {
            Command::Show(show) => match *show {
                Show::Stats => Request::ShowStats,
                Show::Ports => Request::ShowPorts,
                Show::Workers => Request::ShowWorkers,
                Show::Gateways => Request::ShowGateways,
                Show::Health => Request::ShowHealth,
                Show::Vrrp => Request::ShowVrrp,
                Show::Sync => Request::ShowSync,
                Show::Redirect => Request::ShowRedirect,
                Show::Classes => Request::ShowClasses,
                Show::Drops => Request::ShowDrops,
                Show::Neighbors => Request::ShowNeighbors,
                Show::Affinity { client } => Request::ShowAffinity { client },
            },
            Command::Gateway { name, action } => {
                let name = name.clone();
                match *action {
                    GatewayAction::Drain => Request::GatewayDrain { name },
                    GatewayAction::Enable => Request::GatewayEnable { name },
                    GatewayAction::Disable => Request::GatewayDisable { name },
                    GatewayAction::Weight { weight } => Request::GatewayWeight { name, weight },
                }
            }
            Command::Affinity(AffinityAction::Flush { client }) => {
                Request::AffinityFlush { client: *client }
            }
            Command::Stats(StatsFormat::Prometheus) => Request::StatsPrometheus,
            Command::Reload => Request::Reload,
            Command::Ping => Request::Ping,
            Command::Debug(debug) => match *debug {
                DebugCommand::Worker {
                    worker,
                    fault: WorkerFault::Stall { ms },
                } => Request::DebugWorkerStall { worker, ms },
                DebugCommand::Worker {
                    worker,
                    fault: WorkerFault::Panic,
                } => Request::DebugWorkerPanic { worker },
                DebugCommand::Health(HealthFault::Stall { ms }) => Request::DebugHealthStall { ms },
                DebugCommand::Affinity(AffinityFault::Fill { entries }) => {
                    Request::DebugAffinityFill { entries }
                }
            },
        }
    }
}

/// The clap command, as the program, the man page and the completions use it: `--help` ends
/// with every command line (`show redirect`, `gateway NAME weight N`, ...) and [`SECTIONS`].
pub fn command() -> clap::Command {
    let cmd = Cli::command();
    let lines = super::command_lines(&cmd);
    let width = lines.iter().map(|l| l.usage.len()).max().unwrap_or(0);
    let mut text = String::from("Command lines:\n");
    for line in &lines {
        text.push_str(&format!("  {:width$}  {}\n", line.usage, line.about));
    }
    text.push('\n');
    text.push_str(&super::after_help(SECTIONS));
    cmd.after_help(text)
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use clap::FromArgMatches;

    use super::*;
    use crate::ctlsock::parse_request;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        let matches = command()
            .try_get_matches_from(std::iter::once("vpnlbctl").chain(args.iter().copied()))?;
        Cli::from_arg_matches(&matches)
    }

    fn request(args: &[&str]) -> Request {
        match parse(args) {
            Ok(cli) => cli.command.request(),
            Err(e) => panic!("{args:?}: {e}"),
        }
    }

    #[test]
    fn the_definition_is_consistent() {
        command().debug_assert();
    }

    /// Every subcommand: clap's parse, the request it maps to, and the daemon's parse of the
    /// line sent all agree.
    #[test]
    fn every_subcommand_is_the_request_the_daemon_parses() {
        let client = Some(IpAddr::V4(Ipv4Addr::new(198, 18, 64, 7)));
        let v6 = Some("2001:db8::7".parse().unwrap());
        let name = || "gw-1.a".to_string();
        let cases: Vec<(&[&str], Request)> = vec![
            (&["show", "stats"], Request::ShowStats),
            (&["show", "ports"], Request::ShowPorts),
            (&["show", "workers"], Request::ShowWorkers),
            (&["show", "gateways"], Request::ShowGateways),
            (&["show", "health"], Request::ShowHealth),
            (&["show", "vrrp"], Request::ShowVrrp),
            (&["show", "sync"], Request::ShowSync),
            (&["show", "redirect"], Request::ShowRedirect),
            (&["show", "classes"], Request::ShowClasses),
            (&["show", "drops"], Request::ShowDrops),
            (&["show", "neighbors"], Request::ShowNeighbors),
            (
                &["show", "affinity"],
                Request::ShowAffinity { client: None },
            ),
            (
                &["show", "affinity", "198.18.64.7"],
                Request::ShowAffinity { client },
            ),
            (
                &["show", "affinity", "2001:db8::7"],
                Request::ShowAffinity { client: v6 },
            ),
            (
                &["gateway", "gw-1.a", "drain"],
                Request::GatewayDrain { name: name() },
            ),
            (
                &["gateway", "gw-1.a", "enable"],
                Request::GatewayEnable { name: name() },
            ),
            (
                &["gateway", "gw-1.a", "disable"],
                Request::GatewayDisable { name: name() },
            ),
            (
                &["gateway", "gw-1.a", "weight", "0"],
                Request::GatewayWeight {
                    name: name(),
                    weight: 0,
                },
            ),
            (
                &["gateway", "gw-1.a", "weight", "10000"],
                Request::GatewayWeight {
                    name: name(),
                    weight: MAX_WEIGHT,
                },
            ),
            (
                &["affinity", "flush"],
                Request::AffinityFlush { client: None },
            ),
            (
                &["affinity", "flush", "198.18.64.7"],
                Request::AffinityFlush { client },
            ),
            (&["stats", "prometheus"], Request::StatsPrometheus),
            (&["reload"], Request::Reload),
            (&["ping"], Request::Ping),
            (
                &["debug", "worker", "1", "stall", "1500"],
                Request::DebugWorkerStall {
                    worker: 1,
                    ms: 1500,
                },
            ),
            (
                &["debug", "worker", "0", "panic"],
                Request::DebugWorkerPanic { worker: 0 },
            ),
            (
                &["debug", "health", "stall", "60000"],
                Request::DebugHealthStall { ms: 60_000 },
            ),
            (
                &["debug", "affinity", "fill", "10000000"],
                Request::DebugAffinityFill {
                    entries: 10_000_000,
                },
            ),
        ];
        for (args, want) in cases {
            let got = request(args);
            assert_eq!(got, want, "{args:?}");
            let line = got.to_string();
            assert_eq!(parse_request(&line), Ok(want), "{args:?} sent as `{line}`");
            // The words typed are the words sent.
            assert_eq!(line, args.join(" "), "{args:?}");
        }
    }

    /// Every leaf of the clap tree is covered by the test above (a new subcommand needs a case).
    #[test]
    fn every_leaf_is_a_request_line() {
        let cmd = Cli::command();
        let mut leaves = Vec::new();
        collect_leaves(&cmd, &mut Vec::new(), &mut leaves);
        assert_eq!(leaves.len(), 24, "{leaves:?}");
    }

    fn collect_leaves(cmd: &clap::Command, path: &mut Vec<String>, out: &mut Vec<String>) {
        for sub in cmd.get_subcommands() {
            path.push(sub.get_name().to_string());
            if sub.has_subcommands() {
                collect_leaves(sub, path, out);
            } else {
                out.push(path.join(" "));
            }
            path.pop();
        }
    }

    /// What clap refuses, parse_request refuses too (the bounds are the daemon's).
    #[test]
    fn out_of_range_values_are_refused_like_the_daemon_does() {
        for args in [
            &["gateway", "gw1", "weight", "10001"][..],
            &["gateway", "gw1", "weight", "-1"],
            &["show", "affinity", "x"],
            &["affinity", "flush", "1.2.3"],
            &["debug", "worker", "1", "stall", "0"],
            &["debug", "worker", "1", "stall", "60001"],
            &["debug", "worker", "x", "panic"],
            &["debug", "health", "stall", "soon"],
            &["debug", "affinity", "fill", "0"],
            &["show", "stats", "now"],
            &["shwo", "stats"],
            &["show"],
            &["gateway", "gw1"],
            &["gateway"],
            &["stats"],
            &["reload", "now"],
        ] {
            assert!(parse(args).is_err(), "clap took {args:?}");
            assert!(
                parse_request(&args.join(" ")).is_err(),
                "the daemon took {args:?}"
            );
        }
    }

    /// How the tests and lab scripts call vpnlbctl (control/tests/ctlsock.rs, scripts/lib/
    /// labtest.sh's `ctl` = `--socket S --json ...`, scripts/bench.py, scripts/lib/pair.sh).
    #[test]
    fn the_scripts_calls_parse() {
        let calls: &[&[&str]] = &[
            &["--socket", "/tmp/s.sock", "--json", "show", "gateways"],
            &[
                "--socket",
                "/tmp/s.sock",
                "--json",
                "show",
                "affinity",
                "198.18.0.11",
            ],
            &[
                "--socket",
                "/tmp/s.sock",
                "--json",
                "debug",
                "worker",
                "1",
                "stall",
                "3000",
            ],
            &[
                "--socket",
                "/tmp/s.sock",
                "--json",
                "debug",
                "worker",
                "1",
                "panic",
            ],
            &[
                "--socket",
                "/tmp/s.sock",
                "--json",
                "gateway",
                "gw2",
                "disable",
            ],
            &["--socket", "/tmp/s.sock", "--json", "reload"],
            &["--socket", "/tmp/s.sock", "--json", "ping"],
            &["--socket", "/tmp/s.sock", "stats", "prometheus"],
            &["--socket", "/tmp/s.sock", "show", "redirect"],
            &["--json", "show", "workers"],
            &["gateway", "gw1", "weight", "5", "--json"],
            &["show", "gateways", "-o", "wide"],
            &["-o", "json", "show", "stats"],
            &["show", "gateways", "--socket", "/tmp/s.sock"],
        ];
        for args in calls {
            let cli = parse(args).unwrap_or_else(|e| panic!("{args:?}: {e}"));
            let line = cli.command.request().to_string();
            assert!(parse_request(&line).is_ok(), "{args:?}");
            assert_eq!(cli.socket.is_some(), args.contains(&"--socket"), "{args:?}");
        }
    }

    #[test]
    fn output_formats() {
        let output = |args: &[&str]| parse(args).unwrap().output();
        assert_eq!(output(&["ping"]), Output::Table);
        assert_eq!(output(&["--json", "ping"]), Output::Json);
        assert_eq!(output(&["-o", "json", "ping"]), Output::Json);
        assert_eq!(output(&["ping", "-o", "wide"]), Output::Wide);
        assert_eq!(output(&["--output", "table", "ping"]), Output::Table);
        assert!(parse(&["--json", "-o", "wide", "ping"]).is_err());
        assert!(parse(&["-o", "yaml", "ping"]).is_err());
    }

    #[test]
    fn help_lists_every_command_line_and_the_exit_codes() {
        let help = command().render_long_help().to_string();
        for want in [
            "show redirect",
            "show affinity [CLIENT]",
            "gateway NAME weight N",
            "affinity flush [CLIENT]",
            "stats prometheus",
            "Exit status:",
            "2  the daemon could not be reached",
            "VPNLB_SOCKET",
        ] {
            assert!(help.contains(want), "no `{want}` in:\n{help}");
        }
        // The test-only commands stay out of the help.
        assert!(!help.contains("debug"), "{help}");
    }
}
