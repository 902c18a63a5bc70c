//! TAP devices: Ethernet frames between this process and the kernel's network stack.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;

use crate::name::{check_ifname, from_ifr_name};
use crate::sys::{context, control_socket, ifindex, ifreq, ioctl};

/// The TUN/TAP clone device.
const CLONE_DEVICE: &str = "/dev/net/tun";

/// A TAP interface, owned through its file descriptor.
///
/// What the kernel transmits on the interface is [`recv`](Tap::recv)ed here, and what is
/// [`send`](Tap::send) here the kernel receives on the interface, as whole Ethernet frames
/// (no packet-information header, no virtio-net header). The fd is non-blocking; to wait for
/// frames, poll it ([`AsFd`]).
#[derive(Debug)]
pub struct Tap {
    file: File,
    name: String,
    ifindex: u32,
}

impl Tap {
    /// Creates a TAP device (IFF_TAP | IFF_NO_PI, non-blocking fd) in the calling thread's
    /// current network namespace. The device disappears when the Tap is dropped.
    ///
    /// The device stays in that namespace whatever the thread does afterwards; configure it
    /// with [`ifconfig`](crate::ifconfig) from that namespace. `name` may be a pattern such as
    /// `"vlb%d"`; [`name`](Tap::name) then tells the name the kernel chose. It starts down.
    ///
    /// Errors: `InvalidInput` for a bad name (empty, over 15 bytes, '/' or NUL). If a
    /// non-TAP interface of that name exists, or a TAP of that name is already open, the
    /// kernel refuses (`EINVAL`, `EBUSY`). (An existing *persistent* TAP of that name that
    /// nobody has open is attached to, and then outlives the Tap.)
    pub fn create(name: &str) -> io::Result<Tap> {
        check_ifname(name)?;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(CLONE_DEVICE)
            .map_err(context(CLONE_DEVICE))?;
        let mut req = ifreq(name);
        // IFF_TAP | IFF_NO_PI is 0x1002, an `int` in libc for a `short` field.
        #[allow(clippy::cast_possible_truncation)]
        const FLAGS: libc::c_short = (libc::IFF_TAP | libc::IFF_NO_PI) as libc::c_short;
        req.ifr_ifru.ifru_flags = FLAGS;
        // SAFETY: TUNSETIFF takes a struct ifreq (name and flags in, actual name out).
        unsafe { ioctl(file.as_fd(), libc::TUNSETIFF, &mut req) }
            .map_err(context(format_args!("TUNSETIFF {name}")))?;
        let name = from_ifr_name(&req.ifr_name)?;
        // The device exists only in this thread's current namespace, where this socket is.
        let sock = control_socket(libc::AF_INET)?;
        let ifindex = ifindex(sock.as_fd(), &name)?;
        Ok(Tap {
            file,
            name,
            ifindex,
        })
    }

    /// The interface's name (as the kernel chose it, for a pattern).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The interface's index in its network namespace.
    pub fn ifindex(&self) -> u32 {
        self.ifindex
    }

    /// One frame the kernel sent, or None when there is none now (EAGAIN).
    ///
    /// `buf` should hold the largest frame: the MTU plus 14 bytes of Ethernet header (plus 4
    /// for a VLAN tag). The kernel silently truncates a longer frame to `buf.len()` (and the
    /// rest is lost), so `Some(buf.len())` may be a truncated frame.
    pub fn recv(&self, buf: &mut [u8]) -> io::Result<Option<usize>> {
        loop {
            match (&self.file).read(buf) {
                Ok(n) => return Ok(Some(n)),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(None),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(context(format_args!("read from TAP {}", self.name))(e)),
            }
        }
    }

    /// Hands one Ethernet frame to the kernel; Ok(false) when the device cannot take it now.
    ///
    /// The frame needs its full Ethernet header and no FCS; the kernel rejects one shorter
    /// than 14 bytes (`InvalidInput`).
    pub fn send(&self, frame: &[u8]) -> io::Result<bool> {
        loop {
            match (&self.file).write(frame) {
                Ok(n) if n == frame.len() => return Ok(true),
                Ok(n) => {
                    return Err(io::Error::other(format!(
                        "write to TAP {}: {n} of {} bytes taken",
                        self.name,
                        frame.len()
                    )))
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(context(format_args!("write to TAP {}", self.name))(e)),
            }
        }
    }
}

impl AsFd for Tap {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }
}

impl AsRawFd for Tap {
    fn as_raw_fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }
}
