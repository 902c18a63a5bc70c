#!/usr/bin/env bash
# Installs everything vpnlb needs to build, run its demo and run its tests on Debian bookworm.
# Idempotent; safe to run again. Needs root (or sudo) for apt.
#
#   scripts/setup.sh [--hugepages N]   N > 0 also mounts hugetlbfs and reserves N 2 MB pages
#                                      (bare metal; the lab and the tests run without them)
set -euo pipefail
cd "$(dirname "$0")/.."

HUGEPAGES=0
while [ $# -gt 0 ]; do
  case "$1" in
    --hugepages) HUGEPAGES=${2:?--hugepages N}; shift 2 ;;
    --hugepages=*) HUGEPAGES=${1#*=}; shift ;;
    *) echo "usage: scripts/setup.sh [--hugepages N]" >&2; exit 2 ;;
  esac
done

log() { printf 'setup: %s\n' "$*" >&2; }

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

# Debian packages: a C toolchain for crates that build C (libFuzzer, the DPDK shim), pkg-config,
# DPDK 22.11 (libraries, PMDs, headers, dpdk-testpmd) with clang/libclang for bindgen, and python3
# for the small report helpers in scripts/.
# The lab needs iproute2, ethtool and ping; the end-to-end peers are strongSwan (with the
# kernel-libipsec plugin), ocserv/openconnect and keepalived, observed with tcpdump/tshark;
# scripts/e2e.sh puts clients behind a NAT with nftables. lua5.3 checks the pktgen script of
# perf/rig (perf/rig/check.sh). prometheus (with promtool) scrapes the lab daemon and checks the
# alert rules; systemd (systemd-analyze), dpkg-dev (dpkg-shlibdeps) and man-db check the Debian
# package that scripts/package.sh builds.
APT_PACKAGES=(build-essential pkg-config python3 ca-certificates curl
  dpdk dpdk-dev libdpdk-dev clang libclang-dev libpcap-dev
  iproute2 ethtool iputils-ping nftables tcpdump tshark python3-scapy openssl
  strongswan-charon strongswan-swanctl strongswan-pki libcharon-extra-plugins
  ocserv openconnect keepalived lua5.3
  prometheus systemd dpkg-dev man-db)
# missing_packages PKG...: those of PKG... that dpkg does not have installed, one a line.
missing_packages() {
  local p
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || echo "$p"
  done
}
mapfile -t missing < <(missing_packages "${APT_PACKAGES[@]}")
if [ "${#missing[@]}" -gt 0 ]; then
  log "installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  # The peers are test tools here: keep their packages from starting system services.
  policy=/usr/sbin/policy-rc.d
  created_policy=""
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$policy" >/dev/null
    $SUDO chmod +x "$policy"
    created_policy=1
  fi
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
  if [ -n "$created_policy" ]; then $SUDO rm -f "$policy"; fi
fi

# pktgen-DPDK, where its source is at hand (perf/rig/build-pktgen.sh --which): the pktgen load
# test and `scripts/bench.sh --generator pktgen` use it. A test tool, not a dependency of vpnlb.
if PKTGEN_SRC=$(perf/rig/build-pktgen.sh --which 2>/dev/null); then
  mapfile -t missing < <(missing_packages meson ninja-build liblua5.3-dev libnuma-dev)
  if [ "${#missing[@]}" -gt 0 ]; then
    log "installing Debian packages to build pktgen: ${missing[*]}"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
  fi
  log "building pktgen-DPDK from $PKTGEN_SRC"
  perf/rig/build-pktgen.sh "$PKTGEN_SRC" >/dev/null
else
  log "no pktgen-DPDK source: the pktgen load test will be skipped (perf/rig/README.md)"
fi

if [ "$HUGEPAGES" -gt 0 ]; then
  if ! mountpoint -q /dev/hugepages; then
    $SUDO mkdir -p /dev/hugepages
    $SUDO mount -t hugetlbfs nodev /dev/hugepages
  fi
  echo "$HUGEPAGES" | $SUDO tee /sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages >/dev/null
  log "hugepages: $(cat /sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages) x 2 MB reserved"
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
