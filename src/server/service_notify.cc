#include "ringmta/server/service_notify.h"

#include <systemd/sd-daemon.h>

#include <cstdlib>
#include <cstring>

#include <fmt/format.h>

namespace ringmta::server {

service_notifier::service_notifier(log_fn log) : _log(std::move(log)) {
  const char* socket = std::getenv("NOTIFY_SOCKET");
  _enabled = socket != nullptr && socket[0] != '\0';
}

service_notifier::~service_notifier() { stop(); }

bool service_notifier::send(const std::string& state) {
  if (!_enabled) return false;
  const int sent = sd_notify(0, state.c_str());
  if (sent < 0) _log("notify_failed", fmt::format("sd_notify: {}", std::strerror(-sent)));
  return sent > 0;
}

void service_notifier::status(std::string_view text) {
  send(fmt::format("STATUS={}", text));
}

void service_notifier::ready(std::string_view text, stall_probe probe) {
  if (!_enabled) return;
  send(fmt::format("READY=1\nSTATUS={}", text));
  std::uint64_t usec = 0;
  // WATCHDOG_USEC (and WATCHDOG_PID, when set, naming us): systemd wants pings.
  if (sd_watchdog_enabled(0, &usec) <= 0 || usec == 0) return;
  _probe = std::move(probe);
  const auto interval = std::chrono::microseconds(usec / 2);
  _log("watchdog", fmt::format("pinging systemd every {} ms while every shard turns",
                               interval.count() / 1000));
  _watchdog = std::thread([this, interval] { watchdog_main(interval); });
}

void service_notifier::stopping(std::string_view text) {
  send(fmt::format("STOPPING=1\nSTATUS={}", text));
}

void service_notifier::stop() noexcept {
  {
    std::lock_guard lock(_mutex);
    _stop = true;
  }
  _wake.notify_all();
  if (_watchdog.joinable()) _watchdog.join();
}

// Pings while the probe finds nothing stuck; on a stall it stops pinging (systemd then acts
// after WatchdogSec) and says why in STATUS= and the log, once per stall.
void service_notifier::watchdog_main(std::chrono::microseconds interval) {
  bool stalled = false;
  std::unique_lock lock(_mutex);
  while (!_stop) {
    lock.unlock();
    const auto stuck = _probe();
    if (!stuck) {
      send("WATCHDOG=1");
      if (stalled) send("STATUS=running: every shard turns again");
    } else if (!stalled) {
      _log("watchdog_withheld", *stuck);
      send(fmt::format("STATUS=watchdog withheld: {}", *stuck));
    }
    stalled = stuck.has_value();
    lock.lock();
    _wake.wait_for(lock, interval, [this] { return _stop; });
  }
}

}  // namespace ringmta::server
