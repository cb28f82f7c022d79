"""A throwaway PKI for the TLS integration tests, made with the openssl command at test time:
a CA, an ECDSA P-256 and an RSA-2048 server certificate signed by it (names mx.test.example,
localhost, 127.0.0.1). No private key is ever committed."""
import os
import subprocess
import tempfile


def make(directory=None, host="mx.test.example"):
    d = directory or tempfile.mkdtemp(prefix="ringmta-pki-")

    def run(*args):
        subprocess.run(["openssl", *args], cwd=d, check=True, capture_output=True, timeout=60)

    run("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-keyout", "ca.key", "-out", "ca.pem", "-days", "30", "-subj", "/CN=ringmta test CA")
    with open(os.path.join(d, "ext.cnf"), "w") as f:
        f.write(f"subjectAltName=DNS:{host},DNS:localhost,IP:127.0.0.1\n"
                "extendedKeyUsage=serverAuth\nbasicConstraints=critical,CA:FALSE\n")
    for name, key in (("ecdsa", ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"]),
                      ("rsa", ["-newkey", "rsa:2048"])):
        run("req", *key, "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr",
            "-subj", f"/CN={host}")
        run("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
            "-CAcreateserial", "-out", f"{name}.pem", "-days", "30", "-extfile", "ext.cnf")
    return {"dir": d, "ca": f"{d}/ca.pem", "ecdsa_cert": f"{d}/ecdsa.pem",
            "ecdsa_key": f"{d}/ecdsa.key", "rsa_cert": f"{d}/rsa.pem", "rsa_key": f"{d}/rsa.key"}


def daemon_args(pki):
    return ["--tls-cert", pki["ecdsa_cert"], "--tls-key", pki["ecdsa_key"],
            "--tls-cert", pki["rsa_cert"], "--tls-key", pki["rsa_key"]]
