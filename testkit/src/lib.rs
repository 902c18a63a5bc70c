//! Test support for vpnlb: frame builders, IKEv2/TLS/DTLS/ESP payload builders, fragmenters, and
//! the lab (`lab`: addresses and [`lab::appliance_spec`]), for unit and integration tests, the
//! fuzz targets, the capture generators and the benchmarks. Nothing here ships in the daemon.
//!
//! Headers are written the one way the appliance writes them: with the `wire` Reprs (Ethernet
//! and VLAN, ARP, IPv4, IPv6, UDP, ICMP, ICMPv6, NDP, IKE header, payload header, notify and SA
//! proposal) and `dataplane::emit`, so every builder is correct by construction: lengths, the
//! IPv4 header checksum and the TCP, UDP, ICMP and ICMPv6 checksums (with their pseudo-headers)
//! are computed. What has no Repr (TCP, ESP, IPv6 extension headers, TLS and DTLS records) is
//! written through the views' setters or as bytes. Frames are not padded to the 60-byte Ethernet
//! minimum; [`pad_to_min_frame`] does that where realism matters.
//!
//! Builders never panic. Inputs that cannot be encoded are clamped, as documented on each item:
//! VLAN IDs keep their low 12 bits, and payloads are cut so that every length field fits.
//!
//! Application payloads (IKEv2, ESP, TLS, DTLS) follow the real layouts so the classifier sees
//! what gateways and clients send, with deterministic pseudo-random bytes for keys and nonces.
//!
//! `dataplane`'s own unit tests compile this file as a module of the crate (see `dataplane`'s
//! `lib.rs`), so that `lab::appliance_spec` returns the crate's own `ApplianceSpec`; hence the
//! paths through `dataplane::`, which name the crate itself there.

#![forbid(unsafe_code)]

use std::net::{Ipv4Addr, Ipv6Addr};

pub use dataplane::emit::L2;
pub use dataplane::rng::SplitMix64;
pub use dataplane::wire::ipv6::solicited_node;

use dataplane::emit;
use dataplane::wire::arp::ArpRepr;
use dataplane::wire::checksum::{fold, sum, PseudoHeader};
use dataplane::wire::ethernet::{ethertype, EthernetAddress};
use dataplane::wire::icmp::{Icmpv4Packet, Icmpv4Repr};
use dataplane::wire::icmpv6::{Icmpv6Packet, Icmpv6Repr, NdpRepr};
use dataplane::wire::ike::{
    self, exchange, flags as ike_flags, notify_type, payload_type, IkeHeader, IkeHeaderRepr,
    NotifyRepr, PayloadHeader, PayloadHeaderRepr, ProposalRepr, SaRepr, TransformRepr,
};
use dataplane::wire::ip_proto;
use dataplane::wire::ipv4::{Ipv4Packet, Ipv4Repr, IPV4_HEADER_LEN};
use dataplane::wire::ipv6::{Ipv6Packet, Ipv6Repr, IPV6_HEADER_LEN};
use dataplane::wire::tcp::{self, TcpPacket};
use dataplane::wire::udp::{UdpPacket, UdpRepr};

/// The lab's addresses (RFC 2544 / RFC 5180 benchmarking ranges), shared by tests and tools.
pub mod lab {
    use dataplane::wire::ethernet::EthernetAddress;
    use std::net::{Ipv4Addr, Ipv6Addr};

    /// The appliance's client-facing port.
    pub const CLIENT_PORT_MAC: EthernetAddress = EthernetAddress([0x02, 0, 0, 0, 0x01, 0x01]);
    /// The upstream router in front of the client port.
    pub const ROUTER_MAC: EthernetAddress = EthernetAddress([0x02, 0, 0, 0, 0x01, 0xfe]);
    /// The appliance's backend (gateway-facing) port.
    pub const BACKEND_PORT_MAC: EthernetAddress = EthernetAddress([0x02, 0, 0, 0, 0x02, 0x01]);
    /// gw1..gw3.
    pub const GATEWAY_MACS: [EthernetAddress; 3] = [
        EthernetAddress([0x02, 0, 0, 0, 0x02, 0x0b]),
        EthernetAddress([0x02, 0, 0, 0, 0x02, 0x0c]),
        EthernetAddress([0x02, 0, 0, 0, 0x02, 0x0d]),
    ];
    /// gw1..gw3 IPv4 addresses.
    pub const GATEWAYS_V4: [Ipv4Addr; 3] = [
        Ipv4Addr::new(198, 19, 0, 11),
        Ipv4Addr::new(198, 19, 0, 12),
        Ipv4Addr::new(198, 19, 0, 13),
    ];
    /// gw1..gw3 IPv6 addresses.
    pub const GATEWAYS_V6: [Ipv6Addr; 3] = [
        Ipv6Addr::new(0x2001, 2, 0, 2, 0, 0, 0, 0x11),
        Ipv6Addr::new(0x2001, 2, 0, 2, 0, 0, 0, 0x12),
        Ipv6Addr::new(0x2001, 2, 0, 2, 0, 0, 0, 0x13),
    ];
    /// The service VIP, IPv4.
    pub const VIP_V4: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 100);
    /// The service VIP, IPv6.
    pub const VIP_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 2, 0, 1, 0, 0, 0, 0x100);
    /// The upstream router, IPv4 and IPv6 (the client side's default route).
    pub const ROUTER_V4: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 254);
    pub const ROUTER_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 2, 0, 1, 0, 0, 0, 0xfe);

    /// The lab appliance as conf/lab.toml describes it (port 0 `client`, port 1 `backend`,
    /// service `vpn` on the VIPs with gw1..gw3), for tests, fuzzing and benchmarks that must not
    /// depend on the TOML loader. `affinity` sizes the shard.
    pub fn appliance_spec(
        affinity: dataplane::model::AffinitySpec,
    ) -> dataplane::model::ApplianceSpec {
        use dataplane::model::*;
        use dataplane::schedule::{GatewayState, SchedulerKind};
        use dataplane::wire::ethernet::Vlan;
        use std::net::IpAddr;
        let cidr = |s: &str| s.parse::<IpCidr>().expect("lab prefix");
        let interface = |name: &str, port, role, a: [&str; 2]| InterfaceSpec {
            name: name.into(),
            port,
            vlan: Vlan::Untagged,
            role,
            addresses: a.iter().map(|s| cidr(s)).collect(),
        };
        let mut neighbors = vec![
            NeighborSpec {
                address: IpAddr::V4(ROUTER_V4),
                mac: ROUTER_MAC,
            },
            NeighborSpec {
                address: IpAddr::V6(ROUTER_V6),
                mac: ROUTER_MAC,
            },
        ];
        for i in 0..3 {
            neighbors.push(NeighborSpec {
                address: IpAddr::V4(GATEWAYS_V4[i]),
                mac: GATEWAY_MACS[i],
            });
            neighbors.push(NeighborSpec {
                address: IpAddr::V6(GATEWAYS_V6[i]),
                mac: GATEWAY_MACS[i],
            });
        }
        ApplianceSpec {
            ports: vec![
                PortSpec {
                    name: "client".into(),
                    mac: CLIENT_PORT_MAC,
                    device: String::new(),
                    mtu: DEFAULT_MTU,
                },
                PortSpec {
                    name: "backend".into(),
                    mac: BACKEND_PORT_MAC,
                    device: String::new(),
                    mtu: DEFAULT_MTU,
                },
            ],
            interfaces: vec![
                interface(
                    "client",
                    0,
                    Role::Client,
                    ["198.18.0.1/24", "2001:2:0:1::1/64"],
                ),
                interface(
                    "backend",
                    1,
                    Role::Backend,
                    ["198.19.0.1/24", "2001:2:0:2::1/64"],
                ),
            ],
            routes: vec![
                RouteSpec {
                    prefix: cidr("0.0.0.0/0"),
                    via: IpAddr::V4(ROUTER_V4),
                },
                RouteSpec {
                    prefix: cidr("::/0"),
                    via: IpAddr::V6(ROUTER_V6),
                },
            ],
            neighbors,
            services: vec![ServiceSpec {
                name: "vpn".into(),
                vip4: Some(VIP_V4),
                vip6: Some(VIP_V6),
                listeners: Listeners::well_known(),
                scheduler: SchedulerKind::Maglev,
                persistence_timeout_s: 3600,
                unconfirmed_timeout_s: 30,
                mode: ServiceMode::Nat,
                route_to_gateways: false,
                gateways: (0..3)
                    .map(|i| GatewaySpec {
                        name: format!("gw{}", i + 1),
                        ipv4: Some(GATEWAYS_V4[i]),
                        ipv6: Some(GATEWAYS_V6[i]),
                        weight: 1,
                        state: GatewayState::Up,
                    })
                    .collect(),
            }],
            affinity,
            maglev_size: dataplane::schedule::maglev::MAGLEV_DEFAULT_SIZE,
            ha: None,
        }
    }
}

/// TCP flag bits for [`L4::Tcp`] (low 9 bits of header bytes 12..14): the wire view's.
pub mod tcp_flags {
    pub use dataplane::wire::tcp::{ACK, CWR, ECE, FIN, PSH, RST, SYN, URG};
}

/// The smallest Ethernet frame on the wire, FCS excluded.
pub const MIN_FRAME_LEN: usize = 60;

/// The TCP window every crafted segment advertises.
pub const TCP_WINDOW: u16 = 64_240;

/// A NAT-T keepalive (RFC 3948 §2.3): one 0xFF byte in a UDP/4500 datagram.
pub const NATT_KEEPALIVE: [u8; 1] = [0xff];

/// The transport (or other upper-layer) part of a crafted IP packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum L4<'a> {
    /// UDP; the checksum is computed (see [`Ipv4Opts::udp_checksum`]).
    Udp {
        src: u16,
        dst: u16,
        payload: &'a [u8],
    },
    /// TCP without options, window [`TCP_WINDOW`]; `flags` from [`tcp_flags`].
    Tcp {
        src: u16,
        dst: u16,
        seq: u32,
        ack: u32,
        flags: u16,
        payload: &'a [u8],
    },
    /// ESP (IP protocol 50): SPI, sequence number, then `payload` as the opaque rest.
    Esp {
        spi: u32,
        seq: u32,
        payload: &'a [u8],
    },
    /// ICMP: type, code, checksum, the 4-byte "rest of header" (echo id/seq...), payload.
    Icmpv4 {
        msg_type: u8,
        code: u8,
        rest: u32,
        payload: &'a [u8],
    },
    /// ICMPv6, checksummed with the enclosing IP header's pseudo-header.
    Icmpv6 {
        msg_type: u8,
        code: u8,
        rest: u32,
        payload: &'a [u8],
    },
    /// Any other protocol: `payload` follows the IP header as is.
    Raw { protocol: u8, payload: &'a [u8] },
}

impl L4<'_> {
    /// The IP protocol number.
    pub fn protocol(&self) -> u8 {
        match self {
            L4::Udp { .. } => ip_proto::UDP,
            L4::Tcp { .. } => ip_proto::TCP,
            L4::Esp { .. } => ip_proto::ESP,
            L4::Icmpv4 { .. } => ip_proto::ICMP,
            L4::Icmpv6 { .. } => ip_proto::ICMPV6,
            L4::Raw { protocol, .. } => *protocol,
        }
    }

    /// The length of the transport header before the payload (0 for [`L4::Raw`]).
    pub fn header_len(&self) -> usize {
        match self {
            L4::Udp { .. } | L4::Esp { .. } | L4::Icmpv4 { .. } | L4::Icmpv6 { .. } => 8,
            L4::Tcp { .. } => 20,
            L4::Raw { .. } => 0,
        }
    }

    fn payload(&self) -> &[u8] {
        match self {
            L4::Udp { payload, .. }
            | L4::Tcp { payload, .. }
            | L4::Esp { payload, .. }
            | L4::Icmpv4 { payload, .. }
            | L4::Icmpv6 { payload, .. }
            | L4::Raw { payload, .. } => payload,
        }
    }

    /// Writes the segment over `seg` (exactly header + `payload_len` bytes): the header and the
    /// first `payload_len` payload bytes, checksum included (over `pseudo` where the protocol
    /// has a pseudo-header; a UDP checksum only if `udp_checksum`).
    fn emit(&self, seg: &mut [u8], payload_len: usize, pseudo: &PseudoHeader, udp_checksum: bool) {
        let payload = self.payload().get(..payload_len).unwrap_or_default();
        let copy = |p: &mut [u8]| p.copy_from_slice(payload);
        match *self {
            L4::Udp { src, dst, .. } => {
                let repr = UdpRepr {
                    src_port: src,
                    dst_port: dst,
                };
                let pseudo = udp_checksum.then_some(pseudo);
                repr.emit(&mut UdpPacket::new_unchecked(seg), pseudo, copy);
            }
            L4::Tcp {
                src,
                dst,
                seq,
                ack,
                flags,
                ..
            } => {
                // Data offset 5 words (no TCP Repr: the appliance never writes TCP headers).
                seg[tcp::field::DOFF_FLAGS] = 5 << 4;
                let mut p = TcpPacket::new_unchecked(&mut *seg);
                p.set_src_port(src);
                p.set_dst_port(dst);
                p.set_seq_number(seq);
                p.set_ack_number(ack);
                p.set_flags(flags);
                p.set_window(TCP_WINDOW);
                p.payload_mut().copy_from_slice(payload);
                let c = !fold(sum(pseudo.sum(ip_proto::TCP, seg.len()), seg));
                TcpPacket::new_unchecked(seg).set_checksum(c);
            }
            L4::Esp { spi, seq, .. } => {
                seg[..4].copy_from_slice(&spi.to_be_bytes());
                seg[4..8].copy_from_slice(&seq.to_be_bytes());
                seg[8..].copy_from_slice(payload);
            }
            L4::Icmpv4 {
                msg_type,
                code,
                rest,
                ..
            } => {
                let repr = Icmpv4Repr {
                    msg_type,
                    code,
                    rest_of_header: rest,
                };
                repr.emit(&mut Icmpv4Packet::new_unchecked(seg), copy);
            }
            L4::Icmpv6 {
                msg_type,
                code,
                rest,
                ..
            } => {
                let repr = Icmpv6Repr {
                    msg_type,
                    code,
                    rest_of_header: rest,
                };
                match pseudo {
                    PseudoHeader::V6 { src, dst } => {
                        repr.emit(&mut Icmpv6Packet::new_unchecked(seg), src, dst, copy)
                    }
                    // ICMPv6 over IPv4 exists only in tests of what the pipeline refuses:
                    // checksummed over the IPv4 pseudo-header.
                    PseudoHeader::V4 { .. } => {
                        let mut p = Icmpv6Packet::new_unchecked(&mut *seg);
                        p.set_msg_type(msg_type);
                        p.set_code(code);
                        p.set_rest_of_header(rest);
                        p.data_mut().copy_from_slice(payload);
                        let c = !fold(sum(pseudo.sum(ip_proto::ICMPV6, seg.len()), seg));
                        Icmpv6Packet::new_unchecked(seg).set_checksum(c);
                    }
                }
            }
            L4::Raw { .. } => seg.copy_from_slice(payload),
        }
    }
}

/// IPv4 header settings for [`ipv4`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ipv4Opts {
    pub ttl: u8,
    pub ident: u16,
    pub dont_frag: bool,
    /// Raw IPv4 options, zero-padded (End of Options List) to a multiple of 4; at most 40 bytes
    /// are kept.
    pub options: Vec<u8>,
    /// false: UDP checksum 0 (absent), as some IPsec stacks send UDP/4500.
    pub udp_checksum: bool,
}

impl Default for Ipv4Opts {
    /// TTL 64, ident 0, DF clear, no options, UDP checksum on.
    fn default() -> Self {
        Ipv4Opts {
            ttl: 64,
            ident: 0,
            dont_frag: false,
            options: Vec::new(),
            udp_checksum: true,
        }
    }
}

/// An IPv6 extension header for [`ipv6`]. Headers are emitted in the order given and chained
/// by their Next Header fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ipv6Ext {
    /// Hop-by-Hop Options: TLV options, padded with Pad1/PadN to a multiple of 8 bytes; at most
    /// 2046 option bytes are kept.
    HopByHop(Vec<u8>),
    /// Destination Options, encoded like [`Ipv6Ext::HopByHop`].
    DestOpts(Vec<u8>),
    /// A Routing header: type, segments left, then type-specific data (zero-padded to a
    /// multiple of 8 bytes; at most 2044 bytes are kept).
    Routing {
        routing_type: u8,
        segments_left: u8,
        data: Vec<u8>,
    },
    /// A Fragment header, for crafting fragments by hand (`offset` in 8-byte units, 13 bits).
    Fragment { offset: u16, more: bool, ident: u32 },
}

impl Ipv6Ext {
    /// The protocol number naming this header in the previous Next Header field.
    pub fn protocol(&self) -> u8 {
        match self {
            Ipv6Ext::HopByHop(_) => ip_proto::HOPOPT,
            Ipv6Ext::DestOpts(_) => ip_proto::IPV6_OPTS,
            Ipv6Ext::Routing { .. } => ip_proto::IPV6_ROUTE,
            Ipv6Ext::Fragment { .. } => ip_proto::IPV6_FRAG,
        }
    }

    /// The encoded length: a multiple of 8, at most 2048.
    fn len(&self) -> usize {
        match self {
            Ipv6Ext::HopByHop(o) | Ipv6Ext::DestOpts(o) => round8(2 + o.len().min(2046)),
            Ipv6Ext::Routing { data, .. } => round8(4 + data.len().min(2044)),
            Ipv6Ext::Fragment { .. } => 8,
        }
    }

    fn emit(&self, out: &mut Vec<u8>, next: u8) {
        let len = self.len();
        // Hdr Ext Len counts 8-byte units beyond the first; len <= 2048 keeps it in a u8.
        let units = (len / 8 - 1) as u8;
        match self {
            Ipv6Ext::HopByHop(opts) | Ipv6Ext::DestOpts(opts) => {
                let opts = opts.get(..2046).unwrap_or(opts);
                out.extend_from_slice(&[next, units]);
                out.extend_from_slice(opts);
                match len - 2 - opts.len() {
                    0 => {}
                    1 => out.push(0), // Pad1
                    pad => {
                        // PadN: type 1, length, zeros. pad <= 7.
                        out.extend_from_slice(&[1, (pad - 2) as u8]);
                        out.resize(out.len() + pad - 2, 0);
                    }
                }
            }
            Ipv6Ext::Routing {
                routing_type,
                segments_left,
                data,
            } => {
                let data = data.get(..2044).unwrap_or(data);
                out.extend_from_slice(&[next, units, *routing_type, *segments_left]);
                out.extend_from_slice(data);
                out.resize(out.len() + len - 4 - data.len(), 0);
            }
            Ipv6Ext::Fragment {
                offset,
                more,
                ident,
            } => {
                out.extend_from_slice(&[next, 0]);
                let field = ((offset & 0x1fff) << 3) | u16::from(*more);
                out.extend_from_slice(&field.to_be_bytes());
                out.extend_from_slice(&ident.to_be_bytes());
            }
        }
    }
}

fn round8(n: usize) -> usize {
    (n + 7) & !7
}

/// An Ethernet + IPv4 frame carrying `l4`. The L4 payload is cut if the packet would exceed
/// 65535 bytes.
pub fn ipv4(l2: &L2, src: Ipv4Addr, dst: Ipv4Addr, opts: &Ipv4Opts, l4: &L4) -> Vec<u8> {
    let options = opts.options.get(..40).unwrap_or(&opts.options);
    let ihl = IPV4_HEADER_LEN + round4(options.len());
    let payload_len = l4
        .payload()
        .len()
        .min(usize::from(u16::MAX) - ihl - l4.header_len());
    let l4_len = l4.header_len() + payload_len;
    let ip = Ipv4Repr {
        ident: opts.ident,
        dont_frag: opts.dont_frag,
        // The options count as payload for the Repr, which writes a 20-byte header.
        ..Ipv4Repr::new(
            src,
            dst,
            l4.protocol(),
            ihl - IPV4_HEADER_LEN + l4_len,
            opts.ttl,
        )
    };
    let pseudo = ip.pseudo_header();
    emit::ethernet_frame(l2, ethertype::IPV4, ihl + l4_len, |p| {
        let (header, seg) = p.split_at_mut(ihl);
        l4.emit(seg, payload_len, &pseudo, opts.udp_checksum);
        let mut header = Ipv4Packet::new_unchecked(header);
        ip.emit(&mut header);
        if ihl > IPV4_HEADER_LEN {
            header.set_header_len(ihl);
            header.options_mut()[..options.len()].copy_from_slice(options);
            header.fill_checksum();
        }
    })
}

fn round4(n: usize) -> usize {
    (n + 3) & !3
}

/// An Ethernet + IPv6 frame with extension headers `ext` (in order) carrying `l4`. Upper-layer
/// checksums use `dst` in the pseudo-header, so with a Routing header pass the final
/// destination. The L4 payload is cut (and extension headers dropped) if the payload would
/// exceed 65535 bytes (no jumbograms).
pub fn ipv6(
    l2: &L2,
    src: &Ipv6Addr,
    dst: &Ipv6Addr,
    hop_limit: u8,
    ext: &[Ipv6Ext],
    l4: &L4,
) -> Vec<u8> {
    let max = usize::from(u16::MAX) - l4.header_len();
    // Keep the extension headers that fit the 16-bit Payload Length.
    let (mut ext_count, mut ext_len) = (0, 0);
    for e in ext {
        if ext_len + e.len() > max {
            break;
        }
        ext_len += e.len();
        ext_count += 1;
    }
    let ext = &ext[..ext_count];
    let payload_len = l4.payload().len().min(max - ext_len);
    let l4_len = l4.header_len() + payload_len;
    let mut headers = Vec::with_capacity(ext_len);
    for (i, e) in ext.iter().enumerate() {
        let next = ext.get(i + 1).map_or(l4.protocol(), Ipv6Ext::protocol);
        e.emit(&mut headers, next);
    }
    let first = ext.first().map_or(l4.protocol(), Ipv6Ext::protocol);
    let ip = Ipv6Repr::new(*src, *dst, first, ext_len + l4_len, hop_limit);
    emit::ipv6_frame(l2, &ip, |p| {
        let (ext, seg) = p.split_at_mut(ext_len);
        ext.copy_from_slice(&headers);
        l4.emit(seg, payload_len, &ip.pseudo_header(), true);
    })
}

/// Pads `frame` with zeros to the 60-byte Ethernet minimum, as a NIC does on transmit.
pub fn pad_to_min_frame(frame: &mut Vec<u8>) {
    if frame.len() < MIN_FRAME_LEN {
        frame.resize(MIN_FRAME_LEN, 0);
    }
}

/// The length of the Ethernet header (up to two VLAN tags) and the inner EtherType.
fn l2_split(frame: &[u8]) -> Option<(usize, u16)> {
    let mut at = 12;
    for _ in 0..3 {
        let et = u16::from_be_bytes([*frame.get(at)?, *frame.get(at + 1)?]);
        if !matches!(et, ethertype::VLAN | ethertype::QINQ | 0x9100) || at >= 20 {
            return Some((at + 2, et));
        }
        at += 4;
    }
    None
}

/// Splits an Ethernet + IPv4 frame into fragments of at most `mtu` bytes of IP packet each
/// (RFC 791): fragment data sizes are multiples of 8, the first fragment keeps all options,
/// later ones only options with the copy flag, every header checksum is recomputed, DF is
/// cleared. Fragmenting a fragment keeps its offset and MF. Ethernet padding is dropped.
///
/// Returns the frame unchanged (as the only element) if it fits `mtu`, is not a well-formed
/// IPv4 frame, or `mtu` leaves no room for 8 data bytes.
pub fn fragment_ipv4(frame: &[u8], mtu: usize) -> Vec<Vec<u8>> {
    fragment_ipv4_inner(frame, mtu).unwrap_or_else(|| vec![frame.to_vec()])
}

fn fragment_ipv4_inner(frame: &[u8], mtu: usize) -> Option<Vec<Vec<u8>>> {
    let (l2_len, et) = l2_split(frame)?;
    if et != ethertype::IPV4 {
        return None;
    }
    let ip = frame.get(l2_len..)?;
    let ihl = usize::from(ip.first()? & 0x0f) * 4;
    let total = usize::from(u16::from_be_bytes([*ip.get(2)?, *ip.get(3)?]));
    if ip.first()? >> 4 != 4 || ihl < 20 || total < ihl || total > ip.len() || total <= mtu {
        return None;
    }
    let header = ip.get(..ihl)?;
    let data = ip.get(ihl..total)?;
    let later_header = ipv4_copied_options_header(header);
    let first_room = mtu.checked_sub(ihl)? & !7;
    let later_room = mtu.checked_sub(later_header.len())? & !7;
    if first_room == 0 || later_room == 0 {
        return None;
    }
    let frag_field = u16::from_be_bytes([header[6], header[7]]);
    let base_offset = usize::from(frag_field & 0x1fff) * 8;
    let orig_more = frag_field & 0x2000 != 0;
    let mut out = Vec::new();
    let mut done = 0;
    while done < data.len() {
        let hdr: &[u8] = if done == 0 { header } else { &later_header };
        let room = if done == 0 { first_room } else { later_room };
        let take = room.min(data.len() - done);
        let more = done + take < data.len() || orig_more;
        let offset = ((base_offset + done) / 8).min(0x1fff) as u16;
        let mut f = Vec::with_capacity(l2_len + hdr.len() + take);
        f.extend_from_slice(&frame[..l2_len]);
        let ip_at = f.len();
        f.extend_from_slice(hdr);
        f.extend_from_slice(&data[done..done + take]);
        let mut ip = Ipv4Packet::new_unchecked(&mut f[ip_at..]);
        ip.set_total_len((hdr.len() + take) as u16);
        ip.set_frag(false, more, offset * 8);
        ip.fill_checksum();
        out.push(f);
        done += take;
    }
    Some(out)
}

/// The IPv4 header for non-first fragments: options without the copy flag are dropped.
fn ipv4_copied_options_header(header: &[u8]) -> Vec<u8> {
    let mut h = header.get(..20).unwrap_or(header).to_vec();
    let mut opts = header.get(20..).unwrap_or_default();
    while let Some(&kind) = opts.first() {
        let len = match kind {
            0 => break, // End of Options List
            1 => 1,     // No Operation
            _ => usize::from(*opts.get(1).unwrap_or(&0)).max(2),
        };
        let Some(opt) = opts.get(..len) else { break };
        if kind & 0x80 != 0 {
            h.extend_from_slice(opt);
        }
        opts = &opts[len..];
    }
    h.resize(round4(h.len()), 0);
    let ihl_words = (h.len() / 4) as u8;
    if let Some(b) = h.first_mut() {
        *b = 0x40 | ihl_words;
    }
    h
}

/// Splits an Ethernet + IPv6 frame into fragments of at most `mtu` bytes of IP packet each
/// (RFC 8200 §4.5): a Fragment header with `ident` goes after the unfragmentable part (the IPv6
/// header, Hop-by-Hop and Routing headers and Destination Options before a Routing header),
/// fragment data sizes are multiples of 8. Ethernet padding is dropped.
///
/// Returns the frame unchanged (as the only element) if it fits `mtu`, is not a well-formed
/// IPv6 frame, or `mtu` leaves no room for 8 data bytes.
pub fn fragment_ipv6(frame: &[u8], mtu: usize, ident: u32) -> Vec<Vec<u8>> {
    fragment_ipv6_inner(frame, mtu, ident).unwrap_or_else(|| vec![frame.to_vec()])
}

fn fragment_ipv6_inner(frame: &[u8], mtu: usize, ident: u32) -> Option<Vec<Vec<u8>>> {
    let (l2_len, et) = l2_split(frame)?;
    if et != ethertype::IPV6 {
        return None;
    }
    let ip = frame.get(l2_len..)?;
    let total = 40 + usize::from(u16::from_be_bytes([*ip.get(4)?, *ip.get(5)?]));
    if ip.first()? >> 4 != 6 || total > ip.len() || total <= mtu {
        return None;
    }
    let ip = &ip[..total];
    // Walk the leading extension headers; the unfragmentable part ends after the last
    // Hop-by-Hop or Routing header (which also covers Destination Options before Routing).
    let mut next = ip[6];
    let (mut unfrag_end, mut unfrag_next_at) = (40, 6);
    let mut at = 40;
    while matches!(
        next,
        ip_proto::HOPOPT | ip_proto::IPV6_ROUTE | ip_proto::IPV6_OPTS
    ) {
        let len = (usize::from(*ip.get(at + 1)?) + 1) * 8;
        if at + len > total {
            return None;
        }
        if next != ip_proto::IPV6_OPTS {
            unfrag_end = at + len;
            unfrag_next_at = at;
        }
        next = ip[at];
        at += len;
    }
    let unfrag = &ip[..unfrag_end];
    let first_next = ip[unfrag_next_at];
    let data = &ip[unfrag_end..];
    let room = mtu.checked_sub(unfrag_end + 8)? & !7;
    if room == 0 {
        return None;
    }
    let mut out = Vec::new();
    let mut done = 0;
    while done < data.len() {
        let take = room.min(data.len() - done);
        let more = done + take < data.len();
        let mut f = Vec::with_capacity(l2_len + unfrag_end + 8 + take);
        f.extend_from_slice(&frame[..l2_len]);
        let ip_at = f.len();
        f.extend_from_slice(unfrag);
        f[ip_at + unfrag_next_at] = ip_proto::IPV6_FRAG;
        let payload_len = (unfrag_end - IPV6_HEADER_LEN + 8 + take) as u16;
        Ipv6Packet::new_unchecked(&mut f[ip_at..]).set_payload_len(payload_len);
        Ipv6Ext::Fragment {
            offset: ((done / 8) & 0x1fff) as u16,
            more,
            ident,
        }
        .emit(&mut f, first_next);
        f.extend_from_slice(&data[done..done + take]);
        out.push(f);
        done += take;
    }
    Some(out)
}

/// An ARP packet (Ethernet/IPv4, RFC 826); `op` 1 = request, 2 = reply.
pub fn arp(
    l2: &L2,
    op: u16,
    sha: EthernetAddress,
    spa: Ipv4Addr,
    tha: EthernetAddress,
    tpa: Ipv4Addr,
) -> Vec<u8> {
    let arp = ArpRepr {
        operation: op,
        sender_hw: sha,
        sender_ip: spa,
        target_hw: tha,
        target_ip: tpa,
    };
    emit::arp_frame(l2, &arp)
}

/// A Neighbor Solicitation (RFC 4861 §4.3) for `target`, to its solicited-node multicast
/// address with hop limit 255. Use `EthernetAddress::ipv6_multicast(&solicited_node(target))`
/// as `l2.dst`. Pass no `source_lladdr` when `src` is `::` (duplicate address detection).
pub fn neighbor_solicit(
    l2: &L2,
    src: &Ipv6Addr,
    target: &Ipv6Addr,
    source_lladdr: Option<EthernetAddress>,
) -> Vec<u8> {
    let ns = NdpRepr::NeighborSolicit {
        target: *target,
        source_lladdr,
    };
    emit::ndp_frame(l2, src, &solicited_node(target), &ns)
}

/// A Neighbor Advertisement (RFC 4861 §4.4) for `target` with hop limit 255 and a Target
/// Link-Layer Address option. `solicited` and `override_` set the S and O flags.
pub fn neighbor_advert(
    l2: &L2,
    src: &Ipv6Addr,
    dst: &Ipv6Addr,
    target: &Ipv6Addr,
    target_lladdr: EthernetAddress,
    solicited: bool,
    override_: bool,
) -> Vec<u8> {
    use dataplane::wire::icmpv6::{NDP_FLAG_OVERRIDE, NDP_FLAG_SOLICITED};
    let mut flags = 0;
    if solicited {
        flags |= NDP_FLAG_SOLICITED;
    }
    if override_ {
        flags |= NDP_FLAG_OVERRIDE;
    }
    let na = NdpRepr::NeighborAdvert {
        flags,
        target: *target,
        target_lladdr: Some(target_lladdr),
    };
    emit::ndp_frame(l2, src, dst, &na)
}

/// IKEv2 transform and protocol numbers used in the crafted SA payloads (RFC 7296 §3.3.2).
mod ike_ids {
    pub const PROTO_IKE: u8 = super::ike::sa::PROTO_IKE;
    pub const TRANS_ENCR: u8 = 1;
    pub const TRANS_PRF: u8 = 2;
    pub const TRANS_DH: u8 = 4;
    pub const ENCR_AES_GCM_16: u16 = 20;
    pub const PRF_HMAC_SHA2_256: u16 = 5;
}

/// The largest body an IKE payload can carry (payload length is 16 bits).
const IKE_MAX_PAYLOAD_BODY: usize = u16::MAX as usize - 4;

/// Builds an IKE message: header, then payloads chained by their Next Payload fields.
struct IkeBuilder {
    msg: Vec<u8>,
    /// Where the last payload starts (its Next Payload field); `None`: in the header.
    next_at: Option<usize>,
}

impl IkeBuilder {
    fn new(spi_i: u64, spi_r: u64, exchange: u8, flags: u8, message_id: u32) -> Self {
        let header = IkeHeaderRepr {
            initiator_spi: spi_i,
            responder_spi: spi_r,
            next_payload: payload_type::NONE,
            exchange_type: exchange,
            flags,
            message_id,
            length: 0, // by finish()
        };
        let mut msg = Vec::with_capacity(512);
        msg.resize(header.buffer_len(), 0);
        header.emit(&mut IkeHeader::new_unchecked(&mut msg[..]));
        IkeBuilder { msg, next_at: None }
    }

    /// Sets the Next Payload field before the payload to come (the header's, or the last
    /// payload's).
    fn set_next(&mut self, ptype: u8) {
        match self.next_at {
            None => IkeHeader::new_unchecked(&mut self.msg[..]).set_next_payload(ptype),
            Some(at) => PayloadHeader::new_unchecked(&mut self.msg[at..]).set_next_payload(ptype),
        }
    }

    /// Appends a payload of type `ptype` whose body is `parts` concatenated (cut to fit).
    fn payload(&mut self, ptype: u8, parts: &[&[u8]]) -> &mut Self {
        self.set_next(ptype);
        let at = self.msg.len();
        self.next_at = Some(at);
        self.msg.resize(at + ike::PAYLOAD_HEADER_LEN, 0);
        let mut room = IKE_MAX_PAYLOAD_BODY;
        for p in parts {
            let p = p.get(..room).unwrap_or(p);
            self.msg.extend_from_slice(p);
            room -= p.len();
        }
        let header = PayloadHeaderRepr::new(
            payload_type::NONE,
            self.msg.len() - at - ike::PAYLOAD_HEADER_LEN,
        );
        header.emit(&mut PayloadHeader::new_unchecked(&mut self.msg[at..]));
        self
    }

    fn notify(&mut self, notify: u16, data: &[u8]) -> &mut Self {
        // Protocol ID 0, SPI size 0, type.
        let repr = NotifyRepr {
            protocol_id: 0,
            notify_type: notify,
        };
        let mut fixed = [0; ike::Notify::FIXED_LEN];
        repr.emit(&mut fixed);
        self.payload(payload_type::NOTIFY, &[&fixed, data])
    }

    fn finish(mut self) -> Vec<u8> {
        let len = u32::try_from(self.msg.len()).unwrap_or(u32::MAX);
        IkeHeader::new_unchecked(&mut self.msg[..]).set_length(len);
        self.msg
    }
}

/// An SA payload body: one IKE proposal with AES-GCM-16/256, PRF-HMAC-SHA2-256 and `group`.
fn ike_sa_proposal(group: u16) -> Vec<u8> {
    use ike_ids::*;
    let t = |transform_type, transform_id, key_length| TransformRepr {
        transform_type,
        transform_id,
        key_length,
    };
    let sa = SaRepr {
        proposals: vec![ProposalRepr {
            number: 1,
            protocol_id: PROTO_IKE,
            transforms: vec![
                t(TRANS_ENCR, ENCR_AES_GCM_16, Some(256)),
                t(TRANS_PRF, PRF_HMAC_SHA2_256, None),
                t(TRANS_DH, group, None),
            ],
        }],
    };
    let mut body = vec![0; sa.buffer_len()];
    sa.emit(&mut body);
    body
}

/// IKE_SA_INIT body shared by request and response: SA, KE, nonce, NAT detection, extras.
fn ike_sa_init(
    mut b: IkeBuilder,
    seed: u64,
    nonce: &[u8; 32],
    ke_group: u16,
    ke_data_len: usize,
    extra_notifies: &[(u16, &[u8])],
) -> Vec<u8> {
    let mut rng = SplitMix64(seed);
    let ke_data = rng.bytes(ke_data_len.min(IKE_MAX_PAYLOAD_BODY - 4));
    let [g0, g1] = ke_group.to_be_bytes();
    let nat_src = rng.bytes(20); // SHA-1 of SPIs, address and port, in a real exchange
    let nat_dst = rng.bytes(20);
    b.payload(payload_type::SA, &[&ike_sa_proposal(ke_group)])
        .payload(payload_type::KE, &[&[g0, g1, 0, 0], &ke_data])
        .payload(payload_type::NONCE, &[nonce])
        .notify(notify_type::NAT_DETECTION_SOURCE_IP, &nat_src)
        .notify(notify_type::NAT_DETECTION_DESTINATION_IP, &nat_dst);
    for (t, data) in extra_notifies {
        b.notify(*t, data);
    }
    b.finish()
}

/// An IKEv2 IKE_SA_INIT request (RFC 7296 §1.2): HDR(SPIi, 0, Initiator), SA (one proposal:
/// AES-GCM-16 256, PRF-HMAC-SHA2-256, `ke_group`), KE (`ke_data_len` pseudo-random bytes), Ni,
/// N(NAT_DETECTION_SOURCE_IP), N(NAT_DETECTION_DESTINATION_IP), then `extra_notifies` (type,
/// data) in order. Over-long KE data or notify data is cut to fit the 16-bit payload length.
pub fn ike_sa_init_request(
    spi_i: u64,
    nonce: &[u8; 32],
    ke_group: u16,
    ke_data_len: usize,
    extra_notifies: &[(u16, &[u8])],
) -> Vec<u8> {
    let b = IkeBuilder::new(spi_i, 0, exchange::IKE_SA_INIT, ike_flags::INITIATOR, 0);
    ike_sa_init(b, spi_i, nonce, ke_group, ke_data_len, extra_notifies)
}

/// An IKEv2 IKE_SA_INIT response: HDR(SPIi, SPIr, Response), SA (the chosen proposal), KE, Nr,
/// the two NAT detection notifies, then `extra_notifies`.
pub fn ike_sa_init_response(
    spi_i: u64,
    spi_r: u64,
    nonce: &[u8; 32],
    ke_group: u16,
    ke_data_len: usize,
    extra_notifies: &[(u16, &[u8])],
) -> Vec<u8> {
    let b = IkeBuilder::new(spi_i, spi_r, exchange::IKE_SA_INIT, ike_flags::RESPONSE, 0);
    ike_sa_init(b, spi_r, nonce, ke_group, ke_data_len, extra_notifies)
}

/// An encrypted IKEv2 message: the header, then one SK payload whose contents (IV, ciphertext,
/// ICV) are `body`, cut to fit the 16-bit payload length. The SK payload's Next Payload names
/// the inner payload such a message starts with (IDi/IDr for IKE_AUTH, SA for CREATE_CHILD_SA).
pub fn ike_message(
    spi_i: u64,
    spi_r: u64,
    exchange: u8,
    flags: u8,
    message_id: u32,
    body: &[u8],
) -> Vec<u8> {
    let inner_first = match exchange {
        exchange::IKE_AUTH if flags & ike_flags::RESPONSE != 0 => payload_type::IDR,
        exchange::IKE_AUTH => payload_type::IDI,
        exchange::CREATE_CHILD_SA => payload_type::SA,
        _ => payload_type::NONE,
    };
    let mut b = IkeBuilder::new(spi_i, spi_r, exchange, flags, message_id);
    b.payload(payload_type::SK, &[body]);
    b.set_next(inner_first);
    b.finish()
}

/// `ike` behind the 4-byte non-ESP marker, as sent on UDP/4500 (RFC 3948 §2.2).
pub fn non_esp_marker(ike: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(4 + ike.len());
    v.extend_from_slice(&[0, 0, 0, 0]);
    v.extend_from_slice(ike);
    v
}

/// An ESP packet of `len` bytes (at least 8): SPI, sequence number, then pseudo-random bytes
/// standing for IV, ciphertext and ICV. Usable as a UDP/4500 payload or with [`L4::Raw`].
pub fn esp_payload(spi: u32, seq: u32, len: usize) -> Vec<u8> {
    let mut v = Vec::with_capacity(len.max(8));
    v.extend_from_slice(&spi.to_be_bytes());
    v.extend_from_slice(&seq.to_be_bytes());
    v.resize(len.max(8), 0);
    SplitMix64((u64::from(spi) << 32) | u64::from(seq)).fill(&mut v[8..]);
    v
}

/// The longest SNI the TLS/DTLS builders keep, so that every length fits one record.
pub const MAX_SNI_LEN: usize = 4096;

/// A TLS extension: type, 16-bit length, data.
fn tls_ext(out: &mut Vec<u8>, ext_type: u16, data: &[u8]) {
    out.extend_from_slice(&ext_type.to_be_bytes());
    out.extend_from_slice(&(data.len() as u16).to_be_bytes());
    out.extend_from_slice(data);
}

/// Prepends a 16-bit length to `data`.
fn len16(data: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(2 + data.len());
    v.extend_from_slice(&(data.len() as u16).to_be_bytes());
    v.extend_from_slice(data);
    v
}

/// ClientHello extensions: SNI (if any), supported_groups, signature_algorithms, and for
/// TLS 1.3 supported_versions, psk_key_exchange_modes and an X25519 key_share.
fn client_hello_extensions(sni: Option<&str>, tls13: bool, rng: &mut SplitMix64) -> Vec<u8> {
    let mut ext = Vec::with_capacity(256);
    if let Some(name) = sni {
        let name = name.as_bytes();
        let name = name.get(..MAX_SNI_LEN).unwrap_or(name);
        let mut entry = vec![0]; // host_name
        entry.extend(len16(name));
        tls_ext(&mut ext, 0, &len16(&entry));
    }
    // x25519, secp256r1, secp384r1
    tls_ext(&mut ext, 10, &len16(&[0x00, 0x1d, 0x00, 0x17, 0x00, 0x18]));
    if !tls13 {
        tls_ext(&mut ext, 11, &[1, 0]); // ec_point_formats: uncompressed
    }
    // ecdsa_secp256r1_sha256, rsa_pss_rsae_sha256, rsa_pkcs1_sha256, ecdsa_secp384r1_sha384
    let sig_algs = [0x04, 0x03, 0x08, 0x04, 0x04, 0x01, 0x05, 0x03];
    tls_ext(&mut ext, 13, &len16(&sig_algs));
    if tls13 {
        tls_ext(&mut ext, 43, &[4, 0x03, 0x04, 0x03, 0x03]); // TLS 1.3, TLS 1.2
        tls_ext(&mut ext, 45, &[1, 1]); // psk_dhe_ke
        let mut share = vec![0x00, 0x1d, 0x00, 0x20];
        share.extend(rng.bytes(32));
        tls_ext(&mut ext, 51, &len16(&share));
    }
    ext
}

/// A seed derived from the SNI, so that hellos for different names differ but are repeatable.
fn sni_seed(sni: Option<&str>) -> u64 {
    // FNV-1a.
    sni.unwrap_or("")
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        })
}

/// A handshake message (type, 24-bit length) in a TLS record of `record_version`.
fn tls_handshake_record(record_version: u16, msg_type: u8, body: &[u8]) -> Vec<u8> {
    // Bodies here stay far below 2^14 (the SNI is capped), so both lengths fit.
    let mut v = Vec::with_capacity(9 + body.len());
    v.push(22);
    v.extend_from_slice(&record_version.to_be_bytes());
    v.extend_from_slice(&((4 + body.len()) as u16).to_be_bytes());
    v.push(msg_type);
    v.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
    v.extend_from_slice(body);
    v
}

/// A TLS 1.3 ClientHello record as browsers and VPN clients send it: record version 0x0301,
/// legacy_version 0x0303, 32-byte session id, TLS 1.3 and 1.2 suites, and the extensions
/// server_name (if `sni`), supported_groups, signature_algorithms, supported_versions,
/// psk_key_exchange_modes and key_share (X25519). SNIs longer than [`MAX_SNI_LEN`] are cut.
pub fn tls_client_hello(sni: Option<&str>) -> Vec<u8> {
    let mut rng = SplitMix64(sni_seed(sni));
    let mut body = vec![0x03, 0x03];
    body.extend(rng.bytes(32)); // random
    body.push(32);
    body.extend(rng.bytes(32)); // legacy_session_id
                                // TLS_AES_128_GCM_SHA256, TLS_AES_256_GCM_SHA384, TLS_CHACHA20_POLY1305_SHA256,
                                // ECDHE-ECDSA-AES128-GCM-SHA256, ECDHE-RSA-AES128-GCM-SHA256
    body.extend(len16(&[
        0x13, 0x01, 0x13, 0x02, 0x13, 0x03, 0xc0, 0x2b, 0xc0, 0x2f,
    ]));
    body.extend_from_slice(&[1, 0]); // compression: null
    body.extend(len16(&client_hello_extensions(sni, true, &mut rng)));
    tls_handshake_record(0x0301, 1, &body)
}

/// A TLS 1.3 ServerHello record (record version 0x0303): TLS_AES_128_GCM_SHA256,
/// supported_versions = TLS 1.3 and an X25519 key_share. What follows it in a real flight is
/// encrypted; see [`tls_application_data`].
pub fn tls_server_hello() -> Vec<u8> {
    let mut rng = SplitMix64(0x5e7e_5e7e);
    let mut body = vec![0x03, 0x03];
    body.extend(rng.bytes(32)); // random
    body.push(32);
    body.extend(rng.bytes(32)); // legacy_session_id_echo
    body.extend_from_slice(&[0x13, 0x01, 0]); // cipher suite, compression
    let mut ext = Vec::new();
    tls_ext(&mut ext, 43, &[0x03, 0x04]);
    let mut share = vec![0x00, 0x1d, 0x00, 0x20];
    share.extend(rng.bytes(32));
    tls_ext(&mut ext, 51, &share);
    body.extend(len16(&ext));
    tls_handshake_record(0x0303, 2, &body)
}

/// A TLS application_data record (type 23, version 0x0303) of `len` pseudo-random bytes (at
/// most 2^14 + 256, the TLS 1.3 ciphertext limit).
pub fn tls_application_data(seed: u64, len: usize) -> Vec<u8> {
    let len = len.min(16_384 + 256);
    let mut v = vec![23, 0x03, 0x03];
    v.extend_from_slice(&(len as u16).to_be_bytes());
    v.extend(SplitMix64(seed).bytes(len));
    v
}

/// A DTLS record header: type, version 0xFEFD (DTLS 1.2), epoch, 48-bit sequence number and
/// length, followed by `body`.
fn dtls_record(content_type: u8, epoch: u16, seq: u64, body: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(13 + body.len());
    v.extend_from_slice(&[content_type, 0xfe, 0xfd]);
    v.extend_from_slice(&epoch.to_be_bytes());
    v.extend_from_slice(&(seq & 0xffff_ffff_ffff).to_be_bytes()[2..]);
    v.extend_from_slice(&(body.len().min(u16::MAX as usize) as u16).to_be_bytes());
    v.extend_from_slice(body);
    v
}

/// A DTLS handshake message, unfragmented (fragment offset 0, fragment length = length).
fn dtls_handshake(msg_type: u8, message_seq: u16, body: &[u8]) -> Vec<u8> {
    let len = (body.len() as u32).to_be_bytes();
    let mut v = Vec::with_capacity(12 + body.len());
    v.push(msg_type);
    v.extend_from_slice(&len[1..]);
    v.extend_from_slice(&message_seq.to_be_bytes());
    v.extend_from_slice(&[0, 0, 0]);
    v.extend_from_slice(&len[1..]);
    v.extend_from_slice(body);
    v
}

/// A DTLS 1.2 ClientHello record (record version 0xFEFD, epoch 0) with a handshake header,
/// `cookie` (cut to 255 bytes) and SNI. Without a cookie it is the first hello (message_seq 0,
/// record sequence 0); with one, the retry after a HelloVerifyRequest (both 1).
pub fn dtls_client_hello(cookie: &[u8], sni: Option<&str>) -> Vec<u8> {
    let mut rng = SplitMix64(sni_seed(sni) ^ 0xd7d7);
    let cookie = cookie.get(..255).unwrap_or(cookie);
    let mut body = vec![0xfe, 0xfd];
    body.extend(rng.bytes(32)); // random
    body.push(0); // no session id
    body.push(cookie.len() as u8);
    body.extend_from_slice(cookie);
    // ECDHE-ECDSA-AES128-GCM-SHA256, ECDHE-RSA-AES128-GCM-SHA256, ECDHE-RSA-AES256-GCM-SHA384
    body.extend(len16(&[0xc0, 0x2b, 0xc0, 0x2f, 0xc0, 0x30]));
    body.extend_from_slice(&[1, 0]);
    body.extend(len16(&client_hello_extensions(sni, false, &mut rng)));
    let seq = u16::from(!cookie.is_empty());
    dtls_record(22, 0, u64::from(seq), &dtls_handshake(1, seq, &body))
}

/// A DTLS HelloVerifyRequest record carrying `cookie` (cut to 255 bytes), as a server answers
/// a cookie-less ClientHello (RFC 6347 §4.2.1).
pub fn dtls_hello_verify_request(cookie: &[u8]) -> Vec<u8> {
    let cookie = cookie.get(..255).unwrap_or(cookie);
    // server_version is DTLS 1.0 per RFC 6347 §4.2.1, whatever version is negotiated.
    let mut body = vec![0xfe, 0xff, cookie.len() as u8];
    body.extend_from_slice(cookie);
    dtls_record(22, 0, 0, &dtls_handshake(3, 0, &body))
}

/// A DTLS 1.2 application_data record (epoch `epoch`, sequence `seq`) of `len` pseudo-random
/// bytes (at most 2^14 + 2048).
pub fn dtls_application_data(epoch: u16, seq: u64, len: usize) -> Vec<u8> {
    let body = SplitMix64(seq ^ (u64::from(epoch) << 48)).bytes(len.min(16_384 + 2048));
    dtls_record(23, epoch, seq, &body)
}
