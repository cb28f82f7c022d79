#include "ringmta/spool/envelope.h"

#include <cerrno>
#include <cstring>

#include "ringmta/core/assert.h"

namespace ringmta::spool {

namespace {

constexpr std::uint8_t encoding_version = 1;
// Optional fields after the recipients, each a tag byte and its value; absent when empty, so
// an envelope without them encodes exactly as before they existed. Unknown tags: EBADMSG.
enum optional_field : std::uint8_t { field_pool = 1 };

template <typename T>
void put(std::string& out, T value) {
  char bytes[sizeof(T)];
  std::memcpy(bytes, &value, sizeof value);  // little-endian host (format.cc asserts it)
  out.append(bytes, sizeof bytes);
}

void put_string(std::string& out, std::string_view value) {
  RINGMTA_ASSERT(value.size() <= envelope_string_bytes_max);
  put<std::uint16_t>(out, static_cast<std::uint16_t>(value.size()));
  out.append(value);
}

// Bounds-checked reader: every get fails (and stays failed) past the end.
class reader {
 public:
  explicit reader(std::string_view bytes) noexcept : _bytes(bytes) {}
  template <typename T>
  T get() noexcept {
    T value{};
    if (!_ok || _bytes.size() - _position < sizeof(T)) {
      _ok = false;
      return value;
    }
    std::memcpy(&value, _bytes.data() + _position, sizeof value);
    _position += sizeof value;
    return value;
  }
  // A view into the input (no copy: recovery walks millions of envelopes).
  std::string_view get_string() noexcept {
    const auto size = get<std::uint16_t>();
    if (!_ok || size > envelope_string_bytes_max || _bytes.size() - _position < size) {
      _ok = false;
      return {};
    }
    const auto value = _bytes.substr(_position, size);
    _position += size;
    return value;
  }
  bool ok() const noexcept { return _ok; }
  bool at_end() const noexcept { return _position == _bytes.size(); }
  std::size_t remaining() const noexcept { return _bytes.size() - _position; }

 private:
  std::string_view _bytes;
  std::size_t _position = 0;
  bool _ok = true;
};

}  // namespace

const char* recipient_state_name(recipient_state state) noexcept {
  switch (state) {
    case recipient_state::queued: return "queued";
    case recipient_state::deferred: return "deferred";
    case recipient_state::delivered: return "delivered";
    case recipient_state::bounced: return "bounced";
    case recipient_state::deleted: return "deleted";
  }
  return "unknown";
}

void encode_envelope(const envelope& value, std::string& out, std::string_view pool) {
  RINGMTA_ASSERT(value.recipients.size() <= envelope_recipients_max);
  put<std::uint8_t>(out, encoding_version);
  put<std::uint64_t>(out, value.id);
  put<std::int64_t>(out, value.received_seconds);
  put<std::uint64_t>(out, value.size_declared);
  put<std::uint8_t>(out, static_cast<std::uint8_t>(value.body));
  put<std::uint8_t>(out, value.smtputf8 ? 1 : 0);
  put<std::uint8_t>(out, static_cast<std::uint8_t>(value.ret));
  put_string(out, value.reverse_path);
  put_string(out, value.envid);
  put_string(out, value.client_address);
  put_string(out, value.helo);
  put<std::uint32_t>(out, static_cast<std::uint32_t>(value.recipients.size()));
  for (const auto& rcpt : value.recipients) {
    put<std::uint8_t>(out, rcpt.notify);
    put_string(out, rcpt.address);
    put_string(out, rcpt.orcpt);
  }
  if (!pool.empty()) {
    put<std::uint8_t>(out, field_pool);
    put_string(out, pool);
  }
}

namespace {

// The one walk over the encoding, shared by decode_envelope and decode_envelope_summary so that
// both accept exactly the same inputs. `whole`: copy the strings and recipients into `value`;
// otherwise only the fixed fields and the recipient count are kept (no allocation).
template <bool whole>
bool decode_into(std::string_view bytes, envelope& value, std::uint32_t& recipients,
                 std::string* pool) {
  reader in(bytes);
  if (in.get<std::uint8_t>() != encoding_version) return false;
  value.id = in.get<std::uint64_t>();
  value.received_seconds = in.get<std::int64_t>();
  value.size_declared = in.get<std::uint64_t>();
  const auto body = in.get<std::uint8_t>();
  const auto smtputf8 = in.get<std::uint8_t>();
  const auto ret = in.get<std::uint8_t>();
  if (body > 3 || smtputf8 > 1 || ret > 2) return false;
  value.body = static_cast<body_type>(body);
  value.smtputf8 = smtputf8 == 1;
  value.ret = static_cast<dsn_return>(ret);
  const auto text = [&in](std::string& to) {
    const auto read = in.get_string();
    if constexpr (whole) to.assign(read);
  };
  text(value.reverse_path);
  text(value.envid);
  text(value.client_address);
  text(value.helo);
  const auto count = in.get<std::uint32_t>();
  // Each recipient takes at least 5 bytes: reject counts the input cannot hold before reserving.
  if (!in.ok() || count > envelope_recipients_max || count > in.remaining() / 5) return false;
  recipients = count;
  if constexpr (whole) value.recipients.resize(count);
  for (std::uint32_t i = 0; i < count; ++i) {
    const auto notify = in.get<std::uint8_t>();
    const auto address = in.get_string();
    const auto orcpt = in.get_string();
    if constexpr (whole) value.recipients[i] = recipient{std::string(address), notify,
                                                         std::string(orcpt)};
  }
  std::string_view pool_value;
  bool pool_seen = false;
  while (in.ok() && !in.at_end()) {
    if (in.get<std::uint8_t>() != field_pool || pool_seen) return false;
    pool_value = in.get_string();
    pool_seen = true;
    if (in.ok() && pool_value.empty()) return false;  // never written empty
  }
  if (!in.ok()) return false;
  if (pool != nullptr) pool->assign(pool_value);
  return true;
}

}  // namespace

core::result<envelope> decode_envelope(std::string_view bytes, std::string* pool) {
  envelope value;
  std::uint32_t recipients = 0;
  if (!decode_into<true>(bytes, value, recipients, pool)) return core::fail(EBADMSG);
  return value;
}

core::result<envelope_summary> decode_envelope_summary(std::string_view bytes) {
  envelope value;  // its strings and recipients stay empty: nothing is allocated
  std::uint32_t recipients = 0;
  if (!decode_into<false>(bytes, value, recipients, nullptr)) return core::fail(EBADMSG);
  return envelope_summary{value.id, value.received_seconds, recipients};
}

}  // namespace ringmta::spool
