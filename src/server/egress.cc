// server::egress_table and egress_picker: see egress.h.
#include "ringmta/server/egress.h"

#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include <fmt/format.h>

namespace ringmta::server {

namespace {

// Start-up (or reload) check, off the shards: an address this host does not have would fail
// every connection later; say so now, naming the line.
void check_bindable(const config::source_entry& source) {
  const int fd = ::socket(source.address.family(), SOCK_STREAM | SOCK_CLOEXEC, 0);
  int error = fd < 0 ? errno : 0;
  if (fd >= 0) {
    const int on = 1;
    ::setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &on, sizeof on);
    if (::bind(fd, source.address.sockaddr_pointer(), source.address.length) != 0) error = errno;
    ::close(fd);
  }
  if (error != 0)
    throw config::error(fmt::format("{}: source.address: cannot bind {}: {}", source.origin,
                                    source.address.address_string(), std::strerror(error)));
}

}  // namespace

egress_table::egress_table(const config::settings& settings, bool check_addresses) {
  for (const auto& s : settings.sources) {
    if (source_named(s.name))
      throw config::error(fmt::format("{}: source.name: '{}' is defined twice", s.origin, s.name));
    if (check_addresses) check_bindable(s);
    _sources.push_back({s.name, s.address, s.ehlo_name});
  }
  for (const auto& p : settings.pools) {
    if (pool_named(p.name))
      throw config::error(fmt::format("{}: pool.name: '{}' is defined twice", p.origin, p.name));
    egress_pool pool{p.name, {}, {}};
    for (const auto& [name, weight] : p.sources) {
      const auto index = source_named(name);
      if (!index)
        throw config::error(fmt::format("{}: pool.sources: unknown source '{}'", p.origin, name));
      if (std::find(pool.sources.begin(), pool.sources.end(), *index) != pool.sources.end())
        throw config::error(fmt::format("{}: pool.sources: '{}' is listed twice", p.origin, name));
      pool.sources.push_back(*index);
      pool.weights.push_back(weight);
    }
    _pools.push_back(std::move(pool));
  }
  _default = pool_named("default");
  for (const auto& e : settings.shaping) {
    if (e.sender_domain.empty()) continue;
    const auto pool = pool_named(e.pool);
    if (!pool)
      throw config::error(fmt::format("{}: shaping.pool: unknown pool '{}'", e.origin, e.pool));
    const auto at = std::lower_bound(
        _by_sender.begin(), _by_sender.end(), e.sender_domain,
        [](const auto& entry, const std::string& name) { return entry.first < name; });
    if (at != _by_sender.end() && at->first == e.sender_domain) at->second = *pool;  // later wins
    else _by_sender.insert(at, {e.sender_domain, *pool});
  }
}

std::optional<std::uint32_t> egress_table::pool_named(std::string_view name) const noexcept {
  for (std::uint32_t i = 0; i < _pools.size(); ++i)
    if (_pools[i].name == name) return i;
  return std::nullopt;
}

std::optional<std::uint32_t> egress_table::source_named(std::string_view name) const noexcept {
  for (std::uint32_t i = 0; i < _sources.size(); ++i)
    if (_sources[i].name == name) return i;
  return std::nullopt;
}

std::optional<std::uint32_t> egress_table::pool_for_sender(
    std::string_view sender_domain) const noexcept {
  const auto find = [&](std::string_view name) -> std::optional<std::uint32_t> {
    const auto at = std::lower_bound(
        _by_sender.begin(), _by_sender.end(), name,
        [](const auto& entry, std::string_view key) { return entry.first < key; });
    if (at != _by_sender.end() && at->first == name) return at->second;
    return std::nullopt;
  };
  if (!_by_sender.empty() && !sender_domain.empty()) {
    if (const auto exact = find(sender_domain)) return exact;
    // ".example.com" covers every name below it; the longest suffix wins (as [[shaping]]).
    for (auto dot = sender_domain.find('.'); dot != std::string_view::npos;
         dot = sender_domain.find('.', dot + 1)) {
      if (const auto parent = find(sender_domain.substr(dot))) return parent;
    }
  }
  return _default;
}

void egress_picker::reset(const egress_table& table) {
  _credit.clear();
  for (const auto& pool : table.pools()) _credit.emplace_back(pool.sources.size(), 0);
}

std::uint32_t egress_picker::pick(const egress_table& table, std::uint32_t pool) noexcept {
  const auto& p = table.pools()[pool];
  auto& credit = _credit[pool];
  std::int64_t total = 0;
  std::size_t best = 0;
  for (std::size_t i = 0; i < credit.size(); ++i) {
    credit[i] += p.weights[i];
    total += p.weights[i];
    if (credit[i] > credit[best]) best = i;
  }
  credit[best] -= total;
  return p.sources[best];
}

std::string egress_destination(std::string_view destination, std::string_view source) {
  if (source.empty()) return std::string(destination);
  return fmt::format("{}@{}", destination, source);
}

std::pair<std::string_view, std::string_view> split_egress(std::string_view name) noexcept {
  const auto at = name.rfind('@');
  if (at == std::string_view::npos) return {name, {}};
  return {name.substr(0, at), name.substr(at + 1)};
}

std::vector<std::string> queues_of(std::string_view name, const std::vector<std::string>& sources,
                                   const std::vector<std::string>& existing) {
  std::vector<std::string> out{std::string(name)};
  if (split_egress(name).second.empty()) {
    for (const auto& source : sources) out.push_back(egress_destination(name, source));
    for (const auto& queue : existing)
      if (split_egress(queue).first == name) out.push_back(queue);
  }
  std::sort(out.begin(), out.end());
  out.erase(std::unique(out.begin(), out.end()), out.end());
  return out;
}

}  // namespace ringmta::server
