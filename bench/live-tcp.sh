#!/usr/bin/env bash
# Live TCP ingest: the corpus with <PRI> pushed into jailsink and into a private rsyslogd (imtcp
# to a file; its own config, pid file and work directory), over 1 and 4 connections, LF and
# octet-counted; msg/s from the first byte until the receiver has counted every message.
# TAIL=1 also measures jailsink with a `jailsink tail` client connected; ONE_CORE=1 also
# measures jailsink pinned to one core (taskset), for the scaling over cores. Each row reports
# the receiver's CPU seconds per million messages.
source "$(dirname "$0")/lib.sh"
need_pkg rsyslogd rsyslog
corpus
machine
"$JB" live-tcp --corpus "$CORPUS" --jailsink "$JAILSINK" --rsyslogd "$(command -v rsyslogd)" \
  --connections "${CONNECTIONS:-1,4}" --repeat "${REPEAT:-1}" ${TAIL:+--tail} ${ONE_CORE:+--one-core}
