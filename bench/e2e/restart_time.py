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

--first-delivery: ringmta-sink (BUILD's, --sink) answers every end of data 451 (so the spool
keeps every message) and is the daemon's relayhost: the time and CPU until the first message's
end of data reaches it are printed too. --probe-seconds S: after the greeting, a new connection
every 20 ms for S seconds, each timed from connect to its 220 (the shards' loops while they
route the recovered messages): median and maximum. queue_recovered's "took" per shard is read
from the log.

usage: bench/e2e/restart_time.py SPOOL BINARY [BINARY ...] [--rounds 3] [--shards 2]
       [--drop-caches] [--perf FILE]   (--perf: perf record -g of the first binary's first start)
       [--first-delivery [--sink PATH]] [--probe-seconds S]
"""
import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "../.."))
sys.path.insert(0, os.path.join(ROOT, "tests/integration/daemon"))
sys.path.insert(0, os.path.join(ROOT, "tests/integration/delivery"))
sys.path.insert(0, HERE)
from harness import Daemon, free_port  # noqa: E402
from peers import wait_until  # noqa: E402
from relay import cpu_seconds, sink_count, sink_start  # noqa: E402
from backlog import LogTail, greets, load  # noqa: E402


def sink_messages(process, stats):
    """Messages whose end of data reached the sink (answered 451 here)."""
    return sink_count(process, stats, "messages", 0.02)


class FirstAtSink(threading.Thread):
    """Watches the sink from before the start: when (and at what daemon CPU) the first new
    message's end of data reached it, measured while the probes run."""

    def __init__(self, sink, t0):
        super().__init__(daemon=True)
        self.sink, self.t0 = sink, t0
        self.before = sink_messages(sink[0], sink[1])
        self.pid = None  # set once the daemon runs
        self.first = None
        self.stopping = False

    def run(self):
        while not self.stopping and time.monotonic() - self.t0 < 300:
            if self.pid and sink_messages(self.sink[0], self.sink[1]) > self.before:
                self.first = (time.monotonic() - self.t0, cpu_seconds(self.pid))
                return
            time.sleep(0.01)


def greeting_ms(port):
    """Milliseconds from connect to a 220 on a new connection (None: refused or no 220)."""
    t0 = time.monotonic()
    return (time.monotonic() - t0) * 1000 if greets(port) else None


def probe_greetings(port, seconds):
    samples = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        samples.append(greeting_ms(port))
        time.sleep(0.02)
    done = sorted(s for s in samples if s is not None)
    if not done:
        return "no probe greeted"
    return (f"{len(done)}/{len(samples)} probes greeted, median "
            f"{statistics.median(done):.1f} ms, max {done[-1]:.1f} ms")


def drop_caches():
    subprocess.run(["sync"], check=True, timeout=600)
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("3\n")


def one_start(binary, spool, shards, work, perf=None, sink=None, probe_seconds=0):
    log = os.path.join(work, "ringmta.log")
    if os.path.exists(log):
        os.unlink(log)
    # perf wraps the whole process: recovery runs before the daemon logs that it listens.
    prefix = ["perf", "record", "-g", "-o", perf, "--"] if perf else []
    extra = ["--relayhost", f"127.0.0.3:{sink[2]}"] if sink else []
    daemon = Daemon(binary, spool=spool, shards=shards, log_lines=LogTail(log),
                    stdout=subprocess.DEVNULL, prefix=prefix,
                    args=["--log-output", "file", "--log-file", log] + extra +
                    (["--allow-root"] if perf and os.geteuid() == 0 else []))
    t0 = time.monotonic()
    watcher = FirstAtSink(sink, t0) if sink else None
    if watcher:
        watcher.start()
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
    if watcher:
        watcher.pid = pid
    print(f"  listening after {listening:.2f} s", flush=True)
    if probe_seconds:
        print(f"  after the greeting: {probe_greetings(daemon.port, probe_seconds)}", flush=True)
    first = None
    if watcher:
        watcher.join(300)
        first = watcher.first
        if first:
            print(f"  first message at the sink after {first[0]:.2f} s (daemon CPU "
                  f"{first[1]:.2f} s)", flush=True)
    daemon.stop(timeout=300)
    # What recovery found, per shard (the binaries compared must agree on it).
    recovered = []
    routed = []  # queue_recovered's "took" of each shard: every queued message routed
    with open(log, errors="replace") as f:  # start-up events go to stderr, before the log file
        for line in daemon.stderr_lines + f.readlines():
            if '"queue_recovered"' in line:
                took = re.search(r'"took":\s*"?([0-9.]+)', line)
                routed.append(f"{took.group(1)} s" if took else "?")
            if "spool_recovered" in line:
                found = re.search(r"shard (\d+): (\d+) queued", line)
                if found:
                    recovered.append(f"shard {found.group(1)}: {found.group(2)} queued")
    print(f"  recovered: {', '.join(recovered)}; queue_recovered took "
          f"{', '.join(routed) or '(not logged)'}", flush=True)
    if greeted is None:
        raise SystemExit(f"{binary} did not greet within 300 s; its last lines:\n" +
                         "".join(daemon.stderr_lines[-20:]))
    return greeted, cpu, recovered, first


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("spool")
    parser.add_argument("binaries", nargs="+")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--shards", type=int, default=2)
    parser.add_argument("--drop-caches", action="store_true")
    parser.add_argument("--perf", metavar="FILE")
    parser.add_argument("--first-delivery", action="store_true")
    parser.add_argument("--sink", default=os.path.join(ROOT, "build/tools/sink/ringmta-sink"))
    parser.add_argument("--probe-seconds", type=float, default=0)
    args = parser.parse_args()
    work = tempfile.mkdtemp(prefix="ringmta-restart-", dir="/var/tmp")
    sink = None
    if args.first_delivery:  # every end of data answered 451: the spool keeps every message
        port = free_port("127.0.0.3")
        process, stats = sink_start(args.sink, port, work, ["--tempfail-rate", "1"])
        sink = (process, stats, port)
    results = {binary: [] for binary in args.binaries}
    first_recovered = None
    for round_number in range(args.rounds):
        for index, binary in enumerate(args.binaries):
            if args.drop_caches:
                drop_caches()
            perf = args.perf if args.perf and round_number == 0 and index == 0 else None
            greeted, cpu, recovered, first = one_start(binary, args.spool, args.shards, work,
                                                       perf, sink, args.probe_seconds)
            # Each start may change the spool (due retries deferred, expired jobs bounced):
            # the comparison holds only while every start recovered the same messages.
            first_recovered = first_recovered or recovered
            if recovered != first_recovered:
                raise SystemExit(f"{binary} recovered {recovered}, the first start "
                                 f"{first_recovered}: the spool changed between starts")
            results[binary].append((greeted, cpu) + (first or ()))
            print(f"round {round_number + 1} {binary}: greets after {greeted:.2f} s, daemon CPU "
                  f"until then {cpu:.2f} s" +
                  (f"; first message at the sink after {first[0]:.2f} s (CPU {first[1]:.2f} s)"
                   if first else "") + f" (load {load()})", flush=True)
    if sink:
        sink[0].terminate()
        sink[0].wait(timeout=30)
    for binary, runs in results.items():
        firsts = [r for r in runs if len(r) == 4]
        print(f"median {binary}: greets after {statistics.median(r[0] for r in runs):.2f} s, "
              f"CPU {statistics.median(r[1] for r in runs):.2f} s over {len(runs)} starts" +
              (f"; first message at the sink after {statistics.median(r[2] for r in firsts):.2f}"
               f" s (CPU {statistics.median(r[3] for r in firsts):.2f} s) in {len(firsts)}"
               if firsts else ""))
    first = results[args.binaries[0]]
    for binary in args.binaries[1:]:
        runs = results[binary]
        print(f"ratio {binary} / {args.binaries[0]}: greeting "
              f"{statistics.median(r[0] for r in runs) / statistics.median(r[0] for r in first):.2f}"
              f", CPU {statistics.median(r[1] for r in runs) / statistics.median(r[1] for r in first):.2f}")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
