// The log writer thread and its outputs. See admin/log_writer.h.
#include "ringmta/admin/log_writer.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <future>
#include <optional>

#include <fmt/format.h>

#include "ringmta/core/assert.h"
#include "ringmta/core/clock.h"

namespace ringmta::admin {

namespace {

// Blocking write of every byte; a non-blocking descriptor (someone else's O_NONBLOCK on a
// shared stdout) is waited for with poll. False when the output refused bytes.
bool write_all(int fd, std::string_view bytes) noexcept {
  while (!bytes.empty()) {
    const ssize_t written = ::write(fd, bytes.data(), bytes.size());
    if (written < 0 && errno == EINTR) continue;
    if (written < 0 && errno == EAGAIN) {
      pollfd ready{fd, POLLOUT, 0};
      ::poll(&ready, 1, -1);
      continue;
    }
    if (written <= 0) return false;
    bytes.remove_prefix(static_cast<std::size_t>(written));
  }
  return true;
}

class console_output final : public log_output {
 public:
  console_output(int records_fd, int events_fd) : _records_fd(records_fd), _events_fd(events_fd) {}
  bool write(std::string_view lines, log_stream stream) noexcept override {
    return write_all(stream == log_stream::records ? _records_fd : _events_fd, lines);
  }
  std::string describe() const override { return "stdout"; }

 private:
  int _records_fd;
  int _events_fd;
};

int open_for_append(const std::string& path) noexcept {
  return ::open(path.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
}

// JSON lines appended to a file. reopen() opens the path again, so that after logrotate has
// renamed the file the records go to a new one (the old descriptor is closed only once the
// new one is open: a failed reopen keeps logging to the old file).
class file_output final : public log_output {
 public:
  file_output(std::string path, int fd) : _path(std::move(path)), _fd(fd) {}
  ~file_output() override { ::close(_fd); }
  bool write(std::string_view lines, log_stream) noexcept override {
    return write_all(_fd, lines);
  }
  std::string reopen() override {
    const int fd = open_for_append(_path);
    if (fd < 0) return fmt::format("cannot open {}: {}", _path, std::strerror(errno));
    ::close(_fd);
    _fd = fd;
    return {};
  }
  std::string describe() const override { return "file " + _path; }

 private:
  std::string _path;
  int _fd;
};

// RFC 5424 §6.2.1 severities: 3 error, 4 warning, 5 notice, 6 informational.
int severity_of(std::string_view event) noexcept {
  if (event.ends_with("_failed") || event == "spool_problem") return 3;
  if (event == "warning" || event == "deferred" || event == "log_records_dropped" ||
      event == "reload_rejected" || event == "rejected" || event == "spool_read_failed")
    return 4;
  if (event == "bounced" || event == "signal" || event == "reloaded" || event == "stopping" ||
      event == "started" || event == "stopped")
    return 5;
  return 6;
}

int connect_datagram(const std::string& path) noexcept {
  sockaddr_un address{};
  address.sun_family = AF_UNIX;
  if (path.size() >= sizeof address.sun_path) {
    errno = ENAMETOOLONG;
    return -1;
  }
  std::memcpy(address.sun_path, path.data(), path.size());
  const int fd = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  if (::connect(fd, reinterpret_cast<const sockaddr*>(&address), sizeof address) != 0) {
    const int error = errno;
    ::close(fd);
    errno = error;
    return -1;
  }
  return fd;
}

// RFC 5424 messages, one datagram per record, on syslog's local socket:
//   <PRI>1 TIMESTAMP HOSTNAME ringmta PROCID MSGID - RECORD
// MSGID is the record's event; the record itself (JSON) is the MSG. A syslog daemon that
// restarted gets a new connection on the next record.
class syslog_output final : public log_output {
 public:
  syslog_output(const log_output_config& config, int fd)
      : _path(config.syslog_socket), _fd(fd), _facility(config.syslog_facility),
        _hostname(config.hostname.empty() ? "-" : config.hostname), _pid(::getpid()) {
    _datagram.reserve(64 * 1024);
  }
  ~syslog_output() override { ::close(_fd); }

  bool write(std::string_view lines, log_stream) noexcept override {
    bool all = true;
    while (!lines.empty()) {
      const auto end = lines.find('\n');
      const auto line = lines.substr(0, end);
      lines.remove_prefix(end == std::string_view::npos ? lines.size() : end + 1);
      if (!line.empty()) all &= send_record(line);
    }
    return all;
  }
  std::string reopen() override {
    const int fd = connect_datagram(_path);
    if (fd < 0) return fmt::format("cannot connect to {}: {}", _path, std::strerror(errno));
    ::close(_fd);
    _fd = fd;
    return {};
  }
  std::string describe() const override { return "syslog " + _path; }

 private:
  bool send_record(std::string_view line) noexcept {
    const record_head head = parse_record_head(line);
    _datagram.clear();
    fmt::format_to(std::back_inserter(_datagram), "<{}>1 {} {} ringmta {} {} - ",
                   _facility * 8 + severity_of(head.event), head.timestamp, _hostname, _pid,
                   head.event);
    _datagram.append(line);
    for (int attempt = 0; attempt < 2; ++attempt) {
      if (::send(_fd, _datagram.data(), _datagram.size(), MSG_NOSIGNAL) >= 0) return true;
      if (errno == EINTR) continue;
      if (errno != ECONNREFUSED && errno != ENOTCONN && errno != ENOENT) return false;
      if (!reopen().empty()) return false;  // syslog restarted: its socket is a new one
    }
    return false;
  }

  std::string _path;
  int _fd;
  int _facility;
  std::string _hostname;
  int _pid;
  std::string _datagram;
};

}  // namespace

int syslog_facility_code(std::string_view name) noexcept {
  if (name == "mail") return 2;
  if (name == "daemon") return 3;
  if (name.size() == 6 && name.starts_with("local") && name[5] >= '0' && name[5] <= '7')
    return 16 + (name[5] - '0');
  return -1;
}

std::unique_ptr<log_output> open_log_output(const log_output_config& config,
                                            std::string& problem) {
  switch (config.output) {
    case log_output_config::kind::console:
      return std::make_unique<console_output>(config.records_fd, config.events_fd);
    case log_output_config::kind::file: {
      const int fd = open_for_append(config.file_path);
      if (fd < 0) {
        problem = fmt::format("cannot open {}: {}", config.file_path, std::strerror(errno));
        return nullptr;
      }
      return std::make_unique<file_output>(config.file_path, fd);
    }
    case log_output_config::kind::syslog: {
      const int fd = connect_datagram(config.syslog_socket);
      if (fd < 0) {
        problem = fmt::format("cannot connect to {}: {}", config.syslog_socket,
                              std::strerror(errno));
        return nullptr;
      }
      return std::make_unique<syslog_output>(config, fd);
    }
  }
  problem = "unknown log output";
  return nullptr;
}

// ---- the writer

struct log_writer::state {
  state(std::unique_ptr<log_output> first, std::size_t batch_bytes, log_format format)
      : events(format, batch_bytes), own(format, 64 * 1024), output(std::move(first)) {
    events_batch.reserve(batch_bytes);
  }

  std::vector<std::unique_ptr<log_channel>> channels;
  std::mutex events_mutex;  // post() from threads that are not shards
  log_buffer events;
  std::string events_batch;
  std::uint64_t events_dropped_reported = 0;
  std::atomic<std::uint32_t> work{0};  // bumped by every hand-off and request
  log_writer_counters counters;
  std::promise<void> finished;

  // Requests, under control_mutex.
  std::mutex control_mutex;
  std::unique_ptr<log_output> replacement;
  bool reopen_requested = false;
  bool stop_requested = false;
  std::optional<log_format> format_requested;
  std::shared_ptr<log_tap> tap_requested;
  bool tap_changed = false;

  // Writer thread only.
  log_buffer own;  // the writer's own records (reopen, output replaced)
  std::unique_ptr<log_output> output;
  std::shared_ptr<log_tap> tap;

  void run() noexcept;
  bool apply_requests() noexcept;
  bool drain() noexcept;
  void write(std::string_view lines, log_stream stream) noexcept;
  void write_own() noexcept;
};

void log_writer::state::write(std::string_view lines, log_stream stream) noexcept {
  if (lines.empty()) return;
  if (tap) tap->append(lines);
  if (output->write(lines, stream)) counters.bytes_written.add(lines.size());
  else counters.write_failures.add();
}

void log_writer::state::write_own() noexcept {
  write(own.pending(), log_stream::events);
  own.consume(own.pending().size());
}

// Returns true when the thread should end (after a last drain).
bool log_writer::state::apply_requests() noexcept {
  std::unique_ptr<log_output> previous;
  std::lock_guard lock(control_mutex);
  if (format_requested) {
    own.set_format(*format_requested);
    format_requested.reset();
  }
  own.set_time(core::wall_milliseconds());
  if (tap_changed) {
    tap = std::move(tap_requested);
    tap_changed = false;
  }
  if (replacement) {
    previous = std::move(output);
    output = std::move(replacement);
    own.record("log_output").field("output", output->describe())
        .field("previous", previous->describe());
    write_own();
  }
  if (reopen_requested) {
    reopen_requested = false;
    const std::string problem = output->reopen();
    if (problem.empty()) own.record("log_reopened").field("output", output->describe());
    else own.record("log_reopen_failed").field("error", problem);
    write_own();
  }
  return stop_requested;
}

bool log_writer::state::drain() noexcept {
  bool wrote = false;
  for (auto& channel : channels) {
    if (!channel->busy.load(std::memory_order_acquire)) continue;
    write(channel->batch, log_stream::records);
    channel->batch.clear();  // keeps its capacity for the next swap
    channel->busy.store(false, std::memory_order_release);
    wrote = true;
  }
  {
    std::lock_guard lock(events_mutex);
    if (!events.pending().empty()) events.swap_text(events_batch);
  }
  if (!events_batch.empty()) {
    write(events_batch, log_stream::events);
    events_batch.clear();
    wrote = true;
  }
  return wrote;
}

void log_writer::state::run() noexcept {
  for (;;) {
    const std::uint32_t seen = work.load(std::memory_order_acquire);
    bool wrote = drain();  // first what was posted before a request (its "signal" record)
    const bool stopping = apply_requests();
    wrote |= drain();
    if (stopping && !wrote) break;  // a last pass found nothing more
    if (!wrote) work.wait(seen, std::memory_order_acquire);
  }
  finished.set_value();
}

log_writer::log_writer(std::unique_ptr<log_output> output, unsigned channels,
                       std::size_t batch_bytes, log_format format,
                       std::shared_ptr<log_tap> tap)
    : _state(std::make_shared<state>(std::move(output), batch_bytes, format)) {
  RINGMTA_ASSERT(_state->output != nullptr);
  _state->tap = std::move(tap);
  for (unsigned i = 0; i < channels; ++i) {
    _state->channels.push_back(std::make_unique<log_channel>());
    _state->channels.back()->batch.reserve(batch_bytes);
  }
  _thread = std::thread([shared = _state] { shared->run(); });
}

log_writer::~log_writer() { stop(); }

log_channel& log_writer::channel(unsigned index) noexcept {
  RINGMTA_ASSERT(index < _state->channels.size());
  return *_state->channels[index];
}

const log_writer_counters& log_writer::counters() const noexcept { return _state->counters; }

void log_writer::wake() noexcept {
  _state->work.fetch_add(1, std::memory_order_release);
  _state->work.notify_one();  // no syscall unless the writer sleeps
}

bool log_writer::hand_off(log_channel& channel, log_buffer& buffer) noexcept {
  if (buffer.pending().empty()) return true;
  if (channel.busy.load(std::memory_order_acquire)) return false;  // the writer is behind
  buffer.swap_text(channel.batch);
  channel.busy.store(true, std::memory_order_release);
  wake();
  if (const auto dropped = buffer.dropped_records(); dropped != channel.dropped_reported) {
    buffer.record("log_records_dropped")
        .field("records", dropped - channel.dropped_reported)
        .field("reason", "the log output did not keep up");
    channel.dropped_reported = dropped;
  }
  return true;
}

log_writer::locked_events log_writer::lock_events() noexcept {
  locked_events events{std::unique_lock(_state->events_mutex), &_state->events};
  events.buffer->set_time(core::wall_milliseconds());
  return events;
}

void log_writer::events_added(locked_events& events) noexcept {
  auto& s = *_state;
  const auto dropped = events.buffer->dropped_records();
  s.counters.events_dropped.set_total(dropped);
  if (dropped != s.events_dropped_reported && events.buffer->pending().empty()) {
    events.buffer->record("log_records_dropped").field("records", dropped -
                                                        s.events_dropped_reported);
    s.events_dropped_reported = dropped;
  }
  events.lock.unlock();
  wake();
}

void log_writer::post(std::string_view event, std::string_view detail) noexcept {
  post_record(event, [&](log_record& line) { line.field("detail", detail); });
}

void log_writer::reopen() noexcept {
  {
    std::lock_guard lock(_state->control_mutex);
    _state->reopen_requested = true;
  }
  wake();
}

void log_writer::replace_output(std::unique_ptr<log_output> output) {
  RINGMTA_ASSERT(output != nullptr);
  {
    std::lock_guard lock(_state->control_mutex);
    _state->replacement = std::move(output);
  }
  wake();
}

void log_writer::set_format(log_format format) noexcept {
  {
    std::lock_guard lock(_state->control_mutex);
    _state->format_requested = format;
  }
  wake();
}

void log_writer::set_tap(std::shared_ptr<log_tap> tap) {
  {
    std::lock_guard lock(_state->control_mutex);
    _state->tap_requested = std::move(tap);
    _state->tap_changed = true;
  }
  wake();
}

bool log_writer::stop(std::uint32_t wait_ms) noexcept {
  if (_stopped) return true;
  _stopped = true;
  {
    std::lock_guard lock(_state->control_mutex);
    _state->stop_requested = true;
  }
  wake();
  auto done = _state->finished.get_future();
  if (done.wait_for(std::chrono::milliseconds(wait_ms)) == std::future_status::ready) {
    _thread.join();
    return true;
  }
  _thread.detach();  // blocked on a stalled output; it holds its own reference to the state
  return false;
}

}  // namespace ringmta::admin
