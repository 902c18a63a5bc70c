#!/usr/bin/env python3
"""Helpers for scripts/e2e.sh (standard library only).

  e2e.py oracle --vpnlbd BIN --config CONF --work DIR [--state GW=STATE ...] ADDR...
      Where the scheduler puts each client address: one UDP 500 datagram per address is replayed
      through `vpnlbd replay` with CONF (gateway states overridden as given); prints "ADDR GW".
  e2e.py sa FILE...
      Summarises clients' `swanctl --list-sas --raw`: "FILE IKE CHILD VIP ISPI BYTES_IN BYTES_OUT"
      ("-" where absent) for the best IKE_SA (established with an installed CHILD_SA first).
  e2e.py gwsas FILE
      A gateway's `swanctl --list-sas --raw`: "REMOTE_ID REMOTE_HOST STATE" per IKE_SA.
  e2e.py pcap --out JSON GW=PCAP...
      Per client address seen in the gateways' captures: per gateway and direction, packets by
      class (ike500, ike4500, ike-fragment (RFC 7383), esp-in-udp, keepalive, tls, dtls, fragment
      (a non-first IP fragment; "fragmented" counts the first ones), icmp, other), and the
      time-ordered segments of client-originated packets by gateway.
  e2e.py pcap-check --summary JSON --expect FILE --times FILE
      Checks the segments against the expectations (FILE: "ADDR LABEL FIRST_GW [MOVED_GW]") and
      the phase times (FILE: "NAME EPOCH_SECONDS" lines: kill, down, up): a client's packets
      reach one gateway, except that gw2's clients move once, after gw2's charon was killed, to
      the gateway the scheduler gives them; nothing reaches gw2 while it is down. Prints one
      line per address ("ADDR ok|MISS GATEWAYS CLASSES") and the misses; exit 1 on a miss.
"""
import argparse
import ipaddress
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import tomllib

CLIENT_MAC = bytes.fromhex("020000000101")  # the appliance's client port (docs/lab.md)
# A bare IKEv2 IKE_SA_INIT header (28 bytes, no payloads): what the oracle's clients send. The
# appliance drops what is not IKE on the IKE port, so it must be a valid header.
IKE_SA_INIT_HEADER = b"oracle!!" + bytes(8) + bytes([0, 0x20, 34, 0x08]) + bytes(4) + struct.pack("!I", 28)


def _csum(data):
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack("!%dH" % (len(data) // 2), data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def _udp_frame(src, dst, sport, dport, payload, to_mac=CLIENT_MAC):
    s, d = ipaddress.ip_address(src), ipaddress.ip_address(dst)
    ulen = 8 + len(payload)
    if s.version == 4:
        pseudo = s.packed + d.packed + struct.pack("!BBH", 0, 17, ulen)
    else:
        pseudo = s.packed + d.packed + struct.pack("!I3xB", ulen, 17)
    udp = struct.pack("!HHHH", sport, dport, ulen, 0) + payload
    udp = udp[:6] + struct.pack("!H", _csum(pseudo + udp) or 0xFFFF) + udp[8:]
    if s.version == 4:
        hdr = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + ulen, 0, 0, 64, 17, 0, s.packed, d.packed)
        ip, ethertype = hdr[:10] + struct.pack("!H", _csum(hdr)) + hdr[12:] + udp, 0x0800
    else:
        ip = struct.pack("!IHBB16s16s", 6 << 28, ulen, 17, 64, s.packed, d.packed) + udp
        ethertype = 0x86DD
    return to_mac + bytes.fromhex("02000000c0fe") + struct.pack("!H", ethertype) + ip


def cmd_oracle(a):
    os.makedirs(a.work, exist_ok=True)
    text = open(a.config).read()
    for st in a.state:
        gw, state = st.split("=", 1)
        needle = f'name = "{gw}"\n'
        if needle not in text:
            sys.exit(f"oracle: no gateway {gw} in {a.config}")
        text = text.replace(needle, f'{needle}state = "{state}"\n')
    conf = os.path.join(a.work, "oracle.toml")
    open(conf, "w").write(text)
    # Which VIP: the service's, from the config (one IPv4 and one IPv6 VIP).
    vips = re.search(r"^vip = \[([^\]]*)\]", text, re.M).group(1)
    vips = [ipaddress.ip_address(v.strip().strip('"')) for v in vips.split(",")]
    vip = {v.version: str(v) for v in vips}
    # To the client port's MAC of this configuration (each appliance of a pair has its own).
    to_mac = CLIENT_MAC
    for port in tomllib.loads(text).get("port", []):
        if port.get("role") == "client":
            to_mac = bytes.fromhex(port["mac"].replace(":", ""))
            break
    pcap = os.path.join(a.work, "oracle.pcap")
    with open(pcap, "wb") as f:
        f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
        for addr in a.addrs:
            v = ipaddress.ip_address(addr).version
            fr = _udp_frame(addr, vip[v], 500, 500, IKE_SA_INIT_HEADER, to_mac)
            f.write(struct.pack("<IIII", 1000, 0, len(fr), len(fr)) + fr)
    out = os.path.join(a.work, "replay-out")
    shutil.rmtree(out, ignore_errors=True)
    os.makedirs(out)
    r = subprocess.run([a.vpnlbd, "replay", "--config", conf, "--in", f"client={pcap}",
                        "--out-dir", out, "--affinity"], capture_output=True, text=True, timeout=60)
    if r.returncode != 0:
        sys.exit(f"oracle: vpnlbd replay failed: {r.stderr[-2000:]}")
    rep = json.loads(r.stdout)
    got = {e["client"]: e["gateway"] for e in rep["affinity"]}
    for addr in a.addrs:
        key = str(ipaddress.ip_address(addr))
        if key not in got:
            sys.exit(f"oracle: replay scheduled no gateway for {addr}: drops {rep['counters']['drops']}")
        print(addr, got[key])


def _sa_events(path):
    """The IKE_SAs in a `swanctl --list-sas --raw` output, as dicts."""
    try:
        text = open(path, errors="replace").read()
    except OSError:
        return []
    sas = []
    for line in text.splitlines():
        if not line.startswith("list-sa event"):
            continue
        body = line[len("list-sa event "):]
        top = re.search(r"^\{\S+ \{(.*)\}\}$", body)
        if not top:
            continue
        inner = top.group(1)
        cpos = inner.find("child-sas {")
        ike_part = inner if cpos < 0 else inner[:cpos]
        ike = dict(re.findall(r"([\w-]+)=(\[[^\]]*\]|\S+)", ike_part))
        children = []
        if cpos >= 0:
            for c in re.findall(r"[\w.-]+ \{([^{}]*)\}", inner[cpos + len("child-sas {"):]):
                children.append(dict(re.findall(r"([\w-]+)=(\[[^\]]*\]|\S+)", c)))
        ike["children"] = children
        sas.append(ike)
    return sas


def cmd_sa(a):
    for f in a.files:
        print(f, *_sa_summary(f))


def _sa_summary(path):
    best = None
    for ike in _sa_events(path):
        child = next((c for c in ike["children"] if c.get("state") == "INSTALLED"), None)
        rank = (ike.get("state") == "ESTABLISHED", child is not None)
        if best is None or rank > best[0]:
            best = (rank, ike, child)
    if best is None:
        return ["-"] * 6
    _, ike, child = best
    vips = ike.get("local-vips", "[]").strip("[]").split()
    return [ike.get("state", "-"), child.get("state", "-") if child else "-",
            vips[0] if vips else "-", ike.get("initiator-spi", "-"),
            child.get("bytes-in", "-") if child else "-", child.get("bytes-out", "-") if child else "-"]


def cmd_gwsas(a):
    for ike in _sa_events(a.file):
        print(ike.get("remote-id", "-"), ike.get("remote-host", "-"), ike.get("state", "-"))


# --- captures -------------------------------------------------------------------------------

def _pcap_packets(path):
    """(time, ethernet frame) from a classic pcap file (tcpdump -w, any byte order)."""
    with open(path, "rb") as f:
        data = f.read()
    if len(data) < 24:
        return
    magic = data[:4]
    if magic in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1"):
        e = "<"
    elif magic in (b"\xa1\xb2\xc3\xd4", b"\xa1\xb2\x3c\x4d"):
        e = ">"
    else:
        raise SystemExit(f"{path}: not a pcap file")
    nano = magic in (b"\x4d\x3c\xb2\xa1", b"\xa1\xb2\x3c\x4d")
    linktype = struct.unpack(e + "I", data[20:24])[0]
    if linktype != 1:
        raise SystemExit(f"{path}: link type {linktype}, not Ethernet")
    off = 24
    while off + 16 <= len(data):
        sec, frac, incl, _ = struct.unpack(e + "IIII", data[off:off + 16])
        off += 16
        frame = data[off:off + incl]
        off += incl
        yield sec + frac / (1e9 if nano else 1e6), frame


def _classify(l4proto, l4, first_fragment):
    if not first_fragment:
        return "fragment", None
    if l4proto == 17 and len(l4) >= 8:
        sport, dport = struct.unpack("!HH", l4[:4])
        payload = l4[8:]
        ports = {sport, dport}
        if 4500 in ports:
            if payload[:1] == b"\xff" and len(payload) == 1:
                return "keepalive", ports
            if payload[:4] == b"\0\0\0\0":
                # An IKE message whose first payload is SKF (53): an RFC 7383 fragment.
                return ("ike-fragment" if payload[4 + 16:4 + 17] == b"\x35" else "ike4500"), ports
            return "esp-in-udp", ports
        if 500 in ports:
            return ("ike-fragment" if payload[16:17] == b"\x35" else "ike500"), ports
        if 443 in ports:
            return "dtls", ports
        return "other", ports
    if l4proto == 6 and len(l4) >= 4:
        ports = set(struct.unpack("!HH", l4[:4]))
        return ("tls" if 443 in ports else "other"), ports
    if l4proto in (1, 58):
        return "icmp", None
    return "other", None


def _parse_ip(frame):
    """(src, dst, class) of an Ethernet frame carrying IPv4/IPv6, else None."""
    if len(frame) < 14:
        return None
    et = struct.unpack("!H", frame[12:14])[0]
    off = 14
    while et in (0x8100, 0x88A8) and len(frame) >= off + 4:
        et = struct.unpack("!H", frame[off + 2:off + 4])[0]
        off += 4
    p = frame[off:]
    if et == 0x0800 and len(p) >= 20:
        ihl = (p[0] & 0x0F) * 4
        frag = struct.unpack("!H", p[6:8])[0] & 0x1FFF
        src, dst = ipaddress.ip_address(p[12:16]), ipaddress.ip_address(p[16:20])
        return src, dst, _classify(p[9], p[ihl:], frag == 0)[0], bool(frag) or bool(p[6] & 0x20)
    if et == 0x86DD and len(p) >= 40:
        src, dst = ipaddress.ip_address(p[8:24]), ipaddress.ip_address(p[24:40])
        nh, q, first, fragmented = p[6], p[40:], True, False
        while nh in (0, 43, 44, 60, 51) and len(q) >= 8:
            if nh == 44:
                fragmented = True
                first = (struct.unpack("!H", q[2:4])[0] & 0xFFF8) == 0
                nh, q = q[0], q[8:]
            elif nh == 51:
                nh, q = q[0], q[(q[1] + 2) * 4:]
            else:
                nh, q = q[0], q[(q[1] + 1) * 8:]
        return src, dst, _classify(nh, q, first)[0], fragmented
    return None


GATEWAYS = {
    "gw1": ("198.19.0.11", "2001:2:0:2::11"),
    "gw2": ("198.19.0.12", "2001:2:0:2::12"),
    "gw3": ("198.19.0.13", "2001:2:0:2::13"),
}
APPLIANCE = {ipaddress.ip_address("198.19.0.1"), ipaddress.ip_address("2001:2:0:2::1")}


def cmd_pcap(a):
    gw_addr = {ipaddress.ip_address(x): g for g, xs in GATEWAYS.items() for x in xs}
    clients = {}
    for spec in a.pcaps:
        gw, path = spec.split("=", 1)
        for t, frame in _pcap_packets(path):
            r = _parse_ip(frame)
            if r is None:
                continue
            src, dst, cls, fragmented = r
            if src in APPLIANCE or dst in APPLIANCE or src.is_link_local or dst.is_link_local:
                continue  # health probes, neighbor discovery
            if gw_addr.get(dst) == gw and src not in gw_addr:
                client, direction = str(src), "to"
            elif gw_addr.get(src) == gw and dst not in gw_addr:
                client, direction = str(dst), "from"
            else:
                continue
            c = clients.setdefault(client, {"gateways": {}, "events": []})
            d = c["gateways"].setdefault(gw, {"to": {}, "from": {}})
            d[direction][cls] = d[direction].get(cls, 0) + 1
            if fragmented and cls != "fragment":
                d[direction]["fragmented"] = d[direction].get("fragmented", 0) + 1
            if direction == "to":
                c["events"].append((t, gw))
    for c in clients.values():
        segs = []
        for t, gw in sorted(c.pop("events")):
            if segs and segs[-1]["gateway"] == gw:
                segs[-1]["last"] = t
                segs[-1]["packets"] += 1
            else:
                segs.append({"gateway": gw, "first": t, "last": t, "packets": 1})
        c["segments"] = segs
    json.dump(clients, open(a.out, "w"), indent=1, sort_keys=True)


SHORT = {"ike500": "ike500", "ike4500": "ike4500", "ike-fragment": "ikefrag", "esp-in-udp": "esp",
         "keepalive": "ka",
         "tls": "tls", "dtls": "dtls", "fragment": "frag", "fragmented": "frag1", "icmp": "icmp",
         "other": "other"}


def cmd_pcap_check(a):
    summary = json.load(open(a.summary))
    times = {}
    for line in open(a.times):
        k, v = line.split()
        times[k] = float(v)
    grace = 0.3  # the dataplane adopts a health change between bursts, after show gateways says so
    misses = []
    t_kill, t_down, t_up = times.get("kill"), times.get("down"), times.get("up")
    for line in open(a.expect):
        f = line.split()
        if not f:
            continue
        addr, label, first = f[0], f[1], f[2]
        moved = f[3] if len(f) > 3 else None
        key = str(ipaddress.ip_address(addr))
        c = summary.get(key)
        if c is None or not c["segments"]:
            misses.append(f"{label} {addr}: no packet of it reached any gateway")
            print(addr, "MISS", "-", "-")
            continue
        segs = c["segments"]
        route = [s["gateway"] for s in segs]
        ok = True
        if moved is None:
            if route != [first]:
                ok = False
                misses.append(f"{label} {addr}: packets reached {route}, expected only {first}")
        else:
            allowed = [[first], [first, moved], [moved]]
            if route not in allowed:
                ok = False
                misses.append(f"{label} {addr}: packets reached {route}, expected {first} then {moved}")
            else:
                for s in segs:
                    if s["gateway"] == first and t_down is not None and s["last"] > t_down + grace:
                        ok = False
                        misses.append(f"{label} {addr}: still reached {first} {s['last'] - t_down:.2f} s after it went down")
                    if s["gateway"] == moved and t_kill is not None and s["first"] < t_kill:
                        ok = False
                        misses.append(f"{label} {addr}: reached {moved} before {first} was killed")
        # Nothing from anyone reaches gw2 between its going down and coming back.
        if t_down is not None:
            end = t_up if t_up is not None else float("inf")
            for s in segs:
                if s["gateway"] == "gw2" and s["last"] > t_down + grace and s["first"] < end:
                    ok = False
                    misses.append(f"{label} {addr}: reached gw2 while it was down")
                    break
        parts = []
        for gw in sorted(c["gateways"]):
            d = c["gateways"][gw]
            to = ",".join(f"{SHORT.get(k, k)}={v}" for k, v in sorted(d["to"].items()))
            fr = ",".join(f"{SHORT.get(k, k)}={v}" for k, v in sorted(d["from"].items()))
            parts.append(f"{gw}[to:{to or '-'} from:{fr or '-'}]")
        print(addr, "ok" if ok else "MISS", "->".join(route), " ".join(parts))
    # Addresses nobody expected (not ours) reaching gw2 while down are misses too.
    for key, c in summary.items():
        for s in c["segments"]:
            if t_down is not None and s["gateway"] == "gw2" and s["last"] > t_down + grace \
                    and s["first"] < (t_up if t_up is not None else float("inf")):
                if not any(key in m for m in misses):
                    misses.append(f"{key}: reached gw2 while it was down")
    for m in misses:
        print("MISS", m)
    sys.exit(1 if misses else 0)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    o = sub.add_parser("oracle")
    o.add_argument("--vpnlbd", required=True)
    o.add_argument("--config", required=True)
    o.add_argument("--work", required=True)
    o.add_argument("--state", action="append", default=[])
    o.add_argument("addrs", nargs="+")
    s = sub.add_parser("sa")
    s.add_argument("files", nargs="+")
    g = sub.add_parser("gwsas")
    g.add_argument("file")
    c = sub.add_parser("pcap")
    c.add_argument("--out", required=True)
    c.add_argument("pcaps", nargs="+")
    k = sub.add_parser("pcap-check")
    k.add_argument("--summary", required=True)
    k.add_argument("--expect", required=True)
    k.add_argument("--times", required=True)
    a = p.parse_args()
    {"oracle": cmd_oracle, "sa": cmd_sa, "gwsas": cmd_gwsas, "pcap": cmd_pcap,
     "pcap-check": cmd_pcap_check}[a.cmd](a)


if __name__ == "__main__":
    main()
