#!/usr/bin/env python3
"""A receiving Postfix with the OpenDKIM milter verifies ringmta's signatures.

ringmta signs with RSA-2048 and Ed25519 keys (relaxed/relaxed for relaxed.test,
simple/simple for simple.test) and relays to a private Postfix instance (the shared
postfix_instance.sh, made a final MTA for final.test) whose smtpd runs Debian's opendkim as
a milter in verify mode (keys from TestPublicKeys). Each delivered message must carry
OpenDKIM's Authentication-Results with dkim=pass for both signatures: a small message (BDAT
to Postfix) and a 300 KB one (DATA, spliced from the spool).
usage: test_dkim_postfix.py RINGMTA"""
import os
import re
import shutil
import smtplib
import subprocess
import sys
import tempfile

from harness import Daemon, Tap, free_port
from peers import wait_until

tap = Tap()
ringmta = sys.argv[1]
opendkim = shutil.which("opendkim") or "/usr/sbin/opendkim"
if not shutil.which("postfix") or not os.path.exists(opendkim):
    tap.skip_all("postfix or opendkim is not installed (tools/bootstrap)")

work = tempfile.mkdtemp(prefix="ringmta-dkim-postfix-")
os.chmod(work, 0o755)
records, config_text = {}, ""
for domain, canonicalization in (("relaxed.test", "relaxed/relaxed"),
                                 ("simple.test", "simple/simple")):
    for selector, algorithm in (("rsa", "rsa"), ("ed", "ed25519")):
        path = os.path.join(work, f"{domain}.{selector}.key")
        out = subprocess.run([ringmta, "dkim", "keygen", "--domain", domain, "--selector",
                              selector, "--algorithm", algorithm, "--out", path],
                             capture_output=True, text=True, timeout=60, check=True).stdout
        record = out.split("TXT (", 1)[1].split(")", 1)[0]
        records[f"{selector}._domainkey.{domain}"] = "".join(re.findall(r'"([^"]*)"', record))
        config_text += (f'[[dkim]]\ndomain = "{domain}"\nselector = "{selector}"\n'
                        f'key_file = "{path}"\ncanonicalization = "{canonicalization}"\n\n')
config = os.path.join(work, "ringmta.toml")
with open(config, "w") as f:
    f.write(config_text)
with open(os.path.join(work, "keys.txt"), "w") as f:
    f.writelines(f"{name} {value}\n" for name, value in records.items())

milter_port = free_port()
with open(os.path.join(work, "opendkim.conf"), "w") as f:
    f.write(f"Mode v\nSocket inet:{milter_port}@127.0.0.1\nTestPublicKeys {work}/keys.txt\n"
            f"AuthservID verifier.test\nAlwaysAddARHeader yes\nPidFile {work}/opendkim.pid\n"
            "Syslog no\n")
milter = subprocess.Popen([opendkim, "-f", "-x", os.path.join(work, "opendkim.conf")],
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

port = free_port()
mailboxes = os.path.join(work, "mailboxes")
os.makedirs(mailboxes)
shutil.chown(mailboxes, "nobody", "nogroup")
extra = os.path.join(work, "final.cf")
with open(extra, "w") as f:
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
smtpd_milters = inet:127.0.0.1:{milter_port}
milter_default_action = tempfail
""")
instance = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tools",
                        "postfix_instance.sh")
started = subprocess.run([instance, "start", work, str(port), "9", extra],
                         capture_output=True, text=True)
try:
    listening = wait_until(lambda: subprocess.run(["ss", "-Hltn", f"sport = :{port}"],
                                                  capture_output=True, text=True).stdout.strip(), 15)
    milter_up = wait_until(lambda: subprocess.run(["ss", "-Hltn", f"sport = :{milter_port}"],
                                                  capture_output=True, text=True).stdout.strip(), 15)
    if not tap.ok(started.returncode == 0 and listening and milter_up,
                  "a private Postfix with the OpenDKIM milter starts",
                  started.stderr + started.stdout):
        tap.done()
    daemon = Daemon(ringmta, args=["--config", config, "--route", f"final.test=127.0.0.1:{port}",
                                   "--resolver", "127.0.0.1:9"]).start()
    big = b"".join(b"line %06d  with  double  spaces and a tab\there \r\n" % i
                   for i in range(6000))
    sent = []
    for domain in ("relaxed.test", "simple.test"):
        for name, body in (("small", b"Hello Bob.\r\n.a dot line\r\n\r\n"), ("large", big)):
            message_id = f"{name}.{domain}"
            sent.append(message_id)
            with smtplib.SMTP("127.0.0.1", daemon.port, timeout=60) as client:
                client.sendmail(f"alice@{domain}", ["bob@final.test"],
                                f"From: Alice <alice@{domain}>\r\nTo: bob@final.test\r\n"
                                f"Subject: signed {name}\r\nMessage-ID: <{message_id}@t>\r\n"
                                "\r\n".encode() + body)
    mailbox = os.path.join(mailboxes, "bob")

    def delivered():
        if not os.path.exists(mailbox):
            return []
        text = open(mailbox, "rb").read()
        return [m for m in re.split(rb"(?m)^From ", text) if m.strip()]

    messages = wait_until(lambda: len(delivered()) >= len(sent) and delivered(), 60) or []
    tap.ok(len(messages) == len(sent), f"Postfix delivered all {len(sent)} messages",
           open(os.path.join(work, "maillog")).read()[-2000:] if os.path.exists(
               os.path.join(work, "maillog")) else "no maillog")
    verdicts = {}
    for message in messages:
        found = re.search(rb"Message-ID: <([^@]+)@t>", message)
        results = re.search(rb"(?ms)^Authentication-Results: verifier\.test;(.*?)\n(?=\S)",
                            message)
        verdicts[found.group(1).decode() if found else "?"] = re.findall(
            r"dkim=(\w+)[^;]*header\.a=([\w-]+)", results.group(1).decode() if results else "")
    tap.ok(len(verdicts) == len(sent) and all(
        sorted(v) == [("pass", "ed25519-sha256"), ("pass", "rsa-sha256")]
        for v in verdicts.values()),
        "OpenDKIM in Postfix: dkim=pass for the RSA and the Ed25519 signature of every message "
        "(relaxed and simple, small and spliced)", verdicts)
    tap.ok(daemon.stop() == 0, "clean exit")
finally:
    subprocess.run([instance, "stop", work], capture_output=True)
    milter.terminate()
    milter.wait(10)
    shutil.rmtree(work, ignore_errors=True)
tap.done()
