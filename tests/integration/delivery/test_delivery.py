#!/usr/bin/env python3
"""End to end through real peers: smtplib/swaks → ringmta → MX from a real DNS server (NSD) →
ringmta-sink on 127.0.0.x. MX preference and fallback, implicit MX, byte-exact bodies,
temporary failures retried until delivered, permanent failures bounced with a DSN delivered
to the sender's domain, null MX (5.1.10), NXDOMAIN (5.1.2), SERVFAIL (deferred, no bounce),
NOTIFY=NEVER and the null sender (no DSN), queue lifetime expiry (DSN 4.4.7), and the
operator's queue API (list, suspend, resume, flush, bounce).
usage: test_delivery.py RINGMTA RINGMTA_SINK DNS_SERVER_SCRIPT"""
import json
import shutil
import smtplib
import subprocess
import sys

from harness import Daemon, Tap, free_port
from peers import DnsServer, Sink, dsn_fields, wait_until, without_received

tap = Tap()
ringmta, sink_binary, dns_script = sys.argv[1:4]
if not shutil.which("nsd"):
    tap.skip_all("nsd is not installed")

port = free_port("127.0.0.3")
dns = DnsServer(dns_script, {
    "good.test": ["@ MX 10 mx", "mx A 127.0.0.3"],
    "fallback.test": ["@ MX 10 mx1", "@ MX 20 mx2", "mx1 A 127.0.0.2", "mx2 A 127.0.0.3"],
    "implicit.test": ["@ A 127.0.0.3"],
    "sender.test": ["@ MX 10 mx", "mx A 127.0.0.4"],
    "temp.test": ["@ MX 10 mx", "mx A 127.0.0.5"],
    "perm.test": ["@ MX 10 mx", "mx A 127.0.0.6"],
    "nullmx.test": ["@ MX 0 ."],
    # MX hosts that are ringmta itself: by address and port, and by name (our host name).
    "loop.test": ["@ MX 10 mx", "mx A 127.0.0.7"],
    "loopname.test": ["@ MX 10 mx.test.example."],
    "test.example": ["mx A 127.0.0.8"],
    "backup.test": ["@ MX 10 mx", "@ MX 20 us", "mx A 127.0.0.3", "us A 127.0.0.7"],
}, broken=["broken.test"])
good = Sink(sink_binary, "127.0.0.3", port)
sender_domain = Sink(sink_binary, "127.0.0.4", port)
flaky = Sink(sink_binary, "127.0.0.5", port, ["--tempfail-rate", "rcpt=0.5", "--seed", "7"])
refusing = Sink(sink_binary, "127.0.0.6", port, ["--permfail-rate", "rcpt=1"])
daemon = Daemon(ringmta, args=["--resolver", dns.address, "--delivery-port", str(port),
                               "--listen", f"127.0.0.7:{port}",
                               "--retry-schedule", "1s", "--timeout-connect", "2s"]).start()


def send(sender, recipients, body, options=(), rcpt_options=()):
    with smtplib.SMTP("127.0.0.1", daemon.port, timeout=30) as client:
        return client.sendmail(sender, recipients, body, list(options), list(rcpt_options))


def message(subject, lines=3):
    text = "".join(f"line {i} of {subject}\r\n" if i % 3 else f".dot line {i}\r\n"
                   for i in range(lines))
    return (f"Subject: {subject}\r\nMessage-ID: <{subject}@client.test>\r\n\r\n{text}").encode()


# --- the resolver's sockets: a receive buffer for every question on the wire (256 × 4 KiB,
# which the kernel doubles), within net.core.rmem_max: answers in a burst are not dropped.
def dns_socket_buffers():
    listing = subprocess.run(["ss", "-u", "-a", "-m", "-p", "-n"], capture_output=True,
                             text=True).stdout
    buffers, ours = [], False
    for line in listing.splitlines():
        if not line.startswith("\t") and not line.startswith(" "):
            ours = f"pid={daemon.process.pid}," in line and line.split()[4].endswith(
                ":" + dns.address.rsplit(":", 1)[1])
        elif ours and "rb" in line:
            buffers.append(int(line.split(",rb", 1)[1].split(",", 1)[0]))
    return buffers


with open("/proc/sys/net/core/rmem_max") as f:
    rmem_max = int(f.read())
buffers = dns_socket_buffers()
tap.ok(buffers and all(b >= 2 * min(256 * 4096, rmem_max) for b in buffers),
       "the resolver's UDP sockets get a receive buffer for 256 answers", (buffers, rmem_max))

# --- normal delivery: MX, MX fallback after a refused connection, implicit MX; byte-exact
sent = {name: message(name, 40) for name in ("plain", "fallback", "implicit", "multi")}
# Over copy_body_bytes_max (64 KiB): spliced from the spool after DATA although the sink offers
# CHUNKING (the small ones go as BDAT chunks).
sent["large"] = message("large", 4000)
send("sender@sender.test", ["a@good.test"], sent["plain"])
send("sender@sender.test", ["big@good.test"], sent["large"])
send("sender@sender.test", ["b@fallback.test"], sent["fallback"])
send("sender@sender.test", ["c@implicit.test"], sent["implicit"])
send("sender@sender.test", ["d1@good.test", "d2@GOOD.test", "e@fallback.test"], sent["multi"])
arrived = wait_until(lambda: len(good.messages()) >= 6 and good.messages(), 30) or []
by_subject = {}
for envelope, body in arrived:
    subject = body.split(b"Subject: ", 1)[1].split(b"\r\n", 1)[0].decode()
    by_subject.setdefault(subject, []).append((envelope, body))
tap.ok(len(arrived) == 6, "6 transactions arrived at the MX host's sink", len(arrived))
for name in ("plain", "fallback", "implicit", "large"):
    copies = by_subject.get(name, [])
    tap.ok(len(copies) == 1 and without_received(copies[0][1]) == sent[name],
           f"{name}: delivered once, byte-exact after our Received: header")
multi = by_subject.get("multi", [])
rcpts = sorted(r for envelope, _ in multi for r in envelope["rcpt"])
tap.ok(rcpts == ["d1@good.test", "d2@GOOD.test", "e@fallback.test"],
       "three recipients, two destinations: each recipient delivered once", rcpts)
tap.ok(all(envelope.get("mail-from") == "<sender@sender.test>" for envelope, _ in arrived),
       "the reverse path is kept")
tap.ok(any(b"by mx.test.example (ringmta) with ESMTP" in body for _, body in arrived),
       "our Received: header is on the relayed message")

# --- connection reuse: messages trickling in one by one share one idle connection
connections_before = good.stats().get("connections", 0)
accepted_before = good.stats().get("accepted", 0)
for i in range(10):
    send("sender@sender.test", [f"reuse{i}@good.test"], message(f"reuse{i}"))
    wait_until(lambda: good.stats().get("accepted", 0) >= accepted_before + i + 1, 10, 0.05)
opened = good.stats().get("connections", 0) - connections_before
tap.ok(good.stats().get("accepted", 0) == accepted_before + 10 and opened <= 2,
       f"10 messages one after another reuse the idle connection ({opened} opened)")

# --- temporary failures (50% of RCPTs refused 451) are retried until delivered
for i in range(10):
    send("sender@sender.test", [f"t{i}@temp.test"], message(f"temp{i}"))
delivered = wait_until(lambda: flaky.stats().get("accepted", 0) >= 10, 60)
tap.ok(delivered, "10 messages to a flaky MX all delivered after retries", flaky.stats())
tap.ok(flaky.stats().get("rcpt_tempfail", 0) > 0 and daemon.events("deferred"),
       "and some attempts were deferred on the way")

# --- permanent failures → DSN to the sender's domain; none for NOTIFY=NEVER or from <>
send("sender@sender.test", ["nobody@perm.test"], message("perm"))
send("sender@sender.test", ["x@nullmx.test"], message("nullmx"))
send("sender@sender.test", ["y@nosuch.good.test"], message("nxdomain"))
send("sender@sender.test", ["never@perm.test"], message("never"), rcpt_options=["NOTIFY=NEVER"])
send("", ["fromnull@perm.test"], message("fromnull"))
dsns = wait_until(lambda: len(sender_domain.messages()) >= 3 and sender_domain.messages(), 30)
dsns = sender_domain.messages()
tap.ok(len(dsns) == 3, "three DSNs arrive at the sender's domain (not for NEVER, not for <>)",
       [without_received(b)[:300] for _, b in dsns])
reports = {}
for envelope, body in dsns:
    fields = dsn_fields(body)
    tap.ok(envelope.get("mail-from") == "<>" and envelope["rcpt"] == ["sender@sender.test"],
           "DSN from <> to the original sender", envelope)
    tap.ok(b"multipart/report" in body and b"report-type=delivery-status" in body,
           "DSN is a multipart/report delivery-status (RFC 3464)")
    for recipient, status in zip(fields.get("final-recipient", []), fields.get("status", [])):
        reports[recipient.split(";")[-1].strip()] = (status, fields.get("action", [""])[0])
tap.ok(reports.get("nobody@perm.test", ("",))[0] == "5.1.1" and
       reports["nobody@perm.test"][1] == "failed", "rejected recipient: failed 5.1.1", reports)
tap.ok(reports.get("x@nullmx.test", ("",))[0] == "5.1.10", "null MX: 5.1.10 (RFC 7505)", reports)
tap.ok(reports.get("y@nosuch.good.test", ("",))[0] == "5.1.2", "NXDOMAIN: 5.1.2", reports)
tap.ok(refusing.stats().get("rcpt_permfail", 0) >= 3, "the refusing MX saw the RCPTs",
       refusing.stats())
# The DSNs above do not wait for the NEVER and <> bounces: their records may come a moment later.
wait_until(lambda: len(daemon.events("bounced")) >= 5, 20)
bounced = daemon.events("bounced")
tap.ok(len(bounced) == 5, "every permanent failure is logged as bounced", len(bounced))

# --- MX hosts that are ourselves (RFC 5321 §5.1): less preferred ones are skipped; when the
# best one is us, the mail would loop: bounced 5.4.6, as Postfix does.
before = len(sender_domain.messages())
send("sender@sender.test", ["l1@loop.test"], message("loop"))
send("sender@sender.test", ["l2@loopname.test"], message("loopname"))
looped = wait_until(lambda: len(sender_domain.messages()) >= before + 2, 30)
loop_reports = {}
for _, body in sender_domain.messages()[before:]:
    fields = dsn_fields(body)
    for recipient, status in zip(fields.get("final-recipient", []), fields.get("status", [])):
        loop_reports[recipient.split(";")[-1].strip()] = status
tap.ok(looped and loop_reports.get("l1@loop.test") == "5.4.6",
       "MX at our own address and port: bounced 5.4.6, not relayed to ourselves", loop_reports)
tap.ok(loop_reports.get("l2@loopname.test") == "5.4.6", "MX named as our host: bounced 5.4.6",
       loop_reports)
tap.ok(any("loops back to myself" in e.get("reply", "") for e in daemon.events("bounced")),
       "the bounce says the mail loops back to us")
backup_body = message("backup")
send("sender@sender.test", ["m@backup.test"], backup_body)
tap.ok(wait_until(lambda: any(b"Subject: backup" in body for _, body in good.messages()), 30),
       "an MX list with us as the backup delivers to the better host")

# --- SERVFAIL: deferred, never bounced
send("sender@sender.test", ["z@broken.test"], message("servfail"))
deferred = wait_until(lambda: [e for e in daemon.events("deferred") if e["to"] == "z@broken.test"],
                      20)
tap.ok(deferred, "SERVFAIL defers the recipient", daemon.events("deferred")[-3:])
tap.ok(not [e for e in daemon.events("bounced") if e["to"] == "z@broken.test"],
       "and does not bounce it")
metrics = daemon.metrics()
tap.ok(metrics.get('ringmta_outbound_bodies_total{path="bdat"}', 0) >= 10 and
       metrics.get('ringmta_outbound_bodies_total{path="splice"}', 0) >= 1 and
       metrics.get("ringmta_outbound_connect_failures_total", 0) >= 1,
       "metrics show bodies sent with BDAT, the large one spliced, and the MX fallback's "
       "refused connect",
       {k: v for k, v in metrics.items() if "outbound" in k})
tap.ok(metrics.get("ringmta_recipients_delivered_total", 0) >= 16, "metrics count deliveries",
       metrics.get("ringmta_recipients_delivered_total"))
tap.ok(daemon.stop() == 0, "clean exit with mail still queued")
queued = subprocess.run([ringmta, "spool", "ls", "--spool", daemon.spool], capture_output=True,
                        text=True).stdout
tap.ok("z@broken.test (deferred, 1 attempts" in queued, "the deferred message stays in the spool", queued)

def dsn_for_one_message(args, recipient, subject):
    """A daemon started with `args` takes one message to the unreachable `recipient`: the
    daemon, still running, and the next DSN the sender's domain gets (b"" if none in 30 s)."""
    before = len(sender_domain.messages())
    started = Daemon(ringmta, args=["--resolver", dns.address, "--delivery-port", str(port),
                                     "--retry-schedule", "1s"] + args).start()
    with smtplib.SMTP("127.0.0.1", started.port, timeout=30) as client:
        client.sendmail("sender@sender.test", [recipient], message(subject))
    arrived = wait_until(lambda: len(sender_domain.messages()) > before, 30)
    return started, sender_domain.messages()[-1][1] if arrived else b""


# --- queue lifetime expiry: a DSN with 4.4.7 after the lifetime
expiring, last = dsn_for_one_message(["--queue-lifetime", "3s"], "late@broken.test", "expiry")
tap.ok(dsn_fields(last).get("status") == ["4.4.7"] and dsn_fields(last).get("action") == ["failed"],
       "expired message: DSN failed 4.4.7 to the sender", last[-1500:])
tap.ok(expiring.stop() == 0, "clean exit")

# --- delay warning (--delay-warning): a "delayed" DSN once (RFC 3464), the message still queued
warning, last = dsn_for_one_message(["--delay-warning", "2s"], "slow@broken.test", "delay warning")
fields = dsn_fields(last)
tap.ok(fields.get("action") == ["delayed"] and fields.get("status", [""])[0][:2] == "4.",
       "--delay-warning 2s: a delayed DSN (RFC 3464) to the sender", last[-1500:])
queued = warning.admin("GET", "/queue", timeout=10)[1]
tap.ok(b"broken.test" in (queued if isinstance(queued, bytes) else queued.encode()),
       "the message stays queued after its delay warning", queued)
tap.ok(warning.stop() == 0, "clean exit")

# --- operator actions through the admin API: list, suspend, flush, bounce

def admin(daemon, method, path):
    """Through the control socket (SPOOL/admin.sock), as ringmta-ctl."""
    code, body = daemon.admin(method, path, timeout=10)
    return code, json.loads(body)


before = len(sender_domain.messages())
operated = Daemon(ringmta, args=["--resolver", dns.address, "--delivery-port", str(port),
                                 "--retry-schedule", "1h"]).start()
with smtplib.SMTP("127.0.0.1", operated.port, timeout=30) as client:
    client.sendmail("sender@sender.test", ["held@broken.test"], message("operator"))
listed = wait_until(lambda: [d for d in admin(operated, "GET", "/queue")[1]
                             if d["destination"] == "broken.test" and d["scheduled"] >= 1], 20)
tap.ok(listed, "GET /queue lists the deferred destination with its job",
       admin(operated, "GET", "/queue"))
code, body = admin(operated, "POST", "/queue/broken.test/suspend")
tap.ok(code == 200 and body["action"] == "suspend", "POST suspend", body)
tap.ok([d for d in admin(operated, "GET", "/queue")[1]
        if d["destination"] == "broken.test" and d["suspended"]], "the destination shows suspended")
code, body = admin(operated, "POST", "/queue/broken.test/resume")
code, body = admin(operated, "POST", "/queue/broken.test/flush")
tap.ok(code == 200 and body["jobs"] == 1, "POST flush makes the scheduled job ready now", body)
code, body = admin(operated, "POST", "/queue/Broken.TEST/bounce")
tap.ok(code == 200 and body["destination"] == "broken.test", "POST bounce (case-insensitive)",
       body)
bounced_dsn = wait_until(lambda: len(sender_domain.messages()) > before, 20)
last = sender_domain.messages()[-1][1] if bounced_dsn else b""
tap.ok(bounced_dsn and b"held@broken.test" in last and b"operator" in last,
       "the bounced message's DSN reaches the sender", last[-800:])
# Issue 17: no server sent "bounced by the operator": it is not an SMTP diagnostic.
tap.ok(b"Diagnostic-Code: X-Ringmta; " in last and b"Diagnostic-Code: smtp;" not in last,
       "the operator bounce's Diagnostic-Code is X-Ringmta, not smtp", last[-800:])
code, body = admin(operated, "POST", "/queue/gmial.com/suspend")
tap.ok(code == 404 and not [d for d in admin(operated, "GET", "/queue")[1]
                            if d["destination"] == "gmial.com"],
       "a typo (POST /queue/gmial.com/suspend) is 404 and creates no destination", body)
code, body = admin(operated, "POST", "/queue/broken.test/explode")
tap.ok(code == 400 and "unknown action" in body["error"], "an unknown action is refused", body)
tap.ok(operated.stop() == 0, "clean exit")

for peer in (good, sender_domain, flaky, refusing, dns):
    peer.stop()
tap.done()
