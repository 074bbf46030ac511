#!/usr/bin/env bash
# Ban latency (receipt of the deciding message to action done, from jailsink_ban_latency_seconds):
# the log action, then the iptables action inside a private network namespace (root). The
# nftables backend comes with the firewall branch. 900 bans: the default ban storm guard withholds
# bans past 1,000 a minute.
source "$(dirname "$0")/lib.sh"
machine
"$JB" latency --jailsink "$JAILSINK" --action log --bans "${BANS:-900}"
if [[ $(id -u) == 0 ]] && command -v ip >/dev/null && command -v iptables >/dev/null; then
  ns=jsbench-$$
  ip netns add "$ns"
  trap 'ip netns del "$ns"' EXIT
  ip netns exec "$ns" ip link set lo up
  ip netns exec "$ns" "$JB" latency --jailsink "$JAILSINK" --action iptables --bans "${BANS:-900}" | tail -1
else
  echo "iptables: skipped (needs root, ip and iptables)"
fi
