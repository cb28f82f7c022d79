// server::spool_ring_driver: runs one shard's spool::store operations on that shard's ring.
//
// The store decides what to write and when to sync (group commit); this driver turns each
// operation into a ring op (write → WRITEV, datasync → FSYNC with DATASYNC; a flight's writes
// and syncs go as one IOSQE_IO_LINK chain, submitted together), feeds every
// completion back to the store, and hands the store's events (durable or failed tickets) to
// the listeners. File creation and removal (one per 64 MiB segment, and journal rewrites) take
// milliseconds of blocking steps (open, fallocate, fdatasync, the directory's fsync), which on
// the shard thread would stall every session of the shard: they go to a spool_file_worker —
// the daemon's spool_file_thread, or the simulator's disk — whose results come back on the
// loop (file_done). The store asks for the next segment ahead of time, so the data path does
// not wait for them.
//
// It needs only a shard::host (the ring's operations, an op kind): the daemon passes its
// shard, tests/sim a simulated host (issue 16 item 1: the same driver in both).
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

#include "ringmta/shard/host.h"
#include "ringmta/shard/runtime.h"
#include "ringmta/shard/typed_message.h"
#include "ringmta/spool/store.h"

namespace ringmta::server {

// Runs a store's create_file and remove_file operations off the loop; each result goes back
// to the driver on the driver's loop thread (spool_ring_driver::file_done).
class spool_file_worker {
 public:
  virtual void submit(const spool::operation& op) noexcept = 0;

 protected:
  ~spool_file_worker() = default;
};

class spool_ring_driver final : public shard::host_handler {
 public:
  using event_listener = std::function<void(const spool::event&)>;

  spool_ring_driver(shard::host& host, spool::store& store, spool_file_worker& files,
                    bool unsafe_no_fsync) noexcept;
  spool_ring_driver(const spool_ring_driver&) = delete;
  spool_ring_driver& operator=(const spool_ring_driver&) = delete;

  core::result<void> start() noexcept;  // registers the op kind; on the host's loop
  void set_listener(event_listener listener) { _listener = std::move(listener); }

  // Submits whatever the store has to do and delivers its events. Call after anything that
  // may give the store work (commit, mark, flush) — the shard calls it at the end of every
  // loop iteration after store.flush().
  void pump() noexcept;
  // A file operation's result from the worker, on the loop; the caller pumps afterwards.
  void file_done(std::uint64_t token, std::int64_t result) noexcept;
  std::uint32_t operations_in_flight() const noexcept { return _in_flight; }

  void on_completion(const io::completion& done) noexcept override;

 private:
  void submit(const spool::operation& op) noexcept;
  std::uint32_t remember(std::uint64_t token);
  std::uint64_t forget(std::uint32_t slot) noexcept;

  shard::host& _host;
  spool::store& _store;
  spool_file_worker& _files;
  bool _unsafe_no_fsync;
  io::op_kind _kind = io::op_kind_invalid;
  std::uint32_t _in_flight = 0;
  bool _pumping = false;  // listeners may call back into pump(): no re-entry
  event_listener _listener;
  std::vector<std::uint64_t> _tokens;        // store token of each in-flight op, by slot
  std::vector<std::uint32_t> _free_slots;
  std::vector<spool::operation> _chain;  // linked ops gathered until the chain's last one
};

// The daemon's file worker: one thread per shard running the store's blocking helpers
// (spool::perform_create_file / perform_remove_file) one at a time, in order; results go back
// to the shard as a runtime message, which hands them to the driver.
class spool_file_thread final : public spool_file_worker {
 public:
  explicit spool_file_thread(shard::shard& owner) noexcept : _owner(owner) {}
  ~spool_file_thread();  // stops and joins the thread
  spool_file_thread(const spool_file_thread&) = delete;
  spool_file_thread& operator=(const spool_file_thread&) = delete;

  core::result<void> start(spool_ring_driver& driver) noexcept;
  void submit(const spool::operation& op) noexcept override;

 private:
  void main() noexcept;
  static void on_results(shard::shard& owner, shard::home_ptr<spool_file_thread> self) noexcept;

  shard::shard& _owner;
  spool_ring_driver* _driver = nullptr;
  std::thread _thread;
  std::mutex _mutex;
  std::condition_variable _wake;
  std::deque<spool::operation> _ops;                              // to do
  std::vector<std::pair<std::uint64_t, std::int64_t>> _results;  // token, result
  std::vector<std::pair<std::uint64_t, std::int64_t>> _batch;    // taken by the shard
  bool _stop = false;
};

}  // namespace ringmta::server
