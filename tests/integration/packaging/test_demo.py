"""The README's first command ends in tools/demo: it must work on any machine and be safe there.
It runs against this build (DEMO_NO_BUILD=1), and must: deliver every message to the local
sink, listen on loopback only, write only under DEMO_DIR, stop ringmta cleanly, exit 0.
usage: test_demo.py SOURCE_ROOT BUILD_DIR
"""
import os
import re
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "daemon"))
from harness import Tap  # noqa: E402

source, build = os.path.abspath(sys.argv[1]), os.path.abspath(sys.argv[2])
tap = Tap()
work = tempfile.mkdtemp(prefix="ringmta-demo-")
demo_dir = os.path.join(work, "demo")
env = dict(os.environ, BUILD_DIR=build, DEMO_DIR=demo_dir, DEMO_NO_BUILD="1",
           DEMO_MESSAGES="12")
result = subprocess.run([os.path.join(source, "tools/demo")], env=env, capture_output=True,
                        text=True, timeout=240)
out = result.stdout + result.stderr
tap.ok(result.returncode == 0, "tools/demo exits 0", out[-3000:])
tap.ok("delivered 12 of 12 messages" in out, "every message reached the sink", out[-1500:])
tap.ok(len(os.listdir(os.path.join(demo_dir, "sink"))) == 12, "and the sink saved them")
listen = re.search(r"ringmta listens on (\S+) \(admin (\S+)\), relays to the sink at (\S+)", out)
tap.ok(listen and all(a.startswith("127.0.0.1:") for a in listen.groups()),
       "ringmta, its admin endpoint and the sink listen on loopback only", out[:500])
tap.ok(all(int(a.rsplit(":", 1)[1]) >= 1024 for a in (listen.groups() if listen else [])),
       "on unprivileged ports")
tap.ok("0 messages queued" in out, "the queue is empty afterwards")
tap.ok(re.search(r"ringmta stopped \(clean, exit 0\)", out), "ringmta stopped cleanly")
log = open(os.path.join(demo_dir, "ringmta.log")).read()
tap.ok('"event":"delivered"' in log and '"event":"stopped"' in log,
       "its log shows deliveries and the stop")
leftover = subprocess.run(["pgrep", "-f", demo_dir], capture_output=True, text=True).stdout
tap.ok(leftover.strip() == "", "no process of the demo is left running", leftover)
shutil.rmtree(work, ignore_errors=True)
tap.done()
