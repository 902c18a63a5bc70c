#!/usr/bin/env python3
"""Checks the shipped monitoring files (monitoring/) against each other and a live scrape.

  monitoring-check.py static              the dashboard is valid Grafana JSON: panels with unique
                                          ids, a grid position and PromQL targets
  monitoring-check.py scrape FILE         every vpnlb_* metric the dashboard and the alert rules
                                          name is declared (# TYPE) in FILE, a /metrics page

Exits 1 with the problems listed. (promtool checks and unit-tests the rules themselves.)
"""
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DASHBOARD = ROOT / "monitoring" / "vpnlb-dashboard.json"
ALERTS = ROOT / "monitoring" / "alerts.yml"
NAME = re.compile(r"\bvpnlb_[a-z0-9_]+")


def dashboard_exprs():
    dash = json.loads(DASHBOARD.read_text())
    return dash, [t["expr"] for p in dash.get("panels", []) for t in p.get("targets", [])]


def alert_exprs():
    # The rules file is YAML; its expressions are the `expr:` values (single line or a block).
    text = ALERTS.read_text()
    exprs, block = [], None
    for line in text.splitlines():
        m = re.match(r"^(\s*)expr:\s*(.*)$", line)
        if m:
            if m.group(2) in ("|", ">"):
                block = (len(m.group(1)), [])
                exprs.append(block[1])
            else:
                exprs.append([m.group(2)])
                block = None
        elif block is not None:
            if line.strip() and len(line) - len(line.lstrip()) <= block[0]:
                block = None
            else:
                block[1].append(line.strip())
    return [" ".join(e) for e in exprs]


def static():
    problems = []
    dash, exprs = dashboard_exprs()
    ids = [p.get("id") for p in dash["panels"]]
    if len(ids) != len(set(ids)):
        problems.append("panel ids are not unique")
    for p in dash["panels"]:
        if p.get("type") == "row":
            continue
        where = f"panel {p.get('id')} {p.get('title')!r}"
        if not p.get("targets"):
            problems.append(f"{where}: no targets")
        if not all(k in p.get("gridPos", {}) for k in "hwxy"):
            problems.append(f"{where}: no grid position")
        for t in p.get("targets", []):
            e = t.get("expr", "")
            if not NAME.search(e) or e.count("(") != e.count(")") or e.count("{") != e.count("}"):
                problems.append(f"{where}: expression {e!r}")
    if not exprs:
        problems.append("the dashboard queries nothing")
    if len(alert_exprs()) < 8:
        problems.append(f"{ALERTS}: fewer than the 8 alert expressions expected")
    return problems


def scrape(path):
    text = Path(path).read_text()
    declared = dict(re.findall(r"^# TYPE (\S+) (\S+)$", text, re.M))
    names = set()
    for e in dashboard_exprs()[1] + alert_exprs():
        names.update(NAME.findall(e))
    problems = []
    for n in sorted(names):
        base = re.sub(r"_(bucket|sum|count)$", "", n)
        if n in declared or declared.get(base) == "histogram":
            continue
        problems.append(f"{n}: queried by the dashboard or the alerts, not in the scrape")
    print(f"monitoring-check: {len(names)} metrics queried, {len(declared)} families in the scrape")
    return problems


def main():
    if len(sys.argv) == 2 and sys.argv[1] == "static":
        problems = static()
    elif len(sys.argv) == 3 and sys.argv[1] == "scrape":
        problems = scrape(sys.argv[2])
    else:
        sys.exit(__doc__)
    for p in problems:
        print(f"monitoring-check: {p}", file=sys.stderr)
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
