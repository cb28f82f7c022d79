// Operator suspensions of destinations that outlive a restart and a crash (issue 14): the
// table lives in SPOOL/suspensions.json, rewritten whole (temporary file, fdatasync, rename,
// directory fsync) before the admin API answers, so an acknowledged suspend or resume
// survives a crash at any instant: a crash before the rename keeps the old table, after it
// the new one. The relays learn the table at start-up (relay_config::suspended_at_start)
// before recovered mail is queued, so suspended mail is never tried after a restart.
//
// A suspension may end at a time (--duration): a thread waits for the earliest end and calls
// `on_expired` (which resumes the destination on its shard), then drops the entry.
//
// Thread-safe (the admin API's worker threads and the expiry thread). Never runs on a shard:
// it writes files and blocks.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "ringmta/core/result.h"

namespace ringmta::server {

struct suspension {
  std::string destination;
  std::int64_t since_ms = 0;
  std::int64_t until_ms = 0;  // 0: until resumed
  std::string reason;
  std::string by;  // who asked
};

class suspension_table {
 public:
  explicit suspension_table(std::string path) : _path(std::move(path)) {}
  ~suspension_table() { stop(); }
  suspension_table(const suspension_table&) = delete;
  suspension_table& operator=(const suspension_table&) = delete;

  // Reads the file (absent: empty). Entries already past their end are dropped. A damaged
  // file is an error naming it (start-up refuses: the operator decides, nothing is guessed).
  core::result<void> load(std::string& problem);
  core::result<void> put(const suspension& entry);   // durable on return
  core::result<bool> erase(const std::string& destination);  // false: was not suspended
  std::vector<suspension> all() const;
  bool find(const std::string& destination, suspension& out) const;

  // Starts the expiry thread; `on_expired` runs on it, outside the lock.
  void start(std::function<void(const suspension&)> on_expired);
  void stop() noexcept;

 private:
  core::result<void> save_locked();
  void run();
  std::string _path;
  mutable std::mutex _mutex;
  std::condition_variable _changed;
  std::map<std::string, suspension> _entries;
  std::function<void(const suspension&)> _on_expired;
  bool _stopping = false;
  std::thread _thread;
};

}  // namespace ringmta::server
