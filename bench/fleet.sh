#!/usr/bin/env bash
# The fleet benchmark of BENCHMARKS.md ("Fleet"): starts a private redis-server (its own port and
# directory, AOF on as the tests run it, never the host's service), runs fleetbench against it,
# and keeps the output in bench/out/. Sizes: FOLLOWERS=1,200 RATES=50,1000 BANS (per rate, at
# least 5 s of bans) FAILURES=200000 COUNT=100000.
set -euo pipefail
cd "$(dirname "$0")/.."
FOLLOWERS=${FOLLOWERS:-1,200}
RATES=${RATES:-50,1000}
FAILURES=${FAILURES:-200000}
COUNT=${COUNT:-100000}
mkdir -p bench/out
out="bench/out/fleet-$(date +%Y%m%d-%H%M%S).txt"
. bench/private-redis.sh
cargo build --release --bench fleetbench >/dev/null 2>&1 || cargo bench --bench fleetbench --no-run
{
  echo "# $(date -Is) $(uname -r) $(nproc) cpus: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2)"
  echo "# $(redis-server --version)"
  for f in ${FOLLOWERS//,/ }; do
    for r in ${RATES//,/ }; do
      bans=$(( r * 5 ))
      echo "# cargo bench --bench fleetbench -- propagation --followers $f --rate $r --bans $bans"
      cargo bench --bench fleetbench -- propagation --redis "$url" --followers "$f" --rate "$r" --bans "$bans"
    done
  done
  echo "# cargo bench --bench fleetbench -- windows --failures $FAILURES"
  cargo bench --bench fleetbench -- windows --redis "$url" --failures "$FAILURES"
  echo "# cargo bench --bench fleetbench -- memory --count $COUNT"
  cargo bench --bench fleetbench -- memory --redis "$url" --count "$COUNT"
} 2>&1 | grep -v '^\s*\(Compiling\|Finished\|Running\)' | tee "$out"
echo "saved in $out" >&2
