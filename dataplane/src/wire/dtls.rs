//! DTLS plaintext record header (RFC 6347 §4.1, RFC 9147 §4) and ClientHello SNI extraction.
//!
//! SSL-VPN clients (AnyConnect, openconnect, GlobalProtect) carry tunnel data over DTLS on UDP
//! next to the TLS control channel. The balancer recognises DTLS records on the configured port
//! and, in the first datagram of a session, the ClientHello and its SNI.
//!
//! Limitations, by design: DTLS 1.3 encrypted records use the unified header (first byte
//! `001xxxxx`, RFC 9147 §4) and are not recognised here; for `tls12_cid` records (RFC 9146) the
//! connection ID, whose length is negotiated and not on the wire, sits between the sequence number
//! and the length, so [`DtlsRecord::length`] and [`DtlsRecord::fragment`] are meaningful only for
//! the other content types.

use super::tls::{self, content_type, ClientHello, Reader};
use super::{be16, Error, Result};

/// Length of the record header (type, version, epoch, sequence number, length).
pub const HEADER_LEN: usize = 13;

/// Length of the DTLS handshake header (type, length, message_seq, fragment_offset,
/// fragment_length).
pub const HANDSHAKE_HEADER_LEN: usize = 12;

/// Record-layer versions (one's complement of the TLS version).
pub mod version {
    /// DTLS 1.0 (RFC 4347); also the record version of many first ClientHellos.
    pub const DTLS_1_0: u16 = 0xfeff;
    /// DTLS 1.2 (RFC 6347); also the legacy version of DTLS 1.3 (RFC 9147).
    pub const DTLS_1_2: u16 = 0xfefd;
}

mod field {
    pub const CONTENT_TYPE: usize = 0;
    pub const VERSION: usize = 1;
    pub const EPOCH: usize = 3;
    pub const SEQUENCE_NUMBER: usize = 5;
    pub const LENGTH: usize = 11;
}

/// A read-only view of a DTLS plaintext record over `buffer`, which starts at the record header
/// (a UDP payload holds one or more records).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DtlsRecord<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> DtlsRecord<T> {
    /// Wraps `buffer` without any check. Accessors may panic unless [`check`](Self::check) passed.
    #[inline]
    pub const fn new_unchecked(buffer: T) -> Self {
        DtlsRecord { buffer }
    }

    /// Wraps `buffer` after [`check`](Self::check).
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self> {
        let record = Self::new_unchecked(buffer);
        record.check()?;
        Ok(record)
    }

    /// Validates the header: at least [`HEADER_LEN`] bytes ([`Error::Truncated`]), content type
    /// 20..=25 and version DTLS 1.0 or 1.2 ([`Error::BadHeader`]), and, except for `tls12_cid`,
    /// a length of at most [`tls::MAX_FRAGMENT_LEN`] ([`Error::BadLength`]).
    ///
    /// The fragment need not be complete: the caller may hold only the first IP fragment.
    pub fn check(&self) -> Result<()> {
        let b = self.buffer.as_ref();
        if b.len() < HEADER_LEN {
            return Err(Error::Truncated);
        }
        let ct = b[field::CONTENT_TYPE];
        if !(content_type::CHANGE_CIPHER_SPEC..=content_type::TLS12_CID).contains(&ct) {
            return Err(Error::BadHeader);
        }
        if !matches!(
            be16(b, field::VERSION),
            version::DTLS_1_0 | version::DTLS_1_2
        ) {
            return Err(Error::BadHeader);
        }
        if ct != content_type::TLS12_CID
            && usize::from(be16(b, field::LENGTH)) > tls::MAX_FRAGMENT_LEN
        {
            return Err(Error::BadLength);
        }
        Ok(())
    }

    /// Returns the underlying buffer.
    #[inline]
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// Content type (see [`tls::content_type`]).
    #[inline]
    pub fn content_type(&self) -> u8 {
        self.buffer.as_ref()[field::CONTENT_TYPE]
    }

    /// Record-layer version (see [`version`]).
    #[inline]
    pub fn version(&self) -> u16 {
        be16(self.buffer.as_ref(), field::VERSION)
    }

    /// Epoch: 0 until the first ChangeCipherSpec, so handshake records in the clear carry 0.
    #[inline]
    pub fn epoch(&self) -> u16 {
        be16(self.buffer.as_ref(), field::EPOCH)
    }

    /// The 48-bit record sequence number.
    #[inline]
    pub fn sequence_number(&self) -> u64 {
        let b = self.buffer.as_ref();
        let mut seq = [0u8; 8];
        seq[2..].copy_from_slice(&b[field::SEQUENCE_NUMBER..field::SEQUENCE_NUMBER + 6]);
        u64::from_be_bytes(seq)
    }

    /// Declared fragment length.
    #[inline]
    pub fn length(&self) -> u16 {
        be16(self.buffer.as_ref(), field::LENGTH)
    }

    /// The fragment bytes present in the buffer, at most [`length`](Self::length) of them.
    #[inline]
    pub fn fragment(&self) -> &[u8] {
        self.buffer
            .as_ref()
            .get(self.fragment_range())
            .unwrap_or(&[])
    }

    /// Whether the whole fragment is in the buffer.
    #[inline]
    pub fn is_complete(&self) -> bool {
        self.fragment().len() == usize::from(self.length())
    }

    /// Where [`fragment`](Self::fragment) lies in the buffer; always in bounds.
    #[inline]
    fn fragment_range(&self) -> core::ops::Range<usize> {
        let len = self.buffer.as_ref().len();
        let end = HEADER_LEN.saturating_add(usize::from(self.length()));
        HEADER_LEN.min(len)..end.min(len)
    }
}

/// Parses the ClientHello in the first record of a UDP payload.
///
/// Returns `Some` when the first record is a valid handshake record whose first handshake message
/// is a ClientHello. The SNI is looked for only in a fragment that starts the message
/// (`fragment_offset == 0`), which must then hold at least `client_version`; a later fragment
/// gives `legacy_version: 0, sni: None`. Never panics and does not allocate.
pub fn parse_client_hello(datagram: &[u8]) -> Option<ClientHello<'_>> {
    let record = DtlsRecord::new_checked(datagram).ok()?;
    if record.content_type() != content_type::HANDSHAKE {
        return None;
    }
    // Borrow from the input, not from the view, so the host name can outlive it.
    let mut r = Reader::new(datagram.get(record.fragment_range())?);
    if r.u8()? != tls::handshake_type::CLIENT_HELLO {
        return None;
    }
    let _length = r.u24()?;
    let _message_seq = r.u16()?;
    let fragment_offset = r.u24()?;
    let fragment_length = usize::try_from(r.u24()?).ok()?;
    if fragment_offset != 0 {
        return Some(ClientHello {
            legacy_version: 0,
            sni: None,
        });
    }
    let mut body = Reader::new(r.take_up_to(fragment_length));
    let legacy_version = body.u16()?;
    Some(ClientHello {
        legacy_version,
        sni: tls::client_hello_sni(body, true),
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A DTLS 1.2 ClientHello as openconnect sends it to an AnyConnect-style gateway: record
    /// version DTLS 1.0, epoch 0, sequence 0, one unfragmented handshake message, client_version
    /// DTLS 1.2, the 32-byte session id from X-DTLS-Session-ID, no cookie, six suites,
    /// renegotiation_info, server_name "vpn.example.net", extended_master_secret,
    /// supported_groups, ec_point_formats, signature_algorithms.
    pub(crate) const CLIENT_HELLO: [u8; 172] = [
        0x16, 0xfe, 0xff, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x9f, 0x01, 0x00,
        0x00, 0x93, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x93, 0xfe, 0xfd, 0x70, 0x14, 0x76,
        0x9b, 0xc0, 0x98, 0xfb, 0xf7, 0x39, 0xb3, 0x96, 0xc5, 0xee, 0x02, 0x65, 0x5b, 0x34, 0x4c,
        0x8c, 0x7f, 0xb6, 0xef, 0xc4, 0x56, 0x9b, 0x5c, 0xd5, 0x4f, 0x36, 0x93, 0x9c, 0x54, 0x20,
        0x3e, 0x12, 0x49, 0x4e, 0xae, 0xf4, 0x80, 0x7e, 0xeb, 0x23, 0x10, 0xf7, 0x95, 0x5d, 0x10,
        0x59, 0x83, 0x2c, 0x0d, 0xd6, 0x53, 0x1e, 0xcc, 0x0a, 0x0d, 0xda, 0xa6, 0xcd, 0x62, 0x5c,
        0x68, 0xfe, 0x00, 0x00, 0x0c, 0xc0, 0x2b, 0xc0, 0x2f, 0xc0, 0x2c, 0xc0, 0x30, 0x00, 0x9e,
        0x00, 0x9f, 0x01, 0x00, 0x00, 0x3d, 0xff, 0x01, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x14,
        0x00, 0x12, 0x00, 0x00, 0x0f, 0x76, 0x70, 0x6e, 0x2e, 0x65, 0x78, 0x61, 0x6d, 0x70, 0x6c,
        0x65, 0x2e, 0x6e, 0x65, 0x74, 0x00, 0x17, 0x00, 0x00, 0x00, 0x0a, 0x00, 0x06, 0x00, 0x04,
        0x00, 0x1d, 0x00, 0x17, 0x00, 0x0b, 0x00, 0x02, 0x01, 0x00, 0x00, 0x0d, 0x00, 0x08, 0x00,
        0x06, 0x04, 0x03, 0x08, 0x04, 0x04, 0x01,
    ];

    /// Offset of "vpn.example.net" in [`CLIENT_HELLO`].
    const SNI_AT: usize = 125;
    /// Offset of `client_version` in [`CLIENT_HELLO`].
    const BODY_AT: usize = HEADER_LEN + HANDSHAKE_HEADER_LEN;

    #[test]
    fn record_header() {
        let r = DtlsRecord::new_checked(&CLIENT_HELLO[..]).unwrap();
        assert_eq!(r.content_type(), content_type::HANDSHAKE);
        assert_eq!(r.version(), version::DTLS_1_0);
        assert_eq!(r.epoch(), 0);
        assert_eq!(r.sequence_number(), 0);
        assert_eq!(r.length(), 159);
        assert_eq!(r.fragment(), &CLIENT_HELLO[HEADER_LEN..]);
        assert!(r.is_complete());
        // An application-data record in epoch 1.
        let data = [
            0x17, 0xfe, 0xfd, 0x00, 0x01, 0x00, 0x00, 0x01, 0x02, 0x03, 0x04, 0x00, 0x03, 0xaa,
            0xbb, 0xcc, 0x17, 0xfe, 0xfd,
        ];
        let r = DtlsRecord::new_checked(&data[..]).unwrap();
        assert_eq!(r.content_type(), content_type::APPLICATION_DATA);
        assert_eq!(r.version(), version::DTLS_1_2);
        assert_eq!(r.epoch(), 1);
        assert_eq!(r.sequence_number(), 0x0000_0102_0304);
        assert_eq!(r.fragment(), [0xaa, 0xbb, 0xcc]);
        assert_eq!(parse_client_hello(&data), None);
    }

    #[test]
    fn dtls12_client_hello_sni() {
        let ch = parse_client_hello(&CLIENT_HELLO).unwrap();
        assert_eq!(ch.legacy_version, version::DTLS_1_2);
        assert_eq!(ch.sni, Some(&b"vpn.example.net"[..]));
        assert_eq!(&CLIENT_HELLO[SNI_AT..SNI_AT + 15], b"vpn.example.net");
    }

    #[test]
    fn truncated_at_every_length() {
        for len in 0..CLIENT_HELLO.len() {
            let cut = &CLIENT_HELLO[..len];
            let r = DtlsRecord::new_checked(cut);
            assert_eq!(r.is_err(), len < HEADER_LEN, "len {len}");
            if len < HEADER_LEN {
                assert_eq!(r, Err(Error::Truncated));
            }
            let ch = parse_client_hello(cut);
            if len < BODY_AT + 2 {
                assert_eq!(ch, None, "len {len}");
            } else if len < SNI_AT + 15 {
                let want = ClientHello {
                    legacy_version: 0xfefd,
                    sni: None,
                };
                assert_eq!(ch, Some(want), "len {len}");
            } else {
                assert_eq!(ch.unwrap().sni, Some(&b"vpn.example.net"[..]), "len {len}");
            }
        }
    }

    #[test]
    fn bad_headers() {
        for ct in [0u8, 19, 26, 0x2c, 0xff] {
            let mut m = CLIENT_HELLO;
            m[0] = ct;
            assert_eq!(
                DtlsRecord::new_checked(&m[..]),
                Err(Error::BadHeader),
                "{ct}"
            );
            assert_eq!(parse_client_hello(&m), None);
        }
        for v in [0x0303u16, 0xfefe, 0xfefc, 0xfeff ^ 0xff00, 0] {
            let mut m = CLIENT_HELLO;
            m[1..3].copy_from_slice(&v.to_be_bytes());
            assert_eq!(
                DtlsRecord::new_checked(&m[..]),
                Err(Error::BadHeader),
                "{v:#x}"
            );
        }
        let mut m = CLIENT_HELLO;
        m[11..13].copy_from_slice(&0xffffu16.to_be_bytes());
        assert_eq!(DtlsRecord::new_checked(&m[..]), Err(Error::BadLength));
        // tls12_cid: the length is not at a known offset, so it is not judged.
        m[0] = content_type::TLS12_CID;
        assert!(DtlsRecord::new_checked(&m[..]).is_ok());
    }

    #[test]
    fn fragmented_client_hello() {
        // A later fragment of the ClientHello: recognised, but no version or SNI.
        let mut m = CLIENT_HELLO;
        m[HEADER_LEN + 8] = 0x40; // fragment_offset = 64
        assert_eq!(
            parse_client_hello(&m),
            Some(ClientHello {
                legacy_version: 0,
                sni: None
            })
        );
        // A first fragment that ends before the SNI.
        let mut m = CLIENT_HELLO;
        m[HEADER_LEN + 9..HEADER_LEN + 12].copy_from_slice(&[0, 0, 90]);
        let ch = parse_client_hello(&m).unwrap();
        assert_eq!(ch.legacy_version, 0xfefd);
        assert_eq!(ch.sni, None);
        // A HelloVerifyRequest (type 3) is not a ClientHello.
        let mut m = CLIENT_HELLO;
        m[HEADER_LEN] = 3;
        assert_eq!(parse_client_hello(&m), None);
    }

    #[test]
    fn cookie_is_skipped() {
        // The second ClientHello, echoing a 20-byte cookie from HelloVerifyRequest.
        let mut m = CLIENT_HELLO.to_vec();
        let cookie_at = BODY_AT + 2 + 32 + 1 + 32;
        assert_eq!(m[cookie_at], 0);
        m[cookie_at] = 20;
        m.splice(cookie_at + 1..cookie_at + 1, [0xc0; 20]);
        let fix24 = |m: &mut Vec<u8>, at: usize, v: usize| {
            m[at..at + 3].copy_from_slice(&(v as u32).to_be_bytes()[1..]);
        };
        let body_len = m.len() - BODY_AT;
        fix24(&mut m, HEADER_LEN + 1, body_len);
        fix24(&mut m, HEADER_LEN + 9, body_len);
        let rec_len = (m.len() - HEADER_LEN) as u16;
        m[11..13].copy_from_slice(&rec_len.to_be_bytes());
        m[5..11].copy_from_slice(&[0, 0, 0, 0, 0, 1]);
        let ch = parse_client_hello(&m).unwrap();
        assert_eq!(ch.sni, Some(&b"vpn.example.net"[..]));
        assert_eq!(
            DtlsRecord::new_checked(&m[..]).unwrap().sequence_number(),
            1
        );
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..400)) {
            if let Ok(r) = DtlsRecord::new_checked(&data[..]) {
                prop_assert!(r.fragment().len() <= usize::from(r.length()));
                prop_assert!(r.sequence_number() < 1 << 48);
                let _ = (r.content_type(), r.version(), r.epoch(), r.is_complete());
            }
            let _ = parse_client_hello(&data);
        }

        #[test]
        fn arbitrary_handshake_never_panics(
            hs in proptest::collection::vec(any::<u8>(), 0..300),
        ) {
            // A valid record around a ClientHello type byte and arbitrary bytes.
            let mut m = vec![0x16, 0xfe, 0xfd, 0, 0, 0, 0, 0, 0, 0, 0];
            m.extend_from_slice(&(hs.len() as u16 + 1).to_be_bytes());
            m.push(1);
            m.extend_from_slice(&hs);
            let ch = parse_client_hello(&m);
            if hs.len() >= 11 && hs[5..8] != [0, 0, 0] {
                prop_assert_eq!(ch, Some(ClientHello { legacy_version: 0, sni: None }));
            }
            if hs.len() < 11 {
                prop_assert_eq!(ch, None);
            }
        }
    }
}
