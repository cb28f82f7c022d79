// The synchronous driver: performs a store's operations with blocking syscalls (pwritev,
// fdatasync, open/fallocate, unlink). Used by tests, benchmarks and tools; the daemon runs
// the same operations on its io_uring ring instead and may reuse perform_create_file and
// perform_remove_file (rare, off the hot path).
//
// Never used on a reactor thread's hot path: every call here blocks.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "ringmta/core/result.h"
#include "ringmta/spool/store.h"

namespace ringmta::spool {

// Each returns what the ring would: >= 0 on success (bytes, 0, or an fd), else -errno.
std::int64_t perform_write(const operation& op) noexcept;  // loops over short writes
std::int64_t perform_datasync(const operation& op) noexcept;
std::int64_t perform_create_file(const operation& op) noexcept;
std::int64_t perform_remove_file(const operation& op) noexcept;
std::int64_t perform(const operation& op) noexcept;

// Performs every operation the store has (and the ones their completions produce) until
// there are none. Returns how many were performed.
std::size_t run_operations(store& target) noexcept;

// 64 random bits from getrandom(2), for store_config::random_seed.
std::uint64_t random_seed() noexcept;

// A shard's spool opened and driven synchronously: recovery, then a store whose operations
// run as soon as they appear. Backpressure is hidden (it runs the operations and retries).
class sync_spool {
 public:
  // Creates DIR/shard-<n> when missing, recovers it, starts the store. config.directory is
  // the shard directory; use shard_directory() to name it.
  static core::result<std::unique_ptr<sync_spool>> open(store_config config);

  store& core() noexcept { return *_store; }
  const recovery_report& report() const noexcept { return _report; }

  core::result<message_handle> begin(std::int64_t now_seconds) noexcept;
  core::result<void> append(message_handle handle, std::string_view wire) noexcept;
  core::result<void> append_raw(message_handle handle, std::string_view raw) noexcept;
  core::result<std::uint64_t> commit(message_handle handle, const envelope& value,
                                     std::vector<body_slice>* body = nullptr,
                                     std::string_view header_prefix = {}) noexcept;
  core::result<std::uint64_t> mark(message_id id, std::uint16_t recipient,
                                   recipient_status status) noexcept;
  // flush() and run until everything is written and synced.
  void flush() noexcept;
  // Events reported so far (durable/failed tickets), oldest first; clears the list.
  std::vector<event> take_events();

 private:
  explicit sync_spool(std::unique_ptr<store> target, recovery_report report);
  void run() noexcept;

  std::unique_ptr<store> _store;
  recovery_report _report;
  std::vector<event> _events;
};

}  // namespace ringmta::spool
