//! Gateway schedulers: which gateway a client with no affinity entry is sent to.
//!
//! Gateways of a service are numbered `0..n` (their index in the service's gateway list) and
//! are described to a scheduler as a slice of [`Candidate`]s. Only [eligible](Candidate::eligible)
//! gateways (Up with a non-zero weight) get new clients: Draining and Down gateways and weight-0
//! gateways never do. Moving the clients of a Down gateway and keeping those of a Draining one is
//! the caller's business.
//!
//! Each worker owns its [`Scheduler`]s (one per service and address family): `pick` needs no lock
//! and never allocates. The only shared state is the immutable Maglev lookup table, built by the
//! control thread ([`MaglevTable::build`]) and handed to the workers behind an `Arc`.

pub mod least_conn;
pub mod maglev;
pub mod round_robin;

use std::sync::Arc;

pub use least_conn::LeastConn;
pub use maglev::{MaglevError, MaglevMember, MaglevTable, MAGLEV_DEFAULT_SIZE};
pub use round_robin::RoundRobin;

/// Administrative/health state of a gateway.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum GatewayState {
    /// Healthy: gets new clients (if its weight is non-zero) and keeps its clients.
    #[default]
    Up,
    /// Failed or disabled: gets no new clients; the caller reschedules its clients.
    Down,
    /// Being emptied for maintenance: keeps its clients but gets no new ones.
    Draining,
}

impl GatewayState {
    /// The configuration / show-command name: `"up"`, `"down"` or `"draining"`.
    pub const fn as_str(self) -> &'static str {
        match self {
            GatewayState::Up => "up",
            GatewayState::Down => "down",
            GatewayState::Draining => "draining",
        }
    }
}

impl core::fmt::Display for GatewayState {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The scheduling algorithm of a service.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum SchedulerKind {
    /// Weighted Maglev consistent hashing of the client address ([`MaglevTable`]): the same
    /// client gets the same gateway on every appliance with the same gateway set.
    #[default]
    Maglev,
    /// Weighted least connections over this worker's active clients ([`LeastConn`]).
    LeastConn,
    /// Smooth weighted round robin ([`RoundRobin`]).
    RoundRobin,
}

/// One row of [`SCHEDULERS`].
#[derive(Clone, Copy, Debug)]
pub struct SchedulerDef {
    pub kind: SchedulerKind,
    /// The configuration and show-command name.
    pub name: &'static str,
    /// Whether the snapshot builds the shared [`MaglevTable`] for it.
    pub needs_maglev_table: bool,
    /// A per-worker scheduler for `gateways` gateways, given the table when it needs one.
    pub build: fn(gateways: usize, table: Option<Arc<MaglevTable>>) -> Option<Scheduler>,
}

/// The registry of schedulers, in [`SchedulerKind`] order: config parsing, names and
/// [`Scheduler::new`] all come from here. Adding a scheduler: a `SchedulerKind` variant, its
/// row here, its module with a `pick`, and its arm in [`Scheduler`]'s two matches.
pub const SCHEDULERS: [SchedulerDef; SchedulerKind::COUNT] = [
    SchedulerDef {
        kind: SchedulerKind::Maglev,
        name: "maglev",
        needs_maglev_table: true,
        build: |_, table| Some(Scheduler::Maglev(table?)),
    },
    SchedulerDef {
        kind: SchedulerKind::LeastConn,
        name: "least-conn",
        needs_maglev_table: false,
        build: |gateways, _| Some(Scheduler::LeastConn(LeastConn::new(gateways))),
    },
    SchedulerDef {
        kind: SchedulerKind::RoundRobin,
        name: "round-robin",
        needs_maglev_table: false,
        build: |gateways, _| Some(Scheduler::RoundRobin(RoundRobin::new(gateways))),
    },
];

impl SchedulerKind {
    pub const COUNT: usize = 3;

    /// This scheduler's row of [`SCHEDULERS`].
    pub const fn def(self) -> &'static SchedulerDef {
        &SCHEDULERS[self as usize]
    }

    /// The configuration name: `"maglev"`, `"least-conn"` or `"round-robin"`.
    pub const fn as_str(self) -> &'static str {
        self.def().name
    }

    /// The scheduler whose configuration name is `name`.
    pub fn from_name(name: &str) -> Option<SchedulerKind> {
        SCHEDULERS.iter().find(|d| d.name == name).map(|d| d.kind)
    }

    /// The configuration names, comma-separated, for error messages.
    pub fn names() -> String {
        SCHEDULERS
            .iter()
            .map(|d| d.name)
            .collect::<Vec<_>>()
            .join(", ")
    }
}

impl core::fmt::Display for SchedulerKind {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl serde::Serialize for SchedulerKind {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> serde::Deserialize<'de> for SchedulerKind {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let name = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        SchedulerKind::from_name(&name).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "unknown scheduler `{name}` ({})",
                SchedulerKind::names()
            ))
        })
    }
}

/// What a scheduler needs to know about one gateway; its index in the slice is its id.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Candidate {
    /// Relative share of new clients; 0 means "no new clients".
    pub weight: u32,
    /// Current state of the gateway.
    pub state: GatewayState,
}

impl Candidate {
    /// Whether the gateway may get new clients: Up and with a non-zero weight.
    #[inline]
    pub fn eligible(&self) -> bool {
        self.state == GatewayState::Up && self.weight > 0
    }
}

/// Stable 64-bit hash of a client address (4 or 16 bytes, network order).
///
/// The same on every appliance, build and run (no random seed), so two appliances with the
/// same gateway set choose the same gateway for the same client. It is not keyed: it spreads
/// real client addresses evenly, it does not resist an attacker choosing addresses.
#[inline]
pub fn client_hash(addr: &[u8]) -> u64 {
    hash64(CLIENT_SEED, addr)
}

/// Seed of [`client_hash`]; changing it moves every client on the next upgrade.
const CLIENT_SEED: u64 = 0x7670_6e6c_622d_636c; // "vpnlb-cl"

/// Fixed-seed 64-bit hash: FNV-1a 64 over the bytes, started from a mixed seed, then the
/// MurmurHash3 `fmix64` finalizer (FNV-1a alone mixes its last bytes into the high bits only,
/// which would make `hash % M` of consecutive addresses poorly spread).
///
/// Part of the wire contract between appliances: never change it.
#[inline]
pub(crate) fn hash64(seed: u64, data: &[u8]) -> u64 {
    const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut h = FNV_OFFSET ^ fmix64(seed);
    for &b in data {
        h ^= u64::from(b);
        h = h.wrapping_mul(FNV_PRIME);
    }
    // The length keeps "" and "\0" (and prefixes) apart before the final avalanche.
    fmix64(h ^ data.len() as u64)
}

/// MurmurHash3's 64-bit finalizer: every input bit affects every output bit.
#[inline]
pub(crate) const fn fmix64(mut k: u64) -> u64 {
    k ^= k >> 33;
    k = k.wrapping_mul(0xff51_afd7_ed55_8ccd);
    k ^= k >> 33;
    k = k.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    k ^= k >> 33;
    k
}

/// Per-worker scheduler for one service and one address family.
#[derive(Clone, Debug)]
pub enum Scheduler {
    /// Consistent hashing through a table shared (read-only) by all workers.
    Maglev(Arc<MaglevTable>),
    /// Weighted least connections.
    LeastConn(LeastConn),
    /// Smooth weighted round robin.
    RoundRobin(RoundRobin),
}

impl Scheduler {
    /// A scheduler of `kind` for `gateways` gateways; `table` is used (and required) for Maglev.
    ///
    /// Returns `None` for [`SchedulerKind::Maglev`] without a table.
    pub fn new(
        kind: SchedulerKind,
        gateways: usize,
        table: Option<Arc<MaglevTable>>,
    ) -> Option<Self> {
        (kind.def().build)(gateways, table)
    }

    /// Which algorithm this is.
    pub fn kind(&self) -> SchedulerKind {
        match self {
            Scheduler::Maglev(_) => SchedulerKind::Maglev,
            Scheduler::LeastConn(_) => SchedulerKind::LeastConn,
            Scheduler::RoundRobin(_) => SchedulerKind::RoundRobin,
        }
    }

    /// Picks the gateway for a new client, or `None` when no candidate is eligible.
    ///
    /// `active[i]` = clients this worker currently has on gateway i (maintained by the caller;
    /// a missing entry counts as 0); only least-conn reads it. Maglev maps `client_hash` to a
    /// gateway, least-conn only breaks ties with it, round robin ignores it. Never allocates;
    /// the result is always the id of an eligible candidate.
    ///
    /// Maglev: the table is rebuilt by the control thread after a state change, so it may still
    /// name a gateway that has just gone Down or Draining; such a client is then placed by
    /// [`MaglevTable::lookup_eligible`] (deterministic, so appliances still agree).
    #[inline]
    pub fn pick(
        &mut self,
        client_hash: u64,
        gateways: &[Candidate],
        active: &[u32],
    ) -> Option<u16> {
        match self {
            Scheduler::Maglev(table) => table.lookup_eligible(client_hash, gateways),
            Scheduler::LeastConn(lc) => lc.pick(client_hash, gateways, active),
            Scheduler::RoundRobin(rr) => rr.pick(gateways),
        }
    }
}

/// `hash mod n` as an index: below `n`, so it fits `usize` (the remainder of a `u64` by a
/// `usize` widened to `u64`). `n` must not be 0.
#[inline]
#[allow(clippy::cast_possible_truncation)]
pub(crate) fn reduce(hash: u64, n: usize) -> usize {
    (hash % n as u64) as usize
}

/// Id of the `nth` (0-based) eligible candidate, if there are more than `nth`.
#[inline]
fn nth_eligible(gateways: &[Candidate], nth: usize) -> Option<u16> {
    gateways
        .iter()
        .enumerate()
        .filter(|(_, c)| c.eligible())
        .nth(nth)
        .and_then(|(i, _)| u16::try_from(i).ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const UP1: Candidate = Candidate {
        weight: 1,
        state: GatewayState::Up,
    };

    fn ineligible() -> [Candidate; 4] {
        [
            Candidate {
                weight: 1,
                state: GatewayState::Down,
            },
            Candidate {
                weight: 1,
                state: GatewayState::Draining,
            },
            Candidate {
                weight: 0,
                state: GatewayState::Up,
            },
            Candidate {
                weight: 0,
                state: GatewayState::Down,
            },
        ]
    }

    fn table(n: usize) -> Arc<MaglevTable> {
        let names: Vec<String> = (1..=n).map(|i| format!("gw{i}")).collect();
        let members: Vec<MaglevMember<'_>> = names
            .iter()
            .map(|name| MaglevMember { name, weight: 1 })
            .collect();
        Arc::new(MaglevTable::build(&members, 251).unwrap())
    }

    #[test]
    fn eligible_is_up_and_weighted() {
        assert!(UP1.eligible());
        for c in ineligible() {
            assert!(!c.eligible(), "{c:?}");
        }
    }

    #[test]
    fn registry_is_in_enum_order_and_builds_its_kind() {
        for (i, d) in SCHEDULERS.iter().enumerate() {
            assert_eq!(d.kind as usize, i, "{}", d.name);
            assert_eq!(SchedulerKind::from_name(d.name), Some(d.kind));
            let built = Scheduler::new(d.kind, 3, Some(table(3))).unwrap();
            assert_eq!(built.kind(), d.kind);
            assert_eq!(
                Scheduler::new(d.kind, 3, None).is_none(),
                d.needs_maglev_table,
                "{}",
                d.name
            );
        }
        assert_eq!(SchedulerKind::from_name("wrr"), None);
        assert_eq!(SchedulerKind::names(), "maglev, least-conn, round-robin");
        assert_eq!(SchedulerKind::default(), SchedulerKind::Maglev);
    }

    #[test]
    fn serde_names() {
        // serde_json is not a dependency of this crate: check the names through the helpers,
        // which the derive attributes must agree with.
        assert_eq!(SchedulerKind::LeastConn.to_string(), "least-conn");
        assert_eq!(SchedulerKind::RoundRobin.as_str(), "round-robin");
        assert_eq!(SchedulerKind::Maglev.as_str(), "maglev");
        assert_eq!(GatewayState::Draining.to_string(), "draining");
        assert_eq!(GatewayState::default(), GatewayState::Up);
    }

    #[test]
    fn client_hash_golden() {
        // Changing these breaks cross-appliance (and cross-version) agreement. Cross-checked
        // against an independent Python implementation of the same construction.
        assert_eq!(client_hash(&[198, 18, 0, 1]), 0x9076_7d4b_ad83_d926);
        assert_eq!(client_hash(&[198, 18, 7, 42]), 0x929e_7ccd_48ac_fbda);
        let v6 = [0x20, 0x01, 0, 2, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0x01, 0x23];
        assert_eq!(client_hash(&v6), 0x397b_bac0_b18a_0770);
        assert_eq!(client_hash(&[]), 0xb78e_b6a8_1607_3711);
        assert_ne!(client_hash(&[0]), client_hash(&[]));
    }

    #[test]
    fn client_hash_spreads_consecutive_addresses() {
        // 2^16 consecutive IPv4 clients (198.18.0.0/16) into 3, 16 and 65 537 buckets.
        for buckets in [3u64, 16, 65_537] {
            let mut count = vec![0u32; buckets as usize];
            for i in 0u32..65_536 {
                let a = (0xc612_0000u32 | i).to_be_bytes();
                count[(client_hash(&a) % buckets) as usize] += 1;
            }
            let mean = 65_536.0 / buckets as f64;
            if buckets <= 16 {
                for &c in &count {
                    assert!(
                        (f64::from(c) - mean).abs() < mean * 0.03,
                        "{buckets}: {count:?}"
                    );
                }
            } else {
                // ~1 per bucket: a uniform hash leaves ~e^-1 of the buckets empty.
                let empty = count.iter().filter(|&&c| c == 0).count() as f64;
                assert!(
                    (empty / buckets as f64 - 0.368).abs() < 0.01,
                    "empty {empty}"
                );
            }
        }
        // The high bits too (for any caller that shifts rather than reduces).
        let mut top = [0u32; 16];
        for i in 0u32..65_536 {
            top[(client_hash(&(0xc612_0000u32 | i).to_be_bytes()) >> 60) as usize] += 1;
        }
        assert!(top.iter().all(|&c| (3_900..4_300).contains(&c)), "{top:?}");
    }

    #[test]
    fn no_eligible_candidate_gives_none_for_every_kind() {
        let gws = ineligible();
        let mut scheds = [
            Scheduler::new(SchedulerKind::Maglev, 4, Some(table(4))).unwrap(),
            Scheduler::new(SchedulerKind::LeastConn, 4, None).unwrap(),
            Scheduler::new(SchedulerKind::RoundRobin, 4, None).unwrap(),
        ];
        for s in &mut scheds {
            for h in 0..1_000u64 {
                assert_eq!(s.pick(fmix64(h), &gws, &[0; 4]), None, "{:?}", s.kind());
                assert_eq!(s.pick(fmix64(h), &[], &[]), None, "{:?}", s.kind());
            }
        }
    }

    #[test]
    fn new_and_kind() {
        assert!(Scheduler::new(SchedulerKind::Maglev, 3, None).is_none());
        for kind in [
            SchedulerKind::Maglev,
            SchedulerKind::LeastConn,
            SchedulerKind::RoundRobin,
        ] {
            assert_eq!(
                Scheduler::new(kind, 3, Some(table(3))).unwrap().kind(),
                kind
            );
        }
    }

    #[test]
    fn maglev_pick_skips_gateways_gone_ineligible_since_the_build() {
        // Table built with 4 Up gateways; gw 1 and 3 have gone Down/Draining since.
        let mut s = Scheduler::Maglev(table(4));
        let mut gws = [UP1; 4];
        gws[1].state = GatewayState::Down;
        gws[3].state = GatewayState::Draining;
        let mut seen = [0u32; 4];
        for h in 0..10_000u64 {
            let g = s.pick(fmix64(h), &gws, &[]).unwrap();
            seen[usize::from(g)] += 1;
        }
        assert_eq!((seen[1], seen[3]), (0, 0));
        assert!(seen[0] > 4_000 && seen[2] > 4_000, "{seen:?}");
    }

    #[test]
    fn nth_eligible_counts_only_eligible() {
        let gws = [ineligible()[0], UP1, ineligible()[2], UP1];
        assert_eq!(nth_eligible(&gws, 0), Some(1));
        assert_eq!(nth_eligible(&gws, 1), Some(3));
        assert_eq!(nth_eligible(&gws, 2), None);
    }

    fn state() -> impl Strategy<Value = GatewayState> {
        prop_oneof![
            Just(GatewayState::Up),
            Just(GatewayState::Down),
            Just(GatewayState::Draining)
        ]
    }

    fn candidates() -> impl Strategy<Value = Vec<Candidate>> {
        proptest::collection::vec(
            (prop_oneof![Just(0u32), 1u32..10, Just(u32::MAX)], state())
                .prop_map(|(weight, state)| Candidate { weight, state }),
            0..12,
        )
    }

    proptest! {
        /// Every kind returns an eligible candidate exactly when there is one, whatever the
        /// slice lengths (which the caller may get wrong) and the table's member count.
        #[test]
        fn pick_returns_an_eligible_candidate_iff_one_exists(
            gws in candidates(),
            active in proptest::collection::vec(any::<u32>(), 0..12),
            hashes in proptest::collection::vec(any::<u64>(), 1..20),
            new_size in 0usize..14,
            table_size in 1usize..12,
        ) {
            let any_eligible = gws.iter().any(Candidate::eligible);
            let mut scheds = [
                Scheduler::Maglev(table(table_size)),
                Scheduler::new(SchedulerKind::LeastConn, new_size, None).unwrap(),
                Scheduler::new(SchedulerKind::RoundRobin, gws.len(), None).unwrap(),
            ];
            for s in &mut scheds {
                for &h in &hashes {
                    match s.pick(h, &gws, &active) {
                        Some(g) => prop_assert!(gws[usize::from(g)].eligible()),
                        None => prop_assert!(!any_eligible, "{:?} found none", s.kind()),
                    }
                }
            }
        }

        #[test]
        fn client_hash_never_panics(addr in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = client_hash(&addr);
        }
    }
}
