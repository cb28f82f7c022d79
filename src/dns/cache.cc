#include "ringmta/dns/cache.h"

#include <algorithm>

#include "ringmta/core/assert.h"

namespace ringmta::dns {

namespace {

// Lengths: names are at most 255 bytes (RFC 1035 §2.3.4), a TXT record's joined strings at
// most 65,535; counts of records fit 16 bits (a DNS message has at most 65,535 of them).
void put_u8(std::string& out, std::uint32_t value) { out.push_back(static_cast<char>(value)); }
void put_u16(std::string& out, std::uint32_t value) {
  put_u8(out, value >> 8);
  put_u8(out, value & 0xff);
}
void put_u32(std::string& out, std::uint32_t value) {
  put_u16(out, value >> 16);
  put_u16(out, value & 0xffff);
}
void put_text(std::string& out, std::string_view text) {
  RINGMTA_ASSERT(text.size() <= 0xffff);
  put_u16(out, static_cast<std::uint32_t>(text.size()));
  out.append(text);
}

// Reads what put_* wrote; the cache reads only its own encoding (asserted in bounds).
struct reader {
  std::string_view in;
  std::size_t at = 0;
  std::uint32_t u8() noexcept {
    RINGMTA_ASSERT(at < in.size());
    return static_cast<std::uint8_t>(in[at++]);
  }
  std::uint32_t u16() noexcept {  // two statements: the operands of | are unsequenced
    const std::uint32_t high = u8();
    return high << 8 | u8();
  }
  std::uint32_t u32() noexcept {
    const std::uint32_t high = u16();
    return high << 16 | u16();
  }
  std::string_view bytes(std::size_t count) noexcept {
    RINGMTA_ASSERT(count <= in.size() - at);
    const std::string_view out = in.substr(at, count);
    at += count;
    return out;
  }
  void text(std::string& out) { out.assign(bytes(u16())); }
};

std::size_t address_bytes(const ip_address& address) noexcept {
  return address.family == 4 ? 4 : address.bytes.size();
}

std::size_t packed_bytes(const answer& value) noexcept {
  std::size_t bytes = 1 + 4 + 2 + value.canonical_name.size() + 2 + 2 + 2;
  for (const auto& record : value.mx) bytes += 2 + 2 + record.exchange.size();
  for (const auto& address : value.addresses) bytes += 1 + address_bytes(address);
  for (const auto& text : value.texts) bytes += 2 + text.size();
  return bytes;
}

void pack(const answer& value, std::uint32_t ttl_s, std::string& out) {
  put_u8(out, static_cast<std::uint32_t>(value.status));
  put_u32(out, ttl_s);
  put_text(out, value.canonical_name);
  put_u16(out, static_cast<std::uint32_t>(value.mx.size()));
  for (const auto& record : value.mx) {
    put_u16(out, record.preference);
    put_text(out, record.exchange);
  }
  put_u16(out, static_cast<std::uint32_t>(value.addresses.size()));
  for (const auto& address : value.addresses) {
    put_u8(out, address.family);
    out.append(reinterpret_cast<const char*>(address.bytes.data()), address_bytes(address));
  }
  put_u16(out, static_cast<std::uint32_t>(value.texts.size()));
  for (const auto& text : value.texts) put_text(out, text);
}

}  // namespace

void pack_answer(const answer& value, std::string& out) { pack(value, value.ttl_s, out); }

void unpack_answer(std::string_view packed, answer& out) {
  reader r{packed};
  out.status = static_cast<answer_status>(r.u8());
  out.ttl_s = r.u32();
  r.text(out.canonical_name);
  out.mx.resize(r.u16());
  for (auto& record : out.mx) {
    record.preference = static_cast<std::uint16_t>(r.u16());
    r.text(record.exchange);
  }
  out.addresses.resize(r.u16());
  for (auto& address : out.addresses) {
    address = ip_address{};
    address.family = static_cast<std::uint8_t>(r.u8());
    const std::string_view bytes = r.bytes(address_bytes(address));
    std::copy(bytes.begin(), bytes.end(), reinterpret_cast<char*>(address.bytes.data()));
  }
  out.texts.resize(r.u16());
  for (auto& text : out.texts) r.text(text);
  RINGMTA_ASSERT(r.at == packed.size());
}

cache::cache(std::size_t entries_max, std::size_t bytes_max, std::uint32_t ttl_max_s,
             std::uint32_t negative_ttl_max_s)
    : _entries_max(entries_max),
      _bytes_max(bytes_max),
      _ttl_max_s(ttl_max_s),
      _negative_ttl_max_s(negative_ttl_max_s) {
  RINGMTA_ASSERT(entries_max > 0 && bytes_max > 0);
  // The index grows with the entries (a rehash at each doubling, then never again: erasing
  // keeps the buckets) instead of reserving up to 65,536 buckets here: a simulated restart
  // built and cleared that table each time (issue 16: 0.9% of a crash-heavy run).
}

void cache::make_key(std::string_view name, record_type type) {
  const auto code = static_cast<std::uint16_t>(type);
  _key.clear();
  _key.push_back(static_cast<char>(code >> 8));
  _key.push_back(static_cast<char>(code & 0xff));
  _key.append(name);
}

void cache::erase(entry_list::iterator position) noexcept {
  _index.erase(position->key());
  _bytes -= position->bytes;
  _lru.erase(position);
}

const answer* cache::find(std::string_view name, record_type type, std::uint64_t now_ms) {
  make_key(name, type);
  const auto found = _index.find(std::string_view(_key));
  if (found == _index.end()) return nullptr;
  const auto position = found->second;
  if (now_ms >= position->expires_ms) {
    erase(position);
    return nullptr;
  }
  _lru.splice(_lru.begin(), _lru, position);
  unpack_answer(std::string_view(position->data).substr(position->key_bytes), _found);
  return &_found;
}

void cache::insert(std::string_view name, record_type type, const answer& value,
                   std::uint64_t now_ms) {
  make_key(name, type);
  if (const auto found = _index.find(std::string_view(_key)); found != _index.end())
    erase(found->second);
  std::uint32_t ttl_s = 0;
  if (value.status == answer_status::ok) ttl_s = std::min(value.ttl_s, _ttl_max_s);
  if (value.status == answer_status::nxdomain || value.status == answer_status::nodata)
    ttl_s = std::min(value.ttl_s, _negative_ttl_max_s);
  if (ttl_s == 0) return;  // RFC 1035 §3.2.1: TTL 0 means use once, do not cache

  _lru.push_front(entry{{}, now_ms + std::uint64_t{ttl_s} * 1000, 0,
                        static_cast<std::uint16_t>(_key.size())});
  entry& added = _lru.front();
  added.data.reserve(_key.size() + packed_bytes(value));  // one allocation, no slack
  added.data.assign(_key);
  pack(value, ttl_s, added.data);  // the capped TTL: what a hit reports
  // The entry's string, its list node and its hash node (with the bucket), as allocated.
  added.bytes = static_cast<std::uint32_t>(added.data.capacity() + sizeof(entry) + 64);
  _bytes += added.bytes;
  _index.emplace(added.key(), _lru.begin());
  while (!_lru.empty() && (_index.size() > _entries_max || _bytes > _bytes_max)) {
    erase(std::prev(_lru.end()));
    ++_evictions;
  }
}

void cache::clear() noexcept {
  _index.clear();
  _lru.clear();
  _bytes = 0;
}

}  // namespace ringmta::dns
