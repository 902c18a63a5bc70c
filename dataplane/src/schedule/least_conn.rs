//! Weighted least connections: the eligible gateway with the fewest active clients per unit of
//! weight.

use super::Candidate;

/// Per-worker least-connections state: only the tie-break rotation.
///
/// Ratios `active / weight` are compared by cross-multiplication in `u64` (exact, no floats).
/// Ties are common (at startup every gateway has 0 clients, and the caller may count a client
/// only once its session is up), so the scan for the minimum starts at a position that depends
/// on the client hash and advances by one on every pick: a burst of new clients spreads over
/// the tied gateways, within one worker (the rotation) and across workers (the hash).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LeastConn {
    /// Picks so far, modulo the gateway count.
    rotation: usize,
}

impl LeastConn {
    /// State for a service with `gateways` gateways (the state does not depend on it).
    pub fn new(gateways: usize) -> Self {
        let _ = gateways;
        LeastConn { rotation: 0 }
    }

    /// The eligible gateway with the smallest `active[i] / weight[i]` (a missing `active` entry
    /// counts as 0), or `None` when none is eligible. Allocation-free, O(n).
    pub fn pick(
        &mut self,
        client_hash: u64,
        gateways: &[Candidate],
        active: &[u32],
    ) -> Option<u16> {
        let n = gateways.len().min(usize::from(u16::MAX) + 1);
        if n == 0 {
            return None;
        }
        // Both remainders < n, so the sum cannot overflow.
        let start = (super::reduce(client_hash, n) + self.rotation % n) % n;
        let mut best: Option<(usize, u64, u64)> = None; // (id, active, weight)
        for i in (start..n).chain(0..start) {
            let Some(c) = gateways.get(i).filter(|c| c.eligible()) else {
                continue;
            };
            let a = u64::from(active.get(i).copied().unwrap_or(0));
            let w = u64::from(c.weight);
            // a / w < best_a / best_w  <=>  a * best_w < best_a * w (u32 * u32 fits u64).
            if !matches!(best, Some((_, ba, bw)) if a * bw >= ba * w) {
                best = Some((i, a, w));
            }
        }
        let (id, _, _) = best?;
        self.rotation = (self.rotation % n) + 1;
        u16::try_from(id).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schedule::GatewayState;
    use proptest::prelude::*;

    fn up(weight: u32) -> Candidate {
        Candidate {
            weight,
            state: GatewayState::Up,
        }
    }

    #[test]
    fn picks_the_smallest_ratio() {
        let mut lc = LeastConn::new(3);
        let gws = [up(1), up(1), up(1)];
        for h in 0..10 {
            assert_eq!(lc.pick(h, &gws, &[5, 2, 9]), Some(1));
            assert_eq!(lc.pick(h, &gws, &[5, 7, 3]), Some(2));
        }
    }

    #[test]
    fn respects_weights() {
        let mut lc = LeastConn::new(2);
        let gws = [up(3), up(1)];
        // 5/3 < 2/1.
        assert_eq!(lc.pick(0, &gws, &[5, 2]), Some(0));
        // 7/3 > 2/1.
        assert_eq!(lc.pick(0, &gws, &[7, 2]), Some(1));
        // Simulated: 4000 clients, the caller counting each; 3:1 split, off by one at most.
        let mut active = [0u32; 2];
        for h in 0..4_000u64 {
            let g = lc.pick(h, &gws, &active).unwrap();
            active[usize::from(g)] += 1;
        }
        assert!(active[0].abs_diff(3_000) <= 1, "{active:?}");
        // Extreme weights do not overflow.
        let gws = [up(u32::MAX), up(1)];
        assert_eq!(lc.pick(0, &gws, &[u32::MAX, 1]), Some(0));
        assert_eq!(lc.pick(0, &gws, &[u32::MAX, 0]), Some(1));
    }

    #[test]
    fn skips_ineligible() {
        let mut lc = LeastConn::new(4);
        let gws = [
            Candidate {
                weight: 1,
                state: GatewayState::Down,
            },
            Candidate {
                weight: 1,
                state: GatewayState::Draining,
            },
            up(0),
            up(1),
        ];
        for h in 0..100 {
            assert_eq!(lc.pick(h, &gws, &[0, 0, 0, 1_000]), Some(3));
        }
        assert_eq!(lc.pick(0, &gws[..3], &[0; 3]), None);
        assert_eq!(lc.pick(0, &[], &[]), None);
    }

    #[test]
    fn spreads_ties_from_one_client_hash() {
        // Counts never updated (clients not established yet), the same hash every time: the
        // rotation alone spreads them evenly.
        let mut lc = LeastConn::new(3);
        let gws = [up(1), up(1), up(1)];
        let mut seen = [0u32; 3];
        for _ in 0..300 {
            seen[usize::from(lc.pick(42, &gws, &[0; 3]).unwrap())] += 1;
        }
        assert_eq!(seen, [100, 100, 100]);
    }

    #[test]
    fn spreads_ties_across_fresh_workers() {
        // Many workers each picking once at startup: the client hash spreads them.
        let gws = [up(1), up(1), up(1), up(1)];
        let mut seen = [0u32; 4];
        for i in 0..4_000u64 {
            let h = crate::schedule::fmix64(i);
            seen[usize::from(LeastConn::new(4).pick(h, &gws, &[]).unwrap())] += 1;
        }
        assert!(seen.iter().all(|&c| (900..1_100).contains(&c)), "{seen:?}");
    }

    #[test]
    fn ties_only_among_the_least_loaded() {
        let mut lc = LeastConn::new(4);
        let gws = [up(1); 4];
        let mut seen = [0u32; 4];
        for h in 0..400 {
            seen[usize::from(lc.pick(h, &gws, &[3, 1, 2, 1]).unwrap())] += 1;
        }
        assert_eq!(seen[0] + seen[2], 0);
        assert!(seen[1] >= 100 && seen[3] >= 100, "{seen:?}");
    }

    proptest! {
        #[test]
        fn picks_an_eligible_minimum(
            gws in proptest::collection::vec(
                (prop_oneof![Just(0u32), 1u32..5, Just(u32::MAX)],
                 prop_oneof![Just(GatewayState::Up), Just(GatewayState::Down), Just(GatewayState::Draining)])
                    .prop_map(|(weight, state)| Candidate { weight, state }),
                0..10),
            active in proptest::collection::vec(prop_oneof![0u32..4, Just(u32::MAX)], 0..10),
            hash in any::<u64>(),
            rounds in 1usize..5,
        ) {
            let mut lc = LeastConn::new(gws.len());
            for _ in 0..rounds {
                let got = lc.pick(hash, &gws, &active);
                let ratio = |i: usize| {
                    (u128::from(active.get(i).copied().unwrap_or(0)), u128::from(gws[i].weight))
                };
                match got {
                    None => prop_assert!(!gws.iter().any(Candidate::eligible)),
                    Some(g) => {
                        let g = usize::from(g);
                        prop_assert!(gws[g].eligible());
                        let (ga, gw) = ratio(g);
                        for i in (0..gws.len()).filter(|&i| gws[i].eligible()) {
                            let (a, w) = ratio(i);
                            prop_assert!(ga * w <= a * gw, "{} beats {}", i, g);
                        }
                    }
                }
            }
        }
    }
}
