//! Who is on the other end of a Unix socket, and which group a name stands for: what the
//! daemon's control socket needs to set its file's group and to log who changed what.
//!
//! * [`peer_credentials`]: the pid, uid and gid of the process that connected a Unix stream
//!   socket (`SO_PEERCRED`, as they were at `connect(2)`);
//! * [`group_id`]: a group name's gid from the system's group database (`getgrnam_r(3)`, so
//!   NSS sources such as LDAP count too).

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

use crate::sys::context;

/// The credentials the kernel recorded for a Unix socket's peer when it connected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeerCredentials {
    /// The peer's process id (0 when the kernel cannot name one, e.g. a peer in another pid
    /// namespace that has exited).
    pub pid: i32,
    /// Its effective user id.
    pub uid: u32,
    /// Its effective group id.
    pub gid: u32,
}

/// The credentials of the process at the other end of the connected Unix socket `sock`, by
/// `getsockopt(SO_PEERCRED)`.
pub fn peer_credentials(sock: BorrowedFd<'_>) -> io::Result<PeerCredentials> {
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    // 12 bytes: fits a socklen_t.
    let mut len = libc::socklen_t::try_from(std::mem::size_of::<libc::ucred>()).unwrap_or(0);
    // SAFETY: the fd is open (borrowed) for the call; cred is a valid, exclusive ucred of `len`
    // bytes, which is what SO_PEERCRED writes, and len is a valid socklen_t the kernel updates.
    let ret = unsafe {
        libc::getsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    if ret < 0 {
        return Err(context("getsockopt SO_PEERCRED")(io::Error::last_os_error()));
    }
    if len as usize != std::mem::size_of::<libc::ucred>() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("getsockopt SO_PEERCRED: the kernel returned {len} bytes"),
        ));
    }
    Ok(PeerCredentials {
        pid: cred.pid,
        uid: cred.uid,
        gid: cred.gid,
    })
}

/// The gid of group `name`, or `None` when there is no such group.
///
/// Errors: `InvalidInput` for a name with a NUL byte; the database's own errors (`EIO`,
/// `EMFILE`, ...) otherwise.
pub fn group_id(name: &str) -> io::Result<Option<u32>> {
    let cname = CString::new(name).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("group name {name:?} contains a NUL byte"),
        )
    })?;
    let mut buf: Vec<libc::c_char> = vec![0; 1024];
    loop {
        // SAFETY: group is a C struct of pointers and an integer, all valid when zero (null).
        let mut group: libc::group = unsafe { std::mem::zeroed() };
        let mut found: *mut libc::group = std::ptr::null_mut();
        // SAFETY: cname is a NUL-terminated string; group, buf (of buf.len() bytes) and found
        // are valid, exclusive and outlive the call. The strings getgrnam_r points group's
        // members at live in buf, and only the integer gr_gid is read below.
        let ret = unsafe {
            libc::getgrnam_r(
                cname.as_ptr(),
                &mut group,
                buf.as_mut_ptr(),
                buf.len(),
                &mut found,
            )
        };
        match ret {
            0 if found.is_null() => return Ok(None),
            0 => return Ok(Some(group.gr_gid)),
            libc::ERANGE if buf.len() < 1 << 20 => buf.resize(buf.len() * 4, 0),
            // Some NSS modules answer "not found" with one of these instead of 0.
            libc::ENOENT | libc::ESRCH | libc::EBADF | libc::EPERM => return Ok(None),
            e => {
                return Err(context(format_args!("getgrnam_r {name}"))(
                    io::Error::from_raw_os_error(e),
                ))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;
    use std::os::unix::net::UnixStream;

    #[test]
    fn peer_credentials_of_a_socket_pair_are_our_own() {
        let (a, b) = UnixStream::pair().unwrap();
        // SAFETY: getuid(2), getgid(2) and getpid(2) take no arguments and cannot fail.
        let (uid, gid, pid) = unsafe { (libc::getuid(), libc::getgid(), libc::getpid()) };
        for s in [&a, &b] {
            let c = peer_credentials(s.as_fd()).unwrap();
            assert_eq!(c, PeerCredentials { pid, uid, gid });
        }
    }

    #[test]
    fn peer_credentials_of_a_non_socket_is_an_error() {
        let f = std::fs::File::open("/dev/null").unwrap();
        let e = peer_credentials(f.as_fd()).unwrap_err();
        assert!(e.to_string().contains("SO_PEERCRED"), "{e}");
    }

    #[test]
    fn group_ids() {
        assert_eq!(group_id("root").unwrap(), Some(0));
        assert_eq!(group_id("vpnlb-no-such-group-x").unwrap(), None);
        assert_eq!(
            group_id("a\0b").unwrap_err().kind(),
            io::ErrorKind::InvalidInput
        );
    }
}
