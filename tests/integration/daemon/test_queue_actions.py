"""Per-message queue actions (issue 14): ringmta-ctl delete, hold, release, retry, bounce and
show --body against a real daemon, each acknowledged action followed by a SIGKILL and a
restart (held stays held, deleted stays gone, released is delivered), and the races with a
delivery in flight, made real by a ringmta-sink that stalls its reply to the end of data.

Mail is deferred to a closed port (--route closed.test=127.0.0.1:CLOSED, retry in 1 h);
later.test goes to a port where a sink is started only once mail is held there; stall.test
to a sink that answers 451 after 4 s, slow.test to one that answers 250 after 4 s.

usage: test_queue_actions.py RINGMTA RINGMTA_CTL RINGMTA_SINK
"""
import glob
import json
import os
import smtplib
import subprocess
import sys
import tempfile
import time

from harness import Daemon, Tap, free_port, queued_id, spool_list
from peers import Sink, wait_until

ringmta, ctl, sink_binary = sys.argv[1:4]
tap = Tap()
closed, later_port = free_port(), free_port()
stall_sink = Sink(sink_binary, "127.0.0.1", free_port(),
                  ["--reply-delay-ms", "4000", "--tempfail-rate", "1"])
slow_sink = Sink(sink_binary, "127.0.0.1", free_port(), ["--reply-delay-ms", "4000"])
work = tempfile.mkdtemp(prefix="ringmta-actions-")
spool = os.path.join(work, "spool")


def sink_port(sink):
    return int(sink.process.args[sink.process.args.index("--listen") + 1].rsplit(":", 1)[1])


args = ["--route", f"closed.test=127.0.0.1:{closed}", "--route", f"bulk.test=127.0.0.1:{closed}",
        "--route", f"later.test=127.0.0.1:{later_port}",
        "--route", f"stall.test=127.0.0.1:{sink_port(stall_sink)}",
        "--route", f"slow.test=127.0.0.1:{sink_port(slow_sink)}", "--retry-schedule", "1h",
        "--resolver", "127.0.0.1:9"]  # no DNS here: the DSN to sender.test stays queued


def run_ctl(*arguments):
    return subprocess.run([ctl, "--spool", spool, *arguments], capture_output=True, text=True,
                          timeout=60)


def ctl_json(*arguments):
    done = run_ctl("--json", *arguments)
    try:
        return done.returncode, json.loads(done.stdout)
    except ValueError:
        return done.returncode, done.stdout + done.stderr


def send(port, rcpt, body=b"Subject: test\r\n\r\nbody\r\n", sender="a@sender.test"):
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
        client.ehlo()
        client.mail(sender)
        client.rcpt(rcpt)
        code, text = client.data(body)
        return queued_id(text.decode()) if code == 250 else None


def jobs(message_id):
    code, listed = ctl_json("list")
    return [j for j in listed if j["id"] == message_id] if code == 0 else []


def state_of(message_id):
    found = jobs(message_id)
    return found[0]["state"] if found else None


def restart_after_kill(daemon):
    daemon.kill()  # SIGKILL: nothing is flushed, nothing is said goodbye
    return Daemon(ringmta, spool=spool, args=args).start()


def spool_ids():
    return {m["id"] for m in spool_list(ringmta, spool)}


daemon = Daemon(ringmta, spool=spool, args=args).start()
port = daemon.port
deferred_ids = {name: send(port, f"{name}@closed.test") for name in ("del", "bounce", "retry")}
dotted = b"Subject: dots\r\nX-Test: body\r\n\r\n.leading dot\r\nsecond line\r\n"
deferred_ids["dotted"] = send(port, "dotted@closed.test", dotted)
held = send(port, "held@later.test")
tap.ok(all(deferred_ids.values()) and held, "messages accepted", (deferred_ids, held))
tap.ok(wait_until(lambda: all(state_of(i) == "deferred"
                              for i in list(deferred_ids.values()) + [held]), 30),
       "they are deferred (closed ports)", ctl_json("list"))

# --- show --body: the whole message from the spool, dot-stuffing undone
text = run_ctl("show", deferred_ids["dotted"], "--body")
tap.ok(text.returncode == 0 and text.stdout.replace("\r\n", "\n").endswith(
    dotted.decode().replace("\r\n", "\n")) and "Received: " in text.stdout,
       "show ID --body: headers (our Received: first) and body as sent", text.stdout)
code, shown = ctl_json("show", deferred_ids["dotted"], "--body")
tap.ok(code == 0 and shown["message"].endswith(dotted.decode()), "show --body --json", shown)
tap.ok(run_ctl("show", "00000000deadbeef", "--body").returncode == 3,
       "show --body of an unknown id: exit 3")

# --- unknown ids: 404, exit 3, nothing created
for command in ("delete", "hold", "release", "retry", "bounce"):
    done = run_ctl(command, "00000000deadbeef")
    tap.ok(done.returncode == 3 and "no queued message" in done.stderr,
           f"{command} of an unknown id: exit 3 with a clear error", (done.returncode, done.stderr))
status, body = daemon.admin("POST", "/messages/00000000deadbeef/hold")
tap.ok(status == 404, "the API answers 404 for an unknown id", (status, body))
tap.ok(run_ctl("hold", "not-an-id").returncode == 1, "a malformed id is refused (exit 1)")
tap.ok(run_ctl("delete").returncode == 2, "delete with no selection: usage error (exit 2)")

# --- delete: no DSN; SIGKILL right after the answer; never resurrected
done = run_ctl("delete", deferred_ids["del"])
tap.ok(done.returncode == 0 and "deleted" in done.stdout, "delete ID", done.stdout + done.stderr)
daemon = restart_after_kill(daemon)
# Recovery marks its recipients deleted a slice per loop turn after the greeting: spool ls
# may see it queued a moment longer (a flaky failure once), the queue listing never.
tap.ok(state_of(deferred_ids["del"]) is None and
       wait_until(lambda: deferred_ids["del"] not in spool_ids(), 10),
       "after SIGKILL + restart the deleted message is gone (list and spool ls)",
       ctl_json("list"))
tap.ok(not [r for r in daemon.events("dsn_queued")], "no DSN for a delete")

# --- hold: never tried, survives SIGKILL; release: delivered (after a SIGKILL too)
done = run_ctl("hold", held)
tap.ok(done.returncode == 0, "hold ID", done.stdout + done.stderr)
code, listed = ctl_json("list", "--state", "held")
tap.ok(code == 0 and [j["id"] for j in listed] == [held], "list --state held", listed)
code, queue = ctl_json("queue")
row = next((d for d in queue if d["destination"] == "later.test"), {}) if code == 0 else {}
tap.ok(row.get("held") == 1, "queue shows the destination's held count", queue)
tap.ok("HELD" in run_ctl("queue").stdout, "queue (text) has a HELD column")
daemon = restart_after_kill(daemon)
# (Recovery routes the queue back through the ring after the greeting: wait for the listing.)
tap.ok(wait_until(lambda: state_of(held) == "held", 30),
       "after SIGKILL + restart the message is still held", ctl_json("list"))
listed = {m["id"]: m for m in spool_list(ringmta, spool)}
tap.ok(listed.get(held, {}).get("held") is True and
       listed.get(deferred_ids["retry"], {}).get("held") is False,
       "ringmta spool ls says which message is held", listed.get(held))
later_sink = Sink(sink_binary, "127.0.0.1", later_port)  # later.test answers from now on
probe = send(daemon.port, "probe@later.test")
tap.ok(wait_until(lambda: [e for e, _ in later_sink.messages() if e["rcpt"] == ["probe@later.test"]],
                  30), "new mail to the held message's destination is delivered")
tap.ok(not [e for e, _ in later_sink.messages() if e["rcpt"] == ["held@later.test"]] and
       state_of(held) == "held", "the held message was not tried meanwhile", later_sink.messages())
retried = run_ctl("retry", held)
tap.ok(retried.returncode == 0 and state_of(held) == "held", "retry leaves held mail held")
# The destination is suspended around the release, so only the journal can tell the restarted
# daemon that the message is no longer held.
tap.ok(run_ctl("suspend", "later.test").returncode == 0, "suspend later.test")
done = run_ctl("release", held)
tap.ok(done.returncode == 0, "release ID", done.stdout + done.stderr)
daemon = restart_after_kill(daemon)
tap.ok(wait_until(lambda: state_of(held) == "suspended", 30),
       "after release + SIGKILL + restart it is no longer held", jobs(held))
tap.ok(run_ctl("resume", "later.test").returncode == 0, "resume later.test")
tap.ok(wait_until(lambda: [e for e, _ in later_sink.messages() if e["rcpt"] == ["held@later.test"]],
                  30), "the released message is delivered (at once: its retry time is now)",
       later_sink.messages())

# --- retry ID: tried now (attempts count up), still deferred to the closed port
before = jobs(deferred_ids["retry"])
done = run_ctl("retry", deferred_ids["retry"])
tap.ok(done.returncode == 0, "retry ID", done.stdout + done.stderr)
after = wait_until(lambda: (lambda j: j if j and j[0]["attempts"] > before[0]["attempts"] and
                            j[0]["state"] == "deferred" else None)(jobs(deferred_ids["retry"])),
                   30)
tap.ok(before and after, "the retried message was attempted again", (before, after))

# --- bounce ID --reason: a DSN (RFC 3464) to the sender, with the reason; SIGKILL after it.
# The original's pages leave the page cache first: the DSN quotes its headers read from the
# disk through the ring (a message bounced after days in a large queue is rarely cached).
def resident_bytes(path):
    out = subprocess.run(["fincore", "--bytes", "--noheadings", "--raw", "-o", "RES", path],
                         capture_output=True, text=True).stdout.strip()
    return int(out) if out.isdigit() else -1


segments = glob.glob(os.path.join(spool, "shard-*", "segment-*.log"))
for path in segments:
    fd = os.open(path, os.O_RDONLY)
    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)  # clean pages: written and synced
    os.close(fd)
on_tmpfs = subprocess.run(["stat", "-f", "-c", "%T", spool], capture_output=True,
                          text=True).stdout.strip() == "tmpfs"  # its pages are the storage
tap.ok(on_tmpfs or (segments and all(resident_bytes(p) == 0 for p in segments)),
       "the spool's segments are out of the page cache", [resident_bytes(p) for p in segments])
done = run_ctl("bounce", deferred_ids["bounce"], "--reason", "spam run 42")
tap.ok(done.returncode == 0, "bounce ID --reason", done.stdout + done.stderr)


def dsn_bodies():
    code, listed = ctl_json("list")
    bodies = []
    for j in listed if code == 0 else []:
        if j["sender"] == "" and j["recipients"][0]["address"] == "a@sender.test":
            shown = run_ctl("show", j["id"], "--body").stdout
            if "bounce@closed.test" in shown:
                bodies.append(shown)
    return bodies


# The answer means the action and its reason are journaled (a reason record before the action
# record); the DSN is built and made durable a moment later. The SIGKILL comes at once: when it
# beats the DSN, the restarted daemon carries out the recovered bounce, and its DSN must still
# give the operator's reason, read back from the journal.
# A DSN made durable just before the kill, with the bounced marks not yet, is followed by a
# second one after the restart (at-least-once): every DSN of it must give the reason.
daemon = restart_after_kill(daemon)
tap.ok(wait_until(lambda: deferred_ids["bounce"] not in spool_ids(), 30),
       "the bounced message left the queue (final: no DSN of it is still to come)",
       ctl_json("list"))
bodies = wait_until(dsn_bodies, 30) or []
body = bodies[0] if bodies else None
tap.ok(body and "multipart/report; report-type=delivery-status" in body and
       "Action: failed" in body and "spam run 42" in body,
       "the DSN to the sender is a delivery-status report naming the reason", body)
tap.ok(all("spam run 42" in b for b in bodies),
       "so does every DSN of it (one built after the restart reads the journaled reason)",
       bodies)
print(f"# {len(bodies)} DSN(s); built after the restart: {len(daemon.events('dsn_queued'))}")
quoted = body.split("Content-Type: message/rfc822", 1)[-1] if body else ""
tap.ok("Subject: test" in quoted and "\nbody" in quoted.replace("\r\n", "\n"),
       "it quotes the original (message/rfc822), read back from the disk", quoted[:300])

# --- races with a delivery in flight (the sink holds its end-of-data reply for 4 s)
race_hold = send(daemon.port, "race@stall.test")
tap.ok(wait_until(lambda: state_of(race_hold) == "active", 30), "hold race: job in flight")
done = run_ctl("hold", race_hold)
tap.ok(done.returncode == 0, "hold of a job in flight is acknowledged at once")
tap.ok(wait_until(lambda: (lambda j: j and j[0]["state"] == "held" and j[0]["attempts"] == 1)(
    jobs(race_hold)), 30), "the transaction finished (451 recorded), then the job is held",
       jobs(race_hold))
deferred_records = [r for r in daemon.events("deferred") if r.get("id") == race_hold]
tap.ok(len(deferred_records) == 1, "its outcome was recorded once (deferred)", deferred_records)

race_delete = send(daemon.port, "race@slow.test")
race_bounce = send(daemon.port, "race2@slow.test")
tap.ok(wait_until(lambda: state_of(race_delete) == "active" and state_of(race_bounce) == "active",
                  30), "delete/bounce race: jobs in flight")
tap.ok(run_ctl("delete", race_delete).returncode == 0 and
       run_ctl("bounce", race_bounce).returncode == 0, "delete and bounce acknowledged in flight")
tap.ok(wait_until(lambda: {r.get("id") for r in daemon.events("delivered")} >=
                  {race_delete, race_bounce}, 30),
       "the transactions finished: 250, recorded delivered")
tap.ok(not [r for r in daemon.events("bounced") + daemon.events("deleted")
            if r.get("id") in (race_delete, race_bounce)],
       "never both delivered and bounced or deleted", daemon.events("bounced"))
tap.ok(state_of(race_delete) is None and state_of(race_bounce) is None,
       "both left the queue")
daemon = restart_after_kill(daemon)
# Recovery routes the queue back through the ring after the greeting: wait for it to list the
# held message (checked at once, it was missing once: session 11's CI).
tap.ok(wait_until(lambda: state_of(race_hold) == "held", 30) and state_of(race_delete) is None,
       "after SIGKILL + restart: held stays held, delivered stays delivered", ctl_json("list"))

# --- bulk: delete --domain, delete --all-deferred
bulk = [send(daemon.port, f"b{i}@bulk.test") for i in range(3)]
tap.ok(wait_until(lambda: all(state_of(i) == "deferred" for i in bulk), 30), "bulk mail deferred")
code, answer = ctl_json("delete", "--domain", "bulk.test")
tap.ok(code == 0 and sorted(answer["messages"]) == sorted(bulk), "delete --domain", answer)
tap.ok(all(state_of(i) is None for i in bulk), "every message queued there is gone")
remaining = {j["id"] for j in ctl_json("list")[1] if j["state"] == "deferred"}
done = run_ctl("delete", "--all-deferred")
tap.ok(done.returncode == 0 and remaining and
       not {j["id"] for j in ctl_json("list")[1] if j["state"] == "deferred"},
       "delete --all-deferred", done.stdout + done.stderr)
tap.ok(state_of(race_hold) == "held", "held mail is not deferred mail: kept")

# --- every action logged with who asked
records = daemon.events("operator")
tap.ok(records and all(r.get("by", "").startswith("unix") for r in records if "id" in r) and
       any(r.get("action") == "delete" for r in records),
       "every action is logged (operator record) with who asked", records[-3:])

daemon.stop()
tap.done()
