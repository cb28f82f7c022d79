#!/usr/bin/env python3
"""DKIM signing end to end, checked by two independent verifiers.

ringmta signs mail from mynetworks with keys made by `ringmta dkim keygen` (RSA-2048 and
Ed25519 for relaxed.test with relaxed/relaxed, the same pair for simple.test with
simple/simple) and relays it to ringmta-sink instances: one offers CHUNKING (small bodies go
out as BDAT, large ones spliced after DATA), one does not (DATA). Every saved message must
verify with dkimpy (its Python API, DNS answered from the generated records) and with OpenDKIM
(`opendkim -t` with TestPublicKeys): a corpus of hard cases, sent with DATA and with BDAT.
Also: mail from outside mynetworks is not signed; what cannot be signed is refused, never
passed on unsigned; a bad key stops the start-up (exit 2); signed mail queued across a restart
keeps its signature.
usage: test_dkim.py RINGMTA RINGMTA_SINK"""
import os
import re
import socket
import shutil
import smtplib
import subprocess
import sys
import tempfile

from harness import Conversation, Daemon, Tap, free_port
from peers import Sink, wait_until

tap = Tap()
ringmta, sink_binary = sys.argv[1], sys.argv[2]
try:
    import dkim  # python3-dkim, from /usr/bin/python3
except ImportError:
    tap.skip_all("python3-dkim is not installed (tools/bootstrap)")
opendkim = shutil.which("opendkim") or "/usr/sbin/opendkim"
if not os.path.exists(opendkim):
    tap.skip_all("opendkim is not installed (tools/bootstrap)")

work = tempfile.mkdtemp(prefix="ringmta-dkim-")
records = {}  # DNS name -> TXT value


key_files = {}


def keygen(domain, selector, algorithm):
    path = os.path.join(work, f"{domain}.{selector}.key")
    out = subprocess.run([ringmta, "dkim", "keygen", "--domain", domain, "--selector", selector,
                          "--algorithm", algorithm, "--out", path],
                         capture_output=True, text=True, timeout=60)
    record = out.stdout.split("TXT (", 1)[1].split(")", 1)[0] if "TXT (" in out.stdout else ""
    records[f"{selector}._domainkey.{domain}"] = "".join(re.findall(r'"([^"]*)"', record))
    key_files[(domain, selector)] = path
    return out.returncode == 0 and os.stat(path).st_mode & 0o777 == 0o600, path


keys_ok = True
config = os.path.join(work, "ringmta.toml")
with open(config, "w") as f:
    for domain, canonicalization in (("relaxed.test", "relaxed/relaxed"),
                                     ("simple.test", "simple/simple")):
        for selector, algorithm in (("rsa", "rsa"), ("ed", "ed25519")):
            ok, path = keygen(domain, selector, algorithm)
            keys_ok = keys_ok and ok
            f.write(f'[[dkim]]\ndomain = "{domain}"\nselector = "{selector}"\n'
                    f'key_file = "{path}"\ncanonicalization = "{canonicalization}"\n\n')
tap.ok(keys_ok and len(records) == 4 and all(v.startswith("v=DKIM1; k=") for v in
                                              records.values()),
       "ringmta dkim keygen writes 0600 keys and prints their TXT records", records)
keys_file = os.path.join(work, "opendkim-keys.txt")
with open(keys_file, "w") as f:
    for name, value in records.items():
        f.write(f"{name} {value}\n")
opendkim_conf = os.path.join(work, "opendkim.conf")
with open(opendkim_conf, "w") as f:
    f.write(f"Mode v\nTestPublicKeys {keys_file}\nAlwaysAddARHeader yes\nAuthservID verifier\n")


def dkimpy_results(message):
    """dkimpy's verdict for each DKIM-Signature field, top first."""
    head = message.split(b"\r\n\r\n", 1)[0]
    count = len(re.findall(rb"(?im)^dkim-signature:", head))
    verifier = dkim.DKIM(message)
    lookup = lambda name, timeout=5: records.get(name.decode().rstrip("."), "").encode()
    return [verifier.verify(idx=i, dnsfunc=lookup) for i in range(count)]


def opendkim_control(message, domain):
    """OpenDKIM's verdict on dkimpy's own RSA signature of the same message: its test mode
    (-t) reads the file itself and loses some exact whitespace (simple header
    canonicalization) and an unterminated last line (relaxed); where it rejects dkimpy's
    signature as well, a disagreement says nothing about ours."""
    canon = b"simple" if domain.startswith("simple") else b"relaxed"
    bare = re.sub(rb"(?ims)^DKIM-Signature:.*?\r\n(?=[^ \t])", b"", message, count=2)
    signature = dkim.sign(bare, b"rsa", domain.encode(),
                          open(key_files[(domain, "rsa")], "rb").read(),
                          canonicalize=(canon, canon), include_headers=[b"from", b"to", b"subject"])
    return opendkim_results(signature + bare)


def opendkim_results(message):
    """The dkim= results of OpenDKIM's Authentication-Results for the message."""
    path = os.path.join(work, "check.eml")
    with open(path, "wb") as f:
        f.write(message)
    out = subprocess.run([opendkim, "-x", opendkim_conf, "-t", path, "-vvv"],
                         capture_output=True, text=True, timeout=120)
    return re.findall(r"dkim=(\w+)", out.stdout + out.stderr)


big = b"".join(b"line %07d of a large message, long enough to matter %s\r\n" % (i, b"x" * 20)
               for i in range(10 * 1024 * 1024 // 80))
# name -> (headers after From:, body); None body = no empty line at all (headers only).
corpus = {
    "plain": (b"To: bob@DEST\r\nSubject: plain\r\n", b"Hello.\r\n"),
    "folded-long": (b"To: bob@DEST,\r\n  carol@DEST,\r\n\tdave@DEST\r\nSubject: a folded\r\n"
                    b"  subject\r\n\t that goes on\r\nX-Long: " + b"v" * 900 + b"\r\n",
                    b"body\r\n"),
    "repeated": (b"To: bob@DEST\r\nSubject: first\r\nSubject: second\r\nX-Dup: 1\r\n"
                 b"X-Dup: 2\r\nReceived: from a by b; Thu, 1 Jan 2026 00:00:00 +0000\r\n",
                 b"two subjects\r\n"),
    "whitespace": (b"To:   bob@DEST  \r\nSubject:\t spaced \t \r\n",
                   b"trailing   \r\n\t tabs\t\t here \r\n  \r\n\r\n\r\n"),
    "empty-body": (b"To: bob@DEST\r\nSubject: empty\r\n", b""),
    "headers-only": (b"To: bob@DEST\r\nSubject: no empty line\r\n", None),
    "dots": (b"To: bob@DEST\r\nSubject: dots\r\n", b".leading dot\r\n..two\r\n.\r\nend.\r\n"),
    "eight-bit": (b"To: bob@DEST\r\nSubject: gr\xc3\xbc\xc3\x9fe \xe2\x9c\x93\r\n"
                  b"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n"
                  b"Content-Transfer-Encoding: 8bit\r\n", "caf\u00e9 \u2713\r\n".encode()),
    "no-final-crlf": (b"To: bob@DEST\r\nSubject: unterminated\r\n", b"last line"),
    # Issue 17: lines over 998 octets are folded (--long-lines fold, the default) before they
    # are stored and signed: the signature holds over what is relayed. A "." lands at 998.
    "long-lines": (b"To: bob@DEST\r\nSubject: " + b"s" * 1500 + b"\r\n",
                   b"<p>" + b"h" * 995 + b".after the fold " + b"w" * 2100 + b"</p>\r\nend\r\n"),
}
BDAT_ONLY = {"no-final-crlf"}  # DATA cannot carry a body without its final CRLF

bdat_sink = Sink(sink_binary, "127.0.0.1", free_port())
data_sink = Sink(sink_binary, "127.0.0.1", free_port(), ["--no-chunking"])
daemon = Daemon(ringmta, args=[
    "--config", config, "--mynetworks", "127.0.0.2/32", "--relay-domains",
    "bdat.test,data.test", "--route", f"bdat.test={bdat_sink.process.args[2]}",
    "--route", f"data.test={data_sink.process.args[2]}", "--resolver", "127.0.0.1:9"]).start()


def message_of(name, domain, via, dest):
    rest, body = corpus[name]
    head = (b"From: Sender <sender@" + domain.encode() + b">\r\nMessage-ID: <" +
            f"{name}.{domain}.{via}.{dest}".encode() + b"@t>\r\n" +
            rest.replace(b"DEST", dest.encode()))
    return head if body is None else head + b"\r\n" + body


def send_data(message, dest, source="127.0.0.2"):
    with smtplib.SMTP("127.0.0.1", daemon.port, timeout=120,
                      source_address=(source, 0)) as client:
        client.ehlo("client.test")
        return client.sendmail("sender@x.test", [f"bob@{dest}"], message,
                               mail_options=["SMTPUTF8", "BODY=8BITMIME"])


def send_bdat(message, dest, source="127.0.0.2", chunk=65536):
    """Raw BDAT chunks (the last with LAST); returns the final reply code."""
    c = Conversation(daemon.port, timeout=120)
    c.sock.close()
    c.sock = socket.create_connection(("127.0.0.1", daemon.port), timeout=120,
                                      source_address=(source, 0))
    c.reply()
    c.command("EHLO client.test")
    c.command("MAIL FROM:<sender@x.test> SMTPUTF8 BODY=8BITMIME")
    c.command(f"RCPT TO:<bob@{dest}>")
    pieces = [message[i:i + chunk] for i in range(0, len(message), chunk)] or [b""]
    code = None
    for i, piece in enumerate(pieces):
        last = " LAST" if i == len(pieces) - 1 else ""
        c.send(f"BDAT {len(piece)}{last}\r\n".encode() + piece)
        code, _ = c.reply()
    c.command("QUIT")
    return code


sent = {}  # Message-ID -> (name, domain)
failures = []
for name in corpus:
    for domain in ("relaxed.test", "simple.test"):
        for via in ("data", "bdat"):
            if via == "data" and name in BDAT_ONLY:
                continue
            dest = "data.test" if (via == "data") != (name == "plain") else "bdat.test"
            if name in BDAT_ONLY:
                dest = "bdat.test"
            message = message_of(name, domain, via, dest)
            try:
                if via == "data":
                    send_data(message, dest)
                    ok = True
                else:
                    ok = send_bdat(message, dest, chunk=7 if name == "dots" else 65536) == 250
            except smtplib.SMTPException as problem:
                ok, message = False, str(problem)
            if not ok:
                failures.append((name, domain, via))
            sent[f"{name}.{domain}.{via}.{dest}"] = (name, domain)
for domain, via, dest in (("relaxed.test", "data", "data.test"),
                          ("simple.test", "bdat", "bdat.test")):
    message = (b"From: <sender@" + domain.encode() + b">\r\nTo: bob@" + dest.encode() +
               b"\r\nSubject: ten megabytes\r\nMessage-ID: <big." + domain.encode() + b"@t>\r\n"
               b"\r\n" + big)
    ok = send_data(message, dest) == {} if via == "data" else send_bdat(message, dest) == 250
    if not ok:
        failures.append(("10MB", domain, via))
    sent[f"big.{domain}"] = ("10MB", domain)
tap.ok(not failures, f"{len(sent)} messages accepted from mynetworks (DATA and BDAT)", failures)

expected = len(sent)
arrived = wait_until(lambda: len(bdat_sink.messages()) + len(data_sink.messages()) >= expected,
                     120)
saved = bdat_sink.messages() + data_sink.messages()
tap.ok(arrived, f"all {expected} messages arrived at the sinks",
       f"{len(saved)} arrived; " + "\n".join(daemon.stderr_lines[-5:]))
folded = [m for _, m in saved if b"Message-ID: <long-lines." in m]
tap.ok(len(folded) == 4 and all(max(len(line) for line in m.split(b"\r\n")) <= 998 and
                                b"\r\n.after the fold" in m for m in folded),
       "lines over 998 octets arrive folded (the sink saves them unstuffed), signed as stored",
       [max(len(line) for line in m.split(b"\r\n")) for m in folded])

bad_dkimpy, bad_opendkim, counts, artifacts = [], [], [], []
for envelope, message in saved:
    found = re.search(rb"Message-ID: <([^@>]+)@t>", message)
    key = found.group(1).decode() if found else "?"
    signatures = len(re.findall(rb"(?im)^dkim-signature:", message.split(b"\r\n\r\n", 1)[0]))
    counts.append(signatures)
    results = dkimpy_results(message)
    if results != [True, True]:
        bad_dkimpy.append((key, results))
    verdicts = opendkim_results(message)
    if verdicts != ["pass", "pass"]:
        domain = "simple.test" if ".simple.test." in key else "relaxed.test"
        control = opendkim_control(message, domain)
        (artifacts if control != ["pass"] else bad_opendkim).append((key, verdicts, control))
tap.ok(saved and all(c == 2 for c in counts),
       "every message carries two signatures (RSA and Ed25519), ahead of Received:", counts)
tap.ok(saved and not bad_dkimpy, "dkimpy verifies every signature (both canonicalizations)",
       bad_dkimpy)
tap.ok(saved and not bad_opendkim and len(artifacts) <= 3,
       f"OpenDKIM verifies every signature ({len(artifacts)} where its test mode also fails "
       "dkimpy's own signature of the message)", bad_opendkim + artifacts)
for item in artifacts:
    print(f"# OpenDKIM test-mode artifact (control failed too): {item}", flush=True)
first = saved[0][1] if saved else b""
tap.ok(first.startswith(b"DKIM-Signature: v=1;") and b"\r\nReceived: from " in first and
       not re.search(rb"(?i)\bl=\d", first.split(b"Received:")[0]),
       "the fields come first, then our Received:, and there is no l= tag", first[:300])
metrics = daemon.metrics()
paths = {p: sum(v for k, v in metrics.items() if f'path="{p}"' in k)
         for p in ("bdat", "data", "splice")}
tap.ok(all(paths[p] > 0 for p in paths), "delivery used all three body paths", paths)
tap.ok(metrics.get('ringmta_dkim_signatures_total{algorithm="rsa-sha256"}') == expected and
       metrics.get('ringmta_dkim_signatures_total{algorithm="ed25519-sha256"}') == expected,
       "signatures are counted by algorithm", {k: v for k, v in metrics.items() if "dkim" in k})
received = [r for r in daemon.events("received") if r.get("dkim_domain")]
tap.ok(received and received[0]["dkim_selector"] == "rsa,ed" and
       received[0]["dkim_domain"] in ("relaxed.test,relaxed.test", "simple.test,simple.test"),
       "the received log record names the signing domain and selector", received[:1])

# Not ours to sign: the world relaying to our domains; no key for the From: domain.
before = len(bdat_sink.messages())
send_data(b"From: <someone@relaxed.test>\r\nTo: bob@bdat.test\r\nSubject: outside\r\n"
          b"Message-ID: <outside@t>\r\n\r\nfrom the world\r\n", "bdat.test", source="127.0.0.1")
send_data(b"From: <someone@nokey.test>\r\nTo: bob@bdat.test\r\nSubject: no key\r\n"
          b"Message-ID: <nokey@t>\r\n\r\nno key\r\n", "bdat.test")
wait_until(lambda: len(bdat_sink.messages()) >= before + 2, 60)
plain = [m for _, m in bdat_sink.messages() if b"<outside@t>" in m or b"<nokey@t>" in m]
tap.ok(len(plain) == 2 and not any(b"DKIM-Signature" in m for m in plain),
       "mail from outside mynetworks, and mail whose From: has no key, go out unsigned",
       [m[:200] for m in plain])

# What cannot be signed is refused with a clear reply, never relayed unsigned.
code_bare = send_bdat(b"From: <s@relaxed.test>\r\nSubject: bare\r\n\r\nbare\nline feed\r\n",
                      "bdat.test")
c = Conversation(daemon.port)
c.sock.close()
c.sock = socket.create_connection(("127.0.0.1", daemon.port), source_address=("127.0.0.2", 0))
c.reply()
c.command("EHLO client.test")
c.command("MAIL FROM:<s@x.test>")
c.command("RCPT TO:<bob@bdat.test>")
c.command("DATA")
c.send(b"From: <s@relaxed.test>\r\n" + b"X-Filler: " + b"f" * 900 + b"\r\n" * 1 +
       b"".join(b"X-Many-%d: %s\r\n" % (i, b"m" * 900) for i in range(300)) + b"\r\nbody\r\n.\r\n")
code_big, text_big = c.reply()
c.command("MAIL FROM:<s@x.test>")
c.command("RCPT TO:<bob@bdat.test>")
c.command("DATA")
c.send(b"From: <a@relaxed.test>\r\nFrom: <b@relaxed.test>\r\n\r\ntwo authors\r\n.\r\n")
code_from, _ = c.reply()
c.command("QUIT")
tap.ok(code_bare == 550 and code_big == 552 and "DKIM" in text_big,
       "a bare LF (BDAT) gets 550 5.6.0 and a header block over the limit 552 5.3.4",
       (code_bare, code_big, text_big))
tap.ok(code_from == 250, "two From: fields and no wildcard key: accepted, not signed",
       code_from)

# Signed mail queued across a restart keeps its signature (the field is in the commit).
daemon.stop()
queued = Daemon(ringmta, spool=daemon.spool, args=[
    "--config", config, "--mynetworks", "127.0.0.2/32", "--relay-domains", "hold.test",
    "--resolver", "127.0.0.1:9", "--retry-schedule", "1s"]).start()
with smtplib.SMTP("127.0.0.1", queued.port, timeout=30, source_address=("127.0.0.2", 0)) as s:
    s.sendmail("s@x.test", ["x@hold.test"], b"From: <s@relaxed.test>\r\nTo: x@hold.test\r\n"
               b"Subject: held\r\nMessage-ID: <held@t>\r\n\r\nqueued\r\n")
queued.stop()
again = Daemon(ringmta, spool=daemon.spool, args=[
    "--config", config, "--mynetworks", "127.0.0.2/32", "--relay-domains", "hold.test",
    "--route", f"hold.test={bdat_sink.process.args[2]}"]).start()
held = wait_until(lambda: [m for _, m in bdat_sink.messages() if b"<held@t>" in m], 60)
tap.ok(held and dkimpy_results(held[0]) == [True, True] and
       opendkim_results(held[0]) == ["pass", "pass"],
       "a signed message recovered from the spool after a restart is delivered still signed",
       held[0][:300] if held else again.stderr_lines[-5:])
again.stop()

# A bad key is a start-up error naming it (exit 2); so is a fallback without a key.
bad = os.path.join(work, "bad.key")
with open(bad, "w") as f:
    f.write("-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----\n")
out = subprocess.run([ringmta, "--allow-root", "--listen", "127.0.0.1:0", "--spool", os.path.join(work, "s2"),
                      "--dkim", f"bad.test:sel:{bad}"], capture_output=True, text=True, timeout=30)
tap.ok(out.returncode == 2 and bad in out.stderr and "bad.test" in out.stderr,
       "a malformed key file stops the start-up with exit 2 and names it", out.stderr)
out = subprocess.run([ringmta, "--allow-root", "--listen", "127.0.0.1:0", "--spool", os.path.join(work, "s2"),
                      "--dkim", f"gone.test:sel:{work}/missing.key"], capture_output=True,
                     text=True, timeout=30)
tap.ok(out.returncode == 2 and "missing.key: cannot read" in out.stderr,
       "an unreadable key file stops the start-up with exit 2", out.stderr)
many = []
for i in range(17):  # 17 signatures would not fit a message's committed fields
    many += ["--dkim", f"many.test:s{i}:{key_files[('relaxed.test', 'ed')]}"]
out = subprocess.run([ringmta, "--allow-root", "--listen", "127.0.0.1:0", "--spool", os.path.join(work, "s2")] +
                     many, capture_output=True, text=True, timeout=30)
tap.ok(out.returncode == 2 and "17 signatures" in out.stderr,
       "more than 16 signatures per message is a start-up error", out.stderr)
shutil.rmtree(work, ignore_errors=True)
tap.done()
