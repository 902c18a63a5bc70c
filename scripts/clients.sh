# Sourced by the lab tests that run strongSwan initiators in client namespaces (e2e.sh,
# redirect-test.sh): their misses, and starting and waiting for the clients' charons.
#
# The test sets, before calling these: TEST_NAME (for messages), OUT (its output directory),
# START_JOBS (charons started at once), the associative arrays CL_NS[name] (the client's
# namespace) and CL_DIR[name] (its charon directory, for peers.sh's charon_start), and
# gw_of_vip ADDR (the gateway whose pool handed out a virtual IP).

# miss WHAT: a check that did not hold; the run goes on, and ends red (kept in a file, so that
# subshells count too).
miss() {
  echo "$*" >>"$OUT/misses"
  echo "$TEST_NAME: MISS: $*" >&2
}
misses() { if [ -f "$OUT/misses" ]; then wc -l <"$OUT/misses"; else echo 0; fi; }
# relevant DIR: a peer directory whose logs a failure report should show.
relevant() { echo "$1" >>"$OUT/relevant"; }

# client_start NAME: charon (which initiates at once); a failure is noted in DIR/start.failed.
client_start() {
  local name=$1
  charon_start "${CL_NS[$name]}" "${CL_DIR[$name]}" >"${CL_DIR[$name]}/start.log" 2>&1 \
    || echo failed >"${CL_DIR[$name]}/start.failed"
}

# start_clients NAME...: START_JOBS at a time (waiting on its own jobs only: the daemon and the
# gateways' peers are background jobs of this shell too).
start_clients() {
  local name jobs=()
  for name in "$@"; do
    client_start "$name" &
    jobs+=($!)
    if [ "${#jobs[@]}" -ge "$START_JOBS" ]; then
      wait "${jobs[0]}" || true
      jobs=("${jobs[@]:1}")
    fi
  done
  for name in "${jobs[@]+"${jobs[@]}"}"; do wait "$name" || true; done
  for name in "$@"; do
    if [ -f "${CL_DIR[$name]}/start.failed" ]; then
      relevant "${CL_DIR[$name]}"
      miss "$name: charon did not start: $(tail -n 3 "${CL_DIR[$name]}/start.log" | tr '\n' ' ')"
    fi
  done
}

# sa_raw NAME: the client's IKE_SAs (swanctl --list-sas --raw) into DIR/sa.raw.
sa_raw() {
  local d=${CL_DIR[$1]}
  timeout 5 ip netns exec "${CL_NS[$1]}" swanctl --list-sas --raw \
    --uri "unix://$d/run/charon.vici" >"$d/sa.raw" 2>/dev/null || true
}

# sa_up NAME [NOT_GW]: its IKE_SA is established with an installed CHILD_SA and a virtual IP
# (from a pool other than NOT_GW's, when given).
sa_up() {
  local d=${CL_DIR[$1]} line vip
  sa_raw "$1"
  line=$(grep -E 'state=ESTABLISHED .*local-vips=\[[0-9a-f.:]+\].*child-sas \{.*state=INSTALLED' \
    "$d/sa.raw" | head -n 1) || return 1
  [ -n "${2:-}" ] || return 0
  vip=$(sed -E 's/.*local-vips=\[([0-9a-f.:]+)\].*/\1/' <<<"$line")
  [ "$(gw_of_vip "$vip")" != "$2" ]
}

# wait_up LIMIT_S NOT_GW NAME...: waits until every client is up (sa_up NAME NOT_GW); a client
# still down at the limit is a miss.
wait_up() {
  local limit=$1 not_gw=$2 t0 name pending=()
  shift 2
  t0=$(date +%s)
  pending=("$@")
  while [ "${#pending[@]}" -gt 0 ]; do
    local still=()
    for name in "${pending[@]}"; do
      sa_up "$name" "$not_gw" || still+=("$name")
    done
    pending=("${still[@]+"${still[@]}"}")
    [ "${#pending[@]}" -eq 0 ] && break
    if [ $(($(date +%s) - t0)) -ge "$limit" ]; then
      for name in "${pending[@]}"; do
        relevant "${CL_DIR[$name]}"
        miss "$name: no established IKE_SA + CHILD_SA${not_gw:+ off $not_gw} within $limit s"
      done
      break
    fi
    sleep 0.5
  done
}
