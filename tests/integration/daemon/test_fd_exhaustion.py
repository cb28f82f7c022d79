#!/usr/bin/env python3
"""Descriptor exhaustion (issue 10 item 4): ringmta under a 256-descriptor limit (prlimit, so
it cannot raise it) and 400 clients at once. It warns at start-up that the limits need more
descriptors; at the limit the listener pauses instead of spinning; every client is greeted
(or refused) in the end; a probe is answered once the load is gone. The daemon's CPU time
over the window is reported, not asserted (no timing assertions).
usage: test_fd_exhaustion.py RINGMTA_BINARY"""
import os
import resource
import selectors
import shutil
import socket
import stat
import sys
import tempfile
import time

from harness import Conversation, Daemon, Tap

tap = Tap()
binary = sys.argv[1]
if shutil.which("prlimit") is None:
    tap.skip_all("prlimit (util-linux) is not installed")
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
if soft < 2048:
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(4096, hard), hard))

work = tempfile.mkdtemp(prefix="ringmta-fd-")
wrapper = os.path.join(work, "ringmta-256")
with open(wrapper, "w") as f:
    limit = int(os.environ.get("FD_LIMIT", "256"))  # a larger one for a side-by-side look
    f.write(f"#!/bin/sh\nexec prlimit --nofile={limit}:{limit} {binary} \"$@\"\n")
os.chmod(wrapper, stat.S_IRWXU)

d = Daemon(wrapper, shards=1, args=["--max-sessions-per-shard", "1000",
                                    "--max-sessions-per-client", "1000",
                                    "--timeout-command", "20s"]).start()
warned = [r for r in d.events("warning") if "RLIMIT_NOFILE" in r.get("detail", "")]
tap.ok(bool(warned), "start-up warns that 256 descriptors are fewer than the limits need",
       d.stderr_lines[-5:])


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


CLIENTS, HOLD = 400, float(os.environ.get("HOLD_SECONDS", "1.5"))
cpu_before = cpu_seconds(d.process.pid)
started = time.monotonic()
selector = selectors.DefaultSelector()
state = {}
for i in range(CLIENTS):
    s = socket.socket()
    s.setblocking(False)
    s.connect_ex(("127.0.0.1", d.port))
    selector.register(s, selectors.EVENT_READ, i)
    state[i] = {"sock": s, "data": b"", "outcome": None, "quit_at": None}
deadline = started + 90
while time.monotonic() < deadline and any(v["outcome"] is None for v in state.values()):
    now = time.monotonic()
    for v in state.values():  # greeted clients hold their session a while, then QUIT
        if v["quit_at"] is not None and now >= v["quit_at"]:
            v["quit_at"] = None
            try:
                v["sock"].send(b"QUIT\r\n")
            except OSError:
                pass
    for key, _ in selector.select(timeout=0.1):
        v = state[key.data]
        try:
            chunk = v["sock"].recv(4096)
        except (BlockingIOError, InterruptedError):
            continue
        except OSError:
            chunk = b""
        v["data"] += chunk
        if v["data"].startswith(b"220") and v["quit_at"] is None and b"221" not in v["data"] \
                and v.get("greeted") is None:
            v["greeted"] = time.monotonic()
            v["quit_at"] = time.monotonic() + HOLD
        if not chunk:
            v["outcome"] = ("greeted" if v["data"].startswith(b"220") else
                            "refused" if v["data"][:3] in (b"421", b"554") else "dropped")
            selector.unregister(v["sock"])
            v["sock"].close()
window = time.monotonic() - started
cpu_used = cpu_seconds(d.process.pid) - cpu_before
outcomes = [v["outcome"] for v in state.values()]
print(f"# {CLIENTS} clients under a 256-descriptor limit: {outcomes.count('greeted')} greeted, "
      f"{outcomes.count('refused')} refused, {outcomes.count('dropped')} dropped, "
      f"{outcomes.count(None)} unfinished in {window:.1f} s; daemon CPU {cpu_used:.2f} s "
      f"({100 * cpu_used / window:.0f} % of one core)", flush=True)
tap.ok(outcomes.count(None) == 0 and outcomes.count("dropped") == 0,
       "every client was greeted or refused cleanly (none left waiting, none cut off)",
       {o: outcomes.count(o) for o in set(outcomes)})
tap.ok(outcomes.count("greeted") > 0, "clients were served while at the limit")
metrics = d.metrics()
print(f"# accept pauses: {metrics.get('ringmta_accept_pauses_total')}", flush=True)
tap.ok(metrics.get("ringmta_accept_pauses_total", 0) >= 1,
       "the listener paused at the descriptor limit (counted)", metrics)
paused_lines = d.events("accept_paused")
tap.ok(len(paused_lines) == 1 and paused_lines[0].get("pauses", 0) >= 1,
       "logged once, with the count", paused_lines)
probe = Conversation(d.port)
code, _ = probe.reply()
code2, _ = probe.command("EHLO probe.test")
tap.ok(code == 220 and code2 == 250, "a probe is answered after the load is gone")
probe.close()
tap.ok(d.stop() == 0, "clean exit")
shutil.rmtree(work, ignore_errors=True)
tap.done()
