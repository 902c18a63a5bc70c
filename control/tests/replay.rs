//! Golden tests of `vpnlbd replay`: the lab capture goes through the pipeline with the shipped
//! `conf/lab.toml`, and the output captures are read back and compared, frame by frame, with
//! what went in. Only what address-only NAT must change may differ.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

use control::config;
use control::replay::{self, Input};
use dataplane::io::pcap::{PcapReader, PcapWriter};
use dataplane::wire::checksum;
use dataplane::wire::ethernet::{ethertype, EthernetAddress, EthernetFrame};
use dataplane::wire::ip_proto;
use dataplane::wire::ipv4::Ipv4Packet;
use dataplane::wire::ipv6::Ipv6Packet;
use dataplane::wire::tcp::TcpPacket;
use dataplane::wire::udp::UdpPacket;
use testkit::lab as labnet;
use vpnlb_perf::lab::{self, LabConfig};

fn lab_conf() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../conf/lab.toml")
}

fn tmpdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("vpnlb-replay-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn read_all(path: &Path) -> Vec<(u64, Vec<u8>)> {
    let mut r = PcapReader::open(path).unwrap();
    let mut out = Vec::new();
    let mut buf = Vec::new();
    while let Some(ts) = r.next_packet(&mut buf).unwrap() {
        out.push((ts, buf.clone()));
    }
    out
}

/// The parts of an IP packet address-only NAT must preserve, and those it may change.
#[derive(Debug)]
struct Ip {
    v6: bool,
    src: IpAddr,
    dst: IpAddr,
    ttl: u8,
    protocol: u8,
    /// The IP header without addresses, TTL and header checksum, then everything after it
    /// except the transport checksum (which changes with the pseudo-header).
    invariant: Vec<u8>,
    /// IPv4 header checksum verifies (always true for IPv6).
    header_ok: bool,
    /// The transport checksum verifies, when the packet is a whole datagram.
    l4_ok: Option<bool>,
}

fn parse_ip(frame: &[u8]) -> (EthernetAddress, EthernetAddress, Ip) {
    let eth = EthernetFrame::new_checked(frame).unwrap();
    let (src_mac, dst_mac) = (eth.src(), eth.dst());
    let ip = match eth.ethertype() {
        ethertype::IPV4 => {
            let p = Ipv4Packet::new_checked(eth.payload()).unwrap();
            let hl = p.header_len();
            let bytes = &eth.payload()[..usize::from(p.total_len())];
            let mut inv = bytes.to_vec();
            for i in [8, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19] {
                inv[i] = 0;
            }
            let whole = !p.is_fragment();
            let (src, dst) = (p.src_addr(), p.dst_addr());
            let l4_ok = match p.protocol() {
                ip_proto::UDP if whole => {
                    let u = UdpPacket::new_checked(p.payload()).unwrap();
                    inv[hl + 6] = 0;
                    inv[hl + 7] = 0;
                    Some(u.verify_checksum_v4(src, dst))
                }
                ip_proto::TCP if whole => {
                    let t = TcpPacket::new_checked(p.payload()).unwrap();
                    inv[hl + 16] = 0;
                    inv[hl + 17] = 0;
                    Some(t.verify_checksum_v4(src, dst))
                }
                ip_proto::UDP if p.is_first_fragment() => {
                    inv[hl + 6] = 0;
                    inv[hl + 7] = 0;
                    None
                }
                _ => None,
            };
            Ip {
                v6: false,
                src: src.into(),
                dst: dst.into(),
                ttl: p.ttl(),
                protocol: p.protocol(),
                invariant: inv,
                header_ok: checksum::checksum(p.header()) == 0,
                l4_ok,
            }
        }
        ethertype::IPV6 => {
            let p = Ipv6Packet::new_checked(eth.payload()).unwrap();
            let up = p.upper_layer().unwrap();
            let bytes = &eth.payload()[..40 + usize::from(p.payload_len())];
            let mut inv = bytes.to_vec();
            inv[7] = 0;
            inv[8..40].fill(0);
            let (src, dst) = (p.src_addr(), p.dst_addr());
            let seg = &bytes[up.offset..];
            let l4_ok = match (up.protocol, up.fragment) {
                (ip_proto::UDP, None) => {
                    inv[up.offset + 6] = 0;
                    inv[up.offset + 7] = 0;
                    Some(
                        UdpPacket::new_checked(seg)
                            .unwrap()
                            .verify_checksum_v6(&src, &dst),
                    )
                }
                (ip_proto::TCP, None) => {
                    inv[up.offset + 16] = 0;
                    inv[up.offset + 17] = 0;
                    Some(
                        TcpPacket::new_checked(seg)
                            .unwrap()
                            .verify_checksum_v6(&src, &dst),
                    )
                }
                (ip_proto::UDP, Some(f)) if f.offset == 0 => {
                    inv[up.offset + 6] = 0;
                    inv[up.offset + 7] = 0;
                    None
                }
                _ => None,
            };
            Ip {
                v6: true,
                src: src.into(),
                dst: dst.into(),
                ttl: p.hop_limit(),
                protocol: up.protocol,
                invariant: inv,
                header_ok: true,
                l4_ok,
            }
        }
        other => panic!("unexpected ethertype {other:#06x}"),
    };
    (src_mac, dst_mac, ip)
}

struct Lab {
    caps: lab::LabCaptures,
    out: PathBuf,
    report: replay::Report,
}

fn run_lab(name: &str, cfg: LabConfig) -> Lab {
    let dir = tmpdir(name);
    let gateway_for = lab::maglev_gateway_for().unwrap();
    let caps = lab::generate_into(&dir.join("in"), &cfg, &gateway_for).unwrap();
    let spec = config::load(&lab_conf()).unwrap();
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
    let out = dir.join("out");
    let report = replay::run(spec, &inputs, &out, true).unwrap();
    Lab { caps, out, report }
}

fn default_lab() -> LabConfig {
    LabConfig {
        clients: 40,
        ipv6_clients: 10,
        tls_clients: 10,
        ..LabConfig::default()
    }
}

#[test]
fn every_client_packet_reaches_its_gateway_with_only_the_destination_changed() {
    let lab = run_lab("inbound", default_lab());
    let expected: HashMap<IpAddr, IpAddr> = lab
        .caps
        .clients
        .iter()
        .map(|c| (c.addr, c.gateway_addr()))
        .collect();
    let gw_mac: HashMap<IpAddr, EthernetAddress> = (0..3)
        .flat_map(|i| {
            [
                (IpAddr::V4(labnet::GATEWAYS_V4[i]), labnet::GATEWAY_MACS[i]),
                (IpAddr::V6(labnet::GATEWAYS_V6[i]), labnet::GATEWAY_MACS[i]),
            ]
        })
        .collect();
    let out = read_all(&lab.out.join("backend.pcap"));
    assert_eq!(
        out.len(),
        lab.caps.client_port.len(),
        "one output per input"
    );
    let mut checked_l4 = 0;
    for (input, (ts, output)) in lab.caps.client_port.iter().zip(&out) {
        assert_eq!(*ts, input.ts_ns, "timestamps follow the input");
        let (_, _, a) = parse_ip(&input.data);
        let (smac, dmac, b) = parse_ip(output);
        let want_gw = expected[&a.src];
        assert_eq!(b.dst, want_gw, "client {} went to {}", a.src, b.dst);
        assert_eq!(b.src, a.src, "source kept");
        assert_eq!(smac, labnet::BACKEND_PORT_MAC);
        assert_eq!(dmac, gw_mac[&want_gw]);
        assert_eq!(b.ttl, a.ttl - 1);
        assert_eq!(b.protocol, a.protocol);
        assert_eq!(
            b.invariant, a.invariant,
            "ports, lengths and payload unchanged"
        );
        assert!(b.header_ok, "IPv4 header checksum");
        assert_eq!(b.v6, a.v6);
        if let Some(ok) = b.l4_ok {
            assert!(ok, "transport checksum after NAT, client {}", a.src);
            checked_l4 += 1;
        }
    }
    assert!(checked_l4 > out.len() / 2);
}

#[test]
fn every_gateway_packet_reaches_its_client_from_the_vip() {
    let lab = run_lab("outbound", default_lab());
    let out = read_all(&lab.out.join("client.pcap"));
    assert_eq!(out.len(), lab.caps.backend_port.len());
    for (input, (_, output)) in lab.caps.backend_port.iter().zip(&out) {
        let (_, _, a) = parse_ip(&input.data);
        let (smac, dmac, b) = parse_ip(output);
        let vip: IpAddr = if a.v6 {
            labnet::VIP_V6.into()
        } else {
            labnet::VIP_V4.into()
        };
        assert_eq!(b.src, vip);
        assert_eq!(b.dst, a.dst);
        assert_eq!(smac, labnet::CLIENT_PORT_MAC);
        assert_eq!(
            dmac,
            labnet::ROUTER_MAC,
            "clients are behind the upstream router"
        );
        assert_eq!(b.ttl, a.ttl - 1);
        assert_eq!(b.invariant, a.invariant);
        assert!(b.header_ok);
        if let Some(ok) = b.l4_ok {
            assert!(ok, "transport checksum after NAT, to {}", a.dst);
        }
    }
}

#[test]
fn report_counts_every_frame_and_every_client_is_confirmed_on_its_gateway() {
    let lab = run_lab("report", default_lab());
    let r = &lab.report;
    let c = &r.counters;
    assert_eq!(c.total_drops(), 0, "drops: {:?}", c.drops);
    assert_eq!(
        c.rx_packets,
        (lab.caps.client_port.len() + lab.caps.backend_port.len()) as u64
    );
    assert_eq!(c.tx_packets, c.rx_packets);
    assert_eq!(
        r.ports["client"].rx_packets,
        lab.caps.client_port.len() as u64
    );
    assert_eq!(
        r.ports["backend"].tx_packets,
        lab.caps.client_port.len() as u64
    );
    let entries = r.affinity.as_ref().unwrap();
    assert_eq!(entries.len(), lab.caps.clients.len());
    for client in &lab.caps.clients {
        let e = entries.iter().find(|e| e.client == client.addr).unwrap();
        assert_eq!(e.gateway, client.gateway_name(), "client {}", client.addr);
        assert!(e.confirmed, "return traffic confirms {}", client.addr);
    }
    // Every class of the lab mix was seen.
    for class in [
        "ike",
        "esp-in-udp",
        "natt-keepalive",
        "esp",
        "dtls",
        "tls",
        "fragment",
    ] {
        let i = dataplane::classify::Class::ALL
            .iter()
            .position(|k| k.name() == class)
            .unwrap();
        assert!(c.classes[i] > 0, "class {class} not seen");
    }
    assert_eq!(c.tls_client_hellos, 10);
    assert!(c.dtls_client_hellos >= 10);
    let per_gw: u64 = r.gateways.iter().map(|g| g.clients).sum();
    assert_eq!(per_gw, lab.caps.clients.len() as u64);
}

fn write_capture(path: &Path, frames: &[(u64, Vec<u8>)]) {
    let mut w = PcapWriter::create(path).unwrap();
    for (ts, f) in frames {
        w.write_packet(*ts, f).unwrap();
    }
    w.flush().unwrap();
}

fn ike_from(client: std::net::Ipv4Addr) -> Vec<u8> {
    ike_to_vip(
        client,
        &testkit::ike_sa_init_request(7, &[1; 32], 19, 64, &[]),
    )
}

/// The client's IKE_AUTH in the IKE SA (`spi_i`, `spi_r`), to the VIP.
fn ike_auth_from(client: std::net::Ipv4Addr, spi_i: u64, spi_r: u64) -> Vec<u8> {
    let auth = testkit::ike_message(
        spi_i,
        spi_r,
        dataplane::wire::ike::exchange::IKE_AUTH,
        dataplane::wire::ike::flags::INITIATOR,
        1,
        &[0x5a; 96],
    );
    ike_to_vip(client, &auth)
}

/// An IKE message from a client behind the lab's router to the VIP, UDP 500 → 500.
fn ike_to_vip(client: std::net::Ipv4Addr, ike: &[u8]) -> Vec<u8> {
    use testkit::{Ipv4Opts, L2, L4};
    testkit::ipv4(
        &L2::new(labnet::ROUTER_MAC, labnet::CLIENT_PORT_MAC),
        client,
        labnet::VIP_V4,
        &Ipv4Opts::default(),
        &L4::Udp {
            src: 500,
            dst: 500,
            payload: ike,
        },
    )
}

#[test]
fn capture_timestamps_drive_the_persistence_timeouts() {
    let dir = tmpdir("clock");
    let s = 1_000_000_000u64;
    let t0 = 1_700_000_000 * s;
    let a = "198.18.70.1".parse().unwrap();
    let b = "198.18.70.2".parse().unwrap();
    // Client a comes back within its 30 s unconfirmed timeout, client b after it.
    let frames = vec![
        (t0, ike_from(a)),
        (t0, ike_from(b)),
        (t0 + 10 * s, ike_from(a)),
        (t0 + 45 * s, ike_from(b)),
    ];
    write_capture(&dir.join("c.pcap"), &frames);
    let spec = config::load(&lab_conf()).unwrap();
    let inputs = [Input {
        port: "client".into(),
        path: dir.join("c.pcap"),
    }];
    let r = replay::run(spec, &inputs, &dir.join("out"), false).unwrap();
    assert_eq!(r.counters.clients.scheduled, 3, "a once, b twice");
    assert_eq!(r.counters.tx_packets, 4);
    // Nothing was sent on the client port: its capture exists and is empty (header only).
    let client_out = dir.join("out/client.pcap");
    assert_eq!(std::fs::metadata(&client_out).unwrap().len(), 24);
    assert!(read_all(&client_out).is_empty());
}

#[test]
fn captures_are_merged_by_timestamp() {
    // The gateway's answer comes from the second capture, timestamped between two client
    // packets: it must be seen before the second client packet, whose IKE_AUTH echoes the
    // answer's responder SPI and so establishes (confirms) the client only in that order.
    let dir = tmpdir("merge");
    let s = 1_000_000_000u64;
    let t0 = 1_700_000_000 * s;
    let client = "198.18.70.9".parse().unwrap();
    let gw_for = lab::maglev_gateway_for().unwrap();
    let gw = gw_for(IpAddr::V4(client));
    let answer = {
        use testkit::{Ipv4Opts, L2, L4};
        let ike = testkit::ike_sa_init_response(7, 9, &[2; 32], 19, 64, &[]);
        testkit::ipv4(
            &L2::new(labnet::GATEWAY_MACS[gw], labnet::BACKEND_PORT_MAC),
            labnet::GATEWAYS_V4[gw],
            client,
            &Ipv4Opts::default(),
            &L4::Udp {
                src: 500,
                dst: 500,
                payload: &ike,
            },
        )
    };
    write_capture(
        &dir.join("c.pcap"),
        &[
            (t0, ike_from(client)),
            (t0 + 3 * s, ike_auth_from(client, 7, 9)),
        ],
    );
    write_capture(&dir.join("b.pcap"), &[(t0 + s, answer)]);
    let spec = config::load(&lab_conf()).unwrap();
    let inputs = [
        Input {
            port: "client".into(),
            path: dir.join("c.pcap"),
        },
        Input {
            port: "backend".into(),
            path: dir.join("b.pcap"),
        },
    ];
    let r = replay::run(spec, &inputs, &dir.join("out"), true).unwrap();
    assert_eq!(r.counters.affinity.confirmed, 1);
    let e = &r.affinity.as_ref().unwrap()[0];
    assert!(e.confirmed);
    // Last seen is the second client packet's time, after the answer.
    assert_eq!(u64::from(e.last_seen), (t0 + 3 * s) / s);
    let out = read_all(&dir.join("out/client.pcap"));
    assert_eq!(out.len(), 1);
}

#[test]
fn unknown_port_and_bad_capture_are_errors() {
    let dir = tmpdir("errors");
    let spec = config::load(&lab_conf()).unwrap();
    let inputs = [Input {
        port: "nope".into(),
        path: dir.join("x.pcap"),
    }];
    let e = replay::run(spec.clone(), &inputs, &dir.join("out"), false).unwrap_err();
    assert!(e.to_string().contains("nope"));
    std::fs::write(dir.join("bad.pcap"), b"this is not a capture").unwrap();
    let inputs = [Input {
        port: "client".into(),
        path: dir.join("bad.pcap"),
    }];
    let e = replay::run(spec, &inputs, &dir.join("out"), false).unwrap_err();
    assert!(e.to_string().contains("bad.pcap"), "{e}");
}

#[test]
fn vpnlbd_replay_cli_prints_one_json_object_and_config_errors_exit_2() {
    let dir = tmpdir("cli");
    let gateway_for = lab::maglev_gateway_for().unwrap();
    let cfg = LabConfig {
        clients: 5,
        ipv6_clients: 1,
        tls_clients: 1,
        ..LabConfig::default()
    };
    lab::generate_into(&dir.join("in"), &cfg, &gateway_for).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_vpnlbd"))
        .args(["replay", "--config"])
        .arg(lab_conf())
        .arg("--in")
        .arg(format!("client={}", dir.join("in/client.pcap").display()))
        .arg("--in")
        .arg(format!("backend={}", dir.join("in/backend.pcap").display()))
        .arg("--out-dir")
        .arg(dir.join("out"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert_eq!(stdout.lines().count(), 1);
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(v["counters"]["drops"]["no-gateway"], 0);
    assert!(v["counters"]["rx_packets"].as_u64().unwrap() > 0);
    assert!(dir.join("out/client.pcap").exists() && dir.join("out/backend.pcap").exists());

    let bad = dir.join("bad.toml");
    let text = std::fs::read_to_string(lab_conf())
        .unwrap()
        .replace("weight = 1", "weight = -1");
    std::fs::write(&bad, text).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_vpnlbd"))
        .args(["check", "--config"])
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("bad.toml"), "{stderr}");
}

/// Redirect mode through `vpnlbd replay` with `conf/lab-redirect.toml`: a redirect-capable
/// IKE_SA_INIT comes back on the client port as exactly RFC 5685's response, one without
/// REDIRECT_SUPPORTED goes to a gateway in NAT mode, a truncated one is dropped unanswered.
#[test]
fn redirect_mode_answers_with_rfc5685_bytes_on_the_client_port() {
    use dataplane::wire::ike::notify_type;
    let dir = tmpdir("redirect");
    let conf = Path::new(env!("CARGO_MANIFEST_DIR")).join("../conf/lab-redirect.toml");
    let client: std::net::Ipv4Addr = "198.18.70.20".parse().unwrap();
    let nonce = [0x6e; 32];
    let to_vip = |ike: &[u8]| ike_to_vip(client, ike);
    let spi = 0x0123_4567_89ab_cdefu64;
    let supported = testkit::ike_sa_init_request(
        spi,
        &nonce,
        31,
        32,
        &[(notify_type::REDIRECT_SUPPORTED, &[])],
    );
    let plain = testkit::ike_sa_init_request(spi + 1, &nonce, 31, 32, &[]);
    let s = 1_000_000_000u64;
    let t0 = 1_700_000_000 * s;
    write_capture(
        &dir.join("c.pcap"),
        &[
            (t0, to_vip(&supported)),
            (t0 + s, to_vip(&plain)),
            (t0 + 2 * s, to_vip(&supported[..40])),
        ],
    );
    let spec = config::load(&conf).unwrap();
    let inputs = [Input {
        port: "client".into(),
        path: dir.join("c.pcap"),
    }];
    let r = replay::run(spec, &inputs, &dir.join("out"), false).unwrap();
    let answers = read_all(&dir.join("out/client.pcap"));
    assert_eq!(answers.len(), 1);
    let frame = &answers[0].1;
    let eth = EthernetFrame::new_checked(&frame[..]).unwrap();
    assert_eq!(
        (eth.src(), eth.dst()),
        (labnet::CLIENT_PORT_MAC, labnet::ROUTER_MAC)
    );
    let ip = Ipv4Packet::new_checked(eth.payload()).unwrap();
    assert!(ip.verify_checksum());
    assert_eq!((ip.src_addr(), ip.dst_addr()), (labnet::VIP_V4, client));
    let udp = UdpPacket::new_checked(ip.payload()).unwrap();
    assert!(udp.verify_checksum_v4(ip.src_addr(), ip.dst_addr()));
    assert_eq!((udp.src_port(), udp.dst_port()), (500, 500));
    // With no loads yet, the first gateway at or after the client's hash.
    let g = dataplane::schedule::client_hash(&client.octets()) as usize % 3;
    let mut want = spi.to_be_bytes().to_vec();
    want.extend_from_slice(&[0; 8]); // no responder SPI
    want.extend_from_slice(&[41, 0x20, 34, 0x20, 0, 0, 0, 0]); // N, IKEv2, IKE_SA_INIT, R, ID 0
    want.extend_from_slice(&(28u32 + 46).to_be_bytes());
    want.extend_from_slice(&[0, 0, 0, 46, 0, 0, 0x40, 0x17, 1, 4]); // N(REDIRECT), IPv4 GW
    want.extend_from_slice(&labnet::GATEWAYS_V4[g].octets());
    want.extend_from_slice(&nonce);
    assert_eq!(udp.payload(), &want[..]);
    assert!(frame.len() < to_vip(&supported).len());
    // The one without REDIRECT_SUPPORTED went to a gateway; the truncated one nowhere.
    assert_eq!(read_all(&dir.join("out/backend.pcap")).len(), 1);
    let gw = &r.counters.gateways[0];
    assert_eq!(gw.iter().map(|g| g.redirects).sum::<u64>(), 1);
    assert_eq!(gw[g].redirects, 1);
    let svc = &r.counters.services[0];
    assert_eq!(
        svc.fallbacks(dataplane::redirect::Fallback::NoRedirectSupported),
        1
    );
    assert_eq!(svc.malformed_ike_sa_init, 1);
}

/// An IKE_SA_INIT from `client` to the VIP whose IP packet is `ip_len` bytes (a KE payload
/// as long as needed), DF as given.
fn big_ike_to_vip(client: IpAddr, ip_len: usize, df: bool) -> Vec<u8> {
    use testkit::{Ipv4Opts, L2, L4};
    let l2 = L2::new(labnet::ROUTER_MAC, labnet::CLIENT_PORT_MAC);
    let headers = if client.is_ipv6() { 48 } else { 28 };
    let ike = |ke: usize| testkit::ike_sa_init_request(7, &[1; 32], 19, ke, &[]);
    let overhead = ike(0).len();
    let ike = ike(ip_len - headers - overhead);
    let udp = L4::Udp {
        src: 500,
        dst: 500,
        payload: &ike,
    };
    match client {
        IpAddr::V4(c) => {
            let opts = Ipv4Opts {
                dont_frag: df,
                ident: 0x2222,
                ..Ipv4Opts::default()
            };
            testkit::ipv4(&l2, c, labnet::VIP_V4, &opts, &udp)
        }
        IpAddr::V6(c) => testkit::ipv6(&l2, &c, &labnet::VIP_V6, 64, &[], &udp),
    }
}

/// Frames over the backend port's MTU: fragments (IPv4 without DF) on the backend, ICMP
/// fragmentation-needed (DF) and packet-too-big (IPv6) back on the client port; tshark finds
/// nothing malformed in either capture, and reassembles the fragments.
#[test]
fn frames_over_the_egress_mtu_are_fragmented_or_refused_and_tshark_agrees() {
    let dir = tmpdir("mtu");
    let s = 1_000_000_000u64;
    let t0 = 1_700_000_000 * s;
    let c4: IpAddr = "198.18.70.20".parse().unwrap();
    let c6: IpAddr = "2001:2:0:64::20".parse().unwrap();
    let frames = vec![
        (t0, big_ike_to_vip(c4, 3000, false)),
        (t0 + 1, big_ike_to_vip(c4, 1450, true)),
        (t0 + 2, big_ike_to_vip(c6, 1450, false)),
        (t0 + 3, big_ike_to_vip(c4, 1400, true)),
    ];
    write_capture(&dir.join("c.pcap"), &frames);
    let mut spec = config::load(&lab_conf()).unwrap();
    spec.ports[1].mtu = 1400;
    let inputs = [Input {
        port: "client".into(),
        path: dir.join("c.pcap"),
    }];
    let r = replay::run(spec, &inputs, &dir.join("out"), false).unwrap();
    assert_eq!(r.counters.mtu.fragmented, 1);
    assert_eq!(r.counters.mtu.fragments, 3);
    assert_eq!(r.counters.mtu.frag_needed, 1);
    assert_eq!(r.counters.mtu.packet_too_big, 1);
    let backend = read_all(&dir.join("out/backend.pcap"));
    // Three fragments, then the 1400-byte packet that fits.
    assert_eq!(backend.len(), 4);
    assert!(backend.iter().all(|(_, f)| f.len() <= 14 + 1400));
    let client = read_all(&dir.join("out/client.pcap"));
    assert_eq!(client.len(), 2);
    for capture in ["backend", "client"] {
        let path = dir.join(format!("out/{capture}.pcap"));
        // Checksums checked too: a bad one is an expert warning.
        let out = Command::new("tshark")
            .args([
                "-o",
                "ip.check_checksum:TRUE",
                "-o",
                "udp.check_checksum:TRUE",
            ])
            .arg("-r")
            .arg(&path)
            .args(["-Y", "_ws.malformed || _ws.expert.severity >= warning"])
            .output()
            .expect("tshark (scripts/setup.sh installs it)");
        assert!(out.status.success(), "tshark on {capture}: {out:?}");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.trim().is_empty(), "tshark on {capture}:\n{text}");
    }
    // tshark reassembles the three fragments into the client's IKE_SA_INIT.
    let out = Command::new("tshark")
        .arg("-r")
        .arg(dir.join("out/backend.pcap"))
        .args([
            "-Y",
            "isakmp",
            "-T",
            "fields",
            "-e",
            "ip.len",
            "-e",
            "isakmp.length",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.lines()
            .any(|l| l.ends_with(&format!("\t{}", 3000 - 28))),
        "{text}"
    );
}
