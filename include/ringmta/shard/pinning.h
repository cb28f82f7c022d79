// Whether shard threads are pinned to CPUs (--pin-threads auto|true|false).
//
// Measured (bench/README.md, "Pinning"): with a busy client on the same cores, pinned shards
// accept about half as much as unpinned ones: a pinned shard cannot leave a core the client
// is using while another core idles. On CPUs reserved for ringmta (the process's CPU set is
// narrower than the online CPUs: taskset, systemd CPUAffinity=, a cpuset; or every allowed CPU
// is in the kernel's isolated set) nothing else competes there and pinning costs nothing and
// keeps each shard's caches warm. So `auto` pins only on a reserved CPU set.
//
// Start-up only: reads the affinity mask and /sys/devices/system/cpu/{online,isolated}.
#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace ringmta::shard {

struct cpu_view {
  unsigned allowed = 0;        // CPUs in this process's affinity mask
  unsigned online = 0;         // CPUs online on the machine
  bool allowed_isolated = false;  // every allowed CPU is in /sys/devices/system/cpu/isolated
};

struct pinning_choice {
  bool pin = false;
  std::string reason;  // for the start-up log
};

cpu_view read_cpu_view();

// forced: the operator's --pin-threads true/false; nullopt: auto, decided from `cpus`.
pinning_choice choose_pinning(std::optional<bool> forced, const cpu_view& cpus);

// "0-3,8,10-11" (the kernel's cpu list format) → number of CPUs; nullopt when malformed.
std::optional<unsigned> count_cpu_list(std::string_view list);

}  // namespace ringmta::shard
