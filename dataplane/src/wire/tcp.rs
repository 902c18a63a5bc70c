//! TCP segments (RFC 9293), over IPv4 or IPv6.
//!
//! ```text
//!  0                16               31
//! +-----------------+-----------------+
//! |   source port   |    dest port    |
//! +-----------------+-----------------+
//! |          sequence number          |
//! +-----------------------------------+
//! |       acknowledgment number       |
//! +----+-----+------+-----------------+
//! |doff|rsvd|flags  |     window      |
//! +----+-----+------+-----------------+
//! |    checksum     | urgent pointer  |
//! +-----------------+-----------------+
//! |     options (doff > 5) ...        |
//! ```

use std::net::{Ipv4Addr, Ipv6Addr};

use super::checksum;
use super::{be16, be32, ip_proto, set_be16, set_be32, Error, Result};

/// Length of a TCP header without options.
pub const TCP_HEADER_LEN: usize = 20;

/// FIN flag.
pub const FIN: u16 = 0x001;
/// SYN flag.
pub const SYN: u16 = 0x002;
/// RST flag.
pub const RST: u16 = 0x004;
/// PSH flag.
pub const PSH: u16 = 0x008;
/// ACK flag.
pub const ACK: u16 = 0x010;
/// URG flag.
pub const URG: u16 = 0x020;
/// ECN-Echo flag.
pub const ECE: u16 = 0x040;
/// Congestion Window Reduced flag.
pub const CWR: u16 = 0x080;
/// Historic ECN nonce-sum flag (RFC 3540, obsoleted); reported by [`TcpPacket::flags`].
pub const NS: u16 = 0x100;

/// Offsets of the header's fields, for code that rewrites them in place where a view would
/// cost (the NAT fast path).
pub mod field {
    pub const SRC_PORT: usize = 0;
    pub const DST_PORT: usize = 2;
    pub const SEQ: usize = 4;
    pub const ACK: usize = 8;
    /// Data offset (high nibble), reserved bits and NS (low bit); flags in the next byte.
    pub const DOFF_FLAGS: usize = 12;
    pub const WINDOW: usize = 14;
    pub const CHECKSUM: usize = 16;
    pub const URGENT: usize = 18;
}

/// A read/write view of a TCP segment. The buffer must be exactly the segment (the IP payload):
/// the checksum and [`payload`](Self::payload) cover all of it.
#[derive(Debug, Clone)]
pub struct TcpPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> TcpPacket<T> {
    /// Wraps `buffer` without validation. Accessors may panic unless `buffer` passed
    /// [`new_checked`](Self::new_checked) before.
    pub const fn new_unchecked(buffer: T) -> Self {
        TcpPacket { buffer }
    }

    /// Wraps `buffer` after validating it: `Truncated` if shorter than 20 bytes or than the data
    /// offset; `BadHeader` for a data offset below 5.
    pub fn new_checked(buffer: T) -> Result<Self> {
        let b = buffer.as_ref();
        if b.len() < TCP_HEADER_LEN {
            return Err(Error::Truncated);
        }
        let hl = usize::from(b[field::DOFF_FLAGS] >> 4) * 4;
        if hl < TCP_HEADER_LEN {
            return Err(Error::BadHeader);
        }
        if hl > b.len() {
            return Err(Error::Truncated);
        }
        Ok(TcpPacket { buffer })
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

    /// Sequence number.
    pub fn seq_number(&self) -> u32 {
        be32(self.buffer.as_ref(), field::SEQ)
    }

    /// Acknowledgment number.
    pub fn ack_number(&self) -> u32 {
        be32(self.buffer.as_ref(), field::ACK)
    }

    /// Header length in bytes (data offset * 4), options included.
    pub fn header_len(&self) -> usize {
        usize::from(self.buffer.as_ref()[field::DOFF_FLAGS] >> 4) * 4
    }

    /// The nine flag bits ([`FIN`] .. [`CWR`], and [`NS`]).
    pub fn flags(&self) -> u16 {
        be16(self.buffer.as_ref(), field::DOFF_FLAGS) & 0x01ff
    }

    /// SYN is set.
    pub fn syn(&self) -> bool {
        self.flags() & SYN != 0
    }

    /// ACK is set.
    pub fn ack(&self) -> bool {
        self.flags() & ACK != 0
    }

    /// FIN is set.
    pub fn fin(&self) -> bool {
        self.flags() & FIN != 0
    }

    /// RST is set.
    pub fn rst(&self) -> bool {
        self.flags() & RST != 0
    }

    /// Receive window (unscaled).
    pub fn window(&self) -> u16 {
        be16(self.buffer.as_ref(), field::WINDOW)
    }

    /// Checksum field.
    pub fn checksum(&self) -> u16 {
        be16(self.buffer.as_ref(), field::CHECKSUM)
    }

    /// Urgent pointer.
    pub fn urgent(&self) -> u16 {
        be16(self.buffer.as_ref(), field::URGENT)
    }

    /// Options (bytes 20..header_len; empty without options).
    pub fn options(&self) -> &[u8] {
        &self.buffer.as_ref()[TCP_HEADER_LEN..self.header_len()]
    }

    /// Everything after the header.
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[self.header_len()..]
    }

    /// Whether the checksum over the IPv4 pseudo-header and the whole buffer is valid.
    pub fn verify_checksum_v4(&self, src: Ipv4Addr, dst: Ipv4Addr) -> bool {
        let b = self.buffer.as_ref();
        let acc = checksum::pseudo_header_v4(src, dst, ip_proto::TCP, v4_len(b.len()));
        checksum::fold(checksum::sum(acc, b)) == 0xffff
    }

    /// Whether the checksum over the IPv6 pseudo-header and the whole buffer is valid.
    pub fn verify_checksum_v6(&self, src: &Ipv6Addr, dst: &Ipv6Addr) -> bool {
        let b = self.buffer.as_ref();
        let acc = checksum::pseudo_header_v6(src, dst, ip_proto::TCP, v6_len(b.len()));
        checksum::fold(checksum::sum(acc, b)) == 0xffff
    }
}

/// Segment length for the IPv4 pseudo-header. An IPv4 payload cannot exceed 65535 bytes;
/// saturating keeps an impossible length from panicking (the checksum then just fails).
fn v4_len(len: usize) -> u16 {
    u16::try_from(len).unwrap_or(u16::MAX)
}

/// Segment length for the IPv6 pseudo-header (saturating, as for IPv4).
fn v6_len(len: usize) -> u32 {
    u32::try_from(len).unwrap_or(u32::MAX)
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> TcpPacket<T> {
    /// Sets the source port (checksum not updated).
    pub fn set_src_port(&mut self, port: u16) {
        set_be16(self.buffer.as_mut(), field::SRC_PORT, port);
    }

    /// Sets the destination port (checksum not updated).
    pub fn set_dst_port(&mut self, port: u16) {
        set_be16(self.buffer.as_mut(), field::DST_PORT, port);
    }

    /// Sets the sequence number (checksum not updated).
    pub fn set_seq_number(&mut self, value: u32) {
        set_be32(self.buffer.as_mut(), field::SEQ, value);
    }

    /// Sets the acknowledgment number (checksum not updated).
    pub fn set_ack_number(&mut self, value: u32) {
        set_be32(self.buffer.as_mut(), field::ACK, value);
    }

    /// Sets the nine flag bits, keeping the data offset and reserved bits (checksum not
    /// updated).
    pub fn set_flags(&mut self, flags: u16) {
        let b = self.buffer.as_mut();
        let kept = be16(b, field::DOFF_FLAGS) & !0x01ff;
        set_be16(b, field::DOFF_FLAGS, kept | (flags & 0x01ff));
    }

    /// Sets the window (checksum not updated).
    pub fn set_window(&mut self, value: u16) {
        set_be16(self.buffer.as_mut(), field::WINDOW, value);
    }

    /// Sets the checksum field.
    pub fn set_checksum(&mut self, value: u16) {
        set_be16(self.buffer.as_mut(), field::CHECKSUM, value);
    }

    /// Computes and stores the checksum over the IPv4 pseudo-header and the whole buffer.
    pub fn fill_checksum_v4(&mut self, src: Ipv4Addr, dst: Ipv4Addr) {
        self.set_checksum(0);
        let b = self.buffer.as_ref();
        let acc = checksum::pseudo_header_v4(src, dst, ip_proto::TCP, v4_len(b.len()));
        let c = !checksum::fold(checksum::sum(acc, b));
        self.set_checksum(c);
    }

    /// Computes and stores the checksum over the IPv6 pseudo-header and the whole buffer.
    pub fn fill_checksum_v6(&mut self, src: &Ipv6Addr, dst: &Ipv6Addr) {
        self.set_checksum(0);
        let b = self.buffer.as_ref();
        let acc = checksum::pseudo_header_v6(src, dst, ip_proto::TCP, v6_len(b.len()));
        let c = !checksum::fold(checksum::sum(acc, b));
        self.set_checksum(c);
    }

    /// Everything after the header, writable.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let at = self.header_len();
        &mut self.buffer.as_mut()[at..]
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

    /// SYN from a client (port 40000) to the VIP's 443, seq 0x01020304, window 64240, options
    /// MSS 1460 and window scale 7; checksum for client -> VIP over IPv4.
    const SYN_V4: [u8; 28] = [
        0x9c, 0x40, 0x01, 0xbb, 0x01, 0x02, 0x03, 0x04, 0x00, 0x00, 0x00, 0x00, //
        0x70, 0x02, 0xfa, 0xf0, 0x59, 0x93, 0x00, 0x00, //
        0x02, 0x04, 0x05, 0xb4, 0x01, 0x03, 0x03, 0x07,
    ];

    /// The same segment's checksum over IPv6 (client6 -> vip6).
    const SYN_V6_CHECKSUM: u16 = 0xa60c;

    #[test]
    fn parses_syn() {
        let p = TcpPacket::new_checked(&SYN_V4[..]).unwrap();
        assert_eq!(p.src_port(), 40000);
        assert_eq!(p.dst_port(), 443);
        assert_eq!(p.seq_number(), 0x0102_0304);
        assert_eq!(p.ack_number(), 0);
        assert_eq!(p.header_len(), 28);
        assert_eq!(p.flags(), SYN);
        assert!(p.syn());
        assert!(!p.ack() && !p.fin() && !p.rst());
        assert_eq!(p.window(), 64240);
        assert_eq!(p.checksum(), 0x5993);
        assert_eq!(p.urgent(), 0);
        assert_eq!(
            p.options(),
            &[0x02, 0x04, 0x05, 0xb4, 0x01, 0x03, 0x03, 0x07]
        );
        assert!(p.payload().is_empty());
        assert!(p.verify_checksum_v4(CLIENT, VIP));
        assert!(!p.verify_checksum_v4(CLIENT, Ipv4Addr::new(198, 18, 0, 101)));
        assert!(!p.verify_checksum_v6(&client6(), &vip6()));
    }

    #[test]
    fn checksum_fixtures() {
        let mut b = SYN_V4;
        let mut p = TcpPacket::new_checked(&mut b[..]).unwrap();
        p.fill_checksum_v6(&client6(), &vip6());
        assert_eq!(p.checksum(), SYN_V6_CHECKSUM);
        assert!(p.verify_checksum_v6(&client6(), &vip6()));
        p.fill_checksum_v4(CLIENT, VIP);
        assert_eq!(b, SYN_V4);
    }

    #[test]
    fn flags() {
        let mut b = SYN_V4;
        b[12] |= 0x01; // NS
        b[13] = 0xff;
        let p = TcpPacket::new_checked(&b[..]).unwrap();
        assert_eq!(p.flags(), 0x1ff);
        assert_eq!(p.header_len(), 28);
        let mut p = TcpPacket::new_checked(&mut b[..]).unwrap();
        p.set_flags(ACK | RST);
        assert_eq!(p.flags(), 0x014);
        assert!(p.ack() && p.rst() && !p.syn() && !p.fin());
        assert_eq!(p.header_len(), 28);
        assert_eq!(
            [FIN, SYN, RST, PSH, ACK, URG, ECE, CWR, NS],
            [1, 2, 4, 8, 16, 32, 64, 128, 256]
        );
    }

    #[test]
    fn payload_and_setters() {
        let mut b = SYN_V4[..20].to_vec();
        b[12] = 0x50;
        b[13] = (PSH | ACK) as u8;
        b.extend_from_slice(b"GET /");
        let mut p = TcpPacket::new_checked(&mut b[..]).unwrap();
        assert_eq!(p.header_len(), 20);
        assert!(p.options().is_empty());
        assert_eq!(p.payload(), b"GET /");
        p.payload_mut()[4] = b'x';
        p.set_src_port(443);
        p.set_dst_port(40000);
        p.set_seq_number(0xffff_fffe);
        p.set_ack_number(0x0102_0305);
        p.set_window(1024);
        p.fill_checksum_v4(VIP, CLIENT);
        assert!(p.verify_checksum_v4(VIP, CLIENT));
        assert_eq!(
            (
                p.src_port(),
                p.dst_port(),
                p.seq_number(),
                p.ack_number(),
                p.window()
            ),
            (443, 40000, 0xffff_fffe, 0x0102_0305, 1024)
        );
        assert_eq!(&b[20..], b"GET x");
    }

    #[test]
    fn truncated_and_bad_offsets() {
        for len in 0..28 {
            assert_eq!(
                TcpPacket::new_checked(&SYN_V4[..len]).unwrap_err(),
                Error::Truncated,
                "len {len}"
            );
        }
        for doff in 0u8..5 {
            let mut b = SYN_V4;
            b[12] = doff << 4;
            assert_eq!(
                TcpPacket::new_checked(&b[..]).unwrap_err(),
                Error::BadHeader
            );
        }
        let mut b = SYN_V4;
        b[12] = 0xf0;
        assert_eq!(
            TcpPacket::new_checked(&b[..]).unwrap_err(),
            Error::Truncated
        );
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..80)) {
            if let Ok(p) = TcpPacket::new_checked(&data[..]) {
                let _ = (p.src_port(), p.dst_port(), p.seq_number(), p.ack_number(), p.flags());
                let _ = (p.syn(), p.ack(), p.fin(), p.rst(), p.window(), p.checksum(), p.urgent());
                let _ = (p.verify_checksum_v4(CLIENT, VIP), p.verify_checksum_v6(&vip6(), &client6()));
                prop_assert_eq!(p.options().len() + 20, p.header_len());
                prop_assert_eq!(p.header_len() + p.payload().len(), data.len());
            }
        }

        #[test]
        fn fill_then_verify(
            payload in proptest::collection::vec(any::<u8>(), 0..64),
            src in any::<[u8; 4]>(),
            dst in any::<[u8; 4]>(),
            src6 in any::<[u8; 16]>(),
            dst6 in any::<[u8; 16]>(),
        ) {
            let mut b = SYN_V4.to_vec();
            b.extend_from_slice(&payload);
            let mut p = TcpPacket::new_checked(&mut b[..]).unwrap();
            let (s, d) = (Ipv4Addr::from(src), Ipv4Addr::from(dst));
            p.fill_checksum_v4(s, d);
            prop_assert!(p.verify_checksum_v4(s, d));
            let (s6, d6) = (Ipv6Addr::from(src6), Ipv6Addr::from(dst6));
            p.fill_checksum_v6(&s6, &d6);
            prop_assert!(p.verify_checksum_v6(&s6, &d6));
        }

        #[test]
        fn setters_roundtrip(
            sp in any::<u16>(), dp in any::<u16>(), seq in any::<u32>(), ack in any::<u32>(),
            flags in any::<u16>(), win in any::<u16>(), ck in any::<u16>(),
        ) {
            let mut b = SYN_V4;
            let mut p = TcpPacket::new_checked(&mut b[..]).unwrap();
            p.set_src_port(sp);
            p.set_dst_port(dp);
            p.set_seq_number(seq);
            p.set_ack_number(ack);
            p.set_flags(flags);
            p.set_window(win);
            p.set_checksum(ck);
            prop_assert_eq!(
                (p.src_port(), p.dst_port(), p.seq_number(), p.ack_number()),
                (sp, dp, seq, ack)
            );
            prop_assert_eq!((p.flags(), p.window(), p.checksum()), (flags & 0x1ff, win, ck));
            prop_assert_eq!(p.header_len(), 28);
        }
    }
}
