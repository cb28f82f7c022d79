#!/usr/bin/env python3
"""XCLIENT (Postfix XCLIENT_README) against the daemon with smtplib and raw sockets from
several loopback addresses: offered in EHLO only to --xclient-trusted peers; from another peer
550 5.7.0, an `xclient` record and a metric; from a trusted one the session starts over with the
220 greeting and the claimed address decides relaying (mynetworks, both ways), appears in
Received: and the records; HELO= is the name Received: shows; LOGIN= authenticates (ESMTPA,
the sender map applies).
usage: test_xclient.py RINGMTA"""
import atexit
import os
import shutil
import smtplib
import subprocess
import sys
import tempfile
import time

from harness import Daemon, Tap, queued_id, spool_cat

tap = Tap()
binary = sys.argv[1]
work = tempfile.mkdtemp(prefix="ringmta-xclient-")
atexit.register(shutil.rmtree, work, True)
sender_map = os.path.join(work, "senders")
with open(sender_map, "w") as f:
    f.write("@ours.test   bob\n")

# 127.0.0.1 is both trusted for XCLIENT and in mynetworks; 127.0.0.77 is in mynetworks only;
# 127.0.0.5 is neither. A passwd file is not needed: XCLIENT's LOGIN is the front end's word.
daemon = Daemon(binary, args=[
    "--xclient-trusted", "127.0.0.1/32", "--mynetworks", "127.0.0.1/32,127.0.0.77/32",
    "--relay-domains", "ours.test", "--auth-sender-map", sender_map]).start()


def smtp(source):
    c = smtplib.SMTP("127.0.0.1", daemon.port, timeout=30, source_address=(source, 0))
    c.ehlo("front.test")
    return c


def wait_for(check, seconds=5):
    deadline = time.monotonic() + seconds  # an idle shard hands its records over within 1 s
    while time.monotonic() < deadline and not check():
        time.sleep(0.05)
    return check()


def relays(c, sender="a@client.test"):
    c.docmd("RSET")
    c.docmd("MAIL", f"FROM:<{sender}>")
    code, _ = c.docmd("RCPT", "TO:<x@elsewhere.test>")
    return code


# ---- trusted peer: advertised, and the claimed address decides
c = smtp("127.0.0.1")
tap.ok(c.has_extn("xclient") and "ADDR" in c.esmtp_features["xclient"]
       and "LOGIN" in c.esmtp_features["xclient"],
       "EHLO to a trusted peer offers XCLIENT with its attributes", c.esmtp_features)
tap.ok(relays(c) == 250, "the trusted peer itself (in mynetworks) may relay")
c.docmd("RSET")
code, text = c.docmd("XCLIENT", "ADDR=192.0.2.1 NAME=outside.example PORT=4000")
tap.ok(code == 220 and b"ESMTP" in text, "XCLIENT answers with the 220 greeting", (code, text))
code, text = c.docmd("MAIL", "FROM:<a@client.test>")
tap.ok(code == 503, "after XCLIENT the session starts over: MAIL needs EHLO again", (code, text))
c.ehlo("front.test")
tap.ok(relays(c) == 554, "a claimed address outside mynetworks may not relay (554)")
c.docmd("RSET")
code, _ = c.docmd("XCLIENT", "ADDR=127.0.0.77 HELO=original+2Eclient.test")
c.ehlo("front.test")
tap.ok(code == 220 and relays(c) == 250, "a claimed address in mynetworks may relay")
code, text = c.data(b"Subject: xclient\r\n\r\nrelayed for 127.0.0.77\r\n")
message_id = queued_id(text.decode())
stored = spool_cat(binary, daemon.spool, message_id) or b""
head = stored.split(b"\r\n\r\n")[0]
tap.ok(code == 250 and b"[127.0.0.77]" in head and b"original.client.test" in head
       and b"127.0.0.1" not in head,
       "Received: names the claimed address and HELO, not the front end", head[:400])
tap.ok(wait_for(lambda: any(r.get("id") == message_id and r.get("client") == "127.0.0.77"
                            for r in daemon.events("received"))),
       "the received record's client is the claimed address", daemon.events("received")[-1:])

# ---- LOGIN: authenticated as that user, the sender map applies
c.docmd("RSET")
code, _ = c.docmd("XCLIENT", "ADDR=192.0.2.9 LOGIN=bob")
c.ehlo("front.test")
tap.ok(code == 220 and relays(c, "alice@ours.test") == 250,
       "XCLIENT LOGIN=bob from outside mynetworks may relay, as bob (map: @ours.test)")
c.docmd("RSET")
code, text = c.docmd("MAIL", "FROM:<bob@elsewhere.test>")
tap.ok(code == 553 and b"5.7.1" in text, "a sender bob does not own: 553 5.7.1", (code, text))
c.docmd("RSET")
c.docmd("MAIL", "FROM:<alice@ours.test>")
c.docmd("RCPT", "TO:<y@elsewhere.test>")
code, text = c.data(b"Subject: as bob\r\n\r\nhi\r\n")
message_id = queued_id(text.decode())
stored = spool_cat(binary, daemon.spool, message_id) or b""
tap.ok(b"with ESMTPA" in stored.split(b"\r\n\r\n")[0],
       "Received: says ESMTPA for an XCLIENT login", stored[:300])
tap.ok(wait_for(lambda: any(r.get("id") == message_id and r.get("login") == "bob"
                            and r.get("client") == "192.0.2.9"
                            for r in daemon.events("received"))),
       "the received record has the login and the claimed client",
       daemon.events("received")[-1:])
c.docmd("RSET")
code, _ = c.docmd("XCLIENT", "ADDR=192.0.2.9")
c.ehlo("front.test")
tap.ok(code == 220 and relays(c) == 554, "a later XCLIENT without LOGIN is not authenticated")
c.docmd("RSET")
code, text = c.docmd("XCLIENT", "ADDR=300.1.2.3")
tap.ok(code == 501, "a malformed address: 501", (code, text))
c.quit()
records = daemon.events("xclient")
tap.ok(any(r.get("result") == "accepted" and r.get("client", "").startswith("192.0.2.1:4000")
           and r.get("front_end", "").startswith("127.0.0.1:") and r.get("name") ==
           "outside.example" for r in records),
       "the xclient record names the claimed client, its name and the front end", records)

# ---- untrusted peer: not offered, 550 5.7.0, nothing changes, a record
c = smtp("127.0.0.5")
tap.ok(not c.has_extn("xclient"), "EHLO to an untrusted peer does not offer XCLIENT")
code, text = c.docmd("XCLIENT", "ADDR=127.0.0.77 LOGIN=bob")
tap.ok(code == 550 and b"5.7.0" in text, "XCLIENT from an untrusted peer: 550 5.7.0",
       (code, text))
tap.ok(relays(c, "alice@ours.test") == 554,
       "and the claim changes nothing: no relaying, not authenticated")
c.quit()
tap.ok(wait_for(lambda: any(r.get("result") == "untrusted"
                            and r.get("client", "").startswith("127.0.0.5:")
                            for r in daemon.events("xclient"))),
       "an xclient record names the untrusted peer", daemon.events("xclient"))
metrics = daemon.metrics()
tap.ok(metrics.get('ringmta_xclient_total{result="untrusted"}', 0) >= 1
       and metrics.get('ringmta_xclient_total{result="accepted"}', 0) >= 4,
       "/metrics counts XCLIENT accepted and untrusted",
       {k: v for k, v in metrics.items() if "xclient" in k})
daemon.stop()

# ---- a bad CIDR is a start-up error naming the key
bad = subprocess.run([binary, "--listen", "127.0.0.1:0", "--spool", os.path.join(work, "s"),
                      "--xclient-trusted", "127.0.0.300/8", "--allow-root"],
                     capture_output=True, text=True, timeout=30)
tap.ok(bad.returncode == 2 and "xclient" in bad.stderr, "a bad --xclient-trusted exits 2",
       bad.stderr)
tap.done()
