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
command -v redis-server >/dev/null || { echo "apt-get install redis-server (scripts/test does)" >&2; exit 1; }
dir=$(mktemp -d)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
redis-server --port "$port" --bind 127.0.0.1 --dir "$dir" --appendonly yes --save "" \
  --daemonize no --logfile "$dir/redis.log" --maxclients 10000 &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null; rm -rf "$dir"' EXIT
for _ in $(seq 50); do redis-cli -p "$port" ping >/dev/null 2>&1 && break; sleep 0.1; done
url="redis://127.0.0.1:$port/0"
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
