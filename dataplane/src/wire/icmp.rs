//! ICMP for IPv4 (RFC 792).
//!
//! ```text
//!  0        8        16                31
//! +--------+--------+------------------+
//! |  type  |  code  |     checksum     |
//! +--------+--------+------------------+
//! |  rest of header (echo: ident, seq; |
//! |  frag needed: unused, next MTU)    |
//! +------------------------------------+
//! |  data (errors: the quoted packet)  |
//! ```

use super::checksum;
use super::{be16, be32, set_be16, set_be32, Error, Result};

/// Length of the fixed ICMP header (type, code, checksum, rest of header).
pub const ICMPV4_HEADER_LEN: usize = 8;

/// ICMPv4 message types the dataplane handles.
pub mod icmpv4_type {
    /// Echo reply.
    pub const ECHO_REPLY: u8 = 0;
    /// Destination unreachable (code 4: fragmentation needed).
    pub const DEST_UNREACHABLE: u8 = 3;
    /// Redirect.
    pub const REDIRECT: u8 = 5;
    /// Echo request.
    pub const ECHO_REQUEST: u8 = 8;
    /// Time exceeded.
    pub const TIME_EXCEEDED: u8 = 11;
    /// Parameter problem.
    pub const PARAMETER_PROBLEM: u8 = 12;
}

/// Destination-unreachable code "fragmentation needed and DF set" (RFC 1191 PMTUD).
pub const CODE_FRAG_NEEDED: u8 = 4;

/// Whether `msg_type` is an error that quotes the offending packet (destination unreachable,
/// time exceeded, parameter problem), so it belongs to that packet's flow.
pub fn is_error(msg_type: u8) -> bool {
    matches!(
        msg_type,
        icmpv4_type::DEST_UNREACHABLE | icmpv4_type::TIME_EXCEEDED | icmpv4_type::PARAMETER_PROBLEM
    )
}

/// Offsets of the header's fields, for code that rewrites them in place where a view would
/// cost (the NAT fast path).
pub mod field {
    pub const TYPE: usize = 0;
    pub const CODE: usize = 1;
    pub const CHECKSUM: usize = 2;
    pub const REST: usize = 4;
    pub const ECHO_IDENT: usize = 4;
    pub const ECHO_SEQ: usize = 6;
    pub const NEXT_MTU: usize = 6;
}

/// A read/write view of an ICMPv4 message. The buffer must be exactly the message (the IPv4
/// payload): the checksum covers all of it.
#[derive(Debug, Clone)]
pub struct Icmpv4Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Icmpv4Packet<T> {
    /// Wraps `buffer` without validation. Accessors may panic unless `buffer` passed
    /// [`new_checked`](Self::new_checked) before.
    pub const fn new_unchecked(buffer: T) -> Self {
        Icmpv4Packet { buffer }
    }

    /// Wraps `buffer` after checking it holds the 8-byte header (else `Truncated`).
    pub fn new_checked(buffer: T) -> Result<Self> {
        if buffer.as_ref().len() < ICMPV4_HEADER_LEN {
            return Err(Error::Truncated);
        }
        Ok(Icmpv4Packet { buffer })
    }

    /// Returns the underlying buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// Message type (see [`icmpv4_type`]).
    pub fn msg_type(&self) -> u8 {
        self.buffer.as_ref()[field::TYPE]
    }

    /// Message code.
    pub fn code(&self) -> u8 {
        self.buffer.as_ref()[field::CODE]
    }

    /// Checksum field.
    pub fn checksum(&self) -> u16 {
        be16(self.buffer.as_ref(), field::CHECKSUM)
    }

    /// Echo identifier (meaningful for echo request/reply).
    pub fn echo_ident(&self) -> u16 {
        be16(self.buffer.as_ref(), field::ECHO_IDENT)
    }

    /// Echo sequence number (meaningful for echo request/reply).
    pub fn echo_seq(&self) -> u16 {
        be16(self.buffer.as_ref(), field::ECHO_SEQ)
    }

    /// Next-hop MTU of a "fragmentation needed" message (RFC 1191; 0 from old routers).
    pub fn next_mtu(&self) -> u16 {
        be16(self.buffer.as_ref(), field::NEXT_MTU)
    }

    /// Bytes 4..8, whatever the type.
    pub fn rest_of_header(&self) -> u32 {
        be32(self.buffer.as_ref(), field::REST)
    }

    /// Everything after the 8-byte header (for errors, the quoted IPv4 packet).
    pub fn data(&self) -> &[u8] {
        &self.buffer.as_ref()[ICMPV4_HEADER_LEN..]
    }

    /// Whether the checksum over the whole buffer is valid.
    pub fn verify_checksum(&self) -> bool {
        checksum::checksum(self.buffer.as_ref()) == 0
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Icmpv4Packet<T> {
    /// Sets the message type (checksum not updated).
    pub fn set_msg_type(&mut self, value: u8) {
        self.buffer.as_mut()[field::TYPE] = value;
    }

    /// Sets the code (checksum not updated).
    pub fn set_code(&mut self, value: u8) {
        self.buffer.as_mut()[field::CODE] = value;
    }

    /// Sets the checksum field.
    pub fn set_checksum(&mut self, value: u16) {
        set_be16(self.buffer.as_mut(), field::CHECKSUM, value);
    }

    /// Sets the echo identifier (checksum not updated).
    pub fn set_echo_ident(&mut self, value: u16) {
        set_be16(self.buffer.as_mut(), field::ECHO_IDENT, value);
    }

    /// Sets the echo sequence number (checksum not updated).
    pub fn set_echo_seq(&mut self, value: u16) {
        set_be16(self.buffer.as_mut(), field::ECHO_SEQ, value);
    }

    /// Sets bytes 4..8 (checksum not updated).
    pub fn set_rest_of_header(&mut self, value: u32) {
        set_be32(self.buffer.as_mut(), field::REST, value);
    }

    /// Computes and stores the checksum over the whole buffer.
    pub fn fill_checksum(&mut self) {
        self.set_checksum(0);
        let c = checksum::checksum(self.buffer.as_ref());
        self.set_checksum(c);
    }

    /// Everything after the 8-byte header, writable.
    pub fn data_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[ICMPV4_HEADER_LEN..]
    }
}

/// The high-level form of an ICMP header: type, code and the 4-byte rest of header (echo
/// identifier and sequence number, next-hop MTU, ...). The data follows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Icmpv4Repr {
    pub msg_type: u8,
    pub code: u8,
    pub rest_of_header: u32,
}

impl Icmpv4Repr {
    /// An echo request or reply header.
    pub const fn echo(msg_type: u8, ident: u16, seq: u16) -> Self {
        Icmpv4Repr {
            msg_type,
            code: 0,
            rest_of_header: ((ident as u32) << 16) | seq as u32,
        }
    }

    /// Reads the header of a checked message; `BadHeader` when the checksum is wrong.
    pub fn parse<T: AsRef<[u8]>>(packet: &Icmpv4Packet<T>) -> Result<Icmpv4Repr> {
        if !packet.verify_checksum() {
            return Err(Error::BadHeader);
        }
        Ok(Icmpv4Repr {
            msg_type: packet.msg_type(),
            code: packet.code(),
            rest_of_header: packet.rest_of_header(),
        })
    }

    /// The header's length: [`ICMPV4_HEADER_LEN`].
    pub const fn buffer_len(&self) -> usize {
        ICMPV4_HEADER_LEN
    }

    /// Writes a whole message over the view's buffer, which must be exactly the message: the
    /// header, the data by `emit_data`, then the checksum.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(
        &self,
        packet: &mut Icmpv4Packet<T>,
        emit_data: impl FnOnce(&mut [u8]),
    ) {
        packet.set_msg_type(self.msg_type);
        packet.set_code(self.code);
        packet.set_rest_of_header(self.rest_of_header);
        emit_data(packet.data_mut());
        packet.fill_checksum();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// `ping -c1 -p 61` style echo request: ident 0x1234, seq 1, 8 bytes of data.
    const ECHO_REQUEST: [u8; 16] = [
        0x08, 0x00, 0x60, 0x45, 0x12, 0x34, 0x00, 0x01, // type 8, checksum 0x6045
        0x61, 0x61, 0x61, 0x61, 0x61, 0x61, 0x61, 0x61,
    ];

    /// Fragmentation needed, next-hop MTU 1400, quoting the first 28 bytes of a UDP packet from
    /// the VIP to a client.
    const FRAG_NEEDED: [u8; 36] = [
        0x03, 0x04, 0x00, 0x00, 0x00, 0x00, 0x05, 0x78, // checksum filled by the test
        0x45, 0x00, 0x05, 0xdc, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0x00, 0x00, 198, 18, 0, 100,
        198, 18, 1, 10, //
        0x11, 0x94, 0x11, 0x94, 0x05, 0xc8, 0x00, 0x00,
    ];

    #[test]
    fn parses_echo_request() {
        let p = Icmpv4Packet::new_checked(&ECHO_REQUEST[..]).unwrap();
        assert_eq!(p.msg_type(), icmpv4_type::ECHO_REQUEST);
        assert_eq!(p.code(), 0);
        assert_eq!(p.checksum(), 0x6045);
        assert_eq!(p.echo_ident(), 0x1234);
        assert_eq!(p.echo_seq(), 1);
        assert_eq!(p.rest_of_header(), 0x1234_0001);
        assert_eq!(p.data(), &[0x61; 8]);
        assert!(p.verify_checksum());
        assert!(!is_error(p.msg_type()));
    }

    #[test]
    fn echo_reply_in_place() {
        let mut b = ECHO_REQUEST;
        let mut p = Icmpv4Packet::new_checked(&mut b[..]).unwrap();
        p.set_msg_type(icmpv4_type::ECHO_REPLY);
        assert!(!p.verify_checksum());
        p.fill_checksum();
        assert!(p.verify_checksum());
        // Type 8 -> 0 raises the checksum by 0x0800.
        assert_eq!(p.checksum(), 0x6845);
    }

    #[test]
    fn parses_frag_needed() {
        let mut b = FRAG_NEEDED;
        let mut p = Icmpv4Packet::new_checked(&mut b[..]).unwrap();
        p.fill_checksum();
        assert!(p.verify_checksum());
        assert_eq!(p.msg_type(), icmpv4_type::DEST_UNREACHABLE);
        assert_eq!(p.code(), CODE_FRAG_NEEDED);
        assert_eq!(p.next_mtu(), 1400);
        assert_eq!(p.rest_of_header(), 1400);
        assert!(is_error(p.msg_type()));
        assert_eq!(p.data().len(), 28);
        assert_eq!(p.data()[0], 0x45);
        p.data_mut()[8] = 63;
        assert!(!p.verify_checksum());
        assert_eq!(b[16], 63);
    }

    #[test]
    fn error_types() {
        let errors: Vec<u8> = (0..=255).filter(|&t| is_error(t)).collect();
        assert_eq!(errors, [3, 11, 12]);
    }

    #[test]
    fn truncated_at_every_length() {
        for len in 0..ICMPV4_HEADER_LEN {
            assert_eq!(
                Icmpv4Packet::new_checked(&ECHO_REQUEST[..len]).unwrap_err(),
                Error::Truncated
            );
        }
        let p = Icmpv4Packet::new_checked(&ECHO_REQUEST[..8]).unwrap();
        assert!(p.data().is_empty());
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..40)) {
            if let Ok(p) = Icmpv4Packet::new_checked(&data[..]) {
                let _ = (p.msg_type(), p.code(), p.checksum(), p.echo_ident(), p.echo_seq());
                let _ = (p.next_mtu(), p.rest_of_header(), p.verify_checksum());
                prop_assert_eq!(p.data().len() + 8, data.len());
            }
        }

        #[test]
        fn fill_then_verify(data in proptest::collection::vec(any::<u8>(), 8..80)) {
            let mut data = data;
            let mut p = Icmpv4Packet::new_checked(&mut data[..]).unwrap();
            p.fill_checksum();
            prop_assert!(p.verify_checksum());
        }

        #[test]
        fn setters_roundtrip(t in any::<u8>(), c in any::<u8>(), id in any::<u16>(), seq in any::<u16>(), ck in any::<u16>()) {
            let mut b = ECHO_REQUEST;
            let mut p = Icmpv4Packet::new_checked(&mut b[..]).unwrap();
            p.set_msg_type(t);
            p.set_code(c);
            p.set_echo_ident(id);
            p.set_echo_seq(seq);
            p.set_checksum(ck);
            prop_assert_eq!((p.msg_type(), p.code(), p.echo_ident(), p.echo_seq(), p.checksum()), (t, c, id, seq, ck));
            prop_assert_eq!(p.rest_of_header(), u32::from(id) << 16 | u32::from(seq));
            p.set_rest_of_header(0xdead_beef);
            prop_assert_eq!((p.echo_ident(), p.echo_seq()), (0xdead, 0xbeef));
        }
    }
}

#[cfg(test)]
mod repr_tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn emits_known_bytes() {
        let repr = Icmpv4Repr::echo(icmpv4_type::ECHO_REQUEST, 0x1234, 1);
        let mut buf = [0xee; 12];
        repr.emit(&mut Icmpv4Packet::new_unchecked(&mut buf[..]), |d| {
            d.copy_from_slice(b"abcd")
        });
        // 0x0800 + 0x1234 + 0x0001 + 0x6162 + 0x6364 = 0xdefb -> !0xdefb = 0x2104.
        assert_eq!(
            buf,
            [8, 0, 0x21, 0x04, 0x12, 0x34, 0, 1, b'a', b'b', b'c', b'd']
        );
    }

    proptest! {
        #[test]
        fn round_trip(msg_type in any::<u8>(), code in any::<u8>(), rest in any::<u32>(), data in proptest::collection::vec(any::<u8>(), 0..64)) {
            let repr = Icmpv4Repr { msg_type, code, rest_of_header: rest };
            let mut buf = vec![0u8; repr.buffer_len() + data.len()];
            repr.emit(&mut Icmpv4Packet::new_unchecked(&mut buf[..]), |d| d.copy_from_slice(&data));
            let p = Icmpv4Packet::new_checked(&buf[..]).unwrap();
            prop_assert_eq!(Icmpv4Repr::parse(&p).unwrap(), repr);
            prop_assert_eq!(p.data(), &data[..]);
        }
    }
}
