//! ARP for IPv4 over Ethernet (RFC 826).
//!
//! ```text
//!  0       2       4    5    6       8          14         18         24         28
//! +-------+-------+----+----+-------+----------+----------+----------+----------+
//! | htype | ptype |hlen|plen|  op   | sender hw| sender ip| target hw| target ip|
//! +-------+-------+----+----+-------+----------+----------+----------+----------+
//! ```

use std::net::Ipv4Addr;

use super::ethernet::{ethertype, EthernetAddress};
use super::{be16, set_be16, Error, Result};

/// Length of an Ethernet/IPv4 ARP packet.
pub const ARP_LEN: usize = 28;
/// `operation()` of a request.
pub const ARP_REQUEST: u16 = 1;
/// `operation()` of a reply.
pub const ARP_REPLY: u16 = 2;

/// Hardware type Ethernet.
const HTYPE_ETHERNET: u16 = 1;

mod field {
    use core::ops::Range;
    pub const HTYPE: usize = 0;
    pub const PTYPE: usize = 2;
    pub const HLEN: usize = 4;
    pub const PLEN: usize = 5;
    pub const OPER: usize = 6;
    pub const SHA: Range<usize> = 8..14;
    pub const SPA: Range<usize> = 14..18;
    pub const THA: Range<usize> = 18..24;
    pub const TPA: Range<usize> = 24..28;
}

/// A read/write view of an Ethernet/IPv4 ARP packet (the Ethernet payload).
#[derive(Debug, Clone)]
pub struct ArpPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> ArpPacket<T> {
    /// Wraps `buffer` without validation. Accessors may panic unless `buffer` passed
    /// [`new_checked`](Self::new_checked) before.
    pub const fn new_unchecked(buffer: T) -> Self {
        ArpPacket { buffer }
    }

    /// Wraps `buffer` after checking it is at least [`ARP_LEN`] bytes (else `Truncated`) and
    /// describes Ethernet/IPv4 (htype 1, ptype 0x0800, hlen 6, plen 4; else `BadHeader`).
    /// Trailing bytes (Ethernet padding) are allowed.
    pub fn new_checked(buffer: T) -> Result<Self> {
        let b = buffer.as_ref();
        if b.len() < ARP_LEN {
            return Err(Error::Truncated);
        }
        if be16(b, field::HTYPE) != HTYPE_ETHERNET
            || be16(b, field::PTYPE) != ethertype::IPV4
            || b[field::HLEN] != 6
            || b[field::PLEN] != 4
        {
            return Err(Error::BadHeader);
        }
        Ok(ArpPacket { buffer })
    }

    /// Returns the underlying buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// Operation: [`ARP_REQUEST`], [`ARP_REPLY`] or another value.
    pub fn operation(&self) -> u16 {
        be16(self.buffer.as_ref(), field::OPER)
    }

    /// Sender hardware address.
    pub fn sender_hw(&self) -> EthernetAddress {
        mac(&self.buffer.as_ref()[field::SHA])
    }

    /// Sender protocol address.
    pub fn sender_ip(&self) -> Ipv4Addr {
        ip(&self.buffer.as_ref()[field::SPA])
    }

    /// Target hardware address (zero in a request).
    pub fn target_hw(&self) -> EthernetAddress {
        mac(&self.buffer.as_ref()[field::THA])
    }

    /// Target protocol address.
    pub fn target_ip(&self) -> Ipv4Addr {
        ip(&self.buffer.as_ref()[field::TPA])
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> ArpPacket<T> {
    /// Sets the operation.
    pub fn set_operation(&mut self, op: u16) {
        set_be16(self.buffer.as_mut(), field::OPER, op);
    }

    /// Sets the sender hardware address.
    pub fn set_sender_hw(&mut self, addr: EthernetAddress) {
        self.buffer.as_mut()[field::SHA].copy_from_slice(&addr.0);
    }

    /// Sets the sender protocol address.
    pub fn set_sender_ip(&mut self, addr: Ipv4Addr) {
        self.buffer.as_mut()[field::SPA].copy_from_slice(&addr.octets());
    }

    /// Sets the target hardware address.
    pub fn set_target_hw(&mut self, addr: EthernetAddress) {
        self.buffer.as_mut()[field::THA].copy_from_slice(&addr.0);
    }

    /// Sets the target protocol address.
    pub fn set_target_ip(&mut self, addr: Ipv4Addr) {
        self.buffer.as_mut()[field::TPA].copy_from_slice(&addr.octets());
    }
}

/// The 6 bytes of a validated range as a MAC.
fn mac(b: &[u8]) -> EthernetAddress {
    let mut a = [0u8; 6];
    a.copy_from_slice(b);
    EthernetAddress(a)
}

/// The 4 bytes of a validated range as an IPv4 address.
fn ip(b: &[u8]) -> Ipv4Addr {
    Ipv4Addr::new(b[0], b[1], b[2], b[3])
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> ArpPacket<T> {
    /// Writes the fixed fields of Ethernet/IPv4 ARP: htype 1, ptype 0x0800, hlen 6, plen 4.
    pub fn set_ethernet_ipv4(&mut self) {
        let b = self.buffer.as_mut();
        set_be16(b, field::HTYPE, HTYPE_ETHERNET);
        set_be16(b, field::PTYPE, ethertype::IPV4);
        b[field::HLEN] = 6;
        b[field::PLEN] = 4;
    }
}

/// The high-level form of an Ethernet/IPv4 ARP packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ArpRepr {
    /// [`ARP_REQUEST`], [`ARP_REPLY`] or another value.
    pub operation: u16,
    pub sender_hw: EthernetAddress,
    pub sender_ip: Ipv4Addr,
    pub target_hw: EthernetAddress,
    pub target_ip: Ipv4Addr,
}

impl ArpRepr {
    /// Reads a checked packet.
    pub fn parse<T: AsRef<[u8]>>(packet: &ArpPacket<T>) -> Result<ArpRepr> {
        Ok(ArpRepr {
            operation: packet.operation(),
            sender_hw: packet.sender_hw(),
            sender_ip: packet.sender_ip(),
            target_hw: packet.target_hw(),
            target_ip: packet.target_ip(),
        })
    }

    /// [`ARP_LEN`].
    pub const fn buffer_len(&self) -> usize {
        ARP_LEN
    }

    /// Writes the packet through the view's setters; the buffer must hold [`ARP_LEN`] bytes.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, packet: &mut ArpPacket<T>) {
        packet.set_ethernet_ipv4();
        packet.set_operation(self.operation);
        packet.set_sender_hw(self.sender_hw);
        packet.set_sender_ip(self.sender_ip);
        packet.set_target_hw(self.target_hw);
        packet.set_target_ip(self.target_ip);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The upstream router (02:00:00:00:01:fe, 198.18.0.1) asks who has the VIP.
    const REQUEST: [u8; 28] = [
        0x00, 0x01, 0x08, 0x00, 0x06, 0x04, 0x00, 0x01, // Ethernet/IPv4, request
        0x02, 0x00, 0x00, 0x00, 0x01, 0xfe, 198, 18, 0, 1, // sender
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 198, 18, 0, 100, // target
    ];

    #[test]
    fn parses_request() {
        let p = ArpPacket::new_checked(&REQUEST[..]).unwrap();
        assert_eq!(p.operation(), ARP_REQUEST);
        assert_eq!(p.sender_hw(), EthernetAddress([0x02, 0, 0, 0, 0x01, 0xfe]));
        assert_eq!(p.sender_ip(), Ipv4Addr::new(198, 18, 0, 1));
        assert_eq!(p.target_hw(), EthernetAddress([0; 6]));
        assert_eq!(p.target_ip(), Ipv4Addr::new(198, 18, 0, 100));
    }

    #[test]
    fn builds_reply_in_place() {
        let mut b = REQUEST;
        let mut p = ArpPacket::new_checked(&mut b[..]).unwrap();
        let (sha, spa) = (p.sender_hw(), p.sender_ip());
        p.set_operation(ARP_REPLY);
        p.set_target_hw(sha);
        p.set_target_ip(spa);
        p.set_sender_hw(EthernetAddress([0x02, 0, 0, 0, 0x01, 0x01]));
        p.set_sender_ip(Ipv4Addr::new(198, 18, 0, 100));
        assert_eq!(
            b,
            [
                0x00, 0x01, 0x08, 0x00, 0x06, 0x04, 0x00, 0x02, 0x02, 0x00, 0x00, 0x00, 0x01, 0x01,
                198, 18, 0, 100, 0x02, 0x00, 0x00, 0x00, 0x01, 0xfe, 198, 18, 0, 1,
            ]
        );
    }

    #[test]
    fn padding_allowed() {
        let mut b = REQUEST.to_vec();
        b.extend_from_slice(&[0; 18]);
        let p = ArpPacket::new_checked(&b[..]).unwrap();
        assert_eq!(p.target_ip(), Ipv4Addr::new(198, 18, 0, 100));
    }

    #[test]
    fn truncated_at_every_length() {
        for len in 0..ARP_LEN {
            assert_eq!(
                ArpPacket::new_checked(&REQUEST[..len]).unwrap_err(),
                Error::Truncated
            );
        }
    }

    #[test]
    fn rejects_other_hardware_and_protocols() {
        for (at, v) in [(1, 6u8), (2, 0x86), (3, 0xdd), (4, 8), (5, 16)] {
            let mut b = REQUEST;
            b[at] = v;
            assert_eq!(
                ArpPacket::new_checked(&b[..]).unwrap_err(),
                Error::BadHeader,
                "byte {at}"
            );
        }
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..40)) {
            if let Ok(p) = ArpPacket::new_checked(&data[..]) {
                let _ = (p.operation(), p.sender_hw(), p.sender_ip(), p.target_hw(), p.target_ip());
            }
        }

        #[test]
        fn arbitrary_tail_never_panics(tail in proptest::collection::vec(any::<u8>(), 0..30)) {
            // Valid fixed part, arbitrary rest: exercises the accessors on accepted packets.
            let mut data = REQUEST[..8].to_vec();
            data.extend_from_slice(&tail);
            match ArpPacket::new_checked(&data[..]) {
                Ok(p) => {
                    prop_assert!(data.len() >= ARP_LEN);
                    let _ = (p.operation(), p.sender_hw(), p.sender_ip(), p.target_hw(), p.target_ip());
                }
                Err(e) => prop_assert_eq!(e, Error::Truncated),
            }
        }

        #[test]
        fn setters_roundtrip(
            op in any::<u16>(),
            sha in any::<[u8; 6]>(),
            spa in any::<[u8; 4]>(),
            tha in any::<[u8; 6]>(),
            tpa in any::<[u8; 4]>(),
        ) {
            let mut b = REQUEST;
            let mut p = ArpPacket::new_checked(&mut b[..]).unwrap();
            p.set_operation(op);
            p.set_sender_hw(EthernetAddress(sha));
            p.set_sender_ip(Ipv4Addr::from(spa));
            p.set_target_hw(EthernetAddress(tha));
            p.set_target_ip(Ipv4Addr::from(tpa));
            let p = ArpPacket::new_checked(&b[..]).unwrap();
            prop_assert_eq!(p.operation(), op);
            prop_assert_eq!(p.sender_hw(), EthernetAddress(sha));
            prop_assert_eq!(p.sender_ip(), Ipv4Addr::from(spa));
            prop_assert_eq!(p.target_hw(), EthernetAddress(tha));
            prop_assert_eq!(p.target_ip(), Ipv4Addr::from(tpa));
        }
    }
}

#[cfg(test)]
mod repr_tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn emits_known_bytes() {
        let repr = ArpRepr {
            operation: ARP_REQUEST,
            sender_hw: EthernetAddress([0x02, 0, 0, 0, 0x01, 0x01]),
            sender_ip: Ipv4Addr::new(198, 18, 0, 1),
            target_hw: EthernetAddress::default(),
            target_ip: Ipv4Addr::new(198, 18, 0, 254),
        };
        let mut buf = [0xaa; ARP_LEN];
        repr.emit(&mut ArpPacket::new_unchecked(&mut buf[..]));
        #[rustfmt::skip]
        let expected = [
            0, 1, 0x08, 0x00, 6, 4, 0, 1,
            2, 0, 0, 0, 1, 1, 198, 18, 0, 1,
            0, 0, 0, 0, 0, 0, 198, 18, 0, 254,
        ];
        assert_eq!(buf, expected);
    }

    proptest! {
        #[test]
        fn round_trip(op in any::<u16>(), sha in any::<[u8; 6]>(), spa in any::<u32>(), tha in any::<[u8; 6]>(), tpa in any::<u32>()) {
            let repr = ArpRepr {
                operation: op,
                sender_hw: EthernetAddress(sha),
                sender_ip: Ipv4Addr::from(spa),
                target_hw: EthernetAddress(tha),
                target_ip: Ipv4Addr::from(tpa),
            };
            let mut buf = vec![0u8; repr.buffer_len()];
            repr.emit(&mut ArpPacket::new_unchecked(&mut buf[..]));
            prop_assert_eq!(ArpRepr::parse(&ArpPacket::new_checked(&buf[..]).unwrap()).unwrap(), repr);
        }
    }
}
