#!/usr/bin/env python3
"""Parses the DSNs written by dsn_samples with Python's email package (an independent MIME
reader) and checks their structure. TAP output. Usage: dsn_check.py PATH/TO/dsn_samples"""
import email
import email.policy
import os
import subprocess
import sys
import tempfile

tests = []


def check(name):
    def register(function):
        tests.append((name, function))
        return function
    return register


def unstuff(wire):
    """Wire form to message bytes: CRLF lines of <= 998 octets, leading dot removed."""
    lines = wire.split(b"\r\n")
    assert lines[-1] == b"", "does not end with CRLF"
    out = []
    for line in lines[:-1]:
        assert b"\n" not in line and b"\r" not in line, "bare CR or LF"
        assert len(line) <= 998, "line of %d octets" % len(line)
        if line.startswith(b"."):
            assert line.startswith(b".."), "unstuffed dot"
            line = line[1:]
        out.append(line)
    return b"\r\n".join(out) + b"\r\n"


def load(directory, name):
    with open(os.path.join(directory, name + ".eml"), "rb") as f:
        message = email.message_from_bytes(unstuff(f.read()), policy=email.policy.default)
    assert not message.defects, message.defects
    assert message.get_content_type() == "multipart/report", message.get_content_type()
    parts = list(message.iter_parts())
    assert len(parts) == 3, "%d parts" % len(parts)
    for part in parts:
        assert not part.defects, part.defects
    assert message["Auto-Submitted"] == "auto-replied"
    assert message["From"].addresses[0].username == "MAILER-DAEMON"
    return message, parts


def status_groups(part, raw=None):
    """message/delivery-status: email parses it into one sub-message per field group."""
    payload = part.get_payload()
    if part.get_content_type() == "message/delivery-status":
        return payload
    # message/global-delivery-status is read as one encapsulated message with its UTF-8
    # escaped: take the part's bytes from the raw message and split the groups by hand.
    start = raw.index(b"\r\n\r\n", raw.index(b"Content-Type: message/global-delivery-status"))
    text = raw[start + 4:raw.index(b"\r\n--=_", start)].decode("utf-8")
    return [email.message_from_string(group + "\n", policy=email.policy.default)
            for group in text.replace("\r\n", "\n").strip("\n").split("\n\n")]


@check("failed: three parts, fields, the whole message returned")
def failed(directory):
    message, parts = load(directory, "failed")
    assert message.get_param("report-type") == "delivery-status"
    assert message["Subject"] == "Undelivered Mail Returned to Sender"
    assert parts[0].get_content_type() == "text/plain"
    assert parts[1].get_content_type() == "message/delivery-status"
    groups = status_groups(parts[1])
    assert groups[0]["Reporting-MTA"] == "dns; mx.example.net", groups[0]["Reporting-MTA"]
    assert groups[0]["Original-Envelope-Id"] == "ENV+1"
    assert groups[1]["Action"] == "failed"
    assert groups[1]["Status"] == "5.1.1"
    assert groups[1]["Original-Recipient"] == "rfc822; first+x@example.org"
    assert parts[2].get_content_type() == "message/rfc822"
    returned = parts[2].get_payload()[0]
    assert returned["Subject"] == "sample failed"
    assert ".leading dot" in returned.get_content()


@check("delayed: two recipient groups, headers only, Will-Retry-Until")
def delayed(directory):
    message, parts = load(directory, "delayed")
    assert message["Subject"].startswith("Delayed Mail")
    groups = status_groups(parts[1])
    assert len(groups) == 3
    assert all(g["Action"] == "delayed" for g in groups[1:])
    assert groups[1]["Will-Retry-Until"] is not None
    assert parts[2].get_content_type() == "text/rfc822-headers"
    assert "line 0" not in parts[2].get_content()


@check("eight_bit: message/rfc822 with 8bit transfer encoding")
def eight_bit(directory):
    message, parts = load(directory, "eight_bit")
    assert message["Content-Transfer-Encoding"] == "8bit"
    assert parts[2]["Content-Transfer-Encoding"] == "8bit"
    returned = parts[2].get_payload()[0]
    assert b"caf\xc3\xa9" in returned.get_payload(decode=True)


@check("global: RFC 6533 types and utf-8 address type")
def global_types(directory):
    message, parts = load(directory, "global")
    assert message.get_param("report-type") == "global-delivery-status"
    assert parts[1].get_content_type() == "message/global-delivery-status"
    assert parts[2].get_content_type() == "message/global"
    with open(os.path.join(directory, "global.eml"), "rb") as f:
        raw = unstuff(f.read())
    groups = status_groups(parts[1], raw)
    final = groups[1]["Final-Recipient"]
    assert final == "utf-8; \u5ba20@example.org", final


@check("headers_only: RET=HDRS returns text/rfc822-headers")
def headers_only(directory):
    _, parts = load(directory, "headers_only")
    assert parts[2].get_content_type() == "text/rfc822-headers"
    text = parts[2].get_content()
    assert "Subject: sample headers_only" in text and "line 0" not in text


@check("large: over 64 KiB without RET returns headers; DSN stays small")
def large(directory):
    _, parts = load(directory, "large")
    assert parts[2].get_content_type() == "text/rfc822-headers"
    assert os.path.getsize(os.path.join(directory, "large.eml")) < 8192


@check("mixed_long: failed + delivered + delayed, long diagnostic folded")
def mixed_long(directory):
    message, parts = load(directory, "mixed_long")
    assert message["Subject"] == "Undelivered Mail Returned to Sender"
    groups = status_groups(parts[1])
    assert [g["Action"] for g in groups[1:]] == ["failed", "delivered", "delayed"]
    diagnostic = str(groups[1]["Diagnostic-Code"])
    assert diagnostic.startswith("smtp; 550 5.7.1 xxx"), diagnostic[:40]


def main():
    samples = sys.argv[1]
    with tempfile.TemporaryDirectory() as directory:
        subprocess.run([samples, directory], check=True, timeout=60)
        print("1..%d" % len(tests))
        failed_count = 0
        for number, (name, function) in enumerate(tests, 1):
            try:
                function(directory)
                print("ok %d - %s" % (number, name))
            except Exception as error:  # noqa: BLE001 - report every failure as TAP
                failed_count += 1
                print("not ok %d - %s: %r" % (number, name, error))
    return 1 if failed_count else 0


if __name__ == "__main__":
    sys.exit(main())
