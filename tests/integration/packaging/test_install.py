"""`meson install` with DESTDIR: the expected files land (daemon, tools, config, unit,
sysusers.d, tmpfiles.d, man pages), the man pages render with man(1) and groff without a
warning and name every setting of the table (ringmta(8) every flag, ringmta.toml(5) every key),
the unit passes `systemd-analyze verify` and scores OK on `systemd-analyze security`, the
sysusers.d and tmpfiles.d entries create the user and the spool in a scratch root, and the
install hook strips a release build's binaries.
usage: test_install.py BUILD_DIR SOURCE_ROOT
"""
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "daemon"))
from harness import Tap  # noqa: E402

build = os.path.abspath(sys.argv[1])
source = os.path.abspath(sys.argv[2])
tap = Tap()


def run(command, **kwargs):
    return subprocess.run(command, capture_output=True, text=True, timeout=300, **kwargs)


options = {o["name"]: o["value"] for o in
           json.loads(run(["meson", "introspect", "--buildoptions", build]).stdout)}
prefix = options["prefix"]


def under(option, *rest):
    directory = options[option]
    return os.path.join(directory if directory.startswith("/") else
                        os.path.join(prefix, directory), *rest)


dest = tempfile.mkdtemp(prefix="ringmta-destdir-")
installed = run(["meson", "install", "-C", build, "--no-rebuild", "--destdir", dest])
tap.ok(installed.returncode == 0, "DESTDIR meson install succeeds", installed.stdout[-2000:] +
       installed.stderr[-2000:])
files = sorted("/" + os.path.relpath(os.path.join(r, f), dest)
               for r, _, names in os.walk(dest) for f in names)
expected = [
    under("sbindir", "ringmta"),
    under("bindir", "ringmta-blast"),
    under("bindir", "ringmta-ctl"),
    under("bindir", "ringmta-sink"),
    under("sysconfdir", "ringmta", "ringmta.toml"),
    under("sysconfdir", "ringmta", "bounce-classes.toml"),
    os.path.join(prefix, "lib/systemd/system/ringmta.service"),
    os.path.join(prefix, "lib/sysusers.d/ringmta.conf"),
    os.path.join(prefix, "lib/tmpfiles.d/ringmta.conf"),
    under("mandir", "man8", "ringmta.8"),
    under("mandir", "man5", "ringmta.toml.5"),
    under("mandir", "man1", "ringmta-ctl.1"),
]
tap.ok(sorted(expected) == files, "exactly the expected files are installed",
       f"expected {sorted(expected)}\ngot {files}")
# meson shows an install script's output only when it fails: run the hook as meson did.
hook = os.path.join(source, "packaging/install-hook.sh")
user_before = run(["getent", "passwd", "ringmta"]).stdout
hooked = run(["sh", hook, "debugoptimized", "/x/ringmta", "/x/blast", "/x/sink", "/x/sysusers",
              "/x/tmpfiles"], env=dict(os.environ, DESTDIR=dest))
tap.ok(hooked.returncode == 0 and "not created" in hooked.stdout and
       run(["getent", "passwd", "ringmta"]).stdout == user_before and
       not os.path.exists("/x"), "under DESTDIR the hook creates no user and no spool",
       hooked.stdout + hooked.stderr)
with open(dest + under("sysconfdir", "ringmta", "ringmta.toml")) as f, \
        open(os.path.join(source, "conf/ringmta.toml")) as g:
    tap.ok(f.read() == g.read(), "the configuration installed is conf/ringmta.toml")

# --- man pages
page8 = dest + under("mandir", "man8", "ringmta.8")
page5 = dest + under("mandir", "man5", "ringmta.toml.5")
page1 = dest + under("mandir", "man1", "ringmta-ctl.1")
env = dict(os.environ, MANWIDTH="80", LC_ALL="C.UTF-8")
rendered = {}
for page in (page8, page5, page1):
    shown = run(["man", "--warnings", "-l", page], env=env)
    rendered[page] = shown.stdout
    tap.ok(shown.returncode == 0 and shown.stderr == "" and len(shown.stdout) > 1000,
           f"man -l {os.path.basename(page)}: renders without warnings", shown.stderr)
    groff = run(["groff", "-man", "-ww", "-z", "-K", "utf8", page])
    tap.ok(groff.returncode == 0 and groff.stderr == "",
           f"groff -ww {os.path.basename(page)}: no warnings", groff.stderr)

# Every row of the settings table, read from `ringmta --help` (the table's own rendering).
help_text = run([dest + under("sbindir", "ringmta"), "--help"]).stdout
rows = re.findall(r"^  (--[a-z0-9-]+) .*\[([a-z_.]+)\]$", help_text, re.M)
tap.ok(len(rows) >= 35, "the settings table has its rows", len(rows))
flat8 = re.sub(r"[\u2010\s]+", " ", rendered[page8])
flat5 = re.sub(r"[\u2010\s]+", " ", rendered[page5])
missing8 = [flag for flag, key in rows if flag not in flat8 or key not in flat8]
tap.ok(not missing8, "ringmta(8) lists every flag with its key", missing8)
missing5 = []
for flag, key in rows:
    if "." not in key:  # a top-level array of tables ([[dkim]])
        if f"[[{key}]]" not in flat5 or flag not in flat5:
            missing5.append(key)
        continue
    section, name = key.split(".", 1)
    block = flat5.split(f"[{section}]", 1)[-1]
    if f"{name} =" not in block or flag not in block:
        missing5.append(key)
tap.ok(not missing5, "ringmta.toml(5) lists every key under its section, with its flag",
       missing5)
man_tool = os.path.join(build, "tools/man/ringmta-man")
documented = run([man_tool, "--missing", os.path.join(source, "conf/ringmta.toml")])
tap.ok(documented.returncode == 0, "conf/ringmta.toml documents a default for every key",
       documented.stdout)
tap.ok("see conf/ringmta.toml" not in flat8, "so no page falls back to 'see conf'")

# --- the systemd unit
unit = dest + os.path.join(prefix, "lib/systemd/system/ringmta.service")
with open(unit) as f:
    unit_text = f.read()
exec_start = re.search(r"^ExecStart=(\S+)", unit_text, re.M).group(1)
tap.ok(exec_start == under("sbindir", "ringmta"), "ExecStart names the installed daemon",
       exec_start)
for directive in ("Type=notify", "WatchdogSec=", "NoNewPrivileges=yes", "ProtectSystem=strict",
                  "ReadWritePaths=/var/spool/ringmta", "ProtectHome=yes", "PrivateTmp=yes",
                  "CapabilityBoundingSet=CAP_NET_BIND_SERVICE",
                  "AmbientCapabilities=CAP_NET_BIND_SERVICE", "RestrictAddressFamilies=",
                  "SystemCallFilter=", "LimitNOFILE=", "ExecReload=/bin/kill -HUP $MAINPID",
                  "User=ringmta"):
    tap.ok(directive in unit_text, f"unit has {directive}")
verify_dir = tempfile.mkdtemp(prefix="ringmta-verify-")
# verify checks that ExecStart exists and that Documentation= man pages resolve: point both
# into DESTDIR (a copy of the unit, nothing else changed).
with open(os.path.join(verify_dir, "ringmta.service"), "w") as f:
    f.write(unit_text.replace("ExecStart=" + exec_start, "ExecStart=" + dest + exec_start))
verify_env = dict(os.environ, MANPATH=dest + under("mandir"))
if shutil.which("systemd-analyze"):
    verified = run(["systemd-analyze", "verify", "./ringmta.service"], cwd=verify_dir,
                   env=verify_env)
    tap.ok(verified.returncode == 0 and verified.stderr.strip() == "",
           "systemd-analyze verify: no complaint", verified.stderr)
    security = run(["systemd-analyze", "security", "--offline=true", "./ringmta.service"],
                   cwd=verify_dir)
    score = re.search(r"Overall exposure level for ringmta.service: ([0-9.]+) (\w+)",
                      security.stdout)
    tap.ok(score and float(score.group(1)) <= 2.0,
           f"systemd-analyze security: {score.group(1) if score else '?'} "
           f"{score.group(2) if score else ''} (docs/operations.md records it)",
           security.stdout[-1500:])
else:
    tap.ok(True, "systemd-analyze verify # SKIP not installed")

# --- sysusers.d and tmpfiles.d, applied to a scratch root (never this machine's)
scratch = tempfile.mkdtemp(prefix="ringmta-sysroot-")
os.makedirs(os.path.join(scratch, "etc"))
users = run(["systemd-sysusers", "--root", scratch,
             dest + os.path.join(prefix, "lib/sysusers.d/ringmta.conf")])
passwd = open(os.path.join(scratch, "etc/passwd")).read() if users.returncode == 0 else ""
entry = re.search(r"^ringmta:x:(\d+):(\d+):[^:]*:/var/spool/ringmta:/usr/sbin/nologin$",
                  passwd, re.M)
tap.ok(entry and int(entry.group(1)) < 1000, "sysusers.d makes a system user ringmta with no "
       "login shell", users.stderr + passwd)
made = run(["systemd-tmpfiles", "--root", scratch, "--create",
            dest + os.path.join(prefix, "lib/tmpfiles.d/ringmta.conf")])
spool = os.path.join(scratch, "var/spool/ringmta")
tap.ok(made.returncode == 0 and os.path.isdir(spool) and
       (os.stat(spool).st_mode & 0o777) == 0o750, "tmpfiles.d makes the spool, mode 0750",
       made.stderr)

# --- the hook strips a release build's binaries (debug symbols only)
strip_root = tempfile.mkdtemp(prefix="ringmta-strip-")
binary = under("sbindir", "ringmta")
os.makedirs(os.path.dirname(strip_root + binary))
shutil.copy(dest + binary, strip_root + binary)


def has_debug_info(path):
    return ".debug_info" in run(["readelf", "-S", path]).stdout


before = has_debug_info(strip_root + binary)
hooked = run(["sh", hook, "release", binary, "/none/blast", "/none/sink", "/none/sysusers",
              "/none/tmpfiles"], env=dict(os.environ, DESTDIR=strip_root))
tap.ok(before and hooked.returncode == 0 and not has_debug_info(strip_root + binary),
       "release install: binaries stripped", hooked.stdout + hooked.stderr)
still_runs = run([strip_root + binary, "--help"])
tap.ok(still_runs.returncode == 0 and "--listen" in still_runs.stdout,
       "and the stripped daemon runs")
for path in (dest, verify_dir, scratch, strip_root):
    shutil.rmtree(path, ignore_errors=True)
tap.done()
