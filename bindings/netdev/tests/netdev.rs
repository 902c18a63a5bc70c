//! The crate against the real kernel.
//!
//! Tests that need root print why they are skipped and pass without it (CI runs as root).
//! Each makes its own namespace `vlbt-nd-<pid>-<n>` (deleted at the end, also on failure) and
//! uses only 198.18.0.0/15 and 2001:2::/48, only inside it. Nothing touches the root
//! namespace's interfaces.

use std::io;
use std::net::{IpAddr, Ipv4Addr};
use std::os::unix::fs::MetadataExt;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Mutex};
use std::time::{Duration, Instant};

use netdev::{ifconfig, netns, Tap};

const TAP_NAME: &str = "vlbt-tap0";
const TAP_MAC: [u8; 6] = [0x02, 0x00, 0x00, 0x00, 0x02, 0x01];
const TAP_IPV4: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 10);
/// The made-up peer of the TAP → kernel test.
const PEER_MAC: [u8; 6] = [0x02, 0x00, 0x00, 0x00, 0x02, 0x0b];
const PEER_IPV4: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 11);
/// On the TAP's subnet, and nobody's.
const ABSENT_IPV4: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 50);
/// How long any wait for the kernel may take.
const WAIT: Duration = Duration::from_secs(2);

// ---------------------------------------------------------------------------------------------
// Fixtures

/// Whether the test may run; if not, says why on stderr.
fn have_root(test: &str) -> bool {
    // SAFETY: geteuid(2) takes no arguments and cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    if !root {
        eprintln!("{test}: skipped, needs root (network namespaces, TAP devices)");
    }
    root
}

/// A network namespace made by `ip netns add`, deleted on drop (also when a test fails).
struct Ns {
    name: String,
}

impl Ns {
    fn new() -> Ns {
        static SERIAL: AtomicUsize = AtomicUsize::new(0);
        // The first `ip netns add` sets up the /run/netns mount; don't race it.
        static ADDING: Mutex<()> = Mutex::new(());
        let n = SERIAL.fetch_add(1, Ordering::Relaxed);
        let name = format!("vlbt-nd-{}-{n}", std::process::id());
        let _serial = ADDING.lock().unwrap_or_else(|e| e.into_inner());
        ip(&["netns", "add", &name]);
        Ns { name }
    }

    /// The inode of the namespace, as `/proc/thread-self/ns/net` of a thread inside shows it.
    fn inode(&self) -> u64 {
        std::fs::metadata(format!("/run/netns/{}", self.name))
            .unwrap()
            .ino()
    }

    /// `ip -n NS ARGS...`, which must succeed; its stdout.
    fn ip(&self, args: &[&str]) -> String {
        let mut all = vec!["-n", self.name.as_str()];
        all.extend_from_slice(args);
        ip(&all)
    }
}

impl Drop for Ns {
    fn drop(&mut self) {
        match Command::new("ip")
            .args(["netns", "del", &self.name])
            .output()
        {
            Ok(out) if out.status.success() => {}
            Ok(out) => eprintln!(
                "ip netns del {}: {}",
                self.name,
                String::from_utf8_lossy(&out.stderr)
            ),
            Err(e) => eprintln!("ip netns del {}: {e}", self.name),
        }
    }
}

/// `ip ARGS...` (in the calling thread's namespace), which must succeed; its stdout.
fn ip(args: &[&str]) -> String {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The inode of the calling thread's network namespace.
fn thread_netns() -> u64 {
    std::fs::metadata("/proc/thread-self/ns/net").unwrap().ino()
}

/// The interface names `ip link` lists (run from the calling thread, so in its namespace),
/// sorted.
fn link_names() -> Vec<String> {
    let mut names: Vec<String> = ip(&["-o", "link", "show"])
        .lines()
        .filter_map(|line| line.split(": ").nth(1))
        .map(|name| name.split('@').next().unwrap().to_owned())
        .collect();
    names.sort();
    names
}

/// Enters `ns` and makes the TAP there: MAC, no DAD, up, 198.19.0.10/24.
fn configured_tap(ns: &Ns) -> (netns::NetnsGuard, Tap) {
    let guard = netns::enter(&ns.name).unwrap();
    let tap = Tap::create(TAP_NAME).unwrap();
    ifconfig::set_mac(tap.name(), TAP_MAC).unwrap();
    ifconfig::set_ipv6_conf(tap.name(), "accept_dad", "0").unwrap();
    ifconfig::set_up(tap.name()).unwrap();
    ifconfig::add_address(tap.name(), IpAddr::V4(TAP_IPV4), 24).unwrap();
    (guard, tap)
}

/// The first frame from the TAP that `wanted` accepts, waiting at most [`WAIT`]; the others
/// (IPv6 router solicitations, MLD, ...) are skipped.
fn wait_for_frame(tap: &Tap, what: &str, wanted: impl Fn(&[u8]) -> bool) -> Vec<u8> {
    let start = Instant::now();
    let mut buf = [0u8; 2048];
    let mut skipped = Vec::new();
    while start.elapsed() < WAIT {
        match tap.recv(&mut buf).unwrap() {
            Some(len) if wanted(&buf[..len]) => return buf[..len].to_vec(),
            Some(len) => skipped.push(format!("{:02x?}", &buf[..len.min(24)])),
            None => std::thread::sleep(Duration::from_millis(5)),
        }
    }
    panic!("no {what} from the TAP within {WAIT:?}; skipped frames: {skipped:#?}");
}

// ---------------------------------------------------------------------------------------------
// Frames

const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_ARP: u16 = 0x0806;

fn ethertype(frame: &[u8]) -> Option<u16> {
    Some(u16::from_be_bytes(frame.get(12..14)?.try_into().unwrap()))
}

fn ethernet(dst: [u8; 6], src: [u8; 6], ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut frame = Vec::with_capacity(14 + payload.len());
    frame.extend_from_slice(&dst);
    frame.extend_from_slice(&src);
    frame.extend_from_slice(&ethertype.to_be_bytes());
    frame.extend_from_slice(payload);
    frame
}

/// An ARP packet for IPv4 over Ethernet, as seen in a frame.
#[derive(Debug, PartialEq)]
struct Arp {
    op: u16,
    sender_mac: [u8; 6],
    sender_ip: Ipv4Addr,
    target_mac: [u8; 6],
    target_ip: Ipv4Addr,
}

impl Arp {
    fn parse(frame: &[u8]) -> Option<Arp> {
        if ethertype(frame)? != ETHERTYPE_ARP || frame.len() < 14 + 28 {
            return None;
        }
        let p = &frame[14..];
        // Ethernet, IPv4, address lengths 6 and 4.
        if p[..6] != [0, 1, 8, 0, 6, 4] {
            return None;
        }
        let ip = |at: usize| Ipv4Addr::new(p[at], p[at + 1], p[at + 2], p[at + 3]);
        Some(Arp {
            op: u16::from_be_bytes([p[6], p[7]]),
            sender_mac: p[8..14].try_into().unwrap(),
            sender_ip: ip(14),
            target_mac: p[18..24].try_into().unwrap(),
            target_ip: ip(24),
        })
    }

    fn to_bytes(&self) -> Vec<u8> {
        let mut p = vec![0, 1, 8, 0, 6, 4];
        p.extend_from_slice(&self.op.to_be_bytes());
        p.extend_from_slice(&self.sender_mac);
        p.extend_from_slice(&self.sender_ip.octets());
        p.extend_from_slice(&self.target_mac);
        p.extend_from_slice(&self.target_ip.octets());
        p
    }
}

/// The Internet checksum (RFC 1071) of `data`; 0 over data that holds a correct one.
fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = data
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], c.get(1).copied().unwrap_or(0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// An IPv4 packet (20-byte header, DF, TTL 64) with correct header checksum.
fn ipv4_packet(src: Ipv4Addr, dst: Ipv4Addr, protocol: u8, payload: &[u8]) -> Vec<u8> {
    let total = (20 + payload.len()) as u16;
    let mut p = vec![0x45, 0];
    p.extend_from_slice(&total.to_be_bytes());
    p.extend_from_slice(&[0x12, 0x34, 0x40, 0x00, 64, protocol, 0, 0]);
    p.extend_from_slice(&src.octets());
    p.extend_from_slice(&dst.octets());
    let sum = checksum(&p);
    p[10..12].copy_from_slice(&sum.to_be_bytes());
    p.extend_from_slice(payload);
    p
}

/// An ICMP echo message (type 8 request, 0 reply) with correct checksum.
fn icmp_echo(kind: u8, id: u16, seq: u16, data: &[u8]) -> Vec<u8> {
    let mut m = vec![kind, 0, 0, 0];
    m.extend_from_slice(&id.to_be_bytes());
    m.extend_from_slice(&seq.to_be_bytes());
    m.extend_from_slice(data);
    let sum = checksum(&m);
    m[2..4].copy_from_slice(&sum.to_be_bytes());
    m
}

// ---------------------------------------------------------------------------------------------
// Without root

#[test]
fn bad_names_are_invalid_input_before_touching_the_system() {
    for name in ["", "sixteen-bytes-xx", "a/b", "nul\0"] {
        let err = Tap::create(name).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{name:?}: {err}");
        let err = ifconfig::set_up(name).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{name:?}: {err}");
    }
    for name in ["", "..", "../../proc/1/ns/net", "a\0"] {
        let err = netns::enter(name).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{name:?}: {err}");
    }
}

#[test]
fn entering_an_absent_namespace_is_not_found() {
    let err = netns::enter("vlbt-nd-absent-namespace").unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::NotFound, "{err}");
    assert!(
        err.to_string().contains("vlbt-nd-absent-namespace"),
        "{err}"
    );
}

// ---------------------------------------------------------------------------------------------
// With root

#[test]
fn enter_and_leave_namespaces() {
    if !have_root("enter_and_leave_namespaces") {
        return;
    }
    let outer = Ns::new();
    let inner = Ns::new();
    // Both ends of the pair in the namespace: they go with it.
    outer.ip(&[
        "link",
        "add",
        "vlbt-nd-a",
        "type",
        "veth",
        "peer",
        "name",
        "vlbt-nd-b",
    ]);
    let own = thread_netns();
    let own_links = link_names();
    assert!(!own_links.contains(&"vlbt-nd-a".to_owned()));

    let guard = netns::enter(&outer.name).unwrap();
    assert_eq!(thread_netns(), outer.inode());
    assert_eq!(link_names(), ["lo", "vlbt-nd-a", "vlbt-nd-b"]);
    // Only this thread moved: the main thread (what /proc/self shows) did not.
    let main_thread = std::fs::metadata("/proc/self/ns/net").unwrap().ino();
    assert_eq!(main_thread, own);
    {
        let _nested = netns::enter(&inner.name).unwrap();
        assert_eq!(thread_netns(), inner.inode());
        assert_eq!(link_names(), ["lo"]);
    }
    assert_eq!(
        thread_netns(),
        outer.inode(),
        "a nested guard returns to the outer namespace"
    );
    drop(guard);

    assert_eq!(thread_netns(), own);
    assert_eq!(link_names(), own_links);
}

#[test]
fn tap_configuration_shows_in_ip() {
    if !have_root("tap_configuration_shows_in_ip") {
        return;
    }
    let ns = Ns::new();
    let guard = netns::enter(&ns.name).unwrap();
    let tap = Tap::create(TAP_NAME).unwrap();
    assert_eq!(tap.name(), TAP_NAME);
    let link = ns.ip(&["-j", "link", "show", "dev", TAP_NAME]);
    assert!(
        link.contains(&format!("\"ifindex\":{},", tap.ifindex())),
        "{link}"
    );
    // The name is taken while the TAP lives.
    let err = Tap::create(TAP_NAME).unwrap_err();
    assert!(err.to_string().contains("TUNSETIFF"), "{err}");
    // A pattern gets a name from the kernel.
    let patterned = Tap::create("vlbt%d").unwrap();
    assert!(patterned.name().starts_with("vlbt") && !patterned.name().contains('%'));
    drop(patterned);

    let name = tap.name();
    ifconfig::set_ipv6_conf(name, "accept_dad", "0").unwrap();
    ifconfig::set_mac(name, TAP_MAC).unwrap();
    ifconfig::set_mtu(name, 1400).unwrap();
    ifconfig::set_up(name).unwrap();
    ifconfig::set_up(name).unwrap();
    let addresses: [(IpAddr, u8); 3] = [
        ("198.19.0.10".parse().unwrap(), 24),
        ("198.19.1.10".parse().unwrap(), 25),
        ("2001:2:0:2::10".parse().unwrap(), 64),
    ];
    for _ in 0..2 {
        for (addr, len) in addresses {
            ifconfig::add_address(name, addr, len).unwrap();
        }
    }
    let routes: [(&str, u8, &str); 3] = [
        ("198.18.64.0", 18, "198.19.0.1"),
        ("198.18.200.0", 24, "0.0.0.0"),
        ("2001:2:0:64::", 64, "2001:2:0:2::1"),
    ];
    for _ in 0..2 {
        for (dest, len, via) in routes {
            ifconfig::add_route(dest.parse().unwrap(), len, via.parse().unwrap(), name).unwrap();
        }
    }
    // Wrong calls fail with context.
    let err = ifconfig::set_mtu("vlbt-absent", 1400).unwrap_err();
    assert!(err.to_string().contains("SIOCSIFMTU vlbt-absent"), "{err}");
    let err = ifconfig::add_route(
        "198.18.32.0".parse().unwrap(),
        24,
        "198.18.0.1".parse().unwrap(),
        name,
    )
    .unwrap_err();
    assert!(
        err.to_string().contains("SIOCADDRT 198.18.32.0/24"),
        "{err}"
    );

    let link = ns.ip(&["-j", "link", "show", "dev", name]);
    assert!(link.contains("\"mtu\":1400"), "{link}");
    assert!(link.contains("\"address\":\"02:00:00:00:02:01\""), "{link}");
    assert!(link.contains("\"UP\""), "{link}");
    let addr = ns.ip(&["-j", "addr", "show", "dev", name]);
    for expected in [
        "\"local\":\"198.19.0.10\",\"prefixlen\":24",
        "\"local\":\"198.19.1.10\",\"prefixlen\":25",
        "\"local\":\"2001:2:0:2::10\",\"prefixlen\":64",
    ] {
        assert_eq!(addr.matches(expected).count(), 1, "{expected} in {addr}");
    }
    assert!(!addr.contains("tentative"), "DAD is off: {addr}");
    let v4_routes = ns.ip(&["route"]);
    assert!(
        v4_routes.contains("198.18.64.0/18 via 198.19.0.1 dev vlbt-tap0"),
        "{v4_routes}"
    );
    assert!(
        v4_routes.contains("198.18.200.0/24 dev vlbt-tap0"),
        "{v4_routes}"
    );
    let v6_routes = ns.ip(&["-6", "route"]);
    assert!(
        v6_routes.contains("2001:2:0:64::/64 via 2001:2:0:2::1 dev vlbt-tap0"),
        "{v6_routes}"
    );

    drop(tap);
    assert!(
        !ns.ip(&["-o", "link"]).contains(TAP_NAME),
        "gone with the Tap"
    );
    drop(guard);
}

#[test]
fn ipv6_sysctls_follow_the_thread() {
    if !have_root("ipv6_sysctls_follow_the_thread") {
        return;
    }
    const LO_HOP_LIMIT: &str = "/proc/sys/net/ipv6/conf/lo/hop_limit";
    let ns = Ns::new();
    let root_value = std::fs::read_to_string(LO_HOP_LIMIT).unwrap();
    let value = if root_value.trim() == "33" {
        "34"
    } else {
        "33"
    };
    // A thread that stays in the root namespace (threads start in their creator's).
    let (ask, asked) = mpsc::channel::<()>();
    let (tell, told) = mpsc::channel::<String>();
    let observer = std::thread::spawn(move || {
        while asked.recv().is_ok() {
            tell.send(std::fs::read_to_string(LO_HOP_LIMIT).unwrap())
                .unwrap();
        }
    });

    let guard = netns::enter(&ns.name).unwrap();
    let tap = Tap::create(TAP_NAME).unwrap();
    // Unlike /proc/net, which is the main thread's (/proc/self/net).
    let dev = |path| std::fs::read_to_string(path).unwrap().contains(TAP_NAME);
    assert!(dev("/proc/thread-self/net/dev") && !dev("/proc/net/dev"));
    // The TAP's directory exists only in the namespace, and this thread finds it.
    ifconfig::set_ipv6_conf(tap.name(), "accept_dad", "0").unwrap();
    let dad = format!("/proc/sys/net/ipv6/conf/{TAP_NAME}/accept_dad");
    assert_eq!(std::fs::read_to_string(&dad).unwrap().trim(), "0");
    ifconfig::set_ipv6_conf("lo", "hop_limit", value).unwrap();
    assert_eq!(std::fs::read_to_string(LO_HOP_LIMIT).unwrap().trim(), value);
    let seen_by_ip = Command::new("ip")
        .args(["netns", "exec", &ns.name, "cat", LO_HOP_LIMIT])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&seen_by_ip.stdout).trim(), value);
    ask.send(()).unwrap();
    assert_eq!(told.recv().unwrap(), root_value, "the root namespace's lo");
    // A missing interface is NotFound.
    let err = ifconfig::set_ipv6_conf("vlbt-absent", "accept_dad", "0").unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::NotFound, "{err}");
    drop(tap);
    drop(guard);

    assert_eq!(std::fs::read_to_string(LO_HOP_LIMIT).unwrap(), root_value);
    assert!(std::fs::metadata(&dad).is_err(), "{dad} after leaving");
    drop(ask);
    observer.join().unwrap();
}

#[test]
fn kernel_to_tap_arp_request() {
    if !have_root("kernel_to_tap_arp_request") {
        return;
    }
    let ns = Ns::new();
    let (guard, tap) = configured_tap(&ns);
    let mut ping = Command::new("ip")
        .args(["netns", "exec", &ns.name, "ping", "-c1", "-W1"])
        .arg(ABSENT_IPV4.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let who_has = |frame: &[u8]| {
        Arp::parse(frame).is_some_and(|arp| arp.op == 1 && arp.target_ip == ABSENT_IPV4)
    };
    let frame = wait_for_frame(&tap, "ARP request for 198.19.0.50", who_has);
    let _ = ping.kill();
    let _ = ping.wait();

    assert_eq!(frame[..6], [0xff; 6], "broadcast");
    assert_eq!(frame[6..12], TAP_MAC, "from the TAP's MAC");
    let arp = Arp::parse(&frame).unwrap();
    assert_eq!(arp.sender_mac, TAP_MAC);
    assert_eq!(arp.sender_ip, TAP_IPV4);
    drop(tap);
    drop(guard);
}

#[test]
fn tap_to_kernel_echo_request_is_answered() {
    if !have_root("tap_to_kernel_echo_request_is_answered") {
        return;
    }
    let ns = Ns::new();
    let (guard, tap) = configured_tap(&ns);
    let err = tap.send(&[0u8; 4]).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "a runt: {err}");

    let data = b"vpnlb netdev test";
    let request = ipv4_packet(PEER_IPV4, TAP_IPV4, 1, &icmp_echo(8, 0x4242, 7, data));
    assert!(tap
        .send(&ethernet(TAP_MAC, PEER_MAC, ETHERTYPE_IPV4, &request))
        .unwrap());

    // The kernel does not know the peer's MAC yet.
    let who_has = |frame: &[u8]| {
        Arp::parse(frame).is_some_and(|arp| arp.op == 1 && arp.target_ip == PEER_IPV4)
    };
    let frame = wait_for_frame(&tap, "ARP request for 198.19.0.11", who_has);
    let arp = Arp::parse(&frame).unwrap();
    assert_eq!((arp.sender_mac, arp.sender_ip), (TAP_MAC, TAP_IPV4));
    let reply = Arp {
        op: 2,
        sender_mac: PEER_MAC,
        sender_ip: PEER_IPV4,
        target_mac: TAP_MAC,
        target_ip: TAP_IPV4,
    };
    assert!(tap
        .send(&ethernet(
            TAP_MAC,
            PEER_MAC,
            ETHERTYPE_ARP,
            &reply.to_bytes()
        ))
        .unwrap());

    let echo_reply = |frame: &[u8]| {
        ethertype(frame) == Some(ETHERTYPE_IPV4) && frame.len() >= 14 + 20 + 8 && {
            let ip = &frame[14..];
            ip[9] == 1 && ip[12..16] == TAP_IPV4.octets() && ip[20] == 0
        }
    };
    let frame = wait_for_frame(&tap, "ICMP echo reply", echo_reply);
    assert_eq!(frame[..6], PEER_MAC, "to the MAC the ARP reply gave");
    assert_eq!(frame[6..12], TAP_MAC);
    let ip = &frame[14..];
    let header_len = usize::from(ip[0] & 0x0f) * 4;
    let total_len = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
    assert_eq!(checksum(&ip[..header_len]), 0, "IPv4 header checksum");
    assert_eq!(ip[16..20], PEER_IPV4.octets());
    let icmp = &ip[header_len..total_len];
    assert_eq!(checksum(icmp), 0, "ICMP checksum");
    assert_eq!(icmp[..2], [0, 0], "echo reply");
    assert_eq!(icmp[4..8], [0x42, 0x42, 0, 7], "identifier and sequence");
    assert_eq!(&icmp[8..], data);
    drop(tap);
    drop(guard);
}

/// `ip -o addr show dev IFNAME scope global` in `ns`, as sorted "ADDR/LEN LABEL" (IPv4) and
/// "ADDR/LEN" (IPv6) lines.
fn global_addresses(ns: &Ns, ifname: &str) -> Vec<String> {
    let mut found: Vec<String> = ns
        .ip(&["-o", "addr", "show", "dev", ifname, "scope", "global"])
        .lines()
        .map(|line| {
            let fields: Vec<&str> = line
                .split('\\')
                .next()
                .unwrap()
                .split_whitespace()
                .collect();
            match fields[2] {
                "inet" => format!("{} {}", fields[3], fields.last().unwrap()),
                _ => fields[3].to_owned(),
            }
        })
        .collect();
    found.sort();
    found
}

/// [`ifconfig::addresses`] without the link-local ones, as sorted "ADDR/LEN".
fn our_addresses(ifname: &str) -> Vec<String> {
    let mut found: Vec<String> = ifconfig::addresses(ifname)
        .unwrap()
        .into_iter()
        .filter(|(addr, _)| !matches!(addr, IpAddr::V6(v6) if v6.is_unicast_link_local()))
        .map(|(addr, len)| format!("{addr}/{len}"))
        .collect();
    found.sort();
    found
}

#[test]
fn addresses_and_routes_come_and_go() {
    if !have_root("addresses_and_routes_come_and_go") {
        return;
    }
    let ns = Ns::new();
    let guard = netns::enter(&ns.name).unwrap();
    let tap = Tap::create(TAP_NAME).unwrap();
    let name = tap.name();
    ifconfig::set_ipv6_conf(name, "accept_dad", "0").unwrap();
    ifconfig::set_up(name).unwrap();
    let v4 = |s: &str| IpAddr::V4(s.parse().unwrap());
    let v6 = |s: &str| IpAddr::V6(s.parse().unwrap());
    // The first address of 198.18.0.0/24 (the kernel's "primary"), another of that subnet
    // (a "secondary", which goes with the primary unless promoted), one of another subnet.
    let primary = (v4("198.18.0.1"), 24);
    let secondary = (v4("198.18.0.2"), 24);
    let other = (v4("198.18.1.1"), 25);
    let kept_v6 = (v6("2001:2:0:2::1"), 64);
    let gone_v6 = (v6("2001:2:0:1::1"), 64);
    for (addr, len) in [primary, secondary, other, gone_v6, kept_v6] {
        ifconfig::add_address(name, addr, len).unwrap();
    }
    assert_eq!(
        global_addresses(&ns, name),
        [
            "198.18.0.1/24 vlbt-tap0",
            "198.18.0.2/24 vlbt-tap0:0",
            "198.18.1.1/25 vlbt-tap0:1",
            "2001:2:0:1::1/64",
            "2001:2:0:2::1/64",
        ]
    );
    assert_eq!(
        our_addresses(name),
        [
            "198.18.0.1/24",
            "198.18.0.2/24",
            "198.18.1.1/25",
            "2001:2:0:1::1/64",
            "2001:2:0:2::1/64",
        ]
    );

    // The primary: its secondary stays (promoted), and so does the subnet's route.
    ifconfig::del_address(name, primary.0, primary.1).unwrap();
    assert_eq!(
        global_addresses(&ns, name),
        [
            "198.18.0.2/24 vlbt-tap0:0",
            "198.18.1.1/25 vlbt-tap0:1",
            "2001:2:0:1::1/64",
            "2001:2:0:2::1/64",
        ]
    );
    let v4_routes = ns.ip(&["route"]);
    assert!(
        v4_routes.contains("198.18.0.0/24 dev vlbt-tap0 proto kernel scope link src 198.18.0.2"),
        "{v4_routes}"
    );
    // An alias, and an IPv6 address.
    ifconfig::del_address(name, secondary.0, secondary.1).unwrap();
    ifconfig::del_address(name, gone_v6.0, gone_v6.1).unwrap();
    assert_eq!(
        global_addresses(&ns, name),
        ["198.18.1.1/25 vlbt-tap0:1", "2001:2:0:2::1/64"]
    );
    assert_eq!(our_addresses(name), ["198.18.1.1/25", "2001:2:0:2::1/64"]);

    // Absent addresses, and present ones under another prefix length, are left alone.
    for (addr, len) in [
        primary,
        secondary,
        gone_v6,
        (v4("198.18.9.9"), 24),
        (v6("2001:2:0:9::9"), 64),
        (other.0, 24),
        (kept_v6.0, 48),
    ] {
        ifconfig::del_address(name, addr, len).unwrap();
    }
    assert_eq!(our_addresses(name), ["198.18.1.1/25", "2001:2:0:2::1/64"]);

    // The freed labels are used again, and an address after a free label is found there
    // (not added twice).
    ifconfig::add_address(name, other.0, other.1).unwrap();
    ifconfig::add_address(name, primary.0, primary.1).unwrap();
    ifconfig::add_address(name, secondary.0, secondary.1).unwrap();
    ifconfig::add_address(name, other.0, other.1).unwrap();
    assert_eq!(
        global_addresses(&ns, name),
        [
            "198.18.0.1/24 vlbt-tap0",
            "198.18.0.2/24 vlbt-tap0:0",
            "198.18.1.1/25 vlbt-tap0:1",
            "2001:2:0:2::1/64",
        ]
    );

    // A label that another tool gave two addresses: only its first is in reach.
    for addr in ["198.18.3.1/24", "198.18.3.2/24"] {
        ns.ip(&["addr", "add", addr, "dev", name, "label", "vlbt-tap0:7"]);
    }
    let err = ifconfig::del_address(name, v4("198.18.3.2"), 24).unwrap_err();
    assert!(
        err.to_string()
            .contains("cannot remove 198.18.3.2 from vlbt-tap0:7"),
        "{err}"
    );
    ifconfig::del_address(name, v4("198.18.3.1"), 24).unwrap();
    ifconfig::del_address(name, v4("198.18.3.2"), 24).unwrap();
    assert_eq!(our_addresses(name).len(), 4);

    // Routes: each removed twice, and one that never was.
    let routes: [(&str, u8, &str); 4] = [
        ("198.18.64.0", 18, "198.18.1.2"),
        ("198.18.200.0", 24, "0.0.0.0"),
        ("2001:2:0:64::", 64, "2001:2:0:2::ff"),
        ("2001:2:0:65::", 64, "::"),
    ];
    for (dest, len, via) in routes {
        ifconfig::add_route(dest.parse().unwrap(), len, via.parse().unwrap(), name).unwrap();
    }
    let v4_routes = ns.ip(&["route"]);
    let v6_routes = ns.ip(&["-6", "route"]);
    for expected in [
        "198.18.64.0/18 via 198.18.1.2 dev vlbt-tap0",
        "198.18.200.0/24 dev vlbt-tap0",
    ] {
        assert!(v4_routes.contains(expected), "{expected} in {v4_routes}");
    }
    for expected in [
        "2001:2:0:64::/64 via 2001:2:0:2::ff dev vlbt-tap0",
        "2001:2:0:65::/64 dev vlbt-tap0",
    ] {
        assert!(v6_routes.contains(expected), "{expected} in {v6_routes}");
    }
    // A gateway or interface other than the route's does not name it.
    ifconfig::del_route(v4("198.18.64.0"), 18, v4("198.18.1.3"), name).unwrap();
    ifconfig::del_route(v6("2001:2:0:64::"), 64, v6("2001:2:0:2::fe"), name).unwrap();
    assert!(ns.ip(&["route"]).contains("198.18.64.0/18 via 198.18.1.2"));
    assert!(ns.ip(&["-6", "route"]).contains("2001:2:0:64::/64 via"));
    for _ in 0..2 {
        for (dest, len, via) in routes {
            ifconfig::del_route(dest.parse().unwrap(), len, via.parse().unwrap(), name).unwrap();
        }
    }
    ifconfig::del_route(v4("198.18.128.0"), 24, v4("0.0.0.0"), name).unwrap();
    ifconfig::del_route(v6("2001:2:0:99::"), 64, v6("::"), name).unwrap();
    let v4_routes = ns.ip(&["route"]);
    let v6_routes = ns.ip(&["-6", "route"]);
    assert!(
        !v4_routes.contains("198.18.64.0") && !v4_routes.contains("198.18.200.0"),
        "{v4_routes}"
    );
    assert!(
        !v6_routes.contains("2001:2:0:64::") && !v6_routes.contains("2001:2:0:65::"),
        "{v6_routes}"
    );
    // The addresses' own routes are still there.
    assert!(
        v4_routes.contains("198.18.0.0/24 dev vlbt-tap0"),
        "{v4_routes}"
    );
    assert!(
        v6_routes.contains("2001:2:0:2::/64 dev vlbt-tap0"),
        "{v6_routes}"
    );

    // Wrong calls fail with context.
    let err = ifconfig::del_route(v4("198.18.64.0"), 18, v4("0.0.0.0"), "vlbt-absent").unwrap_err();
    assert!(
        err.to_string().contains("SIOCDELRT 198.18.64.0/18"),
        "{err}"
    );
    for addr in [primary.0, kept_v6.0] {
        let err = ifconfig::del_address("vlbt-absent", addr, 24).unwrap_err();
        assert!(err.to_string().contains("vlbt-absent"), "{err}");
        assert_eq!(err.raw_os_error(), None, "with context: {err}");
    }
    let err = ifconfig::addresses("vlbt-absent").unwrap_err();
    assert!(err.to_string().contains("No such device"), "{err}");

    drop(tap);
    drop(guard);
}
