//! The last stage: a frame to transmit must fit its egress port's IP MTU. What does not fit is
//! fragmented (IPv4 without DF: the I/O layer cuts it, see [`crate::fragment`]) or turned, in
//! place, into an ICMP "fragmentation needed" (IPv4 with DF, RFC 792 / RFC 1191) or ICMPv6
//! "packet too big" (RFC 4443 §3.2) back to its sender, out of the port it came in on, at a
//! bounded rate per worker.
//!
//! The check runs on the final frame, after the NAT rewrite: the rewrite never changes the IP
//! length, but the egress port decides the MTU. The sender must recognise the packet quoted in
//! the error as its own, so the frame's first bytes are saved before the rewrite (only for
//! frames longer than the smallest MTU: nothing is copied for the rest) and put back first.

use std::net::IpAddr;

use crate::counters::DropReason;
use crate::fragment::{FragError, Fragments};
use crate::frame::Frame;
use crate::model::Snapshot;
use crate::pipeline::parse::{parse_v4, parse_v6, Plan, L3};
use crate::pipeline::{State, Verdict};
use crate::wire::ethernet::{ethertype, EthernetFrame};
use crate::wire::icmp::{self, icmpv4_type, Icmpv4Packet, Icmpv4Repr};
use crate::wire::icmpv6::{self, icmpv6_type, Icmpv6Packet, Icmpv6Repr};
use crate::wire::ip_proto;
use crate::wire::ipv4::{Ipv4Packet, Ipv4Repr, IPV4_HEADER_LEN};
use crate::wire::ipv6::{Ipv6Packet, Ipv6Repr, IPV6_HEADER_LEN};

/// ICMP errors about packets too big that one worker sends per second (and at most at once):
/// what a sender needs to adapt, not enough to make the appliance an amplifier.
pub const TOO_BIG_ERRORS_PER_SECOND: u32 = 100;

/// Bytes of a frame saved before the rewrite: the Ethernet header with two tags, an IP header
/// with options or extension headers, and the transport checksum behind them, which are all
/// the rewrite touches.
const SAVED: usize = 256;

/// An ICMP error's header lengths (IP and ICMP) and the longest error each family may send:
/// RFC 1812 §4.3.2.3 (576 bytes), RFC 4443 §2.4 (c) (the IPv6 minimum MTU, 1280).
const ICMPV4_ERROR_HEADERS: usize = IPV4_HEADER_LEN + 8;
const ICMPV6_ERROR_HEADERS: usize = IPV6_HEADER_LEN + 8;
const ICMPV4_ERROR_MAX: usize = 576;
const ICMPV6_ERROR_MAX: usize = 1280;

/// The TTL or hop limit of the errors the appliance sends.
const ERROR_TTL: u8 = 64;

/// DSCP of the errors (class selector 6, "internetwork control", as routers mark them).
const ERROR_DSCP: u8 = 0xc0;

/// The first bytes of the frame in hand as received (see the module's note).
pub(super) struct SavedHead {
    bytes: [u8; SAVED],
    len: usize,
}

impl SavedHead {
    pub(super) fn new() -> SavedHead {
        SavedHead {
            bytes: [0; SAVED],
            len: 0,
        }
    }

    #[cold]
    pub(super) fn save(&mut self, frame: &[u8]) {
        self.len = frame.len().min(SAVED);
        self.bytes[..self.len].copy_from_slice(&frame[..self.len]);
    }
}

/// A token bucket refilled every second (the pipeline's clock has seconds): at most
/// [`TOO_BIG_ERRORS_PER_SECOND`] errors in any second, with no allocation and no clock read.
pub(super) struct ErrorBudget {
    tokens: u32,
    second: u32,
}

impl ErrorBudget {
    pub(super) fn new() -> ErrorBudget {
        ErrorBudget {
            tokens: TOO_BIG_ERRORS_PER_SECOND,
            second: 0,
        }
    }

    fn take(&mut self, now: u32) -> bool {
        if now != self.second {
            let refill = now
                .wrapping_sub(self.second)
                .saturating_mul(TOO_BIG_ERRORS_PER_SECOND);
            self.tokens = self
                .tokens
                .saturating_add(refill)
                .min(TOO_BIG_ERRORS_PER_SECOND);
            self.second = now;
        }
        let ok = self.tokens > 0;
        self.tokens = self.tokens.saturating_sub(1);
        ok
    }
}

/// The IP MTU of `port` (`u16::MAX`, no limit, for a port the snapshot does not know).
#[inline(always)]
pub(super) fn port_mtu(snap: &Snapshot, port: u16) -> u16 {
    snap.spec
        .ports
        .get(usize::from(port))
        .map_or(u16::MAX, |p| p.mtu)
}

/// Whether a frame of `len` bytes may be longer than some port's MTU, so that pass 2 saves its
/// head before rewriting it. Short frames (nearly all) skip everything here.
#[inline(always)]
pub(super) fn may_exceed(snap: &Snapshot, len: usize) -> bool {
    len > usize::from(snap.min_mtu) + 14
}

/// Whether `frame` (Ethernet, as it leaves) fits `port`'s IP MTU; a frame that cannot be read
/// fits (whatever it is, the egress check has nothing to say about it).
pub(super) fn fits(snap: &Snapshot, port: u16, frame: &[u8]) -> bool {
    l2_len(frame).is_none_or(|(l2, _)| frame.len() - l2 <= usize::from(port_mtu(snap, port)))
}

/// Whether `frame` is IPv4 without DF: a datagram this appliance may fragment.
pub(super) fn may_fragment(frame: &[u8]) -> bool {
    let Some((l2, ethertype::IPV4)) = l2_len(frame) else {
        return false;
    };
    frame
        .get(l2..)
        .and_then(|ip| crate::wire::ipv4::Ipv4Packet::new_checked(ip).ok())
        .is_some_and(|p| !p.dont_frag())
}

/// Length of the Ethernet header (tags included) of a frame the pipeline wrote or accepted.
fn l2_len(frame: &[u8]) -> Option<(usize, u16)> {
    let eth = EthernetFrame::new_checked(frame).ok()?;
    Some((eth.header_len(), eth.ethertype()))
}

impl State {
    /// The egress check of a frame pass 2 sends out of `port` (`verdict` is its `Tx`):
    /// unchanged when it fits, else fragmented, answered with an ICMP error or dropped.
    #[cold]
    #[inline(never)]
    pub(super) fn egress<F: Frame>(
        &mut self,
        snap: &Snapshot,
        now: u32,
        rx_port: u16,
        port: u16,
        plan: &Plan,
        frame: &mut F,
    ) -> Verdict {
        let mtu = port_mtu(snap, port);
        let Some((l2, kind)) = l2_len(frame.bytes()) else {
            return Verdict::Tx { port };
        };
        if frame.bytes().len() - l2 <= usize::from(mtu) {
            return Verdict::Tx { port };
        }
        match kind {
            ethertype::IPV4 => match Fragments::plan(frame.bytes(), mtu) {
                Ok(f) => {
                    let count = f.count() as u64;
                    self.counters.mtu.fragmented += 1;
                    self.counters.mtu.fragments += count;
                    self.counters.tx_packets += count;
                    self.counters.tx_bytes += f.total_len() as u64;
                    Verdict::Fragment { port, mtu }
                }
                Err(FragError::DontFragment) => self.too_big(snap, now, rx_port, mtu, plan, frame),
                Err(FragError::BadOptions) => Verdict::Drop(DropReason::BadHeader),
                Err(FragError::OffsetOverflow) => Verdict::Drop(DropReason::BadLength),
                Err(FragError::NotIpv4 | FragError::MtuTooSmall) => {
                    Verdict::Drop(DropReason::MtuExceeded)
                }
            },
            ethertype::IPV6 => self.too_big(snap, now, rx_port, mtu, plan, frame),
            _ => Verdict::Drop(DropReason::MtuExceeded),
        }
    }

    /// A packet that must not be fragmented here: its sender hears of the MTU (once the
    /// frame is back as received), unless the packet is itself an ICMP error, a non-first
    /// fragment, or not a forwarded packet at all (an answer of ours), or the budget is spent.
    fn too_big<F: Frame>(
        &mut self,
        snap: &Snapshot,
        now: u32,
        rx_port: u16,
        mtu: u16,
        plan: &Plan,
        frame: &mut F,
    ) -> Verdict {
        if !matches!(plan, Plan::Flow(_) | Plan::RoutedIcmp(_)) {
            return Verdict::Drop(DropReason::MtuExceeded);
        }
        if !self.restore(frame) {
            return Verdict::Drop(DropReason::MtuExceeded);
        }
        let Some(original) = erring(frame.bytes()) else {
            return Verdict::Drop(DropReason::MtuExceeded);
        };
        if !self.too_big_budget.take(now) {
            return Verdict::Drop(DropReason::IcmpRateLimited);
        }
        let v = write_too_big(snap, rx_port, mtu, &original, frame);
        if let Verdict::Tx { .. } = v {
            if original.v6 {
                self.counters.mtu.packet_too_big += 1;
            } else {
                self.counters.mtu.frag_needed += 1;
            }
        }
        v
    }

    /// Puts the saved head back over the rewritten frame, the Ethernet header's length
    /// included: the frame is then as it was received. False when it cannot be.
    fn restore<F: Frame>(&mut self, frame: &mut F) -> bool {
        let saved = &self.saved.bytes[..self.saved.len];
        let (Some((now_l2, _)), Some((was_l2, _))) = (l2_len(frame.bytes()), l2_len(saved)) else {
            return false;
        };
        let resized = if was_l2 > now_l2 {
            frame.push_front(was_l2 - now_l2)
        } else {
            frame.pull_front(now_l2 - was_l2)
        };
        match frame.bytes_mut().get_mut(..saved.len()) {
            Some(head) if resized => {
                head.copy_from_slice(saved);
                true
            }
            _ => false,
        }
    }
}

/// The received frame's IP layer, if an error may be sent about it: not an ICMP error, and a
/// whole packet or a first fragment (RFC 1812 §4.3.2.7, RFC 4443 §2.4 (e)).
fn erring(frame: &[u8]) -> Option<L3> {
    let (l2, kind) = l2_len(frame)?;
    let ip = frame.get(l2..)?;
    let l3 = match kind {
        ethertype::IPV4 => parse_v4(l2, ip, true).ok()?,
        ethertype::IPV6 => parse_v6(l2, ip).ok()?,
        _ => return None,
    };
    let l4 = l3.l4?;
    let t = frame.get(l4).copied();
    let is_error = match l3.protocol {
        ip_proto::ICMP if !l3.v6 => t.is_none_or(icmp::is_error),
        ip_proto::ICMPV6 if l3.v6 => t.is_none_or(icmpv6::is_error),
        _ => false,
    };
    (!is_error).then_some(l3)
}

/// Rewrites the received frame (`original` its IP layer) in place into the ICMP error telling
/// its sender the `mtu`, quoting as much of it as the error may carry, and turns it around on
/// the interface it came in on (the sender's MAC becomes the next hop).
fn write_too_big<F: Frame>(
    snap: &Snapshot,
    rx_port: u16,
    mtu: u16,
    original: &L3,
    frame: &mut F,
) -> Verdict {
    let Ok(eth) = EthernetFrame::new_checked(frame.bytes()) else {
        return Verdict::Drop(DropReason::MtuExceeded);
    };
    let Some(interface) = snap.interface(rx_port, eth.vlan()) else {
        return Verdict::Drop(DropReason::MtuExceeded);
    };
    let (sender_mac, our_mac) = (eth.src(), eth.dst());
    // The error comes from the receiving interface's own address (RFC 1812 §4.3.2.4), or,
    // where it has none, from the address the sender wrote to when that is ours (a VIP).
    let Some(from) = snap
        .source_address_for(interface, original.src)
        .or_else(|| snap.local(original.dst).map(|_| original.dst))
    else {
        return Verdict::Drop(DropReason::MtuExceeded);
    };
    let at = original.at;
    let ip_len = original.end - at;
    let (headers, max) = if original.v6 {
        (ICMPV6_ERROR_HEADERS, ICMPV6_ERROR_MAX)
    } else {
        (ICMPV4_ERROR_HEADERS, ICMPV4_ERROR_MAX)
    };
    // The error goes back out of the port the packet came in on: it must fit there too.
    let room = max.min(usize::from(port_mtu(snap, rx_port)));
    // The quote never makes the frame longer than it was (it is too big by construction).
    let quote = room
        .saturating_sub(headers)
        .min(ip_len.saturating_sub(headers));
    let bytes = frame.bytes_mut();
    bytes.copy_within(at..at + quote, at + headers);
    let our_mac = if our_mac.is_unicast() {
        our_mac
    } else {
        snap.interface_mac(interface)
    };
    bytes[..6].copy_from_slice(&sender_mac.0);
    bytes[6..12].copy_from_slice(&our_mac.0);
    let end = at + headers + quote;
    let msg = &mut bytes[at..end];
    match (from, original.src) {
        (IpAddr::V4(from), IpAddr::V4(to)) => {
            let ip = Ipv4Repr {
                dscp_ecn: ERROR_DSCP,
                ..Ipv4Repr::new(from, to, ip_proto::ICMP, 8 + quote, ERROR_TTL)
            };
            ip.emit(&mut Ipv4Packet::new_unchecked(&mut msg[..IPV4_HEADER_LEN]));
            let icmp = Icmpv4Repr {
                msg_type: icmpv4_type::DEST_UNREACHABLE,
                code: icmp::CODE_FRAG_NEEDED,
                // RFC 1191: the next-hop MTU in the low 16 bits.
                rest_of_header: u32::from(mtu),
            };
            icmp.emit(
                &mut Icmpv4Packet::new_unchecked(&mut msg[IPV4_HEADER_LEN..]),
                |_| {},
            );
        }
        (IpAddr::V6(from), IpAddr::V6(to)) => {
            let ip = Ipv6Repr {
                traffic_class: ERROR_DSCP,
                ..Ipv6Repr::new(from, to, ip_proto::ICMPV6, 8 + quote, ERROR_TTL)
            };
            ip.emit(&mut Ipv6Packet::new_unchecked(&mut msg[..IPV6_HEADER_LEN]));
            let icmp = Icmpv6Repr {
                msg_type: icmpv6_type::PACKET_TOO_BIG,
                code: 0,
                rest_of_header: u32::from(mtu),
            };
            icmp.emit(
                &mut Icmpv6Packet::new_unchecked(&mut msg[IPV6_HEADER_LEN..]),
                &from,
                &to,
                |_| {},
            );
        }
        _ => return Verdict::Drop(DropReason::MtuExceeded),
    }
    if !frame.truncate(end) {
        return Verdict::Drop(DropReason::MtuExceeded);
    }
    Verdict::Tx { port: rx_port }
}
