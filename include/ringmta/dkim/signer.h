// dkim::message_signer: signs one message while it is received (RFC 6376, RFC 8463).
//
// The embedder feeds the message's octets as they arrive (DATA wire form or raw BDAT; the
// stuffing dots of wire form are skipped). The header block is copied, bounded by the key
// table's header_bytes_max; at the empty line that ends it the From: domain chooses the keys,
// and from then on the body streams through one canonicalizer and SHA-256 per body
// canonicalization in use (no copy, no second pass). At the end of data finish() hashes the
// headers and signs: the DKIM-Signature fields are then ready to be committed with the
// message (spool::store::commit's header prefix), never written into the body.
//
// Outcomes other than signed/not_signed refuse the message: the signer never lets mail that
// was meant to be signed go out unsigned.
// One per connection, reused message after message (buffers keep their capacity). Never makes
// a syscall; the only allocations are buffer growth and OpenSSL's per-signature contexts.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "ringmta/dkim/canonical.h"
#include "ringmta/dkim/crypto.h"
#include "ringmta/dkim/key_table.h"

namespace ringmta::dkim {

enum class sign_outcome : std::uint8_t {
  not_signed,        // no key for this message: it goes as it is
  signed_ok,         // fields() holds the DKIM-Signature fields
  header_too_large,  // the header block passed header_bytes_max (552 5.3.4)
  bare_line_ending,  // a CR or LF outside CRLF: verifiers disagree on it (550 5.6.0)
  no_single_from,    // keys apply but there is no single From: field (550 5.6.0)
  failed,            // OpenSSL failed to sign (451 4.7.0; should never happen)
};
std::string_view describe(sign_outcome outcome) noexcept;

class message_signer {
 public:
  message_signer() = default;
  message_signer(const message_signer&) = delete;
  message_signer& operator=(const message_signer&) = delete;

  // Starts a message. `leading_fields`: complete header fields the receiver puts in front of
  // the client's (our Received:), CRLF lines, not stuffed.
  void begin(std::shared_ptr<const key_table> table, std::string_view leading_fields);
  // The next octets of the message; `stuffed`: DATA wire form.
  void feed(std::string_view bytes, bool stuffed) noexcept;
  // End of data. `now_seconds` gives t= and x=.
  sign_outcome finish(std::int64_t now_seconds) noexcept;
  // After finish() returned signed_ok (until begin() or clear()): the DKIM-Signature
  // fields, CRLF-terminated; empty otherwise.
  std::string_view fields() const noexcept {
    return _state == state::signed_done ? std::string_view(_out) : std::string_view();
  }
  // The keys that signed (or would have), in order: for logs and metrics.
  const std::vector<const signing_key*>& chosen() const noexcept { return _chosen; }
  // Drops the message and the table it holds.
  void clear() noexcept;
  bool active() const noexcept { return _state != state::idle; }

 private:
  enum class state : std::uint8_t {
    idle, headers, body, skip, refuse_from, overflow, signed_done };
  void feed_headers(const char*& p, const char* end) noexcept;
  void end_of_headers() noexcept;
  bool sign_one(const signing_key& key, std::int64_t now_seconds) noexcept;

  state _state = state::idle;
  bool _stuffed = false;
  bool _dot_checked = false;   // the current header line's first octet was looked at
  std::uint64_t _bare = 0;     // CR or LF outside CRLF in the header block
  std::size_t _line_begin = 0;  // where the current header line starts in _header
  std::shared_ptr<const key_table> _table;
  std::string _header;  // the header block, unstuffed (views in _fields point here)
  std::vector<header_field> _fields;
  std::vector<const signing_key*> _chosen;
  std::array<bool, 2> _body_used{};  // by canonicalization
  std::array<body_canonicalizer, 2> _body;
  std::array<std::unique_ptr<sha256>, 2> _body_hash;
  std::array<std::string, 2> _body_hash_text;  // bh= values
  std::unique_ptr<sha256> _header_hash;
  std::string _scratch;    // header hash input
  std::string _signature;  // raw signature octets
  std::string _out;
};

}  // namespace ringmta::dkim
