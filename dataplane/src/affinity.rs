//! Per-core client → gateway affinity table.
//!
//! Each poll-mode worker owns one [`AffinityShard`]: no locks, no atomics. An entry maps
//! (client address, service) to the gateway chosen for that client and lives until it has been
//! idle for the service's timeout (the caller computes `expires_at`).
//!
//! # Layout
//!
//! Three arrays, allocated (and written, so every page is faulted in) by [`AffinityShard::new`]
//! and never resized:
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
//! Per unit of capacity: 32 (entry) + 8 (links) + 64 / 5 (index share) = 52.8 bytes, plus a
//! fixed ~200 bytes for the shard itself. At full capacity the index is half full, each
//! bucket's occupancy is about Poisson(5) and only ~1.4% of buckets overflow, so a lookup
//! reads one bucket line (rarely two) and one entry line. A 10,000,000-entry shard takes
//! about 528 MB.
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
//! Why a confirmed live entry can never be evicted: the only removals nobody asked for
//! (`remove`/`retain`) are of expired entries or of the FIFO head, and the FIFO holds only
//! unconfirmed entries: `confirm` unlinks an entry, confirmed inserts never enter it, and no path
//! demotes a confirmed entry (an insert that finds its key present keeps it confirmed). With no
//! evictable entry the insert fails with [`InsertOutcome::Full`].

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
    /// Service id.
    pub service: u16,
}

/// Odd multipliers for [`AffinityKey::hash`] (from the golden ratio, pi and e).
const HASH_K1: u64 = 0x9e37_79b9_7f4a_7c15;
const HASH_K2: u64 = 0xc2b2_ae3d_27d4_eb4f;
const HASH_K3: u64 = 0x1656_67b1_9e37_79f9;
/// The fixed seed: hashes are identical across runs, cores and hosts.
const HASH_SEED: u64 = 0x243f_6a88_85a3_08d3;

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

    /// A fast, well-mixed, deterministic 64-bit hash of the key (fixed seed), used to index the
    /// table. Pass it to [`AffinityShard::prefetch`], `lookup`, `insert` and `remove`.
    ///
    /// The three words are multiplied independently (they pipeline) and combined, then the
    /// murmur3 finaliser avalanches every input bit into every output bit. For fixed other
    /// fields, each field maps bijectively onto the result, so e.g. no two IPv4 clients of one
    /// service ever share a hash. It is not keyed: see the module docs' limits.
    #[inline]
    pub fn hash(&self) -> u64 {
        let mut lo = [0u8; 8];
        let mut hi = [0u8; 8];
        lo.copy_from_slice(&self.client[..8]);
        hi.copy_from_slice(&self.client[8..]);
        let a = u64::from_le_bytes(lo);
        let b = u64::from_le_bytes(hi);
        let x = HASH_SEED
            ^ a.wrapping_mul(HASH_K1)
            ^ b.wrapping_mul(HASH_K2).rotate_left(32)
            ^ u64::from(self.service).wrapping_mul(HASH_K3);
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
    /// Inserts refused with [`InsertOutcome::Full`].
    pub insert_full: u64,
    /// Entries removed by `remove` or `retain`.
    pub removed: u64,
}

/// "No slot": empty index lane, end of a list.
const NIL: u32 = u32::MAX;
/// Lanes per index bucket: 10 × (2 + 4) bytes + 4-byte overflow count = one cache line.
const LANES: usize = 10;
/// Buckets are sized for this many entries each at full capacity (load factor 0.5).
const ENTRIES_PER_BUCKET: usize = 5;
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

    #[inline]
    fn matches(&self, key: &AffinityKey) -> bool {
        self.client == key.client && self.service == key.service
    }

    #[inline]
    fn key(&self) -> AffinityKey {
        AffinityKey {
            client: self.client,
            service: self.service,
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
fn tag_of(hash: u64) -> u16 {
    hash as u16
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

    /// Marks the entry confirmed (return traffic seen), which makes it unevictable while live.
    /// Returns true if it was unconfirmed (and counts the transition).
    #[inline]
    pub fn confirm(&mut self) -> bool {
        self.shard.confirm_slot(self.idx)
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
    /// are `u32`, and at ~53 B/entry this is already over 100 GiB).
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
        let capacity = capacity.min(Self::MAX_CAPACITY);
        let nbuckets = Self::buckets_for(capacity);

        let mut entries = Vec::new();
        entries.try_reserve_exact(capacity)?;
        entries.resize(capacity, EMPTY_ENTRY);

        let mut links = Vec::new();
        links.try_reserve_exact(capacity)?;
        // Every slot starts on the free list, in slot order; `capacity <= 2^31` fits `u32`.
        links.extend((1..=capacity).map(|next| Link {
            prev: NIL,
            next: if next == capacity { NIL } else { next as u32 },
        }));

        let mut buckets = Vec::new();
        buckets.try_reserve_exact(nbuckets)?;
        buckets.resize(nbuckets, EMPTY_BUCKET);

        Ok(Self {
            entries: entries.into_boxed_slice(),
            links: links.into_boxed_slice(),
            buckets: buckets.into_boxed_slice(),
            free_head: if capacity == 0 { NIL } else { 0 },
            fifo_head: NIL,
            fifo_tail: NIL,
            confirmed_len: 0,
            unconfirmed_len: 0,
            max_unconfirmed: max_unconfirmed.min(capacity),
            cursor: 0,
            counters: AffinityCounters::default(),
        })
    }

    fn buckets_for(capacity: usize) -> usize {
        capacity.div_ceil(ENTRIES_PER_BUCKET).max(1)
    }

    /// The memory [`Self::new`]`(capacity, _)` would use, in bytes, without allocating it (for
    /// sizing checks in the control plane).
    pub fn memory_bytes_for(capacity: usize) -> usize {
        let capacity = capacity.min(Self::MAX_CAPACITY);
        core::mem::size_of::<Self>()
            + capacity * (core::mem::size_of::<Entry>() + core::mem::size_of::<Link>())
            + Self::buckets_for(capacity) * core::mem::size_of::<Bucket>()
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

    /// Bytes used by the shard: the struct and its three arrays.
    pub fn memory_bytes(&self) -> usize {
        core::mem::size_of::<Self>()
            + core::mem::size_of_val::<[Entry]>(&self.entries)
            + core::mem::size_of_val::<[Link]>(&self.links)
            + core::mem::size_of_val::<[Bucket]>(&self.buckets)
    }

    /// A snapshot of the counters.
    #[inline]
    pub fn counters(&self) -> AffinityCounters {
        self.counters
    }

    /// Prefetches the home index bucket of `hash`, so that a burst can issue all its misses
    /// before the first lookup. A hint only: no effect on results.
    #[inline]
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

        // One probe: look for the key along its chain and for the first free lane.
        let mut free_lane = None;
        let mut in_chain = true;
        let mut b = home;
        for _ in 0..nb {
            let bucket = &self.buckets[b];
            for (lane, (&slot, &t)) in bucket.slots.iter().zip(&bucket.tags).enumerate() {
                if slot == NIL {
                    if free_lane.is_none() {
                        free_lane = Some((b, lane));
                    }
                } else if in_chain && t == tag && self.entries[slot as usize].matches(&key) {
                    self.update_in_place(slot, value);
                    return InsertOutcome::Inserted;
                }
            }
            in_chain &= bucket.overflow != 0;
            if !in_chain && free_lane.is_some() {
                break;
            }
            b = self.next_bucket(b);
        }
        // The index has twice as many lanes as the slab has slots, so this cannot happen.
        let Some((free_bucket, free_lane)) = free_lane else {
            self.counters.insert_full += 1;
            return InsertOutcome::Full;
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
            service: key.service,
            gateway: value.gateway,
            last_seen: value.last_seen,
            expires_at: value.expires_at,
            meta: (hash_bits(hash) << 2) | OCCUPIED | confirmed,
        };
        if value.confirmed {
            self.confirmed_len += 1;
        } else {
            self.fifo_push_back(idx);
            self.unconfirmed_len += 1;
        }

        let bucket = &mut self.buckets[free_bucket];
        bucket.tags[free_lane] = tag;
        bucket.slots[free_lane] = idx;
        let mut b = home;
        for _ in 0..nb {
            if b == free_bucket {
                break;
            }
            self.buckets[b].overflow += 1;
            b = self.next_bucket(b);
        }

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
    pub fn sweep(&mut self, now: u32, max_slots: usize, mut on_removed: impl FnMut(Removed)) -> usize {
        let n = max_slots.min(self.capacity());
        for _ in 0..n {
            let idx = self.advance_cursor();
            let e = &self.entries[idx as usize];
            if e.occupied() && e.expires_at <= now {
                on_removed(self.remove_slot(idx, None, RemoveReason::Expired));
            }
        }
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
            if e.occupied() && !f(&e.key(), &e.value()) {
                // `idx < capacity <= 2^31`.
                on_removed(self.remove_slot(idx as u32, None, RemoveReason::Removed));
            }
        }
    }

    /// All entries, in slab order, including expired ones not reclaimed yet (compare
    /// `expires_at` with the clock to skip those). O(capacity).
    pub fn iter(&self) -> impl Iterator<Item = (AffinityKey, AffinityValue)> + '_ {
        self.entries
            .iter()
            .filter(|e| e.occupied())
            .map(|e| (e.key(), e.value()))
    }

    // ---- internals -----------------------------------------------------------------------

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
        let tag = tag_of(hash);
        let mut b = self.home(hash_bits(hash));
        for _ in 0..self.buckets.len() {
            let bucket = &self.buckets[b];
            for (lane, (&slot, &t)) in bucket.slots.iter().zip(&bucket.tags).enumerate() {
                if t == tag && slot != NIL && self.entries[slot as usize].matches(key) {
                    return Some((b, lane, slot));
                }
            }
            if bucket.overflow == 0 {
                return None;
            }
            b = self.next_bucket(b);
        }
        None
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
        if e.confirmed() {
            self.confirmed_len = self.confirmed_len.saturating_sub(1);
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
            RemoveReason::Removed => self.counters.removed += 1,
        }
        Removed {
            key: e.key(),
            value: e.value(),
            reason,
        }
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
    fn update_in_place(&mut self, idx: u32, value: AffinityValue) {
        let e = &mut self.entries[idx as usize];
        e.gateway = value.gateway;
        e.last_seen = value.last_seen;
        e.expires_at = value.expires_at;
        if value.confirmed {
            self.confirm_slot(idx);
        }
    }

    /// Confirms slab slot `idx`; true if it was unconfirmed.
    fn confirm_slot(&mut self, idx: u32) -> bool {
        let e = &mut self.entries[idx as usize];
        if e.confirmed() {
            return false;
        }
        e.meta |= CONFIRMED;
        self.fifo_unlink(idx);
        self.unconfirmed_len = self.unconfirmed_len.saturating_sub(1);
        self.confirmed_len += 1;
        self.counters.confirmed += 1;
        true
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
