// Segment log with group commit vs file-per-message, on real files, driven synchronously.
//
//   spool_bench [--dir D] [--seconds S] [--rounds N]
// Prints a markdown table: messages/s for 1 KiB messages at several messages per sync, and
// MB/s for large messages. Every scenario is bounded in time and count and cleans up after
// itself. The directory should be on the disk under test (default /var/tmp). Each row is the
// median of N rounds (default 3).
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <string>
#include <vector>

#include "bench_envelope.h"
#include "ringmta/spool/file_store.h"
#include "ringmta/spool/sync_driver.h"

namespace {

using namespace ringmta::spool;
using ringmta::spool::bench::bench_envelope;
using clock_type = std::chrono::steady_clock;

struct options {
  std::string directory = "/var/tmp";
  double seconds = 3.0;
};

struct outcome {
  std::uint64_t messages = 0;
  std::uint64_t bytes = 0;
  std::uint64_t syncs = 0;
  double seconds = 0;
  std::uint64_t failures = 0;
};

std::string make_body(std::size_t bytes) {
  std::string body;
  while (body.size() < bytes) body += "Lorem ipsum dolor sit amet, consectetur adipiscing elit\r\n";
  body.resize(bytes);
  return body;
}

// Runs `batch` (which processes `per_batch` messages and makes them durable) until the time
// or the message budget is spent.
outcome run_batches(const options& opts, std::uint64_t per_batch, std::uint64_t budget,
                    const std::function<std::uint64_t(std::uint64_t)>& batch) {
  outcome result;
  const auto start = clock_type::now();
  while (result.messages < budget) {
    result.failures += batch(per_batch);
    result.messages += per_batch;
    ++result.syncs;
    result.seconds = std::chrono::duration<double>(clock_type::now() - start).count();
    if (result.seconds >= opts.seconds) break;
  }
  return result;
}

outcome bench_log(const options& opts, const std::string& directory, std::uint64_t per_batch,
                  std::size_t message_bytes, std::uint64_t budget, bool preallocate = true) {
  store_config config;
  config.directory = directory;
  config.preallocate = preallocate;
  auto opened = sync_spool::open(config);
  if (!opened) {
    std::fprintf(stderr, "open %s: %s\n", directory.c_str(), opened.error_text());
    std::exit(1);
  }
  auto& spool = *opened.value();
  const std::string body = make_body(message_bytes);
  constexpr std::size_t chunk_bytes = 64 * 1024;  // what a session hands over per read
  auto result = run_batches(opts, per_batch, budget, [&](std::uint64_t count) {
    std::uint64_t failures = 0;
    for (std::uint64_t i = 0; i < count; ++i) {
      auto handle = spool.begin(1'700'000'000).value();
      for (std::size_t at = 0; at < body.size(); at += chunk_bytes) {
        if (!spool.append(handle, std::string_view(body).substr(at, chunk_bytes)).ok()) {
          ++failures;
        }
      }
      if (!spool.commit(handle, bench_envelope(spool.core().id_of(handle))).ok()) ++failures;
    }
    spool.flush();
    for (const auto& item : spool.take_events()) failures += item.error != 0 ? 1 : 0;
    return failures;
  });
  result.bytes = result.messages * message_bytes;
  result.syncs = spool.core().stats().datasyncs;
  return result;
}

outcome bench_files(const options& opts, const std::string& directory, file_store_sync mode,
                    std::uint64_t per_batch, std::size_t message_bytes, std::uint64_t budget) {
  auto opened = file_store::open(file_store_config{directory, 0, mode});
  if (!opened) {
    std::fprintf(stderr, "open %s: %s\n", directory.c_str(), opened.error_text());
    std::exit(1);
  }
  auto& files = *opened.value();
  const std::string body = make_body(message_bytes);
  auto result = run_batches(opts, per_batch, budget, [&](std::uint64_t count) {
    std::uint64_t failures = 0;
    for (std::uint64_t i = 0; i < count; ++i) {
      auto handle = files.begin(1'700'000'000).value();
      for (std::size_t at = 0; at < body.size(); at += 64 * 1024) {
        if (!files.append(handle, std::string_view(body).substr(at, 64 * 1024)).ok()) ++failures;
      }
      if (!files.commit(handle, bench_envelope(files.id_of(handle))).ok()) ++failures;
    }
    files.flush();
    event item;
    while (files.next_event(item)) failures += item.error != 0 ? 1 : 0;
    return failures;
  });
  result.bytes = result.messages * message_bytes;
  if (mode == file_store_sync::each_message) result.syncs = result.messages;
  return result;
}

void print_row(const char* store, const std::string& sync, std::uint64_t per_batch,
               std::size_t message_bytes, const outcome& result) {
  const double rate = static_cast<double>(result.messages) / result.seconds;
  std::printf("| %-25s | %-26s | %5llu | %8zu | %8llu | %10.0f | %8.1f | %8.2f | %llu |\n", store,
              sync.c_str(), static_cast<unsigned long long>(per_batch), message_bytes,
              static_cast<unsigned long long>(result.messages), rate,
              static_cast<double>(result.bytes) / result.seconds / 1e6,
              result.syncs > 0 ? 1e3 * result.seconds / static_cast<double>(result.syncs) : 0.0,
              static_cast<unsigned long long>(result.failures));
  std::fflush(stdout);
}

}  // namespace

struct scenario {
  const char* store;
  std::string sync;
  std::uint64_t per_batch;
  std::size_t message_bytes;
  std::function<outcome(const std::string&)> run;
  std::vector<outcome> results;
};

// The middle result by messages/s (the disk here is shared and noisy: rounds interleave the
// scenarios so that a slow spell does not land on one of them only).
const outcome& median(std::vector<outcome>& results) {
  std::sort(results.begin(), results.end(), [](const outcome& a, const outcome& b) {
    return a.messages / a.seconds < b.messages / b.seconds;
  });
  return results[results.size() / 2];
}

int main(int argc, char** argv) {
  options opts;
  int rounds = 3;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string flag = argv[i];
    if (flag == "--dir") {
      opts.directory = argv[i + 1];
    } else if (flag == "--seconds") {
      opts.seconds = std::atof(argv[i + 1]);
    } else if (flag == "--rounds") {
      rounds = std::max(1, std::atoi(argv[i + 1]));
    } else {
      std::fprintf(stderr, "usage: spool_bench [--dir D] [--seconds S] [--rounds N]\n");
      return 2;
    }
  }
  const std::string base = opts.directory + "/spool-bench-" + std::to_string(::getpid());
  std::filesystem::create_directories(base);
  constexpr std::size_t small = 1024;
  constexpr std::size_t large = 10u << 20;
  constexpr std::uint64_t budget = 400'000;
  const std::string log_sync = "group commit (1 fdatasync)";
  const std::string each_sync = "fdatasync+rename+dir fsync";
  std::vector<scenario> scenarios;
  for (std::uint64_t n : {1, 10, 50, 200}) {
    scenarios.push_back({"segment log", log_sync, n, small, [&opts, n](const std::string& dir) {
                           return bench_log(opts, dir, n, small, budget);
                         }, {}});
  }
  scenarios.push_back({"file per message", each_sync, 1, small, [&opts](const std::string& dir) {
                         return bench_files(opts, dir, file_store_sync::each_message, 1, small,
                                            budget);
                       }, {}});
  for (std::uint64_t n : {10, 50, 200}) {
    for (auto mode : {file_store_sync::batch_fdatasync, file_store_sync::batch_syncfs}) {
      scenarios.push_back({"file per message",
                           mode == file_store_sync::batch_fdatasync ? "N fdatasync, 1 dir fsync"
                                                                    : "1 syncfs, 1 dir fsync",
                           n, small, [&opts, n, mode](const std::string& dir) {
                             return bench_files(opts, dir, mode, n, small, budget);
                           }, {}});
    }
  }
  scenarios.push_back({"segment log, no fallocate", log_sync, 200, small,
                       [&opts](const std::string& dir) {
                         return bench_log(opts, dir, 200, small, budget, false);
                       }, {}});
  for (std::uint64_t n : {1, 4}) {
    scenarios.push_back({"segment log", log_sync, n, large, [&opts, n](const std::string& dir) {
                           return bench_log(opts, dir, n, large, 64);
                         }, {}});
    scenarios.push_back({"segment log, no fallocate", log_sync, n, large,
                         [&opts, n](const std::string& dir) {
                           return bench_log(opts, dir, n, large, 64, false);
                         }, {}});
  }
  scenarios.push_back({"file per message", each_sync, 1, large, [&opts](const std::string& dir) {
                         return bench_files(opts, dir, file_store_sync::each_message, 1, large,
                                            64);
                       }, {}});
  int serial = 0;
  for (int round = 0; round < rounds; ++round) {
    for (auto& one : scenarios) {
      const std::string dir = base + "/" + std::to_string(serial++);
      one.results.push_back(one.run(dir));
      std::filesystem::remove_all(dir);
    }
  }
  std::printf("| store | sync | msgs/sync | bytes | messages | msgs/s | MB/s | ms/sync |"
              " failed |\n");
  std::printf("|---|---|---|---|---|---|---|---|---|\n");
  for (auto& one : scenarios) {
    print_row(one.store, one.sync, one.per_batch, one.message_bytes, median(one.results));
  }
  std::filesystem::remove_all(base);
  return 0;
}
