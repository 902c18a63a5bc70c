//! Micro-benchmark of the worker pipeline: ns per packet over realistic bursts at a given number
//! of active clients, and the affinity table's bytes per entry.
//!
//! `cargo bench -p vpnlb-perf --bench pipeline [-- --clients 1000,100000,1000000,10000000]
//!  [--packets N] [--family v4|v6|both]`
//!
//! For each size the table is first filled with that many confirmed clients (each sends an IKE
//! packet and its gateway answers), then bursts of 32 frames are timed: half client → VIP (mostly
//! ESP-in-UDP, some IKE, keepalives, TLS and DTLS), half gateway → client ESP-in-UDP, each from a
//! client drawn uniformly at random, the worst case for caches. Only `process_burst` is timed;
//! refilling the frames between bursts (the NIC's job) is not. The shard is allocated as the
//! daemon allocates it, with transparent huge pages advised (the last column says whether the
//! kernel took the advice).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;
use std::time::Instant;

use dataplane::affinity::HashKey;
use dataplane::frame::{VecFrame, DEFAULT_HEADROOM};
use dataplane::model::{AffinitySpec, Snapshot};
use dataplane::pipeline::{Pipeline, Verdict, MAX_BURST};
use dataplane::wire::checksum;
use hdrhistogram::Histogram;
use testkit::lab::{self, appliance_spec};
use testkit::{Ipv4Opts, SplitMix64, L2, L4};
use vpnlb_perf::lab::maglev_gateway_for;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Family {
    V4,
    V6,
}

/// The i-th benchmark client: IPv4 from 198.18.1.0 on (the benchmark range, skipping the
/// backend subnet 198.19.0.0/24), IPv6 in 2001:2:0:64::/64.
fn client(family: Family, i: u64) -> IpAddr {
    match family {
        Family::V4 => {
            let base = u32::from(Ipv4Addr::new(198, 18, 1, 0));
            let mut a = base + i as u32;
            if a >= u32::from(Ipv4Addr::new(198, 19, 0, 0)) {
                a += 256;
            }
            IpAddr::V4(Ipv4Addr::from(a))
        }
        Family::V6 => IpAddr::V6(Ipv6Addr::from(
            u128::from(Ipv6Addr::new(0x2001, 2, 0, 0x64, 0, 0, 0, 0)) + u128::from(i) + 1,
        )),
    }
}

fn max_clients(family: Family) -> u64 {
    match family {
        Family::V4 => 130_000,
        Family::V6 => u64::MAX,
    }
}

/// A frame template whose client address sits at a known offset.
struct Template {
    frame: Vec<u8>,
    /// Byte offset of the client address (source inbound, destination outbound).
    client_at: usize,
    port: u16,
}

fn frame(family: Family, inbound: bool, gw: usize, l4: &L4<'_>) -> Template {
    let placeholder = client(family, 0);
    let (l2, src, dst) = if inbound {
        let vip: IpAddr = match family {
            Family::V4 => lab::VIP_V4.into(),
            Family::V6 => lab::VIP_V6.into(),
        };
        (
            L2::new(lab::ROUTER_MAC, lab::CLIENT_PORT_MAC),
            placeholder,
            vip,
        )
    } else {
        let gw_addr: IpAddr = match family {
            Family::V4 => lab::GATEWAYS_V4[gw].into(),
            Family::V6 => lab::GATEWAYS_V6[gw].into(),
        };
        (
            L2::new(lab::GATEWAY_MACS[gw], lab::BACKEND_PORT_MAC),
            gw_addr,
            placeholder,
        )
    };
    let frame = match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => testkit::ipv4(&l2, s, d, &Ipv4Opts::default(), l4),
        (IpAddr::V6(s), IpAddr::V6(d)) => testkit::ipv6(&l2, &s, &d, 64, &[], l4),
        _ => unreachable!("one family per template"),
    };
    let client_at = match (family, inbound) {
        (Family::V4, true) => 14 + 12,
        (Family::V4, false) => 14 + 16,
        (Family::V6, true) => 14 + 8,
        (Family::V6, false) => 14 + 24,
    };
    Template {
        frame,
        client_at,
        port: if inbound { 0 } else { 1 },
    }
}

/// Writes client `addr` into a copy of the template, keeping the IPv4 header checksum valid
/// (transport checksums are not verified by the pipeline, only updated).
fn stamp(t: &Template, addr: IpAddr, out: &mut VecFrame) {
    out.reset(&t.frame, DEFAULT_HEADROOM);
    let b = dataplane::frame::Frame::bytes_mut(out);
    match addr {
        IpAddr::V4(a) => {
            let old: [u8; 4] = b[t.client_at..t.client_at + 4].try_into().unwrap();
            b[t.client_at..t.client_at + 4].copy_from_slice(&a.octets());
            let c = u16::from_be_bytes([b[24], b[25]]);
            let c = checksum::update_bytes(c, &old, &a.octets());
            b[24..26].copy_from_slice(&c.to_be_bytes());
        }
        IpAddr::V6(a) => b[t.client_at..t.client_at + 16].copy_from_slice(&a.octets()),
    }
}

struct Mix {
    /// (template, weight) for client → VIP traffic; gateway replies are built per gateway.
    inbound: Vec<(Template, u32)>,
    /// Gateway → client ESP-in-UDP, one per gateway.
    outbound: Vec<Template>,
    /// The IKE_SA_INIT used to admit clients, its answers per gateway, and the client's
    /// IKE_AUTH echoing the answer's responder SPI (which establishes the client).
    admit: Template,
    admit_answer: Vec<Template>,
    admit_echo: Template,
}

fn mix(family: Family) -> Mix {
    let esp = testkit::esp_payload(0x1234_5678, 1, 180);
    let ike = testkit::ike_sa_init_request(0x1122_3344_5566_7788, &[7; 32], 19, 64, &[]);
    let ike_answer = testkit::ike_sa_init_response(0x1122_3344_5566_7788, 9, &[8; 32], 19, 64, &[]);
    let ike4500 = testkit::non_esp_marker(&testkit::ike_message(1, 2, 37, 0x08, 2, &[0; 80]));
    let hello = testkit::tls_client_hello(Some("vpn.example.net"));
    let dtls = testkit::dtls_client_hello(&[1; 16], None);
    let udp = |src, dst, payload: &[u8]| frame(family, true, 0, &L4::Udp { src, dst, payload });
    let inbound = vec![
        (udp(4500, 4500, &esp), 80),
        (udp(4500, 4500, &ike4500), 5),
        (udp(4500, 4500, &testkit::NATT_KEEPALIVE), 5),
        (
            frame(
                family,
                true,
                0,
                &L4::Tcp {
                    src: 50_000,
                    dst: 443,
                    seq: 1,
                    ack: 1,
                    flags: testkit::tcp_flags::ACK | testkit::tcp_flags::PSH,
                    payload: &hello,
                },
            ),
            5,
        ),
        (udp(50_001, 443, &dtls), 5),
    ];
    let outbound = (0..3)
        .map(|g| {
            frame(
                family,
                false,
                g,
                &L4::Udp {
                    src: 4500,
                    dst: 4500,
                    payload: &esp,
                },
            )
        })
        .collect();
    let admit = udp(500, 500, &ike);
    let auth = testkit::ike_message(0x1122_3344_5566_7788, 9, 35, 0x08, 1, &[0; 80]);
    let admit_echo = udp(500, 500, &auth);
    let admit_answer = (0..3)
        .map(|g| {
            frame(
                family,
                false,
                g,
                &L4::Udp {
                    src: 500,
                    dst: 500,
                    payload: &ike_answer,
                },
            )
        })
        .collect();
    Mix {
        inbound,
        outbound,
        admit,
        admit_answer,
        admit_echo,
    }
}

struct Result {
    clients: u64,
    family: Family,
    ns_per_packet: f64,
    burst_p50_us: f64,
    burst_p99_us: f64,
    bytes_per_entry: f64,
    huge_pages: bool,
    forwarded: u64,
    dropped: u64,
}

fn run(family: Family, clients: u64, packets: u64) -> Result {
    let capacity = (clients as usize + clients as usize / 8).max(1024);
    let spec = appliance_spec(AffinitySpec {
        capacity,
        max_unconfirmed: capacity / 4,
        // The IPv6 clients are all of one /64.
        prefix_quota_v6: u16::MAX,
        ..AffinitySpec::default()
    });
    let snap = Arc::new(Snapshot::build(spec, 1).expect("lab snapshot"));
    // As the daemon allocates a worker's shard: transparent huge pages advised before the
    // table is first written (fewer TLB misses at millions of clients).
    let mut huge_pages = false;
    let mut worker = Pipeline::new_advised(snap, HashKey::FIXED, &mut |addr, bytes| {
        huge_pages |= dpdk::memory::advise_huge_pages(addr, bytes);
    });
    let m = mix(family);
    let gateway_for = maglev_gateway_for().expect("maglev");
    let gw_of = |addr: IpAddr| gateway_for(addr);
    let now = 1_700_000_000u32;
    let mut frames: Vec<VecFrame> = (0..MAX_BURST).map(|_| VecFrame::new(&[])).collect();
    let mut verdicts = [Verdict::ToControl; MAX_BURST];

    // Admit every client: its IKE_SA_INIT, its gateway's answer, then its IKE_AUTH carrying the
    // answer's responder SPI (establishing the entry).
    let mut i = 0;
    while i < clients {
        let n = (clients - i).min(MAX_BURST as u64) as usize;
        for (k, f) in frames[..n].iter_mut().enumerate() {
            stamp(&m.admit, client(family, i + k as u64), f);
        }
        worker.process_burst(now, 0, &mut frames[..n], &mut verdicts[..n]);
        for (k, f) in frames[..n].iter_mut().enumerate() {
            let addr = client(family, i + k as u64);
            stamp(&m.admit_answer[gw_of(addr)], addr, f);
        }
        worker.process_burst(now, 1, &mut frames[..n], &mut verdicts[..n]);
        for (k, f) in frames[..n].iter_mut().enumerate() {
            stamp(&m.admit_echo, client(family, i + k as u64), f);
        }
        worker.process_burst(now, 0, &mut frames[..n], &mut verdicts[..n]);
        i += n as u64;
    }
    assert_eq!(
        worker.affinity().len() as u64,
        clients,
        "all clients admitted"
    );
    assert_eq!(worker.affinity().confirmed_len() as u64, clients);

    let total_weight: u32 = m.inbound.iter().map(|(_, w)| w).sum();
    let mut rng = SplitMix64(42);
    let mut hist = Histogram::<u64>::new(3).expect("histogram");
    let mut timed_ns = 0u128;
    let mut done = 0u64;
    let before = worker.counters();
    let mut port_frames: [Vec<usize>; 2] = [Vec::new(), Vec::new()];
    while done < packets {
        // One RX burst per port, as a worker polling two ports would see.
        for v in &mut port_frames {
            v.clear();
        }
        for port in 0..2u16 {
            for f in frames.iter_mut() {
                let addr = client(family, rng.below(clients));
                let t = if port == 0 {
                    let mut pick = rng.below(u64::from(total_weight)) as u32;
                    let mut chosen = &m.inbound[0].0;
                    for (t, w) in &m.inbound {
                        if pick < *w {
                            chosen = t;
                            break;
                        }
                        pick -= w;
                    }
                    chosen
                } else {
                    &m.outbound[gw_of(addr)]
                };
                debug_assert_eq!(t.port, port);
                stamp(t, addr, f);
            }
            let start = Instant::now();
            worker.process_burst(now, port, &mut frames, &mut verdicts);
            let ns = start.elapsed().as_nanos();
            timed_ns += ns;
            let _ = hist.record(ns as u64);
            done += MAX_BURST as u64;
        }
    }
    let after = worker.counters();
    Result {
        clients,
        family,
        ns_per_packet: timed_ns as f64 / done as f64,
        burst_p50_us: hist.value_at_quantile(0.5) as f64 / 1000.0,
        burst_p99_us: hist.value_at_quantile(0.99) as f64 / 1000.0,
        bytes_per_entry: worker.affinity().memory_bytes() as f64 / capacity as f64,
        huge_pages,
        forwarded: after.tx_packets - before.tx_packets,
        dropped: after.total_drops() - before.total_drops(),
    }
}

fn main() {
    let mut sizes = vec![1_000u64, 100_000, 1_000_000, 10_000_000];
    let mut packets = 4_000_000u64;
    let mut families = vec![Family::V4, Family::V6];
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--clients" => {
                sizes = args
                    .next()
                    .expect("--clients N,N,...")
                    .split(',')
                    .map(|s| s.parse().expect("client count"))
                    .collect()
            }
            "--packets" => packets = args.next().expect("--packets N").parse().expect("count"),
            "--family" => {
                families = match args.next().as_deref() {
                    Some("v4") => vec![Family::V4],
                    Some("v6") => vec![Family::V6],
                    _ => vec![Family::V4, Family::V6],
                }
            }
            "--bench" => {}
            other => panic!("unknown argument {other}"),
        }
    }
    println!(
        "pipeline micro-benchmark: one worker, bursts of {MAX_BURST}, {packets} packets per row"
    );
    println!(
        "{:>10} {:>6} {:>12} {:>14} {:>14} {:>12} {:>10} {:>11}",
        "clients",
        "family",
        "ns/packet",
        "burst p50 us",
        "burst p99 us",
        "bytes/entry",
        "dropped",
        "huge pages"
    );
    for family in families {
        let mut first: Option<f64> = None;
        let mut last = 0.0;
        for &n in &sizes {
            if n > max_clients(family) {
                continue;
            }
            let r = run(family, n, packets);
            assert_eq!(r.dropped, 0, "benchmark traffic must all be forwarded");
            assert_eq!(r.forwarded + r.dropped, packets.div_ceil(64) * 64);
            println!(
                "{:>10} {:>6} {:>12.1} {:>14.2} {:>14.2} {:>12.1} {:>10} {:>11}",
                r.clients,
                format!("{:?}", r.family).to_lowercase(),
                r.ns_per_packet,
                r.burst_p50_us,
                r.burst_p99_us,
                r.bytes_per_entry,
                r.dropped,
                if r.huge_pages { "advised" } else { "refused" }
            );
            first.get_or_insert(r.ns_per_packet);
            last = r.ns_per_packet;
        }
        if let Some(f) = first {
            println!(
                "{:>10} {:>6} slowdown smallest -> largest table: {:+.0} %",
                "",
                format!("{family:?}").to_lowercase(),
                (last / f - 1.0) * 100.0
            );
        }
    }
}
