//! A bulk resync of a large table between two sync sessions over an in-memory link that loses
//! 1 % of the datagrams both ways, under the default budgets: the master's bulk pacing
//! (`DEFAULT_BULK_RATE`), the receiver's own budget for its peer (`[ha] sync_rate_pps`, the
//! daemon's `Policer`), the control loop's 200 µs round, all on a virtual clock. The bulk
//! must complete, in bounded virtual time, resuming where each loss stopped it (little sent
//! twice), with the master's table changing meanwhile; and the receiver must not say it is
//! synced (what holds a recovering appliance's preemption) before it has the whole table.
//!
//! The 100 000-entry run is always on; the 1 000 000-entry one is `#[ignore]`d (it takes a few
//! seconds in a release build): `cargo test --release -p vpnlb-control --test sync_bulk --
//! --ignored`.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use control::config::DEFAULT_SYNC_RATE_PPS;
use control::daemon::exception::Policer;
use control::sync::session::DEFAULT_BULK_RATE;
use control::sync::{Change, Entry, Received, SyncConfig, SyncSession};

/// The control loop's round.
const ROUND: Duration = Duration::from_micros(200);

fn cfg() -> SyncConfig {
    SyncConfig {
        key: b"pair-key-0123456789abcdef".to_vec(),
        heartbeat: Duration::from_millis(20),
        dead_after: 3,
        layout: 0x5eed,
        batch_delay: Duration::from_millis(5),
        bulk_rate: DEFAULT_BULK_RATE,
    }
}

fn entry(i: usize, gateway: u16) -> Entry {
    let i32 = u32::try_from(i).expect("small");
    Entry {
        client: IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i32)),
        service: 0,
        gateway,
        confirmed: true,
        expires_in_s: 3600,
    }
}

/// Drops one datagram in a hundred, deterministically (a fixed-seed xorshift).
struct Loss {
    state: u64,
    dropped: u64,
    passed: u64,
}

impl Loss {
    fn new(seed: u64) -> Loss {
        Loss {
            state: seed,
            dropped: 0,
            passed: 0,
        }
    }

    fn drop_this(&mut self) -> bool {
        self.state ^= self.state << 13;
        self.state ^= self.state >> 7;
        self.state ^= self.state << 17;
        let drop = self.state % 100 == 0;
        if drop {
            self.dropped += 1;
        } else {
            self.passed += 1;
        }
        drop
    }
}

/// The receiver's table, with the generation sweep of the sync module's docs.
#[derive(Default)]
struct Mirror {
    entries: HashMap<(IpAddr, u16), (Entry, u64)>,
    generation: u64,
}

impl Mirror {
    fn apply(&mut self, r: Received) {
        match r {
            Received::Changes(changes) => {
                for c in changes {
                    match c {
                        Change::Upsert(e) => {
                            self.entries
                                .insert((e.client, e.service), (e, self.generation));
                        }
                        Change::Delete { client, service } => {
                            self.entries.remove(&(client, service));
                        }
                    }
                }
            }
            Received::BulkStarted => self.generation += 1,
            Received::BulkEnded { .. } => {
                let g = self.generation;
                self.entries.retain(|_, (_, stamp)| *stamp >= g);
            }
            _ => {}
        }
    }

    fn same_as(&self, table: &[Option<Entry>]) -> bool {
        let live = table.iter().flatten().count();
        live == self.entries.len()
            && table
                .iter()
                .flatten()
                .all(|e| self.entries.get(&(e.client, e.service)).map(|x| x.0) == Some(*e))
    }
}

struct Outcome {
    /// When the backup first held the whole table (the bulk complete).
    first_synced: Duration,
    /// When it was synced again after the churn stopped (the last check).
    virtual_time: Duration,
    datagrams_dropped: u64,
    datagrams_passed: u64,
    policed: u64,
    bulk_entries_out: u64,
    resumes: u64,
    restarts: u64,
}

/// A master with `n` entries pushes them to a new backup over the lossy, policed link, its
/// table changing a little every millisecond; returns once the backup is synced and holds
/// the master's table, or panics after `limit` of virtual time.
fn bulk_over_lossy_link(n: usize, limit: Duration) -> Outcome {
    let mut table: Vec<Option<Entry>> = (0..n).map(|i| Some(entry(i, (i % 4) as u16))).collect();
    let mut a = SyncSession::new(cfg(), 0xa);
    a.set_master(true);
    let mut b = SyncSession::new(cfg(), 0xb);
    let mut mirror = Mirror::default();
    let (mut ab, mut ba) = (
        Loss::new(0x9e37_79b9_7f4a_7c15),
        Loss::new(0x2545_f491_4f6c_dd1d),
    );
    // Each side's budget for its peer, as the exception path applies it.
    let (mut budget_a, mut budget_b) = (
        Policer::new(DEFAULT_SYNC_RATE_PPS),
        Policer::new(DEFAULT_SYNC_RATE_PPS),
    );
    let mut policed = 0;
    let t0 = Instant::now();
    let mut now = t0;
    let mut round = 0u64;
    let mut churn = 0x1234_5678_u64;
    let mut first_synced = None;
    loop {
        let elapsed = now - t0;
        assert!(
            elapsed < limit,
            "no complete table after {elapsed:?}: {:?}",
            b.counters()
        );
        let now_ms = u64::try_from(elapsed.as_millis()).unwrap();
        // The master's table changes meanwhile: a few clients a millisecond, moved or gone,
        // until the bulk is well under way.
        if round % 5 == 0 && elapsed < Duration::from_millis(1500) {
            for _ in 0..3 {
                churn = churn
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1);
                let i = usize::try_from(churn >> 33).unwrap() % n;
                let e = entry(i, u16::try_from(churn % 5).unwrap());
                if churn % 5 == 4 {
                    table[i] = None;
                    a.push(Change::Delete {
                        client: e.client,
                        service: 0,
                    });
                } else {
                    table[i] = Some(e);
                    a.push(Change::Upsert(e));
                }
            }
        }
        let out = a.poll(now, &mut |cursor: &mut u64, out: &mut Vec<Entry>, max| {
            let mut i = usize::try_from(*cursor).unwrap();
            while i < table.len() && out.len() < max {
                if let Some(e) = table[i] {
                    out.push(e);
                }
                i += 1;
            }
            *cursor = i as u64;
            i < table.len()
        });
        let was_synced = b.synced();
        for d in out {
            if ab.drop_this() {
                continue;
            }
            if !budget_b.allow(now_ms) {
                policed += 1;
                continue;
            }
            if let Ok(r) = b.receive(now, &d) {
                mirror.apply(r);
            }
        }
        if b.synced() && !was_synced {
            // Synced means the whole table: nothing missing, nothing stale.
            assert!(
                mirror.same_as(&table),
                "synced with {} entries of {}",
                mirror.entries.len(),
                table.iter().flatten().count()
            );
            let first = *first_synced.get_or_insert(elapsed);
            if elapsed >= Duration::from_millis(1500) {
                let c = a.counters();
                return Outcome {
                    first_synced: first,
                    virtual_time: elapsed,
                    datagrams_dropped: ab.dropped + ba.dropped,
                    datagrams_passed: ab.passed + ba.passed,
                    policed,
                    bulk_entries_out: c.bulk_entries_out,
                    resumes: c.bulks_resumed,
                    restarts: c.resyncs_served + c.resumes_refused,
                };
            }
        }
        for d in b.poll(now, &mut |_: &mut u64, _: &mut Vec<Entry>, _| false) {
            if ba.drop_this() {
                continue;
            }
            if !budget_a.allow(now_ms) {
                policed += 1;
                continue;
            }
            let _ = a.receive(now, &d);
        }
        now += ROUND;
        round += 1;
    }
}

fn check(n: usize, o: &Outcome) {
    let resent = o.bulk_entries_out.saturating_sub(n as u64);
    eprintln!(
        "{n} entries: bulk complete after {:?} of virtual time, synced again after the churn \
         at {:?}; datagrams {} passed, {} dropped \
         ({:.2} %), {} policed; bulk entries sent {} ({} again, {:.2} % of the table), \
         {} resumes, {} restarts",
        o.first_synced,
        o.virtual_time,
        o.datagrams_passed,
        o.datagrams_dropped,
        o.datagrams_dropped as f64 * 100.0 / (o.datagrams_passed + o.datagrams_dropped) as f64,
        o.policed,
        o.bulk_entries_out,
        resent,
        resent as f64 * 100.0 / n as f64,
        o.resumes,
        o.restarts,
    );
    assert!(o.datagrams_dropped > 0, "the link lost datagrams");
    assert_eq!(o.policed, 0, "the pacing keeps within the peer's budget");
    assert!(o.resumes > 0, "losses were resumed");
    assert_eq!(
        o.restarts, 0,
        "no loss restarted the bulk from the beginning"
    );
    assert!(
        resent * 10 < n as u64,
        "{resent} entries sent again: a loss resumes, it does not start over"
    );
}

#[test]
fn a_100k_bulk_completes_over_a_lossy_link_resuming_where_it_stopped() {
    let n = 100_000;
    // At 10 chunks of 47 a millisecond: 0.21 s, plus the churn's time.
    let o = bulk_over_lossy_link(n, Duration::from_secs(5));
    check(n, &o);
    assert!(
        o.first_synced < Duration::from_millis(500),
        "{:?}",
        o.first_synced
    );
}

#[test]
#[ignore = "a million entries: run in release (scripts/test.sh does)"]
fn a_1m_bulk_completes_over_a_lossy_link_resuming_where_it_stopped() {
    let n = 1_000_000;
    // 2.1 s at the default pacing; bounded at three times that.
    let o = bulk_over_lossy_link(n, Duration::from_secs(7));
    check(n, &o);
    assert!(
        o.first_synced < Duration::from_secs(4),
        "{:?}",
        o.first_synced
    );
}
