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
for d in ("etc", "queue", "data", "mailboxes"):
    os.makedirs(os.path.join(work, d))
shutil.chown(os.path.join(work, "data"), "postfix")
shutil.chown(mailboxes, "nobody", "nogroup")
with open(os.path.join(work, "etc", "main.cf"), "w") as f:
    f.write(f"""compatibility_level = 3.6
queue_directory = {work}/queue
data_directory = {work}/data
mail_owner = postfix
setgid_group = postdrop
myhostname = final.mx.test
mydestination =
mynetworks = 127.0.0.0/8
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
virtual_mailbox_domains = final.test
virtual_mailbox_base = {mailboxes}
virtual_mailbox_maps = inline:{{ bob@final.test=bob }}
virtual_uid_maps = static:65534
virtual_gid_maps = static:65534
virtual_minimum_uid = 100
smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination
maillog_file = {work}/maillog
maillog_file_prefixes = {work}
alias_maps =
alias_database =
smtpd_tls_security_level = none
biff = no
""")
with open(os.path.join(work, "etc", "master.cf"), "w") as f:
    f.write(f"""127.0.0.1:{port} inet n - n - - smtpd
pickup unix n - n 60 1 pickup
cleanup unix n - n - 0 cleanup
qmgr unix n - n 300 1 qmgr
rewrite unix - - n - - trivial-rewrite
bounce unix - - n - 0 bounce
defer unix - - n - 0 bounce
trace unix - - n - 0 bounce
verify unix - - n - 1 verify
proxymap unix - - n - - proxymap
smtp unix - - n - - smtp
showq unix n - n - - showq
error unix - - n - - error
retry unix - - n - - error
discard unix - - n - - discard
virtual unix - n n - - virtual
anvil unix - - n - 1 anvil
scache unix - - n - 1 scache
postlog unix-dgram n - n - 1 postlogd
""")
# Postfix reports configuration problems only to a terminal: run it under script(1).
started = subprocess.run(["script", "-qc", f"postfix -c {work}/etc start", "/dev/null"],
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
    subprocess.run(["postfix", "-c", os.path.join(work, "etc"), "stop"], capture_output=True)
    time.sleep(0.5)
    shutil.rmtree(work, ignore_errors=True)
tap.done()
