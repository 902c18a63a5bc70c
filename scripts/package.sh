#!/usr/bin/env bash
# Builds the Debian package vpnlb_<version>_amd64.deb from the repository with dpkg-deb (no
# debhelper): vpnlbd, vpnlbctl, the example configuration (a conffile), the systemd unit, man
# pages and shell completions generated from the clap definitions (vpnlb-gendoc), the Grafana
# dashboard and alert rules. Depends names Debian's DPDK 22.11 packages: the libraries the
# binaries link (dpkg-shlibdeps) and the drivers DPDK loads at run time (listed below).
#
#   scripts/package.sh [--out DIR]    (default out/; prints the .deb's path)
#
#   PACKAGE_BIN_DIR=DIR     take vpnlbd, vpnlbctl and vpnlb-gendoc from DIR instead of building
#                           (cargo build --release -p vpnlb-control)
#   PACKAGE_MAINTAINER=...  the Maintainer field
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -x "$HOME/.cargo/bin/cargo" ]; then export PATH="$HOME/.cargo/bin:$PATH"; fi
umask 022

out=out
while [ $# -gt 0 ]; do
  case $1 in
    --out) out=${2:?--out needs a directory}; shift 2 ;;
    -h | --help) sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "package.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
maintainer=${PACKAGE_MAINTAINER:-vpnlb maintainers <maintainers@vpnlb.invalid>}

# EAL loads every driver in its plugin directory at start (pmds-23.0), and the daemon needs: the
# ring mempool (its mbuf pools), both buses, and the drivers of the devices docs/bare-metal.md
# lists: the software ones (lab, replay, tests, the example configuration's net_null) and the
# NICs. None of them is linked, so dpkg-shlibdeps cannot see them.
readonly DLOPENED=(librte-mempool-ring23 librte-bus-pci23 librte-bus-vdev23
  librte-net-null23 librte-net-ring23 librte-net-tap23 librte-net-pcap23 librte-net-af-packet23
  librte-net-mlx5-23 librte-net-ixgbe23 librte-net-i40e23 librte-net-ice23
  librte-net-virtio23 librte-net-vmxnet3-23)

# [workspace.package] in Cargo.toml: version and license.
workspace_field() {
  awk -v key="$1" '
    /^\[/ { in_section = ($0 == "[workspace.package]") }
    in_section && $1 == key { sub(/^[^=]*= *"/, ""); sub(/".*$/, ""); print; exit }
  ' Cargo.toml
}
version=$(workspace_field version)
license=$(workspace_field license)
if [ -z "$version" ] || [ -z "$license" ]; then
  echo "package.sh: no version or license under [workspace.package] in Cargo.toml" >&2
  exit 1
fi

if [ -n "${PACKAGE_BIN_DIR:-}" ]; then
  bin=$PACKAGE_BIN_DIR
else
  cargo build --release -p vpnlb-control >&2
  bin=${CARGO_TARGET_DIR:-target}/release
fi
for b in vpnlbd vpnlbctl vpnlb-gendoc; do
  [ -x "$bin/$b" ] || { echo "package.sh: no $bin/$b" >&2; exit 1; }
done

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
root=$work/root
gen=$work/gen
install -d -m 0755 "$root"
"$bin/vpnlb-gendoc" "$gen" >/dev/null

# Stripped as dh_strip does: the release profile's line tables (debug = 1, for profiling) make
# vpnlbd 26 MB instead of 4.
for spec in vpnlbd:usr/sbin vpnlbctl:usr/bin; do
  name=${spec%%:*} dir=$root/${spec#*:}
  install -D -m 0755 "$bin/$name" "$dir/$name"
  strip --remove-section=.comment --remove-section=.note --strip-unneeded "$dir/$name"
done
# 0640: the configuration may hold the HA sync and load report keys.
install -D -m 0640 packaging/vpnlb.toml "$root/etc/vpnlb/vpnlb.toml"
install -D -m 0644 packaging/vpnlbd.service "$root/lib/systemd/system/vpnlbd.service"
# [control] state_file's usual place (systemd's StateDirectory= makes it too, but `vpnlbd check`
# wants it before the first start).
install -d -m 0755 "$root/var/lib/vpnlb"
install -d -m 0755 "$root/usr/share/man/man8" "$root/usr/share/bash-completion/completions" \
  "$root/usr/share/zsh/vendor-completions" "$root/usr/share/fish/vendor_completions.d" \
  "$root/usr/share/vpnlb/monitoring" "$root/usr/share/doc/vpnlb"
for p in vpnlbd vpnlbctl; do
  # -n: no name or time stamp in the gzip header, so the package builds reproducibly.
  gzip -9n -c "$gen/$p.8" >"$root/usr/share/man/man8/$p.8.gz"
  install -m 0644 "$gen/$p.bash" "$root/usr/share/bash-completion/completions/$p"
  install -m 0644 "$gen/_$p" "$root/usr/share/zsh/vendor-completions/_$p"
  install -m 0644 "$gen/$p.fish" "$root/usr/share/fish/vendor_completions.d/$p.fish"
done
install -m 0644 monitoring/vpnlb-dashboard.json monitoring/alerts.yml \
  "$root/usr/share/vpnlb/monitoring/"
chmod 0644 "$root"/usr/share/man/man8/*.gz

doc=$root/usr/share/doc/vpnlb
license_text=/usr/share/common-licenses/$license
cat >"$doc/copyright" <<EOF
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: vpnlb

Files: *
Copyright: the vpnlb authors
License: $license
EOF
if [ -e "$license_text" ]; then
  printf ' On Debian systems the full text of the license is in\n %s.\n' \
    "$license_text" >>"$doc/copyright"
fi
# Dates (the changelog's, and dpkg-deb's file times through SOURCE_DATE_EPOCH) are the
# commit's, not the build's.
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || date +%s)}
date=$(date -R -d "@$SOURCE_DATE_EPOCH")
printf 'vpnlb (%s) bookworm; urgency=medium\n\n  * Built from %s by scripts/package.sh.\n\n -- %s  %s\n' \
  "$version" "$(git describe --always --dirty 2>/dev/null || echo 'the source tree')" \
  "$maintainer" "$date" | gzip -9n >"$doc/changelog.Debian.gz"
chmod 0644 "$doc"/*

install -d -m 0755 "$root/DEBIAN"
echo /etc/vpnlb/vpnlb.toml >"$root/DEBIAN/conffiles"
cat >"$root/DEBIAN/postinst" <<'EOF'
#!/bin/sh
set -e
# The unit is new or changed: make systemd read it. It is neither enabled nor started: the
# example configuration drives no NIC, so the operator configures first (docs/install.md).
if [ "$1" = configure ] && [ -d /run/systemd/system ]; then
  systemctl daemon-reload >/dev/null || true
fi
EOF
cat >"$root/DEBIAN/prerm" <<'EOF'
#!/bin/sh
set -e
# Stopped on removal only: an upgrade leaves the running daemon alone, as an HA pair is
# upgraded one appliance at a time by its operator (docs/operations.md).
if [ "$1" = remove ] && [ -d /run/systemd/system ]; then
  systemctl stop vpnlbd.service >/dev/null 2>&1 || true
fi
EOF
cat >"$root/DEBIAN/postrm" <<'EOF'
#!/bin/sh
set -e
if [ -d /run/systemd/system ]; then
  systemctl daemon-reload >/dev/null 2>&1 || true
fi
# The drains and weights vpnlbd kept ([control] state_file).
if [ "$1" = purge ]; then
  rm -rf /var/lib/vpnlb
fi
EOF
chmod 0755 "$root"/DEBIAN/postinst "$root"/DEBIAN/prerm "$root"/DEBIAN/postrm
chmod 0644 "$root/DEBIAN/conffiles"

# dpkg-shlibdeps wants a source package around the binaries: a scratch debian/control.
mkdir -p "$work/src/debian"
printf 'Source: vpnlb\n\nPackage: vpnlb\nArchitecture: amd64\n' >"$work/src/debian/control"
shlibs=$(cd "$work/src" && dpkg-shlibdeps -O -e"$root/usr/sbin/vpnlbd" -e"$root/usr/bin/vpnlbctl")
shlibs=${shlibs#shlibs:Depends=}
if [ -z "$shlibs" ] || ! grep -q librte- <<<"$shlibs"; then
  echo "package.sh: dpkg-shlibdeps found no DPDK libraries: '$shlibs'" >&2
  exit 1
fi
depends="$shlibs$(printf ', %s (>= 22.11)' "${DLOPENED[@]}")"

(cd "$root" && find . -type f ! -path './DEBIAN/*' ! -path './etc/*' -printf '%P\0' | sort -z \
  | xargs -0 md5sum) >"$root/DEBIAN/md5sums"
chmod 0644 "$root/DEBIAN/md5sums"
installed_kb=$(du -sk --exclude=DEBIAN "$root" | cut -f1)
cat >"$root/DEBIAN/control" <<EOF
Package: vpnlb
Version: $version
Architecture: amd64
Maintainer: $maintainer
Installed-Size: $installed_kb
Depends: $depends
Section: net
Priority: optional
Description: VPN gateway load balancer on DPDK
 vpnlbd spreads IPsec (IKE, NAT-T, ESP) and TLS/DTLS VPN clients over a pool of VPN
 gateways, keeping every packet of a client on the same gateway, with health checks,
 VRRP and a synced HA pair. Its workers poll NICs through DPDK on dedicated cores.
 .
 This package has the daemon vpnlbd and its systemd unit, the control client vpnlbctl,
 an example configuration, man pages, shell completions, a Grafana dashboard and
 Prometheus alert rules.
EOF

mkdir -p "$out"
deb=$out/vpnlb_${version}_amd64.deb
dpkg-deb --root-owner-group -Zxz --build "$root" "$deb" >&2
echo "$deb"
