#!/usr/bin/env python3
"""One daemon per spool and per address (issue 9, bug 1), and the commands that must work
beside a live daemon.

A second ringmta on the same --spool came up, unlinked the first one's live files and lost
a message already answered 250. Now it exits 2 with "spool DIR is in use by pid N"; one on an
address another ringmta (or anything else) listens on exits 2 too, instead of silently taking
half of the connections. `ringmta spool ls|cat|export` read a live spool without changing a
byte of it. Also: --version, and check-config's exit status and output.
usage: test_instance.py RINGMTA"""
import hashlib
import os
import socket
import subprocess
import sys
import tempfile
import time

from harness import (Conversation, Daemon, Tap, export_spool, free_port, queued_id, spool_cat,
                     spool_list)

tap = Tap()
binary = sys.argv[1]
args = ["--retry-schedule", "1h"]  # DNS fails at once (harness): one deferral, then quiet


def send(daemon, n):
    c = Conversation(daemon.port)
    c.reply()
    c.command("EHLO client.test")
    for line in ("MAIL FROM:<a@client.test>", f"RCPT TO:<u{n}@example.com>", "DATA"):
        c.command(line)
    code, text = c.command(f"Subject: instance {n}\r\n\r\nbody {n}\r\n.")
    c.command("QUIT")
    c.close()
    return code, queued_id(text)


def snapshot(spool):
    """Every file of the spool: name → (size, mtime, sha256)."""
    out = {}
    for root, _, files in os.walk(spool):
        for name in files:
            path = os.path.join(root, name)
            stat = os.stat(path)
            with open(path, "rb") as f:
                digest = hashlib.sha256(f.read()).hexdigest()
            out[os.path.relpath(path, spool)] = (stat.st_size, stat.st_mtime_ns, digest)
    return out


def settled(spool, timeout=20):
    """A snapshot once two in a row, 1 s apart, are equal."""
    deadline = time.monotonic() + timeout
    previous = snapshot(spool)
    while time.monotonic() < deadline:
        time.sleep(1)
        current = snapshot(spool)
        if current == previous:
            return current
        previous = current
    return None


def run(command, timeout=20):
    """(exit status, stderr); a command still running after `timeout` is killed (None).
    A daemon started here as root says so (--allow-root), as Daemon does."""
    if os.geteuid() == 0 and command[1].startswith("--"):
        command = command + ["--allow-root"]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
        return done.returncode, done.stderr
    except subprocess.TimeoutExpired as expired:
        return None, (expired.stderr or b"").decode(errors="replace")


first = Daemon(binary, args=args).start()
code, message_id = send(first, 1)
tap.ok(code == 250 and message_id, "the first daemon accepts a message")
deadline = time.monotonic() + 20
while not first.events("deferred") and time.monotonic() < deadline:
    time.sleep(0.2)
before = settled(first.spool)
tap.ok(before is not None, "the live spool is quiet (nothing to deliver for an hour)")

# Readers on a live spool: right answers, and not one byte changed.
listing = spool_list(binary, first.spool)
tap.ok([m["id"] for m in listing] == [message_id], "spool ls lists the queued message", listing)
stored = spool_cat(binary, first.spool, message_id)
tap.ok(stored is not None and b"body 1" in stored, "spool cat prints it")
exported = export_spool(binary, first.spool)
tap.ok(list(exported) == [message_id], "spool export writes it")
tap.ok(snapshot(first.spool) == before, "ls, cat and export changed nothing in the live spool")

# A second daemon on the same spool refuses to start and touches nothing.
status, errors = run([binary, "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0",
                      "--spool", first.spool, "--shards", "2", "--resolver", "127.0.0.1:9"])
tap.ok(status == 2, f"a second daemon on the same spool exits 2 (got {status})", errors)
expected = f"spool {first.spool} is in use by pid {first.process.pid}"
tap.ok(expected in errors, "it says which pid holds the spool", errors)
tap.ok(snapshot(first.spool) == before, "the refused daemon changed nothing in the spool")

# A second daemon on the same address (its own spool) refuses too.
status, errors = run([binary, "--listen", f"127.0.0.1:{first.port}", "--admin-listen",
                      "127.0.0.1:0", "--spool", tempfile.mkdtemp(prefix="ringmta-spool-"),
                      "--shards", "2", "--resolver", "127.0.0.1:9"])
tap.ok(status == 2, f"a second daemon on the same address exits 2 (got {status})", errors)
tap.ok(f"127.0.0.1:{first.port} is in use by ringmta pid {first.process.pid}" in errors,
       "it names the address and the ringmta that has it", errors)
status, errors = run([binary, "--listen", f"0.0.0.0:{first.port}", "--admin-listen",
                      "127.0.0.1:0", "--spool", tempfile.mkdtemp(prefix="ringmta-spool-"),
                      "--shards", "2", "--resolver", "127.0.0.1:9"])
tap.ok(status == 2 and "server.listen" in errors and "in use" in errors,
       "the wildcard address over it is refused as well", errors)

# Another program on the port (no SO_REUSEPORT).
other = socket.socket()
other.bind(("127.0.0.1", 0))
other.listen(1)
status, errors = run([binary, "--listen", f"127.0.0.1:{other.getsockname()[1]}",
                      "--admin-listen", "127.0.0.1:0", "--spool",
                      tempfile.mkdtemp(prefix="ringmta-spool-"), "--resolver", "127.0.0.1:9"])
tap.ok(status == 2 and "server.listen" in errors, "an address another program holds: exit 2",
       errors)
other.close()

# The first daemon never noticed: it still takes mail, and after a restart all of it is there.
code, second_id = send(first, 2)
tap.ok(code == 250, "the first daemon still accepts mail")
tap.ok(first.stop() == 0, "the first daemon stops cleanly")
again = Daemon(binary, spool=first.spool, args=args).start()
ids = sorted(m["id"] for m in spool_list(binary, first.spool))
tap.ok(ids == sorted([message_id, second_id]), "after a restart both messages are queued", ids)
tap.ok(again.stop() == 0, "the restarted daemon stops cleanly")

# --version and check-config.
done = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=10)
tap.ok(done.returncode == 0 and done.stdout.startswith("ringmta "), "--version", done.stdout)
with tempfile.NamedTemporaryFile("w", suffix=".toml", delete=False) as f:
    f.write('[queue]\nretry_schedule = ["1m", "1h"]\n[server]\nproxy_protocol = true\n')
done = subprocess.run([binary, "check-config", "--config", f.name, "--unsafe-no-fsync=false"],
                      capture_output=True, text=True, timeout=10)
tap.ok(done.returncode == 0, "check-config on a good file exits 0", done.stderr)
tap.ok('retry_schedule = ["1m", "1h"]' in done.stdout and f"# {f.name}:2" in done.stdout and
       "unsafe_no_fsync = false" in done.stdout and "proxy_protocol = true" in done.stdout,
       "it prints the effective settings and where they were set", done.stdout)
with open(f.name + ".printed", "w") as printed:
    printed.write(done.stdout)
reloaded = subprocess.run([binary, "check-config", "--config", f.name + ".printed"],
                          capture_output=True, text=True, timeout=10)
tap.ok(reloaded.returncode == 0, "its output is itself a valid configuration", reloaded.stderr)
with open(f.name, "w") as bad:
    bad.write("[queue]\nlifetime = \"0\"\n")
done = subprocess.run([binary, "check-config", "--config", f.name], capture_output=True,
                      text=True, timeout=10)
tap.ok(done.returncode == 2 and f"{f.name}:2: queue.lifetime:" in done.stderr,
       "a bad file: exit 2 naming file, line and key", done.stderr)
tap.done()
