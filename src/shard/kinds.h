// Op kinds the shard runtime keeps for itself (1..15; modules get 16+ from add_handler).
// Private to src/shard.
#pragma once

#include "ringmta/io/user_data.h"

namespace ringmta::shard::kinds {
inline constexpr io::op_kind wake = 1;         // a MSG_RING wake-up landed here
inline constexpr io::op_kind fd_received = 2;  // generation = sender shard, slot = cookie
inline constexpr io::op_kind fd_sent = 3;      // our MSG_RING fd send failed (success skipped)
inline constexpr io::op_kind internal = 4;     // results we only count (a failed wake-up send)
}  // namespace ringmta::shard::kinds
