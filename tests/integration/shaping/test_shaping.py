#!/usr/bin/env python3
"""Per-destination shaping ([[shaping]]) observed at real receivers: NSD serves zones whose MX
hosts are ringmta-sink instances on 127.0.0.x, each sink saving every message with the
connection it came on, the connections open at that moment, the EHLO name and the arrival
time. Several destinations are shaped differently and delivered at once: a domain (2
connections, 3 messages each, its own EHLO name), a .suffix (1 connection, 4 messages), an MX
site pattern (*.site.test: 2 connections, 4 messages/s), an unshaped domain (the global limit,
8), and a domain whose TLS policy is `required` against a sink without STARTTLS (nothing
sent, deferred 4.7.x). Start-up errors name file:line:key.
Reply rules ([[reply_rule]], RE2): a scripted server answers y.test's DATA with Yahoo's
"421 4.7.0 [TSS04]": y.test is suspended for an hour (one attempt, though its retry schedule
says 1 s) while d.test keeps delivering; a 452 "over quota" for w.test bounces at once.
SIGHUP reloads [[shaping]] (a new EHLO name on the next connections), and a restart keeps
y.test's jobs waiting for the end of the suspension; after a SIGKILL and a restart (the
suspension's journal record, issue 16) mail ARRIVING for y.test waits for its end too; an
operator's resume ends the suspension at once, and a restart after it does not bring it back.
usage: test_shaping.py RINGMTA RINGMTA_SINK DNS_SERVER_SCRIPT SCRIPTED_SINK"""
import collections
import json
import os
import shutil
import signal
import smtplib
import subprocess
import sys
import tempfile
import time

from harness import Daemon, Tap, free_port
from peers import DnsServer, Sink, wait_until

tap = Tap()
ringmta, sink_binary, dns_script, scripted_script = sys.argv[1:5]
if not shutil.which("nsd"):
    tap.skip_all("nsd is not installed")

port = free_port("127.0.0.21")
dns = DnsServer(dns_script, {
    "a.test": ["@ MX 10 mx", "mx A 127.0.0.21"],
    "b.sub.test": ["@ MX 10 mx", "mx A 127.0.0.22"],
    "g1.test": ["@ MX 10 mx1.site.test.", "@ MX 20 mx2.site.test."],
    "site.test": ["mx1 A 127.0.0.23", "mx2 A 127.0.0.23"],
    "d.test": ["@ MX 10 mx", "mx A 127.0.0.24"],
    "r.test": ["@ MX 10 mx", "mx A 127.0.0.25"],
    "y.test": ["@ MX 10 mx", "mx A 127.0.0.26"],
    "w.test": ["@ MX 10 mx", "mx A 127.0.0.26"],
})
slow = ["--reply-delay-ms", "150"]  # deliveries take a while: queues build, limits bind
sinks = {name: Sink(sink_binary, f"127.0.0.{21 + i}", port, slow)
         for i, name in enumerate(["a.test", "b.sub.test", "g1.test", "d.test", "r.test"])}

work = tempfile.mkdtemp(prefix="ringmta-shaping-")
scripted_dir = os.path.join(work, "scripted")
os.mkdir(scripted_dir)
scripted = subprocess.Popen(
    [sys.executable, scripted_script, "--listen", "127.0.0.26", "--port", str(port),
     "--save-dir", scripted_dir, "--stop-on-stdin-eof",
     "--data-reply", "421 4.7.0 [TSS04] Messages from 127.0.0.1 temporarily deferred due to "
     "unexpected volume or user complaints",
     "--reject-rcpt", "quota=452 4.2.2 The email account that you tried to reach is over quota"],
    stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
tap.ok(scripted.stdout.readline().startswith("READY"), "the scripted server for y.test runs")


def scripted_stats():
    with open(os.path.join(scripted_dir, "stats.json")) as f:
        return json.load(f)


config = os.path.join(work, "ringmta.toml")
with open(config, "w") as f:
    f.write("""[queue]
max_connections_per_destination = 8
max_messages_per_connection = 100

[[shaping]]
domain = "a.test"
max_connections = 2
max_messages_per_connection = 3
ehlo_name = "a-out.example"

[[shaping]]
domain = ".sub.test"
max_connections = 1
max_messages_per_connection = 4

[[shaping]]
mx = "*.site.test"
max_connections = 2
max_messages_per_second = 4
ehlo_name = "site-out.example"

[[shaping]]
domain = "r.test"
tls_policy = "required"
connect_timeout = "3s"
reply_timeout = "20s"

[[shaping]]
domain = "y.test"
retry_schedule = ["1s"]

[[reply_rule]]
domain = "y.test"
pattern = '^421 4\\.7\\.0 \\[TS(S0[1-4]|0[1-3])\\]'
action = "suspend"
duration = "1h"

[[reply_rule]]
pattern = '^452 4\\.2\\.2 .*over quota'
action = "bounce"
""")

# --- start-up errors: file:line:key, exit status 2
bad = os.path.join(work, "bad.toml")
with open(bad, "w") as f:
    f.write('[[shaping]]\ndomain = "x.test"\n\nmax_connections = "many"\n')
run = subprocess.run([ringmta, "--config", bad, "--allow-root"], capture_output=True, text=True,
                     timeout=30)
tap.ok(run.returncode == 2 and f"{bad}:4: shaping.max_connections:" in run.stderr,
       "a bad [[shaping]] value stops start-up naming file:line:key (exit 2)", run.stderr[-300:])
run = subprocess.run([ringmta, "--shaping", "x.test max_connections=two", "--allow-root"],
                     capture_output=True, text=True, timeout=30)
tap.ok(run.returncode == 2 and "--shaping" in run.stderr,
       "a bad --shaping value stops start-up (exit 2)", run.stderr[-300:])

daemon = Daemon(ringmta, args=["--config", config, "--resolver", dns.address,
                               "--delivery-port", str(port), "--retry-schedule", "1h",
                               "--timeout-connect", "2s"]).start()
counts = {"a.test": 24, "b.sub.test": 12, "g1.test": 12, "d.test": 24, "r.test": 2}


def operate(destination, action):
    """Through the control socket; force=1: a destination with no mail yet may be suspended."""
    status, body = daemon.admin("POST", f"/queue/{destination}/{action}?force=1", timeout=10)
    assert status == 200, (status, body)
    return json.loads(body)


# Queue everything first (suspended), then let it go at once: the limits, not the injection
# pace, decide how the deliveries spread.
for domain in counts:
    operate(domain, "suspend")
with smtplib.SMTP("127.0.0.1", daemon.port, timeout=30) as client:
    for n in range(max(counts.values())):
        for domain, count in counts.items():
            if n < count:
                client.sendmail("s@sender.test", [f"u{n}@{domain}"],
                                f"Subject: {domain} {n}\r\n\r\nbody {n}\r\n".encode())

for domain in counts:
    operate(domain, "resume")
expected = sum(c for d, c in counts.items() if d != "r.test")
delivered = wait_until(lambda: sum(len(s.messages()) for s in sinks.values()) >= expected, 120)
tap.ok(delivered, "every message for the reachable destinations arrived",
       {d: len(s.messages()) for d, s in sinks.items()})


def observed(domain):
    messages = [envelope for envelope, _ in sinks[domain].messages()]
    per_connection = collections.Counter(e["connection"] for e in messages)
    concurrent = max((int(e["concurrent"]) for e in messages), default=0)
    times = sorted(int(e["time-ms"]) for e in messages)
    helos = {e["helo"] for e in messages}
    return messages, per_connection, concurrent, times, helos


msgs, per_connection, concurrent, _, helos = observed("a.test")
tap.ok(len(msgs) == 24 and concurrent == 2,
       "a.test: at most 2 connections at once, and the limit was reached", concurrent)
tap.ok(max(per_connection.values()) == 3 and len(per_connection) >= 8,
       "a.test: at most 3 messages per connection", dict(per_connection))
tap.ok(helos == {"a-out.example"}, "a.test: EHLO with its own name", helos)

msgs, per_connection, concurrent, _, helos = observed("b.sub.test")
tap.ok(len(msgs) == 12 and concurrent == 1 and max(per_connection.values()) == 4,
       ".sub.test covers b.sub.test: 1 connection, 4 messages each",
       (concurrent, dict(per_connection)))
tap.ok(helos == {"mx.test.example"}, "b.sub.test: the global EHLO name", helos)

msgs, per_connection, concurrent, times, helos = observed("g1.test")
tap.ok(len(msgs) == 12 and concurrent <= 2, "g1.test (MX *.site.test): at most 2 connections",
       concurrent)
# 4 per second with a burst of at most 4: the 12th comes >= 2 s after the first.
span = times[-1] - times[0] if times else 0
tap.ok(span >= 1500, "g1.test: the site's rate of 4 messages/s holds (2 connections alone would "
       "take ~0.9 s)", f"{span} ms for 12")
# The first connection learns the MX hosts; the site's EHLO name applies from the next one.
tap.ok("site-out.example" in helos, "g1.test: later connections use the site's EHLO name", helos)

msgs, per_connection, concurrent, _, helos = observed("d.test")
tap.ok(len(msgs) == 24 and 2 < concurrent <= 8,
       "d.test (unshaped): the global limit of 8 connections, not another's", concurrent)

deferred = wait_until(lambda: [e for e in daemon.events("deferred") if e["to"].endswith("@r.test")],
                      30)
tap.ok(not sinks["r.test"].messages() and deferred and
       any("4.7" in e.get("reply", "") for e in deferred),
       "r.test (tls_policy required, no STARTTLS): nothing sent, deferred 4.7.x",
       deferred[:1])

# --- reply rules: a scripted 421 suspends y.test only; 452 over quota bounces
with smtplib.SMTP("127.0.0.1", daemon.port, timeout=30) as client:
    client.sendmail("s@sender.test", ["u1@y.test"], b"Subject: y\r\n\r\nbody\r\n")
    client.sendmail("s@sender.test", ["quota1@w.test"], b"Subject: w\r\n\r\nbody\r\n")
fired = wait_until(lambda: [e for e in daemon.events("reply_rule") if e["destination"] == "y.test"],
                   30)
tap.ok(fired and fired[0]["action"] == "suspend" and "4.7.0 [TSS04]" in fired[0]["reply"],
       "the 421 [TSS04] reply fires y.test's suspend rule", fired[:1])
bounced = wait_until(lambda: [e for e in daemon.events("bounced") if e["to"] == "quota1@w.test"], 30)
tap.ok(bounced and "reply rule" in bounced[0].get("reply", ""),
       "452 over quota bounces at once by reply rule (no retries)", bounced[:1])
before = len(sinks["d.test"].messages())
with smtplib.SMTP("127.0.0.1", daemon.port, timeout=30) as client:
    client.sendmail("s@sender.test", ["u2@y.test"], b"Subject: y2\r\n\r\nbody\r\n")
    for n in range(3):
        client.sendmail("s@sender.test", [f"late{n}@d.test"], b"Subject: d\r\n\r\nbody\r\n")
tap.ok(wait_until(lambda: len(sinks["d.test"].messages()) == before + 3, 30),
       "d.test keeps delivering while y.test is suspended")
# y.test's own schedule is 1 s: without the suspension it would have been tried again by now.
mail_commands = scripted_stats()["mail"]
try:
    status, body = daemon.admin("GET", "/queue")
except (IndexError, OSError):
    status, body = 0, "[]"
if status != 200:
    print(f"# admin GET /queue: {status}; daemon exit {daemon.process.poll()}")
    print("# " + "\n# ".join(l[:300] for l in daemon.stdout_lines[-12:]), flush=True)
    print("# " + "\n# ".join(daemon.stderr_lines[-15:]), flush=True)
y = [d for d in json.loads(body) if d["destination"] == "y.test"]
tap.ok(mail_commands == 2 and y and y[0]["scheduled"] + y[0]["ready"] == 2 and
       y[0]["in_flight"] == 0,
       "y.test: one MAIL for u1 and one for quota1@w.test; u1 and u2 wait for the suspension",
       (mail_commands, y[:1]))

# --- SIGHUP reloads [[shaping]]: a.test's new EHLO name on the connections opened after it
with open(config) as f:
    text = f.read()
with open(config, "w") as f:
    f.write(text.replace('ehlo_name = "a-out.example"', 'ehlo_name = "a-reloaded.example"'))
reloads = len(daemon.events("reloaded"))
daemon.process.send_signal(signal.SIGHUP)
reloaded = wait_until(lambda: daemon.events("reloaded")[reloads:], 20)
tap.ok(reloaded and "shaping" in reloaded[0].get("changed", []),
       "SIGHUP reloads [[shaping]] live", reloaded[:1])
with smtplib.SMTP("127.0.0.1", daemon.port, timeout=30) as client:
    client.sendmail("s@sender.test", ["again@a.test"], b"Subject: again\r\n\r\nbody\r\n")
again = wait_until(lambda: [e for e, _ in sinks["a.test"].messages() if e["rcpt"] == ["again@a.test"]],
                   30)
tap.ok(again and again[0]["helo"] == "a-reloaded.example",
       "after the reload a.test's connections use the new EHLO name", again[:1])

# --- a restart keeps the suspension: y.test's jobs keep their retry time an hour away
daemon.stop()
restarted = Daemon(ringmta, spool=daemon.spool,
                   args=["--config", config, "--resolver", dns.address, "--delivery-port",
                         str(port), "--retry-schedule", "1h", "--timeout-connect", "2s"]).start()


def y_jobs():
    status, body = restarted.admin("GET", "/queue")
    return [d for d in json.loads(body) if d["destination"] == "y.test"] if status == 200 else []


listed = wait_until(lambda: [d for d in y_jobs() if d["scheduled"] == 2], 20)
now_ms = time.time() * 1000
tap.ok(listed and listed[0]["next_attempt_ms"] > now_ms + 30 * 60 * 1000,
       "after a restart y.test's two jobs still wait for the suspension's end", listed[:1])
# y.test's own retry schedule is 1 s: three seconds without a MAIL show nothing went early.
time.sleep(3)
tap.ok(scripted_stats()["mail"] == mail_commands, "and no attempt was made meanwhile",
       scripted_stats()["mail"])

# --- SIGKILL, restart: the suspension is a journal record (issue 16), so NEW mail for y.test
# waits for its end as well (before, it went at once and drew the 421 again).
restarted.kill()
restarted = Daemon(ringmta, spool=daemon.spool,
                   args=["--config", config, "--resolver", dns.address, "--delivery-port",
                         str(port), "--retry-schedule", "1h", "--timeout-connect", "2s"]).start()
recovered = wait_until(lambda: [e for e in restarted.events("reply_rule_recovered")
                                if e["destination"] == "y.test"], 20)
tap.ok(recovered and recovered[0]["action"] == "suspend" and
       recovered[0]["until_ms"] > now_ms + 30 * 60 * 1000,
       "after a SIGKILL the restart recovers y.test's suspension from the journal", recovered[:1])
with smtplib.SMTP("127.0.0.1", restarted.port, timeout=30) as client:
    client.sendmail("s@sender.test", ["u3@y.test"], b"Subject: y3\r\n\r\nbody\r\n")
listed = wait_until(lambda: [d for d in y_jobs() if d["scheduled"] == 3], 20)
tap.ok(listed and listed[0]["next_attempt_ms"] > now_ms + 30 * 60 * 1000,
       "mail arriving after the restart waits for the suspension's end too", listed[:1])
time.sleep(3)
tap.ok(scripted_stats()["mail"] == mail_commands, "and no attempt was made meanwhile",
       scripted_stats()["mail"])

# --- ringmta-ctl resume ends the reply rule's suspension (issue 16): y.test's mail goes at once
# (and draws the 421 again, a new suspension); the end is journaled: resumed once more with
# nothing queued, a SIGKILL and a restart do not bring the suspension back.
fired_before = len([e for e in restarted.events("reply_rule") if e["destination"] == "y.test"])
status, body = restarted.admin("POST", "/queue/y.test/resume")


def y_lifts():
    return [e for e in restarted.events("reply_rule_lifted") if e["destination"] == "y.test"]


# Each shard logs what it lifted: the suspension where the queue is, the journal record in the
# store of the shard that fired it (after a restart not always the same shard).
wait_until(lambda: any(e["suspend"] for e in y_lifts()), 10)
lifted = y_lifts()
tap.ok(status == 200 and any(e["suspend"] for e in lifted) and all(e["journaled"] for e in lifted),
       "resume ends the recovered suspension of y.test (reply_rule_lifted)", (status, body, lifted))
tap.ok(wait_until(lambda: scripted_stats()["mail"] > mail_commands, 20),
       "after the resume y.test's mail is tried at once", scripted_stats()["mail"])
tap.ok(wait_until(lambda: len([e for e in restarted.events("reply_rule")
                               if e["destination"] == "y.test"]) > fired_before, 20),
       "and its 421 [TSS04] suspends y.test again")
status, body = restarted.admin("POST", "/queue/y.test/bounce")
tap.ok(status == 200, "the operator bounces y.test's queued mail", body)
lifts = len(restarted.events("reply_rule_lifted"))
status, body = restarted.admin("POST", "/queue/y.test/resume")
tap.ok(status == 200 and wait_until(lambda: restarted.events("reply_rule_lifted")[lifts:], 10),
       "and resumes y.test again (nothing queued: the suspension ends all the same)", body)
time.sleep(1)  # the lift record's journal batch (synced with the next flight)
restarted.kill()
restarted = Daemon(ringmta, spool=daemon.spool,
                   args=["--config", config, "--resolver", dns.address, "--delivery-port",
                         str(port), "--retry-schedule", "1h", "--timeout-connect", "2s"]).start()
mail_commands = scripted_stats()["mail"]
with smtplib.SMTP("127.0.0.1", restarted.port, timeout=30) as client:
    client.sendmail("s@sender.test", ["u4@y.test"], b"Subject: y4\r\n\r\nbody\r\n")
tap.ok(wait_until(lambda: scripted_stats()["mail"] > mail_commands, 20) and
       not [e for e in restarted.events("reply_rule_recovered") if e["destination"] == "y.test"],
       "after a SIGKILL and a restart the lifted suspension stays lifted: new mail goes at once",
       (scripted_stats()["mail"], restarted.events("reply_rule_recovered")))
restarted.stop()
scripted.stdin.close()
scripted.wait(30)
tap.done()
