//! Per-worker counters. Each worker owns one [`WorkerCounters`] and only increments plain
//! integers; the control thread (or replay) sums them with [`WorkerCounters::add`].

use serde::ser::{SerializeMap, SerializeStruct};
use serde::{Serialize, Serializer};

use crate::affinity::AffinityCounters;
use crate::classify::Class;
use crate::redirect::Fallback;

crate::named_reasons! {
    /// Why a packet was not forwarded. Every drop has exactly one reason and one counter.
    pub enum DropReason {
        Truncated => "truncated", "A header is cut short by the end of the frame.";
        BadHeader => "bad-header", "A header field holds a value its protocol does not allow.";
        BadLength => "bad-length", "A length field disagrees with the frame or another length.";
        BadChecksum => "bad-checksum", "The IPv4 header checksum does not verify.";
        BadSource => "bad-source", "Source is multicast, broadcast, unspecified, loopback or ours; or link-local on a packet to forward.";
        NotOurMac => "not-our-mac", "Unicast frame addressed to another MAC.";
        UnknownVlan => "unknown-vlan", "No configured interface claims the frame's port and VLAN tags.";
        UnknownEthertype => "unknown-ethertype", "Neither ARP, IPv4 nor IPv6.";
        ArpUnhandled => "arp-unhandled", "ARP that is not a request for one of our addresses.";
        NdUnhandled => "nd-unhandled", "Neighbor discovery that is not a solicitation for one of our addresses.";
        IcmpUnhandled => "icmp-unhandled", "ICMP to a VIP that is neither an echo request nor an error.";
        IcmpNoFlow => "icmp-no-flow", "ICMP error quoting a packet of no known client flow.";
        TtlExpired => "ttl-expired", "TTL or hop limit would reach zero.";
        NotAVip => "not-a-vip", "Client-side traffic to an address that is neither a VIP nor ours.";
        WrongSide => "wrong-side", "VIP traffic arriving on a backend interface.";
        NoService => "no-service", "To a VIP, but no service there carries this protocol and port.";
        UnknownSource => "unknown-source", "Backend traffic from an address that is no gateway.";
        NoGateway => "no-gateway", "No gateway of the service is eligible for this client.";
        TableFull => "table-full", "The affinity shard has no room and nothing evictable.";
        PrefixQuota => "prefix-quota", "A client packet that would establish its entry, refused: the client's prefix (IPv4 /24, IPv6 /64 by default) holds its quota of established entries in this worker's shard.";
        NoRoute => "no-route", "No route to the destination on the right side.";
        NoNeighbor => "no-neighbor", "The next hop's MAC is unknown and no neighbor can be awaited for it.";
        NeighborHoldFull => "neighbor-hold-full", "Waiting for its next hop's MAC, refused: the worker already holds 3 frames for that neighbor, or frames for 64 neighbors.";
        NeighborHoldTimeout => "neighbor-hold-timeout", "Held for its next hop's MAC longer than resolution takes (3 s): the neighbor did not answer.";
        NoHeadroom => "no-headroom", "The frame cannot grow to carry the egress VLAN tags.";
        NotMaster => "not-master", "For a VIP or floating address while this appliance is the HA pair's backup.";
        UdpLength => "udp-length", "A whole (unfragmented) UDP datagram whose length field disagrees with the IP payload.";
        MalformedIke => "malformed-ike", "On the IKE port, or behind the non-ESP marker on the NAT-T port: no valid IKE header (shorter than 28 bytes, bad version or exchange, or a length field that disagrees with the datagram).";
        MtuExceeded => "mtu-exceeded", "Longer than the egress port's MTU, and neither fragmented nor answered with an ICMP error: an ICMP error itself, a non-first fragment, a frame the appliance wrote (an answer), or no source address for the error on the receiving interface.";
        IcmpRateLimited => "icmp-rate-limited", "Longer than the egress port's MTU with DF set (or IPv6): the fragmentation-needed / packet-too-big error to its sender was over the worker's budget (100 a second).";
        MalformedIkeSaInit => "malformed-ike-sa-init", "An IKE_SA_INIT request to a redirecting service that cannot be answered: broken header or payload chain, no SA, KE or valid nonce, a bad UDP checksum, or an answer longer than the request.";
    }
}

/// Packets and bytes forwarded to and from one gateway, and the clients it was given.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct GatewayCounters {
    /// Client packets forwarded to the gateway.
    pub to_gateway_packets: u64,
    pub to_gateway_bytes: u64,
    /// Gateway packets forwarded to clients.
    pub from_gateway_packets: u64,
    pub from_gateway_bytes: u64,
    /// New clients scheduled onto the gateway by this worker.
    pub new_clients: u64,
    /// IKE_SA_INIT requests answered with a REDIRECT to this gateway.
    pub redirects: u64,
    /// Redirected clients' packets routed (not translated) to the gateway's own address.
    pub routed_to_gateway_packets: u64,
    pub routed_to_gateway_bytes: u64,
    /// The gateway's packets routed (not translated) to redirected clients.
    pub routed_from_gateway_packets: u64,
    pub routed_from_gateway_bytes: u64,
}

impl GatewayCounters {
    /// A translated packet of `bytes` (IP) to the gateway (`to_gateway`) or from it.
    #[inline(always)]
    pub fn translated(&mut self, to_gateway: bool, bytes: u64) {
        if to_gateway {
            self.to_gateway_packets += 1;
            self.to_gateway_bytes += bytes;
        } else {
            self.from_gateway_packets += 1;
            self.from_gateway_bytes += bytes;
        }
    }

    /// A routed (untranslated) packet of `bytes` to the gateway's own address or from it.
    #[inline]
    pub fn routed(&mut self, to_gateway: bool, bytes: u64) {
        if to_gateway {
            self.routed_to_gateway_packets += 1;
            self.routed_to_gateway_bytes += bytes;
        } else {
            self.routed_from_gateway_packets += 1;
            self.routed_from_gateway_bytes += bytes;
        }
    }

    pub fn add(&mut self, o: &GatewayCounters) {
        self.to_gateway_packets += o.to_gateway_packets;
        self.to_gateway_bytes += o.to_gateway_bytes;
        self.from_gateway_packets += o.from_gateway_packets;
        self.from_gateway_bytes += o.from_gateway_bytes;
        self.new_clients += o.new_clients;
        self.redirects += o.redirects;
        self.routed_to_gateway_packets += o.routed_to_gateway_packets;
        self.routed_to_gateway_bytes += o.routed_to_gateway_bytes;
        self.routed_from_gateway_packets += o.routed_from_gateway_packets;
        self.routed_from_gateway_bytes += o.routed_from_gateway_bytes;
    }
}

/// What a redirecting service did with IKE traffic it did not redirect.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ServiceCounters {
    /// Handed to NAT mode, by [`Fallback`] reason.
    pub redirect_fallbacks: [u64; Fallback::COUNT],
    /// IKE_SA_INIT requests dropped unanswered (also counted as the drop reason
    /// `malformed-ike-sa-init`).
    pub malformed_ike_sa_init: u64,
}

impl ServiceCounters {
    #[inline]
    pub fn fallback(&mut self, why: Fallback) {
        self.redirect_fallbacks[why as usize] += 1;
    }

    pub fn fallbacks(&self, why: Fallback) -> u64 {
        self.redirect_fallbacks[why as usize]
    }

    fn add(&mut self, o: &ServiceCounters) {
        for (a, b) in self
            .redirect_fallbacks
            .iter_mut()
            .zip(&o.redirect_fallbacks)
        {
            *a += b;
        }
        self.malformed_ike_sa_init += o.malformed_ike_sa_init;
    }
}

impl Serialize for ServiceCounters {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut st = s.serialize_struct("ServiceCounters", 2)?;
        st.serialize_field(
            "redirect_fallbacks",
            &Named {
                values: &self.redirect_fallbacks,
                keys: Fallback::ALL,
                name: Fallback::name,
            },
        )?;
        st.serialize_field("malformed_ike_sa_init", &self.malformed_ike_sa_init)?;
        st.end()
    }
}

/// Affinity decisions the pipeline made (the table's own counters are in [`AffinityCounters`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ClientCounters {
    /// Clients without an entry that were scheduled onto a gateway.
    pub scheduled: u64,
    /// Clients whose gateway went down and that were moved on their next packet.
    pub rescheduled: u64,
    /// Entries created from a gateway's traffic to a client that had none (after a timeout, or
    /// on the other appliance of a pair).
    pub learned_from_gateway: u64,
    /// Gateway traffic to a client whose entry names another gateway (forwarded anyway).
    pub gateway_mismatch: u64,
    /// Gateway traffic that could not be recorded because the shard was full (forwarded anyway).
    pub learn_failed_table_full: u64,
    /// Clients established: a packet echoed what only its gateway's answer showed (an IKE
    /// responder SPI, a TCP sequence number). Until then an entry is evictable.
    pub established: u64,
    /// Client packets whose echo did not match their entry's pending proof (blind spoofing
    /// looks like this); the entry stays unconfirmed.
    pub proof_mismatch: u64,
}

impl ClientCounters {
    fn add(&mut self, o: &ClientCounters) {
        self.scheduled += o.scheduled;
        self.rescheduled += o.rescheduled;
        self.learned_from_gateway += o.learned_from_gateway;
        self.gateway_mismatch += o.gateway_mismatch;
        self.learn_failed_table_full += o.learn_failed_table_full;
        self.established += o.established;
        self.proof_mismatch += o.proof_mismatch;
    }
}

/// What the egress MTU check did with frames longer than their egress port's MTU (the drops
/// are `mtu-exceeded` and `icmp-rate-limited`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct MtuCounters {
    /// IPv4 datagrams without DF cut into fragments (RFC 791).
    pub fragmented: u64,
    /// The fragments they made (also counted in `tx_packets`).
    pub fragments: u64,
    /// ICMP fragmentation-needed errors (type 3 code 4) sent for IPv4 packets with DF.
    pub frag_needed: u64,
    /// ICMPv6 packet-too-big errors sent.
    pub packet_too_big: u64,
}

impl MtuCounters {
    fn add(&mut self, o: &MtuCounters) {
        self.fragmented += o.fragmented;
        self.fragments += o.fragments;
        self.frag_needed += o.frag_needed;
        self.packet_too_big += o.packet_too_big;
    }
}

/// Everything one worker counts. Plain integers: the owner increments, others read copies.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WorkerCounters {
    pub rx_packets: u64,
    pub rx_bytes: u64,
    pub tx_packets: u64,
    pub tx_bytes: u64,
    /// Frames for the appliance itself, handed to the control plane.
    pub to_control: u64,
    pub arp_replies: u64,
    pub nd_replies: u64,
    pub echo_replies: u64,
    /// ICMP errors whose quoted header was translated and forwarded.
    pub icmp_errors_translated: u64,
    /// Frames held while their next hop's MAC was resolved, and those of them sent once it
    /// was (also counted in `tx_*`); the rest are dropped as `neighbor-hold-timeout`.
    pub neighbor_held: u64,
    pub neighbor_released: u64,
    pub tls_client_hellos: u64,
    pub dtls_client_hellos: u64,
    /// Packets by traffic class (inbound and outbound).
    pub classes: [u64; Class::COUNT],
    pub drops: [u64; DropReason::COUNT],
    pub clients: ClientCounters,
    /// Frames over their egress port's MTU.
    pub mtu: MtuCounters,
    /// The shard's own counters, copied in when counters are read.
    pub affinity: AffinityCounters,
    /// `[service][gateway]`.
    pub gateways: Vec<Vec<GatewayCounters>>,
    /// `[service]`.
    pub services: Vec<ServiceCounters>,
}

impl WorkerCounters {
    /// Copies `self` into `out`, reusing `out`'s vectors: once their shapes match, a copy
    /// allocates nothing (the worker loop publishes its counters every 100 ms).
    pub fn copy_into(&self, out: &mut WorkerCounters) {
        let (mut gateways, mut services) = (
            std::mem::take(&mut out.gateways),
            std::mem::take(&mut out.services),
        );
        gateways.clone_from(&self.gateways);
        services.clone_from(&self.services);
        *out = WorkerCounters {
            gateways,
            services,
            ..*self
        };
    }

    #[inline]
    pub fn drop(&mut self, reason: DropReason) {
        self.drops[reason as usize] += 1;
    }

    #[inline]
    pub fn dropped(&self, reason: DropReason) -> u64 {
        self.drops[reason as usize]
    }

    #[inline]
    pub fn class(&self, class: Class) -> u64 {
        self.classes[class.index()]
    }

    pub fn total_drops(&self) -> u64 {
        self.drops.iter().sum()
    }

    /// Adds another worker's counters into these (the control thread's sum).
    pub fn add(&mut self, o: &WorkerCounters) {
        self.rx_packets += o.rx_packets;
        self.rx_bytes += o.rx_bytes;
        self.tx_packets += o.tx_packets;
        self.tx_bytes += o.tx_bytes;
        self.to_control += o.to_control;
        self.arp_replies += o.arp_replies;
        self.nd_replies += o.nd_replies;
        self.echo_replies += o.echo_replies;
        self.icmp_errors_translated += o.icmp_errors_translated;
        self.neighbor_held += o.neighbor_held;
        self.neighbor_released += o.neighbor_released;
        self.tls_client_hellos += o.tls_client_hellos;
        self.dtls_client_hellos += o.dtls_client_hellos;
        for (a, b) in self.classes.iter_mut().zip(&o.classes) {
            *a += b;
        }
        for (a, b) in self.drops.iter_mut().zip(&o.drops) {
            *a += b;
        }
        self.clients.add(&o.clients);
        self.mtu.add(&o.mtu);
        self.affinity = add_affinity(&self.affinity, &o.affinity);
        if self.gateways.len() < o.gateways.len() {
            self.gateways.resize(o.gateways.len(), Vec::new());
        }
        if self.services.len() < o.services.len() {
            self.services
                .resize(o.services.len(), ServiceCounters::default());
        }
        for (a, b) in self.services.iter_mut().zip(&o.services) {
            a.add(b);
        }
        for (mine, theirs) in self.gateways.iter_mut().zip(&o.gateways) {
            if mine.len() < theirs.len() {
                mine.resize(theirs.len(), GatewayCounters::default());
            }
            for (a, b) in mine.iter_mut().zip(theirs) {
                a.add(b);
            }
        }
    }
}

fn add_affinity(a: &AffinityCounters, b: &AffinityCounters) -> AffinityCounters {
    AffinityCounters {
        inserts: a.inserts + b.inserts,
        confirmed: a.confirmed + b.confirmed,
        expired: a.expired + b.expired,
        evicted_unconfirmed: a.evicted_unconfirmed + b.evicted_unconfirmed,
        insert_full: a.insert_full + b.insert_full,
        probe_limit: a.probe_limit + b.probe_limit,
        removed: a.removed + b.removed,
        prefix_quota: a.prefix_quota + b.prefix_quota,
    }
}

/// Serializes `[u64; N]` counters as `{ "name": count, ... }`.
struct Named<'a, I: Copy + 'static> {
    values: &'a [u64],
    keys: &'a [I],
    name: fn(I) -> &'static str,
}

impl<I: Copy> Serialize for Named<'_, I> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(self.keys.len()))?;
        for (k, v) in self.keys.iter().zip(self.values) {
            m.serialize_entry((self.name)(*k), v)?;
        }
        m.end()
    }
}

impl Serialize for WorkerCounters {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut st = s.serialize_struct("WorkerCounters", 20)?;
        st.serialize_field("rx_packets", &self.rx_packets)?;
        st.serialize_field("rx_bytes", &self.rx_bytes)?;
        st.serialize_field("tx_packets", &self.tx_packets)?;
        st.serialize_field("tx_bytes", &self.tx_bytes)?;
        st.serialize_field("to_control", &self.to_control)?;
        st.serialize_field("arp_replies", &self.arp_replies)?;
        st.serialize_field("nd_replies", &self.nd_replies)?;
        st.serialize_field("echo_replies", &self.echo_replies)?;
        st.serialize_field("icmp_errors_translated", &self.icmp_errors_translated)?;
        st.serialize_field("neighbor_held", &self.neighbor_held)?;
        st.serialize_field("neighbor_released", &self.neighbor_released)?;
        st.serialize_field("tls_client_hellos", &self.tls_client_hellos)?;
        st.serialize_field("dtls_client_hellos", &self.dtls_client_hellos)?;
        st.serialize_field(
            "classes",
            &Named {
                values: &self.classes,
                keys: &Class::ALL,
                name: Class::name,
            },
        )?;
        st.serialize_field(
            "drops",
            &Named {
                values: &self.drops,
                keys: DropReason::ALL,
                name: DropReason::name,
            },
        )?;
        st.serialize_field("clients", &self.clients)?;
        st.serialize_field("mtu", &self.mtu)?;
        st.serialize_field("affinity", &self.affinity)?;
        st.serialize_field("gateways", &self.gateways)?;
        st.serialize_field("services", &self.services)?;
        st.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drop_reason_names_are_unique_and_kebab_case() {
        let mut names: Vec<&str> = DropReason::ALL.iter().map(|d| d.name()).collect();
        assert!(names
            .iter()
            .all(|n| n.chars().all(|c| c.is_ascii_lowercase() || c == '-')));
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), DropReason::COUNT);
        for (i, d) in DropReason::ALL.iter().enumerate() {
            assert_eq!(*d as usize, i);
        }
    }

    #[test]
    fn add_sums_everything() {
        let mut a = WorkerCounters::default();
        let mut b = WorkerCounters {
            rx_packets: 3,
            gateways: vec![vec![GatewayCounters::default(); 2]],
            ..Default::default()
        };
        b.drop(DropReason::TtlExpired);
        b.gateways[0][1].new_clients = 7;
        a.add(&b);
        a.add(&b);
        assert_eq!(a.rx_packets, 6);
        assert_eq!(a.dropped(DropReason::TtlExpired), 2);
        assert_eq!(a.gateways[0][1].new_clients, 14);
    }
}
