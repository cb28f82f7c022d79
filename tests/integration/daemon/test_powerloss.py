#!/usr/bin/env python3
"""Power loss: the spool lives on lossyfs (tests/fusefs), which forgets every write not made
durable by fsync/fdatasync when the "power" fails. Under load, the daemon is killed and the
filesystem crashed at the same moment, repeatedly: no acknowledged message may be lost.
Then the same run with --unsafe-no-fsync must lose acknowledged mail: proof that the test
can see a missing fdatasync, which kill -9 alone cannot.
usage: test_powerloss.py RINGMTA_BINARY LOSSYFS_BINARY MOUNT_HELPER [ROUNDS]"""
import atexit
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time

from harness import Daemon, Load, Tap, verify_spool

tap = Tap()
binary, lossyfs, mount_helper = sys.argv[1:4]
rounds = int(sys.argv[4]) if len(sys.argv) > 4 else 8
if not os.path.exists("/dev/fuse") or not shutil.which("fusermount3"):
    tap.skip_all("FUSE is not available here")
work_dir = tempfile.mkdtemp(prefix="ringmta-powerloss-")  # beside the lossy mount, not in it
atexit.register(shutil.rmtree, work_dir, True)


def mount():
    point = tempfile.mkdtemp(prefix="ringmta-lossyfs-")
    result = subprocess.run([mount_helper, "--binary", lossyfs, point, "-o",
                             "lossy_dirs=strict"], capture_output=True, text=True, timeout=60)
    if result.returncode != 0:
        raise RuntimeError(f"lossyfs did not mount: {result.stderr}")
    return point


def power_failure(daemon, point):
    daemon.process.send_signal(signal.SIGKILL)
    with open(os.path.join(point, ".lossyfs-control"), "w") as control:
        control.write("crash")  # returns once every non-durable write is gone
    daemon.process.wait(10)


def run_rounds(point, extra_args, seed):
    rng = random.Random(seed)
    run = f"power{seed}"
    spool = os.path.join(point, "spool")
    # The control socket cannot live on the FUSE file system that drops writes: beside it.
    extra_args = extra_args + ["--admin-socket", os.path.join(work_dir, f"admin{seed}.sock")]
    acked, next_number, restarts = {}, 0, 0
    for _ in range(rounds):
        daemon = Daemon(binary, spool=spool, args=extra_args).start(timeout=60)
        restarts += 1
        load = Load(daemon.port, run, threads=6, first=next_number).start()
        time.sleep(rng.uniform(0.5, 1.5))
        power_failure(daemon, point)
        load.stop()
        acked.update(load.acked)
        next_number = load.next_number()
    final = Daemon(binary, spool=spool, args=extra_args).start(timeout=60)
    final.stop()
    return (restarts, acked) + verify_spool(binary, spool, run, acked)


point = mount()
try:
    restarts, acked, missing, corrupt, unacked = run_rounds(point, [], 7)
    print(f"# durable run: {len(acked)} acknowledged, {len(unacked)} durable without a 250 seen")
    tap.ok(restarts == rounds, f"{rounds} power failures, the daemon recovered after each")
    tap.ok(len(acked) > 50, f"load reached the daemon ({len(acked)} acknowledged)")
    tap.ok(not missing, "no acknowledged message lost across power failures",
           f"missing: {missing[:20]}")
    tap.ok(not corrupt, "no queued message is partial or corrupt", f"corrupt: {corrupt[:20]}")
finally:
    subprocess.run(["fusermount3", "-u", point], timeout=60)

point = mount()
try:
    _, acked, missing, corrupt, _ = run_rounds(point, ["--unsafe-no-fsync"], 8)
    print(f"# --unsafe-no-fsync run: {len(acked)} acknowledged, {len(missing)} of them lost")
    tap.ok(missing, "with --unsafe-no-fsync the same test loses acknowledged mail (it can fail)")
    tap.ok(not corrupt, "even then, nothing partial is ever queued", f"corrupt: {corrupt[:20]}")
finally:
    subprocess.run(["fusermount3", "-u", point], timeout=60)
tap.done()
