// systemd's notify protocol (Type=notify, sd_notify(3) from libsystemd): READY=1 once the spool
// is recovered and the listeners take connections, STATUS= lines for `systemctl status`,
// WATCHDOG=1 while every shard's loop keeps turning (WatchdogSec=), STOPPING=1 on shutdown.
//
// Invariants: with NOTIFY_SOCKET unset every call is a no-op and no thread is started. The
// watchdog pings come from a thread of this object, at half the interval systemd asks for
// (WATCHDOG_USEC), and only when `probe` says no shard is stalled: a frozen shard stops the
// pings and systemd restarts the service (the spool keeps every acknowledged message).
// Never: runs on a shard, or pings the watchdog for a process whose shards are stuck.
#pragma once

#include <chrono>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>

namespace ringmta::server {

class service_notifier {
 public:
  // nullopt while every shard turns; otherwise what is stuck ("shard 1: loop stalled 7.1 s").
  using stall_probe = std::function<std::optional<std::string>()>;
  using log_fn = std::function<void(std::string_view event, std::string_view detail)>;

  explicit service_notifier(log_fn log);
  ~service_notifier();
  service_notifier(const service_notifier&) = delete;
  service_notifier& operator=(const service_notifier&) = delete;

  bool enabled() const noexcept { return _enabled; }
  void status(std::string_view text);
  // READY=1 and STATUS=; starts the watchdog pings when systemd asked for them.
  void ready(std::string_view text, stall_probe probe);
  // STOPPING=1 and STATUS=. Watchdog pings go on while the shards drain (they still turn).
  void stopping(std::string_view text);
  // Ends the watchdog thread (after the shards have stopped).
  void stop() noexcept;

 private:
  void watchdog_main(std::chrono::microseconds interval);
  bool send(const std::string& state);

  log_fn _log;
  bool _enabled = false;
  stall_probe _probe;
  std::mutex _mutex;
  std::condition_variable _wake;
  bool _stop = false;
  std::thread _watchdog;
};

}  // namespace ringmta::server
