//! Feeds arbitrary bytes through every L2-L4 view, the way the pipeline walks a frame:
//! Ethernet -> ARP / IPv4 / IPv6 (extension-header walk) -> UDP (whole and partial), TCP,
//! ICMP, ICMPv6 (+ neighbor discovery), ESP, VRRP. Besides "never panics", it checks that every
//! slice handed out lies inside the input and that lengths agree with what `new_checked`
//! validated.
#![no_main]
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use dataplane::wire::arp::ArpPacket;
use dataplane::wire::esp::EspPacket;
use dataplane::wire::ethernet::{ethertype, EthernetFrame};
use dataplane::wire::icmp::{self, Icmpv4Packet};
use dataplane::wire::icmpv6::{self, Icmpv6Packet, NdpNeighbor};
use dataplane::wire::ip_proto;
use dataplane::wire::ipv4::Ipv4Packet;
use dataplane::wire::ipv6::Ipv6Packet;
use dataplane::wire::tcp::TcpPacket;
use dataplane::wire::udp::UdpPacket;
use dataplane::wire::vrrp::{self as vrrp_wire, Family, VrrpPacket};
use libfuzzer_sys::fuzz_target;

/// Whether `inner` lies within `outer` (the views are zero-copy).
fn within(outer: &[u8], inner: &[u8]) -> bool {
    let o = outer.as_ptr_range();
    let i = inner.as_ptr_range();
    inner.is_empty() || (o.start <= i.start && i.end <= o.end)
}

/// Addresses handed to the checksum verifiers of the L4 views.
enum Ip {
    V4(Ipv4Addr, Ipv4Addr),
    V6(Ipv6Addr, Ipv6Addr),
}

fn arp(data: &[u8]) {
    let Ok(p) = ArpPacket::new_checked(data) else {
        return;
    };
    let _ = (
        p.operation(),
        p.sender_hw(),
        p.sender_ip(),
        p.target_hw(),
        p.target_ip(),
    );
}

fn ipv4(data: &[u8]) {
    let Ok(p) = Ipv4Packet::new_checked(data) else {
        return;
    };
    assert_eq!(p.version(), 4);
    assert!(p.header_len() >= 20 && p.header_len() <= usize::from(p.total_len()));
    assert_eq!(p.header().len(), p.header_len());
    assert_eq!(p.options().len() + 20, p.header_len());
    assert_eq!(
        p.header_len() + p.payload().len(),
        usize::from(p.total_len())
    );
    assert!(within(data, p.payload()) && within(data, p.options()));
    let _ = (
        p.dscp_ecn(),
        p.ident(),
        p.dont_frag(),
        p.more_frags(),
        p.ttl(),
    );
    let _ = (p.checksum(), p.verify_checksum());
    assert_eq!(p.frag_offset() % 8, 0);
    assert_eq!(p.is_fragment(), p.more_frags() || !p.is_first_fragment());
    let ip = Ip::V4(p.src_addr(), p.dst_addr());
    if p.is_first_fragment() {
        upper(data, p.protocol(), p.payload(), &ip);
    }
}

fn ipv6(data: &[u8]) {
    let Ok(p) = Ipv6Packet::new_checked(data) else {
        return;
    };
    assert_eq!(p.version(), 6);
    assert_eq!(p.payload().len(), usize::from(p.payload_len()));
    assert!(within(data, p.payload()));
    let _ = (p.traffic_class(), p.hop_limit(), p.next_header());
    assert!(p.flow_label() <= 0xf_ffff);
    let ip = Ip::V6(p.src_addr(), p.dst_addr());
    let Ok(up) = p.upper_layer() else {
        return;
    };
    assert!(up.offset >= 40 && up.offset <= 40 + p.payload().len());
    let l4 = p.upper_payload(&up);
    assert_eq!(up.offset + l4.len(), 40 + p.payload().len());
    assert!(within(data, l4));
    if let Some(f) = up.fragment {
        assert_eq!(f.offset % 8, 0);
        let _ = (f.more, f.ident);
    }
    if up.has_upper_header() {
        upper(data, up.protocol, l4, &ip);
    }
}

/// The upper layer at `l4` (maybe only the first fragment of it).
fn upper(data: &[u8], protocol: u8, l4: &[u8], ip: &Ip) {
    match protocol {
        ip_proto::UDP => {
            if let Ok(u) = UdpPacket::new_checked(l4) {
                udp(data, &u, ip);
                assert!(u.is_complete());
                assert_eq!(u.payload().len() + 8, usize::from(u.len()));
                esp(data, u.payload());
            }
            if let Ok(u) = UdpPacket::new_partial(l4) {
                udp(data, &u, ip);
                assert!(u.payload().len() + 8 <= l4.len());
            }
        }
        ip_proto::TCP => {
            let Ok(t) = TcpPacket::new_checked(l4) else {
                return;
            };
            assert_eq!(t.options().len() + 20, t.header_len());
            assert_eq!(t.header_len() + t.payload().len(), l4.len());
            assert!(within(data, t.payload()) && within(data, t.options()));
            let _ = (t.src_port(), t.dst_port(), t.seq_number(), t.ack_number());
            let _ = (t.syn(), t.ack(), t.fin(), t.rst(), t.window(), t.urgent());
            let _ = (t.checksum(), t.flags());
            let _ = match ip {
                Ip::V4(s, d) => t.verify_checksum_v4(*s, *d),
                Ip::V6(s, d) => t.verify_checksum_v6(s, d),
            };
        }
        ip_proto::ICMP => {
            let Ok(m) = Icmpv4Packet::new_checked(l4) else {
                return;
            };
            assert!(within(data, m.data()));
            let _ = (
                m.msg_type(),
                m.code(),
                m.checksum(),
                m.echo_ident(),
                m.echo_seq(),
            );
            let _ = (m.rest_of_header(), m.verify_checksum());
            if icmp::is_error(m.msg_type()) {
                // The quoted packet is parsed like any other IPv4 packet.
                ipv4(m.data());
            }
        }
        ip_proto::ICMPV6 => {
            let Ok(m) = Icmpv6Packet::new_checked(l4) else {
                return;
            };
            assert!(within(data, m.data()));
            let _ = (
                m.msg_type(),
                m.code(),
                m.checksum(),
                m.echo_ident(),
                m.echo_seq(),
            );
            let _ = m.rest_of_header();
            if let Ip::V6(s, d) = ip {
                let _ = m.verify_checksum(s, d);
            }
            if icmpv6::is_error(m.msg_type()) {
                ipv6(m.data());
            }
            if let Ok(n) = NdpNeighbor::new_checked(l4) {
                let _ = (n.target(), n.flags());
                assert!(within(data, n.options()));
                for t in [icmpv6::NDP_OPT_SOURCE_LLADDR, icmpv6::NDP_OPT_TARGET_LLADDR] {
                    let _ = icmpv6::ndp_lladdr_option(n.options(), t);
                }
            }
        }
        ip_proto::ESP => esp(data, l4),
        ip_proto::VRRP => match *ip {
            Ip::V4(s, d) => vrrp(data, l4, Family::Ipv4, IpAddr::V4(s), IpAddr::V4(d)),
            Ip::V6(s, d) => vrrp(data, l4, Family::Ipv6, IpAddr::V6(s), IpAddr::V6(d)),
        },
        _ => {}
    }
}

fn udp(data: &[u8], u: &UdpPacket<&[u8]>, ip: &Ip) {
    assert!(within(data, u.payload()));
    assert!(u.len() >= 8);
    let _ = (u.src_port(), u.dst_port(), u.checksum(), u.is_empty());
    let _ = match ip {
        Ip::V4(s, d) => u.verify_checksum_v4(*s, *d),
        Ip::V6(s, d) => u.verify_checksum_v6(s, d),
    };
}

fn esp(data: &[u8], bytes: &[u8]) {
    let Ok(e) = EspPacket::new_checked(bytes) else {
        return;
    };
    let _ = (e.spi(), e.sequence_number());
    assert_eq!(e.payload().len() + 8, bytes.len());
    assert!(within(data, e.payload()));
}

fn vrrp(data: &[u8], bytes: &[u8], family: Family, src: IpAddr, dst: IpAddr) {
    let Ok(v) = VrrpPacket::new_checked(bytes, family) else {
        return;
    };
    assert_eq!(v.version(), vrrp_wire::VERSION);
    assert_eq!(
        bytes.len(),
        vrrp_wire::HEADER_LEN + usize::from(v.count()) * family.addr_len()
    );
    assert!(within(data, v.address_bytes()));
    assert!(v.max_adver_int() <= vrrp_wire::MAX_ADVER_INT);
    let addrs: Vec<IpAddr> = v.addresses().collect();
    assert_eq!(addrs.len(), usize::from(v.count()));
    assert!(addrs.iter().all(|a| Family::of(a) == family));
    let _ = (v.ipv4_addresses().count(), v.ipv6_addresses().count());
    let valid = v.verify_checksum(src, dst);
    // The emitter re-encodes every advert the view accepts: the same bytes, and the same
    // verdict on the checksum (the one field it computes).
    if v.msg_type() == vrrp_wire::TYPE_ADVERTISEMENT && v.reserved() == 0 {
        let out =
            vrrp_wire::emit_advert(v.vrid(), v.priority(), v.max_adver_int(), &addrs, src, dst)
                .expect("a parsed advert re-encodes");
        assert_eq!(out[..6], bytes[..6]);
        assert_eq!(out[8..], bytes[8..]);
        // Only one's complement's two zeros can tell them apart: a checksum of 0 computed,
        // 0xffff sent.
        assert_eq!(
            out == bytes || (valid && out[6..8] == [0, 0] && v.checksum() == 0xffff),
            valid
        );
    }
}

fuzz_target!(|data: &[u8]| {
    // The bare L3/L4 views too, so the fuzzer need not find a valid Ethernet header first.
    ipv4(data);
    ipv6(data);
    let _ = icmpv6::ndp_lladdr_option(data, icmpv6::NDP_OPT_SOURCE_LLADDR);
    vrrp(
        data,
        data,
        Family::Ipv4,
        IpAddr::V4(Ipv4Addr::new(198, 19, 0, 2)),
        IpAddr::V4(vrrp_wire::VRRP_V4_GROUP),
    );
    vrrp(
        data,
        data,
        Family::Ipv6,
        IpAddr::V6(Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 2)),
        IpAddr::V6(vrrp_wire::VRRP_V6_GROUP),
    );

    let Ok(f) = EthernetFrame::new_checked(data) else {
        return;
    };
    assert_eq!(f.header_len(), f.vlan().header_len());
    assert_eq!(f.header_len() + f.payload().len(), data.len());
    assert!(within(data, f.payload()));
    let _ = (f.dst(), f.src(), f.pcp(), f.dst().is_multicast());
    match f.ethertype() {
        ethertype::ARP => arp(f.payload()),
        ethertype::IPV4 => ipv4(f.payload()),
        ethertype::IPV6 => ipv6(f.payload()),
        _ => {}
    }
});
