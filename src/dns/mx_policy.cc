#include "ringmta/dns/mx_policy.h"

#include <algorithm>
#include <utility>

namespace ringmta::dns {

random_source seeded_random(std::uint64_t seed) {
  return [state = seed]() mutable {
    std::uint64_t z = (state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
  };
}

std::optional<ip_address> parse_address_literal(std::string_view domain) noexcept {
  if (domain.size() < 3 || domain.front() != '[' || domain.back() != ']') return std::nullopt;
  auto inner = domain.substr(1, domain.size() - 2);
  constexpr std::string_view ipv6_tag = "ipv6:";
  bool tagged = inner.size() > ipv6_tag.size();
  for (std::size_t i = 0; tagged && i < ipv6_tag.size(); ++i)
    tagged = (inner[i] | 0x20) == ipv6_tag[i];  // the tag is case-insensitive (RFC 5321 §4.1.3)
  if (tagged) inner.remove_prefix(ipv6_tag.size());
  auto ip = ip_address::parse(inner);
  if (!ip || (ip.value().family == 6) != tagged) return std::nullopt;
  return ip.value();
}

bool is_valid_domain(std::string_view name) noexcept {
  if (!name.empty() && name.back() == '.') name.remove_suffix(1);
  if (name.empty() || name.size() > 253) return false;
  std::size_t label = 0;
  for (const char c : name) {
    if (c == '.') {
      if (label == 0) return false;
      label = 0;
      continue;
    }
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '-' || c == '_';
    if (!ok || ++label > 63) return false;
  }
  return label > 0;
}

bool is_null_mx(const std::vector<mx_record>& records) noexcept {
  return records.size() == 1 && records.front().exchange.empty();
}

std::vector<mx_record> order_mx(std::vector<mx_record> records, const random_source& random,
                                std::size_t hosts_max) {
  std::erase_if(records, [](const mx_record& record) { return record.exchange.empty(); });
  std::sort(records.begin(), records.end(), [](const mx_record& left, const mx_record& right) {
    return left.exchange != right.exchange ? left.exchange < right.exchange
                                           : left.preference < right.preference;
  });
  records.erase(std::unique(records.begin(), records.end(),
                            [](const mx_record& left, const mx_record& right) {
                              return left.exchange == right.exchange;
                            }),
                records.end());
  std::stable_sort(records.begin(), records.end(),
                   [](const mx_record& left, const mx_record& right) {
                     return left.preference < right.preference;
                   });
  // RFC 5321 §5.1: hosts of equal preference are tried in random order (spreads the load).
  for (std::size_t begin = 0; begin < records.size();) {
    std::size_t end = begin + 1;
    while (end < records.size() && records[end].preference == records[begin].preference) ++end;
    for (std::size_t i = end - 1; i > begin; --i) {  // Fisher-Yates over [begin, end)
      const std::size_t j = begin + static_cast<std::size_t>(random() % (i - begin + 1));
      std::swap(records[i], records[j]);
    }
    begin = end;
  }
  if (records.size() > hosts_max) records.resize(hosts_max);
  return records;
}

std::vector<ip_address> host_addresses(const answer* a, const answer* aaaa, bool prefer_ipv6,
                                       bool& temporary) {
  std::vector<ip_address> addresses;
  const answer* first = prefer_ipv6 ? aaaa : a;
  const answer* second = prefer_ipv6 ? a : aaaa;
  for (const answer* part : {first, second}) {
    if (part == nullptr) continue;
    if (is_temporary(part->status)) temporary = true;
    if (part->status == answer_status::ok)
      addresses.insert(addresses.end(), part->addresses.begin(), part->addresses.end());
  }
  return addresses;
}

mx_result failure_result(failure_kind kind, std::string text) {
  mx_result result;
  result.failure = kind;
  result.status = kind == failure_kind::server_failure || kind == failure_kind::timeout ||
                          kind == failure_kind::overloaded
                      ? lookup_status::temporary_failure
                      : lookup_status::permanent_failure;
  result.text = std::move(text);
  return result;
}

}  // namespace ringmta::dns
