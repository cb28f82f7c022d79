// The REAL outbound::outbound and outbound::dns_client (src/outbound, unchanged) on a simulated
// host (sim_host.h): DNS over simulated UDP to a server answering with ldns-built packets, SMTP
// over simulated TCP to remote MTAs that are real smtp::server_sessions, bodies read from
// simulated segment files, every wait on the simulated clock. Deterministic by seed.
//
// The world per seed: 4 destinations dest0..dest3.example, each with MX 10 mx1 and MX 20 mx2;
// some mx1 hosts refuse connections or accept and never greet (the attempt plan moves on to
// mx2); every remote MTA offers a seeded set of PIPELINING/CHUNKING/8BITMIME/SIZE. Without
// faults it accepts every command; with faults it answers 451/554 to MAIL, RCPT, DATA and the
// end of data and drops connections at seeded rates, DNS queries are lost (the resolver's
// timeout) or answered SERVFAIL, and dest3.example may not exist (NXDOMAIN). The embedder
// (this file) plays the queue: one delivery per on_ready, transient recipients retried, a new
// connection when one closes with mail left (20 s later on the host's timer wheel after a
// destination failure), a permanently failed destination's mail bounced, release when a
// destination has nothing left.
//
// Checks: every recipient ends delivered exactly once with the message's exact body, or
// bounced and never delivered; every connection closes; the callbacks keep delivery.h's
// order; no simulated socket is left open; a seed replays to the same transcript.
#include <gtest/gtest.h>
#include <fmt/format.h>

#include <deque>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "ringmta/dns/types.h"
#include "ringmta/outbound/dns_client.h"
#include "ringmta/outbound/outbound.h"
#include "ringmta/smtp/server_session.h"
#include "sim_dns.h"
#include "sim_host.h"
#include "sim_random.h"
#include "sim_remote_mta.h"
#include "sim_scheduler.h"

namespace ringmta::sim {
namespace {

constexpr std::uint32_t destination_count = 4;
constexpr int rcode_noerror = 0;
constexpr int rcode_servfail = 2;
constexpr int rcode_nxdomain = 3;
constexpr std::uint64_t actions_max = 2'000'000;

std::string destination_name(std::uint32_t d) { return fmt::format("dest{}.example", d); }

enum class recipient_state : std::uint8_t { pending, delivered, bounced };

// One message as the queue would hold it: the envelope's storage and its body in a "segment".
struct message {
  std::string key;
  std::uint32_t destination = 0;
  std::string reverse_path;
  std::vector<std::string> recipients;
  std::vector<recipient_state> states;
  std::string raw_body;  // CRLF lines, what the remote MTA must see
  spool::body_slice slice;
  // The delivery in flight: its recipients (indexes into `recipients`), their views and the
  // outcome of each one's RCPT.
  std::vector<std::uint32_t> attempt;
  std::vector<smtp::client_recipient> attempt_views;
  std::vector<smtp::client_outcome> attempt_outcomes;
  outbound::delivery job;
};

// Wire form (RFC 5321 §4.5.2): lines starting with "." get another one.
std::string dot_stuff(const std::string& raw) {
  std::string out;
  bool line_start = true;
  for (char c : raw) {
    if (line_start && c == '.') out.push_back('.');
    out.push_back(c);
    line_start = c == '\n';
  }
  return out;
}

// The embedder: plays the queue for the real outbound. A recipient that failed transiently is
// tried again (the message goes to the back of its destination's queue); a destination with
// mail left when its connection closes gets a new connection, at most reopen_max times.
class embedder final : public outbound::delivery_handler {
 public:
  static constexpr std::uint32_t reopen_max = 200;
  // After a destination failed (DNS, every address): wait before the next connection, on the
  // host's timer wheel, as the queue's backoff would (RFC 5321 §4.5.4.1).
  static constexpr std::uint64_t retry_after_failure_ms = 20'000;

  embedder(scheduler& clock, world_record& record, shard::host& host)
      : _clock(clock), _record(record), _host(host) {}
  ~embedder() {
    for (auto& [destination, timer] : _retry) _host.timers().cancel(timer);
  }

  void attach(outbound::outbound& out) { _out = &out; }
  void add(message& m) { _waiting[m.destination].push_back(&m); }
  void set_messages(std::vector<std::unique_ptr<message>>& messages) { _messages = &messages; }

  void open(std::uint32_t destination) {
    _names[destination] = destination_name(destination);
    outbound::route where;
    where.kind = outbound::route_kind::mx;
    where.name = _names[destination];
    where.tls = outbound::tls_policy::none;
    if (auto opened = _out->open_connection(destination, where); opened) {
      ++_opened;
    } else {
      note(fmt::format("dest{} open refused: {}", destination, opened.error_text()));
      ++_open_refused;
    }
  }

  void on_ready(outbound::connection_handle connection,
                std::uint64_t destination) noexcept override {
    auto& queue = _waiting[static_cast<std::uint32_t>(destination)];
    if (queue.empty()) {
      note(fmt::format("dest{} ready, nothing left: release", destination));
      return _out->release(connection);
    }
    message* m = queue.front();
    queue.pop_front();
    m->attempt.clear();
    m->attempt_views.clear();
    for (std::uint32_t i = 0; i < m->recipients.size(); ++i) {
      if (m->states[i] != recipient_state::pending) continue;
      m->attempt.push_back(i);
      smtp::client_recipient view;
      view.address = m->recipients[i];
      m->attempt_views.push_back(view);
    }
    m->attempt_outcomes.assign(m->attempt.size(), smtp::client_outcome::transient_failure);
    m->job.envelope.recipients = m->attempt_views;
    note(fmt::format("dest{} ready: deliver {} to {} recipients", destination, m->key,
                     m->attempt.size()));
    if (auto sent = _out->deliver(connection, m->job); !sent) {
      note(fmt::format("deliver {} refused: {}", m->key, sent.error_text()));
      ++_deliver_refused;
      queue.push_front(m);
      return _out->release(connection);
    }
    _in_flight[connection.slot] = m;
  }
  void on_recipient_result(outbound::connection_handle, std::uint64_t,
                           const outbound::recipient_result& result) noexcept override {
    message& m = *(*_messages)[result.token];
    note(fmt::format("  rcpt {} of {}: {} {}", result.recipient_index, m.key,
                     smtp::describe(result.outcome), result.reply->code));
    if (result.recipient_index < m.attempt_outcomes.size()) {
      m.attempt_outcomes[result.recipient_index] = result.outcome;
    } else {
      ++_bad_results;
    }
  }
  void on_delivery_done(outbound::connection_handle connection, std::uint64_t destination,
                        const outbound::delivery_result& result) noexcept override {
    message& m = *(*_messages)[result.token];
    note(fmt::format("dest{} delivery of {}: {} {}", destination, m.key,
                     smtp::describe(result.outcome), result.reply->code));
    _in_flight.erase(connection.slot);
    bool retry = false;
    for (std::size_t a = 0; a < m.attempt.size(); ++a) {
      recipient_state& state = m.states[m.attempt[a]];
      smtp::client_outcome outcome = m.attempt_outcomes[a];
      // RFC 5321 §3.3: an accepted RCPT shares the fate of the message.
      if (outcome == smtp::client_outcome::accepted) outcome = result.outcome;
      if (outcome == smtp::client_outcome::accepted) {
        state = recipient_state::delivered;
      } else if (outcome == smtp::client_outcome::permanent_failure) {
        state = recipient_state::bounced;
      } else {
        retry = true;  // transient, or no_recipients for an accepted RCPT: cannot happen
      }
    }
    if (retry) _waiting[m.destination].push_back(&m);
  }
  void on_closed(outbound::connection_handle connection, std::uint64_t destination,
                 const outbound::close_result& result) noexcept override {
    note(fmt::format("dest{} closed: {} after {} deliveries, {} addresses tried", destination,
                     outbound::describe(result.reason), result.deliveries,
                     result.addresses_tried));
    ++_closed;
    _reasons.insert(std::string(outbound::describe(result.reason)));
    if (const auto found = _in_flight.find(connection.slot); found != _in_flight.end()) {
      ++_closed_in_flight;  // on_closed before on_delivery_done: delivery.h says never
      _waiting[found->second->destination].push_back(found->second);
      _in_flight.erase(found);
    }
    const auto d = static_cast<std::uint32_t>(destination);
    if (result.reason == outbound::close_reason::destination_failed &&
        result.failure == smtp::client_outcome::permanent_failure) {
      return bounce_destination(d, result);  // NXDOMAIN, null MX, every server said 5xx
    }
    if (_waiting[d].empty() || result.reason == outbound::close_reason::shutdown) return;
    if (_reopened[d]++ >= reopen_max) {
      note(fmt::format("dest{} given up", destination));
      return;
    }
    if (result.reason != outbound::close_reason::destination_failed) return open(d);
    retry_timer& timer = _retry[d];
    timer.owner = this;
    timer.destination = d;
    _host.timers().schedule_after(timer, retry_after_failure_ms);
  }

  // No connection open or waiting to be opened.
  bool idle() const {
    if (_closed != _opened) return false;
    for (const auto& [destination, timer] : _retry) {
      if (timer.armed()) return false;
    }
    return true;
  }

  std::uint32_t bounced_destinations() const { return _bounced_destinations; }
  std::uint32_t opened() const { return _opened; }
  std::uint32_t closed() const { return _closed; }
  std::uint32_t deliver_refused() const { return _deliver_refused + _open_refused; }
  std::uint32_t protocol_breaches() const { return _bad_results + _closed_in_flight; }
  const std::set<std::string>& reasons() const { return _reasons; }

 private:
  struct retry_timer : core::timer_node {
    retry_timer() noexcept : core::timer_node(&fire) {}
    static void fire(core::timer_node& node) noexcept {
      auto& self = static_cast<retry_timer&>(node);
      self.owner->open(self.destination);
    }
    embedder* owner = nullptr;
    std::uint32_t destination = 0;
  };

  void bounce_destination(std::uint32_t d, const outbound::close_result& result) {
    note(fmt::format("dest{} fails for good: {}", d, result.reply->code));
    ++_bounced_destinations;
    for (message* m : _waiting[d]) {
      for (recipient_state& state : m->states) {
        if (state == recipient_state::pending) state = recipient_state::bounced;
      }
    }
    _waiting[d].clear();
  }

  void note(const std::string& text) {
    _record.transcript += fmt::format("{:>12} {}\n", _clock.now_ns() / 1000, text);
  }

  scheduler& _clock;
  world_record& _record;
  shard::host& _host;
  std::map<std::uint32_t, retry_timer> _retry;
  std::uint32_t _bounced_destinations = 0;
  outbound::outbound* _out = nullptr;
  std::vector<std::unique_ptr<message>>* _messages = nullptr;
  std::map<std::uint32_t, std::deque<message*>> _waiting;
  std::map<std::uint32_t, message*> _in_flight;  // by connection slot
  std::map<std::uint32_t, std::string> _names;
  std::map<std::uint32_t, std::uint32_t> _reopened;
  std::uint32_t _opened = 0;
  std::uint32_t _closed = 0;
  std::uint32_t _deliver_refused = 0;
  std::uint32_t _open_refused = 0;
  std::uint32_t _bad_results = 0;
  std::uint32_t _closed_in_flight = 0;
  std::set<std::string> _reasons;
};

struct run_result {
  world_record record;
  std::vector<std::unique_ptr<message>> messages;
  std::uint32_t connections = 0;  // opened (destinations, plus reopened ones)
  std::uint32_t destinations = 0;
  std::uint32_t closed = 0;
  std::uint32_t deliver_refused = 0;
  std::uint32_t protocol_breaches = 0;
  std::set<std::string> close_reasons;
  std::size_t sockets_open_when_done = 0;  // before stop(): the resolver's UDP socket only
  std::size_t sockets_left_destroyed = 0;
  bool finished = false;
  sim_host_counters host;
  outbound::outbound_counters out;
  std::uint64_t refusals_expected = 0;  // destinations with mail whose mx1 refuses
  std::uint64_t stalls_expected = 0;    // destinations with mail whose mx1 stalls
  std::int64_t simulated_ns = 0;  // when the last connection closed
  bool dest3_missing = false;      // NXDOMAIN for dest3.example
  std::uint32_t bounced_destinations = 0;
};

// A remote MTA as a seed plans it.
struct host_plan {
  std::string name;
  smtp::extension_set extensions;
  bool refuses = false;
  bool stalls = false;
};

// What a seed decides before anything runs.
struct world_plan {
  std::int64_t net_ns_max = 0;
  fault_rates faults;
  // DNS faults (with_faults only): queries lost (the resolver's timeout and retry on the
  // timer wheel), SERVFAIL, and dest3.example not existing (NXDOMAIN: its mail bounces).
  double dns_lost = 0;
  double dns_servfail = 0;
  bool dest3_missing = false;
  std::map<std::string, host_plan> hosts_by_address;  // mx1/mx2 of d at 198.51.100.(2d+h)
};

std::string remote_address(std::uint32_t destination, std::uint32_t host) {
  return fmt::format("198.51.100.{}:25", 2 * destination + host);
}

world_plan plan_world(random& rng, bool with_faults) {
  world_plan plan;
  plan.net_ns_max = static_cast<std::int64_t>(rng.between(100'000, 20'000'000));
  if (with_faults) {
    plan.faults.temporary = static_cast<double>(rng.below(10)) / 100;
    plan.faults.permanent = static_cast<double>(rng.below(4)) / 100;
    plan.faults.drop = static_cast<double>(rng.below(5)) / 100;
    plan.dns_lost = static_cast<double>(rng.below(15)) / 100;
    plan.dns_servfail = static_cast<double>(rng.below(15)) / 100;
    plan.dest3_missing = rng.chance(0.3);
  }
  for (std::uint32_t d = 0; d < destination_count; ++d) {
    for (std::uint32_t h = 1; h <= 2; ++h) {
      host_plan host;
      host.name = fmt::format("mx{}.{}", h, destination_name(d));
      host.extensions.pipelining = rng.chance(0.7);
      host.extensions.chunking = rng.chance(0.5);
      host.extensions.eight_bit_mime = rng.chance(0.7);
      host.extensions.size = rng.chance(0.7);
      host.refuses = h == 1 && rng.chance(0.3);
      host.stalls = h == 1 && rng.chance(0.2) && !host.refuses;
      plan.hosts_by_address[remote_address(d, h)] = host;
    }
  }
  return plan;
}

// The records of the zone: dest<d>.example MX 10 mx1, MX 20 mx2; mx<h> A 198.51.100.(2d+h).
int zone_answer(const world_plan& plan, const std::string& name, dns::record_type type,
                std::vector<std::string>& answer) {
  int rcode = rcode_nxdomain;
  for (std::uint32_t d = 0; d < destination_count; ++d) {
    if (d == 3 && plan.dest3_missing) continue;
    const std::string zone = destination_name(d);
    if (name == zone) {
      rcode = rcode_noerror;
      if (type == dns::record_type::mx) {
        answer.push_back(fmt::format("{}. 300 IN MX 10 mx1.{}.", zone, zone));
        answer.push_back(fmt::format("{}. 300 IN MX 20 mx2.{}.", zone, zone));
      }
    }
    for (std::uint32_t h = 1; h <= 2; ++h) {
      if (name != fmt::format("mx{}.{}", h, zone)) continue;
      rcode = rcode_noerror;
      if (type == dns::record_type::a) {
        answer.push_back(fmt::format("{}. 300 IN A 198.51.100.{}", name, 2 * d + h));
      }
    }
  }
  return rcode;
}

// The simulated DNS server: the datagrams it sends back for one query (none: lost).
std::vector<std::string> serve_dns(const world_plan& plan, random& fault_rng,
                                   world_record& record, std::string_view bytes) {
  std::uint16_t id = 0;
  std::string name;
  dns::record_type type{};
  std::vector<std::string> replies;
  if (!decode_query(reinterpret_cast<const std::uint8_t*>(bytes.data()), bytes.size(), id, name,
                    type)) {
    return replies;
  }
  if (fault_rng.chance(plan.dns_lost)) {
    record.transcript += fmt::format("dns {:04x} {}: lost\n", id, name);
    return replies;
  }
  if (fault_rng.chance(plan.dns_servfail)) {
    record.transcript += fmt::format("dns {:04x} {}: SERVFAIL\n", id, name);
    const auto reply = encode_reply(id, name, type, rcode_servfail, {}, 0);
    replies.emplace_back(reply.begin(), reply.end());
    return replies;
  }
  std::vector<std::string> answer;
  const int rcode = zone_answer(plan, name, type, answer);
  record.transcript += fmt::format("dns {:04x} {} {}: {} answers\n", id, name,
                                   dns::record_type_name(type), answer.size());
  const auto reply = encode_reply(id, name, type, rcode, answer, 300);
  replies.emplace_back(reply.begin(), reply.end());
  return replies;
}

sim_network make_network(const world_plan& plan, random& fault_rng, world_record& record) {
  sim_network network;
  network.connect = [plan = &plan, rng = &fault_rng, record = &record](
                        const core::endpoint& address) -> std::unique_ptr<stream_peer> {
    const auto found = plan->hosts_by_address.find(address.to_string());
    if (found == plan->hosts_by_address.end() || found->second.refuses) return nullptr;
    const host_plan& host = found->second;
    return std::make_unique<remote_mta>(*record, host.name, host.extensions, host.stalls,
                                        plan->faults, *rng);
  };
  network.datagram = [plan = &plan, rng = &fault_rng, record = &record](
                         const core::endpoint&, std::string_view bytes) {
    return serve_dns(*plan, *rng, *record, bytes);
  };
  return network;
}

outbound::dns_client_config dns_config_for(std::uint64_t seed) {
  outbound::dns_client_config config;
  config.resolver.servers.push_back(dns::server_address{dns::ip_address::v4(192, 0, 2, 53), 53});
  config.resolver.ipv6 = false;
  // Seeded: the query ids are in the transcript, so a replay checks them too.
  config.random = [dns_rng = random(seed ^ 0xd115)]() mutable { return dns_rng.next(); };
  return config;
}

// Messages: 1..3 recipients at one destination, bodies of 1..150 lines (some starting with
// a dot), each body a file of the host in wire form.
void add_messages(random& rng, std::uint64_t seed, sim_host& host, embedder& queue,
                  std::vector<std::unique_ptr<message>>& messages) {
  const auto message_count = static_cast<std::uint32_t>(rng.between(5, 25));
  for (std::uint32_t i = 0; i < message_count; ++i) {
    auto m = std::make_unique<message>();
    m->key = fmt::format("key.{}.{}", seed, i);
    m->destination = static_cast<std::uint32_t>(rng.below(destination_count));
    m->reverse_path = "sender@origin.example";
    const auto rcpts = rng.between(1, 3);
    for (std::uint64_t r = 0; r < rcpts; ++r) {
      m->recipients.push_back(fmt::format("user{}@{}", r, destination_name(m->destination)));
    }
    m->states.assign(m->recipients.size(), recipient_state::pending);
    m->raw_body = fmt::format("Message-ID: <{}@sim.example>\r\nSubject: {}\r\n\r\n", m->key, i);
    const auto lines = rng.between(1, 150);
    for (std::uint64_t l = 0; l < lines; ++l) {
      m->raw_body += l % 7 == 3 ? fmt::format(".dot line {}\r\n", l)
                                : fmt::format("line {} of {} ....................\r\n", l, i);
    }
    const std::string wire = dot_stuff(m->raw_body);
    m->slice = spool::body_slice{host.add_file(wire), 0, static_cast<std::uint32_t>(wire.size())};
    m->job.envelope.reverse_path = m->reverse_path;
    m->job.body = {&m->slice, 1};
    m->job.token = i;
    queue.add(*m);
    messages.push_back(std::move(m));
  }
}

// One seeded world: DNS, remote MTAs, messages; the real outbound delivers them all.
// with_faults: the remote MTAs answer 451/554 and drop connections, DNS loses queries and
// answers SERVFAIL, at seeded rates.
run_result run_world(std::uint64_t seed, bool with_faults) {
  run_result result;
  random rng(seed);
  random fault_rng(seed * 0x9e3779b97f4a7c15ull + 0xfa17);
  scheduler clock;
  const world_plan plan = plan_world(rng, with_faults);
  result.dest3_missing = plan.dest3_missing;
  sim_host host(clock, seed, make_network(plan, fault_rng, result.record), plan.net_ns_max,
                1'800'000'000'000);
  embedder queue(clock, result.record, host);
  {
    outbound::dns_client dns(host, dns_config_for(seed));
    outbound::outbound out(host, dns, queue, outbound_config_for_sim(16));
    queue.attach(out);
    queue.set_messages(result.messages);
    EXPECT_TRUE(dns.start().ok());
    EXPECT_TRUE(out.start().ok());
    add_messages(rng, seed, host, queue, result.messages);
    std::set<std::uint32_t> destinations;
    for (const auto& m : result.messages) destinations.insert(m->destination);
    for (std::uint32_t d : destinations) {
      const host_plan& mx1 = plan.hosts_by_address.at(remote_address(d, 1));
      if (mx1.refuses) ++result.refusals_expected;
      if (mx1.stalls) ++result.stalls_expected;
      queue.open(d);
      ++result.destinations;
    }
    result.finished = host.run([&] { return queue.idle(); }, actions_max);
    result.sockets_open_when_done = host.open_sockets();
    result.simulated_ns = clock.now_ns();  // when the last connection closed
    out.stop();
    dns.stop();
    result.out = out.counters();
    result.connections = queue.opened();
    result.closed = queue.closed();
    result.deliver_refused = queue.deliver_refused();
    result.protocol_breaches = queue.protocol_breaches();
    result.bounced_destinations = queue.bounced_destinations();
    result.close_reasons = queue.reasons();
    // Cancelled receives and closes still complete: let them, as the shard's drain does.
    (void)host.run([] { return false; }, 10'000);
  }
  result.sockets_left_destroyed = host.open_sockets();
  result.host = host.counters();
  return result;
}

// Every recipient ends delivered exactly once (with the message's exact body) or bounced
// and never delivered; nothing is left pending.
void expect_every_recipient_settled(const run_result& r) {
  for (const auto& m : r.messages) {
    for (std::size_t i = 0; i < m->recipients.size(); ++i) {
      const auto found = r.record.deliveries.find({m->key, m->recipients[i]});
      const std::uint32_t times = found == r.record.deliveries.end() ? 0 : found->second;
      switch (m->states[i]) {
        case recipient_state::delivered:
          EXPECT_EQ(times, 1u) << m->key << " " << m->recipients[i];
          break;
        case recipient_state::bounced:
          EXPECT_EQ(times, 0u) << m->key << " " << m->recipients[i];
          break;
        case recipient_state::pending:
          ADD_FAILURE() << m->key << " " << m->recipients[i] << " still pending";
          break;
      }
    }
    const auto body = r.record.bodies.find(m->key);
    if (body != r.record.bodies.end()) {
      EXPECT_EQ(body->second, m->raw_body) << m->key;
    }
  }
}

void expect_clean_end(const run_result& r) {
  EXPECT_EQ(r.closed, r.connections);
  EXPECT_EQ(r.deliver_refused, 0u);
  EXPECT_EQ(r.protocol_breaches, 0u);
  EXPECT_EQ(r.sockets_open_when_done, 1u);  // the resolver's UDP socket
  EXPECT_EQ(r.sockets_left_destroyed, 0u);
  EXPECT_EQ(r.host.unsupported_ops, 0u);
  EXPECT_EQ(r.host.stale_completions, 0u);
}

TEST(SimHost, RealOutboundDeliversEveryMessageThroughSimulatedDnsAndNetwork) {
  for (std::uint64_t seed = 1; seed <= 30; ++seed) {
    SCOPED_TRACE(fmt::format("seed {}", seed));
    const run_result r = run_world(seed, false);
    ASSERT_TRUE(r.finished) << r.record.transcript;
    expect_clean_end(r);
    expect_every_recipient_settled(r);
    for (const auto& m : r.messages) {
      for (recipient_state state : m->states) EXPECT_EQ(state, recipient_state::delivered);
    }
    // One connection per destination, each released after its last delivery.
    EXPECT_EQ(r.connections, r.destinations);
    EXPECT_EQ(r.close_reasons, std::set<std::string>{"released"});
    // A refusing or stalling mx1 made its destination's connection try mx2 (RFC 5321 §5.1);
    // a stall ends with the greeting timeout (§4.5.3.2.1: 5 simulated minutes).
    EXPECT_EQ(r.host.connects_refused, r.refusals_expected);
    EXPECT_EQ(r.out.connect_attempts,
              r.destinations + r.refusals_expected + r.stalls_expected);
    if (r.stalls_expected > 0) {
      EXPECT_GE(r.host.timers_fired, r.stalls_expected);
      EXPECT_GE(r.simulated_ns, 300'000'000'000);
    }
  }
}

// 451/554 to MAIL, RCPT, DATA and the end of data, and connections dropped mid-session: the
// transient failures are retried (new connections where the old one was lost), the permanent
// ones bounce, and no recipient is delivered twice.
TEST(SimHost, RealOutboundUnderRemoteFaultsSettlesEveryRecipient) {
  for (std::uint64_t seed = 31; seed <= 70; ++seed) {
    SCOPED_TRACE(fmt::format("seed {}", seed));
    const run_result r = run_world(seed, true);
    ASSERT_TRUE(r.finished) << r.record.transcript;
    expect_clean_end(r);
    expect_every_recipient_settled(r);
    for (const auto& reason : r.close_reasons) {
      EXPECT_TRUE(reason == "released" || reason == "connection lost" ||
                  reason == "destination failed")
          << reason;
    }
    // NXDOMAIN (RFC 5321 §5.1; 550 5.1.2): dest3's mail bounces, nothing reaches a server.
    bool dest3_has_mail = false;
    for (const auto& m : r.messages) {
      if (m->destination != 3) continue;
      dest3_has_mail = true;
      if (!r.dest3_missing) continue;
      for (recipient_state state : m->states) EXPECT_EQ(state, recipient_state::bounced);
    }
    EXPECT_EQ(r.bounced_destinations, r.dest3_missing && dest3_has_mail ? 1u : 0u);
  }
}

// A crash destroys the host (and the glue on it) while its actions are still queued on the
// world's scheduler: they must do nothing after it.
TEST(SimHost, ActionsQueuedByADestroyedHostDoNothing) {
  struct counting_peer final : stream_peer {
    explicit counting_peer(std::uint32_t& calls) : calls(calls) {}
    void on_connected(sim_host& host, int fd) override {
      ++calls;
      host.peer_send(fd, "220 hello\r\n");
      host.peer_close(fd);
    }
    void on_bytes(sim_host&, int, std::string_view) override { ++calls; }
    void on_client_gone(sim_host&, int) override { ++calls; }
    std::uint32_t& calls;
  };
  struct recording_handler final : shard::host_handler {
    void on_completion(const io::completion&) noexcept override { ++completions; }
    std::uint32_t completions = 0;
  };
  scheduler clock;
  std::uint32_t peer_calls = 0;
  recording_handler handler;
  {
    sim_network network;
    network.connect = [&](const core::endpoint&) {
      return std::make_unique<counting_peer>(peer_calls);
    };
    sim_host host(clock, 5, std::move(network), 1'000'000, 0);
    const auto kind = host.add_handler(handler);
    ASSERT_TRUE(kind.ok());
    const auto fd = host.open_socket(AF_INET, SOCK_STREAM);
    ASSERT_TRUE(fd.ok());
    const auto to = core::endpoint::parse("192.0.2.1:25");
    ASSERT_TRUE(to.has_value());
    ASSERT_TRUE(host.prep_connect(fd.value(), to->sockaddr_pointer(), to->length,
                                  io::pack_user_data(kind.value(), 0, 1), io::sqe::none)
                    .ok());
    static char buffer[64];
    ASSERT_TRUE(host.prep_recv(fd.value(), buffer, sizeof buffer,
                               io::pack_user_data(kind.value(), 0, 2), io::sqe::none)
                    .ok());
    // Until the connect has completed: the greeting and the end of stream are still queued.
    ASSERT_TRUE(host.run([&] { return handler.completions == 1; }, 100));
    EXPECT_EQ(peer_calls, 1u);
    // A completion queued at the moment of the crash.
    ASSERT_TRUE(host.prep_nop(io::pack_user_data(kind.value(), 0, 3), io::sqe::none).ok());
    ASSERT_FALSE(clock.empty());
  }
  const std::uint32_t completions = handler.completions;
  std::uint32_t ran = 0;
  while (clock.run_one() && ran < 1000) ++ran;
  EXPECT_GT(ran, 0u);
  EXPECT_EQ(handler.completions, completions);
  // Nothing reached the peer after the host went (its destruction is a crash: the peer is
  // destroyed with the socket and hears no close).
  EXPECT_EQ(peer_calls, 1u);
}

TEST(SimHost, ASeedReplaysToTheSameTranscript) {
  const run_result first = run_world(53, true);
  const run_result second = run_world(53, true);
  ASSERT_TRUE(first.finished);
  EXPECT_EQ(first.record.transcript, second.record.transcript);
  EXPECT_NE(first.record.transcript, run_world(54, true).record.transcript);
}

// A host without a network and a handler recording each completion's result.
struct bare_host {
  struct recorder final : shard::host_handler {
    void on_completion(const io::completion& done) noexcept override {
      results.push_back(done.res);
    }
    std::vector<std::int32_t> results;
  };
  explicit bare_host(std::uint64_t seed) : host(clock, seed, sim_network{}, 1'000'000, 0) {
    kind = host.add_handler(handler).value();
  }
  std::uint64_t user_data(std::uint32_t serial) const {
    return io::pack_user_data(kind, 0, serial);
  }
  scheduler clock;
  sim_host host;
  recorder handler;
  io::op_kind kind{};
};

// The loop turns as a shard does (issue 16): completions posted together are dispatched by
// one action and followed by one turn, bytes reaching the peer turn nothing. The socket's byte
// lanes: a receive takes from one segment of the peer's at most, the peer hears each send as
// sent, and what the peer sends after its close never arrives.
TEST(SimHost, CompletionsReapInBatchesAndReceivesKeepTheirSegments) {
  struct scripted_peer final : stream_peer {
    explicit scripted_peer(std::string& heard) : heard(heard) {}
    void on_connected(sim_host& host, int fd) override {
      host.peer_send(fd, "220 a\r\n");
      host.peer_send(fd, "250 bc\r\n");
    }
    void on_bytes(sim_host& host, int fd, std::string_view bytes) override {
      heard.append(bytes).append("|");
      if (bytes != "QUIT\r\n") return;
      host.peer_send(fd, "221\r\n");
      host.peer_close(fd);
      host.peer_send(fd, "late\r\n");  // after the end of stream: lost
    }
    void on_client_gone(sim_host&, int) override {}
    std::string& heard;
  };
  std::string heard;
  sim_network network;
  network.connect = [&heard](const core::endpoint&) {
    return std::make_unique<scripted_peer>(heard);
  };
  scheduler clock;
  sim_host host(clock, 11, std::move(network), 1'000'000, 0);
  bare_host::recorder handler;
  const io::op_kind kind = host.add_handler(handler).value();
  const auto user_data = [kind](std::uint32_t serial) {
    return io::pack_user_data(kind, 0, serial);
  };
  const int fd = host.open_socket(AF_INET, SOCK_STREAM).value();
  const auto to = core::endpoint::parse("192.0.2.1:25");
  ASSERT_TRUE(to.has_value());
  ASSERT_TRUE(host.prep_connect(fd, to->sockaddr_pointer(), to->length, user_data(1),
                                io::sqe::none)
                  .ok());
  ASSERT_TRUE(host.run([&] { return handler.results.size() == 1; }, 100));

  const sim_host_counters before = host.counters();
  ASSERT_TRUE(host.prep_nop(user_data(2), io::sqe::none).ok());
  ASSERT_TRUE(host.prep_nop(user_data(3), io::sqe::none).ok());
  ASSERT_TRUE(clock.run_one());  // the reap at the current time: before the peer's bytes
  EXPECT_EQ(handler.results, (std::vector<std::int32_t>{0, 0, 0}));
  EXPECT_EQ(host.counters().completions, before.completions + 2);
  EXPECT_EQ(host.counters().turns, before.turns + 1);

  char buffer[16];
  const auto receive = [&](std::uint32_t serial, std::uint32_t length) -> std::string {
    const std::size_t results = handler.results.size();
    EXPECT_TRUE(host.prep_recv(fd, buffer, length, user_data(serial), io::sqe::none).ok());
    EXPECT_TRUE(host.run([&] { return handler.results.size() > results; }, 100));
    const std::int32_t res = handler.results.back();
    return res < 0 ? "error" : std::string(buffer, static_cast<std::size_t>(res));
  };
  EXPECT_EQ(receive(10, 4), "220 ");
  EXPECT_EQ(receive(11, 16), "a\r\n");  // the rest of the first segment only
  EXPECT_EQ(receive(12, 16), "250 bc\r\n");

  ASSERT_TRUE(host.prep_send(fd, "NOOP\r\n", 6, user_data(20), io::sqe::none, 0).ok());
  ASSERT_TRUE(host.prep_send(fd, "QUIT\r\n", 6, user_data(21), io::sqe::none, 0).ok());
  const std::uint64_t turns = host.counters().turns;
  while (heard.size() < 14 && clock.run_one()) {
  }
  EXPECT_EQ(heard, "NOOP\r\n|QUIT\r\n|");
  EXPECT_EQ(host.counters().turns, turns + 1);  // the sends' completions; the arrivals none
  EXPECT_EQ(receive(22, 16), "221\r\n");
  EXPECT_EQ(receive(23, 16), "");  // end of stream: "late" never arrives
  host.close(fd);
}

// The scheduler's actions (issue 16's lean queue): same-time actions run in the order they
// were queued whatever their captures (inline, on the heap, move-only), actions queued from
// a running action (the slot table grows and reuses slots) keep that order — one queued for
// now waits for the actions queued earlier for the same time (the due list and the heap
// merged) — and clear() destroys what is pending.
TEST(SimScheduler, RunsActionsInTimeThenQueueOrderAndFreesTheirCaptures) {
  scheduler clock;
  std::vector<int> order;
  struct big_capture {
    char bytes[200] = {};
  };
  auto owned = std::make_unique<int>(3);
  clock.at(10, [&order, big = big_capture{}] { order.push_back(big.bytes[0] + 2); });
  clock.at(5, [&order] { order.push_back(1); });
  clock.at(10, [&clock, &order, owned = std::move(owned)] {
    order.push_back(*owned);
    clock.after(0, [&order] { order.push_back(6); });  // after 4, queued for 10 before it
  });
  clock.at(10, [&clock, &order] {
    order.push_back(4);
    for (int i = 0; i < 40; ++i) clock.after(0, [&order, i] { order.push_back(100 + i); });
    clock.at(1, [&order] { order.push_back(5); });  // in the past: runs now, after the 40
  });
  while (clock.run_one()) {
  }
  ASSERT_EQ(order.size(), 46u);
  EXPECT_EQ((std::vector<int>(order.begin(), order.begin() + 5)),
            (std::vector<int>{1, 2, 3, 4, 6}));
  for (int i = 0; i < 40; ++i) EXPECT_EQ(order[5 + static_cast<std::size_t>(i)], 100 + i);
  EXPECT_EQ(order.back(), 5);
  EXPECT_EQ(clock.now_ns(), 10);

  auto small = std::make_shared<int>(0);
  auto large = std::make_shared<int>(0);
  clock.after(1, [small] {});
  clock.after(1, [large, big = big_capture{}] {});
  EXPECT_EQ(small.use_count(), 2);
  EXPECT_EQ(large.use_count(), 2);
  clock.clear();
  EXPECT_EQ(small.use_count(), 1);
  EXPECT_EQ(large.use_count(), 1);
  EXPECT_TRUE(clock.empty());
}

// A multishot receive (the outbound arms one per connection, issue 16): one completion per
// segment, each with its own buffer and cqe_flag_more, the op staying armed; a group with no
// buffer left ends it with -ENOBUFS and no flag (re-armed after a recycle), and so does the
// peer's end of stream (0).
TEST(SimHost, AMultishotReceiveCompletesPerSegmentUntilItEnds) {
  struct talking_peer final : stream_peer {
    void on_connected(sim_host& host, int fd) override {
      host.peer_send(fd, "220 a\r\n");
      host.peer_send(fd, "250 b\r\n");
      host.peer_send(fd, "250 c\r\n");
    }
    void on_bytes(sim_host& host, int fd, std::string_view) override {
      host.peer_send(fd, "221 d\r\n");
      host.peer_close(fd);
    }
    void on_client_gone(sim_host&, int) override {}
  };
  struct receiver final : shard::host_handler {
    explicit receiver(io::buffer_ring& buffers) : buffers(buffers) {}
    void on_completion(const io::completion& done) noexcept override {
      std::string got = fmt::format("{}{}:", done.res, done.more() ? "+" : "");
      if (done.has_buffer()) {
        const auto bytes = buffers.consume(done);
        got.append(reinterpret_cast<const char*>(bytes.data()), bytes.size());
        if (recycle) buffers.recycle(done.buffer_id());
      }
      heard.push_back(got);
    }
    io::buffer_ring& buffers;
    bool recycle = false;
    std::vector<std::string> heard;
  };
  sim_network network;
  network.connect = [](const core::endpoint&) { return std::make_unique<talking_peer>(); };
  scheduler clock;
  sim_host host(clock, 5, std::move(network), 1'000'000, 0);
  ASSERT_TRUE(host.recv_multishot_supported());
  io::buffer_ring buffers;
  ASSERT_TRUE(host.register_buffer_ring(buffers, {.group_id = 3, .buffer_count = 2,
                                                  .buffer_bytes = 64, .recycle_batch = 1})
                  .ok());
  receiver handler(buffers);
  const io::op_kind kind = host.add_handler(handler).value();
  const int fd = host.open_socket(AF_INET, SOCK_STREAM).value();
  const auto to = core::endpoint::parse("192.0.2.1:25");
  ASSERT_TRUE(to.has_value());
  ASSERT_TRUE(host.prep_connect(fd, to->sockaddr_pointer(), to->length,
                                io::pack_user_data(kind, 0, 1), io::sqe::none)
                  .ok());
  ASSERT_TRUE(host.run([&] { return handler.heard.size() == 1; }, 100));
  const std::uint64_t receive = io::pack_user_data(kind, 0, 2);
  ASSERT_TRUE(host.prep_recv_multishot(fd, 3, receive, io::sqe::none).ok());
  // Two buffers, never recycled: the third segment finds none.
  ASSERT_TRUE(host.run([&] { return handler.heard.size() == 4; }, 100));
  EXPECT_EQ(handler.heard, (std::vector<std::string>{"0:", "7+:220 a\r\n", "7+:250 b\r\n",
                                                     "-105:"}));
  EXPECT_EQ(host.counters().enobufs, 1u);
  buffers.recycle(0);
  buffers.recycle(1);
  handler.recycle = true;
  ASSERT_TRUE(host.prep_recv_multishot(fd, 3, receive, io::sqe::none).ok());
  ASSERT_TRUE(host.prep_send(fd, "QUIT\r\n", 6, io::pack_user_data(kind, 0, 3), io::sqe::none,
                             0)
                  .ok());
  ASSERT_TRUE(host.run([&] { return handler.heard.size() == 8; }, 100));
  EXPECT_EQ((std::vector<std::string>(handler.heard.begin() + 4, handler.heard.end())),
            (std::vector<std::string>{"7+:250 c\r\n", "6:", "7+:221 d\r\n", "0:"}));
  host.close(fd);
}

// The descriptor table (indexed by fd, closed slots at its front dropped): descriptors closed
// out of order stay closed, the others keep working, numbers are never reused, and a cancel
// by descriptor finds its op behind closed ones.
TEST(SimHost, DescriptorsClosedOutOfOrderLeaveTheOthersWorking) {
  bare_host bare(9);
  sim_host& host = bare.host;
  std::vector<int> fds;
  for (int i = 0; i < 5; ++i) {
    const auto fd = host.open_socket(AF_INET, SOCK_DGRAM);
    ASSERT_TRUE(fd.ok());
    fds.push_back(fd.value());
  }
  const int file = host.add_file("spool");
  EXPECT_EQ(host.open_sockets(), 5u);
  host.close(fds[1]);
  host.close(fds[0]);  // the front of the table goes
  host.close(fds[3]);
  EXPECT_EQ(host.open_sockets(), 2u);
  for (const int closed : {fds[0], fds[1], fds[3], fds[0] - 1, file + 1}) {
    EXPECT_EQ(host.set_option(closed, 0, 0, 0).error(), EBADF) << closed;
  }
  EXPECT_TRUE(host.set_option(fds[2], 0, 0, 0).ok());
  EXPECT_TRUE(host.set_option(fds[4], 0, 0, 0).ok());
  const auto next = host.open_socket(AF_INET, SOCK_STREAM);
  ASSERT_TRUE(next.ok());
  EXPECT_GT(next.value(), file);  // never a closed number again
  static char buffer[16];
  ASSERT_TRUE(host.prep_recv(fds[4], buffer, sizeof buffer, bare.user_data(1),
                             io::sqe::none)
                  .ok());
  ASSERT_TRUE(host.prep_cancel_fd(fds[4], bare.user_data(2), io::sqe::none)
                  .ok());
  ASSERT_TRUE(host.run([&] { return bare.handler.results.size() == 2; }, 100));
  EXPECT_EQ(bare.handler.results, (std::vector<std::int32_t>{-ECANCELED, 0}));
  char byte = 0;  // the file is still open and readable, then closed like a socket
  EXPECT_EQ(host.read_cached(file, &byte, 1, 0).value(), 1u);
  host.close(file);
  EXPECT_EQ(host.read_cached(file, &byte, 1, 0).error(), EBADF);
  host.close(fds[2]);
  host.close(fds[4]);
  host.close(next.value());
  EXPECT_EQ(host.open_sockets(), 0u);
  EXPECT_EQ(host.set_option(next.value(), 0, 0, 0).error(), EBADF);
}


// A listener (the daemon's acceptor's side): connections queued before the accept is armed
// are taken by one multishot accept in order, with F_MORE; getpeername names each client; a
// send that never waits reaches the peer; shutting the listener down ends the accept (EINVAL,
// no F_MORE) and refuses later clients.
TEST(SimHost, AListenersMultishotAcceptTakesQueuedClientsUntilShutDown) {
  struct heard_peer final : stream_peer {
    explicit heard_peer(std::string& heard) : heard(heard) {}
    void on_connected(sim_host&, int) override {}
    void on_bytes(sim_host&, int, std::string_view bytes) override { heard.append(bytes); }
    void on_client_gone(sim_host&, int) override { heard.append("|gone"); }
    std::string& heard;
  };
  struct accepts final : shard::host_handler {
    void on_completion(const io::completion& done) noexcept override {
      results.push_back(done.res);
      more.push_back(done.more());
    }
    std::vector<std::int32_t> results;
    std::vector<bool> more;
  };
  scheduler clock;
  sim_host host(clock, 11, sim_network{}, 1'000'000, 0);
  accepts handler;
  const io::op_kind kind = host.add_handler(handler).value();
  const int listener = host.add_listener();
  std::string heard;
  const auto first = *core::endpoint::parse("192.0.2.7:4000");
  const auto second = *core::endpoint::parse("192.0.2.8:4001");
  const int a = host.connect_client(listener, std::make_unique<heard_peer>(heard), first);
  const int b = host.connect_client(listener, std::make_unique<heard_peer>(heard), second);
  ASSERT_GE(a, 0);
  ASSERT_GE(b, 0);
  EXPECT_EQ(host.prep_accept(a, io::pack_user_data(kind, 0, 1), true, false, io::sqe::none).error(), EBADF);
  ASSERT_TRUE(host.prep_accept(listener, io::pack_user_data(kind, 0, 1), true, false, io::sqe::none).ok());
  ASSERT_TRUE(host.run([&] { return handler.results.size() == 2; }, 100));
  EXPECT_EQ(handler.results, (std::vector<std::int32_t>{a, b}));
  EXPECT_EQ(handler.more, (std::vector<bool>{true, true}));
  EXPECT_EQ(host.counters().accepts, 2u);
  sockaddr_storage address{};
  socklen_t length = 0;
  ASSERT_TRUE(host.peer_name(b, address, length).ok());
  EXPECT_EQ(core::endpoint::from_sockaddr(reinterpret_cast<sockaddr*>(&address), length), second);
  host.send_now(a, "421 busy\r\n", 10);
  host.close(a);  // the bytes sent still arrive, then the peer hears the client gone
  ASSERT_TRUE(host.run([&] { return heard == "421 busy\r\n|gone"; }, 100));
  host.shutdown(listener, SHUT_RDWR);
  ASSERT_TRUE(host.run([&] { return handler.results.size() == 3; }, 100));
  EXPECT_EQ(handler.results.back(), -EINVAL);
  EXPECT_FALSE(handler.more.back());
  EXPECT_EQ(host.connect_client(listener, std::make_unique<heard_peer>(heard), first), -1);
  host.close(b);
  host.close(listener);
  EXPECT_EQ(host.open_sockets(), 0u);
}

// Accept failures (set_accept_failures): the accept ends with EMFILE, the client stays
// queued, and the next accept takes it.
TEST(SimHost, AFailedAcceptLeavesTheClientQueued) {
  struct silent_peer final : stream_peer {
    void on_connected(sim_host&, int) override {}
    void on_bytes(sim_host&, int, std::string_view) override {}
    void on_client_gone(sim_host&, int) override {}
  };
  bare_host bare(12);
  sim_host& host = bare.host;
  host.set_accept_failures(1.0, 5);
  const int listener = host.add_listener();
  const int client = host.connect_client(listener, std::make_unique<silent_peer>(),
                                         *core::endpoint::parse("192.0.2.9:25"));
  ASSERT_TRUE(host.prep_accept(listener, bare.user_data(1), true, false, io::sqe::none).ok());
  ASSERT_TRUE(host.run([&] { return bare.handler.results.size() == 1; }, 100));
  EXPECT_EQ(bare.handler.results[0], -EMFILE);
  host.set_accept_failures(0, 5);
  ASSERT_TRUE(host.prep_accept(listener, bare.user_data(2), false, false, io::sqe::none).ok());
  ASSERT_TRUE(host.run([&] { return bare.handler.results.size() == 2; }, 100));
  EXPECT_EQ(bare.handler.results[1], client);
  EXPECT_EQ(host.counters().accepts_failed, 1u);
  host.close(client);
  host.close(listener);
}

// A file writer's descriptors (the spool's ring driver over a simulated disk): writev and
// fdatasync go to the writer with their link flag, in order; its results complete as any op.
// Without a writer, or on the host's own descriptors, they are not simulated.
TEST(SimHost, WritesAndSyncsOfForeignDescriptorsGoToTheFileWriter) {
  bare_host bare(13);
  sim_host& host = bare.host;
  static char bytes[] = "abcdef";
  const iovec pieces[] = {{bytes, 2}, {bytes + 2, 4}};
  EXPECT_EQ(host.prep_writev(7, pieces, 2, 0, bare.user_data(1), io::sqe::none).error(),
            EOPNOTSUPP);
  std::vector<sim_host::file_op> seen;
  host.set_file_writer([&](const sim_host::file_op& op) { seen.push_back(op); });
  ASSERT_TRUE(host.prep_writev(7, pieces, 2, 4096, bare.user_data(1), io::sqe::link).ok());
  ASSERT_TRUE(host.prep_fdatasync(7, bare.user_data(2), io::sqe::none).ok());
  EXPECT_EQ(host.prep_fdatasync(7, bare.user_data(3), io::sqe::hardlink).error(), EOPNOTSUPP);
  const int own = host.add_file("x");
  EXPECT_EQ(host.prep_fdatasync(own, bare.user_data(4), io::sqe::none).error(), EOPNOTSUPP);
  ASSERT_EQ(seen.size(), 2u);
  EXPECT_FALSE(seen[0].datasync);
  EXPECT_TRUE(seen[0].linked);
  EXPECT_EQ(seen[0].offset, 4096u);
  EXPECT_EQ(seen[0].piece_count, 2u);
  EXPECT_TRUE(seen[1].datasync);
  EXPECT_FALSE(seen[1].linked);
  host.complete_file_op(seen[0].user_data, 6);
  host.complete_file_op(seen[1].user_data, -EIO);
  ASSERT_TRUE(host.run([&] { return bare.handler.results.size() == 2; }, 100));
  EXPECT_EQ(bare.handler.results, (std::vector<std::int32_t>{6, -EIO}));
  host.close(own);
}

}  // namespace
}  // namespace ringmta::sim
