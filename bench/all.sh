#!/usr/bin/env bash
# Every comparison of BENCHMARKS.md, one after the other.
set -euo pipefail
dir=$(dirname "$0")
for b in offline live-tcp live-udp attackers latency restore filters; do
  echo "## $b"
  "$dir/$b.sh"
  echo
done
