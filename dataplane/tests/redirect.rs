//! Redirect mode (RFC 5685) through the whole pipeline, on byte buffers: the exact bytes of the
//! answer, the choice of gateway, fallbacks to NAT, bad input, and routing for redirected
//! clients.

mod common;

use std::net::{IpAddr, Ipv4Addr};

use common::*;
use dataplane::counters::DropReason;
use dataplane::model::{ApplianceSpec, ServiceMode};
use dataplane::pipeline::{Pipeline, Verdict};
use dataplane::redirect::{Fallback, LOAD_SCALE};
use dataplane::schedule::{client_hash, GatewayState};
use dataplane::wire::ike::{exchange, flags, notify_type};
use testkit::{lab, tcp_flags, Ipv4Opts, L4};

const NONCE: [u8; 32] = [0x4e; 32];

fn redirect_spec(route: bool) -> ApplianceSpec {
    let mut spec = test_spec();
    spec.services[0].mode = ServiceMode::Redirect;
    spec.services[0].route_to_gateways = route;
    spec
}

/// An IKE_SA_INIT request as a redirect-capable initiator sends it.
fn supporting_request(spi: u64) -> Vec<u8> {
    testkit::ike_sa_init_request(
        spi,
        &NONCE,
        19,
        64,
        &[(notify_type::REDIRECT_SUPPORTED, &[])],
    )
}

fn ike4_to_vip(client: Ipv4Addr, ike: &[u8]) -> Vec<u8> {
    udp4(from_router(), client, lab::VIP_V4, 500, 500, ike)
}

/// RFC 5685 §4.1 and §8, written out field by field.
fn expected_response(spi: u64, gw_type: u8, gw: &[u8]) -> Vec<u8> {
    let notify_len = 4 + 4 + 2 + gw.len() + NONCE.len();
    let mut v = spi.to_be_bytes().to_vec();
    v.extend_from_slice(&[0; 8]);
    v.extend_from_slice(&[41, 0x20, exchange::IKE_SA_INIT, flags::RESPONSE, 0, 0, 0, 0]);
    v.extend_from_slice(&((28 + notify_len) as u32).to_be_bytes());
    v.extend_from_slice(&[0, 0]);
    v.extend_from_slice(&(notify_len as u16).to_be_bytes());
    v.extend_from_slice(&[0, 0]);
    v.extend_from_slice(&notify_type::REDIRECT.to_be_bytes());
    v.extend_from_slice(&[gw_type, gw.len() as u8]);
    v.extend_from_slice(gw);
    v.extend_from_slice(&NONCE);
    v
}

/// Where a redirect with every load equal goes: the first gateway at or after the client's hash.
fn first_choice(client: IpAddr) -> usize {
    let h = match client {
        IpAddr::V4(a) => client_hash(&a.octets()),
        IpAddr::V6(a) => client_hash(&a.octets()),
    };
    (h as usize) % 3
}

/// Redirects `client` and returns the gateway (0-based) named in the answer.
fn redirected_to4(w: &mut Pipeline, client: Ipv4Addr) -> usize {
    let req = ike4_to_vip(client, &supporting_request(spi_of(client.into())));
    let out = tx(w, CLIENT_PORT, &req, CLIENT_PORT);
    let o = out4(&out);
    let udp = o.udp();
    let ike = udp.payload();
    let gw = Ipv4Addr::new(ike[38], ike[39], ike[40], ike[41]);
    lab::GATEWAYS_V4
        .iter()
        .position(|a| *a == gw)
        .expect("a lab gateway")
}

/// Runs the gateway's frame `back`, which must be routed to `client` untouched but for the
/// TTL (from the gateway's own address, via the router); returns the frame sent.
fn routed_back4(w: &mut Pipeline, back: &[u8], gw: Ipv4Addr, client: Ipv4Addr) -> Vec<u8> {
    let out = tx(w, BACKEND_PORT, back, CLIENT_PORT);
    let o = out4(&out);
    assert_eq!(
        (o.ip.src_addr(), o.ip.dst_addr(), o.ip.ttl()),
        (gw, client, 63)
    );
    assert_eq!(o.eth.dst(), lab::ROUTER_MAC);
    out
}

#[test]
fn answers_with_the_exact_rfc5685_response_v4() {
    let mut w = worker(redirect_spec(true));
    let client = client_v4(7);
    let spi = spi_of(client.into());
    let req = ike4_to_vip(client, &supporting_request(spi));
    let out = tx(&mut w, CLIENT_PORT, &req, CLIENT_PORT);
    let g = first_choice(client.into());
    let o = out4(&out);
    assert_eq!(o.eth.dst(), lab::ROUTER_MAC);
    assert_eq!(o.eth.src(), lab::CLIENT_PORT_MAC);
    assert_eq!((o.ip.src_addr(), o.ip.dst_addr()), (lab::VIP_V4, client));
    assert_eq!((o.ip.ttl(), o.ip.header_len()), (64, 20));
    let udp = o.udp();
    assert_eq!((udp.src_port(), udp.dst_port()), (500, 500));
    let want = expected_response(spi, 1, &lab::GATEWAYS_V4[g].octets());
    assert_eq!(udp.payload(), &want[..]);
    // Never more than was received.
    assert!(out.len() < req.len());
    let c = w.counters();
    assert_eq!(c.gateways[0][g].redirects, 1);
    assert_eq!(w.snapshot().loads.redirects(0, g as u16), 1);
    assert_eq!(c.tx_packets, 1);
    assert_balanced(&w);
}

/// Load inflation (issue 15): one host repeating its IKE_SA_INIT is answered every time, but
/// adds to its gateway's load once, so it cannot push new clients off that gateway.
#[test]
fn a_repeated_request_adds_to_the_load_once() {
    let mut w = worker(redirect_spec(true));
    let client = client_v4(8);
    let req = ike4_to_vip(client, &supporting_request(spi_of(client.into())));
    for _ in 0..100 {
        tx(&mut w, CLIENT_PORT, &req, CLIENT_PORT);
    }
    let g = first_choice(client.into());
    assert_eq!(
        w.counters().gateways[0][g].redirects,
        100,
        "every request answered"
    );
    assert_eq!(
        w.snapshot().loads.redirects(0, g as u16),
        1,
        "the load counts the client once"
    );
    // A second client is placed by that load (one client), not by a hundred repeats.
    let other = client_v4(9);
    let req = ike4_to_vip(other, &supporting_request(spi_of(other.into())));
    tx(&mut w, CLIENT_PORT, &req, CLIENT_PORT);
    let total: u64 = (0..3).map(|g| w.snapshot().loads.redirects(0, g)).sum();
    assert_eq!(total, 2);
}

#[test]
fn answers_with_the_exact_rfc5685_response_v6() {
    let mut w = worker(redirect_spec(true));
    let client = client_v6(9);
    let spi = spi_of(client.into());
    let ike = supporting_request(spi);
    let req = udp6(from_router(), client, lab::VIP_V6, 500, 500, &ike);
    let out = tx(&mut w, CLIENT_PORT, &req, CLIENT_PORT);
    let g = first_choice(client.into());
    let o = out6(&out);
    assert_eq!((o.ip.src_addr(), o.ip.dst_addr()), (lab::VIP_V6, client));
    assert_eq!(o.ip.hop_limit(), 64);
    let udp = o.udp();
    let want = expected_response(spi, 2, &lab::GATEWAYS_V6[g].octets());
    assert_eq!(udp.payload(), &want[..]);
}

#[test]
fn ip_options_are_not_echoed() {
    let mut w = worker(redirect_spec(true));
    let client = client_v4(11);
    let opts = Ipv4Opts {
        options: vec![0x94, 4, 0, 0], // Router Alert
        ..Ipv4Opts::default()
    };
    let req = udp4_opts(
        from_router(),
        client,
        lab::VIP_V4,
        &opts,
        500,
        500,
        &supporting_request(1),
    );
    let out = tx(&mut w, CLIENT_PORT, &req, CLIENT_PORT);
    let o = out4(&out);
    assert_eq!(o.ip.header_len(), 20);
    let g = first_choice(client.into());
    assert_eq!(
        o.udp().payload(),
        &expected_response(1, 1, &lab::GATEWAYS_V4[g].octets())[..]
    );
}

#[test]
fn fewest_tunnels_per_weight_and_never_a_down_gateway() {
    // Reported loads: gw1 10 tunnels, gw2 none, gw3 5.
    let mut w = worker(redirect_spec(true));
    let board = std::sync::Arc::clone(&w.snapshot().loads);
    board.set_load(0, 0, 10 * LOAD_SCALE, 0);
    board.set_load(0, 2, 5 * LOAD_SCALE, 0);
    let mut got = [0usize; 3];
    for i in 0..10 {
        got[redirected_to4(&mut w, client_v4(100 + i))] += 1;
    }
    // gw2 takes the first 5, then gw2 and gw3 share: 15 tunnels over the two.
    assert_eq!(got[0], 0, "{got:?}");
    assert_eq!(got[1] + got[2], 10);
    let (l2, l3) = (board.load(0, 1), board.load(0, 2));
    assert!((l2 - l3).abs() <= LOAD_SCALE, "{l2} {l3}");

    // gw2 down, gw1 weight 2: gw1 takes two thirds, gw2 nothing.
    let mut spec = redirect_spec(true);
    spec.services[0].gateways[0].weight = 2;
    spec.services[0].gateways[1].state = GatewayState::Down;
    let mut w = worker(spec);
    let mut got = [0usize; 3];
    for i in 0..30 {
        got[redirected_to4(&mut w, client_v4(200 + i))] += 1;
    }
    assert_eq!(got[1], 0, "{got:?}");
    assert!((19..=21).contains(&got[0]), "{got:?}");
}

#[test]
fn a_client_keeps_its_gateway() {
    let mut w = worker(redirect_spec(true));
    let client = client_v4(21);
    let first = redirected_to4(&mut w, client);
    // Its gateway becomes the busiest: the client still goes back there.
    w.snapshot()
        .loads
        .set_load(0, first as u16, 100 * LOAD_SCALE, 1);
    assert_eq!(redirected_to4(&mut w, client), first);

    // A client that reached a gateway through the VIP first (TLS) is redirected there too.
    let other = client_v4(22);
    let hello = testkit::tls_client_hello(Some("vpn.example"));
    let syn = testkit::ipv4(
        &from_router(),
        other,
        lab::VIP_V4,
        &Ipv4Opts::default(),
        &L4::Tcp {
            src: 40_000,
            dst: 443,
            seq: 1,
            ack: 0,
            flags: tcp_flags::PSH | tcp_flags::ACK,
            payload: &hello,
        },
    );
    let nat_gw = gateway_of4(&tx(&mut w, CLIENT_PORT, &syn, BACKEND_PORT));
    w.snapshot()
        .loads
        .set_load(0, nat_gw as u16, 100 * LOAD_SCALE, 1);
    assert_eq!(redirected_to4(&mut w, other), nat_gw);
}

#[test]
fn fallbacks_to_nat_are_counted_by_reason() {
    let mut w = worker(redirect_spec(true));
    let client = client_v4(31);
    // No REDIRECT_SUPPORTED: forwarded to the scheduler's gateway, translated.
    let plain = testkit::ike_sa_init_request(5, &NONCE, 19, 64, &[]);
    let out = tx(
        &mut w,
        CLIENT_PORT,
        &ike4_to_vip(client, &plain),
        BACKEND_PORT,
    );
    assert_eq!(gateway_of4(&out), lab_gateway(client.into()));
    // A later exchange on 500.
    let auth = testkit::ike_message(5, 6, exchange::IKE_AUTH, flags::INITIATOR, 1, &[0; 64]);
    tx(
        &mut w,
        CLIENT_PORT,
        &ike4_to_vip(client, &auth),
        BACKEND_PORT,
    );
    // A fragmented request (a large KE): the first fragment cannot be read whole.
    let big = testkit::ike_sa_init_request(
        7,
        &NONCE,
        19,
        1600,
        &[(notify_type::REDIRECT_SUPPORTED, &[])],
    );
    let frags = testkit::fragment_ipv4(&ike4_to_vip(client_v4(32), &big), 1500);
    assert!(frags.len() > 1);
    for f in &frags {
        tx(&mut w, CLIENT_PORT, f, BACKEND_PORT);
    }
    let s = &w.counters().services[0];
    assert_eq!(s.fallbacks(Fallback::NoRedirectSupported), 1);
    assert_eq!(s.fallbacks(Fallback::NotInitial), 1);
    assert_eq!(s.fallbacks(Fallback::Fragment), 1);
    assert_eq!(
        w.counters().gateways[0]
            .iter()
            .map(|g| g.redirects)
            .sum::<u64>(),
        0
    );

    // No gateway has an IPv6 address: an IPv6 client cannot be redirected, nor balanced.
    let mut spec = redirect_spec(true);
    for g in &mut spec.services[0].gateways {
        g.ipv6 = None;
    }
    let mut w = worker(spec);
    let ike = supporting_request(9);
    let req = udp6(from_router(), client_v6(3), lab::VIP_V6, 500, 500, &ike);
    let (v, _) = run(&mut w, CLIENT_PORT, &req);
    assert_eq!(v, Verdict::Drop(DropReason::NoGateway));
    assert_eq!(
        w.counters().services[0].fallbacks(Fallback::NoGatewayAddress),
        1
    );
}

#[test]
fn bad_requests_get_no_answer() {
    let mut w = worker(redirect_spec(true));
    let good = supporting_request(3);
    let mut bad: Vec<Vec<u8>> = Vec::new();
    bad.push(good[..20].to_vec()); // truncated header
    let mut long = good.clone();
    long[27] = long[27].wrapping_add(8); // length field beyond the datagram
    bad.push(long);
    let mut chain = good.clone();
    chain[31] = chain[31].wrapping_add(60); // the SA payload runs past the end
    bad.push(chain);
    let mut spi_r = good.clone();
    spi_r[8] = 1; // a responder SPI in a first request
    bad.push(spi_r);
    let mut sent = 0;
    for b in &bad {
        let (v, _) = run(&mut w, CLIENT_PORT, &ike4_to_vip(client_v4(41), b));
        assert_eq!(v, Verdict::Drop(DropReason::MalformedIkeSaInit));
        sent += 1;
    }
    // A bad UDP checksum (the field itself: Ethernet 14 + IPv4 20 + 6).
    let mut frame = ike4_to_vip(client_v4(42), &good);
    frame[40] ^= 0xff;
    let (v, _) = run(&mut w, CLIENT_PORT, &frame);
    assert_eq!(v, Verdict::Drop(DropReason::MalformedIkeSaInit));
    sent += 1;
    let c = w.counters();
    assert_eq!(c.services[0].malformed_ike_sa_init, sent);
    assert_eq!(c.dropped(DropReason::MalformedIkeSaInit), sent);
    assert_eq!(c.tx_packets, 0);
    assert_eq!(w.affinity().len(), 0);
}

#[test]
fn redirected_clients_are_routed_both_ways_nat_clients_still_translated() {
    let mut w = worker(redirect_spec(true));
    let client = client_v4(51);
    let g = redirected_to4(&mut w, client);
    let gw = lab::GATEWAYS_V4[g];
    // NAT-T to the gateway's own address: routed, not translated.
    let ike = testkit::non_esp_marker(&testkit::ike_message(
        1,
        2,
        exchange::IKE_AUTH,
        flags::INITIATOR,
        1,
        &[0; 80],
    ));
    let to_gw = udp4(from_router(), client, gw, 4500, 4500, &ike);
    let out = tx(&mut w, CLIENT_PORT, &to_gw, BACKEND_PORT);
    assert_eq!(gateway_of4(&out), g);
    let o = out4(&out);
    assert_eq!((o.ip.src_addr(), o.ip.ttl()), (client, 63));
    o.udp();
    // And back: the source stays the gateway's.
    let back = udp4(from_gateway(g), gw, client, 4500, 4500, &ike);
    let out = routed_back4(&mut w, &back, gw, client);
    out4(&out).udp();
    let c = w.counters().gateways[0][g];
    assert_eq!(
        (c.routed_to_gateway_packets, c.routed_from_gateway_packets),
        (1, 1)
    );
    assert_eq!((c.to_gateway_packets, c.from_gateway_packets), (0, 0));

    // A NAT-mode client of the same gateway: its return traffic is still translated.
    let nat_client = (1000..)
        .map(client_v4)
        .find(|c| lab_gateway((*c).into()) == g)
        .unwrap();
    let plain = testkit::ike_sa_init_request(8, &NONCE, 19, 64, &[]);
    tx(
        &mut w,
        CLIENT_PORT,
        &ike4_to_vip(nat_client, &plain),
        BACKEND_PORT,
    );
    let reply = udp4(
        from_gateway(g),
        gw,
        nat_client,
        500,
        500,
        &ike_sa_init_reply(8),
    );
    let out = tx(&mut w, BACKEND_PORT, &reply, CLIENT_PORT);
    assert_eq!(out4(&out).ip.src_addr(), lab::VIP_V4);
    assert_balanced(&w);
}

#[test]
fn routing_is_off_unless_configured() {
    let mut w = worker(redirect_spec(false));
    let client = client_v4(61);
    let g = redirected_to4(&mut w, client);
    let to_gw = udp4(
        from_router(),
        client,
        lab::GATEWAYS_V4[g],
        4500,
        4500,
        &[0xff],
    );
    let (v, _) = run(&mut w, CLIENT_PORT, &to_gw);
    assert_eq!(v, Verdict::Drop(DropReason::NotAVip));
    // NAT mode ignores redirect support altogether.
    let mut w = worker(test_spec());
    let req = ike4_to_vip(client, &supporting_request(4));
    let out = tx(&mut w, CLIENT_PORT, &req, BACKEND_PORT);
    assert_eq!(gateway_of4(&out), lab_gateway(client.into()));
}

/// An IPv6 client redirected to its gateway's IPv6 address, then IP-fragmenting its IKE_AUTH
/// (as strongSwan does without IKE fragmentation): every fragment is routed, both ways.
#[test]
fn ip_fragments_of_redirected_clients_are_routed_both_ways() {
    let mut w = worker(redirect_spec(true));
    let client = client_v6(77);
    let ike = supporting_request(spi_of(client.into()));
    let req = udp6(from_router(), client, lab::VIP_V6, 500, 500, &ike);
    let out = tx(&mut w, CLIENT_PORT, &req, CLIENT_PORT);
    let o = out6(&out);
    let answer = o.udp();
    let gw_addr = std::net::Ipv6Addr::from(
        <[u8; 16]>::try_from(&answer.payload()[38..54]).expect("an IPv6 gateway identity"),
    );
    let g = lab::GATEWAYS_V6
        .iter()
        .position(|a| *a == gw_addr)
        .expect("a lab gateway");
    let auth = testkit::non_esp_marker(&testkit::ike_message(
        1,
        2,
        exchange::IKE_AUTH,
        flags::INITIATOR,
        1,
        &[0x33; 3000],
    ));
    let whole = udp6(from_router(), client, gw_addr, 4500, 4500, &auth);
    let frags = testkit::fragment_ipv6(&whole, 1280, 9);
    assert!(frags.len() > 2);
    for f in &frags {
        let out = tx(&mut w, CLIENT_PORT, f, BACKEND_PORT);
        assert_eq!(gateway_of6(&out), g);
        assert_eq!(out6(&out).ip.hop_limit(), 63);
    }
    let back = udp6(from_gateway(g), gw_addr, client, 4500, 4500, &auth);
    for f in &testkit::fragment_ipv6(&back, 1280, 10) {
        let out = tx(&mut w, BACKEND_PORT, f, CLIENT_PORT);
        let o = out6(&out);
        assert_eq!((o.ip.src_addr(), o.ip.dst_addr()), (gw_addr, client));
    }
    let c = w.counters().gateways[0][g];
    assert_eq!(c.routed_to_gateway_packets, frags.len() as u64);
    assert_eq!(c.from_gateway_packets, 0, "nothing translated");
    assert_balanced(&w);
}

fn icmp4(
    l2: testkit::L2,
    src: Ipv4Addr,
    dst: Ipv4Addr,
    msg_type: u8,
    code: u8,
    payload: &[u8],
) -> Vec<u8> {
    testkit::ipv4(
        &l2,
        src,
        dst,
        &Ipv4Opts::default(),
        &L4::Icmpv4 {
            msg_type,
            code,
            rest: if msg_type == 3 { 1400 } else { 0x0001_0001 },
            payload,
        },
    )
}

/// ICMP between redirected clients and their gateways is routed untouched: pings both ways,
/// and an error about the client's packet to the gateway's own address goes back from that
/// address (a NAT-mode client's error is still translated to come from the VIP).
#[test]
fn icmp_of_redirected_clients_is_routed_untouched() {
    let mut w = worker(redirect_spec(true));
    let client = client_v4(81);
    let g = redirected_to4(&mut w, client);
    let gw = lab::GATEWAYS_V4[g];
    let ping = icmp4(from_router(), client, gw, 8, 0, &[7; 32]);
    let out = tx(&mut w, CLIENT_PORT, &ping, BACKEND_PORT);
    assert_eq!(gateway_of4(&out), g);
    let o = out4(&out);
    assert_eq!((o.ip.src_addr(), o.ip.ttl()), (client, 63));
    assert_eq!(&o.l4[8..], &[7; 32]);
    let pong = icmp4(from_gateway(g), gw, client, 0, 0, &[7; 32]);
    routed_back4(&mut w, &pong, gw, client);

    // Fragmentation needed, quoting the client's ESP in UDP to the gateway's own address.
    let sent = udp4(from_router(), client, gw, 4500, 4500, &[0x11; 64]);
    let err = icmp4(from_gateway(g), gw, client, 3, 4, &sent[14..14 + 28]);
    let out = tx(&mut w, BACKEND_PORT, &err, CLIENT_PORT);
    let o = out4(&out);
    assert_eq!((o.ip.src_addr(), o.ip.dst_addr()), (gw, client));
    assert_eq!(&o.l4[8..], &sent[14..14 + 28], "the quote untouched");
    let c = w.counters();
    assert_eq!(c.gateways[0][g].routed_to_gateway_packets, 1);
    assert_eq!(c.gateways[0][g].routed_from_gateway_packets, 2);
    assert_eq!(c.icmp_errors_translated, 0);

    // A client the gateway never redirected: the gateway's echo reply is not routed to it,
    // and an error about its NAT-mode traffic is translated.
    let nat_client = (2000..)
        .map(client_v4)
        .find(|c| lab_gateway((*c).into()) == g)
        .unwrap();
    let pong = icmp4(from_gateway(g), gw, nat_client, 0, 0, &[7; 32]);
    assert_eq!(
        run(&mut w, BACKEND_PORT, &pong).0,
        Verdict::Drop(DropReason::NoService)
    );
    let plain = testkit::ike_sa_init_request(8, &NONCE, 19, 64, &[]);
    tx(
        &mut w,
        CLIENT_PORT,
        &ike4_to_vip(nat_client, &plain),
        BACKEND_PORT,
    );
    let sent = udp4(from_router(), nat_client, gw, 500, 500, &plain);
    let err = icmp4(from_gateway(g), gw, nat_client, 3, 4, &sent[14..14 + 28]);
    let out = tx(&mut w, BACKEND_PORT, &err, CLIENT_PORT);
    assert_eq!(out4(&out).ip.src_addr(), lab::VIP_V4);
    assert_eq!(w.counters().icmp_errors_translated, 1);
    assert_balanced(&w);
}

/// A redirected client's direct entry travels to an HA peer like any other once established
/// (not before: entries not established are no news): on the peer, the gateway's traffic to
/// that client is routed, not translated.
#[test]
fn direct_entries_are_synced_to_the_peer() {
    let mut master = worker(redirect_spec(true));
    let mut backup = worker(redirect_spec(true));
    master.record_changes(64);
    let client = client_v4(91);
    let g = redirected_to4(&mut master, client);
    let mut changes = Vec::new();
    assert_eq!(master.drain_changes(|c| changes.push(c)), 0);
    assert!(changes.is_empty(), "not established yet: no news");
    // The entry as the master records it once the client is established.
    let (key, value) = master
        .affinity()
        .iter()
        .find(|(k, _)| k.is_direct())
        .expect("the direct entry");
    changes.push(dataplane::changes::AffinityChange {
        key,
        op: dataplane::changes::ChangeOp::Upsert {
            gateway: value.gateway,
            confirmed: true,
            expires_at: value.expires_at,
        },
    });
    assert!(changes[0].key.is_direct());
    for c in &changes {
        assert!(backup.apply_synced(NOW, c));
    }
    let gw = lab::GATEWAYS_V4[g];
    let back = udp4(from_gateway(g), gw, client, 4500, 4500, &[0xff]);
    let out = tx(&mut backup, BACKEND_PORT, &back, CLIENT_PORT);
    assert_eq!(out4(&out).ip.src_addr(), gw);
    assert_eq!(
        backup.counters().gateways[0][g].routed_from_gateway_packets,
        1
    );
    // Direct entries are not NAT-mode clients: no active count moves.
    assert_eq!(backup.active_clients(), master.active_clients());
    assert!(backup.active_clients()[0].iter().all(|&n| n == 0));
}

/// Workers share the gateways' loads: a redirect by one counts at once for the other. Client
/// `y` would go to the same gateway as `x` on an idle board (its hash starts there); on the
/// shared board the second worker sees the first one's redirect and picks another gateway.
#[test]
fn workers_choose_on_one_shared_board() {
    let snap = snapshot(redirect_spec(true), 1);
    let (mut a, mut b) = (Pipeline::new(snap.clone()), Pipeline::new(snap));
    let x = client_v4(300);
    let gx = redirected_to4(&mut a, x);
    assert_eq!(gx, first_choice(x.into()));
    let y = (301..)
        .map(client_v4)
        .find(|y| first_choice((*y).into()) == gx)
        .unwrap();
    let gy = redirected_to4(&mut b, y);
    assert_ne!(gy, gx, "worker b did not see worker a's redirect");
    // On a board of its own, b would have chosen gx.
    let mut alone = worker(redirect_spec(true));
    assert_eq!(redirected_to4(&mut alone, y), gx);
}

/// A direct entry found expired by the gateway's traffic is forgotten (an HA peer is told
/// only of established entries' removals; this one never was); the packet is then a NAT-mode
/// client's.
#[test]
fn an_expired_direct_entry_is_forgotten_and_the_packet_translated() {
    let mut w = worker(redirect_spec(true));
    w.record_changes(64);
    let client = client_v4(95);
    let g = redirected_to4(&mut w, client);
    w.drain_changes(|_| {});
    let gw = lab::GATEWAYS_V4[g];
    // Past the unconfirmed timeout (30 s in the lab).
    let back = udp4(from_gateway(g), gw, client, 4500, 4500, &[0xff]);
    let out = tx_at(&mut w, NOW + 31, BACKEND_PORT, &back, CLIENT_PORT);
    assert_eq!(out4(&out).ip.src_addr(), lab::VIP_V4);
    let mut deleted = false;
    w.drain_changes(|c| {
        deleted |= c.key.is_direct() && c.op == dataplane::changes::ChangeOp::Delete
    });
    assert!(
        !deleted,
        "the peer never had the unconfirmed direct entry: its removal is no news"
    );
}
