#!/usr/bin/env bash
# Checks runbook/membershipd-cluster.service the way `make lint` needs:
# `systemd-analyze verify` exits 0 on unknown keys and bad values (warnings
# only), so any output at all is a failure. The unit's ExecStart binary must
# exist on the checking machine, so the check runs on a copy pointing at a
# freshly built binary. Also prints the offline security score.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
bin=${1:?usage: check-unit.sh PATH-TO-MEMBERSHIPD}
bin=$(cd "$(dirname "$bin")" && pwd)/$(basename "$bin")
if ! command -v systemd-analyze >/dev/null; then
  echo "check-unit: systemd-analyze not found (apt-get install systemd)" >&2
  exit 1
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
unit=$tmp/membershipd-cluster.service
sed -e "s#/opt/unibus/membershipd #$bin #" \
    -e "s#EnvironmentFile=/opt/unibus/cluster.env#EnvironmentFile=$tmp/cluster.env#" \
    "$here/membershipd-cluster.service" > "$unit"
printf 'NODE_NAME=n1\n' > "$tmp/cluster.env"
out=$(SYSTEMD_LOG_COLOR=0 systemd-analyze verify "$unit" 2>&1) || { echo "$out"; echo "check-unit: systemd-analyze verify failed" >&2; exit 1; }
if [ -n "$out" ]; then
  echo "$out"
  echo "check-unit: systemd-analyze verify printed warnings (treated as errors)" >&2
  exit 1
fi
score=$(SYSTEMD_LOG_COLOR=0 systemd-analyze security --offline=yes "$unit" 2>/dev/null | tail -n 1 || true)
echo "check-unit: systemd-analyze verify clean; security: ${score:-n/a}"
