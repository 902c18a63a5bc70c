//! Which frames for the appliance itself its control plane cannot do without, decided by where
//! they arrive and by what the protocols require, never by their bytes alone; and the per-worker
//! budgets that bound every kind of them.
//!
//! Frames the pipeline hands to the control plane (its verdict `ToControl`) travel on two queues:
//! urgent ones — neighbor discovery, VRRP, the health checks' answers, the HA peer's sync — on
//! one, and the rest (an operator's ssh, pings, whatever a client aims at the appliance's own
//! address) on another. What makes a frame urgent is checked against its ingress interface and
//! the protocol's own rules, because its bytes alone are anyone's to forge:
//! - ARP: link-local by nature (it is never routed), urgent wherever it arrives.
//! - IPv6 neighbor and router discovery (ICMPv6 133–136): only with hop limit 255 (RFC 4861
//!   §6.1, §7.1.1: a receiver MUST discard anything less, which a router on the way changed or a
//!   sender forged); such frames are dropped, counted.
//! - VRRP (IP protocol 112): only to the VRRP group, with TTL / hop limit 255 (RFC 5798 §7.1),
//!   on an interface where a virtual router of ours runs (VIPs on a client-role interface, a
//!   floating address on its own); else dropped, counted.
//! - Anything from a gateway's address (the health checks' answers): only when it arrives on a
//!   backend-role interface. Gateways' addresses are public in redirect mode, so the same
//!   source on the client side is a forgery or a client; it goes with the rest, counted.
//! - From the HA peer's address (the sync and its heartbeat): only on a backend-role interface,
//!   likewise.
//!
//! Each urgent kind then has a token bucket of its own in each worker ([`ExceptionPolicer`]), and
//! the rest another: a flood of one kind (forged ARP from a neighbor, say) exhausts that kind's
//! budget, never another's, and ordinary traffic at the appliance's address never the urgent
//! ones'. No lock, no system call, no allocation: the time is the worker's clock.

use std::net::IpAddr;

use crate::model::{Role, Snapshot};
use crate::wire::ethernet::{ethertype, EthernetFrame};
use crate::wire::icmpv6::icmpv6_type;
use crate::wire::ip_proto;
use crate::wire::ipv4::Ipv4Packet;
use crate::wire::ipv6::Ipv6Packet;
use crate::wire::vrrp::{VRRP_V4_GROUP, VRRP_V6_GROUP};

/// The queue of an exception frame: the urgent ring or the other one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExceptionQueue {
    Urgent,
    Other,
}

crate::named_reasons! {
    /// The budgets an exception frame is policed against (each worker has one per class).
    pub enum ExceptionClass {
        Arp => "arp", "ARP (urgent).";
        Nd => "nd", "IPv6 router and neighbor discovery with hop limit 255 (urgent).";
        Vrrp => "vrrp", "VRRP adverts to the group, TTL 255, where a router of ours runs (urgent).";
        Gateway => "gateway", "From a gateway's address on a backend interface: health answers (urgent).";
        Peer => "peer", "From the HA peer's address on a backend interface: sync, heartbeat (urgent).";
        Other => "other", "Everything else for the appliance itself (ssh, ping, ...).";
    }
}

impl ExceptionClass {
    /// Which ring the class travels on.
    pub fn queue(self) -> ExceptionQueue {
        if self == ExceptionClass::Other {
            ExceptionQueue::Other
        } else {
            ExceptionQueue::Urgent
        }
    }
}

crate::named_reasons! {
    /// Why a frame that looked urgent was not: dropped (the protocol says discard) or
    /// queued with the rest. Bad input, counted per reason.
    pub enum Suspect {
        VrrpTtl => "vrrp-ttl", "VRRP with a TTL or hop limit other than 255 (routed or forged): dropped.";
        VrrpNotToGroup => "vrrp-not-to-group", "VRRP to an address other than the VRRP group: dropped.";
        VrrpNoRouter => "vrrp-no-router", "VRRP on an interface (or family) where no virtual router of ours runs, or for another VRID: dropped.";
        NdHopLimit => "nd-hop-limit", "Router or neighbor discovery with a hop limit other than 255: dropped.";
        GatewayOffBackend => "gateway-off-backend", "A gateway's source address arriving on a non-backend interface: queued as other.";
        PeerOffBackend => "peer-off-backend", "The HA peer's source address arriving on a non-backend interface: queued as other.";
    }
}

impl Suspect {
    /// Whether the frame is dropped (else it is queued as [`ExceptionClass::Other`]).
    pub fn drops(self) -> bool {
        !matches!(self, Suspect::GatewayOffBackend | Suspect::PeerOffBackend)
    }
}

/// What becomes of one exception frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exception {
    /// Queued, policed against the class's budget.
    Queue(ExceptionClass),
    /// Looked urgent, failed its rule: queued as [`ExceptionClass::Other`], counted.
    Demoted(Suspect),
    /// Failed a rule its protocol enforces by discarding: dropped, counted.
    Drop(Suspect),
}

impl Exception {
    /// The class it is policed as, `None` when it is dropped.
    pub fn class(self) -> Option<ExceptionClass> {
        match self {
            Exception::Queue(c) => Some(c),
            Exception::Demoted(_) => Some(ExceptionClass::Other),
            Exception::Drop(_) => None,
        }
    }

    /// The rule it failed, if any.
    pub fn suspect(self) -> Option<Suspect> {
        match self {
            Exception::Queue(_) => None,
            Exception::Demoted(s) | Exception::Drop(s) => Some(s),
        }
    }
}

/// What the classification needs beyond the snapshot: who the HA peer is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExceptionRules {
    /// The other vpnlbd of an HA pair (its sync and heartbeat come from there).
    pub peer: Option<IpAddr>,
}

/// Classifies a frame the pipeline handed to the control plane, received on DPDK port `port`
/// (its VLAN tags are in the frame). Never fails: what does not parse is `Other`.
pub fn classify_exception(
    snap: &Snapshot,
    rules: &ExceptionRules,
    port: u16,
    frame: &[u8],
) -> Exception {
    const OTHER: Exception = Exception::Queue(ExceptionClass::Other);
    let Ok(eth) = EthernetFrame::new_checked(frame) else {
        return OTHER;
    };
    let interface = snap.interface(port, eth.vlan());
    let backend = interface.is_some_and(|i| snap.interface_view(i).role == Role::Backend);
    let (src, vrrp) = match eth.ethertype() {
        ethertype::ARP => return Exception::Queue(ExceptionClass::Arp),
        ethertype::IPV4 => {
            let Ok(ip) = Ipv4Packet::new_checked(eth.payload()) else {
                return OTHER;
            };
            let vrrp = (ip.protocol() == ip_proto::VRRP).then(|| {
                (
                    ip.ttl(),
                    IpAddr::V4(ip.dst_addr()) == IpAddr::V4(VRRP_V4_GROUP),
                    ip.payload().get(1).copied(),
                )
            });
            (IpAddr::V4(ip.src_addr()), vrrp)
        }
        ethertype::IPV6 => {
            let Ok(ip) = Ipv6Packet::new_checked(eth.payload()) else {
                return OTHER;
            };
            let ndp = ip.next_header() == ip_proto::ICMPV6
                && ip.payload().first().is_some_and(|t| {
                    (icmpv6_type::ROUTER_SOLICIT..=icmpv6_type::NEIGHBOR_ADVERT).contains(t)
                });
            if ndp {
                return if ip.hop_limit() == 255 {
                    Exception::Queue(ExceptionClass::Nd)
                } else {
                    Exception::Drop(Suspect::NdHopLimit)
                };
            }
            let vrrp = (ip.next_header() == ip_proto::VRRP).then(|| {
                (
                    ip.hop_limit(),
                    ip.dst_addr() == VRRP_V6_GROUP,
                    ip.payload().get(1).copied(),
                )
            });
            (IpAddr::V6(ip.src_addr()), vrrp)
        }
        _ => return OTHER,
    };
    if let Some((ttl, to_group, vrid)) = vrrp {
        // Another VRID is another virtual router, legitimately on the segment or forged: never
        // ours to hear, and it must not spend our routers' budget (the master's adverts).
        let ours = snap.spec.ha.as_ref().map(|h| h.vrid);
        return if ttl != 255 {
            Exception::Drop(Suspect::VrrpTtl)
        } else if !to_group {
            Exception::Drop(Suspect::VrrpNotToGroup)
        } else if vrid.is_none()
            || vrid != ours
            || !interface.is_some_and(|i| runs_vrrp(snap, i, src.is_ipv6()))
        {
            Exception::Drop(Suspect::VrrpNoRouter)
        } else {
            Exception::Queue(ExceptionClass::Vrrp)
        };
    }
    if !snap.gateway_by_addr(src).is_empty() {
        return if backend {
            Exception::Queue(ExceptionClass::Gateway)
        } else {
            Exception::Demoted(Suspect::GatewayOffBackend)
        };
    }
    if rules.peer == Some(src) {
        return if backend {
            Exception::Queue(ExceptionClass::Peer)
        } else {
            Exception::Demoted(Suspect::PeerOffBackend)
        };
    }
    OTHER
}

/// Whether a virtual router of ours runs on `interface` for the family (as the control plane's
/// HA sets them up: the VIPs on a client-role interface, the floating addresses on theirs).
fn runs_vrrp(snap: &Snapshot, interface: u16, v6: bool) -> bool {
    let Some(ha) = &snap.spec.ha else {
        return false;
    };
    let floating = ha
        .floating
        .iter()
        .any(|&(i, a)| i == interface && a.is_ipv6() == v6);
    let vips = snap.interface_view(interface).role == Role::Client
        && snap.spec.services.iter().any(|s| {
            if v6 {
                s.vip6.is_some()
            } else {
                s.vip4.is_some()
            }
        });
    floating || vips
}

/// The frames per second each class may bring, per worker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExceptionRates {
    /// Each urgent class's own budget.
    pub urgent_pps: u32,
    /// The other class's budget.
    pub other_pps: u32,
}

impl Default for ExceptionRates {
    fn default() -> Self {
        ExceptionRates {
            urgent_pps: 2_000,
            other_pps: 20_000,
        }
    }
}

/// A token bucket in frames per second, refilled from a millisecond clock; the burst is a
/// tenth of a second's worth, at least 64 frames.
#[derive(Clone, Copy, Debug)]
pub struct TokenBucket {
    rate_pps: u64,
    burst: u64,
    /// Thousandths of a frame, so slow rates refill between milliseconds.
    milli_tokens: u64,
    last_ms: u64,
}

impl TokenBucket {
    pub fn new(rate_pps: u32) -> TokenBucket {
        let rate_pps = u64::from(rate_pps);
        let burst = (rate_pps / 10).max(64);
        TokenBucket {
            rate_pps,
            burst,
            milli_tokens: burst * 1000,
            last_ms: 0,
        }
    }

    /// Takes a token if there is one (`now_ms`: a monotonic clock; one going back is harmless).
    #[inline]
    pub fn allow(&mut self, now_ms: u64) -> bool {
        let elapsed = now_ms.saturating_sub(self.last_ms);
        self.last_ms = self.last_ms.max(now_ms);
        // rate_pps frames per 1000 ms = rate_pps milli-frames per ms.
        self.milli_tokens = self
            .milli_tokens
            .saturating_add(elapsed.saturating_mul(self.rate_pps))
            .min(self.burst * 1000);
        if self.milli_tokens >= 1000 {
            self.milli_tokens -= 1000;
            true
        } else {
            false
        }
    }
}

/// One worker's budgets, one per [`ExceptionClass`], and what they and the rules refused.
#[derive(Clone, Debug)]
pub struct ExceptionPolicer {
    rules: ExceptionRules,
    buckets: [TokenBucket; ExceptionClass::COUNT],
    /// Frames over their class's budget, by class.
    pub policed: [u64; ExceptionClass::COUNT],
    /// Frames that failed their class's rule, by reason.
    pub suspect: [u64; Suspect::COUNT],
}

impl ExceptionPolicer {
    pub fn new(rates: ExceptionRates, rules: ExceptionRules) -> ExceptionPolicer {
        let buckets = std::array::from_fn(|i| {
            TokenBucket::new(if ExceptionClass::ALL[i] == ExceptionClass::Other {
                rates.other_pps
            } else {
                rates.urgent_pps
            })
        });
        ExceptionPolicer {
            rules,
            buckets,
            policed: [0; ExceptionClass::COUNT],
            suspect: [0; Suspect::COUNT],
        }
    }

    /// Classifies and polices one frame received on `port`: the queue it goes to, or `None`
    /// when it is dropped (counted).
    #[inline]
    pub fn admit(
        &mut self,
        snap: &Snapshot,
        port: u16,
        frame: &[u8],
        now_ms: u64,
    ) -> Option<ExceptionQueue> {
        let e = classify_exception(snap, &self.rules, port, frame);
        if let Some(s) = e.suspect() {
            self.suspect[s as usize] += 1;
        }
        let class = e.class()?;
        if self.buckets[class as usize].allow(now_ms) {
            Some(class.queue())
        } else {
            self.policed[class as usize] += 1;
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{AffinitySpec, HaSpec};
    use crate::testkit::{self, lab, Ipv4Opts, L2, L4};
    use crate::wire::arp::ARP_REPLY;
    use crate::wire::ethernet::EthernetAddress;
    use std::net::{Ipv4Addr, Ipv6Addr};

    const CLIENT_PORT: u16 = 0;
    const BACKEND_PORT: u16 = 1;
    const NO_PEER: ExceptionRules = ExceptionRules { peer: None };

    fn snap() -> Snapshot {
        Snapshot::build(lab::appliance_spec(AffinitySpec::default()), 1).unwrap()
    }

    /// The lab as one of an HA pair: VRRP on the client side (the VIPs) and on the backend
    /// side (a floating address).
    fn ha_snap() -> Snapshot {
        let mut spec = lab::appliance_spec(AffinitySpec::default());
        spec.ha = Some(HaSpec {
            vrid: 51,
            master: false,
            floating: vec![(1, IpAddr::V4(Ipv4Addr::new(198, 19, 0, 100)))],
        });
        Snapshot::build(spec, 1).unwrap()
    }

    fn class(s: &Snapshot, port: u16, f: &[u8]) -> Exception {
        classify_exception(s, &NO_PEER, port, f)
    }

    const URGENT_ARP: Exception = Exception::Queue(ExceptionClass::Arp);
    const OTHER: Exception = Exception::Queue(ExceptionClass::Other);

    const L2_BACKEND: L2 = L2 {
        src: EthernetAddress([2, 0, 0, 0, 2, 0x0b]),
        dst: lab::BACKEND_PORT_MAC,
        vlan: crate::wire::ethernet::Vlan::Untagged,
    };
    const L2_CLIENT: L2 = L2 {
        src: lab::ROUTER_MAC,
        dst: lab::CLIENT_PORT_MAC,
        vlan: crate::wire::ethernet::Vlan::Untagged,
    };

    fn udp_v4(l2: &L2, src: Ipv4Addr, dst: Ipv4Addr) -> Vec<u8> {
        let l4 = L4::Udp {
            src: 500,
            dst: 40000,
            payload: b"answer",
        };
        testkit::ipv4(l2, src, dst, &Ipv4Opts::default(), &l4)
    }

    fn v6(l2: &L2, src: Ipv6Addr, hop_limit: u8, l4: &L4) -> Vec<u8> {
        let dst = Ipv6Addr::new(0x2001, 2, 0, 2, 0, 0, 0, 1);
        testkit::ipv6(l2, &src, &dst, hop_limit, &[], l4)
    }

    fn vrrp_v4(l2: &L2, src: Ipv4Addr, dst: Ipv4Addr, ttl: u8) -> Vec<u8> {
        testkit::ipv4(
            l2,
            src,
            dst,
            &Ipv4Opts {
                ttl,
                ..Ipv4Opts::default()
            },
            &L4::Raw {
                protocol: ip_proto::VRRP,
                payload: &[0x31, 51, 100, 1, 0, 10, 0, 0, 198, 18, 0, 100],
            },
        )
    }

    fn vrrp_v6(l2: &L2, hop_limit: u8) -> Vec<u8> {
        let src = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0x77);
        testkit::ipv6(
            l2,
            &src,
            &VRRP_V6_GROUP,
            hop_limit,
            &[],
            &L4::Raw {
                protocol: ip_proto::VRRP,
                payload: &[0x31, 51, 100, 1, 0, 10, 0, 0],
            },
        )
    }

    fn nd(l2: &L2, msg_type: u8, hop_limit: u8) -> Vec<u8> {
        let stranger = Ipv6Addr::new(0x2001, 2, 0, 2, 0, 0, 0, 0x77);
        v6(
            l2,
            stranger,
            hop_limit,
            &L4::Icmpv6 {
                msg_type,
                code: 0,
                rest: 0,
                payload: &[0; 16],
            },
        )
    }

    fn arp_reply() -> Vec<u8> {
        testkit::arp(
            &L2_BACKEND,
            ARP_REPLY,
            lab::GATEWAY_MACS[0],
            lab::GATEWAYS_V4[0],
            lab::BACKEND_PORT_MAC,
            Ipv4Addr::new(198, 19, 0, 1),
        )
    }

    #[test]
    fn neighbors_gateways_and_vrrp_are_urgent_where_they_belong_the_rest_is_not() {
        let s = ha_snap();
        let own = Ipv4Addr::new(198, 19, 0, 1);
        assert_eq!(class(&s, BACKEND_PORT, &arp_reply()), URGENT_ARP);
        // A health probe's answer from gw2, on the backend side.
        let answer = udp_v4(&L2_BACKEND, lab::GATEWAYS_V4[1], own);
        assert_eq!(
            class(&s, BACKEND_PORT, &answer),
            Exception::Queue(ExceptionClass::Gateway)
        );
        let answer6 = v6(
            &L2_BACKEND,
            lab::GATEWAYS_V6[2],
            64,
            &L4::Udp {
                src: 500,
                dst: 40000,
                payload: b"x",
            },
        );
        assert_eq!(
            class(&s, BACKEND_PORT, &answer6),
            Exception::Queue(ExceptionClass::Gateway)
        );
        // A client aiming at the appliance's own address.
        let flood = udp_v4(
            &L2_CLIENT,
            Ipv4Addr::new(198, 18, 64, 9),
            Ipv4Addr::new(198, 18, 0, 1),
        );
        assert_eq!(class(&s, CLIENT_PORT, &flood), OTHER);
        // Neighbor discovery from anyone on the link (hop limit 255).
        for t in icmpv6_type::ROUTER_SOLICIT..=icmpv6_type::NEIGHBOR_ADVERT {
            assert_eq!(
                class(&s, BACKEND_PORT, &nd(&L2_BACKEND, t, 255)),
                Exception::Queue(ExceptionClass::Nd)
            );
        }
        assert_eq!(class(&s, BACKEND_PORT, &nd(&L2_BACKEND, 128, 255)), OTHER);
        // The peer's VRRP adverts: to the group, TTL 255, where a router of ours runs.
        let advert = vrrp_v4(
            &L2_BACKEND,
            Ipv4Addr::new(198, 19, 0, 3),
            VRRP_V4_GROUP,
            255,
        );
        let vrrp = Exception::Queue(ExceptionClass::Vrrp);
        assert_eq!(class(&s, BACKEND_PORT, &advert), vrrp);
        let advert = vrrp_v4(&L2_CLIENT, lab::ROUTER_V4, VRRP_V4_GROUP, 255);
        assert_eq!(class(&s, CLIENT_PORT, &advert), vrrp);
        assert_eq!(class(&s, CLIENT_PORT, &vrrp_v6(&L2_CLIENT, 255)), vrrp);
        // The HA peer's sync, from the backend side.
        let peer = Ipv4Addr::new(198, 19, 0, 3);
        let rules = ExceptionRules {
            peer: Some(IpAddr::V4(peer)),
        };
        let sync = udp_v4(&L2_BACKEND, peer, own);
        assert_eq!(
            classify_exception(&s, &rules, BACKEND_PORT, &sync),
            Exception::Queue(ExceptionClass::Peer)
        );
        let forged = udp_v4(&L2_CLIENT, peer, Ipv4Addr::new(198, 18, 0, 1));
        assert_eq!(
            classify_exception(&s, &rules, CLIENT_PORT, &forged),
            Exception::Demoted(Suspect::PeerOffBackend)
        );
    }

    // The attacks of issue 15, finding 3: each frame below was urgent before.

    #[test]
    fn forged_vrrp_is_not_urgent() {
        let s = ha_snap();
        // From the Internet: routed, so its TTL is below 255 (64 here).
        let routed = vrrp_v4(&L2_CLIENT, Ipv4Addr::new(203, 0, 113, 9), VRRP_V4_GROUP, 64);
        assert_eq!(
            class(&s, CLIENT_PORT, &routed),
            Exception::Drop(Suspect::VrrpTtl)
        );
        assert_eq!(
            class(&s, CLIENT_PORT, &vrrp_v6(&L2_CLIENT, 64)),
            Exception::Drop(Suspect::VrrpTtl)
        );
        // Aimed at the appliance's own address rather than the group.
        let unicast = vrrp_v4(
            &L2_CLIENT,
            Ipv4Addr::new(203, 0, 113, 9),
            Ipv4Addr::new(198, 18, 0, 1),
            255,
        );
        assert_eq!(
            class(&s, CLIENT_PORT, &unicast),
            Exception::Drop(Suspect::VrrpNotToGroup)
        );
        // Where no virtual router of ours runs: no HA at all, or an IPv6 advert on the backend
        // side (its floating address is IPv4 only).
        let advert = vrrp_v4(&L2_CLIENT, lab::ROUTER_V4, VRRP_V4_GROUP, 255);
        assert_eq!(
            class(&snap(), CLIENT_PORT, &advert),
            Exception::Drop(Suspect::VrrpNoRouter)
        );
        assert_eq!(
            class(&s, BACKEND_PORT, &vrrp_v6(&L2_BACKEND, 255)),
            Exception::Drop(Suspect::VrrpNoRouter)
        );
    }

    /// Well-formed adverts (TTL 255, to the group, where a router of ours runs) for another
    /// VRID are dropped on the worker: a flood of them (the pair test's) would otherwise spend
    /// the VRRP class's budget, and the master's real adverts with it (in the lab the backup's
    /// VRRP budget refused a third of the VRRP-class frames in a 10 s flood).
    #[test]
    fn another_vrid_is_not_ours() {
        let s = ha_snap();
        let ours = vrrp_v4(&L2_CLIENT, lab::ROUTER_V4, VRRP_V4_GROUP, 255);
        assert_eq!(
            class(&s, CLIENT_PORT, &ours),
            Exception::Queue(ExceptionClass::Vrrp)
        );
        let vrid_at = ours.len() - 12 + 1; // the payload's second byte
        assert_eq!(ours[vrid_at], 51);
        for vrid in [0, 1, 52, 255] {
            let mut other = ours.clone();
            other[vrid_at] = vrid;
            assert_eq!(
                class(&s, CLIENT_PORT, &other),
                Exception::Drop(Suspect::VrrpNoRouter),
                "VRID {vrid}"
            );
        }
        // Cut before the VRID: nothing to tell it by, not ours.
        let mut short = vrrp_v4(&L2_CLIENT, lab::ROUTER_V4, VRRP_V4_GROUP, 255);
        short.truncate(short.len() - 12);
        let ip_at = short.len() - 20;
        short[ip_at + 3] = 20; // total length: the header alone
        short[ip_at + 10] = 0;
        short[ip_at + 11] = 0;
        let sum = !short[ip_at..ip_at + 20].chunks(2).fold(0u32, |a, c| {
            let a = a + u32::from(u16::from_be_bytes([c[0], c[1]]));
            (a & 0xffff) + (a >> 16)
        }) as u16;
        short[ip_at + 10..ip_at + 12].copy_from_slice(&sum.to_be_bytes());
        assert_eq!(
            class(&s, CLIENT_PORT, &short),
            Exception::Drop(Suspect::VrrpNoRouter)
        );
    }

    #[test]
    fn routed_neighbor_discovery_is_dropped() {
        let s = snap();
        for hop_limit in [0, 1, 64, 254] {
            for t in icmpv6_type::ROUTER_SOLICIT..=icmpv6_type::NEIGHBOR_ADVERT {
                assert_eq!(
                    class(&s, CLIENT_PORT, &nd(&L2_CLIENT, t, hop_limit)),
                    Exception::Drop(Suspect::NdHopLimit),
                    "type {t}, hop limit {hop_limit}"
                );
            }
        }
    }

    #[test]
    fn a_gateways_address_from_the_client_side_is_not_urgent() {
        let s = snap();
        // Redirect mode makes the gateways' addresses public: anyone can send from them.
        let forged = udp_v4(
            &L2_CLIENT,
            lab::GATEWAYS_V4[0],
            Ipv4Addr::new(198, 18, 0, 1),
        );
        assert_eq!(
            class(&s, CLIENT_PORT, &forged),
            Exception::Demoted(Suspect::GatewayOffBackend)
        );
        let forged6 = v6(
            &L2_CLIENT,
            lab::GATEWAYS_V6[1],
            64,
            &L4::Udp {
                src: 500,
                dst: 40000,
                payload: b"x",
            },
        );
        assert_eq!(
            class(&s, CLIENT_PORT, &forged6),
            Exception::Demoted(Suspect::GatewayOffBackend)
        );
        // A port no interface has is no backend either.
        assert_eq!(
            class(&s, 7, &forged),
            Exception::Demoted(Suspect::GatewayOffBackend)
        );
    }

    #[test]
    fn a_flood_exhausts_its_own_budget_never_anothers() {
        let s = ha_snap();
        let rates = ExceptionRates {
            urgent_pps: 1_000,
            other_pps: 10_000,
        };
        let peer = Ipv4Addr::new(198, 19, 0, 3);
        let rules = ExceptionRules {
            peer: Some(IpAddr::V4(peer)),
        };
        let mut p = ExceptionPolicer::new(rates, rules);
        let own = Ipv4Addr::new(198, 19, 0, 1);
        let sync = udp_v4(&L2_BACKEND, peer, own);
        let health_flood = udp_v4(&L2_BACKEND, lab::GATEWAYS_V4[1], own);
        let other_flood = udp_v4(
            &L2_CLIENT,
            Ipv4Addr::new(198, 18, 64, 9),
            Ipv4Addr::new(198, 18, 0, 1),
        );
        let forged = udp_v4(
            &L2_CLIENT,
            lab::GATEWAYS_V4[0],
            Ipv4Addr::new(198, 18, 0, 1),
        );
        let routed_vrrp = vrrp_v4(&L2_CLIENT, Ipv4Addr::new(203, 0, 113, 9), VRRP_V4_GROUP, 64);
        let advert = vrrp_v4(
            &L2_BACKEND,
            Ipv4Addr::new(198, 19, 0, 3),
            VRRP_V4_GROUP,
            255,
        );
        let arp = arp_reply();
        let forged_sync = udp_v4(&L2_CLIENT, peer, Ipv4Addr::new(198, 18, 0, 1));
        let (mut adverts, mut arps, mut syncs, mut health, mut flood_in) = (0, 0, 0, 0, 0);
        // 10 s: 100 000 frames a second of each flood (health answers from the backend side,
        // ordinary UDP, a gateway's and the peer's address from the client side, routed VRRP);
        // one advert every 100 ms, a sync message and an ARP reply every 10 ms.
        for ms in 0..10_000u64 {
            for _ in 0..100 {
                for f in [
                    &health_flood,
                    &other_flood,
                    &forged,
                    &routed_vrrp,
                    &forged_sync,
                ] {
                    if p.admit(
                        &s,
                        if f == &health_flood {
                            BACKEND_PORT
                        } else {
                            CLIENT_PORT
                        },
                        f,
                        ms,
                    )
                    .is_some()
                    {
                        flood_in += 1;
                        if f == &health_flood {
                            health += 1;
                        }
                    }
                }
            }
            if ms % 100 == 0 {
                adverts += usize::from(
                    p.admit(&s, BACKEND_PORT, &advert, ms) == Some(ExceptionQueue::Urgent),
                );
            }
            if ms % 10 == 0 {
                syncs += usize::from(
                    p.admit(&s, BACKEND_PORT, &sync, ms) == Some(ExceptionQueue::Urgent),
                );
                arps += usize::from(
                    p.admit(&s, BACKEND_PORT, &arp, ms) == Some(ExceptionQueue::Urgent),
                );
            }
        }
        assert_eq!(adverts, 100, "every advert got through");
        assert_eq!(arps, 1_000, "every ARP reply got through");
        assert_eq!(syncs, 1_000, "every sync message got through");
        // The floods got their budgets (and a first burst) and not a frame more.
        assert!((10_000..=10_100).contains(&health), "{health}");
        assert!((110_000..=112_100).contains(&flood_in), "{flood_in}");
        assert!(p.policed[ExceptionClass::Gateway as usize] > 980_000);
        assert!(p.policed[ExceptionClass::Other as usize] > 2_880_000);
        assert_eq!(p.policed[ExceptionClass::Vrrp as usize], 0);
        assert_eq!(p.policed[ExceptionClass::Arp as usize], 0);
        assert_eq!(p.suspect[Suspect::VrrpTtl as usize], 1_000_000);
        assert_eq!(p.suspect[Suspect::GatewayOffBackend as usize], 1_000_000);
        assert_eq!(p.suspect[Suspect::PeerOffBackend as usize], 1_000_000);
        assert_eq!(p.policed[ExceptionClass::Peer as usize], 0);
    }

    #[test]
    fn the_bucket_lets_its_rate_and_a_tenth_of_a_second_through() {
        let mut p = TokenBucket::new(10_000);
        assert_eq!((0..5000).filter(|_| p.allow(0)).count(), 1000);
        assert_eq!((0..5000).filter(|_| p.allow(1000)).count(), 1000);
        let mut passed = 0;
        for ms in 1001..=2000 {
            passed += (0..100).filter(|_| p.allow(ms)).count();
        }
        assert_eq!(passed, 10_000);
        let mut slow = TokenBucket::new(100);
        assert_eq!((0..100).filter(|_| slow.allow(0)).count(), 64);
        assert!(!slow.allow(5));
        assert!(slow.allow(10));
        assert!(!slow.allow(3));
    }

    #[test]
    fn what_does_not_parse_is_not_urgent() {
        let s = ha_snap();
        let good = udp_v4(
            &L2_BACKEND,
            lab::GATEWAYS_V4[0],
            Ipv4Addr::new(198, 19, 0, 1),
        );
        let advert = vrrp_v4(
            &L2_BACKEND,
            Ipv4Addr::new(198, 19, 0, 3),
            VRRP_V4_GROUP,
            255,
        );
        for f in [&good, &advert] {
            for len in 0..f.len() {
                // Truncated headers (and the whole frame) never panic.
                let _ = class(&s, BACKEND_PORT, &f[..len]);
            }
        }
        assert_eq!(class(&s, BACKEND_PORT, &good[..20]), OTHER);
        assert_eq!(class(&s, BACKEND_PORT, &[0xff; 64]), OTHER);
    }
}
