//! The configuration file: TOML in, a validated [`ApplianceSpec`] out.
//!
//! Parsing happens in two steps: serde reads the file into the raw `File` structs (so unknown
//! keys and wrong types are caught with their line), then [`load_str`] validates every value and
//! cross-reference, naming the file, the key path and the reason for the first problem found.
//! Nothing is applied until the whole file is valid.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;

use dataplane::model::{
    AffinitySpec, ApplianceSpec, GatewaySpec, HaSpec, InterfaceSpec, IpCidr, Listeners,
    NeighborSpec, PortSpec, Role, RouteSpec, ServiceMode, ServiceSpec,
};
use dataplane::protocols::{Protocol, Transport, PROTOCOLS};
use dataplane::schedule::maglev::{is_prime, MAGLEV_DEFAULT_SIZE};
use dataplane::schedule::{GatewayState, SchedulerKind};
use dataplane::wire::ethernet::{EthernetAddress, Vlan};
use serde::Deserialize;

/// A configuration problem: which file, which key, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: String,
    /// Dotted key path, e.g. `service.vpn.gateway.gw1.weight`; empty for syntax errors.
    pub key: String,
    pub reason: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            write!(f, "{}: {}", self.file, self.reason)
        } else {
            write!(f, "{}: {}: {}", self.file, self.key, self.reason)
        }
    }
}

impl std::error::Error for ConfigError {}

/// Default idle timeout of a confirmed client: one hour, as LoadMaster and CSS persistence.
pub const DEFAULT_PERSISTENCE_TIMEOUT_S: u32 = 3600;
/// Default idle timeout of a client the gateway has not answered yet.
pub const DEFAULT_UNCONFIRMED_TIMEOUT_S: u32 = 30;

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    dataplane: Option<DataplaneFile>,
    #[serde(default)]
    control: Option<ControlFile>,
    #[serde(default)]
    exception: Option<ExceptionFile>,
    #[serde(default)]
    ha: Option<HaFile>,
    #[serde(default)]
    redirect: Option<RedirectFile>,
    #[serde(default)]
    metrics: Option<MetricsFile>,
    #[serde(default)]
    affinity: Option<AffinityFile>,
    #[serde(default)]
    maglev_table_size: Option<usize>,
    #[serde(default)]
    port: Vec<PortFile>,
    #[serde(default)]
    route: Vec<RouteFile>,
    #[serde(default)]
    neighbor: Vec<NeighborFile>,
    #[serde(default)]
    service: Vec<ServiceFile>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct DataplaneFile {
    workers: Option<Vec<usize>>,
    control_core: Option<usize>,
    memory_mb: Option<u32>,
    hugepages: Option<bool>,
    mbufs: Option<u32>,
    rx_desc: Option<u16>,
    tx_desc: Option<u16>,
    tx_flush_us: Option<u32>,
    mtu: Option<u16>,
    #[serde(default)]
    eal_args: Vec<String>,
    watchdog: Option<Duration>,
}

/// How the daemon runs the dataplane (`[dataplane]`); not used by `replay`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DataplaneSettings {
    /// One poll-mode worker per listed core.
    pub workers: Vec<usize>,
    /// The control thread's core (the EAL main lcore); best kept off the workers' cores.
    pub control_core: usize,
    /// EAL memory in MB.
    pub memory_mb: u32,
    /// Use hugepages (`--in-memory`); false runs with `--no-huge --no-shconf`.
    pub hugepages: bool,
    /// Mbufs in the pool; `None` sizes it from ports, queues and descriptors.
    pub mbufs: Option<u32>,
    pub rx_desc: u16,
    pub tx_desc: u16,
    /// A worker flushes partly filled TX buffers after this long.
    pub tx_flush_us: u32,
    pub mtu: u16,
    /// Extra EAL arguments, appended last.
    pub eal_args: Vec<String>,
    /// A worker (or the health checker) that makes no progress for longer than this is
    /// stalled: the appliance steps down from VRRP master (see `daemon::watchdog`).
    pub watchdog: std::time::Duration,
}

/// The watchdog's bound unless `[dataplane] watchdog` says otherwise.
pub const DEFAULT_WATCHDOG_MS: u64 = 500;
/// What `[dataplane] watchdog` may be: longer than the health checker's longest idle wait
/// (50 ms) with room to spare, and short enough to matter.
pub const WATCHDOG_RANGE_MS: std::ops::RangeInclusive<u64> = 100..=60_000;

impl Default for DataplaneSettings {
    fn default() -> Self {
        DataplaneSettings {
            workers: vec![1],
            control_core: 0,
            memory_mb: 512,
            hugepages: false,
            mbufs: None,
            rx_desc: 1024,
            tx_desc: 1024,
            tx_flush_us: 100,
            mtu: 1500,
            eal_args: Vec::new(),
            watchdog: std::time::Duration::from_millis(DEFAULT_WATCHDOG_MS),
        }
    }
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct MetricsFile {
    listen: Option<String>,
    namespace: Option<String>,
}

/// Which network namespace the metrics listener is bound in.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum MetricsNamespace {
    /// The namespace vpnlbd runs in: a management address.
    #[default]
    Management,
    /// The exception path's (`[exception] netns`): the appliance's own addresses.
    Exception,
}

/// `[metrics]`: the Prometheus endpoint.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MetricsSettings {
    /// Where `/metrics` is served; `None`: not served (`vpnlbctl stats prometheus` still is).
    pub listen: Option<std::net::SocketAddr>,
    pub namespace: MetricsNamespace,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct ControlFile {
    socket: Option<String>,
    socket_group: Option<String>,
    readonly_socket: Option<String>,
    readonly_socket_group: Option<String>,
    client_idle_timeout: Option<Duration>,
    state_file: Option<String>,
    fault_injection: Option<bool>,
}

/// A group the system knows, by name and id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Group {
    pub name: String,
    pub gid: u32,
}

/// The control plane's settings (`[control]`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ControlSettings {
    /// The control socket `vpnlbctl` talks to: every request.
    pub socket: std::path::PathBuf,
    /// The group `socket` is given (mode 0660); `None` leaves the daemon's.
    pub socket_group: Option<Group>,
    /// A second socket that answers only reads (`show`, `stats`, `ping`).
    pub readonly_socket: Option<std::path::PathBuf>,
    /// The group `readonly_socket` is given (mode 0660); `None` leaves the daemon's.
    pub readonly_socket_group: Option<Group>,
    /// A client sending no complete request line (and taking no reply) this long is
    /// disconnected.
    pub client_idle_timeout: std::time::Duration,
    /// Where the operator's runtime values (drain, weight) are kept across restarts; `None`:
    /// they last until the daemon stops (they always survive a reload).
    pub state_file: Option<std::path::PathBuf>,
    /// Tests only: the `debug ...` commands (stall or panic a worker, stall the health
    /// checker) are answered instead of refused.
    pub fault_injection: bool,
}

/// Where the control socket is unless `[control] socket` says otherwise.
pub const DEFAULT_CONTROL_SOCKET: &str = "/run/vpnlb/vpnlbd.sock";

/// How long a control client may idle unless `[control] client_idle_timeout` says otherwise.
#[allow(clippy::cast_possible_truncation)] // 30 000 ms (a const context: no try_from)
pub const DEFAULT_CLIENT_IDLE_TIMEOUT_MS: u64 =
    crate::ctlsock::DEFAULT_IDLE_TIMEOUT.as_millis() as u64;

impl Default for ControlSettings {
    fn default() -> Self {
        ControlSettings {
            socket: DEFAULT_CONTROL_SOCKET.into(),
            socket_group: None,
            readonly_socket: None,
            readonly_socket_group: None,
            client_idle_timeout: std::time::Duration::from_millis(DEFAULT_CLIENT_IDLE_TIMEOUT_MS),
            state_file: None,
            fault_injection: false,
        }
    }
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct ExceptionFile {
    enabled: Option<bool>,
    netns: Option<String>,
    tap_prefix: Option<String>,
    queue: Option<usize>,
    rate_pps: Option<u32>,
    urgent_rate_pps: Option<u32>,
    worker_rate_pps: Option<u32>,
}

/// The exception path (`[exception]`): traffic for the appliance's own addresses that the
/// dataplane does not answer goes to the kernel through one TAP per interface, which carries
/// the interface's MAC and addresses; what the kernel sends there leaves by the interface.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExceptionSettings {
    /// Off unless the file has an `[exception]` section (creating interfaces is opt-in).
    pub enabled: bool,
    /// The network namespace (`ip netns` name) the TAPs and the health checks' sockets live
    /// in; `None`: the daemon's own.
    pub netns: Option<String>,
    /// TAP names are this prefix and the interface's name (at most 15 bytes in all).
    pub tap_prefix: String,
    /// Frames queued each way between the dataplane and the kernel.
    pub queue: usize,
    /// Frames per second to the kernel that are not urgent (urgent: neighbor discovery,
    /// VRRP, answers from gateways, the HA peer); the rest is dropped and counted as `policed`.
    pub rate_pps: u32,
    /// Per worker: frames per second each urgent class (ARP, ND, VRRP, gateways' answers, the
    /// HA peer) may bring to the control thread, each class its own budget.
    pub urgent_rate_pps: u32,
    /// Per worker: frames per second of everything else for the control thread.
    pub worker_rate_pps: u32,
}

impl Default for ExceptionSettings {
    fn default() -> Self {
        ExceptionSettings {
            enabled: false,
            netns: None,
            tap_prefix: "vlb-".to_string(),
            queue: 1024,
            rate_pps: 20_000,
            urgent_rate_pps: 2_000,
            worker_rate_pps: 20_000,
        }
    }
}

impl ExceptionSettings {
    /// The TAP of the interface called `interface`.
    pub fn tap_name(&self, interface: &str) -> String {
        format!("{}{interface}", self.tap_prefix)
    }
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct HaFile {
    vrid: u8,
    priority: u8,
    advert_interval: Option<Duration>,
    preempt: Option<bool>,
    preempt_delay: Option<Duration>,
    #[serde(default)]
    floating: Vec<String>,
    peer: Option<String>,
    sync_key: Option<String>,
    sync_port: Option<u16>,
    heartbeat: Option<Duration>,
    dead_after: Option<u32>,
    sync_rate_pps: Option<u32>,
    sync_bulk_rate: Option<u32>,
    sync_hold_max: Option<Duration>,
}

/// Default `[ha] sync_rate_pps`: the peer's own receive budget, in datagrams a second.
pub const DEFAULT_SYNC_RATE_PPS: u32 = 25_000;
/// Default `[ha] sync_hold_max`, in seconds.
pub const DEFAULT_SYNC_HOLD_MAX_S: u32 = 60;

/// An HA pair (`[ha]`): VRRPv3 between two appliances (or with keepalived), and affinity sync
/// with a peer vpnlbd.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HaSettings {
    pub vrid: u8,
    /// 1–255; 255 is the address owner (master at once).
    pub priority: u8,
    /// VRRP advertisement interval, centiseconds on the wire (10 ms steps).
    pub advert_interval: std::time::Duration,
    pub preempt: bool,
    pub preempt_delay: std::time::Duration,
    /// The other vpnlbd of the pair, on the backend segment: affinity sync and the fast
    /// heartbeat go there. `None`: a keepalived (or other VRRP) peer, VRRP timers only.
    pub peer: Option<IpAddr>,
    /// HMAC key of the sync messages (required with a peer).
    pub sync_key: Vec<u8>,
    pub sync_port: u16,
    pub heartbeat: std::time::Duration,
    /// Heartbeats missed before the peer counts as dead.
    pub dead_after: u32,
    /// The sync peer's own receive budget, in datagrams a second: its sync datagrams bypass
    /// the exception policer (`[exception] rate_pps`, shared with whatever else aims at the
    /// appliance) and are policed by this instead.
    pub sync_rate_pps: u32,
    /// Bulk pacing: bulk chunks sent per millisecond.
    pub sync_bulk_rate: u32,
    /// The longest a recovering appliance holds its preemption waiting for the master's
    /// table.
    pub sync_hold_max: std::time::Duration,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct RedirectFile {
    report_port: Option<u16>,
    report_key: Option<String>,
    report_max_age: Option<Duration>,
    establish_time: Option<Duration>,
    redirect_half_life: Option<Duration>,
}

/// Redirect mode's gateway loads (`[redirect]`): where the gateways report their tunnel
/// counts, and how the appliance counts its own redirects.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RedirectSettings {
    /// UDP port on the appliance's own addresses the load reports arrive at; `None`: no
    /// reports, loads are the decaying redirect counts alone.
    pub report_port: Option<u16>,
    /// HMAC-SHA256 key of the reports.
    pub report_key: Vec<u8>,
    /// A gateway's last report counts this long after it arrived.
    pub report_max_age: std::time::Duration,
    /// A redirect no report has shown yet counts on top of the report this long at most.
    pub establish_time: std::time::Duration,
    /// Without a fresh report, each redirect counts for its gateway with this half-life.
    pub redirect_half_life: std::time::Duration,
}

impl Default for RedirectSettings {
    fn default() -> Self {
        RedirectSettings {
            report_port: None,
            report_key: Vec::new(),
            report_max_age: std::time::Duration::from_secs(5),
            establish_time: std::time::Duration::from_secs(2),
            redirect_half_life: std::time::Duration::from_secs(600),
        }
    }
}

/// What a health check sends (`type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CheckKind {
    /// TCP connect.
    Tcp,
    /// IKE_SA_INIT that the gateway rejects without keeping state.
    Ike,
    /// TLS ClientHello, answered by a ServerHello or an alert.
    Tls,
    /// DTLS ClientHello, answered by a HelloVerifyRequest, a ServerHello or an alert.
    Dtls,
    /// ICMP echo.
    Icmp,
}

impl CheckKind {
    pub fn as_str(self) -> &'static str {
        match self {
            CheckKind::Tcp => "tcp",
            CheckKind::Ike => "ike",
            CheckKind::Tls => "tls",
            CheckKind::Dtls => "dtls",
            CheckKind::Icmp => "icmp",
        }
    }
}

/// One `[[service.health_check]]`, applied to every gateway of the service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HealthCheck {
    pub kind: CheckKind,
    /// Destination port (0 for ICMP).
    pub port: u16,
    /// Which of the gateway's addresses it probes.
    pub ipv6: bool,
    pub interval: std::time::Duration,
    pub timeout: std::time::Duration,
    /// Consecutive successes that bring a down gateway up.
    pub rise: u32,
    /// Consecutive failures that take an up gateway down.
    pub fall: u32,
    /// Probes leave from this address (operators allowlist it on the gateways); `None`: the
    /// kernel picks the address of the interface facing the gateway.
    pub source: Option<IpAddr>,
    /// TLS only: the server name in the ClientHello.
    pub sni: Option<String>,
}

impl HealthCheck {
    /// How the check is named in `show gateways`, logs and metrics, e.g. `ike:500`, `icmp6`.
    pub fn label(&self) -> String {
        let family = if self.ipv6 { "6" } else { "" };
        match self.kind {
            CheckKind::Icmp => format!("icmp{family}"),
            k => format!("{}{family}:{}", k.as_str(), self.port),
        }
    }
}

/// What happens to a down gateway's clients (`on_gateway_down`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum OnGatewayDown {
    /// They move to another gateway on their next packet (the tunnel re-establishes there).
    #[default]
    Reschedule,
    /// They stay until they time out (the gateway is treated as draining).
    Keep,
}

/// A service's health checks and its policy for down gateways.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceHealth {
    pub service: String,
    pub on_gateway_down: OnGatewayDown,
    pub checks: Vec<HealthCheck>,
}

/// A whole configuration file: the appliance and how to run it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    pub spec: ApplianceSpec,
    pub dataplane: DataplaneSettings,
    pub control: ControlSettings,
    pub exception: ExceptionSettings,
    /// One per service, in the services' order.
    pub health: Vec<ServiceHealth>,
    pub ha: Option<HaSettings>,
    pub redirect: RedirectSettings,
    pub metrics: MetricsSettings,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct AffinityFile {
    capacity: Option<usize>,
    max_unconfirmed: Option<usize>,
    prefix_v4: Option<u64>,
    prefix_v6: Option<u64>,
    prefix_quota_v4: Option<u64>,
    prefix_quota_v6: Option<u64>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct PortFile {
    name: String,
    #[serde(default)]
    device: String,
    mac: String,
    /// IP MTU of the port's interfaces; `[dataplane] mtu` when left out.
    mtu: Option<u16>,
    /// The untagged interface's role; a port that only carries VLANs leaves it out.
    role: Option<Role>,
    #[serde(default)]
    addresses: Vec<String>,
    #[serde(default)]
    vlan: Vec<VlanFile>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct VlanFile {
    name: String,
    /// 802.1Q VLAN id (single tag).
    vid: Option<u16>,
    /// 802.1ad outer (service) tag, with `inner`.
    outer: Option<u16>,
    inner: Option<u16>,
    role: Role,
    #[serde(default)]
    addresses: Vec<String>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct RouteFile {
    prefix: String,
    via: String,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct NeighborFile {
    address: String,
    mac: String,
}

#[derive(Deserialize, Debug)]
#[serde(untagged)]
enum Duration {
    Seconds(u64),
    Text(String),
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct ServiceFile {
    name: String,
    vip: Vec<String>,
    protocols: Vec<String>,
    #[serde(default)]
    ports: PortsFile,
    scheduler: Option<String>,
    mode: Option<String>,
    route_to_gateways: Option<bool>,
    persistence_timeout: Option<Duration>,
    unconfirmed_timeout: Option<Duration>,
    on_gateway_down: Option<String>,
    #[serde(default)]
    gateway: Vec<GatewayFile>,
    #[serde(default)]
    health_check: Vec<HealthCheckFile>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct HealthCheckFile {
    #[serde(rename = "type")]
    kind: String,
    port: Option<u16>,
    family: Option<String>,
    interval: Option<Duration>,
    timeout: Option<Duration>,
    rise: Option<u32>,
    fall: Option<u32>,
    #[serde(default)]
    source: Vec<String>,
    sni: Option<String>,
}

/// A service's `ports` table: port key (see `dataplane::protocols::PROTOCOLS`) to port.
type PortsFile = BTreeMap<String, u16>;

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct GatewayFile {
    name: String,
    address: Vec<String>,
    #[serde(default = "default_weight")]
    weight: u32,
    #[serde(default)]
    state: Option<String>,
}

fn default_weight() -> u32 {
    1
}

/// Largest gateway weight: keeps Maglev and least-connections arithmetic comfortably in range.
pub const MAX_WEIGHT: u32 = 10_000;

/// Loads and validates a configuration file: the appliance only (what `replay` needs).
pub fn load(path: &Path) -> Result<ApplianceSpec, ConfigError> {
    load_config(path).map(|c| c.spec)
}

/// Loads and validates a whole configuration file, daemon settings included.
pub fn load_config(path: &Path) -> Result<Config, ConfigError> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
        file: file.clone(),
        key: String::new(),
        reason: format!("cannot read: {e}"),
    })?;
    load_config_str(&text, &file)
}

/// Validates configuration text; `file` names it in errors.
pub fn load_str(text: &str, file: &str) -> Result<ApplianceSpec, ConfigError> {
    load_config_str(text, file).map(|c| c.spec)
}

/// Validates configuration text, daemon settings included.
pub fn load_config_str(text: &str, file: &str) -> Result<Config, ConfigError> {
    let mut raw: File = toml::from_str(text).map_err(|e| ConfigError {
        file: file.to_string(),
        key: String::new(),
        reason: e.to_string().trim_end().to_string(),
    })?;
    let v = Validator { file };
    let dataplane = v.dataplane(raw.dataplane.take())?;
    let control = v.control(raw.control.take())?;
    let exception = v.exception(raw.exception.take())?;
    let ha_raw = raw.ha.take();
    let redirect_raw = raw.redirect.take();
    let metrics = v.metrics(raw.metrics.take(), &exception)?;
    let health_raw: Vec<_> = raw
        .service
        .iter_mut()
        .map(|s| {
            (
                s.on_gateway_down.take(),
                std::mem::take(&mut s.health_check),
            )
        })
        .collect();
    let mut spec = v.spec(raw, dataplane.mtu)?;
    let ha = match ha_raw {
        Some(h) => {
            let (settings, spec_ha) = v.ha(h, &spec)?;
            if settings.peer.is_some() && !exception.enabled {
                // The sync socket lives on the appliance's own addresses, which only the
                // exception path gives the kernel.
                return v.err(
                    "ha.peer",
                    "affinity sync with a peer needs an [exception] section (the sync runs on the appliance's own addresses)",
                );
            }
            spec.ha = Some(spec_ha);
            Some(settings)
        }
        None => None,
    };
    if exception.enabled {
        for itf in &spec.interfaces {
            let tap = exception.tap_name(&itf.name);
            if tap.len() > 15 {
                return v.err(
                    "exception.tap_prefix",
                    format!(
                        "TAP name `{tap}` (for interface `{}`) is longer than 15 bytes",
                        itf.name
                    ),
                );
            }
        }
    }
    let redirect = v.redirect(redirect_raw)?;
    if redirect.report_port.is_some() && !exception.enabled {
        return v.err(
            "redirect.report_port",
            "load reports need an [exception] section (they arrive at the appliance's own addresses)",
        );
    }
    let health = spec
        .services
        .iter()
        .zip(health_raw)
        .map(|(svc, (policy, checks))| v.health(svc, policy.as_deref(), &checks))
        .collect::<Result<_, _>>()?;
    Ok(Config {
        spec,
        dataplane,
        control,
        exception,
        health,
        ha,
        redirect,
        metrics,
    })
}

struct Validator<'a> {
    file: &'a str,
}

impl Validator<'_> {
    fn err<T>(&self, key: impl Into<String>, reason: impl Into<String>) -> Result<T, ConfigError> {
        Err(ConfigError {
            file: self.file.to_string(),
            key: key.into(),
            reason: reason.into(),
        })
    }

    fn name(&self, key: &str, name: &str, seen: &mut HashSet<String>) -> Result<(), ConfigError> {
        let ok = !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.');
        if !ok {
            return self.err(
                format!("{key}.name"),
                format!("`{name}` must be non-empty letters, digits, '-', '_' or '.'"),
            );
        }
        if !seen.insert(name.to_string()) {
            return self.err(format!("{key}.name"), format!("`{name}` is used twice"));
        }
        Ok(())
    }

    fn mac(&self, key: &str, s: &str) -> Result<EthernetAddress, ConfigError> {
        let mac: EthernetAddress = match s.parse() {
            Ok(m) => m,
            Err(_) => {
                return self.err(
                    key,
                    format!("`{s}` is not a MAC address (aa:bb:cc:dd:ee:ff)"),
                )
            }
        };
        if !mac.is_unicast() {
            return self.err(key, format!("`{s}` is not a unicast MAC address"));
        }
        Ok(mac)
    }

    /// An IP MTU: at least IPv4's 576 (every host must accept datagrams that long), at most
    /// 9000 (jumbo frames).
    fn mtu(&self, key: &str, mtu: u16) -> Result<u16, ConfigError> {
        if (576..=9000).contains(&mtu) {
            Ok(mtu)
        } else {
            self.err(key, format!("{mtu} is outside 576-9000"))
        }
    }

    fn ip(&self, key: &str, s: &str) -> Result<IpAddr, ConfigError> {
        match s.parse() {
            Ok(a) => Ok(a),
            Err(_) => self.err(key, format!("`{s}` is not an IPv4 or IPv6 address")),
        }
    }

    fn cidrs(&self, key: &str, list: &[String]) -> Result<Vec<IpCidr>, ConfigError> {
        list.iter()
            .map(|s| s.parse::<IpCidr>().or_else(|e| self.err(key, e)))
            .collect()
    }

    fn seconds(&self, key: &str, d: Option<&Duration>, default: u32) -> Result<u32, ConfigError> {
        let secs = match d {
            None => return Ok(default),
            Some(Duration::Seconds(s)) => *s,
            Some(Duration::Text(t)) => match parse_duration(t) {
                Some(s) => s,
                None => {
                    return self.err(
                        key,
                        format!("`{t}` is not a duration (seconds, or e.g. \"90s\", \"30m\", \"1h\", \"1h30m\")"),
                    )
                }
            },
        };
        match u32::try_from(secs) {
            Ok(s) if s > 0 => Ok(s),
            _ => self.err(
                key,
                format!("{secs} s is out of range (1 s to {} s)", u32::MAX),
            ),
        }
    }

    /// The appliance; `mtu` is `[dataplane] mtu`, the ports' default.
    fn spec(&self, raw: File, mtu: u16) -> Result<ApplianceSpec, ConfigError> {
        let (ports, interfaces) = self.ports(&raw.port, mtu)?;
        let own = self.own_addresses(&interfaces)?;
        let routes = self.routes(&raw.route, &interfaces)?;
        let neighbors = self.neighbors(&raw.neighbor, &interfaces)?;
        let services = self.services(&raw.service, &own)?;
        let affinity = self.affinity(raw.affinity.as_ref())?;
        let maglev_size = raw.maglev_table_size.unwrap_or(MAGLEV_DEFAULT_SIZE);
        if maglev_size < MAGLEV_DEFAULT_SIZE || !is_prime(maglev_size) {
            return self.err(
                "maglev_table_size",
                format!("{maglev_size} must be a prime of at least {MAGLEV_DEFAULT_SIZE}"),
            );
        }
        Ok(ApplianceSpec {
            ports,
            interfaces,
            routes,
            neighbors,
            services,
            affinity,
            maglev_size,
            ha: None,
        })
    }

    /// The `[[port]]` tables: the DPDK ports and the interfaces on them (untagged and VLANs).
    /// `default_mtu` is `[dataplane] mtu`.
    fn ports(
        &self,
        raw: &[PortFile],
        default_mtu: u16,
    ) -> Result<(Vec<PortSpec>, Vec<InterfaceSpec>), ConfigError> {
        let mut ports = Vec::new();
        let mut interfaces = Vec::new();
        let mut names = HashSet::new();
        if raw.is_empty() {
            return self.err("port", "at least one port is required");
        }
        for (p, port) in raw.iter().enumerate() {
            let key = format!("port.{}", port.name);
            self.name(&format!("port[{p}]"), &port.name, &mut names)?;
            let mac = self.mac(&format!("{key}.mac"), &port.mac)?;
            let port_id = u16::try_from(p).or_else(|_| self.err("port", "too many ports"))?;
            let mtu = self.mtu(&format!("{key}.mtu"), port.mtu.unwrap_or(default_mtu))?;
            ports.push(PortSpec {
                name: port.name.clone(),
                mac,
                device: port.device.clone(),
                mtu,
            });
            match port.role {
                Some(role) => interfaces.push(InterfaceSpec {
                    name: port.name.clone(),
                    port: port_id,
                    vlan: Vlan::Untagged,
                    role,
                    addresses: self.cidrs(&format!("{key}.addresses"), &port.addresses)?,
                }),
                None if !port.addresses.is_empty() => {
                    return self.err(
                        format!("{key}.role"),
                        "a port with addresses needs a role (client or backend)",
                    )
                }
                None => {}
            }
            let mut tags = HashSet::new();
            for (v, vlan) in port.vlan.iter().enumerate() {
                self.name(&format!("{key}.vlan[{v}]"), &vlan.name, &mut names)?;
                let itf = self.vlan(&key, port_id, vlan)?;
                if !tags.insert(itf.vlan) {
                    return self.err(
                        format!("{key}.vlan.{}", vlan.name),
                        "another VLAN on this port has the same tags",
                    );
                }
                interfaces.push(itf);
            }
        }
        // Interfaces are numbered in 16 bits, as ports are.
        if interfaces.len() > usize::from(u16::MAX) + 1 {
            return self.err(
                "port",
                "more interfaces (ports and VLANs) than 16-bit ids count",
            );
        }
        for role in [Role::Client, Role::Backend] {
            if !interfaces.iter().any(|i| i.role == role) {
                let r = if role == Role::Client {
                    "client"
                } else {
                    "backend"
                };
                return self.err("port", format!("no interface has role \"{r}\""));
            }
        }
        Ok((ports, interfaces))
    }

    /// One `[[port.vlan]]` table of the port whose key is `key`.
    fn vlan(&self, key: &str, port_id: u16, vlan: &VlanFile) -> Result<InterfaceSpec, ConfigError> {
        let vkey = format!("{key}.vlan.{}", vlan.name);
        let tag = match (vlan.vid, vlan.outer, vlan.inner) {
            (Some(vid), None, None) => Vlan::Single {
                vid: self.vid(&format!("{vkey}.vid"), vid)?,
            },
            (None, Some(o), Some(i)) => Vlan::Double {
                outer: self.vid(&format!("{vkey}.outer"), o)?,
                inner: self.vid(&format!("{vkey}.inner"), i)?,
            },
            _ => {
                return self.err(
                    vkey,
                    "give either `vid` (802.1Q) or both `outer` and `inner` (802.1ad)",
                )
            }
        };
        Ok(InterfaceSpec {
            name: vlan.name.clone(),
            port: port_id,
            vlan: tag,
            role: vlan.role,
            addresses: self.cidrs(&format!("{vkey}.addresses"), &vlan.addresses)?,
        })
    }

    /// The interfaces' own addresses, each configured once.
    fn own_addresses(&self, interfaces: &[InterfaceSpec]) -> Result<HashSet<IpAddr>, ConfigError> {
        let mut own = HashSet::new();
        for itf in interfaces {
            for a in &itf.addresses {
                if !own.insert(a.addr) {
                    return self.err(
                        format!("interface {}.addresses", itf.name),
                        format!("{} is configured twice", a.addr),
                    );
                }
            }
        }
        Ok(own)
    }

    /// The `[[route]]` tables; each `via` must be on a connected subnet.
    fn routes(
        &self,
        raw: &[RouteFile],
        interfaces: &[InterfaceSpec],
    ) -> Result<Vec<RouteSpec>, ConfigError> {
        let mut routes = Vec::new();
        for (r, route) in raw.iter().enumerate() {
            let key = format!("route[{r}]");
            let prefix = route
                .prefix
                .parse::<IpCidr>()
                .or_else(|e| self.err(format!("{key}.prefix"), e))?;
            let via = self.ip(&format!("{key}.via"), &route.via)?;
            if via.is_ipv4() != prefix.addr.is_ipv4() {
                return self.err(format!("{key}.via"), "not of the prefix's address family");
            }
            if !connected(interfaces, via) {
                return self.err(
                    format!("{key}.via"),
                    format!("{via} is not on a connected subnet of any interface"),
                );
            }
            routes.push(RouteSpec { prefix, via });
        }
        Ok(routes)
    }

    /// The `[[neighbor]]` tables (static ARP/ND entries) on connected subnets.
    fn neighbors(
        &self,
        raw: &[NeighborFile],
        interfaces: &[InterfaceSpec],
    ) -> Result<Vec<NeighborSpec>, ConfigError> {
        let mut neighbors = Vec::new();
        let mut seen = HashSet::new();
        for (n, nb) in raw.iter().enumerate() {
            let key = format!("neighbor[{n}]");
            let address = self.ip(&format!("{key}.address"), &nb.address)?;
            let mac = self.mac(&format!("{key}.mac"), &nb.mac)?;
            if !seen.insert(address) {
                return self.err(
                    format!("{key}.address"),
                    format!("{address} is listed twice"),
                );
            }
            if !connected(interfaces, address) {
                return self.err(
                    format!("{key}.address"),
                    format!("{address} is not on a connected subnet of any interface"),
                );
            }
            neighbors.push(NeighborSpec { address, mac });
        }
        Ok(neighbors)
    }

    /// The `[[service]]` tables, and the checks across services.
    fn services(
        &self,
        raw: &[ServiceFile],
        own: &HashSet<IpAddr>,
    ) -> Result<Vec<ServiceSpec>, ConfigError> {
        let mut services = Vec::new();
        let mut names = HashSet::new();
        let mut vips = HashSet::new();
        if raw.is_empty() {
            return self.err("service", "at least one service is required");
        }
        // Service ids are 14 bits in the affinity table (the others mark redirected clients
        // and a remap's epoch).
        if raw.len() > dataplane::affinity::MAX_SERVICES {
            return self.err("service", "at most 16384 services");
        }
        for (s, svc) in raw.iter().enumerate() {
            self.name(&format!("service[{s}]"), &svc.name, &mut names)?;
            let spec = self.service(svc, own)?;
            for vip in [spec.vip4.map(IpAddr::V4), spec.vip6.map(IpAddr::V6)]
                .into_iter()
                .flatten()
            {
                vips.insert(vip);
            }
            services.push(spec);
        }
        // A gateway must not be a VIP: return traffic is recognised by its source address.
        for svc in &services {
            for gw in &svc.gateways {
                for a in [gw.address(false), gw.address(true)].into_iter().flatten() {
                    if vips.contains(&a) {
                        return self.err(
                            format!("service.{}.gateway.{}.address", svc.name, gw.name),
                            format!("{a} is a VIP"),
                        );
                    }
                }
            }
        }
        // Two services may share a VIP only on different ports/protocols.
        for (i, a) in services.iter().enumerate() {
            for b in &services[i + 1..] {
                let shared = (a.vip4.is_some() && a.vip4 == b.vip4)
                    || (a.vip6.is_some() && a.vip6 == b.vip6);
                if shared && Listeners::overlaps(&a.listeners, &b.listeners) {
                    return self.err(
                        format!("service.{}.vip", b.name),
                        format!("shares a VIP and a protocol/port with service {}", a.name),
                    );
                }
            }
        }
        Ok(services)
    }

    /// The `[affinity]` table: shard sizing.
    fn affinity(&self, a: Option<&AffinityFile>) -> Result<AffinitySpec, ConfigError> {
        let d = AffinitySpec::default();
        let capacity = a.and_then(|a| a.capacity).unwrap_or(d.capacity);
        let max_unconfirmed = a
            .and_then(|a| a.max_unconfirmed)
            .unwrap_or(capacity / 4)
            .min(capacity);
        if capacity == 0 {
            return self.err("affinity.capacity", "must be at least 1");
        }
        if a.and_then(|a| a.max_unconfirmed)
            .is_some_and(|m| m > capacity)
        {
            return self.err(
                "affinity.max_unconfirmed",
                "must not exceed affinity.capacity",
            );
        }
        if max_unconfirmed == 0 {
            return self.err("affinity.max_unconfirmed", "must be at least 1");
        }
        let prefix_v4 = self.affinity_number(
            "affinity.prefix_v4",
            a.and_then(|a| a.prefix_v4),
            (8, 32),
            d.prefix_v4,
        )?;
        let prefix_v6 = self.affinity_number(
            "affinity.prefix_v6",
            a.and_then(|a| a.prefix_v6),
            (16, 128),
            d.prefix_v6,
        )?;
        let prefix_quota_v4 = self.affinity_number(
            "affinity.prefix_quota_v4",
            a.and_then(|a| a.prefix_quota_v4),
            (1, 65_535),
            d.prefix_quota_v4,
        )?;
        let prefix_quota_v6 = self.affinity_number(
            "affinity.prefix_quota_v6",
            a.and_then(|a| a.prefix_quota_v6),
            (1, 65_535),
            d.prefix_quota_v6,
        )?;
        Ok(AffinitySpec {
            capacity,
            max_unconfirmed,
            prefix_v4,
            prefix_v6,
            prefix_quota_v4,
            prefix_quota_v6,
        })
    }

    /// An `[affinity]` number `key` within `lo..=hi` (`default` when absent).
    fn affinity_number<T: TryFrom<u64> + Copy>(
        &self,
        key: &str,
        value: Option<u64>,
        (lo, hi): (u64, u64),
        default: T,
    ) -> Result<T, ConfigError> {
        let Some(v) = value else {
            return Ok(default);
        };
        match T::try_from(v) {
            Ok(t) if (lo..=hi).contains(&v) => Ok(t),
            _ => self.err(key, format!("must be between {lo} and {hi}, not {v}")),
        }
    }

    fn dataplane(&self, d: Option<DataplaneFile>) -> Result<DataplaneSettings, ConfigError> {
        let def = DataplaneSettings::default();
        let Some(d) = d else {
            return Ok(def);
        };
        let workers = d.workers.unwrap_or(def.workers);
        if workers.is_empty() {
            return self.err("dataplane.workers", "at least one worker core is required");
        }
        if workers.len() > 64 {
            return self.err("dataplane.workers", "at most 64 workers");
        }
        let mut seen = HashSet::new();
        for c in &workers {
            if !seen.insert(*c) {
                return self.err("dataplane.workers", format!("core {c} is listed twice"));
            }
        }
        let desc = |key: &str, v: Option<u16>, default: u16| -> Result<u16, ConfigError> {
            match v.unwrap_or(default) {
                n @ 64..=16384 => Ok(n),
                n => self.err(
                    format!("dataplane.{key}"),
                    format!("{n} is outside 64-16384"),
                ),
            }
        };
        let mtu = self.mtu("dataplane.mtu", d.mtu.unwrap_or(def.mtu))?;
        let memory_mb = d.memory_mb.unwrap_or(def.memory_mb);
        if memory_mb < 64 {
            return self.err("dataplane.memory_mb", "at least 64 MB");
        }
        let tx_flush_us = d.tx_flush_us.unwrap_or(def.tx_flush_us);
        if !(1..=100_000).contains(&tx_flush_us) {
            return self.err(
                "dataplane.tx_flush_us",
                format!("{tx_flush_us} is outside 1-100000"),
            );
        }
        Ok(DataplaneSettings {
            workers,
            control_core: d.control_core.unwrap_or(def.control_core),
            memory_mb,
            hugepages: d.hugepages.unwrap_or(def.hugepages),
            mbufs: d.mbufs,
            rx_desc: desc("rx_desc", d.rx_desc, def.rx_desc)?,
            tx_desc: desc("tx_desc", d.tx_desc, def.tx_desc)?,
            tx_flush_us,
            mtu,
            eal_args: d.eal_args,
            watchdog: self.millis(
                "dataplane.watchdog",
                d.watchdog.as_ref(),
                DEFAULT_WATCHDOG_MS,
                WATCHDOG_RANGE_MS,
            )?,
        })
    }

    fn metrics(
        &self,
        m: Option<MetricsFile>,
        exception: &ExceptionSettings,
    ) -> Result<MetricsSettings, ConfigError> {
        let Some(m) = m else {
            return Ok(MetricsSettings::default());
        };
        let listen = match m.listen {
            Some(text) => Some(text.parse::<std::net::SocketAddr>().or_else(|_| {
                self.err(
                    "metrics.listen",
                    format!("`{text}` is not ADDRESS:PORT (IPv6: [ADDRESS]:PORT)"),
                )
            })?),
            None => None,
        };
        let namespace = match m.namespace.as_deref() {
            None | Some("management") => MetricsNamespace::Management,
            Some("exception") if exception.enabled => MetricsNamespace::Exception,
            Some("exception") => {
                return self.err(
                    "metrics.namespace",
                    "`exception` needs an [exception] section",
                )
            }
            Some(other) => {
                return self.err(
                    "metrics.namespace",
                    format!("`{other}`: expected `management` or `exception`"),
                )
            }
        };
        if listen.is_none() {
            return self.err("metrics.listen", "missing: the [metrics] section needs it");
        }
        Ok(MetricsSettings { listen, namespace })
    }

    fn control(&self, c: Option<ControlFile>) -> Result<ControlSettings, ConfigError> {
        let mut out = ControlSettings::default();
        let Some(c) = c else {
            return Ok(out);
        };
        let absolute = |key: &str, path: String| {
            if path.starts_with('/') {
                Ok(std::path::PathBuf::from(path))
            } else {
                self.err(key, format!("`{path}` is not an absolute path"))
            }
        };
        if let Some(path) = c.socket {
            out.socket = absolute("control.socket", path)?;
        }
        out.socket_group = c
            .socket_group
            .map(|g| self.group("control.socket_group", g))
            .transpose()?;
        out.readonly_socket = c
            .readonly_socket
            .map(|p| absolute("control.readonly_socket", p))
            .transpose()?;
        if out.readonly_socket.as_ref() == Some(&out.socket) {
            return self.err(
                "control.readonly_socket",
                format!(
                    "`{}` is also control.socket; the read-only socket needs a path of its own",
                    out.socket.display()
                ),
            );
        }
        if let Some(g) = c.readonly_socket_group {
            if out.readonly_socket.is_none() {
                return self.err(
                    "control.readonly_socket_group",
                    "given without control.readonly_socket",
                );
            }
            out.readonly_socket_group = Some(self.group("control.readonly_socket_group", g)?);
        }
        out.client_idle_timeout = self.millis(
            "control.client_idle_timeout",
            c.client_idle_timeout.as_ref(),
            DEFAULT_CLIENT_IDLE_TIMEOUT_MS,
            100..=86_400_000,
        )?;
        out.state_file = c
            .state_file
            .map(|p| absolute("control.state_file", p))
            .transpose()?;
        if let Some(dir) = out.state_file.as_deref().and_then(std::path::Path::parent) {
            if !dir.is_dir() {
                return self.err(
                    "control.state_file",
                    format!("directory `{}` does not exist", dir.display()),
                );
            }
        }
        out.fault_injection = c.fault_injection.unwrap_or(false);
        Ok(out)
    }

    /// A group name the system knows (its group database, NSS included).
    fn group(&self, key: &str, name: String) -> Result<Group, ConfigError> {
        match netdev::cred::group_id(&name) {
            Ok(Some(gid)) => Ok(Group { name, gid }),
            Ok(None) => self.err(key, format!("no group `{name}` on this system")),
            Err(e) => self.err(key, format!("cannot look up group `{name}`: {e}")),
        }
    }

    fn exception(&self, e: Option<ExceptionFile>) -> Result<ExceptionSettings, ConfigError> {
        let def = ExceptionSettings::default();
        let Some(e) = e else {
            return Ok(def);
        };
        if let Some(ns) = &e.netns {
            if ns.is_empty() || ns.len() > 64 || ns.contains(['/', '\0']) || ns.starts_with('.') {
                return self.err(
                    "exception.netns",
                    format!("`{ns}` is not a network namespace name"),
                );
            }
        }
        let tap_prefix = e.tap_prefix.unwrap_or(def.tap_prefix);
        if tap_prefix.contains(['/', '\0', ' ']) {
            return self.err(
                "exception.tap_prefix",
                format!("`{tap_prefix}` cannot start an interface name"),
            );
        }
        let queue = e.queue.unwrap_or(def.queue);
        if !(16..=65536).contains(&queue) {
            return self.err("exception.queue", format!("{queue} is outside 16-65536"));
        }
        let rate_pps = e.rate_pps.unwrap_or(def.rate_pps);
        if !(100..=10_000_000).contains(&rate_pps) {
            return self.err(
                "exception.rate_pps",
                format!("{rate_pps} is outside 100-10000000"),
            );
        }
        let urgent_rate_pps = e.urgent_rate_pps.unwrap_or(def.urgent_rate_pps);
        if !(100..=1_000_000).contains(&urgent_rate_pps) {
            return self.err(
                "exception.urgent_rate_pps",
                format!("{urgent_rate_pps} is outside 100-1000000"),
            );
        }
        let worker_rate_pps = e.worker_rate_pps.unwrap_or(def.worker_rate_pps);
        if !(100..=10_000_000).contains(&worker_rate_pps) {
            return self.err(
                "exception.worker_rate_pps",
                format!("{worker_rate_pps} is outside 100-10000000"),
            );
        }
        Ok(ExceptionSettings {
            enabled: e.enabled.unwrap_or(true),
            netns: e.netns,
            tap_prefix,
            queue,
            rate_pps,
            urgent_rate_pps,
            worker_rate_pps,
        })
    }

    /// A duration in milliseconds: "500ms", "2s", "1m", or a number of seconds.
    fn millis(
        &self,
        key: &str,
        d: Option<&Duration>,
        default_ms: u64,
        range: std::ops::RangeInclusive<u64>,
    ) -> Result<std::time::Duration, ConfigError> {
        let ms = match d {
            None => default_ms,
            Some(Duration::Seconds(s)) => s.saturating_mul(1000),
            Some(Duration::Text(t)) => match parse_millis(t) {
                Some(ms) => ms,
                None => {
                    return self.err(
                        key,
                        format!("`{t}` is not a duration (e.g. \"500ms\", \"2s\", \"1m\")"),
                    )
                }
            },
        };
        if !range.contains(&ms) {
            return self.err(
                key,
                format!("{ms} ms is outside {} ms-{} ms", range.start(), range.end()),
            );
        }
        Ok(std::time::Duration::from_millis(ms))
    }

    /// One `[[service.health_check]]` table, whose key is `ckey`.
    fn health_check(
        &self,
        ckey: &str,
        svc: &ServiceSpec,
        c: &HealthCheckFile,
    ) -> Result<HealthCheck, ConfigError> {
        let l = &svc.listeners;
        let (kind, default_port) = match c.kind.as_str() {
            "tcp" => (CheckKind::Tcp, None),
            "ike" => (CheckKind::Ike, Some(service_port(l, Protocol::Ike))),
            "tls" => (CheckKind::Tls, Some(service_port(l, Protocol::Tls))),
            "dtls" => (CheckKind::Dtls, Some(service_port(l, Protocol::Dtls))),
            "icmp" => (CheckKind::Icmp, None),
            other => {
                return self.err(
                    format!("{ckey}.type"),
                    format!("unknown check `{other}` (tcp, ike, tls, dtls, icmp)"),
                )
            }
        };
        let port = match (kind, c.port.or(default_port)) {
            (CheckKind::Icmp, None) => 0,
            (CheckKind::Icmp, Some(_)) => {
                return self.err(format!("{ckey}.port"), "an ICMP check has no port")
            }
            (_, None) => return self.err(format!("{ckey}.port"), "a TCP check needs a port"),
            (_, Some(0)) => return self.err(format!("{ckey}.port"), "port 0 is not a port"),
            (_, Some(p)) => p,
        };
        let ipv6 = match c.family.as_deref() {
            None => svc.gateways.iter().all(|g| g.ipv4.is_none()),
            Some("ipv4") => false,
            Some("ipv6") => true,
            Some(other) => {
                return self.err(
                    format!("{ckey}.family"),
                    format!("unknown family `{other}` (ipv4, ipv6)"),
                )
            }
        };
        if let Some(g) = svc.gateways.iter().find(|g| g.address(ipv6).is_none()) {
            return self.err(
                format!("{ckey}.family"),
                format!(
                    "gateway `{}` has no {} address to probe",
                    g.name,
                    if ipv6 { "IPv6" } else { "IPv4" }
                ),
            );
        }
        let interval = self.millis(
            &format!("{ckey}.interval"),
            c.interval.as_ref(),
            1000,
            100..=3_600_000,
        )?;
        let timeout = self.millis(
            &format!("{ckey}.timeout"),
            c.timeout.as_ref(),
            (crate::units::millis(interval) / 2).clamp(10, 2000),
            10..=3_600_000,
        )?;
        if timeout > interval {
            return self.err(
                format!("{ckey}.timeout"),
                "is longer than the interval (one probe at a time per check)",
            );
        }
        let count = |name: &str, v: Option<u32>, default: u32| -> Result<u32, ConfigError> {
            match v.unwrap_or(default) {
                n @ 1..=100 => Ok(n),
                n => self.err(format!("{ckey}.{name}"), format!("{n} is outside 1-100")),
            }
        };
        let mut source = None;
        for a in &c.source {
            let ip = self.ip(&format!("{ckey}.source"), a)?;
            if ip.is_ipv6() == ipv6 && source.replace(ip).is_some() {
                return self.err(format!("{ckey}.source"), "at most one address per family");
            }
        }
        if !c.source.is_empty() && source.is_none() {
            return self.err(
                format!("{ckey}.source"),
                format!(
                    "no {} address, and the check probes that family",
                    if ipv6 { "IPv6" } else { "IPv4" }
                ),
            );
        }
        if c.sni.is_some() && kind != CheckKind::Tls {
            return self.err(
                format!("{ckey}.sni"),
                "only a TLS check sends a server name",
            );
        }
        if let Some(sni) = &c.sni {
            if sni.is_empty() || sni.len() > 253 || !sni.is_ascii() {
                return self.err(format!("{ckey}.sni"), format!("`{sni}` is not a host name"));
            }
        }
        Ok(HealthCheck {
            kind,
            port,
            ipv6,
            interval,
            timeout,
            rise: count("rise", c.rise, 2)?,
            fall: count("fall", c.fall, 3)?,
            source,
            sni: c.sni.clone(),
        })
    }

    fn health(
        &self,
        svc: &ServiceSpec,
        policy: Option<&str>,
        checks: &[HealthCheckFile],
    ) -> Result<ServiceHealth, ConfigError> {
        let key = format!("service.{}", svc.name);
        let on_gateway_down = match policy {
            None | Some("reschedule") => OnGatewayDown::Reschedule,
            Some("keep") => OnGatewayDown::Keep,
            Some(other) => {
                return self.err(
                    format!("{key}.on_gateway_down"),
                    format!("unknown policy `{other}` (reschedule, keep)"),
                )
            }
        };
        let mut out = Vec::new();
        let mut labels = HashSet::new();
        for (i, c) in checks.iter().enumerate() {
            let ckey = format!("{key}.health_check[{i}]");
            let check = self.health_check(&ckey, svc, c)?;
            if !labels.insert(check.label()) {
                return self.err(
                    ckey,
                    format!("a second `{}` check in the service", check.label()),
                );
            }
            out.push(check);
        }
        Ok(ServiceHealth {
            service: svc.name.clone(),
            on_gateway_down,
            checks: out,
        })
    }

    /// `ha.floating` with their interfaces, and the virtual router's IPv6 link-local address on
    /// every interface with IPv6 virtual addresses.
    fn ha_floating(
        &self,
        h: &HaFile,
        spec: &ApplianceSpec,
    ) -> Result<Vec<(u16, IpAddr)>, ConfigError> {
        let mut floating = Vec::new();
        for f in &h.floating {
            let a = self.ip("ha.floating", f)?;
            let on = (0..=u16::MAX)
                .zip(&spec.interfaces)
                .find(|(_, itf)| itf.addresses.iter().any(|c| c.contains(a)));
            let Some((i, itf)) = on else {
                return self.err("ha.floating", format!("{a} is on no interface's subnet"));
            };
            if itf.addresses.iter().any(|c| c.addr == a) {
                return self.err(
                    "ha.floating",
                    format!("{a} is also an interface's own address"),
                );
            }
            floating.push((i, a));
        }
        // RFC 5798 §5.2.9: an IPv6 virtual router's first address is its link-local one. Every
        // interface with IPv6 virtual addresses gets the one of the virtual MAC, which floats
        // like the rest (answered by the master only).
        let link_local = IpAddr::V6(dataplane::wire::vrrp::virtual_link_local(h.vrid));
        let has_vip6 = spec.services.iter().any(|s| s.vip6.is_some());
        // Interface ids are u16 (ports() refuses more interfaces).
        for (i, itf) in (0..=u16::MAX).zip(&spec.interfaces) {
            let floats6 = floating.iter().any(|(f, a)| *f == i && a.is_ipv6());
            if floats6 || (itf.role == Role::Client && has_vip6) {
                floating.push((i, link_local));
            }
        }
        Ok(floating)
    }

    fn ha(&self, h: HaFile, spec: &ApplianceSpec) -> Result<(HaSettings, HaSpec), ConfigError> {
        if h.vrid == 0 {
            return self.err("ha.vrid", "0 is not a virtual router id (1-255)");
        }
        if h.priority == 0 {
            return self.err(
                "ha.priority",
                "0 is reserved for a master giving up (1-255)",
            );
        }
        let advert_interval = self.millis(
            "ha.advert_interval",
            h.advert_interval.as_ref(),
            1000,
            10..=40_950,
        )?;
        if advert_interval.as_millis() % 10 != 0 {
            return self.err(
                "ha.advert_interval",
                "VRRP counts in centiseconds: use a multiple of 10 ms",
            );
        }
        let preempt_delay = self.millis(
            "ha.preempt_delay",
            h.preempt_delay.as_ref(),
            0,
            0..=3_600_000,
        )?;
        let floating = self.ha_floating(&h, spec)?;
        let peer = h
            .peer
            .as_deref()
            .map(|p| self.ip("ha.peer", p))
            .transpose()?;
        let sync_key = h.sync_key.unwrap_or_default().into_bytes();
        if peer.is_some() && sync_key.len() < 16 {
            return self.err(
                "ha.sync_key",
                "at least 16 bytes are required with a peer (it authenticates affinity sync)",
            );
        }
        let heartbeat = self.millis("ha.heartbeat", h.heartbeat.as_ref(), 20, 5..=1000)?;
        let dead_after = match h.dead_after.unwrap_or(3) {
            n @ 2..=50 => n,
            n => return self.err("ha.dead_after", format!("{n} is outside 2-50")),
        };
        let sync_rate_pps = h.sync_rate_pps.unwrap_or(DEFAULT_SYNC_RATE_PPS);
        if !(1_000..=10_000_000).contains(&sync_rate_pps) {
            return self.err(
                "ha.sync_rate_pps",
                format!("{sync_rate_pps} is outside 1000-10000000"),
            );
        }
        let sync_bulk_rate = h
            .sync_bulk_rate
            .unwrap_or(crate::sync::session::DEFAULT_BULK_RATE);
        if !(1..=1_000).contains(&sync_bulk_rate) {
            return self.err(
                "ha.sync_bulk_rate",
                format!("{sync_bulk_rate} is outside 1-1000 (bulk datagrams per millisecond)"),
            );
        }
        // Each second of sync_rate_pps must leave the bulk room for deltas and heartbeats.
        if u64::from(sync_bulk_rate) * 1000 > u64::from(sync_rate_pps) {
            return self.err(
                "ha.sync_bulk_rate",
                format!(
                    "{sync_bulk_rate} bulk datagrams per ms is more than the peer's budget \
                     (sync_rate_pps = {sync_rate_pps}) lets through"
                ),
            );
        }
        let hold_s = self.seconds(
            "ha.sync_hold_max",
            h.sync_hold_max.as_ref(),
            DEFAULT_SYNC_HOLD_MAX_S,
        )?;
        Ok((
            HaSettings {
                vrid: h.vrid,
                priority: h.priority,
                advert_interval,
                preempt: h.preempt.unwrap_or(true),
                preempt_delay,
                peer,
                sync_key,
                sync_port: h.sync_port.unwrap_or(7450),
                heartbeat,
                dead_after,
                sync_rate_pps,
                sync_bulk_rate,
                sync_hold_max: std::time::Duration::from_secs(u64::from(hold_s)),
            },
            HaSpec {
                vrid: h.vrid,
                // Every appliance starts as backup; VRRP decides.
                master: false,
                floating,
            },
        ))
    }

    fn redirect(&self, r: Option<RedirectFile>) -> Result<RedirectSettings, ConfigError> {
        let d = RedirectSettings::default();
        let Some(r) = r else {
            return Ok(d);
        };
        let ms = crate::units::millis;
        let report_key = r.report_key.unwrap_or_default().into_bytes();
        if r.report_port == Some(0) {
            return self.err("redirect.report_port", "0 is not a port");
        }
        if r.report_port.is_some() && report_key.len() < 16 {
            return self.err(
                "redirect.report_key",
                "at least 16 bytes are required with a report_port (it authenticates load reports)",
            );
        }
        Ok(RedirectSettings {
            report_port: r.report_port,
            report_key,
            report_max_age: self.millis(
                "redirect.report_max_age",
                r.report_max_age.as_ref(),
                ms(d.report_max_age),
                100..=3_600_000,
            )?,
            establish_time: self.millis(
                "redirect.establish_time",
                r.establish_time.as_ref(),
                ms(d.establish_time),
                0..=600_000,
            )?,
            redirect_half_life: self.millis(
                "redirect.redirect_half_life",
                r.redirect_half_life.as_ref(),
                ms(d.redirect_half_life),
                1000..=86_400_000,
            )?,
        })
    }

    fn vid(&self, key: &str, vid: u16) -> Result<u16, ConfigError> {
        if (1..=4094).contains(&vid) {
            Ok(vid)
        } else {
            self.err(key, format!("VLAN id {vid} is outside 1-4094"))
        }
    }

    /// The service's VIPs: at most one per family, none an interface address.
    fn vips(
        &self,
        key: &str,
        svc: &ServiceFile,
        own: &HashSet<IpAddr>,
    ) -> Result<(Option<Ipv4Addr>, Option<Ipv6Addr>), ConfigError> {
        let (mut vip4, mut vip6) = (None, None);
        if svc.vip.is_empty() {
            return self.err(format!("{key}.vip"), "at least one VIP is required");
        }
        for v in &svc.vip {
            let a = self.ip(&format!("{key}.vip"), v)?;
            if own.contains(&a) {
                return self.err(format!("{key}.vip"), format!("{a} is an interface address"));
            }
            let slot_taken = match a {
                IpAddr::V4(a) => vip4.replace(a).is_some(),
                IpAddr::V6(a) => vip6.replace(a).is_some(),
            };
            if slot_taken {
                return self.err(
                    format!("{key}.vip"),
                    "at most one IPv4 and one IPv6 VIP per service",
                );
            }
        }
        Ok((vip4, vip6))
    }

    /// The service's `[[service.gateway]]` tables.
    fn gateways(
        &self,
        key: &str,
        svc: &ServiceFile,
        own: &HashSet<IpAddr>,
    ) -> Result<Vec<GatewaySpec>, ConfigError> {
        if svc.gateway.is_empty() {
            return self.err(format!("{key}.gateway"), "at least one gateway is required");
        }
        let mut gateways = Vec::new();
        let mut names = HashSet::new();
        let mut addrs = HashSet::new();
        for (g, gw) in svc.gateway.iter().enumerate() {
            self.name(&format!("{key}.gateway[{g}]"), &gw.name, &mut names)?;
            let gkey = format!("{key}.gateway.{}", gw.name);
            let (mut ipv4, mut ipv6) = (None, None);
            if gw.address.is_empty() {
                return self.err(
                    format!("{gkey}.address"),
                    "at least one address is required",
                );
            }
            for a in &gw.address {
                let ip = self.ip(&format!("{gkey}.address"), a)?;
                if own.contains(&ip) {
                    return self.err(
                        format!("{gkey}.address"),
                        format!("{ip} is an interface address"),
                    );
                }
                if !addrs.insert(ip) {
                    return self.err(
                        format!("{gkey}.address"),
                        format!("{ip} belongs to two gateways"),
                    );
                }
                let taken = match ip {
                    IpAddr::V4(a) => ipv4.replace(a).is_some(),
                    IpAddr::V6(a) => ipv6.replace(a).is_some(),
                };
                if taken {
                    return self.err(
                        format!("{gkey}.address"),
                        "at most one IPv4 and one IPv6 address",
                    );
                }
            }
            if gw.weight > MAX_WEIGHT {
                return self.err(
                    format!("{gkey}.weight"),
                    format!("{} exceeds {MAX_WEIGHT}", gw.weight),
                );
            }
            let state = match gw.state.as_deref() {
                None | Some("up") => GatewayState::Up,
                Some("down") => GatewayState::Down,
                Some("draining") => GatewayState::Draining,
                Some(other) => {
                    return self.err(
                        format!("{gkey}.state"),
                        format!("unknown state `{other}` (up, down, draining)"),
                    )
                }
            };
            gateways.push(GatewaySpec {
                name: gw.name.clone(),
                ipv4,
                ipv6,
                weight: gw.weight,
                state,
            });
        }
        Ok(gateways)
    }

    /// The service's `protocols` and `ports`, through the protocol registry.
    fn listeners(&self, key: &str, svc: &ServiceFile) -> Result<Listeners, ConfigError> {
        if svc.protocols.is_empty() {
            return self.err(
                format!("{key}.protocols"),
                "at least one protocol is required",
            );
        }
        for name in svc.ports.keys() {
            if !PROTOCOLS.iter().any(|d| d.port_key == Some(name.as_str())) {
                let keys: Vec<&str> = PROTOCOLS.iter().filter_map(|d| d.port_key).collect();
                return self.err(
                    format!("{key}.ports.{name}"),
                    format!("unknown port key (expected one of {})", keys.join(", ")),
                );
            }
        }
        let mut listeners = Listeners::none();
        for name in &svc.protocols {
            let Some(protocol) = Protocol::from_name(name) else {
                return self.err(
                    format!("{key}.protocols"),
                    format!("unknown protocol `{name}` ({})", Protocol::names()),
                );
            };
            let def = protocol.def();
            let port = match def.port_key {
                None => 0,
                Some(port_key) => match svc.ports.get(port_key).copied() {
                    None => def.default_port,
                    Some(0) => {
                        return self.err(format!("{key}.ports.{port_key}"), "port 0 is not a port")
                    }
                    Some(p) => p,
                },
            };
            listeners.set(protocol, port);
        }
        if let Some((a, b, port)) = listeners.port_clash() {
            let key_of = |p: Protocol| p.def().port_key.unwrap_or(p.name());
            return self.err(
                format!("{key}.ports"),
                format!(
                    "{} and {} are both on {} port {port}",
                    key_of(a),
                    key_of(b),
                    if a.def().transport == Transport::Tcp {
                        "TCP"
                    } else {
                        "UDP"
                    }
                ),
            );
        }
        Ok(listeners)
    }

    fn service(
        &self,
        svc: &ServiceFile,
        own: &HashSet<IpAddr>,
    ) -> Result<ServiceSpec, ConfigError> {
        let key = format!("service.{}", svc.name);
        let (vip4, vip6) = self.vips(&key, svc, own)?;
        let listeners = self.listeners(&key, svc)?;
        let scheduler = match svc.scheduler.as_deref() {
            None => SchedulerKind::default(),
            Some(name) => match SchedulerKind::from_name(name) {
                Some(kind) => kind,
                None => {
                    return self.err(
                        format!("{key}.scheduler"),
                        format!("unknown scheduler `{name}` ({})", SchedulerKind::names()),
                    )
                }
            },
        };
        let mode = match svc.mode.as_deref() {
            None | Some("nat") => ServiceMode::Nat,
            Some("redirect") => ServiceMode::Redirect,
            Some(other) => {
                return self.err(
                    format!("{key}.mode"),
                    format!("unknown mode `{other}` (nat, redirect)"),
                )
            }
        };
        if mode == ServiceMode::Redirect && !listeners.carries(Protocol::Ike) {
            return self.err(
                format!("{key}.mode"),
                "redirect mode answers IKE_SA_INIT: the service needs the `ike` protocol",
            );
        }
        let route_to_gateways = svc.route_to_gateways.unwrap_or(false);
        if route_to_gateways && mode != ServiceMode::Redirect {
            return self.err(
                format!("{key}.route_to_gateways"),
                "only redirect mode sends clients to the gateways' own addresses",
            );
        }
        let persistence_timeout_s = self.seconds(
            &format!("{key}.persistence_timeout"),
            svc.persistence_timeout.as_ref(),
            DEFAULT_PERSISTENCE_TIMEOUT_S,
        )?;
        let unconfirmed_timeout_s = self.seconds(
            &format!("{key}.unconfirmed_timeout"),
            svc.unconfirmed_timeout.as_ref(),
            DEFAULT_UNCONFIRMED_TIMEOUT_S.min(persistence_timeout_s),
        )?;
        let gateways = self.gateways(&key, svc, own)?;
        if vip4.is_some() && gateways.iter().all(|g| g.ipv4.is_none()) {
            return self.err(
                format!("{key}.gateway"),
                "the service has an IPv4 VIP but no gateway has an IPv4 address",
            );
        }
        if vip6.is_some() && gateways.iter().all(|g| g.ipv6.is_none()) {
            return self.err(
                format!("{key}.gateway"),
                "the service has an IPv6 VIP but no gateway has an IPv6 address",
            );
        }
        Ok(ServiceSpec {
            name: svc.name.clone(),
            vip4,
            vip6,
            listeners,
            scheduler,
            persistence_timeout_s,
            unconfirmed_timeout_s,
            gateways,
            mode,
            route_to_gateways,
        })
    }
}

/// Whether `a` is on a connected subnet of one of the interfaces.
fn connected(interfaces: &[InterfaceSpec], a: IpAddr) -> bool {
    interfaces
        .iter()
        .flat_map(|i| &i.addresses)
        .any(|c| c.contains(a))
}

/// The port the service carries `protocol` on, or the protocol's well-known one.
fn service_port(listeners: &Listeners, protocol: Protocol) -> u16 {
    listeners
        .port(protocol)
        .unwrap_or(protocol.def().default_port)
}

/// Parses a duration in milliseconds: "250ms", "2s", "1m30s", or a number of seconds.
pub fn parse_millis(t: &str) -> Option<u64> {
    let t = t.trim();
    if let Some(ms) = t.strip_suffix("ms") {
        return ms.parse().ok();
    }
    parse_duration(t)?.checked_mul(1000)
}

/// Parses "90", "90s", "30m", "1h", "1h30m", "2d".
pub fn parse_duration(t: &str) -> Option<u64> {
    let t = t.trim();
    if let Ok(s) = t.parse::<u64>() {
        return Some(s);
    }
    let mut total: u64 = 0;
    let mut num = String::new();
    let mut any = false;
    for c in t.chars() {
        if c.is_ascii_digit() {
            num.push(c);
            continue;
        }
        let mult = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86400,
            _ => return None,
        };
        let n: u64 = num.parse().ok()?;
        total = total.checked_add(n.checked_mul(mult)?)?;
        num.clear();
        any = true;
    }
    (any && num.is_empty()).then_some(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LAB: &str = include_str!("../../conf/lab.toml");

    #[test]
    fn shipped_lab_config_loads() {
        let spec = load_str(LAB, "conf/lab.toml").expect("lab config");
        assert_eq!(spec.ports.len(), 2);
        assert_eq!(spec.ports[0].name, "client");
        assert_eq!(spec.services.len(), 1);
        let svc = &spec.services[0];
        assert_eq!(svc.vip4, Some("198.18.0.100".parse().unwrap()));
        assert_eq!(svc.vip6, Some("2001:2:0:1::100".parse().unwrap()));
        assert_eq!(svc.gateways.len(), 3);
        assert_eq!(svc.persistence_timeout_s, 3600);
        assert!(svc.listeners.carries(Protocol::Esp));
        assert_eq!(svc.listeners.port(Protocol::NatT), Some(4500));
        // And the snapshot derives from it: gateways resolved to the backend port.
        let snap = dataplane::model::Snapshot::build(spec, 1).expect("snapshot");
        let hop = snap.services[0].v4.gateways[1]
            .unwrap()
            .1
            .expect("gw2 next hop");
        assert_eq!(hop.mac.to_string(), "02:00:00:00:02:0c");
    }

    #[test]
    fn every_shipped_config_loads() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../conf");
        let mut n = 0;
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            if p.extension().is_some_and(|x| x == "toml") {
                load_config(&p).unwrap_or_else(|e| panic!("{e}"));
                n += 1;
            }
        }
        assert!(n >= 3, "conf/ holds lab, bare-metal and bench configs");
    }

    #[test]
    fn lab_toml_matches_the_built_in_lab_spec() {
        let spec = load_str(LAB, "conf/lab.toml").unwrap();
        let built_in = testkit::lab::appliance_spec(spec.affinity);
        assert_eq!(spec.interfaces, built_in.interfaces);
        assert_eq!(spec.routes, built_in.routes);
        assert_eq!(spec.services, built_in.services);
        let mut a = spec.neighbors.clone();
        let mut b = built_in.neighbors.clone();
        a.sort_by_key(|n| n.address);
        b.sort_by_key(|n| n.address);
        assert_eq!(a, b);
        let macs = |s: &ApplianceSpec| {
            s.ports
                .iter()
                .map(|p| (p.name.clone(), p.mac))
                .collect::<Vec<_>>()
        };
        assert_eq!(macs(&spec), macs(&built_in));
    }

    fn err_of(text: &str) -> ConfigError {
        load_str(text, "t.toml").expect_err("must fail")
    }

    fn with(replace: &str, by: &str) -> String {
        assert!(
            LAB.contains(replace),
            "fixture text `{replace}` not in lab.toml"
        );
        LAB.replacen(replace, by, 1)
    }

    #[test]
    fn affinity_prefix_quotas() {
        let d = load_str(LAB, "conf/lab.toml").unwrap().affinity;
        assert_eq!(
            (
                d.prefix_v4,
                d.prefix_v6,
                d.prefix_quota_v4,
                d.prefix_quota_v6
            ),
            (24, 64, 256, 64)
        );
        let set = "max_unconfirmed = 262144\nprefix_v4 = 32\nprefix_v6 = 56\n\
                   prefix_quota_v4 = 4\nprefix_quota_v6 = 65535";
        let a = load_str(&with("max_unconfirmed = 262144", set), "t.toml")
            .unwrap()
            .affinity;
        assert_eq!(
            (
                a.prefix_v4,
                a.prefix_v6,
                a.prefix_quota_v4,
                a.prefix_quota_v6
            ),
            (32, 56, 4, 65535)
        );
        for (line, key, value) in [
            ("prefix_v4 = 7", "affinity.prefix_v4", "7"),
            ("prefix_v4 = 33", "affinity.prefix_v4", "33"),
            ("prefix_v6 = 15", "affinity.prefix_v6", "15"),
            ("prefix_v6 = 129", "affinity.prefix_v6", "129"),
            ("prefix_quota_v4 = 0", "affinity.prefix_quota_v4", "0"),
            (
                "prefix_quota_v6 = 65536",
                "affinity.prefix_quota_v6",
                "65536",
            ),
        ] {
            let text = with(
                "max_unconfirmed = 262144",
                &format!("max_unconfirmed = 262144\n{line}"),
            );
            let e = err_of(&text);
            assert_eq!((e.file.as_str(), e.key.as_str()), ("t.toml", key), "{line}");
            assert!(
                e.reason.contains("between") && e.reason.contains(value),
                "{line}: {e}"
            );
        }
    }

    #[test]
    fn errors_name_file_key_and_reason() {
        let e = err_of(&with("weight = 1", "weight = 20000"));
        assert_eq!(e.file, "t.toml");
        assert_eq!(e.key, "service.vpn.gateway.gw1.weight");
        assert!(e.reason.contains("20000"), "{e}");

        let e = err_of(&with(
            "address = [\"198.19.0.12\"",
            "address = [\"198.19.0.300\"",
        ));
        assert_eq!(e.key, "service.vpn.gateway.gw2.address");
        assert!(e.reason.contains("198.19.0.300"));

        let e = err_of(&with("scheduler = \"maglev\"", "scheduler = \"random\""));
        assert_eq!(e.key, "service.vpn.scheduler");

        let e = err_of(&with(
            "mac = \"02:00:00:00:01:01\"",
            "mac = \"01:00:00:00:01:01\"",
        ));
        assert_eq!(e.key, "port.client.mac");
        assert!(e.reason.contains("unicast"));

        let e = err_of(&with(
            "persistence_timeout = \"1h\"",
            "persistence_timeout = \"1 hour\"",
        ));
        assert_eq!(e.key, "service.vpn.persistence_timeout");

        let e = err_of(&with("via = \"198.18.0.254\"", "via = \"198.18.9.254\""));
        assert_eq!(e.key, "route[0].via");

        let e = err_of(&with("\"esp\",", "\"gre\","));
        assert_eq!(e.key, "service.vpn.protocols");
        assert!(e.reason.contains("gre"));
    }

    #[test]
    fn protocols_and_ports_come_from_the_registry() {
        let e = err_of(&with("\"esp\",", "\"gre\","));
        assert_eq!(
            e.reason,
            "unknown protocol `gre` (ike, nat-t, esp, tls, dtls)"
        );

        let e = err_of(&with("scheduler = \"maglev\"", "scheduler = \"random\""));
        assert_eq!(
            e.reason,
            "unknown scheduler `random` (maglev, least-conn, round-robin)"
        );

        let svc = "protocols = [";
        let e = err_of(&with(svc, "ports = { ike = 4500 }\nprotocols = ["));
        assert_eq!(e.key, "service.vpn.ports");
        assert_eq!(e.reason, "ike and nat_t are both on UDP port 4500");

        let e = err_of(&with(svc, "ports = { ike = 0 }\nprotocols = ["));
        assert_eq!(e.key, "service.vpn.ports.ike");

        let e = err_of(&with(svc, "ports = { esp = 50 }\nprotocols = ["));
        assert_eq!(e.key, "service.vpn.ports.esp");
        assert!(e.reason.contains("ike, nat_t, tls, dtls"), "{e}");

        // A moved port is where the listeners and the classifier's plan look for it.
        let spec = load_str(
            &with(svc, "ports = { dtls = 8443 }\nprotocols = ["),
            "t.toml",
        )
        .unwrap();
        let l = &spec.services[0].listeners;
        assert_eq!(l.port(Protocol::Dtls), Some(8443));
        assert_eq!(l.port_plan().dtls, 8443);
        assert!(l.accepts(dataplane::wire::ip_proto::UDP, 8443));
        assert!(!l.accepts(dataplane::wire::ip_proto::UDP, 443));
        assert!(l.accepts(dataplane::wire::ip_proto::TCP, 443));
    }

    #[test]
    fn health_checks_and_the_exception_path() {
        let c = load_config_str(LAB, "t.toml").unwrap();
        assert_eq!(
            c.exception,
            ExceptionSettings {
                enabled: true,
                netns: Some("vlb-app".into()),
                ..ExceptionSettings::default()
            }
        );
        assert_eq!(c.exception.tap_name("backend"), "vlb-backend");
        assert_eq!(c.health.len(), 1);
        let h = &c.health[0];
        assert_eq!(h.on_gateway_down, OnGatewayDown::Reschedule);
        assert_eq!(
            h.checks,
            vec![HealthCheck {
                kind: CheckKind::Ike,
                port: 500,
                ipv6: false,
                interval: std::time::Duration::from_secs(1),
                timeout: std::time::Duration::from_millis(500),
                rise: 2,
                fall: 3,
                source: None,
                sni: None,
            }]
        );
        assert_eq!(h.checks[0].label(), "ike:500");

        let more = with(
            "type = \"ike\"",
            "type = \"ike\"\n\n[[service.health_check]]\ntype = \"tls\"\nfamily = \"ipv6\"\n\
             sni = \"vpn.example\"\nsource = [\"198.19.0.1\", \"2001:2:0:2::1\"]\ninterval = 2\n\n\
             [[service.health_check]]\ntype = \"tcp\"\nport = 22\n\n[[service.health_check]]\ntype = \"icmp\"",
        )
        .replace("persistence_timeout", "on_gateway_down = \"keep\"\npersistence_timeout");
        let c = load_config_str(&more, "t.toml").unwrap();
        let h = &c.health[0];
        assert_eq!(h.on_gateway_down, OnGatewayDown::Keep);
        let labels: Vec<String> = h.checks.iter().map(HealthCheck::label).collect();
        assert_eq!(labels, ["ike:500", "tls6:443", "tcp:22", "icmp"]);
        assert_eq!(h.checks[1].source, Some("2001:2:0:2::1".parse().unwrap()));
        assert_eq!(h.checks[1].interval, std::time::Duration::from_secs(2));
        assert_eq!(h.checks[1].timeout, std::time::Duration::from_secs(1));
        assert_eq!(h.checks[1].sni.as_deref(), Some("vpn.example"));

        // No [exception] section: no TAPs.
        let off = LAB
            .replace("[exception]\n", "[unused]\n")
            .replace("netns = \"vlb-app\"\n", "")
            .replace("namespace = \"exception\"\n", "");
        let off = off.replace("[unused]\n", "");
        assert!(!load_config_str(&off, "t.toml").unwrap().exception.enabled);
    }

    #[test]
    fn health_check_errors_name_their_key() {
        let cases = [
            (
                "type = \"ike\"",
                "type = \"http\"",
                "service.vpn.health_check[0].type",
                "http",
            ),
            (
                "type = \"ike\"",
                "type = \"tcp\"",
                "service.vpn.health_check[0].port",
                "port",
            ),
            (
                "type = \"ike\"",
                "type = \"icmp\"\nport = 7",
                "service.vpn.health_check[0].port",
                "no port",
            ),
            (
                "timeout = \"500ms\"",
                "timeout = \"2s\"",
                "service.vpn.health_check[0].timeout",
                "interval",
            ),
            (
                "interval = \"1s\"",
                "interval = \"1 second\"",
                "service.vpn.health_check[0].interval",
                "duration",
            ),
            (
                "interval = \"1s\"",
                "interval = \"10ms\"",
                "service.vpn.health_check[0].interval",
                "10 ms",
            ),
            (
                "fall = 3",
                "fall = 0",
                "service.vpn.health_check[0].fall",
                "1-100",
            ),
            (
                "rise = 2",
                "rise = 2\nsource = [\"2001:2:0:2::1\"]",
                "service.vpn.health_check[0].source",
                "IPv4",
            ),
            (
                "rise = 2",
                "rise = 2\nsni = \"x\"",
                "service.vpn.health_check[0].sni",
                "TLS",
            ),
            (
                "rise = 2",
                "rise = 2\nfamily = \"ipx\"",
                "service.vpn.health_check[0].family",
                "ipx",
            ),
            (
                "persistence_timeout",
                "on_gateway_down = \"panic\"\npersistence_timeout",
                "service.vpn.on_gateway_down",
                "panic",
            ),
            (
                "netns = \"vlb-app\"",
                "netns = \"../etc\"",
                "exception.netns",
                "../etc",
            ),
            (
                "netns = \"vlb-app\"",
                "tap_prefix = \"vlb-longer-\"",
                "exception.tap_prefix",
                "15 bytes",
            ),
            (
                "netns = \"vlb-app\"",
                "queue = 1",
                "exception.queue",
                "16-65536",
            ),
            (
                "netns = \"vlb-app\"",
                "urgent_rate_pps = 10",
                "exception.urgent_rate_pps",
                "100-1000000",
            ),
            (
                "netns = \"vlb-app\"",
                "worker_rate_pps = 0",
                "exception.worker_rate_pps",
                "100-10000000",
            ),
        ];
        for (from, to, key, reason) in cases {
            let e = err_of(&with(from, to));
            assert_eq!(e.key, key, "{to}: {e}");
            assert!(e.reason.contains(reason), "{to}: {e}");
        }
        // A second check of the same kind and port.
        let twice = with(
            "type = \"ike\"",
            "type = \"ike\"\n\n[[service.health_check]]\ntype = \"ike\"",
        );
        assert!(err_of(&twice).reason.contains("second `ike:500`"));
        // IPv6 probes of a gateway without an IPv6 address.
        let v4only = with(
            "address = [\"198.19.0.13\", \"2001:2:0:2::13\"]",
            "address = [\"198.19.0.13\"]",
        );
        let e = err_of(&v4only.replace("type = \"ike\"", "type = \"ike\"\nfamily = \"ipv6\""));
        assert_eq!(e.key, "service.vpn.health_check[0].family");
        assert!(e.reason.contains("gw3"), "{e}");
    }

    #[test]
    fn millisecond_durations() {
        assert_eq!(parse_millis("250ms"), Some(250));
        assert_eq!(parse_millis("2s"), Some(2000));
        assert_eq!(parse_millis("1m30s"), Some(90_000));
        assert_eq!(parse_millis("3"), Some(3000));
        assert_eq!(parse_millis("ms"), None);
        assert_eq!(parse_millis("1.5s"), None);
    }

    #[test]
    fn syntax_and_unknown_keys_are_reported_with_their_line() {
        let e = err_of(&with("[[service]]", "[[service]]\ncolour = \"blue\""));
        assert_eq!(e.key, "");
        assert!(e.reason.contains("colour"), "{e}");
        assert!(e.reason.contains("line"), "{e}");
        let e = err_of("port = [");
        assert!(e.to_string().starts_with("t.toml: "));
    }

    #[test]
    fn dataplane_settings() {
        let c = load_config_str(LAB, "conf/lab.toml").unwrap();
        assert_eq!(c.dataplane.workers, vec![1]);
        let text = with("workers = [1]", "workers = [2, 3]\nrx_desc = 512")
            .replace("hugepages = false", "hugepages = true");
        let c = load_config_str(&text, "t.toml").unwrap();
        assert_eq!(c.dataplane.workers, vec![2, 3]);
        assert_eq!(c.dataplane.rx_desc, 512);
        assert!(c.dataplane.hugepages);
        let e = load_config_str(&with("workers = [1]", "workers = [1, 1]"), "t.toml").unwrap_err();
        assert_eq!(e.key, "dataplane.workers");
        let e = load_config_str(
            &with("workers = [1]", "workers = [1]\ntx_desc = 8"),
            "t.toml",
        )
        .unwrap_err();
        assert_eq!(e.key, "dataplane.tx_desc");
        let e = load_config_str(&with("workers = [1]", "cores = [1]"), "t.toml").unwrap_err();
        assert!(e.reason.contains("cores"), "{e}");
    }

    #[test]
    fn port_mtu_defaults_to_the_dataplane_mtu_and_is_checked() {
        let c = load_config_str(LAB, "conf/lab.toml").unwrap();
        assert!(c.spec.ports.iter().all(|p| p.mtu == 1500));
        let text = with("workers = [1]", "workers = [1]\nmtu = 9000").replace(
            "mac = \"02:00:00:00:02:01\"",
            "mac = \"02:00:00:00:02:01\"\nmtu = 1400",
        );
        let c = load_config_str(&text, "t.toml").unwrap();
        let mtus: Vec<u16> = c.spec.ports.iter().map(|p| p.mtu).collect();
        assert_eq!(mtus, vec![9000, 1400]);
        let text = LAB.replace(
            "mac = \"02:00:00:00:02:01\"",
            "mac = \"02:00:00:00:02:01\"\nmtu = 500",
        );
        let e = load_config_str(&text, "t.toml").unwrap_err();
        assert_eq!(e.key, "port.backend.mtu");
        assert!(e.reason.contains("576-9000"), "{e}");
        let e = load_config_str(
            &with("workers = [1]", "workers = [1]\nmtu = 9001"),
            "t.toml",
        )
        .unwrap_err();
        assert_eq!(e.key, "dataplane.mtu");
    }

    #[test]
    fn watchdog_bound_and_fault_injection() {
        let c = load_config_str(LAB, "conf/lab.toml").unwrap();
        assert_eq!(
            c.dataplane.watchdog,
            std::time::Duration::from_millis(DEFAULT_WATCHDOG_MS)
        );
        assert!(!c.control.fault_injection, "off unless asked for");
        let dp = |extra: &str| with("workers = [1]", &format!("workers = [1]\n{extra}"));
        let c = load_config_str(&dp("watchdog = \"250ms\""), "t.toml").unwrap();
        assert_eq!(c.dataplane.watchdog, std::time::Duration::from_millis(250));
        let c = load_config_str(&dp("watchdog = 2"), "t.toml").unwrap();
        assert_eq!(c.dataplane.watchdog, std::time::Duration::from_secs(2));
        for bad in [
            "watchdog = \"50ms\"",
            "watchdog = \"2m\"",
            "watchdog = \"soon\"",
        ] {
            let e = load_config_str(&dp(bad), "t.toml").unwrap_err();
            assert_eq!(e.key, "dataplane.watchdog", "{bad}: {e}");
        }
        let sock = "socket = \"/run/vpnlb/vpnlbd.sock\"";
        let text = with(sock, &format!("{sock}\nfault_injection = true"));
        assert!(
            load_config_str(&text, "t.toml")
                .unwrap()
                .control
                .fault_injection
        );
    }

    #[test]
    fn control_socket_must_be_an_absolute_path() {
        let c = load_config_str(LAB, "conf/lab.toml").unwrap();
        assert_eq!(
            c.control.socket,
            std::path::Path::new("/run/vpnlb/vpnlbd.sock")
        );
        let text = with(
            "socket = \"/run/vpnlb/vpnlbd.sock\"",
            "socket = \"vpnlbd.sock\"",
        );
        let e = load_config_str(&text, "t.toml").unwrap_err();
        assert_eq!(e.key, "control.socket");
        assert!(e.reason.contains("absolute"), "{e}");
    }

    #[test]
    fn control_socket_access_keys() {
        let c = load_config_str(LAB, "conf/lab.toml").unwrap();
        assert_eq!(c.control.socket_group, None);
        assert_eq!(c.control.readonly_socket, None);
        assert_eq!(c.control.readonly_socket_group, None);
        assert_eq!(
            c.control.client_idle_timeout,
            std::time::Duration::from_secs(30)
        );
        let sock = "socket = \"/run/vpnlb/vpnlbd.sock\"";
        let keys = |extra: &str| with(sock, &format!("{sock}\n{extra}"));
        let c = load_config_str(
            &keys(
                "socket_group = \"root\"\nreadonly_socket = \"/run/vpnlb/vpnlbd-ro.sock\"\n\
                 readonly_socket_group = \"root\"\nclient_idle_timeout = \"500ms\"",
            ),
            "t.toml",
        )
        .unwrap();
        let root = Some(Group {
            name: "root".into(),
            gid: 0,
        });
        assert_eq!(c.control.socket_group, root);
        assert_eq!(
            c.control.readonly_socket.as_deref(),
            Some(std::path::Path::new("/run/vpnlb/vpnlbd-ro.sock"))
        );
        assert_eq!(c.control.readonly_socket_group, root);
        assert_eq!(
            c.control.client_idle_timeout,
            std::time::Duration::from_millis(500)
        );
        let c = load_config_str(&keys("client_idle_timeout = 120"), "t.toml").unwrap();
        assert_eq!(
            c.control.client_idle_timeout,
            std::time::Duration::from_secs(120)
        );
        for (extra, key, reason) in [
            (
                "socket_group = \"vpnlb-no-such-group\"",
                "control.socket_group",
                "no group `vpnlb-no-such-group`",
            ),
            (
                "readonly_socket = \"/run/ro.sock\"\nreadonly_socket_group = \"nope-nope-x\"",
                "control.readonly_socket_group",
                "no group `nope-nope-x`",
            ),
            (
                "readonly_socket_group = \"root\"",
                "control.readonly_socket_group",
                "without control.readonly_socket",
            ),
            (
                "readonly_socket = \"ro.sock\"",
                "control.readonly_socket",
                "not an absolute path",
            ),
            (
                "readonly_socket = \"/run/vpnlb/vpnlbd.sock\"",
                "control.readonly_socket",
                "a path of its own",
            ),
            (
                "client_idle_timeout = \"soon\"",
                "control.client_idle_timeout",
                "not a duration",
            ),
            (
                "client_idle_timeout = \"10ms\"",
                "control.client_idle_timeout",
                "outside 100 ms",
            ),
        ] {
            let e = load_config_str(&keys(extra), "t.toml").unwrap_err();
            assert_eq!(e.key, key, "{extra}: {e}");
            assert!(e.reason.contains(reason), "{extra}: {e}");
            assert!(e.to_string().starts_with("t.toml: control."), "{e}");
        }
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90"), Some(90));
        assert_eq!(parse_duration("90s"), Some(90));
        assert_eq!(parse_duration("1h30m"), Some(5400));
        assert_eq!(parse_duration("2d"), Some(172_800));
        assert_eq!(parse_duration("1x"), None);
        assert_eq!(parse_duration("h"), None);
        assert_eq!(parse_duration("5m3"), None);
    }

    #[test]
    fn vlan_interfaces() {
        let text = with(
            "[[port]]\nname = \"backend\"",
            "[[port.vlan]]\nname = \"client-v100\"\nvid = 100\nrole = \"client\"\naddresses = [\"198.18.100.1/24\"]\n\n[[port.vlan]]\nname = \"client-qinq\"\nouter = 200\ninner = 300\nrole = \"client\"\n\n[[port]]\nname = \"backend\"",
        );
        let spec = load_str(&text, "t.toml").expect("vlan config");
        let v = spec
            .interfaces
            .iter()
            .find(|i| i.name == "client-v100")
            .unwrap();
        assert_eq!(v.vlan, Vlan::Single { vid: 100 });
        let q = spec
            .interfaces
            .iter()
            .find(|i| i.name == "client-qinq")
            .unwrap();
        assert_eq!(
            q.vlan,
            Vlan::Double {
                outer: 200,
                inner: 300
            }
        );
        let bad = with("[[port]]\nname = \"backend\"", "[[port.vlan]]\nname = \"v\"\nvid = 4095\nrole = \"client\"\n\n[[port]]\nname = \"backend\"");
        assert_eq!(err_of(&bad).key, "port.client.vlan.v.vid");
    }

    #[test]
    fn redirect_settings_and_their_errors() {
        let text = include_str!("../../conf/lab-redirect.toml");
        let c = load_config_str(text, "lab-redirect.toml").expect("the shipped redirect config");
        let svc = &c.spec.services[0];
        assert_eq!(
            (svc.mode, svc.route_to_gateways),
            (ServiceMode::Redirect, true)
        );
        let r = &c.redirect;
        assert_eq!(r.report_port, Some(5685));
        assert_eq!(r.report_key, b"vpnlb-lab-load-report-key");
        assert_eq!(r.report_max_age, std::time::Duration::from_secs(5));
        assert_eq!(r.establish_time, std::time::Duration::from_secs(2));
        assert_eq!(r.redirect_half_life, std::time::Duration::from_secs(600));
        // Otherwise it is conf/lab.toml.
        let lab = load_config_str(include_str!("../../conf/lab.toml"), "lab.toml").unwrap();
        let mut spec = c.spec.clone();
        spec.services[0].mode = ServiceMode::Nat;
        spec.services[0].route_to_gateways = false;
        assert_eq!(spec, lab.spec);
        assert_eq!(lab.redirect, RedirectSettings::default());
        let bad = |from: &str, to: &str| {
            assert!(text.contains(from), "{from}");
            load_config_str(&text.replacen(from, to, 1), "r.toml").unwrap_err()
        };
        let e = bad("mode = \"redirect\"", "mode = \"dsr\"");
        assert_eq!(e.key, "service.vpn.mode", "{e}");
        let e = bad("mode = \"redirect\"", "mode = \"nat\"");
        assert_eq!(e.key, "service.vpn.route_to_gateways", "{e}");
        let e = bad("protocols = [\"ike\", ", "protocols = [");
        assert_eq!(e.key, "service.vpn.mode", "{e}");
        let e = bad(
            "report_key = \"vpnlb-lab-load-report-key\"",
            "report_key = \"short\"",
        );
        assert_eq!(e.key, "redirect.report_key", "{e}");
        let e = bad("report_max_age = \"5s\"", "report_max_age = \"5ms\"");
        assert_eq!(e.key, "redirect.report_max_age", "{e}");
        let e = bad("report_port = 5685", "report_port = 0");
        assert_eq!(e.key, "redirect.report_port", "{e}");
        let no_exception =
            text.replacen("[exception]\n", "", 1)
                .replacen("netns = \"vlb-app\"\n", "", 1);
        let e = load_config_str(&no_exception, "r.toml").unwrap_err();
        assert_eq!(e.key, "redirect.report_port", "{e}");
        let e = bad("establish_time = \"2s\"", "establish_time = 2\nbogus = 1");
        assert!(e.reason.contains("bogus"), "{e}");
    }

    #[test]
    fn metrics_settings_and_their_errors() {
        let text = include_str!("../../conf/lab.toml");
        let c = load_config_str(text, "lab.toml").unwrap();
        assert_eq!(
            c.metrics,
            MetricsSettings {
                listen: Some("198.19.0.1:9469".parse().unwrap()),
                namespace: MetricsNamespace::Exception,
            }
        );
        let bad = |from: &str, to: &str| {
            assert!(text.contains(from), "{from}");
            load_config_str(&text.replacen(from, to, 1), "lab.toml").unwrap_err()
        };
        for (from, to) in [
            ("listen = \"198.19.0.1:9469\"", "listen = \"198.19.0.1\""),
            ("listen = \"198.19.0.1:9469\"", "listen = \"[2001:2::1]\""),
            ("listen = \"198.19.0.1:9469\"", "# no listen"),
        ] {
            let e = bad(from, to);
            assert_eq!(
                (e.file.as_str(), e.key.as_str()),
                ("lab.toml", "metrics.listen"),
                "{e}"
            );
        }
        let e = bad("namespace = \"exception\"", "namespace = \"vlb-app\"");
        assert_eq!(e.key, "metrics.namespace", "{e}");
        let e = bad("[exception]\n", "[exception]\nenabled = false\n");
        assert_eq!(e.key, "metrics.namespace", "{e}");
        let v6 = text.replacen("198.19.0.1:9469", "[2001:2:0:2::1]:9469", 1);
        let c = load_config_str(&v6, "lab.toml").unwrap();
        assert_eq!(
            c.metrics.listen,
            Some("[2001:2:0:2::1]:9469".parse().unwrap())
        );
        // Without the section: not served.
        let c = load_config_str(include_str!("../../conf/bench.toml"), "bench.toml").unwrap();
        assert_eq!(c.metrics, MetricsSettings::default());
    }

    #[test]
    fn ha_pair_settings_and_their_errors() {
        let text = include_str!("../../conf/lab-pair-a.toml");
        let c = load_config_str(text, "lab-pair-a.toml").expect("the shipped pair config");
        let h = c.ha.as_ref().expect("[ha]");
        assert_eq!((h.vrid, h.priority), (51, 200));
        assert_eq!(h.advert_interval, std::time::Duration::from_millis(100));
        assert_eq!(h.peer, Some("198.19.0.3".parse().unwrap()));
        assert_eq!(h.heartbeat, std::time::Duration::from_millis(20));
        // The four configured, and the IPv6 routers' link-local address on both interfaces.
        let floating = &c.spec.ha.as_ref().unwrap().floating;
        assert_eq!(floating.len(), 6);
        let ll: IpAddr = "fe80::200:5eff:fe00:233".parse().unwrap();
        assert_eq!(floating.iter().filter(|(_, a)| *a == ll).count(), 2);
        let bad = |from: &str, to: &str| {
            assert!(text.contains(from), "{from}");
            load_config_str(&text.replacen(from, to, 1), "p.toml").unwrap_err()
        };
        assert_eq!(bad("vrid = 51", "vrid = 0").key, "ha.vrid");
        assert_eq!(bad("priority = 200", "priority = 0").key, "ha.priority");
        let e = bad("advert_interval = \"100ms\"", "advert_interval = \"105ms\"");
        assert_eq!(e.key, "ha.advert_interval");
        assert!(e.reason.contains("centiseconds"), "{e}");
        let e = bad("\"198.19.0.1\", \"2001", "\"198.20.0.1\", \"2001");
        assert_eq!(e.key, "ha.floating");
        let e = bad(
            "sync_key = \"vpnlb-lab-pair-sync-key-not-secret\"",
            "sync_key = \"short\"",
        );
        assert_eq!(e.key, "ha.sync_key");
        let e = bad("dead_after = 3", "dead_after = 1");
        assert_eq!(e.key, "ha.dead_after");
        // The peer's budget, the bulk pacing and the preemption hold: defaults, and errors.
        assert_eq!(h.sync_rate_pps, DEFAULT_SYNC_RATE_PPS);
        assert_eq!(h.sync_bulk_rate, crate::sync::session::DEFAULT_BULK_RATE);
        assert_eq!(h.sync_hold_max, std::time::Duration::from_secs(60));
        let set = |line: &str| {
            load_config_str(
                &text.replacen("dead_after = 3", &format!("dead_after = 3\n{line}"), 1),
                "p.toml",
            )
        };
        let h2 = set("sync_rate_pps = 50000\nsync_bulk_rate = 20\nsync_hold_max = \"2m\"")
            .expect("valid sync settings")
            .ha
            .unwrap();
        assert_eq!((h2.sync_rate_pps, h2.sync_bulk_rate), (50_000, 20));
        assert_eq!(h2.sync_hold_max, std::time::Duration::from_secs(120));
        let e = set("sync_rate_pps = 10").unwrap_err();
        assert_eq!(e.key, "ha.sync_rate_pps");
        assert!(e.reason.contains("outside"), "{e}");
        let e = set("sync_bulk_rate = 0").unwrap_err();
        assert_eq!(e.key, "ha.sync_bulk_rate");
        let e = set("sync_rate_pps = 5000\nsync_bulk_rate = 10").unwrap_err();
        assert_eq!(e.key, "ha.sync_bulk_rate");
        assert!(e.reason.contains("budget"), "{e}");
        let e = set("sync_hold_max = \"soon\"").unwrap_err();
        assert_eq!(e.key, "ha.sync_hold_max");
        // Sync runs on the appliance's own addresses: no exception path, no peer.
        let e = bad("[exception]\n", "[exception_off]\n");
        assert!(
            e.key == "ha.peer" || e.reason.contains("exception_off"),
            "{e}"
        );
        let no_exception =
            text.replacen("[exception]\n", "", 1)
                .replacen("netns = \"vlb-app\"\n", "", 1);
        let e = load_config_str(&no_exception, "p.toml").unwrap_err();
        assert_eq!(e.key, "ha.peer", "{e}");
        // A keepalived peer: no peer line, no sync, no exception path needed.
        let keepalived = no_exception
            .replacen("peer = \"198.19.0.3\"\n", "", 1)
            .replacen("sync_key = \"vpnlb-lab-pair-sync-key-not-secret\"\n", "", 1);
        let c = load_config_str(&keepalived, "p.toml").expect("VRRP only");
        assert_eq!(c.ha.unwrap().peer, None);
    }

    #[test]
    fn maglev_size_must_be_a_large_prime() {
        let e = err_of(&format!("maglev_table_size = 65536\n{LAB}"));
        assert_eq!(e.key, "maglev_table_size");
        let e = err_of(&format!("maglev_table_size = 1021\n{LAB}"));
        assert_eq!(e.key, "maglev_table_size");
        assert!(load_str(&format!("maglev_table_size = 131071\n{LAB}"), "t.toml").is_ok());
    }
}
