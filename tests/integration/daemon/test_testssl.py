#!/usr/bin/env python3
"""testssl.sh (Debian's testssl.sh 3.0) --starttls smtp against ringmta: no SSLv2/SSLv3/TLS 1.0/
TLS 1.1, no weak cipher category, no vulnerability flagged. Its findings go into the test log.

Runtime is bounded: protocols (-p), cipher categories (-s) and the vulnerability checks that
take seconds (-H heartbleed, -I CCS, -R renegotiation, -C CRIME, -O POODLE, -Z fallback SCSV,
-W SWEET32, -F FREAK, -J LOGJAM, -A BEAST, -4 RC4). Left out as slow on a busy 2-core machine
(minutes each): ROBOT (-BB: no RSA key transport is offered anyway, see -s), DROWN (-D: no
SSLv2 anywhere), LUCKY13 (-L: no CBC cipher is offered, see -s), BREACH (HTTP only).
usage: test_testssl.py RINGMTA"""
import json
import os
import shutil
import subprocess
import sys

from harness import Daemon, Tap
import tls_pki

tap = Tap()
binary = sys.argv[1]
testssl = shutil.which("testssl") or shutil.which("testssl.sh")
if not testssl:
    tap.skip_all("testssl.sh is not installed (Debian package testssl.sh)")
pki = tls_pki.make()
daemon = Daemon(binary, shards=1, args=tls_pki.daemon_args(pki)).start()
report = os.path.join(pki["dir"], "testssl.json")
out = subprocess.run([testssl, "--quiet", "--color", "0", "--warnings", "off", "--starttls",
                      "smtp", "-p", "-s", "-H", "-I", "-R", "-C", "-O", "-Z", "-W", "-F", "-J",
                      "-A", "-4", "--jsonfile-pretty", report, f"127.0.0.1:{daemon.port}"],
                     capture_output=True, text=True, timeout=900)
for line in out.stdout.splitlines():  # the summary, in the test log
    if line.strip():
        print(f"# {line}", flush=True)
findings = json.load(open(report))["scanResult"][0]
by_id = {f["id"]: f for section in ("protocols", "ciphers", "vulnerabilities")
         for f in findings.get(section, [])}
for old in ("SSLv2", "SSLv3", "TLS1", "TLS1_1"):
    tap.ok(by_id.get(old, {}).get("finding", "").startswith("not offered"),
           f"{old} is not offered", by_id.get(old))
tap.ok("offered" in by_id.get("TLS1_3", {}).get("finding", ""), "TLS 1.3 is offered")
for weak in ("cipherlist_NULL", "cipherlist_aNULL", "cipherlist_EXPORT", "cipherlist_LOW",
             "cipherlist_3DES_IDEA", "cipherlist_AVERAGE"):  # AVERAGE: obsolete CBC
    tap.ok(by_id.get(weak, {}).get("finding", "").startswith("not offered"),
           f"weak cipher category {weak} is not offered", by_id.get(weak))
flagged = [f for f in by_id.values() if f["severity"] in ("LOW", "MEDIUM", "HIGH", "CRITICAL")]
tap.ok(not flagged, "no finding of severity LOW or worse", flagged)
vulnerabilities = findings.get("vulnerabilities", [])
tap.ok(len(vulnerabilities) >= 10 and all(v["severity"] in ("OK", "INFO")
                                          for v in vulnerabilities),
       f"{len(vulnerabilities)} vulnerability checks, none flagged", vulnerabilities)
daemon.stop()
tap.done()
