// The cryptography of DKIM signing, through OpenSSL 3 EVP: SHA-256 as a byte_sink, private
// keys (RSA 1024–4096 bits for rsa-sha256, RFC 8301; Ed25519 for ed25519-sha256, RFC 8463),
// signing a header hash, the public key as a DNS TXT record, and key generation.
//
// Loading reads files: start-up (and reload) only, never on a shard. Signing is pure CPU work
// (no syscalls): RSA-2048 takes about a millisecond, Ed25519 tens of microseconds
// (docs/notes.md says where it runs and why). A private_key is immutable once loaded and may
// be used by several threads at once: each signature uses its own OpenSSL context.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "ringmta/dkim/canonical.h"

typedef struct evp_md_ctx_st EVP_MD_CTX;
typedef struct evp_pkey_st EVP_PKEY;

namespace ringmta::dkim {

enum class algorithm : std::uint8_t { rsa_sha256, ed25519_sha256 };
std::string_view name_of(algorithm a) noexcept;  // the a= tag value

using digest = std::array<unsigned char, 32>;

// Streaming SHA-256. The context is made once and reused for every message. Canonical
// output comes in many small pieces (a line's words between WSP runs); each EVP update costs
// tens of nanoseconds, so pieces under small_bytes are gathered in a 4 KiB buffer first and
// large ones (whole unchanged lines, often many at once) go to OpenSSL directly.
class sha256 final : public byte_sink {
 public:
  static constexpr std::size_t small_bytes = 256;
  sha256();
  ~sha256();
  sha256(const sha256&) = delete;
  sha256& operator=(const sha256&) = delete;
  void reset() noexcept;
  void update(std::string_view bytes) noexcept override;
  digest finish() noexcept;  // then reset() before the next use

 private:
  void drain() noexcept;
  EVP_MD_CTX* _context;
  std::size_t _gathered = 0;
  std::array<char, 4096> _buffer;
};

class private_key {
 public:
  // Reads a PEM private key (PKCS#8, or PKCS#1 "RSA PRIVATE KEY"), or a file holding only the
  // base64 of a 32-octet Ed25519 private key (dkimpy's format). Checks the type and size,
  // and that it signs. The error text says what is wrong, without the path.
  // Null on failure, with `problem` set.
  static std::shared_ptr<const private_key> load(const std::string& path, std::string& problem);
  ~private_key();
  private_key(const private_key&) = delete;
  private_key& operator=(const private_key&) = delete;

  dkim::algorithm algorithm() const noexcept { return _algorithm; }
  unsigned bits() const noexcept { return _bits; }
  // The signature of a header hash (RFC 6376 §3.7; RFC 8463 §3 signs the SHA-256 hash with
  // PureEdDSA). False only if OpenSSL fails (it should not with a checked key).
  bool sign(const digest& hash, std::string& signature) const noexcept;
  // "v=DKIM1; k=rsa; p=..." / "v=DKIM1; k=ed25519; p=..." (RFC 6376 §3.6.1, RFC 8463 §4).
  std::string dns_record() const;

  // A new key, PEM (PKCS#8) text; rsa `bits` 1024–4096. Empty on failure.
  static std::string generate(dkim::algorithm a, unsigned bits, std::string& problem);
  // A key from PEM text or raw Ed25519 base64 (what load() does after reading the file).
  static std::shared_ptr<const private_key> from_text(std::string_view text,
                                                      std::string& problem);

 private:
  explicit private_key(EVP_PKEY* key) noexcept : _key(key) {}
  EVP_PKEY* _key;
  dkim::algorithm _algorithm = dkim::algorithm::rsa_sha256;
  unsigned _bits = 0;
};

}  // namespace ringmta::dkim
