"""A deliberately lax SMTP server for smuggling tests: it ends a line at CR, at LF or at CRLF
(as vulnerable servers do), so any bare CR or bare LF that ringmta relays splits a line here,
and a "." line made of them ends the message early and lets the rest run as commands. It
records every message it accepts; tests check that nothing arrives that was not sent.

Offers PIPELINING, 8BITMIME and SIZE, not CHUNKING: ringmta then relays with DATA, the form
in which a missing final CRLF or a bare CR would hurt. Every wait is bounded."""
import re
import socket
import threading


class LaxDownstream:
    def __init__(self, address="127.0.0.1", reject=(), chunking=False):
        self.reject = set(reject)           # recipients answered 550 5.1.1
        self.chunking = chunking
        self.messages = []                  # dicts: sender, recipients, data (bytes), raw
        self.sessions = 0
        self.commands = []                  # every command line seen (bytes)
        self.lock = threading.Lock()
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind((address, 0))
        self.listener.listen(64)
        self.port = self.listener.getsockname()[1]
        self._stop = False
        threading.Thread(target=self._accept, daemon=True).start()

    def stop(self):
        self._stop = True
        self.listener.close()

    def snapshot(self):
        with self.lock:
            return list(self.messages)

    def _accept(self):
        while not self._stop:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    @staticmethod
    def _lines(conn, buffer):
        """Yields lines split at CR, LF or CRLF (the lax reading)."""
        while True:
            match = re.search(rb"\r\n|\r|\n", buffer[0])
            # A CR at the very end may be half of a CRLF still in flight: read on first.
            if match and not (match.group() == b"\r" and match.end() == len(buffer[0])):
                line = buffer[0][:match.start()]
                buffer[0] = buffer[0][match.end():]
                yield line
                continue
            chunk = conn.recv(65536)
            if not chunk:
                if buffer[0]:
                    yield buffer[0]
                return
            buffer[0] += chunk

    def _serve(self, conn):
        with self.lock:
            self.sessions += 1
        conn.settimeout(60)
        send = lambda text: conn.sendall(text.encode() + b"\r\n")
        try:
            send("220 lax.test ESMTP")
            buffer = [b""]
            lines = self._lines(conn, buffer)
            sender, recipients = None, []
            for line in lines:
                with self.lock:
                    self.commands.append(line)
                verb = line[:4].upper()
                if verb in (b"EHLO", b"HELO"):
                    extensions = ["PIPELINING", "8BITMIME", "SIZE 100000000"]
                    if self.chunking:
                        extensions.append("CHUNKING")
                    send("250-lax.test")
                    for i, extension in enumerate(extensions):
                        send(("250 " if i == len(extensions) - 1 else "250-") + extension)
                elif verb == b"MAIL":
                    m = re.match(rb"MAIL FROM:<([^>]*)>", line, re.I)
                    sender, recipients = (m.group(1).decode(errors="replace") if m else "?"), []
                    send("250 ok")
                elif verb == b"RCPT":
                    m = re.match(rb"RCPT TO:<([^>]*)>", line, re.I)
                    address = m.group(1).decode(errors="replace") if m else "?"
                    if address in self.reject:
                        send("550 5.1.1 no such user")
                    else:
                        recipients.append(address)
                        send("250 ok")
                elif verb == b"DATA":
                    send("354 go")
                    data = []
                    for body_line in lines:
                        if body_line == b".":
                            break
                        data.append(body_line[1:] if body_line.startswith(b".") else body_line)
                    with self.lock:
                        self.messages.append({"sender": sender, "recipients": recipients,
                                              "data": b"\r\n".join(data) + b"\r\n"})
                    sender, recipients = None, []
                    send("250 queued")
                elif verb == b"BDAT":
                    m = re.match(rb"BDAT (\d+)( LAST)?", line, re.I)
                    size = int(m.group(1))
                    while len(buffer[0]) < size:
                        chunk = conn.recv(65536)
                        if not chunk:
                            return
                        buffer[0] += chunk
                    data, buffer[0] = buffer[0][:size], buffer[0][size:]
                    with self.lock:
                        self.messages.append({"sender": sender, "recipients": recipients,
                                              "data": data})
                    send("250 ok")
                elif verb == b"QUIT":
                    send("221 bye")
                    return
                else:
                    send("250 ok")  # RSET, NOOP, and whatever else: lax
        except OSError:
            pass
        finally:
            conn.close()
