//! UDP datagrams (RFC 768), over IPv4 or IPv6.
//!
//! ```text
//!  0                16               31
//! +-----------------+-----------------+
//! |   source port   |    dest port    |
//! +-----------------+-----------------+
//! |     length      |    checksum     |
//! +-----------------+-----------------+
//! ```

use std::net::{Ipv4Addr, Ipv6Addr};

use super::checksum;
use super::{be16, ip_proto, set_be16, Error, Result};

/// Length of the UDP header.
pub const UDP_HEADER_LEN: usize = 8;

/// Offsets of the header's fields, for code that rewrites them in place where a view would
/// cost (the NAT fast path).
pub mod field {
    pub const SRC_PORT: usize = 0;
    pub const DST_PORT: usize = 2;
    pub const LENGTH: usize = 4;
    pub const CHECKSUM: usize = 6;
}

/// A read/write view of a UDP datagram.
///
/// Made with [`new_checked`](Self::new_checked) the buffer holds the whole datagram (and maybe
/// padding after it). Made with [`new_partial`](Self::new_partial) it may hold only the first
/// fragment; [`payload`](Self::payload) then stops at the end of the buffer, and the checksum
/// functions, which cover `length` bytes, cannot be meaningful.
#[derive(Debug, Clone)]
pub struct UdpPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> UdpPacket<T> {
    /// Wraps `buffer` without validation. Accessors may panic unless `buffer` passed
    /// [`new_checked`](Self::new_checked) or [`new_partial`](Self::new_partial) before.
    pub const fn new_unchecked(buffer: T) -> Self {
        UdpPacket { buffer }
    }

    /// Wraps a whole datagram: `Truncated` if the buffer is shorter than 8 bytes or than the
    /// length field; `BadLength` if the length field is below 8.
    pub fn new_checked(buffer: T) -> Result<Self> {
        let len = Self::check_header(buffer.as_ref())?;
        if len > buffer.as_ref().len() {
            return Err(Error::Truncated);
        }
        Ok(UdpPacket { buffer })
    }

    /// Wraps the first fragment of a fragmented datagram: only the header must be present
    /// (`Truncated` otherwise) and the length field at least 8 (`BadLength` otherwise).
    pub fn new_partial(buffer: T) -> Result<Self> {
        Self::check_header(buffer.as_ref())?;
        Ok(UdpPacket { buffer })
    }

    /// Validates the header and returns the length field.
    fn check_header(b: &[u8]) -> Result<usize> {
        if b.len() < UDP_HEADER_LEN {
            return Err(Error::Truncated);
        }
        let len = usize::from(be16(b, field::LENGTH));
        if len < UDP_HEADER_LEN {
            return Err(Error::BadLength);
        }
        Ok(len)
    }

    /// Returns the underlying buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// Source port.
    pub fn src_port(&self) -> u16 {
        be16(self.buffer.as_ref(), field::SRC_PORT)
    }

    /// Destination port.
    pub fn dst_port(&self) -> u16 {
        be16(self.buffer.as_ref(), field::DST_PORT)
    }

    /// Length field: header + payload of the whole datagram.
    pub fn len(&self) -> u16 {
        be16(self.buffer.as_ref(), field::LENGTH)
    }

    /// Whether the length field says there is no payload.
    pub fn is_empty(&self) -> bool {
        usize::from(self.len()) <= UDP_HEADER_LEN
    }

    /// Whether the buffer holds the whole datagram (always true after `new_checked`).
    pub fn is_complete(&self) -> bool {
        usize::from(self.len()) <= self.buffer.as_ref().len()
    }

    /// Checksum field (0: no checksum, allowed over IPv4 only).
    pub fn checksum(&self) -> u16 {
        be16(self.buffer.as_ref(), field::CHECKSUM)
    }

    /// End of the datagram's bytes in the buffer: the length field, clamped to the buffer.
    fn end(&self) -> usize {
        let b = self.buffer.as_ref();
        usize::from(self.len()).clamp(UDP_HEADER_LEN, b.len().max(UDP_HEADER_LEN))
    }

    /// The payload: bytes 8..length (..end of buffer for a partial datagram).
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[UDP_HEADER_LEN..self.end()]
    }

    /// Sum of the datagram's bytes (header and payload, as far as the buffer holds them).
    fn data_sum(&self, acc: u32) -> u32 {
        checksum::sum(acc, &self.buffer.as_ref()[..self.end()])
    }

    /// Whether the checksum is valid over IPv4; a zero checksum means "none" and passes.
    pub fn verify_checksum_v4(&self, src: Ipv4Addr, dst: Ipv4Addr) -> bool {
        if self.checksum() == 0 {
            return true;
        }
        let acc = checksum::pseudo_header_v4(src, dst, ip_proto::UDP, self.len());
        checksum::fold(self.data_sum(acc)) == 0xffff
    }

    /// Whether the checksum is valid over IPv6; a zero checksum is invalid there (RFC 8200 §8.1).
    pub fn verify_checksum_v6(&self, src: &Ipv6Addr, dst: &Ipv6Addr) -> bool {
        if self.checksum() == 0 {
            return false;
        }
        let acc = checksum::pseudo_header_v6(src, dst, ip_proto::UDP, u32::from(self.len()));
        checksum::fold(self.data_sum(acc)) == 0xffff
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> UdpPacket<T> {
    /// Sets the source port (checksum not updated).
    pub fn set_src_port(&mut self, port: u16) {
        set_be16(self.buffer.as_mut(), field::SRC_PORT, port);
    }

    /// Sets the destination port (checksum not updated).
    pub fn set_dst_port(&mut self, port: u16) {
        set_be16(self.buffer.as_mut(), field::DST_PORT, port);
    }

    /// Sets the length field (checksum not updated). [`payload`](UdpPacket::payload) is clamped
    /// to the buffer if the value exceeds it.
    pub fn set_len(&mut self, len: u16) {
        set_be16(self.buffer.as_mut(), field::LENGTH, len);
    }

    /// Sets the checksum field.
    pub fn set_checksum(&mut self, value: u16) {
        set_be16(self.buffer.as_mut(), field::CHECKSUM, value);
    }

    /// Stores the checksum over `pseudo` and the datagram; a computed 0 is sent as 0xffff,
    /// since 0 means "no checksum".
    fn store_checksum(&mut self, pseudo: u32) {
        self.set_checksum(0);
        let c = !checksum::fold(self.data_sum(pseudo));
        self.set_checksum(if c == 0 { 0xffff } else { c });
    }

    /// Computes and stores the checksum over the IPv4 pseudo-header and `length` bytes.
    pub fn fill_checksum_v4(&mut self, src: Ipv4Addr, dst: Ipv4Addr) {
        let pseudo = checksum::pseudo_header_v4(src, dst, ip_proto::UDP, self.len());
        self.store_checksum(pseudo);
    }

    /// Computes and stores the checksum over the IPv6 pseudo-header and `length` bytes.
    pub fn fill_checksum_v6(&mut self, src: &Ipv6Addr, dst: &Ipv6Addr) {
        let pseudo = checksum::pseudo_header_v6(src, dst, ip_proto::UDP, u32::from(self.len()));
        self.store_checksum(pseudo);
    }

    /// The payload, writable.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let end = self.end();
        &mut self.buffer.as_mut()[UDP_HEADER_LEN..end]
    }
}

/// The high-level form of a UDP header (smoltcp's `UdpRepr`): the ports. The length and the
/// checksum follow from the datagram `emit` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct UdpRepr {
    pub src_port: u16,
    pub dst_port: u16,
}

impl UdpRepr {
    /// Reads the ports of a checked (or partial) datagram.
    pub fn parse<T: AsRef<[u8]>>(packet: &UdpPacket<T>) -> Result<UdpRepr> {
        Ok(UdpRepr {
            src_port: packet.src_port(),
            dst_port: packet.dst_port(),
        })
    }

    /// The header's length: [`UDP_HEADER_LEN`].
    pub const fn buffer_len(&self) -> usize {
        UDP_HEADER_LEN
    }

    /// Writes a whole datagram over the view's buffer, which must be exactly header + payload
    /// (at most 65535 bytes): the ports, the length, the payload by `emit_payload`, then the
    /// checksum over `pseudo` (a computed 0 is sent as 0xffff), or 0 ("none", IPv4 only) when
    /// `pseudo` is `None`.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(
        &self,
        packet: &mut UdpPacket<T>,
        pseudo: Option<&checksum::PseudoHeader>,
        emit_payload: impl FnOnce(&mut [u8]),
    ) {
        let len = u16::try_from(packet.buffer.as_ref().len()).unwrap_or(u16::MAX);
        packet.set_src_port(self.src_port);
        packet.set_dst_port(self.dst_port);
        packet.set_len(len);
        packet.set_checksum(0);
        emit_payload(packet.payload_mut());
        if let Some(pseudo) = pseudo {
            packet.store_checksum(pseudo.sum(ip_proto::UDP, usize::from(len)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const CLIENT: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 10);
    const VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 100);

    fn client6() -> Ipv6Addr {
        "2001:2:0:3::10".parse().unwrap()
    }

    fn vip6() -> Ipv6Addr {
        "2001:2:0:1::100".parse().unwrap()
    }

    /// NAT-T (4500 -> 4500) with 4 payload bytes, checksum for client -> VIP over IPv4,
    /// followed by 2 bytes of padding.
    const NATT_V4: [u8; 14] = [
        0x11, 0x94, 0x11, 0x94, 0x00, 0x0c, 0xb1, 0x7d, 0xde, 0xad, 0xbe, 0xef, 0x00, 0x00,
    ];

    /// The same datagram with its IPv6 checksum (client6 -> vip6).
    const NATT_V6: [u8; 12] = [
        0x11, 0x94, 0x11, 0x94, 0x00, 0x0c, 0xfd, 0xf6, 0xde, 0xad, 0xbe, 0xef,
    ];

    #[test]
    fn parses_datagram() {
        let p = UdpPacket::new_checked(&NATT_V4[..]).unwrap();
        assert_eq!(p.src_port(), 4500);
        assert_eq!(p.dst_port(), 4500);
        assert_eq!(p.len(), 12);
        assert!(!p.is_empty());
        assert!(p.is_complete());
        assert_eq!(p.checksum(), 0xb17d);
        assert_eq!(p.payload(), &[0xde, 0xad, 0xbe, 0xef]);
        assert!(p.verify_checksum_v4(CLIENT, VIP));
        assert!(!p.verify_checksum_v4(CLIENT, Ipv4Addr::new(198, 18, 0, 101)));

        let p = UdpPacket::new_checked(&NATT_V6[..]).unwrap();
        assert!(p.verify_checksum_v6(&client6(), &vip6()));
        assert!(!p.verify_checksum_v6(&client6(), &client6()));
    }

    #[test]
    fn fill_matches_fixtures() {
        let mut b = NATT_V4;
        let mut p = UdpPacket::new_checked(&mut b[..]).unwrap();
        p.set_checksum(0x1234);
        p.fill_checksum_v4(CLIENT, VIP);
        assert_eq!(p.checksum(), 0xb17d);
        let mut b = NATT_V6;
        let mut p = UdpPacket::new_checked(&mut b[..]).unwrap();
        p.fill_checksum_v6(&client6(), &vip6());
        assert_eq!(b, NATT_V6);
    }

    #[test]
    fn zero_checksum_semantics() {
        let mut b = NATT_V4;
        b[6..8].copy_from_slice(&[0, 0]);
        let p = UdpPacket::new_checked(&b[..]).unwrap();
        assert!(p.verify_checksum_v4(CLIENT, VIP));
        assert!(p.verify_checksum_v4(CLIENT, CLIENT));
        assert!(!p.verify_checksum_v6(&client6(), &vip6()));
    }

    #[test]
    fn computed_zero_is_sent_as_ffff() {
        // Choose payload bytes so the sum over pseudo-header + datagram is 0xffff: then the
        // complement is 0 and must be transmitted as 0xffff.
        let mut b = [0x11, 0x94, 0x11, 0x94, 0x00, 0x0a, 0x00, 0x00, 0x00, 0x00];
        let mut p = UdpPacket::new_checked(&mut b[..]).unwrap();
        p.fill_checksum_v4(CLIENT, VIP);
        let c = p.checksum();
        // Put the would-be checksum into the payload word instead: the total becomes 0xffff.
        let mut b2 = b;
        b2[6..8].copy_from_slice(&[0, 0]);
        b2[8..10].copy_from_slice(&c.to_be_bytes());
        let mut p = UdpPacket::new_checked(&mut b2[..]).unwrap();
        p.fill_checksum_v4(CLIENT, VIP);
        assert_eq!(p.checksum(), 0xffff);
        assert!(p.verify_checksum_v4(CLIENT, VIP));
        p.fill_checksum_v6(&client6(), &vip6());
        assert!(p.verify_checksum_v6(&client6(), &vip6()));
    }

    #[test]
    fn padding_excluded() {
        let p = UdpPacket::new_checked(&NATT_V4[..]).unwrap();
        assert_eq!(p.payload().len(), 4);
        let mut b = NATT_V4;
        let mut p = UdpPacket::new_checked(&mut b[..]).unwrap();
        assert_eq!(p.payload_mut().len(), 4);
        // Checksum ignores the padding too: changing it keeps the checksum valid.
        b[12] = 0xff;
        assert!(UdpPacket::new_checked(&b[..])
            .unwrap()
            .verify_checksum_v4(CLIENT, VIP));
    }

    #[test]
    fn truncated_and_bad_lengths() {
        for len in 0..12 {
            assert_eq!(
                UdpPacket::new_checked(&NATT_V4[..len]).unwrap_err(),
                Error::Truncated,
                "len {len}"
            );
        }
        for len in 0..8 {
            assert_eq!(
                UdpPacket::new_partial(&NATT_V4[..len]).unwrap_err(),
                Error::Truncated
            );
        }
        for l in 0u16..8 {
            let mut b = NATT_V4;
            b[4..6].copy_from_slice(&l.to_be_bytes());
            assert_eq!(
                UdpPacket::new_checked(&b[..]).unwrap_err(),
                Error::BadLength
            );
            assert_eq!(
                UdpPacket::new_partial(&b[..]).unwrap_err(),
                Error::BadLength
            );
        }
        let mut b = NATT_V4;
        b[4..6].copy_from_slice(&8u16.to_be_bytes());
        let p = UdpPacket::new_checked(&b[..]).unwrap();
        assert!(p.is_empty());
        assert!(p.payload().is_empty());
    }

    #[test]
    fn partial_first_fragment() {
        // A 1480-byte datagram of which the first fragment carried 12 bytes.
        let mut b = NATT_V4;
        b[4..6].copy_from_slice(&1480u16.to_be_bytes());
        assert_eq!(
            UdpPacket::new_checked(&b[..12]).unwrap_err(),
            Error::Truncated
        );
        let mut p = UdpPacket::new_partial(&mut b[..12]).unwrap();
        assert!(!p.is_complete());
        assert_eq!(p.len(), 1480);
        assert_eq!(p.payload(), &[0xde, 0xad, 0xbe, 0xef]);
        assert_eq!(p.payload_mut().len(), 4);
        p.set_dst_port(4501);
        assert_eq!(p.dst_port(), 4501);
        // Header only.
        let p = UdpPacket::new_partial(&b[..8]).unwrap();
        assert!(p.payload().is_empty());
    }

    #[test]
    fn ports_and_incremental_update() {
        let mut b = NATT_V4;
        let mut p = UdpPacket::new_checked(&mut b[..]).unwrap();
        p.set_src_port(40000);
        assert!(!p.verify_checksum_v4(CLIENT, VIP));
        p.fill_checksum_v4(CLIENT, VIP);
        assert!(p.verify_checksum_v4(CLIENT, VIP));
        // NAT of the destination address, fixed up incrementally.
        let gw1 = Ipv4Addr::new(198, 19, 0, 11);
        let c = checksum::update_bytes(p.checksum(), &VIP.octets(), &gw1.octets());
        p.set_checksum(c);
        assert!(p.verify_checksum_v4(CLIENT, gw1));
        assert_eq!(p.src_port(), 40000);
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..40)) {
            let (a, b) = (Ipv6Addr::LOCALHOST, Ipv6Addr::UNSPECIFIED);
            if let Ok(p) = UdpPacket::new_checked(&data[..]) {
                let _ = (p.src_port(), p.dst_port(), p.checksum(), p.is_empty());
                let _ = (p.verify_checksum_v4(CLIENT, VIP), p.verify_checksum_v6(&a, &b));
                prop_assert_eq!(p.payload().len() + 8, usize::from(p.len()));
            }
            if let Ok(p) = UdpPacket::new_partial(&data[..]) {
                let _ = (p.src_port(), p.dst_port(), p.checksum(), p.is_complete());
                let _ = (p.verify_checksum_v4(CLIENT, VIP), p.verify_checksum_v6(&a, &b));
                prop_assert!(p.payload().len() + 8 <= data.len());
            }
        }

        #[test]
        fn fill_then_verify(
            payload in proptest::collection::vec(any::<u8>(), 0..64),
            padding in 0usize..8,
            src in any::<[u8; 4]>(),
            dst in any::<[u8; 4]>(),
            src6 in any::<[u8; 16]>(),
            dst6 in any::<[u8; 16]>(),
        ) {
            let len = 8 + payload.len();
            let mut b = vec![0u8; len + padding];
            b[4..6].copy_from_slice(&(len as u16).to_be_bytes());
            b[8..len].copy_from_slice(&payload);
            let mut p = UdpPacket::new_checked(&mut b[..]).unwrap();
            p.fill_checksum_v4(Ipv4Addr::from(src), Ipv4Addr::from(dst));
            prop_assert_ne!(p.checksum(), 0);
            prop_assert!(p.verify_checksum_v4(Ipv4Addr::from(src), Ipv4Addr::from(dst)));
            let (s6, d6) = (Ipv6Addr::from(src6), Ipv6Addr::from(dst6));
            p.fill_checksum_v6(&s6, &d6);
            prop_assert_ne!(p.checksum(), 0);
            prop_assert!(p.verify_checksum_v6(&s6, &d6));
        }

        #[test]
        fn setters_roundtrip(sp in any::<u16>(), dp in any::<u16>(), ck in any::<u16>()) {
            let mut b = NATT_V4;
            let mut p = UdpPacket::new_checked(&mut b[..]).unwrap();
            p.set_src_port(sp);
            p.set_dst_port(dp);
            p.set_checksum(ck);
            prop_assert_eq!((p.src_port(), p.dst_port(), p.checksum()), (sp, dp, ck));
            prop_assert_eq!(p.payload(), &[0xde, 0xad, 0xbe, 0xef]);
        }
    }
}

#[cfg(test)]
mod repr_tests {
    use super::*;
    use crate::wire::checksum::PseudoHeader;
    use proptest::prelude::*;

    #[test]
    fn emits_known_bytes() {
        let repr = UdpRepr {
            src_port: 500,
            dst_port: 500,
        };
        let pseudo = PseudoHeader::V4 {
            src: Ipv4Addr::new(198, 18, 1, 10),
            dst: Ipv4Addr::new(198, 18, 0, 100),
        };
        let mut buf = [0xee; 12];
        repr.emit(
            &mut UdpPacket::new_unchecked(&mut buf[..]),
            Some(&pseudo),
            |p| p.copy_from_slice(b"ping"),
        );
        // Checksum by hand: pseudo-header words + header words + payload words.
        let words: [u32; 14] = [
            0xc612, 0x010a, 0xc612, 0x0064, 17, 12, 500, 500, 12, 0, 0x7069, 0x6e67, 0, 0,
        ];
        let mut s: u32 = words.iter().sum();
        while s > 0xffff {
            s = (s & 0xffff) + (s >> 16);
        }
        let c = !(s as u16);
        let mut expected = vec![0x01, 0xf4, 0x01, 0xf4, 0, 12];
        expected.extend_from_slice(&c.to_be_bytes());
        expected.extend_from_slice(b"ping");
        assert_eq!(buf[..], expected[..]);
        let p = UdpPacket::new_checked(&buf[..]).unwrap();
        assert!(p.verify_checksum_v4(
            Ipv4Addr::new(198, 18, 1, 10),
            Ipv4Addr::new(198, 18, 0, 100)
        ));

        let mut none = [0xee; 8];
        repr.emit(&mut UdpPacket::new_unchecked(&mut none[..]), None, |_| {});
        assert_eq!(none, [0x01, 0xf4, 0x01, 0xf4, 0, 8, 0, 0]);
    }

    proptest! {
        #[test]
        fn round_trip_and_checksum(
            src_port in any::<u16>(), dst_port in any::<u16>(),
            payload in proptest::collection::vec(any::<u8>(), 0..64),
            src in any::<[u8; 16]>(), dst in any::<[u8; 16]>(),
        ) {
            let repr = UdpRepr { src_port, dst_port };
            let (src, dst) = (Ipv6Addr::from(src), Ipv6Addr::from(dst));
            let mut buf = vec![0u8; repr.buffer_len() + payload.len()];
            repr.emit(
                &mut UdpPacket::new_unchecked(&mut buf[..]),
                Some(&PseudoHeader::V6 { src, dst }),
                |p| p.copy_from_slice(&payload),
            );
            let p = UdpPacket::new_checked(&buf[..]).unwrap();
            prop_assert_eq!(UdpRepr::parse(&p).unwrap(), repr);
            prop_assert_eq!(p.payload(), &payload[..]);
            prop_assert!(p.verify_checksum_v6(&src, &dst));
        }
    }
}
