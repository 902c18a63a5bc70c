-- pktgen-vpnlb.lua: replay the vpnlb lab mix through the appliance with pktgen-DPDK and report
-- what came out.
--
-- The traffic is the capture generator's (target/release/vpnlb-capgen): pktgen replays, in a
-- loop, what its -s files hold, so the client count is chosen when the captures are written:
--
--   vpnlb-capgen --clients 10000 --ipv6-clients 2500 --tls-clients 2500 --duration-s 20 --out-dir cap
--   pktgen -l 0-4 -n 4 -a 0000:5e:00.0 -a 0000:5e:00.1 -- -P -T -m "[1:2].0,[3:4].1" \
--       -s 0:cap/client.pcap -s 1:cap/backend.pcap -f perf/rig/pktgen-vpnlb.lua
--
-- Port 0 faces the appliance's client port (client.pcap: clients -> VIP), port 1 its backend
-- port (backend.pcap: gateways -> clients, sent only when VPNLB_TX_PORTS includes 1).
-- Settings, from the environment (sudo -E) or from Lua globals of the same name set before this
-- file runs:
--   VPNLB_RATE        percent of line rate per transmitting port (pktgen "set rate"), default 10
--   VPNLB_DURATION_S  seconds of traffic, default 30
--   VPNLB_TX_PORTS    ports that replay their capture, "0" (default) or "0,1"
--   VPNLB_CLIENT_PORT, VPNLB_BACKEND_PORT   default 0 and 1
--   VPNLB_SAMPLE_S    seconds between progress lines, default 5
--   VPNLB_QUIT        1: quit pktgen at the end (for scripted runs)
-- At the end it prints tx/rx packets and packets per second per port and the forwarded ratio:
-- backend-port rx / client-port tx (client -> gateway) and, with both ports sending,
-- client-port rx / backend-port tx (gateway -> client).
--
-- Lua API used (app/lpktgenlib.c): pktgen.screen, pcap, set(ports, "rate"|"count", v), clr,
-- start, stop, delay(ms), portStats, quit. portStats changed: pktgen.portStats(ports, "port")
-- [pid].opackets in older releases (the 2020-2023 sources), pktgen.portStats(ports)[pid].curr
-- .opackets with the port_stats_t API of current ones (docs/LUA_API.md); both are handled.

local function setting(name, default)
    local v = rawget(_G, name)
    if v == nil then v = os.getenv(name) end
    if v == nil or v == "" then return default end
    return tostring(v)
end

local function whole(s)
    local n = tonumber(s)
    if n == nil or n ~= math.floor(n) then return nil end
    return math.floor(n)
end

local RATE = tonumber(setting("VPNLB_RATE", "10"))
local DURATION_S = whole(setting("VPNLB_DURATION_S", "30"))
local TX_PORTS = setting("VPNLB_TX_PORTS", "0")
local CLIENT_PORT = whole(setting("VPNLB_CLIENT_PORT", "0"))
local BACKEND_PORT = whole(setting("VPNLB_BACKEND_PORT", "1"))
local SAMPLE_S = whole(setting("VPNLB_SAMPLE_S", "5"))
local QUIT = setting("VPNLB_QUIT", "0") == "1"

assert(RATE and RATE > 0 and RATE <= 100, "VPNLB_RATE: percent of line rate, in (0, 100]")
assert(DURATION_S and DURATION_S >= 1, "VPNLB_DURATION_S: whole seconds, at least 1")
assert(SAMPLE_S and SAMPLE_S >= 1, "VPNLB_SAMPLE_S: whole seconds, at least 1")
assert(CLIENT_PORT and BACKEND_PORT and CLIENT_PORT ~= BACKEND_PORT,
       "VPNLB_CLIENT_PORT and VPNLB_BACKEND_PORT: two different port numbers")

local backend_sends = false
for p in string.gmatch(TX_PORTS, "%d+") do
    if tonumber(p) == BACKEND_PORT then backend_sends = true end
end

-- Cumulative counters of one port, whichever portStats the pktgen build has.
local function counters(pid)
    local ok, t = pcall(pktgen.portStats, tostring(pid), "port")
    if not ok or type(t) ~= "table" or t[pid] == nil then
        t = pktgen.portStats(tostring(pid))
    end
    local s = t[pid]
    if s.curr ~= nil then s = s.curr end
    return {
        ipackets = s.ipackets or 0, opackets = s.opackets or 0,
        imissed = s.imissed or 0, ierrors = s.ierrors or 0, oerrors = s.oerrors or 0,
    }
end

local function snapshot()
    return { [CLIENT_PORT] = counters(CLIENT_PORT), [BACKEND_PORT] = counters(BACKEND_PORT) }
end

local function delta(a, b, pid, field)
    return b[pid][field] - a[pid][field]
end

local function ratio(num, den)
    if den == 0 then return "n/a" end
    return string.format("%.4f %%", 100.0 * num / den)
end

print(string.format("vpnlb rig: replaying on port(s) %s at %s %% of line rate for %d s",
                    TX_PORTS, tostring(RATE), DURATION_S))
print("  (port " .. CLIENT_PORT .. " needs -s " .. CLIENT_PORT .. ":client.pcap"
      .. (backend_sends and (", port " .. BACKEND_PORT .. " -s " .. BACKEND_PORT .. ":backend.pcap") or "")
      .. " on pktgen's command line)")

pktgen.screen("off")
pktgen.stop(TX_PORTS)
pktgen.pcap(TX_PORTS, "on")
pktgen.set(TX_PORTS, "count", 0)  -- 0: forever, until stopped
pktgen.set(TX_PORTS, "rate", RATE)
pktgen.clr()
pktgen.delay(1000)

local first = snapshot()
local last = first
pktgen.start(TX_PORTS)
local elapsed = 0
while elapsed < DURATION_S do
    local step = math.min(SAMPLE_S, DURATION_S - elapsed)
    pktgen.delay(step * 1000)
    elapsed = elapsed + step
    local now = snapshot()
    print(string.format("  t=%3d s  port %d tx %12.0f pps  port %d rx %12.0f pps", elapsed,
                        CLIENT_PORT, delta(last, now, CLIENT_PORT, "opackets") / step,
                        BACKEND_PORT, delta(last, now, BACKEND_PORT, "ipackets") / step))
    last = now
end
pktgen.stop(TX_PORTS)
pktgen.delay(500)  -- frames still in the appliance's queues
local final = snapshot()

print(string.format("%-5s %14s %14s %14s %14s %10s %10s", "port", "tx packets", "rx packets",
                    "tx pps", "rx pps", "rx missed", "rx errors"))
for _, pid in ipairs({ CLIENT_PORT, BACKEND_PORT }) do
    local tx = delta(first, final, pid, "opackets")
    local rx = delta(first, final, pid, "ipackets")
    print(string.format("%-5d %14d %14d %14.0f %14.0f %10d %10d", pid, tx, rx,
                        tx / DURATION_S, rx / DURATION_S,
                        delta(first, final, pid, "imissed"), delta(first, final, pid, "ierrors")))
end
local c_tx = delta(first, final, CLIENT_PORT, "opackets")
local b_rx = delta(first, final, BACKEND_PORT, "ipackets")
print(string.format("client -> gateway: port %d rx / port %d tx = %s (%d not forwarded)",
                    BACKEND_PORT, CLIENT_PORT, ratio(b_rx, c_tx), c_tx - b_rx))
if backend_sends then
    local b_tx = delta(first, final, BACKEND_PORT, "opackets")
    local c_rx = delta(first, final, CLIENT_PORT, "ipackets")
    print(string.format("gateway -> client: port %d rx / port %d tx = %s (%d not forwarded)",
                        CLIENT_PORT, BACKEND_PORT, ratio(c_rx, b_tx), b_tx - c_rx))
end
print("appliance side: vpnlbctl show stats (drops, per-burst latency), show ports (rx missed)")

if QUIT then pktgen.quit() end
