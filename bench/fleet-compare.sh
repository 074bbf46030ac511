#!/usr/bin/env bash
# Before/after propagation runs of two fleetbench binaries in one session, alternated (old, new
# per case and round), against one private redis-server (own port and directory, AOF on, as
# bench/fleet.sh starts it). Each line: the binary, the load average, fleetbench's quantiles,
# the whole process's CPU (/usr/bin/time) and redis-server's CPU during the run. A case is
# FOLLOWERS:RATE (5 s of bans, SECS to change), or FOLLOWERS:setup (connect and reconcile only,
# 10 bans: subtract it from the CPU of that many followers to get the CPU per apply).
#
#   bench/fleet-compare.sh OLD_FLEETBENCH NEW_FLEETBENCH [ROUNDS]
#   CASES="200:setup 1:50 1:1000 200:50 200:1000" SECS=5
set -euo pipefail
old=$1 new=$2 rounds=${3:-2}
CASES=${CASES:-"200:setup 1:50 1:1000 200:50 200:1000"}
SECS=${SECS:-5}
. "$(dirname "$0")/private-redis.sh"
ticks() { awk '{print $14 + $15}' "/proc/$pid/stat"; }
hz=$(getconf CLK_TCK)
echo "# $(date -Is) $(uname -r) $(nproc) cpus; $(redis-server --version | cut -d' ' -f1-3)"
echo "# old=$old new=$new"
for round in $(seq "$rounds"); do
  for case in $CASES; do
    f=${case%%:*} r=${case##*:}
    if [ "$r" = setup ]; then args=(--rate 1000 --bans 10); else args=(--rate "$r" --bans $((r * SECS))); fi
    for which in old new; do
      bin=$old; [ "$which" = new ] && bin=$new
      before=$(ticks)
      out=$( { /usr/bin/time -f "cpu=%U+%S" "$bin" propagation --redis "$url" --followers "$f" "${args[@]}"; } 2>&1 | grep -E '^propagation|^cpu=' | tr '\n' ' ')
      after=$(ticks)
      echo "round=$round case=$case bin=$which load=$(cut -d' ' -f1 /proc/loadavg) redis_cpu=$(awk -v t=$((after - before)) -v hz="$hz" 'BEGIN{printf "%.2f", t/hz}') $out"
    done
  done
done
