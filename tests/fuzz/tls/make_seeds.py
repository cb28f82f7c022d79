#!/usr/bin/env python3
"""Seeds for fuzz_tls: ClientHellos of several shapes (TLS 1.3, TLS 1.2 only, with and without
SNI, few ciphers), made with Python's ssl module over memory BIOs; byte 0 seeds the splits.
usage: make_seeds.py CORPUS_DIR"""
import hashlib
import os
import ssl
import sys

out = sys.argv[1]
os.makedirs(out, exist_ok=True)
shapes = [
    (ssl.TLSVersion.TLSv1_3, "mx.test.example", None),
    (ssl.TLSVersion.TLSv1_2, "mx.test.example", None),
    (ssl.TLSVersion.TLSv1_2, None, "ECDHE-RSA-AES128-GCM-SHA256"),
    (ssl.TLSVersion.TLSv1_3, None, None),
]
for maximum, host, ciphers in shapes:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.maximum_version = maximum
    if ciphers:
        context.set_ciphers(ciphers)
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = context.wrap_bio(incoming, outgoing, server_hostname=host)
    try:
        tls.do_handshake()
    except ssl.SSLWantReadError:
        pass
    hello = outgoing.read()
    for split in (0, 7, 200):
        data = bytes([split]) + hello
        with open(os.path.join(out, hashlib.sha1(data).hexdigest()), "wb") as f:
            f.write(data)
for data in (b"\x00EHLO client\r\nSTARTTLS\r\n", b"\x03\x16\x03\x01\x00\x04\x01\x00\x00\x00",
             b"\x05\x15\x03\x03\x00\x02\x02\x28"):
    with open(os.path.join(out, hashlib.sha1(data).hexdigest()), "wb") as f:
        f.write(data)
