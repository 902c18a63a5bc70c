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
  pair-inject.py flood --iface IFACE --seconds S --max N [--pps R] --src4 A --src6 A
                       --gateway A --vrid V --addrs A,A,.. --target ADDR@MAC ...
                                   for S seconds (at most 10) or N frames, whichever comes
                                   first, as fast as a raw socket goes (or R frames a
                                   second, in bursts of about 512): pre-built frames in
                                   turn, to every target (the appliances' own addresses and
                                   the VIP, each at its MAC): VRRPv3 adverts (priority 254)
                                   with TTL 64 and 255 to 224.0.0.18 (the 255 ones for
                                   VRID + 1: well-formed, policed, never a takeover) and
                                   unicast; IPv6 NS and NA with hop limit 64 and 255; UDP and
                                   TCP from the gateway's address. Prints one JSON line: the
                                   frames sent by kind and target, the seconds and the rate.

Only lab addresses (scripts/lab.sh) appear: what is sent comes from the capture or the
arguments.
"""

import argparse
import json
import socket
import sys
import time

from scapy.all import IP, TCP, UDP, Ether, Raw, rdpcap, sendp  # type: ignore
from scapy.layers.inet6 import (  # type: ignore
    ICMPv6ND_NA, ICMPv6ND_NS, ICMPv6NDOptDstLLAddr, ICMPv6NDOptSrcLLAddr, IPv6)
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


FLOOD_MAX_S = 10.0
FLOOD_MAX_FRAMES = 20_000_000


def flood_frames(a: argparse.Namespace, mac: str) -> list[tuple[str, str, bytes]]:
    """(kind, target, frame) for one round of the flood."""
    frames = []
    addrs = a.addrs.split(",")

    def add(kind: str, target: str, p) -> None:
        frames.append((kind, target, bytes(p)))

    def vrrp(dst: str, dmac: str, ttl: int, vrid: int):
        return Ether(src=mac, dst=dmac) / IP(src=a.src4, dst=dst, ttl=ttl, proto=112) / VRRPv3(
            version=3, vrid=vrid, priority=254, ipcount=len(addrs), adv=10, addrlist=addrs)

    add("vrrp-ttl64-group", "group", vrrp("224.0.0.18", "01:00:5e:00:00:12", 64, a.vrid))
    add("vrrp-ttl255-group", "group", vrrp("224.0.0.18", "01:00:5e:00:00:12", 255, a.vrid % 255 + 1))
    for t in a.target:
        addr, dmac = t.split("@", 1)
        if ":" in addr:
            ip6 = lambda hlim: Ether(src=mac, dst=dmac) / IPv6(src=a.src6, dst=addr, hlim=hlim)
            for hlim in (64, 255):
                add(f"ns-hlim{hlim}", addr,
                    ip6(hlim) / ICMPv6ND_NS(tgt=addr) / ICMPv6NDOptSrcLLAddr(lladdr=mac))
                # The legitimate-looking NA (hop limit 255) four times a round: over the ND
                # class's budget (2000/s) at 40 000 frames/s, so its policing shows.
                for _ in range(4 if hlim == 255 else 1):
                    add(f"na-hlim{hlim}", addr,
                        ip6(hlim) / ICMPv6ND_NA(tgt=a.src6, R=0, S=0, O=1) / ICMPv6NDOptDstLLAddr(lladdr=mac))
        else:
            add("vrrp-ttl64-unicast", addr, vrrp(addr, dmac, 64, a.vrid))
            add("vrrp-ttl255-unicast", addr, vrrp(addr, dmac, 255, a.vrid))
            gw = Ether(src=mac, dst=dmac) / IP(src=a.gateway, dst=addr, ttl=64)
            add("gateway-udp", addr, gw / UDP(sport=500, dport=9) / Raw(b"x" * 32))
            add("gateway-tcp", addr, gw / TCP(sport=40000, dport=22, flags="S"))
    return frames


def flood(argv: list[str]) -> None:
    ap = argparse.ArgumentParser(prog="pair-inject.py flood")
    ap.add_argument("--iface", required=True)
    ap.add_argument("--seconds", type=float, required=True)
    ap.add_argument("--max", type=int, required=True)
    ap.add_argument("--src4", required=True)
    ap.add_argument("--src6", required=True)
    ap.add_argument("--gateway", required=True)
    ap.add_argument("--vrid", type=int, required=True)
    ap.add_argument("--addrs", required=True, help="the VRRP address list, comma-separated")
    ap.add_argument("--target", action="append", required=True, help="ADDR@MAC")
    ap.add_argument("--pps", type=int, default=0, help="frames per second at most (0: as fast as it goes)")
    a = ap.parse_args(argv)
    seconds = min(max(a.seconds, 0.0), FLOOD_MAX_S)
    cap = min(max(a.max, 0), FLOOD_MAX_FRAMES)
    with open(f"/sys/class/net/{a.iface}/address") as f:
        mac = f.read().strip()
    frames = flood_frames(a, mac)
    raw = [f for _, _, f in frames]
    n = len(raw)
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    s.bind((a.iface, 0))
    s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
    send = s.send
    sent = errors = 0
    t0 = time.monotonic()
    deadline = t0 + seconds
    # Bounded twice: the cap on frames, and the clock every 512 of them.
    batch = raw * (512 // n or 1)
    while sent + errors < cap:
        if a.pps > 0:
            ahead = (sent + errors) / a.pps - (time.monotonic() - t0)
            if ahead > 0:
                time.sleep(min(ahead, 0.05))
        for f in batch:
            try:
                send(f)
                sent += 1
            except OSError:  # ENOBUFS under pressure: counted, not retried
                errors += 1
        if time.monotonic() >= deadline:
            break
    elapsed = time.monotonic() - t0
    s.close()
    # Frames went in turn, one round at a time (errors hit any of them alike).
    by_kind: dict[str, int] = {}
    by_target: dict[str, dict[str, int]] = {}
    done = sent + errors
    for i, (kind, target, _) in enumerate(frames):
        k = done // n + (1 if i < done % n else 0)
        by_kind[kind] = by_kind.get(kind, 0) + k
        by_target.setdefault(target, {})
        by_target[target][kind] = by_target[target].get(kind, 0) + k
    scale = sent / done if done else 0.0
    print(json.dumps({
        "sent": sent, "send_errors": errors, "seconds": round(elapsed, 2),
        "pps": round(sent / elapsed) if elapsed > 0 else 0, "frames_per_round": n,
        "by_kind": {k: round(v * scale) for k, v in by_kind.items()},
        "by_target": {t: {k: round(v * scale) for k, v in d.items()} for t, d in by_target.items()},
    }))


def main() -> None:
    if len(sys.argv) >= 2 and sys.argv[1] == "flood":
        flood(sys.argv[2:])
    elif len(sys.argv) >= 4 and sys.argv[1] == "sync":
        sync(sys.argv[2], sys.argv[3])
    elif len(sys.argv) >= 6 and sys.argv[1] == "vrrp":
        vrrp(sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5:])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
