//! The one error type of this crate.

use std::ffi::{c_int, CStr};
use std::fmt;

/// Why a DPDK operation failed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DpdkError {
    /// A DPDK call failed. `errno` is the positive error number DPDK reported (its return value
    /// or `rte_errno`), `text` what `rte_strerror` says about it.
    Call {
        /// The DPDK function that failed.
        op: &'static str,
        /// Positive error number.
        errno: i32,
        /// `rte_strerror(errno)`.
        text: String,
    },
    /// [`crate::Eal::init`] has not succeeded in this process.
    EalNotInitialised,
    /// An argument was refused before it reached DPDK.
    InvalidArgument {
        /// Which argument.
        what: &'static str,
        /// Why.
        detail: String,
    },
    /// The mempool had no free mbuf.
    PoolExhausted,
    /// The data does not fit one mbuf's data room.
    TooLong {
        /// Bytes asked for.
        len: usize,
        /// Bytes the mbuf had room for.
        room: usize,
    },
    /// A queue handle for this queue already exists ([`crate::Port::rx_queue`] /
    /// [`crate::Port::tx_queue`] hand each queue out once).
    QueueInUse {
        /// Port id.
        port: u16,
        /// Queue id.
        queue: u16,
    },
    /// The port cannot be reconfigured or stopped while queue handles exist: drop every
    /// [`crate::RxQueue`] and [`crate::TxQueue`] of the port first.
    PortBusy {
        /// Port id.
        port: u16,
    },
}

impl DpdkError {
    /// A failed call with positive error number `errno`.
    pub(crate) fn call(op: &'static str, errno: i32) -> Self {
        // SAFETY: rte_strerror accepts any int and returns a NUL-terminated string (static, or
        // a thread-local buffer that stays valid until the next call on this thread); it is
        // copied before anything else runs here.
        let text = unsafe {
            let p = dpdk_sys::rte_strerror(errno);
            if p.is_null() {
                String::new()
            } else {
                CStr::from_ptr(p).to_string_lossy().into_owned()
            }
        };
        DpdkError::Call { op, errno, text }
    }

    /// A failed call that reported its error through `rte_errno`.
    pub(crate) fn last(op: &'static str) -> Self {
        // SAFETY: reads the calling thread's rte_errno; no preconditions.
        let errno = unsafe { dpdk_sys::vpnlb_errno() };
        Self::call(op, errno)
    }

    /// Maps DPDK's "negative errno on failure" return convention.
    pub(crate) fn check(op: &'static str, ret: c_int) -> Result<c_int, DpdkError> {
        if ret < 0 {
            Err(Self::call(op, ret.saturating_neg()))
        } else {
            Ok(ret)
        }
    }

    pub(crate) fn invalid(what: &'static str, detail: impl Into<String>) -> Self {
        DpdkError::InvalidArgument {
            what,
            detail: detail.into(),
        }
    }

    /// The error number of a failed DPDK call, if this is one.
    pub fn errno(&self) -> Option<i32> {
        match self {
            DpdkError::Call { errno, .. } => Some(*errno),
            _ => None,
        }
    }
}

impl fmt::Display for DpdkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DpdkError::Call { op, errno, text } => write!(f, "{op} failed: {text} (errno {errno})"),
            DpdkError::EalNotInitialised => f.write_str("the DPDK EAL is not initialised"),
            DpdkError::InvalidArgument { what, detail } => write!(f, "invalid {what}: {detail}"),
            DpdkError::PoolExhausted => f.write_str("mempool exhausted: no free mbuf"),
            DpdkError::TooLong { len, room } => {
                write!(
                    f,
                    "{len} bytes do not fit an mbuf with {room} bytes of room"
                )
            }
            DpdkError::QueueInUse { port, queue } => {
                write!(f, "port {port} queue {queue} is already in use")
            }
            DpdkError::PortBusy { port } => {
                write!(f, "port {port} has queue handles in use")
            }
        }
    }
}

impl std::error::Error for DpdkError {}

/// Result with [`DpdkError`].
pub type Result<T, E = DpdkError> = std::result::Result<T, E>;
