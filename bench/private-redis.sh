# Sourced by bench/fleet.sh and bench/fleet-compare.sh: starts a private redis-server (its own
# port and directory, AOF on as the tests run it, never the host's service), removed on exit.
# Sets pid (the server's), dir and url.
command -v redis-server >/dev/null || { echo "apt-get install redis-server (scripts/test does)" >&2; exit 1; }
dir=$(mktemp -d)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
redis-server --port "$port" --bind 127.0.0.1 --dir "$dir" --appendonly yes --save "" \
  --daemonize no --logfile "$dir/redis.log" --maxclients 10000 &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null; rm -rf "$dir"' EXIT
for _ in $(seq 50); do redis-cli -p "$port" ping >/dev/null 2>&1 && break; sleep 0.1; done
url="redis://127.0.0.1:$port/0"
