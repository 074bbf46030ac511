#!/usr/bin/env bash
# Every shipped filter next to sshd alone, same run: offline (`jailsink regex` with sshd.toml and
# with one filter holding every shipped filter's patterns) and live TCP (the sshd jail alone,
# every shipped jail on its own programs, every shipped jail on every program). ROUNDS=3.
source "$(dirname "$0")/lib.sh"
corpus
machine
"$JB" filters --corpus "$CORPUS" --jailsink "$JAILSINK" --rounds "${ROUNDS:-3}"
