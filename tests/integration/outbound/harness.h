// Test harness for outbound::outbound against real peers: child processes (the scripted Python
// sink, Postfix's smtp-sink, NSD through dns_server.py), a small spool written with
// spool::sync_spool (so bodies are real segment-file slices), and a shard runtime running a
// dns_client and an outbound per shard with a scripted embedder that records every callback.
// Every wait is bounded; children are stopped (stdin closed, SIGTERM) when their owner dies.
#pragma once

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <deque>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "ringmta/core/clock.h"
#include "ringmta/outbound/outbound.h"
#include "ringmta/shard/runtime.h"
#include "ringmta/shard/typed_message.h"
#include "ringmta/spool/dot_stuffer.h"
#include "ringmta/spool/recovery.h"
#include "ringmta/spool/sync_driver.h"

namespace ringmta::outbound::test {

inline std::uint64_t now_ms() { return core::monotonic_ns() / 1'000'000; }

class temp_dir {
 public:
  temp_dir() {
    std::string pattern = "/var/tmp/outbound-test-XXXXXX";
    char* made = ::mkdtemp(pattern.data());
    if (made == nullptr) std::abort();
    _path = made;
  }
  ~temp_dir() {
    std::error_code ignored;
    std::filesystem::remove_all(_path, ignored);
  }
  const std::string& path() const { return _path; }

 private:
  std::string _path;
};

// A child process that prints one READY line on stdout; stopped when this object dies.
class child {
 public:
  child() = default;
  child(const child&) = delete;
  child& operator=(const child&) = delete;
  ~child() { stop(); }

  // Runs argv; returns the first stdout line (empty on failure or after timeout_ms).
  std::string start(const std::vector<std::string>& argv, std::uint64_t timeout_ms = 30'000) {
    int out[2];
    int in[2];
    if (::pipe2(out, O_CLOEXEC) != 0 || ::pipe2(in, O_CLOEXEC) != 0) return {};
    _pid = ::fork();
    if (_pid == 0) {
      ::dup2(out[1], STDOUT_FILENO);
      ::dup2(in[0], STDIN_FILENO);
      std::vector<char*> args;
      for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
      args.push_back(nullptr);
      ::execvp(args[0], args.data());
      ::_exit(127);
    }
    ::close(out[1]);
    ::close(in[0]);
    _stdin = in[1];
    _stdout = out[0];
    std::string line;
    pollfd readable{_stdout, POLLIN, 0};
    const std::uint64_t deadline = now_ms() + timeout_ms;
    while (line.find('\n') == std::string::npos && now_ms() < deadline) {
      if (::poll(&readable, 1, 100) <= 0) continue;
      char buffer[256];
      const ssize_t n = ::read(_stdout, buffer, sizeof buffer);
      if (n <= 0) break;
      line.append(buffer, static_cast<std::size_t>(n));
    }
    return line.substr(0, line.find('\n'));
  }

  void stop() {
    if (_pid <= 0) return;
    ::close(_stdin);
    ::kill(_pid, SIGTERM);
    int status = 0;
    ::waitpid(_pid, &status, 0);
    ::close(_stdout);
    _pid = -1;
  }

 private:
  pid_t _pid = -1;
  int _stdin = -1;
  int _stdout = -1;
};

inline bool can_connect(const std::string& address, std::uint16_t port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in to{};
  to.sin_family = AF_INET;
  to.sin_port = htons(port);
  ::inet_pton(AF_INET, address.c_str(), &to.sin_addr);
  const bool ok = ::connect(fd, reinterpret_cast<sockaddr*>(&to), sizeof to) == 0;
  ::close(fd);
  return ok;
}

// A port free on `address` right now (the OS picks it).
inline std::uint16_t free_port(const std::string& address) {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in at{};
  at.sin_family = AF_INET;
  ::inet_pton(AF_INET, address.c_str(), &at.sin_addr);
  socklen_t length = sizeof at;
  ::bind(fd, reinterpret_cast<sockaddr*>(&at), sizeof at);
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&at), &length);
  ::close(fd);
  return ntohs(at.sin_port);
}

#ifndef OUTBOUND_TEST_DIR
#error "OUTBOUND_TEST_DIR must name tests/integration/outbound"
#endif

// The scripted Python sink (scripted_sink.py): messages saved under a temp dir.
class scripted_sink {
 public:
  // listen: addresses sharing one port. extra: more scripted_sink.py options.
  bool start(const std::vector<std::string>& listen, const std::vector<std::string>& extra = {}) {
    std::vector<std::string> argv = {"python3", OUTBOUND_TEST_DIR "/scripted_sink.py",
                                     "--save-dir", _dir.path(), "--stop-on-stdin-eof"};
    for (const auto& address : listen) {
      argv.push_back("--listen");
      argv.push_back(address);
    }
    argv.insert(argv.end(), extra.begin(), extra.end());
    unsigned port = 0;
    if (std::sscanf(_process.start(argv).c_str(), "READY %u", &port) != 1) return false;
    _port = static_cast<std::uint16_t>(port);
    return true;
  }
  std::uint16_t port() const { return _port; }

  nlohmann::json stats() const {
    std::ifstream in(_dir.path() + "/stats.json");
    nlohmann::json value;
    try {
      in >> value;
    } catch (...) {
      return nlohmann::json::object();
    }
    return value;
  }
  std::uint64_t connections(const std::string& address) const {
    const auto value = stats();
    if (!value.contains("connections") || !value["connections"].contains(address)) return 0;
    return value["connections"][address].get<std::uint64_t>();
  }
  std::uint64_t count(const char* key) const {
    const auto value = stats();
    return value.contains(key) ? value[key].get<std::uint64_t>() : 0;
  }
  // Message n (1-based): the unstuffed body and its envelope record.
  std::string body(unsigned n) const {
    std::ifstream in(_dir.path() + "/msg-" + std::to_string(n) + ".eml", std::ios::binary);
    std::stringstream all;
    all << in.rdbuf();
    return all.str();
  }
  nlohmann::json record(unsigned n) const {
    std::ifstream in(_dir.path() + "/msg-" + std::to_string(n) + ".json");
    nlohmann::json value;
    try {
      in >> value;
    } catch (...) {
      return nlohmann::json::object();
    }
    return value;
  }
  void stop() { _process.stop(); }

 private:
  temp_dir _dir;
  child _process;
  std::uint16_t _port = 0;
};

// Postfix's smtp-sink on address:port (a free port picked here).
class postfix_sink {
 public:
  bool start(const std::string& address, const std::vector<std::string>& flags = {}) {
    for (int attempt = 0; attempt < 5; ++attempt) {
      _port = free_port(address);
      std::vector<std::string> argv = {"smtp-sink", "-u", "root"};
      argv.insert(argv.end(), flags.begin(), flags.end());
      argv.push_back(address + ":" + std::to_string(_port));
      argv.push_back("100");
      _pid = ::fork();
      if (_pid == 0) {
        const int null = ::open("/dev/null", O_RDWR);
        ::dup2(null, STDOUT_FILENO);
        std::vector<char*> args;
        for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
        args.push_back(nullptr);
        ::execvp(args[0], args.data());
        ::_exit(127);
      }
      const std::uint64_t deadline = now_ms() + 5000;
      while (now_ms() < deadline) {
        if (can_connect(address, _port)) return true;
        int status = 0;
        if (::waitpid(_pid, &status, WNOHANG) == _pid) break;  // exited: port taken?
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
      }
      stop();
    }
    return false;
  }
  ~postfix_sink() { stop(); }
  std::uint16_t port() const { return _port; }
  void stop() {
    if (_pid <= 0) return;
    ::kill(_pid, SIGTERM);
    int status = 0;
    ::waitpid(_pid, &status, 0);
    _pid = -1;
  }

 private:
  pid_t _pid = -1;
  std::uint16_t _port = 0;
};

// NSD with zones (tests/integration/dns/dns_server.py).
class dns_server {
 public:
  bool start(const nlohmann::json& spec) {
    const std::string path = _dir.path() + "/zones.json";
    std::ofstream(path) << spec.dump();
    if (::access("/usr/sbin/nsd", X_OK) != 0) return false;
    unsigned port = 0;
    const std::string line =
        _process.start({"python3", DNS_SERVER_SCRIPT, "--spec", path, "--stop-on-stdin-eof"});
    if (std::sscanf(line.c_str(), "READY 127.0.0.1 %u", &port) != 1) return false;
    _port = static_cast<std::uint16_t>(port);
    return true;
  }
  std::uint16_t port() const { return _port; }

 private:
  temp_dir _dir;
  child _process;
  std::uint16_t _port = 0;
};

// A spool with messages in it: each body stuffed into wire form and committed, so deliveries
// point at real segment-file slices.
class test_spool {
 public:
  struct message {
    std::string original;  // the message as the sender meant it (what the sink must save)
    spool::stored_message stored;
    envelope_storage storage;
    delivery job;
  };

  test_spool() {
    spool::store_config config;
    config.directory = spool::shard_directory(_dir.path(), 0);
    config.random_seed = spool::random_seed();
    config.segment_bytes = 64u << 20;
    auto opened = spool::sync_spool::open(config);
    if (!opened) std::abort();
    _spool = std::move(opened.value());
  }

  // Stores `original` (unstuffed, CRLF lines) for `recipients`; returns a delivery for them.
  message& add(const std::string& original, const std::vector<std::string>& recipients,
               spool::body_type body = spool::body_type::seven_bit, std::uint64_t token = 0) {
    std::string wire;
    spool::dot_stuffer stuffer;
    stuffer.feed(original, [&](std::string_view piece) { wire.append(piece); });
    auto handle = _spool->begin(core::wall_seconds());
    if (!handle) std::abort();
    for (std::size_t at = 0; at < wire.size(); at += 100'000) {  // several appends
      if (!_spool->append(handle.value(), std::string_view(wire).substr(at, 100'000))) std::abort();
    }
    spool::envelope value;
    value.id = _spool->core().id_of(handle.value());
    value.reverse_path = "sender@example.org";
    value.body = body;
    for (const auto& address : recipients) value.recipients.push_back({address, 0, ""});
    if (!_spool->commit(handle.value(), value)) std::abort();
    _spool->flush();
    auto read = _spool->core().read(value.id);
    if (!read) std::abort();
    auto& added = _messages.emplace_back();
    added.original = original;
    added.stored = std::move(read.value());
    std::vector<std::uint16_t> all(recipients.size());
    for (std::size_t i = 0; i < all.size(); ++i) all[i] = static_cast<std::uint16_t>(i);
    added.job.envelope = added.storage.assign(added.stored.envelope, all, added.stored.body_bytes);
    added.job.body = added.stored.body;
    added.job.token = token;
    return added;
  }

 private:
  temp_dir _dir;
  std::unique_ptr<spool::sync_spool> _spool;
  std::deque<message> _messages;  // stable addresses: deliveries point into them
};

// A message body (unstuffed): headers, then lines of which some start with "." (so the wire
// form differs), deterministic from `seed`, about `bytes` long, ending in CRLF.
inline std::string make_message(std::size_t bytes, std::uint32_t seed, bool eight_bit = false) {
  std::string text = "From: <sender@example.org>\r\nTo: <rcpt@example.net>\r\nSubject: test " +
                     std::to_string(seed) + "\r\n\r\n";
  std::uint64_t state = seed * 0x9e3779b97f4a7c15ull + 1;
  while (text.size() < bytes) {
    state = state * 6364136223846793005ull + 1442695040888963407ull;
    const std::size_t length = (state >> 33) % 90;
    if ((state >> 20) % 7 == 0) text += ".";  // a leading dot: stuffed on the wire
    if ((state >> 24) % 11 == 0) text += "..";
    for (std::size_t i = 0; i < length; ++i) {
      state = state * 6364136223846793005ull + 1442695040888963407ull;
      text += static_cast<char>(eight_bit && i % 13 == 0 ? 0xe9 : 'a' + (state >> 40) % 26);
    }
    text += "\r\n";
  }
  return text;
}

// Everything the embedder saw, in order.
struct record {
  enum class kind : std::uint8_t { ready, recipient, delivery, closed } what = kind::ready;
  unsigned shard = 0;
  std::uint64_t destination = 0;
  std::uint64_t token = 0;
  std::uint32_t index = 0;
  smtp::client_outcome outcome = smtp::client_outcome::accepted;
  std::uint16_t code = 0;
  smtp::reply_enhanced_code enhanced;
  std::string text;
  bool local = false;
  std::string host;
  std::string address;  // "IP:port", empty when no server was reached
  close_reason reason = close_reason::released;
  bool ever_ready = false;
  std::uint32_t deliveries = 0;
  std::uint32_t tries = 0;
  // delivery: how its connection was protected
  tls_mode tls = tls_mode::none_by_policy;
  std::string tls_protocol;
  bool tls_verified = false;
  bool tls_resumed = false;
  std::string tls_detail;
};

class recorder {
 public:
  void add(record r) {
    std::lock_guard lock(_mutex);
    _records.push_back(std::move(r));
    _changed.notify_all();
  }
  std::vector<record> all() {
    std::lock_guard lock(_mutex);
    return _records;
  }
  std::vector<record> of(std::uint64_t destination, record::kind what) {
    std::lock_guard lock(_mutex);
    std::vector<record> out;
    for (const auto& r : _records)
      if (r.destination == destination && r.what == what) out.push_back(r);
    return out;
  }
  // Waits (bounded) until `count` records of `what` exist for `destination`.
  bool wait_for(std::uint64_t destination, record::kind what, std::size_t count,
                std::uint64_t timeout_ms = 30'000) {
    std::unique_lock lock(_mutex);
    return _changed.wait_for(lock, std::chrono::milliseconds(timeout_ms), [&] {
      std::size_t seen = 0;
      for (const auto& r : _records) seen += r.destination == destination && r.what == what;
      return seen >= count;
    });
  }

 private:
  std::mutex _mutex;
  std::condition_variable _changed;
  std::vector<record> _records;
};

// The embedder: per destination a queue of deliveries; on_ready sends the next one, or
// releases the connection when none is left (unless keep_idle).
class scripted_embedder final : public delivery_handler {
 public:
  scripted_embedder(unsigned shard, recorder& log) : _shard(shard), _log(log) {}
  outbound* out = nullptr;
  bool keep_idle = false;  // leave an idle connection to its idle timeout
  bool count_only = false;  // benchmarks: count results, record only on_closed
  std::atomic<std::uint64_t> accepted{0};
  std::atomic<std::uint64_t> failed{0};
  std::function<void(std::uint64_t delivered)> on_delivered;  // count_only: after each delivery
  std::map<std::uint64_t, std::deque<const delivery*>> queue;  // shard thread only
  // Called first in on_closed, as a queue opens the next connection there (it may reuse the
  // closed one's slot before the result is read).
  std::function<void(std::uint64_t destination)> on_close_first;

  void on_ready(connection_handle c, std::uint64_t destination) noexcept override {
    if (!count_only) _log.add(record{record::kind::ready, _shard, destination});
    auto& jobs = queue[destination];
    if (!jobs.empty()) {
      const delivery* next = jobs.front();
      jobs.pop_front();
      if (!out->deliver(c, *next)) std::abort();
      return;
    }
    if (!keep_idle) out->release(c);
  }
  void on_recipient_result(connection_handle, std::uint64_t destination,
                           const recipient_result& result) noexcept override {
    if (count_only) return;
    record r = with_reply(record::kind::recipient, destination, *result.reply, result.remote);
    r.token = result.token;
    r.index = result.recipient_index;
    r.outcome = result.outcome;
    _log.add(std::move(r));
  }
  void on_delivery_done(connection_handle, std::uint64_t destination,
                        const delivery_result& result) noexcept override {
    if (count_only) {
      (result.outcome == smtp::client_outcome::accepted ? accepted : failed).fetch_add(1);
      if (on_delivered) on_delivered(accepted.load() + failed.load());
      return;
    }
    record r = with_reply(record::kind::delivery, destination, *result.reply, result.remote);
    r.token = result.token;
    r.outcome = result.outcome;
    r.tls = result.tls->mode;
    r.tls_protocol = std::string(result.tls->protocol);
    r.tls_verified = result.tls->verified;
    r.tls_resumed = result.tls->resumed;
    r.tls_detail = std::string(result.tls->detail);
    _log.add(std::move(r));
  }
  void on_closed(connection_handle, std::uint64_t destination,
                 const close_result& result) noexcept override {
    if (on_close_first) on_close_first(destination);
    record r = with_reply(record::kind::closed, destination, *result.reply, result.remote);
    r.outcome = result.failure;
    r.reason = result.reason;
    r.ever_ready = result.ever_ready;
    r.deliveries = result.deliveries;
    r.tries = result.addresses_tried;
    _log.add(std::move(r));
  }

 private:
  record with_reply(record::kind what, std::uint64_t destination, const smtp::parsed_reply& reply,
                    const remote_host& remote) const {
    record r;
    r.what = what;
    r.shard = _shard;
    r.destination = destination;
    r.code = reply.code;
    r.enhanced = reply.enhanced;
    r.text = std::string(reply.text());
    r.local = reply.local;
    r.host = std::string(remote.name);
    if (remote.address != nullptr) r.address = remote.address->to_string();
    return r;
  }

  unsigned _shard;
  recorder& _log;
};

struct harness_options {
  unsigned shards = 1;
  outbound_config config;
  std::vector<dns::server_address> resolvers;  // empty: a placeholder (literal routes only)
  bool count_only = false;  // see scripted_embedder
};

// One runtime; per shard a dns_client, an outbound and a scripted embedder.
class harness {
 public:
  struct shard_parts {
    std::unique_ptr<dns_client> dns;
    std::unique_ptr<scripted_embedder> embedder;
    std::unique_ptr<outbound> out;
  };

  explicit harness(harness_options options) : _options(std::move(options)) {
    shard::runtime_options runtime;
    runtime.shard_count = _options.shards;
    runtime.pin_threads = false;
    runtime.ring.sq_entries = 256;
    runtime.ring.fixed_file_count = 16;
    _parts.resize(_options.shards);
    _runtime = std::make_unique<shard::runtime>(runtime);
    dns_client_config dns;
    dns.resolver.servers = _options.resolvers;
    if (dns.resolver.servers.empty()) {  // literal routes only: never asked
      dns.resolver.servers.push_back({dns::ip_address::v4(127, 0, 0, 1), 9});
    }
    dns.resolver.timeout_ms = 1000;
    dns.resolver.attempts = 1;
    dns.resolver.lookup_timeout_ms = 10'000;
    const auto started = _runtime->start(
        [this, dns](shard::shard& s) -> core::result<void> {
          auto& parts = _parts[s.id()];
          parts.dns = std::make_unique<dns_client>(s, dns);
          if (auto ok = parts.dns->start(); !ok) return ok;
          parts.embedder = std::make_unique<scripted_embedder>(s.id(), log);
          parts.embedder->count_only = _options.count_only;
          parts.out = std::make_unique<outbound>(s, *parts.dns, *parts.embedder, _options.config);
          parts.embedder->out = parts.out.get();
          return parts.out->start();
        },
        [this](shard::shard& s) {
          auto& parts = _parts[s.id()];
          if (parts.out) parts.out->stop();
          if (parts.dns) parts.dns->stop();
        });
    _started = started.ok();
  }

  ~harness() {
    if (_runtime) {
      _runtime->request_stop();
      _runtime->join();
    }
    // Like the daemon: after join (the shard threads are gone, and with them every op they
    // submitted) and before the rings (the receive buffer rings unregister from them).
    _parts.clear();
    _runtime.reset();
  }

  bool started() const { return _started; }

  // Runs fn on shard `id`'s thread and waits for it (bounded).
  void run(unsigned id, std::function<void(shard_parts&)> fn) {
    auto work = std::make_shared<run_job>(std::move(fn), this);
    auto ticket = std::make_unique<std::shared_ptr<run_job>>(work);
    if (!shard::post<&on_run>(*_runtime, id, ticket)) std::abort();
    std::unique_lock lock(work->mutex);
    if (!work->done_cv.wait_for(lock, std::chrono::seconds(30), [&] { return work->done; })) {
      std::abort();  // a shard that does not answer in 30 s is stuck: fail loudly
    }
  }

  // Queues the deliveries and opens one connection for `destination` on shard `id`.
  void deliver(unsigned id, std::uint64_t destination, route where,
               std::vector<const delivery*> jobs) {
    std::string name(where.name);
    run(id, [&, name](shard_parts& parts) {
      auto& q = parts.embedder->queue[destination];
      q.insert(q.end(), jobs.begin(), jobs.end());
      route r = where;
      r.name = name;
      if (!parts.out->open_connection(destination, r)) std::abort();
    });
  }

  outbound_counters counters(unsigned id) {
    outbound_counters copy;
    run(id, [&](shard_parts& parts) { copy = parts.out->counters(); });
    return copy;
  }

  std::pair<dns::resolver_counters, dns_client_counters> dns_counters(unsigned id) {
    std::pair<dns::resolver_counters, dns_client_counters> copy;
    run(id, [&](shard_parts& parts) {
      copy = {parts.dns->resolver().counters(), parts.dns->counters()};
    });
    return copy;
  }

  scripted_embedder& embedder(unsigned id) { return *_parts[id].embedder; }

  recorder log;

 private:
  // One run(): the test thread waits on it while the shard runs fn.
  struct run_job {
    run_job(std::function<void(shard_parts&)> work, harness* self)
        : fn(std::move(work)), owner(self) {}
    std::function<void(shard_parts&)> fn;
    harness* owner;
    std::mutex mutex;
    std::condition_variable done_cv;
    bool done = false;
  };
  static void on_run(shard::shard& s, std::unique_ptr<std::shared_ptr<run_job>> ticket) noexcept {
    run_job& w = **ticket;
    w.fn(w.owner->_parts[s.id()]);
    std::lock_guard lock(w.mutex);
    w.done = true;
    w.done_cv.notify_all();
  }

  harness_options _options;
  std::vector<shard_parts> _parts;
  std::unique_ptr<shard::runtime> _runtime;
  bool _started = false;
};

}  // namespace ringmta::outbound::test
