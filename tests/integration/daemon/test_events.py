#!/usr/bin/env python3
"""Events out (issue 14): log records posted to a webhook, at least once, through the durable
event log in SPOOL/events.

A real HTTP receiver (http.server) accepts, answers 500, stalls past --events-timeout, is down
(its port closed) and recovers, while mail keeps arriving (bounded: a few hundred messages per
phase). The daemon is SIGKILLed while the receiver is down and started again on the same
spool. Then: every message that got 250 has its "received" record at the receiver; records
within a batch are in event-log order; a record answered 2xx is never sent again (duplicates
come only from batches that were not acknowledged); the daemon answered 250 in every phase;
deferred records carry the bounce class; the webhook's metrics and records say what happened.
usage: test_events.py RINGMTA"""
import glob
import http.server
import json
import os
import shutil
import signal
import sys
import tempfile
import threading
import time

from harness import Daemon, Load, Tap, free_port

tap = Tap()
binary = os.path.abspath(sys.argv[1])


class Receiver:
    """The webhook endpoint: mode is accept, fail (500), stall (answers after the client's
    timeout) or down (listening socket closed)."""

    def __init__(self, port, stall_s):
        self.port, self.stall_s = port, stall_s
        self.mode = "accept"
        self.requests = []  # (mode when answered, batch key, [records])
        self.lock = threading.Lock()
        self.server = None

    def up(self):
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                records = json.loads(body)  # must be valid JSON, strict UTF-8
                mode = receiver.mode
                with receiver.lock:
                    receiver.requests.append((mode, self.headers["X-Ringmta-Batch"], records))
                if mode == "stall":
                    time.sleep(receiver.stall_s)
                status = 500 if mode == "fail" else 200
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        class Server(http.server.ThreadingHTTPServer):
            allow_reuse_address = True
            daemon_threads = True

        self.server = Server(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def down(self):
        self.server.shutdown()
        self.server.server_close()
        self.server = None

    def records(self, acknowledged_only=False):
        with self.lock:
            return [r for mode, _, batch in self.requests
                    if not acknowledged_only or mode == "accept" for r in batch]


def spool_records(spool):
    out = []
    for path in sorted(glob.glob(os.path.join(spool, "events", "*.jsonl"))):
        with open(path, "rb") as f:
            for line in f.read().split(b"\n"):
                try:
                    out.append(json.loads(line))
                except ValueError:
                    pass
    return out


def wait_for(condition, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.2)
    return condition()


def run_load(daemon, run, count, first, domain="example.com"):
    """`count` messages (bounded, and at most 60 s); returns {number: queue id} of the 250s."""
    load = Load(daemon.port, run, threads=3, per_connection=10, first=first,
                domain=domain).start()
    wait_for(lambda: len(load.attempted) >= count, 60)
    load.stop()
    return load.acked, load.attempted


port = free_port()
receiver = Receiver(port, stall_s=3)
receiver.up()
args = ["--events-url", f"http://127.0.0.1:{port}/hook", "--events-batch-size", "40",
        "--events-interval", "200ms", "--events-timeout", "1s", "--events-retry-max", "2s",
        "--events-types", "received,deferred,bounced,delivered,events_failed"]
daemon = Daemon(binary, args=args).start()
spool = daemon.spool
run = "events"
acked = {}
phases_ok = []
first = 0
down_since = None
for mode in ["accept", "fail", "stall", "down"]:
    if mode == "down":
        receiver.down()
        down_since = time.monotonic()
    receiver.mode = mode if mode != "down" else "accept"
    got, attempted = run_load(daemon, run, 150, first)
    first = max(attempted) + 1
    acked.update(got)
    phases_ok.append((mode, len(got), len(attempted)))
    if mode != "down":
        time.sleep(1.5)  # a few posts (and retries) in this mode
# The endpoint stays down for about a minute under a trickle of mail (bounded: 12 rounds).
for _ in range(12):
    if time.monotonic() - down_since > 55:
        break
    time.sleep(4)
    got, attempted = run_load(daemon, run, 50, first)
    first = max(attempted) + 1
    acked.update(got)
    phases_ok.append(("down", len(got), len(attempted)))
print(f"# phases (mode, 250s, attempted): {phases_ok}")
tap.ok(all(n > 0 and n >= attempted - 3 for _, n, attempted in phases_ok),
       "mail was accepted in every phase: endpoint up, failing, stalled and down",
       str(phases_ok))

# Receiver down: every received record reaches the event log on disk, then SIGKILL.
acked_ids = set(acked.values())
on_disk = lambda: acked_ids <= {r.get("id") for r in spool_records(spool)
                                if r.get("event") == "received"}
tap.ok(wait_for(on_disk, 30), "every 250 has its received record in SPOOL/events")
failed_records = daemon.events("events_failed")
tap.ok(len(failed_records) >= 1 and failed_records[0].get("url", "").endswith("/hook"),
       "the failing endpoint was logged (events_failed, once per streak)",
       str(failed_records[:2]))
metrics = daemon.metrics()
tap.ok(metrics.get("ringmta_events_post_failures_total", 0) > 0 and
       metrics.get("ringmta_events_sent_total", 0) > 0 and
       metrics.get("ringmta_events_backlog_bytes", 0) > 0,
       "metrics: sent, post failures and the backlog while the endpoint is down",
       str({k: v for k, v in metrics.items() if k.startswith("ringmta_events")}))
daemon.process.send_signal(signal.SIGKILL)
daemon.process.wait(10)

# Restart on the same spool, more mail while still down, then the endpoint recovers.
daemon = Daemon(binary, spool=spool, args=args).start()
got, attempted = run_load(daemon, run, 100, first)
acked.update(got)
tap.ok(len(got) > 0 and len(got) >= len(attempted) - 3,
       "after the restart, mail is accepted with the endpoint still down")
acked_ids = set(acked.values())
receiver.mode = "accept"
print(f"# the endpoint was down for {time.monotonic() - down_since:.0f} s")
receiver.up()
received_ids = lambda: {r.get("id") for r in receiver.records() if r.get("event") == "received"}
tap.ok(wait_for(lambda: acked_ids <= received_ids(), 120),
       f"every one of {len(acked_ids)} accepted messages has its received record at the "
       "endpoint, across failures, stalls, downtime and a SIGKILL",
       f"missing: {sorted(acked_ids - received_ids())[:5]}")

# Order within each batch: event ids ("SEGMENT-OFFSET") increase.
def key(event_id):
    segment, offset = event_id.split("-")
    return (int(segment, 16), int(offset))


in_order = all([key(r["event_id"]) for r in batch] == sorted(key(r["event_id"]) for r in batch)
               for _, _, batch in receiver.requests)
tap.ok(in_order, "records within every batch are in event-log order")
# Duplicates only from batches that were not acknowledged: a record answered 200 (mode accept)
# is never posted again.
seen_acked, resent_after_ack = set(), []
with receiver.lock:
    for mode, _, batch in receiver.requests:
        for r in batch:
            if r["event_id"] in seen_acked:
                resent_after_ack.append(r["event_id"])
        if mode == "accept":
            seen_acked.update(r["event_id"] for r in batch)
tap.ok(not resent_after_ack, "no record acknowledged with a 2xx was sent again",
       str(resent_after_ack[:5]))
all_ids = [r["event_id"] for r in receiver.records()]
print(f"# {len(receiver.requests)} posts, {len(all_ids)} records, "
      f"{len(all_ids) - len(set(all_ids))} duplicates (from unacknowledged batches)")
tap.ok(len(all_ids) > len(set(all_ids)),
       "failed and stalled batches were sent again (the duplicates at-least-once allows)")
# Same batch key when a batch is sent again: receivers can drop duplicates by it.
keys = {}
with receiver.lock:
    for mode, batch_key, batch in receiver.requests:
        keys.setdefault(batch_key, []).append(batch[0]["event_id"])
tap.ok(all(len(set(v)) == 1 for v in keys.values()),
       "a batch sent again starts at the same record and carries the same X-Ringmta-Batch")

deferred = [r for r in receiver.records() if r.get("event") == "deferred"]
tap.ok(deferred and all(r.get("class") == "routing" and "status" in r for r in deferred),
       f"deferred records carry a status and a bounce class ({len(deferred)}: DNS failures "
       "are routing)", str(deferred[:1]))
daemon.stop()

# The backlog limit: an endpoint that never answers, 1M of records kept; the oldest are
# dropped and counted, mail is never refused, and the newest records arrive once it is up.
port = free_port()
late = Receiver(port, stall_s=0)
daemon = Daemon(binary, args=["--events-url", f"http://127.0.0.1:{port}/", "--events-types",
                              "all", "--events-max-backlog", "1M", "--events-retry-max", "1s",
                              "--events-timeout", "500ms"]).start()
got, attempted = {}, set()
for round_number in range(20):  # bounded: stop once records were dropped
    more, tried = run_load(daemon, run, 300, 100_000 + 1000 * round_number)
    got.update(more)
    attempted |= tried
    if daemon.metrics().get("ringmta_events_dropped_total", 0) > 0:
        break
metrics = daemon.metrics()
wait_for(lambda: daemon.events("events_dropped"), 15)  # the webhook thread reports it
dropped_records = daemon.events("events_dropped")
tap.ok(metrics.get("ringmta_events_dropped_total", 0) > 0 and
       metrics.get("ringmta_events_backlog_bytes", 1 << 30) <= 1 << 20,
       "past events.max_backlog the oldest records are dropped and counted; the backlog stays "
       "under the limit", str({k: v for k, v in metrics.items() if "events" in k}))
tap.ok(dropped_records and dropped_records[0].get("records", 0) > 0,
       "an events_dropped record says how many", str(dropped_records[:1]))
tap.ok(len(got) >= len(attempted) - 3, f"every message got 250 meanwhile ({len(got)})")
late.up()
newest = got[max(got)]
tap.ok(wait_for(lambda: newest in {r.get("id") for r in late.records()
                                   if r.get("event") == "received"}, 60),
       "once the endpoint is up, the newest records arrive")
daemon.stop()

# SIGHUP: new bounce rules and record types apply live; a bad rules file is refused naming
# its file and line, and the running rules stay.
work = tempfile.mkdtemp(prefix="ringmta-events-")
config, rules = os.path.join(work, "ringmta.toml"), os.path.join(work, "classes.toml")
port = free_port()
hook = Receiver(port, stall_s=0)
hook.up()


def configure(types, classes_file, url_port=port):
    with open(config + ".new", "w") as f:
        f.write(f'[events]\nurl = "http://127.0.0.1:{url_port}/"\ntypes = {json.dumps(types)}\n'
                f'interval = "100ms"\n[bounce]\nclasses_file = "{classes_file}"\n')
    os.replace(config + ".new", config)


def reload_and_wait(event):
    before = len(daemon.events(event))
    daemon.process.send_signal(signal.SIGHUP)
    wait_for(lambda: len(daemon.events(event)) > before, 15)
    return daemon.events(event)[before:]


configure(["deferred"], "")
daemon = Daemon(binary, args=["--config", config]).start()


def deferred_of(batch):
    """The deferred records of the batch's messages. A destination whose connection fails
    defers only its probe's job (the others wait on the destination), so which message of
    the batch gets the record depends on the order the jobs became ready."""
    ids = set(batch.values())
    return [r for r in hook.records() if r.get("event") == "deferred" and r.get("id") in ids]


got, _ = run_load(daemon, run, 5, 200_000)
tap.ok(wait_for(lambda: deferred_of(got), 90) and deferred_of(got)[0]["class"] == "routing",
       "built-in rules: a DNS failure is a routing deferral")
with open(rules, "w") as f:
    f.write("[[rule]]\nclass = \"rate-limit\"\ntext = '.'\n")
configure(["deferred", "received"], rules)
reloaded = reload_and_wait("reloaded")
got, _ = run_load(daemon, run, 5, 201_000, "second.example")  # a first attempt
later_id = got[min(got)]
tap.ok(wait_for(lambda: deferred_of(got), 90) and
       deferred_of(got)[0]["class"] == "rate-limit" and
       wait_for(lambda: later_id in {r.get("id") for r in hook.records()
                                     if r.get("event") == "received"}, 60),
       "after SIGHUP, the new rules classify and the new record types are posted",
       str(reloaded[-1:]))
with open(rules, "w") as f:
    f.write("[[rule]]\nclass = \"policy\"\ntext = '('\n")
rejected = reload_and_wait("reload_rejected")
tap.ok(rejected and f"{rules}:1: rule.text" in json.dumps(rejected[-1]),
       "a bad rules file is refused, naming file, line and key", str(rejected[-1:]))
got, _ = run_load(daemon, run, 5, 202_000, "third.example")
tap.ok(wait_for(lambda: deferred_of(got), 90) and deferred_of(got)[0]["class"] == "rate-limit",
       "and the running rules stay")

# events.url reloaded to another endpoint while the webhook thread waits for records: the next
# batches go there (the thread posted them with the configuration it had copied before the
# wait, so the client was rebuilt for the old host and port, and kept them for good).
moved = Receiver(free_port(), stall_s=0)
moved.up()
configure(["deferred", "received"], "", url_port=moved.port)  # the built-in rules again
tap.ok(reload_and_wait("reloaded"), "SIGHUP reloads events.url to another port")
got, _ = run_load(daemon, run, 5, 203_000, "fourth.example")
new_ids = set(got.values())


def received_ids(receiver):
    return {r.get("id") for r in receiver.records() if r.get("event") == "received"}


tap.ok(wait_for(lambda: new_ids <= received_ids(moved), 60) and
       not new_ids & received_ids(hook),
       "after the reload, the records go to the new endpoint only",
       f"new: {sorted(new_ids & received_ids(moved))} old: {sorted(new_ids & received_ids(hook))}")
moved.down()
daemon.stop()
shutil.rmtree(work, True)
tap.done()
