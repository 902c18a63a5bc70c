#!/usr/bin/env bash
# The attack test (issue 15): a spoofed-source flood against the VIP while real clients come and
# go, in the lab of scripts/lab.sh (needs root).
#
#   scripts/attack-test.sh    (OUT=out/attack by default; ATTACK_LIMIT_S bounds the whole run,
#                              300 s; ATTACK_BIN_DIR=DIR (or LAB_BIN_DIR) runs DIR/vpnlbd and
#                              DIR/vpnlbctl instead of building; ATTACK_FLOOD_S, the flood's
#                              duration, 40 s)
#
# vpnlbd runs conf/lab.toml with a small affinity table ([affinity] capacity = CAPACITY, 1024 per
# worker, max_unconfirmed = 256; unconfirmed_timeout = 5 s; the health check's fall 10, so that the
# gateways' own load on a 2-core machine moves no client). The gateways answer everything: gw1-gw3
# run strongSwan responders with dos_protection = no (no cookies: every IKE_SA_INIT gets a full
# answer with a responder SPI; short DH exponents keep that affordable) and openssl s_server on
# TCP 443 (their kernels answer every SYN; tcp_synack_retries = 1 keeps the run short).
# 1. Before the flood: N_OLD strongSwan initiators (vlb-c1..) up, pinging through their tunnels,
#    their affinity entries established (confirmed) on their gateways.
# 2. The flood: from the upstream router's namespace (vlb-up, an AF_PACKET socket), 10 x CAPACITY
#    IKE_SA_INITs to VIP:500 and as many TCP SYNs to VIP:443, each from its own spoofed source
#    (198.19.128.0/18 and 198.19.192.0/18: nobody's, and no route leads back there), paced over
#    FLOOD_S seconds. The gateways' answers go nowhere (the router has no route for them).
#    Meanwhile N_NEW new strongSwan initiators start one after another, and N_TLS openssl s_client
#    handshakes to VIP:443, from their own on-link addresses. `vpnlbctl show stats` every 2 s.
# 3. After it, the checks: every pre-flood client kept its IKE_SA, pings, and its entry is still
#    established on the same gateway (0 established clients evicted; the confirmed occupancy never
#    fell below them); at least 99 % of the new clients (all of them, below 100) got IKE_SA,
#    CHILD_SA and a ping through, and every TLS handshake completed, each with an established
#    entry; no packet dropped as table-full, no insert refused; clients.established counts every
#    legitimate client; the flood's entries were inserted and evicted (affinity.evicted_unconfirmed
#    at least 90 % of the flood minus the cap) and never established (the confirmed occupancy is
#    the legitimate clients); within unconfirmed_timeout + 10 s of the flood's end the unconfirmed
#    occupancy is 0 (affinity.expired counts the last ones) and the confirmed one the legitimate
#    clients.
# Prints the occupancy over time, a table of the clients, one line per check and `attack: OK`, or
# the misses and the failure report (vpnlbctl views, the vpnlbd log, charon logs); exits 1 on any
# miss. Everything is torn down on exit, failure included.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib/labtest.sh
source scripts/lib/labtest.sh
# shellcheck source=scripts/clients.sh
source scripts/clients.sh

lab_begin attack out/attack
readonly HELPER=scripts/attack-test.py PKI="$OUT/pki"
readonly CAPACITY=1024 MAX_UNCONFIRMED=256 UNCONFIRMED_S=5
readonly FLOOD=$((10 * CAPACITY)) FLOOD_S=${ATTACK_FLOOD_S:-40}
readonly IKE_FIRST=198.19.128.0 SYN_FIRST=198.19.192.0
readonly N_OLD=5 N_NEW=15 N_TLS=3
readonly VIP4=198.18.0.100 APPLIANCE_MAC=02:00:00:00:01:01
readonly START_JOBS=5
LAB_SHOW=("show stats" "show gateways" "show drops" "show health")
lab_on_failure ike_report
lab_on_failure timeline_report

timeline_report() {
  [ -f "$OUT/timeline.txt" ] || return 0
  echo "--- occupancy and counters during the run ($OUT/timeline.txt) ---"
  cat "$OUT/timeline.txt"
}

lab_need ip swanctl pki openssl /usr/bin/python3 /usr/lib/ipsec/charon
lab_limit "${ATTACK_LIMIT_S:-300}"
lab_bins ATTACK_BIN_DIR

# stats_of FIELD...: fields of a fresh show stats (0 for those this vpnlbd lacks).
stats_of() {
  local f="$OUT/stats.$BASHPID.json"
  ctl show stats >"$f" || echo '{}' >"$f"
  python3 "$HELPER" stats "$f" "$@"
}
readonly TL_FIELDS=(affinity_occupancy.confirmed affinity_occupancy.unconfirmed counters.affinity.inserts
  counters.affinity.evicted_unconfirmed counters.affinity.expired counters.drops.table-full
  counters.clients.established)

# sample LABEL: one line of OUT/timeline.txt.
sample() {
  local line
  line=$(stats_of "${TL_FIELDS[@]}")
  printf '%-8s %6.1f %s\n' "$1" "$(($(date +%s%N) - T0))e-9" "$line" >>"$OUT/timeline.txt"
}

# entry NAME: "GATEWAY CONFIRMED" of the client's affinity entry ("- -" without one).
entry() {
  ctl show affinity "${CL_ADDR[$1]}" >"${CL_DIR[$1]}/affinity.json" 2>/dev/null || { echo "- -"; return 0; }
  python3 "$HELPER" entry "${CL_DIR[$1]}/affinity.json"
}

declare -A CL_ADDR SA_IKE SA_CHILD SA_SPI
# sa_summary NAME...: SA_IKE/SA_CHILD/SA_VIP/SA_SPI from a fresh --list-sas (e2e.py sa).
sa_summary() {
  local name f ike child vip spi
  declare -A by_file=()
  for name in "$@"; do
    sa_raw "$name"
    by_file[${CL_DIR[$name]}/sa.raw]=$name
  done
  while read -r f ike child vip spi _; do
    name=${by_file[$f]}
    SA_IKE[$name]=$ike SA_CHILD[$name]=$child SA_VIP[$name]=$vip SA_SPI[$name]=$spi
  done < <(python3 scripts/e2e.py sa "${!by_file[@]}")
}

# --- the lab, the gateways, vpnlbd -------------------------------------------------------------
NCLIENTS=$((N_OLD + N_NEW + N_TLS))
log "lab: $NCLIENTS client namespaces, the gateways"
lab_up --clients "$NCLIENTS"

log "PKI: lab CA, gateway and client certificates"
pki_ca "$PKI" || fail "pki: CA ($(tail -n 2 "$PKI/pki.log"))"
pki_key "$PKI" gateway || fail "pki: gateway key"
pki_key "$PKI" client || fail "pki: client key"

log "gateways: charon (no cookies: every IKE_SA_INIT answered in full), openssl s_server on 443"
# No cookies; DH exponents of the group's strength rather than full length (ANSI X9.42), and IKE
# logging at level 1: the flood's 10 x CAPACITY full answers cost the gateways' charons a
# fraction of the 2-core machine, not all of it (overloaded, they would miss health probes).
GW_CHARON_SETTINGS="dos_protection = no
    dh_exponent_ansi_x9_42 = no
    filelog {
        log {
            ike = 1
        }
    }"
for i in 1 2 3; do
  ike_gateway_start "$i"
  tls_server_start "vlb-gw$i" "198.19.0.1$i" 443 "$OUT/gw$i/tls"
  # A SYN-ACK to a spoofed source is sent again once, not five times over 31 s: the run stays
  # short (the retransmissions would only keep those unconfirmed entries alive longer).
  ip netns exec "vlb-gw$i" sh -c 'echo 1 >/proc/sys/net/ipv4/tcp_synack_retries'
done

CONFIG=$OUT/attack.toml
lab_config conf/lab.toml "$CONFIG"
python3 - "$CONFIG" "$CAPACITY" "$MAX_UNCONFIRMED" "$UNCONFIRMED_S" <<'EOF'
import re, sys
path, cap, maxu, unconf = sys.argv[1:]
text = open(path).read()
for pat, new in ((r'(?m)^capacity = \d+$', f'capacity = {cap}'),
                 (r'(?m)^max_unconfirmed = \d+$', f'max_unconfirmed = {maxu}'),
                 (r'(?m)^unconfirmed_timeout = ".*"$', f'unconfirmed_timeout = "{unconf}s"')):
    text, n = re.subn(pat, new, text, count=1)
    assert n == 1, f"{path}: no line {pat}"
# The health check: down after 10 missed probes rather than 3 (the gateways' charons answer the
# flood on a shared 2-core machine; what this test checks is the table, not their health).
text, n = re.subn(r'(?m)^fall = \d+$', 'fall = 10', text, count=1)
assert n == 1, f"{path}: no health check fall"
open(path, "w").write(text)
EOF
read -r INTERVAL_MS TIMEOUT_MS RISE _ < <(lab_health_params "$CONFIG")
log "vpnlbd: conf/lab.toml with [affinity] capacity = $CAPACITY, max_unconfirmed = $MAX_UNCONFIRMED, unconfirmed_timeout = ${UNCONFIRMED_S}s"
lab_daemon_start "$CONFIG" $((LIMIT_S + 30))
for gw in gw1 gw2 gw3; do wait_health "$gw" up $((RISE * INTERVAL_MS + TIMEOUT_MS + 3000)) || true; done
[ "$(misses)" -eq 0 ] || fail "the gateways did not come up"

# --- the clients -------------------------------------------------------------------------------
OLD=() NEW=() TLS=()
for ((i = 1; i <= NCLIENTS; i++)); do
  name=c$i
  CL_NS[$name]=vlb-c$i CL_DIR[$name]="$OUT/clients/$name" CL_FAM[$name]=4 CL_ADDR[$name]=198.18.0.$((10 + i))
  if [ "$i" -le $((N_OLD + N_NEW)) ]; then
    client_pki "$name" client
    swanctl_initiator "${CL_DIR[$name]}" "$name" "${CL_ADDR[$name]}" "$VIP4" 0.0.0.0 198.18.128.0/22 dpd
    if [ "$i" -le "$N_OLD" ]; then OLD+=("$name"); else NEW+=("$name"); fi
  else
    mkdir -p "${CL_DIR[$name]}"
    TLS+=("$name")
  fi
done

log "before the flood: ${#OLD[@]} strongSwan initiators (${OLD[*]})"
start_clients "${OLD[@]}"
wait_up 60 "" "${OLD[@]}"
sa_summary "${OLD[@]}"
# One ping first, not counted: a tunnel's first packet may wait on neighbor resolution somewhere
# on its way (not what this test is about); then 3 that must all come back.
ping_clients 1 0.2 "${OLD[@]}"
ping_clients 3 0.2 "${OLD[@]}"
declare -A GW_BEFORE=() SPI_BEFORE=()
for name in "${OLD[@]}"; do
  read -r g c < <(entry "$name")
  GW_BEFORE[$name]=$g SPI_BEFORE[$name]=${SA_SPI[$name]}
  bad=()
  [ "${SA_IKE[$name]}/${SA_CHILD[$name]}" = ESTABLISHED/INSTALLED ] || bad+=("SAs ${SA_IKE[$name]}/${SA_CHILD[$name]}")
  [ "${PING[$name]}" = 3/3 ] || bad+=("ping ${PING[$name]}")
  [ "$c" = yes ] || bad+=("affinity entry ${g}, confirmed: $c")
  [ "$g" = "$(gw_of_vip "${SA_VIP[$name]}")" ] || bad+=("affinity gateway $g, virtual IP ${SA_VIP[$name]}")
  client_verdict "$name" "before the flood: $name (${CL_ADDR[$name]})" "${bad[@]+"${bad[@]}"}" || true
done
[ "$(misses)" -eq 0 ] || fail "the clients before the flood are not all up and established"
: >"$OUT/timeline.txt"
sample before
read -r BASE_INSERTS BASE_EVICTED BASE_ESTABLISHED < <(stats_of counters.affinity.inserts \
  counters.affinity.evicted_unconfirmed counters.clients.established)

# --- the flood, and new clients arriving meanwhile ------------------------------------------------
log "flood: $FLOOD IKE_SA_INITs ($IKE_FIRST+) and $FLOOD SYNs ($SYN_FIRST+) to $VIP4 over ${FLOOD_S}s from vlb-up; ${#NEW[@]} new initiators and ${#TLS[@]} TLS handshakes meanwhile"
ip netns exec vlb-up timeout $((FLOOD_S + 30)) /usr/bin/python3 "$HELPER" flood eth0 "$APPLIANCE_MAC" \
  "$VIP4" "$IKE_FIRST" "$SYN_FIRST" "$FLOOD" "$FLOOD_S" >"$OUT/flood.log" 2>&1 &
FLOOD_PID=$!
# The clock starts with the first frame (building 2 x FLOOD frames takes a moment).
for _ in $(seq 1 200); do
  grep -q '^sending' "$OUT/flood.log" 2>/dev/null && break
  kill -0 "$FLOOD_PID" 2>/dev/null || fail "the flood sender did not start: $(tail -n 3 "$OUT/flood.log")"
  sleep 0.1
done
T_FLOOD_MS=$(now_ms)
(
  while kill -0 "$FLOOD_PID" 2>/dev/null; do
    sample flood
    sleep 2
  done
) &
SAMPLER=$!

# tls_client NAME: one TLS handshake to VIP:443 (openssl s_client), its verdict in DIR/tls.result.
tls_client() {
  local d=${CL_DIR[$1]}
  if timeout 20 ip netns exec "${CL_NS[$1]}" openssl s_client -connect "$VIP4:443" -brief \
    </dev/null >"$d/s_client.log" 2>&1 && grep -q 'CONNECTION ESTABLISHED' "$d/s_client.log"; then
    echo ok >"$d/tls.result"
  else
    echo failed >"$d/tls.result"
  fi
}

# Arrivals from 2 s in until 8 s before the flood ends: a new initiator every STEP ms, a TLS
# handshake at a quarter, half and three quarters of the flood.
STEP_MS=$(((FLOOD_S - 10) * 1000 / N_NEW))
arrivals=()
k=0
for ((j = 0; j < N_NEW; j++)); do
  at_ms=$((2000 + j * STEP_MS))
  while [ $(($(now_ms) - T_FLOOD_MS)) -lt "$at_ms" ]; do sleep 0.1; done
  client_start "${NEW[$j]}" &
  arrivals+=($!)
  if [ "$k" -lt "${#TLS[@]}" ] && [ $((j * 4)) -ge $(((k + 1) * N_NEW)) ]; then
    tls_client "${TLS[$k]}" &
    arrivals+=($!)
    k=$((k + 1))
  fi
done
for ((; k < ${#TLS[@]}; k++)); do tls_client "${TLS[$k]}" & arrivals+=($!); done
for p in "${arrivals[@]}"; do wait "$p" || true; done
for name in "${NEW[@]}"; do
  if [ -f "${CL_DIR[$name]}/start.failed" ]; then
    relevant "${CL_DIR[$name]}"
    miss "$name: charon did not start: $(tail -n 3 "${CL_DIR[$name]}/start.log" | tr '\n' ' ')"
  fi
done
wait "$FLOOD_PID" || miss "the flood sender failed: $(tail -n 3 "$OUT/flood.log")"
wait "$SAMPLER" || true
T_END_MS=$(now_ms)
sample end
log "flood done: $(tail -n 1 "$OUT/flood.log")"
# The flood's entries expire: the unconfirmed occupancy back to 0 within the timeout (+ slack).
while :; do
  sample expiry
  read -r occ_u < <(tail -n 1 "$OUT/timeline.txt" | awk '{ print $4 }')
  EXPIRY_MS=$(($(now_ms) - T_END_MS)) occ_u_end=$occ_u
  [ "$occ_u" -eq 0 ] || [ "$EXPIRY_MS" -ge $(((UNCONFIRMED_S + 10) * 1000)) ] && break
  sleep 0.5
done

# --- after the flood ---------------------------------------------------------------------------
# The new clients have 30 s more to come up (not wait_up: a client missing here is not a miss by
# itself; below, at least 99 % of them must be up).
t_up=$(date +%s)
while [ $(($(date +%s) - t_up)) -lt 30 ]; do
  down=0
  for name in "${NEW[@]}"; do sa_up "$name" || down=$((down + 1)); done
  [ "$down" -eq 0 ] && break
  sleep 1
done
ALL=("${OLD[@]}" "${NEW[@]}")
sa_summary "${ALL[@]}"
ping_clients 1 0.2 "${NEW[@]}"
ping_clients 3 0.2 "${ALL[@]}"
declare -A GW=() CONF=()
for name in "${ALL[@]}" "${TLS[@]}"; do
  read -r g c < <(entry "$name")
  GW[$name]=$g CONF[$name]=$c
done

m_old=0
for name in "${OLD[@]}"; do
  bad=()
  [ "${SA_IKE[$name]}/${SA_CHILD[$name]}" = ESTABLISHED/INSTALLED ] || bad+=("SAs ${SA_IKE[$name]}/${SA_CHILD[$name]}")
  [ "${SA_SPI[$name]}" = "${SPI_BEFORE[$name]}" ] || bad+=("a new IKE_SA (${SPI_BEFORE[$name]} -> ${SA_SPI[$name]})")
  [ "${PING[$name]}" = 3/3 ] || bad+=("ping ${PING[$name]}")
  [ "${GW[$name]}" = "${GW_BEFORE[$name]}" ] || bad+=("affinity ${GW_BEFORE[$name]} -> ${GW[$name]}")
  [ "${CONF[$name]}" = yes ] || bad+=("entry no longer established")
  client_verdict "$name" "established before the flood: $name (${CL_ADDR[$name]})" "${bad[@]+"${bad[@]}"}" || m_old=$((m_old + 1))
done
new_up=0
declare -A NEW_BAD=()
for name in "${NEW[@]}"; do
  bad=()
  [ "${SA_IKE[$name]}/${SA_CHILD[$name]}" = ESTABLISHED/INSTALLED ] || bad+=("SAs ${SA_IKE[$name]}/${SA_CHILD[$name]}")
  [ "${PING[$name]}" = 3/3 ] || bad+=("ping ${PING[$name]}")
  [ "${GW[$name]}" = "$(gw_of_vip "${SA_VIP[$name]}")" ] || bad+=("affinity ${GW[$name]}, virtual IP ${SA_VIP[$name]}")
  [ "${CONF[$name]}" = yes ] || bad+=("entry not established")
  if [ "${#bad[@]}" -eq 0 ]; then new_up=$((new_up + 1)); else NEW_BAD[$name]="${bad[*]}"; fi
done
tls_ok=0
for name in "${TLS[@]}"; do
  r=$(cat "${CL_DIR[$name]}/tls.result" 2>/dev/null || echo none)
  if [ "$r" = ok ] && [ "${CONF[$name]}" = yes ]; then tls_ok=$((tls_ok + 1)); else
    miss "TLS client $name (${CL_ADDR[$name]}): handshake $r, entry ${GW[$name]} established: ${CONF[$name]}"
  fi
done
# At least 99 % of the new clients (rounded up: all of them below 100).
need_new=$(((99 * N_NEW + 99) / 100))
if [ "$new_up" -lt "$need_new" ]; then
  for name in "${!NEW_BAD[@]}"; do
    relevant "${CL_DIR[$name]}"
    miss "new client $name (${CL_ADDR[$name]}): ${NEW_BAD[$name]}"
  done
fi

LEGIT=$((N_OLD + N_NEW + N_TLS))
sample final
read -r occ_c occ_u < <(tail -n 1 "$OUT/timeline.txt" | awk '{ print $3, $4 }')
TRANSITIONS=$(ctl show gateways | json '*.health_transitions:sum' || echo "?")
read -r INSERTS CONFIRMED_N EXPIRED EVICTED INSERT_FULL REMOVED TABLE_FULL ESTABLISHED MISMATCH LEARN_FULL \
  < <(stats_of counters.affinity.inserts counters.affinity.confirmed counters.affinity.expired \
    counters.affinity.evicted_unconfirmed counters.affinity.insert_full counters.affinity.removed \
    counters.drops.table-full counters.clients.established counters.clients.proof_mismatch \
    counters.clients.learn_failed_table_full)
LEARNED=$(stats_of counters.clients.learned_from_gateway)
max_c=$(awk '$1 != "expiry" { if ($3 > m) m = $3 } END { print m + 0 }' "$OUT/timeline.txt")
min_c=$(awk 'NR == 1 || $3 < m { m = $3 } END { print m + 0 }' "$OUT/timeline.txt")
max_u=$(awk '{ if ($4 > m) m = $4 } END { print m + 0 }' "$OUT/timeline.txt")
flood_inserts=$((INSERTS - BASE_INSERTS))
flood_evicted=$((EVICTED - BASE_EVICTED))
want_evicted=$(((2 * FLOOD - MAX_UNCONFIRMED) * 9 / 10))

# --- the report ----------------------------------------------------------------------------------
echo
echo "occupancy and counters (label, s, confirmed, unconfirmed, inserts, evicted_unconfirmed, expired, table-full drops, established):"
sed 's/^/  /' "$OUT/timeline.txt"
echo
printf '%-5s %-6s %-13s %-7s %-11s %-9s %-5s %-8s %s\n' client role address gateway ike_sa child_sa ping entry "gateway before"
for name in "${OLD[@]}" "${NEW[@]}"; do
  role=new
  [ -n "${GW_BEFORE[$name]:-}" ] && role=before
  printf '%-5s %-6s %-13s %-7s %-11s %-9s %-5s %-8s %s\n' "$name" "$role" "${CL_ADDR[$name]}" "${GW[$name]}" \
    "${SA_IKE[$name]}" "${SA_CHILD[$name]}" "${PING[$name]}" \
    "$([ "${CONF[$name]}" = yes ] && echo est. || echo "${CONF[$name]}")" "${GW_BEFORE[$name]:--}"
done
for name in "${TLS[@]}"; do
  printf '%-5s %-6s %-13s %-7s %-11s %-9s %-5s %-8s %s\n' "$name" tls "${CL_ADDR[$name]}" "${GW[$name]}" \
    "TLS:443" "$(cat "${CL_DIR[$name]}/tls.result" 2>/dev/null || echo -)" - \
    "$([ "${CONF[$name]}" = yes ] && echo est. || echo "${CONF[$name]}")" -
done
echo

# check TEST TEXT: TEST (a [[ ]] expression, evaluated) holds, or TEXT is a miss.
check() {
  if eval "[[ $1 ]]"; then echo "OK    $2"; else echo "MISS  $2"; miss "$2"; fi
}
check '$m_old -eq 0' "established clients kept: $((N_OLD - m_old))/$N_OLD pre-flood clients kept their IKE_SA, ping and established entry on the same gateway; confirmed occupancy never below them (min $min_c)"
[ "$min_c" -ge "$N_OLD" ] || miss "the confirmed occupancy fell to $min_c, below the $N_OLD established clients"
check '$new_up -ge $need_new' "new clients admitted during the flood: $new_up/$N_NEW up (IKE_SA, CHILD_SA, ping, established entry; need $need_new)"
check '$tls_ok -eq $N_TLS' "TLS handshakes during the flood: $tls_ok/$N_TLS, each entry established by its ACK"
check '$TABLE_FULL -eq 0 && $INSERT_FULL -eq 0 && $LEARN_FULL -eq 0' "nobody refused: drops.table-full $TABLE_FULL, affinity.insert_full $INSERT_FULL, clients.learn_failed_table_full $LEARN_FULL"
check '$ESTABLISHED -ge $LEGIT' "clients.established $ESTABLISHED (legitimate clients $LEGIT; $((ESTABLISHED - BASE_ESTABLISHED)) during and after the flood), affinity.confirmed $CONFIRMED_N, clients.proof_mismatch $MISMATCH"
check '$flood_inserts -ge 2*FLOOD && $flood_evicted -ge $want_evicted' "flood counted: $(sed -n 's/^\(ike [0-9]* syn [0-9]*\).*/\1/p' "$OUT/flood.log") sent; affinity.inserts +$flood_inserts (>= $((2 * FLOOD)); $LEARNED of them learned from a gateway's answer that came after its entry was evicted), evicted_unconfirmed +$flood_evicted (>= $want_evicted, 90 % of the flood minus the cap $MAX_UNCONFIRMED); unconfirmed occupancy at most $max_u"
check '$max_c -le $LEGIT' "flood never established: confirmed occupancy at most $max_c during the flood (legitimate clients: $LEGIT; capacity $CAPACITY)"
check '$occ_u_end -eq 0 && ${occ_u:-1} -eq 0 && ${occ_c:-0} -eq $LEGIT && $EXPIRED -gt 0' "flood expired: unconfirmed occupancy $occ_u_end $(printf '%.1f' "${EXPIRY_MS}e-3") s after the flood (unconfirmed_timeout ${UNCONFIRMED_S}s), affinity.expired $EXPIRED, removed $REMOVED; at the end unconfirmed ${occ_u:-?}, confirmed ${occ_c:-?} (the $LEGIT legitimate clients)"
echo "      gateway health transitions during the run: $TRANSITIONS (the lab's IKE health check, fall 10)"
log "done"
lab_finish "($LEGIT legitimate clients, flood 2 x $FLOOD over ${FLOOD_S}s, capacity $CAPACITY)"
