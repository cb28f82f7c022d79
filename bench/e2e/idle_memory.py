#!/usr/bin/env python3
"""Memory cost of idle SMTP connections: opens N connections to a fresh ringmta, reads each
greeting, leaves them idle, and reports the daemon's RSS growth per connection (and the
kernel's slab growth per connection, for context: socket structures are kernel memory).
usage: idle_memory.py RINGMTA_BINARY [N=10000]"""
import os
import resource
import socket
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "../../tests/integration/daemon"))
from harness import Daemon  # noqa: E402

binary = sys.argv[1]
count = int(sys.argv[2]) if len(sys.argv) > 2 else 10000
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, count + 1000)), hard))


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def slab_kib():
    with open("/proc/meminfo") as meminfo:
        for line in meminfo:
            if line.startswith("Slab:"):
                return int(line.split()[1])
    return 0


daemon = Daemon(binary, shards=2, args=["--max-sessions-per-client", str(count + 10),
                                         "--max-sessions-per-shard", str(count + 10)]).start()
pid = daemon.process.pid
time.sleep(0.5)
rss_before, slab_before = rss_kib(pid), slab_kib()
sockets = []
for i in range(count):
    s = socket.create_connection(("127.0.0.1", daemon.port))
    sockets.append(s)
    if i % 100 == 99:  # read greetings in batches so the daemon sends them
        for pending in sockets[-100:]:
            pending.recv(512)
for pending in sockets[count - count % 100:]:
    pending.recv(512)
time.sleep(1.0)
rss_after, slab_after = rss_kib(pid), slab_kib()
print(f"idle connections: {count}")
print(f"daemon RSS: {rss_before} KiB -> {rss_after} KiB: "
      f"{(rss_after - rss_before) * 1024 / count:.0f} bytes per connection")
print(f"kernel slab (both socket ends, whole machine): {slab_before} KiB -> {slab_after} KiB: "
      f"{(slab_after - slab_before) * 1024 / count:.0f} bytes per connection")
for s in sockets:
    s.close()
daemon.stop()
