// A throwaway PKI for TLS tests, made at test time with OpenSSL (no private key is committed):
// a CA, server certificates signed by it (ECDSA P-256 and RSA-2048, for `host`, localhost and
// 127.0.0.1), and a second, unrelated CA whose trust makes verification fail.
#pragma once

#include <string>

namespace ringmta::testing {

struct test_pki {
  std::string directory;
  std::string ca_cert;        // PEM, trusts both server certificates
  std::string other_ca_cert;  // PEM, an unrelated CA
  std::string ecdsa_cert, ecdsa_key;
  std::string rsa_cert, rsa_key;
};

// Writes the files into `directory` (created if missing). Aborts on an OpenSSL failure.
test_pki make_test_pki(const std::string& directory, const std::string& host = "mx.test.example");

}  // namespace ringmta::testing
