#include "tls_test_pki.h"

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <sys/stat.h>

#include <cstdio>
#include <cstdlib>

namespace ringmta::testing {
namespace {

void check(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "test PKI: %s failed\n", what);
    std::abort();
  }
}

EVP_PKEY* make_key(bool rsa) {
  EVP_PKEY* key = rsa ? EVP_RSA_gen(2048) : EVP_EC_gen("P-256");
  check(key != nullptr, "key generation");
  return key;
}

void add_extension(X509* cert, X509* issuer, int nid, const char* value) {
  X509V3_CTX ctx;
  X509V3_set_ctx_nodb(&ctx);
  X509V3_set_ctx(&ctx, issuer, cert, nullptr, nullptr, 0);
  X509_EXTENSION* ext = X509V3_EXT_conf_nid(nullptr, &ctx, nid, value);
  check(ext != nullptr && X509_add_ext(cert, ext, -1) == 1, "extension");
  X509_EXTENSION_free(ext);
}

// Signed by issuer_key (self-signed when issuer is null).
X509* make_cert(EVP_PKEY* key, const char* common_name, X509* issuer, EVP_PKEY* issuer_key,
                const std::string& san, long serial) {
  X509* cert = X509_new();
  X509_set_version(cert, 2);
  ASN1_INTEGER_set(X509_get_serialNumber(cert), serial);
  X509_gmtime_adj(X509_getm_notBefore(cert), -3600);
  X509_gmtime_adj(X509_getm_notAfter(cert), 30L * 86400);
  X509_set_pubkey(cert, key);
  X509_NAME* name = X509_get_subject_name(cert);
  X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
                             reinterpret_cast<const unsigned char*>(common_name), -1, -1, 0);
  X509_set_issuer_name(cert, issuer != nullptr ? X509_get_subject_name(issuer) : name);
  X509* signer = issuer != nullptr ? issuer : cert;
  if (san.empty()) {
    add_extension(cert, signer, NID_basic_constraints, "critical,CA:TRUE");
    add_extension(cert, signer, NID_key_usage, "critical,keyCertSign,cRLSign");
  } else {
    add_extension(cert, signer, NID_basic_constraints, "critical,CA:FALSE");
    add_extension(cert, signer, NID_subject_alt_name, san.c_str());
    add_extension(cert, signer, NID_ext_key_usage, "serverAuth");
  }
  check(X509_sign(cert, issuer_key, EVP_sha256()) > 0, "signature");
  return cert;
}

void write_cert(const std::string& path, X509* cert) {
  std::FILE* f = std::fopen(path.c_str(), "w");
  check(f != nullptr && PEM_write_X509(f, cert) == 1, path.c_str());
  std::fclose(f);
}

void write_key(const std::string& path, EVP_PKEY* key) {
  std::FILE* f = std::fopen(path.c_str(), "w");
  check(f != nullptr &&
            PEM_write_PrivateKey(f, key, nullptr, nullptr, 0, nullptr, nullptr) == 1,
        path.c_str());
  std::fclose(f);
}

}  // namespace

test_pki make_test_pki(const std::string& directory, const std::string& host) {
  ::mkdir(directory.c_str(), 0700);
  test_pki pki;
  pki.directory = directory;
  EVP_PKEY* ca_key = make_key(false);
  X509* ca = make_cert(ca_key, "ringmta test CA", nullptr, ca_key, "", 1);
  EVP_PKEY* other_key = make_key(false);
  X509* other = make_cert(other_key, "unrelated CA", nullptr, other_key, "", 2);
  const std::string san = "DNS:" + host + ",DNS:localhost,IP:127.0.0.1";
  EVP_PKEY* ecdsa_key = make_key(false);
  X509* ecdsa = make_cert(ecdsa_key, host.c_str(), ca, ca_key, san, 3);
  EVP_PKEY* rsa_key = make_key(true);
  X509* rsa = make_cert(rsa_key, host.c_str(), ca, ca_key, san, 4);
  pki.ca_cert = directory + "/ca.pem";
  pki.other_ca_cert = directory + "/other-ca.pem";
  pki.ecdsa_cert = directory + "/ecdsa.pem";
  pki.ecdsa_key = directory + "/ecdsa.key";
  pki.rsa_cert = directory + "/rsa.pem";
  pki.rsa_key = directory + "/rsa.key";
  write_cert(pki.ca_cert, ca);
  write_cert(pki.other_ca_cert, other);
  write_cert(pki.ecdsa_cert, ecdsa);
  write_key(pki.ecdsa_key, ecdsa_key);
  write_cert(pki.rsa_cert, rsa);
  write_key(pki.rsa_key, rsa_key);
  for (X509* c : {ca, other, ecdsa, rsa}) X509_free(c);
  for (EVP_PKEY* k : {ca_key, other_key, ecdsa_key, rsa_key}) EVP_PKEY_free(k);
  return pki;
}

}  // namespace ringmta::testing
