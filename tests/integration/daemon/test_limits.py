#!/usr/bin/env python3
"""Every limit answers with the RFC's reply and the daemon keeps serving: relay access,
connections per client and per shard, idle timeout, early talkers, command and message size,
recipients, errors per session, SMTP smuggling; and bad configuration fails at start-up with a
clear message. usage: test_limits.py RINGMTA_BINARY"""
import shutil
import socket
import subprocess
import sys
import tempfile
import time

from harness import Conversation, Daemon, Tap, spool_list

tap = Tap()
binary = sys.argv[1]


def greeted(port):
    c = Conversation(port)
    code, text = c.reply()
    return c, code, text


# --- relay policy: no open relay by default
d = Daemon(binary, args=["--mynetworks", "10.0.0.0/8", "--relay-domains", "example.com",
                         "--max-recipients", "3", "--max-errors-per-session", "6",
                         "--max-message-size", "10k", "--max-hops", "7",
                         "--postmaster", "hostmaster@example.com"]).start()
c, code, _ = greeted(d.port)
tap.ok(code == 220, "greeting 220")
code, text = c.command("EHLO client.test")
tap.ok(code == 250 and "SIZE 10240" in text, "EHLO advertises SIZE 10240", text)
tap.ok("CHUNKING" in text and "BINARYMIME" not in text,
       "CHUNKING offered, BINARYMIME not (delivery could not pass binary data on intact)", text)
other, _, _ = greeted(d.port)  # its own session: the error must not count against c's limit
other.command("EHLO client.test")
code, text = other.command("MAIL FROM:<a@client.test> BODY=BINARYMIME")
tap.ok(code is not None and code >= 500, "MAIL BODY=BINARYMIME refused", text)
other.close()
c.command("MAIL FROM:<a@client.test>")
code, text = c.command("RCPT TO:<someone@elsewhere.org>")
tap.ok(code == 554 and "5.7.1" in text, "relay to a foreign domain: 554 5.7.1", text)
code, _ = c.command("RCPT TO:<user@example.com>")
tap.ok(code == 250, "relay domain accepted from any client")
code, _ = c.command("RCPT TO:<postmaster>")
tap.ok(code == 250, "<postmaster> always accepted (RFC 5321 4.5.1)")
code, _ = c.command("RCPT TO:<other@EXAMPLE.com>")
tap.ok(code == 250, "domain match ignores case")
code, text = c.command("RCPT TO:<fourth@example.com>")
tap.ok(code == 452 and "4.5.3" in text, "recipient over the limit: 452 4.5.3", text)
code, _ = c.command("RSET")
tap.ok(code == 250, "RSET")

# message size: declared and actual
code, text = c.command("MAIL FROM:<a@client.test> SIZE=20000")
tap.ok(code == 552 and "5.3.4" in text, "MAIL SIZE over the limit: 552 5.3.4", text)
c.command("MAIL FROM:<a@client.test>")
c.command("RCPT TO:<user@example.com>")
code, _ = c.command("DATA")
tap.ok(code == 354, "DATA 354")
c.send(b"Subject: big\r\n\r\n" + (b"y" * 78 + b"\r\n") * 200 + b".\r\n")
code, text = c.reply()
tap.ok(code == 552 and "5.3.4" in text, "message over the limit: 552 5.3.4 at end of data", text)
c.command("MAIL FROM:<a@client.test>")
c.command("RCPT TO:<user@example.com>")
c.command("DATA")
c.send(b"Subject: small\r\n\r\nfits\r\n.\r\n")
code, text = c.reply()
tap.ok(code == 250, "the session goes on: next message accepted", text)

# oversized command line and the error limit
code, text = c.command("NOOP " + "x" * 600)
tap.ok(code == 500 and "5.5.2" in text, "command line over 512: 500 5.5.2", text)
code, text = c.command("NOOP")
tap.ok(code == 250, "still in sync after the long line", text)
code, text = c.command("BOGUS")
tap.ok(code == 500 and "5.5.1" in text, "unknown command: 500 5.5.1", text)
code, text = c.command("BOGUS")
tap.ok(code == 500, "the sixth error still gets its own reply", text)
code, text = c.reply()
tap.ok(code == 421 and "4.7.0" in text, "then, at the error limit: 421 4.7.0", text)
tap.ok(c.closed(), "and the connection is closed")
c.close()

# SMTP smuggling: a bare LF dot line must not end the message or start another
c, _, _ = greeted(d.port)
c.command("EHLO client.test")
c.command("MAIL FROM:<a@client.test>")
c.command("RCPT TO:<user@example.com>")
c.command("DATA")
before = len(spool_list(binary, d.spool))
c.send(b"Subject: smuggle\r\n\r\nfirst\n.\nMAIL FROM:<evil@x>\r\nRCPT TO:<user@example.com>\r\n"
       b"DATA\r\nhidden\r\n.\r\n")
code, text = c.reply()
tap.ok(code is not None and code >= 500, "bare LF in a message: rejected with 5xx", text)
code, text = c.command("NOOP")
tap.ok(code == 250, "no smuggled commands were run: next reply is NOOP's", text)
tap.ok(len(spool_list(binary, d.spool)) == before, "nothing was queued")
c.close()

# mail loops (RFC 5321 §6.3): --max-hops 7 lets a message arrive with exactly 7 Received:
# fields; with 8 it is refused
def with_hops(count):
    return b"".join(b"Received: from hop%d by hop%d; Sat, 21 Nov 2026 21:55:35 +0000\r\n" %
                    (i, i + 1) for i in range(count)) + b"Subject: hops\r\n\r\nbody\r\n.\r\n"


c, _, _ = greeted(d.port)
c.command("EHLO client.test")
before = len(spool_list(binary, d.spool))
for hops, expected in ((8, 554), (7, 250)):
    c.command("MAIL FROM:<a@client.test>")
    c.command("RCPT TO:<user@example.com>")
    c.command("DATA")
    c.send(with_hops(hops))
    code, text = c.reply()
    if expected == 554:
        tap.ok(code == 554 and "5.4.6" in text, f"{hops} Received: fields (--max-hops 7): 554 5.4.6",
               text)
    else:
        tap.ok(code == 250, f"exactly {hops} Received: fields (--max-hops 7): accepted", text)
tap.ok(len(spool_list(binary, d.spool)) == before + 1, "only the message under the limit queued")
c.close()
tap.ok(d.stop() == 0, "clean exit")

# --- per-client and per-shard connection limits
d = Daemon(binary, shards=1, args=["--max-sessions-per-client", "3"]).start()
held = [greeted(d.port) for _ in range(3)]
tap.ok(all(code == 220 for _, code, _ in held), "three sessions from one address")
c, code, text = greeted(d.port)
tap.ok(code == 421 and "4.7.0" in text, "fourth from the same address: 421 4.7.0", text)
tap.ok(c.closed(), "and closed")
held[0][0].close()
time.sleep(0.3)
c, code, _ = greeted(d.port)
tap.ok(code == 220, "a slot frees when a session ends")
for conversation, _, _ in held[1:] + [(c, 0, "")]:
    conversation.close()
d.stop()

d = Daemon(binary, shards=1, args=["--max-sessions-per-shard", "2"]).start()
held = [greeted(d.port) for _ in range(2)]
c, code, text = greeted(d.port)
tap.ok(code == 421 and "4.7.0" in text, "over the session limit: 421 4.7.0", text)
for conversation, _, _ in held:
    conversation.close()
d.stop()

# --- idle timeout and early talkers
d = Daemon(binary, args=["--timeout-command", "1s", "--greeting-delay", "300ms"]).start()
c, code, _ = greeted(d.port)
tap.ok(code == 220, "a client that waits gets the greeting after the delay")
c.command("EHLO client.test")
started = time.monotonic()
code, text = c.reply()
tap.ok(code == 421 and "4.4.2" in text, "idle past the command timeout: 421 4.4.2", text)
tap.ok(c.closed(), "and closed")
c = Conversation(d.port)
c.send("EHLO early.test\r\n")
code, text = c.reply()
tap.ok(code == 554 and "5.5.0" in text, "early talker: 554 5.5.0", text)
tap.ok(c.closed(), "and closed")
metrics = d.metrics()
tap.ok(metrics.get("ringmta_early_talkers_total") == 1 and
       metrics.get("ringmta_session_timeouts_total") == 1, "metrics count both", metrics)
d.stop()

# --- bad configuration: a clear start-up error and a non-zero exit
def start_error(args, config_text=None):
    with tempfile.TemporaryDirectory() as work:
        command = [binary, "--spool", work + "/spool", "--allow-root"] + args
        if config_text is not None:
            with open(work + "/bad.toml", "w") as f:
                f.write(config_text)
            command += ["--config", work + "/bad.toml"]
        result = subprocess.run(command, capture_output=True, text=True, timeout=30)
        return result.returncode, result.stderr


code, err = start_error(["--listen", "127.0.0.1:25x"])
tap.ok(code == 2 and "--listen" in err and "127.0.0.1:25x" in err, "bad --listen value", err)
code, err = start_error(["--listen", "127.0.0.1:0"], "[limits]\nmax_message_size = \"huge\"\n")
tap.ok(code == 2 and "bad.toml:2: limits.max_message_size" in err, "bad value in the file", err)
code, err = start_error(["--listen", "127.0.0.1:0"], "[server]\nlisen = 1\n")
tap.ok(code == 2 and "unknown setting 'server.lisen'" in err, "unknown key in the file", err)
code, err = start_error(["--listen", "127.0.0.1:0", "--tls-ca", "/nonexistent/ca.pem"])
tap.ok(code == 2 and "--tls-ca" in err and "/nonexistent/ca.pem: cannot read" in err,
       "an unreadable --tls-ca file", err)
code, err = start_error(["--listen", "127.0.0.1:0", "--tls-policy", "strict"])
tap.ok(code == 2 and "--tls-policy" in err and "none, opportunistic, required or verify" in err,
       "a bad --tls-policy", err)
busy = socket.socket()
busy.bind(("127.0.0.1", 0))
busy.listen()
code, err = start_error(["--listen", f"127.0.0.1:{busy.getsockname()[1]}", "--admin-listen",
                         "127.0.0.1:0"])
tap.ok(code == 2 and "cannot listen on" in err and "in use" in err, "port in use", err)
busy.close()
tap.done()
