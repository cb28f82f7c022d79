#include "sim_outbound.h"

// First: without it ldns/common.h #defines bool, true and false as macros in C++.
#include <stdbool.h>  // NOLINT(modernize-deprecated-headers)
#include <ldns/ldns.h>
#include <arpa/inet.h>
#include <fmt/format.h>
#include <netinet/in.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "ringmta/dns/wire.h"
#include "ringmta/outbound/dns_client.h"
#include "ringmta/outbound/outbound.h"
#include "ringmta/queue/dsn.h"
#include "ringmta/queue/scheduler.h"
#include "ringmta/smtp/client_session.h"
#include "sim_dns.h"
#include "sim_host.h"
#include "sim_tls.h"

namespace ringmta::sim::internal {
namespace {

constexpr std::int64_t ms_ns = 1'000'000;
constexpr std::int64_t client_timeout_ns = 60'000 * ms_ns;   // every phase (RFC: minutes)
constexpr std::string_view our_name = "mx.sim.example";
constexpr std::uint32_t domain_count = 4;  // rcpt0..rcpt2.example and sender.example

std::string domain_of(std::string_view address) {
  const auto at = address.rfind('@');
  return dns::normalize_name(at == std::string_view::npos ? address : address.substr(at + 1));
}

// "sim.c12.t0" from "Message-ID: <sim.c12.t0@sim.example>" (the first one: a DSN's own
// Message-ID has another form, the original's is in its returned header section).
std::string find_key(std::string_view body) {
  const auto at = body.find("<sim.c");
  if (at == std::string_view::npos) return {};
  const auto end = body.find('@', at);
  return end == std::string_view::npos ? std::string{} : std::string(body.substr(at + 1,
                                                                            end - at - 1));
}

// What the delivery side knows of a message (process memory: rebuilt after a crash).
struct message_data {
  std::string reverse_path;
  std::vector<std::string> recipients;
  std::vector<std::uint8_t> notify;
  std::string body_wire;
  std::string key;
  std::int64_t received_seconds = 0;
  bool dsn = false;
};

// The test's ledger of a durable message: survives crashes.
struct ledger_entry {
  std::string key;
  std::string reverse_path;
  std::vector<std::string> recipients;
  bool dsn = false;
};

struct remote_host {
  std::string name;
  std::uint32_t domain = 0;
  smtp::extension_set extensions;
  std::uint64_t message_bytes_max = 0;
  bool starttls = false;  // offers STARTTLS (RFC 3207): sim_tls.h
  double tls_broken = 0;  // a connection's handshake fails (the client falls back to plaintext)
  double refuse = 0, greet_reject = 0, drop = 0, stall = 0, temporary = 0, permanent = 0;
};

}  // namespace

struct outbound::state {
  struct connection;

  // A remote MTA's side of one connection: the real server engine, random answers, and the
  // network's faults as bytes arrive (a drop loses them and closes; a stall never answers).
  struct remote_peer final : stream_peer, smtp::server_handler {
    remote_peer(state& owner, remote_host& host, std::uint64_t connection_number,
                bool tls_broken)
        : s(owner), remote(host), number(connection_number) {
      config.hostname = remote.name;
      config.extensions = remote.extensions;
      config.limits.message_bytes_max = remote.message_bytes_max;
      config.starttls_offered = remote.starttls;
      server = std::make_unique<smtp::server_session>(config, *this);
      pipe = std::make_unique<server_tls_pipe>(*server, tls_broken);
    }
    void on_connected(sim_host& host, int fd) override;
    void on_bytes(sim_host& host, int fd, std::string_view bytes) override;
    void on_client_gone(sim_host&, int) override {
      if (server != nullptr && !server->wants_close()) server->connection_lost();
      pipe.reset();
      server.reset();
    }
    void hang_up(sim_host& host, int fd) {
      pipe.reset();
      server.reset();
      host.peer_close(fd);
    }
    void flush(sim_host& host, int fd);
    smtp::verdict answer(const char* what);
    smtp::verdict on_helo(std::string_view, bool) noexcept override { return answer("HELO"); }
    smtp::verdict on_mail_from(const smtp::mailbox& from,
                               const smtp::mail_parameters&) noexcept override {
      reverse_path.assign(from.address);
      recipients.clear();
      body.clear();
      return answer("MAIL");
    }
    smtp::verdict on_rcpt_to(const smtp::mailbox& to,
                             const smtp::rcpt_parameters&) noexcept override;
    smtp::verdict on_data_start() noexcept override { return answer("DATA"); }
    void on_body(std::string_view slice, smtp::body_form) noexcept override {
      body.append(slice);
    }
    smtp::verdict on_data_end(const smtp::body_summary&) noexcept override;
    void on_reset() noexcept override { recipients.clear(); body.clear(); }
    state& s;
    remote_host& remote;
    std::uint64_t number;  // for the notes: the remote's own count of connections
    smtp::server_config config;  // the session keeps a reference
    std::unique_ptr<smtp::server_session> server;
    std::unique_ptr<server_tls_pipe> pipe;  // plaintext until STARTTLS, then TLS (sim_tls.h)
    bool stalled = false;
    std::string reverse_path;
    std::vector<std::string> recipients;
    std::string body;
  };

  // One connection the scheduler asked for, carried by the real outbound (its destination
  // cookie is `number`).
  struct connection {
    std::uint64_t number = 0;
    queue::connection_id id;
    queue::destination_id destination;
    std::string destination_name;
    ringmta::outbound::connection_handle handle;
    bool took_job = false;
    // the transaction in progress
    bool has_job = false;
    queue::job_view job;
    std::vector<std::uint16_t> indices;
    std::vector<smtp::client_recipient> recipients;
    std::vector<smtp::client_outcome> outcomes;
    std::vector<std::string> texts;
    std::string reverse_path;
    spool::body_slice slice;  // the body as a file of the simulated host
    ringmta::outbound::delivery delivery;
  };

  // One process's delivery glue: the REAL outbound::outbound over the REAL dns_client on a
  // simulated host (sim_host.h); this object is their delivery_handler. A crash destroys it.
  struct process_glue;

  struct pending_dsn {
    spool::message_id original = 0;
    std::vector<std::uint16_t> recipients;
    std::vector<std::string> diagnostics;
    bool begun = false;
    spool::message_handle handle;
    spool::message_id id = 0;
    std::string wire;
    std::size_t offset = 0;
    std::uint64_t ticket = 0;
    spool::envelope envelope;
  };

  state(world& owner, std::uint64_t seed);
  void reset_process();
  // time
  std::int64_t now_ns() const { return w.clock().now_ns(); }
  std::int64_t now_ms() const { return epoch_seconds * 1000 + now_ns() / ms_ns; }
  template <typename F> void later(std::int64_t delay_ns, F&& action) {
    w.clock().after(delay_ns, [this, generation = process, action = std::forward<F>(action)] {
      if (generation == process && !w.failed_now()) action();
    });
  }
  void note(std::string_view text) { w.note(text); }
  // scheduler
  void add_jobs(spool::message_id id, const std::vector<bool>& live);
  void rearm();
  void wake();
  void drain_events();
  void bounce(spool::message_id id, const std::vector<std::uint16_t>& indices,
              const std::vector<std::string>& diagnostics);
  void final_mark(spool::message_id id, std::uint16_t index, spool::recipient_state state);
  void retry_marks();
  // DSNs
  void pump_dsns();
  static expected_message expected_dsn(const pending_dsn& d, fate now) {
    expected_message want;
    want.recipients = {d.envelope.recipients[0].address};
    want.notify = {0};
    want.body_wire = d.wire;
    want.origin = fmt::format("DSN for {:016x}", d.original);
    want.state = now;
    want.marks.assign(1, mark_state::none);
    return want;
  }
  bool start_dsn(pending_dsn& d);
  // DNS
  std::vector<std::uint8_t> dns_reply(std::uint16_t id, const std::string& name,
                                      dns::record_type type, bool& drop);
  std::vector<std::string> dns_datagram(std::string_view query);
  // connections
  std::unique_ptr<stream_peer> connect_remote(const core::endpoint& address);
  void open(const queue::connect_request& request);
  void give_up(connection& c, const queue::failure& why);
  void on_ready(std::uint64_t number);
  void on_recipient_result(std::uint64_t number,
                           const ringmta::outbound::recipient_result& result);
  void on_delivery_done(std::uint64_t number, const ringmta::outbound::delivery_result& result);
  void on_closed(std::uint64_t number, const ringmta::outbound::close_result& result);
  void fail_destination(connection& c, const ringmta::outbound::close_result& result);
  void take_next(connection& c);
  void start_job(connection& c, const queue::job_view& job);
  void finish_job(connection& c, smtp::client_outcome outcome, std::string_view text);
  void close(connection& c);
  connection* find(std::uint64_t number) {
    const auto found = connections.find(number);
    return found == connections.end() ? nullptr : found->second.get();
  }
  // operator
  void operator_tick();
  // invariants
  void check_limit(const connection& c);
  void delivered_remotely(remote_peer& h);

  world& w;
  random rng;
  std::uint64_t process = 1;  // bumped by a crash: stale timers do nothing
  std::int64_t net_ns_max = 0;
  std::vector<remote_host> hosts;
  std::vector<int> domain_mode;  // 0 MX, 1 implicit MX, 2 null MX, 3 NXDOMAIN
  double dns_timeout = 0, dns_servfail = 0;
  std::vector<std::int64_t> retry_delays_ms;
  std::int64_t lifetime_ms = 0;
  std::uint32_t connections_max = 1;
  std::int64_t operator_mean_ns = 0;
  // process state
  std::unique_ptr<queue::scheduler> scheduler;
  std::unique_ptr<process_glue> glue;
  std::map<std::uint64_t, std::unique_ptr<connection>> connections;
  std::map<spool::message_id, message_data> messages;
  std::map<std::string, std::uint32_t> open_count;  // destination -> open connections
  std::vector<pending_dsn> dsns;
  std::map<std::uint64_t, std::size_t> dsn_tickets;
  std::vector<std::tuple<spool::message_id, std::uint16_t, spool::recipient_state>> mark_retry;
  std::int64_t wakeup_ns = -1;
  std::uint64_t next_connection = 1;
  std::uint64_t next_remote_connection = 1;
  std::set<std::string> suspended;
  // the ledger (outlives crashes): what the final check compares the mailboxes with
  std::map<spool::message_id, ledger_entry> ledger;
  std::map<std::pair<std::string, std::string>, std::uint32_t> mailbox;      // key, rcpt
  std::map<std::pair<std::string, std::string>, std::uint32_t> dsn_mailbox;  // key, rcpt
  std::set<std::pair<std::string, std::string>> final_durable;  // key, rcpt
  std::set<std::pair<spool::message_id, std::uint16_t>> no_dsn_due;
  std::map<std::pair<spool::message_id, std::uint16_t>, std::vector<spool::message_id>> dsn_of;
  std::set<spool::message_id> dsn_refused;  // a DSN refused 5xx by the sender's MTA
};

outbound::state::state(world& owner, std::uint64_t seed)
    : w(owner), rng(seed * 0x9e3779b97f4a7c15ull + 0x0b0d) {
  const bool faults = w.settings().faults;
  net_ns_max = static_cast<std::int64_t>(rng.between(100'000, 20'000'000));
  for (std::uint32_t d = 0; d < domain_count; ++d) {
    const std::uint64_t draw = rng.below(100);
    domain_mode.push_back(draw < 75 ? 0 : draw < 90 ? 1 : draw < 95 ? 2 : 3);
    for (int h = 1; h <= 2; ++h) {
      remote_host host;
      host.domain = d;
      host.name = fmt::format("mx{}.{}", h, d < 3 ? fmt::format("rcpt{}.example", d)
                                                 : std::string("sender.example"));
      host.extensions.pipelining = rng.chance(0.7);
      host.extensions.eight_bit_mime = rng.chance(0.7);
      host.extensions.size = rng.chance(0.7);
      host.extensions.chunking = rng.chance(0.5);
      host.extensions.binary_mime = false;
      host.message_bytes_max = rng.chance(0.2) ? 64u << 10 : 8u << 20;
      host.starttls = rng.chance(0.3);
      if (faults) {
        host.refuse = static_cast<double>(rng.below(20)) / 100;
        host.greet_reject = static_cast<double>(rng.below(10)) / 100;
        host.drop = static_cast<double>(rng.below(5)) / 100;
        host.stall = static_cast<double>(rng.below(3)) / 100;
        host.temporary = static_cast<double>(rng.below(10)) / 100;
        host.permanent = static_cast<double>(rng.below(4)) / 100;
        host.tls_broken = host.starttls ? static_cast<double>(rng.below(10)) / 100 : 0.0;
      }
      hosts.push_back(std::move(host));
    }
  }
  if (faults) {
    dns_timeout = static_cast<double>(rng.below(15)) / 100;
    dns_servfail = static_cast<double>(rng.below(15)) / 100;
  }
  const std::int64_t base = static_cast<std::int64_t>(rng.between(1, 30)) * 1000;
  retry_delays_ms = {base, base * 2, base * 4, base * 8};
  lifetime_ms = static_cast<std::int64_t>(rng.between(60, 1800)) * 1000;
  connections_max = static_cast<std::uint32_t>(rng.between(1, 4));
  operator_mean_ns = static_cast<std::int64_t>(rng.between(2, 60)) * 1000 * ms_ns;
  note(fmt::format("outbound: net<{}us dns timeout {} servfail {} domains {},{},{},{} retry {}s "
                   "lifetime {}s connections {}", net_ns_max / 1000, dns_timeout, dns_servfail,
                   domain_mode[0], domain_mode[1], domain_mode[2], domain_mode[3], base / 1000,
                   lifetime_ms / 1000, connections_max));
  reset_process();
}

struct outbound::state::process_glue final : ringmta::outbound::delivery_handler {
  explicit process_glue(state& owner) : s(owner) {
    sim_network network;
    network.connect = [this](const core::endpoint& address) { return s.connect_remote(address); };
    network.datagram = [this](const core::endpoint&, std::string_view query) {
      return s.dns_datagram(query);
    };
    host = std::make_unique<sim_host>(s.w.clock(), s.rng.next(), std::move(network),
                                      s.net_ns_max, epoch_seconds * 1000);
    ringmta::outbound::dns_client_config dns_config;
    dns_config.resolver.servers = {
        dns::server_address{dns::ip_address::v4(192, 0, 2, 53), 53},
        dns::server_address{dns::ip_address::v4(192, 0, 2, 54), 53}};
    dns_config.resolver.timeout_ms = 2000;
    dns_config.resolver.attempts = 2;
    dns_config.resolver.ipv6 = false;
    dns_config.random = dns::seeded_random(s.rng.next());
    ringmta::outbound::outbound_config config;
    config.helo_name = std::string(our_name);
    config.pipelining = s.rng.chance(0.8);
    config.chunking = s.rng.chance(0.7);
    config.ipv6 = false;
    config.connections_max = 64;
    // Every phase waits client_timeout_ns (the RFC's minutes would only slow the run).
    const auto timeout_ms = static_cast<std::uint32_t>(client_timeout_ns / ms_ns);
    config.timeout_connect_ms = config.timeout_greeting_ms = config.timeout_hello_ms =
        config.timeout_mail_ms = config.timeout_rcpt_ms = config.timeout_data_init_ms =
            config.timeout_data_block_ms = config.timeout_data_end_ms = config.timeout_quit_ms =
                timeout_ms;
    config.idle_timeout_ms = timeout_ms;
    config.transfer = ringmta::outbound::body_transfer::copy;  // no pipes in sim_host
    config.tls_context = simulated_client_context();
    config.receive_buffer_count = 64;
    dns = std::make_unique<ringmta::outbound::dns_client>(*host, dns_config);
    out = std::make_unique<ringmta::outbound::outbound>(*host, *dns, *this, config);
    if (auto started = dns->start(); !started) {
      s.w.fail(fmt::format("dns_client::start on the simulated host: {}", started.error_text()));
    }
    if (auto started = out->start(); !started) {
      s.w.fail(fmt::format("outbound::start on the simulated host: {}", started.error_text()));
    }
  }
  ~process_glue() {
    out->stop();
    dns->stop();
    out.reset();
    dns.reset();
  }

  void on_ready(ringmta::outbound::connection_handle, std::uint64_t number) noexcept override {
    s.on_ready(number);
  }
  void on_recipient_result(ringmta::outbound::connection_handle, std::uint64_t number,
                           const ringmta::outbound::recipient_result& result) noexcept override {
    s.on_recipient_result(number, result);
  }
  void on_delivery_done(ringmta::outbound::connection_handle, std::uint64_t number,
                        const ringmta::outbound::delivery_result& result) noexcept override {
    s.on_delivery_done(number, result);
  }
  void on_closed(ringmta::outbound::connection_handle, std::uint64_t number,
                 const ringmta::outbound::close_result& result) noexcept override {
    s.on_closed(number, result);
  }

  state& s;
  std::unique_ptr<sim_host> host;
  std::unique_ptr<ringmta::outbound::dns_client> dns;
  std::unique_ptr<ringmta::outbound::outbound> out;
};

void outbound::state::reset_process() {
  ++process;
  queue::scheduler_config config;
  config.limits.connections_max = connections_max;
  config.limits.messages_per_connection_max = static_cast<std::uint32_t>(rng.between(1, 20));
  config.limits.recipients_per_transaction_max = static_cast<std::uint32_t>(rng.between(1, 3));
  config.retry_delays_ms = retry_delays_ms;
  config.lifetime_max_ms = lifetime_ms;
  config.delay_warning_ms = 0;
  config.random_seed = rng.next() | 1;
  scheduler = std::make_unique<queue::scheduler>(config);
  // The old process's glue goes first (its sockets close on its own host), then its
  // connections; actions its host still had queued do nothing (sim_host.h).
  glue.reset();
  connections.clear();
  glue = std::make_unique<process_glue>(*this);
  messages.clear();
  open_count.clear();
  dsns.clear();
  dsn_tickets.clear();
  mark_retry.clear();
  suspended.clear();
  wakeup_ns = -1;
  if (!w.healed()) {
    later(static_cast<std::int64_t>(rng.between(1, 2) * operator_mean_ns),
          [this] { operator_tick(); });
  }
}

// ---- the queue

void outbound::state::add_jobs(spool::message_id id, const std::vector<bool>& live) {
  const message_data& m = messages.at(id);
  std::map<std::string, std::vector<std::uint16_t>> by_domain;
  for (std::size_t r = 0; r < m.recipients.size(); ++r) {
    if (live[r]) by_domain[domain_of(m.recipients[r])].push_back(static_cast<std::uint16_t>(r));
  }
  for (const auto& [domain, indices] : by_domain) {
    queue::job_spec spec;
    spec.message = id;
    spec.received_seconds = m.received_seconds;
    spec.recipients = indices;
    const auto added = scheduler->add(domain, spec, now_ms(), queue::admission::forced);
    if (added.status != queue::add_status::added) {
      w.fail(fmt::format("scheduler refused a forced add of {:016x} for {}", id, domain));
    }
  }
  rearm();
}

void outbound::state::rearm() {
  const std::int64_t at_ms = scheduler->next_wakeup_ms();
  if (at_ms == queue::no_wakeup_ms) return;
  const std::int64_t at_ns = std::max(now_ns(), (at_ms - epoch_seconds * 1000) * ms_ns);
  if (wakeup_ns >= 0 && wakeup_ns <= at_ns) return;
  wakeup_ns = at_ns;
  later(at_ns - now_ns(), [this, at_ns] {
    if (wakeup_ns == at_ns) wakeup_ns = -1;
    wake();
  });
}

void outbound::state::wake() {
  std::vector<queue::connect_request> requests;
  scheduler->poll(now_ms(), requests);
  for (const auto& request : requests) open(request);
  drain_events();
  rearm();
}

void outbound::state::drain_events() {
  queue::job_event event;
  while (scheduler->next_event(event)) {
    if (event.kind != queue::event_kind::expired &&
        event.kind != queue::event_kind::bounced_by_operator) {
      continue;
    }
    std::vector<std::uint16_t> indices;
    event.job.for_each_recipient([&](std::uint16_t r) { indices.push_back(r); });
    const std::string why = event.kind == queue::event_kind::expired
                                ? "expired: " + std::string(event.job.last_error)
                                : std::string("bounced by the operator");
    note(fmt::format("msg {:016x} {} at {}", event.job.message, why, domain_of(
        messages.count(event.job.message) ? messages.at(event.job.message).recipients.at(
            indices.at(0)) : std::string("?"))));
    bounce(event.job.message, indices, std::vector<std::string>(indices.size(), why));
  }
}

// A final failure: a DSN when one is due (made durable before the recipient is marked
// bounced, so a crash in between bounces again rather than losing the DSN), else the mark.
void outbound::state::bounce(spool::message_id id, const std::vector<std::uint16_t>& indices,
                             const std::vector<std::string>& diagnostics) {
  const message_data& m = messages.at(id);
  if (m.dsn) dsn_refused.insert(id);  // a DSN is never bounced with another (RFC 3464 §4)
  pending_dsn d;
  d.original = id;
  const glue_bug bug = w.settings().glue;
  for (std::size_t k = 0; k < indices.size(); ++k) {
    ++w.counters().bounces;
    if (bug == glue_bug::bounce_without_dsn) {
      final_mark(id, indices[k], spool::recipient_state::bounced);
      continue;
    }
    if (!queue::should_send_dsn(m.reverse_path, m.notify.at(indices[k]),
                                queue::dsn_action::failed)) {
      note(fmt::format("msg {:016x}/{} bounced, no DSN due (sender <{}>)", id, indices[k],
                       m.reverse_path));
      no_dsn_due.insert({id, indices[k]});
      final_mark(id, indices[k], spool::recipient_state::bounced);
      continue;
    }
    if (bug == glue_bug::mark_before_dsn) {
      final_mark(id, indices[k], spool::recipient_state::bounced);
    }
    d.recipients.push_back(indices[k]);
    d.diagnostics.push_back(diagnostics.at(k));
  }
  if (d.recipients.empty()) return;
  dsns.push_back(std::move(d));
  pump_dsns();
}

void outbound::state::final_mark(spool::message_id id, std::uint16_t index,
                                 spool::recipient_state state) {
  if (!w.mark(id, index, state)) mark_retry.emplace_back(id, index, state);
}

void outbound::state::retry_marks() {
  auto waiting = std::move(mark_retry);
  mark_retry.clear();
  for (const auto& [id, index, state] : waiting) final_mark(id, index, state);
}

// ---- DSNs: built by queue::build_dsn, committed to the spool as messages from <>

bool outbound::state::start_dsn(pending_dsn& d) {
  spool::store* store = w.store_or_null();
  auto handle = store->begin(w.wall_seconds());
  if (!handle) return false;
  d.begun = true;
  d.handle = handle.value();
  d.id = store->id_of(d.handle);
  const message_data& m = messages.at(d.original);
  spool::envelope original;
  original.id = d.original;
  original.reverse_path = m.reverse_path;
  original.received_seconds = m.received_seconds;
  for (std::size_t r = 0; r < m.recipients.size(); ++r) {
    original.recipients.push_back(spool::recipient{m.recipients[r], m.notify[r], {}});
  }
  std::vector<queue::dsn_recipient> recipients;
  for (std::size_t k = 0; k < d.recipients.size(); ++k) {
    queue::dsn_recipient r;
    r.address = m.recipients.at(d.recipients[k]);
    r.diagnostic = d.diagnostics[k];
    r.last_attempt_seconds = w.wall_seconds();
    recipients.push_back(r);
  }
  const std::string_view pieces[] = {m.body_wire};
  queue::dsn_request request;
  request.reporting_mta = our_name;
  request.original = &original;
  request.recipients = recipients;
  request.original_body = pieces;
  request.original_body_bytes = m.body_wire.size();
  request.dsn_id = d.id;
  request.now_seconds = w.wall_seconds();
  d.wire.clear();
  auto built = queue::build_dsn(request, d.wire);
  if (!built) {
    w.fail(fmt::format("build_dsn for {:016x}: {}", d.original, std::strerror(built.error())));
    return false;
  }
  if (d.wire.size() < 2 || d.wire.substr(d.wire.size() - 2) != "\r\n") d.wire.append("\r\n");
  d.offset = 0;
  d.envelope = {};
  d.envelope.id = d.id;
  d.envelope.recipients.push_back(spool::recipient{m.reverse_path, 0, {}});
  d.envelope.received_seconds = w.wall_seconds();
  return true;
}

void outbound::state::pump_dsns() {
  spool::store* store = w.store_or_null();
  if (store == nullptr) return;
  for (std::size_t i = 0; i < dsns.size(); ++i) {
    pending_dsn& d = dsns[i];
    if (d.ticket != 0) continue;
    if (!d.begun && !start_dsn(d)) return;
    while (d.offset < d.wire.size()) {
      auto taken = store->append(d.handle, std::string_view(d.wire).substr(d.offset));
      if (!taken) {  // the message failed: start over
        store->abort(d.handle);
        d.begun = false;
        return;
      }
      if (taken.value() == 0) return;  // buffers full: after the next completion
      d.offset += taken.value();
    }
    auto committed = store->commit(d.handle, d.envelope);
    if (!committed && committed.error() == EAGAIN) return;
    if (!committed) {
      d.begun = false;
      return;
    }
    d.ticket = committed.value();
    dsn_tickets[d.ticket] = i;
    // Known to the world from now on: a crash before the ticket is reported may still find it
    // recovered (then adopted, like a client's message whose 250 never went out).
    w.expect(d.id, expected_dsn(d, fate::in_flight));
    note(fmt::format("dsn {:016x} for msg {:016x} committing (ticket {})", d.id, d.original,
                     d.ticket));
  }
}

// ---- DNS: a simulated server answering with ldns-built packets

std::vector<std::uint8_t> outbound::state::dns_reply(std::uint16_t id, const std::string& name,
                                                     dns::record_type type, bool& drop) {
  drop = false;
  const bool healed = w.healed();
  if (!healed && rng.chance(dns_timeout)) {
    drop = true;
    return {};
  }
  ldns_pkt_rcode rcode = LDNS_RCODE_NOERROR;
  std::vector<std::string> answer;
  int domain = -1;
  for (std::uint32_t d = 0; d < domain_count; ++d) {
    const std::string zone = d < 3 ? fmt::format("rcpt{}.example", d) : "sender.example";
    if (name == zone || (name.size() > zone.size() &&
                         name.compare(name.size() - zone.size() - 1, std::string::npos,
                                      "." + zone) == 0)) {
      domain = static_cast<int>(d);
    }
  }
  const std::uint64_t ttl = rng.below(300);  // changing TTLs: the cache expires at random
  if (!healed && rng.chance(dns_servfail)) {
    rcode = LDNS_RCODE_SERVFAIL;
  } else if (domain < 0 || domain_mode[domain] == 3) {
    rcode = LDNS_RCODE_NXDOMAIN;
  } else {
    const int mode = domain_mode[domain];
    const bool apex = name.find('.') == name.rfind('.') || name.rfind("rcpt", 0) == 0 ||
                      name.rfind("sender", 0) == 0;
    if (type == dns::record_type::mx && apex) {
      if (mode == 0) {
        answer.push_back(fmt::format("{}. {} IN MX 10 mx1.{}.", name, ttl, name));
        answer.push_back(fmt::format("{}. {} IN MX 20 mx2.{}.", name, ttl, name));
      } else if (mode == 2) {
        answer.push_back(fmt::format("{}. {} IN MX 0 .", name, ttl));
      }
    } else if (type == dns::record_type::a) {
      // mx1/mx2 have addresses; the apex only for an implicit MX (mode 1): host 1's.
      const int host = name.rfind("mx1.", 0) == 0 ? 0 : name.rfind("mx2.", 0) == 0 ? 1
                       : (apex && mode == 1) ? 0 : -1;
      if (host >= 0) {
        answer.push_back(fmt::format("{}. {} IN A 198.51.100.{}", name, ttl,
                                     domain * 2 + host + 1));
      }
    }
  }
  return encode_reply(id, name, type, rcode, answer, ttl);
}

// A query from the real dns_client, as the simulated server at 192.0.2.53/54 sees it.
std::vector<std::string> outbound::state::dns_datagram(std::string_view query) {
  ++w.counters().dns_queries;
  std::uint16_t id = 0;
  std::string name;
  dns::record_type type{};
  if (!decode_query(reinterpret_cast<const std::uint8_t*>(query.data()), query.size(), id, name,
                    type)) {
    w.fail("the resolver sent a query ldns cannot decode");
    return {};
  }
  bool drop = false;
  auto reply = dns_reply(id, name, type, drop);
  note(fmt::format("dns {} {}: {}", name, dns::record_type_name(type),
                   drop ? "no answer" : fmt::format("{} bytes", reply.size())));
  if (drop) return {};
  return {std::string(reply.begin(), reply.end())};
}

// ---- connections

void outbound::state::check_limit(const connection& c) {
  queue::destination_info info;
  if (!scheduler->inspect(c.destination, info)) return;
  const std::uint32_t open = open_count[c.destination_name];
  if (open > info.limits.connections_max) {
    w.fail(fmt::format("CONNECTION LIMIT: {} connections open to {} (limit {})", open,
                       c.destination_name, info.limits.connections_max));
  }
}

void outbound::state::open(const queue::connect_request& request) {
  auto owned = std::make_unique<connection>();
  connection& c = *owned;
  c.number = next_connection++;
  c.id = request.connection;
  c.destination = request.destination;
  c.destination_name.assign(request.name);
  connections.emplace(c.number, std::move(owned));
  ++open_count[c.destination_name];
  ++w.counters().outbound_connections;
  check_limit(c);
  note(fmt::format("oc{} opens for {}{}", c.number, c.destination_name,
                   request.probe ? " (probe)" : ""));
  ringmta::outbound::route where;
  where.kind = ringmta::outbound::route_kind::mx;
  where.name = c.destination_name;
  where.tls = ringmta::outbound::tls_policy::opportunistic;
  auto opened = glue->out->open_connection(c.number, where);
  if (!opened) {
    w.fail(fmt::format("outbound::open_connection refused oc{}: {}", c.number,
                       opened.error_text()));
    return;
  }
  c.handle = opened.value();
  glue->host->wake();  // outside the host's callbacks: its loop picks the work up
}

// The simulated network's side of a connect to 198.51.100.N: remote host N-1, or a refusal.
std::unique_ptr<stream_peer> outbound::state::connect_remote(const core::endpoint& address) {
  const auto* in = reinterpret_cast<const sockaddr_in*>(address.sockaddr_pointer());
  const std::size_t index = (ntohl(in->sin_addr.s_addr) & 0xff) - 1u;
  if (address.family() != AF_INET || index >= hosts.size()) return nullptr;
  remote_host& remote = hosts[index];
  if (!w.healed() && rng.chance(remote.refuse)) {
    note(fmt::format("{} refuses a connection", remote.name));
    return nullptr;
  }
  const bool tls_broken = !w.healed() && rng.chance(remote.tls_broken);
  return std::make_unique<remote_peer>(*this, remote, next_remote_connection++, tls_broken);
}

void outbound::state::remote_peer::on_connected(sim_host& host, int fd) {
  s.note(fmt::format("{} accepts connection r{}", remote.name, number));
  if (!s.w.healed() && s.rng.chance(remote.greet_reject)) {
    server->start_refusing("busy");
  } else {
    server->start();
  }
  flush(host, fd);
}

void outbound::state::remote_peer::on_bytes(sim_host& host, int fd, std::string_view bytes) {
  if (server == nullptr || stalled) return;
  if (!s.w.healed() && s.rng.chance(remote.drop)) {
    s.note(fmt::format("r{} dropped by {}", number, remote.name));
    hang_up(host, fd);
    return;
  }
  if (!s.w.healed() && s.rng.chance(remote.stall)) {
    s.note(fmt::format("r{} {} stalls", number, remote.name));
    stalled = true;
    return;
  }
  const bool was_encrypted = server->tls_active();
  std::string out;
  const bool open = pipe->feed(bytes, out);
  if (!out.empty()) host.peer_send(fd, out);
  if (server->tls_active() && !was_encrypted) {
    ++s.w.counters().tls_sessions;
    s.note(fmt::format("r{} TLS established", number));
  }
  if (!open) {
    if (!server->tls_active()) ++s.w.counters().tls_broken;
    s.note(fmt::format("r{} TLS ends the connection ({})", number,
                       server->tls_active() ? "closed" : "handshake failed"));
  }
  if (!open || server->wants_close()) hang_up(host, fd);
}

void outbound::state::remote_peer::flush(sim_host& host, int fd) {
  std::string out;
  pipe->flush(out);
  if (!out.empty()) host.peer_send(fd, out);
}

// The connection could not be used: the destination backs off (RFC 5321 §4.5.4.1).
void outbound::state::give_up(connection& c, const queue::failure& why) {
  note(fmt::format("oc{} failed: {}", c.number, why.text));
  scheduler->connection_failed(c.id, now_ms(), why);
  drain_events();
  --open_count[c.destination_name];
  connections.erase(c.number);
  rearm();
}

void outbound::state::close(connection& c) {
  note(fmt::format("oc{} closed", c.number));
  if (w.settings().glue != glue_bug::leak_connection) {
    scheduler->connection_closed(c.id, now_ms());
  }
  drain_events();
  --open_count[c.destination_name];
  connections.erase(c.number);
  rearm();
}

void outbound::state::on_ready(std::uint64_t number) {
  connection* c = find(number);
  if (c == nullptr) return;
  take_next(*c);
}

void outbound::state::on_recipient_result(std::uint64_t number,
                                          const ringmta::outbound::recipient_result& result) {
  connection* c = find(number);
  if (c == nullptr || !c->has_job) return;
  c->outcomes.at(result.recipient_index) = result.outcome;
  c->texts.at(result.recipient_index) =
      fmt::format("{} {}", result.reply->code, result.reply->text());
}

void outbound::state::on_delivery_done(std::uint64_t number,
                                       const ringmta::outbound::delivery_result& result) {
  connection* c = find(number);
  if (c == nullptr || !c->has_job) return;
  glue->host->close(c->slice.fd);
  finish_job(*c, result.outcome, fmt::format("{} {}", result.reply->code, result.reply->text()));
}

void outbound::state::on_closed(std::uint64_t number,
                                const ringmta::outbound::close_result& result) {
  connection* c = find(number);
  if (c == nullptr) return;
  note(fmt::format("oc{} session closed: {} ({} addresses tried): {} {}", c->number,
                   ringmta::outbound::describe(result.reason), result.addresses_tried,
                   result.reply->code, result.reply->text()));
  if (c->has_job) {  // delivery.h: never (the delivery's result comes first)
    w.fail(fmt::format("oc{} closed with a delivery in flight and no result", c->number));
    return;
  }
  if (result.reason == ringmta::outbound::close_reason::destination_failed) {
    return fail_destination(*c, result);
  }
  close(*c);
}

// No server could be used: DNS failed, or every address refused, failed or answered 4xx/5xx.
// Permanent (NXDOMAIN, null MX, every server 5xx): every job of the destination bounces.
void outbound::state::fail_destination(connection& c,
                                       const ringmta::outbound::close_result& result) {
  const auto& enhanced = result.reply->enhanced;
  const queue::status_code status =
      enhanced.present()
          ? queue::status_code{enhanced.status_class, enhanced.subject, enhanced.detail}
          : queue::status_code{4, 4, 1};
  const std::string text(result.reply->text());
  const queue::failure why{result.reply->code, status, text};
  if (result.failure != smtp::client_outcome::permanent_failure) return give_up(c, why);
  for (;;) {
    const auto taken = scheduler->take_for_connection(c.id, now_ms());
    if (taken.status != queue::take_status::job) break;
    std::vector<std::uint16_t> indices;
    taken.job.for_each_recipient([&](std::uint16_t r) { indices.push_back(r); });
    const spool::message_id id = taken.job.message;
    scheduler->failed(taken.job.id, now_ms(), why);
    note(fmt::format("msg {:016x} fails at {}: {}", id, c.destination_name, text));
    bounce(id, indices, std::vector<std::string>(indices.size(), text));
  }
  close(c);
}

void outbound::state::take_next(connection& c) {
  const auto taken = scheduler->take_for_connection(c.id, now_ms());
  drain_events();
  if (taken.status == queue::take_status::job) return start_job(c, taken.job);
  if (taken.status == queue::take_status::throttled) {
    later(std::max<std::int64_t>(0, taken.retry_at_ms - now_ms()) * ms_ns,
          [this, number = c.number] {
            connection* c = find(number);
            if (c == nullptr || c->has_job || !glue->out->can_deliver(c->handle)) return;
            take_next(*c);
            glue->host->wake();
          });
    return;
  }
  glue->out->release(c.handle);
}

void outbound::state::start_job(connection& c, const queue::job_view& job) {
  const auto found = messages.find(job.message);
  if (found == messages.end()) {
    w.fail(fmt::format("the scheduler handed out {:016x}, unknown to the delivery side",
                       job.message));
    return;
  }
  const message_data& m = found->second;
  c.took_job = true;
  c.has_job = true;
  c.job = job;
  c.job.last_error = {};
  c.indices.clear();
  job.for_each_recipient([&](std::uint16_t r) { c.indices.push_back(r); });
  c.recipients.clear();
  for (const auto r : c.indices) {
    c.recipients.push_back(smtp::client_recipient{m.recipients.at(r), {}, {}, {}});
  }
  c.outcomes.assign(c.indices.size(), smtp::client_outcome::transient_failure);
  c.texts.assign(c.indices.size(), {});
  c.reverse_path = m.reverse_path;
  // The body as the spool holds it (wire form) in a file of the simulated host.
  c.slice = spool::body_slice{glue->host->add_file(m.body_wire), 0,
                              static_cast<std::uint32_t>(m.body_wire.size())};
  c.delivery = {};
  c.delivery.envelope.reverse_path = c.reverse_path;
  c.delivery.envelope.recipients = c.recipients;
  c.delivery.body = {&c.slice, 1};
  c.delivery.token = job.message;
  note(fmt::format("oc{} sends msg {:016x} to {} recipient(s)", c.number, job.message,
                   c.indices.size()));
  if (auto sent = glue->out->deliver(c.handle, c.delivery); !sent) {
    w.fail(fmt::format("outbound::deliver refused msg {:016x} on oc{}: {}", job.message,
                       c.number, sent.error_text()));
  }
}

void outbound::state::finish_job(connection& c, smtp::client_outcome outcome,
                                 std::string_view text) {
  c.has_job = false;
  const spool::message_id id = c.job.message;
  std::uint64_t keep = 0;
  std::vector<std::uint16_t> failed;
  std::vector<std::string> diagnostics;
  std::string deferral;
  for (std::size_t k = 0; k < c.indices.size(); ++k) {
    const std::uint64_t bit = std::uint64_t{1} << (c.indices[k] - c.job.first_recipient);
    const auto mine = c.outcomes[k];
    if (mine == smtp::client_outcome::accepted && outcome == smtp::client_outcome::accepted) {
      final_mark(id, c.indices[k], spool::recipient_state::delivered);
    } else if (mine == smtp::client_outcome::permanent_failure ||
               (mine == smtp::client_outcome::accepted &&
                outcome == smtp::client_outcome::permanent_failure)) {
      failed.push_back(c.indices[k]);
      diagnostics.push_back(mine == smtp::client_outcome::accepted ? std::string(text)
                                                                   : c.texts[k]);
    } else {
      keep |= bit;
      deferral = mine == smtp::client_outcome::accepted ? std::string(text) : c.texts[k];
    }
  }
  note(fmt::format("oc{} msg {:016x}: {} ({} deferred, {} failed): {}", c.number, id,
                   smtp::describe(outcome), __builtin_popcountll(keep), failed.size(),
                   text.substr(0, 60)));
  if (!failed.empty()) bounce(id, failed, diagnostics);
  if (keep == 0) {
    scheduler->delivered(c.job.id, now_ms());
  } else {
    const auto result = scheduler->deferred(c.job.id, now_ms(),
                                            queue::failure{421, {4, 0, 0}, deferral}, keep);
    if (result.status == queue::defer_status::expired ||
        result.status == queue::defer_status::bounced_by_operator) {
      std::vector<std::uint16_t> kept;
      for (std::size_t k = 0; k < c.indices.size(); ++k) {
        if (keep & (std::uint64_t{1} << (c.indices[k] - c.job.first_recipient))) {
          kept.push_back(c.indices[k]);
        }
      }
      note(fmt::format("msg {:016x} {} after deferral", id,
                       result.status == queue::defer_status::expired ? "expires" : "bounced"));
      bounce(id, kept, std::vector<std::string>(kept.size(), "gave up: " + deferral));
    }
  }
  drain_events();
  rearm();
}

// ---- the remote MTA's answers and its mailboxes

smtp::verdict outbound::state::remote_peer::answer(const char* what) {
  if (s.w.healed()) return smtp::verdict::accept();
  if (s.rng.chance(remote.temporary)) {
    s.note(fmt::format("r{} {} answers {} with 451", number, remote.name, what));
    return smtp::verdict::respond(451, "4.3.0", "try again later");
  }
  if (s.rng.chance(remote.permanent)) {
    s.note(fmt::format("r{} {} answers {} with 554", number, remote.name, what));
    return smtp::verdict::respond(554, "5.7.1", "refused");
  }
  return smtp::verdict::accept();
}

smtp::verdict outbound::state::remote_peer::on_rcpt_to(
    const smtp::mailbox& to, const smtp::rcpt_parameters&) noexcept {
  if (is_bad(to.address)) {
    s.w.fail(fmt::format("REFUSED RECIPIENT: {} was refused 5xx at RCPT by our server but "
                         "reached {} (r{})", to.address, remote.name, number));
  }
  smtp::verdict verdict = answer("RCPT");
  if (verdict.what() == smtp::verdict::kind::accept) recipients.emplace_back(to.address);
  return verdict;
}

smtp::verdict outbound::state::remote_peer::on_data_end(const smtp::body_summary&) noexcept {
  smtp::verdict verdict = answer("end of data");
  if (verdict.what() == smtp::verdict::kind::accept) s.delivered_remotely(*this);
  recipients.clear();
  body.clear();
  return verdict;
}

void outbound::state::delivered_remotely(remote_peer& h) {
  const std::string key = find_key(h.body);
  const bool report = h.reverse_path.empty() &&
                      h.body.find("multipart/report") != std::string::npos;
  for (const auto& rcpt : h.recipients) {
    ++w.counters().remote_deliveries;
    if (report) {
      // Each Final-Recipient of the DSN: bounced and reported to the sender.
      for (std::size_t at = h.body.find("Final-Recipient: rfc822;"); at != std::string::npos;
           at = h.body.find("Final-Recipient: rfc822;", at + 1)) {
        std::size_t from = at + 24;
        while (from < h.body.size() && h.body[from] == ' ') ++from;
        const std::string final_rcpt = h.body.substr(from, h.body.find('\r', from) - from);
        ++dsn_mailbox[{key, final_rcpt}];
        note(fmt::format("{} receives a DSN about {} for {}", h.remote.name, key,
                         final_rcpt));
      }
      continue;
    }
    const auto slot = std::make_pair(key, rcpt);
    if (final_durable.count(slot) != 0) {
      w.fail(fmt::format("DUPLICATE: {} delivered to {} again (oc{}) after its final state was "
                         "durably recorded", key, rcpt, h.number));
    }
    if (mailbox[slot]++ > 0) ++w.counters().duplicates;
    note(fmt::format("{} delivers {} to {} (r{})", h.remote.name, key, rcpt, h.number));
  }
}

// ---- operator actions

void outbound::state::operator_tick() {
  if (w.healed()) return;
  ++w.counters().operator_actions;
  static constexpr std::string_view names[] = {"rcpt0.example", "rcpt1.example",
                                               "rcpt2.example", "sender.example"};
  const std::string_view destination = names[rng.below(4)];
  const std::uint64_t action = rng.below(100);
  const std::int64_t now = now_ms();
  if (action < 25) {
    if (suspended.insert(std::string(destination)).second) {
      scheduler->suspend(destination, now);
      note(fmt::format("operator: suspend {}", destination));
      later(static_cast<std::int64_t>(rng.between(1, 120)) * 1000 * ms_ns,
            [this, name = std::string(destination)] {
              if (suspended.erase(name) == 0) return;
              scheduler->resume(name, now_ms());
              note(fmt::format("operator: resume {}", name));
              rearm();
            });
    }
  } else if (action < 45 && !messages.empty()) {
    auto it = messages.begin();
    std::advance(it, static_cast<long>(rng.below(messages.size())));
    std::set<std::string> domains;
    for (const auto& r : it->second.recipients) domains.insert(domain_of(r));
    for (const auto& domain : domains) {
      const auto result = scheduler->bounce_message(domain, it->first, now);
      if (result.found) {
        note(fmt::format("operator: bounce msg {:016x} at {} ({} now, {} in flight)", it->first,
                         domain, result.jobs, result.in_flight));
      }
    }
  } else if (action < 50) {
    note(fmt::format("operator: bounce all of {} ({} jobs)", destination,
                     scheduler->bounce_all(destination, now)));
  } else if (action < 80) {
    note(fmt::format("operator: flush ({} jobs)", scheduler->flush_all(now)));
  } else {
    // A reload: a new retry schedule and connection limit (queued jobs keep their times).
    queue::scheduler_config next = scheduler->config();
    const std::int64_t base = static_cast<std::int64_t>(rng.between(1, 30)) * 1000;
    next.retry_delays_ms = {base, base * 3, base * 9};
    next.limits.connections_max = static_cast<std::uint32_t>(rng.between(1, 4));
    scheduler->set_policy(next);
    note(fmt::format("operator: reload (retry {}s, connections {})", base / 1000,
                     next.limits.connections_max));
  }
  drain_events();
  rearm();
  later(static_cast<std::int64_t>(rng.between(1, 2 * 1000)) * operator_mean_ns / 1000,
        [this] { operator_tick(); });
}

}  // namespace ringmta::sim::internal

// ---- outbound: the world's view

namespace ringmta::sim::internal {

outbound::outbound(world& owner, std::uint64_t seed)
    : _state(std::make_unique<state>(owner, seed)) {}
outbound::~outbound() = default;

void outbound::enqueue(spool::message_id id, const expected_message& message) {
  state& s = *_state;
  message_data m;
  m.reverse_path = message.reverse_path;
  m.recipients = message.recipients;
  m.notify = message.notify;
  m.notify.resize(m.recipients.size(), 0);
  m.body_wire = message.body_wire;
  m.key = message.key.empty() ? find_key(message.body_wire) : message.key;
  m.received_seconds = s.w.wall_seconds();
  m.dsn = message.reverse_path.empty() && message.key.empty();
  s.ledger.emplace(id, ledger_entry{m.key, m.reverse_path, m.recipients, m.dsn});
  s.messages[id] = std::move(m);
  s.add_jobs(id, std::vector<bool>(message.recipients.size(), true));
}

void outbound::recovered(spool::store& store) {
  state& s = *_state;
  std::vector<spool::message_id> queued;
  store.for_each_message([&](const spool::message_entry& entry) {
    if (entry.status != spool::message_status::final) queued.push_back(entry.id);
  });
  std::sort(queued.begin(), queued.end());  // the index's order is not the seed's
  for (const auto id : queued) {
    auto stored = store.read(id);
    if (!stored) {
      s.w.fail(fmt::format("LOST MAIL: queued message {:016x} unreadable after recovery: {}", id,
                           std::strerror(stored.error())));
      return;
    }
    message_data m;
    const auto& envelope = stored.value().envelope;
    m.reverse_path = envelope.reverse_path;
    for (const auto& r : envelope.recipients) {
      m.recipients.push_back(r.address);
      m.notify.push_back(r.notify);
    }
    for (const auto& slice : stored.value().body) {
      const std::size_t at = m.body_wire.size();
      m.body_wire.resize(at + slice.length);
      if (::pread(slice.fd, m.body_wire.data() + at, slice.length,
                  static_cast<off_t>(slice.offset)) != static_cast<ssize_t>(slice.length)) {
        s.w.fail(fmt::format("message {:016x}: short read of its body", id));
        return;
      }
    }
    m.key = find_key(m.body_wire);
    m.received_seconds = envelope.received_seconds;
    m.dsn = envelope.reverse_path.empty() &&
            m.body_wire.find("multipart/report") != std::string::npos;
    s.ledger.emplace(id, ledger_entry{m.dsn ? std::string() : m.key, m.reverse_path,
                                      m.recipients, m.dsn});
    std::vector<bool> live;
    const spool::message_entry* entry = store.find(id);
    for (const auto& r : entry->recipients) live.push_back(!spool::is_final(r.state));
    s.messages[id] = std::move(m);
    s.add_jobs(id, live);
  }
  s.note(fmt::format("outbound: {} queued message(s) back in the scheduler", queued.size()));
}

void outbound::crash() { _state->reset_process(); }

void outbound::heal() {
  state& s = *_state;
  for (const auto& name : s.suspended) s.scheduler->resume(name, s.now_ms());
  s.suspended.clear();
  s.note(fmt::format("outbound healed: flush ({} jobs)", s.scheduler->flush_all(s.now_ms())));
  s.drain_events();
  s.rearm();
}

bool outbound::owns_ticket(std::uint64_t ticket) const {
  return _state->dsn_tickets.count(ticket) != 0;
}

void outbound::on_committed(const spool::event& event) {
  state& s = *_state;
  const auto found = s.dsn_tickets.find(event.ticket);
  const std::size_t index = found->second;
  s.dsn_tickets.erase(found);
  state::pending_dsn d = std::move(s.dsns.at(index));
  s.dsns.erase(s.dsns.begin() + static_cast<long>(index));
  for (auto& [ticket, at] : s.dsn_tickets) {
    if (at > index) --at;
  }
  s.note(fmt::format("dsn {:016x} for msg {:016x} durable: {}", d.id, d.original, event.error));
  if (event.error != 0) {  // failed: build it again (the world treats it as a 452'd message)
    s.w.expect(d.id, state::expected_dsn(d, fate::failed));
    state::pending_dsn retry;
    retry.original = d.original;
    retry.recipients = std::move(d.recipients);
    retry.diagnostics = std::move(d.diagnostics);
    s.dsns.push_back(std::move(retry));
    return s.pump_dsns();
  }
  ++s.w.counters().dsns;
  const expected_message want = state::expected_dsn(d, fate::acknowledged);
  s.w.expect(d.id, want);
  enqueue(d.id, want);
  for (const auto r : d.recipients) {
    s.dsn_of[{d.original, r}].push_back(d.id);
    if (s.w.settings().glue != glue_bug::mark_before_dsn) {
      s.final_mark(d.original, r, spool::recipient_state::bounced);
    }
  }
  s.pump_dsns();
}

void outbound::on_mark_durable(spool::message_id id, std::uint16_t recipient) {
  const auto found = _state->ledger.find(id);
  if (found == _state->ledger.end() || found->second.dsn) return;
  _state->final_durable.insert({found->second.key, found->second.recipients.at(recipient)});
}

void outbound::on_completions() {
  _state->retry_marks();
  _state->pump_dsns();
}

bool outbound::idle() const { return busy_reason().empty(); }

std::string outbound::busy_reason() const {
  const state& s = *_state;
  const auto stats = s.scheduler->stats();
  if (stats.jobs != 0) {
    return fmt::format("{} job(s) still queued ({} ready, {} scheduled, {} in flight)",
                       stats.jobs, stats.ready, stats.scheduled, stats.in_flight);
  }
  if (!s.connections.empty()) return fmt::format("{} connection(s) open", s.connections.size());
  if (!s.dsns.empty()) return fmt::format("{} DSN(s) not yet durable", s.dsns.size());
  if (!s.mark_retry.empty()) return fmt::format("{} mark(s) not recorded", s.mark_retry.size());
  return {};
}

void outbound::check_final(spool::store& store) {
  state& s = *_state;
  bool queued = false;
  store.for_each_message([&](const spool::message_entry& entry) {
    if (!queued && entry.status != spool::message_status::final) {
      queued = true;
      s.w.fail(fmt::format("LIVENESS: message {:016x} still queued after the queue drained and "
                           "the last restart", entry.id));
    }
  });
  for (const auto& [id, entry] : s.ledger) {
    if (entry.dsn || queued) continue;
    for (std::uint16_t r = 0; r < entry.recipients.size(); ++r) {
      const auto& address = entry.recipients[r];
      if (s.mailbox.count({entry.key, address}) != 0 || s.no_dsn_due.count({id, r}) != 0) {
        continue;
      }
      bool reported = false;
      const auto dsns = s.dsn_of.find({id, r});
      if (dsns != s.dsn_of.end()) {
        reported = s.dsn_mailbox.count({entry.key, address}) != 0;
        for (const auto dsn : dsns->second) reported = reported || s.dsn_refused.count(dsn) != 0;
      }
      if (!reported) {
        s.w.fail(fmt::format("UNDELIVERED: message {:016x} ({}) recipient {} <{}> was neither "
                             "delivered nor bounced with a DSN to <{}>{}", id, entry.key, r,
                             address, entry.reverse_path,
                             dsns == s.dsn_of.end() ? " (no DSN was stored)"
                                                    : " (its DSN never arrived)"));
        return;
      }
    }
  }
}

}  // namespace ringmta::sim::internal
