#!/usr/bin/env python3
"""Every setting with boundary and garbage values, through the real binary (issue 9, bug 5:
--retry-schedule 0 and --queue-lifetime 0 hit an assertion, exit 134).

The settings table comes from `ringmta check-config --json`, so a setting added later is
walked too. Each value is given as a flag (check-config) and as a TOML key in a file: it is
either accepted, or refused with exit 2 and a message naming the flag, or the file, line and
key. Every value check-config accepts is then given to the daemon itself, which must start
and stop cleanly, or exit 2 naming the setting: never a signal, never another status.
usage: test_config_walk.py RINGMTA"""
import atexit
import concurrent.futures
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

from harness import Tap

tap = Tap()
binary = os.path.abspath(sys.argv[1])
work = tempfile.mkdtemp(prefix="ringmta-walk-")
atexit.register(shutil.rmtree, work, True)
probes = ["", "0", "1", "-1", "65535", "65536", "4294967295", "4294967296",
          "18446744073709551616", "0.5", "1e9", "nan", "garbage", "\x01", "[::1]:0",
          "1.2.3.4:99999", "true", "99999d"]
table = json.loads(subprocess.run([binary, "check-config", "--json"], capture_output=True,
                                  text=True, timeout=30, check=True).stdout)
tap.ok(len(table) > 30, f"check-config --json lists the settings ({len(table)})")


def check(args):
    done = subprocess.run([binary, "check-config"] + args, capture_output=True, text=True,
                          timeout=30, cwd=work)
    return done.returncode, done.stderr


def start_daemon(flag_value):
    """Exit status of a daemon given one more flag: 0 when it started and stopped cleanly."""
    spool = tempfile.mkdtemp(dir=work)
    command = [binary, "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0", "--spool",
               spool, "--shards", "1", "--resolver", "127.0.0.1:9", "--shutdown-grace", "0",
               "--allow-root", flag_value]  # tests run as root
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               text=True, cwd=work)
    lines, listening = [], threading.Event()

    def read():
        for line in process.stderr:
            lines.append(line)
            if '"admin_listening"' in line:
                listening.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    deadline = time.monotonic() + 30
    while not listening.wait(0.05) and process.poll() is None and time.monotonic() < deadline:
        pass
    started = listening.is_set()
    if started:
        process.send_signal(signal.SIGTERM)
    try:
        status = process.wait(30)
    except subprocess.TimeoutExpired:
        process.kill()
        status = process.wait(10)
    reader.join(10)
    shutil.rmtree(spool, ignore_errors=True)  # hundreds of starts: each spool is 64 MiB+
    return status, "".join(lines), started


def walk(row):
    """Every probe for one setting: (refusals that did not name it, daemons started cleanly)."""
    key, flag = row["key"], row["flag"]
    section, _, name = key.rpartition(".")  # "" for a top-level key ([[dkim]])
    bad, started_ok = [], 0
    # check-config runs the start-up checks that need no socket; a real start per accepted
    # value costs a second, so each key starts the daemon with its first three (CI time).
    starts_left = 3
    for probe in probes:
        escaped = probe.replace("\\", "\\\\").replace("\x01", "\\u0001")
        path = os.path.join(work, f"walk-{key}-{flag.lstrip('-')}.toml")
        with open(path, "w") as f:
            header = f"[{section}]" if section else ""
            f.write(f'{header}\n\n{name} = "{escaped}"\n')
        status, errors = check(["--config", path])
        if status not in (0, 2) or (status == 2 and f"{path}:3: {key}:" not in errors):
            bad.append((key, "file", repr(probe), status, errors.strip()))
        if probe == "":
            continue  # a flag cannot carry an empty value after '='
        status, errors = check([f"{flag}={probe}"])
        if status not in (0, 2) or (status == 2 and flag not in errors):
            bad.append((key, "flag", repr(probe), status, errors.strip()))
        if status != 0 or starts_left == 0:
            continue
        starts_left -= 1
        status, errors, started = start_daemon(f"{flag}={probe}")
        if started and status == 0:
            started_ok += 1
        elif status != 2 or (key not in errors and flag not in errors):
            bad.append((key, "daemon", repr(probe), status, errors.strip()[-300:]))
    return bad, started_ok


# Settings are independent: four at a time (the processes mostly wait on start-up and exit;
# each daemon has its own spool and port 0, each probe file its own name).
with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
    results = list(pool.map(walk, table))
bad = [entry for walked, _ in results for entry in walked]
started_ok = sum(count for _, count in results)
print(f"# {started_ok} accepted values started a daemon that stopped cleanly")
tap.ok(not bad, "every value: accepted, or exit 2 naming the setting; never a signal",
       "\n".join(map(str, bad[:30])))
tap.ok(started_ok > 20, "the daemon ran with the accepted values")
tap.done()
