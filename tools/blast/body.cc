// Start-up helpers of ringmta-blast: address patterns, body templates and their checksums.
#include <fmt/format.h>

#include <algorithm>
#include <cstring>

#include "blast/blast.h"
#include "loadkit/integrity.h"

namespace ringmta::blast {

std::string_view describe(error_kind kind) noexcept {
  switch (kind) {
    case error_kind::refused: return "refused";
    case error_kind::reset: return "reset";
    case error_kind::timeout: return "timeout";
    case error_kind::unreachable: return "unreachable";
    case error_kind::no_local_port: return "no_local_port";
    case error_kind::connect_other: return "connect_other";
    case error_kind::peer_closed: return "peer_closed";
    case error_kind::greeting_rejected: return "greeting_rejected";
    case error_kind::hello_rejected: return "hello_rejected";
    case error_kind::service_closing: return "service_closing";
    case error_kind::protocol_error: return "protocol_error";
    case error_kind::reply_unexpected: return "reply_unexpected";
    case error_kind::no_pipelining: return "no_pipelining";
    case error_kind::tls: return "tls";
    case error_kind::aborted: return "aborted";
    case error_kind::count_: break;
  }
  return "?";
}

std::optional<address_pattern> address_pattern::parse(std::string_view text) {
  address_pattern pattern;
  std::string literal;
  while (!text.empty()) {
    if (text.front() != '{') {
      literal += text.front();
      text.remove_prefix(1);
      continue;
    }
    const std::size_t close = text.find('}');
    if (close == std::string_view::npos) return std::nullopt;
    const std::string_view name = text.substr(1, close - 1);
    part_kind kind;
    if (name == "n") {
      kind = part_kind::n;
    } else if (name == "r") {
      kind = part_kind::r;
    } else if (name == "d") {
      kind = part_kind::d;
    } else if (name == "domain") {
      kind = part_kind::domain;
    } else if (name == "s") {
      kind = part_kind::s;
    } else {
      return std::nullopt;
    }
    if (!literal.empty()) pattern._parts.push_back({part_kind::literal, std::move(literal)});
    literal.clear();
    pattern._parts.push_back({kind, {}});
    text.remove_prefix(close + 1);
  }
  if (!literal.empty()) pattern._parts.push_back({part_kind::literal, std::move(literal)});
  return pattern;
}

std::size_t address_pattern::render(char* out, std::size_t out_bytes_max, std::uint64_t n,
                                    std::uint32_t r, std::uint32_t d, std::string_view suffix,
                                    unsigned s) const noexcept {
  char* p = out;
  char* const end = out + out_bytes_max;
  const auto put = [&](std::string_view text) {
    const std::size_t take = std::min<std::size_t>(text.size(), static_cast<std::size_t>(end - p));
    std::memcpy(p, text.data(), take);
    p += take;
  };
  const auto number = [&](std::uint64_t value) {
    char digits[20];
    put({digits, loadkit::write_decimal(digits, value, 1)});
  };
  for (const part& item : _parts) {
    switch (item.kind) {
      case part_kind::literal: put(item.text); break;
      case part_kind::n: number(n); break;
      case part_kind::r: number(r); break;
      case part_kind::d: number(d); break;
      case part_kind::s: number(s); break;
      case part_kind::domain:
        put("d");
        number(d);
        put(".");
        put(suffix);
        break;
    }
  }
  return static_cast<std::size_t>(p - out);
}

std::size_t render_header(const blast_config& config, std::uint64_t id, std::string_view from,
                          std::string_view first_recipient, const body_variant& body, char* out,
                          std::size_t out_bytes_max) noexcept {
  char id_text[24];
  const std::string_view number(id_text, loadkit::write_decimal(id_text, id, 12));
  char checksum[16];
  loadkit::write_hex16(checksum, body.checksum);
  const auto written = fmt::format_to_n(
      out, out_bytes_max,
      "From: <{}>\r\nTo: <{}>\r\nSubject: ringmta-blast {}-{}\r\nDate: {}\r\n"
      "Message-ID: <{}-{}@{}>\r\n{}: {}-{}\r\n{}: xxh64={}\r\n\r\n",
      from, first_recipient, config.run, number, config.date, config.run, number, config.ehlo,
      loadkit::id_field, config.run, number, loadkit::checksum_field,
      std::string_view(checksum, 16));
  return std::min(written.size, out_bytes_max);
}

// The shared body text: numbered 78-octet lines (76 + CRLF, RFC 5322 §2.1.1's recommended 78),
// never starting with '.', so no dot-stuffing is ever needed and the wire form is the message.
void prepare_bodies(blast_config& config, const std::vector<loadkit::size_choice>& sizes) {
  std::uint64_t longest = 0;
  for (const auto& choice : sizes) longest = std::max(longest, choice.bytes);
  std::string text;
  text.reserve(longest + 80);
  for (std::uint64_t line = 0; text.size() < longest; ++line) {
    std::string row = fmt::format("blast line {:08} ", line);
    for (char c = 'A'; row.size() < 76; c = c == 'Z' ? 'A' : static_cast<char>(c + 1)) row += c;
    text += row;
    text += "\r\n";
  }
  config.body_text = std::move(text);
  double total_weight = 0;
  for (const auto& choice : sizes) total_weight += choice.weight;
  double cumulative = 0;
  config.bodies.clear();
  for (const auto& choice : sizes) {
    body_variant v;
    v.bytes = choice.bytes;
    v.tail = "\r\n";
    std::uint64_t prefix = choice.bytes - 2;
    if (prefix > 0 && config.body_text[prefix - 1] == '\r') {  // would leave a bare CR
      v.tail = "z\r\n";
      prefix -= 1;
    }
    v.prefix_bytes = static_cast<std::uint32_t>(prefix);
    const std::string_view pieces[] = {std::string_view(config.body_text).substr(0, prefix),
                                       v.tail};
    v.checksum = loadkit::body_checksum(pieces);
    cumulative += choice.weight / total_weight;
    v.cumulative_weight = cumulative;
    config.bodies.push_back(v);
  }
  config.bodies.back().cumulative_weight = 1.0;
}

}  // namespace ringmta::blast
