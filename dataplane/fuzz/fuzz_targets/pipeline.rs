//! The whole pipeline on arbitrary frames, on both ports, with state carried across inputs
//! (affinity entries, scheduler state), so sequences of packets are explored too.
//!
//! Input: byte 0 picks the port (bit 0) and advances the clock (bits 1..7, seconds); the rest
//! is the frame. Each input goes through two workers: the lab's service in NAT mode, and in
//! redirect mode with routing to the gateways, each beside a twin with the fast paths turned
//! off. Checked: no panic; every frame gets exactly one verdict and one counter; a transmitted
//! frame is well-formed Ethernet + IP with a valid IPv4 header checksum, and so is every
//! fragment of a fragmented one, within its MTU (the backend port's is 1280); an answer on the port
//! a frame came in on is never longer than the frame (the appliance cannot be used to
//! amplify); and the fast paths change nothing: the twin gives the same verdict, the same
//! bytes, the same counters, the same affinity table and the same changes for an HA peer.
#![no_main]

use std::cell::RefCell;
use std::sync::Arc;

use dataplane::affinity::{AffinityKey, AffinityValue};
use dataplane::changes::AffinityChange;
use dataplane::fragment::Fragments;
use dataplane::frame::{Frame, VecFrame};
use dataplane::model::{AffinitySpec, ServiceMode, Snapshot};
use dataplane::pipeline::{Pipeline, Verdict};
use dataplane::wire::ethernet::{ethertype, EthernetFrame};
use dataplane::wire::ipv4::Ipv4Packet;
use dataplane::wire::ipv6::Ipv6Packet;
use libfuzzer_sys::fuzz_target;
use testkit::lab::appliance_spec;

fn worker(mode: ServiceMode, fast: bool) -> RefCell<(Pipeline, u32)> {
    let mut spec = appliance_spec(AffinitySpec {
        capacity: 256,
        max_unconfirmed: 32,
        ..AffinitySpec::default()
    });
    spec.services[0].mode = mode;
    // A smaller backend MTU, so that frames from the client side meet the egress check.
    spec.ports[1].mtu = 1280;
    spec.services[0].route_to_gateways = mode == ServiceMode::Redirect;
    let snap = Arc::new(Snapshot::build(spec, 1).expect("lab snapshot"));
    let mut w = Pipeline::new(snap);
    w.set_fast_path(fast);
    w.record_changes(1024);
    RefCell::new((w, 1_700_000_000))
}

thread_local! {
    static NAT: RefCell<(Pipeline, u32)> = worker(ServiceMode::Nat, true);
    static NAT_GENERAL: RefCell<(Pipeline, u32)> = worker(ServiceMode::Nat, false);
    static REDIRECT: RefCell<(Pipeline, u32)> = worker(ServiceMode::Redirect, true);
    static REDIRECT_GENERAL: RefCell<(Pipeline, u32)> = worker(ServiceMode::Redirect, false);
}

fuzz_target!(|data: &[u8]| {
    let Some((&ctl, frame)) = data.split_first() else {
        return;
    };
    for (fast, general) in [(&NAT, &NAT_GENERAL), (&REDIRECT, &REDIRECT_GENERAL)] {
        let a = fast.with(|w| run(w, ctl, frame));
        let b = general.with(|w| run(w, ctl, frame));
        assert_eq!(a, b, "the fast path changed the outcome");
    }
});

/// What one input did to a worker, for comparing the twins.
#[derive(Debug, PartialEq)]
struct Outcome {
    verdict: Verdict,
    frame: Vec<u8>,
    counters: dataplane::counters::WorkerCounters,
    table: Vec<(AffinityKey, AffinityValue)>,
    changes: Vec<AffinityChange>,
}

fn run(w: &RefCell<(Pipeline, u32)>, ctl: u8, frame: &[u8]) -> Outcome {
    {
        let (worker, now) = &mut *w.borrow_mut();
        *now += u32::from(ctl >> 1);
        let before = worker.counters();
        let mut f = VecFrame::new(frame);
        let verdict = worker.process(*now, u16::from(ctl & 1), &mut f);
        let after = worker.counters();
        assert_eq!(after.rx_packets, before.rx_packets + 1);
        // A fragmented datagram counts its fragments as transmitted.
        let accounted = |c: &dataplane::counters::WorkerCounters| {
            c.tx_packets - c.mtu.fragments + c.mtu.fragmented + c.to_control + c.total_drops()
        };
        // A frame awaiting its next hop's MAC is counted when the caller holds it (the worker's
        // `Pipeline::hold`); here it is the one frame not counted yet.
        let awaiting = matches!(verdict, Verdict::AwaitNeighbor { .. });
        assert_eq!(
            accounted(&after) + u64::from(awaiting),
            accounted(&before) + 1
        );
        if let Verdict::AwaitNeighbor { port, .. } = verdict {
            assert!(port < 2);
            let eth = EthernetFrame::new_checked(f.bytes()).expect("held Ethernet");
            assert_eq!(
                eth.dst().0,
                [0; 6],
                "the destination MAC is left to fill in"
            );
        }
        if let Verdict::Fragment { mtu, .. } = verdict {
            let plan = Fragments::plan(f.bytes(), mtu).expect("planned fragments");
            let mut buf = vec![0u8; usize::from(u16::MAX)];
            for i in 0..plan.count() {
                let n = plan.write(f.bytes(), i, &mut buf).expect("fragment");
                let eth = EthernetFrame::new_checked(&buf[..n]).expect("fragment Ethernet");
                let ip = Ipv4Packet::new_checked(eth.payload()).expect("fragment IPv4");
                assert!(ip.verify_checksum());
                assert!(usize::from(ip.total_len()) <= usize::from(mtu));
            }
        }
        if let Verdict::Tx { port } = verdict {
            assert!(port < 2);
            if port == u16::from(ctl & 1) {
                assert!(
                    f.bytes().len() <= frame.len(),
                    "an answer longer than its question"
                );
            }
            let eth = EthernetFrame::new_checked(f.bytes()).expect("transmitted Ethernet");
            match eth.ethertype() {
                ethertype::IPV4 => {
                    let ip = Ipv4Packet::new_checked(eth.payload()).expect("transmitted IPv4");
                    assert!(ip.verify_checksum());
                }
                ethertype::IPV6 => {
                    Ipv6Packet::new_checked(eth.payload()).expect("transmitted IPv6");
                }
                ethertype::ARP => {}
                other => panic!("transmitted ethertype {other:#x}"),
            }
        }
        let mut changes = Vec::new();
        worker.drain_changes(|c| changes.push(c));
        Outcome {
            verdict,
            frame: f.bytes().to_vec(),
            counters: after,
            table: worker.affinity().iter().collect(),
            changes,
        }
    }
}
