#!/usr/bin/env bash
# Builds the .deb with cargo-deb, installs it with dpkg, runs what it installed
# (the binary, the man page of every subcommand, the systemd unit, which must be
# installed but not enabled), then removes it. Run as root from the repo top;
# .ci/run runs it after the tests.
set -euo pipefail
cd "$(dirname "$0")/.."
# An unoptimised cargo-deb builds in half the time and packages just as well.
command -v cargo-deb >/dev/null 2>&1 || cargo install cargo-deb --locked --debug
packaging/gen-assets.sh
deb=$(cargo deb --no-build | tail -n 1)
[ -f "$deb" ] || { echo "check-deb: cargo deb wrote no package ($deb)" >&2; exit 1; }
dpkg -i "$deb"
trap 'dpkg -r cwdiag >/dev/null' EXIT
/usr/bin/cwdiag --version
for sub in $(/usr/bin/cwdiag --help | sed -n '/^Commands:/,/^$/p' | awk 'NR > 1 && $1 != "help" && NF { print $1 }'); do
  man -w "cwdiag-$sub" >/dev/null || { echo "check-deb: no man page cwdiag-$sub" >&2; exit 1; }
done
man cwdiag-serve | head -n 5
unit=/usr/lib/systemd/system/cwdiag.service
[ -f "$unit" ] || { echo "check-deb: $unit not installed" >&2; exit 1; }
if [ -e /etc/systemd/system/multi-user.target.wants/cwdiag.service ]; then
  echo "check-deb: the unit must not be enabled by the package" >&2; exit 1
fi
if command -v systemd-analyze >/dev/null 2>&1; then systemd-analyze verify "$unit"; fi
echo "check-deb: $deb installs and runs"
