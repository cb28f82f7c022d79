"""Start-up recovery in slices (issue 15, backlog at scale): a restarted daemon greets while its
relay routes the queued messages back to their destinations' queues a slice per loop turn.
Every queued message comes back exactly once, and an operator action on a message whose slice
has not come yet finds it (the relay routes that one first) and is kept across a SIGKILL.

RECOVERY_MESSAGES (default 20000) 1 KiB messages from ringmta-blast to 50 domains routed to a
closed port (deferred, retry in 1 h); SIGKILL; restart; at once `ringmta-ctl delete` of the
newest message and `hold` of the one before it (their slices come last).

usage: test_recovery_slices.py RINGMTA RINGMTA_CTL RINGMTA_BLAST
"""
import atexit
import json
import os
import shutil
import subprocess
import sys
import tempfile

from harness import Daemon, Tap, free_port, spool_list
from peers import wait_until

ringmta, ctl, blast = sys.argv[1:4]
count = int(os.environ.get("RECOVERY_MESSAGES", "20000"))
tap = Tap()
work = tempfile.mkdtemp(prefix="ringmta-recovery-")
atexit.register(shutil.rmtree, work, True)
spool = os.path.join(work, "spool")
closed = free_port()
# Routed to a closed port (no MX lookup to wait for): every message is deferred and queued.
args = ["--retry-schedule", "1h", "--resolver", "127.0.0.1:9"]
for i in range(50):
    args += ["--route", f"d{i}.test=127.0.0.1:{closed}"]


def run_ctl(*arguments):
    return subprocess.run([ctl, "--spool", spool, *arguments], capture_output=True, text=True,
                          timeout=120)


def queued_jobs(daemon):
    status, body = daemon.admin("GET", "/queue/messages?limit=100000", timeout=60)
    return json.loads(body) if status == 200 else None


daemon = Daemon(ringmta, spool=spool, shards=1, args=args).start()
done = subprocess.run([blast, "--target", f"127.0.0.1:{daemon.port}", "--sessions",
                       str(count // 100), "--messages-per-session", "100", "--concurrency", "10",
                       "--size", "1k", "--domains", "50", "--quiet", "--json"],
                      capture_output=True, text=True, timeout=600)
summary = json.loads(done.stdout) if done.stdout.strip().startswith("{") else {}
accepted = summary.get("messages", {}).get("accepted", 0)
tap.ok(accepted == count, f"{count} messages accepted", summary)
daemon.kill()
ids = sorted(m["id"] for m in spool_list(ringmta, spool))
tap.ok(len(ids) == count, "all of them are in the spool", len(ids))
newest, second = ids[-1], ids[-2]

daemon = Daemon(ringmta, spool=spool, shards=1, args=args).start(timeout=120)
deleted = run_ctl("delete", newest)
held = run_ctl("hold", second)
tap.ok(deleted.returncode == 0 and held.returncode == 0,
       "delete and hold right after the restart find their messages",
       (deleted.stdout, deleted.stderr, held.stdout, held.stderr))
tap.ok(wait_until(lambda: daemon.events("queue_recovered"), 300), "queue_recovered is logged",
       daemon.events("queue_recovered"))
recovered = daemon.events("queue_recovered")
tap.ok(recovered and recovered[0].get("messages") == count, "it counts every queued message",
       recovered)
operator = daemon.events("operator")
done_at = recovered[0].get("ts") if recovered else None
print(f"# actions at {[r.get('ts') for r in operator]}, recovery done at {done_at}", flush=True)
jobs = queued_jobs(daemon)
listed = [j["id"] for j in jobs or []]
tap.ok(jobs is not None and len(listed) == count - 1 and set(listed) == set(ids) - {newest},
       "every message is queued exactly once, the deleted one not at all",
       (len(listed), len(set(listed))))
states = {j["id"]: j["state"] for j in jobs or []}
tap.ok(states.get(second) == "held", "the held one is held", states.get(second))

daemon.kill()
after = {m["id"]: m for m in spool_list(ringmta, spool)}
tap.ok(newest not in after and after.get(second, {}).get("held") is True and
       len(after) == count - 1, "after SIGKILL: deleted stays gone, held stays held",
       (len(after), after.get(second)))
tap.done()
