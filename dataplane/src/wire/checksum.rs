//! The Internet checksum (RFC 1071) and its incremental update (RFC 1624).
//!
//! Sums are carried as `u32` accumulators of 16-bit big-endian words and folded once at the end,
//! so partial sums (pseudo-header + payload) can be combined cheaply.

use std::net::{Ipv4Addr, Ipv6Addr};

/// Adds `data` as big-endian 16-bit words to `acc`; an odd trailing byte is padded with zero.
#[inline]
pub fn sum(mut acc: u32, data: &[u8]) -> u32 {
    let mut chunks = data.chunks_exact(2);
    for c in &mut chunks {
        acc = acc.wrapping_add(u32::from(u16::from_be_bytes([c[0], c[1]])));
        // Fold early enough that the accumulator never overflows on jumbo frames.
        if acc & 0x8000_0000 != 0 {
            acc = (acc & 0xffff) + (acc >> 16);
        }
    }
    if let [last] = chunks.remainder() {
        acc = acc.wrapping_add(u32::from(*last) << 8);
    }
    acc
}

/// Folds an accumulator to 16 bits (without complementing).
#[inline]
pub fn fold(mut acc: u32) -> u16 {
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    acc as u16
}

/// The checksum field value for `data` (one's complement of the folded sum).
#[inline]
pub fn checksum(data: &[u8]) -> u16 {
    !fold(sum(0, data))
}

/// Pseudo-header sum for TCP/UDP over IPv4 (RFC 793 / RFC 768).
#[inline]
pub fn pseudo_header_v4(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, l4_len: u16) -> u32 {
    let mut acc = sum(0, &src.octets());
    acc = sum(acc, &dst.octets());
    acc + u32::from(proto) + u32::from(l4_len)
}

/// Pseudo-header sum for upper-layer protocols over IPv6 (RFC 8200 §8.1).
#[inline]
pub fn pseudo_header_v6(src: &Ipv6Addr, dst: &Ipv6Addr, next_header: u8, l4_len: u32) -> u32 {
    let mut acc = sum(0, &src.octets());
    acc = sum(acc, &dst.octets());
    acc = acc.wrapping_add(l4_len >> 16).wrapping_add(l4_len & 0xffff);
    acc + u32::from(next_header)
}

/// RFC 1624 eqn. 3: the new checksum field after one 16-bit word changes from `old` to `new`.
/// `HC' = ~(~HC + ~m + m')`
#[inline]
pub fn update16(csum: u16, old: u16, new: u16) -> u16 {
    let acc = u32::from(!csum) + u32::from(!old) + u32::from(new);
    !fold(acc)
}

/// RFC 1624 update for a changed run of bytes of even length (an address, say). `old` and `new`
/// must be the same length and start at an even offset within the checksummed data.
#[inline]
pub fn update_bytes(csum: u16, old: &[u8], new: &[u8]) -> u16 {
    debug_assert_eq!(old.len(), new.len());
    debug_assert_eq!(old.len() % 2, 0);
    let mut acc = u32::from(!csum);
    for (o, n) in old.chunks_exact(2).zip(new.chunks_exact(2)) {
        acc += u32::from(!u16::from_be_bytes([o[0], o[1]]));
        acc += u32::from(u16::from_be_bytes([n[0], n[1]]));
    }
    !fold(acc)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn rfc1071_example() {
        // RFC 1071 §3 example: words 0001 f203 f4f5 f6f7 sum to ddf2 (folded).
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(fold(sum(0, &data)), 0xddf2);
        assert_eq!(checksum(&data), !0xddf2);
    }

    #[test]
    fn ipv4_header_checksum_verifies_to_zero() {
        // A real IPv4 header (checksum 0xb861) from Wikipedia's worked example.
        let hdr = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0xb8, 0x61, 0xc0, 0xa8,
            0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7,
        ];
        assert_eq!(checksum(&hdr), 0);
        let mut zeroed = hdr;
        zeroed[10] = 0;
        zeroed[11] = 0;
        assert_eq!(checksum(&zeroed), 0xb861);
    }

    #[test]
    fn odd_length_pads_with_zero() {
        assert_eq!(fold(sum(0, &[0xab])), 0xab00);
    }

    proptest! {
        #[test]
        fn incremental_update_matches_recompute(
            mut data in proptest::collection::vec(any::<u8>(), 2..200usize),
            at in any::<prop::sample::Index>(),
            new in any::<[u8; 4]>(),
        ) {
            // Make room for a 4-byte field at an even offset.
            while data.len() < 4 { data.push(0); }
            let max_even = (data.len() - 4) / 2;
            let off = at.index(max_even + 1) * 2;
            let before = checksum(&data);
            let old: Vec<u8> = data[off..off + 4].to_vec();
            data[off..off + 4].copy_from_slice(&new);
            let updated = update_bytes(before, &old, &new);
            let recomputed = checksum(&data);
            // One's complement has two zeros (0x0000 and 0xffff); both verify.
            prop_assert!(updated == recomputed || (updated ^ recomputed) == 0xffff
                && (updated == 0 || updated == 0xffff));
            let w_old = u16::from_be_bytes([old[0], old[1]]);
            let w_new = u16::from_be_bytes([new[0], new[1]]);
            let mut d2 = data.clone();
            d2[off..off + 2].copy_from_slice(&old[0..2]);
            let c2 = checksum(&d2);
            d2[off..off + 2].copy_from_slice(&new[0..2]);
            let u2 = update16(c2, w_old, w_new);
            let r2 = checksum(&d2);
            prop_assert!(u2 == r2 || (u2 ^ r2) == 0xffff && (u2 == 0 || u2 == 0xffff));
        }
    }
}
