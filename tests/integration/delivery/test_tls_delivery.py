#!/usr/bin/env python3
"""Outbound TLS (RFC 3207) through real peers: ringmta finds MX hosts in NSD zones and delivers
to a private Postfix whose smtpd has a certificate for mx.tls.test from a CA made here with the
openssl command. Postfix listens three times: with STARTTLS (127.0.0.1), without it
(127.0.0.2), and with a TLS setup no client of ours can agree with (127.0.0.3: TLS 1.2 with a
CBC-only cipher list, so every handshake fails).

  verify, MX named on the certificate  -> delivered over TLS (Postfix's Received: says "using
                                          TLSv1.3", its log "TLS connection established");
                                          a small body as BDAT, a large one read and encrypted
  verify, another MX name              -> deferred 4.7.5 "hostname mismatch", nothing sent
  required, no STARTTLS                -> deferred 4.7.4, never plaintext
  opportunistic, handshake fails       -> delivered in plaintext on the retry; the next
                                          connection goes plaintext at once (remembered)
  smarthost (--relayhost) with verify  -> the relay host's name is what is verified
  a reload makes a domain `required`   -> delivered in plaintext before it, deferred 4.7.4
                                          after it (new and idle connections alike)
  a reload turns TLS on with verify    -> started with policy none (no TLS client context at
  and a CA file                           all): delivered verified with the reloaded CA
usage: test_tls_delivery.py RINGMTA DNS_SERVER_SCRIPT"""
import os
import re
import signal
import shutil
import smtplib
import subprocess
import sys
import tempfile
import time

from harness import Daemon, Tap, free_port
from peers import DnsServer, make_test_ca, wait_until

tap = Tap()
ringmta, dns_script = sys.argv[1:3]
if not shutil.which("postfix") or not shutil.which("nsd") or not shutil.which("openssl"):
    tap.skip_all("postfix, nsd or openssl is not installed")

work = tempfile.mkdtemp(prefix="ringmta-tls-delivery-")
os.chmod(work, 0o755)  # Postfix's own processes run as the postfix user
pki = make_test_ca(os.path.join(work, "pki"), ["mx.tls.test"])
port = free_port()
mailboxes = os.path.join(work, "mailboxes")
os.makedirs(mailboxes)
shutil.chown(mailboxes, "nobody", "nogroup")
users = ["good", "big", "wrong", "plain", "broken", "broken2", "relay", "relaywrong", "late",
         "strict"]
domains = {"good": "good", "big": "good", "wrong": "wrong", "plain": "plain",
           "broken": "broken", "broken2": "broken2", "relay": "relay",
           "relaywrong": "relaywrong", "late": "late", "strict": "strict"}
mailbox_map = ", ".join(f"{u}@{domains[u]}.tls.test={u}" for u in users)
extra_main_cf = os.path.join(work, "main.cf")
with open(extra_main_cf, "w") as f:
    f.write(f"""myhostname = mx.tls.test
relayhost =
inet_interfaces = all
virtual_mailbox_domains = {", ".join(sorted({d + ".tls.test" for d in domains.values()}))}
virtual_mailbox_base = {mailboxes}
virtual_mailbox_maps = inline:{{ {mailbox_map} }}
virtual_uid_maps = static:65534
virtual_gid_maps = static:65534
virtual_minimum_uid = 100
smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination
smtpd_recipient_restrictions =
smtpd_tls_security_level = may
smtpd_tls_chain_files = {pki["key"]}, {pki["cert"]}
smtpd_tls_received_header = yes
smtpd_tls_loglevel = 1
""")
extra_master_cf = os.path.join(work, "master.cf")
with open(extra_master_cf, "w") as f:
    f.write(f"127.0.0.2:{port} inet n - n - - smtpd -o syslog_name=postfix-plain "
            "-o smtpd_tls_security_level=none\n"
            f"127.0.0.3:{port} inet n - n - - smtpd -o syslog_name=postfix-broken "
            "-o smtpd_tls_protocols=!TLSv1.3 -o smtpd_tls_ciphers=high "
            "-o tls_high_cipherlist=ECDHE-ECDSA-AES256-SHA384\n")
instance = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tools",
                        "postfix_instance.sh")
dns = DnsServer(dns_script, {"tls.test": [
    "good MX 10 mx", "wrong MX 10 other", "plain MX 10 plainmx", "late MX 10 plainmx",
    "broken MX 10 brokenmx", "strict MX 10 brokenmx",
    "broken2 MX 10 brokenmx3", "mx A 127.0.0.1", "other A 127.0.0.1", "plainmx A 127.0.0.2",
    "brokenmx A 127.0.0.3", "brokenmx3 A 127.0.0.3"]})
# broken2's MX is another name for the same server: another MX site (a site would carry its
# mail on broken's idle plaintext connection), so a new connection must remember the address.
maillog = os.path.join(work, "maillog")


def mailbox(user):
    path = os.path.join(mailboxes, user)
    return open(path, "rb").read() if os.path.exists(path) else b""


def send(daemon, recipient, body):
    with smtplib.SMTP("127.0.0.1", daemon.port, timeout=30) as client:
        client.sendmail("alice@client.test", [recipient], body)


def message(name, lines=20):
    text = "".join(f".line {i} of {name}\r\n" if i % 5 == 0 else f"line {i} of {name}\r\n"
                   for i in range(lines))
    return f"Subject: {name}\r\nMessage-ID: <{name}@client.test>\r\n\r\n{text}".encode()


def event_for(daemon, name, recipient):
    return [e for e in daemon.events(name) if e.get("to") == recipient]


def log_text():
    return open(maillog).read() if os.path.exists(maillog) else ""


started = subprocess.run([instance, "start", work, str(port), "9", extra_main_cf,
                          extra_master_cf], capture_output=True, text=True)
try:
    listening = wait_until(lambda: all(
        subprocess.run(["ss", "-Hltn", f"src {a}:{port}"], capture_output=True,
                       text=True).stdout.strip() for a in ("127.0.0.1", "127.0.0.2", "127.0.0.3")),
        15)
    if not tap.ok(started.returncode == 0 and listening,
                  "a private Postfix listens with STARTTLS, without it, and with a broken TLS",
                  started.stderr + started.stdout + log_text()[-2000:]):
        tap.done()

    # --- MX delivery, verify by default; per-domain required and opportunistic
    daemon = Daemon(ringmta, shards=1, args=[
        "--resolver", dns.address, "--delivery-port", str(port), "--retry-schedule", "1h",
        "--tls-policy", "verify", "--tls-ca", pki["ca"],
        "--tls-policy-for", "plain.tls.test=required",
        "--tls-policy-for", ".tls.test=verify",
        "--tls-policy-for", "broken.tls.test=opportunistic",
        "--tls-policy-for", "strict.tls.test=required",
        "--tls-policy-for", "broken2.tls.test=opportunistic"]).start()
    small = message("good")
    large = message("big", 6000)  # > 64 KiB: read from the spool and encrypted, not spliced
    send(daemon, "good@good.tls.test", small)
    send(daemon, "big@good.tls.test", large)
    arrived = wait_until(lambda: b"line 19 of good" in mailbox("good") and
                         b"line 5999 of big" in mailbox("big"), 30)
    tap.ok(arrived, "verify: both messages reached the MX named on the certificate",
           log_text()[-3000:])
    good_box = mailbox("good")
    tap.ok(re.search(rb"\(using TLSv1\.3 with cipher TLS_\w+ .*?\)\s+by mx\.tls\.test "
                     rb"\(Postfix\) with ESMTPS id", good_box, re.DOTALL) is not None,
           "Postfix's Received: header says the message came over TLS 1.3", good_box[:900])
    for user, sent in (("good", small), ("big", large)):
        box = mailbox(user).replace(b"\n", b"\r\n")  # the mailbox file uses LF
        tap.ok(sent.split(b"\r\n\r\n", 1)[1] in box, f"{user}: the body arrived byte-exact")
    tap.ok("TLS connection established from" in log_text(),
           "Postfix logged the TLS connection", log_text()[-1500:])
    delivered = {e["to"]: e for e in daemon.events("delivered")}
    good = delivered.get("good@good.tls.test", {})
    tap.ok(good.get("tls") == "TLSv1.3" and good.get("tls_verified") is True and
           good.get("tls_cipher", "").startswith("TLS_") and good.get("tls_bits") == 256,
           "the delivery record carries the TLS version, cipher and 'verified'", good)
    tap.ok(re.search(r"^250 2\.0\.0 Ok: \d+ bytes queued as \w+$", good.get("reply", "")),
           "the small message went as BDAT over TLS", good)

    # Another MX name than the certificate's: deferred with a clear reason, nothing sent.
    send(daemon, "wrong@wrong.tls.test", message("wrong"))
    wrong = wait_until(lambda: event_for(daemon, "deferred", "wrong@wrong.tls.test"), 30)
    reply = wrong[0]["reply"] if wrong else ""
    tap.ok(reply.startswith("451 4.7.5 ") and "certificate of other.tls.test not verified: "
           "hostname mismatch" in reply, "verify: a certificate for another name is deferred "
           "4.7.5 and says why", wrong)
    tap.ok(mailbox("wrong") == b"", "nothing was delivered to the wrong name")

    # required, but the server offers no STARTTLS: deferred, never plaintext.
    send(daemon, "plain@plain.tls.test", message("plain"))
    plain = wait_until(lambda: event_for(daemon, "deferred", "plain@plain.tls.test"), 30)
    reply = plain[0]["reply"] if plain else ""
    tap.ok(reply.startswith("451 4.7.4 ") and "STARTTLS was not offered" in reply,
           "required without STARTTLS: deferred 4.7.4", plain)
    plain_log = [line for line in log_text().splitlines() if "postfix-plain/smtpd" in line]
    tap.ok(any("disconnect from" in line and "ehlo=1" in line for line in plain_log) and
           not any("mail=" in line for line in plain_log) and mailbox("plain") == b"",
           "the server without STARTTLS saw EHLO and never a MAIL", "\n".join(plain_log))

    # opportunistic, the handshake fails: delivered in plaintext on the retry, then remembered.
    send(daemon, "broken@broken.tls.test", message("broken"))
    retried = wait_until(lambda: event_for(daemon, "delivered", "broken@broken.tls.test"), 30)
    record = retried[0] if retried else {}
    tap.ok(record.get("tls") == "none" and "TLS handshake failed" in record.get("tls_note", "")
           and b"line 19 of broken" in mailbox("broken"),
           "opportunistic: a failed handshake is retried in plaintext and delivered", record)
    # strict.tls.test has broken's MX host (one MX site), but demands TLS: the idle plaintext
    # connection left by broken's retry must not carry its mail (a site's connections carry any
    # member's jobs: a domain with a policy of its own is not rolled up into the site).
    send(daemon, "strict@strict.tls.test", message("strict"))
    strict = wait_until(lambda: event_for(daemon, "deferred", "strict@strict.tls.test"), 30)
    reply = strict[0]["reply"] if strict else ""
    tap.ok(reply.startswith("451 4.7.") and "TLS handshake failed" in reply and
           mailbox("strict") == b"" and
           not event_for(daemon, "delivered", "strict@strict.tls.test"),
           "required, sharing an MX with an opportunistic domain: deferred, never plaintext",
           strict or event_for(daemon, "delivered", "strict@strict.tls.test"))
    broken_log = [line for line in log_text().splitlines() if "postfix-broken/smtpd" in line]
    tap.ok(any("starttls=1/1" not in line and "starttls=" in line for line in broken_log
               if "disconnect from" in line),
           "Postfix saw the STARTTLS whose handshake failed", "\n".join(broken_log[-10:]))
    send(daemon, "broken2@broken2.tls.test", message("broken2"))
    again = wait_until(lambda: event_for(daemon, "delivered", "broken2@broken2.tls.test"), 30)
    metrics = daemon.metrics()
    tap.ok(again and again[0].get("tls") == "none" and
           metrics.get('ringmta_outbound_tls_plaintext_total{why="retry"}') == 1 and
           metrics.get('ringmta_outbound_tls_plaintext_total{why="remembered"}') == 1,
           "the next connection to that server goes plaintext at once (remembered)",
           {k: v for k, v in metrics.items() if "tls" in k})
    failures = sum(v for k, v in metrics.items()
                   if k.startswith("ringmta_outbound_tls_failures_total"))
    tap.ok(metrics.get("ringmta_outbound_tls_handshakes_total", 0) >= 1 and
           metrics.get('ringmta_outbound_tls_failures_total{reason="certificate"}') == 1 and
           failures == 3 and metrics.get("ringmta_outbound_tls_unavailable_total") == 1,
           "/metrics counts handshakes and failures by reason",
           {k: v for k, v in metrics.items() if "tls" in k})
    tap.ok(daemon.stop() == 0, "clean exit")

    # --- a smarthost with verify: the relay host's name is what the certificate must carry
    relay = Daemon(ringmta, shards=1, args=[
        "--resolver", dns.address, "--relayhost", f"mx.tls.test:{port}",
        "--route", f"relaywrong.tls.test=other.tls.test:{port}", "--retry-schedule", "1h",
        "--tls-policy", "verify", "--tls-ca", pki["ca"]]).start()
    send(relay, "relay@relay.tls.test", message("relay"))
    send(relay, "relaywrong@relaywrong.tls.test", message("relaywrong"))
    through = wait_until(lambda: event_for(relay, "delivered", "relay@relay.tls.test"), 30)
    refused = wait_until(lambda: event_for(relay, "deferred", "relaywrong@relaywrong.tls.test"),
                         30)
    tap.ok(through and through[0].get("tls_verified") is True and
           b"line 19 of relay" in mailbox("relay"),
           "smarthost: delivered over TLS verified against the relay host name", through)
    tap.ok(refused and "hostname mismatch" in refused[0]["reply"] and
           mailbox("relaywrong") == b"",
           "a relay host whose name the certificate lacks is deferred", refused)
    tap.ok(relay.stop() == 0, "clean exit")

    # --- a reload makes a domain `required`: mail handed out after it never goes in plaintext,
    # whether on a new connection or on one left idle from before (ringmta-sim found both:
    # new connections read the policy of the start's configuration, and an idle connection
    # kept the policy it was opened with).
    config = os.path.join(work, "reload.toml")

    def write_policy(entries, default="none", ca_file=""):
        with open(config + ".new", "w") as f:
            f.write(f'[relay.tls]\npolicy = "{default}"\nca_file = "{ca_file}"\n'
                    "[relay.tls.policy_for]\n" +
                    "".join(f'"{domain}" = "{policy}"\n' for domain, policy in entries))
        os.replace(config + ".new", config)

    def reload(daemon):
        count = len(daemon.events("reloaded"))
        daemon.process.send_signal(signal.SIGHUP)
        return wait_until(lambda: len(daemon.events("reloaded")) > count, 20)

    write_policy([])  # TLS off everywhere: the daemon builds no client context at all
    late = Daemon(ringmta, shards=1, args=[
        "--config", config, "--resolver", dns.address, "--delivery-port", str(port),
        "--retry-schedule", "1h"]).start()
    send(late, "late@late.tls.test", message("late1"))
    before = wait_until(lambda: event_for(late, "delivered", "late@late.tls.test"), 30)
    tap.ok(before and before[0].get("tls") == "none" and b"line 19 of late1" in mailbox("late"),
           "policy none: delivered in plaintext", before)
    write_policy([("late.tls.test", "required")])
    tap.ok(reload(late), "SIGHUP reloads policy_for", late.events("reload_rejected"))
    send(late, "late@late.tls.test", message("late2"))
    after = wait_until(lambda: event_for(late, "deferred", "late@late.tls.test"), 30)
    reply = after[0]["reply"] if after else ""
    tap.ok(reply.startswith("451 4.7.4 ") and "STARTTLS was not offered" in reply and
           b"late2" not in mailbox("late"),
           "after the reload: deferred 4.7.4, never sent in plaintext", after or mailbox("late"))
    tap.ok(len(event_for(late, "delivered", "late@late.tls.test")) == 1,
           "only the message from before the reload was delivered",
           event_for(late, "delivered", "late@late.tls.test"))
    # The reload's CA store reaches the outbound (it kept the start's context, here none:
    # "TLS is not configured (no client context)").
    write_policy([("late.tls.test", "required")], default="verify", ca_file=pki["ca"])
    tap.ok(reload(late), "SIGHUP reloads policy = verify with ca_file",
           late.events("reload_rejected"))
    send(late, "good@good.tls.test", message("good2"))
    verified = wait_until(lambda: event_for(late, "delivered", "good@good.tls.test"), 30)
    tap.ok(verified and verified[0].get("tls_verified") is True and
           b"line 19 of good2" in mailbox("good"),
           "after the reload: delivered over TLS verified with the reloaded CA",
           verified or event_for(late, "deferred", "good@good.tls.test"))
    tap.ok(late.stop() == 0, "clean exit")
finally:
    subprocess.run([instance, "stop", work], capture_output=True)
    dns.stop()
    time.sleep(0.5)
    shutil.rmtree(work, ignore_errors=True)
tap.done()
