//! Zero-copy header views over byte buffers.
//!
//! Every view follows the same contract (after smoltcp's `wire`): `new_checked(buffer)` validates
//! that the buffer is long enough for every field an accessor may read, after which no accessor
//! can panic or read past the buffer. Views over `T: AsMut<[u8]>` also offer setters. Nothing here
//! knows about services, affinity or NAT.

pub mod arp;
pub mod checksum;
pub mod dtls;
pub mod esp;
pub mod ethernet;
pub mod icmp;
pub mod icmpv6;
pub mod ike;
pub mod ipv4;
pub mod ipv6;
pub mod tcp;
pub mod tls;
pub mod udp;
pub mod vrrp;

/// Why a buffer could not be viewed as a header.
///
/// The variants are deliberately coarse: the pipeline maps them onto its drop reasons
/// (`truncated`, `bad-header`, `bad-length`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Error {
    /// The buffer ends before the header (or a length the header declares) does.
    Truncated,
    /// A field holds a value the protocol does not allow (version, header length, type).
    BadHeader,
    /// A length field disagrees with the buffer or with another length field.
    BadLength,
}

impl core::fmt::Display for Error {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            Error::Truncated => "truncated",
            Error::BadHeader => "bad header",
            Error::BadLength => "bad length",
        })
    }
}

impl std::error::Error for Error {}

pub type Result<T> = core::result::Result<T, Error>;

/// IP protocol numbers the dataplane cares about.
pub mod ip_proto {
    pub const HOPOPT: u8 = 0;
    pub const ICMP: u8 = 1;
    pub const TCP: u8 = 6;
    pub const UDP: u8 = 17;
    pub const IPV6_ROUTE: u8 = 43;
    pub const IPV6_FRAG: u8 = 44;
    pub const ESP: u8 = 50;
    pub const AH: u8 = 51;
    pub const ICMPV6: u8 = 58;
    pub const IPV6_NONXT: u8 = 59;
    pub const IPV6_OPTS: u8 = 60;
    pub const VRRP: u8 = 112;
}

/// Big-endian field helpers. Callers index only ranges that `new_checked` has validated.
#[inline]
pub(crate) fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

#[inline]
pub(crate) fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

#[inline]
pub(crate) fn set_be16(b: &mut [u8], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_be_bytes());
}

#[inline]
pub(crate) fn set_be32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_be_bytes());
}
