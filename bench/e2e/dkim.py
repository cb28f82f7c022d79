#!/usr/bin/env python3
"""End to end with DKIM signing on: ringmta against Postfix + Debian's OpenDKIM milter, the
same keys, the same client (Postfix's smtp-source, 50 sessions) and the same sink
(ringmta-sink on 127.0.0.1). For each algorithm (Ed25519, RSA-2048) and size (1 KiB,
100 KiB): messages per second until the sink has them all, and the MTA's CPU time per
message (ringmta: its process; Postfix: master and every child, reaped or alive, plus the
opendkim process). Before measuring, a few messages of each pipeline go to a second sink that
saves them, and dkimpy must verify their signature (both MTAs really sign).

usage: bench/e2e/dkim.py [MSGS=10000] [--postfix-msgs MSGS/10] [--sizes 1024,102400]
                         [--algorithms ed25519,rsa] [--build build] [--shards 2] [--reuse]
(Postfix gets fewer messages: at its rate the same count would take ten times as long; rates
and CPU are per message.)"""
import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "../.."))
sys.path.insert(0, os.path.join(ROOT, "tests/integration/daemon"))
sys.path.insert(0, os.path.join(ROOT, "tests/integration/delivery"))
from harness import Daemon, free_port  # noqa: E402
from peers import wait_until  # noqa: E402

INSTANCE = os.path.join(ROOT, "tests/integration/tools/postfix_instance.sh")
CHECKED = 3


def ticks(pid, children=False):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    used = int(fields[11]) + int(fields[12]) + (int(fields[13]) + int(fields[14]) if children
                                                 else 0)
    return used / os.sysconf("SC_CLK_TCK")


def tree_cpu(master, extra_pids):
    """CPU seconds of Postfix's master (with reaped children) and its live children."""
    total = ticks(master, children=True)
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                parent = int(f.read().rsplit(")", 1)[1].split()[1])
            if parent == master:
                total += ticks(int(entry))
        except (OSError, ValueError):
            continue
    return total + sum(ticks(pid) for pid in extra_pids)


class Sink:
    def __init__(self, binary, work, name, save=False):
        self.port = free_port()
        self.stats = os.path.join(work, f"{name}-stats.json")
        ready = os.path.join(work, f"{name}-ready")
        self.save_dir = os.path.join(work, f"{name}-saved")
        os.makedirs(self.save_dir, exist_ok=True)
        command = [binary, "--listen", f"127.0.0.1:{self.port}", "--threads", "1", "--no-pin",
                   "--stats-file", self.stats, "--ready-file", ready,
                   "--max-connections", "100000"] + (["--save-dir", self.save_dir] if save else [])
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL)
        wait_until(lambda: os.path.exists(ready), 10, 0.05)

    def accepted(self):
        self.process.send_signal(10)
        time.sleep(0.05)
        try:
            with open(self.stats) as f:
                return json.load(f).get("accepted", 0)
        except (OSError, ValueError):
            return 0

    def saved(self):
        out = []
        for name in sorted(os.listdir(self.save_dir)):
            if name.endswith(".eml"):
                data = open(os.path.join(self.save_dir, name), "rb").read()
                while data.startswith(b"X-Sink-"):
                    data = data.split(b"\r\n", 1)[1]
                out.append(data)
        return out

    def stop(self):
        self.process.terminate()
        self.process.wait(30)


def verify(messages, record):
    """dkimpy's verdict on the first signature of each message."""
    code = ("import dkim, sys\nrecord = sys.argv[1].encode()\nok = 0\n"
            "for path in sys.argv[2:]:\n"
            "    ok += dkim.verify(open(path, 'rb').read(), dnsfunc=lambda n, timeout=5: record)\n"
            "print(ok)\n")
    paths = []
    for i, message in enumerate(messages):
        path = os.path.join(tempfile.gettempdir(), f"dkim-bench-check-{os.getpid()}-{i}.eml")
        with open(path, "wb") as f:
            f.write(message)
        paths.append(path)
    out = subprocess.run(["/usr/bin/python3", "-c", code, record] + paths, capture_output=True,
                         text=True, timeout=120)
    for path in paths:
        os.unlink(path)
    return int(out.stdout.strip() or 0)


REUSE = []  # ["-d"]: many messages per connection (--reuse)


def source(port, msgs, size, recipient):
    subprocess.run(["smtp-source"] + REUSE + ["-s", "50", "-m", str(msgs), "-l", str(size), "-f",
                    "a@x.test", "-t", recipient, f"127.0.0.1:{port}"], check=True, timeout=1800)


def run_ringmta(args, key, record, size, work):
    check = Sink(args.sink, work, f"r-check-{size}-{os.path.basename(key)}", save=True)
    bench = Sink(args.sink, work, "r-bench")
    daemon = Daemon(args.ringmta, shards=args.shards, args=[
        "--dkim", f"x.test:sel:{key}", "--route", f"check.test=127.0.0.1:{check.port}",
        "--route", f"y.test=127.0.0.1:{bench.port}", "--max-sessions-per-client", "100000",
        "--max-connections-per-destination", "4", "--max-messages-per-connection", "1000"]).start()
    source(daemon.port, CHECKED, size, "b@check.test")
    wait_until(lambda: len(check.saved()) >= CHECKED, 60)
    verified = verify(check.saved(), record)
    before = ticks(daemon.process.pid)
    t0 = time.monotonic()
    source(daemon.port, args.msgs, size, "b@y.test")
    done = wait_until(lambda: bench.accepted() >= args.msgs, 900, 0.05)
    elapsed = time.monotonic() - t0
    cpu = ticks(daemon.process.pid) - before
    daemon.stop()
    check.stop()
    bench.stop()
    return (args.msgs / elapsed if done else 0.0), cpu / args.msgs * 1e6, verified


def run_postfix(args, key, algorithm, record, size, work):
    msgs = args.postfix_msgs
    check = Sink(args.sink, work, f"p-check-{size}-{algorithm}", save=True)
    bench = Sink(args.sink, work, "p-bench")
    milter_port = free_port()
    conf = os.path.join(work, "opendkim.conf")
    with open(conf, "w") as f:
        f.write(f"Mode s\nDomain x.test\nSelector sel\nKeyFile {key}\nRequireSafeKeys false\n"
                f"SignatureAlgorithm {'ed25519-sha256' if algorithm == 'ed25519' else 'rsa-sha256'}\n"
                f"Canonicalization relaxed/relaxed\nInternalHosts 127.0.0.0/8\n"
                f"Socket inet:{milter_port}@127.0.0.1\nPidFile {work}/opendkim.pid\nSyslog no\n")
    milter = subprocess.Popen(["opendkim", "-f", "-x", conf], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    instance = os.path.join(work, "postfix")
    if os.path.exists(instance):
        shutil.rmtree(instance)
    os.makedirs(instance)
    os.chmod(work, 0o755)
    extra = os.path.join(work, "bench.cf")
    with open(extra, "w") as f:
        f.write(f"smtpd_milters = inet:127.0.0.1:{milter_port}\nmilter_default_action = tempfail\n"
                "default_process_limit = 200\ndefault_destination_concurrency_limit = 50\n"
                "smtp_destination_concurrency_limit = 50\nqmgr_message_active_limit = 40000\n")
    port = free_port()
    subprocess.run([INSTANCE, "start", instance, str(port), str(check.port), extra], check=True,
                   capture_output=True)
    try:
        wait_until(lambda: subprocess.run(["ss", "-Hltn", f"sport = :{port}"],
                                          capture_output=True, text=True).stdout.strip(), 15)
        source(port, CHECKED, size, "b@check.test")
        wait_until(lambda: len(check.saved()) >= CHECKED, 60)
        verified = verify(check.saved(), record)
        subprocess.run(["postconf", "-c", f"{instance}/etc", "-e",
                        f"relayhost = [127.0.0.1]:{bench.port}"], check=True)
        subprocess.run(["postfix", "-c", f"{instance}/etc", "reload"], capture_output=True)
        time.sleep(1)
        master = int(open(f"{instance}/queue/pid/master.pid").read().split()[0])
        before = tree_cpu(master, [milter.pid])
        t0 = time.monotonic()
        source(port, msgs, size, "b@y.test")
        done = wait_until(lambda: bench.accepted() >= msgs, 1800, 0.1)
        elapsed = time.monotonic() - t0
        cpu = tree_cpu(master, [milter.pid]) - before
    finally:
        subprocess.run([INSTANCE, "stop", instance], capture_output=True)
        milter.terminate()
        milter.wait(10)
        check.stop()
        bench.stop()
    return (msgs / elapsed if done else 0.0), cpu / msgs * 1e6, verified


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("msgs", nargs="?", type=int, default=10000)
    parser.add_argument("--postfix-msgs", type=int, default=0)
    parser.add_argument("--sizes", default="1024,102400")
    parser.add_argument("--algorithms", default="ed25519,rsa")
    parser.add_argument("--build", default=os.path.join(ROOT, "build"))
    parser.add_argument("--shards", type=int, default=2)
    parser.add_argument("--reuse", action="store_true",
                        help="smtp-source -d: many messages per connection")
    args = parser.parse_args()
    if args.reuse:
        REUSE.append("-d")
    args.ringmta = os.path.join(args.build, "src/ringmta")
    args.sink = os.path.join(args.build, "tools/sink/ringmta-sink")
    args.postfix_msgs = args.postfix_msgs or max(args.msgs // 10, 100)
    work = tempfile.mkdtemp(prefix="ringmta-dkim-bench-")
    os.chmod(work, 0o755)
    print(f"{'key':8} {'size':>7} {'ringmta/s':>10} {'us cpu/msg':>10} {'postfix/s':>10} "
          f"{'us cpu/msg':>10} {'rate x':>7} {'cpu x':>7} verified", flush=True)
    for algorithm in args.algorithms.split(","):
        key = os.path.join(work, f"{algorithm}.key")
        out = subprocess.run([args.ringmta, "dkim", "keygen", "--domain", "x.test", "--selector",
                              "sel", "--algorithm", algorithm, "--out", key, "--force"],
                             capture_output=True, text=True, check=True).stdout
        record = "".join(re.findall(r'"([^"]*)"', out.split("TXT (", 1)[1].split(")", 1)[0]))
        for size in (int(s) for s in args.sizes.split(",")):
            r_rate, r_cpu, r_ok = run_ringmta(args, key, record, size, work)
            p_rate, p_cpu, p_ok = run_postfix(args, key, algorithm, record, size, work)
            print(f"{algorithm:8} {size:>7} {r_rate:>10.0f} {r_cpu:>10.1f} {p_rate:>10.0f} "
                  f"{p_cpu:>10.1f} {r_rate / max(p_rate, 1e-9):>6.1f}x "
                  f"{p_cpu / max(r_cpu, 1e-9):>6.1f}x {r_ok}/{CHECKED} {p_ok}/{CHECKED}",
                  flush=True)
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
