#!/usr/bin/env bash
# The main job on the embedded default: generate the lab capture, replay it through the
# pipeline with conf/lab.toml, and print where every client went.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -x "$HOME/.cargo/bin/cargo" ]; then export PATH="$HOME/.cargo/bin:$PATH"; fi

OUT=${OUT:-out/demo}
rm -rf "$OUT"
mkdir -p "$OUT/capture" "$OUT/replay"
cargo build --release -q -p vpnlb-control -p vpnlb-perf

"${CARGO_TARGET_DIR:-target}"/release/vpnlb-capgen --out-dir "$OUT/capture" --clients 20 --ipv6-clients 5 --tls-clients 5
"${CARGO_TARGET_DIR:-target}"/release/vpnlbd replay --config conf/lab.toml \
  --in client="$OUT/capture/client.pcap" --in backend="$OUT/capture/backend.pcap" \
  --out-dir "$OUT/replay" --affinity > "$OUT/report.json"

python3 scripts/report.py "$OUT/report.json" "$OUT/capture/clients.csv"
echo
echo "captures in $OUT/capture, appliance output in $OUT/replay, full counters in $OUT/report.json"
