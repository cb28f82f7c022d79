// Fuzz target: DKIM header canonicalization on random header blocks (and the body
// canonicalizer on the same bytes). Invariants: fields cover the block exactly, in order;
// relaxed fields are one line with a lowercase name, no WSP runs and no WSP before the CRLF;
// simple fields are the raw field; header selection and From: parsing never fail; the body
// canonicalizer gives the same bytes however the input is split, and relaxed output never has
// WSP before a CRLF.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "ringmta/core/assert.h"
#include "ringmta/dkim/canonical.h"
#include "ringmta/dkim/signature.h"

using namespace ringmta::dkim;

namespace {

struct string_sink final : byte_sink {
  std::string bytes;
  void update(std::string_view piece) noexcept override { bytes.append(piece); }
};

void check_relaxed_field(std::string_view out) {
  RINGMTA_ASSERT(out.size() >= 3 && out.substr(out.size() - 2) == "\r\n");
  const std::string_view line = out.substr(0, out.size() - 2);
  RINGMTA_ASSERT(line.find('\r') == std::string_view::npos);
  RINGMTA_ASSERT(line.find('\n') == std::string_view::npos);
  const std::string_view value = line.substr(line.find(':') + 1);
  RINGMTA_ASSERT(value.find("  ") == std::string_view::npos);
  RINGMTA_ASSERT(value.find('\t') == std::string_view::npos);
  RINGMTA_ASSERT(value.empty() || (value.front() != ' ' && value.back() != ' '));
  for (const char c : line.substr(0, line.find(':'))) RINGMTA_ASSERT(!(c >= 'A' && c <= 'Z'));
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view block(reinterpret_cast<const char*>(data), size);
  std::vector<header_field> fields;
  std::string joined;
  for_each_field(block, [&](const header_field& field) {
    fields.push_back(field);
    joined.append(field.raw);
    std::string relaxed;
    canonicalize_header(canonicalization::relaxed, field, relaxed);
    if (!field.name.empty()) check_relaxed_field(relaxed);
    std::string simple;
    canonicalize_header(canonicalization::simple, field, simple, false);
    RINGMTA_ASSERT(field.raw.substr(0, simple.size()) == simple);
    const std::string domain = from_domain(field.raw);
    RINGMTA_ASSERT(domain.find('@') == std::string::npos);
  });
  RINGMTA_ASSERT(joined == block);
  const std::vector<std::string> names = {"from", "subject", "to", "x-a"};
  const std::vector<std::string> over = {"from", "to"};
  const std::string h = select_headers(fields, names, over);
  std::string hashed;
  append_signed_headers(canonicalization::relaxed, fields, h, hashed);
  append_signed_headers(canonicalization::simple, fields, block.substr(0, 64), hashed);
  const std::size_t split = size == 0 ? 0 : data[0] % (size + 1);
  for (const bool stuffed : {false, true}) {
    for (const auto mode : {canonicalization::simple, canonicalization::relaxed}) {
      body_canonicalizer whole;
      whole.reset(mode, stuffed);
      body_canonicalizer parts;
      parts.reset(mode, stuffed);
      string_sink a;
      string_sink b;
      whole.feed(block, a);
      whole.finish(a);
      parts.feed(block.substr(0, split), b);
      parts.feed(block.substr(split), b);
      parts.finish(b);
      RINGMTA_ASSERT(a.bytes == b.bytes);
      if (mode == canonicalization::relaxed) {
        RINGMTA_ASSERT(a.bytes.find(" \r\n") == std::string::npos);
      }
    }
  }
  return 0;
}
