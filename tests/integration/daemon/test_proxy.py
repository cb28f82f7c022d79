#!/usr/bin/env python3
"""Behind a load balancer: HAProxy forwards to ringmta with PROXY protocol v1 and v2. ringmta
must see the real client address (for relay policy, per-client limits and the Received:
header), answer HAProxy's own health checks, and refuse a connection without the header.
usage: test_proxy.py RINGMTA"""
import shutil
import socket
import subprocess
import sys
import tempfile
import time

from harness import Conversation, Daemon, Tap, free_port, queued_id, spool_cat

tap = Tap()
binary = sys.argv[1]
if not shutil.which("haproxy"):
    tap.skip_all("haproxy is not installed")

daemon = Daemon(binary, args=["--proxy-protocol", "--mynetworks", "127.0.0.9/32",
                              "--relay-domains", "ours.test"]).start()
v1_port, v2_port = free_port(), free_port()
work = tempfile.mkdtemp(prefix="ringmta-haproxy-")
config = f"""global
    log stdout format raw local0 warning
defaults
    log global
    mode tcp
    timeout connect 5s
    timeout client 30s
    timeout server 30s
frontend smtp_v1
    bind 127.0.0.1:{v1_port}
    default_backend ringmta_v1
frontend smtp_v2
    bind 127.0.0.1:{v2_port}
    default_backend ringmta_v2
backend ringmta_v1
    server mta 127.0.0.1:{daemon.port} send-proxy
backend ringmta_v2
    option smtpchk HELO haproxy.test
    server mta 127.0.0.1:{daemon.port} send-proxy-v2 check check-send-proxy inter 300ms fall 2
"""
with open(f"{work}/haproxy.cfg", "w") as f:
    f.write(config)
haproxy = subprocess.Popen(["haproxy", "-f", f"{work}/haproxy.cfg"], stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True)
time.sleep(1.0)


def client_from(source, port):
    s = socket.socket()
    s.bind((source, 0))
    s.connect(("127.0.0.1", port))
    c = Conversation.__new__(Conversation)
    c.sock, c.buffer = s, b""
    s.settimeout(10)
    return c


for version, port in (("v1", v1_port), ("v2", v2_port)):
    c = client_from("127.0.0.9", port)
    code, _ = c.reply()
    tap.ok(code == 220, f"{version}: greeting through HAProxy")
    c.command("EHLO client.test")
    c.command("MAIL FROM:<a@client.test>")
    code, text = c.command("RCPT TO:<b@elsewhere.test>")
    tap.ok(code == 250, f"{version}: the real client (127.0.0.9, in mynetworks) may relay", text)
    c.command("DATA")
    c.send(b"Subject: proxied\r\n\r\nhello\r\n.\r\n")
    code, text = c.reply()
    stored = spool_cat(binary, daemon.spool, queued_id(text)) or b""
    tap.ok(b"([127.0.0.9])" in stored.split(b"\r\n\r\n")[0],
           f"{version}: Received: names the real client, not HAProxy", stored[:300])
    c.close()
    other = client_from("127.0.0.8", port)
    other.reply()
    other.command("EHLO other.test")
    other.command("MAIL FROM:<a@client.test>")
    code, text = other.command("RCPT TO:<b@elsewhere.test>")
    tap.ok(code == 554, f"{version}: another real client may not relay (554)", text)
    code, _ = other.command("RCPT TO:<b@ours.test>")
    tap.ok(code == 250, f"{version}: but may send to our domain")
    other.close()

# Issue 17 item 7: a header that arrives one byte per segment (before the fix: never
# completed, closed by the 10 s PROXY timeout without a greeting).
v2_body = bytes([127, 0, 0, 9, 127, 0, 0, 1, 0x10, 0, 0, 25])
for version, header in (("v1", b"PROXY TCP4 127.0.0.9 127.0.0.1 4096 25\r\n"),
                        ("v2", b"\r\n\r\n\0\r\nQUIT\n\x21\x11\x00\x0c" + v2_body)):
    c = client_from("127.0.0.1", daemon.port)
    c.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    for i in range(len(header)):
        c.send(header[i:i + 1])
        time.sleep(0.005)  # pacing, so each byte is its own segment and read
    code, _ = c.reply()
    tap.ok(code == 220, f"{version} header one byte per segment: greeting")
    c.command("EHLO client.test")
    c.command("MAIL FROM:<a@client.test>")
    code, text = c.command("RCPT TO:<b@elsewhere.test>")
    tap.ok(code == 250, f"{version} in pieces: the address in it (127.0.0.9) may relay", text)
    c.close()

raw = Conversation(daemon.port)
raw.send("EHLO no-proxy-header\r\n")
code, _ = raw.reply()
tap.ok(code is None, "a connection without a PROXY header is closed without a greeting")
# HAProxy's health checks send a PROXY v2 LOCAL header, then expect 220 and 250 for HELO.
time.sleep(1.5)  # several have run: two failures in a row would mark the server DOWN
tap.ok(haproxy.poll() is None, "HAProxy is still running (its health checks pass)")
haproxy.terminate()
output = haproxy.communicate(timeout=10)[0]
tap.ok("is DOWN" not in output, "HAProxy never saw ringmta as down", output[-1500:])
tap.ok(daemon.stop() == 0, "clean exit")
shutil.rmtree(work, ignore_errors=True)
tap.done()
