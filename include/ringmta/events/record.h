// events: which log records go to the webhook, and their form there (one JSON object each).
//
// The log writer hands every record line to the event tap (admin::log_tap) on its thread; the
// tap keeps the types the operator chose (--events-types) and appends them to the event log
// as JSON lines: a json-format record as it is (invalid UTF-8 from a hostile envelope
// replaced by U+FFFD, so that strict JSON parsers accept it), a text-format (logfmt) record
// converted field by field (bare numbers and true/false keep their type).
//
// Never: a record posted from here (the writer thread would feed itself), an exception out.
#pragma once

#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "ringmta/admin/log_writer.h"

namespace ringmta::events {

class event_log;

// Every record type a daemon writes, for --events-types (a typo is a start-up error).
std::span<const std::string_view> known_event_types() noexcept;
// What --events-types is when not set: the mail flow and the operators' actions.
std::span<const std::string_view> default_event_types() noexcept;

class type_filter {
 public:
  // Names from known_event_types(), or "all".
  explicit type_filter(const std::vector<std::string>& types);
  bool wants(std::string_view event) const noexcept;

 private:
  bool _all = false;
  std::vector<std::string> _types;
};

// One record line (no newline) as a JSON object text; nullopt when it is no record.
std::optional<std::string> record_to_json(std::string_view line);
// `text` with each invalid UTF-8 sequence replaced by U+FFFD (RFC 3629 §3).
std::string valid_utf8(std::string_view text);

// The writer's tap: filters and converts, then appends to the event log.
class event_tap final : public admin::log_tap {
 public:
  event_tap(std::shared_ptr<event_log> log, type_filter filter)
      : _log(std::move(log)), _filter(std::move(filter)) {}
  void append(std::string_view lines) noexcept override;

 private:
  std::shared_ptr<event_log> _log;
  type_filter _filter;
  std::string _out;  // reused: the writer thread's only caller
};

}  // namespace ringmta::events
