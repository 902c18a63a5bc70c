//! Which worker owns a frame: the one whose affinity shard holds its client.
//!
//! Every flow of a client must be handled by the same worker, in both directions. NICs that can
//! hash on the L3 source only (client-facing ports) and the L3 destination only (backend ports)
//! do this in hardware with RSS. Where a device cannot, the receiving worker computes the owner
//! in software and hands the frame over. Both paths use the same Toeplitz hash, key and
//! redirection table ([`Steering`]), so they always agree, even when only some ports have
//! hardware support.
//!
//! The client address is found as the pipeline finds it: the source on client-facing
//! interfaces, the destination on backend ones, and inside the quoted packet for ICMP errors
//! (an error from a router on the client side quotes the VIP → client packet).

use std::fmt;

use crate::model::Role;
use crate::wire::ethernet::{ethertype, EthernetFrame};
use crate::wire::icmp;
use crate::wire::icmpv6;
use crate::wire::ip_proto;
use crate::wire::ipv4::Ipv4Packet;
use crate::wire::ipv6::Ipv6Packet;

/// The RSS key every port is programmed with (the one from Microsoft's RSS verification suite,
/// also DPDK's and most NICs' default; any 40 bytes work as long as all ports share them).
pub const RSS_KEY: [u8; 40] = [
    0x6d, 0x5a, 0x56, 0xda, 0x25, 0x5b, 0x0e, 0xc2, 0x41, 0x67, 0x25, 0x3d, 0x43, 0xa3, 0x8f, 0xb0,
    0xd0, 0xca, 0x2b, 0xcb, 0xae, 0x7b, 0x30, 0xb4, 0x77, 0xcb, 0x2d, 0xa3, 0x80, 0x30, 0xf2, 0x0c,
    0x6a, 0x42, 0xb7, 0x3b, 0xbe, 0xac, 0x01, 0xfa,
];

/// Redirection table size programmed on every port (a common hardware size; a multiple of 64
/// as DPDK's RETA update groups require).
pub const RETA_SIZE: usize = 128;

/// The Toeplitz hash (Microsoft RSS) of `input` under `key`. `key` must be at least
/// `input.len() + 4` bytes long; the 40-byte RSS key covers the 16-byte IPv6 address.
pub fn toeplitz(key: &[u8], input: &[u8]) -> u32 {
    debug_assert!(key.len() >= input.len() + 4);
    let mut hash = 0u32;
    // The 32-bit window of the key that lines up with the current input bit.
    let mut window = u32::from_be_bytes([key[0], key[1], key[2], key[3]]);
    for (i, &byte) in input.iter().enumerate() {
        let next = key.get(i + 4).copied().unwrap_or(0);
        for bit in 0..8 {
            if byte & (0x80 >> bit) != 0 {
                hash ^= window;
            }
            window = (window << 1) | u32::from((next >> (7 - bit)) & 1);
        }
    }
    hash
}

/// Input bytes the lookup tables cover: an IPv6 address, the longest input steering hashes.
pub const TABLE_BYTES: usize = 16;

/// Toeplitz by table: for input byte position `i` and value `b`, `rows[i][b]` is what that
/// byte XORs into the hash (the hash is linear in the input bits, so a byte's contribution
/// does not depend on the other bytes). One lookup per byte instead of eight conditional
/// XORs and shifts per byte.
#[derive(Clone, PartialEq, Eq)]
struct ToeplitzTable {
    rows: Box<[[u32; 256]; TABLE_BYTES]>,
}

impl ToeplitzTable {
    fn new(key: &[u8; 40]) -> ToeplitzTable {
        let mut rows = Box::new([[0u32; 256]; TABLE_BYTES]);
        for (i, row) in rows.iter_mut().enumerate() {
            // The key window lining up with each bit of byte i, most significant bit first:
            // the 32 key bits starting at bit 8i + bit.
            let chunk = u64::from_be_bytes(key[i..i + 8].try_into().expect("8 bytes"));
            let window = |bit: usize| (chunk << bit >> 32) as u32;
            for b in 1..256usize {
                // b's lowest set bit plus the (already filled) rest of b.
                let low = b.trailing_zeros() as usize;
                row[b] = row[b & (b - 1)] ^ window(7 - low);
            }
        }
        ToeplitzTable { rows }
    }

    /// The Toeplitz hash of `input`, at most [`TABLE_BYTES`] long.
    #[inline]
    fn hash(&self, input: &[u8]) -> u32 {
        debug_assert!(input.len() <= TABLE_BYTES);
        self.rows
            .iter()
            .zip(input)
            .fold(0, |h, (row, &b)| h ^ row[usize::from(b)])
    }
}

impl fmt::Debug for ToeplitzTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // 4096 numbers derived from the key: not worth printing.
        f.write_str("ToeplitzTable { .. }")
    }
}

/// The hash key, redirection table and worker count shared by hardware RSS and software
/// steering.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Steering {
    key: [u8; 40],
    /// Worker (= RX queue) for each hash bucket.
    reta: Vec<u16>,
    /// [`toeplitz`] under `key`, by table (built once here, 16 KiB).
    table: ToeplitzTable,
}

impl Steering {
    /// `workers` queues, buckets spread round robin, the standard key.
    pub fn new(workers: u16) -> Steering {
        let workers = workers.max(1);
        Steering {
            key: RSS_KEY,
            reta: (0..RETA_SIZE)
                .map(|i| u16::try_from(i % usize::from(workers)).unwrap_or(0))
                .collect(),
            table: ToeplitzTable::new(&RSS_KEY),
        }
    }

    pub fn key(&self) -> &[u8; 40] {
        &self.key
    }

    /// The redirection table to program into NICs.
    pub fn reta(&self) -> &[u16] {
        &self.reta
    }

    /// The Toeplitz hash of `input` under the key, as a NIC computes it: by the lookup tables
    /// up to [`TABLE_BYTES`] bytes, bit by bit beyond (equal to [`toeplitz`] either way).
    #[inline]
    pub fn hash(&self, input: &[u8]) -> u32 {
        if input.len() <= TABLE_BYTES {
            self.table.hash(input)
        } else {
            toeplitz(&self.key, input)
        }
    }

    /// The worker owning a client address (4 or 16 bytes, network order).
    #[inline]
    pub fn owner_of_client(&self, client: &[u8]) -> u16 {
        let h = self.hash(client);
        // NICs index the RETA with the hash's low bits.
        self.reta[h as usize % self.reta.len()]
    }

    /// The worker owning a frame received on an interface of `role`, or `None` when the frame
    /// carries no client (ARP, neighbor discovery, traffic to the appliance itself, garbage):
    /// those are handled by whichever worker received them.
    pub fn owner(&self, frame: &[u8], role: Role) -> Option<u16> {
        let mut buf = [0u8; 16];
        let len = client_address(frame, role, &mut buf)?;
        Some(self.owner_of_client(&buf[..len]))
    }

    /// [`Self::owner`] for ICMP and ICMPv6 errors only (`None` for every other frame): the
    /// worker owning the client of the quoted packet. NICs hash an error on its outer
    /// addresses (a router's), so even with hardware steering it may arrive anywhere.
    pub fn icmp_error_owner(&self, frame: &[u8], role: Role) -> Option<u16> {
        let mut buf = [0u8; 16];
        match find_client(frame, role, &mut buf)? {
            (len, true) => Some(self.owner_of_client(&buf[..len])),
            (_, false) => None,
        }
    }
}

/// Writes the frame's client address into `out` and returns its length (4 or 16).
pub fn client_address(frame: &[u8], role: Role, out: &mut [u8; 16]) -> Option<usize> {
    find_client(frame, role, out).map(|(len, _)| len)
}

/// [`client_address`], and whether the address came from an ICMP error's quoted packet.
fn find_client(frame: &[u8], role: Role, out: &mut [u8; 16]) -> Option<(usize, bool)> {
    let eth = EthernetFrame::new_checked(frame).ok()?;
    match eth.ethertype() {
        ethertype::IPV4 => {
            let ip = Ipv4Packet::new_checked(eth.payload()).ok()?;
            let quoted = ip.protocol() == ip_proto::ICMP
                && ip.is_first_fragment()
                && ip.payload().first().is_some_and(|t| icmp::is_error(*t));
            let (src, dst) = if quoted {
                // The quoted header starts after the 8-byte ICMP header; it may be cut short,
                // but its addresses are within the first 20 bytes.
                let q = ip.payload().get(8..28)?;
                if q[0] >> 4 != 4 {
                    return None;
                }
                // Quoted packets travel the other way: swap to get the client on the same side.
                (&q[16..20], &q[12..16])
            } else {
                (&eth.payload()[12..16], &eth.payload()[16..20])
            };
            let a = if role == Role::Client { src } else { dst };
            out[..4].copy_from_slice(a);
            Some((4, quoted))
        }
        ethertype::IPV6 => {
            let ip = Ipv6Packet::new_checked(eth.payload()).ok()?;
            let p = eth.payload();
            let up = ip.upper_layer().ok()?;
            let first = up.fragment.is_none_or(|f| f.offset == 0);
            let icmp_type = p.get(up.offset).copied();
            let (src, dst, quoted): (&[u8], &[u8], bool) =
                if up.protocol == ip_proto::ICMPV6 && first {
                    match icmp_type {
                        Some(t) if icmpv6::is_error(t) => {
                            let q = p.get(up.offset + 8..up.offset + 48)?;
                            if q[0] >> 4 != 6 {
                                return None;
                            }
                            (&q[24..40], &q[8..24], true)
                        }
                        // Neighbor discovery is link business, not a client's.
                        Some(133..=137) => return None,
                        _ => (&p[8..24], &p[24..40], false),
                    }
                } else {
                    (&p[8..24], &p[24..40], false)
                };
            let a = if role == Role::Client { src } else { dst };
            out.copy_from_slice(a);
            Some((16, quoted))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::{self, lab, Ipv4Opts, L2, L4};
    use std::net::{Ipv4Addr, Ipv6Addr};

    /// Microsoft's RSS verification vectors (as in DPDK's test_thash.c), IPv4 addresses only.
    #[test]
    fn toeplitz_matches_the_rss_verification_suite() {
        let v4 = |a: [u8; 4], b: [u8; 4]| {
            let mut i = Vec::from(a);
            i.extend_from_slice(&b);
            toeplitz(&RSS_KEY, &i)
        };
        // (source, destination, hash over src||dst)
        assert_eq!(v4([66, 9, 149, 187], [161, 142, 100, 80]), 0x323e_8fc2);
        assert_eq!(v4([199, 92, 111, 2], [65, 69, 140, 83]), 0xd718_262a);
        assert_eq!(v4([24, 19, 198, 95], [12, 22, 207, 184]), 0xd2d0_a5de);
        assert_eq!(v4([38, 27, 205, 30], [209, 142, 163, 6]), 0x8298_9176);
        assert_eq!(v4([153, 39, 163, 191], [202, 188, 127, 2]), 0x5d18_09c5);
    }

    #[test]
    fn toeplitz_ipv6_vector() {
        // Same suite, IPv6 with addresses only: 3ffe:2501:200:1fff::7 -> 3ffe:2501:200:3::1.
        let s: Ipv6Addr = "3ffe:2501:200:1fff::7".parse().unwrap();
        let d: Ipv6Addr = "3ffe:2501:200:3::1".parse().unwrap();
        let mut i = Vec::from(s.octets());
        i.extend_from_slice(&d.octets());
        assert_eq!(toeplitz(&RSS_KEY, &i), 0x2cc1_8cd5);
    }

    /// The lookup tables agree with the bit-serial reference on the suite's vectors (8 and 32
    /// bytes: the tables cover the first 16, the reference the rest), and on the addresses
    /// alone.
    #[test]
    fn table_hash_matches_the_reference_on_the_vectors() {
        let s = Steering::new(4);
        let v4 = [
            ([66, 9, 149, 187], [161, 142, 100, 80], 0x323e_8fc2),
            ([199, 92, 111, 2], [65, 69, 140, 83], 0xd718_262a),
            ([24, 19, 198, 95], [12, 22, 207, 184], 0xd2d0_a5de),
            ([38, 27, 205, 30], [209, 142, 163, 6], 0x8298_9176),
            ([153, 39, 163, 191], [202, 188, 127, 2], 0x5d18_09c5),
        ];
        for (src, dst, want) in v4 {
            let input = [src, dst].concat();
            assert_eq!(s.hash(&input), want);
            assert_eq!(s.hash(&src), toeplitz(&RSS_KEY, &src));
            assert_eq!(s.hash(&dst), toeplitz(&RSS_KEY, &dst));
        }
        let a: Ipv6Addr = "3ffe:2501:200:1fff::7".parse().unwrap();
        let b: Ipv6Addr = "3ffe:2501:200:3::1".parse().unwrap();
        // 32 bytes: past the tables, the reference answers.
        assert_eq!(s.hash(&[a.octets(), b.octets()].concat()), 0x2cc1_8cd5);
        for addr in [a, b] {
            assert_eq!(s.hash(&addr.octets()), toeplitz(&RSS_KEY, &addr.octets()));
        }
        assert_eq!(s.hash(&[]), 0);
    }

    /// Every single-bit input: the tables' 128 key windows are the reference's.
    #[test]
    fn table_hash_matches_the_reference_bit_by_bit() {
        let s = Steering::new(1);
        for bit in 0..TABLE_BYTES * 8 {
            let mut input = [0u8; TABLE_BYTES];
            input[bit / 8] = 0x80 >> (bit % 8);
            assert_eq!(s.hash(&input), toeplitz(&RSS_KEY, &input), "bit {bit}");
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(4096))]

        #[test]
        fn table_hash_matches_the_reference(
            input in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..=TABLE_BYTES)
        ) {
            let s = Steering::new(3);
            proptest::prop_assert_eq!(s.hash(&input), toeplitz(&RSS_KEY, &input));
        }

        #[test]
        fn owners_match_the_reference(
            v4 in proptest::prelude::any::<[u8; 4]>(),
            v6 in proptest::prelude::any::<[u8; 16]>(),
            workers in 1u16..=64,
        ) {
            let s = Steering::new(workers);
            for client in [&v4[..], &v6[..]] {
                let bucket = toeplitz(&RSS_KEY, client) as usize % RETA_SIZE;
                proptest::prop_assert_eq!(s.owner_of_client(client), s.reta()[bucket]);
            }
        }
    }

    fn udp4(l2: L2, src: Ipv4Addr, dst: Ipv4Addr) -> Vec<u8> {
        testkit::ipv4(
            &l2,
            src,
            dst,
            &Ipv4Opts::default(),
            &L4::Udp {
                src: 4500,
                dst: 4500,
                payload: &[1, 2, 3, 4, 5, 6, 7, 8],
            },
        )
    }

    #[test]
    fn both_directions_of_a_client_have_one_owner() {
        let s = Steering::new(4);
        let mut owners = [0usize; 4];
        for i in 0..400u32 {
            let client = Ipv4Addr::from(u32::from(Ipv4Addr::new(198, 18, 64, 1)) + i);
            let gw = lab::GATEWAYS_V4[(i % 3) as usize];
            let inbound = udp4(
                L2::new(lab::ROUTER_MAC, lab::CLIENT_PORT_MAC),
                client,
                lab::VIP_V4,
            );
            let outbound = udp4(
                L2::new(lab::GATEWAY_MACS[0], lab::BACKEND_PORT_MAC),
                gw,
                client,
            );
            let a = s.owner(&inbound, Role::Client).unwrap();
            let b = s.owner(&outbound, Role::Backend).unwrap();
            assert_eq!(a, b, "client {client}");
            assert_eq!(a, s.owner_of_client(&client.octets()));
            owners[usize::from(a)] += 1;
        }
        // 400 clients over 4 workers: none starved.
        assert!(owners.iter().all(|&n| n > 60), "{owners:?}");
    }

    #[test]
    fn icmp_errors_are_steered_by_the_quoted_client() {
        let s = Steering::new(8);
        let client = Ipv4Addr::new(198, 18, 70, 7);
        // We sent VIP -> client; the router reports fragmentation needed to the VIP.
        let sent = udp4(
            L2::new(lab::CLIENT_PORT_MAC, lab::ROUTER_MAC),
            lab::VIP_V4,
            client,
        );
        let quote = &sent[14..14 + 28];
        let err = testkit::ipv4(
            &L2::new(lab::ROUTER_MAC, lab::CLIENT_PORT_MAC),
            Ipv4Addr::new(198, 18, 0, 254),
            lab::VIP_V4,
            &Ipv4Opts::default(),
            &L4::Icmpv4 {
                msg_type: 3,
                code: 4,
                rest: 1400,
                payload: quote,
            },
        );
        assert_eq!(
            s.owner(&err, Role::Client),
            Some(s.owner_of_client(&client.octets()))
        );
    }

    #[test]
    fn link_traffic_has_no_owner() {
        let s = Steering::new(2);
        let arp = testkit::arp(
            &L2::new(
                lab::ROUTER_MAC,
                crate::wire::ethernet::EthernetAddress::BROADCAST,
            ),
            1,
            lab::ROUTER_MAC,
            Ipv4Addr::new(198, 18, 0, 254),
            Default::default(),
            lab::VIP_V4,
        );
        assert_eq!(s.owner(&arp, Role::Client), None);
        let ns = testkit::neighbor_solicit(
            &L2::new(lab::ROUTER_MAC, lab::CLIENT_PORT_MAC),
            &"2001:2:0:1::fe".parse().unwrap(),
            &lab::VIP_V6,
            Some(lab::ROUTER_MAC),
        );
        assert_eq!(s.owner(&ns, Role::Client), None);
        assert_eq!(s.owner(&[0u8; 10], Role::Client), None);
    }

    #[test]
    fn garbage_never_panics() {
        let s = Steering::new(3);
        let base = udp4(
            L2::new(lab::ROUTER_MAC, lab::CLIENT_PORT_MAC),
            Ipv4Addr::new(198, 18, 64, 9),
            lab::VIP_V4,
        );
        for cut in 0..base.len() {
            let _ = s.owner(&base[..cut], Role::Client);
            let _ = s.owner(&base[..cut], Role::Backend);
        }
    }
}
