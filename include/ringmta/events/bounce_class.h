// events::bounce_classifier: the class of a failed or deferred delivery, from its reply code,
// enhanced status code (RFC 3463) and text, as PowerMTA's bounce categories and KumoMTA's
// bounce classifier give it: bad-mailbox, bad-domain, inactive-mailbox, mailbox-full,
// spam-block, policy, rate-limit, content, routing, protocol, other.
//
// Rules come from a TOML file (conf/bounce-classes.toml; the same rules are built in, so a
// daemon without --bounce-classes classifies too): [[rule]] tables tried in order, the first
// whose every given pattern matches wins, else "other".
//   [[rule]]
//   class = "bad-mailbox"     # one of classes()
//   status = '5\.1\.1'         # RE2, the whole enhanced status code ("" when none)
//   code = '55[0-9]'           # RE2, the whole reply code ("" when no reply)
//   text = '(?i)user unknown'  # RE2, anywhere in the reply text
// RE2 matches in linear time: a reply from a hostile server cannot make a shard spin.
//
// Immutable once built, shared by every shard (a reload builds a new one); classify() is pure
// and allocation-free. Never: a syscall in classify(), an exception out of it.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace re2 {
class RE2;
}

namespace ringmta::events {

class bounce_classifier {
 public:
  // The classes a rule may name, "other" last (bounded: they are metric labels).
  static std::span<const std::string_view> classes() noexcept;
  static constexpr std::string_view other = "other";

  // From TOML text; nullptr and `problem` ("FILE:LINE: ...") when a rule is wrong.
  static std::shared_ptr<const bounce_classifier> parse(std::string_view toml,
                                                        std::string_view origin,
                                                        std::string& problem);
  // From a file; an empty path gives the built-in rules.
  static std::shared_ptr<const bounce_classifier> load(const std::string& path,
                                                       std::string& problem);
  static std::string_view builtin_rules() noexcept;  // conf/bounce-classes.toml, compiled in

  ~bounce_classifier();
  // `code`: 0 when there was no reply; `status`: "5.1.1" or "" when none.
  std::string_view classify(std::uint16_t code, std::string_view status,
                            std::string_view text) const noexcept;
  // Index of a class in classes() (for per-class counters).
  static std::size_t class_index(std::string_view name) noexcept;
  std::size_t rule_count() const noexcept { return _rules.size(); }

 private:
  struct rule {
    std::string_view klass;  // points into classes()
    std::unique_ptr<re2::RE2> status, code, text;
  };
  std::vector<rule> _rules;
};

}  // namespace ringmta::events
