//! The builders' own checks: literal frames, lengths and checksums verified from scratch,
//! fragments reassembled, and never a panic.

mod tests {
    use dataplane::wire::checksum::{checksum, fold, pseudo_header_v4, pseudo_header_v6, sum};
    use dataplane::wire::ethernet::{EthernetAddress, Vlan};
    use dataplane::wire::ike::{exchange, flags as ike_flags, notify_type, payload_type};
    use dataplane::wire::ip_proto;
    use proptest::prelude::*;
    use std::net::{Ipv4Addr, Ipv6Addr};
    use testkit::*;

    const CLIENT: Ipv4Addr = Ipv4Addr::new(198, 18, 64, 1);
    const CLIENT6: Ipv6Addr = Ipv6Addr::new(0x2001, 2, 0, 0x64, 0, 0, 0, 1);

    fn l2() -> L2 {
        L2::new(lab::ROUTER_MAC, lab::CLIENT_PORT_MAC)
    }

    fn be16(b: &[u8], at: usize) -> u16 {
        u16::from_be_bytes([b[at], b[at + 1]])
    }

    /// Checks an untagged IPv4 frame's lengths and checksums; returns (protocol, L4 bytes).
    fn verify_ipv4(frame: &[u8], l2_len: usize) -> (u8, Vec<u8>) {
        let ip = &frame[l2_len..];
        assert_eq!(ip[0] >> 4, 4);
        let ihl = usize::from(ip[0] & 0x0f) * 4;
        assert_eq!(usize::from(be16(ip, 2)), ip.len(), "total length");
        assert_eq!(checksum(&ip[..ihl]), 0, "IPv4 header checksum");
        let src = Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]);
        let dst = Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19]);
        let l4 = &ip[ihl..];
        let proto = ip[9];
        let pseudo = pseudo_header_v4(src, dst, proto, l4.len() as u16);
        match proto {
            ip_proto::UDP => {
                assert_eq!(usize::from(be16(l4, 4)), l4.len(), "UDP length");
                if be16(l4, 6) != 0 {
                    assert_eq!(!fold(sum(pseudo, l4)), 0, "UDP checksum");
                }
            }
            ip_proto::TCP => assert_eq!(!fold(sum(pseudo, l4)), 0, "TCP checksum"),
            ip_proto::ICMP => assert_eq!(checksum(l4), 0, "ICMP checksum"),
            _ => {}
        }
        (proto, l4.to_vec())
    }

    /// Checks an IPv6 frame; returns (upper protocol, headers seen, L4 bytes).
    fn verify_ipv6(frame: &[u8], l2_len: usize) -> (u8, Vec<u8>, Vec<u8>) {
        let ip = &frame[l2_len..];
        assert_eq!(ip[0] >> 4, 6);
        assert_eq!(usize::from(be16(ip, 4)) + 40, ip.len(), "payload length");
        let src = Ipv6Addr::from(<[u8; 16]>::try_from(&ip[8..24]).unwrap());
        let dst = Ipv6Addr::from(<[u8; 16]>::try_from(&ip[24..40]).unwrap());
        let (mut next, mut at, mut chain) = (ip[6], 40, Vec::new());
        while matches!(next, 0 | 43 | 44 | 60) {
            chain.push(next);
            let len = if next == 44 {
                8
            } else {
                (usize::from(ip[at + 1]) + 1) * 8
            };
            next = ip[at];
            at += len;
        }
        let l4 = &ip[at..];
        if matches!(next, ip_proto::UDP | ip_proto::TCP | ip_proto::ICMPV6) {
            let pseudo = pseudo_header_v6(&src, &dst, next, l4.len() as u32);
            assert_eq!(!fold(sum(pseudo, l4)), 0, "upper-layer checksum");
        }
        (next, chain, l4.to_vec())
    }

    #[test]
    fn ipv4_udp_literal() {
        let opts = Ipv4Opts {
            ident: 0x1234,
            dont_frag: true,
            ..Ipv4Opts::default()
        };
        let l4 = L4::Udp {
            src: 500,
            dst: 500,
            payload: b"vpnlb",
        };
        let f = ipv4(&l2(), CLIENT, lab::VIP_V4, &opts, &l4);
        #[rustfmt::skip]
        let expected = [
            0x02, 0, 0, 0, 0x01, 0x01, 0x02, 0, 0, 0, 0x01, 0xfe, 0x08, 0x00,
            0x45, 0x00, 0x00, 0x21, 0x12, 0x34, 0x40, 0x00, 0x40, 0x11, 0x5c, 0x0e,
            198, 18, 64, 1, 198, 18, 0, 100,
            0x01, 0xf4, 0x01, 0xf4, 0x00, 0x0d, 0xe8, 0x84, b'v', b'p', b'n', b'l', b'b',
        ];
        assert_eq!(f, expected);
        verify_ipv4(&f, 14);
    }

    #[test]
    fn ipv4_tcp_syn_literal() {
        let l4 = L4::Tcp {
            src: 40000,
            dst: 443,
            seq: 1,
            ack: 0,
            flags: tcp_flags::SYN,
            payload: &[],
        };
        let f = ipv4(
            &l2(),
            Ipv4Addr::new(198, 18, 64, 2),
            lab::VIP_V4,
            &Ipv4Opts::default(),
            &l4,
        );
        assert_eq!(f.len(), 54);
        #[rustfmt::skip]
        let tcp = [
            0x9c, 0x40, 0x01, 0xbb, 0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x02, 0xfa, 0xf0, 0x4a, 0x6a,
            0, 0,
        ];
        assert_eq!(&f[34..], &tcp);
        assert_eq!(verify_ipv4(&f, 14).0, ip_proto::TCP);
    }

    #[test]
    fn ipv4_icmp_echo_and_raw_esp() {
        let l4 = L4::Icmpv4 {
            msg_type: 8,
            code: 0,
            rest: 0x0001_0002,
            payload: b"ping",
        };
        let f = ipv4(&l2(), CLIENT, lab::VIP_V4, &Ipv4Opts::default(), &l4);
        let (proto, icmp) = verify_ipv4(&f, 14);
        assert_eq!(proto, ip_proto::ICMP);
        assert_eq!(&icmp[..2], &[8, 0]);
        assert_eq!(&icmp[4..], &[0, 1, 0, 2, b'p', b'i', b'n', b'g']);

        let esp = L4::Esp {
            spi: 0xc0ffee01,
            seq: 7,
            payload: &[0xaa; 40],
        };
        let f = ipv4(&l2(), CLIENT, lab::VIP_V4, &Ipv4Opts::default(), &esp);
        let (proto, l4) = verify_ipv4(&f, 14);
        assert_eq!(proto, ip_proto::ESP);
        assert_eq!(&l4[..8], &[0xc0, 0xff, 0xee, 0x01, 0, 0, 0, 7]);
        assert_eq!(l4.len(), 48);
    }

    #[test]
    fn udp_checksum_zero_and_ffff() {
        let opts = Ipv4Opts {
            udp_checksum: false,
            ..Ipv4Opts::default()
        };
        let l4 = L4::Udp {
            src: 4500,
            dst: 4500,
            payload: &NATT_KEEPALIVE,
        };
        let f = ipv4(&l2(), CLIENT, lab::VIP_V4, &opts, &l4);
        assert_eq!(&f[40..42], &[0, 0]);
        assert_eq!(f[42], 0xff);
        // Find a payload whose checksum computes to 0: it must be sent as 0xffff.
        let found = (0..=u16::MAX).find_map(|v| {
            let p = v.to_be_bytes();
            let l4 = L4::Udp {
                src: 1,
                dst: 2,
                payload: &p,
            };
            let f = ipv4(&l2(), CLIENT, lab::VIP_V4, &Ipv4Opts::default(), &l4);
            (be16(&f, 40) == 0xffff).then_some(f)
        });
        let f = found.expect("some payload sums to zero");
        verify_ipv4(&f, 14);
    }

    #[test]
    fn ipv4_options_are_padded() {
        let opts = Ipv4Opts {
            options: vec![0x94, 0x04, 0x00, 0x00, 0x01], // Router Alert + NOP
            ..Ipv4Opts::default()
        };
        let l4 = L4::Raw {
            protocol: 253,
            payload: &[1, 2, 3],
        };
        let f = ipv4(&l2(), CLIENT, lab::VIP_V4, &opts, &l4);
        assert_eq!(f[14], 0x47); // IHL 7: 20 + 8
        assert_eq!(&f[34..42], &[0x94, 0x04, 0x00, 0x00, 0x01, 0, 0, 0]);
        assert_eq!(&f[42..], &[1, 2, 3]);
        verify_ipv4(&f, 14);
        // More than 40 option bytes: only 40 kept.
        let opts = Ipv4Opts {
            options: vec![1; 50],
            ..Ipv4Opts::default()
        };
        let f = ipv4(&l2(), CLIENT, lab::VIP_V4, &opts, &l4);
        assert_eq!(f[14], 0x4f);
        verify_ipv4(&f, 14);
    }

    #[test]
    fn oversized_payloads_are_cut_to_fit() {
        let big = vec![0x11; 70_000];
        let l4 = L4::Udp {
            src: 1,
            dst: 2,
            payload: &big,
        };
        let f = ipv4(&l2(), CLIENT, lab::VIP_V4, &Ipv4Opts::default(), &l4);
        assert_eq!(f.len(), 14 + 65_535);
        verify_ipv4(&f, 14);
        let f = ipv6(&l2(), &CLIENT6, &lab::VIP_V6, 64, &[], &l4);
        assert_eq!(f.len(), 14 + 40 + 65_535);
        verify_ipv6(&f, 14);
        // Extension headers that do not fit are dropped rather than mis-described.
        let ext = vec![Ipv6Ext::DestOpts(vec![0; 2046]); 40];
        let f = ipv6(&l2(), &CLIENT6, &lab::VIP_V6, 64, &ext, &l4);
        let (_, chain, _) = verify_ipv6(&f, 14);
        assert_eq!(chain.len(), 31);
    }

    #[test]
    fn vlan_tags_present() {
        let l4 = L4::Udp {
            src: 1,
            dst: 2,
            payload: &[],
        };
        let one = l2().with_vlan(Vlan::Single { vid: 100 });
        let f = ipv4(&one, CLIENT, lab::VIP_V4, &Ipv4Opts::default(), &l4);
        assert_eq!(&f[12..18], &[0x81, 0x00, 0x00, 100, 0x08, 0x00]);
        verify_ipv4(&f, 18);
        let two = l2().with_vlan(Vlan::Double {
            outer: 0x1001, // masked to 1
            inner: 4095,
        });
        let f = ipv6(&two, &CLIENT6, &lab::VIP_V6, 64, &[], &l4);
        assert_eq!(
            &f[12..22],
            &[0x88, 0xa8, 0x00, 0x01, 0x81, 0x00, 0x0f, 0xff, 0x86, 0xdd]
        );
        verify_ipv6(&f, 22);
    }

    #[test]
    fn ipv6_extension_chain() {
        let ext = [
            Ipv6Ext::HopByHop(vec![5, 2, 0, 0]), // Router Alert: 2+4 = 6, pad to 8 with... none
            Ipv6Ext::Routing {
                routing_type: 4,
                segments_left: 0,
                data: vec![0; 4],
            },
            Ipv6Ext::DestOpts(vec![0x1e, 1, 0xaa]), // 2+3 = 5, PadN 3
            Ipv6Ext::Fragment {
                offset: 0,
                more: false,
                ident: 9,
            },
        ];
        let l4 = L4::Udp {
            src: 500,
            dst: 500,
            payload: b"x",
        };
        let f = ipv6(&l2(), &CLIENT6, &lab::VIP_V6, 64, &ext, &l4);
        assert_eq!(&f[12..14], &[0x86, 0xdd]);
        assert_eq!(f[14 + 7], 64);
        let (next, chain, l4b) = verify_ipv6(&f, 14);
        assert_eq!(next, ip_proto::UDP);
        assert_eq!(chain, [0, 43, 60, 44]);
        assert_eq!(l4b.len(), 9);
        let e = &f[54..];
        assert_eq!(&e[..8], &[43, 0, 5, 2, 0, 0, 0x01, 0x00]); // PadN of 2
        assert_eq!(&e[8..16], &[60, 0, 4, 0, 0, 0, 0, 0]);
        assert_eq!(&e[16..24], &[44, 0, 0x1e, 1, 0xaa, 0x01, 0x01, 0x00]);
        assert_eq!(&e[24..32], &[17, 0, 0, 0, 0, 0, 0, 9]);
        // Pad1 case: 2 + 5 option bytes.
        let f = ipv6(
            &l2(),
            &CLIENT6,
            &lab::VIP_V6,
            64,
            &[Ipv6Ext::HopByHop(vec![0x1e, 3, 1, 2, 3])],
            &l4,
        );
        assert_eq!(&f[54..62], &[17, 0, 0x1e, 3, 1, 2, 3, 0]);
        verify_ipv6(&f, 14);
    }

    #[test]
    fn fragment_ipv4_reassembles() {
        let payload: Vec<u8> = (0..1600u32).map(|i| i as u8).collect();
        let l4 = L4::Udp {
            src: 4500,
            dst: 4500,
            payload: &payload,
        };
        let opts = Ipv4Opts {
            ident: 0xbeef,
            dont_frag: true,
            // Router Alert (copied, 4 bytes), timestamp-ish option without copy flag (4 bytes).
            options: vec![0x94, 0x04, 0, 0, 0x44, 0x04, 0, 0],
            ..Ipv4Opts::default()
        };
        let f = ipv4(
            &l2().with_vlan(Vlan::Single { vid: 7 }),
            CLIENT,
            lab::VIP_V4,
            &opts,
            &l4,
        );
        let frags = fragment_ipv4(&f, 1500);
        assert_eq!(frags.len(), 2);
        let mut data = Vec::new();
        for (i, fr) in frags.iter().enumerate() {
            assert_eq!(&fr[..18], &f[..18]);
            let ip = &fr[18..];
            assert!(ip.len() <= 1500);
            assert_eq!(checksum(&ip[..usize::from(ip[0] & 0xf) * 4]), 0);
            assert_eq!(be16(ip, 4), 0xbeef);
            let field = be16(ip, 6);
            assert_eq!(field & 0x4000, 0, "DF cleared");
            assert_eq!(usize::from(field & 0x1fff) * 8, data.len());
            assert_eq!(field & 0x2000 != 0, i == 0, "MF");
            assert_eq!(usize::from(be16(ip, 2)), ip.len());
            let ihl = usize::from(ip[0] & 0xf) * 4;
            assert_eq!(ihl, if i == 0 { 28 } else { 24 });
            if i == 1 {
                assert_eq!(&ip[20..24], &[0x94, 0x04, 0, 0]);
            }
            data.extend_from_slice(&ip[ihl..]);
        }
        assert_eq!(frags[0].len() - 18 - 28, 1472);
        assert_eq!(data, &f[18 + 28..]);
        // Fits: unchanged. Not IPv4 / too small an MTU: unchanged.
        assert_eq!(fragment_ipv4(&f, 2000), vec![f.clone()]);
        assert_eq!(fragment_ipv4(&f, 30), vec![f.clone()]);
        let arp = arp(
            &l2(),
            1,
            lab::ROUTER_MAC,
            CLIENT,
            EthernetAddress([0; 6]),
            CLIENT,
        );
        assert_eq!(fragment_ipv4(&arp, 20), vec![arp.clone()]);
    }

    #[test]
    fn fragment_ipv6_reassembles() {
        let payload: Vec<u8> = (0..3000u32).map(|i| (i * 7) as u8).collect();
        let l4 = L4::Udp {
            src: 4500,
            dst: 4500,
            payload: &payload,
        };
        let ext = [
            Ipv6Ext::HopByHop(vec![]),
            Ipv6Ext::DestOpts(vec![]),
            Ipv6Ext::Routing {
                routing_type: 4,
                segments_left: 0,
                data: vec![],
            },
            Ipv6Ext::DestOpts(vec![0x1e, 0]),
        ];
        let f = ipv6(&l2(), &CLIENT6, &lab::VIP_V6, 64, &ext, &l4);
        let frags = fragment_ipv6(&f, 1280, 0x1234_5678);
        assert_eq!(frags.len(), 3);
        let mut data = Vec::new();
        for (i, fr) in frags.iter().enumerate() {
            let ip = &fr[14..];
            assert!(ip.len() <= 1280);
            assert_eq!(usize::from(be16(ip, 4)) + 40, ip.len());
            // Unfragmentable: HBH, DestOpts, Routing (24 bytes); then the Fragment header.
            assert_eq!(&ip[..4], &f[14..18]);
            assert_eq!(ip[6], 0);
            assert_eq!(&ip[40..42], &f[54..56]);
            assert_eq!(ip[48], 43);
            assert_eq!(ip[56], 44, "Routing now names the Fragment header");
            let frag = &ip[64..72];
            assert_eq!(
                frag[0], 60,
                "Fragment names the trailing Destination Options"
            );
            let field = be16(frag, 2);
            assert_eq!(usize::from(field >> 3) * 8, data.len());
            assert_eq!(field & 1 != 0, i < 2);
            assert_eq!(&frag[4..], &[0x12, 0x34, 0x56, 0x78]);
            data.extend_from_slice(&ip[72..]);
        }
        assert_eq!(data, &f[14 + 64..]);
        // No extension headers: the Fragment header goes right after the IPv6 header.
        let f = ipv6(&l2(), &CLIENT6, &lab::VIP_V6, 64, &[], &l4);
        let frags = fragment_ipv6(&f, 1500, 1);
        assert_eq!(frags.len(), 3);
        assert_eq!(frags[0][14 + 6], 44);
        assert_eq!(frags[0][54], 17);
        assert_eq!(frags[0].len(), 14 + 1496);
        assert_eq!(fragment_ipv6(&f, 9000, 1), vec![f.clone()]);
    }

    #[test]
    fn arp_literal() {
        let f = arp(
            &L2::new(lab::ROUTER_MAC, EthernetAddress::BROADCAST),
            1,
            lab::ROUTER_MAC,
            Ipv4Addr::new(198, 18, 0, 1),
            EthernetAddress([0; 6]),
            lab::VIP_V4,
        );
        #[rustfmt::skip]
        let expected = [
            0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02, 0, 0, 0, 0x01, 0xfe, 0x08, 0x06,
            0, 1, 0x08, 0, 6, 4, 0, 1, 0x02, 0, 0, 0, 0x01, 0xfe, 198, 18, 0, 1,
            0, 0, 0, 0, 0, 0, 198, 18, 0, 100,
        ];
        assert_eq!(f, expected);
        let mut padded = f.clone();
        pad_to_min_frame(&mut padded);
        assert_eq!(padded.len(), 60);
        assert_eq!(&padded[..42], &expected);
    }

    #[test]
    fn neighbor_solicit_literal() {
        let target = lab::VIP_V6;
        let sn = solicited_node(&target);
        assert_eq!(sn, "ff02::1:ff00:100".parse::<Ipv6Addr>().unwrap());
        let l2 = L2::new(lab::ROUTER_MAC, EthernetAddress::ipv6_multicast(&sn));
        let f = neighbor_solicit(&l2, &CLIENT6, &target, Some(lab::ROUTER_MAC));
        assert_eq!(&f[..6], &[0x33, 0x33, 0xff, 0x00, 0x01, 0x00]);
        assert_eq!(f[14 + 7], 255);
        assert_eq!(&f[14 + 24..14 + 40], &sn.octets());
        let icmp = &f[54..];
        assert_eq!(&icmp[..8], &[135, 0, 0x33, 0x35, 0, 0, 0, 0]);
        assert_eq!(&icmp[8..24], &target.octets());
        assert_eq!(&icmp[24..], &[1, 1, 0x02, 0, 0, 0, 0x01, 0xfe]);
        verify_ipv6(&f, 14);
        let dad = neighbor_solicit(&l2, &Ipv6Addr::UNSPECIFIED, &target, None);
        assert_eq!(dad.len(), 54 + 24);
        verify_ipv6(&dad, 14);

        let na = neighbor_advert(
            &l2,
            &target,
            &CLIENT6,
            &target,
            lab::CLIENT_PORT_MAC,
            true,
            true,
        );
        let icmp = &na[54..];
        assert_eq!(&icmp[..1], &[136]);
        assert_eq!(&icmp[4..8], &[0x60, 0, 0, 0]);
        assert_eq!(&icmp[24..], &[2, 1, 0x02, 0, 0, 0, 0x01, 0x01]);
        verify_ipv6(&na, 14);
    }

    /// Walks an IKE message: checks the header length and payload lengths; returns
    /// (payload type, body) in order.
    fn ike_payloads(msg: &[u8]) -> Vec<(u8, Vec<u8>)> {
        assert_eq!(msg[17], 0x20, "version 2.0");
        assert_eq!(
            u32::from_be_bytes(msg[24..28].try_into().unwrap()) as usize,
            msg.len()
        );
        let (mut next, mut at, mut out) = (msg[16], 28, Vec::new());
        while next != 0 {
            let len = usize::from(be16(msg, at + 2));
            assert!(len >= 4 && at + len <= msg.len(), "payload length");
            out.push((next, msg[at + 4..at + len].to_vec()));
            if next == payload_type::SK {
                at += len;
                break;
            }
            next = msg[at];
            at += len;
        }
        assert_eq!(at, msg.len(), "payloads fill the message");
        out
    }

    #[test]
    fn ike_sa_init_request_layout() {
        let nonce = [0x4e; 32];
        let frag: &[u8] = &[];
        let msg = ike_sa_init_request(
            0x0102_0304_0506_0708,
            &nonce,
            19,
            64,
            &[(notify_type::IKEV2_FRAGMENTATION_SUPPORTED, frag)],
        );
        assert_eq!(
            &msg[..16],
            &[1, 2, 3, 4, 5, 6, 7, 8, 0, 0, 0, 0, 0, 0, 0, 0]
        );
        assert_eq!(&msg[18..24], &[34, 0x08, 0, 0, 0, 0]);
        let p = ike_payloads(&msg);
        let types: Vec<u8> = p.iter().map(|(t, _)| *t).collect();
        assert_eq!(types, [33, 34, 40, 41, 41, 41]);
        #[rustfmt::skip]
        let sa = [
            0, 0, 0, 36, 1, 1, 0, 3,
            3, 0, 0, 12, 1, 0, 0, 20, 0x80, 0x0e, 0x01, 0x00,
            3, 0, 0, 8, 2, 0, 0, 5,
            0, 0, 0, 8, 4, 0, 0, 19,
        ];
        assert_eq!(p[0].1, sa);
        assert_eq!(&p[1].1[..4], &[0, 19, 0, 0]);
        assert_eq!(p[1].1.len(), 4 + 64);
        assert_eq!(p[2].1, nonce);
        assert_eq!(&p[3].1[..4], &[0, 0, 0x40, 0x04]);
        assert_eq!(p[3].1.len(), 24);
        assert_eq!(&p[4].1[..4], &[0, 0, 0x40, 0x05]);
        assert_eq!(p[5].1, [0, 0, 0x40, 0x2e]);
        assert_eq!(msg.len(), 28 + 40 + 72 + 36 + 28 + 28 + 8);
    }

    #[test]
    fn ike_sa_init_response_and_message() {
        let msg = ike_sa_init_response(1, 2, &[0; 32], 31, 32, &[]);
        assert_eq!(&msg[8..16], &2u64.to_be_bytes());
        assert_eq!(msg[19], ike_flags::RESPONSE);
        assert_eq!(ike_payloads(&msg).len(), 5);
        // Over-long KE data is cut to fit the payload length.
        let msg = ike_sa_init_request(1, &[0; 32], 31, 100_000, &[]);
        let p = ike_payloads(&msg);
        assert_eq!(p[1].1.len(), 65_531);

        let body = vec![0xee; 1500];
        let m = ike_message(1, 2, exchange::IKE_AUTH, ike_flags::INITIATOR, 1, &body);
        assert_eq!(&m[16..20], &[46, 0x20, 35, 0x08]);
        assert_eq!(&m[20..24], &[0, 0, 0, 1]);
        assert_eq!(m[28], payload_type::IDI);
        let p = ike_payloads(&m);
        assert_eq!(p, vec![(46, body.clone())]);
        let r = ike_message(1, 2, exchange::IKE_AUTH, ike_flags::RESPONSE, 1, &body);
        assert_eq!(r[28], payload_type::IDR);
        let i = ike_message(1, 2, exchange::INFORMATIONAL, 0, 2, &[]);
        assert_eq!((i[28], i.len()), (0, 32));

        let wrapped = non_esp_marker(&m);
        assert_eq!(&wrapped[..4], &[0, 0, 0, 0]);
        assert_eq!(&wrapped[4..], &m[..]);
    }

    #[test]
    fn esp_payload_layout() {
        let e = esp_payload(0xcafe_0001, 42, 120);
        assert_eq!(e.len(), 120);
        assert_eq!(&e[..8], &[0xca, 0xfe, 0, 1, 0, 0, 0, 42]);
        assert_ne!(&e[8..16], &[0; 8]);
        assert_eq!(e, esp_payload(0xcafe_0001, 42, 120), "deterministic");
        assert_ne!(e[8..], esp_payload(0xcafe_0001, 43, 120)[8..]);
        assert_eq!(esp_payload(1, 1, 0).len(), 8);
    }

    /// Returns (type, data) of each extension in a (D)TLS ClientHello body's extension block.
    fn extensions(mut ext: &[u8]) -> Vec<(u16, Vec<u8>)> {
        let mut out = Vec::new();
        while !ext.is_empty() {
            let len = usize::from(be16(ext, 2));
            out.push((be16(ext, 0), ext[4..4 + len].to_vec()));
            ext = &ext[4 + len..];
        }
        out
    }

    #[test]
    fn tls_client_hello_layout() {
        let r = tls_client_hello(Some("vpn.example.net"));
        assert_eq!(&r[..3], &[22, 0x03, 0x01]);
        assert_eq!(usize::from(be16(&r, 3)), r.len() - 5);
        assert_eq!(r[5], 1);
        let hs_len = u32::from_be_bytes([0, r[6], r[7], r[8]]) as usize;
        assert_eq!(hs_len, r.len() - 9);
        let b = &r[9..];
        assert_eq!(&b[..2], &[3, 3]);
        assert_eq!(b[34], 32);
        let cs_at = 35 + 32;
        let cs_len = usize::from(be16(b, cs_at));
        let comp_at = cs_at + 2 + cs_len;
        assert_eq!(&b[comp_at..comp_at + 2], &[1, 0]);
        let ext_len = usize::from(be16(b, comp_at + 2));
        assert_eq!(comp_at + 4 + ext_len, b.len());
        let ext = extensions(&b[comp_at + 4..]);
        let types: Vec<u16> = ext.iter().map(|(t, _)| *t).collect();
        assert_eq!(types, [0, 10, 13, 43, 45, 51]);
        let mut sni = vec![0, 18, 0, 0, 15];
        sni.extend_from_slice(b"vpn.example.net");
        assert_eq!(ext[0].1, sni);
        assert_eq!(ext[3].1, [4, 3, 4, 3, 3]);
        assert_eq!(&ext[5].1[..6], &[0, 36, 0, 0x1d, 0, 32]);

        let no_sni = tls_client_hello(None);
        assert_eq!(usize::from(be16(&no_sni, 3)), no_sni.len() - 5);
        assert_eq!(no_sni.len(), r.len() - 24);
        let long = "a".repeat(10_000);
        let cut = tls_client_hello(Some(&long));
        assert_eq!(cut.len(), r.len() - 15 + MAX_SNI_LEN);
    }

    #[test]
    fn tls_server_hello_and_data() {
        let r = tls_server_hello();
        assert_eq!(&r[..3], &[22, 3, 3]);
        assert_eq!(usize::from(be16(&r, 3)), r.len() - 5);
        assert_eq!(r[5], 2);
        let b = &r[9..];
        assert_eq!(&b[67..70], &[0x13, 0x01, 0]);
        let ext = extensions(&b[72..]);
        assert_eq!(ext[0], (43, vec![3, 4]));
        assert_eq!(ext[1].0, 51);
        let d = tls_application_data(1, 300);
        assert_eq!(&d[..5], &[23, 3, 3, 0x01, 0x2c]);
        assert_eq!(d.len(), 305);
    }

    #[test]
    fn dtls_layouts() {
        let first = dtls_client_hello(&[], Some("vpn.example.net"));
        assert_eq!(&first[..13], &{
            let mut h = [22, 0xfe, 0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
            h[11..].copy_from_slice(&((first.len() - 13) as u16).to_be_bytes());
            h
        });
        let hs = &first[13..];
        assert_eq!(hs[0], 1);
        let len = u32::from_be_bytes([0, hs[1], hs[2], hs[3]]) as usize;
        assert_eq!(len, hs.len() - 12);
        assert_eq!(&hs[4..9], &[0, 0, 0, 0, 0]); // message_seq 0, fragment offset 0
        assert_eq!(&hs[9..12], &hs[1..4]);
        let b = &hs[12..];
        assert_eq!(&b[..2], &[0xfe, 0xfd]);
        assert_eq!((b[34], b[35]), (0, 0), "no session id, no cookie");

        let cookie = [0xc0; 20];
        let second = dtls_client_hello(&cookie, Some("vpn.example.net"));
        assert_eq!(second.len(), first.len() + 20);
        assert_eq!(&second[3..11], &[0, 0, 0, 0, 0, 0, 0, 1]);
        assert_eq!(&second[13 + 4..13 + 6], &[0, 1]);
        assert_eq!(second[13 + 12 + 35], 20);
        assert_eq!(&second[13 + 12 + 36..13 + 12 + 56], &cookie);
        let b = &second[25..];
        let cs_at = 36 + 20;
        let comp_at = cs_at + 2 + usize::from(be16(b, cs_at));
        let ext = extensions(&b[comp_at + 4..]);
        let types: Vec<u16> = ext.iter().map(|(t, _)| *t).collect();
        assert_eq!(types, [0, 10, 11, 13]);

        let hvr = dtls_hello_verify_request(&cookie);
        assert_eq!(hvr.len(), 13 + 12 + 3 + 20);
        assert_eq!(hvr[13], 3);
        assert_eq!(&hvr[25..28], &[0xfe, 0xff, 20]);

        let d = dtls_application_data(1, 5, 100);
        assert_eq!(&d[..13], &[23, 0xfe, 0xfd, 0, 1, 0, 0, 0, 0, 0, 5, 0, 100]);
        assert_eq!(d.len(), 113);
    }

    proptest! {
        #[test]
        fn ipv4_l4_checksums_verify(
            kind in 0..5u8,
            src in any::<u16>(),
            dst in any::<u16>(),
            payload in proptest::collection::vec(any::<u8>(), 0..300),
            ip_src in any::<[u8; 4]>(),
            ip_dst in any::<[u8; 4]>(),
            options in proptest::collection::vec(any::<u8>(), 0..44),
        ) {
            let l4 = match kind {
                0 => L4::Udp { src, dst, payload: &payload },
                1 => L4::Tcp { src, dst, seq: u32::from(src), ack: u32::from(dst), flags: dst, payload: &payload },
                2 => L4::Icmpv4 { msg_type: src as u8, code: dst as u8, rest: 7, payload: &payload },
                3 => L4::Esp { spi: u32::from(src), seq: 1, payload: &payload },
                // Raw: any protocol the verifier would not parse as UDP, TCP or ICMP.
                _ => L4::Raw {
                    protocol: match src as u8 { 1 | 6 | 17 => 253, p => p },
                    payload: &payload,
                },
            };
            let opts = Ipv4Opts { options, ..Ipv4Opts::default() };
            let f = ipv4(&l2(), ip_src.into(), ip_dst.into(), &opts, &l4);
            let (proto, l4b) = verify_ipv4(&f, 14);
            prop_assert_eq!(proto, l4.protocol());
            prop_assert_eq!(l4b.len(), l4.header_len() + payload.len());
            prop_assert!(l4b.ends_with(&payload));
        }

        #[test]
        fn ipv6_chain_and_checksums_verify(
            kinds in proptest::collection::vec(0..4u8, 0..5),
            lens in proptest::collection::vec(0..40usize, 5),
            payload in proptest::collection::vec(any::<u8>(), 0..300),
            icmp in any::<bool>(),
        ) {
            let ext: Vec<Ipv6Ext> = kinds.iter().zip(&lens).map(|(k, &n)| match k {
                0 => Ipv6Ext::HopByHop(vec![0x1e; n]),
                1 => Ipv6Ext::DestOpts(vec![0x1e; n]),
                2 => Ipv6Ext::Routing { routing_type: 4, segments_left: 0, data: vec![0; n] },
                _ => Ipv6Ext::Fragment { offset: n as u16, more: true, ident: 1 },
            }).collect();
            let l4 = if icmp {
                L4::Icmpv6 { msg_type: 128, code: 0, rest: 1, payload: &payload }
            } else {
                L4::Udp { src: 1, dst: 2, payload: &payload }
            };
            let f = ipv6(&l2(), &CLIENT6, &lab::VIP_V6, 64, &ext, &l4);
            let (next, chain, l4b) = verify_ipv6(&f, 14);
            prop_assert_eq!(next, l4.protocol());
            let expected: Vec<u8> = ext.iter().map(Ipv6Ext::protocol).collect();
            prop_assert_eq!(chain, expected);
            prop_assert_eq!(l4b.len(), 8 + payload.len());
        }

        #[test]
        fn fragments_reassemble(
            len in 0..4000usize,
            mtu in 68..2000usize,
            v6 in any::<bool>(),
        ) {
            let payload: Vec<u8> = (0..len).map(|i| (i * 31 % 251) as u8).collect();
            let l4 = L4::Udp { src: 1, dst: 2, payload: &payload };
            let (f, hdr) = if v6 {
                (ipv6(&l2(), &CLIENT6, &lab::VIP_V6, 64, &[], &l4), 54)
            } else {
                (ipv4(&l2(), CLIENT, lab::VIP_V4, &Ipv4Opts::default(), &l4), 34)
            };
            let frags = if v6 { fragment_ipv6(&f, mtu, 5) } else { fragment_ipv4(&f, mtu) };
            if f.len() - 14 <= mtu {
                prop_assert_eq!(frags, vec![f]);
            } else {
                let mut data = Vec::new();
                for fr in &frags {
                    prop_assert!(fr.len() - 14 <= mtu);
                    let (off, start) = if v6 {
                        (usize::from(be16(fr, hdr + 2) >> 3) * 8, hdr + 8)
                    } else {
                        prop_assert_eq!(checksum(&fr[14..34]), 0);
                        (usize::from(be16(fr, 20) & 0x1fff) * 8, hdr)
                    };
                    prop_assert_eq!(off, data.len());
                    data.extend_from_slice(&fr[start..]);
                }
                prop_assert_eq!(&data[..], &f[hdr..]);
            }
        }

        #[test]
        fn fragmenting_garbage_never_panics(
            frame in proptest::collection::vec(any::<u8>(), 0..200),
            mtu in 0..300usize,
        ) {
            let _ = fragment_ipv4(&frame, mtu);
            let _ = fragment_ipv6(&frame, mtu, 1);
            let mut v4 = frame.clone();
            if v4.len() > 14 { v4[12] = 0x08; v4[13] = 0; v4[14] = 0x45; }
            let _ = fragment_ipv4(&v4, mtu);
            let mut v6 = frame;
            if v6.len() > 14 { v6[12] = 0x86; v6[13] = 0xdd; v6[14] = 0x60; }
            let _ = fragment_ipv6(&v6, mtu, 1);
        }

        #[test]
        fn app_builders_never_panic(
            sni in proptest::option::of(".{0,300}"),
            cookie in proptest::collection::vec(any::<u8>(), 0..300),
            ke in 0..2000usize,
            len in 0..70_000usize,
        ) {
            let r = tls_client_hello(sni.as_deref());
            prop_assert_eq!(usize::from(be16(&r, 3)), r.len() - 5);
            let d = dtls_client_hello(&cookie, sni.as_deref());
            prop_assert_eq!(usize::from(be16(&d, 11)), d.len() - 13);
            let m = ike_sa_init_request(1, &[0; 32], 19, ke, &[(16430, &cookie)]);
            prop_assert_eq!(ike_payloads(&m).len(), 6);
            let _ = tls_application_data(1, len);
            let _ = dtls_application_data(1, 1, len);
            prop_assert_eq!(esp_payload(1, 2, len).len(), len.max(8));
        }
    }
}
