#!/usr/bin/env bash
# Allowlist lookups a second: the prefix trie next to the linear scan over ignoreip it replaced,
# same entries and probes, one run (benches/ignore.rs). ENTRIES="100 1000 10000" by default.
set -euo pipefail
cd "$(dirname "$0")/.."
echo "machine: $(nproc) cores ($(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -1)), $(uname -r); load: $(cut -d' ' -f1-3 /proc/loadavg)"
# shellcheck disable=SC2086
cargo bench --quiet --bench ignore -- ${ENTRIES:-100 1000 10000}
