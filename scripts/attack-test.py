#!/usr/bin/env python3
"""Helpers for scripts/attack-test.sh (the spoofed-source flood in the lab of scripts/lab.sh).

  attack-test.py flood IFACE DST_MAC VIP IKE_FIRST SYN_FIRST COUNT SECONDS
      COUNT IKE_SA_INIT requests (UDP 500 -> VIP:500: SA, KE, nonce, as redirect-test.py builds
      them, each with a fresh initiator SPI) from the sources IKE_FIRST, IKE_FIRST+1, ..., and
      COUNT TCP SYNs (-> VIP:443) from SYN_FIRST, SYN_FIRST+1, ..., interleaved, in Ethernet
      frames to DST_MAC (the appliance's client port) on IFACE (an AF_PACKET socket: the sources
      are nobody's). Paced evenly over SECONDS, and never longer than SECONDS + 5 (what is left
      then is not sent). Prints "sending N frames" once they are built, then "ike SENT syn SENT
      seconds S pps P".
  attack-test.py stats JSON PATH...
      Fields of `vpnlbctl --json show stats` (dot-separated PATH under the top, e.g.
      counters.affinity.evicted_unconfirmed), one line; "0" for a field this vpnlbd does not
      have (older builds lack some counters).
  attack-test.py entry JSON
      `vpnlbctl --json show affinity CLIENT` -> "GATEWAY CONFIRMED" of its first entry, or "- -".

Only lab addresses appear; what is sent comes from the arguments.
"""
import importlib.util
import ipaddress
import json
import os
import socket
import struct
import sys
import time

_here = os.path.dirname(os.path.abspath(__file__))
_spec = importlib.util.spec_from_file_location("redirect_test", os.path.join(_here, "redirect-test.py"))
redirect_test = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(redirect_test)


def checksum(data):
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def ipv4(src, dst, proto, payload):
    hdr = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), 0, 0x4000, 64, proto, 0, src, dst)
    return hdr[:10] + struct.pack("!H", checksum(hdr)) + hdr[12:] + payload


def l4_checksum(src, dst, proto, seg):
    return checksum(src + dst + struct.pack("!BBH", 0, proto, len(seg)) + seg)


def ike_frame(eth, src, dst):
    msg = redirect_test.ike_sa_init(os.urandom(8), os.urandom(32))
    udp = struct.pack("!HHHH", 500, 500, 8 + len(msg), 0) + msg
    c = l4_checksum(src, dst, 17, udp) or 0xFFFF
    udp = udp[:6] + struct.pack("!H", c) + udp[8:]
    return eth + ipv4(src, dst, 17, udp)


def syn_frame(eth, src, dst, sport):
    seq = struct.unpack("!I", os.urandom(4))[0]
    mss = struct.pack("!BBH", 2, 4, 1460)
    tcp = struct.pack("!HHIIBBHHH", sport, 443, seq, 0, (24 // 4) << 4, 0x02, 64240, 0, 0) + mss
    c = l4_checksum(src, dst, 6, tcp)
    tcp = tcp[:16] + struct.pack("!H", c) + tcp[18:]
    return eth + ipv4(src, dst, 6, tcp)


def cmd_flood(iface, dst_mac, vip, ike_first, syn_first, count, seconds):
    count, seconds = int(count), float(seconds)
    src_mac = open(f"/sys/class/net/{iface}/address").read().strip()
    eth = bytes.fromhex(dst_mac.replace(":", "")) + bytes.fromhex(src_mac.replace(":", "")) + b"\x08\x00"
    dst = ipaddress.IPv4Address(vip).packed
    ike0, syn0 = int(ipaddress.IPv4Address(ike_first)), int(ipaddress.IPv4Address(syn_first))
    frames = []
    for i in range(count):
        frames.append(ike_frame(eth, ipaddress.IPv4Address(ike0 + i).packed, dst))
        frames.append(syn_frame(eth, ipaddress.IPv4Address(syn0 + i).packed, dst, 1024 + i % 60000))
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    s.bind((iface, 0))
    total, sent, t0 = len(frames), 0, time.monotonic()
    print(f"sending {total} frames", flush=True)
    while sent < total:
        now = time.monotonic() - t0
        if now > seconds + 5:
            break
        due = min(total, int(total * min(1.0, now / seconds)) + 1)
        while sent < due:
            try:
                s.send(frames[sent])
            except BlockingIOError:
                break
            sent += 1
        time.sleep(0.005)
    took = time.monotonic() - t0
    ike, syn = (sent + 1) // 2, sent // 2
    print(f"ike {ike} syn {syn} seconds {took:.1f} pps {sent / took:.0f}")


def cmd_stats(path, *fields):
    doc = json.load(open(path))
    out = []
    for f in fields:
        v = doc
        for k in f.split("."):
            v = v.get(k) if isinstance(v, dict) else None
        out.append("0" if v is None else str(v))
    print(" ".join(out))


def cmd_entry(path):
    rows = json.load(open(path))
    if isinstance(rows, list) and rows:
        r = rows[0]
        print(r.get("gateway", "-"), "yes" if r.get("confirmed") else "no")
    else:
        print("- -")


def main():
    a = sys.argv[1:]
    if a and a[0] == "flood" and len(a) == 8:
        cmd_flood(*a[1:])
    elif a and a[0] == "stats" and len(a) >= 3:
        cmd_stats(*a[1:])
    elif a and a[0] == "entry" and len(a) == 2:
        cmd_entry(a[1])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
