#!/usr/bin/env python3
"""Reload, `show affinity CLIENT` and `affinity flush CLIENT` on a full affinity table under
continuous traffic (perf/scale.sh runs this; see docs/benchmarks.md "Reload and queries at 10 M entries").

The daemon runs conf/bench.toml's devices (net_pcap with infinite_rx: traffic never stops) with
one worker, an [ha] section so that it sends VRRP adverts as master, and the table filled with
synthetic established entries (`debug affinity fill N`). Then, while a sampler reads every
worker's longest loop pass each 100 ms report period, it asks for single clients, flushes single
clients, reloads twice (every gateway renumbered, then back) and sends SIGHUP. It prints one JSON
object: the longest worker loop pass during the operations (how long the RX queues went unpolled
at worst), the reload replies and their times, the query latencies, the VRRP advert gaps
(longest, late ones) and the ports' rx_missed.
"""

import argparse
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time


def ask(sock_path, line, timeout=60.0):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    s.connect(sock_path)
    s.sendall((line + "\n").encode())
    buf = b""
    while not buf.endswith(b"\n"):
        chunk = s.recv(1 << 20)
        if not chunk:
            break
        buf += chunk
    s.close()
    reply = json.loads(buf)
    if not reply.get("ok"):
        raise RuntimeError(f"{line}: {reply.get('error')}")
    return reply.get("data", reply.get("text"))


def config(a, cap):
    text = open(a.base).read()
    text = text.replace("out/bench/client.pcap", os.path.join(cap, "client.pcap"))
    text = text.replace("out/bench/backend.pcap", os.path.join(cap, "backend.pcap"))
    capacity = a.entries * 5 // 4
    text = re.sub(r"(?m)^capacity = \d+", f"capacity = {capacity}", text)
    # conf/bench.toml's prefix_quota_v6 (65535 per /64) holds the synthetic clients, about
    # entries / 65536 per /64 of 2001:2::/48.
    text = re.sub(r"(?m)^memory_mb = \d+", "memory_mb = 2048", text)
    text += f"""
[control]
socket = "{a.sock}"
fault_injection = true

[ha]
vrid = 51
priority = 200
advert_interval = "{a.advert_ms}ms"
preempt = true
"""
    return text


def wait_for(what, cond, timeout, proc=None):
    end = time.time() + timeout
    while time.time() < end:
        if proc is not None and proc.poll() is not None:
            raise SystemExit(f"scale: vpnlbd exited ({proc.returncode}) waiting for {what}")
        try:
            if cond():
                return
        except (OSError, RuntimeError, ValueError):
            pass
        time.sleep(0.1)
    raise SystemExit(f"scale: timed out waiting for {what}")


class Sampler(threading.Thread):
    """Reads every worker's longest loop pass of the last report period, ten times a second."""

    def __init__(self, sock):
        super().__init__(daemon=True)
        self.sock, self.stop, self.max_us, self.samples = sock, False, 0, 0

    def run(self):
        while not self.stop:
            try:
                for w in ask(self.sock, "show workers"):
                    self.max_us = max(self.max_us, w["loop_max_us"])
                self.samples += 1
            except (OSError, RuntimeError, ValueError):
                pass
            time.sleep(0.1)


def timed(f):
    t = time.time()
    r = f()
    return r, round((time.time() - t) * 1000, 1)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin-dir", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--entries", type=int, default=10_000_000)
    ap.add_argument("--advert-ms", type=int, default=100)
    ap.add_argument("--base", default="conf/bench.toml")
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    a.out = os.path.abspath(a.out)
    a.sock = os.path.join(a.out, "vpnlbd.sock")
    cap = os.path.join(a.out, "cap")
    subprocess.run([os.path.join(a.bin_dir, "vpnlb-benchgen"), "--out-dir", cap, "--clients", "1000",
                    "--mix", "lab", "--packets", "8192", "--backend-packets", "1000"],
                   check=True, capture_output=True)
    conf = os.path.join(a.out, "scale.toml")
    open(conf, "w").write(config(a, cap))
    log = open(os.path.join(a.out, "vpnlbd.log"), "w")
    d = subprocess.Popen([os.path.join(a.bin_dir, "vpnlbd"), "--config", conf],
                         stdout=subprocess.DEVNULL, stderr=log)
    result = {"entries_asked": a.entries, "advert_interval_ms": a.advert_ms}
    try:
        wait_for("the control socket", lambda: ask(a.sock, "ping") is not None, 60, d)
        wait_for("VRRP master", lambda: ask(a.sock, "show vrrp")["state"] == "master", 30)
        t0 = time.time()
        ask(a.sock, f"debug affinity fill {a.entries}")

        def entries():
            return sum(w["clients"] for w in ask(a.sock, "show workers"))
        wait_for("the fill", lambda: entries() >= a.entries, 600)
        result["fill_s"] = round(time.time() - t0, 1)
        result["entries"] = entries()
        ports0 = {p["name"]: p for p in ask(a.sock, "show ports")}
        vrrp0 = ask(a.sock, "show vrrp")
        drops0 = sum(r["packets"] for r in ask(a.sock, "show drops"))
        time.sleep(0.3)
        sampler = Sampler(a.sock)
        sampler.start()
        time.sleep(1.0)
        result["loop_max_us_before"] = sampler.max_us
        sampler.max_us = 0
        # One synthetic client of worker 0 (see FillJob::client in worker.rs): 2001:2:0:5:0:0:0:1.
        client = "2001:2:0:5::1"
        shows = [timed(lambda: ask(a.sock, f"show affinity {client}"))[1] for _ in range(20)]
        rows = ask(a.sock, f"show affinity {client}")
        result["show_affinity_client_ms"] = {"max": max(shows), "median": sorted(shows)[10],
                                             "rows": len(rows)}
        flushes = [timed(lambda i=i: ask(a.sock, f"affinity flush 2001:2:0:{i}::1"))
                   for i in range(10, 15)]
        result["flush_client_ms"] = max(t for _, t in flushes)
        result["flush_client_removed"] = sum(r["removed"] for r, _ in flushes)
        # Every gateway renumbered (a new one first), then back: each re-keys every entry.
        original = open(conf).read()
        gw0 = '[[service.gateway]]\nname = "gw0"\naddress = ["198.19.0.10"]\nweight = 1\n\n'
        open(conf, "w").write(original.replace("[[service.gateway]]\n", gw0 + "[[service.gateway]]\n", 1))
        r1, t1 = timed(lambda: ask(a.sock, "reload"))
        open(conf, "w").write(original)
        r2, t2 = timed(lambda: ask(a.sock, "reload"))
        result["reloads"] = [
            {"ms": t1, "moved": r1["affinity_moved"], "removed": r1["affinity_removed"],
             "pending_workers": r1["pending_workers"]},
            {"ms": t2, "moved": r2["affinity_moved"], "removed": r2["affinity_removed"],
             "pending_workers": r2["pending_workers"]},
        ]
        gen = ask(a.sock, "show stats")
        os.kill(d.pid, signal.SIGHUP)
        time.sleep(1.0)
        result["sighup_alive"] = d.poll() is None
        time.sleep(0.5)
        sampler.stop = True
        sampler.join()
        result["loop_max_us_during"] = sampler.max_us
        result["sampler_periods"] = sampler.samples
        vrrp1 = ask(a.sock, "show vrrp")
        result["vrrp"] = {"state": vrrp1["state"], "advert_gap_max_ms": vrrp1["advert_gap_max_ms"],
                          "adverts_late_during": vrrp1["adverts_late"] - vrrp0["adverts_late"],
                          "adverts_during": vrrp1["adverts_out"] - vrrp0["adverts_out"]}
        ports1 = {p["name"]: p for p in ask(a.sock, "show ports")}
        result["rx_missed_during"] = {n: ports1[n]["rx_missed"] - ports0[n]["rx_missed"] for n in ports1}
        result["rx_packets_during"] = {n: ports1[n]["rx_packets"] - ports0[n]["rx_packets"]
                                       for n in ports1}
        result["drops_during"] = sum(r["packets"] for r in ask(a.sock, "show drops")) - drops0
        result["affinity_bytes_per_entry"] = gen.get("affinity_occupancy", {}).get("bytes_per_entry")
    finally:
        d.send_signal(signal.SIGTERM)
        try:
            d.wait(timeout=30)
        except subprocess.TimeoutExpired:
            d.kill()
    print(json.dumps(result))


if __name__ == "__main__":
    sys.exit(main())
