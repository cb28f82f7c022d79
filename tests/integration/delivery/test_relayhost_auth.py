#!/usr/bin/env python3
"""SMTP AUTH out to a smarthost (--relayhost-auth) against a private Postfix that authenticates
through a private Dovecot (smtpd_sasl_type = dovecot, passwd-file made by `ringmta passwd`),
relays only for authenticated clients (loopback is not in its mynetworks) and delivers
final.test to a virtual mailbox. Postfix listens three times: 127.0.0.1 with STARTTLS and AUTH
only under TLS, 127.0.0.2 without TLS (AUTH in plaintext), 127.0.0.3 with STARTTLS and LOGIN
as the only mechanism.

  required/verify + TLS, PLAIN          -> delivered; Postfix logs sasl_method=PLAIN
  LOGIN only                            -> delivered; Postfix logs sasl_method=LOGIN
  wrong password (535)                  -> deferred with the 535 in the reply, not bounced;
                                           a reload with the right file delivers it
  opportunistic policy                  -> deferred, credentials never sent
  no TLS, --relayhost-auth-plaintext    -> delivered with AUTH in plaintext
  credentials file readable by others   -> exit 2 naming the file
usage: test_relayhost_auth.py RINGMTA DNS_SERVER_SCRIPT"""
import os
import shutil
import smtplib
import subprocess
import sys
import tempfile
import time

from harness import Daemon, Tap, free_port, start_dovecot
from peers import make_test_ca, wait_until

tap = Tap()
ringmta = sys.argv[1]
if not shutil.which("postfix") or not os.path.exists("/usr/sbin/dovecot"):
    tap.skip_all("postfix or dovecot (dovecot-core) is not installed")

work = tempfile.mkdtemp(prefix="ringmta-relayhost-auth-")
os.chmod(work, 0o755)  # Postfix's and Dovecot's own processes read below it
pki = make_test_ca(os.path.join(work, "pki"), ["smarthost.test", "127.0.0.1"])
port = free_port()
mailboxes = os.path.join(work, "mailboxes")
os.makedirs(mailboxes)
shutil.chown(mailboxes, "nobody", "nogroup")
USER, PASSWORD = "relay@smarthost.test", "s3cret:with colon"

# ---- a private Dovecot: auth service only, its passwd-file made by ringmta passwd
line = subprocess.run([ringmta, "passwd", USER, "--scheme", "sha512"], input=PASSWORD + "\n",
                      capture_output=True, text=True, timeout=30).stdout.strip()
dovecot, sasl_socket = start_dovecot(os.path.join(work, "dovecot"), [line])

extra_main_cf = os.path.join(work, "main.cf")
with open(extra_main_cf, "w") as f:
    f.write(f"""myhostname = smarthost.test
relayhost =
inet_interfaces = all
mynetworks = 192.0.2.0/32
virtual_mailbox_domains = final.test
virtual_mailbox_base = {mailboxes}
virtual_mailbox_maps = inline:{{ bob@final.test=bob }}
virtual_uid_maps = static:65534
virtual_gid_maps = static:65534
virtual_minimum_uid = 100
smtpd_relay_restrictions = permit_sasl_authenticated, reject
smtpd_recipient_restrictions = permit_sasl_authenticated, reject
smtpd_sasl_auth_enable = yes
smtpd_sasl_type = dovecot
smtpd_sasl_path = {sasl_socket}
smtpd_tls_security_level = may
smtpd_tls_auth_only = yes
smtpd_tls_chain_files = {pki["key"]}, {pki["cert"]}
""")
extra_master_cf = os.path.join(work, "master.cf")
with open(extra_master_cf, "w") as f:
    f.write(f"127.0.0.2:{port} inet n - n - - smtpd -o syslog_name=postfix-plain "
            "-o smtpd_tls_security_level=none -o smtpd_tls_auth_only=no\n"
            f"127.0.0.3:{port} inet n - n - - smtpd -o syslog_name=postfix-login "
            "-o smtpd_sasl_mechanism_filter=login\n")
instance = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tools",
                        "postfix_instance.sh")
maillog = os.path.join(work, "maillog")


def log_text():
    return open(maillog).read() if os.path.exists(maillog) else ""


def mailbox(user="bob"):
    path = os.path.join(mailboxes, user)
    return open(path, "rb").read() if os.path.exists(path) else b""


def credentials(name, password, mode=0o600):
    path = os.path.join(work, name)
    with open(path, "w") as f:
        f.write(f"# relay host login\n{USER}:{password}\n")
    os.chmod(path, mode)
    return path


def send(daemon, subject):
    with smtplib.SMTP("127.0.0.1", daemon.port, timeout=30) as client:
        client.sendmail("alice@client.test", ["bob@final.test"],
                        f"Subject: {subject}\r\n\r\nbody of {subject}\r\n".encode())


def relay(host, policy, creds, *extra):
    return Daemon(ringmta, shards=1, args=[
        "--relayhost", f"[{host}]:{port}", "--relayhost-auth", creds, "--tls-policy", policy,
        "--tls-ca", pki["ca"], "--retry-schedule", "1h", *extra]).start()


def deferred(daemon):
    return [e for e in daemon.events("deferred") if e.get("to") == "bob@final.test"]


good = credentials("good", PASSWORD)
started = subprocess.run([instance, "start", work, str(port), "9", extra_main_cf,
                          extra_master_cf], capture_output=True, text=True)
try:
    listening = wait_until(lambda: all(
        subprocess.run(["ss", "-Hltn", f"src {a}:{port}"], capture_output=True,
                       text=True).stdout.strip() for a in ("127.0.0.1", "127.0.0.2", "127.0.0.3")),
        15)
    if not tap.ok(started.returncode == 0 and listening and dovecot.poll() is None,
                  "a private Postfix with Dovecot SASL listens three times",
                  started.stderr + started.stdout + log_text()[-2000:]):
        tap.done()
    # Without credentials the smarthost refuses to relay: AUTH is what makes it work.
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as probe:
        probe.starttls()
        probe.ehlo("probe.test")
        probe.mail("alice@client.test")
        code, _ = probe.rcpt("bob@final.test")
    tap.ok(code == 554, "the smarthost refuses unauthenticated clients", code)

    # ---- verify + PLAIN
    daemon = relay("127.0.0.1", "verify", good)
    send(daemon, "plain-verify")
    tap.ok(wait_until(lambda: b"body of plain-verify" in mailbox(), 30),
           "verify: delivered through the smarthost after AUTH", log_text()[-2000:])
    tap.ok("sasl_method=PLAIN, sasl_username=relay@smarthost.test" in log_text(),
           "Postfix logged AUTH PLAIN as the configured user", log_text()[-1500:])
    delivered = [e for e in daemon.events("delivered") if e.get("to") == "bob@final.test"]
    tap.ok(delivered and delivered[0].get("tls_verified") is True,
           "the delivery went over verified TLS", delivered)
    tap.ok(daemon.stop() == 0, "clean exit")

    # ---- LOGIN when the server offers nothing else (required policy)
    daemon = relay("127.0.0.3", "required", good)
    send(daemon, "login-required")
    tap.ok(wait_until(lambda: b"body of login-required" in mailbox(), 30),
           "LOGIN only: delivered", log_text()[-2000:])
    tap.ok("sasl_method=LOGIN, sasl_username=relay@smarthost.test" in log_text(),
           "Postfix logged AUTH LOGIN", log_text()[-1500:])
    daemon.stop()

    # ---- a wrong password: deferred with the 535, never bounced; a reload fixes it
    wrong = credentials("wrong", "not the password")
    daemon = relay("127.0.0.1", "required", wrong)
    send(daemon, "wrong-password")
    refused = wait_until(lambda: deferred(daemon), 30)
    reply = refused[0].get("reply", "") if refused else ""
    tap.ok(reply.startswith("454 4.7.8 ") and "said to AUTH: 535" in reply,
           "535 from the smarthost: deferred 4.7.x with the server's reply", refused)
    tap.ok(not daemon.events("bounced") and b"body of wrong-password" not in mailbox(),
           "nothing bounced, nothing delivered", daemon.events("bounced"))
    with open(wrong, "w") as f:
        f.write(f"{USER}:{PASSWORD}\n")
    reload_code, reload_body = daemon.admin("POST", "/reload")  # what SIGHUP does, answered
    code, body = daemon.admin("POST", "/queue/final.test/retry")
    tap.ok(reload_code == 200 and wait_until(lambda: b"body of wrong-password" in mailbox(), 30),
           "after a reload with the right password the deferred message is delivered",
           (reload_code, reload_body, code, body, log_text()[-1500:]))
    daemon.stop()

    # ---- opportunistic: the credentials are never sent, the mail waits
    daemon = relay("127.0.0.1", "opportunistic", good)
    send(daemon, "opportunistic")
    waiting = wait_until(lambda: deferred(daemon), 30)
    reply = waiting[0].get("reply", "") if waiting else ""
    tap.ok(reply.startswith("454 4.7.0 ") and "required or verify" in reply,
           "opportunistic TLS policy: deferred, the reason says why", waiting)
    daemon.stop()

    # ---- no TLS at all: refused unless forced
    daemon = relay("127.0.0.2", "none", good)
    send(daemon, "plaintext-refused")
    waiting = wait_until(lambda: deferred(daemon), 30)
    tap.ok(waiting and "required or verify" in waiting[0].get("reply", ""),
           "policy none: deferred, no password in plaintext", waiting)
    plain_log = [x for x in log_text().splitlines() if "postfix-plain/smtpd" in x]
    tap.ok(not any("sasl_method" in x or "auth=" in x and "auth=0" not in x for x in plain_log),
           "the plaintext server never saw AUTH", "\n".join(plain_log[-5:]))
    daemon.stop()
    daemon = relay("127.0.0.2", "none", good, "--relayhost-auth-plaintext")
    send(daemon, "plaintext-forced")
    tap.ok(wait_until(lambda: b"body of plaintext-forced" in mailbox(), 30),
           "--relayhost-auth-plaintext: delivered with AUTH over plaintext", log_text()[-1500:])
    daemon.stop()

    # ---- the file's mode is checked at start
    loose = credentials("loose", PASSWORD, 0o644)
    bad = subprocess.run([ringmta, "--listen", "127.0.0.1:0", "--spool",
                          os.path.join(work, "spool-bad"), "--relayhost", f"[127.0.0.1]:{port}",
                          "--relayhost-auth", loose, "--allow-root"],
                         capture_output=True, text=True, timeout=30)
    tap.ok(bad.returncode == 2 and loose in bad.stderr and "relay.relayhost_auth" in bad.stderr
           and PASSWORD not in bad.stderr,
           "a group/world readable credentials file exits 2 naming it", bad.stderr)
    alone = subprocess.run([ringmta, "--listen", "127.0.0.1:0", "--spool",
                            os.path.join(work, "spool-bad"), "--relayhost-auth", good,
                            "--allow-root"], capture_output=True, text=True, timeout=30)
    tap.ok(alone.returncode == 2 and "need a --relayhost" in alone.stderr,
           "credentials without --relayhost exit 2", alone.stderr)
finally:
    subprocess.run([instance, "stop", work], capture_output=True)
    dovecot.terminate()
    dovecot.wait(15)
    time.sleep(0.5)
    shutil.rmtree(work, ignore_errors=True)
tap.done()
