#!/usr/bin/env python3
"""Memory cost of idle SMTP connections: opens N connections to a fresh ringmta, reads each
greeting, leaves them idle, and reports the daemon's RSS growth per connection (and the
kernel's slab growth per connection, for context: socket structures are kernel memory).
With "starttls", each connection also says EHLO, STARTTLS, completes a TLS 1.3 handshake
(ECDSA P-256) and says EHLO again before going idle: the cost of an idle TLS session.
usage: idle_memory.py RINGMTA_BINARY [N=10000] [starttls]"""
import os
import resource
import socket
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "../../tests/integration/daemon"))
from harness import Daemon  # noqa: E402

binary = sys.argv[1]
count = int(sys.argv[2]) if len(sys.argv) > 2 else 10000
starttls = len(sys.argv) > 3 and sys.argv[3] == "starttls"
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, count + 1000)), hard))


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def slab_kib():
    with open("/proc/meminfo") as meminfo:
        for line in meminfo:
            if line.startswith("Slab:"):
                return int(line.split()[1])
    return 0


tls_args, context = [], None
if starttls:
    import ssl
    import tls_pki  # noqa: E402
    pki = tls_pki.make()
    tls_args = ["--tls-cert", pki["ecdsa_cert"], "--tls-key", pki["ecdsa_key"]]
    context = ssl.create_default_context(cafile=pki["ca"])
daemon = Daemon(binary, shards=2, args=["--max-sessions-per-client", str(count + 10),
                                         "--max-sessions-per-shard", str(count + 10)] +
                tls_args).start()
pid = daemon.process.pid
time.sleep(0.5)
rss_before, slab_before = rss_kib(pid), slab_kib()
sockets = []



def tls_session(s):
    """EHLO, STARTTLS, handshake, EHLO: then the connection idles inside TLS."""
    s.recv(512)
    s.sendall(b"EHLO idle.test\r\n")
    while not s.recv(4096).endswith(b"\r\n"):
        pass
    s.sendall(b"STARTTLS\r\n")
    s.recv(512)
    t = context.wrap_socket(s, server_hostname="mx.test.example")
    t.sendall(b"EHLO idle.test\r\n")
    reply = b""
    while b"250 " not in reply:
        reply += t.recv(4096)
    return t


for i in range(count):
    s = socket.create_connection(("127.0.0.1", daemon.port))
    if starttls:
        sockets.append(tls_session(s))
        continue
    sockets.append(s)
    if i % 100 == 99:  # read greetings in batches so the daemon sends them
        for pending in sockets[-100:]:
            pending.recv(512)
if not starttls:
    for pending in sockets[count - count % 100:]:
        pending.recv(512)
time.sleep(1.0)
rss_after, slab_after = rss_kib(pid), slab_kib()
print(f"idle connections: {count}{' (after STARTTLS, TLS 1.3, ECDSA P-256)' if starttls else ''}")
print(f"daemon RSS: {rss_before} KiB -> {rss_after} KiB: "
      f"{(rss_after - rss_before) * 1024 / count:.0f} bytes per connection")
print(f"kernel slab (both socket ends, whole machine): {slab_before} KiB -> {slab_after} KiB: "
      f"{(slab_after - slab_before) * 1024 / count:.0f} bytes per connection")
for s in sockets:
    s.close()
daemon.stop()
