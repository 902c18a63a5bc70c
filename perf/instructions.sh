#!/usr/bin/env bash
# Instructions per packet of the worker pipeline, counted by callgrind: noise-free, unlike
# wall-clock time on a shared VM.
#
#   perf/instructions.sh [--clients N] [--packets N]
#
# What is counted: every instruction executed inside `Pipeline::process_burst` (the pipeline
# proper: parsing, classification, affinity lookup and refresh, scheduling, NAT rewrite, L2
# rewrite, counters and the incremental expiry sweep), over the micro-benchmark's lab mix
# (perf/benches/pipeline.rs: half client -> VIP, mostly ESP-in-UDP with IKE, keepalives, TLS
# and DTLS; half gateway -> client ESP-in-UDP; clients drawn at random from N = 1000 confirmed
# ones), in bursts of 32. Not counted: building the frames (the NIC's job) and DPDK I/O.
#
# The benchmark first admits its clients (one IKE_SA_INIT and one answer each), which also
# runs through `process_burst`. To leave that out, it runs twice, with P and 2P measured
# packets, and reports (I(2P) - I(P)) / P: the admission phase is identical in both runs.
# The last two lines are `instructions/packet v4: N` and `instructions/packet v6: N`.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -x "$HOME/.cargo/bin/cargo" ]; then export PATH="$HOME/.cargo/bin:$PATH"; fi

CLIENTS=1000
PACKETS=32768
while [ $# -gt 0 ]; do
  case "$1" in
    --clients) CLIENTS=${2:?--clients N}; shift 2 ;;
    --packets) PACKETS=${2:?--packets N}; shift 2 ;;
    *) echo "usage: perf/instructions.sh [--clients N] [--packets N]" >&2; exit 2 ;;
  esac
done
command -v valgrind >/dev/null || { echo "instructions.sh: needs valgrind (apt install valgrind)" >&2; exit 1; }

bench=$(cargo bench -p vpnlb-perf --bench pipeline --no-run --message-format=json 2>/dev/null |
  python3 -c 'import json,sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "pipeline" and m.get("executable"):
        print(m["executable"])')
[ -x "$bench" ] || { echo "instructions.sh: could not build the pipeline benchmark" >&2; exit 1; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# Instructions collected inside process_burst for one run.
count() {
  local family=$1 packets=$2 out="$work/cg.$1.$2"
  valgrind --tool=callgrind --callgrind-out-file="$out" \
    --toggle-collect='*Pipeline*process_burst*' \
    "$bench" --clients "$CLIENTS" --family "$family" --packets "$packets" >/dev/null 2>"$out.log" ||
    { cat "$out.log" >&2; exit 1; }
  sed -n 's/^summary: *//p; s/^totals: *//p' "$out" | head -n 1
}

for family in v4 v6; do
  one=$(count "$family" "$PACKETS")
  two=$(count "$family" $((2 * PACKETS)))
  per=$(python3 -c "print(round(($two - $one) / $PACKETS))")
  printf '%s: %s instructions for %s packets, %s for %s (admitting %s clients in both)\n' \
    "$family" "$one" "$PACKETS" "$two" $((2 * PACKETS)) "$CLIENTS" >&2
  results+=("instructions/packet $family: $per")
done
printf '%s\n' "${results[@]}"
