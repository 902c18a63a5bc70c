//! The Internet checksum (RFC 1071) and its incremental update (RFC 1624).
//!
//! Sums are carried as `u32` accumulators of 16-bit big-endian words and folded once at the end,
//! so partial sums (pseudo-header + payload) can be combined cheaply.

use std::net::{Ipv4Addr, Ipv6Addr};

/// Adds `data` as big-endian 16-bit words to `acc`; an odd trailing byte is padded with zero.
///
/// The result is an unfolded accumulator, congruent (mod 0xffff) to the one's-complement sum,
/// zero only when `acc` and `data` are all zero, and below 2^18: pass it to [`fold`], or on
/// to another `sum`.
#[inline]
pub fn sum(acc: u32, data: &[u8]) -> u32 {
    // 32-bit big-endian words: each is two 16-bit words (2^16 ≡ 1 mod 0xffff). A 64-bit
    // accumulator takes 2^32 of them without overflowing, so the loop handles no carry.
    let mut words = data.chunks_exact(4);
    let mut s = u64::from(acc);
    if (data.len() as u64) < 1 << 34 {
        for w in &mut words {
            s += u64::from(u32::from_be_bytes([w[0], w[1], w[2], w[3]]));
        }
    } else {
        // Beyond 16 GiB: fold as we go.
        for w in &mut words {
            s = u64::from(fold64(s)) + u64::from(u32::from_be_bytes([w[0], w[1], w[2], w[3]]));
        }
    }
    match *words.remainder() {
        [a, b, c] => s += u64::from(u16::from_be_bytes([a, b])) + (u64::from(c) << 8),
        [a, b] => s += u64::from(u16::from_be_bytes([a, b])),
        [a] => s += u64::from(a) << 8,
        _ => {}
    }
    fold64(s)
}

/// Reduces a 64-bit accumulator to a congruent one below 2^18, zero only when it was zero.
#[inline]
#[allow(clippy::cast_possible_truncation)] // the sum of four 16-bit chunks is below 2^18
fn fold64(s: u64) -> u32 {
    // Four 16-bit chunks, each below 2^16.
    ((s & 0xffff) + ((s >> 16) & 0xffff) + ((s >> 32) & 0xffff) + (s >> 48)) as u32
}

/// Folds an accumulator to 16 bits (without complementing).
#[inline]
#[allow(clippy::cast_possible_truncation)] // below 2^16 after the two rounds
pub fn fold(acc: u32) -> u16 {
    // Two rounds always suffice: after the first the value is at most 0x1fffe.
    let acc = (acc & 0xffff) + (acc >> 16);
    let acc = (acc & 0xffff) + (acc >> 16);
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

/// The addresses of an upper-layer checksum's pseudo-header, for the Reprs' `emit`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PseudoHeader {
    V4 { src: Ipv4Addr, dst: Ipv4Addr },
    V6 { src: Ipv6Addr, dst: Ipv6Addr },
}

impl PseudoHeader {
    /// The pseudo-header sum for `protocol` (the next header) and an upper-layer length `len`
    /// ([`pseudo_header_v4`] keeps the low 16 bits, as the IPv4 pseudo-header does).
    #[inline]
    pub fn sum(&self, protocol: u8, len: usize) -> u32 {
        match self {
            PseudoHeader::V4 { src, dst } => {
                pseudo_header_v4(*src, *dst, protocol, u16::try_from(len).unwrap_or(u16::MAX))
            }
            PseudoHeader::V6 { src, dst } => {
                pseudo_header_v6(src, dst, protocol, u32::try_from(len).unwrap_or(u32::MAX))
            }
        }
    }
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

/// What replacing the 4 bytes `old` by `new` adds to a one's-complement sum: `~old + new` over
/// 16-bit words (RFC 1624 eqn. 3), unfolded (below 2^18). Compute it once per address change
/// and [`apply`] it to every checksum that covers the address.
#[inline]
pub fn delta4(old: [u8; 4], new: [u8; 4]) -> u32 {
    // `!` of a 32-bit word complements both of its 16-bit words.
    fold64(u64::from(!u32::from_be_bytes(old)) + u64::from(u32::from_be_bytes(new)))
}

/// [`delta4`] for 16-byte (IPv6) addresses.
#[inline]
pub fn delta16(old: &[u8; 16], new: &[u8; 16]) -> u32 {
    let word = |b: &[u8; 16], i: usize| u32::from_be_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
    let mut s = 0u64;
    for i in [0, 4, 8, 12] {
        s += u64::from(!word(old, i)) + u64::from(word(new, i));
    }
    fold64(s)
}

/// The checksum field after the data it covers changed by `delta` (a sum of [`delta4`],
/// [`delta16`] and `~old + new` words): `HC' = ~(~HC + delta)` (RFC 1624 eqn. 3). The result
/// is exactly what [`update16`] / [`update_bytes`] give applied one change after another.
#[inline]
pub fn apply(csum: u16, delta: u32) -> u16 {
    !fold(fold64(u64::from(!csum) + u64::from(delta)))
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

    #[test]
    fn rfc1624_example() {
        // RFC 1624 §4: m = 0x5555 -> m' = 0x3285 under HC = 0xdd2f gives 0x0000 by eqn. 3.
        assert_eq!(update16(0xdd2f, 0x5555, 0x3285), 0x0000);
        assert_eq!(apply(0xdd2f, u32::from(!0x5555u16) + 0x3285), 0x0000);
        assert_eq!(
            apply(0xdd2f, delta4([0x55, 0x55, 0, 0], [0x32, 0x85, 0, 0])),
            0x0000
        );
    }

    #[test]
    fn sums_of_odd_lengths_and_large_words() {
        assert_eq!(sum(0, &[]), 0);
        assert_eq!(fold(sum(0, &[0xff; 3])), 0xff00);
        assert_eq!(fold(sum(0, &[0x12, 0x34, 0x56])), 0x1234 + 0x5600);
        assert_eq!(fold(sum(0xffff_ffff, &[0xff; 7])), 0xff00);
        assert_eq!(fold(sum(1, &[0xff, 0xfe])), 0xffff);
        assert_eq!(fold(0x0001_ffff), 0x0001);
        assert_eq!(fold(0xffff_ffff), 0xffff);
        assert_eq!(fold(0), 0);
    }

    /// The 16-bit one's-complement sum, the way RFC 1071 states it.
    fn reference_sum(acc: u32, data: &[u8]) -> u16 {
        let mut s = u64::from(acc);
        for w in data.chunks(2) {
            s += u64::from(w[0]) << 8 | u64::from(w.get(1).copied().unwrap_or(0));
        }
        while s > 0xffff {
            s = (s & 0xffff) + (s >> 16);
        }
        s as u16
    }

    proptest! {
        #[test]
        fn sum_matches_the_rfc1071_definition(
            acc in any::<u32>(),
            data in proptest::collection::vec(any::<u8>(), 0..300),
        ) {
            let s = sum(acc, &data);
            prop_assert!(s < 1 << 18);
            prop_assert_eq!(fold(s), reference_sum(acc, &data));
            // Chained sums: the accumulator goes on into the next call.
            let (a, b) = data.split_at((data.len() / 2) & !1);
            prop_assert_eq!(fold(sum(sum(acc, a), b)), reference_sum(acc, &data));
        }

        #[test]
        fn fold_reduces_any_accumulator(acc in any::<u32>()) {
            let mut want = acc;
            while want > 0xffff {
                want = (want & 0xffff) + (want >> 16);
            }
            prop_assert_eq!(u32::from(fold(acc)), want);
        }

        /// One delta applied once gives exactly the chain of word-by-word updates, and the
        /// same for IPv6 addresses.
        #[test]
        fn deltas_equal_chained_updates(
            csum in any::<u16>(),
            old in any::<[u8; 16]>(),
            new in any::<[u8; 16]>(),
            ttl in 1u8..=255,
            proto in any::<u8>(),
        ) {
            let o4 = [old[0], old[1], old[2], old[3]];
            let n4 = [new[0], new[1], new[2], new[3]];
            prop_assert_eq!(apply(csum, delta4(o4, n4)), update_bytes(csum, &o4, &n4));
            prop_assert_eq!(apply(csum, delta16(&old, &new)), update_bytes(csum, &old, &new));
            // TTL decrement, then the address: as `nat` folds them together.
            let t = update16(
                csum,
                u16::from_be_bytes([ttl, proto]),
                u16::from_be_bytes([ttl - 1, proto]),
            );
            let chained = update_bytes(t, &o4, &n4);
            let ttl_delta = u32::from(!0x0100u16);
            prop_assert_eq!(apply(csum, delta4(o4, n4) + ttl_delta), chained);
        }

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
