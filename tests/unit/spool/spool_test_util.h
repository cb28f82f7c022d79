// Helpers for the spool tests: temp directories on the real disk, message generation, body
// read-back.
#pragma once

#include <fcntl.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <random>
#include <string>
#include <vector>

#include "ringmta/spool/store.h"
#include "ringmta/spool/sync_driver.h"

namespace ringmta::spool::test {

class temp_dir {
 public:
  temp_dir() {
    const char* base = std::getenv("TMPDIR");
    std::string pattern = std::string(base != nullptr ? base : "/var/tmp") + "/spool-test-XXXXXX";
    char* made = ::mkdtemp(pattern.data());
    if (made == nullptr) std::abort();
    _path = made;
  }
  ~temp_dir() {
    std::error_code ignored;
    std::filesystem::remove_all(_path, ignored);
  }
  const std::string& path() const { return _path; }
  std::string shard(std::uint32_t n) const { return shard_directory(_path, n); }

 private:
  std::string _path;
};

inline store_config small_config(const std::string& directory, std::uint32_t shard = 0) {
  store_config config;
  config.directory = directory;
  config.shard = shard;
  config.segment_bytes = 1u << 20;
  config.journal_bytes = 256u << 10;
  config.block_bytes = 64u << 10;
  config.batch_bytes_max = 256u << 10;
  config.buffered_bytes_max = 4u << 20;
  config.data_record_bytes_max = 64u << 10;
  config.random_seed = 0x1234abcd5678ef01ull;
  return config;
}

// Wire-form body: CRLF lines, a few starting with "..", deterministic from the seed.
inline std::string make_body(std::size_t bytes, std::uint32_t seed) {
  std::mt19937 random(seed);
  std::string body;
  body.reserve(bytes + 80);
  while (body.size() < bytes) {
    const std::size_t line = random() % 78;
    if (random() % 10 == 0) body += "..";
    for (std::size_t i = 0; i < line; ++i) body += static_cast<char>('a' + random() % 26);
    body += "\r\n";
  }
  body.resize(bytes);
  return body;
}

inline envelope make_envelope(message_id id, std::uint32_t recipients, std::uint32_t seed) {
  envelope value;
  value.id = id;
  value.reverse_path = seed % 7 == 0 ? "" : "sender" + std::to_string(seed) + "@example.org";
  value.size_declared = seed * 10;
  value.body = static_cast<body_type>(seed % 4);
  value.smtputf8 = seed % 3 == 0;
  value.ret = static_cast<dsn_return>(seed % 3);
  value.envid = seed % 2 == 0 ? "env" + std::to_string(seed) : "";
  value.received_seconds = 1'700'000'000 + seed;
  value.client_address = "192.0.2." + std::to_string(seed % 250);
  value.helo = "client" + std::to_string(seed) + ".example";
  for (std::uint32_t i = 0; i < recipients; ++i) {
    recipient rcpt;
    rcpt.address = "rcpt" + std::to_string(i) + "@dest" + std::to_string(seed % 5) + ".example";
    rcpt.notify = static_cast<std::uint8_t>(i % 16);
    rcpt.orcpt = i % 2 == 0 ? "rfc822;" + rcpt.address : "";
    value.recipients.push_back(rcpt);
  }
  return value;
}

inline std::string read_body(const stored_message& message) {
  std::string body;
  for (const auto& slice : message.body) {
    std::string piece(slice.length, '\0');
    if (::pread(slice.fd, piece.data(), piece.size(), static_cast<off_t>(slice.offset)) !=
        static_cast<ssize_t>(piece.size())) {
      return "<read failed>";
    }
    body += piece;
  }
  return body;
}

}  // namespace ringmta::spool::test
