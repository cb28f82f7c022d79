#!/usr/bin/env python3
"""Envelopes of waiting messages leave memory and are read back from the spool (issue 15,
memory per queued message). A message deferred by a 4xx sink drops its packed envelope
(gauge ringmta_relay_envelopes_resident); whatever needs it again reads the spool's commit
record back through the ring (counter ringmta_relay_envelope_reads_total): a delivery once the
sink accepts (the sink must receive the right MAIL FROM, RCPT TO and body), an operator
bounce and its DSN (quoting the original), hold and release, a queue listing (addresses),
and a restart, which recovers the queue without packing any envelope and delivers each
message exactly once.
usage: test_envelope_eviction.py RINGMTA RINGMTA_CTL RINGMTA_SINK"""
import json
import subprocess
import sys

from harness import Conversation, Daemon, Tap, free_port, queued_id, spool_list
from peers import Sink, wait_until

tap = Tap()
ringmta, ctl, sink_binary = sys.argv[1:4]
address, port, closed = "127.0.0.4", free_port("127.0.0.4"), free_port()
routes = ["--route", f"good.test={address}:{port}", "--route", f"sender.test={address}:{port}",
          "--retry-schedule", "1h"]
args = routes + ["--route", f"other.test=127.0.0.1:{closed}"]


def metric(daemon, name):
    """The sum over the shards of a metric (each shard exports its own); None when absent."""
    values = [v for k, v in daemon.metrics().items() if k.split("{")[0] == name]
    return sum(values) if values else None


def send(daemon, sender, rcpts, subject):
    c = Conversation(daemon.port)
    c.reply()
    c.command("EHLO client.test")
    c.command(f"MAIL FROM:<{sender}>")
    for rcpt in rcpts:
        c.command(f"RCPT TO:<{rcpt}>")
    c.command("DATA")
    code, text = c.command(f"Subject: {subject}\r\n\r\nbody of {subject}\r\n.")
    c.command("QUIT")
    c.close()
    return queued_id(text) if code == 250 else None


def run_ctl(daemon, *arguments):
    return subprocess.run([ctl, "--spool", daemon.spool, *arguments], capture_output=True,
                          text=True, timeout=60)


def listing(daemon):
    done = run_ctl(daemon, "--json", "list")
    return json.loads(done.stdout) if done.returncode == 0 else []


def received(sink):
    """{subject: (sender, recipients, body)} of what the sink accepted."""
    out = {}
    for envelope, data in sink.messages():
        subject = data.split(b"Subject: ", 1)[1].split(b"\r\n", 1)[0].decode()
        out.setdefault(subject, []).append((envelope.get("mail-from", "").strip("<>"),
                                            sorted(envelope["rcpt"]), data))
    return out


# --- deferred by a 4xx sink: every envelope leaves memory
failing = Sink(sink_binary, address, port, ["--tempfail-rate", "1"])
daemon = Daemon(ringmta, args=args).start()
plain = {f"plain{n}": send(daemon, f"a{n}@sender.test", [f"m{n}@good.test", f"n{n}@good.test"],
                           f"plain{n}") for n in range(4)}
bounced = send(daemon, "b@sender.test", ["bounce@good.test"], "bounce-me")
held = send(daemon, "h@sender.test", ["held@good.test"], "hold-me")
waiting = send(daemon, "w@sender.test", ["w@other.test"], "waits")
ids = list(plain.values()) + [bounced, held, waiting]
tap.ok(all(ids), "7 messages accepted", ids)
tap.ok(wait_until(lambda: metric(daemon, "ringmta_recipients_deferred_total") >= 8, 30),
       "each was tried and deferred (4xx at the sink, refused at other.test)",
       metric(daemon, "ringmta_recipients_deferred_total"))
tap.ok(wait_until(lambda: metric(daemon, "ringmta_relay_envelopes_resident") == 0, 10),
       "no envelope of a deferred message stays in memory",
       metric(daemon, "ringmta_relay_envelopes_resident"))

# --- operator actions on evicted messages: hold, bounce (a DSN quoting the original)
tap.ok(run_ctl(daemon, "hold", held).returncode == 0, "hold an evicted message")
tap.ok(run_ctl(daemon, "bounce", bounced, "--reason", "operator test 7").returncode == 0,
       "bounce an evicted message")
reads_after_actions = metric(daemon, "ringmta_relay_envelope_reads_total")
tap.ok(reads_after_actions >= 2, "the actions read their envelopes back", reads_after_actions)

# --- the sink accepts: the deliveries read their envelopes back in flight
failing.stop()
sink = Sink(sink_binary, address, port)
before = metric(daemon, "ringmta_relay_envelope_reads_total")
tap.ok(run_ctl(daemon, "retry", "--domain", "good.test").returncode == 0 and
       run_ctl(daemon, "retry", "--domain", "sender.test").returncode == 0,
       "retry good.test and sender.test now")
dsn_subject = "Undelivered Mail Returned to Sender"
tap.ok(wait_until(lambda: set(plain) | {dsn_subject} <= set(received(sink)), 30),
       "the retried messages and the DSN reach the sink", sorted(received(sink)))
got = received(sink)
tap.ok(all(got.get(subject) == [(f"a{n}@sender.test", [f"m{n}@good.test", f"n{n}@good.test"],
                                 got[subject][0][2])]
           for n, subject in enumerate(plain)),
       "each delivered once with its own MAIL FROM and both RCPT TO", got)
tap.ok(all(got[subject][0][2].endswith(f"\r\n\r\nbody of {subject}\r\n".encode())
           for subject in plain), "each with its own body")
tap.ok(metric(daemon, "ringmta_relay_envelope_reads_total") >= before + len(plain),
       "the deliveries read their envelopes from the spool",
       (before, metric(daemon, "ringmta_relay_envelope_reads_total")))
dsn = [d for s, entries in got.items() for (sender, rcpts, d) in entries
       if sender == "" and rcpts == ["b@sender.test"]]
tap.ok(len(dsn) == 1 and b"report-type=delivery-status" in dsn[0] and
       b"operator test 7" in dsn[0] and b"Subject: bounce-me" in dsn[0] and
       b"body of bounce-me" in dsn[0],
       "the bounced message's DSN names the reason and quotes the original", dsn)
tap.ok("hold-me" not in got, "the held message was not delivered")
tap.ok(run_ctl(daemon, "release", held).returncode == 0, "release it")
tap.ok(wait_until(lambda: received(sink).get("hold-me"), 30) and
       received(sink)["hold-me"][0][:2] == ("h@sender.test", ["held@good.test"]),
       "the released message is delivered with its envelope", received(sink).get("hold-me"))

# --- a listing names the senders and addresses of evicted messages
tap.ok(wait_until(lambda: metric(daemon, "ringmta_relay_envelopes_resident") == 0, 10),
       "nothing resident before the listing (the last one waits at other.test)",
       metric(daemon, "ringmta_relay_envelopes_resident"))
listed = listing(daemon)
tap.ok([(j["id"], j["sender"], [r["address"] for r in j["recipients"]], j["on_disk"])
        for j in listed] == [(waiting, "w@sender.test", ["w@other.test"], False)],
       "list: the evicted message's sender and recipient, read back", listed)
tap.ok(daemon.stop() == 0, "clean exit")

# --- restart: recovered without packing an envelope; each delivered once
daemon = Daemon(ringmta, spool=daemon.spool,
                args=routes + ["--route", f"other.test={address}:{port}"]).start()
tap.ok(wait_until(lambda: daemon.events("queue_recovered"), 10) and
       metric(daemon, "ringmta_relay_envelopes_resident") == 0,
       "the restart recovers the queue with no envelope in memory",
       metric(daemon, "ringmta_relay_envelopes_resident"))
tap.ok(run_ctl(daemon, "retry", "--domain", "other.test").returncode == 0, "retry other.test")
tap.ok(wait_until(lambda: received(sink).get("waits"), 30) and
       received(sink)["waits"][0][:2] == ("w@sender.test", ["w@other.test"]),
       "the recovered message is delivered with its envelope", received(sink).get("waits"))
tap.ok(wait_until(lambda: not spool_list(ringmta, daemon.spool), 20),
       "the queue empties", spool_list(ringmta, daemon.spool))
tap.ok(daemon.stop() == 0, "second clean exit")
counts = {s: len(entries) for s, entries in received(sink).items()}
tap.ok(all(n == 1 for n in counts.values()) and len(counts) == len(plain) + 3,
       "every message delivered exactly once (and one DSN)", counts)
tap.done()
