// Message ids: unique across shards and restarts, readable, ordered by creation time.
//
// Layout of the 64-bit value: wall seconds (34 bits) | shard (8 bits) | sequence (22 bits).
// The shard bits make ids of different shards disjoint; the generator never hands out an id
// at or below its floor, and the spool persists the floor (segment headers and every commit
// record), so a clock that steps back after a restart cannot repeat an id. When the clock is
// behind the floor the generator runs ahead of it (sequence overflow advances the seconds).
// Never reads a clock: the caller passes the time.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string_view>

namespace ringmta::spool {

using message_id = std::uint64_t;

inline constexpr unsigned message_id_shard_bits = 8;
inline constexpr unsigned message_id_sequence_bits = 22;
inline constexpr std::uint32_t message_id_shard_max = (1u << message_id_shard_bits) - 1;

// Seconds part of an id (when the id was made, as far as the generator's clock knew).
inline std::int64_t message_id_seconds(message_id id) noexcept {
  return static_cast<std::int64_t>(id >> (message_id_shard_bits + message_id_sequence_bits));
}
inline std::uint32_t message_id_shard(message_id id) noexcept {
  return static_cast<std::uint32_t>(id >> message_id_sequence_bits) & message_id_shard_max;
}

class message_id_generator {
 public:
  // `floor`: the largest id this shard may ever have handed out (0 for a new spool).
  message_id_generator(std::uint32_t shard, message_id floor) noexcept;

  message_id next(std::int64_t now_seconds) noexcept;
  message_id last() const noexcept { return _last; }

 private:
  std::uint32_t _shard;
  message_id _last;
};

// 16 lowercase hex digits: sorts like the value, so `ls` and logs order by time.
std::array<char, 17> format_message_id(message_id id) noexcept;
std::optional<message_id> parse_message_id(std::string_view text) noexcept;

}  // namespace ringmta::spool
