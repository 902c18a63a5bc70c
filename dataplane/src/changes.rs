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

    #[inline]
    pub fn upsert(&mut self, key: AffinityKey, gateway: u16, confirmed: bool, expires_at: u32) {
        self.push(AffinityChange {
            key,
            op: ChangeOp::Upsert {
                gateway,
                confirmed,
                expires_at,
            },
        });
    }

    #[inline]
    pub fn delete(&mut self, key: AffinityKey) {
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
        log.upsert(key(1), 0, false, 10);
        log.delete(key(1));
        let mut n = 0;
        assert_eq!(log.drain(|_| n += 1), 0);
        assert_eq!(n, 0);
    }

    #[test]
    fn a_full_log_counts_what_it_loses_and_keeps_order() {
        let mut log = ChangeLog::with_capacity(2);
        log.upsert(key(1), 1, false, 10);
        log.delete(key(2));
        log.delete(key(3));
        let mut seen = Vec::new();
        assert_eq!(log.drain(|c| seen.push(c)), 1);
        assert_eq!(
            seen,
            [
                AffinityChange {
                    key: key(1),
                    op: ChangeOp::Upsert {
                        gateway: 1,
                        confirmed: false,
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
        log.delete(key(4));
        assert_eq!(log.drain(|_| {}), 0);
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
