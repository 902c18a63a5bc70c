# scripts/peers.sh: start and stop real peers inside lab namespaces (sourced by the lab tests).
#
#   charon_start NS DIR        strongSwan's charon in namespace NS, state and logs under DIR
#   tls_server_start NS ADDR PORT DIR [dtls]   openssl s_server (TLS on TCP, or DTLS on UDP)
#   tcp_listener_start NS ADDR PORT DIR        a TCP listener that accepts and closes
#   ocserv_start NS DIR ADDR NET   ocserv (TLS on TCP 443, DTLS on UDP 443) on ADDR, pool NET
#   openconnect_start NS DIR URL   an openconnect client (own tun script, no vpnc-script)
#   capture_start NS IF DIR NAME   tcpdump on IF into DIR/NAME.pcap
#   pki_ca DIR / pki_key DIR NAME [BITS] / pki_cert DIR KEY NAME DN [SAN...]   a lab PKI
#   peer_stop DIR NAME         stop what *_start started under DIR with that name
#
# Facts these rely on (checked with Debian bookworm's packages): one charon per namespace needs its own
# STRONGSWAN_CONF, vici socket and /run (its pid file path is fixed); `ip netns exec` gives each
# command a private mount namespace, so a bind mount on /run stays inside it. Every peer runs
# under `timeout`, so nothing outlives a test by more than PEER_LIFETIME seconds even if the
# test's cleanup never runs; `scripts/lab.sh down` also ends whatever is left in lab namespaces.

PEER_LIFETIME=${PEER_LIFETIME:-900}

# charon_start NS DIR: a charon with the plugins the lab needs (no ESP in the kernel: libipsec).
# Connections come from DIR/swanctl.conf when the caller wrote one (loaded with swanctl).
# Settings in DIR/strongswan.extra.conf, when the caller wrote one (strongswan.conf syntax, e.g.
# `charon { retransmit_timeout = 1 }`), are included last and override the defaults here.
charon_start() {
    local ns=$1 dir=$2
    mkdir -p "$dir/run"
    # A restart: the last run's socket and pid file would fool the wait below and charon.
    rm -f "$dir/run/charon.vici" "$dir/run/charon.pid"
    cat >"$dir/strongswan.conf" <<EOF
charon {
    load = random nonce drbg aes sha1 sha2 hmac kdf gmp pem pkcs1 x509 pubkey revocation constraints kernel-libipsec kernel-netlink socket-default vici updown
    install_routes = no
    install_virtual_ip = yes
    plugins {
        vici {
            socket = unix://$dir/run/charon.vici
        }
    }
    filelog {
        log {
            path = $dir/charon.log
            time_format = %H:%M:%S
            flush_line = yes
            default = 1
            ike = 2
            net = 1
        }
    }
}
EOF
    if [ -f "$dir/strongswan.extra.conf" ]; then
        echo "include $dir/strongswan.extra.conf" >>"$dir/strongswan.conf"
    fi
    # shellcheck disable=SC2016  # expanded by the inner shell
    ip netns exec "$ns" timeout -s TERM "$PEER_LIFETIME" sh -c \
        'mount --bind "$1/run" /run && exec env STRONGSWAN_CONF="$1/strongswan.conf" /usr/lib/ipsec/charon' \
        charon "$dir" >"$dir/charon.out" 2>&1 &
    echo $! >"$dir/charon.pid"
    for _ in $(seq 1 100); do
        [ -S "$dir/run/charon.vici" ] && break
        sleep 0.05
    done
    [ -S "$dir/run/charon.vici" ] || { echo "peers: charon in $ns did not start" >&2; return 1; }
    if [ -f "$dir/swanctl.conf" ]; then
        timeout 30 ip netns exec "$ns" swanctl --load-all --file "$dir/swanctl.conf" \
            --uri "unix://$dir/run/charon.vici" >"$dir/swanctl.log" 2>&1 \
            || { echo "peers: swanctl --load-all in $ns failed" >&2; cat "$dir/swanctl.log" >&2; return 1; }
    fi
}

# A throwaway self-signed certificate for the TLS/DTLS servers (made once per DIR).
_peer_cert() {
    local dir=$1
    [ -f "$dir/cert.pem" ] && return 0
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 \
        -subj /CN=vpnlb-lab-gateway -keyout "$dir/key.pem" -out "$dir/cert.pem" >/dev/null 2>&1
}

# tls_server_start NS ADDR PORT DIR [dtls]
tls_server_start() {
    local ns=$1 addr=$2 port=$3 dir=$4 mode=${5:-tls}
    mkdir -p "$dir"
    _peer_cert "$dir"
    local proto=() name=tls
    if [ "$mode" = dtls ]; then
        proto=(-dtls1_2 -listen)
        name=dtls
    fi
    ip netns exec "$ns" timeout -s TERM "$PEER_LIFETIME" openssl s_server "${proto[@]}" \
        -accept "$addr:$port" -cert "$dir/cert.pem" -key "$dir/key.pem" -quiet -naccept 100000 \
        </dev/null >"$dir/$name.log" 2>&1 &
    echo $! >"$dir/$name.pid"
}

# tcp_listener_start NS ADDR PORT DIR
tcp_listener_start() {
    local ns=$1 addr=$2 port=$3 dir=$4
    mkdir -p "$dir"
    ip netns exec "$ns" timeout -s TERM "$PEER_LIFETIME" python3 -c '
import socket, sys
s = socket.socket(socket.AF_INET6 if ":" in sys.argv[1] else socket.AF_INET)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2])))
s.listen(64)
while True:
    c, _ = s.accept()
    c.close()
' "$addr" "$port" >"$dir/tcp.log" 2>&1 &
    echo $! >"$dir/tcp.pid"
}

# _peer_wait_log FILE PATTERN WHAT: waits (5 s at most) until a line of FILE matches PATTERN, the
# sign that WHAT started; otherwise says so and returns 1.
_peer_wait_log() {
    for _ in $(seq 1 100); do
        grep -q "$2" "$1" 2>/dev/null && return 0
        sleep 0.05
    done
    echo "peers: $3 did not start" >&2
    return 1
}

# peer_stop DIR NAME: stops DIR/NAME.pid's process (TERM, then KILL after 2 s).
peer_stop() {
    local pidfile="$1/$2.pid" pid
    [ -f "$pidfile" ] || return 0
    pid=$(cat "$pidfile")
    rm -f "$pidfile"
    kill -TERM "$pid" 2>/dev/null || return 0
    for _ in $(seq 1 20); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
}

# --- ocserv and openconnect (checked on Debian bookworm: certificate + plain password file) ------------

OCSERV_USER=${OCSERV_USER:-lab}
OCSERV_PASSWORD=${OCSERV_PASSWORD:-lab-password}

# ocserv_start NS DIR ADDR NET: ocserv listening on ADDR, TCP and UDP 443, handing out NET (a /24;
# its .1 is the server's end of every tunnel). Needs DIR/server.pem and DIR/server.key (e.g. from
# pki_cert); makes DIR/passwd for OCSERV_USER. Waits until it listens.
ocserv_start() {
    local ns=$1 dir=$2 addr=$3 net=$4
    mkdir -p "$dir"
    rm -f "$dir/ocserv.daemon.pid" "$dir"/ocserv.sock*
    if [ ! -f "$dir/passwd" ]; then
        printf '%s\n%s\n' "$OCSERV_PASSWORD" "$OCSERV_PASSWORD" \
            | ocpasswd -c "$dir/passwd" "$OCSERV_USER" >/dev/null 2>&1
    fi
    cat >"$dir/ocserv.conf" <<EOF
auth = "plain[passwd=$dir/passwd]"
listen-host = $addr
tcp-port = 443
udp-port = 443
run-as-user = nobody
run-as-group = nogroup
socket-file = $dir/ocserv.sock
pid-file = $dir/ocserv.daemon.pid
server-cert = $dir/server.pem
server-key = $dir/server.key
isolate-workers = false
use-occtl = false
max-clients = 256
max-same-clients = 0
rate-limit-ms = 0
max-ban-score = 0
keepalive = 30
dpd = 10
mobile-dpd = 10
switch-to-tcp-timeout = 25
try-mtu-discovery = false
tls-priorities = "NORMAL:%SERVER_PRECEDENCE:%COMPAT:-VERS-SSL3.0:-VERS-TLS1.0:-VERS-TLS1.1:-VERS-TLS1.3"
auth-timeout = 40
cookie-timeout = 60
deny-roaming = false
log-level = 2
device = vpns
predictable-ips = true
ipv4-network = ${net%/*}
ipv4-netmask = 255.255.255.0
route = $net
ping-leases = false
cisco-client-compat = true
dtls-legacy = true
EOF
    ip netns exec "$ns" timeout -s TERM "$PEER_LIFETIME" ocserv -f -c "$dir/ocserv.conf" \
        >"$dir/ocserv.log" 2>&1 </dev/null &
    echo $! >"$dir/ocserv.pid"
    _peer_wait_log "$dir/ocserv.log" "main: initialized" "ocserv in $ns"
}

# openconnect_start NS DIR URL: openconnect to URL as OCSERV_USER, trusting DIR/ca.pem. Its tun
# script (DIR/tun-script.sh) only configures the tun device (address, MTU, split-include routes)
# and writes what the server pushed to DIR/tun.env; the stock vpnc-script would rewrite the
# host's /etc/resolv.conf. Output in DIR/openconnect.log ("... SSL connected and DTLS connected").
openconnect_start() {
    local ns=$1 dir=$2 url=$3 ifname=${4:-oc0}
    mkdir -p "$dir"
    rm -f "$dir/tun.env"
    cat >"$dir/tun-script.sh" <<'EOF'
#!/bin/sh
# openconnect's script for the lab: the tun device only (no DNS, no default route).
[ "$reason" = connect ] || exit 0
ip link set dev "$TUNDEV" up mtu "${INTERNAL_IP4_MTU:-1300}"
[ -n "$INTERNAL_IP4_ADDRESS" ] && ip addr add "$INTERNAL_IP4_ADDRESS/32" dev "$TUNDEV"
[ -n "$INTERNAL_IP6_ADDRESS" ] && ip -6 addr add "$INTERNAL_IP6_ADDRESS" dev "$TUNDEV"
i=0
while [ "$i" -lt "${CISCO_SPLIT_INC:-0}" ]; do
    eval "net=\$CISCO_SPLIT_INC_${i}_ADDR len=\$CISCO_SPLIT_INC_${i}_MASKLEN"
    ip route replace "$net/$len" dev "$TUNDEV"
    i=$((i + 1))
done
env | grep -E '^(INTERNAL_IP|CISCO_SPLIT|TUNDEV|VPNGATEWAY)' | sort >"$(dirname "$0")/tun.env"
EOF
    chmod +x "$dir/tun-script.sh"
    printf '%s\n' "$OCSERV_PASSWORD" >"$dir/password"
    ip netns exec "$ns" timeout -s TERM "$PEER_LIFETIME" openconnect --non-inter \
        --passwd-on-stdin -u "$OCSERV_USER" --cafile "$dir/ca.pem" --interface "$ifname" \
        --script "$dir/tun-script.sh" "$url" <"$dir/password" >"$dir/openconnect.log" 2>&1 &
    echo $! >"$dir/openconnect.pid"
}

# capture_start NS IF DIR NAME: tcpdump on IF in NS into DIR/NAME.pcap (packet-buffered, first
# 200 bytes of each frame), until peer_stop DIR NAME.
capture_start() {
    local ns=$1 ifname=$2 dir=$3 name=$4
    mkdir -p "$dir"
    ip netns exec "$ns" timeout -s TERM "$PEER_LIFETIME" tcpdump -i "$ifname" -n -s 200 -U \
        -Z root -w "$dir/$name.pcap" 'ip or ip6' >"$dir/$name.tcpdump.log" 2>&1 &
    echo $! >"$dir/$name.pid"
    _peer_wait_log "$dir/$name.tcpdump.log" "listening on" "tcpdump on $ifname in $ns"
}

# --- a lab PKI with strongSwan's pki (RSA through the gmp plugin; PEM for charon and ocserv) -----

# pki_ca DIR: DIR/ca.key and the self-signed DIR/ca.pem (valid 2 days).
pki_ca() {
    local dir=$1
    mkdir -p "$dir"
    pki --gen --type rsa --size 2048 --outform pem >"$dir/ca.key" 2>>"$dir/pki.log" \
        && pki --self --ca --lifetime 2 --in "$dir/ca.key" --type rsa --dn "CN=vpnlb lab CA" \
            --outform pem >"$dir/ca.pem" 2>>"$dir/pki.log"
}

# pki_key DIR NAME [BITS]: an RSA key DIR/NAME.key.
pki_key() {
    pki --gen --type rsa --size "${3:-2048}" --outform pem >"$1/$2.key" 2>>"$1/pki.log"
}

# pki_cert DIR KEY NAME DN [SAN...]: DIR/NAME.pem for DIR/KEY.key, issued by DIR's CA; the SANs
# may be names or addresses.
pki_cert() {
    local dir=$1 key=$2 name=$3 dn=$4 san
    shift 4
    local sans=()
    for san in "$@"; do sans+=(--san "$san"); done
    pki --pub --in "$dir/$key.key" --type rsa 2>>"$dir/pki.log" \
        | pki --issue --lifetime 2 --cacert "$dir/ca.pem" --cakey "$dir/ca.key" --dn "$dn" \
            "${sans[@]}" --flag serverAuth --flag clientAuth --outform pem \
            >"$dir/$name.pem" 2>>"$dir/pki.log"
}
