//! The benchmark captures (`vpnlb-benchgen`) run through the pipeline with the lab's
//! configuration: every frame is forwarded (none dropped, none for the control plane), the
//! classes are the mix's, and the client capture fills the table with exactly `clients`.

use std::path::PathBuf;
use std::sync::Arc;

use dataplane::classify::Class;
use dataplane::frame::VecFrame;
use dataplane::io::pcap::PcapReader;
use dataplane::model::AffinitySpec;
use dataplane::model::Snapshot;
use dataplane::pipeline::{Pipeline, Verdict};
use testkit::lab::appliance_spec;
use vpnlb_perf::bench::{self, BenchTraffic, Mix, Size};

struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let p = std::env::temp_dir().join(format!("vpnlb-benchgen-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn frames(path: PathBuf) -> Vec<Vec<u8>> {
    let mut r = PcapReader::open(path).expect("capture");
    let mut out = Vec::new();
    let mut buf = Vec::new();
    while r.next_packet(&mut buf).expect("frame").is_some() {
        out.push(buf.clone());
    }
    out
}

/// Runs the client capture then the backend capture through one worker; returns it.
fn run(t: &BenchTraffic, name: &str) -> (Pipeline, usize, Vec<usize>) {
    let dir = TempDir::new(name);
    bench::write(&dir.0, t).expect("captures written");
    let mut spec = appliance_spec(AffinitySpec {
        capacity: 1 << 16,
        max_unconfirmed: 1 << 15,
        ..AffinitySpec::default()
    });
    if t.mix == Mix::Redirect {
        spec.services[0].mode = dataplane::model::ServiceMode::Redirect;
    }
    let mut w = Pipeline::new(Arc::new(Snapshot::build(spec, 1).expect("snapshot")));
    let mut forwarded = 0;
    let mut sizes = Vec::new();
    for (port, file) in [(0u16, "client.pcap"), (1, "backend.pcap")] {
        for chunk in frames(dir.0.join(file)).chunks(32) {
            sizes.extend(chunk.iter().map(Vec::len));
            let mut f: Vec<VecFrame> = chunk.iter().map(|b| VecFrame::new(b)).collect();
            let mut v = vec![Verdict::ToControl; f.len()];
            w.process_burst(100, port, &mut f, &mut v);
            for (verdict, frame) in v.iter().zip(chunk) {
                assert!(
                    matches!(verdict, Verdict::Tx { .. }),
                    "{name}: {verdict:?} for a frame of {} bytes on port {port}",
                    frame.len()
                );
                forwarded += 1;
            }
        }
    }
    (w, forwarded, sizes)
}

fn traffic(mix: Mix, family: u8, size: Size) -> BenchTraffic {
    BenchTraffic {
        clients: 500,
        packets: 2000,
        backend_packets: 600,
        size,
        mix,
        family,
        seed: 3,
    }
}

#[test]
fn the_lab_mix_is_forwarded_whole_with_its_shares() {
    for family in [4, 6] {
        let (w, n, _) = run(&traffic(Mix::Lab, family, Size::Imix), "lab");
        assert_eq!(n, 2600);
        assert_eq!(w.affinity().len(), 500, "every client once, and no other");
        let c = w.counters();
        let share = |k: Class| c.class(k) as f64 / 2000.0;
        // Client side 60 % ESP in UDP, plus the 600 backend frames.
        let esp_in_udp = (c.class(Class::EspInUdp) - 600) as f64 / 2000.0;
        assert!((0.55..0.65).contains(&esp_in_udp), "{esp_in_udp}");
        assert!((0.07..0.13).contains(&share(Class::Esp)));
        assert!((0.07..0.13).contains(&share(Class::Ike)));
        assert!((0.07..0.13).contains(&share(Class::Tls)));
        assert!((0.07..0.13).contains(&share(Class::Dtls)));
    }
}

#[test]
fn single_protocol_streams_and_sizes() {
    for (mix, class) in [
        (Mix::Esp, Class::EspInUdp),
        (Mix::Ike, Class::Ike),
        (Mix::Tls, Class::Tls),
    ] {
        let (w, _, _) = run(&traffic(mix, 4, Size::Fixed(512)), "single");
        assert_eq!(
            w.counters().class(class) as usize,
            2000 + if class == Class::EspInUdp { 600 } else { 0 }
        );
    }
    // Fixed sizes hold where the headers allow (IKE messages keep their own size); the
    // capture holds each frame without its 4-byte FCS.
    for size in [64, 512, 1400] {
        let (_, _, sizes) = run(&traffic(Mix::Esp, 4, Size::Fixed(size)), "sizes");
        assert!(
            sizes.iter().all(|&s| s == size - 4),
            "{size}: {:?}",
            &sizes[..4]
        );
    }
}

#[test]
fn new_clients_are_all_distinct() {
    let t = BenchTraffic {
        clients: 3000,
        ..traffic(Mix::NewClients, 6, Size::Imix)
    };
    let (w, n, _) = run(&t, "new");
    // 3000 IKE_SA_INITs from as many clients, and the gateways' answers to 600 of them.
    assert_eq!(n, 3600);
    assert_eq!(w.counters().clients.scheduled, 3000);
}

#[test]
fn redirect_requests_are_all_answered() {
    let t = BenchTraffic {
        clients: 1000,
        packets: 3000,
        ..traffic(Mix::Redirect, 4, Size::Imix)
    };
    let (w, n, _) = run(&t, "redirect");
    let c = w.counters();
    let redirects: u64 = c.gateways[0].iter().map(|g| g.redirects).sum();
    // Every client-port frame is answered (the backend's ESP goes to the gateways as ever).
    assert_eq!(redirects, 3000);
    assert_eq!(n, 3000 + 600);
    assert_eq!(c.services[0].malformed_ike_sa_init, 0);
}
