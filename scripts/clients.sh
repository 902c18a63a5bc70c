# scripts/clients.sh: strongSwan on both sides of the appliance, for the lab tests that run IKEv2
# tunnels through it (e2e.sh, redirect-test.sh, pair-test.sh). Sourced after scripts/lib/labtest.sh
# (OUT, log, fail, miss, relevant, ctl, json); the peers themselves start through peers.sh.
#
# Configuration: swanctl_initiator (a client's swanctl.conf and strongswan.extra.conf),
# swanctl_responder (a gateway's), client_pki and ike_gateway_start (certificates from the lab PKI
# in PKI, made with peers.sh's pki_*), gw_of_vip and inner_of (the gateways' pools and inner
# addresses: gwI hands out 198.18.(127+I).0/24 and 2001:2:0:10(I-1)::/64; its inner address is .1
# and ::1 of those, on its lo).
# Clients: client_start, start_clients, sa_raw, sa_up, wait_up, ping_clients, client_verdict; the
# appliance's and the gateways' view: affinity_refresh, gateway_sas, sa_gateways; the captures:
# captures_check; a failure report part: ike_report.
#
# The test sets, before calling these: START_JOBS (charons started at once), PKI (the lab PKI's
# directory), PCAPS (the captures' directory), the associative arrays CL_NS[name] (the client's namespace), CL_DIR[name] (its
# charon directory, for peers.sh's charon_start) and, for ping_clients, CL_FAM[name] (4 or 6) and
# SA_VIP[name] (its virtual IP).

declare -A CL_NS CL_DIR CL_FAM SA_VIP PING AFF AFF_DIRECT ROUTE

# gw_of_vip ADDR: the gateway whose pool handed out this virtual IP.
gw_of_vip() {
  case $1 in
    198.18.128.* | 2001:2:0:100:*) echo gw1 ;;
    198.18.129.* | 2001:2:0:101:*) echo gw2 ;;
    198.18.130.* | 2001:2:0:102:*) echo gw3 ;;
    *) echo "-" ;;
  esac
}
# inner_of GW [FAMILY]: the gateway's address inside the tunnels (on its lo).
inner_of() {
  local i=${1#gw}
  if [ "${2:-4}" = 6 ]; then echo "2001:2:0:10$((i - 1))::1"; else echo "198.18.$((127 + i)).1"; fi
}

# swanctl_initiator DIR NAME LOCAL_ADDR REMOTE_ADDR VIPS REMOTE_TS [OPTION...]: DIR/swanctl.conf, a
# connection "vpn" (IKEv2, ESP in UDP, no MOBIKE, started at once and retried for ever) as
# NAME.vpnlb.test to vpn.vpnlb.test, and DIR/strongswan.extra.conf: fast retransmits (3 sends over
# ~4.4 s) and routes to the tunnel's remote side. Authentication by certificate (NAME.pem, CA
# ca.pem) unless psk=SECRET. Options: dpd (DPD every 2 s, restart on DPD or close), keepalive
# (NAT-T keepalives every second), nofrag (no RFC 7383: a longer IKE message is IP-fragmented),
# nofollow (charon.follow_redirects = no: no N(REDIRECT_SUPPORTED)).
swanctl_initiator() {
  local dir=$1 name=$2 local_addr=$3 remote=$4 vips=$5 ts=$6 opt
  local auth=pubkey certs=$'\n'"            certs = $name.pem" cacerts=$'\n'"            cacerts = ca.pem"
  local secrets="" frag=yes dpd_delay="" dpd_actions="" keep_alive="" follow=""
  shift 6
  for opt in "$@"; do
    case $opt in
      psk=*)
        auth=psk certs="" cacerts="" secrets=$(_swanctl_secrets "${opt#psk=}")
        ;;
      dpd)
        dpd_delay=$'\n'"        dpd_delay = 2s"
        dpd_actions=$'\n'"                dpd_action = restart"$'\n'"                close_action = start"
        ;;
      keepalive) keep_alive=$'\n'"    keep_alive = 1s" ;;
      nofrag) frag=no ;;
      nofollow) follow=$'\n'"    follow_redirects = no" ;;
      *) fail "swanctl_initiator: no option $opt" ;;
    esac
  done
  cat >"$dir/swanctl.conf" <<EOF
connections {
    vpn {
        version = 2
        local_addrs = $local_addr
        remote_addrs = $remote
        vips = $vips
        proposals = aes128-sha256-modp2048
        encap = yes
        mobike = no
        fragmentation = $frag$dpd_delay
        keyingtries = 0
        local {
            auth = $auth$certs
            id = $name.vpnlb.test
        }
        remote {
            auth = $auth
            id = vpn.vpnlb.test$cacerts
        }
        children {
            vpn {
                remote_ts = $ts
                esp_proposals = aes128-sha256
                start_action = start$dpd_actions
            }
        }
    }
}$secrets
EOF
  cat >"$dir/strongswan.extra.conf" <<EOF
charon {
    retransmit_timeout = 1
    retransmit_tries = 2
    retransmit_base = 1.4$keep_alive
    install_routes = yes$follow
}
EOF
}

# _swanctl_secrets SECRET: a swanctl.conf secrets section with SECRET as the IKE PSK for any peer
# (after a newline, to follow the connection).
_swanctl_secrets() {
  printf '\nsecrets {\n    ike-any {\n        secret = "%s"\n    }\n}\n' "$1"
}

# swanctl_responder DIR I LOCAL_TS [psk=SECRET] [v4only]: gateway gwI's DIR/swanctl.conf, a
# connection "rw" on its own addresses (198.19.0.1I, 2001:2:0:2::1I) as vpn.vpnlb.test with its
# pools (above), children LOCAL_TS; certificate gwI.pem (CA ca.pem) unless psk=SECRET. v4only: the
# IPv4 address and pool only. DIR/strongswan.extra.conf: NAT-T keepalives every second (the
# gateway sees the VIP's NAT: "local host is behind NAT"), then GW_CHARON_SETTINGS when the test
# sets it (strongswan.conf lines for the charon section, e.g. "dos_protection = no").
swanctl_responder() {
  local dir=$1 i=$2 local_ts=$3 opt
  local addrs="198.19.0.1$i, 2001:2:0:2::1$i" pools="pool4, pool6" auth=pubkey
  local certs=$'\n'"            certs = gw$i.pem" cacerts=$'\n'"            cacerts = ca.pem" secrets=""
  local pool6=$'\n'"    pool6 {"$'\n'"        addrs = 2001:2:0:10$((i - 1))::10-2001:2:0:10$((i - 1))::ff"$'\n'"    }"
  shift 3
  for opt in "$@"; do
    case $opt in
      psk=*)
        auth=psk certs="" cacerts="" secrets=$(_swanctl_secrets "${opt#psk=}")
        ;;
      v4only) addrs="198.19.0.1$i" pools=pool4 pool6="" ;;
      *) fail "swanctl_responder: no option $opt" ;;
    esac
  done
  cat >"$dir/swanctl.conf" <<EOF
connections {
    rw {
        version = 2
        local_addrs = $addrs
        pools = $pools
        proposals = aes128-sha256-modp2048
        mobike = no
        local {
            auth = $auth$certs
            id = vpn.vpnlb.test
        }
        remote {
            auth = $auth$cacerts
        }
        children {
            net {
                local_ts = $local_ts
                esp_proposals = aes128-sha256
            }
        }
    }
}
pools {
    pool4 {
        addrs = 198.18.$((127 + i)).10-198.18.$((127 + i)).250
    }$pool6
}$secrets
EOF
  printf 'charon {\n    keep_alive = 1s\n%s}\n' "${GW_CHARON_SETTINGS:+    $GW_CHARON_SETTINGS
}" >"$dir/strongswan.extra.conf"
}

# client_pki NAME KEY: NAME.pem for PKI/KEY.key (CN and SAN NAME.vpnlb.test) with the CA's
# certificate and the key in the client's charon directory (CL_DIR).
client_pki() {
  local name=$1 key=$2 dir=${CL_DIR[$1]}
  mkdir -p "$dir/x509" "$dir/x509ca" "$dir/private"
  pki_cert "$PKI" "$key" "$name" "CN=$name.vpnlb.test" "$name.vpnlb.test" || fail "pki: $name"
  cp "$PKI/$name.pem" "$dir/x509/"
  cp "$PKI/ca.pem" "$dir/x509ca/"
  cp "$PKI/$key.key" "$dir/private/client.pem"
}

# ike_gateway_start I: gwI's charon responder in vlb-gwI (state in OUT/gwI): its inner addresses
# on lo, a certificate for vpn.vpnlb.test (key PKI/gateway.key), swanctl_responder.
ike_gateway_start() {
  local i=$1 gw=gw$1 ns=vlb-gw$1 dir="$OUT/gw$1"
  mkdir -p "$dir/x509" "$dir/x509ca" "$dir/private"
  ip -n "$ns" addr add "$(inner_of "$gw")/32" dev lo
  ip -n "$ns" -6 addr add "$(inner_of "$gw" 6)/128" dev lo
  pki_cert "$PKI" gateway "$gw" "CN=$gw.vpnlb.test" vpn.vpnlb.test "$gw.vpnlb.test" || fail "pki: $gw"
  cp "$PKI/$gw.pem" "$dir/x509/"
  cp "$PKI/ca.pem" "$dir/x509ca/"
  cp "$PKI/gateway.key" "$dir/private/gateway.pem"
  swanctl_responder "$dir" "$i" "$(inner_of "$gw")/32, $(inner_of "$gw" 6)/128"
  # A subshell: the peers are no jobs of this shell (which would report a killed charon).
  (charon_start "$ns" "$dir") || fail "charon on $gw"
}

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

# sa_gateways ID [ADDR]: the gateways with an established IKE_SA of remote identity ID (from
# ADDR, when given) in their own lists (OUT/gwsas.txt, from gateway_sas), "gwN " each.
sa_gateways() {
  awk -v id="$1" -v a="${2:-}" '$2 == id && (a == "" || $3 == a) && $4 == "ESTABLISHED" { print $1 }' \
    "$OUT/gwsas.txt" | sort -u | tr '\n' ' '
}

# client_verdict NAME TEXT [REASON...]: a client check's verdict. With reasons, a miss ("TEXT:
# REASON...") with the client's logs in the failure report, and status 1.
client_verdict() {
  local name=$1 text=$2
  shift 2
  [ "$#" -gt 0 ] || return 0
  relevant "${CL_DIR[$name]}"
  miss "$text: $*"
  return 1
}

# ping_clients COUNT INTERVAL NAME...: every client pings its gateway's inner address through
# its tunnel (in parallel); PING[NAME] = "received/sent".
ping_clients() {
  local count=$1 interval=$2 name gw jobs=()
  shift 2
  for name in "$@"; do
    gw=$(gw_of_vip "${SA_VIP[$name]:--}")
    if [ "$gw" = "-" ]; then
      echo "0/$count" >"${CL_DIR[$name]}/ping.result"
      continue
    fi
    (
      out=$(timeout $((count + 10)) ip netns exec "${CL_NS[$name]}" ping -n -c "$count" \
        -i "$interval" -W 2 -s 1000 -I "${SA_VIP[$name]}" "$(inner_of "$gw" "${CL_FAM[$name]}")" 2>&1) || true
      echo "$out" >"${CL_DIR[$name]}/ping.log"
      rcv=$(sed -nE 's/.* ([0-9]+) received.*/\1/p' <<<"$out")
      echo "${rcv:-0}/$count" >"${CL_DIR[$name]}/ping.result"
    ) &
    jobs+=($!)
  done
  for gw in "${jobs[@]+"${jobs[@]}"}"; do wait "$gw" || true; done
  for name in "$@"; do
    PING[$name]=$(cat "${CL_DIR[$name]}/ping.result")
  done
}

# affinity_refresh: AFF[client address] = gateway, AFF_DIRECT[...] = true/false (a redirected
# client's entry), from vpnlbctl show affinity (also in OUT/affinity.json).
affinity_refresh() {
  local addr gw direct
  AFF=() AFF_DIRECT=()
  ctl show affinity >"$OUT/affinity.json" || { miss "vpnlbctl show affinity failed"; return 0; }
  while read -r addr gw direct; do
    AFF[$addr]=$gw AFF_DIRECT[$addr]=$direct
  done < <(json --each . client gateway direct <"$OUT/affinity.json")
}

# gateway_sas: OUT/gwsas.txt lines "GW REMOTE_ID REMOTE_HOST STATE" from every live gateway charon.
gateway_sas() {
  local i
  : >"$OUT/gwsas.txt"
  for i in 1 2 3; do
    [ -S "$OUT/gw$i/run/charon.vici" ] && kill -0 "$(cat "$OUT/gw$i/run/charon.pid" 2>/dev/null || echo 0)" 2>/dev/null \
      || continue
    timeout 5 ip netns exec "vlb-gw$i" swanctl --list-sas --raw \
      --uri "unix://$OUT/gw$i/run/charon.vici" >"$OUT/gw$i/sa.raw" 2>/dev/null || true
    python3 scripts/e2e.py gwsas "$OUT/gw$i/sa.raw" | sed "s/^/gw$i /" >>"$OUT/gwsas.txt"
  done
}

# captures_check: stops the captures PCAPS/gw1..3 (peers.sh's capture_start on every gateway's
# eth0) and checks them (e2e.py pcap, pcap-check) against OUT/expect.txt ("ADDR NAME GW [GW
# after it went down]") and OUT/times.txt, into OUT/evidence.txt: ROUTE[client address] = the
# gateways that saw it ("(!)" when wrong); each wrong one is a miss; M_PCAP 0 or 1.
captures_check() {
  local i a verdict route line
  log "captures: stopping tcpdump; which gateway saw which client"
  for i in 1 2 3; do peer_stop "$PCAPS" "gw$i"; done
  python3 scripts/e2e.py pcap --out "$OUT/pcap-summary.json" \
    gw1="$PCAPS/gw1.pcap" gw2="$PCAPS/gw2.pcap" gw3="$PCAPS/gw3.pcap"
  M_PCAP=0
  python3 scripts/e2e.py pcap-check --summary "$OUT/pcap-summary.json" --expect "$OUT/expect.txt" \
    --times "$OUT/times.txt" >"$OUT/evidence.txt" || M_PCAP=1
  ROUTE=()
  while read -r a verdict route _; do
    [ "$a" = MISS ] && continue
    ROUTE[$a]="$route"
    [ "$verdict" = ok ] || ROUTE[$a]="$route(!)"
  done <"$OUT/evidence.txt"
  if [ "$M_PCAP" -ne 0 ]; then
    while IFS= read -r line; do miss "captures: ${line#MISS }"; done < <(grep '^MISS' "$OUT/evidence.txt")
  fi
}

# ike_report: a failure report hook (lab_on_failure): the captures' verdicts, the logs of the
# clients marked relevant, and the gateways' charon logs.
ike_report() {
  local d f
  if [ -f "$OUT/evidence.txt" ]; then
    echo "--- captures: per client address, gateways and packets by class ---"
    cat "$OUT/evidence.txt"
  fi
  if [ -f "$OUT/relevant" ]; then
    for d in $(sort -u "$OUT/relevant" | head -n 8); do
      for f in charon.log openconnect.log; do
        [ -f "$d/$f" ] || continue
        echo "--- $d/$f (tail) ---"
        grep -v -e 'activating .* task' -e 'queueing .* task' "$d/$f" | tail -n 25 || true
      done
    done
  fi
  for d in "$OUT"/gw1 "$OUT"/gw2 "$OUT"/gw3; do
    [ -f "$d/charon.log" ] || continue
    echo "--- $d/charon.log (tail) ---"
    # Without the health probes' rejected IKE_SA_INITs.
    grep -v -e 'activating .* task' -e 'queueing .* task' -e 'INVAL_KE' -e 'MODP_768' \
      -e '198\.19\.0\.1\[' -e '198\.19\.0\.1 is initiating' -e 'IKE_SA (unnamed)' \
      -e 'endpoint changed' -e 'SA KE No \]' "$d/charon.log" | tail -n 15 || true
  done
}
