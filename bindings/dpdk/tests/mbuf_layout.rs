//! `Mbuf` reads and moves the data through the bindgen `rte_mbuf` layout, in Rust; DPDK does
//! it in its inline C functions. Here both run side by side on mbufs from a real pool, and
//! must agree on every pointer and length after any sequence of appends, prepends, adjs and
//! trims: the Rust accessors against the C shim's (`vpnlb_pktmbuf_*`, which call DPDK's
//! inlines), and the Rust front moves against DPDK's `rte_pktmbuf_prepend` / `adj` / `trim`
//! applied to a twin mbuf.
//!
//! One EAL per test binary (no hugepages, no shared config, no devices), initialised once.

use std::sync::OnceLock;

use dataplane::frame::Frame;
use dataplane::rng::SplitMix64;
use dpdk::{Eal, EalArgs, Mbuf, Mempool, DEFAULT_DATA_ROOM, MBUF_HEADROOM, SOCKET_ANY};
use dpdk_sys as sys;

fn eal() {
    static EAL: OnceLock<()> = OnceLock::new();
    EAL.get_or_init(|| {
        let args = EalArgs::new()
            .cores("0")
            .memory_mb(64)
            .no_huge(true)
            .no_pci(true)
            .no_telemetry(true)
            .log_level("error")
            .to_args();
        Eal::init(&args).expect("EAL init");
    });
}

fn pool(name: &str, n: u32) -> Mempool {
    eal();
    Mempool::new(name, n, 0, DEFAULT_DATA_ROOM, SOCKET_ANY).expect("mempool")
}

/// What DPDK's own functions say about `m`, next to what the Rust accessors read.
#[derive(Debug, PartialEq, Eq)]
struct View {
    /// Data start, as an offset from the buffer's start (comparable between twin mbufs).
    data_at: usize,
    data_len: u16,
    pkt_len: u32,
    headroom: u16,
    tailroom: u16,
    nb_segs: u16,
    port: u16,
    ol_flags: u64,
}

fn buf_start(m: &Mbuf) -> usize {
    // SAFETY: m owns a valid mbuf; reading its buf_addr field only.
    unsafe { (*m.as_ptr()).buf_addr as usize }
}

/// The C shim's view (DPDK's inline functions and macros).
fn c_view(m: &Mbuf) -> View {
    let p = m.as_ptr();
    // SAFETY: m owns a valid mbuf; these shim functions only read it.
    unsafe {
        View {
            data_at: sys::vpnlb_pktmbuf_mtod(p) as usize - buf_start(m),
            data_len: sys::vpnlb_pktmbuf_data_len(p),
            pkt_len: sys::vpnlb_pktmbuf_pkt_len(p),
            headroom: sys::vpnlb_pktmbuf_headroom(p),
            tailroom: sys::vpnlb_pktmbuf_tailroom(p),
            nb_segs: sys::vpnlb_pktmbuf_nb_segs(p),
            port: sys::vpnlb_pktmbuf_port(p),
            ol_flags: sys::vpnlb_pktmbuf_ol_flags(p),
        }
    }
}

/// The Rust accessors' view.
fn rust_view(m: &Mbuf) -> View {
    View {
        data_at: m.bytes().as_ptr() as usize - buf_start(m),
        data_len: m.data_len(),
        pkt_len: m.pkt_len(),
        headroom: m.headroom(),
        tailroom: m.tailroom(),
        nb_segs: m.nb_segs(),
        port: m.port(),
        ol_flags: m.ol_flags(),
    }
}

fn assert_views_agree(m: &Mbuf, what: &str) {
    let c = c_view(m);
    assert_eq!(rust_view(m), c, "{what}");
    assert_eq!(m.bytes().len(), usize::from(c.data_len), "{what}");
}

/// The operations under test.
#[derive(Clone, Copy, Debug)]
enum Op {
    Append(u16),
    Prepend(usize),
    Adj(usize),
    Trim(u16),
    Truncate(usize),
}

/// Applies `op` through the Rust implementation on `r` and through DPDK's functions on `c`;
/// both must succeed or fail alike.
fn apply(op: Op, r: &mut Mbuf, c: &mut Mbuf) {
    let (ok_r, ok_c) = match op {
        // append and trim go through the shim on both sides; they move the tail the front
        // moves are checked against.
        Op::Append(n) => (r.append(n).is_some(), c.append(n).is_some()),
        Op::Trim(n) => (r.trim(n), c.trim(n)),
        Op::Prepend(n) => {
            let ok_c = u16::try_from(n).is_ok_and(|n| {
                // SAFETY: c owns a valid mbuf; prepend changes nothing when it fails.
                let p = unsafe { sys::vpnlb_pktmbuf_prepend(c.as_ptr(), n) };
                if !p.is_null() {
                    assert_eq!(p.cast::<u8>().cast_const(), c.bytes().as_ptr());
                }
                !p.is_null()
            });
            (r.push_front(n), ok_c)
        }
        Op::Adj(n) => {
            let ok_c = u16::try_from(n).is_ok_and(|n| {
                // SAFETY: c owns a valid mbuf; adj changes nothing when it fails.
                let p = unsafe { sys::vpnlb_pktmbuf_adj(c.as_ptr(), n) };
                if !p.is_null() {
                    assert_eq!(p.cast::<u8>().cast_const(), c.bytes().as_ptr());
                }
                !p.is_null()
            });
            (r.pull_front(n), ok_c)
        }
        Op::Truncate(len) => {
            // rte_pktmbuf_trim of what is beyond len, for a single segment.
            let data_len = usize::from(c.data_len());
            let ok_c = c.nb_segs() == 1
                && len <= data_len
                && u16::try_from(data_len - len).is_ok_and(|cut| {
                    // SAFETY: c owns a valid mbuf; trim changes nothing when it fails.
                    unsafe { sys::vpnlb_pktmbuf_trim(c.as_ptr(), cut) == 0 }
                });
            (r.truncate(len), ok_c)
        }
    };
    assert_eq!(ok_r, ok_c, "{op:?}: Rust and DPDK disagree on success");
}

fn len(rng: &mut SplitMix64, room: usize) -> usize {
    match rng.below(8) {
        0 => room,
        1 => room + 1,
        2 => usize::from(u16::MAX) + 1 + rng.below(4) as usize,
        3 => rng.below(2048) as usize,
        _ => rng.below(65) as usize,
    }
}

fn random_op(rng: &mut SplitMix64, m: &Mbuf) -> Op {
    let clamp = |n: usize| u16::try_from(n).unwrap_or(u16::MAX);
    match rng.below(5) {
        0 => Op::Append(clamp(len(rng, usize::from(m.tailroom())))),
        1 => Op::Prepend(len(rng, usize::from(m.headroom()))),
        2 => Op::Adj(len(rng, usize::from(m.data_len()))),
        3 => Op::Trim(clamp(len(rng, usize::from(m.data_len())))),
        _ => Op::Truncate(len(rng, usize::from(m.data_len()))),
    }
}

#[test]
fn rust_reads_match_dpdk_after_any_sequence_of_moves() {
    let p = pool("layout", 64);
    let mut rng = SplitMix64(0x9e37_79b9_7f4a_7c15);
    for run in 0..200 {
        let start = rng.below(1600) as usize;
        let data: Vec<u8> = (0..start).map(|i| (i * 7 + run) as u8).collect();
        let mut r = Mbuf::from_bytes(&p, &data).expect("mbuf");
        let mut c = Mbuf::from_bytes(&p, &data).expect("mbuf");
        assert_views_agree(&r, "fresh");
        assert_eq!(r.headroom(), MBUF_HEADROOM);
        for step in 0..40 {
            let op = random_op(&mut rng, &r);
            apply(op, &mut r, &mut c);
            let what = format!("run {run} step {step}: {op:?}");
            assert_views_agree(&r, &what);
            assert_views_agree(&c, &what);
            // The twins moved alike: same offsets and lengths, same bytes where both were
            // written alike.
            assert_eq!(rust_view(&r), rust_view(&c), "{what}");
            // Writing through bytes_mut lands where DPDK's mtod points.
            if let Some(b) = r.bytes_mut().first_mut() {
                *b = step as u8;
                // SAFETY: r owns a valid mbuf with at least one byte of data.
                assert_eq!(unsafe { *sys::vpnlb_pktmbuf_mtod(r.as_ptr()) }, step as u8);
            }
        }
    }
    assert_eq!(p.in_use_count(), 0, "mbufs leaked");
}

#[test]
fn port_and_offload_flags_are_read_and_written_in_place() {
    let p = pool("fields", 8);
    let mut m = Mbuf::from_bytes(&p, &[0u8; 60]).expect("mbuf");
    for port in [0, 1, 7, 31, u16::MAX] {
        m.set_port(port);
        assert_views_agree(&m, "set_port");
        assert_eq!(c_view(&m).port, port);
    }
    let good = sys::VPNLB_MBUF_F_RX_IP_CKSUM_GOOD;
    let bad = sys::VPNLB_MBUF_F_RX_IP_CKSUM_BAD;
    // As a PMD with IPv4 checksum offload would set them on receive.
    let cases = [
        (0, false),
        (good, true),
        (good | sys::VPNLB_MBUF_F_RX_L4_CKSUM_BAD, true),
        (bad, false),
        (good | bad, false), // "not computed": the software check must run
        (sys::VPNLB_MBUF_F_RX_L4_CKSUM_GOOD, false),
    ];
    for (flags, want) in cases {
        // SAFETY: m owns a valid mbuf exclusively; a PMD writes this field the same way.
        unsafe { (*m.as_ptr()).ol_flags = flags };
        assert_views_agree(&m, "ol_flags");
        assert_eq!(m.rx_ipv4_checksum_good(), want, "{flags:#x}");
    }
    drop(m);
    assert_eq!(p.in_use_count(), 0);
}
