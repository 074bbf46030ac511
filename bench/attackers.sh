#!/usr/bin/env bash
# Many attackers: the jail's decision path with 100 .. 1M distinct failing addresses, and the
# resident memory of their tracking state; then the same with every failure's evidence line
# (host, program, message), as the listeners hand it to the jail. Each table has the batched
# path (Jail::on_failures, --batch 64) next to one by one, in decisions per CPU second.
source "$(dirname "$0")/lib.sh"
machine
"$JB" attackers --counts "${COUNTS:-100,10000,100000,1000000}"
echo "with evidence:"
"$JB" attackers --counts "${COUNTS:-100,10000,100000,1000000}" --evidence
