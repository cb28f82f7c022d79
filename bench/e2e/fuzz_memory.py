#!/usr/bin/env python3
"""Memory under socket fuzzing (issue 10 item 8): the socket fuzzer's sessions
(tests/integration/daemon/test_socket_fuzz.py) against one ringmta for MINUTES, relaying to
the lax downstream so the queue drains; the daemon's RSS (and its queue) sampled every
INTERVAL seconds and printed as a table for bench/README.md. Not a test: run it by hand.
usage: fuzz_memory.py RINGMTA_BINARY [MINUTES=30] [INTERVAL=60] [WORKERS=6]
(RINGMTA_ARGS="--spool-segment-size 4M" adds daemon flags)"""
import os
import random
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                "../../tests/integration/daemon"))
from harness import Daemon  # noqa: E402
from lax_downstream import LaxDownstream  # noqa: E402
import test_socket_fuzz as fuzz  # noqa: E402  (runs nothing at import: see its guard)


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def main():
    binary = sys.argv[1]
    minutes = float(sys.argv[2]) if len(sys.argv) > 2 else 30
    interval = float(sys.argv[3]) if len(sys.argv) > 3 else 60
    workers = int(sys.argv[4]) if len(sys.argv) > 4 else 6
    seed = int(os.environ.get("SOCKET_FUZZ_SEED", "1"))
    down = LaxDownstream()
    d = Daemon(binary, shards=2, args=[
        "--bare-line-endings", "normalize", "--relay-domains", "fuzz.test",
        "--route", f"fuzz.test=127.0.0.1:{down.port}", "--retry-schedule", "1s",
        "--timeout-command", "3s", "--timeout-data-block", "3s", "--max-message-size", "1M",
        "--max-errors-per-session", "50"] + os.environ.get("RINGMTA_ARGS", "").split()).start()
    stats = {"lock": threading.Lock(), "acked": set(), "whole": set(), "hangs": [],
             "sessions": 0, "resets": 0}
    stop_at = time.monotonic() + minutes * 60

    def worker(index):
        rng = random.Random(seed * 1000 + index)
        number = 0
        while time.monotonic() < stop_at and d.process.poll() is None:
            fuzz.Session(d.port, rng, f"m{index}", number, stats).run()
            number += 1
            if number % 200 == 0:
                with stats["lock"]:
                    stats["acked"].clear()  # only counted, not checked here
                    stats["whole"].clear()

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(workers)]
    started = time.monotonic()
    print(f"# seed {seed}, {workers} workers, {minutes} min; sampling every {interval} s")
    print("| minute | sessions | RSS MiB | queued jobs | sessions open | segments removed |")
    print("|---|---|---|---|---|---|", flush=True)
    for t in threads:
        t.start()
    while True:
        m = d.metrics()
        print(f"| {(time.monotonic() - started) / 60:.1f} | {stats['sessions']} | "
              f"{rss_kib(d.process.pid) / 1024:.1f} | {m.get('ringmta_queued_jobs', 0):.0f} | "
              f"{m.get('ringmta_sessions', 0):.0f} | "
              f"{m.get('ringmta_spool_segments_removed_total', 0):.0f} |", flush=True)
        if time.monotonic() >= stop_at:
            break
        time.sleep(interval)
    for t in threads:
        t.join(60)
    time.sleep(10)  # let the queue drain
    m = d.metrics()
    print(f"| drained | {stats['sessions']} | {rss_kib(d.process.pid) / 1024:.1f} | "
          f"{m.get('ringmta_queued_jobs', 0):.0f} | {m.get('ringmta_sessions', 0):.0f} |")
    print(f"# downstream got {len(down.snapshot())} messages; daemon alive: "
          f"{d.process.poll() is None}")
    d.stop()


if __name__ == "__main__":
    main()
