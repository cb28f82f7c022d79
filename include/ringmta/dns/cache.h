// A bounded TTL cache of answers keyed by (name, type), with LRU eviction.
// An entry holds its key and its answer packed into one string (a few dozen bytes for an MX or
// an address answer, where an `answer` with its strings and vectors costs ~250 in 3-4
// allocations): at 10,000 destinations the cache is full, and it holds what they wait with.
// find() unpacks the answer into a scratch value the cache owns.
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
  // entry is dropped). The pointer (to the cache's scratch copy) is valid until the next
  // non-const call.
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
    std::string data;  // the key: type (2 bytes, big-endian) and name; then the packed answer
    std::uint64_t expires_ms = 0;
    std::uint32_t bytes = 0;      // what it counts against bytes_max
    std::uint16_t key_bytes = 0;  // of data
    std::string_view key() const noexcept { return std::string_view(data).substr(0, key_bytes); }
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
  answer _found;     // find()'s unpacked answer; keeps its capacity
  std::size_t _bytes = 0;
  std::uint64_t _evictions = 0;
};

// The cache's encoding of an answer (appended to `out`), and back; unpack reuses the capacity
// of `out`'s strings and vectors. Exposed for the round-trip test.
void pack_answer(const answer& value, std::string& out);
void unpack_answer(std::string_view packed, answer& out);

}  // namespace ringmta::dns
