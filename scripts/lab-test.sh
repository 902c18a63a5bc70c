#!/usr/bin/env bash
# Live test of vpnlbd in the lab of scripts/lab.sh (needs root: network namespaces).
#
# A client namespace resolves the VIP by ARP and pings it; a UDP 500 datagram from it reaches
# gw1's namespace with only the destination rewritten (source address and ports unchanged); gw1's
# answer reaches the client from the VIP. The appliance runs without static neighbors: every MAC
# it uses it learned by ARP. Everything is torn down on exit, failure included.
# LAB_TEST_BIN_DIR=DIR (or LAB_BIN_DIR) runs DIR/vpnlbd instead of building.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib/labtest.sh
source scripts/lib/labtest.sh

lab_begin lab-test out/lab-test
gw1_report() {
  echo "--- gw1 log ---"
  cat "$OUT/gw1.log" || true
}
lab_on_failure gw1_report

lab_need
lab_bins LAB_TEST_BIN_DIR
lab_up --clients 1

# The lab appliance without static neighbors; gw2 and gw3 down, so the client goes to gw1.
python3 - conf/lab.toml "$OUT/lab-arp.toml" <<'EOF'
import re, sys
text = open(sys.argv[1]).read()
text = re.sub(r"\[\[neighbor\]\]\naddress = \"[^\"]+\"\nmac = \"[^\"]+\"\n\n?", "", text)
for gw in ("gw2", "gw3"):
    text = text.replace(f'name = "{gw}"\n', f'name = "{gw}"\nstate = "down"\n')
assert "[[neighbor]]" not in text
# gw1's stand-in below is no IKE daemon: scripts/health-test.sh tests health checks with real ones.
text = text[: text.index("[[service.health_check]]")]
open(sys.argv[2], "w").write(text)
EOF

# gw1: a UDP responder on port 500 that logs what it received (source, source port, the
# address it was sent to, the length) and echoes it to the sender.
ip netns exec vlb-gw1 timeout 60 python3 -u - >"$OUT/gw1.log" 2>&1 <<'EOF' &
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.IPPROTO_IP, 8, 1)  # IP_PKTINFO: learn the destination address
s.bind(("0.0.0.0", 500))
while True:
    data, anc, _, (src, sport) = s.recvmsg(2048, 256)
    dst = socket.inet_ntoa(anc[0][2][8:12]) if anc else "?"  # in_pktinfo.ipi_addr
    print(f"got {src} {sport} {dst} {len(data)}", flush=True)
    s.sendto(data, (src, sport))
EOF
echo $! >"$OUT/gw1.pid" # stopped on exit like a peer

"$VPNLBD" --config "$OUT/lab-arp.toml" --run-for-s 60 \
  >"$OUT/report.json" 2>"$OUT/vpnlbd.log" &
DAEMON_PID=$!
for _ in $(seq 1 100); do
  grep -q "worker running" "$OUT/vpnlbd.log" 2>/dev/null && break
  kill -0 "$DAEMON_PID" 2>/dev/null || fail "vpnlbd exited early"
  sleep 0.1
done
grep -q "worker running" "$OUT/vpnlbd.log" || fail "vpnlbd did not start in 10 s"

echo "lab-test: ping the VIP from vlb-c1"
ip netns exec vlb-c1 ping -c 3 -i 0.2 -W 1 198.18.0.100 >"$OUT/ping.log" || fail "ping 198.18.0.100"
vip_mac=$(ip -n vlb-c1 neigh show 198.18.0.100 | awk '{print $5}')
[ "$vip_mac" = "02:00:00:00:01:01" ] || fail "client resolved the VIP to '$vip_mac'"

echo "lab-test: UDP 500 from 198.18.0.11:500 to the VIP"
# The first datagram meets an unresolved next hop (gw1; the client was learned from its ARP
# request for the VIP): the appliance holds it while it resolves gw1, so the first try is
# answered (an IKE initiator would retransmit after 1-2 s otherwise).
ip netns exec vlb-c1 timeout 20 python3 - >"$OUT/client.log" 2>&1 <<'EOF' || fail "no answer from the VIP"
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("198.18.0.11", 500))
s.settimeout(2.0)
# A bare IKEv2 IKE_SA_INIT header (28 bytes, no payloads): the appliance drops what is not IKE
# on the IKE port.
ike = b"labtest!" + bytes(8) + bytes([0, 0x20, 34, 0x08]) + bytes(4) + (28).to_bytes(4, "big")
for attempt in range(10):
    s.sendto(ike, ("198.18.0.100", 500))
    try:
        data, (src, sport) = s.recvfrom(2048)
    except socket.timeout:
        continue
    print(f"answer {src} {sport} {data[:8].decode()} after {attempt + 1} tries")
    sys.exit(0 if (src, sport, data) == ("198.18.0.100", 500, ike) else 1)
sys.exit(1)
EOF
cat "$OUT/client.log"
grep -q "after 1 tries$" "$OUT/client.log" || fail "the first datagram was not answered: it took retries"
grep -q "^got 198.18.0.11 500 198.19.0.11 28$" "$OUT/gw1.log" \
  || fail "gw1 did not get the datagram from 198.18.0.11:500 to 198.19.0.11"

kill -TERM "$DAEMON_PID"
wait "$DAEMON_PID" || fail "vpnlbd did not stop cleanly"
DAEMON_PID=""
python3 - "$OUT/report.json" <<'EOF' || fail "report check"
import json, sys
r = json.load(open(sys.argv[1]))
c, n, ctl = r["counters"], r["neighbors"], r["control"]
print(f"lab-test: appliance resolved {n['resolved']} neighbors by ARP/ND, heard {n['heard']}, "
      f"held {c['neighbor_held']} first packets, "
      f"echo replies {c['echo_replies']}, arp replies {c['arp_replies']}, "
      f"forwarded {c['tx_packets']}, drops {sum(c['drops'].values())}")
# gw1 and the client (on-link) were learned by ARP, nothing was configured statically: gw1 by
# the appliance's request, the client from its own request for the VIP (as a kernel learns).
assert n["resolved"] >= 1 and n["heard"] >= 1, n
assert ctl["arp_learned"] >= 1, ctl
assert c["echo_replies"] >= 3, c["echo_replies"]
assert c["arp_replies"] >= 1, c["arp_replies"]
# The first datagram waited for gw1's MAC instead of being dropped.
assert c["neighbor_held"] >= 1 and c["neighbor_released"] == c["neighbor_held"], c
assert c["drops"].get("no-neighbor", 0) == 0 and c["drops"].get("neighbor-hold-timeout", 0) == 0, c["drops"]
gw1 = r["counters"]["gateways"][0][0]
assert gw1["to_gateway_packets"] >= 1 and gw1["from_gateway_packets"] >= 1, gw1
EOF
echo "lab-test: OK"
