"""Least privilege, with the real kernel: ringmta started as root opens its listeners (a
privileged port too) and spool, hands the spool to --user, and runs as that user with no
capabilities in any thread; started unprivileged with only CAP_NET_BIND_SERVICE (setpriv, as
systemd's AmbientCapabilities= does) it binds port < 1024 and drops that capability too; as
root it refuses to run without a usable --user unless --allow-root says so.
usage: test_privileges.py build/src/ringmta   (needs root; skips otherwise)
"""
import os
import pwd
import random
import shutil
import socket
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "daemon"))
from harness import Conversation, Daemon, Tap, queued_id, spool_list  # noqa: E402

binary = os.path.abspath(sys.argv[1])
tap = Tap()
if os.geteuid() != 0:
    tap.skip_all("needs root")
TEST_USER = "ringmta-test"
try:
    pwd.getpwnam(TEST_USER)
except KeyError:
    # A system account with no login, as the install step makes for 'ringmta' (9: exists, a
    # concurrent run made it first).
    made = subprocess.run(["useradd", "--system", "--no-create-home", "--home-dir", "/nonexistent",
                           "--shell", "/usr/sbin/nologin", TEST_USER], capture_output=True)
    if made.returncode not in (0, 9):
        tap.skip_all(f"cannot create {TEST_USER}: {made.stderr.decode()}")
user = pwd.getpwnam(TEST_USER)


def work_dir():
    """A temp dir the test user can traverse (mkdtemp makes 0700 dirs)."""
    path = tempfile.mkdtemp(prefix="ringmta-priv-")
    os.chmod(path, 0o755)
    return path


def task_status(pid):
    """{tid: {field: value}} from /proc/PID/task/*/status: every thread, not only the first."""
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        fields = {}
        with open(f"/proc/{pid}/task/{tid}/status") as f:
            for line in f:
                key, _, value = line.partition(":")
                fields[key] = value.strip()
        out[tid] = fields
    return out


def all_threads(status, predicate):
    return len(status) > 1 and all(predicate(fields) for fields in status.values())


def deliver(port, rcpt="someone@example.com"):
    c = Conversation(port)
    c.reply()
    c.command("EHLO client.test")
    c.command("MAIL FROM:<a@client.test>")
    c.command(f"RCPT TO:<{rcpt}>")
    c.command("DATA")
    code, text = c.command("Subject: privileges\r\n\r\nhello\r\n.")
    c.command("QUIT")
    c.close()
    return code, queued_id(text)


def free_privileged_port():
    """A port < 1024 free on 127.0.0.1 right now (probed; never a fixed one)."""
    candidates = list(range(600, 1024))
    random.shuffle(candidates)
    for port in candidates:
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
                return port
            except OSError:
                continue
    return None


def owners(tree):
    out = {}
    for root, dirs, files in os.walk(tree):
        for name in dirs + files:
            path = os.path.join(root, name)
            out[path] = os.lstat(path).st_uid
    return out


def listens_on(daemon, port):
    """The harness listens on a free port too; `port` must be among the listeners."""
    return f"127.0.0.1:{port}" in [e["detail"] for e in daemon.events("listening")]


no_caps = "0000000000000000"

# --- 1. Root with --allow-root leaves a spool of root-owned files (the upgrade case).
work = work_dir()
spool = os.path.join(work, "spool")
first = Daemon(binary, spool=spool, shards=2).start()
code, old_id = deliver(first.port)
tap.ok(code == 250 and old_id, "as root (--allow-root): accepted")
status = task_status(first.process.pid)
tap.ok(all_threads(status, lambda f: f["Uid"].split()[1] == "0"),
       "--allow-root keeps root", status)
tap.ok(any("allow-root" in e["detail"] for e in first.events("privileges")),
       "and says so at start-up", first.events("privileges"))
first.stop()
# A hostile spool: a symlink and a hard link to root-owned files elsewhere.
outside = os.path.join(work, "outside-secret")
with open(outside, "w") as f:
    f.write("root's\n")
os.symlink(outside, os.path.join(spool, "shard-0", "evil-symlink"))
os.link(outside, os.path.join(spool, "shard-0", "evil-hardlink"))

# --- 2. Root, --user: listeners on a privileged port, spool handed over, no capabilities.
port = free_privileged_port()
args = ["--user", TEST_USER]
daemon = Daemon(binary, spool=spool, shards=2, args=args)
if port is not None:
    daemon.args += ["--listen", f"127.0.0.1:{port}"]
daemon.start()
pid = daemon.process.pid
status = task_status(pid)
tap.ok(all_threads(status, lambda f: f["Uid"].split() == [str(user.pw_uid)] * 4 and
                   f["Gid"].split() == [str(user.pw_gid)] * 4),
       f"every thread runs as {TEST_USER} (real, effective, saved, fs uid and gid)",
       {t: (f["Uid"], f["Gid"]) for t, f in status.items()})
tap.ok(all_threads(status, lambda f: f["CapEff"] == f["CapPrm"] == f["CapInh"] == no_caps and
                   f.get("CapAmb", no_caps) == no_caps),
       "no effective, permitted, inheritable or ambient capability in any thread",
       {t: (f["CapEff"], f["CapPrm"], f["CapAmb"]) for t, f in status.items()})
tap.ok(all_threads(status, lambda f: f["CapBnd"] == no_caps), "bounding set empty",
       {t: f["CapBnd"] for t, f in status.items()})
tap.ok(all_threads(status, lambda f: f["NoNewPrivs"] == "1"), "no_new_privs set",
       {t: f["NoNewPrivs"] for t, f in status.items()})
groups = status[str(pid)]["Groups"].split()
tap.ok("0" not in groups, "no supplementary group of root's left", groups)
if port is not None:
    tap.ok(listens_on(daemon, port), f"listens on privileged port {port} (bound before the drop)",
           daemon.events("listening"))
    tap.ok(deliver(port)[0] == 250, f"and accepts mail there")
else:
    tap.ok(True, "no free port below 1024 # SKIP")
code, new_id = deliver(daemon.port)
tap.ok(code == 250 and new_id, "mail accepted after the drop (spool written as the user)")
queued = {m["id"] for m in spool_list(binary, spool)}
tap.ok(old_id in queued and new_id in queued, "the old root-owned spool was recovered and the "
       "new message spooled", queued)
tree = owners(spool)
foreign = {p: u for p, u in tree.items() if u != user.pw_uid and "evil" not in p}
tap.ok(os.stat(spool).st_uid == user.pw_uid and not foreign,
       "every spool file and directory now belongs to the user", foreign)
tap.ok(os.stat(outside).st_uid == 0 and
       os.lstat(os.path.join(spool, "shard-0", "evil-symlink")).st_uid == 0,
       "a symlink or hard link in the spool never gives its target away", tree)
tap.ok(any("evil-hardlink" in e["detail"] for e in daemon.events("spool_ownership")),
       "the hard link is reported", daemon.events("spool_ownership"))
tap.ok(daemon.stop() == 0, "SIGTERM: clean exit as the user")

# --- 3. Root without a usable user, or --user root: refused, exit 2, nothing started.
def start_error(extra):
    result = subprocess.run([binary, "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0",
                             "--spool", os.path.join(work, "other")] + extra,
                            capture_output=True, text=True, timeout=60)
    return result.returncode, result.stderr


code, err = start_error(["--user", "no-such-user-ringmta"])
tap.ok(code == 2 and "no-such-user-ringmta" in err and "--allow-root" in err and
       "useradd" in err, "root with a missing --user: exit 2, says how to proceed", err)
code, err = start_error(["--user", "root"])
tap.ok(code == 2 and "is root" in err, "--user root: refused without --allow-root", err)
tap.ok(not os.path.exists(os.path.join(work, "other")), "and no spool was created")

# --- 4. A spool the user cannot reach (its parent is 0700): a clear start-up error.
closed = tempfile.mkdtemp(prefix="ringmta-priv-closed-")
code, err = start_error(["--user", TEST_USER, "--spool", os.path.join(closed, "spool")])
tap.ok(code == 2 and "not writable by user" in err, "unreachable spool: exit 2 naming it", err)
shutil.rmtree(closed, ignore_errors=True)

# --- 5. Unprivileged from the start with only CAP_NET_BIND_SERVICE (as systemd would).
own_spool = os.path.join(work, "own-spool")
os.mkdir(own_spool)
os.chown(own_spool, user.pw_uid, user.pw_gid)
setpriv = ["setpriv", f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}", "--init-groups",
           "--inh-caps=+net_bind_service", "--ambient-caps=+net_bind_service"]
port = free_privileged_port()
daemon = Daemon(binary, spool=own_spool, shards=2, prefix=setpriv,
                args=["--listen", f"127.0.0.1:{port}"] if port else [])
daemon.start()
status = task_status(daemon.process.pid)
tap.ok(port is None or (listens_on(daemon, port) and deliver(port)[0] == 250),
       f"with CAP_NET_BIND_SERVICE only: binds privileged port {port}, takes mail there",
       daemon.events("listening"))
tap.ok(all_threads(status, lambda f: f["CapEff"] == f["CapPrm"] == f["CapInh"] == no_caps and
                   f["CapAmb"] == no_caps and f["NoNewPrivs"] == "1"),
       "then holds no capability (ambient included), no_new_privs set",
       {t: (f["CapEff"], f["CapPrm"], f["CapAmb"], f["NoNewPrivs"]) for t, f in status.items()})
code, queued = deliver(daemon.port)
tap.ok(code == 250 and queued, "accepts mail unprivileged")
tap.ok(any("started unprivileged" in e["detail"] for e in daemon.events("privileges")),
       "logs what it did", daemon.events("privileges"))
tap.ok(daemon.stop() == 0, "clean exit")

# Without the capability a privileged port is a start-up error, not a crash.
if port is not None:
    plain = ["setpriv", f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}", "--init-groups",
             "--inh-caps=-all"]
    result = subprocess.run(plain + [binary, "--listen", f"127.0.0.1:{port}", "--admin-listen",
                                     "127.0.0.1:0", "--spool", own_spool],
                            capture_output=True, text=True, timeout=60)
    tap.ok(result.returncode == 2 and "Permission denied" in result.stderr,
           "unprivileged without the capability: port < 1024 refused with exit 2",
           result.stderr)
shutil.rmtree(work, ignore_errors=True)
tap.done()
