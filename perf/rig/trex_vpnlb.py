"""TRex stateless profile: the vpnlb lab mix, client -> VIP, with the client count as a tunable.

The streams mirror what `vpnlb-capgen` writes to client.pcap (perf/src/lib.rs): IKEv2 clients
(IKE_SA_INIT on UDP 500, IKE_AUTH behind the non-ESP marker on UDP 4500, then ESP in UDP 4500
with NAT-T keepalives, or raw ESP for every fifth client, the ones not behind NAT), over IPv4 and
IPv6, and TLS clients (TLS records and bare ACKs on TCP 443, DTLS records on UDP 443). Each
stream's rate is its kind's clients times that packet type's rate per client in a capgen capture
(averaged over its 60 s), so the streams keep capgen's proportions for the same client counts;
TRex's multiplier (-m 5mpps, -m 10gbps, -m 80%) scales the whole mix. IP fragments (0.25 % of the
capture) are left out; replay client.pcap with pktgen for those.

Each stream walks its clients with a field engine: a flow variable over the kind's addresses
(198.18.64.0/18, 2001:2:0:64::/64, the lab's client ranges), written into the source address,
then the checksums fixed (STLVmFixIpv4 where UDP carries no checksum, as Linux sends ESP-in-UDP
over IPv4; STLVmFixChecksumHw, NIC offload, for TCP and checksummed UDP).

    trex> portattr --port 1 --prom on
    trex> start -f perf/rig/trex_vpnlb.py --port 0 -m 2mpps -d 60 -t --clients 10000 --ipv6_clients 2500 --tls_clients 2500

Tunables (TRex >= 2.90 passes everything after -t to argparse; older consoles take
-t clients=10000,ipv6_clients=2500): --clients (IPv4 IKEv2 clients, capgen's --clients),
--ipv6_clients, --tls_clients. Load it on the client-side port only (direction 0).

The packet builders need Scapy only, so perf/rig/check_trex.py imports this file without TRex.
"""

import argparse
import ipaddress
import random
import struct

from scapy.all import IP, TCP, UDP, Ether, IPv6, Padding, Raw

try:  # current TRex (the trex package)
    from trex.stl.api import (CTRexVmInsFixHwCs, STLPktBuilder, STLScVmRaw, STLStream, STLTXCont,
                              STLVmFixChecksumHw, STLVmFixIpv4, STLVmFlowVar, STLVmWrFlowVar)
    HAVE_TREX = True
except ImportError:
    try:  # older TRex (trex_stl_lib)
        from trex_stl_lib.api import (CTRexVmInsFixHwCs, STLPktBuilder, STLScVmRaw, STLStream,
                                      STLTXCont, STLVmFixChecksumHw, STLVmFixIpv4, STLVmFlowVar,
                                      STLVmWrFlowVar)
        HAVE_TREX = True
    except ImportError:
        HAVE_TREX = False

# The lab (scripts/lab.sh): VIP and client ranges.
VIP4 = "198.18.0.100"
VIP6 = "2001:2:0:1::100"
CLIENT4_BASE = int(ipaddress.IPv4Address("198.18.64.0"))  # + 1 .. + MAX_V4_CLIENTS
MAX_V4_CLIENTS = (1 << 14) - 2  # hosts of 198.18.64.0/18, as capgen
CLIENT6_BASE = "2001:2:0:64::"  # the flow variable fills the low 32 bits
MAX_V6_CLIENTS = 1 << 24

# MACs of the lab capture (client.pcap): the upstream router to the appliance's client port.
# TRex fills in the port's addresses from trex_cfg.yaml when a stream leaves them unset.
LAB_ROUTER_MAC = "02:00:00:00:01:fe"
LAB_CLIENT_PORT_MAC = "02:00:00:00:01:01"

MTU = 1500
IKE_PORT, NATT_PORT, TLS_PORT, DTLS_PORT = 500, 4500, 443, 443
CLIENT_SPORT_TLS, CLIENT_SPORT_DTLS = 40001, 40002

# Packets per second per client, averaged over a 60 s capgen capture (perf/src/lib.rs): one
# IKE_SA_INIT and one IKE_AUTH per IKE client, NAT-T keepalives every 20 s once up, data every
# 1-500 ms of which 40 % upstream (~72 packets a client), 70 % of those small (80-172 bytes) and
# the rest near the MTU; a TLS client sends ~7 TLS records and ~7 bare ACKs on TCP 443 and
# ~74 DTLS records.
PPS_HANDSHAKE = 1.0 / 60
PPS_KEEPALIVE = 1.6 / 60
PPS_DATA = 1.2
SMALL_SHARE = 0.7
PPS_TLS = 7.0 / 60
SMALL_DATA = 128  # ESP packet / DTLS record body bytes of a small data packet


def _bytes(seed, n):
    rng = random.Random(seed)
    return bytes(rng.getrandbits(8) for _ in range(n))


# ---------------------------------------------------------------------------------------------
# Payloads, as perf/src/lib.rs and dataplane/src/craft.rs build them.

def _ike_header(spi_i, spi_r, next_payload, exchange, flags, message_id, length):
    # Version 2.0; length covers the whole message (RFC 7296 3.1).
    return struct.pack("!QQBBBBII", spi_i, spi_r, next_payload, 0x20, exchange, flags,
                       message_id, length)


def _ike_payload(next_payload, body):
    return struct.pack("!BBH", next_payload, 0, 4 + len(body)) + body


def ike_sa_init_request(seed=1, ke_group=31, ke_len=32):
    """IKE_SA_INIT request: SA (AES-GCM-16/256, PRF-HMAC-SHA2-256, ke_group), KE, Ni, NAT
    detection source and destination, IKEV2_FRAGMENTATION_SUPPORTED,
    SIGNATURE_HASH_ALGORITHMS, REDIRECT_SUPPORTED (strongSwan's usual set)."""
    sa, ke, nonce, notify = 33, 34, 40, 41
    transforms = (struct.pack("!BBHBBHHH", 3, 0, 12, 1, 0, 20, 0x800E, 256)  # ENCR AES-GCM-16
                  + struct.pack("!BBHBBH", 3, 0, 8, 2, 0, 5)  # PRF HMAC-SHA2-256
                  + struct.pack("!BBHBBH", 0, 0, 8, 4, 0, ke_group))  # DH group
    proposal = struct.pack("!BBHBBBB", 0, 0, 8 + len(transforms), 1, 1, 0, 3) + transforms
    notifies = [(16388, _bytes(seed + 1, 20)), (16389, _bytes(seed + 2, 20)), (16430, b""),
                (16431, b"\x00\x02\x00\x03\x00\x04"), (16406, b"")]
    chain = [(sa, proposal), (ke, struct.pack("!HH", ke_group, 0) + _bytes(seed, ke_len)),
             (nonce, _bytes(seed + 3, 32))]
    chain += [(notify, struct.pack("!BBH", 0, 0, t) + d) for t, d in notifies]
    body = b""
    for i, (_, data) in enumerate(chain):
        nxt = chain[i + 1][0] if i + 1 < len(chain) else 0
        body += _ike_payload(nxt, data)
    spi_i = struct.unpack("!Q", _bytes(seed + 4, 8))[0] | 1
    return _ike_header(spi_i, 0, sa, 34, 0x08, 0, 28 + len(body)) + body


def ike_auth_request(seed=2, body_len=470):
    """IKE_AUTH request behind the 4-byte non-ESP marker (RFC 3948 2.2): one SK payload whose
    next payload is IDi, body_len bytes of IV, ciphertext and ICV."""
    sk = _ike_payload(35, _bytes(seed, body_len))
    spi_i = struct.unpack("!Q", _bytes(seed + 1, 8))[0] | 1
    spi_r = struct.unpack("!Q", _bytes(seed + 2, 8))[0] | 1
    return b"\x00\x00\x00\x00" + _ike_header(spi_i, spi_r, 46, 35, 0x08, 1, 28 + len(sk)) + sk


def esp_packet(length, spi=0xC0DE0001, seq=1):
    """ESP: SPI (never 0: 0 is the non-ESP marker), sequence number, then IV/ciphertext/ICV."""
    return struct.pack("!II", spi, seq) + _bytes(spi ^ seq, max(length, 8) - 8)


def tls_application_data(length, seed=3):
    return struct.pack("!BHH", 23, 0x0303, length) + _bytes(seed, length)


def dtls_application_data(length, seq=1, epoch=1):
    """DTLS 1.2 record: type 23, version 0xfefd, epoch, 48-bit sequence number, length."""
    return (struct.pack("!BHH", 23, 0xFEFD, epoch) + struct.pack("!Q", seq)[2:]
            + struct.pack("!H", length) + _bytes(seq, length))


# ---------------------------------------------------------------------------------------------
# Frames. family 4 or 6; src the client address; l2 (src, dst) MACs or None for TRex's port
# addresses.

def _frame(family, src, l4, l2=None):
    eth = Ether(src=l2[0], dst=l2[1]) if l2 else Ether()
    ip = IP(src=src, dst=VIP4, ttl=52) if family == 4 else IPv6(src=src, dst=VIP6, hlim=52)
    # Pad to Ethernet's 60-byte minimum (the length fields exclude Padding). Measured without
    # the Ether header: building an Ether() with no addresses would make Scapy look up a route.
    short = 60 - 14 - len(ip / l4)
    pkt = eth / ip / l4
    return pkt / Padding(load=b"\x00" * short) if short > 0 else pkt


def _udp(sport, dport, payload, checksum=True):
    udp = UDP(sport=sport, dport=dport)
    if not checksum:
        udp.chksum = 0
    return udp / Raw(load=payload)


def _max_udp_payload(family):
    return MTU - (20 if family == 4 else 40) - 8


def build(kind, family, src, l2=None):
    """The template frame of one stream kind from client `src`."""
    v4 = family == 4
    big_esp_udp = _max_udp_payload(family) - 32
    big_esp = MTU - (20 if v4 else 40) - 32
    big_dtls = _max_udp_payload(family) - 13 - 32
    if kind == "ike-sa-init":
        l4 = _udp(IKE_PORT, IKE_PORT, ike_sa_init_request())
    elif kind == "ike-auth":
        l4 = _udp(NATT_PORT, NATT_PORT, ike_auth_request())
    elif kind == "natt-keepalive":
        l4 = _udp(NATT_PORT, NATT_PORT, b"\xff")
    elif kind in ("esp-in-udp-small", "esp-in-udp-large"):
        n = SMALL_DATA if kind.endswith("small") else big_esp_udp
        # Linux sends ESP-in-UDP over IPv4 without a UDP checksum; IPv6 needs one.
        l4 = _udp(NATT_PORT, NATT_PORT, esp_packet(n), checksum=not v4)
    elif kind in ("esp-small", "esp-large"):
        n = SMALL_DATA if kind.endswith("small") else big_esp
        payload = Raw(load=esp_packet(n))
        pkt = _frame(family, src, payload, l2)
        if v4:
            pkt[IP].proto = 50
        else:
            pkt[IPv6].nh = 50
        return pkt
    elif kind == "tls":
        l4 = TCP(sport=CLIENT_SPORT_TLS, dport=TLS_PORT, flags="PA", seq=1000, ack=2000,
                 window=64240) / Raw(load=tls_application_data(300))
    elif kind == "tcp-ack":
        l4 = TCP(sport=CLIENT_SPORT_TLS, dport=TLS_PORT, flags="A", seq=1300, ack=2000,
                 window=64240)
    elif kind in ("dtls-small", "dtls-large"):
        n = SMALL_DATA if kind.endswith("small") else big_dtls
        l4 = _udp(CLIENT_SPORT_DTLS, DTLS_PORT, dtls_application_data(n))
    else:
        raise ValueError("unknown stream kind %r" % kind)
    return _frame(family, src, l4, l2)


# (kind, client group, packets/s per client, class vpnlbd counts it as, checksum fix).
# Groups: "ike" = "natt" + "raw" (NAT-T clients, then raw-ESP clients), "tls".
MIX = [
    ("ike-sa-init", "ike", PPS_HANDSHAKE, "ike", "hw-udp"),
    ("ike-auth", "ike", PPS_HANDSHAKE, "ike", "hw-udp"),
    ("natt-keepalive", "natt", PPS_KEEPALIVE, "natt-keepalive", "hw-udp"),
    ("esp-in-udp-small", "natt", PPS_DATA * SMALL_SHARE, "esp-in-udp", "ipv4-only"),
    ("esp-in-udp-large", "natt", PPS_DATA * (1 - SMALL_SHARE), "esp-in-udp", "ipv4-only"),
    ("esp-small", "raw", PPS_DATA * SMALL_SHARE, "esp", "ipv4-only"),
    ("esp-large", "raw", PPS_DATA * (1 - SMALL_SHARE), "esp", "ipv4-only"),
    ("tls", "tls", PPS_TLS, "tls", "hw-tcp"),
    ("tcp-ack", "tls", PPS_TLS, "other", "hw-tcp"),
    ("dtls-small", "tls", PPS_DATA * SMALL_SHARE, "dtls", "hw-udp"),
    ("dtls-large", "tls", PPS_DATA * (1 - SMALL_SHARE), "dtls", "hw-udp"),
]


def groups(clients, ipv6_clients, tls_clients):
    """Client index ranges per (family, group): {(4, "natt"): (first, count), ...}. IPv4 index i
    is 198.18.64.0 + i, IPv6 index i is 2001:2:0:64::i. As capgen, every fifth IKE client
    (IPv4 first, then IPv6) is not behind NAT and sends raw ESP."""
    if clients < 0 or ipv6_clients < 0 or tls_clients < 0:
        raise ValueError("client counts must not be negative")
    if clients + tls_clients > MAX_V4_CLIENTS:
        raise ValueError("%d IPv4 clients requested, 198.18.64.0/18 holds %d"
                         % (clients + tls_clients, MAX_V4_CLIENTS))
    if ipv6_clients > MAX_V6_CLIENTS:
        raise ValueError("at most %d IPv6 clients" % MAX_V6_CLIENTS)
    raw4 = clients // 5
    raw6 = (clients + ipv6_clients + 1) // 5 - (clients + 1) // 5
    return {
        (4, "ike"): (1, clients),
        (4, "natt"): (1, clients - raw4),
        (4, "raw"): (1 + clients - raw4, raw4),
        (4, "tls"): (1 + clients, tls_clients),
        (6, "ike"): (1, ipv6_clients),
        (6, "natt"): (1, ipv6_clients - raw6),
        (6, "raw"): (1 + ipv6_clients - raw6, raw6),
        (6, "tls"): (1, 0),  # capgen has no IPv6 TLS clients
    }


def address(family, index):
    if family == 4:
        return str(ipaddress.IPv4Address(CLIENT4_BASE + index))
    return str(ipaddress.IPv6Address(int(ipaddress.IPv6Address(CLIENT6_BASE)) + index))


def plan(clients=20, ipv6_clients=5, tls_clients=5):
    """One entry per stream: what it sends, from which clients, how fast, and how it rewrites
    the source. Pure Python, so the checks can run it without TRex."""
    out = []
    g = groups(clients, ipv6_clients, tls_clients)
    for family in (4, 6):
        for kind, group, pps, cls, fix in MIX:
            first, count = g[(family, group)]
            if count == 0:
                continue
            if family == 4:
                write = ("IP.src", 0)
                var_min, var_max = address(4, first), address(4, first + count - 1)
            else:
                # The low 32 bits of IPv6.src: bytes 12..15 of the address.
                write = ("IPv6.src", 12)
                var_min, var_max = first, first + count - 1
            if family == 6 and fix == "ipv4-only":
                # IPv6 UDP needs a checksum; raw ESP has none to fix.
                fix = None if kind in ("esp-small", "esp-large") else "hw-udp"
            out.append({
                "name": "%s-v%d" % (kind, family), "kind": kind, "family": family,
                "first": first, "count": count, "pps": pps * count, "class": cls,
                "var_min": var_min, "var_max": var_max, "write": write, "fix": fix,
            })
    return out


# ---------------------------------------------------------------------------------------------
# TRex.

def field_engine(entry):
    """The stream's field engine: walk the client addresses, fix the checksums."""
    l3 = "IP" if entry["family"] == 4 else "IPv6"
    ins = [
        STLVmFlowVar(name="client", min_value=entry["var_min"], max_value=entry["var_max"],
                     size=4, op="inc"),
        STLVmWrFlowVar(fv_name="client", pkt_offset=entry["write"][0],
                       offset_fixup=entry["write"][1]),
    ]
    if entry["fix"] == "ipv4-only":
        ins.append(STLVmFixIpv4(offset="IP"))
    elif entry["fix"] == "hw-udp":
        ins.append(STLVmFixChecksumHw(l3_offset=l3, l4_offset="UDP",
                                      l4_type=CTRexVmInsFixHwCs.L4_TYPE_UDP))
    elif entry["fix"] == "hw-tcp":
        ins.append(STLVmFixChecksumHw(l3_offset=l3, l4_offset="TCP",
                                      l4_type=CTRexVmInsFixHwCs.L4_TYPE_TCP))
    return STLScVmRaw(ins)


TUNABLE_NAMES = ("clients", "ipv6_clients", "tls_clients")


def parse_tunables(tunables):
    parser = argparse.ArgumentParser(
        prog="trex_vpnlb.py", description="vpnlb lab mix to the VIP (perf/rig/README.md)",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--clients", type=int, default=20,
                        help="IPv4 IKEv2 clients (vpnlb-capgen --clients)")
    parser.add_argument("--ipv6_clients", "--ipv6-clients", dest="ipv6_clients", type=int,
                        default=5, help="IPv6 IKEv2 clients (vpnlb-capgen --ipv6-clients)")
    parser.add_argument("--tls_clients", "--tls-clients", dest="tls_clients", type=int,
                        default=5, help="IPv4 TLS/DTLS clients (vpnlb-capgen --tls-clients)")
    args = parser.parse_args(list(tunables))
    groups(args.clients, args.ipv6_clients, args.tls_clients)  # validates the counts
    return args


class VpnlbMix(object):
    def get_streams(self, tunables=(), direction=0, **kwargs):
        # TRex >= 2.90 hands over the words after -t as `tunables`; older consoles pass
        # clients=N etc. as keyword arguments.
        tunables = list(tunables or ())
        for name in TUNABLE_NAMES:
            if name in kwargs:
                tunables += ["--" + name, str(kwargs[name])]
        args = parse_tunables(tunables)
        if direction != 0:
            raise ValueError("trex_vpnlb.py sends client -> VIP traffic: load it on the port "
                             "facing the appliance's client port only (start ... --port 0)")
        if not HAVE_TREX:
            raise ImportError("trex.stl.api is not importable: run this profile from TRex")
        streams = []
        for entry in plan(args.clients, args.ipv6_clients, args.tls_clients):
            base = address(entry["family"], entry["first"])
            pkt = build(entry["kind"], entry["family"], base)
            streams.append(STLStream(name=entry["name"],
                                     packet=STLPktBuilder(pkt=pkt, vm=field_engine(entry)),
                                     mode=STLTXCont(pps=entry["pps"])))
        return streams


def register():
    return VpnlbMix()
