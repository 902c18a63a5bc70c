//! Interface configuration by the classic ioctls (no netlink): MAC, MTU, up, addresses and
//! routes (added and removed), and IPv6 sysctls; the addresses of an interface are read with
//! `getifaddrs(3)`.
//!
//! Everything acts in the calling thread's current network namespace: each call makes its own
//! `AF_INET` / `AF_INET6` datagram socket, which belongs to the namespace the thread is in at
//! that moment (see [`netns::enter`](crate::netns::enter)). Interface names are checked as
//! for [`Tap::create`](crate::Tap::create) (`InvalidInput`); naming an interface that does
//! not exist (in this namespace) fails with "No such device" (`ENODEV`).

use std::ffi::{c_char, c_int, c_ulong, c_ushort, c_void, CStr, CString};
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
/// still the same interface, only `ip addr` shows the label; after [`del_address`], the first
/// free label may also be `IFNAME` itself or one between used ones); that needs a name short
/// enough for the label (`InvalidInput` otherwise). The interface should be up, so that the prefix
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
    match find_ipv4_label(sock.as_fd(), ifname, addr)? {
        Ipv4Label::Holding(_) => Ok(()),
        Ipv4Label::Absent {
            first_free: Some(label),
        } => set_ipv4_address(sock.as_fd(), &label, addr, mask),
        Ipv4Label::Absent { first_free: None } => Err(invalid(format!(
            "no free IPv4 label on {ifname} for another address {addr}"
        ))),
    }
}

/// Where an IPv4 address is among an interface's labels.
enum Ipv4Label {
    /// The label that holds the address.
    Holding(String),
    /// No label holds it; the first label without an address, if any.
    Absent { first_free: Option<String> },
}

/// Looks for `addr` on every label of [`ipv4_labels`] (`SIOCGIFADDR` each): removals leave
/// free labels between used ones, so the first free label does not end the search.
fn find_ipv4_label(sock: BorrowedFd<'_>, ifname: &str, addr: Ipv4Addr) -> io::Result<Ipv4Label> {
    let mut first_free = None;
    for label in ipv4_labels(ifname) {
        let mut req = ifreq(&label);
        // Given an address, SIOCGIFADDR looks for that address on that label first and else
        // answers the label's (first) address: EADDRNOTAVAIL means the label is free.
        req.ifr_ifru.ifru_addr = ipv4_sockaddr(addr);
        // SAFETY: SIOCGIFADDR takes a struct ifreq.
        match unsafe { ioctl(sock, libc::SIOCGIFADDR, &mut req) } {
            // SAFETY: SIOCGIFADDR has set the union's address member, a sockaddr (plain
            // integers, valid whatever their values).
            Ok(_) if sockaddr_ipv4(unsafe { &req.ifr_ifru.ifru_addr }) == addr => {
                return Ok(Ipv4Label::Holding(label))
            }
            Ok(_) => continue,
            Err(e) if e.raw_os_error() == Some(libc::EADDRNOTAVAIL) => {
                first_free.get_or_insert(label);
            }
            Err(e) => return Err(context(format_args!("SIOCGIFADDR {label}"))(e)),
        }
    }
    Ok(Ipv4Label::Absent { first_free })
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
    // Already there is no error.
    ipv6_address_ioctl(ifname, addr, prefix_len, Ipv6Op::Add)
}

/// Adding or removing an IPv6 address: the ioctl, its name, and the error that means there is
/// nothing to do.
#[derive(Clone, Copy)]
enum Ipv6Op {
    Add,
    Del,
}

/// SIOCSIFADDR / SIOCDIFADDR with a struct in6_ifreq for ADDR/PREFIX_LEN on IFNAME.
fn ipv6_address_ioctl(ifname: &str, addr: Ipv6Addr, prefix_len: u8, op: Ipv6Op) -> io::Result<()> {
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
    let (request, name, nothing_to_do) = match op {
        Ipv6Op::Add => (libc::SIOCSIFADDR, "SIOCSIFADDR", libc::EEXIST),
        // Neither that address nor that prefix length on the interface.
        Ipv6Op::Del => (libc::SIOCDIFADDR, "SIOCDIFADDR", libc::EADDRNOTAVAIL),
    };
    // SAFETY: SIOCSIFADDR and SIOCDIFADDR on an AF_INET6 socket take a struct in6_ifreq.
    match unsafe { ioctl(sock.as_fd(), request, &mut req) } {
        Err(e) if e.raw_os_error() == Some(nothing_to_do) => Ok(()),
        result => result
            .map(drop)
            .map_err(context(format_args!("{name} {ifname} {addr}/{prefix_len}"))),
    }
}

/// Removes ADDR/PREFIX_LEN from the interface, the inverse of [`add_address`]. An address not
/// present is not an error, nor is one present with another prefix length, which stays (as
/// with `ip addr del`, the prefix length is part of what names the address).
///
/// IPv4: finds the label holding the address (`SIOCGIFADDR` on `IFNAME`, `IFNAME:0`, ...,
/// all of them, as removals leave gaps), checks its netmask (`SIOCGIFNETMASK`) and sets the
/// label's address to `0.0.0.0` (`SIOCSIFADDR`), which removes it. The label is then free for
/// a later [`add_address`]. First it sets the interface's `promote_secondaries` sysctl to 1
/// (`/proc/sys/net/ipv4/conf/IFNAME`, following the thread's namespace as for
/// [`set_ipv6_conf`]): without it, removing the first address of a subnet, such as the one on
/// `IFNAME` itself, also silently removes the other addresses of that subnet and mask (the
/// kernel's "secondaries", whatever their labels); with it, the next one takes its place.
/// The ioctls reach only the first address of a label, so an address that another tool put
/// on a label after another address (`ip addr add ... label L`) cannot be removed this way
/// (an error says so; [`add_address`] gives each address a label of its own).
///
/// IPv6: `SIOCDIFADDR` with struct in6_ifreq.
pub fn del_address(ifname: &str, addr: IpAddr, prefix_len: u8) -> io::Result<()> {
    check_ifname(ifname)?;
    match addr {
        IpAddr::V4(addr) => del_ipv4_address(ifname, addr, prefix_len),
        IpAddr::V6(addr) => del_ipv6_address(ifname, addr, prefix_len),
    }
}

fn del_ipv4_address(ifname: &str, addr: Ipv4Addr, prefix_len: u8) -> io::Result<()> {
    let mask = ipv4_netmask(prefix_len)?;
    let sock = control_socket(libc::AF_INET)?;
    let Ipv4Label::Holding(label) = find_ipv4_label(sock.as_fd(), ifname, addr)? else {
        return Ok(());
    };
    let mut req = ifreq(&label);
    req.ifr_ifru.ifru_addr = ipv4_sockaddr(addr);
    // SAFETY: SIOCGIFNETMASK takes a struct ifreq.
    unsafe { ioctl(sock.as_fd(), libc::SIOCGIFNETMASK, &mut req) }
        .map_err(context(format_args!("SIOCGIFNETMASK {label} {addr}")))?;
    // SAFETY: SIOCGIFNETMASK has set the union's netmask member, a sockaddr (plain integers).
    if sockaddr_ipv4(unsafe { &req.ifr_ifru.ifru_netmask }) != mask {
        return Ok(());
    }
    // Without an address (family 0), SIOCGIFADDR answers the label's first address, which is
    // the one the SIOCSIFADDR below would replace.
    let mut req = ifreq(&label);
    // SAFETY: SIOCGIFADDR takes a struct ifreq.
    unsafe { ioctl(sock.as_fd(), libc::SIOCGIFADDR, &mut req) }
        .map_err(context(format_args!("SIOCGIFADDR {label}")))?;
    // SAFETY: SIOCGIFADDR has set the union's address member, a sockaddr (plain integers).
    let first = sockaddr_ipv4(unsafe { &req.ifr_ifru.ifru_addr });
    if first != addr {
        return Err(io::Error::other(format!(
            "cannot remove {addr} from {label}: the label holds {first} before it, and the \
             IPv4 ioctls reach only a label's first address"
        )));
    }
    write_conf("ipv4", ifname, "promote_secondaries", "1")?;
    let mut req = ifreq(&label);
    req.ifr_ifru.ifru_addr = ipv4_sockaddr(Ipv4Addr::UNSPECIFIED);
    // SAFETY: SIOCSIFADDR takes a struct ifreq.
    unsafe { ioctl(sock.as_fd(), libc::SIOCSIFADDR, &mut req) }.map_err(context(format_args!(
        "SIOCSIFADDR {label} 0.0.0.0 (removing {addr})"
    )))?;
    Ok(())
}

fn del_ipv6_address(ifname: &str, addr: Ipv6Addr, prefix_len: u8) -> io::Result<()> {
    // Not there is no error.
    ipv6_address_ioctl(ifname, addr, prefix_len, Ipv6Op::Del)
}

/// The interface's IPv4 and IPv6 addresses with their prefix lengths, in the kernel's order,
/// by `getifaddrs(3)` (netlink, in the thread's current namespace): the IPv4 ones of all its
/// labels (`IFNAME`, `IFNAME:0`, ...), the IPv6 ones including those the kernel made itself
/// (link-local `fe80::/64`) and tentative ones. An interface that does not exist fails with
/// "No such device" as elsewhere.
pub fn addresses(ifname: &str) -> io::Result<Vec<(IpAddr, u8)>> {
    check_ifname(ifname)?;
    ifindex(control_socket(libc::AF_INET)?.as_fd(), ifname)?;
    let list = IfAddrs::get()?;
    let alias_prefix = format!("{ifname}:");
    let mut out = Vec::new();
    let mut entry = list.0;
    while !entry.is_null() {
        // SAFETY: entry is a node of the list getifaddrs made, alive until `list` drops.
        let ifa = unsafe { &*entry };
        entry = ifa.ifa_next;
        if ifa.ifa_addr.is_null() || ifa.ifa_name.is_null() {
            continue;
        }
        // SAFETY: ifa_name is a NUL-terminated string of the list.
        let name = unsafe { CStr::from_ptr(ifa.ifa_name) }.to_bytes();
        // SAFETY: ifa_addr points to a sockaddr of the list (its family, at least).
        let family = c_int::from(unsafe { (*ifa.ifa_addr).sa_family });
        let (addr, mask) = match family {
            libc::AF_INET
                if name == ifname.as_bytes() || name.starts_with(alias_prefix.as_bytes()) =>
            {
                // SAFETY: an AF_INET entry's ifa_addr and (non-null) ifa_netmask are struct
                // sockaddr_in; read unaligned, whatever getifaddrs' layout.
                let addr =
                    unsafe { std::ptr::read_unaligned(ifa.ifa_addr.cast::<libc::sockaddr_in>()) };
                let mask = (!ifa.ifa_netmask.is_null()).then(|| {
                    // SAFETY: as above.
                    unsafe { std::ptr::read_unaligned(ifa.ifa_netmask.cast::<libc::sockaddr_in>()) }
                });
                (
                    IpAddr::V4(Ipv4Addr::from_bits(u32::from_be(addr.sin_addr.s_addr))),
                    mask.map_or(32, |m| m.sin_addr.s_addr.count_ones()),
                )
            }
            libc::AF_INET6 if name == ifname.as_bytes() => {
                // SAFETY: an AF_INET6 entry's ifa_addr and (non-null) ifa_netmask are struct
                // sockaddr_in6; read unaligned, whatever getifaddrs' layout.
                let addr =
                    unsafe { std::ptr::read_unaligned(ifa.ifa_addr.cast::<libc::sockaddr_in6>()) };
                let mask = (!ifa.ifa_netmask.is_null()).then(|| {
                    // SAFETY: as above.
                    unsafe {
                        std::ptr::read_unaligned(ifa.ifa_netmask.cast::<libc::sockaddr_in6>())
                    }
                });
                (
                    IpAddr::V6(Ipv6Addr::from(addr.sin6_addr.s6_addr)),
                    mask.map_or(128, |m| {
                        u128::from_be_bytes(m.sin6_addr.s6_addr).count_ones()
                    }),
                )
            }
            _ => continue,
        };
        let prefix_len = u8::try_from(mask).expect("a netmask has at most 128 bits");
        out.push((addr, prefix_len));
    }
    Ok(out)
}

/// The list of `getifaddrs(3)`, freed on drop.
struct IfAddrs(*mut libc::ifaddrs);

impl IfAddrs {
    fn get() -> io::Result<IfAddrs> {
        let mut list = std::ptr::null_mut();
        // SAFETY: getifaddrs only writes the head of a list it allocates into `list`.
        if unsafe { libc::getifaddrs(&mut list) } != 0 {
            return Err(context("getifaddrs")(io::Error::last_os_error()));
        }
        Ok(IfAddrs(list))
    }
}

impl Drop for IfAddrs {
    fn drop(&mut self) {
        // SAFETY: the list came from getifaddrs, is freed once, and nothing borrows it past
        // the IfAddrs.
        unsafe { libc::freeifaddrs(self.0) }
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
    route(RouteOp::Add, dest, prefix_len, via, ifname)
}

/// SIOCDELRT, the inverse of [`add_route`] with the same arguments and checks: removes the
/// route DEST/PREFIX via GATEWAY on IFNAME from the main table. A route not present is not an
/// error (nor a second removal). The gateway and interface must match the route's (an
/// unspecified `via` names the on-link route); an IPv4 route matches whatever its metric, an
/// IPv6 one only with metric 1024, the one [`add_route`] gives.
pub fn del_route(dest: IpAddr, prefix_len: u8, via: IpAddr, ifname: &str) -> io::Result<()> {
    route(RouteOp::Del, dest, prefix_len, via, ifname)
}

/// What [`route`] does: its ioctl, and the error that means it is already done.
#[derive(Clone, Copy)]
enum RouteOp {
    Add,
    Del,
}

impl RouteOp {
    fn request(self) -> c_ulong {
        match self {
            RouteOp::Add => libc::SIOCADDRT,
            RouteOp::Del => libc::SIOCDELRT,
        }
    }

    fn name(self) -> &'static str {
        match self {
            RouteOp::Add => "SIOCADDRT",
            RouteOp::Del => "SIOCDELRT",
        }
    }

    /// EEXIST: the route is there already; ESRCH: there is no such route.
    fn done_errno(self) -> c_int {
        match self {
            RouteOp::Add => libc::EEXIST,
            RouteOp::Del => libc::ESRCH,
        }
    }
}

fn route(op: RouteOp, dest: IpAddr, prefix_len: u8, via: IpAddr, ifname: &str) -> io::Result<()> {
    check_ifname(ifname)?;
    let what = || format!("{} {dest}/{prefix_len} via {via} dev {ifname}", op.name());
    let result = match (dest, via) {
        (IpAddr::V4(dest), IpAddr::V4(via)) => ipv4_route(op, dest, prefix_len, via, ifname),
        (IpAddr::V6(dest), IpAddr::V6(via)) => ipv6_route(op, dest, prefix_len, via, ifname),
        _ => return Err(invalid(format!("{}: mixed address families", what()))),
    };
    match result {
        Err(e) if e.raw_os_error() == Some(op.done_errno()) => Ok(()),
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

/// Errors without context: [`route`] adds it.
fn ipv4_route(
    op: RouteOp,
    dest: Ipv4Addr,
    prefix_len: u8,
    via: Ipv4Addr,
    ifname: &str,
) -> io::Result<()> {
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
    // SAFETY: SIOCADDRT and SIOCDELRT on an AF_INET socket take a struct rtentry; its one
    // pointer the kernel follows, rt_dev, is a NUL-terminated string that outlives the call
    // (the kernel only reads it).
    unsafe { ioctl(sock.as_fd(), op.request(), &mut route) }?;
    Ok(())
}

/// Errors without context: [`route`] adds it.
fn ipv6_route(
    op: RouteOp,
    dest: Ipv6Addr,
    prefix_len: u8,
    via: Ipv6Addr,
    ifname: &str,
) -> io::Result<()> {
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
    // SAFETY: SIOCADDRT and SIOCDELRT on an AF_INET6 socket take a struct in6_rtmsg (no
    // pointers).
    unsafe { ioctl(sock.as_fd(), op.request(), &mut route) }?;
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
    write_conf("ipv6", ifname, key, value)
}

/// Writes /proc/sys/net/FAMILY/conf/IFNAME/KEY, as [`set_ipv6_conf`] describes.
fn write_conf(family: &str, ifname: &str, key: &str, value: &str) -> io::Result<()> {
    check_ifname(ifname)?;
    check_component("sysctl key", key)?;
    let path = format!("/proc/sys/net/{family}/conf/{ifname}/{key}");
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
            del_address("sixteen-bytes-xx", v4, 24),
            del_address("x", v4, 33),
            del_address("x", v6, 129),
            del_route(v4, 24, v6, "x"),
            del_route("198.18.0.1".parse().unwrap(), 24, v4, "x"),
            del_route("2001:2::1".parse().unwrap(), 48, v6, "x"),
            del_route(v6, 129, v6, "x"),
            addresses("a/b").map(drop),
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
