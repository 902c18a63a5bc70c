//! Per-core client → gateway affinity table.
//!
//! Each poll-mode worker owns one [`AffinityShard`]: no locks, no atomics. An entry maps
//! (client address, service) to the gateway chosen for that client and lives until it has been
//! idle for the service's timeout (the caller computes `expires_at`).
//!
//! # Layout
//!
//! Five arrays, allocated (and written, so every page is faulted in) by [`AffinityShard::new`]
//! and never resized (besides the three below, the pending proofs, 4 bytes per slot, and the
//! per-prefix counters of established entries, 2 bytes per 4 slots: see [`PrefixQuota`]):
//!
//! * `entries`: one 32-byte, 32-byte-aligned `Entry` per unit of capacity (so an entry never
//!   straddles a cache line): key, gateway, `last_seen`, `expires_at` and a `meta` word holding
//!   30 hash bits (to find the entry's home bucket again without rehashing), an occupied flag
//!   and the confirmed flag. Slab indices are stable for an entry's life.
//! * `links`: 8 bytes per unit of capacity, `prev`/`next` slab indices. Occupied unconfirmed
//!   entries form a doubly linked FIFO in creation order (oldest at the head), so evicting the
//!   oldest unconfirmed entry and unlinking one on `confirm`/removal are both O(1). Free slots
//!   chain through `next` as the free list. Only the insert/confirm/removal paths touch it.
//! * `buckets`: `ceil(capacity / 5)` index buckets of exactly one cache line: 10 lanes of
//!   (16-bit tag, 32-bit slab index) plus an overflow count. An entry is indexed in its home
//!   bucket or, when that is full, in the next bucket with a free lane (linear probing by
//!   bucket); every bucket it skipped counts it in `overflow`. A lookup stops at the first
//!   bucket whose overflow count is zero, and a removal decrements the counts it incremented,
//!   so there are no tombstones and no rehash is ever needed (the F14 scheme).
//!
//! # Memory
//!
//! Per unit of capacity: 32 (entry) + 8 (links) + 4 (pending proof) + 64 / 5 (index share) +
//! 2 / 4 (prefix counter share) = 57.3 bytes, plus under 256 bytes for the shard struct. At full capacity the index is half full, each
//! bucket's occupancy is about Poisson(5) and only ~1.4% of buckets overflow, so a lookup
//! reads one bucket line (rarely two) and one entry line. A 10,000,000-entry shard takes
//! about 573 MB.
//!
//! # Expiry and eviction
//!
//! Expiry is lazy: a lookup that finds an entry with `expires_at <= now` removes it and reports
//! it, and [`AffinityShard::sweep`] examines a bounded number of slab slots per call from a
//! cursor. When an insert finds no free slot it reclaims, in order: the oldest unconfirmed entry
//! if it has expired, the first expired entry among the next few slots of the sweep cursor, and
//! then the oldest unconfirmed entry even though it is live. An unconfirmed insert at the
//! `max_unconfirmed` cap evicts the oldest unconfirmed entry.
//!
//! Why a confirmed live entry can never be evicted: apart from `remove` and `retain`, which
//! the caller asks for, an entry leaves only when it has expired or as the FIFO head, and the
//! FIFO holds only unconfirmed entries: `confirm` unlinks an entry, confirmed inserts never
//! enter it, and no path demotes a confirmed entry (an insert that finds its key present keeps
//! it confirmed). With no evictable entry the insert fails with [`InsertOutcome::Full`].
//!
//! # Per-prefix quotas
//!
//! So that nobody can fill a shard with established entries from the addresses of one prefix
//! they own (an IPv6 /64 is 2^64 addresses, and real handshakes need no spoofing), a shard
//! keeps, per client prefix, how many of its entries are established, and refuses an
//! establishment (a `confirm`, or a confirmed insert of a new key) at the prefix's quota
//! ([`Confirm::PrefixQuota`], [`InsertOutcome::PrefixQuota`], counted in `prefix_quota`).
//! Every removal of an established entry (expiry, `remove`, `retain`, `sweep`) goes through
//! `remove_slot`, which decrements its counter. An established client's packet never touches
//! the counters. See [`PrefixQuota`].
//!
//! # Limits
//!
//! * Hash flooding. A shard hashes with its [`HashKey`]: the daemon draws one per start, so a
//!   source that chooses its addresses (easily, over IPv6) cannot aim them at one bucket. And
//!   whatever the key, an insert never indexes an entry more than [`MAX_PROBE_BUCKETS`] from its
//!   home bucket (it is refused and counted in `probe_limit`), so no lookup reads more lines.
//!   [`HashKey::FIXED`] (replay, tests) is public.
//! * An insert's search for an expired entry is bounded (the FIFO head and 16 slots from the
//!   sweep cursor), so in a full table an expired entry elsewhere waits for `sweep` or for later
//!   inserts (each refused insert scans further) to be found.

use std::collections::TryReserveError;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// A client address plus the service it reached: the affinity key.
///
/// IPv4 clients are stored as IPv4-mapped IPv6 addresses (`::ffff:a.b.c.d`), so one key type
/// covers both families and an IPv4-mapped IPv6 address denotes the same client as the IPv4
/// address.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default)]
pub struct AffinityKey {
    /// Client address, IPv6 or IPv4-mapped IPv6, in network byte order.
    pub client: [u8; 16],
    /// Service id; [`DIRECT`] set for a redirected client's entry (see [`AffinityKey::direct`]).
    pub service: u16,
}

/// `AffinityKey::service` bit of a redirected client's entry: a client that talks to its
/// gateway's own address (routed, not translated) has an entry of its own beside its NAT-mode
/// one, so the two can never be confused.
pub const DIRECT: u16 = 0x8000;

/// Service ids (without [`DIRECT`]) a shard accepts: below this. The bit above them, in a
/// stored entry, is its remap epoch (see [`AffinityShard::begin_remap`]).
pub const MAX_SERVICES: usize = EPOCH as usize;

/// Bit of an entry's stored service id that tells the entries written in the shard's current
/// remap epoch from those of the epoch before, which a running remap has not translated yet.
/// Lookups compare it with the rest of the key, so an old entry never answers for a new key
/// and the common case costs one OR.
const EPOCH: u16 = 0x4000;

/// The key of the affinity hash: a seed and three odd multipliers.
///
/// The daemon draws one per start ([`HashKey::from_random`]), so nobody outside can compute
/// which client addresses share an index bucket; the HA sync carries keys, never hashes, so
/// two appliances need not share it. [`HashKey::FIXED`] (public constants) serves replay,
/// tests and benchmarks, which want the same layout on every run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HashKey {
    seed: u64,
    k1: u64,
    k2: u64,
    k3: u64,
}

impl HashKey {
    /// The public, fixed key (from the golden ratio, pi and e).
    pub const FIXED: HashKey = HashKey {
        seed: 0x243f_6a88_85a3_08d3,
        k1: 0x9e37_79b9_7f4a_7c15,
        k2: 0xc2b2_ae3d_27d4_eb4f,
        k3: 0x1656_67b1_9e37_79f9,
    };

    /// A key from four random words (from the OS's random source); the multipliers are made
    /// odd, so each keeps its field's bits bijective.
    pub const fn from_random(words: [u64; 4]) -> HashKey {
        HashKey {
            seed: words[0],
            k1: words[1] | 1,
            k2: words[2] | 1,
            k3: words[3] | 1,
        }
    }
}

impl AffinityKey {
    /// The key for `client` reaching `service`.
    #[inline]
    pub fn new(client: IpAddr, service: u16) -> Self {
        match client {
            IpAddr::V4(a) => Self::from_v4(a, service),
            IpAddr::V6(a) => Self::from_v6(&a, service),
        }
    }

    /// The key for an IPv4 client, stored as `::ffff:a.b.c.d`.
    #[inline]
    pub fn from_v4(a: Ipv4Addr, service: u16) -> Self {
        let o = a.octets();
        let mut client = [0u8; 16];
        client[10] = 0xff;
        client[11] = 0xff;
        client[12] = o[0];
        client[13] = o[1];
        client[14] = o[2];
        client[15] = o[3];
        Self { client, service }
    }

    /// The key for an IPv6 client.
    #[inline]
    pub fn from_v6(a: &Ipv6Addr, service: u16) -> Self {
        Self {
            client: a.octets(),
            service,
        }
    }

    /// The key of the same client's redirected (direct) entry.
    #[inline]
    pub fn direct(self) -> Self {
        Self {
            service: self.service | DIRECT,
            ..self
        }
    }

    /// The key of the same client's NAT-mode entry.
    #[inline]
    pub fn nat(self) -> Self {
        Self {
            service: self.service & !DIRECT,
            ..self
        }
    }

    /// Whether this is a redirected client's entry.
    #[inline]
    pub fn is_direct(&self) -> bool {
        self.service & DIRECT != 0
    }

    /// The service id, without the [`DIRECT`] bit.
    #[inline]
    pub fn service_index(&self) -> u16 {
        self.service & !DIRECT
    }

    /// The client address; IPv4-mapped addresses come back as IPv4.
    #[inline]
    pub fn client_ip(&self) -> IpAddr {
        match self.client {
            [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, a, b, c, d] => {
                IpAddr::V4(Ipv4Addr::new(a, b, c, d))
            }
            octets => IpAddr::V6(Ipv6Addr::from(octets)),
        }
    }

    /// The key's hash under [`HashKey::FIXED`]: for replay, tests and tools. The pipeline uses
    /// its shard's key ([`AffinityShard::hash`]).
    #[inline]
    pub fn hash(&self) -> u64 {
        self.hash_with(&HashKey::FIXED)
    }

    /// A fast, well-mixed 64-bit hash of the key under `k`, used to index the table. Pass it
    /// to [`AffinityShard::prefetch`], `lookup`, `insert` and `remove`.
    ///
    /// The three words are multiplied independently (they pipeline) by the key's odd
    /// multipliers and combined with its seed, then the murmur3 finaliser avalanches every
    /// input bit into every output bit. For fixed other fields, each field maps bijectively
    /// onto the result, so e.g. no two IPv4 clients of one service ever share a hash.
    #[inline]
    pub fn hash_with(&self, k: &HashKey) -> u64 {
        let mut lo = [0u8; 8];
        let mut hi = [0u8; 8];
        lo.copy_from_slice(&self.client[..8]);
        hi.copy_from_slice(&self.client[8..]);
        let a = u64::from_le_bytes(lo);
        let b = u64::from_le_bytes(hi);
        let x = k.seed
            ^ a.wrapping_mul(k.k1)
            ^ b.wrapping_mul(k.k2).rotate_left(32)
            ^ u64::from(self.service).wrapping_mul(k.k3);
        fmix64(x)
    }
}

/// The murmur3 64-bit finaliser: a bijection with full avalanche.
#[inline]
fn fmix64(mut x: u64) -> u64 {
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    x ^ (x >> 33)
}

/// What the table stores for a key.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct AffinityValue {
    /// The gateway chosen for this client (the scheduler's backend index).
    pub gateway: u16,
    /// When a packet of this client was last seen (caller's clock, seconds).
    pub last_seen: u32,
    /// The entry is expired once `now >= expires_at`.
    pub expires_at: u32,
    /// Return traffic from the gateway has been seen; unconfirmed entries may be evicted.
    pub confirmed: bool,
}

/// Why an entry left the table.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum RemoveReason {
    /// It was idle past its `expires_at` (found by a lookup, a sweep or an insert needing room).
    Expired,
    /// It was the oldest unconfirmed entry and an insert needed its room.
    EvictedUnconfirmed,
    /// The caller removed it ([`AffinityShard::remove`], [`AffinityShard::retain`]).
    Removed,
    /// A remap found its service or gateway gone (see [`AffinityShard::begin_remap`]). It left
    /// the caller's per-gateway counts when the remap began; its ids are the old ones.
    Remapped,
    /// A flush ([`Remap::flush`]) removed it. Like `Remapped`, already out of the counts.
    Flushed,
}

/// An entry that left the table, reported so the caller can update per-gateway state.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Removed {
    /// Its key.
    pub key: AffinityKey,
    /// Its value when it left.
    pub value: AffinityValue,
    /// Why it left.
    pub reason: RemoveReason,
}

/// The result of [`AffinityShard::insert`].
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum InsertOutcome {
    /// Stored without removing anything (or, if the key was present after all, updated).
    Inserted,
    /// Stored after removing one entry to make room.
    InsertedEvicting(Removed),
    /// Not stored: no free slot and nothing evictable, i.e. every entry is confirmed and live
    /// (or an unconfirmed insert with `max_unconfirmed == 0`).
    Full,
    /// Not stored (or, for a key present after all, updated but left unconfirmed): a confirmed
    /// value whose client prefix already holds its quota of established entries (see
    /// [`PrefixQuota`]).
    PrefixQuota,
}

/// The result of [`EntryMut::confirm`].
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Confirm {
    /// The entry was unconfirmed and is now established.
    Confirmed,
    /// It was established already.
    Already,
    /// Refused: the client's prefix holds its quota of established entries; the entry stays
    /// unconfirmed (evictable).
    PrefixQuota,
}

/// Per-prefix admission quotas: at most `quota_v4` established (confirmed) entries per IPv4
/// /`len_v4` and `quota_v6` per IPv6 /`len_v6` in one shard.
///
/// The counts are kept in a small array of 16-bit counters (one per four units of capacity)
/// indexed by a keyed hash of the prefix, so nobody outside can aim a victim's counter with a
/// prefix of their own; two prefixes that share a counter share its quota (both are only
/// stricter, by chance, and rarely: the array has a quarter as many counters as the shard has
/// entries). Only established entries count: unconfirmed ones are capped and evictable
/// already, and a spoofer, who can send from any address of a victim's prefix but never
/// establishes, cannot use up that prefix's quota.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct PrefixQuota {
    /// IPv4 prefix length (0-32).
    pub len_v4: u8,
    /// IPv6 prefix length (0-128).
    pub len_v6: u8,
    /// Established entries per IPv4 prefix (the key's service and DIRECT bit included: one
    /// client of two services holds two).
    pub quota_v4: u16,
    /// Established entries per IPv6 prefix.
    pub quota_v6: u16,
}

impl PrefixQuota {
    /// No quota in effect (a counter holds at most `u16::MAX`, which no prefix reaches unless
    /// the hash key is known).
    pub const NONE: PrefixQuota = PrefixQuota {
        len_v4: 32,
        len_v6: 128,
        quota_v4: u16::MAX,
        quota_v6: u16::MAX,
    };
}

impl Default for PrefixQuota {
    fn default() -> Self {
        Self::NONE
    }
}

/// The result of [`AffinityShard::lookup`].
#[derive(Debug)]
pub enum Lookup<'a> {
    /// A live entry, to read and update in place.
    Hit(EntryMut<'a>),
    /// The entry had expired; it has been removed (and counted) and is reported here.
    Expired(Removed),
    /// No entry.
    Miss,
}

/// Counters of one shard, exported by the control plane.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default, serde::Serialize)]
pub struct AffinityCounters {
    /// Entries created by `insert` (an insert that finds its key present is not counted).
    pub inserts: u64,
    /// Unconfirmed → confirmed transitions (inserting an already confirmed value is not one).
    pub confirmed: u64,
    /// Entries removed because they had expired (lookup, sweep, or reclaimed by an insert).
    pub expired: u64,
    /// Live unconfirmed entries evicted to make room or to respect `max_unconfirmed`.
    pub evicted_unconfirmed: u64,
    /// Inserts refused with [`InsertOutcome::Full`] (no room, or no free lane within
    /// [`MAX_PROBE_BUCKETS`] of the key's home bucket; the latter also in `probe_limit`).
    pub insert_full: u64,
    /// Inserts refused because the key's probe chain would exceed [`MAX_PROBE_BUCKETS`]: only
    /// keys chosen to collide get there, and refusing them keeps every lookup short.
    pub probe_limit: u64,
    /// Entries removed by `remove` or `retain`.
    pub removed: u64,
    /// Establishments (a confirm, or a confirmed insert) refused because the client's prefix
    /// held its quota of established entries ([`PrefixQuota`]).
    pub prefix_quota: u64,
}

/// A change of every entry's service and gateway ids, applied by
/// [`AffinityShard::begin_remap`]: a reload's new layout, or a flush (every entry gone).
#[derive(Clone, Debug, Default)]
pub struct Remap {
    /// `[old service][old gateway]` → new (service, gateway); `None` or out of range: gone.
    map: Vec<Vec<Option<(u16, u16)>>>,
    /// New service → the old services some of whose entries become its (a lookup of a new
    /// key reads these old keys while the remap runs).
    sources: Vec<Vec<u16>>,
    flush: bool,
}

impl Remap {
    /// The remap `map[old service][old gateway]` → new (service, gateway), `None` for gone.
    /// Builds the reverse service map; allocates, so build it off the packet path.
    pub fn new(map: &[Vec<Option<(u16, u16)>>]) -> Remap {
        let mut sources: Vec<Vec<u16>> = Vec::new();
        for (old, gateways) in (0..=u16::MAX).zip(map) {
            for &(s, _) in gateways.iter().flatten() {
                let s = usize::from(s & !DIRECT);
                if sources.len() <= s {
                    sources.resize_with(s + 1, Vec::new);
                }
                if !sources[s].contains(&old) {
                    sources[s].push(old);
                }
            }
        }
        Remap {
            map: map.to_vec(),
            sources,
            flush: false,
        }
    }

    /// Every entry gone: `affinity flush` of a whole shard.
    pub fn flush() -> Remap {
        Remap {
            flush: true,
            ..Remap::default()
        }
    }

    /// Whether this is a flush.
    pub fn is_flush(&self) -> bool {
        self.flush
    }

    /// The new (service, gateway) of an entry of old `service` (without [`DIRECT`]) on
    /// `gateway`; `None`: gone.
    #[inline]
    pub fn to(&self, service: u16, gateway: u16) -> Option<(u16, u16)> {
        *self
            .map
            .get(usize::from(service))?
            .get(usize::from(gateway))?
    }

    /// `key`'s translation (the [`DIRECT`] bit kept) and its gateway's.
    #[inline]
    fn apply(&self, key: AffinityKey, gateway: u16) -> Option<(AffinityKey, u16)> {
        let (s, g) = self.to(key.service_index(), gateway)?;
        let service = (s & !DIRECT) | (key.service & DIRECT);
        Some((AffinityKey { service, ..key }, g))
    }

    #[inline]
    fn sources(&self, service: u16) -> &[u16] {
        self.sources
            .get(usize::from(service))
            .map_or(&[], Vec::as_slice)
    }
}

/// How far a remap has come ([`AffinityShard::remap_progress`]), or what it did once done
/// ([`AffinityShard::remap_step`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct RemapProgress {
    /// Slab slots the remap's cursor has visited, of `slots`.
    pub visited: usize,
    pub slots: usize,
    /// Entries of the old epoch not translated or removed yet (the remap is done at 0).
    pub left: usize,
    /// Entries whose ids changed.
    pub moved: usize,
    /// Entries removed because their service or gateway is gone (a flush: all of them).
    pub removed: usize,
    /// A flush.
    pub flush: bool,
    /// Completed at once, walking what it had left of the table, because another remap began
    /// before it was done.
    pub forced: bool,
}

/// What [`AffinityShard::remap_step`] charges its budget for re-indexing or removing an
/// entry (a few random cache lines: index buckets, FIFO links), in slot visits (one sequential
/// 32-byte read each).
pub const REMAP_MOVE_COST: usize = 16;

/// A running remap.
#[derive(Debug)]
struct Remapping {
    remap: Remap,
    progress: RemapProgress,
}

/// "No slot": empty index lane, end of a list.
const NIL: u32 = u32::MAX;
/// No slot to try first (see [`AffinityShard::live_hinted`]).
pub const NO_HINT: u32 = NIL;
/// A hint that the key was absent when [`AffinityShard::prefetch_entry`] looked (no tag in its
/// home bucket, and nothing overflowed past it).
pub const ABSENT_HINT: u32 = NIL - 1;
/// Lanes per index bucket: 10 × (2 + 4) bytes + 4-byte overflow count = one cache line.
const LANES: usize = 10;
/// Buckets are sized for this many entries each at full capacity (load factor 0.5).
const ENTRIES_PER_BUCKET: usize = 5;
/// The longest probe chain, in index buckets (80 lanes): an insert that finds no free lane
/// this close to its key's home is refused, so no lookup ever reads more than this many
/// bucket lines. With a keyed hash and the index at most half full, a legitimate key needs
/// more than two buckets about once in a million inserts.
pub const MAX_PROBE_BUCKETS: usize = 8;
/// Slab slots per prefix counter (16 bits each: half a byte per entry).
const ENTRIES_PER_PREFIX_COUNTER: usize = 4;
/// Slots an insert scans from the sweep cursor for an expired entry when the table is full.
const RECLAIM_SCAN: usize = 16;
/// `meta` flag: the slot holds an entry.
const OCCUPIED: u32 = 1 << 1;
/// `meta` flag: the entry is confirmed.
const CONFIRMED: u32 = 1 << 0;
/// How many hash bits `meta` keeps (the bits above the two flags).
const HASH_BITS: u32 = 30;

/// One slab slot (32 bytes, never straddles a cache line).
#[derive(Clone, Copy)]
#[repr(C, align(32))]
struct Entry {
    client: [u8; 16],
    service: u16,
    gateway: u16,
    last_seen: u32,
    expires_at: u32,
    /// Top 30 bits of the hash << 2 | OCCUPIED | CONFIRMED.
    meta: u32,
}

const EMPTY_ENTRY: Entry = Entry {
    client: [0; 16],
    service: 0,
    gateway: 0,
    last_seen: 0,
    expires_at: 0,
    meta: 0,
};

impl Entry {
    #[inline]
    fn occupied(&self) -> bool {
        self.meta & OCCUPIED != 0
    }

    #[inline]
    fn confirmed(&self) -> bool {
        self.meta & CONFIRMED != 0
    }

    /// Whether this is `key`'s entry in remap epoch `epoch` ([`EPOCH`] or 0).
    #[inline]
    fn matches(&self, key: &AffinityKey, epoch: u16) -> bool {
        self.client == key.client && self.service == (key.service & !EPOCH) | epoch
    }

    /// Whether the entry is of the epoch before `epoch` (a running remap has yet to translate
    /// it).
    #[inline]
    fn stale(&self, epoch: u16) -> bool {
        self.service & EPOCH != epoch
    }

    /// The key, in the ids of the entry's own epoch.
    #[inline]
    fn key(&self) -> AffinityKey {
        AffinityKey {
            client: self.client,
            service: self.service & !EPOCH,
        }
    }

    #[inline]
    fn value(&self) -> AffinityValue {
        AffinityValue {
            gateway: self.gateway,
            last_seen: self.last_seen,
            expires_at: self.expires_at,
            confirmed: self.confirmed(),
        }
    }
}

/// FIFO links of an unconfirmed entry, or the free-list link (`next`) of a free slot.
#[derive(Clone, Copy)]
struct Link {
    prev: u32,
    next: u32,
}

const NO_LINK: Link = Link {
    prev: NIL,
    next: NIL,
};

/// One index bucket: exactly one cache line.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Bucket {
    tags: [u16; LANES],
    slots: [u32; LANES],
    /// Entries indexed after this bucket whose probe started at or before it.
    overflow: u32,
}

impl Bucket {
    /// The lanes whose tag is `tag`, as a bit mask (bit i: lane i), in lane order from the
    /// lowest bit. Branch-free: which lane holds a key is random, so a compare-and-branch per
    /// lane mispredicts about once per lookup.
    #[inline]
    fn lanes_tagged(&self, tag: u16) -> u32 {
        // Four lanes per 64-bit word (SWAR), without branches or SIMD intrinsics: a lane's
        // high bit ends up set exactly where the lane equals `tag` (no false positives, unlike
        // the borrow-based zero test), and a multiply gathers those four bits.
        const LOW15: u64 = 0x7fff_7fff_7fff_7fff;
        const GATHER: u64 = 1 << 48 | 1 << 33 | 1 << 18 | 1 << 3;
        let t = &self.tags;
        let pattern = u64::from(tag) * 0x0001_0001_0001_0001;
        let four = |i: usize| {
            let word = u64::from(t[i])
                | u64::from(t[i + 1]) << 16
                | u64::from(t[i + 2]) << 32
                | u64::from(t[i + 3]) << 48;
            let x = word ^ pattern;
            let zero_lanes = !(((x & LOW15) + LOW15) | x | LOW15);
            (((zero_lanes >> 15).wrapping_mul(GATHER)) >> 48) as u32 & 0xf
        };
        four(0) | four(4) << 4 | u32::from(t[8] == tag) << 8 | u32::from(t[9] == tag) << 9
    }
}

const _: () = assert!(
    LANES == 10,
    "lanes_tagged reads eight tags in two words and two by hand"
);

const EMPTY_BUCKET: Bucket = Bucket {
    tags: [0; LANES],
    slots: [NIL; LANES],
    overflow: 0,
};

const _: () = assert!(core::mem::size_of::<Entry>() == 32);
const _: () = assert!(core::mem::size_of::<Link>() == 8);
const _: () = assert!(core::mem::size_of::<Bucket>() == 64);

/// The index tag: low 16 bits of the hash (the home bucket uses the top bits).
#[inline]
#[allow(clippy::cast_possible_truncation)] // the low 16 bits, on purpose
fn tag_of(hash: u64) -> u16 {
    hash as u16
}

/// A slab slot as stored in links and buckets: below the capacity, which is at most
/// [`AffinityShard::MAX_CAPACITY`] (2^31), so it fits.
#[inline]
#[allow(clippy::cast_possible_truncation)]
fn slot_u32(i: usize) -> u32 {
    debug_assert!(i <= AffinityShard::MAX_CAPACITY);
    i as u32
}

/// The hash bits kept in `meta`, from which the home bucket is derived.
#[inline]
fn hash_bits(hash: u64) -> u32 {
    (hash >> (64 - HASH_BITS)) as u32
}

/// A live entry found by [`AffinityShard::lookup`], borrowed for in-place updates.
pub struct EntryMut<'a> {
    shard: &'a mut AffinityShard,
    idx: u32,
}

impl EntryMut<'_> {
    #[inline]
    fn entry(&self) -> &Entry {
        &self.shard.entries[self.idx as usize]
    }

    #[inline]
    fn entry_mut(&mut self) -> &mut Entry {
        &mut self.shard.entries[self.idx as usize]
    }

    /// The entry's key.
    #[inline]
    pub fn key(&self) -> AffinityKey {
        self.entry().key()
    }

    /// The entry's current value.
    #[inline]
    pub fn value(&self) -> AffinityValue {
        self.entry().value()
    }

    /// Records a packet at `now` and moves the expiry to `expires_at` (call on each packet).
    /// It does not change the entry's place in the unconfirmed FIFO, which is creation order.
    #[inline]
    pub fn refresh(&mut self, now: u32, expires_at: u32) {
        let e = self.entry_mut();
        e.last_seen = now;
        e.expires_at = expires_at;
    }

    /// Marks the entry confirmed (established), which makes it unevictable while live, unless
    /// its client's prefix holds its quota of established entries (see [`PrefixQuota`]; the
    /// refusal is counted and the entry stays unconfirmed). Counts the transition.
    #[inline]
    pub fn confirm(&mut self) -> Confirm {
        self.shard.confirm_slot(self.idx)
    }

    /// Records what the client must echo to prove it saw its gateway's answer (the low 32 bits
    /// of an IKE responder SPI, a TCP sequence number the client must acknowledge); 0 clears
    /// it. Only meaningful while the entry is unconfirmed.
    #[inline]
    pub fn set_proof(&mut self, proof: u32) {
        self.shard.proofs[self.idx as usize] = proof;
    }

    /// The pending proof (0: none).
    #[inline]
    pub fn proof(&self) -> u32 {
        self.shard.proofs[self.idx as usize]
    }

    /// Re-points the client at another gateway (e.g. after its gateway was drained).
    #[inline]
    pub fn set_gateway(&mut self, gateway: u16) {
        self.entry_mut().gateway = gateway;
    }
}

impl core::fmt::Debug for EntryMut<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("EntryMut")
            .field("key", &self.key())
            .field("value", &self.value())
            .finish()
    }
}

/// One worker's affinity table: fixed capacity, no allocation after construction, O(1)
/// lookup, insert and removal. See the module docs for the layout and eviction rules.
pub struct AffinityShard {
    entries: Box<[Entry]>,
    links: Box<[Link]>,
    buckets: Box<[Bucket]>,
    /// The hash key every caller hashes keys with ([`Self::hash`]).
    hash_key: HashKey,
    /// By slab slot: what the client must echo to prove it saw its gateway's answer (see
    /// [`EntryMut::set_proof`]); 0 when none is pending. Beside the entries, not in them, so
    /// an established client's packet never touches this line.
    proofs: Box<[u32]>,
    /// Established entries per client prefix, by [`Self::prefix_slot`]: a quarter as many
    /// counters as slots. Touched only when an entry is established or an established one
    /// leaves, never by an established client's packet.
    prefix_counts: Box<[u16]>,
    prefix_quota: PrefixQuota,
    /// Head of the free-slot list (chained through `links[i].next`).
    free_head: u32,
    /// Oldest unconfirmed entry.
    fifo_head: u32,
    /// Newest unconfirmed entry.
    fifo_tail: u32,
    confirmed_len: usize,
    unconfirmed_len: usize,
    max_unconfirmed: usize,
    /// Next slab slot `sweep` (and an insert's reclaim scan) examines.
    cursor: u32,
    counters: AffinityCounters,
    /// The current remap epoch ([`EPOCH`] or 0): every entry written since the latest remap
    /// began carries it.
    epoch: u16,
    /// The remap in progress, if any.
    remap: Option<Box<Remapping>>,
}

impl core::fmt::Debug for AffinityShard {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("AffinityShard")
            .field("capacity", &self.capacity())
            .field("confirmed_len", &self.confirmed_len)
            .field("unconfirmed_len", &self.unconfirmed_len)
            .field("max_unconfirmed", &self.max_unconfirmed)
            .field("counters", &self.counters)
            .finish()
    }
}

impl AffinityShard {
    /// The largest capacity a shard accepts; larger requests are clamped to it (slab indices
    /// are `u32`, and at ~57 B/entry this is already over 100 GiB).
    pub const MAX_CAPACITY: usize = 1 << 31;

    /// A shard for `capacity` entries of which at most `max_unconfirmed` unconfirmed (clamped
    /// to `capacity`; 0 refuses every unconfirmed insert). Allocates and touches all memory now.
    ///
    /// Aborts like any allocation if memory is short; use [`Self::try_new`] to get an error.
    pub fn new(capacity: usize, max_unconfirmed: usize) -> Self {
        match Self::try_new(capacity, max_unconfirmed) {
            Ok(s) => s,
            Err(_) => std::alloc::handle_alloc_error(std::alloc::Layout::new::<Bucket>()),
        }
    }

    /// Like [`Self::new`], but reports an allocation failure instead of aborting, so a bad
    /// configuration can be refused cleanly.
    pub fn try_new(capacity: usize, max_unconfirmed: usize) -> Result<Self, TryReserveError> {
        Self::try_new_advised(capacity, max_unconfirmed, &mut |_, _| {})
    }

    /// [`try_new`](Self::try_new), handing each array's memory to `advise(address, bytes)`
    /// after it is reserved and before it is first written, so the caller can ask the kernel
    /// for huge pages (a table of millions of entries is looked up at random: with 4 KB pages
    /// nearly every lookup also misses the TLB).
    pub fn try_new_advised(
        capacity: usize,
        max_unconfirmed: usize,
        advise: &mut dyn FnMut(usize, usize),
    ) -> Result<Self, TryReserveError> {
        let capacity = capacity.min(Self::MAX_CAPACITY);
        let nbuckets = Self::buckets_for(capacity);
        let mut advise_spare = |addr: usize, bytes: usize| {
            if bytes > 0 {
                advise(addr, bytes);
            }
        };

        let mut entries = Vec::new();
        entries.try_reserve_exact(capacity)?;
        advise_spare(
            entries.spare_capacity_mut().as_ptr() as usize,
            capacity * core::mem::size_of::<Entry>(),
        );
        entries.resize(capacity, EMPTY_ENTRY);

        let mut links = Vec::new();
        links.try_reserve_exact(capacity)?;
        advise_spare(
            links.spare_capacity_mut().as_ptr() as usize,
            capacity * core::mem::size_of::<Link>(),
        );
        // Every slot starts on the free list, in slot order; `capacity <= 2^31` fits `u32`.
        links.extend((1..=capacity).map(|next| Link {
            prev: NIL,
            next: if next == capacity {
                NIL
            } else {
                slot_u32(next)
            },
        }));

        let mut buckets = Vec::new();
        buckets.try_reserve_exact(nbuckets)?;
        advise_spare(
            buckets.spare_capacity_mut().as_ptr() as usize,
            nbuckets * core::mem::size_of::<Bucket>(),
        );
        buckets.resize(nbuckets, EMPTY_BUCKET);

        let mut proofs = Vec::new();
        proofs.try_reserve_exact(capacity)?;
        advise_spare(
            proofs.spare_capacity_mut().as_ptr() as usize,
            capacity * core::mem::size_of::<u32>(),
        );
        proofs.resize(capacity, 0);

        let ncounts = Self::prefix_counters_for(capacity);
        let mut prefix_counts = Vec::new();
        prefix_counts.try_reserve_exact(ncounts)?;
        advise_spare(
            prefix_counts.spare_capacity_mut().as_ptr() as usize,
            ncounts * core::mem::size_of::<u16>(),
        );
        prefix_counts.resize(ncounts, 0);

        Ok(Self {
            entries: entries.into_boxed_slice(),
            links: links.into_boxed_slice(),
            buckets: buckets.into_boxed_slice(),
            proofs: proofs.into_boxed_slice(),
            prefix_counts: prefix_counts.into_boxed_slice(),
            prefix_quota: PrefixQuota::NONE,
            free_head: if capacity == 0 { NIL } else { 0 },
            fifo_head: NIL,
            fifo_tail: NIL,
            confirmed_len: 0,
            unconfirmed_len: 0,
            max_unconfirmed: max_unconfirmed.min(capacity),
            cursor: 0,
            counters: AffinityCounters::default(),
            hash_key: HashKey::FIXED,
            epoch: 0,
            remap: None,
        })
    }

    /// This shard, hashing with `key` (a new, empty shard: the hashes of entries already in
    /// it would no longer find them).
    pub fn with_hash_key(mut self, key: HashKey) -> Self {
        debug_assert!(self.is_empty(), "re-keying a shard that holds entries");
        self.hash_key = key;
        self
    }

    /// This shard, with per-prefix quotas `q` (a new, empty shard: its counts start at zero).
    /// Without this call a shard has [`PrefixQuota::NONE`].
    pub fn with_prefix_quota(mut self, q: PrefixQuota) -> Self {
        debug_assert!(
            self.is_empty(),
            "setting quotas on a shard that holds entries"
        );
        self.prefix_quota = PrefixQuota {
            len_v4: q.len_v4.min(32),
            len_v6: q.len_v6.min(128),
            ..q
        };
        self
    }

    /// The per-prefix quotas in effect.
    #[inline]
    pub fn prefix_quota(&self) -> PrefixQuota {
        self.prefix_quota
    }

    /// The key this shard hashes with.
    #[inline]
    pub fn hash_key(&self) -> &HashKey {
        &self.hash_key
    }

    /// `key`'s hash under this shard's key: what `prefetch`, `lookup`, `insert` and `remove`
    /// take.
    #[inline(always)]
    pub fn hash(&self, key: &AffinityKey) -> u64 {
        key.hash_with(&self.hash_key)
    }

    fn buckets_for(capacity: usize) -> usize {
        capacity.div_ceil(ENTRIES_PER_BUCKET).max(1)
    }

    /// Prefix counters for `capacity`: one per [`ENTRIES_PER_PREFIX_COUNTER`] slots.
    fn prefix_counters_for(capacity: usize) -> usize {
        capacity.div_ceil(ENTRIES_PER_PREFIX_COUNTER).max(1)
    }

    /// The memory [`Self::new`]`(capacity, _)` would use, in bytes, without allocating it (for
    /// sizing checks in the control plane).
    pub fn memory_bytes_for(capacity: usize) -> usize {
        let capacity = capacity.min(Self::MAX_CAPACITY);
        core::mem::size_of::<Self>()
            + capacity
                * (core::mem::size_of::<Entry>()
                    + core::mem::size_of::<Link>()
                    + core::mem::size_of::<u32>())
            + Self::buckets_for(capacity) * core::mem::size_of::<Bucket>()
            + Self::prefix_counters_for(capacity) * core::mem::size_of::<u16>()
    }

    /// Maximum number of entries.
    #[inline]
    pub fn capacity(&self) -> usize {
        self.entries.len()
    }

    /// Number of entries (including expired ones not reclaimed yet).
    #[inline]
    pub fn len(&self) -> usize {
        self.confirmed_len + self.unconfirmed_len
    }

    /// True if there are no entries.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Number of confirmed entries.
    #[inline]
    pub fn confirmed_len(&self) -> usize {
        self.confirmed_len
    }

    /// Number of unconfirmed entries.
    #[inline]
    pub fn unconfirmed_len(&self) -> usize {
        self.unconfirmed_len
    }

    /// The cap on unconfirmed entries (after clamping to the capacity).
    #[inline]
    pub fn max_unconfirmed(&self) -> usize {
        self.max_unconfirmed
    }

    /// Bytes used by the shard: the struct and its arrays.
    pub fn memory_bytes(&self) -> usize {
        core::mem::size_of::<Self>()
            + core::mem::size_of_val::<[Entry]>(&self.entries)
            + core::mem::size_of_val::<[Link]>(&self.links)
            + core::mem::size_of_val::<[Bucket]>(&self.buckets)
            + core::mem::size_of_val::<[u32]>(&self.proofs)
            + core::mem::size_of_val::<[u16]>(&self.prefix_counts)
    }

    /// A snapshot of the counters.
    #[inline]
    pub fn counters(&self) -> AffinityCounters {
        self.counters
    }

    /// Prefetches the home index bucket of `hash`, so that a burst can issue all its misses
    /// before the first lookup. A hint only: no effect on results.
    #[inline]
    #[allow(unsafe_code)] // `_mm_prefetch`, a hint that cannot fault
    pub fn prefetch(&self, hash: u64) {
        #[cfg(target_arch = "x86_64")]
        if let Some(bucket) = self.buckets.get(self.home(hash_bits(hash))) {
            // SAFETY: prefetch is a hint that never faults; the pointer is to a live bucket.
            unsafe {
                core::arch::x86_64::_mm_prefetch::<{ core::arch::x86_64::_MM_HINT_T0 }>(
                    (bucket as *const Bucket).cast::<i8>(),
                )
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = hash;
    }

    /// Second prefetch stage: reads the home bucket of `hash` (prefetched by [`Self::prefetch`]
    /// earlier in the burst) and prefetches the entries whose tag matches, so the lookup that
    /// follows finds both of its cache lines present. Returns the slot of the first of them,
    /// [`ABSENT_HINT`] when the key cannot be in the table, else [`NO_HINT`]: a hint for
    /// [`Self::live_hinted`].
    #[inline]
    #[allow(unsafe_code)] // `_mm_prefetch`, a hint that cannot fault
    pub fn prefetch_entry(&self, hash: u64) -> u32 {
        let mut hint = NO_HINT;
        if let Some(bucket) = self.buckets.get(self.home(hash_bits(hash))) {
            if bucket.overflow == 0 {
                hint = ABSENT_HINT;
            }
            let mut lanes = bucket.lanes_tagged(tag_of(hash));
            while lanes != 0 {
                let lane = lanes.trailing_zeros() as usize;
                lanes &= lanes - 1;
                let Some(&slot) = bucket.slots.get(lane) else {
                    continue;
                };
                if hint >= ABSENT_HINT {
                    hint = slot;
                }
                #[cfg(target_arch = "x86_64")]
                if let Some(e) = self.entries.get(slot as usize) {
                    // SAFETY: prefetch is a hint that never faults; the pointer is to a live
                    // entry.
                    unsafe {
                        core::arch::x86_64::_mm_prefetch::<{ core::arch::x86_64::_MM_HINT_T0 }>(
                            (e as *const Entry).cast::<i8>(),
                        )
                    }
                }
            }
        }
        hint
    }

    /// Finds `key`. An entry with `expires_at <= now` is removed and reported as
    /// [`Lookup::Expired`]; a live one is returned for reading and updating.
    /// `hash` must be `key.hash()` (the value it was inserted with).
    #[inline]
    pub fn lookup(&mut self, key: &AffinityKey, hash: u64, now: u32) -> Lookup<'_> {
        match self.find(key, hash) {
            None => Lookup::Miss,
            Some((bucket, lane, idx)) => {
                let e = &self.entries[idx as usize];
                if e.expires_at <= now {
                    // The home the entry was indexed from, whatever hash the caller passed.
                    let home = self.home(e.meta >> 2);
                    let at = Some((home, bucket, lane));
                    Lookup::Expired(self.remove_slot(idx, at, RemoveReason::Expired))
                } else {
                    Lookup::Hit(EntryMut { shard: self, idx })
                }
            }
        }
    }

    /// `key`'s live entry, for reading and updating; `None` when it is missing or expired,
    /// which (unlike [`Self::lookup`]) leaves an expired entry in place, so a caller that only
    /// handles the common case can hand everything else to one that calls `lookup`.
    #[inline]
    pub fn live(&mut self, key: &AffinityKey, hash: u64, now: u32) -> Option<EntryMut<'_>> {
        let (_, _, idx) = self.find(key, hash)?;
        if self.entries[idx as usize].expires_at <= now {
            return None;
        }
        Some(EntryMut { shard: self, idx })
    }

    /// [`Self::live`], trying slab slot `hint` first (from [`Self::prefetch_entry`]): where it
    /// holds `key`, that is the key's entry (keys are unique), and the index is not searched
    /// again. Any slot hint, stale or wrong, gives the same result as `live`. [`ABSENT_HINT`]
    /// gives `None` without a search: after an insert since the hint was taken that is a
    /// miss `live` would not report, so `None` here means "not found this way", and a caller
    /// must then look the key up for real (as the fast path leaves it to the general one).
    #[inline(always)]
    pub fn live_hinted(
        &mut self,
        key: &AffinityKey,
        hash: u64,
        now: u32,
        hint: u32,
    ) -> Option<EntryMut<'_>> {
        if hint == ABSENT_HINT {
            return None;
        }
        match self.entries.get(hint as usize) {
            Some(e) if e.occupied() && e.matches(key, self.epoch) => (e.expires_at > now)
                .then_some(EntryMut {
                    shard: self,
                    idx: hint,
                }),
            _ => self.live(key, hash, now),
        }
    }

    /// The stored value of `key` (expired or not), without any side effect.
    pub fn peek(&self, key: &AffinityKey, hash: u64) -> Option<AffinityValue> {
        self.find(key, hash)
            .map(|(_, _, idx)| self.entries[idx as usize].value())
    }

    /// Stores `key → value`; `key` should be absent (after a lookup `Miss` or `Expired`).
    ///
    /// Without a free slot it reclaims an expired entry or evicts the oldest unconfirmed one
    /// (reported in [`InsertOutcome::InsertedEvicting`]); an unconfirmed `value` at the
    /// `max_unconfirmed` cap evicts the oldest unconfirmed entry. Confirmed live entries are
    /// never evicted: with nothing else to take, the insert returns [`InsertOutcome::Full`].
    ///
    /// If `key` is present after all, its value is updated in place (never demoting a
    /// confirmed entry) and the result is `Inserted`. O(1); allocates nothing.
    pub fn insert(
        &mut self,
        key: AffinityKey,
        hash: u64,
        value: AffinityValue,
        now: u32,
    ) -> InsertOutcome {
        let tag = tag_of(hash);
        let home = self.home(hash_bits(hash));
        let nb = self.buckets.len();
        let epoch = self.epoch;

        // One probe: look for the key along its chain and for the first free lane, never
        // farther than MAX_PROBE_BUCKETS from home.
        let mut free_lane = None;
        let mut in_chain = true;
        let mut b = home;
        for _ in 0..nb.min(MAX_PROBE_BUCKETS) {
            let bucket = &self.buckets[b];
            for (lane, (&slot, &t)) in bucket.slots.iter().zip(&bucket.tags).enumerate() {
                if slot == NIL {
                    if free_lane.is_none() {
                        free_lane = Some((b, lane));
                    }
                } else if in_chain && t == tag && self.entries[slot as usize].matches(&key, epoch) {
                    return self.update_in_place(slot, value);
                }
            }
            in_chain &= bucket.overflow != 0;
            if !in_chain && free_lane.is_some() {
                break;
            }
            b = self.next_bucket(b);
        }
        // The index has twice as many lanes as the slab has slots: only a chain of keys that
        // collide (chosen to) gets here.
        let Some((free_bucket, free_lane)) = free_lane else {
            self.counters.insert_full += 1;
            self.counters.probe_limit += 1;
            return InsertOutcome::Full;
        };
        // An established entry needs room in its prefix's quota (checked before anything is
        // evicted for it). Unconfirmed inserts never touch the counters.
        let prefix = if value.confirmed {
            match self.prefix_room(&key.client) {
                Some(p) => Some(p),
                None => {
                    self.counters.prefix_quota += 1;
                    return InsertOutcome::PrefixQuota;
                }
            }
        } else {
            None
        };

        // Make room. Removals only empty lanes, so the free lane found above stays free.
        let mut evicted = None;
        if !value.confirmed && self.unconfirmed_len >= self.max_unconfirmed {
            evicted = self.evict_oldest_unconfirmed(now);
            if evicted.is_none() {
                self.counters.insert_full += 1;
                return InsertOutcome::Full;
            }
        }
        if self.free_head == NIL {
            evicted = self
                .reclaim_expired(now)
                .or_else(|| self.evict_oldest_unconfirmed(now));
            if evicted.is_none() {
                self.counters.insert_full += 1;
                return InsertOutcome::Full;
            }
        }

        let idx = self.free_head;
        self.free_head = self.links[idx as usize].next;
        self.links[idx as usize] = NO_LINK;
        let confirmed = if value.confirmed { CONFIRMED } else { 0 };
        self.entries[idx as usize] = Entry {
            client: key.client,
            service: (key.service & !EPOCH) | epoch,
            gateway: value.gateway,
            last_seen: value.last_seen,
            expires_at: value.expires_at,
            meta: (hash_bits(hash) << 2) | OCCUPIED | confirmed,
        };
        self.proofs[idx as usize] = 0;
        if let Some(p) = prefix {
            // The removals above never touch an unconfirmed insert's counter, and a confirmed
            // insert's removals (expired or unconfirmed entries) only decrement counters.
            self.prefix_counts[p] += 1;
            self.confirmed_len += 1;
        } else {
            self.fifo_push_back(idx);
            self.unconfirmed_len += 1;
        }

        self.index_lane(home, (free_bucket, free_lane), tag, idx);

        self.counters.inserts += 1;
        match evicted {
            Some(r) => InsertOutcome::InsertedEvicting(r),
            None => InsertOutcome::Inserted,
        }
    }

    /// Removes `key` (expired or not) and returns it with reason [`RemoveReason::Removed`].
    pub fn remove(&mut self, key: &AffinityKey, hash: u64) -> Option<Removed> {
        let (bucket, lane, idx) = self.find(key, hash)?;
        let home = self.home(self.entries[idx as usize].meta >> 2);
        Some(self.remove_slot(idx, Some((home, bucket, lane)), RemoveReason::Removed))
    }

    /// Examines up to `max_slots` slab slots (at most one full cycle) from where the previous
    /// call stopped, removing the expired entries it finds and passing each to `on_removed`.
    /// Returns the number of slots examined. Calls totalling `capacity()` slots with the same
    /// `now` reclaim every entry expired at `now`.
    pub fn sweep(
        &mut self,
        now: u32,
        max_slots: usize,
        mut on_removed: impl FnMut(Removed),
    ) -> usize {
        let n = max_slots.min(self.capacity());
        let len = self.entries.len();
        let mut idx = self.cursor as usize;
        let mut left = n;
        // Runs of slots up to the end of the slab, scanned for the next expired entry: a
        // live slot costs a load and two compares.
        while left > 0 && idx < len {
            let run = left.min(len - idx);
            let expired = self.entries[idx..idx + run]
                .iter()
                .position(|e| e.occupied() && e.expires_at <= now);
            let step = match expired {
                Some(at) => {
                    let slot = slot_u32(idx + at);
                    on_removed(self.remove_slot(slot, None, RemoveReason::Expired));
                    at + 1
                }
                None => run,
            };
            left -= step;
            idx += step;
            if idx >= len {
                idx = 0;
            }
        }
        self.cursor = slot_u32(idx);
        n
    }

    /// Removes every entry (expired or not) for which `f` returns false, passing each to
    /// `on_removed` with reason [`RemoveReason::Removed`]. O(capacity): for control-plane
    /// flushes (a gateway removed, a service deleted), not for the packet path.
    pub fn retain(
        &mut self,
        mut f: impl FnMut(&AffinityKey, &AffinityValue) -> bool,
        mut on_removed: impl FnMut(Removed),
    ) {
        for idx in 0..self.entries.len() {
            let e = &self.entries[idx];
            let Some((k, v)) = e.occupied().then(|| self.visible(e)).flatten() else {
                continue;
            };
            if !f(&k, &v) {
                // `idx < capacity <= 2^31`.
                on_removed(self.remove_slot(slot_u32(idx), None, RemoveReason::Removed));
            }
        }
    }

    /// All entries, in slab order, including expired ones not reclaimed yet (compare
    /// `expires_at` with the clock to skip those). O(capacity).
    pub fn iter(&self) -> impl Iterator<Item = (AffinityKey, AffinityValue)> + '_ {
        self.entries
            .iter()
            .filter(|e| e.occupied())
            .filter_map(|e| self.visible(e))
    }

    /// The entries in slab slots `slots` (clamped to the slab), as [`Self::iter`] sees them:
    /// a bounded slice of a listing that goes on over several calls. The slab has
    /// [`Self::capacity`] slots.
    pub fn iter_slots(
        &self,
        slots: std::ops::Range<usize>,
    ) -> impl Iterator<Item = (AffinityKey, AffinityValue)> + '_ {
        let end = slots.end.min(self.entries.len());
        let start = slots.start.min(end);
        self.entries[start..end]
            .iter()
            .filter(|e| e.occupied())
            .filter_map(|e| self.visible(e))
    }

    /// An occupied entry as the current ids see it: a running remap's translation of an entry
    /// it has not reached yet, `None` when its ids are gone.
    fn visible(&self, e: &Entry) -> Option<(AffinityKey, AffinityValue)> {
        let (key, mut value) = (e.key(), e.value());
        if !e.stale(self.epoch) {
            return Some((key, value));
        }
        let (key, gateway) = self.remap.as_deref()?.remap.apply(key, value.gateway)?;
        value.gateway = gateway;
        Some((key, value))
    }

    /// Starts changing every entry's ids by `remap`, in O(1): the shard enters a new epoch,
    /// and the entries of the old one are translated by [`Self::remap_step`] (a bounded slice
    /// of the slab per call) or, sooner, by [`Self::settle`] when a lookup needs one. Lookups
    /// compare epochs, so an old entry never answers for a new key. Cannot fail.
    ///
    /// A remap still running is first completed, walking what it has left of the table (its
    /// result is returned, `forced` set): begin the next one only after `remap_step` reported
    /// the previous one done to avoid that walk.
    pub fn begin_remap(
        &mut self,
        remap: Remap,
        mut on_removed: impl FnMut(Removed),
    ) -> Option<RemapProgress> {
        let forced = self.remap.is_some().then(|| {
            let mut done = self.remap_step(usize::MAX, &mut on_removed);
            while done.is_none() && self.remap.is_some() {
                done = self.remap_step(usize::MAX, &mut on_removed);
            }
            RemapProgress {
                forced: true,
                ..done.unwrap_or_default()
            }
        });
        self.epoch ^= EPOCH;
        let progress = RemapProgress {
            slots: self.capacity(),
            left: self.len(),
            flush: remap.flush,
            ..RemapProgress::default()
        };
        self.remap = Some(Box::new(Remapping { remap, progress }));
        forced
    }

    /// Whether a remap is running (the packet path then settles keys before looking them up).
    #[inline]
    pub fn remapping(&self) -> bool {
        self.remap.is_some()
    }

    /// The running remap's progress, if any.
    pub fn remap_progress(&self) -> Option<RemapProgress> {
        self.remap.as_deref().map(|r| r.progress)
    }

    /// Advances the running remap from where it stopped, for at most `budget` units of work:
    /// a slab slot visited costs 1, an entry translated in place 1 more, one re-indexed or
    /// removed [`REMAP_MOVE_COST`] more, so a call's cost is bounded whatever the table
    /// holds. An entry whose ids are gone is removed and passed to `on_removed` as `Remapped`
    /// or `Flushed`; one that cannot be re-indexed under its new key, as `Removed`. Returns
    /// the remap's result once, from the call that completes it: when no old entry is left,
    /// at the latest when the cursor reaches the end of the slab.
    pub fn remap_step(
        &mut self,
        budget: usize,
        mut on_removed: impl FnMut(Removed),
    ) -> Option<RemapProgress> {
        let mut idx = self.remap.as_deref()?.progress.visited;
        let len = self.entries.len();
        let mut left = budget;
        while left > 0 && idx < len && self.remap.as_deref().is_some_and(|r| r.progress.left > 0) {
            let e = &self.entries[idx];
            left -= 1;
            if e.occupied() && e.stale(self.epoch) {
                let cost = self.translate_slot(slot_u32(idx), &mut on_removed);
                left = left.saturating_sub(cost);
            }
            idx += 1;
        }
        let r = self.remap.as_deref_mut()?;
        r.progress.visited = idx;
        if r.progress.left == 0 || idx >= self.entries.len() {
            return self.remap.take().map(|r| r.progress);
        }
        None
    }

    /// Translates now the old entries a lookup of `key` (in the new ids) must see: those of
    /// the old services the remap maps onto `key`'s (usually one), so a client keeps its entry
    /// whether or not the remap's cursor has reached it. O(1): one index probe per such
    /// service. Nothing to do without a remap.
    pub fn settle(&mut self, key: &AffinityKey, mut on_removed: impl FnMut(Removed)) {
        let service = key.service_index();
        let direct = key.service & DIRECT;
        let old_epoch = self.epoch ^ EPOCH;
        for i in 0.. {
            let Some(old) = self
                .remap
                .as_deref()
                .and_then(|r| r.remap.sources(service).get(i).copied())
            else {
                return;
            };
            let k = AffinityKey {
                service: old | direct,
                ..*key
            };
            let h = self.hash(&k);
            if let (Some((_, _, idx)), _) = self.find_counting(&k, h, old_epoch) {
                let _ = self.translate_slot(idx, &mut on_removed);
            }
        }
    }

    // ---- internals -----------------------------------------------------------------------

    /// Translates old-epoch slot `idx` by the running remap: new ids in place (re-indexed
    /// when the service changed, so the key's hash did), or removed. Returns its cost for
    /// [`Self::remap_step`]'s budget.
    fn translate_slot(&mut self, idx: u32, on_removed: &mut impl FnMut(Removed)) -> usize {
        let e = self.entries[idx as usize];
        let Some(r) = self.remap.as_deref_mut() else {
            return 0;
        };
        let Some((key, gateway)) = r.remap.apply(e.key(), e.gateway) else {
            r.progress.removed += 1;
            // Reported `Remapped` or `Flushed` (and counted off `left`) by `report`.
            on_removed(self.remove_slot(idx, None, RemoveReason::Removed));
            return REMAP_MOVE_COST;
        };
        let mut cost = 1;
        if key != e.key() || gateway != e.gateway {
            r.progress.moved += 1;
        }
        if key.service != e.key().service {
            let hash = self.hash(&key);
            // A new entry of the key already (inserted without settling it first), or no
            // free lane on the new key's chain: the old entry goes, reported in the new ids.
            if self.find(&key, hash).is_some() || !self.reindex(idx, hash) {
                if let Some(r) = self.remap.as_deref_mut() {
                    r.progress.moved -= 1;
                    r.progress.removed += 1;
                }
                on_removed(self.remove_slot(idx, None, RemoveReason::Removed));
                return REMAP_MOVE_COST;
            }
            cost = REMAP_MOVE_COST;
        }
        if let Some(r) = self.remap.as_deref_mut() {
            r.progress.left = r.progress.left.saturating_sub(1);
        }
        let m = &mut self.entries[idx as usize];
        m.service = key.service | self.epoch;
        m.gateway = gateway;
        cost
    }

    /// Moves slot `idx`'s index lane onto the chain of `hash` (its key changed). False,
    /// changing nothing, when that chain has no free lane within [`MAX_PROBE_BUCKETS`].
    fn reindex(&mut self, idx: u32, hash: u64) -> bool {
        let home = self.home(hash_bits(hash));
        let Some(free) = self.free_lane(home) else {
            return false;
        };
        let Some((old_home, bucket, lane)) = self.locate(idx) else {
            return false;
        };
        // Clearing a lane frees it, so the free lane found above stays free.
        self.unindex(old_home, bucket, lane);
        self.index_lane(home, free, tag_of(hash), idx);
        let m = &mut self.entries[idx as usize].meta;
        *m = (hash_bits(hash) << 2) | (*m & (OCCUPIED | CONFIRMED));
        true
    }

    /// The home bucket for stored hash bits: multiply-shift maps them onto `0..nbuckets`
    /// without a division (`nbuckets < 2^30`, so the product fits).
    #[inline]
    fn home(&self, bits: u32) -> usize {
        ((u64::from(bits) * self.buckets.len() as u64) >> HASH_BITS) as usize
    }

    #[inline]
    fn next_bucket(&self, b: usize) -> usize {
        if b + 1 >= self.buckets.len() {
            0
        } else {
            b + 1
        }
    }

    /// (bucket, lane, slab index) of `key`, following its probe chain.
    #[inline]
    fn find(&self, key: &AffinityKey, hash: u64) -> Option<(usize, usize, u32)> {
        self.find_counting(key, hash, self.epoch).0
    }

    /// How many index buckets (cache lines) a lookup of `key` reads: at most
    /// [`MAX_PROBE_BUCKETS`]. A diagnostic of the probe chains (the cost of a miss or a hit).
    pub fn probe_buckets(&self, key: &AffinityKey, hash: u64) -> usize {
        self.find_counting(key, hash, self.epoch).1
    }

    /// [`Self::find`], and how many buckets it read.
    #[inline(always)]
    fn find_counting(
        &self,
        key: &AffinityKey,
        hash: u64,
        epoch: u16,
    ) -> (Option<(usize, usize, u32)>, usize) {
        let tag = tag_of(hash);
        let mut b = self.home(hash_bits(hash));
        for read in 1..=self.buckets.len() {
            let bucket = &self.buckets[b];
            let mut lanes = bucket.lanes_tagged(tag);
            while lanes != 0 {
                let lane = lanes.trailing_zeros() as usize;
                lanes &= lanes - 1;
                let slot = bucket.slots[lane];
                if slot != NIL && self.entries[slot as usize].matches(key, epoch) {
                    return (Some((b, lane, slot)), read);
                }
            }
            if bucket.overflow == 0 {
                return (None, read);
            }
            b = self.next_bucket(b);
        }
        (None, self.buckets.len())
    }

    /// (home, bucket, lane) of the index lane that points at slab slot `idx`.
    fn locate(&self, idx: u32) -> Option<(usize, usize, usize)> {
        let home = self.home(self.entries[idx as usize].meta >> 2);
        let mut b = home;
        for _ in 0..self.buckets.len() {
            let bucket = &self.buckets[b];
            if let Some(lane) = bucket.slots.iter().position(|&s| s == idx) {
                return Some((home, b, lane));
            }
            if bucket.overflow == 0 {
                return None;
            }
            b = self.next_bucket(b);
        }
        None
    }

    /// Returns the slot the cursor is at and moves the cursor on. Capacity must be non-zero.
    #[inline]
    fn advance_cursor(&mut self) -> u32 {
        let idx = self.cursor;
        self.cursor = if idx as usize + 1 >= self.entries.len() {
            0
        } else {
            idx + 1
        };
        idx
    }

    /// Removes the entry in slab slot `idx` (occupied) from the index, the FIFO and the
    /// counts, frees the slot and counts the removal. `at` is its (home, bucket, lane) when
    /// the caller already found it.
    fn remove_slot(
        &mut self,
        idx: u32,
        at: Option<(usize, usize, usize)>,
        reason: RemoveReason,
    ) -> Removed {
        let e = self.entries[idx as usize];
        if let Some((home, bucket, lane)) = at.or_else(|| self.locate(idx)) {
            self.unindex(home, bucket, lane);
        }
        if e.confirmed() {
            self.confirmed_len = self.confirmed_len.saturating_sub(1);
            let p = self.prefix_slot(&e.client);
            self.prefix_counts[p] = self.prefix_counts[p].saturating_sub(1);
        } else {
            self.fifo_unlink(idx);
            self.unconfirmed_len = self.unconfirmed_len.saturating_sub(1);
        }
        self.entries[idx as usize].meta = 0;
        self.links[idx as usize] = Link {
            prev: NIL,
            next: self.free_head,
        };
        self.free_head = idx;
        match reason {
            RemoveReason::Expired => self.counters.expired += 1,
            RemoveReason::EvictedUnconfirmed => self.counters.evicted_unconfirmed += 1,
            RemoveReason::Removed | RemoveReason::Remapped | RemoveReason::Flushed => {
                self.counters.removed += 1
            }
        }
        self.report(&e, reason)
    }

    /// What a removed entry is reported as: its key and value in the current ids (an entry a
    /// running remap had not reached yet is translated, and one whose ids are gone is reported
    /// `Remapped` or `Flushed`, since it left the caller's counts when the remap began).
    fn report(&mut self, e: &Entry, reason: RemoveReason) -> Removed {
        let mut r = Removed {
            key: e.key(),
            value: e.value(),
            reason,
        };
        if !e.stale(self.epoch) {
            return r;
        }
        if let Some(m) = self.remap.as_deref_mut() {
            m.progress.left = m.progress.left.saturating_sub(1);
            match m.remap.apply(r.key, r.value.gateway) {
                Some((key, gateway)) => {
                    r.key = key;
                    r.value.gateway = gateway;
                }
                None if m.remap.flush => r.reason = RemoveReason::Flushed,
                None => r.reason = RemoveReason::Remapped,
            }
        }
        r
    }

    /// Clears index lane (`bucket`, `lane`) of an entry whose home is `home`, and the
    /// overflow counts its probe incremented.
    fn unindex(&mut self, home: usize, bucket: usize, lane: usize) {
        self.buckets[bucket].slots[lane] = NIL;
        let mut b = home;
        for _ in 0..self.buckets.len() {
            if b == bucket {
                break;
            }
            let o = &mut self.buckets[b].overflow;
            *o = o.saturating_sub(1);
            b = self.next_bucket(b);
        }
    }

    /// Points the free index lane `at` (on `home`'s chain) at slot `idx`, counting the
    /// buckets its probe passed.
    fn index_lane(&mut self, home: usize, at: (usize, usize), tag: u16, idx: u32) {
        let (free_bucket, free_lane) = at;
        let bucket = &mut self.buckets[free_bucket];
        bucket.tags[free_lane] = tag;
        bucket.slots[free_lane] = idx;
        let mut b = home;
        for _ in 0..self.buckets.len() {
            if b == free_bucket {
                break;
            }
            self.buckets[b].overflow += 1;
            b = self.next_bucket(b);
        }
    }

    /// The first free index lane within [`MAX_PROBE_BUCKETS`] of `home`.
    fn free_lane(&self, home: usize) -> Option<(usize, usize)> {
        let mut b = home;
        for _ in 0..self.buckets.len().min(MAX_PROBE_BUCKETS) {
            if let Some(lane) = self.buckets[b].slots.iter().position(|&s| s == NIL) {
                return Some((b, lane));
            }
            b = self.next_bucket(b);
        }
        None
    }

    /// Evicts the oldest unconfirmed entry (reported as expired if it is).
    fn evict_oldest_unconfirmed(&mut self, now: u32) -> Option<Removed> {
        let idx = self.fifo_head;
        if idx == NIL {
            return None;
        }
        let reason = if self.entries[idx as usize].expires_at <= now {
            RemoveReason::Expired
        } else {
            RemoveReason::EvictedUnconfirmed
        };
        Some(self.remove_slot(idx, None, reason))
    }

    /// Reclaims one expired entry if a bounded search finds one: the oldest unconfirmed entry,
    /// then the next [`RECLAIM_SCAN`] slots of the sweep cursor.
    fn reclaim_expired(&mut self, now: u32) -> Option<Removed> {
        let head = self.fifo_head;
        if head != NIL && self.entries[head as usize].expires_at <= now {
            return Some(self.remove_slot(head, None, RemoveReason::Expired));
        }
        for _ in 0..RECLAIM_SCAN.min(self.capacity()) {
            let idx = self.advance_cursor();
            let e = &self.entries[idx as usize];
            if e.occupied() && e.expires_at <= now {
                return Some(self.remove_slot(idx, None, RemoveReason::Expired));
            }
        }
        None
    }

    /// The caller inserted a key that is present: update it, never demoting a confirmed entry.
    fn update_in_place(&mut self, idx: u32, value: AffinityValue) -> InsertOutcome {
        let e = &mut self.entries[idx as usize];
        e.gateway = value.gateway;
        e.last_seen = value.last_seen;
        e.expires_at = value.expires_at;
        if value.confirmed && self.confirm_slot(idx) == Confirm::PrefixQuota {
            return InsertOutcome::PrefixQuota;
        }
        InsertOutcome::Inserted
    }

    /// Confirms slab slot `idx` if its prefix has room.
    fn confirm_slot(&mut self, idx: u32) -> Confirm {
        let e = &self.entries[idx as usize];
        if e.confirmed() {
            return Confirm::Already;
        }
        let Some(p) = self.prefix_room(&e.client) else {
            self.counters.prefix_quota += 1;
            return Confirm::PrefixQuota;
        };
        self.prefix_counts[p] += 1;
        self.entries[idx as usize].meta |= CONFIRMED;
        self.fifo_unlink(idx);
        self.unconfirmed_len = self.unconfirmed_len.saturating_sub(1);
        self.confirmed_len += 1;
        self.counters.confirmed += 1;
        Confirm::Confirmed
    }

    /// The prefix counter of `client`'s entries: the client's IPv4 /`len_v4` (IPv4-mapped
    /// keys) or IPv6 /`len_v6`, hashed with the shard's key (so its counter cannot be aimed at
    /// from outside) onto the counters by multiply-shift.
    #[inline]
    fn prefix_slot(&self, client: &[u8; 16]) -> usize {
        self.prefix_slot_quota(client).0
    }

    /// [`Self::prefix_slot`] and the quota of its family.
    #[inline]
    fn prefix_slot_quota(&self, client: &[u8; 16]) -> (usize, u16) {
        let q = &self.prefix_quota;
        let addr = u128::from_be_bytes(*client);
        let v4 = addr >> 32 == 0xffff;
        let (len, quota, family) = if v4 {
            (96 + u32::from(q.len_v4), q.quota_v4, 4)
        } else {
            (u32::from(q.len_v6), q.quota_v6, 6)
        };
        let prefix = addr.checked_shr(128 - len).unwrap_or(0);
        let k = &self.hash_key;
        let hi = u64::try_from(prefix >> 64).unwrap_or(0);
        let lo = u64::try_from(prefix & u128::from(u64::MAX)).unwrap_or(0);
        let x = k.seed.rotate_left(17)
            ^ hi.wrapping_mul(k.k1)
            ^ lo.wrapping_mul(k.k2).rotate_left(32)
            ^ (u64::from(len) << 8 | family).wrapping_mul(k.k3);
        let h = fmix64(x) >> 32;
        // `h < 2^32` and fewer than 2^30 counters: the product fits and the slot is in range.
        let slot = (h * self.prefix_counts.len() as u64) >> 32;
        (usize::try_from(slot).unwrap_or(0), quota)
    }

    /// `client`'s prefix counter if it is below its quota.
    #[inline]
    fn prefix_room(&self, client: &[u8; 16]) -> Option<usize> {
        let (p, quota) = self.prefix_slot_quota(client);
        (self.prefix_counts[p] < quota).then_some(p)
    }

    fn fifo_push_back(&mut self, idx: u32) {
        let tail = self.fifo_tail;
        self.links[idx as usize] = Link {
            prev: tail,
            next: NIL,
        };
        if tail == NIL {
            self.fifo_head = idx;
        } else {
            self.links[tail as usize].next = idx;
        }
        self.fifo_tail = idx;
    }

    fn fifo_unlink(&mut self, idx: u32) {
        let Link { prev, next } = self.links[idx as usize];
        if prev == NIL {
            self.fifo_head = next;
        } else {
            self.links[prev as usize].next = next;
        }
        if next == NIL {
            self.fifo_tail = prev;
        } else {
            self.links[next as usize].prev = prev;
        }
        self.links[idx as usize] = NO_LINK;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::{HashMap, HashSet};

    /// 198.18.0.0/15 client `n` (lab range), service 443.
    fn k4(n: u32) -> AffinityKey {
        AffinityKey::from_v4(Ipv4Addr::from(0xc612_0000 + (n & 0x1_ffff)), 443)
    }

    /// 2001:2:0:ff::/64 client with interface id `n`, service 500.
    fn k6(n: u64) -> AffinityKey {
        let mut o = Ipv6Addr::new(0x2001, 2, 0, 0xff, 0, 0, 0, 0).octets();
        o[8..].copy_from_slice(&n.to_be_bytes());
        AffinityKey::from_v6(&Ipv6Addr::from(o), 500)
    }

    fn val(gateway: u16, last_seen: u32, expires_at: u32, confirmed: bool) -> AffinityValue {
        AffinityValue {
            gateway,
            last_seen,
            expires_at,
            confirmed,
        }
    }

    fn ins(s: &mut AffinityShard, k: AffinityKey, v: AffinityValue, now: u32) -> InsertOutcome {
        s.insert(k, k.hash(), v, now)
    }

    /// The live value of `k` via `lookup` (which reclaims it if expired).
    fn get(s: &mut AffinityShard, k: &AffinityKey, now: u32) -> Option<AffinityValue> {
        match s.lookup(k, k.hash(), now) {
            Lookup::Hit(e) => Some(e.value()),
            _ => None,
        }
    }

    /// Checks every structural invariant from scratch.
    pub(super) fn check(s: &AffinityShard) {
        let cap = s.capacity();
        let nb = s.buckets.len();
        let occupied = s.entries.iter().filter(|e| e.occupied()).count();
        let confirmed = s
            .entries
            .iter()
            .filter(|e| e.occupied() && e.confirmed())
            .count();
        assert_eq!(occupied, s.len());
        assert_eq!(confirmed, s.confirmed_len);
        assert!(s.unconfirmed_len <= s.max_unconfirmed);
        assert!(s.len() <= cap);

        // FIFO: exactly the unconfirmed entries, consistent both ways.
        let (mut n, mut prev, mut i) = (0, NIL, s.fifo_head);
        while i != NIL {
            let e = &s.entries[i as usize];
            assert!(
                e.occupied() && !e.confirmed(),
                "FIFO holds a non-unconfirmed slot"
            );
            assert_eq!(s.links[i as usize].prev, prev);
            prev = i;
            i = s.links[i as usize].next;
            n += 1;
            assert!(n <= cap, "FIFO cycle");
        }
        assert_eq!(s.fifo_tail, prev);
        assert_eq!(n, s.unconfirmed_len);

        // Free list: exactly the free slots.
        let (mut n, mut i) = (0, s.free_head);
        while i != NIL {
            assert!(!s.entries[i as usize].occupied());
            i = s.links[i as usize].next;
            n += 1;
            assert!(n <= cap, "free-list cycle");
        }
        assert_eq!(n, cap - s.len());

        // Index: every entry referenced once; overflow counts recomputed from scratch.
        let mut refs = vec![0u32; cap];
        let mut overflow = vec![0u32; nb];
        for (b, bucket) in s.buckets.iter().enumerate() {
            for &slot in &bucket.slots {
                if slot == NIL {
                    continue;
                }
                let e = &s.entries[slot as usize];
                assert!(e.occupied(), "index points at a free slot");
                refs[slot as usize] += 1;
                let mut x = s.home(e.meta >> 2);
                while x != b {
                    overflow[x] += 1;
                    x = s.next_bucket(x);
                }
            }
        }
        for (i, e) in s.entries.iter().enumerate() {
            assert_eq!(
                refs[i],
                u32::from(e.occupied()),
                "slot {i} indexed {} times",
                refs[i]
            );
        }
        let actual: Vec<u32> = s.buckets.iter().map(|b| b.overflow).collect();
        assert_eq!(actual, overflow);

        // Prefix counters: the established entries of each, recounted from scratch.
        let mut prefix = vec![0u16; s.prefix_counts.len()];
        for e in s.entries.iter().filter(|e| e.occupied() && e.confirmed()) {
            prefix[s.prefix_slot(&e.client)] += 1;
        }
        assert_eq!(&prefix[..], &s.prefix_counts[..], "prefix counters");
        let q = s.prefix_quota;
        let most = q.quota_v4.max(q.quota_v6);
        assert!(prefix.iter().all(|&n| n <= most), "a prefix over its quota");

        let c = s.counters;
        assert_eq!(
            c.inserts - c.expired - c.evicted_unconfirmed - c.removed,
            s.len() as u64,
            "counters do not add up: {c:?}"
        );
    }

    // ---- keys and hashing ----------------------------------------------------------------

    /// Client addresses of one IPv6 /64 (an attacker's own: no spoofing needed) whose hashes
    /// under `key` share one home bucket in a shard of `capacity`, found by search as an
    /// attacker who knows the key would.
    fn colliding_keys(key: &HashKey, capacity: usize, n: usize) -> Vec<AffinityKey> {
        let probe = AffinityShard::new(capacity, capacity).with_hash_key(*key);
        let base = u128::from(Ipv6Addr::new(0x2001, 2, 0, 0x99, 0, 0, 0, 0));
        let mut out = Vec::new();
        let mut want = None;
        for iid in 1u128.. {
            let k = AffinityKey::from_v6(&Ipv6Addr::from(base | iid), 0);
            let home = probe.home(hash_bits(k.hash_with(key)));
            if *want.get_or_insert(home) == home {
                out.push(k);
                if out.len() == n {
                    break;
                }
            }
        }
        out
    }

    fn mean_probes(s: &AffinityShard, keys: &[AffinityKey]) -> f64 {
        let total: usize = keys.iter().map(|k| s.probe_buckets(k, s.hash(k))).sum();
        total as f64 / keys.len() as f64
    }

    /// Hash flooding (issue 15): 1000 addresses chosen to share a home bucket under the public
    /// key. Against a table keyed with it, the probe bound refuses most of them and no lookup
    /// reads more than MAX_PROBE_BUCKETS lines (without the bound: a chain of ~100). Against a
    /// table keyed with another (secret) key, the same addresses cost what random ones do.
    #[test]
    fn keys_chosen_to_collide_cost_what_random_keys_cost() {
        const CAP: usize = 4096;
        let chosen = colliding_keys(&HashKey::FIXED, CAP, 1000);
        let insert_all = |s: &mut AffinityShard, keys: &[AffinityKey]| {
            for (i, k) in keys.iter().enumerate() {
                let v = AffinityValue {
                    gateway: 0,
                    last_seen: 1,
                    expires_at: 1000 + u32::try_from(i).unwrap(),
                    confirmed: false,
                };
                let h = s.hash(k);
                let _ = s.insert(*k, h, v, 1);
            }
        };

        let mut public = AffinityShard::new(CAP, CAP);
        insert_all(&mut public, &chosen);
        let worst = chosen
            .iter()
            .map(|k| public.probe_buckets(k, public.hash(k)))
            .max()
            .unwrap();
        assert!(worst <= MAX_PROBE_BUCKETS, "a lookup reads {worst} buckets");
        assert_eq!(
            public.len(),
            MAX_PROBE_BUCKETS * LANES,
            "the chain holds what fits within the bound"
        );
        assert_eq!(public.counters().probe_limit, 1000 - public.len() as u64);
        check(&public);

        let secret = HashKey::from_random([
            0x0123_4567_89ab_cdef,
            0xfedc_ba98_7654_3210,
            0x0f1e_2d3c_4b5a_6978,
            0x8877_6655_4433_2211,
        ]);
        let mut keyed = AffinityShard::new(CAP, CAP).with_hash_key(secret);
        insert_all(&mut keyed, &chosen);
        assert_eq!(keyed.counters().probe_limit, 0);
        let mut rng = crate::rng::SplitMix64(7);
        let random: Vec<AffinityKey> = (0..1000)
            .map(|_| {
                let a = u128::from(rng.next_u64()) << 64 | u128::from(rng.next_u64());
                AffinityKey::from_v6(&Ipv6Addr::from(a), 0)
            })
            .collect();
        let mut baseline = AffinityShard::new(CAP, CAP).with_hash_key(secret);
        insert_all(&mut baseline, &random);
        let (chosen_cost, random_cost) = (
            mean_probes(&keyed, &chosen),
            mean_probes(&baseline, &random),
        );
        assert!(
            chosen_cost <= 2.0 * random_cost,
            "chosen keys {chosen_cost:.3} buckets per lookup, random keys {random_cost:.3}"
        );
        // Misses too: a lookup of an absent key reads what a random absent key reads.
        let absent = colliding_keys(&HashKey::FIXED, CAP, 1100).split_off(1000);
        assert!(mean_probes(&keyed, &absent) <= 2.0 * mean_probes(&baseline, &absent).max(1.0));
    }

    #[test]
    fn key_from_v4_is_v4_mapped() {
        let k = AffinityKey::from_v4(Ipv4Addr::new(198, 18, 0, 5), 7);
        assert_eq!(
            k.client,
            [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 198, 18, 0, 5]
        );
        assert_eq!(k.service, 7);
        assert_eq!(k.client_ip(), IpAddr::V4(Ipv4Addr::new(198, 18, 0, 5)));
        assert_eq!(AffinityKey::new("198.18.0.5".parse().unwrap(), 7), k);
        // The same client seen as an IPv4-mapped IPv6 address is the same key.
        let mapped: Ipv6Addr = "::ffff:198.18.0.5".parse().unwrap();
        assert_eq!(AffinityKey::from_v6(&mapped, 7), k);
        assert_eq!(
            AffinityKey::new(IpAddr::V6(mapped), 7).client_ip(),
            k.client_ip()
        );
    }

    #[test]
    fn key_from_v6() {
        let a: Ipv6Addr = "2001:2:0:1::100".parse().unwrap();
        let k = AffinityKey::from_v6(&a, 4500);
        assert_eq!(
            k.client,
            [0x20, 0x01, 0, 2, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 1, 0]
        );
        assert_eq!(k.client_ip(), IpAddr::V6(a));
        assert_eq!(AffinityKey::new(IpAddr::V6(a), 4500), k);
        // `::` and IPv4-compatible `::a.b.c.d` stay IPv6.
        assert_eq!(
            AffinityKey::default().client_ip(),
            IpAddr::V6(Ipv6Addr::UNSPECIFIED)
        );
        let compat: Ipv6Addr = "::198.18.0.5".parse().unwrap();
        assert_eq!(
            AffinityKey::from_v6(&compat, 1).client_ip(),
            IpAddr::V6(compat)
        );
    }

    #[test]
    fn hash_is_deterministic_golden() {
        // Pinned values: the hash must not change across builds, hosts or endianness.
        assert_eq!(AffinityKey::default().hash(), GOLDEN_DEFAULT);
        assert_eq!(
            AffinityKey::from_v4(Ipv4Addr::new(198, 18, 0, 5), 443).hash(),
            GOLDEN_V4
        );
        let a: Ipv6Addr = "2001:2:0:2::11".parse().unwrap();
        assert_eq!(AffinityKey::from_v6(&a, 500).hash(), GOLDEN_V6);
        // Every field matters.
        let k = k4(1);
        assert_ne!(k.hash(), AffinityKey { service: 444, ..k }.hash());
        assert_ne!(k4(1).hash(), k4(2).hash());
        assert_ne!(k6(1).hash(), k6(1 << 63).hash());
    }

    const GOLDEN_DEFAULT: u64 = 0x7acd_bb98_b134_4213;
    const GOLDEN_V4: u64 = 0x6ab9_41a8_32c0_c7af;
    const GOLDEN_V6: u64 = 0xed49_590d_2fd9_16d2;

    #[test]
    fn hash_spreads_sequential_clients() {
        // 2^17 consecutive IPv4 clients (all of 198.18.0.0/15) over 1024 home buckets and
        // over the 256 values of the tag's low byte: chi-square within 5 sigma of a random
        // function's (df + 5 * sqrt(2 df); this hash gives 994 and 266).
        let mut homes = vec![0u32; 1024];
        let mut tags = vec![0u32; 256];
        let mut seen = HashSet::new();
        for n in 0..1u32 << 17 {
            let h = k4(n).hash();
            assert!(
                seen.insert(h),
                "IPv4 hashes of one service must be distinct"
            );
            homes[(h >> 54) as usize] += 1;
            tags[(h & 0xff) as usize] += 1;
        }
        for bins in [&homes, &tags] {
            let mean = f64::from(1u32 << 17) / bins.len() as f64;
            let chi2: f64 = bins
                .iter()
                .map(|&n| (f64::from(n) - mean).powi(2) / mean)
                .sum();
            let df = (bins.len() - 1) as f64;
            assert!(
                chi2 < df + 5.0 * (2.0 * df).sqrt(),
                "chi2 {chi2} for df {df}"
            );
        }
    }

    #[test]
    fn hash_avalanches() {
        // Flipping any one input bit flips about half of the output bits on average.
        let base = [k4(12345), k6(0x0123_4567_89ab_cdef), AffinityKey::default()];
        for k in base {
            let h = k.hash();
            let mut total = 0u32;
            for bit in 0..(16 * 8 + 16) {
                let mut k2 = k;
                if bit < 128 {
                    k2.client[bit / 8] ^= 1 << (bit % 8);
                } else {
                    k2.service ^= 1 << (bit - 128);
                }
                let d = (h ^ k2.hash()).count_ones();
                assert!(d >= 10, "bit {bit}: only {d} output bits changed");
                total += d;
            }
            let avg = total / 144;
            assert!((28..=36).contains(&avg), "average {avg}");
        }
    }

    // ---- memory --------------------------------------------------------------------------

    fn assert_memory(cap: usize) {
        let s = AffinityShard::new(cap, cap / 10);
        let bytes = s.memory_bytes();
        assert_eq!(bytes, AffinityShard::memory_bytes_for(cap));
        assert_eq!(s.capacity(), cap);
        assert!(
            bytes <= 64 * cap,
            "{cap}: {} B/entry",
            bytes as f64 / cap as f64
        );
        // The design figure: 32 + 8 + 4 + 64/5 + 2/4 = 57.3 B/entry plus the fixed part.
        assert!(bytes * 10 <= 573 * cap + 10_240, "{cap}: {bytes}");
    }

    #[test]
    fn memory_per_entry_1k() {
        assert_memory(1_000);
    }

    #[test]
    fn memory_per_entry_1m() {
        assert_memory(1_000_000);
    }

    #[test]
    fn memory_per_entry_10m_computed() {
        let bytes = AffinityShard::memory_bytes_for(10_000_000);
        assert!(bytes <= 640_000_000, "{bytes}");
        assert_eq!(bytes, 573_000_000 + core::mem::size_of::<AffinityShard>());
        assert!(core::mem::size_of::<AffinityShard>() <= 256);
    }

    #[test]
    #[ignore = "allocates and touches 573 MB"]
    fn memory_per_entry_10m_allocated() {
        assert_memory(10_000_000);
    }

    #[test]
    fn lanes_tagged_masks_matching_lanes_in_order() {
        let mut b = EMPTY_BUCKET;
        b.tags = [7, 0, 7, 3, 0, 0, 0, 0, 0, 7];
        assert_eq!(b.lanes_tagged(7), 0b10_0000_0101);
        assert_eq!(b.lanes_tagged(3), 0b1000);
        assert_eq!(b.lanes_tagged(0), 0b01_1111_0010);
        assert_eq!(b.lanes_tagged(9), 0);
    }

    proptest! {
        #[test]
        fn lanes_tagged_is_a_compare_per_lane(
            tags in proptest::collection::vec(prop::sample::select(vec![0u16, 1, 0x7fff, 0x8000, 0x8001, 0xfffe, 0xffff, 0x1234]), LANES),
            tag in prop::sample::select(vec![0u16, 1, 0x7fff, 0x8000, 0x8001, 0xfffe, 0xffff, 0x1234]),
        ) {
            let mut b = EMPTY_BUCKET;
            b.tags.copy_from_slice(&tags);
            let want = tags
                .iter()
                .enumerate()
                .fold(0, |m, (i, &t)| m | u32::from(t == tag) << i);
            prop_assert_eq!(b.lanes_tagged(tag), want);
        }
    }

    #[test]
    fn entries_and_buckets_are_cache_line_friendly() {
        assert_eq!(core::mem::align_of::<Entry>(), 32);
        assert_eq!(core::mem::align_of::<Bucket>(), 64);
        let s = AffinityShard::new(100, 10);
        assert_eq!(s.entries.as_ptr() as usize % 32, 0);
        assert_eq!(s.buckets.as_ptr() as usize % 64, 0);
    }

    // ---- basic operations ----------------------------------------------------------------

    #[test]
    fn insert_lookup_refresh_confirm_set_gateway() {
        let mut s = AffinityShard::new(16, 8);
        let k = k4(5);
        assert!(matches!(s.lookup(&k, k.hash(), 100), Lookup::Miss));
        assert_eq!(
            ins(&mut s, k, val(2, 100, 3700, false), 100),
            InsertOutcome::Inserted
        );
        assert_eq!((s.len(), s.unconfirmed_len(), s.confirmed_len()), (1, 1, 0));
        assert!(!s.is_empty());

        match s.lookup(&k, k.hash(), 200) {
            Lookup::Hit(mut e) => {
                assert_eq!(e.key(), k);
                assert_eq!(e.value(), val(2, 100, 3700, false));
                e.refresh(200, 3800);
                assert_eq!(e.confirm(), Confirm::Confirmed);
                assert_eq!(
                    e.confirm(),
                    Confirm::Already,
                    "second confirm is not a transition"
                );
                e.set_gateway(3);
                assert_eq!(e.value(), val(3, 200, 3800, true));
                assert!(format!("{e:?}").contains("gateway: 3"));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(s.peek(&k, k.hash()), Some(val(3, 200, 3800, true)));
        assert_eq!((s.len(), s.unconfirmed_len(), s.confirmed_len()), (1, 0, 1));
        let c = s.counters();
        assert_eq!((c.inserts, c.confirmed), (1, 1));
        // Another service is another key; a wrong hash does not find the entry.
        assert!(matches!(
            s.lookup(&AffinityKey { service: 1, ..k }, k.hash(), 200),
            Lookup::Miss
        ));
        assert!(matches!(s.lookup(&k, !k.hash(), 200), Lookup::Miss));
        check(&s);
    }

    /// One IPv6 /64 establishing (insert, then confirm) 1 000 clients in a shard of 256 that
    /// they would fill: the /64 keeps its quota, the rest stay unconfirmed (and are evicted),
    /// a client of another /64 is established; every refusal is counted.
    #[test]
    fn one_prefix_cannot_take_the_shard() {
        let q = PrefixQuota {
            len_v4: 24,
            len_v6: 64,
            quota_v4: 256,
            quota_v6: 64,
        };
        let mut s = AffinityShard::new(256, 64).with_prefix_quota(q);
        let establish = |s: &mut AffinityShard, k: AffinityKey| -> Option<Confirm> {
            match ins(s, k, val(0, 1, 1000, false), 1) {
                InsertOutcome::Full | InsertOutcome::PrefixQuota => return None,
                _ => {}
            }
            match s.lookup(&k, k.hash(), 1) {
                Lookup::Hit(mut e) => Some(e.confirm()),
                _ => None,
            }
        };
        let mut refused = 0;
        for n in 0..1000 {
            match establish(&mut s, k6(n)) {
                Some(Confirm::Confirmed) => {}
                Some(Confirm::PrefixQuota) => refused += 1,
                other => panic!("attacker {n}: {other:?}"),
            }
            check(&s);
        }
        assert_eq!((s.confirmed_len(), refused), (64, 1000 - 64));
        let other = AffinityKey::from_v6(&Ipv6Addr::new(0x2001, 2, 0, 0x100, 0, 0, 0, 1), 500);
        assert_eq!(establish(&mut s, other), Some(Confirm::Confirmed));
        // A confirmed insert from the full /64 is refused before anything is evicted for it.
        let before = s.len();
        assert_eq!(
            ins(&mut s, k6(5000), val(0, 1, 1000, true), 1),
            InsertOutcome::PrefixQuota
        );
        assert_eq!(s.len(), before);
        let c = s.counters();
        assert_eq!(c.prefix_quota, 1000 - 64 + 1);
        assert_eq!(c.confirmed, 65);
        // An established entry leaving makes room for the next one of its prefix.
        assert!(s.remove(&k6(0), k6(0).hash()).is_some());
        assert_eq!(
            ins(&mut s, k6(5000), val(0, 1, 1000, true), 1),
            InsertOutcome::Inserted
        );
        check(&s);
    }

    #[test]
    fn inserting_confirmed_is_not_a_transition() {
        let mut s = AffinityShard::new(4, 4);
        ins(&mut s, k4(1), val(0, 0, 10, true), 0);
        assert_eq!(s.counters().confirmed, 0);
        assert_eq!((s.confirmed_len(), s.unconfirmed_len()), (1, 0));
        check(&s);
    }

    #[test]
    fn expiry_via_lookup() {
        let mut s = AffinityShard::new(16, 16);
        let k = k6(7);
        ins(&mut s, k, val(1, 50, 100, true), 50);
        assert_eq!(get(&mut s, &k, 99), Some(val(1, 50, 100, true)));
        // `expires_at <= now` is expired.
        match s.lookup(&k, k.hash(), 100) {
            Lookup::Expired(r) => assert_eq!(
                r,
                Removed {
                    key: k,
                    value: val(1, 50, 100, true),
                    reason: RemoveReason::Expired
                }
            ),
            other => panic!("{other:?}"),
        }
        assert!(matches!(s.lookup(&k, k.hash(), 100), Lookup::Miss));
        assert_eq!(s.counters().expired, 1);
        assert!(s.is_empty());
        check(&s);
    }

    #[test]
    fn remove_and_counters() {
        let mut s = AffinityShard::new(8, 8);
        let k = k4(9);
        ins(&mut s, k, val(4, 1, 10, false), 1);
        let r = s.remove(&k, k.hash()).unwrap();
        assert_eq!(r.reason, RemoveReason::Removed);
        assert_eq!(r.value, val(4, 1, 10, false));
        assert_eq!(s.remove(&k, k.hash()), None);
        assert_eq!(s.counters().removed, 1);
        assert_eq!(s.unconfirmed_len(), 0);
        check(&s);
    }

    #[test]
    fn duplicate_insert_updates_in_place_and_never_demotes() {
        let mut s = AffinityShard::new(8, 8);
        let k = k4(3);
        ins(&mut s, k, val(1, 10, 100, false), 10);
        assert_eq!(
            ins(&mut s, k, val(2, 20, 200, true), 20),
            InsertOutcome::Inserted
        );
        assert_eq!(s.peek(&k, k.hash()), Some(val(2, 20, 200, true)));
        assert_eq!(
            ins(&mut s, k, val(3, 30, 300, false), 30),
            InsertOutcome::Inserted
        );
        assert_eq!(s.peek(&k, k.hash()), Some(val(3, 30, 300, true)));
        let c = s.counters();
        assert_eq!(
            (c.inserts, c.confirmed, s.len(), s.confirmed_len()),
            (1, 1, 1, 1)
        );
        check(&s);
    }

    #[test]
    fn iter_and_retain() {
        let mut s = AffinityShard::new(32, 32);
        for n in 0..20 {
            ins(&mut s, k4(n), val((n % 4) as u16, 0, 100, n % 2 == 0), 0);
        }
        let all: HashMap<_, _> = s.iter().collect();
        assert_eq!(all.len(), 20);
        assert_eq!(all[&k4(6)], val(2, 0, 100, true));

        let mut removed = Vec::new();
        s.retain(|_, v| v.gateway != 2, |r| removed.push(r));
        let mut got: Vec<u32> = removed
            .iter()
            .map(|r| {
                assert_eq!(r.reason, RemoveReason::Removed);
                match r.key.client_ip() {
                    IpAddr::V4(a) => u32::from(a) - 0xc612_0000,
                    IpAddr::V6(_) => unreachable!(),
                }
            })
            .collect();
        got.sort_unstable();
        assert_eq!(got, [2, 6, 10, 14, 18]);
        assert_eq!(s.len(), 15);
        assert_eq!(s.counters().removed, 5);
        assert!(s.iter().all(|(_, v)| v.gateway != 2));
        check(&s);
    }

    // ---- sweep ---------------------------------------------------------------------------

    #[test]
    fn sweep_is_bounded_and_a_full_cycle_reclaims_all_expired() {
        let mut s = AffinityShard::new(100, 100);
        let mut expect = HashSet::new();
        for n in 0..60 {
            let expires = if n % 3 == 0 { 10 } else { 1000 };
            if expires == 10 {
                expect.insert(k4(n));
            }
            ins(&mut s, k4(n), val(0, 0, expires, n % 2 == 0), 0);
        }
        let mut got = HashSet::new();
        assert_eq!(s.sweep(9, 100, |r| panic!("{r:?}")), 100);
        assert!(got.is_empty(), "nothing is expired at 9");
        let mut calls = 0;
        let mut examined = 0;
        while examined < 100 {
            examined += s.sweep(10, 7, |r| {
                assert_eq!(r.reason, RemoveReason::Expired);
                assert!(got.insert(r.key));
            });
            calls += 1;
        }
        assert_eq!(calls, 15);
        assert_eq!(got, expect);
        assert_eq!(s.len(), 40);
        assert_eq!(s.counters().expired, 20);
        // One call never examines more than one cycle.
        assert_eq!(s.sweep(10_000, usize::MAX, |_| {}), 100);
        assert!(s.is_empty());
        check(&s);
    }

    // ---- unconfirmed cap and eviction ----------------------------------------------------

    #[test]
    fn unconfirmed_cap_evicts_oldest_in_creation_order() {
        let mut s = AffinityShard::new(100, 3);
        let (a, b, c, d, e, f) = (k4(1), k4(2), k4(3), k4(4), k4(5), k4(6));
        for k in [a, b, c] {
            assert_eq!(
                ins(&mut s, k, val(0, 0, 1000, false), 0),
                InsertOutcome::Inserted
            );
        }
        // A refresh does not make `a` younger.
        if let Lookup::Hit(mut en) = s.lookup(&a, a.hash(), 5) {
            en.refresh(5, 2000);
        }
        let out = ins(&mut s, d, val(0, 6, 1000, false), 6);
        assert_eq!(
            out,
            InsertOutcome::InsertedEvicting(Removed {
                key: a,
                value: val(0, 5, 2000, false),
                reason: RemoveReason::EvictedUnconfirmed
            })
        );
        // Confirming `b` takes it out of the FIFO: the cap has room again.
        if let Lookup::Hit(mut en) = s.lookup(&b, b.hash(), 7) {
            assert_eq!(en.confirm(), Confirm::Confirmed);
        }
        assert_eq!(
            ins(&mut s, e, val(0, 8, 1000, false), 8),
            InsertOutcome::Inserted
        );
        match ins(&mut s, f, val(0, 9, 1000, false), 9) {
            InsertOutcome::InsertedEvicting(r) => assert_eq!(r.key, c),
            other => panic!("{other:?}"),
        }
        // Confirmed inserts do not count against the cap.
        assert_eq!(
            ins(&mut s, k4(7), val(0, 9, 1000, true), 9),
            InsertOutcome::Inserted
        );
        assert_eq!((s.unconfirmed_len(), s.confirmed_len()), (3, 2));
        assert_eq!(s.counters().evicted_unconfirmed, 2);
        assert!(s.peek(&b, b.hash()).is_some());
        check(&s);
    }

    #[test]
    fn evicting_an_expired_head_counts_as_expired() {
        let mut s = AffinityShard::new(10, 1);
        ins(&mut s, k4(1), val(0, 0, 50, false), 0);
        match ins(&mut s, k4(2), val(0, 60, 1000, false), 60) {
            InsertOutcome::InsertedEvicting(r) => {
                assert_eq!((r.key, r.reason), (k4(1), RemoveReason::Expired));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            (s.counters().expired, s.counters().evicted_unconfirmed),
            (1, 0)
        );
        check(&s);
    }

    #[test]
    fn full_table_reclaims_expired_before_evicting_unconfirmed() {
        let mut s = AffinityShard::new(8, 8);
        for n in 0..4 {
            ins(&mut s, k4(n), val(0, 0, 10, true), 0);
        }
        for n in 4..8 {
            ins(&mut s, k4(n), val(0, 0, 1000, false), 0);
        }
        let out = ins(&mut s, k4(8), val(0, 20, 1000, false), 20);
        let InsertOutcome::InsertedEvicting(r) = out else {
            panic!("{out:?}")
        };
        assert_eq!(r.reason, RemoveReason::Expired);
        assert!(r.value.confirmed && r.value.expires_at == 10);
        // Nothing expired at 5: the oldest unconfirmed goes.
        let mut s = AffinityShard::new(8, 8);
        for n in 0..8 {
            ins(&mut s, k4(n), val(0, 0, 1000, n >= 3), 0);
        }
        let out = ins(&mut s, k4(8), val(0, 5, 1000, true), 5);
        assert_eq!(
            out,
            InsertOutcome::InsertedEvicting(Removed {
                key: k4(0),
                value: val(0, 0, 1000, false),
                reason: RemoveReason::EvictedUnconfirmed
            })
        );
        check(&s);
    }

    #[test]
    fn full_of_confirmed_returns_full_and_corrupts_nothing() {
        let mut s = AffinityShard::new(64, 64);
        for n in 0..64 {
            assert_eq!(
                ins(&mut s, k4(n), val(n as u16, 1, 1000, true), 1),
                InsertOutcome::Inserted
            );
        }
        assert_eq!(
            ins(&mut s, k4(100), val(0, 2, 1000, true), 2),
            InsertOutcome::Full
        );
        assert_eq!(
            ins(&mut s, k6(100), val(0, 2, 1000, false), 2),
            InsertOutcome::Full
        );
        assert_eq!(s.counters().insert_full, 2);
        assert_eq!(s.len(), 64);
        for n in 0..64 {
            assert_eq!(get(&mut s, &k4(n), 3), Some(val(n as u16, 1, 1000, true)));
        }
        assert!(matches!(
            s.lookup(&k4(100), k4(100).hash(), 3),
            Lookup::Miss
        ));
        check(&s);
        // Once one expires there is room again: each refused insert scans RECLAIM_SCAN more
        // slots, so the expired entry is found within capacity / RECLAIM_SCAN attempts.
        if let Lookup::Hit(mut e) = s.lookup(&k4(5), k4(5).hash(), 3) {
            e.refresh(3, 4);
        }
        let mut attempts = 0;
        let r = loop {
            attempts += 1;
            assert!(attempts <= 64 / RECLAIM_SCAN, "expired entry not reclaimed");
            match ins(&mut s, k4(100), val(0, 5, 1000, true), 5) {
                InsertOutcome::Full => continue,
                InsertOutcome::InsertedEvicting(r) => break r,
                InsertOutcome::Inserted => panic!("inserted without room"),
                InsertOutcome::PrefixQuota => panic!("no quota in effect"),
            }
        };
        assert_eq!((r.key, r.reason), (k4(5), RemoveReason::Expired));
        assert_eq!(s.len(), 64);
        check(&s);
    }

    #[test]
    fn zero_capacity_and_zero_unconfirmed() {
        let mut s = AffinityShard::new(0, 5);
        assert_eq!((s.capacity(), s.max_unconfirmed()), (0, 0));
        assert_eq!(
            ins(&mut s, k4(1), val(0, 0, 9, true), 0),
            InsertOutcome::Full
        );
        assert!(matches!(s.lookup(&k4(1), k4(1).hash(), 0), Lookup::Miss));
        assert_eq!(s.sweep(0, 100, |_| panic!()), 0);
        s.retain(|_, _| false, |_| panic!());
        s.prefetch(k4(1).hash());
        assert_eq!(s.iter().count(), 0);
        check(&s);

        let mut s = AffinityShard::new(10, 0);
        assert_eq!(
            ins(&mut s, k4(1), val(0, 0, 9, false), 0),
            InsertOutcome::Full
        );
        assert_eq!(
            ins(&mut s, k4(1), val(0, 0, 9, true), 0),
            InsertOutcome::Inserted
        );
        assert_eq!(s.counters().insert_full, 1);
        assert_eq!(AffinityShard::new(10, 99).max_unconfirmed(), 10);
        check(&s);
    }

    #[test]
    fn long_probe_chains_with_colliding_hashes() {
        // Every key has the same hash: one chain through all 10 buckets.
        const H: u64 = 0x0123_4567_89ab_cdef;
        let mut s = AffinityShard::new(50, 50);
        for n in 0..50 {
            assert_eq!(
                s.insert(k4(n), H, val(n as u16, 0, 100, true), 0),
                InsertOutcome::Inserted
            );
        }
        check(&s);
        // Five full buckets from the home one; the k-th after home holds entries that
        // skipped k buckets, so the overflow counts are 40, 30, 20, 10, 0.
        let home = s.home(hash_bits(H));
        let chain: Vec<u32> = (0..5)
            .map(|i| s.buckets[(home + i) % 10].overflow)
            .collect();
        assert_eq!(chain, [40, 30, 20, 10, 0]);
        assert_eq!(s.buckets.iter().map(|b| b.overflow).sum::<u32>(), 100);
        for n in (0..50).step_by(2) {
            assert!(s.remove(&k4(n), H).is_some());
        }
        check(&s);
        for n in 0..50 {
            let want = (n % 2 == 1).then_some(val(n as u16, 0, 100, true));
            assert_eq!(s.peek(&k4(n), H), want, "{n}");
        }
        for n in 100..125 {
            assert_eq!(
                s.insert(k4(n), H, val(1, 0, 100, true), 0),
                InsertOutcome::Inserted
            );
        }
        check(&s);
        let mut n = 0;
        assert_eq!(s.sweep(100, 50, |_| n += 1), 50);
        assert_eq!((n, s.len()), (50, 0));
        check(&s);
        assert!(s.buckets.iter().all(|b| b.overflow == 0));
    }

    #[test]
    fn prefetch_and_debug_do_not_panic() {
        let s = AffinityShard::new(1000, 10);
        for n in 0..2000 {
            s.prefetch(k4(n).hash());
        }
        for n in 0..2000 {
            s.prefetch_entry(k4(n).hash());
        }
        s.prefetch(u64::MAX);
        s.prefetch(0);
        s.prefetch_entry(u64::MAX);
        s.prefetch_entry(0);
        AffinityShard::new(0, 0).prefetch_entry(0);
        assert!(format!("{s:?}").contains("capacity: 1000"));
    }

    #[test]
    fn any_hint_finds_what_live_finds() {
        let mut s = AffinityShard::new(512, 512);
        // Some live, some expired (expires_at 100 at now 100), some never inserted.
        for n in 0..400u32 {
            let expires_at = if n % 3 == 0 { 100 } else { 1000 };
            let k = k4(n);
            let _ = s.insert(
                k,
                k.hash(),
                val((n % 4) as u16, 1, expires_at, n % 2 == 0),
                1,
            );
        }
        let slots: Vec<u32> = (0..600u32)
            .map(|n| s.prefetch_entry(k4(n).hash()))
            .collect();
        // A fresh hint is never "absent" for a present key.
        for n in 0..600u32 {
            let k = k4(n);
            if s.peek(&k, k.hash()).is_some() {
                assert_ne!(slots[n as usize], ABSENT_HINT, "client {n}");
            }
        }
        // Another key's hint, but never its "absent" (which speaks of that key only).
        let other = |n: u32| match slots[(n as usize + 1) % 600] {
            ABSENT_HINT => NO_HINT,
            h => h,
        };
        let mut hinted = 0;
        for n in 0..600u32 {
            let k = k4(n);
            let want = s.live(&k, k.hash(), 100).map(|e| (e.key(), e.value()));
            let hints = [slots[n as usize], NO_HINT, 0, 7, 511, 512, other(n)];
            for hint in hints {
                let got = s
                    .live_hinted(&k, k.hash(), 100, hint)
                    .map(|e| (e.key(), e.value()));
                assert_eq!(got, want, "client {n}, hint {hint}");
            }
            if s.peek(&k, k.hash()).is_some() && slots[n as usize] < ABSENT_HINT {
                hinted += 1;
            }
        }
        // Keys in their home bucket (nearly all) get a hint; overflowed ones are searched.
        assert!(hinted >= 360, "{hinted} of 400 present keys hinted");
        assert_eq!(s.len(), 400, "neither look-up expires anything");
    }

    #[test]
    fn counters_serialize() {
        fn is_serialize<T: serde::Serialize>(_: &T) {}
        is_serialize(&AffinityCounters::default());
    }

    // ---- flood protection ----------------------------------------------------------------

    /// xorshift64*: deterministic pseudo-random keys for the flood.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
    }

    /// `confirmed` confirmed entries, then a 10×capacity spoofed flood of unconfirmed inserts
    /// from random IPv6 sources. Returns the shard after checking every confirmed entry.
    fn flood(capacity: usize, max_unconfirmed: usize, confirmed: u32) -> AffinityShard {
        let mut s = AffinityShard::new(capacity, max_unconfirmed);
        for n in 0..confirmed {
            let k = k4(n);
            if n % 2 == 0 {
                ins(&mut s, k, val(n as u16, 1, 100_000, true), 1);
            } else {
                // The pipeline's way: unconfirmed first, confirmed by return traffic.
                ins(&mut s, k, val(n as u16, 1, 100_000, false), 1);
                let Lookup::Hit(mut e) = s.lookup(&k, k.hash(), 1) else {
                    panic!("just inserted")
                };
                assert_eq!(e.confirm(), Confirm::Confirmed);
            }
        }
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let mut now = 2;
        for i in 0..10 * capacity {
            if i % 1000 == 0 {
                now += 1;
            }
            let k = k6(rng.next());
            assert!(matches!(s.lookup(&k, k.hash(), now), Lookup::Miss));
            let out = ins(&mut s, k, val(9, now, now + 30, false), now);
            if let InsertOutcome::InsertedEvicting(r) = out {
                assert!(!r.value.confirmed, "a confirmed entry was evicted: {r:?}");
                assert_eq!(r.reason, RemoveReason::EvictedUnconfirmed);
            }
        }
        for n in 0..confirmed {
            assert_eq!(
                get(&mut s, &k4(n), now),
                Some(val(n as u16, 1, 100_000, true)),
                "confirmed entry {n} lost"
            );
        }
        assert_eq!(s.confirmed_len(), confirmed as usize);
        check(&s);
        s
    }

    #[test]
    fn flood_never_removes_confirmed_entries_cap_bound() {
        let s = flood(10_000, 1_000, 8_000);
        let c = s.counters();
        assert_eq!(s.unconfirmed_len(), 1_000);
        assert_eq!(c.inserts, 8_000 + 100_000);
        assert_eq!(c.evicted_unconfirmed, 99_000);
        assert_eq!(
            (c.insert_full, c.expired, c.removed, c.confirmed),
            (0, 0, 0, 4_000)
        );
    }

    #[test]
    fn flood_never_removes_confirmed_entries_room_bound() {
        let s = flood(10_000, 10_000, 8_000);
        let c = s.counters();
        assert_eq!(s.unconfirmed_len(), 2_000);
        assert_eq!(c.inserts, 8_000 + 100_000);
        assert_eq!(c.evicted_unconfirmed, 98_000);
        assert_eq!(c.insert_full, 0);
    }

    #[test]
    fn flood_into_a_table_full_of_confirmed_is_refused() {
        let s = flood(10_000, 1_000, 10_000);
        let c = s.counters();
        assert_eq!(s.len(), 10_000);
        assert_eq!(
            (c.inserts, c.insert_full, c.evicted_unconfirmed),
            (10_000, 100_000, 0)
        );
    }

    // ---- model check ---------------------------------------------------------------------

    #[derive(Clone, Debug)]
    enum Op {
        /// The pipeline's way: lookup, then insert on Miss/Expired.
        Insert {
            k: usize,
            gw: u16,
            ttl: u32,
            confirmed: bool,
        },
        /// Insert without a lookup (the key may be present).
        RawInsert {
            k: usize,
            gw: u16,
            ttl: u32,
            confirmed: bool,
        },
        Lookup {
            k: usize,
        },
        Refresh {
            k: usize,
            ttl: u32,
        },
        Confirm {
            k: usize,
        },
        SetGateway {
            k: usize,
            gw: u16,
        },
        Remove {
            k: usize,
        },
        Sweep {
            max: usize,
        },
        Retain {
            modulo: u16,
        },
        Tick {
            dt: u32,
        },
    }

    const POOL: usize = 40;

    fn op() -> impl Strategy<Value = Op> {
        let k = 0..POOL;
        prop_oneof![
            4 => (k.clone(), 0..4u16, 0..60u32, any::<bool>())
                .prop_map(|(k, gw, ttl, confirmed)| Op::Insert { k, gw, ttl, confirmed }),
            1 => (k.clone(), 0..4u16, 0..60u32, any::<bool>())
                .prop_map(|(k, gw, ttl, confirmed)| Op::RawInsert { k, gw, ttl, confirmed }),
            2 => k.clone().prop_map(|k| Op::Lookup { k }),
            1 => (k.clone(), 0..60u32).prop_map(|(k, ttl)| Op::Refresh { k, ttl }),
            2 => k.clone().prop_map(|k| Op::Confirm { k }),
            1 => (k.clone(), 0..4u16).prop_map(|(k, gw)| Op::SetGateway { k, gw }),
            1 => k.prop_map(|k| Op::Remove { k }),
            1 => (0..40usize).prop_map(|max| Op::Sweep { max }),
            1 => (1..5u16).prop_map(|modulo| Op::Retain { modulo }),
            2 => (0..30u32).prop_map(|dt| Op::Tick { dt }),
        ]
    }

    /// Quotas for the model: none, or small ones over the pool's one /24 and one /64 (or over
    /// single addresses: /32, /128).
    fn quota() -> impl Strategy<Value = PrefixQuota> {
        prop_oneof![
            1 => Just(PrefixQuota::NONE),
            3 => (prop_oneof![Just(24u8), Just(32)], prop_oneof![Just(64u8), Just(128)], 0..6u16, 0..6u16)
                .prop_map(|(len_v4, len_v6, quota_v4, quota_v6)| PrefixQuota {
                    len_v4,
                    len_v6,
                    quota_v4,
                    quota_v6,
                }),
        ]
    }

    /// Pool keys, half IPv4 and half IPv6, and the hash each is used with under `mode`:
    /// 0 the real hash, 1 all equal (one long chain), 2 four values, 3 one home bucket with
    /// distinct tags, 4 one tag with spread homes.
    fn pool(mode: u8) -> Vec<(AffinityKey, u64)> {
        (0..POOL)
            .map(|i| {
                let k = if i % 2 == 0 {
                    k4(i as u32)
                } else {
                    k6(i as u64)
                };
                let h = match mode {
                    0 => k.hash(),
                    1 => 0xdead_beef_0bad_f00d,
                    2 => [1u64, 2, 3, u64::MAX][i % 4].wrapping_mul(0x9e37_79b9_7f4a_7c15),
                    3 => 0x4000_0000_0000_0000 | i as u64,
                    _ => (i as u64) << 40 | 0x77,
                };
                (k, h)
            })
            .collect()
    }

    /// The reference: key → (value, creation sequence number for FIFO order).
    struct Model {
        map: HashMap<AffinityKey, (AffinityValue, u64)>,
        seq: u64,
        cap: usize,
        maxu: usize,
        /// Each key's prefix counter and quota (the shard's mapping: which prefixes share a
        /// counter is the shard's hash, the rule on top of it is what the model checks).
        prefix: HashMap<AffinityKey, (usize, u16)>,
    }

    impl Model {
        /// Whether `k`'s prefix counter holds its quota of established entries.
        fn over_quota(&self, k: &AffinityKey) -> bool {
            let (slot, quota) = self.prefix[k];
            let established = self
                .map
                .iter()
                .filter(|(o, (v, _))| v.confirmed && self.prefix[*o].0 == slot)
                .count();
            established >= usize::from(quota)
        }

        fn unconfirmed(&self) -> usize {
            self.map.values().filter(|(v, _)| !v.confirmed).count()
        }

        fn oldest_unconfirmed(&self) -> Option<AffinityKey> {
            self.map
                .iter()
                .filter(|(_, (v, _))| !v.confirmed)
                .min_by_key(|(_, (_, seq))| *seq)
                .map(|(k, _)| *k)
        }

        /// Checks `out` of inserting absent-or-present `k → v` at `now` and applies it.
        fn insert(&mut self, k: AffinityKey, v: AffinityValue, now: u32, out: InsertOutcome) {
            let over = self.over_quota(&k);
            if let Some((mv, _)) = self.map.get_mut(&k) {
                let refused = v.confirmed && !mv.confirmed && over;
                let want = if refused {
                    InsertOutcome::PrefixQuota
                } else {
                    InsertOutcome::Inserted
                };
                assert_eq!(out, want);
                *mv = AffinityValue {
                    confirmed: mv.confirmed || (v.confirmed && !refused),
                    ..v
                };
                return;
            }
            if v.confirmed && over {
                assert_eq!(out, InsertOutcome::PrefixQuota);
                return;
            }
            let cap_hit = !v.confirmed && self.unconfirmed() >= self.maxu;
            let full = self.map.len() >= self.cap;
            match out {
                InsertOutcome::Inserted => assert!(!cap_hit && !full, "inserted without room"),
                InsertOutcome::InsertedEvicting(r) => {
                    assert!(cap_hit || full, "evicted without need: {r:?}");
                    let oldest = self.oldest_unconfirmed();
                    let (mv, _) = self.map.remove(&r.key).expect("evicted an unknown key");
                    assert_eq!(mv, r.value);
                    match r.reason {
                        RemoveReason::Expired => {
                            assert!(mv.expires_at <= now);
                            if cap_hit {
                                assert_eq!(Some(r.key), oldest);
                            }
                        }
                        RemoveReason::EvictedUnconfirmed => {
                            assert!(!mv.confirmed && mv.expires_at > now);
                            assert_eq!(Some(r.key), oldest, "evicted a younger unconfirmed");
                        }
                        RemoveReason::Removed | RemoveReason::Remapped | RemoveReason::Flushed => {
                            panic!("insert reported {:?}", r.reason)
                        }
                    }
                }
                InsertOutcome::PrefixQuota => panic!("PrefixQuota with room in the prefix"),
                InsertOutcome::Full => {
                    let unc = self.unconfirmed();
                    assert!(
                        (!v.confirmed && self.maxu == 0) || (full && unc == 0),
                        "Full with {unc} evictable unconfirmed entries"
                    );
                    return;
                }
            }
            self.seq += 1;
            self.map.insert(k, (v, self.seq));
        }

        /// Checks a lookup result, applying an expiry; returns the live value on a hit.
        fn lookup(&mut self, k: &AffinityKey, now: u32, got: &Lookup<'_>) -> Option<AffinityValue> {
            match (self.map.get(k).map(|(v, _)| *v), got) {
                (None, Lookup::Miss) => None,
                (Some(v), Lookup::Hit(e)) if v.expires_at > now => {
                    assert_eq!(e.value(), v);
                    Some(v)
                }
                (Some(v), Lookup::Expired(r)) if v.expires_at <= now => {
                    assert_eq!(
                        *r,
                        Removed {
                            key: *k,
                            value: v,
                            reason: RemoveReason::Expired
                        }
                    );
                    self.map.remove(k);
                    None
                }
                (want, got) => panic!("lookup: model {want:?}, shard {got:?}"),
            }
        }

        fn set(&mut self, k: &AffinityKey, f: impl FnOnce(&mut AffinityValue)) {
            if let Some((v, _)) = self.map.get_mut(k) {
                f(v);
            }
        }
    }

    fn run_model(cap: usize, maxu: usize, mode: u8, quota: PrefixQuota, ops: &[Op]) {
        let keys = pool(mode);
        let mut s = AffinityShard::new(cap, maxu).with_prefix_quota(quota);
        let prefix = keys
            .iter()
            .map(|(k, _)| (*k, s.prefix_slot_quota(&k.client)))
            .collect();
        let mut m = Model {
            map: HashMap::new(),
            seq: 0,
            cap,
            maxu: maxu.min(cap),
            prefix,
        };
        let mut now = 1000u32;
        for op in ops {
            match *op {
                Op::Insert {
                    k,
                    gw,
                    ttl,
                    confirmed,
                }
                | Op::RawInsert {
                    k,
                    gw,
                    ttl,
                    confirmed,
                } => {
                    let (key, h) = keys[k];
                    if matches!(op, Op::Insert { .. }) {
                        let got = s.lookup(&key, h, now);
                        if m.lookup(&key, now, &got).is_some() {
                            continue;
                        }
                    }
                    let v = val(gw, now, now + ttl, confirmed);
                    let out = s.insert(key, h, v, now);
                    m.insert(key, v, now, out);
                }
                Op::Lookup { k } => {
                    let (key, h) = keys[k];
                    let got = s.lookup(&key, h, now);
                    m.lookup(&key, now, &got);
                }
                Op::Refresh { k, ttl } => {
                    let (key, h) = keys[k];
                    let mut got = s.lookup(&key, h, now);
                    if m.lookup(&key, now, &got).is_some() {
                        if let Lookup::Hit(e) = &mut got {
                            e.refresh(now, now + ttl);
                        }
                        m.set(&key, |v| {
                            v.last_seen = now;
                            v.expires_at = now + ttl;
                        });
                    }
                }
                Op::Confirm { k } => {
                    let (key, h) = keys[k];
                    let mut got = s.lookup(&key, h, now);
                    if let Some(v) = m.lookup(&key, now, &got) {
                        let want = if v.confirmed {
                            Confirm::Already
                        } else if m.over_quota(&key) {
                            Confirm::PrefixQuota
                        } else {
                            Confirm::Confirmed
                        };
                        if let Lookup::Hit(e) = &mut got {
                            assert_eq!(e.confirm(), want);
                        }
                        if want == Confirm::Confirmed {
                            m.set(&key, |v| v.confirmed = true);
                        }
                    }
                }
                Op::SetGateway { k, gw } => {
                    let (key, h) = keys[k];
                    let mut got = s.lookup(&key, h, now);
                    if m.lookup(&key, now, &got).is_some() {
                        if let Lookup::Hit(e) = &mut got {
                            e.set_gateway(gw);
                        }
                        m.set(&key, |v| v.gateway = gw);
                    }
                }
                Op::Remove { k } => {
                    let (key, h) = keys[k];
                    let got = s.remove(&key, h);
                    match m.map.remove(&key) {
                        Some((v, _)) => assert_eq!(
                            got,
                            Some(Removed {
                                key,
                                value: v,
                                reason: RemoveReason::Removed
                            })
                        ),
                        None => assert_eq!(got, None),
                    }
                }
                Op::Sweep { max } => {
                    let mut removed = Vec::new();
                    let n = s.sweep(now, max, |r| removed.push(r));
                    assert_eq!(n, max.min(cap));
                    for r in removed {
                        assert_eq!(r.reason, RemoveReason::Expired);
                        let (v, _) = m.map.remove(&r.key).expect("swept an unknown key");
                        assert_eq!(v, r.value);
                        assert!(v.expires_at <= now);
                    }
                    if max >= cap {
                        assert!(m.map.values().all(|(v, _)| v.expires_at > now));
                    }
                }
                Op::Retain { modulo } => {
                    let mut removed = HashSet::new();
                    s.retain(
                        |_, v| v.gateway % modulo != 0,
                        |r| {
                            assert_eq!(r.reason, RemoveReason::Removed);
                            assert!(removed.insert(r.key));
                        },
                    );
                    let want: HashSet<_> = m
                        .map
                        .iter()
                        .filter(|(_, (v, _))| v.gateway % modulo == 0)
                        .map(|(k, _)| *k)
                        .collect();
                    assert_eq!(removed, want);
                    m.map.retain(|k, _| !want.contains(k));
                }
                Op::Tick { dt } => now += dt,
            }
            check(&s);
            assert_eq!(s.len(), m.map.len());
            assert_eq!(s.unconfirmed_len(), m.unconfirmed());
            for (key, h) in &keys {
                assert_eq!(s.peek(key, *h), m.map.get(key).map(|(v, _)| *v), "{key:?}");
            }
            let stored: HashMap<_, _> = s.iter().collect();
            let model: HashMap<_, _> = m.map.iter().map(|(k, (v, _))| (*k, *v)).collect();
            assert_eq!(stored, model);
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn model_check(
            cap in 0..32usize,
            maxu in 0..34usize,
            mode in 0..5u8,
            quota in quota(),
            ops in proptest::collection::vec(op(), 1..150),
        ) {
            run_model(cap, maxu, mode, quota, &ops);
        }

        /// Arbitrary (even inconsistent) hashes, times and values never panic and never break
        /// the structure.
        #[test]
        fn arbitrary_calls_keep_the_structure_sound(
            cap in 0..24usize,
            maxu in 0..26usize,
            ops in proptest::collection::vec(
                (0..5u8, 0..12usize, any::<u64>(), any::<u32>(), any::<u32>(), any::<bool>()),
                1..120,
            ),
        ) {
            let keys = pool(0);
            let quota = PrefixQuota { quota_v4: 3, quota_v6: 2, ..PrefixQuota::NONE };
            let mut s = AffinityShard::new(cap, maxu).with_prefix_quota(quota);
            for (what, k, hash, now, t, flag) in ops {
                let key = keys[k].0;
                // Half the time the real hash, half an arbitrary one.
                let hash = if flag { key.hash() } else { hash };
                match what {
                    0 => {
                        s.insert(key, hash, val(t as u16, now, t, flag), now);
                    }
                    1 => {
                        if let Lookup::Hit(mut e) = s.lookup(&key, hash, now) {
                            e.refresh(now, t);
                            if flag {
                                let _ = e.confirm();
                            }
                        }
                    }
                    2 => {
                        s.remove(&key, hash);
                    }
                    3 => {
                        s.sweep(now, t as usize % 64, |_| {});
                    }
                    _ => {
                        s.prefetch(hash);
                        s.prefetch_entry(hash);
                    }
                }
                check(&s);
            }
        }
    }
}

#[cfg(test)]
mod remap_tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;

    type Table = HashMap<AffinityKey, AffinityValue>;
    type IdMap = Vec<Vec<Option<(u16, u16)>>>;

    const NOW: u32 = 10;
    const SERVICES: u16 = 4;
    const GATEWAYS: u16 = 4;

    fn rkey(client: u32, service: u16, direct: bool) -> AffinityKey {
        let k = AffinityKey::from_v4(Ipv4Addr::from(0x0a00_0000 + client), service);
        if direct {
            k.direct()
        } else {
            k
        }
    }

    fn rval(gateway: u16, confirmed: bool) -> AffinityValue {
        AffinityValue {
            gateway,
            last_seen: NOW,
            expires_at: 1_000_000,
            confirmed,
        }
    }

    /// What today's one-shot remap made of `table`: every entry translated at once.
    fn one_shot(table: &Table, remap: &Remap) -> Table {
        table
            .iter()
            .filter_map(|(k, v)| {
                let (k, gateway) = remap.apply(*k, v.gateway)?;
                Some((k, AffinityValue { gateway, ..*v }))
            })
            .collect()
    }

    fn contents(s: &AffinityShard) -> Table {
        let t: Table = s.iter().collect();
        assert_eq!(t.len(), s.iter().count(), "a key listed twice");
        t
    }

    /// A shard holding `entries` (the later of two equal keys wins), and its model.
    fn filled(entries: &[(u32, u16, bool, u16, bool)]) -> (AffinityShard, Table) {
        let mut s = AffinityShard::new(512, 512);
        let mut model = Table::new();
        for &(c, svc, d, g, confirmed) in entries {
            let (k, v) = (rkey(c, svc, d), rval(g, confirmed));
            let out = s.insert(k, k.hash(), v, NOW);
            assert_eq!(out, InsertOutcome::Inserted);
            let m = model.entry(k).or_insert(v);
            // An insert of a present key updates it and never demotes it.
            *m = AffinityValue {
                confirmed: m.confirmed || confirmed,
                ..v
            };
        }
        (s, model)
    }

    #[derive(Clone, Debug)]
    enum Op {
        /// A packet of (client, new service, direct): settle, then look up.
        Lookup(u32, u16, bool),
        /// A new client of (client, new service, direct) on a gateway, where none is found.
        Insert(u32, u16, bool, u16),
        /// One slice of the remap with this budget.
        Step(usize),
        /// The operator's `show affinity CLIENT`.
        ShowAll,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (0..48u32, 0..SERVICES, any::<bool>()).prop_map(|(c, s, d)| Op::Lookup(c, s, d)),
            2 => (0..48u32, 0..SERVICES, any::<bool>(), 0..GATEWAYS)
                .prop_map(|(c, s, d, g)| Op::Insert(c, s, d, g)),
            3 => (1..48usize).prop_map(Op::Step),
            1 => Just(Op::ShowAll),
        ]
    }

    fn entries() -> impl Strategy<Value = Vec<(u32, u16, bool, u16, bool)>> {
        proptest::collection::vec(
            (
                0..48u32,
                0..SERVICES,
                any::<bool>(),
                0..GATEWAYS,
                any::<bool>(),
            ),
            0..160,
        )
    }

    /// A reload's map: services renumbered (a permutation, some gone), each service's
    /// gateways renumbered or gone independently.
    fn id_map() -> impl Strategy<Value = IdMap> {
        let order = Just((0..SERVICES).collect::<Vec<u16>>()).prop_shuffle();
        let kept = proptest::collection::vec(proptest::bool::weighted(0.8), SERVICES as usize);
        let gateways = proptest::collection::vec(
            proptest::collection::vec(proptest::option::weighted(0.8, 0..GATEWAYS), 4),
            SERVICES as usize,
        );
        (order, kept, gateways).prop_map(|(order, kept, gateways)| {
            (0..SERVICES as usize)
                .map(|s| {
                    gateways[s]
                        .iter()
                        .map(|g| g.filter(|_| kept[s]).map(|g| (order[s], g)))
                        .collect()
                })
                .collect()
        })
    }

    /// Runs `ops` over a shard filled with `entries` while `remap` runs, against the model
    /// of a one-shot remap; returns what was reported removed.
    fn run(
        entries: &[(u32, u16, bool, u16, bool)],
        remap: Remap,
        ops: &[Op],
    ) -> Result<Vec<Removed>, TestCaseError> {
        let (mut s, before) = filled(entries);
        let mut model = one_shot(&before, &remap);
        let mut removed = Vec::new();
        prop_assert!(s.begin_remap(remap, |r| removed.push(r)).is_none());
        prop_assert_eq!(&contents(&s), &model, "at once, readers see the new ids");
        let mut done = None;
        for op in ops {
            match *op {
                Op::Lookup(c, svc, d) => {
                    let k = rkey(c, svc, d);
                    s.settle(&k, |r| removed.push(r));
                    prop_assert_eq!(s.peek(&k, k.hash()), model.get(&k).copied(), "{:?}", k);
                    let live = s.live(&k, k.hash(), NOW).map(|e| e.value());
                    prop_assert_eq!(live, model.get(&k).copied());
                }
                Op::Insert(c, svc, d, g) => {
                    let k = rkey(c, svc, d);
                    s.settle(&k, |r| removed.push(r));
                    if s.peek(&k, k.hash()).is_none() {
                        let out = s.insert(k, k.hash(), rval(g, false), NOW);
                        prop_assert_eq!(out, InsertOutcome::Inserted);
                        model.insert(k, rval(g, false));
                    }
                }
                Op::Step(budget) => {
                    if let Some(p) = s.remap_step(budget, |r| removed.push(r)) {
                        prop_assert!(done.is_none(), "completed twice");
                        done = Some(p);
                    }
                }
                Op::ShowAll => prop_assert_eq!(&contents(&s), &model),
            }
        }
        while s.remapping() {
            if let Some(p) = s.remap_step(7, |r| removed.push(r)) {
                done = Some(p);
            }
        }
        let p = done.expect("the remap completed");
        prop_assert_eq!(p.left, 0);
        prop_assert_eq!(p.removed, removed.len());
        prop_assert_eq!(&contents(&s), &model, "the final table is the one-shot one");
        prop_assert_eq!(s.len(), model.len());
        prop_assert!(s.entries.iter().all(|e| !e.occupied() || !e.stale(s.epoch)));
        super::tests::check(&s);
        Ok(removed)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn an_incremental_remap_ends_where_a_one_shot_one_does(
            entries in entries(),
            map in id_map(),
            ops in proptest::collection::vec(op(), 0..80),
        ) {
            let remap = Remap::new(&map);
            let (_, before) = filled(&entries);
            let gone = before.len() - one_shot(&before, &remap).len();
            let removed = run(&entries, remap, &ops)?;
            prop_assert_eq!(removed.len(), gone);
            prop_assert!(removed.iter().all(|r| r.reason == RemoveReason::Remapped));
        }

        #[test]
        fn a_flush_over_many_steps_removes_what_was_there_and_nothing_newer(
            entries in entries(),
            ops in proptest::collection::vec(op(), 0..80),
        ) {
            let (_, before) = filled(&entries);
            let removed = run(&entries, Remap::flush(), &ops)?;
            prop_assert_eq!(removed.len(), before.len());
            prop_assert!(removed.iter().all(|r| r.reason == RemoveReason::Flushed));
        }

        #[test]
        fn remaps_in_a_row_compose(
            entries in entries(),
            a in id_map(),
            b in id_map(),
            steps in 0..6usize,
        ) {
            let (mut s, before) = filled(&entries);
            let (ra, rb) = (Remap::new(&a), Remap::new(&b));
            let model = one_shot(&one_shot(&before, &ra), &rb);
            let _ = s.begin_remap(ra, |_| {});
            for _ in 0..steps {
                let _ = s.remap_step(16, |_| {});
            }
            // The first is completed (forced) when the second begins, unless it was done.
            let _ = s.begin_remap(rb, |_| {});
            prop_assert_eq!(&contents(&s), &model);
            while s.remapping() {
                let _ = s.remap_step(16, |_| {});
            }
            prop_assert_eq!(&contents(&s), &model);
            super::tests::check(&s);
        }
    }

    #[test]
    fn a_step_is_bounded_by_its_budget() {
        let entries: Vec<_> = (0..400).map(|c| (c, 0, false, 0, true)).collect();
        let (mut s, _) = filled(&entries);
        // Service 0 becomes 1: every entry is re-indexed.
        let map = vec![vec![Some((1, 0))]];
        let _ = s.begin_remap(Remap::new(&map), |_| {});
        let _ = s.remap_step(4 * (1 + REMAP_MOVE_COST), |_| {});
        let p = s.remap_progress().unwrap();
        assert!(
            p.moved <= 4 && p.visited <= 4 * (1 + REMAP_MOVE_COST),
            "{p:?}"
        );
        // Gateway ids only: translated in place, cheap.
        let mut t = filled(&entries).0;
        let map = vec![vec![Some((0, 1))]];
        let _ = t.begin_remap(Remap::new(&map), |_| {});
        let _ = t.remap_step(64, |_| {});
        assert!(t.remap_progress().unwrap().moved >= 20);
    }

    #[test]
    fn a_remap_of_an_empty_shard_is_done_at_the_first_step() {
        let mut s = AffinityShard::new(1 << 16, 1 << 16);
        let _ = s.begin_remap(Remap::flush(), |_| {});
        assert!(s.remap_step(1, |_| {}).is_some());
        assert!(!s.remapping());
    }
}
