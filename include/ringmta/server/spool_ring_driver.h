// server::spool_ring_driver: runs one shard's spool::store operations on that shard's ring.
//
// The store decides what to write and when to sync (group commit); this driver turns each
// operation into a ring op (write → WRITEV, datasync → FSYNC with DATASYNC; a flight's writes
// and syncs go as one IOSQE_IO_LINK chain, submitted together), feeds every
// completion back to the store, and hands the store's events (durable or failed tickets) to
// the listeners. File creation and removal (one per 64 MiB segment, and journal rewrites) use
// the store's blocking helpers on a worker thread of this driver: open, fallocate, fdatasync
// and the directory's fsync take milliseconds, which on the shard thread would stall every
// session of the shard. Results come back as a runtime message. The store asks for the next
// segment ahead of time, so the data path does not wait for them.
//
// unsafe_no_fsync (debug only) completes every datasync at once without syncing: then "250"
// no longer means durable. The daemon logs a warning at start-up when it is set.
// Never: reports a ticket itself, or reorders the store's operations.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>
#include <utility>
#include <vector>

#include "ringmta/shard/runtime.h"
#include "ringmta/shard/typed_message.h"
#include "ringmta/spool/store.h"

namespace ringmta::server {

class spool_ring_driver final : public shard::completion_handler {
 public:
  using event_listener = std::function<void(const spool::event&)>;

  spool_ring_driver(shard::shard& owner, spool::store& store, bool unsafe_no_fsync) noexcept;
  ~spool_ring_driver();  // stops and joins the file worker
  spool_ring_driver(const spool_ring_driver&) = delete;
  spool_ring_driver& operator=(const spool_ring_driver&) = delete;

  core::result<void> start() noexcept;  // registers the op kind; on the shard's thread
  void set_listener(event_listener listener) { _listener = std::move(listener); }

  // Submits whatever the store has to do and delivers its events. Call after anything that
  // may give the store work (commit, mark, flush) — the shard calls it at the end of every
  // loop iteration after store.flush().
  void pump() noexcept;
  std::uint32_t operations_in_flight() const noexcept { return _in_flight; }

  void on_completion(shard::shard& owner, const io::completion& done) noexcept override;

 private:
  void submit(const spool::operation& op) noexcept;
  void file_worker_main() noexcept;
  static void on_file_results(shard::shard& owner,
                              shard::home_ptr<spool_ring_driver> self) noexcept;
  std::uint32_t remember(std::uint64_t token);
  std::uint64_t forget(std::uint32_t slot) noexcept;

  shard::shard& _owner;
  spool::store& _store;
  bool _unsafe_no_fsync;
  io::op_kind _kind = io::op_kind_invalid;
  std::uint32_t _in_flight = 0;
  bool _pumping = false;  // listeners may call back into pump(): no re-entry
  event_listener _listener;
  std::vector<std::uint64_t> _tokens;        // store token of each in-flight op, by slot
  std::vector<std::uint32_t> _free_slots;
  std::vector<spool::operation> _chain;  // linked ops gathered until the chain's last one

  // File creation/removal on a worker thread; results handed back under the same mutex.
  std::thread _file_worker;
  std::mutex _file_mutex;
  std::condition_variable _file_wake;
  std::deque<spool::operation> _file_ops;                       // to do
  std::vector<std::pair<std::uint64_t, std::int64_t>> _file_results;  // token, result
  std::vector<std::pair<std::uint64_t, std::int64_t>> _file_batch;    // taken by the shard
  bool _file_stop = false;
};

}  // namespace ringmta::server
