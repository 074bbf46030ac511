#!/usr/bin/env bash
# Offline matching, one run, one corpus: jailsink regex vs fail2ban-rs dry-run vs sshguard's
# parser vs fail2ban-regex, each single-threaded; counts checked against the ground truth.
# LINES=1000000 by default. fail2ban-rs is installed from crates.io into bench/out/tools.
source "$(dirname "$0")/lib.sh"
need_pkg /usr/libexec/sshguard/sshg-parser sshguard
need_pkg fail2ban-regex fail2ban
F2BRS=$OUT/tools/bin/fail2ban-rs
[[ -x $F2BRS ]] || cargo install --quiet --locked fail2ban-rs --version 1.5.4 --root "$OUT/tools"
corpus
machine
"$JB" offline --corpus "$CORPUS" --jailsink "$JAILSINK" --fail2ban-rs "$F2BRS"
