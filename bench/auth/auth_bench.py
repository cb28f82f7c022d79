#!/usr/bin/env python3
"""SMTP AUTH PLAIN over resumed TLS, one message per connection, ringmta against Postfix +
Dovecot SASL in the same run, per hash scheme (yescrypt, bcrypt, sha512-crypt: one user each,
hashes made by `ringmta passwd` with its default costs, the same passwd-file for both).

Each connection: connect, 220, EHLO, STARTTLS (TLS 1.3, resuming the previous session of the
same client thread), EHLO, AUTH PLAIN, MAIL, RCPT, DATA (1 KiB), QUIT. Reported per server and
scheme: submissions/s and server CPU per login (ringmta: the daemon's utime+stime; Postfix:
master and its smtpd/cleanup/... children plus the private Dovecot with its auth workers,
from /proc, children counted when reaped). Then the AUTH storm: while THREADS clients submit
with yescrypt logins, one more client runs plain sessions (EHLO, MAIL, RCPT, RSET; no TLS, no
AUTH) and times each MAIL's 250; its p50/p99 are printed next to the same client on an idle
server: shards keep serving while hashes run on the verifier threads.

Bounded: COUNT submissions per server and scheme, the storm STORM_S seconds, every socket
timeout 30 s. The client's CPU shares the machine's 2 cores with both servers: ratios taken in
one run are what counts; the load average at start is printed.
usage: bench/auth/auth_bench.py [COUNT=60] [--threads 4] [--storm 5] [--build build]"""
import argparse
import base64
import os
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "../.."))
sys.path.insert(0, os.path.join(ROOT, "tests/integration/daemon"))
sys.path.insert(0, os.path.join(ROOT, "tests/integration/delivery"))
from harness import Daemon, free_port  # noqa: E402
from peers import make_test_ca, wait_until  # noqa: E402

SCHEMES = {"yescrypt": "y@bench.test", "bcrypt": "b@bench.test", "sha512": "s@bench.test"}
PASSWORD = "bench-password-1"
BODY = b"Subject: auth bench\r\n\r\n" + b"x" * 1000 + b"\r\n.\r\n"


class Client:
    """One SMTP client thread's connection routine; keeps its TLS session for resumption."""

    def __init__(self, port, context, user):
        self.port, self.context, self.user = port, context, user
        self.session = None
        self.resumed = 0

    def reply(self, f):
        while True:
            line = f.readline()
            if not line:
                raise ConnectionError("closed")
            if line[3:4] != b"-":
                return int(line[:3])

    def command(self, f, s, text):
        s.sendall(text.encode() + b"\r\n")
        return self.reply(f)

    def submit(self):
        raw = socket.create_connection(("127.0.0.1", self.port), timeout=30)
        f = raw.makefile("rb")
        self.reply(f)
        self.command(f, raw, "EHLO bench.test")
        if self.command(f, raw, "STARTTLS") != 220:
            raise RuntimeError("STARTTLS refused")
        s = self.context.wrap_socket(raw, server_hostname="localhost", session=self.session)
        self.resumed += s.session_reused
        f = s.makefile("rb")
        self.command(f, s, "EHLO bench.test")
        token = base64.b64encode(f"\0{self.user}\0{PASSWORD}".encode()).decode()
        code = self.command(f, s, "AUTH PLAIN " + token)
        if code != 235:
            raise RuntimeError(f"AUTH answered {code}")
        self.command(f, s, f"MAIL FROM:<{self.user}>")
        self.command(f, s, "RCPT TO:<sink@elsewhere.test>")
        self.command(f, s, "DATA")
        s.sendall(BODY)
        if self.reply(f) != 250:
            raise RuntimeError("message refused")
        self.command(f, s, "QUIT")
        self.session = s.session
        s.close()


def cpu_of(pids):
    """utime+stime (+ reaped children) of the processes `pids` and all their descendants."""
    ticks = os.sysconf("SC_CLK_TCK")
    parent_of = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                parent_of[int(entry)] = (int(fields[1]), fields)
            except OSError:
                pass
    wanted = set(pids)
    grew = True
    while grew:
        grew = False
        for pid, (parent, _) in parent_of.items():
            if parent in wanted and pid not in wanted:
                wanted.add(pid)
                grew = True
    total = 0
    for pid in wanted:
        if pid in parent_of:
            fields = parent_of[pid][1]
            total += sum(int(x) for x in fields[11:15])  # utime stime cutime cstime
    return total / ticks


def run_clients(port, context, user, count, threads):
    done = [0]
    lock = threading.Lock()
    clients = [Client(port, context, user) for _ in range(threads)]
    errors = []

    def work(client):
        while True:
            with lock:
                if done[0] >= count:
                    return
                done[0] += 1
            try:
                client.submit()
            except Exception as e:  # noqa: BLE001 (reported, not hidden)
                errors.append(repr(e))
                return

    workers = [threading.Thread(target=work, args=(c,)) for c in clients]
    t0 = time.monotonic()
    for w in workers:
        w.start()
    for w in workers:
        w.join(300)
    return time.monotonic() - t0, sum(c.resumed for c in clients), errors


def plain_latencies(port, seconds, stop=None):
    """MAIL → 250 times (ms) of plain sessions (one MAIL per session) for `seconds`."""
    out = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and not (stop and stop.is_set()):
        s = socket.create_connection(("127.0.0.1", port), timeout=30)
        f = s.makefile("rb")
        f.readline()
        s.sendall(b"EHLO plain.test\r\n")
        while f.readline()[3:4] == b"-":
            pass
        t0 = time.perf_counter()
        s.sendall(b"MAIL FROM:<p@bench.test>\r\n")
        f.readline()
        out.append((time.perf_counter() - t0) * 1000)
        s.sendall(b"QUIT\r\n")
        f.readline()
        s.close()
    return sorted(out)


def pct(values, p):
    return values[min(len(values) - 1, int(len(values) * p / 100))] if values else float("nan")


def start_postfix(work, port, pki, sasl_socket):
    extra = os.path.join(work, "pf.cf")
    with open(extra, "w") as f:
        f.write(f"""relayhost = [127.0.0.1]:9
mynetworks = 192.0.2.0/32
smtpd_relay_restrictions = permit_sasl_authenticated, reject
smtpd_recipient_restrictions = permit_sasl_authenticated, reject
smtpd_sasl_auth_enable = yes
smtpd_sasl_type = dovecot
smtpd_sasl_path = {sasl_socket}
smtpd_tls_security_level = may
smtpd_tls_chain_files = {pki["key"]}, {pki["cert"]}
smtpd_tls_session_cache_database = btree:{work}/pf/data/smtpd_scache
defer_transports = smtp
""")
    instance = os.path.join(ROOT, "tests/integration/tools/postfix_instance.sh")
    subprocess.run(["bash", instance, "start", os.path.join(work, "pf"), str(port), "9", extra],
                   check=True, timeout=60, capture_output=True)
    return instance


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("count", nargs="?", type=int, default=60)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--storm", type=float, default=5.0)
    parser.add_argument("--build", default=os.path.join(ROOT, "build"))
    args = parser.parse_args()
    binary = os.path.join(args.build, "src/ringmta")
    print(f"load average at start: {os.getloadavg()[0]:.2f}; {args.count} submissions per "
          f"server and scheme, {args.threads} client threads", flush=True)
    work = tempfile.mkdtemp(prefix="ringmta-auth-bench-")
    os.chmod(work, 0o755)
    pki = make_test_ca(os.path.join(work, "pki"), ["localhost", "127.0.0.1"])
    users = os.path.join(work, "users")
    with open(users, "w") as f:
        for scheme, user in SCHEMES.items():
            line = subprocess.run([binary, "passwd", user, "--scheme", scheme],
                                  input=PASSWORD + "\n", capture_output=True, text=True,
                                  timeout=30, check=True).stdout.strip()
            f.write(line + "\n")
    dove = os.path.join(work, "dovecot")
    os.makedirs(os.path.join(dove, "state"))
    with open(os.path.join(dove, "dovecot.conf"), "w") as f:
        f.write(f"base_dir = {dove}/run\nstate_dir = {dove}/state\nlog_path = {dove}/log\n"
                "protocols =\nssl = no\nauth_mechanisms = plain login\n"
                f"passdb {{\n  driver = passwd-file\n  args = scheme=CRYPT {users}\n}}\n"
                "userdb {\n  driver = static\n  args = uid=nobody gid=nogroup home=/nonexistent\n}\n"
                "service auth {\n  unix_listener auth-client {\n    mode = 0666\n  }\n}\n")
    dovecot = subprocess.Popen(["/usr/sbin/dovecot", "-F", "-c",
                                os.path.join(dove, "dovecot.conf")])
    sasl_socket = os.path.join(dove, "run", "auth-client")
    wait_until(lambda: os.path.exists(sasl_socket), 15)
    pf_port = free_port()
    instance = start_postfix(work, pf_port, pki, sasl_socket)
    pf_pid = int(open(os.path.join(work, "pf/queue/pid/master.pid")).read().split()[0])
    daemon = Daemon(binary, shards=2, args=[
        "--tls-cert", pki["cert"], "--tls-key", pki["key"], "--auth-passwd-file", users,
        "--relayhost", "[127.0.0.1]:9", "--retry-schedule", "1h",
        "--auth-max-failures", "1000000"]).start()
    context = ssl.create_default_context(cafile=pki["ca"])
    context.minimum_version = context.maximum_version = ssl.TLSVersion.TLSv1_3
    servers = {"ringmta": (daemon.port, [daemon.process.pid]),
               "postfix+dovecot": (pf_port, [pf_pid, dovecot.pid])}
    try:
        print("\n| scheme | server | submissions/s | server CPU ms per login | resumed | "
              "errors |\n|---|---|---|---|---|---|")
        for scheme, user in SCHEMES.items():
            for name, (port, pids) in servers.items():
                run_clients(port, context, user, args.threads, args.threads)  # warm-up
                cpu0 = cpu_of(pids)
                elapsed, resumed, errors = run_clients(port, context, user, args.count,
                                                       args.threads)
                cpu = cpu_of(pids) - cpu0
                print(f"| {scheme} | {name} | {args.count / elapsed:.1f} | "
                      f"{1000 * cpu / args.count:.1f} | {resumed}/{args.count} | "
                      f"{len(errors)} {errors[:1]} |", flush=True)
        print("\n| server | plain MAIL→250 idle p50 / p99 ms | during a yescrypt AUTH storm "
              "p50 / p99 ms | storm logins/s |\n|---|---|---|---|")
        for name, (port, _) in servers.items():
            idle = plain_latencies(port, min(args.storm, 3))
            stop = threading.Event()  # the storm is bounded by time
            counter = {"n": 0}

            def bounded():
                clients = [Client(port, context, SCHEMES["yescrypt"])
                           for _ in range(args.threads)]

                def loop(c):
                    while not stop.is_set():
                        try:
                            c.submit()
                            counter["n"] += 1
                        except Exception:  # noqa: BLE001
                            return
                threads = [threading.Thread(target=loop, args=(c,)) for c in clients]
                for t in threads:
                    t.start()
                for t in threads:
                    t.join(120)
            storm = threading.Thread(target=bounded)
            storm.start()
            time.sleep(0.5)
            busy = plain_latencies(port, args.storm)
            stop.set()
            storm.join(120)
            print(f"| {name} | {pct(idle, 50):.2f} / {pct(idle, 99):.2f} ({len(idle)}) | "
                  f"{pct(busy, 50):.2f} / {pct(busy, 99):.2f} ({len(busy)}) | "
                  f"{counter['n'] / (args.storm + 0.5):.1f} |", flush=True)
    finally:
        daemon.stop()
        subprocess.run(["bash", instance, "stop", os.path.join(work, "pf")], timeout=60)
        dovecot.terminate()
        dovecot.wait(15)
        shutil.rmtree(work, ignore_errors=True)
    print(f"load average at end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
