#include "ringmta/dns/config.h"

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstdio>
#include <memory>

namespace ringmta::dns {

std::string resolver_config::validate() const {
  if (servers.empty()) return "no DNS server configured";
  if (servers.size() > servers_max) return "too many DNS servers (at most 8)";
  if (timeout_ms == 0) return "DNS timeout must be positive";
  if (attempts == 0) return "DNS attempts must be positive";
  if (edns_payload_bytes != 0 && edns_payload_bytes < 512)
    return "EDNS payload size must be 0 or at least 512 (RFC 6891 §6.2.5)";
  if (cache_entries_max == 0 || cache_bytes_max == 0) return "DNS cache bounds must be positive";
  if (queries_in_flight_max == 0 || queries_in_flight_max > 65535)
    return "queries_in_flight_max must be in 1..65535";
  if (lookups_max == 0 || lookups_max >= (1u << 20)) return "lookups_max must be in 1..1048575";
  if (std::uint64_t{lookups_max} + lookups_waiting_max >= (1u << 20))
    return "lookups_max + lookups_waiting_max must be below 1048576";
  if (mx_hosts_max == 0) return "mx_hosts_max must be positive";
  if (lookup_timeout_ms == 0) return "DNS lookup timeout must be positive";
  if (!ipv4 && !ipv6) return "at least one of IPv4 and IPv6 must be enabled";
  return "";
}

namespace {

std::string_view trim(std::string_view text) {
  const auto first = text.find_first_not_of(" \t\r");
  if (first == std::string_view::npos) return {};
  const auto last = text.find_last_not_of(" \t\r");
  return text.substr(first, last - first + 1);
}

// Splits off the first whitespace-separated word of `text`.
std::string_view next_word(std::string_view& text) {
  text = trim(text);
  const auto end = std::min(text.find_first_of(" \t"), text.size());
  const auto word = text.substr(0, end);
  text.remove_prefix(end);
  return word;
}

bool parse_option_number(std::string_view word, std::string_view name, std::uint32_t limit,
                         std::uint32_t& value) {
  if (word.substr(0, name.size()) != name) return false;
  word.remove_prefix(name.size());
  std::uint32_t number = 0;
  const auto [end, error] = std::from_chars(word.data(), word.data() + word.size(), number);
  if (error != std::errc() || end != word.data() + word.size()) return true;  // ignore junk
  value = std::clamp<std::uint32_t>(number, 1, limit);  // glibc caps: RES_MAXRETRANS, RES_MAXRETRY
  return true;
}

void parse_options(std::string_view rest, resolver_config& into) {
  for (auto word = next_word(rest); !word.empty(); word = next_word(rest)) {
    std::uint32_t seconds = into.timeout_ms / 1000;
    if (parse_option_number(word, "timeout:", 30, seconds)) {
      into.timeout_ms = seconds * 1000;
    } else if (parse_option_number(word, "attempts:", 5, into.attempts)) {
    } else if (word == "rotate") {
      into.rotate = true;
    }
    // Other options (ndots, edns0, use-vc, ...) do not change how this engine works.
  }
}

}  // namespace

core::result<void> parse_resolv_conf(std::string_view text, resolver_config& into) {
  std::vector<server_address> servers;
  while (!text.empty()) {
    const auto end = std::min(text.find('\n'), text.size());
    auto line = text.substr(0, end);
    text.remove_prefix(std::min(end + 1, text.size()));
    line = line.substr(0, std::min(line.find_first_of("#;"), line.size()));  // comments
    const auto keyword = next_word(line);
    if (keyword == "nameserver") {
      const auto address = next_word(line);
      auto ip = ip_address::parse(address.substr(0, address.find('%')));  // drop a zone id
      if (ip && servers.size() < servers_max) servers.push_back(server_address{ip.value(), 53});
    } else if (keyword == "options") {
      parse_options(line, into);
    }
  }
  if (servers.empty()) return core::fail(EINVAL);
  into.servers = std::move(servers);
  return {};
}

core::result<void> load_resolv_conf(const char* path, resolver_config& into) {
  constexpr std::size_t bytes_max = 64 * 1024;
  const std::unique_ptr<std::FILE, int (*)(std::FILE*)> file(std::fopen(path, "re"),
                                                             &std::fclose);
  if (!file) return core::fail(errno != 0 ? errno : EIO);
  std::string text(bytes_max + 1, '\0');
  const std::size_t size = std::fread(text.data(), 1, text.size(), file.get());
  if (std::ferror(file.get())) return core::fail(EIO);
  if (size > bytes_max) return core::fail(EFBIG);
  text.resize(size);
  return parse_resolv_conf(text, into);
}

}  // namespace ringmta::dns
