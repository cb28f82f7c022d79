// The DKIM key table: which keys sign a message, chosen by its RFC 5322 From: domain.
//
// Built by one function from the settings (build_key_table) and immutable afterwards: shards
// hold a shared_ptr<const key_table>, a message keeps the table it started with, so a
// reload (SIGHUP) swaps in a new table without a lock and without touching messages in
// flight. Building reads the key files: start-up or reload, never on a shard thread.
//
// Choice for a From: domain D (lowercase):
//   1. every key whose domain is D (several: e.g. RSA and Ed25519 for the same domain);
//   2. when there is none: the keys of the fallback domain of D — the first of "D",
//      ".parent" patterns (nearest parent first) and "*" in signing.fallback;
//   3. in addition, the keys of each signing.platform_domains domain (not twice).
// An empty choice means the message is not signed (not an error).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "ringmta/config/settings.h"
#include "ringmta/dkim/canonical.h"
#include "ringmta/dkim/crypto.h"

namespace ringmta::dkim {

struct signing_key {
  std::string domain;    // d=
  std::string selector;  // s=
  std::string key_file;
  canonicalization header = canonicalization::relaxed;
  canonicalization body = canonicalization::relaxed;
  std::vector<std::string> headers;     // h= candidates, lowercase, From among them
  std::vector<std::string> oversigned;  // those of `headers` listed once more than present
  std::shared_ptr<const private_key> key;
};

class key_table {
 public:
  std::vector<signing_key> keys;
  std::vector<std::pair<std::string, std::string>> fallback;  // pattern → signing domain
  std::vector<std::string> platform_domains;
  std::uint64_t header_bytes_max = 256u << 10;
  bool timestamp = true;
  std::uint32_t expire_s = 0;

  bool empty() const noexcept { return keys.empty(); }
  // Appends the keys that sign mail From `domain` (empty: no From domain known; then only
  // "*" fallbacks and platform domains apply).
  void choose(std::string_view domain, std::vector<const signing_key*>& out) const;
  // Whether a message without a usable From: domain would still get a signature.
  bool signs_without_author() const;
};

// A message's DKIM-Signature fields are committed with it (at most 64 KiB, spool::store):
// 16 RSA-4096 signatures with a long h= take ~28 KiB.
inline constexpr std::size_t signatures_per_message_max = 16;

// The default h= candidates and which of them are over-signed (RFC 6376 §5.4.1, §8.15).
const std::vector<std::string>& default_signed_headers();
const std::vector<std::string>& default_oversigned_headers();

// Reads and checks every key file. Throws config::error naming the entry, the file and the
// problem (unreadable, not a key, wrong type or size, algorithm mismatch), and for a
// fallback or platform domain that has no key.
std::shared_ptr<const key_table> build_key_table(const config::settings& settings);

}  // namespace ringmta::dkim
