// The settings table: one row per setting, giving its TOML key, its flag, and how a textual
// value is applied. File values and flag values both arrive as strings (a TOML array gives
// several), so each setting has a single parser and a single error message.
#include "ringmta/config/settings.h"

#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>
#include <charconv>
#include <cmath>
#include <functional>
#include <optional>
#include <string_view>

#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <toml++/toml.h>

#include "ringmta/events/record.h"
#include "ringmta/events/webhook.h"
#include "ringmta/net/idna.h"

namespace ringmta::config {
namespace {

using values = std::vector<std::string>;

// Parsers throw this with "expected …, got '…'"; the loader adds where and which key.
struct bad_value : std::invalid_argument {
  using std::invalid_argument::invalid_argument;
};

[[noreturn]] void expected(std::string_view what, std::string_view got) {
  throw bad_value(fmt::format("expected {}, got '{}'", what, got));
}

std::uint64_t parse_unsigned(std::string_view text, std::uint64_t max) {
  std::uint64_t value = 0;
  const auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (text.empty() || error != std::errc() || end != text.data() + text.size() || value > max)
    expected(fmt::format("a whole number up to {}", max), text);
  return value;
}

// A count with a lower bound: 0 often means "refuse everything" or "never", which is no setting.
std::uint32_t parse_count(std::string_view text, std::uint32_t min, std::uint32_t max) {
  std::uint64_t value = 0;
  const auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (text.empty() || error != std::errc() || end != text.data() + text.size() || value < min ||
      value > max)
    expected(fmt::format("a whole number from {} to {}", min, max), text);
  return static_cast<std::uint32_t>(value);
}

// "52428800", "50M", "64k", "1G" (binary multiples, as operators write sizes).
std::uint64_t parse_bytes(std::string_view text) {
  std::uint64_t unit = 1;
  std::string_view digits = text;
  if (!text.empty()) {
    switch (text.back()) {
      case 'k': case 'K': unit = 1ull << 10; break;
      case 'm': case 'M': unit = 1ull << 20; break;
      case 'g': case 'G': unit = 1ull << 30; break;
      default: break;
    }
    if (unit != 1) digits.remove_suffix(1);
  }
  try {
    return parse_unsigned(digits, (1ull << 50) / unit) * unit;
  } catch (const bad_value&) {
    expected("a byte size such as 52428800, 64k or 50M", text);
  }
}

// "300", "300s", "5m", "2h", "5d" → seconds.
std::uint32_t parse_seconds(std::string_view text) {
  std::uint64_t unit = 1;
  std::string_view digits = text;
  if (!text.empty()) {
    switch (text.back()) {
      case 's': unit = 1; break;
      case 'm': unit = 60; break;
      case 'h': unit = 3600; break;
      case 'd': unit = 86400; break;
      default: unit = 0; break;
    }
    if (unit != 0) digits.remove_suffix(1);
    else unit = 1;
  }
  try {
    return static_cast<std::uint32_t>(parse_unsigned(digits, 100ull * 365 * 86400 / unit) * unit);
  } catch (const bad_value&) {
    expected("a duration such as 30, 30s, 5m, 2h or 5d", text);
  }
}

// "500ms", "2s", "0" → milliseconds (durations where a fraction of a second matters).
std::uint32_t parse_milliseconds(std::string_view text) {
  if (text.size() > 2 && text.substr(text.size() - 2) == "ms") {
    try {
      const auto digits = text.substr(0, text.size() - 2);
      return static_cast<std::uint32_t>(parse_unsigned(digits, 86'400'000));
    } catch (const bad_value&) {
      expected("a duration such as 0, 500ms or 2s", text);
    }
  }
  const std::uint32_t seconds = parse_seconds(text);
  if (seconds > 86'400) expected("a duration up to 1d", text);
  return seconds * 1000;
}

bool parse_bool(std::string_view text) {
  if (text == "true" || text == "yes" || text == "on" || text == "1") return true;
  if (text == "false" || text == "no" || text == "off" || text == "0") return false;
  expected("true or false", text);
}

core::endpoint parse_endpoint(std::string_view text, std::optional<std::uint16_t> port = {}) {
  auto parsed = core::endpoint::parse(text, port);
  if (!parsed) expected("an address and port such as 127.0.0.1:25 or [::1]:25", text);
  return *parsed;
}

core::cidr parse_cidr(std::string_view text) {
  auto parsed = core::cidr::parse(text);
  if (!parsed) expected("an address range such as 192.0.2.0/24 or 2001:db8::/32", text);
  return *parsed;
}

std::string lowercase(std::string_view text) {
  std::string out(text);
  std::transform(out.begin(), out.end(), out.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return out;
}

// A domain name as operators type it: letters, digits, '-', '.', no empty labels; a name in
// Unicode ("bücher.example") is kept in its A-label form (IDNA 2008), the one every lookup,
// route and relay-domain comparison uses (net/idna.h).
std::string parse_domain(std::string_view text) {
  const auto ascii = net::domain_to_ascii(text);
  const std::string_view name = ascii ? std::string_view(*ascii) : text;
  bool valid = ascii && name.size() <= 253 && name.front() != '.' && name.back() != '.';
  for (std::size_t i = 0; valid && i < name.size(); ++i) {
    const unsigned char c = static_cast<unsigned char>(name[i]);
    valid = std::isalnum(c) || c == '-' || (c == '.' && name[i - 1] != '.');
  }
  if (!valid) expected("a domain name such as example.com or bücher.example", text);
  return std::string(name);
}

// "HOST:PORT" or "[HOST]:PORT" where HOST is a name or an address; PORT defaults to 25.
std::pair<std::string, std::uint16_t> parse_host_port(std::string_view text) {
  std::string_view host = text;
  std::uint16_t port = 25;
  std::string_view port_text;
  if (!text.empty() && text.front() == '[') {
    const auto close = text.find(']');
    if (close == std::string_view::npos) expected("HOST:PORT or [ADDRESS]:PORT", text);
    host = text.substr(1, close - 1);
    if (close + 1 < text.size()) {
      if (text[close + 1] != ':') expected("HOST:PORT or [ADDRESS]:PORT", text);
      port_text = text.substr(close + 2);
    }
  } else if (const auto colon = text.rfind(':'); colon != std::string_view::npos) {
    host = text.substr(0, colon);
    port_text = text.substr(colon + 1);
  }
  if (!port_text.empty()) {
    const auto value = parse_unsigned(port_text, 65535);
    if (value == 0) expected("a port from 1 to 65535", text);
    port = static_cast<std::uint16_t>(value);
  }
  if (host.empty()) expected("HOST:PORT", text);
  if (!core::endpoint::parse(host, port) && !core::endpoint::parse(fmt::format("[{}]", host), port))
    parse_domain(host);
  return {std::string(host), port};
}

tls_policy parse_tls_policy(std::string_view text) {
  if (text == "none") return tls_policy::none;
  if (text == "opportunistic" || text == "may") return tls_policy::opportunistic;
  if (text == "required" || text == "encrypt") return tls_policy::required;
  if (text == "verify") return tls_policy::verify;
  expected("none, opportunistic, required or verify", text);
}

std::string tls_policy_name(tls_policy policy) {
  switch (policy) {
    case tls_policy::none: return "none";
    case tls_policy::opportunistic: return "opportunistic";
    case tls_policy::required: return "required";
    case tls_policy::verify: return "verify";
  }
  return "opportunistic";
}

// An OpenSSL cipher string ("ECDHE+AESGCM:!aNULL", "TLS_AES_256_GCM_SHA384"): OpenSSL checks
// the names when the context is made (a start-up error); here only its alphabet.
std::string cipher_list(std::string_view text) {
  const bool bad = std::any_of(text.begin(), text.end(), [](char c) {
    const bool allowed = c != 0 && std::strchr(":+-!@=._,", c) != nullptr;
    return !(std::isalnum(static_cast<unsigned char>(c)) || allowed);
  });
  if (bad) expected("an OpenSSL cipher list such as ECDHE+AESGCM:ECDHE+CHACHA20", text);
  return std::string(text);
}

std::string one(const values& v) {
  if (v.size() != 1) throw bad_value(fmt::format("expected one value, got {}", v.size()));
  return v.front();
}

template <typename T, typename Parse>
std::vector<T> each(const values& v, Parse parse) {
  std::vector<T> out;
  for (const auto& text : v) out.push_back(parse(text));
  return out;
}

// ---- DKIM signing (issue 13): --dkim and [[dkim]] tables.
constexpr std::string_view dkim_table_keys[] = {"domain", "selector", "key_file", "algorithm",
                                                 "headers", "canonicalization"};

// A DNS label for s= (RFC 6376 §3.1: selectors are sub-domains, dots allowed).
std::string parse_selector(std::string_view text) {
  try {
    return parse_domain(text);
  } catch (const bad_value&) {
    expected("a selector such as mail2024 or a.b", text);
  }
}

// "--dkim DOMAIN:SELECTOR:KEYFILE": the key file may contain colons.
dkim_key parse_dkim_flag(std::string_view text) {
  const auto first = text.find(':');
  const auto second = first == std::string_view::npos ? first : text.find(':', first + 1);
  if (second == std::string_view::npos || second + 1 == text.size())
    expected("DOMAIN:SELECTOR:KEYFILE", text);
  dkim_key key;
  key.domain = parse_domain(text.substr(0, first));
  key.selector = parse_selector(text.substr(first + 1, second - first - 1));
  key.key_file = std::string(text.substr(second + 1));
  key.origin = "command line";
  return key;
}

void parse_dkim_field(dkim_key& key, std::string_view name, const values& v) {
  if (name == "domain") key.domain = parse_domain(one(v));
  else if (name == "selector") key.selector = parse_selector(one(v));
  else if (name == "key_file") key.key_file = one(v);
  else if (name == "algorithm") {
    key.algorithm = one(v);
    if (key.algorithm == "rsa-sha256") key.algorithm = "rsa";
    if (key.algorithm == "ed25519-sha256") key.algorithm = "ed25519";
    if (key.algorithm != "rsa" && key.algorithm != "ed25519") expected("rsa or ed25519", one(v));
  } else if (name == "headers") {
    key.headers.clear();
    for (const auto& header : v) {
      const bool token = !header.empty() && std::all_of(header.begin(), header.end(), [](char c) {
        return c > 32 && c < 127 && c != ':';
      });
      if (!token) expected("header field names such as From or List-Unsubscribe", header);
      key.headers.push_back(lowercase(header));
    }
    if (std::find(key.headers.begin(), key.headers.end(), "from") == key.headers.end())
      expected("a list that includes From (RFC 6376 §5.4)", key.headers.front());
  } else if (name == "canonicalization") {
    const auto text = one(v);
    const auto slash = text.find('/');
    const auto part_ok = [](std::string_view p) { return p == "relaxed" || p == "simple"; };
    if (slash == std::string::npos || !part_ok(text.substr(0, slash)) ||
        !part_ok(text.substr(slash + 1)))
      expected("relaxed/relaxed, simple/simple, relaxed/simple or simple/relaxed", text);
    key.canonicalization = text;
  }
}
// ---- end of DKIM signing helpers

// ---- shaping (issue 15): [[shaping]] tables and --shaping.
constexpr std::string_view shaping_table_keys[] = {
    "domain", "mx", "max_connections", "max_messages_per_connection", "max_messages_per_second",
    "connect_timeout", "reply_timeout", "retry_schedule", "lifetime", "tls_policy", "ehlo_name",
    "sender_domain", "pool"};

// "0", "50", "0.5": messages per second (0: unlimited); finite and within integer reach.
double parse_rate(std::string_view text) {
  double rate = 0;
  const auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), rate);
  if (text.empty() || error != std::errc() || end != text.data() + text.size() ||
      !std::isfinite(rate) || rate < 0 || (rate > 0 && rate < 0.001) || rate > 1e6)
    expected("a rate such as 0, 50 or 0.5 (0: unlimited; 0.001 to 1000000)", text);
  return rate;
}

// An MX host pattern: a host name where '*' stands for any run of characters.
std::string parse_mx_pattern(std::string_view text) {
  std::string plain(text);
  std::replace(plain.begin(), plain.end(), '*', 'x');
  try {
    parse_domain(plain);
  } catch (const bad_value&) {
    expected("an MX host pattern such as *.google.com", text);
  }
  return lowercase(text);
}

// A [[source]] or [[pool]] name: it appears in queue names and log records.
std::string parse_egress_name(std::string_view text) {
  const bool ok = !text.empty() && text.size() <= 32 &&
                  std::all_of(text.begin(), text.end(), [](char c) {
                    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' ||
                           c == '-';
                  });
  if (!ok) expected("a name of up to 32 characters a-z, 0-9, _ and -", text);
  return std::string(text);
}

void parse_source_field(source_entry& e, std::string_view name, const values& v) {
  if (name == "name") {
    e.name = parse_egress_name(one(v));
  } else if (name == "address") {
    const auto text = one(v);
    auto parsed = core::endpoint::parse(text, std::uint16_t{0});
    if (!parsed) parsed = core::endpoint::parse(fmt::format("[{}]", text), std::uint16_t{0});
    if (!parsed || parsed->port() != 0) expected("a local address such as 192.0.2.10", text);
    e.address = *parsed;
  } else if (name == "ehlo_name") {
    e.ehlo_name = parse_domain(one(v));
  } else {
    throw bad_value("unknown field; use name, address, ehlo_name");
  }
}

void check_source(const source_entry& e) {
  if (e.name.empty()) throw bad_value("missing name");
  if (e.address.length == 0) throw bad_value("missing address");
}

// "NAME" or "NAME:WEIGHT" (weight 1 to 10000; default 1).
void parse_pool_field(pool_entry& e, std::string_view name, const values& v) {
  if (name == "name") {
    e.name = parse_egress_name(one(v));
  } else if (name == "sources") {
    e.sources.clear();
    for (const std::string_view item : v) {
      const auto colon = item.find(':');
      const auto weight =
          colon == std::string_view::npos ? 1u : parse_count(item.substr(colon + 1), 1, 10000);
      e.sources.emplace_back(parse_egress_name(item.substr(0, colon)), weight);
    }
  } else {
    throw bad_value("unknown field; use name, sources (\"NAME\" or \"NAME:WEIGHT\")");
  }
}

void check_pool(const pool_entry& e) {
  if (e.name.empty()) throw bad_value("missing name");
  if (e.sources.empty()) throw bad_value("missing sources");
}

// --source "NAME ADDRESS [EHLO]" and --pool "NAME SOURCE[:WEIGHT]...".
source_entry parse_source_flag(std::string_view text) {
  source_entry e;
  e.origin = "command line";
  std::istringstream words{std::string(text)};
  std::string name, address, ehlo, extra;
  if (!(words >> name >> address) || (words >> ehlo && words >> extra))
    expected("NAME ADDRESS [EHLO-NAME]", text);
  parse_source_field(e, "name", {name});
  parse_source_field(e, "address", {address});
  if (!ehlo.empty()) parse_source_field(e, "ehlo_name", {ehlo});
  return e;
}

pool_entry parse_pool_flag(std::string_view text) {
  pool_entry e;
  e.origin = "command line";
  std::istringstream words{std::string(text)};
  std::string name;
  values items;
  words >> name;
  for (std::string item; words >> item;) items.push_back(item);
  if (name.empty() || items.empty()) expected("NAME SOURCE[:WEIGHT]...", text);
  parse_pool_field(e, "name", {name});
  parse_pool_field(e, "sources", items);
  return e;
}

void parse_shaping_field(shaping_entry& e, std::string_view name, const values& v) {
  const auto milliseconds = [](const std::string& text) {
    const std::uint64_t seconds = parse_seconds(text);
    if (seconds == 0 || seconds > 86'400) expected("a duration from 1s to 1d", text);
    return static_cast<std::uint32_t>(seconds * 1000);
  };
  if (name == "domain") {
    const auto text = one(v);
    const bool subdomains = !text.empty() && text.front() == '.';
    e.domain = (subdomains ? "." : "") + parse_domain(std::string_view(text).substr(subdomains));
  } else if (name == "mx") {
    e.mx = parse_mx_pattern(one(v));
  } else if (name == "sender_domain") {
    shaping_entry scratch;
    parse_shaping_field(scratch, "domain", v);
    e.sender_domain = scratch.domain;
  } else if (name == "pool") {
    e.pool = parse_egress_name(one(v));
  } else if (name == "max_connections") {
    e.connections_max = static_cast<std::uint32_t>(parse_unsigned(one(v), 10000));
    if (*e.connections_max == 0) expected("at least 1 connection", one(v));
  } else if (name == "max_messages_per_connection") {
    e.messages_per_connection_max = static_cast<std::uint32_t>(parse_unsigned(one(v), UINT32_MAX));
  } else if (name == "max_messages_per_second") {
    e.messages_per_second_max = parse_rate(one(v));
  } else if (name == "connect_timeout") {
    e.timeout_connect_ms = milliseconds(one(v));
  } else if (name == "reply_timeout") {
    e.timeout_reply_ms = milliseconds(one(v));
  } else if (name == "retry_schedule") {
    std::vector<std::uint32_t> delays;
    for (const auto& text : v) delays.push_back(parse_seconds(text));
    if (delays.empty()) throw bad_value("expected at least one duration");
    e.retry_schedule_s = std::move(delays);
  } else if (name == "lifetime") {
    e.queue_lifetime_s = parse_seconds(one(v));
  } else if (name == "tls_policy") {
    e.tls = parse_tls_policy(one(v));
  } else if (name == "ehlo_name") {
    e.ehlo_name = parse_domain(one(v));
  } else {
    throw bad_value(fmt::format("unknown field; use {}", fmt::join(shaping_table_keys, ", ")));
  }
}

void check_shaping_entry(const shaping_entry& e) {
  const int matches = !e.domain.empty() + !e.mx.empty() + !e.sender_domain.empty();
  if (matches != 1)
    throw bad_value("give exactly one of domain (example.com, .example.com), mx (*.host) or "
                    "sender_domain");
  if (e.sender_domain.empty() != e.pool.empty())
    throw bad_value("pool is chosen per sender: give sender_domain and pool together");
  const bool more = e.connections_max || e.messages_per_connection_max ||
                    e.messages_per_second_max || e.timeout_connect_ms || e.timeout_reply_ms ||
                    e.retry_schedule_s || e.queue_lifetime_s || e.tls || e.ehlo_name;
  if (!e.sender_domain.empty() && more)
    throw bad_value("a sender_domain entry sets only pool (limits are per destination)");
}

// --shaping "MATCH KEY=VALUE ...": MATCH is a domain, .domain or mx:PATTERN; lists (the
// retry schedule) separate their items with ':'.
shaping_entry parse_shaping_flag(std::string_view text) {
  shaping_entry e;
  e.origin = "command line";
  std::istringstream words{std::string(text)};
  std::string word;
  bool first = true;
  std::size_t fields = 0;  // an entry that overrides nothing is a mistake
  while (words >> word) {
    if (first) {
      first = false;
      if (word.rfind("mx:", 0) == 0) parse_shaping_field(e, "mx", {word.substr(3)});
      else if (word.rfind("from:", 0) == 0)
        parse_shaping_field(e, "sender_domain", {word.substr(5)});
      else parse_shaping_field(e, "domain", {word});
      continue;
    }
    const auto equals = word.find('=');
    if (equals == std::string::npos) expected("KEY=VALUE after the match", word);
    values items;
    std::istringstream list{word.substr(equals + 1)};
    for (std::string item; std::getline(list, item, ':');) items.push_back(item);
    parse_shaping_field(e, std::string_view(word).substr(0, equals), items);
    ++fields;
  }
  if (fields == 0)
    expected("MATCH KEY=VALUE ... (MATCH: example.com, .example.com, mx:*.host, from:domain)",
             text);
  check_shaping_entry(e);
  return e;
}

void parse_reply_rule_field(reply_rule_entry& e, std::string_view name, const values& v) {
  if (name == "domain" || name == "mx") {
    shaping_entry scratch;
    parse_shaping_field(scratch, name, v);
    (name == "domain" ? e.domain : e.mx) = name == "domain" ? scratch.domain : scratch.mx;
  } else if (name == "pattern") {
    e.pattern = one(v);
    if (e.pattern.empty()) expected("an RE2 pattern such as ^421 4\\.7\\.0 ", e.pattern);
  } else if (name == "action") {
    const auto text = one(v);
    if (text == "suspend") e.action = reply_action::suspend;
    else if (text == "throttle") e.action = reply_action::throttle;
    else if (text == "bounce") e.action = reply_action::bounce;
    else expected("suspend, throttle or bounce", text);
  } else if (name == "duration") {
    e.duration_s = parse_seconds(one(v));
    if (e.duration_s == 0) expected("a duration above 0", one(v));
  } else if (name == "max_connections") {
    e.connections_max = static_cast<std::uint32_t>(parse_unsigned(one(v), 10000));
    if (*e.connections_max == 0) expected("at least 1 connection", one(v));
  } else if (name == "max_messages_per_second") {
    e.messages_per_second_max = parse_rate(one(v));
  } else {
    throw bad_value("unknown field; use domain, mx, pattern, action, duration, max_connections, "
                    "max_messages_per_second");
  }
}

void check_reply_rule(const reply_rule_entry& e) {
  if (e.pattern.empty()) throw bad_value("missing pattern");
  if (!e.domain.empty() && !e.mx.empty()) throw bad_value("give domain or mx, not both");
  if (e.action == reply_action::throttle && !e.connections_max && !e.messages_per_second_max)
    throw bad_value("throttle needs max_connections or max_messages_per_second");
}

// --reply-rule "MATCH ACTION DURATION PATTERN": MATCH is a domain, .domain, mx:PATTERN or *;
// ACTION suspend, bounce, or throttle:CONNECTIONS:RATE; PATTERN is the rest of the text.
reply_rule_entry parse_reply_rule_flag(std::string_view text) {
  reply_rule_entry e;
  e.origin = "command line";
  std::istringstream words{std::string(text)};
  std::string match, action, duration;
  if (!(words >> match >> action >> duration))
    expected("MATCH ACTION DURATION PATTERN", text);
  if (match.rfind("mx:", 0) == 0) parse_reply_rule_field(e, "mx", {match.substr(3)});
  else if (match != "*") parse_reply_rule_field(e, "domain", {match});
  std::vector<std::string> parts;
  std::istringstream pieces{action};
  for (std::string part; std::getline(pieces, part, ':');) parts.push_back(part);
  parse_reply_rule_field(e, "action", {parts.empty() ? action : parts[0]});
  if (parts.size() > 1 && !parts[1].empty()) parse_reply_rule_field(e, "max_connections", {parts[1]});
  if (parts.size() > 2 && !parts[2].empty())
    parse_reply_rule_field(e, "max_messages_per_second", {parts[2]});
  parse_reply_rule_field(e, "duration", {duration});
  std::string pattern;
  std::getline(words >> std::ws, pattern);
  parse_reply_rule_field(e, "pattern", {pattern});
  check_reply_rule(e);
  return e;
}
// ---- end of shaping helpers

enum class arity : std::uint8_t { one, list, flag };
constexpr reload_effect live = reload_effect::live;
constexpr reload_effect restart = reload_effect::restart;

struct setting_spec {
  const char* key;         // TOML key path
  const char* flag;        // command-line flag
  const char* value_name;  // for --help
  arity kind;
  const char* help;
  std::function<void(settings&, const values&)> apply;
  // The effective value as TOML text (check-config, reload's list of changes). Every row has
  // one: tests/unit/config walks the table and loads each rendered value back.
  std::function<std::string(const settings&)> show = {};
  reload_effect reload = restart;  // live: a reload applies it to new sessions and deliveries
};

// ---- rendering values as TOML text that loads back to the same value

std::string toml_string(std::string_view text) {
  std::string out = "\"";
  for (const char c : text) {
    const auto byte = static_cast<unsigned char>(c);
    if (c == '"' || c == '\\') out += '\\';
    if (byte < 0x20 || byte == 0x7f) out += fmt::format("\\u{:04x}", byte);
    else out += c;
  }
  return out + "\"";
}

std::string boolean(bool value) { return value ? "true" : "false"; }
std::string number(std::uint64_t value) { return std::to_string(value); }

template <typename T, typename Show>
std::string array(const std::vector<T>& items, Show show_one) {
  std::string out = "[";
  for (const auto& item : items) out += (out.size() > 1 ? ", " : "") + toml_string(show_one(item));
  return out + "]";
}

// [[dkim]] tables as an array of inline tables ("dkim = [{domain = ..., ...}]" loads back).
std::string dkim_tables(const std::vector<dkim_key>& keys) {
  std::string out = "[";
  for (const auto& key : keys) {
    out += fmt::format("{}{{domain = {}, selector = {}, key_file = {}, canonicalization = {}",
                       out.size() > 1 ? ", " : "", toml_string(key.domain),
                       toml_string(key.selector), toml_string(key.key_file),
                       toml_string(key.canonicalization));
    if (!key.algorithm.empty()) out += ", algorithm = " + toml_string(key.algorithm);
    if (!key.headers.empty())
      out += ", headers = " + array(key.headers, [](const std::string& h) { return h; });
    out += "}";
  }
  return out + "]";
}

// The largest unit that divides the value: 300 → "5m", 432000 → "5d".
std::string duration_text(std::uint64_t seconds) {
  if (seconds != 0 && seconds % 86400 == 0) return fmt::format("{}d", seconds / 86400);
  if (seconds != 0 && seconds % 3600 == 0) return fmt::format("{}h", seconds / 3600);
  if (seconds != 0 && seconds % 60 == 0) return fmt::format("{}m", seconds / 60);
  return fmt::format("{}s", seconds);
}
std::string duration(std::uint64_t seconds) { return toml_string(duration_text(seconds)); }
std::string duration_ms(std::uint32_t ms) {
  return ms % 1000 == 0 ? duration(ms / 1000) : toml_string(fmt::format("{}ms", ms));
}

// [[shaping]] and [[reply_rule]] as inline tables (check-config, reload's list of changes).
std::string shaping_tables(const std::vector<shaping_entry>& entries) {
  std::string out = "[";
  for (const auto& e : entries) {
    std::vector<std::string> fields;
    if (!e.domain.empty()) fields.push_back("domain = " + toml_string(e.domain));
    if (!e.mx.empty()) fields.push_back("mx = " + toml_string(e.mx));
    if (!e.sender_domain.empty())
      fields.push_back("sender_domain = " + toml_string(e.sender_domain));
    if (!e.pool.empty()) fields.push_back("pool = " + toml_string(e.pool));
    if (e.connections_max) fields.push_back(fmt::format("max_connections = {}", *e.connections_max));
    if (e.messages_per_connection_max)
      fields.push_back(
          fmt::format("max_messages_per_connection = {}", *e.messages_per_connection_max));
    if (e.messages_per_second_max)
      fields.push_back(fmt::format("max_messages_per_second = {}", *e.messages_per_second_max));
    if (e.timeout_connect_ms)
      fields.push_back("connect_timeout = " + duration(*e.timeout_connect_ms / 1000));
    if (e.timeout_reply_ms)
      fields.push_back("reply_timeout = " + duration(*e.timeout_reply_ms / 1000));
    if (e.retry_schedule_s)
      fields.push_back("retry_schedule = " + array(*e.retry_schedule_s, [](std::uint32_t d) {
                         return toml_string(duration_text(d));
                       }));
    if (e.queue_lifetime_s) fields.push_back("lifetime = " + duration(*e.queue_lifetime_s));
    if (e.tls) fields.push_back("tls_policy = " + toml_string(tls_policy_name(*e.tls)));
    if (e.ehlo_name) fields.push_back("ehlo_name = " + toml_string(*e.ehlo_name));
    out += fmt::format("{}{{{}}}", out.size() > 1 ? ", " : "", fmt::join(fields, ", "));
  }
  return out + "]";
}

std::string source_tables(const std::vector<source_entry>& sources) {
  std::string out = "[";
  for (const auto& e : sources) {
    out += fmt::format("{}{{name = {}, address = {}", out.size() > 1 ? ", " : "",
                       toml_string(e.name), toml_string(e.address.address_string()));
    if (!e.ehlo_name.empty()) out += ", ehlo_name = " + toml_string(e.ehlo_name);
    out += "}";
  }
  return out + "]";
}

std::string pool_tables(const std::vector<pool_entry>& pools) {
  std::string out = "[";
  for (const auto& e : pools) {
    std::vector<std::string> items;
    for (const auto& [name, weight] : e.sources)
      items.push_back(toml_string(fmt::format("{}:{}", name, weight)));
    out += fmt::format("{}{{name = {}, sources = [{}]}}", out.size() > 1 ? ", " : "",
                       toml_string(e.name), fmt::join(items, ", "));
  }
  return out + "]";
}

std::string reply_rule_tables(const std::vector<reply_rule_entry>& rules) {
  std::string out = "[";
  for (const auto& r : rules) {
    std::vector<std::string> fields;
    if (!r.domain.empty()) fields.push_back("domain = " + toml_string(r.domain));
    if (!r.mx.empty()) fields.push_back("mx = " + toml_string(r.mx));
    fields.push_back("pattern = " + toml_string(r.pattern));
    fields.push_back(fmt::format("action = \"{}\"", r.action == reply_action::suspend ? "suspend"
                                                   : r.action == reply_action::throttle
                                                       ? "throttle"
                                                       : "bounce"));
    fields.push_back("duration = " + duration(r.duration_s));
    if (r.connections_max) fields.push_back(fmt::format("max_connections = {}", *r.connections_max));
    if (r.messages_per_second_max)
      fields.push_back(fmt::format("max_messages_per_second = {}", *r.messages_per_second_max));
    out += fmt::format("{}{{{}}}", out.size() > 1 ? ", " : "", fmt::join(fields, ", "));
  }
  return out + "]";
}
std::string byte_size(std::uint64_t bytes) {
  if (bytes != 0 && bytes % (1ull << 30) == 0) return toml_string(fmt::format("{}G", bytes >> 30));
  if (bytes != 0 && bytes % (1ull << 20) == 0) return toml_string(fmt::format("{}M", bytes >> 20));
  if (bytes != 0 && bytes % (1ull << 10) == 0) return toml_string(fmt::format("{}k", bytes >> 10));
  return number(bytes);
}

// A duration within bounds. Timers keep milliseconds in 32 bits, so waits stop at one day.
std::uint32_t parse_seconds_in(std::string_view text, std::uint32_t min_s, std::uint32_t max_s) {
  const std::uint32_t value = parse_seconds(text);
  if (value < min_s || value > max_s)
    expected(fmt::format("a duration from {} to {} such as 30s, 5m or 2h", duration_text(min_s),
                         duration_text(max_s)),
             text);
  return value;
}

// One word of a fixed set.
std::string parse_choice(std::string_view text, std::initializer_list<std::string_view> words) {
  for (const auto word : words)
    if (text == word) return std::string(text);
  std::string listed;
  for (const auto word : words) listed += fmt::format("{}{}", listed.empty() ? "" : ", ", word);
  expected(fmt::format("one of {}", listed), text);
}

// Text sent on the wire after "220 HOSTNAME ": printable, one line (RFC 5321 §4.2: a reply
// line is at most 512 octets; a CR or LF would let the text forge further replies).
std::string parse_reply_text(std::string_view text) {
  const bool printable = std::all_of(text.begin(), text.end(), [](char c) {
    return static_cast<unsigned char>(c) >= 0x20 && static_cast<unsigned char>(c) != 0x7f;
  });
  if (!printable || text.size() > 400) expected("printable text on one line (400 bytes at most)",
                                                text);
  return std::string(text);
}

// A relay domain: a domain name, or ".example.com" for every subdomain of example.com.
std::string parse_relay_domain(std::string_view text) {
  if (!text.empty() && text.front() == '.') return "." + parse_domain(text.substr(1));
  return parse_domain(text);
}

std::uint32_t to_u32(std::string_view text, std::uint64_t max = UINT32_MAX) {
  return static_cast<std::uint32_t>(parse_unsigned(text, max));
}

// A file system path; control characters are typing accidents, never a path meant.
std::string path_setting(const values& v, bool empty_allowed = false) {
  auto text = one(v);
  const bool control = std::any_of(text.begin(), text.end(), [](char c) {
    return static_cast<unsigned char>(c) < 0x20 || c == 0x7f;
  });
  if ((text.empty() && !empty_allowed) || control) expected("a path", text);
  return text;
}

const std::vector<setting_spec>& table() {
  static const std::vector<setting_spec> specs = {
    {"server.listen", "--listen", "ADDR:PORT", arity::list, "SMTP listener (repeatable)",
     [](settings& s, const values& v) {
       s.listen = each<core::endpoint>(v, [](auto& t) { return parse_endpoint(t); });
     },
     [](const settings& s) { return array(s.listen, [](auto& e) { return e.to_string(); }); }},
    {"server.hostname", "--hostname", "NAME", arity::one, "name in greeting, EHLO, Received",
     [](settings& s, const values& v) { s.hostname = parse_domain(one(v)); },
     [](const settings& s) { return toml_string(s.hostname); }},
    {"server.shards", "--shards", "N", arity::one, "reactor threads (0: one per core)",
     [](settings& s, const values& v) { s.shards = to_u32(one(v), 256); },
     [](const settings& s) { return number(s.shards); }},
    {"server.pin_threads", "--pin-threads", "auto|true|false", arity::one,
     "pin shard i to the i-th allowed CPU; auto: only on a CPU set reserved for ringmta "
     "(pinned shards lose to other busy programs on shared cores)",
     [](settings& s, const values& v) {
       const auto text = one(v);
       s.pin_threads = text == "auto"     ? pin_policy::automatic
                       : parse_bool(text) ? pin_policy::on
                                          : pin_policy::off;
     },
     [](const settings& s) {
       return toml_string(s.pin_threads == pin_policy::automatic ? "auto"
                          : s.pin_threads == pin_policy::on      ? "true"
                                                                 : "false");
     }},
    {"server.mynetworks", "--mynetworks", "CIDR,...", arity::list,
     "clients allowed to relay to any domain",
     [](settings& s, const values& v) { s.mynetworks = each<core::cidr>(v, parse_cidr); },
     [](const settings& s) { return array(s.mynetworks, [](auto& c) { return c.to_string(); }); },
     live},
    {"server.proxy_protocol", "--proxy-protocol", "", arity::flag,
     "expect a PROXY v1/v2 header on every connection (behind HAProxy)",
     [](settings& s, const values& v) { s.proxy_protocol = parse_bool(one(v)); },
     [](const settings& s) { return boolean(s.proxy_protocol); }, live},
    {"server.proxy_trusted", "--proxy-trusted", "CIDR,...", arity::list,
     "peers whose PROXY header is believed; a PROXY connection from any other peer is closed",
     [](settings& s, const values& v) { s.proxy_trusted = each<core::cidr>(v, parse_cidr); },
     [](const settings& s) {
       return array(s.proxy_trusted, [](auto& c) { return c.to_string(); });
     },
     live},
    {"server.xclient_trusted", "--xclient-trusted", "CIDR,...", arity::list,
     "peers allowed to use XCLIENT (Postfix's extension: a front end passes the original "
     "client's address, HELO and login); empty: XCLIENT is never offered",
     [](settings& s, const values& v) { s.xclient_trusted = each<core::cidr>(v, parse_cidr); },
     [](const settings& s) {
       return array(s.xclient_trusted, [](auto& c) { return c.to_string(); });
     },
     live},
    {"server.submission_listen", "--submission-listen", "ADDR:PORT", arity::list,
     "submission listener, e.g. port 587 (RFC 6409: STARTTLS, then AUTH before MAIL)",
     [](settings& s, const values& v) {
       s.submission_listen = each<core::endpoint>(v, [](auto& t) { return parse_endpoint(t); });
     },
     [](const settings& s) {
       return array(s.submission_listen, [](auto& e) { return e.to_string(); });
     }},
    {"server.submissions_listen", "--submissions-listen", "ADDR:PORT", arity::list,
     "submission over implicit TLS, e.g. port 465 (RFC 8314: AUTH before MAIL)",
     [](settings& s, const values& v) {
       s.submissions_listen = each<core::endpoint>(v, [](auto& t) { return parse_endpoint(t); });
     },
     [](const settings& s) {
       return array(s.submissions_listen, [](auto& e) { return e.to_string(); });
     }},
    {"server.greeting_text", "--greeting-text", "TEXT", arity::one, "text after 220 HOSTNAME",
     [](settings& s, const values& v) { s.greeting_text = parse_reply_text(one(v)); },
     [](const settings& s) { return toml_string(s.greeting_text); }, live},
    {"limits.max_message_size", "--max-message-size", "BYTES", arity::one,
     "largest message accepted, advertised as SIZE (0: no limit)",
     [](settings& s, const values& v) { s.message_bytes_max = parse_bytes(one(v)); },
     [](const settings& s) { return byte_size(s.message_bytes_max); }, live},
    {"limits.max_recipients", "--max-recipients", "N", arity::one, "recipients per message",
     [](settings& s, const values& v) { s.recipients_max = parse_count(one(v), 1, 65535); },
     [](const settings& s) { return number(s.recipients_max); }, live},
    {"limits.max_hops", "--max-hops", "N", arity::one,
     "Received: fields a message may arrive with; more is a mail loop (554 5.4.6)",
     [](settings& s, const values& v) {
       s.hops_max = to_u32(one(v), 100000);
       if (s.hops_max == 0) expected("a count of 1 or more (0 would refuse every message)", one(v));
     },
     [](const settings& s) { return number(s.hops_max); }, live},
    {"limits.max_sessions_per_shard", "--max-sessions-per-shard", "N", arity::one,
     "concurrent sessions per shard (tables are sized for it at start-up)",
     [](settings& s, const values& v) {
       s.sessions_per_shard_max = parse_count(one(v), 1, 1000000);
     },
     [](const settings& s) { return number(s.sessions_per_shard_max); }},
    {"limits.max_sessions_per_client", "--max-sessions-per-client", "N", arity::one,
     "concurrent sessions per client address, across all shards",
     [](settings& s, const values& v) {
       s.sessions_per_client_max = parse_count(one(v), 1, 10000000);
     },
     [](const settings& s) { return number(s.sessions_per_client_max); }, live},
    {"limits.max_errors_per_session", "--max-errors-per-session", "N", arity::one,
     "protocol errors before 421 and disconnect (0: no limit)",
     [](settings& s, const values& v) { s.errors_per_session_max = to_u32(one(v), 10000); },
     [](const settings& s) { return number(s.errors_per_session_max); }, live},
    {"limits.bare_line_endings", "--bare-line-endings", "reject|normalize", arity::one,
     "a bare CR or LF in DATA: reject the message (default) or normalize to CRLF",
     [](settings& s, const values& v) {
       const auto text = one(v);
       if (text == "reject") s.bare_line_endings = bare_line_ending_policy::reject;
       else if (text == "normalize") s.bare_line_endings = bare_line_ending_policy::normalize;
       else expected("reject or normalize", text);
     },
     [](const settings& s) {
       return toml_string(s.bare_line_endings == bare_line_ending_policy::reject ? "reject"
                                                                            : "normalize");
     },
     live},
    {"limits.long_lines", "--long-lines", "reject|fold", arity::one,
     "a message line over 998 octets: fold it at a blank or the limit (default, as Postfix "
     "does) or reject the message 550 5.6.0",
     [](settings& s, const values& v) {
       const auto text = one(v);
       if (text == "reject") s.long_lines = long_line_policy::reject;
       else if (text == "fold") s.long_lines = long_line_policy::fold;
       else expected("reject or fold", text);
     },
     [](const settings& s) {
       return toml_string(s.long_lines == long_line_policy::reject ? "reject" : "fold");
     },
     live},
    {"timeouts.command", "--timeout-command", "DURATION", arity::one,
     "deadline for each whole command line (RFC 5321 §4.5.3.2.7: 5 minutes)",
     [](settings& s, const values& v) { s.timeout_command_s = parse_seconds_in(one(v), 1, 86400); },
     [](const settings& s) { return duration(s.timeout_command_s); }, live},
    {"timeouts.data_block", "--timeout-data-block", "DURATION", arity::one,
     "wait for each block of DATA (RFC 5321 §4.5.3.2.5: 3 minutes)",
     [](settings& s, const values& v) {
       s.timeout_data_block_s = parse_seconds_in(one(v), 1, 86400);
     },
     [](const settings& s) { return duration(s.timeout_data_block_s); }, live},
    {"timeouts.shutdown_grace", "--shutdown-grace", "DURATION", arity::one,
     "on SIGTERM, how long sessions may finish before 421",
     [](settings& s, const values& v) { s.shutdown_grace_s = parse_seconds_in(one(v), 0, 86400); },
     [](const settings& s) { return duration(s.shutdown_grace_s); }, live},
    {"timeouts.greeting_delay", "--greeting-delay", "DURATION", arity::one,
     "wait this long before the greeting; a client that talks first gets 554 (0: off)",
     [](settings& s, const values& v) { s.greeting_delay_ms = parse_milliseconds(one(v)); },
     [](const settings& s) { return duration_ms(s.greeting_delay_ms); }, live},
    {"spool.dir", "--spool", "DIR", arity::one, "spool directory (locked by the running daemon)",
     [](settings& s, const values& v) { s.spool_dir = path_setting(v); },
     [](const settings& s) { return toml_string(s.spool_dir); }},
    {"spool.segment_size", "--spool-segment-size", "BYTES", arity::one,
     "size of each preallocated spool segment file (1M to 16G)",
     [](settings& s, const values& v) {
       s.spool_segment_bytes = parse_bytes(one(v));
       if (s.spool_segment_bytes < (1u << 20) || s.spool_segment_bytes > (16ull << 30))
         expected("a size from 1M to 16G", one(v));
     },
     [](const settings& s) { return byte_size(s.spool_segment_bytes); }},
    {"spool.journal_buffer_size", "--spool-journal-buffer-size", "BYTES", arity::one,
     "delivery outcomes buffered per shard for the spool journal (64 to 1G); beyond, they "
     "wait in memory",
     [](settings& s, const values& v) {
       // 64 bytes hold one 48-byte state record: the smallest buffer that still makes progress.
       s.spool_journal_buffer_bytes = parse_bytes(one(v));
       if (s.spool_journal_buffer_bytes < 64 || s.spool_journal_buffer_bytes > (1ull << 30))
         expected("a size from 64 to 1G", one(v));
     },
     [](const settings& s) { return byte_size(s.spool_journal_buffer_bytes); }},
    {"spool.unsafe_no_fsync", "--unsafe-no-fsync", "", arity::flag,
     "DEBUG ONLY: answer 250 without fdatasync (loses mail on power failure)",
     [](settings& s, const values& v) { s.unsafe_no_fsync = parse_bool(one(v)); },
     [](const settings& s) { return boolean(s.unsafe_no_fsync); }},
    {"relay.relay_domains", "--relay-domains", "DOMAIN,...", arity::list,
     "domains accepted from any client (.example.com: its subdomains)",
     [](settings& s, const values& v) {
       s.relay_domains = each<std::string>(v, parse_relay_domain);
     },
     [](const settings& s) { return array(s.relay_domains, [](auto& d) { return d; }); }, live},
    {"relay.relayhost", "--relayhost", "HOST:PORT", arity::one,
     "deliver everything to this smarthost instead of MX hosts",
     [](settings& s, const values& v) {
       const auto text = one(v);
       if (!text.empty()) parse_host_port(text);
       s.relayhost = text;
     },
     [](const settings& s) { return toml_string(s.relayhost); }, live},
    {"relay.relayhost_auth", "--relayhost-auth", "FILE", arity::one,
     "USER:PASSWORD for SMTP AUTH (PLAIN, else LOGIN) to the relayhost; the file must not be "
     "group or world readable; sent only under TLS policy required or verify",
     [](settings& s, const values& v) { s.relayhost_auth = path_setting(v, true); },
     [](const settings& s) { return toml_string(s.relayhost_auth); }, live},
    {"relay.relayhost_auth_plaintext", "--relayhost-auth-plaintext", "", arity::flag,
     "send the relayhost credentials even without TLS (a relay host on a trusted network)",
     [](settings& s, const values& v) { s.relayhost_auth_plaintext = parse_bool(one(v)); },
     [](const settings& s) { return boolean(s.relayhost_auth_plaintext); }, live},
    {"relay.delivery_port", "--delivery-port", "PORT", arity::one,
     "port of MX hosts (25; tests use others)",
     [](settings& s, const values& v) {
       s.delivery_port = static_cast<std::uint16_t>(parse_count(one(v), 1, 65535));
     },
     [](const settings& s) { return number(s.delivery_port); }, live},
    {"relay.connect_timeout", "--timeout-connect", "DURATION", arity::one,
     "how long an outbound TCP connect may take before the next MX address is tried",
     [](settings& s, const values& v) { s.timeout_connect_s = parse_seconds_in(one(v), 1, 86400); },
     [](const settings& s) { return duration(s.timeout_connect_s); }, live},
    {"relay.mime_downgrade", "--mime-downgrade", "", arity::flag,
     "convert 8-bit messages to quoted-printable for servers without 8BITMIME (false: bounce "
     "them 5.6.3); DKIM-signed ones are bounced either way",
     [](settings& s, const values& v) { s.mime_downgrade = parse_bool(one(v)); },
     [](const settings& s) { return boolean(s.mime_downgrade); }, live},
    {"relay.resolvers", "--resolver", "ADDR:PORT", arity::list,
     "DNS server (repeatable; default: /etc/resolv.conf)",
     [](settings& s, const values& v) {
       s.resolvers = each<core::endpoint>(v, [](auto& t) {
         auto at = parse_endpoint(t, 53);
         if (at.port() == 0) expected("an address with a port from 1 to 65535", t);
         return at;
       });
     },
     [](const settings& s) { return array(s.resolvers, [](auto& e) { return e.to_string(); }); }},
    {"relay.routes", "--route", "DOMAIN=HOST:PORT", arity::list,
     "deliver a domain to a fixed host (repeatable)",
     [](settings& s, const values& v) {
       s.routes.clear();
       for (const auto& text : v) {
         const auto equals = text.find('=');
         if (equals == std::string::npos) expected("DOMAIN=HOST:PORT", text);
         auto [host, port] = parse_host_port(std::string_view(text).substr(equals + 1));
         s.routes.push_back({parse_domain(std::string_view(text).substr(0, equals)), host, port});
       }
     },
     [](const settings& s) {
       return array(s.routes, [](const route& r) {
         const bool v6 = r.host.find(':') != std::string::npos;
         return fmt::format("{}={}{}{}:{}", r.destination, v6 ? "[" : "", r.host, v6 ? "]" : "",
                            r.port);
       });
     },
     live},
    {"relay.site_rollup", "--site-rollup", "", arity::flag,
     "domains whose MX hosts are the same share one site: one queue owner, one connection "
     "limit, connections reused across them (KumoMTA's site_name)",
     [](settings& s, const values& v) { s.site_rollup = parse_bool(one(v)); },
     [](const settings& s) { return boolean(s.site_rollup); }, live},
    {"relay.site_relearn", "--site-relearn", "DURATION", arity::one,
     "how long a domain's MX site (site_rollup) is used before its MX hosts are looked up "
     "again; a changed MX set moves the domain to its new site once its old queue is gone",
     [](settings& s, const values& v) { s.site_relearn_s = parse_seconds_in(one(v), 1, 86400); },
     [](const settings& s) { return duration(s.site_relearn_s); }, live},
    // ---- outbound TLS (issue 11): [relay.tls] policy, per-domain policies, the CA store.
    {"relay.tls.policy", "--tls-policy", "none|opportunistic|required|verify", arity::one,
     "outbound TLS: STARTTLS when offered (opportunistic), required, or required with the "
     "certificate verified against the MX host name (verify)",
     [](settings& s, const values& v) { s.relay_tls_policy = parse_tls_policy(one(v)); },
     [](const settings& s) { return toml_string(tls_policy_name(s.relay_tls_policy)); }, live},
    {"relay.tls.policy_for", "--tls-policy-for", "DOMAIN=POLICY", arity::list,
     "outbound TLS policy for one destination domain (.example.com: its subdomains; repeatable)",
     [](settings& s, const values& v) {
       s.relay_tls_policy_for.clear();
       for (const auto& text : v) {
         const auto equals = text.find('=');
         if (equals == std::string::npos) expected("DOMAIN=POLICY", text);
         const std::string_view domain = std::string_view(text).substr(0, equals);
         const bool subdomains = !domain.empty() && domain.front() == '.';
         s.relay_tls_policy_for.push_back(
             {(subdomains ? "." : "") + parse_domain(domain.substr(subdomains ? 1 : 0)),
              parse_tls_policy(std::string_view(text).substr(equals + 1))});
       }
     },
     [](const settings& s) { return array(s.relay_tls_policy_for, [](const tls_policy_entry& e) {
         return e.domain + "=" + tls_policy_name(e.policy);
       }); }, live},
    {"relay.tls.ca_file", "--tls-ca", "FILE", arity::one,
     "CA certificates (PEM) that `verify` trusts; empty: the system store",
     [](settings& s, const values& v) { s.relay_tls_ca_file = path_setting(v, true); },
     [](const settings& s) { return toml_string(s.relay_tls_ca_file); }, live},
    // ---- end of outbound TLS
    {"queue.lifetime", "--queue-lifetime", "DURATION", arity::one,
     "bounce what is not delivered after this long (1s to 365d)",
     [](settings& s, const values& v) {
       s.queue_lifetime_s = parse_seconds_in(one(v), 1, 365 * 86400);
     },
     [](const settings& s) { return duration(s.queue_lifetime_s); }, live},
    {"queue.delay_warning", "--delay-warning", "DURATION",
     arity::one,
     "a \"delayed\" DSN (RFC 3464) once a message has waited this long undelivered, as its "
     "NOTIFY asks (absent: FAILURE,DELAY); 0: never (Postfix's delay_warning_time) (0 to 30d)",
     [](settings& s, const values& v) {
       s.delay_warning_s = parse_seconds_in(one(v), 0, 30 * 86400);
     },
     [](const settings& s) { return duration(s.delay_warning_s); }, live},
    {"queue.retry_schedule", "--retry-schedule", "DURATION,...", arity::list,
     "waits between attempts; the last one repeats (each 1s to 30d)",
     [](settings& s, const values& v) {
       s.retry_schedule_s =
           each<std::uint32_t>(v, [](auto& t) { return parse_seconds_in(t, 1, 30 * 86400); });
       if (s.retry_schedule_s.empty() || s.retry_schedule_s.size() > 100)
         throw bad_value("expected from 1 to 100 durations");
     },
     [](const settings& s) { return array(s.retry_schedule_s, duration_text); }, live},
    {"queue.probe_backoff_max", "--probe-backoff-max", "DURATION", arity::one,
     "a destination whose connections keep failing is probed less often: its wait doubles "
     "from the first retry delay up to this (never shorter than the retry schedule, never "
     "past a message's expiry or delay warning); 0: the retry schedule alone (0 to 30d)",
     [](settings& s, const values& v) {
       s.probe_backoff_max_s = parse_seconds_in(one(v), 0, 30 * 86400);
     },
     [](const settings& s) { return duration(s.probe_backoff_max_s); }, live},
    {"queue.max_connections_per_destination", "--max-connections-per-destination", "N",
     arity::one, "concurrent connections to one destination",
     [](settings& s, const values& v) {
       s.default_destination_limits.connections_max = parse_count(one(v), 1, 10000);
     },
     [](const settings& s) { return number(s.default_destination_limits.connections_max); },
     live},
    {"queue.max_messages_per_connection", "--max-messages-per-connection", "N", arity::one,
     "messages sent over one connection before it is closed (0: no limit)",
     [](settings& s, const values& v) {
       s.default_destination_limits.messages_per_connection_max = to_u32(one(v));
     },
     [](const settings& s) {
       return number(s.default_destination_limits.messages_per_connection_max);
     },
     live},
    {"queue.max_messages_per_second", "--max-messages-per-second", "RATE", arity::one,
     "per-destination rate limit (0: none)",
     [](settings& s, const values& v) {
       s.default_destination_limits.messages_per_second_max = parse_rate(one(v));
     },
     [](const settings& s) {
       return fmt::format("{}", s.default_destination_limits.messages_per_second_max);
     },
     live},
    // ---- shaping (issue 15)
    {"reply_rule", "--reply-rule", "MATCH ACTION DURATION PATTERN", arity::list,
     "what a server's reply does to its destination (repeatable; TOML: [[reply_rule]] "
     "tables): ACTION suspend, bounce or throttle:CONNECTIONS:RATE; PATTERN is RE2 on "
     "\"CODE TEXT\"",
     [](settings& s, const values& v) {
       s.reply_rules.clear();
       for (const auto& text : v) s.reply_rules.push_back(parse_reply_rule_flag(text));
     },
     [](const settings& s) { return reply_rule_tables(s.reply_rules); }, live},
    {"shaping", "--shaping", "MATCH KEY=VALUE...", arity::list,
     "per-destination overrides (repeatable; TOML: [[shaping]] tables): MATCH is example.com, "
     ".example.com or mx:*.host; keys as in [[shaping]], list items joined by ':'",
     [](settings& s, const values& v) {
       s.shaping.clear();
       for (const auto& text : v) s.shaping.push_back(parse_shaping_flag(text));
     },
     [](const settings& s) { return shaping_tables(s.shaping); }, live},
    {"source", "--source", "NAME ADDRESS [EHLO-NAME]", arity::list,
     "an egress source: a local address outbound connections bind to, and its EHLO name "
     "(repeatable; TOML: [[source]] tables with name, address, ehlo_name)",
     [](settings& s, const values& v) {
       s.sources.clear();
       for (const auto& text : v) s.sources.push_back(parse_source_flag(text));
     },
     [](const settings& s) { return source_tables(s.sources); }, live},
    {"pool", "--pool", "NAME SOURCE[:WEIGHT]...", arity::list,
     "an egress pool: weighted sources (repeatable; TOML: [[pool]] tables with name, sources); "
     "chosen by [[shaping]] sender_domain, a trusted X-Ringmta-Pool header, else \"default\"",
     [](settings& s, const values& v) {
       s.pools.clear();
       for (const auto& text : v) s.pools.push_back(parse_pool_flag(text));
     },
     [](const settings& s) { return pool_tables(s.pools); }, live},
    // ---- DKIM signing (issue 13): [[dkim]] keys and [signing]. The keys are only parsed
    // here; dkim::build_key_table reads and checks the files at start-up and at each reload.
    {"dkim", "--dkim", "DOMAIN:SELECTOR:KEYFILE", arity::list,
     "sign mail From DOMAIN with this key (repeatable; TOML: [[dkim]] tables)",
     [](settings& s, const values& v) {
       s.dkim_keys.clear();
       for (const auto& text : v) s.dkim_keys.push_back(parse_dkim_flag(text));
     },
     [](const settings& s) { return dkim_tables(s.dkim_keys); }, live},
    {"signing.fallback", "--dkim-fallback", "SENDER=DOMAIN", arity::list,
     "sign mail whose From domain has no key as DOMAIN (SENDER: name, .name, or *)",
     [](settings& s, const values& v) {
       s.dkim_fallback.clear();
       for (const auto& text : v) {
         const auto equals = text.find('=');
         if (equals == std::string::npos) expected("SENDER=DOMAIN such as *=esp.example", text);
         const std::string_view sender = std::string_view(text).substr(0, equals);
         std::string pattern = sender == "*" ? std::string("*")
                               : sender.starts_with(".")
                                   ? "." + parse_domain(sender.substr(1))
                                   : parse_domain(sender);
         s.dkim_fallback.emplace_back(pattern,
                                      parse_domain(std::string_view(text).substr(equals + 1)));
       }
     },
     [](const settings& s) { return array(s.dkim_fallback, [](const auto& rule) {
         return rule.first + "=" + rule.second;
       }); }, live},
    {"signing.platform_domains", "--dkim-platform", "DOMAIN,...", arity::list,
     "also sign every signed message with DOMAIN's keys (a platform's own signature)",
     [](settings& s, const values& v) {
       s.dkim_platform_domains = each<std::string>(v, parse_domain);
     },
     [](const settings& s) { return array(s.dkim_platform_domains, [](const std::string& d) { return d; }); }, live},
    {"signing.max_header_size", "--dkim-max-header-size", "BYTES", arity::one,
     "header block of a message to sign; a larger one is refused (552 5.3.4)",
     [](settings& s, const values& v) {
       s.dkim_header_bytes_max = parse_bytes(one(v));
       if (s.dkim_header_bytes_max < 4096 || s.dkim_header_bytes_max > (64u << 20))
         expected("a size from 4k to 64M", one(v));
     },
     [](const settings& s) { return byte_size(s.dkim_header_bytes_max); }, live},
    {"signing.timestamp", "--dkim-timestamp", "true|false", arity::one,
     "put the signing time (t=) in DKIM signatures",
     [](settings& s, const values& v) { s.dkim_timestamp = parse_bool(one(v)); },
     [](const settings& s) { return boolean(s.dkim_timestamp); }, live},
    {"signing.expire", "--dkim-expire", "DURATION", arity::one,
     "signatures expire (x=) this long after signing; 0: never",
     [](settings& s, const values& v) { s.dkim_expire_s = parse_seconds(one(v)); },
     [](const settings& s) { return duration(s.dkim_expire_s); }, live},
    // ---- end of DKIM signing
    // ---- Hostile clients (issue 10): where postmaster mail goes, slow-sender deadlines and
    // shorter timeouts near the session limit (Postfix's smtpd_min_data_rate and stress mode).
    {"server.postmaster", "--postmaster", "ADDRESS", arity::one,
     "mailbox on another host for postmaster at our own names (RFC 5321 4.5.1); empty: refused",
     [](settings& s, const values& v) {
       const auto text = one(v);
       const auto at = text.rfind('@');
       if (!text.empty() && (at == std::string::npos || at == 0))
         expected("an address such as hostmaster@example.com", text);
       if (!text.empty()) parse_domain(std::string_view(text).substr(at + 1));
       s.postmaster = text;
     },
     [](const settings& s) { return toml_string(s.postmaster); }, live},
    {"timeouts.min_data_rate", "--min-data-rate", "BYTES", arity::one,
     "DATA/BDAT bytes per second a client must keep up (each block buys time, at most "
     "--timeout-data-block; 0: only the idle timeout)",
     [](settings& s, const values& v) {
       s.min_data_rate_bytes = static_cast<std::uint32_t>(std::min<std::uint64_t>(
           parse_bytes(one(v)), std::uint64_t{1} << 30));
     },
     [](const settings& s) { return byte_size(s.min_data_rate_bytes); }, live},
    {"timeouts.under_load", "--timeout-under-load", "DURATION", arity::one,
     "command and data timeouts while a shard is above --load-threshold (0: no change)",
     [](settings& s, const values& v) { s.timeout_under_load_ms = parse_milliseconds(one(v)); },
     [](const settings& s) { return duration_ms(s.timeout_under_load_ms); }, live},
    {"limits.load_threshold", "--load-threshold", "PERCENT", arity::one,
     "share of --max-sessions-per-shard from which --timeout-under-load applies",
     [](settings& s, const values& v) {
       s.load_threshold_percent = to_u32(one(v), 100);
       if (s.load_threshold_percent == 0) expected("a percentage from 1 to 100", one(v));
     },
     [](const settings& s) { return number(s.load_threshold_percent); }},
    // ---- TLS (inbound STARTTLS and implicit TLS; src/tls, src/server/inbound_tls.cc) ----
    {"tls.cert", "--tls-cert", "FILE", arity::list,
     "PEM certificate chain (repeatable; paired in order with --tls-key; one per key type: "
     "ECDSA, RSA); with one, every listener offers STARTTLS",
     [](settings& s, const values& v) { s.tls_cert_files = v; },
     [](const settings& s) { return array(s.tls_cert_files, [](const std::string& f) { return f; }); }, live},
    {"tls.key", "--tls-key", "FILE", arity::list, "PEM private key of each --tls-cert",
     [](settings& s, const values& v) { s.tls_key_files = v; },
     [](const settings& s) { return array(s.tls_key_files, [](const std::string& f) { return f; }); }, live},
    {"tls.listen", "--tls-listen", "ADDR:PORT", arity::list,
     "implicit TLS listener, e.g. submissions on port 465 (RFC 8314; repeatable)",
     [](settings& s, const values& v) {
       s.tls_listen = each<core::endpoint>(v, [](auto& t) { return parse_endpoint(t); });
     },
     [](const settings& s) { return array(s.tls_listen, [](auto& e) { return e.to_string(); }); }},
    {"tls.min_version", "--tls-min-version", "TLS1.2|TLS1.3", arity::one,
     "oldest TLS version accepted (SSLv3, TLS 1.0 and 1.1 never are)",
     [](settings& s, const values& v) {
       std::string text = lowercase(one(v));  // "TLS1.2", "TLSv1.2" or "1.2"
       text.erase(0, text.rfind("tlsv", 0) == 0 ? 4 : text.rfind("tls", 0) == 0 ? 3 : 0);
       if (text == "1.2") s.tls_min_version = "TLS1.2";
       else if (text == "1.3") s.tls_min_version = "TLS1.3";
       else expected("TLS1.2 or TLS1.3", one(v));
     },
     [](const settings& s) { return toml_string(s.tls_min_version); }, live},
    {"tls.ciphers", "--tls-ciphers", "LIST", arity::one,
     "TLS 1.2 ciphers, OpenSSL syntax (default: ECDHE with AES-GCM or ChaCha20-Poly1305)",
     [](settings& s, const values& v) { s.tls_ciphers = cipher_list(one(v)); },
     [](const settings& s) { return toml_string(s.tls_ciphers); }, live},
    {"tls.ciphersuites", "--tls-ciphersuites", "LIST", arity::one,
     "TLS 1.3 cipher suites (default: OpenSSL's three)",
     [](settings& s, const values& v) { s.tls_ciphersuites = cipher_list(one(v)); },
     [](const settings& s) { return toml_string(s.tls_ciphersuites); }, live},
    {"tls.ask_client_certificate", "--tls-ask-client-cert", "", arity::flag,
     "ask clients for a certificate (never required nor verified; logged as presented)",
     [](settings& s, const values& v) { s.tls_ask_client_certificate = parse_bool(one(v)); },
     [](const settings& s) { return boolean(s.tls_ask_client_certificate); }, live},
    {"tls.ticket_key_rotation", "--tls-ticket-key-rotation", "DURATION", arity::one,
     "new session ticket key this often; a key decrypts for twice as long, then is erased",
     [](settings& s, const values& v) {
       s.tls_ticket_key_rotation_s = parse_seconds(one(v));
       if (s.tls_ticket_key_rotation_s == 0) expected("a duration of 1s or more", one(v));
     },
     [](const settings& s) { return duration(s.tls_ticket_key_rotation_s); }},
    {"timeouts.tls_handshake", "--timeout-tls-handshake", "DURATION", arity::one,
     "the whole TLS handshake after STARTTLS or on an implicit TLS listener",
     [](settings& s, const values& v) { s.timeout_tls_handshake_s = parse_seconds(one(v)); },
     [](const settings& s) { return duration(s.timeout_tls_handshake_s); }, live},
    // ---- end of TLS ----
    {"admin.listen", "--admin-listen", "ADDR:PORT", arity::list,
     "metrics, health and admin API listener (repeatable)",
     [](settings& s, const values& v) {
       s.admin_listen = each<core::endpoint>(v, [](auto& t) { return parse_endpoint(t); });
     },
     [](const settings& s) {
       return array(s.admin_listen, [](auto& e) { return e.to_string(); });
     }},
    // The control socket (ringmta-ctl) and who may use the admin API over TCP (issue 14).
    {"admin.socket", "--admin-socket", "PATH", arity::one,
     "admin API UNIX socket for ringmta-ctl; empty: admin.sock in the spool directory",
     [](settings& s, const values& v) {
       s.admin_socket = path_setting(v, true);
       if (s.admin_socket.size() >= 108) expected("a socket path of 107 bytes at most",
                                                  s.admin_socket);
     },
     [](const settings& s) { return toml_string(s.admin_socket); }},
    {"admin.socket_group", "--admin-socket-group", "NAME", arity::one,
     "group of the admin socket (mode 0660): its members may run ringmta-ctl; empty: ours",
     [](settings& s, const values& v) {
       const auto text = one(v);
       if (text.find_first_of(":/ \t") != std::string::npos) expected("a group name", text);
       s.admin_socket_group = text;
     },
     [](const settings& s) { return toml_string(s.admin_socket_group); }},
    {"admin.token_file", "--admin-token-file", "PATH", arity::one,
     "bearer token file: the admin API on admin.listen needs it; empty: /metrics, /health only",
     [](settings& s, const values& v) { s.admin_token_file = path_setting(v, true); },
     [](const settings& s) { return toml_string(s.admin_token_file); }},
    {"admin.log_format", "--log-format", "json|text", arity::one, "log record format",
     [](settings& s, const values& v) {
       const auto text = one(v);
       if (text != "json" && text != "text") expected("json or text", text);
       s.log_format = text;
     },
     [](const settings& s) { return toml_string(s.log_format); }, live},
    // Log outputs (issue 9: logs that never stall mail): a writer thread fed by per-shard
    // buffers writes to one of these.
    {"log.output", "--log-output", "stdout|file|syslog", arity::one,
     "where log records go: stdout (journald), a file, or syslog",
     [](settings& s, const values& v) {
       s.log_output = parse_choice(one(v), {"stdout", "file", "syslog"});
     },
     [](const settings& s) { return toml_string(s.log_output); }, live},
    {"log.file", "--log-file", "PATH", arity::one,
     "log file for log.output = file (JSON lines; SIGUSR1 reopens it after logrotate)",
     [](settings& s, const values& v) { s.log_file = path_setting(v, true); },
     [](const settings& s) { return toml_string(s.log_file); }, live},
    {"log.syslog_socket", "--log-syslog-socket", "PATH", arity::one,
     "syslog's local datagram socket for log.output = syslog (RFC 5424 messages)",
     [](settings& s, const values& v) {
       s.log_syslog_socket = path_setting(v);
       if (s.log_syslog_socket.size() >= 108) expected("a socket path of 107 bytes at most",
                                                       s.log_syslog_socket);
     },
     [](const settings& s) { return toml_string(s.log_syslog_socket); }, live},
    {"log.syslog_facility", "--log-syslog-facility", "NAME", arity::one,
     "syslog facility: mail, daemon or local0 to local7",
     [](settings& s, const values& v) {
       s.log_syslog_facility = parse_choice(one(v), {"mail", "daemon", "local0", "local1",
                                                     "local2", "local3", "local4", "local5",
                                                     "local6", "local7"});
     },
     [](const settings& s) { return toml_string(s.log_syslog_facility); }, live},
    {"log.buffer_size", "--log-buffer-size", "BYTES", arity::one,
     "log buffer per shard (64k to 256M); records beyond it are dropped and counted",
     [](settings& s, const values& v) {
       s.log_buffer_bytes = parse_bytes(one(v));
       if (s.log_buffer_bytes < (64u << 10) || s.log_buffer_bytes > (256u << 20))
         expected("a size from 64k to 256M", one(v));
     },
     [](const settings& s) { return byte_size(s.log_buffer_bytes); }},
    // ---- Events out (src/events, issue 14): log records posted to a webhook, at least once
    {"events.url", "--events-url", "URL", arity::one,
     "post log records to this endpoint as JSON arrays (http:// or https://); they wait in "
     "SPOOL/events until a 2xx answer; empty: no webhook",
     [](settings& s, const values& v) {
       const auto text = one(v);
       if (!text.empty() && !events::parse_endpoint_url(text))
         expected("an http:// or https:// URL such as http://127.0.0.1:8080/events", text);
       s.events_url = text;
     },
     [](const settings& s) { return toml_string(s.events_url); }, live},
    {"events.types", "--events-types", "TYPE,...", arity::list,
     "record types posted (received, delivered, deferred, bounced, ...; all: every record); "
     "empty: the mail flow and operator actions",
     [](settings& s, const values& v) {
       s.events_types.clear();
       for (const auto& type : v) {
         const auto known = events::known_event_types();
         if (type != "all" && std::find(known.begin(), known.end(), type) == known.end())
           expected(fmt::format("record types (all, {})", fmt::join(known, ", ")), type);
         s.events_types.push_back(type);
       }
     },
     [](const settings& s) { return array(s.events_types, [](auto& t) { return t; }); }, live},
    {"events.batch_size", "--events-batch-size", "N", arity::one,
     "records per POST at most (1 to 10000)",
     [](settings& s, const values& v) { s.events_batch_size = parse_count(one(v), 1, 10'000); },
     [](const settings& s) { return number(s.events_batch_size); }, live},
    {"events.interval", "--events-interval", "DURATION", arity::one,
     "how long a partial batch waits for more records before it is posted (0 to 1h)",
     [](settings& s, const values& v) {
       s.events_interval_ms = parse_milliseconds(one(v));
       if (s.events_interval_ms > 3'600'000) expected("a duration up to 1h", one(v));
     },
     [](const settings& s) { return duration_ms(s.events_interval_ms); }, live},
    {"events.timeout", "--events-timeout", "DURATION", arity::one,
     "connect, read and write timeout of a POST (100ms to 10m): a stalled endpoint fails",
     [](settings& s, const values& v) {
       s.events_timeout_ms = parse_milliseconds(one(v));
       if (s.events_timeout_ms < 100 || s.events_timeout_ms > 600'000)
         expected("a duration from 100ms to 10m", one(v));
     },
     [](const settings& s) { return duration_ms(s.events_timeout_ms); }, live},
    {"events.retry_max", "--events-retry-max", "DURATION", arity::one,
     "longest wait between retries of a failing endpoint (1s to 1h; from 0.5s, doubling)",
     [](settings& s, const values& v) {
       s.events_retry_max_ms = parse_milliseconds(one(v));
       if (s.events_retry_max_ms < 1000 || s.events_retry_max_ms > 3'600'000)
         expected("a duration from 1s to 1h", one(v));
     },
     [](const settings& s) { return duration_ms(s.events_retry_max_ms); }, live},
    {"events.max_backlog", "--events-max-backlog", "BYTES", arity::one,
     "records kept on disk for a failing endpoint (1M to 1T); beyond, the oldest are dropped "
     "and counted (ringmta_events_dropped_total, an events_dropped record); mail never waits",
     [](settings& s, const values& v) {
       s.events_max_backlog_bytes = parse_bytes(one(v));
       if (s.events_max_backlog_bytes < (1u << 20) || s.events_max_backlog_bytes > (1ull << 40))
         expected("a size from 1M to 1T", one(v));
     },
     [](const settings& s) { return byte_size(s.events_max_backlog_bytes); }, live},
    {"events.authorization_file", "--events-authorization-file", "PATH", arity::one,
     "file whose first line is sent as the Authorization header (e.g. Bearer TOKEN)",
     [](settings& s, const values& v) { s.events_authorization_file = path_setting(v, true); },
     [](const settings& s) { return toml_string(s.events_authorization_file); }, live},
    {"bounce.classes_file", "--bounce-classes", "FILE", arity::one,
     "bounce classification rules ([[rule]] class, status, code, text: RE2); deferred and "
     "bounced records carry the class; empty: the built-in rules (conf/bounce-classes.toml)",
     [](settings& s, const values& v) { s.bounce_classes_file = path_setting(v, true); },
     [](const settings& s) { return toml_string(s.bounce_classes_file); }, live},
    // Deployment and supervision: privilege drop (src/server/privileges.cc) and test hooks.
    {"server.user", "--user", "NAME", arity::one,
     "started as root: open listeners and spool, then run as this user with no capabilities",
     [](settings& s, const values& v) {
       const auto text = one(v);
       if (text.empty() || text.find_first_of(":/ \t") != std::string::npos)
         expected("a user name such as ringmta", text);
       s.user = text;
     },
     [](const settings& s) { return toml_string(s.user); }},
    // ---- SMTP AUTH (RFC 4954; src/auth, issue 12) ----
    {"auth.passwd_file", "--auth-passwd-file", "FILE", arity::one,
     "user:hash lines (crypt(3): yescrypt, bcrypt, sha512-crypt; `ringmta passwd USER` makes "
     "one); with it, AUTH PLAIN LOGIN is offered after TLS; empty: no AUTH",
     [](settings& s, const values& v) { s.auth_passwd_file = path_setting(v, true); },
     [](const settings& s) { return toml_string(s.auth_passwd_file); }, live},
    {"auth.dovecot", "--auth-dovecot", "SOCKET", arity::one,
     "Dovecot's auth-client UNIX socket (as Postfix's smtpd_sasl_type = dovecot), instead of "
     "--auth-passwd-file; empty: not used",
     [](settings& s, const values& v) { s.auth_dovecot = path_setting(v, true); },
     [](const settings& s) { return toml_string(s.auth_dovecot); }, live},
    {"auth.sender_map", "--auth-sender-map", "FILE", arity::one,
     "which logins may use which envelope senders: `address-or-@domain login,...` lines; "
     "without an entry a login may send only as itself (553 5.7.1 otherwise)",
     [](settings& s, const values& v) { s.auth_sender_map = path_setting(v, true); },
     [](const settings& s) { return toml_string(s.auth_sender_map); }, live},
    {"auth.plaintext_loopback", "--auth-plaintext-loopback", "", arity::flag,
     "also offer AUTH without TLS to clients on loopback addresses (never to others)",
     [](settings& s, const values& v) { s.auth_plaintext_loopback = parse_bool(one(v)); },
     [](const settings& s) { return boolean(s.auth_plaintext_loopback); }, live},
    {"auth.workers", "--auth-workers", "N", arity::one,
     "threads that verify password hashes (never a shard)",
     [](settings& s, const values& v) { s.auth_workers = parse_count(one(v), 1, 64); },
     [](const settings& s) { return number(s.auth_workers); }},
    {"auth.queue_size", "--auth-queue-size", "N", arity::one,
     "password checks waiting for a worker; beyond it AUTH gets 454 4.7.0",
     [](settings& s, const values& v) { s.auth_queue_size = parse_count(one(v), 1, 1'000'000); },
     [](const settings& s) { return number(s.auth_queue_size); }},
    {"auth.max_failures", "--auth-max-failures", "N", arity::one,
     "failed logins per client address or per login before a lockout (454 4.7.0); each "
     "failure's 535 is delayed more (0.5 s doubling, at most 8 s)",
     [](settings& s, const values& v) { s.auth_failures_max = parse_count(one(v), 1, 1'000'000); },
     [](const settings& s) { return number(s.auth_failures_max); }},
    {"auth.lockout", "--auth-lockout", "DURATION", arity::one,
     "how long a lockout lasts, and how long failures are remembered",
     [](settings& s, const values& v) { s.auth_lockout_s = parse_seconds_in(one(v), 1, 86400); },
     [](const settings& s) { return duration(s.auth_lockout_s); }},
    {"server.allow_root", "--allow-root", "", arity::flag,
     "started as root: keep running as root instead of switching to --user (not advised)",
     [](settings& s, const values& v) { s.allow_root = parse_bool(one(v)); },
     [](const settings& s) { return boolean(s.allow_root); }},
    {"admin.debug_endpoints", "--debug-endpoints", "", arity::flag,
     "TESTS ONLY: POST /debug/freeze/SHARD?ms=N on the admin listener blocks a shard's loop",
     [](settings& s, const values& v) { s.debug_endpoints = parse_bool(one(v)); },
     [](const settings& s) { return boolean(s.debug_endpoints); }},
  };
  return specs;
}

settings defaults() {
  settings s;
  s.listen = {*core::endpoint::parse("0.0.0.0:25")};
  s.mynetworks = {*core::cidr::parse("127.0.0.0/8"), *core::cidr::parse("::1")};
  s.proxy_trusted = s.mynetworks;
  s.admin_listen = {*core::endpoint::parse("127.0.0.1:8025")};
  char name[256] = {};
  if (gethostname(name, sizeof name - 1) == 0 && name[0] != '\0') s.hostname = lowercase(name);
  else s.hostname = "localhost";
  return s;
}

// A TOML leaf as the strings our parsers take: arrays give one string per element.
values toml_values(const toml::node& node) {
  values out;
  auto scalar = [&out](const toml::node& item) {
    if (auto text = item.value<std::string>(); text && item.is_string()) out.push_back(*text);
    else if (item.is_boolean()) out.push_back(*item.value<bool>() ? "true" : "false");
    else if (item.is_integer()) out.push_back(std::to_string(*item.value<std::int64_t>()));
    else if (item.is_floating_point()) out.push_back(fmt::format("{}", *item.value<double>()));
    else throw bad_value("expected a string, number, boolean or an array of them");
  };
  if (const auto* array = node.as_array()) {
    for (const auto& item : *array) scalar(item);
  } else {
    scalar(node);
  }
  return out;
}

std::string where(const std::string& origin, const toml::node& node) {
  const auto line = node.source().begin.line;
  return line ? fmt::format("{}:{}", origin, line) : origin;
}

// [[dkim]] tables: each field is checked where it is written (file:line: dkim.FIELD: ...).
void apply_dkim_tables(settings& s, const toml::node& node, const std::string& origin) {
  const auto* tables = node.as_array();
  if (tables == nullptr || (!tables->empty() && !tables->is_array_of_tables()))
    throw error(fmt::format("{}: dkim: expected [[dkim]] tables (domain, selector, key_file)",
                            where(origin, node)));
  s.dkim_keys.clear();
  for (const auto& item : *tables) {
    const auto& table = *item.as_table();
    dkim_key key;
    key.origin = where(origin, item);
    for (const auto& [name, value] : table) {
      const std::string_view field = name.str();
      try {
        if (std::find(std::begin(dkim_table_keys), std::end(dkim_table_keys), field) ==
            std::end(dkim_table_keys))
          throw bad_value("unknown field; use domain, selector, key_file, algorithm, headers, "
                          "canonicalization");
        parse_dkim_field(key, field, toml_values(value));
      } catch (const bad_value& problem) {
        throw error(fmt::format("{}: dkim.{}: {}", where(origin, value), field, problem.what()));
      }
    }
    for (const auto* required : {"domain", "selector", "key_file"}) {
      if (!table.contains(required))
        throw error(fmt::format("{}: dkim: missing {}", key.origin, required));
    }
    s.dkim_keys.push_back(std::move(key));
  }
}

// [[NAME]] tables, in file order: a bad field names its own line (file:line: NAME.KEY), a
// bad table its first line.
template <typename Entry, typename Field, typename Check>
std::vector<Entry> array_of_tables(const toml::node& node, const std::string& origin,
                                   std::string_view name, Field field, Check check) {
  const auto* tables = node.as_array();  // [] (what check-config shows for none) is none
  if (tables == nullptr || (!tables->empty() && !tables->is_array_of_tables()))
    throw error(fmt::format("{}: {}: expected [[{}]] tables", where(origin, node), name, name));
  std::vector<Entry> out;
  for (const auto& item : *tables) {
    Entry entry;
    entry.origin = where(origin, item);
    for (const auto& [key, value] : *item.as_table()) {
      try {
        field(entry, key.str(), toml_values(value));
      } catch (const bad_value& problem) {
        throw error(
            fmt::format("{}: {}.{}: {}", where(origin, value), name, key.str(), problem.what()));
      }
    }
    try {
      check(entry);
    } catch (const bad_value& problem) {
      throw error(fmt::format("{}: {}: {}", entry.origin, name, problem.what()));
    }
    out.push_back(std::move(entry));
  }
  return out;
}

void apply_shaping_tables(settings& s, const toml::node& node, const std::string& origin) {
  s.shaping = array_of_tables<shaping_entry>(node, origin, "shaping", parse_shaping_field,
                                             check_shaping_entry);
}

void apply_egress_tables(settings& s, std::string_view key, const toml::node& node,
                         const std::string& origin) {
  if (key == "source")
    s.sources = array_of_tables<source_entry>(node, origin, "source", parse_source_field,
                                              check_source);
  else
    s.pools = array_of_tables<pool_entry>(node, origin, "pool", parse_pool_field, check_pool);
}

void apply_reply_rule_tables(settings& s, const toml::node& node, const std::string& origin) {
  s.reply_rules = array_of_tables<reply_rule_entry>(node, origin, "reply_rule",
                                                    parse_reply_rule_field, check_reply_rule);
}

// Keys of `table` (at `prefix`) must be settings, or sections holding some ([relay.tls]).
void check_known(const toml::table& section, const std::string& prefix,
                 const std::vector<std::string>& seen, const std::string& origin) {
  for (const auto& [key, value] : section) {
    const auto path = fmt::format("{}.{}", prefix, key.str());
    if (std::find(seen.begin(), seen.end(), path) != seen.end()) continue;
    const auto& specs = table();
    const bool holds_settings =
        std::any_of(specs.begin(), specs.end(), [&](const setting_spec& spec) {
          return std::string_view(spec.key).rfind(path + ".", 0) == 0;
        });
    if (holds_settings && value.is_table()) {
      check_known(*value.as_table(), path, seen, origin);
      continue;
    }
    throw error(fmt::format("{}: unknown setting '{}'", where(origin, value), path));
  }
}

void apply_toml(settings& s, const toml::table& root, const std::string& origin) {
  std::vector<std::string> seen;
  for (const auto& spec : table()) {
    const auto node = root.at_path(spec.key);
    if (!node) continue;
    seen.push_back(spec.key);
    s.origins[spec.key] = where(origin, *node.node());
    try {
      if (std::string_view(spec.key) == "dkim") {
        apply_dkim_tables(s, *node.node(), origin);
        continue;
      }
      if (std::string_view(spec.key) == "shaping") {
        apply_shaping_tables(s, *node.node(), origin);
        continue;
      }
      if (std::string_view(spec.key) == "reply_rule") {
        apply_reply_rule_tables(s, *node.node(), origin);
        continue;
      }
      if (std::string_view(spec.key) == "source" || std::string_view(spec.key) == "pool") {
        apply_egress_tables(s, spec.key, *node.node(), origin);
        continue;
      }
      if (spec.kind == arity::list && node.is_table()) {
        // [relay.routes] "example.com" = "192.0.2.1:25" is --route example.com=192.0.2.1:25
        values entries;
        std::vector<const toml::node*> nodes;
        for (const auto& [name, value] : *node.as_table()) {
          entries.push_back(fmt::format("{}={}", name.str(), one(toml_values(value))));
          nodes.push_back(&value);
        }
        try {
          spec.apply(s, entries);
        } catch (const bad_value&) {  // name the entry's own line
          for (std::size_t i = 0; i < entries.size(); ++i) {
            settings scratch;
            try {
              spec.apply(scratch, {entries[i]});
            } catch (const bad_value& problem) {
              throw error(fmt::format("{}: {}: {}", where(origin, *nodes[i]), spec.key,
                                      problem.what()));
            }
          }
          throw;
        }
      } else {
        spec.apply(s, toml_values(*node.node()));
      }
    } catch (const bad_value& problem) {
      throw error(fmt::format("{}: {}: {}", where(origin, *node.node()), spec.key, problem.what()));
    }
  }
  // Every key must be one we know: a typo must not silently fall back to a default.
  for (const auto& [section, body] : root) {
    if (section.str() == "dkim") continue;  // [[dkim]]: checked by apply_dkim_tables
    if (section.str() == "shaping") continue;  // [[shaping]]: apply_shaping_tables
    if (section.str() == "reply_rule") continue;  // [[reply_rule]]: apply_reply_rule_tables
    if (section.str() == "source" || section.str() == "pool") continue;  // apply_egress_tables
    const auto* section_table = body.as_table();
    if (!section_table)
      throw error(fmt::format("{}: '{}': settings live in sections such as [server]",
                              where(origin, body), section.str()));
    check_known(*section_table, std::string(section.str()), seen, origin);
  }
}

bool is_boolean_word(std::string_view text) {
  for (const std::string_view word : {"true", "false", "yes", "no", "on", "off", "1", "0"})
    if (text == word) return true;
  return false;
}

// Booleans take no value, "=true" or "=false"; "--flag false" (a word of its own) too, as the
// help of earlier versions showed. Each becomes "--flag=VALUE" for CLI11.
std::vector<std::string> normalize_booleans(const std::vector<std::string>& flags) {
  std::vector<std::string> out;
  for (std::size_t i = 0; i < flags.size(); ++i) {
    const bool boolean_flag = std::any_of(table().begin(), table().end(), [&](const auto& spec) {
      return spec.kind == arity::flag && flags[i] == spec.flag;
    });
    if (!boolean_flag) {
      out.push_back(flags[i]);
    } else if (i + 1 < flags.size() && is_boolean_word(flags[i + 1])) {
      out.push_back(flags[i] + "=" + flags[i + 1]);
      ++i;
    } else {
      out.push_back(flags[i] + "=true");
    }
  }
  return out;
}

void apply_flags(settings& s, const std::vector<std::string>& flags, std::string& config_path) {
  CLI::App app{"ringmta"};
  app.allow_extras(false);
  app.add_option("--config", config_path, "TOML configuration file");
  std::vector<std::pair<const setting_spec*, values>> given(table().size());
  for (std::size_t i = 0; i < table().size(); ++i) {
    const auto& spec = table()[i];
    given[i].first = &spec;
    auto* option = app.add_option(spec.flag, given[i].second, spec.help);
    option->type_name(spec.value_name);
    if (spec.kind == arity::list) option->delimiter(',');
    else option->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);
  }
  const auto normalized = normalize_booleans(flags);
  std::vector<std::string> reversed(normalized.rbegin(), normalized.rend());  // CLI11's order
  try {
    app.parse(reversed);
  } catch (const CLI::ParseError& problem) {
    throw error(fmt::format("command line: {}", problem.what()));
  }
  for (auto& [spec, v] : given) {
    if (v.empty()) continue;
    // A single-valued flag given twice: the last one wins (scripts append overrides).
    if (spec->kind != arity::list && v.size() > 1) v.erase(v.begin(), v.end() - 1);
    s.origins[spec->key] = fmt::format("command line ({})", spec->flag);
    try {
      spec->apply(s, v);
    } catch (const bad_value& problem) {
      throw error(fmt::format("command line: {}: {}", spec->flag, problem.what()));
    }
  }
}

std::string where_set(const settings& s, const std::string& key) {
  const auto found = s.origins.find(key);
  return found != s.origins.end() ? found->second : "defaults";
}

// Checks that involve more than one key, after file and flags.
void check_together(const settings& s) {
  if (s.listen.empty())
    throw error(fmt::format("{}: server.listen: no listener: give --listen ADDR:PORT",
                            where_set(s, "server.listen")));
  if (s.tls_cert_files.size() != s.tls_key_files.size()) {
    const char* key = s.tls_cert_files.size() > s.tls_key_files.size() ? "tls.cert" : "tls.key";
    throw error(fmt::format("{}: {}: {} --tls-cert but {} --tls-key: give one key per certificate",
                            where_set(s, key), key, s.tls_cert_files.size(),
                            s.tls_key_files.size()));
  }
  if (!s.tls_listen.empty() && s.tls_cert_files.empty())
    throw error(fmt::format("{}: tls.listen: an implicit TLS listener needs --tls-cert and "
                            "--tls-key", where_set(s, "tls.listen")));
  if (!s.submissions_listen.empty() || !s.submission_listen.empty()) {
    const char* key =
        s.submission_listen.empty() ? "server.submissions_listen" : "server.submission_listen";
    if (s.tls_cert_files.empty())
      throw error(fmt::format("{}: {}: submission needs TLS (RFC 8314): give --tls-cert and "
                              "--tls-key", where_set(s, key), key));
    if (s.auth_passwd_file.empty() && s.auth_dovecot.empty())
      throw error(fmt::format("{}: {}: submission needs an AUTH back-end: give "
                              "--auth-passwd-file or --auth-dovecot", where_set(s, key), key));
  }
  if (!s.auth_passwd_file.empty() && !s.auth_dovecot.empty())
    throw error(fmt::format("{}: auth.dovecot: give --auth-dovecot or --auth-passwd-file, not "
                            "both", where_set(s, "auth.dovecot")));
  if (!s.relayhost_auth.empty() && s.relayhost.empty())  // else the password goes nowhere
    throw error(fmt::format("{}: relay.relayhost_auth: credentials need a --relayhost",
                            where_set(s, "relay.relayhost_auth")));
  if (s.log_output == "file" && s.log_file.empty())
    throw error(fmt::format("{}: log.output: 'file' needs log.file (--log-file PATH)",
                            where_set(s, "log.output")));
}

const setting_spec& spec_of(const std::string& key) {
  for (const auto& spec : table())
    if (key == spec.key) return spec;
  throw error(fmt::format("unknown setting '{}'", key));
}

std::string config_path_from(const std::vector<std::string>& flags) {
  for (std::size_t i = 0; i < flags.size(); ++i) {
    if (flags[i] == "--config" && i + 1 < flags.size()) return flags[i + 1];
    if (flags[i].rfind("--config=", 0) == 0) return flags[i].substr(9);
  }
  return {};
}

}  // namespace

settings load_from(const std::string& toml_text, const std::string& origin,
                   const std::vector<std::string>& flags) {
  settings s = defaults();
  if (!origin.empty()) {
    try {
      apply_toml(s, toml::parse(toml_text, origin), origin);
    } catch (const toml::parse_error& problem) {
      throw error(fmt::format("{}:{}: {}", origin, problem.source().begin.line,
                              problem.description()));
    }
  }
  std::string ignored;
  apply_flags(s, flags, ignored);
  check_together(s);
  return s;
}

settings load(int argc, const char* const* argv) {
  const std::vector<std::string> flags(argv + 1, argv + argc);
  const std::string path = config_path_from(flags);
  if (path.empty()) return load_from({}, {}, flags);
  std::ifstream file(path);
  if (!file) throw error(fmt::format("{}: cannot read: {}", path, std::strerror(errno)));
  std::ostringstream text;
  text << file.rdbuf();
  return load_from(text.str(), path, flags);
}

std::string help_text() {
  std::string out = "  --config PATH  TOML configuration file (see conf/ringmta.toml)\n";
  for (const auto& spec : table()) {
    if (spec.kind == arity::flag)
      out += fmt::format("  {}[=true|false]  {} [{}]\n", spec.flag, spec.help, spec.key);
    else
      out += fmt::format("  {} {}  {} [{}]\n", spec.flag, spec.value_name, spec.help, spec.key);
  }
  return out;
}

std::vector<setting_info> describe() {
  std::vector<setting_info> out;
  for (const auto& spec : table()) {
    const setting_kind kind = spec.kind == arity::flag   ? setting_kind::boolean
                              : spec.kind == arity::list ? setting_kind::list
                                                         : setting_kind::value;
    out.push_back({spec.key, spec.flag, spec.value_name, kind, spec.reload, spec.help});
  }
  return out;
}

std::string show(const settings& s, const std::string& key) {
  const auto& spec = spec_of(key);
  return spec.show ? spec.show(s) : std::string("\"(not shown)\"");
}

std::string render(const settings& s) {
  // TOML puts top-level keys ([[dkim]] as inline tables) before any [section], and a section
  // may appear once: rows are grouped by section in the order the table first names them.
  auto section_of = [](std::string_view key) {  // "" for a top-level key
    const auto dot = key.find('.');
    return dot == std::string_view::npos ? std::string_view() : key.substr(0, dot);
  };
  std::vector<std::string_view> sections{""};
  for (const auto& spec : table()) {
    const auto section = section_of(spec.key);
    if (std::find(sections.begin(), sections.end(), section) == sections.end())
      sections.push_back(section);
  }
  std::string out;
  for (const auto section : sections) {
    if (!section.empty()) out += fmt::format("{}[{}]\n", out.empty() ? "" : "\n", section);
    for (const auto& spec : table()) {
      const std::string_view key(spec.key);
      if (section_of(key) != section) continue;
      const auto name = section.empty() ? key : key.substr(section.size() + 1);
      const auto line = fmt::format("{} = {}", name, show(s, spec.key));
      const auto origin = s.origins.find(spec.key);
      if (origin == s.origins.end()) out += line + "\n";
      else out += fmt::format("{:<40} # {}\n", line, origin->second);
    }
  }
  return out;
}

std::vector<std::string> changed_keys(const settings& before, const settings& after) {
  std::vector<std::string> out;
  for (const auto& spec : table())
    if (show(before, spec.key) != show(after, spec.key)) out.push_back(spec.key);
  return out;
}

void keep_value(settings& next, const settings& current, const std::string& key) {
  const auto& spec = spec_of(key);
  try {
    const auto document = toml::parse(fmt::format("value = {}\n", show(current, key)), key);
    spec.apply(next, toml_values(*document["value"].node()));
  } catch (const std::exception& problem) {  // show() and apply() disagree: a table bug
    throw error(fmt::format("{}: cannot keep the running value: {}", key, problem.what()));
  }
  if (const auto origin = current.origins.find(key); origin != current.origins.end())
    next.origins[key] = origin->second;
  else
    next.origins.erase(key);
}

}  // namespace ringmta::config
