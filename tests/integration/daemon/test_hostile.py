#!/usr/bin/env python3
"""Hostile clients (issue 10), each over real sockets against the real daemon, relaying to a
lax downstream that ends lines at a bare CR (lax_downstream.py):
BDAT smuggling (reject and normalize), BDAT without a final CRLF relayed over DATA, a BDAT
chunk of 2^64-1, postmaster and our own names, RET=HDRS forced for outside senders, duplicate
recipients, long RCPT lines with ORCPT, slow senders (command line and DATA trickles, the data
rate rule, shorter timeouts under load), HELP, and SIGTERM with an idle client.
usage: test_hostile.py RINGMTA_BINARY"""
import re
import signal
import socket
import sys
import time

from harness import Conversation, Daemon, Tap, wait_until
from lax_downstream import LaxDownstream

tap = Tap()
binary = sys.argv[1]


def session(port, ehlo=True):
    c = Conversation(port)
    code, _ = c.reply()
    assert code == 220, code
    if ehlo:
        c.command("EHLO client.test")
    return c


def bdat(c, body, sender="a@client.test", rcpt="user@relay.test"):
    c.send(f"MAIL FROM:<{sender}>\r\nRCPT TO:<{rcpt}>\r\n".encode() +
           b"BDAT %d LAST\r\n" % len(body) + body)
    codes = [c.reply() for _ in range(3)]
    return codes[2]


SMUGGLED = b"mail FROM:<smuggled@evil.test>\r\nrcpt TO:<victim@relay.test>\r\ndata\r\n" \
           b"X-Smuggled: yes\r\n\r\nhidden\r\n"
# The eight end-marker variants of the report, each followed by smuggled commands.
VARIANTS = [b"first\r.\r", b"first\n.\n", b"first\r\n.\r", b"first\r.\r\n", b"first\n.\r\n",
            b"first\r\n.\n", b"first\n.\r", b"first\r.\n"]


def smuggling_round(mode, down_port):
    d = Daemon(binary, shards=1, args=[
        "--bare-line-endings", mode, "--relay-domains", "relay.test",
        "--route", f"relay.test=127.0.0.1:{down_port}", "--retry-schedule", "1s"]).start()
    c = session(d.port)
    answers = [bdat(c, variant + SMUGGLED + b".\r\n")[0] for variant in VARIANTS]
    clean = bdat(c, b"Subject: clean\r\n\r\nclean " + mode.encode() + b"\r\n")[0]
    c.command("QUIT")
    return d, answers, clean


# --- 1. BDAT smuggling: reject refuses every variant, normalize rewrites; nothing smuggled
down = LaxDownstream()
d, answers, clean = smuggling_round("reject", down.port)
tap.ok(all(code == 550 for code in answers), "reject: every BDAT smuggling variant gets 550",
       answers)
tap.ok(clean == 250, "reject: a clean BDAT message is accepted", clean)
tap.ok(wait_until(lambda: len(down.snapshot()) >= 1, 20), "reject: the clean message arrives")
d.stop()
d, answers, clean = smuggling_round("normalize", down.port)
tap.ok(all(code == 250 for code in answers), "normalize: every variant is accepted (rewritten)",
       answers)
arrived = wait_until(lambda: len(down.snapshot()) >= 2 + len(VARIANTS) and down.snapshot(), 30)
messages = down.snapshot()
senders = sorted({m["sender"] for m in messages})
tap.ok(senders == ["a@client.test"],
       "no message smuggled through to a downstream that ends lines at a bare CR", senders)
tap.ok(len(messages) == 2 + len(VARIANTS) and
       all(b"X-Smuggled" in m["data"] for m in messages if b"first" in m["data"]),
       "each normalized message arrives whole, smuggled text still inside it",
       [m["data"][:60] for m in messages])
d.stop()

# --- 2. BDAT without a final CRLF, relayed over DATA; a chunk of 2^64-1
down2 = LaxDownstream(reject=["bounce@relay.test"])
d = Daemon(binary, shards=1, args=[
    "--mynetworks", "10.0.0.0/8", "--relay-domains", "relay.test",
    "--route", f"relay.test=127.0.0.1:{down2.port}",
    "--route", f"client.test=127.0.0.1:{down2.port}", "--postmaster", "hostmaster@relay.test",
    "--retry-schedule", "1s", "--max-message-size", "1M"]).start()
c = session(d.port)
code, text = bdat(c, b"Subject: no final newline\r\n\r\nlast line without CRLF")
tap.ok(code == 250, "BDAT message without a final CRLF accepted", text)
got = wait_until(lambda: [m for m in down2.snapshot() if b"without CRLF" in m["data"]], 20)
tap.ok(bool(got) and got[0]["data"].endswith(b"last line without CRLF\r\n"),
       "relayed over DATA with the CRLF added: the next hop sees the end of data", got)
c.send("MAIL FROM:<a@client.test>\r\nRCPT TO:<user@relay.test>\r\n"
       "BDAT 18446744073709551615 LAST\r\nQUIT\r\n")
codes = [c.reply() for _ in range(3)]
tap.ok(codes[2][0] == 552 and "5.3.4" in codes[2][1], "BDAT 2^64-1: 552 5.3.4 at once", codes)
tap.ok(c.closed(10), "and the connection is closed (the chunk cannot be skipped)")

# --- 3. postmaster, own names, RET=HDRS for outside senders
c = session(d.port)
c.command("MAIL FROM:<a@client.test>")
checks = [("<postmaster>", 250), ("<Postmaster@MX.test.example>", 250),
          ("<postmaster@[127.0.0.1]>", 250), ("<someone@mx.test.example>", 550),
          ("<someone@localhost>", 550), ("<x@elsewhere.test>", 554)]
for path, expected in checks:
    code, text = c.command(f"RCPT TO:{path}")
    tap.ok(code == expected, f"RCPT TO:{path} from outside mynetworks: {expected}", text)
c.send(b"DATA\r\n")
c.reply()
c.send(b"Subject: to the postmaster\r\n\r\nhello\r\n.\r\n")
code, _ = c.reply()
got = wait_until(lambda: [m for m in down2.snapshot() if b"to the postmaster" in m["data"]], 20)
tap.ok(code == 250 and bool(got) and got[0]["recipients"] == ["hostmaster@relay.test"],
       "postmaster mail (three spellings, folded) goes to --postmaster once", got)
c.command("MAIL FROM:<sender@client.test> RET=FULL")
c.command("RCPT TO:<bounce@relay.test>")
c.command("DATA")
c.send(b"Subject: will bounce\r\n\r\nSECRET-BODY-LINE\r\n.\r\n")
code, _ = c.reply()
tap.ok(code == 250, "message to a recipient the next hop refuses: accepted")
dsn = wait_until(lambda: [m for m in down2.snapshot() if m["sender"] == "" and
                          b"will bounce" in m["data"]], 30)
tap.ok(bool(dsn) and dsn[0]["recipients"] == ["sender@client.test"] and
       b"text/rfc822-headers" in dsn[0]["data"] and b"SECRET-BODY-LINE" not in dsn[0]["data"],
       "DSN to an outside, unauthenticated sender returns the headers only (RET=FULL ignored)",
       dsn[0]["data"][-800:] if dsn else "no DSN")

# --- 6. duplicate recipients: 250 to each, delivered once (domain case folded, local part not)
c.command("MAIL FROM:<a@client.test>")
codes = [c.command("RCPT TO:<dup@relay.test>")[0] for _ in range(50)]
codes.append(c.command("RCPT TO:<dup@RELAY.Test>")[0])
codes.append(c.command("RCPT TO:<Dup@relay.test>")[0])
c.command("DATA")
c.send(b"Subject: duplicates\r\n\r\nonce\r\n.\r\n")
code, _ = c.reply()
tap.ok(all(x == 250 for x in codes) and code == 250, "52 RCPTs all answered 250", codes)
got = wait_until(lambda: [m for m in down2.snapshot() if b"duplicates" in m["data"]], 20)
tap.ok(bool(got) and sorted(got[0]["recipients"]) == ["Dup@relay.test", "dup@relay.test"],
       "downstream sees dup@relay.test once (and Dup@: local parts are case-sensitive)",
       got[0]["recipients"] if got else "not delivered")
metrics = d.metrics()
tap.ok(metrics.get("ringmta_recipients_duplicate_total") == 52,  # 2 postmaster spellings
       "duplicates counted", metrics.get("ringmta_recipients_duplicate_total"))

# --- 7. command line limits per command (RFC 5321 §4.5.3.1.4, RFC 3461, RFC 4954)
c.command("MAIL FROM:<a@client.test> RET=HDRS ENVID=" + "e" * 100 + " SIZE=100 BODY=8BITMIME")
orcpt = "rfc822;" + "o" * 200 + "@" + "d" * 250 + ".test"
line = f"RCPT TO:<long@relay.test> NOTIFY=SUCCESS,FAILURE,DELAY ORCPT={orcpt}"
code, text = c.command(line)
tap.ok(code == 250, f"RCPT with ORCPT, {len(line) + 2} octets: accepted", text)
code, text = c.command("RCPT TO:<long@relay.test> ORCPT=" + "rfc822;" + "x" * 1100)
tap.ok(code == 500 and "5.5.2" in text, "RCPT line over the DSN limit: 500 5.5.2", text)
code, text = c.command("NOOP " + "n" * 600)
tap.ok(code == 500 and "5.5.2" in text, "NOOP over 512 octets: 500 5.5.2", text)
code, text = c.command("RSET")
tap.ok(code == 250, "in sync after the long lines", text)

# --- 9. HELP lists only what is offered
code, text = c.command("HELP")
tap.ok(code == 214 and "STARTTLS" not in text and "AUTH" not in text and "BDAT" in text,
       "HELP lists neither STARTTLS nor AUTH (not offered)", text)
c.command("QUIT")
d.stop()

# --- 3b. without --postmaster: postmaster is refused at RCPT, and start-up says so
d = Daemon(binary, shards=1, args=["--relay-domains", "relay.test", "--route",
                                   f"relay.test=127.0.0.1:{down2.port}"]).start()
c = session(d.port)
c.command("MAIL FROM:<a@client.test>")
code, text = c.command("RCPT TO:<postmaster>")
tap.ok(code == 550 and "5.1.1" in text, "no --postmaster: <postmaster> refused at RCPT", text)
tap.ok(any("no --postmaster" in record.get("detail", "") for record in d.events("warning")),
       "and a start-up warning names --postmaster", d.stderr_lines[-5:])
c.close()
d.stop()

# --- 5. slow senders: deadlines per command line and per DATA transfer, shorter under load
d = Daemon(binary, shards=1, args=[
    "--timeout-command", "2s", "--timeout-data-block", "3s", "--min-data-rate", "1000",
    "--relay-domains", "relay.test", "--route", f"relay.test=127.0.0.1:{down2.port}"]).start()


def trickle(c, data, pause):
    """Sends one octet every `pause` seconds; returns how many went out before the server
    closed the connection (len(data) when it never did)."""
    for i in range(len(data)):
        try:
            c.sock.sendall(data[i:i + 1])
        except OSError:
            return i
        time.sleep(pause)
        c.sock.setblocking(False)
        try:
            if c.sock.recv(65536, socket.MSG_PEEK):  # a reply (421): the server gave up
                return i + 1
        except BlockingIOError:
            pass
        except OSError:
            return i + 1
        finally:
            c.sock.setblocking(True)
    return len(data)


def closed_with(c, code_prefix, timeout=10):
    c.sock.settimeout(timeout)
    data = b""
    try:
        while chunk := c.sock.recv(65536):
            data += chunk
    except (socket.timeout, ConnectionResetError):
        return False, data
    return code_prefix in data, data


c = session(d.port)
started = time.monotonic()
sent = trickle(c, b"NOOP " + b"x" * 40 + b"\r\n", 0.25)  # 11.5 s if never cut
ok, data = closed_with(c, b"421 4.4.2")
tap.ok(ok and sent < 47, f"a command line trickled at 4 octets/s is cut (421 4.4.2) after {sent} "
       f"octets, {time.monotonic() - started:.1f} s (--timeout-command 2s)", data)

c = session(d.port)
c.command("MAIL FROM:<a@client.test>")
c.command("RCPT TO:<user@relay.test>")
c.command("DATA")
started = time.monotonic()
sent = trickle(c, b"Subject: slow\r\n\r\n" + b"y" * 60 + b"\r\n.\r\n", 0.2)  # 16 s if never cut
ok, data = closed_with(c, b"421 4.4.2")
tap.ok(ok and sent < 81, f"DATA trickled at 5 octets/s (< --min-data-rate 1000) is cut after "
       f"{sent} octets, {time.monotonic() - started:.1f} s", data)

c = session(d.port)
c.command("MAIL FROM:<a@client.test>")
c.command("RCPT TO:<user@relay.test>")
c.command("DATA")
started = time.monotonic()
for block in range(10):  # 4000 octets every 0.5 s (8000/s), 5 s in all: longer than 3 s
    c.send((b"X-Block: " + b"z" * 69 + b"\r\n") * 50)
    time.sleep(0.5)
c.send(b"\r\nbody\r\n.\r\n")
code, text = c.reply()
tap.ok(code == 250, f"DATA above the minimum rate may take longer than --timeout-data-block "
       f"({time.monotonic() - started:.1f} s)", text)
c.command("QUIT")
d.stop()

# Under load: idle sessions get the short timeout, already open ones too.
d = Daemon(binary, shards=1, args=[
    "--timeout-command", "120s", "--timeout-under-load", "1s", "--max-sessions-per-shard", "10",
    "--load-threshold", "50"]).start()
first = [session(d.port, ehlo=False) for _ in range(3)]  # below the threshold
more = [session(d.port, ehlo=False) for _ in range(3)]   # 6 of 10: above 50 %
started = time.monotonic()
results = [closed_with(c, b"421 4.4.2", timeout=30)[0] for c in first + more]
tap.ok(all(results), f"above the load threshold every idle session is timed out with the short "
       f"timeout ({time.monotonic() - started:.1f} s; --timeout-command is 120 s)", results)
tap.ok(d.metrics().get("ringmta_load_episodes_total", 0) >= 1, "the load episode is counted")
d.stop()

# --- 9. SIGTERM with an idle client: 421 at once, no wait for the whole grace period
d = Daemon(binary, shards=1, args=["--shutdown-grace", "120s"]).start()
idle = session(d.port)
busy = session(d.port)
busy.command("MAIL FROM:<a@client.test>")  # in a transaction: may finish within the grace
started = time.monotonic()
d.process.send_signal(signal.SIGTERM)
ok, data = closed_with(idle, b"421 4.3.2", timeout=30)
tap.ok(ok, "SIGTERM: an idle session gets 421 4.3.2 at once", data)
code, text = busy.command("RSET")
tap.ok(code == 250, "the session in a transaction goes on until it is over", text)
ok, data = closed_with(busy, b"421 4.3.2", timeout=30)
tap.ok(b"421 4.3.2" in busy.buffer + data, "and gets 421 once its transaction is over",
       busy.buffer + data)
try:
    status = d.process.wait(60)
except Exception:  # noqa: BLE001 - a hang is the failure reported below
    status = None
tap.ok(status == 0, f"the daemon exits cleanly after {time.monotonic() - started:.1f} s, "
       "not after the 120 s grace", d.stderr_lines[-3:])
tap.done()
