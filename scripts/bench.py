#!/usr/bin/env python3
"""The benchmark driver behind scripts/bench.sh (read that file's header first).

For every scenario it writes the captures (vpnlb-benchgen), then runs dpdk-testpmd in `io` and
`macswap` forwarding and vpnlbd on the same virtual devices (net_pcap replaying the captures with
infinite_rx=1; what is sent is dropped by net_pcap, which has no tx_pcap: a silent sink), on the
same cores, for the same time, `reps` times each, alternating the order (A B C, C B A, ...).
Throughput is the ports' received packets per second (rte_eth_stats ipackets, as both programs
report it) over the measurement window, after a warm-up. Prints one table row per scenario and,
for the first scenario, `ratio vpnlbd/testpmd-io: X.XX`; writes everything to OUT/results.json.
"""

import argparse
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time

# (name, mix, clients, family, size, what the row is for)
FULL = [
    ("lab-1M", "lab", 1_000_000, 6, "imix", "headline"),
    ("lab-1k", "lab", 1_000, 6, "imix", "clients"),
    ("lab-100k", "lab", 100_000, 6, "imix", "clients"),
    ("esp-64", "esp", 1_000, 4, "64", "size"),
    ("esp-512", "esp", 1_000, 4, "512", "size"),
    ("esp-1400", "esp", 1_000, 4, "1400", "size"),
    ("esp-imix", "esp", 1_000, 4, "imix", "protocol"),
    ("ike-imix", "ike", 1_000, 4, "imix", "protocol"),
    ("tls-imix", "tls", 1_000, 4, "imix", "protocol"),
    ("new-clients", "new-clients", 1_000_000, 6, "imix", "admission"),
    ("redirect", "redirect", 16_384, 4, "imix", "redirect"),
]
QUICK = [FULL[0]]
SMOKE = [("smoke", "lab", 1_000, 6, "imix", "headline")]
# 10 M clients need a 10 M-frame capture preloaded into mbufs (~24 GB with net_pcap's 2 KB
# mbufs): the table-size sweep stops at 1 M here; the in-process micro-benchmark covers 10 M.
NOT_RUN = [("lab-10M", "needs ~24 GB of mbufs for a 10 M-frame capture")]


def log(*a):
    print("bench:", *a, file=sys.stderr, flush=True)


class Run:
    """One program on the devices: start, wait until ready, sample, stop."""

    def __init__(self, args, scenario, cap_dir, frames, workers):
        self.args = args
        self.scenario = scenario
        self.cap = cap_dir
        self.frames = frames
        self.workers = workers

    def devices(self):
        q = self.workers
        client = ",".join(["rx_pcap=" + os.path.join(self.cap, "client.pcap")] * q)
        backend = ",".join(["rx_pcap=" + os.path.join(self.cap, "backend.pcap")] * q)
        return (f"net_pcap0,{client},infinite_rx=1", f"net_pcap1,{backend},infinite_rx=1")

    def mbufs(self):
        # Every captured frame is preloaded into an mbuf per queue, plus the rings.
        return (self.frames[0] + self.frames[1]) * self.workers + 16384 * self.workers + 8192

    def memory_mb(self):
        # An mbuf (2 KB data room, headroom, header) takes ~2.4 KB; without hugepages the EAL
        # needs about twice the pool's size to create it (measured), and starts ~25x slower.
        per_mbuf = 2560 if self.args.hugepages else 6144
        return int(self.mbufs() * per_mbuf / 2**20) + 1024

    def eal_memory(self):
        if self.args.hugepages:
            return ["--in-memory", "-m", str(self.memory_mb())]
        return ["--no-huge", "--no-shconf", "-m", str(self.memory_mb())]


def stop(p, timeout):
    """SIGINT (both print their final statistics and close their ports), SIGKILL if it hangs."""
    p.send_signal(signal.SIGINT)
    try:
        p.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()


def cores(args, workers):
    return [args.control_core] + [args.first_worker_core + i for i in range(workers)]


def run_testpmd(run, mode):
    a = run.args
    cl = cores(a, run.workers)
    c0, c1 = run.devices()
    cmd = [a.testpmd, "-l", ",".join(map(str, cl)), "--main-lcore", str(cl[0]), *run.eal_memory(),
           "--no-pci", "--no-telemetry", "--log-level", "notice", "--vdev", c0, "--vdev", c1]
    cmd += a.eal_extra
    cmd += ["--", f"--forward-mode={mode}", "--stats-period=1",
            f"--total-num-mbufs={run.mbufs()}", f"--rxq={run.workers}", f"--txq={run.workers}",
            f"--nb-cores={run.workers}"]
    samples = []  # (time, port, rx_packets)
    port = [None]
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                         errors="replace", env=a.env)
    tail = []

    def reader():
        for line in p.stdout:
            tail.append(line)
            del tail[:-40]
            m = re.search(r"NIC statistics for port (\d+)", line)
            if m:
                port[0] = int(m.group(1))
                continue
            m = re.match(r"\s*RX-packets:\s+(\d+)\s+RX-missed", line)
            if m and port[0] is not None:
                samples.append((time.monotonic(), port[0], int(m.group(1))))

    t = threading.Thread(target=reader, daemon=True)
    t.start()
    deadline = time.monotonic() + a.start_timeout
    while not samples and time.monotonic() < deadline and p.poll() is None:
        time.sleep(0.05)
    if not samples:
        p.kill()
        p.wait()
        raise RuntimeError(f"testpmd {mode} did not start:\n" + "".join(tail[-15:]))
    t_ready = time.monotonic()
    time.sleep(a.warmup + a.duration + 1.2)
    stop(p, 20)
    t.join(timeout=2)
    lo, hi = t_ready + a.warmup, t_ready + a.warmup + a.duration + 1.0
    pps = 0.0
    for prt in (0, 1):
        s = [(tm, n) for tm, pp, n in samples if pp == prt and lo <= tm <= hi]
        if len(s) < 2:
            raise RuntimeError(f"testpmd {mode}: too few stats samples for port {prt}")
        pps += (s[-1][1] - s[0][1]) / (s[-1][0] - s[0][0])
    return {"mpps": pps / 1e6}


def vpnlbd_config(run, path, sock):
    a = run.args
    clients = run.scenario[2]
    mix = run.scenario[1]
    text = open(a.bench_conf).read()
    c0, c1 = run.devices()
    text, n0 = re.subn(r'device = "net_pcap0,[^"]*"', f'device = "{c0}"', text)
    text, n1 = re.subn(r'device = "net_pcap1,[^"]*"', f'device = "{c1}"', text)
    if n0 != 1 or n1 != 1:
        raise RuntimeError(f"{a.bench_conf}: expected one net_pcap0 and one net_pcap1 device")
    cl = cores(a, run.workers)
    workers = "[" + ", ".join(map(str, cl[1:])) + "]"
    capacity = max(4096, int(clients * 1.25) // run.workers + 1024)
    # The gateways' return traffic confirms only the clients of the backend capture, so the
    # table must keep the rest unconfirmed, all of them (the replay refreshes each well within
    # the unconfirmed timeout). new-clients: a table of unconfirmed entries that keeps evicting,
    # so every frame of the replay is a new client again.
    max_unconfirmed = capacity if mix != "new-clients" else max(1024, clients // 4)
    eal = ", ".join(json.dumps(x) for x in a.eal_extra)
    huge = "true" if a.hugepages else "false"
    dataplane = (f"[dataplane]\nworkers = {workers}\ncontrol_core = {cl[0]}\nhugepages = {huge}\n"
                 f"memory_mb = {run.memory_mb()}\nmbufs = {run.mbufs()}\neal_args = [{eal}]\n\n")
    text, n = re.subn(r"(?ms)^\[dataplane\]\n.*?(?=^\[)", dataplane, text, count=1)
    if n != 1:
        raise RuntimeError(f"{a.bench_conf}: no [dataplane] section")
    affinity = f"[affinity]\ncapacity = {capacity}\nmax_unconfirmed = {max_unconfirmed}\n\n"
    text, n = re.subn(r"(?ms)^\[affinity\]\n.*?(?=^\[)", affinity, text, count=1)
    if n != 1:
        raise RuntimeError(f"{a.bench_conf}: no [affinity] section")
    if re.search(r"(?m)^\[control\]", text):
        raise RuntimeError(f"{a.bench_conf}: the driver sets [control] itself")
    if mix == "redirect":
        # The service answers every IKE_SA_INIT with a REDIRECT (no reports: its own counts).
        text, n = re.subn(r'(?m)^scheduler = ', 'mode = "redirect"\nscheduler = ', text, count=1)
        if n != 1:
            raise RuntimeError(f"{a.bench_conf}: no service scheduler line to put the mode beside")
    text += f'\n[control]\nsocket = "{sock}"\n'
    with open(path, "w") as f:
        f.write(text)


def ctl(args, sock, *words):
    r = subprocess.run([args.vpnlbctl, "--socket", sock, "--json", *words], capture_output=True,
                       text=True, timeout=10)
    if r.returncode != 0:
        raise RuntimeError(f"vpnlbctl {' '.join(words)}: {r.stderr.strip()}")
    return json.loads(r.stdout)


def rss_kb(pid):
    try:
        for line in open(f"/proc/{pid}/status"):
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def run_vpnlbd(run, work):
    a = run.args
    sock = os.path.join(work, "vpnlbd.sock")
    conf = os.path.join(work, "vpnlbd.toml")
    vpnlbd_config(run, conf, sock)
    total = int(a.warmup + a.duration + a.start_timeout + 10)
    logf = open(os.path.join(work, "vpnlbd.log"), "w")
    p = subprocess.Popen([a.vpnlbd, "--config", conf, "--run-for-s", str(total)],
                         stdout=subprocess.DEVNULL, stderr=logf, env=a.env)
    try:
        deadline = time.monotonic() + a.start_timeout
        while True:
            if p.poll() is not None:
                raise RuntimeError("vpnlbd exited:\n" + open(logf.name).read()[-1500:])
            try:
                ctl(a, sock, "show", "ports")
                break
            except (RuntimeError, json.JSONDecodeError, subprocess.TimeoutExpired):
                if time.monotonic() > deadline:
                    raise RuntimeError("vpnlbd did not answer:\n" + open(logf.name).read()[-1500:])
                time.sleep(0.1)

        def sample():
            t = time.monotonic()
            ports = ctl(a, sock, "show", "ports")
            stats = ctl(a, sock, "show", "stats")
            return t, sum(pr["rx_packets"] for pr in ports), sum(pr["tx_packets"] for pr in ports), stats

        time.sleep(a.warmup)
        t1, rx1, tx1, s1 = sample()
        time.sleep(a.duration)
        t2, rx2, tx2, s2 = sample()
        rss = rss_kb(p.pid)
    finally:
        stop(p, 30)
        logf.close()
    c1, c2 = s1["counters"], s2["counters"]
    dt = t2 - t1
    drops = {k: v - c1["drops"].get(k, 0) for k, v in c2["drops"].items() if v - c1["drops"].get(k, 0)}
    occ = s2["affinity_occupancy"]
    return {
        "mpps": (rx2 - rx1) / dt / 1e6,
        "tx_ratio": (tx2 - tx1) / max(1, rx2 - rx1),
        "new_clients_per_s": (c2["clients"]["scheduled"] - c1["clients"]["scheduled"]) / dt,
        "redirects_per_s": (redirects(c2) - redirects(c1)) / dt,
        "latency_us": s2["burst_latency_us"],
        "utilisation": s2.get("utilisation"),
        "drops": drops,
        "entries": occ["confirmed"] + occ["unconfirmed"],
        "capacity": occ.get("capacity"),
        "bytes_per_entry": occ.get("bytes_per_entry"),
        "affinity_mb": round(occ.get("bytes", 0) / 2**20, 1),
        "rss_mb": round(rss / 1024, 1),
    }


def redirects(counters):
    """Redirects sent, summed over services and gateways."""
    return sum(g.get("redirects", 0) for svc in counters.get("gateways", []) for g in svc)


def per_second(row):
    """The row's rate: new clients admitted, or redirects sent (the redirect scenario)."""
    v = row["vpnlbd"]
    return v["redirects_per_s"] if row["mix"] == "redirect" else v["new_clients_per_s"]


def summary(values):
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "n": len(values)}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mode", choices=["full", "quick", "smoke"], default="full")
    ap.add_argument("--markdown", metavar="RESULTS_JSON", help="print a results file as a table and exit")
    ap.add_argument("--only", help="comma-separated scenario names (full mode)")
    ap.add_argument("--bin-dir", required=True)
    ap.add_argument("--testpmd", required=True)
    ap.add_argument("--bench-conf", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--duration", type=float, default=5.0)
    ap.add_argument("--warmup", type=float, default=2.0)
    ap.add_argument("--workers", default="1", help="comma-separated worker counts (scaling)")
    ap.add_argument("--control-core", type=int, default=0)
    ap.add_argument("--first-worker-core", type=int, default=1)
    ap.add_argument("--start-timeout", type=float, default=60.0)
    ap.add_argument("--eal", default="", help="extra EAL arguments for both (e.g. -d DIR)")
    ap.add_argument("--hugepages", action="store_true", help="EAL memory from hugepages (--in-memory)")
    if "--markdown" in sys.argv:
        doc = json.load(open(sys.argv[sys.argv.index("--markdown") + 1]))
        print(markdown(doc))
        return
    a = ap.parse_args()
    a.vpnlbd = os.path.join(a.bin_dir, "vpnlbd")
    a.vpnlbctl = os.path.join(a.bin_dir, "vpnlbctl")
    a.benchgen = os.path.join(a.bin_dir, "vpnlb-benchgen")
    a.eal_extra = a.eal.split()
    a.env = dict(os.environ)
    a.out = os.path.abspath(a.out)
    scenarios = {"full": FULL, "quick": QUICK, "smoke": SMOKE}[a.mode]
    if a.only:
        want = a.only.split(",")
        scenarios = [s for s in FULL if s[0] in want]
    worker_counts = [int(w) for w in a.workers.split(",")]
    os.makedirs(a.out, exist_ok=True)
    results = []
    for sc in scenarios:
        name, mix, clients, family, size, role = sc
        cap = os.path.join(a.out, "cap", name)
        shutil.rmtree(cap, ignore_errors=True)
        gen = subprocess.run([a.benchgen, "--out-dir", cap, "--clients", str(clients), "--mix", mix,
                              "--family", str(family), "--size", size, "--packets",
                              str(max(clients, 65536) if mix != "new-clients" else clients),
                              "--backend-packets", str(min(clients, 65536))],
                             capture_output=True, text=True, check=True)
        g = json.loads(gen.stdout)
        frames = (g["client_frames"], g["backend_frames"])
        for workers in worker_counts:
            run = Run(a, sc, cap, frames, workers)
            progs = ["testpmd-io", "testpmd-macswap", "vpnlbd"]
            per = {p: [] for p in progs}
            extra = []
            for rep in range(a.reps):
                order = progs if rep % 2 == 0 else list(reversed(progs))
                for prog in order:
                    work = os.path.join(a.out, "runs", f"{name}-w{workers}-{prog}-{rep}")
                    os.makedirs(work, exist_ok=True)
                    if prog == "vpnlbd":
                        r = run_vpnlbd(run, work)
                        extra.append(r)
                    else:
                        r = run_testpmd(run, prog.split("-")[1])
                    per[prog].append(r["mpps"])
                    log(f"{name} workers={workers} rep={rep + 1}/{a.reps} {prog}: {r['mpps']:.3f} Mpps")
            row = {
                "scenario": name, "role": role, "mix": mix, "clients": clients,
                "family": f"IPv{family}", "size": size, "workers": workers,
                "frames": {"client": frames[0], "backend": frames[1]},
                "mpps": {p: summary(v) for p, v in per.items()},
                "vpnlbd": {
                    "tx_ratio": statistics.median(e["tx_ratio"] for e in extra),
                    "new_clients_per_s": statistics.median(e["new_clients_per_s"] for e in extra),
                    "redirects_per_s": statistics.median(e["redirects_per_s"] for e in extra),
                    "latency_us": extra[-1]["latency_us"],
                    "drops": extra[-1]["drops"],
                    "entries": extra[-1]["entries"],
                    "bytes_per_entry": extra[-1]["bytes_per_entry"],
                    "affinity_mb": extra[-1]["affinity_mb"],
                    "rss_mb": extra[-1]["rss_mb"],
                },
            }
            io_m = row["mpps"]["testpmd-io"]["median"]
            ms_m = row["mpps"]["testpmd-macswap"]["median"]
            v_m = row["mpps"]["vpnlbd"]["median"]
            row["ratio_io"] = v_m / io_m if io_m else 0.0
            row["ratio_macswap"] = v_m / ms_m if ms_m else 0.0
            results.append(row)
            with open(os.path.join(a.out, "results.json"), "w") as f:
                json.dump({"date": time.strftime("%Y-%m-%d"), "mode": a.mode, "reps": a.reps,
                           "hugepages": a.hugepages,
                           "duration_s": a.duration, "warmup_s": a.warmup, "results": results,
                           "not_run": NOT_RUN if a.mode == "full" and not a.only else []}, f, indent=1)
    print_table(results, a)
    with open(os.path.join(a.out, "results.json")) as f:
        md = markdown(json.load(f))
    with open(os.path.join(a.out, "results.md"), "w") as f:
        f.write(md + "\n")
    head = results[0]
    print(f"ratio vpnlbd/testpmd-io: {head['ratio_io']:.2f}")


def fmt(s):
    return f"{s['median']:.2f} ({s['min']:.2f}-{s['max']:.2f})"


def markdown(doc):
    """The results as the table in docs/benchmarks.md."""
    lines = [
        "| scenario | clients | family | frame | testpmd io | testpmd macswap | vpnlbd | vpnlbd / io "
        "| vpnlbd / macswap | burst p50 / p99 | entries | bytes/entry | RSS | new clients (redirects)/s |",
        "|---|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in doc["results"]:
        v = r["vpnlbd"]
        m = r["mpps"]
        lines.append("| " + " | ".join(str(x) for x in (
            r["scenario"], f"{r['clients']:,}".replace(",", " "), r["family"], r["size"],
            fmt(m["testpmd-io"]), fmt(m["testpmd-macswap"]), fmt(m["vpnlbd"]),
            f"{r['ratio_io']:.2f}", f"{r['ratio_macswap']:.2f}",
            f"{v['latency_us']['p50']} / {v['latency_us']['p99']} µs", v["entries"],
            v["bytes_per_entry"], f"{v['rss_mb']:.0f} MB",
            f"{per_second(r):,.0f}".replace(",", " ") if r["mix"] in ("new-clients", "redirect")
            else "—")) + " |")
    for name, why in doc.get("not_run", []):
        lines.append(f"| {name} | not run here: {why} |" + " |" * 12)
    return "\n".join(lines)


def print_table(results, a):
    print(f"\n{a.reps} runs each, {a.duration:g} s after {a.warmup:g} s warm-up; Mpps median (min-max)")
    hdr = ("scenario", "clients", "family", "size", "w", "testpmd io", "testpmd macswap", "vpnlbd",
           "/io", "/macswap", "tx/rx", "p50 us", "p99 us", "entries", "B/entry", "RSS MB",
           "new cl (redir)/s")
    print("  ".join(hdr))
    for r in results:
        v = r["vpnlbd"]
        print("  ".join(str(x) for x in (
            r["scenario"], r["clients"], r["family"], r["size"], r["workers"],
            fmt(r["mpps"]["testpmd-io"]), fmt(r["mpps"]["testpmd-macswap"]), fmt(r["mpps"]["vpnlbd"]),
            f"{r['ratio_io']:.2f}", f"{r['ratio_macswap']:.2f}", f"{v['tx_ratio']:.3f}",
            v["latency_us"]["p50"], v["latency_us"]["p99"], v["entries"], v["bytes_per_entry"],
            v["rss_mb"], f"{per_second(r):.0f}")))


if __name__ == "__main__":
    try:
        main()
    except (RuntimeError, subprocess.CalledProcessError) as e:
        print(f"bench: FAIL: {e}", file=sys.stderr)
        sys.exit(1)
