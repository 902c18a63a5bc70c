//! Sync messages on the wire: building, authenticating and parsing them.
//!
//! Pure functions over bytes. The layout is the byte table in the [module docs](super); all
//! integers are big-endian. [`decode`] never panics, whatever the input, and checks the tag
//! with `hmac`'s constant-time comparison before it interprets anything but the length, magic
//! and version.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use hmac::{Hmac, Mac};
use serde::Serialize;
use sha2::{Digest, Sha256};

/// The first four bytes of every message.
pub const MAGIC: [u8; 4] = *b"VLBS";
/// The protocol version this code speaks; another one is rejected ([`RejectReason::BadVersion`]).
/// Version 1 had 32-bit sender ids and no receiver nonce, so no session binding.
pub const VERSION: u8 = 2;
/// Bytes of the fixed header.
pub const HEADER_LEN: usize = 50;
/// Bytes of one entry.
pub const ENTRY_LEN: usize = 28;
/// Bytes of the HMAC-SHA256 tag at the end of a message.
pub const TAG_LEN: usize = 32;
/// The largest message sent or accepted: fits a 1500-byte MTU with IPv6 and UDP headers and
/// some room for tunnels or VLANs on the backend segment, so no message is ever fragmented.
pub const MAX_MESSAGE_LEN: usize = 1400;
/// The most entries one message carries: 47 (50 + 47 × 28 + 32 = 1398 bytes).
pub const MAX_ENTRIES: usize = (MAX_MESSAGE_LEN - HEADER_LEN - TAG_LEN) / ENTRY_LEN;
/// The shortest message: a header without entries, and the tag.
pub const MIN_MESSAGE_LEN: usize = HEADER_LEN + TAG_LEN;
/// The shortest accepted key: 128 bits.
pub const MIN_KEY_LEN: usize = 16;

/// Header flag bit 0: the sender is the pair's master (VRRP master) as it sends.
pub const FLAG_MASTER: u16 = 0x0001;
/// Header flag bit 1, on a ResyncRequest: "resume your bulk after the sequence number in this
/// message's ack field" (everything of the sender's stream up to it has reached the requester;
/// a later message was lost). Without it, the request asks for the whole table.
pub const FLAG_RESUME: u16 = 0x0002;
/// Entry flag bit 0: the entry is confirmed (the gateway answered the client).
pub const ENTRY_CONFIRMED: u8 = 0x01;
/// Entry op: insert or replace the client's entry.
pub const OP_UPSERT: u8 = 1;
/// Entry op: remove the client's entry.
pub const OP_DELETE: u8 = 2;
/// Entry family: IPv4, carried as an IPv4-mapped IPv6 address (`::ffff:a.b.c.d`).
pub const FAMILY_V4: u8 = 4;
/// Entry family: IPv6.
pub const FAMILY_V6: u8 = 6;

/// What a message is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Kind {
    /// Liveness, the sender's role and its ack; no entries.
    Heartbeat = 1,
    /// Changes of the sender's table since the previous delta: upserts and deletes.
    Delta = 2,
    /// A bulk transfer of the sender's whole table begins; no entries.
    BulkStart = 3,
    /// Part of a bulk transfer: upserts only.
    BulkChunk = 4,
    /// The bulk transfer is complete; no entries.
    BulkEnd = 5,
    /// "Send me your whole table" (or, with [`FLAG_RESUME`], "resume your bulk after the
    /// sequence number in the ack field"); no entries.
    ResyncRequest = 6,
    /// The bulk in progress resumes: what the requester lost after the sequence number it
    /// asked from follows (the deltas sent since, again, then the table from the position
    /// reached at that point); no entries.
    BulkResume = 7,
}

impl Kind {
    /// Every kind, in wire order.
    pub const ALL: [Kind; 7] = [
        Kind::Heartbeat,
        Kind::Delta,
        Kind::BulkStart,
        Kind::BulkChunk,
        Kind::BulkEnd,
        Kind::ResyncRequest,
        Kind::BulkResume,
    ];

    /// The kind with this wire value.
    pub fn from_u8(b: u8) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| *k as u8 == b)
    }

    /// Whether messages of this kind may carry entries.
    pub fn carries_entries(self) -> bool {
        matches!(self, Kind::Delta | Kind::BulkChunk)
    }
}

/// The fixed header of a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// What the message is.
    pub kind: Kind,
    /// [`FLAG_MASTER`], [`FLAG_RESUME`]; the other bits are sent as zero and ignored.
    pub flags: u16,
    /// The sender's session nonce: random, new for every session (process start or new
    /// layout), never 0.
    pub sender: u64,
    /// The receiver's session nonce as the sender last learned it, 0 while it knows none. A
    /// receiver applies a message only when this is its own current nonce: nobody could have
    /// made such a message before the receiver's session began (the tag covers it).
    pub receiver: u64,
    /// The sender's sequence number: 1 for its first message, +1 for every message after.
    pub seq: u64,
    /// The sender's layout fingerprint ([`layout_fingerprint`]).
    pub layout: u64,
    /// The highest sequence number the sender has accepted from its peer (0: none yet).
    pub ack: u64,
}

impl Header {
    /// Whether the sender says it is the master.
    pub fn master(&self) -> bool {
        self.flags & FLAG_MASTER != 0
    }

    /// Whether a ResyncRequest asks to resume after its ack ([`FLAG_RESUME`]).
    pub fn resume(&self) -> bool {
        self.flags & FLAG_RESUME != 0
    }
}

/// One affinity entry: which gateway a client is pinned to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Entry {
    /// The client's address.
    pub client: IpAddr,
    /// Index of the service in the configuration (same layout on both sides).
    pub service: u16,
    /// Index of the gateway in the configuration.
    pub gateway: u16,
    /// Whether the gateway has answered the client (confirmed entries survive longer).
    pub confirmed: bool,
    /// Seconds until the entry expires unless refreshed; relative, as the clocks of the two
    /// appliances are not synchronised.
    pub expires_in_s: u32,
}

/// One change of an affinity table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Change {
    /// Insert, confirm or refresh an entry (replaces the client's entry for that service).
    Upsert(Entry),
    /// Remove the client's entry for the service.
    Delete {
        /// The client's address.
        client: IpAddr,
        /// Index of the service.
        service: u16,
    },
}

impl Change {
    /// The key of the entry this change is about: client and service.
    pub fn key(&self) -> (IpAddr, u16) {
        match self {
            Change::Upsert(e) => (e.client, e.service),
            Change::Delete { client, service } => (*client, *service),
        }
    }
}

/// A whole message, without its tag.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    /// The header (its entry count is `changes.len()`).
    pub header: Header,
    /// The entries: deltas carry upserts and deletes, bulk chunks only upserts, other kinds none.
    pub changes: Vec<Change>,
}

/// Why a datagram was not accepted. Every rejection is counted
/// ([`RejectCounters`](super::session::RejectCounters)).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RejectReason {
    /// Shorter than a header and tag, or than its entry count says.
    Truncated,
    /// Longer than [`MAX_MESSAGE_LEN`], or than its entry count says.
    TooLong,
    /// Does not start with `VLBS`.
    BadMagic,
    /// Another protocol version.
    BadVersion,
    /// The HMAC tag does not match: forged, corrupted, or another key.
    BadTag,
    /// An unknown message kind (authentic, so the peer runs other code).
    BadKind,
    /// The peer's services and gateways differ from ours, so its indices mean other things.
    LayoutMismatch,
    /// A malformed entry (unknown op or family, reserved bits set, a delete in a bulk, entries
    /// in a kind that has none).
    BadEntry,
    /// A sequence number not above the last one accepted from that sender: a replay, a
    /// duplicate or a reordered message. Never applied.
    Replayed,
    /// Our own message came back (a loop, or both sides use the same session id).
    Reflected,
    /// Bound to another session of ours: its receiver nonce is neither ours nor 0. A message
    /// captured before this process (or this session) started and sent again, or a peer that
    /// has not heard this session yet (it learns our nonce from our next message). Never
    /// applied.
    OtherSession,
    /// From a peer session other than the live one: a hello from a new sender while the bound
    /// peer is alive, or anything from a peer session that a newer one has replaced. Never
    /// applied.
    StalePeer,
}

impl RejectReason {
    /// Every reason.
    pub const ALL: [RejectReason; 12] = [
        RejectReason::Truncated,
        RejectReason::TooLong,
        RejectReason::BadMagic,
        RejectReason::BadVersion,
        RejectReason::BadTag,
        RejectReason::BadKind,
        RejectReason::LayoutMismatch,
        RejectReason::BadEntry,
        RejectReason::Replayed,
        RejectReason::Reflected,
        RejectReason::OtherSession,
        RejectReason::StalePeer,
    ];

    /// The reason's name, as in counters and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            RejectReason::Truncated => "truncated",
            RejectReason::TooLong => "too_long",
            RejectReason::BadMagic => "bad_magic",
            RejectReason::BadVersion => "bad_version",
            RejectReason::BadTag => "bad_tag",
            RejectReason::BadKind => "bad_kind",
            RejectReason::LayoutMismatch => "layout_mismatch",
            RejectReason::BadEntry => "bad_entry",
            RejectReason::Replayed => "replayed",
            RejectReason::Reflected => "reflected",
            RejectReason::OtherSession => "other_session",
            RejectReason::StalePeer => "stale_peer",
        }
    }
}

impl fmt::Display for RejectReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::error::Error for RejectReason {}

/// Why a key cannot be the pair's shared key.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SyncKeyError {
    /// Shorter than [`MIN_KEY_LEN`].
    #[error("sync key is {len} bytes, at least {MIN_KEY_LEN} are needed")]
    TooShort { len: usize },
    /// Refused by HMAC-SHA256.
    #[error("sync key: {0}")]
    Hmac(#[from] hmac::digest::InvalidLength),
}

/// The pair's shared key, ready to tag and verify messages.
#[derive(Clone)]
pub struct SyncKey {
    // Keyed once: cloning the keyed state per message is cheaper than re-deriving the padded
    // key blocks every time.
    mac: Hmac<Sha256>,
}

impl SyncKey {
    /// A key of at least [`MIN_KEY_LEN`] bytes.
    pub fn new(key: &[u8]) -> Result<SyncKey, SyncKeyError> {
        if key.len() < MIN_KEY_LEN {
            return Err(SyncKeyError::TooShort { len: key.len() });
        }
        let mac = Hmac::<Sha256>::new_from_slice(key)?;
        Ok(SyncKey { mac })
    }

    /// The tag of `data`.
    pub fn tag(&self, data: &[u8]) -> [u8; TAG_LEN] {
        let mut mac = self.mac.clone();
        mac.update(data);
        mac.finalize().into_bytes().into()
    }

    /// Whether `tag` is the tag of `data`, compared in constant time.
    pub fn verify(&self, data: &[u8], tag: &[u8]) -> bool {
        let mut mac = self.mac.clone();
        mac.update(data);
        mac.verify_slice(tag).is_ok()
    }
}

impl fmt::Debug for SyncKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print key material, not even derived state.
        f.write_str("SyncKey(..)")
    }
}

/// The layout fingerprint of a configuration: a hash of its service names and, per service,
/// its gateway names, in configuration order.
///
/// Entries name services and gateways by index, so two appliances may only exchange entries
/// when their lists are the same. SHA-256 rather than `std`'s hasher, because the two sides may
/// run different builds and the value must not depend on the compiler; names are
/// length-prefixed so that `["ab", "c"]` and `["a", "bc"]` differ.
pub fn layout_fingerprint<'a, S, G>(services: S) -> u64
where
    S: IntoIterator<Item = (&'a str, G)>,
    G: IntoIterator<Item = &'a str>,
{
    let mut h = Sha256::new();
    h.update(b"vpnlb-sync-layout-v1\0");
    for (service, gateways) in services {
        h.update(b"S");
        h.update((service.len() as u64).to_be_bytes());
        h.update(service.as_bytes());
        for gateway in gateways {
            h.update(b"G");
            h.update((gateway.len() as u64).to_be_bytes());
            h.update(gateway.as_bytes());
        }
    }
    let digest = h.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(first)
}

/// The bytes of a message: header, entries and tag.
///
/// # Panics
/// If the message has more than [`MAX_ENTRIES`] changes, or changes in a kind that carries
/// none, or deletes in a bulk chunk: the session never builds such messages, and sending one
/// would only get it rejected by the peer.
pub fn encode(key: &SyncKey, msg: &Message) -> Vec<u8> {
    let h = &msg.header;
    let count = match u16::try_from(msg.changes.len()) {
        Ok(n) if usize::from(n) <= MAX_ENTRIES => n,
        _ => panic!("too many entries"),
    };
    assert!(
        h.kind.carries_entries() || msg.changes.is_empty(),
        "entries in a {:?}",
        h.kind
    );
    let mut b = Vec::with_capacity(HEADER_LEN + msg.changes.len() * ENTRY_LEN + TAG_LEN);
    b.extend_from_slice(&MAGIC);
    b.push(VERSION);
    b.push(h.kind as u8);
    b.extend_from_slice(&h.flags.to_be_bytes());
    b.extend_from_slice(&h.sender.to_be_bytes());
    b.extend_from_slice(&h.receiver.to_be_bytes());
    b.extend_from_slice(&h.seq.to_be_bytes());
    b.extend_from_slice(&h.layout.to_be_bytes());
    b.extend_from_slice(&h.ack.to_be_bytes());
    b.extend_from_slice(&count.to_be_bytes());
    for c in &msg.changes {
        encode_change(&mut b, c, h.kind);
    }
    let tag = key.tag(&b);
    b.extend_from_slice(&tag);
    b
}

fn encode_change(b: &mut Vec<u8>, c: &Change, kind: Kind) {
    let (op, flags, client, service, gateway, expires) = match *c {
        Change::Upsert(e) => (
            OP_UPSERT,
            if e.confirmed { ENTRY_CONFIRMED } else { 0 },
            e.client,
            e.service,
            e.gateway,
            e.expires_in_s,
        ),
        Change::Delete { client, service } => {
            assert!(kind != Kind::BulkChunk, "delete in a bulk chunk");
            (OP_DELETE, 0, client, service, 0, 0)
        }
    };
    let (family, addr) = match client {
        IpAddr::V4(a) => (FAMILY_V4, a.to_ipv6_mapped().octets()),
        IpAddr::V6(a) => (FAMILY_V6, a.octets()),
    };
    b.push(op);
    b.push(family);
    b.push(flags);
    b.push(0); // reserved
    b.extend_from_slice(&addr);
    b.extend_from_slice(&service.to_be_bytes());
    b.extend_from_slice(&gateway.to_be_bytes());
    b.extend_from_slice(&expires.to_be_bytes());
}

/// Parses and authenticates a datagram whose sender must have layout `expected_layout`.
///
/// Checks, in order: length bounds, magic, version, tag (constant time), kind, entry count
/// against the length, layout, entries. Sequence numbers are the session's business
/// ([`Replayed`](RejectReason::Replayed) and [`Reflected`](RejectReason::Reflected) come from
/// there, and so do [`OtherSession`](RejectReason::OtherSession) and
/// [`StalePeer`](RejectReason::StalePeer), which need the session's nonces). Never panics.
pub fn decode(key: &SyncKey, expected_layout: u64, d: &[u8]) -> Result<Message, RejectReason> {
    if d.len() < MIN_MESSAGE_LEN {
        return Err(RejectReason::Truncated);
    }
    if d.len() > MAX_MESSAGE_LEN {
        return Err(RejectReason::TooLong);
    }
    if d[0..4] != MAGIC {
        return Err(RejectReason::BadMagic);
    }
    if d[4] != VERSION {
        return Err(RejectReason::BadVersion);
    }
    let (body, tag) = d.split_at(d.len() - TAG_LEN);
    if !key.verify(body, tag) {
        return Err(RejectReason::BadTag);
    }
    // From here on the bytes are the peer's own, so what remains are bugs or version skew, not
    // attacks; still checked, as the peer could run other code.
    let kind = Kind::from_u8(body[5]).ok_or(RejectReason::BadKind)?;
    let count = usize::from(be16(body, 48));
    let want = HEADER_LEN + count * ENTRY_LEN;
    if body.len() < want {
        return Err(RejectReason::Truncated);
    }
    if body.len() > want {
        return Err(RejectReason::TooLong);
    }
    let header = Header {
        kind,
        flags: be16(body, 6),
        sender: be64(body, 8),
        receiver: be64(body, 16),
        seq: be64(body, 24),
        layout: be64(body, 32),
        ack: be64(body, 40),
    };
    if header.layout != expected_layout {
        return Err(RejectReason::LayoutMismatch);
    }
    if count > 0 && !kind.carries_entries() {
        return Err(RejectReason::BadEntry);
    }
    let changes = body[HEADER_LEN..]
        .chunks_exact(ENTRY_LEN)
        .map(|e| decode_entry(e, kind))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Message { header, changes })
}

fn decode_entry(e: &[u8], kind: Kind) -> Result<Change, RejectReason> {
    let (op, family, flags, reserved) = (e[0], e[1], e[2], e[3]);
    if reserved != 0 || flags & !ENTRY_CONFIRMED != 0 {
        return Err(RejectReason::BadEntry);
    }
    let mut octets = [0u8; 16];
    octets.copy_from_slice(&e[4..20]);
    let v6 = Ipv6Addr::from(octets);
    let client = match family {
        FAMILY_V4 => {
            // Only the mapped form is valid, so every IPv4 client has exactly one encoding.
            let v4: Ipv4Addr = v6.to_ipv4_mapped().ok_or(RejectReason::BadEntry)?;
            IpAddr::V4(v4)
        }
        FAMILY_V6 => IpAddr::V6(v6),
        _ => return Err(RejectReason::BadEntry),
    };
    let service = be16(e, 20);
    let gateway = be16(e, 22);
    let expires_in_s = be32(e, 24);
    match op {
        OP_UPSERT => Ok(Change::Upsert(Entry {
            client,
            service,
            gateway,
            confirmed: flags & ENTRY_CONFIRMED != 0,
            expires_in_s,
        })),
        // A bulk is a snapshot of what exists; a delete there means the sender is broken.
        OP_DELETE if kind == Kind::Delta => {
            if flags != 0 || gateway != 0 || expires_in_s != 0 {
                return Err(RejectReason::BadEntry);
            }
            Ok(Change::Delete { client, service })
        }
        _ => Err(RejectReason::BadEntry),
    }
}

// The callers have checked the lengths; these index within them.
fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

fn be32(b: &[u8], at: usize) -> u32 {
    let mut x = [0u8; 4];
    x.copy_from_slice(&b[at..at + 4]);
    u32::from_be_bytes(x)
}

fn be64(b: &[u8], at: usize) -> u64 {
    let mut x = [0u8; 8];
    x.copy_from_slice(&b[at..at + 8]);
    u64::from_be_bytes(x)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const LAYOUT: u64 = 0x0102_0304_0506_0708;

    fn key() -> SyncKey {
        SyncKey::new(b"0123456789abcdef-test-key").unwrap()
    }

    fn header(kind: Kind) -> Header {
        Header {
            kind,
            flags: FLAG_MASTER,
            sender: 0xdead_beef_0bad_cafe,
            receiver: 0x0123_4567_89ab_cdef,
            seq: 7,
            layout: LAYOUT,
            ack: 5,
        }
    }

    fn v4(a: u8, b: u8, c: u8, d: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(a, b, c, d))
    }

    fn upsert(client: IpAddr, gateway: u16) -> Change {
        Change::Upsert(Entry {
            client,
            service: 1,
            gateway,
            confirmed: true,
            expires_in_s: 3600,
        })
    }

    /// Re-tags a (modified) message body so that the checks after the tag are reached.
    fn retag(k: &SyncKey, mut d: Vec<u8>) -> Vec<u8> {
        d.truncate(d.len() - TAG_LEN);
        let t = k.tag(&d);
        d.extend_from_slice(&t);
        d
    }

    #[test]
    fn sizes() {
        assert_eq!(MAX_ENTRIES, 47);
        const { assert!(HEADER_LEN + MAX_ENTRIES * ENTRY_LEN + TAG_LEN <= MAX_MESSAGE_LEN) };
        const { assert!(HEADER_LEN + (MAX_ENTRIES + 1) * ENTRY_LEN + TAG_LEN > MAX_MESSAGE_LEN) };
    }

    #[test]
    fn literal_header_bytes() {
        let k = key();
        let msg = Message {
            header: Header {
                kind: Kind::Delta,
                flags: FLAG_MASTER,
                sender: 0x0a0b_0c0d_0e0f_1011,
                receiver: 0x2122_2324_2526_2728,
                seq: 0x1122_3344_5566_7788,
                layout: LAYOUT,
                ack: 0x99,
            },
            changes: vec![
                Change::Upsert(Entry {
                    client: v4(198, 18, 64, 7),
                    service: 2,
                    gateway: 3,
                    confirmed: true,
                    expires_in_s: 0x0001_0203,
                }),
                Change::Delete {
                    client: "2001:2:0:64::9".parse().unwrap(),
                    service: 0x0102,
                },
            ],
        };
        let d = encode(&k, &msg);
        #[rustfmt::skip]
        let expected_header: [u8; HEADER_LEN] = [
            b'V', b'L', b'B', b'S',            // magic
            2,                                  // version
            2,                                  // kind: delta
            0x00, 0x01,                         // flags: master
            0x0a, 0x0b, 0x0c, 0x0d, 0x0e, 0x0f, 0x10, 0x11, // sender nonce
            0x21, 0x22, 0x23, 0x24, 0x25, 0x26, 0x27, 0x28, // receiver nonce
            0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, // seq
            1, 2, 3, 4, 5, 6, 7, 8,             // layout
            0, 0, 0, 0, 0, 0, 0, 0x99,          // ack
            0, 2,                               // entry count
        ];
        assert_eq!(d[..HEADER_LEN], expected_header);
        #[rustfmt::skip]
        let expected_upsert: [u8; ENTRY_LEN] = [
            1, 4, 1, 0,                         // op upsert, IPv4, confirmed, reserved
            0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 198, 18, 64, 7, // ::ffff:198.18.64.7
            0, 2,                               // service
            0, 3,                               // gateway
            0, 1, 2, 3,                         // expires in
        ];
        assert_eq!(d[HEADER_LEN..HEADER_LEN + ENTRY_LEN], expected_upsert);
        #[rustfmt::skip]
        let expected_delete: [u8; ENTRY_LEN] = [
            2, 6, 0, 0,                         // op delete, IPv6
            0x20, 0x01, 0, 2, 0, 0, 0, 0x64, 0, 0, 0, 0, 0, 0, 0, 9,
            1, 2,                               // service
            0, 0,                               // gateway
            0, 0, 0, 0,                         // expires in
        ];
        assert_eq!(
            d[HEADER_LEN + ENTRY_LEN..HEADER_LEN + 2 * ENTRY_LEN],
            expected_delete
        );
        assert_eq!(d.len(), HEADER_LEN + 2 * ENTRY_LEN + TAG_LEN);
        assert_eq!(decode(&k, LAYOUT, &d).unwrap(), msg);
    }

    #[test]
    fn tag_is_hmac_sha256_of_everything_before_it() {
        // RFC 4231 test case 2 checks the primitive itself ("Jefe" is too short for a pair
        // key, so go through hmac directly for it).
        let mut mac = Hmac::<Sha256>::new_from_slice(b"Jefe").unwrap();
        mac.update(b"what do ya want for nothing?");
        let t: [u8; 32] = mac.finalize().into_bytes().into();
        assert_eq!(
            t[..8],
            [0x5b, 0xdc, 0xc1, 0x46, 0xbf, 0x60, 0x75, 0x4e],
            "RFC 4231 case 2"
        );
        let k = key();
        let d = encode(
            &k,
            &Message {
                header: header(Kind::Heartbeat),
                changes: vec![],
            },
        );
        assert_eq!(d.len(), MIN_MESSAGE_LEN);
        let (body, tag) = d.split_at(HEADER_LEN);
        let mut mac = Hmac::<Sha256>::new_from_slice(b"0123456789abcdef-test-key").unwrap();
        mac.update(body);
        assert_eq!(tag, &mac.finalize().into_bytes()[..]);
        // Another key does not verify.
        let other = SyncKey::new(b"0123456789abcdef-other-key").unwrap();
        assert_eq!(decode(&other, LAYOUT, &d), Err(RejectReason::BadTag));
    }

    #[test]
    fn short_keys_are_refused() {
        assert!(SyncKey::new(&[7u8; 15]).is_err());
        assert!(SyncKey::new(&[7u8; 16]).is_ok());
        assert_eq!(format!("{:?}", key()), "SyncKey(..)");
    }

    #[test]
    fn round_trip_every_kind() {
        let k = key();
        for kind in Kind::ALL {
            let changes = match kind {
                Kind::Delta => vec![
                    upsert(v4(198, 18, 64, 1), 0),
                    Change::Delete {
                        client: v4(198, 18, 64, 2),
                        service: 0,
                    },
                    upsert("2001:2:0:64::1".parse().unwrap(), 2),
                ],
                Kind::BulkChunk => (0..MAX_ENTRIES as u8)
                    .map(|i| upsert(v4(198, 18, 65, i), u16::from(i % 3)))
                    .collect(),
                _ => vec![],
            };
            let msg = Message {
                header: Header {
                    flags: 0,
                    ..header(kind)
                },
                changes,
            };
            let d = encode(&k, &msg);
            assert!(d.len() <= MAX_MESSAGE_LEN);
            assert_eq!(decode(&k, LAYOUT, &d).unwrap(), msg, "{kind:?}");
        }
    }

    #[test]
    fn mapped_v6_client_keeps_its_family() {
        let k = key();
        let msg = Message {
            header: header(Kind::Delta),
            changes: vec![upsert("::ffff:198.18.64.1".parse().unwrap(), 1)],
        };
        assert_eq!(decode(&k, LAYOUT, &encode(&k, &msg)).unwrap(), msg);
    }

    #[test]
    fn rejects_with_named_reasons() {
        let k = key();
        let msg = Message {
            header: header(Kind::Delta),
            changes: vec![upsert(v4(198, 18, 64, 1), 1)],
        };
        let good = encode(&k, &msg);
        assert!(decode(&k, LAYOUT, &good).is_ok());

        assert_eq!(decode(&k, LAYOUT, &[]), Err(RejectReason::Truncated));
        assert_eq!(
            decode(&k, LAYOUT, &good[..MIN_MESSAGE_LEN - 1]),
            Err(RejectReason::Truncated)
        );
        assert_eq!(
            decode(&k, LAYOUT, &vec![0u8; MAX_MESSAGE_LEN + 1]),
            Err(RejectReason::TooLong)
        );
        let mut bad = good.clone();
        bad[0] = b'X';
        assert_eq!(decode(&k, LAYOUT, &bad), Err(RejectReason::BadMagic));
        let mut bad = good.clone();
        bad[4] = 1; // the version before session binding
        assert_eq!(decode(&k, LAYOUT, &bad), Err(RejectReason::BadVersion));
        let mut bad = good.clone();
        bad[4] = 3;
        assert_eq!(decode(&k, LAYOUT, &bad), Err(RejectReason::BadVersion));
        // Forged: any changed bit, in the header, an entry or the tag.
        for at in [5, 12, 20, 28, HEADER_LEN + 5, good.len() - 1] {
            let mut bad = good.clone();
            bad[at] ^= 0x40;
            assert_eq!(decode(&k, LAYOUT, &bad), Err(RejectReason::BadTag), "{at}");
        }
        // Cutting off the tag's last byte shifts the tag: also forged.
        assert_eq!(
            decode(&k, LAYOUT, &good[..good.len() - 1]),
            Err(RejectReason::BadTag)
        );
        assert_eq!(decode(&k, 1, &good), Err(RejectReason::LayoutMismatch));

        // Authentic but malformed (re-tagged, as a buggy peer would send them).
        let mut bad = good.clone();
        bad[5] = 9;
        assert_eq!(
            decode(&k, LAYOUT, &retag(&k, bad)),
            Err(RejectReason::BadKind)
        );
        let mut bad = good.clone();
        bad[HEADER_LEN - 1] = 2; // count 2, one entry present
        assert_eq!(
            decode(&k, LAYOUT, &retag(&k, bad)),
            Err(RejectReason::Truncated)
        );
        let mut bad = good.clone();
        bad[HEADER_LEN - 1] = 0; // count 0, one entry present
        assert_eq!(
            decode(&k, LAYOUT, &retag(&k, bad)),
            Err(RejectReason::TooLong)
        );
        let mut bad = good.clone();
        bad[5] = Kind::Heartbeat as u8; // entries in a heartbeat
        assert_eq!(
            decode(&k, LAYOUT, &retag(&k, bad)),
            Err(RejectReason::BadEntry)
        );
        for (at, value) in [
            (0, 0), // op
            (0, 3), // op
            (1, 5), // family
            (2, 2), // unknown entry flag
            (3, 1), // reserved
            (4, 1), // IPv4 family with an unmapped address
        ] {
            let mut bad = good.clone();
            bad[HEADER_LEN + at] = value;
            assert_eq!(
                decode(&k, LAYOUT, &retag(&k, bad)),
                Err(RejectReason::BadEntry),
                "entry byte {at} = {value}"
            );
        }
        // A delete in a bulk chunk.
        let del = encode(
            &k,
            &Message {
                header: header(Kind::Delta),
                changes: vec![Change::Delete {
                    client: v4(198, 18, 64, 1),
                    service: 0,
                }],
            },
        );
        let mut bad = del.clone();
        bad[5] = Kind::BulkChunk as u8;
        assert_eq!(
            decode(&k, LAYOUT, &retag(&k, bad)),
            Err(RejectReason::BadEntry)
        );
        // A delete that carries a gateway.
        let mut bad = del;
        bad[HEADER_LEN + 23] = 1;
        assert_eq!(
            decode(&k, LAYOUT, &retag(&k, bad)),
            Err(RejectReason::BadEntry)
        );
    }

    #[test]
    fn layout_fingerprint_depends_on_names_and_order() {
        let a = layout_fingerprint([("vpn", vec!["gw1", "gw2"])]);
        assert_eq!(a, layout_fingerprint([("vpn", vec!["gw1", "gw2"])]));
        assert_ne!(a, layout_fingerprint([("vpn", vec!["gw2", "gw1"])]));
        assert_ne!(a, layout_fingerprint([("vpn", vec!["gw1", "gw2", "gw3"])]));
        assert_ne!(a, layout_fingerprint([("vpn2", vec!["gw1", "gw2"])]));
        assert_ne!(
            layout_fingerprint([("a", vec!["bc"])]),
            layout_fingerprint([("ab", vec!["c"])])
        );
        assert_ne!(
            layout_fingerprint([("s", vec!["g"]), ("t", vec![])]),
            layout_fingerprint([("s", vec![]), ("t", vec!["g"])])
        );
    }

    proptest! {
        #[test]
        fn decode_never_panics(d in proptest::collection::vec(any::<u8>(), 0..1500)) {
            let _ = decode(&key(), LAYOUT, &d);
        }

        /// Arbitrary bodies with a valid tag, so the checks behind the tag see arbitrary bytes.
        #[test]
        fn decode_never_panics_behind_the_tag(
            kind in 0u8..8,
            count in 0u16..60,
            rest in proptest::collection::vec(any::<u8>(), 0..1400),
        ) {
            let k = key();
            let mut d = MAGIC.to_vec();
            d.push(VERSION);
            d.push(kind);
            d.extend_from_slice(&[0; HEADER_LEN - 8]);
            d[32..40].copy_from_slice(&LAYOUT.to_be_bytes());
            d.extend_from_slice(&count.to_be_bytes());
            d.extend_from_slice(&rest);
            d.truncate(MAX_MESSAGE_LEN - TAG_LEN);
            let t = k.tag(&d);
            d.extend_from_slice(&t);
            if let Ok(m) = decode(&k, LAYOUT, &d) {
                // What parses re-encodes to the same bytes (a canonical encoding).
                prop_assert_eq!(encode(&k, &m), d);
            }
        }

        #[test]
        fn round_trip_arbitrary_entries(
            entries in proptest::collection::vec(
                (any::<bool>(), any::<[u8; 16]>(), any::<bool>(), any::<u16>(), any::<u16>(),
                 any::<bool>(), any::<u32>()),
                0..=MAX_ENTRIES,
            ),
            seq in any::<u64>(),
            ack in any::<u64>(),
        ) {
            let changes: Vec<Change> = entries
                .into_iter()
                .map(|(is_v4, a, upsert, service, gateway, confirmed, expires_in_s)| {
                    let client = if is_v4 {
                        IpAddr::V4(Ipv4Addr::new(a[0], a[1], a[2], a[3]))
                    } else {
                        IpAddr::V6(Ipv6Addr::from(a))
                    };
                    if upsert {
                        Change::Upsert(Entry { client, service, gateway, confirmed, expires_in_s })
                    } else {
                        Change::Delete { client, service }
                    }
                })
                .collect();
            let k = key();
            let msg = Message { header: Header { seq, ack, ..header(Kind::Delta) }, changes };
            let d = encode(&k, &msg);
            prop_assert!(d.len() <= MAX_MESSAGE_LEN);
            prop_assert_eq!(decode(&k, LAYOUT, &d).unwrap(), msg);
        }
    }
}
