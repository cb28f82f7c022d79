// dkim::message_signer: header block, key choice, streamed body hashes, signatures.
#include "ringmta/dkim/signer.h"

#include <cstring>
#include <span>

#include "ringmta/core/assert.h"
#include "ringmta/dkim/signature.h"

namespace ringmta::dkim {

namespace {
std::size_t index_of(canonicalization c) noexcept {
  return c == canonicalization::simple ? 0 : 1;
}
}  // namespace

std::string_view describe(sign_outcome outcome) noexcept {
  switch (outcome) {
    case sign_outcome::not_signed: return "not signed";
    case sign_outcome::signed_ok: return "signed";
    case sign_outcome::header_too_large: return "header block too large to sign";
    case sign_outcome::bare_line_ending: return "bare CR or LF";
    case sign_outcome::no_single_from: return "no single From: field";
    case sign_outcome::failed: return "signing failed";
  }
  return "unknown";
}

void message_signer::begin(std::shared_ptr<const key_table> table,
                           std::string_view leading_fields) {
  RINGMTA_ASSERT(table != nullptr);
  _table = std::move(table);
  _state = state::headers;
  _stuffed = false;
  _dot_checked = false;
  _bare = 0;
  _header.assign(leading_fields);
  _line_begin = _header.size();
  _fields.clear();
  _chosen.clear();
  _body_used = {};
  _out.clear();
}

void message_signer::clear() noexcept {
  _state = state::idle;
  _table.reset();
  _chosen.clear();
}

void message_signer::feed(std::string_view bytes, bool stuffed) noexcept {
  const char* p = bytes.data();
  const char* const end = p + bytes.size();
  if (_state == state::headers) {
    _stuffed = stuffed;
    feed_headers(p, end);
  }
  if (_state != state::body || p == end) return;
  const std::string_view rest(p, static_cast<std::size_t>(end - p));
  for (std::size_t i = 0; i < 2; ++i) {
    if (_body_used[i]) _body[i].feed(rest, *_body_hash[i]);
  }
}

// Copies header lines (dropping stuffing dots) until the empty line; `p` ends past it.
void message_signer::feed_headers(const char*& p, const char* end) noexcept {
  while (p < end && _state == state::headers) {
    if (!_dot_checked) {
      _dot_checked = true;
      if (_stuffed && *p == '.') {  // RFC 5321 §4.5.2
        ++p;
        continue;
      }
    }
    const void* lf = std::memchr(p, '\n', static_cast<std::size_t>(end - p));
    const char* stop = lf == nullptr ? end : static_cast<const char*>(lf) + 1;
    if (_header.size() + static_cast<std::size_t>(stop - p) > _table->header_bytes_max) {
      _state = state::overflow;  // refused at the end of data: bounded memory per session
      return;
    }
    _header.append(p, stop);
    p = stop;
    if (lf == nullptr) return;
    const std::string_view line = std::string_view(_header).substr(_line_begin);
    const bool crlf = line.size() >= 2 && line[line.size() - 2] == '\r';
    if (!crlf) ++_bare;
    for (std::size_t i = 0; i + 2 < line.size(); ++i) _bare += line[i] == '\r' ? 1 : 0;
    if (line == "\r\n") {  // the empty line: the body starts after it
      _header.resize(_line_begin);
      end_of_headers();
      return;
    }
    _line_begin = _header.size();
    _dot_checked = false;
  }
}

// The header block is complete: the From: domain chooses the keys, the body hashes start.
void message_signer::end_of_headers() noexcept {
  std::size_t from_count = 0;
  std::string domain;
  for_each_field(_header, [&](const header_field& field) {
    _fields.push_back(field);
    if (iequals(field.name, "from") && from_count++ == 0) domain = from_domain(field.raw);
  });
  if (from_count != 1) domain.clear();
  _table->choose(domain, _chosen);
  if (_chosen.empty()) {
    _state = state::skip;
    return;
  }
  if (from_count != 1) {  // RFC 5322 §3.6: exactly one From:; RFC 6376 §5.4: it is signed
    _state = state::refuse_from;
    return;
  }
  for (const signing_key* key : _chosen) _body_used[index_of(key->body)] = true;
  for (std::size_t i = 0; i < 2; ++i) {
    if (!_body_used[i]) continue;
    _body[i].reset(i == 0 ? canonicalization::simple : canonicalization::relaxed, _stuffed);
    if (_body_hash[i] == nullptr) _body_hash[i] = std::make_unique<sha256>();
    _body_hash[i]->reset();
  }
  _state = state::body;
}

sign_outcome message_signer::finish(std::int64_t now_seconds) noexcept {
  if (_state == state::headers) {  // no empty line: all of it was header (RFC 5322 §3.5)
    if (_line_begin < _header.size()) {  // an unterminated last line
      const std::string_view line = std::string_view(_header).substr(_line_begin);
      for (const char c : line) _bare += c == '\r' ? 1 : 0;
    }
    end_of_headers();
  }
  switch (_state) {
    case state::idle:
    case state::headers:
    case state::signed_done:
    case state::skip: return sign_outcome::not_signed;
    case state::overflow: return sign_outcome::header_too_large;
    case state::refuse_from: return sign_outcome::no_single_from;
    case state::body: break;
  }
  std::uint64_t bare = _bare;
  for (std::size_t i = 0; i < 2; ++i) {
    if (!_body_used[i]) continue;
    _body[i].finish(*_body_hash[i]);
    bare += _body[i].bare_line_endings();
    const digest hash = _body_hash[i]->finish();
    _body_hash_text[i].clear();
    append_base64(hash, _body_hash_text[i]);
  }
  if (bare > 0) return sign_outcome::bare_line_ending;
  _out.clear();
  for (const signing_key* key : _chosen) {
    if (!sign_one(*key, now_seconds)) {
      _state = state::skip;
      return sign_outcome::failed;
    }
  }
  _state = state::signed_done;
  return sign_outcome::signed_ok;
}

// Appends one DKIM-Signature field: h= from the header block, the header hash over the
// selected fields and the field itself with an empty b= (RFC 6376 §3.7), then the signature.
bool message_signer::sign_one(const signing_key& key, std::int64_t now_seconds) noexcept {
  const std::string h = select_headers(_fields, key.headers, key.oversigned);
  signature_tags tags;
  tags.algorithm = name_of(key.key->algorithm());
  tags.header = key.header;
  tags.body = key.body;
  tags.domain = key.domain;
  tags.selector = key.selector;
  tags.timestamp = _table->timestamp ? now_seconds : -1;
  tags.expire = _table->expire_s > 0 ? now_seconds + _table->expire_s : -1;
  tags.headers = h;
  tags.body_hash = _body_hash_text[index_of(key.body)];
  const std::size_t field_at = _out.size();
  format_signature_field(tags, _out);
  _scratch.clear();
  append_signed_headers(key.header, _fields, h, _scratch);
  const std::string_view field = std::string_view(_out).substr(field_at);
  canonicalize_header(key.header, header_field{"DKIM-Signature", field}, _scratch, false);
  if (_header_hash == nullptr) _header_hash = std::make_unique<sha256>();
  _header_hash->reset();
  _header_hash->update(_scratch);
  if (!key.key->sign(_header_hash->finish(), _signature)) return false;
  append_signature_value(
      std::span(reinterpret_cast<const unsigned char*>(_signature.data()), _signature.size()),
      _out);
  return true;
}

}  // namespace ringmta::dkim
