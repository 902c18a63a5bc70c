//! VRRPv3 (RFC 5798) for the HA pair: configuration, validation of received adverts, the
//! timing rules, and (in [`machine`]) the state machine of one virtual router.
//!
//! Everything here is pure: no sockets, threads or clock reads. The daemon receives IP
//! protocol 112, hands the IP header's TTL and addresses and the VRRP bytes to
//! [`Vrrp::receive`] (or [`validate`] then [`Vrrp::on_advert`]), calls [`Vrrp::poll`] at
//! [`Vrrp::next_deadline`], and carries out the [`Action`]s: send an advert (built by
//! [`Vrrp::encode_advert`], sent to 224.0.0.18 / ff02::12 with TTL 255), take the virtual
//! addresses and announce them (gratuitous ARP / unsolicited NA), or give them up.
//!
//! Compatibility with keepalived (Debian's, see `shared/PEERS.md`) decides the details the RFC
//! leaves open: the checksum covers the pseudo-header over IPv4 too, an advert must carry
//! exactly the virtual addresses we have configured, and `preempt_delay` counts from start.

pub mod machine;

use std::net::IpAddr;
use std::time::Duration;

use dataplane::wire::vrrp::{self as wire, Family, VrrpPacket};
use dataplane::wire::Error as WireError;
use serde::Serialize;

pub use machine::{Action, AdvertErrorCounters, State, Vrrp, VrrpCounters};

/// Configuration of one virtual router (one VRID, one address family).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VrrpConfig {
    /// Virtual router id, 1..=255; the same on both appliances.
    pub vrid: u8,
    /// Our priority, 1..=255; 255 means we own the addresses (we become Master at once and
    /// always preempt).
    pub priority: u8,
    /// Advertisement interval in centiseconds, 1..=4095 (keepalived's `advert_int` × 100).
    pub advert_interval_cs: u16,
    /// Whether a higher-priority Backup takes over from a lower-priority Master (RFC 5798's
    /// Preempt_Mode; keepalived's default, `nopreempt` turns it off).
    pub preempt: bool,
    /// With `preempt`: how long after [`Vrrp::start`] a lower-priority Master is still
    /// accepted (keepalived's `preempt_delay`), so a restarted appliance does not take the
    /// addresses back before it is ready. Zero: no delay.
    pub preempt_delay: Duration,
    /// The virtual addresses, all of one family. keepalived drops adverts whose list differs
    /// from its own, so both appliances must configure exactly the same set.
    pub addresses: Vec<IpAddr>,
    /// Our own address on the segment: the adverts' source, and the tie-breaker between equal
    /// priorities. For IPv6 RFC 5798 wants the interface's link-local address.
    pub primary: IpAddr,
}

impl VrrpConfig {
    /// The address family of the router (that of `primary`).
    pub fn family(&self) -> Family {
        Family::of(&self.primary)
    }

    /// The advertisement interval.
    pub fn advert_interval(&self) -> Duration {
        centiseconds(self.advert_interval_cs)
    }

    /// Checks what the protocol and keepalived require of a configuration.
    pub fn check(&self) -> Result<(), VrrpConfigError> {
        if self.vrid == 0 {
            return Err(VrrpConfigError::ZeroVrid);
        }
        if self.priority == 0 {
            return Err(VrrpConfigError::ZeroPriority);
        }
        if self.advert_interval_cs == 0 || self.advert_interval_cs > wire::MAX_ADVER_INT {
            return Err(VrrpConfigError::AdvertInterval {
                centiseconds: self.advert_interval_cs,
            });
        }
        if self.addresses.is_empty() {
            return Err(VrrpConfigError::NoAddress);
        }
        if self.addresses.len() > usize::from(u8::MAX) {
            return Err(VrrpConfigError::TooManyAddresses {
                count: self.addresses.len(),
            });
        }
        let family = self.family();
        if let Some(a) = self.addresses.iter().find(|a| Family::of(a) != family) {
            return Err(VrrpConfigError::OtherFamily {
                address: *a,
                primary: self.primary,
            });
        }
        for (i, a) in self.addresses.iter().enumerate() {
            if self.addresses[..i].contains(a) {
                return Err(VrrpConfigError::Duplicate { address: *a });
            }
        }
        if self.primary.is_unspecified() || self.primary.is_multicast() {
            return Err(VrrpConfigError::BadPrimary {
                primary: self.primary,
            });
        }
        Ok(())
    }
}

/// What [`VrrpConfig::check`] refuses.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum VrrpConfigError {
    #[error("vrrp: vrid must be 1..=255")]
    ZeroVrid,
    #[error("vrrp: priority must be 1..=255 (0 is what a leaving master sends)")]
    ZeroPriority,
    #[error(
        "vrrp: advert interval must be 1..={max} centiseconds, not {centiseconds}",
        max = wire::MAX_ADVER_INT
    )]
    AdvertInterval { centiseconds: u16 },
    #[error("vrrp: at least one virtual address is required (RFC 5798 §5.2.5)")]
    NoAddress,
    #[error("vrrp: at most 255 virtual addresses fit an advert, not {count}")]
    TooManyAddresses { count: usize },
    #[error("vrrp: virtual address {address} is not of the family of primary {primary}")]
    OtherFamily { address: IpAddr, primary: IpAddr },
    #[error("vrrp: virtual address {address} is listed twice")]
    Duplicate { address: IpAddr },
    #[error("vrrp: primary {primary} cannot be an advert's source")]
    BadPrimary { primary: IpAddr },
}

/// A received advertisement that passed [`validate`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Advert {
    /// The sender's primary address (the IP source).
    pub src: IpAddr,
    /// The IP TTL / hop limit it arrived with (255 after validation).
    pub ttl: u8,
    /// Virtual router id.
    pub vrid: u8,
    /// Sender's priority; 0 means the Master is leaving.
    pub priority: u8,
    /// Sender's advertisement interval, centiseconds.
    pub interval_cs: u16,
    /// The virtual addresses it carries.
    pub addresses: Vec<IpAddr>,
}

/// Why a received VRRP message is not an advert for this router.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum AdvertError {
    /// IP TTL / hop limit not 255: it crossed a router (RFC 5798 §7.1).
    BadTtl,
    /// Version other than 3 (VRRPv2, say).
    BadVersion,
    /// Type other than advertisement.
    BadType,
    /// Checksum over the pseudo-header and the message is wrong.
    BadChecksum,
    /// Another virtual router's advert. Several VRIDs may share a segment, so this is not an
    /// error of this router: counted apart, for the caller to ignore or pass to another one.
    WrongVrid,
    /// The virtual addresses differ from ours (keepalived drops these too): a misconfigured
    /// peer, or a forgery, which must not be allowed to win or lose an election against us.
    AddressMismatch,
    /// Advertisement interval of 0, which would make a Backup take over at once.
    BadInterval,
    /// Shorter than its header or its address count says, or longer (keepalived drops both).
    Truncated,
    /// The IP addresses or the message are not of this router's family.
    WrongFamily,
    /// Our own advert (source = our primary address), looped back.
    FromSelf,
}

impl AdvertError {
    /// Every reason, in the order of [`AdvertErrorCounters`]'s fields.
    pub const ALL: [AdvertError; 10] = [
        AdvertError::BadTtl,
        AdvertError::BadVersion,
        AdvertError::BadType,
        AdvertError::BadChecksum,
        AdvertError::WrongVrid,
        AdvertError::AddressMismatch,
        AdvertError::BadInterval,
        AdvertError::Truncated,
        AdvertError::WrongFamily,
        AdvertError::FromSelf,
    ];

    /// The reason as counters and logs name it.
    pub fn as_str(self) -> &'static str {
        match self {
            AdvertError::BadTtl => "bad-ttl",
            AdvertError::BadVersion => "bad-version",
            AdvertError::BadType => "bad-type",
            AdvertError::BadChecksum => "bad-checksum",
            AdvertError::WrongVrid => "wrong-vrid",
            AdvertError::AddressMismatch => "address-mismatch",
            AdvertError::BadInterval => "bad-interval",
            AdvertError::Truncated => "truncated",
            AdvertError::WrongFamily => "wrong-family",
            AdvertError::FromSelf => "from-self",
        }
    }
}

impl std::fmt::Display for AdvertError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::error::Error for AdvertError {}

/// Checks a received VRRP message (`vrrp`: the IP payload; `ip_ttl`, `src`, `dst`: from its IP
/// header) against `cfg`, in RFC 5798 §7.1's order: TTL, version, length, checksum, VRID; then
/// our own adverts, the interval, and the address list as keepalived does.
///
/// The family comes first (the others need it), and the VRID is checked before anything that
/// depends on our configuration, so that another router's advert reads as
/// [`AdvertError::WrongVrid`], never as a mismatch of ours. The destination only enters the
/// checksum: keepalived's unicast mode sends to the peer's address rather than the group.
pub fn validate(
    cfg: &VrrpConfig,
    ip_ttl: u8,
    src: IpAddr,
    dst: IpAddr,
    vrrp: &[u8],
) -> Result<Advert, AdvertError> {
    let family = cfg.family();
    if Family::of(&src) != family || Family::of(&dst) != family {
        return Err(AdvertError::WrongFamily);
    }
    if ip_ttl != wire::TTL {
        return Err(AdvertError::BadTtl);
    }
    let p = VrrpPacket::new_checked(vrrp, family).map_err(|e| match e {
        WireError::BadHeader => AdvertError::BadVersion,
        WireError::Truncated | WireError::BadLength => AdvertError::Truncated,
    })?;
    if p.msg_type() != wire::TYPE_ADVERTISEMENT {
        return Err(AdvertError::BadType);
    }
    if !p.verify_checksum(src, dst) {
        return Err(AdvertError::BadChecksum);
    }
    if p.vrid() != cfg.vrid {
        return Err(AdvertError::WrongVrid);
    }
    if src == cfg.primary {
        return Err(AdvertError::FromSelf);
    }
    if p.max_adver_int() == 0 {
        return Err(AdvertError::BadInterval);
    }
    let addresses: Vec<IpAddr> = p.addresses().collect();
    if !same_addresses(&cfg.addresses, &addresses) {
        return Err(AdvertError::AddressMismatch);
    }
    Ok(Advert {
        src,
        ttl: ip_ttl,
        vrid: p.vrid(),
        priority: p.priority(),
        interval_cs: p.max_adver_int(),
        addresses,
    })
}

/// Whether an advert's list is our configured set, in any order (keepalived compares the
/// count, then looks up each of its addresses). `ours` has no duplicates (see
/// [`VrrpConfig::check`]), so equal counts and every one of ours present mean a permutation.
pub(crate) fn same_addresses(ours: &[IpAddr], theirs: &[IpAddr]) -> bool {
    ours.len() == theirs.len() && ours.iter().all(|a| theirs.contains(a))
}

/// `cs` centiseconds as a duration.
pub fn centiseconds(cs: u16) -> Duration {
    Duration::from_millis(u64::from(cs) * 10)
}

/// Skew_Time (RFC 5798 §6.1): `((256 − priority) × Master_Adver_Interval) / 256`, so that of
/// several Backups the one with the highest priority times out first.
///
/// Computed in nanoseconds rather than the RFC's whole centiseconds, as keepalived does in
/// microseconds: with 100 ms adverts and priority 100 it is 60.9375 ms, not 60 ms.
pub fn skew_time(priority: u8, master_adver_interval: Duration) -> Duration {
    master_adver_interval * (256 - u32::from(priority)) / 256
}

/// Master_Down_Interval (RFC 5798 §6.1): `3 × Master_Adver_Interval + Skew_Time`, how long a
/// Backup waits without adverts before it takes over (360.9375 ms for 100 ms adverts at
/// priority 100, 3.609375 s for 1 s adverts).
pub fn master_down_interval(priority: u8, master_adver_interval: Duration) -> Duration {
    master_adver_interval * 3 + skew_time(priority, master_adver_interval)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn cfg_v4() -> VrrpConfig {
        VrrpConfig {
            vrid: 51,
            priority: 200,
            advert_interval_cs: 100,
            preempt: true,
            preempt_delay: Duration::ZERO,
            addresses: vec![
                IpAddr::V4(Ipv4Addr::new(198, 19, 0, 1)),
                IpAddr::V4(Ipv4Addr::new(198, 18, 0, 100)),
            ],
            primary: IpAddr::V4(Ipv4Addr::new(198, 19, 0, 2)),
        }
    }

    fn cfg_v6() -> VrrpConfig {
        VrrpConfig {
            vrid: 51,
            priority: 100,
            advert_interval_cs: 100,
            preempt: true,
            preempt_delay: Duration::ZERO,
            addresses: vec![
                "fe80::1".parse().unwrap(),
                "2001:2:0:1::100".parse().unwrap(),
            ],
            primary: "fe80::200:ff:fe00:203".parse().unwrap(),
        }
    }

    const B_V4: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 19, 0, 3));
    const G4: IpAddr = IpAddr::V4(wire::VRRP_V4_GROUP);
    const G6: IpAddr = IpAddr::V6(wire::VRRP_V6_GROUP);

    /// scapy 2.5.0: `IP(src="198.19.0.2", dst="224.0.0.18", ttl=255)/VRRPv3(vrid=51,
    /// priority=200, adv=100, addrlist=["198.19.0.1", "198.18.0.100"])` after the IP header:
    /// appliance A's advert in the lab.
    const ADVERT_A: [u8; 16] = [
        0x31, 0x33, 0xc8, 0x02, 0x00, 0x64, 0xd3, 0x31, 198, 19, 0, 1, 198, 18, 0, 100,
    ];

    /// scapy 2.5.0: `IPv6(src="fe80::200:ff:fe00:202", dst="ff02::12", hlim=255)/
    /// VRRPv3(vrid=51, priority=100, adv=100, addrlist=["fe80::1", "2001:2:0:1::100"])`.
    const ADVERT_V6: [u8; 40] = [
        0x31, 0x33, 0x64, 0x02, 0x00, 0x64, 0x49, 0xb0, //
        0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01, //
        0x20, 0x01, 0x00, 0x02, 0x00, 0x00, 0x00, 0x01, 0, 0, 0, 0, 0, 0, 0x01, 0x00,
    ];

    /// B's view: A's advert arrives at B (primary 198.19.0.3).
    fn cfg_b() -> VrrpConfig {
        VrrpConfig {
            priority: 100,
            primary: B_V4,
            ..cfg_v4()
        }
    }

    fn a_src() -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(198, 19, 0, 2))
    }

    /// A message from A to the group with some fields changed, checksum recomputed.
    fn from_a(vrid: u8, priority: u8, interval: u16, addrs: &[IpAddr]) -> Vec<u8> {
        wire::emit_advert(vrid, priority, interval, addrs, a_src(), G4).unwrap()
    }

    #[test]
    fn timing_rules() {
        let ms100 = Duration::from_millis(100);
        assert_eq!(
            skew_time(100, ms100),
            Duration::from_micros(60_937) + Duration::from_nanos(500)
        );
        assert_eq!(
            master_down_interval(100, ms100),
            Duration::from_nanos(360_937_500)
        );
        assert_eq!(
            master_down_interval(100, Duration::from_secs(1)),
            Duration::from_nanos(3_609_375_000)
        );
        assert_eq!(skew_time(200, ms100), Duration::from_nanos(21_875_000));
        assert_eq!(skew_time(255, ms100), ms100 / 256);
        assert_eq!(skew_time(1, ms100), ms100 * 255 / 256);
        // Higher priority, shorter wait: the best Backup takes over first.
        for p in 1..255u8 {
            assert!(master_down_interval(p + 1, ms100) < master_down_interval(p, ms100));
        }
        assert_eq!(centiseconds(100), Duration::from_secs(1));
        assert_eq!(centiseconds(4095), Duration::from_millis(40_950));
        assert_eq!(cfg_v4().advert_interval(), Duration::from_secs(1));
    }

    #[test]
    fn config_checks() {
        assert_eq!(cfg_v4().check(), Ok(()));
        assert_eq!(cfg_v6().check(), Ok(()));
        assert_eq!(cfg_v4().family(), Family::Ipv4);
        assert_eq!(cfg_v6().family(), Family::Ipv6);
        let bad: Vec<(VrrpConfig, &str)> = vec![
            (
                VrrpConfig {
                    vrid: 0,
                    ..cfg_v4()
                },
                "vrid",
            ),
            (
                VrrpConfig {
                    priority: 0,
                    ..cfg_v4()
                },
                "priority",
            ),
            (
                VrrpConfig {
                    advert_interval_cs: 0,
                    ..cfg_v4()
                },
                "interval",
            ),
            (
                VrrpConfig {
                    advert_interval_cs: 4096,
                    ..cfg_v4()
                },
                "interval",
            ),
            (
                VrrpConfig {
                    addresses: vec![],
                    ..cfg_v4()
                },
                "at least one",
            ),
            (
                VrrpConfig {
                    addresses: (0..256u32)
                        .map(|i| IpAddr::V4(Ipv4Addr::from(i + 1)))
                        .collect(),
                    ..cfg_v4()
                },
                "at most 255",
            ),
            (
                VrrpConfig {
                    addresses: vec![cfg_v4().addresses[0], cfg_v6().addresses[0]],
                    ..cfg_v4()
                },
                "family",
            ),
            (
                VrrpConfig {
                    primary: cfg_v6().primary,
                    ..cfg_v4()
                },
                "family",
            ),
            (
                VrrpConfig {
                    addresses: vec![cfg_v4().addresses[0], cfg_v4().addresses[0]],
                    ..cfg_v4()
                },
                "twice",
            ),
            (
                VrrpConfig {
                    primary: G4,
                    ..cfg_v4()
                },
                "source",
            ),
            (
                VrrpConfig {
                    primary: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
                    ..cfg_v4()
                },
                "source",
            ),
        ];
        for (c, what) in bad {
            let e = c.check().unwrap_err().to_string();
            assert!(e.contains(what), "{e} lacks {what}");
        }
        // 255 addresses and the extreme values are fine.
        let c = VrrpConfig {
            vrid: 255,
            priority: 255,
            advert_interval_cs: 4095,
            addresses: (0..255u32)
                .map(|i| IpAddr::V4(Ipv4Addr::from(i + 1)))
                .collect(),
            ..cfg_v4()
        };
        assert_eq!(c.check(), Ok(()));
    }

    #[test]
    fn accepts_the_peers_advert() {
        let a = validate(&cfg_b(), 255, a_src(), G4, &ADVERT_A).unwrap();
        assert_eq!(
            a,
            Advert {
                src: a_src(),
                ttl: 255,
                vrid: 51,
                priority: 200,
                interval_cs: 100,
                addresses: cfg_v4().addresses,
            }
        );
        // The same addresses in another order are the same set.
        let mut rev = cfg_v4().addresses;
        rev.reverse();
        let m = from_a(51, 200, 100, &rev);
        assert_eq!(
            validate(&cfg_b(), 255, a_src(), G4, &m).unwrap().addresses,
            rev
        );
        // Priority 0 is a valid advert (the Master leaving).
        let m = from_a(51, 0, 100, &cfg_v4().addresses);
        assert_eq!(
            validate(&cfg_b(), 255, a_src(), G4, &m).unwrap().priority,
            0
        );
        // Unicast destination (keepalived's unicast_peer): the checksum uses it.
        let m = wire::emit_advert(51, 200, 100, &cfg_v4().addresses, a_src(), B_V4).unwrap();
        assert!(validate(&cfg_b(), 255, a_src(), B_V4, &m).is_ok());
        assert_eq!(
            validate(&cfg_b(), 255, a_src(), G4, &m),
            Err(AdvertError::BadChecksum)
        );
    }

    #[test]
    fn accepts_ipv6_adverts() {
        let src: IpAddr = "fe80::200:ff:fe00:202".parse().unwrap();
        let a = validate(&cfg_v6(), 255, src, G6, &ADVERT_V6).unwrap();
        assert_eq!(a.priority, 100);
        assert_eq!(a.addresses, cfg_v6().addresses);
        assert_eq!(
            validate(&cfg_v6(), 64, src, G6, &ADVERT_V6),
            Err(AdvertError::BadTtl)
        );
        // Read as IPv4 it is the wrong family, whatever the bytes.
        assert_eq!(
            validate(&cfg_v4(), 255, src, G6, &ADVERT_V6),
            Err(AdvertError::WrongFamily)
        );
        assert_eq!(
            validate(&cfg_v6(), 255, a_src(), G4, &ADVERT_A),
            Err(AdvertError::WrongFamily)
        );
        assert_eq!(
            validate(&cfg_v6(), 255, src, G4, &ADVERT_V6),
            Err(AdvertError::WrongFamily)
        );
    }

    #[test]
    fn every_bad_field_is_rejected_with_its_reason() {
        let cfg = cfg_b();
        let ok = |ttl, m: &[u8]| validate(&cfg, ttl, a_src(), G4, m);
        for ttl in [0u8, 1, 64, 128, 254] {
            assert_eq!(ok(ttl, &ADVERT_A), Err(AdvertError::BadTtl));
        }
        for len in 0..ADVERT_A.len() {
            assert_eq!(
                ok(255, &ADVERT_A[..len]),
                Err(AdvertError::Truncated),
                "len {len}"
            );
        }
        let mut long = ADVERT_A.to_vec();
        long.extend_from_slice(&[0; 4]);
        assert_eq!(ok(255, &long), Err(AdvertError::Truncated));
        for v in [0u8, 1, 2, 4, 15] {
            let mut m = ADVERT_A;
            m[0] = (v << 4) | 1;
            assert_eq!(ok(255, &m), Err(AdvertError::BadVersion), "version {v}");
        }
        for t in [0u8, 2, 3, 15] {
            let mut m = ADVERT_A;
            m[0] = 0x30 | t;
            assert_eq!(ok(255, &m), Err(AdvertError::BadType), "type {t}");
        }
        let mut m = ADVERT_A;
        m[2] = 201;
        assert_eq!(ok(255, &m), Err(AdvertError::BadChecksum));
        let mut m = ADVERT_A;
        m[7] ^= 0xff;
        assert_eq!(ok(255, &m), Err(AdvertError::BadChecksum));
        // Another VRID, even with other addresses, is only "not ours".
        let other = [IpAddr::V4(Ipv4Addr::new(198, 18, 0, 200))];
        assert_eq!(
            ok(255, &from_a(52, 200, 100, &other)),
            Err(AdvertError::WrongVrid)
        );
        assert_eq!(
            ok(255, &from_a(52, 200, 100, &cfg_v4().addresses)),
            Err(AdvertError::WrongVrid)
        );
        // Our own advert looped back.
        let own = wire::emit_advert(51, 100, 100, &cfg.addresses, B_V4, G4).unwrap();
        assert_eq!(
            validate(&cfg, 255, B_V4, G4, &own),
            Err(AdvertError::FromSelf)
        );
        assert_eq!(
            ok(255, &from_a(51, 200, 0, &cfg.addresses)),
            Err(AdvertError::BadInterval)
        );
        // Address lists: one missing, one extra, one different, none, a duplicate.
        let a = &cfg.addresses;
        let x = IpAddr::V4(Ipv4Addr::new(198, 18, 0, 101));
        for list in [
            vec![a[0]],
            vec![a[0], a[1], x],
            vec![a[0], x],
            vec![],
            vec![a[0], a[0]],
        ] {
            assert_eq!(
                ok(255, &from_a(51, 200, 100, &list)),
                Err(AdvertError::AddressMismatch),
                "{list:?}"
            );
        }
        // Reserved bits are ignored on receipt (RFC 5798 §5.2.6).
        let mut m = ADVERT_A;
        m[4] |= 0xf0;
        let c = u16::from_be_bytes([m[6], m[7]]);
        let c = dataplane::wire::checksum::update16(c, 0x0064, 0xf064);
        m[6..8].copy_from_slice(&c.to_be_bytes());
        assert_eq!(ok(255, &m).unwrap().interval_cs, 100);
    }

    #[test]
    fn reasons_have_names() {
        let names: Vec<&str> = AdvertError::ALL.iter().map(|e| e.as_str()).collect();
        assert_eq!(
            names,
            [
                "bad-ttl",
                "bad-version",
                "bad-type",
                "bad-checksum",
                "wrong-vrid",
                "address-mismatch",
                "bad-interval",
                "truncated",
                "wrong-family",
                "from-self"
            ]
        );
        assert_eq!(AdvertError::WrongVrid.to_string(), "wrong-vrid");
        assert_eq!(
            serde_json::to_string(&AdvertError::AddressMismatch).unwrap(),
            "\"address-mismatch\""
        );
    }
}
