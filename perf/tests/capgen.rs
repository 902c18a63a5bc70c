//! Runs the lab capture generator into a temporary directory and checks what it wrote with
//! the dataplane's own capture reader and header views.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;

use dataplane::io::pcap::PcapReader;
use dataplane::wire::ethernet::{ethertype, EthernetFrame};
use dataplane::wire::ip_proto;
use dataplane::wire::ipv4::Ipv4Packet;
use dataplane::wire::ipv6::Ipv6Packet;
use dataplane::wire::tcp::TcpPacket;
use dataplane::wire::udp::UdpPacket;
use vpnlb_perf::lab::{self, ClientKind, LabCaptures, LabConfig};

/// A fresh directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let p = std::env::temp_dir().join(format!("vpnlb-capgen-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn small_config() -> LabConfig {
    LabConfig {
        clients: 10,
        ipv6_clients: 3,
        tls_clients: 3,
        fragment_every: 2,
        seed: 7,
        duration_s: 30,
        ..LabConfig::default()
    }
}

/// What one frame turned out to be.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Parsed {
    src: IpAddr,
    dst: IpAddr,
    /// Upper-layer protocol.
    proto: u8,
    /// (src, dst) ports of a non-fragmented or first-fragment TCP/UDP packet.
    ports: Option<(u16, u16)>,
    /// (ident, byte offset, more fragments) of a fragment.
    fragment: Option<(u32, usize, bool)>,
    /// The upper-layer bytes (header included) this frame carries.
    l4: Vec<u8>,
}

/// Parses a frame as IPv4 or IPv6, checking the IPv4 header checksum and, for unfragmented
/// packets, the TCP/UDP checksums. Panics (failing the test) on anything else.
fn parse(frame: &[u8]) -> Parsed {
    let eth = EthernetFrame::new_checked(frame).expect("Ethernet");
    assert!(
        frame.len() >= 60,
        "frames are padded to the Ethernet minimum"
    );
    match eth.ethertype() {
        ethertype::IPV4 => {
            let ip = Ipv4Packet::new_checked(eth.payload()).expect("IPv4");
            assert!(ip.verify_checksum(), "IPv4 header checksum");
            let (src, dst) = (ip.src_addr(), ip.dst_addr());
            let l4 = ip.payload().to_vec();
            let fragment = ip.is_fragment().then(|| {
                (
                    u32::from(ip.ident()),
                    usize::from(ip.frag_offset()),
                    ip.more_frags(),
                )
            });
            let ports = if fragment.is_none() {
                check_l4_v4(ip.protocol(), &l4, src, dst)
            } else {
                None
            };
            Parsed {
                src: src.into(),
                dst: dst.into(),
                proto: ip.protocol(),
                ports,
                fragment,
                l4,
            }
        }
        ethertype::IPV6 => {
            let ip = Ipv6Packet::new_checked(eth.payload()).expect("IPv6");
            let upper = ip.upper_layer().expect("IPv6 extension headers");
            let (src, dst) = (ip.src_addr(), ip.dst_addr());
            let l4 = ip.upper_payload(&upper).to_vec();
            let fragment = upper
                .fragment
                .map(|f| (f.ident, usize::from(f.offset), f.more));
            let ports = if fragment.is_none() {
                check_l4_v6(upper.protocol, &l4, &src, &dst)
            } else {
                None
            };
            Parsed {
                src: src.into(),
                dst: dst.into(),
                proto: upper.protocol,
                ports,
                fragment,
                l4,
            }
        }
        other => panic!("unexpected EtherType {other:#06x}"),
    }
}

fn check_l4_v4(proto: u8, l4: &[u8], src: Ipv4Addr, dst: Ipv4Addr) -> Option<(u16, u16)> {
    match proto {
        ip_proto::UDP => {
            let udp = UdpPacket::new_checked(l4).expect("UDP");
            assert_eq!(usize::from(udp.len()), l4.len(), "UDP length");
            assert!(udp.verify_checksum_v4(src, dst), "UDP checksum");
            Some((udp.src_port(), udp.dst_port()))
        }
        ip_proto::TCP => {
            let tcp = TcpPacket::new_checked(l4).expect("TCP");
            assert!(tcp.verify_checksum_v4(src, dst), "TCP checksum");
            Some((tcp.src_port(), tcp.dst_port()))
        }
        ip_proto::ESP => None,
        other => panic!("unexpected protocol {other}"),
    }
}

fn check_l4_v6(proto: u8, l4: &[u8], src: &Ipv6Addr, dst: &Ipv6Addr) -> Option<(u16, u16)> {
    match proto {
        ip_proto::UDP => {
            let udp = UdpPacket::new_checked(l4).expect("UDP");
            assert_eq!(usize::from(udp.len()), l4.len(), "UDP length");
            assert!(udp.verify_checksum_v6(src, dst), "UDP checksum");
            Some((udp.src_port(), udp.dst_port()))
        }
        ip_proto::ESP => None,
        other => panic!("unexpected protocol {other}"),
    }
}

/// Reads a capture back: (timestamp, frame) pairs.
fn read(path: PathBuf) -> Vec<(u64, Vec<u8>)> {
    let mut r = PcapReader::open(&path).expect("open capture");
    let mut out = Vec::new();
    let mut buf = Vec::new();
    while let Some(ts) = r.next_packet(&mut buf).expect("read capture") {
        out.push((ts, buf.clone()));
    }
    out
}

/// Reassembles fragments per (src, dst, ident); returns the reassembled L4 datagrams.
fn reassemble(frags: &[Parsed]) -> Vec<(IpAddr, IpAddr, Vec<u8>)> {
    let mut groups: BTreeMap<(IpAddr, IpAddr, u32), Vec<&Parsed>> = BTreeMap::new();
    for p in frags {
        let (ident, _, _) = p.fragment.unwrap();
        groups.entry((p.src, p.dst, ident)).or_default().push(p);
    }
    groups
        .into_iter()
        .map(|((src, dst, _), mut parts)| {
            parts.sort_by_key(|p| p.fragment.unwrap().1);
            let mut data = Vec::new();
            for p in &parts {
                let (_, off, _) = p.fragment.unwrap();
                assert_eq!(off, data.len(), "fragments are contiguous");
                data.extend_from_slice(&p.l4);
            }
            assert!(
                !parts.last().unwrap().fragment.unwrap().2,
                "last fragment has MF clear"
            );
            (src, dst, data)
        })
        .collect()
}

#[test]
fn captures_read_back_and_parse() {
    let dir = TempDir::new("parse");
    let cfg = small_config();
    let gateway_for = lab::maglev_gateway_for().unwrap();
    let caps = lab::generate_into(&dir.0, &cfg, &gateway_for).unwrap();
    let client_port = read(dir.0.join("client.pcap"));
    let backend_port = read(dir.0.join("backend.pcap"));
    assert_eq!(client_port.len(), caps.client_port.len());
    assert_eq!(backend_port.len(), caps.backend_port.len());
    assert!(
        client_port.len() > 500,
        "{} client frames",
        client_port.len()
    );
    assert!(
        backend_port.len() > 500,
        "{} backend frames",
        backend_port.len()
    );

    // clients.csv agrees with the returned clients and with the Maglev prediction.
    let csv = std::fs::read_to_string(dir.0.join("clients.csv")).unwrap();
    let mut lines = csv.lines();
    assert_eq!(lines.next(), Some("address,kind,gateway,gateway_address"));
    let rows: Vec<Vec<&str>> = lines.map(|l| l.split(',').collect()).collect();
    assert_eq!(rows.len(), 16);
    let mut kinds = HashMap::new();
    for (row, c) in rows.iter().zip(&caps.clients) {
        let addr: IpAddr = row[0].parse().unwrap();
        assert_eq!(addr, c.addr);
        assert_eq!(row[1], c.kind.as_str());
        assert_eq!(row[2], lab::GATEWAY_NAMES[gateway_for(addr)]);
        assert_eq!(row[3].parse::<IpAddr>().unwrap(), c.gateway_addr());
        *kinds.entry(c.kind).or_insert(0) += 1;
    }
    assert_eq!(kinds[&ClientKind::Ike] + kinds[&ClientKind::IkeRawEsp], 13);
    assert!(kinds[&ClientKind::IkeRawEsp] >= 2);
    assert_eq!(kinds[&ClientKind::Tls], 3);
    let by_addr: HashMap<IpAddr, &lab::LabClient> =
        caps.clients.iter().map(|c| (c.addr, c)).collect();
    assert_eq!(by_addr.len(), 16, "client addresses are distinct");

    let start = cfg.start_ns;
    let end = start + cfg.duration_s * 1_000_000_000;
    let vip4 = IpAddr::V4(testkit::lab::VIP_V4);
    let vip6 = IpAddr::V6(testkit::lab::VIP_V6);

    // Client port: router -> appliance, client -> VIP.
    let mut up = Vec::new();
    let mut prev = 0;
    for (ts, f) in &client_port {
        assert!(
            *ts >= prev && *ts >= start && *ts <= end,
            "timestamps in order"
        );
        prev = *ts;
        assert_eq!(&f[..12], &[2, 0, 0, 0, 1, 1, 2, 0, 0, 0, 1, 0xfe]);
        let p = parse(f);
        let c = by_addr.get(&p.src).expect("source is a client");
        assert_eq!(p.dst, if p.src.is_ipv4() { vip4 } else { vip6 });
        up.push((c.kind, p));
    }
    // Backend port: gateway -> appliance, gateway -> client, from the predicted gateway.
    let mut down = Vec::new();
    prev = 0;
    for (ts, f) in &backend_port {
        assert!(
            *ts >= prev && *ts >= start && *ts <= end,
            "timestamps in order"
        );
        prev = *ts;
        let p = parse(f);
        let c = by_addr.get(&p.dst).expect("destination is a client");
        assert_eq!(&f[..6], &[2, 0, 0, 0, 2, 1]);
        assert_eq!(&f[6..12], &testkit::lab::GATEWAY_MACS[c.gateway].0);
        assert_eq!(p.src, c.gateway_addr());
        down.push((c.kind, p));
    }

    for c in &caps.clients {
        let ups: Vec<&Parsed> = up
            .iter()
            .filter(|(_, p)| p.src == c.addr)
            .map(|(_, p)| p)
            .collect();
        let downs: Vec<&Parsed> = down
            .iter()
            .filter(|(_, p)| p.dst == c.addr)
            .map(|(_, p)| p)
            .collect();
        let has = |ps: &[&Parsed], proto: u8, ports: (u16, u16)| {
            ps.iter()
                .filter(|p| p.proto == proto && p.ports == Some(ports))
                .count()
        };
        match c.kind {
            ClientKind::Ike | ClientKind::IkeRawEsp => {
                assert_eq!(
                    has(&ups, ip_proto::UDP, (500, 500)),
                    1,
                    "IKE_SA_INIT request"
                );
                assert_eq!(
                    has(&downs, ip_proto::UDP, (500, 500)),
                    1,
                    "IKE_SA_INIT response"
                );
                let init = ups.iter().find(|p| p.ports == Some((500, 500))).unwrap();
                assert_eq!(&init.l4[8 + 16..8 + 20], &[33, 0x20, 34, 0x08]);
                let frags = ups.iter().filter(|p| p.fragment.is_some()).count();
                let frags_down = downs.iter().filter(|p| p.fragment.is_some()).count();
                if c.fragmented {
                    assert!(frags >= 2 && frags_down >= 2, "{c:?}: {frags}/{frags_down}");
                } else {
                    assert_eq!((frags, frags_down), (0, 0));
                    // IKE_AUTH behind the non-ESP marker.
                    let auth = ups
                        .iter()
                        .find(|p| p.ports == Some((4500, 4500)) && p.l4[8..12] == [0; 4])
                        .expect("IKE_AUTH request");
                    assert_eq!(auth.l4[12 + 18], 35);
                }
                let raw_esp = ups
                    .iter()
                    .chain(&downs)
                    .filter(|p| p.proto == ip_proto::ESP);
                let natt = ups.iter().filter(|p| p.ports == Some((4500, 4500))).count();
                let keepalives = ups
                    .iter()
                    .filter(|p| p.ports == Some((4500, 4500)) && p.l4[8..] == [0xff])
                    .count();
                if c.kind == ClientKind::IkeRawEsp {
                    assert!(raw_esp.count() > 10);
                    assert_eq!(keepalives, 0);
                } else {
                    assert_eq!(raw_esp.count(), 0);
                    assert!(natt > 10);
                }
            }
            ClientKind::Tls => {
                let syn = ups
                    .iter()
                    .find(|p| p.proto == ip_proto::TCP && p.l4[13] == 0x02)
                    .expect("SYN");
                let (sport, dport) = syn.ports.unwrap();
                assert_eq!(dport, 443);
                assert!(downs
                    .iter()
                    .any(|p| p.ports == Some((443, sport)) && p.l4[13] == 0x12));
                let hello = ups
                    .iter()
                    .find(|p| p.proto == ip_proto::TCP && p.l4.len() > 20 && p.l4[20] == 22)
                    .expect("ClientHello");
                assert_eq!(&hello.l4[20..23], &[22, 3, 1]);
                let text = String::from_utf8_lossy(&hello.l4);
                assert!(text.contains(".example.net"), "SNI present");
                let dtls = ups
                    .iter()
                    .find(|p| p.proto == ip_proto::UDP && p.ports.unwrap().1 == 443)
                    .expect("DTLS ClientHello");
                assert_ne!(
                    dtls.ports.unwrap().0,
                    sport,
                    "DTLS from another source port"
                );
                assert_eq!(&dtls.l4[8..11], &[22, 0xfe, 0xfd]);
                assert!(downs.iter().any(|p| p.proto == ip_proto::UDP
                    && p.l4.len() > 11
                    && p.l4[8..11] == [23, 0xfe, 0xfd]));
            }
        }
    }

    // Fragments reassemble into IKE_AUTH datagrams with valid checksums (both directions).
    let frag_up: Vec<Parsed> = up
        .iter()
        .filter(|(_, p)| p.fragment.is_some())
        .map(|(_, p)| p.clone())
        .collect();
    let frag_down: Vec<Parsed> = down
        .iter()
        .filter(|(_, p)| p.fragment.is_some())
        .map(|(_, p)| p.clone())
        .collect();
    let fragmented = caps.clients.iter().filter(|c| c.fragmented).count();
    assert_eq!(fragmented, 6);
    for (frags, n) in [(frag_up, fragmented), (frag_down, fragmented)] {
        let datagrams = reassemble(&frags);
        assert_eq!(datagrams.len(), n);
        for (src, dst, d) in datagrams {
            let udp = UdpPacket::new_checked(&d[..]).unwrap();
            assert_eq!(usize::from(udp.len()), d.len());
            assert!(d.len() > 1500);
            let ok = match (src, dst) {
                (IpAddr::V4(s), IpAddr::V4(t)) => udp.verify_checksum_v4(s, t),
                (IpAddr::V6(s), IpAddr::V6(t)) => udp.verify_checksum_v6(&s, &t),
                _ => false,
            };
            assert!(ok, "reassembled UDP checksum");
            assert_eq!((udp.src_port(), udp.dst_port()), (4500, 4500));
            assert_eq!(&d[8..12], &[0; 4], "non-ESP marker");
            assert_eq!(d[12 + 18], 35, "IKE_AUTH");
        }
    }
    let v6_frags = up
        .iter()
        .filter(|(_, p)| p.src.is_ipv6() && p.fragment.is_some())
        .count();
    let v6_fragmented = caps
        .clients
        .iter()
        .filter(|c| c.fragmented && c.addr.is_ipv6())
        .count();
    assert_eq!(v6_frags >= 2, v6_fragmented > 0);

    // Some NAT-T keepalives, as one padded byte.
    let keepalives = up
        .iter()
        .filter(|(_, p)| p.ports == Some((4500, 4500)) && p.l4[8..] == [0xff])
        .count();
    assert!(keepalives > 0);
}

#[test]
fn deterministic_per_seed() {
    let gw = |a: IpAddr| a.is_ipv6() as usize;
    let a = lab::generate(&small_config(), &gw).unwrap();
    let b = lab::generate(&small_config(), &gw).unwrap();
    assert_eq!(a, b);
    let other = LabConfig {
        seed: 8,
        ..small_config()
    };
    let c = lab::generate(&other, &gw).unwrap();
    assert_ne!(a.clients, c.clients);
}

#[test]
fn gateway_choice_is_a_parameter() {
    let cfg = LabConfig {
        clients: 3,
        ipv6_clients: 1,
        tls_clients: 1,
        duration_s: 3,
        ..LabConfig::default()
    };
    // 7 wraps around to gw2.
    let caps: LabCaptures = lab::generate(&cfg, &|_| 7).unwrap();
    assert!(caps.clients.iter().all(|c| c.gateway == 1));
    let srcs: HashSet<IpAddr> = caps
        .backend_port
        .iter()
        .map(|f| parse(&f.data).src)
        .collect();
    let expected: HashSet<IpAddr> = [
        IpAddr::V4(testkit::lab::GATEWAYS_V4[1]),
        IpAddr::V6(testkit::lab::GATEWAYS_V6[1]),
    ]
    .into();
    assert_eq!(srcs, expected);
}

#[test]
fn too_many_clients_is_an_error() {
    let cfg = LabConfig {
        clients: 16_000,
        tls_clients: 1_000,
        ..LabConfig::default()
    };
    let err = lab::generate(&cfg, &|_| 0).unwrap_err();
    assert_eq!(
        err.to_string(),
        "17000 IPv4 clients requested, 198.18.64.0/18 holds 16382"
    );
}

#[test]
fn capture_past_2106_is_an_error() {
    let cfg = LabConfig {
        start_ns: u64::from(u32::MAX) * 1_000_000_000,
        ..LabConfig::default()
    };
    let err = lab::generate(&cfg, &|_| 0).unwrap_err();
    assert!(matches!(err, lab::LabError::TimeOutOfRange { .. }), "{err}");
}
