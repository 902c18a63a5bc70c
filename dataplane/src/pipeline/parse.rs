//! Pass 1, the only parser: what each frame is, where its affinity entry lives, and what
//! pass 2 must do with it (a [`Plan`]).

use crate::pipeline::affinity_key;
use crate::pipeline::slow::answer::answers_for;
use crate::pipeline::wire_drop;
use crate::pipeline::State;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::affinity::{AffinityKey, AffinityShard};
use crate::classify::{self, Class, Detail, L4View};
use crate::counters::DropReason;
use crate::model::{mac_bits, Ingress, LocalKind, LocalPair, Role, ServiceView, Snapshot};
use crate::nat::L4Checksum;
use crate::redirect::{self, Fallback, Inspection, SaInitRequest};
use crate::wire::arp::{ArpPacket, ARP_REPLY, ARP_REQUEST};
use crate::wire::ethernet::{ethertype, EthernetFrame};
use crate::wire::icmp::{self, icmpv4_type};
use crate::wire::icmpv6::{self, icmpv6_type, NdpNeighbor};
use crate::wire::ipv4::Ipv4Packet;
use crate::wire::ipv6::Ipv6Packet;
use crate::wire::tcp::TcpPacket;
use crate::wire::udp::UdpPacket;
use crate::wire::{self, ip_proto};

/// A packet's addresses and layout, family-independent.
#[derive(Clone, Copy, Debug)]
pub(super) struct L3 {
    pub(super) v6: bool,
    /// Offset of the IP header in the frame.
    pub(super) at: usize,
    pub(super) src: IpAddr,
    pub(super) dst: IpAddr,
    /// Transport protocol (after IPv6 extension headers).
    pub(super) protocol: u8,
    /// Offset of the transport header in the frame; `None` for a non-first fragment.
    pub(super) l4: Option<usize>,
    /// Any fragment, first or not (the packet is not whole).
    pub(super) fragment: bool,
    /// End of the IP packet in the frame (excludes Ethernet padding).
    pub(super) end: usize,
}

/// A client packet to translate: all pass 2 needs, kept small (the addresses it needs again
/// are in the key or re-read from the frame).
#[derive(Clone, Copy, Debug)]
pub(super) struct Flow {
    /// The key's hash under the shard's key (`AffinityShard::hash`).
    pub(super) hash: u64,
    pub(super) key: AffinityKey,
    /// Offset of the IP header in the frame.
    pub(super) at: usize,
    /// End of the IP packet in the frame.
    pub(super) end: usize,
    /// L4 checksum location relative to the IP header.
    pub(super) l4_csum: L4Checksum,
    pub(super) service: u16,
    /// Outbound: the gateway the packet came from (unused inbound).
    pub(super) gateway: u16,
    /// Client → VIP (else gateway → client); with `direct`, client → gateway's own address.
    pub(super) inbound: bool,
    /// A redirected client's traffic to or from its gateway's own address: routed, not
    /// translated. `key` is then the client's direct key. Outbound it is only a candidate:
    /// pass 2 routes it if the client's direct entry names this gateway, else translates it.
    pub(super) direct: bool,
    pub(super) v6: bool,
    /// What the packet says about the client having seen its gateway's answer.
    pub(super) proof: Proof,
}

/// A value only a client that saw its gateway's answer can send (conntrack's ASSURED, made
/// spoof-proof): from a gateway, what the client must echo; from a client, what it echoes.
/// `flow.rs` establishes a client's entry when the echo matches (see `apply_touch`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) enum Proof {
    #[default]
    None,
    /// The low 32 bits of a non-zero IKE responder SPI: the responder picks it in its
    /// IKE_SA_INIT response, and the initiator's next messages (IKE_AUTH, on 4500 after NAT
    /// detection) carry it.
    Ike(u32),
    /// TCP: from the gateway, the sequence number after its segment; from the client, its
    /// acknowledgment number.
    Tcp(u32),
    /// TCP from the gateway with SYN set (a SYN-ACK): the ISN + 1 of a connection that starts.
    TcpSynAck(u32),
}

impl Proof {
    /// From a classified IKE message's header: its responder SPI, when set.
    #[inline]
    pub(super) fn of_ike(responder_spi: u64) -> Proof {
        #[allow(clippy::cast_possible_truncation)] // the low 32 bits, on purpose
        match responder_spi as u32 {
            0 => Proof::None,
            low => Proof::Ike(low),
        }
    }

    /// From a TCP segment (`seg`: header and payload): a gateway's next sequence number, a
    /// client's acknowledgment (only with ACK set and SYN clear).
    #[inline]
    pub(super) fn of_tcp(seg: &[u8], payload_len: usize, from_client: bool) -> Proof {
        let Some(h) = seg.first_chunk::<14>() else {
            return Proof::None;
        };
        let flags = h[13];
        let (syn, ack, fin) = (flags & 0x02 != 0, flags & 0x10 != 0, flags & 0x01 != 0);
        if from_client {
            if !ack || syn {
                return Proof::None;
            }
            return Proof::Tcp(u32::from_be_bytes([h[8], h[9], h[10], h[11]]));
        }
        let seq = u32::from_be_bytes([h[4], h[5], h[6], h[7]]);
        #[allow(clippy::cast_possible_truncation)] // sequence space is modulo 2^32
        let next = seq
            .wrapping_add(payload_len as u32)
            .wrapping_add(u32::from(syn))
            .wrapping_add(u32::from(fin));
        if syn {
            Proof::TcpSynAck(next)
        } else {
            Proof::Tcp(next)
        }
    }
}

impl Flow {
    /// The client's address (the key holds it; IPv4 as `::ffff:a.b.c.d`).
    #[inline]
    pub(super) fn client(&self) -> IpAddr {
        if self.v6 {
            IpAddr::V6(Ipv6Addr::from(self.key.client))
        } else {
            let c = &self.key.client;
            IpAddr::V4(Ipv4Addr::new(c[12], c[13], c[14], c[15]))
        }
    }
}

/// An ICMP error about a translated flow: where the quoted packet is and how to translate it.
#[derive(Clone, Copy, Debug)]
pub(super) struct IcmpError {
    pub(super) outer: L3,
    /// Offset of the ICMP header in the frame.
    pub(super) icmp_at: usize,
    /// Offset of the quoted IP header in the frame.
    pub(super) inner_at: usize,
    /// Quoted transport checksum, relative to the quoted IP header.
    pub(super) inner_csum: L4Checksum,
    pub(super) inbound: bool,
    pub(super) service: u16,
    /// Outbound only: the gateway the quoted packet was sent to.
    pub(super) gateway: u16,
    pub(super) key: AffinityKey,
    pub(super) hash: u64,
}

#[derive(Clone, Copy, Debug)]
pub(super) enum Plan {
    Drop(DropReason),
    ToControl,
    /// Software steering: the client is another worker's.
    HandOff(u16),
    ArpReply {
        interface: u16,
        l3: usize,
    },
    NdAdvert {
        interface: u16,
        l3: L3,
        router: bool,
    },
    EchoReply {
        interface: u16,
        l3: L3,
    },
    Flow(Flow),
    IcmpError(IcmpError),
    Redirect(Redirect),
    RoutedIcmp(RoutedIcmp),
}

/// ICMP between a client and a gateway's own address, routed untouched (no affinity entry is
/// created or refreshed by it).
#[derive(Clone, Copy, Debug)]
pub(super) struct RoutedIcmp {
    /// The client's direct key: a gateway's ICMP (other than an error, see `IcmpError`) goes
    /// to a client only if this entry names the gateway.
    pub(super) key: AffinityKey,
    pub(super) service: u16,
    pub(super) gateway: u16,
    pub(super) at: usize,
    /// Client → gateway (else gateway → client).
    pub(super) inbound: bool,
    pub(super) v6: bool,
}

/// An IKE_SA_INIT request to a redirecting service, to answer with a REDIRECT.
#[derive(Clone, Copy, Debug)]
pub(super) struct Redirect {
    /// The request as a NAT-mode flow: what happens to it when no gateway can be named.
    pub(super) flow: Flow,
    /// Where it arrived (the answer leaves there).
    pub(super) interface: u16,
    /// Offset of the UDP header in the frame.
    pub(super) udp_at: u16,
    pub(super) request: SaInitRequest,
}

pub(super) fn plan_arp(snap: &Snapshot, interface: u16, at: usize, payload: &[u8]) -> Plan {
    let arp = match ArpPacket::new_checked(payload) {
        Ok(a) => a,
        Err(e) => return Plan::Drop(wire_drop(e)),
    };
    let target = IpAddr::V4(arp.target_ip());
    let gratuitous = arp.operation() == ARP_REQUEST && arp.sender_ip() == arp.target_ip();
    if arp.operation() == ARP_REPLY || gratuitous {
        // Replies and gratuitous ARP feed the control plane's neighbor cache; an announcement
        // is never answered, not even for an address of ours (a VRRP peer taking a VIP over
        // announces it while we may still hold it).
        Plan::ToControl
    } else if arp.operation() == ARP_REQUEST && snap.local(target) == Some(LocalKind::Standby) {
        Plan::Drop(DropReason::NotMaster)
    } else if arp.operation() == ARP_REQUEST && answers_for(snap, interface, target).is_some() {
        Plan::ArpReply { interface, l3: at }
    } else {
        Plan::Drop(DropReason::ArpUnhandled)
    }
}

pub(super) fn plan_ns(snap: &Snapshot, interface: u16, bytes: &[u8], l3: L3, icmp: &[u8]) -> Plan {
    let (IpAddr::V6(src), IpAddr::V6(dst)) = (l3.src, l3.dst) else {
        return Plan::Drop(DropReason::NdUnhandled);
    };
    let ns = match NdpNeighbor::new_checked(icmp) {
        Ok(ns) => ns,
        Err(e) => return Plan::Drop(wire_drop(e)),
    };
    // RFC 4861 §7.1.1: hop limit 255, code 0, valid checksum. A DAD probe (unspecified
    // source) is not answered: the address is ours, the prober will notice on its own.
    let valid = bytes[l3.at + 7] == 255
        && icmp[1] == 0
        && !src.is_unspecified()
        && !src.is_multicast()
        && icmpv6::Icmpv6Packet::new_checked(icmp).is_ok_and(|p| p.verify_checksum(&src, &dst));
    if !valid {
        return Plan::Drop(DropReason::NdUnhandled);
    }
    let target = IpAddr::V6(ns.target());
    if snap.local(target) == Some(LocalKind::Standby) {
        return Plan::Drop(DropReason::NotMaster);
    }
    match answers_for(snap, interface, target) {
        Some(own) => Plan::NdAdvert {
            interface,
            l3,
            router: own,
        },
        None => Plan::Drop(DropReason::NdUnhandled),
    }
}

/// An ICMP error to a VIP (inbound: it quotes a VIP → client packet we sent) or from the
/// backend to a client (outbound: it quotes a client → gateway packet we forwarded).
pub(super) fn plan_icmp_error(
    snap: &Snapshot,
    shard: &AffinityShard,
    bytes: &[u8],
    outer: L3,
    inbound: bool,
) -> Plan {
    let Some(icmp_at) = outer.l4 else {
        return Plan::Drop(DropReason::IcmpNoFlow);
    };
    let inner_at = icmp_at + 8;
    let Some(quoted) = bytes.get(inner_at..outer.end) else {
        return Plan::Drop(DropReason::Truncated);
    };
    let Some(q) = parse_quoted(quoted, outer.v6) else {
        return Plan::Drop(DropReason::IcmpNoFlow);
    };
    let (service, gateway, client) = if inbound {
        // We sent VIP:port → client; the error reached the VIP.
        match snap.service_for(q.src, q.protocol, q.src_port) {
            Some(s) if q.src == outer.dst => (s, 0, q.dst),
            _ => return Plan::Drop(DropReason::IcmpNoFlow),
        }
    } else {
        // We forwarded client → gateway:port; the error goes back to the client.
        let memberships = snap.gateway_by_addr(q.dst);
        match return_service(snap, shard, memberships, q.src, q.protocol, q.dst_port) {
            Some((s, g)) if q.src == outer.dst => (s, g, q.src),
            _ => return Plan::Drop(DropReason::IcmpNoFlow),
        }
    };
    let key = affinity_key(client, service);
    Plan::IcmpError(IcmpError {
        outer,
        icmp_at,
        inner_at,
        inner_csum: q.l4_csum,
        inbound,
        service,
        gateway,
        hash: key.hash_with(shard.hash_key()),
        key,
    })
}

/// Whether `service` routes its clients' traffic to and from its gateways' own addresses.
#[inline]
pub(super) fn routes_to_gateways(snap: &Snapshot, service: u16) -> bool {
    snap.services[usize::from(service)].spec.route_to_gateways
}

/// ICMP between a client and a gateway's own address (`memberships`: the services and ids
/// of that gateway), routed statelessly by the first service that routes to its gateways.
pub(super) fn plan_routed_icmp(
    snap: &Snapshot,
    memberships: &[(u16, u16)],
    l3: &L3,
    inbound: bool,
) -> Plan {
    let client = if inbound { l3.src } else { l3.dst };
    match memberships
        .iter()
        .find(|&&(s, _)| routes_to_gateways(snap, s))
    {
        Some(&(service, gateway)) => Plan::RoutedIcmp(RoutedIcmp {
            key: affinity_key(client, service).direct(),
            service,
            gateway,
            at: l3.at,
            inbound,
            v6: l3.v6,
        }),
        None => Plan::Drop(DropReason::NoService),
    }
}

/// Whether traffic of this protocol and service port is what a redirected client exchanges
/// with its gateway directly (`follows_redirect` in the protocol registry: IKE, NAT-T and ESP; TLS and DTLS go
/// through the VIP in either mode). A non-first fragment has no port: UDP ones count (an
/// IP-fragmented IKE_AUTH must pass whole).
#[inline]
pub(super) fn routable(svc: &ServiceView, protocol: u8, port: Option<u16>) -> bool {
    svc.spec
        .listeners
        .accepts_if(protocol, port, |d| d.follows_redirect)
}

/// The service (and gateway id) a gateway's packet to `client` belongs to, among the
/// gateway's `memberships` whose service carries this protocol and port: the only one; where
/// several services share the gateway, the first in which the client's affinity entry names
/// this gateway (its own service, so the reply leaves from the VIP it talks to), else the
/// first (no entry tells: a gateway speaking first is learned there, as with one service).
pub(super) fn return_service(
    snap: &Snapshot,
    shard: &AffinityShard,
    memberships: &[(u16, u16)],
    client: IpAddr,
    protocol: u8,
    port: Option<u16>,
) -> Option<(u16, u16)> {
    let mut carrying = memberships
        .iter()
        .filter(|&&(s, _)| listens(snap, s, protocol, port));
    let first = *carrying.next()?;
    if carrying.clone().next().is_none() {
        return Some(first);
    }
    let client_of = |&(s, g): &(u16, u16)| {
        let key = affinity_key(client, s);
        let names = |k: AffinityKey| {
            shard
                .peek(&k, shard.hash(&k))
                .is_some_and(|v| v.gateway == g)
        };
        names(key) || (routes_to_gateways(snap, s) && names(key.direct()))
    };
    if client_of(&first) {
        return Some(first);
    }
    Some(carrying.copied().find(client_of).unwrap_or(first))
}

/// Whether more than one of a gateway's `memberships` carries this protocol and port.
#[inline(never)]
fn shared(snap: &Snapshot, memberships: &[(u16, u16)], protocol: u8, port: Option<u16>) -> bool {
    let carrying = memberships
        .iter()
        .filter(|&&(s, _)| listens(snap, s, protocol, port));
    carrying.count() > 1
}

#[inline]
pub(super) fn listens(snap: &Snapshot, service: u16, protocol: u8, port: Option<u16>) -> bool {
    let l = &snap.services[usize::from(service)].spec.listeners;
    match port {
        Some(p) => l.accepts(protocol, p),
        None => l.accepts_protocol(protocol),
    }
}

/// Stores `plan` in `out` and returns the hash to prefetch for it (an ICMP error's entry).
#[inline(always)]
pub(super) fn store(out: &mut Plan, plan: Plan) -> Option<u64> {
    let hash = match plan {
        Plan::IcmpError(e) => Some(e.hash),
        _ => None,
    };
    *out = plan;
    hash
}

#[inline(always)]
pub(super) fn bad_source(a: IpAddr) -> bool {
    match a {
        IpAddr::V4(a) => {
            a.is_multicast() || a.is_broadcast() || a.is_unspecified() || a.is_loopback()
        }
        IpAddr::V6(a) => a.is_multicast() || a.is_loopback() || a.is_unspecified(),
    }
}

/// 169.254.0.0/16 and fe80::/10: valid on a link, never forwarded.
#[inline(always)]
pub(super) fn is_link_local(a: IpAddr) -> bool {
    match a {
        IpAddr::V4(a) => a.is_link_local(),
        IpAddr::V6(a) => a.segments()[0] & 0xffc0 == 0xfe80,
    }
}

#[inline(always)]
pub(super) fn is_multicast(a: IpAddr) -> bool {
    match a {
        IpAddr::V4(a) => a.is_multicast() || a.is_broadcast(),
        IpAddr::V6(a) => a.is_multicast(),
    }
}

/// A whole echo request (a fragment of one is not answered piecemeal: the first fragment's reply
/// would carry a partial payload).
pub(super) fn is_echo_request(bytes: &[u8], l3: &L3) -> bool {
    if l3.fragment {
        return false;
    }
    let Some(l4) = l3.l4 else { return false };
    let t = bytes.get(l4).copied();
    match l3.protocol {
        ip_proto::ICMP if !l3.v6 => t == Some(icmpv4_type::ECHO_REQUEST) && l3.end - l4 >= 8,
        ip_proto::ICMPV6 if l3.v6 => t == Some(icmpv6_type::ECHO_REQUEST) && l3.end - l4 >= 8,
        _ => false,
    }
}

pub(super) fn is_icmp_error(bytes: &[u8], l3: &L3) -> bool {
    let Some(t) = l3.l4.and_then(|l4| bytes.get(l4).copied()) else {
        return false;
    };
    match l3.protocol {
        ip_proto::ICMP if !l3.v6 => icmp::is_error(t),
        ip_proto::ICMPV6 if l3.v6 => icmpv6::is_error(t),
        _ => false,
    }
}

#[inline(always)]
pub(super) fn parse_v4(at: usize, payload: &[u8], checked: bool) -> Result<L3, DropReason> {
    let ip = Ipv4Packet::new_checked(payload).map_err(wire_drop)?;
    if !checked && !ip.verify_checksum() {
        return Err(DropReason::BadChecksum);
    }
    let hl = ip.header_len();
    Ok(L3 {
        v6: false,
        at,
        src: IpAddr::V4(ip.src_addr()),
        dst: IpAddr::V4(ip.dst_addr()),
        protocol: ip.protocol(),
        l4: ip.is_first_fragment().then_some(at + hl),
        fragment: ip.is_fragment(),
        end: at + usize::from(ip.total_len()),
    })
}

#[inline(always)]
pub(super) fn parse_v6(at: usize, payload: &[u8]) -> Result<L3, DropReason> {
    let ip = Ipv6Packet::new_checked(payload).map_err(wire_drop)?;
    let upper = ip.upper_layer().map_err(wire_drop)?;
    let first = upper.fragment.is_none_or(|f| f.offset == 0);
    Ok(L3 {
        v6: true,
        at,
        src: IpAddr::V6(ip.src_addr()),
        dst: IpAddr::V6(ip.dst_addr()),
        protocol: upper.protocol,
        l4: first.then_some(at + upper.offset),
        fragment: upper.fragment.is_some(),
        end: at + 40 + usize::from(ip.payload_len()),
    })
}

/// Transport port (server side), checksum location and the classifier's view of a packet.
#[inline(always)]
pub(super) fn transport<'a>(
    bytes: &'a [u8],
    l3: &L3,
    inbound: bool,
) -> Result<(Option<u16>, L4Checksum, L4View<'a>), DropReason> {
    let Some(l4) = l3.l4 else {
        let view = L4View {
            protocol: l3.protocol,
            server_port: 0,
            payload: &[],
            datagram_len: 0,
            non_first_fragment: true,
        };
        return Ok((None, L4Checksum::None, view));
    };
    let seg = &bytes[l4..l3.end];
    let rel = l4 - l3.at;
    let pick = |src: u16, dst: u16| if inbound { dst } else { src };
    match l3.protocol {
        ip_proto::UDP => {
            let udp = UdpPacket::new_partial(seg).map_err(wire_drop)?;
            // A whole datagram must fill the IP payload exactly (a first fragment holds part).
            if !l3.fragment && usize::from(udp.len()) != seg.len() {
                return Err(DropReason::UdpLength);
            }
            let port = pick(udp.src_port(), udp.dst_port());
            // The view borrows `seg` through `udp`; slice `seg` itself so the payload outlives it.
            let end = usize::from(udp.len()).min(seg.len());
            let view = L4View {
                protocol: l3.protocol,
                server_port: port,
                payload: seg.get(8..end).unwrap_or(&[]),
                datagram_len: usize::from(udp.len()).saturating_sub(8),
                non_first_fragment: false,
            };
            Ok((Some(port), L4Checksum::Udp(rel + 6), view))
        }
        ip_proto::TCP => {
            let tcp = TcpPacket::new_checked(seg).map_err(wire_drop)?;
            let port = pick(tcp.src_port(), tcp.dst_port());
            let payload = seg.get(tcp.header_len()..).unwrap_or(&[]);
            let view = L4View {
                protocol: l3.protocol,
                server_port: port,
                payload,
                datagram_len: payload.len(),
                non_first_fragment: false,
            };
            Ok((Some(port), L4Checksum::Other(rel + 16), view))
        }
        _ => {
            let view = L4View {
                protocol: l3.protocol,
                server_port: 0,
                payload: seg,
                datagram_len: seg.len(),
                non_first_fragment: false,
            };
            // ESP (and anything else) has no ports and no checksum over the addresses.
            Ok((Some(0), L4Checksum::None, view))
        }
    }
}

/// Length of an untagged Ethernet header.
const ETH_LEN: usize = 14;

/// An IPv4 header the fast path takes: no options, not a fragment, a TTL that allows
/// forwarding, a total length that fits, a good checksum (`checked`: the NIC said so).
/// Whatever `parse_v4` accepts with these properties, it parses to the same `L3`.
#[inline(always)]
fn common_v4(ip: &[u8], checked: bool) -> Option<L3> {
    let h = ip.first_chunk::<20>()?;
    let total = usize::from(u16::from_be_bytes([h[2], h[3]]));
    let fragment = u16::from_be_bytes([h[6], h[7]]) & 0x3fff != 0;
    if h[0] != 0x45 || total < 20 || total > ip.len() || fragment || h[8] <= 1 {
        return None;
    }
    if !checked && wire::checksum::checksum(h) != 0 {
        return None;
    }
    let addr = |at: usize| Ipv4Addr::new(h[at], h[at + 1], h[at + 2], h[at + 3]);
    Some(L3 {
        v6: false,
        at: ETH_LEN,
        src: IpAddr::V4(addr(12)),
        dst: IpAddr::V4(addr(16)),
        protocol: h[9],
        l4: Some(ETH_LEN + 20),
        fragment: false,
        end: ETH_LEN + total,
    })
}

/// An IPv6 header the fast path takes: the transport header right after it (no extension
/// headers), a hop limit that allows forwarding, a payload length that fits.
#[inline(always)]
fn common_v6(ip: &[u8]) -> Option<L3> {
    let h = ip.first_chunk::<40>()?;
    let end = 40 + usize::from(u16::from_be_bytes([h[4], h[5]]));
    let transport = matches!(h[6], ip_proto::UDP | ip_proto::TCP | ip_proto::ESP);
    if h[0] >> 4 != 6 || end > ip.len() || !transport || h[7] <= 1 {
        return None;
    }
    let addr = |at: usize| {
        let mut o = [0u8; 16];
        o.copy_from_slice(&h[at..at + 16]);
        Ipv6Addr::from(o)
    };
    Some(L3 {
        v6: true,
        at: ETH_LEN,
        src: IpAddr::V6(addr(8)),
        dst: IpAddr::V6(addr(24)),
        protocol: h[6],
        l4: Some(ETH_LEN + 40),
        fragment: false,
        end: ETH_LEN + end,
    })
}

/// [`transport`] for the fast path's UDP, TCP and ESP (`None` for other protocols and for
/// headers `transport` would refuse): the server-side port, checksum location and view.
#[inline(always)]
fn common_transport<'a>(
    bytes: &'a [u8],
    l3: &L3,
    l4: usize,
    inbound: bool,
) -> Option<(u16, L4Checksum, L4View<'a>)> {
    let seg = bytes.get(l4..l3.end)?;
    let rel = l4 - l3.at;
    let pick = |h: &[u8; 4]| {
        let (src, dst) = (
            u16::from_be_bytes([h[0], h[1]]),
            u16::from_be_bytes([h[2], h[3]]),
        );
        if inbound {
            dst
        } else {
            src
        }
    };
    let (port, payload, datagram_len, csum) = match l3.protocol {
        ip_proto::UDP => {
            let h = seg.first_chunk::<8>()?;
            let len = usize::from(u16::from_be_bytes([h[4], h[5]]));
            // A length that disagrees with the IP payload: the general path drops it.
            if len < 8 || len != seg.len() {
                return None;
            }
            let payload = seg.get(8..len.min(seg.len())).unwrap_or(&[]);
            let port = pick(seg.first_chunk::<4>()?);
            (port, payload, len - 8, L4Checksum::Udp(rel + 6))
        }
        ip_proto::TCP => {
            let h = seg.first_chunk::<20>()?;
            let header_len = usize::from(h[12] >> 4) * 4;
            if header_len < 20 || header_len > seg.len() {
                return None;
            }
            let payload = &seg[header_len..];
            let port = pick(seg.first_chunk::<4>()?);
            (port, payload, payload.len(), L4Checksum::Other(rel + 16))
        }
        ip_proto::ESP => (0, seg, seg.len(), L4Checksum::None),
        _ => return None,
    };
    let view = L4View {
        protocol: l3.protocol,
        server_port: port,
        payload,
        datagram_len,
        non_first_fragment: false,
    };
    Some((port, csum, view))
}

/// The header of a packet quoted in an ICMP error: often cut short, so lengths in it are not
/// checked against what is present.
pub(super) struct Quoted {
    pub(super) src: IpAddr,
    pub(super) dst: IpAddr,
    pub(super) protocol: u8,
    pub(super) src_port: Option<u16>,
    pub(super) dst_port: Option<u16>,
    pub(super) l4_csum: L4Checksum,
}

pub(super) fn parse_quoted(b: &[u8], v6: bool) -> Option<Quoted> {
    let (src, dst, protocol, l4) = if v6 {
        if b.len() < 40 || b[0] >> 4 != 6 {
            return None;
        }
        let src = Ipv6Addr::from(<[u8; 16]>::try_from(&b[8..24]).ok()?);
        let dst = Ipv6Addr::from(<[u8; 16]>::try_from(&b[24..40]).ok()?);
        // Quoted packets with extension headers are not followed: the flow is ours only when
        // the transport header comes right after.
        (IpAddr::V6(src), IpAddr::V6(dst), b[6], 40)
    } else {
        if b.len() < 20 || b[0] >> 4 != 4 {
            return None;
        }
        let hl = usize::from(b[0] & 0x0f) * 4;
        if hl < 20 || b.len() < hl {
            return None;
        }
        // A quoted non-first fragment carries no ports.
        let frag_offset = u16::from_be_bytes([b[6], b[7]]) & 0x1fff;
        if frag_offset != 0 {
            return None;
        }
        let src = Ipv4Addr::new(b[12], b[13], b[14], b[15]);
        let dst = Ipv4Addr::new(b[16], b[17], b[18], b[19]);
        (IpAddr::V4(src), IpAddr::V4(dst), b[9], hl)
    };
    let rest = &b[l4..];
    let (src_port, dst_port) = match protocol {
        ip_proto::UDP | ip_proto::TCP if rest.len() >= 4 => (
            Some(u16::from_be_bytes([rest[0], rest[1]])),
            Some(u16::from_be_bytes([rest[2], rest[3]])),
        ),
        ip_proto::UDP | ip_proto::TCP => return None,
        _ => (Some(0), Some(0)),
    };
    Some(Quoted {
        src,
        dst,
        protocol,
        src_port,
        dst_port,
        l4_csum: L4Checksum::locate(protocol, l4, rest.len()),
    })
}

impl State {
    /// Plans one frame into `out` and returns the hash of the affinity entry pass 2 will look
    /// up, if any, for prefetching. Plans are written to `out` in place: building a flow's
    /// plan elsewhere and copying it into the burst's array cost a memcpy per packet.
    ///
    /// `ipv4_checked`: the NIC verified the IPv4 header checksum (it is good).
    #[inline(always)]
    pub(super) fn plan(
        &mut self,
        snap: &Snapshot,
        rx_port: u16,
        bytes: &[u8],
        ipv4_checked: bool,
        out: &mut Plan,
    ) -> Option<u64> {
        if let (true, Some(ingress)) = (self.fast, snap.untagged_ingress(rx_port)) {
            if let Some(hash) = self.plan_common(snap, ingress, bytes, ipv4_checked, out) {
                return hash;
            }
        }
        if self.steer.is_some() {
            if let Some(worker) = self.owner_elsewhere(snap, rx_port, bytes) {
                *out = Plan::HandOff(worker);
                return None;
            }
        } else if self.error_steer.is_some() {
            if let Some(worker) = self.error_owner_elsewhere(snap, rx_port, bytes) {
                *out = Plan::HandOff(worker);
                return None;
            }
        }
        self.plan_any(snap, rx_port, bytes, ipv4_checked, out)
    }

    /// The common case, planned in few instructions: an untagged unicast frame to us carrying
    /// an unfragmented IPv4 (no options) or IPv6 (no extension headers) UDP, TCP or ESP
    /// packet of a NAT-mode client to a VIP, or of a gateway back to its client. Returns
    /// `None`, having changed nothing, for anything else: [`Self::plan_any`] then plans it.
    /// What it does plan, it plans exactly as `plan_any` would (same plan, same counters).
    #[inline(always)]
    fn plan_common(
        &mut self,
        snap: &Snapshot,
        ingress: &Ingress,
        bytes: &[u8],
        ipv4_checked: bool,
        out: &mut Plan,
    ) -> Option<Option<u64>> {
        let eth = bytes.first_chunk::<ETH_LEN>()?;
        if !ingress.accepts(mac_bits(eth.first_chunk()?)) {
            return None;
        }
        let ip = &bytes[ETH_LEN..];
        match u16::from_be_bytes([eth[12], eth[13]]) {
            ethertype::IPV4 => {
                let l3 = common_v4(ip, ipv4_checked)?;
                self.plan_common_ip(snap, ingress.role, bytes, l3, out)
            }
            ethertype::IPV6 => {
                let l3 = common_v6(ip)?;
                self.plan_common_ip(snap, ingress.role, bytes, l3, out)
            }
            _ => None,
        }
    }

    /// [`Self::plan_common`] past the IP header (inlined per family).
    #[inline(always)]
    fn plan_common_ip(
        &mut self,
        snap: &Snapshot,
        role: Role,
        bytes: &[u8],
        l3: L3,
        out: &mut Plan,
    ) -> Option<Option<u64>> {
        if bad_source(l3.src) || is_link_local(l3.src) {
            return None;
        }
        let LocalPair::Foreign(dst_kind) = snap.local_pair(l3.src, l3.dst) else {
            return None; // the source is one of ours
        };
        let inbound = match (role, dst_kind) {
            (Role::Client, Some(LocalKind::Vip { .. })) => true,
            (Role::Backend, None) if !is_multicast(l3.dst) && !is_link_local(l3.dst) => false,
            _ => return None,
        };
        let l4 = l3.l4?;
        let (port, l4_csum, view) = common_transport(bytes, &l3, l4, inbound)?;
        // Software steering by the client, from this parse: the source on a client-facing
        // interface, the destination on a backend one (as `steer::client_address` finds it
        // for these frames).
        if self.steer.is_some() {
            if let Some(owner) = self.client_elsewhere(if inbound { l3.src } else { l3.dst }) {
                *out = Plan::HandOff(owner);
                return Some(None);
            }
        }
        let (service, gateway, client) = if inbound {
            let service = snap.service_for(l3.dst, l3.protocol, Some(port))?;
            let spec = &snap.services[usize::from(service)].spec;
            if spec.redirects(l3.protocol, Some(port)) {
                return None;
            }
            (service, 0, l3.src)
        } else {
            let memberships = snap.gateway_by_addr(l3.src);
            let &(service, gateway) = memberships
                .iter()
                .find(|&&(s, _)| listens(snap, s, l3.protocol, Some(port)))?;
            // Several services carry it (they share the gateway): which one the client talks
            // to takes affinity lookups, on the general path. One compare for a gateway of
            // one service.
            if memberships.len() > 1 && shared(snap, memberships, l3.protocol, Some(port)) {
                return None;
            }
            let svc = &snap.services[usize::from(service)];
            if svc.spec.route_to_gateways && routable(svc, l3.protocol, Some(port)) {
                // Possibly a redirected client's: routed, on the slow path.
                return None;
            }
            (service, gateway, l3.dst)
        };
        // Committed: nothing below declines the frame.
        let proof = match self.count_class(snap, service, &view) {
            Ok(proof) => proof,
            Err(r) => {
                *out = Plan::Drop(r);
                return Some(None);
            }
        };
        let proof = tcp_proof(bytes, &l3, &view, inbound).unwrap_or(proof);
        let key = affinity_key(client, service);
        let hash = self.shard.hash(&key);
        *out = Plan::Flow(Flow {
            hash,
            key,
            at: l3.at,
            end: l3.end,
            l4_csum,
            service,
            gateway,
            inbound,
            direct: false,
            v6: l3.v6,
            proof,
        });
        Some(Some(hash))
    }

    /// Under software steering, the worker that owns `client` when that is not this one. Out
    /// of line: with hardware steering, or one worker, it is never called.
    #[inline(never)]
    fn client_elsewhere(&self, client: IpAddr) -> Option<u16> {
        let s = self.steer()?;
        let owner = match client {
            IpAddr::V4(a) => s.steering.owner_of_client(&a.octets()),
            IpAddr::V6(a) => s.steering.owner_of_client(&a.octets()),
        };
        (owner != s.me).then_some(owner)
    }

    /// Under software steering, the worker that owns the frame's client when that is not this
    /// one (`steer::Steering::owner`, by the role of the interface the frame came in on).
    /// Frames without a client (ARP, neighbor discovery, garbage) stay here.
    #[inline(never)]
    fn owner_elsewhere(&self, snap: &Snapshot, rx_port: u16, bytes: &[u8]) -> Option<u16> {
        let s = self.steer()?;
        let eth = EthernetFrame::new_checked(bytes).ok()?;
        let interface = snap.interface(rx_port, eth.vlan())?;
        let owner = s
            .steering
            .owner(bytes, snap.interface_view(interface).role)?;
        (owner != s.me).then_some(owner)
    }

    /// Under hardware steering, the worker owning the client of an ICMP error's quoted
    /// packet when that is not this one (`None` for every other frame). Out of line: only
    /// frames the fast prelude declined come here.
    #[inline(never)]
    fn error_owner_elsewhere(&self, snap: &Snapshot, rx_port: u16, bytes: &[u8]) -> Option<u16> {
        let s = self.error_steer.as_ref().filter(|_| !self.handed_over)?;
        let eth = EthernetFrame::new_checked(bytes).ok()?;
        let interface = snap.interface(rx_port, eth.vlan())?;
        let owner = s
            .steering
            .icmp_error_owner(bytes, snap.interface_view(interface).role)?;
        (owner != s.me).then_some(owner)
    }

    /// Plans any frame (see [`Self::plan`]).
    #[inline(never)]
    fn plan_any(
        &mut self,
        snap: &Snapshot,
        rx_port: u16,
        bytes: &[u8],
        ipv4_checked: bool,
        out: &mut Plan,
    ) -> Option<u64> {
        let eth = match EthernetFrame::new_checked(bytes) {
            Ok(e) => e,
            Err(e) => return store(out, Plan::Drop(wire_drop(e))),
        };
        let Some(interface) = snap.interface(rx_port, eth.vlan()) else {
            return store(out, Plan::Drop(DropReason::UnknownVlan));
        };
        let itf = snap.interface_view(interface);
        let dst_mac = eth.dst();
        if dst_mac.is_unicast() && !itf.accepts_mac(dst_mac) {
            return store(out, Plan::Drop(DropReason::NotOurMac));
        }
        let role = itf.role;
        let at = eth.header_len();
        let payload = eth.payload();
        match eth.ethertype() {
            ethertype::ARP => store(out, plan_arp(snap, interface, at, payload)),
            ethertype::IPV4 => match parse_v4(at, payload, ipv4_checked) {
                Ok(l3) => self.plan_ip(snap, interface, role, bytes, l3, out),
                Err(r) => store(out, Plan::Drop(r)),
            },
            ethertype::IPV6 => match parse_v6(at, payload) {
                Ok(l3) => self.plan_ip(snap, interface, role, bytes, l3, out),
                Err(r) => store(out, Plan::Drop(r)),
            },
            _ => store(out, Plan::Drop(DropReason::UnknownEthertype)),
        }
    }

    // Inlined into each family's arm of `plan`, where the addresses' family is known: the
    // address matches below fold away and `l3` stays in registers.
    #[inline(always)]
    pub(super) fn plan_ip(
        &mut self,
        snap: &Snapshot,
        interface: u16,
        role: Role,
        bytes: &[u8],
        l3: L3,
        out: &mut Plan,
    ) -> Option<u64> {
        // Neighbor solicitations go to a solicited-node multicast address, and duplicate
        // address detection sends them from `::`: look at them before the source checks.
        if l3.v6 && l3.protocol == ip_proto::ICMPV6 {
            if let Some(l4) = l3.l4 {
                let icmp = &bytes[l4..l3.end];
                if icmp.first() == Some(&icmpv6_type::NEIGHBOR_SOLICIT) {
                    return store(out, plan_ns(snap, interface, bytes, l3, icmp));
                }
            }
        }
        if bad_source(l3.src) {
            return store(out, Plan::Drop(DropReason::BadSource));
        }
        // One scan of our addresses for both: the source must not be one, the destination
        // decides what happens next.
        let LocalPair::Foreign(dst_kind) = snap.local_pair(l3.src, l3.dst) else {
            return store(out, Plan::Drop(DropReason::BadSource));
        };
        match dst_kind {
            Some(LocalKind::Vip { .. }) if role == Role::Client => {
                self.plan_inbound(snap, interface, bytes, l3, out)
            }
            Some(LocalKind::Vip { .. }) => store(out, Plan::Drop(DropReason::WrongSide)),
            Some(LocalKind::Interface { .. } | LocalKind::Floating { .. })
                if is_echo_request(bytes, &l3) =>
            {
                store(out, Plan::EchoReply { interface, l3 })
            }
            Some(LocalKind::Interface { .. } | LocalKind::Floating { .. }) => {
                store(out, Plan::ToControl)
            }
            Some(LocalKind::Standby) => store(out, Plan::Drop(DropReason::NotMaster)),
            None if is_multicast(l3.dst) => store(out, Plan::ToControl),
            None if role == Role::Backend => self.plan_outbound(snap, bytes, l3, out),
            None => self.plan_routed_in(snap, bytes, l3, out),
        }
    }

    #[inline(always)]
    pub(super) fn plan_inbound(
        &mut self,
        snap: &Snapshot,
        interface: u16,
        bytes: &[u8],
        l3: L3,
        out: &mut Plan,
    ) -> Option<u64> {
        let icmp = matches!(l3.protocol, ip_proto::ICMP | ip_proto::ICMPV6);
        if icmp && is_echo_request(bytes, &l3) {
            // Answered on the link: a link-local source is fine here.
            return store(out, Plan::EchoReply { interface, l3 });
        }
        // Everything else is forwarded, and link-local addresses are not (RFC 4291 §2.5.6,
        // RFC 3927 §7).
        if is_link_local(l3.src) {
            return store(out, Plan::Drop(DropReason::BadSource));
        }
        if icmp {
            let plan = if is_icmp_error(bytes, &l3) {
                plan_icmp_error(snap, &self.shard, bytes, l3, true)
            } else {
                Plan::Drop(DropReason::IcmpUnhandled)
            };
            return store(out, plan);
        }
        let (port, l4_csum, view) = match transport(bytes, &l3, true) {
            Ok(t) => t,
            Err(r) => return store(out, Plan::Drop(r)),
        };
        let Some(service) = snap.service_for(l3.dst, l3.protocol, port) else {
            return store(out, Plan::Drop(DropReason::NoService));
        };
        let svc = &snap.services[usize::from(service)];
        let redirecting = svc.spec.redirects(l3.protocol, port);
        let proof = match self.count_class(snap, service, &view) {
            Ok(proof) => proof,
            // A redirecting service inspects its IKE port's requests itself (below), and
            // counts what it cannot answer as `malformed-ike-sa-init`.
            Err(_) if redirecting => Proof::None,
            Err(r) => return store(out, Plan::Drop(r)),
        };
        let proof = tcp_proof(bytes, &l3, &view, true).unwrap_or(proof);
        let key = affinity_key(l3.src, service);
        let hash = self.shard.hash(&key);
        let flow = Flow {
            hash,
            key,
            at: l3.at,
            end: l3.end,
            l4_csum,
            service,
            gateway: 0,
            inbound: true,
            direct: false,
            v6: l3.v6,
            proof,
        };
        if redirecting {
            let counters = &mut self.counters.services[usize::from(service)];
            let inspection = if l3.fragment {
                Inspection::Fallback(Fallback::Fragment)
            } else if view.payload.len() != view.datagram_len {
                Inspection::Malformed
            } else {
                redirect::inspect(view.payload)
            };
            match (inspection, l3.l4.map(u16::try_from)) {
                (Inspection::Redirect(request), Some(Ok(udp_at))) => {
                    *out = Plan::Redirect(Redirect {
                        flow,
                        interface,
                        udp_at,
                        request,
                    });
                    return None;
                }
                (Inspection::Fallback(why), _) => counters.fallback(why),
                _ => {
                    counters.malformed_ike_sa_init += 1;
                    return store(out, Plan::Drop(DropReason::MalformedIkeSaInit));
                }
            }
        }
        *out = Plan::Flow(flow);
        Some(hash)
    }

    /// Client-side traffic to no VIP and none of our addresses: routed if it is for a gateway
    /// of a service that routes to its gateways (a redirected client), else dropped.
    #[inline(never)]
    pub(super) fn plan_routed_in(
        &mut self,
        snap: &Snapshot,
        bytes: &[u8],
        l3: L3,
        out: &mut Plan,
    ) -> Option<u64> {
        let memberships = snap.gateway_by_addr(l3.dst);
        if !memberships
            .iter()
            .any(|&(s, _)| routes_to_gateways(snap, s))
        {
            return store(out, Plan::Drop(DropReason::NotAVip));
        }
        if is_link_local(l3.src) {
            return store(out, Plan::Drop(DropReason::BadSource));
        }
        if matches!(l3.protocol, ip_proto::ICMP | ip_proto::ICMPV6) {
            // Pings to a gateway, errors about its packets: routed, stateless.
            return store(out, plan_routed_icmp(snap, memberships, &l3, true));
        }
        let (port, l4_csum, view) = match transport(bytes, &l3, true) {
            Ok(t) => t,
            Err(r) => return store(out, Plan::Drop(r)),
        };
        let found = memberships.iter().find(|&&(s, _)| {
            routes_to_gateways(snap, s)
                && routable(&snap.services[usize::from(s)], l3.protocol, port)
        });
        let Some(&(service, gateway)) = found else {
            return store(out, Plan::Drop(DropReason::NoService));
        };
        let proof = match self.count_class(snap, service, &view) {
            Ok(proof) => proof,
            Err(r) => return store(out, Plan::Drop(r)),
        };
        let proof = tcp_proof(bytes, &l3, &view, true).unwrap_or(proof);
        let key = affinity_key(l3.src, service).direct();
        let hash = self.shard.hash(&key);
        *out = Plan::Flow(Flow {
            hash,
            key,
            at: l3.at,
            end: l3.end,
            l4_csum,
            service,
            gateway,
            inbound: true,
            direct: true,
            v6: l3.v6,
            proof,
        });
        Some(hash)
    }

    #[inline(always)]
    pub(super) fn plan_outbound(
        &mut self,
        snap: &Snapshot,
        bytes: &[u8],
        l3: L3,
        out: &mut Plan,
    ) -> Option<u64> {
        // Clients are never link-local (their packets are not forwarded in, see
        // `plan_inbound`), and link-local traffic is not forwarded out either.
        if is_link_local(l3.src) || is_link_local(l3.dst) {
            return store(out, Plan::Drop(DropReason::NoRoute));
        }
        if matches!(l3.protocol, ip_proto::ICMP | ip_proto::ICMPV6) && is_icmp_error(bytes, &l3) {
            return store(out, plan_icmp_error(snap, &self.shard, bytes, l3, false));
        }
        let memberships = snap.gateway_by_addr(l3.src);
        if memberships.is_empty() {
            return store(out, Plan::Drop(DropReason::UnknownSource));
        }
        if matches!(l3.protocol, ip_proto::ICMP | ip_proto::ICMPV6) {
            // A gateway's pings and echo replies: to redirected clients only (pass 2 checks).
            return store(out, plan_routed_icmp(snap, memberships, &l3, false));
        }
        let (port, l4_csum, view) = match transport(bytes, &l3, false) {
            Ok(t) => t,
            Err(r) => return store(out, Plan::Drop(r)),
        };
        let found = return_service(snap, &self.shard, memberships, l3.dst, l3.protocol, port);
        let Some((service, gateway)) = found else {
            return store(out, Plan::Drop(DropReason::NoService));
        };
        let proof = match self.count_class(snap, service, &view) {
            Ok(proof) => proof,
            Err(r) => return store(out, Plan::Drop(r)),
        };
        let proof = tcp_proof(bytes, &l3, &view, false).unwrap_or(proof);
        let svc = &snap.services[usize::from(service)];
        let direct = svc.spec.route_to_gateways && routable(svc, l3.protocol, port);
        let key = affinity_key(l3.dst, service);
        let key = if direct { key.direct() } else { key };
        let hash = self.shard.hash(&key);
        *out = Plan::Flow(Flow {
            hash,
            key,
            at: l3.at,
            end: l3.end,
            l4_csum,
            service,
            gateway,
            inbound: false,
            direct,
            v6: l3.v6,
            proof,
        });
        Some(hash)
    }

    /// Counts the packet's class; returns the proof an IKE message carries (see [`Proof`]),
    /// or why the packet is dropped (malformed IKE where IKE is expected).
    pub(super) fn count_class(
        &mut self,
        snap: &Snapshot,
        service: u16,
        view: &L4View<'_>,
    ) -> Result<Proof, DropReason> {
        let plan = snap.services[usize::from(service)].port_plan;
        if let Some(class) = classify::common_class(view, &plan) {
            self.counters.classes[class.index()] += 1;
            return Ok(Proof::None);
        }
        let c = classify::classify(view, &plan);
        self.counters.classes[c.class.index()] += 1;
        match c.detail {
            Detail::Ike { responder_spi, .. } => return Ok(Proof::of_ike(responder_spi)),
            Detail::None if c.class == Class::Other && classify::malformed_ike(view, &plan) => {
                return Err(DropReason::MalformedIke)
            }
            Detail::Tls {
                client_hello: true,
                sni,
            } => {
                self.counters.tls_client_hellos += 1;
                if let Some(name) = sni {
                    self.sni.record(name);
                }
            }
            Detail::Dtls { client_hello: true } => self.counters.dtls_client_hellos += 1,
            _ => {}
        }
        Ok(Proof::None)
    }
}

/// The TCP proof of a whole (unfragmented) TCP segment; `None` for anything else.
#[inline]
fn tcp_proof(bytes: &[u8], l3: &L3, view: &L4View<'_>, from_client: bool) -> Option<Proof> {
    if l3.protocol != ip_proto::TCP || l3.fragment {
        return None;
    }
    let seg = bytes.get(l3.l4?..l3.end)?;
    Some(Proof::of_tcp(seg, view.payload.len(), from_client))
}
