//! Redirect mode on the control thread: receives the gateways' load reports (in the exception
//! path's namespace, on the appliance's own addresses) and keeps the loads on the snapshot's
//! board up to date.

use std::net::{Ipv6Addr, SocketAddr, UdpSocket};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use dataplane::model::{ServiceMode, Snapshot};
use serde_json::{json, Value};
use tracing::{debug, info, warn};

use crate::config::RedirectSettings;
use crate::loads::{self, LoadModel, LoadView, Reject, MAX_REPORT_LEN};

/// Reports read per control-loop pass at most (the rest wait for the next pass).
const REPORTS_PER_POLL: usize = 64;

/// Counts of load reports, by outcome.
#[derive(Clone, Debug, Default)]
pub struct ReportCounters {
    pub accepted: u64,
    /// Indexed by `Reject as usize`.
    pub rejected: [u64; Reject::COUNT],
}

/// Why the load report socket could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum LoadReportsError {
    /// The exception path's namespace cannot be entered.
    #[error("redirect: cannot enter the exception namespace: {0}")]
    Netns(#[source] std::io::Error),
    /// The report socket cannot be bound.
    #[error("redirect: load report socket on UDP {port}: {source}")]
    Bind { port: u16, source: std::io::Error },
    /// The report socket cannot be made non-blocking.
    #[error("redirect: load report socket: {0}")]
    Socket(#[source] std::io::Error),
}

pub struct LoadReports {
    socket: Option<UdpSocket>,
    key: Vec<u8>,
    model: LoadModel,
    counters: ReportCounters,
}

impl LoadReports {
    /// `None` when no service redirects. Binds the report socket (in `netns` if given) when
    /// `[redirect] report_port` is set.
    pub fn new(
        settings: &RedirectSettings,
        snap: &Snapshot,
        netns: Option<&str>,
    ) -> Result<Option<LoadReports>, LoadReportsError> {
        if !snap
            .services
            .iter()
            .any(|s| s.spec.mode == ServiceMode::Redirect)
        {
            return Ok(None);
        }
        let socket = match settings.report_port {
            Some(port) => {
                let _netns = netns
                    .map(netdev::netns::enter)
                    .transpose()
                    .map_err(LoadReportsError::Netns)?;
                // Dual-stack: IPv4 reports arrive as IPv4-mapped sources.
                let s = UdpSocket::bind(SocketAddr::from((Ipv6Addr::UNSPECIFIED, port)))
                    .map_err(|source| LoadReportsError::Bind { port, source })?;
                s.set_nonblocking(true).map_err(LoadReportsError::Socket)?;
                info!(port, "listening for gateway load reports");
                Some(s)
            }
            None => None,
        };
        Ok(Some(LoadReports {
            socket,
            key: settings.report_key.clone(),
            model: LoadModel::new(settings.clone(), snap.loads.clone(), Instant::now()),
            counters: ReportCounters::default(),
        }))
    }

    /// Takes a reload's `[redirect]` settings: reports are verified with the new key from the
    /// next one on (a rotated key takes effect at once; reports signed with the old one are
    /// refused as `bad-mac`). The port is the caller's to keep: changing it needs a restart.
    pub fn set_settings(&mut self, settings: &RedirectSettings) {
        self.key.clone_from(&settings.report_key);
        self.model.set_settings(settings.clone());
    }

    /// Reads waiting reports and brings every load on `snap`'s board up to date.
    pub fn poll(&mut self, snap: &Snapshot, now: Instant) {
        self.model.follow(&snap.loads, now);
        let mut buf = [0u8; MAX_REPORT_LEN + 1];
        for _ in 0..REPORTS_PER_POLL {
            let Some(socket) = &self.socket else { break };
            let (n, from) = match socket.recv_from(&mut buf) {
                Ok(r) => r,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    warn!(error = %e, "load report socket");
                    break;
                }
            };
            let from = from.ip().to_canonical();
            let now_ms = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, crate::units::millis);
            let outcome = loads::parse(&buf[..n], &self.key).and_then(|r| {
                let addresses = |s: usize, g: usize| {
                    snap.services
                        .get(s)
                        .and_then(|v| v.spec.gateways.get(g))
                        .map(|g| {
                            [g.ipv4.map(Into::into), g.ipv6.map(Into::into)]
                                .into_iter()
                                .flatten()
                                .collect()
                        })
                        .unwrap_or_default()
                };
                self.model
                    .accept(&r, from, now, now_ms, addresses)
                    .map(|_| r)
            });
            match outcome {
                Ok(r) => {
                    self.counters.accepted += 1;
                    debug!(gateway = %r.gateway, tunnels = r.tunnels, %from, "load report");
                }
                Err(why) => {
                    self.counters.rejected[why as usize] += 1;
                    debug!(%from, reason = why.name(), "load report refused");
                }
            }
        }
        self.model.update(now);
    }

    pub fn view(&self, service: usize, gateway: usize, now: Instant) -> LoadView {
        self.model.view(service, gateway, now)
    }

    pub fn counters(&self) -> &ReportCounters {
        &self.counters
    }

    /// `show redirect`'s report part.
    pub fn status(&self) -> Value {
        let rejected: serde_json::Map<String, Value> = Reject::ALL
            .iter()
            .zip(self.counters.rejected)
            .map(|(r, n)| (r.name().to_string(), json!(n)))
            .collect();
        json!({
            "listening": self.socket.as_ref().and_then(|s| s.local_addr().ok()).map(|a| a.port()),
            "accepted": self.counters.accepted,
            "rejected": rejected,
        })
    }
}
