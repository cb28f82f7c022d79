#!/usr/bin/env python3
"""Inbound TLS against real clients: STARTTLS (RFC 3207) and implicit TLS (RFC 8314) with
openssl s_client, Python smtplib, swaks and nodemailer; STARTTLS command injection; the state
reset after TLS; Received: and log records; resumption; both certificate types; the version
floor; handshake timeouts and garbage; start-up errors for bad certificate files; Postfix with
smtp_tls_security_level=encrypt relaying into ringmta.
usage: test_tls.py RINGMTA POSTFIX_INSTANCE_SH"""
import json
import os
import shutil
import smtplib
import socket
import ssl
import subprocess
import sys
import tempfile
import time

from harness import (Conversation, Daemon, Tap, free_port, nodemailer_send, queued_id,
                     spool_cat, spool_list)
import tls_pki

tap = Tap()
binary, postfix_instance = sys.argv[1], sys.argv[2]
pki = tls_pki.make()
daemon = Daemon(binary, args=tls_pki.daemon_args(pki) + [
    "--tls-listen", "127.0.0.1:0", "--timeout-tls-handshake", "2s",
    "--relay-domains", "ours.test"]).start()
time.sleep(0.2)
implicit_port = int(daemon.events("listening_tls")[0]["detail"].rsplit(":", 1)[1])
context = ssl.create_default_context(cafile=pki["ca"])


def last_received(count):
    """The received log records once there are `count` of them (bounded wait)."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and len(daemon.events("received")) < count:
        time.sleep(0.05)
    return daemon.events("received")


def openssl(*args, data=b"QUIT\r\n", timeout=30):
    # -ign_eof: read until the server closes (after QUIT), not until stdin ends.
    out = subprocess.run(["openssl", "s_client", "-nocommands", "-ign_eof", "-CAfile",
                          pki["ca"], "-verify_hostname", "mx.test.example", *args], input=data,
                         capture_output=True, timeout=timeout)
    return out.stdout.decode(errors="replace") + out.stderr.decode(errors="replace")


# ---- STARTTLS with Python smtplib: offered, reset afterwards, Received: and the log
c = smtplib.SMTP("127.0.0.1", daemon.port, timeout=10)
c.ehlo("client.test")
tap.ok(c.has_extn("starttls"), "EHLO in plaintext offers STARTTLS")
code, _ = c.starttls(context=context)
tap.ok(code == 220, "STARTTLS is answered 220 and the handshake verifies (CA, host name)")
c.ehlo("client.test")
tap.ok(not c.has_extn("starttls"), "EHLO after TLS no longer offers STARTTLS (RFC 3207 §4.2)")
tap.ok(c.sock.version() == "TLSv1.3", "TLS 1.3 is negotiated", c.sock.version())
refused = c.sendmail("a@client.test", ["b@ours.test"], b"Subject: tls\r\n\r\nover TLS\r\n")
tap.ok(refused == {}, "a message is accepted over STARTTLS")
c.quit()
latest = last_received(1)
record = latest[-1] if latest else {}
tap.ok(record.get("tls_version") == "TLSv1.3" and record.get("tls_cipher") ==
       "TLS_AES_256_GCM_SHA384" and record.get("tls_client_certificate") is False and
       record.get("protocol") == "ESMTPS",
       "the received record carries TLS version, cipher, client certificate (none)", record)
stored = spool_cat(binary, daemon.spool, record.get("id", "")) or b""
header = stored.split(b"\r\n\r\n")[0]
tap.ok(b"(using TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits))" in header and
       b"with ESMTPS id" in header, "Received: says ESMTPS and the protocol and cipher", header)

# ---- a plaintext session after a TLS one: its Received: claims no TLS. A session's slot is
# reused for the next connection, and the TLS summary of the slot's previous session was kept
# (found by tools/sim once its clients used STARTTLS: docs/notes.md). Each shard reuses its
# freed slot, so a few connections reach the slot the TLS session above left on either shard.
plain_headers = []
for n in range(6):
    p = smtplib.SMTP("127.0.0.1", daemon.port, timeout=10)
    p.ehlo("plain.test")
    p.sendmail("a@plain.test", ["b@ours.test"], f"Subject: plain {n}\r\n\r\nplain\r\n".encode())
    p.quit()
    latest = last_received(2 + n)
    record = latest[-1] if latest else {}
    stored = spool_cat(binary, daemon.spool, record.get("id", "")) or b""
    plain_headers.append(stored.split(b"\r\n\r\n")[0])
tap.ok(len(plain_headers) == 6 and all(b"with ESMTP id" in h and b"using TLS" not in h
                                       for h in plain_headers),
       "plaintext sessions after a TLS one: Received: says ESMTP, no TLS comment",
       [h for h in plain_headers if b"using TLS" in h or b"with ESMTP id" not in h])

# ---- STARTTLS injection (CVE-2011-0411): commands pipelined behind STARTTLS are discarded
raw = Conversation(daemon.port)
raw.reply()
raw.command("EHLO client.test")
raw.send("STARTTLS\r\nMAIL FROM:<injected@client.test>\r\nRCPT TO:<x@ours.test>\r\n")
code, _ = raw.reply()
tap.ok(code == 220, "STARTTLS pipelined with MAIL and RCPT in one packet: 220")
tls_sock = context.wrap_socket(raw.sock, server_hostname="mx.test.example")
raw.sock, raw.buffer = tls_sock, b""
code, text = raw.command("EHLO client.test")
tap.ok(code == 250, "the first reply inside TLS answers EHLO (no leftover replies)", text)
code, text = raw.command("RCPT TO:<x@ours.test>")
tap.ok(code == 503, "the injected MAIL was never processed: RCPT needs MAIL first", text)
code, text = raw.command("MAIL FROM:<a@client.test>")
tap.ok(code == 250, "the session goes on normally inside TLS", text)
raw.close()

# ---- plaintext after STARTTLS's 220 is not TLS: the handshake fails, the connection closes
raw = Conversation(daemon.port)
raw.reply()
raw.command("EHLO client.test")
raw.command("STARTTLS")
raw.send("MAIL FROM:<late@client.test>\r\n")
tap.ok(raw.closed(), "plaintext sent after the 220 ends the connection")
raw.close()

# ---- implicit TLS (RFC 8314) with smtplib.SMTP_SSL
s = smtplib.SMTP_SSL("127.0.0.1", implicit_port, context=context, timeout=10)
code, banner = s.ehlo("client.test")
tap.ok(code == 250 and not s.has_extn("starttls"), "implicit TLS: EHLO, STARTTLS not offered")
refused = s.sendmail("a@client.test", ["b@ours.test"], b"Subject: 465\r\n\r\nimplicit\r\n")
s.quit()
record = last_received(2 + len(plain_headers))[-1]
tap.ok(refused == {} and record.get("protocol") == "ESMTPS" and record.get("tls_version"),
       "implicit TLS: a message is accepted, logged as ESMTPS with TLS details", record)

# ---- openssl s_client: STARTTLS and implicit, both certificate types, the version floor
out = openssl("-starttls", "smtp", "-connect", f"127.0.0.1:{daemon.port}")
tap.ok("Verify return code: 0 (ok)" in out and "TLSv1.3" in out,
       "openssl s_client -starttls smtp verifies the chain and host name", out[-1500:])
out = openssl("-connect", f"127.0.0.1:{implicit_port}", data=b"EHLO x\r\nQUIT\r\n")
tap.ok("Verify return code: 0 (ok)" in out and "250" in out and "221" in out,
       "openssl s_client -connect (implicit TLS) talks SMTP inside TLS", out[-1500:])
for sigalgs, expected in (("RSA-PSS+SHA256:RSA+SHA256", "rsaEncryption"),
                          ("ECDSA+SHA256", "id-ecPublicKey")):
    out = openssl("-starttls", "smtp", "-connect", f"127.0.0.1:{daemon.port}", "-tls1_2",
                  "-sigalgs", sigalgs, "-showcerts")
    cert = subprocess.run(["openssl", "x509", "-noout", "-text"], input=out.encode(),
                          capture_output=True).stdout.decode()
    tap.ok(expected in cert and "Verify return code: 0 (ok)" in out,
           f"the certificate follows the client's signature algorithms ({sigalgs})",
           out[-800:])
for old in ("-tls1", "-tls1_1"):
    out = openssl("-starttls", "smtp", "-connect", f"127.0.0.1:{daemon.port}", old)
    tap.ok("Cipher is (NONE)" in out or "alert" in out or "no protocols" in out,
           f"{old} is refused (minimum TLS 1.2)", out[-800:])

# ---- resumption with a TLS 1.3 ticket
sess = os.path.join(pki["dir"], "session.pem")
first = openssl("-starttls", "smtp", "-connect", f"127.0.0.1:{daemon.port}", "-sess_out", sess,
                data=b"EHLO x\r\nQUIT\r\n")
second = openssl("-starttls", "smtp", "-connect", f"127.0.0.1:{daemon.port}", "-sess_in", sess,
                 data=b"EHLO x\r\nQUIT\r\n")
tap.ok("Reused, TLSv1.3" in second, "a ticket from one connection resumes the next",
       second[-1500:])
metrics = daemon.metrics()
tap.ok(metrics.get('ringmta_tls_resumptions_total{direction="in"}', 0) >= 1 and
       metrics.get('ringmta_tls_handshakes_total{direction="in"}', 0) >= 5,
       "/metrics counts handshakes and resumptions",
       {k: v for k, v in metrics.items() if "tls" in k})

# ---- swaks --tls and nodemailer requireTLS
if shutil.which("swaks"):
    out = subprocess.run(["swaks", "--server", f"127.0.0.1:{daemon.port}", "--tls",
                          "--from", "a@client.test", "--to", "b@ours.test", "--helo",
                          "swaks.test"], capture_output=True, text=True, timeout=60)
    tap.ok(out.returncode == 0 and "TLS started" in out.stdout and "250 2.0.0 Ok: queued"
           in out.stdout, "swaks --tls delivers over STARTTLS", out.stdout[-1500:])
delivered, output = nodemailer_send(daemon.port, pki["ca"], "a@client.test", "b@ours.test")
tap.ok(delivered, "nodemailer with requireTLS delivers over STARTTLS", output)

# ---- stalled handshakes and garbage are bounded and counted
stalled = socket.create_connection(("127.0.0.1", implicit_port))
stalled.settimeout(15)
try:
    stalled_closed = stalled.recv(100) == b""
except OSError:
    stalled_closed = True
tap.ok(stalled_closed, "a handshake that never starts is closed by --timeout-tls-handshake")
garbage = socket.create_connection(("127.0.0.1", implicit_port))
garbage.sendall(b"EHLO plaintext.test\r\n" * 3)
garbage.settimeout(10)
try:
    while garbage.recv(4096):
        pass
    garbage_closed = True
except OSError:
    garbage_closed = True
time.sleep(0.3)
metrics = daemon.metrics()
tap.ok(garbage_closed and
       metrics.get('ringmta_tls_handshake_failures_total{direction="in",reason="timeout"}', 0) >= 1
       and metrics.get('ringmta_tls_handshake_failures_total{direction="in",reason="protocol"}',
                       0) >= 1,
       "plaintext on the implicit port fails the handshake; failures counted by reason",
       {k: v for k, v in metrics.items() if "fail" in k})
tap.ok(any(e.get("reason") == "protocol" for e in daemon.events("tls_failed")),
       "a failed handshake is logged with its reason")

# ---- Postfix with smtp_tls_security_level=encrypt relays into ringmta
if shutil.which("postconf") and os.geteuid() == 0:
    work = tempfile.mkdtemp(prefix="ringmta-pf-tls-")
    os.chmod(work, 0o755)  # Postfix drops to its own user
    extra = os.path.join(work, "extra.cf")
    with open(extra, "w") as f:
        f.write(f"smtp_tls_security_level = encrypt\nsmtp_tls_CAfile = {pki['ca']}\n"
                "smtp_tls_loglevel = 1\n")
    pf_port = free_port()
    subprocess.run(["bash", postfix_instance, "start", f"{work}/pf", str(pf_port),
                    str(daemon.port), extra], check=True, timeout=60)
    try:
        before = len(daemon.events("received"))
        with smtplib.SMTP("127.0.0.1", pf_port, timeout=30) as p:
            p.sendmail("a@client.test", ["via-postfix@ours.test"],
                       b"Subject: via postfix\r\n\r\nrelayed with encrypt\r\n")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and len(daemon.events("received")) == before:
            time.sleep(0.2)
        got = daemon.events("received")[before:]
        tap.ok(got and got[-1].get("helo") == "pf.test" and got[-1].get("protocol") == "ESMTPS"
               and got[-1].get("tls_version") in ("TLSv1.3", "TLSv1.2"),
               "Postfix (smtp_tls_security_level=encrypt) relays into ringmta over STARTTLS",
               got or open(f"{work}/pf/maillog").read()[-2000:])
    finally:
        subprocess.run(["bash", postfix_instance, "stop", f"{work}/pf"], timeout=60)
else:
    tap.ok(False, "Postfix is installed and the test runs as root")

daemon.stop()

# ---- start-up errors name the file (exit 2), never a crash
for args, needle in (
        (["--tls-cert", pki["ecdsa_cert"], "--tls-key", "/nonexistent/key.pem"],
         "/nonexistent/key.pem: cannot read"),
        (["--tls-cert", pki["rsa_cert"], "--tls-key", pki["ecdsa_key"]], "does not match"),
        (["--tls-cert", pki["ca"], "--tls-key", pki["ca"]], "not a PEM private key"),
        (["--tls-cert", pki["ecdsa_cert"]], "give one key per certificate"),
        (["--tls-listen", "127.0.0.1:0"], "needs --tls-cert")):
    out = subprocess.run([binary, "--allow-root", "--listen", "127.0.0.1:0", "--spool",
                          tempfile.mkdtemp(prefix="ringmta-spool-"), "--admin-listen",
                          "127.0.0.1:0", *args], capture_output=True, text=True, timeout=30)
    tap.ok(out.returncode == 2 and needle in out.stderr,
           f"start-up error: {needle}", out.stderr[-500:])
tap.done()
