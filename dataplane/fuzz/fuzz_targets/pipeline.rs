//! The whole pipeline on arbitrary frames, on both ports, with state carried across inputs
//! (affinity entries, scheduler state), so sequences of packets are explored too.
//!
//! Input: byte 0 picks the port (bit 0) and advances the clock (bits 1..7, seconds); the rest
//! is the frame. Each input goes through two workers: the lab's service in NAT mode, and in
//! redirect mode with routing to the gateways. Checked: no panic; every frame gets exactly one
//! verdict and one counter; a transmitted frame is well-formed Ethernet + IP with a valid IPv4
//! header checksum; an answer on the port a frame came in on is never longer than the frame
//! (the appliance cannot be used to amplify).
#![no_main]

use std::cell::RefCell;
use std::sync::Arc;

use dataplane::craft::lab::appliance_spec;
use dataplane::frame::{Frame, VecFrame};
use dataplane::model::{AffinitySpec, ServiceMode, Snapshot};
use dataplane::pipeline::{Verdict, Worker};
use dataplane::wire::ethernet::{ethertype, EthernetFrame};
use dataplane::wire::ipv4::Ipv4Packet;
use dataplane::wire::ipv6::Ipv6Packet;
use libfuzzer_sys::fuzz_target;

fn worker(mode: ServiceMode) -> RefCell<(Worker, u32)> {
    let mut spec = appliance_spec(AffinitySpec {
        capacity: 256,
        max_unconfirmed: 32,
    });
    spec.services[0].mode = mode;
    spec.services[0].route_to_gateways = mode == ServiceMode::Redirect;
    let snap = Arc::new(Snapshot::build(spec, 1).expect("lab snapshot"));
    RefCell::new((Worker::new(snap), 1_700_000_000))
}

thread_local! {
    static NAT: RefCell<(Worker, u32)> = worker(ServiceMode::Nat);
    static REDIRECT: RefCell<(Worker, u32)> = worker(ServiceMode::Redirect);
}

fuzz_target!(|data: &[u8]| {
    let Some((&ctl, frame)) = data.split_first() else {
        return;
    };
    for w in [&NAT, &REDIRECT] {
        w.with(|w| run(w, ctl, frame));
    }
});

fn run(w: &RefCell<(Worker, u32)>, ctl: u8, frame: &[u8]) {
    {
        let (worker, now) = &mut *w.borrow_mut();
        *now += u32::from(ctl >> 1);
        let before = worker.counters();
        let mut f = VecFrame::new(frame);
        let verdict = worker.process(*now, u16::from(ctl & 1), &mut f);
        let after = worker.counters();
        assert_eq!(after.rx_packets, before.rx_packets + 1);
        let accounted =
            |c: &dataplane::counters::WorkerCounters| c.tx_packets + c.to_control + c.total_drops();
        assert_eq!(accounted(&after), accounted(&before) + 1);
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
    }
}
