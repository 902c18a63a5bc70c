//! Next hops without a MAC: the first packets wait in a bounded hold queue and leave once a
//! snapshot knows the neighbor (or are dropped, counted, when it never answers); neighbors
//! asking for our addresses are reported for the control plane's cache to learn.

mod common;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use common::*;
use dataplane::counters::DropReason;
use dataplane::frame::{Frame, VecFrame};
use dataplane::hold::{HoldQueue, HOLD_MS, HOLD_NEIGHBORS, HOLD_PER_NEIGHBOR};
use dataplane::model::ApplianceSpec;
use dataplane::neighbor::Heard;
use dataplane::pipeline::{Pipeline, Verdict};
use dataplane::wire::arp::ARP_REQUEST;
use dataplane::wire::ethernet::EthernetAddress;
use testkit::{lab, L2};

/// The lab without its static neighbors: every next hop must be resolved.
fn unresolved_spec() -> ApplianceSpec {
    let mut spec = test_spec();
    spec.neighbors.clear();
    spec
}

/// Runs `frame` through `w`; returns the verdict and the frame.
fn run_frame(w: &mut Pipeline, port: u16, frame: &[u8]) -> (Verdict, VecFrame) {
    let mut f = VecFrame::new(frame);
    let v = w.process(NOW, port, &mut f);
    (v, f)
}

/// Runs `frame`, which must await `next_hop` on `port`, and holds it.
fn hold(
    w: &mut Pipeline,
    held: &mut HoldQueue<VecFrame>,
    rx: u16,
    frame: &[u8],
    (port, next_hop): (u16, IpAddr),
    now_ms: u64,
) {
    let (v, f) = run_frame(w, rx, frame);
    assert_eq!(v, Verdict::AwaitNeighbor { port, next_hop });
    assert_eq!(&f.bytes()[..6], &[0; 6], "destination left to fill in");
    assert!(w.hold(held, port, next_hop, f, now_ms).is_none(), "held");
}

/// Every received frame was transmitted, dropped, handed to the control plane, or is held.
fn assert_accounted(w: &Pipeline, held: &HoldQueue<VecFrame>) {
    let c = w.counters();
    assert_eq!(
        c.rx_packets,
        c.tx_packets + c.total_drops() + c.to_control + held.len() as u64,
        "{c:?}"
    );
    let timed_out = c.dropped(DropReason::NeighborHoldTimeout);
    assert_eq!(
        c.neighbor_held,
        c.neighbor_released + timed_out + held.len() as u64
    );
}

#[test]
fn the_first_packets_to_unresolved_neighbors_leave_once_they_resolve() {
    let mut w = worker(unresolved_spec());
    // The same traffic through a worker that knows every neighbor: what must come out.
    let mut resolved = test_worker();
    let mut held = HoldQueue::with_defaults();
    let c = client_v4(5);
    let g = lab_gateway(c.into());
    let gw = IpAddr::V4(lab::GATEWAYS_V4[g]);
    // The client's first IKE_SA_INIT (to its gateway) and the answer (to the client, behind
    // the router), with a second IKE_SA_INIT behind the first.
    let first = client_ike4(c);
    let answer = udp4(
        from_gateway(g),
        lab::GATEWAYS_V4[g],
        c,
        500,
        500,
        &ike_sa_init_reply(spi_of(c.into())),
    );
    let mut again = first.clone();
    *again.last_mut().unwrap() ^= 1;
    let inputs = [
        (CLIENT_PORT, &first, (BACKEND_PORT, gw)),
        (BACKEND_PORT, &answer, (CLIENT_PORT, ROUTER_V4.into())),
        (CLIENT_PORT, &again, (BACKEND_PORT, gw)),
    ];
    let mut want = Vec::new();
    for &(rx, frame, to) in &inputs {
        hold(&mut w, &mut held, rx, frame, to, 0);
        want.push((to.0, tx(&mut resolved, rx, frame, to.0)));
    }
    assert_eq!((held.len(), held.neighbors()), (3, 2));
    let mut misses = Vec::new();
    w.drain_neighbor_misses(|a| misses.push(a));
    assert_eq!(misses, [gw, IpAddr::V4(c)], "reported for resolution");

    // A snapshot that resolves the gateway only: its two frames go, in order.
    let mut spec = unresolved_spec();
    spec.neighbors = test_spec()
        .neighbors
        .into_iter()
        .filter(|n| n.address == gw)
        .collect();
    w.adopt(snapshot(spec, 2));
    let mut sent = Vec::new();
    w.release_held(&mut held, |port, f, cut| {
        assert_eq!(cut, None);
        sent.push((port, f.bytes().to_vec()));
    });
    assert_eq!(sent, [want[0].clone(), want[2].clone()]);
    assert_accounted(&w, &held);
    // Then the router: the answer goes, exactly as it would have at once.
    w.adopt(snapshot(test_spec(), 3));
    sent.clear();
    w.release_held(&mut held, |port, f, cut| {
        assert_eq!(cut, None);
        sent.push((port, f.bytes().to_vec()));
    });
    assert_eq!(sent, [want[1].clone()]);
    assert!(held.is_empty());
    let c = w.counters();
    assert_eq!((c.neighbor_held, c.neighbor_released), (3, 3));
    assert_eq!(c.tx_packets, 3);
    assert_accounted(&w, &held);
}

#[test]
fn frames_held_past_the_resolution_time_are_dropped_and_counted() {
    let mut w = worker(unresolved_spec());
    let mut held = HoldQueue::with_defaults();
    let c6 = client_v6(3);
    let g = lab_gateway(c6.into());
    let to = (BACKEND_PORT, IpAddr::V6(lab::GATEWAYS_V6[g]));
    hold(&mut w, &mut held, CLIENT_PORT, &client_ike6(c6), to, 1_000);
    hold(&mut w, &mut held, CLIENT_PORT, &client_ike6(c6), to, 2_000);
    let mut freed = 0;
    w.expire_held(&mut held, 1_000 + HOLD_MS - 1, |_| freed += 1);
    assert_eq!(freed, 0);
    w.expire_held(&mut held, 1_000 + HOLD_MS, |_| freed += 1);
    assert_eq!(freed, 2);
    assert!(held.is_empty());
    let c = w.counters();
    assert_eq!(c.dropped(DropReason::NeighborHoldTimeout), 2);
    assert_eq!(c.tx_packets, 0);
    // A late resolution finds nothing to send.
    w.adopt(snapshot(test_spec(), 2));
    w.release_held(&mut held, |_, _, _| panic!("nothing held"));
    assert_accounted(&w, &held);
}

/// An on-link IPv6 client (its own next hop) on the client subnet.
fn on_link_v6(i: u32) -> Ipv6Addr {
    Ipv6Addr::from(u128::from(CLIENT_ITF_V6) + 0x1000 + u128::from(i))
}

#[test]
fn a_flood_to_distinct_unresolved_neighbors_stays_within_the_bounds() {
    let mut w = worker(unresolved_spec());
    let mut held = HoldQueue::with_defaults();
    // Gateway traffic to many on-link clients, each its own next hop, a few packets each.
    let n = 1_000u32;
    let mut refused = 0;
    for round in 0..4 {
        for i in 0..n {
            let c = on_link_v6(i);
            let frame = udp6(from_gateway(0), lab::GATEWAYS_V6[0], c, 4500, 4500, &[0xff]);
            let (v, f) = run_frame(&mut w, BACKEND_PORT, &frame);
            let next_hop = IpAddr::V6(c);
            assert_eq!(
                v,
                Verdict::AwaitNeighbor {
                    port: CLIENT_PORT,
                    next_hop
                },
                "round {round}"
            );
            if w.hold(&mut held, CLIENT_PORT, next_hop, f, 0).is_some() {
                refused += 1;
            }
        }
    }
    assert_eq!(held.neighbors(), HOLD_NEIGHBORS);
    assert_eq!(held.len(), HOLD_NEIGHBORS * HOLD_PER_NEIGHBOR);
    let c = w.counters();
    assert_eq!(c.dropped(DropReason::NeighborHoldFull), refused);
    assert_eq!(refused, u64::from(4 * n) - held.len() as u64);
    assert_accounted(&w, &held);
    // The first neighbors' frames are the ones kept, and go once they resolve.
    let mut spec = unresolved_spec();
    spec.neighbors.push(dataplane::model::NeighborSpec {
        address: on_link_v6(0).into(),
        mac: EthernetAddress([2, 0, 0, 0, 1, 0x20]),
    });
    w.adopt(snapshot(spec, 2));
    let mut sent = 0;
    w.release_held(&mut held, |port, f, _| {
        assert_eq!(port, CLIENT_PORT);
        assert_eq!(&f.bytes()[..6], &[2, 0, 0, 0, 1, 0x20]);
        sent += 1;
    });
    assert_eq!(sent, HOLD_PER_NEIGHBOR);
    assert_accounted(&w, &held);
}

#[test]
fn neighbors_asking_for_our_addresses_are_reported_to_be_learned() {
    let mut w = test_worker();
    let host_mac = EthernetAddress([2, 0, 0, 0, 1, 0x20]);
    let host_v4 = Ipv4Addr::new(198, 18, 0, 20);
    let host_v6 = on_link_v6(20);
    let bcast = L2::new(host_mac, EthernetAddress::BROADCAST);
    let request = |sender: Ipv4Addr, target: Ipv4Addr| {
        testkit::arp(
            &bcast,
            ARP_REQUEST,
            host_mac,
            sender,
            EthernetAddress([0; 6]),
            target,
        )
    };
    for target in [lab::VIP_V4, CLIENT_ITF_V4] {
        let (v, _) = run_frame(&mut w, CLIENT_PORT, &request(host_v4, target));
        assert_eq!(v, Verdict::Tx { port: CLIENT_PORT });
    }
    // An address probe (RFC 5227: sender 0.0.0.0) tells nothing.
    let (v, _) = run_frame(
        &mut w,
        CLIENT_PORT,
        &request(Ipv4Addr::UNSPECIFIED, lab::VIP_V4),
    );
    assert_eq!(v, Verdict::Tx { port: CLIENT_PORT });
    let ns = |target: &Ipv6Addr, lladdr| {
        let l2 = L2::new(
            host_mac,
            EthernetAddress::ipv6_multicast(&testkit::solicited_node(target)),
        );
        testkit::neighbor_solicit(&l2, &host_v6, target, lladdr)
    };
    for lladdr in [Some(host_mac), None] {
        let (v, _) = run_frame(&mut w, CLIENT_PORT, &ns(&lab::VIP_V6, lladdr));
        assert_eq!(v, Verdict::Tx { port: CLIENT_PORT });
    }
    let mut heard = Vec::new();
    assert_eq!(w.drain_heard_neighbors(|h| heard.push(h)), 0);
    let at = |address: IpAddr| Heard {
        interface: 0,
        address,
        mac: host_mac,
    };
    // Once each (the second request repeats the first), the solicitation without a source
    // link-layer address not at all.
    assert_eq!(heard, [at(host_v4.into()), at(host_v6.into())]);
    heard.clear();
    w.drain_heard_neighbors(|h| heard.push(h));
    assert!(heard.is_empty(), "drained");
}
