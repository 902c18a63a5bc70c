//! IKE message header (RFC 7296 §3.1; IKEv1: RFC 2408 §3.1) and the generic payload chain.
//!
//! The balancer reads the cleartext header of every IKE message (SPIs, exchange type, flags) to
//! pin IKE SAs to gateways, and walks the cleartext payload chain of IKE_SA_INIT to find notify
//! payloads (NAT detection, cookies, redirect). Everything after an Encrypted (SK/SKF) payload is
//! ciphertext and is never looked at.
//!
//! Views are over the UDP payload (port 500) or the UDP payload after the 4-byte non-ESP marker
//! (port 4500, RFC 3948 §2.2).

use super::{be16, be32, set_be16, set_be32, Error, Result};

/// Length of the fixed IKE header.
pub const HEADER_LEN: usize = 28;

/// Length of the non-ESP marker (four zero bytes) that precedes IKE on the NAT-T port
/// (RFC 3948 §2.2).
pub const NON_ESP_MARKER_LEN: usize = 4;

/// The non-ESP marker itself: an ESP SPI of zero, which RFC 4303 reserves.
pub const NON_ESP_MARKER: [u8; NON_ESP_MARKER_LEN] = [0; NON_ESP_MARKER_LEN];

/// Length of a generic payload header (next payload, flags, length).
pub const PAYLOAD_HEADER_LEN: usize = 4;

/// Upper bound on payloads [`IkeHeader::payloads`] yields, so a hostile chain of empty payloads
/// costs bounded work per packet. Real messages carry well under twenty.
pub const MAX_PAYLOADS: usize = 64;

/// Exchange types (RFC 7296 §3.1, RFC 2408 §3.1 and the IANA registry).
pub mod exchange {
    /// IKEv1 Base.
    pub const V1_BASE: u8 = 1;
    /// IKEv1 Identity Protection (Main Mode).
    pub const V1_IDENTITY_PROTECTION: u8 = 2;
    /// IKEv1 Authentication Only.
    pub const V1_AUTHENTICATION_ONLY: u8 = 3;
    /// IKEv1 Aggressive Mode.
    pub const V1_AGGRESSIVE: u8 = 4;
    /// IKEv1 Informational.
    pub const V1_INFORMATIONAL: u8 = 5;
    /// IKEv1 Quick Mode (RFC 2409).
    pub const V1_QUICK_MODE: u8 = 32;
    /// IKEv1 New Group Mode (RFC 2409).
    pub const V1_NEW_GROUP_MODE: u8 = 33;
    /// IKEv2 IKE_SA_INIT.
    pub const IKE_SA_INIT: u8 = 34;
    /// IKEv2 IKE_AUTH.
    pub const IKE_AUTH: u8 = 35;
    /// IKEv2 CREATE_CHILD_SA.
    pub const CREATE_CHILD_SA: u8 = 36;
    /// IKEv2 INFORMATIONAL.
    pub const INFORMATIONAL: u8 = 37;
    /// IKEv2 IKE_SESSION_RESUME (RFC 5723).
    pub const IKE_SESSION_RESUME: u8 = 38;
    /// IKEv2 IKE_INTERMEDIATE (RFC 9242).
    pub const IKE_INTERMEDIATE: u8 = 43;
    /// IKEv2 IKE_FOLLOWUP_KE (RFC 9370).
    pub const IKE_FOLLOWUP_KE: u8 = 44;

    /// Whether `exchange_type` is defined for IKE major version `major` (1 or 2).
    #[inline]
    pub fn is_valid(major: u8, exchange_type: u8) -> bool {
        match major {
            1 => matches!(exchange_type, 1..=5 | 32 | 33),
            2 => matches!(exchange_type, 34..=38 | 43 | 44),
            _ => false,
        }
    }
}

/// Payload types (RFC 7296 §3.2 and the IANA registry).
pub mod payload_type {
    /// No next payload: the chain ends.
    pub const NONE: u8 = 0;
    /// Security Association.
    pub const SA: u8 = 33;
    /// Key Exchange.
    pub const KE: u8 = 34;
    /// Identification - Initiator.
    pub const IDI: u8 = 35;
    /// Identification - Responder.
    pub const IDR: u8 = 36;
    /// Certificate.
    pub const CERT: u8 = 37;
    /// Certificate Request.
    pub const CERTREQ: u8 = 38;
    /// Authentication.
    pub const AUTH: u8 = 39;
    /// Nonce.
    pub const NONCE: u8 = 40;
    /// Notify.
    pub const NOTIFY: u8 = 41;
    /// Delete.
    pub const DELETE: u8 = 42;
    /// Vendor ID.
    pub const VENDOR_ID: u8 = 43;
    /// Traffic Selector - Initiator.
    pub const TSI: u8 = 44;
    /// Traffic Selector - Responder.
    pub const TSR: u8 = 45;
    /// Encrypted and Authenticated.
    pub const SK: u8 = 46;
    /// Configuration.
    pub const CP: u8 = 47;
    /// Extensible Authentication.
    pub const EAP: u8 = 48;
    /// Encrypted and Authenticated Fragment (RFC 7383).
    pub const SKF: u8 = 53;
}

/// Notify message types (RFC 7296 §3.10.1 and the IANA registry). Values below 16384 are
/// errors, the rest status types.
pub mod notify_type {
    /// INVALID_MAJOR_VERSION.
    pub const INVALID_MAJOR_VERSION: u16 = 5;
    /// INVALID_SYNTAX.
    pub const INVALID_SYNTAX: u16 = 7;
    /// NO_PROPOSAL_CHOSEN.
    pub const NO_PROPOSAL_CHOSEN: u16 = 14;
    /// INVALID_KE_PAYLOAD.
    pub const INVALID_KE_PAYLOAD: u16 = 17;
    /// AUTHENTICATION_FAILED.
    pub const AUTHENTICATION_FAILED: u16 = 24;
    /// TEMPORARY_FAILURE.
    pub const TEMPORARY_FAILURE: u16 = 43;
    /// First status (non-error) type.
    pub const FIRST_STATUS: u16 = 16384;
    /// INITIAL_CONTACT.
    pub const INITIAL_CONTACT: u16 = 16384;
    /// NAT_DETECTION_SOURCE_IP.
    pub const NAT_DETECTION_SOURCE_IP: u16 = 16388;
    /// NAT_DETECTION_DESTINATION_IP.
    pub const NAT_DETECTION_DESTINATION_IP: u16 = 16389;
    /// COOKIE.
    pub const COOKIE: u16 = 16390;
    /// REDIRECT_SUPPORTED (RFC 5685).
    pub const REDIRECT_SUPPORTED: u16 = 16406;
    /// REDIRECT (RFC 5685).
    pub const REDIRECT: u16 = 16407;
    /// REDIRECTED_FROM (RFC 5685).
    pub const REDIRECTED_FROM: u16 = 16408;
    /// IKEV2_FRAGMENTATION_SUPPORTED (RFC 7383).
    pub const IKEV2_FRAGMENTATION_SUPPORTED: u16 = 16430;
    /// SIGNATURE_HASH_ALGORITHMS (RFC 7427).
    pub const SIGNATURE_HASH_ALGORITHMS: u16 = 16431;
}

/// Header flag bits.
pub mod flags {
    /// IKEv2 Initiator: set by the original initiator of the IKE SA.
    pub const INITIATOR: u8 = 0x08;
    /// IKEv2 Version: the sender could speak a higher major version.
    pub const VERSION: u8 = 0x10;
    /// IKEv2 Response.
    pub const RESPONSE: u8 = 0x20;
    /// IKEv1 Encryption: the payloads after the header are encrypted.
    pub const V1_ENCRYPTION: u8 = 0x01;
    /// IKEv1 Commit.
    pub const V1_COMMIT: u8 = 0x02;
    /// IKEv1 Authentication Only.
    pub const V1_AUTHENTICATION_ONLY: u8 = 0x04;
}

mod field {
    pub const INITIATOR_SPI: usize = 0;
    pub const RESPONDER_SPI: usize = 8;
    pub const NEXT_PAYLOAD: usize = 16;
    pub const VERSION: usize = 17;
    pub const EXCHANGE_TYPE: usize = 18;
    pub const FLAGS: usize = 19;
    pub const MESSAGE_ID: usize = 20;
    pub const LENGTH: usize = 24;
}

/// A read-only view of an IKE message header over `buffer`, which starts at the header (after
/// any non-ESP marker).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IkeHeader<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> IkeHeader<T> {
    /// Wraps `buffer` without any check. Accessors may panic unless [`check`](Self::check) passed.
    #[inline]
    pub const fn new_unchecked(buffer: T) -> Self {
        IkeHeader { buffer }
    }

    /// Wraps `buffer` after [`check`](Self::check).
    ///
    /// `datagram_len` is the real length of the IKE message (the UDP length less the UDP header,
    /// less the marker on port 4500). It may exceed `buffer.len()` when the caller holds only the
    /// first IP fragment; payload accessors then see only the bytes present.
    #[inline]
    pub fn new_checked(buffer: T, datagram_len: usize) -> Result<Self> {
        let header = Self::new_unchecked(buffer);
        header.check(datagram_len)?;
        Ok(header)
    }

    /// Validates the header: at least [`HEADER_LEN`] bytes ([`Error::Truncated`]), major version
    /// 1 or 2 and an exchange type defined for it ([`Error::BadHeader`]), and a length field equal
    /// to `datagram_len` ([`Error::BadLength`]).
    pub fn check(&self, datagram_len: usize) -> Result<()> {
        let b = self.buffer.as_ref();
        if b.len() < HEADER_LEN {
            return Err(Error::Truncated);
        }
        let major = b[field::VERSION] >> 4;
        if !exchange::is_valid(major, b[field::EXCHANGE_TYPE]) {
            return Err(Error::BadHeader);
        }
        // `datagram_len >= HEADER_LEN` is implied: the length field covers the header, and a
        // smaller value is as wrong as a mismatch.
        let length = be32(b, field::LENGTH);
        if u64::from(length) != datagram_len as u64 || datagram_len < HEADER_LEN {
            return Err(Error::BadLength);
        }
        Ok(())
    }

    /// Returns the underlying buffer.
    #[inline]
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// IKE SA Initiator's SPI.
    #[inline]
    pub fn initiator_spi(&self) -> u64 {
        let b = self.buffer.as_ref();
        let mut spi = [0u8; 8];
        spi.copy_from_slice(&b[field::INITIATOR_SPI..field::INITIATOR_SPI + 8]);
        u64::from_be_bytes(spi)
    }

    /// IKE SA Responder's SPI (zero in the first IKE_SA_INIT request).
    #[inline]
    pub fn responder_spi(&self) -> u64 {
        let b = self.buffer.as_ref();
        let mut spi = [0u8; 8];
        spi.copy_from_slice(&b[field::RESPONDER_SPI..field::RESPONDER_SPI + 8]);
        u64::from_be_bytes(spi)
    }

    /// Type of the first payload (see [`payload_type`]).
    #[inline]
    pub fn next_payload(&self) -> u8 {
        self.buffer.as_ref()[field::NEXT_PAYLOAD]
    }

    /// Major version: 1 or 2 once checked.
    #[inline]
    pub fn major_version(&self) -> u8 {
        self.buffer.as_ref()[field::VERSION] >> 4
    }

    /// Minor version.
    #[inline]
    pub fn minor_version(&self) -> u8 {
        self.buffer.as_ref()[field::VERSION] & 0x0f
    }

    /// Exchange type (see [`exchange`]).
    #[inline]
    pub fn exchange_type(&self) -> u8 {
        self.buffer.as_ref()[field::EXCHANGE_TYPE]
    }

    /// Raw flags octet (see [`flags`]; the bit meanings differ between IKEv1 and IKEv2).
    #[inline]
    pub fn flags(&self) -> u8 {
        self.buffer.as_ref()[field::FLAGS]
    }

    /// IKEv2 Initiator flag: the sender is the original initiator of the IKE SA.
    #[inline]
    pub fn is_initiator(&self) -> bool {
        self.flags() & flags::INITIATOR != 0
    }

    /// IKEv2 Response flag: this message answers a request with the same message ID.
    #[inline]
    pub fn is_response(&self) -> bool {
        self.flags() & flags::RESPONSE != 0
    }

    /// Message ID.
    #[inline]
    pub fn message_id(&self) -> u32 {
        be32(self.buffer.as_ref(), field::MESSAGE_ID)
    }

    /// Length of the whole message, header included (equals `datagram_len` once checked).
    #[inline]
    pub fn length(&self) -> u32 {
        be32(self.buffer.as_ref(), field::LENGTH)
    }

    /// The payload bytes present: from the end of the header to the end of the message or of the
    /// buffer, whichever comes first.
    #[inline]
    pub fn payload(&self) -> &[u8] {
        let b = self.buffer.as_ref();
        let end = usize::try_from(self.length())
            .unwrap_or(usize::MAX)
            .min(b.len());
        b.get(HEADER_LEN..end).unwrap_or(&[])
    }

    /// Iterates over the generic payload headers, starting with [`next_payload`](Self::next_payload).
    ///
    /// The iterator stops after the last payload, after an Encrypted payload (SK or SKF: its
    /// next-payload field names the first *encrypted* payload), after [`MAX_PAYLOADS`] payloads,
    /// or after yielding the first error.
    #[inline]
    pub fn payloads(&self) -> IkePayloads<'_> {
        let b = self.buffer.as_ref();
        let message_len = usize::try_from(self.length()).unwrap_or(usize::MAX);
        IkePayloads {
            present: b.get(..message_len.min(b.len())).unwrap_or(b),
            message_len,
            offset: HEADER_LEN,
            next: self.next_payload(),
            yielded: 0,
        }
    }

    /// The first Notify payload of type `ty` among the cleartext payloads, if any.
    ///
    /// Malformed chains and malformed notify bodies read as "not found".
    pub fn find_notify(&self, ty: u16) -> Option<Notify<'_>> {
        self.payloads()
            .map_while(|p| p.ok())
            .filter(|p| p.payload_type == payload_type::NOTIFY)
            .filter_map(|p| Notify::new_checked(p.body).ok())
            .find(|n| n.notify_type() == ty)
    }
}

/// One payload of the chain: its type (from the previous header), critical bit and body (the
/// bytes after the 4-byte generic header).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IkePayload<'a> {
    /// Payload type (see [`payload_type`]).
    pub payload_type: u8,
    /// IKEv2 critical bit: the recipient must reject the message if it does not know the type.
    pub critical: bool,
    /// Payload body, complete (the iterator yields `Truncated` rather than a partial body).
    pub body: &'a [u8],
}

impl<'a> IkePayload<'a> {
    /// The body as a Notify payload; [`Error::BadHeader`] if this is not a Notify payload.
    #[inline]
    pub fn notify(&self) -> Result<Notify<'a>> {
        if self.payload_type != payload_type::NOTIFY {
            return Err(Error::BadHeader);
        }
        Notify::new_checked(self.body)
    }
}

/// Iterator over the generic payload chain; see [`IkeHeader::payloads`].
#[derive(Debug, Clone)]
pub struct IkePayloads<'a> {
    /// Message bytes present (header included), never past the declared message length.
    present: &'a [u8],
    /// Declared message length, to tell a malformed chain from a missing fragment.
    message_len: usize,
    offset: usize,
    /// Type of the payload at `offset`; `payload_type::NONE` once finished.
    next: u8,
    yielded: usize,
}

impl<'a> IkePayloads<'a> {
    fn fail(&mut self, end: usize) -> Option<Result<IkePayload<'a>>> {
        self.next = payload_type::NONE;
        // Past the declared message the chain itself is wrong; past only the bytes present we
        // are missing the rest of the datagram (a first fragment).
        Some(Err(if end > self.message_len {
            Error::BadLength
        } else {
            Error::Truncated
        }))
    }
}

impl<'a> Iterator for IkePayloads<'a> {
    type Item = Result<IkePayload<'a>>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.next == payload_type::NONE || self.yielded >= MAX_PAYLOADS {
            return None;
        }
        let header_end = self.offset.saturating_add(PAYLOAD_HEADER_LEN);
        let Some(header) = self.present.get(self.offset..header_end) else {
            return self.fail(header_end);
        };
        let length = usize::from(be16(header, 2));
        if length < PAYLOAD_HEADER_LEN {
            self.next = payload_type::NONE;
            return Some(Err(Error::BadLength));
        }
        let end = self.offset.saturating_add(length);
        let Some(body) = self.present.get(header_end..end) else {
            return self.fail(end);
        };
        let payload = IkePayload {
            payload_type: self.next,
            critical: header[1] & 0x80 != 0,
            body,
        };
        self.next = if matches!(self.next, payload_type::SK | payload_type::SKF) {
            payload_type::NONE
        } else {
            header[0]
        };
        self.offset = end;
        self.yielded += 1;
        Some(Ok(payload))
    }
}

/// A view of an IKEv2 Notify payload body (RFC 7296 §3.10): protocol ID, SPI size, notify
/// message type, SPI, notification data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Notify<'a> {
    body: &'a [u8],
}

impl<'a> Notify<'a> {
    /// Fixed part of the body before the SPI.
    pub const FIXED_LEN: usize = 4;

    /// Wraps a Notify payload body: [`Error::Truncated`] if shorter than the fixed part plus the
    /// SPI size it declares.
    #[inline]
    pub fn new_checked(body: &'a [u8]) -> Result<Self> {
        match body.get(1) {
            Some(&spi_size) if body.len() >= Self::FIXED_LEN + usize::from(spi_size) => {
                Ok(Notify { body })
            }
            _ => Err(Error::Truncated),
        }
    }

    /// Protocol ID (0 for notifications about the IKE SA, 2 AH, 3 ESP).
    #[inline]
    pub fn protocol_id(&self) -> u8 {
        self.body[0]
    }

    /// SPI size in bytes.
    #[inline]
    pub fn spi_size(&self) -> u8 {
        self.body[1]
    }

    /// Notify message type (see [`notify_type`]).
    #[inline]
    pub fn notify_type(&self) -> u16 {
        be16(self.body, 2)
    }

    /// Whether this is an error notification (type below 16384).
    #[inline]
    pub fn is_error(&self) -> bool {
        self.notify_type() < notify_type::FIRST_STATUS
    }

    /// The SPI (empty when the SPI size is zero).
    #[inline]
    pub fn spi(&self) -> &'a [u8] {
        &self.body[Self::FIXED_LEN..Self::FIXED_LEN + usize::from(self.spi_size())]
    }

    /// Notification data after the SPI.
    #[inline]
    pub fn data(&self) -> &'a [u8] {
        &self.body[Self::FIXED_LEN + usize::from(self.spi_size())..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> IkeHeader<T> {
    /// Sets the IKE SA Initiator's SPI.
    #[inline]
    pub fn set_initiator_spi(&mut self, spi: u64) {
        let at = field::INITIATOR_SPI;
        self.buffer.as_mut()[at..at + 8].copy_from_slice(&spi.to_be_bytes());
    }

    /// Sets the IKE SA Responder's SPI.
    #[inline]
    pub fn set_responder_spi(&mut self, spi: u64) {
        let at = field::RESPONDER_SPI;
        self.buffer.as_mut()[at..at + 8].copy_from_slice(&spi.to_be_bytes());
    }

    /// Sets the type of the first payload.
    #[inline]
    pub fn set_next_payload(&mut self, value: u8) {
        self.buffer.as_mut()[field::NEXT_PAYLOAD] = value;
    }

    /// Sets the major and minor version (4 bits each).
    #[inline]
    pub fn set_version(&mut self, major: u8, minor: u8) {
        self.buffer.as_mut()[field::VERSION] = (major << 4) | (minor & 0x0f);
    }

    /// Sets the exchange type.
    #[inline]
    pub fn set_exchange_type(&mut self, value: u8) {
        self.buffer.as_mut()[field::EXCHANGE_TYPE] = value;
    }

    /// Sets the flags octet.
    #[inline]
    pub fn set_flags(&mut self, value: u8) {
        self.buffer.as_mut()[field::FLAGS] = value;
    }

    /// Sets the message ID.
    #[inline]
    pub fn set_message_id(&mut self, value: u32) {
        set_be32(self.buffer.as_mut(), field::MESSAGE_ID, value);
    }

    /// Sets the length of the whole message.
    #[inline]
    pub fn set_length(&mut self, value: u32) {
        set_be32(self.buffer.as_mut(), field::LENGTH, value);
    }
}

/// The high-level form of an IKEv2 message header (version 2.0).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IkeHeaderRepr {
    pub initiator_spi: u64,
    pub responder_spi: u64,
    /// Type of the first payload (see [`payload_type`]).
    pub next_payload: u8,
    /// See [`exchange`].
    pub exchange_type: u8,
    /// See [`flags`].
    pub flags: u8,
    pub message_id: u32,
    /// Length of the whole message, header included.
    pub length: u32,
}

impl IkeHeaderRepr {
    /// Reads a checked header; `BadHeader` unless it is IKEv2 (major version 2).
    pub fn parse<T: AsRef<[u8]>>(header: &IkeHeader<T>) -> Result<IkeHeaderRepr> {
        if header.major_version() != 2 {
            return Err(Error::BadHeader);
        }
        Ok(IkeHeaderRepr {
            initiator_spi: header.initiator_spi(),
            responder_spi: header.responder_spi(),
            next_payload: header.next_payload(),
            exchange_type: header.exchange_type(),
            flags: header.flags(),
            message_id: header.message_id(),
            length: header.length(),
        })
    }

    /// [`HEADER_LEN`].
    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN
    }

    /// Writes the header (version 2.0) through the view's setters; the buffer must hold
    /// [`HEADER_LEN`] bytes.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, header: &mut IkeHeader<T>) {
        header.set_initiator_spi(self.initiator_spi);
        header.set_responder_spi(self.responder_spi);
        header.set_next_payload(self.next_payload);
        header.set_version(2, 0);
        header.set_exchange_type(self.exchange_type);
        header.set_flags(self.flags);
        header.set_message_id(self.message_id);
        header.set_length(self.length);
    }
}

/// A read/write view of a generic payload header (RFC 7296 §3.2) and the body after it.
#[derive(Debug, Clone)]
pub struct PayloadHeader<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> PayloadHeader<T> {
    /// Wraps `buffer` without validation.
    pub const fn new_unchecked(buffer: T) -> Self {
        PayloadHeader { buffer }
    }

    /// Wraps `buffer` after checking it holds the header and the length it declares
    /// (`Truncated`), and that the length covers the header (`BadLength`).
    pub fn new_checked(buffer: T) -> Result<Self> {
        let b = buffer.as_ref();
        if b.len() < PAYLOAD_HEADER_LEN {
            return Err(Error::Truncated);
        }
        let len = usize::from(be16(b, 2));
        if len < PAYLOAD_HEADER_LEN {
            return Err(Error::BadLength);
        }
        if len > b.len() {
            return Err(Error::Truncated);
        }
        Ok(PayloadHeader { buffer })
    }

    /// Type of the next payload.
    pub fn next_payload(&self) -> u8 {
        self.buffer.as_ref()[0]
    }

    /// The critical bit.
    pub fn critical(&self) -> bool {
        self.buffer.as_ref()[1] & 0x80 != 0
    }

    /// Payload length, header included.
    pub fn length(&self) -> u16 {
        be16(self.buffer.as_ref(), 2)
    }

    /// The body (after the header, up to the length).
    pub fn body(&self) -> &[u8] {
        let end = usize::from(self.length()).clamp(PAYLOAD_HEADER_LEN, self.buffer.as_ref().len());
        &self.buffer.as_ref()[PAYLOAD_HEADER_LEN..end]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> PayloadHeader<T> {
    /// Sets the type of the next payload.
    pub fn set_next_payload(&mut self, value: u8) {
        self.buffer.as_mut()[0] = value;
    }

    /// Sets the critical bit, the other (reserved) bits 0.
    pub fn set_critical(&mut self, critical: bool) {
        self.buffer.as_mut()[1] = if critical { 0x80 } else { 0 };
    }

    /// Sets the payload length, header included.
    pub fn set_length(&mut self, value: u16) {
        set_be16(self.buffer.as_mut(), 2, value);
    }

    /// Bytes after the header, writable (to the end of the buffer).
    pub fn body_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[PAYLOAD_HEADER_LEN..]
    }
}

/// The high-level form of a generic payload header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PayloadHeaderRepr {
    pub next_payload: u8,
    pub critical: bool,
    /// Payload length, header included.
    pub length: u16,
}

impl PayloadHeaderRepr {
    /// A non-critical header before a body of `body_len` bytes (at most 65531; a longer one
    /// gets the largest length, which no parser accepts for a shorter buffer).
    pub fn new(next_payload: u8, body_len: usize) -> Self {
        PayloadHeaderRepr {
            next_payload,
            critical: false,
            length: u16::try_from(PAYLOAD_HEADER_LEN + body_len).unwrap_or(u16::MAX),
        }
    }

    /// Reads a checked header.
    pub fn parse<T: AsRef<[u8]>>(header: &PayloadHeader<T>) -> Result<PayloadHeaderRepr> {
        Ok(PayloadHeaderRepr {
            next_payload: header.next_payload(),
            critical: header.critical(),
            length: header.length(),
        })
    }

    /// [`PAYLOAD_HEADER_LEN`].
    pub const fn buffer_len(&self) -> usize {
        PAYLOAD_HEADER_LEN
    }

    /// Writes the header through the view's setters.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, header: &mut PayloadHeader<T>) {
        header.set_next_payload(self.next_payload);
        header.set_critical(self.critical);
        header.set_length(self.length);
    }
}

/// The fixed part of a Notify payload body without an SPI, as IKE_SA_INIT carries them:
/// protocol ID, SPI size 0, type. The notification data follows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct NotifyRepr {
    /// 0 for notifications about the IKE SA.
    pub protocol_id: u8,
    /// See [`notify_type`].
    pub notify_type: u16,
}

impl NotifyRepr {
    /// Reads a notify; `BadHeader` when it carries an SPI.
    pub fn parse(notify: &Notify<'_>) -> Result<NotifyRepr> {
        if notify.spi_size() != 0 {
            return Err(Error::BadHeader);
        }
        Ok(NotifyRepr {
            protocol_id: notify.protocol_id(),
            notify_type: notify.notify_type(),
        })
    }

    /// [`Notify::FIXED_LEN`].
    pub const fn buffer_len(&self) -> usize {
        Notify::FIXED_LEN
    }

    /// Writes the fixed part at the start of `body` (at least [`Notify::FIXED_LEN`] bytes); the
    /// data after it is the caller's.
    pub fn emit(&self, body: &mut [u8]) {
        body[0] = self.protocol_id;
        body[1] = 0;
        set_be16(body, 2, self.notify_type);
    }
}

/// SA payload numbers (RFC 7296 §3.3).
pub mod sa {
    /// Proposal and transform substructure "last" marker: this is the last one.
    pub const LAST: u8 = 0;
    /// Proposal "last" marker: more proposals follow.
    pub const MORE_PROPOSALS: u8 = 2;
    /// Transform "last" marker: more transforms follow.
    pub const MORE_TRANSFORMS: u8 = 3;
    /// Protocol ID of an IKE SA proposal.
    pub const PROTO_IKE: u8 = 1;
    /// The Key Length transform attribute in TV format (attribute format bit set, type 14).
    pub const ATTR_KEY_LENGTH: u16 = 0x800e;
    /// Length of a proposal substructure without SPI and transforms.
    pub const PROPOSAL_HEADER_LEN: usize = 8;
    /// Length of a transform substructure without attributes.
    pub const TRANSFORM_HEADER_LEN: usize = 8;
    /// Length of a TV attribute.
    pub const TV_ATTRIBUTE_LEN: usize = 4;
}

/// One transform of a proposal (RFC 7296 §3.3.2), with the Key Length attribute if any.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TransformRepr {
    /// 1 encryption, 2 PRF, 3 integrity, 4 D-H group.
    pub transform_type: u8,
    pub transform_id: u16,
    /// Key length in bits, for variable-length ciphers.
    pub key_length: Option<u16>,
}

impl TransformRepr {
    /// The substructure's length: 8, or 12 with a key length.
    pub const fn buffer_len(&self) -> usize {
        sa::TRANSFORM_HEADER_LEN
            + match self.key_length {
                Some(_) => sa::TV_ATTRIBUTE_LEN,
                None => 0,
            }
    }
}

/// One proposal of an SA payload (RFC 7296 §3.3.1), SPI size 0 as in IKE_SA_INIT.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ProposalRepr {
    /// Proposal number, from 1.
    pub number: u8,
    /// [`sa::PROTO_IKE`] for an IKE SA.
    pub protocol_id: u8,
    pub transforms: Vec<TransformRepr>,
}

impl ProposalRepr {
    /// The substructure's length.
    pub fn buffer_len(&self) -> usize {
        sa::PROPOSAL_HEADER_LEN
            + self
                .transforms
                .iter()
                .map(TransformRepr::buffer_len)
                .sum::<usize>()
    }
}

/// The high-level form of an SA payload body: its proposals, in order.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SaRepr {
    pub proposals: Vec<ProposalRepr>,
}

impl SaRepr {
    /// Reads an SA payload body: `Truncated` when a substructure runs past it, `BadLength` for
    /// lengths that disagree, `BadHeader` for wrong "last" markers, a non-zero SPI size or an
    /// attribute other than Key Length.
    pub fn parse(body: &[u8]) -> Result<SaRepr> {
        let mut proposals = Vec::new();
        let mut rest = body;
        loop {
            let p = rest
                .get(..sa::PROPOSAL_HEADER_LEN)
                .ok_or(Error::Truncated)?;
            let len = usize::from(be16(p, 2));
            if len < sa::PROPOSAL_HEADER_LEN {
                return Err(Error::BadLength);
            }
            let p = rest.get(..len).ok_or(Error::Truncated)?;
            if p[6] != 0 {
                return Err(Error::BadHeader);
            }
            let count = usize::from(p[7]);
            let mut transforms = Vec::with_capacity(count);
            let mut t_rest = &p[sa::PROPOSAL_HEADER_LEN..];
            for i in 0..count {
                let t = t_rest
                    .get(..sa::TRANSFORM_HEADER_LEN)
                    .ok_or(Error::Truncated)?;
                let t_len = usize::from(be16(t, 2));
                let last = if i + 1 == count {
                    sa::LAST
                } else {
                    sa::MORE_TRANSFORMS
                };
                if t[0] != last {
                    return Err(Error::BadHeader);
                }
                let key_length = match t_len {
                    sa::TRANSFORM_HEADER_LEN => None,
                    12 => {
                        let a = t_rest.get(8..12).ok_or(Error::Truncated)?;
                        if be16(a, 0) != sa::ATTR_KEY_LENGTH {
                            return Err(Error::BadHeader);
                        }
                        Some(be16(a, 2))
                    }
                    _ => return Err(Error::BadLength),
                };
                transforms.push(TransformRepr {
                    transform_type: t[4],
                    transform_id: be16(t, 6),
                    key_length,
                });
                t_rest = &t_rest[t_len..];
            }
            if !t_rest.is_empty() {
                return Err(Error::BadLength);
            }
            proposals.push(ProposalRepr {
                number: p[4],
                protocol_id: p[5],
                transforms,
            });
            rest = &rest[len..];
            match p[0] {
                sa::LAST if rest.is_empty() => return Ok(SaRepr { proposals }),
                sa::MORE_PROPOSALS if !rest.is_empty() => {}
                _ => return Err(Error::BadHeader),
            }
        }
    }

    /// The body's length.
    pub fn buffer_len(&self) -> usize {
        self.proposals.iter().map(ProposalRepr::buffer_len).sum()
    }

    /// Writes the body at the start of `body` (at least [`buffer_len`](Self::buffer_len)
    /// bytes). Proposal lengths and transform counts are truncated to their fields; real
    /// proposals are far below either limit.
    pub fn emit(&self, body: &mut [u8]) {
        let mut at = 0;
        for (i, p) in self.proposals.iter().enumerate() {
            let last = i + 1 == self.proposals.len();
            let out = &mut body[at..at + p.buffer_len()];
            out[0] = if last { sa::LAST } else { sa::MORE_PROPOSALS };
            out[1] = 0;
            set_be16(out, 2, u16::try_from(p.buffer_len()).unwrap_or(u16::MAX));
            out[4] = p.number;
            out[5] = p.protocol_id;
            out[6] = 0; // SPI size
            out[7] = u8::try_from(p.transforms.len()).unwrap_or(u8::MAX);
            let mut t_at = sa::PROPOSAL_HEADER_LEN;
            for (j, t) in p.transforms.iter().enumerate() {
                let o = &mut out[t_at..t_at + t.buffer_len()];
                o[0] = if j + 1 == p.transforms.len() {
                    sa::LAST
                } else {
                    sa::MORE_TRANSFORMS
                };
                o[1] = 0;
                set_be16(o, 2, u16::try_from(t.buffer_len()).unwrap_or(u16::MAX));
                o[4] = t.transform_type;
                o[5] = 0;
                set_be16(o, 6, t.transform_id);
                if let Some(bits) = t.key_length {
                    set_be16(o, 8, sa::ATTR_KEY_LENGTH);
                    set_be16(o, 10, bits);
                }
                t_at += t.buffer_len();
            }
            at += p.buffer_len();
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    /// IKEv2 IKE_SA_INIT request as strongSwan sends it: SA (AES-CBC-256, HMAC-SHA2-256-128,
    /// PRF-HMAC-SHA2-256, Curve25519), KE (group 31), Nonce, N(NAT_DETECTION_SOURCE_IP),
    /// N(NAT_DETECTION_DESTINATION_IP), N(REDIRECT_SUPPORTED), N(IKEV2_FRAGMENTATION_SUPPORTED).
    pub(crate) const SA_INIT: [u8; 224] = [
        0x5f, 0x2a, 0x8c, 0x3e, 0x91, 0xb0, 0x4d, 0x17, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x21, 0x20, 0x22, 0x08, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xe0, 0x22, 0x00,
        0x00, 0x30, 0x00, 0x00, 0x00, 0x2c, 0x01, 0x01, 0x00, 0x04, 0x03, 0x00, 0x00, 0x0c, 0x01,
        0x00, 0x00, 0x0c, 0x80, 0x0e, 0x01, 0x00, 0x03, 0x00, 0x00, 0x08, 0x03, 0x00, 0x00, 0x0c,
        0x03, 0x00, 0x00, 0x08, 0x02, 0x00, 0x00, 0x05, 0x00, 0x00, 0x00, 0x08, 0x04, 0x00, 0x00,
        0x1f, 0x28, 0x00, 0x00, 0x28, 0x00, 0x1f, 0x00, 0x00, 0x31, 0x83, 0xe0, 0xe2, 0xa2, 0x51,
        0x46, 0x12, 0x59, 0x15, 0x33, 0x14, 0x10, 0xf5, 0x66, 0x74, 0x39, 0x33, 0x44, 0xbc, 0x6e,
        0xb6, 0x0a, 0xe8, 0xd4, 0x59, 0x77, 0x50, 0x1b, 0xa2, 0x24, 0x01, 0x29, 0x00, 0x00, 0x24,
        0xa8, 0xf5, 0x13, 0x2c, 0xc6, 0x4d, 0x5b, 0x48, 0x4e, 0x02, 0xbb, 0xd9, 0x27, 0x82, 0x04,
        0xad, 0x22, 0x3e, 0xad, 0x27, 0xa0, 0x2d, 0x5a, 0x1b, 0xbc, 0x53, 0x80, 0x13, 0x17, 0xe9,
        0x4d, 0x75, 0x29, 0x00, 0x00, 0x1c, 0x00, 0x00, 0x40, 0x04, 0x98, 0xf9, 0x93, 0x76, 0x6f,
        0xef, 0x44, 0x97, 0x25, 0x83, 0x5d, 0x46, 0x89, 0x25, 0x98, 0xd8, 0x1a, 0x0d, 0x5c, 0x46,
        0x29, 0x00, 0x00, 0x1c, 0x00, 0x00, 0x40, 0x05, 0xb5, 0x78, 0x08, 0x0e, 0x2b, 0xc1, 0xb8,
        0x97, 0x0e, 0x02, 0x89, 0x9f, 0x0f, 0xb6, 0xfe, 0x3d, 0xfd, 0x14, 0x1e, 0xae, 0x29, 0x00,
        0x00, 0x08, 0x00, 0x00, 0x40, 0x16, 0x00, 0x00, 0x00, 0x08, 0x00, 0x00, 0x40, 0x2e,
    ];
    /// IKE_AUTH request on port 4500: non-ESP marker, header, SK payload (IV, ciphertext, ICV).
    pub(crate) const AUTH_NATT: [u8; 164] = [
        0x00, 0x00, 0x00, 0x00, 0x5f, 0x2a, 0x8c, 0x3e, 0x91, 0xb0, 0x4d, 0x17, 0x8d, 0x3b, 0x6e,
        0x0a, 0x2c, 0x4f, 0x17, 0x95, 0x2e, 0x20, 0x23, 0x08, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00,
        0x00, 0xa0, 0x23, 0x00, 0x00, 0x84, 0x35, 0x9f, 0xe4, 0x6b, 0xd3, 0x6f, 0x94, 0x20, 0xf4,
        0x2e, 0x6e, 0x31, 0x99, 0x90, 0xfb, 0xa3, 0x00, 0x46, 0xfd, 0x37, 0xc3, 0x0f, 0xd0, 0xbd,
        0xeb, 0xc9, 0xf2, 0x80, 0x2c, 0x58, 0xe3, 0xcf, 0x35, 0x51, 0x31, 0x73, 0xc7, 0xea, 0x93,
        0x31, 0x92, 0x4e, 0x01, 0x01, 0x8f, 0xbd, 0x3f, 0x53, 0x78, 0x39, 0x8f, 0x90, 0x4a, 0xa3,
        0x9c, 0x3b, 0x01, 0x41, 0x27, 0xc6, 0xb7, 0xd2, 0x52, 0x2f, 0xe3, 0x7e, 0x09, 0xd6, 0xc1,
        0xf3, 0xc4, 0x7c, 0x09, 0xfa, 0x37, 0xf0, 0x94, 0x2a, 0x9c, 0x9f, 0x65, 0x4e, 0x3b, 0x37,
        0x28, 0x6e, 0xec, 0xc6, 0x6a, 0x1b, 0x2a, 0x6c, 0xee, 0xc8, 0xba, 0x8c, 0x3f, 0x75, 0x0e,
        0x38, 0x7c, 0x2e, 0xdb, 0x6e, 0x7c, 0xb3, 0x40, 0xe4, 0x1e, 0xe3, 0x8a, 0xa8, 0xe9, 0x27,
        0xf6, 0xe2, 0x98, 0x37, 0xa8, 0x08, 0xaf, 0x32, 0x9b, 0x5e, 0x0d, 0xd2, 0x6e, 0x33,
    ];

    /// Every payload of a parsed chain, or the error that ended it.
    fn chain(bytes: &[u8], datagram_len: usize) -> Vec<Result<(u8, usize)>> {
        let h = IkeHeader::new_checked(bytes, datagram_len).unwrap();
        h.payloads()
            .map(|p| p.map(|p| (p.payload_type, p.body.len())))
            .collect()
    }

    #[test]
    fn ike_sa_init_header() {
        let h = IkeHeader::new_checked(&SA_INIT[..], SA_INIT.len()).unwrap();
        assert_eq!(h.initiator_spi(), 0x5f2a_8c3e_91b0_4d17);
        assert_eq!(h.responder_spi(), 0);
        assert_eq!(h.next_payload(), payload_type::SA);
        assert_eq!(h.major_version(), 2);
        assert_eq!(h.minor_version(), 0);
        assert_eq!(h.exchange_type(), exchange::IKE_SA_INIT);
        assert_eq!(h.flags(), 0x08);
        assert!(h.is_initiator());
        assert!(!h.is_response());
        assert_eq!(h.message_id(), 0);
        assert_eq!(h.length(), 224);
        assert_eq!(h.payload().len(), 224 - HEADER_LEN);
    }

    #[test]
    fn ike_sa_init_payload_chain() {
        assert_eq!(
            chain(&SA_INIT, SA_INIT.len()),
            vec![
                Ok((payload_type::SA, 44)),
                Ok((payload_type::KE, 36)),
                Ok((payload_type::NONCE, 32)),
                Ok((payload_type::NOTIFY, 24)),
                Ok((payload_type::NOTIFY, 24)),
                Ok((payload_type::NOTIFY, 4)),
                Ok((payload_type::NOTIFY, 4)),
            ]
        );
        let h = IkeHeader::new_checked(&SA_INIT[..], SA_INIT.len()).unwrap();
        let types: Vec<u16> = h
            .payloads()
            .filter_map(|p| p.unwrap().notify().ok())
            .map(|n| n.notify_type())
            .collect();
        assert_eq!(
            types,
            [
                notify_type::NAT_DETECTION_SOURCE_IP,
                notify_type::NAT_DETECTION_DESTINATION_IP,
                notify_type::REDIRECT_SUPPORTED,
                notify_type::IKEV2_FRAGMENTATION_SUPPORTED,
            ]
        );
        let nat_src = h.find_notify(notify_type::NAT_DETECTION_SOURCE_IP).unwrap();
        assert_eq!(nat_src.protocol_id(), 0);
        assert_eq!(nat_src.spi_size(), 0);
        assert!(nat_src.spi().is_empty());
        assert!(!nat_src.is_error());
        assert_eq!(nat_src.data().len(), 20);
        assert_eq!(nat_src.data()[..4], [0x98, 0xf9, 0x93, 0x76]);
        assert!(h.find_notify(notify_type::REDIRECT_SUPPORTED).is_some());
        assert!(h.find_notify(notify_type::COOKIE).is_none());
        // The SA payload is not a notify.
        let sa = h.payloads().next().unwrap().unwrap();
        assert_eq!(sa.notify(), Err(Error::BadHeader));
        assert!(!sa.critical);
    }

    #[test]
    fn ike_auth_behind_marker_stops_at_sk() {
        assert_eq!(AUTH_NATT[..NON_ESP_MARKER_LEN], NON_ESP_MARKER);
        let ike = &AUTH_NATT[NON_ESP_MARKER_LEN..];
        let h = IkeHeader::new_checked(ike, AUTH_NATT.len() - NON_ESP_MARKER_LEN).unwrap();
        assert_eq!(h.initiator_spi(), 0x5f2a_8c3e_91b0_4d17);
        assert_eq!(h.responder_spi(), 0x8d3b_6e0a_2c4f_1795);
        assert_eq!(h.exchange_type(), exchange::IKE_AUTH);
        assert_eq!(h.message_id(), 1);
        assert_eq!(h.next_payload(), payload_type::SK);
        // SK's next-payload byte says IDi (35), but that payload is encrypted: one payload only.
        assert_eq!(ike[28], payload_type::IDI);
        assert_eq!(chain(ike, ike.len()), vec![Ok((payload_type::SK, 128))]);
    }

    #[test]
    fn ikev1_main_mode_header() {
        // IKEv1 Main Mode first message header: version 0x10, exchange 2, next payload SA (1).
        let mut m = [0u8; 28 + 8];
        m[..8].copy_from_slice(&[0xc0, 0xff, 0xee, 0x00, 0x11, 0x22, 0x33, 0x44]);
        m[16] = 1;
        m[17] = 0x10;
        m[18] = exchange::V1_IDENTITY_PROTECTION;
        m[27] = 36;
        // A generic payload with next 0, length 8.
        m[28..32].copy_from_slice(&[0, 0, 0, 8]);
        let h = IkeHeader::new_checked(&m[..], 36).unwrap();
        assert_eq!(h.major_version(), 1);
        assert_eq!(h.initiator_spi(), 0xc0ff_ee00_1122_3344);
        assert_eq!(chain(&m, 36), vec![Ok((1, 4))]);
    }

    #[test]
    fn truncated_at_every_length() {
        for len in 0..HEADER_LEN {
            assert_eq!(
                IkeHeader::new_checked(&SA_INIT[..len], SA_INIT.len()),
                Err(Error::Truncated),
                "len {len}"
            );
        }
        // A first fragment: the header validates against the real datagram length and the chain
        // reports Truncated where the bytes run out.
        for len in HEADER_LEN..SA_INIT.len() {
            let h = IkeHeader::new_checked(&SA_INIT[..len], SA_INIT.len()).unwrap();
            let items: Vec<_> = h.payloads().collect();
            let last = items.last().unwrap();
            assert_eq!(*last, Err(Error::Truncated), "len {len}");
            assert!(items[..items.len() - 1].iter().all(|p| p.is_ok()));
        }
    }

    #[test]
    fn bad_versions_and_exchange_types() {
        for version in [0x00u8, 0x30, 0xf0, 0x02] {
            let mut m = SA_INIT;
            m[17] = version;
            assert_eq!(
                IkeHeader::new_checked(&m[..], m.len()),
                Err(Error::BadHeader),
                "version {version:#x}"
            );
        }
        // Minor versions do not matter.
        let mut m = SA_INIT;
        m[17] = 0x21;
        assert_eq!(
            IkeHeader::new_checked(&m[..], m.len())
                .unwrap()
                .minor_version(),
            1
        );
        for ex in 0..=255u8 {
            let mut m = SA_INIT;
            m[18] = ex;
            let v2_ok = matches!(ex, 34..=38 | 43 | 44);
            assert_eq!(
                IkeHeader::new_checked(&m[..], m.len()).is_ok(),
                v2_ok,
                "v2 {ex}"
            );
            m[17] = 0x10;
            let v1_ok = matches!(ex, 1..=5 | 32 | 33);
            assert_eq!(
                IkeHeader::new_checked(&m[..], m.len()).is_ok(),
                v1_ok,
                "v1 {ex}"
            );
        }
    }

    #[test]
    fn length_mismatch() {
        for dl in [0, 27, 28, 223, 225, 1500, usize::MAX] {
            assert_eq!(
                IkeHeader::new_checked(&SA_INIT[..], dl),
                Err(Error::BadLength),
                "datagram_len {dl}"
            );
        }
        // A length field below the header size is bad even when it matches.
        let mut m = [0u8; 28];
        m[17] = 0x20;
        m[18] = exchange::INFORMATIONAL;
        m[27] = 20;
        assert_eq!(IkeHeader::new_checked(&m[..], 20), Err(Error::BadLength));
        m[27] = 28;
        let h = IkeHeader::new_checked(&m[..], 28).unwrap();
        // next_payload 0: empty chain.
        assert_eq!(h.payloads().count(), 0);
    }

    #[test]
    fn bad_payload_lengths() {
        // Payload length below 4.
        let mut m = SA_INIT;
        m[28 + 3] = 3;
        m[28 + 2] = 0;
        assert_eq!(chain(&m, m.len()), vec![Err(Error::BadLength)]);
        // The last payload overruns the declared message length: the chain is malformed.
        let mut m = SA_INIT;
        m[216 + 3] = 9;
        let items = chain(&m, m.len());
        assert_eq!(items.len(), 7);
        assert_eq!(items[6], Err(Error::BadLength));
        // Bytes after the message (padding the caller did not trim) are not payloads.
        let mut long = SA_INIT.to_vec();
        long.extend_from_slice(&[0x29, 0, 0, 8, 0, 0, 0x40, 0x07]);
        assert_eq!(chain(&long, SA_INIT.len()).len(), 7);
        // The last payload claims a successor that is not there.
        let mut m = SA_INIT;
        m[216] = payload_type::VENDOR_ID;
        let items = chain(&m, m.len());
        assert_eq!(items.len(), 8);
        assert_eq!(items[7], Err(Error::BadLength));
    }

    #[test]
    fn payload_chain_is_bounded() {
        // 100 empty Vendor ID payloads in a row: only MAX_PAYLOADS are yielded.
        let n = 100;
        let len = HEADER_LEN + 4 * n;
        let mut m = vec![0u8; len];
        m[16] = payload_type::VENDOR_ID;
        m[17] = 0x20;
        m[18] = exchange::INFORMATIONAL;
        m[24..28].copy_from_slice(&(len as u32).to_be_bytes());
        for i in 0..n {
            let at = HEADER_LEN + 4 * i;
            m[at] = if i + 1 < n {
                payload_type::VENDOR_ID
            } else {
                0
            };
            m[at + 1] = 0x80;
            m[at + 3] = 4;
        }
        let h = IkeHeader::new_checked(&m[..], len).unwrap();
        assert_eq!(h.payloads().count(), MAX_PAYLOADS);
        assert!(h.payloads().all(|p| p.unwrap().critical));
    }

    #[test]
    fn notify_view() {
        // REDIRECT about an ESP SA with a 4-byte SPI and data.
        let body = [
            3, 4, 0x40, 0x17, 0xde, 0xad, 0xbe, 0xef, 1, 4, 198, 19, 0, 12,
        ];
        let n = Notify::new_checked(&body).unwrap();
        assert_eq!(n.protocol_id(), 3);
        assert_eq!(n.spi_size(), 4);
        assert_eq!(n.notify_type(), notify_type::REDIRECT);
        assert_eq!(n.spi(), [0xde, 0xad, 0xbe, 0xef]);
        assert_eq!(n.data(), [1, 4, 198, 19, 0, 12]);
        for len in 0..8 {
            assert_eq!(Notify::new_checked(&body[..len]), Err(Error::Truncated));
        }
        let err = Notify::new_checked(&[0, 0, 0, 14]).unwrap();
        assert_eq!(err.notify_type(), notify_type::NO_PROPOSAL_CHOSEN);
        assert!(err.is_error());
        assert!(err.data().is_empty());
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(
            mut data in proptest::collection::vec(any::<u8>(), 0..300),
            dl in 0usize..400,
            make_valid in any::<bool>(),
        ) {
            // Half the cases get a valid header, so the payload walk sees arbitrary chains.
            if make_valid && data.len() >= HEADER_LEN && dl >= HEADER_LEN {
                data[17] = 0x20;
                data[18] = exchange::INFORMATIONAL;
                data[24..28].copy_from_slice(&(dl as u32).to_be_bytes());
                prop_assert!(IkeHeader::new_checked(&data[..], dl).is_ok());
            }
            if let Ok(h) = IkeHeader::new_checked(&data[..], dl) {
                prop_assert!(h.major_version() == 1 || h.major_version() == 2);
                prop_assert_eq!(h.length() as usize, dl);
                let _ = (h.initiator_spi(), h.responder_spi(), h.flags(), h.message_id());
                let mut n = 0;
                for p in h.payloads() {
                    n += 1;
                    if let Ok(p) = p {
                        if let Ok(notify) = Notify::new_checked(p.body) {
                            let _ = (notify.spi(), notify.data(), notify.notify_type());
                        }
                    }
                }
                prop_assert!(n <= MAX_PAYLOADS);
                let _ = h.find_notify(notify_type::REDIRECT);
            }
        }

        #[test]
        fn header_fields_round_trip(
            ispi in any::<u64>(), rspi in any::<u64>(), mid in any::<u32>(),
            flags in any::<u8>(), ex in prop::sample::select(vec![34u8, 35, 36, 37, 38, 43, 44]),
            body in proptest::collection::vec(any::<u8>(), 0..64),
        ) {
            let len = HEADER_LEN + body.len();
            let mut m = Vec::with_capacity(len);
            m.extend_from_slice(&ispi.to_be_bytes());
            m.extend_from_slice(&rspi.to_be_bytes());
            m.extend_from_slice(&[0, 0x20, ex, flags]);
            m.extend_from_slice(&mid.to_be_bytes());
            m.extend_from_slice(&(len as u32).to_be_bytes());
            m.extend_from_slice(&body);
            let h = IkeHeader::new_checked(&m[..], len).unwrap();
            prop_assert_eq!(h.initiator_spi(), ispi);
            prop_assert_eq!(h.responder_spi(), rspi);
            prop_assert_eq!(h.message_id(), mid);
            prop_assert_eq!(h.flags(), flags);
            prop_assert_eq!(h.exchange_type(), ex);
            prop_assert_eq!(h.payload(), &body[..]);
        }
    }
}

#[cfg(test)]
mod repr_tests {
    use super::tests::SA_INIT;
    use super::*;
    use proptest::prelude::*;

    /// The strongSwan request's chain re-emitted from its Reprs is the same bytes.
    #[test]
    fn strongswan_request_re_emits_identically() {
        let h = IkeHeader::new_checked(&SA_INIT[..], SA_INIT.len()).unwrap();
        let repr = IkeHeaderRepr::parse(&h).unwrap();
        let mut out = vec![0u8; SA_INIT.len()];
        repr.emit(&mut IkeHeader::new_unchecked(&mut out[..]));
        let mut at = HEADER_LEN;
        for p in h.payloads() {
            let p = p.unwrap();
            let ph = PayloadHeader::new_checked(&SA_INIT[at..]).unwrap();
            let ph_repr = PayloadHeaderRepr::parse(&ph).unwrap();
            assert_eq!(ph.body(), p.body);
            let mut view = PayloadHeader::new_unchecked(&mut out[at..]);
            ph_repr.emit(&mut view);
            let body = &mut view.body_mut()[..p.body.len()];
            match p.payload_type {
                payload_type::SA => {
                    let sa = SaRepr::parse(p.body).unwrap();
                    assert_eq!(sa.buffer_len(), p.body.len());
                    sa.emit(body);
                }
                payload_type::NOTIFY => {
                    let n = Notify::new_checked(p.body).unwrap();
                    let n_repr = NotifyRepr::parse(&n).unwrap();
                    n_repr.emit(body);
                    body[n_repr.buffer_len()..].copy_from_slice(n.data());
                }
                _ => body.copy_from_slice(p.body),
            }
            at += usize::from(ph_repr.length);
        }
        assert_eq!(at, SA_INIT.len());
        assert_eq!(out, SA_INIT);
    }

    #[test]
    fn sa_known_bytes() {
        let sa = SaRepr {
            proposals: vec![ProposalRepr {
                number: 1,
                protocol_id: sa::PROTO_IKE,
                transforms: vec![
                    TransformRepr {
                        transform_type: 1,
                        transform_id: 20,
                        key_length: Some(256),
                    },
                    TransformRepr {
                        transform_type: 4,
                        transform_id: 19,
                        key_length: None,
                    },
                ],
            }],
        };
        let mut body = vec![0xee; sa.buffer_len()];
        sa.emit(&mut body);
        #[rustfmt::skip]
        let expected = [
            0, 0, 0, 28, 1, 1, 0, 2,
            3, 0, 0, 12, 1, 0, 0, 20, 0x80, 0x0e, 1, 0,
            0, 0, 0, 8, 4, 0, 0, 19,
        ];
        assert_eq!(body, expected);
        assert_eq!(SaRepr::parse(&body).unwrap(), sa);
    }

    fn transform() -> impl Strategy<Value = TransformRepr> {
        (
            any::<u8>(),
            any::<u16>(),
            proptest::option::of(any::<u16>()),
        )
            .prop_map(|(t, id, k)| TransformRepr {
                transform_type: t,
                transform_id: id,
                key_length: k,
            })
    }

    fn proposal() -> impl Strategy<Value = ProposalRepr> {
        (
            any::<u8>(),
            any::<u8>(),
            proptest::collection::vec(transform(), 0..6),
        )
            .prop_map(|(number, protocol_id, transforms)| ProposalRepr {
                number,
                protocol_id,
                transforms,
            })
    }

    proptest! {
        #[test]
        fn sa_round_trip(proposals in proptest::collection::vec(proposal(), 1..4)) {
            let sa = SaRepr { proposals };
            let mut body = vec![0u8; sa.buffer_len()];
            sa.emit(&mut body);
            prop_assert_eq!(SaRepr::parse(&body).unwrap(), sa);
        }

        #[test]
        fn sa_parse_never_panics(body in proptest::collection::vec(any::<u8>(), 0..80)) {
            let _ = SaRepr::parse(&body);
        }

        #[test]
        fn header_round_trip(
            spi_i in any::<u64>(), spi_r in any::<u64>(), next in any::<u8>(),
            exchange_type in 34u8..38, flags in any::<u8>(), message_id in any::<u32>(),
        ) {
            let repr = IkeHeaderRepr {
                initiator_spi: spi_i,
                responder_spi: spi_r,
                next_payload: next,
                exchange_type,
                flags,
                message_id,
                length: HEADER_LEN as u32,
            };
            let mut buf = [0xee; HEADER_LEN];
            repr.emit(&mut IkeHeader::new_unchecked(&mut buf[..]));
            let h = IkeHeader::new_checked(&buf[..], HEADER_LEN).unwrap();
            prop_assert_eq!(IkeHeaderRepr::parse(&h).unwrap(), repr);
        }

        #[test]
        fn notify_round_trip(protocol_id in any::<u8>(), notify_type in any::<u16>()) {
            let repr = NotifyRepr { protocol_id, notify_type };
            let mut body = [0xee; Notify::FIXED_LEN];
            repr.emit(&mut body);
            prop_assert_eq!(NotifyRepr::parse(&Notify::new_checked(&body).unwrap()).unwrap(), repr);
        }
    }
}
