#!/usr/bin/env python3
"""A client that sends its end of data and leaves at once, before the reply (the orphan path
of inbound_sessions.cc). The message may be durable by then: the spool decides without the
client. A durable one must be delivered (the client may send it again: a duplicate, as after
a lost 250, RFC 1047), logged with what a 250's record says plus "answered": false, and
counted; none may stay queued until a restart.
usage: test_client_gone.py RINGMTA RINGMTA_SINK"""
import sys

from harness import Conversation, Daemon, Tap, free_port, spool_list
from peers import Sink, wait_until

tap = Tap()
ringmta, sink_binary = sys.argv[1:3]
messages = 30
port = free_port("127.0.0.3")
sink = Sink(sink_binary, "127.0.0.3", port)
daemon = Daemon(ringmta, args=["--route", f"good.test=127.0.0.3:{port}"]).start()

for n in range(messages):
    c = Conversation(daemon.port)
    c.reply()
    c.command("EHLO client.test")
    c.command("MAIL FROM:<a@client.test>")
    c.command(f"RCPT TO:<gone{n}@good.test>")
    c.command("DATA")
    c.sock.sendall(f"Subject: {n}\r\n\r\nbody {n}\r\n.\r\n".encode())
    c.sock.close()  # before the reply to the final dot


def counts():
    m = daemon.metrics()
    return (m.get('ringmta_messages_unanswered_total{outcome="durable"}', 0),
            m.get('ringmta_messages_unanswered_total{outcome="failed"}', 0),
            m.get("ringmta_messages_accepted_total", 0))


tap.ok(wait_until(lambda: sum(counts()) == messages, 20),
       "each message counted: unanswered (durable or failed) or answered 250", counts())
durable, failed, answered = counts()
tap.ok(durable >= 1, "the client left before the verdict at least once (the path is exercised)",
       counts())
tap.ok(failed == 0, "no commit failed")
tap.ok(wait_until(lambda: len(sink.messages()) == messages, 30),
       "every durable message is delivered, unanswered ones too", len(sink.messages()))
delivered = sorted(r for envelope, _ in sink.messages() for r in envelope["rcpt"])
tap.ok(delivered == sorted(f"gone{n}@good.test" for n in range(messages)),
       "each recipient exactly once")
unanswered = [e for e in daemon.events("received") if e.get("answered") is False]
tap.ok(len(unanswered) == durable and
       all(e.get("size", 0) > 0 and e.get("protocol") == "ESMTP" and e.get("client")
           for e in unanswered),
       "each unanswered one logged as received, with size and protocol, answered: false",
       unanswered[:1])
tap.ok(wait_until(lambda: not spool_list(ringmta, daemon.spool), 20), "nothing stays queued",
       [m["id"] for m in spool_list(ringmta, daemon.spool)][:5])
tap.ok(daemon.stop() == 0, "clean exit")
tap.done()
