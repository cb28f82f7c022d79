"""Shared pieces of the daemon's integration tests: TAP output, starting ringmta on free
loopback ports with a private spool, raw SMTP conversations, and reading the spool back.

Every wait is bounded; a daemon left running is killed when the test ends.
"""
import atexit
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time


class Tap:
    """Minimal TAP producer: meson counts each line as one test case."""

    def __init__(self):
        self.count = 0
        self.failed = 0

    def ok(self, condition, description, detail=""):
        self.count += 1
        status = "ok" if condition else "not ok"
        print(f"{status} {self.count} - {description}", flush=True)
        if not condition:
            self.failed += 1
            # Also on stderr: meson's summary of a failed test shows only stderr, so CI's log
            # then says which check failed and why.
            print(f"not ok {self.count} - {description}", file=sys.stderr, flush=True)
            for line in str(detail).splitlines()[:40]:
                print(f"# {line}", flush=True)
                print(f"# {line}", file=sys.stderr, flush=True)
        return condition

    def skip_all(self, reason):
        print(f"1..0 # SKIP {reason}", flush=True)
        sys.exit(0)

    def done(self):
        print(f"1..{self.count}", flush=True)
        sys.exit(1 if self.failed else 0)


def wait_until(condition, timeout, step=0.2):
    """condition()'s first truthy value within `timeout` seconds, else its last value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(step)
    return condition()


def free_port(address="127.0.0.1"):
    """A TCP port free on `address` right now (the OS picks it)."""
    with socket.socket() as s:
        s.bind((address, 0))
        return s.getsockname()[1]


# Signals a daemon dies of by itself only through a bug: abort (RINGMTA_ASSERT), bad memory.
FAULT_SIGNALS = {signal.SIGABRT, signal.SIGSEGV, signal.SIGBUS, signal.SIGFPE, signal.SIGILL}


class Daemon:
    """ringmta on 127.0.0.1:<free port> with its own spool; stderr is collected.

    stdout: where the daemon's stdout goes instead of a reader here (a stalled pipe, a file).
    log_lines: a callable giving the records of another log output (a file, syslog), read
    to learn the ports and by events().
    prefix: a command the daemon runs under (e.g. setpriv ... to start unprivileged)."""

    def __init__(self, binary, spool=None, args=(), shards=2, env=None, stdout=None,
                 log_lines=None, prefix=()):
        self.binary = binary
        self.spool = spool or tempfile.mkdtemp(prefix="ringmta-spool-")
        if spool is None and not os.environ.get("RINGMTA_KEEP_SPOOL"):
            # A load test leaves gigabytes: remove the spool we made when the test exits
            # (after the kill registered by start(), which runs first).
            atexit.register(shutil.rmtree, self.spool, True)
        self.args = list(args)
        self.shards = shards
        self.env = env
        self.prefix = list(prefix)  # e.g. setpriv ... to start unprivileged
        self.stdout = stdout
        self.log_lines = log_lines
        self.process = None
        self.port = None
        self.admin_port = None
        self.stderr_lines = []
        self.stdout_lines = []
        self._listening = threading.Event()
        self._fault_reported = False

    def start(self, timeout=20):
        # No real DNS here: unless a test says otherwise, lookups fail at once (transient), so
        # accepted mail stays queued where the test can inspect it.
        resolver = [] if any(a.startswith("--resolver") or a.startswith("--route") or
                             a.startswith("--relayhost") for a in self.args) else \
            ["--resolver", "127.0.0.1:9"]
        command = [self.binary, "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0",
                   "--spool", self.spool, "--shards", str(self.shards), "--hostname",
                   "mx.test.example", "--log-format", "json"] + resolver + self.args
        # Tests run as root: say so, unless the test is about running as another user.
        if os.geteuid() == 0 and not self.prefix and \
                not any(a.startswith("--user") for a in self.args):
            command.append("--allow-root")
        command = self.prefix + command
        self.process = subprocess.Popen(
            command, stdout=subprocess.PIPE if self.stdout is None else self.stdout,
            stderr=subprocess.PIPE, text=True, env=self.env)
        atexit.register(self.kill)
        threading.Thread(target=self._read, args=(self.process.stderr, self.stderr_lines, True),
                         daemon=True).start()
        if self.stdout is None:
            threading.Thread(target=self._read,
                             args=(self.process.stdout, self.stdout_lines, False),
                             daemon=True).start()
        deadline = time.monotonic() + timeout
        while not self._listening.wait(0.05):
            for line in self.log_lines() if self.log_lines else []:
                self._note(line)
            if time.monotonic() > deadline or self.process.poll() is not None:
                self.kill()
                raise RuntimeError("ringmta did not start:\n" +
                                   "\n".join(self.stderr_lines[-20:]))
        return self

    def _read(self, stream, lines, watch):
        for line in stream:
            lines.append(line.rstrip("\n"))
            if watch:
                self._note(line)

    def _note(self, line):
        try:
            record = json.loads(line)
        except ValueError:
            return
        if record.get("event") == "listening" and self.port is None:
            self.port = int(record["detail"].rsplit(":", 1)[1])
        if record.get("event") == "admin_listening":
            self.admin_port = int(record["detail"].rsplit(":", 1)[1])
            self._listening.set()

    def events(self, name):
        out = []
        extra = list(self.log_lines()) if self.log_lines else []
        for line in self.stdout_lines + self.stderr_lines + extra:
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if record.get("event") == name:
                out.append(record)
        return out

    def stop(self, sig=signal.SIGTERM, timeout=60):
        if self.process is None or self.process.poll() is not None:
            return self.process.returncode if self.process else None
        self.process.send_signal(sig)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            return None

    def kill(self):
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        elif -self.process.returncode in FAULT_SIGNALS and not self._fault_reported:
            # It died of a fault on its own (an assertion is SIGABRT): its last words go to
            # the test's stderr, which CI's log shows for a failed test.
            self._fault_reported = True
            print(f"# ringmta died of signal {-self.process.returncode}; its stderr ends:",
                  file=sys.stderr, flush=True)
            for line in self.stderr_lines[-40:]:
                print(f"#   {line}", file=sys.stderr, flush=True)

    def admin_socket(self):
        """The daemon's control socket (--admin-socket, else SPOOL/admin.sock)."""
        for i, a in enumerate(self.args):
            if a == "--admin-socket":
                return self.args[i + 1]
            if a.startswith("--admin-socket="):
                return a.split("=", 1)[1]
        return os.path.join(self.spool, "admin.sock")

    def admin(self, method, path, timeout=30, tcp=None, headers=()):
        """(status, body) of one admin API request: /metrics and /health over TCP, the rest
        through the control socket (tcp=True/False chooses)."""
        if tcp is None:
            tcp = path.split("?")[0] in ("/metrics", "/health")
        if tcp:
            s = socket.create_connection(("127.0.0.1", self.admin_port), timeout=timeout)
        else:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.settimeout(timeout)
            s.connect(self.admin_socket())
        with s:
            extra = "".join(f"{h}\r\n" for h in headers)
            s.sendall(f"{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{extra}"
                      f"Content-Length: 0\r\n\r\n".encode())
            data = b""
            while chunk := s.recv(65536):
                data += chunk
        head, _, body = data.decode().partition("\r\n\r\n")
        return int(head.split(" ", 2)[1]), body

    def metrics(self):
        _, text = self.admin("GET", "/metrics", timeout=5)
        values = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, value = line.rsplit(" ", 1)
                values[name] = float(value)
        return values


def spool_list(binary, spool):
    out = subprocess.run([binary, "spool", "ls", "--spool", spool, "--json"], capture_output=True,
                         text=True, timeout=120, check=True)
    return json.loads(out.stdout)


def spool_cat(binary, spool, message_id):
    """The stored message as the client sent it (Received: header first), or None."""
    out = subprocess.run([binary, "spool", "cat", message_id, "--spool", spool],
                         capture_output=True, timeout=60)
    return out.stdout if out.returncode == 0 else None


class Conversation:
    """A raw SMTP client: send exact bytes, read whole replies (multi-line aware)."""

    def __init__(self, port, timeout=10):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.buffer = b""

    def send(self, data):
        self.sock.sendall(data if isinstance(data, bytes) else data.encode())

    def reply(self):
        """Returns (code, full text) of the next reply, or (None, '') on EOF."""
        lines = []
        while True:
            while b"\r\n" not in self.buffer:
                chunk = self.sock.recv(65536)
                if not chunk:
                    return None, b"".join(lines).decode(errors="replace")
                self.buffer += chunk
            line, self.buffer = self.buffer.split(b"\r\n", 1)
            lines.append(line + b"\r\n")
            if len(line) < 4 or line[3:4] != b"-":
                return int(line[:3]), b"".join(lines).decode(errors="replace")

    def command(self, line):
        self.send(line + "\r\n")
        return self.reply()

    def closed(self, timeout=10):
        """True when the server closes the connection within `timeout`."""
        self.sock.settimeout(timeout)
        try:
            while True:
                chunk = self.sock.recv(65536)
                if not chunk:
                    return True
        except (socket.timeout, ConnectionResetError):
            return False

    def close(self):
        self.sock.close()


def queued_id(reply_text):
    match = re.search(r"queued as ([0-9a-f]{16})", reply_text)
    return match.group(1) if match else None


def unstuff(wire):
    """Wire-form body lines starting with '..' lose one dot (RFC 5321 §4.5.2)."""
    return re.sub(rb"(^|\r\n)\.", rb"\1", wire)


def received_header_and_body(stored):
    """Splits our Received: header (folded lines ending with the date) from the message."""
    assert stored.startswith(b"Received: from "), stored[:80]
    end = stored.index(b"\r\n", stored.index(b" +0000")) + 2
    return stored[:end], stored[end:]


def test_message(run, n):
    """Deterministic message n of a run: sizes from 300 octets to ~200 KiB, dot lines."""
    size = (300, 3000, 30000, 200000)[n % 4] + n % 97
    line = f"{run}-{n} " + "abcdefghijklmnopqrstuvwxyz0123456789" * 2
    body = []
    total = 0
    i = 0
    while total < size:
        text = ("." if i % 7 == 0 else "") + line[: 20 + (n + i) % 60]
        body.append(text)
        total += len(text) + 2
        i += 1
    return (f"X-Test-Id: {run}-{n}\r\nSubject: message {n}\r\n\r\n" +
            "\r\n".join(body) + "\r\n").encode()


def dot_stuff(message):
    return re.sub(rb"(^|\r\n)\.", rb"\1..", message)


class Load:
    """Threads that keep delivering test messages (several per connection) and record which
    got 250, until stop(). Connection errors (the server was killed) end the thread."""

    def __init__(self, port, run, threads=6, per_connection=5, first=0, domain="example.com"):
        self.port, self.run, self.per_connection = port, run, per_connection
        self.domain = domain
        self.acked = {}        # message number -> queue id
        self.attempted = set()
        self._next = first
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._work, daemon=True) for _ in range(threads)]

    def start(self):
        for t in self._threads:
            t.start()
        return self

    def stop(self):
        self._stop.set()
        for t in self._threads:
            t.join(30)

    def next_number(self):
        with self._lock:
            n = self._next
            self._next += 1
            return n

    def _work(self):
        while not self._stop.is_set():
            try:
                c = Conversation(self.port, timeout=15)
                if c.reply()[0] != 220 or c.command("EHLO load.test")[0] != 250:
                    return
                for _ in range(self.per_connection):
                    if self._stop.is_set():
                        break
                    n = self.next_number()
                    with self._lock:
                        self.attempted.add(n)
                    c.send(f"MAIL FROM:<load@client.test>\r\nRCPT TO:<n{n}@{self.domain}>\r\n"
                           "DATA\r\n")
                    codes = [c.reply()[0] for _ in range(3)]
                    if codes != [250, 250, 354]:
                        return
                    c.send(dot_stuff(test_message(self.run, n)) + b".\r\n")
                    code, text = c.reply()
                    if code == 250:
                        with self._lock:
                            self.acked[n] = queued_id(text)
                    elif code is None:
                        return
                c.command("QUIT")
                c.close()
            except OSError:
                return


def export_spool(binary, spool):
    """{queue id: message as the client sent it} for every queued message."""
    out = tempfile.mkdtemp(prefix="ringmta-export-")
    subprocess.run([binary, "spool", "export", out, "--spool", spool], capture_output=True,
                   timeout=300, check=True)
    messages = {}
    for name in os.listdir(out):
        with open(os.path.join(out, name), "rb") as f:
            messages[name[:-4]] = f.read()
    shutil.rmtree(out, ignore_errors=True)
    return messages


def verify_spool(binary, spool, run, acked):
    """Checks the crash guarantees. Returns (missing acked, corrupt, unacked complete)."""
    by_number = {}
    corrupt = []
    for queue_id, stored in export_spool(binary, spool).items():
        _, message = received_header_and_body(stored)
        match = re.match(rb"X-Test-Id: ([^\r]+)-(\d+)\r\n", message)
        if not match or match.group(1).decode() != run:
            corrupt.append(queue_id)
            continue
        n = int(match.group(2))
        if message != test_message(run, n):
            corrupt.append(queue_id)
        by_number.setdefault(n, []).append(queue_id)
    missing = [n for n in acked if n not in by_number]
    unacked = [n for n in by_number if n not in acked]
    return missing, corrupt, unacked


NODEMAILER = "/usr/share/nodejs/nodemailer"  # Debian's node-nodemailer


def nodemailer_send(port, ca_file, sender, recipient, auth=None):
    """Sends one message with nodemailer over STARTTLS (requireTLS, the test CA, server name
    mx.test.example), logging in with auth=(user, password) if given. (True when nodemailer
    reported a 250, its output), or (None, why) when node or nodemailer is missing."""
    if not shutil.which("node") or not os.path.isdir(NODEMAILER):
        return None, "nodemailer (Debian node-nodemailer) is not installed"
    login = (f"auth: {{user: {json.dumps(auth[0])}, pass: {json.dumps(auth[1])}}}, "
             if auth else "")
    script = f"""
const nodemailer = require('{NODEMAILER}');
const fs = require('fs');
const t = nodemailer.createTransport({{host: '127.0.0.1', port: {port}, secure: false,
  requireTLS: true, name: 'node.test', {login}tls: {{ca: fs.readFileSync('{ca_file}'),
  servername: 'mx.test.example'}}}});
t.sendMail({{from: '{sender}', to: '{recipient}', subject: 'node', text: 'hi'}})
 .then(i => {{ console.log('OK ' + i.response); process.exit(0); }})
 .catch(e => {{ console.log('ERR ' + e); process.exit(1); }});
"""
    out = subprocess.run(["node", "-e", script], capture_output=True, text=True, timeout=60)
    return out.returncode == 0 and "OK 250" in out.stdout, out.stdout + out.stderr


DOVECOT_CONF = """base_dir = {d}/run
state_dir = {d}/state
log_path = {d}/dovecot.log
protocols =
ssl = no
auth_mechanisms = plain login
passdb {{
  driver = passwd-file
  args = scheme=CRYPT {d}/users
}}
userdb {{
  driver = static
  args = uid=nobody gid=nogroup home=/nonexistent
}}
service auth {{
  unix_listener auth-client {{
    mode = 0666
  }}
}}
"""


def start_dovecot(directory, users):
    """A private Dovecot (Debian's dovecot-core, never the system instance): its auth service
    only, with `users` ("user:crypt-hash" lines) as its passwd-file. Returns the process and
    the path of its auth-client socket (waited for); the process is killed at exit. The
    directories above `directory` must be searchable by Dovecot's own auth user."""
    os.makedirs(os.path.join(directory, "state"))
    with open(os.path.join(directory, "users"), "w") as f:
        f.write("".join(line + "\n" for line in users))
    config = os.path.join(directory, "dovecot.conf")
    with open(config, "w") as f:
        f.write(DOVECOT_CONF.format(d=directory))
    process = subprocess.Popen(["/usr/sbin/dovecot", "-F", "-c", config],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    atexit.register(lambda: process.poll() is not None or process.kill())  # even on a failure
    socket_path = os.path.join(directory, "run", "auth-client")
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and not os.path.exists(socket_path):
        time.sleep(0.05)
    return process, socket_path
