//! Lock-free rings of mbufs (`rte_ring`), for hand-off between workers.
//!
//! A [`Ring`] used from one thread takes `&mut self`. To share it, [`Ring::split`] it into a
//! [`RingProducer`] and a [`RingConsumer`], each `Send`. A multi-producer ring's producer can
//! be cloned ([`RingProducer::try_clone`]); a single-producer ring's cannot, so the
//! single-producer promise made to DPDK is kept by the type system (likewise for consumers).

use std::ffi::{c_int, c_uint, c_void, CString};
use std::ptr::NonNull;
use std::sync::Arc;

use dpdk_sys::rte_ring;

use crate::burst::{burst_count, Burst, BURST_SIZE};
use crate::eal::Eal;
use crate::error::{DpdkError, Result};
use crate::mbuf::Mbuf;

/// The ring itself; freed, with any mbufs still in it, when the last handle goes.
#[derive(Debug)]
struct RingInner {
    ptr: NonNull<rte_ring>,
    single_producer: bool,
    single_consumer: bool,
    capacity: u32,
}

// SAFETY: rte_ring is designed for concurrent use; concurrent enqueues (dequeues) happen only
// through producer (consumer) handles, of which a single-producer (single-consumer) ring has
// exactly one, each used through &mut self.
unsafe impl Send for RingInner {}
// SAFETY: as for Send; shared access (&RingInner) only reads counts.
unsafe impl Sync for RingInner {}

impl RingInner {
    fn count(&self) -> u32 {
        // SAFETY: the ring is valid while self exists; count only reads indices.
        unsafe { dpdk_sys::vpnlb_ring_count(self.ptr.as_ptr()) }
    }

    /// # Safety
    /// The caller is a legitimate producer: the only one of a single-producer ring.
    unsafe fn enqueue(&self, burst: &mut Burst) -> usize {
        let n = burst.len();
        if n == 0 {
            return 0;
        }
        // SAFETY: the first n slots hold owned mbuf pointers; the ring takes the first `done`
        // of them; the caller guarantees producer exclusivity where the ring needs it.
        unsafe {
            let table = burst.raw_base().cast::<*mut c_void>();
            let done = dpdk_sys::vpnlb_ring_enqueue_burst(
                self.ptr.as_ptr(),
                table,
                c_uint::from(burst_count(n)),
                std::ptr::null_mut(),
            );
            let done = (done as usize).min(n);
            burst.forget_front(done);
            done
        }
    }

    /// # Safety
    /// The caller is a legitimate consumer: the only one of a single-consumer ring.
    unsafe fn dequeue(&self, burst: &mut Burst) -> usize {
        let spare = burst.spare();
        if spare == 0 {
            return 0;
        }
        // SAFETY: the spare slots take `spare` pointers; every object in this ring is an owned
        // mbuf put there by enqueue, now owned by the burst; consumer exclusivity is the
        // caller's promise.
        unsafe {
            let table = burst.raw_spare().cast::<*mut c_void>();
            let got = dpdk_sys::vpnlb_ring_dequeue_burst(
                self.ptr.as_ptr(),
                table,
                c_uint::from(burst_count(spare)),
                std::ptr::null_mut(),
            );
            let got = (got as usize).min(spare);
            burst.assume_appended(got);
            got
        }
    }
}

impl Drop for RingInner {
    fn drop(&mut self) {
        // The last handle: nobody else can enqueue or dequeue, so drain and free the rest.
        let mut b = Burst::new();
        loop {
            // SAFETY: exclusive access (last owner).
            let got = unsafe { self.dequeue(&mut b) };
            b.clear();
            if got < BURST_SIZE {
                break;
            }
        }
        // SAFETY: the ring is empty and no handle refers to it any more.
        unsafe { dpdk_sys::rte_ring_free(self.ptr.as_ptr()) }
    }
}

/// An `rte_ring` of mbufs, used from one thread (see [`Ring::split`] to share it).
#[derive(Debug)]
pub struct Ring {
    inner: Arc<RingInner>,
}

impl Ring {
    /// Creates a ring holding up to `size` mbufs (exactly: any size from 1 up), named `name`
    /// (unique, shorter than 29 bytes), on NUMA `socket` (or [`crate::SOCKET_ANY`]). With
    /// `single_producer` / `single_consumer`, DPDK uses the cheaper single-thread paths on that
    /// side, and the split handles of that side cannot be cloned.
    pub fn new(
        name: &str,
        size: u32,
        socket: i32,
        single_producer: bool,
        single_consumer: bool,
    ) -> Result<Ring> {
        Eal::require()?;
        if name.len() >= dpdk_sys::VPNLB_RING_NAMESIZE as usize {
            return Err(DpdkError::invalid(
                "ring name",
                format!("{name:?} is too long"),
            ));
        }
        if size == 0 {
            return Err(DpdkError::invalid("ring size", "0"));
        }
        let cname = CString::new(name)
            .map_err(|_| DpdkError::invalid("ring name", format!("{name:?} contains NUL")))?;
        let mut flags = dpdk_sys::VPNLB_RING_F_EXACT_SZ;
        if single_producer {
            flags |= dpdk_sys::VPNLB_RING_F_SP_ENQ;
        }
        if single_consumer {
            flags |= dpdk_sys::VPNLB_RING_F_SC_DEQ;
        }
        // SAFETY: the EAL is initialised; cname is valid for the call (DPDK copies it).
        let ptr =
            unsafe { dpdk_sys::rte_ring_create(cname.as_ptr(), size, c_int::from(socket), flags) };
        let ptr = NonNull::new(ptr).ok_or_else(|| DpdkError::last("rte_ring_create"))?;
        Ok(Ring {
            inner: Arc::new(RingInner {
                ptr,
                single_producer,
                single_consumer,
                capacity: size,
            }),
        })
    }

    /// Moves mbufs from the front of `burst` into the ring, as many as fit; those that do not
    /// stay in `burst`. Returns how many moved.
    #[inline]
    pub fn enqueue_burst(&mut self, burst: &mut Burst) -> usize {
        // SAFETY: &mut self on the unsplit ring: this is the only handle.
        unsafe { self.inner.enqueue(burst) }
    }

    /// Moves up to `burst.spare()` mbufs out of the ring into `burst`; returns how many.
    #[inline]
    pub fn dequeue_burst(&mut self, burst: &mut Burst) -> usize {
        // SAFETY: &mut self on the unsplit ring: this is the only handle.
        unsafe { self.inner.dequeue(burst) }
    }

    /// Mbufs in the ring now.
    pub fn count(&self) -> u32 {
        self.inner.count()
    }

    /// Most mbufs the ring holds.
    pub fn capacity(&self) -> u32 {
        self.inner.capacity
    }

    /// Splits into the producer and consumer handles, to use from different threads.
    pub fn split(self) -> (RingProducer, RingConsumer) {
        (
            RingProducer {
                inner: Arc::clone(&self.inner),
            },
            RingConsumer { inner: self.inner },
        )
    }
}

/// The enqueue side of a split [`Ring`].
#[derive(Debug)]
pub struct RingProducer {
    inner: Arc<RingInner>,
}

impl RingProducer {
    /// As [`Ring::enqueue_burst`].
    #[inline]
    pub fn enqueue_burst(&mut self, burst: &mut Burst) -> usize {
        // SAFETY: a single-producer ring has exactly one RingProducer (try_clone refuses), and
        // it is used through &mut self; multi-producer rings allow concurrent producers.
        unsafe { self.inner.enqueue(burst) }
    }

    /// Another producer handle; `None` for a single-producer ring.
    pub fn try_clone(&self) -> Option<RingProducer> {
        (!self.inner.single_producer).then(|| RingProducer {
            inner: Arc::clone(&self.inner),
        })
    }

    /// Mbufs in the ring now.
    pub fn count(&self) -> u32 {
        self.inner.count()
    }
}

/// The dequeue side of a split [`Ring`].
#[derive(Debug)]
pub struct RingConsumer {
    inner: Arc<RingInner>,
}

impl RingConsumer {
    /// As [`Ring::dequeue_burst`].
    #[inline]
    pub fn dequeue_burst(&mut self, burst: &mut Burst) -> usize {
        // SAFETY: a single-consumer ring has exactly one RingConsumer (try_clone refuses), and
        // it is used through &mut self; multi-consumer rings allow concurrent consumers.
        unsafe { self.inner.dequeue(burst) }
    }

    /// Another consumer handle; `None` for a single-consumer ring.
    pub fn try_clone(&self) -> Option<RingConsumer> {
        (!self.inner.single_consumer).then(|| RingConsumer {
            inner: Arc::clone(&self.inner),
        })
    }

    /// Mbufs in the ring now.
    pub fn count(&self) -> u32 {
        self.inner.count()
    }
}

// Mbuf pointers travel through the ring as `void *`.
const _: () = assert!(std::mem::size_of::<Mbuf>() == std::mem::size_of::<*mut c_void>());
