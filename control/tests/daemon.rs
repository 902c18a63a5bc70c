//! The real daemon over DPDK virtual devices (`net_pcap`): what it transmits must be what
//! `vpnlbd replay` produces for the same input, frame for frame (as multisets per port: worker
//! interleaving may reorder), with one worker and with two (software steering, hand-offs).
//!
//! Each run is a separate `vpnlbd` process (one EAL per process). Needs DPDK (scripts/setup.sh)
//! but no hugepages and no privileges.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use control::config;
use control::replay::{self, Input};
use dataplane::io::pcap::{PcapReader, PcapWriter};
use dataplane::wire::arp::ArpPacket;
use dataplane::wire::ethernet::{ethertype, EthernetFrame};
use vpnlb_perf::lab::{self, LabConfig};

/// Daemons busy-poll their cores: two at once on a 2-core machine starve each other's workers
/// (and overflow hand-off rings, correctly counted as drops). One at a time.
static ONE_DAEMON_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Holds [`ONE_DAEMON_AT_A_TIME`] (a test that failed while holding it does not poison it).
fn one_daemon_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    ONE_DAEMON_AT_A_TIME
        .lock()
        .unwrap_or_else(|e| e.into_inner())
}

fn tmpdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("vpnlb-daemon-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Frames of the control thread (ARP, neighbor discovery), which replay does not produce.
fn is_control_frame(f: &[u8]) -> bool {
    let Ok(eth) = EthernetFrame::new_checked(f) else {
        return false;
    };
    match eth.ethertype() {
        ethertype::ARP => true,
        ethertype::IPV6 => {
            let p = eth.payload();
            p.len() > 40 && p[6] == 58 && matches!(p[40], 135 | 136)
        }
        _ => false,
    }
}

/// `conf/lab.toml` for net_pcap devices: without the exception path (its namespace and TAPs
/// belong to the live lab) and without health checks (nothing answers probes in a capture).
fn lab_conf() -> String {
    conf_without_lab("lab.toml")
}

/// A shipped lab config (`conf/NAME`) stripped as [`lab_conf`] strips `conf/lab.toml` (with
/// its `[redirect]` section, which the exception path carries).
fn conf_without_lab(name: &str) -> String {
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../conf")
            .join(name),
    )
    .unwrap();
    let start = text.find("[exception]").unwrap();
    let end = start + text[start..].find("[affinity]").unwrap();
    let text = format!("{}{}", &text[..start], &text[end..]);
    let checks = text.find("[[service.health_check]]").unwrap();
    text[..checks].to_string()
}

fn frames(path: &Path) -> Vec<Vec<u8>> {
    let mut r = PcapReader::open(path).unwrap();
    let mut out = Vec::new();
    let mut buf = Vec::new();
    while r.next_packet(&mut buf).unwrap().is_some() {
        out.push(buf.clone());
    }
    out
}

fn multiset(frames: impl IntoIterator<Item = Vec<u8>>) -> BTreeMap<Vec<u8>, usize> {
    let mut m = BTreeMap::new();
    for f in frames {
        *m.entry(f).or_insert(0) += 1;
    }
    m
}

/// A `net_pcap` device string: the capture on RX queue 0 (other queues read an empty capture,
/// so frames for other workers' clients must be handed over), one TX capture per worker.
fn pcap_device(
    index: u8,
    input: &Path,
    empty: &Path,
    out: &Path,
    name: &str,
    workers: usize,
) -> String {
    let mut d = format!("net_pcap{index},rx_pcap={}", input.display());
    for _ in 1..workers {
        d.push_str(&format!(",rx_pcap={}", empty.display()));
    }
    for w in 0..workers {
        d.push_str(&format!(
            ",tx_pcap={}",
            out.join(format!("{name}-w{w}.pcap")).display()
        ));
    }
    d
}

struct Run {
    out: PathBuf,
    report: serde_json::Value,
}

fn run_daemon(dir: &Path, workers: usize) -> Run {
    run_daemon_with(dir, workers, &lab_conf())
}

fn run_daemon_with(dir: &Path, workers: usize, conf: &str) -> Run {
    let out = dir.join(format!("daemon-{workers}"));
    std::fs::create_dir_all(&out).unwrap();
    let empty = dir.join("empty.pcap");
    PcapWriter::create(&empty).unwrap().flush().unwrap();
    // CI machines have 2 cores: one worker runs beside the control thread's core 0, two
    // share it.
    let cores: Vec<String> = match workers {
        1 => vec!["1".into()],
        n => (0..n).map(|w| w.to_string()).collect(),
    };
    let conf = conf
        .replace(
            "net_af_packet0,iface=vlb-cl0",
            &pcap_device(
                0,
                &dir.join("in/client.pcap"),
                &empty,
                &out,
                "client",
                workers,
            ),
        )
        .replace(
            "net_af_packet1,iface=vlb-bk0",
            &pcap_device(
                1,
                &dir.join("in/backend.pcap"),
                &empty,
                &out,
                "backend",
                workers,
            ),
        )
        .replace(
            "workers = [1]",
            &format!("workers = [{}]", cores.join(", ")),
        )
        .replace(
            "/run/vpnlb/vpnlbd.sock",
            &out.join("vpnlbd.sock").display().to_string(),
        );
    let conf_path = out.join("daemon.toml");
    std::fs::write(&conf_path, conf).unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_vpnlbd"))
        .arg("--config")
        .arg(&conf_path)
        .args(["--stop-after-idle-ms", "700", "--run-for-s", "60"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "vpnlbd failed:\n{stderr}");
    let report: serde_json::Value =
        serde_json::from_slice(&output.stdout).unwrap_or_else(|e| panic!("report: {e}\n{stderr}"));
    Run { out, report }
}

fn replay_outputs(dir: &Path) -> (Vec<Vec<u8>>, Vec<Vec<u8>>) {
    let spec = config::load_str(&lab_conf(), "conf/lab.toml").unwrap();
    let inputs = [
        Input {
            port: "client".into(),
            path: dir.join("in/client.pcap"),
        },
        Input {
            port: "backend".into(),
            path: dir.join("in/backend.pcap"),
        },
    ];
    let out = dir.join("replay");
    replay::run(spec, &inputs, &out, false).unwrap();
    (
        frames(&out.join("client.pcap")),
        frames(&out.join("backend.pcap")),
    )
}

fn check_against_replay(workers: usize) {
    let _one = one_daemon_at_a_time();
    let dir = tmpdir(&format!("w{workers}"));
    let cfg = LabConfig {
        clients: 40,
        ipv6_clients: 8,
        tls_clients: 8,
        ..LabConfig::default()
    };
    let gateway_for = lab::maglev_gateway_for().unwrap();
    let caps = lab::generate_into(&dir.join("in"), &cfg, &gateway_for).unwrap();
    let (replay_client, replay_backend) = replay_outputs(&dir);
    assert_eq!(replay_backend.len(), caps.client_port.len());

    let run = run_daemon(&dir, workers);
    let gather = |name: &str| -> Vec<Vec<u8>> {
        (0..workers)
            .flat_map(|w| frames(&run.out.join(format!("{name}-w{w}.pcap"))))
            .collect()
    };
    let (control_frames, daemon_client): (Vec<_>, Vec<_>) = gather("client")
        .into_iter()
        .partition(|f| is_control_frame(f));
    let daemon_backend: Vec<_> = gather("backend")
        .into_iter()
        .filter(|f| !is_control_frame(f))
        .collect();
    assert_eq!(
        daemon_backend.len(),
        replay_backend.len(),
        "backend port frame count; io: {}",
        run.report["io"]
    );
    assert_eq!(
        daemon_client.len(),
        replay_client.len(),
        "client port frame count; io: {}",
        run.report["io"]
    );
    assert!(
        multiset(daemon_backend) == multiset(replay_backend),
        "backend port: the daemon's frames differ from replay's"
    );
    assert!(
        multiset(daemon_client) == multiset(replay_client),
        "client port: the daemon's frames differ from replay's"
    );

    let c = &run.report["counters"];
    assert_eq!(c["rx_packets"], c["tx_packets"]);
    assert!(
        c["drops"].as_object().unwrap().values().all(|v| v == 0),
        "{c}"
    );
    let io = &run.report["io"];
    if workers > 1 {
        // Everything arrived on worker 0's queues; the other worker's clients were handed over.
        assert!(io["handoff_out"].as_u64().unwrap() > 0, "{io}");
        assert_eq!(io["handoff_out"], io["handoff_in"]);
        let w1 = &run.report["workers"][1]["counters"]["rx_packets"];
        assert!(w1.as_u64().unwrap() > 0, "worker 1 processed its clients");
        assert!(run.report["ports"][0]["steering"]
            .as_str()
            .unwrap()
            .starts_with("software hand-off"));
    }
    assert_eq!(io["handoff_dropped"], 0);
    assert_eq!(io["tx_dropped"], 0);

    // The control thread announced the VIP on the client port (gratuitous ARP).
    let garp_for_vip = control_frames.iter().any(|f| {
        let eth = EthernetFrame::new_checked(&f[..]).unwrap();
        eth.ethertype() == ethertype::ARP
            && eth.dst().is_broadcast()
            && ArpPacket::new_checked(eth.payload()).is_ok_and(|a| {
                a.sender_ip() == testkit::lab::VIP_V4 && a.target_ip() == a.sender_ip()
            })
    });
    assert!(garp_for_vip, "no gratuitous ARP for the VIP");
}

#[test]
fn one_worker_transmits_what_replay_produces() {
    check_against_replay(1);
}

#[test]
fn two_workers_transmit_what_replay_produces() {
    check_against_replay(2);
}

#[test]
fn a_bad_config_is_refused_before_any_device_is_touched() {
    let _one = one_daemon_at_a_time();
    let dir = tmpdir("bad");
    let conf = lab_conf().replace("weight = 1", "weight = 99999");
    let p = dir.join("bad.toml");
    std::fs::write(&p, conf).unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_vpnlbd"))
        .arg("--config")
        .arg(&p)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("bad.toml") && stderr.contains("weight"),
        "{stderr}"
    );
    assert!(!stderr.contains("EAL"), "the EAL must not start: {stderr}");
}

/// Waits for the daemon's control socket and sends one request line.
fn ask(sock: &Path, line: &str) -> control::ctlsock::Reply {
    use control::ctlsock::query;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    loop {
        match query(sock, line, std::time::Duration::from_secs(5)) {
            Ok(r) => return r,
            Err(e) if std::time::Instant::now() > deadline => panic!("{line}: {e}"),
            Err(_) => std::thread::sleep(std::time::Duration::from_millis(50)),
        }
    }
}

#[test]
fn the_control_socket_shows_and_steers_a_running_daemon() {
    use control::ctlsock::Reply;
    let _one = one_daemon_at_a_time();
    let dir = tmpdir("ctl");
    let cfg = LabConfig {
        clients: 12,
        ipv6_clients: 2,
        tls_clients: 2,
        ..LabConfig::default()
    };
    let gateway_for = lab::maglev_gateway_for().unwrap();
    let caps = lab::generate_into(&dir.join("in"), &cfg, &gateway_for).unwrap();
    let out = dir.join("run");
    std::fs::create_dir_all(&out).unwrap();
    let empty = dir.join("empty.pcap");
    PcapWriter::create(&empty).unwrap().flush().unwrap();
    let sock = out.join("vpnlbd.sock");
    let conf = lab_conf()
        .replace(
            "net_af_packet0,iface=vlb-cl0",
            &pcap_device(0, &dir.join("in/client.pcap"), &empty, &out, "client", 1),
        )
        .replace(
            "net_af_packet1,iface=vlb-bk0",
            &pcap_device(1, &dir.join("in/backend.pcap"), &empty, &out, "backend", 1),
        )
        .replace("/run/vpnlb/vpnlbd.sock", &sock.display().to_string());
    // And a read-only socket beside it.
    let ro = out.join("vpnlbd-ro.sock");
    let sock_line = format!("socket = \"{}\"", sock.display());
    let conf = conf.replace(
        &sock_line,
        &format!("{sock_line}\nreadonly_socket = \"{}\"", ro.display()),
    );
    let conf_path = out.join("daemon.toml");
    std::fs::write(&conf_path, conf).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_vpnlbd"))
        .arg("--config")
        .arg(&conf_path)
        .args(["--run-for-s", "30"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();

    // Wait until the capture went through (counters are published every 100 ms).
    let total = (caps.client_port.len() + caps.backend_port.len()) as u64;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let Reply::Ok(stats) = ask(&sock, "show stats") else {
            panic!("show stats failed")
        };
        if stats["counters"]["rx_packets"].as_u64() == Some(total) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "traffic did not go through: {stats}"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let Reply::Ok(stats) = ask(&sock, "show stats") else {
        panic!("show stats")
    };
    let lat = &stats["burst_latency_us"];
    assert!(lat["bursts"].as_u64().unwrap() > 0, "{stats}");
    let (p50, p99, max) = (
        lat["p50"].as_f64().unwrap(),
        lat["p99"].as_f64().unwrap(),
        lat["max"].as_f64().unwrap(),
    );
    assert!(0.0 < p50 && p50 <= p99 && p99 <= max, "{lat}");
    let u = stats["utilisation"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&u), "{u}");
    assert_eq!(
        stats["affinity_occupancy"]["confirmed"].as_u64().unwrap()
            + stats["affinity_occupancy"]["unconfirmed"].as_u64().unwrap(),
        caps.clients.len() as u64
    );
    let Reply::Ok(gws) = ask(&sock, "show gateways") else {
        panic!("show gateways")
    };
    let gws = gws.as_array().unwrap().clone();
    assert_eq!(gws.len(), 3);
    let clients: u64 = gws.iter().map(|g| g["clients"].as_u64().unwrap()).sum();
    assert_eq!(clients, caps.clients.len() as u64, "{gws:?}");
    assert_eq!(gws[1]["state"], "up");

    // Drain gw2: the next snapshot says so.
    assert!(matches!(ask(&sock, "gateway gw2 drain"), Reply::Ok(_)));
    let Reply::Ok(gws) = ask(&sock, "show gateways") else {
        panic!("show gateways")
    };
    assert_eq!(gws[1]["state"], "draining");
    assert!(matches!(ask(&sock, "gateway gw9 drain"), Reply::Error(e) if e.contains("gw9")));

    // Affinity: one client, then flush it.
    let one = caps.clients[0].addr;
    let Reply::Ok(rows) = ask(&sock, &format!("show affinity {one}")) else {
        panic!("show affinity")
    };
    let rows = rows.as_array().unwrap().clone();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["gateway"], caps.clients[0].gateway_name());
    let Reply::Ok(all) = ask(&sock, "show affinity") else {
        panic!("show affinity")
    };
    assert_eq!(all.as_array().unwrap().len(), caps.clients.len());
    let Reply::Ok(flushed) = ask(&sock, &format!("affinity flush {one}")) else {
        panic!("affinity flush")
    };
    assert_eq!(flushed["removed"], 1);

    // Prometheus and errors.
    let Reply::Text(prom) = ask(&sock, "stats prometheus") else {
        panic!("stats prometheus")
    };
    assert!(
        prom.contains(&format!("vpnlb_rx_packets_total {total}")),
        "{prom}"
    );
    assert!(
        prom.contains("vpnlb_gateway_up{service=\"vpn\",gateway=\"gw2\"} 0"),
        "{prom}"
    );
    assert!(matches!(ask(&sock, "show nonsense"), Reply::Error(_)));
    let Reply::Ok(_) = ask(&sock, "show neighbors") else {
        panic!("show neighbors")
    };
    let Reply::Ok(health) = ask(&sock, "show health") else {
        panic!("show health")
    };
    assert_eq!(health, serde_json::json!([]), "no checks configured");
    assert_eq!(gws[1]["health"], "unchecked");
    let Reply::Ok(stats) = ask(&sock, "show stats") else {
        panic!("show stats")
    };
    assert!(stats["exception"].is_null(), "no exception path configured");

    // The read-only socket answers reads and refuses writes, which are counted; both sockets
    // go on serving.
    let Reply::Ok(ro_gws) = ask(&ro, "show gateways") else {
        panic!("show gateways on the read-only socket")
    };
    assert_eq!(
        ro_gws.as_array().map(Vec::len),
        gws.as_array().map(Vec::len)
    );
    let Reply::Error(refused) = ask(&ro, "gateway gw1 drain") else {
        panic!("a write answered on the read-only socket")
    };
    assert!(refused.contains("read-only socket"), "{refused}");
    let Reply::Ok(stats) = ask(&sock, "show stats") else {
        panic!("show stats")
    };
    assert_eq!(
        stats["control_socket"]["read_only"]["refused_writes"], 1,
        "{stats}"
    );
    assert_eq!(
        stats["control_socket"]["read_write"]["refused_writes"], 0,
        "{stats}"
    );
    let Reply::Text(prom) = ask(&ro, "stats prometheus") else {
        panic!("stats prometheus on the read-only socket")
    };
    assert!(
        prom.contains("vpnlb_control_refused_writes_total{socket=\"read-only\"} 1"),
        "{prom}"
    );
    assert!(
        prom.contains("vpnlb_control_idle_disconnects_total{socket=\"read-write\"} 0"),
        "{prom}"
    );

    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status();
    let status = child.wait().unwrap();
    assert!(status.success(), "vpnlbd exit: {status}");
    assert!(!sock.exists(), "the socket is removed on exit");
    assert!(!ro.exists(), "the read-only socket is removed on exit");
}

#[test]
fn reload_under_traffic_keeps_every_client_on_its_gateway() {
    use control::ctlsock::Reply;
    let _one = one_daemon_at_a_time();
    let dir = tmpdir("reload");
    let cfg = LabConfig {
        clients: 20,
        ipv6_clients: 4,
        tls_clients: 4,
        ..LabConfig::default()
    };
    let gateway_for = lab::maglev_gateway_for().unwrap();
    let caps = lab::generate_into(&dir.join("in"), &cfg, &gateway_for).unwrap();
    let out = dir.join("run");
    std::fs::create_dir_all(&out).unwrap();
    let sock = out.join("vpnlbd.sock");
    // Clients send forever (infinite_rx); what the appliance transmits is dropped (no tx_pcap).
    let conf = lab_conf()
        .replace(
            "net_af_packet0,iface=vlb-cl0",
            &format!(
                "net_pcap0,rx_pcap={},infinite_rx=1",
                dir.join("in/client.pcap").display()
            ),
        )
        .replace(
            "net_af_packet1,iface=vlb-bk0",
            &format!(
                "net_pcap1,rx_pcap={}",
                dir.join("in/backend.pcap").display()
            ),
        )
        .replace(
            "socket = \"/run/vpnlb/vpnlbd.sock\"",
            &format!(
                "socket = \"{}\"\nstate_file = \"{}\"\nfault_injection = true",
                sock.display(),
                out.join("state.json").display()
            ),
        );
    let conf_path = out.join("daemon.toml");
    std::fs::write(&conf_path, &conf).unwrap();
    // systemd's side of the notify protocol: a datagram socket the daemon reports to.
    let notify_path = out.join("notify.sock");
    let notify = std::os::unix::net::UnixDatagram::bind(&notify_path).unwrap();
    notify.set_nonblocking(true).unwrap();
    let start = || {
        Command::new(env!("CARGO_BIN_EXE_vpnlbd"))
            .arg("--config")
            .arg(&conf_path)
            .args(["--run-for-s", "60"])
            .env("NOTIFY_SOCKET", &notify_path)
            .env("WATCHDOG_USEC", "400000")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap()
    };
    let mut child = start();
    let affinity = |sock: &Path| -> BTreeMap<String, String> {
        let Reply::Ok(rows) = ask(sock, "show affinity") else {
            panic!("show affinity")
        };
        rows.as_array()
            .unwrap()
            .iter()
            .map(|r| {
                (
                    r["client"].as_str().unwrap().to_string(),
                    r["gateway"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let before = loop {
        let a = affinity(&sock);
        if a.len() == caps.clients.len() {
            break a;
        }
        assert!(std::time::Instant::now() < deadline, "clients: {}", a.len());
        std::thread::sleep(std::time::Duration::from_millis(100));
    };

    // An invalid file is refused and nothing changes.
    std::fs::write(
        &conf_path,
        conf.replacen("weight = 1", "weight = \"heavy\"", 1),
    )
    .unwrap();
    assert!(matches!(ask(&sock, "reload"), Reply::Error(e) if e.contains("weight")));
    // A port change needs a restart.
    std::fs::write(
        &conf_path,
        conf.replace("net_pcap1,", "net_pcap1,infinite_rx=0,"),
    )
    .unwrap();
    assert!(matches!(ask(&sock, "reload"), Reply::Error(e) if e.contains("restart")));

    // A stalled worker cannot prepare: the reload is refused and no worker runs it, even the
    // one that prepared; once the worker is back the same file is taken.
    let stalled = conf.replacen("weight = 1", "weight = 9", 1);
    std::fs::write(&conf_path, &stalled).unwrap();
    assert!(matches!(
        ask(&sock, "debug worker 0 stall 1500"),
        Reply::Ok(_)
    ));
    std::thread::sleep(std::time::Duration::from_millis(50));
    let refused_at = std::time::Instant::now();
    match ask(&sock, "reload") {
        Reply::Error(e) => assert!(e.contains("did not prepare"), "{e}"),
        r => panic!("a reload with a stalled worker: {r:?}"),
    }
    // The control thread did not wait for the worker beyond the prepare timeout.
    assert!(refused_at.elapsed() < std::time::Duration::from_millis(1200));
    let Reply::Ok(gws) = ask(&sock, "show gateways") else {
        panic!("show gateways")
    };
    assert_eq!(gws[0]["weight"], 1, "refused means not applied");
    std::thread::sleep(std::time::Duration::from_millis(1600));
    let r = ask(&sock, "reload");
    assert!(matches!(r, Reply::Ok(_)), "{r:?}");
    assert_eq!(affinity(&sock), before, "no client changed gateway");
    std::fs::write(&conf_path, &conf).unwrap();
    let r = ask(&sock, "reload");
    assert!(matches!(r, Reply::Ok(_)), "{r:?}");

    // The operator drains gw2 and weighs gw1 and gw3 at run time.
    for cmd in [
        "gateway gw2 drain",
        "gateway gw1 weight 5",
        "gateway gw3 weight 3",
    ] {
        assert!(matches!(ask(&sock, cmd), Reply::Ok(_)), "{cmd}");
    }

    // gw1 weighs 2 now, and a new gw4 comes FIRST: every gateway id moves.
    let gw4 = "[[service.gateway]]\nname = \"gw4\"\naddress = [\"198.19.0.14\"]\nweight = 1\n\n";
    let changed = conf.replacen("weight = 1", "weight = 2", 1).replacen(
        "[[service.gateway]]\n",
        &format!("{gw4}[[service.gateway]]\n"),
        1,
    );
    std::fs::write(&conf_path, changed).unwrap();
    let Reply::Ok(r) = ask(&sock, "reload") else {
        panic!("reload failed")
    };
    assert_eq!(r["gateways"], 4, "{r}");
    assert_eq!(r["affinity_removed"], 0, "{r}");
    assert_eq!(r["affinity_moved"], caps.clients.len(), "{r}");
    let Reply::Ok(gws) = ask(&sock, "show gateways") else {
        panic!("show gateways")
    };
    assert_eq!(gws[0]["gateway"], "gw4");
    assert_eq!(gws[1]["gateway"], "gw1");
    // The file changed gw1's weight: the file wins over the runtime 5, and the reply says so.
    assert_eq!(gws[1]["weight"], 2);
    assert_eq!(gws[1]["weight_source"], "config");
    assert_eq!(r["runtime_values_superseded"][0]["gateway"], "gw1", "{r}");
    // What the file left alone stays as the operator set it.
    let gateway = |sock: &Path, name: &str| -> serde_json::Value {
        let Reply::Ok(gws) = ask(sock, "show gateways") else {
            panic!("show gateways")
        };
        let rows = gws.as_array().unwrap().clone();
        rows.into_iter().find(|g| g["gateway"] == name).unwrap()
    };
    let gw2 = gateway(&sock, "gw2");
    assert_eq!(gw2["admin_state"], "draining", "{gw2}");
    assert_eq!(gw2["admin_state_source"], "vpnlbctl");
    let gw3 = gateway(&sock, "gw3");
    assert_eq!(gw3["weight"], 3);
    assert_eq!(gw3["weight_source"], "vpnlbctl");
    // Traffic kept flowing; every client is where it was.
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert_eq!(affinity(&sock), before, "no client changed gateway");
    assert_eq!(total_drops(&sock), 0);

    // SIGHUP reloads (it used to end the daemon), under the same traffic, losing nothing.
    let changed =
        std::fs::read_to_string(&conf_path)
            .unwrap()
            .replacen("weight = 1", "weight = 7", 1);
    std::fs::write(&conf_path, changed).unwrap();
    // Up to here: READY=1 once, a status line with it, and the watchdog's pings (every 200 ms);
    // the first reloads came as RELOADING=1 ... READY=1.
    let told = notifications(&notify);
    assert!(told[0].starts_with("READY=1\nSTATUS="), "{told:?}");
    assert!(
        told.iter().filter(|m| *m == "WATCHDOG=1").count() >= 2,
        "{told:?}"
    );
    assert!(
        told.iter()
            .any(|m| m.starts_with("RELOADING=1\nMONOTONIC_USEC=")),
        "{told:?}"
    );
    kill(&child, "-HUP");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while gateway(&sock, "gw4")["weight"] != 7 {
        assert!(
            std::time::Instant::now() < deadline,
            "SIGHUP did not reload"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(
        child.try_wait().unwrap().is_none(),
        "SIGHUP ended the daemon"
    );
    let told = notifications(&notify);
    let reloading = told.iter().position(|m| m.starts_with("RELOADING=1"));
    let ready = told.iter().rposition(|m| m.starts_with("READY=1"));
    assert!(
        reloading.is_some() && ready > reloading,
        "SIGHUP: RELOADING=1 then READY=1: {told:?}"
    );
    assert_eq!(affinity(&sock), before, "no client changed gateway");
    assert_eq!(total_drops(&sock), 0);
    let Reply::Ok(ports) = ask(&sock, "show ports") else {
        panic!("show ports")
    };
    for p in ports.as_array().unwrap() {
        assert_eq!(p["rx_missed"], 0, "{p}");
    }

    // A restart: the operator's values come back from the state file.
    kill(&child, "-TERM");
    assert!(child.wait().unwrap().success());
    let mut child = start();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !sock.exists() || !matches!(ask(&sock, "ping"), Reply::Ok(_)) {
        assert!(std::time::Instant::now() < deadline, "restart");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let gw2 = gateway(&sock, "gw2");
    assert_eq!(gw2["admin_state"], "draining", "{gw2}");
    assert_eq!(gw2["admin_state_source"], "state-file");
    let gw3 = gateway(&sock, "gw3");
    assert_eq!(
        (gw3["weight"].as_u64(), gw3["weight_source"].as_str()),
        (Some(3), Some("state-file"))
    );
    kill(&child, "-TERM");
    assert!(child.wait().unwrap().success());
}

/// What the daemon told systemd since the last call.
fn notifications(socket: &std::os::unix::net::UnixDatagram) -> Vec<String> {
    let mut buf = [0u8; 1024];
    let mut got = Vec::new();
    while let Ok(n) = socket.recv(&mut buf) {
        got.push(String::from_utf8_lossy(&buf[..n]).into_owned());
    }
    got
}

fn kill(child: &std::process::Child, signal: &str) {
    let _ = Command::new("kill")
        .arg(signal)
        .arg(child.id().to_string())
        .status();
}

/// Every drop the workers counted.
fn total_drops(sock: &Path) -> u64 {
    let control::ctlsock::Reply::Ok(drops) = ask(sock, "show drops") else {
        panic!("show drops")
    };
    drops
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["packets"].as_u64().unwrap())
        .sum()
}

/// UDP from a client behind the lab's router, to `dst` on `port` (both ports the same).
fn udp_from_router(
    src: std::net::Ipv4Addr,
    dst: std::net::Ipv4Addr,
    port: u16,
    payload: &[u8],
) -> Vec<u8> {
    use testkit::{lab as labnet, Ipv4Opts, L2, L4};
    testkit::ipv4(
        &L2::new(labnet::ROUTER_MAC, labnet::CLIENT_PORT_MAC),
        src,
        dst,
        &Ipv4Opts::default(),
        &L4::Udp {
            src: port,
            dst: port,
            payload,
        },
    )
}

/// Writes `frames` as `dir/in/client.pcap` (1 µs apart) and an empty `dir/in/backend.pcap`.
fn write_client_input(dir: &Path, frames: &[Vec<u8>]) {
    std::fs::create_dir_all(dir.join("in")).unwrap();
    let mut w = PcapWriter::create(dir.join("in/client.pcap")).unwrap();
    for (n, f) in frames.iter().enumerate() {
        w.write_packet(1_700_000_000_000_000_000 + n as u64 * 1000, f)
            .unwrap();
    }
    w.flush().unwrap();
    PcapWriter::create(dir.join("in/backend.pcap"))
        .unwrap()
        .flush()
        .unwrap();
}

/// Redirect mode in the real daemon (mbufs cut to the answer's length): 30 redirect-capable
/// IKE_SA_INITs are answered on the client port exactly as replay answers them, 10 without
/// REDIRECT_SUPPORTED go to their gateways in NAT mode, and NAT-T from the redirected clients to
/// gateways' own addresses is routed.
#[test]
fn redirect_mode_answers_and_routes_as_replay_does() {
    use dataplane::wire::ike::{exchange, flags, notify_type};
    use testkit::lab as labnet;
    let _one = one_daemon_at_a_time();
    let dir = tmpdir("redirect");
    // Redirects decay on the daemon's clock, not replay's: with a day's half-life the loads
    // of a 2 s run equal replay's to the thousandth of a tunnel they are kept in.
    let conf = conf_without_lab("lab-redirect.toml").replacen(
        "[affinity]",
        "[redirect]\nredirect_half_life = \"1d\"\n\n[affinity]",
        1,
    );
    let spec = config::load_str(&conf, "conf/lab-redirect.toml").unwrap();
    let client = |i: u32| std::net::Ipv4Addr::from(u32::from_be_bytes([198, 18, 80, 0]) + i);
    let mut input = Vec::new();
    for i in 0..40u32 {
        let notifies: &[(u16, &[u8])] = if i < 30 {
            &[(notify_type::REDIRECT_SUPPORTED, &[])]
        } else {
            &[]
        };
        let ike = testkit::ike_sa_init_request(u64::from(i) + 1, &[i as u8; 32], 19, 64, notifies);
        input.push(udp_from_router(client(i), labnet::VIP_V4, 500, &ike));
    }
    let natt = testkit::non_esp_marker(&testkit::ike_message(
        1,
        2,
        exchange::IKE_AUTH,
        flags::INITIATOR,
        1,
        &[0; 64],
    ));
    for i in 0..30u32 {
        input.push(udp_from_router(
            client(i),
            labnet::GATEWAYS_V4[(i % 3) as usize],
            4500,
            &natt,
        ));
    }
    write_client_input(&dir, &input);
    let inputs = [Input {
        port: "client".into(),
        path: dir.join("in/client.pcap"),
    }];
    let replayed = replay::run(spec, &inputs, &dir.join("replay"), false).unwrap();
    let replay_client = frames(&dir.join("replay/client.pcap"));
    let replay_backend = frames(&dir.join("replay/backend.pcap"));
    assert_eq!(
        replay_client.len(),
        30,
        "one answer per redirect-capable request"
    );
    assert_eq!(replay_backend.len(), 10 + 30);
    let redirects: u64 = replayed.counters.gateways[0]
        .iter()
        .map(|g| g.redirects)
        .sum();
    assert_eq!(redirects, 30);

    let run = run_daemon_with(&dir, 1, &conf);
    let daemon_client: Vec<_> = frames(&run.out.join("client-w0.pcap"))
        .into_iter()
        .filter(|f| !is_control_frame(f))
        .collect();
    let daemon_backend: Vec<_> = frames(&run.out.join("backend-w0.pcap"))
        .into_iter()
        .filter(|f| !is_control_frame(f))
        .collect();
    assert!(
        multiset(daemon_client) == multiset(replay_client),
        "client port: the daemon's answers differ from replay's"
    );
    assert!(
        multiset(daemon_backend) == multiset(replay_backend),
        "backend port: the daemon's frames differ from replay's"
    );
    let c = &run.report["counters"];
    assert_eq!(c["rx_packets"], c["tx_packets"], "{c}");
    let routed: u64 = c["gateways"][0]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["routed_to_gateway_packets"].as_u64().unwrap())
        .sum();
    assert_eq!(routed, 30);
}

/// Two workers redirect at once (the second gets its clients by software hand-off, and answers
/// them from its own TX queue): every one of 60 requests is answered with a valid REDIRECT that
/// echoes its own nonce, and the 60 spread over the gateways within 2 of each other.
#[test]
fn two_workers_redirect_every_request() {
    use dataplane::wire::ike::{notify_type, IkeHeader};
    use dataplane::wire::ipv4::Ipv4Packet;
    use dataplane::wire::udp::UdpPacket;
    use testkit::lab as labnet;
    let _one = one_daemon_at_a_time();
    let dir = tmpdir("redirect-w2");
    let conf = conf_without_lab("lab-redirect.toml");
    let client = |i: u32| std::net::Ipv4Addr::from(u32::from_be_bytes([198, 18, 81, 0]) + i);
    let nonce = |i: u32| [i as u8 ^ 0x5a; 32];
    let requests: Vec<Vec<u8>> = (0..60u32)
        .map(|i| {
            let ike = testkit::ike_sa_init_request(
                u64::from(i) + 100,
                &nonce(i),
                19,
                64,
                &[(notify_type::REDIRECT_SUPPORTED, &[])],
            );
            udp_from_router(client(i), labnet::VIP_V4, 500, &ike)
        })
        .collect();
    write_client_input(&dir, &requests);
    let run = run_daemon_with(&dir, 2, &conf);
    let answers: Vec<_> = (0..2)
        .flat_map(|w| frames(&run.out.join(format!("client-w{w}.pcap"))))
        .filter(|f| !is_control_frame(f))
        .collect();
    assert_eq!(answers.len(), 60, "{}", run.report["io"]);
    let mut per_gateway = [0u32; 3];
    for a in &answers {
        let eth = EthernetFrame::new_checked(&a[..]).unwrap();
        let ip = Ipv4Packet::new_checked(eth.payload()).unwrap();
        let udp = UdpPacket::new_checked(ip.payload()).unwrap();
        assert!(udp.verify_checksum_v4(ip.src_addr(), ip.dst_addr()));
        let i = u32::from(ip.dst_addr()) - u32::from(client(0));
        let ike = IkeHeader::new_checked(udp.payload(), udp.payload().len()).unwrap();
        let n = ike.find_notify(notify_type::REDIRECT).expect("N(REDIRECT)");
        let data = n.data();
        assert_eq!((data[0], data[1]), (1, 4), "an IPv4 gateway identity");
        assert_eq!(&data[6..], &nonce(i), "the request's nonce");
        let gw = std::net::Ipv4Addr::new(data[2], data[3], data[4], data[5]);
        per_gateway[labnet::GATEWAYS_V4.iter().position(|g| *g == gw).unwrap()] += 1;
    }
    let io = &run.report["io"];
    assert!(io["handoff_out"].as_u64().unwrap() > 0, "{io}");
    let (min, max) = (
        per_gateway.iter().min().unwrap(),
        per_gateway.iter().max().unwrap(),
    );
    assert!(max - min <= 2, "spread {per_gateway:?}");
}

/// Issue 15, finding 3, in the real daemon: a flood at the appliance's own client-side
/// address of what used to be urgent by its bytes alone — VRRP from the Internet (TTL 64, to
/// the group and to the address), routed neighbor advertisements (hop limit 64), and UDP
/// "from" a gateway's address — is refused by rule or policed with ordinary traffic: none of it
/// reaches the urgent ring, whose budgets are left to the real neighbors, adverts and health
/// answers.
#[test]
fn forged_urgent_frames_from_the_client_side_are_refused_or_policed() {
    use dataplane::exception::{ExceptionClass, Suspect};
    use std::net::{Ipv4Addr, Ipv6Addr};
    use testkit::{lab as labnet, Ipv4Opts, L2, L4};
    let _one = one_daemon_at_a_time();
    let dir = tmpdir("forged-urgent");
    let own = Ipv4Addr::new(198, 18, 0, 1);
    let attacker = Ipv4Addr::new(203, 0, 113, 9);
    let l2 = L2::new(labnet::ROUTER_MAC, labnet::CLIENT_PORT_MAC);
    let vrrp = |dst: Ipv4Addr| {
        let l2 = if dst.is_multicast() {
            L2::new(
                labnet::ROUTER_MAC,
                dataplane::wire::ethernet::EthernetAddress([1, 0, 0x5e, 0, 0, 18]),
            )
        } else {
            l2
        };
        testkit::ipv4(
            &l2,
            attacker,
            dst,
            &Ipv4Opts::default(),
            &L4::Raw {
                protocol: 112,
                payload: &[0x31, 51, 255, 1, 0, 10, 0, 0, 198, 18, 0, 100],
            },
        )
    };
    let na = testkit::ipv6(
        &l2,
        &Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 9),
        &Ipv6Addr::new(0x2001, 2, 0, 1, 0, 0, 0, 1),
        64,
        &[],
        &L4::Icmpv6 {
            msg_type: 136,
            code: 0,
            rest: 0x2000_0000,
            payload: &[0x20, 1, 0, 2, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
        },
    );
    let from_gateway = udp_from_router(labnet::GATEWAYS_V4[0], own, 500, b"forged health answer");
    let mut input = Vec::new();
    for _ in 0..1000 {
        input.push(vrrp(Ipv4Addr::new(224, 0, 0, 18)));
        input.push(vrrp(own));
        input.push(na.clone());
    }
    for _ in 0..20_000 {
        input.push(from_gateway.clone());
    }
    write_client_input(&dir, &input);
    let run = run_daemon_with(&dir, 1, &lab_conf());
    let io = &run.report["io"];
    let suspect = |r: Suspect| io["exception_suspect"][r as usize].as_u64().unwrap();
    let policed = |c: ExceptionClass| io["exception_policed"][c as usize].as_u64().unwrap();
    assert_eq!(suspect(Suspect::VrrpTtl), 2000, "{io}");
    assert_eq!(suspect(Suspect::NdHopLimit), 1000, "{io}");
    assert_eq!(suspect(Suspect::GatewayOffBackend), 20_000, "{io}");
    // The forged gateway answers went with ordinary traffic, over its budget: policed there.
    assert!(policed(ExceptionClass::Other) > 0, "{io}");
    for c in ExceptionClass::ALL
        .iter()
        .filter(|c| **c != ExceptionClass::Other)
    {
        assert_eq!(policed(*c), 0, "{}: {io}", c.name());
    }
    assert_eq!(io["to_control_urgent_dropped"], 0, "{io}");
}

/// The egress MTU in the real daemon: a datagram without DF over the backend port's MTU leaves
/// as fragments built in mbufs from the port's pool, one with DF and an IPv6 one come back as
/// ICMP errors, all exactly as replay writes them.
#[test]
fn frames_over_the_egress_mtu_leave_as_replay_writes_them() {
    use testkit::{lab as labnet, Ipv4Opts, L2, L4};
    let _one = one_daemon_at_a_time();
    let dir = tmpdir("mtu");
    let conf = lab_conf().replacen(
        "mac = \"02:00:00:00:02:01\"",
        "mac = \"02:00:00:00:02:01\"\nmtu = 1400",
        1,
    );
    let spec = config::load_str(&conf, "conf/lab.toml").unwrap();
    let l2 = L2::new(labnet::ROUTER_MAC, labnet::CLIENT_PORT_MAC);
    // IPv4 packets of 1450 bytes (IPv6 1470): over the backend's 1400, within 1500.
    let ike = |ke: usize| testkit::ike_sa_init_request(7, &[1; 32], 19, ke, &[]);
    let ike = ike(1450 - 28 - ike(0).len());
    let udp = L4::Udp {
        src: 500,
        dst: 500,
        payload: &ike,
    };
    let v4 = |last: u8, dont_frag: bool| {
        let opts = Ipv4Opts {
            dont_frag,
            ..Ipv4Opts::default()
        };
        let c = std::net::Ipv4Addr::new(198, 18, 81, last);
        testkit::ipv4(&l2, c, labnet::VIP_V4, &opts, &udp)
    };
    let c6: std::net::Ipv6Addr = "2001:2:0:64::81".parse().unwrap();
    let input = vec![
        v4(1, false),
        v4(2, true),
        testkit::ipv6(&l2, &c6, &labnet::VIP_V6, 64, &[], &udp),
    ];
    assert!(input
        .iter()
        .all(|f| f.len() > 14 + 1400 && f.len() <= 14 + 1500));
    write_client_input(&dir, &input);
    let inputs = [Input {
        port: "client".into(),
        path: dir.join("in/client.pcap"),
    }];
    let replayed = replay::run(spec, &inputs, &dir.join("replay"), false).unwrap();
    assert_eq!(replayed.counters.mtu.fragments, 2);
    let replay_client = frames(&dir.join("replay/client.pcap"));
    let replay_backend = frames(&dir.join("replay/backend.pcap"));
    assert_eq!((replay_client.len(), replay_backend.len()), (2, 2));

    let run = run_daemon_with(&dir, 1, &conf);
    let keep = |port: &str| -> Vec<Vec<u8>> {
        frames(&run.out.join(format!("{port}-w0.pcap")))
            .into_iter()
            .filter(|f| !is_control_frame(f))
            .collect()
    };
    assert!(
        multiset(keep("client")) == multiset(replay_client),
        "client port: the daemon's ICMP errors differ from replay's"
    );
    assert!(
        multiset(keep("backend")) == multiset(replay_backend),
        "backend port: the daemon's fragments differ from replay's"
    );
    let c = &run.report["counters"]["mtu"];
    assert_eq!(c["fragmented"], 1, "{c}");
    assert_eq!(c["frag_needed"], 1, "{c}");
    assert_eq!(c["packet_too_big"], 1, "{c}");
}

/// Without static entries for the gateways, a client's first IKE_SA_INIT waits for its
/// gateway's MAC instead of being dropped; the gateways' ARP requests for the appliance's
/// backend address (answered by the worker) teach the control thread their MACs, and the held
/// frame leaves, addressed to its gateway.
#[test]
fn the_first_packet_to_an_unresolved_gateway_leaves_once_the_gateway_is_learned() {
    use std::net::Ipv4Addr;
    use testkit::{lab as labnet, L2};
    let _one = one_daemon_at_a_time();
    let dir = tmpdir("first-packet");
    let mut conf = lab_conf();
    for (v4, mac) in [("11", "0b"), ("12", "0c"), ("13", "0d")] {
        let block =
            format!("[[neighbor]]\naddress = \"198.19.0.{v4}\"\nmac = \"02:00:00:00:02:{mac}\"\n");
        assert!(conf.contains(&block), "{block}");
        conf = conf.replace(&block, "");
    }
    let client = Ipv4Addr::new(198, 18, 64, 7);
    let init = testkit::ike_sa_init_request(0x1234, &[0x5a; 32], 19, 64, &[]);
    write_client_input(&dir, &[udp_from_router(client, labnet::VIP_V4, 500, &init)]);
    let mut w = PcapWriter::create(dir.join("in/backend.pcap")).unwrap();
    for (g, (addr, mac)) in labnet::GATEWAYS_V4
        .iter()
        .zip(labnet::GATEWAY_MACS)
        .enumerate()
    {
        let request = testkit::arp(
            &L2::new(mac, dataplane::wire::ethernet::EthernetAddress::BROADCAST),
            dataplane::wire::arp::ARP_REQUEST,
            mac,
            *addr,
            dataplane::wire::ethernet::EthernetAddress([0; 6]),
            Ipv4Addr::new(198, 19, 0, 1),
        );
        w.write_packet(1_700_000_000_000_000_000 + g as u64 * 1000, &request)
            .unwrap();
    }
    w.flush().unwrap();
    let run = run_daemon_with(&dir, 1, &conf);
    let c = &run.report["counters"];
    assert_eq!(c["neighbor_held"], 1, "{c}");
    assert_eq!(c["neighbor_released"], 1, "{c}");
    assert_eq!(c["drops"]["neighbor-hold-timeout"], 0, "{c}");
    let forwarded: Vec<Vec<u8>> = frames(&run.out.join("backend-w0.pcap"))
        .into_iter()
        .filter(|f| !is_control_frame(f))
        .collect();
    assert_eq!(forwarded.len(), 1, "the IKE_SA_INIT, once");
    let eth = EthernetFrame::new_checked(&forwarded[0][..]).unwrap();
    let ip = dataplane::wire::ipv4::Ipv4Packet::new_checked(eth.payload()).unwrap();
    let g = labnet::GATEWAYS_V4
        .iter()
        .position(|a| *a == ip.dst_addr())
        .expect("to a gateway");
    assert_eq!(eth.dst(), labnet::GATEWAY_MACS[g], "its gateway's MAC");
    assert_eq!(eth.src(), labnet::BACKEND_PORT_MAC);
    assert_eq!(ip.src_addr(), client);
    // Each gateway learned from its request: as new (stale) entries, or the one being
    // resolved when its request came after the miss.
    let n = &run.report["neighbors"];
    let count = |k: &str| n[k].as_u64().unwrap();
    assert_eq!(count("heard") + count("resolved"), 3, "{n}");
}

/// Logs off a terminal carry no colour codes; `--log-format json` gives one JSON object per
/// line; under journald (`$JOURNAL_STREAM`) no timestamp; a bad `--log-level` is refused.
#[test]
fn logs_fit_files_pipes_journald_and_log_shippers() {
    // The lab's configuration without its exception path, whose namespace `check` would want.
    let dir = tmpdir("logs");
    let conf = dir.join("lab.toml");
    std::fs::write(&conf, lab_conf()).unwrap();
    let check = |args: &[&str], journal: bool| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_vpnlbd"));
        c.args(args)
            .args(["check", "--config"])
            .arg(&conf)
            .env_remove("RUST_LOG")
            .env_remove("JOURNAL_STREAM");
        if journal {
            c.env("JOURNAL_STREAM", "8:12345");
        }
        let out = c.output().unwrap();
        (out.status.code(), String::from_utf8(out.stderr).unwrap())
    };
    let (code, text) = check(&[], false);
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("configuration is valid"), "{text}");
    assert!(!text.contains('\u{1b}'), "ANSI codes in a pipe: {text:?}");
    assert!(text.starts_with("20"), "a timestamp first: {text}");
    let (_, journal) = check(&[], true);
    assert!(journal.trim_start().starts_with("INFO"), "{journal}");
    let (_, json) = check(&["--log-format", "json"], false);
    let line: serde_json::Value = serde_json::from_str(json.lines().next().unwrap()).unwrap();
    assert_eq!(line["level"], "INFO");
    assert_eq!(line["fields"]["message"], "configuration is valid");
    let (_, quiet) = check(&["--log-level", "warn"], false);
    assert!(quiet.is_empty(), "{quiet}");
    let (code, bad) = check(&["--log-level", "loud["], false);
    assert_eq!(code, Some(2), "{bad}");
    assert!(bad.contains("--log-level"), "{bad}");
}

/// What the daemon checks before touching a device, `vpnlbd check` checks too, with the same
/// error: a configuration `check` passes does not fail those at start.
#[test]
fn check_refuses_what_the_daemon_would_refuse_with_its_error() {
    let _one = one_daemon_at_a_time();
    let dir = tmpdir("preflight");
    let lab = lab_conf();
    let cases = [
        (
            "empty device",
            lab.replace("\"net_af_packet0,iface=vlb-cl0\"", "\"\""),
            "port.client.device",
        ),
        (
            "missing namespace",
            lab.replace(
                "[affinity]",
                "[exception]\nnetns = \"vlb-no-such-ns\"\n\n[affinity]",
            ),
            "no network namespace `vlb-no-such-ns`",
        ),
        (
            "missing worker core",
            lab.replace("workers = [1]", "workers = [4000]"),
            "core 4000 is not available",
        ),
        (
            "missing control core",
            lab.replace("control_core = 0", "control_core = 4001"),
            "core 4001 is not available",
        ),
        (
            "hugepages short",
            lab.replace("hugepages = false", "hugepages = true")
                .replace("memory_mb = 512", "memory_mb = 4000000"),
            "dataplane.memory_mb: 4000000 MB of hugepages asked for",
        ),
    ];
    for (what, conf, error) in cases {
        assert_ne!(conf, lab, "{what}: the case changed nothing");
        let p = dir.join("c.toml");
        std::fs::write(&p, conf).unwrap();
        let run = |args: &[&str]| {
            let out = Command::new(env!("CARGO_BIN_EXE_vpnlbd"))
                .args(args)
                .arg(&p)
                .env_remove("RUST_LOG")
                .output()
                .unwrap();
            (out.status.code(), String::from_utf8(out.stderr).unwrap())
        };
        let (code, checked) = run(&["check", "--config"]);
        assert_eq!(code, Some(2), "{what}: {checked}");
        assert!(checked.contains(error), "{what}: {checked}");
        let (code, started) = run(&["--config"]);
        assert_ne!(code, Some(0), "{what}: {started}");
        assert!(started.contains(error), "{what}: the daemon says {started}");
        assert!(!started.contains("EAL"), "{what}: the EAL must not start");
    }
}
