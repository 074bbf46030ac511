#!/usr/bin/env python3
"""Alternates `jailbench attackers` configurations and prints medians, for before/after figures
on a shared machine: every configuration runs once per round, REPS rounds, so load swings hit
them alike.

    bench/alternate.py REPS 'NAME=[VAR=VALUE ...] BINARY attackers ARGS' ...

Per configuration: the median (and best) decisions per CPU second of each address count,
batched and one by one, and the ratio of the largest count to the smallest, both as a ratio of
medians and as the median (and range) of each run's own ratio.
"""
import os
import shlex
import statistics
import subprocess
import sys


def main():
    reps, confs = int(sys.argv[1]), sys.argv[2:]
    rows = {c: {} for c in confs}
    for _ in range(reps):
        for conf in confs:
            parts = shlex.split(conf.split("=", 1)[1])
            env = dict(os.environ)
            while parts and "=" in parts[0] and not parts[0].startswith("/"):
                key, value = parts.pop(0).split("=", 1)
                env[key] = value
            out = subprocess.run(parts, capture_output=True, text=True, env=env, check=True).stdout
            for line in out.splitlines():
                f = [x.strip() for x in line.split("|")]
                if len(f) > 5 and f[1].isdigit():
                    rows[conf].setdefault(int(f[1]), []).append((float(f[2]), float(f[4])))
    for conf in confs:
        runs = rows[conf]
        small, large = min(runs), max(runs)
        parts = []
        for n in sorted(runs):
            batched = sorted(x[0] for x in runs[n])
            single = sorted(x[1] for x in runs[n])
            parts.append(
                f"{n}: batched {statistics.median(batched) / 1e6:.2f}M (best {batched[-1] / 1e6:.2f}M), "
                f"one by one {statistics.median(single) / 1e6:.2f}M"
            )
        ratios = sorted(a[0] / b[0] for a, b in zip(runs[large], runs[small]))
        of_medians = statistics.median(x[0] for x in runs[large]) / statistics.median(
            x[0] for x in runs[small]
        )
        print(
            f"{conf.split('=', 1)[0]}: " + "; ".join(parts)
            + f"; {large}/{small}: ratio of medians {of_medians * 100:.0f}%, "
            + f"per-run median {statistics.median(ratios) * 100:.0f}% "
            + f"({ratios[0] * 100:.0f}-{ratios[-1] * 100:.0f}%)"
        )


if __name__ == "__main__":
    main()
