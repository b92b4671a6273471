#!/usr/bin/env bash
# Debian packages the test suite needs, so a fresh machine and CI install the same.
# prometheus: tests/e2e/test_metrics.py runs the server binary itself (the package's service is
# not used).
# prometheus-alertmanager: tests/alerts check alerts/alertmanager.yml with its amtool, and
# `freight monitoring up` and its tests run its binary.
# iproute2: tests/runtime/test_netns.py puts test hosts in network namespaces with `ip netns`
# (freight.util.netns); the tests need root too.
# iptables: the chaos harness's network faults (freight.chaos.network) write their rules in a
# node's network namespace with iptables-restore; tests/chaos/test_chaos_network.py needs it.
# tmux: tests/tui run `freight top` in a real terminal and read its screen (capture-pane).
set -euo pipefail
packages=(prometheus prometheus-alertmanager iproute2 iptables tmux)
missing=()
for p in "${packages[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "install-system-deps: need root to install: ${missing[*]}" >&2
    exit 1
  fi
  apt-get update -q
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}"
fi
