//! One endpoint of the affinity-sync protocol: what to send and what a received datagram means.
//!
//! Pure logic: no sockets, threads or clock reads. The caller passes `now`, sends what
//! [`SyncSession::poll`] returns to the peer and feeds what arrives to
//! [`SyncSession::receive`]. The protocol is described in the [module docs](super).

use std::collections::VecDeque;
use std::fmt;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::message::{
    self, Header, Kind, Message, SyncKey, SyncKeyError, FLAG_MASTER, FLAG_RESUME, MAX_ENTRIES,
    MIN_KEY_LEN,
};
pub use super::message::{Change, Entry, RejectReason};

/// The most bulk chunks one [`SyncSession::poll`] sends (47 entries, 1386 bytes each): about
/// 22 KB per poll, so a poll stays short and the peer's socket buffer (200 KB by default) is
/// not flooded. It is also the pacing's burst: however long since the last poll, no more than
/// this goes out at once; the rate is [`SyncConfig::bulk_rate`].
pub const BULK_CHUNKS_PER_POLL: usize = 16;
/// The default bulk pacing, in bulk chunks per millisecond: 10 000 datagrams (470 000 entries)
/// a second, a million entries in about 2.1 s, half the peer's default receive budget
/// (`[ha] sync_rate_pps`, 25 000 datagrams a second), so deltas and heartbeats keep room.
pub const DEFAULT_BULK_RATE: u32 = 10;
/// The most delta changes a sender keeps to resume a bulk with (what it sent since the bulk
/// began, oldest dropped first): a resume after a sequence number older than the oldest kept
/// change restarts the bulk from the beginning instead.
pub const MAX_RESUME_LOG: usize = 65_536;
/// The most delta messages one poll sends; the rest wait for the next poll, in order.
pub const DELTAS_PER_POLL: usize = 64;
/// The most changes [`SyncSession::push`] queues. Beyond that the peer cannot keep up anyway:
/// the queue is dropped and the peer gets a bulk transfer instead, which carries the same
/// final state in bounded memory.
pub const MAX_PENDING_CHANGES: usize = 65_536;
/// How many sender nonces keep their own replay window: the current peer and its previous
/// sessions, so that an old session's captured messages stay replays (and stale ones stay
/// refused).
const SENDER_WINDOWS: usize = 8;
/// The pacing's burst, in thousandths of a chunk.
const BULK_BURST_CREDIT: u64 = BULK_CHUNKS_PER_POLL as u64 * 1000;

/// Why session settings are unusable.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SyncConfigError {
    /// The shared key.
    #[error(transparent)]
    Key(#[from] SyncKeyError),
    /// A zero heartbeat interval.
    #[error("sync heartbeat must be above zero")]
    ZeroHeartbeat,
    /// A zero `dead_after`.
    #[error("sync dead_after must be at least 1")]
    ZeroDeadAfter,
    /// A zero bulk rate.
    #[error("sync bulk rate must be above zero")]
    ZeroBulkRate,
}

/// Settings of a session; the same on both appliances.
#[derive(Clone, PartialEq, Eq)]
pub struct SyncConfig {
    /// The pair's shared HMAC key, at least 16 bytes.
    pub key: Vec<u8>,
    /// Heartbeat interval, e.g. 20 ms: a heartbeat goes out when nothing else did for this long.
    pub heartbeat: Duration,
    /// Heartbeats missed in a row after which the peer is dead, e.g. 3.
    pub dead_after: u32,
    /// Layout fingerprint of the configuration ([`message::layout_fingerprint`]).
    pub layout: u64,
    /// How long a change may wait for more to fill a message, e.g. 10 ms.
    pub batch_delay: Duration,
    /// Bulk pacing: the most bulk chunks sent per millisecond, on average
    /// ([`DEFAULT_BULK_RATE`]), so that the peer's receive budget, rings and socket are not
    /// overrun by a bulk.
    pub bulk_rate: u32,
}

impl SyncConfig {
    /// Checks the settings [`SyncSession::new`] relies on, for config loaders to report.
    pub fn validate(&self) -> Result<(), SyncConfigError> {
        if self.key.len() < MIN_KEY_LEN {
            return Err(SyncKeyError::TooShort {
                len: self.key.len(),
            }
            .into());
        }
        if self.heartbeat.is_zero() {
            return Err(SyncConfigError::ZeroHeartbeat);
        }
        if self.dead_after == 0 {
            return Err(SyncConfigError::ZeroDeadAfter);
        }
        if self.bulk_rate == 0 {
            return Err(SyncConfigError::ZeroBulkRate);
        }
        Ok(())
    }

    /// How long the peer may stay silent before it is dead: `dead_after` × `heartbeat`.
    pub fn dead_interval(&self) -> Duration {
        self.heartbeat.saturating_mul(self.dead_after)
    }
}

impl fmt::Debug for SyncConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The key stays out of logs and panics.
        f.debug_struct("SyncConfig")
            .field("key", &format_args!("<{} bytes>", self.key.len()))
            .field("heartbeat", &self.heartbeat)
            .field("dead_after", &self.dead_after)
            .field("layout", &format_args!("{:#018x}", self.layout))
            .field("batch_delay", &self.batch_delay)
            .field("bulk_rate", &self.bulk_rate)
            .finish()
    }
}

/// What an accepted datagram means for the receiver's table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Received {
    /// A heartbeat: the peer is alive (nothing to apply).
    Heartbeat,
    /// Changes to apply in order: from a delta, or the upserts of a bulk chunk.
    Changes(Vec<Change>),
    /// The peer starts sending its whole table: remember this point (a generation); every
    /// change applied from now on is part of the peer's current table.
    BulkStarted,
    /// The bulk is complete and nothing of it was lost: remove the entries that no change has
    /// touched since the matching [`BulkStarted`](Received::BulkStarted); `entries` is how
    /// many the bulk carried.
    BulkEnded {
        /// Entries in the bulk's chunks.
        entries: u64,
    },
    /// The bulk ended, but its start was never seen: remove nothing. The session has already
    /// asked for a new one where it mirrors the peer.
    BulkAborted,
    /// The bulk's end arrived while messages of it are missing: remove nothing yet. The
    /// session has asked the peer to resume after the last message it has without a gap; the
    /// bulk ends again (with [`BulkEnded`](Received::BulkEnded)) once the resumed part is in.
    BulkIncomplete,
    /// The peer resumes the bulk where this side lost it (nothing to apply; no new
    /// generation: what follows belongs to the bulk in progress).
    BulkResumed,
    /// The peer asked for our whole table; the next polls send it (nothing to apply).
    ResyncRequested,
    /// A hello: a message from a peer session that has not heard ours yet (its receiver nonce
    /// is 0), while no bound peer is alive. Nothing in it is applied, whatever its kind: the
    /// session only learns the sender's nonce and answers at the next poll, so that the
    /// sender's later messages are bound to this session.
    Hello,
}

/// Rejected datagrams, by reason.
#[derive(Clone, Copy, Debug, Default, Serialize, PartialEq, Eq)]
pub struct RejectCounters {
    /// [`RejectReason::Truncated`].
    pub truncated: u64,
    /// [`RejectReason::TooLong`].
    pub too_long: u64,
    /// [`RejectReason::BadMagic`].
    pub bad_magic: u64,
    /// [`RejectReason::BadVersion`].
    pub bad_version: u64,
    /// [`RejectReason::BadTag`].
    pub bad_tag: u64,
    /// [`RejectReason::BadKind`].
    pub bad_kind: u64,
    /// [`RejectReason::LayoutMismatch`].
    pub layout_mismatch: u64,
    /// [`RejectReason::BadEntry`].
    pub bad_entry: u64,
    /// [`RejectReason::Replayed`].
    pub replayed: u64,
    /// [`RejectReason::Reflected`].
    pub reflected: u64,
    /// [`RejectReason::OtherSession`].
    pub other_session: u64,
    /// [`RejectReason::StalePeer`].
    pub stale_peer: u64,
}

impl RejectCounters {
    /// The counter of one reason.
    pub fn get(&self, r: RejectReason) -> u64 {
        match r {
            RejectReason::Truncated => self.truncated,
            RejectReason::TooLong => self.too_long,
            RejectReason::BadMagic => self.bad_magic,
            RejectReason::BadVersion => self.bad_version,
            RejectReason::BadTag => self.bad_tag,
            RejectReason::BadKind => self.bad_kind,
            RejectReason::LayoutMismatch => self.layout_mismatch,
            RejectReason::BadEntry => self.bad_entry,
            RejectReason::Replayed => self.replayed,
            RejectReason::Reflected => self.reflected,
            RejectReason::OtherSession => self.other_session,
            RejectReason::StalePeer => self.stale_peer,
        }
    }

    /// All rejections.
    pub fn total(&self) -> u64 {
        RejectReason::ALL.iter().map(|r| self.get(*r)).sum()
    }

    fn bump(&mut self, r: RejectReason) {
        let c = match r {
            RejectReason::Truncated => &mut self.truncated,
            RejectReason::TooLong => &mut self.too_long,
            RejectReason::BadMagic => &mut self.bad_magic,
            RejectReason::BadVersion => &mut self.bad_version,
            RejectReason::BadTag => &mut self.bad_tag,
            RejectReason::BadKind => &mut self.bad_kind,
            RejectReason::LayoutMismatch => &mut self.layout_mismatch,
            RejectReason::BadEntry => &mut self.bad_entry,
            RejectReason::Replayed => &mut self.replayed,
            RejectReason::Reflected => &mut self.reflected,
            RejectReason::OtherSession => &mut self.other_session,
            RejectReason::StalePeer => &mut self.stale_peer,
        };
        *c += 1;
    }
}

/// What a session has done, for `show stats` and Prometheus.
#[derive(Clone, Copy, Debug, Default, Serialize, PartialEq, Eq)]
pub struct SyncCounters {
    /// Messages sent (every kind).
    pub messages_out: u64,
    /// Entries sent, in deltas and bulk chunks.
    pub entries_out: u64,
    /// Heartbeats sent.
    pub heartbeats_out: u64,
    /// Messages accepted (every kind), bound to this session.
    pub messages_in: u64,
    /// Hellos accepted: messages from a peer session that had not heard ours yet (nothing in
    /// them applied).
    pub hellos_in: u64,
    /// Entries accepted, in deltas and bulk chunks.
    pub entries_in: u64,
    /// Heartbeats accepted.
    pub heartbeats_in: u64,
    /// Resync requests sent (retries included).
    pub resyncs_requested: u64,
    /// Bulk transfers started because the peer asked.
    pub resyncs_served: u64,
    /// Resync requests that a bulk already on its way to the peer answers.
    pub resyncs_coalesced: u64,
    /// Bulk transfers started unasked: to a new peer while master, or after a queue overflow.
    pub bulks_pushed: u64,
    /// Bulk transfers sent to their end.
    pub bulks_sent: u64,
    /// Bulk transfers received complete.
    pub bulks_received: u64,
    /// Bulk transfers received with messages missing (nothing removed).
    pub bulks_aborted: u64,
    /// Gaps in the peer's sequence, and peer restarts (a new id replacing a known one).
    pub gaps: u64,
    /// Messages of the peer never received, summed over the gaps.
    pub messages_missed: u64,
    /// Peer sessions bound for the first time (the first peer, and each restart).
    pub peers_joined: u64,
    /// Of those, sessions that replaced a known peer: the peer restarted.
    pub peer_restarts: u64,
    /// Times both appliances were master at once: this one master, and the peer's messages
    /// saying it is master too for a dead interval (one count per episode).
    pub dual_master_events: u64,
    /// Times the change queue overflowed and was replaced by a bulk transfer.
    pub queue_overflows: u64,
    /// Resume requests sent (retries included): a bulk, or the stream after it, lost messages
    /// and this side asked the peer to go on after the last message it has without a gap.
    pub resumes_requested: u64,
    /// Bulks resumed because the peer asked: sent again from where the peer lost them.
    pub bulks_resumed: u64,
    /// Of the resume requests received, those that could not be resumed (too old for the
    /// resume log) and restarted the bulk from the beginning.
    pub resumes_refused: u64,
    /// Delta changes sent again on a resume.
    pub changes_replayed: u64,
    /// Bulk chunks sent (resent ones included).
    pub bulk_chunks_out: u64,
    /// Entries sent in bulk chunks (resent ones included).
    pub bulk_entries_out: u64,
    /// Polls where the bulk pacing held chunks back.
    pub bulk_paced: u64,
    /// Rejected datagrams, by reason.
    pub rejects: RejectCounters,
}

/// The replay window of one sender nonce.
#[derive(Clone, Copy, Debug)]
struct SenderWindow {
    id: u64,
    /// Highest sequence number accepted from it (hellos included).
    last_seq: u64,
    /// When it was last used, in accepted messages, to evict the stalest.
    used: u64,
    /// A newer peer session has replaced it: nothing more of it is accepted.
    retired: bool,
}

/// What the last accepted bound message said about the peer.
#[derive(Clone, Copy, Debug)]
struct Peer {
    id: u64,
    master: bool,
    /// Its ack: the highest of our sequence numbers it has accepted.
    ack: u64,
    last_rx: Instant,
}

/// A bulk transfer we send.
#[derive(Clone, Copy, Debug)]
struct BulkTx {
    /// Sequence number of its BulkStart, once sent.
    start_seq: Option<u64>,
    /// The table callback's position.
    cursor: u64,
    /// The table was read to its end: only the BulkEnd is due.
    exhausted: bool,
    /// A resume is due: its BulkResume goes out first, before the replayed deltas.
    resume_due: bool,
}

/// What a sender keeps of its latest bulk to resume it after a loss (see
/// [`SyncSession::resume_point`]).
#[derive(Clone, Debug, Default)]
struct ResumeLog {
    /// Sequence number of the bulk's BulkStart.
    start_seq: u64,
    /// In sequence order: the last chunk of each table read with the cursor after it, each
    /// BulkResume with the cursor it resumed from, and each BulkEnd (`None`: the table's end).
    marks: Vec<(u64, Option<u64>)>,
    /// The changes sent in deltas since the bulk began, with their sequence numbers, in the
    /// order sent (replays included), at most [`MAX_RESUME_LOG`].
    deltas: VecDeque<(u64, Change)>,
    /// No resume after a sequence number below this: deltas sent after it were dropped.
    floor: u64,
}

/// A bulk transfer we receive.
#[derive(Clone, Copy, Debug)]
struct BulkRx {
    sender: u64,
    entries: u64,
    /// A message of the sender was lost since `through`: a resume is awaited.
    broken: bool,
    /// Every message of the sender up to this sequence number has been applied, or what it
    /// carried sent again since (a resume): the point a resume goes on from.
    through: u64,
    /// Sequence number of our first resume request for the current break: a BulkResume
    /// acknowledging it (or later) answers a request about this break, not an older one.
    asked: Option<u64>,
    /// Its BulkEnd arrived with nothing missing (kept so that a later loss resumes).
    ended: bool,
}

/// One endpoint of the sync protocol (see the [module docs](super)).
#[derive(Debug)]
pub struct SyncSession {
    cfg: SyncConfig,
    key: SyncKey,
    /// Our session nonce: the sender field of our messages.
    my_id: u64,
    /// The peer's nonce as we last learned it (0: none): the receiver field of our messages.
    /// The bound peer's, or the latest hello's while no bound peer is alive.
    echo: u64,
    /// `echo` changed: send a message at the next poll, so that the peer binds at once.
    reply_due: bool,
    master: bool,
    /// Our last sequence number sent (0: none yet).
    seq: u64,
    last_sent: Option<Instant>,
    /// The latest `now` seen, to date pushes (which get no `now` of their own).
    last_now: Option<Instant>,
    pending: VecDeque<Change>,
    /// When the oldest pending change was queued (as far as this session knows the time).
    pending_since: Option<Instant>,
    bulk_tx: Option<BulkTx>,
    /// Start sequence of the latest bulk we began sending, finished or not.
    last_bulk_start: Option<u64>,
    /// What we keep of our latest bulk to resume it.
    resume_log: Option<ResumeLog>,
    /// Bulk pacing credit, in thousandths of a chunk, and when it was last refilled.
    bulk_credit: u64,
    bulk_credit_at: Option<Instant>,
    windows: Vec<SenderWindow>,
    accepted: u64,
    peer: Option<Peer>,
    bulk_rx: Option<BulkRx>,
    /// Our copy of the peer's table is complete: a bulk ended clean and nothing was lost since.
    synced: bool,
    /// [`SyncSession::request_resync`] was called: ask whatever the roles.
    resync_forced: bool,
    /// When we last asked for a resync, or when the grace period for a new peer began.
    resync_asked_at: Option<Instant>,
    /// Since when we are master and the peer's messages say it is master too.
    dual_since: Option<Instant>,
    /// That has lasted a dead interval: counted, and [`SyncSession::dual_master`] says so.
    dual_reported: bool,
    counters: SyncCounters,
}

impl SyncSession {
    /// A session with the random nonce `my_id` (new for every session: unpredictable, never
    /// reused); it starts as backup.
    ///
    /// # Panics
    /// If `cfg` fails [`SyncConfig::validate`] (check configurations with it first), or if
    /// `my_id` is 0 (which means "no nonce" on the wire).
    pub fn new(cfg: SyncConfig, my_id: u64) -> Self {
        if let Err(e) = cfg.validate() {
            panic!("invalid sync config: {e}");
        }
        assert!(my_id != 0, "a sync session nonce of 0");
        let key = SyncKey::new(&cfg.key).expect("key length checked by validate");
        SyncSession {
            cfg,
            key,
            my_id,
            echo: 0,
            reply_due: false,
            master: false,
            seq: 0,
            last_sent: None,
            last_now: None,
            pending: VecDeque::new(),
            pending_since: None,
            bulk_tx: None,
            last_bulk_start: None,
            resume_log: None,
            bulk_credit: BULK_BURST_CREDIT,
            bulk_credit_at: None,
            windows: Vec::with_capacity(SENDER_WINDOWS),
            accepted: 0,
            peer: None,
            bulk_rx: None,
            synced: false,
            resync_forced: false,
            resync_asked_at: None,
            dual_since: None,
            dual_reported: false,
            counters: SyncCounters::default(),
        }
    }

    /// The settings the session runs with.
    pub fn config(&self) -> &SyncConfig {
        &self.cfg
    }

    /// Sends the whole table to the peer, unasked (the caller's record of what the peer has
    /// may be incomplete: changes were lost before they reached the session).
    pub fn push_bulk(&mut self) {
        self.start_bulk();
        self.counters.bulks_pushed += 1;
    }

    /// Our session nonce.
    pub fn id(&self) -> u64 {
        self.my_id
    }

    /// Sets our role (from VRRP): it goes out in every message's master flag, decides who
    /// pushes a bulk to a new peer, and whom a backup asks for resyncs.
    pub fn set_master(&mut self, master: bool) {
        self.master = master;
        if !master {
            self.dual_since = None;
            self.dual_reported = false;
        }
    }

    /// Our role, as last set.
    pub fn is_master(&self) -> bool {
        self.master
    }

    /// Changes of the local table (master side) to stream; batched.
    ///
    /// Push every change, in the order it was made to the table, right after making it: a
    /// bulk transfer reads the table itself, and the deltas must describe the same history.
    pub fn push(&mut self, c: Change) {
        if self.pending.len() >= MAX_PENDING_CHANGES {
            // The peer (or our polling) cannot keep up; rather than grow without bound, send
            // the current table, which says the same as the queued changes.
            self.pending.clear();
            self.pending_since = None;
            self.counters.queue_overflows += 1;
            self.start_bulk();
            self.counters.bulks_pushed += 1;
            return;
        }
        if self.pending.is_empty() {
            self.pending_since = self.last_now;
        }
        self.pending.push_back(c);
    }

    /// Asks the peer for its whole table at the next poll, and again every
    /// [`dead_interval`](SyncConfig::dead_interval) until a bulk arrives, whatever the roles:
    /// for a recovering appliance that must pull state before it preempts although the peer is
    /// no master (both backup at start).
    pub fn request_resync(&mut self) {
        self.synced = false;
        self.resync_forced = true;
        self.resync_asked_at = None;
    }

    /// Messages to send now (heartbeats on schedule, batches when full or `batch_delay` old, a
    /// bulk transfer in progress, a resync request when one is due). Bounded work per call:
    /// at most [`DELTAS_PER_POLL`] deltas and [`BULK_CHUNKS_PER_POLL`] table callbacks.
    ///
    /// `table` is the bulk source: it appends up to `n` entries from position `*cursor` to the
    /// vector, advances `*cursor`, and returns false once the end of the table is reached
    /// (entries appended in that call still count). The session keeps the cursor and sets it
    /// to 0 when a bulk (re)starts. An entry present during the whole bulk must be visited at
    /// least once; entries added or removed meanwhile reach the peer as deltas.
    pub fn poll(
        &mut self,
        now: Instant,
        table: &mut dyn FnMut(&mut u64, &mut Vec<Entry>, usize) -> bool,
    ) -> Vec<Vec<u8>> {
        self.last_now = Some(now);
        let mut out = Vec::new();

        if self.resync_due(now) {
            out.push(self.resync_request(now));
            self.resync_asked_at = Some(now);
        }

        // A resume goes out before the deltas it replays (queued first in `pending`).
        if let Some(mut bulk) = self.bulk_tx.filter(|b| b.resume_due) {
            out.push(self.emit(now, Kind::BulkResume, Vec::new()));
            bulk.resume_due = false;
            let mark = (!bulk.exhausted).then_some(bulk.cursor);
            if let Some(log) = self.resume_log.as_mut() {
                log.marks.push((self.seq, mark));
            }
            self.bulk_tx = Some(bulk);
        }

        // Deltas: full messages at once; the rest when the oldest change is batch_delay old,
        // or before a bulk's messages so that the stream stays in the order of the table's
        // history (a bulk chunk read now must not be followed by an older delta).
        if !self.pending.is_empty() && self.pending_since.is_none() {
            self.pending_since = Some(now);
        }
        let flush_all = self.bulk_tx.is_some()
            || self
                .pending_since
                .is_some_and(|t| now.saturating_duration_since(t) >= self.cfg.batch_delay);
        let mut deltas = 0;
        while deltas < DELTAS_PER_POLL
            && (self.pending.len() >= MAX_ENTRIES || (flush_all && !self.pending.is_empty()))
        {
            let n = self.pending.len().min(MAX_ENTRIES);
            let changes: Vec<Change> = self.pending.drain(..n).collect();
            out.push(self.emit(now, Kind::Delta, changes));
            deltas += 1;
        }
        if self.pending.is_empty() {
            self.pending_since = None;
        }

        if self.pending.is_empty() {
            self.poll_bulk(now, table, &mut out);
        }

        if out.is_empty()
            && (self.reply_due
                || self
                    .last_sent
                    .is_none_or(|t| now.saturating_duration_since(t) >= self.cfg.heartbeat))
        {
            out.push(self.emit(now, Kind::Heartbeat, Vec::new()));
        }
        out
    }

    /// Sends the next part of the bulk transfer in progress, if any.
    fn poll_bulk(
        &mut self,
        now: Instant,
        table: &mut dyn FnMut(&mut u64, &mut Vec<Entry>, usize) -> bool,
        out: &mut Vec<Vec<u8>>,
    ) {
        let Some(mut bulk) = self.bulk_tx else {
            return;
        };
        if bulk.start_seq.is_none() {
            out.push(self.emit(now, Kind::BulkStart, Vec::new()));
            bulk.start_seq = Some(self.seq);
            self.last_bulk_start = Some(self.seq);
        }
        // Pacing: `bulk_rate` chunks per millisecond, at most a poll's worth at once.
        let elapsed = self
            .bulk_credit_at
            .map_or(Duration::ZERO, |t| now.saturating_duration_since(t));
        self.bulk_credit_at = Some(now);
        let earned = u64::try_from(elapsed.as_micros())
            .unwrap_or(u64::MAX)
            .saturating_mul(u64::from(self.cfg.bulk_rate));
        self.bulk_credit = self
            .bulk_credit
            .saturating_add(earned)
            .min(BULK_BURST_CREDIT);
        let mut entries = Vec::with_capacity(MAX_ENTRIES);
        // Bounded work per poll too: a table read may find nothing to send.
        let mut reads = 0;
        while !bulk.exhausted {
            if reads == BULK_CHUNKS_PER_POLL {
                self.bulk_tx = Some(bulk);
                return;
            }
            reads += 1;
            if self.bulk_credit < 1000 {
                self.counters.bulk_paced += 1;
                self.bulk_tx = Some(bulk);
                return;
            }
            entries.clear();
            let more = table(&mut bulk.cursor, &mut entries, MAX_ENTRIES);
            // A callback that appends more than asked still has every entry sent.
            for chunk in entries.chunks(MAX_ENTRIES) {
                let changes: Vec<Change> = chunk.iter().copied().map(Change::Upsert).collect();
                self.counters.bulk_chunks_out += 1;
                self.counters.bulk_entries_out += changes.len() as u64;
                self.bulk_credit = self.bulk_credit.saturating_sub(1000);
                out.push(self.emit(now, Kind::BulkChunk, changes));
            }
            // The cursor after the last chunk of this read: where a resume after it goes on.
            let mark = more.then_some(bulk.cursor);
            if let Some(log) = self.resume_log.as_mut() {
                log.marks.push((self.seq, mark));
            }
            bulk.exhausted = !more;
        }
        out.push(self.emit(now, Kind::BulkEnd, Vec::new()));
        if let Some(log) = self.resume_log.as_mut() {
            log.marks.push((self.seq, None));
        }
        self.counters.bulks_sent += 1;
        self.bulk_tx = None;
    }

    /// A resync request: to resume the bulk we receive after the last message we have without
    /// a gap where we have one, else for the whole table.
    fn resync_request(&mut self, now: Instant) -> Vec<u8> {
        let peer = self.peer.map(|p| p.id);
        let resume = self
            .bulk_rx
            .filter(|b| Some(b.sender) == peer && b.broken)
            .map(|b| b.through);
        match resume {
            Some(through) => {
                let d = self.emit_with(now, Kind::ResyncRequest, Vec::new(), FLAG_RESUME, through);
                if let Some(b) = self.bulk_rx.as_mut() {
                    b.asked.get_or_insert(self.seq);
                }
                self.counters.resumes_requested += 1;
                d
            }
            None => {
                self.counters.resyncs_requested += 1;
                self.emit(now, Kind::ResyncRequest, Vec::new())
            }
        }
    }

    /// Whether a resync request goes out now.
    fn resync_due(&self, now: Instant) -> bool {
        if self.synced {
            return false;
        }
        // A clean bulk on its way makes us synced; asking would only restart it.
        if let (Some(b), Some(p)) = (self.bulk_rx, self.peer) {
            if b.sender == p.id && !b.broken && !b.ended {
                return false;
            }
        }
        // Only a master's table is authoritative: a backup mirrors the master, never the
        // other way round, and a master never overwrites its live table with a copy.
        let roles = self.peer.is_some_and(|p| p.master) && !self.master;
        if !(self.resync_forced || roles) {
            return false;
        }
        // A resume is cheap and a bulk goes on while we wait: ask again every heartbeat. A
        // whole table, every dead interval.
        let resuming = self
            .bulk_rx
            .is_some_and(|b| b.broken && self.peer.is_some_and(|p| p.id == b.sender));
        let every = if resuming {
            self.cfg.heartbeat
        } else {
            self.cfg.dead_interval()
        };
        self.resync_asked_at
            .is_none_or(|t| now.saturating_duration_since(t) >= every)
    }

    /// Builds the next message and does the sender's bookkeeping.
    fn emit(&mut self, now: Instant, kind: Kind, changes: Vec<Change>) -> Vec<u8> {
        let ack = self.ack();
        self.emit_with(now, kind, changes, 0, ack)
    }

    /// [`emit`](Self::emit) with extra header flags and the ack field given.
    fn emit_with(
        &mut self,
        now: Instant,
        kind: Kind,
        changes: Vec<Change>,
        flags: u16,
        ack: u64,
    ) -> Vec<u8> {
        self.seq += 1;
        let header = Header {
            kind,
            flags: flags | if self.master { FLAG_MASTER } else { 0 },
            sender: self.my_id,
            receiver: self.echo,
            seq: self.seq,
            layout: self.cfg.layout,
            ack,
        };
        match kind {
            Kind::BulkStart => {
                self.resume_log = Some(ResumeLog {
                    start_seq: self.seq,
                    floor: self.seq,
                    ..ResumeLog::default()
                });
            }
            Kind::Delta => {
                if let Some(log) = self.resume_log.as_mut() {
                    for c in &changes {
                        if log.deltas.len() >= MAX_RESUME_LOG {
                            if let Some((s, _)) = log.deltas.pop_front() {
                                log.floor = log.floor.max(s);
                            }
                        }
                        log.deltas.push_back((self.seq, *c));
                    }
                }
            }
            _ => {}
        }
        self.counters.messages_out += 1;
        self.counters.entries_out += changes.len() as u64;
        if kind == Kind::Heartbeat {
            self.counters.heartbeats_out += 1;
        }
        self.last_sent = Some(now);
        self.reply_due = false;
        message::encode(&self.key, &Message { header, changes })
    }

    /// The highest sequence number accepted from the peer session we address.
    fn ack(&self) -> u64 {
        if self.echo == 0 {
            return 0;
        }
        self.windows
            .iter()
            .find(|w| w.id == self.echo)
            .map_or(0, |w| w.last_seq)
    }

    /// (Re)starts a bulk transfer of our table from its beginning.
    fn start_bulk(&mut self) {
        self.bulk_tx = Some(BulkTx {
            start_seq: None,
            cursor: 0,
            exhausted: false,
            resume_due: false,
        });
    }

    /// Where a bulk resumed after our sequence number `after` goes on: `Some(Some(cursor))` to
    /// read the table from `cursor`, `Some(None)` when the table had been read to its end by
    /// then (only the deltas since and a BulkEnd are due), `None` when it cannot be resumed
    /// (no bulk of ours covers `after`, or deltas sent since were dropped from the log).
    fn resume_point(&self, after: u64) -> Option<Option<u64>> {
        let log = self.resume_log.as_ref()?;
        if after < log.start_seq || after < log.floor || after > self.seq {
            return None;
        }
        let i = log.marks.partition_point(|(s, _)| *s <= after);
        Some(match i {
            0 => Some(0),
            i => log.marks[i - 1].1,
        })
    }

    /// Resumes our bulk after our sequence number `after` (the peer has everything up to it):
    /// the BulkResume, the deltas sent since (again, in order, before anything newer), then
    /// the table from the position reached at `after`, and the BulkEnd.
    fn resume_bulk(&mut self, after: u64, cursor: Option<u64>) {
        let Some(log) = self.resume_log.as_ref() else {
            return;
        };
        let replay: Vec<Change> = log
            .deltas
            .iter()
            .filter(|(s, _)| *s > after)
            .map(|(_, c)| *c)
            .collect();
        self.counters.changes_replayed += replay.len() as u64;
        if !replay.is_empty() && self.pending.is_empty() {
            self.pending_since = self.last_now;
        }
        for c in replay.into_iter().rev() {
            self.pending.push_front(c);
        }
        self.bulk_tx = Some(BulkTx {
            start_seq: Some(log.start_seq),
            cursor: cursor.unwrap_or(0),
            exhausted: cursor.is_none(),
            resume_due: true,
        });
        self.counters.bulks_resumed += 1;
    }

    /// A received datagram: `Ok` with what it means, or `Err` with why it was rejected
    /// (counted). A rejected datagram changes nothing but its counter.
    pub fn receive(&mut self, now: Instant, datagram: &[u8]) -> Result<Received, RejectReason> {
        match self.accept(now, datagram) {
            Ok(r) => Ok(r),
            Err(r) => {
                self.counters.rejects.bump(r);
                Err(r)
            }
        }
    }

    fn accept(&mut self, now: Instant, datagram: &[u8]) -> Result<Received, RejectReason> {
        let msg = message::decode(&self.key, self.cfg.layout, datagram)?;
        let h = msg.header;
        if h.sender == self.my_id {
            return Err(RejectReason::Reflected);
        }
        let window = self.windows.iter().position(|w| w.id == h.sender);
        let last_seq = window.map_or(0, |i| self.windows[i].last_seq);
        // Sequence numbers start at 1, so 0 is never above anything.
        if h.seq <= last_seq {
            return Err(RejectReason::Replayed);
        }
        if window.is_some_and(|i| self.windows[i].retired) {
            return Err(RejectReason::StalePeer);
        }
        if h.receiver != self.my_id {
            return self.hello(now, &h, window);
        }

        // Bound to this session, so made after it began: fresh. From here on the message
        // changes state.
        let was_alive = self.peer_alive(now);
        let previous = self.peer.map(|p| p.id);
        let joined = previous != Some(h.sender);
        self.accepted += 1;
        self.last_now = Some(now);
        self.counters.messages_in += 1;
        self.counters.entries_in += msg.changes.len() as u64;
        self.remember(window, h.sender, h.seq);
        if joined {
            if let Some(w) = self.windows.iter_mut().find(|w| Some(w.id) == previous) {
                w.retired = true;
            }
        }
        // The ack refers to our sequence numbers only once the peer has heard this process;
        // a larger one is about a previous incarnation of ours, and means nothing yet.
        let ack = if h.ack <= self.seq { h.ack } else { 0 };
        self.peer = Some(Peer {
            id: h.sender,
            master: h.master(),
            ack,
            last_rx: now,
        });
        if self.echo != h.sender {
            self.echo = h.sender;
            self.reply_due = true;
        }
        if joined {
            self.on_peer_joined(now, previous.is_some());
        } else if h.seq > last_seq + 1 {
            self.on_gap(h.sender, h.seq - last_seq - 1);
        }
        if let Some(b) = self.bulk_rx.as_mut().filter(|b| b.sender == h.sender) {
            if !b.broken {
                b.through = h.seq;
            }
        }
        self.check_dual_master(now, h.master(), joined || !was_alive);

        Ok(match h.kind {
            Kind::Heartbeat => {
                self.counters.heartbeats_in += 1;
                Received::Heartbeat
            }
            Kind::Delta => Received::Changes(msg.changes),
            Kind::BulkStart => {
                // Replaces any bulk in progress: the peer restarted it from the beginning.
                self.bulk_rx = Some(BulkRx {
                    sender: h.sender,
                    entries: 0,
                    broken: false,
                    through: h.seq,
                    asked: None,
                    ended: false,
                });
                Received::BulkStarted
            }
            Kind::BulkResume => {
                // Only a resume that answers a request about the current break mends it: one
                // asked for an earlier break goes on from a point before messages we lost
                // since. (Applying what an older resume resends does no harm: it is the
                // peer's history again, in order, then its current table.)
                match self.bulk_rx.as_mut().filter(|b| b.sender == h.sender) {
                    Some(b) if b.broken && b.asked.is_some_and(|q| h.ack >= q) => {
                        b.broken = false;
                        b.asked = None;
                        b.ended = false;
                        b.through = h.seq;
                        self.resync_asked_at = None;
                    }
                    _ => {}
                }
                Received::BulkResumed
            }
            Kind::BulkChunk => {
                if let Some(b) = self.bulk_rx.as_mut().filter(|b| b.sender == h.sender) {
                    b.entries += msg.changes.len() as u64;
                }
                Received::Changes(msg.changes)
            }
            Kind::BulkEnd => self.bulk_ended(h.sender),
            Kind::ResyncRequest => {
                self.serve_resync(&h);
                Received::ResyncRequested
            }
        })
    }

    /// The end of a bulk from `sender`: the table is whole unless the bulk broke (then the
    /// resume asked for ends it again).
    fn bulk_ended(&mut self, sender: u64) -> Received {
        match self.bulk_rx.filter(|b| b.sender == sender) {
            Some(b) => {
                if b.broken {
                    // Kept: the resume asked for ends the bulk again.
                    Received::BulkIncomplete
                } else {
                    // Kept too: a later loss resumes after the last message we have.
                    if let Some(b) = self.bulk_rx.as_mut() {
                        b.entries = 0;
                        b.ended = true;
                    }
                    self.synced = true;
                    // Kept until now so that a forced pull whose bulk broke asks again.
                    self.resync_forced = false;
                    self.counters.bulks_received += 1;
                    Received::BulkEnded { entries: b.entries }
                }
            }
            None => {
                self.counters.bulks_aborted += 1;
                Received::BulkAborted
            }
        }
    }

    /// A message not bound to this session (its receiver nonce is not ours): nothing in it is
    /// applied. With a receiver nonce of 0 the sender has heard no peer yet: while no bound
    /// peer is alive, that is a hello, and we address the sender from now on. Anything else is
    /// refused: a receiver nonce of another session is a capture from before this session
    /// began (or a peer that has not heard us yet, which learns our nonce from our next
    /// message); a hello while the bound peer is alive is a replay (or a peer that restarted
    /// within a dead interval, which retries).
    ///
    /// Learning a nonce from a replayed old hello opens nothing: that session's messages carry
    /// another receiver nonce than ours, and the real peer's next hello takes over again.
    fn hello(
        &mut self,
        now: Instant,
        h: &Header,
        window: Option<usize>,
    ) -> Result<Received, RejectReason> {
        if h.receiver != 0 {
            return Err(RejectReason::OtherSession);
        }
        if self.peer_alive(now) {
            return Err(RejectReason::StalePeer);
        }
        self.accepted += 1;
        self.remember(window, h.sender, h.seq);
        if self.echo != h.sender {
            self.echo = h.sender;
            self.reply_due = true;
        }
        self.counters.hellos_in += 1;
        Ok(Received::Hello)
    }

    /// Records `seq` as the highest accepted from `sender` (whose window is `window`, if any).
    fn remember(&mut self, window: Option<usize>, sender: u64, seq: u64) {
        match window {
            Some(i) => {
                self.windows[i].last_seq = seq;
                self.windows[i].used = self.accepted;
            }
            None => {
                if self.windows.len() == SENDER_WINDOWS {
                    // The bound peer's window stays, whatever hellos come.
                    let peer = self.peer.map(|p| p.id);
                    let stalest = (0..self.windows.len())
                        .filter(|&i| Some(self.windows[i].id) != peer)
                        .min_by_key(|&i| self.windows[i].used)
                        .unwrap_or(0);
                    self.windows.swap_remove(stalest);
                }
                self.windows.push(SenderWindow {
                    id: sender,
                    last_seq: seq,
                    used: self.accepted,
                    retired: false,
                });
            }
        }
    }

    /// Both master: we are, and the peer's bound message says it is too. A preemption makes a
    /// brief overlap (the old master steps down at the new one's first advert), so only an
    /// overlap that lasts a dead interval counts. `fresh`: the peer is new or was dead, so an
    /// earlier overlap is over.
    fn check_dual_master(&mut self, now: Instant, peer_master: bool, fresh: bool) {
        if fresh || !(self.master && peer_master) {
            self.dual_since = None;
            self.dual_reported = false;
        }
        if !(self.master && peer_master) {
            return;
        }
        let since = *self.dual_since.get_or_insert(now);
        if !self.dual_reported && now.saturating_duration_since(since) >= self.cfg.dead_interval() {
            self.dual_reported = true;
            self.counters.dual_master_events += 1;
        }
    }

    /// Whether both appliances are master: we are, the peer is alive, and its messages have
    /// said it is master for at least a dead interval. VRRP has no authentication, so this is
    /// the one authenticated view of a split brain.
    pub fn dual_master(&self, now: Instant) -> bool {
        self.dual_reported
            && self.master
            && self.peer_alive(now)
            && self.peer.is_some_and(|p| p.master)
    }

    /// A peer session bound to ours for the first time: the peer process is new to us
    /// (`restarted` when it replaces a known one).
    ///
    /// - Whoever is master pushes a bulk of its table to the new peer unasked, so a new backup
    ///   gets the state without asking, and a recovering old master, which comes back as
    ///   backup, pulls the state back from the current master before it preempts.
    /// - The new peer is asked for nothing merely for being new: where it is the master, it
    ///   sees us as new too and pushes. Only if no bulk has started within a dead interval
    ///   (its BulkStart was lost) does a backup ask, as after any loss.
    /// - A restart of a known peer (a new session replacing it) is a gap in its stream:
    ///   counted as one, and a backup asks the restarted master at once (where its bulk has
    ///   not begun already: a restarted master binds only after it has heard us, so its push
    ///   usually comes first); the master coalesces that request with the bulk it pushes.
    fn on_peer_joined(&mut self, now: Instant, restarted: bool) {
        self.counters.peers_joined += 1;
        self.synced = false;
        if restarted {
            self.counters.peer_restarts += 1;
            self.counters.gaps += 1;
            self.resync_asked_at = None;
        } else {
            // Grace period: the master's push is on its way.
            self.resync_asked_at = Some(now);
        }
        if self.master {
            self.start_bulk();
            self.counters.bulks_pushed += 1;
        }
    }

    /// `missed` messages of `sender` were lost: what they said must come again in a bulk.
    fn on_gap(&mut self, sender: u64, missed: u64) {
        self.counters.gaps += 1;
        self.counters.messages_missed += missed;
        if let Some(b) = self.bulk_rx.as_mut().filter(|b| b.sender == sender) {
            if !b.broken {
                b.broken = true;
                b.asked = None;
            }
        }
        self.synced = false;
        self.resync_asked_at = None;
    }

    /// The peer asked for our table, or to resume our bulk; its `ack` tells what it has seen
    /// of our stream.
    fn serve_resync(&mut self, h: &Header) {
        let ack = h.ack;
        if h.resume() {
            if let Some(cursor) = self.resume_point(ack) {
                self.resume_bulk(ack, cursor);
                return;
            }
            // Too old to resume (or no bulk of ours): the whole table, whatever is on its way
            // (the requester has lost part of it).
            self.counters.resumes_refused += 1;
            if self.bulk_tx.is_some_and(|b| b.start_seq.is_none()) {
                self.counters.resyncs_coalesced += 1;
            } else {
                self.start_bulk();
                self.counters.resyncs_served += 1;
            }
            return;
        }
        let unstarted = self.bulk_tx.is_some_and(|b| b.start_seq.is_none());
        // A request sent before the requester saw our latest BulkStart is answered by that
        // bulk (the requester will see its start, or a gap and then ask again with a higher
        // ack). Without this, the peer's request on joining and our push to it would make two
        // bulks. An ack of 0 says nothing, so it is served.
        let answered = ack != 0 && self.last_bulk_start.is_some_and(|s| ack < s);
        if unstarted || answered {
            self.counters.resyncs_coalesced += 1;
        } else {
            self.start_bulk();
            self.counters.resyncs_served += 1;
        }
    }

    /// Whether a valid message came from the peer within `dead_after` × `heartbeat`.
    pub fn peer_alive(&self, now: Instant) -> bool {
        self.peer
            .is_some_and(|p| now.saturating_duration_since(p.last_rx) < self.cfg.dead_interval())
    }

    /// Whether the peer said it is master in its last valid message; `None` before any.
    pub fn peer_is_master(&self) -> Option<bool> {
        self.peer.map(|p| p.master)
    }

    /// The bound peer's session nonce, from its last valid message.
    pub fn peer_id(&self) -> Option<u64> {
        self.peer.map(|p| p.id)
    }

    /// How many of our messages the peer has not acknowledged: our last sequence number minus
    /// the peer's ack (all of them before the peer has acknowledged any of this process's).
    pub fn lag(&self) -> u64 {
        self.seq - self.peer.map_or(0, |p| p.ack)
    }

    /// Whether our copy of the peer's table is complete: a bulk from it ended with nothing lost,
    /// and nothing was lost since.
    pub fn synced(&self) -> bool {
        self.synced
    }

    /// Whether we are sending a bulk transfer.
    pub fn bulk_in_progress(&self) -> bool {
        self.bulk_tx.is_some()
    }

    /// Counters since the session started.
    pub fn counters(&self) -> SyncCounters {
        self.counters
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sync::message::{decode, encode, MAX_MESSAGE_LEN};
    use proptest::prelude::*;
    use std::collections::{BTreeMap, HashMap};
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

    const LAYOUT: u64 = 0x5eed_0f1a_7007;
    const MS: Duration = Duration::from_millis(1);

    fn cfg() -> SyncConfig {
        SyncConfig {
            key: b"pair-key-0123456789abcdef".to_vec(),
            heartbeat: 20 * MS,
            dead_after: 3,
            layout: LAYOUT,
            batch_delay: 10 * MS,
            bulk_rate: DEFAULT_BULK_RATE,
        }
    }

    fn client(i: usize) -> IpAddr {
        if i % 5 == 4 {
            IpAddr::V6(Ipv6Addr::new(0x2001, 2, 0, 0x64, 0, 0, 0, i as u16))
        } else {
            IpAddr::V4(Ipv4Addr::new(
                198,
                18,
                64 + (i / 256) as u8,
                (i % 256) as u8,
            ))
        }
    }

    fn entry(i: usize, gateway: u16) -> Entry {
        Entry {
            client: client(i),
            service: (i % 2) as u16,
            gateway,
            confirmed: i % 3 == 0,
            expires_in_s: 300 + i as u32,
        }
    }

    /// The master's table: one slot per client, so that a slot index is a cursor that stays
    /// valid while the table changes (as a hash table's bucket index does).
    #[derive(Clone, Debug)]
    struct Slots(Vec<Option<Entry>>);

    impl Slots {
        fn new(n: usize) -> Self {
            Slots(vec![None; n])
        }

        fn set(&mut self, s: &mut SyncSession, i: usize, gateway: Option<u16>) {
            let e = entry(i, gateway.unwrap_or(0));
            match gateway {
                Some(_) => {
                    self.0[i] = Some(e);
                    s.push(Change::Upsert(e));
                }
                None => {
                    self.0[i] = None;
                    s.push(Change::Delete {
                        client: e.client,
                        service: e.service,
                    });
                }
            }
        }

        fn fill(&mut self, cursor: &mut u64, out: &mut Vec<Entry>, n: usize) -> bool {
            let mut i = *cursor as usize;
            while i < self.0.len() && out.len() < n {
                if let Some(e) = self.0[i] {
                    out.push(e);
                }
                i += 1;
            }
            *cursor = i as u64;
            i < self.0.len()
        }

        fn map(&self) -> BTreeMap<(IpAddr, u16), Entry> {
            self.0
                .iter()
                .flatten()
                .map(|e| ((e.client, e.service), *e))
                .collect()
        }
    }

    /// The receiver's table, applying what `receive` says with the generation sweep of the
    /// module docs.
    #[derive(Default, Debug)]
    struct Mirror {
        entries: HashMap<(IpAddr, u16), (Entry, u64)>,
        generation: u64,
        bulk: Option<u64>,
        bulks_ended: u64,
    }

    impl Mirror {
        fn apply(&mut self, r: Received) {
            match r {
                Received::Changes(changes) => {
                    for c in changes {
                        match c {
                            Change::Upsert(e) => {
                                self.entries
                                    .insert((e.client, e.service), (e, self.generation));
                            }
                            Change::Delete { client, service } => {
                                self.entries.remove(&(client, service));
                            }
                        }
                    }
                }
                Received::BulkStarted => {
                    self.generation += 1;
                    self.bulk = Some(self.generation);
                }
                Received::BulkEnded { .. } => {
                    // Kept: a resumed bulk ends again (the same generation).
                    let g = self.bulk.expect("a bulk ends after it started");
                    self.entries.retain(|_, (_, stamp)| *stamp >= g);
                    self.bulks_ended += 1;
                }
                Received::BulkAborted => self.bulk = None,
                Received::Heartbeat
                | Received::ResyncRequested
                | Received::Hello
                | Received::BulkIncomplete
                | Received::BulkResumed => {}
            }
        }

        fn map(&self) -> BTreeMap<(IpAddr, u16), Entry> {
            self.entries.iter().map(|(k, (e, _))| (*k, *e)).collect()
        }
    }

    /// A master with a table and a backup mirroring it, exchanging messages in memory.
    struct Pair {
        a: SyncSession,
        b: SyncSession,
        table: Slots,
        mirror: Mirror,
        now: Instant,
    }

    impl Pair {
        fn new(slots: usize) -> Self {
            let mut a = SyncSession::new(cfg(), 0xa);
            a.set_master(true);
            Pair {
                a,
                b: SyncSession::new(cfg(), 0xb),
                table: Slots::new(slots),
                mirror: Mirror::default(),
                now: Instant::now(),
            }
        }

        fn poll_a(&mut self) -> Vec<Vec<u8>> {
            let table = &mut self.table;
            self.a
                .poll(self.now, &mut |c: &mut u64, out: &mut Vec<Entry>, n| {
                    table.fill(c, out, n)
                })
        }

        fn poll_b(&mut self) -> Vec<Vec<u8>> {
            // The backup's table is never asked for here: nobody asks a backup.
            self.b
                .poll(self.now, &mut |_: &mut u64, _: &mut Vec<Entry>, _| {
                    panic!("the backup sends no bulk")
                })
        }

        fn deliver_b(&mut self, msgs: Vec<Vec<u8>>) {
            for m in msgs {
                let r = self.b.receive(self.now, &m).expect("valid message");
                self.mirror.apply(r);
            }
        }

        fn deliver_a(&mut self, msgs: Vec<Vec<u8>>) {
            for m in msgs {
                self.a.receive(self.now, &m).expect("valid message");
            }
        }

        /// One round without loss, then `dt` passes.
        fn step(&mut self, dt: Duration) {
            let m = self.poll_a();
            self.deliver_b(m);
            let m = self.poll_b();
            self.deliver_a(m);
            self.now += dt;
        }

        fn run(&mut self, rounds: usize) {
            for _ in 0..rounds {
                self.step(5 * MS);
            }
        }
    }

    fn kinds(msgs: &[Vec<u8>]) -> Vec<Kind> {
        msgs.iter()
            .map(|m| Kind::from_u8(m[5]).expect("kind"))
            .collect()
    }

    fn no_table() -> impl FnMut(&mut u64, &mut Vec<Entry>, usize) -> bool {
        |_: &mut u64, _: &mut Vec<Entry>, _| false
    }

    #[test]
    fn every_kind_round_trips_between_sessions() {
        let mut p = Pair::new(100);
        for i in 0..60 {
            p.table.set(&mut p.a, i, Some(1));
        }
        let mut seen = Vec::new();
        // A's first poll: its batch is full once (47) and the rest waits; no heartbeat needed.
        // A has heard nobody yet, so this is a hello to B: nothing in it is applied.
        let m = p.poll_a();
        assert_eq!(kinds(&m), [Kind::Delta]);
        for d in m {
            seen.push(p.b.receive(p.now, &d).unwrap());
        }
        // B's heartbeat introduces it to A, which pushes a bulk to the new peer.
        let m = p.poll_b();
        assert_eq!(kinds(&m), [Kind::Heartbeat]);
        p.deliver_a(m);
        assert!(p.a.bulk_in_progress());
        p.now += 10 * MS;
        let m = p.poll_a();
        // The pending deltas go first, so the stream stays in the table's order.
        assert_eq!(
            kinds(&m),
            [
                Kind::Delta,
                Kind::BulkStart,
                Kind::BulkChunk,
                Kind::BulkChunk,
                Kind::BulkEnd
            ]
        );
        for d in m {
            seen.push(p.b.receive(p.now, &d).unwrap());
        }
        // B asks for a resync (forced), A answers it.
        p.b.request_resync();
        let m = p.poll_b();
        assert_eq!(kinds(&m), [Kind::ResyncRequest]);
        for d in m {
            assert_eq!(p.a.receive(p.now, &d), Ok(Received::ResyncRequested));
        }
        p.now += 20 * MS;
        let m = p.poll_a();
        for d in m {
            seen.push(p.b.receive(p.now, &d).unwrap());
        }
        p.now += 20 * MS;
        let m = p.poll_a();
        assert_eq!(kinds(&m), [Kind::Heartbeat]);
        for d in m {
            seen.push(p.b.receive(p.now, &d).unwrap());
        }
        assert_eq!(
            seen[0],
            Received::Hello,
            "A's first delta is a hello: not applied"
        );
        assert!(matches!(&seen[1], Received::Changes(c) if c.len() == 13));
        assert_eq!(seen[2], Received::BulkStarted);
        assert!(matches!(&seen[3], Received::Changes(c) if c.len() == 47));
        assert!(matches!(&seen[4], Received::Changes(c) if c.len() == 13));
        assert_eq!(seen[5], Received::BulkEnded { entries: 60 });
        assert_eq!(seen[6], Received::BulkStarted);
        assert_eq!(seen[9], Received::BulkEnded { entries: 60 });
        assert_eq!(seen[10], Received::Heartbeat);
        let c = p.a.counters();
        assert_eq!((c.bulks_pushed, c.resyncs_served, c.bulks_sent), (1, 1, 2));
        let c = p.b.counters();
        assert_eq!((c.bulks_received, c.resyncs_requested), (2, 1));
        assert_eq!(c.entries_in, 13 + 60 + 60, "the hello's 47 are not applied");
        assert_eq!(c.heartbeats_in, 1);
        assert!(p.b.synced());
    }

    #[test]
    fn heartbeats_on_schedule_and_peer_death() {
        let mut a = SyncSession::new(cfg(), 1);
        let mut b = SyncSession::new(cfg(), 2);
        let t0 = Instant::now();
        assert!(!b.peer_alive(t0), "never heard");
        assert_eq!(b.peer_is_master(), None);
        // B's hello, so that A's messages are bound to B's session.
        let hello = b.poll(t0, &mut no_table()).remove(0);
        assert_eq!(a.receive(t0, &hello), Ok(Received::Hello));
        let m = a.poll(t0, &mut no_table());
        assert_eq!(kinds(&m), [Kind::Heartbeat]);
        assert!(a.poll(t0 + 19 * MS, &mut no_table()).is_empty());
        let m2 = a.poll(t0 + 20 * MS, &mut no_table());
        assert_eq!(kinds(&m2), [Kind::Heartbeat]);
        // Any message resets the schedule.
        a.push(Change::Delete {
            client: client(1),
            service: 0,
        });
        let d = a.poll(t0 + 30 * MS, &mut no_table());
        assert_eq!(kinds(&d), [Kind::Delta]);
        assert!(a.poll(t0 + 40 * MS, &mut no_table()).is_empty());
        assert_eq!(
            kinds(&a.poll(t0 + 50 * MS, &mut no_table())),
            [Kind::Heartbeat]
        );

        assert_eq!(b.receive(t0, &m[0]), Ok(Received::Heartbeat));
        assert_eq!(b.peer_is_master(), Some(false));
        assert_eq!(b.peer_id(), Some(1));
        assert!(b.peer_alive(t0 + 59 * MS));
        assert!(!b.peer_alive(t0 + 60 * MS), "dead after 3 × 20 ms");
        assert_eq!(b.receive(t0 + 70 * MS, &m2[0]), Ok(Received::Heartbeat));
        assert!(b.peer_alive(t0 + 129 * MS));
        assert!(!b.peer_alive(t0 + 130 * MS));
        assert_eq!(b.counters().heartbeats_in, 2);
        assert_eq!(a.counters().heartbeats_out, 3);
    }

    #[test]
    fn batches_fill_messages_and_wait_batch_delay() {
        let mut a = SyncSession::new(cfg(), 1);
        let t0 = Instant::now();
        a.poll(t0, &mut no_table()); // heartbeat; the session now knows the time
        for i in 0..100 {
            a.push(Change::Upsert(entry(i, 2)));
        }
        let t1 = t0 + MS;
        let m = a.poll(t1, &mut no_table());
        assert_eq!(kinds(&m), [Kind::Delta, Kind::Delta], "two full messages");
        for d in &m {
            assert_eq!(d.len(), message::HEADER_LEN + 47 * 28 + 32);
            assert!(d.len() <= MAX_MESSAGE_LEN);
        }
        // The 6 left over were pushed at t0 (as far as the session knows): sent at t0 + 10 ms.
        assert!(a.poll(t0 + 9 * MS, &mut no_table()).is_empty());
        let m = a.poll(t0 + 10 * MS, &mut no_table());
        assert_eq!(kinds(&m), [Kind::Delta]);
        let key = SyncKey::new(&cfg().key).unwrap();
        let msg = decode(&key, LAYOUT, &m[0]).unwrap();
        assert_eq!(msg.changes.len(), 6);
        assert_eq!(msg.changes[0], Change::Upsert(entry(94, 2)));
        // A lone change waits batch_delay from the last time the session saw.
        a.push(Change::Upsert(entry(7, 0)));
        assert!(a.poll(t0 + 19 * MS, &mut no_table()).is_empty());
        assert_eq!(kinds(&a.poll(t0 + 20 * MS, &mut no_table())), [Kind::Delta]);
        assert_eq!(a.counters().entries_out, 101);
        assert_eq!(a.counters().messages_out, 5);
    }

    #[test]
    fn deltas_per_poll_are_bounded_and_ordered() {
        let mut a = SyncSession::new(cfg(), 1);
        let t0 = Instant::now();
        let n = MAX_ENTRIES * DELTAS_PER_POLL + 10;
        for i in 0..n {
            a.push(Change::Upsert(entry(i % 1000, (i / 1000) as u16)));
        }
        let key = SyncKey::new(&cfg().key).unwrap();
        let first = a.poll(t0, &mut no_table());
        assert_eq!(first.len(), DELTAS_PER_POLL);
        let rest = a.poll(t0 + 10 * MS, &mut no_table());
        assert_eq!(kinds(&rest), [Kind::Delta]);
        let got: Vec<Change> = first
            .iter()
            .chain(&rest)
            .flat_map(|d| decode(&key, LAYOUT, d).unwrap().changes)
            .collect();
        let want: Vec<Change> = (0..n)
            .map(|i| Change::Upsert(entry(i % 1000, (i / 1000) as u16)))
            .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn rejects_are_named_counted_and_change_nothing() {
        let t0 = Instant::now();
        let mut a = SyncSession::new(cfg(), 1);
        a.set_master(true);
        let mut b = SyncSession::new(cfg(), 2);
        let mine = b.poll(t0, &mut no_table()).remove(0);
        a.receive(t0, &mine).unwrap(); // B's hello: A's messages are bound to B
        let hb = a.poll(t0, &mut no_table()).remove(0);

        // Forged: one bit flipped anywhere; and a message under another key.
        let mut forged = hb.clone();
        forged[14] ^= 1;
        assert_eq!(b.receive(t0, &forged), Err(RejectReason::BadTag));
        let mut other = SyncSession::new(
            SyncConfig {
                key: b"another-key-0123456789".to_vec(),
                ..cfg()
            },
            3,
        );
        let alien = other.poll(t0, &mut no_table()).remove(0);
        assert_eq!(b.receive(t0, &alien), Err(RejectReason::BadTag));
        // Truncated, too long, bad magic.
        assert_eq!(b.receive(t0, &hb[..40]), Err(RejectReason::Truncated));
        assert_eq!(b.receive(t0, &[0; 1401]), Err(RejectReason::TooLong));
        let mut bad = hb.clone();
        bad[1] = b'X';
        assert_eq!(b.receive(t0, &bad), Err(RejectReason::BadMagic));
        // Another layout (same key): the other side's indices mean other things.
        let mut skew = SyncSession::new(
            SyncConfig {
                layout: LAYOUT + 1,
                ..cfg()
            },
            4,
        );
        let skewed = skew.poll(t0, &mut no_table()).remove(0);
        assert_eq!(b.receive(t0, &skewed), Err(RejectReason::LayoutMismatch));
        // Our own message back.
        assert_eq!(b.receive(t0, &mine), Err(RejectReason::Reflected));
        // None of that made a peer.
        assert_eq!(b.peer_id(), None);
        assert!(!b.peer_alive(t0));
        assert_eq!(b.counters().messages_in, 0);

        assert_eq!(b.receive(t0, &hb), Ok(Received::Heartbeat));
        let before = b.counters();
        // Replayed later: rejected, and the peer's liveness does not move.
        assert_eq!(b.receive(t0 + 50 * MS, &hb), Err(RejectReason::Replayed));
        assert!(!b.peer_alive(t0 + 60 * MS));
        // A newer message, then the older one reordered behind it.
        let hb2 = a.poll(t0 + 20 * MS, &mut no_table()).remove(0);
        let hb3 = a.poll(t0 + 40 * MS, &mut no_table()).remove(0);
        assert_eq!(b.receive(t0 + 40 * MS, &hb3), Ok(Received::Heartbeat));
        assert_eq!(b.receive(t0 + 40 * MS, &hb2), Err(RejectReason::Replayed));

        let c = b.counters();
        assert_eq!(c.rejects.bad_tag, 2);
        assert_eq!(c.rejects.truncated, 1);
        assert_eq!(c.rejects.too_long, 1);
        assert_eq!(c.rejects.bad_magic, 1);
        assert_eq!(c.rejects.layout_mismatch, 1);
        assert_eq!(c.rejects.reflected, 1);
        assert_eq!(c.rejects.replayed, 2);
        assert_eq!(c.rejects.total(), 9);
        assert_eq!(c.messages_in, before.messages_in + 1);
        assert_eq!(c.gaps, 1, "hb2 was missing when hb3 came");
        let json = serde_json::to_value(c).unwrap();
        assert_eq!(json["rejects"]["layout_mismatch"], 1);
        assert_eq!(json["gaps"], 1);
    }

    #[test]
    fn old_incarnation_stays_replayed() {
        let t0 = Instant::now();
        let mut old = SyncSession::new(cfg(), 10);
        let mut new = SyncSession::new(cfg(), 11);
        let mut b = SyncSession::new(cfg(), 2);
        let hello = b.poll(t0, &mut no_table()).remove(0);
        old.receive(t0, &hello).unwrap();
        new.receive(t0, &hello).unwrap();
        let old1 = old.poll(t0, &mut no_table()).remove(0);
        let new1 = new.poll(t0, &mut no_table()).remove(0);
        b.receive(t0, &old1).unwrap();
        b.receive(t0, &new1).unwrap();
        assert_eq!(b.peer_id(), Some(11));
        assert_eq!(b.counters().peer_restarts, 1);
        assert_eq!(b.receive(t0, &old1), Err(RejectReason::Replayed));
        assert_eq!(b.peer_id(), Some(11));
    }

    #[test]
    fn gap_resync_bulk_gives_the_receiver_the_whole_table() {
        let mut p = Pair::new(300);
        for i in 0..200 {
            p.table.set(&mut p.a, i, Some((i % 3) as u16));
        }
        p.run(5);
        assert_eq!(p.mirror.map(), p.table.map());
        assert!(p.b.synced());
        assert_eq!(p.mirror.bulks_ended, 1, "the bulk pushed to the new peer");

        // Changes, including deletes, in a message that is lost.
        for i in 0..30 {
            p.table.set(&mut p.a, i, None);
        }
        p.table.set(&mut p.a, 250, Some(2));
        p.now += 10 * MS;
        let lost = p.poll_a();
        assert_eq!(kinds(&lost), [Kind::Delta]);
        p.now += 20 * MS;
        let m = p.poll_a(); // a heartbeat shows the gap
        assert_eq!(kinds(&m), [Kind::Heartbeat]);
        p.deliver_b(m);
        assert!(!p.b.synced());
        assert_eq!(p.b.counters().gaps, 1);
        assert_eq!(p.b.counters().messages_missed, 1);
        assert_ne!(p.mirror.map(), p.table.map());
        let m = p.poll_b();
        assert_eq!(kinds(&m), [Kind::ResyncRequest]);
        p.deliver_a(m);
        // Not the whole table again: the bulk resumes after the last message B has in order,
        // which was after the table's end, so only the lost delta comes again, then the end.
        let m = p.poll_a();
        assert_eq!(kinds(&m), [Kind::BulkResume, Kind::Delta, Kind::BulkEnd]);
        p.deliver_b(m);
        assert_eq!(
            p.mirror.map(),
            p.table.map(),
            "deletes and insert applied again"
        );
        assert!(p.b.synced());
        assert_eq!(p.a.counters().resyncs_served, 0);
        assert_eq!(p.a.counters().bulks_resumed, 1);
        assert_eq!(p.a.counters().changes_replayed, 31);
        assert_eq!(p.b.counters().resumes_requested, 1);
        assert_eq!(p.b.counters().resyncs_requested, 0);
        assert_eq!(p.b.counters().bulks_received, 2);
        // The resume request's ack is the point B resumes from (before the lost delta): the
        // lost delta, the heartbeat and the resume are not acknowledged yet.
        assert_eq!(p.a.lag(), 5);
        p.now += 20 * MS;
        let m = p.poll_b();
        p.deliver_a(m);
        assert_eq!(p.a.lag(), 0);
    }

    /// A lost chunk no longer aborts the bulk and restarts it from zero: the end says
    /// "incomplete", the receiver asks to resume after the last message it has in order, and
    /// the master sends from there.
    #[test]
    fn lost_bulk_chunk_resumes_where_it_stopped() {
        let mut p = Pair::new(200);
        for i in 0..150 {
            p.table.set(&mut p.a, i, Some(1));
        }
        p.step(10 * MS); // deltas to B; B's heartbeat makes A push a bulk
        let m = p.poll_a();
        assert_eq!(
            kinds(&m),
            [
                Kind::Delta,
                Kind::BulkStart,
                Kind::BulkChunk,
                Kind::BulkChunk,
                Kind::BulkChunk,
                Kind::BulkChunk,
                Kind::BulkEnd
            ]
        );
        // B has everything but the first delta's 47 entries; losing a chunk breaks the bulk.
        let mut results = Vec::new();
        for (i, d) in m.into_iter().enumerate() {
            if i != 3 {
                results.push(p.b.receive(p.now, &d).unwrap());
            }
        }
        assert_eq!(*results.last().unwrap(), Received::BulkIncomplete);
        for r in results {
            p.mirror.apply(r);
        }
        assert!(!p.b.synced());
        assert_eq!(p.b.counters().bulks_aborted, 0);
        let bulk_entries = p.a.counters().bulk_entries_out;
        assert_eq!(bulk_entries, 150);
        let m = p.poll_b();
        assert_eq!(kinds(&m), [Kind::ResyncRequest]);
        assert_eq!(p.b.counters().resumes_requested, 1);
        p.deliver_a(m);
        let m = p.poll_a();
        // From the chunk after the last one B has in order: the lost one and those after it.
        assert_eq!(
            kinds(&m),
            [
                Kind::BulkResume,
                Kind::BulkChunk,
                Kind::BulkChunk,
                Kind::BulkChunk,
                Kind::BulkEnd
            ]
        );
        p.deliver_b(m);
        assert!(p.b.synced());
        assert_eq!(p.mirror.map(), p.table.map());
        assert_eq!(p.a.counters().bulks_resumed, 1);
        assert_eq!(p.a.counters().bulk_entries_out - bulk_entries, 150 - 47);
        p.run(3);
        assert_eq!(p.mirror.map(), p.table.map());
        assert_eq!(p.b.counters().bulks_received, 1);
        assert_eq!(
            p.a.counters().bulks_sent,
            2,
            "the bulk, and its resumed end"
        );
    }

    #[test]
    fn new_peer_gets_a_bulk_from_the_master_and_asks_for_nothing() {
        let mut p = Pair::new(100);
        for i in 0..80 {
            p.table.set(&mut p.a, i, Some(0));
        }
        let m = p.poll_b(); // B's hello: A's messages are bound to B from now on
        p.deliver_a(m);
        p.now += 10 * MS;
        let m = p.poll_a();
        p.deliver_b(m); // B sees A (master) for the first time
        assert_eq!(p.b.counters().peers_joined, 1);
        assert_eq!(p.b.counters().gaps, 0);
        let m = p.poll_b();
        assert_eq!(kinds(&m), [Kind::Heartbeat], "no request on joining");
        p.deliver_a(m);
        assert_eq!(p.a.counters().bulks_pushed, 1);
        p.run(20);
        assert_eq!(p.mirror.map(), p.table.map());
        assert_eq!(p.b.counters().resyncs_requested, 0);
        assert_eq!(p.a.counters().bulks_sent, 1);

        // A backup does not push to a new peer. (A new peer binds once A is dead: a hello
        // while the bound peer lives is refused.)
        let mut c = SyncSession::new(cfg(), 0xc);
        let t = p.now + 60 * MS;
        let hello = c.poll(t, &mut no_table());
        assert_eq!(p.b.receive(t, &hello[0]), Ok(Received::Hello));
        for d in p.b.poll(t, &mut no_table()) {
            c.receive(t, &d).unwrap();
        }
        let bound = c.poll(t, &mut no_table());
        p.b.receive(t, &bound[0]).unwrap();
        assert!(!p.b.bulk_in_progress());
        assert_eq!(p.b.counters().peer_restarts, 1);
    }

    #[test]
    fn lost_bulk_start_to_a_new_peer_is_asked_for_after_a_dead_interval() {
        let mut p = Pair::new(100);
        for i in 0..40 {
            p.table.set(&mut p.a, i, Some(0));
        }
        let m = p.poll_a(); // A's hello: B learns A's nonce, nothing else
        p.deliver_b(m);
        let m = p.poll_b();
        p.deliver_a(m);
        p.now += 10 * MS;
        let mut m = p.poll_a();
        assert_eq!(kinds(&m)[..2], [Kind::Delta, Kind::BulkStart]);
        m.drain(..2); // B's first sight of A is a bulk chunk
        p.deliver_b(m);
        assert_eq!(p.mirror.bulk, None);
        assert_eq!(p.b.counters().bulks_aborted, 1);
        assert_eq!(p.b.counters().gaps, 0, "a first sight is no gap");
        p.now += 59 * MS;
        assert!(!kinds(&p.poll_b()).contains(&Kind::ResyncRequest));
        p.now += MS;
        assert_eq!(kinds(&p.poll_b()), [Kind::ResyncRequest], "but lost ...");
        // ... that request was lost too; it is repeated.
        p.now += 60 * MS;
        let m = p.poll_b();
        assert_eq!(kinds(&m), [Kind::ResyncRequest]);
        p.deliver_a(m);
        p.run(2);
        assert_eq!(p.mirror.map(), p.table.map());
        assert_eq!(p.a.counters().resyncs_served, 1);
    }

    #[test]
    fn recovering_old_master_pulls_state_before_it_preempts() {
        let mut p = Pair::new(100);
        for i in 0..70 {
            p.table.set(&mut p.a, i, Some(1));
        }
        p.run(5);
        assert_eq!(p.mirror.map(), p.table.map());

        // A dies; B fails over and serves, with its mirror as its table.
        let mut b_table = Slots::new(100);
        for (_, e) in p.mirror.map() {
            let i = (0..100).find(|&i| client(i) == e.client).unwrap();
            b_table.0[i] = Some(e);
        }
        p.b.set_master(true);
        b_table.set(&mut p.b, 90, Some(2)); // a new client while A is away
        b_table.set(&mut p.b, 3, None);

        // A comes back: a new process, backup at first, with an empty table.
        let mut a2 = SyncSession::new(cfg(), 0xa2);
        let mut a2_mirror = Mirror::default();
        let mut now = p.now + Duration::from_secs(5);
        for _ in 0..10 {
            for d in a2.poll(now, &mut no_table()) {
                p.b.receive(now, &d).unwrap();
            }
            let out = p.b.poll(now, &mut |c: &mut u64, o: &mut Vec<Entry>, n| {
                b_table.fill(c, o, n)
            });
            for d in out {
                a2_mirror.apply(a2.receive(now, &d).unwrap());
            }
            now += 5 * MS;
        }
        assert_eq!(p.b.counters().peer_restarts, 1);
        assert_eq!(p.b.counters().bulks_pushed, 1);
        assert!(a2.synced(), "A may preempt now");
        assert_eq!(a2.counters().resyncs_requested, 0);
        assert_eq!(a2_mirror.map(), b_table.map());
        assert_eq!(a2_mirror.map().len(), 70);
    }

    #[test]
    fn restarted_master_pushes_at_once_and_requests_coalesce() {
        let mut p = Pair::new(100);
        for i in 0..50 {
            p.table.set(&mut p.a, i, Some(1));
        }
        p.run(5);
        // A restarts as master at once (no failover happened), table intact (say, reloaded).
        // A process start takes longer than a dead interval: B takes the new session's hello.
        p.now += 60 * MS;
        p.a = SyncSession::new(cfg(), 0xa3);
        p.a.set_master(true);
        p.table.set(&mut p.a, 60, Some(0));
        p.run(10);
        assert_eq!(p.mirror.map(), p.table.map());
        let b = p.b.counters();
        assert_eq!((b.peer_restarts, b.gaps), (1, 1));
        // Session binding: the new session binds to B's only after it has heard B, so it has
        // pushed its bulk before B sees it at all; B need not ask.
        assert_eq!(b.resyncs_requested, 0);
        let a = p.a.counters();
        assert_eq!(a.bulks_pushed, 1);
        assert_eq!(a.bulks_sent, 1);
        // Requests that reach A before its bulk has started are answered by that one bulk.
        p.b.request_resync();
        let mut m = p.poll_b();
        p.b.request_resync();
        p.now += MS;
        m.extend(p.poll_b());
        assert_eq!(kinds(&m), [Kind::ResyncRequest, Kind::ResyncRequest]);
        p.deliver_a(m);
        p.run(5);
        assert_eq!(p.mirror.map(), p.table.map());
        let a = p.a.counters();
        assert_eq!((a.resyncs_served, a.resyncs_coalesced), (1, 1));
        assert_eq!(a.bulks_sent, 2, "one bulk answers both requests");
    }

    #[test]
    fn a_master_never_asks_a_backup() {
        let t0 = Instant::now();
        let mut a = SyncSession::new(cfg(), 1);
        a.set_master(true);
        let mut b = SyncSession::new(cfg(), 2);
        let hello = a.poll(t0, &mut no_table());
        b.receive(t0, &hello[0]).unwrap(); // B's messages are bound to A from now on
        let b1 = b.poll(t0, &mut no_table());
        let _lost = b.poll(t0 + 20 * MS, &mut no_table());
        let b3 = b.poll(t0 + 40 * MS, &mut no_table());
        a.receive(t0, &b1[0]).unwrap();
        a.receive(t0 + 40 * MS, &b3[0]).unwrap();
        assert_eq!(a.counters().gaps, 1);
        for t in [40, 200, 400] {
            let out = a.poll(t0 + t * MS, &mut no_table());
            assert!(!kinds(&out).contains(&Kind::ResyncRequest));
        }
    }

    #[test]
    fn bulk_work_per_poll_is_bounded() {
        let mut p = Pair::new(5000);
        for i in 0..5000 {
            p.table.0[i] = Some(entry(i, 1));
        }
        // Hellos both ways; then A's session is bound to B's, and it pushes its table.
        let m = p.poll_b();
        p.deliver_a(m);
        let m = p.poll_a();
        p.deliver_b(m);
        let m = p.poll_b();
        p.deliver_a(m);
        let mut polls = 0;
        while p.a.bulk_in_progress() {
            let m = p.poll_a();
            let chunks = kinds(&m).iter().filter(|k| **k == Kind::BulkChunk).count();
            assert!(chunks <= BULK_CHUNKS_PER_POLL);
            assert!(m.iter().all(|d| d.len() <= MAX_MESSAGE_LEN));
            p.deliver_b(m);
            p.now += MS;
            polls += 1;
        }
        // Paced: a burst of BULK_CHUNKS_PER_POLL, then `bulk_rate` chunks a millisecond.
        let chunks = 5000usize.div_ceil(MAX_ENTRIES);
        let rate = DEFAULT_BULK_RATE as usize;
        assert_eq!(polls, 1 + (chunks - BULK_CHUNKS_PER_POLL).div_ceil(rate));
        assert_eq!(p.mirror.map(), p.table.map());
        assert_eq!(p.b.counters().bulks_received, 1);
    }

    #[test]
    fn queue_overflow_becomes_a_bulk() {
        let mut a = SyncSession::new(cfg(), 1);
        for i in 0..=MAX_PENDING_CHANGES {
            a.push(Change::Upsert(entry(i % 100, 0)));
        }
        assert_eq!(a.counters().queue_overflows, 1);
        assert!(a.bulk_in_progress());
        let out = a.poll(Instant::now(), &mut no_table());
        assert_eq!(kinds(&out), [Kind::BulkStart, Kind::BulkEnd]);
    }

    #[test]
    fn lag_is_our_seq_minus_the_peers_ack() {
        let t0 = Instant::now();
        let mut a = SyncSession::new(cfg(), 1);
        let mut b = SyncSession::new(cfg(), 2);
        let mut sent = Vec::new();
        for i in 0..3 {
            sent.extend(a.poll(t0 + i * 20 * MS, &mut no_table()));
        }
        assert_eq!(a.lag(), 3);
        b.receive(t0, &sent[0]).unwrap();
        b.receive(t0, &sent[1]).unwrap();
        let hb = b.poll(t0, &mut no_table());
        a.receive(t0, &hb[0]).unwrap();
        assert_eq!(a.lag(), 1);
        // An ack above anything we sent is about an earlier process of ours: ignored.
        let key = SyncKey::new(&cfg().key).unwrap();
        let mut m = decode(&key, LAYOUT, &b.poll(t0 + 20 * MS, &mut no_table())[0]).unwrap();
        m.header.ack = 1000;
        a.receive(t0, &encode(&key, &m)).unwrap();
        assert_eq!(a.lag(), 3);
    }

    #[test]
    fn config_is_checked_and_the_key_never_printed() {
        assert!(cfg().validate().is_ok());
        let short = SyncConfig {
            key: vec![1; 15],
            ..cfg()
        };
        assert!(short.validate().is_err());
        assert!(SyncConfig {
            dead_after: 0,
            ..cfg()
        }
        .validate()
        .is_err());
        assert!(SyncConfig {
            heartbeat: Duration::ZERO,
            ..cfg()
        }
        .validate()
        .is_err());
        let shown = format!("{:?}", cfg());
        assert!(!shown.contains("pair-key"), "{shown}");
        assert_eq!(cfg().dead_interval(), 60 * MS);
        let session = format!("{:?}", SyncSession::new(cfg(), 1));
        assert!(!session.contains("pair-key"));
    }

    #[test]
    #[should_panic(expected = "invalid sync config")]
    fn short_key_panics_in_new() {
        SyncSession::new(
            SyncConfig {
                key: vec![1; 8],
                ..cfg()
            },
            1,
        );
    }

    // --- session binding (issue 15, finding 7) ------------------------------------------------

    /// A delta that `a` sent to `b` in the session that is about to end, captured on the wire.
    fn captured_delta(a: &mut SyncSession, b: &mut SyncSession, t0: Instant) -> Vec<u8> {
        // Both introduce themselves, so that a's delta is bound to b's session.
        for _ in 0..2 {
            for d in b.poll(t0, &mut no_table()) {
                let _ = a.receive(t0, &d);
            }
            for d in a.poll(t0, &mut no_table()) {
                let _ = b.receive(t0, &d);
            }
        }
        a.push(Change::Upsert(entry(7, 3)));
        let d = a.poll(t0 + 10 * MS, &mut no_table());
        assert_eq!(kinds(&d), [Kind::Delta]);
        assert!(matches!(
            b.receive(t0 + 10 * MS, &d[0]),
            Ok(Received::Changes(_))
        ));
        d[0].clone()
    }

    #[test]
    fn a_capture_from_an_earlier_session_is_refused_after_the_receiver_restarts() {
        let t0 = Instant::now();
        let mut a = SyncSession::new(cfg(), 0x1a);
        a.set_master(true);
        let mut b1 = SyncSession::new(cfg(), 0x1b);
        let old = captured_delta(&mut a, &mut b1, t0);
        // b restarts: a new session, empty replay windows. The capture comes back.
        let t1 = t0 + Duration::from_secs(5);
        let mut b2 = SyncSession::new(cfg(), 0x2b);
        let r = b2.receive(t1, &old);
        assert!(
            r.is_err(),
            "a capture of the earlier session was accepted: {r:?}"
        );
        assert_eq!(r, Err(RejectReason::OtherSession));
        assert_eq!(b2.counters().rejects.other_session, 1);
        assert_eq!(b2.counters().rejects.total(), 1);
        assert_eq!(b2.counters().entries_in, 0);
        assert_eq!(b2.peer_id(), None);
        assert!(!b2.peer_alive(t1));
    }

    #[test]
    fn a_replayed_old_hello_does_not_reopen_the_old_session() {
        let t0 = Instant::now();
        let mut a0 = SyncSession::new(cfg(), 0x0a);
        a0.set_master(true);
        let mut b1 = SyncSession::new(cfg(), 0x1b);
        // a0's first message (a hello: it had heard nobody), captured.
        let hello = a0.poll(t0, &mut no_table()).remove(0);
        b1.receive(t0, &hello).unwrap();
        let old = captured_delta(&mut a0, &mut b1, t0 + 20 * MS);
        // Both restart. The attacker replays a0's hello to b2, then a0's delta.
        let t1 = t0 + Duration::from_secs(5);
        let mut b2 = SyncSession::new(cfg(), 0x2b);
        // The old hello is taken as one (it is indistinguishable from a new peer's): b2 will
        // address a0's session, but applies nothing of it.
        assert_eq!(b2.receive(t1, &hello), Ok(Received::Hello));
        let r = b2.receive(t1, &old);
        assert_eq!(r, Err(RejectReason::OtherSession));
        assert!(
            !matches!(r, Ok(Received::Changes(_))),
            "the old session's delta was applied: {r:?}"
        );
        assert_eq!(b2.counters().entries_in, 0);
        assert!(b2.counters().rejects.total() >= 1);
        assert!(!b2.peer_alive(t1), "a replay is no sign of life");
        // The real peer, restarted too, still gets through: the replay opened nothing.
        let mut a1 = SyncSession::new(cfg(), 0x1a);
        a1.set_master(true);
        let mut now = t1;
        let mut applied = 0;
        for _ in 0..4 {
            for d in b2.poll(now, &mut no_table()) {
                // b2 first addresses the replayed hello's session: a1 refuses that.
                let _ = a1.receive(now, &d);
            }
            for d in a1.poll(now, &mut no_table()) {
                if let Ok(Received::Changes(c)) = b2.receive(now, &d) {
                    applied += c.len();
                }
            }
            now += 20 * MS;
        }
        assert_eq!(applied, 0);
        assert_eq!(b2.peer_id(), Some(0x1a));
        assert!(b2.peer_alive(now - 20 * MS));
        assert_eq!(b2.peer_is_master(), Some(true));
        assert!(a1.peer_alive(now - 20 * MS));
    }

    /// Two sessions that have exchanged hellos: each one's messages are bound to the other.
    fn bound_pair(t0: Instant) -> (SyncSession, SyncSession) {
        let mut a = SyncSession::new(cfg(), 0xa);
        a.set_master(true);
        let mut b = SyncSession::new(cfg(), 0xb);
        for d in b.poll(t0, &mut no_table()) {
            assert_eq!(a.receive(t0, &d), Ok(Received::Hello));
        }
        for d in a.poll(t0, &mut no_table()) {
            b.receive(t0, &d).unwrap();
        }
        for d in b.poll(t0, &mut no_table()) {
            a.receive(t0, &d).unwrap();
        }
        assert_eq!((a.peer_id(), b.peer_id()), (Some(0xb), Some(0xa)));
        (a, b)
    }

    #[test]
    fn a_hello_is_answered_at_once_and_binds_the_sender() {
        let t0 = Instant::now();
        let mut a = SyncSession::new(cfg(), 0xa);
        let mut b = SyncSession::new(cfg(), 0xb);
        let key = SyncKey::new(&cfg().key).unwrap();
        let _ = b.poll(t0, &mut no_table()); // B's own hello: its next heartbeat is 20 ms away
        let hello = a.poll(t0, &mut no_table()).remove(0);
        assert_eq!(decode(&key, LAYOUT, &hello).unwrap().header.receiver, 0);
        assert_eq!(b.receive(t0 + MS, &hello), Ok(Received::Hello));
        assert_eq!(b.counters().hellos_in, 1);
        assert_eq!(b.counters().messages_in, 0);
        assert_eq!(b.peer_id(), None, "a hello binds nothing");
        assert!(!b.peer_alive(t0 + MS), "nor is it a sign of life");
        // B answers at its next poll, without waiting for its heartbeat, addressed to A.
        let answer = b.poll(t0 + 2 * MS, &mut no_table());
        assert_eq!(kinds(&answer), [Kind::Heartbeat]);
        assert_eq!(
            decode(&key, LAYOUT, &answer[0]).unwrap().header.receiver,
            0xa
        );
    }

    #[test]
    fn a_hello_while_the_bound_peer_lives_is_refused_and_binds_nothing() {
        let t0 = Instant::now();
        let (mut a, mut b) = bound_pair(t0);
        // An old session's hello (captured when it started) comes back.
        let mut old = SyncSession::new(cfg(), 0x0a0);
        let old_hello = old.poll(t0, &mut no_table()).remove(0);
        assert_eq!(b.receive(t0 + MS, &old_hello), Err(RejectReason::StalePeer));
        assert_eq!(b.counters().rejects.stale_peer, 1);
        // B still addresses A: A takes B's next message as bound.
        let m = b.poll(t0 + 20 * MS, &mut no_table());
        assert_eq!(a.receive(t0 + 20 * MS, &m[0]), Ok(Received::Heartbeat));
        assert_eq!(a.counters().rejects.total(), 0);
    }

    #[test]
    fn a_replaced_peer_session_is_refused() {
        let t0 = Instant::now();
        let (mut a, mut b) = bound_pair(t0);
        // A's message bound to B, held back by an attacker.
        let held = a.poll(t0 + 20 * MS, &mut no_table()).remove(0);
        // A restarts; after a dead interval B takes the new session's hello, and binds to it.
        let t1 = t0 + Duration::from_secs(2);
        let mut a2 = SyncSession::new(cfg(), 0xa2);
        for d in a2.poll(t1, &mut no_table()) {
            assert_eq!(b.receive(t1, &d), Ok(Received::Hello));
        }
        for d in b.poll(t1, &mut no_table()) {
            a2.receive(t1, &d).unwrap();
        }
        for d in a2.poll(t1, &mut no_table()) {
            b.receive(t1, &d).unwrap();
        }
        assert_eq!(b.peer_id(), Some(0xa2));
        assert_eq!(b.counters().peer_restarts, 1);
        // The held message is fresh for B's session, but from the replaced one.
        assert_eq!(b.receive(t1, &held), Err(RejectReason::StalePeer));
        assert_eq!(b.peer_id(), Some(0xa2));
    }

    #[test]
    fn an_old_version_message_is_refused_and_counted() {
        let t0 = Instant::now();
        let (mut a, mut b) = bound_pair(t0);
        let mut m = a.poll(t0 + 20 * MS, &mut no_table()).remove(0);
        m[4] = 1;
        assert_eq!(b.receive(t0 + 20 * MS, &m), Err(RejectReason::BadVersion));
        assert_eq!(b.counters().rejects.bad_version, 1);
    }

    // --- dual master (issue 15, finding 8) ----------------------------------------------------

    #[test]
    fn both_master_for_a_dead_interval_is_dual_master() {
        let t0 = Instant::now();
        let (mut a, mut b) = bound_pair(t0);
        // B becomes master too (a forged VRRP advert, a split VRRP segment).
        b.set_master(true);
        let mut now = t0;
        let exchange = |a: &mut SyncSession, b: &mut SyncSession, now: Instant| {
            for d in b.poll(now, &mut no_table()) {
                a.receive(now, &d).unwrap();
            }
            for d in a.poll(now, &mut no_table()) {
                b.receive(now, &d).unwrap();
            }
        };
        // The first sight starts the clock; a preemption's overlap is shorter than that.
        for _ in 0..3 {
            now += 20 * MS;
            exchange(&mut a, &mut b, now);
            assert!(!a.dual_master(now), "{:?}", now - t0);
        }
        assert_eq!(a.counters().dual_master_events, 0);
        now += 20 * MS;
        exchange(&mut a, &mut b, now);
        assert!(a.dual_master(now), "both master for 60 ms");
        assert!(b.dual_master(now));
        assert_eq!(a.counters().dual_master_events, 1);
        for _ in 0..5 {
            now += 20 * MS;
            exchange(&mut a, &mut b, now);
        }
        assert_eq!(a.counters().dual_master_events, 1, "one per episode");
        // The peer falls silent: no dual master with a dead peer.
        assert!(!a.dual_master(now + 60 * MS));
        // B steps down: over at once on B, and on A with B's next message.
        b.set_master(false);
        assert!(!b.dual_master(now));
        now += 20 * MS;
        exchange(&mut a, &mut b, now);
        assert!(!a.dual_master(now));
        // A second episode counts again.
        b.set_master(true);
        for _ in 0..5 {
            now += 20 * MS;
            exchange(&mut a, &mut b, now);
        }
        assert!(a.dual_master(now));
        assert_eq!(a.counters().dual_master_events, 2);
        // A backup is never dual master, whatever the peer says.
        a.set_master(false);
        assert!(!a.dual_master(now));
    }

    #[test]
    fn a_brief_overlap_is_no_dual_master() {
        let t0 = Instant::now();
        let (mut a, mut b) = bound_pair(t0);
        b.set_master(true);
        for d in b.poll(t0 + 20 * MS, &mut no_table()) {
            a.receive(t0 + 20 * MS, &d).unwrap();
        }
        b.set_master(false); // the preempted side steps down at the new master's advert
        for d in b.poll(t0 + 100 * MS, &mut no_table()) {
            a.receive(t0 + 100 * MS, &d).unwrap();
        }
        assert!(!a.dual_master(t0 + 100 * MS));
        assert_eq!(a.counters().dual_master_events, 0);
    }

    /// xorshift64*: loss decisions from a proptest seed, reproducible.
    struct Rng(u64);

    impl Rng {
        fn percent(&mut self) -> u32 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 33) as u32 % 100
        }
    }

    proptest! {
        #[test]
        fn receive_never_panics(
            datagrams in proptest::collection::vec(
                proptest::collection::vec(any::<u8>(), 0..1500), 1..8),
        ) {
            let mut s = SyncSession::new(cfg(), 1);
            let t0 = Instant::now();
            for d in &datagrams {
                let _ = s.receive(t0, d);
            }
            // Also with a valid magic and version in front, to get as far as the tag.
            for d in &datagrams {
                let mut v = b"VLBS".to_vec();
                v.push(message::VERSION);
                v.extend_from_slice(d);
                let _ = s.receive(t0, &v);
            }
            prop_assert_eq!(s.counters().messages_in, 0);
            prop_assert_eq!(s.counters().rejects.total(), 2 * datagrams.len() as u64);
        }

        /// Two sessions over a link that loses (and duplicates) messages both ways, the master's
        /// table changing all the while: once the loss stops, the backup's table converges to the
        /// master's through gaps, resyncs and bulks.
        #[test]
        fn random_loss_converges(
            ops in proptest::collection::vec((0usize..80, 0u16..4, 1u32..8), 1..300),
            loss_ab in 0u32..40,
            loss_ba in 0u32..40,
            seed in 1u64..u64::MAX,
        ) {
            let mut p = Pair::new(80);
            let mut rng = Rng(seed);
            for (i, gw, dt) in ops {
                // gateway 3 stands for a delete
                p.table.set(&mut p.a, i, (gw < 3).then_some(gw));
                for d in p.poll_a() {
                    if rng.percent() >= loss_ab {
                        p.deliver_b(vec![d.clone()]);
                        if rng.percent() < 5 {
                            prop_assert_eq!(p.b.receive(p.now, &d), Err(RejectReason::Replayed));
                        }
                    }
                }
                for d in p.poll_b() {
                    if rng.percent() >= loss_ba {
                        p.deliver_a(vec![d]);
                    }
                }
                p.now += dt * MS;
            }
            // The link heals.
            p.run(100);
            prop_assert_eq!(p.mirror.map(), p.table.map());
            prop_assert!(p.b.synced());
            prop_assert!(!p.a.bulk_in_progress());
            // B's next heartbeat acknowledges everything A sent.
            p.now += 20 * MS;
            let m = p.poll_b();
            p.deliver_a(m);
            prop_assert_eq!(p.a.lag(), 0);
            prop_assert!(p.b.peer_alive(p.now) && p.a.peer_alive(p.now));
            prop_assert_eq!(p.b.peer_is_master(), Some(true));
            let (a, b) = (p.a.counters(), p.b.counters());
            prop_assert_eq!(a.rejects.total(), 0);
            prop_assert_eq!(b.rejects.total(), b.rejects.replayed);
            prop_assert!(b.bulks_received >= 1);
            if loss_ab == 0 {
                prop_assert_eq!(b.gaps, 0);
            }
        }
    }
}
