//! The control socket server (`control::ctlsock`) and the `vpnlbctl` client, against a test
//! server whose handler echoes the parsed request as JSON.

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::IpAddr;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use control::ctlsock::{
    self, Access, ControlSocket, Effect, Reply, Request, SocketCounters, SocketOptions,
    DEFAULT_IDLE_TIMEOUT, MAX_CLIENTS, MAX_LINE,
};
use serde_json::{json, Value};

fn tmpdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("vpnlb-ctl-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// The test handler: fixed answers for a few requests, the request itself as JSON otherwise.
fn echo(req: Request) -> Reply {
    match &req {
        Request::ShowWorkers => Reply::Ok(json!([
            {"worker": 0, "core": 2, "rx_packets": 100, "state": "running", "queues": [0, 1]},
            {"worker": 1, "core": 3, "rx_packets": 12345, "state": "idle", "queues": [2]},
        ])),
        Request::ShowStats => Reply::Ok(json!({
            "uptime_s": 12,
            "ports": {"client0": {"rx": 5, "tx": 6}},
            "version": "0.1.0",
        })),
        Request::ShowDrops => Reply::Ok(json!({ "blob": "x".repeat(8000) })),
        // About 3 MiB, more than MAX_OUTPUT.
        Request::ShowNeighbors => Reply::Ok(Value::Array(
            (0..40_000)
                .map(|i| json!({"ip": format!("198.{}.{}.{}", 18 + (i >> 16), (i >> 8) & 255, i & 255), "mac": "02:00:00:00:00:01", "state": "reachable", "age_ms": i}))
                .collect(),
        )),
        Request::StatsPrometheus => Reply::Text("# TYPE vpnlb_rx counter\nvpnlb_rx 7\n".into()),
        Request::GatewayDrain { name } if name == "nope" => {
            Reply::Error(format!("no gateway `{name}`"))
        }
        _ => Reply::Ok(serde_json::to_value(&req).unwrap()),
    }
}

/// A control socket served by a thread that polls it every millisecond.
struct Server {
    path: PathBuf,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    handled: Arc<AtomicUsize>,
    /// The socket's counters after its latest poll.
    counters: Arc<Mutex<SocketCounters>>,
    /// What the server thread logged (INFO and above), when started with `start_logged`.
    log: Arc<Mutex<Vec<u8>>>,
}

/// A `tracing` writer into a shared buffer.
#[derive(Clone)]
struct LogBuffer(Arc<Mutex<Vec<u8>>>);

impl Write for LogBuffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Server {
    fn start(path: &Path) -> Server {
        Server::start_with(path, SocketOptions::default())
    }

    fn start_with(path: &Path, options: SocketOptions) -> Server {
        let mut sock = ControlSocket::bind_with(path, options).expect("bind");
        assert_eq!(sock.path(), path);
        assert_eq!(sock.access(), options.access);
        let stop = Arc::new(AtomicBool::new(false));
        let handled = Arc::new(AtomicUsize::new(0));
        let counters = Arc::new(Mutex::new(SocketCounters::default()));
        let log = Arc::new(Mutex::new(Vec::new()));
        let (s, h, c) = (stop.clone(), handled.clone(), counters.clone());
        let writer = LogBuffer(log.clone());
        let thread = std::thread::spawn(move || {
            let subscriber = tracing_subscriber::fmt()
                .with_ansi(false)
                .with_max_level(tracing::Level::INFO)
                .with_writer(move || writer.clone())
                .finish();
            let _logging = tracing::subscriber::set_default(subscriber);
            let mut handler = |req: Request| {
                h.fetch_add(1, Ordering::Relaxed);
                echo(req).into()
            };
            while !s.load(Ordering::Relaxed) {
                sock.poll(&mut handler);
                *c.lock().unwrap() = sock.counters();
                std::thread::sleep(Duration::from_millis(1));
            }
        });
        Server {
            path: path.to_path_buf(),
            stop,
            thread: Some(thread),
            handled,
            counters,
            log,
        }
    }

    fn counters(&self) -> SocketCounters {
        *self.counters.lock().unwrap()
    }

    fn log(&self) -> String {
        String::from_utf8_lossy(&self.log.lock().unwrap()).into_owned()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

struct Client {
    writer: UnixStream,
    reader: BufReader<UnixStream>,
}

impl Client {
    fn connect(path: &Path) -> Client {
        let s = UnixStream::connect(path).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.set_write_timeout(Some(Duration::from_secs(10))).unwrap();
        Client {
            reader: BufReader::new(s.try_clone().unwrap()),
            writer: s,
        }
    }

    fn send(&mut self, bytes: &[u8]) {
        self.writer.write_all(bytes).unwrap();
    }

    fn recv_line(&mut self) -> String {
        let mut line = String::new();
        let n = self.reader.read_line(&mut line).expect("reply");
        assert!(n > 0, "connection closed before a reply");
        let head: String = line.chars().take(200).collect();
        assert!(
            line.ends_with('\n'),
            "reply of {n} bytes not terminated: {head:?}..."
        );
        line
    }

    fn recv(&mut self) -> Value {
        let line = self.recv_line();
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("bad reply {line:.200}: {e}"))
    }

    fn ask(&mut self, request: &str) -> Value {
        self.send(format!("{request}\n").as_bytes());
        self.recv()
    }

    /// The connection is closed by the server (EOF, or reset when it left input unread).
    fn assert_closed(&mut self) {
        let mut rest = Vec::new();
        match self.reader.read_to_end(&mut rest) {
            Ok(_) => assert!(rest.is_empty(), "unexpected data: {rest:?}"),
            Err(e) => assert_eq!(e.kind(), ErrorKind::ConnectionReset, "{e}"),
        }
    }
}

fn data(reply: &Value) -> &Value {
    assert_eq!(reply["ok"], json!(true), "{reply}");
    &reply["data"]
}

fn error(reply: &Value) -> &str {
    assert_eq!(reply["ok"], json!(false), "{reply}");
    reply["error"].as_str().unwrap()
}

#[test]
fn parse_every_command() {
    let ip = |s: &str| Some(s.parse::<IpAddr>().unwrap());
    let name = || "gw1".to_string();
    let cases = [
        ("show stats", Request::ShowStats),
        ("show ports", Request::ShowPorts),
        ("show workers", Request::ShowWorkers),
        ("show gateways", Request::ShowGateways),
        ("show classes", Request::ShowClasses),
        ("show drops", Request::ShowDrops),
        ("show affinity", Request::ShowAffinity { client: None }),
        (
            "show affinity 198.18.2.3",
            Request::ShowAffinity {
                client: ip("198.18.2.3"),
            },
        ),
        (
            "show affinity 2001:2::7",
            Request::ShowAffinity {
                client: ip("2001:2::7"),
            },
        ),
        ("show neighbors", Request::ShowNeighbors),
        ("show health", Request::ShowHealth),
        ("show vrrp", Request::ShowVrrp),
        ("show sync", Request::ShowSync),
        ("show redirect", Request::ShowRedirect),
        ("gateway gw1 drain", Request::GatewayDrain { name: name() }),
        (
            "gateway gw1 enable",
            Request::GatewayEnable { name: name() },
        ),
        (
            "gateway gw1 disable",
            Request::GatewayDisable { name: name() },
        ),
        (
            "gateway gw1 weight 0",
            Request::GatewayWeight {
                name: name(),
                weight: 0,
            },
        ),
        (
            "gateway gw1 weight 10000",
            Request::GatewayWeight {
                name: name(),
                weight: 10000,
            },
        ),
        ("affinity flush", Request::AffinityFlush { client: None }),
        (
            "affinity flush ::1",
            Request::AffinityFlush { client: ip("::1") },
        ),
        ("stats prometheus", Request::StatsPrometheus),
        ("reload", Request::Reload),
        ("ping", Request::Ping),
        (
            "debug worker 1 stall 1500",
            Request::DebugWorkerStall {
                worker: 1,
                ms: 1500,
            },
        ),
        (
            "debug worker 0 panic",
            Request::DebugWorkerPanic { worker: 0 },
        ),
        (
            "debug health stall 60000",
            Request::DebugHealthStall { ms: 60000 },
        ),
        (
            "debug affinity fill 10000000",
            Request::DebugAffinityFill {
                entries: 10_000_000,
            },
        ),
    ];
    for (line, want) in cases {
        assert_eq!(ctlsock::parse_request(line), Ok(want.clone()), "{line}");
        // Display gives the canonical line back.
        assert_eq!(want.to_string(), line);
        // Whitespace does not matter.
        let spaced = format!("  {}\t\r", line.replace(' ', "   "));
        assert_eq!(ctlsock::parse_request(&spaced), Ok(want), "{spaced:?}");
    }
}

#[test]
fn parse_bad_requests() {
    let cases = [
        ("", "empty request"),
        ("   ", "empty request"),
        ("shwo stats", "unknown command `shwo`"),
        ("SHOW stats", "unknown command `SHOW`"),
        ("show", "`show` needs what to show"),
        ("show everything", "cannot show `everything`"),
        (
            "show stats now",
            "unexpected argument `now` after `show stats`",
        ),
        ("show affinity x", "`x` is not an IP address"),
        (
            "show affinity 198.18.0.1 198.18.0.2",
            "unexpected argument `198.18.0.2`",
        ),
        ("gateway", "`gateway` needs a gateway name"),
        ("gateway gw1", "`gateway gw1` needs an action"),
        ("gateway gw1 fly", "unknown gateway action `fly`"),
        ("gateway gw1 drain now", "unexpected argument `now`"),
        ("gateway gw1 weight", "needs a weight"),
        ("gateway gw1 weight 10001", "weight must be 0-10000"),
        ("gateway gw1 weight -1", "weight must be 0-10000"),
        ("gateway gw1 weight heavy", "weight must be 0-10000"),
        ("gateway gw1 weight 5 6", "unexpected argument `6`"),
        ("affinity", "`affinity` needs an action"),
        ("affinity clear", "unknown affinity action `clear`"),
        ("affinity flush 1.2.3", "`1.2.3` is not an IP address"),
        ("stats", "`stats` needs a format"),
        ("stats json", "unknown stats format `json`"),
        ("reload now", "unexpected argument `now` after `reload`"),
        ("ping pong", "unexpected argument `pong` after `ping`"),
        ("debug", "`debug` (tests only) takes"),
        ("debug worker 1", "`debug` (tests only) takes"),
        ("debug worker 1 stall", "`debug` (tests only) takes"),
        ("debug worker 1 panic now", "`debug` (tests only) takes"),
        ("debug worker x panic", "`x` is not a worker index"),
        (
            "debug worker 1 stall 0",
            "stall must be 1-60000 ms, not `0`",
        ),
        ("debug worker 1 stall 60001", "stall must be 1-60000 ms"),
        ("debug affinity fill 0", "fill must be 1-"),
        ("debug health stall soon", "stall must be 1-60000 ms"),
    ];
    for (line, want) in cases {
        let err = ctlsock::parse_request(line).expect_err(line).to_string();
        assert!(err.contains(want), "{line:?}: {err:?} lacks {want:?}");
    }
}

#[test]
fn reply_lines() {
    let replies = [
        Reply::Ok(json!({"a": [1, 2], "b": "x\ny"})),
        Reply::Ok(Value::Null),
        Reply::Text("line 1\nline 2\n".into()),
        Reply::Error("no gateway `gw9`".into()),
    ];
    for r in replies {
        let line = r.to_line();
        assert!(line.ends_with('\n'));
        assert_eq!(line.matches('\n').count(), 1, "{line:?}");
        assert_eq!(Reply::from_line(&line), Ok(r));
    }
    assert_eq!(
        Reply::Text("t".into()).to_line(),
        "{\"ok\":true,\"text\":\"t\"}\n"
    );
    assert_eq!(
        Reply::Error("e".into()).to_line(),
        "{\"ok\":false,\"error\":\"e\"}\n"
    );
}

#[test]
fn answers_requests_in_order() {
    let dir = tmpdir("order");
    let server = Server::start(&dir.join("s.sock"));
    let mut c = Client::connect(&server.path);
    assert_eq!(data(&c.ask("ping")), &json!({"command": "ping"}));
    assert_eq!(
        data(&c.ask("gateway gw2 weight 70")),
        &json!({"command": "gateway_weight", "name": "gw2", "weight": 70})
    );
    assert_eq!(
        c.ask("stats prometheus"),
        json!({"ok": true, "text": "# TYPE vpnlb_rx counter\nvpnlb_rx 7\n"})
    );
    assert_eq!(error(&c.ask("gateway nope drain")), "no gateway `nope`");
    assert!(error(&c.ask("shwo")).contains("unknown command `shwo`"));
    // Empty lines are ignored; CRLF is fine.
    c.send(b"\n  \n\r\nping\r\n");
    assert_eq!(data(&c.recv()), &json!({"command": "ping"}));
    // Many pipelined requests (more than one poll answers) come back complete and in order.
    let mut batch = String::new();
    for i in 0..500 {
        batch.push_str(&format!("gateway g{i} weight {i}\n"));
    }
    c.send(batch.as_bytes());
    for i in 0..500 {
        let r = c.recv();
        assert_eq!(data(&r)["name"], json!(format!("g{i}")));
        assert_eq!(data(&r)["weight"], json!(i));
    }
    // A last request without `\n` before the client closes its side is answered too.
    c.send(b"reload");
    c.writer.shutdown(std::net::Shutdown::Write).unwrap();
    assert_eq!(data(&c.recv()), &json!({"command": "reload"}));
    c.assert_closed();
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn fifty_clients_at_once() {
    let dir = tmpdir("fifty");
    let server = Server::start(&dir.join("s.sock"));
    let threads: Vec<_> = (0..50)
        .map(|i| {
            let path = server.path.clone();
            std::thread::spawn(move || {
                let mut c = Client::connect(&path);
                // Interleaved: one at a time.
                for j in 0..20 {
                    let r = c.ask(&format!("show affinity 198.18.{i}.{j}"));
                    assert_eq!(data(&r)["client"], json!(format!("198.18.{i}.{j}")));
                }
                // Pipelined.
                let batch: String = (0..50)
                    .map(|j| format!("affinity flush 198.19.{i}.{j}\n"))
                    .collect();
                c.send(batch.as_bytes());
                for j in 0..50 {
                    let r = c.recv();
                    assert_eq!(data(&r)["command"], json!("affinity_flush"));
                    assert_eq!(data(&r)["client"], json!(format!("198.19.{i}.{j}")));
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(server.handled.load(Ordering::Relaxed), 50 * 70);
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn garbage_gets_errors_and_spares_others() {
    let dir = tmpdir("garbage");
    let server = Server::start(&dir.join("s.sock"));
    let mut good = Client::connect(&server.path);
    let mut bad = Client::connect(&server.path);
    assert_eq!(data(&good.ask("ping")), &json!({"command": "ping"}));

    // Bad UTF-8: an error, and the connection stays usable.
    bad.send(b"show \xff\xfe stats\n");
    assert!(error(&bad.recv()).contains("UTF-8"));
    bad.send(b"\x00\x01\x02\n");
    assert!(error(&bad.recv()).contains("unknown command"));
    assert_eq!(data(&bad.ask("ping")), &json!({"command": "ping"}));
    assert_eq!(data(&good.ask("reload")), &json!({"command": "reload"}));

    // A line of 10 KB: an error, then the server closes that client.
    let mut long = vec![b'a'; 10 * 1024];
    long.push(b'\n');
    bad.send(&long);
    let e = error(&bad.recv()).to_string();
    assert!(e.contains(&format!("longer than {MAX_LINE} bytes")), "{e}");
    bad.assert_closed();

    // Exactly MAX_LINE bytes is still a request (an unknown one).
    let mut c = Client::connect(&server.path);
    let mut line = vec![b'z'; MAX_LINE];
    line.push(b'\n');
    c.send(&line);
    assert!(error(&c.recv()).contains("unknown command"));

    // A long line without any `\n` yet is refused as soon as it exceeds the limit.
    let mut c2 = Client::connect(&server.path);
    c2.send(&vec![b'b'; MAX_LINE + 100]);
    assert!(error(&c2.recv()).contains("longer than"));
    c2.assert_closed();

    // The well-behaved client never noticed.
    for _ in 0..10 {
        assert_eq!(data(&good.ask("ping")), &json!({"command": "ping"}));
    }
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_client_that_never_reads_does_not_stall_others() {
    let dir = tmpdir("flood");
    let server = Server::start(&dir.join("s.sock"));
    // The flooder asks for ~8 KB replies as fast as it can and never reads them.
    let path = server.path.clone();
    let flooder = std::thread::spawn(move || {
        let s = UnixStream::connect(&path).unwrap();
        s.set_write_timeout(Some(Duration::from_secs(20))).unwrap();
        let mut w = &s;
        let start = Instant::now();
        let mut sent = 0usize;
        while start.elapsed() < Duration::from_secs(30) {
            match w.write_all(b"show drops\nshow drops\nshow drops\nshow drops\n") {
                Ok(()) => sent += 4,
                // Disconnected by the server: what it should do.
                Err(e) => return (sent, Some(e.kind())),
            }
        }
        (sent, None)
    });
    // Meanwhile another client is answered promptly, every time.
    let mut c = Client::connect(&server.path);
    let mut slowest = Duration::ZERO;
    for i in 0..200 {
        let t = Instant::now();
        let r = c.ask(&format!("gateway g{i} enable"));
        slowest = slowest.max(t.elapsed());
        assert_eq!(data(&r)["name"], json!(format!("g{i}")));
        std::thread::sleep(Duration::from_millis(2));
    }
    let (sent, err) = flooder.join().unwrap();
    assert!(
        matches!(
            err,
            Some(ErrorKind::BrokenPipe | ErrorKind::ConnectionReset)
        ),
        "the flooder was not disconnected (sent {sent} requests, {err:?})"
    );
    // It was answered until more than MAX_OUTPUT of its replies sat unread (8 KB each), then its
    // requests waited and, as it still read nothing, it was disconnected after STALL.
    assert!(sent > 128, "sent only {sent}");
    assert!(
        slowest < Duration::from_secs(2),
        "slowest answer took {slowest:?}"
    );
    assert_eq!(data(&c.ask("ping")), &json!({"command": "ping"}));
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn replies_larger_than_the_output_cap_are_delivered() {
    let dir = tmpdir("big");
    let server = Server::start(&dir.join("s.sock"));
    let mut c = Client::connect(&server.path);
    // Pipelined, and read a little late: both arrive whole.
    c.send(b"show neighbors\nshow neighbors\nping\n");
    std::thread::sleep(Duration::from_millis(300));
    let lines = [c.recv_line(), c.recv_line()];
    for line in lines {
        let r: Value = serde_json::from_str(&line).unwrap();
        let rows = data(&r).as_array().unwrap();
        assert_eq!(rows.len(), 40_000);
        assert_eq!(rows[39_999]["age_ms"], json!(39_999));
    }
    assert_eq!(data(&c.recv()), &json!({"command": "ping"}));
    let r = ctlsock::query(&server.path, "show neighbors", Duration::from_secs(5)).unwrap();
    assert!(matches!(r, Reply::Ok(Value::Array(a)) if a.len() == 40_000));
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn too_many_clients_are_turned_away() {
    let dir = tmpdir("many");
    let server = Server::start(&dir.join("s.sock"));
    let mut clients: Vec<Client> = (0..MAX_CLIENTS)
        .map(|_| Client::connect(&server.path))
        .collect();
    // Every one of them is served (and so accepted).
    for c in &mut clients {
        assert_eq!(data(&c.ask("ping")), &json!({"command": "ping"}));
    }
    let mut extra = Client::connect(&server.path);
    assert!(error(&extra.recv()).contains("too many control clients"));
    extra.assert_closed();
    // Once one leaves (and is reaped), a newcomer is served again.
    drop(clients.pop());
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut c = Client::connect(&server.path);
        let r = c.ask("ping");
        if r["ok"] == json!(true) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the departed client was never reaped"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    for c in &mut clients {
        assert_eq!(data(&c.ask("ping")), &json!({"command": "ping"}));
    }
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn socket_file_mode_and_removal() {
    let dir = tmpdir("mode");
    let path = dir.join("sub").join("s.sock");
    let sock = ControlSocket::bind(&path).unwrap();
    let meta = std::fs::metadata(&path).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o660);
    drop(sock);
    assert!(!path.exists(), "the socket file outlived its ControlSocket");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn stale_socket_is_replaced() {
    let dir = tmpdir("stale");
    let path = dir.join("s.sock");
    // A socket file nobody listens on any more (a crashed daemon's).
    drop(UnixListener::bind(&path).unwrap());
    assert!(path.exists());
    let server = Server::start(&path);
    let mut c = Client::connect(&path);
    assert_eq!(data(&c.ask("ping")), &json!({"command": "ping"}));
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn live_socket_is_not_stolen() {
    let dir = tmpdir("live");
    let path = dir.join("s.sock");
    let server = Server::start(&path);
    let e = ControlSocket::bind(&path).expect_err("bound over a live socket");
    assert_eq!(e.kind(), ErrorKind::AddrInUse);
    assert!(e.to_string().contains(path.to_str().unwrap()), "{e}");
    // The first server still owns the path and answers.
    let mut c = Client::connect(&path);
    assert_eq!(data(&c.ask("ping")), &json!({"command": "ping"}));
    drop(server);
    assert!(!path.exists());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn other_files_are_not_deleted() {
    let dir = tmpdir("regular");
    let path = dir.join("s.sock");
    std::fs::write(&path, "keep me").unwrap();
    let e = ControlSocket::bind(&path).expect_err("bound over a regular file");
    assert!(e.to_string().contains("not a socket"), "{e}");
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "keep me");
    let sub = dir.join("d");
    std::fs::create_dir(&sub).unwrap();
    assert!(ControlSocket::bind(&sub).is_err());
    assert!(sub.is_dir());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn query_helper() {
    let dir = tmpdir("query");
    let server = Server::start(&dir.join("s.sock"));
    let t = Duration::from_secs(5);
    assert_eq!(
        ctlsock::query(&server.path, "ping", t).unwrap(),
        Reply::Ok(json!({"command": "ping"}))
    );
    assert_eq!(
        ctlsock::query(&server.path, "gateway nope drain", t).unwrap(),
        Reply::Error("no gateway `nope`".into())
    );
    assert!(matches!(
        ctlsock::query(&dir.join("absent.sock"), "ping", t),
        Err(ctlsock::QueryError::Connect(_))
    ));
    // A server that accepts but never answers: a timeout, not a hang.
    let mute_path = dir.join("mute.sock");
    let _mute = UnixListener::bind(&mute_path).unwrap();
    let start = Instant::now();
    let r = ctlsock::query(&mute_path, "ping", Duration::from_millis(200));
    assert!(matches!(r, Err(ctlsock::QueryError::Exchange(_))), "{r:?}");
    assert!(start.elapsed() < Duration::from_secs(3));
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

fn vpnlbctl(socket: &Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_vpnlbctl"))
        .arg("--socket")
        .arg(socket)
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

#[test]
fn vpnlbctl_prints_tables_and_errors() {
    let dir = tmpdir("ctl");
    let server = Server::start(&dir.join("s.sock"));
    let sock = server.path.clone();

    // An array of objects: a table with a header line and one line per object.
    let (code, out, err) = vpnlbctl(&sock, &["show", "workers"]);
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "{out}");
    let header: Vec<&str> = lines[0].split_whitespace().collect();
    let mut sorted = header.clone();
    sorted.sort();
    assert_eq!(
        sorted,
        ["core", "queues", "rx_packets", "state", "worker"],
        "{out}"
    );
    let want = [
        [
            ("worker", "0"),
            ("core", "2"),
            ("rx_packets", "100"),
            ("state", "running"),
            ("queues", "[0,1]"),
        ],
        [
            ("worker", "1"),
            ("core", "3"),
            ("rx_packets", "12345"),
            ("state", "idle"),
            ("queues", "[2]"),
        ],
    ];
    for (row, want) in lines[1..].iter().zip(want) {
        let cells: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(cells.len(), header.len(), "{out}");
        for (column, value) in want {
            let i = header.iter().position(|h| *h == column).unwrap();
            assert_eq!(cells[i], value, "{column} in {out}");
        }
    }
    // Aligned: strings start under their heading, numbers end under theirs.
    let state_at = lines[0].find("state").unwrap();
    assert_eq!(lines[1].find("running"), Some(state_at), "{out}");
    assert_eq!(lines[2].find("idle"), Some(state_at), "{out}");
    let rx_end = lines[0].find("rx_packets").unwrap() + "rx_packets".len();
    assert_eq!(lines[1].find(" 100").map(|i| i + 4), Some(rx_end), "{out}");
    assert_eq!(lines[2].find("12345").map(|i| i + 5), Some(rx_end), "{out}");

    // An object: `key  value` lines, nested objects flattened with dots.
    let (code, out, _) = vpnlbctl(&sock, &["show", "stats"]);
    assert_eq!(code, 0);
    let pairs: Vec<Vec<&str>> = out
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert!(pairs.contains(&vec!["uptime_s", "12"]), "{out}");
    assert!(pairs.contains(&vec!["ports.client0.rx", "5"]), "{out}");
    assert!(pairs.contains(&vec!["ports.client0.tx", "6"]), "{out}");
    assert!(pairs.contains(&vec!["version", "0.1.0"]), "{out}");

    // Text as is.
    let (code, out, _) = vpnlbctl(&sock, &["stats", "prometheus"]);
    assert_eq!(code, 0);
    assert_eq!(out, "# TYPE vpnlb_rx counter\nvpnlb_rx 7\n");

    // --json: the data.
    let (code, out, _) = vpnlbctl(&sock, &["--json", "show", "workers"]);
    assert_eq!(code, 0);
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v[1]["rx_packets"], json!(12345));
    let (code, out, _) = vpnlbctl(&sock, &["gateway", "gw1", "weight", "5", "--json"]);
    assert_eq!(code, 0);
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        v,
        json!({"command": "gateway_weight", "name": "gw1", "weight": 5})
    );

    // An error reply: the message on stderr, exit code 1.
    let (code, out, err) = vpnlbctl(&sock, &["gateway", "nope", "drain"]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(out.is_empty(), "{out}");
    assert!(err.contains("no gateway `nope`"), "{err}");
    // With --json, the whole reply.
    let (code, out, _) = vpnlbctl(&sock, &["--json", "gateway", "nope", "drain"]);
    assert_eq!(code, 1);
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v, json!({"ok": false, "error": "no gateway `nope`"}));

    // A malformed command: exit code 1 with clap's message (no daemon needed).
    let (code, _, err) = vpnlbctl(&dir.join("absent.sock"), &["shwo", "stats"]);
    assert_eq!(code, 1);
    assert!(err.contains("unrecognized subcommand 'shwo'"), "{err}");
    let (code, _, err) = vpnlbctl(&dir.join("absent.sock"), &["gateway", "gw1", "weight", "x"]);
    assert_eq!(code, 1);
    assert!(err.contains("invalid value 'x'"), "{err}");

    // No daemon: a clear message, exit code 2.
    let (code, _, err) = vpnlbctl(&dir.join("absent.sock"), &["ping"]);
    assert_eq!(code, 2);
    assert!(err.contains("cannot connect to"), "{err}");
    assert!(err.contains("absent.sock"), "{err}");

    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

// ---------------------------------------------------------------------------------------------
// Access levels, peer credentials, idle clients

/// Every request kind, once.
fn every_request() -> Vec<Request> {
    [
        "show stats",
        "show ports",
        "show workers",
        "show gateways",
        "show classes",
        "show drops",
        "show affinity",
        "show neighbors",
        "show health",
        "show vrrp",
        "show sync",
        "show redirect",
        "gateway gw1 drain",
        "gateway gw1 enable",
        "gateway gw1 disable",
        "gateway gw1 weight 3",
        "affinity flush",
        "stats prometheus",
        "reload",
        "ping",
        "debug worker 0 stall 10",
        "debug worker 0 panic",
        "debug health stall 10",
        "debug affinity fill 10",
    ]
    .iter()
    .map(|l| ctlsock::parse_request(l).unwrap())
    .collect()
}

#[test]
fn every_request_is_a_read_or_a_write() {
    let writes: Vec<String> = every_request()
        .iter()
        .filter(|r| r.effect() == Effect::Write)
        .map(Request::to_string)
        .collect();
    assert_eq!(
        writes,
        [
            "gateway gw1 drain",
            "gateway gw1 enable",
            "gateway gw1 disable",
            "gateway gw1 weight 3",
            "affinity flush",
            "reload",
            "debug worker 0 stall 10",
            "debug worker 0 panic",
            "debug health stall 10",
            "debug affinity fill 10",
        ]
    );
}

fn read_only(idle_timeout: Duration) -> SocketOptions {
    SocketOptions {
        access: Access::ReadOnly,
        group: None,
        idle_timeout,
    }
}

#[test]
fn the_read_only_socket_refuses_writes_and_keeps_serving() {
    let dir = tmpdir("readonly");
    let server = Server::start_with(&dir.join("ro.sock"), read_only(DEFAULT_IDLE_TIMEOUT));
    let mut c = Client::connect(&server.path);
    // Every read is answered by the handler.
    let reads: Vec<Request> = every_request()
        .into_iter()
        .filter(|r| r.effect() == Effect::Read)
        .collect();
    for r in &reads {
        let reply = c.ask(&r.to_string());
        assert_eq!(reply["ok"], json!(true), "{r}: {reply}");
    }
    assert_eq!(server.handled.load(Ordering::Relaxed), reads.len());
    // Every write gets an error, never reaches the handler, and is counted.
    let writes = [
        "gateway gw1 drain",
        "gateway gw1 weight 7",
        "affinity flush 198.18.0.1",
        "reload",
    ];
    for w in writes {
        let e = error(&c.ask(w)).to_string();
        assert!(e.contains("read-only socket"), "{w}: {e}");
        assert!(e.contains(w), "{w}: {e}");
    }
    assert_eq!(server.handled.load(Ordering::Relaxed), reads.len());
    // The same connection, and others, go on being served.
    assert_eq!(data(&c.ask("ping")), &json!({"command": "ping"}));
    let mut other = Client::connect(&server.path);
    assert!(error(&other.ask("gateway gw2 disable")).contains("read-only"));
    assert_eq!(data(&other.ask("show stats"))["uptime_s"], json!(12));
    assert_eq!(server.counters().refused_writes, 5);
    assert_eq!(server.counters().accepted, 2);
    // Refusals are logged with the peer's credentials.
    let log = server.log();
    assert!(log.contains("refused: the socket is read-only"), "{log}");
    assert!(log.contains("command=reload"), "{log}");

    // vpnlbctl talks to it too: reads work, writes fail with the daemon's message.
    let (code, out, err) = vpnlbctl(&server.path, &["show", "stats"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("uptime_s"), "{out}");
    let (code, _, err) = vpnlbctl(&server.path, &["gateway", "gw1", "drain"]);
    assert_eq!(code, 1);
    assert!(err.contains("read-only socket"), "{err}");
    // ... also when the socket comes from $VPNLB_SOCKET.
    let out = Command::new(env!("CARGO_BIN_EXE_vpnlbctl"))
        .env("VPNLB_SOCKET", &server.path)
        .args(["--json", "ping"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        serde_json::from_slice::<Value>(&out.stdout).unwrap(),
        json!({"command": "ping"})
    );
    assert_eq!(server.counters().refused_writes, 6);
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn writes_are_logged_with_the_peers_credentials_and_reads_are_not() {
    let dir = tmpdir("peercred");
    let server = Server::start(&dir.join("s.sock"));
    let mut c = Client::connect(&server.path);
    assert_eq!(data(&c.ask("show workers"))[0]["core"], json!(2));
    assert_eq!(
        data(&c.ask("gateway gw9 weight 4")),
        &json!({"command": "gateway_weight", "name": "gw9", "weight": 4})
    );
    assert!(error(&c.ask("gateway nope drain")).contains("no gateway"));
    assert_eq!(server.counters().refused_writes, 0);
    let log = server.log();
    // This process is the peer: its own pid, uid and gid.
    let pid = std::process::id();
    let meta = std::fs::metadata("/proc/self").unwrap();
    use std::os::unix::fs::MetadataExt;
    let (uid, gid) = (meta.uid(), meta.gid());
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("control command"))
        .collect();
    assert_eq!(lines.len(), 2, "{log}");
    for (line, command) in lines
        .iter()
        .zip(["gateway gw9 weight 4", "gateway nope drain"])
    {
        assert!(line.contains(&format!("uid={uid}")), "{line}");
        assert!(line.contains(&format!("gid={gid}")), "{line}");
        assert!(line.contains(&format!("pid={pid}")), "{line}");
        assert!(line.contains(&format!("command=\"{command}\"")), "{line}");
    }
    assert!(lines[0].contains("ok=true"), "{}", lines[0]);
    assert!(lines[1].contains("ok=false"), "{}", lines[1]);
    assert!(!log.contains("show workers"), "reads are not logged: {log}");
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn idle_clients_are_disconnected() {
    let dir = tmpdir("idle");
    let timeout = Duration::from_millis(300);
    let options = SocketOptions {
        idle_timeout: timeout,
        ..SocketOptions::default()
    };
    let server = Server::start_with(&dir.join("s.sock"), options);
    let start = Instant::now();
    // Silent: told why, then closed, about when the timeout passes.
    let mut silent = Client::connect(&server.path);
    // Slow loris: a byte every 50 ms, never a newline.
    let loris_path = server.path.clone();
    let loris = std::thread::spawn(move || {
        let mut s = UnixStream::connect(&loris_path).unwrap();
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(10) {
            if s.write_all(b"s").is_err() {
                return Some(t.elapsed());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    });
    // Busy: a request every 100 ms for twice the timeout, never cut off.
    let mut busy = Client::connect(&server.path);
    while start.elapsed() < timeout * 2 {
        assert_eq!(data(&busy.ask("ping")), &json!({"command": "ping"}));
        std::thread::sleep(Duration::from_millis(100));
    }
    let e = error(&silent.recv()).to_string();
    assert!(e.contains("no request for 300 ms"), "{e}");
    silent.assert_closed();
    let waited = start.elapsed();
    assert!(waited >= timeout, "closed after {waited:?}");
    let cut = loris
        .join()
        .unwrap()
        .expect("the slow loris was never cut off");
    assert!(
        cut < Duration::from_secs(3),
        "the slow loris lasted {cut:?}"
    );
    assert_eq!(server.counters().idle_disconnects, 2);
    // The busy client is still served, also after a pause shorter than the timeout.
    std::thread::sleep(timeout / 2);
    assert_eq!(data(&busy.ask("ping")), &json!({"command": "ping"}));
    assert_eq!(server.counters().idle_disconnects, 2);
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_socket_file_gets_its_group() {
    use std::os::unix::fs::MetadataExt;
    let dir = tmpdir("group");
    // As root any group will do; otherwise only one of ours (our primary group) can be set.
    let own = std::fs::metadata("/proc/self").unwrap().gid();
    let root = std::fs::metadata("/proc/self").unwrap().uid() == 0;
    let gid = ["adm", "nogroup", "daemon"]
        .iter()
        .filter(|_| root)
        .find_map(|g| netdev::cred::group_id(g).unwrap())
        .unwrap_or(own);
    let path = dir.join("g.sock");
    let options = SocketOptions {
        group: Some(gid),
        ..read_only(DEFAULT_IDLE_TIMEOUT)
    };
    let server = Server::start_with(&path, options);
    let meta = std::fs::metadata(&path).unwrap();
    assert_eq!(meta.gid(), gid);
    assert_eq!(meta.permissions().mode() & 0o777, 0o660);
    if root {
        assert_ne!(gid, own, "test a group other than the process's own");
    }
    let mut c = Client::connect(&path);
    assert_eq!(data(&c.ask("ping")), &json!({"command": "ping"}));
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A request answered later (a reload waiting for the workers) is replied to when the handler's
/// owner completes it; the same client's next request waits for it (replies stay in order), and
/// other clients are served meanwhile.
#[test]
fn a_reply_given_later_keeps_the_order_and_spares_other_clients() {
    let dir = tmpdir("later");
    let path = dir.join("ctl.sock");
    let mut sock = ControlSocket::bind(&path).unwrap();
    let talk = |text: &'static str, lines: usize| {
        let p = path.clone();
        std::thread::spawn(move || {
            let mut s = UnixStream::connect(&p).unwrap();
            s.write_all(text.as_bytes()).unwrap();
            let got: Vec<(String, Instant)> = BufReader::new(s)
                .lines()
                .take(lines)
                .map(|l| (l.unwrap(), Instant::now()))
                .collect();
            got
        })
    };
    let waiting = talk("reload\nping\n", 2);
    let mut ticket = None;
    let mut other = None;
    let mut completed_at = None;
    let started = Instant::now();
    while !(waiting.is_finished() && other.as_ref().is_some_and(JoinHandle::is_finished))
        && started.elapsed() < Duration::from_secs(10)
    {
        sock.poll(&mut |req| match req {
            Request::Reload => {
                let t = ctlsock::Ticket(42);
                ticket = Some(t);
                ctlsock::Answer::Later(t)
            }
            req => echo(req).into(),
        });
        if ticket.is_some() && other.is_none() {
            other = Some(talk("ping\n", 1));
        }
        if let (Some(t), None) = (ticket, completed_at) {
            if started.elapsed() > Duration::from_millis(300) {
                assert!(sock.complete(t, &Reply::Ok(json!({"reloaded": true}))));
                assert!(!sock.complete(t, &Reply::Ok(json!(0))), "completed twice");
                completed_at = Some(Instant::now());
            }
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let got = waiting.join().unwrap();
    let other = other.unwrap().join().unwrap();
    let completed_at = completed_at.unwrap();
    assert_eq!(got[0].0, r#"{"ok":true,"data":{"reloaded":true}}"#);
    assert_eq!(got[1].0, r#"{"ok":true,"data":{"command":"ping"}}"#);
    assert!(
        got[1].1 >= completed_at,
        "the second request waited for the first"
    );
    assert_eq!(other[0].0, r#"{"ok":true,"data":{"command":"ping"}}"#);
    assert!(
        other[0].1 < completed_at,
        "the other client was not held up"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
