#!/usr/bin/env python3
"""Logs that never stall mail, their outputs, and the records operators search for (issue 9,
bug 4 and the log items).

1. A log reader that stops reading (SIGSTOP on the process reading our stdout pipe) for 30 s
   under load: 250 replies keep coming; records that do not fit are dropped, counted in
   ringmta_log_records_dropped_total, and a `log_records_dropped` record says how many once
   the reader is back. Before, shards wrote their logs with a blocking write: mail stopped.
2. File output, logrotate style: rename the file, SIGUSR1, records go on in a new file; none
   is lost or split.
3. syslog: RFC 5424 datagrams on a unix socket (a receiver of ours on a temp path).
4. The records: connect/disconnect with a session id, every rejection with its reason, and
   deliveries with size, MX host and IP:port apart, attempt, session and sub-second delays.
usage: test_logs.py RINGMTA"""
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

from harness import Conversation, Daemon, Tap, free_port, queued_id

tap = Tap()
binary = sys.argv[1]
work = tempfile.mkdtemp(prefix="ringmta-logs-")


def send(port, n, domain="example.com", client=None):
    c = Conversation(port)
    c.reply()
    c.command("EHLO client.test")
    codes = [c.command(line)[0] for line in
             ("MAIL FROM:<a@client.test>", f"RCPT TO:<u{n}@{domain}>", "DATA")]
    code, text = c.command(f"Subject: {n}\r\n\r\nbody {n}\r\n.")
    c.command("QUIT")
    c.close()
    return codes + [code], queued_id(text)


def wait_for(condition, timeout=20):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return False


def json_lines(path):
    try:
        with open(path) as f:
            return f.read().splitlines()
    except OSError:
        return []


class SmallLoad:
    """Threads sending small messages, 5 per connection, counting 250s; bounded by stop()."""

    def __init__(self, port, threads=6):
        self.port, self.acked, self.errors = port, 0, []
        self._lock, self._stop = threading.Lock(), threading.Event()
        self._threads = [threading.Thread(target=self._work, daemon=True) for _ in range(threads)]
        for t in self._threads:
            t.start()

    def _work(self):
        n = 0
        while not self._stop.is_set():
            try:
                c = Conversation(self.port, timeout=60)
                c.reply()
                c.command("EHLO load.test")
                for _ in range(5):
                    n += 1
                    c.send(f"MAIL FROM:<l@client.test>\r\nRCPT TO:<n{n}@example.com>\r\nDATA\r\n")
                    if [c.reply()[0] for _ in range(3)] != [250, 250, 354]:
                        raise RuntimeError("envelope refused")
                    c.send(f"Subject: {n}\r\n\r\nsmall body\r\n.\r\n")
                    if c.reply()[0] != 250:
                        raise RuntimeError("message refused")
                    with self._lock:
                        self.acked += 1
                c.command("QUIT")
                c.close()
            except Exception as problem:  # noqa: BLE001
                with self._lock:
                    self.errors.append(repr(problem))
                return

    def stop(self):
        self._stop.set()
        for t in self._threads:
            t.join(90)


# ---- 1. a stalled log reader does not stall mail
log_path = os.path.join(work, "stdout.log")
with open(log_path, "wb") as sink:
    reader = subprocess.Popen(["cat"], stdin=subprocess.PIPE, stdout=sink)
daemon = Daemon(binary, stdout=reader.stdin, args=["--log-buffer-size", "64k"]).start()
reader.stdin.close()  # the daemon holds the pipe's write end now
load = SmallLoad(daemon.port)
wait_for(lambda: load.acked >= 20)
reader.send_signal(signal.SIGSTOP)
stalled_at = load.acked
time.sleep(20)
after_20s = load.acked
time.sleep(10)
after_30s = load.acked
reader.send_signal(signal.SIGCONT)
print(f"# 250s: {stalled_at} before the stall, {after_30s - stalled_at} during 30 s "
      f"({after_30s - after_20s} in the last 10 s)")
tap.ok(after_30s - stalled_at >= 250, "250 replies keep coming while the log reader is stopped")
tap.ok(after_30s - after_20s >= 250, "still coming in the last 10 s of the stall")
load.stop()
tap.ok(not load.errors, "no session failed", load.errors[:5])
dropped = daemon.metrics().get("ringmta_log_records_dropped_total", 0)
tap.ok(dropped > 0, f"dropped records are counted ({dropped:.0f})")
tap.ok(daemon.stop() == 0, "clean exit")
reader.wait(30)
lines = json_lines(log_path)
records = []
for line in lines:
    try:
        records.append(json.loads(line))
    except ValueError:
        records.append(None)
tap.ok(None not in records and records, f"every line written is a whole record ({len(lines)})")
reported = sum(r["records"] for r in records if r and r["event"] == "log_records_dropped")
tap.ok(reported > 0, f"once drained, the log says how many were dropped ({reported})")

# ---- 2. file output, reopened on SIGUSR1 after logrotate renamed it
log_file = os.path.join(work, "ringmta.log")
daemon = Daemon(binary, args=["--log-output", "file", "--log-file", log_file],
                log_lines=lambda: json_lines(log_file) + json_lines(log_file + ".1")).start()
first_ids = [send(daemon.port, n)[1] for n in range(5)]
tap.ok(wait_for(lambda: len(daemon.events("received")) == 5), "records go to the file")
os.rename(log_file, log_file + ".1")
daemon.process.send_signal(signal.SIGUSR1)
tap.ok(wait_for(lambda: any('"log_reopened"' in line for line in json_lines(log_file))),
       "SIGUSR1: the file is opened again under its name")
second_ids = [send(daemon.port, n)[1] for n in range(5, 10)]
tap.ok(wait_for(lambda: len(daemon.events("received")) == 10), "records go on")
tap.ok(daemon.stop() == 0, "clean exit")
old = [json.loads(line) for line in json_lines(log_file + ".1")]
new = [json.loads(line) for line in json_lines(log_file)]
tap.ok(sorted(r["id"] for r in old if r["event"] == "received") == sorted(first_ids),
       "the rotated file has the records from before")
tap.ok(sorted(r["id"] for r in new if r["event"] == "received") == sorted(second_ids),
       "the new file the ones after, none lost or twice")
tap.ok(any(r["event"] == "signal" and r["signal"] == "USR1" for r in old + new),
       "the signal itself is logged")

# ---- 3. syslog: RFC 5424 on a unix datagram socket
socket_path = os.path.join(work, "log.sock")
datagrams = []


def receive(server):
    while True:
        try:
            data = server.recv(65536)
        except OSError:
            return
        datagrams.append(data.decode())


receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
receiver.bind(socket_path)
threading.Thread(target=receive, args=(receiver,), daemon=True).start()
pattern = re.compile(r"^<(\d+)>1 (\S+) (\S+) ringmta (\d+) (\S+) - (\{.*\})$")


def syslog_records():
    out = []
    for d in list(datagrams):
        match = pattern.match(d)
        if match:
            out.append(match.group(6))
    return out


daemon = Daemon(binary, args=["--log-output", "syslog", "--log-syslog-socket", socket_path],
                log_lines=syslog_records).start()
code, message_id = send(daemon.port, 1)
tap.ok(wait_for(lambda: daemon.events("received")), "records arrive as syslog datagrams")
received = [d for d in datagrams if '"event":"received"' in d]
match = pattern.match(received[0]) if received else None
tap.ok(match is not None, "in RFC 5424 form", datagrams[:3])
if match:
    priority, stamp, host, pid, msgid, body = match.groups()
    tap.ok(int(priority) == 2 * 8 + 6, f"facility mail, severity informational ({priority})")
    tap.ok(re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$", stamp), "RFC 3339 timestamp")
    tap.ok(host == "mx.test.example" and int(pid) == daemon.process.pid and msgid == "received",
           "hostname, procid and the event as msgid", match.groups()[:5])
    tap.ok(json.loads(body)["id"] == message_id, "the record itself as the message")
tap.ok(daemon.stop() == 0, "clean exit")
receiver.close()

# ---- 4. the records operators search for
mx_port = free_port()
mx = socket.socket()
mx.bind(("127.0.0.1", mx_port))
mx.listen(16)


def tiny_mx():
    """A minimal SMTP server that accepts every message."""
    while True:
        try:
            client, _ = mx.accept()
        except OSError:
            return
        with client:
            stream = client.makefile("rb")
            client.sendall(b"220 tiny ESMTP\r\n")
            in_data = False
            for line in stream:
                if in_data:
                    if line == b".\r\n":
                        in_data = False
                        client.sendall(b"250 2.0.0 taken as T1\r\n")
                    continue
                verb = line[:4].upper()
                if verb == b"DATA":
                    in_data = True
                    client.sendall(b"354 go\r\n")
                elif verb == b"QUIT":
                    client.sendall(b"221 bye\r\n")
                    break
                else:
                    client.sendall(b"250 ok\r\n")


threading.Thread(target=tiny_mx, daemon=True).start()
closed = free_port()
daemon = Daemon(binary, args=["--route", f"good.test=127.0.0.1:{mx_port}",
                              "--route", f"dead.test=127.0.0.1:{closed}",
                              "--mynetworks", "10.9.9.0/24",
                              "--relay-domains", "good.test,dead.test",
                              "--max-sessions-per-client", "3"]).start()
send(daemon.port, 1, "good.test")
send(daemon.port, 2, "dead.test")
c = Conversation(daemon.port)
c.reply()
c.command("EHLO client.test")
c.command("MAIL FROM:<a@client.test>")
tap.ok(c.command("RCPT TO:<x@elsewhere.test>")[0] == 554, "relaying is refused")
tap.ok(c.command("BOGUS")[0] == 500, "a protocol error")
# The two sessions above have quit; each frees its per-client place when the daemon has
# closed it: wait until only `c` is open, or one held connection would be over the limit early.
wait_for(lambda: sum(v for k, v in daemon.metrics().items()
                     if k.split("{")[0] == "ringmta_sessions") == 1)
held, greetings = [], []
for _ in range(3):  # one at a time: with `c` the third is over the per-client limit of 3
    held.append(Conversation(daemon.port))
    greetings.append(held[-1].reply()[0])
tap.ok(greetings == [220, 220, 421], f"a client over its session limit gets 421 ({greetings})")
for h in held + [c]:
    h.close()
tap.ok(wait_for(lambda: daemon.events("delivered") and daemon.events("deferred")),
       "one message delivered, one deferred")
delivered = daemon.events("delivered")[0]
deferred = daemon.events("deferred")[0]
tap.ok(delivered["size"] > 0 and delivered["mx"] == "[127.0.0.1]" and
       delivered["ip"] == f"127.0.0.1:{mx_port}" and delivered["attempt"] == 1,
       "delivered: size, MX host, IP:port and the attempt number", delivered)
tap.ok(re.match(r"^[0-9a-f]{16}$", delivered.get("session", "")) is not None,
       "delivered: the outbound session id", delivered)
tap.ok(isinstance(delivered["delay"], float) and isinstance(delivered["delay_attempt"], float),
       "delivered: delays in seconds with sub-second precision", delivered)
tap.ok(deferred["ip"] == f"127.0.0.1:{closed}" and deferred["attempt"] == 1 and
       "retry_at_s" in deferred, "deferred: the address tried, attempt and retry time", deferred)
tap.ok(daemon.stop() == 0, "clean exit")
connects, disconnects = daemon.events("connect"), daemon.events("disconnect")
sessions = {r["session"] for r in connects}
tap.ok(len(connects) >= 6 and len(sessions) == len(connects), "connect records, one session id "
       "each", connects[:2])
tap.ok(sessions == {r["session"] for r in disconnects} and
       all("reason" in r and "duration" in r for r in disconnects),
       "a disconnect record for each, with its reason and duration", disconnects[:2])
received = daemon.events("received")
tap.ok(received and all(r["session"] in sessions for r in received),
       "received records name their session")
rejected = daemon.events("rejected")
replies = [r["reply"] for r in rejected]
tap.ok(any(r["reply"].startswith("554 5.7.1") and r.get("detail") == "x@elsewhere.test"
           for r in rejected), "relay denied: a record with the recipient", rejected)
tap.ok(any(r.startswith("500 ") for r in replies), "the protocol error: a record", replies)
tap.ok(any(r.startswith("421 4.7.0") for r in replies), "the session limit: a record", replies)
tap.ok(all(r.get("session") in sessions for r in rejected), "each names its session")
mx.close()

# Early talkers, with a greeting delay.
daemon = Daemon(binary, args=["--greeting-delay", "500ms"]).start()
early = Conversation(daemon.port)
early.send("EHLO too.early\r\n")
tap.ok(early.reply()[0] == 554, "an early talker gets 554")
early.close()
tap.ok(wait_for(lambda: any(r["reply"].startswith("554 5.5.0")
                            for r in daemon.events("rejected"))), "and a record")
tap.ok(daemon.stop() == 0, "clean exit")
tap.ok(any(r["reason"] == "early talker" for r in daemon.events("disconnect")),
       "its disconnect says why")
tap.done()
