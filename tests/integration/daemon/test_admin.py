"""The admin API and ringmta-ctl against a real daemon (issue 14).

Mail is deferred to a closed port (--route DOMAIN=127.0.0.1:CLOSED, retry in 1 h) so it stays
queued; every ringmta-ctl command runs against it through the control socket in the spool
(--spool DIR, no other setup). Suspensions survive a clean restart and a SIGKILL; a typo is
404 and creates nothing; a timed suspension ends by itself. The HTTP server: TCP needs the
bearer token except for /metrics and /health, slow clients dribbling bytes do not hold
/health, and 100 concurrent clients all get answers. Every action is logged with who asked.

usage: test_admin.py RINGMTA RINGMTA_CTL
"""
import concurrent.futures
import json
import os
import re
import smtplib
import socket
import subprocess
import sys
import tempfile
import threading
import time

from harness import Daemon, Tap, free_port, queued_id, spool_list, wait_until

ringmta, ctl = sys.argv[1], sys.argv[2]
tap = Tap()
closed = free_port()  # nothing listens there: every delivery attempt is deferred
work = tempfile.mkdtemp(prefix="ringmta-admin-")
token = "s3cret-token-for-the-admin-api"
token_file = os.path.join(work, "token")
with open(token_file, "w") as f:
    f.write(token + "\n")
args = ["--route", f"closed.test=127.0.0.1:{closed}", "--route",
        f"other.test=127.0.0.1:{closed}", "--retry-schedule", "1h",
        "--admin-token-file", token_file]
spool = os.path.join(work, "spool")


def run_ctl(*arguments, spool_dir=None):
    return subprocess.run([ctl, "--spool", spool_dir or spool, *arguments],
                          capture_output=True, text=True, timeout=60)


def ctl_json(*arguments):
    done = run_ctl("--json", *arguments)
    try:
        return done.returncode, json.loads(done.stdout)
    except ValueError:
        return done.returncode, done.stdout + done.stderr


def destination(name):
    code, listing = ctl_json("queue")
    if code != 0:
        return None
    return next((d for d in listing if d["destination"] == name), None)


message = b"From: a@sender.test\r\nSubject: held\r\n\r\nbody\r\n"
daemon = Daemon(ringmta, spool=spool, args=args).start()
ids = []
with smtplib.SMTP("127.0.0.1", daemon.port, timeout=30) as client:
    client.ehlo()
    for rcpt in ("x@closed.test", "y@closed.test", "z@other.test"):
        replies = [client.mail("a@sender.test"), client.rcpt(rcpt)]
        if all(code == 250 for code, _ in replies):
            code, text = client.data(message)
            ids.append(queued_id(text.decode()))
        else:
            ids.append(None)
            print(f"# {replies}")
            client.rset()
tap.ok(all(ids), "three messages accepted", ids)

# --- list and queue
# The first message to each destination is tried and fails; one arriving during the backoff
# that follows waits for it: deferred too, for the destination's reason.
deferred = wait_until(lambda: (lambda r: r[1] if r[0] == 0 and len(
    [j for j in r[1] if j["state"] == "deferred"]) == 3 and sum(
    j["attempts"] for j in r[1]) >= 2 else None)(ctl_json("list")), 30)
tap.ok(deferred, "list --json: the three jobs are deferred", ctl_json("list"))
tap.ok(deferred and sorted(j["id"] for j in deferred) == sorted(ids),
       "list shows the queue ids the 250 replies gave", (deferred, ids))
tap.ok(deferred and all(j["next_attempt_ms"] > time.time() * 1000 + 30 * 60_000 and
                        "Connection refused" in j["last_error"] for j in deferred),
       "each says why it is deferred and when it is tried next (in about an hour)", deferred)
code, listed = ctl_json("list", "--domain", "CLOSED.test")
tap.ok(code == 0 and len(listed) == 2 and {j["destination"] for j in listed} == {"closed.test"},
       "list --domain: only that destination's mail", listed)
tap.ok(deferred and all(j["sender"] == "a@sender.test" and j["size"] > 0 and
                        j["recipients"][0]["address"].split("@")[1] == j["destination"]
                        for j in deferred),
       "each names its sender, size and recipient addresses", deferred)
code, listed = ctl_json("list", "--sender", "nobody@else.test")
tap.ok(code == 0 and listed == [], "list --sender: filters by sender", listed)
code, shown = ctl_json("show", ids[2])
tap.ok(code == 0 and len(shown) == 1 and shown[0]["recipients"][0]["address"] == "z@other.test",
       "show ID --json: the message's envelope and state", shown)
text = run_ctl("show", ids[2])
tap.ok(text.returncode == 0 and "<z@other.test>" in text.stdout and "last reply" in text.stdout,
       "show ID (text)", text.stdout)
tap.ok(run_ctl("show", "00000000deadbeef").returncode == 3, "show of an unknown id: exit 3")
code, listed = ctl_json("list", "--older-than", "1h")
tap.ok(code == 0 and listed == [], "list --older-than 1h: nothing that old", listed)
code, listed = ctl_json("list", "--state", "active")
tap.ok(code == 0 and listed == [], "list --state active: nothing in flight", listed)
text = run_ctl("list")
tap.ok(text.returncode == 0 and text.stdout.splitlines()[0].split()[:3] ==
       ["ID", "SENDER", "RECIPIENTS"] and all(i in text.stdout for i in ids) and
       " 451 4.4.1 connect to" in text.stdout and "451 451" not in text.stdout,
       "list (text): a header and one aligned line per job", text.stdout)
row = destination("closed.test")
tap.ok(row and row["scheduled"] + row["ready"] == 2 and not row["suspended"] and
       "Connection refused" in row["last_error"],
       "queue --json: closed.test with 2 jobs and its last error", row)
text = run_ctl("queue")
tap.ok(text.returncode == 0 and "closed.test" in text.stdout and
       text.stdout.startswith("DESTINATION"), "queue (text)", text.stdout)

values = daemon.metrics()
tap.ok(values.get('ringmta_destination_queue_depth{destination="closed.test"}') == 2 and
       values.get('ringmta_destination_queue_depth{destination="other.test"}') == 1 and
       values.get("process_open_fds", 0) > 10 and
       values.get("process_resident_memory_bytes", 0) > 1e6 and
       [v for k, v in values.items() if k.startswith('ringmta_build_info{version="')] == [1],
       "/metrics: queue depth per destination, process metrics, build info",
       {k: v for k, v in values.items() if "destination" in k or "process" in k or "build" in k})

dashboard = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                         "../../../docs/grafana-dashboard.json")
with open(dashboard) as f:
    wanted = set(re.findall(r"\b(?:ringmta|process)_[a-z_]+", f.read()))
exported = {re.sub(r"(_bucket|_sum|_count)$", "", k.split("{")[0]) for k in values}
tap.ok(wanted and {re.sub(r"_bucket$", "", w) for w in wanted} <= exported,
       "every metric the Grafana dashboard graphs is exported",
       sorted({re.sub(r"_bucket$", "", w) for w in wanted} - exported))

# --- suspend: typos are 404, suspensions are durable and carry until/reason/who
code, body = ctl_json("suspend", "gmial.com")
tap.ok(code == 3 and destination("gmial.com") is None,
       "suspend of an unknown destination (a typo): exit 3, nothing created", body)
code, body = ctl_json("suspend", "new.test", "--force")
tap.ok(code == 0 and destination("new.test")["suspended"],
       "suspend --force: a destination with no mail yet", body)
code, body = ctl_json("resume", "new.test")
tap.ok(code == 0, "resume new.test", body)
code, body = ctl_json("suspend", "closed.test", "--duration", "1h", "--reason", "maintenance")
row = destination("closed.test")
tap.ok(code == 0 and row["suspended"] and row["suspend_reason"] == "maintenance" and
       abs(row["suspended_until_ms"] - (time.time() + 3600) * 1000) < 120_000,
       "suspend --duration 1h --reason: until about an hour from now, with the reason", row)
tap.ok(row and row["suspended_by"].startswith("unix user "), "and who asked", row)
with open(os.path.join(spool, "suspensions.json")) as f:
    stored = json.load(f)
tap.ok([s for s in stored["suspensions"] if s["destination"] == "closed.test"],
       "suspensions.json in the spool holds it", stored)
code, body = daemon.admin("POST", "/queue/closed.test/suspend?duration=soon")
tap.ok(code == 400 and "duration" in body, "?duration=soon: 400 naming the parameter", body)
actions = daemon.events("admin_action")
tap.ok([a for a in actions if a.get("path") == "/queue/closed.test/suspend" and
        a.get("by", "").startswith("unix user") and a.get("status") == 200 and
        "reason=maintenance" in a.get("query", "")],
       "the action is logged with who asked, the parameters and the outcome", actions[-3:])
code, listed = ctl_json("list", "--domain", "closed.test")
tap.ok(code == 0 and {j["state"] for j in listed} == {"suspended"},
       "list says the destination's mail is suspended", listed)

listing = spool_list(ringmta, spool)
closed_rcpts = [r for m in listing for r in m["recipients"] if r["address"].endswith("@closed.test")]
tap.ok(len(closed_rcpts) == 2 and all(r["suspended"] and "suspended: maintenance" in r["why"]
                                      for r in closed_rcpts) and
       any("1 attempts, next in" in r["why"] for r in closed_rcpts),
       "spool ls says why: attempts, next attempt, the suspension and its reason", listing)
text = subprocess.run([ringmta, "spool", "ls", "--spool", spool], capture_output=True, text=True,
                      timeout=60)
tap.ok("x@closed.test (deferred, 1 attempts, next in" in text.stdout and
       "suspended: maintenance)" in text.stdout, "spool ls (text) too", text.stdout)

# --- restarts: clean, then SIGKILL (a crash right after the action)
attempts_before = {j["id"]: j["attempts"] for j in ctl_json("list")[1]}
tap.ok(daemon.stop() == 0, "clean stop")
daemon = Daemon(ringmta, spool=spool, args=args).start()
row = wait_until(lambda: destination("closed.test"), 20)
tap.ok(row and row["suspended"] and row["suspend_reason"] == "maintenance",
       "after a restart closed.test is still suspended", row)
code, body = ctl_json("suspend", "other.test", "--reason", "crash test")
daemon.kill()  # SIGKILL right after the answer
daemon = Daemon(ringmta, spool=spool, args=args).start()
row = wait_until(lambda: destination("other.test"), 20)
tap.ok(code == 0 and row and row["suspended"],
       "a suspension acknowledged just before SIGKILL survives it", row)
code, listed = ctl_json("list", "--domain", "closed.test")
tap.ok(code == 0 and len(listed) == 2 and
       all(j["attempts"] == attempts_before[j["id"]] for j in listed),
       "suspended mail was not tried again after the restarts", (listed, attempts_before))

# --- resume, timed suspension, retry, bounce
code, body = ctl_json("resume", "other.test")
tap.ok(code == 0 and not destination("other.test")["suspended"], "resume other.test", body)
code, body = ctl_json("suspend", "other.test", "--duration", "2s")
tap.ok(code == 0 and destination("other.test")["suspended"], "suspend --duration 2s", body)
ended = wait_until(lambda: not destination("other.test")["suspended"], 20)
tap.ok(ended and daemon.events("suspension_ended"), "the timed suspension ends by itself",
       daemon.events("suspension_ended"))
with open(os.path.join(spool, "suspensions.json")) as f:
    stored = json.load(f)
tap.ok([s["destination"] for s in stored["suspensions"]] == ["closed.test"],
       "and leaves the table", stored)
code, body = ctl_json("resume", "nothing.test")
tap.ok(code == 3, "resume of an unknown destination: exit 3", body)
code, body = ctl_json("resume", "closed.test")
tap.ok(code == 0, "resume closed.test", body)
before_retry = sum(j["attempts"] for j in ctl_json("list", "--domain", "closed.test")[1])
code, body = ctl_json("retry", "--domain", "closed.test")
tap.ok(code == 0 and body["action"] == "retry", "retry --domain: tried now", body)
retried = wait_until(lambda: (lambda r: r if r[0] == 0 and len(r[1]) == 2 and sum(
    j["attempts"] for j in r[1]) > before_retry else None)(
    ctl_json("list", "--domain", "closed.test")), 20)
tap.ok(retried, "it was attempted again", ctl_json("list", "--domain", "closed.test"))
code, body = ctl_json("bounce", "--domain", "other.test", "--reason", "gone")
tap.ok(code == 0 and body["jobs"] == 1, "bounce --domain other.test", body)
gone = wait_until(lambda: ctl_json("list", "--domain", "other.test")[1] == [], 20)
tap.ok(gone, "its mail left the queue", ctl_json("list", "--domain", "other.test"))

# --- status, reload, errors
code, status = ctl_json("status")
tap.ok(code == 0 and status["shards"] == 2 and status["version"] and status["spool_bytes"] > 0
       and status["queue"]["scheduled"] + status["queue"]["ready"] >= 2,
       "status --json: version, shards, spool use, queue totals", status)
text = run_ctl("status")
tap.ok(text.returncode == 0 and text.stdout.startswith("ringmta ") and "2 shards" in text.stdout,
       "status (text)", text.stdout)
code, body = ctl_json("reload")
tap.ok(code == 0, "reload", body)
done = subprocess.run([ctl, "--socket", os.path.join(work, "nothing.sock"), "status"],
                      capture_output=True, text=True, timeout=30)
tap.ok(done.returncode == 4 and "cannot connect" in done.stderr,
       "no daemon on the socket: exit 4 with the reason", done.stderr)
done = subprocess.run([ctl, "explode"], capture_output=True, text=True, timeout=30)
tap.ok(done.returncode == 2, "unknown command: exit 2", done.stderr)

# --- access over TCP
code, body = daemon.admin("GET", "/queue", tcp=True)
tap.ok(code == 401, "TCP without the token: 401", body)
code, body = daemon.admin("GET", "/queue", tcp=True, headers=[f"Authorization: Bearer {token}"])
tap.ok(code == 200 and "closed.test" in body, "TCP with the bearer token: 200", body)
code, body = daemon.admin("GET", "/queue", tcp=True, headers=["Authorization: Bearer wrong"])
tap.ok(code == 401, "a wrong token: 401", body)
tap.ok(daemon.admin("GET", "/metrics")[0] == 200 and daemon.admin("GET", "/health")[0] == 200,
       "/metrics and /health stay open on TCP")
code, body = daemon.admin("GET", "/queue/nowhere.test")
tap.ok(code == 404, "GET /queue/UNKNOWN: 404", body)

# --- slow clients and many clients
stop_dribbling = threading.Event()
slow = []
for _ in range(8):
    s = socket.create_connection(("127.0.0.1", daemon.admin_port), timeout=10)
    s.sendall(b"GET /health HTTP/1.1\r\n")
    slow.append(s)


def dribble():
    while not stop_dribbling.wait(1):
        for s in slow:
            try:
                s.sendall(b"X")
            except OSError:
                pass


threading.Thread(target=dribble, daemon=True).start()
time.sleep(2)
answers = [daemon.admin("GET", "/health", timeout=10)[0] for _ in range(5)]
still_open = 0
for s in slow:
    try:
        s.sendall(b"Y")
        still_open += 1
    except OSError:
        pass
tap.ok(answers == [200] * 5 and still_open == 8,
       "8 clients dribbling a byte a second do not hold /health", (answers, still_open))
stop_dribbling.set()
for s in slow:
    s.close()


def one_client(n):
    if n % 2:
        return daemon.admin("GET", "/health", timeout=60)[0]
    return daemon.admin("GET", "/queue", timeout=60)[0]


with concurrent.futures.ThreadPoolExecutor(max_workers=100) as pool:
    results = list(pool.map(one_client, range(100)))
tap.ok(results == [200] * 100, "100 concurrent clients (TCP /health, socket /queue): all 200",
       sorted(set(results)))

tap.ok(daemon.stop() == 0, "clean exit")
tap.ok(not os.path.exists(os.path.join(spool, "admin.sock")), "the control socket is removed")

# --- without a token file TCP serves no API; a stale socket file is replaced
plain = Daemon(ringmta, spool=spool, args=args[:-2]).start()
code, body = plain.admin("GET", "/queue", tcp=True,
                         headers=[f"Authorization: Bearer {token}"])
tap.ok(code == 403 and "control socket" in body, "no token file: the API is not on TCP (403)",
       body)
plain.kill()
tap.ok(os.path.exists(os.path.join(spool, "admin.sock")), "SIGKILL leaves the socket file")
plain = Daemon(ringmta, spool=spool, args=args[:-2]).start()
tap.ok(run_ctl("status").returncode == 0, "the next start replaces the stale socket")
tap.ok(plain.stop() == 0, "clean exit")
subprocess.run(["rm", "-rf", work])
tap.done()
