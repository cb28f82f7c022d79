// loadkit::id_tracker: which X-Blast-Id numbers of which runs a receiver has seen, to report
// duplicates (seen twice) and missing ids (expected, never seen). One per shard; the reporter
// merges them, and an id seen on two shards counts as a duplicate too.
//
// A bitset per run, grown by doubling up to ids below id_limit (32 MiB of bits at most per run);
// growth allocates O(log n) times per run, never per message. At most runs_max runs are tracked;
// ids of further runs or beyond id_limit are counted as untracked.
// Never: shared between threads, or throws on the hot path (std::vector growth may throw
// bad_alloc, which terminates the tool: memory is bounded by the limits above).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace ringmta::loadkit {

// "--expect-ids RUN:FIRST-LAST" (inclusive).
struct id_range {
  std::string run;
  std::uint64_t first = 0;
  std::uint64_t last = 0;
};
bool parse_id_range(std::string_view text, id_range& out);

class id_tracker {
 public:
  static constexpr std::uint64_t id_limit = std::uint64_t{1} << 28;
  static constexpr std::size_t runs_max = 16;

  enum class outcome : std::uint8_t { first, duplicate, untracked };

  outcome note(std::string_view run, std::uint64_t n);
  // Adds `other`; an id present in both counts as one more duplicate.
  void merge(const id_tracker& other);
  // Ids in [first, last] of `run` never noted.
  std::uint64_t missing(std::string_view run, std::uint64_t first, std::uint64_t last) const;
  // Reserves room for ids up to `last` of `run` (start-up, from --expect-ids).
  void reserve(std::string_view run, std::uint64_t last);

  std::uint64_t duplicates() const noexcept { return _duplicates; }
  std::uint64_t distinct() const noexcept { return _distinct; }
  std::uint64_t untracked() const noexcept { return _untracked; }

 private:
  struct run_ids {
    std::string run;
    std::vector<std::uint64_t> bits;
  };
  run_ids* find(std::string_view run, bool create);
  const run_ids* find(std::string_view run) const;

  std::vector<run_ids> _runs;
  std::uint64_t _duplicates = 0;
  std::uint64_t _distinct = 0;
  std::uint64_t _untracked = 0;
};

}  // namespace ringmta::loadkit
