//! The safe DPDK layer against a real EAL (no hugepages, virtual devices only).
//!
//! One EAL per test binary (DPDK allows one per process): every test calls [`env`], which
//! writes the capture the net_pcap device replays and then initialises the EAL once, with two
//! net_ring devices (their RX and TX share rings: what a port sends, it receives) and one
//! net_pcap device. Each test uses its own port and its own mempool, so tests can run in
//! parallel and count mbufs exactly.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use dataplane::frame::Frame;
use dataplane::io::pcap::{PcapReader, PcapWriter};
use dpdk::{
    lcore, Burst, DpdkError, Eal, EalArgs, FreeBatch, L4Checksum, Mbuf, Mempool, Port, PortConfig,
    Ring, RssMode, RssStatus, RssUnavailable, RxChecksum, TxChecksum, BURST_SIZE,
    DEFAULT_DATA_ROOM, MBUF_HEADROOM, SOCKET_ANY,
};
use testkit::{lab, Ipv4Opts, L2, L4};

struct Env {
    dir: PathBuf,
    /// The frames of the capture net_pcap0 replays.
    frames: Vec<Vec<u8>>,
}

fn env() -> &'static Env {
    static ENV: OnceLock<Env> = OnceLock::new();
    ENV.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("vpnlb-dpdk-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let frames = lab_frames();
        let mut w = PcapWriter::create(dir.join("in.pcap")).expect("create in.pcap");
        for (i, f) in frames.iter().enumerate() {
            w.write_packet(1_000_000_000 + i as u64 * 1000, f)
                .expect("write in.pcap");
        }
        w.flush().expect("flush in.pcap");
        drop(w);
        let pcap = format!(
            "net_pcap0,rx_pcap={},tx_pcap={}",
            dir.join("in.pcap").display(),
            dir.join("out.pcap").display()
        );
        let args = EalArgs::new()
            .cores("0")
            .memory_mb(256)
            .no_huge(true)
            .no_pci(true)
            .no_telemetry(true)
            .vdev("net_ring0")
            .vdev("net_ring1")
            .vdev(&pcap)
            .log_level("error")
            .to_args();
        Eal::init(&args).expect("EAL init");
        Env { dir, frames }
    })
}

/// Lab traffic: IKE, NAT-T and ESP from clients to the VIP, an IPv6 IKE packet, and a
/// full-size frame.
fn lab_frames() -> Vec<Vec<u8>> {
    let l2 = L2::new(lab::ROUTER_MAC, lab::CLIENT_PORT_MAC);
    let opts = Ipv4Opts::default();
    let ike = testkit::ike_sa_init_request(0x0102_0304_0506_0708, &[7; 32], 19, 32, &[]);
    let client = |n: u8| Ipv4Addr::new(198, 18, 1, n);
    let mut frames = vec![
        testkit::ipv4(
            &l2,
            client(1),
            lab::VIP_V4,
            &opts,
            &L4::Udp {
                src: 500,
                dst: 500,
                payload: &ike,
            },
        ),
        testkit::ipv4(
            &l2,
            client(2),
            lab::VIP_V4,
            &opts,
            &L4::Udp {
                src: 4500,
                dst: 4500,
                payload: &testkit::NATT_KEEPALIVE,
            },
        ),
        testkit::ipv4(
            &l2,
            client(3),
            lab::VIP_V4,
            &opts,
            &L4::Esp {
                spi: 0x1000,
                seq: 1,
                payload: &[0xab; 64],
            },
        ),
        testkit::ipv6(
            &l2,
            &Ipv6Addr::new(0x2001, 2, 0, 1, 0, 0, 0, 0x42),
            &lab::VIP_V6,
            64,
            &[],
            &L4::Udp {
                src: 500,
                dst: 500,
                payload: &ike,
            },
        ),
        testkit::ipv4(
            &l2,
            client(4),
            lab::VIP_V4,
            &opts,
            &L4::Udp {
                src: 4500,
                dst: 4500,
                payload: &[0x5a; 1472],
            },
        ),
    ];
    for f in &mut frames {
        testkit::pad_to_min_frame(f);
    }
    assert_eq!(frames[4].len(), 1514);
    frames
}

/// A frame carrying `seq` in its first bytes, to follow mbufs through queues.
fn numbered(pool: &Mempool, seq: u32) -> Mbuf {
    let mut f = [0u8; 64];
    f[..4].copy_from_slice(&seq.to_be_bytes());
    Mbuf::from_bytes(pool, &f).expect("mbuf")
}

fn seq_of(m: &Mbuf) -> u32 {
    let b = m.bytes();
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

fn pool(name: &str, n: u32) -> Mempool {
    env();
    Mempool::new(name, n, 0, DEFAULT_DATA_ROOM, SOCKET_ANY).expect("mempool")
}

fn assert_full(p: &Mempool) {
    assert_eq!(p.in_use_count(), 0, "mbufs leaked");
    assert_eq!(p.avail_count(), p.capacity());
}

#[test]
fn eal_initialises_once_and_later_calls_return_the_first() {
    let env = env();
    let first = Eal::get().expect("initialised");
    // Different (even invalid) arguments: not applied, the first EAL comes back.
    let again = Eal::init(&["--definitely-not-an-eal-option".to_string()]).expect("same EAL");
    assert!(std::ptr::eq(first, again));
    assert!(first
        .args()
        .iter()
        .any(|a| a.starts_with("net_pcap0,rx_pcap=")));
    assert_eq!(first.main_lcore(), 0);
    assert_eq!(first.lcore_count(), 1);
    assert!(lcore::tsc_hz() > 0);
    // The three --vdev ports first (another test may hot-plug a fourth meanwhile).
    assert!(Port::count() >= 3);
    let names: Vec<String> = Port::all().iter().map(|p| p.name().unwrap()).collect();
    assert_eq!(names[..3], ["net_ring0", "net_ring1", "net_pcap0"]);
    assert_eq!(
        Port::from_id(0).unwrap(),
        Port::by_name("net_ring0").unwrap()
    );
    assert!(matches!(
        Port::from_id(31),
        Err(DpdkError::InvalidArgument { .. })
    ));
    assert_eq!(env.frames.len(), 5);
}

#[test]
fn mempool_and_burst_accounting() {
    let p = pool("acct", 256);
    assert_eq!(p.capacity(), 256);
    assert_full(&p);

    let mut b = Burst::new();
    assert!(b.alloc_from(&p, BURST_SIZE));
    assert!(b.is_full());
    assert_eq!(p.in_use_count(), 32);
    // All or none: no room left in the burst.
    assert!(!b.alloc_from(&p, 1));
    let extra = Mbuf::alloc(&p).expect("mbuf");
    let extra = b.push(extra).expect_err("full burst gives the mbuf back");
    assert_eq!(p.in_use_count(), 33);
    drop(extra);
    assert_eq!(p.in_use_count(), 32);
    b.clear();
    assert_full(&p);

    // retain keeps order and frees the rest.
    for seq in 0..10 {
        b.push(numbered(&p, seq)).unwrap();
    }
    b.retain(|m| seq_of(m) % 3 == 0);
    assert_eq!(b.iter().map(seq_of).collect::<Vec<_>>(), [0, 3, 6, 9]);
    assert_eq!(p.in_use_count(), 4);
    // pop takes from the back.
    assert_eq!(b.pop().map(|m| seq_of(&m)), Some(9));
    assert_eq!(p.in_use_count(), 3);
    // A drain dropped half way frees what it did not yield.
    let mut d = b.drain();
    let first = d.next().unwrap();
    assert_eq!(seq_of(&first), 0);
    drop(d);
    assert!(b.is_empty());
    assert_eq!(p.in_use_count(), 1);
    drop(first);
    assert_full(&p);

    // Exhaustion is reported, not a crash.
    let small = pool("small", 40);
    let mut all = Vec::new();
    while let Some(m) = Mbuf::alloc(&small) {
        all.push(m);
        assert!(all.len() <= 40);
    }
    assert_eq!(all.len(), 40);
    assert_eq!(
        Mbuf::from_bytes(&small, &[1, 2, 3]).unwrap_err(),
        DpdkError::PoolExhausted
    );
    assert!(!b.alloc_from(&small, 1));
    drop(all);
    assert_full(&small);

    // Too long for one mbuf: the mbuf goes back.
    let room = usize::from(DEFAULT_DATA_ROOM - MBUF_HEADROOM);
    assert_eq!(
        Mbuf::from_bytes(&p, &vec![0; room + 1]).unwrap_err(),
        DpdkError::TooLong {
            len: room + 1,
            room
        }
    );
    let max = Mbuf::from_bytes(&p, &vec![0xee; room]).expect("exactly fits");
    assert_eq!(usize::from(max.data_len()), room);
    drop(max);
    assert_full(&p);

    // Bad names are refused before DPDK sees them.
    assert!(matches!(
        Mempool::new(
            "x".repeat(26).as_str(),
            64,
            0,
            DEFAULT_DATA_ROOM,
            SOCKET_ANY
        ),
        Err(DpdkError::InvalidArgument { .. })
    ));
    assert!(matches!(
        Mempool::new("acct", 64, 0, DEFAULT_DATA_ROOM, SOCKET_ANY),
        Err(DpdkError::Call {
            errno: libc::EEXIST,
            ..
        })
    ));
}

#[test]
fn free_batch_takes_every_mbuf_and_frees_them_together() {
    let p = pool("freebatch", 128);
    let mut batch = FreeBatch::new();
    assert!(batch.is_empty());
    batch.free();
    for seq in 0..BURST_SIZE as u32 {
        batch.add(numbered(&p, seq));
    }
    assert_eq!(batch.len(), BURST_SIZE);
    assert_eq!(p.in_use_count(), BURST_SIZE as u32);
    // Full: the next one frees the batch first, then waits alone.
    batch.add(numbered(&p, 99));
    assert_eq!(batch.len(), 1);
    assert_eq!(p.in_use_count(), 1);
    batch.free();
    assert!(batch.is_empty());
    assert_full(&p);
    // Mbufs of two pools in one batch go back to their own pools.
    let other = pool("freebatch2", 64);
    for seq in 0..10 {
        batch.add(numbered(&p, seq));
        batch.add(numbered(&other, seq));
    }
    assert_eq!((p.in_use_count(), other.in_use_count()), (10, 10));
    batch.free();
    assert_full(&p);
    assert_full(&other);
    // Dropping the batch frees what it holds.
    batch.add(numbered(&p, 1));
    drop(batch);
    assert_full(&p);
}

#[test]
fn mbuf_as_frame_moves_the_front() {
    let p = pool("frame", 64);
    let frame = &env().frames[0];
    let mut m = Mbuf::from_bytes(&p, frame).unwrap();
    assert!(m.is_contiguous());
    assert_eq!(m.bytes(), frame.as_slice());
    assert_eq!(m.headroom(), MBUF_HEADROOM);
    let len = frame.len();
    let start = m.bytes().as_ptr() as usize;

    // Room for a VLAN tag in front.
    assert!(m.push_front(4));
    assert_eq!(usize::from(m.data_len()), len + 4);
    assert_eq!(m.pkt_len() as usize, len + 4);
    assert_eq!(m.headroom(), MBUF_HEADROOM - 4);
    assert_eq!(m.bytes().as_ptr() as usize, start - 4);
    assert_eq!(&m.bytes()[4..], frame.as_slice());
    m.bytes_mut()[..4].copy_from_slice(&[0x81, 0x00, 0x00, 0x64]);
    assert_eq!(&m.bytes()[..4], &[0x81, 0x00, 0x00, 0x64]);

    // More than the headroom: refused, unchanged.
    assert!(!m.push_front(usize::from(MBUF_HEADROOM - 4) + 1));
    assert!(!m.push_front(usize::MAX));
    assert!(!m.push_front(65536));
    assert_eq!(usize::from(m.data_len()), len + 4);

    assert!(m.pull_front(4));
    assert_eq!(m.bytes(), frame.as_slice());
    assert_eq!(m.bytes().as_ptr() as usize, start);

    // More than the data: refused, unchanged.
    assert!(!m.pull_front(len + 1));
    assert!(!m.pull_front(usize::MAX));
    assert_eq!(m.bytes(), frame.as_slice());
    assert!(m.pull_front(len));
    assert!(m.bytes().is_empty());
    assert_eq!(m.headroom(), MBUF_HEADROOM + len as u16);
    assert!(m.push_front(usize::from(MBUF_HEADROOM) + len));
    assert_eq!(m.headroom(), 0);

    // append / trim at the tail.
    let mut t = Mbuf::from_bytes(&p, &[1, 2, 3]).unwrap();
    t.append(2).unwrap().copy_from_slice(&[4, 5]);
    assert_eq!(t.bytes(), &[1, 2, 3, 4, 5]);
    assert!(t.trim(3));
    assert_eq!(t.bytes(), &[1, 2]);
    assert!(!t.trim(3));
    assert!(t.append(u16::MAX).is_none());
    assert_eq!(t.bytes(), &[1, 2]);

    // into_raw / from_raw keep ownership exact.
    let raw = t.into_raw();
    assert_eq!(p.in_use_count(), 2);
    // SAFETY: raw came from into_raw just above and is owned by nothing else.
    let t = unsafe { Mbuf::from_raw(raw) };
    assert_eq!(t.bytes(), &[1, 2]);
    drop((m, t));
    assert_full(&p);
}

#[test]
fn partial_tx_leaves_unsent_mbufs_in_the_burst() {
    let p = pool("ptx", 2048);
    let port = Port::by_name("net_ring0").unwrap();
    let setup = port.configure(&PortConfig::new(p)).unwrap();
    assert_eq!(setup.rss, RssStatus::NotRequested);
    port.start().unwrap();
    port.reset_stats().unwrap();
    let mut txq = port.tx_queue(0).unwrap();
    let mut rxq = port.rx_queue(0).unwrap();

    // Nothing reads the ring behind the port, so it fills: net_ring's rings hold 1023.
    let mut seq = 0u32;
    let mut sent = 0usize;
    let mut b = Burst::new();
    let leftover = loop {
        while !b.is_full() {
            b.push(numbered(&p, seq)).unwrap();
            seq += 1;
        }
        let n = port_tx(&mut txq, &mut b);
        sent += n;
        if n < BURST_SIZE {
            break b;
        }
        assert!(seq < 2000, "the TX ring never filled");
    };
    assert_eq!(sent, 1023);
    // The unsent mbufs stay, in order, still owned.
    assert_eq!(leftover.len(), 32 * 32 - 1023);
    let first_unsent = seq_of(&leftover.as_slice()[0]);
    assert_eq!(first_unsent, 1023);
    assert_eq!(p.in_use_count(), 1024);
    // A retry on the full ring takes nothing and changes nothing.
    let mut leftover = leftover;
    assert_eq!(txq.tx_burst(&mut leftover), 0);
    assert_eq!(leftover.len(), 1);
    drop(leftover);
    assert_eq!(p.in_use_count(), 1023);

    // What was sent comes back on RX (net_ring loops), in order, once each.
    let mut expect = 0u32;
    let mut rb = Burst::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while expect < 1023 && Instant::now() < deadline {
        rxq.rx_burst(&mut rb);
        for m in rb.drain() {
            assert_eq!(seq_of(&m), expect);
            // net_ring hands the mbuf over as sent: it does not set the RX port.
            assert_eq!(m.port(), u16::MAX);
            expect += 1;
        }
    }
    assert_eq!(expect, 1023);
    assert_eq!(rxq.rx_burst(&mut rb), 0);
    assert_full(&p);
    let stats = port.stats().unwrap();
    assert_eq!(stats.opackets, 1023);
    assert_eq!(stats.ipackets, 1023);

    drop((txq, rxq));
    port.stop().unwrap();
    assert_full(&p);
}

fn port_tx(q: &mut dpdk::TxQueue, b: &mut Burst) -> usize {
    let before = b.len();
    let n = q.tx_burst(b);
    assert_eq!(b.len(), before - n);
    n
}

#[test]
fn pcap_rx_reads_the_capture_and_tx_writes_it() {
    let env = env();
    let p = pool("pcap", 512);
    let port = Port::by_name("net_pcap0").unwrap();
    assert_eq!(port.info().unwrap().driver_name, "net_pcap");
    port.configure(&PortConfig::new(p)).unwrap();
    port.start().unwrap();
    let mut rxq = port.rx_queue(0).unwrap();
    let mut txq = port.tx_queue(0).unwrap();

    let mut got = Burst::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while got.len() < env.frames.len() && Instant::now() < deadline {
        rxq.rx_burst(&mut got);
    }
    assert_eq!(got.len(), env.frames.len());
    for (m, f) in got.iter().zip(&env.frames) {
        assert!(m.is_contiguous());
        assert_eq!(m.bytes(), f.as_slice(), "frame differs");
        assert_eq!(m.port(), port.id());
    }
    // The capture is not replayed.
    let mut more = Burst::new();
    assert_eq!(rxq.rx_burst(&mut more), 0);
    assert_eq!(p.in_use_count(), env.frames.len() as u32);

    let mut sent = 0;
    while !got.is_empty() && Instant::now() < deadline {
        sent += txq.tx_burst(&mut got);
    }
    assert_eq!(sent, env.frames.len());
    assert_eq!(port.stats().unwrap().opackets, env.frames.len() as u64);
    drop((rxq, txq));
    port.stop().unwrap();
    assert_full(&p);

    let mut r = PcapReader::open(env.dir.join("out.pcap")).unwrap();
    let mut buf = Vec::new();
    let mut written = Vec::new();
    while r.next_packet(&mut buf).unwrap().is_some() {
        written.push(buf.clone());
    }
    assert_eq!(written, env.frames);
    // Only this test uses the capture files.
    let _ = std::fs::remove_dir_all(&env.dir);
}

#[test]
fn ring_hands_mbufs_between_threads() {
    const N: u32 = 500;
    let p = pool("handoff", 1024);
    let ring = Ring::new("handoff", 64, SOCKET_ANY, true, true).unwrap();
    assert_eq!(ring.capacity(), 64);
    let (mut tx, mut rx) = ring.split();
    assert!(tx.try_clone().is_none(), "single producer");
    assert!(rx.try_clone().is_none(), "single consumer");

    let producer = std::thread::spawn(move || {
        let reg = lcore::register_thread().expect("register");
        let lcore_id = reg.lcore_id();
        assert_eq!(lcore::lcore_id(), Some(lcore_id));
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut b = Burst::new();
        let mut seq = 0;
        while (seq < N || !b.is_empty()) && Instant::now() < deadline {
            while seq < N && !b.is_full() {
                b.push(numbered(&p, seq)).unwrap();
                seq += 1;
            }
            if tx.enqueue_burst(&mut b) == 0 {
                lcore::pause();
            }
        }
        assert!(b.is_empty(), "producer timed out");
        drop(reg);
        assert_eq!(lcore::lcore_id(), None);
        lcore_id
    });

    let mut expect = 0;
    let mut b = Burst::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while expect < N && Instant::now() < deadline {
        if rx.dequeue_burst(&mut b) == 0 {
            lcore::pause();
        }
        for m in b.drain() {
            assert_eq!(seq_of(&m), expect);
            expect += 1;
        }
    }
    let lcore_id = producer.join().expect("producer");
    assert_ne!(lcore_id, 0, "the main lcore is taken");
    assert_eq!(expect, N);
    assert_eq!(rx.count(), 0);
    assert_full(&p);

    // A ring dropped with mbufs inside frees them.
    let mut mp = Ring::new("mpmc", 8, SOCKET_ANY, false, false).unwrap();
    let mut b = Burst::new();
    for seq in 0..10 {
        b.push(numbered(&p, seq)).unwrap();
    }
    assert_eq!(mp.enqueue_burst(&mut b), 8);
    assert_eq!(b.iter().map(seq_of).collect::<Vec<_>>(), [8, 9]);
    assert_eq!(mp.count(), 8);
    let (tx, rx) = mp.split();
    let tx2 = tx.try_clone().expect("multi producer");
    let rx2 = rx.try_clone().expect("multi consumer");
    drop((tx, rx, tx2));
    assert_eq!(p.in_use_count(), 10);
    drop(rx2);
    assert_eq!(p.in_use_count(), 2);
    drop(b);
    assert_full(&p);
}

#[test]
fn virtual_ports_report_rss_unavailable_and_queue_rules_hold() {
    let p = pool("rss", 1024);
    let port = Port::by_name("net_ring1").unwrap();
    let info = port.info().unwrap();
    assert_eq!(info.driver_name, "net_ring");
    assert!(info.max_rx_queues >= 2, "{info:?}");
    let rss = info.rss_support();
    assert!(!rss.l3_src_only && !rss.l3_dst_only);

    let mut cfg = PortConfig::new(p);
    cfg.rx_queues = 2;
    cfg.tx_queues = 2;
    cfg.rss = RssMode::L3Src;
    let setup = port.configure(&cfg).unwrap();
    assert_eq!(
        setup.rss,
        RssStatus::Unavailable(RssUnavailable::NotSupported {
            supported: info.flow_type_rss_offloads
        })
    );
    assert_eq!(setup.rx_queues, 2);
    assert!(setup.rx_desc > 0 && setup.tx_desc > 0);
    assert!(
        setup.offloads.is_empty(),
        "net_ring has no checksum offload"
    );
    let after = port.info().unwrap();
    assert_eq!((after.nb_rx_queues, after.nb_tx_queues), (2, 2));

    // Each queue once; out of range refused; no reconfiguration or stop while in use.
    let q0 = port.rx_queue(0).unwrap();
    assert_eq!(
        port.rx_queue(0).unwrap_err(),
        DpdkError::QueueInUse {
            port: port.id(),
            queue: 0
        }
    );
    assert!(matches!(
        port.rx_queue(2),
        Err(DpdkError::InvalidArgument { .. })
    ));
    assert_eq!(
        port.configure(&cfg).unwrap_err(),
        DpdkError::PortBusy { port: port.id() }
    );
    assert_eq!(
        port.stop().unwrap_err(),
        DpdkError::PortBusy { port: port.id() }
    );
    drop(q0);
    let q0 = port.rx_queue(0).unwrap();
    drop(q0);

    // MTU that would need scattered RX is refused.
    let mut jumbo = cfg.clone();
    jumbo.mtu = 9000;
    assert!(matches!(
        port.configure(&jumbo),
        Err(DpdkError::InvalidArgument { what: "mtu", .. })
    ));
    let mut bad_pools = cfg.clone();
    bad_pools.rx_pools = vec![p, p, p];
    assert!(matches!(
        port.configure(&bad_pools),
        Err(DpdkError::InvalidArgument {
            what: "rx_pools",
            ..
        })
    ));

    port.start().unwrap();
    assert!(port.link().unwrap().up);
    let mac = port.mac().unwrap();
    assert_eq!(mac[0] & 0x01, 0, "unicast MAC {mac:02x?}");
    port.set_promiscuous(true).unwrap();
    let xstats = port.xstats().unwrap();
    assert!(
        xstats.iter().any(|(n, _)| n == "rx_good_packets"),
        "{xstats:?}"
    );
    port.stop().unwrap();
    assert_full(&p);
    assert!(matches!(
        Port::by_name("net_nonexistent"),
        Err(DpdkError::Call { .. })
    ));
}

#[test]
fn attach_probes_a_device_at_run_time() {
    env();
    let p = Port::attach("net_ring2").expect("hot-plug net_ring2");
    assert_eq!(p.name().unwrap(), "net_ring2");
    assert_eq!(p.info().unwrap().driver_name, "net_ring");
    // Probed already: the same port comes back.
    assert_eq!(Port::attach("net_ring2").unwrap(), p);
    assert_eq!(Port::attach("net_ring0").unwrap().id(), 0);
    assert!(matches!(
        Port::attach("net_nosuchdriver0"),
        Err(DpdkError::Call { .. })
    ));
}

#[test]
fn tx_checksum_requests_set_the_offload_flags() {
    let p = pool("txcsum", 64);
    let mut m = Mbuf::from_bytes(&p, &env().frames[0]).unwrap();
    assert_eq!(m.ol_flags(), 0);
    assert_eq!(m.rss_hash(), None);
    assert_eq!(m.rx_ip_checksum(), RxChecksum::Unknown);
    assert_eq!(m.rx_l4_checksum(), RxChecksum::Unknown);
    let req = TxChecksum {
        l2_len: 14,
        l3_len: 20,
        ipv4: true,
        ip_header: true,
        l4: Some(L4Checksum::Udp),
    };
    assert!(!m.request_tx_checksum(TxChecksum { l2_len: 128, ..req }));
    assert!(!m.request_tx_checksum(TxChecksum { l3_len: 512, ..req }));
    assert_eq!(m.ol_flags(), 0, "refused requests change nothing");
    assert!(m.request_tx_checksum(req));
    assert_eq!(
        m.ol_flags(),
        dpdk_sys::VPNLB_MBUF_F_TX_IPV4
            | dpdk_sys::VPNLB_MBUF_F_TX_IP_CKSUM
            | dpdk_sys::VPNLB_MBUF_F_TX_UDP_CKSUM
    );
    let mut v6 = Mbuf::from_bytes(&p, &env().frames[3]).unwrap();
    assert!(v6.request_tx_checksum(TxChecksum {
        l2_len: 14,
        l3_len: 40,
        ipv4: false,
        ip_header: true, // ignored: IPv6 has no header checksum
        l4: Some(L4Checksum::Tcp),
    }));
    assert_eq!(
        v6.ol_flags(),
        dpdk_sys::VPNLB_MBUF_F_TX_IPV6 | dpdk_sys::VPNLB_MBUF_F_TX_TCP_CKSUM
    );
    drop((m, v6));
    assert_full(&p);
}
