#!/usr/bin/env python3
"""Prints a replay report (vpnlbd replay --affinity JSON) as tables an operator reads."""
import csv
import json
import sys


def main() -> int:
    report = json.load(open(sys.argv[1]))
    expected = {}
    if len(sys.argv) > 2:
        with open(sys.argv[2]) as f:
            for row in csv.DictReader(f):
                expected[row["address"]] = row
    c = report["counters"]
    print(f"{'client':<40} {'kind':<12} {'gateway':<8} {'confirmed':<9} {'expected':<8}")
    misses = 0
    for e in report.get("affinity") or []:
        exp = expected.get(e["client"], {})
        want = exp.get("gateway", "-")
        ok = want in ("-", e["gateway"])
        misses += 0 if ok else 1
        print(f"{e['client']:<40} {exp.get('kind', '-'):<12} {e['gateway']:<8} "
              f"{'yes' if e['confirmed'] else 'no':<9} {want:<8}{'' if ok else '  MISMATCH'}")
    print()
    print(f"{'gateway':<8} {'clients':>7} {'to-gw pkts':>10} {'from-gw pkts':>12}")
    for g in report["gateways"]:
        print(f"{g['gateway']:<8} {g['clients']:>7} {g['to_gateway_packets']:>10} {g['from_gateway_packets']:>12}")
    print()
    print("ports: " + ", ".join(f"{n} rx {p['rx_packets']} tx {p['tx_packets']}"
                                for n, p in report["ports"].items()))
    print("classes: " + ", ".join(f"{k} {v}" for k, v in c["classes"].items() if v))
    drops = {k: v for k, v in c["drops"].items() if v}
    print("drops: " + (", ".join(f"{k} {v}" for k, v in drops.items()) or "none"))
    if report.get("sni_top"):
        print("tls sni: " + ", ".join(f"{n} {k}" for n, k in report["sni_top"]))
    return 1 if misses else 0


if __name__ == "__main__":
    sys.exit(main())
