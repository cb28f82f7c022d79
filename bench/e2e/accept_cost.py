"""What a daemon spends per accepted message, robust to the machine's load (issue 15).

The wall-clock accept rate of one daemon on this shared 2-core machine moves with whatever
else runs (the side-by-side ratio of backlog.py ranged 0.58-1.30x between rounds). The
scheduler's own accounting separates the daemon's work from the machine's noise:

  /proc/PID/task/TID/schedstat  ns on a CPU, ns runnable but waiting for one (run queue
                                delay: other processes' load, not the daemon's work)
  /proc/PID/task/TID/comm       the thread's name: which thread pays (shard, log, sync)
  /proc/PID/stat                utime + stime of the process, ended threads included
  /proc/stat                    the machine's busy CPU time (everyone's)
  GET /metrics                  the daemon's own counters: commit latency (end of data to
                                fdatasync done), datasyncs, retries it ran during the round

A round snapshots all of them before and after one blast; cost() gives per-message figures.
No hardware counters here (perf stat says <not supported> for instructions and cycles in
this VM), so CPU time is the measure of work."""
import os
import re

# Sampling frequency of backlog.py --accept-perf (cpu-clock), which perf_diff.py divides by.
PERF_HZ = 4999


def thread_clocks(pid):
    """{tid: (thread name, run ns, wait ns)} of the threads alive now."""
    clocks = {}
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return clocks
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/comm") as f:
                name = re.sub(r"[0-9]+$", "", f.read().strip()) or "?"
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                run, wait, _ = (int(v) for v in f.read().split())
        except (OSError, ValueError):
            continue  # a thread that ended between listdir and read
        clocks[tid] = (name, run, wait)
    return clocks


def process_cpu_seconds(pid):
    """utime + stime of the whole process, threads that have ended included (io_uring's
    io-wq workers come and go within a round: their time would vanish from thread_clocks)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_busy_seconds():
    """CPU seconds every process on the machine has used (user+nice+system+irq+softirq)."""
    with open("/proc/stat") as f:
        fields = [int(v) for v in f.readline().split()[1:]]
    return sum(fields[i] for i in (0, 1, 2, 5, 6)) / os.sysconf("SC_CLK_TCK")


def page_cache_state():
    """(dirty + writeback MB now, pages written back to disk so far): the kernel's flushing
    of the spool's dirty pages runs in kworker threads, outside the daemon's clock."""
    with open("/proc/meminfo") as f:
        kb = {line.split(":")[0]: int(line.split()[1]) for line in f}
    with open("/proc/vmstat") as f:
        written = next(int(line.split()[1]) for line in f if line.startswith("nr_written "))
    return (kb.get("Dirty", 0) + kb.get("Writeback", 0)) / 1024, written


def children_cpu_seconds():
    """CPU seconds of the script's waited-for children (the blast client)."""
    usage = os.times()
    return usage.children_user + usage.children_system


# Counters of GET /metrics read per round: (key, label in the report).
COUNTERS = {
    "datasyncs": "ringmta_spool_datasyncs_total",
    "flushes": "ringmta_spool_flushes_total",
    "commit_sum": "ringmta_commit_latency_seconds_sum",
    "commit_count": "ringmta_commit_latency_seconds_count",
    "deferred": "ringmta_recipients_deferred_total",
    "connect_failures": "ringmta_outbound_connect_failures_total",
    "envelope_reads": "ringmta_relay_envelope_reads_total",
    "log_bytes": "ringmta_log_bytes_written_total",
    "load_episodes": "ringmta_load_episodes_total",
    "accept_pauses": "ringmta_accept_pauses_total",
    "snapshots": "ringmta_spool_journal_snapshots_total",
    "spool_bytes": "ringmta_spool_bytes_written_total",
}


def daemon_counters(daemon):
    try:
        _, text = daemon.admin("GET", "/metrics", timeout=60)
    except OSError:
        return {}
    values = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            values[name] = float(value)
    return {key: values.get(name, 0.0) for key, name in COUNTERS.items()}


class Snapshot:
    def __init__(self, daemon, pid):
        self.counters = daemon_counters(daemon)
        self.threads = thread_clocks(pid)
        self.process = process_cpu_seconds(pid)
        self.machine = machine_busy_seconds()
        self.client = children_cpu_seconds()
        self.dirty_mb, self.written_pages = page_cache_state()


def delta(before, after):
    """Per-round figures between two Snapshots of one daemon; messages: those accepted."""
    # Per thread: the threads alive at both ends (a new one from 0); the total from the
    # process's own clock (10 ms ticks), which keeps the time of threads that ended.
    threads, wait = {}, 0
    for tid, (name, run, waited) in after.threads.items():
        _, run0, waited0 = before.threads.get(tid, (name, 0, 0))
        threads[name] = threads.get(name, 0) + run - run0
        wait += waited - waited0
    counters = {key: after.counters.get(key, 0.0) - before.counters.get(key, 0.0)
                for key in COUNTERS}
    return {
        "run": after.process - before.process,
        "wait": wait / 1e9,  # of the threads alive at both ends: a lower bound
        "threads": {name: run / 1e9 for name, run in threads.items()},
        "machine": after.machine - before.machine,
        "client": after.client - before.client,
        "counters": counters,
        "dirty_mb": before.dirty_mb,
        "written_mb": (after.written_pages - before.written_pages) * os.sysconf("SC_PAGE_SIZE")
        / 2**20,
    }


def cost(round_delta, messages, seconds, background_per_second=0.0):
    """Per accepted message: daemon CPU µs (gross, and net of the CPU the daemon spent per
    second while idle just before: retries, timers), run-queue wait µs, commit ms, datasyncs."""
    c = round_delta["counters"]
    n = max(messages, 1)
    return {
        "cpu_us": 1e6 * round_delta["run"] / n,
        "net_cpu_us": 1e6 * (round_delta["run"] - background_per_second * seconds) / n,
        "wait_us": 1e6 * round_delta["wait"] / n,
        "client_us": 1e6 * round_delta["client"] / n,
        # What the rest of the machine ran during the round, in cores: the noise.
        "others_cores": max(round_delta["machine"] - round_delta["run"] - round_delta["client"],
                            0.0) / max(seconds, 1e-9),
        "commit_ms": 1e3 * c["commit_sum"] / c["commit_count"] if c["commit_count"] else 0.0,
        "datasyncs": c["datasyncs"] / n,
        "deferred": c["deferred"],
        "envelope_reads": c["envelope_reads"],
        "snapshots": c["snapshots"],
        "spool_bytes": c["spool_bytes"] / n,
        "dirty_mb": round_delta["dirty_mb"],
        "written_mb": round_delta["written_mb"],
        "threads_us": {name: 1e6 * run / n for name, run in round_delta["threads"].items()
                       if run > 0},
    }
