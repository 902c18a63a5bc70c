# scripts/lib/labtest.sh: the skeleton every lab test shares (sourced; the tests run as root with
# `set -euo pipefail` in the repository root). A lab test starts vpnlbd and real peers in the
# network namespaces that scripts/lab.sh builds; this file starts, bounds, reports and tears down.
# It sources scripts/peers.sh (the peers' start/stop helpers).
#
#   set -euo pipefail
#   cd "$(dirname "$0")/.."
#   source scripts/lib/labtest.sh
#   lab_begin NAME out/NAME     TEST_NAME, OUT (emptied, absolute path), T0; the exit traps
#   lab_need TOOL...            root, and every tool on PATH (a path: executable there)
#   lab_limit LIMIT_S           the rest of the run bounded by a watchdog (SIGTERM: exit 124); the
#                               peers' lifetime (PEER_LIFETIME) follows it
#   lab_bins [VAR]              VPNLBD, VPNLBCTL in $VAR or $LAB_BIN_DIR, else built (target/release)
#   lab_up ARGS...              scripts/lab.sh down, then up ARGS (log in OUT/lab.log)
#   ... the scenario ...
#   lab_finish [TEXT]           the misses and exit 1, or "NAME: OK[ TEXT]"
#
# Functions: log MSG (NAME [elapsed s] MSG) | fail MSG (exit 1) | miss MSG (a check that did not
# hold: the run goes on and ends red; kept in OUT/misses, so subshells count too) | misses (how
# many) | relevant DIR (a peer directory whose logs the failure report shows: see clients.sh) |
# now_ms | ctl ARGS (vpnlbctl --json on SOCK) | ctl_human ARGS | ctl_sock SOCK ARGS | json PATH...
# (fields of the JSON on stdin: scripts/lib/labjson.py) | lab_config SRC DST [SOCK] (a config
# with this run's control socket) | lab_health_params CONFIG ("INTERVAL_MS TIMEOUT_MS RISE FALL"
# of its first health check) | lab_daemon_start CONFIG RUN_FOR_S [REPORT LOG] (vpnlbd in the
# background, DAEMON_PID; waits until SOCK answers) | gw_field GW FIELD (of show gateways; cheap
# enough to poll) | wait_health GW STATE LIMIT_MS (WAITED_MS; past the limit a miss, status 1) |
# lab_prometheus TARGET (a Prometheus server on the backend segment scraping TARGET's /metrics
# every second, with monitoring/alerts.yml loaded) | promql QUERY (its answer, one "LABELS VALUE"
# line per series) | prom_value QUERY (the first series' value; empty without one) |
# prom_wait_scrape (until Prometheus holds a scrape newer than this call: queries then see the
# daemon's state as of now) |
# prom_expect QUERY WANT (fail unless prom_value is WANT) | scrape TARGET (the /metrics page,
# fetched from the Prometheus host).
#
# Variables a test may set: SOCK (default OUT/vpnlbd.sock), LAB_SHOW (the vpnlbctl views of a
# failure report; default show stats, gateways, drops), LAB_LOG_TAG (log's prefix; TEST_NAME),
# LAB_CTL_TIMEOUT (s per vpnlbctl call; 10), LAB_DAEMON_WAIT_S (for SOCK to answer; 10).
#
# Hooks (function names; each list runs in the order registered):
#   lab_on_failure FUNC   FUNC adds the test's own part to the failure report (on stderr), after
#                         the daemon's state and log: peer logs, captures.
#   lab_on_exit FUNC      FUNC stops what the test started itself (a second daemon, keepalived, a
#                         capture, a namespace of its own); called on every exit, before the rest.
# On exit, whatever the status: when it is not 0 the failure report; the exit hooks; vpnlbd
# (DAEMON_PID) stopped; every peer with a pid file under OUT stopped (peers.sh's peer_stop); the
# lab removed (when lab_up ran); "torn down". The exit status is kept.

# shellcheck source=scripts/peers.sh
source scripts/peers.sh
if [ -x "$HOME/.cargo/bin/cargo" ]; then export PATH="$HOME/.cargo/bin:$PATH"; fi

LAB_LIB=scripts/lib
LAB_SHOW=("show stats" "show gateways" "show drops")
LAB_CTL_TIMEOUT=10
LAB_DAEMON_WAIT_S=10
LAB_FAILURE_HOOKS=()
LAB_EXIT_HOOKS=()
LAB_WATCHDOG=""
LAB_IS_UP=0
DAEMON_PID=""
WAITED_MS=0

lab_begin() {
  TEST_NAME=$1
  OUT=${OUT:-$2}
  rm -rf "$OUT"
  mkdir -p "$OUT"
  OUT=$(cd "$OUT" && pwd)
  SOCK=${SOCK:-$OUT/vpnlbd.sock}
  T0=$(date +%s%N)
  trap _lab_exit EXIT
  trap 'exit 130' INT
  trap '_lab_term' TERM
}

lab_on_failure() { LAB_FAILURE_HOOKS+=("$1"); }
lab_on_exit() { LAB_EXIT_HOOKS+=("$1"); }

now_ms() { echo $(($(date +%s%N) / 1000000)); }
log() { printf '%s [%6.1fs] %s\n' "${LAB_LOG_TAG:-$TEST_NAME}" "$(($(date +%s%N) - T0))e-9" "$*"; }
fail() { echo "$TEST_NAME: FAIL: $*" >&2; exit 1; }
miss() {
  echo "$*" >>"$OUT/misses"
  echo "$TEST_NAME: MISS: $*" >&2
}
misses() { if [ -f "$OUT/misses" ]; then wc -l <"$OUT/misses"; else echo 0; fi; }
relevant() { echo "$1" >>"$OUT/relevant"; }

lab_need() {
  local tool
  [ "$(id -u)" -eq 0 ] || fail "needs root (network namespaces)"
  for tool in "$@"; do
    if [[ $tool == */* ]]; then
      [ -x "$tool" ] || fail "needs $tool (scripts/setup.sh installs it)"
    else
      command -v "$tool" >/dev/null || fail "needs $tool (scripts/setup.sh installs it)"
    fi
  done
}

# The watchdog: a subshell that sends this shell SIGTERM after LIMIT_S, unless stopped first.
lab_limit() {
  LIMIT_S=$1
  # Peers never outlive the run by much, even if the cleanup never runs (peers.sh: timeout).
  export PEER_LIFETIME=$((LIMIT_S + 60))
  (
    trap 'kill "$sleeper" 2>/dev/null; exit 0' TERM
    sleep "$LIMIT_S" &
    sleeper=$!
    wait "$sleeper" && kill -TERM $$
  ) 2>/dev/null &
  LAB_WATCHDOG=$!
}
_lab_term() {
  if [ -n "$LAB_WATCHDOG" ]; then
    echo "$TEST_NAME: FAIL: the run exceeded ${LIMIT_S} s" >&2
  else
    echo "$TEST_NAME: FAIL: terminated" >&2
  fi
  exit 124
}

lab_bins() {
  local dir=""
  if [ -n "${1:-}" ]; then dir=${!1:-}; fi
  dir=${dir:-${LAB_BIN_DIR:-}}
  if [ -z "$dir" ]; then
    log "build (cargo build --release -p vpnlb-control)"
    timeout 1200 cargo build --release -q -p vpnlb-control
    dir=${CARGO_TARGET_DIR:-target}/release
  fi
  VPNLBD=$dir/vpnlbd VPNLBCTL=$dir/vpnlbctl
  if [ ! -x "$VPNLBD" ] || [ ! -x "$VPNLBCTL" ]; then fail "no $VPNLBD or $VPNLBCTL"; fi
}

lab_up() {
  scripts/lab.sh down >/dev/null 2>&1 || true
  LAB_IS_UP=1
  scripts/lab.sh up "$@" >"$OUT/lab.log"
}

ctl_sock() {
  local sock=$1
  shift
  timeout "$LAB_CTL_TIMEOUT" "$VPNLBCTL" --socket "$sock" "$@"
}
ctl() { ctl_sock "$SOCK" --json "$@"; }
ctl_human() { ctl_sock "$SOCK" "$@"; }
json() { python3 "$LAB_LIB/labjson.py" "$@"; }

lab_config() {
  python3 - "$1" "$2" "${3:-$SOCK}" <<'EOF'
import re, sys
src, dst, sock = sys.argv[1:]
text, n = re.subn(r'(?m)^socket = ".*"$', f'socket = "{sock}"', open(src).read(), count=1)
assert n == 1, f"{src}: no control socket line"
open(dst, "w").write(text)
EOF
}

lab_health_params() {
  local c=service.0.health_check.0
  json --toml "$1" "$c.interval:ms" "$c.timeout:ms" "$c.rise" "$c.fall"
}

lab_daemon_start() {
  local config=$1 run_for=$2 report=${3:-$OUT/report.json} log=${4:-$OUT/vpnlbd.log}
  "$VPNLBD" --config "$config" --run-for-s "$run_for" >"$report" 2>"$log" &
  DAEMON_PID=$!
  for _ in $(seq 1 $((LAB_DAEMON_WAIT_S * 10))); do
    [ -S "$SOCK" ] && ctl ping >/dev/null 2>&1 && return 0
    kill -0 "$DAEMON_PID" 2>/dev/null || fail "vpnlbd exited early: $(tail -n 5 "$log")"
    sleep 0.1
  done
  ctl ping >/dev/null 2>&1 || fail "vpnlbd does not answer on $SOCK"
}

# gw_field: no python here (it is polled); the JSON has no spaces within values.
gw_field() {
  ctl show gateways | tr -d ' \n' | tr '}' '\n' | grep -F "\"gateway\":\"$1\"" \
    | sed -nE "s/.*\"$2\":\"?([^,\"]*)\"?.*/\1/p"
}

wait_health() {
  local gw=$1 want=$2 limit=$3 t0
  t0=$(now_ms)
  while :; do
    if [ "$(gw_field "$gw" health 2>/dev/null)" = "$want" ]; then
      WAITED_MS=$(($(now_ms) - t0))
      return 0
    fi
    WAITED_MS=$(($(now_ms) - t0))
    if [ "$WAITED_MS" -gt "$limit" ]; then
      miss "$gw not $want after $WAITED_MS ms (limit $limit ms)"
      return 1
    fi
    sleep 0.02
  done
}

lab_finish() {
  if [ "$(misses)" -gt 0 ]; then
    echo "$TEST_NAME: $(misses) misses:" >&2
    sed 's/^/  /' "$OUT/misses" >&2
    exit 1
  fi
  echo "$TEST_NAME: OK${1:+ $1}"
}

# --- Prometheus ------------------------------------------------------------------------------------

# The Prometheus host: a tool namespace on the backend segment (scripts/lab.sh tool).
readonly LAB_PROM_NS=vlb-mon LAB_PROM_ADDR=198.19.0.50:9090

lab_prometheus() {
  local target=$1 dir="$OUT/prometheus"
  mkdir -p "$dir/data"
  scripts/lab.sh tool mon 50 >>"$OUT/lab.log"
  cat >"$dir/prometheus.yml" <<EOF
global:
  scrape_interval: 1s
  scrape_timeout: 900ms
  evaluation_interval: 1s
rule_files:
  - $PWD/monitoring/alerts.yml
scrape_configs:
  - job_name: vpnlb
    static_configs:
      - targets: ["$target"]
        labels: {pair: lab}
EOF
  ip netns exec "$LAB_PROM_NS" timeout -s TERM "${PEER_LIFETIME:-900}" prometheus \
    --config.file="$dir/prometheus.yml" --storage.tsdb.path="$dir/data" \
    --web.listen-address="$LAB_PROM_ADDR" >"$dir/prometheus.log" 2>&1 &
  echo $! >"$dir/prometheus.pid" # stopped on exit like a peer
  for _ in $(seq 1 100); do
    ip netns exec "$LAB_PROM_NS" curl -sf "http://$LAB_PROM_ADDR/-/ready" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  tail -n 5 "$dir/prometheus.log" >&2
  fail "Prometheus did not become ready in 10 s"
}

promql() {
  ip netns exec "$LAB_PROM_NS" curl -sf --max-time 5 --get --data-urlencode "query=$1" \
    "http://$LAB_PROM_ADDR/api/v1/query" | python3 -c '
import json, sys
r = json.load(sys.stdin)
if r.get("status") != "success":
    sys.exit(f"promql: {r}")
for s in r["data"]["result"]:
    labels = ",".join(f"{k}={v}" for k, v in sorted(s["metric"].items()))
    print(labels or "-", s["value"][1])
'
}

scrape() {
  ip netns exec "$LAB_PROM_NS" curl -sf --max-time 5 "http://$1/metrics"
}

prom_value() { promql "$1" | awk 'NR == 1 { print $2 }'; }

prom_wait_scrape() {
  local since t
  since=$(date +%s.%N)
  for _ in $(seq 1 50); do
    t=$(prom_value 'timestamp(up{job="vpnlb"})')
    if [ -n "$t" ] && python3 -c 'import sys; sys.exit(float(sys.argv[1]) <= float(sys.argv[2]))' "$t" "$since"; then
      return 0
    fi
    sleep 0.1
  done
  fail "Prometheus: no scrape of the daemon within 5 s"
}

prom_expect() {
  local query=$1 want=$2 got
  got=$(prom_value "$query")
  [ "$got" = "$want" ] || fail "Prometheus: $query is '${got}', not $want"
}

# --- the failure report and the teardown ---------------------------------------------------------

# lab_report_daemon LABEL SOCK LOG: a daemon's LAB_SHOW views and the tail of its log.
lab_report_daemon() {
  local label=$1 sock=$2 log=$3 what
  if [ -S "$sock" ]; then
    for what in "${LAB_SHOW[@]}"; do
      echo "--- $label: vpnlbctl $what ---"
      # shellcheck disable=SC2086  # two words
      ctl_sock "$sock" $what 2>&1 | head -n 60 || true
    done
  fi
  if [ -f "$log" ]; then
    echo "--- $label log (tail) ---"
    tail -n 40 "$log" || true
  fi
}

lab_report() {
  local hook
  echo "=== $TEST_NAME failure report ==="
  if [ -n "$DAEMON_PID" ] && kill -0 "$DAEMON_PID" 2>/dev/null; then
    lab_report_daemon vpnlbd "$SOCK" "$OUT/vpnlbd.log"
  elif [ -s "$OUT/report.json" ] || [ -f "$OUT/vpnlbd.log" ]; then
    echo "--- vpnlbd is not running; its final report ---"
    head -c 4000 "$OUT/report.json" 2>/dev/null || true
    echo
    lab_report_daemon vpnlbd "" "$OUT/vpnlbd.log"
  fi
  for hook in "${LAB_FAILURE_HOOKS[@]+"${LAB_FAILURE_HOOKS[@]}"}"; do "$hook" || true; done
}

_lab_exit() {
  local rc=$? hook f pids=()
  # The teardown goes on whatever fails, and whatever the run had not set yet.
  set +eu
  trap - EXIT INT TERM
  if [ -n "$LAB_WATCHDOG" ]; then kill "$LAB_WATCHDOG" 2>/dev/null; fi
  if [ "$rc" -ne 0 ]; then lab_report >&2; fi
  for hook in "${LAB_EXIT_HOOKS[@]+"${LAB_EXIT_HOOKS[@]}"}"; do "$hook"; done
  if [ -n "$DAEMON_PID" ]; then
    kill "$DAEMON_PID" 2>/dev/null && timeout 10 tail --pid="$DAEMON_PID" -f /dev/null
  fi
  # Every peer this run started left a pid file (peers.sh): stop them all at once, then remove
  # the lab (which also ends anything left in its namespaces).
  while IFS= read -r f; do
    peer_stop "$(dirname "$f")" "$(basename "$f" .pid)" &
    pids+=($!)
  done < <(find "$OUT" -name '*.pid' ! -name 'ocserv.daemon.pid' ! -path '*/run/*' 2>/dev/null)
  for f in "${pids[@]+"${pids[@]}"}"; do wait "$f"; done
  if [ "$LAB_IS_UP" -eq 1 ]; then
    timeout 120 scripts/lab.sh down >/dev/null 2>&1
    log "torn down (lab down)"
  fi
  exit "$rc"
}
