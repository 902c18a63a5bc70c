//! Which frames for the appliance itself its control plane cannot do without.
//!
//! Frames the pipeline hands to the control plane (its verdict `ToControl`) travel on two queues:
//! urgent ones — neighbor discovery, answers from the gateways (health probes), VRRP — on one that
//! a flood cannot fill, and the rest (an operator's ssh, pings, whatever a client aims at the
//! appliance's own address) on another that the control thread polices. So a flood at the
//! appliance's address can cost it its ssh, but never its neighbors or its gateways' health.

use std::net::IpAddr;

use crate::model::Snapshot;
use crate::wire::ethernet::{ethertype, EthernetFrame};
use crate::wire::icmpv6::icmpv6_type;
use crate::wire::ip_proto;
use crate::wire::ipv4::Ipv4Packet;
use crate::wire::ipv6::Ipv6Packet;

/// How the control plane queues a frame for the appliance itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExceptionClass {
    /// ARP, IPv6 router and neighbor discovery, VRRP, and anything from a gateway's address.
    Urgent,
    /// Everything else.
    Other,
}

/// Classifies a frame the pipeline handed to the control plane. Never fails: what does not
/// parse is `Other`.
pub fn exception_class(snap: &Snapshot, frame: &[u8]) -> ExceptionClass {
    let Ok(eth) = EthernetFrame::new_checked(frame) else {
        return ExceptionClass::Other;
    };
    let urgent = match eth.ethertype() {
        ethertype::ARP => true,
        ethertype::IPV4 => Ipv4Packet::new_checked(eth.payload()).is_ok_and(|ip| {
            ip.protocol() == ip_proto::VRRP || from_gateway(snap, IpAddr::V4(ip.src_addr()))
        }),
        ethertype::IPV6 => Ipv6Packet::new_checked(eth.payload()).is_ok_and(|ip| {
            let ndp = ip.next_header() == ip_proto::ICMPV6
                && ip.payload().first().is_some_and(|t| {
                    (icmpv6_type::ROUTER_SOLICIT..=icmpv6_type::NEIGHBOR_ADVERT).contains(t)
                });
            ndp || ip.next_header() == ip_proto::VRRP
                || from_gateway(snap, IpAddr::V6(ip.src_addr()))
        }),
        _ => false,
    };
    if urgent {
        ExceptionClass::Urgent
    } else {
        ExceptionClass::Other
    }
}

fn from_gateway(snap: &Snapshot, src: IpAddr) -> bool {
    !snap.gateway_by_addr(src).is_empty()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::AffinitySpec;
    use crate::testkit::{self, lab, Ipv4Opts, L2, L4};
    use crate::wire::arp::ARP_REPLY;
    use crate::wire::ethernet::EthernetAddress;
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn snap() -> Snapshot {
        Snapshot::build(lab::appliance_spec(AffinitySpec::default()), 1).unwrap()
    }

    const L2_BACKEND: L2 = L2 {
        src: EthernetAddress([2, 0, 0, 0, 2, 0x0b]),
        dst: lab::BACKEND_PORT_MAC,
        vlan: crate::wire::ethernet::Vlan::Untagged,
    };

    fn udp_v4(src: Ipv4Addr, dst: Ipv4Addr) -> Vec<u8> {
        let l4 = L4::Udp {
            src: 500,
            dst: 40000,
            payload: b"answer",
        };
        testkit::ipv4(&L2_BACKEND, src, dst, &Ipv4Opts::default(), &l4)
    }

    fn v6(src: Ipv6Addr, l4: &L4) -> Vec<u8> {
        let dst = Ipv6Addr::new(0x2001, 2, 0, 2, 0, 0, 0, 1);
        testkit::ipv6(&L2_BACKEND, &src, &dst, 255, &[], l4)
    }

    #[test]
    fn neighbors_gateways_and_vrrp_are_urgent_the_rest_is_not() {
        let s = snap();
        let own = Ipv4Addr::new(198, 19, 0, 1);
        let arp = testkit::arp(
            &L2_BACKEND,
            ARP_REPLY,
            lab::GATEWAY_MACS[0],
            lab::GATEWAYS_V4[0],
            lab::BACKEND_PORT_MAC,
            own,
        );
        assert_eq!(exception_class(&s, &arp), ExceptionClass::Urgent);
        // A health probe's answer from gw2.
        let answer = udp_v4(lab::GATEWAYS_V4[1], own);
        assert_eq!(exception_class(&s, &answer), ExceptionClass::Urgent);
        let answer6 = v6(
            lab::GATEWAYS_V6[2],
            &L4::Udp {
                src: 500,
                dst: 40000,
                payload: b"x",
            },
        );
        assert_eq!(exception_class(&s, &answer6), ExceptionClass::Urgent);
        // A client aiming at the appliance's own address.
        let flood = udp_v4(Ipv4Addr::new(198, 18, 64, 9), Ipv4Addr::new(198, 18, 0, 1));
        assert_eq!(exception_class(&s, &flood), ExceptionClass::Other);
        // Neighbor advertisement and VRRP from anyone.
        let stranger = Ipv6Addr::new(0x2001, 2, 0, 2, 0, 0, 0, 0x77);
        let na = v6(
            stranger,
            &L4::Icmpv6 {
                msg_type: icmpv6_type::NEIGHBOR_ADVERT,
                code: 0,
                rest: 0,
                payload: &[0; 16],
            },
        );
        assert_eq!(exception_class(&s, &na), ExceptionClass::Urgent);
        let echo = v6(
            stranger,
            &L4::Icmpv6 {
                msg_type: 128,
                code: 0,
                rest: 0,
                payload: &[],
            },
        );
        assert_eq!(exception_class(&s, &echo), ExceptionClass::Other);
        let vrrp = testkit::ipv4(
            &L2_BACKEND,
            Ipv4Addr::new(198, 19, 0, 3),
            Ipv4Addr::new(224, 0, 0, 18),
            &Ipv4Opts::default(),
            &L4::Raw {
                protocol: ip_proto::VRRP,
                payload: &[0x31, 51, 100, 1, 0, 10, 0, 0, 198, 18, 0, 100],
            },
        );
        assert_eq!(exception_class(&s, &vrrp), ExceptionClass::Urgent);
    }

    #[test]
    fn what_does_not_parse_is_not_urgent() {
        let s = snap();
        let good = udp_v4(lab::GATEWAYS_V4[0], Ipv4Addr::new(198, 19, 0, 1));
        for len in 0..good.len() {
            // Truncated headers (and the whole frame) never panic.
            let _ = exception_class(&s, &good[..len]);
        }
        assert_eq!(exception_class(&s, &good[..20]), ExceptionClass::Other);
        assert_eq!(exception_class(&s, &[0xff; 64]), ExceptionClass::Other);
    }
}
