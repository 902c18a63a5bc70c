//! Interface configuration by the classic ioctls (no netlink): MAC, MTU, up, addresses,
//! routes, and IPv6 sysctls.
//!
//! Everything acts in the calling thread's current network namespace: each call makes its own
//! `AF_INET` / `AF_INET6` datagram socket, which belongs to the namespace the thread is in at
//! that moment (see [`netns::enter`](crate::netns::enter)). Interface names are checked as
//! for [`Tap::create`](crate::Tap::create) (`InvalidInput`); naming an interface that does
//! not exist (in this namespace) fails with "No such device" (`ENODEV`).

use std::ffi::{c_char, c_int, c_ulong, c_ushort, c_void, CString};
use std::fs::OpenOptions;
use std::io::{self, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsFd, BorrowedFd};

use crate::name::{check_component, check_ifname, IFNAME_MAX};
use crate::sys::{context, control_socket, ifindex, ifreq, ioctl};

/// Sets the interface's Ethernet address (`SIOCSIFHWADDR`); a TAP takes it while up.
pub fn set_mac(ifname: &str, mac: [u8; 6]) -> io::Result<()> {
    check_ifname(ifname)?;
    let mut sa_data = [0 as c_char; 14];
    for (dst, byte) in sa_data.iter_mut().zip(mac) {
        *dst = byte as c_char;
    }
    let mut req = ifreq(ifname);
    req.ifr_ifru.ifru_hwaddr = libc::sockaddr {
        sa_family: libc::ARPHRD_ETHER,
        sa_data,
    };
    let sock = control_socket(libc::AF_INET)?;
    // SAFETY: SIOCSIFHWADDR takes a struct ifreq.
    unsafe { ioctl(sock.as_fd(), libc::SIOCSIFHWADDR, &mut req) }
        .map_err(context(format_args!("SIOCSIFHWADDR {ifname}")))?;
    Ok(())
}

/// Sets the interface's MTU (`SIOCSIFMTU`).
pub fn set_mtu(ifname: &str, mtu: u32) -> io::Result<()> {
    check_ifname(ifname)?;
    let mtu = c_int::try_from(mtu).map_err(|_| invalid(format!("MTU {mtu} is too large")))?;
    let mut req = ifreq(ifname);
    req.ifr_ifru.ifru_mtu = mtu;
    let sock = control_socket(libc::AF_INET)?;
    // SAFETY: SIOCSIFMTU takes a struct ifreq.
    unsafe { ioctl(sock.as_fd(), libc::SIOCSIFMTU, &mut req) }
        .map_err(context(format_args!("SIOCSIFMTU {ifname} {mtu}")))?;
    Ok(())
}

/// Brings the interface up (`SIOCGIFFLAGS`, then `SIOCSIFFLAGS` with `IFF_UP` added).
pub fn set_up(ifname: &str) -> io::Result<()> {
    check_ifname(ifname)?;
    let sock = control_socket(libc::AF_INET)?;
    let mut req = ifreq(ifname);
    // SAFETY: SIOCGIFFLAGS takes a struct ifreq.
    unsafe { ioctl(sock.as_fd(), libc::SIOCGIFFLAGS, &mut req) }
        .map_err(context(format_args!("SIOCGIFFLAGS {ifname}")))?;
    // SAFETY: SIOCGIFFLAGS has set the union's flags member, a short (any bit pattern of the
    // zeroed union is a valid short anyway).
    let flags = unsafe { req.ifr_ifru.ifru_flags };
    // IFF_UP is 0x1, an `int` in libc for a `short` field.
    #[allow(clippy::cast_possible_truncation)]
    const IFF_UP: libc::c_short = libc::IFF_UP as libc::c_short;
    req.ifr_ifru.ifru_flags = flags | IFF_UP;
    // SAFETY: SIOCSIFFLAGS takes a struct ifreq.
    unsafe { ioctl(sock.as_fd(), libc::SIOCSIFFLAGS, &mut req) }
        .map_err(context(format_args!("SIOCSIFFLAGS {ifname}")))?;
    Ok(())
}

/// IPv4: SIOCSIFADDR + SIOCSIFNETMASK; IPv6: SIOCSIFADDR with struct in6_ifreq. An address
/// already present is not an error.
///
/// An address already present is left as it is, whatever its prefix length. IPv4 ioctls hold
/// one address per label, and `SIOCSIFADDR` on a used label *replaces* its address, so a
/// further IPv4 address goes on the first free alias label (`IFNAME:0`, `IFNAME:1`, ...: it is
/// still the same interface, only `ip addr` shows the label); that needs a name short enough
/// for the label (`InvalidInput` otherwise). The interface should be up, so that the prefix
/// route exists at once. For IPv6, consider `set_ipv6_conf(ifname, "accept_dad", "0")` first,
/// or the address stays tentative (unusable) for a second or so.
pub fn add_address(ifname: &str, addr: IpAddr, prefix_len: u8) -> io::Result<()> {
    check_ifname(ifname)?;
    match addr {
        IpAddr::V4(addr) => add_ipv4_address(ifname, addr, prefix_len),
        IpAddr::V6(addr) => add_ipv6_address(ifname, addr, prefix_len),
    }
}

fn add_ipv4_address(ifname: &str, addr: Ipv4Addr, prefix_len: u8) -> io::Result<()> {
    let mask = ipv4_netmask(prefix_len)?;
    let sock = control_socket(libc::AF_INET)?;
    for label in ipv4_labels(ifname) {
        let mut req = ifreq(&label);
        // Given an address, SIOCGIFADDR looks for that address on that label first and else
        // answers the label's (first) address: EADDRNOTAVAIL means the label is free.
        req.ifr_ifru.ifru_addr = ipv4_sockaddr(addr);
        // SAFETY: SIOCGIFADDR takes a struct ifreq.
        match unsafe { ioctl(sock.as_fd(), libc::SIOCGIFADDR, &mut req) } {
            // SAFETY: SIOCGIFADDR has set the union's address member, a sockaddr (plain
            // integers, valid whatever their values).
            Ok(_) if sockaddr_ipv4(unsafe { &req.ifr_ifru.ifru_addr }) == addr => return Ok(()),
            Ok(_) => continue,
            Err(e) if e.raw_os_error() == Some(libc::EADDRNOTAVAIL) => {
                return set_ipv4_address(sock.as_fd(), &label, addr, mask)
            }
            Err(e) => return Err(context(format_args!("SIOCGIFADDR {label}"))(e)),
        }
    }
    Err(invalid(format!(
        "no free IPv4 label on {ifname} for another address {addr}"
    )))
}

/// The labels an interface's IPv4 addresses may go under: `IFNAME`, `IFNAME:0`, ...
fn ipv4_labels(ifname: &str) -> impl Iterator<Item = String> + '_ {
    std::iter::once(ifname.to_owned())
        .chain((0..100).map(move |k| format!("{ifname}:{k}")))
        .take_while(|label| label.len() <= IFNAME_MAX)
}

/// Puts `addr`/`mask` on the free IPv4 label `label`.
fn set_ipv4_address(
    sock: BorrowedFd<'_>,
    label: &str,
    addr: Ipv4Addr,
    mask: Ipv4Addr,
) -> io::Result<()> {
    let mut req = ifreq(label);
    req.ifr_ifru.ifru_addr = ipv4_sockaddr(addr);
    // SAFETY: SIOCSIFADDR takes a struct ifreq.
    match unsafe { ioctl(sock, libc::SIOCSIFADDR, &mut req) } {
        // The same address and (class) mask under another label.
        Err(e) if e.raw_os_error() == Some(libc::EEXIST) => return Ok(()),
        result => result.map_err(context(format_args!("SIOCSIFADDR {label} {addr}")))?,
    };
    let mut req = ifreq(label);
    req.ifr_ifru.ifru_netmask = ipv4_sockaddr(mask);
    // SAFETY: SIOCSIFNETMASK takes a struct ifreq.
    unsafe { ioctl(sock, libc::SIOCSIFNETMASK, &mut req) }
        .map_err(context(format_args!("SIOCSIFNETMASK {label} {mask}")))?;
    Ok(())
}

fn add_ipv6_address(ifname: &str, addr: Ipv6Addr, prefix_len: u8) -> io::Result<()> {
    check_ipv6_prefix(prefix_len)?;
    let sock = control_socket(libc::AF_INET6)?;
    let index = ifindex(sock.as_fd(), ifname)?;
    let mut req = libc::in6_ifreq {
        ifr6_addr: libc::in6_addr {
            s6_addr: addr.octets(),
        },
        ifr6_prefixlen: u32::from(prefix_len),
        ifr6_ifindex: index as c_int,
    };
    // SAFETY: SIOCSIFADDR on an AF_INET6 socket takes a struct in6_ifreq.
    match unsafe { ioctl(sock.as_fd(), libc::SIOCSIFADDR, &mut req) } {
        Err(e) if e.raw_os_error() == Some(libc::EEXIST) => Ok(()),
        result => result.map(drop).map_err(context(format_args!(
            "SIOCSIFADDR {ifname} {addr}/{prefix_len}"
        ))),
    }
}

/// SIOCADDRT (struct rtentry for IPv4, struct in6_rtmsg for IPv6): DEST/PREFIX via GATEWAY on
/// IFNAME. A route already present is not an error.
///
/// `dest` and `via` must be of one family, and `dest` must have no bits set beyond the prefix
/// (`InvalidInput`). An unspecified `via` (`0.0.0.0`, `::`) makes an on-link route. The
/// gateway must be reachable on IFNAME (an address of the interface covers it), or the kernel
/// refuses ("Network is unreachable" for IPv4, "No route to host" for IPv6). Routes go to the
/// main table; an IPv4 one gets metric 0, an IPv6 one 1024, as `ip route add` would give them.
pub fn add_route(dest: IpAddr, prefix_len: u8, via: IpAddr, ifname: &str) -> io::Result<()> {
    check_ifname(ifname)?;
    let what = || format!("SIOCADDRT {dest}/{prefix_len} via {via} dev {ifname}");
    let result = match (dest, via) {
        (IpAddr::V4(dest), IpAddr::V4(via)) => add_ipv4_route(dest, prefix_len, via, ifname),
        (IpAddr::V6(dest), IpAddr::V6(via)) => add_ipv6_route(dest, prefix_len, via, ifname),
        _ => return Err(invalid(format!("{}: mixed address families", what()))),
    };
    match result {
        Err(e) if e.raw_os_error() == Some(libc::EEXIST) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::InvalidInput && e.raw_os_error().is_none() => Err(e),
        result => result.map_err(|e| context(what())(e)),
    }
}

/// The kernel's `struct rtentry` (`<linux/route.h>`), which the `libc` crate has only for musl.
#[repr(C)]
struct RtEntry {
    rt_pad1: c_ulong,
    rt_dst: libc::sockaddr,
    rt_gateway: libc::sockaddr,
    rt_genmask: libc::sockaddr,
    rt_flags: c_ushort,
    rt_pad2: libc::c_short,
    rt_pad3: c_ulong,
    rt_pad4: *mut c_void,
    rt_metric: libc::c_short,
    rt_dev: *mut c_char,
    rt_mtu: c_ulong,
    rt_window: c_ulong,
    rt_irtt: c_ushort,
}

/// The kernel's `struct in6_rtmsg` (`<linux/ipv6_route.h>`; the `libc` crate's has private
/// fields).
#[repr(C)]
struct In6Rtmsg {
    rtmsg_dst: libc::in6_addr,
    rtmsg_src: libc::in6_addr,
    rtmsg_gateway: libc::in6_addr,
    rtmsg_type: u32,
    rtmsg_dst_len: u16,
    rtmsg_src_len: u16,
    rtmsg_metric: u32,
    rtmsg_info: c_ulong,
    rtmsg_flags: u32,
    rtmsg_ifindex: c_int,
}

/// `IP6_RT_PRIO_USER`, the metric of routes added by hand.
const IPV6_USER_METRIC: u32 = 1024;

/// Errors without context: [`add_route`] adds it.
fn add_ipv4_route(dest: Ipv4Addr, prefix_len: u8, via: Ipv4Addr, ifname: &str) -> io::Result<()> {
    let mask = ipv4_netmask(prefix_len)?;
    if dest.to_bits() & !mask.to_bits() != 0 {
        return Err(invalid(format!(
            "route {dest}/{prefix_len} has bits set beyond its prefix"
        )));
    }
    let dev = CString::new(ifname).map_err(|e| invalid(e.to_string()))?;
    let mut flags = libc::RTF_UP;
    if !via.is_unspecified() {
        flags |= libc::RTF_GATEWAY;
    }
    let mut route = RtEntry {
        rt_pad1: 0,
        rt_dst: ipv4_sockaddr(dest),
        rt_gateway: ipv4_sockaddr(via),
        rt_genmask: ipv4_sockaddr(mask),
        rt_flags: flags,
        rt_pad2: 0,
        rt_pad3: 0,
        rt_pad4: std::ptr::null_mut(),
        rt_metric: 0,
        rt_dev: dev.as_ptr().cast_mut(),
        rt_mtu: 0,
        rt_window: 0,
        rt_irtt: 0,
    };
    let sock = control_socket(libc::AF_INET)?;
    // SAFETY: SIOCADDRT on an AF_INET socket takes a struct rtentry; its one pointer the
    // kernel follows, rt_dev, is a NUL-terminated string that outlives the call (the kernel
    // only reads it).
    unsafe { ioctl(sock.as_fd(), libc::SIOCADDRT, &mut route) }?;
    Ok(())
}

/// Errors without context: [`add_route`] adds it.
fn add_ipv6_route(dest: Ipv6Addr, prefix_len: u8, via: Ipv6Addr, ifname: &str) -> io::Result<()> {
    check_ipv6_prefix(prefix_len)?;
    if dest.to_bits() & !ipv6_mask(prefix_len) != 0 {
        return Err(invalid(format!(
            "route {dest}/{prefix_len} has bits set beyond its prefix"
        )));
    }
    let sock = control_socket(libc::AF_INET6)?;
    let index = ifindex(sock.as_fd(), ifname)?;
    let mut flags = u32::from(libc::RTF_UP);
    if !via.is_unspecified() {
        flags |= u32::from(libc::RTF_GATEWAY);
    }
    let mut route = In6Rtmsg {
        rtmsg_dst: libc::in6_addr {
            s6_addr: dest.octets(),
        },
        rtmsg_src: libc::in6_addr { s6_addr: [0; 16] },
        rtmsg_gateway: libc::in6_addr {
            s6_addr: via.octets(),
        },
        rtmsg_type: 0,
        rtmsg_dst_len: u16::from(prefix_len),
        rtmsg_src_len: 0,
        rtmsg_metric: IPV6_USER_METRIC,
        rtmsg_info: 0,
        rtmsg_flags: flags,
        rtmsg_ifindex: index as c_int,
    };
    // SAFETY: SIOCADDRT on an AF_INET6 socket takes a struct in6_rtmsg (no pointers).
    unsafe { ioctl(sock.as_fd(), libc::SIOCADDRT, &mut route) }?;
    Ok(())
}

/// Writes /proc/sys/net/ipv6/conf/IFNAME/KEY (e.g. accept_dad = 0).
///
/// This follows the calling thread's network namespace, also after
/// [`netns::enter`](crate::netns::enter): the kernel resolves the `/proc/sys/net` tree at
/// lookup time against the *current thread's* namespace (`current->nsproxy->net_ns`, in
/// `net_ctl_header_lookup`, with `proc_sys_compare` hiding entries of other namespaces from
/// the dentry cache), not against the process's or the mount's, and an opened file stays
/// bound to that namespace's value. (Unlike `/proc/net`, which is `/proc/self/net`, the main
/// thread's, and `/sys/class/net`, which is the mounting namespace's.) The tests check it.
///
/// IFNAME may also be `all` or `default`. KEY must be a single path component; the value is
/// written as given (the kernel parses it), e.g. `"0"`.
pub fn set_ipv6_conf(ifname: &str, key: &str, value: &str) -> io::Result<()> {
    check_ifname(ifname)?;
    check_component("sysctl key", key)?;
    let path = format!("/proc/sys/net/ipv6/conf/{ifname}/{key}");
    OpenOptions::new()
        .write(true)
        .open(&path)
        .and_then(|mut file| file.write_all(value.as_bytes()))
        .map_err(context(format_args!("{path} = {value:?}")))
}

/// The IPv4 netmask of a prefix length (`InvalidInput` beyond 32).
fn ipv4_netmask(prefix_len: u8) -> io::Result<Ipv4Addr> {
    match prefix_len {
        0 => Ok(Ipv4Addr::UNSPECIFIED),
        1..=32 => Ok(Ipv4Addr::from_bits(u32::MAX << (32 - prefix_len))),
        _ => Err(invalid(format!(
            "IPv4 prefix length {prefix_len} is over 32"
        ))),
    }
}

fn check_ipv6_prefix(prefix_len: u8) -> io::Result<()> {
    if prefix_len > 128 {
        return Err(invalid(format!(
            "IPv6 prefix length {prefix_len} is over 128"
        )));
    }
    Ok(())
}

/// The IPv6 netmask of a prefix length of at most 128, as a number.
fn ipv6_mask(prefix_len: u8) -> u128 {
    match prefix_len {
        0 => 0,
        _ => u128::MAX << (128 - u32::from(prefix_len.min(128))),
    }
}

/// `AF_INET` (2, an `int` in libc) as a `sa_family_t`.
#[allow(clippy::cast_possible_truncation)]
const SA_FAMILY_INET: libc::sa_family_t = libc::AF_INET as libc::sa_family_t;

/// `struct sockaddr_in` (port 0) in the clothes of a `struct sockaddr`: both are 16 bytes,
/// family first, then the port and the address in network order.
fn ipv4_sockaddr(addr: Ipv4Addr) -> libc::sockaddr {
    let mut sa_data = [0 as c_char; 14];
    for (dst, byte) in sa_data[2..6].iter_mut().zip(addr.octets()) {
        *dst = byte as c_char;
    }
    libc::sockaddr {
        sa_family: SA_FAMILY_INET,
        sa_data,
    }
}

/// The address of a `struct sockaddr_in` held in a `struct sockaddr`.
fn sockaddr_ipv4(sa: &libc::sockaddr) -> Ipv4Addr {
    let d = &sa.sa_data;
    Ipv4Addr::new(d[2] as u8, d[3] as u8, d[4] as u8, d[5] as u8)
}

fn invalid(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv4_netmasks() {
        let mask = |len| ipv4_netmask(len).unwrap().to_string();
        assert_eq!(mask(0), "0.0.0.0");
        assert_eq!(mask(1), "128.0.0.0");
        assert_eq!(mask(15), "255.254.0.0");
        assert_eq!(mask(24), "255.255.255.0");
        assert_eq!(mask(31), "255.255.255.254");
        assert_eq!(mask(32), "255.255.255.255");
        let err = ipv4_netmask(33).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    }

    #[test]
    fn ipv6_masks() {
        assert_eq!(ipv6_mask(0), 0);
        assert_eq!(ipv6_mask(1), 1 << 127);
        assert_eq!(ipv6_mask(48), 0xffff_ffff_ffff << 80);
        assert_eq!(ipv6_mask(64), (u64::MAX as u128) << 64);
        assert_eq!(ipv6_mask(128), u128::MAX);
        check_ipv6_prefix(128).unwrap();
        let err = check_ipv6_prefix(129).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    }

    #[test]
    fn ipv4_sockaddr_round_trip() {
        let addr = Ipv4Addr::new(198, 19, 0, 250);
        let sa = ipv4_sockaddr(addr);
        assert_eq!(sa.sa_family, libc::AF_INET as libc::sa_family_t);
        assert_eq!(&sa.sa_data[..2], &[0, 0], "port 0");
        assert_eq!(sockaddr_ipv4(&sa), addr);
    }

    #[test]
    fn ipv4_labels_stop_at_the_name_limit() {
        let labels: Vec<String> = ipv4_labels("tap0").take(3).collect();
        assert_eq!(labels, ["tap0", "tap0:0", "tap0:1"]);
        assert_eq!(ipv4_labels("exactly15bytes_").count(), 1);
        // 13 bytes leave room for ":0" to ":9".
        assert_eq!(ipv4_labels("thirteen-byte").count(), 11);
    }

    #[test]
    fn bad_arguments_are_invalid_input_before_any_syscall() {
        let v4 = IpAddr::V4(Ipv4Addr::new(198, 18, 0, 0));
        let v6 = IpAddr::V6("2001:2::".parse().unwrap());
        let cases = [
            add_address("sixteen-bytes-xx", v4, 24),
            add_address("x", v4, 33),
            add_address("x", v6, 129),
            add_route(v4, 24, v6, "x"),
            add_route("198.18.0.1".parse().unwrap(), 24, v4, "x"),
            add_route("2001:2::1".parse().unwrap(), 48, v6, "x"),
            add_route(v4, 24, v4, "a/b"),
            set_ipv6_conf("x", "../../ipv4/ip_forward", "1"),
            set_ipv6_conf("", "accept_dad", "0"),
            set_mtu("x", u32::MAX),
        ];
        for (i, result) in cases.into_iter().enumerate() {
            let err = result.unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "case {i}: {err}");
        }
    }

    #[test]
    fn kernel_struct_sizes() {
        // <linux/route.h> and <linux/ipv6_route.h> on LP64 (x86_64, aarch64).
        if cfg!(target_pointer_width = "64") {
            assert_eq!(std::mem::size_of::<RtEntry>(), 120);
            assert_eq!(std::mem::size_of::<In6Rtmsg>(), 80);
        }
    }
}
