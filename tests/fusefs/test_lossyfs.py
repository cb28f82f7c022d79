#!/usr/bin/env python3
"""TAP test for lossyfs: mounts it in a temporary directory and proves its crash semantics.

usage: test_lossyfs.py LOSSYFS_BINARY MOUNT_HELPER

Each "ok" line is one assertion about what survives a crash (writing "crash" to
/.lossyfs-control, or SIGUSR1). Ends with two bounded throughput runs (small-file
create+write+fsync, append+fdatasync) whose numbers are printed as TAP comments.
Skips everything ("1..0 # SKIP") when /dev/fuse or fusermount3 is unusable here.
"""
import contextlib
import ctypes
import errno
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

CONTROL = ".lossyfs-control"
RENAME_NOREPLACE = 1  # linux/fs.h
RENAME_EXCHANGE = 2


class Tap:
    def __init__(self):
        self.count = 0
        self.failed = 0

    def ok(self, condition, description, detail=""):
        self.count += 1
        if not condition:
            self.failed += 1
        print(f"{'ok' if condition else 'not ok'} {self.count} - {description}")
        if not condition and detail:
            for line in str(detail).splitlines():
                print(f"# {line}")
        sys.stdout.flush()
        return condition

    def raises(self, errno_wanted, action, description):
        try:
            action()
        except OSError as error:
            return self.ok(error.errno == errno_wanted, description,
                           f"got {errno.errorcode.get(error.errno, error.errno)}")
        return self.ok(False, description, "no error raised")

    def comment(self, text):
        print(f"# {text}")
        sys.stdout.flush()

    def finish(self):
        print(f"1..{self.count}")
        return 1 if self.failed else 0


tap = Tap()


class Mount:
    """A running lossyfs: its mount point and daemon PID."""

    def __init__(self, path, pid, log):
        self.path = path
        self.pid = pid
        self.log = log

    def p(self, *parts):
        return os.path.join(self.path, *parts)

    def crash(self):
        with open(self.p(CONTROL), "w") as control:
            control.write("crash\n")

    def counters(self):
        with open(self.p(CONTROL)) as control:
            return dict(line.split(" ", 1) for line in control.read().splitlines())


class MountError(Exception):
    """mount-lossyfs failed; the text is its error output (with the daemon's log)."""

    def environment_problem(self):
        """True when FUSE itself is unusable here, not when lossyfs is broken."""
        text = str(self)
        return any(sign in text for sign in (
            "device not found", "failed to open /dev/fuse", "fusermount3: mount failed",
            "fuse: mount failed", "/dev/fuse is missing", "Operation not permitted"))


@contextlib.contextmanager
def mounted(binary, helper, options=None):
    path = tempfile.mkdtemp(prefix="lossyfs-")
    log = path + ".log"
    command = [helper, "--binary", binary, "--log", log, path]
    if options:
        command += ["-o", options]
    result = subprocess.run(command, capture_output=True, text=True, timeout=30)
    if result.returncode != 0:
        os.rmdir(path)
        with contextlib.suppress(OSError):
            os.unlink(log)
        raise MountError(result.stderr.strip())
    mount = Mount(path, int(result.stdout.strip()), log)
    try:
        yield mount
    finally:
        subprocess.run(["fusermount3", "-u", path], capture_output=True, timeout=30)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and alive(mount.pid):
            time.sleep(0.05)
        if alive(mount.pid):
            os.kill(mount.pid, signal.SIGKILL)
            subprocess.run(["fusermount3", "-u", "-z", path], capture_output=True, timeout=30)
        with contextlib.suppress(OSError):
            os.rmdir(path)
        with contextlib.suppress(OSError):
            os.unlink(log)


def alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # The helper's child is reparented; a zombie is gone for our purposes.
    with contextlib.suppress(OSError):
        with open(f"/proc/{pid}/stat") as stat:
            if stat.read().split(") ", 1)[1].startswith("Z"):
                return False
    return True


def write_file(path, data, sync=None, mode=0o644):
    """Creates or truncates path, writes data; sync is None, 'fsync' or 'fdatasync'."""
    fd = os.open(path, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, mode)
    try:
        os.write(fd, data)
        if sync == "fsync":
            os.fsync(fd)
        elif sync == "fdatasync":
            os.fdatasync(fd)
    finally:
        os.close(fd)


def sync_dir(path):
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def read_file(path):
    with open(path, "rb") as file:
        return file.read()


def contents_or_none(path):
    try:
        return read_file(path)
    except FileNotFoundError:
        return None


def renameat2(source, target, flags):
    libc = ctypes.CDLL(None, use_errno=True)
    at_fdcwd = -100
    result = libc.renameat2(at_fdcwd, os.fsencode(source), at_fdcwd, os.fsencode(target),
                            ctypes.c_uint(flags))
    if result != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))


# ---- strict mode (default) ------------------------------------------------------------------

def test_file_data(m):
    write_file(m.p("synced"), b"A" * 1000, "fsync")
    write_file(m.p("named_only"), b"")
    sync_dir(m.path)
    fd = os.open(m.p("named_only"), os.O_WRONLY)
    os.write(fd, b"never synced")
    os.close(fd)
    fd = os.open(m.p("synced"), os.O_WRONLY | os.O_APPEND)
    os.write(fd, b"B" * 500)
    os.close(fd)
    write_file(m.p("datasynced"), b"D" * 3000, "fdatasync")
    sync_dir(m.path)
    tap.ok(read_file(m.p("synced")) == b"A" * 1000 + b"B" * 500,
           "before the crash reads see the unsynced append")
    m.crash()
    tap.ok(read_file(m.p("synced")) == b"A" * 1000,
           "fsync'd data survives a crash, the later unsynced append is lost")
    tap.ok(os.path.exists(m.p("named_only")) and read_file(m.p("named_only")) == b"",
           "a durable name whose data was never fsync'd comes back empty")
    tap.ok(read_file(m.p("datasynced")) == b"D" * 3000, "fdatasync makes data durable")


def test_names_strict(m):
    write_file(m.p("no_dirsync"), b"data", "fsync")
    tap.ok(os.path.exists(m.p("no_dirsync")), "a new file is visible before the crash")
    m.crash()
    tap.ok(not os.path.exists(m.p("no_dirsync")),
           "strict: a file fsync'd without fsync of its directory vanishes")

    os.mkdir(m.p("dir_unsynced"))
    os.mkdir(m.p("dir_synced"))
    sync_dir(m.path)
    os.rmdir(m.p("dir_unsynced"))
    os.mkdir(m.p("dir_later"))
    m.crash()
    tap.ok(os.path.isdir(m.p("dir_synced")) and os.path.isdir(m.p("dir_unsynced"))
           and not os.path.exists(m.p("dir_later")),
           "mkdir and rmdir become durable only with fsync of the parent")

    write_file(m.p("victim"), b"keep me", "fsync")
    sync_dir(m.path)
    os.unlink(m.p("victim"))
    m.crash()
    tap.ok(read_file(m.p("victim")) == b"keep me", "an unlink without fsyncdir is undone")
    os.unlink(m.p("victim"))
    sync_dir(m.path)
    m.crash()
    tap.ok(not os.path.exists(m.p("victim")), "an unlink followed by fsyncdir is durable")


def test_rename(m):
    write_file(m.p("incoming"), b"message body", "fsync")
    sync_dir(m.path)
    os.rename(m.p("incoming"), m.p("queued"))
    m.crash()
    tap.ok(contents_or_none(m.p("incoming")) == b"message body"
           and contents_or_none(m.p("queued")) is None,
           "rename without fsyncdir: the old name comes back after a crash")
    os.rename(m.p("incoming"), m.p("queued"))
    sync_dir(m.path)
    m.crash()
    tap.ok(contents_or_none(m.p("queued")) == b"message body"
           and contents_or_none(m.p("incoming")) is None,
           "rename followed by fsyncdir is durable")

    os.mkdir(m.p("from"))
    os.mkdir(m.p("to"))
    sync_dir(m.path)
    write_file(m.p("from", "m"), b"cross", "fsync")
    sync_dir(m.p("from"))
    os.rename(m.p("from", "m"), m.p("to", "m"))
    sync_dir(m.p("to"))
    m.crash()
    tap.ok(contents_or_none(m.p("to", "m")) == b"cross"
           and contents_or_none(m.p("from", "m")) == b"cross",
           "cross-directory rename with only the target fsync'd leaves both names")

    write_file(m.p("a"), b"a", "fsync")
    write_file(m.p("b"), b"b", "fsync")
    sync_dir(m.path)
    tap.raises(errno.EEXIST, lambda: renameat2(m.p("a"), m.p("b"), RENAME_NOREPLACE),
               "RENAME_NOREPLACE onto an existing name fails with EEXIST")
    renameat2(m.p("a"), m.p("b"), RENAME_EXCHANGE)
    tap.ok(read_file(m.p("a")) == b"b" and read_file(m.p("b")) == b"a",
           "RENAME_EXCHANGE swaps two names")
    m.crash()
    tap.ok(read_file(m.p("a")) == b"a" and read_file(m.p("b")) == b"b",
           "an exchange without fsyncdir is undone by a crash")


def test_sizes(m):
    write_file(m.p("sized"), bytes(range(256)) * 40, "fsync")  # 10240 bytes
    sync_dir(m.path)
    os.truncate(m.p("sized"), 10)
    tap.ok(os.stat(m.p("sized")).st_size == 10, "truncate shrinks the current size")
    m.crash()
    tap.ok(read_file(m.p("sized")) == bytes(range(256)) * 40,
           "truncate without fsync: size and data revert after a crash")

    fd = os.open(m.p("sized"), os.O_RDWR)
    os.ftruncate(fd, 100)
    os.fsync(fd)
    os.ftruncate(fd, 50000)
    os.pwrite(fd, b"tail", 60000)
    os.close(fd)
    data = read_file(m.p("sized"))
    tap.ok(len(data) == 60004 and data[100:60000] == bytes(59900) and data[60000:] == b"tail",
           "ftruncate extends with zeros and pwrite past the end leaves a zero hole")
    m.crash()
    tap.ok(read_file(m.p("sized")) == bytes(range(100)),
           "after a crash the size is the one fsync saw")

    fd = os.open(m.p("sized"), os.O_RDWR)
    os.posix_fallocate(fd, 0, 1 << 20)
    size_allocated = os.fstat(fd).st_size
    os.close(fd)
    m.crash()
    tap.ok(size_allocated == 1 << 20 and os.stat(m.p("sized")).st_size == 100,
           "fallocate mode 0 extends the size, not durable without fsync")

    os.utime(m.p("sized"), (1000000, 2000000))
    tap.ok(os.stat(m.p("sized")).st_mtime == 2000000, "utimens sets the modification time")
    tap.ok(os.statvfs(m.path).f_namemax == 255, "statfs answers (name length 255)")


def test_handles_after_crash(m):
    fd = os.open(m.p("held"), os.O_CREAT | os.O_RDWR, 0o644)
    os.write(fd, b"before")
    dir_fd = os.open(m.path, os.O_RDONLY | os.O_DIRECTORY)
    m.crash()
    tap.raises(errno.EIO, lambda: os.write(fd, b"after"), "write on a pre-crash handle: EIO")
    tap.raises(errno.EIO, lambda: os.pread(fd, 10, 0), "read on a pre-crash handle: EIO")
    tap.raises(errno.EIO, lambda: os.fsync(fd), "fsync on a pre-crash handle: EIO")
    tap.raises(errno.EIO, lambda: os.fsync(dir_fd), "fsyncdir on a pre-crash handle: EIO")
    os.close(fd)
    os.close(dir_fd)
    write_file(m.p("fresh"), b"new life", "fsync")
    sync_dir(m.path)
    tap.ok(read_file(m.p("fresh")) == b"new life" and not os.path.exists(m.p("held")),
           "the mount stays usable after a crash; unsynced names are gone")


def test_misc(m):
    write_file(m.p("orig"), b"linked", "fsync")
    sync_dir(m.path)
    os.link(m.p("orig"), m.p("alias"))
    tap.ok(os.stat(m.p("orig")).st_nlink == 2, "link raises the link count")
    m.crash()
    tap.ok(not os.path.exists(m.p("alias")) and os.stat(m.p("orig")).st_nlink == 1,
           "a link without fsyncdir is undone")
    os.link(m.p("orig"), m.p("alias"))
    sync_dir(m.path)
    m.crash()
    tap.ok(read_file(m.p("alias")) == b"linked" and os.stat(m.p("alias")).st_nlink == 2,
           "a link with fsyncdir survives with link count 2")

    def tmpfile():
        os.close(os.open(m.path, os.O_TMPFILE | os.O_WRONLY, 0o600))
    tap.raises(errno.EOPNOTSUPP, tmpfile, "O_TMPFILE is refused with EOPNOTSUPP")

    def bad_command():
        with open(m.p(CONTROL), "w") as control:
            control.write("explode\n")
    tap.raises(errno.EINVAL, bad_command, "an unknown control command fails with EINVAL")
    tap.ok(CONTROL not in os.listdir(m.path), "the control file stays out of readdir")

    crashes = int(m.counters()["crashes"])
    write_file(m.p("by_signal"), b"x", "fsync")
    os.kill(m.pid, signal.SIGUSR1)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and int(m.counters()["crashes"]) == crashes:
        time.sleep(0.01)
    tap.ok(int(m.counters()["crashes"]) == crashes + 1 and not os.path.exists(m.p("by_signal")),
           "SIGUSR1 crashes the filesystem too")


def test_many_files(m):
    os.mkdir(m.p("many"))
    sync_dir(m.path)
    count = 10000
    for i in range(count):
        write_file(m.p("many", f"f{i:05d}"), f"file {i}".encode(), "fsync" if i % 2 else None)
    sync_dir(m.p("many"))
    names = sorted(os.listdir(m.p("many")))
    tap.ok(names == [f"f{i:05d}" for i in range(count)], f"readdir lists all {count} files")
    m.crash()
    bad = [i for i in range(count)
           if read_file(m.p("many", f"f{i:05d}")) != (f"file {i}".encode() if i % 2 else b"")]
    tap.ok(not bad, f"after a crash the {count // 2} fsync'd files kept their data and the "
                    f"others are empty", f"wrong: {bad[:10]}")
    for i in range(count):
        os.unlink(m.p("many", f"f{i:05d}"))
    sync_dir(m.p("many"))
    m.crash()
    nodes = int(m.counters()["nodes"])
    tap.ok(os.listdir(m.p("many")) == [] and nodes < 100,
           "unlinked files are freed after fsyncdir and crash", f"nodes {nodes}")


def test_threads(m):
    os.mkdir(m.p("threads"))
    sync_dir(m.path)
    errors = []

    def worker(number):
        try:
            for i in range(300):
                write_file(m.p("threads", f"t{number}-{i}"), f"{number}:{i}".encode() * 50,
                           "fsync")
        except OSError as error:
            errors.append(error)
    workers = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    sync_dir(m.p("threads"))
    m.crash()
    bad = [(n, i) for n in range(4) for i in range(300)
           if contents_or_none(m.p("threads", f"t{n}-{i}")) != f"{n}:{i}".encode() * 50]
    tap.ok(not errors and not bad, "4 threads writing and fsyncing concurrently lose nothing",
           f"errors {errors[:3]} wrong {bad[:5]}")


# ---- lossy_dirs=file ------------------------------------------------------------------------

def test_file_mode(m):
    write_file(m.p("self_named"), b"ext4-like", "fsync")
    write_file(m.p("unsynced"), b"gone")
    m.crash()
    tap.ok(read_file(m.p("self_named")) == b"ext4-like",
           "file mode: fsync of a new file makes its name durable without fsyncdir")
    tap.ok(not os.path.exists(m.p("unsynced")), "file mode: a file never fsync'd vanishes")

    os.makedirs(m.p("new", "deeper"))
    write_file(m.p("new", "deeper", "f"), b"nested", "fdatasync")
    m.crash()
    tap.ok(contents_or_none(m.p("new", "deeper", "f")) == b"nested",
           "file mode: fsync of a file also makes its new parent directories durable")

    os.rename(m.p("self_named"), m.p("renamed"))
    m.crash()
    tap.ok(os.path.exists(m.p("self_named")) and not os.path.exists(m.p("renamed")),
           "file mode: a rename with no fsync at all is undone")
    os.rename(m.p("self_named"), m.p("renamed"))
    fd = os.open(m.p("renamed"), os.O_RDONLY)
    os.fsync(fd)
    os.close(fd)
    m.crash()
    tap.ok(os.path.exists(m.p("renamed")) and not os.path.exists(m.p("self_named")),
           "file mode: fsync of the renamed file makes the rename durable")


# ---- size_max -------------------------------------------------------------------------------

def test_size_max(m):
    limit = 1 << 20
    tap.ok(os.statvfs(m.path).f_blocks * 4096 == limit, "statfs shows size_max as total size")
    written = 0
    fd = os.open(m.p("big"), os.O_CREAT | os.O_WRONLY, 0o644)
    failure = None
    try:
        for _ in range(40):
            written += os.write(fd, b"z" * 65536)
    except OSError as error:
        failure = error.errno
    finally:
        os.close(fd)
    tap.ok(failure == errno.ENOSPC and written == limit,
           "writes past size_max fail with ENOSPC after exactly size_max bytes",
           f"errno {failure} written {written}")
    os.unlink(m.p("big"))
    write_file(m.p("small"), b"y" * 1000, "fsync")
    tap.ok(os.stat(m.p("small")).st_size == 1000, "unlink frees the space for new writes")


# ---- throughput -----------------------------------------------------------------------------

def test_throughput(m):
    os.mkdir(m.p("bench"))
    sync_dir(m.path)
    body = b"m" * 1024
    files = 0
    start = time.monotonic()
    while files < 20000 and time.monotonic() - start < 3.0:
        write_file(m.p("bench", f"q{files}"), body, "fsync")
        files += 1
    files_per_second = files / (time.monotonic() - start)
    sync_dir(m.p("bench"))

    appends = 0
    fd = os.open(m.p("bench", "log"), os.O_CREAT | os.O_WRONLY | os.O_APPEND, 0o644)
    start = time.monotonic()
    while appends < 50000 and time.monotonic() - start < 3.0:
        os.write(fd, body)
        os.fdatasync(fd)
        appends += 1
    appends_per_second = appends / (time.monotonic() - start)
    os.close(fd)
    sync_dir(m.p("bench"))
    tap.comment(f"throughput: {files_per_second:.0f} files/s create+write 1 KiB+fsync+close "
                f"({files} files)")
    tap.comment(f"throughput: {appends_per_second:.0f} appends/s write 1 KiB+fdatasync "
                f"({appends} appends)")
    m.crash()
    tap.ok(os.stat(m.p("bench", "log")).st_size == appends * 1024
           and len(os.listdir(m.p("bench"))) == files + 1,
           "everything synced during the throughput runs survives a crash")


def usable_fuse():
    if not os.path.exists("/dev/fuse"):
        return "/dev/fuse is missing"
    if not os.access("/dev/fuse", os.R_OK | os.W_OK):
        return "/dev/fuse is not readable and writable"
    if shutil.which("fusermount3") is None:
        return "fusermount3 is not installed"
    return None


def main():
    if len(sys.argv) != 3:
        print("usage: test_lossyfs.py LOSSYFS_BINARY MOUNT_HELPER", file=sys.stderr)
        return 2
    binary, helper = sys.argv[1], sys.argv[2]
    reason = usable_fuse()
    if reason:
        print(f"1..0 # SKIP {reason}")
        return 0
    try:
        first = mounted(binary, helper)
        m = first.__enter__()
    except MountError as error:
        if error.environment_problem():
            print(f"1..0 # SKIP FUSE cannot mount here: {error}".replace("\n", " "))
            return 0
        tap.ok(False, "lossyfs mounts", error)  # lossyfs itself is broken: a failure
        return tap.finish()
    try:
        for test in (test_file_data, test_names_strict, test_rename, test_sizes,
                     test_handles_after_crash, test_misc, test_many_files, test_threads,
                     test_throughput):
            run_one(test, m)
    finally:
        first.__exit__(None, None, None)
    with mounted(binary, helper, "lossy_dirs=file") as m:
        run_one(test_file_mode, m)
    with mounted(binary, helper, "size_max=1M") as m:
        run_one(test_size_max, m)
    return tap.finish()


def run_one(test, m):
    """An unexpected exception in a test is one failed assertion, not a dead script."""
    try:
        test(m)
    except Exception as error:  # noqa: BLE001 - reported as a TAP failure with its reason
        tap.ok(False, f"{test.__name__} ran to the end", f"{type(error).__name__}: {error}")


if __name__ == "__main__":
    sys.exit(main())
