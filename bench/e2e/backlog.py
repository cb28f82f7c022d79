#!/usr/bin/env python3
"""ringmta holding a large backlog it cannot deliver, then releasing it (issue 15).

N messages of 1 KiB to --domains destinations (d0.test … d{D-1}.test, NSD answers MX →
127.0.0.3) are injected with ringmta-blast while the delivery port is closed (connection
refused: nothing can be delivered, every destination backs off). Measured, in one run:

  idle        daemon RSS before any mail
  warm-up     one message per destination (MX lookups, first refused connections)
  accept 0    accept rate of --probe messages with only the warm-up queued
  backlog     RSS after N are queued: bytes per queued message beyond the idle daemon, and
              per backlog message beyond the daemon holding the warm-up (every destination
              known: without the per-destination state) (the spool's own size on disk is
              printed beside it)
  cpu         daemon CPU (utime+stime from /proc/PID/stat) over --cpu-windows consecutive
              windows of --cpu-window seconds (the first hold the backlog's first attempts) while
              nothing can be delivered
  accept N    accept rate of --probe messages with the backlog queued (ratio to accept 0)
  accept A/B  with --accept-rounds K: a second daemon (same settings, its own spool, the same
              warm-up: one message per destination) stands beside the one holding the backlog,
              and the two are probed in turn, K rounds of --probe messages each (the order
              alternating per round), so both rates see the same machine load: the ratio per
              round and their median. The single "accept N" pair is minutes apart, and on this
              shared machine the empty queue's rate alone ranged over 4x between runs.
              Per round and daemon, what the wall clock does not separate from the machine's
              load (accept_cost.py): the daemon's CPU per accepted message (/proc/PID/stat; net
              of the CPU it spent per second in the --accept-idle seconds before: retries,
              timers), its threads' run-queue wait per message (waiting for a core: others'
              load), commit latency and datasyncs per message (GET /metrics), retries
              (deferrals) before and during the round, page-cache dirty and written-back MB,
              the rest of the machine's CPU in cores. The summary gives median (min-max) of the
              wall ratio and of the CPU ratio, again over the rounds without retries in either
              daemon (a wave of failed probes each retry period lands in whichever round meets
              it), and the CPU per deferral of each daemon's idle windows. --accept-perf DIR
              then records one more probe of each under perf (cpu-clock: no hardware counters
              in this VM) to diff per symbol.
  restart     spool entries counted (ringmta spool ls) with the daemon stopped; ringmta-sink
              (accepting) started on the delivery port; the daemon restarted on the spool:
              seconds until it greets (220 on a new connection) and until the sink sees its
              first connection and first accepted message
  drain       messages/s until the sink has all of them; fairness from the daemon's log
              (delivered records per destination over time); the most connections any one
              destination had at once (GET /queue, sampled); the sink's id check (every
              X-Blast-Id of every run exactly once: nothing lost, nothing duplicated)

The retry schedule (--retry, default 1m) decides when the deferred backlog is tried again:
the restart's first delivery waits for the earliest retry time the spool recorded.
Every wait is bounded; the spool and logs are removed at the end (--keep to keep them).
usage: bench/e2e/backlog.py [N=1000000] [--domains 10000] [--probe 20000] [--shards 2]
       [--build build] [--retry 1m] [--cpu-window 30] [--cpu-windows 4] [--keep] [--no-release]
       [--suspend] [--perf FILE] [--daemon-arg=--probe-backoff-max --daemon-arg=1h]
       [--heaptrack FILE] [--accept-rounds K] [--accept-probe M] [--accept-idle S]
       [--accept-perf DIR]

--heaptrack FILE: the daemon runs under heaptrack (every allocation recorded with its stack);
after the warm-up and probe it is killed (SIGKILL: nothing is freed) and the run ends there.
`heaptrack_print --print-leaks 1 FILE.zst` then lists what the daemon held at that moment by
call site: the per-destination state and the warm-up's messages (docs/notes.md)."""
import argparse
import concurrent.futures
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "../.."))
sys.path.insert(0, os.path.join(ROOT, "tests/integration/daemon"))
sys.path.insert(0, os.path.join(ROOT, "tests/integration/delivery"))
sys.path.insert(0, HERE)
from harness import Daemon, free_port  # noqa: E402
from peers import wait_until  # noqa: E402
from relay import cpu_seconds, sink_accepted  # noqa: E402
import accept_cost  # noqa: E402


def load():
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def say(text):
    print(f"[{time.strftime('%H:%M:%S')} load {load()}] {text}", flush=True)


def rss_bytes(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def du_bytes(path):
    total = 0
    for folder, _, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(folder, name)).st_blocks * 512
            except OSError:
                pass
    return total


class LogTail:
    """New lines of the daemon's log file since the last call (the harness's log_lines)."""

    def __init__(self, path):
        self.path, self.offset, self.partial = path, 0, b""

    def __call__(self):
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                data = f.read(64 << 20)
        except OSError:
            return []
        self.offset += len(data)
        data = self.partial + data
        lines = data.split(b"\n")
        self.partial = lines.pop()
        return [line.decode(errors="replace") for line in lines]


class DnsSpec:
    """NSD (tests/integration/dns/dns_server.py) with D zones from a spec file."""

    def __init__(self, domains, work):
        spec = os.path.join(work, "zones.json")
        with open(spec, "w") as f:
            json.dump({"zones": {f"d{i}.test": ["@ MX 10 mx", "mx A 127.0.0.3"]
                                 for i in range(domains)}}, f)
        self.process = subprocess.Popen(
            [os.path.join(ROOT, "tests/integration/dns/dns_server.py"), "--spec", spec,
             "--stop-on-stdin-eof"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        line = self.process.stdout.readline().split()
        if len(line) != 3 or line[0] != "READY":
            raise RuntimeError("dns_server.py did not start")
        self.address = f"{line[1]}:{line[2]}"

    def stop(self):
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:  # a loaded machine: do not leave the work behind
                self.process.kill()
                self.process.wait(30)


def blast(args, port, run, messages, per_session=100):
    command = [args.blast, "--target", f"127.0.0.1:{port}", "--sessions",
               str(messages // per_session), "--concurrency", "50", "--messages-per-session",
               str(per_session), "--size", "1k", "--domains", str(args.domains), "--run-id", run,
               "--quiet", "--json"]
    t0 = time.monotonic()
    result = subprocess.run(command, capture_output=True, text=True, timeout=args.inject_timeout)
    elapsed = time.monotonic() - t0
    summary = json.loads(result.stdout) if result.stdout.strip().startswith("{") else {}
    accepted = summary.get("messages", {}).get("accepted", 0)
    return accepted, accepted / elapsed


def heaptrack_prefix(output, work):
    """heaptrack, with operator new routed through malloc (new_to_malloc.cc says why)."""
    shim = os.path.join(work, "new_to_malloc.so")
    subprocess.run(["g++", "-std=c++20", "-O2", "-shared", "-fPIC", "-o", shim,
                    os.path.join(HERE, "new_to_malloc.cc")], check=True, timeout=300)
    return ["env", f"LD_PRELOAD={shim}", "heaptrack", "-o", output]


def start_daemon(args, spool, dns, port, log, heaptrack=None):
    prefix = heaptrack_prefix(heaptrack, os.path.dirname(log)) if heaptrack else []
    allow_root = ["--allow-root"] if heaptrack and os.geteuid() == 0 else []
    daemon = Daemon(args.ringmta, spool=spool, shards=args.shards, log_lines=LogTail(log),
                    stdout=subprocess.DEVNULL, prefix=prefix,
                    args=allow_root + ["--resolver", dns.address, "--delivery-port", str(port),
                          "--log-output", "file", "--log-file", log,
                          "--retry-schedule", args.retry,
                          "--max-sessions-per-client", "100000",
                          "--max-connections-per-destination", str(args.per_destination),
                          "--max-messages-per-connection", "1000"] + args.daemon_arg)
    return daemon


def greets(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
            return s.recv(512).startswith(b"220")
    except OSError:
        return False


def spool_count(args, spool):
    """Queued messages as `ringmta spool ls` lists them (daemon stopped)."""
    out = subprocess.run([args.ringmta, "spool", "ls", "--spool", spool], capture_output=True,
                         timeout=600)
    return sum(1 for line in out.stdout.splitlines() if re.match(rb"^[0-9a-f]{16}\b", line))


def quiet_queue(daemon, timeout):
    """Waits until no job of the queue is in flight (every first attempt has failed)."""
    def settled():
        try:
            _, body = daemon.admin("GET", "/status", timeout=60)
        except OSError:  # no control socket (an older ringmta): give it time instead
            time.sleep(10)
            return True
        queue = json.loads(body).get("queue", {})
        return queue.get("in_flight", 1) == 0 and queue.get("connections", 1) == 0
    return wait_until(settled, timeout, 1.0)


def profiled_pid(daemon):
    """The daemon's own pid under heaptrack (the script's child running ringmta)."""
    if not daemon.prefix:
        return daemon.process.pid
    pids = [daemon.process.pid]
    while pids:
        pid = pids.pop()
        try:
            if os.path.basename(os.readlink(f"/proc/{pid}/exe")) == "ringmta":
                return pid
            with open(f"/proc/{pid}/task/{pid}/children") as f:
                pids += [int(child) for child in f.read().split()]
        except OSError:
            continue
    raise RuntimeError("no ringmta process under heaptrack")


def backlog_phase(args, work, dns, port):
    spool = os.path.join(work, "spool")
    daemon = start_daemon(args, spool, dns, port, os.path.join(work, "ringmta-1.log"),
                          args.heaptrack).start(timeout=120 if args.heaptrack else 20)
    pid = profiled_pid(daemon)
    time.sleep(3)
    idle = rss_bytes(pid)
    say(f"idle daemon RSS {idle / 1e6:.1f} MB (pid {pid})")
    # One message per destination first: every destination's MX lookup and first refused
    # connection happen here, not in the probes (else the empty queue pays for them).
    warm, warm_rate = blast(args, daemon.port, "w0", args.domains)
    quiet_queue(daemon, 300)
    say(f"warm-up: {warm} messages (one per destination) at {warm_rate:.0f} msg/s")
    got, rate0 = blast(args, daemon.port, "p0", args.probe)
    say(f"accept, queue holding only the warm-up: {got} messages at {rate0:.0f} msg/s")
    got += warm
    # Every destination is known now (scheduler queue, DNS answer, site): what the backlog adds
    # beyond this is the cost per queued message without the per-destination state.
    quiet_queue(daemon, 300)
    before = rss_bytes(pid)
    if args.heaptrack:
        time.sleep(5)
        before = rss_bytes(pid)
        say(f"RSS holding the warm-up and probe {before / 1e6:.1f} MB: {(before - idle) / 1e6:.1f}"
            f" MB above the idle daemon; killing it for heaptrack's record ({args.heaptrack})")
        os.kill(pid, signal.SIGKILL)
        daemon.process.wait(600)  # heaptrack's script ends once it has written the record
        return None, 0
    t0 = time.monotonic()
    injected, inject_rate = blast(args, daemon.port, "bk", args.messages)
    say(f"injected {injected} in {time.monotonic() - t0:.1f} s ({inject_rate:.0f} msg/s)")
    quiet_queue(daemon, 300)
    time.sleep(5)
    rss = rss_bytes(pid)
    queued = injected + got
    spool_bytes = du_bytes(spool)
    say(f"backlog RSS {rss / 1e6:.1f} MB: {(rss - idle) / queued:.0f} bytes per queued message "
        f"beyond the idle daemon ({queued} queued; spool on disk {spool_bytes / 1e6:.0f} MB = "
        f"{spool_bytes / queued:.0f} bytes/message)")
    per_message = (rss - before) / max(injected, 1)
    say(f"backlog RSS beyond the daemon holding the warm-up and probe ({before / 1e6:.1f} MB): "
        f"{per_message:.0f} bytes per backlog message")
    # The warm daemon's growth over the idle one, less its messages at the backlog's rate: what
    # knowing the destinations costs (scheduler, sites, DNS, outbound slots), per destination.
    say(f"per destination: ({before / 1e6:.1f} - {idle / 1e6:.1f} MB - {got} messages x "
        f"{per_message:.0f} B) / {args.domains} = "
        f"{(before - idle - got * per_message) / args.domains:.0f} bytes")
    # Consecutive windows: the first ones hold the backlog's first attempts (each message
    # is tried once after it arrives: a deferral, a log record, a spool mark); once every
    # message has been tried (one retry period), what is left is the idle cost of holding it.
    for window in range(args.cpu_windows):
        perf = None
        if args.perf and window == args.cpu_windows - 1:  # the last window: the idle cost
            perf = subprocess.Popen(["perf", "record", "-g", "-o", args.perf, "-p", str(pid),
                                     "--", "sleep", str(args.cpu_window)],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        cpu0 = cpu_seconds(pid)
        time.sleep(args.cpu_window)
        cpu = cpu_seconds(pid) - cpu0
        if perf is not None:
            perf.wait(timeout=120)
        say(f"daemon CPU while nothing can be delivered, window {window + 1}: {cpu:.2f} s over "
            f"{args.cpu_window} s = {100 * cpu / args.cpu_window:.1f}% of a core")
    if args.suspend:
        suspend_all(args, daemon)
    got1, rate1 = blast(args, daemon.port, "p1", args.probe)
    say(f"accept with the backlog: {got1} messages at {rate1:.0f} msg/s = {rate1 / rate0:.2f}x "
        f"the empty queue")
    quiet_queue(daemon, 300)
    rss_after = rss_bytes(pid)
    say(f"RSS after the second probe {rss_after / 1e6:.1f} MB")
    got1 += accept_side_by_side(args, work, dns, port, daemon)
    t_stop = time.monotonic()
    daemon.stop(timeout=300)
    say(f"daemon stopped in {time.monotonic() - t_stop:.1f} s")
    return spool, queued + got1


def accept_side_by_side(args, work, dns, port, backlog_daemon):
    """--accept-rounds: the backlog daemon and a reference daemon holding only the warm-up,
    probed in turn. Returns the messages the backlog daemon accepted (its queue holds them)."""
    if args.accept_rounds <= 0:
        return 0
    reference = start_daemon(args, os.path.join(work, "reference-spool"), dns, port,
                             os.path.join(work, "reference.log")).start(timeout=20)
    try:
        warm, _ = blast(args, reference.port, "rw", args.domains)
        quiet_queue(reference, 300)
        say(f"reference daemon: warm-up of {warm} messages (one per destination)")
        daemons = {"reference": reference, "backlog": backlog_daemon}
        rounds = [accept_round(args, daemons, i) for i in range(args.accept_rounds)]
        accept_summary(rounds)
        if args.accept_perf:
            accept_profiles(args, daemons)
        return sum(r["backlog"]["accepted"] for r in rounds) + args.accept_probe * bool(
            args.accept_perf)
    finally:
        reference.stop(timeout=120)
        shutil.rmtree(os.path.join(work, "reference-spool"), ignore_errors=True)


def probe_measured(args, daemon, run):
    """One blast of --accept-probe messages with the daemon's cost around it: the CPU it spent
    per second idle just before (--accept-idle seconds: retries, timers), then per message
    during the blast (accept_cost.py)."""
    pid = daemon.process.pid
    idle0 = accept_cost.Snapshot(daemon, pid)
    time.sleep(args.accept_idle)
    before = accept_cost.Snapshot(daemon, pid)
    idle = accept_cost.delta(idle0, before)
    background = idle["run"] / args.accept_idle
    t0 = time.monotonic()
    got, rate = blast(args, daemon.port, run, args.accept_probe)
    seconds = time.monotonic() - t0
    spent = accept_cost.delta(before, accept_cost.Snapshot(daemon, pid))
    quiet_queue(daemon, 300)
    return dict(accepted=got, rate=rate, background=background, idle_cpu=idle["run"],
                idle_deferred=idle["counters"]["deferred"],
                **accept_cost.cost(spent, got, seconds, background))


def accept_round(args, daemons, index):
    """Both daemons probed once, the order alternating per round."""
    order = ["reference", "backlog"] if index % 2 == 0 else ["backlog", "reference"]
    result = {name: probe_measured(args, daemons[name], ("r" if name == "reference" else "q") +
                                   str(index)) for name in order}
    b, r = result["backlog"], result["reference"]
    result["ratio"] = b["rate"] / max(r["rate"], 1e-9)
    result["cpu_ratio"] = b["cpu_us"] / max(r["cpu_us"], 1e-9)
    # Net of the idle rate only where both stay positive: the idle window may meet a retry
    # wave that is over by the blast (or the reverse), and the subtraction then overshoots.
    result["net_ratio"] = (b["net_cpu_us"] / r["net_cpu_us"]
                           if min(b["net_cpu_us"], r["net_cpu_us"]) > 0 else None)
    # Retries (a wave of failed probes each retry period) in either daemon during its idle
    # window or its blast: real work of the scenario, but it lands in whichever round meets it.
    result["quiet"] = not any(p["deferred"] or p["idle_deferred"] for p in (b, r))
    say(f"accept round {index + 1}: backlog {b['rate']:.0f} msg/s, reference {r['rate']:.0f} "
        f"msg/s = {result['ratio']:.2f}x; daemon CPU per message {b['cpu_us']:.1f} / "
        f"{r['cpu_us']:.1f} us = {result['cpu_ratio']:.2f}x, net of idle {b['net_cpu_us']:.1f} / "
        f"{r['net_cpu_us']:.1f} us ({b['background']:.2f} / {r['background']:.2f} cores idle); "
        f"run-queue wait {b['wait_us']:.1f} / "
        f"{r['wait_us']:.1f} us; commit {b['commit_ms']:.2f} / {r['commit_ms']:.2f} ms, "
        f"{b['datasyncs']:.3f} / {r['datasyncs']:.3f} datasyncs per message; rest of the "
        f"machine {b['others_cores']:.2f} / {r['others_cores']:.2f} cores; backlog retries "
        f"(deferred) before / in the round {b['idle_deferred']:.0f} / {b['deferred']:.0f}, "
        f"reference {r['idle_deferred']:.0f} / {r['deferred']:.0f}; backlog "
        f"{b['envelope_reads']:.0f} envelope reads, "
        f"{b['snapshots']:.0f} / {r['snapshots']:.0f} journal snapshots, spool bytes written "
        f"per message {b['spool_bytes']:.0f} / {r['spool_bytes']:.0f}; "
        f"page cache dirty at the start {b['dirty_mb']:.0f} / {r['dirty_mb']:.0f} MB, written "
        f"back during the round {b['written_mb']:.0f} / {r['written_mb']:.0f} MB")
    return result


def spread(values, digits=2):
    """'median (min-max)' of a list of numbers (None: left out)."""
    values = sorted(v for v in values if v is not None)
    if not values:
        return "-"
    return (f"{values[len(values) // 2]:.{digits}f} ({values[0]:.{digits}f}-"
            f"{values[-1]:.{digits}f})")


def pooled_ratio(rounds):
    """The backlog daemon's CPU per message over the reference's, all rounds pooled (gross)."""
    def pooled(name):
        return (sum(r[name]["cpu_us"] * r[name]["accepted"] for r in rounds) /
                max(sum(r[name]["accepted"] for r in rounds), 1))
    return pooled("backlog") / max(pooled("reference"), 1e-9)


def accept_summary(rounds):
    say(f"accept with the backlog, side by side over {len(rounds)} rounds, median (min-max): "
        f"wall clock {spread([r['ratio'] for r in rounds])}x the empty queue; daemon CPU per "
        f"message {spread([r['cpu_ratio'] for r in rounds])}x, net of idle "
        f"{spread([r['net_ratio'] for r in rounds])}x; pooled (all rounds' CPU over all their "
        f"messages) {pooled_ratio(rounds):.2f}x")
    quiet = [r for r in rounds if r["quiet"]]
    if quiet:
        say(f"  the {len(quiet)} rounds without retries in either daemon: wall clock "
            f"{spread([r['ratio'] for r in quiet])}x, CPU per message "
            f"{spread([r['cpu_ratio'] for r in quiet])}x, pooled {pooled_ratio(quiet):.2f}x")
    # (key, unit, digits) of each daemon's per-round figures, as median (min-max).
    fields = [("rate", "msg/s", 0), ("cpu_us", "us CPU per message", 1),
              ("net_cpu_us", "us net of idle", 1), ("wait_us", "us run-queue wait", 1),
              ("commit_ms", "ms commit", 2), ("background", "cores idle", 2),
              ("client_us", "us blast client", 1)]
    for name in ("backlog", "reference"):
        per = [r[name] for r in rounds]
        threads = sorted({t for p in per for t in p["threads_us"]})
        say(f"  {name}: " + "; ".join(f"{spread([p[key] for p in per], digits)} {unit}"
                                      for key, unit, digits in fields) +
            "; per thread (us per message): " +
            ", ".join(f"{t} {spread([p['threads_us'].get(t, 0.0) for p in per], 1)}"
                      for t in threads))
        deferred = sum(p["idle_deferred"] for p in per)
        if deferred:
            say(f"  {name}: retry work in the idle windows: {sum(p['idle_cpu'] for p in per):.2f}"
                f" s CPU for {deferred:.0f} deferrals (all windows' CPU per deferral "
                f"{1e3 * sum(p['idle_cpu'] for p in per) / deferred:.2f} ms)")


def accept_profiles(args, daemons):
    """--accept-perf DIR: one more probe of each daemon under perf record (cpu-clock samples:
    this VM has no hardware counters), DIR/backlog.data and DIR/reference.data to diff."""
    os.makedirs(args.accept_perf, exist_ok=True)
    for name, daemon in daemons.items():
        output = os.path.join(args.accept_perf, f"{name}.data")
        perf = subprocess.Popen(["perf", "record", "-e", "cpu-clock", "-F",
                                 str(accept_cost.PERF_HZ), "-g", "-o", output, "-p",
                                 str(daemon.process.pid)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(1)  # perf attached to every thread
        got, rate = blast(args, daemon.port, "x" + name[0], args.accept_probe)
        perf.send_signal(signal.SIGINT)
        perf.wait(timeout=300)
        quiet_queue(daemon, 300)
        say(f"perf record of the {name} daemon over {got} messages ({rate:.0f} msg/s): {output}")


def suspend_all(args, daemon):
    """ringmta-ctl suspend of every destination (the admin API it calls), then the CPU of a
    backlog whose every destination is suspended: nothing to probe, nothing to wake."""
    t0 = time.monotonic()
    # 32 at once: each suspension is journaled (fdatasync) before it answers.
    with concurrent.futures.ThreadPoolExecutor(32) as pool:
        statuses = list(pool.map(lambda i: daemon.admin("POST", f"/queue/d{i}.test/suspend",
                                                        timeout=120)[0], range(args.domains)))
    failed = sum(status != 200 for status in statuses)
    say(f"suspended {args.domains - failed} destinations in {time.monotonic() - t0:.1f} s "
        f"({failed} refused)")
    for window in range(args.cpu_windows):
        cpu0 = cpu_seconds(daemon.process.pid)
        time.sleep(args.cpu_window)
        cpu = cpu_seconds(daemon.process.pid) - cpu0
        say(f"daemon CPU with every destination suspended, window {window + 1}: {cpu:.2f} s "
            f"over {args.cpu_window} s = {100 * cpu / args.cpu_window:.1f}% of a core")
    with concurrent.futures.ThreadPoolExecutor(32) as pool:
        list(pool.map(lambda i: daemon.admin("POST", f"/queue/d{i}.test/resume", timeout=120),
                      range(args.domains)))


def sink_start(args, port, work, runs):
    stats = os.path.join(work, "sink-stats.json")
    ready = os.path.join(work, "sink-ready")
    command = [args.sink, "--listen", f"127.0.0.3:{port}", "--threads", "2", "--stats-file",
               stats, "--ready-file", ready, "--max-connections", "100000"]
    for run, count in runs:
        command += ["--expect-ids", f"{run}:0-{count - 1}"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_until(lambda: os.path.exists(ready), 10, 0.05)
    return process, stats


def sink_stats(process, stats):
    sink_accepted(process, stats)  # SIGUSR1, then read
    try:
        with open(stats) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


class Fairness:
    """Delivered records per destination, read from the daemon's log as it grows."""

    def __init__(self, log):
        self.tail = LogTail(log)
        self.per_domain = {}
        self.snapshots = []  # (seconds, delivered, domains reached, min, max per domain)
        self.recovered = []  # queue_recovered records: (messages, seconds) per shard

    def update(self, seconds):
        for line in self.tail():
            if '"queue_recovered"' in line:
                try:
                    record = json.loads(line)
                    self.recovered.append((record.get("messages"), record.get("took")))
                except ValueError:
                    pass
                continue
            if '"delivered"' not in line:
                continue
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if record.get("event") == "delivered":
                domain = record.get("to", "").rsplit("@", 1)[-1].lower()
                self.per_domain[domain] = self.per_domain.get(domain, 0) + 1
        counts = self.per_domain.values()
        total = sum(counts)
        self.snapshots.append((seconds, total, len(self.per_domain),
                               min(counts) if counts else 0, max(counts) if counts else 0))


def max_connections(daemon):
    try:
        status, body = daemon.admin("GET", "/queue", timeout=30)
        queues = json.loads(body)
        if status != 200 or not isinstance(queues, list):
            return -1  # a shard busy past the admin API's wait: no sample this time
        return max((d.get("connections", 0) for d in queues), default=0)
    except (OSError, ValueError):
        return -1


def release_phase(args, work, dns, port, spool, total):
    before = spool_count(args, spool)
    say(f"spool ls with the daemon stopped: {before} messages (expected {total})")
    # A message the daemon accepted whose 250 the client missed (a timeout under load) is
    # queued but not in blast's count: drain until the sink has everything the spool holds.
    total = max(total, before)
    runs = [("w0", args.domains), ("p0", args.probe), ("bk", args.messages),
            ("p1", args.probe)] + [(f"q{i}", args.accept_probe) for i in range(args.accept_rounds)]
    if args.accept_perf and args.accept_rounds:
        runs.append(("xb", args.accept_probe))
    sink, stats = sink_start(args, port, work, runs)
    if args.cold:  # after spool ls, which read every segment back into the page cache
        subprocess.run(["sync"], check=True)
        with open("/proc/sys/vm/drop_caches", "w") as caches:
            caches.write("3\n")
        say("page cache dropped (sync; echo 3 > /proc/sys/vm/drop_caches): a cold restart")
    log = os.path.join(work, "ringmta-2.log")
    daemon = start_daemon(args, spool, dns, port, log)
    t0 = time.monotonic()
    daemon.start(timeout=args.restart_timeout)
    greeted = None
    if wait_until(lambda: greets(daemon.port), args.restart_timeout, 0.01):
        greeted = time.monotonic() - t0
    # CPU time as well as wall time: on a loaded machine the wall time is mostly waiting for
    # a core, the CPU time is the daemon's own work (all its threads).
    greet_cpu = cpu_seconds(daemon.process.pid)
    say(f"restart: greets after {greeted:.2f} s, daemon CPU until then {greet_cpu:.2f} s")
    first_connection = first_delivery = None
    fairness = Fairness(log)
    peak_connections = 0
    deadline = t0 + args.drain_timeout
    last_sample = 0.0
    while time.monotonic() < deadline:
        s = sink_stats(sink, stats)
        now = time.monotonic() - t0
        if first_connection is None and s.get("connections", 0) > 0:
            first_connection = now
        if first_delivery is None and s.get("accepted", 0) > 0:
            first_delivery = now
            say(f"restart: first connection at the sink after {first_connection:.2f} s, first "
                f"message accepted after {first_delivery:.2f} s (daemon CPU "
                f"{cpu_seconds(daemon.process.pid):.2f} s)")
        if now - last_sample >= 5:
            last_sample = now
            fairness.update(now)
            peak_connections = max(peak_connections, max_connections(daemon))
            seconds, delivered, reached, low, high = fairness.snapshots[-1]
            say(f"drain t={seconds:6.1f} s: sink {s.get('accepted', 0)}, delivered records "
                f"{delivered}, destinations reached {reached}/{args.domains}, per destination "
                f"min {low} max {high}; most connections to one destination {peak_connections}")
        if s.get("accepted", 0) >= total:
            break
        time.sleep(0.1 if first_delivery is None else 1.0)
    drained = time.monotonic() - t0
    s = sink_stats(sink, stats)
    fairness.update(drained)
    start = first_delivery or 0.0
    say(f"drained {s.get('accepted', 0)} of {total} in {drained - start:.1f} s after the first "
        f"delivery = {s.get('accepted', 0) / max(drained - start, 1e-9):.0f} msg/s; sink ids: "
        f"{s.get('distinct_ids')} distinct, {s.get('duplicates')} duplicate, "
        f"{s.get('missing')} missing; most connections to one destination "
        f"{peak_connections} (limit {args.per_destination})")
    if fairness.recovered:
        say("queue recovered (every queued message back in its destination's queue, per shard, "
            f"seconds after its relay started): {fairness.recovered}")
    halfway = next((snap for snap in fairness.snapshots if snap[1] >= total // 2), None)
    if halfway:
        say(f"fairness at half drained (t={halfway[0]:.0f} s): {halfway[2]}/{args.domains} "
            f"destinations had deliveries, per destination min {halfway[3]} max {halfway[4]} "
            f"(even share {total // 2 // args.domains})")
    daemon.stop(timeout=300)
    after = spool_count(args, spool)
    say(f"spool ls after the drain: {after} messages")
    sink.terminate()
    sink.wait(30)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("messages", nargs="?", type=int, default=1_000_000)
    parser.add_argument("--domains", type=int, default=10000)
    parser.add_argument("--probe", type=int, default=20000)
    parser.add_argument("--shards", type=int, default=2)
    parser.add_argument("--build", default=os.path.join(ROOT, "build"))
    parser.add_argument("--retry", default="1m")
    parser.add_argument("--per-destination", type=int, default=4)
    parser.add_argument("--cpu-window", type=int, default=30)
    parser.add_argument("--cpu-windows", type=int, default=4)
    parser.add_argument("--inject-timeout", type=int, default=1800)
    parser.add_argument("--restart-timeout", type=int, default=300)
    parser.add_argument("--drain-timeout", type=int, default=1800)
    parser.add_argument("--keep", action="store_true")
    parser.add_argument("--suspend", action="store_true",
                        help="then suspend every destination and measure the CPU again")
    parser.add_argument("--daemon-arg", action="append", default=[], metavar="ARG",
                        help="one more daemon argument (repeatable: --daemon-arg=--flag)")
    parser.add_argument("--perf", metavar="FILE",
                        help="perf record -g the daemon during the last CPU window into FILE")
    parser.add_argument("--heaptrack", metavar="FILE",
                        help="run the daemon under heaptrack, kill it after the warm-up and probe")
    parser.add_argument("--cold", action="store_true",
                        help="drop the page cache before the restart (root): recovery reads "
                             "the spool from the disk")
    parser.add_argument("--accept-rounds", type=int, default=0, metavar="K",
                        help="probe the backlog daemon and an empty-queue reference daemon in "
                             "turn, K rounds (the accept ratio side by side, and what each "
                             "daemon spends per accepted message: accept_cost.py)")
    parser.add_argument("--accept-probe", type=int, metavar="M",
                        help="messages per side-by-side round (default --probe)")
    parser.add_argument("--accept-idle", type=float, default=2.0, metavar="S",
                        help="seconds each daemon's idle CPU is measured before its round")
    parser.add_argument("--accept-perf", metavar="DIR",
                        help="after the rounds, one more probe of each daemon under perf "
                             "record: DIR/backlog.data, DIR/reference.data")
    parser.add_argument("--no-release", action="store_true",
                        help="stop after the backlog measurements (no restart, no drain)")
    args = parser.parse_args()
    args.accept_probe = args.accept_probe or args.probe
    if args.accept_idle <= 0 or args.accept_probe < 100:
        parser.error("--accept-idle must be > 0 and --accept-probe at least 100 (one session)")
    args.ringmta = os.path.join(args.build, "src/ringmta")
    args.blast = os.path.join(args.build, "tools/blast/ringmta-blast")
    args.sink = os.path.join(args.build, "tools/sink/ringmta-sink")
    work = tempfile.mkdtemp(prefix="ringmta-backlog-", dir="/var/tmp")
    print(f"# {time.strftime('%Y-%m-%dT%H:%M:%S')} {os.cpu_count()} CPUs, load {load()}; "
          f"{args.messages} messages of 1 KiB to {args.domains} domains; ringmta "
          f"{args.shards} shards; retry {args.retry}; work {work}", flush=True)
    dns = DnsSpec(args.domains, work)
    port = free_port("127.0.0.3")  # nothing listens here until the release
    try:
        spool, total = backlog_phase(args, work, dns, port)
        if not args.no_release and not args.heaptrack:
            release_phase(args, work, dns, port, spool, total)
    finally:
        dns.stop()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    main()
