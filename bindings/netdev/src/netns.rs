//! Entering a named network namespace from one thread, and coming back.
//!
//! A network namespace is a per-thread attribute: [`enter`] moves only the calling thread
//! (`setns(2)` with `CLONE_NEWNET`), so a health-check thread can open its sockets in the
//! appliance's namespace while the rest of the process stays where it is. What the thread
//! creates there (sockets, TAP devices, interface configuration through
//! [`ifconfig`](crate::ifconfig)) stays in that namespace after the thread leaves.
//!
//! Beware of paths that do *not* follow the thread: `/proc/net` and `/proc/self/net` show the
//! namespace of the process's main thread (use `/proc/thread-self/net`), and `/sys/class/net`
//! shows the namespace sysfs was mounted in. `/proc/sys/net` does follow the thread (see
//! [`ifconfig::set_ipv6_conf`](crate::ifconfig::set_ipv6_conf)). Processes the thread spawns
//! start in its namespace.

use std::fs::File;
use std::io;
use std::marker::PhantomData;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::path::Path;

use crate::name::check_component;
use crate::sys::context;

/// Where `ip netns add NAME` leaves the namespace (a bind mount of its nsfs file).
pub const NETNS_RUN_DIR: &str = "/run/netns";

/// The calling thread's own network namespace (not the main thread's, as `/proc/self` would be).
const THREAD_NETNS: &str = "/proc/thread-self/ns/net";

/// Moves the calling thread into the named network namespace (/run/netns/NAME, as made by
/// `ip netns add`) until the guard is dropped; dropping it moves the thread back.
///
/// Guards nest: each returns the thread to the namespace it was in when the guard was made,
/// so drop them in the reverse order of creation (a scope per guard does that).
///
/// Errors: `InvalidInput` for a name that is not a single path component, `NotFound` when
/// there is no such namespace, `PermissionDenied` without `CAP_SYS_ADMIN`.
pub fn enter(name: &str) -> io::Result<NetnsGuard> {
    check_component("network namespace name", name)?;
    // Open our own namespace first, so that the guard can always come back to it.
    let original = File::open(THREAD_NETNS).map_err(context(THREAD_NETNS))?;
    let path = Path::new(NETNS_RUN_DIR).join(name);
    let target = File::open(&path).map_err(context(format_args!(
        "network namespace {name} ({})",
        path.display()
    )))?;
    setns(target.as_fd()).map_err(context(format_args!("setns to network namespace {name}")))?;
    Ok(NetnsGuard {
        original,
        _not_send: PhantomData,
    })
}

/// Moves the calling thread into a new, empty network namespace (only a loopback, down) until
/// the guard is dropped: a test's private network, which disappears with its last thread and
/// socket. Threads spawned meanwhile start in it.
///
/// Errors: `PermissionDenied` without `CAP_SYS_ADMIN`.
pub fn enter_new() -> io::Result<NetnsGuard> {
    let original = File::open(THREAD_NETNS).map_err(context(THREAD_NETNS))?;
    // SAFETY: unshare(2) takes no pointers; with CLONE_NEWNET alone it changes only the calling
    // thread's network namespace, which Rust knows nothing about.
    let ret = unsafe { libc::unshare(libc::CLONE_NEWNET) };
    if ret < 0 {
        return Err(context("unshare a network namespace")(
            io::Error::last_os_error(),
        ));
    }
    Ok(NetnsGuard {
        original,
        _not_send: PhantomData,
    })
}

/// The calling thread is in another network namespace while this lives; see [`enter`].
///
/// It is neither `Send` nor `Sync`: it must be dropped by the thread that made it, since
/// dropping it moves *the dropping thread*.
///
/// ```compile_fail,E0277
/// fn must_be_send<T: Send>() {}
/// must_be_send::<netdev::netns::NetnsGuard>();
/// ```
#[derive(Debug)]
#[must_use = "the thread leaves the namespace again when the guard is dropped"]
pub struct NetnsGuard {
    /// The namespace the thread was in before `enter`.
    original: File,
    _not_send: PhantomData<*const ()>,
}

impl Drop for NetnsGuard {
    fn drop(&mut self) {
        if let Err(e) = setns(self.original.as_fd()) {
            // Cannot happen short of a kernel bug: the thread had the right to switch away and
            // the fd keeps the original namespace alive. A thread silently left in the wrong
            // namespace would open sockets and configure interfaces in the wrong place, and a
            // panic could be caught with the thread still there, so stop everything.
            eprintln!("netdev: cannot return to the original network namespace: {e}");
            std::process::abort();
        }
    }
}

/// `setns(fd, CLONE_NEWNET)` for the calling thread.
fn setns(ns: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: setns(2) takes no pointers; the fd is open for the duration of the call. It
    // changes only the calling thread's network namespace, which Rust knows nothing about.
    let ret = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
