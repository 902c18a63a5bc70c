//! ICMPv6 (RFC 4443) and the neighbor-discovery messages the appliance answers (RFC 4861).
//!
//! ```text
//!  0        8        16                31
//! +--------+--------+------------------+
//! |  type  |  code  |     checksum     |
//! +--------+--------+------------------+
//! |  rest of header (echo: ident, seq; |
//! |  packet too big: MTU; NS/NA: flags)|
//! +------------------------------------+
//! |  data                              |
//! ```

use std::net::Ipv6Addr;

use super::checksum;
use super::ethernet::EthernetAddress;
use super::{be16, be32, ip_proto, set_be16, set_be32, Error, Result};

/// Length of the fixed ICMPv6 header (type, code, checksum, rest of header).
pub const ICMPV6_HEADER_LEN: usize = 8;

/// ICMPv6 message types the dataplane handles.
pub mod icmpv6_type {
    /// Destination unreachable.
    pub const DEST_UNREACHABLE: u8 = 1;
    /// Packet too big (PMTUD).
    pub const PACKET_TOO_BIG: u8 = 2;
    /// Time exceeded.
    pub const TIME_EXCEEDED: u8 = 3;
    /// Parameter problem.
    pub const PARAMETER_PROBLEM: u8 = 4;
    /// Echo request.
    pub const ECHO_REQUEST: u8 = 128;
    /// Echo reply.
    pub const ECHO_REPLY: u8 = 129;
    /// Router solicitation.
    pub const ROUTER_SOLICIT: u8 = 133;
    /// Router advertisement.
    pub const ROUTER_ADVERT: u8 = 134;
    /// Neighbor solicitation.
    pub const NEIGHBOR_SOLICIT: u8 = 135;
    /// Neighbor advertisement.
    pub const NEIGHBOR_ADVERT: u8 = 136;
}

/// Whether `msg_type` is an error message (types 1..=4), which quotes the offending packet.
pub fn is_error(msg_type: u8) -> bool {
    (1..=4).contains(&msg_type)
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
    pub const NDP_FLAGS: usize = 4;
    pub const NDP_TARGET: core::ops::Range<usize> = 8..24;
}

/// The pseudo-header sum for an ICMPv6 message of `len` bytes.
fn pseudo_header(src: &Ipv6Addr, dst: &Ipv6Addr, len: usize) -> u32 {
    // A message longer than 4 GiB cannot exist; saturate rather than truncate silently.
    let len = u32::try_from(len).unwrap_or(u32::MAX);
    checksum::pseudo_header_v6(src, dst, ip_proto::ICMPV6, len)
}

/// A read/write view of an ICMPv6 message. The buffer must be exactly the message (the upper
/// layer payload of the IPv6 packet): the checksum covers all of it.
#[derive(Debug, Clone)]
pub struct Icmpv6Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Icmpv6Packet<T> {
    /// Wraps `buffer` without validation. Accessors may panic unless `buffer` passed
    /// [`new_checked`](Self::new_checked) before.
    pub const fn new_unchecked(buffer: T) -> Self {
        Icmpv6Packet { buffer }
    }

    /// Wraps `buffer` after checking it holds the 8-byte header (else `Truncated`).
    pub fn new_checked(buffer: T) -> Result<Self> {
        if buffer.as_ref().len() < ICMPV6_HEADER_LEN {
            return Err(Error::Truncated);
        }
        Ok(Icmpv6Packet { buffer })
    }

    /// Returns the underlying buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// Message type (see [`icmpv6_type`]).
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

    /// Bytes 4..8, whatever the type (the MTU of a packet-too-big message).
    pub fn rest_of_header(&self) -> u32 {
        be32(self.buffer.as_ref(), field::REST)
    }

    /// Everything after the 8-byte header (for errors, the quoted IPv6 packet).
    pub fn data(&self) -> &[u8] {
        &self.buffer.as_ref()[ICMPV6_HEADER_LEN..]
    }

    /// Whether the checksum over the pseudo-header and the whole buffer is valid.
    pub fn verify_checksum(&self, src: &Ipv6Addr, dst: &Ipv6Addr) -> bool {
        let b = self.buffer.as_ref();
        let acc = checksum::sum(pseudo_header(src, dst, b.len()), b);
        checksum::fold(acc) == 0xffff
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Icmpv6Packet<T> {
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

    /// Computes and stores the checksum over the pseudo-header (next header 58, length = the
    /// buffer's) and the whole buffer.
    pub fn fill_checksum(&mut self, src: &Ipv6Addr, dst: &Ipv6Addr) {
        self.set_checksum(0);
        let b = self.buffer.as_ref();
        let c = !checksum::fold(checksum::sum(pseudo_header(src, dst, b.len()), b));
        self.set_checksum(c);
    }

    /// Everything after the 8-byte header, writable.
    pub fn data_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[ICMPV6_HEADER_LEN..]
    }
}

/// Length of the fixed part of a neighbor solicitation / advertisement.
pub const NDP_NEIGHBOR_LEN: usize = 24;
/// Neighbor advertisement flag: sender is a router.
pub const NDP_FLAG_ROUTER: u8 = 0x80;
/// Neighbor advertisement flag: sent in response to a solicitation.
pub const NDP_FLAG_SOLICITED: u8 = 0x40;
/// Neighbor advertisement flag: override an existing cache entry.
pub const NDP_FLAG_OVERRIDE: u8 = 0x20;
/// Option type: source link-layer address.
pub const NDP_OPT_SOURCE_LLADDR: u8 = 1;
/// Option type: target link-layer address.
pub const NDP_OPT_TARGET_LLADDR: u8 = 2;

/// A read/write view of a neighbor solicitation or advertisement (the whole ICMPv6 message,
/// header included, so it can share a buffer with [`Icmpv6Packet`]).
///
/// ```text
/// | type | code | checksum | flags (NA) | reserved (3) | target (16) | options ...
/// ```
#[derive(Debug, Clone)]
pub struct NdpNeighbor<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> NdpNeighbor<T> {
    /// Wraps `buffer` without validation. Accessors may panic unless `buffer` passed
    /// [`new_checked`](Self::new_checked) before.
    pub const fn new_unchecked(buffer: T) -> Self {
        NdpNeighbor { buffer }
    }

    /// Wraps `buffer` after checking it holds the 24-byte fixed part (else `Truncated`). The
    /// message type is the caller's to check.
    pub fn new_checked(buffer: T) -> Result<Self> {
        if buffer.as_ref().len() < NDP_NEIGHBOR_LEN {
            return Err(Error::Truncated);
        }
        Ok(NdpNeighbor { buffer })
    }

    /// Returns the underlying buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// Target address.
    pub fn target(&self) -> Ipv6Addr {
        let mut a = [0u8; 16];
        a.copy_from_slice(&self.buffer.as_ref()[field::NDP_TARGET]);
        Ipv6Addr::from(a)
    }

    /// Flags byte: [`NDP_FLAG_ROUTER`], [`NDP_FLAG_SOLICITED`], [`NDP_FLAG_OVERRIDE`] in an NA;
    /// reserved (0) in an NS.
    pub fn flags(&self) -> u8 {
        self.buffer.as_ref()[field::NDP_FLAGS]
    }

    /// Options (from byte 24); see [`ndp_lladdr_option`].
    pub fn options(&self) -> &[u8] {
        &self.buffer.as_ref()[NDP_NEIGHBOR_LEN..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> NdpNeighbor<T> {
    /// Sets the target address (checksum not updated).
    pub fn set_target(&mut self, addr: &Ipv6Addr) {
        self.buffer.as_mut()[field::NDP_TARGET].copy_from_slice(&addr.octets());
    }

    /// Sets the flags byte (checksum not updated).
    pub fn set_flags(&mut self, flags: u8) {
        self.buffer.as_mut()[field::NDP_FLAGS] = flags;
    }

    /// Options, writable.
    pub fn options_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[NDP_NEIGHBOR_LEN..]
    }
}

/// Finds the first link-layer address option of `option_type` ([`NDP_OPT_SOURCE_LLADDR`] or
/// [`NDP_OPT_TARGET_LLADDR`]) in an NDP option list.
///
/// The whole list is validated (RFC 4861 §7.1.1: a message with a malformed option is
/// discarded): an option with length 0 is `BadHeader`, one running past the list is
/// `Truncated`. `Ok(None)` if there is no such option.
pub fn ndp_lladdr_option(options: &[u8], option_type: u8) -> Result<Option<EthernetAddress>> {
    let mut found = None;
    let mut rest = options;
    while !rest.is_empty() {
        let (&kind, len) = match rest {
            [kind, len, ..] => (kind, usize::from(*len) * 8),
            _ => return Err(Error::Truncated),
        };
        if len == 0 {
            return Err(Error::BadHeader);
        }
        let opt = rest.get(..len).ok_or(Error::Truncated)?;
        if kind == option_type && found.is_none() {
            // len >= 8, so bytes 2..8 are present.
            found = EthernetAddress::from_bytes(&opt[2..]);
        }
        rest = &rest[len..];
    }
    Ok(found)
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> NdpNeighbor<T> {
    /// Writes a link-layer address option ([`NDP_OPT_SOURCE_LLADDR`] or
    /// [`NDP_OPT_TARGET_LLADDR`], length 1 unit) at the start of the options; they must hold 8
    /// bytes.
    pub fn set_lladdr_option(&mut self, option_type: u8, addr: EthernetAddress) {
        let opt = &mut self.options_mut()[..NDP_LLADDR_OPTION_LEN];
        opt[0] = option_type;
        opt[1] = 1;
        opt[2..].copy_from_slice(&addr.0);
    }
}

/// Length of a link-layer address option for Ethernet.
pub const NDP_LLADDR_OPTION_LEN: usize = 8;

/// The high-level form of an ICMPv6 header: type, code and the 4-byte rest of header. The data
/// follows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Icmpv6Repr {
    pub msg_type: u8,
    pub code: u8,
    pub rest_of_header: u32,
}

impl Icmpv6Repr {
    /// Reads the header of a checked message (the checksum is the caller's to verify, with
    /// [`Icmpv6Packet::verify_checksum`]: it needs the IPv6 addresses).
    pub fn parse<T: AsRef<[u8]>>(packet: &Icmpv6Packet<T>) -> Result<Icmpv6Repr> {
        Ok(Icmpv6Repr {
            msg_type: packet.msg_type(),
            code: packet.code(),
            rest_of_header: packet.rest_of_header(),
        })
    }

    /// The header's length: [`ICMPV6_HEADER_LEN`].
    pub const fn buffer_len(&self) -> usize {
        ICMPV6_HEADER_LEN
    }

    /// Writes a whole message over the view's buffer, which must be exactly the message: the
    /// header, the data by `emit_data`, then the checksum over the pseudo-header of `src` and
    /// `dst`.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(
        &self,
        packet: &mut Icmpv6Packet<T>,
        src: &Ipv6Addr,
        dst: &Ipv6Addr,
        emit_data: impl FnOnce(&mut [u8]),
    ) {
        packet.set_msg_type(self.msg_type);
        packet.set_code(self.code);
        packet.set_rest_of_header(self.rest_of_header);
        emit_data(packet.data_mut());
        packet.fill_checksum(src, dst);
    }
}

/// The high-level form of a neighbor solicitation or advertisement (RFC 4861 §4.3, §4.4) with
/// at most one Ethernet link-layer address option, the only kind the appliance sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NdpRepr {
    NeighborSolicit {
        target: Ipv6Addr,
        /// The Source Link-Layer Address option; none when the source is `::` (DAD).
        source_lladdr: Option<EthernetAddress>,
    },
    NeighborAdvert {
        /// [`NDP_FLAG_ROUTER`], [`NDP_FLAG_SOLICITED`], [`NDP_FLAG_OVERRIDE`].
        flags: u8,
        target: Ipv6Addr,
        /// The Target Link-Layer Address option.
        target_lladdr: Option<EthernetAddress>,
    },
}

impl NdpRepr {
    /// Reads a checked ICMPv6 message that is a neighbor solicitation or advertisement:
    /// `BadHeader` for another type, a non-zero code or a malformed option list (the first
    /// link-layer address option of the message's kind is kept, others are ignored).
    pub fn parse<T: AsRef<[u8]>>(packet: &Icmpv6Packet<T>) -> Result<NdpRepr> {
        if packet.code() != 0 {
            return Err(Error::BadHeader);
        }
        let ndp = NdpNeighbor::new_checked(packet.buffer.as_ref())?;
        match packet.msg_type() {
            icmpv6_type::NEIGHBOR_SOLICIT => Ok(NdpRepr::NeighborSolicit {
                target: ndp.target(),
                source_lladdr: ndp_lladdr_option(ndp.options(), NDP_OPT_SOURCE_LLADDR)?,
            }),
            icmpv6_type::NEIGHBOR_ADVERT => Ok(NdpRepr::NeighborAdvert {
                flags: ndp.flags(),
                target: ndp.target(),
                target_lladdr: ndp_lladdr_option(ndp.options(), NDP_OPT_TARGET_LLADDR)?,
            }),
            _ => Err(Error::BadHeader),
        }
    }

    /// The message's length: 24, or 32 with the option.
    pub const fn buffer_len(&self) -> usize {
        match self {
            NdpRepr::NeighborSolicit {
                source_lladdr: Some(_),
                ..
            }
            | NdpRepr::NeighborAdvert {
                target_lladdr: Some(_),
                ..
            } => NDP_NEIGHBOR_LEN + NDP_LLADDR_OPTION_LEN,
            _ => NDP_NEIGHBOR_LEN,
        }
    }

    /// Writes the whole message over the view's buffer, which must be exactly
    /// [`buffer_len`](Self::buffer_len) bytes, checksum (over `src` and `dst`) included.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(
        &self,
        packet: &mut Icmpv6Packet<T>,
        src: &Ipv6Addr,
        dst: &Ipv6Addr,
    ) {
        let (msg_type, flags, target, option) = match *self {
            NdpRepr::NeighborSolicit {
                target,
                source_lladdr,
            } => (
                icmpv6_type::NEIGHBOR_SOLICIT,
                0,
                target,
                source_lladdr.map(|a| (NDP_OPT_SOURCE_LLADDR, a)),
            ),
            NdpRepr::NeighborAdvert {
                flags,
                target,
                target_lladdr,
            } => (
                icmpv6_type::NEIGHBOR_ADVERT,
                flags,
                target,
                target_lladdr.map(|a| (NDP_OPT_TARGET_LLADDR, a)),
            ),
        };
        packet.set_msg_type(msg_type);
        packet.set_code(0);
        packet.set_rest_of_header(0);
        let mut ndp = NdpNeighbor::new_unchecked(packet.buffer.as_mut());
        ndp.set_flags(flags);
        ndp.set_target(&target);
        if let Some((option_type, addr)) = option {
            ndp.set_lladdr_option(option_type, addr);
        }
        packet.fill_checksum(src, dst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn addr(s: &str) -> Ipv6Addr {
        s.parse().unwrap()
    }

    /// gw1 (2001:2:0:2::11, 02:00:00:00:02:0b) solicits 2001:2:0:2::1 to ff02::1:ff00:1.
    const NS: [u8; 32] = [
        135, 0, 0x35, 0x77, 0, 0, 0, 0, //
        0x20, 0x01, 0x00, 0x02, 0x00, 0x00, 0x00, 0x02, 0, 0, 0, 0, 0, 0, 0x00, 0x01, //
        1, 1, 0x02, 0x00, 0x00, 0x00, 0x02, 0x0b, // source LLA
    ];

    /// The appliance's answer: S|O flags, target LLA 02:00:00:00:02:01.
    const NA: [u8; 32] = [
        136, 0, 0xb1, 0x80, 0x60, 0, 0, 0, //
        0x20, 0x01, 0x00, 0x02, 0x00, 0x00, 0x00, 0x02, 0, 0, 0, 0, 0, 0, 0x00, 0x01, //
        2, 1, 0x02, 0x00, 0x00, 0x00, 0x02, 0x01, // target LLA
    ];

    /// Echo request from a client (2001:2:0:3::10) to the VIP: ident 0x1234, seq 1, "abcd".
    const ECHO: [u8; 12] = [
        128, 0, 0x67, 0xa3, 0x12, 0x34, 0x00, 0x01, b'a', b'b', b'c', b'd',
    ];

    #[test]
    fn parses_echo_and_checksum() {
        let (client, vip) = (addr("2001:2:0:3::10"), addr("2001:2:0:1::100"));
        let p = Icmpv6Packet::new_checked(&ECHO[..]).unwrap();
        assert_eq!(p.msg_type(), icmpv6_type::ECHO_REQUEST);
        assert_eq!(p.code(), 0);
        assert_eq!(p.checksum(), 0x67a3);
        assert_eq!(p.echo_ident(), 0x1234);
        assert_eq!(p.echo_seq(), 1);
        assert_eq!(p.rest_of_header(), 0x1234_0001);
        assert_eq!(p.data(), b"abcd");
        assert!(p.verify_checksum(&client, &vip));
        // The pseudo-header matters: swapped addresses still verify (the sum commutes), a
        // different address does not.
        assert!(p.verify_checksum(&vip, &client));
        assert!(!p.verify_checksum(&client, &addr("2001:2:0:1::101")));
        assert!(!is_error(p.msg_type()));

        let mut b = ECHO;
        let mut p = Icmpv6Packet::new_checked(&mut b[..]).unwrap();
        p.set_msg_type(icmpv6_type::ECHO_REPLY);
        assert!(!p.verify_checksum(&vip, &client));
        p.fill_checksum(&vip, &client);
        assert!(p.verify_checksum(&vip, &client));
        // Type 128 -> 129 lowers the checksum by 0x0100.
        assert_eq!(p.checksum(), 0x66a3);
    }

    #[test]
    fn parses_neighbor_solicitation() {
        let gw1 = addr("2001:2:0:2::11");
        let p = Icmpv6Packet::new_checked(&NS[..]).unwrap();
        assert_eq!(p.msg_type(), icmpv6_type::NEIGHBOR_SOLICIT);
        assert!(p.verify_checksum(&gw1, &addr("ff02::1:ff00:1")));
        let ns = NdpNeighbor::new_checked(&NS[..]).unwrap();
        assert_eq!(ns.target(), addr("2001:2:0:2::1"));
        assert_eq!(ns.flags(), 0);
        assert_eq!(ns.options().len(), 8);
        assert_eq!(
            ndp_lladdr_option(ns.options(), NDP_OPT_SOURCE_LLADDR),
            Ok(Some(EthernetAddress([2, 0, 0, 0, 2, 0x0b])))
        );
        assert_eq!(
            ndp_lladdr_option(ns.options(), NDP_OPT_TARGET_LLADDR),
            Ok(None)
        );
    }

    #[test]
    fn answers_neighbor_solicitation_in_place() {
        let (me, gw1) = (addr("2001:2:0:2::1"), addr("2001:2:0:2::11"));
        let mut b = NS;
        let mut na = NdpNeighbor::new_checked(&mut b[..]).unwrap();
        na.set_flags(NDP_FLAG_SOLICITED | NDP_FLAG_OVERRIDE);
        na.set_target(&me);
        na.options_mut().copy_from_slice(&[2, 1, 2, 0, 0, 0, 2, 1]);
        let mut p = Icmpv6Packet::new_checked(na.into_inner()).unwrap();
        p.set_msg_type(icmpv6_type::NEIGHBOR_ADVERT);
        p.fill_checksum(&me, &gw1);
        assert_eq!(b, NA);
        let na = NdpNeighbor::new_checked(&b[..]).unwrap();
        assert_eq!(na.flags(), 0x60);
        assert_eq!(
            ndp_lladdr_option(na.options(), NDP_OPT_TARGET_LLADDR),
            Ok(Some(EthernetAddress([2, 0, 0, 0, 2, 1])))
        );
    }

    #[test]
    fn lladdr_option_walk() {
        // Nonce option (type 14, 8 bytes), then source LLA, then a second source LLA.
        let opts = [
            14, 1, 1, 2, 3, 4, 5, 6, //
            1, 1, 2, 0, 0, 0, 2, 0x0c, //
            1, 1, 2, 0, 0, 0, 2, 0x0d,
        ];
        assert_eq!(
            ndp_lladdr_option(&opts, NDP_OPT_SOURCE_LLADDR),
            Ok(Some(EthernetAddress([2, 0, 0, 0, 2, 0x0c])))
        );
        assert_eq!(ndp_lladdr_option(&[], NDP_OPT_SOURCE_LLADDR), Ok(None));
        // A 16-byte LLA option (length 2) still yields the first 6 bytes.
        let long = [2, 2, 2, 0, 0, 0, 2, 1, 0, 0, 0, 0, 0, 0, 0, 0];
        assert_eq!(
            ndp_lladdr_option(&long, NDP_OPT_TARGET_LLADDR),
            Ok(Some(EthernetAddress([2, 0, 0, 0, 2, 1])))
        );
        // Length 0 anywhere in the list is fatal, even after a match.
        let mut bad = opts;
        bad[17] = 0;
        assert_eq!(
            ndp_lladdr_option(&bad, NDP_OPT_SOURCE_LLADDR),
            Err(Error::BadHeader)
        );
        // Overruns at every cut that is not an option boundary.
        for cut in 1..opts.len() {
            let r = ndp_lladdr_option(&opts[..cut], NDP_OPT_SOURCE_LLADDR);
            if cut % 8 == 0 {
                assert!(r.is_ok(), "cut {cut}");
            } else {
                assert_eq!(r, Err(Error::Truncated), "cut {cut}");
            }
        }
        let overrun = [1, 2, 2, 0, 0, 0, 2, 1];
        assert_eq!(
            ndp_lladdr_option(&overrun, NDP_OPT_SOURCE_LLADDR),
            Err(Error::Truncated)
        );
    }

    #[test]
    fn error_types() {
        let errors: Vec<u8> = (0..=255).filter(|&t| is_error(t)).collect();
        assert_eq!(errors, [1, 2, 3, 4]);
    }

    #[test]
    fn packet_too_big_mtu() {
        let b = [2, 0, 0, 0, 0, 0, 0x05, 0x00, 0x60, 0, 0, 0];
        let p = Icmpv6Packet::new_checked(&b[..]).unwrap();
        assert!(is_error(p.msg_type()));
        assert_eq!(p.rest_of_header(), 1280);
        assert_eq!(p.data(), &[0x60, 0, 0, 0]);
    }

    #[test]
    fn truncated_at_every_length() {
        for len in 0..ICMPV6_HEADER_LEN {
            assert_eq!(
                Icmpv6Packet::new_checked(&ECHO[..len]).unwrap_err(),
                Error::Truncated
            );
        }
        for len in 0..NDP_NEIGHBOR_LEN {
            assert_eq!(
                NdpNeighbor::new_checked(&NS[..len]).unwrap_err(),
                Error::Truncated
            );
        }
        assert!(NdpNeighbor::new_checked(&NS[..24])
            .unwrap()
            .options()
            .is_empty());
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(
            data in proptest::collection::vec(any::<u8>(), 0..64),
            src in any::<[u8; 16]>(),
            dst in any::<[u8; 16]>(),
        ) {
            let (src, dst) = (Ipv6Addr::from(src), Ipv6Addr::from(dst));
            if let Ok(p) = Icmpv6Packet::new_checked(&data[..]) {
                let _ = (p.msg_type(), p.code(), p.checksum(), p.echo_ident(), p.echo_seq());
                let _ = (p.rest_of_header(), p.data(), p.verify_checksum(&src, &dst));
            }
            if let Ok(n) = NdpNeighbor::new_checked(&data[..]) {
                let _ = (n.target(), n.flags());
                let _ = ndp_lladdr_option(n.options(), NDP_OPT_SOURCE_LLADDR);
            }
            for t in [NDP_OPT_SOURCE_LLADDR, NDP_OPT_TARGET_LLADDR] {
                let _ = ndp_lladdr_option(&data, t);
            }
        }

        #[test]
        fn fill_then_verify(
            data in proptest::collection::vec(any::<u8>(), 8..80),
            src in any::<[u8; 16]>(),
            dst in any::<[u8; 16]>(),
        ) {
            let (src, dst) = (Ipv6Addr::from(src), Ipv6Addr::from(dst));
            let mut data = data;
            let mut p = Icmpv6Packet::new_checked(&mut data[..]).unwrap();
            p.fill_checksum(&src, &dst);
            prop_assert!(p.verify_checksum(&src, &dst));
        }

        #[test]
        fn setters_roundtrip(target in any::<[u8; 16]>(), flags in any::<u8>(), id in any::<u16>(), seq in any::<u16>()) {
            let mut b = NS;
            let mut n = NdpNeighbor::new_checked(&mut b[..]).unwrap();
            n.set_target(&Ipv6Addr::from(target));
            n.set_flags(flags);
            prop_assert_eq!(n.target(), Ipv6Addr::from(target));
            prop_assert_eq!(n.flags(), flags);
            let mut p = Icmpv6Packet::new_checked(&mut b[..]).unwrap();
            p.set_echo_ident(id);
            p.set_echo_seq(seq);
            prop_assert_eq!((p.echo_ident(), p.echo_seq()), (id, seq));
        }

        #[test]
        fn lladdr_option_found(
            before in proptest::collection::vec((2u8..20, 1u8..3), 0..4),
            mac in any::<[u8; 6]>(),
        ) {
            // Options of other types (never type 1), then a source LLA.
            let mut opts = Vec::new();
            for (t, l) in &before {
                opts.push(*t);
                opts.push(*l);
                opts.resize(opts.len() + usize::from(*l) * 8 - 2, 0xaa);
            }
            opts.extend_from_slice(&[1, 1]);
            opts.extend_from_slice(&mac);
            prop_assert_eq!(
                ndp_lladdr_option(&opts, NDP_OPT_SOURCE_LLADDR),
                Ok(Some(EthernetAddress(mac)))
            );
        }
    }
}

#[cfg(test)]
mod repr_tests {
    use super::*;
    use proptest::prelude::*;

    const SRC: Ipv6Addr = Ipv6Addr::new(0x2001, 2, 0, 1, 0, 0, 0, 1);
    const DST: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 1, 0xff00, 0xfe);
    const MAC: EthernetAddress = EthernetAddress([0x02, 0, 0, 0, 0x01, 0x01]);

    fn emit(repr: &NdpRepr) -> Vec<u8> {
        let mut buf = vec![0xee; repr.buffer_len()];
        repr.emit(&mut Icmpv6Packet::new_unchecked(&mut buf[..]), &SRC, &DST);
        buf
    }

    #[test]
    fn emits_known_bytes() {
        let ns = NdpRepr::NeighborSolicit {
            target: Ipv6Addr::new(0x2001, 2, 0, 1, 0, 0, 0, 0xfe),
            source_lladdr: Some(MAC),
        };
        let buf = emit(&ns);
        let mut expected = vec![135, 0, 0, 0, 0, 0, 0, 0];
        expected.extend_from_slice(&Ipv6Addr::new(0x2001, 2, 0, 1, 0, 0, 0, 0xfe).octets());
        expected.extend_from_slice(&[1, 1, 0x02, 0, 0, 0, 0x01, 0x01]);
        let c = !checksum::fold(checksum::sum(pseudo_header(&SRC, &DST, 32), &expected));
        expected[2..4].copy_from_slice(&c.to_be_bytes());
        assert_eq!(buf, expected);

        let na = NdpRepr::NeighborAdvert {
            flags: NDP_FLAG_OVERRIDE,
            target: SRC,
            target_lladdr: None,
        };
        let buf = emit(&na);
        assert_eq!(buf.len(), 24);
        assert_eq!(buf[..2], [136, 0]);
        assert_eq!(buf[4..8], [0x20, 0, 0, 0]);
        assert!(Icmpv6Packet::new_checked(&buf[..])
            .unwrap()
            .verify_checksum(&SRC, &DST));
    }

    #[test]
    fn icmpv6_echo_known_bytes() {
        let repr = Icmpv6Repr {
            msg_type: icmpv6_type::ECHO_REPLY,
            code: 0,
            rest_of_header: 0x0001_0002,
        };
        let mut buf = [0xee; 10];
        repr.emit(
            &mut Icmpv6Packet::new_unchecked(&mut buf[..]),
            &SRC,
            &DST,
            |d| d.copy_from_slice(b"hi"),
        );
        let mut expected = [129, 0, 0, 0, 0, 1, 0, 2, b'h', b'i'];
        let c = !checksum::fold(checksum::sum(pseudo_header(&SRC, &DST, 10), &expected));
        expected[2..4].copy_from_slice(&c.to_be_bytes());
        assert_eq!(buf, expected);
        let p = Icmpv6Packet::new_checked(&buf[..]).unwrap();
        assert_eq!(Icmpv6Repr::parse(&p).unwrap(), repr);
        assert!(NdpRepr::parse(&p).is_err());
    }

    fn mac() -> impl Strategy<Value = Option<EthernetAddress>> {
        proptest::option::of(any::<[u8; 6]>().prop_map(EthernetAddress))
    }

    proptest! {
        #[test]
        fn round_trip(solicit in any::<bool>(), flags in prop_oneof![Just(0u8), Just(0x20), Just(0x60), Just(0xe0)], target in any::<[u8; 16]>(), lladdr in mac()) {
            let target = Ipv6Addr::from(target);
            let repr = if solicit {
                NdpRepr::NeighborSolicit { target, source_lladdr: lladdr }
            } else {
                NdpRepr::NeighborAdvert { flags, target, target_lladdr: lladdr }
            };
            let buf = emit(&repr);
            let p = Icmpv6Packet::new_checked(&buf[..]).unwrap();
            prop_assert!(p.verify_checksum(&SRC, &DST));
            prop_assert_eq!(NdpRepr::parse(&p).unwrap(), repr);
        }
    }
}
