//! vpnlbctl: talks to a running vpnlbd over its control socket.
//!
//! `vpnlbctl [--socket PATH] [--json] COMMAND...` sends the command words as one request line,
//! reads the reply and prints it: as human-readable tables by default, as JSON with `--json`.
//! The socket is `--socket`, else `$VPNLB_SOCKET`, else the default; point either at the
//! daemon's read-only socket (`[control] readonly_socket`) to run `show` and `stats` commands
//! with its group's rights (state-changing commands are refused there).
//! Exit codes: 0 success, 1 the daemon answered with an error (or the command is malformed),
//! 2 the daemon could not be reached or did not answer.

#![forbid(unsafe_code)]
#![cfg_attr(not(test), deny(clippy::cast_possible_truncation))]

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use control::ctlsock::{self, QueryError, Reply, DEFAULT_SOCKET};
use serde_json::{Map, Value};

const TIMEOUT: Duration = Duration::from_secs(5);
/// The environment variable naming the socket when `--socket` is not given.
const SOCKET_ENV: &str = "VPNLB_SOCKET";

#[derive(Parser)]
#[command(
    name = "vpnlbctl",
    version,
    about = "Inspect and steer a running vpnlbd",
    after_help = "Commands:\n  \
        show stats | ports | workers | gateways | health | vrrp | sync | classes | drops | neighbors\n  \
        show affinity [CLIENT]\n  \
        gateway NAME drain | enable | disable | weight N\n  \
        affinity flush [CLIENT]\n  \
        stats prometheus\n  \
        reload\n  \
        ping\n  \
        debug worker N stall MS | debug worker N panic | debug health stall MS\n    \
        (tests only: refused unless the daemon has [control] fault_injection = true)\n\n\
        The socket is --socket, else $VPNLB_SOCKET, else /run/vpnlb/vpnlbd.sock; the daemon's\n  \
        read-only socket ([control] readonly_socket) answers show, stats and ping only.\n\n\
        Exit status: 0 ok, 1 error reply or bad command, 2 vpnlbd unreachable or silent."
)]
struct Cli {
    /// The daemon's control socket, or its read-only one [default: $VPNLB_SOCKET, else
    /// /run/vpnlb/vpnlbd.sock].
    #[arg(long, value_name = "PATH")]
    socket: Option<PathBuf>,
    /// Print the reply's data as JSON (the whole reply on error) instead of tables.
    #[arg(long)]
    json: bool,
    /// The command, e.g. `show gateways` or `gateway gw1 drain`.
    #[arg(required = true, value_name = "COMMAND")]
    command: Vec<String>,
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(1)
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
    let line = cli.command.join(" ");
    // Catch typos here, so that they are reported even without a daemon.
    if let Err(e) = ctlsock::parse_request(&line) {
        eprintln!("vpnlbctl: {e}");
        return ExitCode::from(1);
    }
    let reply = match ctlsock::query(&socket, &line, TIMEOUT) {
        Ok(reply) => reply,
        Err(QueryError::Connect(e)) => {
            eprintln!(
                "vpnlbctl: cannot connect to {}: {e} (is vpnlbd running? see --socket)",
                socket.display()
            );
            return ExitCode::from(2);
        }
        Err(QueryError::Exchange(e)) => {
            eprintln!("vpnlbctl: {}: {e}", socket.display());
            return ExitCode::from(2);
        }
    };
    match reply {
        Reply::Error(e) => {
            if cli.json {
                println!("{}", serde_json::json!({ "ok": false, "error": e }));
            } else {
                eprintln!("vpnlbctl: {e}");
            }
            ExitCode::from(1)
        }
        Reply::Text(text) => {
            if cli.json {
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
            if cli.json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&data).unwrap_or_else(|_| data.to_string())
                );
            } else {
                print!("{}", render(&data));
            }
            ExitCode::SUCCESS
        }
    }
}

/// The human form of a reply's data: a table for an array of objects, `key  value` lines for an
/// object, the value itself otherwise.
fn render(data: &Value) -> String {
    match data {
        Value::Null => String::new(),
        Value::Array(rows) if rows.is_empty() => "(none)\n".into(),
        Value::Array(rows) if rows.iter().all(Value::is_object) => table(rows),
        Value::Array(items) => items.iter().map(|v| format!("{}\n", cell(v))).collect(),
        Value::Object(map) => {
            let mut lines = Vec::new();
            flatten("", map, &mut lines);
            let width = lines.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
            lines
                .iter()
                .map(|(k, v)| trim_line(&format!("{k:width$}  {v}")))
                .collect()
        }
        scalar => format!("{}\n", cell(scalar)),
    }
}

/// The line without trailing padding, `\n` added.
fn trim_line(line: &str) -> String {
    format!("{}\n", line.trim_end())
}

/// A column-aligned table: the columns are the first row's keys, in order; numeric columns are
/// right-aligned.
fn table(rows: &[Value]) -> String {
    let columns: Vec<&String> = match rows.first() {
        Some(Value::Object(first)) => first.keys().collect(),
        _ => return String::new(),
    };
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|row| {
            columns
                .iter()
                .map(|c| row.get(c.as_str()).map_or_else(|| "-".into(), cell))
                .collect()
        })
        .collect();
    let numeric: Vec<bool> = columns
        .iter()
        .map(|c| {
            rows.iter().all(|r| {
                r.get(c.as_str())
                    .is_none_or(|v| v.is_number() || v.is_null())
            })
        })
        .collect();
    let widths: Vec<usize> = columns
        .iter()
        .enumerate()
        .map(|(i, c)| {
            cells
                .iter()
                .map(|r| r[i].chars().count())
                .chain(std::iter::once(c.chars().count()))
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |values: Vec<&str>| {
        let mut out = String::new();
        for (i, v) in values.iter().enumerate() {
            if i > 0 {
                out.push_str("  ");
            }
            let pad = widths[i].saturating_sub(v.chars().count());
            if numeric[i] {
                out.push_str(&" ".repeat(pad));
                out.push_str(v);
            } else {
                out.push_str(v);
                out.push_str(&" ".repeat(pad));
            }
        }
        trim_line(&out)
    };
    let mut out = line(columns.iter().map(|c| c.as_str()).collect());
    for row in &cells {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
}

/// One value in a cell: strings bare, null as `-`, nested values as compact JSON.
fn cell(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

/// `key  value` lines: nested objects flattened with dots, arrays of objects with indices
/// (`workers.0.rx_packets`), other arrays compactly.
fn flatten(prefix: &str, map: &Map<String, Value>, out: &mut Vec<(String, String)>) {
    for (k, v) in map {
        let key = if prefix.is_empty() {
            k.clone()
        } else {
            format!("{prefix}.{k}")
        };
        match v {
            Value::Object(inner) if !inner.is_empty() => flatten(&key, inner, out),
            Value::Array(items) if !items.is_empty() && items.iter().all(Value::is_object) => {
                for (i, item) in items.iter().enumerate() {
                    if let Value::Object(inner) = item {
                        flatten(&format!("{key}.{i}"), inner, out);
                    }
                }
            }
            other => out.push((key, cell(other))),
        }
    }
}
