#!/usr/bin/env bash
# Start-up with persisted bans: a state.db holding N active bans (written with SQLite), then
# seconds from `jailsink run` until every ban is applied (log action); and the idle RSS.
source "$(dirname "$0")/lib.sh"
machine
"$JB" restore --jailsink "$JAILSINK" --bans "${BANS:-100000}"
"$JB" idle --jailsink "$JAILSINK"
