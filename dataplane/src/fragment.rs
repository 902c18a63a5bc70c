//! IPv4 fragmentation (RFC 791 §3.2, §2.3 "Fragmentation"): one frame's datagram cut to an
//! egress MTU, each fragment written whole (Ethernet header and VLAN tags included) into a
//! buffer the caller owns. Pure and allocation-free: the daemon writes fragments straight into
//! mbufs from its pool, replay into a reused vector.
//!
//! The pipeline decides (see `Verdict::Fragment`); [`Fragments::plan`] checks that the frame
//! can be cut, [`Fragments::write`] writes fragment `i`. A datagram that is itself a fragment
//! (offset or MF set) is cut further: offsets add up and the last piece keeps its MF.

use crate::wire::ethernet::{ethertype, EthernetFrame};
use crate::wire::ipv4::{self, Ipv4Packet, IPV4_HEADER_LEN};

/// Why a frame cannot be fragmented.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FragError {
    /// Not an IPv4 frame, or its Ethernet or IP header is cut short or invalid.
    NotIpv4,
    /// The Don't Fragment flag is set.
    DontFragment,
    /// The options are malformed (an option's length runs past the header, or is below 2).
    BadOptions,
    /// The MTU leaves no room for 8 bytes of data after the header.
    MtuTooSmall,
    /// The pieces' offsets would pass the 13-bit field's end.
    OffsetOverflow,
}

/// Longest IPv4 options area.
const MAX_OPTIONS: usize = 40;

/// How one frame's IPv4 datagram splits for one MTU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fragments {
    /// Ethernet header length, tags included: replicated in front of every fragment.
    l2: usize,
    /// The datagram's header length (the first fragment keeps every option).
    header_len: usize,
    /// Payload bytes of the datagram.
    payload: usize,
    /// The options with the copied flag, padded with end-of-options to a multiple of 4: the
    /// later fragments' options.
    later_options: [u8; MAX_OPTIONS],
    later_options_len: usize,
    /// Payload bytes in the first fragment and in each later one (multiples of 8 but for the
    /// last fragment).
    first_data: usize,
    later_data: usize,
    count: usize,
    /// The datagram's own fragment offset (bytes) and More Fragments flag.
    offset: usize,
    more: bool,
}

impl Fragments {
    /// Plans the fragments of `frame`'s datagram for an IP MTU of `mtu`. A datagram that fits
    /// gives one fragment: itself, without any Ethernet padding.
    pub fn plan(frame: &[u8], mtu: u16) -> Result<Fragments, FragError> {
        let eth = EthernetFrame::new_checked(frame).map_err(|_| FragError::NotIpv4)?;
        if eth.ethertype() != ethertype::IPV4 {
            return Err(FragError::NotIpv4);
        }
        let l2 = eth.header_len();
        let ip = Ipv4Packet::new_checked(eth.payload()).map_err(|_| FragError::NotIpv4)?;
        if ip.dont_frag() {
            return Err(FragError::DontFragment);
        }
        let header_len = ip.header_len();
        let payload = usize::from(ip.total_len()) - header_len;
        let (later_options, later_options_len) = copied_options(ip.options())?;
        let mtu = usize::from(mtu);
        let offset = usize::from(ip.frag_offset());
        // Every fragment must carry at least 8 bytes of data (RFC 791: 68 = 60 + 8).
        if mtu < header_len + 8 {
            return Err(FragError::MtuTooSmall);
        }
        let (first_data, later_data, count) = if header_len + payload <= mtu {
            (payload, 0, 1)
        } else {
            let first = (mtu - header_len) & !7;
            // Later headers carry only the copied options: never longer than the first's.
            let later = (mtu - IPV4_HEADER_LEN - later_options_len) & !7;
            (first, later, 1 + (payload - first).div_ceil(later))
        };
        if offset + payload > usize::from(u16::MAX) {
            return Err(FragError::OffsetOverflow);
        }
        Ok(Fragments {
            l2,
            header_len,
            payload,
            later_options,
            later_options_len,
            first_data,
            later_data,
            count,
            offset,
            more: ip.more_frags(),
        })
    }

    /// Number of fragments.
    pub fn count(&self) -> usize {
        self.count
    }

    /// The data of fragment `i`: (start in the datagram's payload, length).
    fn data(&self, i: usize) -> (usize, usize) {
        if i == 0 {
            return (0, self.first_data);
        }
        let start = self.first_data + (i - 1) * self.later_data;
        (
            start,
            self.later_data.min(self.payload.saturating_sub(start)),
        )
    }

    /// IP header length of fragment `i`.
    fn header_len_of(&self, i: usize) -> usize {
        if i == 0 {
            self.header_len
        } else {
            IPV4_HEADER_LEN + self.later_options_len
        }
    }

    /// Frame length of fragment `i` (0 past the last).
    pub fn frame_len(&self, i: usize) -> usize {
        if i >= self.count {
            return 0;
        }
        self.l2 + self.header_len_of(i) + self.data(i).1
    }

    /// Bytes of all fragments' frames together.
    pub fn total_len(&self) -> usize {
        (0..self.count).map(|i| self.frame_len(i)).sum()
    }

    /// Writes fragment `i` of `frame` (the frame [`Self::plan`] was given) into the start of
    /// `out` and returns its length; `None` when `i` is past the last fragment, `out` is
    /// shorter than [`Self::frame_len`] or `frame` is not the planned one.
    pub fn write(&self, frame: &[u8], i: usize, out: &mut [u8]) -> Option<usize> {
        if i >= self.count {
            return None;
        }
        let len = self.frame_len(i);
        let hl = self.header_len_of(i);
        let (start, data) = self.data(i);
        let ip_at = self.l2;
        let payload_at = ip_at + self.header_len;
        let src_data = frame.get(payload_at + start..payload_at + start + data)?;
        let out = out.get_mut(..len)?;
        out.get_mut(..ip_at + IPV4_HEADER_LEN)?
            .copy_from_slice(frame.get(..ip_at + IPV4_HEADER_LEN)?);
        let opts = &mut out[ip_at + IPV4_HEADER_LEN..ip_at + hl];
        if i == 0 {
            opts.copy_from_slice(frame.get(ip_at + IPV4_HEADER_LEN..payload_at)?);
        } else {
            opts.copy_from_slice(&self.later_options[..self.later_options_len]);
        }
        out[ip_at + hl..].copy_from_slice(src_data);
        let last = i + 1 == self.count;
        let more = !last || self.more;
        let total = u16::try_from(hl + data).ok()?;
        let offset = u16::try_from(self.offset + start).ok()?;
        let mut ip = Ipv4Packet::new_unchecked(&mut out[ip_at..]);
        ip.set_header_len(hl);
        ip.set_total_len(total);
        ip.set_frag(false, more, offset);
        ip.fill_checksum();
        Some(len)
    }
}

/// The options a later fragment carries (RFC 791: those whose type has the copied flag),
/// padded with end-of-options to a whole number of 32-bit words.
fn copied_options(opts: &[u8]) -> Result<([u8; MAX_OPTIONS], usize), FragError> {
    let mut out = [0u8; MAX_OPTIONS];
    let mut len = 0;
    let mut i = 0;
    while let Some(&kind) = opts.get(i) {
        match kind {
            ipv4::option::END => break,
            ipv4::option::NOP => i += 1,
            _ => {
                let n = usize::from(*opts.get(i + 1).ok_or(FragError::BadOptions)?);
                let opt = opts
                    .get(i..i + n)
                    .filter(|_| n >= 2)
                    .ok_or(FragError::BadOptions)?;
                if kind & ipv4::option::COPIED != 0 {
                    // The copied options are a subset of `opts`, at most 40 bytes.
                    out.get_mut(len..len + n)
                        .ok_or(FragError::BadOptions)?
                        .copy_from_slice(opt);
                    len += n;
                }
                i += n;
            }
        }
    }
    Ok((out, len.next_multiple_of(4)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::emit::L2;
    use crate::testkit::{self, lab, Ipv4Opts, L4};
    use crate::wire::ethernet::Vlan;
    use proptest::prelude::*;
    use std::net::Ipv4Addr;

    const CLIENT: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 10);
    const GATEWAY: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 11);

    fn datagram(len: usize, options: &[u8], vlan: Vlan) -> Vec<u8> {
        let payload: Vec<u8> = (0..len).map(|i| (i * 7 + 3) as u8).collect();
        testkit::ipv4(
            &L2::new(lab::BACKEND_PORT_MAC, lab::GATEWAY_MACS[0]).with_vlan(vlan),
            CLIENT,
            GATEWAY,
            &Ipv4Opts {
                options: options.to_vec(),
                ident: 0x4242,
                ..Ipv4Opts::default()
            },
            &L4::Udp {
                src: 4500,
                dst: 4500,
                payload: &payload,
            },
        )
    }

    fn all(frame: &[u8], mtu: u16) -> Vec<Vec<u8>> {
        let plan = Fragments::plan(frame, mtu).expect("fragmentable");
        (0..plan.count())
            .map(|i| {
                let mut out = vec![0u8; 9100];
                let n = plan.write(frame, i, &mut out).expect("fragment");
                assert_eq!(n, plan.frame_len(i));
                out.truncate(n);
                out
            })
            .collect()
    }

    /// Reassembles (RFC 815 style, for tests): the payload, checking every header on the way.
    fn reassemble(l2: usize, frags: &[Vec<u8>], mtu: u16) -> Vec<u8> {
        let mut payload = vec![];
        let mut next = 0usize;
        for (k, f) in frags.iter().enumerate() {
            let ip = Ipv4Packet::new_checked(&f[l2..]).expect("valid IPv4");
            assert!(ip.verify_checksum(), "fragment {k} checksum");
            assert!(usize::from(ip.total_len()) <= usize::from(mtu));
            assert_eq!(ip.total_len() as usize, f.len() - l2);
            assert_eq!(usize::from(ip.frag_offset()), next);
            assert_eq!(ip.more_frags(), k + 1 < frags.len());
            assert_eq!(ip.ident(), 0x4242);
            assert!(!ip.dont_frag());
            if k + 1 < frags.len() {
                assert_eq!(ip.payload().len() % 8, 0);
            }
            payload.extend_from_slice(ip.payload());
            next += ip.payload().len();
        }
        payload
    }

    #[test]
    fn fragments_reassemble_to_the_original_payload() {
        let frame = datagram(3000, &[], Vlan::Untagged);
        let frags = all(&frame, 1500);
        assert_eq!(frags.len(), 3);
        // 1480 data bytes in each full fragment (1500 - 20, a multiple of 8).
        assert_eq!(frags[0].len(), 14 + 1500);
        let original = Ipv4Packet::new_checked(&frame[14..]).unwrap();
        assert_eq!(reassemble(14, &frags, 1500), original.payload());
        // Everything else in the header is the datagram's.
        for f in &frags {
            assert_eq!(f[..14], frame[..14]);
            assert_eq!(f[14 + 12..14 + 20], frame[14 + 12..14 + 20]);
            assert_eq!(f[14 + 8..14 + 10], frame[14 + 8..14 + 10]);
        }
    }

    #[test]
    fn vlan_tags_are_replicated() {
        let frame = datagram(
            2000,
            &[],
            Vlan::Double {
                outer: 100,
                inner: 7,
            },
        );
        let frags = all(&frame, 1280);
        assert_eq!(frags.len(), 2);
        for f in &frags {
            assert_eq!(f[..22], frame[..22]);
        }
        let original = Ipv4Packet::new_checked(&frame[22..]).unwrap();
        assert_eq!(reassemble(22, &frags, 1280), original.payload());
    }

    #[test]
    fn copied_options_go_in_every_fragment_others_only_in_the_first() {
        // Security (130, copied, 11 bytes), NOP, record route (7, not copied, 7 bytes), EOL.
        let mut opts = vec![
            130, 11, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 7, 7, 4, 0, 0, 0, 0, 0,
        ];
        opts.resize(20, 0);
        let frame = datagram(2000, &opts, Vlan::Untagged);
        let frags = all(&frame, 1000);
        let first = Ipv4Packet::new_checked(&frags[0][14..]).unwrap();
        assert_eq!(first.header_len(), 40);
        assert_eq!(first.options(), &opts[..]);
        for f in &frags[1..] {
            let ip = Ipv4Packet::new_checked(&f[14..]).unwrap();
            // 11 bytes of security option, padded to 12.
            assert_eq!(ip.header_len(), 32);
            assert_eq!(&ip.options()[..11], &opts[..11]);
            assert_eq!(ip.options()[11], 0);
        }
        let original = Ipv4Packet::new_checked(&frame[14..]).unwrap();
        assert_eq!(reassemble(14, &frags, 1000), original.payload());
        // The first carries (1000 - 40) & !7 = 960 bytes, the later (1000 - 32) & !7 = 968.
        assert_eq!(first.payload().len(), 960);
        let second = Ipv4Packet::new_checked(&frags[1][14..]).unwrap();
        assert_eq!(second.payload().len(), 968);
    }

    #[test]
    fn a_fragment_is_cut_further_keeping_its_offset_and_mf() {
        let frame = datagram(2000, &[], Vlan::Untagged);
        let mut frame = frame;
        // Make it the middle piece of a larger datagram: offset 1480, MF set.
        {
            let mut ip = Ipv4Packet::new_unchecked(&mut frame[14..]);
            ip.set_frag(false, true, 1480);
            ip.fill_checksum();
        }
        let frags = all(&frame, 1000);
        let offsets: Vec<(u16, bool)> = frags
            .iter()
            .map(|f| {
                let ip = Ipv4Packet::new_checked(&f[14..]).unwrap();
                (ip.frag_offset(), ip.more_frags())
            })
            .collect();
        assert_eq!(offsets, vec![(1480, true), (2456, true), (3432, true)]);
    }

    #[test]
    fn refusals() {
        let mut df = datagram(2000, &[], Vlan::Untagged);
        {
            let mut ip = Ipv4Packet::new_unchecked(&mut df[14..]);
            ip.set_frag(true, false, 0);
            ip.fill_checksum();
        }
        assert_eq!(Fragments::plan(&df, 1500), Err(FragError::DontFragment));
        let v6 = testkit::ipv6(
            &L2::new(lab::ROUTER_MAC, lab::CLIENT_PORT_MAC),
            &lab::ROUTER_V6,
            &lab::VIP_V6,
            64,
            &[],
            &L4::Udp {
                src: 500,
                dst: 500,
                payload: &[0; 2000],
            },
        );
        assert_eq!(Fragments::plan(&v6, 1500), Err(FragError::NotIpv4));
        let frame = datagram(2000, &[], Vlan::Untagged);
        assert_eq!(Fragments::plan(&frame, 27), Err(FragError::MtuTooSmall));
        // An option whose length runs past the header.
        let bad = datagram(2000, &[130, 9, 0, 0], Vlan::Untagged);
        assert_eq!(Fragments::plan(&bad, 1500), Err(FragError::BadOptions));
        // Writing past the last, or into too short a buffer, gives nothing.
        let plan = Fragments::plan(&frame, 1500).unwrap();
        assert_eq!(plan.write(&frame, 2, &mut [0; 2000]), None);
        assert_eq!(plan.write(&frame, 0, &mut [0; 100]), None);
    }

    #[test]
    fn a_datagram_that_fits_is_one_fragment_without_padding() {
        let mut frame = datagram(100, &[], Vlan::Untagged);
        frame.extend_from_slice(&[0; 10]);
        let frags = all(&frame, 1500);
        assert_eq!(frags.len(), 1);
        assert_eq!(frags[0], frame[..frame.len() - 10]);
    }

    proptest! {
        #[test]
        fn any_cut_reassembles(
            len in 0usize..9000,
            mtu in 68u16..9001,
            copied in 0usize..4,
            plain in 0usize..4,
            tagged in any::<bool>(),
        ) {
            // `copied` copied NOP-free security options of 4 bytes, `plain` timestamps-like
            // uncopied options of 4 bytes.
            let mut opts = Vec::new();
            for _ in 0..copied { opts.extend_from_slice(&[130, 4, 1, 2]); }
            for _ in 0..plain { opts.extend_from_slice(&[68, 4, 5, 0]); }
            let vlan = if tagged { Vlan::Single { vid: 5 } } else { Vlan::Untagged };
            let frame = datagram(len, &opts, vlan);
            let l2 = if tagged { 18 } else { 14 };
            let frags = all(&frame, mtu);
            let total: usize = frags.iter().map(Vec::len).sum();
            prop_assert_eq!(total, Fragments::plan(&frame, mtu).unwrap().total_len());
            let original = Ipv4Packet::new_checked(&frame[l2..]).unwrap();
            prop_assert_eq!(reassemble(l2, &frags, mtu), original.payload());
            for f in &frags[1..] {
                let ip = Ipv4Packet::new_checked(&f[l2..]).unwrap();
                prop_assert_eq!(ip.header_len(), 20 + 4 * copied);
            }
        }

        #[test]
        fn never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200), mtu in any::<u16>()) {
            if let Ok(plan) = Fragments::plan(&bytes, mtu) {
                let mut out = [0u8; 256];
                for i in 0..plan.count().min(64) {
                    let _ = plan.write(&bytes, i, &mut out);
                }
            }
        }
    }
}
