// auth::verifier and auth::failure_throttle (see auth/verifier.h).
#include "ringmta/auth/verifier.h"

#include <openssl/crypto.h>

#include <algorithm>
#include <chrono>
#include <thread>

#include "ringmta/core/clock.h"

namespace ringmta::auth {

// ---- failure_throttle

failure_throttle::entry& failure_throttle::touch(const std::string& key, std::uint64_t now_ms) {
  auto found = _entries.find(key);
  if (found == _entries.end()) {
    if (_entries.size() >= _settings.entries_max) forget_oldest();
    found = _entries.emplace(key, entry{}).first;
  }
  entry& e = found->second;
  if (e.failures > 0 && now_ms - e.last_ms > _settings.lockout_ms) e.failures = 0;  // decayed
  return e;
}

// A full table forgets its oldest eighth in one pass (rare: a flood of distinct addresses).
void failure_throttle::forget_oldest() {
  std::vector<std::uint64_t> ages;
  ages.reserve(_entries.size());
  for (const auto& [key, e] : _entries) ages.push_back(e.last_ms);
  auto cut = ages.begin() + static_cast<std::ptrdiff_t>(ages.size() / 8);
  std::nth_element(ages.begin(), cut, ages.end());
  const std::uint64_t oldest = *cut;
  std::erase_if(_entries, [oldest](const auto& item) { return item.second.last_ms <= oldest; });
}

bool failure_throttle::locked(const std::string& client, const std::string& user,
                              std::uint64_t now_ms) {
  for (const std::string& key : {"a:" + client, "u:" + user}) {
    const auto found = _entries.find(key);
    if (found == _entries.end()) continue;
    const entry& e = found->second;
    if (e.failures >= _settings.failures_max && now_ms - e.last_ms <= _settings.lockout_ms)
      return true;
  }
  return false;
}

std::uint32_t failure_throttle::record_failure(const std::string& client, const std::string& user,
                                               std::uint64_t now_ms) {
  std::uint32_t most = 0;
  for (const std::string& key : {"a:" + client, "u:" + user}) {
    entry& e = touch(key, now_ms);
    ++e.failures;
    e.last_ms = now_ms;
    most = std::max(most, e.failures);
  }
  const std::uint32_t shift = std::min<std::uint32_t>(most - 1, 16);
  return std::min<std::uint64_t>(std::uint64_t{_settings.delay_base_ms} << shift,
                                 _settings.delay_max_ms);
}

void failure_throttle::record_success(const std::string& user) { _entries.erase("u:" + user); }

// ---- verifier

verify_request::~verify_request() { OPENSSL_cleanse(password.data(), password.size()); }

verifier::verifier(unsigned threads, std::size_t queue_max, const throttle_settings& throttle,
                   deliver_fn deliver)
    : _deliver(std::move(deliver)),
      _throttle(throttle),
      _pool(std::max(1u, threads), queue_max,
            [this](std::unique_ptr<verify_request> request,
                   const core::work_pool<verify_request>& pool) {
              verify(std::move(request), pool);
            }) {}

bool verifier::submit(std::unique_ptr<verify_request> request) noexcept {
  if (_pool.submit(std::move(request))) return true;
  _counters.queue_full.fetch_add(1, std::memory_order_relaxed);  // the request is wiped
  return false;
}

std::unique_ptr<verify_result> verifier::check(verify_request& request) {
  auto result = std::make_unique<verify_result>();
  result->user = request.user;
  result->reply_to = request.reply_to;
  {
    std::lock_guard lock(_mutex);
    if (_throttle.locked(request.client, request.user, core::monotonic_ns() / 1'000'000)) {
      result->outcome = verify_outcome::locked;
      _counters.locked.fetch_add(1, std::memory_order_relaxed);
      return result;
    }
  }
  if (!request.table) {
    result->outcome = verify_outcome::unavailable;
    return result;
  }
  // The slow part: a hash, or a round trip to Dovecot.
  const check_result checked = request.table->check(request.user, request.password,
                                                    request.client);
  std::lock_guard lock(_mutex);
  const std::uint64_t now_ms = core::monotonic_ns() / 1'000'000;
  if (checked == check_result::unavailable) {
    result->outcome = verify_outcome::unavailable;
  } else if (checked == check_result::accepted) {
    _throttle.record_success(request.user);
    result->outcome = verify_outcome::success;
    _counters.succeeded.fetch_add(1, std::memory_order_relaxed);
  } else {
    result->delay_ms = _throttle.record_failure(request.client, request.user, now_ms);
    result->outcome = verify_outcome::failure;
    _counters.failed.fetch_add(1, std::memory_order_relaxed);
    if (_throttle.locked(request.client, request.user, now_ms))
      _counters.lockouts.fetch_add(1, std::memory_order_relaxed);
  }
  return result;
}

// On a worker thread. An allocation failure throws out to the pool: the session's command
// timeout then ends its wait.
void verifier::verify(std::unique_ptr<verify_request> request,
                      const core::work_pool<verify_request>& pool) {
  std::unique_ptr<verify_result> result = check(*request);
  request.reset();  // wipes the password
  // The shard's queue is full only under a flood of control messages; it drains each turn.
  while (!_deliver(result)) {
    if (pool.stopping()) return;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
}

}  // namespace ringmta::auth
