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
use crate::schedule::maglev::{MaglevMember, MaglevTable};
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
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(a) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(a)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
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
}

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

/// Which protocols a service carries, and on which ports (server side).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Listeners {
    pub ike: Option<u16>,
    pub natt: Option<u16>,
    pub esp: bool,
    pub tls: Option<u16>,
    pub dtls: Option<u16>,
}

impl Listeners {
    /// Whether the service accepts this transport protocol and server-side port.
    pub fn accepts(&self, protocol: u8, port: u16) -> bool {
        use crate::wire::ip_proto;
        match protocol {
            ip_proto::UDP => [self.ike, self.natt, self.dtls].contains(&Some(port)),
            ip_proto::TCP => self.tls == Some(port),
            ip_proto::ESP => self.esp,
            _ => false,
        }
    }

    /// Whether the service accepts any traffic of this transport protocol (used for non-first
    /// fragments, which carry no ports).
    pub fn accepts_protocol(&self, protocol: u8) -> bool {
        use crate::wire::ip_proto;
        match protocol {
            ip_proto::UDP => self.ike.is_some() || self.natt.is_some() || self.dtls.is_some(),
            ip_proto::TCP => self.tls.is_some(),
            ip_proto::ESP => self.esp,
            _ => false,
        }
    }

    /// The classifier's port plan; protocols a service does not carry get port 0, which no
    /// UDP/TCP packet uses, so they are never recognised.
    pub fn port_plan(&self) -> PortPlan {
        PortPlan {
            ike: self.ike.unwrap_or(0),
            natt: self.natt.unwrap_or(0),
            dtls: self.dtls.unwrap_or(0),
            tls: self.tls.unwrap_or(0),
        }
    }
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
}

/// Sizing of each worker's affinity shard.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AffinitySpec {
    /// Entries per shard (per worker).
    pub capacity: usize,
    /// Unconfirmed entries allowed per shard before the oldest are evicted.
    pub max_unconfirmed: usize,
}

impl Default for AffinitySpec {
    fn default() -> Self {
        AffinitySpec {
            capacity: 1 << 20,
            max_unconfirmed: 1 << 18,
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
}

/// What an address on the appliance is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LocalKind {
    /// A service VIP (answered on client-role interfaces).
    Vip { service: u16 },
    /// An interface's own address.
    Interface { interface: u16 },
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

/// The immutable view every worker reads. Built once per configuration or state change.
#[derive(Debug)]
pub struct Snapshot {
    pub generation: u64,
    pub spec: ApplianceSpec,
    pub services: Vec<ServiceView>,
    /// (port, vlan) of each interface, index = interface id; scanned on ingress (a handful of
    /// entries: faster than hashing).
    interface_tags: Vec<(u16, Vlan)>,
    /// Interface MACs, index = interface id.
    interface_macs: Vec<EthernetAddress>,
    local: Vec<(IpAddr, LocalKind)>,
    /// Gateway address -> (service, gateway id) for every service the gateway serves.
    gateways_by_addr: FastMap<IpAddr, Vec<(u16, u16)>>,
    routes: Vec<RouteEntry>,
    neighbors: FastMap<IpAddr, EthernetAddress>,
}

impl Snapshot {
    /// Derives the hot-path view. The spec must have been validated (the control plane's config
    /// loader does that and names the offending key); this only fails on what it cannot derive.
    pub fn build(spec: ApplianceSpec, generation: u64) -> Result<Snapshot, String> {
        let mut interface_tags: Vec<(u16, Vlan)> = Vec::new();
        let mut interface_macs = Vec::with_capacity(spec.interfaces.len());
        let mut local = Vec::new();
        let mut routes = Vec::new();
        for (i, itf) in spec.interfaces.iter().enumerate() {
            let id = u16::try_from(i).map_err(|_| "too many interfaces".to_string())?;
            let port = spec
                .ports
                .get(usize::from(itf.port))
                .ok_or_else(|| format!("interface {} refers to a missing port", itf.name))?;
            if interface_tags.contains(&(itf.port, itf.vlan)) {
                return Err(format!(
                    "interface {} duplicates another interface's port and VLAN tags",
                    itf.name
                ));
            }
            interface_tags.push((itf.port, itf.vlan));
            interface_macs.push(port.mac);
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
        let neighbors: FastMap<IpAddr, EthernetAddress> =
            spec.neighbors.iter().map(|n| (n.address, n.mac)).collect();
        let connected = routes.clone();
        for r in &spec.routes {
            let hop = best_route(&connected, r.via).ok_or_else(|| {
                format!(
                    "route {} via {} is not on a connected subnet",
                    r.prefix, r.via
                )
            })?;
            routes.push(RouteEntry {
                prefix: r.prefix,
                interface: hop.interface,
                via: Some(r.via),
                via_mac: neighbors.get(&r.via).copied(),
            });
        }
        let mut services = Vec::with_capacity(spec.services.len());
        let mut gateways_by_addr: FastMap<IpAddr, Vec<(u16, u16)>> = FastMap::default();
        for (s, svc) in spec.services.iter().enumerate() {
            let sid = u16::try_from(s).map_err(|_| "too many services".to_string())?;
            if let Some(v) = svc.vip4 {
                local.push((IpAddr::V4(v), LocalKind::Vip { service: sid }));
            }
            if let Some(v) = svc.vip6 {
                local.push((IpAddr::V6(v), LocalKind::Vip { service: sid }));
            }
            for (g, gw) in svc.gateways.iter().enumerate() {
                let gid = u16::try_from(g).map_err(|_| "too many gateways".to_string())?;
                for a in [gw.address(false), gw.address(true)].into_iter().flatten() {
                    gateways_by_addr.entry(a).or_default().push((sid, gid));
                }
            }
            let family = |v6: bool| -> Result<FamilyView, String> {
                let candidates: Vec<Candidate> = svc
                    .gateways
                    .iter()
                    .map(|g| Candidate {
                        weight: if g.address(v6).is_some() { g.weight } else { 0 },
                        state: g.state,
                    })
                    .collect();
                // The table covers every configured gateway whatever its state: a gateway
                // that goes down or drains is skipped at lookup (`lookup_eligible`), so only
                // its own clients move, and the table needs no rebuild on state changes.
                let maglev = if svc.scheduler == SchedulerKind::Maglev {
                    let members: Vec<MaglevMember<'_>> = svc
                        .gateways
                        .iter()
                        .zip(&candidates)
                        .map(|(g, c)| MaglevMember {
                            name: &g.name,
                            weight: c.weight,
                        })
                        .collect();
                    let table = MaglevTable::build(&members, spec.maglev_size)
                        .map_err(|e| format!("service {}: {e}", svc.name))?;
                    Some(Arc::new(table))
                } else {
                    None
                };
                let gateways = svc
                    .gateways
                    .iter()
                    .map(|g| {
                        g.address(v6).map(|a| {
                            let hop = best_route(&routes, a).and_then(|r| {
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
                Ok(FamilyView {
                    candidates,
                    maglev,
                    gateways,
                })
            };
            services.push(ServiceView {
                port_plan: svc.listeners.port_plan(),
                v4: family(false)?,
                v6: family(true)?,
                spec: svc.clone(),
            });
        }
        Ok(Snapshot {
            generation,
            spec,
            services,
            interface_tags,
            interface_macs,
            local,
            gateways_by_addr,
            routes,
            neighbors,
        })
    }

    /// The interface a frame arrived on, from its port and VLAN tags.
    #[inline]
    pub fn interface(&self, port: u16, vlan: Vlan) -> Option<u16> {
        self.interface_tags
            .iter()
            .position(|t| *t == (port, vlan))
            .and_then(|i| u16::try_from(i).ok())
    }

    #[inline]
    pub fn interface_spec(&self, id: u16) -> &InterfaceSpec {
        &self.spec.interfaces[usize::from(id)]
    }

    #[inline]
    pub fn interface_mac(&self, id: u16) -> EthernetAddress {
        self.interface_macs[usize::from(id)]
    }

    /// What a destination address is on this appliance, if anything.
    #[inline]
    pub fn local(&self, addr: IpAddr) -> Option<LocalKind> {
        self.local.iter().find(|(a, _)| *a == addr).map(|(_, k)| *k)
    }

    /// The services (and gateway ids) a gateway address belongs to.
    #[inline]
    pub fn gateway_by_addr(&self, addr: IpAddr) -> &[(u16, u16)] {
        self.gateways_by_addr
            .get(&addr)
            .map(Vec::as_slice)
            .unwrap_or(&[])
    }

    /// Route lookup and neighbor resolution for a destination. `Err(true)` when there is a route
    /// but no neighbor entry for its next hop, `Err(false)` when there is no route.
    pub fn next_hop(&self, dst: IpAddr) -> Result<NextHop, bool> {
        let r = best_route(&self.routes, dst).ok_or(false)?;
        if let Some(mac) = r.via_mac {
            return Ok(NextHop {
                interface: r.interface,
                mac,
            });
        }
        let nh = r.via.unwrap_or(dst);
        self.neighbors
            .get(&nh)
            .map(|mac| NextHop {
                interface: r.interface,
                mac: *mac,
            })
            .ok_or(true)
    }

    /// The neighbor table (static entries; dynamic resolution is the daemon's).
    pub fn neighbor(&self, addr: IpAddr) -> Option<EthernetAddress> {
        self.neighbors.get(&addr).copied()
    }

    /// Service id by name.
    pub fn service_id(&self, name: &str) -> Option<u16> {
        self.services
            .iter()
            .position(|s| s.spec.name == name)
            .and_then(|i| u16::try_from(i).ok())
    }
}

fn best_route(routes: &[RouteEntry], dst: IpAddr) -> Option<&RouteEntry> {
    routes
        .iter()
        .filter(|r| r.prefix.contains(dst))
        .max_by_key(|r| (r.prefix.prefix, r.via.is_none()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidr_contains() {
        let c: IpCidr = "198.18.0.1/24".parse().unwrap();
        assert!(c.contains("198.18.0.200".parse().unwrap()));
        assert!(!c.contains("198.18.1.1".parse().unwrap()));
        assert!(!c.contains("2001:2::1".parse().unwrap()));
        let d: IpCidr = "0.0.0.0/0".parse().unwrap();
        assert!(d.contains("203.0.113.9".parse().unwrap()));
        let v6: IpCidr = "2001:2:0:1::1/64".parse().unwrap();
        assert!(v6.contains("2001:2:0:1::100".parse().unwrap()));
        assert!(!v6.contains("2001:2:0:2::1".parse().unwrap()));
        assert!("198.18.0.1/33".parse::<IpCidr>().is_err());
        assert!("198.18.0.1".parse::<IpCidr>().is_err());
    }
}
