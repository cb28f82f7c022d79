#!/usr/bin/env python3
"""Log records and attempt counts across a restart (issue 9, bug 6). Mail to a closed port is
deferred again and again; after a restart the log held several `deferred` records per job at
the same moment, with an attempt count that did not advance. Every recipient must get exactly
one record per attempt, numbered 1, 2, 3, … across the restart, and the spool's attempt
count must match the last record. (Issue 15: while the destination keeps refusing, only its
probe's job is attempted again; the others wait on the destination without records, across the
restart too. Since s6-dnsstorm that holds from the first refusal: a refused connection tried no
job, so it counts one attempt, the probe's, and a job that never was the probe has no record
and 0 attempts in the spool.)
usage: test_restart_records.py RINGMTA"""
import collections
import sys
import time

from harness import Conversation, Daemon, Tap, free_port, spool_list

tap = Tap()
binary = sys.argv[1]
closed = free_port()  # nothing listens there: every connect is refused at once
args = ["--route", f"example.com=127.0.0.1:{closed}", "--retry-schedule", "2s"]


def send(daemon, n):
    c = Conversation(daemon.port)
    c.reply()
    c.command("EHLO client.test")
    codes = [c.command(line)[0] for line in
             ("MAIL FROM:<a@client.test>", f"RCPT TO:<u{n}@example.com>", "DATA")]
    code, _ = c.command(f"Subject: {n}\r\n\r\nbody {n}\r\n.")
    c.command("QUIT")
    c.close()
    return codes + [code]


def attempts_by_recipient(daemon):
    seen = collections.defaultdict(list)
    for record in daemon.events("deferred"):
        seen[record["to"]].append(record.get("attempt", record.get("attempts")))  # old name
    return seen


def wait_for(condition, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.2)
    return False


recipients = [f"u{n}@example.com" for n in range(3)]
first = Daemon(binary, args=args).start()
for n in range(3):
    tap.ok(send(first, n) == [250, 250, 354, 250], f"message {n} accepted")
    time.sleep(0.7)  # different retry times per message
tap.ok(wait_for(lambda: sum(len(a) for a in attempts_by_recipient(first).values()) >= 5, 30),
       "the destination deferred and probed again, before the restart")
tap.ok(first.stop() == 0, "first daemon stops cleanly")
before = attempts_by_recipient(first)

second = Daemon(binary, spool=first.spool, args=args).start()
# After the restart every message is due: the recovered jobs reach the destination's queue
# one cross-shard post at a time, so those that arrive after its first refusal wait on the
# probe like before (which ones is a race; a full run saw both outcomes). What must hold:
# the destination is attempted again and its probes go on, and every record is numbered on.
tap.ok(wait_for(lambda: sum(len(a) for a in attempts_by_recipient(second).values()) >= 3, 40),
       "the destination is attempted again after the restart, then the probes go on")
after = attempts_by_recipient(second)
listing = spool_list(binary, second.spool)  # read-only on a live spool
tap.ok(second.stop() == 0, "second daemon stops cleanly")
after = attempts_by_recipient(second)

for r in recipients:
    sequence = before[r] + after[r]
    tap.ok(sequence == list(range(1, len(sequence) + 1)),
           f"{r}: one record per attempt, numbered on across the restart", sequence)
stored = {rc["address"]: rc["attempts"] for m in spool_list(binary, second.spool)
          for rc in m["recipients"]}
for r in recipients:
    sequence = before[r] + after[r]
    last = sequence[-1] if sequence else 0  # never the probe: never attempted
    tap.ok(stored.get(r) == last, f"{r}: the spool holds the last record's attempt ({last})",
           stored)
tap.ok(len(listing) == 3, "the live spool listing showed the three messages", listing)
tap.done()
