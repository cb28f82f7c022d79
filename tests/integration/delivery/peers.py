"""Real peers for the delivery tests: a DNS server (NSD through dns_server.py) serving test
zones whose MX hosts are 127.0.0.x addresses, and ringmta-sink instances listening there.
Every process is stopped at exit; every wait is bounded."""
import atexit
import json
import os
import re
import signal
import subprocess
import tempfile
import time

# Every user of this module has tests/integration/daemon on its path too (meson envs, bench).
from harness import wait_until  # noqa: F401 (imported from here by the delivery tests)


class DnsServer:
    def __init__(self, script, zones, broken=()):
        command = [script, "--stop-on-stdin-eof"]
        for name, records in zones.items():
            command += ["--zone", name] + list(records)
        for name in broken:
            command += ["--broken-zone", name]
        self.process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE, text=True)
        atexit.register(self.stop)
        line = self.process.stdout.readline().split()
        if len(line) != 3 or line[0] != "READY":
            raise RuntimeError("dns_server.py did not start: " + self.process.stderr.read())
        self.address = f"{line[1]}:{line[2]}"

    def stop(self):
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(30)


class Sink:
    """ringmta-sink on ADDRESS:PORT saving every message it accepts."""

    def __init__(self, binary, address, port, args=()):
        self.work = tempfile.mkdtemp(prefix="ringmta-sink-")
        self.save_dir = os.path.join(self.work, "saved")
        os.mkdir(self.save_dir)
        self.stats_file = os.path.join(self.work, "stats.json")
        ready = os.path.join(self.work, "ready")
        self.process = subprocess.Popen(
            [binary, "--listen", f"{address}:{port}", "--threads", "1", "--no-pin",
             "--save-dir", self.save_dir, "--stats-file", self.stats_file, "--ready-file", ready,
             "--hostname", f"sink-{address}"] + list(args),
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        atexit.register(self.stop)
        for _ in range(200):
            if os.path.exists(ready):
                return
            time.sleep(0.05)
        raise RuntimeError("ringmta-sink did not start: " + self.process.stderr.read())

    def stats(self):
        self.process.send_signal(signal.SIGUSR1)
        time.sleep(0.2)
        with open(self.stats_file) as f:
            return json.load(f)

    def messages(self):
        """[(envelope dict, message bytes)] of every saved message."""
        out = []
        for name in sorted(os.listdir(self.save_dir)):
            if not name.endswith(".eml"):
                continue
            with open(os.path.join(self.save_dir, name), "rb") as f:
                data = f.read()
            envelope = {"rcpt": []}
            while data.startswith(b"X-Sink-"):
                line, data = data.split(b"\r\n", 1)
                key, value = line.decode().split(": ", 1)
                if key == "X-Sink-Rcpt-To":
                    envelope["rcpt"].append(value.strip("<>"))
                else:
                    envelope[key[7:].lower()] = value
            size = int(envelope.get("message-bytes", len(data)))
            out.append((envelope, data[len(data) - size:]))
        return out

    def stop(self):
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(30)


def make_test_ca(directory, names):
    """A throwaway CA and one ECDSA P-256 server certificate for `names` (DNS or IP subject
    alternative names), made with the openssl command; no key is ever committed. Returns the
    paths: {"ca": CA certificate, "cert": server certificate, "key": its key}."""
    os.makedirs(directory, exist_ok=True)
    path = lambda name: os.path.join(directory, name)  # noqa: E731

    def openssl(*args):
        subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=60)

    openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256",
            "-out", path("ca.key"))
    openssl("req", "-x509", "-new", "-key", path("ca.key"), "-subj", "/CN=ringmta test CA",
            "-days", "2", "-out", path("ca.pem"),
            "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256",
            "-out", path("server.key"))
    openssl("req", "-new", "-key", path("server.key"), "-subj", f"/CN={names[0]}",
            "-out", path("server.csr"))
    alt = ",".join(("IP:" if re.fullmatch(r"[\d.]+|[\da-fA-F:]+", n) else "DNS:") + n
                   for n in names)
    with open(path("server.ext"), "w") as f:
        f.write(f"subjectAltName={alt}\nbasicConstraints=CA:FALSE\n"
                "keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n")
    openssl("x509", "-req", "-in", path("server.csr"), "-CA", path("ca.pem"),
            "-CAkey", path("ca.key"), "-CAcreateserial", "-days", "2",
            "-extfile", path("server.ext"), "-out", path("server.pem"))
    os.chmod(path("server.key"), 0o644)  # read by Postfix's smtpd in the tests
    return {"ca": path("ca.pem"), "cert": path("server.pem"), "key": path("server.key")}


def without_received(message):
    """The message as the client sent it: drop the Received: headers MTAs prepended."""
    while message.startswith(b"Received: "):
        end = message.index(b"\r\n", message.index(b" +0000")) + 2
        message = message[end:]
    return message


def dsn_fields(message):
    """Per-recipient fields of a DSN's message/delivery-status part, lowercase keys."""
    text = message.decode(errors="replace")
    fields = {}
    for key, value in re.findall(r"(?im)^(Final-Recipient|Action|Status|Diagnostic-Code):\s*(.+)$",
                                 text):
        fields.setdefault(key.lower(), []).append(value.strip())
    return fields
