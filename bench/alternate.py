#!/usr/bin/env python3
"""Alternates `jailbench attackers` or `jailbench offline` configurations and prints medians, for
before/after figures on a shared machine: every configuration runs once per round, REPS rounds,
so load swings hit them alike.

    bench/alternate.py REPS 'NAME=[VAR=VALUE ...] BINARY attackers ARGS' ...
    bench/alternate.py REPS 'NAME=BINARY offline ARGS' ...

attackers, per configuration: the median (and best) decisions per CPU second of each address
count, batched and one by one, and the ratio of the largest count to the smallest, both as a
ratio of medians and as the median (and range) of each run's own ratio.

offline, per configuration and tool: the median lines/s and seconds, every count of failures
found, and each jailsink row's per-run ratio to every other tool in the same run (median and
every run's).
"""
import os
import shlex
import statistics
import subprocess
import sys


def main():
    reps, confs = int(sys.argv[1]), sys.argv[2:]
    rows = {c: {} for c in confs}
    offline = {c: [] for c in confs}
    for _ in range(reps):
        for conf in confs:
            parts = shlex.split(conf.split("=", 1)[1])
            env = dict(os.environ)
            while parts and "=" in parts[0] and not parts[0].startswith("/"):
                key, value = parts.pop(0).split("=", 1)
                env[key] = value
            out = subprocess.run(parts, capture_output=True, text=True, env=env, check=True).stdout
            tools = {}
            for line in out.splitlines():
                f = [x.strip() for x in line.split("|")]
                if len(f) > 5 and f[1].isdigit():
                    rows[conf].setdefault(int(f[1]), []).append((float(f[2]), float(f[4])))
                elif len(f) > 8 and f[7].endswith(" MB") and f[2].replace(".", "").isdigit():
                    # offline: | tool | lines/s | seconds | CPU seconds | found | ...
                    tools[f[1]] = (float(f[2]), float(f[3]), int(f[5]))
            if tools:
                offline[conf].append(tools)
    for conf in confs:
        if offline[conf]:
            print_offline(conf.split("=", 1)[0], offline[conf])
            continue
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


def print_offline(name, runs):
    """Medians per tool, and each jailsink row's per-run ratios to the other tools."""
    tools = list(runs[0])
    for tool in tools:
        rates = [r[tool][0] for r in runs if tool in r]
        secs = [r[tool][1] for r in runs if tool in r]
        found = sorted({r[tool][2] for r in runs if tool in r})
        print(
            f"{name}: {tool}: median {statistics.median(rates):,.0f} lines/s, "
            f"{statistics.median(secs):.3f} s (runs: {', '.join(f'{x:.3f}' for x in secs)}); "
            f"found {', '.join(map(str, found))}"
        )
    for tool in (t for t in tools if t.startswith("jailsink")):
        for other in (t for t in tools if not t.startswith("jailsink")):
            ratios = [r[tool][0] / r[other][0] for r in runs if tool in r and other in r]
            print(
                f"{name}: {tool} / {other}: per-run median {statistics.median(ratios):.2f}x "
                f"({', '.join(f'{x:.2f}' for x in ratios)})"
            )


if __name__ == "__main__":
    main()
