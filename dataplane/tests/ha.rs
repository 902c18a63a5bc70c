//! HA pair behaviour of the pipeline: what mastership changes (RFC 5798's virtual MAC, VIPs
//! and floating addresses), on byte buffers.

mod common;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use common::*;
use dataplane::counters::DropReason;
use dataplane::model::{ApplianceSpec, HaSpec, IpCidr};
use dataplane::pipeline::{Pipeline, Verdict};
use dataplane::wire::arp::{ArpPacket, ARP_REPLY, ARP_REQUEST};
use dataplane::wire::ethernet::{EthernetAddress, EthernetFrame};
use testkit::{lab, L2, L4};

const VMAC4: EthernetAddress = EthernetAddress([0, 0, 0x5e, 0, 1, 51]);
const VMAC6: EthernetAddress = EthernetAddress([0, 0, 0x5e, 0, 2, 51]);
const OWN_BACKEND: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 2);
const FLOATING: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 1);

/// Appliance A of the lab pair: its own backend address 198.19.0.2, the gateways' next hop
/// 198.19.0.1 floating with the VIPs.
fn pair_spec(master: bool) -> ApplianceSpec {
    let mut spec = test_spec();
    spec.interfaces[1].addresses[0] = IpCidr::new(IpAddr::V4(OWN_BACKEND), 24).unwrap();
    spec.ha = Some(HaSpec {
        vrid: 51,
        master,
        floating: vec![(1, IpAddr::V4(FLOATING))],
    });
    spec
}

fn arp_request(l2: L2, sender_mac: EthernetAddress, sender: Ipv4Addr, target: Ipv4Addr) -> Vec<u8> {
    testkit::arp(
        &l2,
        ARP_REQUEST,
        sender_mac,
        sender,
        EthernetAddress([0; 6]),
        target,
    )
}

/// The MAC an ARP request for `target` is answered with, or the drop reason.
fn arp_answer(
    w: &mut Pipeline,
    port: u16,
    l2: L2,
    sender: Ipv4Addr,
    target: Ipv4Addr,
) -> Result<EthernetAddress, Verdict> {
    let req = arp_request(l2, l2.src, sender, target);
    let (v, out) = run(w, port, &req);
    if v != (Verdict::Tx { port }) {
        return Err(v);
    }
    let eth = EthernetFrame::new_checked(&out[..]).unwrap();
    let arp = ArpPacket::new_checked(eth.payload()).unwrap();
    assert_eq!(arp.operation(), ARP_REPLY);
    assert_eq!(
        arp.sender_hw(),
        eth.src(),
        "ARP and Ethernet agree on our MAC"
    );
    Ok(arp.sender_hw())
}

#[test]
fn the_master_answers_for_vips_and_floating_addresses_with_the_virtual_mac() {
    let mut w = worker(pair_spec(true));
    let router = from_router();
    assert_eq!(
        arp_answer(&mut w, 0, router, lab::ROUTER_V4, lab::VIP_V4),
        Ok(VMAC4)
    );
    let gw = from_gateway(0);
    assert_eq!(
        arp_answer(&mut w, 1, gw, lab::GATEWAYS_V4[0], FLOATING),
        Ok(VMAC4)
    );
    // Its own address stays on its own MAC: the peer reaches it whoever is master.
    assert_eq!(
        arp_answer(&mut w, 1, gw, lab::GATEWAYS_V4[0], OWN_BACKEND),
        Ok(lab::BACKEND_PORT_MAC)
    );
}

#[test]
fn the_master_forwards_from_the_virtual_mac_and_takes_frames_sent_to_it() {
    let mut w = worker(pair_spec(true));
    let client = client_v4(7);
    // To the virtual MAC, as clients and the router learned it.
    let l2 = L2::new(lab::ROUTER_MAC, VMAC4);
    let out = tx(&mut w, 0, &client_ike4_l2(l2, client), 1);
    let eth = EthernetFrame::new_checked(&out[..]).unwrap();
    assert_eq!(eth.src(), VMAC4);
    // The way back, sent by the gateway to the floating address's (virtual) MAC.
    let g = lab_gateway(IpAddr::V4(client));
    let back = udp4(
        L2::new(lab::GATEWAY_MACS[g], VMAC4),
        lab::GATEWAYS_V4[g],
        client,
        500,
        500,
        &ike_sa_init_reply(spi_of(IpAddr::V4(client))),
    );
    let out = tx(&mut w, 1, &back, 0);
    assert_eq!(EthernetFrame::new_checked(&out[..]).unwrap().src(), VMAC4);
    // IPv6 leaves from the IPv6 virtual MAC.
    let c6 = client_v6(7);
    let out = tx(&mut w, 0, &client_ike6(c6), 1);
    assert_eq!(EthernetFrame::new_checked(&out[..]).unwrap().src(), VMAC6);
}

#[test]
fn the_backup_neither_answers_for_nor_forwards_what_the_master_holds() {
    let mut w = worker(pair_spec(false));
    let router = from_router();
    assert_eq!(
        arp_answer(&mut w, 0, router, lab::ROUTER_V4, lab::VIP_V4),
        Err(Verdict::Drop(DropReason::NotMaster))
    );
    let gw = from_gateway(0);
    assert_eq!(
        arp_answer(&mut w, 1, gw, lab::GATEWAYS_V4[0], FLOATING),
        Err(Verdict::Drop(DropReason::NotMaster))
    );
    // Its own address still works: health checks and state sync use it.
    assert_eq!(
        arp_answer(&mut w, 1, gw, lab::GATEWAYS_V4[0], OWN_BACKEND),
        Ok(lab::BACKEND_PORT_MAC)
    );
    // VIP traffic that still reaches it (a stale cache, flooding) is not forwarded.
    let (v, _) = run(&mut w, 0, &client_ike4(client_v4(3)));
    assert_eq!(v, Verdict::Drop(DropReason::NotMaster));
    // Frames to the virtual MAC are the master's.
    let l2 = L2::new(lab::ROUTER_MAC, VMAC4);
    let (v, _) = run(&mut w, 0, &client_ike4_l2(l2, client_v4(3)));
    assert_eq!(v, Verdict::Drop(DropReason::NotOurMac));
    // IPv6: the VIP is not answered either.
    let (v, _) = run(&mut w, 0, &client_ike6(client_v6(3)));
    assert_eq!(v, Verdict::Drop(DropReason::NotMaster));
    let _: Ipv6Addr = lab::VIP_V6;
    assert_balanced(&w);
}

#[test]
fn without_ha_nothing_changes() {
    let mut w = worker(test_spec());
    assert_eq!(
        arp_answer(&mut w, 0, from_router(), lab::ROUTER_V4, lab::VIP_V4),
        Ok(lab::CLIENT_PORT_MAC)
    );
    let out = tx(&mut w, 0, &client_ike4(client_v4(1)), 1);
    assert_eq!(
        EthernetFrame::new_checked(&out[..]).unwrap().src(),
        lab::BACKEND_PORT_MAC
    );
}

/// `client_ike4` with another Ethernet header.
fn client_ike4_l2(l2: L2, client: Ipv4Addr) -> Vec<u8> {
    let l4 = L4::Udp {
        src: 500,
        dst: 500,
        payload: &ike_sa_init(spi_of(IpAddr::V4(client))),
    };
    testkit::ipv4(&l2, client, lab::VIP_V4, &Default::default(), &l4)
}

#[test]
fn an_announcement_is_never_answered_even_for_an_address_we_hold() {
    // A VRRP peer that takes the VIPs over announces them (gratuitous ARP) while we may still be
    // master for a burst: the announcement goes to the control plane, it gets no reply.
    let mut w = worker(pair_spec(true));
    let peer_mac = EthernetAddress([0x02, 0, 0, 0, 0x01, 0x03]);
    let l2 = L2::new(peer_mac, EthernetAddress::BROADCAST);
    for held in [lab::VIP_V4, FLOATING] {
        let port = if held == FLOATING { 1 } else { 0 };
        let announce = arp_request(l2, peer_mac, held, held);
        assert_eq!(run(&mut w, port, &announce).0, Verdict::ToControl, "{held}");
    }
    // A request from the same peer for the VIP is still answered.
    assert_eq!(
        arp_answer(&mut w, 0, l2, Ipv4Addr::new(198, 18, 0, 3), lab::VIP_V4),
        Ok(VMAC4)
    );
}
