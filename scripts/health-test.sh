#!/usr/bin/env bash
# Live test of the control plane's exception path and gateway health checks, with real servers
# in the lab of scripts/lab.sh (needs root: network namespaces).
#
# gw1-gw3 run strongSwan's charon (IKE on UDP 500), openssl s_server for TLS (TCP 443) and DTLS
# (UDP 443), and a TCP listener on 2222; vpnlbd checks all four on every gateway every 500 ms
# (rise 2, fall 2, timeout 300 ms) from its own address 198.19.0.1, through its exception path.
# Then, one server at a time: stop it, see the gateway go down within fall x interval (+ the
# probe timeout), see new clients avoid it and its clients move, start it again, see the gateway
# come back within rise x interval. Measured times are printed; everything is torn down on exit.
# HEALTH_BIN_DIR=DIR (or LAB_BIN_DIR) runs DIR/vpnlbd and DIR/vpnlbctl instead of building.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib/labtest.sh
source scripts/lib/labtest.sh

lab_begin health-test out/health-test
readonly INTERVAL_MS=500 TIMEOUT_MS=300 RISE=2 FALL=2
# Slack for scheduling on a loaded 2-core machine, on top of what the check itself needs.
readonly SLACK_MS=700
LAB_SHOW=("show health" "show gateways")
charon_report() {
  echo "--- charon log gw1 (tail) ---"
  tail -n 10 "$OUT/gw1/charon.log" || true
}
lab_on_failure charon_report

lab_need prometheus promtool curl
lab_bins HEALTH_BIN_DIR
lab_up --clients 0

# The lab config with four checks per gateway and a control socket of this test's own.
lab_config conf/lab.toml "$OUT/lab-health.toml"
python3 - "$OUT/lab-health.toml" "$INTERVAL_MS" "$TIMEOUT_MS" "$RISE" "$FALL" <<'EOF'
import sys
path, interval, timeout, rise, fall = sys.argv[1:]
text = open(path).read()
text = text[: text.index("[[service.health_check]]")].rstrip() + "\n"
for kind, extra in (("ike", ""), ("tls", ""), ("dtls", ""), ("tcp", "port = 2222\n")):
    text += (f'\n[[service.health_check]]\ntype = "{kind}"\n{extra}interval = "{interval}ms"\n'
             f'timeout = "{timeout}ms"\nrise = {rise}\nfall = {fall}\n')
open(path, "w").write(text)
EOF

for i in 1 2 3; do
  gw=gw$i addr=198.19.0.1$i
  charon_start "vlb-$gw" "$OUT/$gw"
  tls_server_start "vlb-$gw" "$addr" 443 "$OUT/$gw"
  tls_server_start "vlb-$gw" "$addr" 443 "$OUT/$gw" dtls
  tcp_listener_start "vlb-$gw" "$addr" 2222 "$OUT/$gw"
done

lab_daemon_start "$OUT/lab-health.toml" 120
# A Prometheus server beside the gateways scrapes the daemon's /metrics ([metrics] listen, on the
# appliance's backend address) for the whole run.
lab_prometheus 198.19.0.1:9469

# health GW: the gateway's health as `show gateways` reports it.
health() { gw_field "$1" health; }

# clients FIRST N: N bare IKE_SA_INIT headers (28 bytes; the appliance drops what is not IKE on
# the IKE port) from 198.18.64.FIRST.. (behind the upstream router) to the VIP, one per client.
clients() {
  ip netns exec vlb-up python3 - "$1" "$2" <<'EOF'
import socket, sys
first, n = int(sys.argv[1]), int(sys.argv[2])
for i in range(first, first + n):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((f"198.18.{64 + i // 250}.{1 + i % 250}", 500))
    ike = b"hlthtest" + bytes(8) + bytes([0, 0x20, 34, 0x08]) + bytes(4) + (28).to_bytes(4, "big")
    s.sendto(ike, ("198.18.0.100", 500))
    s.close()
EOF
}

# new_clients: "gw1=N gw2=N gw3=N"
new_clients() { ctl show gateways | json --each . gateway new_clients | tr ' ' = | paste -sd ' '; }

# on_gateway GW: how many affinity entries name GW.
on_gateway() { ctl show affinity | json '*.gateway' | tr ' ' '\n' | grep -cx "$1" || true; }

echo "health-test: exception path: the appliance's kernel (vlb-app) reaches gw1, gw1 reaches it"
ip netns exec vlb-app ping -c 2 -i 0.2 -W 1 198.19.0.11 >"$OUT/ping-gw1.log" || fail "ping gw1 from vlb-app"
ip netns exec vlb-app ping -c 2 -i 0.2 -W 1 2001:2:0:2::12 >"$OUT/ping-gw2.log" || fail "ping gw2 (IPv6) from vlb-app"
ip netns exec vlb-app timeout 5 python3 -c '
import socket
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("198.19.0.1", 7022)); s.listen(1); s.settimeout(4)
c, (a, _) = s.accept(); print("accepted from", a, c.recv(64).decode())
' >"$OUT/listener.log" 2>&1 &
listener=$!
sleep 0.3
ip netns exec vlb-gw1 timeout 5 python3 -c '
import socket
socket.create_connection(("198.19.0.1", 7022), timeout=3).sendall(b"hello")
' || fail "TCP from gw1 to the appliance's own address"
wait "$listener" || fail "the kernel in vlb-app did not accept gw1's connection"
grep -q "accepted from 198.19.0.11 hello" "$OUT/listener.log" || fail "listener log: $(cat "$OUT/listener.log")"

echo "health-test: every gateway comes up (ike, tls, dtls, tcp)"
for gw in gw1 gw2 gw3; do wait_health "$gw" up 5000 || fail "$gw not up in 5 s"; done
ctl show health >"$OUT/health-up.json"

clients 0 90
sleep 0.3
echo "health-test: 90 clients: $(new_clients)"
gw1_clients=$(on_gateway gw1)
[ "$gw1_clients" -gt 0 ] || fail "no client on gw1 to move"

down_limit=$((FALL * INTERVAL_MS + TIMEOUT_MS + SLACK_MS))
up_limit=$((RISE * INTERVAL_MS + TIMEOUT_MS + SLACK_MS))
results=()
next=1000
for step in "gw1 charon ike" "gw2 tls tls" "gw3 dtls dtls" "gw1 tcp tcp"; do
  read -r gw peer check <<<"$step"
  peer_stop "$OUT/$gw" "$peer"
  wait_health "$gw" down "$down_limit" || fail "$gw down ($check) too late"
  down_ms=$WAITED_MS
  before=$(new_clients)
  clients "$next" 60
  next=$((next + 60))
  sleep 0.3
  after=$(new_clients)
  b=$(tr ' ' '\n' <<<"$before" | grep "^$gw=" | cut -d= -f2)
  a=$(tr ' ' '\n' <<<"$after" | grep "^$gw=" | cut -d= -f2)
  [ "$a" -eq "$b" ] || fail "$gw is down ($check) but took $((a - b)) new clients ($before -> $after)"
  if [ "$gw" = gw1 ] && [ "$check" = ike ]; then
    # gw1's earlier clients come back: they move to a healthy gateway.
    clients 0 90
    sleep 0.3
    left=$(on_gateway gw1)
    [ "$left" -eq 0 ] || fail "$left clients still on gw1 after it went down"
    echo "health-test: gw1's $gw1_clients clients moved to gw2/gw3 on their next packet"
  fi
  case $peer in
    charon) charon_start "vlb-$gw" "$OUT/$gw" ;;
    tls) tls_server_start "vlb-$gw" "198.19.0.1${gw#gw}" 443 "$OUT/$gw" ;;
    dtls) tls_server_start "vlb-$gw" "198.19.0.1${gw#gw}" 443 "$OUT/$gw" dtls ;;
    tcp) tcp_listener_start "vlb-$gw" "198.19.0.1${gw#gw}" 2222 "$OUT/$gw" ;;
  esac
  wait_health "$gw" up "$up_limit" || fail "$gw up ($check) too late"
  up_ms=$WAITED_MS
  results+=("$(printf '%-4s %-5s down after %5d ms (limit %d)   up after %5d ms (limit %d)' \
    "$gw" "$check" "$down_ms" "$down_limit" "$up_ms" "$up_limit")")
done

echo "health-test: a UDP flood at the appliance's own client-side address; health must hold"
transitions_before=$(ctl show gateways | json '*.health_transitions:sum')
ip netns exec vlb-up timeout 30 python3 - <<'EOF2' || fail "flood"
import socket, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("198.18.64.77", 0))
end, sent = time.monotonic() + 4, 0
while time.monotonic() < end and sent < 2_000_000:
    for _ in range(1000):
        s.sendto(b"flood" * 20, ("198.18.0.1", 9))
    sent += 1000
print(f"health-test: flood sent {sent} datagrams in 4 s")
EOF2
sleep 0.5
# Policed by the workers' budget for the class (exception_classes.policed.other) and, for what
# gets past the workers, by the exception path's rate_pps (exception.policed): with one worker
# whose budget equals rate_pps the second may never fire.
read -r worker_policed path_policed to_kernel urgent_lost \
  <<<"$(ctl show stats | json exception_classes.policed.other exception.policed exception.to_kernel io.to_control_urgent_dropped)"
policed=$((worker_policed + path_policed))
transitions_after=$(ctl show gateways | json '*.health_transitions:sum')
echo "health-test: policed $policed frames, $to_kernel reached the kernel, urgent frames lost $urgent_lost"
[ "$policed" -gt 0 ] || fail "the flood was not policed"
[ "$urgent_lost" -eq 0 ] || fail "$urgent_lost urgent frames lost to the flood"
[ "$transitions_after" -eq "$transitions_before" ] || fail "health flapped under the flood"
for gw in gw1 gw2 gw3; do [ "$(health "$gw")" = up ] || fail "$gw down after the flood"; done

echo "health-test: reload without the TCP check; then with gw2 drained by the operator and its TLS server down"
python3 - "$OUT/lab-health.toml" <<'EOF2'
import sys
path = sys.argv[1]
text = open(path).read()
cut = text.index('[[service.health_check]]\ntype = "tcp"')
open(path, "w").write(text[:cut].rstrip() + "\n")
EOF2
ctl reload >"$OUT/reload.json" || fail "reload: $(cat "$OUT/reload.json")"
grep -q '"health_checks": *"9 checks"' "$OUT/reload.json" || fail "reload: $(cat "$OUT/reload.json")"
[ "$(ctl show health | json .:len)" = 9 ] \
  || fail "show health after reload: not 9 checks"
for gw in gw1 gw2 gw3; do [ "$(health "$gw")" = up ] || fail "$gw not up after reload"; done
# Health and the operator's state are separate: a drained gateway that fails and recovers is
# still drained.
ctl gateway gw2 drain >/dev/null
peer_stop "$OUT/gw2" tls
wait_health gw2 down "$down_limit" || fail "gw2 down (tls, drained) too late"
tls_server_start vlb-gw2 198.19.0.12 443 "$OUT/gw2"
wait_health gw2 up "$up_limit" || fail "gw2 up (tls, drained) too late"
state=$(gw_field gw2 state)
[ "$state" = draining ] || fail "gw2 is $state after recovering, not draining as the operator set it"
ctl gateway gw2 enable >/dev/null

echo "health-test: reload a new backend address and a new route onto the exception path, then back"
cp "$OUT/lab-health.toml" "$OUT/lab-health.before.toml"
python3 - "$OUT/lab-health.toml" <<'EOF2'
import sys
path = sys.argv[1]
text = open(path).read()
old = 'addresses = ["198.19.0.1/24", "2001:2:0:2::1/64"]'
assert old in text, "the backend's addresses moved"
text = text.replace(old, 'addresses = ["198.19.0.1/24", "2001:2:0:2::1/64", "198.19.0.9/24"]')
route = '[[route]]\nprefix = "198.18.128.0/24"\nvia = "198.18.0.254"\n\n'
text = text.replace("[[route]]", route + "[[route]]", 1)
open(path, "w").write(text)
EOF2
ctl reload >"$OUT/reload-tap.json" || fail "reload (TAP): $(cat "$OUT/reload-tap.json")"
# Captured first: `grep -q` in a pipeline under pipefail would fail on ip's SIGPIPE.
addrs=$(ip -n vlb-app -o addr show dev vlb-backend)
grep -q ' 198.19.0.9/24 ' <<<"$addrs" || fail "the reloaded address is not on the backend TAP: $addrs"
route=$(ip -n vlb-app route show 198.18.128.0/24)
grep -q 'via 198.18.0.254 dev vlb-client' <<<"$route" \
  || fail "the reloaded route is not on the client TAP: $route"
ip netns exec vlb-gw1 ping -c 1 -W 2 198.19.0.9 >/dev/null || fail "the reloaded address does not answer ping"
cp "$OUT/lab-health.before.toml" "$OUT/lab-health.toml"
ctl reload >"$OUT/reload-tap-back.json" || fail "reload back: $(cat "$OUT/reload-tap-back.json")"
addrs=$(ip -n vlb-app -o addr show dev vlb-backend)
! grep -q ' 198.19.0.9/' <<<"$addrs" || fail "the removed address is still on the backend TAP: $addrs"
grep -q ' 198.19.0.1/24 ' <<<"$addrs" || fail "the backend TAP lost its address: $addrs"
[ -z "$(ip -n vlb-app route show 198.18.128.0/24)" ] || fail "the removed route is still on the client TAP"

ctl show health >"$OUT/health-end.json"
ctl_human stats prometheus >"$OUT/metrics.txt"
grep -q '^vpnlb_gateway_healthy{service="vpn",gateway="gw1"} 1' "$OUT/metrics.txt" \
  || fail "Prometheus: gw1 not healthy"
grep -q '^vpnlb_gateway_health_transitions_total{service="vpn",gateway="gw1"} 4' "$OUT/metrics.txt" \
  || fail "Prometheus: gw1 should have 4 health transitions"
grep -q '^vpnlb_health_probes_total{service="vpn",gateway="gw3",check="dtls:443",result="alive"} [1-9]' \
  "$OUT/metrics.txt" || fail "Prometheus: no answered DTLS probe of gw3"

echo "health-test: /metrics over HTTP, and what Prometheus stored of this run"
scrape 198.19.0.1:9469 >"$OUT/metrics-http.txt" || fail "GET http://198.19.0.1:9469/metrics from vlb-mon"
promtool check metrics <"$OUT/metrics-http.txt" >"$OUT/promtool-metrics.log" 2>&1 \
  || fail "promtool check metrics: $(head -n 5 "$OUT/promtool-metrics.log")"
python3 scripts/monitoring-check.py scrape "$OUT/metrics-http.txt" \
  || fail "monitoring/: the dashboard or the alert rules query metrics the daemon does not export"
# Health changed moments ago (gw2's TLS server came back): what follows needs a later scrape.
prom_wait_scrape
prom_expect 'up{job="vpnlb"}' 1
prom_expect 'vpnlb_rx_packets_total > bool 0' 1
prom_expect 'sum(vpnlb_gateway_new_clients_total) >= bool 90' 1
# gw1 went down (its IKE daemon, then its TCP listener stopped) and came back; all three are
# healthy now; gw2 was drained by the operator for a while.
prom_expect 'min_over_time(vpnlb_gateway_healthy{gateway="gw1"}[10m])' 0
prom_expect 'count(vpnlb_gateway_healthy == 1)' 3
prom_expect 'max_over_time(vpnlb_gateway_admin_state{gateway="gw2",state="draining"}[10m])' 1
prom_expect 'vpnlb_gateway_admin_state{gateway="gw2",state="up"}' 1
prom_expect 'vpnlb_config_reloads_total{result="applied"}' 3
# The scrapes themselves, as the daemon counted them.
prom_expect 'vpnlb_metrics_http_responses_total{code="200"} > bool 5' 1
# Every alert rule evaluates on the live series without an error.
rules=$(ip netns exec "$LAB_PROM_NS" curl -sf --max-time 5 "http://$LAB_PROM_ADDR/api/v1/rules")
python3 -c '
import json, sys
rules = [r for g in json.loads(sys.argv[1])["data"]["groups"] for r in g["rules"]]
bad = [r["name"] + ": " + str(r.get("lastError")) for r in rules if r.get("health") != "ok"]
assert len(rules) == 8 and not bad, (len(rules), bad)
' "$rules" || fail "Prometheus: alert rules not all healthy: $rules"
echo "health-test: Prometheus scraped $(prom_value 'count({job="vpnlb"})') series; 8 alert rules evaluate"

echo "health-test: stop server -> gateway down -> no new clients -> start -> up" \
  "(interval ${INTERVAL_MS} ms, timeout ${TIMEOUT_MS} ms, rise $RISE, fall $FALL):"
printf '  %s\n' "${results[@]}"
echo "health-test: OK"
