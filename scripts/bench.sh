#!/usr/bin/env bash
# vpnlbd against dpdk-testpmd, side by side, in one run on one machine (root: DPDK needs it).
#
#   scripts/bench.sh              the full table: lab mix at 1 M clients (headline), 1 k and
#                                 100 k clients, ESP-in-UDP at 64/512/1400 bytes, single-protocol
#                                 streams (ESP in UDP, IKE, TLS), the new-client admission rate
#   scripts/bench.sh --quick      lab mix, 1 M clients, one worker, A/B alternating (< 3 min);
#                                 ends with `ratio vpnlbd/testpmd-io: X.XX`
#   scripts/bench.sh --smoke      seconds: checks that the harness produces numbers (CI)
#   scripts/bench.sh --generator pktgen [--quick]
#                                 pktgen-DPDK instead of replayed captures: vpnlbd's ports are
#                                 net_memif servers, pktgen (perf/rig/build-pktgen.sh builds it)
#                                 sends the lab mix both ways, and a binary search finds the
#                                 no-drop rate (RFC 2544); prints every trial (scripts/bench-pktgen.py)
#   options: --only NAME,...  --reps N  --duration S  --warmup S  --workers 1,2,4 (scaling)
#            --control-core N  --first-worker-core N  --out DIR (out/bench)
#            --bin-dir DIR     run DIR/vpnlbd, vpnlbctl, vpnlb-benchgen instead of building
#            --trial S  --loss FRACTION   pktgen: trial length (2 s quick, 10 s full), tolerated loss (0)
#            --bundle DIR      write a self-contained directory to run this on another machine
#                              where nothing can be installed (binaries, the DPDK libraries and
#                              PMDs they load, dpdk-testpmd, this harness); run DIR/bench.sh there
#
# Every program gets the same two virtual devices: net_pcap replaying the client-port and
# backend-port captures from vpnlb-benchgen with infinite_rx=1 (one queue per worker), and no
# tx_pcap, so what is sent is dropped silently (unlike net_null, which also generates traffic).
# Same cores (control/main lcore and one per worker), same duration; see scripts/bench.py.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
if [ -f "$HERE/bench.py" ] && [ -d "$HERE/../conf" ]; then ROOT=$(cd "$HERE/.." && pwd); else ROOT=$HERE; fi
cd "$ROOT"
if [ -x "$HOME/.cargo/bin/cargo" ]; then export PATH="$HOME/.cargo/bin:$PATH"; fi

MODE=full ONLY="" REPS="" DURATION="" WARMUP="" WORKERS=1 OUT=out/bench BIN_DIR="" BUNDLE=""
CONTROL_CORE=0 FIRST_WORKER_CORE=1 GENERATOR=testpmd TRIAL="" LOSS=0
while [ $# -gt 0 ]; do
  case $1 in
    --quick) MODE=quick ;;
    --smoke) MODE=smoke ;;
    --only) ONLY=$2; shift ;;
    --reps) REPS=$2; shift ;;
    --duration) DURATION=$2; shift ;;
    --warmup) WARMUP=$2; shift ;;
    --workers) WORKERS=$2; shift ;;
    --control-core) CONTROL_CORE=$2; shift ;;
    --first-worker-core) FIRST_WORKER_CORE=$2; shift ;;
    --out) OUT=$2; shift ;;
    --bin-dir) BIN_DIR=$2; shift ;;
    --bundle) BUNDLE=$2; shift ;;
    --generator) GENERATOR=$2; shift ;;
    --trial) TRIAL=$2; shift ;;
    --loss) LOSS=$2; shift ;;
    -h | --help) sed -n '2,27p' "$0"; exit 0 ;;
    *) echo "bench.sh: unknown option $1" >&2; exit 2 ;;
  esac
  shift
done
case $MODE in
  quick) REPS=${REPS:-3} DURATION=${DURATION:-5} WARMUP=${WARMUP:-2} ;;
  smoke) REPS=${REPS:-1} DURATION=${DURATION:-3} WARMUP=${WARMUP:-1} ;;
  *) REPS=${REPS:-3} DURATION=${DURATION:-5} WARMUP=${WARMUP:-2} ;;
esac

if [ -z "$BIN_DIR" ] && [ -x "$ROOT/bin/vpnlbd" ] && [ -f "$ROOT/bench.py" ]; then
  BIN_DIR=$ROOT/bin # inside a bundle
fi
if [ -z "$BIN_DIR" ]; then
  echo "bench: build (cargo build --release -p vpnlb-control -p vpnlb-perf)" >&2
  cargo build --release -q -p vpnlb-control -p vpnlb-perf
  BIN_DIR=${CARGO_TARGET_DIR:-target}/release
fi

# The DPDK the binaries were built against: a bundle carries its own PMDs.
EAL_EXTRA=""
TESTPMD=$(command -v dpdk-testpmd || true)
if [ -d "$ROOT/lib/pmds" ]; then
  export LD_LIBRARY_PATH="$ROOT/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  EAL_EXTRA="-d $ROOT/lib/pmds"
  TESTPMD=$ROOT/bin/dpdk-testpmd
fi

if [ -n "$BUNDLE" ]; then
  [ -n "$TESTPMD" ] || { echo "bench.sh: no dpdk-testpmd to bundle (apt-get install dpdk)" >&2; exit 1; }
  PMDS=$(pkg-config --variable=pmdsdir libdpdk 2>/dev/null || true)
  [ -d "$PMDS" ] || PMDS=$(ls -d /usr/lib/*/dpdk/pmds-* 2>/dev/null | head -n 1)
  [ -d "$PMDS" ] || { echo "bench.sh: cannot find DPDK's PMD directory" >&2; exit 1; }
  rm -rf "$BUNDLE"
  mkdir -p "$BUNDLE/bin" "$BUNDLE/lib/pmds" "$BUNDLE/conf"
  cp "$BIN_DIR/vpnlbd" "$BIN_DIR/vpnlbctl" "$BIN_DIR/vpnlb-benchgen" "$TESTPMD" "$BUNDLE/bin/"
  # pktgen, when built here (perf/rig/build-pktgen.sh): the bundle carries it for --generator pktgen.
  if [ -x "$ROOT/perf/rig/pktgen/pktgen" ]; then cp -L "$ROOT/perf/rig/pktgen/pktgen" "$BUNDLE/bin/"; fi
  cp "$PMDS"/*.so* "$BUNDLE/lib/pmds/" 2>/dev/null || true
  # Every shared library any of them loads, except the C library and the loader, which every
  # Linux machine has in a version at least as new as Debian bookworm's (glibc 2.36).
  for f in "$BUNDLE"/bin/* "$BUNDLE"/lib/pmds/*; do
    ldd "$f" 2>/dev/null | awk '/=> \// { print $3 }'
  done | sort -u | while read -r lib; do
    case $(basename "$lib") in
      libc.so.* | libm.so.* | ld-linux* | libpthread.so.* | libdl.so.* | librt.so.*) ;;
      *) cp -L "$lib" "$BUNDLE/lib/" ;;
    esac
  done
  cp "$ROOT/scripts/bench.sh" "$ROOT/scripts/bench.py" "$ROOT/scripts/bench-pktgen.py" "$BUNDLE/"
  cp "$ROOT/conf/bench.toml" "$BUNDLE/conf/"
  mkdir -p "$BUNDLE/perf/rig"
  cp "$ROOT/perf/rig/pktgen-vpnlb.lua" "$BUNDLE/perf/rig/"
  echo "bench: bundle in $BUNDLE ($(du -sh "$BUNDLE" | cut -f1)); on the target machine (root):"
  echo "  $BUNDLE/bench.sh --workers 1,2,4,8 --first-worker-core 2    # python3 needed, nothing else"
  if [ -x "$BUNDLE/bin/pktgen" ]; then
    echo "  $BUNDLE/bench.sh --generator pktgen                          # the no-drop rate (needs script(1))"
  fi
  exit 0
fi

[ "$(id -u)" -eq 0 ] || { echo "bench.sh: needs root (DPDK)" >&2; exit 1; }

if [ "$GENERATOR" = pktgen ]; then
  if [ -x "$ROOT/bin/pktgen" ]; then
    PKTGEN=$ROOT/bin/pktgen # inside a bundle
  else
    set +e
    PKTGEN=$(perf/rig/build-pktgen.sh)
    built=$?
    set -e
    [ "$built" -ne 3 ] || { echo "bench.sh: no pktgen source: see perf/rig/README.md (pktgen)" >&2; exit 1; }
    [ "$built" -eq 0 ] || { echo "bench.sh: pktgen did not build" >&2; exit 1; }
  fi
  case $MODE in quick | smoke) TRIAL=${TRIAL:-2} STEPS=6 ;; *) TRIAL=${TRIAL:-10} STEPS=10 ;; esac
  echo "bench: $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')), pktgen over net_memif, $MODE" >&2
  exec python3 "$ROOT/$( [ -f "$ROOT/bench-pktgen.py" ] && echo bench-pktgen.py || echo scripts/bench-pktgen.py)" \
    --mode search --bin-dir "$BIN_DIR" --pktgen "$PKTGEN" --out "$OUT-pktgen" \
    --trial-s "$TRIAL" --loss "$LOSS" --steps "$STEPS" --eal="$EAL_EXTRA"
elif [ "$GENERATOR" != testpmd ]; then
  echo "bench.sh: --generator testpmd or pktgen" >&2
  exit 2
fi

# 2 MB hugepages for the EAL when the machine can spare them (BENCH_NO_HUGE=1: never): the
# 1 M-client captures preload ~1.1 M mbufs, which without hugepages take ~18 s to map per run.
# The previous reservation is restored on exit.
HUGE_FLAG=""
if [ -z "${BENCH_NO_HUGE:-}" ]; then
  case $MODE in smoke) want_pages=1024 ;; *) want_pages=2560 ;; esac
  mountpoint -q /dev/hugepages 2>/dev/null || { mkdir -p /dev/hugepages && mount -t hugetlbfs nodev /dev/hugepages 2>/dev/null; } || true
  prev_pages=$(cat /proc/sys/vm/nr_hugepages 2>/dev/null || echo 0)
  if [ "$prev_pages" -lt "$want_pages" ]; then
    echo "$want_pages" >/proc/sys/vm/nr_hugepages 2>/dev/null || true
    trap 'echo "$prev_pages" >/proc/sys/vm/nr_hugepages 2>/dev/null || true' EXIT
  fi
  free_pages=$(awk '/HugePages_Free/ { print $2 }' /proc/meminfo)
  if mountpoint -q /dev/hugepages 2>/dev/null && [ "${free_pages:-0}" -ge "$want_pages" ]; then
    HUGE_FLAG=--hugepages
  else
    echo "bench: no $want_pages free 2 MB hugepages: EAL memory without them (slow start)" >&2
  fi
fi
[ -n "$TESTPMD" ] || { echo "bench.sh: no dpdk-testpmd (apt-get install dpdk)" >&2; exit 1; }
PY=python3
[ -x /usr/bin/python3 ] && PY=/usr/bin/python3
echo "bench: $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')), $MODE, $REPS x ${DURATION}s${HUGE_FLAG:+, hugepages}" >&2
"$PY" "$ROOT/$( [ -f "$ROOT/bench.py" ] && echo bench.py || echo scripts/bench.py)" \
  --mode "$MODE" ${ONLY:+--only "$ONLY"} --bin-dir "$BIN_DIR" --testpmd "$TESTPMD" \
  --bench-conf "$ROOT/conf/bench.toml" --out "$OUT" --reps "$REPS" --duration "$DURATION" \
  --warmup "$WARMUP" --workers "$WORKERS" --control-core "$CONTROL_CORE" \
  --first-worker-core "$FIRST_WORKER_CORE" --eal="$EAL_EXTRA" $HUGE_FLAG
