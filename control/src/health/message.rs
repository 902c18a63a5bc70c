//! Probe messages: the requests the health probes send and the checks of what comes back.
//!
//! Pure functions over bytes, no I/O. Each request is built so that a live daemon answers it
//! at once and at no cost to itself:
//!
//! - IKEv2: an IKE_SA_INIT request whose KE payload uses D-H group 1 (MODP-768), which none of
//!   its proposals offers. A responder picks a group from the proposals, sees that the KE payload
//!   is for another one and answers INVALID_KE_PAYLOAD (or NO_PROPOSAL_CHOSEN) without creating
//!   a half-open IKE SA. A request it accepted would cost it state for half a minute, and
//!   strongSwan refuses such requests from one source after a few (see `shared/PEERS.md`).
//! - TLS: a ClientHello with an empty TLS 1.3 key_share list, so a TLS 1.3 server answers with a
//!   HelloRetryRequest (itself a ServerHello message) and a TLS 1.2 server with its ServerHello.
//! - DTLS 1.2: a ClientHello without a cookie, which a server answers with a HelloVerifyRequest
//!   (or a ServerHello when it does not ask for cookies).
//! - ICMP: an echo request.
//!
//! The checkers never panic, whatever the input; they parse with the dataplane's wire views.

use dataplane::rng::SplitMix64;
use dataplane::wire::dtls::{self, DtlsRecord};
use dataplane::wire::icmp::{icmpv4_type, Icmpv4Packet};
use dataplane::wire::icmpv6::{icmpv6_type, Icmpv6Packet};
use dataplane::wire::ike::{
    self, exchange, flags, notify_type, payload_type, IkeHeader, IkeHeaderRepr, PayloadHeader,
    PayloadHeaderRepr, ProposalRepr, SaRepr, TransformRepr,
};
use dataplane::wire::ip_proto;
use dataplane::wire::ipv4::Ipv4Packet;
use dataplane::wire::tls::{self, content_type, handshake_type, TlsRecord};
use dataplane::wire::Error as WireError;

/// IKEv2 transform and algorithm ids (RFC 7296 §3.3, the IANA registry) the probe offers; the
/// SA structure itself (markers, protocol id, attributes) is `dataplane::wire::ike::sa`.
pub mod ike_ids {
    /// Transform type 1: encryption algorithm.
    pub const ENCR: u8 = 1;
    /// Transform type 2: pseudo-random function.
    pub const PRF: u8 = 2;
    /// Transform type 3: integrity algorithm.
    pub const INTEG: u8 = 3;
    /// Transform type 4: Diffie-Hellman group.
    pub const DH: u8 = 4;
    /// ENCR_AES_CBC.
    pub const ENCR_AES_CBC: u16 = 12;
    /// ENCR_AES_GCM_16 (RFC 5282).
    pub const ENCR_AES_GCM_16: u16 = 20;
    /// PRF_HMAC_SHA2_256.
    pub const PRF_HMAC_SHA2_256: u16 = 5;
    /// PRF_HMAC_SHA2_384.
    pub const PRF_HMAC_SHA2_384: u16 = 6;
    /// PRF_HMAC_SHA2_512.
    pub const PRF_HMAC_SHA2_512: u16 = 7;
    /// AUTH_HMAC_SHA2_256_128.
    pub const AUTH_HMAC_SHA2_256_128: u16 = 12;
    /// AUTH_HMAC_SHA2_384_192.
    pub const AUTH_HMAC_SHA2_384_192: u16 = 13;
    /// AUTH_HMAC_SHA2_512_256.
    pub const AUTH_HMAC_SHA2_512_256: u16 = 14;
    /// D-H group 1, 768-bit MODP: what the probe's KE payload claims, and offered nowhere.
    pub const DH_MODP_768: u16 = 1;
    /// Length of a group 1 public value.
    pub const DH_MODP_768_LEN: usize = 96;
    /// The groups the probe offers: 2048-bit MODP, NIST P-256, P-384, P-521, Curve25519.
    pub const OFFERED_GROUPS: [u16; 5] = [14, 19, 20, 21, 31];
}

/// What an IKE_SA_INIT response to the probe says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IkeAnswer {
    /// An SA payload and no error notify: the responder accepted the proposal (and now holds a
    /// half-open SA; the probe is built so that this should not happen).
    Accepted,
    /// A notify without an SA payload, or an error notify: its type, e.g.
    /// `INVALID_KE_PAYLOAD` (17), `NO_PROPOSAL_CHOSEN` (14) or `COOKIE` (16390).
    Notify(u16),
}

impl IkeAnswer {
    /// A short name for logs and `show` output: the notify's name where known.
    pub fn name(&self) -> String {
        match *self {
            IkeAnswer::Accepted => "accepted".to_string(),
            IkeAnswer::Notify(t) => match t {
                notify_type::INVALID_KE_PAYLOAD => "INVALID_KE_PAYLOAD".to_string(),
                notify_type::NO_PROPOSAL_CHOSEN => "NO_PROPOSAL_CHOSEN".to_string(),
                notify_type::COOKIE => "COOKIE".to_string(),
                notify_type::INVALID_SYNTAX => "INVALID_SYNTAX".to_string(),
                notify_type::INVALID_MAJOR_VERSION => "INVALID_MAJOR_VERSION".to_string(),
                notify_type::TEMPORARY_FAILURE => "TEMPORARY_FAILURE".to_string(),
                notify_type::REDIRECT => "REDIRECT".to_string(),
                t => format!("notify {t}"),
            },
        }
    }
}

/// The probe's SA payload body: two proposals of common transforms and the D-H groups
/// [`ike_ids::OFFERED_GROUPS`].
///
/// Two proposals rather than one because RFC 5282 §8 forbids an integrity transform in a
/// proposal with a combined-mode cipher: #1 is AES-CBC (128, 256) with HMAC-SHA2 integrity, #2
/// AES-GCM-16 (128, 256) without; both offer PRF HMAC-SHA2-256/384/512 and the same groups.
fn probe_sa_body() -> Vec<u8> {
    use ike_ids::*;
    let t = |transform_type, transform_id, key_length| TransformRepr {
        transform_type,
        transform_id,
        key_length,
    };
    let prfs = [PRF_HMAC_SHA2_256, PRF_HMAC_SHA2_384, PRF_HMAC_SHA2_512].map(|id| t(PRF, id, None));
    let integs = [
        AUTH_HMAC_SHA2_256_128,
        AUTH_HMAC_SHA2_384_192,
        AUTH_HMAC_SHA2_512_256,
    ]
    .map(|id| t(INTEG, id, None));
    let groups = OFFERED_GROUPS.map(|g| t(DH, g, None));
    let mut cbc = vec![
        t(ENCR, ENCR_AES_CBC, Some(128)),
        t(ENCR, ENCR_AES_CBC, Some(256)),
    ];
    cbc.extend(prfs);
    cbc.extend(integs);
    cbc.extend(groups);
    let mut gcm = vec![
        t(ENCR, ENCR_AES_GCM_16, Some(128)),
        t(ENCR, ENCR_AES_GCM_16, Some(256)),
    ];
    gcm.extend(prfs);
    gcm.extend(groups);
    let proposal = |number, transforms| ProposalRepr {
        number,
        protocol_id: dataplane::wire::ike::sa::PROTO_IKE,
        transforms,
    };
    let sa = SaRepr {
        proposals: vec![proposal(1, cbc), proposal(2, gcm)],
    };
    let mut body = vec![0; sa.buffer_len()];
    sa.emit(&mut body);
    body
}

/// Appends a generic payload header and `body` (RFC 7296 §3.2), not critical.
fn ike_payload(out: &mut Vec<u8>, next: u8, body: &[u8]) {
    // The probe's payloads are a few hundred bytes at most.
    let header = PayloadHeaderRepr::new(next, body.len());
    let at = out.len();
    out.resize(at + header.buffer_len(), 0);
    header.emit(&mut PayloadHeader::new_unchecked(&mut out[at..]));
    out.extend_from_slice(body);
}

/// The IKE_SA_INIT request a probe sends (RFC 7296 §1.2, encoded per §3): HDR(SPIi =
/// `initiator_spi`, SPIr = 0, version 2.0, IKE_SA_INIT, Initiator, message ID 0), SA (see the
/// module docs: groups 14, 19, 20, 21, 31 offered), KE (group 1, 96 bytes) and Ni (`nonce`).
///
/// The KE data is derived from the SPI and the nonce: a responder never computes with it, as
/// group 1 is not one it can choose.
pub fn ike_sa_init_probe(initiator_spi: u64, nonce: &[u8; 32]) -> Vec<u8> {
    let mut seed = initiator_spi;
    for chunk in nonce.chunks(8) {
        let mut w = [0u8; 8];
        w[..chunk.len()].copy_from_slice(chunk);
        seed = SplitMix64(seed ^ u64::from_be_bytes(w)).next_u64();
    }
    let mut ke = Vec::with_capacity(4 + ike_ids::DH_MODP_768_LEN);
    ke.extend_from_slice(&ike_ids::DH_MODP_768.to_be_bytes());
    ke.extend_from_slice(&[0, 0]);
    ke.extend(SplitMix64(seed).bytes(ike_ids::DH_MODP_768_LEN));

    let mut msg = Vec::with_capacity(400);
    msg.resize(ike::HEADER_LEN, 0); // written last, with the length
    ike_payload(&mut msg, payload_type::KE, &probe_sa_body());
    ike_payload(&mut msg, payload_type::NONCE, &ke);
    ike_payload(&mut msg, payload_type::NONE, nonce);
    let header = IkeHeaderRepr {
        initiator_spi,
        responder_spi: 0,
        next_payload: payload_type::SA,
        exchange_type: exchange::IKE_SA_INIT,
        flags: flags::INITIATOR,
        message_id: 0,
        // A few hundred bytes: the fixed SA, KE and nonce.
        length: u32::try_from(msg.len()).unwrap_or(u32::MAX),
    };
    header.emit(&mut IkeHeader::new_unchecked(&mut msg[..]));
    msg
}

/// Why a datagram is not the answer to an IKE probe.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum IkeResponseError {
    /// The IKE header does not parse.
    #[error("not an IKE message: {0}")]
    NotIke(WireError),
    /// Not IKEv2.
    #[error("IKE major version {0}")]
    MajorVersion(u8),
    /// Another exchange than IKE_SA_INIT.
    #[error("exchange type {0}, not IKE_SA_INIT")]
    ExchangeType(u8),
    /// The Response flag is clear (our own request echoed back, say).
    #[error("not a response")]
    NotAResponse,
    /// The answer to another probe.
    #[error("initiator SPI {got:016x}, not ours ({ours:016x})")]
    OtherSpi { got: u64, ours: u64 },
    /// IKE_SA_INIT's message ID is 0.
    #[error("message ID {0}, not 0")]
    MessageId(u32),
    /// The cleartext payload chain does not parse.
    #[error("payload chain: {0}")]
    PayloadChain(WireError),
    /// A notify payload does not parse.
    #[error("notify payload: {0}")]
    Notify(WireError),
    /// Neither accepted nor refused.
    #[error("neither an SA payload nor a notify")]
    NoSaNorNotify,
}

/// Checks an IKE datagram (the UDP payload, after any non-ESP marker) as the answer to the
/// probe with `initiator_spi`.
///
/// Ok for a well-formed IKEv2 IKE_SA_INIT response (Response flag, message ID 0) to our SPI
/// whose cleartext payload chain parses: [`IkeAnswer::Notify`] with the first error notify if
/// there is one, else with the first notify if there is no SA payload (COOKIE, REDIRECT), else
/// [`IkeAnswer::Accepted`]. Err says what is wrong otherwise.
pub fn check_ike_response(
    datagram: &[u8],
    initiator_spi: u64,
) -> Result<IkeAnswer, IkeResponseError> {
    let h = IkeHeader::new_checked(datagram, datagram.len()).map_err(IkeResponseError::NotIke)?;
    if h.major_version() != 2 {
        return Err(IkeResponseError::MajorVersion(h.major_version()));
    }
    if h.exchange_type() != exchange::IKE_SA_INIT {
        return Err(IkeResponseError::ExchangeType(h.exchange_type()));
    }
    if !h.is_response() {
        return Err(IkeResponseError::NotAResponse);
    }
    if h.initiator_spi() != initiator_spi {
        return Err(IkeResponseError::OtherSpi {
            got: h.initiator_spi(),
            ours: initiator_spi,
        });
    }
    if h.message_id() != 0 {
        return Err(IkeResponseError::MessageId(h.message_id()));
    }
    let mut sa = false;
    let mut first_notify = None;
    for p in h.payloads() {
        let p = p.map_err(IkeResponseError::PayloadChain)?;
        match p.payload_type {
            payload_type::SA => sa = true,
            payload_type::NOTIFY => {
                let n = p.notify().map_err(IkeResponseError::Notify)?;
                if n.is_error() {
                    return Ok(IkeAnswer::Notify(n.notify_type()));
                }
                first_notify = first_notify.or(Some(n.notify_type()));
            }
            _ => {}
        }
    }
    match (sa, first_notify) {
        (true, _) => Ok(IkeAnswer::Accepted),
        (false, Some(t)) => Ok(IkeAnswer::Notify(t)),
        (false, None) => Err(IkeResponseError::NoSaNorNotify),
    }
}

/// What a (D)TLS server's first record says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsAnswer {
    /// A handshake record starting with a ServerHello (a TLS 1.3 HelloRetryRequest is one too).
    ServerHello,
    /// DTLS: a handshake record starting with a HelloVerifyRequest (the cookie exchange).
    HelloVerifyRequest,
    /// An alert record: the server refused the hello, but it is there to refuse it.
    Alert {
        /// 1 warning, 2 fatal.
        level: u8,
        /// The alert description, e.g. 40 handshake_failure, 70 protocol_version.
        description: u8,
    },
}

impl TlsAnswer {
    /// A short name for logs and `show` output: "ServerHello", "HelloVerifyRequest",
    /// "alert LEVEL/DESCRIPTION".
    pub fn name(&self) -> String {
        match self {
            TlsAnswer::ServerHello => "ServerHello".to_string(),
            TlsAnswer::HelloVerifyRequest => "HelloVerifyRequest".to_string(),
            TlsAnswer::Alert { level, description } => format!("alert {level}/{description}"),
        }
    }
}

/// Handshake type hello_verify_request (DTLS, RFC 6347 §4.2.1).
const HELLO_VERIFY_REQUEST: u8 = 3;

/// The longest SNI the probe sends: a DNS name has at most 253 characters.
pub const MAX_SNI_LEN: usize = 255;

/// TLS 1.2 ECDHE suites with AEAD ciphers, offered by both hellos: ECDHE-ECDSA and ECDHE-RSA
/// with AES-128-GCM, AES-256-GCM and ChaCha20-Poly1305.
const TLS12_SUITES: [u16; 6] = [0xc02b, 0xc02f, 0xc02c, 0xc030, 0xcca9, 0xcca8];
/// TLS 1.3 suites: AES-128-GCM, AES-256-GCM, ChaCha20-Poly1305.
const TLS13_SUITES: [u16; 3] = [0x1301, 0x1302, 0x1303];
/// supported_groups: x25519, secp256r1, secp384r1.
const GROUPS: [u16; 3] = [0x001d, 0x0017, 0x0018];
/// signature_algorithms: ECDSA P-256/P-384/P-521, RSA-PSS-RSAE SHA-256/384/512, Ed25519,
/// RSA-PKCS1 SHA-256/384/512.
const SIG_ALGS: [u16; 10] = [
    0x0403, 0x0503, 0x0603, 0x0804, 0x0805, 0x0806, 0x0807, 0x0401, 0x0501, 0x0601,
];

/// Extension type numbers (RFC 8446 §4.2 and the IANA registry).
mod ext {
    pub const SERVER_NAME: u16 = 0;
    pub const SUPPORTED_GROUPS: u16 = 10;
    pub const EC_POINT_FORMATS: u16 = 11;
    pub const SIGNATURE_ALGORITHMS: u16 = 13;
    pub const EXTENDED_MASTER_SECRET: u16 = 23;
    pub const SUPPORTED_VERSIONS: u16 = 43;
    pub const PSK_KEY_EXCHANGE_MODES: u16 = 45;
    pub const KEY_SHARE: u16 = 51;
    pub const RENEGOTIATION_INFO: u16 = 0xff01;
}

fn put16(out: &mut Vec<u8>, v: u16) {
    out.extend_from_slice(&v.to_be_bytes());
}

// Hello bodies are a few hundred bytes (fixed lists, the SNI cut to MAX_SNI_LEN): far below
// 2^24, so the u32 holds v whole and its low three bytes are all of it.
#[allow(clippy::cast_possible_truncation)]
fn put24(out: &mut Vec<u8>, v: usize) {
    debug_assert!(v < 1 << 24);
    out.extend_from_slice(&(v as u32).to_be_bytes()[1..]);
}

/// Appends `data` behind a 16-bit length (every caller's data is far below 64 KiB: fixed
/// lists and records of them, the SNI cut to [`MAX_SNI_LEN`]).
#[allow(clippy::cast_possible_truncation)]
fn vec16(out: &mut Vec<u8>, data: &[u8]) {
    debug_assert!(data.len() <= usize::from(u16::MAX));
    put16(out, data.len() as u16);
    out.extend_from_slice(data);
}

fn u16_list(values: &[u16]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_be_bytes()).collect()
}

/// Appends one extension: type, 16-bit length, data.
fn extension(out: &mut Vec<u8>, ty: u16, data: &[u8]) {
    put16(out, ty);
    vec16(out, data);
}

/// The extensions both hellos share: extended_master_secret and renegotiation_info (which
/// GnuTLS and OpenSSL servers expect of current clients), supported_groups, ec_point_formats
/// (uncompressed) and signature_algorithms.
fn common_extensions(out: &mut Vec<u8>) {
    extension(out, ext::EXTENDED_MASTER_SECRET, &[]);
    extension(out, ext::RENEGOTIATION_INFO, &[0]);
    let mut groups = Vec::new();
    vec16(&mut groups, &u16_list(&GROUPS));
    extension(out, ext::SUPPORTED_GROUPS, &groups);
    extension(out, ext::EC_POINT_FORMATS, &[1, 0]);
    let mut sigs = Vec::new();
    vec16(&mut sigs, &u16_list(&SIG_ALGS));
    extension(out, ext::SIGNATURE_ALGORITHMS, &sigs);
}

/// The TLS ClientHello record a probe sends: record version 0x0301, client_version 0x0303,
/// `random`, the 32-byte `session_id` (TLS 1.3 middlebox compatibility), the TLS 1.3 suites and
/// the TLS 1.2 ECDHE AEAD suites, null compression, and the extensions server_name (when `sni`
/// is a non-empty name; cut to [`MAX_SNI_LEN`] bytes), extended_master_secret,
/// renegotiation_info, supported_groups (x25519, secp256r1, secp384r1), ec_point_formats,
/// signature_algorithms, supported_versions (1.3, 1.2), psk_key_exchange_modes (psk_dhe_ke) and
/// key_share with an empty list, which a TLS 1.3 server answers with a HelloRetryRequest.
pub fn tls_client_hello_probe(
    random: &[u8; 32],
    session_id: &[u8; 32],
    sni: Option<&str>,
) -> Vec<u8> {
    let mut body = Vec::with_capacity(256);
    put16(&mut body, tls::version::TLS_1_2);
    body.extend_from_slice(random);
    body.push(32);
    body.extend_from_slice(session_id);
    let mut suites = u16_list(&TLS13_SUITES);
    suites.extend(u16_list(&TLS12_SUITES));
    vec16(&mut body, &suites);
    body.extend_from_slice(&[1, 0]); // one compression method: null

    let mut exts = Vec::with_capacity(160);
    if let Some(name) = sni.map(str::as_bytes).filter(|n| !n.is_empty()) {
        let name = name.get(..MAX_SNI_LEN).unwrap_or(name);
        let mut entry = vec![0]; // name_type host_name
        vec16(&mut entry, name);
        let mut list = Vec::new();
        vec16(&mut list, &entry);
        extension(&mut exts, ext::SERVER_NAME, &list);
    }
    common_extensions(&mut exts);
    extension(
        &mut exts,
        ext::SUPPORTED_VERSIONS,
        &[4, 0x03, 0x04, 0x03, 0x03],
    );
    extension(&mut exts, ext::PSK_KEY_EXCHANGE_MODES, &[1, 1]);
    extension(&mut exts, ext::KEY_SHARE, &[0, 0]); // client_shares: empty
    vec16(&mut body, &exts);

    let mut hs = Vec::with_capacity(4 + body.len());
    hs.push(handshake_type::CLIENT_HELLO);
    put24(&mut hs, body.len());
    hs.extend_from_slice(&body);
    let mut record = Vec::with_capacity(tls::HEADER_LEN + hs.len());
    record.push(content_type::HANDSHAKE);
    put16(&mut record, tls::version::TLS_1_0);
    vec16(&mut record, &hs);
    record
}

/// Why bytes from a (D)TLS server are not the answer to a probe.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TlsResponseError {
    /// The TLS record header does not parse.
    #[error("not a TLS record: {0}")]
    NotTls(WireError),
    /// The DTLS record header does not parse.
    #[error("not a DTLS record: {0}")]
    NotDtls(WireError),
    /// Neither a handshake nor an alert record.
    #[error("record content type {0}, not handshake or alert")]
    ContentType(u8),
    /// A record version whose major is not 3.
    #[error("record version {0}.x, not TLS")]
    Version(u8),
    /// An alert record too short for an alert.
    #[error("alert record of {0} bytes")]
    ShortAlert(usize),
    /// A handshake record with no message.
    #[error("empty handshake record")]
    EmptyHandshake,
    /// A handshake message other than the server's hello.
    #[error("handshake message type {0}, not a server hello")]
    HandshakeType(u8),
    /// A datagram that ends inside its record's first message.
    #[error("DTLS record cut short")]
    CutShort,
}

/// The answer in the first record: `content` is its content type, `length` its declared
/// fragment length and `fragment` the fragment bytes present. Shared by TLS and DTLS (their
/// alert and handshake messages start alike); `Ok(None)` when more bytes are needed.
fn first_record_answer(
    content: u8,
    length: usize,
    fragment: &[u8],
    dtls: bool,
) -> Result<Option<TlsAnswer>, TlsResponseError> {
    match content {
        content_type::ALERT => {
            if length < 2 {
                return Err(TlsResponseError::ShortAlert(length));
            }
            match fragment {
                [level, description, ..] => Ok(Some(TlsAnswer::Alert {
                    level: *level,
                    description: *description,
                })),
                _ => Ok(None),
            }
        }
        content_type::HANDSHAKE => {
            if length == 0 {
                return Err(TlsResponseError::EmptyHandshake);
            }
            match fragment.first() {
                None => Ok(None),
                Some(&handshake_type::SERVER_HELLO) => Ok(Some(TlsAnswer::ServerHello)),
                Some(&HELLO_VERIFY_REQUEST) if dtls => Ok(Some(TlsAnswer::HelloVerifyRequest)),
                Some(&t) => Err(TlsResponseError::HandshakeType(t)),
            }
        }
        t => Err(TlsResponseError::ContentType(t)),
    }
}

/// Checks the first bytes a TLS server sent on the probe's connection.
///
/// `Ok(None)`: not enough bytes yet to tell (fewer than the record header and the first byte or
/// two of its body). `Ok(Some(_))`: a handshake record whose first message is a ServerHello, or
/// an alert record. Err: anything else (not TLS, another record or message type).
pub fn check_tls_response(stream_prefix: &[u8]) -> Result<Option<TlsAnswer>, TlsResponseError> {
    if stream_prefix.len() < tls::HEADER_LEN {
        // Refuse early what cannot become a TLS record header (an HTTP or SSH banner...).
        return match stream_prefix {
            [ct, ..] if !matches!(*ct, content_type::ALERT | content_type::HANDSHAKE) => {
                Err(TlsResponseError::ContentType(*ct))
            }
            [_, major, ..] if *major != 3 => Err(TlsResponseError::Version(*major)),
            _ => Ok(None),
        };
    }
    let record = TlsRecord::new_checked(stream_prefix).map_err(TlsResponseError::NotTls)?;
    first_record_answer(
        record.content_type(),
        usize::from(record.length()),
        record.fragment(),
        false,
    )
}

/// The DTLS 1.2 ClientHello a probe sends, in one datagram: record version 0xfeff (DTLS 1.0,
/// as clients send their first flight), epoch 0, sequence 0; handshake header with message_seq
/// 0, fragment_offset 0, fragment_length = length; client_version 0xfefd, `random`, empty
/// session id and cookie, the TLS 1.2 ECDHE AEAD suites, null compression, and the TLS
/// hello's extensions less the TLS 1.3 ones and server_name.
pub fn dtls_client_hello_probe(random: &[u8; 32]) -> Vec<u8> {
    let mut body = Vec::with_capacity(160);
    put16(&mut body, dtls::version::DTLS_1_2);
    body.extend_from_slice(random);
    body.push(0); // session id
    body.push(0); // cookie
    vec16(&mut body, &u16_list(&TLS12_SUITES));
    body.extend_from_slice(&[1, 0]);
    let mut exts = Vec::with_capacity(80);
    common_extensions(&mut exts);
    vec16(&mut body, &exts);

    let mut hs = Vec::with_capacity(dtls::HANDSHAKE_HEADER_LEN + body.len());
    hs.push(handshake_type::CLIENT_HELLO);
    put24(&mut hs, body.len());
    put16(&mut hs, 0); // message_seq
    put24(&mut hs, 0); // fragment_offset
    put24(&mut hs, body.len()); // fragment_length: unfragmented
    hs.extend_from_slice(&body);
    let mut record = Vec::with_capacity(dtls::HEADER_LEN + hs.len());
    record.push(content_type::HANDSHAKE);
    put16(&mut record, dtls::version::DTLS_1_0);
    record.extend_from_slice(&[0; 8]); // epoch 0, sequence number 0
    vec16(&mut record, &hs);
    record
}

/// The fatal `user_canceled` alert (epoch 0, record sequence 1) a DTLS probe sends after the
/// answer: a server that keeps one handshake at a time (OpenSSL's `s_server`) drops ours and
/// answers the next probe, and none keeps state for it.
pub fn dtls_user_canceled() -> Vec<u8> {
    let mut record = Vec::with_capacity(dtls::HEADER_LEN + 2);
    record.push(content_type::ALERT);
    put16(&mut record, dtls::version::DTLS_1_2);
    record.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 1]); // epoch 0, sequence number 1
    vec16(&mut record, &[2, 90]); // fatal, user_canceled
    record
}

/// Checks a datagram from a DTLS server as the answer to the probe: its first record must be a
/// handshake record starting with a HelloVerifyRequest or a ServerHello, or an alert.
pub fn check_dtls_response(datagram: &[u8]) -> Result<TlsAnswer, TlsResponseError> {
    let record = DtlsRecord::new_checked(datagram).map_err(TlsResponseError::NotDtls)?;
    match first_record_answer(
        record.content_type(),
        usize::from(record.length()),
        record.fragment(),
        true,
    )? {
        Some(answer) => Ok(answer),
        None => Err(TlsResponseError::CutShort),
    }
}

/// An ICMP echo request (IPv4, type 8, checksum filled) or ICMPv6 echo request (type 128,
/// checksum left zero: the kernel computes it over the pseudo-header for raw ICMPv6 sockets):
/// the message only, no IP header.
pub fn icmp_echo_request(v6: bool, ident: u16, seq: u16, payload: &[u8]) -> Vec<u8> {
    let msg_type = if v6 {
        icmpv6_type::ECHO_REQUEST
    } else {
        icmpv4_type::ECHO_REQUEST
    };
    let mut msg = vec![msg_type, 0, 0, 0];
    put16(&mut msg, ident);
    put16(&mut msg, seq);
    msg.extend_from_slice(payload);
    if !v6 {
        if let Ok(mut p) = Icmpv4Packet::new_checked(&mut msg[..]) {
            p.fill_checksum();
        }
    }
    msg
}

/// Whether `data`, as a raw ICMP socket delivers it, is the echo reply to (`ident`, `seq`).
///
/// IPv4 raw sockets deliver the IP header too: it is skipped by its IHL, and the packet must be
/// an unfragmented ICMP packet with a valid ICMP checksum. IPv6 raw sockets deliver the ICMPv6
/// message alone, checksum already verified by the kernel. The sender's address is the caller's
/// to check.
pub fn is_echo_reply(data: &[u8], v6: bool, ident: u16, seq: u16) -> bool {
    if v6 {
        return match Icmpv6Packet::new_checked(data) {
            Ok(p) => {
                p.msg_type() == icmpv6_type::ECHO_REPLY
                    && p.code() == 0
                    && p.echo_ident() == ident
                    && p.echo_seq() == seq
            }
            Err(_) => false,
        };
    }
    let Ok(ip) = Ipv4Packet::new_checked(data) else {
        return false;
    };
    if ip.protocol() != ip_proto::ICMP || ip.is_fragment() {
        return false;
    }
    match Icmpv4Packet::new_checked(ip.payload()) {
        Ok(p) => {
            p.msg_type() == icmpv4_type::ECHO_REPLY
                && p.code() == 0
                && p.echo_ident() == ident
                && p.echo_seq() == seq
                && p.verify_checksum()
        }
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // The checkers as a prober reports them: the error's text, which the assertions read.
    fn check_ike_response(datagram: &[u8], spi: u64) -> Result<IkeAnswer, String> {
        super::check_ike_response(datagram, spi).map_err(|e| e.to_string())
    }

    fn check_tls_response(prefix: &[u8]) -> Result<Option<TlsAnswer>, String> {
        super::check_tls_response(prefix).map_err(|e| e.to_string())
    }

    fn check_dtls_response(datagram: &[u8]) -> Result<TlsAnswer, String> {
        super::check_dtls_response(datagram).map_err(|e| e.to_string())
    }
    use proptest::prelude::*;

    const SPI: u64 = 0x0123_4567_89ab_cdef;
    const NONCE: [u8; 32] = [0x4e; 32];

    /// (type, body) of every payload of a checked IKE message.
    fn ike_chain(msg: &[u8]) -> Vec<(u8, Vec<u8>)> {
        let h = IkeHeader::new_checked(msg, msg.len()).unwrap();
        h.payloads()
            .map(|p| p.map(|p| (p.payload_type, p.body.to_vec())).unwrap())
            .collect()
    }

    /// An IKE_SA_INIT response header to `spi` followed by `payloads` (type, body).
    fn ike_response(spi: u64, payloads: &[(u8, &[u8])]) -> Vec<u8> {
        let mut m = spi.to_be_bytes().to_vec();
        m.extend_from_slice(&0x1122_3344_5566_7788u64.to_be_bytes());
        let first = payloads.first().map_or(payload_type::NONE, |p| p.0);
        m.extend_from_slice(&[first, 0x20, exchange::IKE_SA_INIT, flags::RESPONSE]);
        m.extend_from_slice(&[0; 8]);
        for (i, (_, body)) in payloads.iter().enumerate() {
            let next = payloads.get(i + 1).map_or(payload_type::NONE, |p| p.0);
            ike_payload(&mut m, next, body);
        }
        let len = m.len() as u32;
        m[24..28].copy_from_slice(&len.to_be_bytes());
        m
    }

    fn notify_body(ty: u16, data: &[u8]) -> Vec<u8> {
        let mut b = vec![0, 0];
        b.extend_from_slice(&ty.to_be_bytes());
        b.extend_from_slice(data);
        b
    }

    #[test]
    fn dtls_user_canceled_is_one_alert_record() {
        let a = dtls_user_canceled();
        assert_eq!(a, [0x15, 0xfe, 0xfd, 0, 0, 0, 0, 0, 0, 0, 1, 0, 2, 2, 90]);
    }

    #[test]
    fn ike_probe_header_bytes() {
        let m = ike_sa_init_probe(SPI, &NONCE);
        #[rustfmt::skip]
        let header = [
            0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef, // SPIi
            0, 0, 0, 0, 0, 0, 0, 0,                         // SPIr
            33, 0x20, 34, 0x08,                             // SA first, 2.0, IKE_SA_INIT, I
            0, 0, 0, 0,                                     // message ID
            0, 0, 0x01, 0x84,                               // length 388
        ];
        assert_eq!(m[..28], header);
        assert_eq!(m.len(), 388);
        // The wire view agrees.
        let h = IkeHeader::new_checked(&m[..], m.len()).unwrap();
        assert_eq!(h.initiator_spi(), SPI);
        assert_eq!(h.responder_spi(), 0);
        assert_eq!(h.exchange_type(), exchange::IKE_SA_INIT);
        assert!(h.is_initiator() && !h.is_response());
        assert_eq!(h.message_id(), 0);
        // Generic payload headers: SA -> KE -> Ni -> none.
        assert_eq!(m[28..32], [34, 0, 0, 220]);
        assert_eq!(m[248..252], [40, 0, 0, 104]);
        assert_eq!(m[352..356], [0, 0, 0, 36]);
    }

    #[test]
    fn ike_probe_payloads() {
        let m = ike_sa_init_probe(SPI, &NONCE);
        let chain = ike_chain(&m);
        let types: Vec<u8> = chain.iter().map(|(t, _)| *t).collect();
        assert_eq!(
            types,
            [payload_type::SA, payload_type::KE, payload_type::NONCE]
        );
        #[rustfmt::skip]
        let sa: Vec<u8> = [
            // Proposal 1 (more follow), length 120, #1, IKE, SPI size 0, 13 transforms.
            &[2, 0, 0, 120, 1, 1, 0, 13][..],
            &[3, 0, 0, 12, 1, 0, 0, 12, 0x80, 0x0e, 0, 128],   // ENCR AES-CBC 128
            &[3, 0, 0, 12, 1, 0, 0, 12, 0x80, 0x0e, 1, 0],     // ENCR AES-CBC 256
            &[3, 0, 0, 8, 2, 0, 0, 5],                         // PRF HMAC-SHA2-256
            &[3, 0, 0, 8, 2, 0, 0, 6],
            &[3, 0, 0, 8, 2, 0, 0, 7],
            &[3, 0, 0, 8, 3, 0, 0, 12],                        // INTEG HMAC-SHA2-256-128
            &[3, 0, 0, 8, 3, 0, 0, 13],
            &[3, 0, 0, 8, 3, 0, 0, 14],
            &[3, 0, 0, 8, 4, 0, 0, 14],                        // D-H 14
            &[3, 0, 0, 8, 4, 0, 0, 19],
            &[3, 0, 0, 8, 4, 0, 0, 20],
            &[3, 0, 0, 8, 4, 0, 0, 21],
            &[0, 0, 0, 8, 4, 0, 0, 31],                        // last transform
            // Proposal 2 (last), length 96, #2, IKE, SPI size 0, 10 transforms.
            &[0, 0, 0, 96, 2, 1, 0, 10],
            &[3, 0, 0, 12, 1, 0, 0, 20, 0x80, 0x0e, 0, 128],   // ENCR AES-GCM-16 128
            &[3, 0, 0, 12, 1, 0, 0, 20, 0x80, 0x0e, 1, 0],
            &[3, 0, 0, 8, 2, 0, 0, 5],
            &[3, 0, 0, 8, 2, 0, 0, 6],
            &[3, 0, 0, 8, 2, 0, 0, 7],
            &[3, 0, 0, 8, 4, 0, 0, 14],
            &[3, 0, 0, 8, 4, 0, 0, 19],
            &[3, 0, 0, 8, 4, 0, 0, 20],
            &[3, 0, 0, 8, 4, 0, 0, 21],
            &[0, 0, 0, 8, 4, 0, 0, 31],
        ]
        .concat();
        assert_eq!(chain[0].1, sa);
        // KE: group 1, reserved, 96 bytes of public value.
        assert_eq!(chain[1].1[..4], [0, 1, 0, 0]);
        assert_eq!(chain[1].1.len(), 4 + 96);
        assert_eq!(chain[2].1, NONCE);
        // Deterministic in its inputs; the KE data depends on them.
        assert_eq!(m, ike_sa_init_probe(SPI, &NONCE));
        let other = ike_sa_init_probe(SPI, &[1; 32]);
        assert_ne!(ike_chain(&other)[1].1, chain[1].1);
        // The dataplane's classifier view sees no notify in it.
        let h = IkeHeader::new_checked(&m[..], m.len()).unwrap();
        assert!(h.find_notify(notify_type::COOKIE).is_none());
    }

    #[test]
    fn ike_answers() {
        let ke = notify_body(notify_type::INVALID_KE_PAYLOAD, &[0, 19]);
        let r = ike_response(SPI, &[(payload_type::NOTIFY, &ke)]);
        assert_eq!(
            check_ike_response(&r, SPI),
            Ok(IkeAnswer::Notify(notify_type::INVALID_KE_PAYLOAD))
        );
        assert_eq!(IkeAnswer::Notify(17).name(), "INVALID_KE_PAYLOAD");
        let npc = notify_body(notify_type::NO_PROPOSAL_CHOSEN, &[]);
        let r = ike_response(SPI, &[(payload_type::NOTIFY, &npc)]);
        assert_eq!(check_ike_response(&r, SPI), Ok(IkeAnswer::Notify(14)));
        assert_eq!(IkeAnswer::Notify(14).name(), "NO_PROPOSAL_CHOSEN");
        let cookie = notify_body(notify_type::COOKIE, &[0xc0; 20]);
        let r = ike_response(SPI, &[(payload_type::NOTIFY, &cookie)]);
        assert_eq!(check_ike_response(&r, SPI), Ok(IkeAnswer::Notify(16390)));
        assert_eq!(IkeAnswer::Notify(16390).name(), "COOKIE");
        assert_eq!(IkeAnswer::Notify(9999).name(), "notify 9999");
        // An error notify wins over status notifies before it.
        let frag = notify_body(notify_type::IKEV2_FRAGMENTATION_SUPPORTED, &[]);
        let r = ike_response(
            SPI,
            &[(payload_type::NOTIFY, &frag), (payload_type::NOTIFY, &ke)],
        );
        assert_eq!(check_ike_response(&r, SPI), Ok(IkeAnswer::Notify(17)));
        // A full response (the dataplane's builder): accepted.
        let full = testkit::ike_sa_init_response(SPI, 9, &NONCE, 19, 64, &[]);
        assert_eq!(check_ike_response(&full, SPI), Ok(IkeAnswer::Accepted));
        assert_eq!(IkeAnswer::Accepted.name(), "accepted");
    }

    #[test]
    fn ike_wrong_answers() {
        let ke = notify_body(notify_type::INVALID_KE_PAYLOAD, &[0, 19]);
        let good = ike_response(SPI, &[(payload_type::NOTIFY, &ke)]);
        assert!(check_ike_response(&good, SPI + 1)
            .unwrap_err()
            .contains("not ours"));
        // Our own request echoed back.
        let probe = ike_sa_init_probe(SPI, &NONCE);
        assert!(check_ike_response(&probe, SPI)
            .unwrap_err()
            .contains("not a response"));
        let mut m = good.clone();
        m[18] = exchange::INFORMATIONAL;
        assert!(check_ike_response(&m, SPI)
            .unwrap_err()
            .contains("exchange"));
        let mut m = good.clone();
        m[23] = 1;
        assert!(check_ike_response(&m, SPI)
            .unwrap_err()
            .contains("message ID"));
        let mut m = good.clone();
        m[17] = 0x10; // IKEv1
        m[18] = exchange::V1_IDENTITY_PROTECTION;
        assert!(check_ike_response(&m, SPI).unwrap_err().contains("version"));
        // Length field disagreeing with the datagram, broken chain, truncation.
        let mut m = good.clone();
        m.push(0);
        assert!(check_ike_response(&m, SPI).is_err());
        let mut m = good.clone();
        m[31] = 200;
        assert!(check_ike_response(&m, SPI)
            .unwrap_err()
            .contains("payload chain"));
        for len in 0..good.len() {
            assert!(check_ike_response(&good[..len], SPI).is_err(), "{len}");
        }
        // No payloads at all, or only a nonce.
        let empty = ike_response(SPI, &[]);
        assert!(check_ike_response(&empty, SPI).is_err());
        let nonce = ike_response(SPI, &[(payload_type::NONCE, &NONCE)]);
        assert!(check_ike_response(&nonce, SPI).is_err());
        // A notify too short for its header.
        let short = ike_response(SPI, &[(payload_type::NOTIFY, &[0, 0])]);
        assert!(check_ike_response(&short, SPI)
            .unwrap_err()
            .contains("notify"));
    }

    /// (type, data) of each extension in an extension block.
    fn extensions(mut block: &[u8]) -> Vec<(u16, Vec<u8>)> {
        let mut out = Vec::new();
        while !block.is_empty() {
            let len = usize::from(u16::from_be_bytes([block[2], block[3]]));
            out.push((
                u16::from_be_bytes([block[0], block[1]]),
                block[4..4 + len].to_vec(),
            ));
            block = &block[4 + len..];
        }
        out
    }

    #[test]
    fn tls_probe_layout() {
        let random = [0x11; 32];
        let sid = [0x22; 32];
        let r = tls_client_hello_probe(&random, &sid, Some("gw1.example.net"));
        let len = r.len() - 5;
        assert_eq!(r[..5], [22, 3, 1, (len >> 8) as u8, len as u8]);
        let hs_len = r.len() - 9;
        assert_eq!(r[5..9], [1, 0, (hs_len >> 8) as u8, hs_len as u8]);
        let b = &r[9..];
        assert_eq!(b[..2], [3, 3]);
        assert_eq!(b[2..34], random);
        assert_eq!(b[34], 32);
        assert_eq!(b[35..67], sid);
        #[rustfmt::skip]
        let suites = [
            0, 18, 0x13, 0x01, 0x13, 0x02, 0x13, 0x03, 0xc0, 0x2b, 0xc0, 0x2f, 0xc0, 0x2c,
            0xc0, 0x30, 0xcc, 0xa9, 0xcc, 0xa8, 1, 0,
        ];
        assert_eq!(b[67..89], suites);
        let ext_len = usize::from(u16::from_be_bytes([b[89], b[90]]));
        assert_eq!(91 + ext_len, b.len());
        let e = extensions(&b[91..]);
        let types: Vec<u16> = e.iter().map(|(t, _)| *t).collect();
        assert_eq!(types, [0, 23, 0xff01, 10, 11, 13, 43, 45, 51]);
        let mut sni = vec![0, 18, 0, 0, 15];
        sni.extend_from_slice(b"gw1.example.net");
        assert_eq!(e[0].1, sni);
        assert!(e[1].1.is_empty());
        assert_eq!(e[2].1, [0]);
        assert_eq!(e[3].1, [0, 6, 0, 0x1d, 0, 0x17, 0, 0x18]);
        assert_eq!(e[4].1, [1, 0]);
        assert_eq!(e[5].1[..2], [0, 20]);
        assert_eq!(e[5].1.len(), 22);
        assert_eq!(e[6].1, [4, 3, 4, 3, 3]);
        assert_eq!(e[7].1, [1, 1]);
        assert_eq!(e[8].1, [0, 0]);
        // The dataplane's parser finds the version and the SNI.
        let ch = tls::parse_client_hello(&r).unwrap();
        assert_eq!(ch.legacy_version, tls::version::TLS_1_2);
        assert_eq!(ch.sni, Some(&b"gw1.example.net"[..]));
        let rec = TlsRecord::new_checked(&r[..]).unwrap();
        assert!(rec.is_complete());
        assert_eq!(rec.version(), tls::version::TLS_1_0);

        // Without a name (or with an empty one) there is no server_name extension.
        let none = tls_client_hello_probe(&random, &sid, None);
        assert_eq!(none.len(), r.len() - 24);
        assert_eq!(tls::parse_client_hello(&none).unwrap().sni, None);
        assert_eq!(tls_client_hello_probe(&random, &sid, Some("")), none);
        // Over-long names are cut, and the lengths stay consistent.
        let long = "a".repeat(1000);
        let cut = tls_client_hello_probe(&random, &sid, Some(&long));
        assert_eq!(cut.len(), none.len() + 9 + MAX_SNI_LEN);
        assert_eq!(
            tls::parse_client_hello(&cut).unwrap().sni.map(<[u8]>::len),
            Some(MAX_SNI_LEN)
        );
    }

    #[test]
    fn tls_answers() {
        let sh = testkit::tls_server_hello();
        assert_eq!(check_tls_response(&sh), Ok(Some(TlsAnswer::ServerHello)));
        // A prefix of it: undecided until the handshake type is there.
        for len in 0..=5 {
            assert_eq!(check_tls_response(&sh[..len]), Ok(None), "{len}");
        }
        assert_eq!(
            check_tls_response(&sh[..6]),
            Ok(Some(TlsAnswer::ServerHello))
        );
        // A TLS 1.2 ServerHello in a 0x0301 record.
        let mut sh12 = sh.clone();
        sh12[2] = 1;
        assert_eq!(check_tls_response(&sh12), Ok(Some(TlsAnswer::ServerHello)));
        // Alerts: fatal handshake_failure, protocol_version.
        let alert = [21, 3, 3, 0, 2, 2, 40];
        assert_eq!(
            check_tls_response(&alert),
            Ok(Some(TlsAnswer::Alert {
                level: 2,
                description: 40
            }))
        );
        assert_eq!(
            TlsAnswer::Alert {
                level: 2,
                description: 40
            }
            .name(),
            "alert 2/40"
        );
        assert_eq!(check_tls_response(&alert[..6]), Ok(None));
        assert_eq!(
            check_tls_response(&[21, 3, 1, 0, 2, 2, 70, 0xff]),
            Ok(Some(TlsAnswer::Alert {
                level: 2,
                description: 70
            }))
        );
        assert_eq!(TlsAnswer::ServerHello.name(), "ServerHello");
    }

    #[test]
    fn tls_wrong_answers() {
        for bad in [
            &b"HTTP/1.1 400 Bad Request\r\n"[..],
            b"SSH-2.0-OpenSSH_9.2\r\n",
            b"H",
            &[22, 2],                         // SSL 2/3-ish major version
            &[23, 3, 3, 0, 5, 1, 2, 3, 4, 5], // application data
            &[20, 3, 3, 0, 1, 1],             // change_cipher_spec
            &[22, 3, 3, 0, 4, 1, 0, 0, 0],    // a ClientHello
            &[22, 3, 3, 0, 4, 3, 0, 0, 0],    // HelloVerifyRequest is DTLS only
            &[22, 3, 3, 0, 0],                // empty handshake record
            &[21, 3, 3, 0, 1, 2],             // alert of 1 byte
            &[22, 3, 3, 0xff, 0xff, 2],       // record longer than TLS allows
            &[22, 3, 5, 0, 4, 2, 0, 0, 0],    // record version 3.5
        ] {
            assert!(check_tls_response(bad).is_err(), "{bad:?}");
        }
        // A probe's own ClientHello is not an answer.
        let ch = tls_client_hello_probe(&[0; 32], &[0; 32], None);
        assert!(check_tls_response(&ch).is_err());
    }

    #[test]
    fn dtls_probe_layout() {
        let random = [0x33; 32];
        let d = dtls_client_hello_probe(&random);
        let rec_len = d.len() - 13;
        assert_eq!(
            d[..13],
            [
                22,
                0xfe,
                0xff,
                0,
                0,
                0,
                0,
                0,
                0,
                0,
                0,
                (rec_len >> 8) as u8,
                rec_len as u8
            ]
        );
        let body_len = d.len() - 25;
        let l = [0, (body_len >> 8) as u8, body_len as u8];
        #[rustfmt::skip]
        let hs = [1, l[0], l[1], l[2], 0, 0, 0, 0, 0, l[0], l[1], l[2]];
        assert_eq!(d[13..25], hs);
        let b = &d[25..];
        assert_eq!(b[..2], [0xfe, 0xfd]);
        assert_eq!(b[2..34], random);
        assert_eq!(b[34..36], [0, 0], "no session id, no cookie");
        #[rustfmt::skip]
        let suites = [
            0, 12, 0xc0, 0x2b, 0xc0, 0x2f, 0xc0, 0x2c, 0xc0, 0x30, 0xcc, 0xa9, 0xcc, 0xa8, 1, 0,
        ];
        assert_eq!(b[36..52], suites);
        let ext_len = usize::from(u16::from_be_bytes([b[52], b[53]]));
        assert_eq!(54 + ext_len, b.len());
        let types: Vec<u16> = extensions(&b[54..]).iter().map(|(t, _)| *t).collect();
        assert_eq!(types, [23, 0xff01, 10, 11, 13]);
        // The dataplane's views agree.
        let r = DtlsRecord::new_checked(&d[..]).unwrap();
        assert_eq!(r.version(), dtls::version::DTLS_1_0);
        assert_eq!((r.epoch(), r.sequence_number()), (0, 0));
        assert!(r.is_complete());
        let ch = dtls::parse_client_hello(&d).unwrap();
        assert_eq!(ch.legacy_version, dtls::version::DTLS_1_2);
        assert_eq!(ch.sni, None);
    }

    #[test]
    fn dtls_answers() {
        let hvr = testkit::dtls_hello_verify_request(&[0xc0; 20]);
        assert_eq!(check_dtls_response(&hvr), Ok(TlsAnswer::HelloVerifyRequest));
        assert_eq!(TlsAnswer::HelloVerifyRequest.name(), "HelloVerifyRequest");
        let mut sh = hvr.clone();
        sh[13] = 2;
        assert_eq!(check_dtls_response(&sh), Ok(TlsAnswer::ServerHello));
        let alert = [21, 0xfe, 0xfd, 0, 0, 0, 0, 0, 0, 0, 1, 0, 2, 2, 40];
        assert_eq!(
            check_dtls_response(&alert),
            Ok(TlsAnswer::Alert {
                level: 2,
                description: 40
            })
        );
        for len in 0..hvr.len().min(14) {
            assert!(check_dtls_response(&hvr[..len]).is_err(), "{len}");
        }
        assert!(check_dtls_response(&alert[..14]).is_err());
        let probe = dtls_client_hello_probe(&[0; 32]);
        assert!(check_dtls_response(&probe).is_err());
        let data = testkit::dtls_application_data(1, 1, 40);
        assert!(check_dtls_response(&data).is_err());
        // A TLS record is not DTLS.
        assert!(check_dtls_response(&testkit::tls_server_hello()).is_err());
        assert!(check_dtls_response(b"garbage that is no record").is_err());
    }

    #[test]
    fn icmp_echo_bytes() {
        let m = icmp_echo_request(false, 0x1234, 7, b"ab");
        // Sum of words: 0x0800 + 0x1234 + 0x0007 + 0x6162 = 0x7b9d; checksum = !0x7b9d.
        assert_eq!(m, [8, 0, 0x84, 0x62, 0x12, 0x34, 0, 7, b'a', b'b']);
        assert!(Icmpv4Packet::new_checked(&m[..]).unwrap().verify_checksum());
        let m6 = icmp_echo_request(true, 0x1234, 7, b"ab");
        assert_eq!(m6, [128, 0, 0, 0, 0x12, 0x34, 0, 7, b'a', b'b']);
    }

    /// An IPv4 packet around `icmp` (header checksum left zero: nothing here checks it).
    fn ipv4_around(icmp: &[u8], proto: u8) -> Vec<u8> {
        let total = (20 + icmp.len()) as u16;
        let mut p = vec![0x45, 0];
        p.extend_from_slice(&total.to_be_bytes());
        p.extend_from_slice(&[0, 0, 0x40, 0, 64, proto, 0, 0]);
        p.extend_from_slice(&[198, 19, 0, 11, 198, 19, 0, 1]);
        p.extend_from_slice(icmp);
        p
    }

    #[test]
    fn icmp_echo_replies() {
        let mut reply = icmp_echo_request(false, 0x1234, 7, b"payload");
        reply[0] = 0;
        Icmpv4Packet::new_checked(&mut reply[..])
            .unwrap()
            .fill_checksum();
        let p = ipv4_around(&reply, ip_proto::ICMP);
        assert!(is_echo_reply(&p, false, 0x1234, 7));
        assert!(!is_echo_reply(&p, false, 0x1235, 7));
        assert!(!is_echo_reply(&p, false, 0x1234, 8));
        assert!(!is_echo_reply(&p, true, 0x1234, 7));
        // The request itself (a raw socket sees both directions on loopback).
        let req = ipv4_around(&icmp_echo_request(false, 0x1234, 7, b"payload"), 1);
        assert!(!is_echo_reply(&req, false, 0x1234, 7));
        // Bad checksum, other protocol, fragment, IP options skipped by IHL.
        let mut bad = p.clone();
        bad[30] ^= 1;
        assert!(!is_echo_reply(&bad, false, 0x1234, 7));
        assert!(!is_echo_reply(
            &ipv4_around(&reply, ip_proto::UDP),
            false,
            0x1234,
            7
        ));
        let mut frag = p.clone();
        frag[6] = 0x20; // more fragments
        assert!(!is_echo_reply(&frag, false, 0x1234, 7));
        let mut opts = vec![0x46, 0];
        opts.extend_from_slice(&((24 + reply.len()) as u16).to_be_bytes());
        opts.extend_from_slice(&p[4..20]);
        opts.extend_from_slice(&[1, 1, 1, 0]); // NOP NOP NOP EOL
        opts.extend_from_slice(&reply);
        assert!(is_echo_reply(&opts, false, 0x1234, 7));
        for len in 0..p.len() {
            assert!(!is_echo_reply(&p[..len], false, 0x1234, 7), "{len}");
        }

        let mut r6 = icmp_echo_request(true, 0x1234, 7, b"x");
        r6[0] = icmpv6_type::ECHO_REPLY;
        assert!(is_echo_reply(&r6, true, 0x1234, 7));
        assert!(!is_echo_reply(&r6, true, 0x1234, 6));
        assert!(!is_echo_reply(&r6, false, 0x1234, 7));
        assert!(!is_echo_reply(
            &icmp_echo_request(true, 0x1234, 7, b"x"),
            true,
            0x1234,
            7
        ));
        assert!(!is_echo_reply(&r6[..7], true, 0x1234, 7));
    }

    proptest! {
        #[test]
        fn ike_probe_round_trips(spi in any::<u64>(), nonce in any::<[u8; 32]>()) {
            let m = ike_sa_init_probe(spi, &nonce);
            let h = IkeHeader::new_checked(&m[..], m.len()).unwrap();
            prop_assert_eq!(h.initiator_spi(), spi);
            prop_assert_eq!(h.payloads().count(), 3);
            prop_assert!(h.payloads().all(|p| p.is_ok()));
            prop_assert_eq!(m.len(), 388);
        }

        #[test]
        fn ike_checker_never_panics(
            data in proptest::collection::vec(any::<u8>(), 0..400),
            spi in any::<u64>(),
        ) {
            let _ = check_ike_response(&data, spi);
        }

        #[test]
        fn ike_checker_survives_mutated_answers(
            at in 0..40usize,
            byte in any::<u8>(),
            cut in 0..40usize,
        ) {
            let ke = notify_body(notify_type::INVALID_KE_PAYLOAD, &[0, 19]);
            let mut r = ike_response(SPI, &[(payload_type::NOTIFY, &ke)]);
            let at = at % r.len();
            r[at] = byte;
            r.truncate(r.len() - cut.min(r.len()));
            let _ = check_ike_response(&r, SPI);
        }

        #[test]
        fn tls_probe_round_trips(
            random in any::<[u8; 32]>(),
            sid in any::<[u8; 32]>(),
            sni in proptest::option::of("[a-z0-9.-]{1,300}"),
        ) {
            let r = tls_client_hello_probe(&random, &sid, sni.as_deref());
            prop_assert_eq!(usize::from(u16::from_be_bytes([r[3], r[4]])), r.len() - 5);
            let ch = tls::parse_client_hello(&r).unwrap();
            let want = sni.as_deref().map(|s| &s.as_bytes()[..s.len().min(MAX_SNI_LEN)]);
            prop_assert_eq!(ch.sni, want);
        }

        #[test]
        fn tls_checker_never_panics(data in proptest::collection::vec(any::<u8>(), 0..300)) {
            let whole = check_tls_response(&data);
            // A decision never changes as more bytes arrive.
            for len in 0..data.len() {
                match check_tls_response(&data[..len]) {
                    Ok(None) => {}
                    Err(_) => prop_assert!(whole.is_err(), "len {}", len),
                    early => prop_assert_eq!(early, whole.clone(), "len {}", len),
                }
            }
        }

        #[test]
        fn dtls_checker_never_panics(data in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = check_dtls_response(&data);
            let d = dtls_client_hello_probe(&[data.first().copied().unwrap_or(0); 32]);
            prop_assert!(dtls::parse_client_hello(&d).is_some());
        }

        #[test]
        fn icmp_checker_never_panics(
            data in proptest::collection::vec(any::<u8>(), 0..100),
            v6 in any::<bool>(),
            ident in any::<u16>(),
            seq in any::<u16>(),
        ) {
            let _ = is_echo_reply(&data, v6, ident, seq);
            let m = icmp_echo_request(v6, ident, seq, &data);
            if !v6 {
                prop_assert!(Icmpv4Packet::new_checked(&m[..]).unwrap().verify_checksum());
            }
            prop_assert!(!is_echo_reply(&m, true, ident, seq));
        }
    }
}
