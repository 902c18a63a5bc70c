//! Shared helpers for the pipeline's integration tests: the lab appliance (`conf/lab.toml`,
//! built in Rust so the tests do not depend on the control crate), frame builders for the lab's
//! hosts, and checked views of the frames the pipeline transmits.
//!
//! Every helper panics with a message on anything unexpected: they are test assertions.

// Each test binary that includes this module uses a different subset of it.
#![allow(dead_code)]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::{Arc, OnceLock};

use dataplane::frame::{Frame, VecFrame};
use dataplane::model::{AffinitySpec, ApplianceSpec, GatewaySpec, Snapshot};
use dataplane::pipeline::{Pipeline, Verdict};
use dataplane::schedule::{
    client_hash, Candidate, GatewayState, MaglevMember, MaglevTable, MAGLEV_DEFAULT_SIZE,
};
use dataplane::wire::ethernet::{ethertype, EthernetFrame};
use dataplane::wire::ipv4::Ipv4Packet;
use dataplane::wire::ipv6::{Ipv6Packet, Ipv6Upper};
use dataplane::wire::udp::UdpPacket;
use testkit::{lab, Ipv4Opts, Ipv6Ext, L2, L4};

/// DPDK port ids of the lab appliance.
pub const CLIENT_PORT: u16 = 0;
pub const BACKEND_PORT: u16 = 1;

/// The appliance's own addresses.
pub const CLIENT_ITF_V4: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
pub const CLIENT_ITF_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 2, 0, 1, 0, 0, 0, 1);
pub const BACKEND_ITF_V4: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 1);
pub const BACKEND_ITF_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 2, 0, 2, 0, 0, 0, 1);

/// The upstream router in front of the client port.
pub const ROUTER_V4: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 254);
pub const ROUTER_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 2, 0, 1, 0, 0, 0, 0xfe);

/// A clock value well away from 0, so that "now - timeout" never underflows in a test.
pub const NOW: u32 = 100_000;

/// Small affinity shards keep `Pipeline::new` (which touches all of its memory) cheap.
pub const TEST_CAPACITY: usize = 16_384;
pub const TEST_MAX_UNCONFIRMED: usize = 4_096;

/// gw1..gw3 of the lab, weight 1, Up.
pub fn lab_gateways() -> Vec<GatewaySpec> {
    (0..3)
        .map(|i| GatewaySpec {
            name: format!("gw{}", i + 1),
            ipv4: Some(lab::GATEWAYS_V4[i]),
            ipv6: Some(lab::GATEWAYS_V6[i]),
            weight: 1,
            state: GatewayState::Up,
        })
        .collect()
}

/// `conf/lab.toml` (the control crate checks that the file and this spec agree), with its
/// shard sizes.
pub fn lab_spec() -> ApplianceSpec {
    lab::appliance_spec(AffinitySpec {
        capacity: 1_048_576,
        max_unconfirmed: 262_144,
        ..AffinitySpec::default()
    })
}

/// The lab spec with small affinity shards.
pub fn test_spec() -> ApplianceSpec {
    with_affinity(lab_spec(), TEST_CAPACITY, TEST_MAX_UNCONFIRMED)
}

pub fn with_affinity(
    mut spec: ApplianceSpec,
    capacity: usize,
    max_unconfirmed: usize,
) -> ApplianceSpec {
    spec.affinity = AffinitySpec {
        capacity,
        max_unconfirmed,
        ..AffinitySpec::default()
    };
    spec
}

pub fn snapshot(spec: ApplianceSpec, generation: u64) -> Arc<Snapshot> {
    Arc::new(Snapshot::build(spec, generation).expect("spec builds"))
}

/// The test lab's snapshot, built once (its Maglev tables take a while in debug builds).
pub fn test_snapshot() -> Arc<Snapshot> {
    static SNAP: OnceLock<Arc<Snapshot>> = OnceLock::new();
    Arc::clone(SNAP.get_or_init(|| snapshot(test_spec(), 1)))
}

/// A fresh worker on the test lab.
pub fn test_worker() -> Pipeline {
    Pipeline::new(test_snapshot())
}

pub fn worker(spec: ApplianceSpec) -> Pipeline {
    Pipeline::new(snapshot(spec, 1))
}

// ---- clients -----------------------------------------------------------------------------

/// Client `i` behind the upstream router (198.18.64.0/18).
pub fn client_v4(i: u32) -> Ipv4Addr {
    assert!(i < 1 << 14, "client index out of the lab's client range");
    Ipv4Addr::from(u32::from(Ipv4Addr::new(198, 18, 64, 0)) + i)
}

/// Client `i` behind the upstream router (2001:2:0:64::/64).
pub fn client_v6(i: u32) -> Ipv6Addr {
    Ipv6Addr::from(u128::from(Ipv6Addr::new(0x2001, 2, 0, 0x64, 0, 0, 0, 0)) + u128::from(i) + 1)
}

// ---- expectations, computed without the pipeline ------------------------------------------

/// A Maglev table over gateways named gw1..gwN with these weights (0 = out of the table).
pub fn maglev_table(weights: &[u32]) -> MaglevTable {
    let names: Vec<String> = (1..=weights.len()).map(|i| format!("gw{i}")).collect();
    let members: Vec<MaglevMember<'_>> = names
        .iter()
        .zip(weights)
        .map(|(name, &weight)| MaglevMember { name, weight })
        .collect();
    MaglevTable::build(&members, MAGLEV_DEFAULT_SIZE).expect("table builds")
}

/// The gateway (0-based) a table picks for a client address.
pub fn maglev_pick(table: &MaglevTable, client: IpAddr) -> usize {
    let h = match client {
        IpAddr::V4(a) => client_hash(&a.octets()),
        IpAddr::V6(a) => client_hash(&a.octets()),
    };
    usize::from(table.lookup(h).expect("table has members"))
}

/// The gateway (0-based) a table picks for a client when the gateways are in `states` (all of
/// weight 1): the table's choice if it is Up, else the next eligible slot's.
pub fn maglev_pick_eligible(table: &MaglevTable, states: &[GatewayState], client: IpAddr) -> usize {
    let h = match client {
        IpAddr::V4(a) => client_hash(&a.octets()),
        IpAddr::V6(a) => client_hash(&a.octets()),
    };
    let candidates: Vec<Candidate> = states
        .iter()
        .map(|&state| Candidate { weight: 1, state })
        .collect();
    usize::from(
        table
            .lookup_eligible(h, &candidates)
            .expect("an eligible gateway"),
    )
}

/// The lab gateway (0-based) Maglev gives `client` with gw1..gw3 all Up.
pub fn lab_gateway(client: IpAddr) -> usize {
    static TABLE: OnceLock<MaglevTable> = OnceLock::new();
    maglev_pick(TABLE.get_or_init(|| maglev_table(&[1, 1, 1])), client)
}

// ---- frames in ---------------------------------------------------------------------------

/// Router → appliance client port.
pub fn from_router() -> L2 {
    L2::new(lab::ROUTER_MAC, lab::CLIENT_PORT_MAC)
}

/// Gateway `g` (0-based) → appliance backend port.
pub fn from_gateway(g: usize) -> L2 {
    L2::new(lab::GATEWAY_MACS[g], lab::BACKEND_PORT_MAC)
}

/// A first IKE_SA_INIT request (KE group 19, 64 bytes of key data).
pub fn ike_sa_init(spi: u64) -> Vec<u8> {
    testkit::ike_sa_init_request(spi, &[0x5a; 32], 19, 64, &[])
}

/// The gateway's IKE_SA_INIT response.
pub fn ike_sa_init_reply(spi: u64) -> Vec<u8> {
    testkit::ike_sa_init_response(spi, spi ^ 0xffff, &[0xa5; 32], 19, 64, &[])
}

pub fn udp4(
    l2: L2,
    src: Ipv4Addr,
    dst: Ipv4Addr,
    sport: u16,
    dport: u16,
    payload: &[u8],
) -> Vec<u8> {
    udp4_opts(l2, src, dst, &Ipv4Opts::default(), sport, dport, payload)
}

pub fn udp4_opts(
    l2: L2,
    src: Ipv4Addr,
    dst: Ipv4Addr,
    opts: &Ipv4Opts,
    sport: u16,
    dport: u16,
    payload: &[u8],
) -> Vec<u8> {
    let l4 = L4::Udp {
        src: sport,
        dst: dport,
        payload,
    };
    testkit::ipv4(&l2, src, dst, opts, &l4)
}

pub fn udp6(
    l2: L2,
    src: Ipv6Addr,
    dst: Ipv6Addr,
    sport: u16,
    dport: u16,
    payload: &[u8],
) -> Vec<u8> {
    udp6_ext(l2, src, dst, 64, &[], sport, dport, payload)
}

#[allow(clippy::too_many_arguments)]
pub fn udp6_ext(
    l2: L2,
    src: Ipv6Addr,
    dst: Ipv6Addr,
    hop_limit: u8,
    ext: &[Ipv6Ext],
    sport: u16,
    dport: u16,
    payload: &[u8],
) -> Vec<u8> {
    let l4 = L4::Udp {
        src: sport,
        dst: dport,
        payload,
    };
    testkit::ipv6(&l2, &src, &dst, hop_limit, ext, &l4)
}

/// IKE_SA_INIT from an IPv4 client (via the router) to the VIP, UDP 500 → 500.
pub fn client_ike4(client: Ipv4Addr) -> Vec<u8> {
    udp4(
        from_router(),
        client,
        lab::VIP_V4,
        500,
        500,
        &ike_sa_init(spi_of(client.into())),
    )
}

/// IKE_SA_INIT from an IPv6 client (via the router) to the VIP.
pub fn client_ike6(client: Ipv6Addr) -> Vec<u8> {
    udp6(
        from_router(),
        client,
        lab::VIP_V6,
        500,
        500,
        &ike_sa_init(spi_of(client.into())),
    )
}

/// An initiator SPI derived from the client, so fixtures differ per client.
/// IKE_AUTH from `client` to the VIP (UDP 500) in the IKE SA that `ike_sa_init_reply(spi)`
/// answered: it carries that reply's responder SPI, the echo that establishes a client.
pub fn client_ike_auth(client: IpAddr, spi: u64) -> Vec<u8> {
    let auth = testkit::ike_message(
        spi,
        spi ^ 0xffff,
        dataplane::wire::ike::exchange::IKE_AUTH,
        dataplane::wire::ike::flags::INITIATOR,
        1,
        &[0x5a; 96],
    );
    match client {
        IpAddr::V4(c) => udp4(from_router(), c, lab::VIP_V4, 500, 500, &auth),
        IpAddr::V6(c) => udp6(from_router(), c, lab::VIP_V6, 500, 500, &auth),
    }
}

pub fn spi_of(client: IpAddr) -> u64 {
    match client {
        IpAddr::V4(a) => 0x1000_0000_0000_0000 | u64::from(u32::from(a)),
        IpAddr::V6(a) => 0x2000_0000_0000_0000 | (u128::from(a) as u64),
    }
}

// ---- running frames ----------------------------------------------------------------------

/// Runs one frame at `now` on `port`; returns the verdict and the frame as it is afterwards.
pub fn run_at(w: &mut Pipeline, now: u32, port: u16, frame: &[u8]) -> (Verdict, Vec<u8>) {
    let mut f = VecFrame::new(frame);
    let v = w.process(now, port, &mut f);
    (v, f.bytes().to_vec())
}

pub fn run(w: &mut Pipeline, port: u16, frame: &[u8]) -> (Verdict, Vec<u8>) {
    run_at(w, NOW, port, frame)
}

/// Runs a frame that must be transmitted on `out_port`; returns the transmitted frame.
pub fn tx_at(w: &mut Pipeline, now: u32, port: u16, frame: &[u8], out_port: u16) -> Vec<u8> {
    let (v, out) = run_at(w, now, port, frame);
    assert_eq!(v, Verdict::Tx { port: out_port }, "verdict");
    out
}

pub fn tx(w: &mut Pipeline, port: u16, frame: &[u8], out_port: u16) -> Vec<u8> {
    tx_at(w, NOW, port, frame, out_port)
}

/// Every received frame was transmitted (whole or as fragments), dropped or handed to the
/// control plane, once.
pub fn assert_balanced(w: &Pipeline) {
    let c = w.counters();
    assert_eq!(
        c.rx_packets,
        c.tx_packets - c.mtu.fragments + c.mtu.fragmented + c.total_drops() + c.to_control,
        "rx = tx + drops + to_control ({c:?})"
    );
}

// ---- frames out --------------------------------------------------------------------------

/// A transmitted IPv4 frame, checked: Ethernet header, IPv4 header (with a valid checksum),
/// and the transport bytes up to the IPv4 total length.
pub struct Out4<'a> {
    pub eth: EthernetFrame<&'a [u8]>,
    pub ip: Ipv4Packet<&'a [u8]>,
    /// Offset of the IPv4 header in the frame.
    pub ip_at: usize,
    /// The IPv4 payload (transport header on).
    pub l4: &'a [u8],
}

pub fn out4(frame: &[u8]) -> Out4<'_> {
    let eth = EthernetFrame::new_checked(frame).expect("Ethernet header");
    assert_eq!(eth.ethertype(), ethertype::IPV4, "EtherType");
    let ip_at = eth.header_len();
    let ip = Ipv4Packet::new_checked(&frame[ip_at..]).expect("IPv4 header");
    assert!(ip.verify_checksum(), "IPv4 header checksum");
    let l4 = &frame[ip_at + ip.header_len()..ip_at + usize::from(ip.total_len())];
    Out4 { eth, ip, ip_at, l4 }
}

impl Out4<'_> {
    /// The UDP datagram, whose checksum must verify (and be present).
    pub fn udp(&self) -> UdpPacket<&[u8]> {
        let udp = UdpPacket::new_checked(self.l4).expect("UDP header");
        assert_ne!(udp.checksum(), 0, "UDP checksum present");
        assert!(
            udp.verify_checksum_v4(self.ip.src_addr(), self.ip.dst_addr()),
            "UDP checksum over {} -> {}",
            self.ip.src_addr(),
            self.ip.dst_addr()
        );
        udp
    }
}

/// A transmitted IPv6 frame, checked, with its upper layer located.
pub struct Out6<'a> {
    pub eth: EthernetFrame<&'a [u8]>,
    pub ip: Ipv6Packet<&'a [u8]>,
    pub ip_at: usize,
    pub upper: Ipv6Upper,
    /// The upper-layer bytes (after every extension header).
    pub l4: &'a [u8],
}

pub fn out6(frame: &[u8]) -> Out6<'_> {
    let eth = EthernetFrame::new_checked(frame).expect("Ethernet header");
    assert_eq!(eth.ethertype(), ethertype::IPV6, "EtherType");
    let ip_at = eth.header_len();
    let ip = Ipv6Packet::new_checked(&frame[ip_at..]).expect("IPv6 header");
    let upper = ip.upper_layer().expect("IPv6 extension headers");
    let l4 = &frame[ip_at + upper.offset..ip_at + 40 + usize::from(ip.payload_len())];
    Out6 {
        eth,
        ip,
        ip_at,
        upper,
        l4,
    }
}

impl Out6<'_> {
    /// The UDP datagram, whose checksum must verify.
    pub fn udp(&self) -> UdpPacket<&[u8]> {
        let udp = UdpPacket::new_checked(self.l4).expect("UDP header");
        assert!(
            udp.verify_checksum_v6(&self.ip.src_addr(), &self.ip.dst_addr()),
            "UDP checksum over {} -> {}",
            self.ip.src_addr(),
            self.ip.dst_addr()
        );
        udp
    }
}

/// The lab gateway (0-based) an IPv4 frame is addressed to, by IP and MAC (which must agree).
pub fn gateway_of4(frame: &[u8]) -> usize {
    let o = out4(frame);
    let g = lab::GATEWAYS_V4
        .iter()
        .position(|a| *a == o.ip.dst_addr())
        .unwrap_or_else(|| panic!("{} is not a lab gateway", o.ip.dst_addr()));
    assert_eq!(
        o.eth.dst(),
        lab::GATEWAY_MACS[g],
        "destination MAC of gw{}",
        g + 1
    );
    assert_eq!(o.eth.src(), lab::BACKEND_PORT_MAC, "source MAC");
    g
}

/// Like [`gateway_of4`] for IPv6.
pub fn gateway_of6(frame: &[u8]) -> usize {
    let o = out6(frame);
    let g = lab::GATEWAYS_V6
        .iter()
        .position(|a| *a == o.ip.dst_addr())
        .unwrap_or_else(|| panic!("{} is not a lab gateway", o.ip.dst_addr()));
    assert_eq!(
        o.eth.dst(),
        lab::GATEWAY_MACS[g],
        "destination MAC of gw{}",
        g + 1
    );
    assert_eq!(o.eth.src(), lab::BACKEND_PORT_MAC, "source MAC");
    g
}
