//! vpnlb's thin safe layer over Linux network devices, for the daemon's exception path.
//!
//! Traffic addressed to the appliance itself goes to the kernel through one TAP interface per
//! appliance port, which carries the port's MAC and IP addresses, possibly inside a named
//! network namespace; what the kernel sends on the TAP goes out of the port. Health-check
//! threads enter that namespace to open ordinary sockets there. The pieces:
//!
//! * [`netns::enter`]: move the calling thread into a namespace of `ip netns add` until the
//!   [`netns::NetnsGuard`] is dropped;
//! * [`Tap`]: create a TAP device in the thread's current namespace, exchange Ethernet frames
//!   with the kernel through it (non-blocking);
//! * [`ifconfig`]: MAC, MTU, up, IPv4/IPv6 addresses and routes (added and removed) and IPv6
//!   sysctls of an interface in the thread's current namespace, by ioctls and `/proc/sys` (no
//!   netlink; only reading the addresses back uses `getifaddrs(3)`);
//! * [`clock`]: `CLOCK_MONOTONIC` in microseconds (systemd's notify protocol wants it);
//! * [`cred`]: a Unix socket peer's pid, uid and gid (`SO_PEERCRED`) and group names' gids,
//!   for the control socket.
//!
//! Everything unsafe of this layer is here, each block with a `// SAFETY:` note. Errors are
//! [`std::io::Error`]s whose message says what was attempted; bad arguments (such as an
//! interface name that is empty, over 15 bytes, or holds '/' or NUL) are `InvalidInput`.
//!
//! ```no_run
//! # fn main() -> std::io::Result<()> {
//! use netdev::{ifconfig, netns, Tap};
//!
//! let _in_ns = netns::enter("vpnlb")?;
//! let tap = Tap::create("vlb-client")?;
//! ifconfig::set_mac(tap.name(), [0x02, 0, 0, 0, 1, 1])?;
//! ifconfig::set_ipv6_conf(tap.name(), "accept_dad", "0")?;
//! ifconfig::set_up(tap.name())?;
//! ifconfig::add_address(tap.name(), "198.18.0.1".parse().unwrap(), 24)?;
//! let mut frame = [0u8; 1518];
//! while let Some(len) = tap.recv(&mut frame)? {
//!     // ... transmit frame[..len] on the port
//! }
//! # Ok(())
//! # }
//! ```

#![warn(missing_docs)]
#![cfg_attr(not(test), deny(clippy::cast_possible_truncation))]

pub mod clock;
pub mod cred;
pub mod ifconfig;
mod name;
pub mod netns;
mod sys;
mod tap;

pub use tap::Tap;
