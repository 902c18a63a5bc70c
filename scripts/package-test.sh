#!/usr/bin/env bash
# Builds the Debian package (scripts/package.sh), checks what it holds, installs it with dpkg
# (which refuses unmet Depends), and checks the installed package the way an operator meets it:
# `vpnlbd check` passes on the shipped configuration, the man pages, the systemd unit
# (systemd-analyze verify; no systemd needs to run), the completions, `vpnlbctl --help`. Then
# purges it and checks that nothing is left. Needs root; refuses to run where vpnlb is installed,
# by the package or from source, so that it never touches an operator's files.
#
#   scripts/package-test.sh    (OUT=out/package-test)
#   PACKAGE_BIN_DIR=DIR, or LAB_BIN_DIR=DIR holding vpnlbd and vpnlb-gendoc: package the
#   programs there instead of building them.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-out/package-test}

fail() {
  echo "package-test: FAIL: $*" >&2
  exit 1
}
log() { echo "package-test: $*"; }

[ "$(id -u)" -eq 0 ] || fail "needs root (dpkg -i)"
for tool in dpkg-deb dpkg-shlibdeps man systemd-analyze; do
  command -v "$tool" >/dev/null || fail "no $tool (scripts/setup.sh installs it)"
done
# dpkg's status of vpnlb: empty or "unknown ok not-installed" when dpkg has no trace of it.
vpnlb_status() { dpkg-query -W -f='${Status}' vpnlb 2>/dev/null || true; }
case $(vpnlb_status) in
  "" | *not-installed) ;;
  *) fail "vpnlb is known to dpkg here ($(vpnlb_status)); if this test left it: dpkg --purge vpnlb" ;;
esac
for path in /usr/sbin/vpnlbd /usr/bin/vpnlbctl /etc/vpnlb /var/lib/vpnlb \
  /lib/systemd/system/vpnlbd.service; do
  [ ! -e "$path" ] || fail "$path exists (vpnlb installed from source?): the purge would remove it"
done

if [ -z "${PACKAGE_BIN_DIR:-}" ] && [ -x "${LAB_BIN_DIR:-/nonexistent}/vpnlbd" ] \
  && [ -x "$LAB_BIN_DIR/vpnlb-gendoc" ]; then
  export PACKAGE_BIN_DIR=$LAB_BIN_DIR
fi
rm -rf "$OUT"
mkdir -p "$OUT"
deb=$(scripts/package.sh --out "$OUT" 2>"$OUT/package.log") \
  || { cat "$OUT/package.log" >&2; fail "scripts/package.sh failed"; }
log "built $deb ($(du -h "$deb" | cut -f1))"

# What the package holds, before it goes near the system.
[ "$(dpkg-deb --info "$deb" conffiles)" = /etc/vpnlb/vpnlb.toml ] \
  || fail "conffiles does not list /etc/vpnlb/vpnlb.toml"
depends=$(dpkg-deb --field "$deb" Depends)
grep -q 'librte-eal23' <<<"$depends" || fail "Depends names no DPDK library: $depends"
grep -q 'librte-net-null23' <<<"$depends" || fail "Depends names no DPDK driver: $depends"
dpkg-deb --contents "$deb" | awk '{print substr($6, 2)}' >"$OUT/contents"
for path in /usr/sbin/vpnlbd /usr/bin/vpnlbctl /etc/vpnlb/vpnlb.toml \
  /lib/systemd/system/vpnlbd.service /usr/share/man/man8/vpnlbd.8.gz \
  /usr/share/man/man8/vpnlbctl.8.gz /usr/share/bash-completion/completions/vpnlbd \
  /usr/share/bash-completion/completions/vpnlbctl /usr/share/zsh/vendor-completions/_vpnlbd \
  /usr/share/zsh/vendor-completions/_vpnlbctl /usr/share/fish/vendor_completions.d/vpnlbd.fish \
  /usr/share/fish/vendor_completions.d/vpnlbctl.fish /usr/share/doc/vpnlb/copyright \
  /usr/share/doc/vpnlb/changelog.Debian.gz /usr/share/vpnlb/monitoring/vpnlb-dashboard.json \
  /usr/share/vpnlb/monitoring/alerts.yml /var/lib/vpnlb/; do
  grep -qxF "$path" "$OUT/contents" || fail "the package has no $path"
done
log "contents: $(grep -vc '/$' "$OUT/contents") files, conffile, Depends with DPDK"

# From here on the package may be on the system: purge it whatever happens.
cleanup() {
  case $(vpnlb_status) in
    "" | *not-installed) ;;
    *) dpkg --purge vpnlb >>"$OUT/dpkg.log" 2>&1 || true ;;
  esac
  # Only this test made /etc/vpnlb (checked above).
  rm -rf /etc/vpnlb
}
trap cleanup EXIT
DEBIAN_FRONTEND=noninteractive dpkg -i "$deb" >"$OUT/dpkg.log" 2>&1 \
  || { cat "$OUT/dpkg.log" >&2; fail "dpkg -i failed (unmet Depends?)"; }
[ "$(vpnlb_status)" = "install ok installed" ] \
  || fail "vpnlb is not 'install ok installed' after dpkg -i"
log "installed: $(dpkg-query -W -f='${Package} ${Version}' vpnlb)"

[ "$(stat -c %a /etc/vpnlb/vpnlb.toml)" = 640 ] || fail "/etc/vpnlb/vpnlb.toml is not mode 0640"
vpnlbd check --config /etc/vpnlb/vpnlb.toml >"$OUT/check.log" 2>&1 \
  || { cat "$OUT/check.log" >&2; fail "vpnlbd check refuses the shipped configuration"; }
log "vpnlbd check --config /etc/vpnlb/vpnlb.toml: valid"

for page in vpnlbd:SIGNALS vpnlbctl:'EXIT STATUS'; do
  name=${page%%:*} section=${page#*:}
  man -w "$name" >/dev/null || fail "man -w $name finds no page"
  MANPAGER=cat MANWIDTH=100 man "$name" 2>/dev/null >"$OUT/$name.man"
  grep -q "^$section" "$OUT/$name.man" || fail "man $name has no $section section"
done
log "man vpnlbd, man vpnlbctl: $(man -w vpnlbd) $(man -w vpnlbctl)"

# Checks ExecStart's program, the directives and the unit's dependencies; needs no running systemd.
systemd-analyze verify /lib/systemd/system/vpnlbd.service >"$OUT/verify.log" 2>&1 \
  || { cat "$OUT/verify.log" >&2; fail "systemd-analyze verify refuses vpnlbd.service"; }
if grep -q vpnlbd "$OUT/verify.log"; then
  cat "$OUT/verify.log" >&2
  fail "systemd-analyze verify warns about vpnlbd.service"
fi
log "systemd-analyze verify /lib/systemd/system/vpnlbd.service: accepted"

for prog in vpnlbd vpnlbctl; do
  bash -c "source /usr/share/bash-completion/completions/$prog && complete -p $prog" \
    >/dev/null 2>&1 || fail "the bash completion of $prog defines no completion"
done
help=$(vpnlbctl --help)
grep -q 'show redirect' <<<"$help" || fail "vpnlbctl --help does not list show redirect"
log "completions load; vpnlbctl --help lists show redirect"

# Purge, and nothing of the package stays behind (postrm removes /var/lib/vpnlb).
dpkg --purge vpnlb >>"$OUT/dpkg.log" 2>&1 || { cat "$OUT/dpkg.log" >&2; fail "dpkg --purge failed"; }
for path in /usr/sbin/vpnlbd /usr/bin/vpnlbctl /etc/vpnlb /var/lib/vpnlb \
  /lib/systemd/system/vpnlbd.service /usr/share/man/man8/vpnlbd.8.gz /usr/share/vpnlb; do
  [ ! -e "$path" ] || fail "$path is left after dpkg --purge"
done
case $(vpnlb_status) in
  "" | *not-installed) ;;
  *) fail "dpkg still knows vpnlb after the purge: $(vpnlb_status)" ;;
esac
log "purged: nothing left"
echo "package-test: OK"
