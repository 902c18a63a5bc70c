//! Non-blocking health probes of one gateway daemon each.
//!
//! [`InFlight::start`] opens a socket and starts the probe (a TCP connect, or sends the request
//! of [`message`](super::message)); the checker thread then calls [`InFlight::poll`] every few
//! milliseconds until it returns the [`Outcome`]. Nothing here blocks or sleeps: sockets are
//! non-blocking, and one poll does a bounded amount of work.
//!
//! - **tcp**: the connect succeeds → alive ("connected"), and the connection is closed at once.
//! - **ike**: an IKE_SA_INIT response to our SPI → alive, named by its notify
//!   ("INVALID_KE_PAYLOAD", "NO_PROPOSAL_CHOSEN", "COOKIE"; "accepted" for a full response).
//!   To a target on port 4500 the request goes behind the non-ESP marker, as NAT-T requires.
//! - **tls**: connect, send the ClientHello, read until the first record shows a ServerHello
//!   or an alert → alive ("ServerHello", "alert 2/40").
//! - **dtls**: a HelloVerifyRequest, ServerHello or alert → alive.
//! - **icmp**: an echo reply from the target with our identifier and sequence → alive ("echo
//!   reply"). Needs `CAP_NET_RAW` (raw sockets); other ICMP traffic is ignored.
//!
//! Failures: no answer before the deadline is [`Failure::Timeout`]; a TCP reset or an ICMP port
//! unreachable (UDP probes use connected sockets, so it surfaces as `ECONNREFUSED`) is
//! [`Failure::Refused`]; no route is [`Failure::Unreachable`]; a socket that cannot be opened or
//! bound is [`Failure::Socket`]. A datagram from the target that is not a valid answer ends the
//! probe as [`Failure::BadResponse`] rather than waiting for the timeout: a connected socket on
//! a fresh port hears only the target, so whatever answers on the daemon's port is not a
//! healthy daemon, and the operator learns why at once. Likewise a TLS stream that starts with
//! anything else, or closes before answering.

use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
use std::io::{self, ErrorKind, Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use dataplane::rng::SplitMix64;
use dataplane::wire::ike::NON_ESP_MARKER;
use dataplane::wire::ipv4::Ipv4Packet;
use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use super::message;

/// What a probe checks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProbeKind {
    /// A TCP connect to the target port.
    Tcp,
    /// An IKEv2 IKE_SA_INIT request the gateway rejects (UDP, usually port 500).
    Ike,
    /// A TLS ClientHello (TCP, usually port 443), with this server name if any.
    Tls {
        /// The SNI to send; `None` sends no server_name extension.
        sni: Option<String>,
    },
    /// A DTLS 1.2 ClientHello (UDP, usually port 443).
    Dtls,
    /// An ICMP or ICMPv6 echo request (the target port is unused).
    Icmp,
}

impl ProbeKind {
    /// The port this kind of probe usually targets: 500 for IKE, 443 for TLS and DTLS, 0 for
    /// TCP (no default) and ICMP (no port).
    pub fn default_port(&self) -> u16 {
        match self {
            ProbeKind::Ike => 500,
            ProbeKind::Tls { .. } | ProbeKind::Dtls => 443,
            ProbeKind::Tcp | ProbeKind::Icmp => 0,
        }
    }
}

/// One probe to run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProbeSpec {
    /// What to check.
    pub kind: ProbeKind,
    /// The gateway's address and port (the port is unused for ICMP).
    pub target: SocketAddr,
    /// The local address to send from (port chosen by the kernel); `None` lets routing pick.
    pub source: Option<IpAddr>,
    /// How long to wait for the answer, connect included.
    pub timeout: Duration,
}

/// How a probe ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The daemon answered.
    Alive {
        /// From the start of the probe to the poll that saw the answer.
        rtt: Duration,
        /// What it answered: "connected", "INVALID_KE_PAYLOAD", "ServerHello", "alert 2/40",
        /// "echo reply"...
        answer: String,
    },
    /// It did not, for this reason.
    Dead(Failure),
}

impl Outcome {
    /// Whether the daemon answered.
    pub fn is_alive(&self) -> bool {
        matches!(self, Outcome::Alive { .. })
    }
}

/// Why a probe failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Failure {
    /// No answer before the deadline.
    Timeout,
    /// Connection refused: a TCP reset, or an ICMP port unreachable for a UDP probe.
    Refused,
    /// No route to the target (the error, as the kernel reported it).
    Unreachable(String),
    /// Something answered, but not as the daemon should (what was wrong).
    BadResponse(String),
    /// The probe's socket could not be opened, bound or used (the error).
    Socket(String),
}

impl Failure {
    /// A stable one-word reason for counters and logs: "timeout", "refused", "unreachable",
    /// "bad-response" or "socket".
    pub fn reason(&self) -> &'static str {
        match self {
            Failure::Timeout => "timeout",
            Failure::Refused => "refused",
            Failure::Unreachable(_) => "unreachable",
            Failure::BadResponse(_) => "bad-response",
            Failure::Socket(_) => "socket",
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Timeout | Failure::Refused => f.write_str(self.reason()),
            Failure::Unreachable(s) | Failure::BadResponse(s) | Failure::Socket(s) => {
                write!(f, "{}: {s}", self.reason())
            }
        }
    }
}

/// Receive buffer of a datagram probe: larger than any IKE_SA_INIT response or first DTLS
/// flight, so that no answer is cut short.
const DATAGRAM_BUF: usize = 16 * 1024;
/// Datagrams read per poll at most: an ICMP raw socket sees all ICMP traffic of the host.
const DATAGRAMS_PER_POLL: usize = 64;
/// The most of a TLS stream kept while waiting for the answer (only its first bytes matter).
const TLS_READ_MAX: usize = 4096;
/// The echo request's data.
const ICMP_PAYLOAD: &[u8] = b"vpnlb health probe";

/// A probe under way; see the [module docs](self).
#[derive(Debug)]
pub struct InFlight {
    started: Instant,
    deadline: Instant,
    stage: Stage,
}

#[derive(Debug)]
enum Stage {
    /// An error from `start`, for the first poll to report.
    Failed(Failure),
    /// A TCP connect under way; then `hello` is sent (TLS) or the connection closed (TCP).
    Connecting {
        sock: Socket,
        hello: Option<Vec<u8>>,
    },
    /// Writing the TLS ClientHello.
    Sending {
        stream: TcpStream,
        hello: Vec<u8>,
        sent: usize,
    },
    /// Reading the TLS server's first bytes.
    Reading {
        stream: TcpStream,
        received: Vec<u8>,
    },
    /// A request datagram sent (or `unsent` still to send), waiting for the answer.
    Datagram {
        sock: Socket,
        expect: Expect,
        unsent: Option<Vec<u8>>,
        buf: Vec<u8>,
    },
    /// The outcome was returned.
    Done,
}

/// What answers a datagram probe.
#[derive(Debug)]
enum Expect {
    /// An IKE_SA_INIT response to `spi`, behind a non-ESP marker if `marker`.
    Ike {
        spi: u64,
        marker: bool,
    },
    Dtls,
    Icmp {
        v6: bool,
        ident: u16,
        seq: u16,
        from: IpAddr,
    },
}

/// Where a poll left the probe.
enum Step {
    Pending(Stage),
    Finished(Outcome),
}

impl InFlight {
    /// Opens the socket (bound to `source` if given, port 0), starts the connect / sends the
    /// request. Errors that happen at once come back from the first poll, not here.
    pub fn start(spec: &ProbeSpec, now: Instant) -> InFlight {
        let stage = open(spec).unwrap_or_else(Stage::Failed);
        // An absurd timeout must not overflow the clock: cap it at about a year.
        let deadline = now
            .checked_add(spec.timeout.min(Duration::from_secs(365 * 86_400)))
            .unwrap_or(now);
        InFlight {
            started: now,
            deadline,
            stage,
        }
    }

    /// Non-blocking; `Some(outcome)` exactly once, when the probe is finished (answer, error or
    /// timeout), `None` before and after. The socket is closed when the probe finishes.
    pub fn poll(&mut self, now: Instant) -> Option<Outcome> {
        let stage = std::mem::replace(&mut self.stage, Stage::Done);
        if matches!(stage, Stage::Done) {
            return None;
        }
        let rtt = now.saturating_duration_since(self.started);
        match advance(stage, rtt) {
            Step::Finished(outcome) => Some(outcome),
            Step::Pending(stage) if now >= self.deadline => {
                close(stage);
                Some(Outcome::Dead(Failure::Timeout))
            }
            Step::Pending(stage) => {
                self.stage = stage;
                None
            }
        }
    }
}

/// Opens the probe's socket and starts it.
fn open(spec: &ProbeSpec) -> Result<Stage, Failure> {
    let target = spec.target;
    if let Some(source) = spec.source {
        if source.is_ipv4() != target.is_ipv4() {
            return Err(Failure::Socket(format!(
                "source {source} and target {} are of different address families",
                target.ip()
            )));
        }
    }
    let mut rng = SplitMix64(random_seed());
    match &spec.kind {
        ProbeKind::Tcp => tcp_connect(spec, None),
        ProbeKind::Tls { sni } => {
            let mut random = [0u8; 32];
            let mut session_id = [0u8; 32];
            rng.fill(&mut random);
            rng.fill(&mut session_id);
            let hello = message::tls_client_hello_probe(&random, &session_id, sni.as_deref());
            tcp_connect(spec, Some(hello))
        }
        ProbeKind::Ike => {
            // RFC 7296 §3.1: the initiator's SPI is never zero.
            let spi = rng.next_u64().max(1);
            let mut nonce = [0u8; 32];
            rng.fill(&mut nonce);
            let mut request = message::ike_sa_init_probe(spi, &nonce);
            // On the NAT-T port IKE travels behind the non-ESP marker (RFC 3948 §2.2).
            let marker = target.port() == 4500;
            if marker {
                request.splice(0..0, NON_ESP_MARKER);
            }
            datagram(
                spec,
                Type::DGRAM,
                None,
                Expect::Ike { spi, marker },
                request,
            )
        }
        ProbeKind::Dtls => {
            let mut random = [0u8; 32];
            rng.fill(&mut random);
            let hello = message::dtls_client_hello_probe(&random);
            datagram(spec, Type::DGRAM, None, Expect::Dtls, hello)
        }
        ProbeKind::Icmp => {
            let v6 = target.is_ipv6();
            let mut id = [0u8; 4];
            rng.fill(&mut id);
            let ident = u16::from_be_bytes([id[0], id[1]]);
            let seq = u16::from_be_bytes([id[2], id[3]]);
            let request = message::icmp_echo_request(v6, ident, seq, ICMP_PAYLOAD);
            let proto = if v6 {
                Protocol::ICMPV6
            } else {
                Protocol::ICMPV4
            };
            let expect = Expect::Icmp {
                v6,
                ident,
                seq,
                from: target.ip(),
            };
            // Raw sockets have no ports; connecting one only filters by the peer's address.
            let to = SocketAddr::new(target.ip(), 0);
            datagram(
                &ProbeSpec {
                    target: to,
                    ..spec.clone()
                },
                Type::RAW,
                Some(proto),
                expect,
                request,
            )
        }
    }
}

/// A non-blocking socket for `spec`, bound to its source if any.
fn socket(spec: &ProbeSpec, ty: Type, proto: Option<Protocol>) -> Result<Socket, Failure> {
    let sock = Socket::new(Domain::for_address(spec.target), ty, proto)
        .map_err(|e| Failure::Socket(format!("socket: {e}")))?;
    sock.set_nonblocking(true)
        .map_err(|e| Failure::Socket(format!("non-blocking: {e}")))?;
    if let Some(source) = spec.source {
        sock.bind(&SockAddr::from(SocketAddr::new(source, 0)))
            .map_err(|e| Failure::Socket(format!("bind to {source}: {e}")))?;
    }
    Ok(sock)
}

/// Starts a TCP connect; `hello` is sent once connected (TLS), or the connection is closed.
fn tcp_connect(spec: &ProbeSpec, hello: Option<Vec<u8>>) -> Result<Stage, Failure> {
    let sock = socket(spec, Type::STREAM, Some(Protocol::TCP))?;
    // The hello is one small write: send it at once rather than wait for Nagle.
    let _ = sock.set_nodelay(true);
    match sock.connect(&SockAddr::from(spec.target)) {
        Ok(()) => {}
        // std names no stable kind for EINPROGRESS (and libc is not a dependency here), so
        // every error that is not a known failure is taken as "in progress"; polling then
        // finds out (a connect that had in fact failed would end as a timeout).
        Err(e) if connect_failed(&e) => return Err(failure("connect", &e)),
        Err(_) => {}
    }
    Ok(Stage::Connecting { sock, hello })
}

/// Whether `connect` failed for good (as opposed to "in progress").
fn connect_failed(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        ErrorKind::ConnectionRefused
            | ErrorKind::ConnectionReset
            | ErrorKind::HostUnreachable
            | ErrorKind::NetworkUnreachable
            | ErrorKind::NetworkDown
            | ErrorKind::PermissionDenied
            | ErrorKind::AddrInUse
            | ErrorKind::AddrNotAvailable
            | ErrorKind::InvalidInput
            | ErrorKind::Unsupported
            | ErrorKind::TimedOut
            // EAGAIN from connect: no free local port.
            | ErrorKind::WouldBlock
    )
}

/// Opens a connected datagram (UDP or raw ICMP) socket and sends `request`.
fn datagram(
    spec: &ProbeSpec,
    ty: Type,
    proto: Option<Protocol>,
    expect: Expect,
    request: Vec<u8>,
) -> Result<Stage, Failure> {
    let sock = socket(spec, ty, proto)?;
    // Connected: the kernel then delivers only the target's datagrams, and reports an ICMP
    // port unreachable as ECONNREFUSED.
    sock.connect(&SockAddr::from(spec.target))
        .map_err(|e| failure("connect", &e))?;
    let mut stage = Stage::Datagram {
        sock,
        expect,
        unsent: Some(request),
        buf: vec![0; DATAGRAM_BUF],
    };
    if let Stage::Datagram { sock, unsent, .. } = &mut stage {
        send_datagram(sock, unsent)?;
    }
    Ok(stage)
}

/// Sends the request if it is still unsent; a full send buffer leaves it for the next poll.
fn send_datagram(sock: &Socket, unsent: &mut Option<Vec<u8>>) -> Result<(), Failure> {
    if let Some(request) = unsent.as_deref() {
        match sock.send(request) {
            Ok(_) => *unsent = None,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::Interrupted) => {}
            Err(e) => return Err(failure("send", &e)),
        }
    }
    Ok(())
}

/// Maps a socket error during the probe (connect, send, receive) onto a failure.
fn failure(what: &str, e: &io::Error) -> Failure {
    match e.kind() {
        ErrorKind::ConnectionRefused => Failure::Refused,
        ErrorKind::TimedOut => Failure::Timeout,
        // EINVAL is what a blackhole route gives a local sender, EACCES a prohibit route.
        ErrorKind::HostUnreachable
        | ErrorKind::NetworkUnreachable
        | ErrorKind::NetworkDown
        | ErrorKind::PermissionDenied
        | ErrorKind::InvalidInput => Failure::Unreachable(format!("{what}: {e}")),
        ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted | ErrorKind::BrokenPipe => {
            Failure::BadResponse(format!("{what}: {e}"))
        }
        _ => Failure::Socket(format!("{what}: {e}")),
    }
}

/// What a stage's work came to: the next stage, entered in the same poll, or where the probe
/// stands now.
enum Advance {
    Next(Stage),
    Stop(Step),
}

fn alive(rtt: Duration, answer: String) -> Advance {
    Advance::Stop(Step::Finished(Outcome::Alive { rtt, answer }))
}

fn dead(f: Failure) -> Advance {
    Advance::Stop(Step::Finished(Outcome::Dead(f)))
}

fn pending(stage: Stage) -> Advance {
    Advance::Stop(Step::Pending(stage))
}

/// Moves the probe on as far as it can without blocking.
fn advance(stage: Stage, rtt: Duration) -> Step {
    let mut stage = stage;
    // Each stage either finishes, waits, or hands over to the next one in the same poll.
    loop {
        let next = match stage {
            Stage::Done => return Step::Pending(Stage::Done),
            Stage::Failed(f) => return Step::Finished(Outcome::Dead(f)),
            Stage::Connecting { sock, hello } => connecting(sock, hello, rtt),
            Stage::Sending {
                stream,
                hello,
                sent,
            } => sending(stream, hello, sent),
            Stage::Reading { stream, received } => reading(stream, received, rtt),
            Stage::Datagram {
                sock,
                expect,
                unsent,
                buf,
            } => receive_datagrams(sock, expect, unsent, buf, rtt),
        };
        match next {
            Advance::Next(s) => stage = s,
            Advance::Stop(step) => return step,
        }
    }
}

/// A TCP connect in progress: alive once connected (no hello), or on to sending the hello.
fn connecting(sock: Socket, hello: Option<Vec<u8>>, rtt: Duration) -> Advance {
    match sock.take_error() {
        Ok(Some(e)) | Err(e) => return dead(failure("connect", &e)),
        Ok(None) => {}
    }
    match sock.peer_addr() {
        Ok(_) => {}
        Err(e) if e.kind() == ErrorKind::NotConnected => {
            return pending(Stage::Connecting { sock, hello })
        }
        Err(e) => return dead(failure("connect", &e)),
    }
    // std's stream sends with MSG_NOSIGNAL: a reset peer cannot raise SIGPIPE.
    let stream = TcpStream::from(sock);
    match hello {
        None => {
            close_tcp(stream);
            alive(rtt, "connected".to_string())
        }
        Some(hello) => Advance::Next(Stage::Sending {
            stream,
            hello,
            sent: 0,
        }),
    }
}

/// Writes the rest of the hello; on to reading the answer once it is all out.
fn sending(mut stream: TcpStream, hello: Vec<u8>, sent: usize) -> Advance {
    match stream.write(hello.get(sent..).unwrap_or_default()) {
        Ok(n) if sent + n >= hello.len() => Advance::Next(Stage::Reading {
            stream,
            received: Vec::new(),
        }),
        Ok(n) => pending(Stage::Sending {
            stream,
            hello,
            sent: sent + n,
        }),
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::Interrupted) => {
            pending(Stage::Sending {
                stream,
                hello,
                sent,
            })
        }
        Err(e) => dead(failure("send", &e)),
    }
}

/// Reads the TLS answer until the checker can judge it.
fn reading(mut stream: TcpStream, mut received: Vec<u8>, rtt: Duration) -> Advance {
    let mut chunk = [0u8; 512];
    match stream.read(&mut chunk) {
        Ok(0) => dead(Failure::BadResponse(format!(
            "connection closed after {} bytes, before an answer",
            received.len()
        ))),
        Ok(n) => {
            received.extend_from_slice(&chunk[..n]);
            match message::check_tls_response(&received) {
                Ok(Some(answer)) => {
                    close_tcp(stream);
                    alive(rtt, answer.name())
                }
                Err(e) => {
                    close_tcp(stream);
                    dead(Failure::BadResponse(e.to_string()))
                }
                // The checker decides within the first few bytes; this bound is only a guard.
                Ok(None) if received.len() >= TLS_READ_MAX => {
                    close_tcp(stream);
                    dead(Failure::BadResponse(
                        "no answer in the first bytes".to_string(),
                    ))
                }
                Ok(None) => Advance::Next(Stage::Reading { stream, received }),
            }
        }
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::Interrupted) => {
            pending(Stage::Reading { stream, received })
        }
        Err(e) => dead(failure("receive", &e)),
    }
}

/// Sends the request if it is still unsent, then judges what arrived, a bounded number of
/// datagrams per poll.
fn receive_datagrams(
    sock: Socket,
    expect: Expect,
    mut unsent: Option<Vec<u8>>,
    mut buf: Vec<u8>,
    rtt: Duration,
) -> Advance {
    if let Err(f) = send_datagram(&sock, &mut unsent) {
        return dead(f);
    }
    if unsent.is_none() {
        for _ in 0..DATAGRAMS_PER_POLL {
            let n = match (&sock).read(&mut buf) {
                Ok(n) => n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return dead(failure("receive", &e)),
            };
            if let Some(outcome) = judge(&expect, &buf[..n.min(buf.len())]) {
                if matches!(expect, Expect::Dtls) {
                    // Best effort: the answer is in already.
                    let _ = (&sock).write(&message::dtls_user_canceled());
                }
                return match outcome {
                    Ok(answer) => alive(rtt, answer),
                    Err(f) => dead(f),
                };
            }
        }
    }
    pending(Stage::Datagram {
        sock,
        expect,
        unsent,
        buf,
    })
}

/// Judges one received datagram: `None` to ignore it (ICMP traffic not ours), else the answer
/// or why it is wrong.
fn judge(expect: &Expect, data: &[u8]) -> Option<Result<String, Failure>> {
    match *expect {
        Expect::Ike { spi, marker } => {
            let ike = if marker {
                match data.strip_prefix(&NON_ESP_MARKER[..]) {
                    Some(ike) => ike,
                    None => {
                        return Some(Err(Failure::BadResponse(
                            "no non-ESP marker on the NAT-T port".to_string(),
                        )))
                    }
                }
            } else {
                data
            };
            Some(
                message::check_ike_response(ike, spi)
                    .map(|a| a.name())
                    .map_err(|e| Failure::BadResponse(e.to_string())),
            )
        }
        Expect::Dtls => Some(
            message::check_dtls_response(data)
                .map(|a| a.name())
                .map_err(|e| Failure::BadResponse(e.to_string())),
        ),
        Expect::Icmp {
            v6,
            ident,
            seq,
            from,
        } => {
            // The connected socket already filters by peer; the IPv4 header lets us check it
            // (IPv6 raw sockets deliver no header).
            let from_target = v6
                || Ipv4Packet::new_checked(data)
                    .map(|ip| IpAddr::V4(ip.src_addr()) == from)
                    .unwrap_or(false);
            (from_target && message::is_echo_reply(data, v6, ident, seq))
                .then(|| Ok("echo reply".to_string()))
        }
    }
}

/// Closes a probe's TCP connection with a FIN: our side is shut down, and what the server sent
/// is read away first, since closing with unread data would send a reset instead.
fn close_tcp(mut stream: TcpStream) {
    let _ = stream.shutdown(Shutdown::Write);
    let mut sink = [0u8; 4096];
    // Bounded: a server streaming faster than we read gets a reset, which it deserves.
    for _ in 0..16 {
        match stream.read(&mut sink) {
            Ok(n) if n > 0 => {}
            _ => break,
        }
    }
}

/// Releases a probe's socket on timeout (TCP connections with a FIN where possible).
fn close(stage: Stage) {
    match stage {
        Stage::Sending { stream, .. } | Stage::Reading { stream, .. } => close_tcp(stream),
        // Dropping the others is all there is to it: an unfinished connect is abandoned.
        _ => {}
    }
}

/// A seed for the probe's SPI, nonce, randoms and ICMP identifier: the time in nanoseconds, a
/// process-wide counter and the thread's identity, mixed. Unpredictable enough for probes
/// (nothing here is a secret), and distinct for probes started in the same nanosecond.
fn random_seed() -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        // The low 64 bits of the nanoseconds (d.as_nanos() mod 2^64), the seed's varying part.
        .map_or(0, |d| {
            d.as_secs()
                .wrapping_mul(1_000_000_000)
                .wrapping_add(u64::from(d.subsec_nanos()))
        });
    let count = COUNTER.fetch_add(1, Ordering::Relaxed);
    let thread =
        BuildHasherDefault::<DefaultHasher>::default().hash_one(std::thread::current().id());
    let mut mix = SplitMix64(nanos ^ thread.rotate_left(32));
    mix.next_u64() ^ SplitMix64(count).next_u64()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons() {
        assert_eq!(Failure::Timeout.reason(), "timeout");
        assert_eq!(Failure::Refused.reason(), "refused");
        assert_eq!(Failure::Unreachable(String::new()).reason(), "unreachable");
        assert_eq!(Failure::BadResponse(String::new()).reason(), "bad-response");
        assert_eq!(Failure::Socket(String::new()).reason(), "socket");
        assert_eq!(
            Failure::BadResponse("x".into()).to_string(),
            "bad-response: x"
        );
        assert_eq!(Failure::Timeout.to_string(), "timeout");
    }

    #[test]
    fn error_mapping() {
        let e = |k| io::Error::from(k);
        assert_eq!(
            failure("connect", &e(ErrorKind::ConnectionRefused)),
            Failure::Refused
        );
        assert_eq!(
            failure("connect", &e(ErrorKind::HostUnreachable)).reason(),
            "unreachable"
        );
        assert_eq!(
            failure("connect", &e(ErrorKind::InvalidInput)).reason(),
            "unreachable"
        );
        assert_eq!(
            failure("receive", &e(ErrorKind::ConnectionReset)).reason(),
            "bad-response"
        );
        assert_eq!(
            failure("send", &e(ErrorKind::OutOfMemory)).reason(),
            "socket"
        );
        assert!(connect_failed(&e(ErrorKind::NetworkUnreachable)));
        assert!(!connect_failed(&io::Error::other("in progress")));
    }

    #[test]
    fn seeds_differ() {
        let a: Vec<u64> = (0..1000).map(|_| random_seed()).collect();
        let mut b = a.clone();
        b.sort_unstable();
        b.dedup();
        assert_eq!(a.len(), b.len());
    }

    #[test]
    fn family_mismatch_is_reported_by_the_first_poll() {
        let now = Instant::now();
        let spec = ProbeSpec {
            kind: ProbeKind::Tcp,
            target: "[2001:2:0:2::11]:443".parse().unwrap(),
            source: Some("198.19.0.1".parse().unwrap()),
            timeout: Duration::from_secs(1),
        };
        let mut p = InFlight::start(&spec, now);
        match p.poll(now) {
            Some(Outcome::Dead(Failure::Socket(s))) => assert!(s.contains("families")),
            other => panic!("{other:?}"),
        }
        assert_eq!(p.poll(now), None);
        assert_eq!(p.poll(now + Duration::from_secs(5)), None);
        // Nor does an absurd timeout panic.
        let spec = ProbeSpec {
            timeout: Duration::MAX,
            ..spec
        };
        let mut p = InFlight::start(&spec, now);
        assert!(p.poll(now).is_some());
    }

    #[test]
    fn ike_judging() {
        let expect = Expect::Ike {
            spi: 7,
            marker: true,
        };
        assert!(matches!(
            judge(&expect, b"\xffgarbage"),
            Some(Err(Failure::BadResponse(_)))
        ));
        let icmp = Expect::Icmp {
            v6: false,
            ident: 1,
            seq: 1,
            from: "198.19.0.11".parse().unwrap(),
        };
        assert_eq!(judge(&icmp, b"not a packet"), None);
        assert_eq!(ProbeKind::Ike.default_port(), 500);
        assert_eq!(ProbeKind::Tls { sni: None }.default_port(), 443);
    }
}
