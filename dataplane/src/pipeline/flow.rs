//! The affinity state machine: a client's entry found, refreshed, created, confirmed, moved or
//! forgotten, with the active-client counts and the HA change log kept in step.

use crate::pipeline::hash_client;
use crate::pipeline::parse::{Flow, Proof};
use crate::pipeline::ServiceState;
use crate::pipeline::State;

use crate::affinity::{
    AffinityKey, AffinityValue, Confirm, EntryMut, InsertOutcome, Lookup, RemoveReason, Removed,
};
use crate::changes::{refresh_is_news, ChangeLog};
use crate::counters::{ClientCounters, DropReason};
use crate::model::{ServiceView, Snapshot};
use crate::schedule::GatewayState;

/// What a packet does to its client's live entry (see [`State::touch`]).
#[derive(Clone, Copy, Debug)]
pub(super) enum Touch {
    /// Reads it only.
    Peek,
    /// The client's own packet: seen now, and live for the service's timeout for its state
    /// (established or not). An unconfirmed entry whose pending proof `echo` matches is
    /// established (confirmed) by it.
    Refresh {
        confirmed_s: u32,
        unconfirmed_s: u32,
        echo: Proof,
    },
    /// A packet from `gateway` to the client. If the entry names another gateway it is left as
    /// it is. An established entry is refreshed for `confirmed_s`; an unconfirmed one only for
    /// `unconfirmed_s`, and `challenge` becomes its pending proof: a gateway answers spoofed
    /// traffic too, so its answer alone establishes nothing.
    Answer {
        gateway: u16,
        confirmed_s: u32,
        unconfirmed_s: u32,
        challenge: Proof,
    },
    /// A redirected client talks to `gateway` directly: the entry is pointed at it, then
    /// refreshed as by `Refresh`.
    Point {
        gateway: u16,
        confirmed_s: u32,
        unconfirmed_s: u32,
        echo: Proof,
    },
}

/// How far past the gateway's proof a client's TCP acknowledgment may be (it acknowledges
/// later data too): a blind attacker guesses it with odds of 2^16 in 2^32.
const TCP_ACK_WINDOW: u32 = 1 << 16;

/// Whether a client's `echo` answers the entry's pending proof `pending` (0: none).
#[inline]
fn echo_matches(pending: u32, echo: Proof) -> bool {
    pending != 0
        && match echo {
            Proof::None => false,
            Proof::Ike(spi) => spi == pending,
            Proof::Tcp(ack) => ack.wrapping_sub(pending) < TCP_ACK_WINDOW,
            // Only the gateway sends these.
            Proof::TcpSynAck(_) => false,
        }
}

/// What a client's echo did to its unconfirmed entry.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Echo {
    /// Nothing: no echo, or a wrong one.
    Nothing,
    /// It matched and established the entry.
    Established,
    /// It matched, but the client's prefix holds its quota of established entries: the entry
    /// stays unconfirmed, its pending proof kept (a later echo establishes it once the prefix
    /// has room), and the packet is dropped.
    OverQuota,
}

/// The client's `echo` on an unconfirmed entry: establishes it when it matches the pending
/// proof (and the client's prefix has room), counts a wrong one.
#[inline]
fn check_echo(e: &mut EntryMut<'_>, clients: &mut ClientCounters, echo: Proof) -> Echo {
    if echo == Proof::None {
        return Echo::Nothing;
    }
    let pending = e.proof();
    if echo_matches(pending, echo) {
        if e.confirm() == Confirm::PrefixQuota {
            return Echo::OverQuota;
        }
        e.set_proof(0);
        clients.established += 1;
        return Echo::Established;
    }
    if pending != 0 {
        clients.proof_mismatch += 1;
    }
    Echo::Nothing
}

/// The gateway's `challenge` as the entry's pending proof: an IKE responder SPI replaces any
/// earlier one (a new IKE SA), and so does a SYN-ACK (a new connection: a client whose first
/// SYN-ACK was lost, or who gave up on it, acknowledges the new one only); other TCP segments
/// keep the proof of the connection's SYN-ACK, which the client's acknowledgments count from.
/// Replacing is as safe as keeping: only the client's real address receives the SYN-ACK.
#[inline]
fn record_challenge(e: &mut EntryMut<'_>, challenge: Proof) {
    match challenge {
        Proof::None => {}
        Proof::Ike(spi) => e.set_proof(spi),
        Proof::TcpSynAck(next) => e.set_proof(next),
        Proof::Tcp(next) => {
            if e.proof() == 0 {
                e.set_proof(next);
            }
        }
    }
}

/// What [`State::touch`] found.
#[derive(Clone, Copy, Debug)]
pub(super) enum Touched {
    /// No live entry (an expired one is now forgotten).
    Absent,
    /// A live entry; its value before the touch.
    Live(AffinityValue),
    /// `Touch::Confirm` found an entry naming another gateway (left unchanged).
    Mismatch,
    /// The client's echo would have established its live entry (value before the touch), but
    /// its prefix holds its quota: the entry is left unconfirmed and unrefreshed, and the
    /// caller drops the packet ([`DropReason::PrefixQuota`]).
    OverQuota(AffinityValue),
}

/// Applies `how` to the live entry `e` of `key` (value `v`), recording for an HA peer what a
/// peer must know: a new gateway, an establishment, or an expiry moved by a whole sync step.
/// The one place the rules live: [`State::touch`] and the fast path both call it.
#[inline(always)]
pub(super) fn apply_touch(
    e: &mut EntryMut<'_>,
    changes: &mut ChangeLog,
    clients: &mut ClientCounters,
    key: &AffinityKey,
    v: AffinityValue,
    now: u32,
    how: Touch,
) -> Touched {
    match how {
        Touch::Peek => {}
        Touch::Refresh {
            confirmed_s,
            unconfirmed_s,
            echo,
        } => {
            let by_client = ByClient {
                gateway: v.gateway,
                confirmed_s,
                unconfirmed_s,
                echo,
            };
            return by_client.apply(e, changes, clients, key, v, now);
        }
        Touch::Answer {
            gateway,
            confirmed_s,
            unconfirmed_s,
            challenge,
        } => {
            if v.gateway != gateway {
                return Touched::Mismatch;
            }
            let expires_at = if v.confirmed {
                now.saturating_add(confirmed_s)
            } else {
                record_challenge(e, challenge);
                now.saturating_add(unconfirmed_s)
            };
            e.refresh(now, expires_at);
            if refresh_is_news(v.expires_at, expires_at) {
                changes.upsert(*key, gateway, v.confirmed, expires_at);
            }
        }
        Touch::Point {
            gateway,
            confirmed_s,
            unconfirmed_s,
            echo,
        } => {
            let by_client = ByClient {
                gateway,
                confirmed_s,
                unconfirmed_s,
                echo,
            };
            return by_client.apply(e, changes, clients, key, v, now);
        }
    }
    Touched::Live(v)
}

/// A client's own packet to its entry (`Refresh`: to the gateway it has; `Point`: pointing it
/// at `gateway`): establishes the entry when the echo matches, refreshes it for its state, and
/// records what a peer must know.
struct ByClient {
    gateway: u16,
    confirmed_s: u32,
    unconfirmed_s: u32,
    echo: Proof,
}

impl ByClient {
    #[inline(always)]
    fn apply(
        self,
        e: &mut EntryMut<'_>,
        changes: &mut ChangeLog,
        clients: &mut ClientCounters,
        key: &AffinityKey,
        v: AffinityValue,
        now: u32,
    ) -> Touched {
        let confirmed = v.confirmed
            || (v.gateway == self.gateway
                && match check_echo(e, clients, self.echo) {
                    Echo::Established => true,
                    Echo::Nothing => false,
                    Echo::OverQuota => return Touched::OverQuota(v),
                });
        let expires_at = now.saturating_add(if confirmed {
            self.confirmed_s
        } else {
            self.unconfirmed_s
        });
        if v.gateway != self.gateway {
            e.set_gateway(self.gateway);
        }
        e.refresh(now, expires_at);
        if v.gateway != self.gateway
            || confirmed != v.confirmed
            || refresh_is_news(v.expires_at, expires_at)
        {
            changes.upsert(*key, self.gateway, confirmed, expires_at);
        }
        Touched::Live(v)
    }
}

/// A removed entry: out of the active-client counts, and news for an HA peer (not an entry a
/// reload's remap dropped: its ids are the old layout's, and the peer reloads itself).
pub(super) fn forget(services: &mut [ServiceState], changes: &mut ChangeLog, r: &Removed) {
    release(services, r);
    if r.reason != RemoveReason::Remapped {
        changes.delete(r.key, r.value.confirmed);
    }
}

/// Forgets a removed entry's client in the active-client counts (an entry a remap or flush
/// dropped left them when it began).
pub(super) fn release(services: &mut [ServiceState], r: &Removed) {
    if matches!(r.reason, RemoveReason::Remapped | RemoveReason::Flushed) {
        return;
    }
    if let Some(c) = active_slot(services, &r.key, r.value.gateway) {
        *c = c.saturating_sub(1);
    }
}

/// The active-client count an entry of `key` on `gateway` belongs to. Redirected clients'
/// (direct) entries are in none: the NAT-mode scheduler balances NAT-mode clients, and the
/// redirect choice reads the gateways' own tunnel counts.
pub(super) fn active_slot<'a>(
    services: &'a mut [ServiceState],
    key: &AffinityKey,
    gateway: u16,
) -> Option<&'a mut u32> {
    if key.is_direct() {
        return None;
    }
    services
        .get_mut(usize::from(key.service))?
        .active
        .get_mut(usize::from(gateway))
}

impl State {
    /// Finds `key`'s entry and applies `how` to it; an expired entry is forgotten (out of the
    /// active counts, a delete for the HA peer) and reported `Absent`.
    pub(super) fn touch(&mut self, key: &AffinityKey, hash: u64, now: u32, how: Touch) -> Touched {
        if self.shard.remapping() {
            self.settle(key);
        }
        match self.shard.lookup(key, hash, now) {
            Lookup::Hit(mut e) => {
                let v = e.value();
                let clients = &mut self.counters.clients;
                apply_touch(&mut e, &mut self.changes, clients, key, v, now, how)
            }
            Lookup::Expired(r) => {
                forget(&mut self.services, &mut self.changes, &r);
                Touched::Absent
            }
            Lookup::Miss => Touched::Absent,
        }
    }

    /// While a remap runs: translates now the old entries `key` must find (see
    /// [`crate::affinity::AffinityShard::settle`]).
    pub(super) fn settle(&mut self, key: &AffinityKey) {
        let (services, changes) = (&mut self.services, &mut self.changes);
        self.shard.settle(key, |r| forget(services, changes, &r));
    }

    /// One slice of the running remap, `budget` as [`AffinityShard::remap_step`]'s; a
    /// completed remap's result is kept for `drain_finished_remaps`. True while one runs.
    pub(super) fn remap_step(&mut self, budget: usize) -> bool {
        let (services, changes) = (&mut self.services, &mut self.changes);
        let done = self
            .shard
            .remap_step(budget, |r| forget(services, changes, &r));
        if let Some(p) = done {
            // Room was reserved when the remap began: no allocation here.
            self.finished.push(p);
        }
        self.shard.remapping()
    }

    /// Stores a new entry for `key` (after `touch` found none), forgetting what the table
    /// evicted for room, and records it for the HA peer. False when the table is full.
    pub(super) fn admit(
        &mut self,
        key: AffinityKey,
        hash: u64,
        value: AffinityValue,
        now: u32,
    ) -> bool {
        match self.shard.insert(key, hash, value, now) {
            InsertOutcome::Inserted => {}
            InsertOutcome::InsertedEvicting(r) => forget(&mut self.services, &mut self.changes, &r),
            // A new entry is unconfirmed, never refused by a prefix quota; either way, no room.
            InsertOutcome::Full | InsertOutcome::PrefixQuota => return false,
        }
        self.changes
            .upsert(key, value.gateway, value.confirmed, value.expires_at);
        true
    }

    /// Picks a gateway for a client of `service`, counting it as active there.
    pub(super) fn schedule(&mut self, snap: &Snapshot, f: &Flow) -> Option<u16> {
        let fam = snap.services[usize::from(f.service)].family(f.v6);
        let state = &mut self.services[usize::from(f.service)];
        let sched = if f.v6 { &mut state.v6 } else { &mut state.v4 };
        let g = sched.pick(hash_client(f.client()), &fam.candidates, &state.active)?;
        if let Some(c) = state.active.get_mut(usize::from(g)) {
            *c += 1;
        }
        Some(g)
    }

    /// The gateway for a client packet: its entry's (rescheduled if that gateway is down), or
    /// a newly scheduled one.
    pub(super) fn client_gateway(
        &mut self,
        snap: &Snapshot,
        now: u32,
        f: &Flow,
    ) -> Result<u16, DropReason> {
        let svc = &snap.services[usize::from(f.service)];
        let refresh = Touch::Refresh {
            confirmed_s: svc.spec.persistence_timeout_s,
            unconfirmed_s: svc.spec.unconfirmed_timeout_s,
            echo: f.proof,
        };
        let fam = svc.family(f.v6);
        let current = match self.touch(&f.key, f.hash, now, refresh) {
            Touched::Live(v) => {
                let up = fam
                    .candidates
                    .get(usize::from(v.gateway))
                    .is_some_and(|c| c.state != GatewayState::Down);
                if up {
                    return Ok(v.gateway);
                }
                Some(v.gateway)
            }
            Touched::OverQuota(_) => return Err(DropReason::PrefixQuota),
            Touched::Absent | Touched::Mismatch => None,
        };
        let gateway = self.schedule(snap, f).ok_or(DropReason::NoGateway)?;
        if let Some(old) = current {
            // The client's gateway is down: move the client, keep its entry.
            if let Lookup::Hit(mut e) = self.shard.lookup(&f.key, f.hash, now) {
                e.set_gateway(gateway);
                let v = e.value();
                self.changes
                    .upsert(f.key, gateway, v.confirmed, v.expires_at);
            }
            if let Some(c) = self.services[usize::from(f.service)]
                .active
                .get_mut(usize::from(old))
            {
                *c = c.saturating_sub(1);
            }
            self.counters.clients.rescheduled += 1;
            return Ok(gateway);
        }
        let value = AffinityValue {
            gateway,
            last_seen: now,
            expires_at: now.saturating_add(svc.spec.unconfirmed_timeout_s),
            confirmed: false,
        };
        if !self.admit(f.key, f.hash, value, now) {
            // Undo `schedule`'s count: the client was not admitted.
            if let Some(c) = self.services[usize::from(f.service)]
                .active
                .get_mut(usize::from(gateway))
            {
                *c = c.saturating_sub(1);
            }
            return Err(DropReason::TableFull);
        }
        self.counters.clients.scheduled += 1;
        self.counters.gateways[usize::from(f.service)][usize::from(gateway)].new_clients += 1;
        Ok(gateway)
    }

    /// Return traffic from `gateway` to a client: refreshes the client's entry and sets its
    /// pending proof, or learns an (unconfirmed) entry.
    pub(super) fn gateway_seen(&mut self, snap: &Snapshot, now: u32, f: &Flow, gateway: u16) {
        let svc = &snap.services[usize::from(f.service)];
        let unconfirmed_s = svc.spec.unconfirmed_timeout_s;
        let answer = Touch::Answer {
            gateway,
            confirmed_s: svc.spec.persistence_timeout_s,
            unconfirmed_s,
            challenge: f.proof,
        };
        match self.touch(&f.key, f.hash, now, answer) {
            // (`Answer` never establishes, so never meets a quota.)
            Touched::Live(_) | Touched::OverQuota(_) => return,
            Touched::Mismatch => {
                self.counters.clients.gateway_mismatch += 1;
                return;
            }
            Touched::Absent => {}
        }
        // Learned unconfirmed, like any new client: the client establishes it by echoing.
        let value = AffinityValue {
            gateway,
            last_seen: now,
            expires_at: now.saturating_add(unconfirmed_s),
            confirmed: false,
        };
        if !self.admit(f.key, f.hash, value, now) {
            self.counters.clients.learn_failed_table_full += 1;
            return;
        }
        if let Lookup::Hit(mut e) = self.shard.lookup(&f.key, f.hash, now) {
            record_challenge(&mut e, f.proof);
        }
        if let Some(c) = self.services[usize::from(f.service)]
            .active
            .get_mut(usize::from(gateway))
        {
            *c += 1;
        }
        self.counters.clients.learned_from_gateway += 1;
    }

    /// Records that a redirected client talks to `gateway` directly: its direct entry is
    /// created (unconfirmed), re-pointed or refreshed. True when it was created or re-pointed
    /// (the client is new to `gateway`); `Err` when the client's echo would have established
    /// the entry but its prefix holds its quota (the caller drops the packet).
    pub(super) fn remember_direct(
        &mut self,
        svc: &ServiceView,
        now: u32,
        (key, hash): (AffinityKey, u64),
        gateway: u16,
        echo: Proof,
    ) -> Result<bool, DropReason> {
        let point = Touch::Point {
            gateway,
            confirmed_s: svc.spec.persistence_timeout_s,
            unconfirmed_s: svc.spec.unconfirmed_timeout_s,
            echo,
        };
        match self.touch(&key, hash, now, point) {
            Touched::Live(v) => return Ok(v.gateway != gateway),
            Touched::OverQuota(_) => return Err(DropReason::PrefixQuota),
            Touched::Absent | Touched::Mismatch => {}
        }
        let value = AffinityValue {
            gateway,
            last_seen: now,
            expires_at: now.saturating_add(svc.spec.unconfirmed_timeout_s),
            confirmed: false,
        };
        if !self.admit(key, hash, value, now) {
            self.counters.clients.learn_failed_table_full += 1;
            return Ok(false);
        }
        Ok(true)
    }

    /// The gateway `key`'s live entry names, without refreshing it.
    pub(super) fn gateway_of(&mut self, now: u32, key: &AffinityKey) -> Option<u16> {
        match self.touch(key, self.shard.hash(key), now, Touch::Peek) {
            Touched::Live(v) | Touched::OverQuota(v) => Some(v.gateway),
            Touched::Absent | Touched::Mismatch => None,
        }
    }

    /// Whether `key`'s live entry names `gateway` (without refreshing it).
    pub(super) fn names_gateway(&mut self, now: u32, key: &AffinityKey, gateway: u16) -> bool {
        self.gateway_of(now, key) == Some(gateway)
    }
}
