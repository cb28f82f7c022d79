#!/usr/bin/env python3
"""Where the CPU goes end to end: one persistent-injection run of bench/e2e/relay.py's setup
(ringmta-blast -> ringmta -> ringmta-sink, 1 KiB messages to 100 domains, 100 per connection)
and, for each process, its CPU time per relayed message, plus the machine's idle share.

usage: bench/e2e/relay_cpu.py [MSGS=200000] [--build build] [--shards 2]"""
import argparse
import os
import resource
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "../.."))
sys.path.insert(0, HERE)
import relay  # noqa: E402  (puts the test harness on the path)
from harness import free_port  # noqa: E402
from peers import wait_until  # noqa: E402


def machine_ticks():
    with open("/proc/stat") as f:
        return [int(x) for x in f.readline().split()[1:9]]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("msgs", nargs="?", type=int, default=200000)
    parser.add_argument("--build", default=os.path.join(ROOT, "build"))
    parser.add_argument("--shards", type=int, default=2)
    args = parser.parse_args()
    blast = os.path.join(args.build, "tools/blast/ringmta-blast")
    sink_binary = os.path.join(args.build, "tools/sink/ringmta-sink")
    work = tempfile.mkdtemp(prefix="ringmta-relay-cpu-")
    dns = relay.start_dns()
    port = free_port("127.0.0.3")
    sink, stats = relay.sink_start(sink_binary, port, work)
    daemon = relay.start_ringmta(os.path.join(args.build, "src/ringmta"), args.shards, dns, port)
    before = {"ringmta": relay.cpu_seconds(daemon.process.pid), "ringmta-sink": relay.cpu_seconds(sink.pid)}
    ticks_before = machine_ticks()
    self_before = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.monotonic()
    relay.blast(blast, f"127.0.0.1:{daemon.port}", args.msgs, 100)  # persistent injection
    done = wait_until(lambda: relay.sink_accepted(sink, stats) >= args.msgs, 600, 0.05)
    elapsed = time.monotonic() - t0
    after = {"ringmta": relay.cpu_seconds(daemon.process.pid), "ringmta-sink": relay.cpu_seconds(sink.pid)}
    children = resource.getrusage(resource.RUSAGE_CHILDREN)  # blast (it has exited)
    self_after = resource.getrusage(resource.RUSAGE_SELF)
    ticks = [b - a for a, b in zip(ticks_before, machine_ticks())]
    daemon.stop()
    sink.terminate()
    sink.wait(30)
    dns.stop()
    per_message = 1e6 / args.msgs
    print(f"{args.msgs} messages end to end in {elapsed:.2f} s = {args.msgs / elapsed:.0f} msg/s"
          f"{'' if done else ' (NOT all arrived)'}; machine idle "
          f"{100 * (ticks[3] + ticks[4]) / sum(ticks):.0f}%")
    for name in before:
        spent = after[name] - before[name]
        print(f"  {name:14} {spent:6.2f} s CPU = {spent * per_message:5.1f} us/message")
    blast_cpu = children.ru_utime + children.ru_stime
    print(f"  {'ringmta-blast':14} {blast_cpu:6.2f} s CPU = {blast_cpu * per_message:5.1f} "
          "us/message")
    harness = (self_after.ru_utime + self_after.ru_stime) - (self_before.ru_utime +
                                                             self_before.ru_stime)
    print(f"  {'harness (logs)':14} {harness:6.2f} s CPU = {harness * per_message:5.1f} "
          "us/message (reads ringmta's JSON log)")


if __name__ == "__main__":
    main()
