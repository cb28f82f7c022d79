#!/usr/bin/env python3
"""Certificates and DKIM keys reload on SIGHUP without dropping sessions (issues 11 and 13).

ringmta starts with certificate ONE and DKIM selector s1. The configuration then names
certificate TWO and selector s2, and SIGHUP reloads it: a session opened before the reload
keeps offering certificate ONE and signing with s1 (its snapshot); sessions after it get TWO
and s2. A configuration naming an unreadable key is rejected (`reload_rejected`), and the
running certificate and key stay. Signatures are checked by dkimpy against the generated
records; certificates by `openssl s_client -starttls smtp`.
usage: test_reload_keys.py RINGMTA RINGMTA_SINK"""
import os
import re
import signal
import smtplib
import subprocess
import sys
import tempfile
import time

import tls_pki
from harness import Daemon, Tap, free_port
from peers import Sink, wait_until

tap = Tap()
ringmta, sink_binary = sys.argv[1], sys.argv[2]
try:
    import dkim
except ImportError:
    tap.skip_all("python3-dkim is not installed (tools/bootstrap)")

work = tempfile.mkdtemp(prefix="ringmta-reload-keys-")
records = {}


def keygen(selector):
    path = os.path.join(work, f"{selector}.key")
    out = subprocess.run([ringmta, "dkim", "keygen", "--domain", "sign.test", "--selector",
                          selector, "--algorithm", "ed25519", "--out", path],
                         capture_output=True, text=True, timeout=60)
    record = out.stdout.split("TXT (", 1)[1].split(")", 1)[0]
    records[f"{selector}._domainkey.sign.test."] = "".join(re.findall(r'"([^"]*)"', record))
    return path


one = tls_pki.make(host="one.test.example")
two = tls_pki.make(host="two.test.example")
key1, key2 = keygen("s1"), keygen("s2")
config = os.path.join(work, "ringmta.toml")


def write_config(pki, selector, key_file):
    with open(config + ".new", "w") as f:
        f.write(f'[tls]\ncert = ["{pki["ecdsa_cert"]}"]\nkey = ["{pki["ecdsa_key"]}"]\n\n'
                f'[[dkim]]\ndomain = "sign.test"\nselector = "{selector}"\n'
                f'key_file = "{key_file}"\n')
    os.replace(config + ".new", config)


def certificate_subject():
    out = subprocess.run(["openssl", "s_client", "-starttls", "smtp", "-connect",
                          f"127.0.0.1:{daemon.port}", "-servername", "localhost"],
                         input="QUIT\n", capture_output=True, text=True, timeout=30)
    found = re.search(r"subject=.*?CN\s*=\s*([\w.]+)", out.stdout)
    return found.group(1) if found else out.stdout[-300:]


def open_session():
    client = smtplib.SMTP("127.0.0.1", daemon.port, timeout=60, source_address=("127.0.0.2", 0))
    client.starttls()
    client.ehlo("client.test")
    return client


def send(client, tag):
    message = (f"From: <a@sign.test>\r\nTo: <b@dest.test>\r\nSubject: {tag}\r\n"
               f"Message-ID: <{tag}@t>\r\n\r\nbody {tag}\r\n").encode()
    client.sendmail("a@sign.test", ["b@dest.test"], message)


def delivered():
    """{tag: (selector, verified)} of the messages at the sink."""
    out = {}
    for _, message in sink.messages():
        tag = re.search(rb"Subject: (\S+)", message).group(1).decode()
        selector = re.search(rb"\bs=([\w]+)", message)
        verified = dkim.verify(message, dnsfunc=lambda name, timeout=5:
                               records.get(name.decode(), "").encode())
        out[tag] = (selector.group(1).decode() if selector else None, verified)
    return out


def reloads(kind):
    return len(daemon.events(kind))


sink = Sink(sink_binary, "127.0.0.1", free_port())
write_config(one, "s1", key1)
daemon = Daemon(ringmta, args=[
    "--config", config, "--mynetworks", "127.0.0.2/32", "--relay-domains", "dest.test",
    "--route", f"dest.test={sink.process.args[2]}", "--resolver", "127.0.0.1:9"]).start()

tap.ok(certificate_subject() == "one.test.example", "started with certificate ONE",
       certificate_subject())
before = open_session()
send(before, "first")

write_config(two, "s2", key2)
daemon.process.send_signal(signal.SIGHUP)
tap.ok(wait_until(lambda: reloads("reloaded") >= 1, 20),
       "SIGHUP reloads the configuration", daemon.events("reload_rejected"))
tap.ok(certificate_subject() == "two.test.example",
       "a new session after the reload is offered certificate TWO", certificate_subject())
send(before, "old-session")  # the session opened before keeps its snapshot
before.quit()
after = open_session()
send(after, "new-session")
after.quit()

write_config(two, "s3", os.path.join(work, "missing.key"))
rejected_before = reloads("reload_rejected")
daemon.process.send_signal(signal.SIGHUP)
tap.ok(wait_until(lambda: reloads("reload_rejected") > rejected_before, 20),
       "a reload naming a missing DKIM key is rejected", daemon.events("reload_rejected"))
rejection = daemon.events("reload_rejected")[-1:] or [{}]
tap.ok("missing.key" in str(rejection), "the rejection names the key file", rejection)
with open_session() as still:
    send(still, "after-rejected")

tap.ok(wait_until(lambda: len(sink.messages()) >= 4, 30), "every message was delivered",
       len(sink.messages()))
got = delivered()
tap.ok(got.get("first") == ("s1", True), "before the reload: signed with s1, verified",
       got.get("first"))
tap.ok(got.get("old-session") == ("s1", True),
       "a session from before the reload keeps signing with s1", got.get("old-session"))
tap.ok(got.get("new-session") == ("s2", True), "a session after the reload signs with s2",
       got.get("new-session"))
tap.ok(got.get("after-rejected") == ("s2", True),
       "a rejected reload leaves s2 in use", got.get("after-rejected"))
tap.ok(certificate_subject() == "two.test.example",
       "a rejected reload leaves certificate TWO in use", certificate_subject())
tap.ok(daemon.process.poll() is None, "the daemon kept running through the reloads")
daemon.stop()
tap.done()
