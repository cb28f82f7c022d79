// Segment log with group commit vs file-per-message, on real files, driven synchronously.
//
//   spool_bench [--dir D] [--seconds S]
// Prints a markdown table: messages/s for 1 KiB messages at several messages per sync, and
// MB/s for large messages. Every scenario is bounded in time and count and cleans up after
// itself. The directory should be on the disk under test (default /var/tmp).
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <string>

#include "ringmta/spool/file_store.h"
#include "ringmta/spool/sync_driver.h"

namespace {

using namespace ringmta::spool;
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

envelope bench_envelope(message_id id) {
  envelope value;
  value.id = id;
  value.reverse_path = "sender@example.org";
  value.received_seconds = 1'700'000'000;
  value.client_address = "192.0.2.1";
  value.helo = "client.example";
  value.recipients.push_back({"rcpt@example.net", 0, ""});
  return value;
}

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
                  std::size_t message_bytes, std::uint64_t budget) {
  store_config config;
  config.directory = directory;
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
  std::printf("| %-22s | %-26s | %5llu | %8zu | %8llu | %10.0f | %8.1f | %8.2f | %llu |\n", store,
              sync.c_str(), static_cast<unsigned long long>(per_batch), message_bytes,
              static_cast<unsigned long long>(result.messages), rate,
              static_cast<double>(result.bytes) / result.seconds / 1e6,
              result.syncs > 0 ? 1e3 * result.seconds / static_cast<double>(result.syncs) : 0.0,
              static_cast<unsigned long long>(result.failures));
  std::fflush(stdout);
}

}  // namespace

int main(int argc, char** argv) {
  options opts;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string flag = argv[i];
    if (flag == "--dir") {
      opts.directory = argv[i + 1];
    } else if (flag == "--seconds") {
      opts.seconds = std::atof(argv[i + 1]);
    } else {
      std::fprintf(stderr, "usage: spool_bench [--dir D] [--seconds S]\n");
      return 2;
    }
  }
  const std::string base = opts.directory + "/spool-bench-" + std::to_string(::getpid());
  std::filesystem::create_directories(base);
  int scenario = 0;
  auto fresh = [&] {
    const std::string path = base + "/" + std::to_string(scenario++);
    std::filesystem::remove_all(path);
    return path;
  };
  std::printf("| store | sync | msgs/sync | bytes | messages | msgs/s | MB/s | ms/sync | failed |\n");
  std::printf("|---|---|---|---|---|---|---|---|---|\n");
  constexpr std::size_t small = 1024;
  constexpr std::uint64_t budget = 400'000;
  for (std::uint64_t n : {1, 10, 50, 200}) {
    const std::string dir = fresh();
    print_row("segment log", "group commit (1 fdatasync)", n, small,
              bench_log(opts, dir, n, small, budget));
    std::filesystem::remove_all(dir);
  }
  {
    const std::string dir = fresh();
    print_row("file per message", "fdatasync+rename+dir fsync", 1, small,
              bench_files(opts, dir, file_store_sync::each_message, 1, small, budget));
    std::filesystem::remove_all(dir);
  }
  for (std::uint64_t n : {10, 50, 200}) {
    for (auto mode : {file_store_sync::batch_fdatasync, file_store_sync::batch_syncfs}) {
      const std::string dir = fresh();
      print_row("file per message",
                mode == file_store_sync::batch_fdatasync ? "N fdatasync, 1 dir fsync"
                                                         : "1 syncfs, 1 dir fsync",
                n, small, bench_files(opts, dir, mode, n, small, budget));
      std::filesystem::remove_all(dir);
    }
  }
  constexpr std::size_t large = 10u << 20;
  for (std::uint64_t n : {1, 4}) {
    const std::string dir = fresh();
    print_row("segment log", "group commit (1 fdatasync)", n, large,
              bench_log(opts, dir, n, large, 64));
    std::filesystem::remove_all(dir);
  }
  {
    const std::string dir = fresh();
    print_row("file per message", "fdatasync+rename+dir fsync", 1, large,
              bench_files(opts, dir, file_store_sync::each_message, 1, large, 64));
    std::filesystem::remove_all(dir);
  }
  std::filesystem::remove_all(base);
  return 0;
}
