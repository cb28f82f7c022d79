#!/usr/bin/env python3
"""ringmta relays into a real Postfix acting as the final MTA: a private Postfix instance (its
own config, queue and mailbox directories, high loopback port) delivers final.test to a
mailbox file; the message must arrive there intact, with ringmta's Received: header.
usage: test_postfix_final.py RINGMTA"""
import os
import re
import shutil
import smtplib
import subprocess
import sys
import tempfile
import time

from harness import Daemon, Tap, free_port
from peers import wait_until

tap = Tap()
ringmta = sys.argv[1]
if not shutil.which("postfix") or not shutil.which("postconf"):
    tap.skip_all("postfix is not installed")

work = tempfile.mkdtemp(prefix="ringmta-postfix-")
os.chmod(work, 0o755)  # Postfix's own processes run as the postfix user
port = free_port()
mailboxes = os.path.join(work, "mailboxes")
os.makedirs(mailboxes)
shutil.chown(mailboxes, "nobody", "nogroup")
# The shared private-instance script, made a final MTA: virtual mailboxes for final.test.
extra_main_cf = os.path.join(work, "final.cf")
with open(extra_main_cf, "w") as f:
    f.write(f"""myhostname = final.mx.test
relayhost =
virtual_mailbox_domains = final.test
virtual_mailbox_base = {mailboxes}
virtual_mailbox_maps = inline:{{ bob@final.test=bob }}
virtual_uid_maps = static:65534
virtual_gid_maps = static:65534
virtual_minimum_uid = 100
smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination
smtpd_recipient_restrictions =
""")
instance = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tools",
                        "postfix_instance.sh")
# Postfix reports configuration problems only to a terminal: the script runs `postfix check`
# under script(1) when it fails.
started = subprocess.run([instance, "start", work, str(port), "9", extra_main_cf],
                         capture_output=True, text=True)
try:
    listening = wait_until(lambda: subprocess.run(["ss", "-Hltn", f"sport = :{port}"],
                                                  capture_output=True, text=True).stdout.strip(), 15)
    if not tap.ok(started.returncode == 0 and listening, "a private Postfix instance starts",
                  started.stderr + started.stdout):
        tap.done()
    daemon = Daemon(ringmta, args=["--route", f"final.test=127.0.0.1:{port}",
                                   "--resolver", "127.0.0.1:9"]).start()
    body = (b"Subject: to the final MTA\r\nMessage-ID: <final-1@client.test>\r\n\r\n"
            b"first line\r\n.leading dot survives\r\n" + b"z" * 900 + b"\r\nlast line\r\n")
    with smtplib.SMTP("127.0.0.1", daemon.port, timeout=30) as client:
        client.sendmail("alice@client.test", ["bob@final.test"], body)
    mailbox = os.path.join(mailboxes, "bob")
    arrived = wait_until(lambda: os.path.exists(mailbox) and b"last line" in
                         open(mailbox, "rb").read(), 30)
    content = open(mailbox, "rb").read() if os.path.exists(mailbox) else b""
    tap.ok(arrived, "Postfix delivered the message to bob's mailbox",
           open(os.path.join(work, "maillog")).read()[-2000:] if os.path.exists(
               os.path.join(work, "maillog")) else "no maillog")
    text = content.replace(b"\n", b"\r\n")  # the mbox file uses LF
    tap.ok(body.split(b"\r\n\r\n", 1)[1] in text, "the body arrived intact (dot line included)")
    tap.ok(b"by mx.test.example (ringmta) with ESMTP" in content and
           b"by final.mx.test (Postfix" in content,
           "both hops are in the Received: trace", content[:600])
    delivered = daemon.events("delivered")
    # Postfix offers CHUNKING; its reply to BDAT names the octets it read ("Ok: N bytes
    # queued as ID"), its reply to DATA does not: so this also shows the message went as BDAT.
    tap.ok(delivered and re.search(r"^250 2\.0\.0 Ok: \d+ bytes queued as \w+$",
                                   delivered[0]["reply"]),
           "ringmta sent the message with BDAT and logs Postfix's queue id", delivered)
    tap.ok(daemon.stop() == 0, "clean exit")
finally:
    subprocess.run([instance, "stop", work], capture_output=True)
    time.sleep(0.5)
    shutil.rmtree(work, ignore_errors=True)
tap.done()
