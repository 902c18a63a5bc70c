#!/usr/bin/env bash
# Checks the real-rig profiles without a rig (perf/rig/README.md):
#   1. python3 -m py_compile of the TRex profile and its checker;
#   2. luac -p of the pktgen script, then the script itself under lua with a stand-in `pktgen`
#      table, once with each portStats API (pktgen <= 23.x and the port_stats_t one);
#   3. vpnlbd check of perf/rig/rig.toml;
#   4. check_trex.py: the profile against stand-ins with TRex's signatures, and its frames
#      (field engine emulated) replayed through vpnlbd: classes, no drops, all forwarded.
# Needs target/release/vpnlbd (cargo build --release), Scapy (python3-scapy), lua5.3 (else
# step 2 is skipped with a note). VPNLBD=path overrides the daemon.
set -euo pipefail
cd "$(dirname "$0")/../.."
RIG=perf/rig
VPNLBD=${VPNLBD:-target/release/vpnlbd}
export PYTHONDONTWRITEBYTECODE=1
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

step() { printf 'check: %s\n' "$*"; }

# A python3 with Scapy: the PATH's, else Debian's (python3-scapy).
PY=python3
if ! "$PY" -c 'import scapy' 2>/dev/null; then PY=/usr/bin/python3; fi
"$PY" -c 'import scapy' 2>/dev/null || { echo "check: no python3 with scapy (apt-get install python3-scapy)" >&2; exit 1; }

step "py_compile $RIG/trex_vpnlb.py $RIG/check_trex.py"
PYTHONPYCACHEPREFIX="$tmp/pycache" "$PY" -m py_compile "$RIG/trex_vpnlb.py" "$RIG/check_trex.py"

LUAC=$(command -v luac5.3 || command -v luac5.4 || command -v luac || true)
LUA=$(command -v lua5.3 || command -v lua5.4 || command -v lua || true)
if [ -n "$LUAC" ]; then
  step "$(basename "$LUAC") -p $RIG/pktgen-vpnlb.lua"
  "$LUAC" -p "$RIG/pktgen-vpnlb.lua"
else
  step "no luac: skipping the Lua syntax check (apt-get install lua5.3)"
fi
if [ -n "$LUA" ]; then
  # A stand-in for pktgen's Lua library: 1 Mpps out of each transmitting port, 99.9 % of it
  # arriving at the other port; portStats in the old (ports, "port") or the new (ports) form.
  cat >"$tmp/stub.lua" <<'EOF'
local api, script = arg[1], arg[2]
local pps, seen = 1000000, {}
local c, sending = {}, {}
local function zero() for p = 0, 1 do c[p] = { ipackets = 0, opackets = 0, imissed = 0, ierrors = 0, oerrors = 0 } end end
zero()
local function ports(pl) local t = {} for p in string.gmatch(pl, "%d+") do t[#t + 1] = tonumber(p) end return t end
local function copy(t) local o = {} for k, v in pairs(t) do o[k] = v end return o end
pktgen = {}
function pktgen.screen(s) seen.screen = s end
function pktgen.pcap(pl, s) assert(s == "on"); seen.pcap = pl end
function pktgen.set(pl, what, v)
  assert(what == "count" or what == "rate", "set " .. tostring(what)); seen[what] = v
end
function pktgen.clr() zero() end
function pktgen.start(pl) for _, p in ipairs(ports(pl)) do sending[p] = true end end
function pktgen.stop(pl) for _, p in ipairs(ports(pl)) do sending[p] = false end end
function pktgen.delay(ms)
  assert(math.type(ms) == "integer" or ms == math.floor(ms), "delay takes milliseconds")
  for p = 0, 1 do
    if sending[p] then
      local n = math.floor(pps * ms / 1000)
      c[p].opackets = c[p].opackets + n
      c[1 - p].ipackets = c[1 - p].ipackets + math.floor(n * 999 / 1000)
    end
  end
end
function pktgen.quit() print("stub: quit") end
if api == "old" then
  function pktgen.portStats(pl, kind)
    assert(kind == "port", "portStats(ports, 'port')")
    local t = { n = 0 }
    for _, p in ipairs(ports(pl)) do t[p] = copy(c[p]); t.n = t.n + 1 end
    return t
  end
else
  function pktgen.portStats(...)
    if select("#", ...) ~= 1 then error("portStats, wrong number of arguments") end
    local t = { n = 0 }
    for _, p in ipairs(ports((...))) do t[p] = { curr = copy(c[p]), sizes = {} }; t.n = t.n + 1 end
    return t
  end
end
dofile(script)
assert(seen.screen == "off" and seen.pcap and seen.count == 0 and seen.rate, "setup calls")
EOF
  for api in old new; do
    step "$(basename "$LUA") $RIG/pktgen-vpnlb.lua with a stand-in pktgen ($api portStats)"
    out=$(VPNLB_DURATION_S=3 VPNLB_SAMPLE_S=2 VPNLB_RATE=25 VPNLB_TX_PORTS=0,1 VPNLB_QUIT=1 \
      "$LUA" "$tmp/stub.lua" "$api" "$RIG/pktgen-vpnlb.lua")
    printf '%s\n' "$out" | sed 's/^/  /'
    for want in "client -> gateway: port 1 rx / port 0 tx = 99.9000 %" \
                "gateway -> client: port 0 rx / port 1 tx = 99.9000 %" \
                "stub: quit"; do
      printf '%s\n' "$out" | grep -qF "$want" || { echo "check: missing: $want" >&2; exit 1; }
    done
  done
else
  step "no lua: skipping the pktgen script run (apt-get install lua5.3)"
fi

[ -x "$VPNLBD" ] || { echo "check: $VPNLBD missing (cargo build --release)" >&2; exit 1; }
# `check` also runs the daemon's preflight (cores present, hugepages reserved): on a machine
# smaller than the rig's appliance, the file is checked with this machine's cores and no
# hugepages, everything else as shipped.
rig_conf=$RIG/rig.toml
if [ "$(nproc)" -lt 6 ] || ! grep -q '^HugePages_Free: *[1-9]' /proc/meminfo; then
  rig_conf=$tmp/rig-here.toml
  sed -e 's/^workers = .*/workers = [1]/' -e 's/^control_core = .*/control_core = 0/' \
    -e 's/^hugepages = true/hugepages = false/' "$RIG/rig.toml" >"$rig_conf"
  step "vpnlbd check --config $RIG/rig.toml (workers [1], control core 0, no hugepages: this machine)"
else
  step "vpnlbd check --config $RIG/rig.toml"
fi
"$VPNLBD" check --config "$rig_conf" 2>&1 | sed 's/^/  /'

step "$RIG/check_trex.py (profile vs TRex signatures; its frames through vpnlbd replay)"
"$PY" "$RIG/check_trex.py" "$VPNLBD" conf/lab.toml "$tmp"
step "all passed"
