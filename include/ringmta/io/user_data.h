// user_data packing and the completion record handed to completion handlers.
//
// Every SQE carries a 64-bit user_data: op kind (8 bits) | generation (24 bits) | slot (32 bits).
// The kind routes the completion to the module that owns it; the slot indexes that module's
// table (io::slot_table); the generation changes each time a slot is reused, so a completion
// that arrives after its slot was freed and handed to someone else (a late multishot CQE, a
// cancelled op) is recognised as stale instead of corrupting the new owner.
//
// Invariants: pack/unpack are exact inverses for generation < 2^24; kind 0 is never a valid op.
// Never: includes <liburing.h> (src/io is the only place that does); the CQE flag values below
// are checked against the kernel's in src/io/ring.cc.
#pragma once

#include <cstdint>

namespace ringmta::io {

using op_kind = std::uint8_t;

// Kinds 0..15 are the runtime's own (shard wake-ups, fd hand-off, internal NOPs); modules get
// theirs from shard::shard::add_handler(), or pick from 16..255 when they drive an io::ring
// without the shard runtime (tests, tools).
inline constexpr op_kind op_kind_invalid = 0;
inline constexpr op_kind op_kind_first_free = 16;

inline constexpr unsigned generation_bits = 24;
inline constexpr std::uint32_t generation_mask = (1u << generation_bits) - 1;

struct op_tag {
  op_kind kind = op_kind_invalid;
  std::uint32_t generation = 0;  // only the low 24 bits are kept
  std::uint32_t slot = 0;
};

constexpr std::uint64_t pack_user_data(op_kind kind, std::uint32_t generation,
                                       std::uint32_t slot) noexcept {
  return (std::uint64_t{kind} << 56) | (std::uint64_t{generation & generation_mask} << 32) |
         std::uint64_t{slot};
}
constexpr std::uint64_t pack_user_data(const op_tag& tag) noexcept {
  return pack_user_data(tag.kind, tag.generation, tag.slot);
}
constexpr op_tag unpack_user_data(std::uint64_t user_data) noexcept {
  return op_tag{static_cast<op_kind>(user_data >> 56),
                static_cast<std::uint32_t>(user_data >> 32) & generation_mask,
                static_cast<std::uint32_t>(user_data)};
}
constexpr op_kind kind_of(std::uint64_t user_data) noexcept {
  return static_cast<op_kind>(user_data >> 56);
}

// CQE flags (values of IORING_CQE_F_*; equality is asserted where liburing is included).
inline constexpr std::uint32_t cqe_flag_buffer = 1u << 0;          // upper 16 bits: buffer id
inline constexpr std::uint32_t cqe_flag_more = 1u << 1;            // multishot: more will come
inline constexpr std::uint32_t cqe_flag_socket_nonempty = 1u << 2; // recv: data still queued
inline constexpr std::uint32_t cqe_flag_notification = 1u << 3;    // send_zc: buffer released
inline constexpr std::uint32_t cqe_flag_buffer_more = 1u << 4;     // incremental buffer: not done
inline constexpr unsigned cqe_buffer_shift = 16;

// A copy of one CQE, taken off the completion ring before handlers run (so a handler may submit
// and reap freely without the CQ slot being reused under it).
struct completion {
  std::uint64_t user_data = 0;
  std::int32_t res = 0;  // >= 0: op result; < 0: -errno
  std::uint32_t flags = 0;

  op_tag tag() const noexcept { return unpack_user_data(user_data); }
  op_kind kind() const noexcept { return kind_of(user_data); }
  bool failed() const noexcept { return res < 0; }
  int error() const noexcept { return res < 0 ? -res : 0; }  // positive errno
  // Multishot (accept, recv, timeout, poll): false on the op's final CQE, after which it must be
  // re-armed if still wanted. Send_zc: a notification CQE follows this one.
  bool more() const noexcept { return (flags & cqe_flag_more) != 0; }
  bool has_buffer() const noexcept { return (flags & cqe_flag_buffer) != 0; }
  std::uint16_t buffer_id() const noexcept {
    return static_cast<std::uint16_t>(flags >> cqe_buffer_shift);
  }
  bool notification() const noexcept { return (flags & cqe_flag_notification) != 0; }
  bool socket_nonempty() const noexcept { return (flags & cqe_flag_socket_nonempty) != 0; }
  bool buffer_more() const noexcept { return (flags & cqe_flag_buffer_more) != 0; }
};

}  // namespace ringmta::io
