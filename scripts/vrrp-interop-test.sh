#!/usr/bin/env bash
# Interop test of vpnlbd's VRRPv3 with keepalived (Debian's, VRRPv3, VRID 51) in the lab of
# scripts/lab.sh (needs root: network namespaces). Issue 6: the two as a pair, both ways round;
# each sees the other's adverts, the higher priority is master, killing it hands over, and the
# states reported by `vpnlbctl show vrrp` and keepalived's notify script agree.
#
# vpnlbd is appliance A (conf/lab-pair-a.toml without `peer`/`sync_key`: a keepalived peer, VRRP
# timers only) on vlb-cl0/vlb-bk0. keepalived stands in for appliance B: vlb-cl1/vlb-bk1 (B's
# ports from `lab.sh up --pair`) move into a namespace of this test's own (vlb-kad) with B's MACs
# and addresses from conf/lab-pair-b.toml, and keepalived runs there with one vrrp_instance per
# router that `vpnlbctl show vrrp` lists (same side and family, exactly the same virtual
# addresses), advert_int 0.1, all in one vrrp_sync_group whose notify script writes the group's
# state to a file.
#
#   round 1: vpnlbd 200 (started first), keepalived 100. vpnlbd master, keepalived BACKUP, and
#            keepalived's own counters (SIGUSR2) show vpnlbd's adverts arriving on every
#            instance, without address-list errors. SIGKILL vpnlbd: keepalived MASTER. vpnlbd
#            again: it hears keepalived on every router, preempts, keepalived BACKUP. SIGTERM
#            vpnlbd: its priority-0 advert hands over at once.
#   round 2: vpnlbd 100 (master alone), keepalived 200 preempts it: keepalived MASTER, `show
#            vrrp` backup with master = keepalived's address and advert counters rising on every
#            router. SIGKILL keepalived: vpnlbd master. keepalived again (preempts), then
#            SIGTERM: vpnlbd master at once.
# At every stable point both sides must agree (one master, the other backup, for a second, every
# keepalived instance with its group), the backup must send no advert meanwhile (capture), and a
# client (vlb-c1) must reach the master: its cached ARP/ND entries follow the handover
# (gratuitous ARP, unsolicited NA), 198.18.0.1 and 2001:2:0:1::1 answer ping, and exactly one MAC
# answers ARP for 198.18.0.1: 00:00:5e:00:01:33 (ND: 00:00:5e:00:02:33) when vpnlbd is master,
# keepalived's interface MAC when it is (keepalived runs without use_vmac).
# Takeovers are timed from the kill to the state reported (notify script, show vrrp), and on the
# wire (capture of the client segment: last advert of the old master to first of the new), which
# must lie within [3 advert intervals, Master_Down_Interval + margin] after SIGKILL and within
# Skew_Time + margin after SIGTERM (the old master's last advert has priority 0).
#
# Prints a table of every check and `vrrp-interop: OK`, or exits non-zero on any miss. Everything
# (daemons, capture, the namespace, the lab) is torn down on exit, failure included. Bounded: every wait has a
# limit, and the run after the build stops after VRRP_INTEROP_LIMIT_S (default 150 s; a pass
# takes about 30 s). VRRP_INTEROP_BIN_DIR=DIR (or LAB_BIN_DIR) runs DIR/vpnlbd and DIR/vpnlbctl
# instead of building.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib/labtest.sh
source scripts/lib/labtest.sh

lab_begin vrrp-interop out/vrrp-interop
chmod 755 "$OUT" # keepalived runs a notify script only from a path no other user can write
readonly KNS=vlb-kad CLIENT_NS=vlb-c1 CLIENT_IP=198.18.0.11
readonly ADV_MS=100          # advert interval on both sides
readonly WIRE_MARGIN_MS=250  # on the wire, beyond Master_Down_Interval / Skew_Time
readonly REPORT_MARGIN_MS=600 # kill -> state reported: also process exit, notify fork, polling
readonly VMAC4=00:00:5e:00:01:33 VMAC6=00:00:5e:00:02:33
readonly FLOAT4=198.18.0.1 FLOAT6=2001:2:0:1::1
readonly KSTATS=/tmp/keepalived.stats # where keepalived 2.2 writes its SIGUSR2 statistics
readonly KDIR="$OUT/kad" EVENTS="$OUT/events.txt" WINDOWS="$OUT/windows.txt"
LAB_CTL_TIMEOUT=5
LAB_SHOW=("show vrrp")
LAB_DAEMON_WAIT_S=15

KPID="" TCPDUMP_PID="" NROUTERS=0 TABLE_SHOWN=0
RESULTS=()
: >"$EVENTS"
: >"$WINDOWS"
mkdir -p "$KDIR"

since_ms() { echo $((($(date +%s%N) - $1) / 1000000)); }

# record NAME OK DETAIL: a row of the result table. OK: 1 pass, 0 miss, "warn" (reported only).
record() {
  local name=$1 ok=$2 detail=${3:-} mark=ok
  case $ok in
    1) ;;
    warn) mark=warn ;;
    *)
      mark=FAIL
      miss "$name: $detail"
      ;;
  esac
  RESULTS+=("$(printf '%-54s %-4s %s' "$name" "$mark" "$detail")")
}
# ok_if CONDITION...: 1 when the test command succeeds, else 0.
ok_if() { if "$@"; then echo 1; else echo 0; fi; }

print_table() {
  TABLE_SHOWN=1
  [ "${#RESULTS[@]}" -gt 0 ] || return 0
  echo
  printf '%-54s %-4s %s\n' "check" "" "detail"
  printf '%s\n' "${RESULTS[@]}"
  echo
}

# signal_keepalived SIGNAL: its parent and VRRP child, from their pid files.
signal_keepalived() {
  local p pids=()
  for p in "$KDIR/vrrp.pid" "$KDIR/keepalived.pid"; do
    if [ -s "$p" ]; then pids+=("$(cat "$p")"); fi
  done
  if [ -n "$KPID" ]; then pids+=("$KPID"); fi
  for p in "${pids[@]}"; do kill "-$1" "$p" 2>/dev/null || true; done
}

# The failure report, after the library's: vpnlbd's latest log, keepalived's.
vrrp_report() {
  echo "--- vpnlbd log (tail) ---"
  tail -n 25 "$(ls -t "$OUT"/vpnlbd-*.log 2>/dev/null | head -n 1)" 2>/dev/null
  echo "--- keepalived log (tail) ---"
  tail -n 25 "$KDIR/keepalived.log" 2>/dev/null
  echo "--- keepalived notify log (tail) ---"
  tail -n 12 "$KDIR/notify.log" 2>/dev/null
  return 0
}
lab_on_failure vrrp_report
# On exit: keepalived, the capture, keepalived's namespace; the table of checks so far.
vrrp_stop() {
  if [ -n "$KPID" ]; then
    signal_keepalived TERM
    for _ in $(seq 1 20); do kill -0 "$KPID" 2>/dev/null || break; sleep 0.1; done
    signal_keepalived KILL
    wait "$KPID" 2>/dev/null
  fi
  if [ -n "$TCPDUMP_PID" ]; then
    kill "$TCPDUMP_PID" 2>/dev/null
    wait "$TCPDUMP_PID" 2>/dev/null
  fi
  rm -f "$KSTATS"
  if [ "$LAB_IS_UP" -eq 1 ]; then timeout 10 ip netns del "$KNS" 2>/dev/null; fi
  if [ "$TABLE_SHOWN" -eq 0 ]; then print_table; fi
  return 0
}
lab_on_exit vrrp_stop

lab_need keepalived tcpdump ip python3 timeout pgrep
# Checked before the lab exists: the teardown would remove another run's lab.
if pgrep -x vpnlbd >/dev/null; then fail "another vpnlbd is running (one at a time in the lab)"; fi
if pgrep -x keepalived >/dev/null; then fail "a keepalived is running already (statistics go to $KSTATS)"; fi

lab_bins VRRP_INTEROP_BIN_DIR
# The run after the build is bounded.
lab_limit "${VRRP_INTEROP_LIMIT_S:-150}"
T_START=$(date +%s)

# ---------------------------------------------------------------------------------------------
# Helpers in Python: B's ports, keepalived's config from `show vrrp`, its statistics, `show vrrp`
# summaries, a raw ARP probe, and what the capture says.
HELPER="$OUT/helper.py"
cat >"$HELPER" <<'EOF'
import json, socket, struct, sys, time, tomllib

def ports(toml):
    """An appliance's ports: (name, role, iface, mac, [addr/len])."""
    with open(toml, "rb") as f:
        conf = tomllib.load(f)
    out = []
    for p in conf["port"]:
        iface = dict(kv.split("=", 1) for kv in p["device"].split(",")[1:])["iface"]
        out.append((p["name"], p["role"], iface, p["mac"], p["addresses"]))
    return out

def cmd_ports(toml):
    for name, role, iface, mac, addrs in ports(toml):
        print(name, role, iface, mac, *addrs)

def cmd_routers(vrrp_json):
    v = json.load(open(vrrp_json))
    print("; ".join(f"{r['interface']}/{r['family']}: {' '.join(r['addresses'])}" for r in v["routers"]))

def cmd_kconf(vrrp_json, atoml, btoml, priority, notify, adv_ms, vips_out):
    """keepalived's config: one instance per router of vpnlbd's, on B's port of the same index."""
    v = json.load(open(vrrp_json))
    a, b = ports(atoml), ports(btoml)
    out = ["global_defs {", "  router_id vlb-kad", "  vrrp_version 3",
           "  script_user root", "  enable_script_security", "}", ""]
    names, vips = [], []
    for r in v["routers"]:
        i = r["interface"]
        if r["family"] == "ipv4" and not any(c.split("/")[0] == r["primary"] for c in a[i][4]):
            sys.exit(f"router on interface {i} advertises from {r['primary']}, not port {i}'s address")
        name, _, iface, _, _ = b[i]
        inst = f"{name}_{r['family']}"
        names.append(inst)
        plen = "/32" if r["family"] == "ipv4" else "/128"
        out += [f"vrrp_instance {inst} {{", "  state BACKUP", f"  interface {iface}",
                f"  virtual_router_id {v['vrid']}", f"  priority {priority}",
                f"  advert_int {int(adv_ms) / 1000:g}", "  virtual_ipaddress {"]
        out += [f"    {addr}{plen}" for addr in r["addresses"]]
        out += ["  }", f"  notify {notify}", "}", ""]
        vips += [f"{iface} {addr}{plen}" for addr in r["addresses"]]
    out += ["vrrp_sync_group VG {", "  group {"] + [f"    {n}" for n in names] + ["  }",
            f"  notify {notify}", "}"]
    print("\n".join(out))
    open(vips_out, "w").write("\n".join(vips) + "\n")

def cmd_kstats(path):
    """keepalived's statistics: instance received address_list_errors priority_zero_received."""
    inst, sect, rows = None, None, {}
    for line in open(path):
        s = line.strip()
        if line.startswith("VRRP Instance:"):
            inst = s.split(":", 1)[1].strip()
            rows[inst] = {"rx": 0, "addr": 0, "pz": 0}
        elif inst and s.endswith(":") and not line.startswith("    "):
            sect = s[:-1]
        elif inst and ":" in s:
            k, val = (x.strip() for x in s.split(":", 1))
            if sect == "Advertisements" and k == "Received":
                rows[inst]["rx"] = int(val)
            elif sect == "Packet Errors" and k == "Address List":
                rows[inst]["addr"] = int(val)
            elif sect == "Priority Zero" and k == "Received":
                rows[inst]["pz"] = int(val)
    for n, r in sorted(rows.items()):
        print(n, r["rx"], r["addr"], r["pz"])

def cmd_vsum(path):
    """`show vrrp --json` as key=value words for the shell."""
    v = json.load(open(path))
    words = {"state": v["state"], "master": v["master"] or "-",
             "adverts_in": v["adverts_in"], "priority_zero_in": v["priority_zero_in"],
             "errors": sum(v["errors"].values()) - v["errors"]["wrong_vrid"],
             "became_master": v["became_master"], "became_backup": v["became_backup"],
             "router_adverts_in": ",".join(str(r["adverts_in"]) for r in v["routers"]),
             "router_errors": ",".join(str(r["errors"]) for r in v["routers"])}
    print(" ".join(f"{k}={x}" for k, x in words.items()))

def cmd_arp(iface, myip, target, wait_ms):
    """One ARP request for target; prints the MACs that answered (sorted, unique)."""
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0806))
    s.bind((iface, 0))
    me = s.getsockname()[4]
    s.send(b"\xff" * 6 + me + b"\x08\x06" + struct.pack("!HHBBH", 1, 0x0800, 6, 4, 1) + me
           + socket.inet_aton(myip) + b"\0" * 6 + socket.inet_aton(target))
    end = time.monotonic() + int(wait_ms) / 1000
    macs = set()
    while (left := end - time.monotonic()) > 0:
        s.settimeout(left)
        try:
            f = s.recv(128)
        except socket.timeout:
            break
        if len(f) < 42 or f[12:14] != b"\x08\x06":
            continue
        op, sha, spa, tpa = struct.unpack("!H", f[20:22])[0], f[22:28], f[28:32], f[38:42]
        if op == 2 and spa == socket.inet_aton(target) and tpa == socket.inet_aton(myip):
            macs.add(":".join(f"{b:02x}" for b in sha))
    print(" ".join(sorted(macs)))

def frames(pcap):
    data = open(pcap, "rb").read()
    e = "<" if struct.unpack("<I", data[:4])[0] in (0xA1B2C3D4, 0xA1B23C4D) else ">"
    frac = 1e-9 if struct.unpack(e + "I", data[:4])[0] == 0xA1B23C4D else 1e-6
    off = 24
    while off + 16 <= len(data):
        sec, sub, incl, _ = struct.unpack(e + "IIII", data[off:off + 16])
        yield sec + sub * frac, data[off + 16:off + 16 + incl]
        off += 16 + incl

def adverts(pcap):
    """(time, source, priority) of the IPv4 VRRP adverts."""
    out = []
    for t, f in frames(pcap):
        if len(f) >= 42 and f[12:14] == b"\x08\x00" and f[23] == 112:
            ihl = (f[14] & 15) * 4
            out.append((t, socket.inet_ntoa(f[26:30]), f[14 + ihl + 2]))
    return out

def cmd_wire(pcap, events):
    """Per event (label, kill time ns, old master, new master): label gap_ms last_priority,
    the gap from the old master's last advert to the new one's first."""
    ads = adverts(pcap)
    for line in open(events):
        label, t_ns, old, new = line.split()
        t = int(t_ns) / 1e9
        olds = [a for a in ads if a[1] == old and a[0] <= t + 0.2]
        if not olds:
            print(label, "none", "-")
            continue
        last = max(olds)
        news = [a for a in ads if a[1] == new and a[0] > t - 0.001 and a[0] > last[0]]
        print(label, round((min(news)[0] - last[0]) * 1000) if news else "none", last[2])

def cmd_silent(pcap, windows):
    """Per window (label, from ns, to ns, backup's address): label adverts_from_the_backup."""
    ads = adverts(pcap)
    for line in open(windows):
        label, t0, t1, src = line.split()
        print(label, sum(1 for a in ads if a[1] == src and int(t0) / 1e9 <= a[0] <= int(t1) / 1e9))

def cmd_garp_replies(pcap, mac):
    """ARP replies from mac to gratuitous ARP (the reply's target address is its sender's)."""
    m = bytes.fromhex(mac.replace(":", ""))
    n = sum(1 for _, f in frames(pcap) if len(f) >= 42 and f[6:12] == m and f[12:14] == b"\x08\x06"
            and f[20:22] == b"\x00\x02" and f[28:32] == f[38:42])
    print(n)

globals()["cmd_" + sys.argv[1]](*sys.argv[2:])
EOF
py() { python3 "$HELPER" "$@"; }

# ---------------------------------------------------------------------------------------------
# The lab, with B's ports in a namespace of our own for keepalived.
lab_up --pair --clients 1
timeout 10 ip netns add "$KNS"
nsx() { timeout 10 ip netns exec "$KNS" "$@"; }
nsx sh -c 'for k in all default; do
  echo 0 > /proc/sys/net/ipv6/conf/$k/accept_dad; echo 0 > /proc/sys/net/ipv6/conf/$k/accept_ra
  echo 0 > /proc/sys/net/ipv6/conf/$k/router_solicitations; echo 0 > /proc/sys/net/ipv4/conf/$k/rp_filter
  echo 1 > /proc/sys/net/ipv4/conf/$k/arp_ignore; echo 2 > /proc/sys/net/ipv4/conf/$k/arp_announce
done'
nsx ip link set lo up
KAD_IFACES=() KAD_MAC="" KAD_ADDR=""
while read -r _ role iface mac addrs; do
  KAD_IFACES+=("$iface")
  timeout 10 ip link set "$iface" netns "$KNS"
  # lab.sh leaves it promiscuous for DPDK; keepalived's is an ordinary host's interface.
  nsx ip link set "$iface" address "$mac" promisc off
  nsx sh -c "echo 0 > /proc/sys/net/ipv6/conf/$iface/disable_ipv6"
  for a in $addrs; do
    if [[ $a == *:* ]]; then
      nsx ip -6 addr add "$a" dev "$iface" nodad
    else
      nsx ip addr add "$a" dev "$iface"
      if [ "$role" = client ] && [ -z "$KAD_ADDR" ]; then KAD_ADDR=${a%/*}; fi
    fi
  done
  if [ "$role" = client ]; then KAD_MAC=$mac; fi
  nsx ip link set "$iface" up
done < <(py ports conf/lab-pair-b.toml)
VPN_ADDR=$(py ports conf/lab-pair-a.toml | awk '$2 == "client" { for (i = 5; i <= NF; i++) if ($i !~ /:/) { sub(/\/.*/, "", $i); print $i; exit } }')
[ -n "$KAD_MAC" ] && [ -n "$KAD_ADDR" ] && [ -n "$VPN_ADDR" ] || fail "no client port with an IPv4 address in conf/lab-pair-[ab].toml"
for iface in "${KAD_IFACES[@]}"; do # keepalived's IPv6 adverts come from the link-local address
  for _ in $(seq 1 50); do
    if [ -n "$(nsx ip -6 -o addr show dev "$iface" scope link)" ]; then break; fi
    sleep 0.1
  done
done
log "lab up; keepalived's namespace $KNS: $(nsx ip -br addr | grep -v '^lo' | tr -s ' ' | tr '\n' ';')"

# The client segment's VRRP adverts and ARP.
timeout -s INT $((LIMIT_S + 30)) ip netns exec vlb-csw tcpdump -i br0 -n -U -s 128 \
  -w "$OUT/client-segment.pcap" 'ip proto 112 or ip6 proto 112 or arp' >"$OUT/tcpdump.log" 2>&1 &
TCPDUMP_PID=$!
for _ in $(seq 1 50); do
  if grep -q 'listening on' "$OUT/tcpdump.log"; then break; fi
  sleep 0.1
done

# ---------------------------------------------------------------------------------------------
# vpnlbd.
vstate() { ctl show vrrp 2>/dev/null | sed -n 's/^  "state": "\(.*\)",$/\1/p'; }
# vsum: `show vrrp` as words (state=... master=... adverts_in=...); vget WORDS KEY.
vsum() { ctl show vrrp >"$OUT/vrrp.json" && py vsum "$OUT/vrrp.json"; }
vget() { tr ' ' '\n' <<<"$1" | sed -n "s/^$2=//p"; }
zeros() { printf '0%.0s,' $(seq 1 "$NROUTERS") | sed 's/,$//'; }

# start_vpnlbd TAG PRIORITY: conf/lab-pair-a.toml without peer and sync key, at PRIORITY.
start_vpnlbd() {
  local tag=$1 prio=$2 cfg="$OUT/vpnlbd-$1.toml"
  lab_config conf/lab-pair-a.toml "$cfg"
  python3 - "$cfg" "$prio" <<'EOF'
import re, sys
path, prio = sys.argv[1:]
text = open(path).read()
text, n = re.subn(r'(?m)^(peer|sync_key)\s*=.*\n', '', text)
assert n == 2, "peer and sync_key lines"
head, ha = text.split("\n[ha]\n", 1)
ha, n = re.subn(r'(?m)^priority = \d+$', f"priority = {prio}", ha, count=1)
assert n == 1, "[ha] priority"
open(path, "w").write(head + "\n[ha]\n" + ha)
EOF
  lab_daemon_start "$cfg" $((LIMIT_S + 30)) "$OUT/vpnlbd-$tag.json" "$OUT/vpnlbd-$tag.log"
}

# stop_vpnlbd SIGNAL
stop_vpnlbd() {
  local rc=0
  kill "-$1" "$DAEMON_PID"
  wait "$DAEMON_PID" 2>/dev/null || rc=$?
  DAEMON_PID=""
  if [ "$1" = TERM ] && [ "$rc" -ne 0 ]; then record "vpnlbd exits cleanly on SIGTERM" 0 "exit status $rc"; fi
}

# ---------------------------------------------------------------------------------------------
# keepalived.
cat >"$KDIR/notify.sh" <<EOF
#!/bin/sh
# keepalived notify: TYPE NAME STATE PRIORITY. The group's state goes to $KDIR/state.
echo "\$(date +%s%N) \$1 \$2 \$3 \$4" >> "$KDIR/notify.log"
if [ "\$1" = GROUP ]; then echo "\$3" > "$KDIR/state.tmp" && mv "$KDIR/state.tmp" "$KDIR/state"; fi
EOF
chmod 755 "$KDIR" "$KDIR/notify.sh"
kstate() { cat "$KDIR/state" 2>/dev/null || true; }

# start_keepalived TAG PRIORITY: one instance per router in $OUT/routers.json.
start_keepalived() {
  local tag=$1 prio=$2
  py kconf "$OUT/routers.json" conf/lab-pair-a.toml conf/lab-pair-b.toml "$prio" "$KDIR/notify.sh" \
    "$ADV_MS" "$KDIR/vips" >"$KDIR/keepalived-$tag.conf"
  rm -f "$KDIR/state" "$KDIR/keepalived.pid" "$KDIR/vrrp.pid"
  echo "=== $tag (priority $prio)" >>"$KDIR/keepalived.log"
  echo "$(date +%s%N) START $tag" >>"$KDIR/notify.log"
  ip netns exec "$KNS" keepalived -n -l -D -G -P -R -f "$KDIR/keepalived-$tag.conf" \
    -p "$KDIR/keepalived.pid" -r "$KDIR/vrrp.pid" >>"$KDIR/keepalived.log" 2>&1 </dev/null &
  KPID=$!
  for _ in $(seq 1 100); do
    if [ -n "$(kstate)" ] && [ -s "$KDIR/vrrp.pid" ]; then return 0; fi
    kill -0 "$KPID" 2>/dev/null || fail "keepalived ($tag) exited early"
    sleep 0.05
  done
  fail "keepalived ($tag) did not start (no notify)"
}

# kill_keepalived SIGNAL: signals it. After SIGKILL the addresses it held stay on the
# interfaces: they are removed, as if its machine had died with it.
kill_keepalived() {
  signal_keepalived "$1"
  if [ "$1" = KILL ]; then
    while read -r iface addr; do nsx ip addr del "$addr" dev "$iface" 2>/dev/null || true; done <"$KDIR/vips"
  fi
}

# reap_keepalived: waits (5 s at most) until it is gone; forgets its state.
reap_keepalived() {
  for _ in $(seq 1 50); do
    kill -0 "$KPID" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$KPID" 2>/dev/null; then fail "keepalived still running 5 s after it was stopped"; fi
  wait "$KPID" 2>/dev/null || true
  KPID=""
  rm -f "$KDIR/state" "$KDIR/keepalived.pid" "$KDIR/vrrp.pid"
}

# kstats TAG: keepalived's counters (SIGUSR2) as "instance received address_errors prio0_received".
kstats() {
  local tag=$1
  rm -f "$KSTATS"
  kill -USR2 "$(cat "$KDIR/keepalived.pid")"
  for _ in $(seq 1 40); do
    if [ -f "$KSTATS" ] && [ "$(grep -c '^VRRP Instance:' "$KSTATS")" -ge "$NROUTERS" ] \
      && [ "$(wc -l <"$KSTATS")" -ge $((19 * NROUTERS)) ]; then break; fi
    sleep 0.05
  done
  [ -f "$KSTATS" ] || fail "keepalived wrote no statistics to $KSTATS"
  mv "$KSTATS" "$KDIR/stats-$tag.txt"
  py kstats "$KDIR/stats-$tag.txt"
}

# first_notify STATE SINCE_NS: ms from SINCE_NS to the group's first STATE notify after it.
first_notify() {
  awk -v s="$2" -v want="$1" '$2 == "GROUP" && $4 == want && $1 > s { print int(($1 - s) / 1000000); exit }' "$KDIR/notify.log"
}

# ---------------------------------------------------------------------------------------------
# Waits and checks.

# wait_for LIMIT_MS CMD...: until CMD succeeds; prints the ms it took, fails after LIMIT_MS.
wait_for() {
  local limit=$1 t0
  shift
  t0=$(now_ms)
  while :; do
    if "$@"; then echo $(($(now_ms) - t0)); return 0; fi
    [ $(($(now_ms) - t0)) -le "$limit" ] || return 1
    sleep 0.01
  done
}
is_pair() { [ "$(vstate)" = "$1" ] && [ "$(kstate)" = "$2" ]; }
kad_is() { [ "$(kstate)" = "$1" ]; }

# agree LABEL VPN_STATE KAD_STATE: both sides report these states for a second, every keepalived
# instance is in its group's state, and the backup sends no advert meanwhile (checked at the end).
agree() {
  local label=$1 vs=$2 ks=$3 got=() i t0 bad inst backup
  t0=$(date +%s%N)
  for i in 1 2 3 4 5; do
    got+=("$(vstate)/$(kstate)")
    if [ "$i" -lt 5 ]; then sleep 0.25; fi
  done
  if [ "$vs" = master ]; then backup=$KAD_ADDR; else backup=$VPN_ADDR; fi
  echo "${label// /-} $t0 $(date +%s%N) $backup" >>"$WINDOWS"
  bad=$(printf '%s\n' "${got[@]}" | grep -vx "$vs/$ks" | head -n 1 || true)
  # The last notify of every instance since keepalived started.
  inst=$(awk '$2 == "START" { delete s } $2 == "INSTANCE" { s[$3] = $4 } END { for (n in s) print n "=" s[n] }' \
    "$KDIR/notify.log" | sort | tr '\n' ' ')
  inst=${inst% }
  if [ -n "$bad" ]; then
    record "$label: vpnlbd $vs, keepalived $ks" 0 "show vrrp/notify went $bad within 1 s"
  elif [ "$(wc -w <<<"$inst")" -ne "$NROUTERS" ] || tr ' ' '\n' <<<"$inst" | grep -qv "=$ks\$"; then
    record "$label: vpnlbd $vs, keepalived $ks" 0 "keepalived's instances: $inst"
  else
    record "$label: vpnlbd $vs, keepalived $ks" 1 "show vrrp and notify for 1 s; all $NROUTERS instances $ks"
  fi
}

cn() { timeout 10 ip netns exec "$CLIENT_NS" "$@"; }
neigh_mac() { cn ip neigh show "$1" dev eth0 | awk '{ for (i = 1; i < NF; i++) if ($i == "lladdr") print $(i + 1) }'; }
neigh_is() { [ "$(neigh_mac "$1")" = "$2" ]; }

# client LABEL WHO MAC4 MAC6 [cached]: the client reaches the master and only the master. With
# "cached", its neighbor entries (from before the handover) must have followed within 1 s.
client() {
  local label=$1 who=$2 mac4=$3 mac6=$4 cached=${5:-} bad=() m4 m6 answers
  if [ -n "$cached" ]; then
    wait_for 1000 neigh_is "$FLOAT4" "$mac4" >/dev/null || true
    wait_for 200 neigh_is "$FLOAT6" "$mac6" >/dev/null || true
    m4=$(neigh_mac "$FLOAT4") m6=$(neigh_mac "$FLOAT6")
    if [ "$m4 $m6" != "$mac4 $mac6" ]; then bad+=("cached neighbors $m4 $m6"); fi
  fi
  cn ping -c 1 -W 1 "$FLOAT4" >/dev/null 2>&1 || bad+=("no echo from $FLOAT4")
  cn ping -6 -c 1 -W 1 "$FLOAT6" >/dev/null 2>&1 || bad+=("no echo from $FLOAT6")
  answers=$(cn python3 "$HELPER" arp eth0 "$CLIENT_IP" "$FLOAT4" 300)
  if [ "$answers" != "$mac4" ]; then bad+=("ARP answered by '$answers'"); fi
  m6=$(neigh_mac "$FLOAT6")
  if [ "$m6" != "$mac6" ]; then bad+=("$FLOAT6 at '$m6'"); fi
  if [ "${#bad[@]}" -eq 0 ]; then
    record "$label: client sees $who only" 1 "${cached:+cache followed; }ping; ARP by $mac4 only; ND $mac6"
  else
    record "$label: client sees $who only" 0 "$(IFS=';'; echo "${bad[*]}") (want $mac4 / $mac6)"
  fi
}

# mdi PRIORITY: Master_Down_Interval (RFC 5798) in ms; skew PRIORITY: Skew_Time in ms.
skew() { echo $(((256 - $1) * ADV_MS / 256)); }
mdi() { echo $((3 * ADV_MS + $(skew "$1"))); }

# event LABEL T_NS OLD NEW KIND BACKUP_PRIORITY: a takeover to time on the wire at the end.
declare -A WIRE_KIND=() WIRE_PRIO=() WIRE_MS=()
event() { echo "$1 $2 $3 $4" >>"$EVENTS"; WIRE_KIND[$1]=$5 WIRE_PRIO[$1]=$6; }

# takeover LABEL T_NS LIMIT_MS SIGNAL WHAT CMD...: CMD polled until it holds; a row with the time
# from T_NS (the kill) to the new state, which must be within LIMIT_MS.
takeover() {
  local label=$1 t=$2 limit=$3 sig=$4 what=$5 ms=""
  shift 5
  while :; do
    if "$@"; then ms=$(since_ms "$t"); break; fi
    [ "$(since_ms "$t")" -le 3000 ] || break
    sleep 0.005
  done
  if [ "$what" = notify ] && [ -n "$ms" ]; then ms=$(first_notify MASTER "$t"); fi
  if [ -z "$ms" ]; then
    record "$label" 0 "no takeover 3 s after SIG$sig"
  else
    record "$label" "$(ok_if [ "$ms" -le "$limit" ])" "$ms ms after SIG$sig ($what; limit $limit)"
  fi
}
vpn_is_master() { [ "$(vstate)" = master ]; }

# settles LABEL VPN_STATE KAD_STATE SINCE: the pair reaches these states within 3 s (a row, with
# the time it took from SINCE, the moment the new one started).
settles() {
  local ms
  if ms=$(wait_for 3000 is_pair "$2" "$3"); then
    record "$1" 1 "keepalived $3 $ms ms after $4"
  else
    record "$1" 0 "show vrrp $(vstate), notify $(kstate) 3 s after start"
  fi
}

# ---------------------------------------------------------------------------------------------
log "round 1: vpnlbd priority 200, keepalived priority 100"
start_vpnlbd r1 200
wait_for 3000 is_pair master "" >/dev/null || fail "vpnlbd alone did not become master"
ctl show vrrp >"$OUT/routers.json"
NROUTERS=$(json routers:len <"$OUT/routers.json")
log "vpnlbd's routers (interface/family: virtual addresses): $(py routers "$OUT/routers.json")"
start_keepalived r1 100
wait_for 3000 is_pair master BACKUP >/dev/null || true
agree "r1 start" master BACKUP
s=$(vsum)
record "r1 show vrrp: master is vpnlbd, no errors" \
  "$(ok_if [ "$(vget "$s" master) $(vget "$s" errors) $(vget "$s" router_errors)" = "$VPN_ADDR 0 $(zeros)" ])" \
  "master $(vget "$s" master); errors $(vget "$s" errors), per router $(vget "$s" router_errors)"
client "r1 start" vpnlbd "$VMAC4" "$VMAC6"
k1=$(kstats r1a)
sleep 0.5
k2=$(kstats r1b)
rows=$(join <(echo "$k1") <(echo "$k2"))
record "r1 keepalived counts vpnlbd's adverts, every instance" \
  "$(ok_if [ "$(awk '$5 > $2 && $2 > 0 && $6 == 0' <<<"$rows" | wc -l)" -eq "$NROUTERS" ])" \
  "$(awk '{ printf "%s %d->%d, ", $1, $2, $5 } END { }' <<<"$rows")address-list errors $(awk '{ n += $6 } END { print n + 0 }' <<<"$rows")"

log "round 1: SIGKILL vpnlbd"
t=$(date +%s%N)
stop_vpnlbd KILL
takeover "r1 vpnlbd killed: keepalived MASTER" "$t" $(($(mdi 100) + REPORT_MARGIN_MS)) KILL notify kad_is MASTER
event r1-kill "$t" "$VPN_ADDR" "$KAD_ADDR" kill 100
client "r1 after SIGKILL" keepalived "$KAD_MAC" "$KAD_MAC" cached
sleep 1

log "round 1: vpnlbd again; it preempts"
start_vpnlbd r1-restart 200
settles "r1 vpnlbd restarted: it preempts" master BACKUP "vpnlbd's socket answered"
s=$(vsum)
ok=1
for n in $(vget "$s" router_adverts_in | tr ',' ' '); do [ "$n" -gt 0 ] || ok=0; done
[ "$(vget "$s" errors) $(vget "$s" router_errors)" = "0 $(zeros)" ] || ok=0
[ "$(vget "$s" became_backup) $(vget "$s" became_master)" = "1 1" ] || ok=0
record "r1 vpnlbd heard keepalived on every router first" "$ok" \
  "adverts_in per router $(vget "$s" router_adverts_in); errors $(vget "$s" errors); became backup $(vget "$s" became_backup), master $(vget "$s" became_master)"
agree "r1 after preemption" master BACKUP
client "r1 after preemption" vpnlbd "$VMAC4" "$VMAC6" cached
sleep 1

log "round 1: SIGTERM vpnlbd (priority-0 advert)"
t=$(date +%s%N)
kill -TERM "$DAEMON_PID"
takeover "r1 vpnlbd stopped: keepalived MASTER" "$t" $(($(skew 100) + REPORT_MARGIN_MS)) TERM notify kad_is MASTER
event r1-term "$t" "$VPN_ADDR" "$KAD_ADDR" term 100
stop_vpnlbd TERM
k=$(kstats r1c)
record "r1 keepalived got priority 0 on every instance" "$(ok_if [ "$(awk '$4 >= 1' <<<"$k" | wc -l)" -eq "$NROUTERS" ])" \
  "$(awk '{ printf "%s %d ", $1, $4 }' <<<"$k")"
kill_keepalived TERM
reap_keepalived

# ---------------------------------------------------------------------------------------------
log "round 2: vpnlbd priority 100, keepalived priority 200"
start_vpnlbd r2 100
wait_for 3000 is_pair master "" >/dev/null || fail "vpnlbd alone did not become master (round 2)"
start_keepalived r2 200
settles "r2 keepalived 200 preempts vpnlbd 100" backup MASTER "keepalived's first notify"
agree "r2 start" backup MASTER
s1=$(vsum)
client "r2 start" keepalived "$KAD_MAC" "$KAD_MAC" cached
s2=$(vsum)
ok=1
read -ra a1 <<<"$(vget "$s1" router_adverts_in | tr ',' ' ')"
read -ra a2 <<<"$(vget "$s2" router_adverts_in | tr ',' ' ')"
for i in "${!a1[@]}"; do [ "${a2[$i]}" -gt "${a1[$i]}" ] || ok=0; done
[ "$(vget "$s2" master) $(vget "$s2" errors) $(vget "$s2" router_errors)" = "$KAD_ADDR 0 $(zeros)" ] || ok=0
record "r2 show vrrp: master keepalived, adverts_in rising" "$ok" \
  "master $(vget "$s2" master); per router $(vget "$s1" router_adverts_in) -> $(vget "$s2" router_adverts_in); errors $(vget "$s2" errors)"
k=$(kstats r2a)
record "r2 keepalived heard vpnlbd on every instance first" \
  "$(ok_if [ "$(awk '$2 > 0 && $3 == 0' <<<"$k" | wc -l)" -eq "$NROUTERS" ])" \
  "$(awk '{ printf "%s %d, ", $1, $2 }' <<<"$k")address-list errors $(awk '{ n += $3 } END { print n + 0 }' <<<"$k")"

log "round 2: SIGKILL keepalived"
t=$(date +%s%N)
kill_keepalived KILL
takeover "r2 keepalived killed: vpnlbd master" "$t" $(($(mdi 100) + REPORT_MARGIN_MS)) KILL "show vrrp" vpn_is_master
event r2-kill "$t" "$KAD_ADDR" "$VPN_ADDR" kill 100
reap_keepalived
client "r2 after SIGKILL" vpnlbd "$VMAC4" "$VMAC6" cached
sleep 1

log "round 2: keepalived again (preempts), then SIGTERM"
start_keepalived r2-restart 200
settles "r2 keepalived restarted: it preempts" backup MASTER "keepalived's first notify"
agree "r2 after preemption" backup MASTER
client "r2 after preemption" keepalived "$KAD_MAC" "$KAD_MAC" cached
sleep 1
pz0=$(vget "$(vsum)" priority_zero_in)
t=$(date +%s%N)
kill_keepalived TERM
takeover "r2 keepalived stopped: vpnlbd master" "$t" $(($(skew 100) + REPORT_MARGIN_MS)) TERM "show vrrp" vpn_is_master
event r2-term "$t" "$KAD_ADDR" "$VPN_ADDR" term 100
reap_keepalived
pz1=$(vget "$(vsum)" priority_zero_in)
record "r2 show vrrp counted keepalived's priority 0" "$(ok_if [ "$pz1" -gt "$pz0" ])" "priority_zero_in $pz0 -> $pz1"
client "r2 after SIGTERM" vpnlbd "$VMAC4" "$VMAC6" cached
stop_vpnlbd TERM

# ---------------------------------------------------------------------------------------------
# The capture.
sleep 0.2
kill -INT "$TCPDUMP_PID" 2>/dev/null || true
wait "$TCPDUMP_PID" 2>/dev/null || true
TCPDUMP_PID=""
while read -r label gap prio; do
  kind=${WIRE_KIND[$label]} p=${WIRE_PRIO[$label]}
  if [ "$kind" = kill ]; then
    lo=$((3 * ADV_MS)) hi=$(($(mdi "$p") + WIRE_MARGIN_MS)) what="Master_Down_Interval $(mdi "$p") ms"
  else
    lo=0 hi=$(($(skew "$p") + WIRE_MARGIN_MS)) what="Skew_Time $(skew "$p") ms; last advert priority $prio"
  fi
  ok=0
  if [ "$gap" != none ] && [ "$gap" -ge "$lo" ] && [ "$gap" -le "$hi" ]; then ok=1; fi
  if [ "$kind" = term ] && [ "$prio" != 0 ]; then ok=0; fi
  WIRE_MS[$label]=$gap
  record "wire: $label, last advert of old to first of new" "$ok" "$gap ms (bounds $lo-$hi; $what)"
done < <(py wire "$OUT/client-segment.pcap" "$EVENTS")
quiet=$(py silent "$OUT/client-segment.pcap" "$WINDOWS")
record "wire: the backup sent no advert in the agreed windows" "$(ok_if [ -z "$(awk '$2 != 0' <<<"$quiet")" ])" \
  "$(awk '{ printf "%s%s: %d", (NR > 1 ? ", " : ""), $1, $2 }' <<<"$quiet")"
# An announcement is never answered: when keepalived preempts, its gratuitous ARPs arrive in the
# burst that carries its advert, while vpnlbd is still master; no "VIP is-at" reply may follow.
garp=$(py garp_replies "$OUT/client-segment.pcap" "$VMAC4")
record "wire: vpnlbd's ARP replies to gratuitous ARP" "$(ok_if [ "$garp" -eq 0 ])" \
  "$garp (a host should not answer an announcement)"
log "takeover on the wire: vpnlbd killed ${WIRE_MS[r1-kill]:-?} ms, vpnlbd stopped ${WIRE_MS[r1-term]:-?} ms," \
  "keepalived killed ${WIRE_MS[r2-kill]:-?} ms, keepalived stopped ${WIRE_MS[r2-term]:-?} ms; run took $(($(date +%s) - T_START)) s"
print_table
lab_finish
