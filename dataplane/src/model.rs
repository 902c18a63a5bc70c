//! What the pipeline knows about the appliance: interfaces, routes, neighbors and services.
//!
//! [`ApplianceSpec`] is the plain, validated configuration (the control plane builds it from TOML
//! and edits it: gateway states, weights, neighbors). [`Snapshot`] is the immutable, derived view
//! the workers read on the hot path: precomputed Maglev tables, scheduler candidates, gateway next
//! hops and the local-address index. The control thread builds a new snapshot for every change and
//! swaps it in; workers never see a half-applied change.

use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasherDefault, Hasher};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;
use std::sync::Arc;

use serde::Serialize;

use crate::classify::PortPlan;
pub use crate::protocols::Listeners;
use crate::redirect::LoadBoard;
use crate::schedule::maglev::{MaglevError, MaglevMember, MaglevTable};
use crate::schedule::Scheduler;
use crate::schedule::{Candidate, GatewayState, SchedulerKind};
use crate::wire::ethernet::{EthernetAddress, Vlan};

/// A multiply-rotate hasher (FxHash's) for the snapshot's read-only maps. Their keys come from
/// the configuration and are only looked up by traffic, never inserted, so a keyed hash buys no
/// flooding resistance here; SipHash would cost tens of nanoseconds per packet.
#[derive(Default, Clone, Copy)]
pub struct FastHasher(u64);

impl Hasher for FastHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        const K: u64 = 0x517c_c1b7_2722_0a95;
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let mut w = [0u8; 8];
            w.copy_from_slice(c);
            self.0 = (self.0.rotate_left(5) ^ u64::from_le_bytes(w)).wrapping_mul(K);
        }
        for &b in chunks.remainder() {
            self.0 = (self.0.rotate_left(5) ^ u64::from(b)).wrapping_mul(K);
        }
    }

    #[inline]
    fn write_u8(&mut self, i: u8) {
        self.write_u64(u64::from(i));
    }

    #[inline]
    fn write_u16(&mut self, i: u16) {
        self.write_u64(u64::from(i));
    }

    // Integer keys (the per-family address maps) take one round per word instead of one per
    // byte through `write`.
    #[inline]
    fn write_u32(&mut self, i: u32) {
        self.write_u64(u64::from(i));
    }

    #[inline]
    #[allow(clippy::cast_possible_truncation)] // the two halves, on purpose
    fn write_u128(&mut self, i: u128) {
        self.write_u64(i as u64);
        self.write_u64((i >> 64) as u64);
    }

    #[inline]
    fn write_u64(&mut self, i: u64) {
        self.0 = (self.0.rotate_left(5) ^ i).wrapping_mul(0x517c_c1b7_2722_0a95);
    }

    #[inline]
    fn write_usize(&mut self, i: usize) {
        self.write_u64(i as u64);
    }

    #[inline]
    fn finish(&self) -> u64 {
        self.0
    }
}

type FastMap<K, V> = HashMap<K, V, BuildHasherDefault<FastHasher>>;

/// An address with a prefix length, e.g. `198.18.0.1/24`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct IpCidr {
    pub addr: IpAddr,
    pub prefix: u8,
}

impl IpCidr {
    pub fn new(addr: IpAddr, prefix: u8) -> Option<Self> {
        let max = if addr.is_ipv4() { 32 } else { 128 };
        (prefix <= max).then_some(IpCidr { addr, prefix })
    }

    /// Whether `ip` is inside this prefix (always false across families).
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(a)) => {
                let mask = mask_v4(self.prefix);
                u32::from(net) & mask == u32::from(a) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(a)) => {
                let mask = mask_v6(self.prefix);
                u128::from(net) & mask == u128::from(a) & mask
            }
            _ => false,
        }
    }
}

impl fmt::Display for IpCidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl FromStr for IpCidr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (a, p) = s
            .split_once('/')
            .ok_or_else(|| format!("`{s}` is not ADDRESS/PREFIX"))?;
        let addr: IpAddr = a
            .parse()
            .map_err(|_| format!("`{a}` is not an IP address"))?;
        let prefix: u8 = p
            .parse()
            .map_err(|_| format!("`{p}` is not a prefix length"))?;
        IpCidr::new(addr, prefix).ok_or_else(|| format!("prefix /{prefix} is too long for {addr}"))
    }
}

/// Which side of the appliance an interface faces.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Faces the VPN clients; carries the VIPs.
    Client,
    /// Faces the gateways.
    Backend,
}

/// A physical port (one DPDK port id, one capture file in replay).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortSpec {
    pub name: String,
    pub mac: EthernetAddress,
    /// The DPDK device string the daemon attaches (unused by the pipeline itself).
    pub device: String,
    /// The IP MTU of every interface on the port (frame length less the Ethernet header and
    /// VLAN tags): longer packets leaving here are fragmented or refused with an ICMP error.
    pub mtu: u16,
}

/// The MTU of a port whose configuration names none (Ethernet's).
pub const DEFAULT_MTU: u16 = 1500;

/// A logical interface: a port, or a VLAN (802.1Q or 802.1ad + 802.1Q) on a port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InterfaceSpec {
    pub name: String,
    pub port: u16,
    pub vlan: Vlan,
    pub role: Role,
    pub addresses: Vec<IpCidr>,
}

/// A static route. `via` must be on a connected subnet of one of the interfaces.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouteSpec {
    pub prefix: IpCidr,
    pub via: IpAddr,
}

/// A static neighbor (ARP / ND) entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NeighborSpec {
    pub address: IpAddr,
    pub mac: EthernetAddress,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GatewaySpec {
    pub name: String,
    pub ipv4: Option<Ipv4Addr>,
    pub ipv6: Option<Ipv6Addr>,
    pub weight: u32,
    pub state: GatewayState,
}

impl GatewaySpec {
    pub fn address(&self, v6: bool) -> Option<IpAddr> {
        if v6 {
            self.ipv6.map(IpAddr::V6)
        } else {
            self.ipv4.map(IpAddr::V4)
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceSpec {
    pub name: String,
    pub vip4: Option<Ipv4Addr>,
    pub vip6: Option<Ipv6Addr>,
    pub listeners: Listeners,
    pub scheduler: SchedulerKind,
    /// Idle timeout of a confirmed client, seconds.
    pub persistence_timeout_s: u32,
    /// Idle timeout of an unconfirmed client (no return traffic seen yet), seconds.
    pub unconfirmed_timeout_s: u32,
    pub gateways: Vec<GatewaySpec>,
    pub mode: ServiceMode,
    /// Route clients' traffic to the gateways' own addresses, and back, without NAT (for
    /// redirected clients when the gateways are reachable only through the appliance).
    pub route_to_gateways: bool,
}

impl ServiceSpec {
    /// Whether a packet of this IP protocol to this server port is an IKE_SA_INIT the service
    /// answers itself (redirect mode, UDP to its IKE port) rather than forwards.
    #[inline(always)]
    pub fn redirects(&self, protocol: u8, port: Option<u16>) -> bool {
        self.mode == ServiceMode::Redirect
            && protocol == crate::wire::ip_proto::UDP
            && port.is_some()
            && port == self.listeners.port(crate::protocols::Protocol::Ike)
    }
}

/// How a service balances its clients.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ServiceMode {
    /// Every flow through the VIP, the destination translated to the client's gateway.
    #[default]
    Nat,
    /// IKEv2 clients that support it are sent to their gateway's own address by an RFC 5685
    /// REDIRECT in answer to their IKE_SA_INIT; everything else as [`ServiceMode::Nat`].
    Redirect,
}

impl ServiceMode {
    pub fn as_str(self) -> &'static str {
        match self {
            ServiceMode::Nat => "nat",
            ServiceMode::Redirect => "redirect",
        }
    }
}

/// Sizing of each worker's affinity shard.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AffinitySpec {
    /// Entries per shard (per worker).
    pub capacity: usize,
    /// Unconfirmed entries allowed per shard before the oldest are evicted.
    pub max_unconfirmed: usize,
    /// Length of the IPv4 client prefix a quota applies to (8-32).
    pub prefix_v4: u8,
    /// Length of the IPv6 client prefix a quota applies to (16-128).
    pub prefix_v6: u8,
    /// Established entries per IPv4 prefix per shard.
    pub prefix_quota_v4: u16,
    /// Established entries per IPv6 prefix per shard.
    pub prefix_quota_v6: u16,
}

impl AffinitySpec {
    /// Default IPv4 prefix length: a /24.
    pub const PREFIX_V4: u8 = 24;
    /// Default IPv6 prefix length: a /64, what one site (one customer) gets.
    pub const PREFIX_V6: u8 = 64;
    /// Default IPv4 quota: a /24 holds 256 addresses, so no limit in effect (CGNAT and NAT64
    /// users share addresses, and an IPv4 address is costly to hold).
    pub const PREFIX_QUOTA_V4: u16 = 256;
    /// Default IPv6 quota per /64 per shard: a site's /64 holds a handful of VPN clients,
    /// while its owner has 2^64 addresses to establish clients from.
    pub const PREFIX_QUOTA_V6: u16 = 64;

    /// The shard's [`PrefixQuota`](crate::affinity::PrefixQuota).
    pub fn prefix_quota(&self) -> crate::affinity::PrefixQuota {
        crate::affinity::PrefixQuota {
            len_v4: self.prefix_v4,
            len_v6: self.prefix_v6,
            quota_v4: self.prefix_quota_v4,
            quota_v6: self.prefix_quota_v6,
        }
    }
}

impl Default for AffinitySpec {
    fn default() -> Self {
        AffinitySpec {
            capacity: 1 << 20,
            max_unconfirmed: 1 << 18,
            prefix_v4: Self::PREFIX_V4,
            prefix_v6: Self::PREFIX_V6,
            prefix_quota_v4: Self::PREFIX_QUOTA_V4,
            prefix_quota_v6: Self::PREFIX_QUOTA_V6,
        }
    }
}

/// The validated configuration of one appliance.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApplianceSpec {
    pub ports: Vec<PortSpec>,
    pub interfaces: Vec<InterfaceSpec>,
    pub routes: Vec<RouteSpec>,
    pub neighbors: Vec<NeighborSpec>,
    pub services: Vec<ServiceSpec>,
    pub affinity: AffinitySpec,
    /// Maglev lookup table size (prime).
    pub maglev_size: usize,
    /// Part of an HA pair (VRRP): the VIPs and floating addresses are this appliance's only
    /// while it is master.
    pub ha: Option<HaSpec>,
}

/// What HA mastership changes in the dataplane.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HaSpec {
    /// The VRRP virtual router id: the master answers for the VIPs and floating addresses with
    /// the virtual MAC 00:00:5e:00:01:VRID (IPv4) / 00:00:5e:00:02:VRID (IPv6).
    pub vrid: u8,
    /// Whether this appliance is master now (the control plane's VRRP decides).
    pub master: bool,
    /// Addresses that move with mastership besides the VIPs (the gateways' next hop), with
    /// their interface.
    pub floating: Vec<(u16, IpAddr)>,
}

impl HaSpec {
    /// The VRRP virtual MAC for this router id and family (RFC 5798 §7.3).
    pub fn virtual_mac(&self, v6: bool) -> EthernetAddress {
        EthernetAddress([0, 0, 0x5e, 0, if v6 { 2 } else { 1 }, self.vrid])
    }
}

/// What one scan of the local addresses found for a packet's source and destination
/// ([`Snapshot::local_pair`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LocalPair {
    /// The source is one of the appliance's own addresses: spoofed or looped, never forwarded.
    FromUs,
    /// The source is foreign; the destination is ours of this kind, or foreign (`None`).
    Foreign(Option<LocalKind>),
}

/// Why [`Snapshot::next_hop`] found no next hop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unreachable {
    /// No route covers the destination.
    NoRoute,
    /// A route does, but its next hop has no neighbor (ARP/ND) entry yet.
    NoNeighbor,
}

/// What an address on the appliance is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LocalKind {
    /// A service VIP (answered on client-role interfaces).
    Vip { service: u16 },
    /// An interface's own address.
    Interface { interface: u16 },
    /// A floating address of an HA pair, held while master (answered with the virtual MAC).
    Floating { interface: u16 },
    /// A VIP or floating address while this appliance is the HA backup: not ours to answer.
    Standby,
}

/// Where a packet leaves: an interface and the next hop's MAC.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NextHop {
    pub interface: u16,
    pub mac: EthernetAddress,
}

/// Per-family data of a service, derived for the hot path.
#[derive(Debug)]
pub struct FamilyView {
    /// Scheduler candidates, index = gateway id; gateways without an address of this family get
    /// weight 0.
    pub candidates: Vec<Candidate>,
    /// The Maglev table over the eligible candidates (only for the Maglev scheduler).
    pub maglev: Option<Arc<MaglevTable>>,
    /// A fresh scheduler of the service's kind for this family, built with the snapshot:
    /// each worker clones it (its own least-conn and round-robin state; the Maglev table
    /// shared), so no worker ever builds, or falls back from, a scheduler on its own.
    pub scheduler: Scheduler,
    /// Gateway addresses and next hops, index = gateway id.
    pub gateways: Vec<Option<(IpAddr, Option<NextHop>)>>,
}

#[derive(Debug)]
pub struct ServiceView {
    pub spec: ServiceSpec,
    pub port_plan: PortPlan,
    pub v4: FamilyView,
    pub v6: FamilyView,
}

impl ServiceView {
    pub fn family(&self, v6: bool) -> &FamilyView {
        if v6 {
            &self.v6
        } else {
            &self.v4
        }
    }

    pub fn vip(&self, v6: bool) -> Option<IpAddr> {
        if v6 {
            self.spec.vip6.map(IpAddr::V6)
        } else {
            self.spec.vip4.map(IpAddr::V4)
        }
    }
}

/// A connected subnet or a static route, resolved to an interface.
#[derive(Clone, Debug)]
struct RouteEntry {
    prefix: IpCidr,
    interface: u16,
    /// `None` for connected subnets: the destination itself is the next hop.
    via: Option<IpAddr>,
    /// The gateway's MAC, resolved when the snapshot is built (static routes only).
    via_mac: Option<EthernetAddress>,
}

/// What the hot path needs of an interface, in one small record (the [`InterfaceSpec`] itself
/// is large and cold).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InterfaceView {
    pub port: u16,
    pub vlan: Vlan,
    pub role: Role,
    /// The MAC of the interface's port: what its own addresses are answered with.
    pub mac: EthernetAddress,
    /// HA master only: the VRRP virtual MAC (IPv4's and IPv6's), which VIPs and floating
    /// addresses are answered with and forwarded frames leave from; frames to them are ours.
    pub vmac: Option<(EthernetAddress, EthernetAddress)>,
    /// [`Self::forward_mac`] for IPv4 and IPv6, worked out once.
    forward_macs: [EthernetAddress; 2],
}

impl InterfaceView {
    fn new(
        port: u16,
        vlan: Vlan,
        role: Role,
        mac: EthernetAddress,
        vmac: Option<(EthernetAddress, EthernetAddress)>,
    ) -> InterfaceView {
        let (v4, v6) = vmac.unwrap_or((mac, mac));
        InterfaceView {
            port,
            vlan,
            role,
            mac,
            vmac,
            forward_macs: [v4, v6],
        }
    }

    /// The source MAC of frames the appliance forwards or sends for a VIP or floating address:
    /// the family's virtual MAC on an HA master, else the port's.
    #[inline(always)]
    pub fn forward_mac(&self, v6: bool) -> EthernetAddress {
        self.forward_macs[usize::from(v6)]
    }

    /// Whether a unicast frame to `dst` is for this interface.
    #[inline(always)]
    pub fn accepts_mac(&self, dst: EthernetAddress) -> bool {
        dst == self.mac || self.vmac.is_some_and(|(a, b)| dst == a || dst == b)
    }
}

/// An untagged interface as the fast path sees a frame arrive on it: which interface, its
/// role, and the destination MACs that make a unicast frame ours, as integers.
#[derive(Clone, Copy, Debug)]
pub struct Ingress {
    pub interface: u16,
    pub role: Role,
    /// The port's MAC and, on an HA master, the two virtual MACs (else the port's MAC again).
    macs: [u64; 3],
}

impl Ingress {
    fn by_port(interfaces: &[InterfaceView]) -> Vec<Option<Ingress>> {
        let ports = interfaces.iter().map(|i| usize::from(i.port) + 1).max();
        let mut v = vec![None; ports.unwrap_or(0)];
        for (id, itf) in interfaces.iter().enumerate() {
            let (Vlan::Untagged, Ok(interface)) = (itf.vlan, u16::try_from(id)) else {
                continue;
            };
            let [v4, v6] = itf.forward_macs;
            v[usize::from(itf.port)] = Some(Ingress {
                interface,
                role: itf.role,
                macs: [mac_bits(&itf.mac.0), mac_bits(&v4.0), mac_bits(&v6.0)],
            });
        }
        v
    }

    /// Whether a frame to `dst` (as [`mac_bits`]) is unicast to this interface: exactly
    /// [`InterfaceView::accepts_mac`] for a unicast `dst`, false for group addresses.
    #[inline(always)]
    pub fn accepts(&self, dst: u64) -> bool {
        (dst == self.macs[0]) | (dst == self.macs[1]) | (dst == self.macs[2])
    }
}

/// A MAC address as an integer (the six bytes, big-endian) for one-compare matching.
#[inline(always)]
pub fn mac_bits(m: &[u8; 6]) -> u64 {
    u64::from_be_bytes([0, 0, m[0], m[1], m[2], m[3], m[4], m[5]])
}

/// How a route's next hop is found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Via {
    /// Connected subnet: the destination itself, looked up in the neighbor table.
    Connected,
    /// Static route: the gateway's MAC as resolved at build time (`None`: unresolved, and as
    /// the table cannot change within a snapshot it stays so).
    Gateway(Option<EthernetAddress>),
}

/// A route of one family in lookup form: the prefix as a masked integer.
#[derive(Clone, Copy, Debug)]
struct FastRoute<A> {
    net: A,
    mask: A,
    interface: u16,
    via: Via,
    /// A static route's gateway (the neighbor its packets wait for); unused when connected.
    gateway: A,
}

/// Per-family hot-path tables. `A` is the address as an integer (`u32` or `u128`).
#[derive(Debug)]
struct FamilyTables<A> {
    /// Local addresses (interface addresses first, then VIPs, as configured): the first match
    /// wins. A handful of entries: a scan of integers beats hashing.
    local: Vec<(A, LocalKind)>,
    /// Bit `filter_bit(a)` set for every local address `a`: an address whose bit is clear is
    /// not local, which nearly every packet's source (and a gateway's packet's destination)
    /// learns without the scan.
    local_filter: u64,
    /// (VIP, service id, listeners) in service order, for [`Snapshot::service_for`].
    vips: Vec<(A, u16, Listeners)>,
    /// Routes ordered so that the first match is the best one: longest prefix, then connected
    /// before static, then the later-configured (the order `best_route` picks in).
    routes: Vec<FastRoute<A>>,
    neighbors: FastMap<A, EthernetAddress>,
    /// Gateway addresses, sorted, each with its range in `memberships`. A binary search over
    /// a few dozen integers beats hashing them.
    gateways: Vec<(A, u32, u32)>,
    /// (service, gateway id) for every service a gateway serves, grouped by gateway.
    memberships: Vec<(u16, u16)>,
}

impl<A> Default for FamilyTables<A> {
    fn default() -> Self {
        FamilyTables {
            local: Vec::new(),
            local_filter: 0,
            vips: Vec::new(),
            routes: Vec::new(),
            neighbors: FastMap::default(),
            gateways: Vec::new(),
            memberships: Vec::new(),
        }
    }
}

/// An address as an integer the local-address filter can hash.
trait FilterBits: Copy {
    /// A bit mask with one bit set, picked by a multiplicative hash of the address.
    fn filter_bit(self) -> u64;
}

impl FilterBits for u32 {
    #[inline(always)]
    fn filter_bit(self) -> u64 {
        1 << (u64::from(self).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 58)
    }
}

impl FilterBits for u128 {
    #[inline(always)]
    #[allow(clippy::cast_possible_truncation)] // the two halves, on purpose
    fn filter_bit(self) -> u64 {
        let folded = (self as u64) ^ ((self >> 64) as u64).rotate_left(29);
        1 << (folded.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 58)
    }
}

impl<A: Copy + Ord + core::hash::Hash + core::ops::BitAnd<Output = A> + FilterBits>
    FamilyTables<A>
{
    fn add_local(&mut self, a: A, kind: LocalKind) {
        self.local.push((a, kind));
        self.local_filter |= a.filter_bit();
    }

    /// Whether `a` may be local (false: certainly not).
    #[inline(always)]
    fn maybe_local(&self, a: A) -> bool {
        self.local_filter & a.filter_bit() != 0
    }

    /// Fills `gateways` and `memberships` from (address, membership) pairs in configuration
    /// order, keeping that order within each address.
    fn set_gateways(&mut self, mut pairs: Vec<(A, (u16, u16))>) -> Result<(), SnapshotError> {
        pairs.sort_by_key(|(a, _)| *a); // stable: configuration order within an address
        self.memberships = pairs.iter().map(|(_, m)| *m).collect();
        let index = |i: usize| u32::try_from(i).map_err(|_| SnapshotError::TooMany("gateways"));
        let mut start = 0;
        for (i, (a, _)) in pairs.iter().enumerate() {
            if pairs.get(i + 1).is_none_or(|(next, _)| next != a) {
                self.gateways.push((*a, index(start)?, index(i + 1)?));
                start = i + 1;
            }
        }
        Ok(())
    }

    #[inline(always)]
    fn local(&self, a: A) -> Option<LocalKind> {
        if !self.maybe_local(a) {
            return None;
        }
        for &(l, k) in &self.local {
            if l == a {
                return Some(k);
            }
        }
        None
    }

    /// One scan for both addresses of a packet.
    #[inline(always)]
    fn local_pair(&self, src: A, dst: A) -> LocalPair {
        if !self.maybe_local(src) {
            return LocalPair::Foreign(self.local(dst));
        }
        let mut kind = None;
        for &(l, k) in &self.local {
            if l == src {
                return LocalPair::FromUs;
            }
            if l == dst && kind.is_none() {
                kind = Some(k);
            }
        }
        LocalPair::Foreign(kind)
    }

    #[inline(always)]
    fn service_for(&self, vip: A, protocol: u8, port: Option<u16>) -> Option<u16> {
        for (v, s, l) in &self.vips {
            if *v != vip {
                continue;
            }
            let accepts = match port {
                Some(p) => l.accepts(protocol, p),
                None => l.accepts_protocol(protocol),
            };
            if accepts {
                return Some(*s);
            }
        }
        None
    }

    #[inline(always)]
    fn next_hop(&self, dst: A) -> Result<NextHop, Unreachable> {
        let mut found = None;
        for r in &self.routes {
            if dst & r.mask == r.net {
                found = Some(r);
                break;
            }
        }
        let r = found.ok_or(Unreachable::NoRoute)?;
        let mac = match r.via {
            Via::Gateway(mac) => mac,
            Via::Connected => self.neighbors.get(&dst).copied(),
        };
        mac.map(|mac| NextHop {
            interface: r.interface,
            mac,
        })
        .ok_or(Unreachable::NoNeighbor)
    }

    /// The interface and neighbor (`dst` itself, or its route's gateway) a packet to `dst`
    /// leaves by, whether or not that neighbor has a MAC.
    fn awaited_neighbor(&self, dst: A) -> Option<(u16, A)> {
        let r = self.routes.iter().find(|r| dst & r.mask == r.net)?;
        match r.via {
            Via::Connected => Some((r.interface, dst)),
            Via::Gateway(_) => Some((r.interface, r.gateway)),
        }
    }

    #[inline(always)]
    fn gateway_by_addr(&self, a: A) -> &[(u16, u16)] {
        let i = self.gateways.partition_point(|(g, _, _)| *g < a);
        match self.gateways.get(i) {
            Some(&(g, start, end)) if g == a => self
                .memberships
                .get(start as usize..end as usize)
                .unwrap_or(&[]),
            _ => &[],
        }
    }
}

/// The immutable view every worker reads. Built once per configuration or state change.
#[derive(Debug)]
pub struct Snapshot {
    pub generation: u64,
    pub spec: ApplianceSpec,
    pub services: Vec<ServiceView>,
    /// Index = interface id; scanned on ingress by (port, vlan) (a handful of entries: faster
    /// than hashing).
    interfaces: Vec<InterfaceView>,
    /// Index = port: its untagged interface, for the fast path's ingress check (no scan).
    untagged: Vec<Option<Ingress>>,
    v4: FamilyTables<u32>,
    v6: FamilyTables<u128>,
    /// The gateways' loads for redirects: shared with the control thread, and carried from
    /// one snapshot to the next while the services and gateways keep their names and order
    /// (see [`Snapshot::share_loads`]).
    pub loads: Arc<LoadBoard>,
    /// The smallest port MTU: frames no longer than it (plus an Ethernet header) fit every
    /// port, and the pipeline's egress check skips them.
    pub min_mtu: u16,
}

/// What [`Snapshot::build`] could not derive from a spec.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("too many {0}")]
    TooMany(&'static str),
    #[error("interface {0} refers to a missing port")]
    MissingPort(String),
    #[error("interface {0} duplicates another interface's port and VLAN tags")]
    DuplicateInterface(String),
    #[error("route {prefix} via {via} is not on a connected subnet")]
    RouteNotConnected { prefix: IpCidr, via: IpAddr },
    #[error("service {service}: {source}")]
    Maglev {
        service: String,
        source: MaglevError,
    },
    #[error("service {service}: scheduler {scheduler} has no table")]
    NoTable {
        service: String,
        scheduler: SchedulerKind,
    },
}

/// The interfaces' views, their addresses as local addresses, and their connected routes.
#[allow(clippy::type_complexity)]
fn interface_views(
    spec: &ApplianceSpec,
) -> Result<
    (
        Vec<InterfaceView>,
        Vec<(IpAddr, LocalKind)>,
        Vec<RouteEntry>,
    ),
    SnapshotError,
> {
    let mut interfaces: Vec<InterfaceView> = Vec::with_capacity(spec.interfaces.len());
    let mut local = Vec::new();
    let mut routes = Vec::new();
    for (i, itf) in spec.interfaces.iter().enumerate() {
        let id = u16::try_from(i).map_err(|_| SnapshotError::TooMany("interfaces"))?;
        let port = spec
            .ports
            .get(usize::from(itf.port))
            .ok_or_else(|| SnapshotError::MissingPort(itf.name.clone()))?;
        if interfaces
            .iter()
            .any(|v| v.port == itf.port && v.vlan == itf.vlan)
        {
            return Err(SnapshotError::DuplicateInterface(itf.name.clone()));
        }
        let vmac = spec
            .ha
            .as_ref()
            .filter(|ha| ha.master)
            .map(|ha| (ha.virtual_mac(false), ha.virtual_mac(true)));
        interfaces.push(InterfaceView::new(
            itf.port, itf.vlan, itf.role, port.mac, vmac,
        ));
        for a in &itf.addresses {
            local.push((a.addr, LocalKind::Interface { interface: id }));
            routes.push(RouteEntry {
                prefix: *a,
                interface: id,
                via: None,
                via_mac: None,
            });
        }
    }
    Ok((interfaces, local, routes))
}

/// The connected routes followed by the static ones, each resolved to its interface.
fn static_routes(
    spec: &ApplianceSpec,
    connected: Vec<RouteEntry>,
    neighbors: &FastMap<IpAddr, EthernetAddress>,
) -> Result<Vec<RouteEntry>, SnapshotError> {
    let mut routes = connected.clone();
    for r in &spec.routes {
        let hop = best_route(&connected, r.via).ok_or(SnapshotError::RouteNotConnected {
            prefix: r.prefix,
            via: r.via,
        })?;
        routes.push(RouteEntry {
            prefix: r.prefix,
            interface: hop.interface,
            via: Some(r.via),
            via_mac: neighbors.get(&r.via).copied(),
        });
    }
    Ok(routes)
}

impl FamilyView {
    /// One address family of a service: its candidates, scheduler and gateways' next hops.
    fn build(
        svc: &ServiceSpec,
        v6: bool,
        maglev_size: usize,
        routes: &[RouteEntry],
        neighbors: &FastMap<IpAddr, EthernetAddress>,
    ) -> Result<FamilyView, SnapshotError> {
        let candidates: Vec<Candidate> = svc
            .gateways
            .iter()
            .map(|g| Candidate {
                weight: if g.address(v6).is_some() { g.weight } else { 0 },
                state: g.state,
            })
            .collect();
        // The table covers every configured gateway whatever its state: a gateway that goes
        // down or drains is skipped at lookup (`lookup_eligible`), so only its own clients
        // move, and the table needs no rebuild on state changes.
        let maglev = if svc.scheduler.def().needs_maglev_table {
            let members: Vec<MaglevMember<'_>> = svc
                .gateways
                .iter()
                .zip(&candidates)
                .map(|(g, c)| MaglevMember {
                    name: &g.name,
                    weight: c.weight,
                })
                .collect();
            let table = MaglevTable::build(&members, maglev_size).map_err(|source| {
                SnapshotError::Maglev {
                    service: svc.name.clone(),
                    source,
                }
            })?;
            Some(Arc::new(table))
        } else {
            None
        };
        let gateways = svc
            .gateways
            .iter()
            .map(|g| {
                g.address(v6).map(|a| {
                    let hop = best_route(routes, a).and_then(|r| {
                        let nh = r.via.unwrap_or(a);
                        neighbors.get(&nh).map(|mac| NextHop {
                            interface: r.interface,
                            mac: *mac,
                        })
                    });
                    (a, hop)
                })
            })
            .collect();
        let scheduler = Scheduler::new(svc.scheduler, candidates.len(), maglev.clone())
            .ok_or_else(|| SnapshotError::NoTable {
                service: svc.name.clone(),
                scheduler: svc.scheduler,
            })?;
        Ok(FamilyView {
            candidates,
            maglev,
            scheduler,
            gateways,
        })
    }
}

impl Snapshot {
    /// Derives the hot-path view. The spec must have been validated (the control plane's config
    /// loader does that and names the offending key); this only fails on what it cannot derive.
    pub fn build(spec: ApplianceSpec, generation: u64) -> Result<Snapshot, SnapshotError> {
        let (interfaces, mut local, connected) = interface_views(&spec)?;
        // Addresses that follow HA mastership: ours while master, standing by otherwise.
        let standby = spec.ha.as_ref().is_some_and(|ha| !ha.master);
        for &(interface, addr) in spec.ha.iter().flat_map(|ha| &ha.floating) {
            let kind = if standby {
                LocalKind::Standby
            } else {
                LocalKind::Floating { interface }
            };
            local.push((addr, kind));
        }
        let neighbors: FastMap<IpAddr, EthernetAddress> =
            spec.neighbors.iter().map(|n| (n.address, n.mac)).collect();
        let routes = static_routes(&spec, connected, &neighbors)?;
        let mut services = Vec::with_capacity(spec.services.len());
        let mut gateways_by_addr: Vec<(IpAddr, (u16, u16))> = Vec::new();
        let mut vips = Vec::new();
        for (s, svc) in spec.services.iter().enumerate() {
            let sid = u16::try_from(s).map_err(|_| SnapshotError::TooMany("services"))?;
            let vip_kind = if standby {
                LocalKind::Standby
            } else {
                LocalKind::Vip { service: sid }
            };
            for vip in [svc.vip4.map(IpAddr::V4), svc.vip6.map(IpAddr::V6)]
                .into_iter()
                .flatten()
            {
                local.push((vip, vip_kind));
                vips.push((vip, sid, svc.listeners));
            }
            for (g, gw) in svc.gateways.iter().enumerate() {
                let gid = u16::try_from(g).map_err(|_| SnapshotError::TooMany("gateways"))?;
                for a in [gw.address(false), gw.address(true)].into_iter().flatten() {
                    gateways_by_addr.push((a, (sid, gid)));
                }
            }
            let family = |v6| FamilyView::build(svc, v6, spec.maglev_size, &routes, &neighbors);
            services.push(ServiceView {
                port_plan: svc.listeners.port_plan(),
                v4: family(false)?,
                v6: family(true)?,
                spec: svc.clone(),
            });
        }

        // Split everything by family, with addresses as integers.
        let mut v4 = FamilyTables::<u32>::default();
        let mut v6 = FamilyTables::<u128>::default();
        for (a, k) in local {
            match a {
                IpAddr::V4(a) => v4.add_local(u32::from(a), k),
                IpAddr::V6(a) => v6.add_local(u128::from(a), k),
            }
        }
        for (a, s, l) in vips {
            match a {
                IpAddr::V4(a) => v4.vips.push((u32::from(a), s, l)),
                IpAddr::V6(a) => v6.vips.push((u128::from(a), s, l)),
            }
        }
        let (mut g4, mut g6) = (Vec::new(), Vec::new());
        for (a, m) in gateways_by_addr {
            match a {
                IpAddr::V4(a) => g4.push((u32::from(a), m)),
                IpAddr::V6(a) => g6.push((u128::from(a), m)),
            }
        }
        v4.set_gateways(g4)?;
        v6.set_gateways(g6)?;
        for (a, mac) in &neighbors {
            match *a {
                IpAddr::V4(a) => v4.neighbors.insert(u32::from(a), *mac),
                IpAddr::V6(a) => v6.neighbors.insert(u128::from(a), *mac),
            };
        }
        set_routes(&routes, &mut v4, &mut v6);
        let loads = Arc::new(LoadBoard::new(load_layout(&spec)));
        let untagged = Ingress::by_port(&interfaces);
        let min_mtu = spec.ports.iter().map(|p| p.mtu).min().unwrap_or(u16::MAX);
        Ok(Snapshot {
            min_mtu,
            generation,
            spec,
            services,
            interfaces,
            untagged,
            v4,
            v6,
            loads,
        })
    }

    /// Uses `board` for the gateways' loads if it was made for the same services and gateways
    /// in the same order (their loads and redirect counts then carry over); returns whether
    /// it did. Call before the snapshot is shared.
    pub fn share_loads(&mut self, board: &Arc<LoadBoard>) -> bool {
        let same = board.layout() == self.loads.layout();
        if same {
            self.loads = Arc::clone(board);
        }
        same
    }

    /// The interface a frame arrived on, from its port and VLAN tags.
    #[inline]
    pub fn interface(&self, port: u16, vlan: Vlan) -> Option<u16> {
        self.interfaces
            .iter()
            .position(|t| t.port == port && t.vlan == vlan)
            .and_then(|i| u16::try_from(i).ok())
    }

    /// The untagged interface on `port`, as the fast path checks ingress frames against it.
    #[inline(always)]
    pub fn untagged_ingress(&self, port: u16) -> Option<&Ingress> {
        self.untagged.get(usize::from(port))?.as_ref()
    }

    #[inline]
    pub fn interface_spec(&self, id: u16) -> &InterfaceSpec {
        &self.spec.interfaces[usize::from(id)]
    }

    /// The hot-path view of interface `id` (port, VLAN, role, MAC).
    #[inline]
    pub fn interface_view(&self, id: u16) -> &InterfaceView {
        &self.interfaces[usize::from(id)]
    }

    #[inline]
    pub fn interface_mac(&self, id: u16) -> EthernetAddress {
        self.interfaces[usize::from(id)].mac
    }

    /// What a destination address is on this appliance, if anything.
    #[inline(always)]
    pub fn local(&self, addr: IpAddr) -> Option<LocalKind> {
        match addr {
            IpAddr::V4(a) => self.v4.local(u32::from(a)),
            IpAddr::V6(a) => self.v6.local(u128::from(a)),
        }
    }

    /// Both addresses of a packet in one scan: [`LocalPair::FromUs`] when `src` is one of
    /// ours (the packet is spoofed or looped), else `Foreign(self.local(dst))`.
    #[inline(always)]
    pub fn local_pair(&self, src: IpAddr, dst: IpAddr) -> LocalPair {
        match (src, dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => self.v4.local_pair(u32::from(s), u32::from(d)),
            (IpAddr::V6(s), IpAddr::V6(d)) => self.v6.local_pair(u128::from(s), u128::from(d)),
            _ => match self.local(src) {
                Some(_) => LocalPair::FromUs,
                None => LocalPair::Foreign(self.local(dst)),
            },
        }
    }

    /// The first service (in configuration order) on `vip` that accepts this protocol and
    /// server-side port (with `port` `None`, a non-first fragment: any of its ports).
    #[inline(always)]
    pub fn service_for(&self, vip: IpAddr, protocol: u8, port: Option<u16>) -> Option<u16> {
        match vip {
            IpAddr::V4(a) => self.v4.service_for(u32::from(a), protocol, port),
            IpAddr::V6(a) => self.v6.service_for(u128::from(a), protocol, port),
        }
    }

    /// The services (and gateway ids) a gateway address belongs to.
    #[inline(always)]
    pub fn gateway_by_addr(&self, addr: IpAddr) -> &[(u16, u16)] {
        match addr {
            IpAddr::V4(a) => self.v4.gateway_by_addr(u32::from(a)),
            IpAddr::V6(a) => self.v6.gateway_by_addr(u128::from(a)),
        }
    }

    /// Route lookup and neighbor resolution for a destination.
    #[inline(always)]
    pub fn next_hop(&self, dst: IpAddr) -> Result<NextHop, Unreachable> {
        match dst {
            IpAddr::V4(a) => self.v4.next_hop(u32::from(a)),
            IpAddr::V6(a) => self.v6.next_hop(u128::from(a)),
        }
    }

    /// For a packet to `dst` whose next hop has no MAC ([`Unreachable::NoNeighbor`]): the
    /// interface it leaves by and the neighbor it waits for (`dst` on a connected subnet, else
    /// its route's gateway). Off the hot path: only packets that wait call it.
    pub fn awaited_neighbor(&self, dst: IpAddr) -> Option<(u16, IpAddr)> {
        match dst {
            IpAddr::V4(a) => self
                .v4
                .awaited_neighbor(u32::from(a))
                .map(|(i, n)| (i, IpAddr::V4(n.into()))),
            IpAddr::V6(a) => self
                .v6
                .awaited_neighbor(u128::from(a))
                .map(|(i, n)| (i, IpAddr::V6(n.into()))),
        }
    }

    /// The neighbor table (static entries; dynamic resolution is the daemon's).
    pub fn neighbor(&self, addr: IpAddr) -> Option<EthernetAddress> {
        match addr {
            IpAddr::V4(a) => self.v4.neighbors.get(&u32::from(a)).copied(),
            IpAddr::V6(a) => self.v6.neighbors.get(&u128::from(a)).copied(),
        }
    }

    /// Which neighbor must be resolved to reach `dst`, and on which interface: `dst` itself on
    /// a connected subnet, else the gateway of the best static route. For the control plane
    /// (it scans the configuration; not for the hot path).
    pub fn resolution_target(&self, dst: IpAddr) -> Option<(u16, IpAddr)> {
        let connected = |a: IpAddr| {
            self.spec
                .interfaces
                .iter()
                .enumerate()
                .flat_map(|(i, itf)| itf.addresses.iter().map(move |c| (i, c)))
                .filter(|(_, c)| c.contains(a))
                .max_by_key(|(_, c)| c.prefix)
                .and_then(|(i, _)| u16::try_from(i).ok())
        };
        if let Some(i) = connected(dst) {
            return Some((i, dst));
        }
        let route = self
            .spec
            .routes
            .iter()
            .filter(|r| r.prefix.contains(dst))
            .max_by_key(|r| r.prefix.prefix)?;
        connected(route.via).map(|i| (i, route.via))
    }

    /// The interface's own address of `dst`'s family on the subnet of `dst` (or any of that
    /// family): the source of ARP requests and neighbor solicitations we send.
    pub fn source_address_for(&self, interface: u16, dst: IpAddr) -> Option<IpAddr> {
        let itf = self.spec.interfaces.get(usize::from(interface))?;
        let same_family = |c: &&IpCidr| c.addr.is_ipv4() == dst.is_ipv4();
        itf.addresses
            .iter()
            .filter(same_family)
            .find(|c| c.contains(dst))
            .or_else(|| itf.addresses.iter().find(same_family))
            .map(|c| c.addr)
    }

    /// Service id by name.
    pub fn service_id(&self, name: &str) -> Option<u16> {
        self.services
            .iter()
            .position(|s| s.spec.name == name)
            .and_then(|i| u16::try_from(i).ok())
    }
}

/// The network mask of a prefix length (all-zero for a length beyond the family's, which
/// [`IpCidr::new`] refuses).
fn mask_v4(prefix: u8) -> u32 {
    32u32
        .checked_sub(u32::from(prefix))
        .and_then(|s| u32::MAX.checked_shl(s))
        .unwrap_or(0)
}

fn mask_v6(prefix: u8) -> u128 {
    128u32
        .checked_sub(u32::from(prefix))
        .and_then(|s| u128::MAX.checked_shl(s))
        .unwrap_or(0)
}

/// Fills the per-family route tables from `routes` (connected subnets, then static routes).
fn set_routes(routes: &[RouteEntry], v4: &mut FamilyTables<u32>, v6: &mut FamilyTables<u128>) {
    // `best_route` takes the maximum of (prefix length, connected) and, among equals, the last
    // route: sorting on that key and the position, descending, puts the route it would pick
    // first among those that match.
    let mut order: Vec<(usize, &RouteEntry)> = routes.iter().enumerate().collect();
    order.sort_by_key(|&(i, r)| core::cmp::Reverse((r.prefix.prefix, r.via.is_none(), i)));
    for (_, r) in order {
        let via = match r.via {
            None => Via::Connected,
            Some(_) => Via::Gateway(r.via_mac),
        };
        match r.prefix.addr {
            IpAddr::V4(a) => {
                let mask = mask_v4(r.prefix.prefix);
                let gateway = match r.via {
                    Some(IpAddr::V4(g)) => u32::from(g),
                    _ => 0,
                };
                v4.routes.push(FastRoute {
                    net: u32::from(a) & mask,
                    mask,
                    interface: r.interface,
                    via,
                    gateway,
                });
            }
            IpAddr::V6(a) => {
                let mask = mask_v6(r.prefix.prefix);
                let gateway = match r.via {
                    Some(IpAddr::V6(g)) => u128::from(g),
                    _ => 0,
                };
                v6.routes.push(FastRoute {
                    net: u128::from(a) & mask,
                    mask,
                    interface: r.interface,
                    via,
                    gateway,
                });
            }
        }
    }
}

/// The route the snapshot's tables are derived from and checked against (build time only).
fn best_route(routes: &[RouteEntry], dst: IpAddr) -> Option<&RouteEntry> {
    routes
        .iter()
        .filter(|r| r.prefix.contains(dst))
        .max_by_key(|r| (r.prefix.prefix, r.via.is_none()))
}

/// Service and gateway names in index order: what a [`LoadBoard`] is made for.
fn load_layout(spec: &ApplianceSpec) -> Vec<(String, Vec<String>)> {
    spec.services
        .iter()
        .map(|s| {
            let gateways = s.gateways.iter().map(|g| g.name.clone()).collect();
            (s.name.clone(), gateways)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::lab::{self, appliance_spec};
    use proptest::prelude::*;

    fn lab() -> Snapshot {
        Snapshot::build(appliance_spec(AffinitySpec::default()), 1).unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn the_local_filter_never_hides_a_local_address() {
        let kinds = [
            LocalKind::Interface { interface: 0 },
            LocalKind::Vip { service: 1 },
            LocalKind::Floating { interface: 1 },
            LocalKind::Standby,
        ];
        let mut v4 = FamilyTables::<u32>::default();
        let mut v6 = FamilyTables::<u128>::default();
        for i in 0..12u32 {
            v4.add_local(0xc612_0000 + i * 977, kinds[i as usize % 4]);
            v6.add_local(
                (0x2001_0002u128 << 96) + u128::from(i) * 0x1_0000_0001,
                kinds[i as usize % 4],
            );
        }
        let scan4 = |a: u32| v4.local.iter().find(|(l, _)| *l == a).map(|(_, k)| *k);
        let scan6 = |a: u128| v6.local.iter().find(|(l, _)| *l == a).map(|(_, k)| *k);
        let mut rng = crate::rng::SplitMix64(0x1234_5678_9abc_def0);
        for n in 0..20_000u32 {
            let x = rng.next_u64();
            // Half the probes near the local addresses, half anywhere.
            let a4 = if n % 2 == 0 {
                0xc612_0000 + (x as u32 % 12_000)
            } else {
                x as u32
            };
            let a6 =
                (0x2001_0002u128 << 96) + u128::from(x % 13) * 0x1_0000_0001 + u128::from(n % 3);
            assert_eq!(v4.local(a4), scan4(a4));
            assert_eq!(v6.local(a6), scan6(a6));
            let (s4, d4) = (a4, 0xc612_0000 + (n % 12) * 977);
            let want = if scan4(s4).is_some() {
                LocalPair::FromUs
            } else {
                LocalPair::Foreign(scan4(d4))
            };
            assert_eq!(v4.local_pair(s4, d4), want);
        }
    }

    #[test]
    fn lab_local_addresses() {
        let s = lab();
        assert_eq!(
            s.local(ip("198.18.0.100")),
            Some(LocalKind::Vip { service: 0 })
        );
        assert_eq!(
            s.local(ip("2001:2:0:1::100")),
            Some(LocalKind::Vip { service: 0 })
        );
        assert_eq!(
            s.local(ip("198.19.0.1")),
            Some(LocalKind::Interface { interface: 1 })
        );
        assert_eq!(
            s.local(ip("2001:2:0:1::1")),
            Some(LocalKind::Interface { interface: 0 })
        );
        assert_eq!(s.local(ip("198.18.1.7")), None);
        // The IPv4-mapped form of a local IPv4 address is another address.
        assert_eq!(s.local(ip("::ffff:198.18.0.100")), None);
        // Client -> VIP; gateway -> client; spoofed VIP source.
        let vip = ip("198.18.0.100");
        let client = ip("198.18.1.7");
        assert_eq!(
            s.local_pair(client, vip),
            LocalPair::Foreign(Some(LocalKind::Vip { service: 0 }))
        );
        assert_eq!(
            s.local_pair(ip("198.19.0.11"), client),
            LocalPair::Foreign(None)
        );
        assert_eq!(s.local_pair(vip, client), LocalPair::FromUs);
        assert_eq!(s.local_pair(ip("198.18.0.1"), vip), LocalPair::FromUs);
        assert_eq!(
            s.local_pair(ip("2001:2:0:1::100"), ip("2001:2::5")),
            LocalPair::FromUs
        );
    }

    #[test]
    fn lab_services_gateways_and_routes() {
        use crate::wire::ip_proto::{ESP, ICMP, TCP, UDP};
        let s = lab();
        let vip = ip("198.18.0.100");
        assert_eq!(s.service_for(vip, UDP, Some(4500)), Some(0));
        assert_eq!(s.service_for(vip, UDP, Some(500)), Some(0));
        assert_eq!(s.service_for(vip, TCP, Some(443)), Some(0));
        assert_eq!(s.service_for(vip, ESP, Some(0)), Some(0));
        assert_eq!(s.service_for(vip, UDP, Some(4501)), None);
        assert_eq!(s.service_for(vip, TCP, Some(4500)), None);
        assert_eq!(s.service_for(vip, ICMP, None), None);
        assert_eq!(s.service_for(vip, UDP, None), Some(0), "non-first fragment");
        assert_eq!(s.service_for(ip("198.18.0.101"), UDP, Some(4500)), None);
        assert_eq!(
            s.service_for(ip("2001:2:0:1::100"), TCP, Some(443)),
            Some(0)
        );

        for g in 0..3u16 {
            let i = usize::from(g);
            assert_eq!(s.gateway_by_addr(lab::GATEWAYS_V4[i].into()), &[(0, g)]);
            assert_eq!(s.gateway_by_addr(lab::GATEWAYS_V6[i].into()), &[(0, g)]);
            // Connected subnet: the gateway's own MAC, on the backend interface.
            assert_eq!(
                s.next_hop(lab::GATEWAYS_V4[i].into()),
                Ok(NextHop {
                    interface: 1,
                    mac: lab::GATEWAY_MACS[i]
                })
            );
        }
        assert_eq!(s.gateway_by_addr(ip("198.19.0.14")), &[]);
        assert_eq!(s.gateway_by_addr(ip("198.19.0.10")), &[]);
        assert_eq!(s.gateway_by_addr(ip("2001:2:0:2::14")), &[]);
        // Default route via the router, resolved at build time.
        let router = NextHop {
            interface: 0,
            mac: lab::ROUTER_MAC,
        };
        assert_eq!(s.next_hop(ip("198.18.1.7")), Ok(router));
        assert_eq!(s.next_hop(ip("198.19.200.9")), Ok(router));
        assert_eq!(s.next_hop(ip("2001:2:0:64::9")), Ok(router));
        // Connected, but no neighbor entry.
        assert_eq!(s.next_hop(ip("198.19.0.99")), Err(Unreachable::NoNeighbor));
        assert_eq!(s.next_hop(ip("198.18.0.7")), Err(Unreachable::NoNeighbor));
        assert_eq!(s.neighbor(lab::ROUTER_V4.into()), Some(lab::ROUTER_MAC));
        assert_eq!(s.neighbor(ip("198.18.0.7")), None);
    }

    #[test]
    fn no_route_without_a_default() {
        let mut spec = appliance_spec(AffinitySpec::default());
        spec.routes.clear();
        let s = Snapshot::build(spec, 1).unwrap();
        assert_eq!(s.next_hop(ip("198.19.200.9")), Err(Unreachable::NoRoute));
        assert_eq!(s.next_hop(ip("2001:2:0:99::1")), Err(Unreachable::NoRoute));
        assert_eq!(
            s.next_hop(lab::GATEWAYS_V6[1].into()),
            Ok(NextHop {
                interface: 1,
                mac: lab::GATEWAY_MACS[1]
            })
        );
    }

    #[test]
    fn a_gateway_of_several_services_lists_them_in_configuration_order() {
        let mut spec = appliance_spec(AffinitySpec::default());
        let mut second = spec.services[0].clone();
        second.name = "second".into();
        second.vip4 = Some(Ipv4Addr::new(198, 18, 0, 101));
        second.vip6 = None;
        // gw3 first, then gw1: ids 0 and 1 in the second service.
        second.gateways = vec![second.gateways[2].clone(), second.gateways[0].clone()];
        spec.services.push(second);
        let s = Snapshot::build(spec, 1).unwrap();
        assert_eq!(
            s.gateway_by_addr(lab::GATEWAYS_V4[0].into()),
            &[(0, 0), (1, 1)]
        );
        assert_eq!(
            s.gateway_by_addr(lab::GATEWAYS_V4[2].into()),
            &[(0, 2), (1, 0)]
        );
        assert_eq!(s.gateway_by_addr(lab::GATEWAYS_V4[1].into()), &[(0, 1)]);
        assert_eq!(
            s.gateway_by_addr(lab::GATEWAYS_V6[2].into()),
            &[(0, 2), (1, 0)]
        );
        let vip2 = ip("198.18.0.101");
        assert_eq!(s.local(vip2), Some(LocalKind::Vip { service: 1 }));
        assert_eq!(
            s.service_for(vip2, crate::wire::ip_proto::UDP, Some(4500)),
            Some(1)
        );
    }

    /// The route lookup as the snapshot did it before the per-family tables: the reference.
    fn reference_next_hop(
        routes: &[RouteEntry],
        neighbors: &FastMap<IpAddr, EthernetAddress>,
        dst: IpAddr,
    ) -> Result<NextHop, Unreachable> {
        let r = best_route(routes, dst).ok_or(Unreachable::NoRoute)?;
        if let Some(mac) = r.via_mac {
            return Ok(NextHop {
                interface: r.interface,
                mac,
            });
        }
        neighbors
            .get(&r.via.unwrap_or(dst))
            .map(|mac| NextHop {
                interface: r.interface,
                mac: *mac,
            })
            .ok_or(Unreachable::NoNeighbor)
    }

    /// Addresses in a small space, so that prefixes, neighbors and destinations collide.
    fn small_v4() -> impl Strategy<Value = IpAddr> {
        (0u8..4, 0u8..4).prop_map(|(a, b)| IpAddr::V4(Ipv4Addr::new(198, 18, a * 64, b)))
    }

    fn small_v6() -> impl Strategy<Value = IpAddr> {
        (0u16..4, 0u16..4)
            .prop_map(|(a, b)| IpAddr::V6(Ipv6Addr::new(0x2001, 2, 0, a << 14, 0, 0, 0, b)))
    }

    /// A connected subnet or a static route via an address of the small space; `via_mac` is
    /// resolved later, as `Snapshot::build` does.
    fn route() -> impl Strategy<Value = RouteEntry> {
        let addr = prop_oneof![small_v4(), small_v6()];
        let via = prop_oneof![small_v4(), small_v6()];
        // Few prefix lengths (the groups of the small space are /26 and /50), so that equally
        // long matches, where the tie-breaks decide, are common.
        (addr, 0usize..4, 0u16..3, proptest::option::of(via)).prop_map(
            |(a, len, interface, via)| {
                let len = if a.is_ipv4() {
                    [0, 24, 26, 32][len]
                } else {
                    [0, 48, 50, 128][len]
                };
                RouteEntry {
                    prefix: IpCidr::new(a, len).unwrap(),
                    interface,
                    via: via.filter(|v| v.is_ipv4() == a.is_ipv4()),
                    via_mac: None,
                }
            },
        )
    }

    proptest! {
        /// The sorted per-family tables pick the route (and next hop) `best_route` picks.
        #[test]
        fn fast_routes_agree_with_best_route(
            routes in proptest::collection::vec(route(), 0..12),
            neighbors in proptest::collection::vec((prop_oneof![small_v4(), small_v6()], any::<u8>()), 0..8),
            dsts in proptest::collection::vec(prop_oneof![small_v4(), small_v6()], 1..16),
        ) {
            let neighbors: FastMap<IpAddr, EthernetAddress> = neighbors
                .into_iter()
                .map(|(a, m)| (a, EthernetAddress([2, 0, 0, 0, 8, m])))
                .collect();
            let mut routes = routes;
            for r in &mut routes {
                r.via_mac = r.via.and_then(|v| neighbors.get(&v).copied());
            }
            let mut v4 = FamilyTables::<u32>::default();
            let mut v6 = FamilyTables::<u128>::default();
            set_routes(&routes, &mut v4, &mut v6);
            for (a, mac) in &neighbors {
                match *a {
                    IpAddr::V4(a) => v4.neighbors.insert(u32::from(a), *mac),
                    IpAddr::V6(a) => v6.neighbors.insert(u128::from(a), *mac),
                };
            }
            for dst in dsts {
                let fast = match dst {
                    IpAddr::V4(a) => v4.next_hop(u32::from(a)),
                    IpAddr::V6(a) => v6.next_hop(u128::from(a)),
                };
                prop_assert_eq!(fast, reference_next_hop(&routes, &neighbors, dst), "{}", dst);
            }
        }

        /// Grouped memberships come back per address in the order they were configured.
        #[test]
        fn gateway_groups_keep_order(pairs in proptest::collection::vec((0u32..6, any::<(u16, u16)>()), 0..40)) {
            let mut t = FamilyTables::<u32>::default();
            t.set_gateways(pairs.clone()).unwrap();
            for a in 0..7u32 {
                let want: Vec<(u16, u16)> =
                    pairs.iter().filter(|(p, _)| *p == a).map(|(_, m)| *m).collect();
                prop_assert_eq!(t.gateway_by_addr(a), &want[..]);
            }
        }

        /// One scan for both addresses says what two scans say.
        #[test]
        fn local_pair_agrees_with_local(
            local in proptest::collection::vec((0u32..8, any::<bool>(), 0u16..4), 0..8),
            src in 0u32..10,
            dst in 0u32..10,
        ) {
            let t = FamilyTables::<u32> {
                local: local
                .into_iter()
                .map(|(a, vip, id)| {
                    let k = if vip {
                        LocalKind::Vip { service: id }
                    } else {
                        LocalKind::Interface { interface: id }
                    };
                    (a, k)
                })
                .collect(),
                ..FamilyTables::default()
            };
            let want = match t.local(src) {
                Some(_) => LocalPair::FromUs,
                None => LocalPair::Foreign(t.local(dst)),
            };
            prop_assert_eq!(t.local_pair(src, dst), want);
        }
    }

    #[test]
    fn resolution_targets_follow_connected_subnets_then_routes() {
        let snap = Snapshot::build(
            crate::testkit::lab::appliance_spec(AffinitySpec::default()),
            1,
        )
        .unwrap();
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        // On-link client: itself, on the client interface.
        assert_eq!(
            snap.resolution_target(ip("198.18.0.20")),
            Some((0, ip("198.18.0.20")))
        );
        // Behind the router: the router.
        assert_eq!(
            snap.resolution_target(ip("198.18.70.1")),
            Some((0, ip("198.18.0.254")))
        );
        assert_eq!(
            snap.resolution_target(ip("2001:2:0:64::9")),
            Some((0, ip("2001:2:0:1::fe")))
        );
        // A gateway: itself, on the backend interface.
        assert_eq!(
            snap.resolution_target(ip("198.19.0.12")),
            Some((1, ip("198.19.0.12")))
        );
        assert_eq!(
            snap.source_address_for(1, ip("198.19.0.12")),
            Some(ip("198.19.0.1"))
        );
        assert_eq!(
            snap.source_address_for(0, ip("2001:2:0:1::fe")),
            Some(ip("2001:2:0:1::1"))
        );
    }

    #[test]
    fn the_awaited_neighbor_is_the_one_the_control_plane_resolves() {
        let snap = Snapshot::build(
            crate::testkit::lab::appliance_spec(AffinitySpec::default()),
            1,
        )
        .unwrap();
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        for dst in [
            "198.18.0.20",
            "198.18.70.1",
            "2001:2:0:64::9",
            "2001:2:0:1::33",
            "198.19.0.12",
            "2001:2:0:2::12",
        ] {
            assert_eq!(
                snap.awaited_neighbor(ip(dst)),
                snap.resolution_target(ip(dst)),
                "{dst}"
            );
        }
    }

    #[test]
    fn cidr_contains() {
        let c: IpCidr = "198.18.0.1/24".parse().unwrap();
        assert!(c.contains("198.18.0.200".parse().unwrap()));
        assert!(!c.contains("198.18.1.1".parse().unwrap()));
        assert!(!c.contains("2001:2::1".parse().unwrap()));
        let d: IpCidr = "0.0.0.0/0".parse().unwrap();
        assert!(d.contains("198.19.200.9".parse().unwrap()));
        let v6: IpCidr = "2001:2:0:1::1/64".parse().unwrap();
        assert!(v6.contains("2001:2:0:1::100".parse().unwrap()));
        assert!(!v6.contains("2001:2:0:2::1".parse().unwrap()));
        assert!("198.18.0.1/33".parse::<IpCidr>().is_err());
        assert!("198.18.0.1".parse::<IpCidr>().is_err());
    }
}
