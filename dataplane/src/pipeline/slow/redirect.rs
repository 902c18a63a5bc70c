//! Redirect mode (RFC 5685): an IKE_SA_INIT answered in place with a REDIRECT to a gateway.

use crate::pipeline::hash_client;
use crate::pipeline::ipv4_at;
use crate::pipeline::ipv6_at;
use crate::pipeline::parse::Redirect;
use crate::pipeline::parse::{Flow, Proof};
use crate::pipeline::slow::answer::answer_mac;
use crate::pipeline::slow::answer::reply_l2;
use crate::pipeline::State;
use crate::pipeline::Verdict;
use std::net::IpAddr;

use crate::affinity::{self};
use crate::counters::DropReason;
use crate::frame::Frame;
use crate::model::Snapshot;
use crate::redirect::{self, Choice, Fallback};
use crate::schedule::GatewayState;
use crate::wire::ipv4::{Ipv4Packet, Ipv4Repr, IPV4_HEADER_LEN};
use crate::wire::ipv6::{Ipv6Packet, Ipv6Repr, IPV6_HEADER_LEN};
use crate::wire::udp::{UdpPacket, UdpRepr, UDP_HEADER_LEN};
use crate::wire::{self, ip_proto};

/// The TTL or hop limit of the answer.
const ANSWER_TTL: u8 = 64;

/// Writes the REDIRECT answer to the request `r` over it: IP (without options or extension
/// headers) and UDP headers back to the client, from the VIP and the IKE port, and the IKE
/// response; the frame is cut to the answer's length. Nothing is answered (and the frame is
/// left as it is) for a request with a bad UDP checksum or one shorter than its answer.
pub(in crate::pipeline) fn answer_redirect<F: Frame>(
    frame: &mut F,
    r: &Redirect,
    gateway: IpAddr,
) -> Result<(), DropReason> {
    let f = &r.flow;
    let (at, udp_at) = (f.at, usize::from(r.udp_at));
    let ike_len = usize::from(r.request.len);
    let ike_at = udp_at + 8;
    let udp_end = ike_at + ike_len;
    let bytes = frame.bytes_mut();
    if udp_end > f.end || udp_end > bytes.len() {
        return Err(DropReason::Truncated);
    }
    let (client, vip) = if f.v6 {
        (
            IpAddr::V6(ipv6_at(bytes, at + 8)),
            IpAddr::V6(ipv6_at(bytes, at + 24)),
        )
    } else {
        (
            IpAddr::V4(ipv4_at(bytes, at + 12)),
            IpAddr::V4(ipv4_at(bytes, at + 16)),
        )
    };
    // The answer is built in the request's frame, so it is no longer than a UDP datagram.
    let udp_len = u16::try_from(8 + ike_len).unwrap_or(u16::MAX);
    let request_csum = u16::from_be_bytes([bytes[udp_at + 6], bytes[udp_at + 7]]);
    let pseudo = pseudo_header(vip, client, udp_len);
    // IPv4 allows "no checksum" (0); otherwise the sum over the datagram must be all ones.
    let csum_ok = (!f.v6 && request_csum == 0)
        || wire::checksum::fold(wire::checksum::sum(pseudo, &bytes[udp_at..udp_end])) == 0xffff;
    if !csum_ok {
        return Err(DropReason::MalformedIkeSaInit);
    }
    let (client_port, vip_port) = (
        u16::from_be_bytes([bytes[udp_at], bytes[udp_at + 1]]),
        u16::from_be_bytes([bytes[udp_at + 2], bytes[udp_at + 3]]),
    );
    let n = redirect::write_response(&mut bytes[ike_at..udp_end], &r.request, gateway)
        .ok_or(DropReason::MalformedIkeSaInit)?;
    let ip_len = if f.v6 {
        IPV6_HEADER_LEN
    } else {
        IPV4_HEADER_LEN
    };
    let new_udp_at = at + ip_len;
    bytes.copy_within(ike_at..ike_at + n, new_udp_at + 8);
    let (ip, udp) = bytes[at..new_udp_at + UDP_HEADER_LEN + n].split_at_mut(ip_len);
    let udp_len = UDP_HEADER_LEN + n;
    let pseudo = match (vip, client) {
        (IpAddr::V4(vip), IpAddr::V4(client)) => {
            let repr = Ipv4Repr {
                dont_frag: true,
                ..Ipv4Repr::new(vip, client, ip_proto::UDP, udp_len, ANSWER_TTL)
            };
            repr.emit(&mut Ipv4Packet::new_unchecked(ip));
            repr.pseudo_header()
        }
        (IpAddr::V6(vip), IpAddr::V6(client)) => {
            let repr = Ipv6Repr::new(vip, client, ip_proto::UDP, udp_len, ANSWER_TTL);
            repr.emit(&mut Ipv6Packet::new_unchecked(ip));
            repr.pseudo_header()
        }
        _ => return Err(DropReason::BadHeader),
    };
    let repr = UdpRepr {
        src_port: vip_port,
        dst_port: client_port,
    };
    // The IKE response is in place already.
    repr.emit(&mut UdpPacket::new_unchecked(udp), Some(&pseudo), |_| {});
    if frame.truncate(new_udp_at + 8 + n) {
        Ok(())
    } else {
        Err(DropReason::Truncated)
    }
}

/// The UDP pseudo-header sum for a datagram from `src` to `dst`.
pub(in crate::pipeline) fn pseudo_header(src: IpAddr, dst: IpAddr, udp_len: u16) -> u32 {
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            wire::checksum::pseudo_header_v4(s, d, ip_proto::UDP, udp_len)
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            wire::checksum::pseudo_header_v6(&s, &d, ip_proto::UDP, u32::from(udp_len))
        }
        _ => 0,
    }
}

impl State {
    /// Answers an IKE_SA_INIT request with a REDIRECT to the least-loaded gateway (or the one
    /// the client already has), in place; forwards it in NAT mode when no gateway can be named.
    #[inline(never)]
    pub(in crate::pipeline) fn redirect<F: Frame>(
        &mut self,
        snap: &Snapshot,
        now: u32,
        r: &Redirect,
        frame: &mut F,
    ) -> Verdict {
        let f = &r.flow;
        let svc = &snap.services[usize::from(f.service)];
        let target = self.redirect_target(snap, now, f).and_then(|g| {
            match svc.family(f.v6).gateways.get(usize::from(g)) {
                Some(&Some((addr, _))) => Some((g, addr)),
                _ => None,
            }
        });
        let Some((gateway, gateway_addr)) = target else {
            self.counters.services[usize::from(f.service)].fallback(Fallback::NoGatewayAddress);
            return self.forward(snap, now, f, affinity::NO_HINT, frame);
        };
        let Some(vip) = svc.vip(f.v6) else {
            return Verdict::Drop(DropReason::NoService);
        };
        if let Err(reason) = answer_redirect(frame, r, gateway_addr) {
            if reason == DropReason::MalformedIkeSaInit {
                self.counters.services[usize::from(f.service)].malformed_ike_sa_init += 1;
            }
            return Verdict::Drop(reason);
        }
        let key = f.key.direct();
        let hash = self.shard.hash(&key);
        // A redirect adds to the gateway's load only when the client is new to it: a client
        // repeating its IKE_SA_INIT (or a host sending it again and again) counts once. The
        // counter counts every answer.
        if self.remember_direct(svc, now, (key, hash), gateway, Proof::None) == Ok(true) {
            snap.loads.count_redirect(f.service, gateway);
        }
        self.counters.gateways[usize::from(f.service)][usize::from(gateway)].redirects += 1;
        let mac = answer_mac(snap, r.interface, vip);
        reply_l2(snap, frame, r.interface, mac)
    }

    /// The gateway to redirect a client to: the one its redirected (direct) entry names, else
    /// the one its NAT-mode entry names (all of a client's flows on one gateway), if that
    /// gateway is not down and has an address of the client's family; else the eligible
    /// gateway with the least load per weight.
    pub(in crate::pipeline) fn redirect_target(
        &mut self,
        snap: &Snapshot,
        now: u32,
        f: &Flow,
    ) -> Option<u16> {
        let fam = snap.services[usize::from(f.service)].family(f.v6);
        let addressed = |g: u16| matches!(fam.gateways.get(usize::from(g)), Some(Some(_)));
        for key in [f.key.direct(), f.key] {
            if let Some(g) = self.gateway_of(now, &key) {
                let up = fam
                    .candidates
                    .get(usize::from(g))
                    .is_some_and(|c| c.state != GatewayState::Down);
                if up && addressed(g) {
                    return Some(g);
                }
            }
        }
        let choices = fam.candidates.iter().enumerate().map(|(i, c)| {
            let gateway = u16::try_from(i).unwrap_or(u16::MAX);
            Choice {
                gateway,
                weight: c.weight,
                eligible: c.eligible() && addressed(gateway),
            }
        });
        // Only its remainder matters: `least_loaded` takes it modulo the gateways.
        #[allow(clippy::cast_possible_truncation)]
        let start = hash_client(f.client()) as usize;
        redirect::least_loaded(choices, |g| snap.loads.load(f.service, g), start)
    }
}
