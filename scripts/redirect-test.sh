#!/usr/bin/env bash
# The lab test of the IKEv2 redirect mode (RFC 5685): vpnlbd with conf/lab-redirect.toml on
# net_af_packet in the lab of scripts/lab.sh, strongSwan on both sides (needs root).
#
#   scripts/redirect-test.sh   (OUT=out/redirect by default; REDIRECT_LIMIT_S bounds the whole
#                               run, 420 s; REDIRECT_BIN_DIR=DIR (or LAB_BIN_DIR) runs DIR/vpnlbd
#                               and DIR/vpnlbctl instead of building; REDIRECT_START_JOBS client charons start at
#                               once, 4; REDIRECT_CONFIG=FILE instead of conf/lab-redirect.toml)
#
# gw1-gw3 run charon responders (certificates, an IPv4 and an IPv6 pool per gateway,
# kernel-libipsec, so every tunnel is ESP in UDP 4500) and scripts/gw-load-report.py, which
# reports their established IKE_SAs to the appliance (198.19.0.1:5685) every second.
# 1. Pre-load: 6 clients (vlb-c1..c6) dial gw1's own address 198.19.0.11, routed by the appliance
#    (no VIP); gw1's report must say 6 (show gateways reported_tunnels).
# 2. 20 clients (c7..c26) dial the VIP 198.18.0.100. Each is redirected (charon: "redirected to
#    198.19.0.1x"), establishes its IKE_SA and CHILD_SA with the gateway named in the redirect (the
#    IKE_SA's remote address; the pool of its virtual IP; that gateway's own IKE_SA list, and no
#    other's), pings that gateway's inner address through the tunnel, and has a "direct" affinity
#    entry for that gateway. The gateway's charon logs "client got redirected from 198.18.0.100".
# 3. The spread follows the load reports: gw1, which started with 6, gets at most 5 of the 20, and
#    the gateways' final tunnel totals differ by at most 3; then every gateway's report matches
#    its own IKE_SA count, and `stats prometheus` gives the same redirects and reported tunnels
#    as show gateways.
# 4. IPv6: 3 clients (c33..c35, 2001:2:0:1::43-45) dial the IPv6 VIP 2001:2:0:1::100. Each is
#    redirected to a gateway's IPv6 address (charon: "redirected to 2001:2:0:2::1x"; the REDIRECT's
#    GW identity is of type 2) and checked as in step 2 (the IKE_SA's remote address is that IPv6
#    address, the inner IPv6 pools are 2001:2:0:100::/64 gw1, :101:: gw2, :102:: gw3, ping6 to the
#    gateway's inner 2001:2:0:10x::1); the gateways' tunnel totals still differ by at most 3. c34
#    and c35 turn IKE fragmentation off (their keys and the gateways' are RSA 3072, so both IKE_AUTH
#    messages exceed 1500 bytes): their IKE_AUTH exchanges are IP-fragmented both ways through the
#    appliance's routing path, and the gateway's capture must show non-first IPv6 fragments from
#    and to the client. c33 keeps IKE fragmentation (RFC 7383).
# 5. gw3's charon is SIGKILLed; once show gateways says gw3 down, 4 clients (c27..c30) dial the VIP,
#    and one of gw3's clients again (a fresh charon; its direct affinity entry names gw3): all are
#    redirected to gw1 or gw2 and get up there; gw3's redirect count does not move.
# 6. Fallback: 2 clients with charon.follow_redirects = no (c31, c32: charon then sends no
#    N(REDIRECT_SUPPORTED)) establish through the VIP in NAT mode (their IKE_SA's remote address
#    is the VIP); show redirect counts them under fallbacks "no-redirect-supported".
# 7. Bad input from vlb-c36 (scapy): 5 malformed IKE_SA_INIT requests (truncated header; with
#    N(REDIRECT_SUPPORTED): header length != UDP length, payload chain past the end, no nonce, a
#    payload length below its header): none answered (tcpdump in c36), show redirect "malformed"
#    grows by 5; then one well-formed request is answered with an RFC 5685 N(REDIRECT) (IPv4
#    gateway identity of gw1 or gw2, our nonce echoed), and one to the IPv6 VIP likewise (IPv6
#    gateway identity, type 2). A replayed and a forged load report from gw2 are rejected and
#    change nothing.
# tcpdump on every gateway's eth0 for the whole run: each client's packets reach its gateway only.
#
# Prints a table (client, step, address, gateway in the redirect, gateway of the IKE_SA, IKE_SA,
# CHILD_SA, ping, affinity, gateways in the captures), show gateways and show redirect, one line
# per step and `redirect-test: OK`, or the misses, vpnlbctl show stats/gateways/redirect/drops,
# the vpnlbd log and the relevant peer logs; exits 1 on any miss. Everything is torn down on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib/labtest.sh
source scripts/lib/labtest.sh
# shellcheck source=scripts/clients.sh
source scripts/clients.sh

lab_begin redirect-test out/redirect
CONFIG=${REDIRECT_CONFIG:-conf/lab-redirect.toml}
readonly HELPER=scripts/redirect-test.py PKI="$OUT/pki" PCAPS="$OUT/pcap"
readonly VIP4=198.18.0.100 VIP6=2001:2:0:1::100 SERVICE=vpn
readonly N_PRE=6 N_VIP=20 N_LATE=4 N_FB=2 N_V6=3
readonly LAB_CLIENTS=$((N_PRE + N_VIP + N_LATE + N_FB + N_V6 + 1))
readonly BAD_NS=vlb-c$LAB_CLIENTS BAD_ADDR=198.18.0.$((10 + LAB_CLIENTS))
readonly BAD_ADDR6=2001:2:0:1::$((10 + LAB_CLIENTS))
# Slack on a loaded 2-core machine, on top of what a health check itself needs.
readonly SLACK_MS=1500
readonly START_JOBS=${REDIRECT_START_JOBS:-4}
LAB_SHOW=("show stats" "show gateways" "show redirect" "show drops")
RESULTS=()

# The failure report, after the daemon's and clients.sh's ike_report: the load reporters' errors.
reporter_report() {
  local d
  for d in "$OUT"/gw1 "$OUT"/gw2 "$OUT"/gw3; do
    if [ -s "$d/reporter.err" ]; then
      echo "--- $d/reporter.err (tail) ---"
      tail -n 5 "$d/reporter.err"
    fi
  done
}
lab_on_failure ike_report
lab_on_failure reporter_report

lab_need ip ethtool tcpdump swanctl pki python3 /usr/lib/ipsec/charon
/usr/bin/python3 -c 'import scapy' 2>/dev/null || fail "needs scapy for /usr/bin/python3 (python3-scapy)"
[ -f "$CONFIG" ] || fail "no $CONFIG"
# The whole run is bounded, whatever hangs.
lab_limit "${REDIRECT_LIMIT_S:-420}"

# --- gateways and clients -------------------------------------------------------------------------

declare -A CL_NS CL_ADDR CL_DIR CL_STEP CL_FAM CL_FRAG RED_ADDR RED_GW RED_N INIT_RS SA_IKE SA_CHILD SA_VIP
declare -A SA_REMOTE PING AFF AFF_DIRECT
readonly -A GW_ADDR=([gw1]=198.19.0.11 [gw2]=198.19.0.12 [gw3]=198.19.0.13)
readonly -A GW_ADDR6=([gw1]=2001:2:0:2::11 [gw2]=2001:2:0:2::12 [gw3]=2001:2:0:2::13)

# gw_of_addr ADDR: the gateway with this address, either family ("VIP" for a VIP, "-" otherwise).
gw_of_addr() {
  case $1 in
    198.19.0.11 | 2001:2:0:2::11) echo gw1 ;;
    198.19.0.12 | 2001:2:0:2::12) echo gw2 ;;
    198.19.0.13 | 2001:2:0:2::13) echo gw3 ;;
    "$VIP4" | "$VIP6") echo VIP ;; *) echo "-" ;;
  esac
}
# gw_addr_of GW FAMILY: the gateway's own address of that family (4 or 6).
gw_addr_of() { if [ "$2" = 6 ]; then echo "${GW_ADDR6[$1]:-?}"; else echo "${GW_ADDR[$1]:-?}"; fi; }
# add_client NAME I STEP REMOTE [nofollow|nofrag]: a strongSwan initiator in vlb-cI, IPv6 when
# REMOTE is (then from 2001:2:0:1::(10+I), with an RSA 3072 key). nofollow: follow_redirects = no;
# nofrag: fragmentation = no (no RFC 7383: an IKE message longer than the MTU is IP-fragmented).
add_client() {
  local name=$1 i=$2 step=$3 remote=$4 opt=${5:-}
  local addr=198.18.0.$((10 + $2)) fam=4 vip=0.0.0.0 ts=198.18.128.0/22 key=client frag=yes
  if [[ $remote == *:* ]]; then
    addr=2001:2:0:1::$((10 + i)) fam=6 vip=:: ts=2001:2:0:100::/62 key=client6
  fi
  if [ "$opt" = nofrag ]; then frag=no; fi
  CL_NS[$name]=vlb-c$i CL_ADDR[$name]=$addr CL_DIR[$name]="$OUT/clients/$name" CL_STEP[$name]=$step
  CL_FAM[$name]=$fam CL_FRAG[$name]=$frag
  client_pki "$name" "$key"
  # No DPD: when gw3's charon dies, its clients keep their dead IKE_SAs instead of dialling the
  # VIP again (strongSwan restarts a redirected IKE_SA at the configured address, the VIP).
  swanctl_initiator "${CL_DIR[$name]}" "$name" "$addr" "$remote" "$vip" "$ts" ${opt:+"$opt"}
}

# evidence NAME...: from each client's charon log and a fresh --list-sas: RED_ADDR and RED_GW (the
# address and gateway of the last "redirected to ADDR"), RED_N (how many), INIT_RS (did its first
# IKE_SA_INIT carry N(REDIRECT_SUPPORTED)), SA_IKE, SA_CHILD, SA_VIP, SA_REMOTE (the IKE_SA's
# remote address).
evidence() {
  local name files=() f ike child vip remote d last
  declare -A by_file=()
  for name in "$@"; do
    d=${CL_DIR[$name]}
    # charon 5.9.8, on an IKE_SA_INIT response with N(REDIRECT): "[IKE] redirected to 198.19.0.12"
    # (an IPv6 GW identity: "[IKE] redirected to 2001:2:0:2::12")
    last=$(sed -nE 's/.*\[IKE\] redirected to ([0-9a-f.:]+)$/\1/p' "$d/charon.log" | tail -n 1)
    RED_ADDR[$name]=${last:--}
    RED_N[$name]=$(grep -c '\[IKE\] redirected to ' "$d/charon.log" || true)
    RED_GW[$name]=$(if [ -n "$last" ]; then gw_of_addr "$last"; else echo "-"; fi)
    if grep -m 1 'generating IKE_SA_INIT request 0' "$d/charon.log" | grep -q 'N(REDIR_SUP)'; then
      INIT_RS[$name]=yes
    else
      INIT_RS[$name]=no
    fi
    sa_raw "$name"
    files+=("$d/sa.raw")
    by_file[$d/sa.raw]=$name
  done
  while read -r f ike child vip remote _; do
    name=${by_file[$f]}
    SA_IKE[$name]=$ike SA_CHILD[$name]=$child SA_VIP[$name]=$vip SA_REMOTE[$name]=$remote
  done < <(python3 "$HELPER" sa "${files[@]}")
}

# wave LIMIT_S LABEL NAME...: the clients start (START_JOBS at a time) and must be up within
# LIMIT_S; then what check_clients reads: evidence, 3 pings through each tunnel, show affinity,
# the gateways' own IKE_SA lists. With a LABEL, a log line says how long they took to come up.
wave() {
  local limit=$1 label=$2 t
  shift 2
  t=$(date +%s)
  start_clients "$@"
  wait_up "$limit" "" "$@"
  if [ -n "$label" ]; then
    log "$label: IKE_SAs and CHILD_SAs up $(($(date +%s) - t)) s after the first start; pinging through every tunnel"
  fi
  evidence "$@"
  ping_clients 3 0.2 "$@"
  affinity_refresh
  gateway_sas
}

# gw_tunnels GW: established IKE_SAs in that gateway's own list (after gateway_sas).
gw_tunnels() { awk -v g="$1" '$1 == g && $4 == "ESTABLISHED"' "$OUT/gwsas.txt" | wc -l; }

# gateways_refresh: GWF_<field>[GW] from show gateways (redirects, reported, age, load, health, routed).
declare -A GWF_HEALTH GWF_RED GWF_REP GWF_AGE GWF_LOAD GWF_RTO GWF_RFROM
gateways_refresh() {
  local g h r rep age load rto rfrom
  ctl show gateways >"$OUT/gateways.json" || { echo "show gateways failed" >&2; return 1; }
  while read -r g h r rep age load rto rfrom; do
    GWF_HEALTH[$g]=$h GWF_RED[$g]=$r GWF_REP[$g]=$rep GWF_AGE[$g]=$age GWF_LOAD[$g]=$load
    GWF_RTO[$g]=$rto GWF_RFROM[$g]=$rfrom
  done < <(python3 "$HELPER" gateways "$OUT/gateways.json")
}
# redirect_refresh: RD_MALFORMED RD_NORS RD_ACCEPTED RD_REJECTED from show redirect.
redirect_refresh() {
  RD_MALFORMED=- RD_NORS=- RD_ACCEPTED=- RD_REJECTED=-
  ctl show redirect >"$OUT/redirect.json" 2>&1 || { echo "show redirect failed: $(head -c 200 "$OUT/redirect.json")" >&2; return 1; }
  read -r RD_MALFORMED RD_NORS RD_ACCEPTED RD_REJECTED < <(python3 "$HELPER" redirect "$OUT/redirect.json" "$SERVICE")
}
num() { [[ $1 =~ ^[0-9]+$ ]] && echo "$1" || echo -1; }

# check_clients LABEL KIND NAME...: KIND "direct" (dialled gw1's address), "redirect" (via the
# VIP, redirected) or "fallback" (via the VIP, NAT mode). Each client is up (IKE_SA, CHILD_SA,
# virtual IP), on the expected gateway by its IKE_SA's remote address, its virtual IP's pool and
# the gateways' own IKE_SA lists (there and nowhere else), and its ping went through. Redirected
# clients: one redirect in their log, to the gateway's own address of the client's family, the
# IKE_SA with exactly that address, a "direct" affinity entry for that gateway.
# Fallback clients: no N(REDIRECT_SUPPORTED), no redirect, the VIP as remote address, a NAT
# affinity entry for their gateway. Returns the number of clients with a miss.
check_clients() {
  local label=$1 kind=$2 name gw pool where want n=0
  shift 2
  for name in "$@"; do
    local bad=() a=${CL_ADDR[$name]}
    pool=$(gw_of_vip "${SA_VIP[$name]}")
    [ "${SA_IKE[$name]}" = ESTABLISHED ] || bad+=("IKE_SA ${SA_IKE[$name]}")
    [ "${SA_CHILD[$name]}" = INSTALLED ] || bad+=("CHILD_SA ${SA_CHILD[$name]}")
    case $kind in
      direct)
        gw=gw1
        [ "${RED_N[$name]}" = 0 ] || bad+=("redirected (${RED_N[$name]}x) though it dialled gw1")
        [ "${SA_REMOTE[$name]}" = "${GW_ADDR[gw1]}" ] || bad+=("IKE_SA with ${SA_REMOTE[$name]}")
        ;;
      redirect)
        gw=${RED_GW[$name]}
        [ "${INIT_RS[$name]}" = yes ] || bad+=("its IKE_SA_INIT had no N(REDIRECT_SUPPORTED)")
        [ "${RED_N[$name]}" = 1 ] || bad+=("${RED_N[$name]} redirects in its log")
        [ "$gw" != "-" ] || { bad+=("not redirected"); gw=$pool; }
        want=$(gw_addr_of "$gw" "${CL_FAM[$name]}")
        [ "${RED_ADDR[$name]}" = "$want" ] \
          || bad+=("redirected to ${RED_ADDR[$name]}, not $gw's IPv${CL_FAM[$name]} address $want")
        [ "${SA_REMOTE[$name]}" = "$want" ] || bad+=("IKE_SA with ${SA_REMOTE[$name]}, redirected to $want")
        [ "${AFF[$a]:-none}/${AFF_DIRECT[$a]:-}" = "$gw/true" ] \
          || bad+=("affinity ${AFF[$a]:-none} direct=${AFF_DIRECT[$a]:--}")
        ;;
      fallback)
        gw=$pool
        [ "${INIT_RS[$name]}" = no ] || bad+=("its IKE_SA_INIT carried N(REDIRECT_SUPPORTED)")
        [ "${RED_N[$name]}" = 0 ] || bad+=("redirected to ${RED_GW[$name]}")
        [ "${SA_REMOTE[$name]}" = "$VIP4" ] || bad+=("IKE_SA with ${SA_REMOTE[$name]}, not the VIP")
        [ "${AFF[$a]:-none}/${AFF_DIRECT[$a]:-}" = "$gw/false" ] \
          || bad+=("affinity ${AFF[$a]:-none} direct=${AFF_DIRECT[$a]:--}")
        ;;
    esac
    [ "$pool" = "$gw" ] || bad+=("virtual IP ${SA_VIP[$name]} from ${pool}'s pool")
    where=$(sa_gateways "$name.vpnlb.test" "$a")
    [ "$where" = "$gw " ] || bad+=("gateways with its IKE_SA: ${where:-none}")
    [ "${PING[$name]:-0/3}" = 3/3 ] || bad+=("ping ${PING[$name]:-none}")
    CL_GW[$name]=$gw
    client_verdict "$name" "$label: $name ($a, gateway $gw)" "${bad[@]+"${bad[@]}"}" || n=$((n + 1))
  done
  return "$n"
}
declare -A CL_GW

# got_redirected ARRAY VIP STEP NAME...: ARRAY[GW] = how often GW's charon logged "client got
# redirected from VIP"; at least once per client (NAME...) whose log says it was redirected to GW,
# or a miss. Returns the number of misses.
declare -A GOT_FROM GOT_FROM6
got_redirected() {
  local -n got=$1
  local vip=$2 step=$3 g n name bad=0
  shift 3
  for g in gw1 gw2 gw3; do
    got[$g]=$(grep -c "client got redirected from $vip" "$OUT/$g/charon.log" || true)
    n=0
    for name in "$@"; do [ "${RED_GW[$name]}" = "$g" ] && n=$((n + 1)); done
    [ "${got[$g]}" -ge "$n" ] \
      || { miss "$step: $g's charon logged ${got[$g]} 'client got redirected from $vip' for $n redirected clients"; bad=$((bad + 1)); }
  done
  return "$bad"
}

# redirected_wave LIMIT_S STEP ARRAY VIP NAME...: the clients dial VIP (wave) and are checked as
# redirected ones (check_clients), and each gateway's charon saw its redirected clients come
# (got_redirected). Returns the number of misses.
redirected_wave() {
  local limit=$1 step=$2 array=$3 vip=$4 m=0
  shift 4
  wave "$limit" "$step" "$@"
  check_clients "$step" redirect "$@" || m=$?
  got_redirected "$array" "$vip" "$step" "$@" || m=$((m + $?))
  return "$m"
}

# per_gateway NAME...: "gw1 N, gw2 N, gw3 N" by CL_GW.
per_gateway() {
  local name c1=0 c2=0 c3=0
  for name in "$@"; do
    case ${CL_GW[$name]:-} in gw1) c1=$((c1 + 1)) ;; gw2) c2=$((c2 + 1)) ;; gw3) c3=$((c3 + 1)) ;; esac
  done
  echo "gw1 $c1, gw2 $c2, gw3 $c3"
}

# ---------------------------------------------------------------------------------------------
lab_bins REDIRECT_BIN_DIR

log "lab: $LAB_CLIENTS client namespaces, the gateways"
lab_up --clients "$LAB_CLIENTS"

# RSA 3072 for the gateways and the IPv6 clients: their IKE_AUTH messages then exceed 1500 bytes
# over IPv6 (with RSA 2048 both stay under it), so those that turn IKE fragmentation off are
# IP-fragmented both ways. The IPv4 clients keep RSA 2048 and IKE fragmentation.
log "PKI: lab CA, gateway and client certificates (RSA 3072 gateways and IPv6 clients, 2048 the rest)"
pki_ca "$PKI" || fail "pki: CA ($(tail -n 2 "$PKI/pki.log"))"
pki_key "$PKI" gateway 3072 || fail "pki: gateway key"
pki_key "$PKI" client || fail "pki: client key"
pki_key "$PKI" client6 3072 || fail "pki: IPv6 client key"

# The daemon's configuration: the shipped file with this run's control socket.
lab_config "$CONFIG" "$OUT/lab-redirect.toml"
python3 "$HELPER" key "$OUT/lab-redirect.toml" >"$OUT/report.key" || fail "no [redirect] report_key in $CONFIG"
read -r INTERVAL_MS TIMEOUT_MS RISE FALL < <(lab_health_params "$OUT/lab-redirect.toml")

log "gateways: charon (responder, pools), tcpdump on eth0"
mkdir -p "$PCAPS"
for i in 1 2 3; do
  gw=gw$i ns=vlb-gw$i
  ike_gateway_start "$i"
  (capture_start "$ns" eth0 "$PCAPS" "$gw") || fail "tcpdump on $gw"
done

PRE=() VIPC=() LATE=() FB=() V6=()
i=0
for ((k = 1; k <= N_PRE; k++)); do i=$((i + 1)); add_client "c$i" "$i" pre "${GW_ADDR[gw1]}"; PRE+=("c$i"); done
for ((k = 1; k <= N_VIP; k++)); do i=$((i + 1)); add_client "c$i" "$i" vip "$VIP4"; VIPC+=("c$i"); done
for ((k = 1; k <= N_LATE; k++)); do i=$((i + 1)); add_client "c$i" "$i" late "$VIP4"; LATE+=("c$i"); done
for ((k = 1; k <= N_FB; k++)); do i=$((i + 1)); add_client "c$i" "$i" fallback "$VIP4" nofollow; FB+=("c$i"); done
# IPv6: the first keeps IKE fragmentation, the others turn it off (IP-fragmented IKE_AUTH).
for ((k = 1; k <= N_V6; k++)); do
  i=$((i + 1))
  add_client "c$i" "$i" ipv6 "$VIP6" "$(if [ "$k" -gt 1 ]; then echo nofrag; fi)"
  V6+=("c$i")
done

log "vpnlbd: $CONFIG (redirect mode; IKE health check every ${INTERVAL_MS} ms, timeout ${TIMEOUT_MS} ms, rise $RISE, fall $FALL)"
lab_daemon_start "$OUT/lab-redirect.toml" $((LIMIT_S + 30))

log "gateways: load reporters (scripts/gw-load-report.py, every second, to 198.19.0.1:5685)"
for i in 1 2 3; do
  dir="$OUT/gw$i"
  ip netns exec "vlb-gw$i" timeout -s TERM "$PEER_LIFETIME" python3 scripts/gw-load-report.py \
    --gateway "gw$i" --key-file "$OUT/report.key" --to 198.19.0.1:5685 --interval 1 \
    --lifetime "$LIMIT_S" --swanctl-uri "unix://$dir/run/charon.vici" --print \
    >"$dir/reporter.log" 2>"$dir/reporter.err" &
  echo $! >"$dir/reporter.pid"
done
UP_LIMIT=$((RISE * INTERVAL_MS + TIMEOUT_MS + SLACK_MS))
DOWN_LIMIT=$((FALL * INTERVAL_MS + TIMEOUT_MS + SLACK_MS))
for gw in gw1 gw2 gw3; do wait_health "$gw" up "$UP_LIMIT" || true; done
[ "$(misses)" -eq 0 ] || fail "the gateways did not come up"

# --- step 1: pre-load gw1 with 6 tunnels, dialled at its own address -----------------------------
log "step 1: ${#PRE[@]} clients dial gw1's own address ${GW_ADDR[gw1]} (routed, no VIP)"
wave 45 "" "${PRE[@]}"
m1=0
check_clients "step 1" direct "${PRE[@]}" || m1=$?
t_rep=$(date +%s%N) rep_ms=-1
while :; do
  gateways_refresh || true
  if [ "${GWF_REP[gw1]:-}" = "$N_PRE" ]; then rep_ms=$((($(date +%s%N) - t_rep) / 1000000)); break; fi
  if [ $(($(date +%s%N) - t_rep)) -gt 10000000000 ]; then
    miss "step 1: gw1's reported_tunnels is ${GWF_REP[gw1]:-?} 10 s after its $N_PRE clients were up"
    m1=$((m1 + 1))
    break
  fi
  sleep 0.2
done
PRE_LINE="gw1 reported ${GWF_REP[gw1]:--} (after ${rep_ms} ms), gw2 ${GWF_REP[gw2]:--}, gw3 ${GWF_REP[gw3]:--}; routed to/from gw1: ${GWF_RTO[gw1]:--}/${GWF_RFROM[gw1]:--} packets; redirects ${GWF_RED[gw1]:--}/${GWF_RED[gw2]:--}/${GWF_RED[gw3]:--}"
for g in gw2 gw3; do
  [ "${GWF_REP[$g]:-}" = 0 ] || { miss "step 1: $g's reported_tunnels is ${GWF_REP[$g]:-?}, not 0"; m1=$((m1 + 1)); }
done
[ "$(num "${GWF_RTO[gw1]:-}")" -gt 0 ] && [ "$(num "${GWF_RFROM[gw1]:-}")" -gt 0 ] \
  || { miss "step 1: routed_to/from_gateway_packets of gw1: ${GWF_RTO[gw1]:-?}/${GWF_RFROM[gw1]:-?}"; m1=$((m1 + 1)); }
for g in gw1 gw2 gw3; do
  [ "${GWF_RED[$g]:-}" = 0 ] || { miss "step 1: $g has ${GWF_RED[$g]:-?} redirects before any client dialled the VIP"; m1=$((m1 + 1)); }
done
log "step 1: $PRE_LINE"

# --- step 2: 20 clients dial the VIP ------------------------------------------------------------
log "step 2: ${#VIPC[@]} clients dial the VIP $VIP4, $START_JOBS at a time"
m2=0
redirected_wave 60 "step 2" GOT_FROM "$VIP4" "${VIPC[@]}" || m2=$?

# --- step 3: the spread follows the load reports -------------------------------------------------
SHARE=$(per_gateway "${VIPC[@]}")
read -r _ s1 _ s2 _ s3 <<<"${SHARE//,/}"
T1=$(gw_tunnels gw1) T2=$(gw_tunnels gw2) T3=$(gw_tunnels gw3)
max=$T1 min=$T1
for t in $T2 $T3; do [ "$t" -gt "$max" ] && max=$t; [ "$t" -lt "$min" ] && min=$t; done
gateways_refresh || true
SPREAD_RED="redirects gw1 ${GWF_RED[gw1]:--}, gw2 ${GWF_RED[gw2]:--}, gw3 ${GWF_RED[gw3]:--}"
m3=0
[ "$s1" -le 5 ] || { miss "step 3: gw1 (pre-loaded with $N_PRE) got $s1 of the $N_VIP (at most 5)"; m3=$((m3 + 1)); }
[ $((max - min)) -le 3 ] || { miss "step 3: tunnel totals gw1 $T1, gw2 $T2, gw3 $T3 differ by $((max - min)) (at most 3)"; m3=$((m3 + 1)); }
[ "$s1" -lt "$s2" ] && [ "$s1" -lt "$s3" ] || { miss "step 3: gw1 got $s1, not fewer than gw2 ($s2) and gw3 ($s3)"; m3=$((m3 + 1)); }
sum_red=0
for g in gw1 gw2 gw3; do
  [ "$(num "${GWF_RED[$g]:-}")" -lt 0 ] || sum_red=$((sum_red + ${GWF_RED[$g]}))
  n=0
  for name in "${VIPC[@]}"; do [ "${RED_GW[$name]}" = "$g" ] && n=$((n + 1)); done
  [ "$(num "${GWF_RED[$g]:-}")" -ge "$n" ] \
    || { miss "step 3: show gateways says ${GWF_RED[$g]:-?} redirects to $g; $n clients' logs say so"; m3=$((m3 + 1)); }
done
# The reports catch up with the gateways' own counts.
t_rep=$(date +%s%N) catch_ms=-1
while :; do
  gateways_refresh || true
  if [ "${GWF_REP[gw1]:-}" = "$T1" ] && [ "${GWF_REP[gw2]:-}" = "$T2" ] && [ "${GWF_REP[gw3]:-}" = "$T3" ]; then
    catch_ms=$((($(date +%s%N) - t_rep) / 1000000))
    break
  fi
  if [ $(($(date +%s%N) - t_rep)) -gt 5000000000 ]; then
    miss "step 3: reported_tunnels ${GWF_REP[gw1]:-?}/${GWF_REP[gw2]:-?}/${GWF_REP[gw3]:-?} 5 s later, the gateways have $T1/$T2/$T3"
    m3=$((m3 + 1))
    break
  fi
  sleep 0.2
done
LOADS="load gw1 ${GWF_LOAD[gw1]:--}, gw2 ${GWF_LOAD[gw2]:--}, gw3 ${GWF_LOAD[gw3]:--}"
# The same numbers in Prometheus text: redirects and reported tunnels per gateway.
ctl_human stats prometheus >"$OUT/metrics.txt" 2>&1 || true
for g in gw1 gw2 gw3; do
  for m in "gateway_redirects_total:${GWF_RED[$g]:-?}" "gateway_reported_tunnels:${GWF_REP[$g]:-?}"; do
    name=${m%%:*} want=${m#*:}
    got=$(awk -v k="vpnlb_${name}{service=\"$SERVICE\",gateway=\"$g\"}" '$1 == k { print $2 }' "$OUT/metrics.txt")
    [ "$got" = "$want" ] \
      || { miss "step 3: stats prometheus vpnlb_$name for $g is '${got}', show gateways says $want"; m3=$((m3 + 1)); }
  done
done
log "step 3: of the $N_VIP: $SHARE; tunnel totals gw1 $T1, gw2 $T2, gw3 $T3; $SPREAD_RED; reports match after ${catch_ms} ms; $LOADS"

# --- step 4: IPv6 clients dial the IPv6 VIP -------------------------------------------------------
gateways_refresh || true
declare -A RED6_BEFORE
for g in gw1 gw2 gw3; do RED6_BEFORE[$g]=$(num "${GWF_RED[$g]:-}"); done
NOFRAG=()
for name in "${V6[@]}"; do [ "${CL_FRAG[$name]}" = no ] && NOFRAG+=("$name"); done
log "step 4: ${#V6[@]} IPv6 clients dial the IPv6 VIP $VIP6 (IKE fragmentation off: ${NOFRAG[*]-none})"
m4=0
redirected_wave 45 "step 4" GOT_FROM6 "$VIP6" "${V6[@]}" || m4=$?
# The IPv6 redirects count like the IPv4 ones: in show gateways, and in the spread (the totals,
# now with the IPv6 clients, still differ by at most 3, as in step 3).
V6_SHARE=$(per_gateway "${V6[@]}")
gateways_refresh || true
for g in gw1 gw2 gw3; do
  n=0
  for name in "${V6[@]}"; do [ "${RED_GW[$name]}" = "$g" ] && n=$((n + 1)); done
  [ "$(num "${GWF_RED[$g]:-}")" -ge $((${RED6_BEFORE[$g]} + n)) ] && [ "${RED6_BEFORE[$g]}" -ge 0 ] \
    || { miss "step 4: show gateways says ${RED6_BEFORE[$g]} -> ${GWF_RED[$g]:-?} redirects to $g; $n IPv6 clients' logs say so"; m4=$((m4 + 1)); }
done
V6_RED="redirects gw1 ${RED6_BEFORE[gw1]} -> ${GWF_RED[gw1]:--}, gw2 ${RED6_BEFORE[gw2]} -> ${GWF_RED[gw2]:--}, gw3 ${RED6_BEFORE[gw3]} -> ${GWF_RED[gw3]:--}"
U1=$(gw_tunnels gw1) U2=$(gw_tunnels gw2) U3=$(gw_tunnels gw3)
umax=$U1 umin=$U1
for t in $U2 $U3; do [ "$t" -gt "$umax" ] && umax=$t; [ "$t" -lt "$umin" ] && umin=$t; done
[ $((umax - umin)) -le 3 ] || { miss "step 4: tunnel totals gw1 $U1, gw2 $U2, gw3 $U3 differ by $((umax - umin)) (at most 3)"; m4=$((m4 + 1)); }
[ $((U1 + U2 + U3)) -eq $((T1 + T2 + T3 + N_V6)) ] \
  || { miss "step 4: tunnel totals $U1 + $U2 + $U3, expected $((T1 + T2 + T3)) + $N_V6"; m4=$((m4 + 1)); }
# The largest IKE datagrams each IPv6 client's charon sent and received (its IKE_AUTH, whole or
# as RFC 7383 fragments).
declare -A IKE_AUTH_SIZES
for name in "${V6[@]}"; do
  snd=$(sed -nE 's/.*sending packet: .* \(([0-9]+) bytes\)$/\1/p' "${CL_DIR[$name]}/charon.log" | sort -n | tail -n 1)
  rcv=$(sed -nE 's/.*received packet: .* \(([0-9]+) bytes\)$/\1/p' "${CL_DIR[$name]}/charon.log" | sort -n | tail -n 1)
  IKE_AUTH_SIZES[$name]="${snd:-?}/${rcv:-?}"
done
V6_LINE=$(for n in "${V6[@]}"; do printf '%s->%s(%s) ' "$n" "${RED_GW[$n]}" "${RED_ADDR[$n]}"; done)
log "step 4: ${V6_LINE% }; tunnel totals gw1 $U1, gw2 $U2, gw3 $U3; $V6_RED"

# --- step 5: a down gateway gets no redirects ----------------------------------------------------
log "step 5: SIGKILL to gw3's charon"
kill -KILL "$(cat "$OUT/gw3/run/charon.pid")"
wait_health gw3 down "$DOWN_LIMIT" || true
down_ms=$WAITED_MS
gateways_refresh || true
red3_down=${GWF_RED[gw3]:--}
# One of gw3's clients dials again (a fresh charon): its affinity entry names gw3, which is down,
# so it must be redirected elsewhere like a new client.
REDIAL=()
for name in "${VIPC[@]}"; do
  if [ "${RED_GW[$name]}" = gw3 ]; then REDIAL=("$name"); break; fi
done
log "step 5: gw3 down after $down_ms ms (limit $DOWN_LIMIT); its redirects: $red3_down; ${#LATE[@]} clients dial the VIP${REDIAL:+, and ${REDIAL[*]} (on gw3) again}"
for name in "${REDIAL[@]+"${REDIAL[@]}"}"; do
  peer_stop "${CL_DIR[$name]}" charon
  mv "${CL_DIR[$name]}/charon.log" "${CL_DIR[$name]}/charon.log.step2"
  CL_STEP[$name]=vip+redial
done
STEP5=("${LATE[@]}" "${REDIAL[@]+"${REDIAL[@]}"}")
wave 45 "" "${STEP5[@]}"
m5=0
[ "$down_ms" -le "$DOWN_LIMIT" ] || m5=$((m5 + 1))
check_clients "step 5" redirect "${STEP5[@]}" || m5=$((m5 + $?))
for name in "${STEP5[@]}"; do
  [ "${RED_GW[$name]}" != gw3 ] || { miss "step 5: $name was redirected to gw3, which is down"; m5=$((m5 + 1)); }
done
gateways_refresh || true
red3_after=${GWF_RED[gw3]:--}
[ "$red3_after" = "$red3_down" ] || { miss "step 5: gw3's redirects $red3_down -> $red3_after while down"; m5=$((m5 + 1)); }
REDIAL_LINE=""
for name in "${REDIAL[@]+"${REDIAL[@]}"}"; do REDIAL_LINE="; gw3's client $name dialled again -> ${RED_GW[$name]}"; done
LATE_SHARE=$(per_gateway "${LATE[@]}")

# --- step 6: clients without redirect support fall back to NAT mode -------------------------------
redirect_refresh || true
nors0=$RD_NORS
log "step 6: ${#FB[@]} clients with follow_redirects = no dial the VIP (no-redirect-supported fallbacks so far: $nors0)"
wave 45 "" "${FB[@]}"
m6=0
check_clients "step 6" fallback "${FB[@]}" || m6=$?
for name in "${FB[@]}"; do
  [ "${CL_GW[$name]}" != gw3 ] || { miss "step 6: $name went to gw3, which is down"; m6=$((m6 + 1)); }
done
redirect_refresh || true
nors1=$RD_NORS
[ "$(num "$nors1")" -ge $(($(num "$nors0") + N_FB)) ] && [ "$(num "$nors0")" -ge 0 ] \
  || { miss "step 6: no-redirect-supported fallbacks $nors0 -> $nors1 (expected +$N_FB or more)"; m6=$((m6 + 1)); }

# --- step 7: bad input ------------------------------------------------------------------------------
log "step 7: malformed IKE_SA_INIT requests from $BAD_NS ($BAD_ADDR) to $VIP4:500"
(capture_start "$BAD_NS" eth0 "$PCAPS" bad) || fail "tcpdump in $BAD_NS"
redirect_refresh || true
mal0=$RD_MALFORMED rej0=$RD_REJECTED
CLIENT_MAC=$(python3 -c 'import sys, tomllib
for p in tomllib.load(open(sys.argv[1], "rb"))["port"]:
    if p["role"] == "client": print(p["mac"])' "$OUT/lab-redirect.toml")
ip netns exec "$BAD_NS" /usr/bin/python3 "$HELPER" inject eth0 "$BAD_ADDR" "$VIP4" "$CLIENT_MAC" \
  >"$OUT/bad.txt" 2>"$OUT/bad.err" || miss "step 7: sending the malformed requests failed: $(tail -n 2 "$OUT/bad.err")"
n_bad=$(wc -l <"$OUT/bad.txt")
sleep 1.5
redirect_refresh || true
mal1=$RD_MALFORMED
# A well-formed request from the same place: answered with a REDIRECT (so the capture would have
# shown answers to the others).
probe=$(ip netns exec "$BAD_NS" /usr/bin/python3 "$HELPER" probe "$BAD_ADDR" "$VIP4" 2>&1) || true
# And one to the IPv6 VIP: the REDIRECT's GW identity is the gateway's IPv6 address (type 2).
probe6=$(ip netns exec "$BAD_NS" /usr/bin/python3 "$HELPER" probe "$BAD_ADDR6" "$VIP6" 2>&1) || true
# tcpdump gets its packets from the kernel in blocks, at the latest after 1 s: wait for them.
sleep 1.5
peer_stop "$PCAPS" bad
m7=0
probe_spi="" probe_gw=""
read -r probe_spi probe_gw <<<"$probe" || true
case $(gw_of_addr "${probe_gw:-}") in
  gw1 | gw2) ;;
  *) miss "step 7: the well-formed request: ${probe:-no output}"; m7=$((m7 + 1)); probe_spi="" probe_gw="" ;;
esac
probe6_gw=$(awk '{ print $2 }' <<<"$probe6")
case $probe6_gw in
  "${GW_ADDR6[gw1]}" | "${GW_ADDR6[gw2]}") ;;
  *) miss "step 7: the well-formed request to $VIP6: ${probe6:-no output}"; m7=$((m7 + 1)); probe6_gw="" ;;
esac
# shellcheck disable=SC2046  # one SPI per word
python3 "$HELPER" answers "$PCAPS/bad.pcap" "$VIP4" $(awk '{ print $1 }' "$OUT/bad.txt") ${probe_spi:+"$probe_spi"} \
  >"$OUT/bad-answers.txt"
while read -r spi verdict; do
  kind=$(awk -v s="$spi" '$1 == s { print $2 }' "$OUT/bad.txt")
  if [ -n "$kind" ] && [ "$verdict" != unanswered ]; then miss "step 7: the $kind request was answered"; m7=$((m7 + 1)); fi
  if [ -z "$kind" ] && [ "$verdict" != answered ]; then miss "step 7: the capture in $BAD_NS misses the answer to the well-formed request"; m7=$((m7 + 1)); fi
done <"$OUT/bad-answers.txt"
[ "$(num "$mal1")" -eq $(($(num "$mal0") + n_bad)) ] && [ "$(num "$mal0")" -ge 0 ] \
  || { miss "step 7: malformed $mal0 -> $mal1 after $n_bad malformed requests"; m7=$((m7 + 1)); }
# Bad load reports from gw2: its last genuine report again (a replay), and a forgery.
gateway_sas
T2_NOW=$(gw_tunnels gw2)
gateways_refresh || true
rep2_before=${GWF_REP[gw2]:--}
last2=$(tail -n 1 "$OUT/gw2/reporter.log")
ip netns exec vlb-gw2 python3 "$HELPER" reports 198.19.0.1:5685 gw2 "$last2" >/dev/null \
  || miss "step 7: sending the bad reports failed"
sleep 1.5
redirect_refresh || true
rej1=$RD_REJECTED
gateways_refresh || true
# The reporters' own reports were all taken; these two are the only ones refused.
[ "$rej0" = 0 ] && [ "$(num "$RD_ACCEPTED")" -gt 0 ] \
  || { miss "step 7: before the bad reports, ${rej0} reports were rejected and ${RD_ACCEPTED} accepted"; m7=$((m7 + 1)); }
[ "$(num "$rej1")" -eq $(($(num "$rej0") + 2)) ] && [ "$(num "$rej0")" -ge 0 ] \
  || { miss "step 7: rejected reports $rej0 -> $rej1 after a replay and a forgery"; m7=$((m7 + 1)); }
[ "${GWF_REP[gw2]:-}" = "$T2_NOW" ] || { miss "step 7: gw2's reported_tunnels ${GWF_REP[gw2]:-?} (was $rep2_before; it has $T2_NOW)"; m7=$((m7 + 1)); }
kinds=$(awk '{ printf "%s ", $2 }' "$OUT/bad.txt")
log "step 7: malformed $mal0 -> $mal1 (sent $n_bad: ${kinds% }); well-formed requests redirected to ${probe_gw:--} and ${probe6_gw:--}; rejected reports $rej0 -> $rej1"

# --- the captures: every client's packets at its gateway only ---------------------------------------
ALL=("${PRE[@]}" "${VIPC[@]}" "${V6[@]}" "${LATE[@]}" "${FB[@]}")
: >"$OUT/expect.txt" && : >"$OUT/times.txt"
for name in "${ALL[@]}"; do
  case " ${REDIAL[*]-} " in
    *" $name "*) echo "${CL_ADDR[$name]} $name gw3 ${CL_GW[$name]:--}" ;; # first gw3, then its new gateway
    *) echo "${CL_ADDR[$name]} $name ${CL_GW[$name]:--}" ;;
  esac
done >>"$OUT/expect.txt"
captures_check
m_pcap=$M_PCAP
# Step 4's IPv6 clients without IKE fragmentation: their gateway's capture shows IP fragments of
# theirs both ways (first and non-first ones, i.e. routed by the appliance one by one); the one
# with IKE fragmentation shows RFC 7383 fragments instead.
FRAG_LINE=""
for name in "${V6[@]}"; do
  g=${CL_GW[$name]:--}
  read -r f1_to fn_to f1_from fn_from ikef_to ikef_from < <(python3 "$HELPER" frags "$OUT/pcap-summary.json" "${CL_ADDR[$name]}" "$g")
  FRAG_LINE+="; $name (fragmentation = ${CL_FRAG[$name]}, largest IKE datagrams ${IKE_AUTH_SIZES[$name]} bytes sent/received) at $g: IP fragments to $f1_to+$fn_to, from $f1_from+$fn_from, IKE fragments to $ikef_to, from $ikef_from"
  if [ "${CL_FRAG[$name]}" = no ]; then
    [ "$f1_to" -gt 0 ] && [ "$fn_to" -gt 0 ] && [ "$f1_from" -gt 0 ] && [ "$fn_from" -gt 0 ] \
      || { miss "step 4: $name turned IKE fragmentation off, but $g's capture shows IP fragments to it $f1_to+$fn_to, from it $f1_from+$fn_from"; m4=$((m4 + 1)); }
  fi
done

# --- the table --------------------------------------------------------------------------------------
echo
printf '%-5s %-10s %-14s %-9s %-20s %-11s %-9s %-5s %-12s %s\n' client step address redirect ike_sa_with \
  ike_sa child_sa ping affinity captures
for name in "${ALL[@]}"; do
  a=${CL_ADDR[$name]} rg=${RED_GW[$name]:--}
  [ "${RED_N[$name]:-0}" -gt 1 ] && rg="$rg(${RED_N[$name]}x)"
  aff="${AFF[$a]:--}"
  [ "${AFF_DIRECT[$a]:-}" = true ] && aff="$aff/direct"
  printf '%-5s %-10s %-14s %-9s %-20s %-11s %-9s %-5s %-12s %s\n' "$name" "${CL_STEP[$name]}" "$a" "$rg" \
    "$(gw_of_addr "${SA_REMOTE[$name]:--}")(${SA_REMOTE[$name]:--})" "${SA_IKE[$name]:--}" "${SA_CHILD[$name]:--}" \
    "${PING[$name]:--}" "$aff" "${ROUTE[$a]:--}"
done
echo
echo "--- vpnlbctl show gateways ---"
ctl_human show gateways || true
echo "--- vpnlbctl show redirect ---"
ctl_human show redirect || true
echo

verdict() { if [ "$1" -eq 0 ]; then echo OK; else echo "MISS ($1)"; fi; }
RESULTS+=("step 1 pre-load, $N_PRE clients to gw1's own address: $(verdict "$m1"): routed by the appliance, not redirected, IKE_SA with 198.19.0.11, ping through; $PRE_LINE")
RESULTS+=("step 2 $N_VIP clients to the VIP: $(verdict "$m2"): each redirected once (charon: 'redirected to 198.19.0.1x'), IKE_SA + CHILD_SA with the gateway of its redirect (remote address, pool, that gateway's own list and no other's), ping through, a direct affinity entry; the gateways' charons logged 'client got redirected from $VIP4' gw1 ${GOT_FROM[gw1]}, gw2 ${GOT_FROM[gw2]}, gw3 ${GOT_FROM[gw3]}")
RESULTS+=("step 3 spread by load reports: $(verdict "$m3"): of the $N_VIP $SHARE; tunnel totals gw1 $T1, gw2 $T2, gw3 $T3 (max - min $((max - min)) <= 3; gw1's share $s1 <= 5); $SPREAD_RED (sum $sum_red); reports matched the gateways' counts after ${catch_ms} ms")
RESULTS+=("step 4 IPv6, $N_V6 clients to the IPv6 VIP $VIP6: $(verdict "$m4"): each redirected once to its gateway's IPv6 address (charon: 'redirected to 2001:2:0:2::1x'; ${V6_LINE% }), IKE_SA + CHILD_SA with that address (pool, that gateway's own list and no other's), ping6 through, a direct affinity entry; of the $N_V6: $V6_SHARE; tunnel totals gw1 $U1, gw2 $U2, gw3 $U3 (max - min $((umax - umin)) <= 3); $V6_RED; the gateways' charons logged 'client got redirected from $VIP6' gw1 ${GOT_FROM6[gw1]}, gw2 ${GOT_FROM6[gw2]}, gw3 ${GOT_FROM6[gw3]}$FRAG_LINE")
RESULTS+=("step 5 gw3 down (SIGKILL to charon): $(verdict "$m5"): down after $down_ms ms (limit $DOWN_LIMIT); ${#LATE[@]} new clients -> $LATE_SHARE$REDIAL_LINE; gw3's redirects $red3_down -> $red3_after")
RESULTS+=("step 6 fallback, ${#FB[@]} clients with follow_redirects = no: $(verdict "$m6"): no N(REDIRECT_SUPPORTED) sent, NAT mode through the VIP ($(for n in "${FB[@]}"; do printf '%s->%s ' "$n" "${CL_GW[$n]:--}"; done | sed 's/ $//')), no-redirect-supported fallbacks $nors0 -> $nors1")
RESULTS+=("step 7 bad input: $(verdict "$m7"): $n_bad malformed IKE_SA_INITs (${kinds% }) unanswered, malformed $mal0 -> $mal1; a well-formed one answered with N(REDIRECT) to ${probe_gw:--} (our nonce echoed), one to $VIP6 with N(REDIRECT) to ${probe6_gw:--} (GW identity type 2, our nonce echoed); a replayed and a forged report rejected ($rej0 -> $rej1), gw2's reported_tunnels unchanged")
RESULTS+=("captures (tcpdump on every gateway's eth0): $(verdict "$m_pcap"): $(grep -vc '^MISS' "$OUT/evidence.txt") client addresses, each one's packets at its gateway only; per client and class: $OUT/evidence.txt")
printf '%s\n' "${RESULTS[@]}"
log "done"
lab_finish
