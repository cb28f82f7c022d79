#!/usr/bin/env python3
"""MX site rollup (KumoMTA's site_name) at a real receiver: NSD serves three domains whose MX
sets are the same two hosts (one ringmta-sink on 127.0.0.41, slow to answer so queues build)
and one domain with its own MX (127.0.0.42). [[shaping]] limits the site (mx = "*.gsite.test")
to 2 connections and 12 messages per connection. The sink records, with every message, how
many connections its client address had open at that moment and which connection carried it.
Checks: the three domains together never exceed the site's 2 connections (each alone may
open 2); one connection carries more than one domain's mail; the three queues live on one
shard (the site's owner) although the domains hash to different owners; suspending one
domain by name still holds only that domain (the admin API finds the queue on the site's
shard), and resuming it delivers its mail; the other domain is untouched by the site.
A reply rule acts on the whole site: h1.test and h2.test share MX hosts on a scripted server
that answers RCPT slow*@ with Yahoo's "421 4.7.0 [TSS04]"; the rule (mx = "*.hsite.test")
fired by h1.test's reply suspends h2.test too, and h2.test's next message waits.
A site's rate applies to its members together: r1.test and r2.test share MX hosts (a sink on
127.0.0.44) shaped to 5 messages/s (burst 5); 15 messages each at once, and the sink's arrival
times must stay within that one bucket (each member alone was allowed 5/s: together 10/s).
usage: test_sites.py RINGMTA RINGMTA_SINK DNS_SERVER_SCRIPT SCRIPTED_SINK"""
import collections
import json
import os
import shutil
import smtplib
import subprocess
import sys
import tempfile
import time

from harness import Daemon, Tap, free_port
from peers import DnsServer, Sink, wait_until

tap = Tap()
ringmta, sink_binary, dns_script, scripted_script = sys.argv[1:5]
if not shutil.which("nsd"):
    tap.skip_all("nsd is not installed")

site_domains = ["g1.test", "g2.test", "g3.test"]
port = free_port("127.0.0.41")
zones = {d: ["@ MX 10 mx1.gsite.test.", "@ MX 20 mx2.gsite.test."] for d in site_domains}
zones["gsite.test"] = ["mx1 A 127.0.0.41", "mx2 A 127.0.0.41"]
zones["solo.test"] = ["@ MX 10 mx", "mx A 127.0.0.42"]
for d in ["h1.test", "h2.test"]:
    zones[d] = ["@ MX 10 mx1.hsite.test."]
zones["hsite.test"] = ["mx1 A 127.0.0.43"]
for d in ["r1.test", "r2.test"]:
    zones[d] = ["@ MX 10 mx1.rsite.test.", "@ MX 20 mx2.rsite.test."]
zones["rsite.test"] = ["mx1 A 127.0.0.44", "mx2 A 127.0.0.44"]
dns = DnsServer(dns_script, zones)
site_sink = Sink(sink_binary, "127.0.0.41", port, ["--reply-delay-ms", "100"])
solo_sink = Sink(sink_binary, "127.0.0.42", port)
rate_sink = Sink(sink_binary, "127.0.0.44", port)

work = tempfile.mkdtemp(prefix="ringmta-sites-")
scripted_dir = os.path.join(work, "scripted")
os.mkdir(scripted_dir)
scripted = subprocess.Popen(
    [sys.executable, scripted_script, "--listen", "127.0.0.43", "--port", str(port),
     "--save-dir", scripted_dir, "--stop-on-stdin-eof",
     "--reject-rcpt", "slow=421 4.7.0 [TSS04] Messages from 127.0.0.1 temporarily deferred"],
    stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
tap.ok(scripted.stdout.readline().startswith("READY"), "the scripted server for hsite runs")
config = os.path.join(work, "ringmta.toml")
with open(config, "w") as f:
    f.write("""[queue]
max_connections_per_destination = 8

[[shaping]]
mx = "*.gsite.test"
max_connections = 2
max_messages_per_connection = 12

[[shaping]]
mx = "*.rsite.test"
max_messages_per_second = 5

[[reply_rule]]
mx = "*.hsite.test"
pattern = '^421 4\\.7\\.0 \\[TSS04\\]'
action = "suspend"
duration = "1h"
""")
daemon = Daemon(ringmta, shards=4, args=["--config", config, "--resolver", dns.address,
                                         "--delivery-port", str(port), "--retry-schedule", "1h",
                                         "--timeout-connect", "2s"]).start()


def send(recipients):
    with smtplib.SMTP("127.0.0.1", daemon.port, timeout=30) as client:
        for n, rcpt in enumerate(recipients):
            client.sendmail("s@sender.test", [rcpt], f"Subject: {n}\r\n\r\nbody {n}\r\n".encode())


def operate(destination, action):
    status, body = daemon.admin("POST", f"/queue/{destination}/{action}", timeout=10)
    return status, (json.loads(body) if body.startswith("{") else body)


def queues():
    status, body = daemon.admin("GET", "/queue")
    return {d["destination"]: d for d in json.loads(body)} if status == 200 else {}


# --- a burst to the three site domains: one site limit for all of them
per_domain = 20
send([f"u{n}@{d}" for n in range(per_domain) for d in site_domains] + ["a@solo.test"])
total = per_domain * len(site_domains)
tap.ok(wait_until(lambda: len(site_sink.messages()) >= total, 120),
       "every message for the site's domains arrived", len(site_sink.messages()))
tap.ok(wait_until(lambda: len(solo_sink.messages()) == 1, 30),
       "the domain with its own MX is delivered to its own host")
messages = [e for e, _ in site_sink.messages()]
concurrent = max(int(e["concurrent-client"]) for e in messages)
tap.ok(concurrent <= 2, "the sink never saw more than the site's 2 connections from ringmta "
       "for the three domains together", concurrent)
tap.ok(concurrent == 2, "and the site's limit was reached (the queues did build)", concurrent)
domains_by_connection = collections.defaultdict(set)
for e in messages:
    for rcpt in e["rcpt"]:
        domains_by_connection[e["connection"]].add(rcpt.split("@")[1])
shared = [c for c, ds in domains_by_connection.items() if len(ds) > 1]
tap.ok(shared, "one connection carried more than one domain's mail",
       {c: sorted(ds) for c, ds in domains_by_connection.items()})
per_connection = collections.Counter(e["connection"] for e in messages)
tap.ok(max(per_connection.values()) <= 12, "at most the site's 12 messages per connection",
       dict(per_connection))

listed = queues()
shards = {listed[d]["shard"] for d in site_domains if d in listed}
tap.ok(all(d in listed for d in site_domains) and len(shards) == 1,
       "the three domains' queues live on one shard (the site's owner)",
       {d: listed.get(d, {}).get("shard") for d in site_domains})

# --- per-domain suspension by name still works after the rollup
status, answer = operate("g2.test", "suspend")
tap.ok(status == 200, "suspend g2.test (found on the site's shard, no force needed)", answer)
before = len(site_sink.messages())
send(["late1@g1.test", "late1@g2.test", "late1@g3.test"])
tap.ok(wait_until(lambda: len(site_sink.messages()) == before + 2, 30),
       "g1.test and g3.test keep delivering through the site")
rcpts = {r for e, _ in site_sink.messages() for r in e["rcpt"]}
waiting = queues().get("g2.test", {})
tap.ok("late1@g2.test" not in rcpts and waiting.get("suspended") and
       waiting.get("ready", 0) + waiting.get("scheduled", 0) == 1,
       "g2.test's message waits while g2.test is suspended", waiting)
status, answer = operate("g2.test", "resume")
tap.ok(status == 200 and wait_until(
    lambda: "late1@g2.test" in {r for e, _ in site_sink.messages() for r in e["rcpt"]}, 30),
    "after resume g2.test's message is delivered", answer)

# --- a reply rule fired by one member's reply suspends its whole site
def scripted_mails():
    with open(os.path.join(scripted_dir, "stats.json")) as f:
        return json.load(f)["mail"]


send(["ok1@h1.test", "ok1@h2.test"])
tap.ok(wait_until(lambda: scripted_mails() >= 2, 30), "h1.test and h2.test delivered first")
send(["slow1@h1.test"])
fired = wait_until(lambda: {e["destination"] for e in daemon.events("reply_rule")} >=
                   {"h1.test", "h2.test"}, 30)
tap.ok(fired, "the 421 [TSS04] to h1.test suspends h1.test and h2.test (one site)",
       daemon.events("reply_rule"))
mails = scripted_mails()
send(["ok2@h2.test"])
h2 = wait_until(lambda: [d for d in queues().values() if d["destination"] == "h2.test" and
                         d["ready"] + d["scheduled"] == 1], 20)
time.sleep(2)  # the site would have delivered it by now: one connection, nothing paused
tap.ok(h2 and h2[0]["next_attempt_ms"] > time.time() * 1000 + 30 * 60 * 1000 and
       scripted_mails() == mails, "h2.test's next message waits for the site's suspension; "
       "nothing was sent", (h2[:1], scripted_mails(), mails))
# --- the site's rate holds for its members together
rate_total = 30
send([f"r{n}@r{1 + n % 2}.test" for n in range(rate_total)])
tap.ok(wait_until(lambda: len(rate_sink.messages()) >= rate_total, 120),
       "every message for r1.test and r2.test arrived", len(rate_sink.messages()))
rate_messages = [e for e, _ in rate_sink.messages()]
arrivals = sorted(int(e["time-ms"]) for e in rate_messages)
members = {r.split("@")[1] for e in rate_messages for r in e["rcpt"]}
# Upper bounds on what the sink saw (limit checks): a bucket of 5/s with 5 banked lets at most
# 5 + 5 through in any second (one more for the delivery's own latency spread), and 30 need
# (30 - 5) / 5 = 5 s; the members' own 5/s each would have allowed 10/s (about 2 s for 30).
busiest = max(sum(1 for b in arrivals[i:] if b < a + 1000) for i, a in enumerate(arrivals))
tap.ok(busiest <= 11, "the site never exceeded its 5 messages/s for r1.test and r2.test "
       "together (most in any second)", busiest)
span = arrivals[-1] - arrivals[0] if arrivals else 0
tap.ok(span >= 4000, "30 messages took at least (30 - 5) / 5 s minus latency at the sink",
       f"{span} ms")
tap.ok(members == {"r1.test", "r2.test"}, "both members were delivered", members)
daemon.stop()
scripted.stdin.close()
scripted.wait(30)
tap.done()
