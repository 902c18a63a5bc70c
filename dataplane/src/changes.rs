//! Affinity changes a worker records for an HA peer.
//!
//! The master of an HA pair streams its affinity table to the backup (the control plane's
//! sync session), so that after a failover every client keeps its gateway. The table lives in
//! the workers' shards, so the workers say what changed: an entry created, confirmed,
//! re-pointed at another gateway or removed, and now and then that a live entry was refreshed.
//!
//! Per-packet refreshes are not sent: an entry's expiry moves on every packet, and the peer
//! only needs it roughly right. A refresh is recorded when the expiry crosses a multiple of
//! [`REFRESH_STEP_S`] seconds, so a busy client costs one change per step, and the peer, which
//! adds a step to every expiry it is told ([`synced_expiry`]), never drops a live client early.
//!
//! Only established entries are news: an entry whose client has not yet proved it saw its
//! gateway's answer (not `confirmed`) is what a spoofed flood makes by the million, and a
//! client that has not established its tunnel loses nothing in a failover. So upserts of
//! unconfirmed entries are not recorded (an entry becomes news when it is established, and
//! stays established until it leaves the table), nor are the removals of unconfirmed entries;
//! a peer told to delete an entry it never had does nothing.
//!
//! The log is a fixed-capacity buffer: recording never allocates; when it is full further
//! changes are only counted as lost (the caller then resynchronises the whole table).

use crate::affinity::AffinityKey;

/// Granularity of refreshes sent to the peer, in seconds.
pub const REFRESH_STEP_S: u32 = 8;

/// What happened to an entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChangeOp {
    /// Created, confirmed, refreshed or re-pointed: the entry as it now is. `expires_at` is in
    /// the recording worker's clock (seconds).
    Upsert {
        gateway: u16,
        confirmed: bool,
        expires_at: u32,
    },
    /// The entry left the table (expired, evicted, flushed).
    Delete,
}

/// One change of one entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AffinityChange {
    pub key: AffinityKey,
    pub op: ChangeOp,
}

/// Whether moving an entry's expiry from `old` to `new` is worth telling the peer.
#[inline]
pub fn refresh_is_news(old: u32, new: u32) -> bool {
    old / REFRESH_STEP_S != new / REFRESH_STEP_S
}

/// The expiry a peer gives an entry it was told expires at `expires_at`: a refresh step later,
/// as the master sends refreshes only every step.
#[inline]
pub fn synced_expiry(expires_at: u32) -> u32 {
    expires_at.saturating_add(REFRESH_STEP_S)
}

/// A worker's changes since the last drain. Disabled (records nothing) unless sized.
#[derive(Debug, Default)]
pub struct ChangeLog {
    changes: Vec<AffinityChange>,
    capacity: usize,
    lost: u64,
}

impl ChangeLog {
    /// A log that holds `capacity` changes between drains (0: disabled).
    pub fn with_capacity(capacity: usize) -> ChangeLog {
        ChangeLog {
            changes: Vec::with_capacity(capacity),
            capacity,
            lost: 0,
        }
    }

    /// Whether changes are recorded at all.
    #[inline]
    pub fn enabled(&self) -> bool {
        self.capacity != 0
    }

    #[inline]
    fn push(&mut self, c: AffinityChange) {
        if self.changes.len() < self.capacity {
            self.changes.push(c);
        } else if self.enabled() {
            self.lost += 1;
        }
    }

    /// Records an entry as it now is; an unconfirmed (not established) one is no news for the
    /// peer and is not recorded.
    #[inline]
    pub fn upsert(&mut self, key: AffinityKey, gateway: u16, confirmed: bool, expires_at: u32) {
        if !confirmed {
            return;
        }
        self.push(AffinityChange {
            key,
            op: ChangeOp::Upsert {
                gateway,
                confirmed,
                expires_at,
            },
        });
    }

    /// Records that an entry left the table; `confirmed`: whether it was established (the
    /// peer never had an unconfirmed one, so its removal is not recorded).
    #[inline]
    pub fn delete(&mut self, key: AffinityKey, confirmed: bool) {
        if !confirmed {
            return;
        }
        self.push(AffinityChange {
            key,
            op: ChangeOp::Delete,
        });
    }

    /// Hands every recorded change to `f`, oldest first, and returns (and resets) how many
    /// were lost since the last drain.
    pub fn drain(&mut self, mut f: impl FnMut(AffinityChange)) -> u64 {
        for c in self.changes.drain(..) {
            f(c);
        }
        std::mem::take(&mut self.lost)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{IpAddr, Ipv4Addr};

    fn key(i: u8) -> AffinityKey {
        AffinityKey::new(IpAddr::V4(Ipv4Addr::new(198, 18, 0, i)), 0)
    }

    #[test]
    fn a_disabled_log_records_and_loses_nothing() {
        let mut log = ChangeLog::default();
        log.upsert(key(1), 0, true, 10);
        log.delete(key(1), true);
        let mut n = 0;
        assert_eq!(log.drain(|_| n += 1), 0);
        assert_eq!(n, 0);
    }

    #[test]
    fn a_full_log_counts_what_it_loses_and_keeps_order() {
        let mut log = ChangeLog::with_capacity(2);
        log.upsert(key(1), 1, true, 10);
        log.delete(key(2), true);
        log.delete(key(3), true);
        let mut seen = Vec::new();
        assert_eq!(log.drain(|c| seen.push(c)), 1);
        assert_eq!(
            seen,
            [
                AffinityChange {
                    key: key(1),
                    op: ChangeOp::Upsert {
                        gateway: 1,
                        confirmed: true,
                        expires_at: 10
                    }
                },
                AffinityChange {
                    key: key(2),
                    op: ChangeOp::Delete
                }
            ]
        );
        // Drained: room again, nothing lost.
        log.delete(key(4), true);
        assert_eq!(log.drain(|_| {}), 0);
    }

    #[test]
    fn entries_not_established_are_no_news() {
        let mut log = ChangeLog::with_capacity(8);
        // Created unconfirmed, refreshed, removed: nothing recorded, nothing lost.
        log.upsert(key(1), 1, false, 10);
        log.upsert(key(1), 1, false, 18);
        log.delete(key(1), false);
        let mut seen = Vec::new();
        assert_eq!(log.drain(|c| seen.push(c)), 0);
        assert!(seen.is_empty(), "{seen:?}");
        // Established: the upsert and, later, the removal travel.
        log.upsert(key(2), 1, false, 10);
        log.upsert(key(2), 1, true, 300);
        log.delete(key(2), true);
        assert_eq!(log.drain(|c| seen.push(c)), 0);
        assert_eq!(seen.len(), 2);
        assert!(matches!(
            seen[0].op,
            ChangeOp::Upsert {
                confirmed: true,
                ..
            }
        ));
        assert_eq!(seen[1].op, ChangeOp::Delete);
    }

    #[test]
    fn refreshes_are_news_once_per_step_and_peers_never_expire_early() {
        // Expiry moving one second per packet-second: news once every step.
        let news = (0..80u32)
            .filter(|&t| refresh_is_news(300 + t, 301 + t))
            .count();
        assert_eq!(news, 80 / REFRESH_STEP_S as usize);
        // The last news told the peer at most a step less than the truth.
        for truth in 300..400u32 {
            let told = truth - truth % REFRESH_STEP_S;
            assert!(synced_expiry(told) >= truth);
        }
        assert_eq!(synced_expiry(u32::MAX), u32::MAX);
    }
}
