// MIME 8-bit to 7-bit conversion (mime/downgrade.h). Entities are walked on the input bytes;
// output is appended as the walk goes, so a refusal anywhere simply discards `out`.
#include "ringmta/mime/downgrade.h"

#include <algorithm>

namespace ringmta::mime {
namespace {

bool has_8bit(std::string_view text) noexcept {
  return std::any_of(text.begin(), text.end(),
                     [](char c) { return static_cast<unsigned char>(c) >= 0x80; });
}

char lower(char c) noexcept { return c >= 'A' && c <= 'Z' ? static_cast<char>(c + 32) : c; }

bool equals_nocase(std::string_view a, std::string_view b) noexcept {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(),
                                            [](char x, char y) { return lower(x) == lower(y); });
}

std::string_view trim(std::string_view text) noexcept {
  while (!text.empty() && (text.front() == ' ' || text.front() == '\t')) text.remove_prefix(1);
  while (!text.empty() && (text.back() == ' ' || text.back() == '\t' || text.back() == '\r' ||
                           text.back() == '\n'))
    text.remove_suffix(1);
  return text;
}

// The line starting at `from` including its LF (or up to the end).
std::string_view line_at(std::string_view text, std::size_t from) noexcept {
  const std::size_t lf = text.find('\n', from);
  return text.substr(from, lf == std::string_view::npos ? std::string_view::npos : lf + 1 - from);
}

bool is_blank_line(std::string_view line) noexcept { return line == "\r\n" || line == "\n"; }

// One header field: its name and its whole text (folded lines included, with line ends).
struct field {
  std::string_view name;
  std::string_view text;
  std::string_view value() const noexcept { return trim(text.substr(name.size() + 1)); }
};

// RFC 5322 §2.2: the header section ends at the first empty line.
struct entity_parts {
  std::string_view header;     // without the empty line
  std::string_view separator;  // the empty line ("" when the entity has no body)
  std::string_view body;
};

entity_parts split_entity(std::string_view text) noexcept {
  std::size_t at = 0;
  while (at < text.size()) {
    const std::string_view line = line_at(text, at);
    if (is_blank_line(line)) return {text.substr(0, at), line, text.substr(at + line.size())};
    at += line.size();
  }
  return {text, {}, {}};
}

template <typename Visit>
void for_each_field(std::string_view header, Visit&& visit) {
  std::size_t at = 0;
  while (at < header.size()) {
    std::size_t end = at + line_at(header, at).size();
    while (end < header.size() && (header[end] == ' ' || header[end] == '\t'))
      end += line_at(header, end).size();  // RFC 5322 §2.2.3: folded continuation
    const std::string_view text = header.substr(at, end - at);
    const std::size_t colon = text.find(':');
    visit(field{colon == std::string_view::npos ? std::string_view{} : text.substr(0, colon),
                text});
    at = end;
  }
}

// Content-Type essentials (RFC 2045 §5.1): lower-cased type/subtype and the boundary.
struct content_type {
  std::string type = "text/plain";
  std::string boundary;
};

std::string parameter_value(std::string_view text, std::size_t& at) {
  std::string value;
  if (at < text.size() && text[at] == '"') {  // quoted-string, RFC 5322 §3.2.4
    for (++at; at < text.size() && text[at] != '"'; ++at) {
      if (text[at] == '\\' && at + 1 < text.size()) ++at;
      value += text[at];
    }
    ++at;
    return value;
  }
  while (at < text.size() && text[at] != ';' && text[at] != ' ' && text[at] != '\t')
    value += text[at++];
  return value;
}

content_type parse_content_type(std::string_view value) {
  content_type parsed;
  const std::size_t semicolon = value.find(';');
  std::string type(trim(value.substr(0, semicolon)));
  std::transform(type.begin(), type.end(), type.begin(), lower);
  if (type.find('/') != std::string::npos) parsed.type = type;
  std::size_t at = semicolon;
  while (at != std::string_view::npos && at < value.size()) {
    ++at;  // past ';'
    while (at < value.size() && (value[at] == ' ' || value[at] == '\t' || value[at] == '\r' ||
                                 value[at] == '\n'))
      ++at;
    const std::size_t equals = value.find('=', at);
    if (equals == std::string_view::npos) break;
    const std::string_view name = trim(value.substr(at, equals - at));
    at = equals + 1;
    std::string parameter = parameter_value(value, at);
    if (equals_nocase(name, "boundary")) parsed.boundary = std::move(parameter);
    at = value.find(';', at);
  }
  return parsed;
}

struct entity_header {
  content_type type;
  std::string encoding;  // lower-cased Content-Transfer-Encoding, "" when absent
  bool has_mime_version = false;
  bool dkim_signed = false;
};

entity_header read_header(std::string_view header, bool digest_part) {
  entity_header h;
  if (digest_part) h.type.type = "message/rfc822";  // RFC 2046 §5.1.5
  for_each_field(header, [&](const field& f) {
    if (equals_nocase(f.name, "content-type")) {
      h.type = parse_content_type(f.value());
    } else if (equals_nocase(f.name, "content-transfer-encoding")) {
      h.encoding = std::string(f.value());
      std::transform(h.encoding.begin(), h.encoding.end(), h.encoding.begin(), lower);
    } else if (equals_nocase(f.name, "mime-version")) {
      h.has_mime_version = true;
    } else if (equals_nocase(f.name, "dkim-signature")) {
      h.dkim_signed = true;
    }
  });
  return h;
}

// Copies the header, with Content-Transfer-Encoding set to `encoding` (replaced, or added at
// the end when missing) unless `encoding` is empty (then copied as it is).
void append_header(std::string_view header, std::string_view encoding, bool add_mime_version,
                   std::string& out) {
  bool written = encoding.empty();
  for_each_field(header, [&](const field& f) {
    if (!written && equals_nocase(f.name, "content-transfer-encoding")) {
      out.append("Content-Transfer-Encoding: ").append(encoding).append("\r\n");
      written = true;
      return;
    }
    out.append(f.text);
    if (!f.text.empty() && f.text.back() != '\n') out.append("\r\n");
  });
  if (add_mime_version) out.append("MIME-Version: 1.0\r\n");
  if (!written) out.append("Content-Transfer-Encoding: ").append(encoding).append("\r\n");
}

class walker {
 public:
  explicit walker(std::string& out) : _out(out) {}
  downgrade_status status = downgrade_status::converted;
  bool dkim_signed = false;

  bool entity(std::string_view text, int depth, bool top, bool digest_part) {
    if (depth > downgrade_depth_max) return fail(downgrade_status::too_deep);
    const entity_parts parts = split_entity(text);
    if (has_8bit(parts.header)) return fail(downgrade_status::eight_bit_header);
    const entity_header h = read_header(parts.header, digest_part);
    if (top) dkim_signed = h.dkim_signed;
    const std::string& type = h.type.type;
    if (type.starts_with("multipart/")) return multipart(parts, h, depth);
    if (type == "message/rfc822") {
      append_header(parts.header, relabel(h.encoding), false, _out);
      _out.append(parts.separator);
      return entity(parts.body, depth + 1, false, false);
    }
    if (!has_8bit(parts.body)) {
      append_header(parts.header, relabel(h.encoding), false, _out);
      _out.append(parts.separator).append(parts.body);
      return true;
    }
    if (type.starts_with("message/")) return fail(downgrade_status::unsupported);  // global...
    if (h.encoding == "base64" || h.encoding == "quoted-printable")
      return fail(downgrade_status::encoded_8bit);
    if (h.encoding == "binary") return fail(downgrade_status::binary_part);
    append_header(parts.header, "quoted-printable", top && !h.has_mime_version, _out);
    _out.append(parts.separator);  // a body with 8-bit octets follows an empty line
    append_quoted_printable(parts.body, _out);
    return true;
  }

 private:
  bool fail(downgrade_status why) {
    status = why;
    return false;
  }

  // A composite entity's encoding must be 7bit, 8bit or binary (RFC 2045 §6.4); once its
  // content is 7-bit, "8bit" is no longer true.
  static std::string_view relabel(std::string_view encoding) noexcept {
    return encoding == "8bit" ? std::string_view("7bit") : std::string_view();
  }

  // RFC 2046 §5.1.1: delimiter lines are "--" boundary, the last one "--" boundary "--",
  // each optionally followed by white space.
  static int delimiter_kind(std::string_view line, std::string_view boundary) noexcept {
    if (!line.starts_with("--") || line.substr(2).substr(0, boundary.size()) != boundary) return 0;
    std::string_view rest = line.substr(2 + boundary.size());
    const bool close = rest.starts_with("--");
    if (close) rest.remove_prefix(2);
    return trim(rest).empty() ? (close ? 2 : 1) : 0;
  }

  bool multipart(const entity_parts& parts, const entity_header& h, int depth) {
    const std::string_view body = parts.body;
    if (h.type.boundary.empty())
      return has_8bit(body) ? fail(downgrade_status::unsupported) : copy(parts, h);
    const bool digest = h.type.type == "multipart/digest";
    std::string_view preamble = body;
    std::size_t part_start = std::string_view::npos;
    std::size_t at = 0;
    append_header(parts.header, relabel(h.encoding), false, _out);
    _out.append(parts.separator);
    while (at < body.size()) {
      const std::string_view line = line_at(body, at);
      const int kind = delimiter_kind(line, h.type.boundary);
      if (kind != 0) {
        if (part_start == std::string_view::npos) {
          preamble = body.substr(0, at);
          if (has_8bit(preamble)) return fail(downgrade_status::unsupported);
          _out.append(preamble);
        } else if (!entity(body.substr(part_start, at - part_start), depth + 1, false, digest)) {
          return false;
        }
        _out.append(line);
        if (kind == 2) {
          const std::string_view epilogue = body.substr(at + line.size());
          if (has_8bit(epilogue)) return fail(downgrade_status::unsupported);
          _out.append(epilogue);
          return true;
        }
        part_start = at + line.size();
      }
      at += line.size();
    }
    if (part_start == std::string_view::npos)  // no delimiter at all: only a preamble
      return has_8bit(body) ? fail(downgrade_status::unsupported) : (_out.append(body), true);
    // No close delimiter: the last part runs to the end, as readers accept.
    return entity(body.substr(part_start), depth + 1, false, digest);
  }

  bool copy(const entity_parts& parts, const entity_header& h) {
    append_header(parts.header, relabel(h.encoding), false, _out);
    _out.append(parts.separator).append(parts.body);
    return true;
  }

  std::string& _out;
};

constexpr char hex_digits[] = "0123456789ABCDEF";

}  // namespace

// RFC 2045 §6.7: printable ASCII except "=" stays; space and tab stay unless they end a line;
// everything else is =XX; an encoded line is at most 76 characters, broken by a soft line
// break ("=" CRLF) that never splits an =XX.
void append_quoted_printable(std::string_view text, std::string& out) {
  std::size_t column = 0;
  auto put = [&](std::string_view piece) {
    if (column + piece.size() > qp_line_chars_max - 1) {  // room for the soft break's "="
      out.append("=\r\n");
      column = 0;
    }
    out.append(piece);
    column += piece.size();
  };
  for (std::size_t i = 0; i < text.size(); ++i) {
    const auto c = static_cast<unsigned char>(text[i]);
    if (c == '\r' && i + 1 < text.size() && text[i + 1] == '\n') {
      out.append("\r\n");  // a hard line break
      column = 0;
      ++i;
      continue;
    }
    const bool line_ends = i + 1 == text.size() || text[i + 1] == '\r' || text[i + 1] == '\n';
    const bool literal = (c >= 33 && c <= 126 && c != '=') || ((c == ' ' || c == '\t') &&
                                                                !line_ends);
    if (literal) {
      const char one = static_cast<char>(c);
      put(std::string_view(&one, 1));
    } else {
      const char encoded[3] = {'=', hex_digits[c >> 4], hex_digits[c & 15]};
      put(std::string_view(encoded, 3));
    }
  }
}

downgrade_result downgrade_to_7bit(std::string_view message, std::string& out) {
  out.clear();
  downgrade_result result;
  if (!has_8bit(message)) {
    result.status = downgrade_status::unchanged;
    result.dkim_signed = read_header(split_entity(message).header, false).dkim_signed;
    return result;
  }
  out.reserve(message.size() + message.size() / 4);
  walker walk(out);
  const bool ok = walk.entity(message, 0, true, false);
  result.dkim_signed = walk.dkim_signed;
  result.status = ok ? downgrade_status::converted : walk.status;
  if (!ok) out.clear();
  return result;
}

std::string_view describe(downgrade_status status) noexcept {
  switch (status) {
    case downgrade_status::converted: return "converted to quoted-printable";
    case downgrade_status::unchanged: return "no 8-bit octets";
    case downgrade_status::eight_bit_header: return "8-bit octets in a header field";
    case downgrade_status::encoded_8bit: return "8-bit octets in a base64 or quoted-printable part";
    case downgrade_status::binary_part: return "a part with Content-Transfer-Encoding binary";
    case downgrade_status::unsupported: return "8-bit octets where MIME allows no encoding";
    case downgrade_status::too_deep: return "MIME nesting too deep";
  }
  return "unknown";
}

}  // namespace ringmta::mime
