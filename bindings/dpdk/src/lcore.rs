//! Lcore identity of the calling thread, thread registration and the TSC.
//!
//! Threads the EAL did not start have no lcore id, hence no mempool cache, until they call
//! [`register_thread`].

use std::marker::PhantomData;

use crate::eal::Eal;
use crate::error::{DpdkError, Result};

/// The calling thread's lcore id; `None` for a thread the EAL neither started nor registered.
pub fn lcore_id() -> Option<u32> {
    // SAFETY: reads a thread-local; valid in any thread, before or after EAL init.
    let id = unsafe { dpdk_sys::vpnlb_lcore_id() };
    (id != dpdk_sys::VPNLB_LCORE_ID_ANY).then_some(id)
}

/// The NUMA socket of the calling thread; `None` when unknown (unregistered thread, or a
/// registered thread whose CPU affinity spans several sockets).
pub fn socket_id() -> Option<u32> {
    // SAFETY: reads a thread-local; valid in any thread.
    let s = unsafe { dpdk_sys::rte_socket_id() };
    // SOCKET_ID_ANY (-1) comes back as u32::MAX.
    (s != u32::MAX).then_some(s)
}

/// The CPU's time-stamp counter.
#[inline]
pub fn rdtsc() -> u64 {
    // SAFETY: reads the TSC; no preconditions.
    unsafe { dpdk_sys::vpnlb_rdtsc() }
}

/// TSC ticks per second as the EAL measured them; 0 before [`Eal::init`].
pub fn tsc_hz() -> u64 {
    // SAFETY: reads a value the EAL sets at init (0 before); no preconditions.
    unsafe { dpdk_sys::rte_get_tsc_hz() }
}

/// The CPU's spin-wait hint, for polling loops.
#[inline]
pub fn pause() {
    // SAFETY: a CPU hint instruction; no preconditions.
    unsafe { dpdk_sys::vpnlb_pause() }
}

/// Registration of a non-EAL thread with the EAL; unregisters when dropped, on the same
/// thread (it is neither `Send` nor `Sync`).
#[derive(Debug)]
pub struct ThreadRegistration {
    lcore: u32,
    /// False when the thread already had an lcore id: dropping then changes nothing.
    owned: bool,
    _thread_bound: PhantomData<*const ()>,
}

impl ThreadRegistration {
    /// The lcore id the thread now has.
    pub fn lcore_id(&self) -> u32 {
        self.lcore
    }
}

impl Drop for ThreadRegistration {
    fn drop(&mut self) {
        if self.owned {
            // SAFETY: this thread registered itself in register_thread (the guard is
            // !Send, so this is the same thread); releases its lcore id.
            unsafe { dpdk_sys::rte_thread_unregister() };
        }
    }
}

/// Gives the calling thread an lcore id (`rte_thread_register`), so it gets mempool caches
/// and [`lcore_id`] works. A thread that already has one (an EAL thread, or one registered
/// before) keeps it, and the guard then does nothing on drop.
///
/// Errors: the EAL is not initialised, or no lcore id is free (`RTE_MAX_LCORE` = 128).
pub fn register_thread() -> Result<ThreadRegistration> {
    Eal::require()?;
    if let Some(lcore) = lcore_id() {
        return Ok(ThreadRegistration {
            lcore,
            owned: false,
            _thread_bound: PhantomData,
        });
    }
    // SAFETY: the EAL is initialised; the thread has no lcore id yet, so registering does not
    // overwrite one.
    let ret = unsafe { dpdk_sys::rte_thread_register() };
    if ret < 0 {
        return Err(DpdkError::last("rte_thread_register"));
    }
    let lcore = lcore_id().ok_or_else(|| DpdkError::call("rte_thread_register", libc::ENOMEM))?;
    Ok(ThreadRegistration {
        lcore,
        owned: true,
        _thread_bound: PhantomData,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tsc_moves_forward() {
        let a = rdtsc();
        pause();
        let b = rdtsc();
        assert!(b > a, "{a} then {b}");
    }

    #[test]
    fn unregistered_thread_has_no_lcore() {
        assert_eq!(lcore_id(), None);
        assert_eq!(tsc_hz(), 0, "no EAL in unit tests");
        assert!(matches!(
            register_thread(),
            Err(DpdkError::EalNotInitialised)
        ));
    }
}
