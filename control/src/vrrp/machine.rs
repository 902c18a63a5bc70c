//! The state machine of one virtual router (RFC 5798 §6.4: Initialize, Backup, Master).
//!
//! Time is the caller's: every event takes `now`, and [`Vrrp::next_deadline`] says when
//! [`Vrrp::poll`] is due next (the Adver_Timer of a Master, the Master_Down_Timer of a
//! Backup). The machine only decides; the caller sends what [`Action::SendAdvert`] asks for
//! and takes or releases the virtual addresses on [`Action::BecomeMaster`] /
//! [`Action::BecomeBackup`], in the order given (a new Master's advert goes out before its
//! gratuitous ARPs, so the old Master has dropped the addresses when they arrive, as
//! keepalived does).

use std::net::IpAddr;
use std::time::{Duration, Instant};

use dataplane::wire::vrrp as wire;
use serde::Serialize;

use super::{
    centiseconds, master_down_interval, same_addresses, skew_time, validate, Advert, AdvertError,
    VrrpConfig, VrrpConfigError,
};

/// Where the router stands (RFC 5798 §6.4).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// Not started, or shut down: neither sends nor listens.
    Initialize,
    /// Listens to the Master's adverts and takes over when they stop.
    Backup,
    /// Owns the virtual addresses and advertises every interval.
    Master,
}

/// What the caller must do, in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Action {
    /// Send an advert with this priority (0: we are leaving); build it with
    /// [`Vrrp::encode_advert`].
    SendAdvert {
        /// The priority field to send.
        priority: u8,
    },
    /// We are Master now: take the virtual addresses (and virtual MACs) and announce them
    /// with gratuitous ARP / unsolicited neighbor advertisements.
    BecomeMaster,
    /// We are Backup now: stop answering for the virtual addresses.
    BecomeBackup,
}

/// Received messages that were not adverts for this router, by reason.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct AdvertErrorCounters {
    pub bad_ttl: u64,
    pub bad_version: u64,
    pub bad_type: u64,
    pub bad_checksum: u64,
    /// Adverts of other virtual routers on the segment: normal where several VRIDs share it.
    pub wrong_vrid: u64,
    pub address_mismatch: u64,
    pub bad_interval: u64,
    pub truncated: u64,
    pub wrong_family: u64,
    pub from_self: u64,
}

impl AdvertErrorCounters {
    /// The counter of one reason.
    pub fn get(&self, e: AdvertError) -> u64 {
        *self.slot(e)
    }

    /// Sum of all reasons.
    pub fn total(&self) -> u64 {
        AdvertError::ALL.iter().map(|e| self.get(*e)).sum()
    }

    fn bump(&mut self, e: AdvertError) {
        *self.slot_mut(e) += 1;
    }

    fn slot(&self, e: AdvertError) -> &u64 {
        match e {
            AdvertError::BadTtl => &self.bad_ttl,
            AdvertError::BadVersion => &self.bad_version,
            AdvertError::BadType => &self.bad_type,
            AdvertError::BadChecksum => &self.bad_checksum,
            AdvertError::WrongVrid => &self.wrong_vrid,
            AdvertError::AddressMismatch => &self.address_mismatch,
            AdvertError::BadInterval => &self.bad_interval,
            AdvertError::Truncated => &self.truncated,
            AdvertError::WrongFamily => &self.wrong_family,
            AdvertError::FromSelf => &self.from_self,
        }
    }

    fn slot_mut(&mut self, e: AdvertError) -> &mut u64 {
        match e {
            AdvertError::BadTtl => &mut self.bad_ttl,
            AdvertError::BadVersion => &mut self.bad_version,
            AdvertError::BadType => &mut self.bad_type,
            AdvertError::BadChecksum => &mut self.bad_checksum,
            AdvertError::WrongVrid => &mut self.wrong_vrid,
            AdvertError::AddressMismatch => &mut self.address_mismatch,
            AdvertError::BadInterval => &mut self.bad_interval,
            AdvertError::Truncated => &mut self.truncated,
            AdvertError::WrongFamily => &mut self.wrong_family,
            AdvertError::FromSelf => &mut self.from_self,
        }
    }
}

/// What one virtual router has done since it was created.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct VrrpCounters {
    /// State changes of any kind (to Initialize on shutdown included).
    pub transitions: u64,
    pub became_master: u64,
    pub became_backup: u64,
    /// Adverts for this router handed to the machine (after validation).
    pub adverts_in: u64,
    /// Of those, the ones RFC 5798 says to discard: a lower priority heard by a Master, or by
    /// a preempting Backup.
    pub adverts_discarded: u64,
    /// [`Action::SendAdvert`]s asked for.
    pub adverts_out: u64,
    pub priority_zero_in: u64,
    pub priority_zero_out: u64,
    /// Received messages rejected, by reason.
    pub errors: AdvertErrorCounters,
}

/// One VRRPv3 virtual router.
#[derive(Clone, Debug)]
pub struct Vrrp {
    cfg: VrrpConfig,
    /// Current priority: the configured one until [`Vrrp::set_priority`].
    priority: u8,
    state: State,
    /// The interval the Master advertises (ours while we are Master, learned from its adverts
    /// while Backup): the base of Master_Down_Interval.
    master_adver_interval: Duration,
    /// Master only: when the next advert is due.
    adver_timer: Option<Instant>,
    /// Backup only: when we take over unless an advert arrives.
    down_timer: Option<Instant>,
    /// With a preempt delay: until when a lower-priority Master is still accepted.
    preempt_until: Option<Instant>,
    /// Backup: the source of the last advert heard.
    master: Option<IpAddr>,
    /// Preemption put off by the caller (an HA pair's backup still pulling the master's
    /// affinity table): a lower-priority Master is accepted meanwhile.
    preempt_held: bool,
    counters: VrrpCounters,
}

impl Vrrp {
    /// A router in Initialize; `cfg` must pass [`VrrpConfig::check`].
    pub fn new(cfg: VrrpConfig) -> Result<Vrrp, VrrpConfigError> {
        cfg.check()?;
        Ok(Vrrp {
            priority: cfg.priority,
            master_adver_interval: cfg.advert_interval(),
            cfg,
            state: State::Initialize,
            adver_timer: None,
            down_timer: None,
            preempt_until: None,
            preempt_held: false,
            master: None,
            counters: VrrpCounters::default(),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &VrrpConfig {
        &self.cfg
    }

    /// A reload's new configuration for this router (its virtual addresses may differ; its
    /// family, VRID and primary address may not). State and timers stay as they are; a Master
    /// advertises the new list from its next advert on.
    pub fn reconfigure(&mut self, cfg: VrrpConfig) -> Result<(), VrrpConfigError> {
        cfg.check()?;
        self.cfg = cfg;
        Ok(())
    }

    /// The current priority.
    pub fn priority(&self) -> u8 {
        self.priority
    }

    /// The Master's advertisement interval as we know it.
    pub fn master_adver_interval(&self) -> Duration {
        self.master_adver_interval
    }

    /// The current state.
    pub fn state(&self) -> State {
        self.state
    }

    /// The Master's address as far as we know: ours while Master, the source of the last
    /// advert heard while Backup (`None` before the first), `None` in Initialize.
    pub fn master(&self) -> Option<IpAddr> {
        match self.state {
            State::Initialize => None,
            State::Backup => self.master,
            State::Master => Some(self.cfg.primary),
        }
    }

    /// When [`poll`](Self::poll) is due next; `None` in Initialize. Calling it later than
    /// that delays the event; calling it earlier does nothing.
    pub fn next_deadline(&self) -> Option<Instant> {
        match self.state {
            State::Initialize => None,
            State::Backup => self.down_timer,
            State::Master => self.adver_timer,
        }
    }

    /// The counters.
    pub fn counters(&self) -> VrrpCounters {
        self.counters
    }

    /// Startup event (RFC 5798 §6.4.1): the address owner (priority 255) becomes Master at
    /// once, anyone else Backup with the Master_Down_Timer running, so that a Master already
    /// on the segment is heard before we claim anything. Nothing outside Initialize.
    ///
    /// A preempt delay starts counting here.
    pub fn start(&mut self, now: Instant) -> Vec<Action> {
        if self.state != State::Initialize {
            return Vec::new();
        }
        self.preempt_until = if self.cfg.preempt_delay.is_zero() {
            None
        } else {
            Some(now + self.cfg.preempt_delay)
        };
        self.master = None;
        if self.priority == wire::PRIORITY_OWNER {
            self.become_master(now)
        } else {
            self.become_backup(now, self.cfg.advert_interval())
        }
    }

    /// A received advert (RFC 5798 §6.4.2, §6.4.3), normally from [`validate`]. An advert
    /// that would not pass it (another VRID, our own, a zero interval, ...) is counted under
    /// its reason and ignored, so the machine's timing never rests on one.
    pub fn on_advert(&mut self, now: Instant, a: &Advert) -> Vec<Action> {
        if let Err(e) = self.sanity(a) {
            self.counters.errors.bump(e);
            return Vec::new();
        }
        self.counters.adverts_in += 1;
        if a.priority == wire::PRIORITY_STOP {
            self.counters.priority_zero_in += 1;
        }
        match self.state {
            State::Initialize => Vec::new(),
            State::Backup => {
                self.master = Some(a.src);
                if a.priority == wire::PRIORITY_STOP {
                    // The Master is leaving: take over after Skew_Time only, the shortest for
                    // the highest-priority Backup.
                    self.down_timer =
                        Some(now + skew_time(self.priority, self.master_adver_interval));
                } else if !self.preempts()
                    || a.priority >= self.priority
                    || self.in_preempt_delay(now)
                    || self.preempt_held
                {
                    self.master_adver_interval = centiseconds(a.interval_cs);
                    self.down_timer =
                        Some(now + master_down_interval(self.priority, self.master_adver_interval));
                } else {
                    // A lower-priority Master while we preempt: let its adverts go unheard,
                    // so the Master_Down_Timer fires and we take over.
                    self.counters.adverts_discarded += 1;
                }
                Vec::new()
            }
            State::Master => {
                if a.priority == wire::PRIORITY_STOP {
                    // Someone (a Master that lost a race with us) leaves: reassure the
                    // Backups at once so none of them takes over after Skew_Time.
                    self.adver_timer = Some(now + self.cfg.advert_interval());
                    self.counters.adverts_out += 1;
                    vec![Action::SendAdvert {
                        priority: self.priority,
                    }]
                } else if a.priority > self.priority
                    || (a.priority == self.priority && a.src > self.cfg.primary)
                {
                    // IpAddr orders one family as unsigned big-endian integers, which is the
                    // RFC's "greater primary address".
                    let actions = self.become_backup(now, centiseconds(a.interval_cs));
                    self.master = Some(a.src);
                    actions
                } else {
                    self.counters.adverts_discarded += 1;
                    Vec::new()
                }
            }
        }
    }

    /// Validates a received VRRP message ([`validate`]) and runs it through
    /// [`on_advert`](Self::on_advert); a rejected one is counted under its reason.
    pub fn receive(
        &mut self,
        now: Instant,
        ip_ttl: u8,
        src: IpAddr,
        dst: IpAddr,
        vrrp: &[u8],
    ) -> Result<Vec<Action>, AdvertError> {
        match validate(&self.cfg, ip_ttl, src, dst, vrrp) {
            Ok(a) => Ok(self.on_advert(now, &a)),
            Err(e) => {
                self.counters.errors.bump(e);
                Err(e)
            }
        }
    }

    /// Counts a message the caller rejected itself (with [`validate`]).
    pub fn record_error(&mut self, e: AdvertError) {
        self.counters.errors.bump(e);
    }

    /// Timers: a Master's Adver_Timer (send an advert) and a Backup's Master_Down_Timer
    /// (take over). Nothing before [`next_deadline`](Self::next_deadline).
    pub fn poll(&mut self, now: Instant) -> Vec<Action> {
        match self.state {
            State::Initialize => Vec::new(),
            State::Backup => match self.down_timer {
                Some(t) if t <= now => self.become_master(now),
                _ => Vec::new(),
            },
            State::Master => match self.adver_timer {
                Some(t) if t <= now => {
                    // Next one an interval after the one due, not after `now`, so a caller
                    // that polls a little late does not stretch every interval; one that is
                    // a whole interval late starts afresh rather than sending a burst.
                    let interval = self.cfg.advert_interval();
                    let next = t + interval;
                    self.adver_timer = Some(if next <= now { now + interval } else { next });
                    self.counters.adverts_out += 1;
                    vec![Action::SendAdvert {
                        priority: self.priority,
                    }]
                }
                _ => Vec::new(),
            },
        }
    }

    /// A faster failure detector (a BFD-like heartbeat) says the Master is gone: a Backup acts
    /// as if its Master_Down_Timer fired. Nothing in the other states.
    pub fn peer_dead(&mut self, now: Instant) -> Vec<Action> {
        match self.state {
            State::Backup => self.become_master(now),
            State::Initialize | State::Master => Vec::new(),
        }
    }

    /// Shutdown event (RFC 5798 §6.4.2, §6.4.3): back to Initialize. A Master sends a
    /// priority-0 advert so the Backup takes over after Skew_Time instead of
    /// Master_Down_Interval; the caller gives up the addresses after sending it.
    pub fn shutdown(&mut self) -> Vec<Action> {
        let was = self.state;
        if was == State::Initialize {
            return Vec::new();
        }
        self.state = State::Initialize;
        self.adver_timer = None;
        self.down_timer = None;
        self.master = None;
        self.counters.transitions += 1;
        if was == State::Master {
            self.counters.adverts_out += 1;
            self.counters.priority_zero_out += 1;
            vec![Action::SendAdvert {
                priority: wire::PRIORITY_STOP,
            }]
        } else {
            Vec::new()
        }
    }

    /// Steps down for a fault of our own (a stalled worker: the daemon's watchdog), short of
    /// shutting down: the priority becomes 1, the lowest a live router has, and a Master
    /// leaves as on [`shutdown`](Self::shutdown), with a priority-0 advert so that a Backup
    /// takes over after its Skew_Time, but becomes Backup rather than Initialize: it keeps
    /// listening, and takes the addresses back only when nobody else advertises for
    /// Master_Down_Interval (a partly working appliance beats none). A Backup just takes the
    /// priority. [`set_priority`](Self::set_priority) with the configured one ends it.
    pub fn step_down(&mut self, now: Instant) -> Vec<Action> {
        self.priority = 1;
        if self.state != State::Master {
            return Vec::new();
        }
        self.counters.adverts_out += 1;
        self.counters.priority_zero_out += 1;
        let mut actions = vec![Action::SendAdvert {
            priority: wire::PRIORITY_STOP,
        }];
        actions.extend(self.become_backup(now, self.cfg.advert_interval()));
        self.master = None;
        actions
    }

    /// Changes our priority (a tracked health check, say); 0 is taken as 1, since 0 on the
    /// wire means "leaving" (use [`shutdown`](Self::shutdown)).
    ///
    /// A Master advertises the new priority at once, so that a preempting Backup with a
    /// priority now higher does not wait an interval to start its takeover. A Backup uses it
    /// from the next advert on: a raised priority that beats the Master's makes it ignore the
    /// Master's adverts (with preempt), so it takes over when its Master_Down_Timer fires.
    pub fn set_priority(&mut self, now: Instant, p: u8) -> Vec<Action> {
        let p = p.max(1);
        if p == self.priority {
            return Vec::new();
        }
        self.priority = p;
        if self.state == State::Master {
            self.adver_timer = Some(now + self.cfg.advert_interval());
            self.counters.adverts_out += 1;
            vec![Action::SendAdvert { priority: p }]
        } else {
            Vec::new()
        }
    }

    /// The advert for [`Action::SendAdvert`]: the VRRP message (not the IP header), from our
    /// primary address to the family's group (224.0.0.18 / ff02::12). The IP header must have
    /// TTL / hop limit 255 ([`wire::TTL`]), and keepalived sends TOS 0xc0.
    pub fn encode_advert(&self, priority: u8) -> Vec<u8> {
        let family = self.cfg.family();
        wire::emit_advert(
            self.cfg.vrid,
            priority,
            self.cfg.advert_interval_cs,
            &self.cfg.addresses,
            self.cfg.primary,
            family.group(),
        )
        // VrrpConfig::check (in `new`) ensured one family, at most 255 addresses and an
        // interval that fits 12 bits: what emit_advert needs.
        .expect("a checked configuration encodes")
    }

    /// Puts preemption off (or lets it go ahead): while held, a Backup accepts a
    /// lower-priority Master's adverts as if it did not preempt, so it takes over only when
    /// that Master goes silent. An HA pair's recovering appliance holds until it has the
    /// current master's affinity table, so that taking the VIPs back moves no client. The
    /// address owner's preemption is held too: its clients matter as much.
    pub fn hold_preemption(&mut self, held: bool) {
        self.preempt_held = held;
    }

    /// Whether a higher priority lets us take over from a lower-priority Master: with
    /// Preempt_Mode, or always as the address owner (RFC 5798 §6.1).
    fn preempts(&self) -> bool {
        self.cfg.preempt || self.priority == wire::PRIORITY_OWNER
    }

    /// Whether the preempt delay still holds us back (never for the address owner).
    fn in_preempt_delay(&self, now: Instant) -> bool {
        self.priority != wire::PRIORITY_OWNER && self.preempt_until.is_some_and(|t| now < t)
    }

    /// What [`validate`] checks that does not need the bytes, for adverts built elsewhere.
    fn sanity(&self, a: &Advert) -> Result<(), AdvertError> {
        if super::Family::of(&a.src) != self.cfg.family() {
            return Err(AdvertError::WrongFamily);
        }
        if a.ttl != wire::TTL {
            return Err(AdvertError::BadTtl);
        }
        if a.vrid != self.cfg.vrid {
            return Err(AdvertError::WrongVrid);
        }
        if a.src == self.cfg.primary {
            return Err(AdvertError::FromSelf);
        }
        if a.interval_cs == 0 || a.interval_cs > wire::MAX_ADVER_INT {
            return Err(AdvertError::BadInterval);
        }
        if !same_addresses(&self.cfg.addresses, &a.addresses) {
            return Err(AdvertError::AddressMismatch);
        }
        Ok(())
    }

    fn become_master(&mut self, now: Instant) -> Vec<Action> {
        self.state = State::Master;
        self.master_adver_interval = self.cfg.advert_interval();
        self.adver_timer = Some(now + self.cfg.advert_interval());
        self.down_timer = None;
        self.counters.transitions += 1;
        self.counters.became_master += 1;
        self.counters.adverts_out += 1;
        vec![
            Action::SendAdvert {
                priority: self.priority,
            },
            Action::BecomeMaster,
        ]
    }

    fn become_backup(&mut self, now: Instant, master_adver_interval: Duration) -> Vec<Action> {
        self.state = State::Backup;
        self.master_adver_interval = master_adver_interval;
        self.down_timer = Some(now + master_down_interval(self.priority, master_adver_interval));
        self.adver_timer = None;
        self.counters.transitions += 1;
        self.counters.became_backup += 1;
        vec![Action::BecomeBackup]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::net::Ipv4Addr;

    const A: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 19, 0, 2));
    const B: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 19, 0, 3));
    const C: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 19, 0, 4));
    const G4: IpAddr = IpAddr::V4(wire::VRRP_V4_GROUP);

    fn addrs() -> Vec<IpAddr> {
        vec![
            IpAddr::V4(Ipv4Addr::new(198, 19, 0, 1)),
            IpAddr::V4(Ipv4Addr::new(198, 18, 0, 100)),
        ]
    }

    /// The lab's router B (priority 100, 198.19.0.3) with `interval_cs`.
    fn cfg(priority: u8, interval_cs: u16) -> VrrpConfig {
        VrrpConfig {
            vrid: 51,
            priority,
            advert_interval_cs: interval_cs,
            preempt: true,
            preempt_delay: Duration::ZERO,
            addresses: addrs(),
            primary: B,
        }
    }

    fn router(priority: u8, interval_cs: u16) -> Vrrp {
        Vrrp::new(cfg(priority, interval_cs)).unwrap()
    }

    /// An advert from `src`.
    fn advert(src: IpAddr, priority: u8, interval_cs: u16) -> Advert {
        Advert {
            src,
            ttl: 255,
            vrid: 51,
            priority,
            interval_cs,
            addresses: addrs(),
        }
    }

    /// The fake clock: one real `Instant` plus offsets.
    struct Clock(Instant);

    impl Clock {
        fn new() -> Clock {
            Clock(Instant::now())
        }
        fn ms(&self, ms: u64) -> Instant {
            self.0 + Duration::from_millis(ms)
        }
        fn ns(&self, ns: u64) -> Instant {
            self.0 + Duration::from_nanos(ns)
        }
    }

    fn send(p: u8) -> Action {
        Action::SendAdvert { priority: p }
    }

    #[test]
    fn new_checks_the_config() {
        assert!(Vrrp::new(VrrpConfig {
            vrid: 0,
            ..cfg(100, 100)
        })
        .is_err());
        assert!(Vrrp::new(VrrpConfig {
            advert_interval_cs: 0,
            ..cfg(100, 100)
        })
        .is_err());
        let r = router(100, 100);
        assert_eq!(r.state(), State::Initialize);
        assert_eq!(r.master(), None);
        assert_eq!(r.next_deadline(), None);
        assert_eq!(r.priority(), 100);
        assert_eq!(r.config().vrid, 51);
        assert_eq!(r.counters(), VrrpCounters::default());
    }

    #[test]
    fn start_as_backup() {
        let c = Clock::new();
        let mut r = router(100, 100);
        assert_eq!(r.start(c.ms(0)), [Action::BecomeBackup]);
        assert_eq!(r.state(), State::Backup);
        assert_eq!(r.master(), None);
        // Master_Down_Interval from our own interval until a Master is heard: 3.609375 s.
        assert_eq!(r.next_deadline(), Some(c.ns(3_609_375_000)));
        // Starting twice does nothing.
        assert_eq!(r.start(c.ms(10)), []);
        // Nobody there: we take over when the timer fires, not a nanosecond before.
        assert_eq!(r.poll(c.ns(3_609_374_999)), []);
        assert_eq!(
            r.poll(c.ns(3_609_375_000)),
            [send(100), Action::BecomeMaster]
        );
        assert_eq!(r.state(), State::Master);
        assert_eq!(r.master(), Some(B));
        let k = r.counters();
        assert_eq!((k.transitions, k.became_backup, k.became_master), (2, 1, 1));
        assert_eq!(k.adverts_out, 1);
    }

    #[test]
    fn owner_starts_as_master_and_advertises_every_interval() {
        let c = Clock::new();
        let mut r = router(255, 10);
        assert_eq!(r.start(c.ms(0)), [send(255), Action::BecomeMaster]);
        assert_eq!(r.state(), State::Master);
        assert_eq!(r.master(), Some(B));
        assert_eq!(r.next_deadline(), Some(c.ms(100)));
        assert_eq!(r.poll(c.ms(99)), []);
        for i in 1..=20u64 {
            assert_eq!(r.poll(c.ms(100 * i)), [send(255)], "advert {i}");
            assert_eq!(r.next_deadline(), Some(c.ms(100 * (i + 1))));
        }
        // Polled 30 ms late: the next is still on the original grid.
        assert_eq!(r.poll(c.ms(2130)), [send(255)]);
        assert_eq!(r.next_deadline(), Some(c.ms(2200)));
        // Polled more than an interval late: one advert, then a fresh interval.
        assert_eq!(r.poll(c.ms(2450)), [send(255)]);
        assert_eq!(r.next_deadline(), Some(c.ms(2550)));
        assert_eq!(r.counters().adverts_out, 23);
        // The owner ignores a lower-priority Master's adverts; one with priority 255 and a
        // higher address is a configuration error, but the RFC's rule still applies.
        assert_eq!(r.on_advert(c.ms(2500), &advert(A, 254, 10)), []);
        assert_eq!(r.state(), State::Master);
        assert_eq!(r.on_advert(c.ms(2500), &advert(A, 255, 10)), []);
        assert_eq!(
            r.on_advert(c.ms(2500), &advert(C, 255, 10)),
            [Action::BecomeBackup]
        );
        assert_eq!(r.counters().adverts_discarded, 2);
    }

    #[test]
    fn master_down_timing_for_100ms_adverts() {
        // PEERS.md: keepalived with 0.1 s adverts takes over 0.36 s after the last advert of a
        // killed Master: 3 × 100 ms + (256 − 100) × 100 ms / 256 = 360.9375 ms.
        let c = Clock::new();
        // Our own interval is 1 s: the Backup must use the Master's, from its adverts.
        let mut r = router(100, 100);
        r.start(c.ms(0));
        assert_eq!(r.on_advert(c.ms(50), &advert(A, 200, 10)), []);
        assert_eq!(r.master(), Some(A));
        assert_eq!(r.master_adver_interval(), Duration::from_millis(100));
        let down = c.ns(50_000_000 + 360_937_500);
        assert_eq!(r.next_deadline(), Some(down));
        assert_eq!(r.poll(down - Duration::from_nanos(1)), []);
        assert_eq!(r.state(), State::Backup);
        assert_eq!(r.poll(down), [send(100), Action::BecomeMaster]);
        // As Master it advertises its own interval, 1 s.
        assert_eq!(r.next_deadline(), Some(down + Duration::from_secs(1)));
        assert_eq!(r.master_adver_interval(), Duration::from_secs(1));
    }

    #[test]
    fn adverts_keep_a_backup_down() {
        let c = Clock::new();
        let mut r = router(100, 10);
        r.start(c.ms(0));
        // The Master advertises every 100 ms for a minute: the Backup never fires.
        for i in 0..600u64 {
            let t = c.ms(100 * i);
            assert_eq!(r.poll(t), []);
            assert_eq!(r.on_advert(t, &advert(A, 200, 10)), []);
            assert_eq!(r.state(), State::Backup);
        }
        // Three adverts lost are still not enough; the fourth is.
        let last = c.ms(59_900);
        assert_eq!(r.poll(last + Duration::from_millis(360)), []);
        assert_eq!(
            r.poll(last + Duration::from_millis(361)),
            [send(100), Action::BecomeMaster]
        );
        assert_eq!(r.counters().adverts_in, 600);
    }

    #[test]
    fn priority_zero_makes_a_backup_take_over_after_skew_time() {
        // PEERS.md: SIGTERM (priority-0 advert) takeover in 0.06 s with 0.1 s adverts.
        let c = Clock::new();
        let mut r = router(100, 10);
        r.start(c.ms(0));
        r.on_advert(c.ms(100), &advert(A, 200, 10));
        assert_eq!(r.on_advert(c.ms(150), &advert(A, 0, 10)), []);
        let k = r.counters();
        assert_eq!((k.adverts_in, k.priority_zero_in), (2, 1));
        let down = c.ns(150_000_000 + 60_937_500);
        assert_eq!(r.next_deadline(), Some(down));
        assert_eq!(r.poll(down - Duration::from_nanos(1)), []);
        assert_eq!(r.poll(down), [send(100), Action::BecomeMaster]);
        // With 1 s adverts: 0.609 s (PEERS.md: 0.61 s).
        let mut r = router(100, 100);
        r.start(c.ms(0));
        r.on_advert(c.ms(0), &advert(A, 0, 100));
        assert_eq!(r.next_deadline(), Some(c.ns(609_375_000)));
    }

    #[test]
    fn priority_zero_makes_a_master_advertise_at_once() {
        let c = Clock::new();
        let mut r = router(255, 100);
        r.start(c.ms(0));
        assert_eq!(r.on_advert(c.ms(400), &advert(A, 0, 100)), [send(255)]);
        assert_eq!(r.next_deadline(), Some(c.ms(1400)));
        assert_eq!(r.state(), State::Master);
        assert_eq!(r.counters().priority_zero_in, 1);
        assert_eq!(r.counters().adverts_out, 2);
    }

    /// A Master (priority 100, 198.19.0.3) at t = 0.
    fn master(c: &Clock) -> Vrrp {
        let mut r = router(100, 100);
        r.start(c.ms(0));
        r.peer_dead(c.ms(0));
        assert_eq!(r.state(), State::Master);
        r
    }

    #[test]
    fn master_yields_to_a_higher_priority() {
        let c = Clock::new();
        let mut r = master(&c);
        assert_eq!(
            r.on_advert(c.ms(500), &advert(A, 101, 10)),
            [Action::BecomeBackup]
        );
        assert_eq!(r.state(), State::Backup);
        assert_eq!(r.master(), Some(A));
        // The new Master's interval, our skew: 300 ms + 156 × 100 ms / 256.
        assert_eq!(r.next_deadline(), Some(c.ns(500_000_000 + 360_937_500)));
        let k = r.counters();
        assert_eq!((k.became_master, k.became_backup, k.transitions), (1, 2, 3));
    }

    #[test]
    fn master_yields_to_equal_priority_from_a_higher_address() {
        let c = Clock::new();
        let mut r = master(&c);
        // 198.19.0.2 < ours (198.19.0.3): we stay; 198.19.0.4 > ours: we yield.
        assert_eq!(r.on_advert(c.ms(100), &advert(A, 100, 100)), []);
        assert_eq!(r.state(), State::Master);
        assert_eq!(r.on_advert(c.ms(100), &advert(A, 99, 100)), []);
        assert_eq!(r.state(), State::Master);
        assert_eq!(r.counters().adverts_discarded, 2);
        assert_eq!(
            r.on_advert(c.ms(200), &advert(C, 100, 100)),
            [Action::BecomeBackup]
        );
        assert_eq!(r.master(), Some(C));
        // IPv6 compares the 128-bit values the same way.
        let v6 = |s: &str| s.parse::<IpAddr>().unwrap();
        let cfg6 = VrrpConfig {
            addresses: vec![v6("2001:2:0:1::100")],
            primary: v6("fe80::2:0"),
            ..cfg(100, 100)
        };
        let mut r = Vrrp::new(cfg6.clone()).unwrap();
        r.start(c.ms(0));
        r.peer_dead(c.ms(0));
        let a6 = |src: &str| Advert {
            addresses: cfg6.addresses.clone(),
            ..advert(v6(src), 100, 100)
        };
        assert_eq!(r.on_advert(c.ms(1), &a6("fe80::1:ffff")), []);
        assert_eq!(
            r.on_advert(c.ms(1), &a6("fe80::2:1")),
            [Action::BecomeBackup]
        );
    }

    #[test]
    fn backup_without_preempt_accepts_any_master() {
        let c = Clock::new();
        let mut r = Vrrp::new(VrrpConfig {
            preempt: false,
            ..cfg(200, 100)
        })
        .unwrap();
        r.start(c.ms(0));
        for i in 0..100u64 {
            let t = c.ms(1000 * i);
            assert_eq!(r.poll(t), []);
            assert_eq!(r.on_advert(t, &advert(A, 50, 100)), []);
        }
        assert_eq!(r.state(), State::Backup);
        assert_eq!(r.master(), Some(A));
        assert_eq!(r.counters().adverts_discarded, 0);
    }

    #[test]
    fn backup_with_preempt_takes_over_from_a_lower_master() {
        let c = Clock::new();
        let mut r = router(200, 100);
        r.start(c.ms(0));
        // A lower-priority Master keeps advertising: the adverts are discarded, so the down
        // timer armed at start (3 s + 56/256 s) fires.
        let down = c.ns(3_218_750_000);
        let mut t = 0;
        while c.ms(t) < down {
            assert_eq!(r.on_advert(c.ms(t), &advert(A, 100, 100)), []);
            t += 1000;
        }
        assert_eq!(r.next_deadline(), Some(down));
        assert_eq!(r.poll(down), [send(200), Action::BecomeMaster]);
        assert_eq!(r.counters().adverts_discarded, 4);
        // Equal priority is accepted by a preempting Backup (RFC 5798 §6.4.2: "greater than or
        // equal"), whatever the address.
        let mut r = router(100, 100);
        r.start(c.ms(0));
        r.on_advert(c.ms(3000), &advert(A, 100, 100));
        assert_eq!(r.next_deadline(), Some(c.ns(3_000_000_000 + 3_609_375_000)));
    }

    #[test]
    fn held_preemption_accepts_a_lower_master_until_released() {
        let c = Clock::new();
        let mut r = router(200, 100);
        r.start(c.ms(0));
        r.hold_preemption(true);
        // Held: every advert of the lower Master re-arms the down timer.
        for t in (0..10_000).step_by(1000) {
            assert_eq!(r.poll(c.ms(t)), []);
            assert_eq!(r.on_advert(c.ms(t), &advert(A, 100, 100)), []);
        }
        assert_eq!(r.state(), State::Backup);
        assert_eq!(r.counters().adverts_discarded, 0);
        // Released: the next adverts are discarded and the down timer armed by the last one
        // accepted fires.
        r.hold_preemption(false);
        assert_eq!(r.on_advert(c.ms(10_000), &advert(A, 100, 100)), []);
        assert_eq!(r.next_deadline(), Some(c.ns(9_000_000_000 + 3_218_750_000)));
        assert_eq!(
            r.poll(c.ns(9_000_000_000 + 3_218_750_000)),
            [send(200), Action::BecomeMaster]
        );
    }

    #[test]
    fn preempt_delay_counts_from_start() {
        // keepalived's preempt_delay: a lower-priority Master is accepted until `delay` after
        // start, then ignored, so we take over one Master_Down_Interval after the last advert
        // accepted.
        let c = Clock::new();
        let mut r = Vrrp::new(VrrpConfig {
            preempt_delay: Duration::from_secs(5),
            ..cfg(200, 10)
        })
        .unwrap();
        r.start(c.ms(1000));
        let mut t = 1000;
        let mut became = None;
        while t < 10_000 {
            let now = c.ms(t);
            let mut acts = r.poll(now);
            if r.state() == State::Backup {
                acts.extend(r.on_advert(now, &advert(A, 100, 10)));
            }
            if acts.contains(&Action::BecomeMaster) {
                became = Some(t);
                break;
            }
            t += 100;
        }
        // Adverts at 1000..=5900 accepted (before 6000 = start + 5 s); at 6000 ignored. The
        // last accepted at 5900 + 300 ms + 56 × 100 ms / 256 = 6221.875 ms: the first poll
        // after is at 6300.
        assert_eq!(became, Some(6300));
        // Those at 6000, 6100 and 6200.
        assert_eq!(r.counters().adverts_discarded, 3);
        // Exactly: the deadline was 6221.875 ms.
        let mut r = Vrrp::new(VrrpConfig {
            preempt_delay: Duration::from_secs(5),
            ..cfg(200, 10)
        })
        .unwrap();
        r.start(c.ms(1000));
        r.on_advert(c.ms(5999), &advert(A, 100, 10));
        assert_eq!(r.next_deadline(), Some(c.ns(5_999_000_000 + 321_875_000)));
        r.on_advert(c.ms(6000), &advert(A, 100, 10));
        assert_eq!(r.next_deadline(), Some(c.ns(5_999_000_000 + 321_875_000)));
        // A restart starts the delay again.
        r.shutdown();
        r.start(c.ms(20_000));
        r.on_advert(c.ms(24_000), &advert(A, 100, 10));
        assert_eq!(r.next_deadline(), Some(c.ns(24_000_000_000 + 321_875_000)));
    }

    #[test]
    fn owner_ignores_preempt_off_and_delay() {
        let c = Clock::new();
        let mut r = Vrrp::new(VrrpConfig {
            preempt: false,
            preempt_delay: Duration::from_secs(60),
            ..cfg(255, 100)
        })
        .unwrap();
        assert_eq!(r.start(c.ms(0)), [send(255), Action::BecomeMaster]);
        // Pushed to Backup by a (misconfigured) second owner, then priority 255 still preempts
        // a lower Master at once.
        r.on_advert(c.ms(100), &advert(C, 255, 100));
        assert_eq!(r.state(), State::Backup);
        let down = r.next_deadline().unwrap();
        r.on_advert(c.ms(200), &advert(A, 254, 100));
        assert_eq!(r.next_deadline(), Some(down));
    }

    #[test]
    fn peer_dead_takes_over_at_once_from_backup_only() {
        let c = Clock::new();
        let mut r = router(100, 100);
        assert_eq!(r.peer_dead(c.ms(0)), []);
        assert_eq!(r.state(), State::Initialize);
        r.start(c.ms(0));
        r.on_advert(c.ms(10), &advert(A, 200, 100));
        assert_eq!(r.peer_dead(c.ms(20)), [send(100), Action::BecomeMaster]);
        assert_eq!(r.state(), State::Master);
        assert_eq!(r.next_deadline(), Some(c.ms(1020)));
        assert_eq!(r.peer_dead(c.ms(30)), []);
        // The old Master comes back: it has the higher priority, so we yield.
        assert_eq!(
            r.on_advert(c.ms(40), &advert(A, 200, 100)),
            [Action::BecomeBackup]
        );
    }

    #[test]
    fn shutdown_from_each_state() {
        let c = Clock::new();
        let mut r = router(100, 100);
        assert_eq!(r.shutdown(), []);
        r.start(c.ms(0));
        assert_eq!(r.shutdown(), []);
        assert_eq!(r.state(), State::Initialize);
        assert_eq!(r.next_deadline(), None);
        assert_eq!(r.poll(c.ms(100_000)), []);
        assert_eq!(r.on_advert(c.ms(100_000), &advert(A, 200, 100)), []);
        let mut r = master(&c);
        assert_eq!(r.shutdown(), [send(0)]);
        assert_eq!(r.state(), State::Initialize);
        assert_eq!(r.master(), None);
        assert_eq!(r.next_deadline(), None);
        let k = r.counters();
        assert_eq!(
            (k.priority_zero_out, k.adverts_out, k.transitions),
            (1, 2, 3)
        );
        assert_eq!(r.shutdown(), []);
        // And up again.
        assert_eq!(r.start(c.ms(5000)), [Action::BecomeBackup]);
    }

    #[test]
    fn set_priority() {
        let c = Clock::new();
        let mut r = master(&c);
        assert_eq!(r.set_priority(c.ms(300), 100), []);
        assert_eq!(r.set_priority(c.ms(300), 50), [send(50)]);
        assert_eq!(r.priority(), 50);
        assert_eq!(r.next_deadline(), Some(c.ms(1300)));
        // 0 is "leaving" on the wire: taken as 1.
        assert_eq!(r.set_priority(c.ms(400), 0), [send(1)]);
        assert_eq!(r.priority(), 1);
        // A Backup that now beats the Master ignores its adverts and takes over.
        let mut r = router(100, 10);
        r.start(c.ms(0));
        r.on_advert(c.ms(0), &advert(A, 150, 10));
        assert_eq!(r.set_priority(c.ms(50), 200), []);
        assert_eq!(r.state(), State::Backup);
        // The running timer was armed with priority 100's skew.
        let down = c.ns(360_937_500);
        assert_eq!(r.next_deadline(), Some(down));
        r.on_advert(c.ms(100), &advert(A, 150, 10));
        r.on_advert(c.ms(200), &advert(A, 150, 10));
        assert_eq!(r.next_deadline(), Some(down));
        assert_eq!(r.poll(down), [send(200), Action::BecomeMaster]);
        // And a lower priority makes it accept the Master again (skew of priority 90).
        let mut r = router(200, 10);
        r.start(c.ms(0));
        r.set_priority(c.ms(0), 90);
        r.on_advert(c.ms(10), &advert(A, 150, 10));
        assert_eq!(
            r.next_deadline(),
            Some(c.ns(10_000_000 + 300_000_000 + 64_843_750))
        );
        // Initialize keeps the new priority for start: 255 starts as owner.
        let mut r = router(100, 10);
        assert_eq!(r.set_priority(c.ms(0), 255), []);
        assert_eq!(r.start(c.ms(0)), [send(255), Action::BecomeMaster]);
    }

    #[test]
    fn insane_adverts_are_counted_and_ignored() {
        let c = Clock::new();
        let mut r = router(100, 10);
        r.start(c.ms(0));
        let deadline = r.next_deadline();
        let cases = [
            (
                Advert {
                    vrid: 52,
                    ..advert(A, 200, 10)
                },
                AdvertError::WrongVrid,
            ),
            (
                Advert {
                    ttl: 254,
                    ..advert(A, 200, 10)
                },
                AdvertError::BadTtl,
            ),
            (advert(B, 200, 10), AdvertError::FromSelf),
            (advert(A, 200, 0), AdvertError::BadInterval),
            (
                advert("fe80::1".parse().unwrap(), 200, 10),
                AdvertError::WrongFamily,
            ),
        ];
        for (a, e) in &cases {
            assert_eq!(r.on_advert(c.ms(5), a), []);
            assert_eq!(r.counters().errors.get(*e), 1, "{e}");
        }
        assert_eq!(r.next_deadline(), deadline);
        assert_eq!(r.on_advert(c.ms(5), &advert(A, 200, 4096)), []);
        assert_eq!(r.counters().errors.bad_interval, 2);
        let k = r.counters();
        assert_eq!(k.adverts_in, 0);
        assert_eq!(k.errors.total(), 6);
        r.record_error(AdvertError::BadChecksum);
        assert_eq!(r.counters().errors.bad_checksum, 1);
        // Another address list is refused, as keepalived does (a forgery must not take over).
        let other_list = Advert {
            addresses: vec![addrs()[0]],
            ..advert(A, 200, 10)
        };
        assert_eq!(r.on_advert(c.ms(7), &other_list), []);
        assert_eq!(r.counters().errors.get(AdvertError::AddressMismatch), 1);
    }

    #[test]
    fn receive_validates_and_counts() {
        let c = Clock::new();
        let mut r = router(100, 10);
        r.start(c.ms(0));
        let m = wire::emit_advert(51, 200, 10, &addrs(), A, G4).unwrap();
        assert_eq!(r.receive(c.ms(1), 255, A, G4, &m), Ok(vec![]));
        assert_eq!(r.master(), Some(A));
        assert_eq!(r.receive(c.ms(2), 64, A, G4, &m), Err(AdvertError::BadTtl));
        assert_eq!(
            r.receive(c.ms(2), 255, A, G4, &m[..7]),
            Err(AdvertError::Truncated)
        );
        let mut bad = m.clone();
        bad[7] ^= 1;
        assert_eq!(
            r.receive(c.ms(2), 255, A, G4, &bad),
            Err(AdvertError::BadChecksum)
        );
        let other = wire::emit_advert(52, 200, 10, &addrs(), A, G4).unwrap();
        assert_eq!(
            r.receive(c.ms(2), 255, A, G4, &other),
            Err(AdvertError::WrongVrid)
        );
        let k = r.counters();
        assert_eq!(k.adverts_in, 1);
        assert_eq!(k.errors.total(), 4);
        assert_eq!(k.errors.wrong_vrid, 1);
        // Our own advert, encoded by us, is recognised as ours.
        let own = r.encode_advert(100);
        assert_eq!(
            r.receive(c.ms(3), 255, B, G4, &own),
            Err(AdvertError::FromSelf)
        );
    }

    #[test]
    fn encode_advert_is_what_the_peer_accepts() {
        let r = router(100, 10);
        let m = r.encode_advert(100);
        let peer = VrrpConfig {
            primary: A,
            ..cfg(200, 10)
        };
        let a = validate(&peer, 255, B, G4, &m).unwrap();
        assert_eq!((a.src, a.priority, a.interval_cs), (B, 100, 10));
        let z = r.encode_advert(0);
        assert_eq!(z[2], 0);
    }

    #[test]
    fn counters_serialize() {
        let c = Clock::new();
        let mut r = master(&c);
        r.record_error(AdvertError::WrongVrid);
        let v = serde_json::to_value(r.counters()).unwrap();
        assert_eq!(v["became_master"], 1);
        assert_eq!(v["adverts_out"], 1);
        assert_eq!(v["errors"]["wrong_vrid"], 1);
        assert_eq!(v["errors"]["address_mismatch"], 0);
        assert_eq!(serde_json::to_value(State::Master).unwrap(), "master");
    }

    /// Routers on one segment, adverts delivered at once through the wire format.
    struct Segment {
        routers: Vec<Vrrp>,
        up: Vec<bool>,
        now: Instant,
        /// (time, router, action) of every action taken.
        log: Vec<(Instant, usize, Action)>,
        /// Drop every advert (a partition).
        lossy: bool,
    }

    impl Segment {
        fn new(now: Instant, cfgs: Vec<VrrpConfig>) -> Segment {
            let n = cfgs.len();
            Segment {
                routers: cfgs.into_iter().map(|c| Vrrp::new(c).unwrap()).collect(),
                up: vec![false; n],
                now,
                log: Vec::new(),
                lossy: false,
            }
        }

        fn start(&mut self, i: usize) {
            self.up[i] = true;
            let acts = self.routers[i].start(self.now);
            self.handle(i, acts);
        }

        /// The process dies (SIGKILL): nothing is sent, and a restart is a fresh machine.
        fn kill(&mut self, i: usize) {
            self.up[i] = false;
            self.routers[i] = Vrrp::new(self.routers[i].config().clone()).unwrap();
        }

        fn stop(&mut self, i: usize) {
            let acts = self.routers[i].shutdown();
            self.handle(i, acts);
            self.up[i] = false;
        }

        fn run_until(&mut self, until: Instant) {
            loop {
                let next = (0..self.routers.len())
                    .filter(|&i| self.up[i])
                    .filter_map(|i| self.routers[i].next_deadline().map(|t| (t, i)))
                    .min();
                match next {
                    Some((t, i)) if t <= until => {
                        self.now = self.now.max(t);
                        let acts = self.routers[i].poll(self.now);
                        // A timer that does not fire at its deadline would spin here forever.
                        assert!(!acts.is_empty(), "router {i} did nothing at its deadline");
                        self.handle(i, acts);
                    }
                    _ => break,
                }
            }
            self.now = until;
        }

        fn handle(&mut self, from: usize, acts: Vec<Action>) {
            for a in acts {
                self.log.push((self.now, from, a));
                let Action::SendAdvert { priority } = a else {
                    continue;
                };
                if self.lossy {
                    continue;
                }
                let bytes = self.routers[from].encode_advert(priority);
                let src = self.routers[from].config().primary;
                for j in 0..self.routers.len() {
                    if j == from || !self.up[j] {
                        continue;
                    }
                    let acts = self.routers[j]
                        .receive(self.now, 255, src, G4, &bytes)
                        .expect("peers accept each other's adverts");
                    self.handle(j, acts);
                }
            }
        }

        /// When router `i` last sent an advert with its priority (not 0).
        fn last_advert(&self, i: usize) -> Option<Instant> {
            self.log
                .iter()
                .rev()
                .find(|(_, r, a)| {
                    *r == i && matches!(a, Action::SendAdvert { priority } if *priority != 0)
                })
                .map(|(t, _, _)| *t)
        }

        fn masters(&self) -> Vec<usize> {
            (0..self.routers.len())
                .filter(|&i| self.routers[i].state() == State::Master)
                .collect()
        }

        /// When router `i` last did `a`.
        fn last(&self, i: usize, a: Action) -> Option<Instant> {
            self.log
                .iter()
                .rev()
                .find(|(_, r, x)| *r == i && *x == a)
                .map(|(t, _, _)| *t)
        }
    }

    fn lab_pair(interval_cs: u16) -> Vec<VrrpConfig> {
        vec![
            VrrpConfig {
                primary: A,
                ..cfg(200, interval_cs)
            },
            cfg(100, interval_cs),
        ]
    }

    #[test]
    fn lab_pair_elects_fails_over_and_preempts_back() {
        for (interval_cs, kill_ms, term_ms) in
            [(10u16, 360.9375, 60.9375), (100, 3609.375, 609.375)]
        {
            let c = Clock::new();
            let mut s = Segment::new(c.ms(0), lab_pair(interval_cs));
            s.start(0);
            s.start(1);
            s.run_until(c.ms(10_000));
            // A (200) has the shorter Master_Down_Interval and wins; B hears it in time.
            assert_eq!(s.masters(), [0]);
            assert_eq!(s.routers[1].master(), Some(A));
            // SIGKILL: B takes over Master_Down_Interval after A's last advert.
            s.kill(0);
            s.run_until(c.ms(20_000));
            assert_eq!(s.masters(), [1]);
            let last_a = s.last(0, send(200)).unwrap();
            let first_b = s.last(1, Action::BecomeMaster).unwrap();
            let took = (first_b - last_a).as_secs_f64() * 1000.0;
            assert!((took - kill_ms).abs() < 1e-6, "kill: {took} ms");
            // A comes back: it preempts B (after its own Master_Down_Interval, since it starts
            // as Backup and discards B's lower adverts).
            s.start(0);
            s.run_until(c.ms(40_000));
            assert_eq!(s.masters(), [0]);
            assert_eq!(s.routers[1].state(), State::Backup);
            // SIGTERM: priority 0, B takes over after Skew_Time.
            s.stop(0);
            let stop_at = s.now;
            s.run_until(c.ms(50_000));
            assert_eq!(s.masters(), [1]);
            let took = (s.last(1, Action::BecomeMaster).unwrap() - stop_at).as_secs_f64() * 1000.0;
            assert!((took - term_ms).abs() < 1e-6, "term: {took} ms");
            assert_eq!(s.routers[1].counters().priority_zero_in, 1);
        }
    }

    #[test]
    fn step_down_releases_at_once_and_set_priority_ends_it() {
        let c = Clock::new();
        let mut r = master(&c);
        assert_eq!(
            r.step_down(c.ms(50)),
            [send(0), Action::BecomeBackup],
            "a priority-0 advert, then the addresses go"
        );
        assert_eq!((r.state(), r.priority()), (State::Backup, 1));
        assert_eq!(r.counters().priority_zero_out, 1);
        // Without anyone else it takes over again after Master_Down_Interval at priority 1.
        let down = c.ms(50) + master_down_interval(1, Duration::from_secs(1));
        assert_eq!(r.next_deadline(), Some(down));
        // A Master at any priority keeps it down.
        assert_eq!(r.on_advert(c.ms(100), &advert(A, 100, 100)), []);
        assert_eq!(r.master(), Some(A));
        assert!(r.next_deadline() > Some(down));
        // Stepping down again changes nothing; a Backup or Initialize only takes the priority.
        assert_eq!(r.step_down(c.ms(200)), []);
        let mut b = router(100, 100);
        assert_eq!(b.step_down(c.ms(0)), []);
        assert_eq!((b.state(), b.priority()), (State::Initialize, 1));
        assert_eq!(r.set_priority(c.ms(300), 100), []);
        assert_eq!((r.state(), r.priority()), (State::Backup, 100));
    }

    #[test]
    fn lab_pair_master_steps_down_and_preempts_back_after() {
        let c = Clock::new();
        let mut s = Segment::new(c.ms(0), lab_pair(10));
        s.start(0);
        s.start(1);
        s.run_until(c.ms(2_000));
        assert_eq!(s.masters(), [0]);
        // A's watchdog fires: B takes over after its Skew_Time (60.9375 ms at 100 ms adverts).
        let acts = s.routers[0].step_down(s.now);
        let at = s.now;
        s.handle(0, acts);
        s.run_until(c.ms(2_500));
        assert_eq!(s.masters(), [1]);
        let took = s.last(1, Action::BecomeMaster).unwrap() - at;
        assert_eq!(took, Duration::from_nanos(60_937_500));
        // However long the stall lasts, A stays Backup while B advertises.
        s.run_until(c.ms(10_000));
        assert_eq!(s.masters(), [1]);
        // Over: A at 200 again preempts B after its Master_Down_Interval.
        s.routers[0].set_priority(s.now, 200);
        s.run_until(c.ms(11_000));
        assert_eq!(s.masters(), [0]);
        assert_eq!(s.routers[1].state(), State::Backup);
    }

    #[test]
    fn partition_heals_to_one_master() {
        let c = Clock::new();
        let mut s = Segment::new(c.ms(0), lab_pair(10));
        s.start(0);
        s.start(1);
        s.run_until(c.ms(2_000));
        assert_eq!(s.masters(), [0]);
        s.lossy = true;
        s.run_until(c.ms(4_000));
        assert_eq!(s.masters(), [0, 1]);
        s.lossy = false;
        // The next advert of A makes B yield at once.
        s.run_until(c.ms(4_100));
        assert_eq!(s.masters(), [0]);
    }

    // ---------------------------------------------------------------------------------------
    // Property tests.

    #[derive(Clone, Debug)]
    enum Op {
        /// An advert from one of three peers (below, above and equal to our address).
        Advert {
            peer: u8,
            priority: u8,
            interval_cs: u16,
        },
        /// Let time pass, polling at every deadline as a caller would.
        Advance {
            ms: u64,
        },
        PeerDead,
        SetPriority(u8),
        Shutdown,
        Start,
    }

    fn op() -> impl Strategy<Value = Op> {
        let interval = prop_oneof![Just(0u16), Just(1), 1u16..=200, Just(4095), Just(4096)];
        prop_oneof![
            4 => (0u8..4, any::<u8>(), interval).prop_map(|(peer, priority, interval_cs)| {
                Op::Advert { peer, priority, interval_cs }
            }),
            4 => (0u64..5_000).prop_map(|ms| Op::Advance { ms }),
            1 => Just(Op::PeerDead),
            1 => any::<u8>().prop_map(Op::SetPriority),
            1 => Just(Op::Shutdown),
            1 => Just(Op::Start),
        ]
    }

    /// Runs `acts` (returned by the machine when it was in `before`) through the checks that
    /// hold for every event, and notes when adverts went out.
    fn check_actions(
        r: &Vrrp,
        before: State,
        acts: &[Action],
        now: Instant,
        last_sent: &mut Option<Instant>,
    ) -> Result<(), TestCaseError> {
        let after = r.state();
        let become_master = acts.contains(&Action::BecomeMaster);
        let become_backup = acts.contains(&Action::BecomeBackup);
        prop_assert!(!(become_master && become_backup));
        prop_assert_eq!(
            become_master,
            before != State::Master && after == State::Master
        );
        prop_assert_eq!(
            become_backup,
            before != State::Backup && after == State::Backup
        );
        for a in acts {
            if let Action::SendAdvert { priority } = *a {
                if priority == 0 {
                    // Only a Master's shutdown sends priority 0.
                    prop_assert_eq!(before, State::Master);
                    prop_assert_eq!(after, State::Initialize);
                } else {
                    prop_assert_eq!(after, State::Master);
                    prop_assert_eq!(priority, r.priority());
                    *last_sent = Some(now);
                }
            }
        }
        // A new Master's advert comes before it takes the addresses.
        if become_master {
            prop_assert_eq!(acts, &[send(r.priority()), Action::BecomeMaster][..]);
        }
        Ok(())
    }

    fn check_state(
        r: &Vrrp,
        now: Instant,
        last_sent: Option<Instant>,
    ) -> Result<(), TestCaseError> {
        let interval = r.config().advert_interval();
        match r.state() {
            State::Initialize => {
                prop_assert_eq!(r.next_deadline(), None);
                prop_assert_eq!(r.master(), None);
            }
            State::Backup => {
                let d = r.next_deadline().expect("a Backup has a down timer");
                // Never further than the longest Master_Down_Interval.
                let max = master_down_interval(1, centiseconds(wire::MAX_ADVER_INT));
                prop_assert!(d <= now + max);
            }
            State::Master => {
                prop_assert_eq!(r.master(), Some(r.config().primary));
                let d = r.next_deadline().expect("a Master has an advert timer");
                // Master ⇒ the next advert is due at most one interval after the last.
                let last = last_sent.expect("a Master has advertised");
                prop_assert!(d > now);
                prop_assert!(
                    d <= last + interval,
                    "next advert {:?} after the last",
                    d - last
                );
            }
        }
        let k = r.counters();
        prop_assert!(k.became_master + k.became_backup <= k.transitions);
        prop_assert!(k.priority_zero_out <= k.adverts_out);
        prop_assert!(k.priority_zero_in <= k.adverts_in);
        prop_assert!(k.adverts_discarded <= k.adverts_in);
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// Random events never panic, every action agrees with the state it leaves, and a
        /// Master always has its next advert due within one interval of the last.
        #[test]
        fn random_events_keep_the_machine_consistent(
            priority in 1u8..=255,
            interval_cs in prop_oneof![Just(1u16), 1u16..=200, Just(4095)],
            preempt in any::<bool>(),
            delay_ms in prop_oneof![Just(0u64), 0u64..10_000],
            ops in proptest::collection::vec(op(), 1..80),
        ) {
            let c = Clock::new();
            let mut r = Vrrp::new(VrrpConfig {
                preempt,
                preempt_delay: Duration::from_millis(delay_ms),
                ..cfg(priority, interval_cs)
            })
            .unwrap();
            let peers = [A, C, B, IpAddr::V4(Ipv4Addr::new(198, 19, 0, 1))];
            let mut now = c.ms(0);
            let mut last_sent = None;
            let mut shutdowns = 0;
            let acts = r.start(now);
            check_actions(&r, State::Initialize, &acts, now, &mut last_sent)?;
            for op in ops {
                let before = r.state();
                match op {
                    Op::Advance { ms } => {
                        let until = now + Duration::from_millis(ms);
                        while let Some(d) = r.next_deadline().filter(|d| *d <= until) {
                            now = now.max(d);
                            let before = r.state();
                            let prev = last_sent;
                            let acts = r.poll(now);
                            prop_assert!(!acts.is_empty(), "poll at the deadline does nothing");
                            check_actions(&r, before, &acts, now, &mut last_sent)?;
                            if before == State::Master {
                                // Polled exactly at the deadline: exactly one interval.
                                prop_assert_eq!(
                                    now - prev.unwrap(),
                                    r.config().advert_interval()
                                );
                            }
                            check_state(&r, now, last_sent)?;
                        }
                        now = until;
                        let acts = r.poll(now);
                        prop_assert!(acts.is_empty());
                    }
                    Op::Advert { peer, priority, interval_cs } => {
                        let a = advert(peers[usize::from(peer)], priority, interval_cs);
                        let acts = r.on_advert(now, &a);
                        check_actions(&r, before, &acts, now, &mut last_sent)?;
                    }
                    Op::PeerDead => {
                        let acts = r.peer_dead(now);
                        prop_assert_eq!(acts.is_empty(), before != State::Backup);
                        check_actions(&r, before, &acts, now, &mut last_sent)?;
                    }
                    Op::SetPriority(p) => {
                        let acts = r.set_priority(now, p);
                        prop_assert_eq!(r.priority(), p.max(1));
                        prop_assert_eq!(r.state(), before);
                        check_actions(&r, before, &acts, now, &mut last_sent)?;
                    }
                    Op::Shutdown => {
                        let acts = r.shutdown();
                        if before != State::Initialize {
                            shutdowns += 1;
                        }
                        prop_assert_eq!(r.state(), State::Initialize);
                        check_actions(&r, before, &acts, now, &mut last_sent)?;
                    }
                    Op::Start => {
                        let acts = r.start(now);
                        prop_assert_eq!(acts.is_empty(), before != State::Initialize);
                        check_actions(&r, before, &acts, now, &mut last_sent)?;
                    }
                }
                check_state(&r, now, last_sent)?;
                let k = r.counters();
                prop_assert_eq!(k.became_master + k.became_backup + shutdowns, k.transitions);
            }
        }

        /// Two routers with random priorities, preemption and partitions: once the segment
        /// is whole for long enough, exactly one is Master, and with preemption on both it is
        /// the better one (higher priority, then higher address).
        #[test]
        fn pairs_converge_to_one_master(
            pa in 1u8..=255,
            pb in 1u8..=255,
            preempt_a in any::<bool>(),
            preempt_b in any::<bool>(),
            interval_cs in prop_oneof![Just(10u16), 1u16..=100],
            events in proptest::collection::vec((0u64..3_000, 0u8..5), 0..12),
        ) {
            let c = Clock::new();
            let mut s = Segment::new(c.ms(0), vec![
                VrrpConfig { primary: A, preempt: preempt_a, ..cfg(pa, interval_cs) },
                VrrpConfig { preempt: preempt_b, ..cfg(pb, interval_cs) },
            ]);
            s.start(0);
            s.start(1);
            let mut t = 0;
            for (dt, e) in events {
                t += dt;
                s.run_until(c.ms(t));
                match e {
                    0 => s.lossy = !s.lossy,
                    1 if s.up[0] => s.kill(0),
                    1 => s.start(0),
                    2 if s.up[1] => s.stop(1),
                    2 => s.start(1),
                    3 => {
                        let acts = s.routers[1].peer_dead(s.now);
                        s.handle(1, acts);
                    }
                    _ => {}
                }
                for i in (0..2).filter(|&i| s.up[i]) {
                    check_state(&s.routers[i], s.now, s.last_advert(i))?;
                }
            }
            s.lossy = false;
            for i in 0..2 {
                if !s.up[i] {
                    s.start(i);
                }
            }
            // Two Masters settle at the first advert heard; a preempting Backup that beats
            // the Master takes over within one Master_Down_Interval (under 4 s with adverts
            // of at most 1 s). 20 s is plenty.
            s.run_until(c.ms(t + 20_000));
            let masters = s.masters();
            prop_assert_eq!(masters.len(), 1, "masters {:?}", masters);
            for i in 0..2 {
                check_state(&s.routers[i], s.now, s.last_advert(i))?;
            }
            // The higher priority wins if it preempts (the owner always does). Equal
            // priorities keep whoever got there first: a Backup accepts an equal Master.
            let preempts = |p: u8, flag: bool| flag || p == 255;
            if pa > pb && preempts(pa, preempt_a) {
                prop_assert_eq!(masters[0], 0);
            }
            if pb > pa && preempts(pb, preempt_b) {
                prop_assert_eq!(masters[0], 1);
            }
        }
    }
}
