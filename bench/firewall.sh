#!/usr/bin/env bash
# Runs the firewall bench (as root: it creates network namespaces) and keeps its output in
# bench/out/, which git ignores. Arguments go to the bench, e.g. --bans 100000 --probes 4000.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p bench/out
out="bench/out/firewall-$(date +%Y%m%d-%H%M%S).txt"
{
  echo "# $(date -Is) $(uname -r) $(nproc) cpus: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2)"
  echo "# $(nft --version) / $(ipset --version | head -1) / $(iptables --version)"
  echo "# cargo bench --bench firewall -- $*"
  cargo bench --bench firewall -- "$@"
} 2>&1 | tee "$out"
echo "saved in $out" >&2
