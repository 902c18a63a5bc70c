//! The exception path: the kernel's view of the appliance's own addresses.
//!
//! One TAP per interface, with the interface's MAC, MTU and addresses, in the configured network
//! namespace. Frames the dataplane hands to the control thread for the appliance itself (TCP
//! and UDP to its addresses, multicast, neighbor answers) go into the TAP untagged; what the
//! kernel sends on a TAP leaves by its interface, tagged as the interface is, through worker 0.
//! So health checks, VRRP, state sync and an operator's ssh or ping use ordinary sockets.
//! Both directions are bounded per control-loop round and counted, so a flood at the
//! appliance's own addresses costs the control thread a bounded amount of work and never
//! touches the workers' forwarding.

use std::io;

use dataplane::emit::{self, L2};
use dataplane::exception::TokenBucket;
use dataplane::model::{ApplianceSpec, InterfaceSpec};
use dataplane::wire::ethernet::{EthernetFrame, Vlan};
use netdev::{ifconfig, netns, Tap};
use serde::Serialize;
use tracing::{info, warn};

use crate::config::ExceptionSettings;

/// Counters of the exception path.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ExceptionCounters {
    /// Frames handed to the kernel.
    pub to_kernel: u64,
    /// Frames the kernel did not take (its TAP queue was full) or that could not be written.
    pub to_kernel_dropped: u64,
    /// Frames the kernel sent.
    pub from_kernel: u64,
    /// Frames the kernel sent that could not be transmitted (no mbuf, full ring, too large).
    pub from_kernel_dropped: u64,
    /// Frames for the kernel over `[exception] rate_pps` (urgent frames are not policed here: the
    /// workers police each urgent class to `[exception] urgent_rate_pps`).
    pub policed: u64,
}

/// Why the exception path could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum ExceptionError {
    /// The configured network namespace cannot be entered.
    #[error("exception path: network namespace `{netns}`: {source}")]
    Netns { netns: String, source: io::Error },
    /// A TAP cannot be created or configured.
    #[error("exception path: TAP `{tap}`: {source}")]
    Tap { tap: String, source: io::Error },
}

/// The control thread's budget for ordinary exception frames towards the kernel: the same
/// token bucket the workers police each class with.
type Policer = TokenBucket;

/// The TAPs, one per interface (in the spec's interface order).
pub struct ExceptionPath {
    taps: Vec<Tap>,
    /// Per interface: its VLAN tag, pushed on frames from the kernel.
    vlans: Vec<Vlan>,
    /// Most frames read from the kernel per round.
    budget: usize,
    buf: Vec<u8>,
    policer: Policer,
    counters: ExceptionCounters,
}

impl ExceptionPath {
    /// Creates and configures the TAPs. `mtu` is the dataplane's.
    pub fn open(
        settings: &ExceptionSettings,
        spec: &ApplianceSpec,
        mtu: u16,
    ) -> Result<ExceptionPath, ExceptionError> {
        let _netns = match &settings.netns {
            Some(ns) => Some(netns::enter(ns).map_err(|source| ExceptionError::Netns {
                netns: ns.clone(),
                source,
            })?),
            None => None,
        };
        let mut taps = Vec::new();
        for itf in &spec.interfaces {
            let name = settings.tap_name(&itf.name);
            let tap = configure(&name, itf, spec, mtu).map_err(|source| ExceptionError::Tap {
                tap: name.clone(),
                source,
            })?;
            taps.push(tap);
        }
        info!(
            taps = taps.len(),
            netns = settings.netns.as_deref().unwrap_or("(own)"),
            "exception path open"
        );
        Ok(ExceptionPath {
            taps,
            vlans: spec.interfaces.iter().map(|i| i.vlan).collect(),
            budget: settings.queue,
            buf: vec![0; usize::from(mtu) + 64],
            policer: Policer::new(settings.rate_pps),
            counters: ExceptionCounters::default(),
        })
    }

    pub fn counters(&self) -> ExceptionCounters {
        self.counters
    }

    /// Hands `frame`, received on `interface`, to the kernel without its VLAN tags, unless it
    /// is not `urgent` and over the rate (`now_ms`: a monotonic clock).
    pub fn to_kernel(&mut self, interface: u16, frame: &[u8], urgent: bool, now_ms: u64) {
        if !urgent && !self.policer.allow(now_ms) {
            self.counters.policed += 1;
            return;
        }
        let Some(tap) = self.taps.get(usize::from(interface)) else {
            self.counters.to_kernel_dropped += 1;
            return;
        };
        let sent = match untagged(frame) {
            Some(Untagged::Same) => tap.send(frame),
            Some(Untagged::Rebuilt(f)) => tap.send(&f),
            None => Ok(false),
        };
        match sent {
            Ok(true) => self.counters.to_kernel += 1,
            Ok(false) | Err(_) => self.counters.to_kernel_dropped += 1,
        }
    }

    /// Frames the kernel sent, at most the configured queue size per call, each with the
    /// interface it leaves by (tagged for that interface). `send` says whether it went out.
    pub fn from_kernel(&mut self, mut send: impl FnMut(u16, &[u8]) -> bool) {
        for _ in 0..self.budget {
            let mut any = false;
            // Interface ids are u16 (the configuration's interfaces, one TAP each).
            for (i, interface) in (0..self.taps.len()).zip(0..=u16::MAX) {
                let n = match self.taps[i].recv(&mut self.buf) {
                    Ok(Some(n)) => n,
                    Ok(None) => continue,
                    Err(e) => {
                        warn!(tap = self.taps[i].name(), error = %e, "cannot read from the TAP");
                        continue;
                    }
                };
                any = true;
                self.counters.from_kernel += 1;
                let ok = match self.vlans[i] {
                    Vlan::Untagged => send(interface, &self.buf[..n]),
                    vlan => send(interface, &tagged(&self.buf[..n], vlan)),
                };
                if !ok {
                    self.counters.from_kernel_dropped += 1;
                }
            }
            if !any {
                break;
            }
        }
    }
}

fn configure(name: &str, itf: &InterfaceSpec, spec: &ApplianceSpec, mtu: u16) -> io::Result<Tap> {
    let tap = Tap::create(name)?;
    // The dataplane answers neighbor solicitations for these addresses, so the kernel's
    // duplicate address detection would only delay them.
    if itf.addresses.iter().any(|a| a.addr.is_ipv6()) {
        ifconfig::set_ipv6_conf(name, "accept_dad", "0")?;
    }
    let mac = spec.ports[usize::from(itf.port)].mac;
    ifconfig::set_mac(name, mac.0)?;
    ifconfig::set_mtu(name, u32::from(mtu))?;
    ifconfig::set_up(name)?;
    for a in &itf.addresses {
        ifconfig::add_address(name, a.addr, a.prefix)?;
    }
    // The config's routes whose next hop is on this interface, so the kernel reaches what the
    // dataplane reaches (clients behind the router, for ssh and ping answers).
    for r in &spec.routes {
        if itf.addresses.iter().any(|a| a.contains(r.via)) {
            ifconfig::add_route(r.prefix.addr, r.prefix.prefix, r.via, name)?;
        }
    }
    Ok(tap)
}

enum Untagged {
    Same,
    Rebuilt(Vec<u8>),
}

/// `frame` without its VLAN tags (`None`: not Ethernet).
fn untagged(frame: &[u8]) -> Option<Untagged> {
    let eth = EthernetFrame::new_checked(frame).ok()?;
    if eth.vlan() == Vlan::Untagged {
        return Some(Untagged::Same);
    }
    Some(Untagged::Rebuilt(retagged(&eth, Vlan::Untagged)))
}

/// `frame` (untagged) with `vlan`'s tags; unchanged if it is not Ethernet or a VID does not fit
/// 12 bits.
fn tagged(frame: &[u8], vlan: Vlan) -> Vec<u8> {
    let vid_ok = |vid: u16| vid <= 0x0fff;
    let fits = match vlan {
        Vlan::Untagged => true,
        Vlan::Single { vid } => vid_ok(vid),
        Vlan::Double { outer, inner } => vid_ok(outer) && vid_ok(inner),
    };
    match EthernetFrame::new_checked(frame) {
        Ok(eth) if fits => retagged(&eth, vlan),
        _ => frame.to_vec(),
    }
}

/// The frame of `eth` with its header re-emitted with `vlan`'s tags.
fn retagged(eth: &EthernetFrame<&[u8]>, vlan: Vlan) -> Vec<u8> {
    let l2 = L2::new(eth.src(), eth.dst()).with_vlan(vlan);
    let payload = eth.payload();
    emit::ethernet_frame(&l2, eth.ethertype(), payload.len(), |p| {
        p.copy_from_slice(payload)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_policer_lets_its_rate_and_a_tenth_of_a_second_through() {
        let mut p = Policer::new(10_000);
        let passed = (0..5000).filter(|_| p.allow(0)).count();
        assert_eq!(passed, 1000, "the burst: a tenth of a second");
        // One second later: the bucket is full again (capped at the burst), not 10 000 deep.
        let passed = (0..5000).filter(|_| p.allow(1000)).count();
        assert_eq!(passed, 1000);
        // Steady: 10 frames per millisecond.
        let mut passed = 0;
        for ms in 1001..=2000 {
            passed += (0..100).filter(|_| p.allow(ms)).count();
        }
        assert_eq!(passed, 10_000);
        // Slow rates refill between milliseconds; a clock that goes back is harmless.
        let mut slow = Policer::new(100);
        assert_eq!((0..100).filter(|_| slow.allow(0)).count(), 64);
        assert!(!slow.allow(5));
        assert!(slow.allow(10));
        assert!(!slow.allow(3));
    }

    fn frame(vlan: Vlan) -> Vec<u8> {
        let mut f = vec![0u8; vlan.header_len() + 4];
        let h = dataplane::wire::ethernet::emit_header(
            &mut f,
            dataplane::wire::ethernet::EthernetAddress([2, 0, 0, 0, 0, 1]),
            dataplane::wire::ethernet::EthernetAddress([2, 0, 0, 0, 0, 2]),
            vlan,
            0x0800,
        )
        .unwrap();
        f[h..].copy_from_slice(&[1, 2, 3, 4]);
        f
    }

    #[test]
    fn tags_come_off_towards_the_kernel_and_go_back_on_the_way_out() {
        for vlan in [
            Vlan::Single { vid: 100 },
            Vlan::Double {
                outer: 200,
                inner: 300,
            },
        ] {
            let tagged_frame = frame(vlan);
            let Some(Untagged::Rebuilt(plain)) = untagged(&tagged_frame) else {
                panic!("a tagged frame is rebuilt");
            };
            assert_eq!(plain, frame(Vlan::Untagged));
            assert_eq!(tagged(&plain, vlan), tagged_frame);
        }
        assert!(matches!(
            untagged(&frame(Vlan::Untagged)),
            Some(Untagged::Same)
        ));
        assert!(untagged(&[0u8; 6]).is_none());
    }
}
