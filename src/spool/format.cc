#include "format.h"

#include "xxh3.h"

#include <unistd.h>

#include <bit>
#include <cerrno>
#include <cstring>

namespace ringmta::spool::format {

static_assert(std::endian::native == std::endian::little, "spool files are little-endian");

std::uint64_t seed(std::uint64_t salt, std::uint64_t offset) noexcept {
  return salt ^ (offset * 0x9e3779b97f4a7c15ull);
}

void encode_header_prefix(char* out, record_type type, std::uint32_t payload_bytes,
                          message_id id) noexcept {
  std::memset(out, 0, header_bytes);
  store_le<std::uint32_t>(out, magic);
  out[4] = static_cast<char>(type);
  store_le<std::uint32_t>(out + 8, payload_bytes);
  store_le<std::uint64_t>(out + 16, id);
}

// XXH3's streaming and one-shot forms give the same value for the same bytes. A record of up
// to 240 bytes with its header (journal states, voids, small envelopes: most records) is copied
// together and hashed in one call: the streaming state costs ~1,000 instructions a record (its
// reset derives a secret from the seed, each update buffers), against ~100 for the short
// one-shot path — recovery verifies every live record at each start (ringmta-sim: 9% of a
// run with crashes). Longer ones (bodies) stream: their bytes dominate, not the overhead.
static std::uint64_t checksum(const char* header, std::string_view payload,
                              std::uint64_t seed_value) noexcept {
  constexpr std::size_t one_shot_bytes_max = 240;  // XXH3's mid-size inputs, no long loop
  if (payload.size() + checksummed_header_bytes <= one_shot_bytes_max) {
    char bytes[one_shot_bytes_max];
    std::memcpy(bytes, payload.data(), payload.size());
    std::memcpy(bytes + payload.size(), header, checksummed_header_bytes);
    return xxh3::hash(bytes, payload.size() + checksummed_header_bytes, seed_value);
  }
  XXH3_state_t state;
  xxh3::reset(state, seed_value);
  xxh3::update(state, payload.data(), payload.size());
  xxh3::update(state, header, checksummed_header_bytes);
  return xxh3::digest(state);
}

void encode_record(char* out, record_type type, message_id id, std::string_view payload,
                   std::uint64_t seed_value) noexcept {
  encode_header_prefix(out, type, static_cast<std::uint32_t>(payload.size()), id);
  store_le<std::uint64_t>(out + checksummed_header_bytes, checksum(out, payload, seed_value));
}

bool decode_header(const char* in, record_header& out) noexcept {
  if (load_le<std::uint32_t>(in) != magic) return false;
  const auto type = static_cast<std::uint8_t>(in[4]);
  if (type < 1 || type > static_cast<std::uint8_t>(record_type::pause)) return false;
  out.type = static_cast<record_type>(type);
  out.payload_bytes = load_le<std::uint32_t>(in + 8);
  out.id = load_le<std::uint64_t>(in + 16);
  out.checksum = load_le<std::uint64_t>(in + checksummed_header_bytes);
  return out.payload_bytes <= payload_bytes_max;
}

bool verify(const char* header, std::string_view payload, std::uint64_t seed_value) noexcept {
  return checksum(header, payload, seed_value) ==
         load_le<std::uint64_t>(header + checksummed_header_bytes);
}

void encode_file_header(const file_header& value, char* out) noexcept {
  store_le(out, value.version);
  store_le(out + 4, value.shard);
  store_le(out + 8, value.file_id);
  store_le(out + 16, value.salt);
  store_le(out + 24, value.id_floor);
  store_le(out + 32, value.reserved);
}

file_header decode_file_header(const char* in) noexcept {
  file_header value;
  value.version = load_le<std::uint32_t>(in);
  value.shard = load_le<std::uint32_t>(in + 4);
  value.file_id = load_le<std::uint64_t>(in + 8);
  value.salt = load_le<std::uint64_t>(in + 16);
  value.id_floor = load_le<std::uint64_t>(in + 24);
  value.reserved = load_le<std::uint64_t>(in + 32);
  return value;
}

void encode_state(const state_payload& value, char* out) noexcept {
  store_le(out, value.recipient);
  out[2] = static_cast<char>(value.state);
  out[3] = 0;
  store_le(out + 4, value.attempts);
  store_le(out + 8, value.next_attempt_seconds);
}

state_payload decode_state(const char* in) noexcept {
  state_payload value;
  value.recipient = load_le<std::uint16_t>(in);
  value.state = static_cast<std::uint8_t>(in[2]);
  value.attempts = load_le<std::uint32_t>(in + 4);
  value.next_attempt_seconds = load_le<std::int64_t>(in + 8);
  return value;
}

void encode_action(const action_payload& value, char* out) noexcept {
  std::memset(out, 0, action_payload_bytes);
  out[0] = static_cast<char>(value.action);
  store_le(out + 8, value.seconds);
}

action_payload decode_action(const char* in) noexcept {
  action_payload value;
  value.action = static_cast<std::uint8_t>(in[0]);
  value.seconds = load_le<std::int64_t>(in + 8);
  return value;
}

void encode_pause(const destination_pause& value, std::string& out) {
  char fixed[pause_fixed_bytes] = {};
  fixed[0] = static_cast<char>(value.kind);
  store_le(fixed + 4, value.connections_max);
  store_le(fixed + 8, value.until_ms);
  store_le(fixed + 16, value.messages_per_second_max);
  out.append(fixed, sizeof fixed);
  out.append(value.destination);
}

bool decode_pause(std::string_view payload, destination_pause& out) {
  if (payload.size() <= pause_fixed_bytes ||
      payload.size() > pause_fixed_bytes + destination_name_bytes_max) {
    return false;
  }
  const auto kind = static_cast<std::uint8_t>(payload[0]);
  if (kind > static_cast<std::uint8_t>(pause_kind::throttle)) return false;
  out.kind = static_cast<pause_kind>(kind);
  out.connections_max = load_le<std::uint32_t>(payload.data() + 4);
  out.until_ms = load_le<std::int64_t>(payload.data() + 8);
  out.messages_per_second_max = load_le<double>(payload.data() + 16);
  out.destination.assign(payload.substr(pause_fixed_bytes));
  return true;
}

core::result<std::string> read_commit_record(int fd, std::uint64_t salt, std::uint64_t offset,
                                             std::uint32_t bytes, message_id id) {
  if (bytes < header_bytes || bytes > header_bytes + payload_bytes_max) return core::fail(EBADMSG);
  std::string record(bytes, '\0');
  std::size_t done = 0;
  while (done < record.size()) {
    const ssize_t got = ::pread(fd, record.data() + done, record.size() - done,
                                static_cast<off_t>(offset + done));
    if (got < 0 && errno == EINTR) continue;
    if (got < 0) return core::fail(errno);
    if (got == 0) return core::fail(EIO);
    done += static_cast<std::size_t>(got);
  }
  auto payload = check_commit_record(record, salt, offset, id);
  if (!payload) return core::fail(payload.error());
  return std::string(payload.value());
}

core::result<std::string_view> check_commit_record(std::string_view record, std::uint64_t salt,
                                                   std::uint64_t offset, message_id id) noexcept {
  if (record.size() < header_bytes) return core::fail(EBADMSG);
  record_header header;
  const std::string_view payload = record.substr(header_bytes);
  if (!decode_header(record.data(), header) || header.id != id ||
      header.type != record_type::commit || header.payload_bytes != payload.size() ||
      !verify(record.data(), payload, seed(salt, offset))) {
    return core::fail(EBADMSG);
  }
  return payload;
}

}  // namespace ringmta::spool::format
