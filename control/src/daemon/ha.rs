//! The HA pair on the control thread: VRRPv3 adverts in and out through the dataplane, and
//! mastership handed to the workers as snapshots.
//!
//! One virtual router per interface and family that carries virtual addresses (client side:
//! the VIPs; elsewhere: the floating addresses), all with the configured VRID and priority, as
//! a sync group: the first of them (the client side's IPv4 router, else the first there is)
//! leads. Its state machine decides mastership for the whole appliance, and while it is master
//! every router of the group advertises. A peer that is itself a sync group (vpnlbd, or
//! keepalived with a `vrrp_sync_group`) converges the same way, and the client-side VIPs and
//! the backend-side floating address never part.

use std::net::IpAddr;
use std::time::Instant;

use dataplane::emit::{self, L2};
use dataplane::model::{ApplianceSpec, Role};
use dataplane::wire::ethernet::EthernetAddress;
use dataplane::wire::vrrp::{self as wire, Family, VrrpRepr};
use serde::Serialize;
use serde_json::{json, Value};
use tracing::{info, warn};

use super::control::{Control, VrrpFrame};
use super::loglimit::LogLimit;
use crate::config::HaSettings;
use crate::vrrp::{self, Action, State, Vrrp, VrrpConfig, VrrpConfigError};

/// Why the HA pair's routers cannot be set up from the configuration.
#[derive(Debug, thiserror::Error)]
pub enum HaError {
    /// `ha.advert_interval` does not fit VRRP's centiseconds.
    #[error("ha.advert_interval: too long")]
    AdvertIntervalTooLong,
    /// An interface with virtual IPv4 addresses has no IPv4 address of its own.
    #[error(
        "ha: interface {interface} carries virtual IPv4 addresses but has no IPv4 address of its own to advertise from"
    )]
    NoPrimary { interface: String },
    /// No VIP and no floating address.
    #[error("ha: no VIP or floating address to protect")]
    NothingToProtect,
    /// A router's VRRP configuration.
    #[error(transparent)]
    Vrrp(#[from] VrrpConfigError),
    /// A reload would add or remove a virtual router, or change its primary address.
    #[error(
        "ha: the virtual routers (interfaces, families, primary addresses) changed; that needs a restart"
    )]
    RoutersChanged,
}

/// One virtual router of the group.
struct Router {
    interface: u16,
    port: u16,
    vlan: dataplane::wire::ethernet::Vlan,
    cfg: VrrpConfig,
    /// Adverts received for this router (the leader's go through its machine).
    adverts_in: u64,
    errors: u64,
}

/// Counters of the group beyond the leader's machine.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct HaCounters {
    /// Advert frames sent (all routers).
    pub frames_out: u64,
    /// Advert frames that could not be sent (no mbuf, full ring).
    pub frames_failed: u64,
    /// VRRP messages on an interface and family with no router of ours.
    pub unknown_router: u64,
    /// Times the peer's heartbeat said it was gone before VRRP did.
    pub peer_dead_takeovers: u64,
    /// Times the watchdog made this appliance step down (a worker or the health checker
    /// stalled), and whether it is stepped down now.
    pub watchdog_step_downs: u64,
    pub stepped_down: bool,
}

/// VRRP's state and counters, for Prometheus.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VrrpMetrics {
    /// Whether this appliance is the master.
    pub master: bool,
    /// State changes.
    pub transitions: u64,
    /// Valid adverts received (the leader's router).
    pub adverts_in: u64,
    /// Advert frames sent (all routers).
    pub adverts_out: u64,
    /// Messages rejected (all routers).
    pub errors: u64,
}

/// A reload's routers, checked by [`Ha::stage`].
pub struct StagedRouters(Vec<Router>);

/// The routers of `spec`, the client side's IPv4 router first (it leads the group).
fn routers(settings: &HaSettings, spec: &ApplianceSpec) -> Result<Vec<Router>, HaError> {
    let mut routers = Vec::new();
    let cs = u16::try_from(settings.advert_interval.as_millis() / 10)
        .map_err(|_| HaError::AdvertIntervalTooLong)?;
    // Interface ids are u16: the configuration refuses more interfaces.
    for (itf, i) in spec.interfaces.iter().zip(0..=u16::MAX) {
        let port = &spec.ports[usize::from(itf.port)];
        for v6 in [false, true] {
            let mut addresses: Vec<IpAddr> = Vec::new();
            if itf.role == Role::Client {
                for s in &spec.services {
                    let vip = if v6 {
                        s.vip6.map(IpAddr::V6)
                    } else {
                        s.vip4.map(IpAddr::V4)
                    };
                    addresses.extend(vip.filter(|a| !addresses.contains(a)));
                }
            }
            let floating = spec.ha.iter().flat_map(|h| &h.floating);
            addresses.extend(
                floating
                    .filter(|(f, a)| *f == i && a.is_ipv6() == v6)
                    .map(|(_, a)| *a),
            );
            if addresses.is_empty() {
                continue;
            }
            // RFC 5798 §5.2.9: an IPv6 router's first address is its link-local one.
            addresses.sort_by_key(|a| !matches!(a, IpAddr::V6(v) if v.is_unicast_link_local()));
            // RFC 5798 §5.1.2.1: IPv6 adverts come from the link-local address.
            let primary = if v6 {
                Some(IpAddr::V6(wire::link_local(port.mac)))
            } else {
                itf.addresses.iter().map(|c| c.addr).find(IpAddr::is_ipv4)
            };
            let Some(primary) = primary else {
                return Err(HaError::NoPrimary {
                    interface: itf.name.clone(),
                });
            };
            let cfg = VrrpConfig {
                vrid: settings.vrid,
                priority: settings.priority,
                advert_interval_cs: cs,
                preempt: settings.preempt,
                preempt_delay: settings.preempt_delay,
                addresses,
                primary,
            };
            cfg.check()?;
            routers.push(Router {
                interface: i,
                port: itf.port,
                vlan: itf.vlan,
                cfg,
                adverts_in: 0,
                errors: 0,
            });
        }
    }
    if routers.is_empty() {
        return Err(HaError::NothingToProtect);
    }
    // The client side's IPv4 router leads, if there is one.
    if let Some(p) = routers.iter().position(|r| r.cfg.family() == Family::Ipv4) {
        routers.swap(0, p);
    }
    Ok(routers)
}

pub struct Ha {
    settings: HaSettings,
    routers: Vec<Router>,
    machine: Vrrp,
    counters: HaCounters,
    since: Instant,
    /// When the last valid advert arrived (the leader's router).
    last_advert: Option<Instant>,
    /// Rejected adverts are anyone's to send: logged at most once a second.
    rejected_log: LogLimit,
    /// How regularly this appliance's adverts went out while master.
    timing: AdvertTiming,
}

/// The gaps between a master's adverts: what a backup sees. A control thread that blocks
/// shows here first (a gap of 3 intervals and the backup takes over).
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct AdvertTiming {
    /// The longest gap between two adverts, in microseconds.
    pub gap_max_us: u64,
    /// Gaps longer than 1.5 advert intervals.
    pub late: u64,
    #[serde(skip)]
    last: Option<Instant>,
}

impl AdvertTiming {
    fn sent(&mut self, now: Instant, interval: std::time::Duration) {
        if let Some(last) = self.last {
            let gap = now.saturating_duration_since(last);
            self.gap_max_us = self.gap_max_us.max(crate::units::micros(gap));
            if gap > interval * 3 / 2 {
                self.late += 1;
            }
        }
        self.last = Some(now);
    }
}

impl Ha {
    /// The routers of `spec` (VIPs and floating addresses, by interface and family).
    pub fn new(settings: &HaSettings, spec: &ApplianceSpec) -> Result<Ha, HaError> {
        let routers = routers(settings, spec)?;
        let machine = Vrrp::new(routers[0].cfg.clone())?;
        Ok(Ha {
            settings: settings.clone(),
            routers,
            machine,
            counters: HaCounters::default(),
            since: Instant::now(),
            last_advert: None,
            rejected_log: LogLimit::default(),
            timing: AdvertTiming::default(),
        })
    }

    /// A reload's routers for `spec`, checked and not yet used: the same routers (interface and
    /// family) with possibly other virtual addresses. Anything else needs a restart.
    pub fn stage(&self, spec: &ApplianceSpec) -> Result<StagedRouters, HaError> {
        let new = routers(&self.settings, spec)?;
        let shape = |r: &[Router]| -> Vec<(u16, Family, IpAddr)> {
            r.iter()
                .map(|r| (r.interface, r.cfg.family(), r.cfg.primary))
                .collect()
        };
        if shape(&new) != shape(&self.routers) {
            return Err(HaError::RoutersChanged);
        }
        Ok(StagedRouters(new))
    }

    /// Takes staged routers: the adverts carry their addresses from now on (a master sends one
    /// at once, so the backup hears the new list without waiting an interval).
    pub fn relayout(&mut self, ctl: &mut Control, staged: StagedRouters) {
        let StagedRouters(new) = staged;
        let changed = new
            .iter()
            .zip(&self.routers)
            .any(|(n, o)| n.cfg.addresses != o.cfg.addresses);
        for (r, n) in self.routers.iter_mut().zip(new) {
            r.cfg = n.cfg;
        }
        // `stage` checked the leader's family, VRID and primary: only addresses differ.
        if let Err(e) = self.machine.reconfigure(self.routers[0].cfg.clone()) {
            warn!(error = %e, "VRRP: reloaded addresses refused");
        }
        if changed {
            info!(
                vrid = self.settings.vrid,
                "VRRP: virtual addresses reloaded"
            );
            if self.is_master() {
                self.advertise(ctl, self.machine.priority());
            }
        }
    }

    /// Initialize → Backup (or Master for the address owner).
    pub fn start(&mut self, ctl: &mut Control, now: Instant) {
        self.since = now;
        let actions = self.machine.start(now);
        info!(
            vrid = self.settings.vrid,
            priority = self.settings.priority,
            routers = self.routers.len(),
            "VRRP started"
        );
        self.apply(ctl, actions);
    }

    /// Received adverts, then timers.
    pub fn poll(&mut self, ctl: &mut Control, now: Instant) {
        for f in ctl.take_vrrp() {
            self.receive(ctl, now, &f);
        }
        let actions = self.machine.poll(now);
        self.apply(ctl, actions);
    }

    /// The master's heartbeat stopped: a backup takes over as soon as the master has missed
    /// an advert too (2 of its intervals without one), well before VRRP's own 3 intervals +
    /// skew. Both signals together: a master whose control thread was only descheduled for a
    /// while (a loaded machine) misses heartbeats sooner than adverts, and must not lose the
    /// VIPs. Called on every round while the heartbeat is missing.
    pub fn peer_dead(&mut self, ctl: &mut Control, now: Instant) {
        let late = self.machine.master_adver_interval() * 2;
        let adverts_late = self
            .last_advert
            .is_none_or(|t| now.saturating_duration_since(t) >= late);
        if self.machine.state() == State::Backup && adverts_late {
            self.counters.peer_dead_takeovers += 1;
            warn!("peer heartbeat lost: taking over before VRRP's master-down timer");
            let actions = self.machine.peer_dead(now);
            self.apply(ctl, actions);
        }
    }

    /// Leaving: a master advertises priority 0 so the backup takes over at once.
    pub fn shutdown(&mut self, ctl: &mut Control) {
        let actions = self.machine.shutdown();
        self.apply(ctl, actions);
    }

    /// The watchdog says a worker or the health checker is stalled (`true`), or that none is
    /// any more. Stalled: step down (a master advertises priority 0, so the backup takes over
    /// after its skew time, and stays backup at priority 1 while the stall lasts; see
    /// `Vrrp::step_down`). Over: back to the configured priority, as backup: it preempts as
    /// `[ha] preempt` says, once it holds the master's table again (the caller asks the sync
    /// for it).
    pub fn watchdog(&mut self, ctl: &mut Control, now: Instant, stalled: bool) {
        if stalled == self.counters.stepped_down {
            return;
        }
        self.counters.stepped_down = stalled;
        let actions = if stalled {
            self.counters.watchdog_step_downs += 1;
            warn!(
                vrid = self.settings.vrid,
                was_master = self.is_master(),
                "watchdog: stepping down (priority 0 advert, backup at priority 1 while stalled)"
            );
            self.machine.step_down(now)
        } else {
            info!(
                vrid = self.settings.vrid,
                priority = self.settings.priority,
                "watchdog: stall over, back to the configured priority"
            );
            self.machine.set_priority(now, self.settings.priority)
        };
        self.apply(ctl, actions);
    }

    /// Puts preemption off while this appliance pulls the master's affinity table.
    pub fn hold_preemption(&mut self, held: bool) {
        self.machine.hold_preemption(held);
    }

    pub fn is_master(&self) -> bool {
        self.machine.state() == State::Master
    }

    fn receive(&mut self, ctl: &mut Control, now: Instant, f: &VrrpFrame) {
        let family = if f.src.is_ipv6() {
            Family::Ipv6
        } else {
            Family::Ipv4
        };
        let Some(r) = self
            .routers
            .iter()
            .position(|r| r.interface == f.interface && r.cfg.family() == family)
        else {
            self.counters.unknown_router += 1;
            return;
        };
        if r == 0 {
            match self.machine.receive(now, f.ttl, f.src, f.dst, &f.vrrp) {
                Ok(actions) => {
                    self.routers[0].adverts_in += 1;
                    self.last_advert = Some(now);
                    self.apply(ctl, actions);
                }
                Err(e) => {
                    self.routers[0].errors += 1;
                    if e != vrrp::AdvertError::WrongVrid {
                        if let Some(suppressed) = self.rejected_log.allow(now) {
                            warn!(error = e.as_str(), src = %f.src, suppressed, "VRRP advert rejected");
                        }
                    }
                }
            }
        } else {
            match vrrp::validate(&self.routers[r].cfg, f.ttl, f.src, f.dst, &f.vrrp) {
                Ok(_) => self.routers[r].adverts_in += 1,
                Err(_) => self.routers[r].errors += 1,
            }
        }
    }

    fn apply(&mut self, ctl: &mut Control, actions: Vec<Action>) {
        for a in actions {
            match a {
                Action::SendAdvert { priority } => {
                    self.timing
                        .sent(Instant::now(), self.settings.advert_interval);
                    self.advertise(ctl, priority);
                }
                Action::BecomeMaster => {
                    info!(vrid = self.settings.vrid, "VRRP master: taking the VIPs");
                    ctl.set_master(true);
                }
                Action::BecomeBackup => {
                    // A gap while backup is no late advert.
                    self.timing.last = None;
                    info!(
                        vrid = self.settings.vrid,
                        master = ?self.machine.master(),
                        "VRRP backup: giving up the VIPs"
                    );
                    ctl.set_master(false);
                }
            }
        }
    }

    /// One advert per router of the group, each from the virtual MAC of its family.
    fn advertise(&mut self, ctl: &mut Control, priority: u8) {
        for r in &self.routers {
            let v6 = r.cfg.family() == Family::Ipv6;
            let advert = VrrpRepr {
                vrid: r.cfg.vrid,
                priority,
                max_adver_int: r.cfg.advert_interval_cs,
                addresses: r.cfg.addresses.clone(),
            };
            let l2 = L2 {
                src: wire::virtual_mac(r.cfg.vrid, v6),
                dst: multicast_mac(r.cfg.family().group()),
                vlan: r.vlan,
            };
            let Ok(frame) = emit::vrrp_frame(&l2, &advert, r.cfg.primary, r.cfg.family().group())
            else {
                continue;
            };
            if ctl.send_frame(r.port, &frame) {
                self.counters.frames_out += 1;
            } else {
                self.counters.frames_failed += 1;
            }
        }
    }

    /// `show vrrp`.
    pub fn status(&self) -> Value {
        let c = self.machine.counters();
        json!({
            "state": match self.machine.state() {
                State::Initialize => "initialize",
                State::Backup => "backup",
                State::Master => "master",
            },
            "vrid": self.settings.vrid,
            "priority": self.machine.priority(),
            "advert_interval_ms": crate::units::millis(self.settings.advert_interval),
            "master": self.machine.master(),
            "master_adver_interval_ms": crate::units::millis(self.machine.master_adver_interval()),
            "transitions": c.transitions,
            "became_master": c.became_master,
            "became_backup": c.became_backup,
            "adverts_in": c.adverts_in,
            "adverts_out": c.adverts_out,
            "adverts_discarded": c.adverts_discarded,
            "priority_zero_in": c.priority_zero_in,
            "priority_zero_out": c.priority_zero_out,
            "errors": c.errors,
            "group": self.counters,
            "advert_gap_max_ms": self.timing.gap_max_us as f64 / 1000.0,
            "adverts_late": self.timing.late,
            "routers": self.routers.iter().enumerate().map(|(i, r)| json!({
                "interface": r.interface,
                "family": if r.cfg.family() == Family::Ipv6 { "ipv6" } else { "ipv4" },
                "primary": r.cfg.primary,
                "addresses": r.cfg.addresses,
                "leader": i == 0,
                "adverts_in": if i == 0 { c.adverts_in } else { r.adverts_in },
                "errors": if i == 0 { c.errors.total() } else { r.errors },
            })).collect::<Vec<_>>(),
        })
    }

    /// What Prometheus shows of VRRP.
    pub fn metrics(&self) -> VrrpMetrics {
        let c = self.machine.counters();
        let errors = c.errors.total() + self.routers[1..].iter().map(|r| r.errors).sum::<u64>();
        VrrpMetrics {
            master: self.is_master(),
            transitions: c.transitions,
            adverts_in: c.adverts_in,
            adverts_out: self.counters.frames_out,
            errors,
        }
    }
}

/// The Ethernet multicast address of an IP group.
fn multicast_mac(group: IpAddr) -> EthernetAddress {
    match group {
        IpAddr::V4(g) => EthernetAddress::ipv4_multicast(g),
        IpAddr::V6(g) => EthernetAddress::ipv6_multicast(&g),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv6Addr;
    use std::time::Duration;

    #[test]
    fn advert_gaps_are_measured_and_late_ones_counted() {
        let interval = Duration::from_millis(100);
        let t0 = Instant::now();
        let mut t = AdvertTiming::default();
        t.sent(t0, interval);
        t.sent(t0 + Duration::from_millis(100), interval);
        t.sent(t0 + Duration::from_millis(250), interval);
        assert_eq!((t.gap_max_us, t.late), (150_000, 0));
        t.sent(t0 + Duration::from_millis(451), interval);
        assert_eq!((t.gap_max_us, t.late), (201_000, 1));
        // Backup, then master again: the pause between is no gap.
        t.last = None;
        t.sent(t0 + Duration::from_secs(10), interval);
        assert_eq!((t.gap_max_us, t.late), (201_000, 1));
    }

    #[test]
    fn link_local_is_the_kernels_eui64() {
        // The lab's backend port: the kernel gave its TAP fe80::ff:fe00:201.
        let mac = EthernetAddress([0x02, 0, 0, 0, 0x02, 0x01]);
        assert_eq!(
            wire::link_local(mac),
            "fe80::ff:fe00:201".parse::<Ipv6Addr>().unwrap()
        );
    }
}
