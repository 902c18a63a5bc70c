//! Worst per-burst cost of the affinity table's bulk operations, incremental (a bounded slice
//! per burst) against the one-shot walks they replace. Not a unit test: it fills a large shard.
//!
//! `cargo test --release -p vpnlb-dataplane --test remap_cost -- --ignored --nocapture`
//! (`REMAP_COST_ENTRIES`, default 10 000 000: a full shard of that capacity, ~573 MB, plus
//! ~400 MB for the one-shot remap's list of changes.)

use std::net::{IpAddr, Ipv6Addr};
use std::time::{Duration, Instant};

use dataplane::affinity::{AffinityKey, AffinityShard, AffinityValue, Remap};
use dataplane::pipeline::REMAP_BUDGET_PER_BURST;

const SERVICES: u16 = 2;
const GATEWAYS: u16 = 8;

fn client(i: u64) -> IpAddr {
    IpAddr::V6(Ipv6Addr::from(
        u128::from(Ipv6Addr::new(0x2001, 2, 0, 0x64, 0, 0, 0, 0)) + u128::from(i),
    ))
}

/// A full shard of `n` confirmed entries over two services.
fn full_shard(n: usize) -> AffinityShard {
    let mut s = AffinityShard::new(n, n);
    for i in 0..n as u64 {
        let key = AffinityKey::new(client(i), (i % u64::from(SERVICES)) as u16);
        let value = AffinityValue {
            gateway: (i % u64::from(GATEWAYS)) as u16,
            last_seen: 1,
            expires_at: u32::MAX,
            confirmed: true,
        };
        let _ = s.insert(key, s.hash(&key), value, 1);
    }
    s
}

/// Today's (before this change) reload re-keying: every entry to move collected in one walk,
/// then removed and inserted again, all within one burst.
fn one_shot_remap(s: &mut AffinityShard, map: &dyn Fn(u16, u16) -> Option<(u16, u16)>) {
    type Change = (AffinityKey, AffinityValue, Option<(u16, u16)>);
    let changes: Vec<Change> = s
        .iter()
        .filter_map(|(k, v)| {
            let to = map(k.service_index(), v.gateway);
            (to != Some((k.service_index(), v.gateway))).then_some((k, v, to))
        })
        .collect();
    for (k, v, to) in changes {
        let hash = s.hash(&k);
        s.remove(&k, hash);
        if let Some((service, gateway)) = to {
            let key = AffinityKey { service, ..k };
            let hash = s.hash(&key);
            let _ = s.insert(key, hash, AffinityValue { gateway, ..v }, v.last_seen);
        }
    }
}

fn map_of(f: impl Fn(u16, u16) -> Option<(u16, u16)>) -> Vec<Vec<Option<(u16, u16)>>> {
    (0..SERVICES)
        .map(|s| (0..GATEWAYS).map(|g| f(s, g)).collect())
        .collect()
}

/// Runs `remap` to completion a slice per burst: (steps, step-time percentiles 50/99/99.9/max
/// in ns, total). The maximum on a shared machine is mostly preemption: read the percentiles.
fn sliced(s: &mut AffinityShard, remap: Remap) -> (usize, [u128; 4], Duration) {
    let t0 = Instant::now();
    let _ = s.begin_remap(remap, |_| {});
    let mut times = vec![t0.elapsed().as_nanos()];
    while s.remapping() {
        let t = Instant::now();
        let _ = s.remap_step(REMAP_BUDGET_PER_BURST, |_| {});
        times.push(t.elapsed().as_nanos());
    }
    let total = t0.elapsed();
    times.sort_unstable();
    let at = |q: f64| times[((times.len() - 1) as f64 * q) as usize];
    (times.len(), [at(0.5), at(0.99), at(0.999), at(1.0)], total)
}

fn entries() -> usize {
    std::env::var("REMAP_COST_ENTRIES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000_000)
}

#[test]
#[ignore = "fills a 10 M-entry shard (~1 GB); run in release with --ignored --nocapture"]
fn remap_step_cost() {
    let n = entries();
    println!("{n} entries, budget {REMAP_BUDGET_PER_BURST} per burst");
    type IdFn = fn(u16, u16) -> Option<(u16, u16)>;
    let cases: [(&str, IdFn); 3] = [
        ("gateways renumbered", |s, g| Some((s, (g + 1) % GATEWAYS))),
        ("services swapped", |s, g| Some((1 - s, g))),
        ("one gateway gone", |s, g| (g != 0).then_some((s, g))),
    ];
    for (name, f) in cases {
        let mut s = full_shard(n);
        let t = Instant::now();
        one_shot_remap(&mut s, &f);
        let once = t.elapsed();
        let mut s = full_shard(n);
        let (steps, ns, total) = sliced(&mut s, Remap::new(&map_of(f)));
        println!(
            "{name}: one-shot {once:?} in one burst; sliced: {steps} steps, step ns \
             p50/p99/p99.9/max {ns:?}, total {total:?}"
        );
    }
    let mut s = full_shard(n);
    let t = Instant::now();
    s.retain(|_, _| false, |_| {});
    println!("flush: one-shot {:?} in one burst", t.elapsed());
    let mut s = full_shard(n);
    let (steps, ns, total) = sliced(&mut s, Remap::flush());
    println!("flush: sliced: {steps} steps, step ns p50/p99/p99.9/max {ns:?}, total {total:?}");

    // `show affinity CLIENT`: a walk, against a lookup per service and kind.
    let c = client(n as u64 / 2);
    let t = Instant::now();
    let walked = s.iter().filter(|(k, _)| k.client_ip() == c).count();
    let walk = t.elapsed();
    let mut s = full_shard(n);
    let t = Instant::now();
    let walked_full = s.iter().filter(|(k, _)| k.client_ip() == c).count();
    let walk_full = t.elapsed();
    let t = Instant::now();
    let mut found = 0;
    for svc in 0..SERVICES {
        for key in [AffinityKey::new(c, svc), AffinityKey::new(c, svc).direct()] {
            s.settle(&key, |_| {});
            found += usize::from(s.peek(&key, s.hash(&key)).is_some());
        }
    }
    let looked_up = t.elapsed();
    assert_eq!((walked, found), (0, walked_full));
    println!(
        "show affinity CLIENT: walk {walk_full:?} (empty shard {walk:?}), lookups {looked_up:?}"
    );
}
