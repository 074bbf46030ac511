# Shared by the bench/*.sh scripts: builds the release daemon and the jailbench tool, and makes
# the corpus. Everything generated goes to bench/out/ (git-ignored).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
OUT=bench/out
mkdir -p "$OUT"
LINES=${LINES:-1000000}
CORPUS=$OUT/corpus-$LINES

cargo build --release --quiet --bin jailsink
JAILSINK=$PWD/target/release/jailsink
JB=$(cargo bench --bench jailbench --no-run 2>&1 | sed -n 's/.*Executable .*(\(.*\)).*/\1/p' | tail -1)
[[ -x $JB ]] || { echo "cannot find the jailbench binary" >&2; exit 1; }

machine() {
  echo "machine: $(nproc) cores ($(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -1)), $(free -g | awk '/Mem:/ {print $2}') GiB, $(uname -r); load: $(cut -d' ' -f1-3 /proc/loadavg)"
}

corpus() {
  [[ -s $CORPUS/truth.txt ]] || "$JB" corpus --lines "$LINES" --out "$CORPUS" >/dev/null
}

# Debian packages the comparisons use, installed on demand (no service is started).
need_pkg() { # command package
  command -v "$1" >/dev/null 2>&1 || [[ -x $1 ]] && return 0
  echo "installing $2" >&2
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$2" >/dev/null
}
