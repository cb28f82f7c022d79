// core::work_pool<Job>: a few threads that take jobs from a bounded queue and run them, for
// work a shard must not do itself (file reads outside the ring, CPU-heavy conversions). The
// shard submits and goes on; the job hands its result back (typically by posting a typed
// message to the shard, retrying while the shard's inbox is full).
//
// Bounded: submit() refuses when queue_max jobs wait, so a burst degrades into refusals the
// caller answers (a deferral), never into unbounded memory. stop() ends the threads after the
// job each is running; jobs still queued are destroyed unrun (their callers are going away).
// Never: runs a job on the submitting thread, blocks submit() on a busy worker.
#pragma once

#include <condition_variable>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

namespace ringmta::core {

template <typename Job>
class work_pool {
 public:
  // `run` executes on a worker thread; `stopping()` tells a long job or a retry loop to end.
  using run_fn = std::function<void(std::unique_ptr<Job>, const work_pool&)>;

  work_pool(unsigned threads, std::size_t queue_max, run_fn run)
      : _thread_count(threads), _queue_max(queue_max), _run(std::move(run)) {}
  ~work_pool() { stop(); }
  work_pool(const work_pool&) = delete;
  work_pool& operator=(const work_pool&) = delete;

  // After the privilege drop (the daemon refuses to drop privileges with threads alive).
  void start() {
    std::lock_guard lock(_mutex);
    if (!_threads.empty() || _stopping) return;
    for (unsigned i = 0; i < _thread_count; ++i) _threads.emplace_back([this] { work(); });
  }

  void stop() noexcept {
    {
      std::lock_guard lock(_mutex);
      _stopping = true;
      _queue.clear();
    }
    _wake.notify_all();
    for (auto& thread : _threads)
      if (thread.joinable()) thread.join();
    _threads.clear();
  }

  // From any thread: false (the job is destroyed) when the queue is full or the pool stopped.
  bool submit(std::unique_ptr<Job> job) noexcept {
    {
      std::lock_guard lock(_mutex);
      if (_stopping || _threads.empty() || _queue.size() >= _queue_max) return false;
      _queue.push_back(std::move(job));
    }
    _wake.notify_one();
    return true;
  }

  bool stopping() const noexcept {
    std::lock_guard lock(_mutex);
    return _stopping;
  }

 private:
  void work() noexcept {
    for (;;) {
      std::unique_ptr<Job> job;
      {
        std::unique_lock lock(_mutex);
        _wake.wait(lock, [this] { return _stopping || !_queue.empty(); });
        if (_stopping) return;
        job = std::move(_queue.front());
        _queue.pop_front();
      }
      try {
        _run(std::move(job), *this);
      } catch (...) {  // allocation failure: the caller's own timeout covers a lost result
      }
    }
  }

  const unsigned _thread_count;
  const std::size_t _queue_max;
  run_fn _run;
  mutable std::mutex _mutex;
  std::condition_variable _wake;
  std::deque<std::unique_ptr<Job>> _queue;
  bool _stopping = false;
  std::vector<std::thread> _threads;
};

}  // namespace ringmta::core
