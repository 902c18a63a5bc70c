//! IKEv2 redirect during IKE_SA_INIT (RFC 5685 §4.1), the pure part: which requests may be
//! redirected, the response's bytes, and the gateways' loads the choice reads.
//!
//! ```text
//! Initiator                                   Redirecting VIP
//! HDR(SPIi, 0), SAi1, KEi, Ni, N(REDIRECT_SUPPORTED) -->
//!                                         <-- HDR(SPIi, 0), N(REDIRECT, New_GW_ID, Ni_data)
//! ```
//!
//! The response is written over the request, in the request's buffer: it is never longer than
//! the request (a longer one is refused), so the VIP cannot be used to amplify.

use std::net::IpAddr;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use crate::wire::ike::{
    self, exchange, notify_type, payload_type, IkeHeader, IkeHeaderRepr, Notify, NotifyRepr,
    PayloadHeader, PayloadHeaderRepr,
};

/// Nonce sizes RFC 7296 §3.9 allows.
pub const MIN_NONCE: usize = 16;
pub const MAX_NONCE: usize = 256;

/// GW Identity Types of the REDIRECT notify (RFC 5685 §8, IANA "Gateway Identity Types").
pub mod gw_identity {
    pub const IPV4: u8 = 1;
    pub const IPV6: u8 = 2;
}

/// Notify payload: generic header (4), protocol ID, SPI size, type (4), GW identity type and
/// length (2); then the identity and the nonce data.
const REDIRECT_FIXED_LEN: usize = ike::PAYLOAD_HEADER_LEN + Notify::FIXED_LEN + 2;

crate::named_reasons! {
    /// Why IKE traffic to a redirecting service was handed to NAT mode instead.
    pub enum Fallback {
        NoRedirectSupported => "no-redirect-supported", "An IKE_SA_INIT request without N(REDIRECT_SUPPORTED): the client cannot follow.";
        NotInitial => "not-initial", "IKE on the IKE port that is no IKEv2 IKE_SA_INIT request (IKEv1, a later exchange, a response).";
        Fragment => "fragment", "An IP fragment: the request cannot be read whole.";
        NoGatewayAddress => "no-gateway-address", "No eligible gateway has an address of the client's family.";
    }
}

/// Where the request's nonce is, relative to the IKE header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SaInitRequest {
    pub nonce_at: u16,
    pub nonce_len: u16,
    /// The request's length (the IKE header's length field, equal to the datagram's).
    pub len: u16,
}

/// What to do with IKE traffic to a redirecting service.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Inspection {
    Redirect(SaInitRequest),
    Fallback(Fallback),
    /// No answer, no forwarding: a broken header or payload chain, a missing or impossible
    /// SA, KE or nonce.
    Malformed,
}

/// Reads `ike`, the whole UDP payload of a datagram to the IKE port (no non-ESP marker).
pub fn inspect(ike: &[u8]) -> Inspection {
    let Ok(header) = IkeHeader::new_checked(ike, ike.len()) else {
        return Inspection::Malformed;
    };
    if header.major_version() != 2
        || header.exchange_type() != exchange::IKE_SA_INIT
        || header.is_response()
    {
        return Inspection::Fallback(Fallback::NotInitial);
    }
    // An initial request: the initiator's flag, no responder SPI yet, message 0.
    if !header.is_initiator()
        || header.responder_spi() != 0
        || header.message_id() != 0
        || header.initiator_spi() == 0
    {
        return Inspection::Malformed;
    }
    let (mut sa, mut ke, mut nonce, mut supported) = (false, false, None, false);
    let mut end = ike::HEADER_LEN;
    for p in header.payloads() {
        let Ok(p) = p else {
            return Inspection::Malformed;
        };
        let at = end + ike::PAYLOAD_HEADER_LEN;
        end = at + p.body.len();
        match p.payload_type {
            payload_type::SA => sa = true,
            payload_type::KE => ke = true,
            payload_type::NONCE if nonce.is_none() => nonce = Some((at, p.body.len())),
            payload_type::NOTIFY => match Notify::new_checked(p.body) {
                Ok(n) if n.notify_type() == notify_type::REDIRECT_SUPPORTED => supported = true,
                Ok(_) => {}
                Err(_) => return Inspection::Malformed,
            },
            // Two nonces, or encrypted payloads before any key exists.
            payload_type::NONCE | payload_type::SK | payload_type::SKF => {
                return Inspection::Malformed
            }
            _ => {}
        }
    }
    // The chain must cover the message exactly (it also stops after MAX_PAYLOADS).
    let Some((nonce_at, nonce_len)) = nonce else {
        return Inspection::Malformed;
    };
    if end != ike.len() || !sa || !ke || !(MIN_NONCE..=MAX_NONCE).contains(&nonce_len) {
        return Inspection::Malformed;
    }
    if !supported {
        return Inspection::Fallback(Fallback::NoRedirectSupported);
    }
    // Lengths fit: the message length is a u32 equal to the slice's, and a UDP payload is
    // shorter than 64 KiB.
    match (
        u16::try_from(nonce_at),
        u16::try_from(nonce_len),
        u16::try_from(ike.len()),
    ) {
        (Ok(nonce_at), Ok(nonce_len), Ok(len)) => Inspection::Redirect(SaInitRequest {
            nonce_at,
            nonce_len,
            len,
        }),
        _ => Inspection::Malformed,
    }
}

/// Length of the response redirecting to `gateway` a request with a nonce of `nonce_len` bytes.
pub fn response_len(gateway: IpAddr, nonce_len: usize) -> usize {
    ike::HEADER_LEN + REDIRECT_FIXED_LEN + identity_len(gateway) + nonce_len
}

fn identity_len(gateway: IpAddr) -> usize {
    match gateway {
        IpAddr::V4(_) => 4,
        IpAddr::V6(_) => 16,
    }
}

/// Rewrites the request in `ike` (as [`inspect`] found it) into the response that redirects its
/// initiator to `gateway`, and returns the response's length. `None`, with `ike` unchanged,
/// when the response would be longer than the request.
pub fn write_response(ike: &mut [u8], req: &SaInitRequest, gateway: IpAddr) -> Option<usize> {
    let (nonce_at, nonce_len) = (usize::from(req.nonce_at), usize::from(req.nonce_len));
    let len = response_len(gateway, nonce_len);
    let id_len = identity_len(gateway);
    let nonce_to = ike::HEADER_LEN + REDIRECT_FIXED_LEN + id_len;
    if len > usize::from(req.len) || nonce_at + nonce_len > ike.len() || len > ike.len() {
        return None;
    }
    let initiator_spi = IkeHeader::new_unchecked(&*ike).initiator_spi();
    // The nonce first: the header written next may cover where it was.
    ike.copy_within(nonce_at..nonce_at + nonce_len, nonce_to);
    // HDR(SPIi, 0), then N(REDIRECT, New_GW_ID, Ni_data), the last payload.
    let header = IkeHeaderRepr {
        initiator_spi,
        responder_spi: 0,
        next_payload: payload_type::NOTIFY,
        exchange_type: exchange::IKE_SA_INIT,
        flags: ike::flags::RESPONSE,
        message_id: 0,
        length: u32::try_from(len).unwrap_or(u32::MAX),
    };
    header.emit(&mut IkeHeader::new_unchecked(&mut *ike));
    let payload = &mut ike[ike::HEADER_LEN..nonce_to];
    let payload_header = PayloadHeaderRepr::new(
        payload_type::NONE,
        len - ike::HEADER_LEN - ike::PAYLOAD_HEADER_LEN,
    );
    payload_header.emit(&mut PayloadHeader::new_unchecked(&mut *payload));
    let body = &mut payload[ike::PAYLOAD_HEADER_LEN..];
    // Protocol ID 0: the IKE SA; no SPI.
    let notify = NotifyRepr {
        protocol_id: 0,
        notify_type: notify_type::REDIRECT,
    };
    notify.emit(body);
    // New Responder GW Identity: type, length, address (RFC 5685 §8.1).
    let id = &mut body[notify.buffer_len()..];
    match gateway {
        IpAddr::V4(a) => {
            id[0] = gw_identity::IPV4;
            id[1] = 4;
            id[2..6].copy_from_slice(&a.octets());
        }
        IpAddr::V6(a) => {
            id[0] = gw_identity::IPV6;
            id[1] = 16;
            id[2..18].copy_from_slice(&a.octets());
        }
    }
    Some(len)
}

/// Fixed-point scale of [`LoadBoard`] loads: a tunnel is 1000.
pub const LOAD_SCALE: i64 = 1000;

/// The gateways' loads, shared by the control thread (which writes what the gateways report)
/// and the workers (which add their own redirects as they send them). A worker reads a
/// gateway's load as `offset + LOAD_SCALE × redirects`: between the control thread's updates
/// every redirect counts at once, on every worker.
#[derive(Debug)]
pub struct LoadBoard {
    /// The service and gateway names the board was made for, in index order.
    layout: Vec<(String, Vec<String>)>,
    /// `[service][gateway]`.
    gateways: Vec<Vec<GatewayLoad>>,
}

#[derive(Debug, Default)]
struct GatewayLoad {
    /// Redirects sent to this gateway since the board was made, by all workers.
    redirects: AtomicU64,
    /// The control thread's part of the load, in [`LOAD_SCALE`] units.
    offset: AtomicI64,
}

impl LoadBoard {
    /// A board for `layout` (service name, its gateways' names), every load zero.
    pub fn new(layout: Vec<(String, Vec<String>)>) -> LoadBoard {
        let gateways = layout
            .iter()
            .map(|(_, g)| g.iter().map(|_| GatewayLoad::default()).collect())
            .collect();
        LoadBoard { layout, gateways }
    }

    pub fn layout(&self) -> &[(String, Vec<String>)] {
        &self.layout
    }

    /// Counts a redirect to `gateway` of `service` (an atomic add: redirects are rare next to
    /// packets, and every worker must see them at once to spread a burst of new clients).
    #[inline]
    pub fn count_redirect(&self, service: u16, gateway: u16) {
        if let Some(g) = self.get(service, gateway) {
            g.redirects.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Redirects sent to `gateway` of `service` since the board was made.
    pub fn redirects(&self, service: u16, gateway: u16) -> u64 {
        self.get(service, gateway)
            .map_or(0, |g| g.redirects.load(Ordering::Relaxed))
    }

    /// The gateway's load in [`LOAD_SCALE`] units (tunnels × 1000).
    #[inline]
    pub fn load(&self, service: u16, gateway: u16) -> i64 {
        self.get(service, gateway).map_or(i64::MAX, |g| {
            let r = g.redirects.load(Ordering::Relaxed) as i64;
            g.offset
                .load(Ordering::Relaxed)
                .saturating_add(r.saturating_mul(LOAD_SCALE))
        })
    }

    /// Sets the gateway's load to `load` (in [`LOAD_SCALE`] units) given that `redirects` of
    /// its redirects are already counted in it; later redirects add to it.
    pub fn set_load(&self, service: u16, gateway: u16, load: i64, redirects: u64) {
        if let Some(g) = self.get(service, gateway) {
            let counted = (redirects as i64).saturating_mul(LOAD_SCALE);
            g.offset
                .store(load.saturating_sub(counted), Ordering::Relaxed);
        }
    }

    #[inline]
    fn get(&self, service: u16, gateway: u16) -> Option<&GatewayLoad> {
        self.gateways
            .get(usize::from(service))?
            .get(usize::from(gateway))
    }
}

/// A candidate for a redirect: its index, weight, and whether it may take new clients.
#[derive(Clone, Copy, Debug)]
pub struct Choice {
    pub gateway: u16,
    pub weight: u32,
    pub eligible: bool,
}

/// The eligible gateway with the least load per weight. Ties go to the first one at or after
/// `start` (the client's hash spreads equal gateways), so a burst of new clients before any
/// load moves does not all land on gateway 0.
pub fn least_loaded(
    choices: impl Iterator<Item = Choice> + Clone,
    load: impl Fn(u16) -> i64,
    start: usize,
) -> Option<u16> {
    let n = choices.clone().count();
    if n == 0 {
        return None;
    }
    let mut best: Option<(i128, u32, u16)> = None;
    for c in choices
        .clone()
        .skip(start % n)
        .chain(choices.take(start % n))
    {
        if !c.eligible || c.weight == 0 {
            continue;
        }
        let l = i128::from(load(c.gateway).max(0));
        // l / w < best_l / best_w  ⇔  l × best_w < best_l × w (weights are positive).
        let better = match best {
            None => true,
            Some((bl, bw, _)) => l * i128::from(bw) < bl * i128::from(c.weight),
        };
        if better {
            best = Some((l, c.weight, c.gateway));
        }
    }
    best.map(|(_, _, g)| g)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::ike::tests::SA_INIT;
    use proptest::prelude::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    /// The strongSwan request's nonce: the Nonce payload starts at 116, its 32-byte body at 120.
    fn sa_init_nonce() -> &'static [u8] {
        &SA_INIT[120..152]
    }

    #[test]
    fn strongswan_request_is_redirectable() {
        let Inspection::Redirect(r) = inspect(&SA_INIT) else {
            panic!("{:?}", inspect(&SA_INIT));
        };
        assert_eq!(
            (r.nonce_at, r.nonce_len, r.len),
            (120, 32, SA_INIT.len() as u16)
        );
    }

    /// RFC 5685 §4.1 and §8, byte by byte, built independently of `write_response`.
    fn expected(spi: &[u8], gw: IpAddr, nonce: &[u8]) -> Vec<u8> {
        let (kind, id): (u8, Vec<u8>) = match gw {
            IpAddr::V4(a) => (1, a.octets().to_vec()),
            IpAddr::V6(a) => (2, a.octets().to_vec()),
        };
        let notify_len = 4 + 4 + 2 + id.len() + nonce.len();
        let total = 28 + notify_len;
        let mut v = Vec::new();
        v.extend_from_slice(spi); // IKE SA Initiator's SPI
        v.extend_from_slice(&[0; 8]); // Responder's SPI: none
        v.extend_from_slice(&[41, 0x20, 34, 0x20]); // next N, v2.0, IKE_SA_INIT, R flag
        v.extend_from_slice(&[0, 0, 0, 0]); // message ID 0
        v.extend_from_slice(&(total as u32).to_be_bytes());
        v.extend_from_slice(&[0, 0]); // last payload, not critical
        v.extend_from_slice(&(notify_len as u16).to_be_bytes());
        v.extend_from_slice(&[0, 0, 0x40, 0x17]); // protocol 0, SPI size 0, REDIRECT (16407)
        v.extend_from_slice(&[kind, id.len() as u8]);
        v.extend_from_slice(&id);
        v.extend_from_slice(nonce);
        v
    }

    #[test]
    fn response_bytes_follow_rfc5685() {
        for gw in [
            IpAddr::V4(Ipv4Addr::new(198, 19, 0, 12)),
            IpAddr::V6(Ipv6Addr::new(0x2001, 2, 0, 2, 0, 0, 0, 0x12)),
        ] {
            let mut buf = SA_INIT.to_vec();
            let Inspection::Redirect(r) = inspect(&buf) else {
                panic!()
            };
            let n = write_response(&mut buf, &r, gw).unwrap();
            assert_eq!(&buf[..n], &expected(&SA_INIT[..8], gw, sa_init_nonce())[..]);
            assert_eq!(n, response_len(gw, 32));
            assert!(n < SA_INIT.len());
            // The response parses as what it is.
            let h = IkeHeader::new_checked(&buf[..n], n).unwrap();
            assert!(h.is_response() && !h.is_initiator());
            let redirect = h.find_notify(notify_type::REDIRECT).unwrap();
            assert_eq!(&redirect.data()[2 + identity_len(gw)..], sa_init_nonce());
        }
    }

    /// A request built from payloads: (type, body).
    fn request(payloads: &[(u8, Vec<u8>)]) -> Vec<u8> {
        let mut v = vec![1, 2, 3, 4, 5, 6, 7, 8, 0, 0, 0, 0, 0, 0, 0, 0];
        v.extend_from_slice(&[payloads.first().map_or(0, |p| p.0), 0x20, 34, 0x08]);
        v.extend_from_slice(&[0; 8]);
        for (i, (_, body)) in payloads.iter().enumerate() {
            v.push(payloads.get(i + 1).map_or(0, |p| p.0));
            v.push(0);
            v.extend_from_slice(&((body.len() + 4) as u16).to_be_bytes());
            v.extend_from_slice(body);
        }
        let len = v.len() as u32;
        v[24..28].copy_from_slice(&len.to_be_bytes());
        v
    }

    fn notify(ty: u16) -> Vec<u8> {
        let mut b = vec![0, 0];
        b.extend_from_slice(&ty.to_be_bytes());
        b
    }

    fn minimal(nonce_len: usize, supported: bool) -> Vec<(u8, Vec<u8>)> {
        let mut p = vec![
            (payload_type::SA, vec![0; 8]),
            (payload_type::KE, vec![0, 31, 0, 0, 9, 9, 9, 9]),
            (payload_type::NONCE, vec![0x5a; nonce_len]),
        ];
        if supported {
            p.push((
                payload_type::NOTIFY,
                notify(notify_type::REDIRECT_SUPPORTED),
            ));
        }
        p
    }

    #[test]
    fn fallbacks_and_malformed() {
        assert!(matches!(
            inspect(&request(&minimal(32, true))),
            Inspection::Redirect(_)
        ));
        assert_eq!(
            inspect(&request(&minimal(32, false))),
            Inspection::Fallback(Fallback::NoRedirectSupported)
        );
        // A later exchange, and a response.
        let mut auth = request(&minimal(32, true));
        auth[18] = exchange::IKE_AUTH;
        assert_eq!(inspect(&auth), Inspection::Fallback(Fallback::NotInitial));
        let mut resp = request(&minimal(32, true));
        resp[19] = ike::flags::RESPONSE;
        assert_eq!(inspect(&resp), Inspection::Fallback(Fallback::NotInitial));
        // Malformed: nonce too short or too long, missing SA/KE/nonce, two nonces, a
        // responder SPI, a chain that ends early or runs past the end, truncation.
        let bad: Vec<Vec<u8>> = vec![
            request(&minimal(15, true)),
            request(&minimal(257, true)),
            request(&minimal(32, true)[1..]),
            request(&[
                (payload_type::SA, vec![0; 8]),
                (payload_type::KE, vec![0; 8]),
                (
                    payload_type::NOTIFY,
                    notify(notify_type::REDIRECT_SUPPORTED),
                ),
            ]),
            {
                let mut p = minimal(32, true);
                p.push((payload_type::NONCE, vec![1; 16]));
                request(&p)
            },
            {
                let mut r = request(&minimal(32, true));
                r[15] = 1;
                r
            },
            {
                // The last payload claims 4 more bytes than there are.
                let mut r = request(&minimal(32, true));
                let last = r.len() - 8;
                r[last + 3] += 4;
                r
            },
            {
                // The header's length says 4 less than the datagram: the chain outruns it.
                let mut r = request(&minimal(32, true));
                r.extend_from_slice(&[0; 4]);
                r
            },
            request(&minimal(32, true))[..27].to_vec(),
            {
                let mut r = request(&minimal(32, true));
                r.truncate(r.len() - 2);
                r
            },
            {
                // A notify body too short for its fixed part.
                let mut p = minimal(32, true);
                p.push((payload_type::NOTIFY, vec![0, 0]));
                request(&p)
            },
        ];
        for (i, b) in bad.iter().enumerate() {
            assert_eq!(inspect(b), Inspection::Malformed, "case {i}");
        }
    }

    #[test]
    fn refuses_to_answer_longer_than_asked() {
        // A minimal request with an empty SA and KE is shorter than an IPv6 redirect.
        let mut p = minimal(16, true);
        p[0].1.clear();
        p[1].1.clear();
        let mut buf = request(&p);
        let Inspection::Redirect(r) = inspect(&buf) else {
            panic!()
        };
        let before = buf.clone();
        let v6 = IpAddr::V6(Ipv6Addr::new(0x2001, 2, 0, 2, 0, 0, 0, 0x11));
        assert!(response_len(v6, 16) > buf.len());
        assert_eq!(write_response(&mut buf, &r, v6), None);
        assert_eq!(buf, before);
        let v4 = IpAddr::V4(Ipv4Addr::new(198, 19, 0, 11));
        assert!(write_response(&mut buf, &r, v4).is_some());
    }

    #[test]
    fn least_loaded_weighs_and_skips_ineligible() {
        let c = |gateway, weight, eligible| Choice {
            gateway,
            weight,
            eligible,
        };
        let choices = [c(0, 1, true), c(1, 2, true), c(2, 1, false)];
        let loads = [5_000, 8_000, 0];
        let load = |g: u16| loads[usize::from(g)];
        // 5/1 against 8/2: gateway 1; gateway 2 is idle but not eligible.
        assert_eq!(least_loaded(choices.iter().copied(), load, 0), Some(1));
        // Ties go to the first at or after `start`.
        let even = [c(0, 1, true), c(1, 1, true), c(2, 1, true)];
        assert_eq!(least_loaded(even.iter().copied(), |_| 0, 0), Some(0));
        assert_eq!(least_loaded(even.iter().copied(), |_| 0, 2), Some(2));
        assert_eq!(least_loaded(even.iter().copied(), |_| 0, 4), Some(1));
        let none = [c(0, 1, false), c(1, 0, true)];
        assert_eq!(least_loaded(none.iter().copied(), |_| 0, 0), None);
        assert_eq!(least_loaded([].into_iter(), |_| 0, 0), None);
    }

    #[test]
    fn board_counts_redirects_on_top_of_the_control_threads_load() {
        let b = LoadBoard::new(vec![("vpn".into(), vec!["gw1".into(), "gw2".into()])]);
        b.count_redirect(0, 1);
        b.count_redirect(0, 1);
        assert_eq!(b.load(0, 1), 2 * LOAD_SCALE);
        // The gateway reports 10 tunnels, which include the first redirect.
        b.set_load(0, 1, 10 * LOAD_SCALE, 1);
        assert_eq!(b.load(0, 1), 11 * LOAD_SCALE);
        b.count_redirect(0, 1);
        assert_eq!(b.load(0, 1), 12 * LOAD_SCALE);
        assert_eq!(b.redirects(0, 1), 3);
        assert_eq!(b.load(0, 0), 0);
        assert_eq!(b.load(3, 0), i64::MAX);
        b.count_redirect(3, 0); // out of range: ignored
    }

    proptest! {
        #[test]
        fn inspect_never_panics_and_answers_stay_short(data in proptest::collection::vec(any::<u8>(), 0..400)) {
            if let Inspection::Redirect(r) = inspect(&data) {
                let mut buf = data.clone();
                for gw in [IpAddr::V4(Ipv4Addr::new(198, 19, 0, 11)), IpAddr::V6(Ipv6Addr::LOCALHOST)] {
                    if let Some(n) = write_response(&mut buf.clone(), &r, gw) {
                        prop_assert!(n <= data.len());
                    }
                }
                buf.truncate(0);
            }
        }

        #[test]
        fn mutated_strongswan_requests_never_panic(at in 0usize..224, byte in any::<u8>(), cut in 0usize..=224) {
            let mut data = SA_INIT.to_vec();
            data[at] = byte;
            data.truncate(cut);
            if let Inspection::Redirect(r) = inspect(&data) {
                let n = write_response(&mut data.clone(), &r, IpAddr::V4(Ipv4Addr::new(198, 19, 0, 13)));
                prop_assert!(n.is_none_or(|n| n <= data.len()));
            }
        }
    }
}
