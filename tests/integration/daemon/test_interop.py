#!/usr/bin/env python3
"""Real clients deliver to ringmta and every message lands in the spool byte-exact:
Python smtplib (several shapes of message), swaks, and Postfix's smtp-source under load.
usage: test_interop.py RINGMTA_BINARY"""
import os
import re
import shutil
import smtplib
import subprocess
import sys

from harness import Daemon, Tap, queued_id, received_header_and_body, spool_cat, spool_list

tap = Tap()
binary = sys.argv[1]
daemon = Daemon(binary).start()


# --- smtplib: messages whose wire form needs care: leading dots, long lines, 8-bit, CRLF.
cases = {
    "plain": b"Subject: plain\r\n\r\nhello\r\n",
    "dots": b"Subject: dots\r\n\r\n.\r\n..two\r\n.leading dot\r\nend.\r\n",
    "eight_bit": "Subject: 8bit\r\n\r\nGr\u00fc\u00dfe aus K\u00f6ln\r\n".encode(),
    "long_lines": b"Subject: long\r\n\r\n" + (b"x" * 998 + b"\r\n") * 3,
    "empty_body": b"Subject: empty\r\n\r\n",
    "binaryish": b"Subject: bytes\r\n\r\n" + bytes(range(1, 10)) + bytes(range(14, 256)) + b"\r\n",
}
sent = {}
with smtplib.SMTP("127.0.0.1", daemon.port, timeout=30) as client:
    code, _ = client.ehlo("client.test")
    tap.ok(code == 250, "smtplib EHLO accepted")
    tap.ok(client.has_extn("pipelining") and client.has_extn("8bitmime") and
           client.has_extn("size") and client.has_extn("chunking"),
           "EHLO advertises PIPELINING, 8BITMIME, SIZE, CHUNKING")
    for name, message in cases.items():
        options = ["BODY=8BITMIME"] if name in ("eight_bit", "binaryish") else []
        client.mail("sender@client.test", options)
        client.rcpt("rcpt1@example.com")
        client.rcpt("rcpt2@example.com")
        code, text = client.data(message)
        sent[name] = (queued_id(text.decode()), message)
        tap.ok(code == 250 and sent[name][0], f"smtplib {name}: 250 with a queue id",
               f"{code} {text}")

for name, (message_id, message) in sent.items():
    stored = spool_cat(binary, daemon.spool, message_id) if message_id else None
    if not tap.ok(stored is not None, f"{name}: in the spool"):
        continue
    header, body = received_header_and_body(stored)
    tap.ok(body == message, f"{name}: stored byte-exact", f"{body[:200]!r}\n{message[:200]!r}")
    tap.ok(b"by mx.test.example (ringmta) with ESMTP id " + message_id.encode() in header,
           f"{name}: Received header names us, ESMTP and the queue id", header)

listing = {m["id"]: m for m in spool_list(binary, daemon.spool)}
first = listing.get(sent["plain"][0], {})
tap.ok(first.get("sender") == "sender@client.test" and
       [r["address"] for r in first.get("recipients", [])] ==
       ["rcpt1@example.com", "rcpt2@example.com"],
       "spool ls shows sender and both recipients", first)

# --- swaks (a different client implementation; pipelining on).
swaks = shutil.which("swaks")
if tap.ok(swaks is not None, "swaks installed"):
    result = subprocess.run(
        [swaks, "--server", f"127.0.0.1:{daemon.port}", "--from", "swaks@client.test",
         "--to", "user@example.com", "--pipeline", "--body", "swaks body line\n.dot line\n",
         "--header", "Subject: swaks"], capture_output=True, text=True, timeout=60)
    message_id = queued_id(result.stdout)
    tap.ok(result.returncode == 0 and message_id, "swaks delivers with pipelining",
           result.stdout[-2000:])
    stored = spool_cat(binary, daemon.spool, message_id) if message_id else b""
    tap.ok(b"\r\nswaks body line\r\n.dot line\r\n" in stored,
           "swaks body stored with its dot line intact", stored[-300:])

# --- Postfix smtp-source: 2,000 messages over 20 sessions, one message per connection.
source = shutil.which("smtp-source") or "/usr/sbin/smtp-source"
if tap.ok(os.path.exists(source), "smtp-source installed"):
    before = len(spool_list(binary, daemon.spool))
    result = subprocess.run([source, "-s", "20", "-m", "2000", "-l", "1024", "-f",
                             "load@client.test", "-t", "sink@example.com",
                             f"127.0.0.1:{daemon.port}"], capture_output=True, text=True,
                            timeout=300)
    tap.ok(result.returncode == 0 and not result.stderr.strip(), "smtp-source: no errors",
           result.stderr[-1000:])
    after = spool_list(binary, daemon.spool)
    tap.ok(len(after) - before == 2000, "smtp-source: 2,000 messages queued",
           f"{len(after) - before}")
    sample = [m for m in after if m["sender"] == "load@client.test"][:20]
    intact = 0
    for m in sample:
        stored = spool_cat(binary, daemon.spool, m["id"])
        _, body = received_header_and_body(stored)
        text = body.split(b"\r\n\r\n", 1)[1]
        # smtp-source writes -l octets as lines "<n>XXX…\r\n" (the last one shorter)
        lines = text.split(b"\r\n")
        intact += (len(text) >= 1024 and lines[-1] == b"" and
                   all(re.fullmatch(rb"[0-9]*X*", line) for line in lines))
    tap.ok(intact == len(sample) and sample, "smtp-source bodies stored intact (20 sampled)")

metrics = daemon.metrics()
tap.ok(metrics.get("ringmta_messages_accepted_total", 0) >= 2000 + len(cases) + 1,
       "metrics count the accepted messages", metrics.get("ringmta_messages_accepted_total"))
flushes = metrics.get("ringmta_spool_flushes_total", 0)
print(f"# {metrics.get('ringmta_messages_accepted_total', 0):.0f} messages in {flushes:.0f} "
      f"spool flushes, {metrics.get('ringmta_spool_datasyncs_total', 0):.0f} fdatasyncs")
tap.ok(0 < flushes < metrics.get("ringmta_messages_accepted_total", 0) and
       metrics.get("ringmta_spool_datasyncs_total", 0) >= flushes and
       metrics.get("ringmta_spool_segments_created_total", 0) >= 2,
       "spool metrics: group commit (fewer flushes than messages), every flush synced",
       {k: v for k, v in metrics.items() if "spool" in k or "accepted" in k})
received_logs = daemon.events("received")
tap.ok(len(received_logs) >= 2000, "one JSON 'received' record per message",
       len(received_logs))
tap.ok(daemon.stop() == 0, "SIGTERM: clean exit 0")

# Fewer shards than the spool holds mail for: a clear start-up error, not mail left unserved.
shards_with_mail = {m["shard"] for m in spool_list(binary, daemon.spool)}
refused = subprocess.run([binary, "--listen", "127.0.0.1:0", "--spool", daemon.spool,
                          "--shards", "1", "--allow-root"], capture_output=True, text=True,
                         timeout=60)
tap.ok(1 in shards_with_mail and refused.returncode != 0 and
       "queued in shard-1 but only 1 shards are configured" in refused.stderr and
       "--shards 2" in refused.stderr,
       "restart with fewer shards than hold mail: refused with a clear error",
       f"{shards_with_mail} {refused.returncode} {refused.stderr[-500:]}")
shutil.rmtree(daemon.spool, ignore_errors=True)
tap.done()
