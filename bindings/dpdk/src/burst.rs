//! A fixed-size batch of owned mbufs, without allocation.

use std::fmt;
use std::mem::MaybeUninit;
use std::ptr;

use dpdk_sys::rte_mbuf;

use crate::mbuf::Mbuf;
use crate::mempool::Mempool;

/// How many mbufs a [`Burst`] holds: DPDK's customary burst size.
pub const BURST_SIZE: usize = 32;

/// Up to [`BURST_SIZE`] owned mbufs, in order; dropping the burst frees those it still holds.
///
/// RX calls append to it; TX and ring enqueue calls take mbufs from its front and leave
/// those not accepted in it, still owned, so a partial transmit neither leaks nor
/// double-frees. A fixed array: no allocation.
pub struct Burst {
    /// Invariant: `mbufs[..len]` are initialised and owned; the rest are not.
    mbufs: [MaybeUninit<Mbuf>; BURST_SIZE],
    len: usize,
}

// Mbuf is pointer-sized and transparent, so the array is exactly DPDK's `struct rte_mbuf *[]`.
const _: () = assert!(std::mem::size_of::<Mbuf>() == std::mem::size_of::<*mut rte_mbuf>());

// DPDK's burst calls count mbufs in a u16 (ethdev) or an unsigned int (mempool, ring).
const _: () = assert!(BURST_SIZE <= u16::MAX as usize);

/// A count of mbufs of one burst (at most [`BURST_SIZE`]) as DPDK's burst calls take it.
///
/// Per-packet path: no check in release builds, the bound being the callers' invariant.
#[inline]
#[allow(clippy::cast_possible_truncation)] // n <= BURST_SIZE <= u16::MAX (asserted above)
pub(crate) fn burst_count(n: usize) -> u16 {
    debug_assert!(n <= BURST_SIZE, "{n} mbufs in a burst of {BURST_SIZE}");
    n as u16
}

impl Burst {
    /// An empty burst.
    pub const fn new() -> Self {
        Burst {
            mbufs: [const { MaybeUninit::uninit() }; BURST_SIZE],
            len: 0,
        }
    }

    /// Mbufs held.
    #[inline]
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when it holds none.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// True when it holds [`BURST_SIZE`].
    #[inline]
    pub fn is_full(&self) -> bool {
        self.len == BURST_SIZE
    }

    /// Free slots.
    #[inline]
    pub fn spare(&self) -> usize {
        BURST_SIZE - self.len
    }

    /// Appends `m`; gives it back when the burst is full.
    #[inline]
    pub fn push(&mut self, m: Mbuf) -> Result<(), Mbuf> {
        match self.mbufs.get_mut(self.len) {
            Some(slot) => {
                slot.write(m);
                self.len += 1;
                Ok(())
            }
            None => Err(m),
        }
    }

    /// Removes and returns the last mbuf.
    #[inline]
    pub fn pop(&mut self) -> Option<Mbuf> {
        let last = self.len.checked_sub(1)?;
        self.len = last;
        // SAFETY: slot `last` was initialised (it was below len) and is now outside the
        // initialised prefix, so it is read exactly once.
        Some(unsafe { self.mbufs.get_unchecked(last).assume_init_read() })
    }

    /// The mbufs, in order.
    #[inline]
    pub fn as_slice(&self) -> &[Mbuf] {
        // SAFETY: the first len slots are initialised; MaybeUninit<Mbuf> has Mbuf's layout.
        unsafe { std::slice::from_raw_parts(self.mbufs.as_ptr().cast::<Mbuf>(), self.len) }
    }

    /// The mbufs, in order, mutably.
    #[inline]
    pub fn as_mut_slice(&mut self) -> &mut [Mbuf] {
        // SAFETY: as in as_slice; &mut self makes the access exclusive.
        unsafe { std::slice::from_raw_parts_mut(self.mbufs.as_mut_ptr().cast::<Mbuf>(), self.len) }
    }

    /// Iterates over the mbufs.
    #[inline]
    pub fn iter(&self) -> std::slice::Iter<'_, Mbuf> {
        self.as_slice().iter()
    }

    /// Iterates mutably over the mbufs (e.g. as [`frame::Frame`]s).
    #[inline]
    pub fn iter_mut(&mut self) -> std::slice::IterMut<'_, Mbuf> {
        self.as_mut_slice().iter_mut()
    }

    /// Takes every mbuf out, front to back; those the iterator has not yielded when it is
    /// dropped are freed. The burst is empty afterwards.
    #[inline]
    pub fn drain(&mut self) -> Drain<'_> {
        let end = self.len;
        // Empty first: if the Drain is leaked, the mbufs leak rather than being freed twice.
        self.len = 0;
        Drain {
            burst: self,
            next: 0,
            end,
        }
    }

    /// Keeps the mbufs for which `keep` returns true, in order, and frees the others.
    /// (Should `keep` panic, the mbufs not yet decided on are leaked, never freed twice.)
    pub fn retain(&mut self, mut keep: impl FnMut(&mut Mbuf) -> bool) {
        let len = self.len;
        self.len = 0;
        let base = self.mbufs.as_mut_ptr().cast::<Mbuf>();
        let mut kept = 0;
        for i in 0..len {
            // SAFETY: i < len, so slot i is initialised; slots below `kept` (<= i) hold the
            // kept mbufs, slots kept..i are moved out or freed.
            unsafe {
                let cur = base.add(i);
                if keep(&mut *cur) {
                    if kept != i {
                        ptr::copy_nonoverlapping(cur, base.add(kept), 1);
                    }
                    kept += 1;
                } else {
                    ptr::drop_in_place(cur);
                }
            }
        }
        self.len = kept;
    }

    /// Frees every mbuf (in one bulk call).
    pub fn clear(&mut self) {
        let n = self.len;
        if n == 0 {
            return;
        }
        self.len = 0;
        // SAFETY: the first n slots held owned mbufs, now outside the initialised prefix, so
        // they are freed exactly once; the cast matches layouts (Mbuf is a transparent
        // pointer). n = len <= BURST_SIZE.
        unsafe { dpdk_sys::vpnlb_pktmbuf_free_bulk(self.raw_base(), u32::from(burst_count(n))) }
    }

    /// Fills the burst with `n` new empty mbufs from `pool`, all or none: false (and nothing
    /// taken) when the pool has fewer free or the burst has fewer than `n` spare slots.
    pub fn alloc_from(&mut self, pool: &Mempool, n: usize) -> bool {
        if n > self.spare() {
            return false;
        }
        if n == 0 {
            return true;
        }
        // SAFETY: the n slots from len on are spare; alloc_bulk fills all n or none (returns
        // non-zero then). n <= spare <= BURST_SIZE.
        let ret = unsafe {
            dpdk_sys::vpnlb_pktmbuf_alloc_bulk(
                pool.as_ptr(),
                self.raw_spare(),
                u32::from(burst_count(n)),
            )
        };
        if ret != 0 {
            return false;
        }
        self.len += n;
        true
    }

    /// The slots as DPDK's `struct rte_mbuf **`, from the front.
    #[inline]
    pub(crate) fn raw_base(&mut self) -> *mut *mut rte_mbuf {
        self.mbufs.as_mut_ptr().cast()
    }

    /// The first spare slot as `struct rte_mbuf **`; [`Burst::spare`] slots follow.
    #[inline]
    pub(crate) fn raw_spare(&mut self) -> *mut *mut rte_mbuf {
        // SAFETY: len <= BURST_SIZE, so the result is in bounds or one past the end.
        unsafe { self.raw_base().add(self.len) }
    }

    /// Records that DPDK wrote `n` owned mbufs into the spare slots.
    ///
    /// # Safety
    /// `n <= self.spare()`, and the first `n` spare slots now hold valid mbufs this burst owns.
    #[inline]
    pub(crate) unsafe fn assume_appended(&mut self, n: usize) {
        debug_assert!(n <= self.spare());
        self.len += n;
    }

    /// Removes the first `n` mbufs WITHOUT freeing them (ownership went to DPDK: a NIC or a
    /// ring took them) and moves the rest to the front.
    ///
    /// # Safety
    /// `n <= self.len()`, and the first `n` mbufs are no longer this burst's to free.
    #[inline]
    pub(crate) unsafe fn forget_front(&mut self, n: usize) {
        debug_assert!(n <= self.len);
        let rest = self.len - n;
        let base = self.mbufs.as_mut_ptr();
        // SAFETY: by the caller's contract slots n..len are initialised; moving them to
        // 0..rest (an overlapping copy) keeps each mbuf owned once.
        unsafe { ptr::copy(base.add(n), base, rest) };
        self.len = rest;
    }
}

impl Default for Burst {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for Burst {
    fn drop(&mut self) {
        self.clear();
    }
}

impl fmt::Debug for Burst {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.as_slice()).finish()
    }
}

impl<'a> IntoIterator for &'a Burst {
    type Item = &'a Mbuf;
    type IntoIter = std::slice::Iter<'a, Mbuf>;
    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

impl<'a> IntoIterator for &'a mut Burst {
    type Item = &'a mut Mbuf;
    type IntoIter = std::slice::IterMut<'a, Mbuf>;
    fn into_iter(self) -> Self::IntoIter {
        self.iter_mut()
    }
}

/// Mbufs to free, collected and given back to their pools together, in one
/// `rte_pktmbuf_free_bulk` call per batch instead of one free call per mbuf (a worker drops
/// into it over a burst, then frees once). Taking one never fails: when the batch is full, it
/// frees what it holds first. Dropping the batch frees the rest.
#[derive(Debug, Default)]
pub struct FreeBatch {
    mbufs: Burst,
}

impl FreeBatch {
    /// An empty batch.
    pub const fn new() -> Self {
        FreeBatch {
            mbufs: Burst::new(),
        }
    }

    /// Takes `m` to be freed with the others.
    #[inline]
    pub fn add(&mut self, m: Mbuf) {
        if self.mbufs.is_full() {
            self.mbufs.clear();
        }
        // Not full any more, so this cannot give it back; were it to, dropping frees it.
        if let Err(m) = self.mbufs.push(m) {
            drop(m);
        }
    }

    /// Mbufs waiting to be freed.
    #[inline]
    pub fn len(&self) -> usize {
        self.mbufs.len()
    }

    /// True when none is waiting.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.mbufs.is_empty()
    }

    /// Frees every mbuf taken so far, in one bulk call (none when the batch is empty).
    #[inline]
    pub fn free(&mut self) {
        self.mbufs.clear();
    }
}

/// The iterator of [`Burst::drain`].
pub struct Drain<'a> {
    burst: &'a mut Burst,
    next: usize,
    end: usize,
}

impl Iterator for Drain<'_> {
    type Item = Mbuf;

    #[inline]
    fn next(&mut self) -> Option<Mbuf> {
        if self.next >= self.end {
            return None;
        }
        let i = self.next;
        self.next += 1;
        // SAFETY: slots next..end are initialised and still owned by the Drain; slot i is
        // read once and then left behind.
        Some(unsafe { self.burst.mbufs.get_unchecked(i).assume_init_read() })
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = self.end - self.next;
        (n, Some(n))
    }
}

impl ExactSizeIterator for Drain<'_> {}

impl Drop for Drain<'_> {
    fn drop(&mut self) {
        for i in self.next..self.end {
            // SAFETY: slots next..end were not yielded, so each is owned here and dropped
            // (freed) exactly once.
            unsafe { self.burst.mbufs.get_unchecked_mut(i).assume_init_drop() };
        }
    }
}
