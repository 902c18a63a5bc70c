//! Weighted Maglev consistent hashing (Eisenbud et al., "Maglev: A Fast and Reliable Software
//! Network Load Balancer", NSDI 2016, section 3.4).
//!
//! The control thread builds a lookup table of `M` (prime) entries, each a gateway id; a worker
//! sends a client to `table[client_hash % M]`. The table depends only on the ordered member list
//! (names and weights), never on a random seed or on history, so every appliance with the same
//! gateway set sends the same client to the same gateway.
//!
//! # Building
//!
//! Each member has a permutation of the slots derived from its *name*:
//! `offset = h1(name) % M`, `skip = h2(name) % (M - 1) + 1`, `perm[j] = (offset + j * skip) % M`
//! (a full permutation because `M` is prime). Members take turns; on its turn a member claims
//! the next slot of its permutation that is still empty, until the table is full.
//!
//! # Weights
//!
//! The turns are dealt in proportion to the weights, in the order of the Sainte-Laguë (Webster)
//! apportionment: member `i` takes its `k`-th turn (k = 0, 1, ...) at virtual time
//! `(2k + 1) / (2 * weight_i)`; turns run in order of that time, ties in member order. When the
//! table is full at time `T`, member `i` has had `round(T * weight_i)` turns (±1 at the cut), so
//! each member's share is within about one entry of `M * weight_i / Σweight` — far under 1 % at
//! `M` = 65 537. With equal weights the turns are exactly the paper's rounds (0, 1, ..., n-1, 0,
//! ...). Members with weight 0 take no turn and are absent from the table.
//!
//! # Disruption
//!
//! Like the paper's algorithm, removing a gateway moves all of its clients and *almost* none of
//! the others: the survivors' permutations are unchanged but the order in which they claim the
//! freed slots can also shift a few of their own slots (measured: well under 1 % of the
//! survivors' clients, see the tests). Adding one of `N + 1` gateways moves about `1 / (N + 1)`.
//! Clients with an affinity entry are not affected either way.

use super::{hash64, nth_eligible, Candidate};
use std::cmp::Ordering;
use std::collections::BinaryHeap;

/// Table size used unless configured otherwise (prime; about 100 × the largest expected member
/// count keeps shares and disruption within about 1 %).
pub const MAGLEV_DEFAULT_SIZE: usize = 65_537;

/// Largest accepted table size (2^24): 32 MiB of entries, and bounds the primality test.
pub const MAGLEV_MAX_SIZE: usize = 1 << 24;

/// Seeds of the two name hashes (part of the cross-appliance contract: never change them).
const OFFSET_SEED: u64 = 0x6d61_676c_6576_2d6f; // "maglev-o"
const SKIP_SEED: u64 = 0x6d61_676c_6576_2d73; // "maglev-s"

/// When the table's choice is no longer eligible, how many following slots to try before
/// falling back to a plain hash over the eligible candidates.
const MAX_PROBES: usize = 32;

/// One gateway as seen by the table builder; its index in the slice is its gateway id.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MaglevMember<'a> {
    /// Stable identity of the gateway (its configured name): seeds its permutation, so it must
    /// be the same on every appliance and unique in the list.
    pub name: &'a str,
    /// Relative share of the table; 0 = not in the table (Down, Draining, no address of the
    /// family, or configured 0).
    pub weight: u32,
}

/// Why a table could not be built.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MaglevError {
    /// The size is not a prime number.
    NotPrime(usize),
    /// The size is smaller than the number of members.
    TooSmall {
        /// The requested size.
        size: usize,
        /// The number of members.
        members: usize,
    },
    /// The size exceeds [`MAGLEV_MAX_SIZE`].
    TooLarge(usize),
    /// More members than gateway ids (`u16`) can number.
    TooManyMembers(usize),
    /// Two members have the same name (they would share a permutation).
    DuplicateName {
        /// The name.
        name: String,
        /// Id of its first occurrence.
        first: u16,
        /// Id of the second occurrence.
        second: u16,
    },
}

impl core::fmt::Display for MaglevError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            MaglevError::NotPrime(size) => write!(f, "maglev table size {size} is not prime"),
            MaglevError::TooSmall { size, members } => write!(
                f,
                "maglev table size {size} is smaller than the number of gateways ({members})"
            ),
            MaglevError::TooLarge(size) => {
                write!(f, "maglev table size {size} exceeds the maximum {MAGLEV_MAX_SIZE}")
            }
            MaglevError::TooManyMembers(n) => {
                write!(f, "{n} gateways: at most {} are supported", u32::from(u16::MAX) + 1)
            }
            MaglevError::DuplicateName { name, first, second } => write!(
                f,
                "gateways {first} and {second} have the same name {name:?} (maglev needs unique names)"
            ),
        }
    }
}

impl std::error::Error for MaglevError {}

/// An immutable Maglev lookup table, shared by the workers behind an `Arc`.
#[derive(Clone, PartialEq, Eq)]
pub struct MaglevTable {
    /// Gateway id per slot; empty when no member has weight > 0, else `size` long.
    entries: Box<[u16]>,
    /// `M`: prime, `>= members`.
    size: usize,
    /// Number of members (gateway ids `0..members`), weight 0 included.
    members: usize,
}

impl core::fmt::Debug for MaglevTable {
    // Not the 65 537 entries: this ends up in logs.
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("MaglevTable")
            .field("size", &self.size)
            .field("members", &self.members)
            .field("share", &self.share())
            .finish()
    }
}

/// A member's next turn, ordered so that `BinaryHeap` (a max-heap) pops the earliest.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Turn {
    /// Turns already taken (`k`).
    taken: u64,
    weight: u32,
    id: u16,
}

impl Turn {
    /// Compares virtual times `(2k + 1) / (2w)` exactly, by cross-multiplication.
    fn time_cmp(&self, other: &Self) -> Ordering {
        let lhs = u128::from(2 * self.taken + 1) * u128::from(other.weight);
        let rhs = u128::from(2 * other.taken + 1) * u128::from(self.weight);
        lhs.cmp(&rhs).then(self.id.cmp(&other.id))
    }
}

impl Ord for Turn {
    fn cmp(&self, other: &Self) -> Ordering {
        // Reversed: the earliest turn is the heap's maximum.
        other.time_cmp(self)
    }
}

impl PartialOrd for Turn {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl MaglevTable {
    /// Builds the table for `members` (index = gateway id) with `size` slots.
    ///
    /// `size` must be prime, at least the number of members and at most [`MAGLEV_MAX_SIZE`];
    /// names must be unique. Members with weight 0 are left out of the table (but still count
    /// as ids). Control-thread work: allocates, O(M log M) expected.
    pub fn build(members: &[MaglevMember<'_>], size: usize) -> Result<Self, MaglevError> {
        if members.len() > usize::from(u16::MAX) + 1 {
            return Err(MaglevError::TooManyMembers(members.len()));
        }
        if size > MAGLEV_MAX_SIZE {
            return Err(MaglevError::TooLarge(size));
        }
        if !is_prime(size) {
            return Err(MaglevError::NotPrime(size));
        }
        if size < members.len() {
            return Err(MaglevError::TooSmall {
                size,
                members: members.len(),
            });
        }
        check_unique_names(members)?;

        // Permutation cursor per member: the next slot of its permutation to try.
        let mut next = vec![0usize; members.len()];
        let mut skip = vec![0usize; members.len()];
        let mut heap = BinaryHeap::with_capacity(members.len());
        for (id, member) in (0u16..).zip(members) {
            if member.weight == 0 {
                continue;
            }
            let name = member.name.as_bytes();
            // Both < size <= MAGLEV_MAX_SIZE, so they fit usize on every target.
            next[usize::from(id)] = super::reduce(hash64(OFFSET_SEED, name), size);
            // size >= 2 (prime), so size - 1 >= 1.
            skip[usize::from(id)] = super::reduce(hash64(SKIP_SEED, name), size - 1) + 1;
            heap.push(Turn {
                taken: 0,
                weight: member.weight,
                id,
            });
        }
        if heap.is_empty() {
            return Ok(MaglevTable {
                entries: Box::new([]),
                size,
                members: members.len(),
            });
        }

        const EMPTY: u32 = u32::MAX;
        let mut slots = vec![EMPTY; size];
        let mut filled = 0;
        while filled < size {
            let Some(mut turn) = heap.pop() else { break };
            let i = usize::from(turn.id);
            // Walk the member's permutation to its next empty slot. Terminates: the permutation
            // visits every slot and at least one is empty.
            loop {
                let slot = next[i];
                next[i] += skip[i];
                if next[i] >= size {
                    next[i] -= size;
                }
                if let Some(s @ &mut EMPTY) = slots.get_mut(slot) {
                    *s = u32::from(turn.id);
                    break;
                }
            }
            filled += 1;
            turn.taken += 1;
            heap.push(turn);
        }
        let entries = slots
            .into_iter()
            .map(|s| u16::try_from(s).unwrap_or_default())
            .collect();
        Ok(MaglevTable {
            entries,
            size,
            members: members.len(),
        })
    }

    /// The gateway for a client: `table[client_hash % M]`, or `None` when no member had a
    /// weight > 0. Allocation-free; does not look at gateway states (see
    /// [`lookup_eligible`](Self::lookup_eligible)).
    #[inline]
    pub fn lookup(&self, client_hash: u64) -> Option<u16> {
        self.entries.get(self.slot(client_hash)).copied()
    }

    /// Like [`lookup`](Self::lookup), but only ever returns an eligible gateway of `gateways`.
    ///
    /// Between a state change and the rebuild of the table, the table may still name a gateway
    /// that no longer is eligible; its clients then take the first eligible gateway in the
    /// following 32 slots (weighted like the table), else the
    /// `client_hash % eligible`-th eligible gateway. Deterministic, so appliances still agree.
    pub fn lookup_eligible(&self, client_hash: u64, gateways: &[Candidate]) -> Option<u16> {
        let eligible = |id: u16| {
            gateways
                .get(usize::from(id))
                .is_some_and(Candidate::eligible)
        };
        let start = self.slot(client_hash);
        if let Some(tail) = self.entries.get(start..) {
            let wrapped = self.entries.iter();
            if let Some(&id) = tail
                .iter()
                .chain(wrapped)
                .take(MAX_PROBES + 1)
                .find(|&&id| eligible(id))
            {
                return Some(id);
            }
        }
        let count = gateways.iter().filter(|c| c.eligible()).count();
        if count == 0 {
            return None;
        }
        // count <= gateways.len() fits u64; the remainder < count fits usize.
        nth_eligible(gateways, super::reduce(client_hash, count))
    }

    /// `M`, the number of slots.
    #[inline]
    pub fn size(&self) -> usize {
        self.size
    }

    /// Number of members the table was built for (gateway ids `0..members`).
    #[inline]
    pub fn members(&self) -> usize {
        self.members
    }

    /// The slots (gateway id per slot); empty when no member had a weight > 0.
    #[inline]
    pub fn entries(&self) -> &[u16] {
        &self.entries
    }

    /// Entries per gateway id (`members` long), for tests and show commands.
    pub fn share(&self) -> Vec<usize> {
        let mut share = vec![0; self.members];
        for &id in self.entries.iter() {
            if let Some(n) = share.get_mut(usize::from(id)) {
                *n += 1;
            }
        }
        share
    }

    #[inline]
    fn slot(&self, client_hash: u64) -> usize {
        // size >= 2 (prime); the remainder < size fits usize.
        super::reduce(client_hash, self.size.max(1))
    }
}

/// Whether `n` is prime (Maglev table sizes must be). Trial division: fine for table sizes,
/// which are checked once at configuration time.
// `is_multiple_of` needs Rust 1.87; the workspace declares 1.85.
#[allow(clippy::manual_is_multiple_of)]
pub fn is_prime(n: usize) -> bool {
    if n < 4 {
        return n >= 2;
    }
    if n % 2 == 0 {
        return false;
    }
    let mut d = 3;
    while d <= n / d {
        if n % d == 0 {
            return false;
        }
        d += 2;
    }
    true
}

fn check_unique_names(members: &[MaglevMember<'_>]) -> Result<(), MaglevError> {
    let mut order: Vec<u16> = (0u16..).take(members.len()).collect();
    let name = |id: &u16| members.get(usize::from(*id)).map_or("", |m| m.name);
    // Stable sort: equal names stay in id order, so `first < second`.
    order.sort_by(|a, b| name(a).cmp(name(b)));
    for pair in order.windows(2) {
        if let [first, second] = *pair {
            if name(&first) == name(&second) {
                return Err(MaglevError::DuplicateName {
                    name: name(&first).to_owned(),
                    first,
                    second,
                });
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schedule::{client_hash, fmix64, GatewayState};
    use proptest::prelude::*;

    fn names(n: usize) -> Vec<String> {
        (1..=n).map(|i| format!("gw{i}")).collect()
    }

    fn build(names: &[String], weights: &[u32], size: usize) -> MaglevTable {
        let members: Vec<MaglevMember<'_>> = names
            .iter()
            .zip(weights)
            .map(|(name, &weight)| MaglevMember { name, weight })
            .collect();
        MaglevTable::build(&members, size).unwrap()
    }

    /// 100 000 distinct, well-spread client hashes.
    fn clients() -> impl Iterator<Item = u64> {
        (0u32..100_000).map(|i| client_hash(&(0xc612_0000u32 + i).to_be_bytes()))
    }

    fn assert_shares(table: &MaglevTable, weights: &[u32], tolerance: f64) {
        let total: u64 = weights.iter().map(|&w| u64::from(w)).sum();
        let share = table.share();
        assert_eq!(share.iter().sum::<usize>(), table.size());
        for (id, (&got, &w)) in share.iter().zip(weights).enumerate() {
            let want = table.size() as f64 * w as f64 / total as f64;
            assert!(
                (got as f64 - want).abs() <= want * tolerance,
                "gateway {id}: {got} entries, want {want:.1} ({share:?})"
            );
        }
    }

    #[test]
    fn equal_weights_share_equally() {
        let n = names(3);
        let t = build(&n, &[1, 1, 1], MAGLEV_DEFAULT_SIZE);
        assert_eq!(t.size(), 65_537);
        assert_eq!(t.members(), 3);
        assert_shares(&t, &[1, 1, 1], 0.01);
        // Rounds of the paper: 21 846 + 21 846 + 21 845.
        assert_eq!(t.share(), vec![21_846, 21_846, 21_845]);
        // And the clients follow the table.
        let mut per_gw = [0u32; 3];
        for h in clients() {
            per_gw[usize::from(t.lookup(h).unwrap())] += 1;
        }
        assert!(
            per_gw.iter().all(|&c| (32_333..=34_333).contains(&c)),
            "{per_gw:?}"
        );
    }

    #[test]
    fn weighted_shares_are_proportional() {
        let n = names(5);
        assert_shares(&build(&n, &[3, 1], MAGLEV_DEFAULT_SIZE), &[3, 1], 0.01);
        assert_shares(
            &build(&n, &[300, 100], MAGLEV_DEFAULT_SIZE),
            &[300, 100],
            0.01,
        );
        assert_shares(
            &build(&n, &[5, 1, 1, 2, 7], MAGLEV_DEFAULT_SIZE),
            &[5, 1, 1, 2, 7],
            0.01,
        );
        assert_shares(
            &build(&n, &[u32::MAX, 1, u32::MAX / 3], 65_537),
            &[u32::MAX, 0, u32::MAX / 3],
            0.01,
        );
        // Sainte-Laguë: within one entry of the exact quota.
        let t = build(&n, &[3, 1], MAGLEV_DEFAULT_SIZE);
        let s = t.share();
        assert!(
            s[0].abs_diff(49_153) <= 1 && s[1].abs_diff(16_384) <= 1,
            "{s:?}"
        );
    }

    #[test]
    fn weight_zero_members_are_left_out() {
        let n = names(4);
        let t = build(&n, &[1, 0, 1, 0], 251);
        assert_eq!(t.share(), vec![126, 0, 125, 0]);
        assert_eq!(t.members(), 4);
    }

    #[test]
    fn builds_are_deterministic() {
        let n = names(4);
        let a = build(&n, &[1, 2, 1, 1], MAGLEV_DEFAULT_SIZE);
        let b = build(&n, &[1, 2, 1, 1], MAGLEV_DEFAULT_SIZE);
        assert_eq!(a, b);
        // Golden lookups: a change of hash or of the fill order breaks cross-appliance agreement.
        let v4 = client_hash(&[198, 18, 0, 1]);
        let v6 = client_hash(&[0x20, 0x01, 0, 2, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0x01, 0x23]);
        let t = build(&names(3), &[1, 1, 1], MAGLEV_DEFAULT_SIZE);
        let golden: Vec<Option<u16>> = [0, 1, 2, 3, 65_536, v4, v6]
            .iter()
            .map(|&h| t.lookup(h))
            .collect();
        // Values cross-checked against an independent Python implementation.
        let s = [Some(0), Some(1), Some(2)];
        assert_eq!(golden, [s[0], s[2], s[0], s[2], s[1], s[1], s[0]]);
        assert_eq!(&t.entries()[..12], &[0, 2, 0, 2, 0, 1, 1, 0, 1, 0, 2, 1]);
        assert_eq!(a.share(), vec![13_108, 26_215, 13_107, 13_107]);
        assert_eq!(&a.entries()[..8], &[0, 2, 0, 1, 0, 1, 3, 3]);
    }

    #[test]
    fn the_table_depends_on_the_names() {
        let t = build(&names(3), &[1, 1, 1], 1_009);
        let renamed = ["gw1".to_string(), "gw2".to_string(), "gw9".to_string()];
        let u = build(&renamed, &[1, 1, 1], 1_009);
        assert_ne!(t, u);
        // Same share (equal weights), different slots.
        assert_eq!(t.share(), u.share());
    }

    #[test]
    fn removing_a_gateway_moves_its_clients_and_almost_no_others() {
        for count in [3usize, 4, 8, 16] {
            let n = names(count);
            let all = vec![1; count];
            let before = build(&n, &all, MAGLEV_DEFAULT_SIZE);
            for removed in [0, count / 2, count - 1] {
                let mut weights = all.clone();
                weights[removed] = 0;
                let after = build(&n, &weights, MAGLEV_DEFAULT_SIZE);
                let (mut survivors, mut moved) = (0u32, 0u32);
                for h in clients() {
                    let (b, a) = (before.lookup(h).unwrap(), after.lookup(h).unwrap());
                    assert_ne!(usize::from(a), removed);
                    if usize::from(b) != removed {
                        survivors += 1;
                        moved += u32::from(a != b);
                    }
                }
                // Maglev is not perfectly stable (see the module docs): bound the collateral.
                assert!(
                    f64::from(moved) < f64::from(survivors) * 0.01,
                    "{count} gateways, removed {removed}: {moved} of {survivors} moved"
                );
            }
        }
    }

    #[test]
    fn adding_a_gateway_moves_about_its_share() {
        for count in [2usize, 3, 7, 15] {
            let n = names(count + 1);
            let before = build(&n[..count], &vec![1; count], MAGLEV_DEFAULT_SIZE);
            let after = build(&n, &vec![1; count + 1], MAGLEV_DEFAULT_SIZE);
            let moved = clients()
                .filter(|&h| before.lookup(h) != after.lookup(h))
                .count();
            let bound = 100_000.0 * (1.0 / (count + 1) as f64 + 0.01);
            assert!(
                (moved as f64) < bound,
                "{count}+1: {moved} moved, bound {bound}"
            );
            // Most moved clients went to the new gateway.
            let to_new = clients()
                .filter(|&h| after.lookup(h) == Some(count as u16))
                .count();
            assert!(to_new as f64 > moved as f64 * 0.95, "{to_new} of {moved}");
        }
    }

    #[test]
    fn size_must_be_prime_and_large_enough() {
        let n = names(3);
        let members: Vec<MaglevMember<'_>> = n
            .iter()
            .map(|name| MaglevMember { name, weight: 1 })
            .collect();
        for size in [0, 1, 4, 9, 65_536, 65_535, 1_000_000] {
            assert_eq!(
                MaglevTable::build(&members, size),
                Err(MaglevError::NotPrime(size))
            );
        }
        assert_eq!(
            MaglevTable::build(&members, 2),
            Err(MaglevError::TooSmall {
                size: 2,
                members: 3
            })
        );
        assert_eq!(
            MaglevTable::build(&members, usize::MAX),
            Err(MaglevError::TooLarge(usize::MAX))
        );
        for size in [3, 5, 7, 251, 65_537, 1_000_003] {
            assert_eq!(MaglevTable::build(&members, size).unwrap().size(), size);
        }
        assert_eq!(
            MaglevError::NotPrime(4).to_string(),
            "maglev table size 4 is not prime"
        );
    }

    #[test]
    fn duplicate_names_are_refused() {
        let members = [
            MaglevMember {
                name: "gw1",
                weight: 1,
            },
            MaglevMember {
                name: "gw2",
                weight: 1,
            },
            MaglevMember {
                name: "gw1",
                weight: 0,
            },
        ];
        let err = MaglevTable::build(&members, 251).unwrap_err();
        assert_eq!(
            err,
            MaglevError::DuplicateName {
                name: "gw1".into(),
                first: 0,
                second: 2
            }
        );
        assert!(err.to_string().contains("\"gw1\""));
    }

    #[test]
    fn no_weighted_member_gives_none() {
        let empty = MaglevTable::build(&[], MAGLEV_DEFAULT_SIZE).unwrap();
        let zero = build(&names(2), &[0, 0], 7);
        for t in [&empty, &zero] {
            assert!(t.entries().is_empty());
            for h in [0, 1, u64::MAX] {
                assert_eq!(t.lookup(h), None);
                assert_eq!(t.lookup_eligible(h, &[]), None);
            }
        }
        assert_eq!(zero.share(), vec![0, 0]);
        // A stale empty table still finds a gateway that has come Up since.
        let up = Candidate {
            weight: 1,
            state: GatewayState::Up,
        };
        assert_eq!(zero.lookup_eligible(5, &[up, up]), Some(1));
    }

    #[test]
    fn lookup_eligible_follows_the_table_when_it_can() {
        let t = build(&names(3), &[1, 1, 1], 1_009);
        let up = Candidate {
            weight: 1,
            state: GatewayState::Up,
        };
        for h in (0..5_000).map(fmix64) {
            assert_eq!(t.lookup_eligible(h, &[up; 3]), t.lookup(h));
        }
        // Only gateway 2 left: every client goes there, through probes or the fallback.
        let down = Candidate {
            weight: 1,
            state: GatewayState::Down,
        };
        for h in (0..5_000).map(fmix64) {
            assert_eq!(t.lookup_eligible(h, &[down, down, up]), Some(2));
        }
    }

    #[test]
    fn debug_is_a_summary() {
        let t = build(&names(2), &[1, 1], 7);
        assert_eq!(
            format!("{t:?}"),
            "MaglevTable { size: 7, members: 2, share: [4, 3] }"
        );
    }

    #[test]
    fn is_prime_small_and_large() {
        let primes: Vec<usize> = (0..30).filter(|&n| is_prime(n)).collect();
        assert_eq!(primes, [2, 3, 5, 7, 11, 13, 17, 19, 23, 29]);
        assert!(is_prime(65_537) && is_prime(16_777_213) && !is_prime(16_777_215));
        assert!(!is_prime(65_537 * 251));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Any member list builds a full table (or an error), with shares within one entry of
        /// the Sainte-Laguë quota, and lookups never panic.
        #[test]
        fn build_is_full_and_proportional(
            weights in proptest::collection::vec(prop_oneof![Just(0u32), 1u32..1_000, Just(u32::MAX)], 0..20),
            size in prop_oneof![Just(251usize), Just(1_009), Just(4_001)],
            hashes in proptest::collection::vec(any::<u64>(), 10),
        ) {
            let n = names(weights.len());
            let t = build(&n, &weights, size);
            let total: u128 = weights.iter().map(|&w| u128::from(w)).sum();
            let share = t.share();
            prop_assert_eq!(share.len(), weights.len());
            if total == 0 {
                prop_assert!(t.entries().is_empty());
            } else {
                prop_assert_eq!(share.iter().sum::<usize>(), size);
                for (&got, &w) in share.iter().zip(&weights) {
                    let want = size as f64 * w as f64 / total as f64;
                    prop_assert!((got as f64 - want).abs() <= 1.5, "{} vs {}", got, want);
                }
            }
            for h in hashes {
                match t.lookup(h) {
                    Some(id) => prop_assert!(weights[usize::from(id)] > 0),
                    None => prop_assert_eq!(total, 0),
                }
            }
        }
    }
}
