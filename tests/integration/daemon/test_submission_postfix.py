#!/usr/bin/env python3
"""A private Postfix as a submission client (smtp_sasl_auth_enable = yes, Cyrus SASL's PLAIN,
smtp_tls_security_level = encrypt) relaying into ringmta's submission port (RFC 6409): the
message arrives authenticated (ESMTPSA, the login in the record); with a wrong password
Postfix gets 535 and keeps the message (ringmta takes nothing); and a submission port never
takes mail without AUTH (Postfix without credentials gets 530 5.7.0).
usage: test_submission_postfix.py RINGMTA POSTFIX_INSTANCE_SH"""
import atexit
import os
import shutil
import smtplib
import subprocess
import sys
import tempfile
import time

from harness import Daemon, Tap, free_port
import tls_pki

tap = Tap()
binary, postfix_instance = sys.argv[1], sys.argv[2]
if not shutil.which("postconf") or os.geteuid() != 0:
    tap.skip_all("Postfix is not installed or the test does not run as root")
work = tempfile.mkdtemp(prefix="ringmta-submission-pf-")
atexit.register(shutil.rmtree, work, True)
os.chmod(work, 0o755)  # Postfix drops to its own user
pki = tls_pki.make()  # its own directory: readable by Postfix (the CA file)
USER, PASSWORD = "alice@ours.test", "alice-secret-1"
line = subprocess.run([binary, "passwd", USER, "--scheme", "yescrypt"], input=PASSWORD + "\n",
                      capture_output=True, text=True, timeout=30).stdout.strip()
passwd_file = os.path.join(work, "users")
with open(passwd_file, "w") as f:
    f.write(line + "\n")
daemon = Daemon(binary, args=tls_pki.daemon_args(pki) + [
    "--auth-passwd-file", passwd_file, "--submission-listen", "127.0.0.1:0",
    "--mynetworks", "127.0.0.250/32", "--relayhost", "[127.0.0.1]:9",
    "--retry-schedule", "1h"]).start()
port_587 = int(daemon.events("listening_submission")[0]["detail"].rsplit(":", 1)[1])


def postfix(name, password):
    """A Postfix instance relaying to ringmta's submission port with these credentials."""
    directory = os.path.join(work, name)
    extra = os.path.join(work, f"{name}.cf")
    with open(extra, "w") as f:
        f.write("smtp_tls_security_level = encrypt\n"
                f"smtp_tls_CAfile = {pki['ca']}\n"
                "smtp_sasl_auth_enable = yes\n"
                "smtp_sasl_security_options = noanonymous\n"
                "smtp_sasl_tls_security_options = noanonymous\n"
                "smtp_sasl_mechanism_filter = plain\n")
        # Without a password: a table with no entry for this host (Postfix needs one).
        key = f"[127.0.0.1]:{port_587}" if password is not None else "[192.0.2.1]:25"
        f.write(f"smtp_sasl_password_maps = inline:{{ {key}={USER}:{password} }}\n")
    smtpd_port = free_port()
    subprocess.run(["bash", postfix_instance, "start", directory, str(smtpd_port),
                    str(port_587), extra], check=True, timeout=60)
    atexit.register(subprocess.run, ["bash", postfix_instance, "stop", directory], timeout=60)
    return directory, smtpd_port


def submit(smtpd_port, subject):
    with smtplib.SMTP("127.0.0.1", smtpd_port, timeout=30) as p:
        p.sendmail(USER, ["friend@elsewhere.test"],
                   f"Subject: {subject}\r\n\r\nsubmitted through postfix\r\n".encode())


def maillog(directory):
    path = os.path.join(directory, "maillog")
    return open(path).read() if os.path.exists(path) else ""


def wait_for(check, seconds=60):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and not check():
        time.sleep(0.2)
    return check()


# ---- the right password: Postfix logs in and the message arrives
good_dir, good_port = postfix("pf-good", PASSWORD)
submit(good_port, "good")
got = wait_for(lambda: [r for r in daemon.events("received") if r.get("login") == USER])
tap.ok(got and got[0].get("protocol") == "ESMTPSA" and got[0].get("helo") == "pf.test"
       and got[0].get("tls_version") in ("TLSv1.3", "TLSv1.2"),
       "Postfix (smtp_sasl_auth_enable) submits on 587: received as ESMTPSA with the login",
       got or maillog(good_dir)[-2000:])
tap.ok(wait_for(lambda: "status=sent" in maillog(good_dir)),
       "Postfix's log says the message was sent", maillog(good_dir)[-1500:])
auths = daemon.events("auth")
tap.ok(any(a.get("result") == "success" and a.get("login") == USER
           and a.get("mechanism") == "PLAIN" for a in auths),
       "ringmta's auth record: PLAIN, success, the login", auths)

# ---- a wrong password: 535, Postfix defers and keeps it; nothing arrives
before = len(daemon.events("received"))
bad_dir, bad_port = postfix("pf-bad", "not-the-password")
submit(bad_port, "bad")
tap.ok(wait_for(lambda: "535 5.7.8" in maillog(bad_dir)),
       "with a wrong password Postfix gets 535 5.7.8", maillog(bad_dir)[-1500:])
tap.ok("status=sent" not in maillog(bad_dir) and len(daemon.events("received")) == before,
       "and ringmta took nothing", daemon.events("received")[before:])

# ---- no credentials: the submission port refuses MAIL before AUTH
none_dir, none_port = postfix("pf-none", None)
submit(none_port, "none")
tap.ok(wait_for(lambda: "530 5.7.0" in maillog(none_dir)),
       "without credentials Postfix gets 530 5.7.0 (AUTH required on 587)",
       maillog(none_dir)[-1500:])
tap.ok(len(daemon.events("received")) == before, "and nothing was received")
daemon.stop()
tap.done()
