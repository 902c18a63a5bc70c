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
--   VPNLB_HOLD_FILE   a path: before quitting, wait (2 min at most) until it exists, so a
--                     script reads the appliance's counters and stops it while pktgen's ports
--                     are still connected (a net_memif peer that leaves under a polling worker
--                     can crash it: DPDK 22.11 unmaps the regions under the worker)
--   VPNLB_MODE        "replay" (default): one run at VPNLB_RATE for VPNLB_DURATION_S;
--                     "search": the no-drop rate (RFC 2544 throughput), below
-- At the end of a replay it prints tx/rx packets and packets per second per port and the
-- forwarded ratio: backend-port rx / client-port tx (client -> gateway) and, with both ports
-- sending, client-port rx / backend-port tx (gateway -> client).
--
-- Search: trials of VPNLB_TRIAL_S seconds (default 2), each after VPNLB_WARMUP_S seconds (default
-- 1) at VPNLB_RATE_MIN that teach the appliance the clients; a trial passes when at most
-- VPNLB_LOSS (a fraction, default 0) of the frames sent did not come back, counted on pktgen's
-- ports after the traffic stopped and the queues drained. The rate is bisected geometrically
-- between VPNLB_RATE_MIN (default 0.01) and VPNLB_RATE_MAX (default 100) percent of line rate,
-- VPNLB_STEPS (default 8) trials after the first at the maximum.
-- Lines starting "vpnlb: " are for scripts (scripts/bench-pktgen.py): `vpnlb: total ...` after a
-- replay, `vpnlb: trial ...` per trial and `vpnlb: no-drop ...` at the end of a search.
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
local MODE = setting("VPNLB_MODE", "replay")
local HOLD_FILE = setting("VPNLB_HOLD_FILE", "")
local TRIAL_S = tonumber(setting("VPNLB_TRIAL_S", "2"))
local WARMUP_S = tonumber(setting("VPNLB_WARMUP_S", "1"))
local LOSS = tonumber(setting("VPNLB_LOSS", "0"))
local RATE_MIN = tonumber(setting("VPNLB_RATE_MIN", "0.01"))
local RATE_MAX = tonumber(setting("VPNLB_RATE_MAX", "100"))
local STEPS = whole(setting("VPNLB_STEPS", "8"))

assert(RATE and RATE > 0 and RATE <= 100, "VPNLB_RATE: percent of line rate, in (0, 100]")
assert(DURATION_S and DURATION_S >= 1, "VPNLB_DURATION_S: whole seconds, at least 1")
assert(SAMPLE_S and SAMPLE_S >= 1, "VPNLB_SAMPLE_S: whole seconds, at least 1")
assert(CLIENT_PORT and BACKEND_PORT and CLIENT_PORT ~= BACKEND_PORT,
       "VPNLB_CLIENT_PORT and VPNLB_BACKEND_PORT: two different port numbers")
assert(MODE == "replay" or MODE == "search", "VPNLB_MODE: replay or search")
assert(TRIAL_S and TRIAL_S > 0 and WARMUP_S and WARMUP_S >= 0, "VPNLB_TRIAL_S, VPNLB_WARMUP_S: seconds")
assert(LOSS and LOSS >= 0 and LOSS < 1, "VPNLB_LOSS: a fraction in [0, 1)")
assert(RATE_MIN and RATE_MAX and RATE_MIN > 0 and RATE_MIN < RATE_MAX and RATE_MAX <= 100,
       "VPNLB_RATE_MIN < VPNLB_RATE_MAX, in (0, 100]")
assert(STEPS and STEPS >= 1, "VPNLB_STEPS: at least 1")

local backend_sends = false
for p in string.gmatch(TX_PORTS, "%d+") do
    if tonumber(p) == BACKEND_PORT then backend_sends = true end
end

-- portStats answers with the counters as of pktgen's last refresh, which its timer does once a
-- second: a snapshot that must be exact waits this long after the traffic changed.
local STATS_REFRESH_MS = 1500

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

-- Frames sent by the transmitting ports and received by both, between two snapshots.
local function sent_received(a, b)
    local tx, rx = 0, 0
    for p in string.gmatch(TX_PORTS, "%d+") do
        tx = tx + delta(a, b, tonumber(p), "opackets")
    end
    for _, pid in ipairs({ CLIENT_PORT, BACKEND_PORT }) do
        rx = rx + delta(a, b, pid, "ipackets")
    end
    return tx, rx
end

pktgen.screen("off")
pktgen.stop(TX_PORTS)
pktgen.pcap(TX_PORTS, "on")
pktgen.set(TX_PORTS, "count", 0)  -- 0: forever, until stopped

-- One run at `rate` for `seconds`, with progress lines every `sample_s` (0: none); returns the
-- snapshots before and after (taken once the traffic stopped and the queues drained).
local function run(rate, seconds, sample_s)
    pktgen.set(TX_PORTS, "rate", rate)
    pktgen.delay(STATS_REFRESH_MS)
    local first = snapshot()
    local last = first
    pktgen.start(TX_PORTS)
    local elapsed = 0
    while elapsed < seconds do
        local step = seconds - elapsed
        if sample_s > 0 then step = math.min(sample_s, step) end
        pktgen.delay(math.floor(step * 1000))
        elapsed = elapsed + step
        if sample_s > 0 then
            local now = snapshot()
            print(string.format("  t=%3d s  port %d tx %12.0f pps  port %d rx %12.0f pps", elapsed,
                                CLIENT_PORT, delta(last, now, CLIENT_PORT, "opackets") / step,
                                BACKEND_PORT, delta(last, now, BACKEND_PORT, "ipackets") / step))
            last = now
        end
    end
    pktgen.stop(TX_PORTS)
    -- Frames still in the appliance's queues, then a refresh of pktgen's counters.
    pktgen.delay(500 + STATS_REFRESH_MS)
    return first, snapshot()
end

local function replay()
    print(string.format("vpnlb rig: replaying on port(s) %s at %s %% of line rate for %d s",
                        TX_PORTS, tostring(RATE), DURATION_S))
    print("  (port " .. CLIENT_PORT .. " needs -s " .. CLIENT_PORT .. ":client.pcap"
          .. (backend_sends and (", port " .. BACKEND_PORT .. " -s " .. BACKEND_PORT .. ":backend.pcap") or "")
          .. " on pktgen's command line)")
    local first, final = run(RATE, DURATION_S, SAMPLE_S)
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
    local tx, rx = sent_received(first, final)
    print(string.format("vpnlb: total tx=%d rx=%d seconds=%d rate_pct=%s", tx, rx, DURATION_S,
                        tostring(RATE)))
    print("appliance side: vpnlbctl show stats (drops, per-burst latency), show ports (rx missed)")
end

-- One search trial at `rate`: warm-up at the minimum rate, then the trial; passes on <= LOSS.
local trials = 0
local function trial(rate)
    if WARMUP_S > 0 then run(RATE_MIN, WARMUP_S, 0) end
    local first, final = run(rate, TRIAL_S, 0)
    local tx, rx = sent_received(first, final)
    local lost = tx - rx
    local pass = tx > 0 and lost <= LOSS * tx
    trials = trials + 1
    print(string.format("vpnlb: trial n=%d rate_pct=%.4f seconds=%s tx=%d rx=%d lost=%d tx_pps=%.0f rx_pps=%.0f result=%s",
                        trials, rate, tostring(TRIAL_S), tx, rx, lost, tx / TRIAL_S, rx / TRIAL_S,
                        pass and "pass" or "fail"))
    return pass, rx / TRIAL_S, tx / TRIAL_S
end

local function search()
    print(string.format("vpnlb rig: no-drop search on port(s) %s, %s s trials, loss tolerance %s, %s-%s %% of line rate",
                        TX_PORTS, tostring(TRIAL_S), tostring(LOSS), tostring(RATE_MIN), tostring(RATE_MAX)))
    local best, best_rx, best_tx = nil, 0, 0
    local lo, hi = RATE_MIN, RATE_MAX
    local pass, rx_pps, tx_pps = trial(RATE_MAX)
    if pass then
        best, best_rx, best_tx = RATE_MAX, rx_pps, tx_pps
    else
        for _ = 1, STEPS do
            local mid = math.sqrt(lo * hi)
            pass, rx_pps, tx_pps = trial(mid)
            if pass then
                lo = mid
                best, best_rx, best_tx = mid, rx_pps, tx_pps
            else
                hi = mid
            end
        end
        if best == nil then
            pass, rx_pps, tx_pps = trial(RATE_MIN)
            if pass then best, best_rx, best_tx = RATE_MIN, rx_pps, tx_pps end
        end
    end
    if best == nil then
        print("vpnlb: no-drop rate_pct=0 rx_pps=0 tx_pps=0 trials=" .. trials)
    else
        print(string.format("vpnlb: no-drop rate_pct=%.4f rx_pps=%.0f tx_pps=%.0f trials=%d",
                            best, best_rx, best_tx, trials))
    end
end

pktgen.clr()
pktgen.delay(1000)
if MODE == "search" then search() else replay() end
print("vpnlb: done")

if HOLD_FILE ~= "" then
    for _ = 1, 1200 do
        local f = io.open(HOLD_FILE, "r")
        if f ~= nil then f:close() break end
        pktgen.delay(100)
    end
end
if QUIT then pktgen.quit() end
