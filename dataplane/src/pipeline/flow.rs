//! The affinity state machine: a client's entry found, refreshed, created, confirmed, moved or
//! forgotten, with the active-client counts and the HA change log kept in step.

use crate::pipeline::hash_client;
use crate::pipeline::parse::Flow;
use crate::pipeline::ServiceState;
use crate::pipeline::State;

use crate::affinity::{AffinityKey, AffinityValue, InsertOutcome, Lookup, Removed};
use crate::changes::{refresh_is_news, ChangeLog};
use crate::counters::DropReason;
use crate::model::{ServiceView, Snapshot};
use crate::schedule::GatewayState;

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
        let (confirmed_timeout, unconfirmed_timeout) = (
            svc.spec.persistence_timeout_s,
            svc.spec.unconfirmed_timeout_s,
        );
        let fam = svc.family(f.v6);
        let current = match self.shard.lookup(&f.key, f.hash, now) {
            Lookup::Hit(mut e) => {
                let v = e.value();
                let timeout = if v.confirmed {
                    confirmed_timeout
                } else {
                    unconfirmed_timeout
                };
                let expires_at = now.saturating_add(timeout);
                e.refresh(now, expires_at);
                if refresh_is_news(v.expires_at, expires_at) {
                    self.changes
                        .upsert(f.key, v.gateway, v.confirmed, expires_at);
                }
                let up = fam
                    .candidates
                    .get(usize::from(v.gateway))
                    .is_some_and(|c| c.state != GatewayState::Down);
                if up {
                    return Ok(v.gateway);
                }
                Some(v.gateway)
            }
            Lookup::Expired(r) => {
                forget(&mut self.services, &mut self.changes, &r);
                None
            }
            Lookup::Miss => None,
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
            expires_at: now.saturating_add(unconfirmed_timeout),
            confirmed: false,
        };
        match self.shard.insert(f.key, f.hash, value, now) {
            InsertOutcome::Inserted => {}
            InsertOutcome::InsertedEvicting(r) => forget(&mut self.services, &mut self.changes, &r),
            InsertOutcome::Full => {
                // Undo `schedule`'s count: the client was not admitted.
                if let Some(c) = self.services[usize::from(f.service)]
                    .active
                    .get_mut(usize::from(gateway))
                {
                    *c = c.saturating_sub(1);
                }
                return Err(DropReason::TableFull);
            }
        }
        self.changes.upsert(f.key, gateway, false, value.expires_at);
        self.counters.clients.scheduled += 1;
        self.counters.gateways[usize::from(f.service)][usize::from(gateway)].new_clients += 1;
        Ok(gateway)
    }

    /// Return traffic from `gateway` to a client: confirms the client's entry, or learns one.
    pub(super) fn gateway_seen(&mut self, snap: &Snapshot, now: u32, f: &Flow, gateway: u16) {
        let svc = &snap.services[usize::from(f.service)];
        let expires_at = now.saturating_add(svc.spec.persistence_timeout_s);
        match self.shard.lookup(&f.key, f.hash, now) {
            Lookup::Hit(mut e) => {
                let v = e.value();
                if v.gateway == gateway {
                    let confirmed = e.confirm();
                    e.refresh(now, expires_at);
                    if confirmed || refresh_is_news(v.expires_at, expires_at) {
                        self.changes.upsert(f.key, gateway, true, expires_at);
                    }
                } else {
                    self.counters.clients.gateway_mismatch += 1;
                }
                return;
            }
            Lookup::Expired(r) => forget(&mut self.services, &mut self.changes, &r),
            Lookup::Miss => {}
        }
        let value = AffinityValue {
            gateway,
            last_seen: now,
            expires_at,
            confirmed: true,
        };
        match self.shard.insert(f.key, f.hash, value, now) {
            InsertOutcome::Inserted => {}
            InsertOutcome::InsertedEvicting(r) => forget(&mut self.services, &mut self.changes, &r),
            InsertOutcome::Full => {
                self.counters.clients.learn_failed_table_full += 1;
                return;
            }
        }
        self.changes.upsert(f.key, gateway, true, expires_at);
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
        match self.shard.lookup(&key, hash, now) {
            Lookup::Hit(mut e) => {
                let v = e.value();
                let timeout = if v.confirmed {
                    svc.spec.persistence_timeout_s
                } else {
                    svc.spec.unconfirmed_timeout_s
                };
                let expires_at = now.saturating_add(timeout);
                if v.gateway != gateway {
                    e.set_gateway(gateway);
                }
                e.refresh(now, expires_at);
                if v.gateway != gateway || refresh_is_news(v.expires_at, expires_at) {
                    self.changes.upsert(key, gateway, v.confirmed, expires_at);
                }
                return;
            }
            Lookup::Expired(r) => forget(&mut self.services, &mut self.changes, &r),
            Lookup::Miss => {}
        }
        let value = AffinityValue {
            gateway,
            last_seen: now,
            expires_at: now.saturating_add(svc.spec.unconfirmed_timeout_s),
            confirmed: false,
        };
        match self.shard.insert(key, hash, value, now) {
            InsertOutcome::Inserted => {}
            InsertOutcome::InsertedEvicting(r) => forget(&mut self.services, &mut self.changes, &r),
            InsertOutcome::Full => {
                self.counters.clients.learn_failed_table_full += 1;
                return;
            }
        }
        self.changes.upsert(key, gateway, false, value.expires_at);
    }

    /// Whether `key`'s live entry names `gateway` (without refreshing it).
    pub(super) fn names_gateway(&mut self, now: u32, key: &AffinityKey, gateway: u16) -> bool {
        match self.shard.lookup(key, key.hash(), now) {
            Lookup::Hit(e) => e.value().gateway == gateway,
            Lookup::Expired(r) => {
                forget(&mut self.services, &mut self.changes, &r);
                false
            }
            Lookup::Miss => false,
        }
    }
}
