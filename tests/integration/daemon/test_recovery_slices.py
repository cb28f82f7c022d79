"""Start-up recovery (issue 15, backlog at scale): a restarted daemon greets while its relay
reads the queued messages' commit records through the ring (oldest first, a bounded number in
flight) and routes each back to its destinations' queues as its read completes. Every queued
message comes back exactly once, and an operator action on a message not routed yet finds it
(its read starts at once, the action waits for it) and is kept across a SIGKILL.

RECOVERY_MESSAGES (default 20000) 1 KiB messages from ringmta-blast to 50 domains routed to a
closed port (deferred, retry in 1 h); SIGKILL; restart; at once, together, `ringmta-ctl delete`
of the newest message, `hold` of the one before it and `bounce --reason` of the third newest
(their reads come last); SIGKILL; a restart stopped at once by SIGTERM. The bounce's reason
must reach its log record: an action that waits for the read is sent after the routing, and
the job does not carry the journaled bounce flag (that path has no reason). Whether the
actions (and the SIGTERM) came before the end of the recovery is printed: the checks hold
either way.

usage: test_recovery_slices.py RINGMTA RINGMTA_CTL RINGMTA_BLAST
"""
import atexit
import concurrent.futures
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
newest, second, third = ids[-1], ids[-2], ids[-3]
reason = "recovery-slices-test"

daemon = Daemon(ringmta, spool=spool, shards=1, args=args).start(timeout=120)
# All at once: none waits for another to be answered.
with concurrent.futures.ThreadPoolExecutor(3) as pool:
    deleting = pool.submit(run_ctl, "delete", newest)
    holding = pool.submit(run_ctl, "hold", second)
    bouncing = pool.submit(run_ctl, "bounce", "--reason", reason, third)
    deleted, held, bounced = deleting.result(), holding.result(), bouncing.result()
tap.ok(deleted.returncode == 0 and held.returncode == 0 and bounced.returncode == 0,
       "delete, hold and bounce right after the restart find their messages",
       (deleted.stdout, deleted.stderr, held.stdout, held.stderr, bounced.stdout, bounced.stderr))
tap.ok(wait_until(lambda: daemon.events("queue_recovered"), 300), "queue_recovered is logged",
       daemon.events("queue_recovered"))
recovered = daemon.events("queue_recovered")
tap.ok(recovered and recovered[0].get("messages") == count, "it counts every queued message",
       recovered)
operator = daemon.events("operator")
done_at = recovered[0].get("ts") if recovered else None
print(f"# actions at {[r.get('ts') for r in operator]}, recovery done at {done_at} "
      f"(took {recovered[0].get('took') if recovered else None})", flush=True)

def bounce_records():
    return [r for r in daemon.events("bounced") if r.get("id") == third]


tap.ok(wait_until(bounce_records, 60) and
       all(reason in r.get("reply", "") for r in bounce_records()),
       "the bounced one's record names the operator's reason", bounce_records())
jobs = queued_jobs(daemon)
listed = [j["id"] for j in jobs or [] if j["id"] in ids]  # not its DSN
tap.ok(jobs is not None and len(listed) == count - 2 and
       set(listed) == set(ids) - {newest, third},
       "every message is queued exactly once, the deleted and bounced ones not at all",
       (len(listed), len(set(listed))))
states = {j["id"]: j["state"] for j in jobs or []}
tap.ok(states.get(second) == "held", "the held one is held", states.get(second))

daemon.kill()
after = {m["id"]: m for m in spool_list(ringmta, spool)}
# The bounce's mark may not be durable before the SIGKILL (a restart bounces it again).
kept = set(after) & (set(ids) - {third})
tap.ok(newest not in after and after.get(second, {}).get("held") is True and
       kept == set(ids) - {newest, third}, "after SIGKILL: deleted stays gone, held stays held",
       (len(kept), after.get(second)))

# SIGTERM at once, while the recovery's reads are likely still in flight: the shutdown waits
# for them (or for none), routes nothing more, and every queued message stays in the spool.
daemon = Daemon(ringmta, spool=spool, shards=1, args=args).start(timeout=120)
code = daemon.stop(timeout=120)
stopped = daemon.events("queue_recovered")
print(f"# stopped after routing {stopped[0].get('messages') if stopped else None} of "
      f"{len(after)}", flush=True)
tap.ok(code == 0, "a SIGTERM during the recovery ends the daemon cleanly",
       (code, daemon.stderr_lines[-10:]))
tap.ok({m["id"] for m in spool_list(ringmta, spool)} == set(after),
       "every queued message is still in the spool after it", len(after))
tap.done()
