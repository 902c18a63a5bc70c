//! Packet-buffer pools.

use std::ffi::{c_int, CString};
use std::ptr::NonNull;

use dpdk_sys::rte_mempool;

use crate::eal::Eal;
use crate::error::{DpdkError, Result};

/// "Any NUMA socket", for [`Mempool::new`] and [`crate::Ring::new`].
pub const SOCKET_ANY: i32 = dpdk_sys::VPNLB_SOCKET_ID_ANY;

/// Headroom DPDK leaves in front of each mbuf's data (`RTE_PKTMBUF_HEADROOM`).
pub const MBUF_HEADROOM: u16 = dpdk_sys::VPNLB_PKTMBUF_HEADROOM;

/// The usual data room: 2048 bytes of data after [`MBUF_HEADROOM`]
/// (`RTE_MBUF_DEFAULT_BUF_SIZE`).
pub const DEFAULT_DATA_ROOM: u16 = dpdk_sys::VPNLB_MBUF_DEFAULT_BUF_SIZE;

/// A pool of packet buffers (`rte_pktmbuf_pool_create`).
///
/// A handle: copying it does not copy the pool. The pool lives until the process exits (it
/// is never freed), because mbufs and the ports' RX queues refer to it without any Rust owner
/// being able to track them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mempool {
    ptr: NonNull<rte_mempool>,
    data_room: u16,
}

// SAFETY: the pool is created with DPDK's default multi-producer/multi-consumer ops and
// per-lcore caches; get/put are safe from any thread (threads without an lcore id bypass the
// cache). The handle is never freed, so it never dangles.
unsafe impl Send for Mempool {}
// SAFETY: as for Send; every method takes &self and DPDK synchronises internally.
unsafe impl Sync for Mempool {}

impl Mempool {
    /// Creates a pool of `n_mbufs` mbufs with `data_room` bytes each (headroom included: use
    /// [`DEFAULT_DATA_ROOM`] for 2048 bytes of data), a per-lcore cache of `cache_size`
    /// (0 for none; at most 512 and `n_mbufs / 1.5`), on NUMA `socket` (or [`SOCKET_ANY`]).
    /// `name` must be unique in the process and shorter than 26 bytes.
    pub fn new(
        name: &str,
        n_mbufs: u32,
        cache_size: u32,
        data_room: u16,
        socket: i32,
    ) -> Result<Mempool> {
        Eal::require()?;
        // RTE_MEMPOOL_NAMESIZE counts the NUL (and leaves room for the ring's "MP_" prefix).
        if name.len() >= dpdk_sys::VPNLB_MEMPOOL_NAMESIZE as usize {
            return Err(DpdkError::invalid(
                "mempool name",
                format!("{name:?} is too long"),
            ));
        }
        if data_room < MBUF_HEADROOM {
            return Err(DpdkError::invalid(
                "mempool data room",
                format!("{data_room} is smaller than the {MBUF_HEADROOM}-byte headroom"),
            ));
        }
        let cname = CString::new(name)
            .map_err(|_| DpdkError::invalid("mempool name", format!("{name:?} contains NUL")))?;
        // SAFETY: the EAL is initialised; cname is a valid C string for the duration of the
        // call (DPDK copies the name).
        let ptr = unsafe {
            dpdk_sys::rte_pktmbuf_pool_create(
                cname.as_ptr(),
                n_mbufs,
                cache_size,
                0,
                data_room,
                c_int::from(socket),
            )
        };
        let ptr = NonNull::new(ptr).ok_or_else(|| DpdkError::last("rte_pktmbuf_pool_create"))?;
        Ok(Mempool { ptr, data_room })
    }

    /// Free mbufs, per-lcore caches included.
    pub fn avail_count(&self) -> u32 {
        // SAFETY: the pool is valid for the process's lifetime.
        unsafe { dpdk_sys::rte_mempool_avail_count(self.ptr.as_ptr()) }
    }

    /// Mbufs handed out (allocated and not yet freed).
    pub fn in_use_count(&self) -> u32 {
        // SAFETY: the pool is valid for the process's lifetime.
        unsafe { dpdk_sys::rte_mempool_in_use_count(self.ptr.as_ptr()) }
    }

    /// How many mbufs the pool holds in all.
    pub fn capacity(&self) -> u32 {
        // SAFETY: the pool is valid; `size` is set at creation and never changes.
        unsafe { (*self.ptr.as_ptr()).size }
    }

    /// Each mbuf's data room, headroom included.
    pub fn data_room(&self) -> u16 {
        self.data_room
    }

    /// The raw pool, for calls this crate does not wrap.
    pub fn as_ptr(&self) -> *mut rte_mempool {
        self.ptr.as_ptr()
    }
}
