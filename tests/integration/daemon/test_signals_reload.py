#!/usr/bin/env python3
"""Signals and reload (issue 9, bug 3 and the reload an operator expects).

SIGHUP, SIGUSR1 and SIGUSR2 ended the daemon with no log line. Now every signal leaves a
record and only SIGTERM/SIGINT/SIGQUIT stop it; SIGHUP (and POST /reload) reloads the
configuration: a relay policy change holds for sessions that start afterwards while a
session in progress keeps the policy it started with; a bad file is rejected with a record
naming file, line and key, and the running configuration stays; settings that need a restart
are reported. Under load, repeated reloads drop no session and lose no message.
usage: test_signals_reload.py RINGMTA"""
import json
import os
import signal
import sys
import tempfile
import threading
import time

from harness import (Conversation, Daemon, Tap, dot_stuff, queued_id, test_message,
                     verify_spool)

tap = Tap()
binary = sys.argv[1]
work = tempfile.mkdtemp(prefix="ringmta-reload-")
config = os.path.join(work, "ringmta.toml")


def write_config(text):
    with open(config + ".new", "w") as f:
        f.write(text)
    os.replace(config + ".new", config)


def policy(domains, extra=""):
    quoted = ", ".join(f'"{d}"' for d in domains)
    return (f'[server]\nmynetworks = ["10.9.9.0/24"]\n[relay]\nrelay_domains = [{quoted}]\n'
            f"{extra}")


def wait_records(daemon, event, count, timeout=20):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        records = daemon.events(event)
        if len(records) >= count:
            return records
        time.sleep(0.05)
    return daemon.events(event)


def session():
    c = Conversation(daemon.port)
    c.reply()
    c.command("EHLO client.test")
    c.command("MAIL FROM:<a@client.test>")
    return c


write_config(policy(["a.test"]))
daemon = Daemon(binary, args=["--config", config]).start()

# ---- every signal leaves a record; only the stop signals stop
names = ["HUP", "USR1", "USR2", "PIPE", "ALRM", "WINCH", "TSTP", "TTIN", "TTOU", "CHLD", "URG",
         "VTALRM", "PROF", "IO", "PWR", "XFSZ"]
for n, name in enumerate(names, start=1):
    daemon.process.send_signal(getattr(signal, "SIG" + name))
    records = wait_records(daemon, "signal", n)
    tap.ok(len(records) == n and records[-1]["signal"] in (name, {"IO": "POLL"}.get(name)),
           f"SIG{name} leaves a record (action {records[-1].get('action') if records else '?'})",
           records[-1:])
tap.ok(daemon.process.poll() is None, "the daemon survived every one of them")
daemon.process.send_signal(signal.SIGRTMIN + 2)
tap.ok(wait_records(daemon, "signal", len(names) + 1)[-1]["signal"] == "RTMIN+2",
       "a real-time signal too")
tap.ok(daemon.process.poll() is None and session().command("RCPT TO:<x@a.test>")[0] == 250,
       "and still takes mail")

# ---- reload: a relay policy change for new sessions only
old_session = session()
tap.ok(old_session.command("RCPT TO:<x@b.test>")[0] == 554, "b.test is not ours yet")
write_config(policy(["a.test", "b.test"]))
reloads = len(daemon.events("reloaded"))
daemon.process.send_signal(signal.SIGHUP)
records = wait_records(daemon, "reloaded", reloads + 1)
tap.ok(len(records) == reloads + 1 and "relay.relay_domains" in records[-1]["changed"],
       "SIGHUP reloads and names what changed", records[-1:])
tap.ok(session().command("RCPT TO:<x@b.test>")[0] == 250, "a new session relays to b.test")
tap.ok(old_session.command("RCPT TO:<y@b.test>")[0] == 554,
       "the session that started before the reload keeps its policy")
tap.ok(old_session.command("RCPT TO:<y@a.test>")[0] == 250, "and keeps working")
old_session.close()

# ---- a bad configuration is rejected, the running one stays
for text, where in [(policy(["a.test"], '[queue]\nretry_schedule = ["0"]\n'),
                     f"{config}:6: queue.retry_schedule"),
                    ("[relay\nrelay_domains = []\n", f"{config}:"),
                    (policy(["a.test"], "[relay.nowhere]\nx = 1\n"), f"{config}:5: unknown")]:
    write_config(text)
    rejected = len(daemon.events("reload_rejected"))
    daemon.process.send_signal(signal.SIGHUP)
    records = wait_records(daemon, "reload_rejected", rejected + 1)
    tap.ok(len(records) == rejected + 1 and records[-1]["error"].startswith(where),
           f"a bad file is rejected with a record naming {where}", records[-1:])
    tap.ok(session().command("RCPT TO:<x@b.test>")[0] == 250,
           "the last good configuration stays in effect")

# ---- the admin API, and what needs a restart
write_config(policy(["a.test"], '[spool]\nsegment_size = "2M"\n'))
status, body = daemon.admin("POST", "/reload")
answer = json.loads(body)
tap.ok(status == 200 and answer["status"] == "reloaded" and
       "relay.relay_domains" in answer["changed"], "POST /reload applies it", body)
tap.ok(answer["restart_needed"] == ["spool.segment_size"], "and reports what needs a restart",
       body)
tap.ok(any("spool.segment_size" in r["keys"]
           for r in wait_records(daemon, "reload_restart_needed", 1)), "in the log too")
tap.ok(session().command("RCPT TO:<x@b.test>")[0] == 554, "b.test is refused again")
write_config("[queue]\nlifetime = \"0s\"\n")
status, body = daemon.admin("POST", "/reload")
tap.ok(status == 400 and json.loads(body)["status"] == "rejected" and
       "queue.lifetime" in json.loads(body)["error"], "a bad file through the API: 400", body)
tap.ok(daemon.admin("GET", "/reload")[0] == 405, "GET /reload: 405")

# ---- reload under load: no session dropped, no message lost
write_config(policy(["example.com"]))
reloads = len(daemon.events("reloaded"))
daemon.process.send_signal(signal.SIGHUP)
wait_records(daemon, "reloaded", reloads + 1)
run = f"reload{os.getpid()}"
acked, failures, lock, stop = {}, [], threading.Lock(), threading.Event()
counter = iter(range(10**9))


def load():
    while not stop.is_set():
        try:
            c = Conversation(daemon.port, timeout=30)
            if c.reply()[0] != 220 or c.command("EHLO load.test")[0] != 250:
                raise RuntimeError("greeting or EHLO refused")
            for _ in range(3):
                with lock:
                    n = next(counter)
                c.send(f"MAIL FROM:<load@client.test>\r\nRCPT TO:<n{n}@example.com>\r\nDATA\r\n")
                codes = [c.reply()[0] for _ in range(3)]
                if codes != [250, 250, 354]:
                    raise RuntimeError(f"message {n}: {codes}")
                c.send(dot_stuff(test_message(run, n)) + b".\r\n")
                code, text = c.reply()
                if code != 250:
                    raise RuntimeError(f"message {n}: {code} {text}")
                with lock:
                    acked[n] = queued_id(text)
            if c.command("QUIT")[0] != 221:
                raise RuntimeError("QUIT")
            c.close()
        except Exception as problem:  # noqa: BLE001 - any failure is a dropped session
            with lock:
                failures.append(repr(problem))
            return


threads = [threading.Thread(target=load, daemon=True) for _ in range(6)]
for t in threads:
    t.start()
reloads_before = len(daemon.events("reloaded"))
for i in range(12):  # bounded: 12 reloads, ~0.3 s apart, alternating signal and API
    time.sleep(0.3)
    write_config(policy(["example.com"], f"[limits]\nmax_recipients = {100 + i}\n"))
    if i % 2:
        daemon.process.send_signal(signal.SIGHUP)
    else:
        daemon.admin("POST", "/reload")
time.sleep(0.5)
stop.set()
for t in threads:
    t.join(60)
applied = len(wait_records(daemon, "reloaded", reloads_before + 12)) - reloads_before
tap.ok(applied >= 12, f"12 reloads applied under load ({applied})")
tap.ok(not failures, f"no session failed during the reloads ({len(acked)} messages)", failures)
tap.ok(len(acked) > 50, f"the load reached the daemon ({len(acked)} acknowledged)")
tap.ok(daemon.stop() == 0, "clean exit")
missing, corrupt, _ = verify_spool(binary, daemon.spool, run, acked)
tap.ok(not missing and not corrupt, "every acknowledged message is in the spool, intact",
       (missing[:10], corrupt[:10]))
tap.done()
