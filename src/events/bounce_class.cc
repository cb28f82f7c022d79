// Bounce classification rules. See events/bounce_class.h.
#include "ringmta/events/bounce_class.h"

#include <algorithm>
#include <array>
#include <fstream>
#include <sstream>

#include <fmt/format.h>
#include <re2/re2.h>
#include <toml++/toml.h>

namespace ringmta::events {

namespace {

constexpr std::array<std::string_view, 11> class_names = {
    "bad-mailbox", "bad-domain", "inactive-mailbox", "mailbox-full", "spam-block", "policy",
    "rate-limit",  "content",    "routing",          "protocol",     "other"};

constexpr std::string_view builtin =
#include "bounce_classes_builtin.inc"
    ;

std::string where(std::string_view origin, const toml::source_region& source) {
  return fmt::format("{}:{}", origin, source.begin.line);
}

}  // namespace

std::span<const std::string_view> bounce_classifier::classes() noexcept { return class_names; }
std::string_view bounce_classifier::builtin_rules() noexcept { return builtin; }

std::size_t bounce_classifier::class_index(std::string_view name) noexcept {
  const auto found = std::find(class_names.begin(), class_names.end(), name);
  return static_cast<std::size_t>(found - class_names.begin());
}

bounce_classifier::~bounce_classifier() = default;

std::shared_ptr<const bounce_classifier> bounce_classifier::parse(std::string_view text,
                                                                  std::string_view origin,
                                                                  std::string& problem) {
  toml::table document;
  try {
    document = toml::parse(text, origin);
  } catch (const toml::parse_error& e) {
    problem = fmt::format("{}: {}", where(origin, e.source()), e.description());
    return nullptr;
  }
  auto made = std::make_shared<bounce_classifier>();
  for (const auto& [key, value] : document) {
    if (key.str() != "rule" || !value.is_array_of_tables()) {
      problem = fmt::format("{}: unknown key '{}' (only [[rule]] tables)",
                            where(origin, value.source()), key.str());
      return nullptr;
    }
  }
  const toml::array* rules = document["rule"].as_array();
  for (std::size_t i = 0; rules != nullptr && i < rules->size(); ++i) {
    const toml::table& table = *rules->get(i)->as_table();
    const std::string at = where(origin, table.source());
    rule r;
    for (const auto& [key, value] : table) {
      const auto* string = value.as_string();
      if (string == nullptr) {
        problem = fmt::format("{}: rule.{}: expected a string", at, key.str());
        return nullptr;
      }
      const std::string& pattern = string->get();
      if (key.str() == "class") {
        const std::size_t index = class_index(pattern);
        if (index == class_names.size()) {
          problem = fmt::format("{}: rule.class: expected one of {}, got '{}'", at,
                                fmt::join(class_names, " "), pattern);
          return nullptr;
        }
        r.klass = class_names[index];
        continue;
      }
      std::unique_ptr<re2::RE2>* slot = key.str() == "status" ? &r.status
                                        : key.str() == "code" ? &r.code
                                        : key.str() == "text" ? &r.text
                                                              : nullptr;
      if (slot == nullptr) {
        problem = fmt::format("{}: rule.{}: unknown key (class, status, code, text)", at,
                              key.str());
        return nullptr;
      }
      re2::RE2::Options options;
      options.set_log_errors(false);
      *slot = std::make_unique<re2::RE2>(pattern, options);
      if (!(*slot)->ok()) {
        problem = fmt::format("{}: rule.{}: {}", at, key.str(), (*slot)->error());
        return nullptr;
      }
    }
    if (r.klass.empty() || (!r.status && !r.code && !r.text)) {
      problem = fmt::format("{}: a rule needs a class and at least one of status, code, text", at);
      return nullptr;
    }
    made->_rules.push_back(std::move(r));
  }
  return made;
}

std::shared_ptr<const bounce_classifier> bounce_classifier::load(const std::string& path,
                                                                 std::string& problem) {
  if (path.empty()) return parse(builtin, "built-in bounce classes", problem);
  std::ifstream in(path);
  if (!in) {
    problem = fmt::format("cannot read {}", path);
    return nullptr;
  }
  std::stringstream text;
  text << in.rdbuf();
  return parse(text.str(), path, problem);
}

std::string_view bounce_classifier::classify(std::uint16_t code, std::string_view status,
                                             std::string_view text) const noexcept {
  char digits[8] = {};
  const std::string_view code_text =
      code == 0 ? std::string_view()
                : std::string_view(digits, static_cast<std::size_t>(
                                               fmt::format_to_n(digits, 7, "{}", code).size));
  for (const auto& r : _rules) {
    if (r.status && !re2::RE2::FullMatch(status, *r.status)) continue;
    if (r.code && !re2::RE2::FullMatch(code_text, *r.code)) continue;
    if (r.text && !re2::RE2::PartialMatch(text, *r.text)) continue;
    return r.klass;
  }
  return other;
}

}  // namespace ringmta::events
