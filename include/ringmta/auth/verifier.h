// auth::verifier: the worker pool that checks passwords off the shards. A shard submits a
// request and its session waits on a pending verdict; a worker hashes (milliseconds by design:
// yescrypt, bcrypt) and hands the result back through `deliver` (the daemon posts it to the
// shard as a typed message). The queue is bounded: submit() refuses when it is full, and the
// session answers 454 4.7.0 (RFC 4954 §6) instead of queueing without end.
//
// Brute force (failure_throttle): failures are counted per client address and per login; each
// failure's answer is delayed by a growing amount (the result carries delay_ms: the shard holds
// the reply that long on a timer, no thread sleeps), and at failures_max the address or login is
// locked out for lockout_ms (454 4.7.0 without hashing). Counters decay after lockout_ms without
// a failure. The throttle lives with the workers, under their mutex, so every shard sees the
// same counts and no shard ever takes that mutex.
// Never: a hash on a shard thread, an unbounded queue, a password kept after its check.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "ringmta/auth/credentials.h"
#include "ringmta/core/work_pool.h"

namespace ringmta::auth {

struct throttle_settings {
  std::uint32_t failures_max = 10;       // per address or login, then locked out
  std::uint32_t lockout_ms = 600'000;    // also how long a failure is remembered
  std::uint32_t delay_base_ms = 500;     // first failure; doubles with each one
  std::uint32_t delay_max_ms = 8000;
  std::size_t entries_max = 65536;       // remembered addresses + logins (oldest forgotten)
};

// Not thread-safe: the verifier calls it under its mutex. Times are monotonic milliseconds.
class failure_throttle {
 public:
  explicit failure_throttle(const throttle_settings& settings) : _settings(settings) {}
  bool locked(const std::string& client, const std::string& user, std::uint64_t now_ms);
  // Counts a failure for both; the delay to hold the 535 for.
  std::uint32_t record_failure(const std::string& client, const std::string& user,
                               std::uint64_t now_ms);
  void record_success(const std::string& user);

 private:
  struct entry {
    std::uint32_t failures = 0;
    std::uint64_t last_ms = 0;
  };
  entry& touch(const std::string& key, std::uint64_t now_ms);
  void forget_oldest();
  throttle_settings _settings;
  std::unordered_map<std::string, entry> _entries;  // "a:" + address, "u:" + login
};

enum class verify_outcome : std::uint8_t {
  success,
  failure,      // 535 5.7.8
  locked,       // too many failures: 454 4.7.0
  unavailable,  // the back-end failed: 454 4.7.0
};

// Where a result goes back to: a connection slot on a shard (the generation catches a
// connection that ended while the check ran).
struct reply_address {
  unsigned shard = 0;
  std::uint32_t slot = 0;
  std::uint32_t generation = 0;
};

struct verify_request {
  std::string user;
  std::string password;  // wiped when the request is destroyed (checked, refused or dropped)
  std::string client;    // the client's address, for the throttle
  std::shared_ptr<const backend> table;
  reply_address reply_to;
  ~verify_request();
};

struct verify_result {
  verify_outcome outcome = verify_outcome::failure;
  std::uint32_t delay_ms = 0;
  std::string user;
  reply_address reply_to;
};

struct verifier_counters {
  std::atomic<std::uint64_t> succeeded{0};
  std::atomic<std::uint64_t> failed{0};
  std::atomic<std::uint64_t> locked{0};
  std::atomic<std::uint64_t> queue_full{0};
  std::atomic<std::uint64_t> lockouts{0};  // addresses or logins that reached failures_max
};

// Where a shard's sessions send password checks: the worker pool below in the daemon, a
// simulated service in tests/sim (answers on the simulated clock).
class verify_service {
 public:
  virtual ~verify_service() = default;
  // From a shard: false (nothing queued) when the check cannot be taken now (RFC 4954 §6:
  // the session answers 454 4.7.0); otherwise the result comes back to request->reply_to.
  virtual bool submit(std::unique_ptr<verify_request> request) noexcept = 0;
};

class verifier final : public verify_service {
 public:
  // Delivers one result; false when the target cannot take it now (retried shortly).
  using deliver_fn = std::function<bool(std::unique_ptr<verify_result>&)>;

  verifier(unsigned threads, std::size_t queue_max, const throttle_settings& throttle,
           deliver_fn deliver);
  verifier(const verifier&) = delete;
  verifier& operator=(const verifier&) = delete;

  // Starts the threads (after the privilege drop: it refuses to run with threads alive).
  void start() { _pool.start(); }
  // Stops taking work, ends the threads; results not yet delivered are dropped (their
  // connections are going away with the shards).
  void stop() noexcept { _pool.stop(); }
  // False when the queue is full or the pool is stopped.
  bool submit(std::unique_ptr<verify_request> request) noexcept override;
  const verifier_counters& counters() const noexcept { return _counters; }

 private:
  void verify(std::unique_ptr<verify_request> request, const core::work_pool<verify_request>& pool);
  std::unique_ptr<verify_result> check(verify_request& request);

  deliver_fn _deliver;
  std::mutex _mutex;           // the throttle's
  failure_throttle _throttle;  // under _mutex
  verifier_counters _counters;
  core::work_pool<verify_request> _pool;  // last: its threads stop before the rest goes
};

}  // namespace ringmta::auth
