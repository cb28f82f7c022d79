#!/usr/bin/env python3
"""Runs a real authoritative DNS server (NSD) on loopback with test zones, for tests.

  dns_server.py --zone example.test "@ MX 10 mx1" "mx1 A 127.0.0.2" \
                --zone nullmx.test "@ MX 0 ." --broken-zone broken.test
  dns_server.py --spec zones.json        # {"zones": {"example.test": ["@ MX 10 mx1", ...]},
                                         #  "broken_zones": ["broken.test"]}

Records are zone-file lines relative to the zone ("@" is the apex, names without a final dot
are inside the zone); an SOA (negative TTL = --negative-ttl) and an NS are added. A broken zone
is configured but its file does not load, so NSD answers SERVFAIL for it. Names outside every
zone get REFUSED.

Picks a free port on --address unless --port is given, starts NSD from a temporary directory
(as root or not: no chroot, no user switch), waits until it answers, then prints one line:
  READY <address> <port>
and keeps running until SIGTERM/SIGINT (or, with --stop-on-stdin-eof, until stdin closes, so a
test that dies never leaves NSD behind). It then stops NSD and removes the directory.
Exit status: 0 after a clean stop, 1 when NSD could not be started (its log goes to stderr).
"""
import argparse
import json
import os
import random
import select
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--address", default="127.0.0.1", help="IPv4 loopback address to serve on")
    parser.add_argument("--port", type=int, default=0, help="port (default: a free one)")
    parser.add_argument("--zone", nargs="+", action="append", default=[],
                        metavar=("NAME", "RECORD"), help="a zone and its record lines")
    parser.add_argument("--broken-zone", action="append", default=[], metavar="NAME",
                        help="a zone that fails to load (SERVFAIL)")
    parser.add_argument("--spec", help="JSON file with zones and broken_zones")
    parser.add_argument("--ttl", type=int, default=300, help="default TTL of records")
    parser.add_argument("--negative-ttl", type=int, default=60, help="SOA MINIMUM")
    parser.add_argument("--nsd", default=shutil.which("nsd") or "/usr/sbin/nsd")
    parser.add_argument("--stop-on-stdin-eof", action="store_true")
    parser.add_argument("--keep-dir", action="store_true", help="leave the temp dir (debug)")
    return parser.parse_args(argv)


def load_zones(args):
    zones = {}
    broken = list(args.broken_zone)
    if args.spec:
        with open(args.spec, encoding="utf-8") as spec_file:
            spec = json.load(spec_file)
        for name, records in spec.get("zones", {}).items():
            zones.setdefault(name.rstrip(".").lower(), []).extend(records)
        broken.extend(spec.get("broken_zones", []))
    for zone in args.zone:
        zones.setdefault(zone[0].rstrip(".").lower(), []).extend(zone[1:])
    if not zones and not broken:
        sys.exit("dns_server.py: no zone given (--zone, --broken-zone or --spec)")
    return zones, [name.rstrip(".").lower() for name in broken]


def zone_text(name, records, args):
    lines = [
        f"$ORIGIN {name}.",
        f"$TTL {args.ttl}",
        f"@ IN SOA ns.{name}. hostmaster.{name}. 1 3600 600 86400 {args.negative_ttl}",
        f"@ IN NS ns.{name}.",
        f"ns IN A {args.address}",
    ]
    lines.extend(records)
    return "\n".join(lines) + "\n"


def free_port(address):
    """A port free for both UDP and TCP right now (NSD binds it a moment later)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
            tcp.bind((address, 0))
            port = tcp.getsockname()[1]
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                try:
                    udp.bind((address, port))
                except OSError:
                    continue
            return port
    raise RuntimeError("no free port")


def write_config(workdir, zones, broken, port, args):
    conf = [
        "server:",
        f"  ip-address: {args.address}@{port}",
        f"  port: {port}",
        "  server-count: 1",
        '  username: ""',
        '  chroot: ""',
        f'  zonesdir: "{workdir}"',
        '  database: ""',
        f'  zonelistfile: "{workdir}/zone.list"',
        f'  xfrdfile: "{workdir}/xfrd.state"',
        f'  xfrdir: "{workdir}"',
        f'  pidfile: "{workdir}/nsd.pid"',
        f'  logfile: "{workdir}/nsd.log"',
        "  do-ip6: no",
        "  verbosity: 1",
        "  minimal-responses: no",
        "remote-control:",
        "  control-enable: no",
    ]
    for name, records in zones.items():
        with open(os.path.join(workdir, name + ".zone"), "w", encoding="utf-8") as zone_file:
            zone_file.write(zone_text(name, records, args))
        conf += ["zone:", f"  name: {name}", f"  zonefile: {name}.zone"]
    for name in broken:
        with open(os.path.join(workdir, name + ".zone"), "w", encoding="utf-8") as zone_file:
            zone_file.write("this is not a zone file\n")
        conf += ["zone:", f"  name: {name}", f"  zonefile: {name}.zone"]
    path = os.path.join(workdir, "nsd.conf")
    with open(path, "w", encoding="utf-8") as conf_file:
        conf_file.write("\n".join(conf) + "\n")
    return path


def soa_query(name):
    query_id = random.randrange(65536)
    header = struct.pack(">HHHHHH", query_id, 0x0100, 1, 0, 0, 0)
    labels = b"".join(bytes([len(p)]) + p.encode() for p in name.split(".") if p)
    return query_id, header + labels + b"\0" + struct.pack(">HH", 6, 1)


def wait_ready(address, port, zone, process, deadline_s=15.0):
    """True once NSD answers a SOA query for `zone` over UDP."""
    query_id, query = soa_query(zone)
    end = time.monotonic() + deadline_s
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        udp.settimeout(0.2)
        while time.monotonic() < end:
            if process.poll() is not None:
                return False
            try:
                udp.sendto(query, (address, port))
                reply, _ = udp.recvfrom(4096)
                if len(reply) >= 12 and struct.unpack(">H", reply[:2])[0] == query_id:
                    return True
            except OSError:
                time.sleep(0.1)
    return False


def start_nsd(workdir, zones, broken, args):
    probe_zone = next(iter(zones), None) or broken[0]
    for _ in range(5):  # a port picked free may be taken before NSD binds it: pick again
        port = args.port or free_port(args.address)
        conf = write_config(workdir, zones, broken, port, args)
        check = subprocess.run(["nsd-checkconf", conf], capture_output=True, text=True,
                               check=False)
        if check.returncode != 0:
            sys.stderr.write(check.stdout + check.stderr)
            return None, 0
        process = subprocess.Popen([args.nsd, "-d", "-c", conf], stdin=subprocess.DEVNULL,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if wait_ready(args.address, port, probe_zone, process):
            return process, port
        stop_nsd(process)
        if args.port:
            break
    return None, 0


def stop_nsd(process):
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def main(argv):
    args = parse_args(argv)
    zones, broken = load_zones(args)
    workdir = tempfile.mkdtemp(prefix="ringmta-nsd-")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    process, port = start_nsd(workdir, zones, broken, args)
    if process is None:
        log = os.path.join(workdir, "nsd.log")
        if os.path.exists(log):
            with open(log, encoding="utf-8", errors="replace") as log_file:
                sys.stderr.write(log_file.read())
        sys.stderr.write("dns_server.py: NSD did not start\n")
        shutil.rmtree(workdir, ignore_errors=True)
        return 1
    print(f"READY {args.address} {port}", flush=True)
    try:
        while not stop.is_set() and process.poll() is None:
            if args.stop_on_stdin_eof:
                readable, _, _ = select.select([sys.stdin], [], [], 0.2)
                if readable and not os.read(sys.stdin.fileno(), 4096):
                    break
            else:
                stop.wait(0.2)
    finally:
        stop_nsd(process)
        if args.keep_dir:
            sys.stderr.write(f"dns_server.py: kept {workdir}\n")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
