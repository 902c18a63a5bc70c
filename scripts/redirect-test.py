#!/usr/bin/env python3
"""Helpers for scripts/redirect-test.sh (the IKEv2 redirect mode in the lab of scripts/lab.sh).

  redirect-test.py gateways JSON
      `vpnlbctl --json show gateways` -> "GW HEALTH REDIRECTS REPORTED AGE_MS LOAD ROUTED_TO
      ROUTED_FROM" per gateway ("-" for null or missing).
  redirect-test.py redirect JSON SERVICE
      `vpnlbctl --json show redirect` -> "MALFORMED NO_REDIRECT_SUPPORTED ACCEPTED REJECTED" for
      SERVICE (REJECTED: load reports rejected for any reason).
  redirect-test.py affinity JSON
      `vpnlbctl --json show affinity` -> "CLIENT GATEWAY DIRECT" per entry (DIRECT: yes/no).
  redirect-test.py sa FILE...
      Clients' `swanctl --list-sas --raw`: "FILE IKE CHILD VIP REMOTE_HOST BYTES_IN BYTES_OUT" ("-"
      where absent) for the best IKE_SA (established with an installed CHILD_SA first).
  redirect-test.py frags SUMMARY ADDR GW
      From `e2e.py pcap`'s summary: the client's IP fragments at its gateway, "TO_FIRST
      TO_NONFIRST FROM_FIRST FROM_NONFIRST TO_IKEFRAG FROM_IKEFRAG" (TO: client -> gateway; FIRST:
      first fragments, NONFIRST: the others; IKEFRAG: RFC 7383 fragments).
  redirect-test.py key CONFIG
      The service's load report key ([redirect] report_key).
  redirect-test.py inject IFACE SRC VIP DST_MAC      (needs scapy: /usr/bin/python3)
      Malformed IKE_SA_INIT requests, each carrying N(REDIRECT_SUPPORTED), from SRC:500 to VIP:500
      in frames to DST_MAC (the appliance's client port); prints "SPI KIND" per request sent.
  redirect-test.py probe SRC VIP
      One well-formed IKE_SA_INIT with N(REDIRECT_SUPPORTED) from SRC:500 (a UDP socket, IPv4 or
      IPv6); checks the answer is an IKE_SA_INIT response with N(REDIRECT) (RFC 5685: a gateway
      identity of the request's family, type 1 with 4 bytes or type 2 with 16, our nonce echoed);
      prints "SPI GATEWAY_ADDRESS" or exits 1 saying what was wrong.
  redirect-test.py answers PCAP VIP SPI...
      Of the requests with these initiator SPIs, which the capture shows answered from VIP:500:
      prints "SPI answered|unanswered".
  redirect-test.py reports TO GATEWAY LAST_DATAGRAM
      Bad load reports from a gateway's namespace: LAST_DATAGRAM sent again (a replay) and one
      claiming 1000 tunnels under a wrong key (a forgery). Prints "replay" and "forged".

Only lab addresses (scripts/lab.sh) appear; what is sent comes from the arguments.
"""
import hashlib
import hmac
import ipaddress
import json
import os
import socket
import struct
import sys
import time
import tomllib

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

SA, KE, NONCE, NOTIFY = 33, 34, 40, 41
REDIRECT_SUPPORTED, REDIRECT = 16406, 16407
IKE_SA_INIT = 34


def _num(v):
    return "-" if v is None else str(v)


def _rows(path):
    data = json.load(open(path))
    if isinstance(data, dict):
        for k in ("gateways", "services", "entries", "affinity"):
            if isinstance(data.get(k), list):
                return data[k]
        return [data]
    return data


def cmd_gateways(path):
    for r in _rows(path):
        print(r.get("gateway", "-"), r.get("health", "-"), _num(r.get("redirects")),
              _num(r.get("reported_tunnels")), _num(r.get("report_age_ms")), _num(r.get("load")),
              _num(r.get("routed_to_gateway_packets")), _num(r.get("routed_from_gateway_packets")))


def cmd_redirect(path, service):
    data = json.load(open(path))
    for r in _rows(path):
        if r.get("service") != service:
            continue
        # The load reports: the service's own, or the appliance's (one socket for all).
        reports = r.get("reports") or (data.get("reports") if isinstance(data, dict) else None) or {}
        rej = reports.get("rejected", {})
        rejected = sum(rej.values()) if isinstance(rej, dict) else rej
        print(_num(r.get("malformed")), _num(r.get("fallbacks", {}).get("no-redirect-supported")),
              _num(reports.get("accepted")), _num(rejected))
        return
    sys.exit(f"redirect-test: no service {service} in {path}")


def cmd_affinity(path):
    for r in _rows(path):
        print(r.get("client", "-"), r.get("gateway", "-"), "yes" if r.get("direct") else "no")


def cmd_sa(files):
    import e2e  # scripts/e2e.py: the --raw parser
    for f in files:
        best = None
        for ike in e2e._sa_events(f):
            child = next((c for c in ike["children"] if c.get("state") == "INSTALLED"), None)
            rank = (ike.get("state") == "ESTABLISHED", child is not None)
            if best is None or rank > best[0]:
                best = (rank, ike, child)
        if best is None:
            print(f, *["-"] * 6)
            continue
        _, ike, child = best
        vips = ike.get("local-vips", "[]").strip("[]").split()
        c = child or {}
        print(f, ike.get("state", "-"), c.get("state", "-"), vips[0] if vips else "-",
              ike.get("remote-host", "-"), c.get("bytes-in", "-"), c.get("bytes-out", "-"))


def cmd_frags(summary, addr, gw):
    c = json.load(open(summary)).get(str(ipaddress.ip_address(addr)), {})
    d = c.get("gateways", {}).get(gw, {})
    to, fr = d.get("to", {}), d.get("from", {})
    print(to.get("fragmented", 0), to.get("fragment", 0), fr.get("fragmented", 0), fr.get("fragment", 0),
          to.get("ike-fragment", 0), fr.get("ike-fragment", 0))


def cmd_key(config):
    print(tomllib.load(open(config, "rb"))["redirect"]["report_key"])


# --- IKE_SA_INIT requests (RFC 7296 3.1-3.9, RFC 5685 4.1) ---------------------------------------

def _payload(next_type, body):
    return struct.pack("!BBH", next_type, 0, 4 + len(body)) + body


def _chain(payloads):
    """[(type, body)] -> (first type, bytes), each payload's header naming the next one."""
    out = b""
    for i, (_, body) in enumerate(payloads):
        nxt = payloads[i + 1][0] if i + 1 < len(payloads) else 0
        out += _payload(nxt, body)
    return payloads[0][0], out


def _sa_body():
    # One IKE proposal: AES-CBC-128, PRF-HMAC-SHA2-256, HMAC-SHA2-256-128, MODP-2048.
    ts = [(1, 12, struct.pack("!HH", 0x800E, 128)), (2, 5, b""), (3, 12, b""), (4, 14, b"")]
    trans = b""
    for i, (ttype, tid, attrs) in enumerate(ts):
        last = 0 if i == len(ts) - 1 else 3
        trans += struct.pack("!BBHBBH", last, 0, 8 + len(attrs), ttype, 0, tid) + attrs
    return struct.pack("!BBHBBBB", 0, 0, 8 + len(trans), 1, 1, 0, len(ts)) + trans


def ike_sa_init(spi, nonce, with_nonce=True):
    payloads = [(SA, _sa_body()), (KE, struct.pack("!HH", 14, 0) + os.urandom(256))]
    if with_nonce:
        payloads.append((NONCE, nonce))
    payloads.append((NOTIFY, struct.pack("!BBH", 0, 0, REDIRECT_SUPPORTED)))
    first, body = _chain(payloads)
    hdr = spi + bytes(8) + struct.pack("!BBBBII", first, 0x20, IKE_SA_INIT, 0x08, 0, 28 + len(body))
    return hdr + body


def malformed():
    """(spi, kind, message) for each malformed request; all but the first carry REDIRECT_SUPPORTED."""
    out = []

    def spi():
        return os.urandom(8)

    s = spi()
    out.append((s, "truncated-header", ike_sa_init(s, os.urandom(32))[:20]))
    s = spi()
    m = bytearray(ike_sa_init(s, os.urandom(32)))
    struct.pack_into("!I", m, 24, len(m) + 8)  # the header claims 8 bytes more than UDP carries
    out.append((s, "length-mismatch", bytes(m)))
    s = spi()
    m = bytearray(ike_sa_init(s, os.urandom(32)))
    # The last payload (the notify, 8 bytes at the end) claims 40 bytes more than are there.
    struct.pack_into("!H", m, len(m) - 8 + 2, 8 + 40)
    out.append((s, "chain-past-end", bytes(m)))
    s = spi()
    out.append((s, "nonce-missing", ike_sa_init(s, b"", with_nonce=False)))
    s = spi()
    m = bytearray(ike_sa_init(s, os.urandom(32)))
    struct.pack_into("!H", m, 28 + 2, 2)  # the SA payload's length is below its own header
    out.append((s, "payload-length-2", bytes(m)))
    return out


def cmd_inject(iface, src, vip, dst_mac):
    from scapy.all import IP, UDP, Ether, Raw, sendp  # type: ignore
    for s, kind, msg in malformed():
        p = Ether(dst=dst_mac) / IP(src=src, dst=vip, ttl=64) / UDP(sport=500, dport=500) / Raw(msg)
        sendp(p, iface=iface, verbose=False)
        print(s.hex(), kind)
        time.sleep(0.05)


def parse_notifies(msg):
    """(header fields, [(notify type, data)]) of an IKE message; raises ValueError."""
    if len(msg) < 28:
        raise ValueError(f"{len(msg)} bytes, shorter than an IKE header")
    spi_i, spi_r, np, ver, exch, flags, mid, length = struct.unpack("!8s8sBBBBII", msg[:28])
    if length != len(msg):
        raise ValueError(f"header length {length} != {len(msg)} bytes received")
    off, notes = 28, []
    while np:
        if off + 4 > len(msg):
            raise ValueError("payload chain runs past the end")
        nxt, _, plen = struct.unpack("!BBH", msg[off:off + 4])
        if plen < 4 or off + plen > len(msg):
            raise ValueError(f"payload {np} of length {plen} at {off}")
        if np == NOTIFY:
            _, spi_size, ntype = struct.unpack("!BBH", msg[off + 4:off + 8])
            notes.append((ntype, msg[off + 8 + spi_size:off + plen]))
        np, off = nxt, off + plen
    return dict(spi_i=spi_i, spi_r=spi_r, version=ver, exchange=exch, flags=flags, mid=mid), notes


def cmd_probe(src, vip):
    spi, nonce = os.urandom(8), os.urandom(32)
    v6 = ipaddress.ip_address(vip).version == 6
    s = socket.socket(socket.AF_INET6 if v6 else socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((src, 500))
    s.settimeout(1.0)
    for _ in range(3):
        s.sendto(ike_sa_init(spi, nonce), (vip, 500))
        try:
            msg, peer = s.recvfrom(65535)
            break
        except socket.timeout:
            continue
    else:
        sys.exit(f"no answer from {vip}:500 in 3 s (3 sends)")
    hdr, notes = parse_notifies(msg)
    bad = []
    if ipaddress.ip_address(peer[0]) != ipaddress.ip_address(vip) or peer[1] != 500:
        bad.append(f"answer from {peer}")
    if hdr["spi_i"] != spi:
        bad.append("initiator SPI not ours")
    if hdr["exchange"] != IKE_SA_INIT or hdr["mid"] != 0 or not hdr["flags"] & 0x20 or hdr["version"] != 0x20:
        bad.append(f"not an IKE_SA_INIT response: {hdr}")
    red = [d for t, d in notes if t == REDIRECT]
    if len(red) != 1:
        bad.append(f"{len(red)} REDIRECT notifies; notify types {[t for t, _ in notes]}")
        sys.exit("; ".join(bad))
    d = red[0]
    gw_type, gw_len = (2, 16) if v6 else (1, 4)
    if len(d) < 2 or d[0] != gw_type or d[1] != gw_len or len(d) != 2 + gw_len + len(nonce):
        bad.append(f"REDIRECT data not (IPv{6 if v6 else 4} identity: type {gw_type}, {gw_len} bytes; "
                   f"our {len(nonce)}-byte nonce): {d.hex()}")
        sys.exit("; ".join(bad))
    gw = str(ipaddress.ip_address(d[2:2 + gw_len]))
    if d[2 + gw_len:] != nonce:
        bad.append("REDIRECT does not echo our nonce")
    if bad:
        sys.exit("; ".join(bad))
    print(spi.hex(), gw)


def cmd_answers(pcap, vip, spis):
    import e2e  # scripts/e2e.py: the pcap reader
    vip = ipaddress.ip_address(vip).packed
    answered = set()
    for _, frame in e2e._pcap_packets(pcap):
        if len(frame) < 14 + 20 + 8 + 28 or frame[12:14] != b"\x08\x00":
            continue
        ip = frame[14:]
        ihl = (ip[0] & 0x0F) * 4
        if ip[9] != 17 or ip[12:16] != vip:
            continue
        udp = ip[ihl:]
        if struct.unpack("!H", udp[:2])[0] != 500:
            continue
        answered.add(udp[8:16].hex())
    for s in spis:
        print(s, "answered" if s in answered else "unanswered")


def cmd_reports(to, gateway, last):
    addr, port = to.rsplit(":", 1)
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.sendto(last.encode("ascii"), (addr, int(port)))
    print("replay")
    body = f"vpnlb-load/1 gateway={gateway} tunnels=1000 time={time.time_ns() // 1_000_000}".encode()
    mac = hmac.new(b"not-the-lab-report-key!", body, hashlib.sha256).hexdigest()
    s.sendto(body + b" mac=" + mac.encode(), (addr, int(port)))
    print("forged")


def main():
    a = sys.argv[1:]
    cmds = {"gateways": (cmd_gateways, 1), "redirect": (cmd_redirect, 2), "affinity": (cmd_affinity, 1),
            "key": (cmd_key, 1), "inject": (cmd_inject, 4), "probe": (cmd_probe, 2),
            "reports": (cmd_reports, 3), "frags": (cmd_frags, 3)}
    if a and a[0] == "answers" and len(a) >= 3:
        cmd_answers(a[1], a[2], a[3:])
    elif a and a[0] == "sa" and len(a) >= 2:
        cmd_sa(a[1:])
    elif a and a[0] in cmds and len(a) - 1 == cmds[a[0]][1]:
        cmds[a[0]][0](*a[1:])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
