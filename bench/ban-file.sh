#!/usr/bin/env bash
# Bulk bans by hand: `jailsink ban sshd --file LIST` with BANS lines (default 100,000) against a
# daemon whose jail uses a set-based action (nftables, then ipset), in a throwaway network
# namespace. Prints seconds until the CLI returns (every line committed to the state database)
# and until the kernel set holds every address (a marker banned after the list is in the set;
# the runner applies bans in order), then checks the set's size. Needs root.
set -euo pipefail
cd "$(dirname "$0")/.."
BANS=${BANS:-100000}
cargo build --release --quiet --bin jailsink
JAILSINK=$PWD/target/release/jailsink
echo "machine: $(nproc) cores ($(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -1)), $(uname -r); load: $(cut -d' ' -f1-3 /proc/loadavg)"

NS=jsk-banfile-$$
DIR=$(mktemp -d)
PID=
cleanup() {
  [[ -n $PID ]] && kill "$PID" 2>/dev/null && wait "$PID" 2>/dev/null
  ip netns del "$NS" 2>/dev/null || true
  rm -rf "$DIR"
}
trap cleanup EXIT
ip netns add "$NS"
ip netns exec "$NS" ip link set lo up

# BANS distinct addresses of 10.0.0.0/8, a comment and a blank line first.
awk -v n="$BANS" 'BEGIN { print "# blocklist"; print ""; for (i = 1; i <= n; i++) printf "10.%d.%d.%d\n", int(i / 65536) % 256, int(i / 256) % 256, i % 256 }' >"$DIR/list"

now() { date +%s.%N; }
printf '%-9s %8s %8s %9s %9s\n' backend bans "cli s" "kernel s" "in set"
for backend in nftables ipset; do
  rm -f "$DIR/state.db"*
  cat >"$DIR/jailsink.toml" <<TOML
[server]
udp = ["127.0.0.1:0"]
tcp = ["127.0.0.1:0"]
[metrics]
listen = "127.0.0.1:0"
[control]
socket = "$DIR/jailsink.sock"
[state]
path = "$DIR/state.db"
[defaults]
filter_dirs = ["$PWD/conf/filter.d"]
ignoreself = false
[jails.sshd]
programs = ["sshd"]
failregex = ['^Failed password for \S+ from <HOST> port \d+ ssh2$']
bantime = "1h"
action = "$backend"
TOML
  ip netns exec "$NS" "$JAILSINK" run --config "$DIR/jailsink.toml" 2>"$DIR/log-$backend" &
  PID=$!
  for _ in $(seq 100); do
    "$JAILSINK" --config "$DIR/jailsink.toml" status >/dev/null 2>&1 && break
    sleep 0.1
  done
  start=$(now)
  "$JAILSINK" --config "$DIR/jailsink.toml" ban sshd --file "$DIR/list" >"$DIR/summary"
  cli=$(now)
  "$JAILSINK" --config "$DIR/jailsink.toml" ban sshd 192.0.2.250 >/dev/null
  if [[ $backend == nftables ]]; then
    until ip netns exec "$NS" nft get element inet jailsink sshd-v4 '{ 192.0.2.250 }' >/dev/null 2>&1; do sleep 0.05; done
    kernel=$(now)
    count=$(ip netns exec "$NS" nft -j list set inet jailsink sshd-v4 | python3 -c 'import json, sys; print(sum(len(i["set"].get("elem", [])) for i in json.load(sys.stdin)["nftables"] if "set" in i))')
  else
    until ip netns exec "$NS" ipset test jailsink-sshd-v4 192.0.2.250 >/dev/null 2>&1; do sleep 0.05; done
    kernel=$(now)
    count=$(ip netns exec "$NS" ipset list -t jailsink-sshd-v4 | sed -n 's/^Number of entries: //p')
  fi
  printf '%-9s %8d %8.2f %9.2f %9d\n' "$backend" "$BANS" "$(echo "$cli - $start" | bc)" "$(echo "$kernel - $start" | bc)" "$count"
  head -1 "$DIR/summary"
  [[ $count -eq $((BANS + 1)) ]] || { echo "expected $((BANS + 1)) in the set" >&2; exit 1; }
  kill "$PID"; wait "$PID" || true; PID=
done
