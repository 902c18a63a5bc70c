#!/usr/bin/env bash
# Builds pktgen-DPDK against the system's DPDK 22.11 (Debian's libdpdk-dev), with Lua scripting.
#
#   perf/rig/build-pktgen.sh [SOURCE [DEST]]
#
# SOURCE is a release tarball (Pktgen-DPDK-23.06.1.tar.gz from the pktgen-DPDK project's GitHub
# releases) or an unpacked source tree. Without it: $PKTGEN_SOURCE, else the first
# Pktgen-DPDK-*.tar.gz in perf/rig/ or in ../shared/tools/ beside the repository; none there:
# exit 3 ("no pktgen source"), which callers treat as "skip". DEST (default perf/rig/pktgen,
# ignored by git) receives the build; DEST/pktgen is the program, and its path is the one line
# printed on stdout. Nothing is installed system-wide. `build-pktgen.sh --which` only prints the
# source it would build (exit 3: none). Needs meson, ninja-build,
# liblua5.3-dev, libnuma-dev, libpcap-dev (scripts/setup.sh installs them when it builds pktgen).
#
# Three quirks of 23.06.1 on Debian bookworm, handled here: its meson asks pkg-config for `lua`
# (Debian names it lua5.3: a lua.pc pointing at lua5.3.pc goes on PKG_CONFIG_PATH); its Lua
# library does not get DPDK's include path (it comes in through CFLAGS); and it panics when a
# port cannot set its MTU, which shared-memory ports (net_memif) cannot: the source is patched to
# go on when setting the MTU is not supported (the frames fit the default MTU anyway).
# An up-to-date build (same source) is kept: the script then only prints the program's path.
set -euo pipefail
cd "$(dirname "$0")/../.."

[ $# -le 2 ] || { sed -n '2,16p' "$0" >&2; exit 2; }
log() { echo "build-pktgen: $*" >&2; }
die() { log "$*"; exit 1; }
which_only=""
if [ "${1:-}" = --which ]; then which_only=1; shift; fi
src=${1:-${PKTGEN_SOURCE:-}}
if [ -z "$src" ]; then
  for candidate in perf/rig/Pktgen-DPDK-*.tar.gz ../shared/tools/Pktgen-DPDK-*.tar.gz; do
    if [ -f "$candidate" ]; then src=$candidate; break; fi
  done
fi
if [ -z "$src" ]; then
  log "no pktgen source (give a Pktgen-DPDK release tarball or tree, or set PKTGEN_SOURCE)"
  exit 3
fi
if [ -n "$which_only" ]; then echo "$src"; exit 0; fi
dest=$(realpath -m "${2:-perf/rig/pktgen}")

for tool in meson ninja pkg-config; do
  command -v "$tool" >/dev/null || die "$tool is missing (scripts/setup.sh installs it)"
done
pkg-config --exists lua5.3 || die "liblua5.3-dev is missing"
pkg-config --exists libdpdk || die "libdpdk-dev is missing"

# The source's identity: the tarball's checksum, or the tree's VERSION file.
if [ -f "$src" ]; then
  stamp="tarball $(sha256sum "$src" | cut -d' ' -f1) mtu-patch"
elif [ -f "$src/meson.build" ]; then
  stamp="tree $(realpath "$src") $(cat "$src/VERSION" 2>/dev/null || echo unknown) mtu-patch"
else
  die "$src is neither a tarball nor a pktgen source tree"
fi
if [ -x "$dest/pktgen" ] && [ "$(cat "$dest/source.stamp" 2>/dev/null)" = "$stamp" ]; then
  echo "$dest/pktgen"
  exit 0
fi

rm -rf "$dest"
mkdir -p "$dest/src"
# A copy of the source, which is patched below.
if [ -f "$src" ]; then
  tar -xzf "$src" -C "$dest/src" --strip-components=1
else
  cp -a "$src/." "$dest/src/"
fi
tree=$dest/src
python3 - "$tree/app/pktgen-port-cfg.c" <<'EOF' || die "could not patch pktgen's MTU call"
import sys
path = sys.argv[1]
text = open(path).read()
old = "if ((ret = rte_eth_dev_set_mtu(pid, pktgen.eth_mtu)) < 0)"
new = "if ((ret = rte_eth_dev_set_mtu(pid, pktgen.eth_mtu)) < 0 && ret != -ENOTSUP)"
if text.count(old) != 1:
    sys.exit(f"{path}: the MTU call is not there once (another release?)")
open(path, "w").write(text.replace(old, new))
EOF
log "patched: a port that cannot set its MTU (net_memif) is not fatal"

mkdir -p "$dest/pkgconfig"
ln -sf "$(pkg-config --variable=pcfiledir lua5.3)/lua5.3.pc" "$dest/pkgconfig/lua.pc"
export PKG_CONFIG_PATH="$dest/pkgconfig${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH}"
export CFLAGS="$(pkg-config --cflags libdpdk) ${CFLAGS:-}"

log "meson setup ($stamp)"
meson setup "$dest/build" "$tree" -Denable_lua=true -Denable-avx=false -Denable-avx2=false \
  >"$dest/meson.log" 2>&1 || { tail -n 20 "$dest/meson.log" >&2; die "meson setup failed (log: $dest/meson.log)"; }
log "ninja ($(nproc) jobs)"
ninja -C "$dest/build" >"$dest/ninja.log" 2>&1 || { tail -n 20 "$dest/ninja.log" >&2; die "ninja failed (log: $dest/ninja.log)"; }
[ -x "$dest/build/app/pktgen" ] || die "no $dest/build/app/pktgen after the build"
ln -sf build/app/pktgen "$dest/pktgen"
echo "$stamp" >"$dest/source.stamp"
echo "$dest/pktgen"
