//! The registry of the VPN protocols a service can carry: one table, [`PROTOCOLS`], from which
//! the configuration's `protocols` and `ports` keys, a service's [`Listeners`], the classifier's
//! [`PortPlan`] and the health checks' default ports are all derived.
//!
//! Adding a protocol: a [`Protocol`] variant and its [`ProtocolDef`] row here, a [`PortPlan`]
//! field and its rule in [`classify`](crate::classify::classify) with a [`Class`] of its own,
//! and its header view in `wire/`. Everything else (config parsing and its error messages,
//! listener matching, per-class counters and metrics) follows from the tables.

use crate::classify::{Class, PortPlan};
use crate::wire::ip_proto;

/// A protocol a service listens for (the configuration's `protocols = [...]`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Protocol {
    /// IKE on its own UDP port.
    Ike,
    /// The NAT-traversal UDP port: IKE behind the non-ESP marker, ESP in UDP, keepalives.
    NatT,
    /// ESP directly over IP (protocol 50): no port.
    Esp,
    /// The SSL-VPN TLS control channel over TCP.
    Tls,
    /// The SSL-VPN DTLS data channel over UDP.
    Dtls,
}

/// How a protocol travels, which decides whether it has a port.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    Udp,
    Tcp,
    /// Directly over IP with this protocol number: no ports.
    Ip(u8),
}

impl Transport {
    /// The IP protocol number.
    pub const fn ip_protocol(self) -> u8 {
        match self {
            Transport::Udp => ip_proto::UDP,
            Transport::Tcp => ip_proto::TCP,
            Transport::Ip(p) => p,
        }
    }

    /// Whether packets of this transport carry ports.
    pub const fn has_ports(self) -> bool {
        !matches!(self, Transport::Ip(_))
    }
}

/// One row of [`PROTOCOLS`].
#[derive(Clone, Copy, Debug)]
pub struct ProtocolDef {
    pub protocol: Protocol,
    /// The name in the configuration's `protocols` list.
    pub name: &'static str,
    /// The key under the service's `ports` table; `None` for a protocol without ports.
    pub port_key: Option<&'static str>,
    pub transport: Transport,
    /// The well-known server port; 0 for a protocol without ports.
    pub default_port: u16,
    /// The traffic classes the classifier gives this protocol's packets.
    pub classes: &'static [Class],
    /// A client redirected to its gateway's own address (RFC 5685) sends this protocol there
    /// directly; otherwise it keeps using the VIP.
    pub follows_redirect: bool,
}

/// Every protocol, in [`Protocol`] order (`PROTOCOLS[p as usize].protocol == p`).
pub const PROTOCOLS: [ProtocolDef; Protocol::COUNT] = [
    ProtocolDef {
        protocol: Protocol::Ike,
        name: "ike",
        port_key: Some("ike"),
        transport: Transport::Udp,
        default_port: 500,
        classes: &[Class::Ike],
        follows_redirect: true,
    },
    ProtocolDef {
        protocol: Protocol::NatT,
        name: "nat-t",
        port_key: Some("nat_t"),
        transport: Transport::Udp,
        default_port: 4500,
        classes: &[Class::Ike, Class::EspInUdp, Class::NattKeepalive],
        follows_redirect: true,
    },
    ProtocolDef {
        protocol: Protocol::Esp,
        name: "esp",
        port_key: None,
        transport: Transport::Ip(ip_proto::ESP),
        default_port: 0,
        classes: &[Class::Esp],
        follows_redirect: true,
    },
    ProtocolDef {
        protocol: Protocol::Tls,
        name: "tls",
        port_key: Some("tls"),
        transport: Transport::Tcp,
        default_port: 443,
        classes: &[Class::Tls],
        follows_redirect: false,
    },
    ProtocolDef {
        protocol: Protocol::Dtls,
        name: "dtls",
        port_key: Some("dtls"),
        transport: Transport::Udp,
        default_port: 443,
        classes: &[Class::Dtls],
        follows_redirect: false,
    },
];

impl Protocol {
    pub const COUNT: usize = 5;

    /// Every protocol, in table order.
    pub const ALL: [Protocol; Protocol::COUNT] = [
        Protocol::Ike,
        Protocol::NatT,
        Protocol::Esp,
        Protocol::Tls,
        Protocol::Dtls,
    ];

    /// This protocol's row of [`PROTOCOLS`].
    #[inline]
    pub const fn def(self) -> &'static ProtocolDef {
        &PROTOCOLS[self as usize]
    }

    /// The configuration name.
    pub const fn name(self) -> &'static str {
        self.def().name
    }

    /// The protocol whose configuration name is `name`.
    pub fn from_name(name: &str) -> Option<Protocol> {
        PROTOCOLS
            .iter()
            .find(|d| d.name == name)
            .map(|d| d.protocol)
    }

    /// The configuration names, comma-separated, for error messages.
    pub fn names() -> String {
        PROTOCOLS
            .iter()
            .map(|d| d.name)
            .collect::<Vec<_>>()
            .join(", ")
    }
}

impl core::fmt::Display for Protocol {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.name())
    }
}

/// Which protocols a service carries, and on which server-side ports.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Listeners {
    /// By [`Protocol`]: `None` when not carried; `Some(0)` for a carried protocol without ports.
    ports: [Option<u16>; Protocol::COUNT],
}

impl Listeners {
    /// A service carrying nothing yet.
    pub const fn none() -> Self {
        Listeners {
            ports: [None; Protocol::COUNT],
        }
    }

    /// Every protocol on its well-known port.
    pub fn well_known() -> Self {
        Protocol::ALL
            .iter()
            .fold(Listeners::none(), |l, p| l.with(*p, p.def().default_port))
    }

    /// Carries `protocol` on `port` (ignored, and stored as 0, for a protocol without ports).
    pub fn with(mut self, protocol: Protocol, port: u16) -> Self {
        self.set(protocol, port);
        self
    }

    /// Carries `protocol` on `port` (ignored for a protocol without ports).
    pub fn set(&mut self, protocol: Protocol, port: u16) {
        let port = if protocol.def().transport.has_ports() {
            port
        } else {
            0
        };
        self.ports[protocol as usize] = Some(port);
    }

    /// Whether the service carries `protocol`.
    #[inline]
    pub fn carries(&self, protocol: Protocol) -> bool {
        self.ports[protocol as usize].is_some()
    }

    /// The server port of `protocol`, when carried and ported.
    #[inline]
    pub fn port(&self, protocol: Protocol) -> Option<u16> {
        self.ports[protocol as usize].filter(|_| protocol.def().transport.has_ports())
    }

    /// The carried protocols with their rows.
    pub fn carried(&self) -> impl Iterator<Item = (&'static ProtocolDef, u16)> + '_ {
        PROTOCOLS
            .iter()
            .zip(self.ports)
            .filter_map(|(d, p)| Some((d, p?)))
    }

    /// Whether the service accepts this IP protocol and server-side port.
    #[inline]
    pub fn accepts(&self, protocol: u8, port: u16) -> bool {
        self.accepts_if(protocol, Some(port), |_| true)
    }

    /// Whether the service accepts any traffic of this IP protocol (used for non-first
    /// fragments, which carry no ports).
    #[inline]
    pub fn accepts_protocol(&self, protocol: u8) -> bool {
        self.accepts_if(protocol, None, |_| true)
    }

    /// Whether a carried protocol for which `keep` holds matches this IP protocol and port
    /// (`None`: any port, for non-first fragments).
    ///
    /// Per packet: the match on `protocol` makes the transport a constant in each arm, so the
    /// unrolled loops over the constant table keep only that transport's rows, one port compare
    /// each.
    #[inline(always)]
    pub fn accepts_if(
        &self,
        protocol: u8,
        port: Option<u16>,
        keep: impl Fn(&ProtocolDef) -> bool,
    ) -> bool {
        match protocol {
            ip_proto::UDP => self.on_transport(Transport::Udp, port, keep),
            ip_proto::TCP => self.on_transport(Transport::Tcp, port, keep),
            _ => self.on_ip(protocol, keep),
        }
    }

    #[inline(always)]
    fn on_transport(
        &self,
        transport: Transport,
        port: Option<u16>,
        keep: impl Fn(&ProtocolDef) -> bool,
    ) -> bool {
        let mut any = false;
        for (d, p) in PROTOCOLS.iter().zip(self.ports) {
            if d.transport == transport && keep(d) {
                any |= match port {
                    Some(_) => p == port,
                    None => p.is_some(),
                };
            }
        }
        any
    }

    #[inline(always)]
    fn on_ip(&self, protocol: u8, keep: impl Fn(&ProtocolDef) -> bool) -> bool {
        let mut any = false;
        for (d, p) in PROTOCOLS.iter().zip(self.ports) {
            if let Transport::Ip(number) = d.transport {
                if keep(d) {
                    any |= (number == protocol) & p.is_some();
                }
            }
        }
        any
    }

    /// Whether two services would claim the same packets (a port of one transport, or a
    /// protocol without ports, carried by both).
    pub fn overlaps(&self, other: &Listeners) -> bool {
        self.carried().any(|(a, pa)| {
            other.carried().any(|(b, pb)| {
                a.transport.ip_protocol() == b.transport.ip_protocol()
                    && (!a.transport.has_ports() || pa == pb)
            })
        })
    }

    /// Two carried protocols of one transport on one port, if any (the classifier could not
    /// tell them apart): `(first, second, port)`.
    pub fn port_clash(&self) -> Option<(Protocol, Protocol, u16)> {
        let carried: Vec<_> = self
            .carried()
            .filter(|(d, _)| d.transport.has_ports())
            .collect();
        carried.iter().enumerate().find_map(|(i, (a, pa))| {
            carried[i + 1..]
                .iter()
                .find(|(b, pb)| a.transport == b.transport && pa == pb)
                .map(|(b, _)| (a.protocol, b.protocol, *pa))
        })
    }

    /// The classifier's port plan; protocols a service does not carry get port 0, which no
    /// UDP/TCP packet uses, so they are never recognised.
    pub fn port_plan(&self) -> PortPlan {
        let port = |p: Protocol| self.port(p).unwrap_or(0);
        PortPlan {
            ike: port(Protocol::Ike),
            natt: port(Protocol::NatT),
            dtls: port(Protocol::Dtls),
            tls: port(Protocol::Tls),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn table_is_in_enum_order_and_consistent() {
        for (i, d) in PROTOCOLS.iter().enumerate() {
            assert_eq!(d.protocol as usize, i, "{}", d.name);
            assert_eq!(Protocol::ALL[i], d.protocol);
            assert_eq!(Protocol::from_name(d.name), Some(d.protocol));
            assert_eq!(d.port_key.is_some(), d.transport.has_ports(), "{}", d.name);
            assert_eq!(d.default_port != 0, d.transport.has_ports(), "{}", d.name);
            assert!(!d.classes.is_empty());
        }
        assert_eq!(Protocol::from_name("gre"), None);
        assert_eq!(Protocol::names(), "ike, nat-t, esp, tls, dtls");
    }

    #[test]
    fn the_default_plan_is_the_well_known_ports() {
        let all = Listeners::well_known();
        assert_eq!(all.port_plan(), PortPlan::default());
        assert_eq!(all.port(Protocol::Esp), None);
        assert!(all.carries(Protocol::Esp));
        // IKE on 500 and NAT-T on 4500 differ, DTLS (UDP) and TLS (TCP) share 443 legally.
        assert_eq!(all.port_clash(), None);
    }

    #[test]
    fn accepts_by_transport_and_port() {
        let l = Listeners::none()
            .with(Protocol::NatT, 4500)
            .with(Protocol::Tls, 443)
            .with(Protocol::Esp, 0);
        assert!(l.accepts(ip_proto::UDP, 4500));
        assert!(!l.accepts(ip_proto::UDP, 443), "DTLS is not carried");
        assert!(l.accepts(ip_proto::TCP, 443));
        assert!(!l.accepts(ip_proto::TCP, 4500));
        assert!(l.accepts(ip_proto::ESP, 0));
        assert!(l.accepts(ip_proto::ESP, 1234), "ESP has no port");
        assert!(!l.accepts(1, 0));
        assert!(l.accepts_protocol(ip_proto::UDP));
        assert!(!Listeners::none()
            .with(Protocol::Tls, 443)
            .accepts_protocol(ip_proto::UDP));
        assert_eq!(
            l.port_plan(),
            PortPlan {
                ike: 0,
                natt: 4500,
                dtls: 0,
                tls: 443
            }
        );
    }

    #[test]
    fn clashes_and_overlaps() {
        let a = Listeners::none()
            .with(Protocol::Ike, 500)
            .with(Protocol::Dtls, 500);
        assert_eq!(a.port_clash(), Some((Protocol::Ike, Protocol::Dtls, 500)));
        let ike = Listeners::none().with(Protocol::Ike, 500);
        let dtls500 = Listeners::none().with(Protocol::Dtls, 500);
        let tls500 = Listeners::none().with(Protocol::Tls, 500);
        let esp = Listeners::none().with(Protocol::Esp, 0);
        assert!(ike.overlaps(&dtls500), "one UDP port");
        assert!(!ike.overlaps(&tls500), "UDP and TCP 500 differ");
        assert!(esp.overlaps(&esp));
        assert!(!esp.overlaps(&ike));
    }

    fn listeners() -> impl Strategy<Value = Listeners> {
        proptest::collection::vec(proptest::option::of(1u16..6), Protocol::COUNT).prop_map(|v| {
            let mut l = Listeners::none();
            for (p, port) in Protocol::ALL.iter().zip(v) {
                if let Some(port) = port {
                    l.set(*p, port);
                }
            }
            l
        })
    }

    proptest! {
        /// `accepts` is what the table says, written the slow way.
        #[test]
        fn accepts_matches_the_table(l in listeners(), proto in prop::sample::select(vec![
            ip_proto::UDP, ip_proto::TCP, ip_proto::ESP, 1u8,
        ]), port in 0u16..7) {
            let want = Protocol::ALL.iter().any(|p| {
                let d = p.def();
                l.carries(*p)
                    && d.transport.ip_protocol() == proto
                    && (!d.transport.has_ports() || l.port(*p) == Some(port))
            });
            prop_assert_eq!(l.accepts(proto, port), want);
        }

        /// Overlap is symmetric.
        #[test]
        fn overlap_is_symmetric(a in listeners(), b in listeners()) {
            prop_assert_eq!(a.overlaps(&b), b.overlaps(&a));
        }
    }
}
