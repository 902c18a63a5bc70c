# scripts/peers.sh: start and stop real peers inside lab namespaces (sourced by the lab tests).
#
#   charon_start NS DIR        strongSwan's charon in namespace NS, state and logs under DIR
#   tls_server_start NS ADDR PORT DIR [dtls]   openssl s_server (TLS on TCP, or DTLS on UDP)
#   tcp_listener_start NS ADDR PORT DIR        a TCP listener that accepts and closes
#   peer_stop DIR NAME         stop what *_start started under DIR with that name
#
# Facts these rely on (../shared/PEERS.md): one charon per namespace needs its own
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
    ip netns exec "$ns" timeout -s TERM "$PEER_LIFETIME" sh -c \
        'mount --bind "$1/run" /run && exec env STRONGSWAN_CONF="$1/strongswan.conf" /usr/lib/ipsec/charon' \
        charon "$dir" >"$dir/charon.out" 2>&1 &
    echo $! >"$dir/charon.pid"
    local i
    for i in $(seq 1 100); do
        [ -S "$dir/run/charon.vici" ] && break
        sleep 0.05
    done
    [ -S "$dir/run/charon.vici" ] || { echo "peers: charon in $ns did not start" >&2; return 1; }
    if [ -f "$dir/swanctl.conf" ]; then
        ip netns exec "$ns" swanctl --load-all --file "$dir/swanctl.conf" \
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

# peer_stop DIR NAME: stops DIR/NAME.pid's process (TERM, then KILL after 2 s).
peer_stop() {
    local pidfile="$1/$2.pid" pid i
    [ -f "$pidfile" ] || return 0
    pid=$(cat "$pidfile")
    rm -f "$pidfile"
    kill -TERM "$pid" 2>/dev/null || return 0
    for i in $(seq 1 20); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
}
