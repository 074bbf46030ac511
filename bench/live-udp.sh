#!/usr/bin/env bash
# Live UDP ingest: offered rates stepped up; loss = 1 - counted/sent after the queue settles.
source "$(dirname "$0")/lib.sh"
corpus
machine
"$JB" live-udp --corpus "$CORPUS" --jailsink "$JAILSINK" \
  --rates "${RATES:-100000,200000,300000,400000,500000,600000}" --seconds "${SECONDS_PER_RATE:-3}"
