//! VRRP version 3 messages (RFC 5798 §5), over IPv4 and IPv6.
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |Version| Type  | Virtual Rtr ID|   Priority    |Count IPvX Addr|
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |(rsvd) |     Max Adver Int     |          Checksum             |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                 IPvX Address(es) (4 or 16 bytes each)         |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ```
//!
//! Views are over the IP payload (protocol / next header 112). The message carries no family of
//! its own: the IP header says whether the addresses are 4 or 16 bytes, so the caller passes the
//! [`Family`] to [`VrrpPacket::new_checked`]. Unlike VRRPv2, the v3 checksum covers the IP
//! pseudo-header over IPv4 too (§5.2.8), which is what keepalived sends and checks.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::checksum;
use super::ethernet::EthernetAddress;
use super::{be16, ip_proto, set_be16, Error, Result};

/// Length of the fixed part (version .. checksum).
pub const HEADER_LEN: usize = 8;

/// The only version this module speaks.
pub const VERSION: u8 = 3;

/// The only message type RFC 5798 defines.
pub const TYPE_ADVERTISEMENT: u8 = 1;

/// The IPv4 multicast group adverts are sent to (RFC 5798 §5.1.1.2).
pub const VRRP_V4_GROUP: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 18);

/// The IPv6 multicast group adverts are sent to (RFC 5798 §5.1.2.2).
pub const VRRP_V6_GROUP: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 0x12);

/// The IPv4 TTL / IPv6 hop limit adverts are sent with and must arrive with (§5.1.1.3, §7.1):
/// a value a router would have decremented proves the sender is on-link.
pub const TTL: u8 = 255;

/// Priority a router sends when it stops being Master (§5.2.4).
pub const PRIORITY_STOP: u8 = 0;

/// Priority of the router that owns the virtual addresses (§5.2.4).
pub const PRIORITY_OWNER: u8 = 255;

/// Largest Max Adver Int the 12-bit field holds, in centiseconds (40.95 s).
pub const MAX_ADVER_INT: u16 = 0x0fff;

mod field {
    pub const VER_TYPE: usize = 0;
    pub const VRID: usize = 1;
    pub const PRIORITY: usize = 2;
    pub const COUNT: usize = 3;
    pub const RSVD_INTERVAL: usize = 4;
    pub const CHECKSUM: usize = 6;
    pub const ADDRS: usize = 8;
}

/// The address family of a VRRP message, which decides the size of its addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Family {
    /// IPv4: 4-byte addresses, IP protocol 112.
    Ipv4,
    /// IPv6: 16-byte addresses, next header 112.
    Ipv6,
}

impl Family {
    /// The family of `addr`.
    pub fn of(addr: &IpAddr) -> Family {
        match addr {
            IpAddr::V4(_) => Family::Ipv4,
            IpAddr::V6(_) => Family::Ipv6,
        }
    }

    /// Bytes per address in the message.
    pub const fn addr_len(self) -> usize {
        match self {
            Family::Ipv4 => 4,
            Family::Ipv6 => 16,
        }
    }

    /// The multicast group adverts of this family go to.
    pub const fn group(self) -> IpAddr {
        match self {
            Family::Ipv4 => IpAddr::V4(VRRP_V4_GROUP),
            Family::Ipv6 => IpAddr::V6(VRRP_V6_GROUP),
        }
    }
}

/// The virtual router MAC of `vrid` (RFC 5798 §7.3): `00:00:5e:00:01:VRID` for IPv4,
/// `00:00:5e:00:02:VRID` for IPv6.
pub fn virtual_mac(vrid: u8, v6: bool) -> EthernetAddress {
    EthernetAddress([0x00, 0x00, 0x5e, 0x00, if v6 { 0x02 } else { 0x01 }, vrid])
}

/// The EUI-64 link-local address of `mac` (RFC 4291 appendix A), as the kernel gives an
/// interface with that MAC.
pub fn link_local(mac: EthernetAddress) -> Ipv6Addr {
    let m = mac.0;
    Ipv6Addr::new(
        0xfe80,
        0,
        0,
        0,
        u16::from_be_bytes([m[0] ^ 0x02, m[1]]),
        u16::from_be_bytes([m[2], 0xff]),
        u16::from_be_bytes([0xfe, m[3]]),
        u16::from_be_bytes([m[4], m[5]]),
    )
}

/// The IPv6 virtual router's link-local address, the first address of its adverts (RFC 5798
/// §5.2.9): the link-local address of its virtual MAC, so both appliances of a pair (and a
/// keepalived configured with it) advertise the same list. `fe80::200:5eff:fe00:233` for VRID 51.
pub fn virtual_link_local(vrid: u8) -> Ipv6Addr {
    link_local(virtual_mac(vrid, true))
}

/// A read/write view of a VRRPv3 message.
///
/// A checked view holds exactly the fixed header and `count` addresses: keepalived drops
/// messages that are longer or shorter than their address count says, and so does this.
#[derive(Debug, Clone)]
pub struct VrrpPacket<T: AsRef<[u8]>> {
    buffer: T,
    family: Family,
}

impl<T: AsRef<[u8]>> VrrpPacket<T> {
    /// Wraps `buffer` without validation. Accessors may panic unless `buffer` passed
    /// [`new_checked`](Self::new_checked) before.
    pub const fn new_unchecked(buffer: T, family: Family) -> Self {
        VrrpPacket { buffer, family }
    }

    /// Wraps `buffer` (the whole IP payload) after validating it for `family`.
    ///
    /// `Truncated` if it is shorter than 8 bytes or than the addresses `count` announces;
    /// `BadHeader` for a version other than 3; `BadLength` if bytes follow the last address.
    /// The type, checksum and field values are left to the caller: they are protocol
    /// decisions, not framing.
    pub fn new_checked(buffer: T, family: Family) -> Result<Self> {
        let b = buffer.as_ref();
        if b.len() < HEADER_LEN {
            return Err(Error::Truncated);
        }
        if b[field::VER_TYPE] >> 4 != VERSION {
            return Err(Error::BadHeader);
        }
        // At most 8 + 255 * 16 = 4088: no overflow.
        let want = HEADER_LEN + usize::from(b[field::COUNT]) * family.addr_len();
        if b.len() < want {
            return Err(Error::Truncated);
        }
        if b.len() > want {
            return Err(Error::BadLength);
        }
        Ok(VrrpPacket { buffer, family })
    }

    /// Returns the underlying buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// The family the view was checked for.
    pub fn family(&self) -> Family {
        self.family
    }

    /// Version (3 for a checked message).
    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[field::VER_TYPE] >> 4
    }

    /// Message type ([`TYPE_ADVERTISEMENT`] is the only one defined).
    pub fn msg_type(&self) -> u8 {
        self.buffer.as_ref()[field::VER_TYPE] & 0x0f
    }

    /// Virtual router identifier.
    pub fn vrid(&self) -> u8 {
        self.buffer.as_ref()[field::VRID]
    }

    /// Sender's priority (0: the Master is leaving, 255: the address owner).
    pub fn priority(&self) -> u8 {
        self.buffer.as_ref()[field::PRIORITY]
    }

    /// Number of addresses.
    pub fn count(&self) -> u8 {
        self.buffer.as_ref()[field::COUNT]
    }

    /// The 4 reserved bits before the interval (sent as 0, ignored on receipt).
    pub fn reserved(&self) -> u8 {
        self.buffer.as_ref()[field::RSVD_INTERVAL] >> 4
    }

    /// Max Adver Int: the advertisement interval in centiseconds (12 bits).
    pub fn max_adver_int(&self) -> u16 {
        be16(self.buffer.as_ref(), field::RSVD_INTERVAL) & MAX_ADVER_INT
    }

    /// Checksum field.
    pub fn checksum(&self) -> u16 {
        be16(self.buffer.as_ref(), field::CHECKSUM)
    }

    /// The raw address bytes (`count` × 4 or 16).
    pub fn address_bytes(&self) -> &[u8] {
        &self.buffer.as_ref()[field::ADDRS..]
    }

    /// The addresses, as the checked family's type.
    pub fn addresses(&self) -> impl Iterator<Item = IpAddr> + '_ {
        let family = self.family;
        self.address_bytes()
            .chunks_exact(family.addr_len())
            .map(move |a| match family {
                Family::Ipv4 => IpAddr::V4(Ipv4Addr::new(a[0], a[1], a[2], a[3])),
                Family::Ipv6 => {
                    IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(a).unwrap_or_default()))
                }
            })
    }

    /// The addresses of an IPv4 message; nothing for an IPv6 one.
    pub fn ipv4_addresses(&self) -> impl Iterator<Item = Ipv4Addr> + '_ {
        self.addresses().filter_map(|a| match a {
            IpAddr::V4(a) => Some(a),
            IpAddr::V6(_) => None,
        })
    }

    /// The addresses of an IPv6 message; nothing for an IPv4 one.
    pub fn ipv6_addresses(&self) -> impl Iterator<Item = Ipv6Addr> + '_ {
        self.addresses().filter_map(|a| match a {
            IpAddr::V6(a) => Some(a),
            IpAddr::V4(_) => None,
        })
    }

    /// Whether the checksum is valid over the pseudo-header of `src` and `dst` (the IP
    /// header's addresses) and the message. False when either address is not of the checked
    /// family: such a message cannot have been sent that way.
    pub fn verify_checksum(&self, src: IpAddr, dst: IpAddr) -> bool {
        match pseudo_header(self.family, src, dst, self.buffer.as_ref().len()) {
            Some(acc) => checksum::fold(checksum::sum(acc, self.buffer.as_ref())) == 0xffff,
            None => false,
        }
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> VrrpPacket<T> {
    /// Sets the priority (checksum not updated).
    pub fn set_priority(&mut self, priority: u8) {
        self.buffer.as_mut()[field::PRIORITY] = priority;
    }

    /// Sets the checksum field.
    pub fn set_checksum(&mut self, value: u16) {
        set_be16(self.buffer.as_mut(), field::CHECKSUM, value);
    }

    /// Computes and stores the checksum for a message from `src` to `dst`. `BadHeader` if
    /// either address is not of the checked family (the field is left alone then).
    pub fn fill_checksum(&mut self, src: IpAddr, dst: IpAddr) -> Result<()> {
        let len = self.buffer.as_ref().len();
        let acc = pseudo_header(self.family, src, dst, len).ok_or(Error::BadHeader)?;
        self.set_checksum(0);
        let c = !checksum::fold(checksum::sum(acc, self.buffer.as_ref()));
        self.set_checksum(c);
        Ok(())
    }
}

/// The pseudo-header sum for a VRRP message of `len` bytes, or `None` when `src` or `dst` is
/// not of `family`.
fn pseudo_header(family: Family, src: IpAddr, dst: IpAddr, len: usize) -> Option<u32> {
    match (family, src, dst) {
        // A checked message is at most 4088 bytes, so the casts cannot truncate.
        (Family::Ipv4, IpAddr::V4(s), IpAddr::V4(d)) => Some(checksum::pseudo_header_v4(
            s,
            d,
            ip_proto::VRRP,
            u16::try_from(len).unwrap_or(u16::MAX),
        )),
        (Family::Ipv6, IpAddr::V6(s), IpAddr::V6(d)) => Some(checksum::pseudo_header_v6(
            &s,
            &d,
            ip_proto::VRRP,
            u32::try_from(len).unwrap_or(u32::MAX),
        )),
        _ => None,
    }
}

/// Builds an advertisement (the VRRP message only, not the IP header) with its checksum.
///
/// `interval_cs` is Max Adver Int in centiseconds; `addrs` are the virtual addresses, all of
/// the family of `src` and `dst`. `BadHeader` when the families disagree or the interval does
/// not fit 12 bits, `BadLength` for more than 255 addresses: the message could not say what
/// was asked, and sending something else would make peers disagree silently.
pub fn emit_advert(
    vrid: u8,
    priority: u8,
    interval_cs: u16,
    addrs: &[IpAddr],
    src: IpAddr,
    dst: IpAddr,
) -> Result<Vec<u8>> {
    let repr = VrrpRepr {
        vrid,
        priority,
        max_adver_int: interval_cs,
        addresses: addrs.to_vec(),
    };
    let family = repr.check(src, dst)?;
    let mut out = vec![0; repr.buffer_len(family)];
    repr.emit(
        &mut VrrpPacket::new_unchecked(&mut out[..], family),
        src,
        dst,
    )?;
    Ok(out)
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> VrrpPacket<T> {
    /// Sets version 3 and the message type.
    pub fn set_version_type(&mut self, msg_type: u8) {
        self.buffer.as_mut()[field::VER_TYPE] = (VERSION << 4) | (msg_type & 0x0f);
    }

    /// Sets the virtual router identifier (checksum not updated).
    pub fn set_vrid(&mut self, vrid: u8) {
        self.buffer.as_mut()[field::VRID] = vrid;
    }

    /// Sets the address count (checksum not updated).
    pub fn set_count(&mut self, count: u8) {
        self.buffer.as_mut()[field::COUNT] = count;
    }

    /// Sets Max Adver Int (its low 12 bits) with the reserved bits 0 (checksum not updated).
    pub fn set_max_adver_int(&mut self, interval_cs: u16) {
        set_be16(
            self.buffer.as_mut(),
            field::RSVD_INTERVAL,
            interval_cs & MAX_ADVER_INT,
        );
    }

    /// The raw address bytes, writable.
    pub fn address_bytes_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[field::ADDRS..]
    }
}

/// The high-level form of a VRRPv3 advertisement (RFC 5798 §5.2).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct VrrpRepr {
    pub vrid: u8,
    pub priority: u8,
    /// Max Adver Int in centiseconds (at most [`MAX_ADVER_INT`]).
    pub max_adver_int: u16,
    /// The virtual addresses, all of one family (at most 255).
    pub addresses: Vec<IpAddr>,
}

impl VrrpRepr {
    /// Reads a checked advertisement (`BadHeader` for another message type; the checksum is the
    /// caller's, with [`VrrpPacket::verify_checksum`]).
    pub fn parse<T: AsRef<[u8]>>(packet: &VrrpPacket<T>) -> Result<VrrpRepr> {
        if packet.msg_type() != TYPE_ADVERTISEMENT {
            return Err(Error::BadHeader);
        }
        Ok(VrrpRepr {
            vrid: packet.vrid(),
            priority: packet.priority(),
            max_adver_int: packet.max_adver_int(),
            addresses: packet.addresses().collect(),
        })
    }

    /// The message's length for `family`: 8 bytes and the addresses.
    pub fn buffer_len(&self, family: Family) -> usize {
        HEADER_LEN + self.addresses.len() * family.addr_len()
    }

    /// The family of a message from `src` to `dst`: `BadHeader` when the addresses' families
    /// disagree or the interval does not fit 12 bits, `BadLength` for more than 255 addresses.
    /// The message could not say what was asked, and sending something else would make peers
    /// disagree silently.
    pub fn check(&self, src: IpAddr, dst: IpAddr) -> Result<Family> {
        let family = Family::of(&src);
        if Family::of(&dst) != family || self.addresses.iter().any(|a| Family::of(a) != family) {
            return Err(Error::BadHeader);
        }
        if self.max_adver_int > MAX_ADVER_INT {
            return Err(Error::BadHeader);
        }
        if self.addresses.len() > usize::from(u8::MAX) {
            return Err(Error::BadLength);
        }
        Ok(family)
    }

    /// Writes the advertisement from `src` to `dst` through the view's setters, checksum
    /// included. The view's buffer must be exactly [`buffer_len`](Self::buffer_len) bytes of
    /// the view's family. Errors as [`check`](Self::check), with nothing written.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(
        &self,
        packet: &mut VrrpPacket<T>,
        src: IpAddr,
        dst: IpAddr,
    ) -> Result<()> {
        let family = self.check(src, dst)?;
        if family != packet.family() {
            return Err(Error::BadHeader);
        }
        packet.set_version_type(TYPE_ADVERTISEMENT);
        packet.set_vrid(self.vrid);
        packet.set_priority(self.priority);
        // check() keeps the count below 256.
        packet.set_count(u8::try_from(self.addresses.len()).unwrap_or(u8::MAX));
        packet.set_max_adver_int(self.max_adver_int);
        let bytes = packet.address_bytes_mut();
        for (slot, a) in bytes
            .chunks_exact_mut(family.addr_len())
            .zip(&self.addresses)
        {
            match a {
                IpAddr::V4(a) => slot.copy_from_slice(&a.octets()),
                IpAddr::V6(a) => slot.copy_from_slice(&a.octets()),
            }
        }
        packet.fill_checksum(src, dst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const A_V4: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 2);
    const A_V6: Ipv6Addr = Ipv6Addr::new(0xfe80, 0, 0, 0, 0x0200, 0x00ff, 0xfe00, 0x0202);

    /// Generated by scapy 2.5.0 (Debian bookworm):
    /// `IP(src="198.19.0.2", dst="224.0.0.18", ttl=255)/VRRPv3(vrid=51, priority=200, adv=100,
    /// addrlist=["198.19.0.1", "198.18.0.100"])`, the bytes after the IP header.
    const ADVERT_V4: [u8; 16] = [
        0x31, 0x33, 0xc8, 0x02, 0x00, 0x64, 0xd3, 0x31, 198, 19, 0, 1, 198, 18, 0, 100,
    ];

    /// Generated by scapy 2.5.0: `IPv6(src="fe80::200:ff:fe00:202", dst="ff02::12",
    /// hlim=255)/VRRPv3(vrid=51, priority=100, adv=100, addrlist=["fe80::1", "2001:2:0:1::100"])`.
    const ADVERT_V6: [u8; 40] = [
        0x31, 0x33, 0x64, 0x02, 0x00, 0x64, 0x49, 0xb0, //
        0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01, //
        0x20, 0x01, 0x00, 0x02, 0x00, 0x00, 0x00, 0x01, 0, 0, 0, 0, 0, 0, 0x01, 0x00,
    ];

    fn v4_addrs() -> Vec<IpAddr> {
        vec![
            IpAddr::V4(Ipv4Addr::new(198, 19, 0, 1)),
            IpAddr::V4(Ipv4Addr::new(198, 18, 0, 100)),
        ]
    }

    fn v6_addrs() -> Vec<IpAddr> {
        vec![
            "fe80::1".parse().unwrap(),
            "2001:2:0:1::100".parse().unwrap(),
        ]
    }

    /// The one's-complement checksum written out the way RFC 1071 and RFC 5798 §5.2.8 state
    /// it, independent of `checksum.rs`: pseudo-header bytes, then the message with a zero
    /// checksum field, summed as 16-bit words with end-around carry.
    fn reference_checksum(src: &[u8], dst: &[u8], msg: &[u8]) -> u16 {
        let mut bytes = Vec::new();
        bytes.extend_from_slice(src);
        bytes.extend_from_slice(dst);
        if src.len() == 4 {
            // zero, protocol, 16-bit length (RFC 768 layout).
            bytes.extend_from_slice(&[0, 112]);
            bytes.extend_from_slice(&(msg.len() as u16).to_be_bytes());
        } else {
            // 32-bit length, three zero bytes, next header (RFC 8200 §8.1).
            bytes.extend_from_slice(&(msg.len() as u32).to_be_bytes());
            bytes.extend_from_slice(&[0, 0, 0, 112]);
        }
        let mut m = msg.to_vec();
        m[6] = 0;
        m[7] = 0;
        bytes.extend_from_slice(&m);
        let mut s: u32 = 0;
        for w in bytes.chunks(2) {
            s += (u32::from(w[0]) << 8) | u32::from(*w.get(1).unwrap_or(&0));
            s = (s & 0xffff) + (s >> 16);
        }
        !(s as u16)
    }

    #[test]
    fn constants() {
        assert_eq!(VRRP_V4_GROUP.to_string(), "224.0.0.18");
        assert_eq!(VRRP_V6_GROUP.to_string(), "ff02::12");
        assert_eq!(VERSION, 3);
        assert_eq!(TYPE_ADVERTISEMENT, 1);
        assert_eq!(virtual_mac(51, false).to_string(), "00:00:5e:00:01:33");
        assert_eq!(virtual_mac(51, true).to_string(), "00:00:5e:00:02:33");
        assert_eq!(virtual_mac(255, false).to_string(), "00:00:5e:00:01:ff");
        assert!(virtual_mac(1, false).is_unicast());
        assert_eq!(Family::Ipv4.group(), IpAddr::V4(VRRP_V4_GROUP));
        assert_eq!(Family::Ipv6.group(), IpAddr::V6(VRRP_V6_GROUP));
    }

    #[test]
    fn scapy_literals_have_the_reference_checksum() {
        // Two independent encoders (scapy, the RFC written out) agree before ours is involved.
        let c = reference_checksum(&A_V4.octets(), &VRRP_V4_GROUP.octets(), &ADVERT_V4);
        assert_eq!(c, 0xd331);
        let c = reference_checksum(&A_V6.octets(), &VRRP_V6_GROUP.octets(), &ADVERT_V6);
        assert_eq!(c, 0x49b0);
    }

    #[test]
    fn parses_known_v4_advert() {
        let p = VrrpPacket::new_checked(&ADVERT_V4[..], Family::Ipv4).unwrap();
        assert_eq!(p.family(), Family::Ipv4);
        assert_eq!(p.version(), 3);
        assert_eq!(p.msg_type(), TYPE_ADVERTISEMENT);
        assert_eq!(p.vrid(), 51);
        assert_eq!(p.priority(), 200);
        assert_eq!(p.count(), 2);
        assert_eq!(p.reserved(), 0);
        assert_eq!(p.max_adver_int(), 100);
        assert_eq!(p.checksum(), 0xd331);
        assert_eq!(p.addresses().collect::<Vec<_>>(), v4_addrs());
        assert_eq!(
            p.ipv4_addresses().collect::<Vec<_>>(),
            [Ipv4Addr::new(198, 19, 0, 1), Ipv4Addr::new(198, 18, 0, 100)]
        );
        assert_eq!(p.ipv6_addresses().count(), 0);
        assert_eq!(p.address_bytes(), &ADVERT_V4[8..]);
        let (src, dst) = (IpAddr::V4(A_V4), IpAddr::V4(VRRP_V4_GROUP));
        assert!(p.verify_checksum(src, dst));
        // The pseudo-header counts: another source or destination fails.
        assert!(!p.verify_checksum(IpAddr::V4(Ipv4Addr::new(198, 19, 0, 3)), dst));
        assert!(!p.verify_checksum(src, IpAddr::V4(Ipv4Addr::new(198, 19, 0, 3))));
        // VRRPv2-style checksum (no pseudo-header) is not accepted.
        assert_ne!(checksum::checksum(&ADVERT_V4), 0);
        // Wrong-family addresses never verify.
        assert!(!p.verify_checksum(IpAddr::V6(A_V6), IpAddr::V6(VRRP_V6_GROUP)));
        assert!(!p.verify_checksum(src, IpAddr::V6(VRRP_V6_GROUP)));
    }

    #[test]
    fn parses_known_v6_advert() {
        let p = VrrpPacket::new_checked(&ADVERT_V6[..], Family::Ipv6).unwrap();
        assert_eq!(p.vrid(), 51);
        assert_eq!(p.priority(), 100);
        assert_eq!(p.count(), 2);
        assert_eq!(p.max_adver_int(), 100);
        assert_eq!(p.checksum(), 0x49b0);
        assert_eq!(p.addresses().collect::<Vec<_>>(), v6_addrs());
        assert_eq!(p.ipv4_addresses().count(), 0);
        assert_eq!(p.ipv6_addresses().count(), 2);
        assert!(p.verify_checksum(IpAddr::V6(A_V6), IpAddr::V6(VRRP_V6_GROUP)));
        assert!(!p.verify_checksum(IpAddr::V6(Ipv6Addr::LOCALHOST), IpAddr::V6(VRRP_V6_GROUP)));
        assert!(!p.verify_checksum(IpAddr::V4(A_V4), IpAddr::V4(VRRP_V4_GROUP)));
    }

    #[test]
    fn emits_known_adverts() {
        let v4 = emit_advert(
            51,
            200,
            100,
            &v4_addrs(),
            IpAddr::V4(A_V4),
            IpAddr::V4(VRRP_V4_GROUP),
        )
        .unwrap();
        assert_eq!(v4, ADVERT_V4);
        let v6 = emit_advert(
            51,
            100,
            100,
            &v6_addrs(),
            IpAddr::V6(A_V6),
            IpAddr::V6(VRRP_V6_GROUP),
        )
        .unwrap();
        assert_eq!(v6, ADVERT_V6);
    }

    #[test]
    fn hand_built_single_address_advert() {
        // RFC 5798 §5.1 layout by hand: vrid 51, priority 200, one address, 100 cs, from the
        // lab's appliance A to the group; checksum from the reference implementation above.
        let mut want = vec![0x31, 51, 200, 1, 0x00, 100, 0, 0, 198, 18, 0, 100];
        let c = reference_checksum(&A_V4.octets(), &VRRP_V4_GROUP.octets(), &want);
        want[6..8].copy_from_slice(&c.to_be_bytes());
        let got = emit_advert(
            51,
            200,
            100,
            &[IpAddr::V4(Ipv4Addr::new(198, 18, 0, 100))],
            IpAddr::V4(A_V4),
            IpAddr::V4(VRRP_V4_GROUP),
        )
        .unwrap();
        assert_eq!(got, want);
        // Priority 0 (the Master leaving) and the largest interval, 40.95 s.
        let mut want = vec![0x31, 51, 0, 1, 0x0f, 0xff, 0, 0, 198, 18, 0, 100];
        let c = reference_checksum(&A_V4.octets(), &VRRP_V4_GROUP.octets(), &want);
        want[6..8].copy_from_slice(&c.to_be_bytes());
        let got = emit_advert(
            51,
            0,
            MAX_ADVER_INT,
            &[IpAddr::V4(Ipv4Addr::new(198, 18, 0, 100))],
            IpAddr::V4(A_V4),
            IpAddr::V4(VRRP_V4_GROUP),
        )
        .unwrap();
        assert_eq!(got, want);
    }

    #[test]
    fn emit_rejects_what_it_cannot_encode() {
        let s4 = IpAddr::V4(A_V4);
        let g4 = IpAddr::V4(VRRP_V4_GROUP);
        let s6 = IpAddr::V6(A_V6);
        let g6 = IpAddr::V6(VRRP_V6_GROUP);
        assert_eq!(
            emit_advert(1, 100, 100, &v6_addrs(), s4, g4),
            Err(Error::BadHeader)
        );
        assert_eq!(
            emit_advert(1, 100, 100, &v4_addrs(), s4, g6),
            Err(Error::BadHeader)
        );
        assert_eq!(
            emit_advert(1, 100, 100, &v4_addrs(), s6, g6),
            Err(Error::BadHeader)
        );
        let mut mixed = v4_addrs();
        mixed.push(v6_addrs()[0]);
        assert_eq!(
            emit_advert(1, 100, 100, &mixed, s4, g4),
            Err(Error::BadHeader)
        );
        assert_eq!(
            emit_advert(1, 100, MAX_ADVER_INT + 1, &v4_addrs(), s4, g4),
            Err(Error::BadHeader)
        );
        let many: Vec<IpAddr> = (0..256u32)
            .map(|i| IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i)))
            .collect();
        assert_eq!(
            emit_advert(1, 100, 100, &many, s4, g4),
            Err(Error::BadLength)
        );
        // 255 addresses is the most the count byte holds.
        let m = emit_advert(1, 100, 100, &many[..255], s4, g4).unwrap();
        assert_eq!(m.len(), 8 + 255 * 4);
        let p = VrrpPacket::new_checked(&m[..], Family::Ipv4).unwrap();
        assert_eq!(p.count(), 255);
        assert!(p.verify_checksum(s4, g4));
        // No addresses: framing allows it (the count is consistent), RFC 5798's minimum of
        // one is the state machine's business.
        let m = emit_advert(1, 100, 100, &[], s6, g6).unwrap();
        assert_eq!(m.len(), 8);
        assert!(VrrpPacket::new_checked(&m[..], Family::Ipv6)
            .unwrap()
            .verify_checksum(s6, g6));
    }

    #[test]
    fn truncated_at_every_length() {
        for len in 0..ADVERT_V4.len() {
            assert_eq!(
                VrrpPacket::new_checked(&ADVERT_V4[..len], Family::Ipv4).unwrap_err(),
                Error::Truncated,
                "v4 len {len}"
            );
        }
        for len in 0..ADVERT_V6.len() {
            assert_eq!(
                VrrpPacket::new_checked(&ADVERT_V6[..len], Family::Ipv6).unwrap_err(),
                Error::Truncated,
                "v6 len {len}"
            );
        }
        // The v4 message read as IPv6: two 16-byte addresses do not fit in 8 bytes.
        assert_eq!(
            VrrpPacket::new_checked(&ADVERT_V4[..], Family::Ipv6).unwrap_err(),
            Error::Truncated
        );
    }

    #[test]
    fn trailing_bytes_and_counts() {
        let mut long = ADVERT_V4.to_vec();
        long.push(0);
        assert_eq!(
            VrrpPacket::new_checked(&long[..], Family::Ipv4).unwrap_err(),
            Error::BadLength
        );
        // The v6 message read as IPv4: 2 addresses of 4 bytes, 24 bytes too many.
        assert_eq!(
            VrrpPacket::new_checked(&ADVERT_V6[..], Family::Ipv4).unwrap_err(),
            Error::BadLength
        );
        for count in 0..=255u8 {
            let mut m = ADVERT_V4;
            m[3] = count;
            let r = VrrpPacket::new_checked(&m[..], Family::Ipv4);
            match count {
                0 | 1 => assert_eq!(r.unwrap_err(), Error::BadLength, "count {count}"),
                2 => assert!(r.is_ok()),
                _ => assert_eq!(r.unwrap_err(), Error::Truncated, "count {count}"),
            }
        }
        let mut m = ADVERT_V4;
        m[3] = 0;
        let p = VrrpPacket::new_checked(&m[..8], Family::Ipv4).unwrap();
        assert_eq!(p.addresses().count(), 0);
    }

    #[test]
    fn bad_versions() {
        for v in 0..16u8 {
            let mut m = ADVERT_V4;
            m[0] = (v << 4) | 1;
            let r = VrrpPacket::new_checked(&m[..], Family::Ipv4);
            if v == 3 {
                assert!(r.is_ok());
            } else {
                assert_eq!(r.unwrap_err(), Error::BadHeader, "version {v}");
            }
        }
        // VRRPv2 (version 2, auth type and 1-second interval where v3 has the interval) is
        // rejected even with an 8-byte authentication trailer that v2 carries.
        let mut v2 = vec![0x21, 51, 100, 1, 0, 1, 0, 0, 198, 18, 0, 100];
        v2.extend_from_slice(&[0; 8]);
        assert_eq!(
            VrrpPacket::new_checked(&v2[..], Family::Ipv4).unwrap_err(),
            Error::BadHeader
        );
    }

    #[test]
    fn other_fields_pass_framing() {
        // Type, reserved bits and every value of the interval are read as sent; checking
        // them is the receiver's decision.
        let mut m = ADVERT_V4;
        m[0] = 0x3f;
        m[4] = 0xf0;
        m[5] = 0x00;
        let p = VrrpPacket::new_checked(&m[..], Family::Ipv4).unwrap();
        assert_eq!(p.msg_type(), 0x0f);
        assert_eq!(p.reserved(), 0x0f);
        assert_eq!(p.max_adver_int(), 0);
        m[4] = 0xff;
        m[5] = 0xff;
        let p = VrrpPacket::new_checked(&m[..], Family::Ipv4).unwrap();
        assert_eq!(p.max_adver_int(), MAX_ADVER_INT);
        // A flipped bit anywhere breaks the checksum.
        for i in 0..ADVERT_V4.len() {
            for bit in 0..8 {
                let mut m = ADVERT_V4;
                m[i] ^= 1 << bit;
                if let Ok(p) = VrrpPacket::new_checked(&m[..], Family::Ipv4) {
                    assert!(
                        !p.verify_checksum(IpAddr::V4(A_V4), IpAddr::V4(VRRP_V4_GROUP)),
                        "byte {i} bit {bit}"
                    );
                }
            }
        }
    }

    #[test]
    fn setters() {
        let mut m = ADVERT_V4;
        let (src, dst) = (IpAddr::V4(A_V4), IpAddr::V4(VRRP_V4_GROUP));
        let mut p = VrrpPacket::new_checked(&mut m[..], Family::Ipv4).unwrap();
        p.set_priority(0);
        assert!(!p.verify_checksum(src, dst));
        p.fill_checksum(src, dst).unwrap();
        assert!(p.verify_checksum(src, dst));
        assert_eq!(p.priority(), 0);
        assert_eq!(
            p.fill_checksum(IpAddr::V6(A_V6), dst),
            Err(Error::BadHeader)
        );
        let c = p.checksum();
        p.set_checksum(c ^ 1);
        assert!(!p.verify_checksum(src, dst));
        let inner = p.into_inner();
        let want = emit_advert(51, 0, 100, &v4_addrs(), src, dst).unwrap();
        assert_eq!(inner[..6], want[..6]);
    }

    fn arb_family() -> impl Strategy<Value = Family> {
        prop_oneof![Just(Family::Ipv4), Just(Family::Ipv6)]
    }

    fn addr_of(family: Family, bytes: [u8; 16]) -> IpAddr {
        match family {
            Family::Ipv4 => IpAddr::V4(Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3])),
            Family::Ipv6 => IpAddr::V6(Ipv6Addr::from(bytes)),
        }
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(
            mut data in proptest::collection::vec(any::<u8>(), 0..600),
            family in arb_family(),
            make_valid in any::<bool>(),
            src in any::<[u8; 16]>(),
            dst in any::<[u8; 16]>(),
        ) {
            // Half the cases get a consistent version and count, so the accessors see them.
            if make_valid && data.len() >= HEADER_LEN {
                data[0] = (data[0] & 0x0f) | 0x30;
                let n = (data.len() - HEADER_LEN) / family.addr_len();
                let n = n.min(255);
                data[3] = n as u8;
                data.truncate(HEADER_LEN + n * family.addr_len());
                prop_assert!(VrrpPacket::new_checked(&data[..], family).is_ok());
            }
            if let Ok(p) = VrrpPacket::new_checked(&data[..], family) {
                prop_assert_eq!(p.version(), 3);
                prop_assert_eq!(p.addresses().count(), usize::from(p.count()));
                prop_assert_eq!(
                    data.len(),
                    HEADER_LEN + usize::from(p.count()) * family.addr_len()
                );
                prop_assert!(p.max_adver_int() <= MAX_ADVER_INT);
                let _ = (p.msg_type(), p.vrid(), p.priority(), p.reserved(), p.checksum());
                let _ = (p.ipv4_addresses().count(), p.ipv6_addresses().count());
                for f in [Family::Ipv4, Family::Ipv6] {
                    let _ = p.verify_checksum(addr_of(f, src), addr_of(family, dst));
                }
            }
        }

        #[test]
        fn round_trip(
            family in arb_family(),
            vrid in any::<u8>(),
            priority in any::<u8>(),
            interval in 0..=MAX_ADVER_INT,
            raw in proptest::collection::vec(any::<[u8; 16]>(), 0..20),
            src in any::<[u8; 16]>(),
            dst in any::<[u8; 16]>(),
        ) {
            let addrs: Vec<IpAddr> = raw.iter().map(|b| addr_of(family, *b)).collect();
            let (src, dst) = (addr_of(family, src), addr_of(family, dst));
            let m = emit_advert(vrid, priority, interval, &addrs, src, dst).unwrap();
            let p = VrrpPacket::new_checked(&m[..], family).unwrap();
            prop_assert_eq!(p.version(), VERSION);
            prop_assert_eq!(p.msg_type(), TYPE_ADVERTISEMENT);
            prop_assert_eq!(p.vrid(), vrid);
            prop_assert_eq!(p.priority(), priority);
            prop_assert_eq!(usize::from(p.count()), addrs.len());
            prop_assert_eq!(p.reserved(), 0);
            prop_assert_eq!(p.max_adver_int(), interval);
            prop_assert_eq!(p.addresses().collect::<Vec<_>>(), addrs);
            prop_assert!(p.verify_checksum(src, dst));
            let (s, d) = match (src, dst) {
                (IpAddr::V4(s), IpAddr::V4(d)) => (s.octets().to_vec(), d.octets().to_vec()),
                (IpAddr::V6(s), IpAddr::V6(d)) => (s.octets().to_vec(), d.octets().to_vec()),
                _ => unreachable!(),
            };
            prop_assert_eq!(p.checksum(), reference_checksum(&s, &d, &m));
        }
    }
}

#[cfg(test)]
mod repr_tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn round_trip(
            vrid in any::<u8>(), priority in any::<u8>(), interval in 0u16..=MAX_ADVER_INT,
            v4 in proptest::collection::vec(any::<u32>(), 0..8),
            v6 in proptest::collection::vec(any::<[u8; 16]>(), 0..8),
            six in any::<bool>(),
        ) {
            let (addresses, src, dst): (Vec<IpAddr>, IpAddr, IpAddr) = if six {
                (v6.into_iter().map(|a| IpAddr::V6(a.into())).collect(), "fe80::1".parse().unwrap(), IpAddr::V6(VRRP_V6_GROUP))
            } else {
                (v4.into_iter().map(|a| IpAddr::V4(a.into())).collect(), "198.19.0.2".parse().unwrap(), IpAddr::V4(VRRP_V4_GROUP))
            };
            let repr = VrrpRepr { vrid, priority, max_adver_int: interval, addresses };
            let family = Family::of(&src);
            let mut buf = vec![0xee; repr.buffer_len(family)];
            repr.emit(&mut VrrpPacket::new_unchecked(&mut buf[..], family), src, dst).unwrap();
            let p = VrrpPacket::new_checked(&buf[..], family).unwrap();
            prop_assert!(p.verify_checksum(src, dst));
            prop_assert_eq!(VrrpRepr::parse(&p).unwrap(), repr);
        }
    }
}
