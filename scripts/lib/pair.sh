# scripts/lib/pair.sh: the lab's HA pair, for the lab tests that need one (sourced after
# scripts/lib/labtest.sh, once lab_begin and lab_bins ran). Appliance A runs conf/lab-pair-a.toml
# (priority 200, ports vlb-cl0/vlb-bk0), B conf/lab-pair-b.toml (priority 100, vlb-cl1/vlb-bk1),
# each with this run's control socket (OUT/a.sock, OUT/b.sock); `scripts/lab.sh up --pair` builds
# their ports.
#
#   pair_setup                  OUT/pair-a.toml, OUT/pair-b.toml (edit them before pair_start to
#                               change more); registers the failure report (both daemons' views
#                               in LAB_SHOW and their logs) and the exit hook (both daemons and
#                               the capture stopped)
#   pair_start S                vpnlbd S (a or b) in the background: PID_A or PID_B; its log is
#                               OUT/vpnlbd-S.log (appended: a restart adds to it), its final
#                               counters OUT/report-S.json
#   pair_wait_state S STATE LIMIT_S   until `show vrrp` on S says STATE (past LIMIT_S: a miss,
#                               status 1)
#   ctl_a ARGS, ctl_b ARGS      vpnlbctl --json on A's, B's socket
#   pair_capture_start, pair_capture_stop   VRRP on the client segment's bridge (vlb-csw br0)
#                               into OUT/vrrp.pcap (CAPTURE: its tcpdump)
#   pair_takeover PCAP [FROM_MS UNTIL_MS REF_MS]   from the adverts in PCAP between FROM_MS and
#                               UNTIL_MS (epoch ms; default: all): "TAKEOVER FLAPS B_FIRST A_PRIO
#                               A_LAST": TAKEOVER is ms from A's last advert to B's first after it
#                               (-1: none), FLAPS B's adverts before A's last, B_FIRST and A_LAST
#                               the ms from REF_MS to B's first advert after A's last and to A's
#                               last advert, A_PRIO the priority A's last advert carried.

readonly SOCK_A="$OUT/a.sock" SOCK_B="$OUT/b.sock"
readonly PAIR_A_IP=198.18.0.2 PAIR_B_IP=198.18.0.3
PID_A="" PID_B="" CAPTURE=""
ctl_a() { ctl_sock "$SOCK_A" --json "$@"; }
ctl_b() { ctl_sock "$SOCK_B" --json "$@"; }

pair_setup() {
  local s
  for s in a b; do lab_config "conf/lab-pair-$s.toml" "$OUT/pair-$s.toml" "$OUT/$s.sock"; done
  LAB_SHOW=("show vrrp" "show sync" "show stats" "show drops")
  lab_on_failure _pair_report
  lab_on_exit _pair_stop
}

_pair_report() {
  local s
  for s in a b; do lab_report_daemon "vpnlbd $s" "$OUT/$s.sock" "$OUT/vpnlbd-$s.log"; done
}

_pair_stop() {
  local p
  for p in $PID_A $PID_B; do
    kill "$p" 2>/dev/null && timeout 10 tail --pid="$p" -f /dev/null
  done
  pair_capture_stop
}

pair_start() {
  local s=$1
  "$VPNLBD" --config "$OUT/pair-$s.toml" --run-for-s $((LIMIT_S + 30)) >"$OUT/report-$s.json" 2>>"$OUT/vpnlbd-$s.log" &
  if [ "$s" = a ]; then PID_A=$!; else PID_B=$!; fi
}

pair_wait_state() {
  local s=$1 want=$2 limit=$3 t0 st
  t0=$(date +%s)
  while :; do
    st=$(timeout 5 "$VPNLBCTL" --socket "$OUT/$s.sock" --json show vrrp 2>/dev/null | json state 2>/dev/null || true)
    [ "$st" = "$want" ] && return 0
    if [ $(($(date +%s) - t0)) -ge "$limit" ]; then
      miss "vpnlbd $s is ${st:-unreachable}, not $want, after $limit s"
      return 1
    fi
    sleep 0.1
  done
}

pair_capture_start() {
  ip netns exec vlb-csw tcpdump -i br0 -n -U -w "$OUT/vrrp.pcap" 'ip proto 112' >"$OUT/tcpdump.log" 2>&1 &
  CAPTURE=$!
  # tcpdump says "listening on" once it captures.
  for _ in $(seq 1 50); do
    grep -q "listening on" "$OUT/tcpdump.log" 2>/dev/null && return 0
    sleep 0.05
  done
}

pair_capture_stop() {
  if [ -n "$CAPTURE" ]; then
    kill "$CAPTURE" 2>/dev/null
    wait "$CAPTURE" 2>/dev/null || true
    CAPTURE=""
  fi
}

pair_takeover() {
  tshark -r "$1" -T fields -e frame.time_epoch -e ip.src -e vrrp.prio -Y vrrp 2>/dev/null \
    | python3 -c '
import sys
a_ip, b_ip, lo, hi, ref = sys.argv[1], sys.argv[2], *(float(x) / 1000 for x in sys.argv[3:])
adverts = []
for line in sys.stdin:
    t, src, prio = line.split()[:3]
    if lo <= float(t) <= hi:
        adverts.append((float(t), src, int(prio.split(",")[0])))
a = [(t, p) for t, s, p in adverts if s == a_ip]
last_a, prio_a = max(a) if a else (None, -1)
b_after = [t for t, s, _ in adverts if s == b_ip and last_a is not None and t > last_a]
flaps = sum(1 for t, s, _ in adverts if s == b_ip and last_a is not None and t < last_a)
ms = lambda x: round(x * 1000)
print(ms(min(b_after) - last_a) if b_after else -1, flaps,
      ms(min(b_after) - ref) if b_after else -1, prio_a,
      ms(last_a - ref) if last_a is not None else -1)' \
      "$PAIR_A_IP" "$PAIR_B_IP" "${2:-0}" "${3:-99999999999999}" "${4:-0}"
}
