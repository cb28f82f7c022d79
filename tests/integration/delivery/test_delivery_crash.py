#!/usr/bin/env python3
"""kill -9 during delivery under load: messages stream in and out (client → ringmta → MX from
NSD → ringmta-sink) while the daemon is killed at random moments and restarted. In the end
every message that got a 250 has reached the sink intact at least once; duplicates (delivered,
but the daemon died before journaling it) are counted and reported, never lost mail.
usage: test_delivery_crash.py RINGMTA RINGMTA_SINK DNS_SERVER_SCRIPT [ROUNDS]"""
import random
import re
import shutil
import signal
import subprocess
import sys
import time

from harness import Daemon, Load, Tap, free_port, test_message
from peers import DnsServer, Sink, wait_until, without_received

tap = Tap()
ringmta, sink_binary, dns_script = sys.argv[1:4]
rounds = int(sys.argv[4]) if len(sys.argv) > 4 else 8
if not shutil.which("nsd"):
    tap.skip_all("nsd is not installed")
rng = random.Random(5)
run = f"dcrash{rng.randrange(10**6)}"
port = free_port("127.0.0.3")
dns = DnsServer(dns_script, {"good.test": ["@ MX 10 mx", "mx A 127.0.0.3"]})
sink = Sink(sink_binary, "127.0.0.3", port)
args = ["--resolver", dns.address, "--delivery-port", str(port), "--retry-schedule", "1s"]

acked, spool, next_number = {}, None, 0
for _ in range(rounds):
    daemon = Daemon(ringmta, spool=spool, args=args).start()
    spool = daemon.spool
    load = Load(daemon.port, run, threads=4, first=next_number, domain="good.test").start()
    time.sleep(rng.uniform(0.5, 1.5))
    daemon.process.send_signal(signal.SIGKILL)
    daemon.process.wait(10)
    load.stop()
    acked.update(load.acked)
    next_number = load.next_number()

final = Daemon(ringmta, spool=spool, args=args).start()


def spool_empty():
    out = subprocess.run([ringmta, "spool", "ls", "--spool", spool], capture_output=True,
                         text=True).stdout
    return out.strip().endswith("0 messages queued")


drained = wait_until(spool_empty, 120, step=1)
tap.ok(drained, "after the last restart every queued message is delivered")
tap.ok(final.stop() == 0, "clean exit")

copies, corrupt = {}, 0
for _, message in sink.messages():
    message = without_received(message)
    match = re.match(rb"X-Test-Id: ([^\r]+)-(\d+)\r\n", message)
    if not match:
        corrupt += 1
        continue
    n = int(match.group(2))
    if message != test_message(run, n):
        corrupt += 1
    copies[n] = copies.get(n, 0) + 1
lost = [n for n in acked if n not in copies]
duplicates = sum(count - 1 for count in copies.values() if count > 1)
print(f"# {len(acked)} acknowledged, {len(copies)} distinct delivered, {duplicates} duplicates, "
      f"{len(set(copies) - set(acked))} delivered without a 250 seen")
tap.ok(len(acked) > 100, f"load reached the daemon ({len(acked)} acknowledged)")
tap.ok(not lost, "no acknowledged message lost", lost[:20])
tap.ok(corrupt == 0, "every delivered copy is intact", corrupt)
# A crash can repeat at most the deliveries it interrupted: one extra copy per crash at most.
most = max(copies.values(), default=0)
tap.ok(most <= rounds + 1, f"no message delivered more than once per crash (max {most} copies)")
sink.stop()
dns.stop()
tap.done()
