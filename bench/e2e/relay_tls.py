#!/usr/bin/env python3
"""End-to-end relay with TLS on the outbound leg, side by side in one run: 1 KiB messages to 100
destination domains (NSD: every MX on 127.0.0.3), injected by ringmta-blast (plaintext: the
inbound TLS leg is another branch's work), the clock running from the first message injected
until the receiver has every one of them.

The receiver is the same for every contender: stunnel (Debian's stunnel4, `protocol = smtp`:
it greets, offers STARTTLS, runs the server side of the handshake with OpenSSL and passes the
decrypted stream on) in front of ringmta-sink; or, with --tls-sink PATH, a ringmta-sink that
speaks STARTTLS itself (built from the branch that adds it: the inbound/load-tool TLS work). A
Python ssl sink would be the bottleneck, and Postfix's smtpd as receiver would cap both
contenders at its own rate. The receiver's CPU time is printed, so a saturated one shows.

  ringmta TLS:    ringmta-blast -> ringmta (--tls-policy required) -> stunnel -> ringmta-sink
  ringmta plain:  ringmta-blast -> ringmta (--tls-policy none) -> ringmta-sink   (reference)
  Postfix TLS:    ringmta-blast -> Postfix (smtp_tls_security_level = encrypt, relayhost =
                  the stunnel port; a private instance, tests/integration/tools/
                  postfix_instance.sh) -> stunnel -> ringmta-sink
  Postfix plain:  the same with smtp_tls_security_level = none (--postfix-plain; reference)

With --tls-in both legs are encrypted: ringmta-blast injects with STARTTLS (resumption on),
ringmta gets --tls-cert/--tls-key and Postfix smtpd_tls_security_level = may with the same
certificate, so both contenders pay the same inbound handshakes.

Neither contender verifies the certificate (required = Postfix's encrypt). The contenders
alternate within each round (--rounds), so a disturbance hits one round, not one contender.
usage: bench/e2e/relay_tls.py [MSGS=20000] [--rounds 2] [--postfix-msgs N] [--build build]
       [--shards 2] [--per-session 100] [--skip-postfix] [--postfix-reuse yes|no]
       [--tls-sink PATH] [--postfix-plain] [--tls-in]"""
import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "../.."))
sys.path.insert(0, HERE)
import relay  # noqa: E402  (puts the test harness on the path)
from harness import free_port  # noqa: E402
from peers import make_test_ca, wait_until  # noqa: E402

POSTFIX_INSTANCE = os.path.join(ROOT, "tests/integration/tools/postfix_instance.sh")


def cpu_seconds(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Receiver:
    """ringmta-sink on 127.0.0.3, and stunnel terminating STARTTLS in front of it; or one
    ringmta-sink offering STARTTLS itself (--tls-sink), both ports then the same."""

    def __init__(self, args, work, pki):
        self.sink_port = free_port("127.0.0.3")
        self.stunnel = None
        if args.tls_sink:
            self.tls_port = self.sink_port
            self.sink, self.stats = relay.sink_start(
                args.tls_sink, self.sink_port, work, ["--tls-cert", pki["cert"],
                                                      "--tls-key", pki["key"]])
            return
        self.tls_port = free_port("127.0.0.3")
        self.sink, self.stats = relay.sink_start(args.sink, self.sink_port, work)
        conf = os.path.join(work, "stunnel.conf")
        with open(conf, "w") as f:
            f.write(f"foreground = yes\npid =\ndebug = 3\n[smtp]\n"
                    f"accept = 127.0.0.3:{self.tls_port}\nconnect = 127.0.0.3:{self.sink_port}\n"
                    f"protocol = smtp\ncert = {pki['cert']}\nkey = {pki['key']}\n")
        self.stunnel = subprocess.Popen(["stunnel", conf], stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL)
        wait_until(lambda: subprocess.run(["ss", "-Hltn", f"sport = :{self.tls_port}"],
                                          capture_output=True, text=True).stdout.strip(), 10, 0.05)

    def accepted(self):
        return relay.sink_accepted(self.sink, self.stats)

    def cpu(self):
        """CPU seconds of (the TLS end, the sink): the same process with --tls-sink."""
        tls_end = self.stunnel or self.sink
        return cpu_seconds(tls_end.pid), cpu_seconds(self.sink.pid)

    def stop(self):
        for process in (self.stunnel, self.sink):
            if process is not None:
                process.terminate()
                process.wait(30)


def injector_tls(args):
    """ringmta-blast's flags for the inbound leg: STARTTLS (with resumption) under --tls-in."""
    return ["--starttls"] if args.tls_in else []


def run_ringmta(args, work, dns, pki, tls):
    receiver = Receiver(args, work, pki)
    port = receiver.tls_port if tls else receiver.sink_port
    inbound = ["--tls-cert", pki["cert"], "--tls-key", pki["key"]] if args.tls_in else []
    daemon = relay.start_ringmta(args.ringmta, args.shards, dns, port,
                                 ["--tls-policy", "required" if tls else "none"] + inbound)
    cpu_before = cpu_seconds(daemon.process.pid)
    t0 = time.monotonic()
    relay.blast(args.blast, f"127.0.0.1:{daemon.port}", args.msgs, args.per_session,
                injector_tls(args))
    done = wait_until(lambda: receiver.accepted() >= args.msgs, 600, 0.05)
    elapsed = time.monotonic() - t0
    result = {"rate": args.msgs / elapsed if done else 0.0, "got": receiver.accepted(),
              "cpu_us": (cpu_seconds(daemon.process.pid) - cpu_before) * 1e6 / args.msgs,
              "receiver_cpu": receiver.cpu(), "elapsed": elapsed}
    if tls:
        metrics = daemon.metrics()
        result["handshakes"] = int(metrics.get("ringmta_outbound_tls_handshakes_total", 0))
        result["resumed"] = int(metrics.get("ringmta_outbound_tls_resumptions_total", 0))
    daemon.stop()
    receiver.stop()
    return result


def run_postfix(args, work, pki, tls):
    receiver = Receiver(args, work, pki)
    instance = os.path.join(work, "postfix")
    shutil.rmtree(instance, ignore_errors=True)
    os.makedirs(instance)
    os.chmod(instance, 0o755)
    port = free_port()
    main_cf = os.path.join(work, "postfix-main.cf")
    with open(main_cf, "w") as f:  # the settings of ../shared/peers/postfix.sh, plus TLS out
        f.write(f"relayhost = [127.0.0.3]:{receiver.tls_port if tls else receiver.sink_port}\n"
                f"smtp_tls_security_level = {'encrypt' if tls else 'none'}\n"
                "smtp_tls_loglevel = 1\n"
                f"smtp_tls_connection_reuse = {args.postfix_reuse}\n"
                "default_process_limit = 200\n"
                "default_destination_concurrency_limit = 50\n"
                "smtp_destination_concurrency_limit = 50\n"
                "qmgr_message_active_limit = 40000\n")
        if args.tls_in:
            f.write(f"smtpd_tls_security_level = may\nsmtpd_tls_cert_file = {pki['cert']}\n"
                    f"smtpd_tls_key_file = {pki['key']}\n")
    master_cf = os.path.join(work, "postfix-master.cf")
    with open(master_cf, "w") as f:
        f.write("tlsproxy unix - - n - 0 tlsproxy\n")
    started = subprocess.run([POSTFIX_INSTANCE, "start", instance, str(port),
                              str(receiver.tls_port), main_cf, master_cf],
                             capture_output=True, text=True)
    if started.returncode != 0:
        receiver.stop()
        print("# Postfix did not start:", started.stderr.strip()[-500:])
        return None
    wait_until(lambda: subprocess.run(["ss", "-Hltn", f"sport = :{port}"], capture_output=True,
                                      text=True).stdout.strip(), 15, 0.1)
    msgs = args.postfix_msgs or args.msgs
    t0 = time.monotonic()
    relay.blast(args.blast, f"127.0.0.1:{port}", msgs, args.per_session, injector_tls(args))
    done = wait_until(lambda: receiver.accepted() >= msgs, 1800, 0.2)
    elapsed = time.monotonic() - t0
    got = receiver.accepted()
    receiver_cpu = receiver.cpu()
    with open(os.path.join(instance, "maillog"), errors="replace") as f:
        log = f.read()
    subprocess.run([POSTFIX_INSTANCE, "stop", instance], capture_output=True)
    receiver.stop()
    return {"rate": msgs / elapsed if done else 0.0, "got": got, "msgs": msgs,
            "receiver_cpu": receiver_cpu, "elapsed": elapsed,
            "tls_logged": log.count("TLS connection established to")}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("msgs", nargs="?", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--postfix-msgs", type=int, default=0)
    parser.add_argument("--build", default=os.path.join(ROOT, "build"))
    parser.add_argument("--shards", type=int, default=2)
    parser.add_argument("--per-session", type=int, default=100)
    parser.add_argument("--skip-postfix", action="store_true")
    parser.add_argument("--postfix-reuse", default="yes", choices=["yes", "no"])
    parser.add_argument("--tls-sink", default="", help="a ringmta-sink with --tls-cert")
    parser.add_argument("--postfix-plain", action="store_true")
    parser.add_argument("--tls-in", action="store_true", help="inject with STARTTLS too")
    args = parser.parse_args()
    args.ringmta = os.path.join(args.build, "src/ringmta")
    args.blast = os.path.join(args.build, "tools/blast/ringmta-blast")
    args.sink = os.path.join(args.build, "tools/sink/ringmta-sink")
    work = tempfile.mkdtemp(prefix="ringmta-relay-tls-bench-")
    os.chmod(work, 0o755)
    pki = make_test_ca(os.path.join(work, "pki"), ["mx.test", "127.0.0.3"])
    dns = relay.start_dns()
    with open("/proc/loadavg") as f:
        load = " ".join(f.read().split()[:3])
    print(f"# {time.strftime('%Y-%m-%dT%H:%M:%S')} {os.cpu_count()} CPUs, load {load}; "
          f"{args.msgs} messages of 1 KiB to 100 domains, {args.per_session} per injected "
          f"connection; ringmta {args.shards} shards; receiver "
          f"{args.tls_sink + ' (STARTTLS)' if args.tls_sink else 'stunnel -> ringmta-sink'}; "
          f"inbound leg {'STARTTLS' if args.tls_in else 'plaintext'}")
    for round_number in range(1, args.rounds + 1):
        tls = run_ringmta(args, work, dns, pki, True)
        plain = run_ringmta(args, work, dns, pki, False)
        postfix = None if args.skip_postfix else run_postfix(args, work, pki, True)
        postfix_plain = run_postfix(args, work, pki, False) if args.postfix_plain else None
        print(f"round {round_number}:")
        print(f"  ringmta, TLS out:    {tls['rate']:8.0f} msg/s ({tls['got']} received; "
              f"ringmta {tls['cpu_us']:.0f} us CPU/msg; {tls['handshakes']} handshakes, "
              f"{tls['resumed']} resumed; receiver TLS end {tls['receiver_cpu'][0]:.1f} s CPU, "
              f"sink {tls['receiver_cpu'][1]:.1f} s in {tls['elapsed']:.1f} s)")
        print(f"  ringmta, plain out:  {plain['rate']:8.0f} msg/s ({plain['got']} received; "
              f"ringmta {plain['cpu_us']:.0f} us CPU/msg) -> TLS costs "
              f"{1 - tls['rate'] / plain['rate']:.0%} of the rate" if plain["rate"] else
              "  ringmta, plain out: did not finish")
        if postfix:
            ratio = tls["rate"] / postfix["rate"] if postfix["rate"] else float("inf")
            print(f"  Postfix, TLS out:    {postfix['rate']:8.0f} msg/s ({postfix['got']} of "
                  f"{postfix['msgs']} received; {postfix['tls_logged']} TLS connections "
                  f"logged; receiver TLS end {postfix['receiver_cpu'][0]:.1f} s CPU in "
                  f"{postfix['elapsed']:.1f} s) -> ringmta = {ratio:.1f}x Postfix")
        if postfix_plain:
            print(f"  Postfix, plain out:  {postfix_plain['rate']:8.0f} msg/s "
                  f"({postfix_plain['got']} of {postfix_plain['msgs']} received)")
        sys.stdout.flush()
    dns.stop()
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
