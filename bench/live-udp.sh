#!/usr/bin/env bash
# Live UDP ingest: offered rates stepped up, from our sender and from bench/udp-blaster.c (an
# independent C sender, bursts of 256 with sendmmsg), for the corpus and for a botnet of
# BOTNET addresses banned while it streams (storm guard off, every ban logged); loss = 1 -
# counted/sent after the queue settles, kernel drops beside it. The merge base with main
# ("before", built once into bench/out/) runs the same steps in the same run; BEFORE=BIN picks
# another binary, BEFORE=none skips it.
source "$(dirname "$0")/lib.sh"
need_pkg gcc gcc
gcc -O2 -Wall -Wextra -o "$OUT/udp-blaster" bench/udp-blaster.c
before=()
if [[ ${BEFORE:-} != none ]]; then
  if [[ -z ${BEFORE:-} ]]; then
    rev=$(git merge-base HEAD "${BASE:-main}")
    src=$OUT/before-$rev
    if [[ ! -x $src.bin ]]; then
      rm -rf "$src" && mkdir -p "$src"
      git archive "$rev" | tar -x -C "$src"
      (cd "$src" && CARGO_TARGET_DIR="$PWD/../before-target" cargo build --release --quiet --bin jailsink)
      cp "$OUT/before-target/release/jailsink" "$src.bin"
    fi
    BEFORE=$src.bin
  fi
  before=(--before "$BEFORE")
fi
machine
"$JB" live-udp --corpus "$CORPUS" --jailsink "$JAILSINK" "${before[@]}" --blaster "$OUT/udp-blaster" \
  --botnet "${BOTNET:-100000}" --rates "${RATES:-200000,300000,400000}" --seconds "${SECONDS_PER_RATE:-3}"
