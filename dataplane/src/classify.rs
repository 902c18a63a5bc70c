//! Per-packet classification of VPN traffic, and a top-k counter of TLS server names.
//!
//! [`classify`] looks at the L4 payload of a packet the caller has already parsed up to L4 and
//! says which VPN protocol it carries, with the few fields the balancer keys on (IKE SPIs, ESP
//! SPI, whether a (D)TLS session starts, the SNI). It is allocation-free and reads at most the
//! fixed headers, plus the ClientHello when one starts a TLS or DTLS session.
//!
//! The port plan decides what is expected where; a payload that does not validate as the expected
//! protocol is [`Class::Other`], never guessed from its bytes alone.

use crate::wire::{be32, dtls, ike, ip_proto, tls};

/// Traffic classes, as counted and as matched by service rules.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum Class {
    /// IKE (v1 or v2), on the IKE port or behind the non-ESP marker on the NAT-T port.
    Ike,
    /// ESP encapsulated in UDP on the NAT-T port (RFC 3948).
    EspInUdp,
    /// NAT-keepalive: a single 0xFF byte on the NAT-T port (RFC 3948 §2.3).
    NattKeepalive,
    /// ESP directly over IP (protocol 50).
    Esp,
    /// A DTLS record on the DTLS port.
    Dtls,
    /// A TLS record on the TLS port.
    Tls,
    /// A non-first IP fragment: no L4 header to look at.
    Fragment,
    /// Anything else.
    Other,
}

impl Class {
    /// Number of classes.
    pub const COUNT: usize = 8;

    /// Every class, in [`index`](Self::index) order.
    pub const ALL: [Class; Class::COUNT] = [
        Class::Ike,
        Class::EspInUdp,
        Class::NattKeepalive,
        Class::Esp,
        Class::Dtls,
        Class::Tls,
        Class::Fragment,
        Class::Other,
    ];

    /// Stable name for counters, logs and configuration.
    pub fn name(self) -> &'static str {
        match self {
            Class::Ike => "ike",
            Class::EspInUdp => "esp-in-udp",
            Class::NattKeepalive => "natt-keepalive",
            Class::Esp => "esp",
            Class::Dtls => "dtls",
            Class::Tls => "tls",
            Class::Fragment => "fragment",
            Class::Other => "other",
        }
    }

    /// Dense index in `0..COUNT`, for per-class counter arrays.
    #[inline]
    pub fn index(self) -> usize {
        self as usize
    }

    /// The class called `name` (as returned by [`name`](Self::name)).
    pub fn from_name(name: &str) -> Option<Class> {
        Class::ALL.into_iter().find(|c| c.name() == name)
    }
}

impl core::fmt::Display for Class {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.name())
    }
}

/// Which server-side ports carry which protocol (from the service config).
///
/// Ports may coincide; see [`classify`] for the order in which they are tried.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PortPlan {
    /// UDP port of IKE without encapsulation (500).
    pub ike: u16,
    /// UDP port of NAT traversal: IKE behind the marker, ESP-in-UDP, keepalives (4500).
    pub natt: u16,
    /// UDP port of the SSL-VPN DTLS data channel (443).
    pub dtls: u16,
    /// TCP port of the SSL-VPN TLS control channel (443).
    pub tls: u16,
}

impl Default for PortPlan {
    fn default() -> Self {
        PortPlan {
            ike: 500,
            natt: 4500,
            dtls: 443,
            tls: 443,
        }
    }
}

/// What the classifier needs; the caller has parsed L2-L4 already.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct L4View<'a> {
    /// IP protocol (after IPv6 extension headers).
    pub protocol: u8,
    /// The VIP/gateway-side port: destination port inbound, source port outbound; 0 for ESP.
    pub server_port: u16,
    /// L4 payload present in this packet (UDP/TCP payload; for ESP the ESP header onward).
    pub payload: &'a [u8],
    /// UDP: length field - 8 (may exceed `payload.len()` for a first fragment); TCP/ESP:
    /// `payload.len()`.
    pub datagram_len: usize,
    /// The packet is an IP fragment other than the first.
    pub non_first_fragment: bool,
}

/// Protocol fields the balancer keys on, per class.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Detail<'a> {
    /// Nothing beyond the class (keepalive, fragment, other).
    None,
    /// IKE header fields.
    Ike {
        /// IKE SA initiator's SPI.
        initiator_spi: u64,
        /// IKE SA responder's SPI (0 in the first IKE_SA_INIT request).
        responder_spi: u64,
        /// Exchange type (see [`ike::exchange`]).
        exchange_type: u8,
        /// 1 or 2.
        major_version: u8,
        /// IKEv2 Response flag (the raw 0x20 bit for IKEv1).
        response: bool,
        /// Arrived on the NAT-T port behind the non-ESP marker.
        behind_marker: bool,
    },
    /// ESP, over IP or in UDP.
    Esp {
        /// Security Parameters Index.
        spi: u32,
    },
    /// DTLS.
    Dtls {
        /// The first record starts a ClientHello.
        client_hello: bool,
    },
    /// TLS.
    Tls {
        /// The first record starts a ClientHello.
        client_hello: bool,
        /// Raw host name from the ClientHello's server_name extension, when in this segment.
        sni: Option<&'a [u8]>,
    },
}

/// A classification: the class and the fields that go with it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Classified<'a> {
    /// Traffic class.
    pub class: Class,
    /// Protocol fields for `class`; [`Detail::None`] when there are none.
    pub detail: Detail<'a>,
}

impl<'a> Classified<'a> {
    const fn bare(class: Class) -> Self {
        Classified {
            class,
            detail: Detail::None,
        }
    }
}

/// Classifies one packet's L4 payload.
///
/// Rules, in order:
/// 1. a non-first fragment is [`Class::Fragment`];
/// 2. ESP (protocol 50) with at least 8 bytes (SPI and sequence number) is [`Class::Esp`];
/// 3. UDP to `ports.ike` whose payload validates as an IKE header is [`Class::Ike`];
/// 4. UDP to `ports.natt`: a lone 0xFF is [`Class::NattKeepalive`]; a zero marker followed by a
///    valid IKE header is [`Class::Ike`] (`behind_marker`), and with an invalid one
///    [`Class::Other`];
/// 5. UDP to `ports.dtls` whose payload starts with a valid DTLS record is [`Class::Dtls`];
/// 6. UDP to `ports.natt` with a non-zero SPI and at least 8 bytes is [`Class::EspInUdp`]
///    (after DTLS, which validates far more than "non-zero", when the two share a port);
/// 7. TCP to `ports.tls` whose payload starts with a valid TLS record is [`Class::Tls`];
/// 8. anything else is [`Class::Other`].
pub fn classify<'a>(view: &L4View<'a>, ports: &PortPlan) -> Classified<'a> {
    if view.non_first_fragment {
        return Classified::bare(Class::Fragment);
    }
    let payload = view.payload;
    match view.protocol {
        ip_proto::ESP => match esp_spi(payload, payload.len()) {
            Some(spi) => Classified {
                class: Class::Esp,
                detail: Detail::Esp { spi },
            },
            None => Classified::bare(Class::Other),
        },
        ip_proto::UDP => classify_udp(view, ports),
        ip_proto::TCP if view.server_port == ports.tls => {
            if tls::TlsRecord::new_checked(payload).is_err() {
                return Classified::bare(Class::Other);
            }
            let hello = tls::parse_client_hello(payload);
            Classified {
                class: Class::Tls,
                detail: Detail::Tls {
                    client_hello: hello.is_some(),
                    sni: hello.and_then(|h| h.sni),
                },
            }
        }
        _ => Classified::bare(Class::Other),
    }
}

/// The class of the traffic every worker sees most (ESP in UDP, keepalives, raw ESP,
/// fragments), decided in a few instructions: `Some(c)` exactly when [`classify`] would say `c`
/// with no detail a caller counts (no ClientHello); `None` for the rest, which need
/// [`classify`] itself.
#[inline(always)]
pub fn common_class(view: &L4View<'_>, ports: &PortPlan) -> Option<Class> {
    if view.non_first_fragment {
        return Some(Class::Fragment);
    }
    let payload = view.payload;
    match view.protocol {
        // `esp_spi(payload, payload.len())`: eight bytes at least.
        ip_proto::ESP if payload.len() >= 8 => Some(Class::Esp),
        ip_proto::ESP => Some(Class::Other),
        // Only on a NAT-T port that is neither the IKE nor the DTLS port: `classify` tries
        // those first.
        ip_proto::UDP
            if view.server_port == ports.natt
                && view.server_port != ports.ike
                && view.server_port != ports.dtls =>
        {
            match payload.first_chunk::<4>() {
                // Behind the non-ESP marker: IKE, for the full classifier.
                Some(&[0, 0, 0, 0]) => None,
                // A non-zero SPI: ESP if the datagram holds the SPI and sequence number.
                Some(_) if view.datagram_len >= 8 => Some(Class::EspInUdp),
                Some(_) => Some(Class::Other),
                None if payload == [0xff] && view.datagram_len == 1 => Some(Class::NattKeepalive),
                None => Some(Class::Other),
            }
        }
        _ => None,
    }
}

/// Whether a UDP datagram that [`classify`] called [`Class::Other`] was meant as IKE and is
/// malformed: on the IKE port, or behind the non-ESP marker on the NAT-T port, without a valid
/// IKE header (at least 28 bytes, a known version and exchange, a length field equal to the
/// datagram's). Only where the ports are the plan's own (not shared with another protocol), and
/// never for a non-first fragment (it has no header to look at).
pub fn malformed_ike(view: &L4View<'_>, ports: &PortPlan) -> bool {
    if view.protocol != ip_proto::UDP || view.non_first_fragment {
        return false;
    }
    let (port, payload) = (view.server_port, view.payload);
    let ike_port = port == ports.ike && port != ports.natt && port != ports.dtls;
    if ike_port {
        return classify_ike(payload, view.datagram_len, false).is_none();
    }
    if port == ports.natt && port != ports.dtls {
        if let Some(rest) = payload.strip_prefix(&ike::NON_ESP_MARKER) {
            return view
                .datagram_len
                .checked_sub(ike::NON_ESP_MARKER_LEN)
                .and_then(|len| classify_ike(rest, len, true))
                .is_none();
        }
    }
    false
}

fn classify_udp<'a>(view: &L4View<'a>, ports: &PortPlan) -> Classified<'a> {
    let (port, payload, datagram_len) = (view.server_port, view.payload, view.datagram_len);
    if port == ports.ike {
        if let Some(c) = classify_ike(payload, datagram_len, false) {
            return c;
        }
    }
    if port == ports.natt {
        if payload == [0xff] && datagram_len == 1 {
            return Classified::bare(Class::NattKeepalive);
        }
        if let Some(rest) = payload.strip_prefix(&ike::NON_ESP_MARKER) {
            // Zero is never an ESP SPI: this can only be IKE.
            return datagram_len
                .checked_sub(ike::NON_ESP_MARKER_LEN)
                .and_then(|len| classify_ike(rest, len, true))
                .unwrap_or(Classified::bare(Class::Other));
        }
    }
    if port == ports.dtls && dtls::DtlsRecord::new_checked(payload).is_ok() {
        return Classified {
            class: Class::Dtls,
            detail: Detail::Dtls {
                client_hello: dtls::parse_client_hello(payload).is_some(),
            },
        };
    }
    if port == ports.natt {
        if let Some(spi) = esp_spi(payload, datagram_len) {
            return Classified {
                class: Class::EspInUdp,
                detail: Detail::Esp { spi },
            };
        }
    }
    Classified::bare(Class::Other)
}

/// The SPI of an ESP packet of `len` bytes (SPI and sequence number at least) whose first bytes
/// are `payload`.
#[inline]
fn esp_spi(payload: &[u8], len: usize) -> Option<u32> {
    if len < 8 || payload.len() < 4 {
        return None;
    }
    Some(be32(payload, 0))
}

#[inline]
fn classify_ike(
    payload: &[u8],
    datagram_len: usize,
    behind_marker: bool,
) -> Option<Classified<'_>> {
    let h = ike::IkeHeader::new_checked(payload, datagram_len).ok()?;
    Some(Classified {
        class: Class::Ike,
        detail: Detail::Ike {
            initiator_spi: h.initiator_spi(),
            responder_spi: h.responder_spi(),
            exchange_type: h.exchange_type(),
            major_version: h.major_version(),
            response: h.is_response(),
            behind_marker,
        },
    })
}

/// Longest host name [`SniStats`] stores; longer names are truncated to this many bytes.
pub const SNI_MAX_LEN: usize = 64;

/// Fixed-capacity top-k counter of SNI host names (the space-saving algorithm, Metwally et al.
/// 2005), one per worker.
///
/// Every tracked count is an upper bound of the true count, overestimating by at most the
/// smallest count in the table, and any name seen more than `recorded() / slots` times is
/// tracked. Names are lowercased (DNS names are case-insensitive) and truncated to
/// [`SNI_MAX_LEN`] bytes; names that are empty or hold bytes outside printable ASCII (`!`..=`~`)
/// are only counted in [`invalid`](Self::invalid).
#[derive(Clone, Debug)]
pub struct SniStats {
    /// FNV-1a of each stored name, so a lookup compares names only on a hash match.
    hashes: Vec<u64>,
    counts: Vec<u64>,
    lens: Vec<u8>,
    names: Vec<[u8; SNI_MAX_LEN]>,
    /// Slots in use: `0..used` (slots are filled in order and never emptied, only replaced).
    used: usize,
    recorded: u64,
    invalid: u64,
}

impl SniStats {
    /// A counter tracking at most `slots` names; all storage is allocated here.
    pub fn new(slots: usize) -> Self {
        SniStats {
            hashes: vec![0; slots],
            counts: vec![0; slots],
            lens: vec![0; slots],
            names: vec![[0; SNI_MAX_LEN]; slots],
            used: 0,
            recorded: 0,
            invalid: 0,
        }
    }

    /// Counts one occurrence of `sni` (raw bytes from the ClientHello). Allocation-free; costs
    /// one pass over the table in the worst case.
    pub fn record(&mut self, sni: &[u8]) {
        if sni.is_empty() || !sni.iter().all(|b| matches!(b, b'!'..=b'~')) {
            self.invalid = self.invalid.saturating_add(1);
            return;
        }
        let mut name = [0u8; SNI_MAX_LEN];
        let len = sni.len().min(SNI_MAX_LEN);
        for (dst, src) in name.iter_mut().zip(sni) {
            *dst = src.to_ascii_lowercase();
        }
        self.recorded = self.recorded.saturating_add(1);
        self.add(&name[..len], 1);
    }

    /// Adds `weight` occurrences of an already normalised name.
    fn add(&mut self, name: &[u8], weight: u64) {
        let hash = fnv1a(name);
        let len = name.len();
        let hit = (0..self.used).find(|&i| {
            self.hashes[i] == hash
                && usize::from(self.lens[i]) == len
                && self.names[i].get(..len) == Some(name)
        });
        let slot = match hit {
            Some(i) => {
                self.counts[i] = self.counts[i].saturating_add(weight);
                return;
            }
            None if self.used < self.counts.len() => {
                self.used += 1;
                self.counts[self.used - 1] = weight;
                self.used - 1
            }
            None => {
                // Full: the new name takes over the least-counted slot and inherits its count,
                // which is what keeps every count an upper bound.
                let Some((i, &min)) = self.counts.iter().enumerate().min_by_key(|&(_, c)| c) else {
                    return; // no slots at all
                };
                self.counts[i] = min.saturating_add(weight);
                i
            }
        };
        self.hashes[slot] = hash;
        self.lens[slot] = u8::try_from(len).unwrap_or(u8::MAX); // len <= SNI_MAX_LEN < 256
        self.names[slot] = [0; SNI_MAX_LEN];
        if let Some(dst) = self.names[slot].get_mut(..len) {
            dst.copy_from_slice(name);
        }
    }

    /// The tracked names and their (upper-bound) counts, highest first, ties by name.
    pub fn top(&self) -> Vec<(String, u64)> {
        let mut out: Vec<(String, u64)> = (0..self.used)
            .map(|i| {
                let name = &self.names[i][..usize::from(self.lens[i])];
                (String::from_utf8_lossy(name).into_owned(), self.counts[i])
            })
            .collect();
        out.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        out
    }

    /// Adds this counter's names, counts and totals into `other` (to sum per-worker counters).
    /// Counts that do not fit `other` are folded in the space-saving way, so they stay upper
    /// bounds.
    pub fn merge_into(&self, other: &mut SniStats) {
        for i in 0..self.used {
            let name = &self.names[i][..usize::from(self.lens[i])];
            other.add(name, self.counts[i]);
        }
        other.recorded = other.recorded.saturating_add(self.recorded);
        other.invalid = other.invalid.saturating_add(self.invalid);
    }

    /// Valid names recorded, tracked or not.
    pub fn recorded(&self) -> u64 {
        self.recorded
    }

    /// Names refused as empty or not printable ASCII.
    pub fn invalid(&self) -> u64 {
        self.invalid
    }

    /// Names currently tracked.
    pub fn len(&self) -> usize {
        self.used
    }

    /// Whether no name is tracked.
    pub fn is_empty(&self) -> bool {
        self.used == 0
    }

    /// Most names tracked at once.
    pub fn capacity(&self) -> usize {
        self.counts.len()
    }

    /// Forgets every name and total, keeping the storage.
    pub fn clear(&mut self) {
        self.used = 0;
        self.recorded = 0;
        self.invalid = 0;
        self.counts.iter_mut().for_each(|c| *c = 0);
    }
}

/// 64-bit FNV-1a: cheap, and good enough to prefilter a linear scan.
#[inline]
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::dtls::tests::CLIENT_HELLO as DTLS_CLIENT_HELLO;
    use crate::wire::ike::tests::{AUTH_NATT, SA_INIT};
    use crate::wire::tls::tests::{client_hello_with, CLIENT_HELLO as TLS_CLIENT_HELLO};
    use proptest::prelude::*;
    use std::collections::HashMap;

    /// ESP-in-UDP (RFC 3948) as a gateway sends it: SPI 0xc1a2b3d4, sequence number 1, a 16-byte
    /// IV, 32 bytes of ciphertext and a 16-byte ICV.
    const ESP_IN_UDP: [u8; 72] = [
        0xc1, 0xa2, 0xb3, 0xd4, 0x00, 0x00, 0x00, 0x01, 0x91, 0xfc, 0xf7, 0x41, 0x26, 0x1b, 0x06,
        0x0d, 0x5e, 0xd9, 0x47, 0x2d, 0xff, 0xcb, 0xd8, 0xfe, 0x74, 0xf2, 0x2d, 0xb7, 0xb9, 0x0d,
        0xe9, 0x2a, 0xeb, 0xb2, 0x41, 0x63, 0x9b, 0x4d, 0x90, 0xce, 0x0c, 0x33, 0x5f, 0xae, 0x64,
        0x72, 0xf5, 0xc2, 0x5a, 0x7a, 0xb4, 0x74, 0xf9, 0x2e, 0x18, 0x6b, 0x03, 0xc6, 0x0c, 0x37,
        0x02, 0x00, 0x62, 0x42, 0xd7, 0x82, 0x99, 0xa9, 0xf9, 0x57, 0xc4, 0x25,
    ];

    fn udp(port: u16, payload: &[u8]) -> L4View<'_> {
        L4View {
            protocol: ip_proto::UDP,
            server_port: port,
            payload,
            datagram_len: payload.len(),
            non_first_fragment: false,
        }
    }

    fn tcp(port: u16, payload: &[u8]) -> L4View<'_> {
        L4View {
            protocol: ip_proto::TCP,
            ..udp(port, payload)
        }
    }

    fn class_of(view: &L4View<'_>) -> Class {
        classify(view, &PortPlan::default()).class
    }

    #[test]
    fn class_names_and_indices() {
        let names: Vec<&str> = Class::ALL.iter().map(|c| c.name()).collect();
        assert_eq!(
            names,
            [
                "ike",
                "esp-in-udp",
                "natt-keepalive",
                "esp",
                "dtls",
                "tls",
                "fragment",
                "other"
            ]
        );
        for (i, c) in Class::ALL.into_iter().enumerate() {
            assert_eq!(c.index(), i);
            assert_eq!(Class::from_name(c.name()), Some(c));
            assert_eq!(c.to_string(), c.name());
        }
        assert_eq!(Class::from_name("IKE"), None);
        assert_eq!(
            PortPlan::default(),
            PortPlan {
                ike: 500,
                natt: 4500,
                dtls: 443,
                tls: 443
            }
        );
    }

    #[test]
    fn ike_sa_init_on_500() {
        let c = classify(&udp(500, &SA_INIT), &PortPlan::default());
        assert_eq!(
            c,
            Classified {
                class: Class::Ike,
                detail: Detail::Ike {
                    initiator_spi: 0x5f2a_8c3e_91b0_4d17,
                    responder_spi: 0,
                    exchange_type: ike::exchange::IKE_SA_INIT,
                    major_version: 2,
                    response: false,
                    behind_marker: false,
                },
            }
        );
        // Wrong datagram length, or IKE on an unplanned port.
        let mut v = udp(500, &SA_INIT);
        v.datagram_len += 1;
        assert_eq!(class_of(&v), Class::Other);
        assert_eq!(class_of(&udp(501, &SA_INIT)), Class::Other);
        assert_eq!(class_of(&tcp(500, &SA_INIT)), Class::Other);
        // Without the marker on 4500 it is ESP with SPI 0x5f2a8c3e, as RFC 3948 says.
        assert_eq!(
            classify(&udp(4500, &SA_INIT), &PortPlan::default()).detail,
            Detail::Esp { spi: 0x5f2a_8c3e }
        );
    }

    #[test]
    fn ike_first_fragment() {
        // Only the first 100 bytes are in this packet; the UDP length says 224.
        let mut v = udp(500, &SA_INIT[..100]);
        v.datagram_len = SA_INIT.len();
        assert_eq!(class_of(&v), Class::Ike);
        v.non_first_fragment = true;
        assert_eq!(
            classify(&v, &PortPlan::default()),
            Classified {
                class: Class::Fragment,
                detail: Detail::None
            }
        );
    }

    #[test]
    fn ike_auth_behind_marker() {
        let c = classify(&udp(4500, &AUTH_NATT), &PortPlan::default());
        assert_eq!(
            c,
            Classified {
                class: Class::Ike,
                detail: Detail::Ike {
                    initiator_spi: 0x5f2a_8c3e_91b0_4d17,
                    responder_spi: 0x8d3b_6e0a_2c4f_1795,
                    exchange_type: ike::exchange::IKE_AUTH,
                    major_version: 2,
                    response: false,
                    behind_marker: true,
                },
            }
        );
        // The marker followed by something that is not IKE: never ESP.
        let mut bad = AUTH_NATT;
        bad[4 + 17] = 0x30;
        assert_eq!(class_of(&udp(4500, &bad)), Class::Other);
        assert_eq!(class_of(&udp(4500, &[0, 0, 0, 0])), Class::Other);
        assert_eq!(class_of(&udp(4500, &[0; 40])), Class::Other);
        // The marker's 4 bytes are not counted twice.
        let mut v = udp(4500, &AUTH_NATT);
        v.datagram_len = 3;
        assert_eq!(class_of(&v), Class::Other);
    }

    #[test]
    fn natt_keepalive() {
        assert_eq!(
            classify(&udp(4500, &[0xff]), &PortPlan::default()),
            Classified {
                class: Class::NattKeepalive,
                detail: Detail::None
            }
        );
        assert_eq!(class_of(&udp(500, &[0xff])), Class::Other);
        assert_eq!(class_of(&udp(4500, &[0xfe])), Class::Other);
        assert_eq!(class_of(&udp(4500, &[0xff, 0xff])), Class::Other);
        let mut v = udp(4500, &[0xff]);
        v.datagram_len = 2;
        assert_eq!(class_of(&v), Class::Other);
    }

    #[test]
    fn esp_in_udp() {
        assert_eq!(
            classify(&udp(4500, &ESP_IN_UDP), &PortPlan::default()),
            Classified {
                class: Class::EspInUdp,
                detail: Detail::Esp { spi: 0xc1a2_b3d4 }
            }
        );
        for len in 0..ESP_IN_UDP.len() {
            let want = if len >= 8 {
                Class::EspInUdp
            } else {
                Class::Other
            };
            assert_eq!(class_of(&udp(4500, &ESP_IN_UDP[..len])), want, "len {len}");
            // A first fragment: what counts is the datagram length.
            let mut v = udp(4500, &ESP_IN_UDP[..len]);
            v.datagram_len = ESP_IN_UDP.len();
            let want = if len >= 4 {
                Class::EspInUdp
            } else {
                Class::Other
            };
            assert_eq!(class_of(&v), want, "first fragment len {len}");
        }
    }

    #[test]
    fn esp_over_ip() {
        fn esp(payload: &[u8]) -> L4View<'_> {
            L4View {
                protocol: ip_proto::ESP,
                ..udp(0, payload)
            }
        }
        assert_eq!(
            classify(&esp(&ESP_IN_UDP), &PortPlan::default()),
            Classified {
                class: Class::Esp,
                detail: Detail::Esp { spi: 0xc1a2_b3d4 }
            }
        );
        for len in 0..8 {
            assert_eq!(
                class_of(&esp(&ESP_IN_UDP[..len])),
                Class::Other,
                "len {len}"
            );
        }
        assert_eq!(class_of(&esp(&ESP_IN_UDP[..8])), Class::Esp);
    }

    #[test]
    fn tls_client_hello_with_sni() {
        let c = classify(&tcp(443, &TLS_CLIENT_HELLO), &PortPlan::default());
        assert_eq!(
            c,
            Classified {
                class: Class::Tls,
                detail: Detail::Tls {
                    client_hello: true,
                    sni: Some(b"vpn.example.net")
                },
            }
        );
        // Application data on the same connection.
        let data = [0x17, 0x03, 0x03, 0x00, 0x20, 0xaa];
        assert_eq!(
            classify(&tcp(443, &data), &PortPlan::default()).detail,
            Detail::Tls {
                client_hello: false,
                sni: None
            }
        );
        // Not TLS, an empty segment, TLS to the wrong port or over UDP.
        assert_eq!(class_of(&tcp(443, b"GET / HTTP/1.1\r\n")), Class::Other);
        assert_eq!(class_of(&tcp(443, &[])), Class::Other);
        assert_eq!(class_of(&tcp(8443, &TLS_CLIENT_HELLO)), Class::Other);
        assert_eq!(class_of(&udp(443, &TLS_CLIENT_HELLO)), Class::Other);
        // Cut short anywhere: still TLS once the record header is there.
        for len in 0..TLS_CLIENT_HELLO.len() {
            let want = if len >= 5 { Class::Tls } else { Class::Other };
            assert_eq!(class_of(&tcp(443, &TLS_CLIENT_HELLO[..len])), want);
        }
    }

    #[test]
    fn dtls_client_hello() {
        assert_eq!(
            classify(&udp(443, &DTLS_CLIENT_HELLO), &PortPlan::default()),
            Classified {
                class: Class::Dtls,
                detail: Detail::Dtls { client_hello: true }
            }
        );
        let data = [
            0x17, 0xfe, 0xfd, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x07, 0x00, 0x01, 0x42,
        ];
        assert_eq!(
            classify(&udp(443, &data), &PortPlan::default()).detail,
            Detail::Dtls {
                client_hello: false
            }
        );
        assert_eq!(class_of(&udp(443, &ESP_IN_UDP)), Class::Other);
        assert_eq!(class_of(&tcp(443, &DTLS_CLIENT_HELLO)), Class::Other);
        for len in 0..DTLS_CLIENT_HELLO.len() {
            let want = if len >= 13 { Class::Dtls } else { Class::Other };
            assert_eq!(class_of(&udp(443, &DTLS_CLIENT_HELLO[..len])), want);
        }
    }

    #[test]
    fn shared_ports() {
        // Everything on one UDP port: each protocol is still told apart.
        let p = PortPlan {
            ike: 4500,
            natt: 4500,
            dtls: 4500,
            tls: 4500,
        };
        let c = |payload: &[u8]| classify(&udp(4500, payload), &p).class;
        assert_eq!(c(&AUTH_NATT), Class::Ike);
        assert_eq!(c(&SA_INIT), Class::Ike);
        assert_eq!(c(&[0xff]), Class::NattKeepalive);
        assert_eq!(c(&DTLS_CLIENT_HELLO), Class::Dtls);
        assert_eq!(c(&ESP_IN_UDP), Class::EspInUdp);
        assert_eq!(c(&[0, 0, 0, 0, 1, 2, 3, 4]), Class::Other);
        assert_eq!(
            classify(&tcp(4500, &TLS_CLIENT_HELLO), &p).class,
            Class::Tls
        );
    }

    #[test]
    fn unknown_protocols() {
        for proto in [0u8, 1, 47, 51, 58, 132, 255] {
            let mut v = udp(500, &SA_INIT);
            v.protocol = proto;
            assert_eq!(class_of(&v), Class::Other, "proto {proto}");
        }
    }

    #[test]
    fn sni_stats_counts_and_normalises() {
        let mut s = SniStats::new(4);
        assert!(s.is_empty());
        for _ in 0..3 {
            s.record(b"vpn.example.net");
        }
        s.record(b"VPN.Example.NET");
        s.record(b"gw1.example.net");
        s.record(b"");
        s.record(b"bad name");
        s.record(b"caf\xc3\xa9.example");
        s.record(b"nul\0");
        assert_eq!(
            s.top(),
            vec![
                ("vpn.example.net".to_string(), 4),
                ("gw1.example.net".to_string(), 1)
            ]
        );
        assert_eq!(s.recorded(), 5);
        assert_eq!(s.invalid(), 4);
        assert_eq!(s.len(), 2);
        assert_eq!(s.capacity(), 4);
        s.clear();
        assert!(s.top().is_empty());
        assert_eq!((s.recorded(), s.invalid()), (0, 0));
    }

    #[test]
    fn sni_stats_truncates_long_names() {
        let mut s = SniStats::new(2);
        let long = [b'a'; 100];
        let mut other = long;
        other[99] = b'b'; // differs only past the first 64 bytes
        s.record(&long);
        s.record(&other);
        s.record(&long[..SNI_MAX_LEN]);
        assert_eq!(s.top(), vec![("a".repeat(SNI_MAX_LEN), 3)]);
    }

    #[test]
    fn sni_stats_evicts_the_minimum() {
        let mut s = SniStats::new(2);
        s.record(b"a.example");
        s.record(b"a.example");
        s.record(b"b.example");
        // Full: c takes b's slot and count (1) plus one.
        s.record(b"c.example");
        assert_eq!(
            s.top(),
            vec![("a.example".to_string(), 2), ("c.example".to_string(), 2)]
        );
        // Ties in the minimum go to the first slot found.
        s.record(b"d.example");
        assert_eq!(
            s.top(),
            vec![("d.example".to_string(), 3), ("c.example".to_string(), 2)]
        );
        // Zero slots: only totals.
        let mut z = SniStats::new(0);
        z.record(b"a.example");
        assert!(z.top().is_empty());
        assert_eq!(z.recorded(), 1);
    }

    #[test]
    fn sni_stats_merge() {
        let mut w1 = SniStats::new(3);
        let mut w2 = SniStats::new(3);
        w1.record(b"a.example");
        w1.record(b"b.example");
        w1.record(b"x y");
        w2.record(b"a.example");
        w2.record(b"a.example");
        w2.record(b"c.example");
        let mut total = SniStats::new(8);
        w1.merge_into(&mut total);
        w2.merge_into(&mut total);
        assert_eq!(
            total.top(),
            vec![
                ("a.example".to_string(), 3),
                ("b.example".to_string(), 1),
                ("c.example".to_string(), 1)
            ]
        );
        assert_eq!(total.recorded(), 5);
        assert_eq!(total.invalid(), 1);
        // Into a smaller table: counts stay upper bounds and their sum is preserved.
        let mut small = SniStats::new(1);
        total.merge_into(&mut small);
        assert_eq!(small.top(), vec![("c.example".to_string(), 5)]);
    }

    proptest! {
        #[test]
        fn arbitrary_views_never_panic(
            protocol in prop::sample::select(vec![0u8, 6, 17, 50, 51]),
            port in prop::sample::select(vec![0u16, 443, 500, 4500, 8443]),
            payload in proptest::collection::vec(any::<u8>(), 0..300),
            extra in 0usize..2000,
            frag in any::<bool>(),
        ) {
            let v = L4View {
                protocol,
                server_port: port,
                payload: &payload,
                datagram_len: payload.len() + extra,
                non_first_fragment: frag,
            };
            let c = classify(&v, &PortPlan::default());
            if frag {
                prop_assert_eq!(c.class, Class::Fragment);
            }
            // The detail always matches the class.
            let consistent = match c.detail {
                Detail::None => matches!(
                    c.class,
                    Class::NattKeepalive | Class::Fragment | Class::Other
                ),
                Detail::Ike { .. } => c.class == Class::Ike,
                Detail::Esp { .. } => matches!(c.class, Class::Esp | Class::EspInUdp),
                Detail::Dtls { .. } => c.class == Class::Dtls,
                Detail::Tls { .. } => c.class == Class::Tls,
            };
            prop_assert!(consistent);
        }

        #[test]
        fn common_class_agrees_with_classify(
            protocol in prop::sample::select(vec![0u8, 6, 17, 50, 51]),
            port in prop::sample::select(vec![0u16, 443, 500, 4500, 8443]),
            plan in prop::sample::select(vec![
                PortPlan::default(),
                PortPlan { ike: 4500, natt: 4500, dtls: 443, tls: 443 },
                PortPlan { ike: 500, natt: 4500, dtls: 4500, tls: 443 },
            ]),
            head in prop::sample::select(vec![vec![], vec![0xff], vec![0, 0, 0, 0], vec![0, 0, 0, 1]]),
            tail in proptest::collection::vec(any::<u8>(), 0..40),
            extra in 0usize..20,
            frag in any::<bool>(),
        ) {
            let payload = [head, tail].concat();
            let v = L4View {
                protocol,
                server_port: port,
                payload: &payload,
                datagram_len: if protocol == ip_proto::UDP { payload.len() + extra } else { payload.len() },
                non_first_fragment: frag,
            };
            let full = classify(&v, &plan);
            if let Some(class) = common_class(&v, &plan) {
                prop_assert_eq!(class, full.class);
                // Nothing a caller counts beyond the class.
                let counted = matches!(
                    full.detail,
                    Detail::Tls { client_hello: true, .. } | Detail::Dtls { client_hello: true }
                );
                prop_assert!(!counted);
            }
        }

        #[test]
        fn common_class_knows_the_usual_traffic(
            spi in 1u32..,
            rest in proptest::collection::vec(any::<u8>(), 4..200),
        ) {
            let esp = [spi.to_be_bytes().to_vec(), rest].concat();
            let plan = PortPlan::default();
            prop_assert_eq!(common_class(&udp(4500, &esp), &plan), Some(Class::EspInUdp));
            prop_assert_eq!(common_class(&udp(4500, &[0xff]), &plan), Some(Class::NattKeepalive));
            let raw = L4View { protocol: ip_proto::ESP, server_port: 0, payload: &esp, datagram_len: esp.len(), non_first_fragment: false };
            prop_assert_eq!(common_class(&raw, &plan), Some(Class::Esp));
        }

        #[test]
        fn unknown_port_is_other(
            tcp_not_udp in any::<bool>(),
            port in any::<u16>().prop_filter("not planned", |p| ![443, 500, 4500].contains(p)),
            payload in proptest::collection::vec(any::<u8>(), 0..300),
        ) {
            let mut v = udp(port, &payload);
            if tcp_not_udp {
                v.protocol = ip_proto::TCP;
            }
            prop_assert_eq!(
                classify(&v, &PortPlan::default()),
                Classified { class: Class::Other, detail: Detail::None }
            );
            // The same bytes prefixed by any valid header still do not classify off-plan.
            let hello = client_hello_with(&[]);
            let v = tcp(port, &hello);
            prop_assert_eq!(class_of(&v), Class::Other);
        }

        #[test]
        fn space_saving_guarantees(
            stream in proptest::collection::vec(0u8..12, 0..400),
            slots in 1usize..6,
        ) {
            // A skewed stream over 12 names.
            let names: Vec<String> = (0..12).map(|i| format!("h{i}.example")).collect();
            let mut s = SniStats::new(slots);
            let mut truth: HashMap<&str, u64> = HashMap::new();
            for &i in &stream {
                let i = usize::from(if i >= 6 { i % 3 } else { i });
                s.record(names[i].as_bytes());
                *truth.entry(names[i].as_str()).or_default() += 1;
            }
            let top = s.top();
            prop_assert!(top.len() <= slots);
            // Counts sum to the stream length and each is an upper bound.
            prop_assert_eq!(top.iter().map(|e| e.1).sum::<u64>(), stream.len() as u64);
            for (name, count) in &top {
                prop_assert!(*count >= truth.get(name.as_str()).copied().unwrap_or(0));
            }
            // Every name more frequent than n/k is tracked.
            for (name, t) in &truth {
                if *t > stream.len() as u64 / slots as u64 {
                    prop_assert!(top.iter().any(|e| e.0 == *name), "{} lost", name);
                }
            }
            prop_assert!(top.windows(2).all(|w| w[0].1 >= w[1].1));
        }

        #[test]
        fn sni_stats_arbitrary_bytes(
            names in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..80), 0..50),
        ) {
            let mut s = SniStats::new(8);
            for n in &names {
                s.record(n);
            }
            prop_assert_eq!(s.recorded() + s.invalid(), names.len() as u64);
            for (name, _) in s.top() {
                prop_assert!(!name.is_empty() && name.len() <= SNI_MAX_LEN);
                prop_assert!(name.bytes().all(|b| b.is_ascii_graphic() && !b.is_ascii_uppercase()));
            }
        }
    }
}
