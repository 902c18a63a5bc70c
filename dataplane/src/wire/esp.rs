//! IPsec ESP (RFC 4303), directly over IP (protocol 50) or UDP-encapsulated (RFC 3948).
//!
//! ```text
//!  0                               31
//! +---------------------------------+
//! | Security Parameters Index (SPI) |
//! +---------------------------------+
//! |         sequence number         |
//! +---------------------------------+
//! |  encrypted payload, padding,    |
//! |  next header, ICV ...           |
//! ```
//!
//! Only the cleartext header is of interest to the load balancer: the SPI identifies the SA.

use super::{be32, Error, Result};

/// Length of the cleartext ESP header (SPI and sequence number).
pub const ESP_HEADER_LEN: usize = 8;

mod field {
    pub const SPI: usize = 0;
    pub const SEQ: usize = 4;
}

/// A read-only view of an ESP packet's cleartext header.
#[derive(Debug, Clone)]
pub struct EspPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> EspPacket<T> {
    /// Wraps `buffer` without validation. Accessors may panic unless `buffer` passed
    /// [`new_checked`](Self::new_checked) before.
    pub const fn new_unchecked(buffer: T) -> Self {
        EspPacket { buffer }
    }

    /// Wraps `buffer` after checking it holds the 8-byte header (else `Truncated`).
    pub fn new_checked(buffer: T) -> Result<Self> {
        if buffer.as_ref().len() < ESP_HEADER_LEN {
            return Err(Error::Truncated);
        }
        Ok(EspPacket { buffer })
    }

    /// Returns the underlying buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// Security Parameters Index. 0 is reserved; in UDP encapsulation a zero "SPI" is the
    /// non-ESP marker of IKE (RFC 3948 §2.2), which the caller distinguishes.
    pub fn spi(&self) -> u32 {
        be32(self.buffer.as_ref(), field::SPI)
    }

    /// Sequence number (low 32 bits).
    pub fn sequence_number(&self) -> u32 {
        be32(self.buffer.as_ref(), field::SEQ)
    }

    /// The encrypted remainder (payload, padding, trailer and ICV).
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[ESP_HEADER_LEN..]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// SPI 0xc0ffee01, sequence 42, then 8 bytes of ciphertext.
    const ESP: [u8; 16] = [
        0xc0, 0xff, 0xee, 0x01, 0x00, 0x00, 0x00, 0x2a, 1, 2, 3, 4, 5, 6, 7, 8,
    ];

    #[test]
    fn parses_header() {
        let p = EspPacket::new_checked(&ESP[..]).unwrap();
        assert_eq!(p.spi(), 0xc0ff_ee01);
        assert_eq!(p.sequence_number(), 42);
        assert_eq!(p.payload(), &[1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(p.into_inner().len(), 16);
    }

    #[test]
    fn truncated_at_every_length() {
        for len in 0..ESP_HEADER_LEN {
            assert_eq!(
                EspPacket::new_checked(&ESP[..len]).unwrap_err(),
                Error::Truncated
            );
        }
        assert!(EspPacket::new_checked(&ESP[..8])
            .unwrap()
            .payload()
            .is_empty());
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..24)) {
            if let Ok(p) = EspPacket::new_checked(&data[..]) {
                prop_assert_eq!(p.spi().to_be_bytes(), [data[0], data[1], data[2], data[3]]);
                prop_assert_eq!(p.sequence_number().to_be_bytes(), [data[4], data[5], data[6], data[7]]);
                prop_assert_eq!(p.payload(), &data[8..]);
            } else {
                prop_assert!(data.len() < 8);
            }
        }
    }
}
