// The DKIM-Signature field text and header selection. See dkim/signature.h.
#include "ringmta/dkim/signature.h"

#include <algorithm>
#include <array>

#include <fmt/format.h>

#include "ringmta/core/base64.h"

namespace ringmta::dkim {

namespace {

constexpr char alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
constexpr std::size_t line_columns_max = 78;  // RFC 5322 §2.1.1 SHOULD

std::size_t count_named(std::span<const header_field> fields, std::string_view name) noexcept {
  return static_cast<std::size_t>(std::count_if(
      fields.begin(), fields.end(), [&](const header_field& f) { return iequals(f.name, name); }));
}

// Appends `piece` to a folded field: a new line ("\r\n\t") first when it would pass the
// column limit. `column` is the current line's length.
void put_folded(std::string& out, std::size_t& column, std::string_view piece, bool space) {
  const std::size_t need = piece.size() + (space ? 1 : 0);
  if (column + need > line_columns_max && column > 1) {
    out.append("\r\n\t");
    column = 1;
  } else if (space) {
    out.push_back(' ');
    ++column;
  }
  out.append(piece);
  column += piece.size();
}

}  // namespace

void append_base64(std::span<const unsigned char> bytes, std::string& out) {
  std::size_t i = 0;
  for (; i + 3 <= bytes.size(); i += 3) {
    const unsigned v = unsigned{bytes[i]} << 16 | unsigned{bytes[i + 1]} << 8 | bytes[i + 2];
    out.push_back(alphabet[v >> 18 & 63]);
    out.push_back(alphabet[v >> 12 & 63]);
    out.push_back(alphabet[v >> 6 & 63]);
    out.push_back(alphabet[v & 63]);
  }
  if (const std::size_t rest = bytes.size() - i; rest > 0) {
    const unsigned v = unsigned{bytes[i]} << 16 | (rest == 2 ? unsigned{bytes[i + 1]} << 8 : 0);
    out.push_back(alphabet[v >> 18 & 63]);
    out.push_back(alphabet[v >> 12 & 63]);
    out.push_back(rest == 2 ? alphabet[v >> 6 & 63] : '=');
    out.push_back('=');
  }
}

bool decode_base64(std::string_view text, std::string& out) {
  unsigned buffer = 0;
  int bits = 0;
  int padding = 0;
  for (const char c : text) {
    if (c == ' ' || c == '\t' || c == '\r' || c == '\n') continue;
    if (c == '=') {
      ++padding;
      continue;
    }
    const int v = core::base64_value(c);
    if (v < 0 || padding > 0) return false;
    buffer = buffer << 6 | static_cast<unsigned>(v);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out.push_back(static_cast<char>(buffer >> bits & 0xff));
    }
  }
  return padding <= 2;
}

std::string select_headers(std::span<const header_field> fields,
                           std::span<const std::string> names,
                           std::span<const std::string> oversigned) {
  std::string out;
  for (const std::string& name : names) {
    std::size_t times = count_named(fields, name);
    if (std::find(oversigned.begin(), oversigned.end(), name) != oversigned.end()) ++times;
    for (std::size_t i = 0; i < times; ++i) {
      if (!out.empty()) out.push_back(':');
      out.append(name);
    }
  }
  return out;
}

void append_signed_headers(canonicalization mode, std::span<const header_field> fields,
                           std::string_view h_value, std::string& out) {
  // How many instances of each name were used so far: the k-th listing of a name takes the
  // k-th instance counted from the bottom.
  std::vector<std::pair<std::string_view, std::size_t>> used;
  std::size_t at = 0;
  while (at <= h_value.size()) {
    std::size_t end = h_value.find(':', at);
    if (end == std::string_view::npos) end = h_value.size();
    std::string_view name = h_value.substr(at, end - at);
    at = end + 1;
    // RFC 6376 §3.5 allows FWS around the names ("from : to").
    while (!name.empty() && std::string_view(" \t\r\n").find(name.front()) != std::string_view::npos)
      name.remove_prefix(1);
    while (!name.empty() && std::string_view(" \t\r\n").find(name.back()) != std::string_view::npos)
      name.remove_suffix(1);
    if (name.empty()) continue;
    auto seen = std::find_if(used.begin(), used.end(),
                             [&](const auto& u) { return iequals(u.first, name); });
    if (seen == used.end()) seen = used.insert(used.end(), {name, 0});
    std::size_t skip = seen->second++;
    for (auto field = fields.rbegin(); field != fields.rend(); ++field) {
      if (!iequals(field->name, name)) continue;
      if (skip-- > 0) continue;
      canonicalize_header(mode, *field, out);
      break;
    }
  }
}

void format_signature_field(const signature_tags& tags, std::string& out) {
  std::size_t column = 0;
  const std::size_t start = out.size();
  out.append("DKIM-Signature: v=1;");
  column = out.size() - start;
  put_folded(out, column, fmt::format("a={};", tags.algorithm), true);
  put_folded(out, column, fmt::format("c={}/{};", name_of(tags.header), name_of(tags.body)),
             true);
  put_folded(out, column, fmt::format("d={};", tags.domain), true);
  put_folded(out, column, fmt::format("s={};", tags.selector), true);
  if (tags.timestamp >= 0) put_folded(out, column, fmt::format("t={};", tags.timestamp), true);
  if (tags.expire >= 0) put_folded(out, column, fmt::format("x={};", tags.expire), true);
  // h= folds after its colons (RFC 6376 §3.5: FWS is allowed around them).
  std::string_view names = tags.headers;
  bool first = true;
  while (!names.empty()) {
    const std::size_t colon = names.find(':');
    const std::string_view name = names.substr(0, colon);
    names = colon == std::string_view::npos ? std::string_view() : names.substr(colon + 1);
    std::string piece = first ? fmt::format("h={}", name) : std::string(name);
    piece.push_back(names.empty() ? ';' : ':');
    put_folded(out, column, piece, first);
    first = false;
  }
  put_folded(out, column, fmt::format("bh={};", tags.body_hash), true);
  put_folded(out, column, "b=", true);
}

void append_signature_value(std::span<const unsigned char> signature, std::string& out) {
  std::string text;
  append_base64(signature, text);
  std::size_t column = out.size() - std::min(out.size(), out.rfind('\n') + 1);
  for (std::size_t at = 0; at < text.size();) {
    if (column >= line_columns_max) {
      out.append("\r\n\t");
      column = 1;
    }
    const std::size_t n = std::min(text.size() - at, line_columns_max - column);
    out.append(text, at, n);
    column += n;
    at += n;
  }
  out.append("\r\n");
}

}  // namespace ringmta::dkim
