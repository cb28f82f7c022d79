#include "loadkit/id_tracker.h"

#include <bit>
#include <charconv>

#include "loadkit/integrity.h"

namespace ringmta::loadkit {

bool parse_id_range(std::string_view text, id_range& out) {
  const std::size_t colon = text.rfind(':');
  if (colon == std::string_view::npos) return false;
  const std::string_view run = text.substr(0, colon);
  const std::string_view range = text.substr(colon + 1);
  const std::size_t dash = range.find('-');
  if (!valid_run(run) || dash == std::string_view::npos) return false;
  const auto number = [](std::string_view digits, std::uint64_t& value) {
    const auto [end, error] = std::from_chars(digits.data(), digits.data() + digits.size(), value);
    return !digits.empty() && error == std::errc() && end == digits.data() + digits.size();
  };
  std::uint64_t first = 0, last = 0;
  if (!number(range.substr(0, dash), first) || !number(range.substr(dash + 1), last) ||
      first > last || last >= id_tracker::id_limit) {
    return false;
  }
  out = id_range{std::string(run), first, last};
  return true;
}

id_tracker::run_ids* id_tracker::find(std::string_view run, bool create) {
  for (auto& entry : _runs) {
    if (entry.run == run) return &entry;
  }
  if (!create || _runs.size() >= runs_max) return nullptr;
  if (_runs.capacity() == 0) _runs.reserve(runs_max);
  _runs.push_back(run_ids{std::string(run), {}});
  return &_runs.back();
}

const id_tracker::run_ids* id_tracker::find(std::string_view run) const {
  for (const auto& entry : _runs) {
    if (entry.run == run) return &entry;
  }
  return nullptr;
}

void id_tracker::reserve(std::string_view run, std::uint64_t last) {
  run_ids* entry = find(run, true);
  if (entry == nullptr || last >= id_limit) return;
  const std::size_t words = static_cast<std::size_t>(last / 64 + 1);
  if (entry->bits.size() < words) entry->bits.resize(words, 0);
}

id_tracker::outcome id_tracker::note(std::string_view run, std::uint64_t n) {
  run_ids* entry = n < id_limit ? find(run, true) : nullptr;
  if (entry == nullptr) {
    ++_untracked;
    return outcome::untracked;
  }
  const std::size_t word = static_cast<std::size_t>(n / 64);
  if (word >= entry->bits.size()) {
    entry->bits.resize(std::bit_ceil(word + 1), 0);  // doubling: O(log n) growths
  }
  const std::uint64_t bit = std::uint64_t{1} << (n % 64);
  if ((entry->bits[word] & bit) != 0) {
    ++_duplicates;
    return outcome::duplicate;
  }
  entry->bits[word] |= bit;
  ++_distinct;
  return outcome::first;
}

void id_tracker::merge(const id_tracker& other) {
  _duplicates += other._duplicates;
  _untracked += other._untracked;
  for (const auto& theirs : other._runs) {
    run_ids* ours = find(theirs.run, true);
    if (ours == nullptr) {
      for (const auto word : theirs.bits) _untracked += static_cast<unsigned>(std::popcount(word));
      continue;
    }
    if (ours->bits.size() < theirs.bits.size()) ours->bits.resize(theirs.bits.size(), 0);
    for (std::size_t i = 0; i < theirs.bits.size(); ++i) {
      const std::uint64_t both = ours->bits[i] & theirs.bits[i];
      _duplicates += static_cast<unsigned>(std::popcount(both));
      _distinct += static_cast<unsigned>(std::popcount(theirs.bits[i] & ~ours->bits[i]));
      ours->bits[i] |= theirs.bits[i];
    }
  }
}

std::uint64_t id_tracker::missing(std::string_view run, std::uint64_t first,
                                  std::uint64_t last) const {
  const run_ids* entry = find(run);
  std::uint64_t absent = 0;
  for (std::uint64_t n = first; n <= last; ++n) {
    const std::size_t word = static_cast<std::size_t>(n / 64);
    const bool seen = entry != nullptr && word < entry->bits.size() &&
                      (entry->bits[word] >> (n % 64) & 1) != 0;
    if (!seen) ++absent;
  }
  return absent;
}

}  // namespace ringmta::loadkit
