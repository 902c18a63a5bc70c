//! TLS record header (RFC 8446 §5.1, RFC 5246 §6.2) and ClientHello SNI extraction.
//!
//! The balancer looks at the first TCP segment of a connection to the SSL-VPN port: a handshake
//! record carrying a ClientHello tells it a new session starts and which host name (SNI,
//! RFC 6066 §3) the client asked for. Nothing past the ClientHello is ever parsed.
//!
//! Limitations, by design: only the first record of the segment is examined, a ClientHello split
//! across several records is followed only within the first one, and an SNI extension that lies
//! beyond the end of the segment (large key shares, extension order randomised by the client) is
//! reported as absent.

use super::{be16, Error, Result};

/// Length of the record header (type, version, length).
pub const HEADER_LEN: usize = 5;

/// Largest record fragment the protocol allows (2^14 + 2048 for TLS 1.2 ciphertext, RFC 5246
/// §6.2.3; TLS 1.3 is stricter). Larger lengths mean "not TLS".
pub const MAX_FRAGMENT_LEN: usize = (1 << 14) + 2048;

/// Record content types.
pub mod content_type {
    /// change_cipher_spec.
    pub const CHANGE_CIPHER_SPEC: u8 = 20;
    /// alert.
    pub const ALERT: u8 = 21;
    /// handshake.
    pub const HANDSHAKE: u8 = 22;
    /// application_data.
    pub const APPLICATION_DATA: u8 = 23;
    /// heartbeat (RFC 6520).
    pub const HEARTBEAT: u8 = 24;
    /// tls12_cid (RFC 9146, DTLS only).
    pub const TLS12_CID: u8 = 25;
}

/// Handshake message types (the ones the balancer cares about).
pub mod handshake_type {
    /// client_hello.
    pub const CLIENT_HELLO: u8 = 1;
    /// server_hello.
    pub const SERVER_HELLO: u8 = 2;
}

/// Extension types (the ones the balancer cares about).
pub mod extension_type {
    /// server_name (RFC 6066 §3).
    pub const SERVER_NAME: u16 = 0;
}

/// Protocol versions as they appear on the wire.
pub mod version {
    /// TLS 1.0 (also the usual record version of a first ClientHello).
    pub const TLS_1_0: u16 = 0x0301;
    /// TLS 1.1.
    pub const TLS_1_1: u16 = 0x0302;
    /// TLS 1.2 (also the legacy_version of a TLS 1.3 ClientHello).
    pub const TLS_1_2: u16 = 0x0303;
    /// TLS 1.3 (only in supported_versions; records never carry it in practice).
    pub const TLS_1_3: u16 = 0x0304;
}

mod field {
    pub const CONTENT_TYPE: usize = 0;
    pub const VERSION: usize = 1;
    pub const LENGTH: usize = 3;
}

/// A read-only view of a TLS record over `buffer`, which starts at the record header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TlsRecord<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> TlsRecord<T> {
    /// Wraps `buffer` without any check. Accessors may panic unless [`check`](Self::check) passed.
    #[inline]
    pub const fn new_unchecked(buffer: T) -> Self {
        TlsRecord { buffer }
    }

    /// Wraps `buffer` after [`check`](Self::check).
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self> {
        let record = Self::new_unchecked(buffer);
        record.check()?;
        Ok(record)
    }

    /// Validates the header: at least [`HEADER_LEN`] bytes ([`Error::Truncated`]), content type
    /// 20..=24 and record version TLS 1.0..=1.3 ([`Error::BadHeader`]; SSL 3.0 is refused), and a
    /// length of at most [`MAX_FRAGMENT_LEN`] ([`Error::BadLength`]).
    ///
    /// The fragment need not be complete: a record may span TCP segments.
    pub fn check(&self) -> Result<()> {
        let b = self.buffer.as_ref();
        if b.len() < HEADER_LEN {
            return Err(Error::Truncated);
        }
        if !(content_type::CHANGE_CIPHER_SPEC..=content_type::HEARTBEAT)
            .contains(&b[field::CONTENT_TYPE])
        {
            return Err(Error::BadHeader);
        }
        if !(version::TLS_1_0..=version::TLS_1_3).contains(&be16(b, field::VERSION)) {
            return Err(Error::BadHeader);
        }
        if usize::from(be16(b, field::LENGTH)) > MAX_FRAGMENT_LEN {
            return Err(Error::BadLength);
        }
        Ok(())
    }

    /// Returns the underlying buffer.
    #[inline]
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// Content type (see [`content_type`]).
    #[inline]
    pub fn content_type(&self) -> u8 {
        self.buffer.as_ref()[field::CONTENT_TYPE]
    }

    /// Record-layer version (see [`version`]).
    #[inline]
    pub fn version(&self) -> u16 {
        be16(self.buffer.as_ref(), field::VERSION)
    }

    /// Declared fragment length.
    #[inline]
    pub fn length(&self) -> u16 {
        be16(self.buffer.as_ref(), field::LENGTH)
    }

    /// The fragment bytes present in the buffer, at most [`length`](Self::length) of them.
    #[inline]
    pub fn fragment(&self) -> &[u8] {
        let b = self.buffer.as_ref();
        b.get(self.fragment_range()).unwrap_or(&[])
    }

    /// Where [`fragment`](Self::fragment) lies in the buffer; always in bounds.
    #[inline]
    fn fragment_range(&self) -> core::ops::Range<usize> {
        let len = self.buffer.as_ref().len();
        let end = HEADER_LEN.saturating_add(usize::from(self.length()));
        HEADER_LEN.min(len)..end.min(len)
    }

    /// Whether the whole fragment is in the buffer.
    #[inline]
    pub fn is_complete(&self) -> bool {
        self.fragment().len() == usize::from(self.length())
    }
}

/// What the balancer learns from a (D)TLS ClientHello.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientHello<'a> {
    /// `legacy_version` (`client_version` before TLS 1.3): 0x0303 for TLS 1.2 and 1.3, 0xfefd for
    /// DTLS 1.2 and 1.3. Zero for a DTLS ClientHello fragment that does not start the message.
    pub legacy_version: u16,
    /// The first `host_name` of the server_name extension, raw and unvalidated; `None` if there is
    /// none, it is empty, or it lies beyond the bytes present.
    pub sni: Option<&'a [u8]>,
}

/// Parses the ClientHello at the start of a TCP payload (`record_payload` starts at the record
/// header).
///
/// Returns `Some` when the first record is a valid handshake record whose first message is a
/// ClientHello and whose `legacy_version` is present, even if the message is cut short by the
/// end of the segment or of the record (then `sni` is `None` unless already reached). Never panics
/// and does not allocate.
pub fn parse_client_hello(record_payload: &[u8]) -> Option<ClientHello<'_>> {
    let record = TlsRecord::new_checked(record_payload).ok()?;
    if record.content_type() != content_type::HANDSHAKE {
        return None;
    }
    // Borrow from the input, not from the view, so the host name can outlive it.
    let fragment = record_payload.get(record.fragment_range())?;
    let mut r = Reader::new(fragment);
    if r.u8()? != handshake_type::CLIENT_HELLO {
        return None;
    }
    let length = usize::try_from(r.u24()?).ok()?;
    // Walk no further than the message, nor than the bytes present.
    let mut body = Reader::new(r.take_up_to(length));
    let legacy_version = body.u16()?;
    Some(ClientHello {
        legacy_version,
        sni: client_hello_sni(body, false),
    })
}

/// Finds the SNI in a ClientHello body positioned just after `legacy_version`; `dtls` adds the
/// cookie field (RFC 6347 §4.2.1). `None` as soon as anything is missing.
pub(crate) fn client_hello_sni<'a>(mut body: Reader<'a>, dtls: bool) -> Option<&'a [u8]> {
    body.skip(32)?; // random
    body.vec8()?; // legacy_session_id
    if dtls {
        body.vec8()?; // cookie
    }
    body.vec16()?; // cipher_suites
    body.vec8()?; // legacy_compression_methods
                  // The extensions block may run past the bytes present: walk what is there.
    let declared = usize::from(body.u16()?);
    let mut extensions = Reader::new(body.take_up_to(declared));
    while !extensions.is_empty() {
        let ty = extensions.u16()?;
        let data = extensions.vec16()?;
        if ty == extension_type::SERVER_NAME {
            return server_name(data);
        }
    }
    None
}

/// The first host_name in a server_name extension body (RFC 6066 §3).
fn server_name(data: &[u8]) -> Option<&[u8]> {
    let mut list = Reader::new(Reader::new(data).vec16()?);
    while !list.is_empty() {
        let name_type = list.u8()?;
        let name = list.vec16()?;
        if name_type == 0 {
            return if name.is_empty() { None } else { Some(name) };
        }
    }
    None
}

/// A bounds-checked cursor over a byte slice: every read returns `None` rather than panic.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    #[inline]
    pub(crate) fn new(bytes: &'a [u8]) -> Self {
        Reader { rest: bytes }
    }

    #[inline]
    pub(crate) fn is_empty(&self) -> bool {
        self.rest.is_empty()
    }

    #[inline]
    pub(crate) fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if n > self.rest.len() {
            return None;
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Some(head)
    }

    /// Up to `n` bytes: all that is left if fewer remain.
    #[inline]
    pub(crate) fn take_up_to(&mut self, n: usize) -> &'a [u8] {
        let (head, tail) = self.rest.split_at(n.min(self.rest.len()));
        self.rest = tail;
        head
    }

    #[inline]
    pub(crate) fn skip(&mut self, n: usize) -> Option<()> {
        self.take(n).map(|_| ())
    }

    #[inline]
    pub(crate) fn u8(&mut self) -> Option<u8> {
        let (&first, tail) = self.rest.split_first()?;
        self.rest = tail;
        Some(first)
    }

    #[inline]
    pub(crate) fn u16(&mut self) -> Option<u16> {
        let b = self.take(2)?;
        Some(be16(b, 0))
    }

    #[inline]
    pub(crate) fn u24(&mut self) -> Option<u32> {
        let b = self.take(3)?;
        Some(u32::from_be_bytes([0, b[0], b[1], b[2]]))
    }

    /// A vector with a one-byte length prefix.
    #[inline]
    pub(crate) fn vec8(&mut self) -> Option<&'a [u8]> {
        let n = self.u8()?;
        self.take(usize::from(n))
    }

    /// A vector with a two-byte length prefix.
    #[inline]
    pub(crate) fn vec16(&mut self) -> Option<&'a [u8]> {
        let n = self.u16()?;
        self.take(usize::from(n))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A TLS 1.3 ClientHello as curl/OpenSSL 3 sends it: record version 0x0301, a 32-byte
    /// session id, five suites, server_name "vpn.example.net", ec_point_formats, supported_groups,
    /// session_ticket, ALPN (h2, http/1.1), encrypt_then_mac, extended_master_secret,
    /// signature_algorithms, supported_versions (1.3, 1.2), psk_key_exchange_modes, key_share
    /// (x25519).
    pub(crate) const CLIENT_HELLO: [u8; 243] = [
        0x16, 0x03, 0x01, 0x00, 0xee, 0x01, 0x00, 0x00, 0xea, 0x03, 0x03, 0x2b, 0x0a, 0xd2, 0xcb,
        0xcc, 0x58, 0xc5, 0xb5, 0xfb, 0x3a, 0xb6, 0xf0, 0xcd, 0xe7, 0x7e, 0xd4, 0x3b, 0x99, 0xb5,
        0x0b, 0x17, 0x4a, 0x6b, 0x07, 0x94, 0x60, 0xd6, 0xe0, 0xb4, 0x14, 0xb2, 0x53, 0x20, 0x5b,
        0x65, 0x7f, 0xa1, 0xfb, 0x00, 0xa7, 0xe7, 0x95, 0xb2, 0x16, 0xf8, 0x3f, 0xcd, 0xe7, 0x3d,
        0xb9, 0x64, 0xeb, 0xae, 0x71, 0x32, 0x1b, 0x13, 0x6e, 0x9b, 0x27, 0x8d, 0xdd, 0x6f, 0x95,
        0x6c, 0x00, 0x0e, 0x13, 0x02, 0x13, 0x03, 0x13, 0x01, 0xc0, 0x2c, 0xc0, 0x30, 0xc0, 0x2b,
        0xc0, 0x2f, 0x01, 0x00, 0x00, 0x93, 0x00, 0x00, 0x00, 0x14, 0x00, 0x12, 0x00, 0x00, 0x0f,
        0x76, 0x70, 0x6e, 0x2e, 0x65, 0x78, 0x61, 0x6d, 0x70, 0x6c, 0x65, 0x2e, 0x6e, 0x65, 0x74,
        0x00, 0x0b, 0x00, 0x04, 0x03, 0x00, 0x01, 0x02, 0x00, 0x0a, 0x00, 0x0a, 0x00, 0x08, 0x00,
        0x1d, 0x00, 0x17, 0x00, 0x1e, 0x00, 0x18, 0x00, 0x23, 0x00, 0x00, 0x00, 0x10, 0x00, 0x0e,
        0x00, 0x0c, 0x02, 0x68, 0x32, 0x08, 0x68, 0x74, 0x74, 0x70, 0x2f, 0x31, 0x2e, 0x31, 0x00,
        0x16, 0x00, 0x00, 0x00, 0x17, 0x00, 0x00, 0x00, 0x0d, 0x00, 0x0a, 0x00, 0x08, 0x04, 0x03,
        0x08, 0x04, 0x04, 0x01, 0x02, 0x01, 0x00, 0x2b, 0x00, 0x05, 0x04, 0x03, 0x04, 0x03, 0x03,
        0x00, 0x2d, 0x00, 0x02, 0x01, 0x01, 0x00, 0x33, 0x00, 0x26, 0x00, 0x24, 0x00, 0x1d, 0x00,
        0x20, 0x2b, 0x1e, 0xb5, 0x6f, 0x76, 0xd8, 0x0a, 0x28, 0xb9, 0x28, 0x21, 0xcb, 0xc6, 0xf2,
        0x59, 0xbb, 0xe6, 0xad, 0xe7, 0xd9, 0x51, 0x66, 0x78, 0xe9, 0xe1, 0x17, 0x6c, 0x39, 0x25,
        0xc4, 0xc8, 0x5c,
    ];

    /// Offset of "vpn.example.net" in [`CLIENT_HELLO`].
    const SNI_AT: usize = 105;

    /// Builds a TLS ClientHello record with the given extensions (type, body) in order.
    pub(crate) fn client_hello_with(extensions: &[(u16, Vec<u8>)]) -> Vec<u8> {
        let mut ext = Vec::new();
        for (ty, body) in extensions {
            ext.extend_from_slice(&ty.to_be_bytes());
            ext.extend_from_slice(&(body.len() as u16).to_be_bytes());
            ext.extend_from_slice(body);
        }
        let mut body = vec![0x03, 0x03];
        body.extend_from_slice(&[0x5a; 32]);
        body.push(0); // session id
        body.extend_from_slice(&[0, 2, 0x13, 0x01]);
        body.extend_from_slice(&[1, 0]);
        body.extend_from_slice(&(ext.len() as u16).to_be_bytes());
        body.extend_from_slice(&ext);
        let mut hs = vec![1];
        hs.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
        hs.extend_from_slice(&body);
        let mut rec = vec![0x16, 0x03, 0x01];
        rec.extend_from_slice(&(hs.len() as u16).to_be_bytes());
        rec.extend_from_slice(&hs);
        rec
    }

    /// A server_name extension body with the given (name type, name) entries.
    pub(crate) fn server_name_ext(entries: &[(u8, &[u8])]) -> Vec<u8> {
        let mut list = Vec::new();
        for (ty, name) in entries {
            list.push(*ty);
            list.extend_from_slice(&(name.len() as u16).to_be_bytes());
            list.extend_from_slice(name);
        }
        let mut body = (list.len() as u16).to_be_bytes().to_vec();
        body.extend_from_slice(&list);
        body
    }

    #[test]
    fn record_header() {
        let r = TlsRecord::new_checked(&CLIENT_HELLO[..]).unwrap();
        assert_eq!(r.content_type(), content_type::HANDSHAKE);
        assert_eq!(r.version(), version::TLS_1_0);
        assert_eq!(r.length(), 238);
        assert_eq!(r.fragment().len(), 238);
        assert_eq!(r.fragment()[0], handshake_type::CLIENT_HELLO);
        assert!(r.is_complete());
        let half = TlsRecord::new_checked(&CLIENT_HELLO[..100]).unwrap();
        assert_eq!(half.fragment(), &CLIENT_HELLO[5..100]);
        assert!(!half.is_complete());
        // Bytes after the record (the next record) are not part of the fragment.
        let mut two = CLIENT_HELLO.to_vec();
        two.extend_from_slice(&[0x17, 0x03, 0x03, 0x00, 0x01, 0xaa]);
        let r = TlsRecord::new_checked(&two[..]).unwrap();
        assert_eq!(r.fragment(), &CLIENT_HELLO[5..]);
    }

    #[test]
    fn tls13_client_hello_sni() {
        let ch = parse_client_hello(&CLIENT_HELLO).unwrap();
        assert_eq!(ch.legacy_version, version::TLS_1_2);
        assert_eq!(ch.sni, Some(&b"vpn.example.net"[..]));
        assert_eq!(&CLIENT_HELLO[SNI_AT..SNI_AT + 15], b"vpn.example.net");
    }

    #[test]
    fn truncated_at_every_length() {
        for len in 0..CLIENT_HELLO.len() {
            let cut = &CLIENT_HELLO[..len];
            let want_record = if len < HEADER_LEN {
                Err(Error::Truncated)
            } else {
                Ok(())
            };
            assert_eq!(TlsRecord::new_checked(cut).map(|_| ()), want_record);
            let ch = parse_client_hello(cut);
            if len < 11 {
                // Handshake header or legacy_version missing.
                assert_eq!(ch, None, "len {len}");
            } else if len < SNI_AT + 15 {
                assert_eq!(
                    ch,
                    Some(ClientHello {
                        legacy_version: 0x0303,
                        sni: None
                    }),
                    "len {len}"
                );
            } else {
                assert_eq!(ch.unwrap().sni, Some(&b"vpn.example.net"[..]), "len {len}");
            }
        }
    }

    #[test]
    fn record_length_caps_the_walk() {
        // Same bytes, but the record claims to end before the SNI: the name is not reached.
        let mut m = CLIENT_HELLO;
        m[3..5].copy_from_slice(&100u16.to_be_bytes());
        assert_eq!(parse_client_hello(&m).unwrap().sni, None);
        // Same for the handshake length.
        let mut m = CLIENT_HELLO;
        m[6..9].copy_from_slice(&[0, 0, 100]);
        assert_eq!(parse_client_hello(&m).unwrap().sni, None);
    }

    #[test]
    fn bad_headers() {
        for ct in [0u8, 19, 25, 0x80, 0xff] {
            let mut m = CLIENT_HELLO;
            m[0] = ct;
            assert_eq!(
                TlsRecord::new_checked(&m[..]),
                Err(Error::BadHeader),
                "{ct}"
            );
            assert_eq!(parse_client_hello(&m), None);
        }
        for v in [0x0300u16, 0x0200, 0x0305, 0x0401, 0xfefd, 0x0000] {
            let mut m = CLIENT_HELLO;
            m[1..3].copy_from_slice(&v.to_be_bytes());
            assert_eq!(
                TlsRecord::new_checked(&m[..]),
                Err(Error::BadHeader),
                "{v:#x}"
            );
            assert_eq!(parse_client_hello(&m), None);
        }
        let mut m = CLIENT_HELLO;
        m[3..5].copy_from_slice(&(MAX_FRAGMENT_LEN as u16 + 1).to_be_bytes());
        assert_eq!(TlsRecord::new_checked(&m[..]), Err(Error::BadLength));
        m[3..5].copy_from_slice(&(MAX_FRAGMENT_LEN as u16).to_be_bytes());
        assert!(TlsRecord::new_checked(&m[..]).is_ok());
    }

    #[test]
    fn not_a_client_hello() {
        // Application data.
        assert_eq!(parse_client_hello(&[0x17, 3, 3, 0, 2, 0xaa, 0xbb]), None);
        // ServerHello.
        let mut m = CLIENT_HELLO;
        m[5] = handshake_type::SERVER_HELLO;
        assert_eq!(parse_client_hello(&m), None);
        // Alert.
        assert_eq!(parse_client_hello(&[0x15, 3, 3, 0, 2, 2, 40]), None);
    }

    #[test]
    fn sni_variants() {
        let name = &b"vpn.example.net"[..];
        // No extensions at all (an SSL-era client).
        let ch = client_hello_with(&[]);
        assert_eq!(parse_client_hello(&ch).unwrap().sni, None);
        // SNI after other extensions (randomised order).
        let ch = client_hello_with(&[
            (0x000a, vec![0, 2, 0, 0x1d]),
            (0xfe0d, vec![0xee; 40]),
            (0, server_name_ext(&[(0, name)])),
        ]);
        assert_eq!(parse_client_hello(&ch).unwrap().sni, Some(name));
        // An unknown name type first, then host_name.
        let ch = client_hello_with(&[(0, server_name_ext(&[(7, b"x"), (0, name)]))]);
        assert_eq!(parse_client_hello(&ch).unwrap().sni, Some(name));
        // Empty host name, empty list, empty extension.
        for ext in [server_name_ext(&[(0, b"")]), server_name_ext(&[]), vec![]] {
            let ch = client_hello_with(&[(0, ext)]);
            assert_eq!(parse_client_hello(&ch).unwrap().sni, None);
        }
        // A host name that overruns its list.
        let mut ext = server_name_ext(&[(0, name)]);
        ext[4] = 0x40;
        let ch = client_hello_with(&[(0, ext)]);
        assert_eq!(parse_client_hello(&ch).unwrap().sni, None);
        // An extension that overruns the block ends the walk.
        let mut ch = client_hello_with(&[(0x0017, vec![]), (0, server_name_ext(&[(0, name)]))]);
        let ext0 = ch.len() - 24 - 4;
        ch[ext0 + 2..ext0 + 4].copy_from_slice(&0x100u16.to_be_bytes());
        assert_eq!(parse_client_hello(&ch).unwrap().sni, None);
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..400)) {
            if let Ok(r) = TlsRecord::new_checked(&data[..]) {
                prop_assert!(r.fragment().len() <= usize::from(r.length()));
                let _ = (r.content_type(), r.version(), r.is_complete());
            }
            let _ = parse_client_hello(&data);
        }

        #[test]
        fn arbitrary_handshake_body_never_panics(
            body in proptest::collection::vec(any::<u8>(), 0..300),
            declared in any::<u16>(),
        ) {
            // A valid record and handshake header around arbitrary bytes.
            let mut m = vec![0x16, 0x03, 0x03];
            m.extend_from_slice(&(body.len() as u16 + 4).to_be_bytes());
            m.extend_from_slice(&[1, 0]);
            m.extend_from_slice(&declared.to_be_bytes());
            m.extend_from_slice(&body);
            let ch = parse_client_hello(&m);
            prop_assert_eq!(ch.is_some(), body.len() >= 2 && declared >= 2);
        }

        #[test]
        fn sni_round_trips(
            name in proptest::collection::vec(any::<u8>(), 1..300),
            before in proptest::collection::vec(
                (1u16.., proptest::collection::vec(any::<u8>(), 0..50)), 0..5),
        ) {
            let mut exts = before.clone();
            exts.push((0, server_name_ext(&[(0, &name)])));
            let ch = client_hello_with(&exts);
            prop_assert_eq!(parse_client_hello(&ch).unwrap().sni, Some(&name[..]));
            // Every prefix: either the whole name or none of it.
            for len in 0..ch.len() {
                if let Some(sni) = parse_client_hello(&ch[..len]).and_then(|c| c.sni) {
                    prop_assert_eq!(sni, &name[..]);
                }
            }
        }
    }
}
