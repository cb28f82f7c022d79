#include "ringmta/shard/pinning.h"

#include <sched.h>

#include <charconv>
#include <fstream>
#include <set>
#include <thread>

namespace ringmta::shard {
namespace {

std::string first_line(const char* path) {
  std::ifstream file(path);
  std::string line;
  std::getline(file, line);
  return line;
}

std::optional<unsigned> number(std::string_view text) {
  unsigned value = 0;
  const auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (text.empty() || error != std::errc() || end != text.data() + text.size()) return {};
  return value;
}

// The CPUs of a kernel cpu list, or nullopt when malformed.
std::optional<std::set<unsigned>> parse_cpu_list(std::string_view list) {
  std::set<unsigned> cpus;
  while (!list.empty()) {
    const auto comma = list.find(',');
    const auto item = list.substr(0, comma);
    list = comma == std::string_view::npos ? std::string_view() : list.substr(comma + 1);
    const auto dash = item.find('-');
    const auto first = number(item.substr(0, dash));
    const auto last = dash == std::string_view::npos ? first : number(item.substr(dash + 1));
    if (!first || !last || *last < *first || *last - *first > 65536) return std::nullopt;
    for (unsigned cpu = *first; cpu <= *last; ++cpu) cpus.insert(cpu);
  }
  return cpus;
}

}  // namespace

std::optional<unsigned> count_cpu_list(std::string_view list) {
  auto cpus = parse_cpu_list(list);
  if (!cpus) return std::nullopt;
  return static_cast<unsigned>(cpus->size());
}

cpu_view read_cpu_view() {
  cpu_view view;
  cpu_set_t allowed;
  CPU_ZERO(&allowed);
  if (sched_getaffinity(0, sizeof allowed, &allowed) == 0)
    view.allowed = static_cast<unsigned>(CPU_COUNT(&allowed));
  const auto online = count_cpu_list(first_line("/sys/devices/system/cpu/online"));
  view.online = online.value_or(std::thread::hardware_concurrency());
  const auto isolated = parse_cpu_list(first_line("/sys/devices/system/cpu/isolated"));
  if (isolated && !isolated->empty() && view.allowed > 0) {
    view.allowed_isolated = true;
    for (int cpu = 0; cpu < CPU_SETSIZE; ++cpu)
      if (CPU_ISSET(cpu, &allowed) && !isolated->count(static_cast<unsigned>(cpu)))
        view.allowed_isolated = false;
  }
  return view;
}

pinning_choice choose_pinning(std::optional<bool> forced, const cpu_view& cpus) {
  if (forced)
    return {*forced, *forced ? "pinned (--pin-threads true)" : "not pinned (--pin-threads false)"};
  const std::string counts =
      std::to_string(cpus.allowed) + " of " + std::to_string(cpus.online) + " CPUs";
  if (cpus.allowed_isolated)
    return {true, "pinned: every allowed CPU is isolated (" + counts + ")"};
  if (cpus.allowed > 0 && cpus.online > 0 && cpus.allowed < cpus.online)
    return {true, "pinned: the CPU set is reserved (" + counts + " allowed)"};
  return {false, "not pinned: CPUs shared with the rest of the machine (" + counts +
                     "); --pin-threads true on dedicated cores"};
}

}  // namespace ringmta::shard
