#!/usr/bin/env bash
# TLS ingest (RFC 5425, octet-counted) next to plain TCP in the same run, over 1 and 4
# connections, msg/s until every message is counted; then full TLS handshakes a second.
# The certificate is a throwaway self-signed one made with the openssl CLI.
source "$(dirname "$0")/lib.sh"
need_pkg openssl openssl
corpus
machine
"$JB" live-tls --corpus "$CORPUS" --jailsink "$JAILSINK" --connections "${CONNECTIONS:-1,4}" \
  --handshakes "${HANDSHAKES:-2000}"
