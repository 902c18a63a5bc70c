//! The health probes against real sockets, in a network namespace each test makes for itself.
//!
//! Needs root (network namespaces, raw ICMP sockets); without it every test says so and passes.
//! Each namespace has lo up with 198.19.0.1 (the probe's source) and 198.19.0.11 (the
//! "gateway"), and 2001:2:0:2::1 and ::11; servers are threads entering the same namespace.
//! Every wait is bounded: a probe's own timeout, and a few seconds for the servers.
//!
//! Each server of a test binds a port of its own, and a port that must refuse was never bound
//! in that namespace: a server's socket is not always gone when its thread ends. A process that
//! another test thread spawns (`ip`, `openssl`) holds copies of all our descriptors from fork to
//! exec; a listener closed in that window lives on in it, still listening, for a moment (or on a
//! busy machine much longer): a new bind to its port fails with EADDRINUSE, and a probe to it
//! is not refused.

use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use control::health::message::{ike_sa_init_probe, IkeAnswer};
use control::health::probe::{Failure, InFlight, Outcome, ProbeKind, ProbeSpec};
use dataplane::wire::ike::{exchange, payload_type, IkeHeader, NON_ESP_MARKER};
use dataplane::wire::{dtls, tls};

const SRC4: &str = "198.19.0.1";
const GW4: &str = "198.19.0.11";
const SRC6: &str = "2001:2:0:2::1";
const GW6: &str = "2001:2:0:2::11";
/// How long a server thread waits for the probe before it gives up.
const SERVER_WAIT: Duration = Duration::from_secs(5);

/// Whether we run as root (effective UID 0), read from /proc so that no `unsafe` is needed.
fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|euid| euid == "0"))
        })
        .unwrap_or(false)
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A network namespace of this test, deleted when dropped.
struct Netns {
    name: String,
}

impl Netns {
    /// A fresh namespace with the test addresses on lo; `None` (said why) when not root.
    fn new(test: &str) -> Option<Netns> {
        if !is_root() {
            eprintln!("{test}: skipped: needs root for network namespaces and raw sockets");
            return None;
        }
        static N: AtomicUsize = AtomicUsize::new(0);
        let name = format!(
            "vlbt-hp-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        ip(&["netns", "add", &name]);
        let ns = Netns { name };
        ns.ip(&["link", "set", "lo", "up"]);
        for a in [SRC4, GW4] {
            ns.ip(&["addr", "add", &format!("{a}/32"), "dev", "lo"]);
        }
        for a in [SRC6, GW6] {
            ns.ip(&[
                "-6",
                "addr",
                "add",
                &format!("{a}/128"),
                "dev",
                "lo",
                "nodad",
            ]);
        }
        ns.wait_ipv6_local();
        Some(ns)
    }

    /// Waits until the IPv6 addresses reach each other, at most [`SERVER_WAIT`].
    ///
    /// Unlike IPv4's, an IPv6 address's local route (table local) is not in place when
    /// `ip addr add` returns: the kernel inserts it from addrconf's DAD work, a workqueue item
    /// that `ip addr add` only schedules, `nodad` or not. The address can be bound at once,
    /// but until a kworker runs that item, packets to it take the /128 prefix route out of lo
    /// and come back as not local: a TCP connect to a server already listening there fails
    /// with ENETUNREACH, a datagram or an echo request is lost. On a busy machine the kworker
    /// can run after the first probe, so wait for a datagram to make it across, both ways (the
    /// answers too). A fresh socket each try: a connected one would keep the route it found.
    fn wait_ipv6_local(&self) {
        let _in = netdev::netns::enter(&self.name).expect("enter the namespace");
        let until = Instant::now() + SERVER_WAIT;
        let bind = |a: &str| UdpSocket::bind(SocketAddr::new(a.parse().unwrap(), 0)).unwrap();
        for (from, to) in [(SRC6, GW6), (GW6, SRC6)] {
            let rx = bind(to);
            rx.set_read_timeout(Some(Duration::from_millis(1))).unwrap();
            loop {
                let _ = bind(from).send_to(b"?", rx.local_addr().unwrap());
                if rx.recv(&mut [0u8; 1]).is_ok() {
                    break;
                }
                assert!(Instant::now() < until, "{from} cannot reach {to}");
            }
        }
    }

    /// `ip -n NS ARGS...`
    fn ip(&self, args: &[&str]) {
        let mut all = vec!["-n", &self.name];
        all.extend_from_slice(args);
        ip(&all);
    }

    /// A veth pair inside the namespace and a route to 198.19.7.0/24 through it, with a
    /// permanent neighbor for 198.19.7.1: packets to it leave and are never answered.
    fn add_silent_route(&self) {
        self.ip(&[
            "link", "add", "vlbt0", "type", "veth", "peer", "name", "vlbt1",
        ]);
        self.ip(&["link", "set", "vlbt0", "up"]);
        self.ip(&["link", "set", "vlbt1", "up"]);
        self.ip(&["route", "add", "198.19.7.0/24", "dev", "vlbt0", "src", SRC4]);
        self.ip(&[
            "neigh",
            "add",
            "198.19.7.1",
            "lladdr",
            "02:00:00:00:07:01",
            "dev",
            "vlbt0",
            "nud",
            "permanent",
        ]);
    }

    /// Runs `f` on a thread inside the namespace; `f` calls `ready` once it listens, and this
    /// returns after that (or panics after [`SERVER_WAIT`]).
    fn server<T, F>(&self, f: F) -> JoinHandle<T>
    where
        T: Send + 'static,
        F: FnOnce(&dyn Fn()) -> T + Send + 'static,
    {
        let name = self.name.clone();
        let (tx, rx) = mpsc::channel();
        let handle = thread::spawn(move || {
            let _in = netdev::netns::enter(&name).expect("server enters the namespace");
            f(&|| {
                let _ = tx.send(());
            })
        });
        rx.recv_timeout(SERVER_WAIT).expect("server ready");
        handle
    }

    /// Runs one probe to completion from this thread, inside the namespace, polling every 2 ms
    /// as the checker does. Returns the outcome and how long it took.
    fn probe(&self, spec: &ProbeSpec) -> (Outcome, Duration) {
        let _in = netdev::netns::enter(&self.name).expect("enter the namespace");
        let start = Instant::now();
        let mut p = InFlight::start(spec, start);
        let guard = start + spec.timeout + Duration::from_secs(2);
        loop {
            let now = Instant::now();
            if let Some(outcome) = p.poll(now) {
                assert_eq!(p.poll(now), None, "an outcome comes once");
                return (outcome, now - start);
            }
            assert!(now < guard, "the probe outlived its timeout");
            thread::sleep(Duration::from_millis(2));
        }
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

fn spec(kind: ProbeKind, target: &str, timeout_ms: u64) -> ProbeSpec {
    let target: SocketAddr = target.parse().unwrap();
    let source: IpAddr = if target.is_ipv4() { SRC4 } else { SRC6 }.parse().unwrap();
    ProbeSpec {
        kind,
        target,
        source: Some(source),
        timeout: Duration::from_millis(timeout_ms),
    }
}

fn alive(outcome: &Outcome) -> &str {
    match outcome {
        Outcome::Alive { answer, .. } => answer,
        other => panic!("expected alive, got {other:?}"),
    }
}

fn tls_sni() -> ProbeKind {
    ProbeKind::Tls {
        sni: Some("gw1.example.net".to_string()),
    }
}

/// Accepts one connection within [`SERVER_WAIT`] (blocking reads then time out too).
fn accept(listener: &TcpListener) -> TcpStream {
    listener.set_nonblocking(true).unwrap();
    let until = Instant::now() + SERVER_WAIT;
    loop {
        match listener.accept() {
            Ok((s, _)) => {
                s.set_nonblocking(false).unwrap();
                s.set_read_timeout(Some(SERVER_WAIT)).unwrap();
                return s;
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock && Instant::now() < until => {
                thread::sleep(Duration::from_millis(2));
            }
            Err(e) => panic!("accept: {e}"),
        }
    }
}

/// Reads one whole TLS record.
fn read_record(s: &mut TcpStream) -> Vec<u8> {
    let mut rec = vec![0u8; 5];
    s.read_exact(&mut rec).unwrap();
    let len = usize::from(u16::from_be_bytes([rec[3], rec[4]]));
    rec.resize(5 + len, 0);
    s.read_exact(&mut rec[5..]).unwrap();
    rec
}

/// What the peer's close looked like: true for a FIN (read gives 0), false for a reset.
fn closed_cleanly(s: &mut TcpStream) -> bool {
    let mut b = [0u8; 64];
    matches!(s.read(&mut b), Ok(0))
}

#[test]
fn tcp_alive_v4_and_v6_and_closed_with_fin() {
    let Some(ns) = Netns::new("tcp_alive") else {
        return;
    };
    for gw in [GW4, GW6] {
        let addr = SocketAddr::new(gw.parse().unwrap(), 8080);
        let server = ns.server(move |ready| {
            let l = TcpListener::bind(addr).unwrap();
            ready();
            let mut s = accept(&l);
            closed_cleanly(&mut s)
        });
        let (o, rtt) = ns.probe(&spec(ProbeKind::Tcp, &addr.to_string(), 3000));
        assert_eq!(alive(&o), "connected");
        assert!(rtt < Duration::from_millis(1500), "{rtt:?}");
        assert!(server.join().unwrap(), "the probe closes with a FIN");
    }
}

#[test]
fn tcp_refused_unreachable_and_timeout() {
    let Some(ns) = Netns::new("tcp_failures") else {
        return;
    };
    // Nothing listens: a reset at once.
    let (o, rtt) = ns.probe(&spec(ProbeKind::Tcp, "198.19.0.11:8080", 3000));
    assert_eq!(o, Outcome::Dead(Failure::Refused));
    assert!(rtt < Duration::from_millis(1500));

    // An unreachable route: EHOSTUNREACH from connect, reported by the first poll.
    ns.ip(&["route", "add", "unreachable", "198.19.5.0/24"]);
    let (o, _) = ns.probe(&spec(ProbeKind::Tcp, "198.19.5.1:443", 3000));
    assert!(
        matches!(&o, Outcome::Dead(Failure::Unreachable(e)) if e.contains("No route")),
        "{o:?}"
    );
    // A blackhole route: for a local sender the kernel refuses at once (EINVAL) rather than
    // drop silently, so this is "unreachable" too, not a timeout.
    ns.ip(&["route", "add", "blackhole", "198.19.6.0/24"]);
    let (o, rtt) = ns.probe(&spec(ProbeKind::Tcp, "198.19.6.1:443", 3000));
    assert!(matches!(o, Outcome::Dead(Failure::Unreachable(_))), "{o:?}");
    assert!(rtt < Duration::from_millis(1500));

    // Packets that leave and are never answered: a timeout, on time.
    ns.add_silent_route();
    for kind in [ProbeKind::Tcp, tls_sni()] {
        let (o, took) = ns.probe(&spec(kind, "198.19.7.1:443", 300));
        assert_eq!(o, Outcome::Dead(Failure::Timeout));
        assert!(took >= Duration::from_millis(300), "{took:?}");
        assert!(took < Duration::from_millis(1300), "{took:?}");
    }
}

/// An IKE_SA_INIT response to `request` carrying only N(INVALID_KE_PAYLOAD) with group 19,
/// as strongSwan answers the probe.
fn invalid_ke_response(request: &[u8]) -> Vec<u8> {
    let mut r = request[..8].to_vec();
    r.extend_from_slice(&0x5eed_0000_0000_0001u64.to_be_bytes());
    r.extend_from_slice(&[payload_type::NOTIFY, 0x20, exchange::IKE_SA_INIT, 0x20]);
    r.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 28 + 10]);
    // Generic header, protocol 0, SPI size 0, type 17, data: the group the responder wants.
    r.extend_from_slice(&[0, 0, 0, 10, 0, 0, 0, 17, 0, 19]);
    r
}

/// Checks that `request` is the probe: an IKE_SA_INIT request with SA, KE (group 1) and Ni.
fn check_ike_request(request: &[u8]) {
    let h = IkeHeader::new_checked(request, request.len()).expect("IKE request");
    assert_eq!(h.exchange_type(), exchange::IKE_SA_INIT);
    assert!(h.is_initiator() && !h.is_response());
    let chain: Vec<_> = h.payloads().map(|p| p.unwrap()).collect();
    let types: Vec<u8> = chain.iter().map(|p| p.payload_type).collect();
    assert_eq!(
        types,
        [payload_type::SA, payload_type::KE, payload_type::NONCE]
    );
    assert_eq!(chain[1].body[..2], [0, 1], "KE for group 1");
    // The message is the one the pure builder makes for that SPI and nonce.
    let nonce: [u8; 32] = chain[2].body.try_into().unwrap();
    assert_eq!(ike_sa_init_probe(h.initiator_spi(), &nonce), request);
}

/// A UDP responder on `addr` that answers the first datagram with `answer(request)` (after the
/// non-ESP marker if `marker`) and returns the request.
fn udp_responder(
    ns: &Netns,
    addr: SocketAddr,
    marker: bool,
    answer: fn(&[u8]) -> Vec<u8>,
) -> JoinHandle<Vec<u8>> {
    ns.server(move |ready| {
        let s = UdpSocket::bind(addr).unwrap();
        s.set_read_timeout(Some(SERVER_WAIT)).unwrap();
        ready();
        let mut buf = [0u8; 2048];
        let (n, from) = s.recv_from(&mut buf).unwrap();
        let mut request = &buf[..n];
        if marker {
            request = request.strip_prefix(&NON_ESP_MARKER[..]).expect("marker");
        }
        let mut reply = if marker {
            NON_ESP_MARKER.to_vec()
        } else {
            Vec::new()
        };
        reply.extend(answer(request));
        s.send_to(&reply, from).unwrap();
        request.to_vec()
    })
}

#[test]
fn ike_alive_garbage_refused_and_timeout() {
    let Some(ns) = Netns::new("ike") else {
        return;
    };
    // INVALID_KE_PAYLOAD on port 500, and behind the non-ESP marker on 4500.
    for (port, marker) in [(500, false), (4500, true)] {
        let addr = SocketAddr::new(GW4.parse().unwrap(), port);
        let server = udp_responder(&ns, addr, marker, invalid_ke_response);
        let (o, rtt) = ns.probe(&spec(ProbeKind::Ike, &addr.to_string(), 3000));
        assert_eq!(alive(&o), IkeAnswer::Notify(17).name());
        assert!(rtt < Duration::from_millis(1500));
        check_ike_request(&server.join().unwrap());
    }
    // IPv6.
    let addr6: SocketAddr = format!("[{GW6}]:500").parse().unwrap();
    let server = udp_responder(&ns, addr6, false, invalid_ke_response);
    let (o, _) = ns.probe(&spec(ProbeKind::Ike, &addr6.to_string(), 3000));
    assert_eq!(alive(&o), "INVALID_KE_PAYLOAD");
    server.join().unwrap();

    // Something that is not IKE answers on the port: a bad response at once, not a timeout
    // (documented in probe.rs: only the target can reach the probe's connected socket).
    // Each on a port of its own (see the module docs).
    let addr = SocketAddr::new(GW4.parse().unwrap(), 501);
    let server = udp_responder(&ns, addr, false, |_| b"garbage, not IKE".to_vec());
    let (o, rtt) = ns.probe(&spec(ProbeKind::Ike, "198.19.0.11:501", 3000));
    assert!(matches!(o, Outcome::Dead(Failure::BadResponse(_))), "{o:?}");
    assert!(rtt < Duration::from_millis(1500));
    server.join().unwrap();
    // An IKE response to another SPI is a bad response too.
    let addr = SocketAddr::new(GW4.parse().unwrap(), 502);
    let server = udp_responder(&ns, addr, false, |req| {
        let mut r = invalid_ke_response(req);
        r[0] ^= 0xff;
        r
    });
    let (o, _) = ns.probe(&spec(ProbeKind::Ike, "198.19.0.11:502", 3000));
    assert!(
        matches!(&o, Outcome::Dead(Failure::BadResponse(e)) if e.contains("SPI")),
        "{o:?}"
    );
    server.join().unwrap();

    // Nobody listens: the ICMP port unreachable ends it at once.
    let (o, rtt) = ns.probe(&spec(ProbeKind::Ike, "198.19.0.11:503", 3000));
    assert_eq!(o, Outcome::Dead(Failure::Refused));
    assert!(rtt < Duration::from_millis(1500));

    // Silence: a timeout.
    ns.add_silent_route();
    let (o, took) = ns.probe(&spec(ProbeKind::Ike, "198.19.7.1:500", 300));
    assert_eq!(o, Outcome::Dead(Failure::Timeout));
    assert!(took >= Duration::from_millis(300) && took < Duration::from_millis(1300));
}

/// A TLS server on 198.19.0.11:`port` that reads the ClientHello, checks it, writes `answer`
/// (nothing if empty, then closes), and reports the SNI and whether the probe closed cleanly.
fn tls_server(ns: &Netns, port: u16, answer: &'static [u8]) -> JoinHandle<(Option<Vec<u8>>, bool)> {
    ns.server(move |ready| {
        let l = TcpListener::bind(SocketAddr::new(GW4.parse().unwrap(), port)).unwrap();
        ready();
        let mut s = accept(&l);
        let hello = read_record(&mut s);
        let ch = tls::parse_client_hello(&hello).expect("a ClientHello");
        assert_eq!(ch.legacy_version, tls::version::TLS_1_2);
        let sni = ch.sni.map(<[u8]>::to_vec);
        if answer.is_empty() {
            return (sni, true);
        }
        s.write_all(answer).unwrap();
        (sni, closed_cleanly(&mut s))
    })
}

#[test]
fn tls_server_hello_alert_and_bad_answers() {
    let Some(ns) = Netns::new("tls") else {
        return;
    };
    let server_hello: &'static [u8] = testkit::tls_server_hello().leak();
    // Each server on a port of its own (see the module docs).
    let server = tls_server(&ns, 8443, server_hello);
    let (o, rtt) = ns.probe(&spec(tls_sni(), "198.19.0.11:8443", 3000));
    assert_eq!(alive(&o), "ServerHello");
    assert!(rtt < Duration::from_millis(1500));
    let (sni, clean) = server.join().unwrap();
    assert_eq!(sni.as_deref(), Some(&b"gw1.example.net"[..]));
    assert!(clean, "the probe closes with a FIN");

    // No SNI configured: none sent. A fatal handshake_failure alert is an answer too.
    let server = tls_server(&ns, 8444, &[21, 3, 3, 0, 2, 2, 40]);
    let (o, _) = ns.probe(&spec(
        ProbeKind::Tls { sni: None },
        "198.19.0.11:8444",
        3000,
    ));
    assert_eq!(alive(&o), "alert 2/40");
    assert_eq!(server.join().unwrap().0, None);

    // Not TLS, and a server that closes without answering.
    let server = tls_server(&ns, 8445, b"HTTP/1.1 400 Bad Request\r\n\r\n");
    let (o, _) = ns.probe(&spec(tls_sni(), "198.19.0.11:8445", 3000));
    assert!(matches!(o, Outcome::Dead(Failure::BadResponse(_))), "{o:?}");
    server.join().unwrap();
    let server = tls_server(&ns, 8446, b"");
    let (o, _) = ns.probe(&spec(tls_sni(), "198.19.0.11:8446", 3000));
    assert!(
        matches!(&o, Outcome::Dead(Failure::BadResponse(e)) if e.contains("closed")),
        "{o:?}"
    );
    server.join().unwrap();

    // Nothing listens.
    let (o, _) = ns.probe(&spec(tls_sni(), "198.19.0.11:8447", 3000));
    assert_eq!(o, Outcome::Dead(Failure::Refused));
}

#[test]
fn dtls_hello_verify_request_and_refused() {
    let Some(ns) = Netns::new("dtls") else {
        return;
    };
    for gw in ["198.19.0.11:4443", "[2001:2:0:2::11]:4443"] {
        let addr: SocketAddr = gw.parse().unwrap();
        let server = udp_responder(&ns, addr, false, |req| {
            let ch = dtls::parse_client_hello(req).expect("a DTLS ClientHello");
            assert_eq!(ch.legacy_version, dtls::version::DTLS_1_2);
            testkit::dtls_hello_verify_request(&[0xc0; 20])
        });
        let (o, rtt) = ns.probe(&spec(ProbeKind::Dtls, gw, 3000));
        assert_eq!(alive(&o), "HelloVerifyRequest");
        assert!(rtt < Duration::from_millis(1500));
        server.join().unwrap();
    }
    // Never bound in this namespace (see the module docs), as the next one.
    let (o, _) = ns.probe(&spec(ProbeKind::Dtls, "198.19.0.11:4444", 3000));
    assert_eq!(o, Outcome::Dead(Failure::Refused));
    // A TLS record is no DTLS answer.
    let addr: SocketAddr = "198.19.0.11:4445".parse().unwrap();
    let server = udp_responder(&ns, addr, false, |_| testkit::tls_server_hello());
    let (o, _) = ns.probe(&spec(ProbeKind::Dtls, "198.19.0.11:4445", 3000));
    assert!(matches!(o, Outcome::Dead(Failure::BadResponse(_))), "{o:?}");
    server.join().unwrap();
}

#[test]
fn icmp_echo_v4_v6_concurrent_and_unreachable() {
    let Some(ns) = Netns::new("icmp") else {
        return;
    };
    for gw in [GW4, GW6] {
        let target = SocketAddr::new(gw.parse().unwrap(), 0).to_string();
        let (o, rtt) = ns.probe(&spec(ProbeKind::Icmp, &target, 3000));
        assert_eq!(alive(&o), "echo reply");
        assert!(rtt < Duration::from_millis(1500));
    }
    // Probes in flight at once each see every ICMP packet and take only their own reply.
    {
        let _in = netdev::netns::enter(&ns.name).unwrap();
        let start = Instant::now();
        let mut probes: Vec<InFlight> = (0..4)
            .map(|i| {
                let target = if i % 2 == 0 {
                    "198.19.0.11:0"
                } else {
                    "198.19.0.1:0"
                };
                InFlight::start(&spec(ProbeKind::Icmp, target, 3000), start)
            })
            .collect();
        let mut done = vec![None; probes.len()];
        while done.iter().any(Option::is_none) {
            assert!(start.elapsed() < Duration::from_secs(5));
            let now = Instant::now();
            for (p, d) in probes.iter_mut().zip(&mut done) {
                if let Some(o) = p.poll(now) {
                    assert!(d.is_none());
                    *d = Some(o);
                }
            }
            thread::sleep(Duration::from_millis(2));
        }
        for o in done.into_iter().flatten() {
            assert_eq!(alive(&o), "echo reply");
        }
    }
    ns.ip(&["route", "add", "unreachable", "198.19.5.0/24"]);
    let (o, _) = ns.probe(&spec(ProbeKind::Icmp, "198.19.5.1:0", 3000));
    assert!(matches!(o, Outcome::Dead(Failure::Unreachable(_))), "{o:?}");
    // Silence.
    ns.add_silent_route();
    let (o, _) = ns.probe(&spec(ProbeKind::Icmp, "198.19.7.1:0", 300));
    assert_eq!(o, Outcome::Dead(Failure::Timeout));
}

/// `openssl s_server` in the namespace, killed when dropped.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Probes until something other than "refused" comes back (the server may still be starting),
/// for at most 10 s.
fn probe_until_listening(ns: &Netns, spec: &ProbeSpec) -> Outcome {
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        let (o, _) = ns.probe(spec);
        if o != Outcome::Dead(Failure::Refused) || Instant::now() >= until {
            return o;
        }
        thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn openssl_s_server_answers_tls_and_dtls() {
    let Some(ns) = Netns::new("openssl") else {
        return;
    };
    let have_openssl = Command::new("openssl")
        .arg("version")
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !have_openssl {
        eprintln!("openssl: skipped: no openssl binary");
        return;
    }
    let dir = std::env::temp_dir().join(format!("{}-cert", ns.name));
    std::fs::create_dir_all(&dir).unwrap();
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let status = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
        ])
        .args(["-nodes", "-subj", "/CN=gw1", "-days", "1", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "openssl req");
    let s_server = |extra: &[&str], accept: &str| {
        let child = Command::new("ip")
            .args(["netns", "exec", &ns.name, "openssl", "s_server"])
            .args(extra)
            .args(["-accept", accept, "-cert"])
            .arg(&cert)
            .arg("-key")
            .arg(&key)
            .stdin(Stdio::piped()) // kept open: s_server stops at EOF on stdin
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        Server(child)
    };

    let tls_server = s_server(&[], "198.19.0.11:8443");
    let o = probe_until_listening(&ns, &spec(tls_sni(), "198.19.0.11:8443", 3000));
    eprintln!("openssl s_server (TLS): {o:?}");
    // OpenSSL 3 answers the empty key_share with a HelloRetryRequest.
    assert_eq!(alive(&o), "ServerHello");
    // And again: the server survived the probe's close.
    let (o, _) = ns.probe(&spec(tls_sni(), "198.19.0.11:8443", 3000));
    assert_eq!(alive(&o), "ServerHello");
    drop(tls_server);

    let dtls_server = s_server(&["-dtls1_2"], "198.19.0.11:8444");
    let o = probe_until_listening(&ns, &spec(ProbeKind::Dtls, "198.19.0.11:8444", 3000));
    eprintln!("openssl s_server -dtls1_2: {o:?}");
    assert!(
        matches!(alive(&o), "HelloVerifyRequest" | "ServerHello"),
        "{o:?}"
    );
    drop(dtls_server);
    let _ = std::fs::remove_dir_all(&dir);
}
