// OpenSSL 3 EVP for DKIM: SHA-256, key loading and checks, signing, DNS records, keygen.
#include "ringmta/dkim/crypto.h"

#include <openssl/bio.h>
#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>

#include <cstring>
#include <fstream>
#include <span>
#include <sstream>

#include <fmt/format.h>

#include "ringmta/core/assert.h"
#include "ringmta/dkim/signature.h"

namespace ringmta::dkim {

namespace {

// Fetched once: an implicit fetch per EVP_DigestInit would look the algorithm up every time.
const EVP_MD* sha256_md() noexcept {
  static EVP_MD* md = EVP_MD_fetch(nullptr, "SHA256", nullptr);
  RINGMTA_ASSERT(md != nullptr);
  return md;
}

std::string openssl_error() {
  const unsigned long code = ERR_get_error();
  ERR_clear_error();
  if (code == 0) return "unknown OpenSSL error";
  char text[256];
  ERR_error_string_n(code, text, sizeof text);
  return text;
}

constexpr unsigned rsa_bits_min = 1024;  // RFC 8301 §3.2: verifiers must accept 1024-4096
constexpr unsigned rsa_bits_max = 4096;

}  // namespace

std::string_view name_of(algorithm a) noexcept {
  return a == algorithm::rsa_sha256 ? "rsa-sha256" : "ed25519-sha256";
}

sha256::sha256() : _context(EVP_MD_CTX_new()) {
  RINGMTA_ASSERT(_context != nullptr);
  reset();
}

sha256::~sha256() { EVP_MD_CTX_free(_context); }

void sha256::reset() noexcept {
  _gathered = 0;
  const int ready = EVP_DigestInit_ex2(_context, sha256_md(), nullptr);
  RINGMTA_ASSERT(ready == 1);
}

void sha256::drain() noexcept {
  if (_gathered > 0) EVP_DigestUpdate(_context, _buffer.data(), _gathered);
  _gathered = 0;
}

void sha256::update(std::string_view bytes) noexcept {
  if (bytes.size() >= small_bytes) {
    drain();
    EVP_DigestUpdate(_context, bytes.data(), bytes.size());
    return;
  }
  if (_gathered + bytes.size() > _buffer.size()) drain();
  std::memcpy(_buffer.data() + _gathered, bytes.data(), bytes.size());
  _gathered += bytes.size();
}

digest sha256::finish() noexcept {
  drain();
  digest out{};
  unsigned int length = 0;
  RINGMTA_ASSERT(EVP_DigestFinal_ex(_context, out.data(), &length) == 1 && length == out.size());
  return out;
}

private_key::~private_key() { EVP_PKEY_free(_key); }

std::shared_ptr<const private_key> private_key::load(const std::string& path,
                                                     std::string& problem) {
  std::ifstream file(path, std::ios::binary);
  if (!file) {
    problem = fmt::format("cannot read: {}", std::strerror(errno));
    return nullptr;
  }
  std::ostringstream text;
  text << file.rdbuf();
  if (!file.good() && !file.eof()) {
    problem = "cannot read the file";
    return nullptr;
  }
  return from_text(text.str(), problem);
}

std::shared_ptr<const private_key> private_key::from_text(std::string_view text,
                                                          std::string& problem) {
  EVP_PKEY* key = nullptr;
  if (text.find("-----BEGIN") != std::string_view::npos) {
    BIO* in = BIO_new_mem_buf(text.data(), static_cast<int>(text.size()));
    key = PEM_read_bio_PrivateKey(in, nullptr, nullptr, nullptr);
    BIO_free(in);
    if (key == nullptr) {
      problem = "not a PEM private key (" + openssl_error() + ")";
      return nullptr;
    }
  } else {  // dkimpy writes an Ed25519 key as the base64 of its 32 octets
    std::string raw;
    if (!decode_base64(text, raw) || raw.size() != 32) {
      problem = "neither a PEM private key nor a base64 Ed25519 key";
      return nullptr;
    }
    key = EVP_PKEY_new_raw_private_key(EVP_PKEY_ED25519, nullptr,
                                       reinterpret_cast<const unsigned char*>(raw.data()), 32);
    if (key == nullptr) {
      problem = "bad Ed25519 key (" + openssl_error() + ")";
      return nullptr;
    }
  }
  std::shared_ptr<private_key> made(new private_key(key));
  if (EVP_PKEY_is_a(key, "RSA")) {
    made->_algorithm = algorithm::rsa_sha256;
    made->_bits = static_cast<unsigned>(EVP_PKEY_get_bits(key));
    if (made->_bits < rsa_bits_min || made->_bits > rsa_bits_max) {
      problem = fmt::format("an RSA key of {} bits: DKIM signs with 1024 to 4096 (RFC 8301)",
                            made->_bits);
      return nullptr;
    }
  } else if (EVP_PKEY_is_a(key, "ED25519")) {
    made->_algorithm = algorithm::ed25519_sha256;
    made->_bits = 256;
  } else {
    problem = fmt::format("a {} key: DKIM signs with RSA or Ed25519", EVP_PKEY_get0_type_name(key));
    return nullptr;
  }
  // The key must work now, not at the first message.
  EVP_PKEY_CTX* check = EVP_PKEY_CTX_new_from_pkey(nullptr, key, nullptr);
  const bool consistent = check != nullptr && EVP_PKEY_pairwise_check(check) == 1;
  EVP_PKEY_CTX_free(check);
  std::string signature;
  if (!consistent || !made->sign(digest{}, signature)) {
    problem = "the key does not check out (" + openssl_error() + ")";
    return nullptr;
  }
  return made;
}

bool private_key::sign(const digest& hash, std::string& signature) const noexcept {
  std::size_t length = 0;
  bool ok = false;
  if (_algorithm == algorithm::ed25519_sha256) {
    // RFC 8463 §3: PureEdDSA over the SHA-256 hash of the canonical header data.
    EVP_MD_CTX* context = EVP_MD_CTX_new();
    ok = context != nullptr &&
         EVP_DigestSignInit_ex(context, nullptr, nullptr, nullptr, nullptr, _key, nullptr) == 1 &&
         EVP_DigestSign(context, nullptr, &length, hash.data(), hash.size()) == 1;
    if (ok) {
      signature.resize(length);
      ok = EVP_DigestSign(context, reinterpret_cast<unsigned char*>(signature.data()), &length,
                          hash.data(), hash.size()) == 1;
    }
    EVP_MD_CTX_free(context);
  } else {
    // RFC 6376 §3.3.1: RSASSA-PKCS1-v1_5 with SHA-256 over the hash we computed.
    EVP_PKEY_CTX* context = EVP_PKEY_CTX_new_from_pkey(nullptr, _key, nullptr);
    ok = context != nullptr && EVP_PKEY_sign_init(context) == 1 &&
         EVP_PKEY_CTX_set_rsa_padding(context, RSA_PKCS1_PADDING) == 1 &&
         EVP_PKEY_CTX_set_signature_md(context, sha256_md()) == 1 &&
         EVP_PKEY_sign(context, nullptr, &length, hash.data(), hash.size()) == 1;
    if (ok) {
      signature.resize(length);
      ok = EVP_PKEY_sign(context, reinterpret_cast<unsigned char*>(signature.data()), &length,
                         hash.data(), hash.size()) == 1;
    }
    EVP_PKEY_CTX_free(context);
  }
  if (!ok) {
    ERR_clear_error();  // the queue is per thread: leave nothing for the next caller
    return false;
  }
  signature.resize(length);
  return true;
}

std::string private_key::dns_record() const {
  std::string out;
  if (_algorithm == algorithm::ed25519_sha256) {
    std::array<unsigned char, 32> raw{};
    std::size_t length = raw.size();
    RINGMTA_ASSERT(EVP_PKEY_get_raw_public_key(_key, raw.data(), &length) == 1);
    out = "v=DKIM1; k=ed25519; p=";
    append_base64(std::span(raw.data(), length), out);
    return out;
  }
  unsigned char* der = nullptr;
  const int length = i2d_PUBKEY(_key, &der);  // SubjectPublicKeyInfo (RFC 6376 §3.6.1 p=)
  RINGMTA_ASSERT(length > 0);
  out = "v=DKIM1; k=rsa; p=";
  append_base64(std::span(der, static_cast<std::size_t>(length)), out);
  OPENSSL_free(der);
  return out;
}

std::string private_key::generate(dkim::algorithm a, unsigned bits, std::string& problem) {
  if (a == dkim::algorithm::rsa_sha256 && (bits < rsa_bits_min || bits > rsa_bits_max)) {
    problem = fmt::format("--bits {}: RSA keys for DKIM have 1024 to 4096 bits", bits);
    return {};
  }
  EVP_PKEY* key = a == dkim::algorithm::rsa_sha256
                      ? EVP_PKEY_Q_keygen(nullptr, nullptr, "RSA", static_cast<size_t>(bits))
                      : EVP_PKEY_Q_keygen(nullptr, nullptr, "ED25519");
  if (key == nullptr) {
    problem = "key generation failed (" + openssl_error() + ")";
    return {};
  }
  BIO* out = BIO_new(BIO_s_mem());
  std::string pem;
  if (PEM_write_bio_PrivateKey(out, key, nullptr, nullptr, 0, nullptr, nullptr) == 1) {
    char* data = nullptr;
    const long length = BIO_get_mem_data(out, &data);
    pem.assign(data, static_cast<std::size_t>(length));
  } else {
    problem = "cannot write the key (" + openssl_error() + ")";
  }
  BIO_free(out);
  EVP_PKEY_free(key);
  return pem;
}

}  // namespace ringmta::dkim
