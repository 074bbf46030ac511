#!/usr/bin/env bash
# Start-up with persisted bans: a state.db holding N active bans (written with SQLite), then
# seconds from `jailsink run` until every ban is applied (log action); and the idle RSS.
# IPTABLES=1 also measures the iptables backend (as root, in a network namespace of its own):
# until the chains hold every ban, and again after a kill -9 that left the chains in place.
# NFTABLES=1 does the same with the nftables backend (its sets counted).
source "$(dirname "$0")/lib.sh"
machine
"$JB" restore --jailsink "$JAILSINK" --bans "${BANS:-100000}"
if [[ ${IPTABLES:-} == 1 ]]; then
  ns=jsb-restore-$$
  ip netns add "$ns"
  trap 'ip netns del "$ns"' EXIT
  ip -n "$ns" link set lo up
  echo "$(iptables --version)"
  ip netns exec "$ns" "$JB" restore --jailsink "$JAILSINK" --bans "${BANS:-100000}" --action iptables
fi
if [[ ${NFTABLES:-} == 1 ]]; then
  nsn=jsb-restore-nft-$$
  ip netns add "$nsn"
  trap '[[ -z ${ns:-} ]] || ip netns del "$ns"; ip netns del "$nsn"' EXIT
  ip -n "$nsn" link set lo up
  echo "$(nft --version)"
  ip netns exec "$nsn" "$JB" restore --jailsink "$JAILSINK" --bans "${BANS:-100000}" --action nftables
fi
"$JB" idle --jailsink "$JAILSINK"
