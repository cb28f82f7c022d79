// A bounded TTL cache of answers keyed by (name, type), with LRU eviction.
//
// Invariants: size() <= entries_max and bytes() <= bytes_max after every insert; an entry is
// never returned after its expiry time; positive TTLs are capped by ttl_max_s and negative ones
// (NXDOMAIN, NODATA: RFC 2308 §5) by negative_ttl_max_s; failures are never cached.
// Never: reads no clock (time comes in as now_ms), shares nothing across threads.
#pragma once

#include <cstddef>
#include <cstdint>
#include <list>
#include <string>
#include <string_view>
#include <unordered_map>

#include "ringmta/dns/types.h"

namespace ringmta::dns {

class cache {
 public:
  cache(std::size_t entries_max, std::size_t bytes_max, std::uint32_t ttl_max_s,
        std::uint32_t negative_ttl_max_s);

  // A live entry for (name, type), marked most recently used; nullptr on a miss (an expired
  // entry is dropped). The pointer is valid until the next non-const call.
  const answer* find(std::string_view name, record_type type, std::uint64_t now_ms);

  // Stores `value` (replacing an older entry) for its capped TTL. Temporary failures and TTL 0
  // are not stored, and drop any older entry. Evicts least recently used entries past a bound.
  void insert(std::string_view name, record_type type, const answer& value, std::uint64_t now_ms);

  void clear() noexcept;
  std::size_t size() const noexcept { return _index.size(); }
  std::size_t bytes() const noexcept { return _bytes; }
  std::uint64_t evictions() const noexcept { return _evictions; }

 private:
  struct entry {
    std::string key;  // type (2 bytes, big-endian) then the name
    answer value;
    std::uint64_t expires_ms;
    std::size_t bytes;
  };
  using entry_list = std::list<entry>;

  void make_key(std::string_view name, record_type type);
  void erase(entry_list::iterator position) noexcept;

  std::size_t _entries_max;
  std::size_t _bytes_max;
  std::uint32_t _ttl_max_s;
  std::uint32_t _negative_ttl_max_s;
  entry_list _lru;  // front: most recently used
  std::unordered_map<std::string_view, entry_list::iterator> _index;  // views into entry::key
  std::string _key;  // scratch, keeps its capacity
  std::size_t _bytes = 0;
  std::uint64_t _evictions = 0;
};

// What an answer costs in the cache's byte bound: its strings and vectors plus node overhead.
std::size_t answer_bytes(const answer& value) noexcept;

}  // namespace ringmta::dns
