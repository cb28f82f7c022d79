// Fuzz target: what the events module parses. The first byte picks the parser, the rest is its
// input: a log record line (record_to_json: json or logfmt), the cursor file, a webhook URL, a
// bounce rules file, and a reply to classify with the built-in rules. Invariants: no crash or
// exception escapes; record_to_json's output is valid JSON (strict UTF-8) holding an object;
// a cursor that parses formats back to the same text; valid_utf8 output is valid UTF-8.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "ringmta/core/assert.h"
#include "ringmta/events/bounce_class.h"
#include "ringmta/events/event_log.h"
#include "ringmta/events/record.h"
#include "ringmta/events/webhook.h"

using namespace ringmta::events;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  const std::string_view input(reinterpret_cast<const char*>(data) + 1, size - 1);
  switch (data[0] % 5) {
    case 0: {
      if (const auto json = record_to_json(input)) {
        const auto parsed = nlohmann::json::parse(*json, nullptr, false);
        RINGMTA_ASSERT(!parsed.is_discarded() && parsed.is_object());
      }
      const std::string fixed = valid_utf8(input);
      RINGMTA_ASSERT(valid_utf8(fixed) == fixed);
      break;
    }
    case 1:
      if (const auto at = parse_cursor(input)) RINGMTA_ASSERT(parse_cursor(format_cursor(*at)) == at);
      break;
    case 2:
      if (const auto url = parse_endpoint_url(input))
        RINGMTA_ASSERT(!url->origin.empty() && url->path.starts_with('/'));
      break;
    case 3: {
      std::string problem;
      const auto rules = bounce_classifier::parse(input, "fuzz", problem);
      RINGMTA_ASSERT((rules == nullptr) != problem.empty());
      if (rules) (void)rules->classify(550, "5.1.1", input);
      break;
    }
    default: {
      static const auto rules = [] {
        std::string problem;
        return bounce_classifier::load("", problem);
      }();
      const auto name = rules->classify(static_cast<std::uint16_t>(size), input.substr(0, 8),
                                        input);
      RINGMTA_ASSERT(bounce_classifier::class_index(name) < bounce_classifier::classes().size());
    }
  }
  return 0;
}
