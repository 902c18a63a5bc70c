//! vpnlbctl: talks to a running vpnlbd over its control socket.
//!
//! `vpnlbctl [--socket PATH] [--json | -o table|wide|json] COMMAND...`: the command is parsed
//! by clap (`control::cli::vpnlbctl`, shared with the man page and completions), turned into
//! the control request and sent as its line; the reply is printed as tables
//! (`control::cli::table`) or JSON. The socket is `--socket`, else `$VPNLB_SOCKET`, else the
//! default; point either at the daemon's read-only socket (`[control] readonly_socket`) to run
//! `show` and `stats` commands with its group's rights (state-changing commands are refused
//! there). Exit codes: 0 success, 1 the daemon answered with an error (or the command is
//! malformed), 2 the daemon could not be reached or did not answer.

#![forbid(unsafe_code)]
#![cfg_attr(not(test), deny(clippy::cast_possible_truncation))]

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::FromArgMatches;
use control::cli::table::{self, Layout};
use control::cli::vpnlbctl::{self as cli, Cli, Output};
use control::ctlsock::{self, QueryError, Reply, DEFAULT_SOCKET};
use serde_json::Value;

const TIMEOUT: Duration = Duration::from_secs(5);
/// The environment variable naming the socket when `--socket` is not given.
const SOCKET_ENV: &str = "VPNLB_SOCKET";

/// Exit code: the daemon answered with an error, or the command is malformed.
const EXIT_ERROR: u8 = 1;
/// Exit code: the daemon could not be reached or did not answer.
const EXIT_UNREACHABLE: u8 = 2;

fn main() -> ExitCode {
    let cli = match cli::command()
        .try_get_matches()
        .and_then(|m| Cli::from_arg_matches(&m))
    {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            // --help and --version print to stdout and succeed; usage errors are exit code 1
            // (clap's own 2 means "unreachable" here).
            return if e.use_stderr() {
                ExitCode::from(EXIT_ERROR)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    let socket = cli
        .socket
        .clone()
        .or_else(|| std::env::var_os(SOCKET_ENV).map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from(DEFAULT_SOCKET));
    let request = cli.command.request();
    let line = request.to_string();
    // The daemon's own parser must read the line as the same request: clap's grammar and the
    // daemon's cannot drift apart unnoticed (and nothing malformed is sent).
    match ctlsock::parse_request(&line) {
        Ok(parsed) if parsed == request => {}
        Ok(parsed) => {
            eprintln!("vpnlbctl: `{line}` would be read as {parsed:?}, not {request:?} (a bug)");
            return ExitCode::from(EXIT_ERROR);
        }
        Err(e) => {
            eprintln!("vpnlbctl: `{line}`: {e}");
            return ExitCode::from(EXIT_ERROR);
        }
    }
    let reply = match ctlsock::query(&socket, &line, TIMEOUT) {
        Ok(reply) => reply,
        Err(QueryError::Connect(e)) => {
            eprintln!(
                "vpnlbctl: cannot connect to {}: {e} (is vpnlbd running? see --socket)",
                socket.display()
            );
            return ExitCode::from(EXIT_UNREACHABLE);
        }
        Err(QueryError::Exchange(e)) => {
            eprintln!("vpnlbctl: {}: {e}", socket.display());
            return ExitCode::from(EXIT_UNREACHABLE);
        }
    };
    let layout = match cli.output() {
        Output::Json => None,
        Output::Table => Some(Layout::Compact),
        Output::Wide => Some(Layout::Wide),
    };
    match reply {
        Reply::Error(e) => {
            if layout.is_none() {
                println!("{}", serde_json::json!({ "ok": false, "error": e }));
            } else {
                eprintln!("vpnlbctl: {e}");
            }
            ExitCode::from(EXIT_ERROR)
        }
        Reply::Text(text) => {
            if layout.is_none() {
                println!("{}", Value::String(text));
            } else {
                print!("{text}");
                if !text.is_empty() && !text.ends_with('\n') {
                    println!();
                }
            }
            ExitCode::SUCCESS
        }
        Reply::Ok(data) => {
            match layout {
                None => println!(
                    "{}",
                    serde_json::to_string_pretty(&data).unwrap_or_else(|_| data.to_string())
                ),
                Some(layout) => print!("{}", table::render(&request, &data, layout)),
            }
            ExitCode::SUCCESS
        }
    }
}
