//! Gateway loads for redirect mode: the load report the gateways send, and the model that turns
//! reports and the appliance's own redirects into the loads the workers choose by.
//!
//! A report is one UDP datagram of ASCII text, single spaces, no newline:
//!
//! ```text
//! vpnlb-load/1 gateway=gw1 tunnels=6 time=1733250000123 mac=<64 hex digits>
//! ```
//!
//! `mac` is HMAC-SHA256, keyed with `[redirect] report_key`, over every byte before ` mac=`.
//! `time` is the sender's clock in Unix milliseconds: it must grow from one report of a gateway
//! to the next (a replayed report is refused) and be within [`MAX_CLOCK_SKEW_MS`] of the
//! appliance's clock. Other `key=value` fields are ignored, so later versions can add some.
//!
//! A gateway's load is, with a report younger than `report_max_age`, the tunnels it reported
//! plus its *pending* redirects; without one, its redirects, each decaying with
//! `redirect_half_life`. The workers add their own redirects between updates (see
//! [`LoadBoard`]).
//!
//! A redirect is pending until a report shows it: each rise in a gateway's reported tunnels
//! retires as many of its oldest pending redirects, and a redirect nobody reported is dropped
//! `establish_time` after it was sent (the client gave up, or it is counted by now). Counting
//! every redirect of the last `establish_time` on top of a report instead counts twice the
//! clients that came up quickly, and the gateways that just got clients look fuller than they
//! are.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use dataplane::redirect::{LoadBoard, LOAD_SCALE};
use hmac::{Hmac, Mac};
use serde::Serialize;
use sha2::Sha256;

use crate::config::RedirectSettings;

/// The report format's name and version, the datagram's first field.
pub const REPORT_MAGIC: &str = "vpnlb-load/1";
/// How far a report's time may be from the appliance's clock.
pub const MAX_CLOCK_SKEW_MS: u64 = 30_000;
/// Longest report accepted (a report is well under 200 bytes).
pub const MAX_REPORT_LEN: usize = 512;

/// A verified load report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Report {
    pub gateway: String,
    pub tunnels: u32,
    /// The sender's clock, Unix milliseconds.
    pub time_ms: u64,
}

dataplane::named_reasons! {
    /// Why a load report was refused.
    pub enum Reject {
        Malformed => "malformed", "Not the report format: too long, not ASCII, a field missing or unreadable.";
        BadMac => "bad-mac", "The HMAC does not verify with the configured key.";
        Replayed => "replayed", "Not newer than the last report accepted from this gateway.";
        ClockSkew => "clock-skew", "Its time is more than 30 s from the appliance's clock.";
        UnknownGateway => "unknown-gateway", "No service of a redirecting appliance has a gateway of that name.";
        WrongSource => "wrong-source", "Sent from an address that is not the named gateway's.";
    }
}

/// Reads and authenticates a report. Only the format and the MAC are checked here; freshness
/// and the gateway are the [`LoadModel`]'s business.
pub fn parse(datagram: &[u8], key: &[u8]) -> Result<Report, Reject> {
    if datagram.len() > MAX_REPORT_LEN || !datagram.is_ascii() {
        return Err(Reject::Malformed);
    }
    let text = std::str::from_utf8(datagram).map_err(|_| Reject::Malformed)?;
    let (signed, mac_hex) = text.rsplit_once(" mac=").ok_or(Reject::Malformed)?;
    let tag = hex_decode(mac_hex).ok_or(Reject::Malformed)?;
    let mut mac = Hmac::<Sha256>::new_from_slice(key).map_err(|_| Reject::BadMac)?;
    mac.update(signed.as_bytes());
    // Constant-time, and before anything else is interpreted.
    mac.verify_slice(&tag).map_err(|_| Reject::BadMac)?;
    let mut fields = signed.split(' ');
    if fields.next() != Some(REPORT_MAGIC) {
        return Err(Reject::Malformed);
    }
    let (mut gateway, mut tunnels, mut time_ms) = (None, None, None);
    for f in fields {
        let (k, v) = f.split_once('=').ok_or(Reject::Malformed)?;
        match k {
            "gateway" if !v.is_empty() => gateway = Some(v.to_string()),
            "tunnels" => tunnels = Some(v.parse::<u32>().map_err(|_| Reject::Malformed)?),
            "time" => time_ms = Some(v.parse::<u64>().map_err(|_| Reject::Malformed)?),
            _ => {}
        }
    }
    match (gateway, tunnels, time_ms) {
        (Some(gateway), Some(tunnels), Some(time_ms)) => Ok(Report {
            gateway,
            tunnels,
            time_ms,
        }),
        _ => Err(Reject::Malformed),
    }
}

/// A report as a gateway sends it (what `scripts/gw-load-report.py` writes).
pub fn format(report: &Report, key: &[u8]) -> String {
    let signed = format!(
        "{REPORT_MAGIC} gateway={} tunnels={} time={}",
        report.gateway, report.tunnels, report.time_ms
    );
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(signed.as_bytes());
    let tag = mac.finalize().into_bytes();
    let hex: String = tag.iter().map(|b| format!("{b:02x}")).collect();
    format!("{signed} mac={hex}")
}

fn hex_decode(s: &str) -> Option<Vec<u8>> {
    if s.len() != 64 {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// How often the model samples the redirect counts (the resolution of `establish_time`).
const SAMPLE_EVERY: Duration = Duration::from_millis(100);

/// One gateway of one service.
#[derive(Debug)]
struct GatewayModel {
    /// Tunnels and arrival of the last accepted report.
    report: Option<(u32, Instant)>,
    /// Redirects no report has shown yet, as (sampled at, how many), oldest first.
    pending: VecDeque<(Instant, u64)>,
    /// The gateway's redirect count at the last sample (`pending` holds what came before).
    sampled_redirects: u64,
    /// Redirects decayed with the half-life, as of `decayed_at`.
    decayed: f64,
    decayed_at: Instant,
}

impl GatewayModel {
    fn new(now: Instant, redirects: u64) -> Self {
        GatewayModel {
            report: None,
            pending: VecDeque::new(),
            sampled_redirects: redirects,
            decayed: 0.0,
            decayed_at: now,
        }
    }

    /// Takes the redirects sent since the last sample, decays, and drops pending redirects
    /// older than `establish_time`.
    fn sample(&mut self, total: u64, now: Instant, settings: &RedirectSettings) {
        let new = total.saturating_sub(self.sampled_redirects);
        self.sampled_redirects = total;
        if new > 0 {
            self.pending.push_back((now, new));
        }
        while self
            .pending
            .front()
            .is_some_and(|(at, _)| now.duration_since(*at) > settings.establish_time)
        {
            self.pending.pop_front();
        }
        let dt = now.duration_since(self.decayed_at).as_secs_f64();
        let half_life = settings.redirect_half_life.as_secs_f64();
        self.decayed = self.decayed * (-dt / half_life).exp2() + new as f64;
        self.decayed_at = now;
    }

    /// A report of `tunnels` arrived: a rise since the last report shows that many of the oldest
    /// pending redirects came up. (The first report shows none: what it counts may predate them.)
    fn take_report(&mut self, tunnels: u32, now: Instant) {
        let mut shown = match self.report {
            Some((before, _)) => u64::from(tunnels.saturating_sub(before)),
            None => 0,
        };
        while shown > 0 {
            let Some(front) = self.pending.front_mut() else {
                break;
            };
            let retired = front.1.min(shown);
            front.1 -= retired;
            shown -= retired;
            if front.1 == 0 {
                self.pending.pop_front();
            }
        }
        self.report = Some((tunnels, now));
    }

    fn pending_redirects(&self) -> u64 {
        self.pending.iter().map(|(_, n)| n).sum()
    }
}

/// What `show gateways` says about one gateway's load.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct LoadView {
    pub reported_tunnels: Option<u32>,
    pub report_age_ms: Option<u64>,
    /// The load the workers choose by, in tunnels.
    pub load: f64,
    /// Whether `load` comes from a fresh report (else from decaying redirect counts).
    pub from_report: bool,
}

/// The loads of every gateway, kept on the board the current snapshot carries.
pub struct LoadModel {
    settings: RedirectSettings,
    board: std::sync::Arc<LoadBoard>,
    /// `[service][gateway]`, as the board's layout.
    gateways: Vec<Vec<GatewayModel>>,
    /// The last report time accepted per gateway name (replay protection survives relayouts).
    last_time: HashMap<String, u64>,
    last_sample: Option<Instant>,
}

impl LoadModel {
    pub fn new(settings: RedirectSettings, board: std::sync::Arc<LoadBoard>, now: Instant) -> Self {
        let mut m = LoadModel {
            settings,
            gateways: Vec::new(),
            board,
            last_time: HashMap::new(),
            last_sample: None,
        };
        m.rebuild(now);
        m
    }

    fn rebuild(&mut self, now: Instant) {
        let board = &self.board;
        // The board is indexed in u16: services or gateways past u16::MAX get no model rather
        // than one aliasing another's counts.
        self.gateways = board
            .layout()
            .iter()
            .zip(0..=u16::MAX)
            .map(|((_, gateways), s)| {
                gateways
                    .iter()
                    .zip(0..=u16::MAX)
                    .map(|(_, g)| GatewayModel::new(now, board.redirects(s, g)))
                    .collect()
            })
            .collect();
    }

    /// A reload's settings (timings; the key is the caller's): the gateways' models keep their
    /// state, and count with the new settings from now on.
    pub fn set_settings(&mut self, settings: RedirectSettings) {
        self.settings = settings;
    }

    /// Follows the snapshot's board: a new one (the services or gateways changed) starts the
    /// model over; reports keep their replay protection.
    pub fn follow(&mut self, board: &std::sync::Arc<LoadBoard>, now: Instant) {
        if !std::sync::Arc::ptr_eq(board, &self.board) {
            self.board = std::sync::Arc::clone(board);
            self.rebuild(now);
        }
    }

    /// Takes a verified report from `from` at `now` (`now_ms`: the appliance's Unix clock).
    /// `addresses(service, gateway)` are a gateway's addresses.
    pub fn accept(
        &mut self,
        report: &Report,
        from: std::net::IpAddr,
        now: Instant,
        now_ms: u64,
        addresses: impl Fn(usize, usize) -> Vec<std::net::IpAddr>,
    ) -> Result<usize, Reject> {
        let matches: Vec<(usize, usize)> = self
            .board
            .layout()
            .iter()
            .enumerate()
            .flat_map(|(s, (_, gws))| {
                gws.iter()
                    .enumerate()
                    .filter(|(_, name)| **name == report.gateway)
                    .map(move |(g, _)| (s, g))
            })
            .collect();
        if matches.is_empty() {
            return Err(Reject::UnknownGateway);
        }
        if !matches
            .iter()
            .any(|&(s, g)| addresses(s, g).contains(&from))
        {
            return Err(Reject::WrongSource);
        }
        if report.time_ms.abs_diff(now_ms) > MAX_CLOCK_SKEW_MS {
            return Err(Reject::ClockSkew);
        }
        if self
            .last_time
            .get(&report.gateway)
            .is_some_and(|&t| report.time_ms <= t)
        {
            return Err(Reject::Replayed);
        }
        self.last_time
            .insert(report.gateway.clone(), report.time_ms);
        // Redirects up to now first, so the report can show them.
        self.recompute(now);
        for &(s, g) in &matches {
            if let Some(m) = self.gateways.get_mut(s).and_then(|v| v.get_mut(g)) {
                m.take_report(report.tunnels, now);
            }
        }
        self.recompute(now);
        Ok(matches.len())
    }

    /// Samples the redirect counts and recomputes every load, at most every [`SAMPLE_EVERY`]
    /// (call it every control loop: between two samples the workers count their redirects on
    /// the board themselves, and only decay and report ages move, slowly).
    pub fn update(&mut self, now: Instant) {
        if self
            .last_sample
            .is_some_and(|t| now.duration_since(t) < SAMPLE_EVERY)
        {
            return;
        }
        self.last_sample = Some(now);
        self.recompute(now);
    }

    /// Samples the redirect counts and writes every gateway's load to the board.
    fn recompute(&mut self, now: Instant) {
        // The models are at most u16::MAX + 1 per level (rebuild).
        for (gws, s16) in self.gateways.iter_mut().zip(0..=u16::MAX) {
            for (m, g16) in gws.iter_mut().zip(0..=u16::MAX) {
                let total = self.board.redirects(s16, g16);
                m.sample(total, now, &self.settings);
                let fresh = m
                    .report
                    .filter(|(_, at)| now.duration_since(*at) <= self.settings.report_max_age);
                // Both loads count the redirects up to `total`; the workers add later ones.
                let load = match fresh {
                    Some((tunnels, _)) => {
                        let pending = i64::try_from(m.pending_redirects()).unwrap_or(i64::MAX);
                        i64::from(tunnels)
                            .saturating_add(pending)
                            .saturating_mul(LOAD_SCALE)
                    }
                    // Rounded first; `as` saturates (NaN: 0), the clamp wanted here.
                    #[allow(clippy::cast_possible_truncation)]
                    None => (m.decayed * LOAD_SCALE as f64).round() as i64,
                };
                self.board.set_load(s16, g16, load, total);
            }
        }
    }

    /// The load of a gateway as the workers see it now.
    pub fn view(&self, service: usize, gateway: usize, now: Instant) -> LoadView {
        let Some(m) = self.gateways.get(service).and_then(|v| v.get(gateway)) else {
            return LoadView::default();
        };
        // A model exists only at u16 indices (rebuild).
        let (Ok(s), Ok(g)) = (u16::try_from(service), u16::try_from(gateway)) else {
            return LoadView::default();
        };
        let load = self.board.load(s, g) as f64 / LOAD_SCALE as f64;
        let age = m.report.map(|(_, at)| now.duration_since(at));
        LoadView {
            reported_tunnels: m.report.map(|(n, _)| n),
            report_age_ms: age.map(crate::units::millis),
            load,
            from_report: age.is_some_and(|a| a <= self.settings.report_max_age),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::IpAddr;
    use std::sync::Arc;

    const KEY: &[u8] = b"vpnlb-lab-load-report-key";

    #[test]
    fn format_and_parse_agree_and_the_mac_is_checked() {
        let r = Report {
            gateway: "gw1".into(),
            tunnels: 6,
            time_ms: 1_733_250_000_123,
        };
        let text = format(&r, KEY);
        assert!(text.starts_with("vpnlb-load/1 gateway=gw1 tunnels=6 time=1733250000123 mac="));
        assert_eq!(parse(text.as_bytes(), KEY), Ok(r.clone()));
        assert_eq!(
            parse(text.as_bytes(), b"another-key-of-16b"),
            Err(Reject::BadMac)
        );
        // Any change to the signed part breaks the MAC.
        let forged = text.replacen("tunnels=6", "tunnels=0", 1);
        assert_eq!(parse(forged.as_bytes(), KEY), Err(Reject::BadMac));
        for bad in [
            "",
            "vpnlb-load/1 gateway=gw1 tunnels=6 time=1",
            "vpnlb-load/1 gateway=gw1 tunnels=6 time=1 mac=zz",
            &text[..text.len() - 2],
            &format!("{text}\n"),
        ] {
            assert_eq!(
                parse(bad.as_bytes(), KEY),
                Err(Reject::Malformed),
                "{bad:?}"
            );
        }
        assert_eq!(parse(&[0xff; 80], KEY), Err(Reject::Malformed));
        assert_eq!(parse(&vec![b'a'; 600], KEY), Err(Reject::Malformed));
    }

    /// A report computed independently (Python's `hmac.new(key, text, hashlib.sha256)`, as
    /// `scripts/gw-load-report.py` does).
    #[test]
    fn an_independently_computed_report_verifies() {
        let text = "vpnlb-load/1 gateway=gw1 tunnels=6 time=1733250000123 \
                    mac=44f40ef5399c2c104778f9a5bafc215ce621fc18073eaf4b5fe295b6c2dd7a44";
        let r = report("gw1", 6, 1_733_250_000_123);
        assert_eq!(parse(text.as_bytes(), KEY), Ok(r.clone()));
        assert_eq!(format(&r, KEY), text);
    }

    fn settings() -> RedirectSettings {
        RedirectSettings {
            report_port: Some(5685),
            report_key: KEY.to_vec(),
            report_max_age: Duration::from_secs(5),
            establish_time: Duration::from_secs(2),
            redirect_half_life: Duration::from_secs(60),
        }
    }

    fn board() -> Arc<LoadBoard> {
        Arc::new(LoadBoard::new(vec![(
            "vpn".into(),
            vec!["gw1".into(), "gw2".into()],
        )]))
    }

    fn gw_addr(g: usize) -> IpAddr {
        IpAddr::from([198, 19, 0, 11 + g as u8])
    }

    fn report(gateway: &str, tunnels: u32, time_ms: u64) -> Report {
        Report {
            gateway: gateway.into(),
            tunnels,
            time_ms,
        }
    }

    #[test]
    fn a_report_plus_the_redirects_it_does_not_show_yet() {
        let t0 = Instant::now();
        let b = board();
        let mut m = LoadModel::new(settings(), Arc::clone(&b), t0);
        let addrs = |_: usize, g: usize| vec![gw_addr(g)];
        let at = |s: f64| t0 + Duration::from_secs_f64(s);
        let ms = 1_000_000;
        let report_at = |m: &mut LoadModel, tunnels: u32, s: f64| {
            let t = ms + (s * 1000.0) as u64;
            m.accept(&report("gw1", tunnels, t), gw_addr(0), at(s), t, addrs)
                .unwrap();
        };
        report_at(&mut m, 4, 0.0);
        // 3 redirects; the next report shows only 1 of them up: 4 + 1 + 2 pending.
        for _ in 0..3 {
            b.count_redirect(0, 0);
        }
        m.update(at(0.2));
        assert_eq!(b.load(0, 0), 7 * LOAD_SCALE);
        report_at(&mut m, 5, 1.0);
        assert_eq!(b.load(0, 0), 7 * LOAD_SCALE);
        // The other 2 come up: shown once, not counted twice.
        report_at(&mut m, 7, 1.5);
        assert_eq!(b.load(0, 0), 7 * LOAD_SCALE);
        // A worker redirects again: at once on the board, and pending from the next sample.
        b.count_redirect(0, 0);
        assert_eq!(b.load(0, 0), 8 * LOAD_SCALE);
        m.update(at(1.6));
        assert_eq!(b.load(0, 0), 8 * LOAD_SCALE);
        let v = m.view(0, 0, at(2.0));
        assert_eq!(v.reported_tunnels, Some(7));
        assert_eq!(v.report_age_ms, Some(500));
        assert!(v.from_report && (v.load - 8.0).abs() < 1e-9, "{v:?}");
        // Clients that leave do not retire pending redirects; a pending redirect no report ever
        // shows counts for establish_time (2 s) after it was sent.
        report_at(&mut m, 6, 3.0);
        assert_eq!(b.load(0, 0), 7 * LOAD_SCALE);
        m.update(at(3.7));
        assert_eq!(b.load(0, 0), 6 * LOAD_SCALE);
        // The report goes stale: the decaying redirect count takes over (4 redirects, a few
        // seconds old at a 60 s half-life).
        m.update(at(9.0));
        let v = m.view(0, 0, at(9.0));
        assert!(!v.from_report);
        assert!(v.load > 3.5 && v.load < 4.0, "{v:?}");
        // gw2 never reported and got no redirects.
        assert_eq!(m.view(0, 1, at(9.0)).load, 0.0);
    }

    /// The lab's failure: clients redirected to a gateway come up within a report interval.
    /// Counting them again on top of the report made that gateway look twice as full, and the
    /// pre-loaded gateway got more than its share.
    #[test]
    fn quick_clients_are_not_counted_twice() {
        let t0 = Instant::now();
        let b = board();
        let mut m = LoadModel::new(settings(), Arc::clone(&b), t0);
        let addrs = |_: usize, g: usize| vec![gw_addr(g)];
        let ms = 1_000_000;
        m.accept(&report("gw2", 0, ms), gw_addr(1), t0, ms, addrs)
            .unwrap();
        for _ in 0..6 {
            b.count_redirect(0, 1);
        }
        let t = t0 + Duration::from_millis(900);
        m.update(t);
        m.accept(&report("gw2", 6, ms + 900), gw_addr(1), t, ms + 900, addrs)
            .unwrap();
        assert_eq!(b.load(0, 1), 6 * LOAD_SCALE);
    }

    #[test]
    fn decaying_redirects_halve_every_half_life() {
        let t0 = Instant::now();
        let b = board();
        let mut m = LoadModel::new(settings(), Arc::clone(&b), t0);
        for _ in 0..8 {
            b.count_redirect(0, 1);
        }
        m.update(t0);
        assert_eq!(b.load(0, 1), 8 * LOAD_SCALE);
        m.update(t0 + Duration::from_secs(60));
        assert!((b.load(0, 1) - 4 * LOAD_SCALE).abs() <= 1);
        m.update(t0 + Duration::from_secs(120));
        assert!((b.load(0, 1) - 2 * LOAD_SCALE).abs() <= 1);
    }

    #[test]
    fn reports_are_refused_by_reason() {
        let t0 = Instant::now();
        let mut m = LoadModel::new(settings(), board(), t0);
        let addrs = |_: usize, g: usize| vec![gw_addr(g)];
        let ms = 5_000_000;
        let ok = m.accept(&report("gw2", 1, ms), gw_addr(1), t0, ms, addrs);
        assert_eq!(ok, Ok(1));
        let e = |r: Report, from| m.accept(&r, from, t0, ms, addrs);
        let mut e = e;
        assert_eq!(e(report("gw2", 1, ms), gw_addr(1)), Err(Reject::Replayed));
        assert_eq!(
            e(report("gw2", 1, ms - 1), gw_addr(1)),
            Err(Reject::Replayed)
        );
        assert_eq!(
            e(report("gw9", 1, ms + 1), gw_addr(1)),
            Err(Reject::UnknownGateway)
        );
        assert_eq!(
            e(report("gw2", 1, ms + 1), gw_addr(0)),
            Err(Reject::WrongSource)
        );
        assert_eq!(
            e(report("gw2", 1, ms + MAX_CLOCK_SKEW_MS + 1), gw_addr(1)),
            Err(Reject::ClockSkew)
        );
        assert_eq!(e(report("gw2", 2, ms + 1), gw_addr(1)), Ok(1));
    }

    #[test]
    fn a_new_board_starts_over_but_keeps_replay_protection() {
        let t0 = Instant::now();
        let mut m = LoadModel::new(settings(), board(), t0);
        let addrs = |_: usize, g: usize| vec![gw_addr(g)];
        m.accept(&report("gw1", 4, 10_000), gw_addr(0), t0, 10_000, addrs)
            .unwrap();
        let b2 = board();
        m.follow(&b2, t0);
        assert_eq!(m.view(0, 0, t0).reported_tunnels, None);
        assert_eq!(
            m.accept(&report("gw1", 4, 10_000), gw_addr(0), t0, 10_000, addrs),
            Err(Reject::Replayed)
        );
    }
}
