//! The few raw system calls the crate shares: control sockets, `ioctl` and `struct ifreq`,
//! and the error context helper.

use std::ffi::{c_int, c_ulong};
use std::fmt::Display;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use crate::name::to_ifr_name;

/// Turns an error into one of the same kind whose message starts with `what`, e.g.
/// `.map_err(context(format_args!("TUNSETIFF {name}")))`.
pub(crate) fn context(what: impl Display) -> impl FnOnce(io::Error) -> io::Error {
    move |e| io::Error::new(e.kind(), format!("{what}: {e}"))
}

/// A datagram socket of `family` (`AF_INET` or `AF_INET6`) for configuration ioctls. It lives
/// in the calling thread's network namespace at the time of this call, and so do the
/// interfaces its ioctls name.
pub(crate) fn control_socket(family: c_int) -> io::Result<OwnedFd> {
    // SAFETY: socket(2) takes no pointers; any arguments are sound.
    let fd = unsafe { libc::socket(family, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(context("socket")(io::Error::last_os_error()));
    }
    // SAFETY: fd is a descriptor socket(2) just returned, owned by nothing else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// An all-zero `struct ifreq` naming the (already checked) interface `name`.
pub(crate) fn ifreq(name: &str) -> libc::ifreq {
    // SAFETY: ifreq is a C struct of byte arrays, integers, sockaddrs and a pointer (in a
    // union), all of which are valid when zero.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    req.ifr_name = to_ifr_name(name);
    req
}

/// `ioctl(fd, request, arg)`. The error is the bare OS error (its `raw_os_error` intact, for
/// callers that accept some errno), without context.
///
/// # Safety
/// `T` must be the type `request` reads and writes, e.g. `struct ifreq` for `SIOCSIFMTU`, and
/// any pointers in it must be valid for the kernel to follow.
pub(crate) unsafe fn ioctl<T>(
    fd: BorrowedFd<'_>,
    request: c_ulong,
    arg: &mut T,
) -> io::Result<c_int> {
    // SAFETY: fd is open (borrowed); arg is a valid, exclusive pointer to the T the caller
    // promises `request` expects, for the duration of the call. The request is converted to
    // whatever integer type this libc's ioctl declares (all requests used fit in 32 bits).
    let ret = unsafe { libc::ioctl(fd.as_raw_fd(), request as _, arg as *mut T) };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(ret)
}

/// The index of interface `name` (checked) in the namespace of `sock`, by `SIOCGIFINDEX`.
pub(crate) fn ifindex(sock: BorrowedFd<'_>, name: &str) -> io::Result<u32> {
    let mut req = ifreq(name);
    // SAFETY: SIOCGIFINDEX takes a struct ifreq.
    unsafe { ioctl(sock, libc::SIOCGIFINDEX, &mut req) }
        .map_err(context(format_args!("SIOCGIFINDEX {name}")))?;
    // SAFETY: on success the kernel has set the union's ifindex member, an int (and any bit
    // pattern of the zeroed union is a valid int anyway).
    let index = unsafe { req.ifr_ifru.ifru_ifindex };
    Ok(index as u32)
}
