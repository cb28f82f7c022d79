// admin::log_writer: the one thread that writes log records to their output, so that no shard
// ever waits for a log reader (issue 9: with a stalled reader on the shards' blocking writes,
// mail stopped after ~140 messages).
//
// Producers. Each shard appends records to its own log_buffer (bounded) while it works and
// calls hand_off() once per loop iteration: when the writer is done with that shard's previous
// batch, the buffer's text and the channel's empty batch swap places (no copy, no allocation),
// and the writer is woken (a futex wake only when it sleeps). When the writer is still busy,
// the shard simply keeps filling its buffer; records that do not fit are dropped and counted
// (log_buffer::dropped_records, ringmta_log_records_dropped_total), and the next successful
// hand-off adds a `log_records_dropped` record saying how many. Threads that are not shards
// (start-up, signals, reload, the admin API) call post(): a mutex and the same bounded drop.
//
// Outputs (log_output): stdout/stderr (the default, for journald: shard records on stdout,
// daemon events on stderr, as before), a file (one line per record, opened O_APPEND, reopened
// by reopen() after logrotate renamed it), or syslog (one RFC 5424 datagram per record on a
// local socket, /dev/log). The writer may block on its output for as long as the reader
// stalls: nothing else ever waits for it. An output replaced by a reload takes effect between
// two batches.
//
// Never: a lock, an allocation or a blocking call on a shard's hand-off; a partial record.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "ringmta/admin/log.h"
#include "ringmta/admin/metrics.h"

namespace ringmta::admin {

// Which stream of a console output a batch belongs to.
enum class log_stream : std::uint8_t { records, events };

struct log_output_config {
  enum class kind : std::uint8_t { console, file, syslog };
  kind output = kind::console;
  std::string file_path;                     // kind::file
  std::string syslog_socket = "/dev/log";    // kind::syslog
  int syslog_facility = 2;                   // RFC 5424 §6.2.1: 2 = mail
  std::string hostname = "-";                // RFC 5424 HOSTNAME
  int records_fd = 1;                        // kind::console: shard records
  int events_fd = 2;                         // kind::console: daemon events
};

// "mail", "daemon", "local0" … "local7" → RFC 5424 facility code, -1 when unknown.
int syslog_facility_code(std::string_view name) noexcept;

// Where the writer puts bytes. Used by the writer thread only (after open()).
class log_output {
 public:
  virtual ~log_output() = default;
  // Writes whole lines (blocking as long as the reader needs). False when bytes were lost.
  virtual bool write(std::string_view lines, log_stream stream) noexcept = 0;
  // logrotate: opens the path again (a renamed file keeps its old name no more). Returns an
  // error text, empty on success.
  virtual std::string reopen() { return {}; }
  virtual std::string describe() const = 0;
};

// Opens an output (the file is created and opened for appending; the syslog socket is
// connected), on the caller's thread, so that start-up and reload can refuse a bad one:
// nullptr and `problem` ("cannot open /var/log/x: Permission denied") when it cannot.
std::unique_ptr<log_output> open_log_output(const log_output_config& config,
                                            std::string& problem);

// A second consumer of every record the writer writes (the webhook's event log, events/): called
// on the writer thread with whole lines, before they go to the output, in the order written.
// It may block (nothing but the writer waits for it) and must not post records itself.
class log_tap {
 public:
  virtual ~log_tap() = default;
  virtual void append(std::string_view lines) noexcept = 0;
};

// One producer's hand-off slot. Padded: shards write their own and nobody else's.
struct alignas(64) log_channel {
  std::atomic<bool> busy{false};    // true: `batch` belongs to the writer
  std::string batch;                // records handed over, or empty with reserved capacity
  std::uint64_t dropped_reported = 0;  // producer only
};

struct log_writer_counters {
  counter bytes_written;
  counter write_failures;   // writes that lost bytes (output gone, EPIPE, …)
  counter events_dropped;   // post() found the events buffer full
};

class log_writer {
 public:
  // `channels`: one per shard, each with room for `batch_bytes` of records.
  // `tap`: sees every record from the first one on (set_tap() replaces it later).
  log_writer(std::unique_ptr<log_output> output, unsigned channels, std::size_t batch_bytes,
             log_format format, std::shared_ptr<log_tap> tap = nullptr);
  ~log_writer();  // stop()
  log_writer(const log_writer&) = delete;
  log_writer& operator=(const log_writer&) = delete;

  log_channel& channel(unsigned index) noexcept;

  // Shard side, once per loop iteration. False when the writer still has the previous batch
  // (the buffer keeps its records and keeps filling).
  bool hand_off(log_channel& channel, log_buffer& buffer) noexcept;

  // Any thread that is not a shard: one daemon event (start-up, signals, reload).
  void post(std::string_view event, std::string_view detail) noexcept;
  // Same, with fields: `fill` adds them to the record.
  template <typename Fill>
  void post_record(std::string_view event, Fill&& fill) noexcept {
    auto events = lock_events();
    {
      auto line = events.buffer->record(event);
      fill(line);
    }
    events_added(events);
  }

  // Requests, carried out by the writer thread between two batches.
  void reopen() noexcept;                                   // SIGUSR1
  void replace_output(std::unique_ptr<log_output> output);  // reload
  void set_format(log_format format) noexcept;              // reload: its own records' format
  void set_tap(std::shared_ptr<log_tap> tap);               // start-up, reload; nullptr: none

  // Writes what is pending, then ends the thread. If the output stays blocked past
  // `wait_ms`, the thread is left behind (the process is exiting) and false is returned.
  bool stop(std::uint32_t wait_ms = 5000) noexcept;

  const log_writer_counters& counters() const noexcept;

  struct state;  // log_writer.cc; shared with the thread, which may outlive a stuck stop()

 private:
  struct locked_events {
    std::unique_lock<std::mutex> lock;
    log_buffer* buffer;
  };
  locked_events lock_events() noexcept;
  void events_added(locked_events& events) noexcept;
  void wake() noexcept;
  std::shared_ptr<state> _state;
  std::thread _thread;
  bool _stopped = false;
};

}  // namespace ringmta::admin
