#!/usr/bin/env bash
# The project's test command (docs/testing.md, and what .ci/run runs): formatting, lints, unit,
# property and integration tests (golden replays, the daemon over DPDK net_pcap), the Debian
# package (built, installed, checked, purged), bounded fuzzing of every parser, the classifier
# and the whole pipeline, the demo end to end, and the daemon
# live in the namespace lab (root): forwarding, then the exception path and health checks against
# real charon, openssl s_server and TCP servers, then the end-to-end acceptance suite (strongSwan,
# ocserv/openconnect, a NAT; a gateway killed, a gateway drained), then the HA pair (a master
# killed: takeover time, tunnels kept by the synced affinity table), faults injected into the pair
# (a stalled worker, a stopped master, a worker's panic) and VRRP with keepalived, and
# the attack test (a spoofed-source IKE_SA_INIT and SYN flood against a small affinity table).
#
#   FUZZ_SECONDS=N   seconds of fuzzing per target (default 20; 0 skips fuzzing)
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -x "$HOME/.cargo/bin/cargo" ]; then export PATH="$HOME/.cargo/bin:$PATH"; fi
FUZZ_SECONDS=${FUZZ_SECONDS:-20}
FUZZ_TARGETS=(wire app_protocols classify pipeline)

step() { printf '\n== %s\n' "$*"; }

step "docs: links (scripts/check-links.py)"
python3 scripts/check-links.py

step "monitoring: alert rules (promtool check and unit-test them), the dashboard"
promtool check rules monitoring/alerts.yml
(cd monitoring && promtool test rules alerts.test.yml)
python3 scripts/monitoring-check.py static

step "format"
cargo fmt --all --check
(cd dataplane/fuzz && cargo fmt --check)

step "clippy"
cargo clippy --workspace --all-targets -- -D warnings
cargo clippy --manifest-path dataplane/fuzz/Cargo.toml -- -D warnings

step "tests"
cargo test --workspace
# The million-entry bulk resync over a lossy link (ignored in the debug run: seconds in release).
cargo test --release -p vpnlb-control --test sync_bulk -- --ignored

# Root. Its release build (cargo build --release -p vpnlb-control, unless LAB_BIN_DIR has the
# programs) is the one the lab steps below find already built.
step "package: the Debian package built, installed, checked and purged (scripts/package-test.sh)"
scripts/package-test.sh

if [ "$FUZZ_SECONDS" -gt 0 ]; then
  step "fuzz: ${FUZZ_SECONDS}s per target"
  (
    cd dataplane/fuzz
    export RUSTC_BOOTSTRAP=1   # cargo-fuzz's sanitizer flags on the stable toolchain
    cargo fuzz build -O
    # Seed the pipeline target with the lab's real frames, so it starts deep in the code.
    cargo run -q --release --manifest-path ../../Cargo.toml -p vpnlb-perf --bin vpnlb-capgen -- \
      --out-dir "$(mktemp -d)" --clients 8 --ipv6-clients 2 --tls-clients 2 \
      --fuzz-corpus corpus/pipeline >/dev/null
    for t in "${FUZZ_TARGETS[@]}"; do
      mkdir -p "corpus/$t"
      log="$(mktemp)"
      if ! cargo fuzz run -O "$t" "corpus/$t" -- -max_total_time="$FUZZ_SECONDS" \
          -rss_limit_mb=2048 -print_final_stats=1 >"$log" 2>&1; then
        tail -n 60 "$log" >&2
        echo "fuzz target $t failed; the input is under dataplane/fuzz/artifacts/$t" >&2
        exit 1
      fi
      printf '%-14s %s\n' "$t" "$(grep -E '^stat::number_of_executed_units' "$log" | tr -s ' ')"
      rm -f "$log"
    done
  )
fi

step "demo"
scripts/demo.sh

step "lab: vpnlbd on net_af_packet between network namespaces"
scripts/lab-test.sh

step "lab: exception path and gateway health checks with charon, openssl s_server, TCP"
scripts/health-test.sh

step "benchmark harness smoke run (numbers produced; no benchmark is a test)"
out=$(scripts/bench.sh --smoke --out out/bench-smoke)
echo "$out"
grep -Eq '^ratio vpnlbd/testpmd-io: [0-9]+\.[0-9]{2}$' <<<"$(tail -n 1 <<<"$out")" \
  || { echo "test.sh: the benchmark smoke run printed no ratio" >&2; exit 1; }

step "load: pktgen-DPDK drives vpnlbd over net_memif, both ways, every frame accounted for (skipped without pktgen's source)"
scripts/pktgen-test.sh

step "lab: end to end with strongSwan, ocserv/openconnect and a NAT (acceptance)"
scripts/e2e.sh

step "lab: IKEv2 redirect mode with strongSwan initiators, load reports, routing (RFC 5685)"
scripts/redirect-test.sh

step "lab: HA pair, 20 strongSwan tunnels, the master killed and back (takeover, affinity sync)"
scripts/pair-test.sh

step "lab: fault injection in the HA pair, a worker stalled, the master stopped, a worker panicking (watchdog, takeover)"
scripts/fault-test.sh

step "lab: VRRPv3 with keepalived as the HA peer, both ways round (takeover, preemption, ARP)"
scripts/vrrp-interop-test.sh

step "lab: attack test, a spoofed IKE_SA_INIT + SYN flood of 10 x a small affinity table while clients arrive"
scripts/attack-test.sh
