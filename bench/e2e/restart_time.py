#!/usr/bin/env python3
"""Time from start to the first greeting on an existing spool, for two or more binaries side
by side (issue 15: restart with millions queued).

Each round starts every binary once, in turn, on the same spool (nothing can be delivered: the
resolver is 127.0.0.1:9, lookups fail at once, due retries are only deferred again), waits for
a 220 on a new connection, reads the daemon's CPU (utime+stime of all its threads) at that
moment, and stops it with SIGTERM. --drop-caches drops the page cache before every start
(root only) for cold-cache numbers. Prints one line per start and the medians per binary.
Every start works on SPOOL itself (retries deferred again, expired jobs bounced): use a copy.
It stops if a start recovers other counts than the first (the comparison would not hold).

usage: bench/e2e/restart_time.py SPOOL BINARY [BINARY ...] [--rounds 3] [--shards 2]
       [--drop-caches] [--perf FILE]   (--perf: perf record -g of the first binary's first start)
"""
import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "../.."))
sys.path.insert(0, os.path.join(ROOT, "tests/integration/daemon"))
sys.path.insert(0, os.path.join(ROOT, "tests/integration/delivery"))
sys.path.insert(0, HERE)
from harness import Daemon  # noqa: E402
from peers import wait_until  # noqa: E402
from relay import cpu_seconds  # noqa: E402
from backlog import LogTail, greets, load  # noqa: E402


def drop_caches():
    subprocess.run(["sync"], check=True, timeout=600)
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("3\n")


def one_start(binary, spool, shards, work, perf=None):
    log = os.path.join(work, "ringmta.log")
    if os.path.exists(log):
        os.unlink(log)
    # perf wraps the whole process: recovery runs before the daemon logs that it listens.
    prefix = ["perf", "record", "-g", "-o", perf, "--"] if perf else []
    daemon = Daemon(binary, spool=spool, shards=shards, log_lines=LogTail(log),
                    stdout=subprocess.DEVNULL, prefix=prefix,
                    args=["--log-output", "file", "--log-file", log] +
                    (["--allow-root"] if perf and os.geteuid() == 0 else []))
    t0 = time.monotonic()
    daemon.start(timeout=300)
    listening = time.monotonic() - t0
    greeted = None
    if wait_until(lambda: greets(daemon.port), 300, 0.01):
        greeted = time.monotonic() - t0
    pid = daemon.process.pid
    if perf:  # the daemon is perf's child
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            pid = int(f.read().split()[0])
    cpu = cpu_seconds(pid)
    print(f"  listening after {listening:.2f} s", flush=True)
    daemon.stop(timeout=300)
    # What recovery found, per shard (the binaries compared must agree on it).
    recovered = []
    with open(log, errors="replace") as f:  # start-up events go to stderr, before the log file
        for line in daemon.stderr_lines + f.readlines():
            if "spool_recovered" in line:
                found = re.search(r"shard (\d+): (\d+) queued", line)
                if found:
                    recovered.append(f"shard {found.group(1)}: {found.group(2)} queued")
    print(f"  recovered: {', '.join(recovered)}", flush=True)
    if greeted is None:
        raise SystemExit(f"{binary} did not greet within 300 s; its last lines:\n" +
                         "".join(daemon.stderr_lines[-20:]))
    return greeted, cpu, recovered


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("spool")
    parser.add_argument("binaries", nargs="+")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--shards", type=int, default=2)
    parser.add_argument("--drop-caches", action="store_true")
    parser.add_argument("--perf", metavar="FILE")
    args = parser.parse_args()
    work = tempfile.mkdtemp(prefix="ringmta-restart-", dir="/var/tmp")
    results = {binary: [] for binary in args.binaries}
    first_recovered = None
    for round_number in range(args.rounds):
        for index, binary in enumerate(args.binaries):
            if args.drop_caches:
                drop_caches()
            perf = args.perf if args.perf and round_number == 0 and index == 0 else None
            greeted, cpu, recovered = one_start(binary, args.spool, args.shards, work, perf)
            # Each start may change the spool (due retries deferred, expired jobs bounced):
            # the comparison holds only while every start recovered the same messages.
            first_recovered = first_recovered or recovered
            if recovered != first_recovered:
                raise SystemExit(f"{binary} recovered {recovered}, the first start "
                                 f"{first_recovered}: the spool changed between starts")
            results[binary].append((greeted, cpu))
            print(f"round {round_number + 1} {binary}: greets after {greeted:.2f} s, daemon CPU "
                  f"until then {cpu:.2f} s (load {load()})", flush=True)
    for binary, runs in results.items():
        print(f"median {binary}: greets after {statistics.median(r[0] for r in runs):.2f} s, "
              f"CPU {statistics.median(r[1] for r in runs):.2f} s over {len(runs)} starts")
    first = results[args.binaries[0]]
    for binary in args.binaries[1:]:
        runs = results[binary]
        print(f"ratio {binary} / {args.binaries[0]}: greeting "
              f"{statistics.median(r[0] for r in runs) / statistics.median(r[0] for r in first):.2f}"
              f", CPU {statistics.median(r[1] for r in runs) / statistics.median(r[1] for r in first):.2f}")
    os.unlink(os.path.join(work, "ringmta.log"))
    os.rmdir(work)


if __name__ == "__main__":
    main()
