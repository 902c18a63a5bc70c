//! The dynamic neighbor cache (ARP for IPv4, neighbor discovery for IPv6).
//!
//! Owned by the control thread, not by workers: workers forward with the neighbor entries of
//! their snapshot and report misses; the control thread resolves, refreshes and expires entries
//! here and publishes a new snapshot when the set of usable entries changes. It is a pure state
//! machine over a clock in milliseconds: it says which probes to send, the caller sends them.
//!
//! Rules (RFC 826 / RFC 4861 in spirit, simplified for an appliance with few neighbors):
//! - Static entries from the configuration always win: never probed, never replaced by learning.
//! - A miss starts resolution: a broadcast ARP request / multicast solicitation, repeated every
//!   `retransmit_ms` up to `max_probes` times; then the address is *failed* for `failed_hold_ms`,
//!   during which further misses send nothing (a flood to a dead address costs no probes).
//! - A learned entry is usable for `reachable_ms`; from `reachable_ms - refresh_ms` on, while
//!   still usable, it is re-probed by unicast; an entry nobody confirms by `reachable_ms` is
//!   removed.
//! - Every dynamic entry belongs to one interface: the one whose connected subnet holds its
//!   address (longest prefix, as [`Snapshot::resolution_target`] picks it; the caller gives the
//!   subnets with [`NeighborCache::set_subnets`]).
//! - Learning (ARP reply or gratuitous ARP sender, NA target) is refused, and counted by
//!   [`Refusal`], unless the address is on a connected subnet of the interface the frame came in
//!   on (`off_subnet`), an entry for it exists (`unsolicited_ignored`: only addresses being
//!   resolved or already known are learned, whatever the frame claims about being solicited),
//!   it is not static (`static_override_ignored`) and that entry belongs to the frame's
//!   interface (`wrong_interface`). So a frame from the client side never creates or changes a
//!   backend-side neighbor, and traffic nobody asked for cannot fill the cache.
//! - A neighbor asking for one of our addresses (ARP request, neighbor solicitation: the
//!   workers answer them and report the sender, [`Heard`]) is learned as the kernel does, as a
//!   *stale* entry ([`NeighborCache::heard`]): usable at once, under the same rules but for
//!   being asked for (its address on a subnet of the interface it came in on, that subnet the
//!   address's own, not static). It takes a free place only, and is the first reachable
//!   entry to go when a resolution needs room, until an answer to our refresh confirms it.
//! - At most `max_entries` dynamic entries ([`DEFAULT_MAX_ENTRIES`]; static ones are not
//!   counted). A new resolution when full evicts the oldest failed entry, else the oldest
//!   incomplete one (`evicted`); when every dynamic entry is reachable it is refused
//!   (`cache_full`).
//!
//! [`Snapshot::resolution_target`]: crate::model::Snapshot::resolution_target

use std::collections::HashMap;
use std::net::IpAddr;

use crate::model::IpCidr;
use crate::wire::ethernet::EthernetAddress;

/// Dynamic entries (learned, being resolved, or failed and on hold) kept at most by default.
/// Far more than the next hops an appliance has (gateways, routers, redirected clients'
/// routers); a flood of misses for distinct addresses cannot grow the cache beyond it.
pub const DEFAULT_MAX_ENTRIES: usize = 4096;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NeighborTimers {
    pub reachable_ms: u64,
    pub refresh_ms: u64,
    pub retransmit_ms: u64,
    pub max_probes: u32,
    pub failed_hold_ms: u64,
}

impl Default for NeighborTimers {
    fn default() -> Self {
        NeighborTimers {
            reachable_ms: 300_000,
            refresh_ms: 30_000,
            retransmit_ms: 1_000,
            max_probes: 3,
            failed_hold_ms: 20_000,
        }
    }
}

/// A neighbor heard asking for one of our addresses (an ARP request's sender, a neighbor
/// solicitation's source and link-layer address option) on `interface`: the worker answered
/// it; the cache learns it with [`NeighborCache::heard`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Heard {
    pub interface: u16,
    pub address: IpAddr,
    pub mac: EthernetAddress,
}

/// What a worker tells the control thread about neighbors.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NeighborReport {
    /// A packet to this destination waits for its next hop's MAC: resolve it.
    Miss(IpAddr),
    /// A neighbor asked for one of our addresses: learn it.
    Heard(Heard),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Static(EthernetAddress),
    Reachable {
        mac: EthernetAddress,
        confirmed_ms: u64,
        next_refresh_ms: u64,
    },
    Incomplete {
        probes: u32,
        next_probe_ms: u64,
        since_ms: u64,
    },
    Failed {
        until_ms: u64,
    },
}

/// A probe the caller must send.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Probe {
    pub address: IpAddr,
    /// `Some` for a unicast refresh of a known entry, `None` for broadcast/multicast resolution.
    pub unicast: Option<EthernetAddress>,
}

/// Counters of the cache's life.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct NeighborCounters {
    pub resolved: u64,
    pub probes_sent: u64,
    pub failed: u64,
    pub expired: u64,
    pub mac_changed: u64,
    /// Answers for an address with no entry (nothing asked for it): not learned.
    pub unsolicited_ignored: u64,
    /// Answers that would change a static entry.
    pub static_override_ignored: u64,
    /// Answers for an address on no connected subnet of the interface they came in on.
    pub off_subnet: u64,
    /// Answers for an entry that belongs to another interface (e.g. a client-side frame for a
    /// backend neighbor).
    pub wrong_interface: u64,
    /// Resolutions refused because every dynamic entry is reachable and the cache is full;
    /// and entries from requests refused because the cache is full.
    pub cache_full: u64,
    /// Entries learned from a request to us (ARP request, neighbor solicitation).
    pub heard: u64,
    /// Failed or incomplete entries dropped to make room for a new resolution.
    pub evicted: u64,
}

/// Why [`NeighborCache::learn`] did not take an answer, or [`NeighborCache::heard`] a
/// request (each has its counter).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    OffSubnet,
    Unsolicited,
    StaticOverride,
    WrongInterface,
    /// A new entry from a request, with the cache full.
    CacheFull,
}

impl Refusal {
    /// The counter's name, for logs.
    pub fn name(self) -> &'static str {
        match self {
            Refusal::OffSubnet => "off_subnet",
            Refusal::Unsolicited => "unsolicited_ignored",
            Refusal::StaticOverride => "static_override_ignored",
            Refusal::WrongInterface => "wrong_interface",
            Refusal::CacheFull => "cache_full",
        }
    }
}

/// One entry as shown to operators.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NeighborView {
    pub address: IpAddr,
    pub mac: Option<EthernetAddress>,
    pub state: &'static str,
    /// The interface a dynamic entry belongs to (`None` for static entries).
    pub interface: Option<u16>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Entry {
    state: State,
    /// The interface the address is resolved and learned on; unused for static entries.
    interface: u16,
    /// Learned from a request it sent us, not from an answer to ours (the kernel's STALE):
    /// usable, and the first reachable entries to go when a resolution needs room.
    heard: bool,
}

#[derive(Clone, Debug)]
pub struct NeighborCache {
    timers: NeighborTimers,
    entries: HashMap<IpAddr, Entry>,
    /// Connected subnets and their interfaces, in configuration order.
    subnets: Vec<(u16, IpCidr)>,
    max_entries: usize,
    /// How many entries are static (the rest count against `max_entries`).
    statics: usize,
    counters: NeighborCounters,
    /// Set when the usable entries changed since the last `take_changed`.
    changed: bool,
}

impl Default for NeighborCache {
    fn default() -> Self {
        NeighborCache::new(NeighborTimers::default(), [])
    }
}

fn static_entry(mac: EthernetAddress) -> Entry {
    Entry {
        state: State::Static(mac),
        interface: 0,
        heard: false,
    }
}

impl NeighborCache {
    pub fn new(
        timers: NeighborTimers,
        statics: impl IntoIterator<Item = (IpAddr, EthernetAddress)>,
    ) -> Self {
        let entries: HashMap<IpAddr, Entry> = statics
            .into_iter()
            .map(|(a, m)| (a, static_entry(m)))
            .collect();
        NeighborCache {
            timers,
            statics: entries.len(),
            entries,
            subnets: Vec::new(),
            max_entries: DEFAULT_MAX_ENTRIES,
            counters: NeighborCounters::default(),
            changed: true,
        }
    }

    /// Sets the most dynamic entries kept (at least one).
    pub fn set_max_entries(&mut self, max: usize) {
        self.max_entries = max.max(1);
    }

    /// Replaces the static entries (a configuration reload); learned entries stay unless an
    /// address became static.
    pub fn set_statics(&mut self, statics: impl IntoIterator<Item = (IpAddr, EthernetAddress)>) {
        self.entries
            .retain(|_, e| !matches!(e.state, State::Static(_)));
        for (a, m) in statics {
            self.entries.insert(a, static_entry(m));
        }
        self.statics = self.count_statics();
        self.changed = true;
    }

    fn count_statics(&self) -> usize {
        let is_static = |e: &&Entry| matches!(e.state, State::Static(_));
        self.entries.values().filter(is_static).count()
    }

    /// The connected subnets, `(interface, subnet)` in configuration order (at start and on
    /// every reload). Dynamic entries whose address now belongs to another interface, or to
    /// none, are dropped; they are resolved again on their next miss.
    pub fn set_subnets(&mut self, subnets: impl IntoIterator<Item = (u16, IpCidr)>) {
        self.subnets = subnets.into_iter().collect();
        let subnets = &self.subnets;
        let mut changed = false;
        self.entries.retain(|&a, e| {
            let keep =
                matches!(e.state, State::Static(_)) || connected(subnets, a) == Some(e.interface);
            changed |= !keep && matches!(e.state, State::Reachable { .. });
            keep
        });
        self.changed |= changed;
    }

    /// The interface whose connected subnet holds `address` (longest prefix), if any.
    pub fn interface_of(&self, address: IpAddr) -> Option<u16> {
        connected(&self.subnets, address)
    }

    /// The MAC to use for `address`, if any.
    pub fn lookup(&self, address: IpAddr) -> Option<EthernetAddress> {
        match self.entries.get(&address)?.state {
            State::Static(m) | State::Reachable { mac: m, .. } => Some(m),
            _ => None,
        }
    }

    /// A worker could not forward to `address`: start resolving it (on the interface whose
    /// subnet holds it) unless already in progress, known, recently failed, or on no connected
    /// subnet. Returns the probe to send now, if any.
    pub fn miss(&mut self, address: IpAddr, now_ms: u64) -> Option<Probe> {
        match self.entries.get(&address).map(|e| e.state) {
            Some(State::Static(_) | State::Reachable { .. } | State::Incomplete { .. }) => {
                return None
            }
            Some(State::Failed { until_ms }) if now_ms < until_ms => return None,
            Some(State::Failed { .. }) => {}
            None => {
                self.interface_of(address)?;
                if self.entries.len() - self.statics >= self.max_entries && !self.evict_one() {
                    self.counters.cache_full += 1;
                    return None;
                }
            }
        }
        let interface = self.interface_of(address)?;
        self.entries.insert(
            address,
            Entry {
                state: State::Incomplete {
                    probes: 1,
                    next_probe_ms: now_ms + self.timers.retransmit_ms,
                    since_ms: now_ms,
                },
                interface,
                heard: false,
            },
        );
        self.counters.probes_sent += 1;
        Some(Probe {
            address,
            unicast: None,
        })
    }

    /// Drops the oldest failed entry, else the oldest incomplete one, else the oldest entry
    /// only heard from; false when every dynamic entry is reachable by an answer to us.
    fn evict_one(&mut self) -> bool {
        // (rank, age): failed before incomplete before heard, older first.
        let victim = self
            .entries
            .iter()
            .filter_map(|(a, e)| match e.state {
                State::Failed { until_ms } => Some(((0, until_ms), *a)),
                State::Incomplete { since_ms, .. } => Some(((1, since_ms), *a)),
                State::Reachable { confirmed_ms, .. } if e.heard => Some(((2, confirmed_ms), *a)),
                _ => None,
            })
            .min_by_key(|(k, _)| *k);
        match victim {
            Some((_, a)) => {
                self.entries.remove(&a);
                self.counters.evicted += 1;
                true
            }
            None => false,
        }
    }

    /// A neighbor told us its MAC (ARP reply or gratuitous ARP, solicited or unsolicited NA) in
    /// a frame that came in on `interface`. Whether the frame claims to be solicited does not
    /// matter: only an entry being resolved or already known is learned. Refusals are counted
    /// (see the module's rules).
    pub fn learn(
        &mut self,
        address: IpAddr,
        mac: EthernetAddress,
        interface: u16,
        now_ms: u64,
    ) -> Result<(), Refusal> {
        self.admit_on_subnet(address, interface)?;
        let Some(entry) = self.entries.get(&address).copied() else {
            self.counters.unsolicited_ignored += 1;
            return Err(Refusal::Unsolicited);
        };
        if let State::Static(m) = entry.state {
            if m == mac {
                return Ok(());
            }
            self.counters.static_override_ignored += 1;
            return Err(Refusal::StaticOverride);
        }
        if entry.interface != interface {
            self.counters.wrong_interface += 1;
            return Err(Refusal::WrongInterface);
        }
        match entry.state {
            State::Reachable { mac: old, .. } if old != mac => {
                self.counters.mac_changed += 1;
                self.changed = true;
            }
            State::Reachable { .. } => {}
            _ => {
                self.counters.resolved += 1;
                self.changed = true;
            }
        }
        self.insert_reachable(address, mac, interface, now_ms, false);
        Ok(())
    }

    /// What an answer and a request must both pass first: `address` is on a subnet of
    /// `interface` (counted as `off_subnet` when not).
    fn admit_on_subnet(&mut self, address: IpAddr, interface: u16) -> Result<(), Refusal> {
        let on_subnet = self
            .subnets
            .iter()
            .any(|(i, c)| *i == interface && c.contains(address));
        if !on_subnet {
            self.counters.off_subnet += 1;
            return Err(Refusal::OffSubnet);
        }
        Ok(())
    }

    /// `address` is at `mac` on `interface` as of `now_ms` (refreshed before its lifetime
    /// ends); `heard`: only from its own request, not an answer to ours.
    fn insert_reachable(
        &mut self,
        address: IpAddr,
        mac: EthernetAddress,
        interface: u16,
        now_ms: u64,
        heard: bool,
    ) {
        let state = State::Reachable {
            mac,
            confirmed_ms: now_ms,
            next_refresh_ms: now_ms
                + self
                    .timers
                    .reachable_ms
                    .saturating_sub(self.timers.refresh_ms),
        };
        self.entries.insert(
            address,
            Entry {
                state,
                interface,
                heard,
            },
        );
    }

    /// A neighbor on `interface` asked for one of our addresses (ARP request, neighbor
    /// solicitation), which tells its MAC as an answer would: learned as the kernel does (a
    /// STALE entry), under the rules answers follow but for being asked for: on a subnet of
    /// `interface` that is the address's own, not static. A new entry takes a free place only
    /// (`cache_full` when none: it never pushes out a resolution) and is the first to go when
    /// a resolution needs room, until an answer to our refresh confirms it.
    pub fn heard(
        &mut self,
        address: IpAddr,
        mac: EthernetAddress,
        interface: u16,
        now_ms: u64,
    ) -> Result<(), Refusal> {
        if let Some(was_heard) = self.entries.get(&address).map(|e| e.heard) {
            // Known, being resolved or failed: the request is as good as an answer (same
            // checks); an entry only heard from stays so until an answer to us.
            self.learn(address, mac, interface, now_ms)?;
            if let Some(e) = self.entries.get_mut(&address) {
                e.heard = was_heard;
            }
            return Ok(());
        }
        self.admit_on_subnet(address, interface)?;
        if self.interface_of(address) != Some(interface) {
            self.counters.wrong_interface += 1;
            return Err(Refusal::WrongInterface);
        }
        if self.entries.len() - self.statics >= self.max_entries {
            self.counters.cache_full += 1;
            return Err(Refusal::CacheFull);
        }
        self.counters.heard += 1;
        self.changed = true;
        self.insert_reachable(address, mac, interface, now_ms, true);
        Ok(())
    }

    /// Advances timers: retransmissions, refreshes, failures and expiries. Returns the probes to
    /// send.
    pub fn tick(&mut self, now_ms: u64) -> Vec<Probe> {
        let t = self.timers;
        let mut probes = Vec::new();
        let mut changed = false;
        let counters = &mut self.counters;
        self.entries.retain(|&address, entry| match entry.state {
            State::Static(_) => true,
            State::Reachable {
                mac,
                confirmed_ms,
                next_refresh_ms,
            } => {
                if now_ms >= confirmed_ms + t.reachable_ms {
                    counters.expired += 1;
                    changed = true;
                    return false;
                }
                if now_ms >= next_refresh_ms {
                    probes.push(Probe {
                        address,
                        unicast: Some(mac),
                    });
                    counters.probes_sent += 1;
                    entry.state = State::Reachable {
                        mac,
                        confirmed_ms,
                        next_refresh_ms: now_ms + t.retransmit_ms,
                    };
                }
                true
            }
            State::Incomplete {
                probes: sent,
                next_probe_ms,
                since_ms,
            } => {
                if now_ms < next_probe_ms {
                    return true;
                }
                if sent >= t.max_probes {
                    counters.failed += 1;
                    entry.state = State::Failed {
                        until_ms: now_ms + t.failed_hold_ms,
                    };
                    return true;
                }
                probes.push(Probe {
                    address,
                    unicast: None,
                });
                counters.probes_sent += 1;
                entry.state = State::Incomplete {
                    probes: sent + 1,
                    next_probe_ms: now_ms + t.retransmit_ms,
                    since_ms,
                };
                true
            }
            State::Failed { until_ms } => now_ms < until_ms,
        });
        self.changed |= changed;
        probes
    }

    /// Whether usable entries changed since the last call (then a new snapshot is due).
    pub fn take_changed(&mut self) -> bool {
        std::mem::take(&mut self.changed)
    }

    /// Every usable entry (static and learned), for the workers' snapshot.
    pub fn usable(&self) -> impl Iterator<Item = (IpAddr, EthernetAddress)> + '_ {
        self.entries.iter().filter_map(|(a, e)| match e.state {
            State::Static(m) | State::Reachable { mac: m, .. } => Some((*a, m)),
            _ => None,
        })
    }

    /// Every entry, for `show neighbors`, sorted by address.
    pub fn view(&self) -> Vec<NeighborView> {
        let mut v: Vec<NeighborView> = self
            .entries
            .iter()
            .map(|(a, e)| {
                let (mac, state) = match e.state {
                    State::Static(m) => (Some(m), "static"),
                    State::Reachable { mac, .. } if e.heard => (Some(mac), "stale"),
                    State::Reachable { mac, .. } => (Some(mac), "reachable"),
                    State::Incomplete { .. } => (None, "incomplete"),
                    State::Failed { .. } => (None, "failed"),
                };
                NeighborView {
                    address: *a,
                    mac,
                    state,
                    interface: (state != "static").then_some(e.interface),
                }
            })
            .collect();
        v.sort_by_key(|e| e.address);
        v
    }

    pub fn counters(&self) -> NeighborCounters {
        self.counters
    }
}

/// The interface whose subnet in `subnets` holds `address`, by longest prefix (the last of
/// equals, as `Snapshot::resolution_target` picks).
fn connected(subnets: &[(u16, IpCidr)], address: IpAddr) -> Option<u16> {
    subnets
        .iter()
        .filter(|(_, c)| c.contains(address))
        .max_by_key(|(_, c)| c.prefix)
        .map(|(i, _)| *i)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mac(b: u8) -> EthernetAddress {
        EthernetAddress([2, 0, 0, 0, 2, b])
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    const CLIENT: u16 = 0;
    const BACKEND: u16 = 1;

    /// The lab's shape: a client side and a backend side, IPv4 and IPv6 on each.
    fn subnets() -> Vec<(u16, IpCidr)> {
        [
            (CLIENT, "198.18.0.1/24"),
            (CLIENT, "2001:1::1/64"),
            (BACKEND, "198.19.0.1/16"),
            (BACKEND, "2001:2:0:2::1/64"),
        ]
        .into_iter()
        .map(|(i, c)| (i, c.parse().unwrap()))
        .collect()
    }

    fn cache(
        timers: NeighborTimers,
        statics: impl IntoIterator<Item = (IpAddr, EthernetAddress)>,
    ) -> NeighborCache {
        let mut c = NeighborCache::new(timers, statics);
        c.set_subnets(subnets());
        c
    }

    #[test]
    fn a_miss_resolves_after_a_reply() {
        let mut c = cache(NeighborTimers::default(), []);
        let gw = ip("198.19.0.11");
        assert_eq!(c.lookup(gw), None);
        assert_eq!(
            c.miss(gw, 0),
            Some(Probe {
                address: gw,
                unicast: None
            })
        );
        // A second miss while resolving sends nothing.
        assert_eq!(c.miss(gw, 10), None);
        c.learn(gw, mac(0x0b), BACKEND, 20).unwrap();
        assert_eq!(c.lookup(gw), Some(mac(0x0b)));
        assert!(c.take_changed());
        assert!(!c.take_changed());
        assert_eq!(c.counters().resolved, 1);
    }

    #[test]
    fn unanswered_resolution_retries_then_fails_then_holds() {
        let t = NeighborTimers::default();
        let mut c = cache(t, []);
        let a = ip("2001:2:0:2::99");
        assert!(c.miss(a, 0).is_some());
        assert_eq!(c.tick(500), vec![]);
        assert_eq!(c.tick(1_000).len(), 1, "second probe");
        assert_eq!(c.tick(2_000).len(), 1, "third probe");
        assert_eq!(c.tick(3_000), vec![], "gave up");
        assert_eq!(c.counters().failed, 1);
        assert_eq!(c.counters().probes_sent, 3);
        // Misses during the hold send nothing; after it, resolution starts again.
        assert_eq!(c.miss(a, 10_000), None);
        c.tick(3_000 + t.failed_hold_ms);
        assert!(c.miss(a, 3_001 + t.failed_hold_ms).is_some());
    }

    #[test]
    fn learned_entries_are_refreshed_by_unicast_and_expire_unconfirmed() {
        let t = NeighborTimers::default();
        let mut c = cache(t, []);
        let a = ip("198.18.0.50");
        c.miss(a, 0);
        c.learn(a, mac(0x50), CLIENT, 0).unwrap();
        let refresh_at = t.reachable_ms - t.refresh_ms;
        assert_eq!(c.tick(refresh_at - 1), vec![]);
        assert_eq!(
            c.tick(refresh_at),
            vec![Probe {
                address: a,
                unicast: Some(mac(0x50))
            }]
        );
        // Answered: confirmed again, good for another period.
        c.learn(a, mac(0x50), CLIENT, refresh_at + 5).unwrap();
        c.tick(t.reachable_ms + 10);
        assert_eq!(c.lookup(a), Some(mac(0x50)));
        // Not answered any more: gone after reachable_ms.
        c.tick(refresh_at + 5 + t.reachable_ms);
        assert_eq!(c.lookup(a), None);
        assert_eq!(c.counters().expired, 1);
        assert!(c.take_changed());
    }

    #[test]
    fn static_entries_win_and_are_never_probed() {
        let gw = ip("198.19.0.12");
        let mut c = cache(NeighborTimers::default(), [(gw, mac(0x0c))]);
        assert_eq!(
            c.learn(gw, mac(0x99), BACKEND, 0),
            Err(Refusal::StaticOverride)
        );
        assert_eq!(c.lookup(gw), Some(mac(0x0c)));
        assert_eq!(c.counters().static_override_ignored, 1);
        assert_eq!(c.miss(gw, 0), None);
        assert_eq!(c.tick(u64::MAX / 2), vec![]);
        assert_eq!(c.lookup(gw), Some(mac(0x0c)));
    }

    #[test]
    fn unsolicited_announcements_do_not_fill_the_cache() {
        let mut c = cache(NeighborTimers::default(), []);
        for i in 0..100u8 {
            let a = IpAddr::from([198, 18, 0, i]);
            assert_eq!(c.learn(a, mac(i), CLIENT, 0), Err(Refusal::Unsolicited));
        }
        assert_eq!(c.usable().count(), 0);
        assert_eq!(c.counters().unsolicited_ignored, 100);
    }

    #[test]
    fn a_changed_mac_is_taken_and_counted() {
        let mut c = cache(NeighborTimers::default(), []);
        let a = ip("198.18.0.254");
        c.miss(a, 0);
        c.learn(a, mac(1), CLIENT, 1).unwrap();
        c.take_changed();
        c.learn(a, mac(2), CLIENT, 2).unwrap();
        assert_eq!(c.lookup(a), Some(mac(2)));
        assert_eq!(c.counters().mac_changed, 1);
        assert!(c.take_changed());
        let v = c.view();
        assert_eq!(v[0].state, "reachable");
    }

    // Attacks: what someone on the client side (or anywhere) can send the control thread.

    /// A backend gateway resolved the normal way.
    fn with_resolved_gateway(gw: IpAddr) -> NeighborCache {
        let mut c = cache(NeighborTimers::default(), []);
        c.miss(gw, 0);
        c.learn(gw, mac(0x0b), BACKEND, 10).unwrap();
        c
    }

    #[test]
    fn a_client_side_reply_never_changes_a_backend_gateway() {
        let attacker = mac(0xee);
        for gw in [ip("198.19.0.11"), ip("2001:2:0:2::11")] {
            let mut c = with_resolved_gateway(gw);
            // A forged ARP reply / NA from the client side (and again, as announcements are).
            let _ = c.learn(gw, attacker, CLIENT, 20);
            let _ = c.learn(gw, attacker, CLIENT, 30);
            assert_eq!(c.lookup(gw), Some(mac(0x0b)), "{gw}");
            assert_eq!(c.usable().collect::<Vec<_>>(), vec![(gw, mac(0x0b))]);
            assert_eq!(c.counters().mac_changed, 0);
            assert_eq!(c.counters().off_subnet, 2);
        }
    }

    #[test]
    fn a_client_side_reply_while_a_gateway_is_resolved_is_refused() {
        let attacker = mac(0xee);
        for gw in [ip("198.19.0.12"), ip("2001:2:0:2::12")] {
            let mut c = cache(NeighborTimers::default(), []);
            assert!(c.miss(gw, 0).is_some());
            c.take_changed();
            // The attacker races the gateway's answer.
            let _ = c.learn(gw, attacker, CLIENT, 1);
            assert_eq!(c.lookup(gw), None, "{gw}");
            assert!(!c.take_changed());
            // The real answer still resolves it.
            c.learn(gw, mac(0x0c), BACKEND, 2).unwrap();
            assert_eq!(c.lookup(gw), Some(mac(0x0c)));
            assert_eq!(c.counters().resolved, 1);
        }
    }

    #[test]
    fn an_entry_changes_only_from_its_own_interface_even_on_overlapping_subnets() {
        // The client side's wide subnet also holds the backend's: the address is on a subnet
        // of the client interface, but its entry belongs to the backend (longest prefix).
        let mut c = NeighborCache::new(NeighborTimers::default(), []);
        c.set_subnets([
            (CLIENT, "10.0.0.1/8".parse().unwrap()),
            (BACKEND, "10.1.0.1/16".parse().unwrap()),
        ]);
        let gw = ip("10.1.0.11");
        c.miss(gw, 0);
        let forged = c.learn(gw, mac(0xee), CLIENT, 1);
        assert_eq!(c.lookup(gw), None);
        c.learn(gw, mac(0x0b), BACKEND, 2).unwrap();
        let forged_again = c.learn(gw, mac(0xee), CLIENT, 3);
        assert_eq!(c.lookup(gw), Some(mac(0x0b)));
        assert_eq!(forged, Err(Refusal::WrongInterface));
        assert_eq!(forged_again, Err(Refusal::WrongInterface));
        assert_eq!(c.counters().wrong_interface, 2);
        assert_eq!(c.interface_of(gw), Some(BACKEND));
        assert_eq!(c.view()[0].interface, Some(BACKEND));
    }

    #[test]
    fn a_reply_for_an_off_subnet_address_is_refused() {
        let mut c = cache(NeighborTimers::default(), []);
        for (a, from) in [
            (ip("203.0.113.7"), CLIENT),
            (ip("203.0.113.7"), BACKEND),
            (ip("2001:db8::7"), CLIENT),
            (ip("198.19.0.7"), CLIENT),
        ] {
            // Nothing asked for it, and it is not on the frame's subnet.
            let r = c.learn(a, mac(7), from, 0);
            assert_eq!(c.lookup(a), None);
            assert_eq!(r, Err(Refusal::OffSubnet));
        }
        assert_eq!(c.view(), vec![]);
        assert_eq!(c.counters().off_subnet, 4);
        // Nothing to resolve off every subnet either.
        assert_eq!(c.miss(ip("203.0.113.7"), 0), None);
        assert_eq!(c.view(), vec![]);
    }

    #[test]
    fn a_flood_of_replies_does_not_grow_the_cache() {
        let mut c = cache(NeighborTimers::default(), []);
        c.set_max_entries(16);
        // Replies for every address of both sides, each from its own side.
        for i in 0..=255u8 {
            let _ = c.learn(IpAddr::from([198, 18, 0, i]), mac(i), CLIENT, 0);
            let _ = c.learn(IpAddr::from([198, 19, 1, i]), mac(i), BACKEND, 0);
        }
        assert_eq!(c.view(), vec![]);
        assert_eq!(c.counters().unsolicited_ignored, 512);
        assert_eq!(c.counters().resolved, 0);
    }

    #[test]
    fn a_flood_of_misses_and_replies_stays_under_the_cap() {
        let mut c = cache(NeighborTimers::default(), [(ip("198.19.0.1"), mac(1))]);
        c.set_max_entries(16);
        // Traffic to many addresses of a connected subnet, each answered at once.
        for i in 0..1000u16 {
            let [hi, lo] = i.to_be_bytes();
            let a = IpAddr::from([198, 19, 2 + hi, lo]);
            c.miss(a, u64::from(i));
            let _ = c.learn(a, mac(lo), BACKEND, u64::from(i));
            assert!(c.view().len() <= 16 + 1, "{} entries", c.view().len());
        }
        assert_eq!(c.usable().count(), 16 + 1);
        assert_eq!(c.counters().resolved, 16);
        assert_eq!(c.counters().cache_full, 1000 - 16);
        // The static entry was never at stake.
        assert_eq!(c.lookup(ip("198.19.0.1")), Some(mac(1)));
    }

    #[test]
    fn a_request_to_us_teaches_its_sender_as_a_stale_entry() {
        let mut c = cache(NeighborTimers::default(), [(ip("198.19.0.12"), mac(0x0c))]);
        let client = ip("198.18.0.20");
        assert_eq!(c.heard(client, mac(0x20), CLIENT, 5), Ok(()));
        assert_eq!(c.lookup(client), Some(mac(0x20)));
        assert!(c.take_changed(), "a new snapshot is due");
        let v = c.view();
        let e = v.iter().find(|e| e.address == client).unwrap();
        assert_eq!((e.state, e.interface), ("stale", Some(CLIENT)));
        assert_eq!(c.counters().heard, 1);
        // Asked again with the same MAC: nothing changes for the workers.
        assert_eq!(c.heard(client, mac(0x20), CLIENT, 6), Ok(()));
        assert!(!c.take_changed());
        // The refresh is answered: reachable.
        c.learn(client, mac(0x20), CLIENT, 7).unwrap();
        assert_eq!(c.view()[0].state, "reachable");
        // A request also answers a resolution in progress.
        let gw = ip("198.19.0.13");
        c.miss(gw, 10);
        assert_eq!(c.heard(gw, mac(0x0d), BACKEND, 11), Ok(()));
        assert_eq!(c.lookup(gw), Some(mac(0x0d)));
        assert_eq!(c.counters().resolved, 1);
    }

    #[test]
    fn requests_follow_the_rules_answers_do() {
        let gw = ip("198.19.0.12");
        let mut c = cache(NeighborTimers::default(), [(gw, mac(0x0c))]);
        // Off the subnet of the interface it came in on; a backend address from the client
        // side; a static entry: refused, counted.
        assert_eq!(
            c.heard(ip("203.0.113.9"), mac(1), CLIENT, 0),
            Err(Refusal::OffSubnet)
        );
        assert_eq!(
            c.heard(ip("198.19.0.40"), mac(2), CLIENT, 0),
            Err(Refusal::OffSubnet)
        );
        assert_eq!(
            c.heard(gw, mac(3), BACKEND, 0),
            Err(Refusal::StaticOverride)
        );
        assert_eq!(c.lookup(gw), Some(mac(0x0c)));
        // A learned backend entry is not changed from the client side, even on an
        // overlapping subnet.
        let mut c = cache(NeighborTimers::default(), []);
        c.set_subnets(
            subnets()
                .into_iter()
                .chain([(CLIENT, "198.19.0.1/24".parse().unwrap())]),
        );
        let b = ip("198.19.1.7");
        c.heard(b, mac(4), BACKEND, 0).unwrap();
        assert_eq!(c.heard(b, mac(5), CLIENT, 0), Err(Refusal::OffSubnet));
        // An address whose longest subnet is the client side's is not created from the
        // backend, nor changed from there once the client side taught it.
        let a = ip("198.19.0.7");
        assert_eq!(c.heard(a, mac(6), BACKEND, 0), Err(Refusal::WrongInterface));
        c.heard(a, mac(7), CLIENT, 0).unwrap();
        assert_eq!(c.heard(a, mac(8), BACKEND, 0), Err(Refusal::WrongInterface));
        assert_eq!((c.lookup(a), c.lookup(b)), (Some(mac(7)), Some(mac(4))));
        let n = c.counters();
        assert_eq!((n.off_subnet, n.wrong_interface), (1, 2));
    }

    #[test]
    fn requests_never_push_out_resolutions_and_make_room_for_them() {
        let mut c = cache(NeighborTimers::default(), []);
        c.set_max_entries(4);
        let gw = ip("198.19.0.12");
        c.miss(gw, 0);
        // A flood of requests from distinct on-link addresses: the cache fills, no more.
        for i in 0..100u8 {
            let _ = c.heard(IpAddr::from([198, 18, 0, i]), mac(i), CLIENT, u64::from(i));
        }
        assert_eq!(c.view().len(), 4);
        assert_eq!(c.counters().heard, 3);
        assert_eq!(c.counters().cache_full, 97);
        // The resolution in progress survived, and is still answered.
        c.learn(gw, mac(0x0c), BACKEND, 200).unwrap();
        // A new resolution takes the oldest entry only heard from.
        assert!(c.miss(ip("198.19.0.13"), 300).is_some());
        assert_eq!(c.lookup(ip("198.18.0.0")), None);
        assert_eq!(c.lookup(ip("198.18.0.1")), Some(mac(1)));
        assert_eq!(c.counters().evicted, 1);
    }

    #[test]
    fn when_full_failed_then_incomplete_entries_make_room_oldest_first() {
        let t = NeighborTimers::default();
        let mut c = cache(t, []);
        c.set_max_entries(3);
        let (known, old, young) = (ip("198.19.0.1"), ip("198.19.0.2"), ip("198.19.0.3"));
        c.miss(known, 0);
        c.learn(known, mac(1), BACKEND, 0).unwrap();
        c.miss(old, 0);
        c.miss(young, 10);
        // Full: the oldest incomplete entry goes.
        assert!(c.miss(ip("198.19.0.4"), 20).is_some());
        assert_eq!(c.counters().evicted, 1);
        let left: Vec<IpAddr> = c.view().iter().map(|v| v.address).collect();
        assert_eq!(left, vec![known, young, ip("198.19.0.4")]);
        // Let them fail; a failed entry goes before an incomplete one.
        c.tick(10_000);
        assert!(c.miss(ip("198.19.0.5"), 10_001).is_some());
        assert!(c.miss(ip("198.19.0.6"), 10_002).is_some());
        assert_eq!(c.counters().evicted, 3);
        // Only reachable and incomplete entries left... then only reachable: refused.
        c.learn(ip("198.19.0.5"), mac(5), BACKEND, 10_003).unwrap();
        c.learn(ip("198.19.0.6"), mac(6), BACKEND, 10_003).unwrap();
        assert_eq!(c.miss(ip("198.19.0.7"), 10_004), None);
        assert_eq!(c.counters().cache_full, 1);
        assert_eq!(c.lookup(known), Some(mac(1)));
    }

    #[test]
    fn a_reload_that_moves_a_subnet_drops_its_entries() {
        let gw = ip("198.19.0.11");
        let mut c = with_resolved_gateway(gw);
        c.take_changed();
        // Same interfaces: the entry stays.
        c.set_subnets(subnets());
        assert_eq!(c.lookup(gw), Some(mac(0x0b)));
        assert!(!c.take_changed());
        // The backend subnet is now on interface 2: resolved again there, on the next miss.
        c.set_subnets([(2, "198.19.0.1/16".parse().unwrap())]);
        assert_eq!(c.lookup(gw), None);
        assert!(c.take_changed());
        assert!(c.miss(gw, 100).is_some());
        assert_eq!(
            c.learn(gw, mac(0x0b), BACKEND, 101),
            Err(Refusal::OffSubnet)
        );
        c.learn(gw, mac(0x0b), 2, 102).unwrap();
        assert_eq!(c.lookup(gw), Some(mac(0x0b)));
    }
}
