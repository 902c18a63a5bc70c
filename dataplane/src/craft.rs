//! A packet builder for tests, the lab capture generator and the control plane's probes.
//!
//! Every builder writes bytes directly (it never goes through the `wire` views, so it can check
//! them) and is correct by construction: lengths, the IPv4 header checksum and the TCP, UDP,
//! ICMP and ICMPv6 checksums (with their pseudo-headers) are computed. Frames are not padded to
//! the 60-byte Ethernet minimum; [`pad_to_min_frame`] does that where realism matters.
//!
//! Builders never panic. Inputs that cannot be encoded are clamped, as documented on each item:
//! VLAN IDs keep their low 12 bits, and payloads are cut so that every length field fits.
//!
//! Application payloads (IKEv2, ESP, TLS, DTLS) follow the real layouts so the classifier sees
//! what gateways and clients send, with deterministic pseudo-random bytes for keys and nonces.

use std::net::{Ipv4Addr, Ipv6Addr};

use crate::wire::checksum::{checksum, fold, pseudo_header_v4, pseudo_header_v6, sum};
use crate::wire::ethernet::{emit_header, ethertype, EthernetAddress, Vlan};
use crate::wire::ike::{exchange, flags as ike_flags, notify_type, payload_type};
use crate::wire::ip_proto;

/// The lab's addresses (RFC 2544 / RFC 5180 benchmarking ranges), shared by tests and tools.
pub mod lab {
    use super::EthernetAddress;
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
    pub fn appliance_spec(affinity: crate::model::AffinitySpec) -> crate::model::ApplianceSpec {
        use crate::model::*;
        use crate::schedule::{GatewayState, SchedulerKind};
        use crate::wire::ethernet::Vlan;
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
                },
                PortSpec {
                    name: "backend".into(),
                    mac: BACKEND_PORT_MAC,
                    device: String::new(),
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
            maglev_size: crate::schedule::maglev::MAGLEV_DEFAULT_SIZE,
            ha: None,
        }
    }
}

/// TCP flag bits for [`L4::Tcp`] (low 9 bits of header bytes 12..14).
pub mod tcp_flags {
    pub const FIN: u16 = 0x001;
    pub const SYN: u16 = 0x002;
    pub const RST: u16 = 0x004;
    pub const PSH: u16 = 0x008;
    pub const ACK: u16 = 0x010;
    pub const URG: u16 = 0x020;
    pub const ECE: u16 = 0x040;
    pub const CWR: u16 = 0x080;
}

/// The smallest Ethernet frame on the wire, FCS excluded.
pub const MIN_FRAME_LEN: usize = 60;

/// The TCP window every crafted segment advertises.
pub const TCP_WINDOW: u16 = 64_240;

/// A NAT-T keepalive (RFC 3948 §2.3): one 0xFF byte in a UDP/4500 datagram.
pub const NATT_KEEPALIVE: [u8; 1] = [0xff];

/// The Ethernet header of a crafted frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct L2 {
    pub src: EthernetAddress,
    pub dst: EthernetAddress,
    /// VLAN tags; VIDs above 4095 keep their low 12 bits.
    pub vlan: Vlan,
}

impl L2 {
    /// An untagged header from `src` to `dst`.
    pub const fn new(src: EthernetAddress, dst: EthernetAddress) -> Self {
        L2 {
            src,
            dst,
            vlan: Vlan::Untagged,
        }
    }

    /// The same header with `vlan` tags.
    pub const fn with_vlan(self, vlan: Vlan) -> Self {
        L2 { vlan, ..self }
    }
}

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

    fn header_len(&self) -> usize {
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

    /// Where the checksum field sits in the L4 header, if the protocol has one we compute.
    fn checksum_at(&self) -> Option<usize> {
        match self {
            L4::Udp { .. } => Some(6),
            L4::Tcp { .. } => Some(16),
            L4::Icmpv4 { .. } | L4::Icmpv6 { .. } => Some(2),
            L4::Esp { .. } | L4::Raw { .. } => None,
        }
    }

    /// Appends the header (checksum zero) and the first `payload_len` payload bytes.
    fn emit(&self, out: &mut Vec<u8>, payload_len: usize) {
        let total = self.header_len() + payload_len;
        match *self {
            L4::Udp { src, dst, .. } => {
                out.extend_from_slice(&src.to_be_bytes());
                out.extend_from_slice(&dst.to_be_bytes());
                // The callers cap `total` at 65535.
                out.extend_from_slice(&(total as u16).to_be_bytes());
                out.extend_from_slice(&[0, 0]);
            }
            L4::Tcp {
                src,
                dst,
                seq,
                ack,
                flags,
                ..
            } => {
                out.extend_from_slice(&src.to_be_bytes());
                out.extend_from_slice(&dst.to_be_bytes());
                out.extend_from_slice(&seq.to_be_bytes());
                out.extend_from_slice(&ack.to_be_bytes());
                // Data offset 5 words; the low 9 bits of the same 16-bit word are the flags.
                out.extend_from_slice(&((5 << 12) | (flags & 0x01ff)).to_be_bytes());
                out.extend_from_slice(&TCP_WINDOW.to_be_bytes());
                out.extend_from_slice(&[0, 0, 0, 0]); // checksum, urgent pointer
            }
            L4::Esp { spi, seq, .. } => {
                out.extend_from_slice(&spi.to_be_bytes());
                out.extend_from_slice(&seq.to_be_bytes());
            }
            L4::Icmpv4 {
                msg_type,
                code,
                rest,
                ..
            }
            | L4::Icmpv6 {
                msg_type,
                code,
                rest,
                ..
            } => {
                out.extend_from_slice(&[msg_type, code, 0, 0]);
                out.extend_from_slice(&rest.to_be_bytes());
            }
            L4::Raw { .. } => {}
        }
        out.extend_from_slice(self.payload().get(..payload_len).unwrap_or_default());
    }

    /// Fills the checksum of the L4 segment `seg` (as emitted by [`Self::emit`]).
    /// `pseudo` is the enclosing IP header's pseudo-header sum.
    fn fill_checksum(&self, seg: &mut [u8], pseudo: u32, udp_checksum: bool) {
        let Some(at) = self.checksum_at() else {
            return;
        };
        let acc = match self {
            // ICMPv4 has no pseudo-header; ICMPv6, TCP and UDP do.
            L4::Icmpv4 { .. } => sum(0, seg),
            L4::Udp { .. } if !udp_checksum => return,
            _ => sum(pseudo, seg),
        };
        let mut c = !fold(acc);
        if c == 0 && matches!(self, L4::Udp { .. }) {
            // 0 means "no checksum" in UDP; send its other one's-complement form (RFC 768).
            c = 0xffff;
        }
        if let Some(field) = seg.get_mut(at..at + 2) {
            field.copy_from_slice(&c.to_be_bytes());
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

/// Appends the Ethernet header (VIDs masked to 12 bits).
fn emit_l2(out: &mut Vec<u8>, l2: &L2, ethertype: u16) {
    let vlan = match l2.vlan {
        Vlan::Untagged => Vlan::Untagged,
        Vlan::Single { vid } => Vlan::Single { vid: vid & 0x0fff },
        Vlan::Double { outer, inner } => Vlan::Double {
            outer: outer & 0x0fff,
            inner: inner & 0x0fff,
        },
    };
    let mut hdr = [0u8; 22];
    // Cannot fail: 22 bytes hold a double-tagged header and the VIDs are in range.
    let n = emit_header(&mut hdr, l2.dst, l2.src, vlan, ethertype).unwrap_or(0);
    out.extend_from_slice(&hdr[..n]);
}

/// An Ethernet + IPv4 frame carrying `l4`. The L4 payload is cut if the packet would exceed
/// 65535 bytes.
pub fn ipv4(l2: &L2, src: Ipv4Addr, dst: Ipv4Addr, opts: &Ipv4Opts, l4: &L4) -> Vec<u8> {
    let options = opts.options.get(..40).unwrap_or(&opts.options);
    let ihl = 20 + round4(options.len());
    let payload_len = l4
        .payload()
        .len()
        .min(usize::from(u16::MAX) - ihl - l4.header_len());
    let total = ihl + l4.header_len() + payload_len;
    let mut out = Vec::with_capacity(22 + total);
    emit_l2(&mut out, l2, ethertype::IPV4);
    let ip_at = out.len();
    out.push(0x40 | (ihl / 4) as u8);
    out.push(0); // DSCP/ECN
    out.extend_from_slice(&(total as u16).to_be_bytes());
    out.extend_from_slice(&opts.ident.to_be_bytes());
    out.extend_from_slice(&(if opts.dont_frag { 0x4000u16 } else { 0 }).to_be_bytes());
    out.extend_from_slice(&[opts.ttl, l4.protocol(), 0, 0]);
    out.extend_from_slice(&src.octets());
    out.extend_from_slice(&dst.octets());
    out.extend_from_slice(options);
    out.resize(ip_at + ihl, 0);
    set_ipv4_checksum(&mut out[ip_at..]);
    let l4_at = out.len();
    l4.emit(&mut out, payload_len);
    let l4_len = (total - ihl) as u16;
    let pseudo = pseudo_header_v4(src, dst, l4.protocol(), l4_len);
    l4.fill_checksum(&mut out[l4_at..], pseudo, opts.udp_checksum);
    out
}

fn round4(n: usize) -> usize {
    (n + 3) & !3
}

/// Recomputes the header checksum of the IPv4 header at the start of `ip`.
fn set_ipv4_checksum(ip: &mut [u8]) {
    let ihl = usize::from(ip.first().map_or(0, |b| b & 0x0f)) * 4;
    let Some(hdr) = ip.get_mut(..ihl.max(20)) else {
        return;
    };
    hdr[10] = 0;
    hdr[11] = 0;
    let c = checksum(hdr);
    hdr[10..12].copy_from_slice(&c.to_be_bytes());
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
    let mut out = Vec::with_capacity(62 + ext_len + l4_len);
    emit_l2(&mut out, l2, ethertype::IPV6);
    out.extend_from_slice(&[0x60, 0, 0, 0]); // version 6, traffic class 0, flow label 0
    out.extend_from_slice(&((ext_len + l4_len) as u16).to_be_bytes());
    let first = ext.first().map_or(l4.protocol(), Ipv6Ext::protocol);
    out.extend_from_slice(&[first, hop_limit]);
    out.extend_from_slice(&src.octets());
    out.extend_from_slice(&dst.octets());
    for (i, e) in ext.iter().enumerate() {
        let next = ext.get(i + 1).map_or(l4.protocol(), Ipv6Ext::protocol);
        e.emit(&mut out, next);
    }
    let l4_at = out.len();
    l4.emit(&mut out, payload_len);
    let pseudo = pseudo_header_v6(src, dst, l4.protocol(), l4_len as u32);
    l4.fill_checksum(&mut out[l4_at..], pseudo, true);
    out
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
        let ip = &mut f[ip_at..];
        ip[2..4].copy_from_slice(&((hdr.len() + take) as u16).to_be_bytes());
        let field = offset | if more { 0x2000 } else { 0 };
        ip[6..8].copy_from_slice(&field.to_be_bytes());
        set_ipv4_checksum(ip);
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
        let payload_len = (unfrag_end - 40 + 8 + take) as u16;
        f[ip_at + 4..ip_at + 6].copy_from_slice(&payload_len.to_be_bytes());
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
    let mut out = Vec::with_capacity(22 + 28);
    emit_l2(&mut out, l2, ethertype::ARP);
    out.extend_from_slice(&[0, 1, 0x08, 0x00, 6, 4]); // htype Ethernet, ptype IPv4, hlen, plen
    out.extend_from_slice(&op.to_be_bytes());
    out.extend_from_slice(&sha.0);
    out.extend_from_slice(&spa.octets());
    out.extend_from_slice(&tha.0);
    out.extend_from_slice(&tpa.octets());
    out
}

/// The solicited-node multicast address of `addr` (RFC 4291 §2.7.1): `ff02::1:ffXX:XXXX`.
pub fn solicited_node(addr: &Ipv6Addr) -> Ipv6Addr {
    let o = addr.octets();
    Ipv6Addr::from([
        0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0xff, o[13], o[14], o[15],
    ])
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
    let mut body = [0u8; 24];
    body[..16].copy_from_slice(&target.octets());
    let len = match source_lladdr {
        Some(mac) => {
            body[16..18].copy_from_slice(&[1, 1]); // Source Link-Layer Address, 1 unit
            body[18..].copy_from_slice(&mac.0);
            24
        }
        None => 16,
    };
    let l4 = L4::Icmpv6 {
        msg_type: 135,
        code: 0,
        rest: 0,
        payload: &body[..len],
    };
    ipv6(l2, src, &solicited_node(target), 255, &[], &l4)
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
    let mut body = [0u8; 24];
    body[..16].copy_from_slice(&target.octets());
    body[16..18].copy_from_slice(&[2, 1]); // Target Link-Layer Address, 1 unit
    body[18..].copy_from_slice(&target_lladdr.0);
    let rest = (u32::from(solicited) << 30) | (u32::from(override_) << 29);
    let l4 = L4::Icmpv6 {
        msg_type: 136,
        code: 0,
        rest,
        payload: &body,
    };
    ipv6(l2, src, dst, 255, &[], &l4)
}

/// A tiny deterministic PRNG (SplitMix64) for reproducible keys, nonces and test traffic.
#[derive(Debug, Clone)]
pub struct SplitMix64(pub u64);

impl SplitMix64 {
    /// The next 64 pseudo-random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A value in `0..n` (0 when `n` is 0); the modulo bias is irrelevant for traffic shaping.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64().checked_rem(n).unwrap_or(0)
    }

    /// Fills `buf` with pseudo-random bytes.
    pub fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let r = self.next_u64().to_be_bytes();
            chunk.copy_from_slice(&r[..chunk.len()]);
        }
    }

    /// `n` pseudo-random bytes.
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        let mut v = vec![0; n];
        self.fill(&mut v);
        v
    }
}

/// IKEv2 transform and protocol numbers used in the crafted SA payloads (RFC 7296 §3.3.2).
mod ike_ids {
    pub const PROTO_IKE: u8 = 1;
    pub const TRANS_ENCR: u8 = 1;
    pub const TRANS_PRF: u8 = 2;
    pub const TRANS_DH: u8 = 4;
    pub const ENCR_AES_GCM_16: u16 = 20;
    pub const PRF_HMAC_SHA2_256: u16 = 5;
    /// Key Length attribute in TV form (AF bit set).
    pub const ATTR_KEY_LENGTH: u16 = 0x800e;
}

/// The largest body an IKE payload can carry (payload length is 16 bits).
const IKE_MAX_PAYLOAD_BODY: usize = u16::MAX as usize - 4;

/// Builds an IKE message: header, then payloads chained by their Next Payload fields.
struct IkeBuilder {
    msg: Vec<u8>,
    /// Where the previous Next Payload field is (header byte 16 at first).
    next_at: usize,
}

impl IkeBuilder {
    fn new(spi_i: u64, spi_r: u64, exchange: u8, flags: u8, message_id: u32) -> Self {
        let mut msg = Vec::with_capacity(512);
        msg.extend_from_slice(&spi_i.to_be_bytes());
        msg.extend_from_slice(&spi_r.to_be_bytes());
        msg.extend_from_slice(&[payload_type::NONE, 0x20, exchange, flags]); // version 2.0
        msg.extend_from_slice(&message_id.to_be_bytes());
        msg.extend_from_slice(&[0, 0, 0, 0]);
        IkeBuilder { msg, next_at: 16 }
    }

    /// Appends a payload of type `ptype` whose body is `parts` concatenated (cut to fit).
    fn payload(&mut self, ptype: u8, parts: &[&[u8]]) -> &mut Self {
        self.msg[self.next_at] = ptype;
        self.next_at = self.msg.len();
        let at = self.msg.len();
        self.msg.extend_from_slice(&[payload_type::NONE, 0, 0, 0]);
        let mut room = IKE_MAX_PAYLOAD_BODY;
        for p in parts {
            let p = p.get(..room).unwrap_or(p);
            self.msg.extend_from_slice(p);
            room -= p.len();
        }
        let len = (self.msg.len() - at) as u16;
        self.msg[at + 2..at + 4].copy_from_slice(&len.to_be_bytes());
        self
    }

    fn notify(&mut self, notify: u16, data: &[u8]) -> &mut Self {
        // Protocol ID 0, SPI size 0, type.
        let [a, b] = notify.to_be_bytes();
        self.payload(payload_type::NOTIFY, &[&[0, 0, a, b], data])
    }

    fn finish(mut self) -> Vec<u8> {
        let len = u32::try_from(self.msg.len()).unwrap_or(u32::MAX);
        self.msg[24..28].copy_from_slice(&len.to_be_bytes());
        self.msg
    }
}

/// An SA payload body: one IKE proposal with AES-GCM-16/256, PRF-HMAC-SHA2-256 and `group`.
fn ike_sa_proposal(group: u16) -> Vec<u8> {
    use ike_ids::*;
    let transform = |last: bool, ttype: u8, id: u16, attr: Option<(u16, u16)>| {
        let len: u16 = if attr.is_some() { 12 } else { 8 };
        let mut t = vec![if last { 0 } else { 3 }, 0];
        t.extend_from_slice(&len.to_be_bytes());
        t.extend_from_slice(&[ttype, 0]);
        t.extend_from_slice(&id.to_be_bytes());
        if let Some((a, v)) = attr {
            t.extend_from_slice(&a.to_be_bytes());
            t.extend_from_slice(&v.to_be_bytes());
        }
        t
    };
    let mut transforms = transform(
        false,
        TRANS_ENCR,
        ENCR_AES_GCM_16,
        Some((ATTR_KEY_LENGTH, 256)),
    );
    transforms.extend(transform(false, TRANS_PRF, PRF_HMAC_SHA2_256, None));
    transforms.extend(transform(true, TRANS_DH, group, None));
    // Last proposal, reserved, length, proposal #1, IKE, SPI size 0, 3 transforms.
    let mut p = vec![0, 0];
    p.extend_from_slice(&((8 + transforms.len()) as u16).to_be_bytes());
    p.extend_from_slice(&[1, PROTO_IKE, 0, 3]);
    p.extend(transforms);
    p
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
    b.msg[b.next_at] = inner_first;
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

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const CLIENT: Ipv4Addr = Ipv4Addr::new(198, 18, 64, 1);
    const CLIENT6: Ipv6Addr = Ipv6Addr::new(0x2001, 2, 0, 0x64, 0, 0, 0, 1);

    fn l2() -> L2 {
        L2::new(lab::ROUTER_MAC, lab::CLIENT_PORT_MAC)
    }

    fn be16(b: &[u8], at: usize) -> u16 {
        u16::from_be_bytes([b[at], b[at + 1]])
    }

    /// Checks an untagged IPv4 frame's lengths and checksums; returns (protocol, L4 bytes).
    fn verify_ipv4(frame: &[u8], l2_len: usize) -> (u8, Vec<u8>) {
        let ip = &frame[l2_len..];
        assert_eq!(ip[0] >> 4, 4);
        let ihl = usize::from(ip[0] & 0x0f) * 4;
        assert_eq!(usize::from(be16(ip, 2)), ip.len(), "total length");
        assert_eq!(checksum(&ip[..ihl]), 0, "IPv4 header checksum");
        let src = Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]);
        let dst = Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19]);
        let l4 = &ip[ihl..];
        let proto = ip[9];
        let pseudo = pseudo_header_v4(src, dst, proto, l4.len() as u16);
        match proto {
            ip_proto::UDP => {
                assert_eq!(usize::from(be16(l4, 4)), l4.len(), "UDP length");
                if be16(l4, 6) != 0 {
                    assert_eq!(!fold(sum(pseudo, l4)), 0, "UDP checksum");
                }
            }
            ip_proto::TCP => assert_eq!(!fold(sum(pseudo, l4)), 0, "TCP checksum"),
            ip_proto::ICMP => assert_eq!(checksum(l4), 0, "ICMP checksum"),
            _ => {}
        }
        (proto, l4.to_vec())
    }

    /// Checks an IPv6 frame; returns (upper protocol, headers seen, L4 bytes).
    fn verify_ipv6(frame: &[u8], l2_len: usize) -> (u8, Vec<u8>, Vec<u8>) {
        let ip = &frame[l2_len..];
        assert_eq!(ip[0] >> 4, 6);
        assert_eq!(usize::from(be16(ip, 4)) + 40, ip.len(), "payload length");
        let src = Ipv6Addr::from(<[u8; 16]>::try_from(&ip[8..24]).unwrap());
        let dst = Ipv6Addr::from(<[u8; 16]>::try_from(&ip[24..40]).unwrap());
        let (mut next, mut at, mut chain) = (ip[6], 40, Vec::new());
        while matches!(next, 0 | 43 | 44 | 60) {
            chain.push(next);
            let len = if next == 44 {
                8
            } else {
                (usize::from(ip[at + 1]) + 1) * 8
            };
            next = ip[at];
            at += len;
        }
        let l4 = &ip[at..];
        if matches!(next, ip_proto::UDP | ip_proto::TCP | ip_proto::ICMPV6) {
            let pseudo = pseudo_header_v6(&src, &dst, next, l4.len() as u32);
            assert_eq!(!fold(sum(pseudo, l4)), 0, "upper-layer checksum");
        }
        (next, chain, l4.to_vec())
    }

    #[test]
    fn ipv4_udp_literal() {
        let opts = Ipv4Opts {
            ident: 0x1234,
            dont_frag: true,
            ..Ipv4Opts::default()
        };
        let l4 = L4::Udp {
            src: 500,
            dst: 500,
            payload: b"vpnlb",
        };
        let f = ipv4(&l2(), CLIENT, lab::VIP_V4, &opts, &l4);
        #[rustfmt::skip]
        let expected = [
            0x02, 0, 0, 0, 0x01, 0x01, 0x02, 0, 0, 0, 0x01, 0xfe, 0x08, 0x00,
            0x45, 0x00, 0x00, 0x21, 0x12, 0x34, 0x40, 0x00, 0x40, 0x11, 0x5c, 0x0e,
            198, 18, 64, 1, 198, 18, 0, 100,
            0x01, 0xf4, 0x01, 0xf4, 0x00, 0x0d, 0xe8, 0x84, b'v', b'p', b'n', b'l', b'b',
        ];
        assert_eq!(f, expected);
        verify_ipv4(&f, 14);
    }

    #[test]
    fn ipv4_tcp_syn_literal() {
        let l4 = L4::Tcp {
            src: 40000,
            dst: 443,
            seq: 1,
            ack: 0,
            flags: tcp_flags::SYN,
            payload: &[],
        };
        let f = ipv4(
            &l2(),
            Ipv4Addr::new(198, 18, 64, 2),
            lab::VIP_V4,
            &Ipv4Opts::default(),
            &l4,
        );
        assert_eq!(f.len(), 54);
        #[rustfmt::skip]
        let tcp = [
            0x9c, 0x40, 0x01, 0xbb, 0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x02, 0xfa, 0xf0, 0x4a, 0x6a,
            0, 0,
        ];
        assert_eq!(&f[34..], &tcp);
        assert_eq!(verify_ipv4(&f, 14).0, ip_proto::TCP);
    }

    #[test]
    fn ipv4_icmp_echo_and_raw_esp() {
        let l4 = L4::Icmpv4 {
            msg_type: 8,
            code: 0,
            rest: 0x0001_0002,
            payload: b"ping",
        };
        let f = ipv4(&l2(), CLIENT, lab::VIP_V4, &Ipv4Opts::default(), &l4);
        let (proto, icmp) = verify_ipv4(&f, 14);
        assert_eq!(proto, ip_proto::ICMP);
        assert_eq!(&icmp[..2], &[8, 0]);
        assert_eq!(&icmp[4..], &[0, 1, 0, 2, b'p', b'i', b'n', b'g']);

        let esp = L4::Esp {
            spi: 0xc0ffee01,
            seq: 7,
            payload: &[0xaa; 40],
        };
        let f = ipv4(&l2(), CLIENT, lab::VIP_V4, &Ipv4Opts::default(), &esp);
        let (proto, l4) = verify_ipv4(&f, 14);
        assert_eq!(proto, ip_proto::ESP);
        assert_eq!(&l4[..8], &[0xc0, 0xff, 0xee, 0x01, 0, 0, 0, 7]);
        assert_eq!(l4.len(), 48);
    }

    #[test]
    fn udp_checksum_zero_and_ffff() {
        let opts = Ipv4Opts {
            udp_checksum: false,
            ..Ipv4Opts::default()
        };
        let l4 = L4::Udp {
            src: 4500,
            dst: 4500,
            payload: &NATT_KEEPALIVE,
        };
        let f = ipv4(&l2(), CLIENT, lab::VIP_V4, &opts, &l4);
        assert_eq!(&f[40..42], &[0, 0]);
        assert_eq!(f[42], 0xff);
        // Find a payload whose checksum computes to 0: it must be sent as 0xffff.
        let found = (0..=u16::MAX).find_map(|v| {
            let p = v.to_be_bytes();
            let l4 = L4::Udp {
                src: 1,
                dst: 2,
                payload: &p,
            };
            let f = ipv4(&l2(), CLIENT, lab::VIP_V4, &Ipv4Opts::default(), &l4);
            (be16(&f, 40) == 0xffff).then_some(f)
        });
        let f = found.expect("some payload sums to zero");
        verify_ipv4(&f, 14);
    }

    #[test]
    fn ipv4_options_are_padded() {
        let opts = Ipv4Opts {
            options: vec![0x94, 0x04, 0x00, 0x00, 0x01], // Router Alert + NOP
            ..Ipv4Opts::default()
        };
        let l4 = L4::Raw {
            protocol: 253,
            payload: &[1, 2, 3],
        };
        let f = ipv4(&l2(), CLIENT, lab::VIP_V4, &opts, &l4);
        assert_eq!(f[14], 0x47); // IHL 7: 20 + 8
        assert_eq!(&f[34..42], &[0x94, 0x04, 0x00, 0x00, 0x01, 0, 0, 0]);
        assert_eq!(&f[42..], &[1, 2, 3]);
        verify_ipv4(&f, 14);
        // More than 40 option bytes: only 40 kept.
        let opts = Ipv4Opts {
            options: vec![1; 50],
            ..Ipv4Opts::default()
        };
        let f = ipv4(&l2(), CLIENT, lab::VIP_V4, &opts, &l4);
        assert_eq!(f[14], 0x4f);
        verify_ipv4(&f, 14);
    }

    #[test]
    fn oversized_payloads_are_cut_to_fit() {
        let big = vec![0x11; 70_000];
        let l4 = L4::Udp {
            src: 1,
            dst: 2,
            payload: &big,
        };
        let f = ipv4(&l2(), CLIENT, lab::VIP_V4, &Ipv4Opts::default(), &l4);
        assert_eq!(f.len(), 14 + 65_535);
        verify_ipv4(&f, 14);
        let f = ipv6(&l2(), &CLIENT6, &lab::VIP_V6, 64, &[], &l4);
        assert_eq!(f.len(), 14 + 40 + 65_535);
        verify_ipv6(&f, 14);
        // Extension headers that do not fit are dropped rather than mis-described.
        let ext = vec![Ipv6Ext::DestOpts(vec![0; 2046]); 40];
        let f = ipv6(&l2(), &CLIENT6, &lab::VIP_V6, 64, &ext, &l4);
        let (_, chain, _) = verify_ipv6(&f, 14);
        assert_eq!(chain.len(), 31);
    }

    #[test]
    fn vlan_tags_present() {
        let l4 = L4::Udp {
            src: 1,
            dst: 2,
            payload: &[],
        };
        let one = l2().with_vlan(Vlan::Single { vid: 100 });
        let f = ipv4(&one, CLIENT, lab::VIP_V4, &Ipv4Opts::default(), &l4);
        assert_eq!(&f[12..18], &[0x81, 0x00, 0x00, 100, 0x08, 0x00]);
        verify_ipv4(&f, 18);
        let two = l2().with_vlan(Vlan::Double {
            outer: 0x1001, // masked to 1
            inner: 4095,
        });
        let f = ipv6(&two, &CLIENT6, &lab::VIP_V6, 64, &[], &l4);
        assert_eq!(
            &f[12..22],
            &[0x88, 0xa8, 0x00, 0x01, 0x81, 0x00, 0x0f, 0xff, 0x86, 0xdd]
        );
        verify_ipv6(&f, 22);
    }

    #[test]
    fn ipv6_extension_chain() {
        let ext = [
            Ipv6Ext::HopByHop(vec![5, 2, 0, 0]), // Router Alert: 2+4 = 6, pad to 8 with... none
            Ipv6Ext::Routing {
                routing_type: 4,
                segments_left: 0,
                data: vec![0; 4],
            },
            Ipv6Ext::DestOpts(vec![0x1e, 1, 0xaa]), // 2+3 = 5, PadN 3
            Ipv6Ext::Fragment {
                offset: 0,
                more: false,
                ident: 9,
            },
        ];
        let l4 = L4::Udp {
            src: 500,
            dst: 500,
            payload: b"x",
        };
        let f = ipv6(&l2(), &CLIENT6, &lab::VIP_V6, 64, &ext, &l4);
        assert_eq!(&f[12..14], &[0x86, 0xdd]);
        assert_eq!(f[14 + 7], 64);
        let (next, chain, l4b) = verify_ipv6(&f, 14);
        assert_eq!(next, ip_proto::UDP);
        assert_eq!(chain, [0, 43, 60, 44]);
        assert_eq!(l4b.len(), 9);
        let e = &f[54..];
        assert_eq!(&e[..8], &[43, 0, 5, 2, 0, 0, 0x01, 0x00]); // PadN of 2
        assert_eq!(&e[8..16], &[60, 0, 4, 0, 0, 0, 0, 0]);
        assert_eq!(&e[16..24], &[44, 0, 0x1e, 1, 0xaa, 0x01, 0x01, 0x00]);
        assert_eq!(&e[24..32], &[17, 0, 0, 0, 0, 0, 0, 9]);
        // Pad1 case: 2 + 5 option bytes.
        let f = ipv6(
            &l2(),
            &CLIENT6,
            &lab::VIP_V6,
            64,
            &[Ipv6Ext::HopByHop(vec![0x1e, 3, 1, 2, 3])],
            &l4,
        );
        assert_eq!(&f[54..62], &[17, 0, 0x1e, 3, 1, 2, 3, 0]);
        verify_ipv6(&f, 14);
    }

    #[test]
    fn fragment_ipv4_reassembles() {
        let payload: Vec<u8> = (0..1600u32).map(|i| i as u8).collect();
        let l4 = L4::Udp {
            src: 4500,
            dst: 4500,
            payload: &payload,
        };
        let opts = Ipv4Opts {
            ident: 0xbeef,
            dont_frag: true,
            // Router Alert (copied, 4 bytes), timestamp-ish option without copy flag (4 bytes).
            options: vec![0x94, 0x04, 0, 0, 0x44, 0x04, 0, 0],
            ..Ipv4Opts::default()
        };
        let f = ipv4(
            &l2().with_vlan(Vlan::Single { vid: 7 }),
            CLIENT,
            lab::VIP_V4,
            &opts,
            &l4,
        );
        let frags = fragment_ipv4(&f, 1500);
        assert_eq!(frags.len(), 2);
        let mut data = Vec::new();
        for (i, fr) in frags.iter().enumerate() {
            assert_eq!(&fr[..18], &f[..18]);
            let ip = &fr[18..];
            assert!(ip.len() <= 1500);
            assert_eq!(checksum(&ip[..usize::from(ip[0] & 0xf) * 4]), 0);
            assert_eq!(be16(ip, 4), 0xbeef);
            let field = be16(ip, 6);
            assert_eq!(field & 0x4000, 0, "DF cleared");
            assert_eq!(usize::from(field & 0x1fff) * 8, data.len());
            assert_eq!(field & 0x2000 != 0, i == 0, "MF");
            assert_eq!(usize::from(be16(ip, 2)), ip.len());
            let ihl = usize::from(ip[0] & 0xf) * 4;
            assert_eq!(ihl, if i == 0 { 28 } else { 24 });
            if i == 1 {
                assert_eq!(&ip[20..24], &[0x94, 0x04, 0, 0]);
            }
            data.extend_from_slice(&ip[ihl..]);
        }
        assert_eq!(frags[0].len() - 18 - 28, 1472);
        assert_eq!(data, &f[18 + 28..]);
        // Fits: unchanged. Not IPv4 / too small an MTU: unchanged.
        assert_eq!(fragment_ipv4(&f, 2000), vec![f.clone()]);
        assert_eq!(fragment_ipv4(&f, 30), vec![f.clone()]);
        let arp = arp(
            &l2(),
            1,
            lab::ROUTER_MAC,
            CLIENT,
            EthernetAddress([0; 6]),
            CLIENT,
        );
        assert_eq!(fragment_ipv4(&arp, 20), vec![arp.clone()]);
    }

    #[test]
    fn fragment_ipv6_reassembles() {
        let payload: Vec<u8> = (0..3000u32).map(|i| (i * 7) as u8).collect();
        let l4 = L4::Udp {
            src: 4500,
            dst: 4500,
            payload: &payload,
        };
        let ext = [
            Ipv6Ext::HopByHop(vec![]),
            Ipv6Ext::DestOpts(vec![]),
            Ipv6Ext::Routing {
                routing_type: 4,
                segments_left: 0,
                data: vec![],
            },
            Ipv6Ext::DestOpts(vec![0x1e, 0]),
        ];
        let f = ipv6(&l2(), &CLIENT6, &lab::VIP_V6, 64, &ext, &l4);
        let frags = fragment_ipv6(&f, 1280, 0x1234_5678);
        assert_eq!(frags.len(), 3);
        let mut data = Vec::new();
        for (i, fr) in frags.iter().enumerate() {
            let ip = &fr[14..];
            assert!(ip.len() <= 1280);
            assert_eq!(usize::from(be16(ip, 4)) + 40, ip.len());
            // Unfragmentable: HBH, DestOpts, Routing (24 bytes); then the Fragment header.
            assert_eq!(&ip[..4], &f[14..18]);
            assert_eq!(ip[6], 0);
            assert_eq!(&ip[40..42], &f[54..56]);
            assert_eq!(ip[48], 43);
            assert_eq!(ip[56], 44, "Routing now names the Fragment header");
            let frag = &ip[64..72];
            assert_eq!(
                frag[0], 60,
                "Fragment names the trailing Destination Options"
            );
            let field = be16(frag, 2);
            assert_eq!(usize::from(field >> 3) * 8, data.len());
            assert_eq!(field & 1 != 0, i < 2);
            assert_eq!(&frag[4..], &[0x12, 0x34, 0x56, 0x78]);
            data.extend_from_slice(&ip[72..]);
        }
        assert_eq!(data, &f[14 + 64..]);
        // No extension headers: the Fragment header goes right after the IPv6 header.
        let f = ipv6(&l2(), &CLIENT6, &lab::VIP_V6, 64, &[], &l4);
        let frags = fragment_ipv6(&f, 1500, 1);
        assert_eq!(frags.len(), 3);
        assert_eq!(frags[0][14 + 6], 44);
        assert_eq!(frags[0][54], 17);
        assert_eq!(frags[0].len(), 14 + 1496);
        assert_eq!(fragment_ipv6(&f, 9000, 1), vec![f.clone()]);
    }

    #[test]
    fn arp_literal() {
        let f = arp(
            &L2::new(lab::ROUTER_MAC, EthernetAddress::BROADCAST),
            1,
            lab::ROUTER_MAC,
            Ipv4Addr::new(198, 18, 0, 1),
            EthernetAddress([0; 6]),
            lab::VIP_V4,
        );
        #[rustfmt::skip]
        let expected = [
            0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02, 0, 0, 0, 0x01, 0xfe, 0x08, 0x06,
            0, 1, 0x08, 0, 6, 4, 0, 1, 0x02, 0, 0, 0, 0x01, 0xfe, 198, 18, 0, 1,
            0, 0, 0, 0, 0, 0, 198, 18, 0, 100,
        ];
        assert_eq!(f, expected);
        let mut padded = f.clone();
        pad_to_min_frame(&mut padded);
        assert_eq!(padded.len(), 60);
        assert_eq!(&padded[..42], &expected);
    }

    #[test]
    fn neighbor_solicit_literal() {
        let target = lab::VIP_V6;
        let sn = solicited_node(&target);
        assert_eq!(sn, "ff02::1:ff00:100".parse::<Ipv6Addr>().unwrap());
        let l2 = L2::new(lab::ROUTER_MAC, EthernetAddress::ipv6_multicast(&sn));
        let f = neighbor_solicit(&l2, &CLIENT6, &target, Some(lab::ROUTER_MAC));
        assert_eq!(&f[..6], &[0x33, 0x33, 0xff, 0x00, 0x01, 0x00]);
        assert_eq!(f[14 + 7], 255);
        assert_eq!(&f[14 + 24..14 + 40], &sn.octets());
        let icmp = &f[54..];
        assert_eq!(&icmp[..8], &[135, 0, 0x33, 0x35, 0, 0, 0, 0]);
        assert_eq!(&icmp[8..24], &target.octets());
        assert_eq!(&icmp[24..], &[1, 1, 0x02, 0, 0, 0, 0x01, 0xfe]);
        verify_ipv6(&f, 14);
        let dad = neighbor_solicit(&l2, &Ipv6Addr::UNSPECIFIED, &target, None);
        assert_eq!(dad.len(), 54 + 24);
        verify_ipv6(&dad, 14);

        let na = neighbor_advert(
            &l2,
            &target,
            &CLIENT6,
            &target,
            lab::CLIENT_PORT_MAC,
            true,
            true,
        );
        let icmp = &na[54..];
        assert_eq!(&icmp[..1], &[136]);
        assert_eq!(&icmp[4..8], &[0x60, 0, 0, 0]);
        assert_eq!(&icmp[24..], &[2, 1, 0x02, 0, 0, 0, 0x01, 0x01]);
        verify_ipv6(&na, 14);
    }

    /// Walks an IKE message: checks the header length and payload lengths; returns
    /// (payload type, body) in order.
    fn ike_payloads(msg: &[u8]) -> Vec<(u8, Vec<u8>)> {
        assert_eq!(msg[17], 0x20, "version 2.0");
        assert_eq!(
            u32::from_be_bytes(msg[24..28].try_into().unwrap()) as usize,
            msg.len()
        );
        let (mut next, mut at, mut out) = (msg[16], 28, Vec::new());
        while next != 0 {
            let len = usize::from(be16(msg, at + 2));
            assert!(len >= 4 && at + len <= msg.len(), "payload length");
            out.push((next, msg[at + 4..at + len].to_vec()));
            if next == payload_type::SK {
                at += len;
                break;
            }
            next = msg[at];
            at += len;
        }
        assert_eq!(at, msg.len(), "payloads fill the message");
        out
    }

    #[test]
    fn ike_sa_init_request_layout() {
        let nonce = [0x4e; 32];
        let frag: &[u8] = &[];
        let msg = ike_sa_init_request(
            0x0102_0304_0506_0708,
            &nonce,
            19,
            64,
            &[(notify_type::IKEV2_FRAGMENTATION_SUPPORTED, frag)],
        );
        assert_eq!(
            &msg[..16],
            &[1, 2, 3, 4, 5, 6, 7, 8, 0, 0, 0, 0, 0, 0, 0, 0]
        );
        assert_eq!(&msg[18..24], &[34, 0x08, 0, 0, 0, 0]);
        let p = ike_payloads(&msg);
        let types: Vec<u8> = p.iter().map(|(t, _)| *t).collect();
        assert_eq!(types, [33, 34, 40, 41, 41, 41]);
        #[rustfmt::skip]
        let sa = [
            0, 0, 0, 36, 1, 1, 0, 3,
            3, 0, 0, 12, 1, 0, 0, 20, 0x80, 0x0e, 0x01, 0x00,
            3, 0, 0, 8, 2, 0, 0, 5,
            0, 0, 0, 8, 4, 0, 0, 19,
        ];
        assert_eq!(p[0].1, sa);
        assert_eq!(&p[1].1[..4], &[0, 19, 0, 0]);
        assert_eq!(p[1].1.len(), 4 + 64);
        assert_eq!(p[2].1, nonce);
        assert_eq!(&p[3].1[..4], &[0, 0, 0x40, 0x04]);
        assert_eq!(p[3].1.len(), 24);
        assert_eq!(&p[4].1[..4], &[0, 0, 0x40, 0x05]);
        assert_eq!(p[5].1, [0, 0, 0x40, 0x2e]);
        assert_eq!(msg.len(), 28 + 40 + 72 + 36 + 28 + 28 + 8);
    }

    #[test]
    fn ike_sa_init_response_and_message() {
        let msg = ike_sa_init_response(1, 2, &[0; 32], 31, 32, &[]);
        assert_eq!(&msg[8..16], &2u64.to_be_bytes());
        assert_eq!(msg[19], ike_flags::RESPONSE);
        assert_eq!(ike_payloads(&msg).len(), 5);
        // Over-long KE data is cut to fit the payload length.
        let msg = ike_sa_init_request(1, &[0; 32], 31, 100_000, &[]);
        let p = ike_payloads(&msg);
        assert_eq!(p[1].1.len(), 65_531);

        let body = vec![0xee; 1500];
        let m = ike_message(1, 2, exchange::IKE_AUTH, ike_flags::INITIATOR, 1, &body);
        assert_eq!(&m[16..20], &[46, 0x20, 35, 0x08]);
        assert_eq!(&m[20..24], &[0, 0, 0, 1]);
        assert_eq!(m[28], payload_type::IDI);
        let p = ike_payloads(&m);
        assert_eq!(p, vec![(46, body.clone())]);
        let r = ike_message(1, 2, exchange::IKE_AUTH, ike_flags::RESPONSE, 1, &body);
        assert_eq!(r[28], payload_type::IDR);
        let i = ike_message(1, 2, exchange::INFORMATIONAL, 0, 2, &[]);
        assert_eq!((i[28], i.len()), (0, 32));

        let wrapped = non_esp_marker(&m);
        assert_eq!(&wrapped[..4], &[0, 0, 0, 0]);
        assert_eq!(&wrapped[4..], &m[..]);
    }

    #[test]
    fn esp_payload_layout() {
        let e = esp_payload(0xcafe_0001, 42, 120);
        assert_eq!(e.len(), 120);
        assert_eq!(&e[..8], &[0xca, 0xfe, 0, 1, 0, 0, 0, 42]);
        assert_ne!(&e[8..16], &[0; 8]);
        assert_eq!(e, esp_payload(0xcafe_0001, 42, 120), "deterministic");
        assert_ne!(e[8..], esp_payload(0xcafe_0001, 43, 120)[8..]);
        assert_eq!(esp_payload(1, 1, 0).len(), 8);
    }

    /// Returns (type, data) of each extension in a (D)TLS ClientHello body's extension block.
    fn extensions(mut ext: &[u8]) -> Vec<(u16, Vec<u8>)> {
        let mut out = Vec::new();
        while !ext.is_empty() {
            let len = usize::from(be16(ext, 2));
            out.push((be16(ext, 0), ext[4..4 + len].to_vec()));
            ext = &ext[4 + len..];
        }
        out
    }

    #[test]
    fn tls_client_hello_layout() {
        let r = tls_client_hello(Some("vpn.example.net"));
        assert_eq!(&r[..3], &[22, 0x03, 0x01]);
        assert_eq!(usize::from(be16(&r, 3)), r.len() - 5);
        assert_eq!(r[5], 1);
        let hs_len = u32::from_be_bytes([0, r[6], r[7], r[8]]) as usize;
        assert_eq!(hs_len, r.len() - 9);
        let b = &r[9..];
        assert_eq!(&b[..2], &[3, 3]);
        assert_eq!(b[34], 32);
        let cs_at = 35 + 32;
        let cs_len = usize::from(be16(b, cs_at));
        let comp_at = cs_at + 2 + cs_len;
        assert_eq!(&b[comp_at..comp_at + 2], &[1, 0]);
        let ext_len = usize::from(be16(b, comp_at + 2));
        assert_eq!(comp_at + 4 + ext_len, b.len());
        let ext = extensions(&b[comp_at + 4..]);
        let types: Vec<u16> = ext.iter().map(|(t, _)| *t).collect();
        assert_eq!(types, [0, 10, 13, 43, 45, 51]);
        let mut sni = vec![0, 18, 0, 0, 15];
        sni.extend_from_slice(b"vpn.example.net");
        assert_eq!(ext[0].1, sni);
        assert_eq!(ext[3].1, [4, 3, 4, 3, 3]);
        assert_eq!(&ext[5].1[..6], &[0, 36, 0, 0x1d, 0, 32]);

        let no_sni = tls_client_hello(None);
        assert_eq!(usize::from(be16(&no_sni, 3)), no_sni.len() - 5);
        assert_eq!(no_sni.len(), r.len() - 24);
        let long = "a".repeat(10_000);
        let cut = tls_client_hello(Some(&long));
        assert_eq!(cut.len(), r.len() - 15 + MAX_SNI_LEN);
    }

    #[test]
    fn tls_server_hello_and_data() {
        let r = tls_server_hello();
        assert_eq!(&r[..3], &[22, 3, 3]);
        assert_eq!(usize::from(be16(&r, 3)), r.len() - 5);
        assert_eq!(r[5], 2);
        let b = &r[9..];
        assert_eq!(&b[67..70], &[0x13, 0x01, 0]);
        let ext = extensions(&b[72..]);
        assert_eq!(ext[0], (43, vec![3, 4]));
        assert_eq!(ext[1].0, 51);
        let d = tls_application_data(1, 300);
        assert_eq!(&d[..5], &[23, 3, 3, 0x01, 0x2c]);
        assert_eq!(d.len(), 305);
    }

    #[test]
    fn dtls_layouts() {
        let first = dtls_client_hello(&[], Some("vpn.example.net"));
        assert_eq!(&first[..13], &{
            let mut h = [22, 0xfe, 0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
            h[11..].copy_from_slice(&((first.len() - 13) as u16).to_be_bytes());
            h
        });
        let hs = &first[13..];
        assert_eq!(hs[0], 1);
        let len = u32::from_be_bytes([0, hs[1], hs[2], hs[3]]) as usize;
        assert_eq!(len, hs.len() - 12);
        assert_eq!(&hs[4..9], &[0, 0, 0, 0, 0]); // message_seq 0, fragment offset 0
        assert_eq!(&hs[9..12], &hs[1..4]);
        let b = &hs[12..];
        assert_eq!(&b[..2], &[0xfe, 0xfd]);
        assert_eq!((b[34], b[35]), (0, 0), "no session id, no cookie");

        let cookie = [0xc0; 20];
        let second = dtls_client_hello(&cookie, Some("vpn.example.net"));
        assert_eq!(second.len(), first.len() + 20);
        assert_eq!(&second[3..11], &[0, 0, 0, 0, 0, 0, 0, 1]);
        assert_eq!(&second[13 + 4..13 + 6], &[0, 1]);
        assert_eq!(second[13 + 12 + 35], 20);
        assert_eq!(&second[13 + 12 + 36..13 + 12 + 56], &cookie);
        let b = &second[25..];
        let cs_at = 36 + 20;
        let comp_at = cs_at + 2 + usize::from(be16(b, cs_at));
        let ext = extensions(&b[comp_at + 4..]);
        let types: Vec<u16> = ext.iter().map(|(t, _)| *t).collect();
        assert_eq!(types, [0, 10, 11, 13]);

        let hvr = dtls_hello_verify_request(&cookie);
        assert_eq!(hvr.len(), 13 + 12 + 3 + 20);
        assert_eq!(hvr[13], 3);
        assert_eq!(&hvr[25..28], &[0xfe, 0xff, 20]);

        let d = dtls_application_data(1, 5, 100);
        assert_eq!(&d[..13], &[23, 0xfe, 0xfd, 0, 1, 0, 0, 0, 0, 0, 5, 0, 100]);
        assert_eq!(d.len(), 113);
    }

    #[test]
    fn splitmix64_reference_values() {
        // First outputs for seed 0 from the reference implementation (Vigna).
        let mut r = SplitMix64(0);
        assert_eq!(r.next_u64(), 0xe220_a839_7b1d_cdaf);
        assert_eq!(r.next_u64(), 0x6e78_9e6a_a1b9_65f4);
        assert_eq!(r.below(0), 0);
        let mut b = [0u8; 11];
        SplitMix64(0).fill(&mut b);
        assert_eq!(&b[..8], &0xe220_a839_7b1d_cdafu64.to_be_bytes());
    }

    proptest! {
        #[test]
        fn ipv4_l4_checksums_verify(
            kind in 0..5u8,
            src in any::<u16>(),
            dst in any::<u16>(),
            payload in proptest::collection::vec(any::<u8>(), 0..300),
            ip_src in any::<[u8; 4]>(),
            ip_dst in any::<[u8; 4]>(),
            options in proptest::collection::vec(any::<u8>(), 0..44),
        ) {
            let l4 = match kind {
                0 => L4::Udp { src, dst, payload: &payload },
                1 => L4::Tcp { src, dst, seq: u32::from(src), ack: u32::from(dst), flags: dst, payload: &payload },
                2 => L4::Icmpv4 { msg_type: src as u8, code: dst as u8, rest: 7, payload: &payload },
                3 => L4::Esp { spi: u32::from(src), seq: 1, payload: &payload },
                // Raw: any protocol the verifier would not parse as UDP, TCP or ICMP.
                _ => L4::Raw {
                    protocol: match src as u8 { 1 | 6 | 17 => 253, p => p },
                    payload: &payload,
                },
            };
            let opts = Ipv4Opts { options, ..Ipv4Opts::default() };
            let f = ipv4(&l2(), ip_src.into(), ip_dst.into(), &opts, &l4);
            let (proto, l4b) = verify_ipv4(&f, 14);
            prop_assert_eq!(proto, l4.protocol());
            prop_assert_eq!(l4b.len(), l4.header_len() + payload.len());
            prop_assert!(l4b.ends_with(&payload));
        }

        #[test]
        fn ipv6_chain_and_checksums_verify(
            kinds in proptest::collection::vec(0..4u8, 0..5),
            lens in proptest::collection::vec(0..40usize, 5),
            payload in proptest::collection::vec(any::<u8>(), 0..300),
            icmp in any::<bool>(),
        ) {
            let ext: Vec<Ipv6Ext> = kinds.iter().zip(&lens).map(|(k, &n)| match k {
                0 => Ipv6Ext::HopByHop(vec![0x1e; n]),
                1 => Ipv6Ext::DestOpts(vec![0x1e; n]),
                2 => Ipv6Ext::Routing { routing_type: 4, segments_left: 0, data: vec![0; n] },
                _ => Ipv6Ext::Fragment { offset: n as u16, more: true, ident: 1 },
            }).collect();
            let l4 = if icmp {
                L4::Icmpv6 { msg_type: 128, code: 0, rest: 1, payload: &payload }
            } else {
                L4::Udp { src: 1, dst: 2, payload: &payload }
            };
            let f = ipv6(&l2(), &CLIENT6, &lab::VIP_V6, 64, &ext, &l4);
            let (next, chain, l4b) = verify_ipv6(&f, 14);
            prop_assert_eq!(next, l4.protocol());
            let expected: Vec<u8> = ext.iter().map(Ipv6Ext::protocol).collect();
            prop_assert_eq!(chain, expected);
            prop_assert_eq!(l4b.len(), 8 + payload.len());
        }

        #[test]
        fn fragments_reassemble(
            len in 0..4000usize,
            mtu in 68..2000usize,
            v6 in any::<bool>(),
        ) {
            let payload: Vec<u8> = (0..len).map(|i| (i * 31 % 251) as u8).collect();
            let l4 = L4::Udp { src: 1, dst: 2, payload: &payload };
            let (f, hdr) = if v6 {
                (ipv6(&l2(), &CLIENT6, &lab::VIP_V6, 64, &[], &l4), 54)
            } else {
                (ipv4(&l2(), CLIENT, lab::VIP_V4, &Ipv4Opts::default(), &l4), 34)
            };
            let frags = if v6 { fragment_ipv6(&f, mtu, 5) } else { fragment_ipv4(&f, mtu) };
            if f.len() - 14 <= mtu {
                prop_assert_eq!(frags, vec![f]);
            } else {
                let mut data = Vec::new();
                for fr in &frags {
                    prop_assert!(fr.len() - 14 <= mtu);
                    let (off, start) = if v6 {
                        (usize::from(be16(fr, hdr + 2) >> 3) * 8, hdr + 8)
                    } else {
                        prop_assert_eq!(checksum(&fr[14..34]), 0);
                        (usize::from(be16(fr, 20) & 0x1fff) * 8, hdr)
                    };
                    prop_assert_eq!(off, data.len());
                    data.extend_from_slice(&fr[start..]);
                }
                prop_assert_eq!(&data[..], &f[hdr..]);
            }
        }

        #[test]
        fn fragmenting_garbage_never_panics(
            frame in proptest::collection::vec(any::<u8>(), 0..200),
            mtu in 0..300usize,
        ) {
            let _ = fragment_ipv4(&frame, mtu);
            let _ = fragment_ipv6(&frame, mtu, 1);
            let mut v4 = frame.clone();
            if v4.len() > 14 { v4[12] = 0x08; v4[13] = 0; v4[14] = 0x45; }
            let _ = fragment_ipv4(&v4, mtu);
            let mut v6 = frame;
            if v6.len() > 14 { v6[12] = 0x86; v6[13] = 0xdd; v6[14] = 0x60; }
            let _ = fragment_ipv6(&v6, mtu, 1);
        }

        #[test]
        fn app_builders_never_panic(
            sni in proptest::option::of(".{0,300}"),
            cookie in proptest::collection::vec(any::<u8>(), 0..300),
            ke in 0..2000usize,
            len in 0..70_000usize,
        ) {
            let r = tls_client_hello(sni.as_deref());
            prop_assert_eq!(usize::from(be16(&r, 3)), r.len() - 5);
            let d = dtls_client_hello(&cookie, sni.as_deref());
            prop_assert_eq!(usize::from(be16(&d, 11)), d.len() - 13);
            let m = ike_sa_init_request(1, &[0; 32], 19, ke, &[(16430, &cookie)]);
            prop_assert_eq!(ike_payloads(&m).len(), 6);
            let _ = tls_application_data(1, len);
            let _ = dtls_application_data(1, 1, len);
            prop_assert_eq!(esp_payload(1, 2, len).len(), len.max(8));
        }
    }
}
