#!/usr/bin/env python3
"""Per-symbol CPU per accepted message of the two profiles backlog.py --accept-perf DIR
records (DIR/reference.data, DIR/backlog.data: one probe of M messages each, cpu-clock
samples at 4999 Hz), and the symbols whose cost differs most.

usage: bench/e2e/perf_diff.py DIR M [--top 25]

perf's own `perf diff` compares shares of each profile; the shares move when any one symbol
does (a retry wave in one daemon shifts everything else). Samples / frequency / messages is
an absolute figure: µs of CPU per accepted message, comparable between the two."""
import argparse
import collections
import re
import subprocess

from accept_cost import PERF_HZ as HZ


def symbols(data):
    """{(dso, symbol): samples} of one perf.data."""
    out = subprocess.run(["perf", "report", "-i", data, "--no-children", "-g", "none", "--sort",
                          "dso,sym", "--stdio", "-F", "overhead,sample,dso,sym"],
                         capture_output=True, text=True, check=True).stdout
    counts = collections.Counter()
    for line in out.splitlines():
        m = re.match(r"\s*[\d.]+%\s+(\d+)\s+(\S+)\s+\[.\]\s+(.*)", line)
        if m:
            counts[(m.group(2), m.group(3).strip()[:100])] += int(m.group(1))
    return counts


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("dir")
    parser.add_argument("messages", type=int)
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args()
    ref, back = (symbols(f"{args.dir}/{name}.data") for name in ("reference", "backlog"))

    def us(samples):
        return 1e6 * samples / HZ / args.messages

    print(f"total µs per message: reference {us(sum(ref.values())):.1f}, backlog "
          f"{us(sum(back.values())):.1f} ({sum(ref.values())} / {sum(back.values())} samples)")
    for dso in sorted({k[0] for k in ref} | {k[0] for k in back}):
        r = us(sum(v for k, v in ref.items() if k[0] == dso))
        b = us(sum(v for k, v in back.items() if k[0] == dso))
        if r + b > 0.3:
            print(f"  {dso:28s} {r:7.2f} {b:7.2f}")
    print("largest differences, µs per message (reference -> backlog):")
    for key in sorted(set(ref) | set(back), key=lambda k: -abs(back[k] - ref[k]))[:args.top]:
        print(f"  {us(ref[key]):6.2f} -> {us(back[key]):6.2f}  {key[0]} {key[1]}")


if __name__ == "__main__":
    main()
