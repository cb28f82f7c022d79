#!/usr/bin/env python3
"""Delivery outcomes when the spool journal's buffer is full (issue 15 review). The journal
buffers recipient-state marks until a flight makes them durable; past
spool.journal_buffer_size the spool refuses a mark (ENOBUFS). A refused mark used to be
dropped: the message stayed queued in the spool's index (its segment pinned until a restart)
and every recipient whose mark was lost was delivered again after the restart. With a buffer
of one record, a delivery of five recipients makes four marks wait: they must reach the spool
as the journal drains, so that the queue empties and a restart delivers nothing again.
usage: test_journal_full.py RINGMTA RINGMTA_SINK"""
import sys

from harness import Conversation, Daemon, Tap, free_port, spool_list
from peers import Sink, wait_until

tap = Tap()
ringmta, sink_binary = sys.argv[1:3]
messages, recipients = 12, 5
port = free_port("127.0.0.3")
sink = Sink(sink_binary, "127.0.0.3", port)
args = ["--route", f"good.test=127.0.0.3:{port}", "--spool-journal-buffer-size", "64"]


def send(daemon, n):
    c = Conversation(daemon.port)
    c.reply()
    c.command("EHLO client.test")
    codes = [c.command(f"MAIL FROM:<a{n}@client.test>")[0]]
    codes += [c.command(f"RCPT TO:<m{n}r{r}@good.test>")[0] for r in range(recipients)]
    codes.append(c.command("DATA")[0])
    codes.append(c.command(f"Subject: {n}\r\n\r\nbody {n}\r\n.")[0])
    c.command("QUIT")
    c.close()
    return codes


def delivered_recipients():
    return sorted(r for envelope, _ in sink.messages() for r in envelope["rcpt"])


expected = sorted(f"m{n}r{r}@good.test" for n in range(messages) for r in range(recipients))
first = Daemon(ringmta, args=args).start()
accepted = [send(first, n) for n in range(messages)]
tap.ok(all(codes == [250] * (recipients + 1) + [354, 250] for codes in accepted),
       f"{messages} messages of {recipients} recipients accepted")
tap.ok(wait_until(lambda: len(sink.messages()) >= messages, 30),
       "every message reaches the sink", len(sink.messages()))
tap.ok(wait_until(lambda: not spool_list(ringmta, first.spool), 30),
       "every recipient's final state reaches the spool: the queue empties",
       len(spool_list(ringmta, first.spool)))
tap.ok(wait_until(lambda: first.metrics().get("ringmta_spool_marks_waiting") == 0, 10),
       "no mark is left waiting", first.metrics().get("ringmta_spool_marks_waiting"))
tap.ok(first.stop() == 0, "clean exit")

second = Daemon(ringmta, spool=first.spool, args=args).start()
recovered = [e["detail"] for e in second.events("spool_recovered")]
tap.ok(recovered and all(": 0 queued," in d for d in recovered),
       "the restart recovers nothing to deliver", recovered)
# Whatever it recovered, it delivers (again) before the count below.
wait_until(lambda: not spool_list(ringmta, second.spool), 30)
tap.ok(second.stop() == 0, "second clean exit")
tap.ok(delivered_recipients() == expected,
       "each recipient delivered exactly once, none again after the restart",
       [r for r in delivered_recipients() if delivered_recipients().count(r) > 1][:5])
tap.done()
