//! Ethernet ports: discovery, capabilities, configuration, and their RX/TX queues.
//!
//! Control calls on one port are serialised by a per-port lock (DPDK's control path is not
//! thread-safe). Each queue is handed out once, as an [`RxQueue`] or [`TxQueue`] that a single
//! worker owns: DPDK's burst calls on one queue must not run concurrently. A port cannot be
//! reconfigured or stopped while any of its queue handles exists.

use std::ffi::{c_char, c_uint, CStr, CString};
use std::sync::{Mutex, MutexGuard};

use dpdk_sys as sys;

use crate::burst::{burst_count, Burst};
use crate::eal::Eal;
use crate::error::{DpdkError, Result};
use crate::mempool::{Mempool, MBUF_HEADROOM};

const MAX_PORTS: usize = sys::VPNLB_MAX_ETHPORTS as usize;
const MAX_QUEUES: usize = sys::VPNLB_MAX_QUEUES_PER_PORT as usize;
const QUEUE_WORDS: usize = MAX_QUEUES.div_ceil(64);

/// Length of the RSS hash key [`PortConfig`] takes (the Toeplitz key size most NICs use).
pub const RSS_KEY_LEN: usize = RSS_KEY_LEN_U8 as usize;

/// [`RSS_KEY_LEN`] as `rte_eth_rss_conf::rss_key_len` takes it.
const RSS_KEY_LEN_U8: u8 = 40;

/// Microsoft's default Toeplitz key (the one DPDK's testpmd and most NICs use).
pub const DEFAULT_RSS_KEY: [u8; RSS_KEY_LEN] = [
    0x6d, 0x5a, 0x56, 0xda, 0x25, 0x5b, 0x0e, 0xc2, 0x41, 0x67, 0x25, 0x3d, 0x43, 0xa3, 0x8f, 0xb0,
    0xd0, 0xca, 0x2b, 0xcb, 0xae, 0x7b, 0x30, 0xb4, 0x77, 0xcb, 0x2d, 0xa3, 0x80, 0x30, 0xf2, 0x0c,
    0x6a, 0x42, 0xb7, 0x3b, 0xbe, 0xac, 0x01, 0xfa,
];

/// Bytes a frame carries beyond the MTU: Ethernet header, two VLAN tags, FCS.
const FRAME_OVERHEAD: u32 = 14 + 8 + 4;

/// Which queues of a port have a live handle.
struct PortState {
    rx: [u64; QUEUE_WORDS],
    tx: [u64; QUEUE_WORDS],
}

impl PortState {
    const EMPTY: PortState = PortState {
        rx: [0; QUEUE_WORDS],
        tx: [0; QUEUE_WORDS],
    };

    fn busy(&self) -> bool {
        self.rx.iter().chain(&self.tx).any(|&w| w != 0)
    }

    /// Sets the queue's bit; false when it was set already or `q` is out of range.
    fn claim(words: &mut [u64; QUEUE_WORDS], q: u16) -> bool {
        let (w, bit) = (usize::from(q) / 64, 1u64 << (q % 64));
        match words.get_mut(w) {
            Some(word) if *word & bit == 0 => {
                *word |= bit;
                true
            }
            _ => false,
        }
    }

    fn release(words: &mut [u64; QUEUE_WORDS], q: u16) {
        if let Some(word) = words.get_mut(usize::from(q) / 64) {
            *word &= !(1u64 << (q % 64));
        }
    }
}

static PORT_STATE: [Mutex<PortState>; MAX_PORTS] =
    [const { Mutex::new(PortState::EMPTY) }; MAX_PORTS];

/// Serialises hot-plug (`rte_dev_probe`).
static ATTACH: Mutex<()> = Mutex::new(());

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock leaves only the claim bitmap behind, which stays valid.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// An Ethernet port (a valid DPDK port id); a copyable handle.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Port {
    id: u16,
}

/// Hash-based spreading of received packets over the RX queues.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum RssMode {
    /// No RSS: one RX queue, or software steering.
    #[default]
    None,
    /// Hash on the IP source address only (`RTE_ETH_RSS_L3_SRC_ONLY`), so one client's
    /// packets always land on the same queue.
    L3Src,
    /// Hash on the IP destination address only (`RTE_ETH_RSS_L3_DST_ONLY`).
    L3Dst,
}

/// Why RSS was not set up; the caller falls back to software steering.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RssUnavailable {
    /// The device cannot hash IP flows on the requested address alone (its
    /// `flow_type_rss_offloads` are given; virtual devices report 0).
    NotSupported {
        /// What the device can hash (`RTE_ETH_RSS_*` bits).
        supported: u64,
    },
    /// The device's hash key is not [`RSS_KEY_LEN`] bytes long.
    KeySize {
        /// The device's key length.
        device: u8,
    },
    /// `rte_eth_dev_configure` refused the RSS configuration; the port was configured
    /// without it.
    Rejected {
        /// Positive error number of the refused call.
        errno: i32,
    },
}

/// What became of the RSS request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RssStatus {
    /// [`RssMode::None`] was asked for.
    NotRequested,
    /// The device hashes with `hash_functions` (`RTE_ETH_RSS_*` bits, modifier included).
    /// `reta_spread`: the redirection table was set to spread the hash over the RX queues
    /// round-robin (false: the device keeps its default table, or has none).
    Enabled {
        /// The `rss_hf` the device accepted.
        hash_functions: u64,
        /// Whether the RETA update succeeded.
        reta_spread: bool,
    },
    /// RSS is not in use.
    Unavailable(RssUnavailable),
}

impl RssStatus {
    /// True when the NIC spreads packets by RSS as asked.
    pub fn is_enabled(&self) -> bool {
        matches!(self, RssStatus::Enabled { .. })
    }
}

/// IPv4 / UDP / TCP checksum offloads, for receive and transmit: a capability set
/// ([`PortInfo::checksum_offloads`]) or the set a port enabled ([`PortSetup::offloads`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ChecksumOffloads {
    /// RX IPv4 header checksum check.
    pub rx_ipv4: bool,
    /// RX UDP checksum check.
    pub rx_udp: bool,
    /// RX TCP checksum check.
    pub rx_tcp: bool,
    /// TX IPv4 header checksum computation.
    pub tx_ipv4: bool,
    /// TX UDP checksum computation.
    pub tx_udp: bool,
    /// TX TCP checksum computation.
    pub tx_tcp: bool,
}

impl ChecksumOffloads {
    fn from_capa(rx: u64, tx: u64) -> Self {
        ChecksumOffloads {
            rx_ipv4: rx & sys::VPNLB_ETH_RX_OFFLOAD_IPV4_CKSUM != 0,
            rx_udp: rx & sys::VPNLB_ETH_RX_OFFLOAD_UDP_CKSUM != 0,
            rx_tcp: rx & sys::VPNLB_ETH_RX_OFFLOAD_TCP_CKSUM != 0,
            tx_ipv4: tx & sys::VPNLB_ETH_TX_OFFLOAD_IPV4_CKSUM != 0,
            tx_udp: tx & sys::VPNLB_ETH_TX_OFFLOAD_UDP_CKSUM != 0,
            tx_tcp: tx & sys::VPNLB_ETH_TX_OFFLOAD_TCP_CKSUM != 0,
        }
    }

    fn rx_flags(&self) -> u64 {
        let mut f = 0;
        if self.rx_ipv4 {
            f |= sys::VPNLB_ETH_RX_OFFLOAD_IPV4_CKSUM;
        }
        if self.rx_udp {
            f |= sys::VPNLB_ETH_RX_OFFLOAD_UDP_CKSUM;
        }
        if self.rx_tcp {
            f |= sys::VPNLB_ETH_RX_OFFLOAD_TCP_CKSUM;
        }
        f
    }

    fn tx_flags(&self) -> u64 {
        let mut f = 0;
        if self.tx_ipv4 {
            f |= sys::VPNLB_ETH_TX_OFFLOAD_IPV4_CKSUM;
        }
        if self.tx_udp {
            f |= sys::VPNLB_ETH_TX_OFFLOAD_UDP_CKSUM;
        }
        if self.tx_tcp {
            f |= sys::VPNLB_ETH_TX_OFFLOAD_TCP_CKSUM;
        }
        f
    }

    /// True when none is set.
    pub fn is_empty(&self) -> bool {
        *self == ChecksumOffloads::default()
    }
}

/// Descriptor-count limits of a queue.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DescLimits {
    /// Most descriptors.
    pub max: u16,
    /// Fewest descriptors.
    pub min: u16,
    /// Counts must be a multiple of this.
    pub align: u16,
}

/// What a port is and can do (`rte_eth_dev_info_get`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortInfo {
    /// The PMD's name, e.g. "net_ring", "net_pcap", "net_ice".
    pub driver_name: String,
    /// The NUMA socket of the device, when known.
    pub socket_id: Option<u32>,
    /// Most RX queues.
    pub max_rx_queues: u16,
    /// Most TX queues.
    pub max_tx_queues: u16,
    /// RX queues configured now.
    pub nb_rx_queues: u16,
    /// TX queues configured now.
    pub nb_tx_queues: u16,
    /// RX descriptor limits.
    pub rx_desc_lim: DescLimits,
    /// TX descriptor limits.
    pub tx_desc_lim: DescLimits,
    /// Smallest MTU.
    pub min_mtu: u16,
    /// Largest MTU.
    pub max_mtu: u16,
    /// Longest frame the device receives.
    pub max_rx_pktlen: u32,
    /// RX offload capabilities (`RTE_ETH_RX_OFFLOAD_*`).
    pub rx_offload_capa: u64,
    /// TX offload capabilities (`RTE_ETH_TX_OFFLOAD_*`).
    pub tx_offload_capa: u64,
    /// RSS hash functions supported (`RTE_ETH_RSS_*`, modifiers such as
    /// `RTE_ETH_RSS_L3_SRC_ONLY` included).
    pub flow_type_rss_offloads: u64,
    /// RSS hash key length in bytes (0: not reported).
    pub hash_key_size: u8,
    /// RSS redirection table size.
    pub reta_size: u16,
}

/// RSS capabilities, decoded from [`PortInfo::flow_type_rss_offloads`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RssSupport {
    /// Hashes IPv4 packets.
    pub ipv4: bool,
    /// Hashes IPv6 packets.
    pub ipv6: bool,
    /// Can hash on the L3 source address alone.
    pub l3_src_only: bool,
    /// Can hash on the L3 destination address alone.
    pub l3_dst_only: bool,
}

impl PortInfo {
    /// The RSS capabilities.
    pub fn rss_support(&self) -> RssSupport {
        let f = self.flow_type_rss_offloads;
        RssSupport {
            ipv4: f & sys::VPNLB_ETH_RSS_IPV4 != 0,
            ipv6: f & sys::VPNLB_ETH_RSS_IPV6 != 0,
            l3_src_only: f & sys::VPNLB_ETH_RSS_L3_SRC_ONLY != 0,
            l3_dst_only: f & sys::VPNLB_ETH_RSS_L3_DST_ONLY != 0,
        }
    }

    /// The checksum offloads the device has.
    pub fn checksum_offloads(&self) -> ChecksumOffloads {
        ChecksumOffloads::from_capa(self.rx_offload_capa, self.tx_offload_capa)
    }

    /// The `rss_hf` [`Port::configure`] would ask for in `mode`, or why RSS is unavailable.
    pub fn rss_hash_functions(&self, mode: RssMode) -> Result<Option<u64>, RssUnavailable> {
        let modifier = match mode {
            RssMode::None => return Ok(None),
            RssMode::L3Src => sys::VPNLB_ETH_RSS_L3_SRC_ONLY,
            RssMode::L3Dst => sys::VPNLB_ETH_RSS_L3_DST_ONLY,
        };
        let supported = self.flow_type_rss_offloads;
        // Every IP flow type the device splits traffic into (plain, fragment, TCP, UDP, ...):
        // with the modifier, each hashes on the one address only, so a client's IKE, NAT-T,
        // ESP and TLS packets all take the same queue.
        let types =
            (sys::VPNLB_ETH_RSS_IP | sys::VPNLB_ETH_RSS_TCP | sys::VPNLB_ETH_RSS_UDP) & supported;
        if supported & modifier == 0 || types == 0 {
            return Err(RssUnavailable::NotSupported { supported });
        }
        if self.hash_key_size != 0 && usize::from(self.hash_key_size) != RSS_KEY_LEN {
            return Err(RssUnavailable::KeySize {
                device: self.hash_key_size,
            });
        }
        Ok(Some(types | modifier))
    }
}

/// How to configure a port ([`Port::configure`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortConfig {
    /// RX queues (at least 1).
    pub rx_queues: u16,
    /// TX queues (at least 1).
    pub tx_queues: u16,
    /// RX descriptors per queue; adjusted to the device's limits.
    pub rx_desc: u16,
    /// TX descriptors per queue; adjusted to the device's limits.
    pub tx_desc: u16,
    /// RSS over the RX queues.
    pub rss: RssMode,
    /// The RSS hash key.
    pub rss_key: [u8; RSS_KEY_LEN],
    /// Enable the IPv4/UDP/TCP checksum offloads the device has, RX and TX.
    pub checksum_offload: bool,
    /// MTU. Every received frame (plus two VLAN tags and FCS) must fit one mbuf of the RX
    /// pools, so the port never needs scattered RX.
    pub mtu: u16,
    /// RX pools: one for all queues, or one per RX queue (index = queue).
    pub rx_pools: Vec<Mempool>,
}

impl PortConfig {
    /// One RX and one TX queue of 1024 descriptors, no RSS, checksum offloads on, MTU 1500,
    /// RX from `pool`.
    pub fn new(pool: Mempool) -> Self {
        PortConfig {
            rx_queues: 1,
            tx_queues: 1,
            rx_desc: 1024,
            tx_desc: 1024,
            rss: RssMode::None,
            rss_key: DEFAULT_RSS_KEY,
            checksum_offload: true,
            mtu: 1500,
            rx_pools: vec![pool],
        }
    }

    fn pool_for(&self, q: u16) -> Option<Mempool> {
        match self.rx_pools.as_slice() {
            [one] => Some(*one),
            many => many.get(usize::from(q)).copied(),
        }
    }
}

/// What [`Port::configure`] set up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PortSetup {
    /// RX queues.
    pub rx_queues: u16,
    /// TX queues.
    pub tx_queues: u16,
    /// RX descriptors per queue, after adjustment to the device.
    pub rx_desc: u16,
    /// TX descriptors per queue, after adjustment to the device.
    pub tx_desc: u16,
    /// The RSS outcome.
    pub rss: RssStatus,
    /// The checksum offloads enabled.
    pub offloads: ChecksumOffloads,
}

/// Link state (`rte_eth_link_get_nowait`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Link {
    /// Link up.
    pub up: bool,
    /// Speed in Mb/s (0 when unknown).
    pub speed_mbps: u32,
    /// Full duplex.
    pub full_duplex: bool,
    /// Autonegotiated.
    pub autoneg: bool,
}

/// Basic port counters (`rte_eth_stats_get`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PortStats {
    /// Packets received.
    pub ipackets: u64,
    /// Packets sent.
    pub opackets: u64,
    /// Bytes received.
    pub ibytes: u64,
    /// Bytes sent.
    pub obytes: u64,
    /// Packets dropped by the NIC for lack of RX descriptors (the workers are too slow).
    pub imissed: u64,
    /// Erroneous packets received.
    pub ierrors: u64,
    /// Failed transmissions.
    pub oerrors: u64,
    /// RX mbuf allocation failures (the RX pool ran dry).
    pub rx_nombuf: u64,
}

impl Port {
    /// Ports available; 0 before [`Eal::init`].
    pub fn count() -> u16 {
        if Eal::get().is_none() {
            return 0;
        }
        // SAFETY: the EAL is initialised.
        unsafe { sys::rte_eth_dev_count_avail() }
    }

    /// Every valid port, in id order; empty before [`Eal::init`].
    pub fn all() -> Vec<Port> {
        if Eal::get().is_none() {
            return Vec::new();
        }
        (0..sys::VPNLB_MAX_ETHPORTS)
            // SAFETY: the EAL is initialised; any id is accepted.
            .filter(|&id| unsafe { sys::rte_eth_dev_is_valid_port(id) } != 0)
            .map(|id| Port { id })
            .collect()
    }

    /// The port with this id.
    pub fn from_id(id: u16) -> Result<Port> {
        Eal::require()?;
        // SAFETY: the EAL is initialised; any id is accepted.
        if unsafe { sys::rte_eth_dev_is_valid_port(id) } == 0 {
            return Err(DpdkError::invalid("port id", format!("{id} is not a port")));
        }
        Ok(Port { id })
    }

    /// The port with this device name ("net_ring0", "0000:01:00.0", ...).
    pub fn by_name(name: &str) -> Result<Port> {
        Eal::require()?;
        let cname = CString::new(name)
            .map_err(|_| DpdkError::invalid("port name", format!("{name:?} contains NUL")))?;
        let mut id = 0u16;
        // SAFETY: the EAL is initialised; cname is a valid C string and id a valid out
        // pointer for the duration of the call.
        let ret = unsafe { sys::rte_eth_dev_get_port_by_name(cname.as_ptr(), &mut id) };
        DpdkError::check("rte_eth_dev_get_port_by_name", ret)?;
        Port::from_id(id)
    }

    /// Probes a device at run time (`rte_dev_probe`, e.g. "net_ring2" or
    /// "net_pcap1,rx_pcap=in.pcap") and returns its port; a device probed already (at EAL
    /// init or before) is simply looked up.
    pub fn attach(devargs: &str) -> Result<Port> {
        Eal::require()?;
        let name = devargs.split(',').next().unwrap_or(devargs);
        if let Ok(p) = Port::by_name(name) {
            return Ok(p);
        }
        let c = CString::new(devargs)
            .map_err(|_| DpdkError::invalid("devargs", format!("{devargs:?} contains NUL")))?;
        let _g = lock(&ATTACH);
        // SAFETY: the EAL is initialised; c is a valid C string; probes are serialised.
        let ret = unsafe { sys::rte_dev_probe(c.as_ptr()) };
        DpdkError::check("rte_dev_probe", ret)?;
        Port::by_name(name)
    }

    /// The port id.
    pub fn id(&self) -> u16 {
        self.id
    }

    fn state(&self) -> Result<MutexGuard<'static, PortState>> {
        PORT_STATE
            .get(usize::from(self.id))
            .map(lock)
            .ok_or_else(|| DpdkError::invalid("port id", format!("{} out of range", self.id)))
    }

    /// The device name.
    pub fn name(&self) -> Result<String> {
        let mut buf = [0 as c_char; sys::VPNLB_ETH_NAME_MAX_LEN as usize];
        // SAFETY: buf has RTE_ETH_NAME_MAX_LEN bytes, as the call requires; the port is valid.
        let ret = unsafe { sys::rte_eth_dev_get_name_by_port(self.id, buf.as_mut_ptr()) };
        DpdkError::check("rte_eth_dev_get_name_by_port", ret)?;
        Ok(c_buf_to_string(&buf))
    }

    fn raw_info(&self) -> Result<sys::rte_eth_dev_info> {
        let mut info = sys::rte_eth_dev_info::default();
        // SAFETY: info is a valid out pointer; the port is valid.
        let ret = unsafe { sys::rte_eth_dev_info_get(self.id, &mut info) };
        DpdkError::check("rte_eth_dev_info_get", ret)?;
        Ok(info)
    }

    /// The NUMA socket of the device, when known.
    pub fn socket_id(&self) -> Option<u32> {
        // SAFETY: the port is valid; returns -1 when unknown.
        u32::try_from(unsafe { sys::rte_eth_dev_socket_id(self.id) }).ok()
    }

    /// What the device is and can do.
    pub fn info(&self) -> Result<PortInfo> {
        let _g = self.state()?;
        self.info_locked()
    }

    /// [`Port::info`] for callers holding the port's lock.
    fn info_locked(&self) -> Result<PortInfo> {
        let i = self.raw_info()?;
        let driver_name = if i.driver_name.is_null() {
            String::new()
        } else {
            // SAFETY: a non-NULL driver_name is the PMD's static NUL-terminated name.
            unsafe { CStr::from_ptr(i.driver_name) }
                .to_string_lossy()
                .into_owned()
        };
        let lim = |l: sys::rte_eth_desc_lim| DescLimits {
            max: l.nb_max,
            min: l.nb_min,
            align: l.nb_align,
        };
        Ok(PortInfo {
            driver_name,
            socket_id: self.socket_id(),
            max_rx_queues: i.max_rx_queues,
            max_tx_queues: i.max_tx_queues,
            nb_rx_queues: i.nb_rx_queues,
            nb_tx_queues: i.nb_tx_queues,
            rx_desc_lim: lim(i.rx_desc_lim),
            tx_desc_lim: lim(i.tx_desc_lim),
            min_mtu: i.min_mtu,
            max_mtu: i.max_mtu,
            max_rx_pktlen: i.max_rx_pktlen,
            rx_offload_capa: i.rx_offload_capa,
            tx_offload_capa: i.tx_offload_capa,
            flow_type_rss_offloads: i.flow_type_rss_offloads,
            hash_key_size: i.hash_key_size,
            reta_size: i.reta_size,
        })
    }

    /// Configures the port (stopped) and sets up its queues.
    ///
    /// RSS: asked for with [`PortConfig::rss`]; when the device cannot do it, or refuses it,
    /// the port is configured without RSS and [`PortSetup::rss`] says why, so the caller can
    /// steer in software: this is not an error. Checksum offloads: those the device has are
    /// enabled when [`PortConfig::checksum_offload`] is set ([`PortSetup::offloads`]).
    /// Scattered RX is never enabled: the MTU must fit the RX pools' mbufs.
    ///
    /// Errors: queue handles of this port exist ([`DpdkError::PortBusy`]), bad counts or
    /// pools, or a DPDK call failed (the port is left unconfigured or half set up then).
    pub fn configure(&self, cfg: &PortConfig) -> Result<PortSetup> {
        let state = self.state()?;
        if state.busy() {
            return Err(DpdkError::PortBusy { port: self.id });
        }
        let info = self.info_locked()?;
        self.check_config(cfg, &info)?;

        let want_offloads = if cfg.checksum_offload {
            info.checksum_offloads()
        } else {
            ChecksumOffloads::default()
        };
        let mut conf = sys::rte_eth_conf::default();
        conf.rxmode.mtu = u32::from(cfg.mtu);
        conf.rxmode.offloads = want_offloads.rx_flags();
        conf.txmode.offloads = want_offloads.tx_flags();

        // The key is only read during rte_eth_dev_configure (drivers copy it).
        let mut key = cfg.rss_key;
        let mut rss = match info.rss_hash_functions(cfg.rss) {
            Ok(None) => RssStatus::NotRequested,
            Err(why) => RssStatus::Unavailable(why),
            Ok(Some(hf)) => {
                conf.rxmode.mq_mode = sys::VPNLB_ETH_MQ_RX_RSS;
                conf.rx_adv_conf.rss_conf.rss_key = key.as_mut_ptr();
                conf.rx_adv_conf.rss_conf.rss_key_len = RSS_KEY_LEN_U8;
                conf.rx_adv_conf.rss_conf.rss_hf = hf;
                RssStatus::Enabled {
                    hash_functions: hf,
                    reta_spread: false,
                }
            }
        };

        // SAFETY: the port is valid and its control path is ours (state lock); conf and the
        // key it points to live across the call.
        let mut ret =
            unsafe { sys::rte_eth_dev_configure(self.id, cfg.rx_queues, cfg.tx_queues, &conf) };
        if ret < 0 && rss.is_enabled() {
            // Fall back to no RSS rather than fail: software steering works everywhere.
            tracing::warn!(
                port = self.id,
                errno = -ret,
                "device refused RSS; configuring without"
            );
            rss = RssStatus::Unavailable(RssUnavailable::Rejected {
                errno: ret.saturating_neg(),
            });
            conf.rxmode.mq_mode = sys::VPNLB_ETH_MQ_RX_NONE;
            conf.rx_adv_conf.rss_conf = sys::rte_eth_rss_conf::default();
            // SAFETY: as above.
            ret =
                unsafe { sys::rte_eth_dev_configure(self.id, cfg.rx_queues, cfg.tx_queues, &conf) };
        }
        DpdkError::check("rte_eth_dev_configure", ret)?;

        let (mut rx_desc, mut tx_desc) = (cfg.rx_desc, cfg.tx_desc);
        // SAFETY: the port is configured; both are valid in/out pointers.
        let ret =
            unsafe { sys::rte_eth_dev_adjust_nb_rx_tx_desc(self.id, &mut rx_desc, &mut tx_desc) };
        DpdkError::check("rte_eth_dev_adjust_nb_rx_tx_desc", ret)?;

        // SOCKET_ID_ANY passes as an unsigned -1, as in DPDK's own examples.
        let socket = self
            .socket_id()
            .unwrap_or(sys::VPNLB_SOCKET_ID_ANY as c_uint);
        for q in 0..cfg.rx_queues {
            let pool = cfg
                .pool_for(q)
                .ok_or_else(|| DpdkError::invalid("rx_pools", "one per RX queue, or one"))?;
            // SAFETY: the port is configured with rx_queues queues, q is below that; a NULL
            // rxconf selects the device defaults; the pool lives for the whole process.
            let ret = unsafe {
                sys::rte_eth_rx_queue_setup(
                    self.id,
                    q,
                    rx_desc,
                    socket,
                    std::ptr::null(),
                    pool.as_ptr(),
                )
            };
            DpdkError::check("rte_eth_rx_queue_setup", ret)?;
        }
        for q in 0..cfg.tx_queues {
            // SAFETY: as for RX; a NULL txconf selects the device defaults.
            let ret = unsafe {
                sys::rte_eth_tx_queue_setup(self.id, q, tx_desc, socket, std::ptr::null())
            };
            DpdkError::check("rte_eth_tx_queue_setup", ret)?;
        }

        if let RssStatus::Enabled { hash_functions, .. } = rss {
            rss = RssStatus::Enabled {
                hash_functions,
                reta_spread: self.spread_reta(cfg.rx_queues),
            };
        }
        drop(state);
        tracing::info!(
            port = self.id,
            rx_queues = cfg.rx_queues,
            tx_queues = cfg.tx_queues,
            rx_desc,
            tx_desc,
            ?rss,
            offloads = ?want_offloads,
            "port configured"
        );
        Ok(PortSetup {
            rx_queues: cfg.rx_queues,
            tx_queues: cfg.tx_queues,
            rx_desc,
            tx_desc,
            rss,
            offloads: want_offloads,
        })
    }

    fn check_config(&self, cfg: &PortConfig, info: &PortInfo) -> Result<()> {
        if cfg.rx_queues == 0 || cfg.rx_queues > info.max_rx_queues {
            return Err(DpdkError::invalid(
                "rx_queues",
                format!(
                    "{} (device allows 1..={})",
                    cfg.rx_queues, info.max_rx_queues
                ),
            ));
        }
        if cfg.tx_queues == 0 || cfg.tx_queues > info.max_tx_queues {
            return Err(DpdkError::invalid(
                "tx_queues",
                format!(
                    "{} (device allows 1..={})",
                    cfg.tx_queues, info.max_tx_queues
                ),
            ));
        }
        if cfg.rx_pools.is_empty()
            || (cfg.rx_pools.len() != 1 && cfg.rx_pools.len() != usize::from(cfg.rx_queues))
        {
            return Err(DpdkError::invalid(
                "rx_pools",
                format!(
                    "{} pools for {} RX queues (give one, or one per queue)",
                    cfg.rx_pools.len(),
                    cfg.rx_queues
                ),
            ));
        }
        let frame = u32::from(cfg.mtu) + FRAME_OVERHEAD;
        for p in &cfg.rx_pools {
            let room = u32::from(p.data_room().saturating_sub(MBUF_HEADROOM));
            if frame > room {
                return Err(DpdkError::invalid(
                    "mtu",
                    format!(
                        "MTU {} needs {frame}-byte mbufs, the RX pool has {room}; \
                         scattered RX is not supported",
                        cfg.mtu
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Points the redirection table round-robin at queues 0..n; false when the device has no
    /// table or refuses.
    fn spread_reta(&self, n: u16) -> bool {
        let Ok(i) = self.raw_info() else {
            return false;
        };
        let group = usize::from(sys::VPNLB_ETH_RETA_GROUP_SIZE);
        let size = usize::from(i.reta_size);
        if size == 0 || n == 0 {
            return false;
        }
        let mut reta = vec![sys::rte_eth_rss_reta_entry64::default(); size.div_ceil(group)];
        // Slot j of entry e (an entry holds `group` slots) is table index e * group + j; the
        // slots, in that order, take queues 0, 1, .., n - 1, 0, 1, ..: index % n.
        let mut queues = (0..n).cycle();
        for entry in &mut reta {
            entry.mask = u64::MAX;
            for slot in &mut entry.reta {
                *slot = queues.next().unwrap_or(0); // n > 0: the cycle never ends
            }
        }
        // SAFETY: reta holds reta_size / 64 (rounded up) entries, as the call reads; the port
        // is configured and its control path is ours.
        let ret =
            unsafe { sys::rte_eth_dev_rss_reta_update(self.id, reta.as_mut_ptr(), i.reta_size) };
        if ret < 0 {
            tracing::warn!(port = self.id, errno = -ret, "RETA update refused");
        }
        ret == 0
    }

    /// Starts the port.
    pub fn start(&self) -> Result<()> {
        let _g = self.state()?;
        // SAFETY: the port is valid; its control path is ours.
        let ret = unsafe { sys::rte_eth_dev_start(self.id) };
        DpdkError::check("rte_eth_dev_start", ret)?;
        self.warn_if_scattered();
        Ok(())
    }

    fn warn_if_scattered(&self) {
        let Ok(i) = self.raw_info() else { return };
        for q in 0..i.nb_rx_queues {
            let mut qi = sys::rte_eth_rxq_info::default();
            // SAFETY: q is a configured RX queue; qi is a valid out pointer. Drivers that do
            // not implement the query return an error, ignored.
            let ret = unsafe { sys::rte_eth_rx_queue_info_get(self.id, q, &mut qi) };
            if ret == 0 && qi.scattered_rx != 0 {
                tracing::warn!(
                    port = self.id,
                    queue = q,
                    "driver enabled scattered RX: the pipeline sees only each frame's first segment"
                );
            }
        }
    }

    /// Stops the port. Errors with [`DpdkError::PortBusy`] while queue handles exist: a
    /// worker could be inside a burst call.
    pub fn stop(&self) -> Result<()> {
        let state = self.state()?;
        if state.busy() {
            return Err(DpdkError::PortBusy { port: self.id });
        }
        // SAFETY: the port is valid; no queue handle exists, so no burst call is running.
        let ret = unsafe { sys::rte_eth_dev_stop(self.id) };
        DpdkError::check("rte_eth_dev_stop", ret).map(drop)
    }

    /// The port's MAC address.
    pub fn mac(&self) -> Result<[u8; 6]> {
        let _g = self.state()?;
        let mut a = sys::rte_ether_addr::default();
        // SAFETY: a is a valid out pointer; the port is valid.
        let ret = unsafe { sys::rte_eth_macaddr_get(self.id, &mut a) };
        DpdkError::check("rte_eth_macaddr_get", ret)?;
        Ok(a.addr_bytes)
    }

    /// Turns promiscuous mode on or off.
    pub fn set_promiscuous(&self, on: bool) -> Result<()> {
        let _g = self.state()?;
        // SAFETY: the port is valid; its control path is ours.
        let ret = unsafe {
            if on {
                sys::rte_eth_promiscuous_enable(self.id)
            } else {
                sys::rte_eth_promiscuous_disable(self.id)
            }
        };
        DpdkError::check("rte_eth_promiscuous_enable/disable", ret).map(drop)
    }

    /// Link state, without waiting.
    pub fn link(&self) -> Result<Link> {
        let _g = self.state()?;
        let mut l = sys::rte_eth_link::default();
        // SAFETY: l is a valid out pointer; the port is valid.
        let ret = unsafe { sys::rte_eth_link_get_nowait(self.id, &mut l) };
        DpdkError::check("rte_eth_link_get_nowait", ret)?;
        Ok(Link {
            up: l.link_status() != 0,
            // RTE_ETH_SPEED_NUM_UNKNOWN is u32::MAX.
            speed_mbps: if l.link_speed == u32::MAX {
                0
            } else {
                l.link_speed
            },
            full_duplex: l.link_duplex() != 0,
            autoneg: l.link_autoneg() != 0,
        })
    }

    /// The basic counters.
    pub fn stats(&self) -> Result<PortStats> {
        let _g = self.state()?;
        let mut s = sys::rte_eth_stats::default();
        // SAFETY: s is a valid out pointer; the port is valid; reading counters is safe
        // alongside bursts.
        let ret = unsafe { sys::rte_eth_stats_get(self.id, &mut s) };
        DpdkError::check("rte_eth_stats_get", ret)?;
        Ok(PortStats {
            ipackets: s.ipackets,
            opackets: s.opackets,
            ibytes: s.ibytes,
            obytes: s.obytes,
            imissed: s.imissed,
            ierrors: s.ierrors,
            oerrors: s.oerrors,
            rx_nombuf: s.rx_nombuf,
        })
    }

    /// Resets the basic counters.
    pub fn reset_stats(&self) -> Result<()> {
        let _g = self.state()?;
        // SAFETY: the port is valid.
        let ret = unsafe { sys::rte_eth_stats_reset(self.id) };
        DpdkError::check("rte_eth_stats_reset", ret).map(drop)
    }

    /// The driver's extended counters, by name.
    pub fn xstats(&self) -> Result<Vec<(String, u64)>> {
        let _g = self.state()?;
        // SAFETY: a NULL array with size 0 asks for the count.
        let n = unsafe { sys::rte_eth_xstats_get_names(self.id, std::ptr::null_mut(), 0) };
        let n = DpdkError::check("rte_eth_xstats_get_names", n)?;
        let len = n as usize; // n >= 0 after check
        let mut names = vec![sys::rte_eth_xstat_name::default(); len];
        let mut values = vec![sys::rte_eth_xstat::default(); len];
        // SAFETY: both arrays hold n entries, as the calls are told.
        let (got_names, got_values) = unsafe {
            (
                sys::rte_eth_xstats_get_names(self.id, names.as_mut_ptr(), n as c_uint),
                sys::rte_eth_xstats_get(self.id, values.as_mut_ptr(), n as c_uint),
            )
        };
        DpdkError::check("rte_eth_xstats_get_names", got_names)?;
        let got_values = DpdkError::check("rte_eth_xstats_get", got_values)?;
        if got_names != n || got_values != n {
            // The set changed between the calls (hot-plug); a retry will see the new one.
            return Err(DpdkError::call("rte_eth_xstats_get", libc::EAGAIN));
        }
        Ok(values
            .iter()
            .filter_map(|v| {
                let name = names.get(usize::try_from(v.id).ok()?)?;
                Some((c_buf_to_string(&name.name), v.value))
            })
            .collect())
    }

    /// The handle for RX queue `queue`; each queue is handed out once at a time.
    pub fn rx_queue(&self, queue: u16) -> Result<RxQueue> {
        let mut state = self.state()?;
        let configured = self.raw_info()?.nb_rx_queues;
        if queue >= configured {
            return Err(DpdkError::invalid(
                "RX queue",
                format!("{queue} (port {} has {configured} configured)", self.id),
            ));
        }
        if !PortState::claim(&mut state.rx, queue) {
            return Err(DpdkError::QueueInUse {
                port: self.id,
                queue,
            });
        }
        Ok(RxQueue {
            port: self.id,
            queue,
        })
    }

    /// The handle for TX queue `queue`; each queue is handed out once at a time.
    pub fn tx_queue(&self, queue: u16) -> Result<TxQueue> {
        let mut state = self.state()?;
        let configured = self.raw_info()?.nb_tx_queues;
        if queue >= configured {
            return Err(DpdkError::invalid(
                "TX queue",
                format!("{queue} (port {} has {configured} configured)", self.id),
            ));
        }
        if !PortState::claim(&mut state.tx, queue) {
            return Err(DpdkError::QueueInUse {
                port: self.id,
                queue,
            });
        }
        Ok(TxQueue {
            port: self.id,
            queue,
        })
    }
}

fn c_buf_to_string(buf: &[c_char]) -> String {
    let bytes: Vec<u8> = buf
        .iter()
        .take_while(|&&c| c != 0)
        .map(|&c| c as u8)
        .collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// The one handle to a configured RX queue: owned by one worker, `Send`, not `Clone`.
#[derive(Debug)]
pub struct RxQueue {
    port: u16,
    queue: u16,
}

impl RxQueue {
    /// The port.
    pub fn port(&self) -> Port {
        Port { id: self.port }
    }

    /// The queue id.
    pub fn queue(&self) -> u16 {
        self.queue
    }

    /// Receives up to `burst.spare()` frames, appended to `burst`; returns how many. A port
    /// that is not started returns 0.
    #[inline]
    pub fn rx_burst(&mut self, burst: &mut Burst) -> usize {
        let spare = burst_count(burst.spare());
        if spare == 0 {
            return 0;
        }
        // SAFETY: this handle is the only one for the queue (claimed in Port::rx_queue), the
        // queue is configured and cannot be reconfigured while the handle lives; the spare
        // slots can take `spare` pointers.
        let n = unsafe { sys::vpnlb_eth_rx_burst(self.port, self.queue, burst.raw_spare(), spare) };
        let n = usize::from(n).min(usize::from(spare));
        // SAFETY: the PMD wrote n owned mbufs into the spare slots.
        unsafe { burst.assume_appended(n) };
        n
    }
}

impl Drop for RxQueue {
    fn drop(&mut self) {
        if let Some(m) = PORT_STATE.get(usize::from(self.port)) {
            PortState::release(&mut lock(m).rx, self.queue);
        }
    }
}

/// The one handle to a configured TX queue: owned by one worker, `Send`, not `Clone`.
#[derive(Debug)]
pub struct TxQueue {
    port: u16,
    queue: u16,
}

impl TxQueue {
    /// The port.
    pub fn port(&self) -> Port {
        Port { id: self.port }
    }

    /// The queue id.
    pub fn queue(&self) -> u16 {
        self.queue
    }

    /// Hands the burst's mbufs to the NIC, front first; returns how many it took. Those not
    /// taken (a full TX ring) stay in `burst`, in order and still owned: retry or drop them.
    #[inline]
    pub fn tx_burst(&mut self, burst: &mut Burst) -> usize {
        let len = burst_count(burst.len());
        if len == 0 {
            return 0;
        }
        // SAFETY: as in rx_burst; the first len slots hold owned mbufs, of which the PMD takes
        // ownership of the first n it returns.
        let n = unsafe { sys::vpnlb_eth_tx_burst(self.port, self.queue, burst.raw_base(), len) };
        let n = usize::from(n).min(usize::from(len));
        // SAFETY: the NIC owns the first n now.
        unsafe { burst.forget_front(n) };
        n
    }
}

impl Drop for TxQueue {
    fn drop(&mut self) {
        if let Some(m) = PORT_STATE.get(usize::from(self.port)) {
            PortState::release(&mut lock(m).tx, self.queue);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(rss: u64, key: u8) -> PortInfo {
        PortInfo {
            driver_name: "x".into(),
            socket_id: None,
            max_rx_queues: 4,
            max_tx_queues: 4,
            nb_rx_queues: 0,
            nb_tx_queues: 0,
            rx_desc_lim: DescLimits::default(),
            tx_desc_lim: DescLimits::default(),
            min_mtu: 68,
            max_mtu: 9000,
            max_rx_pktlen: 9018,
            rx_offload_capa: sys::VPNLB_ETH_RX_OFFLOAD_IPV4_CKSUM,
            tx_offload_capa: sys::VPNLB_ETH_TX_OFFLOAD_UDP_CKSUM
                | sys::VPNLB_ETH_TX_OFFLOAD_TCP_CKSUM,
            flow_type_rss_offloads: rss,
            hash_key_size: key,
            reta_size: 128,
        }
    }

    #[test]
    fn rss_needs_the_modifier() {
        let i = info(sys::VPNLB_ETH_RSS_IP | sys::VPNLB_ETH_RSS_UDP, 40);
        assert_eq!(i.rss_hash_functions(RssMode::None), Ok(None));
        assert_eq!(
            i.rss_hash_functions(RssMode::L3Src),
            Err(RssUnavailable::NotSupported {
                supported: sys::VPNLB_ETH_RSS_IP | sys::VPNLB_ETH_RSS_UDP
            })
        );
        assert!(!i.rss_support().l3_src_only);
        assert!(i.rss_support().ipv4 && i.rss_support().ipv6);
    }

    #[test]
    fn rss_hashes_supported_ip_types_with_the_modifier() {
        let all = sys::VPNLB_ETH_RSS_IP
            | sys::VPNLB_ETH_RSS_TCP
            | sys::VPNLB_ETH_RSS_UDP
            | sys::VPNLB_ETH_RSS_L3_SRC_ONLY
            | sys::VPNLB_ETH_RSS_L3_DST_ONLY
            | (1 << 20); // an unrelated (tunnel) type the request must leave out
        let i = info(all, 40);
        assert_eq!(
            i.rss_hash_functions(RssMode::L3Src),
            Ok(Some(
                sys::VPNLB_ETH_RSS_IP
                    | sys::VPNLB_ETH_RSS_TCP
                    | sys::VPNLB_ETH_RSS_UDP
                    | sys::VPNLB_ETH_RSS_L3_SRC_ONLY
            ))
        );
        assert_eq!(
            i.rss_hash_functions(RssMode::L3Dst),
            Ok(Some(
                sys::VPNLB_ETH_RSS_IP
                    | sys::VPNLB_ETH_RSS_TCP
                    | sys::VPNLB_ETH_RSS_UDP
                    | sys::VPNLB_ETH_RSS_L3_DST_ONLY
            ))
        );
        // Modifier alone, no IP type: nothing to hash.
        let only_mod = info(sys::VPNLB_ETH_RSS_L3_SRC_ONLY, 40);
        assert!(only_mod.rss_hash_functions(RssMode::L3Src).is_err());
        // A 52-byte key device (ice) cannot take the 40-byte key.
        assert_eq!(
            info(all, 52).rss_hash_functions(RssMode::L3Src),
            Err(RssUnavailable::KeySize { device: 52 })
        );
        assert!(info(all, 0).rss_hash_functions(RssMode::L3Src).is_ok());
    }

    #[test]
    fn checksum_capabilities_decode() {
        let c = info(0, 0).checksum_offloads();
        assert_eq!(
            c,
            ChecksumOffloads {
                rx_ipv4: true,
                tx_udp: true,
                tx_tcp: true,
                ..Default::default()
            }
        );
        assert_eq!(c.rx_flags(), sys::VPNLB_ETH_RX_OFFLOAD_IPV4_CKSUM);
        assert_eq!(
            c.tx_flags(),
            sys::VPNLB_ETH_TX_OFFLOAD_UDP_CKSUM | sys::VPNLB_ETH_TX_OFFLOAD_TCP_CKSUM
        );
        assert!(ChecksumOffloads::default().is_empty());
    }

    #[test]
    fn queue_claims_are_exclusive_and_bounded() {
        let mut s = PortState::EMPTY;
        assert!(!s.busy());
        assert!(PortState::claim(&mut s.rx, 0));
        assert!(!PortState::claim(&mut s.rx, 0));
        assert!(PortState::claim(&mut s.rx, 1023));
        assert!(
            !PortState::claim(&mut s.rx, 1024),
            "beyond RTE_MAX_QUEUES_PER_PORT"
        );
        assert!(s.busy());
        PortState::release(&mut s.rx, 0);
        PortState::release(&mut s.rx, 1023);
        PortState::release(&mut s.rx, u16::MAX);
        assert!(!s.busy());
        assert!(PortState::claim(&mut s.tx, 64));
        assert_eq!(s.tx[1], 1);
    }

    #[test]
    fn ports_need_the_eal() {
        assert_eq!(Port::count(), 0);
        assert!(Port::all().is_empty());
        assert_eq!(Port::from_id(0), Err(DpdkError::EalNotInitialised));
        assert_eq!(
            Port::by_name("net_ring0"),
            Err(DpdkError::EalNotInitialised)
        );
    }

    #[test]
    fn c_names_stop_at_nul() {
        let buf = [b'a' as c_char, b'b' as c_char, 0, b'c' as c_char];
        assert_eq!(c_buf_to_string(&buf), "ab");
        let full = [b'x' as c_char; 3];
        assert_eq!(c_buf_to_string(&full), "xxx");
    }
}
