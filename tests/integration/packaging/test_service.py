"""Supervision with real parts: systemd's notify protocol over a real unix datagram socket (as
systemd's NOTIFY_SOCKET), and /health, while a shard's loop is really frozen (the
--debug-endpoints hook POST /debug/freeze/SHARD?ms=N blocks that shard's thread).
  READY=1 comes after recovery and listeners, WATCHDOG=1 follows at half WATCHDOG_USEC while
  every shard turns and stops while one is frozen, STOPPING=1 comes on SIGTERM, in that order;
  /health is 200, then 503 naming the frozen shard, then 200 again.
The daemon runs as an unprivileged --user (notifications must work after the drop).
usage: test_service.py build/src/ringmta
"""
import os
import pwd
import socket
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "daemon"))
from harness import Daemon, Tap  # noqa: E402

binary = os.path.abspath(sys.argv[1])
tap = Tap()


def wait_until(predicate, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    return predicate()


class NotifySocket:
    """What systemd listens on: a unix datagram socket; records (time, message)."""

    def __init__(self, directory):
        self.path = os.path.join(directory, "notify")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        os.chmod(self.path, 0o777)  # the daemon writes to it after dropping to its user
        self.sock.settimeout(0.2)
        self.messages = []
        self._stop = False
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self):
        while not self._stop:
            try:
                data = self.sock.recv(4096)
            except socket.timeout:
                continue
            for line in data.decode().splitlines():
                self.messages.append((time.monotonic(), line))

    def first(self, line, after=0.0):
        for at, text in self.messages:
            if at >= after and text == line:
                return at
        return None

    def count(self, line, since, until):
        return sum(1 for at, text in self.messages if text == line and since <= at <= until)

    def close(self):
        self._stop = True
        self._thread.join(2)
        self.sock.close()


work = tempfile.mkdtemp(prefix="ringmta-service-")
os.chmod(work, 0o755)
notify = NotifySocket(work)
env = dict(os.environ, NOTIFY_SOCKET=notify.path, WATCHDOG_USEC="1000000")
env.pop("WATCHDOG_PID", None)
args = ["--debug-endpoints"]
if os.geteuid() == 0:
    user = "ringmta-test" if any(p.pw_name == "ringmta-test" for p in pwd.getpwall()) \
        else "nobody"
    args += ["--user", user]
daemon = Daemon(binary, spool=os.path.join(work, "spool"), shards=2, env=env, args=args)
daemon.start()
ready_at = wait_until(lambda: notify.first("READY=1"), 10)
tap.ok(ready_at is not None, "READY=1 once recovery is done and the listeners are open",
       notify.messages)
tap.ok(any(t.startswith("STATUS=accepting mail on 127.0.0.1:") for _, t in notify.messages),
       "STATUS= says where it listens", notify.messages)
first_ping = wait_until(lambda: notify.first("WATCHDOG=1"), 10)
tap.ok(first_ping is not None and first_ping >= ready_at, "WATCHDOG=1 follows READY=1")
code, body = daemon.admin("GET", "/health")
tap.ok(code == 200 and body == "ok\n", "/health: 200 while every shard turns", body)

# Freeze shard 1 for 9 s: past the 5 s stall limit, /health says so and the pings stop.
code, body = daemon.admin("POST", "/debug/freeze/1?ms=9000")
frozen_at = time.monotonic()
tap.ok(code == 200, "debug hook freezes shard 1", body)
stalled = wait_until(lambda: (lambda r: r if r[0] == 503 else None)(
    daemon.admin("GET", "/health")), 12)
tap.ok(stalled and "shard 1: loop stalled" in stalled[1], "/health: 503 naming the stuck shard",
       stalled)
stalled_at = time.monotonic()
withheld = wait_until(lambda: any(t.startswith("STATUS=watchdog withheld: shard 1")
                                  for _, t in notify.messages), 5)
tap.ok(withheld, "STATUS= says the watchdog is withheld and why", notify.messages[-5:])
time.sleep(1.5)  # three ping intervals inside the stall
tap.ok(notify.count("WATCHDOG=1", stalled_at + 0.6, time.monotonic()) == 0,
       "no WATCHDOG=1 while a shard is stuck",
       [m for m in notify.messages if m[0] > stalled_at])
recovered = wait_until(lambda: daemon.admin("GET", "/health")[0] == 200, 15)
tap.ok(recovered, "/health back to 200 once the shard turns again")
resumed = wait_until(lambda: notify.first("WATCHDOG=1", after=frozen_at + 9), 5)
tap.ok(resumed is not None, "and the watchdog pings resume")
tap.ok(any(t == "STATUS=running: every shard turns again" for _, t in notify.messages),
       "STATUS= says so")
code, body = daemon.admin("POST", "/debug/freeze/7?ms=10")
tap.ok(code == 400, "a shard that does not exist: 400", body)
code, body = daemon.admin("POST", "/debug/freeze/0?ms=600000")
tap.ok(code == 400, "longer than 60 s: 400", body)

tap.ok(daemon.stop() == 0, "SIGTERM: clean exit")
stopping_at = notify.first("STOPPING=1")
tap.ok(stopping_at is not None and stopping_at > first_ping > ready_at - 0.001,
       "READY=1, WATCHDOG=1, STOPPING=1 arrive in that order",
       [t for _, t in notify.messages if not t.startswith("STATUS")][:3] +
       [t for _, t in notify.messages if t == "STOPPING=1"])
notify.close()

# Without --debug-endpoints the hook does not exist.
plain = Daemon(binary, shards=1).start()
code, _ = plain.admin("POST", "/debug/freeze/0?ms=10")
tap.ok(code == 404, "no --debug-endpoints: /debug is 404")
code, _ = plain.admin("GET", "/health")
tap.ok(code == 200, "and /health is 200 without NOTIFY_SOCKET (no notify socket needed)")
plain.stop()
subprocess.run(["rm", "-rf", work])
tap.done()
