#!/usr/bin/env bash
# The end-to-end acceptance suite: vpnlbd on net_af_packet in the lab of scripts/lab.sh, with
# the software its users run (strongSwan, ocserv/openconnect) in the lab's namespaces (needs root).
#
#   scripts/e2e.sh            (OUT=out/e2e by default; E2E_LIMIT_S bounds the whole run, 840 s;
#                              E2E_BIN_DIR=DIR (or LAB_BIN_DIR) runs DIR/vpnlbd and DIR/vpnlbctl
#                              instead of building)
#
# 1. IKEv2 + NAT-T: 20 strongSwan initiators (vlb-c1..c20, IPv4) to the VIP; gw1-gw3 run strongSwan
#    responders. No ESP in the kernel: charon uses kernel-libipsec with encap = yes, so every
#    tunnel is ESP in UDP 4500. Certificates from a lab CA (pki, RSA 3072: the IKE_AUTH messages
#    exceed 1500 bytes, so they are split: IPv4 clients use IKE fragmentation (RFC 7383, charon's
#    default); of the IPv6 clients the even-numbered ones turn it off, so their IKE_AUTH
#    exchanges are IP-fragmented both ways through the appliance. IPv4 fragments cannot cross
#    the lab: DPDK 22.11's net_af_packet joins a PACKET_FANOUT group with
#    PACKET_FANOUT_FLAG_DEFRAG, so the kernel hands vpnlbd the reassembled datagram, which is
#    then too long for the egress veth ("af_packet: packet size is too long" in dmesg); on real
#    NICs the fragments pass one by one). Every client gets its IKE_SA, CHILD_SA and virtual IP
#    (from the pool of the gateway that answered: gw1 198.18.128.0/24, gw2 .129, gw3 .130) and pings its
#    gateway's inner address (198.18.12x.1) through the tunnel. Shown three ways: `vpnlbctl show
#    affinity`, the gateways' own IKE_SA lists, and tcpdump on every gateway's eth0 for the whole
#    run (per client address, which gateways saw its UDP 500, 4500 IKE, ESP-in-UDP, keepalives,
#    fragments). The gateways must be the ones the scheduler gives (`vpnlbd replay` of one
#    datagram per client address with the same configuration is the oracle).
# 2. TLS then DTLS: openconnect in three client namespaces (one per gateway, by the oracle) to
#    ocserv on every gateway: "SSL connected and DTLS connected", ocserv's log of that gateway
#    shows the session and its DTLS set-up, a ping crosses the tunnel, the captures show TCP 443
#    and UDP 443 of the client at that gateway only.
# 3. A gateway dies: SIGKILL to gw2's charon. The IKE health check (lab.toml: 1 s, fall 3) marks it
#    down in time; gw2's clients re-establish (DPD 2 s, fast retransmits, dpd_action = restart) on
#    the gateway the scheduler gives without gw2; two new clients that would have gone to gw2 go
#    there too; gw2 takes no new client; gw1's and gw3's clients keep their IKE_SAs. gw2's charon
#    is started again and gw2 comes back up (its former clients stay where they are).
# 4. Drain: `vpnlbctl gateway gw1 drain` under a running ping from every gw1 client: no loss,
#    same IKE_SAs, still pinned to gw1; two new clients that would have gone to gw1 go elsewhere.
# 5. IPv6: item 1 with 6 clients (vlb-c21..c26; a smaller count keeps the run short) to the
#    IPv6 VIP, inner IPv6 pools 2001:2:0:100::/64 (gw1), :101:: (gw2), :102:: (gw3).
# 6. One NAT: vlb-nat (198.18.0.50 on the client segment; nftables masquerade) with 4 strongSwan
#    clients behind it (vlb-nat1..4, 198.18.200.0/24): one affinity, one gateway, all tunnels up.
#
# Prints a table (client, family, address, gateway, scheduler's choice, IKE_SA, CHILD_SA, ping,
# bytes through the CHILD_SA, gateways in the captures), one line per item and `e2e: OK`, or the
# misses, vpnlbctl show stats/gateways/drops/affinity/health, the vpnlbd log and the relevant
# peer logs; exits 1 on any miss. Everything is torn down on exit, failure included.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib/labtest.sh
source scripts/lib/labtest.sh
# shellcheck source=scripts/clients.sh
source scripts/clients.sh

lab_begin e2e out/e2e
readonly HELPER=scripts/e2e.py PKI="$OUT/pki" PCAPS="$OUT/pcap"
readonly N4=20 N6=6 NNAT=4 LAB_CLIENTS=39 SPARE_FROM=27
readonly VIP4=198.18.0.100 VIP6=2001:2:0:1::100 NAT_ADDR=198.18.0.50
# Slack on a loaded 2-core machine, on top of what a health check itself needs.
readonly SLACK_MS=1500
# How many client charons start at once.
readonly START_JOBS=6
LAB_SHOW=("show stats" "show gateways" "show drops" "show affinity" "show health")
RESULTS=()

now() { date +%s.%N; }

# The failure report, after the daemon's: the ocserv logs (the rest: clients.sh's ike_report).
ocserv_report() {
  local i
  for i in 1 2 3; do
    echo "--- $OUT/gw$i/ocserv/ocserv.log (tail) ---"
    tail -n 8 "$OUT/gw$i/ocserv/ocserv.log" 2>/dev/null || true
  done
}
lab_on_failure ike_report
lab_on_failure ocserv_report

lab_need ip ethtool nft tcpdump ocserv ocpasswd openconnect swanctl pki python3 /usr/lib/ipsec/charon
# The whole run is bounded, whatever hangs.
lab_limit "${E2E_LIMIT_S:-840}"

# --- the lab -----------------------------------------------------------------------------------

# offloads_off NS IF: as lab.sh does for every veth end (no partial checksums into af_packet).
offloads_off() {
  ip netns exec "$1" ethtool -K "$2" rx off tx off tso off gso off gro off >/dev/null 2>&1 \
    || ip netns exec "$1" ethtool -K "$2" tx off >/dev/null
}

# nat_lab_up: vlb-nat on the client segment at 198.18.0.50 (docs/lab.md leaves .50-.99 to such tools),
# masquerading its inside LAN 198.18.200.0/24 (bridge lan0, 198.18.200.1) where vlb-nat1..N live.
nat_lab_up() {
  local i ns
  ip netns add vlb-nat
  ip -n vlb-nat link set lo up
  ip netns exec vlb-nat sh -c 'echo 1 >/proc/sys/net/ipv4/ip_forward
    echo 1 >/proc/sys/net/ipv6/conf/all/disable_ipv6; echo 1 >/proc/sys/net/ipv6/conf/default/disable_ipv6
    echo 0 >/proc/sys/net/ipv4/conf/all/rp_filter; echo 0 >/proc/sys/net/ipv4/conf/default/rp_filter'
  ip link add name eth0 netns vlb-nat type veth peer name nat0 netns vlb-csw
  ip netns exec vlb-csw sh -c 'echo 1 >/proc/sys/net/ipv6/conf/nat0/disable_ipv6'
  offloads_off vlb-csw nat0
  offloads_off vlb-nat eth0
  ip -n vlb-csw link set dev nat0 master br0 up
  ip -n vlb-nat link set dev eth0 address 02:00:00:00:01:32
  ip -n vlb-nat addr add "$NAT_ADDR/24" dev eth0
  ip -n vlb-nat link set dev eth0 up
  ip -n vlb-nat route add default via 198.18.0.1
  ip -n vlb-nat link add name lan0 type bridge
  ip -n vlb-nat link set dev lan0 type bridge stp_state 0 forward_delay 0
  ip -n vlb-nat addr add 198.18.200.1/24 dev lan0
  ip -n vlb-nat link set dev lan0 up
  for ((i = 1; i <= NNAT; i++)); do
    ns=vlb-nat$i
    ip netns add "$ns"
    ip -n "$ns" link set lo up
    ip netns exec "$ns" sh -c 'echo 1 >/proc/sys/net/ipv6/conf/all/disable_ipv6
      echo 1 >/proc/sys/net/ipv6/conf/default/disable_ipv6'
    ip link add name eth0 netns "$ns" type veth peer name "n$i" netns vlb-nat
    offloads_off vlb-nat "n$i"
    offloads_off "$ns" eth0
    ip -n vlb-nat link set dev "n$i" master lan0 up
    ip -n "$ns" link set dev eth0 address "$(printf '02:00:00:00:c8:%02x' $((10 + i)))"
    ip -n "$ns" addr add "198.18.200.$((10 + i))/24" dev eth0
    ip -n "$ns" link set dev eth0 up
    ip -n "$ns" route add default via 198.18.200.1
  done
  ip netns exec vlb-nat nft -f - <<'EOF'
table ip e2e_nat {
    chain postrouting {
        type nat hook postrouting priority srcnat; policy accept;
        oifname "eth0" masquerade
    }
}
EOF
}

# --- clients -------------------------------------------------------------------------------------

declare -A CL_NS CL_FAM CL_ADDR CL_DIR CL_ROLE CL_EXPECT CL_FIRST
declare -A EXP_UP EXP_DOWN2 EXP_DRAIN1 AFF SA_IKE SA_CHILD SA_VIP SA_SPI SA_BIN SA_BOUT PING

# add_client NAME NS FAMILY LOCAL_ADDR SEEN_ADDR ROLE: a strongSwan initiator's files.
add_client() {
  local name=$1 ns=$2 fam=$3 local_addr=$4 seen=$5 role=$6
  local opts=(dpd keepalive)
  CL_NS[$name]=$ns CL_FAM[$name]=$fam CL_ADDR[$name]=$seen
  CL_DIR[$name]="$OUT/clients/$name" CL_ROLE[$name]=$role
  client_pki "$name" client
  # IKE fragmentation, except for even-numbered IPv6 clients: their whole IKE_AUTH messages are
  # IP-fragmented (the appliance steers non-first fragments by source address). Not over IPv4:
  # net_af_packet's kernel defragmentation makes such datagrams too long for the egress veth.
  if [ "$fam" = 6 ] && [ $((${name//[!0-9]/} % 2)) -eq 0 ]; then opts+=(nofrag); fi
  # Fast failure detection: 3 sends over ~4.4 s, then DPD's restart; keepalives every second
  # where a NAT is detected.
  if [ "$fam" = 6 ]; then
    swanctl_initiator "${CL_DIR[$name]}" "$name" "$local_addr" "$VIP6" :: 2001:2:0:100::/62 "${opts[@]}"
  else
    swanctl_initiator "${CL_DIR[$name]}" "$name" "$local_addr" "$VIP4" 0.0.0.0 198.18.128.0/22 "${opts[@]}"
  fi
}


# sa_summary NAME...: SA_IKE/SA_CHILD/SA_VIP/SA_SPI/SA_BIN/SA_BOUT from a fresh --list-sas.
sa_summary() {
  local name files=() f ike child vip spi bin bout
  declare -A by_file=()
  for name in "$@"; do
    sa_raw "$name"
    files+=("${CL_DIR[$name]}/sa.raw")
    by_file[${CL_DIR[$name]}/sa.raw]=$name
  done
  while read -r f ike child vip spi bin bout; do
    name=${by_file[$f]}
    SA_IKE[$name]=$ike SA_CHILD[$name]=$child SA_VIP[$name]=$vip SA_SPI[$name]=$spi
    SA_BIN[$name]=$bin SA_BOUT[$name]=$bout
  done < <(python3 "$HELPER" sa "${files[@]}")
}

# gather NAME...: the clients' SAs, a ping through every tunnel (3), the appliance's affinity
# table and the gateways' own IKE_SA lists: what check_clients reads.
gather() {
  sa_summary "$@"
  ping_clients 3 0.2 "$@"
  affinity_refresh
  gateway_sas
}

# check_clients LABEL NAME...: each client is up (IKE_SA, CHILD_SA, virtual IP), on CL_EXPECT's
# gateway by its virtual IP's pool, by vpnlbctl show affinity and by the gateways' own IKE_SA
# lists (there and nowhere else), and its ping went through. Returns the number of misses.
check_clients() {
  local label=$1 name gw exp n=0 where
  shift
  for name in "$@"; do
    exp=${CL_EXPECT[$name]}
    gw=$(gw_of_vip "${SA_VIP[$name]}")
    local bad=()
    [ "${SA_IKE[$name]}" = ESTABLISHED ] || bad+=("IKE_SA ${SA_IKE[$name]}")
    [ "${SA_CHILD[$name]}" = INSTALLED ] || bad+=("CHILD_SA ${SA_CHILD[$name]}")
    [ "$gw" = "$exp" ] || bad+=("virtual IP ${SA_VIP[$name]} from ${gw}'s pool")
    [ "${AFF[${CL_ADDR[$name]}]:-none}" = "$exp" ] || bad+=("affinity ${AFF[${CL_ADDR[$name]}]:-none}")
    where=$(sa_gateways "$name.vpnlb.test")
    [ "$where" = "$exp " ] || bad+=("gateways with its IKE_SA: ${where:-none}")
    [ "${PING[$name]%/*}" = "${PING[$name]#*/}" ] || bad+=("ping ${PING[$name]}")
    client_verdict "$name" "$label: $name (${CL_ADDR[$name]}, scheduler: $exp)" "${bad[@]+"${bad[@]}"}" || n=$((n + 1))
  done
  return "$n"
}

# spread NAME...: "gw1 N gw2 N gw3 N" by affinity, and the scheduler's.
spread() {
  local name g1=0 g2=0 g3=0 e1=0 e2=0 e3=0
  for name in "$@"; do
    case ${AFF[${CL_ADDR[$name]}]:-} in gw1) g1=$((g1 + 1)) ;; gw2) g2=$((g2 + 1)) ;; gw3) g3=$((g3 + 1)) ;; esac
    case ${CL_EXPECT[$name]} in gw1) e1=$((e1 + 1)) ;; gw2) e2=$((e2 + 1)) ;; gw3) e3=$((e3 + 1)) ;; esac
  done
  echo "gw1 $g1, gw2 $g2, gw3 $g3 (scheduler: $e1/$e2/$e3)"
}

# ---------------------------------------------------------------------------------------------
lab_bins E2E_BIN_DIR

log "lab: $LAB_CLIENTS client namespaces, the gateways, a NAT with $NNAT clients behind it"
lab_up --clients "$LAB_CLIENTS"
nat_lab_up

log "PKI: lab CA, gateway and client certificates (RSA 3072)"
pki_ca "$PKI" || fail "pki: CA ($(tail -n 2 "$PKI/pki.log"))"
pki_key "$PKI" gateway 3072 || fail "pki: gateway key"
pki_key "$PKI" client 3072 || fail "pki: client key"
pki_cert "$PKI" gateway ocserv "CN=vpn.vpnlb.test" vpn.vpnlb.test "$VIP4" "$VIP6" || fail "pki: ocserv"

log "gateways: charon (responder, pools), ocserv, tcpdump on eth0"
mkdir -p "$PCAPS"
for i in 1 2 3; do
  gw=gw$i ns=vlb-gw$i dir="$OUT/gw$i"
  ike_gateway_start "$i"
  mkdir -p "$dir/ocserv"
  cp "$PKI/ocserv.pem" "$dir/ocserv/server.pem"
  cp "$PKI/gateway.key" "$dir/ocserv/server.key"
  (ocserv_start "$ns" "$dir/ocserv" "198.19.0.1$i" "198.18.$((139 + i)).0/24") || fail "ocserv on $gw"
  (capture_start "$ns" eth0 "$PCAPS" "$gw") || fail "tcpdump on $gw"
done

# The scheduler's answers (vpnlbd replay, same configuration): all up, gw2 down, gw1 draining.
lab_config conf/lab.toml "$OUT/lab.toml"
read -r INTERVAL_MS TIMEOUT_MS RISE FALL < <(lab_health_params "$OUT/lab.toml")
ADDRS=()
for ((i = 1; i <= LAB_CLIENTS; i++)); do ADDRS+=("198.18.0.$((10 + i))"); done
for ((i = N4 + 1; i <= LAB_CLIENTS; i++)); do ADDRS+=("2001:2:0:1::$((10 + i))"); done
ADDRS+=("$NAT_ADDR")
oracle() {
  python3 "$HELPER" oracle --vpnlbd "$VPNLBD" --config "$OUT/lab.toml" --work "$OUT/oracle" "$@" "${ADDRS[@]}"
}
while read -r a g; do EXP_UP[$a]=$g; done < <(oracle) || fail "oracle (all up)"
while read -r a g; do EXP_DOWN2[$a]=$g; done < <(oracle --state gw2=down) || fail "oracle (gw2 down)"
while read -r a g; do EXP_DRAIN1[$a]=$g; done < <(oracle --state gw1=draining) || fail "oracle (gw1 draining)"
if [ "${#EXP_UP[@]}" -ne "${#ADDRS[@]}" ] || [ "${#EXP_DOWN2[@]}" -ne "${#ADDRS[@]}" ] \
  || [ "${#EXP_DRAIN1[@]}" -ne "${#ADDRS[@]}" ]; then
  fail "oracle: not every address scheduled"
fi

# The clients: 1-20 IPv4 and 4 behind the NAT; from 27-39 three openconnect clients (one per
# gateway) and the late joiners of items 3 (would go to gw2) and 4 (would go to gw1); then the
# IPv6 clients, as many per gateway (by the scheduler), from the namespaces 21-39 left.
V4=() V6=() NATC=() OC=() L3=() L4=()
for ((i = 1; i <= N4; i++)); do
  add_client "c$i" "vlb-c$i" 4 "198.18.0.$((10 + i))" "198.18.0.$((10 + i))" v4
  V4+=("c$i")
done
for ((i = 1; i <= NNAT; i++)); do
  add_client "nat$i" "vlb-nat$i" 4 "198.18.200.$((10 + i))" "$NAT_ADDR" nat
  NATC+=("nat$i")
done
declare -A oc_gw=() used=() v6_on=()
for ((i = SPARE_FROM; i <= LAB_CLIENTS; i++)); do
  a=198.18.0.$((10 + i)) g=${EXP_UP[198.18.0.$((10 + i))]}
  used[c$i]=1
  if [ -z "${oc_gw[$g]:-}" ]; then
    oc_gw[$g]=c$i
    OC+=("c$i")
  elif [ "$g" = gw2 ] && [ "${#L3[@]}" -lt 2 ]; then
    add_client "c$i" "vlb-c$i" 4 "$a" "$a" late3
    L3+=("c$i")
  elif [ "$g" = gw1 ] && [ "${#L4[@]}" -lt 2 ]; then
    add_client "c$i" "vlb-c$i" 4 "$a" "$a" late4
    L4+=("c$i")
  else
    unset "used[c$i]"
  fi
done
for ((i = N4 + 1; i <= LAB_CLIENTS && ${#V6[@]} < N6; i++)); do
  a=2001:2:0:1::$((10 + i)) g=${EXP_UP[2001:2:0:1::$((10 + i))]}
  if [ -n "${used[c$i]:-}" ] || [ "${v6_on[$g]:-0}" -ge $((N6 / 3)) ]; then continue; fi
  v6_on[$g]=$((${v6_on[$g]:-0} + 1))
  add_client "c$i" "vlb-c$i" 6 "$a" "$a" v6
  V6+=("c$i")
done
if [ "${#OC[@]}" -ne 3 ] || [ "${#L3[@]}" -ne 2 ] || [ "${#L4[@]}" -ne 2 ] || [ "${#V6[@]}" -ne "$N6" ]; then
  fail "clients $((N4 + 1))-$LAB_CLIENTS: no openconnect client per gateway, two late joiners each for gw2 and gw1, and $N6 IPv6 clients spread over the gateways"
fi
for name in "${V4[@]}" "${V6[@]}" "${NATC[@]}"; do
  CL_EXPECT[$name]=${EXP_UP[${CL_ADDR[$name]}]}
done
for name in "${L3[@]}"; do CL_EXPECT[$name]=${EXP_DOWN2[${CL_ADDR[$name]}]}; done
for name in "${L4[@]}"; do CL_EXPECT[$name]=${EXP_DRAIN1[${CL_ADDR[$name]}]}; done
for name in "${!CL_EXPECT[@]}"; do CL_FIRST[$name]=${CL_EXPECT[$name]}; done

log "vpnlbd: conf/lab.toml (IKE health check every ${INTERVAL_MS} ms, timeout ${TIMEOUT_MS} ms, rise $RISE, fall $FALL)"
lab_daemon_start "$OUT/lab.toml" $((LIMIT_S + 30))
UP_LIMIT=$((RISE * INTERVAL_MS + TIMEOUT_MS + SLACK_MS))
DOWN_LIMIT=$((FALL * INTERVAL_MS + TIMEOUT_MS + SLACK_MS))
for gw in gw1 gw2 gw3; do wait_health "$gw" up "$UP_LIMIT" || true; done
[ "$(misses)" -eq 0 ] || fail "the gateways did not come up"

# --- items 1, 5, 6: 20 IPv4 clients, 6 IPv6 clients, 4 clients behind one NAT, all at once ---------
WAVE1=("${V4[@]}" "${V6[@]}" "${NATC[@]}")
log "items 1/5/6: starting ${#WAVE1[@]} strongSwan initiators ($N4 IPv4, $N6 IPv6, $NNAT behind $NAT_ADDR), $START_JOBS at a time"
t_wave=$(date +%s)
start_clients "${WAVE1[@]}"
wait_up 90 "" "${WAVE1[@]}"
log "items 1/5/6: IKE_SAs and CHILD_SAs up $(($(date +%s) - t_wave)) s after the first start; pinging through every tunnel"
gather "${WAVE1[@]}"
m1=0 m5=0 m6=0
check_clients "item 1" "${V4[@]}" || m1=$?
check_clients "item 5" "${V6[@]}" || m5=$?
check_clients "item 6" "${NATC[@]}" || m6=$?
# Behind one NAT: one affinity entry (the NAT's address), none for the inside addresses.
nat_entries=$(grep -c '"client": *"198\.18\.200\.' "$OUT/affinity.json" || true)
[ "$nat_entries" -eq 0 ] || { miss "item 6: affinity entries for inside addresses 198.18.200.x"; m6=$((m6 + 1)); }
[ -n "${AFF[$NAT_ADDR]:-}" ] || { miss "item 6: no affinity entry for $NAT_ADDR"; m6=$((m6 + 1)); }
nat_gws=$(for n in "${NATC[@]}"; do gw_of_vip "${SA_VIP[$n]}"; done | sort -u | tr '\n' ' ')
ITEM1_SPREAD=$(spread "${V4[@]}")
ITEM5_SPREAD=$(spread "${V6[@]}")
V6_IPFRAG=$(for n in "${V6[@]}"; do grep -q "fragmentation = no" "${CL_DIR[$n]}/swanctl.conf" && printf '%s ' "$n"; done)
cp "$OUT/affinity.json" "$OUT/affinity-wave1.json"
cp "$OUT/gwsas.txt" "$OUT/gwsas-wave1.txt"

# --- item 2: openconnect (TLS on TCP 443, then DTLS on UDP 443) to ocserv behind the VIP -----------
log "item 2: openconnect from ${OC[*]} (scheduler: $(for c in "${OC[@]}"; do printf '%s ' "${EXP_UP[198.18.0.$((10 + ${c#c}))]}"; done | sed 's/ $//'))"
declare -A OC_RESULT=() OC_GW=() OC_BYTES=()
m2=0
for name in "${OC[@]}"; do
  d="$OUT/clients/$name"
  mkdir -p "$d"
  cp "$PKI/ca.pem" "$d/ca.pem"
  CL_NS[$name]=vlb-$name CL_DIR[$name]=$d CL_FAM[$name]=4 CL_ADDR[$name]=198.18.0.$((10 + ${name#c}))
  CL_ROLE[$name]=oc CL_EXPECT[$name]=${EXP_UP[${CL_ADDR[$name]}]} CL_FIRST[$name]=${CL_EXPECT[$name]}
  openconnect_start "vlb-$name" "$d" "https://$VIP4/"
done
t_oc=$(date +%s)
for name in "${OC[@]}"; do
  d=${CL_DIR[$name]}
  while ! grep -q "DTLS connected" "$d/openconnect.log" 2>/dev/null || [ ! -f "$d/tun.env" ]; do
    [ $(($(date +%s) - t_oc)) -lt 30 ] || break
    sleep 0.2
  done
done
affinity_refresh
for name in "${OC[@]}"; do
  d=${CL_DIR[$name]} exp=${CL_EXPECT[$name]} bad=()
  grep -q "SSL connected and DTLS connected" "$d/openconnect.log" 2>/dev/null \
    || bad+=("no 'SSL connected and DTLS connected' in 30 s")
  ip4=$(sed -n 's/^INTERNAL_IP4_ADDRESS=//p' "$d/tun.env" 2>/dev/null || true)
  case $ip4 in 198.18.140.*) g=gw1 ;; 198.18.141.*) g=gw2 ;; 198.18.142.*) g=gw3 ;; *) g="-" ;; esac
  OC_GW[$name]=$g
  [ "$g" = "$exp" ] || bad+=("tunnel address ${ip4:-none} from ${g}'s ocserv")
  [ "${AFF[${CL_ADDR[$name]}]:-none}" = "$exp" ] || bad+=("affinity ${AFF[${CL_ADDR[$name]}]:-none}")
  ocl="$OUT/$exp/ocserv/ocserv.log"
  grep -q "${CL_ADDR[$name]}.* user logged in" "$ocl" || bad+=("$exp's ocserv did not log the session")
  grep -q "${CL_ADDR[$name]} setting up DTLS" "$ocl" || bad+=("$exp's ocserv did not log the DTLS set-up")
  for other in gw1 gw2 gw3; do
    [ "$other" = "$exp" ] && continue
    if grep -q "${CL_ADDR[$name]}" "$OUT/$other/ocserv/ocserv.log"; then bad+=("$other's ocserv saw it too"); fi
  done
  if [ "$g" != "-" ]; then
    out=$(timeout 15 ip netns exec "vlb-$name" ping -n -c 3 -i 0.2 -W 2 -s 1000 "198.18.$((139 + ${g#gw})).1" 2>&1 || true)
    echo "$out" >"$d/ping.log"
    rcv=$(sed -nE 's/.* ([0-9]+) received.*/\1/p' <<<"$out")
    PING[$name]="${rcv:-0}/3"
    [ "${rcv:-0}" = 3 ] || bad+=("ping ${PING[$name]}")
    OC_BYTES[$name]="$(ip netns exec "vlb-$name" cat /sys/class/net/oc0/statistics/rx_bytes 2>/dev/null || echo -)/$(ip netns exec "vlb-$name" cat /sys/class/net/oc0/statistics/tx_bytes 2>/dev/null || echo -)"
  else
    PING[$name]="0/3"
    OC_BYTES[$name]="-"
  fi
  if [ "${#bad[@]}" -gt 0 ]; then
    relevant "$d"
    miss "item 2: $name (${CL_ADDR[$name]}, scheduler: $exp): ${bad[*]}"
    m2=$((m2 + 1))
    OC_RESULT[$name]=MISS
  else
    OC_RESULT[$name]="SSL+DTLS"
  fi
done
for name in "${OC[@]}"; do peer_stop "${CL_DIR[$name]}" openconnect; done

# --- item 3: gw2's charon dies ---------------------------------------------------------------------
IKE_ALL=("${WAVE1[@]}")
sa_summary "${IKE_ALL[@]}"
affinity_refresh
declare -A SPI_BEFORE=()
GW2_CLIENTS=() OTHERS=()
for name in "${IKE_ALL[@]}"; do
  SPI_BEFORE[$name]=${SA_SPI[$name]}
  if [ "${AFF[${CL_ADDR[$name]}]:-}" = gw2 ]; then GW2_CLIENTS+=("$name"); else OTHERS+=("$name"); fi
done
nc_gw2_before=$(gw_field gw2 new_clients)
log "item 3: SIGKILL to gw2's charon (${#GW2_CLIENTS[@]} clients on gw2: ${GW2_CLIENTS[*]})"
T_KILL=$(now)
kill -KILL "$(cat "$OUT/gw2/run/charon.pid")"
wait_health gw2 down "$DOWN_LIMIT" || true
T_DOWN=$(now)
down_ms=$WAITED_MS
nc_gw2_down=$(gw_field gw2 new_clients)
log "item 3: gw2 down after $down_ms ms (limit $DOWN_LIMIT); new clients to gw2 so far: $nc_gw2_down; starting ${L3[*]} (scheduler with gw2 up: gw2)"
start_clients "${L3[@]}"
for name in "${GW2_CLIENTS[@]}"; do CL_EXPECT[$name]=${EXP_DOWN2[${CL_ADDR[$name]}]}; done
wait_up 60 gw2 "${GW2_CLIENTS[@]}" "${L3[@]}"
moved_s=$(python3 -c "import sys; print(f'{float(sys.argv[1]) - float(sys.argv[2]):.1f}')" "$(now)" "$T_KILL")
log "item 3: gw2's clients and the new ones up elsewhere ${moved_s} s after the kill; checking everyone"
IKE_ALL+=("${L3[@]}")
gather "${IKE_ALL[@]}"
m3=0
check_clients "item 3 (moved)" "${GW2_CLIENTS[@]}" || m3=$((m3 + $?))
dpd_restarts=0
for name in "${GW2_CLIENTS[@]}"; do
  if grep -q "restarting CHILD_SA" "${CL_DIR[$name]}/charon.log"; then dpd_restarts=$((dpd_restarts + 1)); fi
done
check_clients "item 3 (new)" "${L3[@]}" || m3=$((m3 + $?))
check_clients "item 3 (untouched)" "${OTHERS[@]}" || m3=$((m3 + $?))
for name in "${OTHERS[@]}"; do
  if [ "${SA_SPI[$name]}" != "${SPI_BEFORE[$name]}" ]; then
    relevant "${CL_DIR[$name]}"
    miss "item 3: $name (on ${CL_EXPECT[$name]}) has a new IKE_SA (${SPI_BEFORE[$name]} -> ${SA_SPI[$name]})"
    m3=$((m3 + 1))
  fi
done
for name in "${GW2_CLIENTS[@]}"; do
  if [ "${SA_SPI[$name]}" = "${SPI_BEFORE[$name]}" ]; then
    miss "item 3: $name kept its IKE_SA with dead gw2"
    m3=$((m3 + 1))
  fi
done
[ "$down_ms" -le "$DOWN_LIMIT" ] || m3=$((m3 + 1))
nc_gw2_after=$(gw_field gw2 new_clients)
[ "$nc_gw2_after" = "$nc_gw2_down" ] \
  || { miss "item 3: gw2 took $((nc_gw2_after - nc_gw2_down)) new clients while down"; m3=$((m3 + 1)); }
log "item 3: charon on gw2 again"
(charon_start vlb-gw2 "$OUT/gw2") || fail "charon on gw2 (restart)"
wait_health gw2 up "$UP_LIMIT" || true
T_UP=$(now)
up_ms=$WAITED_MS
[ "$up_ms" -le "$UP_LIMIT" ] || m3=$((m3 + 1))
: "$nc_gw2_before"

# --- item 4: drain gw1 -------------------------------------------------------------------------------
sa_summary "${IKE_ALL[@]}"
affinity_refresh
GW1_CLIENTS=()
declare -A SPI_DRAIN=()
for name in "${IKE_ALL[@]}"; do
  SPI_DRAIN[$name]=${SA_SPI[$name]}
  [ "${AFF[${CL_ADDR[$name]}]:-}" = gw1 ] && GW1_CLIENTS+=("$name")
done
log "item 4: gateway gw1 drain while its ${#GW1_CLIENTS[@]} clients ping (${GW1_CLIENTS[*]})"
ping_clients 12 0.25 "${GW1_CLIENTS[@]}" &
ping_job=$!
sleep 1
ctl gateway gw1 drain >"$OUT/drain.json" || miss "item 4: vpnlbctl gateway gw1 drain failed: $(cat "$OUT/drain.json")"
T_DRAIN=$(now)
nc_gw1_drain=$(gw_field gw1 new_clients)
wait "$ping_job" || true
m4=0 drain_clean=0
for name in "${GW1_CLIENTS[@]}"; do
  r=$(cat "${CL_DIR[$name]}/ping.result")
  if [ "$r" = 12/12 ]; then
    drain_clean=$((drain_clean + 1))
  else
    relevant "${CL_DIR[$name]}"
    miss "item 4: $name lost pings across the drain ($r)"
    m4=$((m4 + 1))
  fi
done
log "item 4: starting ${L4[*]} (scheduler with gw1 up: gw1)"
start_clients "${L4[@]}"
wait_up 45 "" "${L4[@]}"
IKE_ALL+=("${L4[@]}")
gather "${IKE_ALL[@]}"
check_clients "item 4 (new)" "${L4[@]}" || m4=$((m4 + $?))
check_clients "item 4 (gw1 kept)" "${GW1_CLIENTS[@]}" || m4=$((m4 + $?))
for name in "${GW1_CLIENTS[@]}"; do
  if [ "${SA_SPI[$name]}" != "${SPI_DRAIN[$name]}" ]; then
    miss "item 4: $name has a new IKE_SA after the drain"
    m4=$((m4 + 1))
  fi
done
[ "$(gw_field gw1 state)" = draining ] || { miss "item 4: gw1 is $(gw_field gw1 state), not draining"; m4=$((m4 + 1)); }
nc_gw1_after=$(gw_field gw1 new_clients)
[ "$nc_gw1_after" = "$nc_gw1_drain" ] \
  || { miss "item 4: drained gw1 took $((nc_gw1_after - nc_gw1_drain)) new clients"; m4=$((m4 + 1)); }
# Everyone else is still where item 3 left them.
for name in "${IKE_ALL[@]}"; do
  case " ${GW1_CLIENTS[*]} ${L4[*]} " in *" $name "*) continue ;; esac
  check_clients "item 4 (others)" "$name" || m4=$((m4 + $?))
done
sa_summary "${IKE_ALL[@]}" # the bytes, with the last pings
: "$T_DRAIN"

# --- the captures: every client's packets at one gateway --------------------------------------------
printf 'kill %s\ndown %s\nup %s\n' "$T_KILL" "$T_DOWN" "$T_UP" >"$OUT/times.txt"
: >"$OUT/expect.txt"
declare -A SEEN_ADDR=()
for name in "${IKE_ALL[@]}" "${OC[@]}"; do
  a=${CL_ADDR[$name]}
  [ -n "${SEEN_ADDR[$a]:-}" ] && continue
  SEEN_ADDR[$a]=1
  first=${CL_FIRST[$name]}
  if [ "$first" = gw2 ] && [ "${CL_ROLE[$name]}" != oc ]; then
    echo "$a $name $first ${EXP_DOWN2[$a]}" >>"$OUT/expect.txt"
  else
    echo "$a $name $first" >>"$OUT/expect.txt"
  fi
done
captures_check
m_pcap=$M_PCAP
# Class totals over every client at its gateways (client -> gateway direction).
CLASS_TOTALS=$(python3 - "$OUT/pcap-summary.json" <<'EOF'
import json, sys
tot = {}
for c in json.load(open(sys.argv[1])).values():
    for d in c["gateways"].values():
        for k, v in d["to"].items():
            tot[k] = tot.get(k, 0) + v
print(", ".join(f"{k} {v}" for k, v in sorted(tot.items())))
EOF
)
KA_FROM=$(python3 - "$OUT/pcap-summary.json" <<'EOF'
import json, sys
print(sum(d["from"].get("keepalive", 0) for c in json.load(open(sys.argv[1])).values() for d in c["gateways"].values()))
EOF
)

# --- the table ----------------------------------------------------------------------------------------
echo
printf '%-6s %-6s %-16s %-7s %-6s %-11s %-9s %-6s %-13s %s\n' client family address gateway sched \
  ike_sa child_sa ping bytes_in/out captures
for name in "${IKE_ALL[@]}"; do
  fam=${CL_FAM[$name]}
  [ "${CL_ROLE[$name]}" = nat ] && fam="4/NAT"
  [ "${CL_ROLE[$name]}" = late3 ] && fam="4/new3"
  [ "${CL_ROLE[$name]}" = late4 ] && fam="4/new4"
  printf '%-6s %-6s %-16s %-7s %-6s %-11s %-9s %-6s %-13s %s\n' "$name" "$fam" "${CL_ADDR[$name]}" \
    "${AFF[${CL_ADDR[$name]}]:--}" "${CL_EXPECT[$name]}" "${SA_IKE[$name]}" "${SA_CHILD[$name]}" \
    "${PING[$name]}" "${SA_BIN[$name]}/${SA_BOUT[$name]}" "${ROUTE[${CL_ADDR[$name]}]:--}"
done
for name in "${OC[@]}"; do
  printf '%-6s %-6s %-16s %-7s %-6s %-11s %-9s %-6s %-13s %s\n' "$name" "4/oc" "${CL_ADDR[$name]}" \
    "${OC_GW[$name]}" "${CL_EXPECT[$name]}" "TLS:443" "${OC_RESULT[$name]}" "${PING[$name]}" \
    "${OC_BYTES[$name]}" "${ROUTE[${CL_ADDR[$name]}]:--}"
done
echo

verdict() { if [ "$1" -eq 0 ]; then echo OK; else echo "MISS ($1)"; fi; }
RESULTS+=("item 1 IKEv2 + NAT-T, $N4 IPv4 clients: $(verdict "$m1"): IKE_SA, CHILD_SA (ESP in UDP 4500), ping through each tunnel; each client on the scheduler's gateway by its virtual IP's pool, by vpnlbctl show affinity and by that gateway's own IKE_SA list (no other's); spread $ITEM1_SPREAD")
RESULTS+=("item 2 TLS then DTLS, ${#OC[@]} openconnect clients: $(verdict "$m2"): 'SSL connected and DTLS connected', each on the scheduler's gateway (${OC[*]} -> $(for c in "${OC[@]}"; do printf '%s ' "${OC_GW[$c]}"; done | sed 's/ $//')); that gateway's ocserv (and no other) logged the session and its DTLS set-up; ping through")
RESULTS+=("item 3 gw2 dies (SIGKILL to charon): $(verdict "$m3"): gw2 down after $down_ms ms (limit $DOWN_LIMIT = fall $FALL x ${INTERVAL_MS} ms + timeout ${TIMEOUT_MS} + slack ${SLACK_MS}); its ${#GW2_CLIENTS[@]} clients re-established on the scheduler's gateway within ${moved_s} s of the kill ($dpd_restarts by DPD's restart); ${#L3[@]} new clients avoided gw2; gw2's new-client count $nc_gw2_down -> $nc_gw2_after while down; ${#OTHERS[@]} clients on gw1/gw3 kept their IKE_SAs; gw2 up again $up_ms ms after its charon restarted")
RESULTS+=("item 4 drain gw1: $(verdict "$m4"): $drain_clean of ${#GW1_CLIENTS[@]} gw1 clients lost no ping across the drain; all kept their IKE_SAs and stay pinned to gw1; ${#L4[@]} new clients -> $(for c in "${L4[@]}"; do printf '%s ' "${AFF[${CL_ADDR[$c]}]:--}"; done | sed 's/ $//') (scheduler with gw1 draining); gw1's new-client count $nc_gw1_drain -> $nc_gw1_after")
RESULTS+=("item 5 IPv6, $N6 clients (fewer than item 1's $N4, to stay in time): $(verdict "$m5"): as item 1 over the IPv6 VIP; spread $ITEM5_SPREAD; IKE_AUTH IP-fragmented (IPv6) for ${V6_IPFRAG% }")
RESULTS+=("item 6 one NAT ($NAT_ADDR, $NNAT clients behind it): $(verdict "$m6"): all up and pinging; one affinity entry ($NAT_ADDR -> ${AFF[$NAT_ADDR]:--}), none for the inside addresses; the tunnels' gateways: ${nat_gws% }")
RESULTS+=("captures (tcpdump on every gateway's eth0, the whole run): $(verdict "$m_pcap"): $(grep -vc '^MISS' "$OUT/evidence.txt") client addresses, each one's packets at one gateway only (gw2's clients: at gw2 until it was down, then only at their new gateway; nothing at gw2 while down); client->gateway packets by class: $CLASS_TOTALS; keepalives gateway->client: $KA_FROM; per client and class: $OUT/evidence.txt")
printf '%s\n' "${RESULTS[@]}"
log "done"
lab_finish
