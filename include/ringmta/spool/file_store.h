// The baseline: one file per message, done right, with the store's reception interface.
//
// A message is written to DIR/tmp/<id>, then made durable and visible: fdatasync the file,
// rename it to DIR/msg/<id>, fsync the directory (both renames and data are on stable storage
// before the ticket is reported). Modes: each_message syncs in commit(); batch_fdatasync
// defers to flush() and syncs each file there, then renames all and fsyncs the directory once;
// batch_syncfs replaces the per-file syncs with one syncfs(2) of the whole filesystem.
// File layout: body (wire form) | envelope (envelope.h encoding) | u64 body_bytes |
// u32 envelope_bytes | u32 magic. Blocking; for benchmarks and comparison only.
#pragma once

#include <cstdint>
#include <deque>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "ringmta/core/result.h"
#include "ringmta/spool/envelope.h"
#include "ringmta/spool/operation.h"
#include "ringmta/spool/store.h"

namespace ringmta::spool {

enum class file_store_sync : std::uint8_t { each_message, batch_fdatasync, batch_syncfs };

struct file_store_config {
  std::string directory;
  std::uint32_t shard = 0;
  file_store_sync mode = file_store_sync::each_message;
};

struct file_message {
  spool::envelope envelope;
  std::string body;
};

class file_store {
 public:
  // Creates DIR, DIR/tmp and DIR/msg; deletes leftovers in tmp (never committed).
  static core::result<std::unique_ptr<file_store>> open(file_store_config config);
  ~file_store();
  file_store(const file_store&) = delete;
  file_store& operator=(const file_store&) = delete;

  core::result<message_handle> begin(std::int64_t now_seconds) noexcept;
  message_id id_of(message_handle handle) const noexcept;
  core::result<void> append(message_handle handle, std::string_view wire) noexcept;
  core::result<std::uint64_t> commit(message_handle handle, const envelope& value) noexcept;
  void abort(message_handle handle) noexcept;
  void flush() noexcept;  // batch modes: make every committed message durable
  bool next_event(event& out) noexcept;

  core::result<std::vector<message_id>> list() const;
  core::result<file_message> read(message_id id) const;

 private:
  struct pending;
  struct committed {
    std::uint64_t ticket;
    message_id id;
    int fd;
  };
  file_store(file_store_config config, message_id floor, int directory_fd);
  std::string temp_path(message_id id) const;
  std::string final_path(message_id id) const;
  int publish(const committed& item) noexcept;  // rename; 0 or errno

  file_store_config _config;
  message_id_generator _ids;
  int _directory_fd;  // DIR/msg, fsynced after renames
  std::vector<pending> _pending;
  std::vector<std::uint32_t> _free;
  std::vector<committed> _batch;
  std::deque<event> _events;
  std::uint64_t _next_ticket = 1;
};

}  // namespace ringmta::spool
