#!/usr/bin/env bash
# Installs everything vpnlb needs to build, run its demo and run its tests on Debian bookworm.
# Idempotent; safe to run again. Needs root (or sudo) for apt.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf 'setup: %s\n' "$*" >&2; }

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

# Debian packages: a C toolchain for crates that build C (libFuzzer, the DPDK shim), pkg-config,
# DPDK 22.11 (libraries, PMDs, headers, dpdk-testpmd) with clang/libclang for bindgen, and python3
# for the small report helpers in scripts/.
APT_PACKAGES=(build-essential pkg-config python3 ca-certificates curl
  dpdk dpdk-dev libdpdk-dev clang libclang-dev libpcap-dev
  iproute2 ethtool iputils-ping)
missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  log "installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# Rust: use the machine's toolchain (rustup-managed on our build machines). Debian's own cargo
# (1.63 in bookworm) is too old for the dependencies, so it is only a last resort.
if [ -x "$HOME/.cargo/bin/cargo" ]; then export PATH="$HOME/.cargo/bin:$PATH"; fi
if ! command -v cargo >/dev/null; then
  log "no cargo found; trying rustup from https://sh.rustup.rs"
  if curl -fsSL https://sh.rustup.rs | sh -s -- -y --profile minimal -c clippy,rustfmt; then
    export PATH="$HOME/.cargo/bin:$PATH"
  else
    log "rustup unreachable; installing Debian's cargo (may be too old)"
    $SUDO apt-get install -y -qq cargo rustc
  fi
fi
cargo fmt --version >/dev/null 2>&1 || rustup component add rustfmt
cargo clippy --version >/dev/null 2>&1 || rustup component add clippy
log "$(cargo --version)"

# cargo-fuzz for the bounded fuzz runs in scripts/test.sh (libFuzzer on the stable toolchain
# with RUSTC_BOOTSTRAP=1).
if ! cargo fuzz --version >/dev/null 2>&1; then
  log "installing cargo-fuzz"
  cargo install --locked cargo-fuzz >/dev/null
fi

log "fetching and building the workspace"
cargo build --release --workspace --locked
log "done"
