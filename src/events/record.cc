// Record filtering and conversion for the webhook. See events/record.h.
#include "ringmta/events/record.h"

#include <algorithm>
#include <array>
#include <stdexcept>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "ringmta/admin/log.h"
#include "ringmta/events/event_log.h"

namespace ringmta::events {

namespace {

constexpr std::array<std::string_view, 44> known_types = {
    // mail flow (shards)
    "received", "delivered", "deferred", "bounced", "delayed", "dsn_queued", "rejected",
    "connect", "disconnect", "auth", "tls_failed", "accept_paused", "spool_read_failed",
    "reply_rule", "log_records_dropped",
    // operators and the daemon
    "operator", "admin_action", "suspension_ended", "signal", "reloaded", "reload_rejected",
    "reload_restart_needed", "started", "stopping", "stopped", "start_failed", "warning",
    "listening", "admin_listening", "admin_socket", "privileges", "cpu_pinning", "dkim_key",
    "tls", "outbound_tls", "spool_problem", "spool_recovered", "log_output", "log_reopened",
    "log_reopen_failed",
    // the webhook itself
    "events_failed", "events_recovered", "events_dropped", "events_cursor"};

constexpr std::array<std::string_view, 12> default_types = {
    "received", "delivered", "deferred", "bounced", "delayed", "dsn_queued", "rejected",
    "operator", "admin_action", "suspension_ended", "reply_rule", "events_dropped"};

// RFC 3629 §4: the length of the valid UTF-8 sequence at the start of `text`, 0 if none.
std::size_t utf8_sequence(std::string_view text) noexcept {
  const auto byte = [&](std::size_t i) { return static_cast<unsigned char>(text[i]); };
  const unsigned char first = byte(0);
  if (first < 0x80) return 1;
  std::size_t length = 0;
  unsigned char low = 0x80, high = 0xbf;  // the second byte's range
  if (first >= 0xc2 && first <= 0xdf) length = 2;
  else if (first >= 0xe0 && first <= 0xef) {
    length = 3;
    if (first == 0xe0) low = 0xa0;   // overlong
    if (first == 0xed) high = 0x9f;  // surrogates
  } else if (first >= 0xf0 && first <= 0xf4) {
    length = 4;
    if (first == 0xf0) low = 0x90;
    if (first == 0xf4) high = 0x8f;  // above U+10FFFF
  } else {
    return 0;
  }
  if (text.size() < length || byte(1) < low || byte(1) > high) return 0;
  for (std::size_t i = 2; i < length; ++i)
    if (byte(i) < 0x80 || byte(i) > 0xbf) return 0;
  return length;
}

// A logfmt value as JSON: quoted values carry JSON escapes already; bare ones that read as a
// number or a boolean keep that type.
nlohmann::ordered_json logfmt_value(std::string_view value) {
  if (value.starts_with('"')) return nlohmann::ordered_json::parse(valid_utf8(value));
  if (value == "true" || value == "false") return value == "true";
  if (!value.empty() && (value[0] == '-' || (value[0] >= '0' && value[0] <= '9'))) {
    auto number = nlohmann::ordered_json::parse(value, nullptr, false);
    if (number.is_number()) return number;
  }
  return valid_utf8(value);
}

// The end of a quoted logfmt value starting at text[0] == '"' (one past the closing quote).
std::size_t quoted_end(std::string_view text) {
  for (std::size_t i = 1; i < text.size(); ++i) {
    if (text[i] == '\\') ++i;
    else if (text[i] == '"') return i + 1;
  }
  throw std::invalid_argument("unterminated quoted value");
}

std::optional<std::string> logfmt_to_json(std::string_view line) {
  const admin::record_head head = admin::parse_record_head(line);
  if (head.event == "-") return std::nullopt;
  nlohmann::ordered_json object;
  object["ts"] = head.timestamp;
  object["event"] = valid_utf8(head.event);
  std::string_view rest = line.substr(std::min(line.size(), 25 + head.event.size()));
  while (!rest.empty()) {
    if (rest[0] == ' ') {
      rest.remove_prefix(1);
      continue;
    }
    const auto equals = rest.find('=');
    if (equals == std::string_view::npos || equals == 0) return std::nullopt;
    const auto key = rest.substr(0, equals);
    rest.remove_prefix(equals + 1);
    const std::size_t end = rest.starts_with('"') ? quoted_end(rest)
                                                  : std::min(rest.find(' '), rest.size());
    object[valid_utf8(key)] = logfmt_value(rest.substr(0, end));
    rest.remove_prefix(end);
  }
  return object.dump(-1, ' ', false, nlohmann::ordered_json::error_handler_t::replace);
}

}  // namespace

std::span<const std::string_view> known_event_types() noexcept { return known_types; }
std::span<const std::string_view> default_event_types() noexcept { return default_types; }

type_filter::type_filter(const std::vector<std::string>& types) {
  for (const auto& type : types) {
    if (type == "all") _all = true;
    else _types.push_back(type);
  }
}

bool type_filter::wants(std::string_view event) const noexcept {
  return _all || std::find(_types.begin(), _types.end(), event) != _types.end();
}

std::string valid_utf8(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  while (!text.empty()) {
    const std::size_t length = utf8_sequence(text);
    if (length == 0) {
      out += "\xef\xbf\xbd";  // U+FFFD REPLACEMENT CHARACTER
      text.remove_prefix(1);
      continue;
    }
    out.append(text.substr(0, length));
    text.remove_prefix(length);
  }
  return out;
}

std::optional<std::string> record_to_json(std::string_view line) {
  if (!line.starts_with('{')) {
    try {
      return logfmt_to_json(line);
    } catch (const std::exception&) {  // nlohmann parse errors, an unterminated quote
      return std::nullopt;
    }
  }
  const bool ascii = std::all_of(line.begin(), line.end(),
                                 [](char c) { return static_cast<unsigned char>(c) < 0x80; });
  std::string json = ascii ? std::string(line) : valid_utf8(line);
  if (!nlohmann::json::accept(json)) return std::nullopt;
  return json;
}

void event_tap::append(std::string_view lines) noexcept {
  _out.clear();
  while (!lines.empty()) {
    const auto newline = lines.find('\n');
    const auto line = lines.substr(0, newline);
    lines.remove_prefix(newline == std::string_view::npos ? lines.size() : newline + 1);
    if (line.empty() || !_filter.wants(admin::parse_record_head(line).event)) continue;
    try {
      if (auto json = record_to_json(line)) {
        _out += *json;
        _out += '\n';
      }
    } catch (const std::exception&) {  // allocation failure: this record is lost to the hook
    }
  }
  _log->append(_out);
}

}  // namespace ringmta::events
