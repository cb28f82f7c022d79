#!/usr/bin/env python3
"""End-to-end relay rate, side by side in one run: 1 KiB messages to 100 destination domains
(d0.test … d99.test, each with an MX on 127.0.0.3 served by NSD), the clock running from the
first message injected until the sink has every one of them.

  no MTA:   ringmta-blast → ringmta-sink                     (the client/sink pair's ceiling)
  ringmta:  ringmta-blast → ringmta (fdatasync) → ringmta-sink
  Postfix:  smtp-source → Postfix → smtp-sink (../shared/peers/postfix.sh, its own harness)

Two injection modes, as bulk platforms use both: persistent connections (100 messages per
connection) and one message per connection.
With --reference BINARY, ringmta's end-to-end rate is measured for BINARY (an older ringmta,
e.g. built from main) and for this build, alternating, --rounds times each: a change's cost
side by side in one run (log records this build dropped are reported: a cost hidden by
dropping logs would show there).
usage: bench/e2e/relay.py [MSGS=50000] [--modes persistent,single] [--build build]
       [--peers ../shared/peers] [--skip-postfix] [--shards N]
       [--reference OLD_RINGMTA [--rounds 3]]"""
import statistics
import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "../.."))
sys.path.insert(0, os.path.join(ROOT, "tests/integration/daemon"))
sys.path.insert(0, os.path.join(ROOT, "tests/integration/delivery"))
from harness import Daemon, free_port  # noqa: E402
from peers import DnsServer, wait_until  # noqa: E402


def cpu_seconds(pid):
    """User + system CPU time a process has used so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def sink_start(binary, port, work, extra=()):
    stats = os.path.join(work, "sink-stats.json")
    ready = os.path.join(work, "sink-ready")
    for path in (stats, ready):
        if os.path.exists(path):
            os.unlink(path)
    process = subprocess.Popen([binary, "--listen", f"127.0.0.3:{port}", "--threads", "2",
                                "--stats-file", stats, "--ready-file", ready,
                                "--max-connections", "100000"] + list(extra),
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_until(lambda: os.path.exists(ready), 10, 0.05)
    return process, stats


def sink_accepted(process, stats):
    return sink_count(process, stats, "accepted")


def sink_count(process, stats, key, settle_s=0.05):
    """One of the sink's counters (accepted, messages: ends of data, connections, ...)."""
    process.send_signal(10)  # SIGUSR1: rewrite the stats file
    time.sleep(settle_s)
    try:
        with open(stats) as f:
            return json.load(f).get(key, 0)
    except (OSError, ValueError):
        return 0


def start_dns(domains=100):
    """NSD serving d0.test … d{domains-1}.test, each with an MX on 127.0.0.3."""
    zones = {f"d{i}.test": ["@ MX 10 mx", "mx A 127.0.0.3"] for i in range(domains)}
    return DnsServer(os.path.join(ROOT, "tests/integration/dns/dns_server.py"), zones)


def start_ringmta(binary, shards, dns, delivery_port, extra=()):
    """ringmta relaying to the sink at 127.0.0.3:delivery_port, limits opened for load."""
    return Daemon(binary, shards=shards,
                  args=["--resolver", dns.address, "--delivery-port", str(delivery_port),
                        "--max-sessions-per-client", "100000",
                        "--max-connections-per-destination", "4",
                        "--max-messages-per-connection", "1000"] + list(extra)).start()


def blast(binary, target, msgs, per_session, extra=()):
    sessions = msgs // per_session
    command = [binary, "--target", target, "--sessions", str(sessions), "--concurrency", "50",
               "--messages-per-session", str(per_session), "--size", "1k", "--domains", "100",
               "--quiet", "--json"] + list(extra)
    result = subprocess.run(command, capture_output=True, text=True, timeout=900)
    summary = json.loads(result.stdout) if result.stdout.strip().startswith("{") else {}
    return summary


def run_no_mta(args, mode_per_session, work):
    port = free_port("127.0.0.3")
    sink, stats = sink_start(args.sink, port, work)
    t0 = time.monotonic()
    blast(args.blast, f"127.0.0.3:{port}", args.msgs, mode_per_session)
    done = wait_until(lambda: sink_accepted(sink, stats) >= args.msgs, 300, 0.05)
    elapsed = time.monotonic() - t0
    got = sink_accepted(sink, stats)
    sink.terminate()
    sink.wait(30)
    return args.msgs / elapsed if done else 0.0, got


def run_ringmta(args, mode_per_session, work, dns, binary=None):
    port = free_port("127.0.0.3")
    sink, stats = sink_start(args.sink, port, work)
    daemon = start_ringmta(binary or args.ringmta, args.shards, dns, port)
    cpu_before = cpu_seconds(daemon.process.pid)
    t0 = time.monotonic()
    summary = blast(args.blast, f"127.0.0.1:{daemon.port}", args.msgs, mode_per_session)
    accepted_at = time.monotonic() - t0
    done = wait_until(lambda: sink_accepted(sink, stats) >= args.msgs, 600, 0.05)
    elapsed = time.monotonic() - t0
    got = sink_accepted(sink, stats)
    args.cpu_us = (cpu_seconds(daemon.process.pid) - cpu_before) * 1e6 / args.msgs
    args.log_dropped = daemon.metrics().get("ringmta_log_records_dropped_total", 0)
    daemon.stop()
    sink.terminate()
    sink.wait(30)
    accepted = summary.get("messages", {}).get("accepted", "?") if summary else "?"
    return (args.msgs / elapsed if done else 0.0), got, args.msgs / accepted_at, accepted


def compare(args, mode, per_session, work, dns):
    """This build against --reference, alternating, --rounds each."""
    rates = {"reference": [], "this build": []}
    cpu = {"reference": [], "this build": []}
    dropped = 0
    for round_number in range(args.rounds):
        order = [("reference", args.reference), ("this build", args.ringmta)]
        for label, binary in order if round_number % 2 == 0 else reversed(order):
            rate = run_ringmta(args, per_session, work, dns, binary)[0]
            rates[label].append(rate)
            cpu[label].append(args.cpu_us)
            if label == "this build":
                dropped += args.log_dropped
            print(f"  {mode} round {round_number + 1} {label:10}: {rate:8.0f} msg/s, "
                  f"ringmta CPU {args.cpu_us:5.1f} us/msg", flush=True)
    reference = statistics.median(rates["reference"])
    current = statistics.median(rates["this build"])
    cpu_reference = statistics.median(cpu["reference"])
    cpu_current = statistics.median(cpu["this build"])
    print(f"{mode} ({per_session} msg/connection): median reference {reference:.0f} msg/s, "
          f"this build {current:.0f} msg/s = {current / reference:.3f}x; ringmta CPU per "
          f"message {cpu_reference:.1f} vs {cpu_current:.1f} us = "
          f"{cpu_current / cpu_reference:.3f}x; log records dropped by this build: {dropped:.0f}")
    sys.stdout.flush()


def run_postfix(args, mode_per_session):
    script = os.path.join(args.peers, "postfix.sh")
    if args.skip_postfix or not os.path.exists(script):
        return None
    env = dict(os.environ)
    if mode_per_session > 1:
        env["REUSE"] = "1"
    out = subprocess.run([script, str(args.msgs), "50", "1024"], capture_output=True, text=True,
                         env=env, timeout=1800).stdout
    match = re.search(r"drained end-to-end in ([\d.]+)s = (\d+) msg/s", out)
    return float(match.group(2)) if match else None


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("msgs", nargs="?", type=int, default=50000)
    parser.add_argument("--modes", default="persistent,single")
    parser.add_argument("--build", default=os.path.join(ROOT, "build"))
    parser.add_argument("--peers", default=os.path.join(ROOT, "../shared/peers"))
    parser.add_argument("--skip-postfix", action="store_true")
    parser.add_argument("--shards", type=int, default=2)
    parser.add_argument("--reference", help="another ringmta binary to compare with")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    args.ringmta = os.path.join(args.build, "src/ringmta")
    args.blast = os.path.join(args.build, "tools/blast/ringmta-blast")
    args.sink = os.path.join(args.build, "tools/sink/ringmta-sink")
    work = tempfile.mkdtemp(prefix="ringmta-relay-bench-")
    dns = start_dns()
    with open("/proc/loadavg") as f:
        load = " ".join(f.read().split()[:3])
    print(f"# {time.strftime('%Y-%m-%dT%H:%M:%S')} {os.cpu_count()} CPUs, load {load}; "
          f"{args.msgs} messages of 1 KiB to 100 domains; ringmta {args.shards} shards")
    for mode in args.modes.split(","):
        per_session = 100 if mode == "persistent" else 1
        if args.reference:
            compare(args, mode, per_session, work, dns)
            continue
        ceiling, ceiling_got = run_no_mta(args, per_session, work)
        rate, got, accept_rate, accepted = run_ringmta(args, per_session, work, dns)
        postfix = run_postfix(args, per_session)
        print(f"{mode} ({per_session} msg/connection):")
        print(f"  no MTA (blast -> sink):        {ceiling:8.0f} msg/s ({ceiling_got} at the sink)")
        print(f"  ringmta end to end:            {rate:8.0f} msg/s ({got} at the sink; accepted "
              f"{accepted} at {accept_rate:.0f} msg/s) = {rate / ceiling:.2f}x no-MTA")
        if postfix:
            print(f"  Postfix end to end:            {postfix:8.0f} msg/s; ringmta = "
                  f"{rate / postfix:.1f}x Postfix")
        sys.stdout.flush()
    dns.stop()


if __name__ == "__main__":
    main()
