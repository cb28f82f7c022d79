#!/usr/bin/env python3
"""A scripted SMTP server for the outbound tests: records what arrives, byte for byte.

  scripted_sink.py --listen 127.0.0.3 [--listen 127.0.0.4 ...] --save-dir DIR [options]

Listens on every --listen address with one port (--port, or the one the OS gives the first
address), prints "READY <port>" and serves until SIGTERM/SIGINT or, with --stop-on-stdin-eof,
until stdin closes. Per accepted message it writes DIR/msg-<n>.eml (the body as the client meant
it: dot-unstuffed) and DIR/msg-<n>.json (envelope, listener and client addresses, connection
number); after
every change it rewrites DIR/stats.json (connections per address, messages, QUITs, and two
pipelining observations: commands that arrived while an earlier command was still unanswered,
counted as pipelined when PIPELINING was offered and as early otherwise).

Options script the replies: no PIPELINING / 8BITMIME, a SIZE limit, RCPT rejections by local-part
prefix, a greeting per address (e.g. 554), a silent address (accepts, never greets), the reply
to end of data, and faults inside DATA (reply early and close, or just close).

STARTTLS (RFC 3207) with --tls-cert/--tls-key (Python's ssl module): offered before TLS only,
and scripted: --tls-reply (e.g. "454 4.7.0 not now"), --tls-inject TEXT (sent after the 220 in
the same packet: response injection), --tls-broken (plaintext junk instead of a handshake, then
close), --tls-silent (220, then nothing). stats.json counts starttls, handshakes (and resumed
ones), ehlo and mail commands; each message record says whether it came over TLS.
"""
import argparse
import json
import os
import re
import select
import signal
import socket
import ssl
import sys
import threading


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--listen", action="append", required=True, help="IPv4 address to listen on")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--save-dir", required=True)
    p.add_argument("--no-pipelining", action="store_true")
    p.add_argument("--no-8bitmime", action="store_true")
    p.add_argument("--size", type=int, default=0, help="SIZE limit to announce (0: plain SIZE)")
    p.add_argument("--reject-rcpt", action="append", default=[], metavar="PREFIX=REPLY",
                   help='e.g. "bad=550 5.1.1 no such user": RCPT whose local part starts so')
    p.add_argument("--greeting", action="append", default=[], metavar="ADDRESS=REPLY",
                   help='greeting of one listener, e.g. "127.0.0.2=554 5.7.1 go away"')
    p.add_argument("--silent", action="append", default=[], metavar="ADDRESS",
                   help="accept on this listener but never greet")
    p.add_argument("--data-reply", default="250 2.0.0 Ok: queued", help="reply to end of data")
    p.add_argument("--reply-in-data", default="", metavar="REPLY",
                   help="send this reply after the first body bytes, then close")
    p.add_argument("--close-in-data", action="store_true",
                   help="close after the first body bytes without a reply")
    p.add_argument("--stop-on-stdin-eof", action="store_true")
    p.add_argument("--tls-cert", default="", help="PEM chain: offer STARTTLS")
    p.add_argument("--tls-key", default="")
    p.add_argument("--tls-reply", default="220 2.0.0 Ready to start TLS")
    p.add_argument("--tls-inject", default="", help="plaintext sent right after the 220")
    p.add_argument("--tls-broken", action="store_true", help="junk instead of a handshake")
    p.add_argument("--tls-silent", action="store_true", help="never start the handshake")
    return p.parse_args(argv)


class sink:
    def __init__(self, args):
        self.args = args
        self.lock = threading.Lock()
        self.stats = {"connections": {}, "messages": 0, "quits": 0, "pipelined_commands": 0,
                      "early_commands": 0, "rsets": 0, "aborted_data": 0, "starttls": 0,
                      "handshakes": 0, "resumed": 0, "ehlo": 0, "mail": 0}
        self.tls = None
        if args.tls_cert:
            self.tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            self.tls.load_cert_chain(args.tls_cert, args.tls_key)
        self.next_connection = 0
        self.rejections = []
        for rule in args.reject_rcpt:
            prefix, reply = rule.split("=", 1)
            self.rejections.append((prefix.lower(), reply))
        self.greetings = dict(rule.split("=", 1) for rule in args.greeting)
        os.makedirs(args.save_dir, exist_ok=True)
        self.write_stats()

    def write_stats(self):
        path = os.path.join(self.args.save_dir, "stats.json")
        with open(path + ".tmp", "w", encoding="utf-8") as out:
            json.dump(self.stats, out)
        os.replace(path + ".tmp", path)

    def count(self, key, amount=1):
        with self.lock:
            self.stats[key] += amount
            self.write_stats()

    def new_connection(self, address):
        with self.lock:
            self.next_connection += 1
            self.stats["connections"][address] = self.stats["connections"].get(address, 0) + 1
            self.write_stats()
            return self.next_connection

    def save(self, record, body):
        with self.lock:
            self.stats["messages"] += 1
            number = self.stats["messages"]
            base = os.path.join(self.args.save_dir, f"msg-{number}")
            with open(base + ".eml", "wb") as out:
                out.write(body)
            with open(base + ".json", "w", encoding="utf-8") as out:
                json.dump(record, out)
            self.write_stats()

    def ehlo_lines(self, tls_active=False):
        lines = ["sink.test"]
        if self.tls is not None and not tls_active:
            lines.append("STARTTLS")
        if not self.args.no_pipelining:
            lines.append("PIPELINING")
        lines.append(f"SIZE {self.args.size}" if self.args.size else "SIZE")
        if not self.args.no_8bitmime:
            lines.append("8BITMIME")
        lines += ["ENHANCEDSTATUSCODES", "DSN"]
        return "".join(f"250{'-' if i + 1 < len(lines) else ' '}{line}\r\n"
                       for i, line in enumerate(lines))


class session:
    def __init__(self, owner, conn, address):
        self.owner = owner
        self.conn = conn
        self.address = address
        self.buf = bytearray()
        self.number = owner.new_connection(address)
        self.tls = None  # (version, cipher) once STARTTLS completed

    def fill(self):
        data = self.conn.recv(1 << 20)
        if not data:
            raise EOFError
        self.buf += data

    def line(self):
        while True:
            end = self.buf.find(b"\r\n")
            if end >= 0:
                text = bytes(self.buf[:end])
                del self.buf[:end + 2]
                return text.decode("utf-8", "replace")
            self.fill()

    def send(self, text):
        self.conn.sendall(text.encode() if isinstance(text, str) else text)

    def run(self):
        args = self.owner.args
        if self.address in args.silent:
            while self.conn.recv(4096):
                pass
            return
        greeting = self.owner.greetings.get(self.address, "220 sink.test ESMTP scripted")
        self.send(greeting + "\r\n")
        if not greeting.startswith("220"):
            self.line()  # QUIT, probably
            self.send("221 2.0.0 Bye\r\n")
            return
        mail = None
        rcpts = []
        while True:
            command = self.line()
            if self.buf:  # another command already here while this one is unanswered
                self.owner.count("early_commands" if args.no_pipelining else "pipelined_commands")
            verb = command[:4].upper()
            if verb == "EHLO":
                self.owner.count("ehlo")
                self.send(self.owner.ehlo_lines(self.tls is not None))
            elif verb == "STAR" and command.upper() == "STARTTLS" and self.owner.tls is not None \
                    and self.tls is None:
                if not self.starttls():
                    return
                mail, rcpts = None, []  # RFC 3207 §4.2: the session starts over
            elif verb == "HELO":
                self.send("250 sink.test\r\n")
            elif verb == "MAIL":
                self.owner.count("mail")
                mail, rcpts = command, []
                self.send("250 2.1.0 Ok\r\n")
            elif verb == "RCPT":
                self.rcpt(command, rcpts)
            elif verb == "DATA":
                if mail is None or not rcpts:
                    self.send("554 5.5.1 No valid recipients\r\n")
                    continue
                self.send("354 End data with <CR><LF>.<CR><LF>\r\n")
                if not self.data(mail, rcpts):
                    return
                mail, rcpts = None, []
            elif verb == "RSET":
                mail, rcpts = None, []
                self.owner.count("rsets")
                self.send("250 2.0.0 Ok\r\n")
            elif verb == "NOOP":
                self.send("250 2.0.0 Ok\r\n")
            elif verb == "QUIT":
                self.owner.count("quits")
                self.send("221 2.0.0 Bye\r\n")
                return
            else:
                self.send("502 5.5.2 Error: command not recognized\r\n")

    def starttls(self):
        """True when the session goes on over TLS."""
        args = self.owner.args
        self.owner.count("starttls")
        reply = args.tls_reply + "\r\n"
        if not args.tls_reply.startswith("220"):
            self.send(reply)
            return True
        # One send: a server (or a man in the middle) pipelining plaintext behind its 220.
        self.send(reply + (args.tls_inject + "\r\n" if args.tls_inject else ""))
        self.buf.clear()  # RFC 3207 §4.2 (server side): nothing pipelined before TLS counts
        if args.tls_silent:
            while self.conn.recv(4096):
                pass
            return False
        if args.tls_broken:
            self.conn.recv(4096)  # the ClientHello
            self.send("this is not TLS\r\n")
            return False
        self.conn = self.owner.tls.wrap_socket(self.conn, server_side=True)
        self.tls = (self.conn.version(), self.conn.cipher()[0])
        self.owner.count("handshakes")
        if self.conn.session_reused:
            self.owner.count("resumed")
        return True

    def rcpt(self, command, rcpts):
        match = re.search(r"<([^>]*)>", command)
        address = match.group(1) if match else ""
        local = address.split("@", 1)[0].lower()
        for prefix, reply in self.owner.rejections:
            if local.startswith(prefix):
                self.send(reply + "\r\n")
                return
        rcpts.append(command)
        self.send("250 2.1.5 Ok\r\n")

    def data(self, mail, rcpts):
        args = self.owner.args
        if args.reply_in_data or args.close_in_data:
            while not self.buf:
                self.fill()
            self.owner.count("aborted_data")
            if args.reply_in_data:
                self.send(args.reply_in_data + "\r\n")
            return False
        start = 0
        while True:
            if self.buf.startswith(b".\r\n"):  # an empty body
                end, body_end = 0, 0
                break
            end = self.buf.find(b"\r\n.\r\n", start)
            if end >= 0:
                body_end = end + 2
                break
            start = max(0, len(self.buf) - 4)
            self.fill()
        wire = bytes(self.buf[:body_end])
        del self.buf[:body_end + 3]
        body = re.sub(rb"(\A|\n)\.", rb"\1", wire)  # RFC 5321 §4.5.2: remove the added dot
        record = {"mail": mail, "rcpts": rcpts, "address": self.address,
                  "connection": self.number, "peer": self.conn.getpeername()[0],
                  "tls": list(self.tls) if self.tls else None}
        self.owner.save(record, body)
        self.send(args.data_reply + "\r\n")
        return True


def serve(owner, listener, address):
    while True:
        try:
            conn, _ = listener.accept()
        except OSError:
            return
        def handle(conn=conn):
            try:
                session(owner, conn, address).run()
            except (EOFError, OSError):
                pass
            finally:
                conn.close()
        threading.Thread(target=handle, daemon=True).start()


def main(argv):
    args = parse_args(argv)
    owner = sink(args)
    listeners = []
    port = args.port
    for address in args.listen:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((address, port))
        s.listen(128)
        port = s.getsockname()[1]
        listeners.append((s, address))
    for s, address in listeners:
        threading.Thread(target=serve, args=(owner, s, address), daemon=True).start()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    print(f"READY {port}", flush=True)
    while not stop.is_set():
        if args.stop_on_stdin_eof:
            readable, _, _ = select.select([sys.stdin], [], [], 0.2)
            if readable and not os.read(sys.stdin.fileno(), 4096):
                break
        else:
            stop.wait(0.2)
    for s, _ in listeners:
        s.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
