#!/usr/bin/env bash
# The fault-injection test (needs root): the lab's HA pair (scripts/lib/pair.sh: A priority 200
# with two workers, B priority 190 with one, both with `[control] fault_injection = true` and the
# default `[dataplane] watchdog` of 500 ms, adverts every 100 ms), 12 on-link clients that open a
# TCP connection to the VIP's port 443 ten times a second, and on every gateway a server that
# answers with its own name, so each client logs which gateway served each connection
# (scripts/fault-traffic.py). gw2 is disabled on A while the clients arrive and enabled again
# after: clients the scheduler alone would now put on gw2 stay where they are only by their
# affinity entries, on B by the synced table.
#
#   scripts/fault-test.sh    (OUT=out/fault; FAULT_BIN_DIR=DIR (or LAB_BIN_DIR) runs DIR/vpnlbd
#                            and DIR/vpnlbctl instead of building)
#
# (a) `debug worker 1 stall 5000` on A (worker 1 spins without polling; worker 0, which sends the
#     control thread's frames, goes on): A's watchdog finds it stalled, A advertises priority 0
#     and B takes over. B's first advert (in a capture on the client segment) must come within
#     watchdog + one advert interval (600 ms) of the stall's start (the worker's log line). While the stall lasts, A is
#     backup at priority 1 and shows the stall (show stats, show workers, Prometheus, its log);
#     B's table is A's. When it ends, A pulls B's table and preempts.
# (b) SIGSTOP to A (the master): B takes over by its timers (the sync heartbeat and a missed
#     advert, else VRRP's 3 x 100 ms + skew = 361 ms): A's last advert to B's first within
#     400 ms. SIGCONT: the pair settles with one master (A, which preempts), and A's watchdog
#     did not count the stop as a stall (only watched time counts).
# (c) `debug worker 1 panic` on A: the release build's panic = "abort" ends the process by
#     SIGABRT (exit status 134, the panic message in its log), and B takes over within 400 ms.
# Throughout: every client was served by one gateway only (no client moved) and went at most
# 1.5 s without an answer.
# Prints the measurements and `fault-test: OK`, or the misses with both daemons' state and logs;
# everything is torn down on exit. Bounded: FAULT_LIMIT_S (180 s); about a minute.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib/labtest.sh
source scripts/lib/labtest.sh

lab_begin fault-test out/fault
LAB_LOG_TAG=fault
# shellcheck source=scripts/lib/pair.sh
source scripts/lib/pair.sh
readonly N=12 VIP4=198.18.0.100 PORT=443
# The stall is long enough for the checks below on a loaded 2-core machine. The answers to A's
# health probes that reach the stalled worker wait with the rest of its traffic (docs/ha.md,
# "Watchdog and crashes"), so the checks' fall is raised above the stall's length: the test is
# about VRRP and the clients, not about the health of the gateways.
readonly WATCHDOG_MS=500 ADVERT_MS=100 STALL_MS=5000
readonly STALL_LIMIT_MS=$((WATCHDOG_MS + ADVERT_MS)) DOWN_LIMIT_MS=400 GAP_LIMIT_MS=1500

lab_need ip tcpdump tshark python3
lab_limit "${FAULT_LIMIT_S:-180}"
lab_bins FAULT_BIN_DIR
# The panic aborts vpnlbd: no core file.
ulimit -c 0

log "lab: the pair's ports, $N clients, the gateways"
lab_up --pair --clients "$N"
for i in 1 2 3; do
  mkdir -p "$OUT/gw$i"
  ip netns exec "vlb-gw$i" timeout -s TERM "$PEER_LIFETIME" python3 scripts/fault-traffic.py \
    serve "gw$i" "198.19.0.1$i" "$PORT" >"$OUT/gw$i/serve.log" 2>&1 &
  echo $! >"$OUT/gw$i/serve.pid"
done

# --- the pair: fault injection on, A with two workers, TCP health checks on port 443 --------------
pair_setup
python3 - "$OUT/pair-a.toml" "$OUT/pair-b.toml" "$WATCHDOG_MS" "$PORT" <<'EOF'
import re, sys
a, b, watchdog, port = sys.argv[1:]
for path in (a, b):
    text = open(path).read()
    text, n1 = re.subn(r'(?m)^(socket = .*)$', r'\1\nfault_injection = true', text, count=1)
    workers = "[1, 0]" if path == a else "[1]"
    text, n2 = re.subn(r'(?m)^workers = \[1\]$', f'workers = {workers}\nwatchdog = "{watchdog}ms"', text, count=1)
    # No IKE daemon on the gateways here: check the port the clients use.
    text, n3 = re.subn(r'(?m)^type = "ike"$', f'type = "tcp"\nport = {port}', text, count=1)
    text, n4 = re.subn(r'(?m)^fall = 3$', 'fall = 10', text, count=1)
    # B at 190 rather than 100: its Skew_Time after A's priority-0 advert is 26 ms instead of
    # 61, so "watchdog + one advert interval" leaves room for scheduling on a loaded machine.
    n5 = 1
    if path == b:
        text, n5 = re.subn(r'(?m)^priority = 100$', 'priority = 190', text, count=1)
    assert (n1, n2, n3, n4, n5) == (1, 1, 1, 1, 1), (path, n1, n2, n3, n4, n5)
    open(path, "w").write(text)
EOF
log "vpnlbd A (priority 200, workers on cores 1 and 0), then B (priority 190)"
pair_start a
pair_wait_state a master 20 || fail "A never became master"
pair_start b
pair_wait_state b backup 20 || fail "B never became backup"
ctl_a gateway gw2 disable >/dev/null || miss "gateway gw2 disable on A failed"

for ((i = 1; i <= N; i++)); do
  d="$OUT/clients/c$i"
  mkdir -p "$d"
  ip netns exec "vlb-c$i" timeout -s TERM "$PEER_LIFETIME" python3 scripts/fault-traffic.py \
    client "$VIP4" "$PORT" "$d/answers" 0.1 >"$d/client.log" 2>&1 &
  echo $! >"$d/client.pid"
done
for _ in $(seq 1 100); do
  served=$( (grep -l ' gw' "$OUT"/clients/c*/answers 2>/dev/null || true) | wc -l)
  [ "$served" -eq "$N" ] && break
  sleep 0.1
done
[ "$served" -eq "$N" ] || fail "only $served of $N clients served through A"
ctl_a gateway gw2 enable >/dev/null || miss "gateway gw2 enable on A failed"

# same_table A_JSON B_JSON WHAT: every client of A's table on the same gateway in B's.
same_table() {
  python3 - "$1" "$2" "$3" <<'EOF'
import json, sys
a = {(r["client"], r["service"]): r["gateway"] for r in json.load(open(sys.argv[1]))}
b = {(r["client"], r["service"]): r["gateway"] for r in json.load(open(sys.argv[2]))}
diff = {k: (v, b.get(k)) for k, v in a.items() if b.get(k) != v}
spread = {}
for g in a.values():
    spread[g] = spread.get(g, 0) + 1
print(f"fault: {sys.argv[3]}: {len(a)} entries ({', '.join(f'{g} {n}' for g, n in sorted(spread.items()))}), "
      + (f"different: {diff}" if diff else "every one on the same gateway"))
sys.exit(1 if diff or not a else 0)
EOF
}
sleep 0.5
ctl_a show affinity >"$OUT/affinity-a0.json"
ctl_b show affinity >"$OUT/affinity-b0.json"
same_table "$OUT/affinity-a0.json" "$OUT/affinity-b0.json" "B's copy of A's table" \
  || miss "B's copy of the affinity table differs from A's"

# --- (a) one worker of the master stalled --------------------------------------------------------
pair_capture_start
sleep 0.3
log "(a) debug worker 1 stall $STALL_MS on A (the master)"
t_stall=$(now_ms)
ctl_a debug worker 1 stall "$STALL_MS" >/dev/null || miss "debug worker 1 stall refused"
pair_wait_state b master 3 || true
sleep 0.2
ctl_a show vrrp >"$OUT/a-vrrp-stalled.json"
ctl_a show stats >"$OUT/a-stats-stalled.json"
ctl_a show workers >"$OUT/a-workers-stalled.json"
ctl_sock "$SOCK_A" stats prometheus >"$OUT/a-prometheus-stalled.txt"
ctl_b show affinity >"$OUT/affinity-b1.json"
t_seen=$(now_ms)
pair_capture_stop
cp "$OUT/vrrp.pcap" "$OUT/vrrp-a.pcap"
[ $((t_seen - t_stall)) -lt "$STALL_MS" ] || miss "(a) the checks took $((t_seen - t_stall)) ms, longer than the stall"
# The log has ANSI colours (tracing's default): without them.
plain_log() { sed 's/\x1b\[[0-9;]*m//g' "$1"; }
# When the stall began: the worker's own log line (vpnlbctl's start and the request's way to the
# worker are not the appliance's time).
t_stalled=$(plain_log "$OUT/vpnlbd-a.log" | grep -m1 'fault injection: the worker stalls worker=1' \
  | python3 -c 'import sys, datetime; print(round(datetime.datetime.fromisoformat(sys.stdin.read().split()[0].replace("Z", "+00:00")).timestamp() * 1000))' \
  || echo "$t_stall")
# Until the stall ends at the latest (A takes the VIPs back after it).
until_ms=$((t_seen < t_stalled + STALL_MS ? t_seen : t_stalled + STALL_MS))
read -r took flaps b_first a_prio a_last < <(pair_takeover "$OUT/vrrp-a.pcap" $((t_stall - 1000)) "$until_ms" "$t_stalled")
if [ "$b_first" -lt 0 ]; then
  miss "(a) no takeover by B in the capture"
elif [ "$b_first" -gt "$STALL_LIMIT_MS" ]; then
  miss "(a) B's first advert came $b_first ms after the stall began (limit $STALL_LIMIT_MS)"
fi
[ "$a_prio" = 0 ] || miss "(a) A's last advert had priority $a_prio, not 0"
[ "$flaps" -eq 0 ] || miss "(a) B advertised $flaps times while A still did"
python3 - "$OUT" <<'EOF' || miss "(a) A does not show the stall as it should"
import json, sys
d = sys.argv[1]
vrrp = json.load(open(f"{d}/a-vrrp-stalled.json"))
wd = json.load(open(f"{d}/a-stats-stalled.json"))["watchdog"]
workers = json.load(open(f"{d}/a-workers-stalled.json"))
prom = open(f"{d}/a-prometheus-stalled.txt").read()
bad = []
if (vrrp["state"], vrrp["priority"]) != ("backup", 1):
    bad.append(f"vrrp state {vrrp['state']} priority {vrrp['priority']}")
if not vrrp["group"]["stepped_down"] or vrrp["group"]["watchdog_step_downs"] != 1:
    bad.append(f"vrrp group {vrrp['group']}")
w1 = next(t for t in wd["threads"] if t["thread"] == "worker1")
if not (wd["stalled"] and w1["stalled"] and w1["stalls"] == 1 and wd["step_downs"] == 1):
    bad.append(f"show stats watchdog {wd}")
if [w["stalled"] for w in workers] != [False, True]:
    bad.append(f"show workers stalled {[w['stalled'] for w in workers]}")
for line in ('vpnlb_watchdog_stalled{thread="worker1"} 1', 'vpnlb_watchdog_stalls_total{thread="worker1"} 1',
             'vpnlb_watchdog_stalled{thread="worker0"} 0', 'vpnlb_watchdog_step_downs_total 1'):
    if line not in prom:
        bad.append(f"no `{line}` in stats prometheus")
print("fault: (a) A while stalled:", "; ".join(bad) if bad else
      f"backup at priority 1, worker1 stalled {w1['stalled_ms']} ms so far (show stats, show workers, Prometheus)")
sys.exit(1 if bad else 0)
EOF
plain_log "$OUT/vpnlbd-a.log" | grep -E 'WARN.*watchdog: a worker has stopped polling.* worker=1 core=0 stalled_ms=[0-9]+' \
  >"$OUT/a-watchdog-warning.txt" || miss "(a) no watchdog warning with worker, core and stalled_ms in A's log"
same_table "$OUT/affinity-a0.json" "$OUT/affinity-b1.json" "(a) B's table as master" \
  || miss "(a) B's table as master differs from A's"
log "(a) A released (priority 0) $a_last ms after the stall began, B's first advert $took ms later: takeover $b_first ms after the stall began (limit $STALL_LIMIT_MS), $((b_first + t_stalled - t_stall)) ms after the command"
pair_wait_state a master 15 || miss "(a) A did not preempt back after the stall"
pair_wait_state b backup 5 || true
ctl_a show sync >"$OUT/a-sync-recovered.json"
ctl_a show stats >"$OUT/a-stats-recovered.json"
read -r a_stalled a_longest < <(json watchdog.stalled watchdog.threads.1.longest_ms <"$OUT/a-stats-recovered.json")
[ "$a_stalled" = false ] || miss "(a) A's watchdog still says stalled after the stall"
log "(a) stall over after $a_longest ms: A pulled B's table (bulks received $(json session_counters.bulks_received <"$OUT/a-sync-recovered.json")) and preempted"

# --- (b) the whole master stopped ------------------------------------------------------------------
sleep 1
step_downs0=$(ctl_a show stats | json watchdog.step_downs)
pair_capture_start
sleep 0.3
log "(b) SIGSTOP to A"
t_stop=$(now_ms)
kill -STOP "$PID_A"
pair_wait_state b master 3 || true
sleep 0.5
t_cont=$(now_ms)
kill -CONT "$PID_A"
log "(b) SIGCONT to A after $((t_cont - t_stop)) ms"
sleep 2
pair_capture_stop
cp "$OUT/vrrp.pcap" "$OUT/vrrp-b.pcap"
read -r took_b flaps_b _ _ _ < <(pair_takeover "$OUT/vrrp-b.pcap" $((t_stop - 1000)) "$t_cont" "$t_stop")
if [ "$took_b" -lt 0 ]; then
  miss "(b) no takeover by B in the capture"
elif [ "$took_b" -gt "$DOWN_LIMIT_MS" ]; then
  miss "(b) takeover took $took_b ms (limit $DOWN_LIMIT_MS)"
fi
state_a=$(ctl_a show vrrp | json state) state_b=$(ctl_b show vrrp | json state)
[ "$state_a/$state_b" = master/backup ] || miss "(b) after SIGCONT A is $state_a and B $state_b, not master/backup"
step_downs1=$(ctl_a show stats | json watchdog.step_downs)
[ "$step_downs1" = "$step_downs0" ] || miss "(b) A's watchdog took the SIGSTOP for a stall ($step_downs0 -> $step_downs1 step-downs)"
log "(b) takeover $took_b ms after A's last advert (limit $DOWN_LIMIT_MS, B flaps $flaps_b); after SIGCONT A $state_a, B $state_b, no watchdog step-down"

# --- (c) a worker panics ---------------------------------------------------------------------------
sleep 1
pair_capture_start
sleep 0.3
log "(c) debug worker 1 panic on A"
t_panic=$(now_ms)
ctl_a debug worker 1 panic >/dev/null 2>&1 || true
rc=0
timeout 10 tail --pid="$PID_A" -f /dev/null || true
wait "$PID_A" || rc=$?
PID_A=""
pair_wait_state b master 3 || true
sleep 1
pair_capture_stop
cp "$OUT/vrrp.pcap" "$OUT/vrrp-c.pcap"
[ "$rc" -eq 134 ] || miss "(c) vpnlbd A exited with status $rc, not 134 (SIGABRT)"
plain_log "$OUT/vpnlbd-a.log" | grep -A1 "thread 'vpnlb-w1'.* panicked at" | grep -q "fault injection: worker 1 panics" \
  || miss "(c) no panic message in A's log"
read -r took_c _ _ _ _ < <(pair_takeover "$OUT/vrrp-c.pcap" $((t_panic - 1000)) "$(now_ms)" "$t_panic")
if [ "$took_c" -lt 0 ]; then
  miss "(c) no takeover by B in the capture"
elif [ "$took_c" -gt "$DOWN_LIMIT_MS" ]; then
  miss "(c) takeover took $took_c ms (limit $DOWN_LIMIT_MS)"
fi
log "(c) A aborted (exit status $rc: SIGABRT), B took over $took_c ms after A's last advert (limit $DOWN_LIMIT_MS)"

# --- no client moved ---------------------------------------------------------------------------------
for f in "$OUT"/clients/c*/client.pid; do peer_stop "$(dirname "$f")" client; done
python3 scripts/fault-traffic.py check "$OUT"/clients/c*/answers >"$OUT/clients.txt" \
  || miss "a client was served by more than one gateway (it moved)"
worst=$(awk '{print $NF}' "$OUT/clients.txt" | sort -n | tail -n 1)
[ "$worst" -le "$GAP_LIMIT_MS" ] || miss "a client went $worst ms without an answer (limit $GAP_LIMIT_MS ms)"
sed 's/^/  /' "$OUT/clients.txt"
log "clients: every one served by one gateway throughout; longest gap $worst ms"
lab_finish "(stall: B $b_first ms after the command; SIGSTOP: $took_b ms; panic: $took_c ms)"
