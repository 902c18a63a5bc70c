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
//! - Learning (ARP request or reply sender, NA target, NS source) only updates addresses that
//!   are being resolved or are already known, so unsolicited traffic cannot fill the cache; the
//!   caller also checks the address is on a connected subnet.

use std::collections::HashMap;
use std::net::IpAddr;

use crate::wire::ethernet::EthernetAddress;

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
    pub unsolicited_ignored: u64,
    pub static_override_ignored: u64,
}

/// One entry as shown to operators.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NeighborView {
    pub address: IpAddr,
    pub mac: Option<EthernetAddress>,
    pub state: &'static str,
}

#[derive(Debug, Default)]
pub struct NeighborCache {
    timers: NeighborTimers,
    entries: HashMap<IpAddr, State>,
    counters: NeighborCounters,
    /// Set when the usable entries changed since the last `take_changed`.
    changed: bool,
}

impl NeighborCache {
    pub fn new(
        timers: NeighborTimers,
        statics: impl IntoIterator<Item = (IpAddr, EthernetAddress)>,
    ) -> Self {
        NeighborCache {
            timers,
            entries: statics
                .into_iter()
                .map(|(a, m)| (a, State::Static(m)))
                .collect(),
            counters: NeighborCounters::default(),
            changed: true,
        }
    }

    /// Replaces the static entries (a configuration reload); learned entries stay unless an
    /// address became static.
    pub fn set_statics(&mut self, statics: impl IntoIterator<Item = (IpAddr, EthernetAddress)>) {
        self.entries.retain(|_, s| !matches!(s, State::Static(_)));
        for (a, m) in statics {
            self.entries.insert(a, State::Static(m));
        }
        self.changed = true;
    }

    /// The MAC to use for `address`, if any.
    pub fn lookup(&self, address: IpAddr) -> Option<EthernetAddress> {
        match self.entries.get(&address)? {
            State::Static(m) | State::Reachable { mac: m, .. } => Some(*m),
            _ => None,
        }
    }

    /// A worker could not forward to `address`: start resolving it unless already in progress,
    /// known, or recently failed. Returns the probe to send now, if any.
    pub fn miss(&mut self, address: IpAddr, now_ms: u64) -> Option<Probe> {
        match self.entries.get(&address) {
            Some(State::Static(_) | State::Reachable { .. } | State::Incomplete { .. }) => None,
            Some(State::Failed { until_ms }) if now_ms < *until_ms => None,
            _ => {
                self.entries.insert(
                    address,
                    State::Incomplete {
                        probes: 1,
                        next_probe_ms: now_ms + self.timers.retransmit_ms,
                    },
                );
                self.counters.probes_sent += 1;
                Some(Probe {
                    address,
                    unicast: None,
                })
            }
        }
    }

    /// A neighbor told us its MAC. `solicited` is true for ARP replies and solicited NAs.
    pub fn learn(&mut self, address: IpAddr, mac: EthernetAddress, now_ms: u64, solicited: bool) {
        let reachable = State::Reachable {
            mac,
            confirmed_ms: now_ms,
            next_refresh_ms: now_ms
                + self
                    .timers
                    .reachable_ms
                    .saturating_sub(self.timers.refresh_ms),
        };
        match self.entries.get(&address).copied() {
            Some(State::Static(m)) => {
                if m != mac {
                    self.counters.static_override_ignored += 1;
                }
            }
            Some(State::Reachable { mac: old, .. }) => {
                if old != mac {
                    self.counters.mac_changed += 1;
                    self.changed = true;
                }
                self.entries.insert(address, reachable);
            }
            Some(State::Incomplete { .. } | State::Failed { .. }) => {
                self.counters.resolved += 1;
                self.changed = true;
                self.entries.insert(address, reachable);
            }
            None if solicited => {
                // A reply we did not ask for (e.g. after a restart of ours): harmless to keep.
                self.counters.resolved += 1;
                self.changed = true;
                self.entries.insert(address, reachable);
            }
            None => self.counters.unsolicited_ignored += 1,
        }
    }

    /// Advances timers: retransmissions, refreshes, failures and expiries. Returns the probes to
    /// send.
    pub fn tick(&mut self, now_ms: u64) -> Vec<Probe> {
        let t = self.timers;
        let mut probes = Vec::new();
        let mut changed = false;
        let counters = &mut self.counters;
        self.entries.retain(|&address, state| match *state {
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
                    *state = State::Reachable {
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
            } => {
                if now_ms < next_probe_ms {
                    return true;
                }
                if sent >= t.max_probes {
                    counters.failed += 1;
                    *state = State::Failed {
                        until_ms: now_ms + t.failed_hold_ms,
                    };
                    return true;
                }
                probes.push(Probe {
                    address,
                    unicast: None,
                });
                counters.probes_sent += 1;
                *state = State::Incomplete {
                    probes: sent + 1,
                    next_probe_ms: now_ms + t.retransmit_ms,
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
        self.entries.iter().filter_map(|(a, s)| match s {
            State::Static(m) | State::Reachable { mac: m, .. } => Some((*a, *m)),
            _ => None,
        })
    }

    /// Every entry, for `show neighbors`, sorted by address.
    pub fn view(&self) -> Vec<NeighborView> {
        let mut v: Vec<NeighborView> = self
            .entries
            .iter()
            .map(|(a, s)| {
                let (mac, state) = match s {
                    State::Static(m) => (Some(*m), "static"),
                    State::Reachable { mac, .. } => (Some(*mac), "reachable"),
                    State::Incomplete { .. } => (None, "incomplete"),
                    State::Failed { .. } => (None, "failed"),
                };
                NeighborView {
                    address: *a,
                    mac,
                    state,
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

#[cfg(test)]
mod tests {
    use super::*;

    fn mac(b: u8) -> EthernetAddress {
        EthernetAddress([2, 0, 0, 0, 2, b])
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_miss_resolves_after_a_reply() {
        let mut c = NeighborCache::new(NeighborTimers::default(), []);
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
        c.learn(gw, mac(0x0b), 20, true);
        assert_eq!(c.lookup(gw), Some(mac(0x0b)));
        assert!(c.take_changed());
        assert!(!c.take_changed());
        assert_eq!(c.counters().resolved, 1);
    }

    #[test]
    fn unanswered_resolution_retries_then_fails_then_holds() {
        let t = NeighborTimers::default();
        let mut c = NeighborCache::new(t, []);
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
        let mut c = NeighborCache::new(t, []);
        let a = ip("198.18.0.50");
        c.miss(a, 0);
        c.learn(a, mac(0x50), 0, true);
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
        c.learn(a, mac(0x50), refresh_at + 5, true);
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
        let mut c = NeighborCache::new(NeighborTimers::default(), [(gw, mac(0x0c))]);
        c.learn(gw, mac(0x99), 0, true);
        assert_eq!(c.lookup(gw), Some(mac(0x0c)));
        assert_eq!(c.counters().static_override_ignored, 1);
        assert_eq!(c.miss(gw, 0), None);
        assert_eq!(c.tick(u64::MAX / 2), vec![]);
        assert_eq!(c.lookup(gw), Some(mac(0x0c)));
    }

    #[test]
    fn unsolicited_announcements_do_not_fill_the_cache() {
        let mut c = NeighborCache::new(NeighborTimers::default(), []);
        for i in 0..100u8 {
            c.learn(IpAddr::from([198, 18, 0, i]), mac(i), 0, false);
        }
        assert_eq!(c.usable().count(), 0);
        assert_eq!(c.counters().unsolicited_ignored, 100);
    }

    #[test]
    fn a_changed_mac_is_taken_and_counted() {
        let mut c = NeighborCache::new(NeighborTimers::default(), []);
        let a = ip("198.18.0.254");
        c.miss(a, 0);
        c.learn(a, mac(1), 1, true);
        c.take_changed();
        c.learn(a, mac(2), 2, false);
        assert_eq!(c.lookup(a), Some(mac(2)));
        assert_eq!(c.counters().mac_changed, 1);
        assert!(c.take_changed());
        let v = c.view();
        assert_eq!(v[0].state, "reachable");
    }
}
