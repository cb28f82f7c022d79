// The key table: built from the settings at start-up (and reload), read by the shards.
#include "ringmta/dkim/key_table.h"

#include <algorithm>

#include <fmt/format.h>

namespace ringmta::dkim {

namespace {

bool has_keys(const key_table& table, std::string_view domain) {
  return std::any_of(table.keys.begin(), table.keys.end(),
                     [&](const signing_key& k) { return k.domain == domain; });
}

void add_keys_of(const key_table& table, std::string_view domain,
                 std::vector<const signing_key*>& out) {
  for (const signing_key& key : table.keys) {
    if (key.domain != domain) continue;
    if (std::find(out.begin(), out.end(), &key) == out.end()) out.push_back(&key);
  }
}

// The fallback signing domain of `domain`: exact pattern, then ".parent" patterns from the
// nearest parent up, then "*".
std::string_view fallback_of(const key_table& table, std::string_view domain) {
  auto lookup = [&](std::string_view pattern) -> std::string_view {
    for (const auto& [from, to] : table.fallback)
      if (from == pattern) return to;
    return {};
  };
  if (!domain.empty()) {
    if (auto exact = lookup(domain); !exact.empty()) return exact;
    for (std::size_t dot = domain.find('.'); dot != std::string_view::npos;
         dot = domain.find('.', dot + 1)) {
      if (auto parent = lookup(domain.substr(dot)); !parent.empty()) return parent;
    }
  }
  return lookup("*");
}

canonicalization part(std::string_view text) {
  return text == "simple" ? canonicalization::simple : canonicalization::relaxed;
}

}  // namespace

void key_table::choose(std::string_view domain, std::vector<const signing_key*>& out) const {
  if (!domain.empty() && has_keys(*this, domain)) {
    add_keys_of(*this, domain, out);
  } else if (const auto fallback_domain = fallback_of(*this, domain); !fallback_domain.empty()) {
    add_keys_of(*this, fallback_domain, out);
  }
  for (const std::string& platform : platform_domains) add_keys_of(*this, platform, out);
}

bool key_table::signs_without_author() const {
  std::vector<const signing_key*> chosen;
  choose({}, chosen);
  return !chosen.empty();
}

const std::vector<std::string>& default_signed_headers() {
  // RFC 6376 §5.4.1's list, plus the List-* fields of RFC 2369/2919/8058 and Feedback-ID.
  static const std::vector<std::string> names = {
      "from", "reply-to", "subject", "date", "to", "cc", "resent-date", "resent-from",
      "resent-sender", "resent-to", "resent-cc", "in-reply-to", "references", "message-id",
      "mime-version", "content-type", "content-transfer-encoding", "content-id",
      "content-description", "sender", "list-id", "list-help", "list-unsubscribe",
      "list-unsubscribe-post", "list-subscribe", "list-post", "list-owner", "list-archive",
      "feedback-id"};
  return names;
}

const std::vector<std::string>& default_oversigned_headers() {
  static const std::vector<std::string> names = {
      "from", "reply-to", "subject", "to", "cc", "list-id", "list-help", "list-unsubscribe",
      "list-unsubscribe-post", "list-subscribe", "list-post", "list-owner", "list-archive"};
  return names;
}

std::shared_ptr<const key_table> build_key_table(const config::settings& settings) {
  auto table = std::make_shared<key_table>();
  table->fallback = settings.dkim_fallback;
  table->platform_domains = settings.dkim_platform_domains;
  table->header_bytes_max = settings.dkim_header_bytes_max;
  table->timestamp = settings.dkim_timestamp;
  table->expire_s = settings.dkim_expire_s;
  for (const config::dkim_key& entry : settings.dkim_keys) {
    const std::string name = fmt::format("{}: dkim {} selector {}", entry.origin, entry.domain,
                                         entry.selector);
    std::string problem;
    auto key = private_key::load(entry.key_file, problem);
    if (key == nullptr) throw config::error(fmt::format("{}: {}: {}", name, entry.key_file, problem));
    const bool ed25519 = key->algorithm() == algorithm::ed25519_sha256;
    if (!entry.algorithm.empty() && (entry.algorithm == "ed25519") != ed25519)
      throw config::error(fmt::format("{}: {}: algorithm = \"{}\" but the file holds an {} key",
                                      name, entry.key_file, entry.algorithm,
                                      ed25519 ? "Ed25519" : "RSA"));
    for (const auto& other : table->keys) {
      if (other.domain == entry.domain && other.selector == entry.selector)
        throw config::error(fmt::format("{}: a second key for the same domain and selector", name));
    }
    signing_key made;
    made.domain = entry.domain;
    made.selector = entry.selector;
    made.key_file = entry.key_file;
    const auto slash = entry.canonicalization.find('/');
    made.header = part(entry.canonicalization.substr(0, slash));
    made.body = part(entry.canonicalization.substr(slash + 1));
    made.headers = entry.headers.empty() ? default_signed_headers() : entry.headers;
    for (const auto& candidate : made.headers) {
      const auto& over = default_oversigned_headers();
      if (std::find(over.begin(), over.end(), candidate) != over.end())
        made.oversigned.push_back(candidate);
    }
    made.key = std::move(key);
    table->keys.push_back(std::move(made));
  }
  for (const auto& [pattern, domain] : table->fallback) {
    if (!has_keys(*table, domain))
      throw config::error(fmt::format("signing.fallback: {}={}: no [[dkim]] key for {}", pattern,
                                      domain, domain));
  }
  for (const auto& domain : table->platform_domains) {
    if (!has_keys(*table, domain))
      throw config::error(fmt::format("signing.platform_domains: no [[dkim]] key for {}", domain));
  }
  // The fields of one message must fit the spool's header prefix: bound the signatures.
  std::size_t most = 0;
  std::vector<const signing_key*> chosen;
  for (const signing_key& key : table->keys) {
    chosen.clear();
    table->choose(key.domain, chosen);
    most = std::max(most, chosen.size());
  }
  if (most > signatures_per_message_max)
    throw config::error(fmt::format("dkim: a message would carry {} signatures (keys of one "
                                    "domain plus platform domains); at most {}",
                                    most, signatures_per_message_max));
  return table;
}

}  // namespace ringmta::dkim
