//! Smooth weighted round robin (the nginx upstream algorithm).
//!
//! On each pick every eligible gateway's credit grows by its weight; the gateway with the most
//! credit (the lowest id on a tie) is picked and pays the sum of the eligible weights. Over any
//! window of `Σweight` picks each gateway is picked `weight` times, and the picks are spread
//! out rather than bunched: weights 5, 1, 1 give `a a b a c a a`.

use super::Candidate;

/// Per-worker smooth weighted round-robin state: one credit per gateway.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoundRobin {
    /// Current credit per gateway id. Bounded by the algorithm (each credit stays within a few
    /// `Σweight` of 0); the arithmetic saturates anyway so no input can overflow it.
    credit: Box<[i64]>,
}

impl RoundRobin {
    /// State for a service with `gateways` gateways. Gateways with ids `>= gateways` (if the
    /// caller passes a longer slice to [`pick`](Self::pick)) are never picked: create a new
    /// state when the gateway list changes.
    pub fn new(gateways: usize) -> Self {
        let n = gateways.min(usize::from(u16::MAX) + 1);
        RoundRobin {
            credit: vec![0; n].into_boxed_slice(),
        }
    }

    /// The next gateway, or `None` when none is eligible. Allocation-free, O(n).
    ///
    /// An ineligible gateway's credit is reset to 0, so that it rejoins the rotation without a
    /// burst (or a debt) when it is eligible again.
    pub fn pick(&mut self, gateways: &[Candidate]) -> Option<u16> {
        let mut total: i64 = 0;
        let mut best: Option<(usize, i64)> = None; // (id, credit)
        for (i, (credit, c)) in self.credit.iter_mut().zip(gateways).enumerate() {
            if !c.eligible() {
                *credit = 0;
                continue;
            }
            let w = i64::from(c.weight);
            *credit = credit.saturating_add(w);
            total = total.saturating_add(w);
            // Strictly greater: the lowest id wins a tie (nginx order).
            if !matches!(best, Some((_, b)) if *credit <= b) {
                best = Some((i, *credit));
            }
        }
        let (id, _) = best?;
        let credit = self.credit.get_mut(id)?;
        *credit = credit.saturating_sub(total);
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

    fn sequence(rr: &mut RoundRobin, gws: &[Candidate], picks: usize) -> String {
        (0..picks)
            .map(|_| rr.pick(gws).map_or('-', |g| char::from(b'a' + g as u8)))
            .collect()
    }

    #[test]
    fn nginx_sequence() {
        let mut rr = RoundRobin::new(3);
        let gws = [up(5), up(1), up(1)];
        assert_eq!(sequence(&mut rr, &gws, 14), "aabacaaaabacaa");
        // Back at the start of the cycle: all credits 0.
        assert_eq!(rr, RoundRobin::new(3));
    }

    #[test]
    fn equal_weights_rotate() {
        let mut rr = RoundRobin::new(3);
        assert_eq!(sequence(&mut rr, &[up(2), up(2), up(2)], 7), "abcabca");
    }

    #[test]
    fn skips_ineligible() {
        let mut rr = RoundRobin::new(5);
        let gws = [
            up(1),
            Candidate {
                weight: 1,
                state: GatewayState::Down,
            },
            Candidate {
                weight: 3,
                state: GatewayState::Draining,
            },
            up(0),
            up(2),
        ];
        assert_eq!(sequence(&mut rr, &gws, 6), "eaeeae");
    }

    #[test]
    fn none_when_none_eligible() {
        let mut rr = RoundRobin::new(3);
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
        ];
        assert_eq!(rr.pick(&gws), None);
        assert_eq!(rr.pick(&[]), None);
        assert_eq!(RoundRobin::new(0).pick(&[up(1)]), None);
    }

    #[test]
    fn a_returning_gateway_starts_afresh() {
        let mut rr = RoundRobin::new(2);
        let mut gws = [up(1), up(1)];
        assert_eq!(sequence(&mut rr, &gws, 1), "a");
        gws[0].state = GatewayState::Down;
        assert_eq!(sequence(&mut rr, &gws, 3), "bbb");
        gws[0].state = GatewayState::Up;
        // No burst for a (its credit was reset); b goes first, having been owed the pick a
        // took when both were last eligible.
        assert_eq!(sequence(&mut rr, &gws, 4), "baba");
    }

    #[test]
    fn extreme_weights_do_not_overflow() {
        let mut rr = RoundRobin::new(3);
        let gws = [up(u32::MAX), up(u32::MAX), up(1)];
        for _ in 0..1_000 {
            assert!(rr.pick(&gws).is_some());
        }
    }

    proptest! {
        /// Over Σweight picks each eligible gateway is picked exactly `weight` times.
        #[test]
        fn exact_shares_over_a_cycle(
            weights in proptest::collection::vec(0u32..8, 1..8),
            down in proptest::collection::vec(any::<bool>(), 8),
        ) {
            let gws: Vec<Candidate> = weights
                .iter()
                .zip(&down)
                .map(|(&weight, &d)| Candidate {
                    weight,
                    state: if d { GatewayState::Down } else { GatewayState::Up },
                })
                .collect();
            let total: u32 = gws.iter().filter(|c| c.eligible()).map(|c| c.weight).sum();
            let mut rr = RoundRobin::new(gws.len());
            let mut count = vec![0u32; gws.len()];
            for _ in 0..total {
                count[usize::from(rr.pick(&gws).unwrap())] += 1;
            }
            for (c, n) in gws.iter().zip(&count) {
                prop_assert_eq!(*n, if c.eligible() { c.weight } else { 0 });
            }
            if total == 0 {
                prop_assert_eq!(rr.pick(&gws), None);
            }
        }
    }
}
