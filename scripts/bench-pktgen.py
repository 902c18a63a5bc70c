#!/usr/bin/env python3
"""vpnlbd driven by pktgen-DPDK over shared-memory ports (scripts/bench.sh --generator pktgen,
scripts/pktgen-test.sh).

vpnlbd's client and backend ports are net_memif servers; pktgen's two ports are their memif
clients. pktgen replays vpnlb-benchgen's captures (client.pcap into the client port: clients to
the VIP; backend.pcap into the backend port: the gateways' answers) and counts what vpnlbd sends
back, running perf/rig/pktgen-vpnlb.lua, the rig's own script. Two modes:

  replay   one run at a fixed rate; checks that every frame is accounted for: what pktgen sent
           is what it received plus what vpnlbd counted as not sent (drops by reason, frames
           for its control thread, TX failures, frames its ports missed). Exit 1 if not, or
           (--expect-no-loss) if anything was lost at all.
  search   the no-drop rate (RFC 2544 throughput): a geometric binary search on pktgen's send
           rate for the highest rate that loses no more than --loss of the frames over a
           --trial-s trial; prints every trial and the result.

pktgen and vpnlbd share the machine's cores here: pktgen's ports on core 0 (beside vpnlbd's
control thread), vpnlbd's worker on core 1 (beside pktgen's command line). On a 2-core machine
the figure is a functional one, not a measurement.
"""

import argparse
import json
import os
import re
import subprocess
import sys
import time

from bench import ctl, stop  # scripts/bench.py, beside this file (in a bundle too)

HERE = os.path.dirname(os.path.abspath(__file__))
# In the repository this file is scripts/bench-pktgen.py; in a bench.sh --bundle, at its top.
ROOT = HERE if os.path.isdir(os.path.join(HERE, "conf")) else os.path.dirname(HERE)
# memif rings of 2^14 descriptors (the most): with both programs on two shared cores, a ring
# must outlast a receiver that is off its core for a while (1024 last ~40 ms at 27 kpps).
MEMIF_RING_LOG2 = 14
ANSI = re.compile(r"\x1b\[[0-9;?]*[a-zA-Z]|\x1b[()][A-Z0-9]|\r")


def log(*a):
    print("bench-pktgen:", *a, file=sys.stderr, flush=True)


def fields(line):
    """`key=value` pairs of a `vpnlb: ...` result line."""
    return dict(kv.split("=", 1) for kv in line.split()[2:] if "=" in kv)


def write_captures(a, cap):
    os.makedirs(cap, exist_ok=True)
    r = subprocess.run(
        [os.path.join(a.bin_dir, "vpnlb-benchgen"), "--out-dir", cap, "--clients", str(a.clients),
         "--family", "4", "--packets", str(a.packets), "--backend-packets", str(a.packets // 4),
         "--microseconds"], capture_output=True, text=True, check=True)
    return json.loads(r.stdout)


def vpnlbd_config(a, path, sock, memif):
    text = open(os.path.join(ROOT, "conf", "bench.toml")).read()
    for port, n in (("client", 0), ("backend", 1)):
        dev = f"net_memif{n},role=server,id=0,socket={memif[port]},rsize={MEMIF_RING_LOG2}"
        text, k = re.subn(rf'device = "net_pcap{n},[^"]*"', f'device = "{dev}"', text)
        if k != 1:
            raise RuntimeError(f"conf/bench.toml: no net_pcap{n} device to replace")
    if a.eal:
        eal = ", ".join(json.dumps(x) for x in a.eal.split())
        text = text.replace("[dataplane]\n", f"[dataplane]\neal_args = [{eal}]\n", 1)
    text += f'\n[control]\nsocket = "{sock}"\n'
    with open(path, "w") as f:
        f.write(text)


def start_vpnlbd(a, work):
    sock = os.path.join(work, "vpnlbd.sock")
    conf = os.path.join(work, "vpnlbd.toml")
    # Unique memif socket names: the abstract socket namespace is the machine's (DPDK's default).
    memif = {p: os.path.join(work, f"memif-{p}.sock") for p in ("client", "backend")}
    vpnlbd_config(a, conf, sock, memif)
    logf = open(os.path.join(work, "vpnlbd.log"), "w")
    p = subprocess.Popen([os.path.join(a.bin_dir, "vpnlbd"), "--config", conf, "--run-for-s",
                          str(a.limit_s)], stdout=subprocess.DEVNULL, stderr=logf)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if p.poll() is not None:
            raise RuntimeError(f"vpnlbd exited ({p.returncode}); see {logf.name}")
        try:
            # Up once its worker polls: what the control thread queued at start (gratuitous ARP
            # and ND into ports whose link is still down) has gone through by then.
            if ctl(a, sock, "show", "stats")["io"]["polls"] > 0:
                time.sleep(0.5)
                return p, sock, memif
        except (RuntimeError, subprocess.TimeoutExpired):
            pass
        time.sleep(0.2)
    raise RuntimeError("vpnlbd did not answer within 30 s")


def run_pktgen(a, work, cap, memif, settings, read_counters):
    """pktgen with the rig script and `settings` (its VPNLB_* globals): its result lines, and
    what `read_counters` returned. That runs once the results are out and before pktgen quits,
    and must stop vpnlbd: a net_memif peer leaving under a polling worker can crash it (DPDK
    22.11's memif unmaps the shared regions while the worker may be in them)."""
    hold = os.path.join(work, "pktgen.hold")
    if os.path.exists(hold):
        os.unlink(hold)
    wrapper = os.path.join(work, "run.lua")
    with open(wrapper, "w") as f:
        for k, v in settings.items():
            f.write(f"{k} = {json.dumps(str(v))}\n")
        f.write('VPNLB_QUIT = "1"\n')
        f.write(f"VPNLB_HOLD_FILE = {json.dumps(hold)}\n")
        f.write(f"dofile({json.dumps(os.path.join(ROOT, 'perf', 'rig', 'pktgen-vpnlb.lua'))})\n")
    # pktgen needs a terminal (script gives it one) and, without hugepages, -m 6144 for its pools
    # (pcap, range, sequence and rx pools per port).
    cmd = [a.pktgen, "-l", "0,1", "--main-lcore", "1", "-n", "1", "--no-huge", "--no-shconf",
           "-m", "6144", "--no-pci", "--file-prefix", "vpnlb-pktgen", "--log-level", "notice",
           *a.eal.split()]
    for n, port in enumerate(("client", "backend")):
        cmd += ["--vdev",
                f"net_memif{n},role=client,id=0,socket={memif[port]},rsize={MEMIF_RING_LOG2}"]
    cmd += ["--", "-P", "-m", "0.[0-1]", "-s", f"0:{cap}/client.pcap", "-s",
            f"1:{cap}/backend.pcap", "-f", wrapper]
    logpath = os.path.join(work, "pktgen.log")
    line = " ".join(f"'{c}'" for c in cmd)
    p = subprocess.Popen(["timeout", "-k", "5", str(a.limit_s), "script", "-qfec", line, logpath],
                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)

    def text():
        try:
            return ANSI.sub("", open(logpath, errors="replace").read())
        except OSError:
            return ""

    deadline = time.monotonic() + a.limit_s
    while "vpnlb: done" not in text():
        if p.poll() is not None or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    counters = read_counters() if "vpnlb: done" in text() else None
    with open(hold, "w"):
        pass
    try:
        p.wait(timeout=30)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()
    out = text()
    with open(os.path.join(work, "pktgen.txt"), "w") as f:
        f.write(out)
    results = [l.strip() for l in out.splitlines() if l.strip().startswith("vpnlb: ")]
    if counters is None or not any(l.startswith("vpnlb: done") for l in results):
        tail = "\n  ".join(out.strip().splitlines()[-15:])
        raise RuntimeError(f"pktgen exited {p.returncode} without results; its last lines:\n  {tail}")
    return results, counters


def counted(stats, ports):
    """vpnlbd's counters that account for frames: received, sent, and not sent by why."""
    c, io = stats["counters"], stats["io"]
    drops = c["drops"]
    return {
        "rx": c["rx_packets"],
        "tx": c["tx_packets"],
        "drops": sum(drops.values()) if isinstance(drops, dict) else int(drops),
        "to_control": c["to_control"],
        "tx_dropped": io["tx_dropped"],
        "handoff_dropped": io["handoff_dropped"],
        "rx_missed": sum(p["rx_missed"] for p in ports),
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--mode", choices=("replay", "search"), default="search")
    ap.add_argument("--bin-dir", required=True, help="vpnlbd, vpnlbctl, vpnlb-benchgen")
    ap.add_argument("--pktgen", required=True)
    ap.add_argument("--out", default="out/bench-pktgen")
    ap.add_argument("--clients", type=int, default=1000)
    ap.add_argument("--packets", type=int, default=20000, help="client-capture frames")
    ap.add_argument("--rate", type=float, default=0.1, help="replay: percent of line rate")
    ap.add_argument("--duration-s", type=int, default=3, help="replay: seconds of traffic")
    ap.add_argument("--trial-s", type=float, default=2, help="search: seconds per trial")
    ap.add_argument("--loss", type=float, default=0.0, help="search: loss tolerated (fraction)")
    ap.add_argument("--steps", type=int, default=8, help="search: bisection steps")
    ap.add_argument("--rate-min", type=float, default=0.01)
    ap.add_argument("--rate-max", type=float, default=100.0)
    ap.add_argument("--expect-no-loss", action="store_true", help="replay: any loss fails")
    ap.add_argument("--limit-s", type=int, default=240, help="bound on each program's run")
    ap.add_argument("--eal", default="", help="extra EAL arguments for both (a bundle's -d PMDS)")
    a = ap.parse_args()
    a.vpnlbctl = os.path.join(a.bin_dir, "vpnlbctl")  # what bench.py's ctl runs

    work = os.path.abspath(a.out)
    os.makedirs(work, exist_ok=True)
    cap = os.path.join(work, "cap")
    frames = write_captures(a, cap)
    log(f"captures: {frames['client_frames']} client-port and {frames['backend_frames']} "
        f"backend-port frames, {a.clients} clients (IPv4, lab mix, imix)")
    vpnlbd, sock, memif = start_vpnlbd(a, work)
    try:
        if a.mode == "replay":
            settings = {"VPNLB_MODE": "replay", "VPNLB_RATE": a.rate, "VPNLB_DURATION_S": a.duration_s,
                        "VPNLB_TX_PORTS": "0,1", "VPNLB_SAMPLE_S": 1}
        else:
            settings = {"VPNLB_MODE": "search", "VPNLB_TX_PORTS": "0,1", "VPNLB_TRIAL_S": a.trial_s,
                        "VPNLB_LOSS": a.loss, "VPNLB_STEPS": a.steps, "VPNLB_RATE_MIN": a.rate_min,
                        "VPNLB_RATE_MAX": a.rate_max, "VPNLB_WARMUP_S": 1}
        # vpnlbd's own frames before pktgen connects (its gratuitous ARP and ND at start, sent
        # into ports whose link is down) are in this baseline, not in what pktgen caused.
        before = counted(ctl(a, sock, "show", "stats"), ctl(a, sock, "show", "ports"))

        def read_and_stop():
            c = counted(ctl(a, sock, "show", "stats"), ctl(a, sock, "show", "ports"))
            stop(vpnlbd, 20)
            return c

        t0 = time.monotonic()
        results, after = run_pktgen(a, work, cap, memif, settings, read_and_stop)
        log(f"pktgen ran {time.monotonic() - t0:.0f} s")
    finally:
        stop(vpnlbd, 20)
    grew = {k: after[k] - before[k] for k in after}
    summary = {"mode": a.mode, "settings": settings, "results": results,
               "vpnlbd": {"rx": grew.pop("rx"), "tx": grew.pop("tx"), "not_sent": grew}}
    with open(os.path.join(work, "results.json"), "w") as f:
        json.dump(summary, f, indent=2)
    return report(a, results, summary)


def report(a, results, summary):
    v = summary["vpnlbd"]
    lost_by_vpnlbd = sum(v["not_sent"].values())
    if a.mode == "replay":
        total = next((fields(l) for l in results if l.startswith("vpnlb: total")), None)
        if total is None:
            log("no `vpnlb: total` line from the rig script")
            return 1
        tx, rx = int(total["tx"]), int(total["rx"])
        print(f"pktgen: sent {tx}, received {rx}, lost {tx - rx} at {a.rate} % of line rate "
              f"for {a.duration_s} s ({tx / a.duration_s:.0f} pps sent)")
        print(f"vpnlbd: received {v['rx']}, sent {v['tx']}; not sent: "
              + ", ".join(f"{k} {n}" for k, n in v["not_sent"].items()))
        bad = []
        if v["rx"] + v["not_sent"]["rx_missed"] != tx:
            bad.append(f"vpnlbd received {v['rx']} (+{v['not_sent']['rx_missed']} missed), "
                       f"pktgen sent {tx}")
        if tx != rx + lost_by_vpnlbd:
            bad.append(f"sent {tx} != received {rx} + counted by vpnlbd {lost_by_vpnlbd}")
        if a.expect_no_loss and tx != rx:
            bad.append(f"{tx - rx} frames lost at {a.rate} % of line rate (none expected)")
        for b in bad:
            print(f"accounting: MISS: {b}")
        if bad:
            return 1
        print(f"accounting: OK: sent = received + counted by vpnlbd ({tx} = {rx} + {lost_by_vpnlbd})")
        return 0
    trials = [fields(l) for l in results if l.startswith("vpnlb: trial")]
    best = next((fields(l) for l in results if l.startswith("vpnlb: no-drop")), None)
    print(f"no-drop search (RFC 2544): trials of {a.trial_s} s after a 1 s warm-up, loss "
          f"tolerance {a.loss:g}, pktgen rate bisected in {a.rate_min:g}-{a.rate_max:g} % of the "
          f"memif ports' line rate")
    print(f"{'trial':>5} {'rate %':>9} {'sent':>11} {'received':>11} {'lost':>9} "
          f"{'sent pps':>10} {'recv pps':>10}  result")
    for t in trials:
        print(f"{t['n']:>5} {float(t['rate_pct']):>9.4f} {t['tx']:>11} {t['rx']:>11} "
              f"{t['lost']:>9} {float(t['tx_pps']):>10.0f} {float(t['rx_pps']):>10.0f}  {t['result']}")
    if best is None:
        log("no `vpnlb: no-drop` line from the rig script")
        return 1
    print(f"vpnlbd (over the whole search, warm-ups included): received {v['rx']}, sent "
          f"{v['tx']}; not sent: " + ", ".join(f"{k} {n}" for k, n in v["not_sent"].items()))
    lost = sum(int(t["lost"]) for t in trials)
    print(f"accounting: pktgen lost {lost} in the trials; vpnlbd counted {lost_by_vpnlbd} "
          f"not sent{' (the same)' if lost == lost_by_vpnlbd else ''}")
    print(f"no-drop rate: {float(best['rx_pps']):.0f} pps received "
          f"({float(best['rate_pct']):.4f} % of line rate, {best['trials']} trials, "
          f"loss tolerance {a.loss:g}, {a.trial_s} s trials)")
    if float(best["rate_pct"]) >= a.rate_max:
        print("(no loss at the most pktgen offered: the generator, not vpnlbd, set this figure)")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (RuntimeError, subprocess.CalledProcessError) as e:
        log(f"FAIL: {e}")
        sys.exit(1)
