//! The systemd notify protocol (`sd_notify(3)`), for `Type=notify` units: one datagram per
//! message to the Unix socket named by `$NOTIFY_SOCKET` (a path, or `@name` for the abstract
//! namespace), `KEY=VALUE` lines. Without the variable (not started by systemd) every call is a
//! no-op. Sending never blocks the control thread: the socket is non-blocking and a datagram
//! the manager has no room for is dropped (the next status or watchdog ping follows soon).
//!
//! - `READY=1` once the workers forward; `RELOADING=1` (with `MONOTONIC_USEC`) when a reload
//!   begins and `READY=1` when it is over, applied or refused;
//! - `STATUS=` a one-line summary, refreshed every few seconds;
//! - `WATCHDOG=1` every half `$WATCHDOG_USEC` (systemd's `WatchdogSec=`), only while the
//!   daemon's own watchdog finds every worker and the health checker progressing: a stalled
//!   worker stops the pings, and systemd restarts the daemon when the stall outlasts
//!   `WatchdogSec=`.

use std::io;
use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

use tracing::{debug, info, warn};

/// The connection to the service manager, if there is one.
#[derive(Debug, Default)]
pub struct Notifier {
    socket: Option<(UnixDatagram, std::os::unix::net::SocketAddr)>,
    /// Half of `$WATCHDOG_USEC`, when systemd asks for pings (for this process).
    watchdog_every: Option<Duration>,
    last_ping: Option<Instant>,
    /// Messages the manager's socket refused (full, gone).
    pub failed: u64,
}

/// Why `$NOTIFY_SOCKET` cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    #[error("NOTIFY_SOCKET `{0}`: not an absolute path or @abstract name")]
    BadAddress(String),
    #[error("NOTIFY_SOCKET: {0}")]
    Socket(#[from] io::Error),
}

impl Notifier {
    /// From the environment (`$NOTIFY_SOCKET`, `$WATCHDOG_USEC`, `$WATCHDOG_PID`); a
    /// notifier that does nothing when systemd did not start us. An unusable socket is
    /// logged and makes a do-nothing notifier too: the daemon runs either way.
    pub fn from_env() -> Notifier {
        let Some(addr) = std::env::var_os("NOTIFY_SOCKET") else {
            return Notifier::default();
        };
        let addr = addr.to_string_lossy().into_owned();
        let watchdog_every = watchdog_interval(
            std::env::var("WATCHDOG_USEC").ok().as_deref(),
            std::env::var("WATCHDOG_PID").ok().as_deref(),
            std::process::id(),
        );
        match Self::connect(&addr) {
            Ok(socket) => {
                info!(socket = %addr, watchdog_ms = watchdog_every.map(|d| d.as_millis()), "systemd notify socket");
                Notifier {
                    socket: Some(socket),
                    watchdog_every,
                    last_ping: None,
                    failed: 0,
                }
            }
            Err(e) => {
                warn!(error = %e, "systemd notifications off");
                Notifier::default()
            }
        }
    }

    fn connect(addr: &str) -> Result<(UnixDatagram, std::os::unix::net::SocketAddr), NotifyError> {
        let target = if let Some(name) = addr.strip_prefix('@') {
            use std::os::linux::net::SocketAddrExt;
            std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())?
        } else if addr.starts_with('/') {
            std::os::unix::net::SocketAddr::from_pathname(addr)?
        } else {
            return Err(NotifyError::BadAddress(addr.to_string()));
        };
        let socket = UnixDatagram::unbound()?;
        socket.set_nonblocking(true)?;
        Ok((socket, target))
    }

    /// Whether systemd listens.
    pub fn is_active(&self) -> bool {
        self.socket.is_some()
    }

    /// Sends `message` (`KEY=VALUE` lines).
    pub fn send(&mut self, message: &str) {
        let Some((socket, target)) = &self.socket else {
            return;
        };
        if let Err(e) = socket.send_to_addr(message.as_bytes(), target) {
            self.failed += 1;
            debug!(error = %e, "systemd notification not sent");
        }
    }

    /// The workers forward: `READY=1` with a status line.
    pub fn ready(&mut self, status: &str) {
        self.send(&format!("READY=1\nSTATUS={}", one_line(status)));
    }

    /// A reload begins (`RELOADING=1` with the monotonic clock, as systemd 253 wants it).
    pub fn reloading(&mut self) {
        let usec = monotonic_usec();
        self.send(&format!("RELOADING=1\nMONOTONIC_USEC={usec}"));
    }

    /// A status line (`systemctl status` shows it).
    pub fn status(&mut self, status: &str) {
        self.send(&format!("STATUS={}", one_line(status)));
    }

    /// Pings systemd's watchdog when it is due and `healthy` (the daemon's own watchdog finds
    /// every thread progressing); returns whether it pinged.
    pub fn watchdog(&mut self, now: Instant, healthy: bool) -> bool {
        let Some(every) = self.watchdog_every else {
            return false;
        };
        if !healthy
            || self
                .last_ping
                .is_some_and(|t| now.duration_since(t) < every)
        {
            return false;
        }
        self.last_ping = Some(now);
        self.send("WATCHDOG=1");
        true
    }
}

/// Half of `$WATCHDOG_USEC` (systemd's advice), if it is set, valid, and meant for this process
/// (`$WATCHDOG_PID` unset or ours).
fn watchdog_interval(usec: Option<&str>, pid: Option<&str>, me: u32) -> Option<Duration> {
    if pid.is_some_and(|p| p.parse::<u32>().ok() != Some(me)) {
        return None;
    }
    let usec: u64 = usec?.parse().ok().filter(|u| *u > 0)?;
    Some(Duration::from_micros(usec / 2))
}

/// A status is one line: newlines would start another `KEY=VALUE`.
fn one_line(s: &str) -> String {
    s.replace('\n', " ")
}

/// `CLOCK_MONOTONIC` in microseconds, the clock systemd compares `MONOTONIC_USEC` with.
fn monotonic_usec() -> u64 {
    netdev::clock::monotonic_usec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_watchdog_interval_is_half_and_only_for_this_process() {
        assert_eq!(
            watchdog_interval(Some("10000000"), None, 7),
            Some(Duration::from_secs(5))
        );
        assert_eq!(
            watchdog_interval(Some("10000000"), Some("7"), 7),
            Some(Duration::from_secs(5))
        );
        assert_eq!(watchdog_interval(Some("10000000"), Some("8"), 7), None);
        assert_eq!(watchdog_interval(Some("0"), None, 7), None);
        assert_eq!(watchdog_interval(Some("soon"), None, 7), None);
        assert_eq!(watchdog_interval(None, None, 7), None);
    }

    #[test]
    fn messages_reach_a_listener_and_pings_follow_the_watchdog() {
        let dir = std::env::temp_dir().join(format!("vpnlb-notify-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("notify.sock");
        let _ = std::fs::remove_file(&path);
        let listener = UnixDatagram::bind(&path).unwrap();
        listener
            .set_read_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        let mut n = Notifier {
            socket: Some(Notifier::connect(path.to_str().unwrap()).unwrap()),
            watchdog_every: Some(Duration::from_millis(100)),
            last_ping: None,
            failed: 0,
        };
        let mut buf = [0u8; 512];
        let mut recv = || {
            let len = listener.recv(&mut buf).unwrap();
            String::from_utf8_lossy(&buf[..len]).into_owned()
        };
        n.ready("master\n3 gateways");
        assert_eq!(recv(), "READY=1\nSTATUS=master 3 gateways");
        n.reloading();
        let m = recv();
        assert!(m.starts_with("RELOADING=1\nMONOTONIC_USEC="), "{m}");
        let t0 = Instant::now();
        assert!(n.watchdog(t0, true));
        assert_eq!(recv(), "WATCHDOG=1");
        assert!(!n.watchdog(t0 + Duration::from_millis(50), true), "not due");
        assert!(
            !n.watchdog(t0 + Duration::from_millis(150), false),
            "stalled"
        );
        assert!(n.watchdog(t0 + Duration::from_millis(150), true));
        assert_eq!(recv(), "WATCHDOG=1");
        assert_eq!(n.failed, 0);
        // A manager gone: counted, never an error for the daemon.
        drop(listener);
        std::fs::remove_file(&path).unwrap();
        n.status("x");
        assert_eq!(n.failed, 1);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn no_socket_no_notifications() {
        let mut n = Notifier::default();
        assert!(!n.is_active());
        n.ready("x");
        assert!(!n.watchdog(Instant::now(), true));
    }
}
