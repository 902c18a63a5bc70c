//! vpnlb performance tooling.
//!
//! [`lab`] generates the lab's reference captures (`vpnlb-capgen`): realistic IKEv2/ESP and
//! TLS/DTLS VPN traffic as the appliance's two ports see it, for replay tests and benchmarks.
//! [`bench`] writes the benchmark harness's captures (`vpnlb-benchgen`, `scripts/bench.sh`).

#![forbid(unsafe_code)]

pub mod bench;

pub mod lab {
    //! The lab capture generator.
    //!
    //! It writes what the appliance receives on each port:
    //!
    //! * `client.pcap`: frames from the upstream router ([`testkit::lab::ROUTER_MAC`]) to the
    //!   client port, from clients in 198.18.64.0/18 and 2001:2:0:64::/64 to the VIP;
    //! * `backend.pcap`: the gateways' replies, from the gateway's MAC to the backend port,
    //!   from the gateway's address to the client's, ports mirrored (the balancer translates
    //!   addresses only);
    //! * `clients.csv`: each client's address, kind and the gateway expected to serve it.
    //!
    //! IKE clients run IKE_SA_INIT on UDP 500, IKE_AUTH on 4500 behind the non-ESP marker
    //! (every `fragment_every`-th one with certificates, so ~1600-byte messages fragmented at
    //! MTU 1500 both ways), then ESP-in-UDP both ways with NAT-T keepalives, or raw ESP
    //! (protocol 50) for the clients not behind NAT. TLS clients (AnyConnect style) open
    //! TCP/443 with a ClientHello carrying SNI, exchange some data, then start DTLS on UDP/443
    //! from another source port. Everything is deterministic for a given seed.

    use std::collections::HashSet;
    use std::fmt;
    use std::fs::File;
    use std::io::{self, BufWriter, Write};
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
    use std::path::Path;

    use dataplane::io::pcap::{PcapError, PcapWriter};
    use dataplane::schedule::client_hash;
    use dataplane::schedule::maglev::{MaglevError, MaglevMember, MaglevTable};
    use dataplane::wire::ethernet::EthernetAddress;
    use dataplane::wire::ike::{exchange, flags as ike_flags, notify_type};
    use testkit::{tcp_flags, Ipv4Opts, SplitMix64, L2, L4};

    /// Names of gw1..gw3, as configured on the appliance (they seed the Maglev permutations).
    pub const GATEWAY_NAMES: [&str; 3] = ["gw1", "gw2", "gw3"];

    /// Maglev table size the appliance uses by default.
    pub const MAGLEV_TABLE_SIZE: usize = 65_537;

    /// Default capture start: 2023-11-14T22:13:20Z.
    pub const DEFAULT_START_NS: u64 = 1_700_000_000 * NS_PER_S;

    /// The IPv4 client range 198.18.64.0/18 holds this many host addresses.
    const MAX_V4_CLIENTS: usize = (1 << 14) - 2;

    /// Link MTU of both ports.
    const MTU: usize = 1500;

    const NS_PER_S: u64 = 1_000_000_000;
    const NS_PER_MS: u64 = 1_000_000;
    const NS_PER_US: u64 = 1_000;

    /// What to generate.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct LabConfig {
        /// IPv4 IKE clients.
        pub clients: usize,
        /// IPv6 IKE clients.
        pub ipv6_clients: usize,
        /// IPv4 TLS/DTLS clients.
        pub tls_clients: usize,
        /// Every n-th IKE client authenticates with certificates: its IKE_AUTH messages are
        /// IP-fragmented. 0: none.
        pub fragment_every: usize,
        /// PRNG seed; the same seed gives byte-identical captures.
        pub seed: u64,
        /// Length of the capture; at least 1 s is used.
        pub duration_s: u64,
        /// Timestamp of the capture start, ns since the Unix epoch.
        pub start_ns: u64,
    }

    impl Default for LabConfig {
        /// The `vpnlb-capgen` defaults: 20 + 5 IPv6 IKE clients, 5 TLS clients, every 4th
        /// IKE_AUTH fragmented, seed 1, 60 s.
        fn default() -> Self {
            LabConfig {
                clients: 20,
                ipv6_clients: 5,
                tls_clients: 5,
                fragment_every: 4,
                seed: 1,
                duration_s: 60,
                start_ns: DEFAULT_START_NS,
            }
        }
    }

    /// How a client talks to its gateway.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    pub enum ClientKind {
        /// IKEv2 with NAT traversal: ESP in UDP/4500, NAT-T keepalives.
        Ike,
        /// IKEv2 without NAT: IKE on 500 then 4500, ESP as IP protocol 50.
        IkeRawEsp,
        /// TLS on TCP/443, then DTLS on UDP/443.
        Tls,
    }

    impl ClientKind {
        /// The name used in `clients.csv`.
        pub const fn as_str(self) -> &'static str {
            match self {
                ClientKind::Ike => "ike",
                ClientKind::IkeRawEsp => "ike-raw-esp",
                ClientKind::Tls => "tls",
            }
        }
    }

    impl fmt::Display for ClientKind {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(self.as_str())
        }
    }

    /// One generated client.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct LabClient {
        pub addr: IpAddr,
        pub kind: ClientKind,
        /// Index into gw1..gw3 of the gateway that answers it.
        pub gateway: usize,
        /// Whether its IKE_AUTH exchange is IP-fragmented.
        pub fragmented: bool,
    }

    impl LabClient {
        /// The answering gateway's name.
        pub fn gateway_name(&self) -> &'static str {
            GATEWAY_NAMES[self.gateway % GATEWAY_NAMES.len()]
        }

        /// The answering gateway's address in the client's family.
        pub fn gateway_addr(&self) -> IpAddr {
            gateway_addr(self.addr, self.gateway)
        }
    }

    /// One captured frame.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct Frame {
        /// Nanoseconds since the Unix epoch.
        pub ts_ns: u64,
        pub data: Vec<u8>,
    }

    /// Everything [`generate`] produced.
    #[derive(Debug, Clone, Default, PartialEq, Eq)]
    pub struct LabCaptures {
        /// Frames arriving at the client port, in time order.
        pub client_port: Vec<Frame>,
        /// Frames arriving at the backend port, in time order.
        pub backend_port: Vec<Frame>,
        pub clients: Vec<LabClient>,
    }

    /// Why the captures could not be generated or written.
    #[derive(Debug)]
    pub enum LabError {
        /// More IPv4 clients than 198.18.64.0/18 holds.
        TooManyClients { requested: usize, max: usize },
        /// The capture would end after 2106, which pcap timestamps cannot hold.
        TimeOutOfRange { end_s: u64 },
        /// Creating the output directory or `clients.csv` failed.
        Io(io::Error),
        /// Writing a capture failed.
        Pcap(PcapError),
    }

    impl fmt::Display for LabError {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            match self {
                LabError::TooManyClients { requested, max } => write!(
                    f,
                    "{requested} IPv4 clients requested, 198.18.64.0/18 holds {max}"
                ),
                LabError::TimeOutOfRange { end_s } => write!(
                    f,
                    "the capture would end at {end_s} s after the epoch, past what pcap can hold"
                ),
                LabError::Io(e) => write!(f, "{e}"),
                LabError::Pcap(e) => write!(f, "{e}"),
            }
        }
    }

    impl std::error::Error for LabError {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            match self {
                LabError::TooManyClients { .. } | LabError::TimeOutOfRange { .. } => None,
                LabError::Io(e) => Some(e),
                LabError::Pcap(e) => Some(e),
            }
        }
    }

    impl From<io::Error> for LabError {
        fn from(e: io::Error) -> Self {
            LabError::Io(e)
        }
    }

    impl From<PcapError> for LabError {
        fn from(e: PcapError) -> Self {
            LabError::Pcap(e)
        }
    }

    /// The balancer's default choice: a Maglev table of gw1..gw3 (weight 1 each, size
    /// [`MAGLEV_TABLE_SIZE`]) looked up with `client_hash` of the address octets.
    pub fn maglev_gateway_for() -> Result<impl Fn(IpAddr) -> usize, MaglevError> {
        let members = GATEWAY_NAMES.map(|name| MaglevMember { name, weight: 1 });
        let table = MaglevTable::build(&members, MAGLEV_TABLE_SIZE)?;
        Ok(move |addr: IpAddr| {
            let hash = match addr {
                IpAddr::V4(a) => client_hash(&a.octets()),
                IpAddr::V6(a) => client_hash(&a.octets()),
            };
            table.lookup(hash).map_or(0, usize::from)
        })
    }

    fn gateway_addr(client: IpAddr, gw: usize) -> IpAddr {
        let gw = gw % GATEWAY_NAMES.len();
        match client {
            IpAddr::V4(_) => IpAddr::V4(testkit::lab::GATEWAYS_V4[gw]),
            IpAddr::V6(_) => IpAddr::V6(testkit::lab::GATEWAYS_V6[gw]),
        }
    }

    /// Generates the lab traffic. `gateway_for` predicts the balancer's choice of gateway
    /// (an index into gw1..gw3; larger values wrap around).
    pub fn generate(
        cfg: &LabConfig,
        gateway_for: &dyn Fn(IpAddr) -> usize,
    ) -> Result<LabCaptures, LabError> {
        let v4_count = cfg.clients.saturating_add(cfg.tls_clients);
        if v4_count > MAX_V4_CLIENTS {
            return Err(LabError::TooManyClients {
                requested: v4_count,
                max: MAX_V4_CLIENTS,
            });
        }
        let end_ns = cfg
            .start_ns
            .saturating_add(cfg.duration_s.max(1).saturating_mul(NS_PER_S));
        // Keeping the end within pcap's 32-bit seconds also keeps every timestamp sum below
        // (a few seconds past the end at most) far from u64 overflow.
        if end_ns > u64::from(u32::MAX) * NS_PER_S {
            return Err(LabError::TimeOutOfRange {
                end_s: end_ns / NS_PER_S,
            });
        }
        let mut rng = SplitMix64(cfg.seed);
        let clients = pick_clients(cfg, &mut rng, gateway_for);
        let mut sink = Sink {
            end_ns,
            client_port: Vec::new(),
            backend_port: Vec::new(),
        };
        // Clients arrive over the first half of the capture, so every one completes its
        // handshake and then carries traffic.
        let arrival_window = (sink.end_ns - cfg.start_ns) / 2;
        for (i, c) in clients.iter().enumerate() {
            let mut crng =
                SplitMix64(cfg.seed ^ (i as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15));
            crng.next_u64();
            let t0 = cfg.start_ns + crng.below(arrival_window);
            let mut peer = Peer::new(c, &mut crng);
            match c.kind {
                ClientKind::Ike | ClientKind::IkeRawEsp => {
                    ike_client(&mut sink, &mut peer, c, &mut crng, t0)
                }
                ClientKind::Tls => tls_client(&mut sink, &mut peer, &mut crng, t0),
            }
        }
        sink.client_port.sort_by_key(|f| f.ts_ns);
        sink.backend_port.sort_by_key(|f| f.ts_ns);
        Ok(LabCaptures {
            client_port: sink.client_port,
            backend_port: sink.backend_port,
            clients,
        })
    }

    /// Writes `client.pcap`, `backend.pcap` and `clients.csv` into `dir` (created if needed).
    pub fn write_captures(dir: &Path, caps: &LabCaptures) -> Result<(), LabError> {
        std::fs::create_dir_all(dir)?;
        for (name, frames) in [
            ("client.pcap", &caps.client_port),
            ("backend.pcap", &caps.backend_port),
        ] {
            let mut w = PcapWriter::create(dir.join(name))?;
            for f in frames {
                w.write_packet(f.ts_ns, &f.data)?;
            }
            w.flush()?;
        }
        let mut csv = BufWriter::new(File::create(dir.join("clients.csv"))?);
        writeln!(csv, "address,kind,gateway,gateway_address")?;
        for c in &caps.clients {
            writeln!(
                csv,
                "{},{},{},{}",
                c.addr,
                c.kind,
                c.gateway_name(),
                c.gateway_addr()
            )?;
        }
        csv.flush()?;
        Ok(())
    }

    /// [`generate`] then [`write_captures`].
    pub fn generate_into(
        dir: &Path,
        cfg: &LabConfig,
        gateway_for: &dyn Fn(IpAddr) -> usize,
    ) -> Result<LabCaptures, LabError> {
        let caps = generate(cfg, gateway_for)?;
        write_captures(dir, &caps)?;
        Ok(caps)
    }

    /// Distinct client addresses: IPv4 IKE, IPv6 IKE, then IPv4 TLS.
    fn pick_clients(
        cfg: &LabConfig,
        rng: &mut SplitMix64,
        gateway_for: &dyn Fn(IpAddr) -> usize,
    ) -> Vec<LabClient> {
        let mut seen = HashSet::new();
        let mut v4 = |rng: &mut SplitMix64| loop {
            // Hosts 1..=16382 of 198.18.64.0/18.
            let host = 1 + rng.below(MAX_V4_CLIENTS as u64) as u32;
            let addr = IpAddr::V4(Ipv4Addr::from(0xc612_4000 | host));
            if seen.insert(addr) {
                return addr;
            }
        };
        let mut addrs: Vec<(IpAddr, bool)> = Vec::new(); // (address, is TLS)
        for _ in 0..cfg.clients {
            addrs.push((v4(rng), false));
        }
        let mut seen6 = HashSet::new();
        while seen6.len() < cfg.ipv6_clients {
            let iid = rng.next_u64().max(1);
            let a = Ipv6Addr::from((0x2001_0002_0000_0064u128 << 64) | u128::from(iid));
            if seen6.insert(a) {
                addrs.push((IpAddr::V6(a), false));
            }
        }
        for _ in 0..cfg.tls_clients {
            addrs.push((v4(rng), true));
        }
        // Counts IKE clients from 0; the n-th one (1-based) has index n - 1.
        let mut ike_index = 0usize;
        addrs
            .into_iter()
            .map(|(addr, tls)| {
                let gateway = gateway_for(addr) % GATEWAY_NAMES.len();
                if tls {
                    return LabClient {
                        addr,
                        kind: ClientKind::Tls,
                        gateway,
                        fragmented: false,
                    };
                }
                let i = ike_index;
                ike_index += 1;
                LabClient {
                    addr,
                    // Every fifth IKE client is not behind NAT.
                    kind: if i % 5 == 4 {
                        ClientKind::IkeRawEsp
                    } else {
                        ClientKind::Ike
                    },
                    gateway,
                    fragmented: cfg.fragment_every != 0
                        && i % cfg.fragment_every == cfg.fragment_every - 1,
                }
            })
            .collect()
    }

    /// Collects the frames of both ports, dropping those past the end of the capture.
    struct Sink {
        end_ns: u64,
        client_port: Vec<Frame>,
        backend_port: Vec<Frame>,
    }

    impl Sink {
        /// Frames from the client, arriving at the client port from `ts_ns` on (fragments a
        /// few microseconds apart, as a router forwards them).
        fn up(&mut self, ts_ns: u64, frames: Vec<Vec<u8>>) {
            Self::push(&mut self.client_port, self.end_ns, ts_ns, frames);
        }

        /// Frames from the gateway, arriving at the backend port.
        fn down(&mut self, ts_ns: u64, frames: Vec<Vec<u8>>) {
            Self::push(&mut self.backend_port, self.end_ns, ts_ns, frames);
        }

        fn push(port: &mut Vec<Frame>, end_ns: u64, ts_ns: u64, frames: Vec<Vec<u8>>) {
            for (i, mut data) in frames.into_iter().enumerate() {
                let ts_ns = ts_ns + i as u64 * 12 * NS_PER_US;
                if ts_ns > end_ns {
                    return;
                }
                testkit::pad_to_min_frame(&mut data);
                port.push(Frame { ts_ns, data });
            }
        }
    }

    /// A client and its gateway: builds frames in both directions.
    struct Peer {
        client: IpAddr,
        vip: IpAddr,
        gw: IpAddr,
        gw_mac: EthernetAddress,
        client_ident: u16,
        gw_ident: u16,
    }

    impl Peer {
        fn new(c: &LabClient, rng: &mut SplitMix64) -> Self {
            let vip = match c.addr {
                IpAddr::V4(_) => IpAddr::V4(testkit::lab::VIP_V4),
                IpAddr::V6(_) => IpAddr::V6(testkit::lab::VIP_V6),
            };
            Peer {
                client: c.addr,
                vip,
                gw: c.gateway_addr(),
                gw_mac: testkit::lab::GATEWAY_MACS[c.gateway % 3],
                client_ident: rng.next_u64() as u16,
                gw_ident: rng.next_u64() as u16,
            }
        }

        fn is_v6(&self) -> bool {
            self.client.is_ipv6()
        }

        /// IP header bytes for this family.
        fn ip_overhead(&self) -> usize {
            if self.is_v6() {
                40
            } else {
                20
            }
        }

        /// Client to VIP, as the router hands it to the client port. `frag` splits it at the
        /// MTU (IPv6 with a Fragment header of `frag` ident).
        fn up(&mut self, l4: &L4, udp_checksum: bool, frag: Option<u32>) -> Vec<Vec<u8>> {
            self.client_ident = self.client_ident.wrapping_add(1);
            let l2 = L2::new(testkit::lab::ROUTER_MAC, testkit::lab::CLIENT_PORT_MAC);
            // Clients are some hops away; the router has already decremented the TTL.
            let frame = ip_frame(
                &l2,
                self.client,
                self.vip,
                52,
                self.client_ident,
                udp_checksum,
                l4,
            );
            fragment(frame, frag)
        }

        /// Gateway to client, as the gateway hands it to the backend port.
        fn down(&mut self, l4: &L4, udp_checksum: bool, frag: Option<u32>) -> Vec<Vec<u8>> {
            self.gw_ident = self.gw_ident.wrapping_add(1);
            let l2 = L2::new(self.gw_mac, testkit::lab::BACKEND_PORT_MAC);
            let frame = ip_frame(
                &l2,
                self.gw,
                self.client,
                64,
                self.gw_ident,
                udp_checksum,
                l4,
            );
            fragment(frame, frag)
        }
    }

    fn ip_frame(
        l2: &L2,
        src: IpAddr,
        dst: IpAddr,
        ttl: u8,
        ident: u16,
        udp_checksum: bool,
        l4: &L4,
    ) -> Vec<u8> {
        match (src, dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                let opts = Ipv4Opts {
                    ttl,
                    ident,
                    // Linux sets DF on TCP (path MTU discovery), not on IKE/ESP UDP.
                    dont_frag: matches!(l4, L4::Tcp { .. }),
                    options: Vec::new(),
                    udp_checksum,
                };
                testkit::ipv4(l2, s, d, &opts, l4)
            }
            (IpAddr::V6(s), IpAddr::V6(d)) => testkit::ipv6(l2, &s, &d, ttl, &[], l4),
            // Peers are built from one family; mixed families cannot occur.
            _ => Vec::new(),
        }
    }

    fn fragment(frame: Vec<u8>, frag: Option<u32>) -> Vec<Vec<u8>> {
        match frag {
            Some(ident) if frame.get(12..14) == Some(&[0x86, 0xdd]) => {
                testkit::fragment_ipv6(&frame, MTU, ident)
            }
            Some(_) => testkit::fragment_ipv4(&frame, MTU),
            None => vec![frame],
        }
    }

    /// A delay uniformly in `lo_ms..hi_ms` milliseconds, with microsecond jitter.
    fn ms(rng: &mut SplitMix64, lo_ms: u64, hi_ms: u64) -> u64 {
        lo_ms * NS_PER_MS + rng.below((hi_ms - lo_ms).max(1) * NS_PER_MS)
    }

    /// A VPN data packet's length, up to `max`: tunnelled ACKs and small packets, or full-size
    /// packets (more often towards the client, which mostly downloads).
    fn data_len(rng: &mut SplitMix64, max: usize, towards_client: bool) -> usize {
        let small_pct = if towards_client { 35 } else { 70 };
        if rng.below(100) < small_pct {
            (80 + 4 * rng.below(24) as usize).min(max)
        } else {
            max.saturating_sub(4 * rng.below(16) as usize)
        }
    }

    /// IKE_SA_INIT runs on UDP 500; IKE_AUTH on, ESP-in-UDP and keepalives use 4500.
    const IKE_PORT: u16 = 500;
    const NATT_PORT: u16 = 4500;

    fn ike_client(
        sink: &mut Sink,
        peer: &mut Peer,
        c: &LabClient,
        rng: &mut SplitMix64,
        mut t: u64,
    ) {
        let spi_i = rng.next_u64();
        let spi_r = rng.next_u64();
        let mut nonce = [0u8; 32];
        // Curve25519 (32-byte keys) mostly, some ECP-256 (64 bytes).
        let (group, ke_len) = if rng.below(4) == 0 {
            (19, 64)
        } else {
            (31, 32)
        };
        // Fragment header idents (IPv6); IPv4 fragments reuse the IP ident.
        let mut frag_id6 = rng.next_u64() as u32;
        let mut frag = |on: bool| -> Option<u32> {
            frag_id6 = frag_id6.wrapping_add(1);
            on.then_some(frag_id6)
        };

        // IKE_SA_INIT on UDP 500, strongSwan's usual notifies.
        rng.fill(&mut nonce);
        let sig_hash: &[u8] = &[0, 2, 0, 3, 0, 4]; // SHA2-256/384/512
        let init = testkit::ike_sa_init_request(
            spi_i,
            &nonce,
            group,
            ke_len,
            &[
                (notify_type::IKEV2_FRAGMENTATION_SUPPORTED, &[]),
                (notify_type::SIGNATURE_HASH_ALGORITHMS, sig_hash),
                (notify_type::REDIRECT_SUPPORTED, &[]),
            ],
        );
        sink.up(t, peer.up(&udp(IKE_PORT, IKE_PORT, &init), true, None));
        t += ms(rng, 2, 8); // the gateway computes its key share
        rng.fill(&mut nonce);
        // A gateway without IKE fragmentation (RFC 7383) leaves large IKE_AUTH messages to IP
        // fragmentation: that is what the certificate clients below exercise.
        let big = c.fragmented;
        let frag_supported: &[(u16, &[u8])] = if big {
            &[]
        } else {
            &[(notify_type::IKEV2_FRAGMENTATION_SUPPORTED, &[])]
        };
        let mut gw_notifies = frag_supported.to_vec();
        gw_notifies.push((notify_type::SIGNATURE_HASH_ALGORITHMS, sig_hash));
        let resp = testkit::ike_sa_init_response(spi_i, spi_r, &nonce, group, ke_len, &gw_notifies);
        sink.down(t, peer.down(&udp(IKE_PORT, IKE_PORT, &resp), true, None));

        // IKE_AUTH on 4500 behind the non-ESP marker. With certificates the messages exceed
        // the MTU and are IP-fragmented.
        t += ms(rng, 20, 120);
        let body_len = if big {
            1540 + rng.below(100) as usize
        } else {
            320 + rng.below(300) as usize
        };
        let auth = testkit::ike_message(
            spi_i,
            spi_r,
            exchange::IKE_AUTH,
            ike_flags::INITIATOR,
            1,
            &rng.bytes(body_len),
        );
        let auth = testkit::non_esp_marker(&auth);
        sink.up(
            t,
            peer.up(&udp(NATT_PORT, NATT_PORT, &auth), true, frag(big)),
        );
        t += ms(rng, 5, 20);
        let body_len = if big {
            1700 + rng.below(700) as usize
        } else {
            250 + rng.below(300) as usize
        };
        let auth = testkit::ike_message(
            spi_i,
            spi_r,
            exchange::IKE_AUTH,
            ike_flags::RESPONSE,
            1,
            &rng.bytes(body_len),
        );
        let auth = testkit::non_esp_marker(&auth);
        sink.down(
            t,
            peer.down(&udp(NATT_PORT, NATT_PORT, &auth), true, frag(big)),
        );

        // ESP both ways until the end of the capture.
        let raw = c.kind == ClientKind::IkeRawEsp;
        let (spi_up, spi_down) = (
            rng.next_u64() as u32 | 0xc000_0000,
            rng.next_u64() as u32 | 0xc000_0000,
        );
        let (mut seq_up, mut seq_down) = (0u32, 0u32);
        let max_esp = MTU - peer.ip_overhead() - if raw { 0 } else { 8 };
        let mut next_keepalive = t + 20 * NS_PER_S;
        t += ms(rng, 20, 120);
        while t <= sink.end_ns {
            if !raw && t >= next_keepalive {
                // NAT-T keepalive every 20 s (strongSwan's default), one 0xFF byte.
                let ka = udp(NATT_PORT, NATT_PORT, &testkit::NATT_KEEPALIVE);
                sink.up(next_keepalive, peer.up(&ka, true, None));
                next_keepalive += 20 * NS_PER_S;
            }
            let down = rng.below(100) < 60;
            let len = data_len(rng, max_esp, down);
            let (spi, seq) = if down {
                seq_down = seq_down.wrapping_add(1);
                (spi_down, seq_down)
            } else {
                seq_up = seq_up.wrapping_add(1);
                (spi_up, seq_up)
            };
            let esp = testkit::esp_payload(spi, seq, len);
            // The kernel sends ESP-in-UDP over IPv4 without a UDP checksum.
            let l4 = if raw {
                L4::Raw {
                    protocol: 50,
                    payload: &esp,
                }
            } else {
                udp(NATT_PORT, NATT_PORT, &esp)
            };
            if down {
                sink.down(t, peer.down(&l4, false, None));
            } else {
                sink.up(t, peer.up(&l4, false, None));
            }
            t += ms(rng, 1, 500);
        }
    }

    fn udp(src: u16, dst: u16, payload: &[u8]) -> L4<'_> {
        L4::Udp { src, dst, payload }
    }

    /// One TCP connection from a client port to 443, tracking both sequence numbers.
    struct TcpConn {
        sport: u16,
        cseq: u32,
        sseq: u32,
    }

    impl TcpConn {
        fn seg<'a>(&self, from_client: bool, flags: u16, payload: &'a [u8]) -> L4<'a> {
            let (src, dst, seq, ack) = if from_client {
                (self.sport, 443, self.cseq, self.sseq)
            } else {
                (443, self.sport, self.sseq, self.cseq)
            };
            L4::Tcp {
                src,
                dst,
                seq,
                ack,
                flags,
                payload,
            }
        }

        /// The client sends `data` (PSH+ACK), or a bare ACK when empty.
        fn client(&mut self, sink: &mut Sink, peer: &mut Peer, t: u64, data: &[u8]) {
            let flags = if data.is_empty() {
                tcp_flags::ACK
            } else {
                tcp_flags::PSH | tcp_flags::ACK
            };
            sink.up(t, peer.up(&self.seg(true, flags, data), true, None));
            self.cseq = self.cseq.wrapping_add(data.len() as u32);
        }

        /// The gateway sends `data` (PSH+ACK).
        fn server(&mut self, sink: &mut Sink, peer: &mut Peer, t: u64, data: &[u8]) {
            let flags = tcp_flags::PSH | tcp_flags::ACK;
            sink.down(t, peer.down(&self.seg(false, flags, data), true, None));
            self.sseq = self.sseq.wrapping_add(data.len() as u32);
        }
    }

    fn tls_client(sink: &mut Sink, peer: &mut Peer, rng: &mut SplitMix64, mut t: u64) {
        let sport = 32_768 + rng.below(28_232) as u16;
        let mut tcp = TcpConn {
            sport,
            cseq: rng.next_u64() as u32,
            sseq: rng.next_u64() as u32,
        };
        // Three-way handshake.
        sink.up(t, peer.up(&tcp.seg(true, tcp_flags::SYN, &[]), true, None));
        tcp.cseq = tcp.cseq.wrapping_add(1);
        t += ms(rng, 1, 3);
        let syn_ack = tcp.seg(false, tcp_flags::SYN | tcp_flags::ACK, &[]);
        sink.down(t, peer.down(&syn_ack, true, None));
        tcp.sseq = tcp.sseq.wrapping_add(1);
        let rtt = ms(rng, 20, 120);
        t += rtt;
        tcp.client(sink, peer, t, &[]);

        // Client and server hello flights.
        let sni = format!("vpn{}.example.net", 1 + rng.below(3));
        t += ms(rng, 0, 2);
        tcp.client(sink, peer, t, &testkit::tls_client_hello(Some(&sni)));
        t += ms(rng, 2, 10);
        let mut flight = testkit::tls_server_hello();
        flight.extend_from_slice(&[20, 3, 3, 0, 1, 1]); // ChangeCipherSpec (middlebox compat)
        tcp.server(sink, peer, t, &flight);
        // EncryptedExtensions, Certificate, CertificateVerify, Finished.
        for _ in 0..2 {
            t += 30 * NS_PER_US;
            let rec = testkit::tls_application_data(rng.next_u64(), 900 + rng.below(400) as usize);
            tcp.server(sink, peer, t, &rec);
        }
        t += rtt;
        let finished = testkit::tls_application_data(rng.next_u64(), 53);
        tcp.client(sink, peer, t, &finished);
        // The tunnel's control session: a few requests and responses.
        for _ in 0..3 + rng.below(5) {
            t += ms(rng, 5, 300);
            let req = testkit::tls_application_data(rng.next_u64(), 100 + rng.below(500) as usize);
            tcp.client(sink, peer, t, &req);
            t += ms(rng, 3, 30);
            for _ in 0..1 + rng.below(3) {
                let rec =
                    testkit::tls_application_data(rng.next_u64(), 1000 + rng.below(380) as usize);
                tcp.server(sink, peer, t, &rec);
                t += 40 * NS_PER_US;
            }
            t += rtt / 2;
            tcp.client(sink, peer, t, &[]);
        }

        // DTLS from a new source port: cookie exchange, then data both ways.
        let dport = loop {
            let p = 32_768 + rng.below(28_232) as u16;
            if p != sport {
                break p;
            }
        };
        t += ms(rng, 10, 100);
        let hello = testkit::dtls_client_hello(&[], Some(&sni));
        sink.up(t, peer.up(&udp(dport, 443, &hello), true, None));
        t += ms(rng, 1, 3);
        let cookie = rng.bytes(32);
        let hvr = testkit::dtls_hello_verify_request(&cookie);
        sink.down(t, peer.down(&udp(443, dport, &hvr), true, None));
        t += rtt;
        let hello = testkit::dtls_client_hello(&cookie, Some(&sni));
        sink.up(t, peer.up(&udp(dport, 443, &hello), true, None));
        t += rtt;
        // A DTLS record has a 13-byte header; keep the datagram within the MTU.
        let max = MTU - peer.ip_overhead() - 8 - 13;
        let (mut seq_up, mut seq_down) = (0u64, 0u64);
        while t <= sink.end_ns {
            let down = rng.below(100) < 60;
            let len = data_len(rng, max, down);
            if down {
                seq_down = seq_down.wrapping_add(1);
                let rec = testkit::dtls_application_data(1, seq_down, len);
                sink.down(t, peer.down(&udp(443, dport, &rec), true, None));
            } else {
                seq_up = seq_up.wrapping_add(1);
                let rec = testkit::dtls_application_data(1, seq_up, len);
                sink.up(t, peer.up(&udp(dport, 443, &rec), true, None));
            }
            t += ms(rng, 1, 500);
        }
    }
}
