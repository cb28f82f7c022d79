#!/usr/bin/env python3
"""Disk full: the spool on a small tmpfs fills up. Clients then get 452 4.3.1, never a 250;
the daemon keeps serving; when space returns, mail is accepted again; nothing acknowledged is
lost or damaged. usage: test_diskfull.py RINGMTA_BINARY (needs root for mount)"""
import os
import subprocess
import sys
import tempfile

from harness import Conversation, Daemon, Tap, dot_stuff, queued_id, test_message, verify_spool

tap = Tap()
binary = sys.argv[1]
point = tempfile.mkdtemp(prefix="ringmta-full-")
mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=7m", "tmpfs", point],
                         capture_output=True, text=True)
if mounted.returncode != 0:
    tap.skip_all(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")


def send(conversation, n):
    conversation.send(f"MAIL FROM:<load@client.test>\r\nRCPT TO:<n{n}@example.com>\r\nDATA\r\n")
    codes = [conversation.reply()[0] for _ in range(3)]
    if codes != [250, 250, 354]:
        return None, f"envelope refused: {codes}"
    conversation.send(dot_stuff(test_message("full", n)) + b".\r\n")
    return conversation.reply()


try:
    daemon = Daemon(binary, spool=os.path.join(point, "spool"), shards=1,
                    args=["--spool-segment-size", "1M"]).start()
    c = Conversation(daemon.port)
    c.reply()
    c.command("EHLO client.test")
    acked, replies = {}, []
    # test_message(n) is ~200 KiB when n % 4 == 3: 7 MiB fill within ~40 of them.
    numbers = iter(range(3, 4000, 4))
    while len(replies) < 100 and sum(1 for code, _ in replies if code == 452) < 5:
        n = next(numbers)
        code, text = send(c, n)
        replies.append((code, text))
        if code == 250:
            acked[n] = queued_id(text)
    codes = [code for code, _ in replies]
    first_full = codes.index(452) if 452 in codes else None
    tap.ok(first_full is not None and first_full > 0, "mail accepted, then 452 once the disk is full",
           codes)
    tap.ok(all("4.3.1" in text for code, text in replies if code == 452),
           "452 carries 4.3.1 (insufficient system storage)")
    tap.ok(first_full is not None and 250 not in codes[first_full:], "no 250 while the disk is full",
           codes)
    code, _ = c.command("NOOP")
    tap.ok(code == 250, "the session is still usable")
    tap.ok("ringmta_spool_failures_total" in daemon.metrics(), "the daemon still answers /metrics")

    subprocess.run(["mount", "-o", "remount,size=64m", point], check=True)
    resumed = []
    for _ in range(5):
        n = next(numbers)
        code, text = send(c, n)
        resumed.append(code)
        if code == 250:
            acked[n] = queued_id(text)
    tap.ok(resumed[-3:] == [250, 250, 250], "space is back: messages are accepted again", resumed)
    c.command("QUIT")
    tap.ok(daemon.stop() == 0, "clean exit")
    missing, corrupt, _ = verify_spool(binary, daemon.spool, "full", acked)
    tap.ok(not missing and not corrupt, "every acknowledged message is intact",
           f"missing {missing} corrupt {corrupt}")
finally:
    subprocess.run(["umount", "-l", point])
tap.done()
