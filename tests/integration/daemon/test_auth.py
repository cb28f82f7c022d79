#!/usr/bin/env python3
"""SMTP AUTH (RFC 4954) and submission (RFC 6409, RFC 8314) against real clients: Python smtplib
login(), swaks --auth PLAIN/LOGIN --tls, nodemailer with auth, openssl s_client on 465. AUTH only
after TLS (538 5.7.11 before), 535 5.7.8 for bad credentials, 530 5.7.0 for MAIL before AUTH on a
submission port, authenticated relaying, the sender map (553 5.7.1), ESMTPSA in Received:, log
records with the login and never the password, brute-force delays and lockout (421, 454),
`ringmta passwd`, the passwd file reloaded on SIGHUP, --proxy-trusted (a PROXY header from an
untrusted peer closes the connection) and XCLIENT refused without --xclient-trusted.
usage: test_auth.py RINGMTA"""
import atexit
import base64
import os
import shutil
import signal
import smtplib
import socket
import ssl
import subprocess
import sys
import tempfile
import time

from harness import (Conversation, Daemon, Tap, nodemailer_send, queued_id, spool_cat,
                     spool_list, start_dovecot, wait_until)
import tls_pki

tap = Tap()
binary = sys.argv[1]
pki = tls_pki.make()
work = tempfile.mkdtemp(prefix="ringmta-auth-")
atexit.register(shutil.rmtree, work, True)
context = ssl.create_default_context(cafile=pki["ca"])
PASSWORDS = {"alice@ours.test": "alice secret 1", "bob": "b0b-pw", "carol@other.test": "c4rol"}


def passwd_line(user, password, scheme):
    out = subprocess.run([binary, "passwd", user, "--scheme", scheme], input=password + "\n",
                         capture_output=True, text=True, timeout=30)
    return out.returncode, out.stdout.strip(), out.stderr


# ---- ringmta passwd: one line per user, each scheme
lines = []
for (user, password), scheme in zip(PASSWORDS.items(), ["yescrypt", "bcrypt", "sha512"]):
    code, line, err = passwd_line(user, password, scheme)
    prefix = {"yescrypt": "$y$", "bcrypt": "$2b$", "sha512": "$6$"}[scheme]
    tap.ok(code == 0 and line.startswith(f"{user}:{prefix}"),
           f"ringmta passwd makes a {scheme} line", line + err)
    lines.append(line)
code, _, err = passwd_line("bad:user", "pw", "yescrypt")
tap.ok(code == 2 and "usage" in err, "ringmta passwd refuses a user name with ':'", err)
out = subprocess.run([binary, "passwd", "someone"], input="", capture_output=True, text=True,
                     timeout=30)
tap.ok(out.returncode == 2 and "no password" in out.stderr, "ringmta passwd needs a password",
       out.stderr)
passwd_file = os.path.join(work, "users")
with open(passwd_file, "w") as f:
    f.write("# test users\n" + "\n".join(lines) + "\n")
sender_map = os.path.join(work, "senders")
with open(sender_map, "w") as f:
    f.write("@ours.test   bob\n")

# ---- a bad passwd file is a start-up error naming the key
bad_file = os.path.join(work, "bad-users")
with open(bad_file, "w") as f:
    f.write("dave:plaintext-password\n")
bad = subprocess.run([binary, "--listen", "127.0.0.1:0", "--spool", os.path.join(work, "s0"),
                      "--auth-passwd-file", bad_file, "--allow-root"] + tls_pki.daemon_args(pki),
                     capture_output=True, text=True, timeout=30)
tap.ok(bad.returncode == 2 and "auth.passwd_file" in bad.stderr and "bad-users:1" in bad.stderr,
       "a passwd file with a non-hash exits 2 naming the key, file and line", bad.stderr)

daemon = Daemon(binary, args=tls_pki.daemon_args(pki) + [
    "--auth-passwd-file", passwd_file, "--auth-sender-map", sender_map,
    "--submission-listen", "127.0.0.1:0", "--submissions-listen", "127.0.0.1:0",
    "--mynetworks", "127.0.0.250/32", "--relay-domains", "ours.test",
    "--auth-max-failures", "5", "--auth-lockout", "120s"]).start()
time.sleep(0.2)
port_587 = int(daemon.events("listening_submission")[0]["detail"].rsplit(":", 1)[1])
port_465 = int(daemon.events("listening_submissions")[0]["detail"].rsplit(":", 1)[1])


def smtp(port=None, source="127.0.0.1", tls=True):
    c = smtplib.SMTP("127.0.0.1", port or daemon.port, timeout=30,
                     source_address=(source, 0))
    c.ehlo("client.test")
    if tls:
        c.starttls(context=context)
        c.ehlo("client.test")
    return c


def plain(user, password):
    return base64.b64encode(f"\0{user}\0{password}".encode()).decode()


# ---- port 25: AUTH only after TLS
c = smtp(tls=False)
tap.ok(not c.has_extn("auth"), "plaintext EHLO does not offer AUTH")
code, text = c.docmd("AUTH", "PLAIN " + plain("alice@ours.test", PASSWORDS["alice@ours.test"]))
tap.ok(code == 538 and b"5.7.11" in text, "AUTH before STARTTLS: 538 5.7.11", (code, text))
c.quit()
c = smtp()
tap.ok("PLAIN" in c.esmtp_features.get("auth", "") and "LOGIN" in c.esmtp_features["auth"],
       "EHLO after STARTTLS offers AUTH PLAIN LOGIN", c.esmtp_features)
try:
    c.login("alice@ours.test", "wrong password")
    tap.ok(False, "a wrong password is refused")
except smtplib.SMTPAuthenticationError as e:
    tap.ok(e.smtp_code == 535 and b"5.7.8" in e.smtp_error, "a wrong password: 535 5.7.8",
           e.smtp_error)
code, text = c.login("alice@ours.test", PASSWORDS["alice@ours.test"])
tap.ok(code == 235, "smtplib login() with the right password: 235", text)
refused = c.sendmail("alice@ours.test", ["x@elsewhere.test"],
                     b"Subject: auth\r\n\r\nrelayed for an authenticated user\r\n")
tap.ok(refused == {}, "an authenticated client may relay to any domain")
code, text = c.docmd("MAIL", "FROM:<mallory@ours.test>")
tap.ok(code == 553 and b"5.7.1" in text, "a sender the login does not own: 553 5.7.1",
       (code, text))
c.quit()

# The log is written by its own thread (a stalled reader never stalls mail): the record may
# reach the file a moment after the 250, so wait for it (bounded).
records = wait_until(lambda: [r for r in daemon.events("received") if r.get("login")], 30) or []
tap.ok(records and records[-1].get("login") == "alice@ours.test"
       and records[-1].get("protocol") == "ESMTPSA",
       "the received record names the login and ESMTPSA", records[-1:])
stored = (spool_cat(binary, daemon.spool, records[-1]["id"]) if records else None) or b""
tap.ok(b"with ESMTPSA" in stored.split(b"\r\n\r\n")[0], "Received: says ESMTPSA", stored[:400])
auths = daemon.events("auth")
tap.ok(any(a.get("result") == "failure" and a.get("login") == "alice@ours.test" for a in auths)
       and any(a.get("result") == "success" and a.get("mechanism") == "PLAIN" for a in auths),
       "auth records for the failure and the success, with login and mechanism", auths)

# ---- unauthenticated: no relaying; the map lets bob use any @ours.test, nothing else
c = smtp()
c.docmd("MAIL", "FROM:<a@client.test>")
code, text = c.docmd("RCPT", "TO:<x@elsewhere.test>")
tap.ok(code == 554, "without AUTH, relaying is refused", (code, text))
c.quit()
c = smtp()
c.login("bob", PASSWORDS["bob"])
code, _ = c.docmd("MAIL", "FROM:<anyone@ours.test>")
tap.ok(code == 250, "the sender map's @ours.test wildcard lets bob use any address there")
c.docmd("RSET")
code, _ = c.docmd("MAIL", "FROM:<bob@other.test>")
tap.ok(code == 553, "but not an address of another domain")
c.quit()

# ---- swaks, LOGIN and PLAIN, over STARTTLS
if shutil.which("swaks"):
    for mechanism in ("PLAIN", "LOGIN"):
        out = subprocess.run(["swaks", "--server", f"127.0.0.1:{daemon.port}", "--tls",
                              "--auth", mechanism, "--auth-user", "carol@other.test",
                              "--auth-password", PASSWORDS["carol@other.test"],
                              "--from", "carol@other.test", "--to", "y@elsewhere.test",
                              "--helo", "swaks.test"], capture_output=True, text=True,
                             timeout=60)
        tap.ok(out.returncode == 0 and "235 2.7.0" in out.stdout and
               "250 2.0.0 Ok: queued" in out.stdout,
               f"swaks --auth {mechanism} --tls relays", out.stdout[-1500:])
else:
    tap.ok(False, "swaks is installed")

# ---- submission (587): STARTTLS, then AUTH before MAIL
c = smtp(port_587, tls=False)
code, text = c.docmd("MAIL", "FROM:<alice@ours.test>")
tap.ok(code == 530 and b"5.7.0" in text, "587 without AUTH: MAIL gets 530 5.7.0", (code, text))
c.starttls(context=context)
c.ehlo("client.test")
code, text = c.docmd("MAIL", "FROM:<alice@ours.test>")
tap.ok(code == 530, "587 with TLS but no AUTH: still 530", (code, text))
c.login("alice@ours.test", PASSWORDS["alice@ours.test"])
refused = c.sendmail("alice@ours.test", ["z@elsewhere.test"], b"Subject: 587\r\n\r\nhi\r\n")
tap.ok(refused == {}, "587 after STARTTLS and AUTH: accepted")
c.quit()

# ---- submissions (465): implicit TLS with smtplib and openssl s_client
unverified_name = ssl.create_default_context(cafile=pki["ca"])
unverified_name.check_hostname = False  # smtplib checks the name it connected to: 127.0.0.1
c = smtplib.SMTP_SSL("127.0.0.1", port_465, timeout=30, context=unverified_name)
c.ehlo("client.test")
code, text = c.docmd("MAIL", "FROM:<alice@ours.test>")
tap.ok(code == 530, "465 without AUTH: 530", (code, text))
c.login("alice@ours.test", PASSWORDS["alice@ours.test"])
tap.ok(c.sendmail("alice@ours.test", ["w@elsewhere.test"], b"Subject: 465\r\n\r\nhi\r\n") == {},
       "465 (implicit TLS) after AUTH: accepted")
c.quit()
session = (f"EHLO tb.test\r\nAUTH PLAIN {plain('alice@ours.test', PASSWORDS['alice@ours.test'])}"
           "\r\nMAIL FROM:<alice@ours.test>\r\nRCPT TO:<v@elsewhere.test>\r\nDATA\r\n"
           "Subject: s_client\r\n\r\nhi\r\n.\r\nQUIT\r\n").encode()
out = subprocess.run(["openssl", "s_client", "-quiet", "-ign_eof", "-CAfile", pki["ca"],
                      "-verify_hostname", "mx.test.example", "-connect",
                      f"127.0.0.1:{port_465}"], input=session, capture_output=True,
                     timeout=60)
text = out.stdout.decode(errors="replace")
tap.ok("235 2.7.0" in text and "250 2.0.0 Ok: queued" in text,
       "openssl s_client on 465 (a Thunderbird-like client) authenticates and sends", text)

# ---- nodemailer with auth on 587
delivered, output = nodemailer_send(port_587, pki["ca"], "team@ours.test", "u@elsewhere.test",
                                    auth=("bob", PASSWORDS["bob"]))
tap.ok(delivered, "nodemailer with auth on 587 delivers", output)

# ---- brute force: three failures end the session (421), five lock the address (454)
attacker = "127.0.0.77"
c = smtp(source=attacker)
codes = []
for guess in range(3):
    code, _ = c.docmd("AUTH", "PLAIN " + plain("alice@ours.test", f"guess {guess}"))
    codes.append(code)
tap.ok(codes == [535, 535, 421], "the third failure in a session gets 421 and a close", codes)
c.close()
c = smtp(source=attacker)
codes = [c.docmd("AUTH", "PLAIN " + plain("bob", f"guess {g}"))[0] for g in range(2)]
code, text = c.docmd("AUTH", "PLAIN " + plain("bob", PASSWORDS["bob"]))
tap.ok(codes == [535, 535] and code == 454 and b"4.7.0" in text,
       "after 5 failures the address is locked out: 454 4.7.0 even with the right password",
       (codes, code, text))
c.close()
c = smtp(source="127.0.0.78")
code, _ = c.docmd("AUTH", "PLAIN " + plain("bob", PASSWORDS["bob"]))
tap.ok(code == 235, "another address is not locked out", code)
c.quit()
metrics = daemon.metrics()
tap.ok(metrics.get('ringmta_auth_total{result="locked"}', 0) >= 1 and
       metrics.get('ringmta_auth_total{result="failure"}', 0) >= 6 and
       metrics.get('ringmta_auth_total{result="success"}', 0) >= 5,
       "/metrics counts successes, failures and lockouts",
       {k: v for k, v in metrics.items() if "auth" in k})

# ---- SIGHUP reloads the passwd file; a broken one is refused and the old one stays
code, new_line, _ = passwd_line("erin@ours.test", "erin-pw", "sha512")
with open(passwd_file, "a") as f:
    f.write(new_line + "\n")
daemon.process.send_signal(signal.SIGHUP)
deadline = time.monotonic() + 10
while time.monotonic() < deadline and not daemon.events("reloaded"):
    time.sleep(0.05)
c = smtp()
code, _ = c.docmd("AUTH", "PLAIN " + plain("erin@ours.test", "erin-pw"))
tap.ok(code == 235, "a user added to the passwd file logs in after SIGHUP", code)
c.quit()
with open(passwd_file, "a") as f:
    f.write("broken line without colon\n")
daemon.process.send_signal(signal.SIGHUP)
deadline = time.monotonic() + 10
while time.monotonic() < deadline and not daemon.events("reload_rejected"):
    time.sleep(0.05)
rejected = daemon.events("reload_rejected")
tap.ok(rejected and "auth.passwd_file" in rejected[-1].get("error", ""),
       "a broken passwd file rejects the reload, naming the key", rejected)
c = smtp()
code, _ = c.docmd("AUTH", "PLAIN " + plain("erin@ours.test", "erin-pw"))
tap.ok(code == 235, "the running users stay after a rejected reload", code)
c.quit()

# ---- relay matrix: classic open-relay probes from outside mynetworks. Unauthenticated, a
# recipient is taken only when its domain (what delivery will use) is ours.test; authenticated as
# a user of another domain, the client may relay but may not claim our domain's senders.
PROBES = [
    "user@elsewhere.test", "user%elsewhere.test@ours.test", "elsewhere.test!user@ours.test",
    "\"user@elsewhere.test\"@ours.test", "@ours.test:user@elsewhere.test",
    "@ours.test,@mx.test.example:user@elsewhere.test", "user@elsewhere.test.",
    "user@ours.test.", "user@OURS.TEST", "User@Ours.Test", "user@ELSEWHERE.test",
    "user@[127.0.0.1]", "user@[192.0.2.1]", "user@[IPv6:::1]", "user@xn--urs-0za.test",
    "user@ours.test.elsewhere.test", "user@elsewhere.test@ours.test", "user@ours.test@elsewhere.test",
]


def domain_of(address):
    return address.rsplit("@", 1)[-1].lower().rstrip(".")


c = smtp(source="127.0.0.60")
c.docmd("MAIL", "FROM:<probe@client.test>")
taken, answers = [], {}
for probe in PROBES:
    code, text = c.docmd("RCPT", f"TO:<{probe}>")
    answers[probe] = code
    if code == 250:
        taken.append(probe)
c.command_encoding = "utf-8"
code, text = c.docmd("RCPT", "TO:<user@оurs.test>")  # Cyrillic о: not SMTPUTF8, not ours
answers["idn look-alike"] = code
idn = smtp(source="127.0.0.62")
idn.command_encoding = "utf-8"
idn.docmd("MAIL", "FROM:<probe@client.test> SMTPUTF8")
code2, text2 = idn.docmd("RCPT", "TO:<user@оurs.test>")
idn.quit()
tap.ok(code >= 500 and code2 >= 500,
       "an IDN look-alike of our domain is refused, with and without SMTPUTF8",
       (code, text, code2, text2))
tap.ok(all(domain_of(p) == "ours.test" for p in taken) and "user@OURS.TEST" in taken,
       "unauthenticated: only recipients at ours.test are taken (case variants included)",
       answers)
if taken:
    code, text = c.data(b"Subject: probes\r\n\r\nrelay matrix\r\n")
    queued = [m for m in spool_list(binary, daemon.spool) if m["id"] == queued_id(text.decode())]
    addresses = [r["address"] for m in queued for r in m["recipients"]]
    tap.ok(queued and all(domain_of(a) == "ours.test" for a in addresses),
           "and every queued recipient's domain is ours.test (no percent hack, bang path, "
           "quoted @ or source route escapes)", addresses)
c.quit()
# An XCLIENT claim from an untrusted peer (no --xclient-trusted: nobody may): an address in
# mynetworks and a login are both refused, and relaying stays closed.
for source in ("127.0.0.63", "127.0.0.1"):
    c = smtp(source=source)
    offered = c.has_extn("xclient")
    code, text = c.docmd("XCLIENT", "ADDR=127.0.0.250 LOGIN=alice@ours.test")
    c.docmd("MAIL", "FROM:<alice@ours.test>")
    code2, _ = c.docmd("RCPT", "TO:<x@elsewhere.test>")
    tap.ok(not offered and code == 550 and b"5.7.0" in text and code2 == 554,
           f"XCLIENT claim from {source} (untrusted): 550 5.7.0, relaying still refused",
           (offered, code, text, code2))
    c.quit()
c = smtp(source="127.0.0.61")
c.login("carol@other.test", PASSWORDS["carol@other.test"])
claims = {}
for sender in ("postmaster@ours.test", "alice@ours.test", "carol@OTHER.TEST.evil.test",
               "carol@other.test.", "\"carol@other.test\"@evil.test"):
    code, _ = c.docmd("MAIL", f"FROM:<{sender}>")
    claims[sender] = code
    c.docmd("RSET")
tap.ok(all(code >= 500 for code in claims.values()),
       "authenticated as a user of another domain: no sender but its own is accepted", claims)
code, _ = c.docmd("MAIL", "FROM:<carol@other.test>")
code2, _ = c.docmd("RCPT", "TO:<anyone@elsewhere.test>")
tap.ok(code == 250 and code2 == 250, "its own sender is authorised and may relay", (code, code2))
c.quit()

# ---- never a password in the log
log_text = "\n".join(daemon.stdout_lines + daemon.stderr_lines)
leaked = [p for p in list(PASSWORDS.values()) + ["erin-pw", "guess 0"] if p in log_text]
tap.ok(not leaked, "no password appears in any log record", leaked)
daemon.stop()

# ---- plaintext AUTH on loopback only when the operator says so
with open(passwd_file, "w") as f:  # without the broken line of the reload test
    f.write("\n".join(lines) + "\n")
loop = Daemon(binary, args=["--auth-passwd-file", passwd_file,
                            "--auth-plaintext-loopback"]).start()
c = smtplib.SMTP("127.0.0.1", loop.port, timeout=30)
c.ehlo("client.test")
tap.ok(c.has_extn("auth"), "--auth-plaintext-loopback offers AUTH without TLS to loopback")
code, _ = c.login("bob", PASSWORDS["bob"])
tap.ok(code == 235, "and a loopback client logs in without TLS", code)
c.quit()
loop.stop()

# ---- --auth-dovecot: a private Dovecot (never the system one) checks the logins
if shutil.which("dovecot") or os.path.exists("/usr/sbin/dovecot"):
    os.chmod(work, 0o755)  # Dovecot's auth process runs as its own user and reads the file
    dovecot, socket_path = start_dovecot(
        os.path.join(work, "dovecot"), [passwd_line("dana@ours.test", "dovecot-pw", "bcrypt")[1]])
    dove = Daemon(binary, args=tls_pki.daemon_args(pki) + [
        "--auth-dovecot", socket_path, "--mynetworks", "127.0.0.250/32"]).start()
    c = smtplib.SMTP("127.0.0.1", dove.port, timeout=30)
    c.ehlo("client.test")
    c.starttls(context=context)
    c.ehlo("client.test")
    try:
        c.login("dana@ours.test", "not it")
        tap.ok(False, "Dovecot refuses a wrong password: 535")
    except smtplib.SMTPAuthenticationError as e:
        tap.ok(e.smtp_code == 535, "Dovecot refuses a wrong password: 535", e.smtp_error)
    code, _ = c.login("dana@ours.test", "dovecot-pw")
    tap.ok(code == 235, "--auth-dovecot: a login Dovecot accepts gets 235", code)
    tap.ok(c.sendmail("dana@ours.test", ["q@elsewhere.test"], b"Subject: d\r\n\r\nhi\r\n") == {},
           "and may relay")
    c.quit()
    dovecot.terminate()
    dovecot.wait(15)
    c = smtp(dove.port)
    code, text = c.docmd("AUTH", "PLAIN " + plain("dana@ours.test", "dovecot-pw"))
    tap.ok(code == 454 and b"4.7.0" in text, "Dovecot gone: 454 4.7.0, not 535", (code, text))
    c.quit()
    dove.stop()
else:
    tap.ok(False, "dovecot (Debian dovecot-core) is installed")

# ---- PROXY protocol: only from --proxy-trusted peers (else: an open relay)
proxy = Daemon(binary, args=["--proxy-protocol", "--proxy-trusted", "127.0.0.1/32",
                             "--mynetworks", "127.0.0.9/32"]).start()


def proxied(source, claimed):
    s = socket.socket()
    s.bind((source, 0))
    s.connect(("127.0.0.1", proxy.port))
    s.settimeout(10)
    s.sendall(f"PROXY TCP4 {claimed} 127.0.0.1 5555 25\r\n".encode())
    c = Conversation.__new__(Conversation)
    c.sock, c.buffer = s, b""
    return c


c = proxied("127.0.0.1", "127.0.0.9")
code, _ = c.reply()
c.command("EHLO trusted.test")
c.command("MAIL FROM:<a@client.test>")
code, text = c.command("RCPT TO:<b@elsewhere.test>")
tap.ok(code == 250, "a PROXY header from a trusted peer is believed (relay from 127.0.0.9)",
       text)
c.close()
c = proxied("127.0.0.5", "127.0.0.9")
tap.ok(c.closed(), "a PROXY header from an untrusted peer: the connection is closed")
deadline = time.monotonic() + 5  # an idle shard hands its records over within a second
while time.monotonic() < deadline and not [
        d for d in proxy.events("disconnect") if "untrusted" in d.get("reason", "")]:
    time.sleep(0.05)
closes = [d for d in proxy.events("disconnect") if "untrusted" in d.get("reason", "")]
tap.ok(closes and closes[-1].get("client", "").startswith("127.0.0.5"),
       "the disconnect record names the untrusted peer and why", proxy.events("disconnect"))
tap.ok(proxy.metrics().get("ringmta_proxy_untrusted_total", 0) >= 1,
       "/metrics counts untrusted PROXY peers")
proxy.stop()
tap.done()
