#include "ringmta/dns/cache.h"

#include <algorithm>

#include "ringmta/core/assert.h"

namespace ringmta::dns {

std::size_t answer_bytes(const answer& value) noexcept {
  std::size_t bytes = sizeof(answer) + value.canonical_name.capacity();
  bytes += value.mx.capacity() * sizeof(mx_record);
  for (const auto& record : value.mx) bytes += record.exchange.capacity();
  bytes += value.addresses.capacity() * sizeof(ip_address);
  bytes += value.texts.capacity() * sizeof(std::string);
  for (const auto& text : value.texts) bytes += text.capacity();
  return bytes;
}

cache::cache(std::size_t entries_max, std::size_t bytes_max, std::uint32_t ttl_max_s,
             std::uint32_t negative_ttl_max_s)
    : _entries_max(entries_max),
      _bytes_max(bytes_max),
      _ttl_max_s(ttl_max_s),
      _negative_ttl_max_s(negative_ttl_max_s) {
  RINGMTA_ASSERT(entries_max > 0 && bytes_max > 0);
  _index.reserve(std::min<std::size_t>(entries_max, 1u << 16));
}

void cache::make_key(std::string_view name, record_type type) {
  const auto code = static_cast<std::uint16_t>(type);
  _key.clear();
  _key.push_back(static_cast<char>(code >> 8));
  _key.push_back(static_cast<char>(code & 0xff));
  _key.append(name);
}

void cache::erase(entry_list::iterator position) noexcept {
  _index.erase(std::string_view(position->key));
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
  return &position->value;
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

  _lru.push_front(entry{_key, value, now_ms + std::uint64_t{ttl_s} * 1000, 0});
  entry& added = _lru.front();
  added.value.ttl_s = ttl_s;
  added.bytes = answer_bytes(added.value) + added.key.capacity() + 64;  // 64: list+hash nodes
  _bytes += added.bytes;
  _index.emplace(std::string_view(added.key), _lru.begin());
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
