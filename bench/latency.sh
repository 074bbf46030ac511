#!/usr/bin/env bash
# Ban latency (receipt of the deciding message to action done, from jailsink_ban_latency_seconds)
# under background load (BACKGROUND ordinary messages a second on a second connection): the log
# action, then the nftables and iptables actions, each inside a private network namespace
# (root). 900 bans: the default ban storm guard withholds bans past 1,000 a minute.
source "$(dirname "$0")/lib.sh"
machine
bg=${BACKGROUND:-100000}
"$JB" latency --jailsink "$JAILSINK" --action log --bans "${BANS:-900}" --background "$bg"
if [[ $(id -u) == 0 ]] && command -v ip >/dev/null; then
  for action in nftables iptables; do
    ns=jsbench-$$-$action
    ip netns add "$ns"
    ip netns exec "$ns" ip link set lo up
    ip netns exec "$ns" "$JB" latency --jailsink "$JAILSINK" --action "$action" \
      --bans "${BANS:-900}" --rate "${RATE:-1000}" --background "$bg" | tail -1
    ip netns del "$ns"
  done
else
  echo "firewall actions: skipped (needs root and ip)"
fi
