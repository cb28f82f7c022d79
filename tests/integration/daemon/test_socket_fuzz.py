#!/usr/bin/env python3
"""Socket fuzzer (issue 10): random mutations of valid SMTP sessions against the real daemon
for a bounded time, seeded (the seed is printed; SOCKET_FUZZ_SEED=N replays the same sessions,
SOCKET_FUZZ_SECONDS=N sets the budget, default 40), once with --bare-line-endings reject and
once with normalize. ringmta relays every accepted message to a lax downstream that ends lines
at a bare CR or LF (lax_downstream.py), as a vulnerable next hop would.

Sessions: EHLO, 1-3 transactions by DATA or BDAT (one or several chunks), pipelined or not,
sent in random pieces with random pauses; bodies with dot lines, long lines, 8-bit octets,
BDAT messages without a final CRLF,
and mutations: bare CR, bare LF, NUL, "<CR>.<CR>"-style end markers followed by smuggled
commands. A share of "chaos" sessions also breaks framing on purpose (wrong BDAT sizes,
unstuffed end markers, garbage commands, huge or bad sizes, abrupt closes).

Checks: (1) every downstream message begins with ringmta's Received: header carrying the id
of a message ringmta answered 250 (a message split off by a bare CR has none: smuggling);
(2) no id arrives twice, and messages whose 250 the client did not see are no more than the
sessions ended by a reset (which drops unread replies); (3) every message of a well-framed session arrives whole (it ends
with its X-Fuzz-End trailer: nothing cut at a bare-CR "." line); (4) every message answered
250 arrives (nothing lost, no delivery jammed by a body without final CRLF); (5) the daemon
never crashes, answers a probe after each phase, and the server side of every session ends
within a bound (no hang); (6) it stops cleanly on SIGTERM.
usage: test_socket_fuzz.py RINGMTA_BINARY"""
import os
import random
import re
import socket
import sys
import threading
import time

from harness import Conversation, Daemon, Tap
from lax_downstream import LaxDownstream

tap = Tap()
binary = sys.argv[1] if len(sys.argv) > 1 else None
SECONDS = float(os.environ.get("SOCKET_FUZZ_SECONDS", "40"))
SEED = int(os.environ.get("SOCKET_FUZZ_SEED", str(random.SystemRandom().randrange(2 ** 31))))
WORKERS = 6
if __name__ == "__main__":
    print(f"# socket fuzz seed {SEED} (replay: SOCKET_FUZZ_SEED={SEED}), {SECONDS:.0f} s",
          flush=True)

SMUGGLED = (b"mail FROM:<smuggled@evil.test>\r\nrcpt TO:<victim@fuzz.test>\r\ndata\r\n"
            b"X-Smuggled: yes\r\n\r\nsmuggled body\r\n")
MARKERS = [b"\r.\r", b"\n.\n", b"\r\n.\r", b"\r.\r\n", b"\n.\r\n", b"\r\n.\n", b"\n.\r",
           b"\r.\n", b"\r\r\n.\r\r\n", b"\r\n.\x00\r\n"]
CONTENT_MUTATIONS = [b"\r", b"\n", b"\x00", b"\r\n.", b".\r\n", b"..\r\n"]


def dot_stuff(data):
    return re.sub(rb"(^|\r\n)\.", rb"\1..", data)


def make_body(rng, message_id):
    lines = [b"X-Fuzz-Id: " + message_id, b"Subject: fuzz " + message_id, b""]
    for _ in range(rng.randrange(1, 40)):
        kind = rng.random()
        if kind < 0.15:
            lines.append(b"." * rng.randrange(1, 3) + b"dot line")
        elif kind < 0.2:
            lines.append(b".")
        elif kind < 0.25:
            lines.append(bytes(rng.randrange(128, 256) for _ in range(rng.randrange(1, 30))))
        elif kind < 0.28:
            lines.append(b"L" * rng.randrange(900, 1200))
        else:
            lines.append(b"text %d " % rng.randrange(10 ** 6) + b"w" * rng.randrange(0, 80))
    body = b"\r\n".join(lines) + b"\r\n"
    for _ in range(rng.choice([0, 0, 1, 2, 3])):  # content mutations: the policy's business
        at = rng.randrange(len(body) + 1)
        piece = rng.choice(MARKERS) + SMUGGLED if rng.random() < 0.4 else \
            rng.choice(CONTENT_MUTATIONS)
        body = body[:at] + piece + body[at:]
    return body + b"X-Fuzz-End: " + message_id + b"\r\n"


def chaos(rng, data):
    """Framing-breaking mutations, for chaos sessions only."""
    choice = rng.randrange(6)
    if choice == 0:
        at = rng.randrange(len(data) + 1)
        return data[:at] + b"\r\n.\r\n" + SMUGGLED + data[at:]
    if choice == 1:
        return re.sub(rb"BDAT (\d+)", lambda m: b"BDAT %d" % max(0, int(m.group(1)) +
                                                                 rng.randrange(-20, 21)), data, 1)
    if choice == 2:
        return data + rng.choice([b"BDAT 18446744073709551615\r\n", b"BDAT x\r\n",
                                  b"GARBAGE\r\n" * 3, b"NOOP " + b"n" * 700 + b"\r\n"])
    if choice == 3:
        at = rng.randrange(len(data) + 1)
        return data[:at] + bytes(rng.randrange(256) for _ in range(rng.randrange(1, 20))) + \
            data[at:]
    if choice == 4:
        return data[:rng.randrange(len(data) + 1)]  # abrupt end (no QUIT)
    return data.replace(b"\r\n", b"\n", rng.randrange(1, 4))


class Session:
    """One client connection: builds, sends (in pieces), reads every reply until EOF."""

    def __init__(self, port, rng, worker, number, stats):
        self.port, self.rng, self.stats = port, rng, stats
        self.tag = f"{worker}-{number}".encode()
        self.chaos = rng.random() < 0.2
        self.trailers = []  # message ids of this session (only meaningful without chaos)

    def build(self):
        rng = self.rng
        out = [b"EHLO fuzz%s.test\r\n" % self.tag]
        for n in range(rng.randrange(1, 4)):
            message_id = self.tag + b"-%d" % n
            self.trailers.append(message_id)
            body = make_body(rng, message_id)
            rcpts = b"".join(b"RCPT TO:<r%d@fuzz.test>\r\n" % rng.randrange(5)
                             for _ in range(rng.randrange(1, 4)))
            head = b"MAIL FROM:<fuzz-%s@client.test>\r\n" % message_id + rcpts
            if rng.random() < 0.5:
                out.append(head + b"DATA\r\n")
                out.append(("body", dot_stuff(body) + b".\r\n"))
            else:
                if rng.random() < 0.2:
                    body = body[:-2]  # RFC 3030 allows a message without its final CRLF
                pieces, at = [], 0
                while at < len(body):
                    size = rng.randrange(1, len(body) - at + 1)
                    pieces.append(body[at:at + size])
                    at += size
                chunks = b"".join(b"BDAT %d%s\r\n" % (len(p), b" LAST" if i == len(pieces) - 1
                                                       else b"") + p
                                  for i, p in enumerate(pieces))
                out.append(head + chunks)
            if rng.random() < 0.1:
                out.append(b"RSET\r\nNOOP\r\n")
        out.append(b"QUIT\r\n")
        return out

    def run(self):
        steps = self.build()
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=20)
        received = b""
        mark = 0
        try:
            received += sock.recv(4096)
            for step in steps:
                body = isinstance(step, tuple)
                data = step[1] if body else step
                if body and not self.chaos:  # a body only after 354 (RFC 2920 §3.1)
                    received, go = self._wait_for_354(sock, received, mark)
                    if not go:
                        break
                if not body:
                    mark = len(received)
                if self.chaos and self.rng.random() < 0.3:
                    data = chaos(self.rng, data)
                self._send_in_pieces(sock, data)
            sock.settimeout(15)
            while chunk := sock.recv(65536):
                received += chunk
        except socket.timeout:
            self.stats["hangs"].append(self.tag)
        except OSError:
            # The server closed on us (421, chaos). A reset also drops replies not yet read,
            # so a message may have been accepted without this client seeing its 250.
            with self.stats["lock"]:
                self.stats["resets"] += 1
        finally:
            sock.close()
        ids = re.findall(rb"queued as ([0-9a-f]{16})", received)
        with self.stats["lock"]:
            self.stats["acked"].update(i.decode() for i in ids)
            self.stats["sessions"] += 1
            if not self.chaos:
                self.stats["whole"].update(t.decode() for t in self.trailers)

    def _send_in_pieces(self, sock, data):
        at = 0
        while at < len(data):
            size = self.rng.choice([1, 2, 7, 64, 1500, len(data)])
            sock.sendall(data[at:at + size])
            at += size
            if self.rng.random() < 0.05:
                time.sleep(self.rng.random() * 0.02)

    @staticmethod
    def _wait_for_354(sock, received, mark):
        """(received, True) once DATA got 354; False when the server closed or said 421."""
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            replies = received[mark:]
            if re.search(rb"(^|\n)354[ -]", replies):
                return received, True
            if re.search(rb"(^|\n)(421|554|503)[ -]", replies):
                return received, False
            chunk = sock.recv(65536)
            if not chunk:
                return received, False
            received += chunk
        raise socket.timeout()


def run_phase(mode, seconds, phase):
    down = LaxDownstream()
    d = Daemon(binary, shards=2, args=[
        "--bare-line-endings", mode, "--relay-domains", "fuzz.test",
        "--route", f"fuzz.test=127.0.0.1:{down.port}", "--retry-schedule", "1s",
        "--timeout-command", "3s", "--timeout-data-block", "3s", "--max-message-size", "1M",
        "--max-errors-per-session", "50", "--shutdown-grace", "5s"]).start()
    stats = {"lock": threading.Lock(), "acked": set(), "whole": set(), "hangs": [],
             "sessions": 0, "resets": 0}
    stop_at = time.monotonic() + seconds

    def worker(index):
        rng = random.Random(SEED * 1000 + phase * 100 + index)
        number = 0
        while time.monotonic() < stop_at and d.process.poll() is None:
            Session(d.port, rng, f"{phase}{index}", number, stats).run()
            number += 1

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(WORKERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(seconds + 120)
    alive = d.process.poll() is None
    tap.ok(alive, f"{mode}: the daemon survived {stats['sessions']} fuzzed sessions")
    tap.ok(not stats["hangs"], f"{mode}: the server side of every session ended (no hang)",
           stats["hangs"][:10])
    # Every acknowledged message reaches the downstream (retries every second).
    def delivered_ids():
        found = {}
        for m in down.snapshot():
            head = re.match(rb"Received: from .*?\bid ([0-9a-f]{16})\b", m["data"], re.S)
            key = head.group(1).decode() if head else None
            found.setdefault(key, []).append(m)
        return found
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not stats["acked"] <= set(delivered_ids()):
        time.sleep(0.5)
    found = delivered_ids()
    foreign = found.get(None, [])
    tap.ok(not foreign, f"{mode}: no message downstream without ringmta's Received: header "
           f"(smuggling); {sum(len(v) for v in found.values())} messages downstream",
           [m["data"][:200] for m in foreign[:5]])
    unknown = [k for k in found if k is not None and k not in stats["acked"]]
    tap.ok(len(unknown) <= stats["resets"],
           f"{mode}: downstream messages whose 250 the client never saw ({len(unknown)}) are at "
           f"most the sessions cut off by a reset ({stats['resets']})", unknown[:10])
    twice = [k for k, v in found.items() if k is not None and len(v) > 1]
    tap.ok(not twice, f"{mode}: no message arrived twice", twice[:10])
    missing = sorted(stats["acked"] - set(found))
    tap.ok(not missing, f"{mode}: all {len(stats['acked'])} acknowledged messages arrived",
           missing[:10])
    cut = []
    for key, messages in found.items():
        for m in messages:
            # Ids are WORKER-NUMBER-N in ASCII digits; a mutated copy of the header may
            # carry any bytes, and only ids of well-framed messages are checked.
            fuzz_id = re.search(rb"X-Fuzz-Id: ([0-9]+-[0-9]+-[0-9]+)\r\n", m["data"])
            if fuzz_id and fuzz_id.group(1).decode() in stats["whole"] and \
                    not m["data"].endswith(b"X-Fuzz-End: " + fuzz_id.group(1) + b"\r\n"):
                cut.append(fuzz_id.group(1))
    tap.ok(not cut, f"{mode}: every well-framed message arrived whole (trailer last)", cut[:10])
    probe = Conversation(d.port)
    code, _ = probe.reply()
    probe.command("EHLO probe.test")
    probe.command("MAIL FROM:<probe@client.test>")
    probe.command("RCPT TO:<probe@fuzz.test>")
    probe.command("DATA")
    probe.send(b"Subject: probe\r\n\r\nprobe\r\n.\r\n")
    code2, text = probe.reply()
    tap.ok(code == 220 and code2 == 250, f"{mode}: a probe transaction succeeds after fuzzing",
           text)
    probe.close()
    status = d.stop(timeout=60)
    tap.ok(status == 0, f"{mode}: clean exit on SIGTERM", d.stderr_lines[-5:])
    down.stop()


if __name__ == "__main__":  # bench/e2e/fuzz_memory.py imports the sessions only
    run_phase("reject", SECONDS / 2, 1)
    run_phase("normalize", SECONDS / 2, 2)
    tap.done()
