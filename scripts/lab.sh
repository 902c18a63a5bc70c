#!/usr/bin/env bash
# scripts/lab.sh: build, show or remove the lab topology (docs/lab.md) (conf/lab*.toml use it).
#
#   scripts/lab.sh up [--clients N] [--pair]   build it (idempotent: running it again only fills gaps)
#   scripts/lab.sh status                      list the lab namespaces, their links, MACs, addresses
#   scripts/lab.sh down                        remove every vlb-* namespace and root-namespace vlb-* link
#
# What `up` builds (every name starts with vlb-; addresses only from 198.18.0.0/15 and 2001:2::/48):
#   vlb-csw      namespace, bridge br0: the client L2 segment 198.18.0.0/24, 2001:2:0:1::/64
#   vlb-bsw      namespace, bridge br0: the backend L2 segment 198.19.0.0/24, 2001:2:0:2::/64
#   vlb-cl0      root-namespace veth end, appliance A's client port  (peer "cl0" in vlb-csw's br0)
#   vlb-bk0      root-namespace veth end, appliance A's backend port (peer "bk0" in vlb-bsw's br0)
#   vlb-cl1/bk1  the same for appliance B (only with --pair; peers "cl1"/"bk1")
#   vlb-c1..cN   client namespaces (default N=3, at most 39 so that they stay in docs/lab.md's .10-.49):
#                eth0 = 198.18.0.(10+i)/24, 2001:2:0:1::(10+i)/64 (the decimal digits written as the
#                last group: client 1 is 2001:2:0:1::11), MAC 02:00:00:00:01:<hex(10+i)>,
#                default routes via the appliance, 198.18.0.1 and 2001:2:0:1::1; peer "cI" in vlb-csw
#   vlb-up       upstream router: eth0 = 198.18.0.254/24, 2001:2:0:1::fe/64, MAC 02:00:00:00:01:fe,
#                forwarding on, 198.18.64.0/18 and 2001:2:0:64::/64 as local (AnyIP) routes on lo,
#                so a test can use any "client behind the router" address from inside vlb-up
#   vlb-gw1..3   gateways: eth0 = 198.19.0.11-13/24, 2001:2:0:2::11-13/64,
#                MAC 02:00:00:00:02:0b/0c/0d, default routes via 198.19.0.1 and 2001:2:0:2::1
#   vlb-app      empty namespace for appliance A's exception path (conf/lab.toml [exception]):
#                vpnlbd puts its TAPs there, with the appliance's addresses, and runs its health
#                checks from there (vlb-app-b likewise for appliance B, with --pair)
#
# The root-namespace ends carry no address (DPDK's net_af_packet owns them): IPv6 is off on them,
# ARP answers and IPv4 forwarding are off for them, they are up and promiscuous (the appliance's
# own MAC and the VRRP MAC differ from the interface MAC), and rx/tx checksum, TSO, GSO and GRO
# offloads are off. Every veth end in a namespace has the same offloads off (TX checksum offload
# left on there would hand af_packet UDP/TCP with partial checksums). IPv6 DAD, router
# advertisements and router solicitations are off in every lab namespace; the bridges have IGMP/MLD
# snooping and STP off, so VRRP adverts and ND multicast reach every port at once.
# `up` starts no service. Further namespaces (docs/lab.md: 198.18.0.50-99) may be plugged into vlb-csw:
#   ip link add name eth0 netns NS type veth peer name X netns vlb-csw
#   ip -n vlb-csw link set X master br0 up
#
# `down` also ends (TERM, then KILL after 2 s) any process still running in a vlb-* namespace,
# since a namespace that a process holds would outlive `ip netns del` with its links.
# Needs root, iproute2, ethtool, util-linux (flock), coreutils (timeout).
set -euo pipefail

readonly CMD_TIMEOUT=10      # seconds any one command may take
readonly LOCK_TIMEOUT=60     # seconds to wait for another lab.sh run to finish
readonly MAX_CLIENTS=39
readonly PREFIX=vlb-

die() { echo "lab.sh: $*" >&2; exit 1; }
warn() { echo "lab.sh: warning: $*" >&2; }

usage() {
    cat <<EOF
usage: $0 up [--clients N] [--pair]    build the lab (N on-link clients, 0..$MAX_CLIENTS, default 3;
                                        --pair adds appliance B's ports vlb-cl1 and vlb-bk1)
       $0 tool NAME N                  a tool host vlb-NAME on the backend segment, 198.19.0.N and
                                        2001:2:0:2::N (N 50..99, free for tools), for a Prometheus
                                        server or a flow collector; lab.sh up first
       $0 status                       show the lab namespaces, links, MACs and addresses
       $0 down                         remove all vlb-* namespaces and root-namespace vlb-* links
EOF
}

# run CMD...: CMD bounded in time.
run() { timeout -k 2 "$CMD_TIMEOUT" "$@"; }

# ipn NS ARGS...: `ip ARGS` inside namespace NS, or in the root namespace when NS is empty.
ipn() {
    local ns=$1
    shift
    if [[ -n $ns ]]; then run ip -n "$ns" "$@"; else run ip "$@"; fi
}

# nsx NS CMD...: CMD inside namespace NS (root namespace when NS is empty).
nsx() {
    local ns=$1
    shift
    if [[ -n $ns ]]; then run ip netns exec "$ns" "$@"; else run "$@"; fi
}

# sysctls NS KEY=VALUE...: write /proc/sys/KEY (slash-separated) in NS. Keys that do not exist
# (e.g. net/bridge/* without br_netfilter) are skipped.
sysctls() {
    local ns=$1
    shift
    # shellcheck disable=SC2016  # expanded by the inner shell
    nsx "$ns" sh -c 'for kv; do k=/proc/sys/${kv%%=*}; [ -e "$k" ] || continue; echo "${kv#*=}" > "$k" || exit 1; done' sh "$@"
}

link_exists() { ipn "$1" link show dev "$2" >/dev/null 2>&1; }

ns_list() { run ip netns list | awk -v p="$PREFIX" 'index($1, p) == 1 { print $1 }' | sort -V; }

ns_exists() { [[ -e /run/netns/$1 ]] && run ip -n "$1" link show lo >/dev/null 2>&1; }

# offloads_off NS IF: turn off the offloads that break af_packet and forwarding of partial checksums.
offloads_off() {
    local ns=$1 ifn=$2
    if ! nsx "$ns" ethtool -K "$ifn" rx off tx off tso off gso off gro off >/dev/null 2>&1; then
        # Some feature may be fixed on this kernel; turn off the others one by one and check tx.
        local f
        for f in rx tx tso gso gro; do
            nsx "$ns" ethtool -K "$ifn" "$f" off >/dev/null 2>&1 || true
        done
        if nsx "$ns" ethtool -k "$ifn" | grep -q '^tx-checksumming: on'; then
            die "cannot turn off TX checksum offload on $ifn${ns:+ in $ns}"
        fi
    fi
}

# ensure_ns NS: the namespace exists, with lo up and the lab's defaults for interfaces made later.
ensure_ns() {
    local ns=$1
    if ! ns_exists "$ns"; then
        run ip netns del "$ns" >/dev/null 2>&1 || true # stale /run/netns entry
        run ip netns add "$ns"
    fi
    ipn "$ns" link set lo up
    sysctls "$ns" \
        net/ipv6/conf/all/accept_dad=0 net/ipv6/conf/default/accept_dad=0 \
        net/ipv6/conf/all/accept_ra=0 net/ipv6/conf/default/accept_ra=0 \
        net/ipv6/conf/all/router_solicitations=0 net/ipv6/conf/default/router_solicitations=0 \
        net/ipv4/conf/all/rp_filter=0 net/ipv4/conf/default/rp_filter=0
}

# ensure_veth NS_A IF_A NS_B IF_B: a veth pair with these ends (NS empty = root namespace).
ensure_veth() {
    local nsa=$1 ifa=$2 nsb=$3 ifb=$4
    if link_exists "$nsa" "$ifa" && link_exists "$nsb" "$ifb"; then
        return 0
    fi
    # One end alone is a leftover (e.g. of a namespace being deleted, which the kernel finishes
    # asynchronously): remove it and make the pair again.
    if link_exists "$nsa" "$ifa"; then ipn "$nsa" link del dev "$ifa" 2>/dev/null || true; fi
    if link_exists "$nsb" "$ifb"; then ipn "$nsb" link del dev "$ifb" 2>/dev/null || true; fi
    local a=(name "$ifa") b=(name "$ifb")
    [[ -n $nsa ]] && a+=(netns "$nsa")
    [[ -n $nsb ]] && b+=(netns "$nsb")
    run ip link add "${a[@]}" type veth peer "${b[@]}"
}

# ensure_switch NS: the namespace with bridge br0 (no addresses, no IPv6, no STP, no snooping).
ensure_switch() {
    local ns=$1
    ensure_ns "$ns"
    # Bridged frames must not go through this namespace's netfilter (br_netfilter), and neither the
    # bridge nor its ports needs IPv6 (no link-local addresses, no MLD/RS noise on the segment).
    sysctls "$ns" \
        net/bridge/bridge-nf-call-iptables=0 net/bridge/bridge-nf-call-ip6tables=0 \
        net/bridge/bridge-nf-call-arptables=0 \
        net/ipv6/conf/all/disable_ipv6=1 net/ipv6/conf/default/disable_ipv6=1
    if ! link_exists "$ns" br0; then
        ipn "$ns" link add name br0 type bridge
    fi
    ipn "$ns" link set dev br0 type bridge stp_state 0 forward_delay 0 mcast_snooping 0
    ipn "$ns" link set dev br0 up
}

# plug SWITCH_NS PORT: PORT (a veth end in SWITCH_NS) into br0, up, offloads off.
plug() {
    local ns=$1 port=$2
    sysctls "$ns" "net/ipv6/conf/$port/disable_ipv6=1"
    offloads_off "$ns" "$port"
    ipn "$ns" link set dev "$port" master br0 up
}

# appliance_port ROOT_IF SWITCH_NS PORT: a root-namespace end for net_af_packet.
appliance_port() {
    local ifn=$1 sw=$2 port=$3
    ensure_veth "" "$ifn" "$sw" "$port"
    plug "$sw" "$port"
    # No IPv6 (no link-local, no RS/MLD/ND), no ARP replies, no forwarding of frames the kernel
    # itself might receive there: the appliance (DPDK) owns the wire.
    sysctls "" "net/ipv6/conf/$ifn/disable_ipv6=1" "net/ipv4/conf/$ifn/arp_ignore=8" \
        "net/ipv4/conf/$ifn/forwarding=0" "net/ipv4/conf/$ifn/rp_filter=0"
    ipn "" addr flush dev "$ifn"
    offloads_off "" "$ifn"
    ipn "" link set dev "$ifn" promisc on up
}

# leaf NS SWITCH_NS PORT MAC IPV4/LEN IPV6/LEN GW4 GW6: a host namespace with eth0 on the segment.
# GW4/GW6 may be empty (no default route).
leaf() {
    local ns=$1 sw=$2 port=$3 mac=$4 a4=$5 a6=$6 gw4=$7 gw6=$8
    ensure_ns "$ns"
    ensure_veth "$ns" eth0 "$sw" "$port"
    plug "$sw" "$port"
    sysctls "$ns" net/ipv6/conf/eth0/accept_dad=0 net/ipv6/conf/eth0/accept_ra=0 \
        net/ipv6/conf/eth0/router_solicitations=0 net/ipv6/conf/eth0/disable_ipv6=0
    offloads_off "$ns" eth0
    ipn "$ns" link set dev eth0 address "$mac"
    ipn "$ns" addr replace "$a4" dev eth0
    ipn "$ns" -6 addr replace "$a6" dev eth0 nodad
    ipn "$ns" link set dev eth0 up
    if [[ -n $gw4 ]]; then ipn "$ns" route replace default via "$gw4" dev eth0; fi
    if [[ -n $gw6 ]]; then ipn "$ns" -6 route replace default via "$gw6" dev eth0; fi
}

lock() {
    local dir=/run/lock
    [[ -d $dir ]] || dir=/tmp
    exec 9>"$dir/vpnlb-lab.lock"
    flock -w "$LOCK_TIMEOUT" 9 || die "another lab.sh run holds $dir/vpnlb-lab.lock"
}

need() {
    [[ $(id -u) -eq 0 ]] || die "must run as root"
    local t
    for t in ip ethtool timeout flock; do
        command -v "$t" >/dev/null || die "needs $t (apt-get install iproute2 ethtool coreutils util-linux)"
    done
}

cmd_up() {
    local clients=3 pair=0
    while [[ $# -gt 0 ]]; do
        case $1 in
            --clients) [[ $# -ge 2 ]] || die "--clients needs a number"; clients=$2; shift 2 ;;
            --clients=*) clients=${1#--clients=}; shift ;;
            --pair) pair=1; shift ;;
            -h | --help) usage; exit 0 ;;
            *) usage >&2; die "unknown argument to up: $1" ;;
        esac
    done
    if ! [[ $clients =~ ^[0-9]{1,3}$ ]] || ((10#$clients > MAX_CLIENTS)); then
        die "--clients must be 0..$MAX_CLIENTS (docs/lab.md gives lab.sh's clients 198.18.0.10-49)"
    fi
    clients=$((10#$clients))
    need
    lock

    ensure_switch vlb-csw
    ensure_switch vlb-bsw

    appliance_port vlb-cl0 vlb-csw cl0
    appliance_port vlb-bk0 vlb-bsw bk0
    if ((pair)); then
        appliance_port vlb-cl1 vlb-csw cl1
        appliance_port vlb-bk1 vlb-bsw bk1
    fi

    ensure_ns vlb-app
    if ((pair)); then
        ensure_ns vlb-app-b
    fi

    leaf vlb-up vlb-csw up 02:00:00:00:01:fe 198.18.0.254/24 2001:2:0:1::fe/64 "" ""
    sysctls vlb-up net/ipv4/ip_forward=1 net/ipv6/conf/all/forwarding=1 \
        net/ipv6/conf/all/accept_ra=0 net/ipv6/conf/eth0/accept_ra=0
    ipn vlb-up route replace local 198.18.64.0/18 dev lo
    ipn vlb-up -6 route replace local 2001:2:0:64::/64 dev lo

    local i n
    for ((i = 1; i <= clients; i++)); do
        n=$((10 + i))
        leaf "vlb-c$i" vlb-csw "c$i" "$(printf '02:00:00:00:01:%02x' "$n")" \
            "198.18.0.$n/24" "2001:2:0:1::$n/64" 198.18.0.1 2001:2:0:1::1
    done

    for i in 1 2 3; do
        n=$((10 + i))
        leaf "vlb-gw$i" vlb-bsw "gw$i" "$(printf '02:00:00:00:02:%02x' "$n")" \
            "198.19.0.$n/24" "2001:2:0:2::$n/64" 198.19.0.1 2001:2:0:2::1
    done

    echo "lab up: vlb-csw vlb-bsw vlb-cl0 vlb-bk0$( ((pair)) && echo ' vlb-cl1 vlb-bk1') vlb-app vlb-up" \
        "vlb-gw1..3$( ((clients)) && echo " vlb-c1..$clients")"
}

# cmd_tool NAME N: a host namespace vlb-NAME on the backend segment at 198.19.0.N (N 50..99, the
# range the lab leaves to tools), default route via the appliance.
cmd_tool() {
    local name=$1 n=$2
    [[ $name =~ ^[a-z][a-z0-9]{0,7}$ ]] || die "tool name must be 1-8 lower-case letters and digits"
    [[ $n =~ ^[0-9]{2}$ ]] && ((10#$n >= 50 && 10#$n <= 99)) || die "tool address must be 50..99"
    n=$((10#$n))
    need
    lock
    ns_exists vlb-bsw || die "no lab: run lab.sh up first"
    leaf "vlb-$name" vlb-bsw "t$name" "$(printf '02:00:00:00:02:%02x' "$n")" \
        "198.19.0.$n/24" "2001:2:0:2::$n/64" 198.19.0.1 2001:2:0:2::1
    echo "lab tool: vlb-$name at 198.19.0.$n, 2001:2:0:2::$n"
}

cmd_status() {
    local ns any=0
    for ns in $(ns_list); do
        any=1
        echo "$ns:"
        ipn "$ns" -o -br link show | while read -r name state mac _; do
            name=${name%@*}
            [[ $name == lo ]] && continue
            local addrs
            addrs=$(ipn "$ns" -br addr show dev "$name" | awk '{ $1 = ""; $2 = ""; sub(/^ +/, ""); print }')
            printf '  %-6s %-7s %-17s %s\n' "$name" "$state" "$mac" "$addrs"
        done
    done
    local links
    links=$(run ip -o -br link show | awk -v p="$PREFIX" 'index($1, p) == 1')
    if [[ -n $links ]]; then
        any=1
        echo "root namespace:"
        while read -r name state mac flags; do
            printf '  %-8s %-7s %-17s %s\n' "${name%@*}" "$state" "$mac" "$flags"
        done <<<"$links"
    fi
    ((any)) || echo "lab down (no vlb- namespace or link)"
}

cmd_down() {
    need
    lock
    local ns pids pid t
    for ns in $(ns_list); do
        pids=$(run ip netns pids "$ns" 2>/dev/null || true)
        if [[ -n $pids ]]; then
            warn "ending processes left in $ns: $(echo "$pids" | tr '\n' ' ')"
            for pid in $pids; do kill -TERM "$pid" 2>/dev/null || true; done
            for ((t = 0; t < 20; t++)); do
                [[ -z $(run ip netns pids "$ns" 2>/dev/null || true) ]] && break
                sleep 0.1
            done
            for pid in $(run ip netns pids "$ns" 2>/dev/null || true); do
                kill -KILL "$pid" 2>/dev/null || true
            done
        fi
        run ip netns del "$ns" || warn "could not delete namespace $ns"
    done
    local name
    for name in $(run ip -o link show | awk -F': ' -v p="$PREFIX" '{ sub(/@.*/, "", $2) } index($2, p) == 1 { print $2 }'); do
        run ip link del dev "$name" 2>/dev/null || true # its peer may have taken it along already
    done
    echo "lab down"
}

main() {
    [[ $# -ge 1 ]] || { usage >&2; exit 2; }
    local cmd=$1
    shift
    case $cmd in
        up) cmd_up "$@" ;;
        down) [[ $# -eq 0 ]] || die "down takes no arguments"; cmd_down ;;
        status) [[ $# -eq 0 ]] || die "status takes no arguments"; cmd_status ;;
        tool) [[ $# -eq 2 ]] || die "tool takes NAME and N"; cmd_tool "$@" ;;
        -h | --help | help) usage ;;
        *) usage >&2; exit 2 ;;
    esac
}

main "$@"
