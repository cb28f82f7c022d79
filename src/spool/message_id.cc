#include "ringmta/spool/message_id.h"

#include "ringmta/core/assert.h"

namespace ringmta::spool {

namespace {
constexpr unsigned low_bits = message_id_shard_bits + message_id_sequence_bits;
constexpr message_id sequence_mask = (message_id{1} << message_id_sequence_bits) - 1;
constexpr std::int64_t seconds_max = (std::int64_t{1} << (64 - low_bits)) - 1;

message_id compose(std::int64_t seconds, std::uint32_t shard, message_id sequence) noexcept {
  return (static_cast<message_id>(seconds) << low_bits) |
         (static_cast<message_id>(shard) << message_id_sequence_bits) | sequence;
}
}  // namespace

message_id_generator::message_id_generator(std::uint32_t shard, message_id floor) noexcept
    : _shard(shard), _last(0) {
  RINGMTA_ASSERT(shard <= message_id_shard_max);
  // Continue in the floor's second (or later) with this shard's bits, strictly above the floor
  // whatever shard the floor's id came from.
  const std::int64_t seconds = message_id_seconds(floor);
  _last = compose(seconds, shard, sequence_mask);
  if (_last <= floor) _last = floor;  // unreachable for well-formed ids; keeps next() > floor
}

message_id message_id_generator::next(std::int64_t now_seconds) noexcept {
  if (now_seconds < 0) now_seconds = 0;
  if (now_seconds > seconds_max) now_seconds = seconds_max;
  const message_id fresh = compose(now_seconds, _shard, 0);
  if (fresh > _last) {
    _last = fresh;
    return _last;
  }
  // Same second, or the clock is behind what we already handed out: count on; a full
  // sequence spills into the next second (the id runs ahead of the clock until it catches up).
  std::int64_t seconds = message_id_seconds(_last);
  message_id sequence = (_last & sequence_mask) + 1;
  if (sequence > sequence_mask || message_id_shard(_last) != _shard) {
    seconds += 1;
    sequence = 0;
  }
  _last = compose(seconds, _shard, sequence);
  return _last;
}

std::array<char, 17> format_message_id(message_id id) noexcept {
  static constexpr char digits[] = "0123456789abcdef";
  std::array<char, 17> text{};
  for (int i = 15; i >= 0; --i) {
    text[static_cast<std::size_t>(i)] = digits[id & 0xf];
    id >>= 4;
  }
  text[16] = '\0';
  return text;
}

std::optional<message_id> parse_message_id(std::string_view text) noexcept {
  if (text.size() != 16) return std::nullopt;
  message_id value = 0;
  for (char c : text) {
    unsigned digit;
    if (c >= '0' && c <= '9') {
      digit = static_cast<unsigned>(c - '0');
    } else if (c >= 'a' && c <= 'f') {
      digit = static_cast<unsigned>(c - 'a' + 10);
    } else {
      return std::nullopt;
    }
    value = (value << 4) | digit;
  }
  return value;
}

}  // namespace ringmta::spool
