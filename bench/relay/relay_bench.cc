// The whole relay path in memory on one core, with the project's real engines at every stage:
//   1. an inbound client's pipelined session (EHLO, MAIL, RCPT ×R, DATA, 1 KiB body, ".", QUIT)
//      fed to smtp::server_session, whose handler spools the message the way
//      src/server/inbound_connection.cc does (begin → Received: header → append → commit,
//      250 only once the store reports the ticket durable);
//   2. spool::store with group commit: one flush() per batch of 64 sessions (one reactor loop
//      iteration in the daemon), operations completed in memory; its segment files are files
//      of the simulated host, so delivery reads each body where the spool put it;
//   3. queue::scheduler: one job per (message, destination), recipients spread over 100
//      destination domains, one pooled connection per destination reused for
//      messages_per_connection_max messages (like src/server/relay.cc);
//   4. the daemon's delivery code, src/outbound (outbound::outbound over outbound::dns_client),
//      on the simulator's host (tests/sim/sim_host.h: the simulated IO, network and clock the
//      simulator and its tests use): MX lookups over simulated UDP (then its cache), TCP to the
//      next hop, a real smtp::server_session accepting everything, bodies read from the spool's
//      segment files through the host's ring ops.
// After delivery the home role marks every recipient delivered in the spool (store.mark), as
// relay_home.cc does, so segments are reclaimed and memory stays flat over millions of
// messages. items_per_second = messages relayed (every recipient delivered) per CPU second.
// One benchmark per stage tells where the time goes; stage/client_peer keeps the two SMTP
// engines pumped by hand as the reference without glue or host. Results and commands:
// README.md here.
//
// Checked inside the timed loop (RINGMTA_ASSERT stays on in release builds): every inbound
// session gets R accepted recipients, 250 after its end of data and 221 after QUIT; every
// recipient is delivered exactly once; the next hop receives as many body octets as the spool
// got (and the same octets, compared byte for byte, for every 1024th message); no message is
// left queued at the end of any batch; the totals agree at the end of every run.
// Never: a syscall in the steady state (segment and journal files are rings in memory read
// through the simulated host, sockets and DNS are simulated), a clock read (time is the
// simulator's: each batch starts 1 ms after the previous one ended), or a sleep.
#include <algorithm>
#include <array>
#include <cerrno>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include <sys/resource.h>

#include <benchmark/benchmark.h>
#include <fmt/format.h>

#include "ringmta/core/assert.h"
#include "ringmta/dns/types.h"
#include "ringmta/net/received_header.h"
#include "ringmta/outbound/delivery.h"
#include "ringmta/outbound/dns_client.h"
#include "ringmta/outbound/outbound.h"
#include "ringmta/queue/scheduler.h"
#include "ringmta/server/shaping.h"
#include "ringmta/smtp/client_session.h"
#include "ringmta/smtp/server_session.h"
#include "ringmta/spool/message_id.h"
#include "ringmta/spool/store.h"
#include "ringmta/spool/sync_driver.h"
#include "sim_dns.h"
#include "sim_host.h"
#include "sim_scheduler.h"

namespace ringmta {
namespace {

constexpr std::int64_t start_ms = 1'700'000'000'000;  // simulated wall clock at the start
constexpr std::uint32_t batch_sessions = 64;          // sessions per group commit
constexpr std::uint32_t destination_count = 100;
constexpr std::uint32_t body_bytes = 1024;
constexpr std::uint64_t sample_every = 1024;          // byte-exact check of one message in N
constexpr std::string_view our_hostname = "mx.example.net";
constexpr std::string_view client_address = "192.0.2.7";
// The simulated network: one-way latency drawn per message up to this (sim_host's floor is
// 20 µs); a bound on the actions of one run_until (a stuck run fails instead of spinning).
constexpr std::int64_t net_ns_max = 50'000;
constexpr std::uint64_t actions_max = 100'000'000;
// ---- workload: the inbound clients' sessions

std::string destination_name(std::uint32_t index) {
  return fmt::format("d{}.example", index % destination_count);
}

// A 1 KiB message in SMTP wire form: headers, 76-character text lines, one dot-stuffed line.
std::string message_body() {
  std::string body =
      "From: Alice <alice@example.org>\r\nTo: undisclosed-recipients:;\r\n"
      "Subject: relay benchmark\r\nMessage-ID: <bench.1@example.org>\r\n"
      "Date: Tue, 14 Nov 2023 22:13:20 +0000\r\n\r\n..a line that starts with a dot\r\n";
  while (body.size() < body_bytes - 2) {
    const std::size_t column = body.size() - body.rfind('\n') - 1;
    if (column == 76) {
      body += "\r\n";
    } else {
      body += static_cast<char>('a' + (body.size() * 7) % 26);
    }
  }
  body += "\r\n";
  RINGMTA_ASSERT(body.size() == body_bytes);
  return body;
}

struct workload {
  std::uint32_t recipients = 1;
  std::string body;                 // wire form, without the final ".CRLF"
  std::vector<std::string> inputs;  // by first destination: the client's pipelined session
};

// Message n goes to destinations n, n+1, ... n+R-1 (mod 100): R recipients over R domains.
workload make_workload(std::uint32_t recipients) {
  workload w;
  w.recipients = recipients;
  w.body = message_body();
  for (std::uint32_t first = 0; first < destination_count; ++first) {
    std::string input = "EHLO client.example.org\r\nMAIL FROM:<alice@example.org>\r\n";
    for (std::uint32_t r = 0; r < recipients; ++r) {
      input += fmt::format("RCPT TO:<user{}@{}>\r\n", r, destination_name(first + r));
    }
    input += "DATA\r\n" + w.body + ".\r\nQUIT\r\n";
    w.inputs.push_back(std::move(input));
  }
  return w;
}


// ---- the simulated machine: the simulator's clock and host (tests/sim/sim_host.h)

// Runs the host's loop on the simulator's scheduler. Time moves only when an action is taken.
class relay_machine {
 public:
  explicit relay_machine(sim::sim_network network)
      : _host(_clock, 7, std::move(network), net_ns_max, start_ms) {}
  relay_machine(const relay_machine&) = delete;
  relay_machine& operator=(const relay_machine&) = delete;

  sim::sim_host& host() noexcept { return _host; }
  const sim::sim_host& host() const noexcept { return _host; }
  std::int64_t wall_ms() const noexcept { return _host.wall_ms(); }
  std::uint64_t actions_run() const noexcept { return _clock.actions_run(); }

  // Runs whatever is due until `ms` later on the simulated clock (timers included).
  void advance_ms(std::int64_t ms) {
    const std::int64_t target = _clock.now_ns() + ms * 1'000'000;
    _clock.at(target, [] {});
    run_until([&] { return _clock.now_ns() >= target; });
  }
  // One loop turn (work queued by API calls made outside the host's callbacks, as a shard's
  // next iteration runs it), then the host's actions until `done` holds.
  void run_until(const std::function<bool()>& done) {
    const bool reached = _host.run(done, actions_max);
    RINGMTA_ASSERT(reached);
  }

 private:
  sim::scheduler _clock;
  sim::sim_host _host;
};

// The zone the relay resolves (RFC 5321 §5.1): dN.example MX 10 mx.dN.example, and every MX
// host's A record. dns_client asks once per name, then answers from its cache (TTL 1 hour).
std::vector<std::string> answer_dns(const core::endpoint&, std::string_view query) {
  std::uint16_t id = 0;
  std::string name;
  dns::record_type type{};
  std::vector<std::string> replies;
  if (!sim::decode_query(reinterpret_cast<const std::uint8_t*>(query.data()), query.size(), id,
                         name, type)) {
    return replies;
  }
  const bool mx_host = name.starts_with("mx.");
  std::vector<std::string> answer;
  if (type == dns::record_type::mx && !mx_host) {
    answer.push_back(fmt::format("{}. 3600 IN MX 10 mx.{}.", name, name));
  } else if (type == dns::record_type::a && mx_host) {
    answer.push_back(fmt::format("{}. 3600 IN A 198.51.100.1", name));
  }
  const auto reply = sim::encode_reply(id, name, type, 0, answer, 3600);
  replies.emplace_back(reply.begin(), reply.end());
  return replies;
}

// ---- stage 2: the real store, its operations completed in memory

// Completes every write with its byte count and every datasync with 0 at once, without a
// syscall: the spool's own work (record framing, checksums, copying into batch blocks, the
// index, tickets, journal) and the copy of each write into its file is all that is measured.
// The outbound reads the bodies from the files (the host's read_cached and prep_read reach
// them through its file reader) as the daemon reads the segment files.
//
// A file keeps only its last window_bytes (a ring): a page cache whose older pages were
// written back and dropped. Every byte is still copied in and read back from where the spool
// put it, but the memory written stays warm in the CPU's caches. With whole 64 MiB segments
// each write went to memory last touched a segment ago (the daemon's page cache costs that;
// the disk and the page cache are what this benchmark leaves out), and the segment's stream
// pushed the connections' state out of the L2 in between (issue 16, s12-benchgap: 88 last-
// level misses per message against the hand pump's 12, callgrind's 2 MiB LL). A read or write
// below the window fails loudly instead of returning other bytes: every delivery of a batch
// ends within that batch (asserted), long before its bytes leave the window.
class memory_spool {
 public:
  memory_spool(sim::sim_host& host, std::uint64_t journal_bytes)
      : _store(make_config(journal_bytes), spool::recovered_state{}) {
    host.set_file_reader([this](int fd, std::uint64_t offset, void* into, std::uint32_t length) {
      return read(fd, offset, into, length);
    });
    pump();
  }
  // The rings go back to the pool: Google Benchmark makes several runs (its iteration
  // estimate first), each with a new spool; fresh rings would fault their pages in again.
  ~memory_spool() {
    for (auto& file : _files) spare_rings().push_back(std::move(file.ring));
  }
  memory_spool(const memory_spool&) = delete;
  memory_spool& operator=(const memory_spool&) = delete;

  spool::store& store() noexcept { return _store; }
  const spool::store& store() const noexcept { return _store; }

  // Performs every operation the store has, and those their completions produce.
  void pump() noexcept {
    spool::operation op;
    while (_store.next_operation(op)) _store.complete(op.token, perform(op));
  }

  std::uint64_t writes = 0;
  std::uint64_t bytes_written = 0;
  std::uint64_t datasyncs = 0;
  std::uint64_t files_created = 0;
  std::uint64_t files_removed = 0;

 private:
  // A power of two, several batches' bytes (a batch writes ~110 KiB into its segment).
  static constexpr std::uint64_t window_bytes = 512 * 1024;
  // Descriptor numbers of these files: above any kernel descriptor (RLIMIT_NOFILE's hard
  // limit is 2^20 here) and below the simulated host's own (2^22 up), so the host hands
  // their reads to the file reader.
  static constexpr int first_fd = 1 << 21;

  struct memory_file {
    bool open = false;
    std::uint64_t size = 0;
    std::unique_ptr<char[]> ring;  // window_bytes: byte at offset o in ring[o % window_bytes]
  };

  static spool::store_config make_config(std::uint64_t journal_bytes) {
    spool::store_config config;  // the daemon's defaults: 64 MiB segments, 4 MiB journal
    config.journal_bytes = journal_bytes;
    config.directory = "/relaybench-memory";  // only names the files: nothing is created there
    config.random_seed = 0x5eed'0f'7e1a'7be7;
    return config;
  }

  std::int64_t perform(const spool::operation& op) noexcept {
    switch (op.kind) {
      case spool::operation_kind::write: {
        std::uint64_t offset = op.offset;
        for (std::uint32_t i = 0; i < op.iovec_count; ++i) {
          const iovec& part = op.iovecs[i];
          write(op.fd, offset, {static_cast<const char*>(part.iov_base), part.iov_len});
          offset += part.iov_len;
        }
        ++writes;
        bytes_written += op.bytes;
        return static_cast<std::int64_t>(op.bytes);
      }
      case spool::operation_kind::datasync:
        ++datasyncs;
        return 0;
      case spool::operation_kind::create_file: {
        const int fd = create();
        write(fd, 0, {static_cast<const char*>(op.header), op.header_bytes});
        ++files_created;
        return fd;
      }
      case spool::operation_kind::remove_file:
        if (op.fd >= 0) file(op.fd).open = false;
        ++files_removed;
        return 0;
    }
    return -EINVAL;
  }

  // A closed slot's number and ring again, else a new one.
  int create() noexcept {
    auto free = std::ranges::find_if(_files, [](const memory_file& f) { return !f.open; });
    if (free == _files.end()) {
      free = _files.insert(_files.end(), memory_file{.ring = take_ring()});
    }
    free->open = true;
    free->size = 0;
    return first_fd + static_cast<int>(free - _files.begin());
  }

  memory_file& file(int fd) noexcept {
    const auto index = static_cast<std::size_t>(fd - first_fd);
    RINGMTA_ASSERT(fd >= first_fd && index < _files.size() && _files[index].open);
    return _files[index];
  }

  // At or after the window's start (the spool appends; it never rewrites older bytes).
  void write(int fd, std::uint64_t offset, std::string_view bytes) noexcept {
    memory_file& f = file(fd);
    RINGMTA_ASSERT(offset + window_bytes >= f.size);
    copy_ring(f, offset, bytes.size(), [&](char* ring, std::size_t done, std::size_t length) {
      std::memcpy(ring, bytes.data() + done, length);
    });
    f.size = std::max<std::uint64_t>(f.size, offset + bytes.size());
  }

  // The host's file reader (pread's result): bytes below the window are an error (EIO), so
  // the outbound fails that delivery and the benchmark's checks stop the run.
  std::int64_t read(int fd, std::uint64_t offset, void* into, std::uint32_t length) noexcept {
    const memory_file& f = file(fd);
    if (offset >= f.size) return 0;
    if (offset + window_bytes < f.size) return -EIO;
    const auto taken = static_cast<std::size_t>(std::min<std::uint64_t>(length, f.size - offset));
    copy_ring(f, offset, taken, [&](char* ring, std::size_t done, std::size_t part) {
      std::memcpy(static_cast<char*>(into) + done, ring, part);
    });
    return static_cast<std::int64_t>(taken);
  }

  // Calls copy(ring position, bytes done so far, part length) for each part of the range
  // that does not wrap. A write longer than the window (a journal snapshot: up to MiBs) is
  // copied whole, its earlier parts overwritten by its later ones.
  template <typename Copy>
  static void copy_ring(const memory_file& f, std::uint64_t offset, std::size_t length,
                        Copy&& copy) noexcept {
    for (std::size_t done = 0; done < length;) {
      const auto start = static_cast<std::size_t>((offset + done) % window_bytes);
      const std::size_t part = std::min<std::size_t>(length - done, window_bytes - start);
      copy(f.ring.get() + start, done, part);
      done += part;
    }
  }

  // Rings of earlier runs (process-wide: each run makes a new spool), their pages in memory.
  static std::vector<std::unique_ptr<char[]>>& spare_rings() {
    static std::vector<std::unique_ptr<char[]>> spare;
    return spare;
  }

  static std::unique_ptr<char[]> take_ring() {
    auto& spare = spare_rings();
    if (spare.empty()) return std::make_unique<char[]>(window_bytes);  // zeroed: faulted in
    auto ring = std::move(spare.back());
    spare.pop_back();
    return ring;
  }

  spool::store _store;
  std::vector<memory_file> _files;  // by fd - first_fd; closed ones keep their ring
};

// ---- the home role: messages from reception until every recipient is final

struct held_message {
  spool::message_id id = 0;
  spool::envelope envelope;
  std::vector<spool::body_slice> body;  // where the spool put it (store::commit): sent from there
  std::uint64_t body_bytes = 0;         // wire form, as the spool got it (Received: header first)
  bool sampled = false;                 // one in sample_every: the next hop compares octets
  std::string sample;                   // sampled: a copy of those octets
  std::uint32_t recipients_open = 0;
  std::uint64_t delivered_mask = 0;  // exactly-once check, by envelope index
};

// Stable addresses (deque), recycled slots keep their vectors' and strings' capacity.
class message_table {
 public:
  message_table() { _by_id.reserve(4 * batch_sessions); }

  held_message& allocate(spool::message_id id, bool sampled) {
    held_message* m;
    if (_free.empty()) {
      m = &_slots.emplace_back();
    } else {
      m = _free.back();
      _free.pop_back();
    }
    m->id = id;
    m->body.clear();
    m->body_bytes = 0;
    m->sampled = sampled;
    m->sample.clear();
    m->recipients_open = 0;
    m->delivered_mask = 0;
    const bool inserted = _by_id.emplace(id, m).second;
    RINGMTA_ASSERT(inserted);
    return *m;
  }
  held_message* find(spool::message_id id) noexcept {
    const auto found = _by_id.find(id);
    return found == _by_id.end() ? nullptr : found->second;
  }
  void release(held_message& m) noexcept {
    const auto erased = _by_id.erase(m.id);
    RINGMTA_ASSERT(erased == 1);
    _free.push_back(&m);
  }
  std::size_t live() const noexcept { return _by_id.size(); }

 private:
  std::deque<held_message> _slots;
  std::vector<held_message*> _free;
  std::unordered_map<spool::message_id, held_message*> _by_id;
};

// ---- stage 4's far end: the next hop on the simulated network

// The session keeps a reference to its config: one for every peer, alive for the process.
const smtp::server_config& peer_config() {
  static const smtp::server_config config{.hostname = "mx.next-hop.example"};
  return config;
}

// What the next hops received, over every connection.
struct next_hop_ledger {
  message_table& messages;
  std::uint64_t accepted = 0;  // messages (transactions) the next hops accepted
  std::uint64_t body_bytes = 0;
  std::uint64_t compared = 0;  // of which compared octet for octet
};

// One connection's far end: a real smtp::server_session accepting every command. Each message
// is found by the spool id in its Received: header (" id <16 hex digits>", received_header.cc)
// and must arrive with as many octets as the spool got, the very same ones when sampled.
class next_hop final : public sim::stream_peer, public smtp::server_handler {
 public:
  explicit next_hop(next_hop_ledger& ledger) : _ledger(ledger), _session(peer_config(), *this) {}

  void on_connected(sim::sim_host& host, int fd) override {
    _session.start();
    flush(host, fd);
  }
  void on_bytes(sim::sim_host& host, int fd, std::string_view bytes) override {
    while (!bytes.empty() && !_session.wants_close()) {
      const std::size_t used = _session.feed(bytes);
      flush(host, fd);
      RINGMTA_ASSERT(used > 0);  // accepts at once: never waits for a verdict
      bytes.remove_prefix(used);
    }
    if (_session.wants_close() && !_closed) {  // after QUIT's 221 (RFC 5321 §4.1.1.10)
      _closed = true;
      host.peer_close(fd);
    }
  }
  void on_client_gone(sim::sim_host&, int) override { _closed = true; }

  void on_body(std::string_view slice, smtp::body_form form) noexcept override {
    RINGMTA_ASSERT(form == smtp::body_form::wire);  // DATA: the spool's own form
    if (_message == nullptr) _message = identify(slice);
    _received_bytes += slice.size();
    if (_message->sampled) _received.append(slice);
  }
  smtp::verdict on_data_end(const smtp::body_summary& summary) noexcept override {
    RINGMTA_ASSERT(_message != nullptr && summary.wire_bytes == _message->body_bytes &&
                   _received_bytes == _message->body_bytes);
    if (_message->sampled) {
      RINGMTA_ASSERT(_received == _message->sample);
      ++_ledger.compared;
      _received.clear();
    }
    ++_ledger.accepted;
    _ledger.body_bytes += _received_bytes;
    _message = nullptr;
    _received_bytes = 0;
    return smtp::verdict::accept();
  }

 private:
  held_message* identify(std::string_view first_slice) noexcept {
    const auto at = first_slice.find(" id ");
    RINGMTA_ASSERT(at != std::string_view::npos && first_slice.size() >= at + 4 + 16);
    const auto id = spool::parse_message_id(first_slice.substr(at + 4, 16));
    RINGMTA_ASSERT(id.has_value());
    held_message* found = _ledger.messages.find(*id);
    RINGMTA_ASSERT(found != nullptr);
    return found;
  }
  void flush(sim::sim_host& host, int fd) {
    const std::string_view output = _session.output();
    if (output.empty()) return;
    host.peer_send(fd, output);
    _session.consume_output(output.size());
  }

  next_hop_ledger& _ledger;
  smtp::server_session _session;
  held_message* _message = nullptr;  // the transaction's, from its first body octets
  std::uint64_t _received_bytes = 0;
  std::string _received;  // sampled messages only
  bool _closed = false;
};

sim::sim_network relay_network(next_hop_ledger& ledger) {
  sim::sim_network network;
  network.connect = [&ledger](const core::endpoint&) -> std::unique_ptr<sim::stream_peer> {
    return std::make_unique<next_hop>(ledger);
  };
  network.datagram = answer_dns;
  return network;
}

// ---- stage/client_peer: the two SMTP engines pumped by hand, no glue and no host (the
// reference that tells the engines' share of stage 4 from the outbound glue's and the host's)

// The next hop: accepts every command; counts (and on request keeps) the body it receives.
class accept_all_peer final : public smtp::server_handler {
 public:
  // The next message's body as the spool has it; `compare` keeps the octets for a byte check.
  void expect(std::string_view body, bool compare) noexcept {
    _expected = body;
    _compare = compare;
    _received.clear();
    _received_bytes = 0;
  }
  void on_body(std::string_view slice, smtp::body_form) noexcept override {
    _received_bytes += slice.size();
    if (_compare) _received.append(slice);
  }
  smtp::verdict on_data_end(const smtp::body_summary& summary) noexcept override {
    RINGMTA_ASSERT(summary.wire_bytes == _expected.size() && _received_bytes == _expected.size());
    RINGMTA_ASSERT(!_compare || _received == _expected);
    ++messages;
    body_bytes_received += _received_bytes;
    return smtp::verdict::accept();
  }
  std::uint64_t messages = 0;
  std::uint64_t body_bytes_received = 0;

 private:
  std::string_view _expected;
  bool _compare = false;
  std::string _received;
  std::uint64_t _received_bytes = 0;
};

smtp::client_config client_config() {
  smtp::client_config config;
  config.helo_name = our_hostname;
  return config;
}

// A connection: the client engine and the peer engine joined by an in-memory "socket". Every
// call runs the exchange to quiescence, so a transaction completes inside send().
class smtp_link {
 public:
  smtp_link() : _client(client_config()) {}
  smtp_link(const smtp_link&) = delete;
  smtp_link& operator=(const smtp_link&) = delete;

  // A new connection: greeting, EHLO, until the client is ready.
  void connect() noexcept {
    _client.reset();
    _peer.reset();
    _peer.emplace(peer_config(), _peer_handler);
    _peer->start();
    _ready = _closed = false;
    exchange();
    RINGMTA_ASSERT(_ready && _client.pipelining_active());
    ++connections;
  }

  // One transaction on a ready connection; returns the message outcome. `compare` asks the
  // peer for a byte-for-byte check of the body.
  smtp::client_outcome send(const smtp::client_envelope& envelope, std::string_view body,
                            bool compare) noexcept {
    RINGMTA_ASSERT(_ready && !_closed);
    _ready = _result_seen = false;
    _accepted = 0;
    _body = body;
    _peer_handler.expect(body, compare);
    _client.start_transaction(envelope);
    exchange();
    RINGMTA_ASSERT(_result_seen && _ready);
    return _outcome;
  }

  // QUIT and the peer's 221: the connection is over.
  void quit() noexcept {
    RINGMTA_ASSERT(_ready && !_closed);
    _ready = false;
    _client.quit();
    exchange();
    RINGMTA_ASSERT(_closed && _peer->wants_close());
  }

  std::uint32_t accepted_recipients() const noexcept { return _accepted; }
  const accept_all_peer& peer() const noexcept { return _peer_handler; }
  std::uint64_t connections = 0;

 private:
  // Moves bytes both ways and handles the client's events until nothing moves.
  void exchange() noexcept {
    for (bool moved = true; moved;) {
      moved = false;
      for (auto event = _client.next_event(); event.kind != smtp::client_event_kind::none;
           event = _client.next_event()) {
        on_event(event);
      }
      if (const auto out = _client.output(); !out.empty()) {  // client → peer
        const std::size_t taken = _peer->feed(out);
        _client.consume_output(taken);
        moved |= taken > 0;
      }
      if (const auto out = _peer->output(); !out.empty()) {  // peer → client
        const std::size_t taken = _client.feed(out);
        _peer->consume_output(taken);
        moved |= taken > 0;
      }
    }
  }

  void on_event(const smtp::client_event& event) noexcept {
    switch (event.kind) {
      case smtp::client_event_kind::ready: _ready = true; break;
      case smtp::client_event_kind::recipient_result:
        if (event.outcome == smtp::client_outcome::accepted) ++_accepted;
        break;
      case smtp::client_event_kind::send_body: {
        // The daemon splices these octets from the spool's segment file to the socket.
        const std::size_t taken = _peer->feed(_body);
        RINGMTA_ASSERT(taken == _body.size());
        _client.body_sent();
        break;
      }
      case smtp::client_event_kind::message_result:
        _result_seen = true;
        _outcome = event.outcome;
        break;
      case smtp::client_event_kind::closed:
        RINGMTA_ASSERT(event.close_reason == smtp::client_close_reason::quit);
        _closed = true;
        break;
      case smtp::client_event_kind::start_tls:
      case smtp::client_event_kind::none: RINGMTA_ASSERT(false);
    }
  }

  smtp::client_session _client;
  accept_all_peer _peer_handler;
  std::optional<smtp::server_session> _peer;
  std::string_view _body;
  bool _ready = false;
  bool _closed = false;
  bool _result_seen = false;
  smtp::client_outcome _outcome = smtp::client_outcome::transient_failure;
  std::uint32_t _accepted = 0;
};


// ---- stage 3: the scheduler and its pool of reused connections

// A pooled connection's phase; the dispatcher is its only writer (enter() checks the move).
//   free → connecting → idle ⇄ delivering;  idle → closing → free
enum class link_phase : std::uint8_t { free, connecting, idle, delivering, closing };

// What a carrier did with a step: finished it before returning, or started it (the outbound:
// its result comes later, and the carrier reports it with dispatcher::ready / delivered /
// closed, in delivery.h's order).
enum class hand_off : std::uint8_t { done, started };

struct pool_connection {
  queue::connection_id id;
  std::uint32_t index = 0;  // in the dispatcher's pool: the outbound's destination cookie
  std::uint32_t destination_slot = 0;
  link_phase phase = link_phase::free;
  bool queued_for_service = false;  // on the dispatcher's service list
  std::uint32_t deliveries = 0;
  queue::job_id job{};  // delivering: the job on the wire
  // The outbound carrier's: the connection, and the delivery in flight.
  outbound::connection_handle handle;
  outbound::envelope_storage storage;  // the engine's envelope of the delivery in progress
  held_message* message = nullptr;
  std::array<std::uint16_t, queue::job_recipients_max> recipients{};
  std::uint32_t recipient_count = 0;
  std::uint32_t accepted = 0;
};

// What a connection does; the queue-only stage delivers nothing.
class carrier {
 public:
  virtual hand_off connect(pool_connection& connection, std::string_view destination) noexcept = 0;
  // A job whose every recipient the next hop accepts.
  virtual hand_off deliver(pool_connection& connection, const queue::job_view& job) noexcept = 0;
  virtual hand_off disconnect(pool_connection& connection) noexcept = 0;

 protected:
  ~carrier() = default;
};

// relay/shaped: the lookups src/server/relay.cc makes with a [[shaping]] table in use (issue
// 15): the scheduler asks the table for each destination it creates, and each connection
// opened looks its destination up with its MX hosts (timeouts, EHLO name, TLS policy). The
// table (1,000 domains, 10 suffixes, 20 MX patterns; none changes the limits used here) is
// built once, outside the timed loop.
const server::shaping_table* shaping_in_use = nullptr;
// relay/sited: also MX site rollup as src/server/relay_site.cc does it on the site's owner:
// each job carries its site name (a string per job, as routed_job::site), the destination
// joins its site when it has none, and connections take with take_for_site. One site per
// domain here (same limits as without sites), so this is the bookkeeping's cost; the MX
// lookup (once per domain per hour) and the cross-shard hop are not in this one-core path.
bool sites_in_use = false;

std::shared_ptr<const server::shaping_table> bench_shaping_table() {
  config::settings settings;
  settings.default_destination_limits = {1, 100, 0};
  for (std::uint32_t i = 0; i < 1000; ++i) {
    config::shaping_entry e;
    e.domain = fmt::format("d{}.example", i);
    e.ehlo_name = "bulk.example.net";
    settings.shaping.push_back(std::move(e));
  }
  for (std::uint32_t i = 0; i < 10; ++i) {
    config::shaping_entry e;
    e.domain = fmt::format(".tenant{}.example", i);
    e.timeout_reply_ms = 60'000;
    settings.shaping.push_back(std::move(e));
  }
  for (std::uint32_t i = 0; i < 20; ++i) {
    config::shaping_entry e;
    e.mx = fmt::format("*.provider{}.example", i);
    e.retry_schedule_s = std::vector<std::uint32_t>{60, 300};
    settings.shaping.push_back(std::move(e));
  }
  return server::build_shaping_table(settings);
}

queue::scheduler_config scheduler_settings() {
  queue::scheduler_config config;
  config.limits.connections_max = 1;               // one pooled connection per destination
  config.limits.messages_per_connection_max = 100;  // the default: then QUIT, reconnect
  config.random_seed = 7;
  if (shaping_in_use != nullptr) {
    config.limits_for = [](std::string_view destination) {
      return shaping_in_use->for_domain(destination).limits;
    };
  }
  return config;
}


// The owner role of src/server/relay.cc without the ring: poll → open → take_for_connection →
// deliver → delivered(). A connection whose queue ran dry stays open (the engine's reuse) and
// is served again when add() gives its destination a job; it closes when the scheduler says
// close (messages_per_connection_max), and the next poll opens the next one. The carrier's
// started steps come back through ready / delivered / closed, which may run inside settle()
// (a carrier that finishes at once) or from the host's completions.
class dispatcher {
 public:
  dispatcher(carrier& target, const shard::host& clock)
      : _carrier(target), _clock(clock), _scheduler(scheduler_settings()) {
    _requests.reserve(destination_count);
    _by_destination.resize(2 * destination_count, nullptr);
  }

  void add(std::string_view destination, const queue::job_spec& spec) {
    const std::int64_t now_ms = _clock.wall_ms();
    const auto added = _scheduler.add(destination, spec, now_ms, queue::admission::forced);
    RINGMTA_ASSERT(added.status == queue::add_status::added && added.jobs_added == 1);
    if (sites_in_use) {  // relay::state::join_site
      const std::string site = fmt::format("mx1.{}", destination);
      if (_scheduler.site_of(added.destination) != site)
        _scheduler.join_site(destination, site, scheduler_settings().limits);
    }
    ++jobs_added;
    const std::uint32_t slot = added.destination.slot;
    if (slot >= _by_destination.size()) _by_destination.resize(2 * slot + 2, nullptr);
    pool_connection* open = _by_destination[slot];
    if (open != nullptr && open->phase == link_phase::idle) queue_for_service(*open);
  }

  // Until nothing more can go now: opens the connections the scheduler asks for and serves
  // the idle ones that have work. A call from inside (a carrier's report) only adds to it.
  [[gnu::noinline]] void settle() noexcept {
    if (_settling) return;
    _settling = true;
    const std::int64_t now_ms = _clock.wall_ms();
    for (;;) {
      _requests.clear();
      if (_scheduler.next_wakeup_ms() <= now_ms) _scheduler.poll(now_ms, _requests);
      for (const auto& request : _requests) open(request);
      if (_service.empty()) break;
      _serving.swap(_service);
      for (pool_connection* c : _serving) serve(*c, now_ms);
      _serving.clear();
    }
    queue::job_event event;
    RINGMTA_ASSERT(!_scheduler.next_event(event));  // nothing expires or bounces here
    _settling = false;
  }

  // A started connect or delivery ended: the connection can take the next job.
  void ready(pool_connection& c) noexcept {
    enter(c, link_phase::idle);
    queue_for_service(c);
    settle();
  }
  // The job on the wire was delivered (every recipient accepted); ready() follows.
  void delivered(pool_connection& c) noexcept {
    RINGMTA_ASSERT(c.phase == link_phase::delivering);
    _scheduler.delivered(c.job, _clock.wall_ms());
    ++c.deliveries;
    ++jobs_delivered;
  }
  void closed(pool_connection& c) noexcept {
    enter(c, link_phase::free);
    _scheduler.connection_closed(c.id, _clock.wall_ms());
    _by_destination[c.destination_slot] = nullptr;
    _free.push_back(&c);
    --open_connections;
    settle();  // the destination's next connection, if it has jobs
  }

  // Every open connection QUITs; a started close reports closed() later.
  void close_all() noexcept {
    for (pool_connection* c : _by_destination) {
      if (c == nullptr || c->phase == link_phase::closing) continue;
      close(*c);
    }
  }

  pool_connection& connection(std::uint64_t index) noexcept {
    RINGMTA_ASSERT(index < _connections.size());
    return _connections[index];
  }
  const queue::scheduler& scheduler() const noexcept { return _scheduler; }
  std::uint64_t jobs_added = 0;
  std::uint64_t jobs_delivered = 0;
  std::uint64_t connections_opened = 0;
  std::uint32_t open_connections = 0;

 private:
  static void enter(pool_connection& c, link_phase next) noexcept {
    using p = link_phase;
    const p now = c.phase;
    const bool legal = (now == p::free && next == p::connecting) ||
                       (now == p::connecting && next == p::idle) ||
                       (now == p::idle && (next == p::delivering || next == p::closing)) ||
                       (now == p::delivering && next == p::idle) ||
                       (now == p::closing && next == p::free);
    RINGMTA_ASSERT(legal);
    c.phase = next;
  }

  void queue_for_service(pool_connection& c) noexcept {
    if (c.queued_for_service) return;
    c.queued_for_service = true;
    _service.push_back(&c);
  }

  void open(const queue::connect_request& request) noexcept {
    pool_connection* c;
    if (_free.empty()) {
      c = &_connections.emplace_back();
      c->index = static_cast<std::uint32_t>(_connections.size() - 1);
    } else {
      c = _free.back();
      _free.pop_back();
    }
    if (shaping_in_use != nullptr) {  // relay::state::open: shape_of(destination)
      const std::string mx_host = fmt::format("mx1.{}", request.name);
      const std::string_view hosts[] = {mx_host};
      const server::shape found = shaping_in_use->for_destination(request.name, hosts);
      benchmark::DoNotOptimize(found);
    }
    c->id = request.connection;
    c->destination_slot = request.destination.slot;
    c->deliveries = 0;
    RINGMTA_ASSERT(c->destination_slot < _by_destination.size() &&
                   _by_destination[c->destination_slot] == nullptr);
    _by_destination[c->destination_slot] = c;
    enter(*c, link_phase::connecting);
    ++connections_opened;
    ++open_connections;
    if (_carrier.connect(*c, request.name) == hand_off::done) {
      enter(*c, link_phase::idle);
      queue_for_service(*c);
    }
  }

  void serve(pool_connection& c, std::int64_t now_ms) noexcept {
    c.queued_for_service = false;
    while (c.phase == link_phase::idle) {
      const queue::take_result taken = sites_in_use ? _scheduler.take_for_site(c.id, now_ms)
                                                    : _scheduler.take_for_connection(c.id, now_ms);
      switch (taken.status) {
        case queue::take_status::job:
          enter(c, link_phase::delivering);
          c.job = taken.job.id;
          if (_carrier.deliver(c, taken.job) == hand_off::done) {
            delivered(c);
            enter(c, link_phase::idle);
          }
          continue;
        case queue::take_status::close:
          RINGMTA_ASSERT(c.deliveries == scheduler_settings().limits.messages_per_connection_max);
          return close(c);
        case queue::take_status::none: return;  // stays open, idle
        case queue::take_status::throttled: RINGMTA_ASSERT(false);
      }
    }
  }

  void close(pool_connection& c) noexcept {
    enter(c, link_phase::closing);
    if (_carrier.disconnect(c) == hand_off::done) closed(c);
  }

  carrier& _carrier;
  const shard::host& _clock;
  queue::scheduler _scheduler;
  bool _settling = false;
  std::vector<queue::connect_request> _requests;
  std::deque<pool_connection> _connections;
  std::vector<pool_connection*> _free;
  std::vector<pool_connection*> _by_destination;  // open connection by destination slot
  std::vector<pool_connection*> _service;         // idle connections with work to ask for
  std::vector<pool_connection*> _serving;
};

// ---- stage 4: the real src/outbound on the simulated host

// Where a delivery's accepted recipients go: the home role's marks.
class delivery_sink {
 public:
  virtual void delivered(held_message& message,
                         std::span<const std::uint16_t> recipients) noexcept = 0;

 protected:
  ~delivery_sink() = default;
};

outbound::dns_client_config relay_dns_config() {
  outbound::dns_client_config config;
  config.resolver.servers.push_back(dns::server_address{dns::ip_address::v4(192, 0, 2, 53), 53});
  config.resolver.ipv6 = false;
  config.random = [state = std::uint64_t{0x5eed}]() mutable {  // query ids: no getrandom
    state = state * 6364136223846793005ull + 1442695040888963407ull;
    return state;
  };
  return config;
}

outbound::outbound_config relay_outbound_config() {
  outbound::outbound_config config;  // the daemon's defaults, but:
  config.helo_name = our_hostname;
  config.ipv6 = false;
  // The simulated kernel has no pipes: bodies over copy_body_bytes_max would be copied, not
  // spliced (a 1 KiB body is read into the staging buffer and sent with ".", either way).
  config.transfer = outbound::body_transfer::copy;
  // DATA, as in stage/client_peer and the hand-pumped stage this bench is compared with (the
  // simulated host serves BDAT's page-cache prefetch too, through io::descriptors::read_cached;
  // tools/sim runs both).
  config.chunking = false;
  config.tls_context = nullptr;
  return config;
}

// The carrier of the relay: outbound::outbound (with its dns_client) on the simulated host;
// its delivery_handler hands the results to the dispatcher and the marks to the home role.
class outbound_carrier final : public carrier, private outbound::delivery_handler {
 public:
  outbound_carrier(sim::sim_host& host, message_table& messages, delivery_sink& sink)
      : _messages(messages),
        _sink(sink),
        _dns(host, relay_dns_config()),
        _out(host, _dns, *this, relay_outbound_config()) {
    RINGMTA_ASSERT(_dns.start().ok() && _out.start().ok());
  }
  ~outbound_carrier() {
    _out.stop();  // before destruction, as on the shard's thread
    _dns.stop();
  }
  outbound_carrier(const outbound_carrier&) = delete;
  outbound_carrier& operator=(const outbound_carrier&) = delete;

  void attach(dispatcher& queue) noexcept { _queue = &queue; }
  const outbound::outbound_counters& counters() const noexcept { return _out.counters(); }

  hand_off connect(pool_connection& c, std::string_view destination) noexcept override {
    outbound::route where;  // RFC 5321 §5.1: the destination's MX
    where.name = destination;
    where.tls = outbound::tls_policy::none;
    const auto opened = _out.open_connection(c.index, where);
    RINGMTA_ASSERT(opened.ok());
    return hand_off::started;
  }
  hand_off deliver(pool_connection& c, const queue::job_view& job) noexcept override {
    held_message* message = _messages.find(job.message);
    RINGMTA_ASSERT(message != nullptr);
    c.message = message;
    c.recipient_count = c.accepted = 0;
    job.for_each_recipient([&](std::uint16_t index) {
      RINGMTA_ASSERT(c.recipient_count < c.recipients.size());
      c.recipients[c.recipient_count++] = index;
    });
    const auto& envelope = c.storage.assign(
        message->envelope, {c.recipients.data(), c.recipient_count}, message->body_bytes);
    const auto sent = _out.deliver(c.handle, outbound::delivery{envelope, message->body, c.index});
    RINGMTA_ASSERT(sent.ok());
    return hand_off::started;
  }
  hand_off disconnect(pool_connection& c) noexcept override {
    _out.release(c.handle);  // QUIT; on_closed follows
    return hand_off::started;
  }

 private:
  void on_ready(outbound::connection_handle handle, std::uint64_t index) noexcept override {
    pool_connection& c = _queue->connection(index);
    c.handle = handle;
    _queue->ready(c);
  }
  void on_recipient_result(outbound::connection_handle, std::uint64_t index,
                           const outbound::recipient_result& result) noexcept override {
    RINGMTA_ASSERT(result.outcome == smtp::client_outcome::accepted);
    ++_queue->connection(index).accepted;
  }
  void on_delivery_done(outbound::connection_handle, std::uint64_t index,
                        const outbound::delivery_result& result) noexcept override {
    pool_connection& c = _queue->connection(index);
    RINGMTA_ASSERT(result.outcome == smtp::client_outcome::accepted &&
                   c.accepted == c.recipient_count);
    held_message& message = *c.message;
    c.message = nullptr;
    _queue->delivered(c);
    _sink.delivered(message, {c.recipients.data(), c.recipient_count});
  }
  void on_closed(outbound::connection_handle, std::uint64_t index,
                 const outbound::close_result& result) noexcept override {
    if (result.reason != outbound::close_reason::released) {  // say why before the assertion
      fmt::print(stderr, "closed: {} {}\n", outbound::describe(result.reason),
                 result.reply->text());
    }
    RINGMTA_ASSERT(result.reason == outbound::close_reason::released);
    _queue->closed(_queue->connection(index));
  }

  message_table& _messages;
  delivery_sink& _sink;
  dispatcher* _queue = nullptr;
  outbound::dns_client _dns;
  outbound::outbound _out;
};

// ---- stage 1: the inbound session and its handler

class relay_pipeline;

// One inbound connection's handler, shaped like src/server/inbound_connection.cc: the envelope
// is built from MAIL and RCPT, the message streams into the store from on_data_start (with the
// Received: header first), and end of data commits it and answers pending until durable.
class inbound_connection final : public smtp::server_handler {
 public:
  explicit inbound_connection(relay_pipeline& owner) noexcept : _owner(owner) {}

  // A new session: greeting, then the client's whole pipelined input, up to the end of data
  // (the session stops there, awaiting the spool's verdict).
  void open(std::string_view input) noexcept;
  // The spool reported the ticket: 250 (or 452), then the rest of the input (QUIT).
  void on_durable(int error) noexcept;

  std::uint64_t ticket() const noexcept { return _ticket; }
  held_message* message() const noexcept { return _message; }
  spool::envelope& envelope() noexcept { return _envelope; }

  smtp::verdict on_mail_from(const smtp::mailbox& reverse_path,
                             const smtp::mail_parameters& parameters) noexcept override;
  smtp::verdict on_rcpt_to(const smtp::mailbox& forward_path,
                           const smtp::rcpt_parameters& parameters) noexcept override;
  smtp::verdict on_data_start() noexcept override;
  void on_body(std::string_view slice, smtp::body_form form) noexcept override;
  smtp::verdict on_data_end(const smtp::body_summary& summary) noexcept override;
  void on_data_aborted(smtp::abort_reason reason) noexcept override;

 private:
  relay_pipeline& _owner;
  std::optional<smtp::server_session> _session;
  std::string_view _rest;  // input not yet consumed
  spool::envelope _envelope;
  spool::message_handle _handle;
  held_message* _message = nullptr;
  std::uint64_t _ticket = 0;
  int _error = 0;
};

smtp::server_config inbound_settings() {
  smtp::server_config config;
  config.hostname = our_hostname;
  return config;
}

enum class pipeline_mode : std::uint8_t {
  relay,      // all four stages
  reception,  // stages 1 and 2: after the 250 every recipient is marked delivered at once
};

class relay_pipeline final : private delivery_sink {
 public:
  relay_pipeline(const workload& load, pipeline_mode mode, std::uint64_t journal_bytes)
      : _load(load),
        _mode(mode),
        _machine(relay_network(_ledger)),
        _spool(_machine.host(), journal_bytes),
        _carrier(_machine.host(), _table, *this),
        _dispatcher(_carrier, _machine.host()) {
    _carrier.attach(_dispatcher);
    for (std::uint32_t i = 0; i < batch_sessions; ++i) _inbound.emplace_back(*this);
  }

  // One reactor loop iteration's worth: 64 sessions, one group commit, their 250s, routing,
  // and relaying every job that became ready.
  // (The phases are kept out of line so that a profile shows each one's share.)
  void run_batch() noexcept {
    _machine.advance_ms(1);
    receive();
    group_commit();
    if (_mode == pipeline_mode::relay) deliver();
    RINGMTA_ASSERT(_table.live() == 0);  // every message of the batch is relayed
  }

  // Ends the run: pool connections QUIT, the last marks are flushed, the totals must agree.
  void finish() noexcept {
    _dispatcher.close_all();
    _machine.run_until([this] { return _dispatcher.open_connections == 0; });
    _spool.store().flush();
    _spool.pump();
    spool::event event;
    while (_spool.store().next_event(event)) on_spool_event(event);
    RINGMTA_ASSERT(_relayed == _sessions && _accepted_250 == _sessions);
    RINGMTA_ASSERT(_spool.store().stats().commits_durable == _sessions);
    RINGMTA_ASSERT(_marks_durable == _sessions * _load.recipients);
    if (_mode == pipeline_mode::relay) {
      RINGMTA_ASSERT(_deliveries == _sessions * _load.recipients);
      RINGMTA_ASSERT(_dispatcher.jobs_delivered == _deliveries &&
                     _dispatcher.jobs_added == _deliveries);
      RINGMTA_ASSERT(_ledger.accepted == _deliveries && _ledger.body_bytes == _body_bytes_sent);
      const std::uint64_t sampled = (_sessions + sample_every - 1) / sample_every;
      RINGMTA_ASSERT(_ledger.compared == sampled * _load.recipients);
      RINGMTA_ASSERT(_dispatcher.scheduler().stats().jobs == 0);
      RINGMTA_ASSERT(_carrier.counters().bodies_staged == _deliveries);
      RINGMTA_ASSERT(_machine.host().counters().unsupported_ops == 0);
    }
  }

  void report(benchmark::State& state) const {
    const auto messages = static_cast<double>(_relayed);
    state.SetItemsProcessed(static_cast<std::int64_t>(_relayed));
    state.counters["per_message"] =
        benchmark::Counter(messages, benchmark::Counter::kIsRate | benchmark::Counter::kInvert);
    state.counters["deliveries"] = static_cast<double>(_deliveries);
    state.counters["connections"] = static_cast<double>(_dispatcher.connections_opened);
    state.counters["spool_bytes_per_msg"] = static_cast<double>(_spool.bytes_written) / messages;
    const auto stats = _spool.store().stats();
    state.counters["segments"] = static_cast<double>(stats.segments_created);
    state.counters["journal_snapshots"] = static_cast<double>(stats.journal_snapshots);
    // The simulated host's work: completions, loop turns and scheduler actions per message.
    const auto& host = _machine.host().counters();
    state.counters["completions_per_msg"] = static_cast<double>(host.completions) / messages;
    state.counters["turns_per_msg"] = static_cast<double>(host.turns) / messages;
    state.counters["actions_per_msg"] = static_cast<double>(_machine.actions_run()) / messages;
  }

  // Used by inbound_connection.
  const smtp::server_config& inbound_config() const noexcept { return _inbound_config; }
  memory_spool& spool() noexcept { return _spool; }
  message_table& table() noexcept { return _table; }
  std::int64_t now_seconds() const noexcept { return _machine.wall_ms() / 1000; }
  std::uint32_t recipients_expected() const noexcept { return _load.recipients; }
  // Whether the message now received is one whose octets the next hop compares.
  bool next_sampled() noexcept { return _received++ % sample_every == 0; }

 private:
  // Stage 1 (+ the spool's appends and commits): every session up to its end of data.
  [[gnu::noinline]] void receive() noexcept {
    for (auto& connection : _inbound) {
      connection.open(_load.inputs[_sessions % destination_count]);
      ++_sessions;
    }
    _first_ticket = _inbound.front().ticket();
  }

  // Stage 2's flush, the 250s, and routing (or, for the reception stage, the marks).
  [[gnu::noinline]] void group_commit() noexcept {
    auto& store = _spool.store();
    store.flush();  // group commit: one write and one datasync for the whole batch
    _spool.pump();
    spool::event event;
    while (store.next_event(event)) on_spool_event(event);
  }

  // Stages 3 and 4: the jobs go out over the pool's connections; the host runs the outbound
  // (and the next hops) until every message of the batch is delivered and marked.
  [[gnu::noinline]] void deliver() noexcept {
    _dispatcher.settle();
    _machine.run_until([this] { return _table.live() == 0; });
  }

  void on_spool_event(const spool::event& event) noexcept {
    RINGMTA_ASSERT(event.error == 0);
    if (event.kind == spool::event_kind::marked) {
      ++_marks_durable;
      return;
    }
    // Commit tickets of one batch are consecutive: no mark is taken while sessions commit.
    const std::uint64_t index = event.ticket - _first_ticket;
    RINGMTA_ASSERT(index < _inbound.size() && _inbound[index].ticket() == event.ticket);
    inbound_connection& connection = _inbound[index];
    held_message& message = *connection.message();
    connection.on_durable(0);
    ++_accepted_250;
    message.envelope.recipients.swap(connection.envelope().recipients);  // capacity circulates
    std::swap(message.envelope.reverse_path, connection.envelope().reverse_path);
    message.envelope.id = message.id;
    message.envelope.received_seconds = connection.envelope().received_seconds;
    const auto count = static_cast<std::uint16_t>(message.envelope.recipients.size());
    message.recipients_open = count;
    std::uint64_t stored = 0;  // what the commit said the spool holds: what goes out
    for (const auto& slice : message.body) stored += slice.length;
    RINGMTA_ASSERT(stored == message.body_bytes);
    if (_mode == pipeline_mode::relay) return route(message);
    for (std::uint16_t i = 0; i < count; ++i) (void)mark_delivered(message, i);
  }

  // Groups the recipients by destination (their domain, lowercase: RFC 5321 §2.4) and queues
  // one job per destination, as relay_home.cc route_recipients + relay.cc accept_job do.
  void route(held_message& message) noexcept {
    const auto& recipients = message.envelope.recipients;
    RINGMTA_ASSERT(recipients.size() <= 64);
    std::uint64_t grouped = 0;
    std::array<std::uint16_t, 64> indices;
    std::array<char, 256> name;
    for (std::size_t i = 0; i < recipients.size(); ++i) {
      if ((grouped >> i) & 1) continue;
      const std::string_view domain = domain_of(recipients[i].address);
      std::size_t count = 0;
      for (std::size_t j = i; j < recipients.size(); ++j) {
        if (((grouped >> j) & 1) || !same_domain(domain_of(recipients[j].address), domain))
          continue;
        grouped |= std::uint64_t{1} << j;
        indices[count++] = static_cast<std::uint16_t>(j);
      }
      RINGMTA_ASSERT(domain.size() <= name.size());
      for (std::size_t k = 0; k < domain.size(); ++k) name[k] = lower(domain[k]);
      queue::job_spec spec;
      spec.message = message.id;
      spec.received_seconds = message.envelope.received_seconds;
      spec.recipients = {indices.data(), count};
      _dispatcher.add({name.data(), domain.size()}, spec);
    }
  }

  static std::string_view domain_of(std::string_view address) noexcept {
    const auto at = address.rfind('@');
    return at == std::string_view::npos ? our_hostname : address.substr(at + 1);
  }
  static char lower(char c) noexcept { return c >= 'A' && c <= 'Z' ? c + ('a' - 'A') : c; }
  static bool same_domain(std::string_view a, std::string_view b) noexcept {
    if (a.size() != b.size()) return false;
    for (std::size_t i = 0; i < a.size(); ++i)
      if (lower(a[i]) != lower(b[i])) return false;
    return true;
  }

  // The home records a final state (relay_home.cc on_outcomes); true when the message is done.
  bool mark_delivered(held_message& message, std::uint16_t index) noexcept {
    const std::uint64_t bit = std::uint64_t{1} << index;
    RINGMTA_ASSERT((message.delivered_mask & bit) == 0);  // exactly once
    message.delivered_mask |= bit;
    spool::recipient_status status;
    status.state = spool::recipient_state::delivered;
    status.attempts = 1;
    const auto marked = _spool.store().mark(message.id, index, status);
    RINGMTA_ASSERT(marked.ok());
    RINGMTA_ASSERT(message.recipients_open > 0);
    if (--message.recipients_open > 0) return false;
    ++_relayed;
    _table.release(message);
    return true;
  }

  // delivery_sink: the outbound carrier's accepted deliveries.
  void delivered(held_message& message, std::span<const std::uint16_t> recipients) noexcept
      override {
    ++_deliveries;
    _body_bytes_sent += message.body_bytes;
    for (const std::uint16_t index : recipients) {
      if (mark_delivered(message, index)) break;  // released with its last recipient
    }
  }

  const workload& _load;
  pipeline_mode _mode;
  smtp::server_config _inbound_config = inbound_settings();
  message_table _table;
  next_hop_ledger _ledger{_table};
  relay_machine _machine;  // before what runs on its host, destroyed after it
  memory_spool _spool;
  outbound_carrier _carrier;
  dispatcher _dispatcher;
  std::deque<inbound_connection> _inbound;
  std::uint64_t _received = 0;
  std::uint64_t _body_bytes_sent = 0;
  std::uint64_t _first_ticket = 0;
  std::uint64_t _sessions = 0;
  std::uint64_t _accepted_250 = 0;
  std::uint64_t _relayed = 0;
  std::uint64_t _deliveries = 0;
  std::uint64_t _marks_durable = 0;
};

void inbound_connection::open(std::string_view input) noexcept {
  _session.reset();
  _session.emplace(_owner.inbound_config(), *this);
  _session->start();
  _message = nullptr;
  _ticket = 0;
  const std::size_t used = _session->feed(input);
  _rest = input.substr(used);
  // Stopped at the end of data: EHLO, MAIL, every RCPT and DATA answered, the body spooled.
  RINGMTA_ASSERT(_session->awaiting_verdict() && _ticket != 0 && _rest == "QUIT\r\n");
  _session->consume_output(_session->output().size());  // the daemon sends these replies
}

void inbound_connection::on_durable(int error) noexcept {
  RINGMTA_ASSERT(error == 0);
  const auto id_text = spool::format_message_id(_message->id);
  char text[64];
  const auto length =
      fmt::format_to_n(text, sizeof text, "Ok: queued as {}", std::string_view(id_text.data(), 16))
          .size;
  _session->resume(smtp::verdict::respond(250, "2.0.0", std::string_view(text, length)));
  const std::size_t used = _session->feed(_rest);
  RINGMTA_ASSERT(used == _rest.size() && _session->wants_close());
  const std::string_view out = _session->output();
  RINGMTA_ASSERT(out.starts_with("250 2.0.0 Ok: queued as ") &&
                 out.find("\r\n221 ") != std::string_view::npos);
  _session->consume_output(out.size());
}

smtp::verdict inbound_connection::on_mail_from(const smtp::mailbox& reverse_path,
                                               const smtp::mail_parameters& parameters) noexcept {
  _envelope.reverse_path.assign(reverse_path.address);
  _envelope.size_declared = parameters.has_size ? parameters.size : 0;
  _envelope.envid.assign(parameters.envid);
  _envelope.recipients.clear();
  return smtp::verdict::accept();
}

smtp::verdict inbound_connection::on_rcpt_to(const smtp::mailbox& forward_path,
                                             const smtp::rcpt_parameters& parameters) noexcept {
  auto& added = _envelope.recipients.emplace_back();  // our client: relaying is allowed
  added.address.assign(forward_path.address);
  added.notify = parameters.notify;
  added.orcpt.clear();
  return smtp::verdict::accept();
}

smtp::verdict inbound_connection::on_data_start() noexcept {
  auto& store = _owner.spool().store();
  const std::int64_t now_seconds = _owner.now_seconds();
  auto handle = store.begin(now_seconds);
  RINGMTA_ASSERT(handle.ok());
  _handle = handle.value();
  _error = 0;
  _envelope.id = store.id_of(_handle);
  _envelope.received_seconds = now_seconds;
  _message = &_owner.table().allocate(_envelope.id, _owner.next_sampled());
  const auto id_text = spool::format_message_id(_envelope.id);
  char header[net::received_header_bytes_max];
  const net::received_fields fields{
      _session->helo_name(), client_address, our_hostname, _session->protocol_name(),
      std::string_view(id_text.data(), 16),
      _envelope.recipients.size() == 1 ? std::string_view(_envelope.recipients[0].address)
                                       : std::string_view(),
      now_seconds};
  on_body(std::string_view(header, net::format_received_header(fields, header, sizeof header)),
          smtp::body_form::wire);
  return smtp::verdict::accept();
}

void inbound_connection::on_body(std::string_view slice, smtp::body_form form) noexcept {
  RINGMTA_ASSERT(form == smtp::body_form::wire);
  const auto taken = _owner.spool().store().append(_handle, slice);
  if (!taken || taken.value() != slice.size()) _error = taken ? ENOBUFS : taken.error();
  _message->body_bytes += slice.size();  // what the next hop must receive
  if (_message->sampled) _message->sample.append(slice);
}

smtp::verdict inbound_connection::on_data_end(const smtp::body_summary&) noexcept {
  RINGMTA_ASSERT(_error == 0 && _envelope.recipients.size() == _owner.recipients_expected());
  _envelope.client_address.assign(client_address);
  _envelope.helo.assign(_session->helo_name());
  auto& spool = _owner.spool();
  auto committed = spool.store().commit(_handle, _envelope, &_message->body);
  if (!committed && committed.error() == EAGAIN) {  // no segment ready yet: run the store
    spool.pump();
    committed = spool.store().commit(_handle, _envelope, &_message->body);
  }
  RINGMTA_ASSERT(committed.ok());
  _ticket = committed.value();
  return smtp::verdict::pending();  // 250 once the ticket is durable
}

void inbound_connection::on_data_aborted(smtp::abort_reason) noexcept { RINGMTA_ASSERT(false); }

// ---- benchmarks

const workload& workload_for(std::uint32_t recipients) {
  static const workload one = make_workload(1);
  static const workload three = make_workload(3);
  RINGMTA_ASSERT(recipients == 1 || recipients == 3);
  return recipients == 1 ? one : three;
}

// The process's minor page faults so far (getrusage(2)).
std::int64_t minor_faults() noexcept {
  rusage usage{};
  ::getrusage(RUSAGE_SELF, &usage);
  return usage.ru_minflt;
}

// Arguments: recipients per message, and the spool's journal compaction threshold in MiB
// (4 is the daemon's default; see README "Findings" for why the 3-recipient runs use 64).
void run_pipeline(benchmark::State& state, pipeline_mode mode) {
  const workload& load = workload_for(static_cast<std::uint32_t>(state.range(0)));
  relay_pipeline pipeline(load, mode, static_cast<std::uint64_t>(state.range(1)) << 20);
  const std::int64_t faults_before = minor_faults();
  for (auto _ : state) pipeline.run_batch();
  const std::int64_t faults = minor_faults() - faults_before;
  pipeline.finish();
  pipeline.report(state);
  // Pages faulted in while measured (the memory the loop first touches, counted once each):
  // a time cost that instruction counts do not show (issue 16).
  state.counters["faults_per_batch"] =
      static_cast<double>(faults) / static_cast<double>(std::max<benchmark::IterationCount>(
                                        state.iterations(), 1));
}

// The whole path; one iteration = one batch of 64 inbound sessions.
void relay_path(benchmark::State& state) { run_pipeline(state, pipeline_mode::relay); }
// The same with a shaping table in use (issue 15: lookup cost, goal within 5% of relay).
void relay_shaped(benchmark::State& state) {
  static const auto table = bench_shaping_table();
  shaping_in_use = table.get();
  run_pipeline(state, pipeline_mode::relay);
  shaping_in_use = nullptr;
}
// The same with MX sites too (issue 15: site rollup's cost, goal within 5% of relay).
void relay_sited(benchmark::State& state) {
  static const auto table = bench_shaping_table();
  shaping_in_use = table.get();
  sites_in_use = true;
  run_pipeline(state, pipeline_mode::relay);
  sites_in_use = false;
  shaping_in_use = nullptr;
}
// Stages 1 + 2: inbound sessions, spool with group commit, 250s; then the home marks every
// recipient delivered at once (the spool's share of a delivery).
void stage_parse_spool(benchmark::State& state) {
  run_pipeline(state, pipeline_mode::reception);
}

// 10,000 batches (640,000 messages of 3 recipients) cross many segment switches and journal
// compactions at the default threshold: the regression run for the journal snapshot storm and
// the store::touch abort this benchmark found (README, findings 1 and 2; both fixed).
constexpr std::int64_t long_batches = 10'000;

BENCHMARK(relay_path)->Name("relay")->ArgNames({"rcpt", "journal_MiB"})
    ->Args({1, 4})->Args({3, 4});
BENCHMARK(relay_shaped)->Name("relay/shaped")->ArgNames({"rcpt", "journal_MiB"})
    ->Args({1, 4})->Args({3, 4});
BENCHMARK(relay_sited)->Name("relay/sited")->ArgNames({"rcpt", "journal_MiB"})
    ->Args({1, 4})->Args({3, 4});
// 31,250 batches × 64 = 2,000,000 messages relayed in one run.
BENCHMARK(relay_path)->Name("relay/2M")->ArgNames({"rcpt", "journal_MiB"})->Args({1, 4})
    ->Iterations(31'250)->Unit(benchmark::kMillisecond);
BENCHMARK(relay_path)->Name("relay/long")->ArgNames({"rcpt", "journal_MiB"})
    ->Args({3, 4})->Iterations(long_batches)->Unit(benchmark::kMillisecond);
BENCHMARK(stage_parse_spool)->Name("stage/parse_spool")->ArgNames({"rcpt", "journal_MiB"})
    ->Args({1, 4})->Args({3, 4});

// Stage 3 alone: the same jobs through the scheduler and the connection pool; every step
// finishes at once (a delivery succeeds). The clock is a simulated host's with nothing on it.
class null_carrier final : public carrier {
 public:
  hand_off connect(pool_connection&, std::string_view) noexcept override {
    return hand_off::done;
  }
  hand_off deliver(pool_connection&, const queue::job_view& job) noexcept override {
    RINGMTA_ASSERT(job.recipient_count() == 1);
    return hand_off::done;
  }
  hand_off disconnect(pool_connection&) noexcept override { return hand_off::done; }
};

void stage_queue(benchmark::State& state) {
  const auto recipients = static_cast<std::uint32_t>(state.range(0));
  std::vector<std::string> names;
  for (std::uint32_t d = 0; d < destination_count; ++d) names.push_back(destination_name(d));
  null_carrier target;
  relay_machine machine{sim::sim_network{}};
  dispatcher queue(target, machine.host());
  spool::message_id id = 0;
  for (auto _ : state) {
    machine.advance_ms(1);
    for (std::uint32_t m = 0; m < batch_sessions; ++m) {
      ++id;
      for (std::uint16_t r = 0; r < recipients; ++r) {
        queue::job_spec spec;
        spec.message = id;
        spec.received_seconds = machine.wall_ms() / 1000;
        spec.recipients = {&r, 1};
        queue.add(names[(id + r) % destination_count], spec);
      }
    }
    queue.settle();
    RINGMTA_ASSERT(queue.jobs_delivered == queue.jobs_added);
  }
  queue.close_all();
  RINGMTA_ASSERT(queue.jobs_added == id * recipients && queue.scheduler().stats().jobs == 0 &&
                 queue.open_connections == 0);
  state.SetItemsProcessed(static_cast<std::int64_t>(id));
  state.counters["connections"] = static_cast<double>(queue.connections_opened);
}
BENCHMARK(stage_queue)->Name("stage/queue")->ArgName("rcpt")->Arg(1)->Arg(3);

// Stage 4 alone: each message's recipients go out over the pooled link of their destination
// (QUIT and a new connection every 100 deliveries), envelope built by envelope_storage.
void stage_client_peer(benchmark::State& state) {
  const workload& load = workload_for(static_cast<std::uint32_t>(state.range(0)));
  // One stored message per first destination, as the spool holds it (Received: header first).
  std::vector<spool::envelope> envelopes(destination_count);
  char header[net::received_header_bytes_max];
  const net::received_fields fields{"client.example.org", client_address, our_hostname, "ESMTP",
                                    "0000000000000001", "user0@d0.example", start_ms / 1000};
  const std::string body =
      std::string(header, net::format_received_header(fields, header, sizeof header)) +
      load.body;
  for (std::uint32_t d = 0; d < destination_count; ++d) {
    envelopes[d].reverse_path = "alice@example.org";
    for (std::uint32_t r = 0; r < load.recipients; ++r) {
      envelopes[d].recipients.push_back(
          {fmt::format("user{}@{}", r, destination_name(d + r)), 0, {}});
    }
  }
  std::deque<smtp_link> links(destination_count);
  std::vector<std::uint32_t> sent(destination_count, 0);
  for (auto& link : links) link.connect();
  outbound::envelope_storage storage;
  std::uint64_t messages = 0;
  std::uint64_t deliveries = 0;
  for (auto _ : state) {
    for (std::uint32_t m = 0; m < batch_sessions; ++m, ++messages) {
      const auto first = static_cast<std::uint32_t>(messages % destination_count);
      for (std::uint16_t r = 0; r < load.recipients; ++r) {
        const std::uint32_t d = (first + r) % destination_count;
        if (sent[d] == 100) {  // messages_per_connection_max
          links[d].quit();
          links[d].connect();
          sent[d] = 0;
        }
        const auto& envelope = storage.assign(envelopes[first], {&r, 1}, body.size());
        const bool compare = deliveries % sample_every == 0;
        const auto outcome = links[d].send(envelope, body, compare);
        RINGMTA_ASSERT(outcome == smtp::client_outcome::accepted &&
                       links[d].accepted_recipients() == 1);
        ++sent[d];
        ++deliveries;
      }
    }
  }
  std::uint64_t peer_messages = 0;  // the peer handler counts across its connections
  for (auto& link : links) {
    peer_messages += link.peer().messages;
    link.quit();
  }
  RINGMTA_ASSERT(peer_messages == deliveries && deliveries == messages * load.recipients);
  state.SetItemsProcessed(static_cast<std::int64_t>(messages));
  state.counters["deliveries"] = static_cast<double>(deliveries);
}
BENCHMARK(stage_client_peer)->Name("stage/client_peer")->ArgName("rcpt")->Arg(1)->Arg(3);

// Diagnostic (README, findings): the Received: header each accepted message gets, and the
// RFC 5322 date inside it, per call.
void diagnostic_received_header(benchmark::State& state) {
  char header[net::received_header_bytes_max];
  std::int64_t seconds = start_ms / 1000;
  std::size_t bytes = 0;
  for (auto _ : state) {
    const net::received_fields fields{"client.example.org", client_address, our_hostname,
                                      "ESMTP", "0000000000000001", "user0@d0.example", ++seconds};
    bytes += net::format_received_header(fields, header, sizeof header);
    benchmark::DoNotOptimize(header);
  }
  RINGMTA_ASSERT(bytes > 0);
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(diagnostic_received_header)->Name("diagnostic/received_header");

void diagnostic_rfc5322_date(benchmark::State& state) {
  char date[32];
  std::int64_t seconds = start_ms / 1000;
  std::size_t bytes = 0;
  for (auto _ : state) {
    bytes += net::format_rfc5322_date(++seconds, date);
    benchmark::DoNotOptimize(date);
  }
  RINGMTA_ASSERT(bytes > 0);
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(diagnostic_rfc5322_date)->Name("diagnostic/rfc5322_date");

// Diagnostic (README, findings): what relay_home.cc load() costs per message in the daemon,
// which reads each accepted message back with store::read (one pread of its commit record,
// envelope decode) before routing it; the pipeline above keeps the envelope in memory instead.
// Real files on tmpfs (/dev/shm), written once before the loop and removed after it.
void diagnostic_store_read(benchmark::State& state) {
  char directory[] = "/dev/shm/relaybench-XXXXXX";
  RINGMTA_ASSERT(::mkdtemp(directory) != nullptr);
  spool::store_config config;
  config.directory = spool::shard_directory(directory, 0);
  config.segment_bytes = 4u << 20;
  config.preallocate = false;
  auto opened = spool::sync_spool::open(config);
  RINGMTA_ASSERT(opened.ok());
  auto& spool = *opened.value();
  const std::string& body = workload_for(1).body;
  std::vector<spool::message_id> ids;
  for (int i = 0; i < 1000; ++i) {
    auto handle = spool.begin(start_ms / 1000);
    RINGMTA_ASSERT(handle.ok() && spool.append(handle.value(), body).ok());
    spool::envelope value;
    value.id = spool.core().id_of(handle.value());
    value.reverse_path = "alice@example.org";
    value.recipients.push_back({"user0@d0.example", 0, {}});
    value.received_seconds = start_ms / 1000;
    value.client_address = client_address;
    value.helo = "client.example.org";
    RINGMTA_ASSERT(spool.commit(handle.value(), value).ok());
    ids.push_back(value.id);
  }
  spool.flush();
  std::size_t next = 0;
  for (auto _ : state) {
    auto stored = spool.core().read(ids[next++ % ids.size()]);
    RINGMTA_ASSERT(stored.ok() && stored.value().body_bytes == body.size());
    benchmark::DoNotOptimize(stored);
  }
  opened.value().reset();
  std::filesystem::remove_all(directory);
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(diagnostic_store_read)->Name("diagnostic/store_read_tmpfs");

}  // namespace
}  // namespace ringmta

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
