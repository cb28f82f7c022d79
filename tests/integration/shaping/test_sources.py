#!/usr/bin/env python3
"""Egress sources and pools (issue 15) at a real receiver: NSD serves d1.test and d2.test with
the same two MX hosts (one MX site) and solo.test, all at one ringmta-sink on 127.0.0.51,
which records with every message the client address it came from, the EHLO name, its
connection and how many connections that client address had open. ringmta has three sources
127.0.0.2/.3/.4 and pools default = s2, bulk = s3:3 + s4:1, tenant = s4; mail from news.test
takes the bulk pool ([[shaping]] sender_domain); the site is limited to 1 connection and 5
messages per connection, which apply per source x site.
Checks: the bulk pool's 40 messages leave 30 from .3 and 10 from .4 (smooth weighted round
robin, one shard), each source with its EHLO name; at the sink each source never has more
than 1 connection to the site, yet both sources were connected at once (the limit is per
source, not per site); at most 5 messages per connection; mail of two pools sent interleaved
to one site never shares a connection (each sender's mail only from its pool's addresses);
X-Ringmta-Pool from a trusted client picks the pool (folded, any case) and never reaches the
sink; from an untrusted client it is ignored and still removed; an unknown pool falls back to
the default pool with a pool_unknown record; delivery records name the source; SIGHUP with a
new default pool moves new mail to it; the header's pool still applies to mail recovered
after a restart (the destination refusing until then); an operator's suspend/resume of a
domain reaches its queue on every source, of "domain@source" that queue only; bad configs are
exit 2 naming FILE:LINE and the key.
usage: test_sources.py RINGMTA RINGMTA_SINK DNS_SERVER_SCRIPT RINGMTA_CTL"""
import collections
import json
import os
import re
import shutil
import signal
import smtplib
import subprocess
import sys
import tempfile
import time

from harness import Daemon, Tap, free_port
from peers import DnsServer, Sink, wait_until

tap = Tap()
ringmta, sink_binary, dns_script, ctl = sys.argv[1:5]
if not shutil.which("nsd"):
    tap.skip_all("nsd is not installed")
try:
    import dkim  # python3-dkim, from /usr/bin/python3
except ImportError:
    dkim = None

sink_address = "127.0.0.51"
port = free_port(sink_address)
zones = {d: ["@ MX 10 mx1.psite.test.", "@ MX 20 mx2.psite.test."] for d in ["d1.test", "d2.test"]}
zones["psite.test"] = [f"mx1 A {sink_address}", f"mx2 A {sink_address}"]
zones["solo.test"] = ["@ MX 10 mx", f"mx A {sink_address}"]
dns = DnsServer(dns_script, zones)
sink = Sink(sink_binary, sink_address, port, ["--reply-delay-ms", "60"])

work = tempfile.mkdtemp(prefix="ringmta-sources-")
config = os.path.join(work, "ringmta.toml")
# other.test's mail is DKIM-signed with h= naming X-Ringmta-Pool: the signature verifies at the
# receiver only if the signer never saw the field (it is removed before signing).
key_file = os.path.join(work, "other.key")
keygen = subprocess.run([ringmta, "dkim", "keygen", "--domain", "other.test", "--selector", "s",
                         "--algorithm", "ed25519", "--out", key_file],
                        capture_output=True, text=True, timeout=60)
dkim_record = "".join(re.findall(r'"([^"]*)"',
                                 keygen.stdout.split("TXT (", 1)[-1].split(")", 1)[0]))
egress = """
[[source]]
name = "s2"
address = "127.0.0.2"
ehlo_name = "out2.test"

[[source]]
name = "s3"
address = "127.0.0.3"
ehlo_name = "out3.test"

[[source]]
name = "s4"
address = "127.0.0.4"

[[pool]]
name = "default"
sources = ["{default}"]

[[pool]]
name = "bulk"
sources = ["s3:3", "s4:1"]

[[pool]]
name = "tenant"
sources = ["s4"]

[[shaping]]
sender_domain = "news.test"
pool = "bulk"

[[dkim]]
domain = "other.test"
selector = "s"
key_file = "{key_file}"
headers = ["from", "to", "subject", "x-ringmta-pool"]

[[shaping]]
mx = "*.psite.test"
max_connections = 1
max_messages_per_connection = 5
"""


def write_config(default):
    with open(config, "w") as f:
        f.write('[server]\nmynetworks = ["127.0.0.1/32"]\n\n[relay]\n'
                'relay_domains = ["solo.test"]\n' + egress.replace("{default}", default)
                .replace("{key_file}", key_file))


write_config("s2")
daemon_args = ["--config", config, "--resolver", dns.address, "--delivery-port", str(port),
               "--retry-schedule", "1h", "--timeout-connect", "2s"]
daemon = Daemon(ringmta, shards=1, args=daemon_args).start()


def send(messages, source=None):
    """messages: [(sender, recipient, extra header lines)]"""
    with smtplib.SMTP("127.0.0.1", daemon.port, timeout=30,
                      source_address=(source, 0) if source else None) as client:
        for n, (sender, rcpt, extra) in enumerate(messages):
            body = f"From: {sender}\r\n{extra}To: {rcpt}\r\nSubject: {sender} {n}\r\n\r\n" \
                   f"body {n}\r\n"
            client.sendmail(sender, [rcpt], body.encode())


def arrived(count):
    return wait_until(lambda: len(sink.messages()) >= count, int(os.environ.get("WAIT", 120)))


def client_of(envelope):
    return envelope["client"].rsplit(":", 1)[0].strip("[]")


def by_subject(prefix):
    return [(e, m) for e, m in sink.messages() if f"Subject: {prefix}".encode() in m]


# --- the bulk pool by sender domain, to one MX site: weights, EHLO names, per-source limit
bulk = [("n@news.test", f"u{i}@d{1 + i % 2}.test", "") for i in range(40)]
send(bulk)
tap.ok(arrived(40), "the 40 bulk messages arrived", len(sink.messages()))
saved = by_subject("n@news.test")
clients = collections.Counter(client_of(e) for e, _ in saved)
tap.ok(clients == {"127.0.0.3": 30, "127.0.0.4": 10},
       "bulk (s3:3, s4:1) sent 30 from 127.0.0.3 and 10 from 127.0.0.4", dict(clients))
helos = {client_of(e): e["helo"] for e, _ in saved}
tap.ok(helos.get("127.0.0.3") == "out3.test" and helos.get("127.0.0.4") == "mx.test.example",
       "each source says its own EHLO name (s4 has none: the host name)", helos)
per_client = collections.defaultdict(int)
for e, _ in saved:
    per_client[client_of(e)] = max(per_client[client_of(e)], int(e["concurrent-client"]))
tap.ok(max(per_client.values()) == 1,
       "no source ever had more than the site's 1 connection open", dict(per_client))
together = max(int(e["concurrent"]) for e, _ in saved)
tap.ok(together == 2, "both sources were connected at once: the limit is per source x site",
       together)
per_connection = collections.Counter(e["connection"] for e, _ in saved)
tap.ok(max(per_connection.values()) <= 5 and len(per_connection) >= 8,
       "at most 5 messages per connection", dict(per_connection))
sources = {r.get("source") for r in daemon.events("delivered") if r.get("from") == "n@news.test"}
tap.ok(sources == {"s3", "s4"}, "delivery records name the source", sources)

# --- two pools interleaved to one site: never one connection for both
count = len(sink.messages())
mixed = []
for i in range(10):
    mixed += [("n@news.test", f"m{i}@d1.test", ""), ("o@other.test", f"m{i}@d1.test", "")]
send(mixed)
tap.ok(arrived(count + 20), "the interleaved messages arrived")
after = sink.messages()[count:]
by_sender = collections.defaultdict(set)
connections = collections.defaultdict(set)
for e, m in after:
    sender = "news" if b"Subject: n@news.test" in m else "other"
    by_sender[sender].add(client_of(e))
    connections[e["connection"]].add(sender)
tap.ok(by_sender["other"] == {"127.0.0.2"} and by_sender["news"] <= {"127.0.0.3", "127.0.0.4"},
       "each sender's mail left only from its pool's addresses", dict(by_sender))
tap.ok(all(len(s) == 1 for s in connections.values()),
       "no connection carried both pools' mail", {c: sorted(s) for c, s in connections.items()})

# --- X-Ringmta-Pool from a trusted client: chosen, and stripped
count = len(sink.messages())
send([("o@other.test", "h1@solo.test", "X-Ringmta-Pool: tenant\r\n"),
      ("o@other.test", "h2@solo.test", "x-ringmta-pool:\r\n\ttenant\r\n")])
tap.ok(arrived(count + 2), "the messages with the header arrived")
tagged = sink.messages()[count:]
tap.ok({client_of(e) for e, _ in tagged} == {"127.0.0.4"},
       "the header (plain and folded, any case) chose the tenant pool (127.0.0.4)",
       [client_of(e) for e, _ in tagged])
tap.ok(all(b"ringmta-pool" not in m.lower() and b"tenant" not in m for _, m in tagged),
       "the header never reached the receiver", [m[:300] for _, m in tagged])
if dkim:
    lookup = lambda name, timeout=5: (dkim_record if name.decode().rstrip(".") ==  # noqa: E731
                                      "s._domainkey.other.test" else "").encode()
    verdicts = [dkim.DKIM(m).verify(dnsfunc=lookup) for _, m in tagged]
    tap.ok(verdicts == [True, True] and all(b"DKIM-Signature" in m for _, m in tagged),
           "their DKIM signatures (h= asks for X-Ringmta-Pool) verify at the receiver",
           verdicts)
tap.ok(any(r.get("pool") == "tenant" for r in daemon.events("received")),
       "the received record names the pool")

# --- from an untrusted client (not in mynetworks): ignored, still removed
count = len(sink.messages())
send([("o@other.test", "x1@solo.test", "X-Ringmta-Pool: tenant\r\n")], source="127.0.0.9")
tap.ok(arrived(count + 1), "the untrusted client's message arrived")
e, m = sink.messages()[count]
tap.ok(client_of(e) == "127.0.0.2" and b"ringmta-pool" not in m.lower(),
       "an untrusted client's header is ignored (default pool) and removed", (client_of(e), m[:200]))
tap.ok(any(r.get("pool_ignored") == "tenant" for r in daemon.events("received")),
       "the received record says the header was ignored")

# --- an unknown pool: the default pool, logged
count = len(sink.messages())
send([("o@other.test", "y1@solo.test", "X-Ringmta-Pool: nosuch\r\n")])
tap.ok(arrived(count + 1), "the message naming an unknown pool arrived")
e, m = sink.messages()[count]
unknown = daemon.events("pool_unknown")
tap.ok(client_of(e) == "127.0.0.2" and unknown and unknown[-1].get("pool") == "nosuch" and
       unknown[-1].get("used") == "default",
       "an unknown pool falls back to the default pool, with a pool_unknown record",
       (client_of(e), unknown))

# --- operator actions by domain reach every source's queue ("solo.test@s3"); by queue, one
def admin(method, path):
    status, body = daemon.admin(method, path)
    return status, json.loads(body)


def solo_jobs():
    return admin("GET", "/queue/messages?domain=solo.test")[1]


status, body = admin("POST", "/queue/solo.test/suspend?force=1&reason=test")
tap.ok(status == 200 and {"solo.test@s2", "solo.test@s3", "solo.test@s4"} <= set(body["queues"])
       and all(q.split("@")[0] == "solo.test" for q in body["queues"]),
       "suspend solo.test suspends its queue on every source", (status, body))
count = len(sink.messages())
send([("n@news.test", f"p{i}@solo.test", "") for i in range(4)] +
     [("o@other.test", "p4@solo.test", "")])
tap.ok(wait_until(lambda: len(solo_jobs()) == 5, 60) and
       all(j["state"] == "suspended" for j in solo_jobs()),
       "all 5 messages wait, suspended, listed by domain", solo_jobs())
queued = collections.Counter(j["destination"] for j in solo_jobs())
tap.ok(queued == {"solo.test@s3": 3, "solo.test@s4": 1, "solo.test@s2": 1} and
       len(sink.messages()) == count, "in three sources' queues; none delivered", queued)
status, body = admin("POST", "/queue/solo.test@s3/resume")
tap.ok(status == 200 and body["queues"] == ["solo.test@s3"] and body["jobs"] == 0,
       "resume solo.test@s3 resumes that queue only", (status, body))
tap.ok(arrived(count + 3), "its 3 messages arrived")
# The sink has them before the relay has heard its 250s: their jobs leave the listing a moment
# later (CI once listed them still "active" with the machine loaded).
left = wait_until(lambda: sorted(j["destination"] for j in solo_jobs()) ==
                  ["solo.test@s2", "solo.test@s4"], 30)
tap.ok(left and {client_of(e) for e, _ in sink.messages()[count:]} == {"127.0.0.3"} and
       all(j["state"] == "suspended" for j in solo_jobs()),
       "from 127.0.0.3; the other sources' mail still suspended", solo_jobs())
done = subprocess.run([ctl, "--spool", daemon.spool, "resume", "solo.test"], capture_output=True,
                      text=True, timeout=60)
tap.ok(done.returncode == 0 and "solo.test: resumed" in done.stdout and
       "solo.test@s2" in done.stdout and "solo.test@s4" in done.stdout,
       "ringmta-ctl resume solo.test resumes every source's queue and names them",
       (done.returncode, done.stdout, done.stderr))
tap.ok(arrived(count + 5), "the other 2 arrived")
tap.ok({client_of(e) for e, _ in sink.messages()[count + 3:]} == {"127.0.0.2", "127.0.0.4"},
       "from 127.0.0.2 and 127.0.0.4", [client_of(e) for e, _ in sink.messages()[count:]])
status, body = admin("POST", "/queue/solo.test@s4/suspend")
tap.ok(status == 200 and body["queues"] == ["solo.test@s4"],
       "suspend solo.test@s4 suspends that queue only", (status, body))
count = len(sink.messages())
send([("o@other.test", "q1@solo.test", "X-Ringmta-Pool: tenant\r\n"),
      ("o@other.test", "q2@solo.test", "")])
tap.ok(arrived(count + 1) and client_of(sink.messages()[count][0]) == "127.0.0.2",
       "mail on s2 still leaves", [client_of(e) for e, _ in sink.messages()[count:]])
waiting = [("solo.test@s4", "suspended")]
tap.ok(wait_until(lambda: [(j["destination"], j["state"]) for j in solo_jobs()] == waiting, 30),
       "mail on s4 waits", solo_jobs())
status, body = admin("POST", "/queue/solo.test@s4/resume")
tap.ok(status == 200 and arrived(count + 2) and len(sink.messages()) == count + 2,
       "resumed, it arrived", (status, body))

# --- reload: a new default pool for new mail
write_config("s3")
reloads = len(daemon.events("reloaded"))
daemon.process.send_signal(signal.SIGHUP)
tap.ok(wait_until(lambda: len(daemon.events("reloaded")) > reloads, 30), "SIGHUP reloaded",
       daemon.events("reload_rejected"))
count = len(sink.messages())
send([("o@other.test", "z1@solo.test", ""), ("o@other.test", "z2@d2.test", "")])
tap.ok(arrived(count + 2), "mail after the reload arrived")
tap.ok({client_of(e) for e, _ in sink.messages()[count:]} == {"127.0.0.3"},
       "after the reload the default pool leaves from 127.0.0.3",
       [client_of(e) for e, _ in sink.messages()[count:]])

# --- the header's pool survives a restart: it is stored with the envelope (the header itself
# never is). The destination refuses while the message waits; after the restart it accepts.
sink.stop()
send([("o@other.test", "r1@solo.test", "X-Ringmta-Pool: tenant\r\n")])
tap.ok(wait_until(lambda: any(r.get("to") == "r1@solo.test" for r in daemon.events("deferred")),
                  60), "the message with the header is deferred: the destination refuses",
       daemon.events("deferred")[-3:])
tap.ok(daemon.stop() == 0, "the daemon stops cleanly with it queued")
daemon = Daemon(ringmta, spool=daemon.spool, shards=1, args=daemon_args).start()
sink = Sink(sink_binary, sink_address, port, ["--reply-delay-ms", "60"])
status, body = admin("POST", "/queue/solo.test/retry")


def recovered():
    return [(e, m) for e, m in sink.messages() if "r1@solo.test" in e["rcpt"]]


# Matched by recipient: another message may come again after the restart (a delivery mark not
# yet durable means a redelivery, never a loss).
tap.ok(status == 200 and wait_until(lambda: recovered(), int(os.environ.get("WAIT", 120))),
       "after the restart, retried, it arrived", (status, body))
e, m = (recovered() or [({"client": "none:0"}, b"")])[0]
tap.ok(client_of(e) == "127.0.0.4" and b"ringmta-pool" not in m.lower(),
       "it left from the header's pool (tenant: 127.0.0.4), not the default (127.0.0.3)",
       (client_of(e), [(x["rcpt"], client_of(x)) for x, _ in sink.messages()]))
daemon.stop()


# --- bad configurations: exit 2 naming FILE:LINE and the key
def check(text):
    path = os.path.join(work, "bad.toml")
    with open(path, "w") as f:
        f.write(text)
    done = subprocess.run([ringmta, "check-config", "--config", path], capture_output=True,
                          text=True, timeout=30)
    return done.returncode, done.stderr.replace(path, "bad.toml")


source = '[[source]]\nname = "a"\naddress = "127.0.0.2"\n'
cases = [
    ('[[pool]]\nname = "p"\nsources = ["nope"]\n', "bad.toml:1: pool.sources: unknown source"),
    (source + source, "bad.toml:4: source.name: 'a' is defined twice"),
    ('[[source]]\nname = "a"\naddress = "192.0.2.1"\n',
     "bad.toml:1: source.address: cannot bind 192.0.2.1"),
    ('[[shaping]]\nsender_domain = "x.test"\npool = "p"\n', "bad.toml:1: shaping.pool: unknown"),
    ('[[pool]]\nname = "p"\nsources = ["a:0"]\n', "bad.toml:3: pool.sources: expected"),
]
for text, expected in cases:
    status, errors = check(text)
    tap.ok(status == 2 and expected in errors, f"exit 2: {expected}", (status, errors))
tap.done()
