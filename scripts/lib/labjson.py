#!/usr/bin/env python3
"""Fields of a JSON document (or a TOML file) for the lab tests' shell (scripts/lib/labtest.sh).

  labjson.py PATH...                   < JSON   the fields, one line, separated by spaces
  labjson.py --each LIST FIELD...      < JSON   one line per element of LIST: its FIELDs
  labjson.py --toml FILE PATH...                the same from a TOML file (--each likewise)

A PATH is dot-separated steps from the top: a key, a list index (`0`), `*` (every element of a
list; the steps after it apply to each), or KEY=VALUE (the first element of a list whose KEY is
VALUE, as text). `.` alone is the top. Suffixes after `:` transform the value: `:sum`, `:len`,
`:ms` (a duration, "500ms", "2s", "1m" or a number of seconds, in milliseconds).
Printed: text as it is, true/false, `-` for null, numbers as JSON writes them, a list's elements
separated by spaces, an object as compact JSON. A missing field is an error (exit 1).

  vpnlbctl --json show gateways | labjson.py gateway=gw2.health        -> up
  vpnlbctl --json show gateways | labjson.py '*.health_transitions:sum' -> 4
  vpnlbctl --json show affinity | labjson.py --each . client gateway   -> 198.18.0.11 gw1 ...
"""
import json
import re
import sys


def step(value, key):
    if key == "*":
        return list(value)
    if isinstance(value, list):
        if "=" in key:
            k, want = key.split("=", 1)
            for row in value:
                if isinstance(row, dict) and text(row.get(k)) == want:
                    return row
            raise KeyError(key)
        return value[int(key)]
    return value[key]


def get(doc, path):
    path, *ops = path.split(":")
    value, spread = doc, False
    for key in [k for k in path.split(".") if k]:
        if spread:
            value = [step(v, key) for v in value]
        else:
            value = step(value, key)
            spread = key == "*"
    for op in ops:
        if op == "sum":
            value, spread = sum(value), False
        elif op == "len":
            value, spread = len(value), False
        elif op == "ms":
            value = [ms(v) for v in value] if spread else ms(value)
        else:
            raise ValueError(f"unknown suffix :{op}")
    return value


def ms(v):
    if isinstance(v, (int, float)):
        return int(v * 1000)
    return sum(int(n) * {"ms": 1, "s": 1000, "m": 60000}[u] for n, u in re.findall(r"(\d+)(ms|s|m)", v))


def text(v):
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return v
    if isinstance(v, list):
        return " ".join(text(x) for x in v)
    if isinstance(v, dict):
        return json.dumps(v, separators=(",", ":"))
    return json.dumps(v)


def main(args):
    doc = None
    if args[:1] == ["--toml"]:
        import tomllib
        doc = tomllib.load(open(args[1], "rb"))
        args = args[2:]
    if doc is None:
        doc = json.load(sys.stdin)
    if args[:1] == ["--each"]:
        for row in get(doc, args[1]):
            print(" ".join(text(get(row, f)) for f in args[2:]))
    else:
        print(" ".join(text(get(doc, p)) for p in args))


if __name__ == "__main__":
    try:
        main(sys.argv[1:])
    except (KeyError, IndexError, ValueError, TypeError) as e:
        sys.exit(f"labjson: {' '.join(sys.argv[1:])}: {type(e).__name__} {e}")
