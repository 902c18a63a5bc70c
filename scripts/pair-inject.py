#!/usr/bin/env python3
"""Bad input for the HA pair test (scripts/pair-test.sh), sent with scapy from a lab namespace.

  pair-inject.py sync PCAP IFACE   the first sync datagram in PCAP sent again as captured (a
                                   replay), then with its sequence number raised (a forgery:
                                   the tag no longer verifies), then cut short (truncated)
  pair-inject.py vrrp IFACE SRC VRID ADDR...
                                   VRRPv3 adverts for VRID with priority 254 (above both
                                   appliances) and the pair's address list, each broken one
                                   way: checksum, TTL 64, VRID + 1, version 2, another
                                   address list. A valid one would take the mastership; none
                                   of these may.

Only lab addresses (../shared/LAB.md) appear: what is sent comes from the capture or the
arguments.
"""

import sys

from scapy.all import IP, UDP, Ether, Raw, rdpcap, sendp  # type: ignore
from scapy.layers.vrrp import VRRPv3  # type: ignore

SYNC_PORT = 7450
# Header offset of the sequence number (version 2; see control/src/sync/mod.rs).
SEQ_AT = 24


def sync(pcap: str, iface: str) -> None:
    frames = [p for p in rdpcap(pcap) if UDP in p and p[UDP].dport == SYNC_PORT]
    if not frames:
        sys.exit("pair-inject: no sync datagram in the capture")
    frame = frames[0]
    payload = bytes(frame[UDP].payload)
    forged = bytearray(payload)
    forged[SEQ_AT + 4] ^= 0x01  # seq + 2^24 or so: ahead of anything seen, but the tag fails
    for data in (payload, bytes(forged), payload[:20]):
        # From this namespace's own MAC: the bridge must not learn the real sender's elsewhere.
        p = Ether(dst=frame[Ether].dst) / IP(
            src=frame[IP].src, dst=frame[IP].dst, ttl=64
        ) / UDP(sport=frame[UDP].sport, dport=SYNC_PORT) / Raw(data)
        sendp(p, iface=iface, verbose=False)


def vrrp(iface: str, src: str, vrid: int, addrs: list[str]) -> None:
    def advert(ttl=255, vrid=vrid, version=3, addrlist=addrs, chksum=None):
        v = VRRPv3(version=version, vrid=vrid, priority=254, ipcount=len(addrlist),
                   adv=10, addrlist=addrlist)
        if chksum is not None:
            v.chksum = chksum
        return Ether(dst="01:00:5e:00:00:12") / IP(
            src=src, dst="224.0.0.18", ttl=ttl, proto=112) / v

    good_sum = Ether(bytes(advert()))[VRRPv3].chksum
    bad = [
        advert(chksum=(good_sum ^ 0x5A5A) or 1),
        advert(ttl=64),
        advert(vrid=(vrid % 255) + 1),
        advert(version=2),
        advert(addrlist=addrs[:-1] + ["198.18.0.99"]),
    ]
    for p in bad:
        sendp(p, iface=iface, verbose=False)


def main() -> None:
    if len(sys.argv) >= 4 and sys.argv[1] == "sync":
        sync(sys.argv[2], sys.argv[3])
    elif len(sys.argv) >= 6 and sys.argv[1] == "vrrp":
        vrrp(sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5:])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
