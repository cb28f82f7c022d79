#!/usr/bin/env python3
"""Standards fidelity with real peers (issue 17; docs/interop.md has the table).
A private Postfix (final MTA, offers DSN and SMTPUTF8) and ringmta-sink instances (one with
neither) behind --route; clients are Python smtplib and raw sockets.
  DSN:   NOTIFY=SUCCESS to Postfix: the parameters go on, Postfix reports, ringmta does not;
         to a next hop without DSN: ringmta reports "relayed", Remote-MTA "dns; host.name".
  IDN:   --route accepts a U-label name; bob@bücher.test reaches Postfix unchanged with
         SMTPUTF8; bob@münchen.test goes as bob@xn--mnchen-3ya.test to a next hop without
         SMTPUTF8; jörg@münchen.test bounces 5.6.7 there; look-alikes do not pass relay checks.
  Trace: the Received "for" clause keeps UTF-8; the log's protocol is the header's.
  NUL:   a body with "\\r\\n\\x00.\\r\\n" is refused 550 5.6.0 (reject is the default).
  Reuse: a burst from concurrent clients opens no connection that does only EHLO/QUIT.
  8-bit: to a server without 8BITMIME, converted to quoted-printable (as Postfix does, observed
         side by side); DKIM-signed or 8-bit-header messages bounce 5.6.3 with the reason.
usage: test_fidelity.py RINGMTA RINGMTA_SINK"""
import os
import re
import shutil
import email
import email.message
import email.policy
import smtplib
import socket
import subprocess
import sys
import tempfile
import threading

from harness import Conversation, Daemon, Tap, free_port
from peers import Sink, wait_until

tap = Tap()
ringmta, sink_binary = sys.argv[1], sys.argv[2]
if not shutil.which("postfix") or not shutil.which("postconf"):
    tap.skip_all("postfix is not installed")

BUECHER = "b\u00fccher.test"          # xn--bcher-kva.test
MUENCHEN = "m\u00fcnchen.test"        # xn--mnchen-3ya.test

work = tempfile.mkdtemp(prefix="ringmta-fidelity-")
os.chmod(work, 0o755)
pf_port = free_port()
seven_port = free_port()  # a ringmta-sink without 8BITMIME (and so without SMTPUTF8)
mailboxes = os.path.join(work, "mailboxes")
os.makedirs(mailboxes)
shutil.chown(mailboxes, "nobody", "nogroup")
extra_main_cf = os.path.join(work, "final.cf")
with open(extra_main_cf, "w") as f:
    f.write(f"""myhostname = final.mx.test
relayhost =
smtputf8_enable = yes
virtual_mailbox_domains = final.test, xn--bcher-kva.test, {BUECHER}
virtual_mailbox_base = {mailboxes}
virtual_mailbox_maps = inline:{{ bob@final.test=bob, bob@xn--bcher-kva.test=idn, bob@{BUECHER}=idn }}
virtual_uid_maps = static:65534
virtual_gid_maps = static:65534
virtual_minimum_uid = 100
smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination
smtpd_recipient_restrictions =
relay_domains = seven.test
transport_maps = inline:{{ seven.test=smtp:[127.0.0.1]:{seven_port} }}
""")
instance = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tools",
                        "postfix_instance.sh")
started = subprocess.run([instance, "start", work, str(pf_port), "9", extra_main_cf],
                         capture_output=True, text=True)
sender_port, plain_port = free_port(), free_port()
senders = Sink(sink_binary, "127.0.0.1", sender_port)  # where DSNs to alice@sender.test go
plain = Sink(sink_binary, "127.0.0.1", plain_port, ["--no-dsn", "--no-smtputf8"])
seven = Sink(sink_binary, "127.0.0.1", seven_port, ["--no-8bitmime"])


def maillog():
    path = os.path.join(work, "maillog")
    return open(path, errors="replace").read() if os.path.exists(path) else ""


def dsns():
    return [m for m in senders.messages() if m[0].get("mail-from") == "<>"]


try:
    listening = wait_until(lambda: subprocess.run(["ss", "-Hltn", f"sport = :{pf_port}"],
                                                  capture_output=True, text=True).stdout.strip(), 15)
    if not tap.ok(started.returncode == 0 and listening, "a private Postfix instance starts",
                  started.stderr + started.stdout):
        tap.done()
    daemon = Daemon(ringmta, args=[
        "--route", f"final.test=127.0.0.1:{pf_port}",
        "--route", f"{BUECHER}=127.0.0.1:{pf_port}",          # a U-label name at start-up
        "--route", f"xn--mnchen-3ya.test=127.0.0.1:{plain_port}",  # an A-label one
        "--route", f"plain.test=127.0.0.1:{plain_port}",
        "--route", f"sender.test=127.0.0.1:{sender_port}",
        "--route", f"seven.test=127.0.0.1:{seven_port}",
        "--route", f"held.test=127.0.0.1:{free_port()}",  # nothing listens: stays queued
        "--mynetworks", "127.0.0.9/32",
        "--relay-domains",
        f"final.test,{BUECHER},xn--mnchen-3ya.test,plain.test,sender.test,held.test,seven.test",
    ]).start()
    tap.ok(True, "--route and --relay-domains accept a non-ASCII (U-label) name")

    # --- 1. DSN: parameters passed on to Postfix (offers DSN); no report from us.
    with smtplib.SMTP("127.0.0.1", daemon.port, timeout=30) as client:
        client.ehlo("client.test")
        client.sendmail("alice@sender.test", ["bob@final.test"],
                        b"Subject: dsn to postfix\r\n\r\nhello\r\n",
                        mail_options=["RET=HDRS", "ENVID=env-1"],
                        rcpt_options=["NOTIFY=SUCCESS", "ORCPT=rfc822;bob@final.test"])
    mailbox = os.path.join(mailboxes, "bob")
    tap.ok(wait_until(lambda: os.path.exists(mailbox), 30), "Postfix delivered the message",
           maillog()[-1500:])
    notified = wait_until(lambda: re.search(r"sender delivery status notification", maillog()), 30)
    tap.ok(notified, "Postfix got NOTIFY=SUCCESS and sends the success report itself",
           maillog()[-1500:])
    # --- 2. to a next hop without DSN: our report says "relayed".
    with smtplib.SMTP("127.0.0.1", daemon.port, timeout=30) as client:
        client.ehlo("client.test")
        client.sendmail("alice@sender.test", ["carol@plain.test"],
                        b"Subject: dsn to a plain server\r\n\r\nhello\r\n",
                        rcpt_options=["NOTIFY=SUCCESS"])
    got = wait_until(lambda: dsns(), 30)
    reports = dsns()
    text = reports[-1][1].decode(errors="replace") if reports else ""
    tap.ok(len(reports) == 1, "exactly one DSN reaches the sender: none for the Postfix relay",
           [m[1][:400] for m in reports])
    tap.ok(got and "Action: relayed" in text and "Final-Recipient: rfc822; carol@plain.test" in text,
           "next hop without DSN: Action: relayed", text[-1500:])
    # The route names an address, so the host name is its literal: "dns; [127.0.0.1]", never
    # "name [ip]:port" as before.
    remote = re.search(r"Remote-MTA: (.*)\r\n", text)
    tap.ok(remote and remote.group(1) == "dns; [127.0.0.1]",
           "Remote-MTA is 'dns; host.name' (no address or port after it)", text[-800:])

    # --- 3. IDN: U-label address to Postfix with SMTPUTF8, unchanged.
    with smtplib.SMTP("127.0.0.1", daemon.port, timeout=30) as client:
        client.ehlo("client.test")
        refused = client.sendmail("alice@sender.test", [f"bob@{BUECHER}"],
                                  b"Subject: idn\r\n\r\nhello idn\r\n",
                                  mail_options=["SMTPUTF8"])
    tap.ok(refused == {}, "RCPT TO:<bob@b\u00fccher.test> with SMTPUTF8: 250")
    idn_box = os.path.join(mailboxes, "idn")
    arrived = wait_until(lambda: os.path.exists(idn_box) and b"hello idn" in open(idn_box, "rb")
                         .read(), 30)
    content = open(idn_box, "rb").read() if os.path.exists(idn_box) else b""
    tap.ok(arrived, "routed by its A-label form and delivered by Postfix",
           maillog()[-1500:] + str(daemon.events("bounced"))[-800:])
    tap.ok(f"to=<bob@{BUECHER}>".encode() in maillog().encode(),
           "Postfix saw the address as received (U-label, with SMTPUTF8)", maillog()[-800:])
    # --- 4. Received "for" keeps UTF-8; log protocol = header protocol.
    tap.ok(f"for <bob@{BUECHER}>".encode() in content, "Received: for clause keeps UTF-8",
           content[:700])
    match = re.search(rb"by mx\.test\.example \(ringmta\) with (\S+) id (\S+)", content)
    received = [e for e in daemon.events("received") if match and e.get("id") ==
                match.group(2).decode()]
    tap.ok(match and match.group(1) == b"UTF8SMTP" and received and
           received[0].get("protocol") == "UTF8SMTP",
           "the log record's protocol is the header's (UTF8SMTP)", (match and match.group(0),
                                                                    received))

    # --- 5. IDN to a next hop without SMTPUTF8: A-label domain; non-ASCII local part: 5.6.7.
    before = len(plain.messages())
    with smtplib.SMTP("127.0.0.1", daemon.port, timeout=30) as client:
        client.ehlo("client.test")
        client.sendmail("alice@sender.test", [f"dora@{MUENCHEN}"],
                        b"Subject: idn downgrade\r\n\r\nascii body\r\n", mail_options=["SMTPUTF8"])
    wait_until(lambda: len(plain.messages()) > before, 30)
    rcpts = [r for m in plain.messages() for r in m[0]["rcpt"]]
    tap.ok("dora@xn--mnchen-3ya.test" in rcpts,
           "to a next hop without SMTPUTF8 the domain goes as A-labels", rcpts)
    dsn_count = len(dsns())
    with smtplib.SMTP("127.0.0.1", daemon.port, timeout=30) as client:
        client.ehlo("client.test")
        client.sendmail("alice@sender.test", [f"j\u00f6rg@{MUENCHEN}"],
                        b"Subject: utf8 local part\r\n\r\nx\r\n", mail_options=["SMTPUTF8"])
    wait_until(lambda: len(dsns()) > dsn_count, 30)
    last = dsns()[-1][1].decode(errors="replace") if dsns() else ""
    tap.ok(len(dsns()) > dsn_count and "5.6.7" in last,
           "a non-ASCII local part to a next hop without SMTPUTF8 bounces 5.6.7", last[-800:])

    # --- 6. look-alikes never pass the relay-domain check (client not in mynetworks).
    c = Conversation(daemon.port)
    c.reply()
    c.command("EHLO client.test")
    c.command("MAIL FROM:<alice@sender.test> SMTPUTF8")
    verdicts = {}
    for name in ("B\u00dcCHER.test", "b\u0443cher.test", "bucher.test", "xn--bcher-kva.test",
                 "b\u00fccher.test.evil"):
        code, _ = c.command(f"RCPT TO:<x@{name}>")
        verdicts[name] = code
    c.close()
    tap.ok(verdicts["B\u00dcCHER.test"] == 250 and verdicts["xn--bcher-kva.test"] == 250,
           "the relay domain in other case or as its A-label: 250", verdicts)
    tap.ok(verdicts["b\u0443cher.test"] == 554 and verdicts["bucher.test"] == 554 and
           verdicts["b\u00fccher.test.evil"] == 554,
           "look-alikes (Cyrillic u, plain u, a suffix) are refused 554", verdicts)

    # --- 7. NUL in DATA: 550 5.6.0 by default (issue 17 item 4).
    c = Conversation(daemon.port)
    c.reply()
    c.command("EHLO client.test")
    c.command("MAIL FROM:<alice@sender.test>")
    c.command("RCPT TO:<bob@final.test>")
    c.command("DATA")
    c.send(b"Subject: nul\r\n\r\nline\r\n\x00.\r\nmore\r\n.\r\n")
    code, text = c.reply()
    c.close()
    tap.ok(code == 550 and "5.6.0" in text, "a NUL in DATA is refused 550 5.6.0", text)
    # Postfix, for the table: what it does with the same body.
    s = socket.create_connection(("127.0.0.1", pf_port), timeout=10)
    pf = Conversation.__new__(Conversation)
    pf.sock, pf.buffer = s, b""
    pf.reply()
    pf.command("EHLO client.test")
    pf.command("MAIL FROM:<alice@sender.test>")
    pf.command("RCPT TO:<bob@final.test>")
    pf.command("DATA")
    pf.send(b"Subject: nul\r\n\r\nline\r\n\x00.\r\nmore\r\n.\r\n")
    pf_code, pf_text = pf.reply()
    pf.close()
    tap.ok(pf_code is not None, f"Postfix answers the NUL body: {pf_code} {pf_text.strip()}")

    # --- 8. a line over 998 octets from a direct client: folded (the default), not refused;
    # Postfix, given the same message directly, for the table.
    long_body = b"<p>" + b"h" * 1200 + b" " + b"w" * 1500 + b"</p>\r\n"
    with smtplib.SMTP("127.0.0.1", daemon.port, timeout=30) as client:
        client.ehlo("client.test")
        refused = client.sendmail("alice@sender.test", ["bob@final.test"],
                                  b"Subject: long line ours\r\n\r\n" + long_body)
    tap.ok(refused == {}, "a 2.7 KB line is accepted (--long-lines fold)")
    with smtplib.SMTP("127.0.0.1", pf_port, timeout=30) as client:
        client.ehlo("client.test")
        client.sendmail("alice@sender.test", ["bob@final.test"],
                        b"Subject: long line postfix\r\n\r\n" + long_body)

    def long_message(subject):
        box = open(mailbox, "rb").read() if os.path.exists(mailbox) else b""
        part = box.split(subject, 1)
        return part[1].split(b"\nFrom ", 1)[0] if len(part) == 2 else b""
    ours = wait_until(lambda: b"</p>" in long_message(b"Subject: long line ours"), 30)
    theirs = wait_until(lambda: b"</p>" in long_message(b"Subject: long line postfix"), 30)
    ours_lines = [len(x) for x in long_message(b"Subject: long line ours").split(b"\n")]
    theirs_lines = [len(x) for x in long_message(b"Subject: long line postfix").split(b"\n")]
    tap.ok(ours and max(ours_lines) <= 998 and
           long_message(b"Subject: long line ours").replace(b"\n", b"").find(
               long_body.rstrip(b"\r\n")) >= 0,
           "relayed to Postfix folded at 998, nothing lost", ours_lines)
    tap.ok(theirs, f"Postfix direct: line lengths in its mailbox {theirs_lines[:6]}")

    # --- 9. small ones: no outbound connection does only EHLO/QUIT. Concurrent clients make
    # the relay open new connections while others finish; a finished one used to take the job
    # a new one was opened for, and Postfix logged "disconnect from ... ehlo=1 quit=1".
    mark = len(maillog())
    burst, clients = 240, 8

    def send_burst(index):
        with smtplib.SMTP("127.0.0.1", daemon.port, timeout=60) as client:
            client.ehlo("client.test")
            for n in range(burst // clients):
                client.sendmail("alice@sender.test", ["bob@final.test"],
                                b"Subject: burst %d-%d\r\n\r\nx\r\n" % (index, n))
    workers = [threading.Thread(target=send_burst, args=(i,)) for i in range(clients)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(120)

    def relay_sessions():
        return [line for line in maillog()[mark:].splitlines()
                if "postfix/smtpd" in line and "disconnect from" in line]

    def carried():
        return sum(int(m.group(1)) for line in relay_sessions()
                   for m in [re.search(r" mail=(\d+)", line)] if m)
    tap.ok(wait_until(lambda: carried() >= burst, 120),
           f"Postfix received the burst of {burst} over {len(relay_sessions())} connections",
           f"{carried()} MAIL commands")
    idle = [line for line in relay_sessions() if " mail=" not in line]
    tap.ok(not idle, "no outbound connection did only EHLO/QUIT", idle[:5])

    # --- 10. 8-bit to a server without 8BITMIME (RFC 6152 §3): quoted-printable, as Postfix.
    text = "Gr\u00fc\u00dfe aus M\u00fcnchen \u2014 caf\u00e9 = na\u00efve \r\n" * 3
    attachment = bytes(range(256)) * 4
    eight = email.message.EmailMessage()
    eight["Subject"], eight["From"], eight["To"] = "eight", "alice@sender.test", "bob@seven.test"
    eight.set_content(text, charset="utf-8", cte="8bit")
    eight.add_attachment(attachment, maintype="application", subtype="octet-stream",
                         filename="blob.bin")
    eight_bytes = eight.as_bytes(policy=email.policy.SMTP)
    tap.ok(b"Content-Transfer-Encoding: 8bit" in eight_bytes, "the test message is 8-bit")

    def seven_messages(subject):
        return [m for m in seven.messages() if b"Subject: " + subject in m[1]]

    def check_downgraded(found, who):
        data = found[1]
        parsed = email.message_from_bytes(data, policy=email.policy.default)
        parts = list(parsed.iter_parts())
        return (all(b < 0x80 for b in data) and
                parts[0]["Content-Transfer-Encoding"] == "quoted-printable" and
                parts[0].get_payload(decode=True).decode("utf-8") == text and
                parts[1].get_payload(decode=True) == attachment), who

    dsn_count = len(dsns())
    with smtplib.SMTP("127.0.0.1", daemon.port, timeout=30) as client:
        client.ehlo("client.test")
        client.sendmail("alice@sender.test", ["bob@seven.test"], eight_bytes,
                        mail_options=["BODY=8BITMIME"])
    tap.ok(wait_until(lambda: seven_messages(b"eight"), 30),
           "ringmta relayed the 8-bit message to a server without 8BITMIME")
    found = seven_messages(b"eight")
    ok, _ = check_downgraded(found[0], "ringmta") if found else (False, "")
    tap.ok(ok, "ringmta sent it as 7-bit: the text part quoted-printable and decoding to the "
           "original, the base64 attachment unchanged", found[0][1][:1500] if found else "")
    # A large one leaves through the splice path (the conversion is a memfd, not the spool).
    big_text = ("8-bit line \u00e9\u00e8 " + "x" * 60 + "\r\n") * 8000
    big = email.message.EmailMessage()
    big["Subject"], big["From"], big["To"] = "big eight", "alice@sender.test", "bob@seven.test"
    big.set_content(big_text, charset="utf-8", cte="8bit")
    with smtplib.SMTP("127.0.0.1", daemon.port, timeout=30) as client:
        client.ehlo("client.test")
        client.sendmail("alice@sender.test", ["bob@seven.test"],
                        big.as_bytes(policy=email.policy.SMTP), mail_options=["BODY=8BITMIME"])
    tap.ok(wait_until(lambda: seven_messages(b"big eight"), 30), "a 600 KB 8-bit message too")
    found = seven_messages(b"big eight")
    decoded = email.message_from_bytes(found[0][1], policy=email.policy.default) if found else None
    tap.ok(decoded is not None and all(b < 0x80 for b in found[0][1]) and
           decoded.get_payload(decode=True).decode("utf-8") == big_text,
           "converted whole: quoted-printable decoding to the original")
    # Postfix relaying the same message to the same server (observed for docs/interop.md).
    with smtplib.SMTP("127.0.0.1", pf_port, timeout=30) as client:
        client.ehlo("client.test")
        client.sendmail("alice@sender.test", ["bob@seven.test"],
                        eight_bytes.replace(b"Subject: eight", b"Subject: eight via postfix"),
                        mail_options=["BODY=8BITMIME"])
    tap.ok(wait_until(lambda: seven_messages(b"eight via postfix"), 30),
           "Postfix relayed it to the same server")
    found = seven_messages(b"eight via postfix")
    ok, _ = check_downgraded(found[0], "postfix") if found else (False, "")
    tap.ok(ok, "Postfix converted it the same way (quoted-printable text part)",
           found[0][1][:1500] if found else maillog()[-1500:])
    # A DKIM-signed 8-bit message and one with 8-bit header octets cannot be converted.
    signed = b"DKIM-Signature: v=1; a=rsa-sha256; d=sender.test; s=s; h=from; bh=x; b=y\r\n" + \
        eight_bytes.replace(b"Subject: eight", b"Subject: signed")
    raw_header = eight_bytes.replace(b"Subject: eight", b"Subject: caf\xc3\xa9")
    with smtplib.SMTP("127.0.0.1", daemon.port, timeout=30) as client:
        client.ehlo("client.test")
        client.sendmail("alice@sender.test", ["bob@seven.test"], signed,
                        mail_options=["BODY=8BITMIME"])
        client.sendmail("alice@sender.test", ["bob@seven.test"], raw_header,
                        mail_options=["BODY=8BITMIME"])
    tap.ok(wait_until(lambda: len(dsns()) >= dsn_count + 2, 30), "both bounced with a DSN")
    texts = [m[1].decode("utf-8", "replace").replace("\r\n ", " ") for m in dsns()[dsn_count:]]
    tap.ok(any("5.6.3" in t and "DKIM-signed" in t for t in texts) and
           any("5.6.3" in t and "8-bit octets in a header field" in t for t in texts),
           "5.6.3 with the reason: DKIM-signed / 8-bit octets in a header field",
           [t[-800:] for t in texts])
    tap.ok(not seven_messages(b"signed") and not seven_messages(b"caf"),
           "neither reached the 7-bit server")
    downgrade_log = daemon.events("downgrade")
    tap.ok(any(r.get("outcome") == "converted to quoted-printable" for r in downgrade_log),
           "the conversion is logged", downgrade_log[:3])

    # --- 11. small ones: spool ls columns with a UTF-8 sender; spool export creates DIR.
    with smtplib.SMTP("127.0.0.1", daemon.port, timeout=30) as client:
        client.ehlo("client.test")
        client.sendmail("j\u00f6rg.\u00fc\u00fc@sender.test", ["x@held.test"],
                        b"Subject: held\r\n\r\nx\r\n", mail_options=["SMTPUTF8"])
    listing = subprocess.run([ringmta, "spool", "ls", "--spool", daemon.spool],
                             capture_output=True, text=True).stdout.splitlines()
    header = [line for line in listing if line.startswith("ID")]
    row = [line for line in listing if "x@held.test" in line]
    tap.ok(header and row and row[0].index("x@held.test") == header[0].index("RECIPIENTS"),
           "spool ls: the recipients column lines up after a UTF-8 sender", listing)
    target = os.path.join(work, "export", "nested")
    exported = subprocess.run([ringmta, "spool", "export", target, "--spool", daemon.spool],
                              capture_output=True, text=True)
    tap.ok(exported.returncode == 0 and os.listdir(target),
           "spool export creates its directory", exported.stderr + exported.stdout)
    blocker = os.path.join(work, "a-file")
    open(blocker, "w").close()
    refused = subprocess.run([ringmta, "spool", "export", blocker + "/sub", "--spool",
                              daemon.spool], capture_output=True, text=True)
    tap.ok(refused.returncode != 0 and "Not a directory" in refused.stderr,
           "spool export says why it cannot export", refused.stderr)
    c = Conversation(seven_port)
    c.reply()
    code, ehlo = c.command("EHLO client.test")
    c.close()
    tap.ok(code == 250 and "8BITMIME" not in ehlo and "SMTPUTF8" not in ehlo,
           "ringmta-sink --no-8bitmime offers no SMTPUTF8 either (RFC 6531 §3.1)", ehlo)
    tap.ok(daemon.stop() == 0, "clean exit")
finally:
    subprocess.run([instance, "stop", work], capture_output=True)
    seven.stop()
    shutil.rmtree(work, ignore_errors=True)
tap.done()
