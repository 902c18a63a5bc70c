//! HA affinity sync: the master of an HA pair streams its affinity changes (client → gateway
//! entries) to the backup, so that after a failover every client keeps its gateway.
//!
//! This module is the message format ([`message`]) and the pure logic of one endpoint
//! ([`session::SyncSession`]): no sockets, threads or clock reads. The caller owns a UDP socket
//! on the backend segment (`docs/lab.md`: A 198.19.0.2, B 198.19.0.3), sends what
//! [`poll`](session::SyncSession::poll) returns, feeds what arrives to
//! [`receive`](session::SyncSession::receive), and applies the [`Received`] changes to its
//! table. Messages also serve as a fast heartbeat (tens of ms, like BFD) between the two.
//!
//! # Message format
//!
//! One message per UDP datagram: header, entries, tag. Integers are big-endian (network order).
//!
//! | offset | size | field | value |
//! |---:|---:|---|---|
//! | 0 | 4 | magic | `VLBS` |
//! | 4 | 1 | version | 2 (1 had a 32-bit sender id and no receiver nonce; refused) |
//! | 5 | 1 | kind | 1 Heartbeat, 2 Delta, 3 BulkStart, 4 BulkChunk, 5 BulkEnd, 6 ResyncRequest, 7 BulkResume |
//! | 6 | 2 | flags | bit 0: the sender is master; bit 1 (ResyncRequest only): resume after the ack; other bits 0, ignored |
//! | 8 | 8 | sender nonce | random per session (process start, or a new layout), never 0 |
//! | 16 | 8 | receiver nonce | the receiver's session nonce as the sender last learned it; 0: none yet (a hello) |
//! | 24 | 8 | sequence | per sender: 1 for its first message, +1 for each message, heartbeats included |
//! | 32 | 8 | layout fingerprint | [`message::layout_fingerprint`] of the service and gateway names in config order |
//! | 40 | 8 | ack | the highest sequence number the sender has accepted from the session it addresses (0: none); in a resume request, the last one up to which it has everything |
//! | 48 | 2 | entry count | 0 except in Delta and BulkChunk; at most 47 |
//! | 50 | 28 × count | entries | below |
//! | 50 + 28 × count | 32 | tag | HMAC-SHA256 with the pair's key over every byte before it |
//!
//! Entry (28 bytes):
//!
//! | offset | size | field | value |
//! |---:|---:|---|---|
//! | 0 | 1 | op | 1 upsert (insert, confirm, refresh), 2 delete (Delta only) |
//! | 1 | 1 | family | 4 IPv4, 6 IPv6 |
//! | 2 | 1 | flags | bit 0: confirmed; other bits 0 (0 for a delete) |
//! | 3 | 1 | reserved | 0 |
//! | 4 | 16 | client address | IPv6, or IPv4 mapped (`::ffff:a.b.c.d`) |
//! | 20 | 2 | service | index in the configuration |
//! | 22 | 2 | gateway | index in the service (0 for a delete) |
//! | 24 | 4 | expires in | seconds until the entry expires unless refreshed (0 for a delete) |
//!
//! A message is at most 1400 bytes (no fragmentation on the backend segment): 47 entries,
//! 1398 bytes. Entries name services and gateways by index, which only mean the same on both
//! sides when their configurations list the same names in the same order; the layout
//! fingerprint says so, and a message with another one is rejected
//! ([`LayoutMismatch`](RejectReason::LayoutMismatch)) and counted. Expiry is relative because
//! the two appliances' clocks are not synchronised.
//!
//! Parsing never panics. Every rejection has a named reason ([`RejectReason`]) and a counter:
//! too short or long, bad magic or version, a tag that does not verify (checked in constant
//! time by `hmac`), unknown kind, malformed entry, layout mismatch, a sequence number not above
//! the last one accepted from that sender (a replay, a duplicate or a reordered message), our
//! own message looped back, a message bound to another session of ours, or one from a peer
//! session that is not the live one. A rejected message changes nothing but its counter.
//!
//! # Protocol
//!
//! - **Session binding.** Replay windows live in memory, so a restarted receiver knows none of
//!   the earlier sessions' sequence numbers. Each session therefore has a random 64-bit nonce,
//!   and a message is only applied when its receiver nonce is the receiver's own: nobody could
//!   have made it before the receiver's session began, as the tag covers the nonce. A session
//!   that has learned no peer nonce sends 0 there: the receiver takes such a message as a
//!   **hello** ([`Received::Hello`]) while no bound peer is alive, learns the sender's nonce
//!   from it and nothing else (no entries, bulk, request, liveness, role or ack), and answers at
//!   its next poll; from then on the two sessions' messages are bound (one round trip). A
//!   message with another session's nonce (a capture from before the receiver restarted, or a
//!   peer that has not heard the new session yet) is refused
//!   ([`OtherSession`](RejectReason::OtherSession)); so is a hello while the bound peer is
//!   alive, and anything from a peer session a newer one has replaced
//!   ([`StalePeer`](RejectReason::StalePeer)). A replayed old hello can make the receiver
//!   address that old session for a moment, but opens nothing: the old session's messages carry
//!   another receiver nonce. A peer that restarts within a dead interval (a reload with a new
//!   layout) is heard once the old session is dead.
//! - **Sequence numbers** are per sender nonce. A nonce keeps its replay window while it is
//!   among the last 8 seen (the bound peer's always), so that within a session replays stay
//!   replays. Every message carries the sender's ack, so each side knows how far behind the
//!   other is ([`lag`](session::SyncSession::lag)).
//! - **Heartbeats** go out when nothing else was sent for `heartbeat`; any valid message proves
//!   the peer alive, and it is dead after `dead_after` × `heartbeat` without one.
//! - **Deltas**: the master [`push`](session::SyncSession::push)es every change of its table;
//!   they go out in order, 47 per message, a message as soon as it is full or when its oldest
//!   change is `batch_delay` old.
//! - **Loss** shows as a gap in the peer's sequence (heartbeats make it show within one
//!   interval), and a new peer session replacing a bound one (the peer restarted) counts as a
//!   gap too. A backup that has lost part of the master's stream after one of its bulks began
//!   asks it to **resume** (below); one that has no such bulk asks for the whole table
//!   (ResyncRequest, repeated every `dead_after` × `heartbeat` until a bulk arrives). Only a
//!   master's table is authoritative: a master never asks a backup, so a restarted peer's empty
//!   table never overwrites live state. [`request_resync`](session::SyncSession::request_resync)
//!   asks whatever the roles.
//! - **Bulk transfer**: BulkStart, BulkChunks (upserts read from the caller's table), BulkEnd.
//!   **Paced**: at most `bulk_rate` chunks a millisecond on average (a burst of
//!   [`BULK_CHUNKS_PER_POLL`](session::BULK_CHUNKS_PER_POLL)), below the receiver's own budget
//!   for its peer (the daemon's `[ha] sync_rate_pps`), so a bulk never overruns it, nor its
//!   rings and socket. A new whole-table request with an ack at or past the bulk's start
//!   restarts it; an earlier one is answered by the bulk already on its way.
//! - **Resume.** The receiver of a bulk tracks the last sequence number up to which it has
//!   everything of the sender's stream since the BulkStart (`through`). After a gap it asks to
//!   resume: a ResyncRequest with the resume flag and `through` in its ack field (again every
//!   `heartbeat` until answered). The sender keeps, for its latest bulk, the table position
//!   reached after each chunk and the deltas sent since the bulk began (at most
//!   [`MAX_RESUME_LOG`](session::MAX_RESUME_LOG) changes). It answers with a BulkResume, the
//!   deltas sent after `through` again, in their order and before anything newer, then the
//!   table read afresh from the position reached at `through`, and a BulkEnd: what the
//!   receiver lost is sent again, and no more than what was in flight after it. A request from
//!   before the log's oldest change restarts the bulk from the beginning. A BulkResume mends
//!   the break only when its ack is at or past the receiver's first request for that break;
//!   messages received after the gap are applied (the replay puts every key they touched back
//!   in order, and table reads are current). A bulk that lost messages ends with
//!   [`BulkIncomplete`](Received::BulkIncomplete) (remove nothing, wait); only a BulkEnd with
//!   nothing missing says [`BulkEnded`](Received::BulkEnded) and makes the receiver
//!   [`synced`](session::SyncSession::synced). A loss after the bulk's end resumes the same way
//!   (the deltas since, then the end again). Deltas keep flowing during a bulk, in one sequence with it, so the
//!   receiver's table is right when it applies everything in order: **on
//!   [`BulkStarted`](Received::BulkStarted) start a new generation, stamp every entry a change
//!   touches with it, and on [`BulkEnded`](Received::BulkEnded) remove the entries with an older
//!   stamp** (what the master deleted while the receiver was not listening; a resumed bulk's
//!   second end sweeps the same generation again, which removes nothing more). A BulkEnd
//!   whose BulkStart was never seen is [`BulkAborted`](Received::BulkAborted): remove nothing,
//!   a new bulk is already asked for.
//! - **Established entries only.** The caller replicates entries whose client has proved it
//!   saw its gateway's answer (`confirmed`); the dataplane records no others, the bulk source
//!   skips them, and a receiver does not take an unconfirmed upsert. A delete of an entry the
//!   receiver never had does nothing.
//! - **A new peer** (`on_peer_joined`, the first bound message of a peer session): the side with
//!   the master flag sends its whole table to a new peer session unasked; the new peer is asked for
//!   nothing by itself. So a fresh backup gets the state, and a recovering old master, which
//!   comes back as backup, receives the current master's table: it pulls state back before it
//!   preempts (VRRP must hold off preemption until [`Received::BulkEnded`] or
//!   [`synced`](session::SyncSession::synced)). A backup that sees no bulk start within a dead
//!   interval of the master joining asks for one.
//! - A master that steps down keeps its copy of the table and asks the new master only when it
//!   has lost messages of it, as any backup does.
//! - **Dual master.** Every message carries its sender's master flag. VRRP has no
//!   authentication, so when this side is master and the peer's bound messages say it is
//!   master too for a dead interval (longer than a preemption's overlap), that is counted once
//!   per episode and [`dual_master`](session::SyncSession::dual_master) says so while it lasts.

pub mod message;
pub mod session;

pub use message::{layout_fingerprint, Change, Entry, RejectReason, SyncKeyError};
pub use session::{
    Received, RejectCounters, SyncConfig, SyncConfigError, SyncCounters, SyncSession,
};
