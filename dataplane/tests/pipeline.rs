//! Behaviour of the whole pipeline on the lab appliance (`conf/lab.toml`, `docs/lab.md`):
//! frames built with `testkit` go in through `Pipeline::process`, and what comes out is checked with
//! the `wire` views and against expectations computed independently (Maglev tables built here,
//! checksums verified from scratch).

mod common;

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use common::*;
use dataplane::affinity::{AffinityValue, Remap};
use dataplane::classify::Class;
use dataplane::counters::DropReason;
use dataplane::frame::{Frame, VecFrame};
use dataplane::model::{ApplianceSpec, GatewaySpec, InterfaceSpec, NeighborSpec, Role, Snapshot};
use dataplane::pipeline::{Pipeline, Verdict};
use dataplane::schedule::{GatewayState, SchedulerKind};
use dataplane::wire::arp::{ArpPacket, ARP_REPLY, ARP_REQUEST};
use dataplane::wire::ethernet::{EthernetAddress, EthernetFrame, Vlan};
use dataplane::wire::icmp::Icmpv4Packet;
use dataplane::wire::icmpv6::{
    self, icmpv6_type, Icmpv6Packet, NdpNeighbor, NDP_FLAG_OVERRIDE, NDP_FLAG_ROUTER,
    NDP_FLAG_SOLICITED,
};
use dataplane::wire::ike::{exchange, flags as ike_flags};
use dataplane::wire::ip_proto;
use dataplane::wire::ipv4::Ipv4Packet;
use dataplane::wire::ipv6::Ipv6Packet;
use dataplane::wire::tcp::TcpPacket;
use dataplane::wire::udp::UdpPacket;
use proptest::prelude::*;
use testkit::{lab, tcp_flags, Ipv4Opts, Ipv6Ext, SplitMix64, L2, L4};

// ---- fixtures ----------------------------------------------------------------------------

/// The affinity entry of a client of the lab's only service, if any.
fn entry_of(w: &Pipeline, client: IpAddr) -> Option<AffinityValue> {
    w.affinity()
        .iter()
        .find(|(k, _)| k.client_ip() == client && k.service == 0)
        .map(|(_, v)| v)
}

/// An IKE_AUTH request behind the non-ESP marker, as sent on UDP 4500; `len` bytes in all.
fn ike_auth_natt(spi: u64, len: usize) -> Vec<u8> {
    // Marker (4) + IKE header (28) + SK payload header (4) + body.
    let body = vec![0x3c; len - 36];
    let ike = testkit::ike_message(
        spi,
        spi ^ 0xffff,
        exchange::IKE_AUTH,
        ike_flags::INITIATOR,
        1,
        &body,
    );
    let p = testkit::non_esp_marker(&ike);
    assert_eq!(p.len(), len);
    p
}

/// One client's flows of every kind the service carries, IPv4, each named.
fn client_flows4(c: Ipv4Addr) -> Vec<(&'static str, Vec<u8>)> {
    let spi = spi_of(c.into());
    let r = from_router();
    let vip = lab::VIP_V4;
    let o = Ipv4Opts::default();
    let hello = testkit::tls_client_hello(Some("vpn.lab.example"));
    vec![
        ("IKE on 500", udp4(r, c, vip, 500, 500, &ike_sa_init(spi))),
        (
            "IKE on 4500",
            udp4(r, c, vip, 4500, 4500, &ike_auth_natt(spi, 300)),
        ),
        (
            "ESP in UDP",
            udp4(
                r,
                c,
                vip,
                4500,
                4500,
                &testkit::esp_payload(0xc000_0001, 7, 120),
            ),
        ),
        (
            "NAT-T keepalive",
            udp4(r, c, vip, 4500, 4500, &testkit::NATT_KEEPALIVE),
        ),
        (
            "ESP",
            testkit::ipv4(
                &r,
                c,
                vip,
                &o,
                &L4::Esp {
                    spi: 0xc000_0002,
                    seq: 7,
                    payload: &[0x77; 100],
                },
            ),
        ),
        (
            "TLS ClientHello",
            testkit::ipv4(
                &r,
                c,
                vip,
                &o,
                &L4::Tcp {
                    src: 50_443,
                    dst: 443,
                    seq: 1,
                    ack: 0,
                    flags: tcp_flags::PSH | tcp_flags::ACK,
                    payload: &hello,
                },
            ),
        ),
        (
            "DTLS ClientHello",
            udp4(
                r,
                c,
                vip,
                50_444,
                443,
                &testkit::dtls_client_hello(&[], Some("vpn.lab.example")),
            ),
        ),
    ]
}

/// The same for an IPv6 client.
fn client_flows6(c: Ipv6Addr) -> Vec<(&'static str, Vec<u8>)> {
    let spi = spi_of(c.into());
    let r = from_router();
    let vip = lab::VIP_V6;
    let hello = testkit::tls_client_hello(Some("vpn.lab.example"));
    vec![
        ("IKE on 500", udp6(r, c, vip, 500, 500, &ike_sa_init(spi))),
        (
            "IKE on 4500",
            udp6(r, c, vip, 4500, 4500, &ike_auth_natt(spi, 300)),
        ),
        (
            "ESP in UDP",
            udp6(
                r,
                c,
                vip,
                4500,
                4500,
                &testkit::esp_payload(0xc000_0003, 7, 120),
            ),
        ),
        (
            "NAT-T keepalive",
            udp6(r, c, vip, 4500, 4500, &testkit::NATT_KEEPALIVE),
        ),
        (
            "ESP",
            testkit::ipv6(
                &r,
                &c,
                &vip,
                64,
                &[],
                &L4::Esp {
                    spi: 0xc000_0004,
                    seq: 7,
                    payload: &[0x77; 100],
                },
            ),
        ),
        (
            "TLS ClientHello",
            testkit::ipv6(
                &r,
                &c,
                &vip,
                64,
                &[],
                &L4::Tcp {
                    src: 50_443,
                    dst: 443,
                    seq: 1,
                    ack: 0,
                    flags: tcp_flags::PSH | tcp_flags::ACK,
                    payload: &hello,
                },
            ),
        ),
        (
            "DTLS ClientHello",
            udp6(
                r,
                c,
                vip,
                50_444,
                443,
                &testkit::dtls_client_hello(&[], Some("vpn.lab.example")),
            ),
        ),
    ]
}

/// Sends a client's IKE_SA_INIT and its gateway's answer, so the client is confirmed; returns
/// the gateway.
fn confirm4(w: &mut Pipeline, now: u32, c: Ipv4Addr) -> usize {
    let g = gateway_of4(&tx_at(w, now, CLIENT_PORT, &client_ike4(c), BACKEND_PORT));
    let reply = udp4(
        from_gateway(g),
        lab::GATEWAYS_V4[g],
        c,
        500,
        500,
        &ike_sa_init_reply(1),
    );
    tx_at(w, now, BACKEND_PORT, &reply, CLIENT_PORT);
    // The client's IKE_AUTH carries the responder SPI: it saw the answer, it is established.
    tx_at(
        w,
        now,
        CLIENT_PORT,
        &client_ike_auth(c.into(), 1),
        BACKEND_PORT,
    );
    g
}

/// An IPv6 client's handshake as `confirm4`, without expecting it to succeed: its
/// IKE_SA_INIT, the gateway's answer and its IKE_AUTH; returns the IKE_AUTH's verdict (the
/// IKE_SA_INIT's when that was not forwarded).
fn establish6(w: &mut Pipeline, now: u32, c: Ipv6Addr) -> Verdict {
    let (v, out) = run_at(w, now, CLIENT_PORT, &client_ike6(c));
    if v != (Verdict::Tx { port: BACKEND_PORT }) {
        return v;
    }
    let g = gateway_of6(&out);
    let reply = udp6(
        from_gateway(g),
        lab::GATEWAYS_V6[g],
        c,
        500,
        500,
        &ike_sa_init_reply(1),
    );
    tx_at(w, now, BACKEND_PORT, &reply, CLIENT_PORT);
    run_at(w, now, CLIENT_PORT, &client_ike_auth(c.into(), 1)).0
}

/// Issue 15: whoever owns an IPv6 /64 needs no spoofing: it completes real handshakes from as
/// many of its 2^64 addresses as it likes, and established entries are never evicted. Here
/// 1 000 of them against a 256-entry shard (which they would fill): the /64 gets its quota
/// (64 per shard by default) and no more, and a client of another /64 is still established.
#[test]
fn one_ipv6_prefix_cannot_take_the_shard() {
    let mut w = worker(with_affinity(lab_spec(), 256, 64));
    let base = u128::from(Ipv6Addr::new(0x2001, 2, 0, 0x99, 0, 0, 0, 0));
    let mut established = 0;
    for i in 0..1000u32 {
        let v = establish6(&mut w, 10, Ipv6Addr::from(base + u128::from(i) + 1));
        if v == (Verdict::Tx { port: BACKEND_PORT }) {
            established += 1;
        }
    }
    let victim = client_v6(7);
    assert_eq!(
        establish6(&mut w, 11, victim),
        Verdict::Tx { port: BACKEND_PORT },
        "a client of another /64 is established"
    );
    let e = w.affinity().peek(
        &dataplane::affinity::AffinityKey::new(victim.into(), 0),
        dataplane::affinity::AffinityKey::new(victim.into(), 0).hash(),
    );
    assert!(e.is_some_and(|v| v.confirmed), "victim entry {e:?}");
    assert_eq!(established, 64, "the attacker's /64 established its quota");
    assert_eq!(w.affinity().confirmed_len(), 65);

    let cnt = w.counters();
    assert_eq!(cnt.dropped(DropReason::PrefixQuota), 1000 - 64);
    assert_eq!(cnt.affinity.prefix_quota, 1000 - 64);
    assert_eq!(cnt.dropped(DropReason::TableFull), 0);
    assert_eq!(cnt.clients.established, 65);
    assert_balanced(&w);
}

/// The first lab client (from `from`) that Maglev over gw1..gw3 sends to gateway `g`.
fn client_on(g: usize, from: u32) -> Ipv4Addr {
    (from..from + 1000)
        .map(client_v4)
        .find(|c| lab_gateway((*c).into()) == g)
        .expect("some client maps to every gateway")
}

/// Strips the Ethernet header: the IP packet as an ICMP error would quote it.
fn ip_part(frame: &[u8]) -> Vec<u8> {
    let eth = EthernetFrame::new_checked(frame).expect("Ethernet");
    frame[eth.header_len()..].to_vec()
}

/// Positions where two equally long byte strings differ.
fn diff(a: &[u8], b: &[u8]) -> Vec<usize> {
    assert_eq!(a.len(), b.len(), "lengths");
    (0..a.len()).filter(|&i| a[i] != b[i]).collect()
}

// ---- 1. the first packet of a client --------------------------------------------------------

#[test]
fn ike_sa_init_goes_to_the_maglev_gateway_with_only_the_destination_rewritten() {
    // The full lab configuration, 1 M-entry shard included, as the daemon runs it.
    let mut w = worker(lab_spec());
    let client = Ipv4Addr::new(198, 18, 64, 7);
    let ike = ike_sa_init(0x0102_0304_0506_0708);
    let input = udp4(from_router(), client, lab::VIP_V4, 500, 500, &ike);
    let out = tx(&mut w, CLIENT_PORT, &input, BACKEND_PORT);

    let g = maglev_pick(&maglev_table(&[1, 1, 1]), client.into());
    let o = out4(&out);
    assert_eq!(o.eth.dst(), lab::GATEWAY_MACS[g]);
    assert_eq!(o.eth.src(), lab::BACKEND_PORT_MAC);
    assert_eq!(o.eth.vlan(), Vlan::Untagged);
    assert_eq!(o.ip.src_addr(), client);
    assert_eq!(o.ip.dst_addr(), lab::GATEWAYS_V4[g]);
    assert_eq!(o.ip.ttl(), 63);
    assert_eq!(o.ip.protocol(), ip_proto::UDP);
    let udp = o.udp();
    assert_eq!((udp.src_port(), udp.dst_port()), (500, 500));
    assert_eq!(udp.payload(), &ike[..]);
    // Nothing else moved: MACs (0..12), TTL (22), IP checksum (24, 25), destination (30..34),
    // UDP checksum (40, 41).
    let changed = diff(&input, &out);
    assert!(
        changed
            .iter()
            .all(|i| matches!(i, 0..=11 | 22 | 24 | 25 | 30..=33 | 40 | 41)),
        "unexpected changes at {changed:?}"
    );
    let c = w.counters();
    assert_eq!((c.rx_packets, c.tx_packets, c.clients.scheduled), (1, 1, 1));
    assert_eq!(c.gateways[0][g].to_gateway_packets, 1);
    assert_eq!(c.gateways[0][g].new_clients, 1);
    let e = entry_of(&w, client.into()).expect("an entry");
    assert_eq!((usize::from(e.gateway), e.confirmed), (g, false));
    assert_eq!(e.expires_at, NOW + 30);
}

// ---- 2. all of a client's flows go to one gateway -----------------------------------------

#[test]
fn every_protocol_of_a_client_follows_it_to_one_gateway() {
    let mut w = test_worker();
    let mut per_gateway = [0u32; 3];
    for i in 0..200 {
        let c = client_v4(i);
        let g = lab_gateway(c.into());
        per_gateway[g] += 1;
        for (kind, frame) in client_flows4(c) {
            let out = tx(&mut w, CLIENT_PORT, &frame, BACKEND_PORT);
            assert_eq!(gateway_of4(&out), g, "{kind} of {c}");
            let o = out4(&out);
            assert_eq!(o.ip.src_addr(), c);
            match o.ip.protocol() {
                ip_proto::UDP => {
                    o.udp();
                }
                ip_proto::TCP => {
                    let tcp = TcpPacket::new_checked(o.l4).expect("TCP");
                    assert!(
                        tcp.verify_checksum_v4(c, lab::GATEWAYS_V4[g]),
                        "TCP checksum"
                    );
                    assert_eq!(tcp.dst_port(), 443);
                }
                p => assert_eq!(p, ip_proto::ESP),
            }
        }
    }
    // Maglev over three equal gateways spreads 200 clients roughly evenly.
    assert!(per_gateway.iter().all(|&n| n > 40), "{per_gateway:?}");
    let c = w.counters();
    assert_eq!(c.class(Class::Ike), 400);
    assert_eq!(c.class(Class::EspInUdp), 200);
    assert_eq!(c.class(Class::NattKeepalive), 200);
    assert_eq!(c.class(Class::Esp), 200);
    assert_eq!(c.class(Class::Tls), 200);
    assert_eq!(c.class(Class::Dtls), 200);
    assert_eq!(c.class(Class::Fragment), 0);
    assert_eq!(c.class(Class::Other), 0);
    assert_eq!((c.tls_client_hellos, c.dtls_client_hellos), (200, 200));
    assert_eq!(c.clients.scheduled, 200);
    assert_eq!(c.tx_packets, 1400);
    assert_eq!(w.affinity().len(), 200);
    for (g, n) in per_gateway.iter().enumerate() {
        assert_eq!(c.gateways[0][g].new_clients, u64::from(*n));
        assert_eq!(c.gateways[0][g].to_gateway_packets, 7 * u64::from(*n));
    }
    assert_eq!(
        w.sni_stats().top().first().map(|(s, _)| s.as_str()),
        Some("vpn.lab.example")
    );
}

// ---- 3. return traffic -------------------------------------------------------------------

#[test]
fn return_traffic_leaves_from_the_vip_and_confirms_the_client() {
    let mut w = test_worker();
    let c = client_v4(7);
    let g = gateway_of4(&tx(&mut w, CLIENT_PORT, &client_ike4(c), BACKEND_PORT));
    assert!(!entry_of(&w, c.into()).expect("entry").confirmed);

    let reply = ike_sa_init_reply(spi_of(c.into()));
    let input = udp4(from_gateway(g), lab::GATEWAYS_V4[g], c, 500, 500, &reply);
    let out = tx(&mut w, BACKEND_PORT, &input, CLIENT_PORT);
    let o = out4(&out);
    assert_eq!(o.eth.dst(), lab::ROUTER_MAC);
    assert_eq!(o.eth.src(), lab::CLIENT_PORT_MAC);
    assert_eq!(o.ip.src_addr(), lab::VIP_V4);
    assert_eq!(o.ip.dst_addr(), c);
    assert_eq!(o.ip.ttl(), 63);
    let udp = o.udp();
    assert_eq!((udp.src_port(), udp.dst_port()), (500, 500));
    assert_eq!(udp.payload(), &reply[..]);
    let changed = diff(&input, &out);
    assert!(
        changed
            .iter()
            .all(|i| matches!(i, 0..=11 | 22 | 24 | 25 | 26..=29 | 40 | 41)),
        "unexpected changes at {changed:?}"
    );
    // The answer alone establishes nothing (gateways answer spoofed traffic too); the
    // client's IKE_AUTH, carrying the responder SPI only the answer showed, does.
    assert!(!entry_of(&w, c.into()).expect("entry").confirmed);
    tx(
        &mut w,
        CLIENT_PORT,
        &client_ike_auth(c.into(), spi_of(c.into())),
        BACKEND_PORT,
    );

    let e = entry_of(&w, c.into()).expect("entry");
    assert_eq!((usize::from(e.gateway), e.confirmed), (g, true));
    assert_eq!(e.expires_at, NOW + 3600);
    let cnt = w.counters();
    assert_eq!(cnt.affinity.confirmed, 1);
    assert_eq!(cnt.clients.learned_from_gateway, 0);
    assert_eq!(cnt.clients.gateway_mismatch, 0);
    assert_eq!(cnt.gateways[0][g].from_gateway_packets, 1);
    assert_eq!(
        cnt.gateways[0][g].from_gateway_bytes,
        (input.len() - 14) as u64
    );
}

/// A second VIP on the client subnet, of a service sharing the lab service's gateways.
const VIP_B_V4: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 101);
const VIP_B_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 2, 0, 1, 0, 0, 0, 0x101);

/// The lab with a second service, `ike-b` on [`VIP_B_V4`] / [`VIP_B_V6`]: same protocols,
/// ports and gateways as the first.
fn two_services_sharing_gateways() -> Pipeline {
    let mut spec = test_spec();
    let mut b = spec.services[0].clone();
    b.name = "ike-b".into();
    b.vip4 = Some(VIP_B_V4);
    b.vip6 = Some(VIP_B_V6);
    spec.services.push(b);
    worker(spec)
}

/// An IKE message from `c` to `vip` (UDP 500).
fn ike_to(c: IpAddr, vip: IpAddr, msg: &[u8]) -> Vec<u8> {
    match (c, vip) {
        (IpAddr::V4(c), IpAddr::V4(v)) => udp4(from_router(), c, v, 500, 500, msg),
        (IpAddr::V6(c), IpAddr::V6(v)) => udp6(from_router(), c, v, 500, 500, msg),
        _ => unreachable!("one family"),
    }
}

#[test]
fn with_two_services_sharing_gateways_replies_leave_from_the_clients_vip() {
    let mut w = two_services_sharing_gateways();
    let spi = |c: IpAddr| spi_of(c);
    let auth = |c: IpAddr| {
        testkit::ike_message(
            spi(c),
            spi(c) ^ 0xffff,
            exchange::IKE_AUTH,
            ike_flags::INITIATOR,
            1,
            &[0x5a; 96],
        )
    };
    // (client, its VIP): one client of each service, IPv4 and IPv6.
    let cases: [(IpAddr, IpAddr); 4] = [
        (client_v4(8).into(), VIP_B_V4.into()),
        (client_v4(9).into(), lab::VIP_V4.into()),
        (client_v6(8).into(), VIP_B_V6.into()),
        (client_v6(9).into(), lab::VIP_V6.into()),
    ];
    for (c, vip) in cases {
        let (g, gw) = match c {
            IpAddr::V4(_) => {
                let g = gateway_of4(&tx(
                    &mut w,
                    CLIENT_PORT,
                    &ike_to(c, vip, &ike_sa_init(spi(c))),
                    BACKEND_PORT,
                ));
                (g, IpAddr::V4(lab::GATEWAYS_V4[g]))
            }
            IpAddr::V6(_) => {
                let g = gateway_of6(&tx(
                    &mut w,
                    CLIENT_PORT,
                    &ike_to(c, vip, &ike_sa_init(spi(c))),
                    BACKEND_PORT,
                ));
                (g, IpAddr::V6(lab::GATEWAYS_V6[g]))
            }
        };
        let from_gw = |sport: u16, payload: &[u8]| match (gw, c) {
            (IpAddr::V4(gw), IpAddr::V4(c)) => udp4(from_gateway(g), gw, c, sport, sport, payload),
            (IpAddr::V6(gw), IpAddr::V6(c)) => udp6(from_gateway(g), gw, c, sport, sport, payload),
            _ => unreachable!("one family"),
        };
        let source = |out: &[u8]| match c {
            IpAddr::V4(_) => IpAddr::V4(out4(out).ip.src_addr()),
            IpAddr::V6(_) => IpAddr::V6(out6(out).ip.src_addr()),
        };
        // The gateway's answer (the general path), then, once the client is established,
        // its NAT-T traffic (which the fast path would take with one service).
        let out = tx(
            &mut w,
            BACKEND_PORT,
            &from_gw(500, &ike_sa_init_reply(spi(c))),
            CLIENT_PORT,
        );
        assert_eq!(source(&out), vip, "IKE_SA_INIT answer to {c}");
        tx(&mut w, CLIENT_PORT, &ike_to(c, vip, &auth(c)), BACKEND_PORT);
        // Within the client port's MTU whole; the 2500-byte one below comes in fragments.
        let whole = from_gw(4500, &ike_auth_natt(spi(c), 1000));
        let out = tx(&mut w, BACKEND_PORT, &whole, CLIENT_PORT);
        assert_eq!(source(&out), vip, "NAT-T from the gateway to {c}");
        let natt = from_gw(4500, &ike_auth_natt(spi(c), 2500));
        // Non-first fragments carry no port: the client's entry still decides.
        let frags = match c {
            IpAddr::V4(_) => testkit::fragment_ipv4(&natt, 1500),
            IpAddr::V6(_) => testkit::fragment_ipv6(&natt, 1500, 7),
        };
        for f in &frags {
            let out = tx(&mut w, BACKEND_PORT, f, CLIENT_PORT);
            assert_eq!(source(&out), vip, "fragment to {c}");
        }
    }
    let cnt = w.counters();
    assert_eq!(cnt.clients.learned_from_gateway, 0);
    assert_eq!(cnt.clients.gateway_mismatch, 0);
    assert_balanced(&w);
}

#[test]
fn gateway_traffic_to_an_unknown_client_is_learned_and_kept() {
    let mut w = test_worker();
    // A client Maglev would give gw1, heard first from gw3 (e.g. after a failover to this
    // appliance): the client stays with gw3.
    let c = client_on(0, 0);
    let esp = testkit::esp_payload(0xc100_0001, 1, 80);
    let from_gw3 = udp4(from_gateway(2), lab::GATEWAYS_V4[2], c, 4500, 4500, &esp);
    let out = tx(&mut w, BACKEND_PORT, &from_gw3, CLIENT_PORT);
    assert_eq!(out4(&out).ip.src_addr(), lab::VIP_V4);
    out4(&out).udp();

    // Learned like any new client: unconfirmed until the client proves it sees the gateway.
    let e = entry_of(&w, c.into()).expect("learned entry");
    assert_eq!((e.gateway, e.confirmed), (2, false));
    let cnt = w.counters();
    assert_eq!(cnt.clients.learned_from_gateway, 1);
    assert_eq!(cnt.clients.scheduled, 0);
    assert_eq!(w.active_clients(), vec![vec![0, 0, 1]]);

    let out = tx(&mut w, CLIENT_PORT, &client_ike4(c), BACKEND_PORT);
    assert_eq!(gateway_of4(&out), 2);
    assert_eq!(w.counters().clients.scheduled, 0);
}

#[test]
fn gateway_traffic_for_a_client_of_another_gateway_is_forwarded_and_counted() {
    let mut w = test_worker();
    let c = client_on(0, 0);
    tx(&mut w, CLIENT_PORT, &client_ike4(c), BACKEND_PORT);
    let from_gw2 = udp4(
        from_gateway(1),
        lab::GATEWAYS_V4[1],
        c,
        500,
        500,
        &ike_sa_init_reply(3),
    );
    tx(&mut w, BACKEND_PORT, &from_gw2, CLIENT_PORT);
    assert_eq!(w.counters().clients.gateway_mismatch, 1);
    let e = entry_of(&w, c.into()).expect("entry");
    assert_eq!((e.gateway, e.confirmed), (0, false));
}

#[test]
fn return_traffic_without_a_udp_checksum_keeps_none() {
    let mut w = test_worker();
    let c = client_v4(11);
    let g = gateway_of4(&tx(&mut w, CLIENT_PORT, &client_ike4(c), BACKEND_PORT));
    let opts = Ipv4Opts {
        udp_checksum: false,
        ..Ipv4Opts::default()
    };
    let esp = testkit::esp_payload(0xc100_0002, 9, 96);
    let input = udp4_opts(
        from_gateway(g),
        lab::GATEWAYS_V4[g],
        c,
        &opts,
        4500,
        4500,
        &esp,
    );
    let out = tx(&mut w, BACKEND_PORT, &input, CLIENT_PORT);
    let o = out4(&out);
    assert_eq!(o.ip.src_addr(), lab::VIP_V4);
    let udp = UdpPacket::new_checked(o.l4).expect("UDP");
    assert_eq!(udp.checksum(), 0);
    assert_eq!(udp.payload(), &esp[..]);
}

// ---- 4. flood protection -----------------------------------------------------------------

#[test]
fn a_spoofed_source_flood_cannot_push_out_confirmed_clients() {
    let mut w = worker(with_affinity(lab_spec(), 1024, 64));
    let clients: Vec<Ipv4Addr> = (0..100).map(client_v4).collect();
    let gateways: Vec<usize> = clients.iter().map(|c| confirm4(&mut w, NOW, *c)).collect();
    assert_eq!(w.affinity().confirmed_len(), 100);

    let base = u32::from(Ipv4Addr::new(198, 18, 128, 0));
    for i in 0..10_000u32 {
        let spoofed = Ipv4Addr::from(base + i);
        let (v, _) = run(&mut w, CLIENT_PORT, &client_ike4(spoofed));
        assert_eq!(v, Verdict::Tx { port: BACKEND_PORT }, "flood packet {i}");
        assert!(
            w.affinity().unconfirmed_len() <= 64,
            "after flood packet {i}"
        );
    }
    let cnt = w.counters();
    assert_eq!(cnt.affinity.evicted_unconfirmed, 10_000 - 64);
    assert_eq!(cnt.affinity.insert_full, 0);
    assert_eq!(cnt.dropped(DropReason::TableFull), 0);
    assert_eq!(w.affinity().unconfirmed_len(), 64);
    assert_eq!(w.affinity().confirmed_len(), 100);
    for (c, g) in clients.iter().zip(&gateways) {
        let e = entry_of(&w, (*c).into()).expect("confirmed entry survived");
        assert_eq!((usize::from(e.gateway), e.confirmed), (*g, true), "{c}");
        let out = tx(&mut w, CLIENT_PORT, &client_ike4(*c), BACKEND_PORT);
        assert_eq!(gateway_of4(&out), *g, "{c}");
    }
    // The genuine clients were not scheduled again.
    assert_eq!(w.counters().clients.scheduled, 100 + 10_000);
    // Least-connections input stays consistent with the table.
    let active: u32 = w.active_clients()[0].iter().sum();
    assert_eq!(active as usize, w.affinity().len());
}

// ---- 5. gateway states -------------------------------------------------------------------

fn spec_with_states(states: [GatewayState; 3]) -> ApplianceSpec {
    let mut spec = test_spec();
    for (gw, s) in spec.services[0].gateways.iter_mut().zip(states) {
        gw.state = s;
    }
    spec
}

#[test]
fn clients_of_a_down_gateway_move_and_nobody_else_does() {
    use GatewayState::{Down, Up};
    let mut w = test_worker();
    let clients: Vec<Ipv4Addr> = (0..300).map(client_v4).collect();
    let before: Vec<usize> = clients
        .iter()
        .map(|c| gateway_of4(&tx(&mut w, CLIENT_PORT, &client_ike4(*c), BACKEND_PORT)))
        .collect();
    let on_gw2 = before.iter().filter(|&&g| g == 1).count();
    assert!(on_gw2 > 50, "{on_gw2} clients on gw2");

    w.adopt(snapshot(spec_with_states([Up, Down, Up]), 2));
    // The table is the same; gw2's slots fall through to the next eligible one.
    let table = maglev_table(&[1, 1, 1]);
    let states = [Up, Down, Up];
    for (c, g) in clients.iter().zip(&before) {
        let now = gateway_of4(&tx(&mut w, CLIENT_PORT, &client_ike4(*c), BACKEND_PORT));
        if *g == 1 {
            assert_ne!(now, 1);
            assert_eq!(
                now,
                maglev_pick_eligible(&table, &states, (*c).into()),
                "{c} moved off gw2"
            );
        } else {
            assert_eq!(now, *g, "{c} stays");
        }
    }
    let cnt = w.counters();
    assert_eq!(cnt.clients.rescheduled, on_gw2 as u64);
    assert_eq!(cnt.clients.scheduled, 300);
    // Moved clients stay moved (no second reschedule), new clients avoid gw2.
    for c in &clients {
        tx(&mut w, CLIENT_PORT, &client_ike4(*c), BACKEND_PORT);
    }
    for i in 300..600 {
        let out = tx(
            &mut w,
            CLIENT_PORT,
            &client_ike4(client_v4(i)),
            BACKEND_PORT,
        );
        assert_ne!(gateway_of4(&out), 1);
    }
    assert_eq!(w.counters().clients.rescheduled, on_gw2 as u64);
    assert_eq!(w.active_clients()[0][1], 0);
}

#[test]
fn a_draining_gateway_keeps_its_clients_but_gets_no_new_ones() {
    use GatewayState::{Draining, Up};
    let mut w = test_worker();
    let clients: Vec<Ipv4Addr> = (0..300).map(client_v4).collect();
    let before: Vec<usize> = clients
        .iter()
        .map(|c| gateway_of4(&tx(&mut w, CLIENT_PORT, &client_ike4(*c), BACKEND_PORT)))
        .collect();
    let on_gw1 = before.iter().filter(|&&g| g == 0).count();
    assert!(on_gw1 > 50);

    w.adopt(snapshot(spec_with_states([Draining, Up, Up]), 2));
    for (c, g) in clients.iter().zip(&before) {
        let out = tx(&mut w, CLIENT_PORT, &client_ike4(*c), BACKEND_PORT);
        assert_eq!(gateway_of4(&out), *g, "{c} stays");
    }
    let table = maglev_table(&[1, 1, 1]);
    let states = [Draining, Up, Up];
    for i in 300..900 {
        let c = client_v4(i);
        let out = tx(&mut w, CLIENT_PORT, &client_ike4(c), BACKEND_PORT);
        let g = gateway_of4(&out);
        assert_ne!(g, 0, "new client {c} on the draining gw1");
        assert_eq!(g, maglev_pick_eligible(&table, &states, c.into()));
    }
    let cnt = w.counters();
    assert_eq!(cnt.clients.rescheduled, 0);
    assert_eq!(cnt.gateways[0][0].new_clients, on_gw1 as u64);
    assert_eq!(w.active_clients()[0][0], on_gw1 as u32);
}

#[test]
fn with_every_gateway_down_client_packets_drop_as_no_gateway() {
    use GatewayState::Down;
    let mut w = test_worker();
    let known = client_v4(1);
    tx(&mut w, CLIENT_PORT, &client_ike4(known), BACKEND_PORT);
    w.adopt(snapshot(spec_with_states([Down, Down, Down]), 2));
    for c in [known, client_v4(2)] {
        let (v, _) = run(&mut w, CLIENT_PORT, &client_ike4(c));
        assert_eq!(v, Verdict::Drop(DropReason::NoGateway), "{c}");
    }
    let (v, _) = run(&mut w, CLIENT_PORT, &client_ike6(client_v6(1)));
    assert_eq!(v, Verdict::Drop(DropReason::NoGateway));
    assert_eq!(w.counters().dropped(DropReason::NoGateway), 3);
    assert_balanced(&w);
}

// ---- 6. schedulers -----------------------------------------------------------------------

fn spec_with(kind: SchedulerKind, weights: [u32; 3]) -> ApplianceSpec {
    let mut spec = test_spec();
    spec.services[0].scheduler = kind;
    for (gw, wt) in spec.services[0].gateways.iter_mut().zip(weights) {
        gw.weight = wt;
    }
    spec
}

/// New clients per gateway after `n` IKE_SA_INITs from distinct clients.
fn spread(w: &mut Pipeline, n: u32) -> [u32; 3] {
    let mut per = [0u32; 3];
    for i in 0..n {
        let out = tx(w, CLIENT_PORT, &client_ike4(client_v4(i)), BACKEND_PORT);
        per[gateway_of4(&out)] += 1;
    }
    per
}

#[test]
fn least_conn_spreads_new_clients_evenly() {
    let mut w = worker(spec_with(SchedulerKind::LeastConn, [1, 1, 1]));
    let per = spread(&mut w, 300);
    assert!(per.iter().all(|n| (99..=101).contains(n)), "{per:?}");
    assert_eq!(w.active_clients(), vec![per.to_vec()]);
}

#[test]
fn least_conn_follows_weights() {
    let mut w = worker(spec_with(SchedulerKind::LeastConn, [2, 1, 1]));
    let per = spread(&mut w, 400);
    assert!((199..=201).contains(&per[0]), "{per:?}");
    assert!(
        (99..=101).contains(&per[1]) && (99..=101).contains(&per[2]),
        "{per:?}"
    );
}

#[test]
fn maglev_follows_weights() {
    let mut w = worker(spec_with(SchedulerKind::Maglev, [2, 1, 1]));
    let table = maglev_table(&[2, 1, 1]);
    let mut per = [0u32; 3];
    for i in 0..4000 {
        let c = client_v4(i);
        let g = gateway_of4(&tx(&mut w, CLIENT_PORT, &client_ike4(c), BACKEND_PORT));
        assert_eq!(g, maglev_pick(&table, c.into()), "{c}");
        per[g] += 1;
    }
    // Expected 2000 / 1000 / 1000; the client hash adds binomial noise (sd ~ 30).
    assert!((1850..=2150).contains(&per[0]), "{per:?}");
    assert!(
        (900..=1100).contains(&per[1]) && (900..=1100).contains(&per[2]),
        "{per:?}"
    );
}

#[test]
fn round_robin_gives_the_smooth_weighted_sequence() {
    let mut w = worker(spec_with(SchedulerKind::RoundRobin, [5, 1, 1]));
    let seq: Vec<usize> = (0..14)
        .map(|i| {
            gateway_of4(&tx(
                &mut w,
                CLIENT_PORT,
                &client_ike4(client_v4(i)),
                BACKEND_PORT,
            ))
        })
        .collect();
    // nginx: a a b a c a a, twice.
    assert_eq!(seq, [0, 0, 1, 0, 2, 0, 0, 0, 0, 1, 0, 2, 0, 0]);

    let mut w = worker(spec_with(SchedulerKind::RoundRobin, [1, 1, 1]));
    let seq: Vec<usize> = (0..6)
        .map(|i| {
            gateway_of4(&tx(
                &mut w,
                CLIENT_PORT,
                &client_ike4(client_v4(i)),
                BACKEND_PORT,
            ))
        })
        .collect();
    assert_eq!(seq, [0, 1, 2, 0, 1, 2]);
}

// ---- 7. two appliances -------------------------------------------------------------------

#[test]
fn two_appliances_with_the_same_config_agree_on_every_client() {
    // Separately built snapshots, as two appliances would build them.
    let mut a = worker(test_spec());
    let mut b = worker(test_spec());
    let n = 1000;
    let mut on_a = HashMap::new();
    for i in 0..n {
        let c = client_v4(i);
        on_a.insert(
            IpAddr::V4(c),
            gateway_of4(&tx(&mut a, CLIENT_PORT, &client_ike4(c), BACKEND_PORT)),
        );
        let c6 = client_v6(i);
        on_a.insert(
            IpAddr::V6(c6),
            gateway_of6(&tx(&mut a, CLIENT_PORT, &client_ike6(c6), BACKEND_PORT)),
        );
    }
    // B sees the clients in the opposite order.
    for i in (0..n).rev() {
        let c = client_v4(i);
        let g = gateway_of4(&tx(&mut b, CLIENT_PORT, &client_ike4(c), BACKEND_PORT));
        assert_eq!(g, on_a[&IpAddr::V4(c)], "{c}");
        let c6 = client_v6(i);
        let g = gateway_of6(&tx(&mut b, CLIENT_PORT, &client_ike6(c6), BACKEND_PORT));
        assert_eq!(g, on_a[&IpAddr::V6(c6)], "{c6}");
    }
}

// ---- 8. TTL ------------------------------------------------------------------------------

#[test]
fn ttl_1_and_hop_limit_1_are_not_forwarded() {
    let mut w = test_worker();
    let c = client_v4(3);
    let opts = Ipv4Opts {
        ttl: 1,
        ..Ipv4Opts::default()
    };
    let f = udp4_opts(
        from_router(),
        c,
        lab::VIP_V4,
        &opts,
        500,
        500,
        &ike_sa_init(1),
    );
    assert_eq!(
        run(&mut w, CLIENT_PORT, &f).0,
        Verdict::Drop(DropReason::TtlExpired)
    );
    let f = udp6_ext(
        from_router(),
        client_v6(3),
        lab::VIP_V6,
        1,
        &[],
        500,
        500,
        &ike_sa_init(2),
    );
    assert_eq!(
        run(&mut w, CLIENT_PORT, &f).0,
        Verdict::Drop(DropReason::TtlExpired)
    );
    // Return traffic too.
    let f = udp4_opts(
        from_gateway(0),
        lab::GATEWAYS_V4[0],
        c,
        &opts,
        500,
        500,
        &ike_sa_init_reply(1),
    );
    assert_eq!(
        run(&mut w, BACKEND_PORT, &f).0,
        Verdict::Drop(DropReason::TtlExpired)
    );
    assert_eq!(w.counters().dropped(DropReason::TtlExpired), 3);
    // TTL 2 still goes through, with TTL 1.
    let opts = Ipv4Opts {
        ttl: 2,
        ..Ipv4Opts::default()
    };
    let f = udp4_opts(
        from_router(),
        c,
        lab::VIP_V4,
        &opts,
        500,
        500,
        &ike_sa_init(1),
    );
    assert_eq!(out4(&tx(&mut w, CLIENT_PORT, &f, BACKEND_PORT)).ip.ttl(), 1);
    assert_balanced(&w);
}

// ---- 9. ARP and neighbor discovery -------------------------------------------------------

fn arp_request(l2: L2, sender_mac: EthernetAddress, sender: Ipv4Addr, target: Ipv4Addr) -> Vec<u8> {
    testkit::arp(
        &l2,
        ARP_REQUEST,
        sender_mac,
        sender,
        EthernetAddress([0; 6]),
        target,
    )
}

#[test]
fn arp_requests_for_the_vip_and_our_addresses_are_answered_in_place() {
    let mut w = test_worker();
    let bcast = L2::new(lab::ROUTER_MAC, EthernetAddress::BROADCAST);
    for target in [lab::VIP_V4, CLIENT_ITF_V4] {
        let req = arp_request(bcast, lab::ROUTER_MAC, ROUTER_V4, target);
        let out = tx(&mut w, CLIENT_PORT, &req, CLIENT_PORT);
        let eth = EthernetFrame::new_checked(&out[..]).expect("Ethernet");
        assert_eq!(eth.dst(), lab::ROUTER_MAC);
        assert_eq!(eth.src(), lab::CLIENT_PORT_MAC);
        let arp = ArpPacket::new_checked(&out[14..]).expect("ARP");
        assert_eq!(arp.operation(), ARP_REPLY);
        assert_eq!(arp.sender_hw(), lab::CLIENT_PORT_MAC);
        assert_eq!(arp.sender_ip(), target);
        assert_eq!(arp.target_hw(), lab::ROUTER_MAC);
        assert_eq!(arp.target_ip(), ROUTER_V4);
    }
    // The backend port answers for its own address, with its own MAC.
    let req = arp_request(
        L2::new(lab::GATEWAY_MACS[0], EthernetAddress::BROADCAST),
        lab::GATEWAY_MACS[0],
        lab::GATEWAYS_V4[0],
        BACKEND_ITF_V4,
    );
    let out = tx(&mut w, BACKEND_PORT, &req, BACKEND_PORT);
    let arp = ArpPacket::new_checked(&out[14..]).expect("ARP");
    assert_eq!(
        (arp.sender_hw(), arp.sender_ip()),
        (lab::BACKEND_PORT_MAC, BACKEND_ITF_V4)
    );
    assert_eq!(w.counters().arp_replies, 3);

    // Not ours, or the VIP asked on the backend side: not answered.
    let req = arp_request(
        bcast,
        lab::ROUTER_MAC,
        ROUTER_V4,
        Ipv4Addr::new(198, 18, 0, 77),
    );
    assert_eq!(
        run(&mut w, CLIENT_PORT, &req).0,
        Verdict::Drop(DropReason::ArpUnhandled)
    );
    let req = arp_request(
        L2::new(lab::GATEWAY_MACS[0], EthernetAddress::BROADCAST),
        lab::GATEWAY_MACS[0],
        lab::GATEWAYS_V4[0],
        lab::VIP_V4,
    );
    assert_eq!(
        run(&mut w, BACKEND_PORT, &req).0,
        Verdict::Drop(DropReason::ArpUnhandled)
    );
    assert_eq!(w.counters().dropped(DropReason::ArpUnhandled), 2);
    // Replies and gratuitous ARP are not answered: they go to the control plane's neighbor
    // cache.
    let reply = testkit::arp(
        &bcast,
        ARP_REPLY,
        lab::ROUTER_MAC,
        ROUTER_V4,
        lab::CLIENT_PORT_MAC,
        CLIENT_ITF_V4,
    );
    assert_eq!(run(&mut w, CLIENT_PORT, &reply).0, Verdict::ToControl);
    let gratuitous = testkit::arp(
        &bcast,
        ARP_REQUEST,
        lab::ROUTER_MAC,
        ROUTER_V4,
        EthernetAddress::default(),
        ROUTER_V4,
    );
    assert_eq!(run(&mut w, CLIENT_PORT, &gratuitous).0, Verdict::ToControl);
    assert_eq!(w.counters().to_control, 2);
    assert_balanced(&w);
}

#[test]
fn unresolved_next_hops_are_reported_once_for_the_control_plane() {
    // The lab without static neighbors: every next hop is unknown.
    let mut spec = test_spec();
    spec.neighbors.clear();
    let mut w = worker(spec);
    let c1 = client_v4(1);
    let c2 = client_v4(2);
    for c in [c1, c1, c2] {
        let next_hop = IpAddr::V4(lab::GATEWAYS_V4[lab_gateway(c.into())]);
        assert_eq!(
            run(&mut w, CLIENT_PORT, &client_ike4(c)).0,
            Verdict::AwaitNeighbor {
                port: BACKEND_PORT,
                next_hop
            }
        );
    }
    let mut misses = Vec::new();
    assert_eq!(w.drain_neighbor_misses(|a| misses.push(a)), 0);
    let g1 = IpAddr::V4(lab::GATEWAYS_V4[lab_gateway(c1.into())]);
    let g2 = IpAddr::V4(lab::GATEWAYS_V4[lab_gateway(c2.into())]);
    let mut want = vec![g1, g2];
    want.dedup();
    assert_eq!(misses, want, "each unresolved gateway once");
    misses.clear();
    assert_eq!(w.drain_neighbor_misses(|a| misses.push(a)), 0);
    assert!(misses.is_empty(), "drained");
    // Return traffic to a client behind the router reports the client's address (the control
    // plane resolves the router for it).
    let g = lab_gateway(c1.into());
    let reply = udp4(
        from_gateway(g),
        lab::GATEWAYS_V4[g],
        c1,
        500,
        500,
        &ike_sa_init_reply(spi_of(c1.into())),
    );
    assert_eq!(
        run(&mut w, BACKEND_PORT, &reply).0,
        Verdict::AwaitNeighbor {
            port: CLIENT_PORT,
            next_hop: ROUTER_V4.into()
        }
    );
    w.drain_neighbor_misses(|a| misses.push(a));
    assert_eq!(misses, vec![IpAddr::V4(c1)]);
}

fn neighbor_solicit(target: Ipv6Addr) -> Vec<u8> {
    let l2 = L2::new(
        lab::ROUTER_MAC,
        EthernetAddress::ipv6_multicast(&testkit::solicited_node(&target)),
    );
    testkit::neighbor_solicit(&l2, &ROUTER_V6, &target, Some(lab::ROUTER_MAC))
}

#[test]
fn neighbor_solicitations_for_the_vip_and_our_addresses_get_advertisements() {
    let mut w = test_worker();
    for (target, router) in [(lab::VIP_V6, false), (CLIENT_ITF_V6, true)] {
        let out = tx(&mut w, CLIENT_PORT, &neighbor_solicit(target), CLIENT_PORT);
        let o = out6(&out);
        assert_eq!(o.eth.dst(), lab::ROUTER_MAC);
        assert_eq!(o.eth.src(), lab::CLIENT_PORT_MAC);
        assert_eq!(o.ip.src_addr(), target);
        assert_eq!(o.ip.dst_addr(), ROUTER_V6);
        assert_eq!(o.ip.hop_limit(), 255);
        assert_eq!(o.upper.protocol, ip_proto::ICMPV6);
        let icmp = Icmpv6Packet::new_checked(o.l4).expect("ICMPv6");
        assert_eq!(
            (icmp.msg_type(), icmp.code()),
            (icmpv6_type::NEIGHBOR_ADVERT, 0)
        );
        assert!(icmp.verify_checksum(&target, &ROUTER_V6), "ICMPv6 checksum");
        let na = NdpNeighbor::new_checked(o.l4).expect("NA");
        let flags =
            NDP_FLAG_SOLICITED | NDP_FLAG_OVERRIDE | if router { NDP_FLAG_ROUTER } else { 0 };
        assert_eq!(na.flags(), flags, "flags for {target}");
        assert_eq!(na.target(), target);
        let tlla = icmpv6::ndp_lladdr_option(na.options(), icmpv6::NDP_OPT_TARGET_LLADDR);
        assert_eq!(tlla, Ok(Some(lab::CLIENT_PORT_MAC)));
        let slla = icmpv6::ndp_lladdr_option(na.options(), icmpv6::NDP_OPT_SOURCE_LLADDR);
        assert_eq!(slla, Ok(None));
    }
    assert_eq!(w.counters().nd_replies, 2);

    // A hop limit other than 255 means it crossed a router: RFC 4861 says ignore it.
    let mut ns = neighbor_solicit(lab::VIP_V6);
    ns[14 + 7] = 64;
    assert_eq!(
        run(&mut w, CLIENT_PORT, &ns).0,
        Verdict::Drop(DropReason::NdUnhandled)
    );
    // Not ours.
    let ns = neighbor_solicit("2001:2:0:1::77".parse().unwrap());
    assert_eq!(
        run(&mut w, CLIENT_PORT, &ns).0,
        Verdict::Drop(DropReason::NdUnhandled)
    );
    // The VIP is not answered on the backend side.
    let l2 = L2::new(
        lab::GATEWAY_MACS[0],
        EthernetAddress::ipv6_multicast(&testkit::solicited_node(&lab::VIP_V6)),
    );
    let ns = testkit::neighbor_solicit(
        &l2,
        &lab::GATEWAYS_V6[0],
        &lab::VIP_V6,
        Some(lab::GATEWAY_MACS[0]),
    );
    assert_eq!(
        run(&mut w, BACKEND_PORT, &ns).0,
        Verdict::Drop(DropReason::NdUnhandled)
    );
    // A corrupted ICMPv6 checksum.
    let mut ns = neighbor_solicit(lab::VIP_V6);
    let last = ns.len() - 1;
    ns[last] ^= 0x01;
    assert_eq!(
        run(&mut w, CLIENT_PORT, &ns).0,
        Verdict::Drop(DropReason::NdUnhandled)
    );
    assert_eq!(w.counters().dropped(DropReason::NdUnhandled), 4);
    assert_balanced(&w);
}

// ---- 10. echo ----------------------------------------------------------------------------

#[test]
fn echo_requests_to_the_vip_and_our_addresses_are_answered() {
    let mut w = test_worker();
    let c = client_v4(5);
    let payload: Vec<u8> = (0..56u8).collect();
    for dst in [lab::VIP_V4, CLIENT_ITF_V4] {
        let l4 = L4::Icmpv4 {
            msg_type: 8,
            code: 0,
            rest: 0x1234_0007,
            payload: &payload,
        };
        let req = testkit::ipv4(&from_router(), c, dst, &Ipv4Opts::default(), &l4);
        let out = tx(&mut w, CLIENT_PORT, &req, CLIENT_PORT);
        let o = out4(&out);
        assert_eq!(
            (o.eth.dst(), o.eth.src()),
            (lab::ROUTER_MAC, lab::CLIENT_PORT_MAC)
        );
        assert_eq!((o.ip.src_addr(), o.ip.dst_addr()), (dst, c));
        let icmp = Icmpv4Packet::new_checked(o.l4).expect("ICMP");
        assert_eq!((icmp.msg_type(), icmp.code()), (0, 0));
        assert_eq!((icmp.echo_ident(), icmp.echo_seq()), (0x1234, 7));
        assert_eq!(icmp.data(), &payload[..]);
        assert!(icmp.verify_checksum(), "ICMP checksum");
    }
    let c6 = client_v6(5);
    for dst in [lab::VIP_V6, CLIENT_ITF_V6] {
        let l4 = L4::Icmpv6 {
            msg_type: icmpv6_type::ECHO_REQUEST,
            code: 0,
            rest: 0x4321_0009,
            payload: &payload,
        };
        let req = testkit::ipv6(&from_router(), &c6, &dst, 64, &[], &l4);
        let out = tx(&mut w, CLIENT_PORT, &req, CLIENT_PORT);
        let o = out6(&out);
        assert_eq!(o.eth.dst(), lab::ROUTER_MAC);
        assert_eq!((o.ip.src_addr(), o.ip.dst_addr()), (dst, c6));
        let icmp = Icmpv6Packet::new_checked(o.l4).expect("ICMPv6");
        assert_eq!(icmp.msg_type(), icmpv6_type::ECHO_REPLY);
        assert_eq!((icmp.echo_ident(), icmp.echo_seq()), (0x4321, 9));
        assert_eq!(icmp.data(), &payload[..]);
        assert!(icmp.verify_checksum(&dst, &c6), "ICMPv6 checksum");
    }
    // The backend port's own address answers gateways.
    let l4 = L4::Icmpv4 {
        msg_type: 8,
        code: 0,
        rest: 1,
        payload: b"gw",
    };
    let req = testkit::ipv4(
        &from_gateway(2),
        lab::GATEWAYS_V4[2],
        BACKEND_ITF_V4,
        &Ipv4Opts::default(),
        &l4,
    );
    let out = tx(&mut w, BACKEND_PORT, &req, BACKEND_PORT);
    assert_eq!(out4(&out).ip.dst_addr(), lab::GATEWAYS_V4[2]);
    assert_eq!(w.counters().echo_replies, 5);
    assert_eq!(w.affinity().len(), 0, "pings create no affinity");
}

// ---- 11. fragments -----------------------------------------------------------------------

/// Reassembles IPv4 fragments (as transmitted) into the transport datagram.
fn reassemble4(frames: &[Vec<u8>]) -> Vec<u8> {
    let mut data = Vec::new();
    for f in frames {
        let o = out4(f);
        let at = usize::from(o.ip.frag_offset());
        if data.len() < at + o.l4.len() {
            data.resize(at + o.l4.len(), 0);
        }
        data[at..at + o.l4.len()].copy_from_slice(o.l4);
    }
    data
}

fn reassemble6(frames: &[Vec<u8>]) -> Vec<u8> {
    let mut data = Vec::new();
    for f in frames {
        let o = out6(f);
        let at = usize::from(o.upper.fragment.expect("a fragment").offset);
        if data.len() < at + o.l4.len() {
            data.resize(at + o.l4.len(), 0);
        }
        data[at..at + o.l4.len()].copy_from_slice(o.l4);
    }
    data
}

#[test]
fn ipv4_fragments_of_a_large_ike_auth_all_reach_the_clients_gateway() {
    let mut w = test_worker();
    let c = client_v4(21);
    let g = confirm4(&mut w, NOW, c);
    let before = w.counters();
    let auth = ike_auth_natt(spi_of(c.into()), 3000);
    let whole = udp4(from_router(), c, lab::VIP_V4, 4500, 4500, &auth);
    let frags = testkit::fragment_ipv4(&whole, 1500);
    assert_eq!(frags.len(), 3);
    let mut outs = Vec::new();
    for f in &frags {
        let out = tx(&mut w, CLIENT_PORT, f, BACKEND_PORT);
        assert_eq!(gateway_of4(&out), g);
        let o = out4(&out);
        assert_eq!(o.ip.src_addr(), c);
        assert_eq!(o.ip.ttl(), 63);
        outs.push(out);
    }
    let cnt = w.counters();
    assert_eq!(cnt.class(Class::Ike) - before.class(Class::Ike), 1);
    assert_eq!(cnt.class(Class::Fragment), 2);
    let datagram = reassemble4(&outs);
    let udp = UdpPacket::new_checked(&datagram[..]).expect("reassembled UDP");
    assert_eq!(usize::from(udp.len()), datagram.len());
    assert_eq!((udp.src_port(), udp.dst_port()), (4500, 4500));
    assert_eq!(udp.payload(), &auth[..]);
    assert!(
        udp.verify_checksum_v4(c, lab::GATEWAYS_V4[g]),
        "UDP checksum for client -> gateway"
    );
    assert_ne!(udp.checksum(), 0);
}

#[test]
fn ipv6_fragments_of_a_large_ike_auth_all_reach_the_clients_gateway() {
    let mut w = test_worker();
    let c = client_v6(21);
    let g = gateway_of6(&tx(&mut w, CLIENT_PORT, &client_ike6(c), BACKEND_PORT));
    let auth = ike_auth_natt(spi_of(c.into()), 3000);
    let whole = udp6(from_router(), c, lab::VIP_V6, 4500, 4500, &auth);
    let frags = testkit::fragment_ipv6(&whole, 1500, 0x0bad_cafe);
    assert_eq!(frags.len(), 3);
    let outs: Vec<Vec<u8>> = frags
        .iter()
        .map(|f| {
            let out = tx(&mut w, CLIENT_PORT, f, BACKEND_PORT);
            assert_eq!(gateway_of6(&out), g);
            assert_eq!(out6(&out).ip.hop_limit(), 63);
            out
        })
        .collect();
    assert_eq!(w.counters().class(Class::Fragment), 2);
    let datagram = reassemble6(&outs);
    let udp = UdpPacket::new_checked(&datagram[..]).expect("reassembled UDP");
    assert_eq!(udp.payload(), &auth[..]);
    assert!(
        udp.verify_checksum_v6(&c, &lab::GATEWAYS_V6[g]),
        "UDP checksum for client -> gateway"
    );
}

#[test]
fn a_non_first_fragment_from_an_unknown_client_goes_to_its_maglev_gateway() {
    let mut w = test_worker();
    for i in 0..30 {
        let c = client_v4(100 + i);
        let whole = udp4(
            from_router(),
            c,
            lab::VIP_V4,
            4500,
            4500,
            &ike_auth_natt(1, 3000),
        );
        let frags = testkit::fragment_ipv4(&whole, 1500);
        let out = tx(&mut w, CLIENT_PORT, &frags[1], BACKEND_PORT);
        assert_eq!(gateway_of4(&out), lab_gateway(c.into()), "{c}");
        let c6 = client_v6(100 + i);
        let whole = udp6(
            from_router(),
            c6,
            lab::VIP_V6,
            4500,
            4500,
            &ike_auth_natt(1, 3000),
        );
        let frags = testkit::fragment_ipv6(&whole, 1500, 7);
        let out = tx(&mut w, CLIENT_PORT, &frags[2], BACKEND_PORT);
        assert_eq!(gateway_of6(&out), lab_gateway(c6.into()), "{c6}");
    }
    assert_eq!(w.counters().class(Class::Fragment), 60);
}

// ---- 12. ICMP errors ---------------------------------------------------------------------

/// The router's ICMP fragmentation-needed (next-hop MTU 1400) about what it got from us: VIP ->
/// `c`, ESP in UDP 4500.
fn frag_needed_from_router(c: Ipv4Addr) -> Vec<u8> {
    let esp = testkit::esp_payload(0xc200_0001, 5, 64);
    let sent = ip_part(&udp4(from_router(), lab::VIP_V4, c, 4500, 4500, &esp));
    let l4 = L4::Icmpv4 {
        msg_type: 3,
        code: 4,
        rest: 1400,
        payload: &sent,
    };
    testkit::ipv4(
        &from_router(),
        ROUTER_V4,
        lab::VIP_V4,
        &Ipv4Opts::default(),
        &l4,
    )
}

#[test]
fn fragmentation_needed_from_the_router_reaches_the_clients_gateway_translated() {
    let mut w = test_worker();
    let c = client_v4(31);
    let g = confirm4(&mut w, NOW, c);
    let err = frag_needed_from_router(c);
    let out = tx(&mut w, CLIENT_PORT, &err, BACKEND_PORT);
    let o = out4(&out);
    assert_eq!(o.eth.dst(), lab::GATEWAY_MACS[g]);
    assert_eq!(
        (o.ip.src_addr(), o.ip.dst_addr()),
        (ROUTER_V4, lab::GATEWAYS_V4[g])
    );
    assert_eq!(o.ip.ttl(), 63);
    let icmp = Icmpv4Packet::new_checked(o.l4).expect("ICMP");
    assert_eq!(
        (icmp.msg_type(), icmp.code(), icmp.next_mtu()),
        (3, 4, 1400)
    );
    assert!(icmp.verify_checksum(), "ICMP checksum");
    let quoted = Ipv4Packet::new_checked(icmp.data()).expect("quoted IPv4");
    assert!(quoted.verify_checksum(), "quoted IPv4 checksum");
    assert_eq!(
        (quoted.src_addr(), quoted.dst_addr()),
        (lab::GATEWAYS_V4[g], c)
    );
    let qudp = UdpPacket::new_checked(quoted.payload()).expect("quoted UDP");
    assert_eq!((qudp.src_port(), qudp.dst_port()), (4500, 4500));
    assert!(
        qudp.verify_checksum_v4(lab::GATEWAYS_V4[g], c),
        "quoted UDP checksum"
    );
    assert_eq!(w.counters().icmp_errors_translated, 1);
}

const STEERED_WORKERS: u16 = 4;

/// Hardware steering over [`STEERED_WORKERS`] workers, as a NIC hashes a client port's L3 sources, and the first
/// client `client(n)` it gives another worker than the router's: (steering, the router's
/// worker, the client, the client's worker).
fn steered_apart<A: Copy>(
    router: &[u8],
    client: impl Fn(u32) -> A,
    octets: impl Fn(A) -> Vec<u8>,
) -> (dataplane::steer::Steering, u16, A, u16) {
    let steering = dataplane::steer::Steering::new(STEERED_WORKERS);
    let router_worker = steering.owner_of_client(router);
    let c = (0..)
        .map(client)
        .find(|c| steering.owner_of_client(&octets(*c)) != router_worker)
        .expect("a client owned elsewhere");
    let owner = steering.owner_of_client(&octets(c));
    (steering, router_worker, c, owner)
}

/// With hardware RSS the NIC hashes an ICMP error from the client side on its source, a
/// router's address: it lands on the router's worker, not the quoted client's. That worker
/// hands it to the client's owner, which translates it (without the hand-off, 3 in 4 errors
/// would find no flow: path-MTU discovery through the appliance would fail).
#[test]
fn icmp_errors_under_hardware_steering_reach_the_quoted_clients_worker() {
    let (steering, router_worker, c, owner) =
        steered_apart(&ROUTER_V4.octets(), client_v4, |c| c.octets().to_vec());
    let mut pipelines: Vec<Pipeline> = (0..STEERED_WORKERS)
        .map(|me| {
            let mut w = test_worker();
            w.set_error_steering(Some(steering.clone()), me);
            w
        })
        .collect();
    // The client's traffic reaches its owner by RSS, which schedules and confirms it.
    let g = confirm4(&mut pipelines[usize::from(owner)], NOW, c);
    let err = frag_needed_from_router(c);
    let receiver = &mut pipelines[usize::from(router_worker)];
    let (v, out) = run(receiver, CLIENT_PORT, &err);
    assert_eq!(v, Verdict::HandOff { worker: owner });
    assert_eq!(out, err, "handed over untouched");
    assert_eq!(receiver.counters().rx_packets, 0, "the owner counts it");
    // Non-errors stay where the NIC put them (it already hashed them by their client).
    let other = client_ike4(c);
    assert!(!matches!(
        run(receiver, CLIENT_PORT, &other).0,
        Verdict::HandOff { .. }
    ));
    let mut f = VecFrame::new(&err);
    let mut verdict = [Verdict::ToControl];
    pipelines[usize::from(owner)].process_handed_over(
        NOW,
        CLIENT_PORT,
        std::slice::from_mut(&mut f),
        &mut verdict,
    );
    assert_eq!(verdict[0], Verdict::Tx { port: BACKEND_PORT });
    assert_eq!(gateway_of4(f.bytes()), g);
    assert_eq!(
        pipelines[usize::from(owner)]
            .counters()
            .icmp_errors_translated,
        1
    );
    // Without the re-steering (the error handled where the NIC put it): no flow there.
    let mut alone = test_worker();
    assert_eq!(
        run(&mut alone, CLIENT_PORT, &err).0,
        Verdict::Drop(DropReason::IcmpNoFlow)
    );
}

/// The same for ICMPv6 packet-too-big.
#[test]
fn icmpv6_errors_under_hardware_steering_reach_the_quoted_clients_worker() {
    let (steering, router_worker, c, owner) =
        steered_apart(&ROUTER_V6.octets(), client_v6, |c| c.octets().to_vec());
    let sent = ip_part(&udp6(from_router(), lab::VIP_V6, c, 500, 500, &[0; 64]));
    let l4 = L4::Icmpv6 {
        msg_type: icmpv6_type::PACKET_TOO_BIG,
        code: 0,
        rest: 1280,
        payload: &sent,
    };
    let err = testkit::ipv6(&from_router(), &ROUTER_V6, &lab::VIP_V6, 64, &[], &l4);
    let mut w = test_worker();
    w.set_error_steering(Some(steering.clone()), router_worker);
    assert_eq!(
        run(&mut w, CLIENT_PORT, &err).0,
        Verdict::HandOff { worker: owner }
    );
}

#[test]
fn port_unreachable_from_a_gateway_reaches_the_client_from_the_vip() {
    let mut w = test_worker();
    let c = client_v4(32);
    let g = gateway_of4(&tx(&mut w, CLIENT_PORT, &client_ike4(c), BACKEND_PORT));
    // What the gateway got from us: client -> gateway, IKE on 500.
    let sent = ip_part(&udp4(
        from_router(),
        c,
        lab::GATEWAYS_V4[g],
        500,
        500,
        &ike_sa_init(9),
    ));
    // A full quote, and the RFC 792 minimum (IP header + 8 bytes).
    for quote in [&sent[..], &sent[..28]] {
        let l4 = L4::Icmpv4 {
            msg_type: 3,
            code: 3,
            rest: 0,
            payload: quote,
        };
        let err = testkit::ipv4(
            &from_gateway(g),
            lab::GATEWAYS_V4[g],
            c,
            &Ipv4Opts::default(),
            &l4,
        );
        let out = tx(&mut w, BACKEND_PORT, &err, CLIENT_PORT);
        let o = out4(&out);
        assert_eq!(
            (o.eth.dst(), o.eth.src()),
            (lab::ROUTER_MAC, lab::CLIENT_PORT_MAC)
        );
        assert_eq!((o.ip.src_addr(), o.ip.dst_addr()), (lab::VIP_V4, c));
        let icmp = Icmpv4Packet::new_checked(o.l4).expect("ICMP");
        assert_eq!((icmp.msg_type(), icmp.code()), (3, 3));
        assert!(icmp.verify_checksum(), "ICMP checksum");
        assert_eq!(icmp.data().len(), quote.len());
        let q = icmp.data();
        // The quoted header as the client sent it: client -> VIP.
        assert_eq!(&q[12..16], &c.octets());
        assert_eq!(&q[16..20], &lab::VIP_V4.octets());
        assert_eq!(
            dataplane::wire::checksum::checksum(&q[..20]),
            0,
            "quoted IPv4 checksum"
        );
        assert_eq!(&q[20..24], &[0x01, 0xf4, 0x01, 0xf4], "quoted ports");
        if quote.len() == sent.len() {
            let qudp = UdpPacket::new_checked(&q[20..]).expect("quoted UDP");
            assert!(
                qudp.verify_checksum_v4(c, lab::VIP_V4),
                "quoted UDP checksum"
            );
        }
    }
    assert_eq!(w.counters().icmp_errors_translated, 2);
}

#[test]
fn icmpv6_packet_too_big_is_translated_both_ways() {
    let mut w = test_worker();
    let c = client_v6(33);
    let g = gateway_of6(&tx(&mut w, CLIENT_PORT, &client_ike6(c), BACKEND_PORT));
    let gw = lab::GATEWAYS_V6[g];

    // Router -> VIP about a VIP -> client packet: on to the gateway.
    let esp = testkit::esp_payload(0xc200_0002, 5, 64);
    let sent = ip_part(&udp6(from_router(), lab::VIP_V6, c, 4500, 4500, &esp));
    let l4 = L4::Icmpv6 {
        msg_type: icmpv6_type::PACKET_TOO_BIG,
        code: 0,
        rest: 1280,
        payload: &sent,
    };
    let err = testkit::ipv6(&from_router(), &ROUTER_V6, &lab::VIP_V6, 64, &[], &l4);
    let out = tx(&mut w, CLIENT_PORT, &err, BACKEND_PORT);
    let o = out6(&out);
    assert_eq!(o.eth.dst(), lab::GATEWAY_MACS[g]);
    assert_eq!((o.ip.src_addr(), o.ip.dst_addr()), (ROUTER_V6, gw));
    let icmp = Icmpv6Packet::new_checked(o.l4).expect("ICMPv6");
    assert_eq!(
        (icmp.msg_type(), icmp.rest_of_header()),
        (icmpv6_type::PACKET_TOO_BIG, 1280)
    );
    assert!(icmp.verify_checksum(&ROUTER_V6, &gw), "ICMPv6 checksum");
    let quoted = Ipv6Packet::new_checked(icmp.data()).expect("quoted IPv6");
    assert_eq!((quoted.src_addr(), quoted.dst_addr()), (gw, c));
    let qudp = UdpPacket::new_checked(quoted.payload()).expect("quoted UDP");
    assert!(qudp.verify_checksum_v6(&gw, &c), "quoted UDP checksum");

    // Gateway -> client about a client -> gateway packet: from the VIP, quoting the VIP.
    let sent = ip_part(&udp6(from_router(), c, gw, 4500, 4500, &esp));
    let l4 = L4::Icmpv6 {
        msg_type: icmpv6_type::PACKET_TOO_BIG,
        code: 0,
        rest: 1400,
        payload: &sent,
    };
    let err = testkit::ipv6(&from_gateway(g), &gw, &c, 64, &[], &l4);
    let out = tx(&mut w, BACKEND_PORT, &err, CLIENT_PORT);
    let o = out6(&out);
    assert_eq!(o.eth.dst(), lab::ROUTER_MAC);
    assert_eq!((o.ip.src_addr(), o.ip.dst_addr()), (lab::VIP_V6, c));
    let icmp = Icmpv6Packet::new_checked(o.l4).expect("ICMPv6");
    assert!(icmp.verify_checksum(&lab::VIP_V6, &c), "ICMPv6 checksum");
    let quoted = Ipv6Packet::new_checked(icmp.data()).expect("quoted IPv6");
    assert_eq!((quoted.src_addr(), quoted.dst_addr()), (c, lab::VIP_V6));
    let qudp = UdpPacket::new_checked(quoted.payload()).expect("quoted UDP");
    assert!(
        qudp.verify_checksum_v6(&c, &lab::VIP_V6),
        "quoted UDP checksum"
    );
    assert_eq!(w.counters().icmp_errors_translated, 2);
}

#[test]
fn icmp_errors_about_unknown_flows_are_dropped() {
    let mut w = test_worker();
    let stranger = client_v4(34);
    let esp = testkit::esp_payload(0xc200_0003, 5, 64);
    let error_to_vip = |quoted: &[u8]| {
        let l4 = L4::Icmpv4 {
            msg_type: 3,
            code: 4,
            rest: 1400,
            payload: quoted,
        };
        testkit::ipv4(
            &from_router(),
            ROUTER_V4,
            lab::VIP_V4,
            &Ipv4Opts::default(),
            &l4,
        )
    };
    // A client we never saw.
    let sent = ip_part(&udp4(
        from_router(),
        lab::VIP_V4,
        stranger,
        4500,
        4500,
        &esp,
    ));
    assert_eq!(
        run(&mut w, CLIENT_PORT, &error_to_vip(&sent)).0,
        Verdict::Drop(DropReason::IcmpNoFlow)
    );
    // A port no service of the VIP uses.
    let sent = ip_part(&udp4(from_router(), lab::VIP_V4, stranger, 53, 53, b"dns"));
    assert_eq!(
        run(&mut w, CLIENT_PORT, &error_to_vip(&sent)).0,
        Verdict::Drop(DropReason::IcmpNoFlow)
    );
    // From the backend, quoting a packet to an address that is no gateway.
    let sent = ip_part(&udp4(
        from_router(),
        stranger,
        Ipv4Addr::new(198, 19, 0, 99),
        500,
        500,
        b"x",
    ));
    let l4 = L4::Icmpv4 {
        msg_type: 3,
        code: 3,
        rest: 0,
        payload: &sent,
    };
    let err = testkit::ipv4(
        &from_gateway(0),
        lab::GATEWAYS_V4[0],
        stranger,
        &Ipv4Opts::default(),
        &l4,
    );
    assert_eq!(
        run(&mut w, BACKEND_PORT, &err).0,
        Verdict::Drop(DropReason::IcmpNoFlow)
    );
    assert_eq!(w.counters().dropped(DropReason::IcmpNoFlow), 3);
    assert_eq!(w.counters().icmp_errors_translated, 0);
    assert_balanced(&w);
}

// ---- 13. VLANs ---------------------------------------------------------------------------

const V100: Vlan = Vlan::Single { vid: 100 };
const QINQ: Vlan = Vlan::Double {
    outer: 200,
    inner: 300,
};
const GW4_V4: Ipv4Addr = Ipv4Addr::new(198, 19, 200, 14);
const GW4_MAC: EthernetAddress = EthernetAddress([0x02, 0, 0, 0, 0x02, 0x0e]);

/// On-link client `i` of VLAN 100 and its MAC.
fn vlan_client(i: u8) -> (Ipv4Addr, EthernetAddress) {
    (
        Ipv4Addr::new(198, 18, 100, i),
        EthernetAddress([0x02, 0, 0, 0, 0x64, i]),
    )
}

/// The lab plus a client VLAN 100 on port 0 (on-link clients 198.18.100.10-99 with static
/// neighbors) and a QinQ 200/300 backend interface on port 1 with a fourth gateway on it.
fn vlan_spec() -> ApplianceSpec {
    let mut s = test_spec();
    s.interfaces.push(InterfaceSpec {
        name: "client-v100".into(),
        port: CLIENT_PORT,
        vlan: V100,
        role: Role::Client,
        addresses: vec![
            "198.18.100.1/24".parse().unwrap(),
            "2001:2:0:100::1/64".parse().unwrap(),
        ],
    });
    s.interfaces.push(InterfaceSpec {
        name: "backend-qinq".into(),
        port: BACKEND_PORT,
        vlan: QINQ,
        role: Role::Backend,
        addresses: vec![
            "198.19.200.1/24".parse().unwrap(),
            "2001:2:0:200::1/64".parse().unwrap(),
        ],
    });
    s.services[0].gateways.push(GatewaySpec {
        name: "gw4".into(),
        ipv4: Some(GW4_V4),
        ipv6: Some("2001:2:0:200::14".parse().unwrap()),
        weight: 1,
        state: GatewayState::Up,
    });
    s.neighbors.push(NeighborSpec {
        address: IpAddr::V4(GW4_V4),
        mac: GW4_MAC,
    });
    s.neighbors.push(NeighborSpec {
        address: "2001:2:0:200::14".parse().unwrap(),
        mac: GW4_MAC,
    });
    for i in 10..100 {
        let (a, mac) = vlan_client(i);
        s.neighbors.push(NeighborSpec {
            address: IpAddr::V4(a),
            mac,
        });
    }
    s
}

fn vlan_snapshot() -> std::sync::Arc<Snapshot> {
    static SNAP: std::sync::OnceLock<std::sync::Arc<Snapshot>> = std::sync::OnceLock::new();
    std::sync::Arc::clone(SNAP.get_or_init(|| snapshot(vlan_spec(), 1)))
}

/// Address, MAC, VLAN tags and IP offset of a transmitted IPv4 frame's destination.
fn dest4(frame: &[u8]) -> (Ipv4Addr, EthernetAddress, Vlan) {
    let o = out4(frame);
    (o.ip.dst_addr(), o.eth.dst(), o.eth.vlan())
}

#[test]
fn vlan_tags_follow_the_egress_interface() {
    let mut w = Pipeline::new(vlan_snapshot());
    let table = maglev_table(&[1, 1, 1, 1]);
    let find = |want: &dyn Fn(usize) -> bool| {
        (10..100)
            .map(vlan_client)
            .find(|(a, _)| want(maglev_pick(&table, (*a).into())))
            .expect("a VLAN client for each case")
    };
    let (c4, c4_mac) = find(&|g| g == 3);
    let (c1, c1_mac) = find(&|g| g < 3);
    let g1 = maglev_pick(&table, c1.into());
    let router_c4 = (0..1000)
        .map(client_v4)
        .find(|c| maglev_pick(&table, (*c).into()) == 3)
        .unwrap();

    // VLAN 100 client -> gw4 on QinQ: 18-byte header in, 22 out.
    let l2 = L2::new(c4_mac, lab::CLIENT_PORT_MAC).with_vlan(V100);
    let ike = ike_sa_init(41);
    let out = tx(
        &mut w,
        CLIENT_PORT,
        &udp4(l2, c4, lab::VIP_V4, 500, 500, &ike),
        BACKEND_PORT,
    );
    assert_eq!(dest4(&out), (GW4_V4, GW4_MAC, QINQ));
    assert_eq!(out4(&out).eth.src(), lab::BACKEND_PORT_MAC);
    assert_eq!(out4(&out).udp().payload(), &ike[..]);
    // gw4 -> that client: 22 in, 18 out.
    let l2 = L2::new(GW4_MAC, lab::BACKEND_PORT_MAC).with_vlan(QINQ);
    let reply = ike_sa_init_reply(41);
    let out = tx(
        &mut w,
        BACKEND_PORT,
        &udp4(l2, GW4_V4, c4, 500, 500, &reply),
        CLIENT_PORT,
    );
    assert_eq!(dest4(&out), (c4, c4_mac, V100));
    let o = out4(&out);
    assert_eq!(
        (o.eth.src(), o.ip.src_addr()),
        (lab::CLIENT_PORT_MAC, lab::VIP_V4)
    );
    assert_eq!(o.udp().payload(), &reply[..]);

    // VLAN 100 client -> an untagged gateway, and back.
    let l2 = L2::new(c1_mac, lab::CLIENT_PORT_MAC).with_vlan(V100);
    let out = tx(
        &mut w,
        CLIENT_PORT,
        &udp4(l2, c1, lab::VIP_V4, 500, 500, &ike),
        BACKEND_PORT,
    );
    assert_eq!(
        dest4(&out),
        (lab::GATEWAYS_V4[g1], lab::GATEWAY_MACS[g1], Vlan::Untagged)
    );
    out4(&out).udp();
    let back = udp4(from_gateway(g1), lab::GATEWAYS_V4[g1], c1, 500, 500, &reply);
    let out = tx(&mut w, BACKEND_PORT, &back, CLIENT_PORT);
    assert_eq!(dest4(&out), (c1, c1_mac, V100));
    out4(&out).udp();

    // An untagged client behind the router -> gw4, and back.
    let out = tx(&mut w, CLIENT_PORT, &client_ike4(router_c4), BACKEND_PORT);
    assert_eq!(dest4(&out), (GW4_V4, GW4_MAC, QINQ));
    out4(&out).udp();
    let l2 = L2::new(GW4_MAC, lab::BACKEND_PORT_MAC).with_vlan(QINQ);
    let out = tx(
        &mut w,
        BACKEND_PORT,
        &udp4(l2, GW4_V4, router_c4, 500, 500, &reply),
        CLIENT_PORT,
    );
    assert_eq!(dest4(&out), (router_c4, lab::ROUTER_MAC, Vlan::Untagged));
    out4(&out).udp();

    // ARP on VLAN 100 for its own address is answered on VLAN 100.
    let l2 = L2::new(c1_mac, EthernetAddress::BROADCAST).with_vlan(V100);
    let req = arp_request(l2, c1_mac, c1, Ipv4Addr::new(198, 18, 100, 1));
    let out = tx(&mut w, CLIENT_PORT, &req, CLIENT_PORT);
    let eth = EthernetFrame::new_checked(&out[..]).unwrap();
    assert_eq!((eth.vlan(), eth.dst()), (V100, c1_mac));
    assert_eq!(
        ArpPacket::new_checked(eth.payload()).unwrap().operation(),
        ARP_REPLY
    );

    // Tags no interface claims.
    let l2 = L2::new(lab::ROUTER_MAC, lab::CLIENT_PORT_MAC).with_vlan(Vlan::Single { vid: 999 });
    let f = udp4(l2, client_v4(1), lab::VIP_V4, 500, 500, &ike);
    assert_eq!(
        run(&mut w, CLIENT_PORT, &f).0,
        Verdict::Drop(DropReason::UnknownVlan)
    );
    // VLAN 100 exists on port 0 only.
    let l2 = L2::new(lab::GATEWAY_MACS[0], lab::BACKEND_PORT_MAC).with_vlan(V100);
    let f = udp4(l2, lab::GATEWAYS_V4[0], client_v4(1), 500, 500, &reply);
    assert_eq!(
        run(&mut w, BACKEND_PORT, &f).0,
        Verdict::Drop(DropReason::UnknownVlan)
    );
    assert_eq!(w.counters().dropped(DropReason::UnknownVlan), 2);
    assert_balanced(&w);
}

// ---- 14. drops ---------------------------------------------------------------------------

#[test]
fn each_kind_of_unwanted_packet_is_dropped_under_its_own_reason() {
    let mut w = test_worker();
    let c = client_v4(50);
    let ike = ike_sa_init(50);
    let mut bad_csum = client_ike4(c);
    bad_csum[14 + 10] ^= 0x40;
    let other_mac = L2::new(
        lab::ROUTER_MAC,
        EthernetAddress([0x02, 0, 0, 0, 0x01, 0x99]),
    );
    let cases: Vec<(&str, u16, Vec<u8>, DropReason)> = vec![
        (
            "to an address that is not a VIP",
            CLIENT_PORT,
            udp4(
                from_router(),
                c,
                Ipv4Addr::new(198, 18, 0, 77),
                500,
                500,
                &ike,
            ),
            DropReason::NotAVip,
        ),
        (
            "to a VIP port no service uses",
            CLIENT_PORT,
            udp4(from_router(), c, lab::VIP_V4, 5353, 53, b"dns?"),
            DropReason::NoService,
        ),
        (
            "backend traffic from a non-gateway",
            BACKEND_PORT,
            udp4(
                from_gateway(0),
                Ipv4Addr::new(198, 19, 0, 99),
                c,
                500,
                500,
                &ike,
            ),
            DropReason::UnknownSource,
        ),
        (
            "unicast to another MAC",
            CLIENT_PORT,
            udp4(other_mac, c, lab::VIP_V4, 500, 500, &ike),
            DropReason::NotOurMac,
        ),
        (
            "a corrupted IPv4 header checksum",
            CLIENT_PORT,
            bad_csum,
            DropReason::BadChecksum,
        ),
        (
            "from the VIP",
            CLIENT_PORT,
            udp4(from_router(), lab::VIP_V4, lab::VIP_V4, 500, 500, &ike),
            DropReason::BadSource,
        ),
        (
            "to the VIP on the backend side",
            BACKEND_PORT,
            udp4(
                from_gateway(0),
                lab::GATEWAYS_V4[0],
                lab::VIP_V4,
                500,
                500,
                &ike,
            ),
            DropReason::WrongSide,
        ),
    ];
    for (what, port, frame, reason) in &cases {
        assert_eq!(
            run(&mut w, *port, frame).0,
            Verdict::Drop(*reason),
            "{what}"
        );
        assert_eq!(
            w.counters().dropped(*reason),
            1,
            "{what}: counted once under {}",
            reason.name()
        );
    }
    let cnt = w.counters();
    assert_eq!(cnt.total_drops(), cases.len() as u64);
    assert_eq!(cnt.tx_packets, 0);
    assert_eq!(w.affinity().len(), 0);
}

// ---- 15. bad input -----------------------------------------------------------------------

/// A frame and the port it arrives on.
type Fixture = (u16, Vec<u8>);

/// Every kind of frame the lab produces: flows, return traffic, ARP, ND, echo, ICMP errors,
/// fragments, VLAN-tagged frames, options and extension headers.
fn fixtures() -> Vec<Fixture> {
    let c = client_v4(61);
    let c6 = client_v6(61);
    let (vc, vc_mac) = vlan_client(61);
    let mut f: Vec<Fixture> = Vec::new();
    f.extend(client_flows4(c).into_iter().map(|(_, x)| (CLIENT_PORT, x)));
    f.extend(client_flows6(c6).into_iter().map(|(_, x)| (CLIENT_PORT, x)));
    for g in 0..3 {
        let reply = ike_sa_init_reply(61);
        f.push((
            BACKEND_PORT,
            udp4(from_gateway(g), lab::GATEWAYS_V4[g], c, 500, 500, &reply),
        ));
        f.push((
            BACKEND_PORT,
            udp6(from_gateway(g), lab::GATEWAYS_V6[g], c6, 500, 500, &reply),
        ));
    }
    let bcast = L2::new(lab::ROUTER_MAC, EthernetAddress::BROADCAST);
    f.push((
        CLIENT_PORT,
        arp_request(bcast, lab::ROUTER_MAC, ROUTER_V4, lab::VIP_V4),
    ));
    f.push((CLIENT_PORT, neighbor_solicit(lab::VIP_V6)));
    let echo = L4::Icmpv4 {
        msg_type: 8,
        code: 0,
        rest: 1,
        payload: b"abcdefgh",
    };
    f.push((
        CLIENT_PORT,
        testkit::ipv4(&from_router(), c, lab::VIP_V4, &Ipv4Opts::default(), &echo),
    ));
    let echo6 = L4::Icmpv6 {
        msg_type: icmpv6_type::ECHO_REQUEST,
        code: 0,
        rest: 1,
        payload: b"abcdefgh",
    };
    f.push((
        CLIENT_PORT,
        testkit::ipv6(&from_router(), &c6, &lab::VIP_V6, 64, &[], &echo6),
    ));
    let sent = ip_part(&udp4(
        from_router(),
        lab::VIP_V4,
        c,
        4500,
        4500,
        &[1, 2, 3, 4, 5, 6, 7, 8],
    ));
    let err = L4::Icmpv4 {
        msg_type: 3,
        code: 4,
        rest: 1400,
        payload: &sent,
    };
    f.push((
        CLIENT_PORT,
        testkit::ipv4(
            &from_router(),
            ROUTER_V4,
            lab::VIP_V4,
            &Ipv4Opts::default(),
            &err,
        ),
    ));
    let sent = ip_part(&udp4(
        from_router(),
        c,
        lab::GATEWAYS_V4[0],
        500,
        500,
        b"12345678",
    ));
    let err = L4::Icmpv4 {
        msg_type: 3,
        code: 3,
        rest: 0,
        payload: &sent,
    };
    f.push((
        BACKEND_PORT,
        testkit::ipv4(
            &from_gateway(0),
            lab::GATEWAYS_V4[0],
            c,
            &Ipv4Opts::default(),
            &err,
        ),
    ));
    let sent = ip_part(&udp6(
        from_router(),
        lab::VIP_V6,
        c6,
        4500,
        4500,
        b"12345678",
    ));
    let err = L4::Icmpv6 {
        msg_type: icmpv6_type::PACKET_TOO_BIG,
        code: 0,
        rest: 1280,
        payload: &sent,
    };
    f.push((
        CLIENT_PORT,
        testkit::ipv6(&from_router(), &ROUTER_V6, &lab::VIP_V6, 64, &[], &err),
    ));
    let big = udp4(
        from_router(),
        c,
        lab::VIP_V4,
        4500,
        4500,
        &ike_auth_natt(61, 2000),
    );
    f.extend(
        testkit::fragment_ipv4(&big, 600)
            .into_iter()
            .map(|x| (CLIENT_PORT, x)),
    );
    let big6 = udp6(
        from_router(),
        c6,
        lab::VIP_V6,
        4500,
        4500,
        &ike_auth_natt(61, 2000),
    );
    f.extend(
        testkit::fragment_ipv6(&big6, 600, 61)
            .into_iter()
            .map(|x| (CLIENT_PORT, x)),
    );
    let l2 = L2::new(vc_mac, lab::CLIENT_PORT_MAC).with_vlan(V100);
    f.push((
        CLIENT_PORT,
        udp4(l2, vc, lab::VIP_V4, 500, 500, &ike_sa_init(62)),
    ));
    let l2 = L2::new(GW4_MAC, lab::BACKEND_PORT_MAC).with_vlan(QINQ);
    f.push((
        BACKEND_PORT,
        udp4(l2, GW4_V4, vc, 500, 500, &ike_sa_init_reply(62)),
    ));
    f.push((CLIENT_PORT, options_frame4(c)));
    f.push((CLIENT_PORT, ext_headers_frame6(c6)));
    // To the appliance itself, not answered here: the control plane's.
    let ssh = L4::Tcp {
        src: 40_000,
        dst: 22,
        seq: 1,
        ack: 0,
        flags: tcp_flags::SYN,
        payload: &[],
    };
    f.push((
        CLIENT_PORT,
        testkit::ipv4(&from_router(), c, CLIENT_ITF_V4, &Ipv4Opts::default(), &ssh),
    ));
    f
}

/// Runs a frame on a port; only the counters matter here.
fn poke(w: &mut Pipeline, port: u16, frame: &[u8]) {
    let mut f = VecFrame::new(frame);
    w.process(NOW, port, &mut f);
}

#[test]
fn truncated_and_corrupted_lab_frames_never_panic_and_are_all_accounted_for() {
    let mut w = Pipeline::new(vlan_snapshot());
    let fixtures = fixtures();
    // Whole frames first: they set up the flows the corrupted ones then refer to.
    for (port, frame) in &fixtures {
        poke(&mut w, *port, frame);
    }
    let whole = w.counters();
    assert_eq!(whole.total_drops(), 0, "every fixture is valid: {whole:?}");
    assert_eq!(whole.to_control, 1);
    let mut rng = SplitMix64(0x5eed);
    let mut runs = fixtures.len() as u64;
    for (_, frame) in &fixtures {
        for p in [CLIENT_PORT, BACKEND_PORT] {
            for n in 0..frame.len() {
                poke(&mut w, p, &frame[..n]);
                runs += 1;
            }
            for _ in 0..40 {
                let mut f = frame.clone();
                for _ in 0..=rng.below(3) {
                    let at = rng.below(f.len() as u64) as usize;
                    f[at] ^= 1 + rng.below(255) as u8;
                }
                poke(&mut w, p, &f);
                runs += 1;
            }
        }
    }
    let c = w.counters();
    assert_eq!(c.rx_packets, runs);
    assert_balanced(&w);
    // Frames cut inside the 14-byte Ethernet header cannot have gone anywhere.
    assert!(c.dropped(DropReason::Truncated) >= fixtures.len() as u64 * 2 * 14);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..1600)) {
        let mut w = Pipeline::new(vlan_snapshot());
        for port in [CLIENT_PORT, BACKEND_PORT, 7] {
            poke(&mut w, port, &bytes);
        }
        let c = w.counters();
        prop_assert_eq!(c.rx_packets, 3);
        prop_assert_eq!(c.rx_packets, c.tx_packets + c.total_drops() + c.to_control);
    }

    /// Valid headers with arbitrary changes reach deeper into the pipeline than random bytes.
    #[test]
    fn mutated_lab_frames_never_panic(
        pick in any::<prop::sample::Index>(),
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        cut in any::<prop::sample::Index>(),
    ) {
        static FIXTURES: std::sync::OnceLock<Vec<Fixture>> = std::sync::OnceLock::new();
        let fixtures = FIXTURES.get_or_init(fixtures);
        let (port, frame) = &fixtures[pick.index(fixtures.len())];
        let mut f = frame.clone();
        for (at, b) in &edits {
            let i = at.index(f.len());
            f[i] = *b;
        }
        f.truncate(cut.index(f.len() + 1).max(f.len() / 2));
        let mut w = Pipeline::new(vlan_snapshot());
        for p in [*port, CLIENT_PORT, BACKEND_PORT] {
            poke(&mut w, p, &f);
        }
        let c = w.counters();
        prop_assert_eq!(c.rx_packets, c.tx_packets + c.total_drops() + c.to_control);
    }
}

/// A whole datagram whose UDP length field disagrees with the IP payload, and IKE that is not
/// IKE where IKE is expected, are dropped under their own reasons (they were forwarded), for
/// new and established clients alike; fragments, keepalives and ESP in UDP are not affected.
#[test]
fn malformed_lengths_and_ike_are_dropped_not_forwarded() {
    let mut w = test_worker();
    let c = client_v4(150);
    let g = confirm4(&mut w, NOW, c);
    let fresh = client_v4(151);
    // UDP length 4 more, then 4 less, than the IP payload (checksum 0: none, valid for IPv4).
    for (who, delta) in [(c, 4i32), (c, -4), (fresh, 4), (fresh, -4)] {
        let mut f = client_ike4(who);
        let at = 14 + 20;
        let len = i32::from(u16::from_be_bytes([f[at + 4], f[at + 5]])) + delta;
        f[at + 4..at + 6].copy_from_slice(&u16::try_from(len).unwrap().to_be_bytes());
        f[at + 6..at + 8].copy_from_slice(&[0, 0]);
        let (v, _) = run(&mut w, CLIENT_PORT, &f);
        assert_eq!(v, Verdict::Drop(DropReason::UdpLength), "{who} {delta:+}");
    }
    let ike = ike_sa_init(spi_of(c.into()));
    let mut long = ike.clone();
    long[27] = long[27].wrapping_add(8); // the IKE length field beyond the datagram
    let bad: [(u16, Vec<u8>); 4] = [
        (500, ike[..20].to_vec()), // shorter than the 28-byte header
        (500, long.clone()),       // length field disagrees
        (4500, testkit::non_esp_marker(&ike[..20])), // short behind the marker
        (4500, testkit::non_esp_marker(&long)), // disagreeing behind the marker
    ];
    for who in [c, fresh] {
        for (port, payload) in &bad {
            let f = udp4(from_router(), who, lab::VIP_V4, *port, *port, payload);
            let (v, _) = run(&mut w, CLIENT_PORT, &f);
            assert_eq!(
                v,
                Verdict::Drop(DropReason::MalformedIke),
                "{who} port {port}"
            );
        }
    }
    assert_eq!(w.counters().dropped(DropReason::MalformedIke), 8);
    assert_eq!(w.counters().dropped(DropReason::UdpLength), 4);
    // What stays forwarded: a keepalive, ESP in UDP, and a first fragment of a long IKE message.
    for payload in [vec![0xff], testkit::esp_payload(0xc200_0001, 1, 64)] {
        let f = udp4(from_router(), c, lab::VIP_V4, 4500, 4500, &payload);
        let out = tx(&mut w, CLIENT_PORT, &f, BACKEND_PORT);
        assert_eq!(gateway_of4(&out), g);
    }
    let auth = ike_auth_natt(spi_of(c.into()), 2500);
    let whole = udp4(from_router(), c, lab::VIP_V4, 4500, 4500, &auth);
    for f in testkit::fragment_ipv4(&whole, 1500) {
        tx(&mut w, CLIENT_PORT, &f, BACKEND_PORT);
    }
}

// ---- 16. expiry --------------------------------------------------------------------------

#[test]
fn an_unconfirmed_client_idle_past_30_s_is_scheduled_afresh() {
    let mut w = test_worker();
    let c = client_v4(70);
    let t0 = NOW;
    tx_at(&mut w, t0, CLIENT_PORT, &client_ike4(c), BACKEND_PORT);
    // Seen again within 30 s: the same entry, pushed back.
    tx_at(&mut w, t0 + 29, CLIENT_PORT, &client_ike4(c), BACKEND_PORT);
    assert_eq!(entry_of(&w, c.into()).unwrap().expires_at, t0 + 29 + 30);
    assert_eq!(w.counters().clients.scheduled, 1);
    // Idle 30 s.
    let out = tx_at(
        &mut w,
        t0 + 29 + 30,
        CLIENT_PORT,
        &client_ike4(c),
        BACKEND_PORT,
    );
    assert_eq!(gateway_of4(&out), lab_gateway(c.into()));
    let cnt = w.counters();
    assert_eq!(cnt.clients.scheduled, 2);
    assert_eq!(cnt.affinity.expired, 1);
    let e = entry_of(&w, c.into()).unwrap();
    assert_eq!((e.last_seen, e.confirmed), (t0 + 59, false));
    assert_eq!(w.active_clients()[0].iter().sum::<u32>(), 1);
}

#[test]
fn a_confirmed_client_idle_past_the_persistence_timeout_is_scheduled_afresh() {
    let mut w = test_worker();
    let c = client_v4(71);
    let t0 = NOW;
    confirm4(&mut w, t0, c);
    assert_eq!(entry_of(&w, c.into()).unwrap().expires_at, t0 + 3600);
    // An hour less a second later it is still known; an hour after that it is not.
    tx_at(
        &mut w,
        t0 + 3599,
        CLIENT_PORT,
        &client_ike4(c),
        BACKEND_PORT,
    );
    assert_eq!(w.counters().clients.scheduled, 1);
    let e = entry_of(&w, c.into()).unwrap();
    assert_eq!((e.confirmed, e.expires_at), (true, t0 + 3599 + 3600));
    tx_at(
        &mut w,
        t0 + 3599 + 3600,
        CLIENT_PORT,
        &client_ike4(c),
        BACKEND_PORT,
    );
    let cnt = w.counters();
    assert_eq!(cnt.clients.scheduled, 2);
    assert_eq!(cnt.affinity.expired, 1);
    assert!(!entry_of(&w, c.into()).unwrap().confirmed);
}

#[test]
fn a_confirmed_client_seen_every_600_s_stays_forever() {
    let mut w = test_worker();
    let c = client_on(2, 0);
    let t0 = NOW;
    confirm4(&mut w, t0, c);
    // Two days of a packet every ten minutes, with the sweep running on every burst and other
    // (unconfirmed) clients coming and going.
    for k in 1..=288u32 {
        let t = t0 + 600 * k;
        let other = client_v4(1000 + k);
        tx_at(&mut w, t, CLIENT_PORT, &client_ike4(other), BACKEND_PORT);
        let out = tx_at(&mut w, t, CLIENT_PORT, &client_ike4(c), BACKEND_PORT);
        assert_eq!(gateway_of4(&out), 2, "at +{} s", 600 * k);
    }
    let e = entry_of(&w, c.into()).unwrap();
    assert_eq!(
        (e.gateway, e.confirmed, e.last_seen),
        (2, true, t0 + 600 * 288)
    );
    let cnt = w.counters();
    assert_eq!(cnt.clients.scheduled, 1 + 288);
    // The other clients did expire, and were swept or looked up as such.
    assert!(cnt.affinity.expired > 200, "{:?}", cnt.affinity);
}

// ---- 17. IPv6 clients --------------------------------------------------------------------

#[test]
fn an_ipv6_client_reaches_the_ipv6_address_of_its_gateway() {
    let mut w = test_worker();
    let c = client_v6(17);
    let g = lab_gateway(c.into());
    let ike = ike_sa_init(17);
    let input = udp6(from_router(), c, lab::VIP_V6, 500, 500, &ike);
    let out = tx(&mut w, CLIENT_PORT, &input, BACKEND_PORT);
    assert_eq!(gateway_of6(&out), g);
    let o = out6(&out);
    assert_eq!(o.ip.src_addr(), c);
    assert_eq!(o.ip.dst_addr(), lab::GATEWAYS_V6[g]);
    assert_eq!(o.ip.hop_limit(), 63);
    let udp = o.udp();
    assert_eq!((udp.src_port(), udp.dst_port()), (500, 500));
    assert_eq!(udp.payload(), &ike[..]);
    // Hop limit (21), destination (38..54), UDP checksum (60, 61) and MACs only.
    let changed = diff(&input, &out);
    assert!(
        changed
            .iter()
            .all(|i| matches!(i, 0..=11 | 21 | 38..=53 | 60 | 61)),
        "unexpected changes at {changed:?}"
    );
    // All of its flows follow.
    for (kind, frame) in client_flows6(c) {
        let out = tx(&mut w, CLIENT_PORT, &frame, BACKEND_PORT);
        assert_eq!(gateway_of6(&out), g, "{kind}");
        let o = out6(&out);
        match o.upper.protocol {
            ip_proto::UDP => {
                o.udp();
            }
            ip_proto::TCP => {
                let tcp = TcpPacket::new_checked(o.l4).expect("TCP");
                assert!(
                    tcp.verify_checksum_v6(&c, &lab::GATEWAYS_V6[g]),
                    "TCP checksum"
                );
            }
            p => assert_eq!(p, ip_proto::ESP),
        }
    }
    // The answer comes from the IPv6 VIP.
    let reply = ike_sa_init_reply(17);
    let back = udp6(from_gateway(g), lab::GATEWAYS_V6[g], c, 500, 500, &reply);
    let out = tx(&mut w, BACKEND_PORT, &back, CLIENT_PORT);
    let o = out6(&out);
    assert_eq!(
        (o.eth.dst(), o.ip.src_addr(), o.ip.dst_addr()),
        (lab::ROUTER_MAC, lab::VIP_V6, c)
    );
    assert_eq!(o.udp().payload(), &reply[..]);
    tx(
        &mut w,
        CLIENT_PORT,
        &client_ike_auth(c.into(), 17),
        BACKEND_PORT,
    );
    let e = entry_of(&w, c.into()).unwrap();
    assert_eq!((usize::from(e.gateway), e.confirmed), (g, true));
}

// ---- 18. IPv4 options and IPv6 extension headers -----------------------------------------

/// Router Alert (RFC 2113): IHL 6.
const ROUTER_ALERT: [u8; 4] = [0x94, 0x04, 0x00, 0x00];

fn options_frame4(c: Ipv4Addr) -> Vec<u8> {
    let opts = Ipv4Opts {
        options: ROUTER_ALERT.to_vec(),
        ..Ipv4Opts::default()
    };
    udp4_opts(
        from_router(),
        c,
        lab::VIP_V4,
        &opts,
        500,
        500,
        &ike_sa_init(18),
    )
}

fn ext_headers_frame6(c: Ipv6Addr) -> Vec<u8> {
    let ext = [
        // Router Alert (RFC 2711) in a hop-by-hop header.
        Ipv6Ext::HopByHop(vec![0x05, 0x02, 0x00, 0x00]),
        // An experimental destination option (RFC 4727), skipped by those that do not know it.
        Ipv6Ext::DestOpts(vec![0x1e, 0x02, 0xab, 0xcd]),
    ];
    udp6_ext(
        from_router(),
        c,
        lab::VIP_V6,
        64,
        &ext,
        500,
        500,
        &ike_sa_init(18),
    )
}

#[test]
fn ipv4_options_and_ipv6_extension_headers_are_forwarded_intact() {
    let mut w = test_worker();
    let c = client_v4(18);
    let input = options_frame4(c);
    let out = tx(&mut w, CLIENT_PORT, &input, BACKEND_PORT);
    let g = gateway_of4(&out);
    assert_eq!(g, lab_gateway(c.into()));
    let o = out4(&out);
    assert_eq!(o.ip.header_len(), 24);
    assert_eq!(o.ip.options(), &ROUTER_ALERT);
    assert_eq!(o.ip.dst_addr(), lab::GATEWAYS_V4[g]);
    assert_eq!(o.udp().payload(), &ike_sa_init(18)[..]);

    let c6 = client_v6(18);
    let input = ext_headers_frame6(c6);
    let out = tx(&mut w, CLIENT_PORT, &input, BACKEND_PORT);
    let g = gateway_of6(&out);
    assert_eq!(g, lab_gateway(c6.into()));
    let o = out6(&out);
    assert_eq!(o.ip.next_header(), ip_proto::HOPOPT);
    assert_eq!(o.upper.offset, 56);
    assert_eq!(&out[54..70], &input[54..70], "extension headers unchanged");
    assert_eq!(o.udp().payload(), &ike_sa_init(18)[..]);
    assert_eq!(o.ip.dst_addr(), lab::GATEWAYS_V6[g]);
}

// ---- more of the same, and known bugs ----------------------------------------------------

#[test]
fn ethernet_padding_is_carried_but_never_parsed() {
    let mut w = test_worker();
    let c = client_v4(90);
    let g = lab_gateway(c.into());
    // A keepalive is 43 bytes; on the wire it is padded to 60.
    let mut ka = udp4(
        from_router(),
        c,
        lab::VIP_V4,
        4500,
        4500,
        &testkit::NATT_KEEPALIVE,
    );
    testkit::pad_to_min_frame(&mut ka);
    assert_eq!(ka.len(), 60);
    let out = tx(&mut w, CLIENT_PORT, &ka, BACKEND_PORT);
    assert_eq!(gateway_of4(&out), g);
    assert_eq!(out4(&out).udp().payload(), &testkit::NATT_KEEPALIVE);
    assert_eq!(w.counters().class(Class::NattKeepalive), 1);
    // A bare TCP SYN (54 bytes) likewise.
    let syn = L4::Tcp {
        src: 50_000,
        dst: 443,
        seq: 9,
        ack: 0,
        flags: tcp_flags::SYN,
        payload: &[],
    };
    let mut f = testkit::ipv4(&from_router(), c, lab::VIP_V4, &Ipv4Opts::default(), &syn);
    testkit::pad_to_min_frame(&mut f);
    let out = tx(&mut w, CLIENT_PORT, &f, BACKEND_PORT);
    let o = out4(&out);
    let tcp = TcpPacket::new_checked(o.l4).expect("TCP");
    assert!(tcp.syn() && tcp.verify_checksum_v4(c, lab::GATEWAYS_V4[g]));
    // And an ARP request (42 bytes).
    let mut req = arp_request(
        L2::new(lab::ROUTER_MAC, EthernetAddress::BROADCAST),
        lab::ROUTER_MAC,
        ROUTER_V4,
        lab::VIP_V4,
    );
    testkit::pad_to_min_frame(&mut req);
    let out = tx(&mut w, CLIENT_PORT, &req, CLIENT_PORT);
    assert_eq!(
        ArpPacket::new_checked(&out[14..]).unwrap().operation(),
        ARP_REPLY
    );
}

#[test]
fn fragments_from_a_gateway_all_reach_the_client_from_the_vip() {
    let mut w = test_worker();
    // An IKE_AUTH response with certificates: often larger than the MTU.
    let c = client_v4(91);
    let g = confirm4(&mut w, NOW, c);
    let auth = ike_auth_natt(spi_of(c.into()), 2500);
    let whole = udp4(from_gateway(g), lab::GATEWAYS_V4[g], c, 4500, 4500, &auth);
    let outs: Vec<Vec<u8>> = testkit::fragment_ipv4(&whole, 1500)
        .iter()
        .map(|f| {
            let out = tx(&mut w, BACKEND_PORT, f, CLIENT_PORT);
            let o = out4(&out);
            assert_eq!(
                (o.eth.dst(), o.ip.src_addr(), o.ip.dst_addr()),
                (lab::ROUTER_MAC, lab::VIP_V4, c)
            );
            out
        })
        .collect();
    assert_eq!(outs.len(), 2);
    let datagram = reassemble4(&outs);
    let udp = UdpPacket::new_checked(&datagram[..]).expect("UDP");
    assert_eq!(udp.payload(), &auth[..]);
    assert!(
        udp.verify_checksum_v4(lab::VIP_V4, c),
        "UDP checksum for VIP -> client"
    );

    let c6 = client_v6(91);
    let g = gateway_of6(&tx(&mut w, CLIENT_PORT, &client_ike6(c6), BACKEND_PORT));
    let whole = udp6(from_gateway(g), lab::GATEWAYS_V6[g], c6, 4500, 4500, &auth);
    let outs: Vec<Vec<u8>> = testkit::fragment_ipv6(&whole, 1500, 91)
        .iter()
        .map(|f| {
            let out = tx(&mut w, BACKEND_PORT, f, CLIENT_PORT);
            assert_eq!(out6(&out).ip.src_addr(), lab::VIP_V6);
            out
        })
        .collect();
    let datagram = reassemble6(&outs);
    let udp = UdpPacket::new_checked(&datagram[..]).expect("UDP");
    assert_eq!(udp.payload(), &auth[..]);
    assert!(
        udp.verify_checksum_v6(&lab::VIP_V6, &c6),
        "UDP checksum for VIP -> client"
    );
    assert_eq!(w.counters().class(Class::Fragment), 2);
    // The first fragment carried the IKE header: the client echoes its responder SPI.
    let echo = client_ike_auth(c6.into(), spi_of(c.into()));
    tx(&mut w, CLIENT_PORT, &echo, BACKEND_PORT);
    assert!(entry_of(&w, c6.into()).unwrap().confirmed);
}

#[test]
fn bad_ipv4_sources_are_dropped() {
    let mut w = test_worker();
    let ike = ike_sa_init(92);
    for src in [
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::BROADCAST,
        Ipv4Addr::new(224, 0, 0, 5),
        Ipv4Addr::LOCALHOST,
        CLIENT_ITF_V4,
    ] {
        let f = udp4(from_router(), src, lab::VIP_V4, 500, 500, &ike);
        assert_eq!(
            run(&mut w, CLIENT_PORT, &f).0,
            Verdict::Drop(DropReason::BadSource),
            "{src}"
        );
    }
    for src in [Ipv6Addr::LOCALHOST, "ff02::1".parse().unwrap(), lab::VIP_V6] {
        let f = udp6(from_router(), src, lab::VIP_V6, 500, 500, &ike);
        assert_eq!(
            run(&mut w, CLIENT_PORT, &f).0,
            Verdict::Drop(DropReason::BadSource),
            "{src}"
        );
    }
    assert_eq!(w.affinity().len(), 0);
}

#[test]
fn a_packet_from_the_unspecified_ipv6_address_is_a_bad_source() {
    let mut w = test_worker();
    let f = udp6(
        from_router(),
        Ipv6Addr::UNSPECIFIED,
        lab::VIP_V6,
        500,
        500,
        &ike_sa_init(93),
    );
    assert_eq!(
        run(&mut w, CLIENT_PORT, &f).0,
        Verdict::Drop(DropReason::BadSource)
    );
    assert_eq!(w.affinity().len(), 0);
}

#[test]
fn link_local_sources_are_not_forwarded() {
    let mut w = test_worker();
    let ike = ike_sa_init(94);
    let f = udp6(
        from_router(),
        "fe80::1".parse().unwrap(),
        lab::VIP_V6,
        500,
        500,
        &ike,
    );
    assert_eq!(
        run(&mut w, CLIENT_PORT, &f).0,
        Verdict::Drop(DropReason::BadSource)
    );
    let f = udp4(
        from_router(),
        Ipv4Addr::new(169, 254, 1, 1),
        lab::VIP_V4,
        500,
        500,
        &ike,
    );
    assert_eq!(
        run(&mut w, CLIENT_PORT, &f).0,
        Verdict::Drop(DropReason::BadSource)
    );
}

#[test]
fn the_first_fragment_of_a_large_echo_request_is_not_answered_alone() {
    let mut w = test_worker();
    let payload = vec![0x61u8; 3000];
    let l4 = L4::Icmpv4 {
        msg_type: 8,
        code: 0,
        rest: 0x1234_0001,
        payload: &payload,
    };
    let req = testkit::ipv4(
        &from_router(),
        client_v4(95),
        lab::VIP_V4,
        &Ipv4Opts::default(),
        &l4,
    );
    let frags = testkit::fragment_ipv4(&req, 1500);
    let (v, out) = run(&mut w, CLIENT_PORT, &frags[0]);
    assert!(
        !matches!(v, Verdict::Tx { .. }),
        "answered with a fragment (MF {}, {} bytes)",
        out4(&out).ip.more_frags(),
        out.len()
    );
}

#[test]
fn an_icmp_error_that_finds_an_expired_entry_releases_its_client() {
    let mut w = worker(spec_with(SchedulerKind::LeastConn, [1, 1, 1]));
    let c = client_v4(96);
    tx(&mut w, CLIENT_PORT, &client_ike4(c), BACKEND_PORT);
    assert_eq!(w.active_clients()[0].iter().sum::<u32>(), 1);
    // The unconfirmed entry times out; the next packet about the client is an ICMP error.
    let sent = ip_part(&udp4(from_router(), lab::VIP_V4, c, 4500, 4500, &[9; 16]));
    let l4 = L4::Icmpv4 {
        msg_type: 3,
        code: 4,
        rest: 1400,
        payload: &sent,
    };
    let err = testkit::ipv4(
        &from_router(),
        ROUTER_V4,
        lab::VIP_V4,
        &Ipv4Opts::default(),
        &l4,
    );
    let (v, _) = run_at(&mut w, NOW + 31, CLIENT_PORT, &err);
    assert_eq!(v, Verdict::Drop(DropReason::IcmpNoFlow));
    assert_eq!((w.affinity().len(), w.counters().affinity.expired), (0, 1));
    assert_eq!(w.active_clients(), vec![vec![0, 0, 0]]);
}

#[test]
fn affinity_flush_removes_one_client_or_all_and_releases_them() {
    let mut w = test_worker();
    let (a, b) = (client_v4(1), client_v4(2));
    for c in [a, b] {
        tx(&mut w, CLIENT_PORT, &client_ike4(c), BACKEND_PORT);
    }
    assert_eq!(w.affinity().len(), 2);
    assert_eq!(w.flush_affinity(Some(IpAddr::V4(a))), 1);
    assert_eq!(w.affinity().len(), 1);
    assert_eq!(
        w.affinity().iter().next().unwrap().0.client_ip(),
        IpAddr::V4(b)
    );
    assert_eq!(w.active_clients()[0].iter().sum::<u32>(), 1);
    assert_eq!(w.flush_affinity(None), 1);
    // Gone for every reader at once; the slot is reclaimed by the next burst's slice.
    assert_eq!(w.affinity().iter().count(), 0);
    w.finish_remap();
    assert!(w.affinity().is_empty());
    assert_eq!(w.active_clients()[0].iter().sum::<u32>(), 0);
    // The flushed client is scheduled afresh.
    tx(&mut w, CLIENT_PORT, &client_ike4(a), BACKEND_PORT);
    assert_eq!(w.counters().clients.scheduled, 3);
}

#[test]
fn remapped_affinity_keeps_every_client_on_its_gateway_when_ids_move() {
    let mut w = test_worker();
    let clients: Vec<Ipv4Addr> = (1..=30).map(client_v4).collect();
    let mut before = Vec::new();
    for c in &clients {
        let out = tx(&mut w, CLIENT_PORT, &client_ike4(*c), BACKEND_PORT);
        before.push(gateway_of4(&out));
    }
    // The new configuration lists the gateways in another order (gw3, gw1, gw2).
    let mut spec = test_spec();
    spec.services[0].gateways.rotate_right(1);
    let order = [1u16, 2, 0]; // old gateway id -> new id
    let map: Vec<Vec<Option<(u16, u16)>>> = vec![order.iter().map(|&g| Some((0, g))).collect()];
    w.begin_remap(snapshot(spec, 2), Remap::new(&map));
    let moved = finish(&mut w);
    assert_eq!(moved.1, 0);
    assert!(moved.0 > 0);
    assert_eq!(w.affinity().len(), clients.len());
    for (c, gw) in clients.iter().zip(&before) {
        let out = tx(&mut w, CLIENT_PORT, &client_ike4(*c), BACKEND_PORT);
        assert_eq!(gateway_of4(&out), *gw, "client {c} kept its gateway");
    }
    assert_eq!(
        w.counters().clients.scheduled,
        clients.len() as u64,
        "nobody rescheduled"
    );
    assert_eq!(
        w.active_clients()[0].iter().sum::<u32>(),
        clients.len() as u32
    );
    // A gateway that is gone takes its entries with it.
    let map = vec![vec![None, Some((0, 1)), Some((0, 2))]];
    w.begin_remap(snapshot(test_spec(), 3), Remap::new(&map));
    let (_, removed) = finish(&mut w);
    assert_eq!(removed, before.iter().filter(|g| **g == 2).count());
}

/// Completes the running remap and returns its (moved, removed).
fn finish(w: &mut Pipeline) -> (usize, usize) {
    w.finish_remap();
    let mut out = None;
    w.drain_finished_remaps(|p| out = Some((p.moved, p.removed)));
    out.expect("a remap completed")
}

#[test]
fn a_reload_remapped_over_many_bursts_answers_like_a_one_shot_remap() {
    // Two workers with the same 2 000 clients; one re-keys at once, the other a slice per
    // burst while every client sends a packet.
    let clients: Vec<Ipv4Addr> = (0..2000u32)
        .map(|i| Ipv4Addr::from(0xc612_4000 + i))
        .collect();
    let (mut once, mut sliced) = (test_worker(), test_worker());
    let mut before = Vec::new();
    for c in &clients {
        let out = tx(&mut once, CLIENT_PORT, &client_ike4(*c), BACKEND_PORT);
        tx(&mut sliced, CLIENT_PORT, &client_ike4(*c), BACKEND_PORT);
        before.push(gateway_of4(&out));
    }
    let mut spec = test_spec();
    spec.services[0].gateways.rotate_right(1);
    // Old gw1 (id 0) is gone; gw2 and gw3 take ids 2 and 0.
    let map = vec![vec![None, Some((0, 2)), Some((0, 0))]];
    for w in [&mut once, &mut sliced] {
        w.begin_remap(snapshot(spec.clone(), 2), Remap::new(&map));
    }
    let expected = finish(&mut once);
    let mut bursts_remapping = 0;
    for (c, gw) in clients.iter().zip(&before) {
        bursts_remapping += usize::from(sliced.remap_progress().is_some());
        let a = tx(&mut once, CLIENT_PORT, &client_ike4(*c), BACKEND_PORT);
        let b = tx(&mut sliced, CLIENT_PORT, &client_ike4(*c), BACKEND_PORT);
        assert_eq!(gateway_of4(&a), gateway_of4(&b), "client {c}");
        if *gw != 0 {
            assert_eq!(gateway_of4(&b), *gw, "client {c} kept its gateway");
        }
    }
    assert!(
        bursts_remapping > 5,
        "{bursts_remapping} bursts ran during the remap"
    );
    assert!(sliced.remap_progress().is_none());
    let mut got = None;
    sliced.drain_finished_remaps(|p| got = Some((p.moved, p.removed)));
    // Entries the packets translated first count the same.
    assert_eq!(got, Some(expected));
    let table = |w: &Pipeline| {
        let mut t: Vec<_> = w
            .affinity()
            .iter()
            .map(|(k, v)| (k, v.gateway, v.confirmed))
            .collect();
        t.sort_by_key(|(k, ..)| (k.client, k.service));
        t
    };
    assert_eq!(table(&once), table(&sliced));
    assert_eq!(once.active_clients(), sliced.active_clients());
    assert_eq!(once.counters().clients, sliced.counters().clients);
}

#[test]
fn show_and_flush_one_client_read_only_its_keys() {
    let mut w = test_worker();
    let clients: Vec<Ipv4Addr> = (0..500u32)
        .map(|i| Ipv4Addr::from(0xc612_4000 + i))
        .collect();
    for c in &clients {
        tx(&mut w, CLIENT_PORT, &client_ike4(*c), BACKEND_PORT);
    }
    let c = IpAddr::V4(clients[7]);
    let mut found = Vec::new();
    w.client_entries(c, |k, v| found.push((k, v)));
    let walked: Vec<_> = w
        .affinity()
        .iter()
        .filter(|(k, _)| k.client_ip() == c)
        .collect();
    assert_eq!(found, walked);
    assert_eq!(found.len(), 1);
    assert_eq!(w.flush_affinity(Some(c)), 1);
    found.clear();
    w.client_entries(c, |k, v| found.push((k, v)));
    assert!(found.is_empty());
    assert_eq!(w.affinity().len(), clients.len() - 1);
    assert_eq!(w.active_clients()[0].iter().sum::<u32>(), 499);
}

/// A TLS client whose first connection's SYN-ACK it never acknowledged (lost while its address
/// was resolved, say) opens another: the new SYN-ACK is the proof its acknowledgment answers,
/// so it is established (it used to be held to the first SYN-ACK's sequence number for good).
#[test]
fn a_new_connections_syn_ack_is_the_proof_a_tcp_client_answers() {
    use testkit::tcp_flags::{ACK, SYN};
    let mut w = test_worker();
    let c = client_v4(77);
    let seg = |src: u16, seq: u32, ack: u32, flags: u16| L4::Tcp {
        src,
        dst: 443,
        seq,
        ack,
        flags,
        payload: &[],
    };
    let from_client =
        |l4: &L4<'_>| testkit::ipv4(&from_router(), c, lab::VIP_V4, &Ipv4Opts::default(), l4);
    let syn_ack = |g: usize, dst: u16, isn: u32, ack: u32| {
        let l4 = L4::Tcp {
            src: 443,
            dst,
            seq: isn,
            ack,
            flags: SYN | ACK,
            payload: &[],
        };
        testkit::ipv4(
            &from_gateway(g),
            lab::GATEWAYS_V4[g],
            c,
            &Ipv4Opts::default(),
            &l4,
        )
    };
    // First connection: SYN, SYN-ACK (ISN 1 000 000), and no acknowledgment from the client.
    let g = gateway_of4(&tx(
        &mut w,
        CLIENT_PORT,
        &from_client(&seg(40_001, 7, 0, SYN)),
        BACKEND_PORT,
    ));
    tx(
        &mut w,
        BACKEND_PORT,
        &syn_ack(g, 40_001, 1_000_000, 8),
        CLIENT_PORT,
    );
    // Second connection: its SYN-ACK (ISN 3 000 000 000) and the client's ACK of it.
    tx(
        &mut w,
        CLIENT_PORT,
        &from_client(&seg(40_002, 90, 0, SYN)),
        BACKEND_PORT,
    );
    tx(
        &mut w,
        BACKEND_PORT,
        &syn_ack(g, 40_002, 3_000_000_000, 91),
        CLIENT_PORT,
    );
    assert_eq!(w.counters().clients.established, 0);
    tx(
        &mut w,
        CLIENT_PORT,
        &from_client(&seg(40_002, 91, 3_000_000_001, ACK)),
        BACKEND_PORT,
    );
    let cnt = w.counters();
    assert_eq!(cnt.clients.established, 1, "{:?}", cnt.clients);
    assert_eq!(cnt.clients.proof_mismatch, 0);
}
