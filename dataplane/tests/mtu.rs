//! The egress MTU: a packet longer than its egress port's MTU is fragmented (IPv4 without DF),
//! or answered with ICMP fragmentation-needed (IPv4 with DF) or ICMPv6 packet-too-big, at a
//! bounded rate; the error quotes the packet as its sender sent it (before the NAT rewrite).

mod common;

use std::net::{Ipv4Addr, Ipv6Addr};

use common::*;
use dataplane::counters::DropReason;
use dataplane::fragment::Fragments;
use dataplane::model::ApplianceSpec;
use dataplane::pipeline::{Pipeline, Verdict, TOO_BIG_ERRORS_PER_SECOND};
use dataplane::wire::icmp::{icmpv4_type, Icmpv4Packet, CODE_FRAG_NEEDED};
use dataplane::wire::icmpv6::{icmpv6_type, Icmpv6Packet};
use dataplane::wire::ike::{exchange, flags};
use dataplane::wire::ipv4::Ipv4Packet;
use dataplane::wire::udp::UdpPacket;
use testkit::{lab, Ipv4Opts};

/// The backend port's MTU in these tests (the client port keeps 1500).
const SMALL_MTU: u16 = 1400;

/// The lab with port `port`'s MTU at `mtu`.
fn with_mtu(port: u16, mtu: u16) -> Pipeline {
    let mut spec: ApplianceSpec = test_spec();
    spec.ports[usize::from(port)].mtu = mtu;
    worker(spec)
}

/// An IKE_SA_INIT request whose IP packet is `ip_len` bytes long (UDP 500).
fn big_ike(ip_len: usize, v6: bool) -> Vec<u8> {
    let headers = if v6 { 40 + 8 } else { 20 + 8 };
    let ike = |body: &[u8]| {
        testkit::ike_message(0x1111, 0, exchange::IKE_SA_INIT, flags::INITIATOR, 0, body)
    };
    let overhead = ike(&[]).len();
    let m = ike(&vec![0x5a; ip_len - headers - overhead]);
    assert_eq!(m.len() + headers, ip_len);
    m
}

fn client_big4(client: Ipv4Addr, ip_len: usize, df: bool) -> Vec<u8> {
    let opts = Ipv4Opts {
        dont_frag: df,
        ident: 0x7777,
        ..Ipv4Opts::default()
    };
    udp4_opts(
        from_router(),
        client,
        lab::VIP_V4,
        &opts,
        500,
        500,
        &big_ike(ip_len, false),
    )
}

fn client_big6(client: Ipv6Addr, ip_len: usize) -> Vec<u8> {
    udp6(
        from_router(),
        client,
        lab::VIP_V6,
        500,
        500,
        &big_ike(ip_len, true),
    )
}

#[test]
fn df_over_the_mtu_gets_frag_needed_quoting_the_packet_as_sent() {
    let mut w = with_mtu(BACKEND_PORT, SMALL_MTU);
    let client = client_v4(1);
    let frame = client_big4(client, 1450, true);
    let (v, out) = run(&mut w, CLIENT_PORT, &frame);
    assert_eq!(v, Verdict::Tx { port: CLIENT_PORT });
    let o = out4(&out);
    // Back to the router the packet came from, from the client interface's address.
    assert_eq!(o.eth.dst(), lab::ROUTER_MAC);
    assert_eq!(o.eth.src(), lab::CLIENT_PORT_MAC);
    assert_eq!(o.ip.src_addr(), CLIENT_ITF_V4);
    assert_eq!(o.ip.dst_addr(), client);
    assert_eq!(o.ip.protocol(), 1);
    // RFC 1812: no longer than 576 bytes.
    assert_eq!(o.ip.total_len(), 576);
    let icmp = Icmpv4Packet::new_checked(o.l4).expect("ICMP");
    assert!(icmp.verify_checksum(), "ICMP checksum");
    assert_eq!(
        (icmp.msg_type(), icmp.code()),
        (icmpv4_type::DEST_UNREACHABLE, CODE_FRAG_NEEDED)
    );
    assert_eq!(icmp.next_mtu(), SMALL_MTU);
    // The quote is the packet as the client sent it: to the VIP, its TTL and checksums.
    assert_eq!(icmp.data(), &frame[14..14 + 548]);
    let c = w.counters();
    assert_eq!(c.mtu.frag_needed, 1);
    assert_eq!(c.tx_packets, 1);
    assert_balanced(&w);
}

#[test]
fn without_df_the_datagram_is_fragmented_and_reassembles_exactly() {
    let mut w = with_mtu(BACKEND_PORT, SMALL_MTU);
    let client = client_v4(2);
    let frame = client_big4(client, 3000, false);
    let (v, out) = run(&mut w, CLIENT_PORT, &frame);
    assert_eq!(
        v,
        Verdict::Fragment {
            port: BACKEND_PORT,
            mtu: SMALL_MTU
        }
    );
    // The frame is translated as always; the fragments are cut from it.
    let g = gateway_of4(&out);
    let plan = Fragments::plan(&out, SMALL_MTU).expect("fragmentable");
    assert_eq!(plan.count(), 3);
    let mut data = Vec::new();
    for i in 0..plan.count() {
        let mut buf = vec![0u8; 1600];
        let n = plan.write(&out, i, &mut buf).expect("fragment");
        let f = &buf[..n];
        assert!(n - 14 <= usize::from(SMALL_MTU));
        let o = out4(f);
        assert_eq!(o.eth.dst(), lab::GATEWAY_MACS[g]);
        assert_eq!(o.ip.dst_addr(), lab::GATEWAYS_V4[g]);
        assert_eq!(o.ip.ident(), 0x7777);
        assert_eq!(usize::from(o.ip.frag_offset()), data.len());
        assert_eq!(o.ip.more_frags(), i + 1 < plan.count());
        data.extend_from_slice(o.l4);
    }
    // The reassembled datagram is the translated one, its UDP checksum valid for the gateway,
    // its payload the client's byte for byte.
    let udp = UdpPacket::new_checked(&data[..]).expect("UDP");
    assert!(udp.verify_checksum_v4(client, lab::GATEWAYS_V4[g]));
    let sent = Ipv4Packet::new_checked(&frame[14..]).unwrap();
    assert_eq!(udp.payload(), &sent.payload()[8..]);
    let c = w.counters();
    assert_eq!((c.mtu.fragmented, c.mtu.fragments, c.tx_packets), (1, 3, 3));
    assert_balanced(&w);
}

#[test]
fn ipv6_over_the_mtu_gets_packet_too_big() {
    let mut w = with_mtu(BACKEND_PORT, 1280);
    let client = client_v6(3);
    let frame = client_big6(client, 1400);
    let (v, out) = run(&mut w, CLIENT_PORT, &frame);
    assert_eq!(v, Verdict::Tx { port: CLIENT_PORT });
    let o = out6(&out);
    assert_eq!(o.eth.dst(), lab::ROUTER_MAC);
    assert_eq!(o.ip.src_addr(), CLIENT_ITF_V6);
    assert_eq!(o.ip.dst_addr(), client);
    // RFC 4443: as much as fits the minimum MTU.
    assert_eq!(o.ip.payload_len(), 1280 - 40);
    let icmp = Icmpv6Packet::new_checked(o.l4).expect("ICMPv6");
    assert!(icmp.verify_checksum(&CLIENT_ITF_V6, &client));
    assert_eq!(
        (icmp.msg_type(), icmp.code()),
        (icmpv6_type::PACKET_TOO_BIG, 0)
    );
    assert_eq!(icmp.rest_of_header(), 1280);
    assert_eq!(icmp.data(), &frame[14..14 + 1280 - 48]);
    assert_eq!(w.counters().mtu.packet_too_big, 1);
    assert_balanced(&w);
}

#[test]
fn gateway_traffic_too_big_for_the_client_side_is_refused_to_the_gateway() {
    let mut w = with_mtu(CLIENT_PORT, SMALL_MTU);
    let client = client_v4(4);
    // The gateway's answer, DF set, longer than the client side takes.
    let reply = udp4_opts(
        from_gateway(0),
        lab::GATEWAYS_V4[0],
        client,
        &Ipv4Opts {
            dont_frag: true,
            ..Ipv4Opts::default()
        },
        500,
        500,
        &big_ike(1450, false),
    );
    let (v, out) = run(&mut w, BACKEND_PORT, &reply);
    assert_eq!(v, Verdict::Tx { port: BACKEND_PORT });
    let o = out4(&out);
    assert_eq!(o.eth.dst(), lab::GATEWAY_MACS[0]);
    assert_eq!(o.ip.src_addr(), BACKEND_ITF_V4);
    assert_eq!(o.ip.dst_addr(), lab::GATEWAYS_V4[0]);
    let icmp = Icmpv4Packet::new_checked(o.l4).expect("ICMP");
    assert_eq!(icmp.next_mtu(), SMALL_MTU);
    // Quoted from the gateway's own address, not the VIP it was rewritten to.
    assert_eq!(icmp.data(), &reply[14..14 + 548]);
    assert_balanced(&w);
}

#[test]
fn errors_are_rate_limited_per_worker() {
    let mut w = with_mtu(BACKEND_PORT, SMALL_MTU);
    let flood = 3 * TOO_BIG_ERRORS_PER_SECOND;
    let count = |w: &mut Pipeline, now: u32| {
        (0..flood)
            .filter(|&i| {
                let frame = client_big4(client_v4(100 + i), 1450, true);
                run_at(w, now, CLIENT_PORT, &frame).0 == Verdict::Tx { port: CLIENT_PORT }
            })
            .count() as u32
    };
    assert_eq!(count(&mut w, NOW), TOO_BIG_ERRORS_PER_SECOND);
    let c = w.counters();
    assert_eq!(
        c.dropped(DropReason::IcmpRateLimited),
        u64::from(flood - TOO_BIG_ERRORS_PER_SECOND)
    );
    // The budget is per second, and never saved up beyond one second's worth.
    assert_eq!(count(&mut w, NOW + 1), TOO_BIG_ERRORS_PER_SECOND);
    assert_eq!(count(&mut w, NOW + 100), TOO_BIG_ERRORS_PER_SECOND);
    assert_balanced(&w);
}

#[test]
fn no_error_about_our_own_answers_which_are_fragmented_or_dropped() {
    let mut w = with_mtu(CLIENT_PORT, 1280);
    // An echo request to the appliance, DF set, longer than the port now takes: the reply
    // cannot be sent, and no error about our own reply is made.
    let echo = testkit::ipv4(
        &from_router(),
        client_v4(5),
        CLIENT_ITF_V4,
        &Ipv4Opts {
            dont_frag: true,
            ..Ipv4Opts::default()
        },
        &testkit::L4::Icmpv4 {
            msg_type: icmpv4_type::ECHO_REQUEST,
            code: 0,
            rest: 1,
            payload: &[7; 1400],
        },
    );
    let (v, _) = run(&mut w, CLIENT_PORT, &echo);
    assert_eq!(v, Verdict::Drop(DropReason::MtuExceeded));
    // Without DF the reply is fragmented.
    let echo = testkit::ipv4(
        &from_router(),
        client_v4(5),
        CLIENT_ITF_V4,
        &Ipv4Opts::default(),
        &testkit::L4::Icmpv4 {
            msg_type: icmpv4_type::ECHO_REQUEST,
            code: 0,
            rest: 1,
            payload: &[7; 1400],
        },
    );
    let (v, _) = run(&mut w, CLIENT_PORT, &echo);
    assert_eq!(
        v,
        Verdict::Fragment {
            port: CLIENT_PORT,
            mtu: 1280
        }
    );
    assert_balanced(&w);
}

#[test]
fn frames_that_fit_are_untouched_whatever_their_size() {
    let mut w = with_mtu(BACKEND_PORT, SMALL_MTU);
    let mut plain = test_worker();
    for len in [1000, 1399, 1400] {
        let frame = client_big4(client_v4(6), len, true);
        let a = run(&mut w, CLIENT_PORT, &frame);
        let b = run(&mut plain, CLIENT_PORT, &frame);
        assert_eq!(a, b, "{len}-byte packet");
        assert_eq!(a.0, Verdict::Tx { port: BACKEND_PORT });
    }
    let frame = client_big4(client_v4(6), 1401, true);
    assert_eq!(
        run(&mut w, CLIENT_PORT, &frame).0,
        Verdict::Tx { port: CLIENT_PORT }
    );
}

mod props {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Damaged big frames from either side: never a panic, every frame accounted for once,
        /// a fragment verdict is always fragmentable within its MTU, and an answer out of the
        /// port a frame came in on is never longer than the frame.
        #[test]
        fn big_frames_never_break_the_egress_check(
            len in 1200usize..3000,
            v6 in any::<bool>(),
            df in any::<bool>(),
            backend in any::<bool>(),
            damage in proptest::collection::vec((any::<proptest::sample::Index>(), any::<u8>()), 0..4),
        ) {
            let mut w = with_mtu(BACKEND_PORT, 1280);
            let mut frame = if v6 { client_big6(client_v6(9), len) } else { client_big4(client_v4(9), len, df) };
            for (at, byte) in &damage {
                let i = at.index(frame.len());
                frame[i] = *byte;
            }
            let port = if backend { BACKEND_PORT } else { CLIENT_PORT };
            let (v, out) = run(&mut w, port, &frame);
            match v {
                Verdict::Tx { port: p } if p == port => prop_assert!(out.len() <= frame.len()),
                Verdict::Fragment { mtu, .. } => {
                    let plan = Fragments::plan(&out, mtu).expect("fragmentable");
                    let mut buf = vec![0u8; 4000];
                    for i in 0..plan.count() {
                        let n = plan.write(&out, i, &mut buf).expect("fragment");
                        prop_assert!(n <= 22 + usize::from(mtu));
                    }
                }
                _ => {}
            }
            assert_balanced(&w);
        }
    }
}

/// A packet over the MTU whose next hop is not resolved yet: with DF it gets its error at once
/// (that goes back where it came from, no neighbor needed); without DF it waits whole and is
/// cut when its neighbor resolves.
#[test]
fn packets_over_the_mtu_to_an_unresolved_neighbor_get_their_error_or_are_cut_when_sent() {
    use dataplane::frame::{Frame, VecFrame};
    use dataplane::hold::HoldQueue;
    let mut spec: ApplianceSpec = test_spec();
    spec.ports[usize::from(BACKEND_PORT)].mtu = SMALL_MTU;
    let resolved = spec.clone();
    spec.neighbors
        .retain(|n| n.address.is_ipv6() || n.address == std::net::IpAddr::V4(lab::ROUTER_V4));
    let mut w = worker(spec);
    let df = client_big4(client_v4(3), 1450, true);
    let (v, _) = run(&mut w, CLIENT_PORT, &df);
    assert_eq!(v, Verdict::Tx { port: CLIENT_PORT }, "frag-needed at once");
    assert_eq!(w.counters().mtu.frag_needed, 1);

    let mut held = HoldQueue::with_defaults();
    let frame = client_big4(client_v4(4), 1450, false);
    let mut f = VecFrame::new(&frame);
    let v = w.process(NOW, CLIENT_PORT, &mut f);
    let Verdict::AwaitNeighbor {
        port: BACKEND_PORT,
        next_hop,
    } = v
    else {
        panic!("{v:?}")
    };
    assert!(w.hold(&mut held, BACKEND_PORT, next_hop, f, 0).is_none());
    w.adopt(snapshot(resolved, 2));
    let mut sent = Vec::new();
    w.release_held(&mut held, |port, f, cut| {
        sent.push((port, cut, f.bytes().len()))
    });
    assert_eq!(sent, [(BACKEND_PORT, Some(SMALL_MTU), frame.len())]);
    let c = w.counters();
    assert_eq!((c.mtu.fragmented, c.mtu.fragments), (1, 2));
    assert_eq!(
        c.rx_packets + 1,
        c.tx_packets,
        "one in, two fragments and one error out"
    );
}
