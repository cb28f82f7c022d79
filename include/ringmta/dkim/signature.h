// The DKIM-Signature header field (RFC 6376 §3.5) and what its header hash covers (§3.7),
// without cryptography: header selection with over-signing, the folded field text, base64.
//
// Pure: no syscalls, no OpenSSL. Start-up free of surprises: every function is deterministic.
// Never: an l= tag (a body length limit lets anyone append content under the signature).
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "ringmta/dkim/canonical.h"

namespace ringmta::dkim {

void append_base64(std::span<const unsigned char> bytes, std::string& out);
// Whitespace is skipped; false on anything else that is not base64.
bool decode_base64(std::string_view text, std::string& out);

// Header names a signature covers, in h= order. `names` are the configured fields
// (lowercase, no duplicates); each present instance is listed once, and a name in
// `oversigned` once more, so that a field added later (even one absent now) breaks the
// signature (RFC 6376 §8.15). Returns the h= value ("from:from:to:subject").
std::string select_headers(std::span<const header_field> fields,
                           std::span<const std::string> names,
                           std::span<const std::string> oversigned);

// Appends the canonical form of the fields h= names, picking instances from the bottom of
// the block up (§5.4.2); a name listed more often than present contributes nothing more.
void append_signed_headers(canonicalization mode, std::span<const header_field> fields,
                           std::string_view h_value, std::string& out);

struct signature_tags {
  std::string_view algorithm;  // "rsa-sha256" or "ed25519-sha256"
  canonicalization header = canonicalization::relaxed;
  canonicalization body = canonicalization::relaxed;
  std::string_view domain;
  std::string_view selector;
  std::int64_t timestamp = -1;  // t=, -1: none
  std::int64_t expire = -1;     // x=, -1: none
  std::string_view headers;     // h=
  std::string_view body_hash;   // bh=, base64
};

// Appends "DKIM-Signature: v=1; a=...; ...; bh=...;\r\n\tb=" folded at 78 columns (h= folds
// at its colons); the b= value is added by append_signature_value. What is appended up to
// here, canonicalized without its CRLF, ends the header hash input.
void format_signature_field(const signature_tags& tags, std::string& out);
// Appends the base64 signature folded in lines of at most 78 columns, then CRLF.
void append_signature_value(std::span<const unsigned char> signature, std::string& out);

}  // namespace ringmta::dkim
