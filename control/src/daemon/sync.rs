//! Affinity sync between the two vpnlbd of an HA pair, on the control thread.
//!
//! The master's workers record every change of their shards ([`dataplane::changes`]); the
//! control thread drains them into a mirror of the whole table (what a bulk resync reads) and
//! into the [`SyncSession`], which batches them into authenticated UDP messages to the peer.
//! The backup applies what arrives to its mirror and hands each change to the worker that owns
//! the client (the same steering hash the NICs use), so its shards are warm: after a takeover
//! every client finds its entry. The session's messages are also the pair's fast heartbeat: a
//! master silent for `dead_after` × `heartbeat` is dead, and the backup takes over without
//! waiting for VRRP's master-down timer. A recovering appliance holds its preemption until it
//! has the current master's table.
//!
//! The socket lives in the exception path's namespace, on the appliance's own addresses, so
//! sync traffic crosses the dataplane like any other traffic for the appliance itself.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use crossbeam_channel::{Receiver, Sender, TrySendError};
use dataplane::affinity::AffinityKey;
use dataplane::changes::{synced_expiry, AffinityChange, ChangeOp};
use dataplane::model::ApplianceSpec;
use dataplane::steer::Steering;
use serde::Serialize;
use serde_json::{json, Value};
use tracing::{info, warn};

use super::control::IdMap;
use super::worker::Clock;
use crate::config::HaSettings;
use crate::sync::{
    layout_fingerprint, Change, Entry, Received, SyncConfig, SyncConfigError, SyncSession,
};

/// Changes the workers may queue for the control thread (all workers together).
pub const FROM_WORKERS: usize = 1 << 16;
/// Changes the control thread may queue for one worker; the rest wait in a backlog.
pub const TO_WORKER: usize = 1 << 14;
/// How long after start a backup holds its preemption even before it hears the peer.
const STARTUP_GRACE: std::time::Duration = std::time::Duration::from_secs(2);
/// How long a change may wait for more to fill a message.
const BATCH_DELAY_MS: u64 = 5;
/// How often the dual-master warning repeats while both appliances are master.
const DUAL_MASTER_WARN_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

/// What the mirror keeps of an entry.
#[derive(Clone, Copy, Debug)]
struct Mirrored {
    gateway: u16,
    confirmed: bool,
    /// In the workers' clock (seconds).
    expires_at: u32,
    /// The bulk generation that last touched it (backup side).
    generation: u64,
}

/// Counters beyond the session's.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct PairCounters {
    pub datagrams_out: u64,
    pub send_errors: u64,
    pub datagrams_in: u64,
    /// Datagrams from another address than the peer's: never looked at.
    pub datagrams_from_strangers: u64,
    /// Changes the workers reported (master).
    pub changes_from_workers: u64,
    /// Changes the workers could not report (their log or the queue was full): the peer gets
    /// the whole table again.
    pub changes_lost_by_workers: u64,
    /// Changes handed to the workers (backup), and those a full shard refused.
    pub changes_to_workers: u64,
    pub changes_refused_by_workers: u64,
    /// Entries removed at the end of a bulk: the master no longer had them.
    pub stale_removed: u64,
    /// Times the peer's heartbeat stopped.
    pub peer_deaths: u64,
    /// Entries not established (unconfirmed) that were not replicated: the workers' (none
    /// since they stopped recording them), and upserts of them from the peer (an older peer).
    pub unconfirmed_skipped: u64,
    /// Times a recovering appliance stopped holding its preemption because `sync_hold_max`
    /// passed before it had the master's table.
    pub preempt_hold_expired: u64,
}

/// The sync's state and counters, for Prometheus.
#[derive(Clone, Copy, Debug)]
pub struct SyncMetrics {
    /// Whether the peer's heartbeat is heard.
    pub peer_alive: bool,
    /// Whether this appliance holds the master's whole table.
    pub synced: bool,
    /// Messages sent that the peer has not acknowledged yet.
    pub lag: u64,
    pub session: crate::sync::SyncCounters,
    pub pair: PairCounters,
    /// Entries in the mirror.
    pub entries: usize,
    /// Whether both appliances are master (this one, and the peer by its authenticated sync
    /// messages), for longer than a dead interval.
    pub dual_master: bool,
}

/// The channels between the workers and the sync, made before the workers start.
pub struct SyncChannels {
    pub from_workers: (Sender<AffinityChange>, Receiver<AffinityChange>),
    pub to_workers: Vec<(Sender<AffinityChange>, Receiver<AffinityChange>)>,
    /// Changes the workers lost, counted by them (rare: a full log or queue).
    pub lost: Arc<AtomicU64>,
}

impl SyncChannels {
    pub fn new(workers: usize) -> SyncChannels {
        SyncChannels {
            from_workers: crossbeam_channel::bounded(FROM_WORKERS),
            to_workers: (0..workers)
                .map(|_| crossbeam_channel::bounded(TO_WORKER))
                .collect(),
            lost: Arc::new(AtomicU64::new(0)),
        }
    }
}

/// Why the HA affinity sync could not start.
#[derive(Debug, thiserror::Error)]
pub enum PairSyncError {
    /// `[ha]` names no peer.
    #[error("ha: no peer to sync with")]
    NoPeer,
    /// The exception path's namespace cannot be entered.
    #[error("ha: sync cannot enter the exception namespace: {0}")]
    Netns(#[source] std::io::Error),
    /// The sync socket cannot be bound.
    #[error("ha: sync socket on UDP {port}: {source}")]
    Bind { port: u16, source: std::io::Error },
    /// The sync socket cannot be made non-blocking.
    #[error("ha: sync socket: {0}")]
    Socket(#[source] std::io::Error),
    /// The session's settings are unusable.
    #[error("ha: {0}")]
    Config(#[from] SyncConfigError),
    /// More workers than steering counts (the configuration allows far fewer).
    #[error("ha: sync cannot steer entries to {0} workers")]
    TooManyWorkers(usize),
}

pub struct PairSync {
    session: SyncSession,
    socket: UdpSocket,
    peer: SocketAddr,
    mirror: HashMap<AffinityKey, Mirrored>,
    /// Keys of the bulk being sent, taken when it starts.
    bulk_keys: Vec<AffinityKey>,
    /// Generation of the last bulk started by the peer (backup side).
    generation: u64,
    from_workers: Receiver<AffinityChange>,
    to_workers: Vec<Sender<AffinityChange>>,
    backlog: Vec<VecDeque<AffinityChange>>,
    lost: Arc<AtomicU64>,
    lost_seen: u64,
    steering: Steering,
    clock: Clock,
    peer_alive: bool,
    /// Since when the peer, last seen as master, has been silent (`None` while it talks).
    master_silent_since: Option<Instant>,
    /// Whether both were master at the last poll, and when that was last logged.
    dual_master: bool,
    dual_master_warned: Option<Instant>,
    last_sweep: u32,
    counters: PairCounters,
    started: Instant,
    /// `[ha] sync_hold_max`.
    hold_max: std::time::Duration,
    /// The hold gave up (logged once).
    hold_expired: bool,
    /// Since when preemption may be held: start-up, or the last [`PairSync::pull_table`].
    hold_since: Instant,
}

impl PairSync {
    /// Binds the sync socket (in `netns` if given) and starts the session.
    pub fn new(
        settings: &HaSettings,
        spec: &ApplianceSpec,
        netns: Option<&str>,
        channels: &SyncChannels,
        clock: Clock,
    ) -> Result<PairSync, PairSyncError> {
        let peer_ip = settings.peer.ok_or(PairSyncError::NoPeer)?;
        let peer = SocketAddr::new(peer_ip, settings.sync_port);
        let any: IpAddr = match peer_ip {
            IpAddr::V4(_) => Ipv4Addr::UNSPECIFIED.into(),
            IpAddr::V6(_) => Ipv6Addr::UNSPECIFIED.into(),
        };
        let socket = {
            // The guard brings this thread back to its own namespace; the socket stays where
            // it was made.
            let _netns = netns
                .map(netdev::netns::enter)
                .transpose()
                .map_err(PairSyncError::Netns)?;
            UdpSocket::bind(SocketAddr::new(any, settings.sync_port)).map_err(|source| {
                PairSyncError::Bind {
                    port: settings.sync_port,
                    source,
                }
            })?
        };
        socket
            .set_nonblocking(true)
            .map_err(PairSyncError::Socket)?;
        let cfg = SyncConfig {
            key: settings.sync_key.clone(),
            heartbeat: settings.heartbeat,
            dead_after: settings.dead_after,
            layout: layout(spec),
            batch_delay: std::time::Duration::from_millis(BATCH_DELAY_MS),
            bulk_rate: settings.sync_bulk_rate,
        };
        cfg.validate()?;
        let id = session_id();
        info!(peer = %peer, session = id, "HA sync started");
        let started = Instant::now();
        let workers = channels.to_workers.len();
        let steering = u16::try_from(workers.max(1))
            .map(Steering::new)
            .map_err(|_| PairSyncError::TooManyWorkers(workers))?;
        Ok(PairSync {
            session: SyncSession::new(cfg, id),
            socket,
            peer,
            mirror: HashMap::new(),
            bulk_keys: Vec::new(),
            generation: 0,
            from_workers: channels.from_workers.1.clone(),
            to_workers: channels
                .to_workers
                .iter()
                .map(|(tx, _)| tx.clone())
                .collect(),
            backlog: (0..workers).map(|_| VecDeque::new()).collect(),
            lost: Arc::clone(&channels.lost),
            lost_seen: 0,
            steering,
            clock,
            peer_alive: false,
            master_silent_since: None,
            dual_master: false,
            dual_master_warned: None,
            last_sweep: 0,
            counters: PairCounters::default(),
            started,
            hold_max: settings.sync_hold_max,
            hold_expired: false,
            hold_since: started,
        })
    }

    /// One round: the workers' changes, what the peer sent, what is due to it.
    pub fn poll(&mut self, now: Instant, master: bool) {
        self.session.set_master(master);
        let now_s = self.clock.now_s();
        self.collect(now_s, master);
        self.receive(now, now_s, master);
        let (mirror, keys) = (&self.mirror, &mut self.bulk_keys);
        let mut read = |cursor: &mut u64, out: &mut Vec<Entry>, max: usize| -> bool {
            read_bulk(mirror, keys, now_s, cursor, out, max)
        };
        for d in self.session.poll(now, &mut read) {
            match self.socket.send_to(&d, self.peer) {
                Ok(_) => self.counters.datagrams_out += 1,
                Err(_) => self.counters.send_errors += 1,
            }
        }
        self.feed_workers();
        if now_s != self.last_sweep {
            self.last_sweep = now_s;
            self.mirror.retain(|_, m| m.expires_at > now_s);
        }
        let alive = self.session.peer_alive(now);
        if self.peer_alive && !alive {
            self.counters.peer_deaths += 1;
            // Only a dead master is worth a takeover; a backup's silence changes nothing.
            if self.session.peer_is_master() == Some(true) {
                self.master_silent_since = Some(now);
            }
            warn!(peer = %self.peer, "HA peer silent: heartbeat lost");
        } else if alive {
            self.master_silent_since = None;
        }
        self.peer_alive = alive;
        self.watch_dual_master(now);
    }

    /// Warns while both appliances are master (at once, then every
    /// [`DUAL_MASTER_WARN_EVERY`]), and says when it is over. VRRP has no authentication: a
    /// forged advert, or a VRRP segment that splits, makes two masters; the sync messages are
    /// authenticated, so they are what shows it.
    fn watch_dual_master(&mut self, now: Instant) {
        let dual = self.session.dual_master(now);
        if dual {
            let due = self
                .dual_master_warned
                .is_none_or(|t| now.saturating_duration_since(t) >= DUAL_MASTER_WARN_EVERY);
            if !self.dual_master || due {
                self.dual_master_warned = Some(now);
                warn!(
                    peer = %self.peer,
                    session = self.session.id(),
                    peer_session = self.session.peer_id(),
                    events = self.session.counters().dual_master_events,
                    "HA: both appliances are master (the peer's authenticated sync messages say \
                     it is master too); check the VRRP segments"
                );
            }
        } else if self.dual_master {
            self.dual_master_warned = None;
            info!(peer = %self.peer, "HA: dual master over");
        }
        self.dual_master = dual;
    }

    /// Since when the master's heartbeat has been missing, while it still is.
    pub fn master_silent_since(&self) -> Option<Instant> {
        self.master_silent_since
    }

    /// Whether a backup should hold its preemption: it does not have the master's table yet
    /// (the whole of a bulk: a bulk that lost messages is synced only once resumed to its
    /// end), and either the peer talks (its bulk is on the way) or this appliance has only
    /// just started (the peer's first heartbeat may not have arrived: preempting then would
    /// take the VIPs with an empty table). Never longer than `[ha] sync_hold_max`: a peer
    /// whose table never comes (another layout, say) must not keep us from our role for
    /// ever; giving up is logged and counted.
    pub fn hold_preemption(&mut self, now: Instant) -> bool {
        if self.session.synced() {
            return false;
        }
        let age = now.saturating_duration_since(self.hold_since);
        let wanted = self.peer_alive || age < STARTUP_GRACE;
        if wanted && age >= self.hold_max {
            if !self.hold_expired {
                self.hold_expired = true;
                self.counters.preempt_hold_expired += 1;
                warn!(
                    peer = %self.peer,
                    waited_s = age.as_secs(),
                    entries = self.mirror.len(),
                    "HA sync: the master's table has not arrived within sync_hold_max; \
                     preemption no longer held (the table may be partial)"
                );
            }
            return false;
        }
        wanted
    }

    /// Asks the peer for its whole table, and holds preemption from `now` until it has come
    /// (as at start-up, [`hold_preemption`](Self::hold_preemption)): after a stall (the
    /// watchdog), a worker may have missed some of the master's changes, so this appliance must
    /// not take the VIPs back before it has them all.
    pub fn pull_table(&mut self, now: Instant) {
        self.session.request_resync();
        self.hold_since = now;
        self.hold_expired = false;
        info!(peer = %self.peer, "HA sync: pulling the peer's table before preempting");
    }

    /// Re-keys the mirror after a reload moved services or gateways (`map` as the workers'),
    /// and restarts the session under the new layout: the peer sees a new session and the
    /// master sends its whole table again.
    pub fn relayout(&mut self, spec: &ApplianceSpec, map: &IdMap) {
        let old = std::mem::take(&mut self.mirror);
        for (k, mut m) in old {
            let to = map
                .get(usize::from(k.service_index()))
                .and_then(|s| s.get(usize::from(m.gateway)))
                .copied()
                .flatten();
            if let Some((service, gateway)) = to {
                m.gateway = gateway;
                let direct = k.service & dataplane::affinity::DIRECT;
                let service = service | direct;
                self.mirror.insert(AffinityKey { service, ..k }, m);
            }
        }
        let new_layout = layout(spec);
        if new_layout != self.session.config().layout {
            let cfg = SyncConfig {
                layout: new_layout,
                ..self.session.config().clone()
            };
            let master = self.session.is_master();
            self.session = SyncSession::new(cfg, session_id());
            self.session.set_master(master);
            self.peer_alive = false;
            info!(
                session = self.session.id(),
                "HA sync: new layout, new session"
            );
        }
    }

    /// Master: the workers' changes into the mirror and the session.
    fn collect(&mut self, now_s: u32, master: bool) {
        let lost = self.lost.load(Ordering::Relaxed);
        if lost != self.lost_seen {
            self.counters.changes_lost_by_workers += lost - self.lost_seen;
            self.lost_seen = lost;
            if master {
                // The peer's copy misses something; the mirror may too, but it is what we
                // have: entries it lacks come back with their clients' next refresh.
                self.session.push_bulk();
            }
        }
        while let Ok(c) = self.from_workers.try_recv() {
            self.counters.changes_from_workers += 1;
            if !master {
                continue;
            }
            let change = match c.op {
                ChangeOp::Upsert {
                    confirmed: false, ..
                } => {
                    // Not established: no news for the peer (the workers no longer record
                    // these; kept as a guard).
                    self.counters.unconfirmed_skipped += 1;
                    continue;
                }
                ChangeOp::Upsert {
                    gateway,
                    confirmed,
                    expires_at,
                } => {
                    let m = Mirrored {
                        gateway,
                        confirmed,
                        expires_at,
                        generation: self.generation,
                    };
                    self.mirror.insert(c.key, m);
                    Change::Upsert(entry(&c.key, &m, now_s))
                }
                ChangeOp::Delete => {
                    self.mirror.remove(&c.key);
                    Change::Delete {
                        client: c.key.client_ip(),
                        service: c.key.service,
                    }
                }
            };
            self.session.push(change);
        }
    }

    fn receive(&mut self, now: Instant, now_s: u32, master: bool) {
        let mut buf = [0u8; 2048];
        loop {
            let (n, from) = match self.socket.recv_from(&mut buf) {
                Ok(r) => r,
                Err(_) => return,
            };
            self.counters.datagrams_in += 1;
            if from.ip() != self.peer.ip() {
                self.counters.datagrams_from_strangers += 1;
                continue;
            }
            let Ok(r) = self.session.receive(now, &buf[..n]) else {
                continue;
            };
            // A master's table is its own; what a peer that also calls itself master sends
            // in a brief overlap is not applied.
            if master {
                continue;
            }
            match r {
                Received::Changes(changes) => {
                    for c in changes {
                        self.apply(c, now_s);
                    }
                }
                Received::BulkStarted => self.generation += 1,
                Received::BulkEnded { entries } => {
                    let g = self.generation;
                    let stale: Vec<AffinityKey> = self
                        .mirror
                        .iter()
                        .filter(|(_, m)| m.generation < g)
                        .map(|(k, _)| *k)
                        .collect();
                    for k in &stale {
                        self.mirror.remove(k);
                        self.queue_for_owner(AffinityChange {
                            key: *k,
                            op: ChangeOp::Delete,
                        });
                    }
                    self.counters.stale_removed += stale.len() as u64;
                    info!(
                        entries,
                        stale = stale.len(),
                        "HA sync: the master's table received"
                    );
                }
                Received::Heartbeat
                | Received::BulkAborted
                | Received::BulkIncomplete
                | Received::BulkResumed
                | Received::ResyncRequested
                | Received::Hello => {}
            }
        }
    }

    /// Backup: one of the master's changes, into the mirror and to the owning worker.
    fn apply(&mut self, c: Change, now_s: u32) {
        let change = match c {
            Change::Upsert(e) if !e.confirmed => {
                // An older peer replicating an entry not established: not taken.
                self.counters.unconfirmed_skipped += 1;
                return;
            }
            Change::Upsert(e) => {
                let key = AffinityKey::new(e.client, e.service);
                let expires_at = synced_expiry(now_s.saturating_add(e.expires_in_s));
                self.mirror.insert(
                    key,
                    Mirrored {
                        gateway: e.gateway,
                        confirmed: e.confirmed,
                        expires_at,
                        generation: self.generation,
                    },
                );
                AffinityChange {
                    key,
                    op: ChangeOp::Upsert {
                        gateway: e.gateway,
                        confirmed: e.confirmed,
                        expires_at,
                    },
                }
            }
            Change::Delete { client, service } => {
                let key = AffinityKey::new(client, service);
                self.mirror.remove(&key);
                AffinityChange {
                    key,
                    op: ChangeOp::Delete,
                }
            }
        };
        self.queue_for_owner(change);
    }

    fn queue_for_owner(&mut self, c: AffinityChange) {
        let client = c.key.client_ip();
        let owner = match client {
            IpAddr::V4(a) => self.steering.owner_of_client(&a.octets()),
            IpAddr::V6(a) => self.steering.owner_of_client(&a.octets()),
        };
        if let Some(b) = self.backlog.get_mut(usize::from(owner)) {
            b.push_back(c);
        }
    }

    /// Hands the backlog to the workers as far as their queues take it.
    fn feed_workers(&mut self) {
        for (tx, backlog) in self.to_workers.iter().zip(&mut self.backlog) {
            while let Some(c) = backlog.pop_front() {
                match tx.try_send(c) {
                    Ok(()) => self.counters.changes_to_workers += 1,
                    Err(TrySendError::Full(c)) => {
                        backlog.push_front(c);
                        break;
                    }
                    Err(TrySendError::Disconnected(_)) => break,
                }
            }
        }
    }

    /// `show sync`.
    pub fn status(&self, now: Instant) -> Value {
        let s = &self.session;
        json!({
            "peer": self.peer,
            "session": s.id(),
            "master": s.is_master(),
            "peer_session": s.peer_id(),
            "peer_alive": s.peer_alive(now),
            "peer_is_master": s.peer_is_master(),
            "dual_master": s.dual_master(now),
            "synced": s.synced(),
            "bulk_in_progress": s.bulk_in_progress(),
            "lag": s.lag(),
            "entries": self.mirror.len(),
            "backlog_to_workers": self.backlog.iter().map(VecDeque::len).sum::<usize>(),
            "uptime_s": now.saturating_duration_since(self.started).as_secs(),
            "session_counters": s.counters(),
            "counters": self.counters,
        })
    }

    /// What Prometheus shows of the sync at `now`.
    pub fn metrics(&self, now: Instant) -> SyncMetrics {
        let s = &self.session;
        SyncMetrics {
            peer_alive: s.peer_alive(now),
            synced: s.synced(),
            lag: s.lag(),
            session: s.counters(),
            pair: self.counters,
            entries: self.mirror.len(),
            dual_master: s.dual_master(now),
        }
    }
}

/// The bulk source: up to `max` entries of `mirror` from position `*cursor` of `keys` (taken
/// from the mirror when a bulk starts, at cursor 0), established ones only; false at the end.
fn read_bulk(
    mirror: &HashMap<AffinityKey, Mirrored>,
    keys: &mut Vec<AffinityKey>,
    now_s: u32,
    cursor: &mut u64,
    out: &mut Vec<Entry>,
    max: usize,
) -> bool {
    if *cursor == 0 {
        keys.clear();
        keys.extend(mirror.keys().copied());
    }
    while out.len() < max {
        // A cursor past usize::MAX is past the end of the keys.
        let Some(k) = usize::try_from(*cursor).ok().and_then(|c| keys.get(c)) else {
            return false;
        };
        *cursor += 1;
        // Established entries only (the mirror holds no others on a master; a former backup's
        // may, from an older peer).
        if let Some(m) = mirror.get(k).filter(|m| m.confirmed) {
            out.push(entry(k, m, now_s));
        }
    }
    usize::try_from(*cursor).is_ok_and(|c| c < keys.len())
}

/// The sync entry for a mirrored one.
fn entry(k: &AffinityKey, m: &Mirrored, now_s: u32) -> Entry {
    Entry {
        client: k.client_ip(),
        service: k.service,
        gateway: m.gateway,
        confirmed: m.confirmed,
        expires_in_s: m.expires_at.saturating_sub(now_s),
    }
}

/// The layout fingerprint of a spec: its services' and gateways' names in order.
fn layout(spec: &ApplianceSpec) -> u64 {
    layout_fingerprint(spec.services.iter().map(|s| {
        (
            s.name.as_str(),
            s.gateways
                .iter()
                .map(|g| g.name.as_str())
                .collect::<Vec<_>>(),
        )
    }))
}

/// A session nonce: 64 random bits from the kernel (`/dev/urandom`), new for every session.
/// The peer binds its messages to it, so it must not repeat across restarts and must not be
/// guessable. Should the read fail (no `/dev` in a container, say), std's `RandomState`, whose
/// keys come from the OS's random source too, with the time and pid mixed in.
fn session_id() -> u64 {
    let [id] = crate::random::words::<1>("HA sync session nonce");
    id.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn pair_sync(hold_max: Duration) -> PairSync {
        let text = include_str!("../../../conf/lab-pair-a.toml");
        let cfg = crate::config::load_config_str(text, "lab-pair-a.toml").expect("pair config");
        let mut settings = cfg.ha.clone().expect("[ha]");
        settings.sync_port = 0; // any free port: nothing is sent to it here
        settings.sync_hold_max = hold_max;
        let clock = Clock {
            unix_at_start: 0,
            tsc_at_start: 0,
            tsc_hz: u64::MAX,
        };
        PairSync::new(&settings, &cfg.spec, None, &SyncChannels::new(1), clock).expect("sync")
    }

    fn key(i: u8) -> AffinityKey {
        AffinityKey::new(IpAddr::V4(Ipv4Addr::new(198, 18, 64, i)), 0)
    }

    /// A bulk carries established entries only; a peer's upsert of an unconfirmed entry is
    /// not taken.
    #[test]
    fn unconfirmed_entries_never_cross() {
        let mut mirror = HashMap::new();
        for i in 0..10u8 {
            let m = Mirrored {
                gateway: 1,
                confirmed: i % 2 == 0,
                expires_at: 300,
                generation: 0,
            };
            mirror.insert(key(i), m);
        }
        let (mut keys, mut cursor, mut out) = (Vec::new(), 0, Vec::new());
        loop {
            let mut chunk = Vec::new();
            let more = read_bulk(&mirror, &mut keys, 0, &mut cursor, &mut chunk, 3);
            out.extend(chunk);
            if !more {
                break;
            }
        }
        assert_eq!(out.len(), 5);
        assert!(out.iter().all(|e| e.confirmed));

        let mut p = pair_sync(Duration::from_secs(60));
        let e = |confirmed| Entry {
            client: key(1).client_ip(),
            service: 0,
            gateway: 1,
            confirmed,
            expires_in_s: 300,
        };
        p.apply(Change::Upsert(e(false)), 0);
        assert!(p.mirror.is_empty());
        assert_eq!(p.counters.unconfirmed_skipped, 1);
        p.apply(Change::Upsert(e(true)), 0);
        assert_eq!(p.mirror.len(), 1);
        // A delete of an entry never had is harmless.
        p.apply(
            Change::Delete {
                client: key(2).client_ip(),
                service: 0,
            },
            0,
        );
        assert_eq!(p.mirror.len(), 1);
    }

    /// A recovering appliance holds its preemption until it has the master's table, at most
    /// `sync_hold_max` (then it says so once).
    #[test]
    fn preemption_is_held_until_synced_or_the_hold_max() {
        let mut p = pair_sync(Duration::from_secs(60));
        let t = p.started;
        assert!(p.hold_preemption(t), "just started, not synced");
        p.peer_alive = true;
        assert!(
            p.hold_preemption(t + Duration::from_secs(30)),
            "the bulk is on its way"
        );
        assert!(!p.hold_preemption(t + Duration::from_secs(61)));
        assert!(!p.hold_preemption(t + Duration::from_secs(62)));
        assert_eq!(p.counters.preempt_hold_expired, 1, "once");

        let mut p = pair_sync(Duration::from_secs(5));
        let t = p.started;
        p.peer_alive = true;
        assert!(p.hold_preemption(t + Duration::from_secs(4)));
        assert!(!p.hold_preemption(t + Duration::from_secs(5)));
        // A peer that is gone holds nothing once the start-up grace is over.
        let mut p = pair_sync(Duration::from_secs(60));
        let t = p.started;
        assert!(!p.hold_preemption(t + STARTUP_GRACE));
        assert_eq!(p.counters.preempt_hold_expired, 0);
    }

    #[test]
    fn pull_table_holds_preemption_again_until_the_bulk() {
        let mut p = pair_sync(Duration::from_secs(60));
        let later = p.started + Duration::from_secs(600);
        p.peer_alive = true;
        assert!(
            !p.hold_preemption(later),
            "not synced, but sync_hold_max is long over"
        );
        // The watchdog's stall is over: held again, for sync_hold_max from the pull.
        p.pull_table(later);
        assert!(!p.session.synced());
        assert!(p.hold_preemption(later + Duration::from_secs(1)));
        assert!(!p.hold_preemption(later + Duration::from_secs(61)));
        // With the peer silent, the start-up grace counts from the pull too.
        p.pull_table(later + Duration::from_secs(100));
        p.peer_alive = false;
        assert!(p.hold_preemption(later + Duration::from_secs(101)));
        assert!(!p.hold_preemption(later + Duration::from_secs(103)));
        assert_eq!(p.counters.preempt_hold_expired, 2);
    }
}
