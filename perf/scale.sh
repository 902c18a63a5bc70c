#!/usr/bin/env bash
# Reload, `show affinity CLIENT` and `affinity flush CLIENT` on a full affinity table under
# continuous traffic: the longest time a worker left its RX queues unpolled, the VRRP advert gaps,
# rx_missed, the reload replies. A measurement, not a test (docs/benchmarks.md "Reload and queries at 10 M entries").
#
#   perf/scale.sh [--entries N (10000000)] [--bin-dir DIR] [--out DIR (out/scale)]
#
# Needs root (DPDK) and about 1 GB of memory per 10 M entries.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -x "$HOME/.cargo/bin/cargo" ]; then export PATH="$HOME/.cargo/bin:$PATH"; fi
ENTRIES=10000000 BIN_DIR="" OUT=out/scale
while [ $# -gt 0 ]; do
  case $1 in
    --entries) ENTRIES=$2; shift ;;
    --bin-dir) BIN_DIR=$2; shift ;;
    --out) OUT=$2; shift ;;
    *) echo "usage: $0 [--entries N] [--bin-dir DIR] [--out DIR]" >&2; exit 2 ;;
  esac
  shift
done
if [ -z "$BIN_DIR" ]; then
  cargo build --release -q -p vpnlb-control -p vpnlb-perf --bins
  BIN_DIR=${CARGO_TARGET_DIR:-target}/release
fi
exec python3 perf/scale.py --bin-dir "$BIN_DIR" --out "$OUT" --entries "$ENTRIES"
