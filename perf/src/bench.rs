//! Benchmark traffic for `scripts/bench.sh`: captures that `net_pcap` replays endlessly
//! (`infinite_rx=1`) into vpnlbd and into dpdk-testpmd alike.
//!
//! The client port's capture holds `packets` frames from `clients` distinct clients to the
//! VIP: the first `clients` frames visit every client once in a shuffled order (so the
//! affinity table holds exactly `clients` entries after the first pass), the rest pick clients
//! at random. The backend port's capture is the gateways' return traffic (ESP in UDP 4500) to
//! the same clients, each from the gateway the balancer's Maglev table gives it, so the
//! appliance confirms and forwards it.
//!
//! Mixes:
//! - `lab`: the lab's protocols by share of packets: ESP in UDP 4500 60 %, raw ESP 10 %, IKE on
//!   UDP 500 5 %, IKE on UDP 4500 (non-ESP marker) 5 %, TLS records on TCP 443 10 %, DTLS
//!   records on UDP 443 10 %;
//! - `esp`, `ike`, `tls`: one of them only (ESP in UDP, IKE_SA_INIT on UDP 500, TLS on TCP 443);
//! - `new-clients`: every frame an IKE_SA_INIT from a client not seen before in the capture,
//!   for the admission rate (run it with `max_unconfirmed` below the capture's size, so the
//!   replay keeps evicting and every frame is a new client again);
//! - `redirect`: every frame an IKE_SA_INIT with N(REDIRECT_SUPPORTED) on UDP 500, for a service
//!   in redirect mode (each one answered with an RFC 5685 REDIRECT on the client port).
//!
//! Sizes are Ethernet frame sizes as RFC 2544 and the traffic generators count them, FCS
//! included (a capture holds 4 bytes less): a fixed size, raised to what the headers need, or
//! `imix`: data frames 100 / 576 / 1400 bytes at 40 / 30 / 30 % (IKE messages keep their own
//! size, about 300 bytes).
//!
//! Clients: IPv4 from 198.18.64.0/18 (16 384) when `family` is 4, IPv6 from 2001:2:0:64::/64
//! when 6 (any count); both behind the lab's upstream router.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;

use dataplane::io::pcap::{PcapError, PcapWriter, Resolution};
use dataplane::wire::ike::notify_type;
use testkit::{lab, Ipv4Opts, SplitMix64, L2, L4};

use crate::lab::maglev_gateway_for;

/// Which traffic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mix {
    Lab,
    Esp,
    Ike,
    Tls,
    NewClients,
    Redirect,
}

impl Mix {
    pub fn parse(s: &str) -> Option<Mix> {
        Some(match s {
            "lab" => Mix::Lab,
            "esp" => Mix::Esp,
            "ike" => Mix::Ike,
            "tls" => Mix::Tls,
            "new-clients" => Mix::NewClients,
            "redirect" => Mix::Redirect,
            _ => return None,
        })
    }
}

/// Frame sizes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Size {
    Fixed(usize),
    Imix,
}

impl Size {
    pub fn parse(s: &str) -> Option<Size> {
        if s == "imix" {
            return Some(Size::Imix);
        }
        s.parse()
            .ok()
            .filter(|n| (64..=1518).contains(n))
            .map(Size::Fixed)
    }

    /// The next frame's length in the capture (without the FCS).
    fn pick(self, rng: &mut SplitMix64) -> usize {
        let on_wire = match self {
            Size::Fixed(n) => n,
            Size::Imix => match rng.below(10) {
                0..=3 => 100,
                4..=6 => 576,
                _ => 1400,
            },
        };
        on_wire - FCS
    }
}

/// Bytes of the Ethernet FCS, counted in frame sizes but not captured.
const FCS: usize = 4;

/// What to generate.
#[derive(Clone, Copy, Debug)]
pub struct BenchTraffic {
    pub clients: u64,
    pub packets: u64,
    pub backend_packets: u64,
    pub size: Size,
    pub mix: Mix,
    pub family: u8,
    pub seed: u64,
}

/// The most IPv4 clients (198.18.64.0/18).
pub const MAX_CLIENTS_V4: u64 = 1 << 14;

#[derive(Debug)]
pub enum BenchError {
    Invalid(String),
    Io(io::Error),
    Pcap(PcapError),
}

impl std::fmt::Display for BenchError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BenchError::Invalid(s) => f.write_str(s),
            BenchError::Io(e) => write!(f, "{e}"),
            BenchError::Pcap(e) => write!(f, "{e}"),
        }
    }
}

impl From<PcapError> for BenchError {
    fn from(e: PcapError) -> Self {
        BenchError::Pcap(e)
    }
}

impl From<io::Error> for BenchError {
    fn from(e: io::Error) -> Self {
        BenchError::Io(e)
    }
}

/// The `i`-th client address of a family.
pub fn client(family: u8, i: u64) -> IpAddr {
    if family == 4 {
        let [_, _, hi, lo] = (i as u32).to_be_bytes();
        IpAddr::V4(Ipv4Addr::new(198, 18, 64 + (hi & 0x3f), lo))
    } else {
        let s = |k: u32| ((i >> k) & 0xffff) as u16;
        IpAddr::V6(Ipv6Addr::new(0x2001, 2, 0, 0x64, 0, s(32), s(16), s(0)))
    }
}

/// Which client the `n`-th client-port frame comes from: all of them once (shuffled), then at
/// random; `new-clients` uses each index once.
struct ClientOrder {
    first_pass: Vec<u32>,
    rng: SplitMix64,
    clients: u64,
}

impl ClientOrder {
    fn new(clients: u64, seed: u64, shuffle: bool) -> ClientOrder {
        let mut rng = SplitMix64(seed ^ 0x5eed_c11e);
        let mut first_pass: Vec<u32> = if shuffle {
            (0..clients as u32).collect()
        } else {
            Vec::new()
        };
        for i in (1..first_pass.len()).rev() {
            let j = rng.below(i as u64 + 1) as usize;
            first_pass.swap(i, j);
        }
        ClientOrder {
            first_pass,
            rng,
            clients,
        }
    }

    fn at(&mut self, n: u64) -> u64 {
        match self.first_pass.get(n as usize) {
            Some(&c) => u64::from(c),
            None if self.first_pass.is_empty() => n % self.clients,
            None => self.rng.below(self.clients),
        }
    }
}

/// Writes `client.pcap` and `backend.pcap` into `dir`.
pub fn write(dir: &Path, t: &BenchTraffic) -> Result<(u64, u64), BenchError> {
    write_with(dir, t, Resolution::Nanoseconds)
}

/// As [`write`], with timestamps of `resolution` (pktgen-DPDK reads only microseconds).
pub fn write_with(
    dir: &Path,
    t: &BenchTraffic,
    resolution: Resolution,
) -> Result<(u64, u64), BenchError> {
    if t.family != 4 && t.family != 6 {
        return Err(BenchError::Invalid("family must be 4 or 6".into()));
    }
    if t.clients == 0 || (t.family == 4 && t.clients > MAX_CLIENTS_V4) {
        return Err(BenchError::Invalid(format!(
            "clients must be 1..={MAX_CLIENTS_V4} for IPv4 (198.18.64.0/18), at least 1 for IPv6"
        )));
    }
    if t.clients > u64::from(u32::MAX) {
        return Err(BenchError::Invalid("at most 2^32 clients".into()));
    }
    std::fs::create_dir_all(dir)?;
    let gateway_for = maglev_gateway_for().map_err(|e| BenchError::Invalid(format!("{e:?}")))?;
    let mut rng = SplitMix64(t.seed);
    let new_clients = t.mix == Mix::NewClients;
    let mut order = ClientOrder::new(t.clients, t.seed, !new_clients);
    let mut out = PcapWriter::create_with(dir.join("client.pcap"), resolution)?;
    let packets = if new_clients {
        t.clients
    } else {
        t.packets.max(1)
    };
    for n in 0..packets {
        let c = client(t.family, order.at(n));
        let frame = client_frame(t, &mut rng, c, n);
        out.write_packet(n * 1000, &frame)?;
    }
    out.flush()?;
    let mut out = PcapWriter::create_with(dir.join("backend.pcap"), resolution)?;
    let mut order = ClientOrder::new(t.clients, t.seed ^ 1, false);
    // (With new clients too: a port of forwarders such as testpmd needs something to replay;
    // the gateways' frames teach the table a few thousand confirmed clients, once.)
    let backend = if new_clients {
        t.backend_packets.min(t.clients)
    } else {
        t.backend_packets
    };
    for n in 0..backend {
        let c = client(t.family, order.at(n));
        let g = gateway_for(c) % lab::GATEWAY_MACS.len();
        let len = t.size.pick(&mut rng);
        let l2 = L2::new(lab::GATEWAY_MACS[g], lab::BACKEND_PORT_MAC);
        let esp = testkit::esp_payload(0x1000_0000 | g as u32, n as u32, 8);
        let esp = fill_to(&esp, len, header_len(c, 8));
        let frame = ip_frame(
            &l2,
            gateway(c, g),
            c,
            &L4::Udp {
                src: 4500,
                dst: 4500,
                payload: &esp,
            },
        );
        out.write_packet(n * 1000, &frame)?;
    }
    out.flush()?;
    Ok((packets, backend))
}

fn gateway(client: IpAddr, g: usize) -> IpAddr {
    match client {
        IpAddr::V4(_) => IpAddr::V4(lab::GATEWAYS_V4[g]),
        IpAddr::V6(_) => IpAddr::V6(lab::GATEWAYS_V6[g]),
    }
}

fn vip(client: IpAddr) -> IpAddr {
    match client {
        IpAddr::V4(_) => IpAddr::V4(lab::VIP_V4),
        IpAddr::V6(_) => IpAddr::V6(lab::VIP_V6),
    }
}

/// Ethernet + IP + `l4_header` bytes.
fn header_len(c: IpAddr, l4_header: usize) -> usize {
    14 + if c.is_ipv4() { 20 } else { 40 } + l4_header
}

/// `payload` grown with pseudo-random-looking bytes so that the frame is `frame_len` long.
fn fill_to(payload: &[u8], frame_len: usize, headers: usize) -> Vec<u8> {
    let mut v = payload.to_vec();
    let want = frame_len.saturating_sub(headers);
    if v.len() < want {
        v.extend((v.len()..want).map(|i| (i as u8).wrapping_mul(151)));
    }
    v
}

fn ip_frame(l2: &L2, src: IpAddr, dst: IpAddr, l4: &L4) -> Vec<u8> {
    let mut f = match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => testkit::ipv4(l2, s, d, &Ipv4Opts::default(), l4),
        (IpAddr::V6(s), IpAddr::V6(d)) => testkit::ipv6(l2, &s, &d, 64, &[], l4),
        _ => unreachable!("one family per frame"),
    };
    testkit::pad_to_min_frame(&mut f);
    f
}

fn client_frame(t: &BenchTraffic, rng: &mut SplitMix64, c: IpAddr, n: u64) -> Vec<u8> {
    let l2 = L2::new(lab::ROUTER_MAC, lab::CLIENT_PORT_MAC);
    let spi = (c_hash(c) as u32) | 1;
    let kind = match t.mix {
        Mix::Lab => match rng.below(100) {
            0..=59 => Kind::EspInUdp,
            60..=69 => Kind::Esp,
            70..=74 => Kind::Ike500,
            75..=79 => Kind::Ike4500,
            80..=89 => Kind::Tls,
            _ => Kind::Dtls,
        },
        Mix::Esp => Kind::EspInUdp,
        Mix::Ike | Mix::NewClients | Mix::Redirect => Kind::Ike500,
        Mix::Tls => Kind::Tls,
    };
    let len = t.size.pick(rng);
    let ike = || {
        let mut nonce = [0u8; 32];
        nonce[..8].copy_from_slice(&n.to_be_bytes());
        let supported: &[(u16, &[u8])] = &[(notify_type::REDIRECT_SUPPORTED, &[])];
        let notifies = if t.mix == Mix::Redirect {
            supported
        } else {
            &[]
        };
        testkit::ike_sa_init_request(u64::from(spi) << 32 | 7, &nonce, 14, 64, notifies)
    };
    let dst = vip(c);
    match kind {
        Kind::EspInUdp => {
            let p = fill_to(
                &testkit::esp_payload(spi, n as u32, 8),
                len,
                header_len(c, 8),
            );
            ip_frame(
                &l2,
                c,
                dst,
                &L4::Udp {
                    src: 4500,
                    dst: 4500,
                    payload: &p,
                },
            )
        }
        Kind::Esp => {
            let p = fill_to(&[], len, header_len(c, 8));
            ip_frame(
                &l2,
                c,
                dst,
                &L4::Esp {
                    spi,
                    seq: n as u32,
                    payload: &p,
                },
            )
        }
        Kind::Ike500 => ip_frame(
            &l2,
            c,
            dst,
            &L4::Udp {
                src: 500,
                dst: 500,
                payload: &ike(),
            },
        ),
        Kind::Ike4500 => ip_frame(
            &l2,
            c,
            dst,
            &L4::Udp {
                src: 4500,
                dst: 4500,
                payload: &testkit::non_esp_marker(&ike()),
            },
        ),
        Kind::Tls => {
            let p = testkit::tls_application_data(n, len.saturating_sub(header_len(c, 20) + 5));
            ip_frame(
                &l2,
                c,
                dst,
                &L4::Tcp {
                    src: 40000 + (spi as u16 & 0x3fff),
                    dst: 443,
                    seq: n as u32,
                    ack: 1,
                    flags: testkit::tcp_flags::ACK | testkit::tcp_flags::PSH,
                    payload: &p,
                },
            )
        }
        Kind::Dtls => {
            let p = testkit::dtls_application_data(1, n, len.saturating_sub(header_len(c, 8) + 13));
            ip_frame(
                &l2,
                c,
                dst,
                &L4::Udp {
                    src: 40000 + (spi as u16 & 0x3fff),
                    dst: 443,
                    payload: &p,
                },
            )
        }
    }
}

#[derive(Clone, Copy)]
enum Kind {
    EspInUdp,
    Esp,
    Ike500,
    Ike4500,
    Tls,
    Dtls,
}

fn c_hash(c: IpAddr) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    let octets: Vec<u8> = match c {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    };
    for b in octets {
        h = (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
    }
    h
}
