#!/usr/bin/env python3
"""Writes the seed corpus of fuzz_smtp_client (tests/fuzz/corpus/smtp_client/seed-*).

Each seed is a config byte and a program of operations in the target's encoding (see
fuzz_smtp_client.cc): op byte = choice << 3 | kind; kind 0 feeds canned line `index`
(next byte), 3 feeds raw bytes, 4 sends part of the output, 5 holds output, 6 times out,
7 closes. `choice` picks the envelope (7 = QUIT) when `ready` comes during that op.
Run from the repository root: python3 tests/fuzz/smtp_client/make_seeds.py
"""
import os

LINES = [
    "220 mx.example ESMTP", "220-mx.example", "250 ok", "250-mx.example", "250-PIPELINING",
    "250-SIZE 1000", "250-SIZE", "250-8BITMIME", "250-SMTPUTF8", "250-DSN", "250-STARTTLS",
    "250-ENHANCEDSTATUSCODES", "250-AUTH PLAIN LOGIN", "250 CHUNKING", "354 go ahead",
    "221 2.0.0 bye", "421 4.4.2 closing", "450 4.2.0 busy", "451 4.3.0 later",
    "452 4.5.3 too many recipients", "500 what", "502 5.5.1 no", "503 5.5.1 bad sequence",
    "550 5.1.1 unknown", "552 5.3.4 too big", "554 5.7.1 no", "250 2.1.5 ok",
    "220 2.0.0 ready for TLS", "250 PIPELINING", "334 VXNlcm5hbWU6", "250-",
    "235 2.7.0 ok", "535 5.7.8 bad credentials", "250-AUTH LOGIN", "454 4.7.0 later",
]

PIPELINING, PLAIN, OPPORTUNISTIC, REQUIRED = 0xF1, 0xF0, 0xF3, 0xF5
# With AUTH credentials (relay / s3cret): sent in plaintext; over TLS only (required policy).
AUTH_PLAINTEXT, AUTH_OVER_TLS = 0xFD, 0xF9


def line(text, choice=0):
    return bytes([(choice << 3) | 0, LINES.index(text)])


def raw(data, choice=0):
    out = b""
    while data:
        piece, data = data[:64], data[64:]
        out += bytes([(choice << 3) | 3, len(piece) - 1]) + piece
    return out


def op(kind, choice=0):
    return bytes([(choice << 3) | kind])


def ehlo(*extensions, choice=0):
    out = line("250-mx.example")
    for extension in extensions:
        out += line(extension)
    return out + line("250 ok", choice)


def seeds():
    quit_ = 7
    yield "auth-plain", bytes([AUTH_PLAINTEXT]) + line("220 mx.example ESMTP") + ehlo(
        "250-AUTH PLAIN LOGIN") + line("235 2.7.0 ok", quit_) + line("221 2.0.0 bye")
    yield "auth-login", bytes([AUTH_PLAINTEXT]) + line("220 mx.example ESMTP") + ehlo(
        "250-AUTH LOGIN") + line("334 VXNlcm5hbWU6") + line("334 VXNlcm5hbWU6") + line(
        "235 2.7.0 ok", quit_) + line("221 2.0.0 bye")
    yield "auth-refused", bytes([AUTH_PLAINTEXT]) + line("220 mx.example ESMTP") + ehlo(
        "250-AUTH PLAIN LOGIN") + line("535 5.7.8 bad credentials")
    yield "auth-over-tls", bytes([AUTH_OVER_TLS]) + line("220 mx.example ESMTP") + ehlo(
        "250-STARTTLS", "250-AUTH LOGIN") + line("220 2.0.0 ready for TLS", 1) + ehlo(
        "250-AUTH PLAIN LOGIN") + line("235 2.7.0 ok", quit_) + line("221 2.0.0 bye")
    yield "pipelined-mixed", bytes([PIPELINING]) + line("220 mx.example ESMTP") + ehlo(
        "250-PIPELINING", "250-SIZE 1000", "250-DSN", "250-8BITMIME") + line("250 ok") + line(
        "250 2.1.5 ok") + line("250 2.1.5 ok") + line("550 5.1.1 unknown") + line(
        "354 go ahead") + line("250 ok", quit_) + line("221 2.0.0 bye")
    yield "plain-one-at-a-time", bytes([PLAIN]) + line("220-mx.example") + line(
        "220 mx.example ESMTP") + ehlo("250-SIZE", "250-ENHANCEDSTATUSCODES") + line(
        "250 ok") + line("250 2.1.5 ok") + line("450 4.2.0 busy") + line(
        "250 2.1.5 ok") + line("354 go ahead") + line("250 ok", 4) + line("250 ok") + line(
        "250 ok") + line("354 go ahead") + line("250 ok", quit_) + line("221 2.0.0 bye")
    yield "helo-fallback", bytes([PIPELINING]) + line("220 mx.example ESMTP") + line(
        "502 5.5.1 no") + line("250 ok", 1) + line("250 ok") + line("250 ok") + line(
        "250 ok") + line("354 go ahead") + line("250 ok", quit_) + line("221 2.0.0 bye")
    yield "mail-refused-pipelined", bytes([PIPELINING]) + line("220 mx.example ESMTP") + ehlo(
        "250-PIPELINING") + line("550 5.1.1 unknown") + line("503 5.5.1 bad sequence") * 3 + line(
        "503 5.5.1 bad sequence", quit_) + line("221 2.0.0 bye")
    yield "no-recipients-lone-dot", bytes([PIPELINING]) + line("220 mx.example ESMTP") + ehlo(
        "250-PIPELINING") + line("250 ok") + line("550 5.1.1 unknown") * 3 + line(
        "354 go ahead") + line("554 5.7.1 no", 0) + line("250 ok") + line("250 ok") + line(
        "250 2.1.5 ok") + line("250 2.1.5 ok") + line("250 2.1.5 ok") + line("354 go ahead") + line(
        "250 ok", quit_) + line("221 2.0.0 bye")
    yield "starttls", bytes([OPPORTUNISTIC]) + line("220 mx.example ESMTP") + ehlo(
        "250-STARTTLS", "250-SIZE 1000") + line("220 2.0.0 ready for TLS", 1) + ehlo(
        "250-PIPELINING", choice=quit_) + line("221 2.0.0 bye")
    yield "starttls-required-refused", bytes([REQUIRED]) + line("220 mx.example ESMTP") + ehlo(
        "250-STARTTLS") + line("554 5.7.1 no")
    yield "size-and-8bit-local", bytes([PIPELINING]) + line("220 mx.example ESMTP") + ehlo(
        "250-PIPELINING", "250-SIZE 1000", choice=5) + line("250 ok", 4)
    yield "utf8-and-invalid", bytes([PIPELINING]) + line("220 mx.example ESMTP") + ehlo(
        "250-PIPELINING", "250-SMTPUTF8", "250-DSN", choice=3) + line("250 ok") + line(
        "250 ok") + line("354 go ahead") + line("250 ok", 1) + line("250 ok") + line(
        "250 ok") + line("250 ok") + line("354 go ahead") + line("250 ok", quit_)
    yield "timeout-mid-pipeline", bytes([PIPELINING]) + line("220 mx.example ESMTP") + ehlo(
        "250-PIPELINING") + line("250 ok") + line("250 2.1.5 ok") + op(6) + op(7) + line(
        "220 mx.example ESMTP") + ehlo() + op(7)
    yield "held-output-and-partial-sends", bytes([PIPELINING]) + line("220 mx.example ESMTP") + op(
        5) + op(4) + bytes([3]) + op(4) + bytes([255]) + op(5) + ehlo("250-PIPELINING") + op(
        5) + op(4) + bytes([40]) + op(5) + line("250 ok") + line("421 4.4.2 closing")
    yield "raw-malformed", bytes([PIPELINING]) + raw(b"220 mx\r\n") + raw(
        b"250-mx\r\n250-PIPELINING\r\n250 ok\r\n") + raw(b"250 ok\r\n250 bare\n")
    yield "raw-split-multiline", bytes([PLAIN]) + raw(b"220-a\r\n220-b\r\n220 c\r\n") + raw(
        b"250-mx\r\n250-SIZE 99999999999999999999999\r\n250 8BITMIME\r\n") + raw(
        b"250 ok\r\n") + raw(b"250 ok\r\n") + op(7)
    yield "injection-after-starttls", bytes([REQUIRED]) + line("220 mx.example ESMTP") + ehlo(
        "250-STARTTLS") + raw(b"220 go\r\n250 injected\r\n")


def main():
    root = os.path.join(os.path.dirname(__file__), "..", "corpus", "smtp_client")
    os.makedirs(root, exist_ok=True)
    for name, data in seeds():
        with open(os.path.join(root, "seed-" + name), "wb") as out:
            out.write(data)


if __name__ == "__main__":
    main()
