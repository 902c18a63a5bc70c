#!/usr/bin/env python3
"""Load reports from a VPN gateway to vpnlb, for the IKEv2 redirect mode (python3 stdlib only).

    gw-load-report.py --gateway gw1 --key-file /etc/vpnlb/load-report.key --to 198.19.0.1:5685

Every --interval seconds it counts the local charon's IKE_SAs in state ESTABLISHED
(`swanctl --list-sas --raw`) and sends one UDP datagram to the appliance's backend address:

    vpnlb-load/1 gateway=<name> tunnels=<n> time=<unix ms> mac=<hex>

ASCII, single spaces, no newline. `mac` is the lowercase hex HMAC-SHA256, keyed with the
service's `[redirect] report_key`, over every byte before " mac=", e.g. over
`vpnlb-load/1 gateway=gw1 tunnels=6 time=1733250000123`. `time` strictly increases from one
report to the next; the appliance drops replays and reports more than 30 s off its own clock
(keep the gateways' clocks synchronised), and takes a gateway's reports only from that
gateway's address in its configuration (--source, where the route to the appliance would pick
another). A gateway whose reports stop (older than the service's `report_max_age`) is weighed
by the redirects sent to it instead.

--tunnels N reports a fixed number instead of asking swanctl (tests; gateways that are not
strongSwan). If swanctl fails on the first round the reporter exits 1 with swanctl's message;
later failures are logged to stderr and that round is skipped (no report is better than a
wrong one: the appliance then falls back to counting its own redirects).
"""
import argparse
import hashlib
import hmac
import ipaddress
import re
import socket
import subprocess
import sys
import time

MIN_KEY_BYTES = 16  # the appliance refuses shorter report keys


def log(msg):
    print(f"gw-load-report: {msg}", file=sys.stderr, flush=True)


def datagram(gateway, tunnels, time_ms, key):
    """The report, MAC included."""
    body = f"vpnlb-load/1 gateway={gateway} tunnels={tunnels} time={time_ms}".encode("ascii")
    mac = hmac.new(key, body, hashlib.sha256).hexdigest()
    return body + b" mac=" + mac.encode("ascii")


def count_established(uri, timeout):
    """IKE_SAs in state ESTABLISHED, from `swanctl --list-sas --raw`; raises RuntimeError."""
    cmd = ["swanctl", "--list-sas", "--raw"] + (["--uri", uri] if uri else [])
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise RuntimeError(f"{' '.join(cmd)}: {e}") from None
    if r.returncode != 0:
        # stderr also has "plugin '...': failed to load" noise and, after an error, the usage.
        err = [l for l in r.stderr.splitlines() if l.startswith("Error") or "failed:" in l]
        raise RuntimeError(f"{' '.join(cmd)} exited {r.returncode}: {(err or ['?'])[-1]}")
    n = 0
    # One line per IKE_SA: list-sa event {NAME {uniqueid=1 version=2 state=ESTABLISHED ...
    # child-sas {...}}}; the IKE_SA's own state is the first state= before its child-sas.
    for line in r.stdout.splitlines():
        if line.startswith("list-sa event "):
            m = re.search(r"\bstate=(\S+)", line.split("child-sas {", 1)[0])
            n += bool(m and m.group(1) == "ESTABLISHED")
    return n


def destination(spec):
    """ADDR:PORT, [V6ADDR]:PORT or a bare address (port 5685) -> (family, sockaddr)."""
    m = re.fullmatch(r"\[([0-9a-fA-F:.]+)\](?::(\d+))?|([0-9.]+)(?::(\d+))?|([0-9a-fA-F:]+)", spec)
    if not m:
        raise argparse.ArgumentTypeError(f"not ADDR:PORT: {spec!r}")
    addr = m.group(1) or m.group(3) or m.group(5)
    port = int(m.group(2) or m.group(4) or 5685)
    try:
        ip = ipaddress.ip_address(addr)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    if not 0 < port < 65536:
        raise argparse.ArgumentTypeError(f"bad port {port}")
    return (socket.AF_INET6 if ip.version == 6 else socket.AF_INET), (str(ip), port)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--gateway", required=True, help="this gateway's name in the vpnlb config")
    k = p.add_mutually_exclusive_group(required=True)
    k.add_argument("--key", help="the report key (visible in ps: prefer --key-file)")
    k.add_argument("--key-file", help="file holding the report key (one trailing newline ignored)")
    p.add_argument("--to", required=True, type=destination, metavar="ADDR:PORT",
                   help="the appliance's backend address and report port, e.g. 198.19.0.1:5685")
    p.add_argument("--interval", type=float, default=1.0, help="seconds between reports (1)")
    p.add_argument("--count", type=int, default=0, help="stop after N reports (0: never)")
    p.add_argument("--lifetime", type=float, default=0, help="exit after S seconds (0: never)")
    p.add_argument("--tunnels", type=int, help="report this fixed number instead of asking swanctl")
    p.add_argument("--swanctl-uri", help="charon's vici socket (swanctl --uri), e.g. unix:///run/charon.vici")
    p.add_argument("--source", help="send from this address (the appliance only takes reports from the "
                   "gateway's configured address)")
    p.add_argument("--print", action="store_true", help="also print each datagram to stdout")
    a = p.parse_args()

    if not re.fullmatch(r"[!-~]+", a.gateway) or "=" in a.gateway:
        p.error("--gateway: printable ASCII without spaces or '='")
    if a.key is not None:
        key = a.key.encode()
    else:
        try:
            with open(a.key_file, "rb") as f:
                key = f.read()
        except OSError as e:
            p.error(f"--key-file: {e}")
        key = key[:-1] if key.endswith(b"\n") else key
        key = key[:-1] if key.endswith(b"\r") else key
    if len(key) < MIN_KEY_BYTES:
        p.error(f"the key has {len(key)} bytes; the appliance needs at least {MIN_KEY_BYTES}")
    if a.interval <= 0 or a.count < 0 or a.lifetime < 0 or (a.tunnels is not None and a.tunnels < 0):
        p.error("--interval must be > 0; --count, --lifetime and --tunnels >= 0")
    family, to = a.to

    sock = socket.socket(family, socket.SOCK_DGRAM)
    if a.source:
        try:
            sock.bind((a.source, 0))
        except OSError as e:
            p.error(f"--source {a.source}: {e.strerror}")
    start = time.monotonic()
    deadline = start + a.lifetime if a.lifetime else float("inf")
    swanctl_timeout = max(1.0, min(5.0, a.interval * 2))
    sent = rounds = last_ms = 0
    while True:
        rounds += 1
        try:
            tunnels = a.tunnels if a.tunnels is not None else count_established(a.swanctl_uri, swanctl_timeout)
        except RuntimeError as e:
            if rounds == 1:
                sys.exit(f"gw-load-report: cannot count the tunnels: {e}")
            log(f"round {rounds} skipped: {e}")
            tunnels = None
        if tunnels is not None:
            last_ms = max(time.time_ns() // 1_000_000, last_ms + 1)  # strictly increasing
            msg = datagram(a.gateway, tunnels, last_ms, key)
            try:
                sock.sendto(msg, to)
                sent += 1
            except OSError as e:
                log(f"round {rounds}: sending to {to[0]}:{to[1]}: {e}")
            if a.print:
                print(msg.decode("ascii"), flush=True)
        if a.count and sent >= a.count:
            return
        # The next round on the interval's grid: a slow swanctl neither shifts the rhythm nor
        # causes a burst of catch-up reports.
        wake = start + (int((time.monotonic() - start) / a.interval) + 1) * a.interval
        if wake >= deadline:
            return
        time.sleep(max(0.0, wake - time.monotonic()))


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        sys.exit(130)
