#!/usr/bin/env bash
# pktgen-DPDK drives vpnlbd over shared-memory ports (root: DPDK). vpnlbd's client and backend
# ports are net_memif servers, pktgen's two ports their clients; pktgen runs the rig's own script
# (perf/rig/pktgen-vpnlb.lua) and replays the benchmark captures both ways (clients to the VIP,
# the gateways' answers) for a few seconds at a low rate. Every frame must be accounted for: what
# pktgen sent is what it received plus what vpnlbd counted as not sent, and at this rate nothing
# is lost (scripts/bench-pktgen.py --mode replay).
#
# pktgen is built first if needed (perf/rig/build-pktgen.sh); where no pktgen source is found
# the test is skipped with a message saying so. PKTGEN_TEST_BIN_DIR=DIR (or LAB_BIN_DIR) runs
# DIR's vpnlbd, vpnlbctl and vpnlb-benchgen instead of building them.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -x "$HOME/.cargo/bin/cargo" ]; then export PATH="$HOME/.cargo/bin:$PATH"; fi
OUT=out/pktgen-test
[ "$(id -u)" -eq 0 ] || { echo "pktgen-test: needs root (DPDK)" >&2; exit 1; }

set +e
PKTGEN=$(perf/rig/build-pktgen.sh)
built=$?
set -e
if [ "$built" -eq 3 ]; then
  echo "pktgen-test: SKIPPED: no pktgen-DPDK source to build (see perf/rig/README.md, \"pktgen\")"
  exit 0
fi
[ "$built" -eq 0 ] || { echo "pktgen-test: FAIL: pktgen did not build" >&2; exit 1; }

BIN_DIR=${PKTGEN_TEST_BIN_DIR:-${LAB_BIN_DIR:-}}
if [ -z "$BIN_DIR" ]; then
  cargo build --release -q -p vpnlb-control -p vpnlb-perf
  BIN_DIR=${CARGO_TARGET_DIR:-target}/release
fi
for b in vpnlbd vpnlbctl vpnlb-benchgen; do
  [ -x "$BIN_DIR/$b" ] || { echo "pktgen-test: FAIL: no $BIN_DIR/$b" >&2; exit 1; }
done

rm -rf "$OUT"
if python3 scripts/bench-pktgen.py --mode replay --bin-dir "$BIN_DIR" --pktgen "$PKTGEN" \
  --out "$OUT" --rate 0.05 --duration-s 3 --expect-no-loss --limit-s 120; then
  echo "pktgen-test: OK"
else
  echo "--- pktgen (tail) ---" >&2
  tail -n 30 "$OUT/pktgen.txt" >&2 || true
  echo "--- vpnlbd log (tail) ---" >&2
  tail -n 20 "$OUT/vpnlbd.log" >&2 || true
  echo "pktgen-test: FAIL" >&2
  exit 1
fi
