//! The daemon's control socket: a Unix stream socket that takes one request per line and answers
//! each with one JSON line.
//!
//! Requests are the words `vpnlbctl` takes (`show stats`, `gateway gw1 drain`, ...; see
//! [`parse_request`]), at most [`MAX_LINE`] bytes of UTF-8 ending in `\n`. Every non-empty line
//! gets exactly one reply line, in order:
//!
//! ```text
//! {"ok":true,"data":...}        Reply::Ok
//! {"ok":true,"text":"..."}      Reply::Text (e.g. the Prometheus exposition)
//! {"ok":false,"error":"..."}    Reply::Error, and malformed requests
//! ```
//!
//! [`ControlSocket::poll`] never blocks: the listener and every client are non-blocking, and one
//! call does bounded work (a few accepts, a bounded read and at most [`REQUESTS_PER_CLIENT`]
//! requests per client, at most [`REQUESTS_PER_POLL`] in all, round-robin across calls), so the
//! control thread can call it between its other work. A client that sends a line longer than
//! [`MAX_LINE`] gets an error and is closed. A client's further requests wait while more than
//! [`MAX_OUTPUT`] bytes of replies to it are unwritten (so one reply may be larger than that); a
//! client that goes on sending requests while it leaves that much unread for [`STALL`] is
//! disconnected. Beyond [`MAX_CLIENTS`] clients, new connections get an error line and are
//! closed. A client that sends no complete request line and takes none of its replies for the
//! socket's idle timeout ([`SocketOptions::idle_timeout`], [`DEFAULT_IDLE_TIMEOUT`]) is
//! disconnected, whether it is silent or trickles a line that never ends. None of this affects
//! the other clients.
//!
//! Access: a socket is read-write or read-only ([`Access`]); every request is a read or a write
//! ([`Request::effect`], the one place that says which). A read-only socket answers writes with
//! an error (and counts them, [`SocketCounters::refused_writes`]). The peer's pid, uid and gid
//! (`SO_PEERCRED`) are read when a client connects; every write is logged with them (reads are
//! not logged). Who may connect at all is the socket file's business: mode 0660, owned by the
//! daemon's user and [`SocketOptions::group`].

use std::fmt;
use std::io::{self, ErrorKind, Read, Write};
use std::net::IpAddr;
use std::os::fd::AsFd;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use netdev::cred::{peer_credentials, PeerCredentials};
use serde::Serialize;
use serde_json::Value;
use tracing::{debug, info, warn};

/// Where `vpnlbd` listens and `vpnlbctl` connects unless told otherwise.
pub const DEFAULT_SOCKET: &str = "/run/vpnlb/vpnlbd.sock";
/// The longest request line, in bytes, not counting the `\n`.
pub const MAX_LINE: usize = 4096;
/// Clients served at once; further connections are answered with an error and closed.
pub const MAX_CLIENTS: usize = 64;
/// Unwritten reply bytes beyond which a client's further requests wait (and, after [`STALL`]
/// without it reading any, it is disconnected).
pub const MAX_OUTPUT: usize = 1 << 20;
/// How long a client may leave more than [`MAX_OUTPUT`] bytes unread while it has further
/// requests waiting.
pub const STALL: Duration = Duration::from_secs(5);
/// Requests answered per client per [`ControlSocket::poll`].
pub const REQUESTS_PER_CLIENT: usize = 16;
/// Requests answered per [`ControlSocket::poll`], all clients together.
pub const REQUESTS_PER_POLL: usize = 128;
/// Connections accepted per [`ControlSocket::poll`].
const ACCEPTS_PER_POLL: usize = 16;
/// Bytes read per client per poll.
const READ_PER_POLL: usize = 64 * 1024;
/// A client's unprocessed input beyond which it is not read from until it is processed.
const INPUT_SOFT_CAP: usize = 64 * 1024;
/// How long a client may send no complete request line and take none of its replies before it
/// is disconnected, unless [`SocketOptions::idle_timeout`] says otherwise.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a client that closed its side (or is being closed) may leave its last replies unread
/// before it is dropped.
const LINGER: Duration = Duration::from_secs(5);

/// A control request, as parsed from one line.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "command", rename_all = "snake_case")]
pub enum Request {
    ShowStats,
    ShowPorts,
    ShowWorkers,
    ShowGateways,
    ShowClasses,
    ShowDrops,
    ShowAffinity {
        client: Option<IpAddr>,
    },
    ShowNeighbors,
    ShowHealth,
    ShowVrrp,
    ShowSync,
    ShowRedirect,
    GatewayDrain {
        name: String,
    },
    GatewayEnable {
        name: String,
    },
    GatewayDisable {
        name: String,
    },
    GatewayWeight {
        name: String,
        weight: u32,
    },
    AffinityFlush {
        client: Option<IpAddr>,
    },
    StatsPrometheus,
    Reload,
    Ping,
    /// Tests only (`[control] fault_injection`): worker `worker` spins for `ms` without
    /// polling.
    DebugWorkerStall {
        worker: usize,
        ms: u64,
    },
    /// Tests only: worker `worker` panics (the release build aborts the process).
    DebugWorkerPanic {
        worker: usize,
    },
    /// Tests and measurements only: the workers add `entries` synthetic established affinity
    /// entries between them (IPv6 clients in 2001:2::/48), a bounded number per loop pass.
    DebugAffinityFill {
        entries: u64,
    },
    /// Tests only: the health checker sleeps for `ms`.
    DebugHealthStall {
        ms: u64,
    },
}

/// Whether a request only reads the daemon's state or changes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Effect {
    /// Reads: answered on every socket, not logged.
    Read,
    /// Changes state: refused on a read-only socket, logged with the peer's credentials.
    Write,
}

impl Request {
    /// Whether the request reads or changes the daemon's state: the one place that decides what
    /// a read-only socket answers (no wildcard, so a new request must be classified here).
    pub fn effect(&self) -> Effect {
        match self {
            Request::ShowStats
            | Request::ShowPorts
            | Request::ShowWorkers
            | Request::ShowGateways
            | Request::ShowClasses
            | Request::ShowDrops
            | Request::ShowAffinity { .. }
            | Request::ShowNeighbors
            | Request::ShowHealth
            | Request::ShowVrrp
            | Request::ShowSync
            | Request::ShowRedirect
            | Request::StatsPrometheus
            | Request::Ping => Effect::Read,
            Request::GatewayDrain { .. }
            | Request::GatewayEnable { .. }
            | Request::GatewayDisable { .. }
            | Request::GatewayWeight { .. }
            | Request::AffinityFlush { .. }
            | Request::Reload
            | Request::DebugWorkerStall { .. }
            | Request::DebugWorkerPanic { .. }
            | Request::DebugAffinityFill { .. }
            | Request::DebugHealthStall { .. } => Effect::Write,
        }
    }
}

/// What a control socket answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Access {
    /// Every request.
    ReadWrite,
    /// Reads only ([`Effect::Read`]); writes get an error reply.
    ReadOnly,
}

impl Access {
    /// `read-write` or `read-only`, as logs and metrics name it.
    pub fn name(self) -> &'static str {
        match self {
            Access::ReadWrite => "read-write",
            Access::ReadOnly => "read-only",
        }
    }
}

/// How [`ControlSocket::bind_with`] sets a socket up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SocketOptions {
    pub access: Access,
    /// The group the socket file is given (mode 0660: its members may connect); `None` leaves
    /// the creating process's group.
    pub group: Option<u32>,
    /// See [`DEFAULT_IDLE_TIMEOUT`].
    pub idle_timeout: Duration,
}

impl Default for SocketOptions {
    /// Read-write, the process's group, [`DEFAULT_IDLE_TIMEOUT`].
    fn default() -> Self {
        SocketOptions {
            access: Access::ReadWrite,
            group: None,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
        }
    }
}

/// What a control socket counted since it was bound.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct SocketCounters {
    /// Clients accepted (not those turned away for [`MAX_CLIENTS`]).
    pub accepted: u64,
    /// Write requests answered with an error because the socket is read-only.
    pub refused_writes: u64,
    /// Clients disconnected for sending no complete request line for the idle timeout.
    pub idle_disconnects: u64,
}

/// A control socket's role, clients and counters, for `show stats` and the metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct SocketStats {
    pub access: Access,
    /// Clients connected now.
    pub clients: usize,
    #[serde(flatten)]
    pub counters: SocketCounters,
}

/// The largest gateway weight `gateway NAME weight N` accepts.
pub const MAX_WEIGHT: u32 = 10_000;
/// The longest stall `debug worker N stall MS` and `debug health stall MS` inject.
pub const MAX_STALL_MS: u64 = 60_000;

const USAGE: &str =
    "show stats|ports|workers|gateways|health|vrrp|sync|redirect|classes|drops|affinity [CLIENT]|neighbors, \
                     gateway NAME drain|enable|disable|weight N, affinity flush [CLIENT], \
                     stats prometheus, reload, ping";

/// Parses a request line: the words as `vpnlbctl` takes them, separated by whitespace.
///
/// ```text
/// show stats | show ports | show workers | show gateways | show health | show vrrp | show sync
/// show redirect | show classes | show drops | show affinity [CLIENT] | show neighbors
/// gateway NAME drain | gateway NAME enable | gateway NAME disable | gateway NAME weight N
/// affinity flush [CLIENT] | stats prometheus | reload | ping
/// ```
///
/// Errors say what is wrong (`unknown command `shwo``, `weight must be 0-10000`,
/// `` `x` is not an IP address``).
pub fn parse_request(line: &str) -> Result<Request, RequestError> {
    let words: Vec<&str> = line.split_whitespace().collect();
    let Some((&command, rest)) = words.split_first() else {
        return Err(RequestError::Empty);
    };
    let no_more = |args: &[&str], what: &str, req: Request| match args.first() {
        None => Ok(req),
        Some(extra) => Err(RequestError::UnexpectedArgument {
            extra: extra.to_string(),
            after: what.to_string(),
        }),
    };
    match command {
        "show" => {
            let Some((&what, args)) = rest.split_first() else {
                return Err(RequestError::ShowWhat);
            };
            let req = match what {
                "stats" => Request::ShowStats,
                "ports" => Request::ShowPorts,
                "workers" => Request::ShowWorkers,
                "gateways" => Request::ShowGateways,
                "classes" => Request::ShowClasses,
                "drops" => Request::ShowDrops,
                "neighbors" => Request::ShowNeighbors,
                "health" => Request::ShowHealth,
                "vrrp" => Request::ShowVrrp,
                "sync" => Request::ShowSync,
                "redirect" => Request::ShowRedirect,
                "affinity" => {
                    let client = optional_ip(args, "show affinity")?;
                    return Ok(Request::ShowAffinity { client });
                }
                other => {
                    return Err(RequestError::CannotShow {
                        what: other.to_string(),
                    })
                }
            };
            no_more(args, &format!("show {what}"), req)
        }
        "gateway" => {
            let Some((&name, args)) = rest.split_first() else {
                return Err(RequestError::GatewayName);
            };
            let Some((&action, args)) = args.split_first() else {
                return Err(RequestError::GatewayAction {
                    name: name.to_string(),
                });
            };
            let name = name.to_string();
            let what = format!("gateway {name} {action}");
            match action {
                "drain" => no_more(args, &what, Request::GatewayDrain { name }),
                "enable" => no_more(args, &what, Request::GatewayEnable { name }),
                "disable" => no_more(args, &what, Request::GatewayDisable { name }),
                "weight" => {
                    let Some((&n, args)) = args.split_first() else {
                        return Err(RequestError::WeightMissing { name });
                    };
                    let weight = match n.parse::<u32>() {
                        Ok(w) if w <= MAX_WEIGHT => w,
                        _ => {
                            return Err(RequestError::BadWeight {
                                given: n.to_string(),
                            })
                        }
                    };
                    no_more(
                        args,
                        &format!("{what} {n}"),
                        Request::GatewayWeight { name, weight },
                    )
                }
                other => Err(RequestError::UnknownGatewayAction {
                    action: other.to_string(),
                }),
            }
        }
        "affinity" => match rest.split_first() {
            Some((&"flush", args)) => {
                let client = optional_ip(args, "affinity flush")?;
                Ok(Request::AffinityFlush { client })
            }
            Some((&other, _)) => Err(RequestError::UnknownAffinityAction {
                action: other.to_string(),
            }),
            None => Err(RequestError::AffinityAction),
        },
        "stats" => match rest.split_first() {
            Some((&"prometheus", args)) => {
                no_more(args, "stats prometheus", Request::StatsPrometheus)
            }
            Some((&other, _)) => Err(RequestError::UnknownStatsFormat {
                format: other.to_string(),
            }),
            None => Err(RequestError::StatsFormat),
        },
        "reload" => no_more(rest, "reload", Request::Reload),
        "ping" => no_more(rest, "ping", Request::Ping),
        "debug" => parse_debug(rest),
        other => Err(RequestError::UnknownCommand {
            command: other.to_string(),
        }),
    }
}

/// `debug worker N stall MS | debug worker N panic | debug health stall MS` (tests only: the
/// daemon refuses them unless `[control] fault_injection`).
/// Most synthetic entries `debug affinity fill` adds (the 2001:2::/48 test range holds them).
pub const MAX_FILL: u64 = 100_000_000;

fn parse_debug(words: &[&str]) -> Result<Request, RequestError> {
    let stall = |ms: &str| match ms.parse::<u64>() {
        Ok(ms @ 1..=MAX_STALL_MS) => Ok(ms),
        _ => Err(RequestError::BadStall {
            given: ms.to_string(),
        }),
    };
    let worker = |n: &str| {
        n.parse::<usize>().map_err(|_| RequestError::BadWorker {
            given: n.to_string(),
        })
    };
    match words {
        ["worker", n, "stall", ms] => Ok(Request::DebugWorkerStall {
            worker: worker(n)?,
            ms: stall(ms)?,
        }),
        ["worker", n, "panic"] => Ok(Request::DebugWorkerPanic { worker: worker(n)? }),
        ["health", "stall", ms] => Ok(Request::DebugHealthStall { ms: stall(ms)? }),
        ["affinity", "fill", n] => match n.parse::<u64>() {
            Ok(entries @ 1..=MAX_FILL) => Ok(Request::DebugAffinityFill { entries }),
            _ => Err(RequestError::BadFill {
                given: n.to_string(),
            }),
        },
        _ => Err(RequestError::Debug),
    }
}

fn optional_ip(args: &[&str], what: &str) -> Result<Option<IpAddr>, RequestError> {
    match args {
        [] => Ok(None),
        [ip] => ip.parse().map(Some).map_err(|_| RequestError::NotAnIp {
            given: ip.to_string(),
        }),
        [_, extra, ..] => Err(RequestError::UnexpectedArgument {
            extra: extra.to_string(),
            after: format!("{what} CLIENT"),
        }),
    }
}

/// Why a request line is not a request; the text says what is wrong and what was expected.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    #[error("empty request (expected one of: {usage})", usage = USAGE)]
    Empty,
    #[error("unexpected argument `{extra}` after `{after}`")]
    UnexpectedArgument { extra: String, after: String },
    #[error(
        "`show` needs what to show: stats, ports, workers, gateways, health, vrrp, sync, \
         redirect, classes, drops, affinity [CLIENT] or neighbors"
    )]
    ShowWhat,
    #[error(
        "cannot show `{what}` (expected stats, ports, workers, gateways, health, vrrp, sync, \
         classes, drops, affinity or neighbors)"
    )]
    CannotShow { what: String },
    #[error(
        "`gateway` needs a gateway name and an action: gateway NAME drain|enable|disable|weight N"
    )]
    GatewayName,
    #[error("`gateway {name}` needs an action: drain, enable, disable or weight N")]
    GatewayAction { name: String },
    #[error("`gateway {name} weight` needs a weight (0-{max})", max = MAX_WEIGHT)]
    WeightMissing { name: String },
    #[error("weight must be 0-{max}, not `{given}`", max = MAX_WEIGHT)]
    BadWeight { given: String },
    #[error("unknown gateway action `{action}` (expected drain, enable, disable or weight N)")]
    UnknownGatewayAction { action: String },
    #[error("unknown affinity action `{action}` (expected `affinity flush [CLIENT]`)")]
    UnknownAffinityAction { action: String },
    #[error("`affinity` needs an action: affinity flush [CLIENT]")]
    AffinityAction,
    #[error(
        "unknown stats format `{format}` (expected `stats prometheus`; see also `show stats`)"
    )]
    UnknownStatsFormat { format: String },
    #[error("`stats` needs a format: stats prometheus (or use `show stats`)")]
    StatsFormat,
    #[error("unknown command `{command}` (expected one of: {usage})", usage = USAGE)]
    UnknownCommand { command: String },
    #[error("`{given}` is not an IP address")]
    NotAnIp { given: String },
    #[error(
        "`debug` (tests only) takes: debug worker N stall MS, debug worker N panic, \
         debug health stall MS, debug affinity fill N"
    )]
    Debug,
    #[error("fill must be 1-{max} entries, not `{given}`", max = MAX_FILL)]
    BadFill { given: String },
    #[error("stall must be 1-{max} ms, not `{given}`", max = MAX_STALL_MS)]
    BadStall { given: String },
    #[error("`{given}` is not a worker index")]
    BadWorker { given: String },
}

/// The canonical request line (without `\n`); [`parse_request`] reads it back.
impl fmt::Display for Request {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Request::ShowStats => f.write_str("show stats"),
            Request::ShowPorts => f.write_str("show ports"),
            Request::ShowWorkers => f.write_str("show workers"),
            Request::ShowGateways => f.write_str("show gateways"),
            Request::ShowClasses => f.write_str("show classes"),
            Request::ShowDrops => f.write_str("show drops"),
            Request::ShowAffinity { client: None } => f.write_str("show affinity"),
            Request::ShowAffinity { client: Some(ip) } => write!(f, "show affinity {ip}"),
            Request::ShowNeighbors => f.write_str("show neighbors"),
            Request::ShowHealth => f.write_str("show health"),
            Request::ShowVrrp => f.write_str("show vrrp"),
            Request::ShowSync => f.write_str("show sync"),
            Request::ShowRedirect => f.write_str("show redirect"),
            Request::GatewayDrain { name } => write!(f, "gateway {name} drain"),
            Request::GatewayEnable { name } => write!(f, "gateway {name} enable"),
            Request::GatewayDisable { name } => write!(f, "gateway {name} disable"),
            Request::GatewayWeight { name, weight } => write!(f, "gateway {name} weight {weight}"),
            Request::AffinityFlush { client: None } => f.write_str("affinity flush"),
            Request::AffinityFlush { client: Some(ip) } => write!(f, "affinity flush {ip}"),
            Request::StatsPrometheus => f.write_str("stats prometheus"),
            Request::Reload => f.write_str("reload"),
            Request::Ping => f.write_str("ping"),
            Request::DebugWorkerStall { worker, ms } => {
                write!(f, "debug worker {worker} stall {ms}")
            }
            Request::DebugWorkerPanic { worker } => write!(f, "debug worker {worker} panic"),
            Request::DebugHealthStall { ms } => write!(f, "debug health stall {ms}"),
            Request::DebugAffinityFill { entries } => write!(f, "debug affinity fill {entries}"),
        }
    }
}

/// What the handler answers to a request.
#[derive(Clone, Debug, PartialEq)]
pub enum Reply {
    /// Structured data: `{"ok":true,"data":...}`.
    Ok(Value),
    /// Preformatted text, printed as is by `vpnlbctl`: `{"ok":true,"text":"..."}`.
    Text(String),
    /// The request failed: `{"ok":false,"error":"..."}`.
    Error(String),
}

impl Reply {
    /// The reply as one JSON line, `\n` included (JSON escapes newlines inside strings).
    pub fn to_line(&self) -> String {
        // Written by hand so that `ok` comes first whatever serde_json's map ordering.
        let (head, key, value) = match self {
            Reply::Ok(data) => ("true", "data", data.to_string()),
            Reply::Text(text) => ("true", "text", Value::from(text.as_str()).to_string()),
            Reply::Error(error) => ("false", "error", Value::from(error.as_str()).to_string()),
        };
        format!("{{\"ok\":{head},\"{key}\":{value}}}\n")
    }

    /// Reads a reply line back (what clients do).
    pub fn from_line(line: &str) -> Result<Reply, ReplyError> {
        let v: Value = serde_json::from_str(line.trim_end()).map_err(|e| ReplyError::NotJson {
            reason: e.to_string(),
        })?;
        match v.get("ok") {
            Some(Value::Bool(true)) => {
                if let Some(data) = v.get("data") {
                    Ok(Reply::Ok(data.clone()))
                } else if let Some(Value::String(text)) = v.get("text") {
                    Ok(Reply::Text(text.clone()))
                } else {
                    Err(ReplyError::NoPayload { reply: v })
                }
            }
            Some(Value::Bool(false)) => match v.get("error") {
                Some(Value::String(e)) => Ok(Reply::Error(e.clone())),
                Some(other) => Ok(Reply::Error(other.to_string())),
                None => Ok(Reply::Error("unspecified error".into())),
            },
            _ => Err(ReplyError::NoOk { reply: v }),
        }
    }
}

/// A reply that comes later: the handler started work that takes longer than one poll (a
/// question to every worker, a reload waiting for the workers to prepare) and hands out a ticket;
/// [`ControlSocket::complete`] delivers the reply once it is known. Tickets are the handler's
/// to number; each must be completed once (a client gone meanwhile is no error).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Ticket(pub u64);

/// What the handler gives for a request: the reply now, or a ticket for a reply later. A client
/// whose request is answered later sends its further requests after it: they wait (replies stay
/// in request order).
#[derive(Clone, Debug, PartialEq)]
pub enum Answer {
    Now(Reply),
    Later(Ticket),
}

impl From<Reply> for Answer {
    fn from(r: Reply) -> Answer {
        Answer::Now(r)
    }
}

/// The listening control socket and its clients.
pub struct ControlSocket {
    path: PathBuf,
    listener: UnixListener,
    /// Device and inode of the socket file this created, so that drop removes only that file.
    file_id: (u64, u64),
    rules: Rules,
    clients: Vec<Client>,
    next_first: usize,
    next_id: u64,
}

impl fmt::Debug for ControlSocket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ControlSocket")
            .field("path", &self.path)
            .field("access", &self.rules.access)
            .field("clients", &self.clients.len())
            .finish()
    }
}

impl ControlSocket {
    /// Creates a read-write socket at `path` with the default options ([`SocketOptions`]); see
    /// [`ControlSocket::bind_with`].
    pub fn bind(path: &Path) -> io::Result<ControlSocket> {
        ControlSocket::bind_with(path, SocketOptions::default())
    }

    /// Creates the socket at `path`, mode 0660 and group `options.group` (its directory is
    /// created if missing).
    ///
    /// A stale socket file (nothing accepts on it) is replaced; a live one (another daemon
    /// answers) is not: `Err(AddrInUse)` naming it. Anything else at the path (a regular file, a
    /// directory) is an error and is left alone.
    pub fn bind_with(path: &Path, options: SocketOptions) -> io::Result<ControlSocket> {
        let ctx = |e: io::Error, what: &str| {
            io::Error::new(
                e.kind(),
                format!("control socket {}: {what}: {e}", path.display()),
            )
        };
        match std::fs::symlink_metadata(path) {
            Ok(meta) if meta.file_type().is_socket() => match UnixStream::connect(path) {
                Ok(_) => {
                    return Err(io::Error::new(
                        ErrorKind::AddrInUse,
                        format!(
                            "control socket {} is in use (another vpnlbd answers on it)",
                            path.display()
                        ),
                    ))
                }
                Err(e) if e.kind() == ErrorKind::ConnectionRefused => {
                    debug!(path = %path.display(), "replacing stale control socket");
                    match std::fs::remove_file(path) {
                        Ok(()) => {}
                        Err(e) if e.kind() == ErrorKind::NotFound => {}
                        Err(e) => return Err(ctx(e, "cannot remove stale socket")),
                    }
                }
                Err(e) => return Err(ctx(e, "cannot tell whether the existing socket is live")),
            },
            Ok(meta) => {
                return Err(io::Error::new(
                    ErrorKind::AlreadyExists,
                    format!(
                        "control socket {}: the path exists and is not a socket ({}); not \
                         replacing it",
                        path.display(),
                        describe(&meta.file_type())
                    ),
                ))
            }
            Err(e) if e.kind() == ErrorKind::NotFound => {
                if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::create_dir_all(dir).map_err(|e| ctx(e, "cannot create directory"))?;
                }
            }
            Err(e) => return Err(ctx(e, "cannot inspect path")),
        }
        let listener = UnixListener::bind(path).map_err(|e| ctx(e, "cannot bind"))?;
        // From here on the file is ours; remove it again if anything below fails.
        let cleanup = |e: io::Error| {
            let _ = std::fs::remove_file(path);
            e
        };
        if let Some(gid) = options.group {
            std::os::unix::fs::chown(path, None, Some(gid))
                .map_err(|e| cleanup(ctx(e, &format!("cannot set group {gid}"))))?;
        }
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))
            .map_err(|e| cleanup(ctx(e, "cannot set mode 0660")))?;
        listener
            .set_nonblocking(true)
            .map_err(|e| cleanup(ctx(e, "cannot make non-blocking")))?;
        let meta = std::fs::symlink_metadata(path).map_err(|e| cleanup(ctx(e, "cannot stat")))?;
        Ok(ControlSocket {
            path: path.to_path_buf(),
            listener,
            file_id: (meta.dev(), meta.ino()),
            rules: Rules {
                access: options.access,
                idle_timeout: options.idle_timeout,
                counters: SocketCounters::default(),
            },
            clients: Vec::new(),
            next_first: 0,
            next_id: 1,
        })
    }

    /// Where the socket is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Clients connected now.
    pub fn clients(&self) -> usize {
        self.clients.len()
    }

    /// What the socket answers.
    pub fn access(&self) -> Access {
        self.rules.access
    }

    /// What the socket counted since it was bound.
    pub fn counters(&self) -> SocketCounters {
        self.rules.counters
    }

    /// Role, clients and counters.
    pub fn stats(&self) -> SocketStats {
        SocketStats {
            access: self.rules.access,
            clients: self.clients.len(),
            counters: self.rules.counters,
        }
    }

    /// Accepts pending clients, reads what they sent, answers every complete line with
    /// `handler(request)` (malformed lines with an error, without calling it), and writes what
    /// the clients take. Never blocks; does bounded work per call (see the module docs), so call
    /// it regularly: requests beyond the bounds wait for the next call.
    pub fn poll(&mut self, handler: &mut dyn FnMut(Request) -> Answer) {
        self.accept();
        let n = self.clients.len();
        if n > 0 {
            let first = self.next_first % n;
            self.next_first = first + 1;
            let mut budget = REQUESTS_PER_POLL;
            for i in 0..n {
                let client = &mut self.clients[(first + i) % n];
                client.service(handler, &mut budget, &mut self.rules);
            }
            self.clients.retain(|c| {
                if c.dead {
                    debug!(client = c.id, "control client gone");
                }
                !c.dead
            });
        }
    }

    /// Delivers the reply a request answered with [`Answer::Later`] waits for; false when no
    /// client waits on `ticket` (it went away). Its further requests are taken on the next poll.
    pub fn complete(&mut self, ticket: Ticket, reply: &Reply) -> bool {
        self.clients.iter_mut().any(|c| c.complete(ticket, reply))
    }

    fn accept(&mut self) {
        for _ in 0..ACCEPTS_PER_POLL {
            match self.listener.accept() {
                Ok((stream, _)) => {
                    if stream.set_nonblocking(true).is_err() {
                        continue;
                    }
                    if self.clients.len() >= MAX_CLIENTS {
                        warn!(max = MAX_CLIENTS, "too many control clients; refusing one");
                        let line = Reply::Error(format!(
                            "too many control clients ({MAX_CLIENTS}); try again later"
                        ))
                        .to_line();
                        // Best effort: a fresh socket's buffer takes a short line.
                        let _ = (&stream).write(line.as_bytes());
                        let _ = stream.shutdown(std::net::Shutdown::Both);
                        continue;
                    }
                    let id = self.next_id;
                    self.next_id += 1;
                    let peer = match peer_credentials(stream.as_fd()) {
                        Ok(p) => Some(p),
                        Err(e) => {
                            warn!(client = id, error = %e, "control client's credentials unknown");
                            None
                        }
                    };
                    let (uid, gid, pid) = ids(peer);
                    debug!(
                        client = id,
                        uid,
                        gid,
                        pid,
                        access = self.rules.access.name(),
                        "control client connected"
                    );
                    self.rules.counters.accepted += 1;
                    self.clients.push(Client::new(stream, id, peer));
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => {
                    // ECONNABORTED, EMFILE and the like: try again on the next poll.
                    debug!(error = %e, "control socket accept failed");
                    break;
                }
            }
        }
    }
}

/// The daemon's control sockets: the read-write one and, when configured, a read-only one.
#[derive(Debug)]
pub struct ControlSockets {
    pub read_write: ControlSocket,
    pub read_only: Option<ControlSocket>,
}

/// [`ControlSockets`]' roles, clients and counters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct ControlSocketStats {
    pub read_write: SocketStats,
    pub read_only: Option<SocketStats>,
}

impl ControlSockets {
    /// [`ControlSocket::poll`] on each socket, with the same handler.
    pub fn poll(&mut self, handler: &mut dyn FnMut(Request) -> Answer) {
        self.read_write.poll(handler);
        if let Some(ro) = &mut self.read_only {
            ro.poll(handler);
        }
    }

    /// [`ControlSocket::complete`] on whichever socket's client waits on `ticket`.
    pub fn complete(&mut self, ticket: Ticket, reply: &Reply) -> bool {
        self.read_write.complete(ticket, reply)
            || self
                .read_only
                .as_mut()
                .is_some_and(|ro| ro.complete(ticket, reply))
    }

    /// Each socket's role, clients and counters.
    pub fn stats(&self) -> ControlSocketStats {
        ControlSocketStats {
            read_write: self.read_write.stats(),
            read_only: self.read_only.as_ref().map(ControlSocket::stats),
        }
    }
}

impl Drop for ControlSocket {
    fn drop(&mut self) {
        // Remove the file only if it is still the one this bound (not a successor's).
        if let Ok(meta) = std::fs::symlink_metadata(&self.path) {
            if (meta.dev(), meta.ino()) == self.file_id {
                let _ = std::fs::remove_file(&self.path);
            }
        }
    }
}

fn describe(t: &std::fs::FileType) -> &'static str {
    if t.is_file() {
        "a regular file"
    } else if t.is_dir() {
        "a directory"
    } else if t.is_symlink() {
        "a symbolic link"
    } else if t.is_fifo() {
        "a FIFO"
    } else {
        "a special file"
    }
}

/// The peer's uid, gid and pid for the logs; -1 for each when unknown.
fn ids(peer: Option<PeerCredentials>) -> (i64, i64, i64) {
    peer.map_or((-1, -1, -1), |p| {
        (i64::from(p.uid), i64::from(p.gid), i64::from(p.pid))
    })
}

/// What a socket allows its clients, and what it counts.
struct Rules {
    access: Access,
    idle_timeout: Duration,
    counters: SocketCounters,
}

impl Rules {
    /// Answers `request` from the client `id` whose credentials are `peer`: reads as the handler
    /// does; writes only on a read-write socket, logged with the peer's credentials.
    fn dispatch(
        &mut self,
        request: Request,
        id: u64,
        peer: Option<PeerCredentials>,
        handler: &mut dyn FnMut(Request) -> Answer,
    ) -> Dispatched {
        match (request.effect(), self.access) {
            (Effect::Read, _) => Dispatched {
                answer: handler(request),
                write: None,
            },
            (Effect::Write, Access::ReadOnly) => {
                self.counters.refused_writes += 1;
                let (uid, gid, pid) = ids(peer);
                warn!(
                    client = id,
                    uid,
                    gid,
                    pid,
                    command = %request,
                    "control command refused: the socket is read-only"
                );
                Dispatched {
                    answer: Answer::Now(Reply::Error(format!(
                        "read-only socket: `{request}` changes the daemon's state; use the \
                         read-write control socket"
                    ))),
                    write: None,
                }
            }
            (Effect::Write, Access::ReadWrite) => {
                let command = request.to_string();
                match handler(request) {
                    Answer::Now(reply) => {
                        log_write(id, peer, &command, &reply);
                        Dispatched {
                            answer: Answer::Now(reply),
                            write: None,
                        }
                    }
                    // Logged with its outcome when the reply comes.
                    later => Dispatched {
                        answer: later,
                        write: Some(command),
                    },
                }
            }
        }
    }
}

/// What [`Rules::dispatch`] made of a request: the answer, and for a write answered later the
/// command to log with its outcome.
struct Dispatched {
    answer: Answer,
    write: Option<String>,
}

/// Logs a write with the peer's credentials and its outcome.
fn log_write(id: u64, peer: Option<PeerCredentials>, command: &str, reply: &Reply) {
    let (uid, gid, pid) = ids(peer);
    match reply {
        Reply::Error(error) => info!(
            client = id,
            uid,
            gid,
            pid,
            command,
            ok = false,
            error = %error,
            "control command"
        ),
        _ => info!(
            client = id,
            uid,
            gid,
            pid,
            command,
            ok = true,
            "control command"
        ),
    }
}

/// A request of a client answered later.
struct Waiting {
    ticket: Ticket,
    /// A write's command, logged when the reply comes.
    write: Option<String>,
}

struct Client {
    id: u64,
    stream: UnixStream,
    /// The peer's credentials at connect time (`None` if the kernel would not say).
    peer: Option<PeerCredentials>,
    /// When the client last sent a complete request line or took some of its replies (or
    /// connected): it is disconnected once this is older than the idle timeout.
    last_activity: Instant,
    input: Vec<u8>,
    /// Bytes of `input` already handled.
    consumed: usize,
    output: Vec<u8>,
    /// Bytes of `output` already written.
    written: usize,
    /// The peer closed its side: answer what it sent, then close.
    eof: bool,
    /// The request whose reply comes later: the client's further requests wait for it.
    waiting: Option<Waiting>,
    /// Since when no more requests are taken: the client is dropped once its output is written,
    /// or once it has taken none of it for [`LINGER`].
    closing: Option<Instant>,
    /// When the client last took some of its output (or output began to wait for it).
    last_progress: Instant,
    dead: bool,
}

impl Client {
    fn new(stream: UnixStream, id: u64, peer: Option<PeerCredentials>) -> Client {
        Client {
            id,
            stream,
            peer,
            last_activity: Instant::now(),
            input: Vec::new(),
            consumed: 0,
            output: Vec::new(),
            written: 0,
            eof: false,
            waiting: None,
            closing: None,
            last_progress: Instant::now(),
            dead: false,
        }
    }

    fn pending_output(&self) -> usize {
        self.output.len() - self.written
    }

    fn service(
        &mut self,
        handler: &mut dyn FnMut(Request) -> Answer,
        budget: &mut usize,
        rules: &mut Rules,
    ) {
        if !self.eof && self.closing.is_none() && self.input.len() - self.consumed < INPUT_SOFT_CAP
        {
            self.read();
        }
        if self.dead {
            return;
        }
        if self.closing.is_none() {
            self.answer(handler, budget, rules);
        }
        self.flush();
        if self.dead {
            return;
        }
        if self.closing.is_none()
            && self.waiting.is_none()
            && self.last_activity.elapsed() >= rules.idle_timeout
        {
            self.idle(rules);
            return;
        }
        if self.pending_output() > MAX_OUTPUT
            && self.consumed < self.input.len()
            && self.last_progress.elapsed() >= STALL
        {
            warn!(
                client = self.id,
                unread = self.pending_output(),
                "control client does not read its replies; disconnecting it"
            );
            self.dead = true;
            return;
        }
        if self.closing.is_none()
            && self.eof
            && self.waiting.is_none()
            && self.consumed == self.input.len()
        {
            self.closing = Some(Instant::now());
        }
        if let Some(since) = self.closing {
            if self.pending_output() == 0 || since.max(self.last_progress).elapsed() >= LINGER {
                self.dead = true;
            }
        }
    }

    fn read(&mut self) {
        let mut buf = [0u8; 16 * 1024];
        let mut total = 0;
        while total < READ_PER_POLL {
            match self.stream.read(&mut buf) {
                Ok(0) => {
                    self.eof = true;
                    return;
                }
                Ok(n) => {
                    self.input.extend_from_slice(&buf[..n]);
                    total += n;
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => {
                    debug!(client = self.id, error = %e, "control client read failed");
                    self.dead = true;
                    return;
                }
            }
        }
    }

    /// Disconnects the client for sending no request for the idle timeout (telling it why when
    /// the line fits in its socket buffer).
    fn idle(&mut self, rules: &mut Rules) {
        rules.counters.idle_disconnects += 1;
        let (uid, gid, pid) = ids(self.peer);
        info!(
            client = self.id,
            uid,
            gid,
            pid,
            partial_line = self.input.len() - self.consumed,
            "control client idle; disconnecting it"
        );
        if self.pending_output() == 0 {
            let line = Reply::Error(format!(
                "no request for {} ms; closing the connection",
                rules.idle_timeout.as_millis()
            ))
            .to_line();
            let _ = (&self.stream).write(line.as_bytes());
        }
        let _ = self.stream.shutdown(std::net::Shutdown::Both);
        self.dead = true;
    }

    /// Answers the complete lines in `input`, within the budgets.
    fn answer(
        &mut self,
        handler: &mut dyn FnMut(Request) -> Answer,
        budget: &mut usize,
        rules: &mut Rules,
    ) {
        let mut handled = 0;
        while handled < REQUESTS_PER_CLIENT
            && *budget > 0
            && self.waiting.is_none()
            && self.pending_output() <= MAX_OUTPUT
        {
            let rest = &self.input[self.consumed..];
            if rest.is_empty() {
                break;
            }
            let (line, used) = match rest.iter().position(|&b| b == b'\n') {
                Some(i) => (&rest[..i], i + 1),
                // The peer closed its side after a last line without `\n`: take it too.
                None if self.eof || rest.len() > MAX_LINE => (rest, rest.len()),
                None => break,
            };
            if line.len() > MAX_LINE {
                warn!(
                    client = self.id,
                    "control request too long; closing the client"
                );
                let reply = Reply::Error(format!(
                    "request longer than {MAX_LINE} bytes; closing the connection"
                ));
                self.output.extend_from_slice(reply.to_line().as_bytes());
                self.input.clear();
                self.consumed = 0;
                self.closing = Some(Instant::now());
                return;
            }
            let answer = match std::str::from_utf8(line) {
                Err(_) => Some(Answer::Now(Reply::Error(
                    "request is not valid UTF-8".into(),
                ))),
                Ok(text) if text.trim().is_empty() => None,
                Ok(text) => Some(match parse_request(text) {
                    Ok(request) => {
                        let d = rules.dispatch(request, self.id, self.peer, handler);
                        if let Answer::Later(ticket) = d.answer {
                            self.waiting = Some(Waiting {
                                ticket,
                                write: d.write,
                            });
                        }
                        d.answer
                    }
                    Err(e) => Answer::Now(Reply::Error(e.to_string())),
                }),
            };
            self.consumed += used;
            if let Some(answer) = answer {
                self.last_activity = Instant::now();
                if let Answer::Now(reply) = answer {
                    self.push_reply(&reply);
                }
                handled += 1;
                *budget -= 1;
            }
        }
        if self.consumed == self.input.len() {
            self.input.clear();
            self.consumed = 0;
        } else if self.consumed > self.input.len() / 2 {
            self.input.drain(..self.consumed);
            self.consumed = 0;
        }
    }

    fn push_reply(&mut self, reply: &Reply) {
        if self.pending_output() == 0 {
            self.last_progress = Instant::now();
        }
        self.output.extend_from_slice(reply.to_line().as_bytes());
    }

    /// The reply to the request the client waits on, if `ticket` is that request's.
    fn complete(&mut self, ticket: Ticket, reply: &Reply) -> bool {
        if self.waiting.as_ref().is_none_or(|w| w.ticket != ticket) {
            return false;
        }
        if let Some(Waiting {
            write: Some(command),
            ..
        }) = self.waiting.take()
        {
            log_write(self.id, self.peer, &command, reply);
        }
        self.last_activity = Instant::now();
        self.push_reply(reply);
        self.flush();
        true
    }

    fn flush(&mut self) {
        while self.written < self.output.len() {
            match self.stream.write(&self.output[self.written..]) {
                Ok(0) => {
                    self.dead = true;
                    return;
                }
                Ok(n) => {
                    self.written += n;
                    self.last_progress = Instant::now();
                    self.last_activity = self.last_progress;
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => {
                    debug!(client = self.id, error = %e, "control client write failed");
                    self.dead = true;
                    return;
                }
            }
        }
        if self.written == self.output.len() {
            self.output.clear();
            self.written = 0;
        } else if self.written > self.output.len() / 2 {
            self.output.drain(..self.written);
            self.written = 0;
        }
    }
}

/// Why a line is not a reply.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum ReplyError {
    /// Not JSON (serde_json's reason).
    #[error("malformed reply: {reason}")]
    NotJson { reason: String },
    /// `ok` is true but there is neither `data` nor `text`.
    #[error("malformed reply (neither data nor text): {reply}")]
    NoPayload { reply: Value },
    /// No boolean `ok`.
    #[error("malformed reply (no `ok`): {reply}")]
    NoOk { reply: Value },
}

/// Why [`query`] got no reply.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// Nothing to connect to (no daemon, wrong path, no permission).
    #[error("{0}")]
    Connect(#[source] io::Error),
    /// The connection failed, timed out or closed before a whole reply line arrived, or the
    /// reply was not one.
    #[error(transparent)]
    Exchange(#[from] ExchangeError),
}

/// What went wrong once connected.
#[derive(Debug, thiserror::Error)]
pub enum ExchangeError {
    /// No whole reply line within the timeout.
    #[error("no reply within {timeout_s} s")]
    NoReply { timeout_s: f64 },
    /// Sending the request or reading the reply failed.
    #[error("{what}: {source}")]
    Io {
        what: &'static str,
        source: io::Error,
    },
    #[error("the daemon closed the connection without replying")]
    Closed,
    #[error("the reply is not valid UTF-8")]
    NotUtf8,
    #[error(transparent)]
    Reply(#[from] ReplyError),
}

/// Sends one request line to the control socket at `path` and reads its reply, all within
/// `timeout` (after connecting).
pub fn query(path: &Path, request: &str, timeout: Duration) -> Result<Reply, QueryError> {
    let deadline = Instant::now() + timeout;
    let mut stream = UnixStream::connect(path).map_err(QueryError::Connect)?;
    let exchange = |what: &'static str, source: io::Error| {
        QueryError::Exchange(
            if matches!(source.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) {
                ExchangeError::NoReply {
                    timeout_s: timeout.as_secs_f64(),
                }
            } else {
                ExchangeError::Io { what, source }
            },
        )
    };
    let remaining = || {
        deadline
            .checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
            .unwrap_or(Duration::from_millis(1))
    };
    let mut line = request.trim_end_matches('\n').to_string();
    line.push('\n');
    stream
        .set_write_timeout(Some(remaining()))
        .map_err(|e| exchange("cannot send", e))?;
    stream
        .write_all(line.as_bytes())
        .map_err(|e| exchange("cannot send", e))?;
    let mut reply = Vec::new();
    let mut buf = [0u8; 64 * 1024];
    loop {
        if Instant::now() >= deadline {
            return Err(exchange("", io::Error::from(ErrorKind::TimedOut)));
        }
        stream
            .set_read_timeout(Some(remaining()))
            .map_err(|e| exchange("cannot read the reply", e))?;
        match stream.read(&mut buf) {
            Ok(0) => return Err(ExchangeError::Closed.into()),
            Ok(n) => {
                let had = reply.len();
                reply.extend_from_slice(&buf[..n]);
                if let Some(i) = reply[had..].iter().position(|&b| b == b'\n') {
                    reply.truncate(had + i);
                    break;
                }
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(exchange("cannot read the reply", e)),
        }
    }
    let text = String::from_utf8(reply).map_err(|_| ExchangeError::NotUtf8)?;
    Ok(Reply::from_line(&text).map_err(ExchangeError::from)?)
}
