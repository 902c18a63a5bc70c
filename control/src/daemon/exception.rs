//! The exception path: the kernel's view of the appliance's own addresses.
//!
//! One TAP per interface, with the interface's MAC, MTU and addresses, in the configured network
//! namespace. Frames the dataplane hands to the control thread for the appliance itself (TCP
//! and UDP to its addresses, multicast, neighbor answers) go into the TAP untagged; what the
//! kernel sends on a TAP leaves by its interface, tagged as the interface is, through worker 0.
//! So health checks, VRRP, state sync and an operator's ssh or ping use ordinary sockets.
//! Both directions are bounded per control-loop round and counted, so a flood at the
//! appliance's own addresses costs the control thread a bounded amount of work and never
//! touches the workers' forwarding.

use std::io;
use std::net::IpAddr;

use dataplane::emit::{self, L2};
use dataplane::exception::TokenBucket;
use dataplane::model::{ApplianceSpec, InterfaceSpec, IpCidr, RouteSpec};
use dataplane::wire::ethernet::{ethertype, EthernetFrame, Vlan};
use dataplane::wire::ip_proto;
use dataplane::wire::ipv4::Ipv4Packet;
use dataplane::wire::ipv6::Ipv6Packet;
use dataplane::wire::udp::UdpPacket;
use netdev::{ifconfig, netns, Tap};
use serde::Serialize;
use tracing::{info, warn};

use crate::config::ExceptionSettings;

/// Counters of the exception path.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ExceptionCounters {
    /// Frames handed to the kernel.
    pub to_kernel: u64,
    /// Frames the kernel did not take (its TAP queue was full) or that could not be written.
    pub to_kernel_dropped: u64,
    /// Frames the kernel sent.
    pub from_kernel: u64,
    /// Frames the kernel sent that could not be transmitted (no mbuf, full ring, too large).
    pub from_kernel_dropped: u64,
    /// Frames for the kernel over `[exception] rate_pps` (urgent frames are not policed here: the
    /// workers police each urgent class to `[exception] urgent_rate_pps`).
    pub policed: u64,
    /// The HA sync peer's datagrams (UDP from the peer's address to the sync port), which
    /// have their own budget (`[ha] sync_rate_pps`) instead of the exception policer's.
    pub sync_in: u64,
    /// Of those, the ones over the peer's budget (dropped).
    pub sync_policed: u64,
}

/// Why the exception path could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum ExceptionError {
    /// The configured network namespace cannot be entered.
    #[error("exception path: network namespace `{netns}`: {source}")]
    Netns { netns: String, source: io::Error },
    /// A TAP cannot be created or configured.
    #[error("exception path: TAP `{tap}`: {source}")]
    Tap { tap: String, source: io::Error },
    /// A reload would add, remove or re-tag an interface: its TAP is made at start.
    #[error("exception path: the interfaces (names, VLANs) changed; that needs a restart")]
    InterfacesChanged,
}

/// The control thread's budgets (ordinary exception frames towards the kernel, the HA peer's
/// sync datagrams): the same token bucket the workers police each class with.
pub type Policer = TokenBucket;

/// The TAPs, one per interface (in the spec's interface order).
pub struct ExceptionPath {
    taps: Vec<Tap>,
    /// Per interface: its VLAN tag, pushed on frames from the kernel.
    vlans: Vec<Vlan>,
    /// Most frames read from the kernel per round.
    budget: usize,
    buf: Vec<u8>,
    policer: Policer,
    /// The HA sync peer and its own budget, once the sync runs.
    sync_peer: Option<SyncPeer>,
    counters: ExceptionCounters,
    /// The namespace the TAPs live in (`None`: the daemon's own), entered again to change them.
    netns: Option<String>,
}

/// The HA sync peer: its datagrams ride their own budget, so that a flood at the appliance's
/// own addresses (which the exception policer drops) cannot starve the sync, nor the sync's
/// bulks eat the budget of an operator's ssh. A forged datagram from the peer's address costs
/// the peer's budget, not the others'; its tag then fails.
struct SyncPeer {
    addr: IpAddr,
    port: u16,
    policer: Policer,
}

impl ExceptionPath {
    /// Creates and configures the TAPs, each with its port's MTU. `mtu` is the dataplane's
    /// (the read buffer holds the largest of it and the ports').
    pub fn open(
        settings: &ExceptionSettings,
        spec: &ApplianceSpec,
        mtu: u16,
    ) -> Result<ExceptionPath, ExceptionError> {
        let _netns = match &settings.netns {
            Some(ns) => Some(netns::enter(ns).map_err(|source| ExceptionError::Netns {
                netns: ns.clone(),
                source,
            })?),
            None => None,
        };
        let mut taps = Vec::new();
        for itf in &spec.interfaces {
            let name = settings.tap_name(&itf.name);
            let port_mtu = spec.ports[usize::from(itf.port)].mtu;
            let tap =
                configure(&name, itf, spec, port_mtu).map_err(|source| ExceptionError::Tap {
                    tap: name.clone(),
                    source,
                })?;
            taps.push(tap);
        }
        info!(
            taps = taps.len(),
            netns = settings.netns.as_deref().unwrap_or("(own)"),
            "exception path open"
        );
        Ok(ExceptionPath {
            taps,
            vlans: spec.interfaces.iter().map(|i| i.vlan).collect(),
            budget: settings.queue,
            buf: vec![0; usize::from(spec.ports.iter().map(|p| p.mtu).fold(mtu, u16::max)) + 64],
            policer: Policer::new(settings.rate_pps),
            sync_peer: None,
            counters: ExceptionCounters::default(),
            netns: settings.netns.clone(),
        })
    }

    pub fn counters(&self) -> ExceptionCounters {
        self.counters
    }

    /// Gives the HA sync peer (`addr`, sending to our UDP `port`) its own budget of
    /// `rate_pps` datagrams a second (`[ha] sync_rate_pps`).
    pub fn set_sync_peer(&mut self, addr: IpAddr, port: u16, rate_pps: u32) {
        self.sync_peer = Some(SyncPeer {
            addr,
            port,
            policer: Policer::new(rate_pps),
        });
    }

    /// Hands `frame`, received on `interface`, to the kernel without its VLAN tags, unless it
    /// is over its budget (`now_ms`: a monotonic clock): the sync peer's datagrams its own,
    /// other frames that are not `urgent` the exception rate.
    pub fn to_kernel(&mut self, interface: u16, frame: &[u8], urgent: bool, now_ms: u64) {
        let peer = self
            .sync_peer
            .as_mut()
            .filter(|p| is_sync_datagram(frame, p.addr, p.port));
        if let Some(p) = peer {
            self.counters.sync_in += 1;
            if !p.policer.allow(now_ms) {
                self.counters.sync_policed += 1;
                return;
            }
        } else if !urgent && !self.policer.allow(now_ms) {
            self.counters.policed += 1;
            return;
        }
        let Some(tap) = self.taps.get(usize::from(interface)) else {
            self.counters.to_kernel_dropped += 1;
            return;
        };
        let sent = match untagged(frame) {
            Some(Untagged::Same) => tap.send(frame),
            Some(Untagged::Rebuilt(f)) => tap.send(&f),
            None => Ok(false),
        };
        match sent {
            Ok(true) => self.counters.to_kernel += 1,
            Ok(false) | Err(_) => self.counters.to_kernel_dropped += 1,
        }
    }

    /// Frames the kernel sent, at most the configured queue size per call, each with the
    /// interface it leaves by (tagged for that interface). `send` says whether it went out.
    pub fn from_kernel(&mut self, mut send: impl FnMut(u16, &[u8]) -> bool) {
        for _ in 0..self.budget {
            let mut any = false;
            // Interface ids are u16 (the configuration's interfaces, one TAP each).
            for (i, interface) in (0..self.taps.len()).zip(0..=u16::MAX) {
                let n = match self.taps[i].recv(&mut self.buf) {
                    Ok(Some(n)) => n,
                    Ok(None) => continue,
                    Err(e) => {
                        warn!(tap = self.taps[i].name(), error = %e, "cannot read from the TAP");
                        continue;
                    }
                };
                any = true;
                self.counters.from_kernel += 1;
                let ok = match self.vlans[i] {
                    Vlan::Untagged => send(interface, &self.buf[..n]),
                    vlan => send(interface, &tagged(&self.buf[..n], vlan)),
                };
                if !ok {
                    self.counters.from_kernel_dropped += 1;
                }
            }
            if !any {
                break;
            }
        }
    }
}

/// One change to a TAP on a reload.
#[derive(Clone, Debug, PartialEq, Eq)]
enum TapChange {
    AddAddress(IpCidr),
    DelAddress(IpCidr),
    AddRoute(RouteSpec),
    DelRoute(RouteSpec),
}

impl TapChange {
    fn undo(&self) -> TapChange {
        match self.clone() {
            TapChange::AddAddress(a) => TapChange::DelAddress(a),
            TapChange::DelAddress(a) => TapChange::AddAddress(a),
            TapChange::AddRoute(r) => TapChange::DelRoute(r),
            TapChange::DelRoute(r) => TapChange::AddRoute(r),
        }
    }

    fn apply(&self, tap: &str) -> io::Result<()> {
        match self {
            TapChange::AddAddress(a) => ifconfig::add_address(tap, a.addr, a.prefix),
            TapChange::DelAddress(a) => ifconfig::del_address(tap, a.addr, a.prefix),
            TapChange::AddRoute(r) => {
                ifconfig::add_route(r.prefix.addr, r.prefix.prefix, r.via, tap)
            }
            TapChange::DelRoute(r) => {
                ifconfig::del_route(r.prefix.addr, r.prefix.prefix, r.via, tap)
            }
        }
    }
}

/// The routes of `spec` a TAP carries: those whose next hop is on its interface.
fn tap_routes(spec: &ApplianceSpec, itf: &InterfaceSpec) -> Vec<RouteSpec> {
    spec.routes
        .iter()
        .filter(|r| itf.addresses.iter().any(|a| a.contains(r.via)))
        .cloned()
        .collect()
}

/// What turns interface `i`'s TAP from `old`'s into `new`'s, in an order the kernel takes:
/// new addresses first (a new route's next hop may need one), then new routes, then the old
/// routes, then the old addresses.
fn tap_plan(old: &ApplianceSpec, new: &ApplianceSpec, i: usize) -> Vec<TapChange> {
    let (Some(o), Some(n)) = (old.interfaces.get(i), new.interfaces.get(i)) else {
        return Vec::new();
    };
    let (old_routes, new_routes) = (tap_routes(old, o), tap_routes(new, n));
    let mut plan: Vec<TapChange> = Vec::new();
    plan.extend(
        n.addresses
            .iter()
            .filter(|a| !o.addresses.contains(a))
            .map(|a| TapChange::AddAddress(*a)),
    );
    plan.extend(
        new_routes
            .iter()
            .filter(|r| !old_routes.contains(r))
            .map(|r| TapChange::AddRoute(r.clone())),
    );
    plan.extend(
        old_routes
            .iter()
            .filter(|r| !new_routes.contains(r))
            .map(|r| TapChange::DelRoute(r.clone())),
    );
    plan.extend(
        o.addresses
            .iter()
            .filter(|a| !n.addresses.contains(a))
            .map(|a| TapChange::DelAddress(*a)),
    );
    plan
}

impl ExceptionPath {
    /// Whether a reload from `old` to `new` can change the TAPs: the same interfaces (names and
    /// VLANs) in the same order; addresses and routes may differ.
    pub fn check_reload(old: &ApplianceSpec, new: &ApplianceSpec) -> Result<(), ExceptionError> {
        let shape = |s: &ApplianceSpec| -> Vec<(String, Vlan)> {
            s.interfaces
                .iter()
                .map(|i| (i.name.clone(), i.vlan))
                .collect()
        };
        if shape(old) == shape(new) {
            Ok(())
        } else {
            Err(ExceptionError::InterfacesChanged)
        }
    }

    /// Gives the TAPs `new`'s addresses and routes, all of them or, when the kernel refuses one,
    /// none (what was already changed is undone).
    pub fn reload(
        &mut self,
        old: &ApplianceSpec,
        new: &ApplianceSpec,
    ) -> Result<(), ExceptionError> {
        Self::check_reload(old, new)?;
        let _netns = match &self.netns {
            Some(ns) => Some(netns::enter(ns).map_err(|source| ExceptionError::Netns {
                netns: ns.clone(),
                source,
            })?),
            None => None,
        };
        let mut done: Vec<(usize, TapChange)> = Vec::new();
        for (i, tap) in self.taps.iter().enumerate() {
            for change in tap_plan(old, new, i) {
                if let Err(source) = change.apply(tap.name()) {
                    for (j, c) in done.iter().rev() {
                        if let Err(e) = c.undo().apply(self.taps[*j].name()) {
                            warn!(tap = self.taps[*j].name(), change = ?c, error = %e, "TAP change not undone");
                        }
                    }
                    return Err(ExceptionError::Tap {
                        tap: tap.name().to_string(),
                        source,
                    });
                }
                done.push((i, change));
            }
        }
        if !done.is_empty() {
            info!(
                changes = done.len(),
                "exception path: TAP addresses and routes reloaded"
            );
        }
        Ok(())
    }
}

fn configure(name: &str, itf: &InterfaceSpec, spec: &ApplianceSpec, mtu: u16) -> io::Result<Tap> {
    let tap = Tap::create(name)?;
    // The dataplane answers neighbor solicitations for these addresses, so the kernel's
    // duplicate address detection would only delay them.
    if itf.addresses.iter().any(|a| a.addr.is_ipv6()) {
        ifconfig::set_ipv6_conf(name, "accept_dad", "0")?;
    }
    let mac = spec.ports[usize::from(itf.port)].mac;
    ifconfig::set_mac(name, mac.0)?;
    ifconfig::set_mtu(name, u32::from(mtu))?;
    ifconfig::set_up(name)?;
    for a in &itf.addresses {
        ifconfig::add_address(name, a.addr, a.prefix)?;
    }
    // The config's routes whose next hop is on this interface, so the kernel reaches what the
    // dataplane reaches (clients behind the router, for ssh and ping answers).
    for r in &spec.routes {
        if itf.addresses.iter().any(|a| a.contains(r.via)) {
            ifconfig::add_route(r.prefix.addr, r.prefix.prefix, r.via, name)?;
        }
    }
    Ok(tap)
}

/// Whether `frame` is a UDP datagram from `peer` to our UDP `port` (any VLAN tags; an IPv4
/// fragment other than the first is not: it has no UDP header).
fn is_sync_datagram(frame: &[u8], peer: IpAddr, port: u16) -> bool {
    let Ok(eth) = EthernetFrame::new_checked(frame) else {
        return false;
    };
    let to_port = |udp: &[u8]| UdpPacket::new_checked(udp).is_ok_and(|u| u.dst_port() == port);
    match (eth.ethertype(), peer) {
        (ethertype::IPV4, IpAddr::V4(peer)) => {
            Ipv4Packet::new_checked(eth.payload()).is_ok_and(|ip| {
                ip.src_addr() == peer
                    && ip.protocol() == ip_proto::UDP
                    && ip.frag_offset() == 0
                    && to_port(ip.payload())
            })
        }
        (ethertype::IPV6, IpAddr::V6(peer)) => {
            Ipv6Packet::new_checked(eth.payload()).is_ok_and(|ip| {
                ip.src_addr() == peer && ip.next_header() == ip_proto::UDP && to_port(ip.payload())
            })
        }
        _ => false,
    }
}

enum Untagged {
    Same,
    Rebuilt(Vec<u8>),
}

/// `frame` without its VLAN tags (`None`: not Ethernet).
fn untagged(frame: &[u8]) -> Option<Untagged> {
    let eth = EthernetFrame::new_checked(frame).ok()?;
    if eth.vlan() == Vlan::Untagged {
        return Some(Untagged::Same);
    }
    Some(Untagged::Rebuilt(retagged(&eth, Vlan::Untagged)))
}

/// `frame` (untagged) with `vlan`'s tags; unchanged if it is not Ethernet or a VID does not fit
/// 12 bits.
fn tagged(frame: &[u8], vlan: Vlan) -> Vec<u8> {
    let vid_ok = |vid: u16| vid <= 0x0fff;
    let fits = match vlan {
        Vlan::Untagged => true,
        Vlan::Single { vid } => vid_ok(vid),
        Vlan::Double { outer, inner } => vid_ok(outer) && vid_ok(inner),
    };
    match EthernetFrame::new_checked(frame) {
        Ok(eth) if fits => retagged(&eth, vlan),
        _ => frame.to_vec(),
    }
}

/// The frame of `eth` with its header re-emitted with `vlan`'s tags.
fn retagged(eth: &EthernetFrame<&[u8]>, vlan: Vlan) -> Vec<u8> {
    let l2 = L2::new(eth.src(), eth.dst()).with_vlan(vlan);
    let payload = eth.payload();
    emit::ethernet_frame(&l2, eth.ethertype(), payload.len(), |p| {
        p.copy_from_slice(payload)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lab() -> ApplianceSpec {
        let lab = concat!(env!("CARGO_MANIFEST_DIR"), "/../conf/lab.toml");
        crate::config::load(std::path::Path::new(lab)).unwrap()
    }

    #[test]
    fn a_reload_plan_adds_before_it_removes_and_undoes_in_reverse() {
        let old = lab();
        let mut new = old.clone();
        let cidr = |t: &str| -> IpCidr { t.parse().unwrap() };
        // The client side trades 198.18.0.1/24 for 198.18.2.1/24; its default route moves to a
        // router on the new subnet.
        let client = new
            .interfaces
            .iter()
            .position(|i| i.name == "client")
            .unwrap();
        let i = &mut new.interfaces[client];
        let gone = i.addresses.remove(0);
        i.addresses.push(cidr("198.18.2.1/24"));
        let r = new.routes.iter_mut().find(|r| r.via.is_ipv4()).unwrap();
        let old_route = r.clone();
        r.via = "198.18.2.254".parse().unwrap();
        let new_route = r.clone();
        let plan = tap_plan(&old, &new, client);
        assert_eq!(
            plan,
            vec![
                TapChange::AddAddress(cidr("198.18.2.1/24")),
                TapChange::AddRoute(new_route.clone()),
                TapChange::DelRoute(old_route),
                TapChange::DelAddress(gone),
            ]
        );
        assert_eq!(plan[1].undo(), TapChange::DelRoute(new_route));
        // Nothing changes on the other side, nor for an unchanged file.
        let backend = new
            .interfaces
            .iter()
            .position(|i| i.name == "backend")
            .unwrap();
        assert!(tap_plan(&old, &new, backend).is_empty());
        assert!(tap_plan(&old, &old, client).is_empty());
        assert!(ExceptionPath::check_reload(&old, &new).is_ok());
        let mut renamed = new.clone();
        renamed.interfaces[client].name = "outside".into();
        assert!(matches!(
            ExceptionPath::check_reload(&old, &renamed),
            Err(ExceptionError::InterfacesChanged)
        ));
    }

    #[test]
    fn the_policer_lets_its_rate_and_a_tenth_of_a_second_through() {
        let mut p = Policer::new(10_000);
        let passed = (0..5000).filter(|_| p.allow(0)).count();
        assert_eq!(passed, 1000, "the burst: a tenth of a second");
        // One second later: the bucket is full again (capped at the burst), not 10 000 deep.
        let passed = (0..5000).filter(|_| p.allow(1000)).count();
        assert_eq!(passed, 1000);
        // Steady: 10 frames per millisecond.
        let mut passed = 0;
        for ms in 1001..=2000 {
            passed += (0..100).filter(|_| p.allow(ms)).count();
        }
        assert_eq!(passed, 10_000);
        // Slow rates refill between milliseconds; a clock that goes back is harmless.
        let mut slow = Policer::new(100);
        assert_eq!((0..100).filter(|_| slow.allow(0)).count(), 64);
        assert!(!slow.allow(5));
        assert!(slow.allow(10));
        assert!(!slow.allow(3));
    }

    #[test]
    fn the_sync_peer_is_known_by_address_protocol_and_port() {
        use std::net::Ipv4Addr;
        let l2 = testkit::L2::new(
            dataplane::wire::ethernet::EthernetAddress([2, 0, 0, 0, 0, 3]),
            dataplane::wire::ethernet::EthernetAddress([2, 0, 0, 0, 0, 2]),
        );
        let udp = |src: Ipv4Addr, dst_port: u16| {
            let l4 = testkit::L4::Udp {
                src: 7450,
                dst: dst_port,
                payload: b"VLBS",
            };
            testkit::ipv4(
                &l2,
                src,
                Ipv4Addr::new(198, 19, 0, 2),
                &testkit::Ipv4Opts::default(),
                &l4,
            )
        };
        let peer = Ipv4Addr::new(198, 19, 0, 3);
        assert!(is_sync_datagram(&udp(peer, 7450), peer.into(), 7450));
        assert!(!is_sync_datagram(&udp(peer, 22), peer.into(), 7450));
        let stranger = Ipv4Addr::new(198, 18, 64, 9);
        assert!(!is_sync_datagram(&udp(stranger, 7450), peer.into(), 7450));
        assert!(!is_sync_datagram(&[0u8; 20], peer.into(), 7450));
    }

    fn frame(vlan: Vlan) -> Vec<u8> {
        let mut f = vec![0u8; vlan.header_len() + 4];
        let h = dataplane::wire::ethernet::emit_header(
            &mut f,
            dataplane::wire::ethernet::EthernetAddress([2, 0, 0, 0, 0, 1]),
            dataplane::wire::ethernet::EthernetAddress([2, 0, 0, 0, 0, 2]),
            vlan,
            0x0800,
        )
        .unwrap();
        f[h..].copy_from_slice(&[1, 2, 3, 4]);
        f
    }

    #[test]
    fn tags_come_off_towards_the_kernel_and_go_back_on_the_way_out() {
        for vlan in [
            Vlan::Single { vid: 100 },
            Vlan::Double {
                outer: 200,
                inner: 300,
            },
        ] {
            let tagged_frame = frame(vlan);
            let Some(Untagged::Rebuilt(plain)) = untagged(&tagged_frame) else {
                panic!("a tagged frame is rebuilt");
            };
            assert_eq!(plain, frame(Vlan::Untagged));
            assert_eq!(tagged(&plain, vlan), tagged_frame);
        }
        assert!(matches!(
            untagged(&frame(Vlan::Untagged)),
            Some(Untagged::Same)
        ));
        assert!(untagged(&[0u8; 6]).is_none());
    }
}
