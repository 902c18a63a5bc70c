//! The affinity state machine: a client's entry found, refreshed, created, confirmed, moved or
//! forgotten, with the active-client counts and the HA change log kept in step.

use crate::pipeline::hash_client;
use crate::pipeline::parse::Flow;
use crate::pipeline::ServiceState;
use crate::pipeline::State;

use crate::affinity::{AffinityKey, AffinityValue, EntryMut, InsertOutcome, Lookup, Removed};
use crate::changes::{refresh_is_news, ChangeLog};
use crate::counters::DropReason;
use crate::model::{ServiceView, Snapshot};
use crate::schedule::GatewayState;

/// What a packet does to its client's live entry (see [`State::touch`]).
#[derive(Clone, Copy, Debug)]
pub(super) enum Touch {
    /// Reads it only.
    Peek,
    /// The client's own packet: seen now, and live for the service's timeout for its state
    /// (confirmed or not).
    Refresh {
        confirmed_s: u32,
        unconfirmed_s: u32,
    },
    /// A packet from `gateway` to the client: if the entry names that gateway, it is confirmed
    /// and live for `timeout_s`; an entry naming another gateway is left as it is.
    Confirm { gateway: u16, timeout_s: u32 },
    /// A redirected client talks to `gateway` directly: the entry is pointed at it, then
    /// refreshed as by `Refresh`.
    Point {
        gateway: u16,
        confirmed_s: u32,
        unconfirmed_s: u32,
    },
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
}

/// Applies `how` to the live entry `e` of `key` (value `v`), recording for an HA peer what a
/// peer must know: a new gateway, a confirmation, or an expiry moved by a whole sync step.
/// The one place the rules live: [`State::touch`] and the fast path both call it.
#[inline(always)]
pub(super) fn apply_touch(
    e: &mut EntryMut<'_>,
    changes: &mut ChangeLog,
    key: &AffinityKey,
    v: AffinityValue,
    now: u32,
    how: Touch,
) -> Touched {
    let by_state = |confirmed_s: u32, unconfirmed_s: u32| {
        now.saturating_add(if v.confirmed {
            confirmed_s
        } else {
            unconfirmed_s
        })
    };
    match how {
        Touch::Peek => {}
        Touch::Refresh {
            confirmed_s,
            unconfirmed_s,
        } => {
            let expires_at = by_state(confirmed_s, unconfirmed_s);
            e.refresh(now, expires_at);
            if refresh_is_news(v.expires_at, expires_at) {
                changes.upsert(*key, v.gateway, v.confirmed, expires_at);
            }
        }
        Touch::Confirm { gateway, timeout_s } => {
            if v.gateway != gateway {
                return Touched::Mismatch;
            }
            let expires_at = now.saturating_add(timeout_s);
            let confirmed = e.confirm();
            e.refresh(now, expires_at);
            if confirmed || refresh_is_news(v.expires_at, expires_at) {
                changes.upsert(*key, gateway, true, expires_at);
            }
        }
        Touch::Point {
            gateway,
            confirmed_s,
            unconfirmed_s,
        } => {
            let expires_at = by_state(confirmed_s, unconfirmed_s);
            if v.gateway != gateway {
                e.set_gateway(gateway);
            }
            e.refresh(now, expires_at);
            if v.gateway != gateway || refresh_is_news(v.expires_at, expires_at) {
                changes.upsert(*key, gateway, v.confirmed, expires_at);
            }
        }
    }
    Touched::Live(v)
}

/// A removed entry: out of the active-client counts, and news for an HA peer.
pub(super) fn forget(services: &mut [ServiceState], changes: &mut ChangeLog, r: &Removed) {
    release(services, r);
    changes.delete(r.key);
}

/// Forgets a removed entry's client in the active-client counts.
pub(super) fn release(services: &mut [ServiceState], r: &Removed) {
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
        match self.shard.lookup(key, hash, now) {
            Lookup::Hit(mut e) => {
                let v = e.value();
                apply_touch(&mut e, &mut self.changes, key, v, now, how)
            }
            Lookup::Expired(r) => {
                forget(&mut self.services, &mut self.changes, &r);
                Touched::Absent
            }
            Lookup::Miss => Touched::Absent,
        }
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
            InsertOutcome::Full => return false,
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

    /// Return traffic from `gateway` to a client: confirms the client's entry, or learns one.
    pub(super) fn gateway_seen(&mut self, snap: &Snapshot, now: u32, f: &Flow, gateway: u16) {
        let svc = &snap.services[usize::from(f.service)];
        let timeout_s = svc.spec.persistence_timeout_s;
        let confirm = Touch::Confirm { gateway, timeout_s };
        match self.touch(&f.key, f.hash, now, confirm) {
            Touched::Live(_) => return,
            Touched::Mismatch => {
                self.counters.clients.gateway_mismatch += 1;
                return;
            }
            Touched::Absent => {}
        }
        let value = AffinityValue {
            gateway,
            last_seen: now,
            expires_at: now.saturating_add(timeout_s),
            confirmed: true,
        };
        if !self.admit(f.key, f.hash, value, now) {
            self.counters.clients.learn_failed_table_full += 1;
            return;
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
    /// created (unconfirmed), re-pointed or refreshed.
    pub(super) fn remember_direct(
        &mut self,
        svc: &ServiceView,
        now: u32,
        key: AffinityKey,
        hash: u64,
        gateway: u16,
    ) {
        let point = Touch::Point {
            gateway,
            confirmed_s: svc.spec.persistence_timeout_s,
            unconfirmed_s: svc.spec.unconfirmed_timeout_s,
        };
        if let Touched::Live(_) = self.touch(&key, hash, now, point) {
            return;
        }
        let value = AffinityValue {
            gateway,
            last_seen: now,
            expires_at: now.saturating_add(svc.spec.unconfirmed_timeout_s),
            confirmed: false,
        };
        if !self.admit(key, hash, value, now) {
            self.counters.clients.learn_failed_table_full += 1;
        }
    }

    /// The gateway `key`'s live entry names, without refreshing it.
    pub(super) fn gateway_of(&mut self, now: u32, key: &AffinityKey) -> Option<u16> {
        match self.touch(key, key.hash(), now, Touch::Peek) {
            Touched::Live(v) => Some(v.gateway),
            Touched::Absent | Touched::Mismatch => None,
        }
    }

    /// Whether `key`'s live entry names `gateway` (without refreshing it).
    pub(super) fn names_gateway(&mut self, now: u32, key: &AffinityKey, gateway: u16) -> bool {
        self.gateway_of(now, key) == Some(gateway)
    }
}
