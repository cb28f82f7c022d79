// Memory of the spool's per-message index, and recovery time of a spool, one process per run.
//
//   spool_index_memory insert  [--messages N] [--recipients R]
//     Commits N messages (empty body, blast's envelope, R recipients) into a store whose
//     operations are "performed" without a disk (writes succeed, files are /dev/null), so the
//     store's memory is its index; prints the RSS growth per message (resident pages: what the
//     machine pays, allocator rounding and slack included), the peak RSS growth per message
//     (a transient while the index grows) and the time per commit.
//   spool_index_memory fill    --dir D [--messages N] [--recipients R] [--body-bytes B]
//     Writes N such messages into a real spool in D/shard-0 (sync_driver), for `recover`;
//     with B, each has a body of B bytes (recovery then checksums bodies, as with real mail).
//   spool_index_memory recover --dir D
//     Recovers D/shard-0 and builds the store from it (what the daemon does at start-up before
//     its shard runs); prints the time and the RSS growth per recovered message.
//   spool_index_memory ops     [--messages N]
//     The index alone (message_index): inserts N entries with ids shaped like one shard's
//     (seconds | shard | sequence, ~4,000 a second), finds each, then erases each, both in a
//     shuffled order, in rounds; prints ns per insert, find and erase (the best of 5 rounds,
//     thread CPU time)
//     and the bytes per entry when full.
// The same source builds against any revision with the store API of main c495100, so two
// binaries can be run side by side on the same spool (bench/README.md, "Spool index").
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <random>
#include <string>
#include <vector>

#include "bench_envelope.h"
#include "ringmta/spool/index.h"
#include "ringmta/spool/recovery.h"
#include "ringmta/spool/store.h"
#include "ringmta/spool/sync_driver.h"

namespace {

using namespace ringmta::spool;
using ringmta::spool::bench::bench_envelope;
using clock_type = std::chrono::steady_clock;

struct options {
  std::string mode;
  std::string directory;
  std::size_t messages = 1'000'000;
  std::uint32_t recipients = 1;
  std::size_t body_bytes = 0;
};

// Resident and peak resident bytes of this process (/proc/self/status: VmRSS, VmHWM).
struct rss {
  std::uint64_t now = 0;
  std::uint64_t peak = 0;
};

rss read_rss() {
  rss out;
  FILE* file = std::fopen("/proc/self/status", "r");
  if (file == nullptr) return out;
  char line[256];
  while (std::fgets(line, sizeof line, file) != nullptr) {
    unsigned long long kib = 0;
    if (std::sscanf(line, "VmRSS: %llu kB", &kib) == 1) out.now = kib * 1024;
    if (std::sscanf(line, "VmHWM: %llu kB", &kib) == 1) out.peak = kib * 1024;
  }
  std::fclose(file);
  return out;
}

double seconds_since(clock_type::time_point start) {
  return std::chrono::duration<double>(clock_type::now() - start).count();
}

// Performs an operation without a disk: what the store sees is a disk that never fails.
std::int64_t perform_nothing(const operation& op) {
  switch (op.kind) {
    case operation_kind::write:
      return static_cast<std::int64_t>(op.bytes);
    case operation_kind::datasync:
      return 0;
    case operation_kind::create_file:
      return ::open("/dev/null", O_RDONLY | O_CLOEXEC);
    case operation_kind::remove_file:
      ::close(op.fd);
      return 0;
  }
  return -EINVAL;
}

void run_without_disk(store& target) {
  operation op;
  while (target.next_operation(op)) target.complete(op.token, perform_nothing(op));
  event item;
  while (target.next_event(item)) {
    if (item.error != 0) std::abort();
  }
}

// Commits `count` messages, flushing every 64 (a loop iteration's worth).
void commit_messages(store& target, std::size_t count, std::uint32_t recipients) {
  for (std::size_t i = 0; i < count; ++i) {
    auto handle = target.begin(1'700'000'000 + static_cast<std::int64_t>(i / 4096));
    if (!handle) std::abort();
    const envelope value = bench_envelope(target.id_of(handle.value()), recipients);
    for (;;) {
      auto ticket = target.commit(handle.value(), value);
      if (ticket) break;
      if (ticket.error() != EAGAIN) std::abort();
      run_without_disk(target);
    }
    if (i % 64 == 63) {
      target.flush();
      run_without_disk(target);
    }
  }
  target.flush();
  run_without_disk(target);
}

store_config config_for(const std::string& directory) {
  store_config config;
  config.directory = directory;
  config.random_seed = 0x5eed;
  return config;
}

int insert(const options& opts) {
  char pattern[] = "/tmp/index-memory-XXXXXX";
  if (::mkdtemp(pattern) == nullptr) return 1;
  store target(config_for(pattern), recovered_state{});
  commit_messages(target, 1000, opts.recipients);  // warm-up: buffers, first segment
  const rss before = read_rss();
  const auto start = clock_type::now();
  commit_messages(target, opts.messages, opts.recipients);
  const double elapsed = seconds_since(start);
  const rss after = read_rss();
  const double n = static_cast<double>(opts.messages);
  std::printf(
      "insert: %zu messages, %u recipient(s): sizeof(message_entry) %zu, RSS %.1f B/msg, "
      "peak RSS %.1f B/msg, %.0f ns/commit, queued %llu\n",
      opts.messages, opts.recipients, sizeof(message_entry),
      static_cast<double>(after.now - before.now) / n,
      static_cast<double>(after.peak - before.peak) / n, elapsed * 1e9 / n,
      static_cast<unsigned long long>(target.stats().queued_messages));
  std::filesystem::remove_all(pattern);
  return 0;
}

int fill(const options& opts) {
  if (!make_shard_directory(opts.directory, 0)) return 1;
  auto config = config_for(shard_directory(opts.directory, 0));
  config.random_seed = random_seed();
  auto spool = sync_spool::open(config);
  if (!spool) return 1;
  std::string body;  // dot-stuffed wire lines of 76 characters, CRLF
  while (body.size() < opts.body_bytes) body += std::string(76, 'a' + body.size() % 26) + "\r\n";
  body.resize(opts.body_bytes);
  for (std::size_t i = 0; i < opts.messages; ++i) {
    auto handle = spool.value()->begin(1'700'000'000 + static_cast<std::int64_t>(i / 4096));
    if (!handle) return 1;
    const message_id id = spool.value()->core().id_of(handle.value());
    if (!body.empty() && !spool.value()->append(handle.value(), body)) return 1;
    if (!spool.value()->commit(handle.value(), bench_envelope(id, opts.recipients))) return 1;
    if (i % 256 == 255) spool.value()->flush();
  }
  spool.value()->flush();
  std::printf("fill: %zu messages in %s\n", opts.messages, opts.directory.c_str());
  return 0;
}

int recover_once(const options& opts) {
  const rss before = read_rss();
  const auto start = clock_type::now();
  auto recovered = recover(shard_directory(opts.directory, 0), 0);
  if (!recovered) return 1;
  const double recovered_after = seconds_since(start);
  const std::size_t count = recovered.value().report.messages;
  store target(config_for(shard_directory(opts.directory, 0)), std::move(recovered.value()));
  const double elapsed = seconds_since(start);
  const rss after = read_rss();
  const double n = static_cast<double>(count == 0 ? 1 : count);
  std::printf(
      "recover: %zu messages: recover() %.3f s, + store %.3f s, RSS %.1f B/msg, peak RSS "
      "%.1f B/msg\n",
      count, recovered_after, elapsed, static_cast<double>(after.now - before.now) / n,
      static_cast<double>(after.peak - before.peak) / n);
  return 0;  // the store's start-up operations are never run: the spool is left as it was
}

// CPU time of this thread: on a shared machine, wall time also counts the time others ran.
double thread_seconds() {
  timespec now{};
  ::clock_gettime(CLOCK_THREAD_CPUTIME_ID, &now);
  return static_cast<double>(now.tv_sec) + static_cast<double>(now.tv_nsec) * 1e-9;
}

// The best of 5 rounds of each operation on a fresh index (thread CPU time): the machine is
// shared, and the least disturbed round is the closest to what the code costs.
int index_ops(const options& opts) {
  std::vector<message_id> ids(opts.messages);
  for (std::size_t i = 0; i < ids.size(); ++i)
    ids[i] = (std::uint64_t{1'700'000'000 + i / 4096} << 30) | (std::uint64_t{1} << 22) |
             (i % 4096);
  std::vector<message_id> order = ids;
  std::mt19937_64 random(0x5eed);
  std::shuffle(order.begin(), order.end(), random);
  double best_insert = 1e9, best_find = 1e9, best_erase = 1e9;
  std::size_t bytes_full = 0, found = 0;
  for (int round = 0; round < 5; ++round) {
    message_index index;
    double start = thread_seconds();
    for (message_id id : ids) {
      message_entry entry;
      entry.id = id;
      entry.recipients.assign(1);
      index.insert(std::move(entry));
    }
    best_insert = std::min(best_insert, thread_seconds() - start);
    bytes_full = index.bytes();
    start = thread_seconds();
    for (message_id id : order) found += index.find(id) != nullptr;
    best_find = std::min(best_find, thread_seconds() - start);
    start = thread_seconds();
    for (message_id id : order) found += index.erase(id);
    best_erase = std::min(best_erase, thread_seconds() - start);
  }
  const double n = static_cast<double>(ids.size());
  std::printf("ops: %zu entries: insert %.1f ns, find %.1f ns, erase %.1f ns, %.2f B/entry (%zu)\n",
              ids.size(), best_insert * 1e9 / n, best_find * 1e9 / n, best_erase * 1e9 / n,
              static_cast<double>(bytes_full) / n, found);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  options opts;
  if (argc < 2) {
    std::fprintf(stderr,
                 "usage: %s insert|fill|recover|ops [--dir D] [--messages N] "
                 "[--recipients R] [--body-bytes B]\n",
                 argv[0]);
    return 2;
  }
  opts.mode = argv[1];
  for (int i = 2; i + 1 < argc; i += 2) {
    const std::string name = argv[i];
    if (name == "--dir")
      opts.directory = argv[i + 1];
    else if (name == "--messages")
      opts.messages = std::strtoull(argv[i + 1], nullptr, 10);
    else if (name == "--recipients")
      opts.recipients = static_cast<std::uint32_t>(std::atoi(argv[i + 1]));
    else if (name == "--body-bytes")
      opts.body_bytes = std::strtoull(argv[i + 1], nullptr, 10);
    else
      return 2;
  }
  if (opts.mode == "insert") return insert(opts);
  if (opts.mode == "ops") return index_ops(opts);
  if (opts.mode == "fill" && !opts.directory.empty()) return fill(opts);
  if (opts.mode == "recover" && !opts.directory.empty()) return recover_once(opts);
  return 2;
}
