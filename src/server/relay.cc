// server::relay, owner role: the destinations this shard owns — their queues, connections
// and deliveries — plus set-up and the cross-shard plumbing. The home role (routing, spool
// marks, DSNs) is in relay_home.cc.
#include "ringmta/server/relay.h"

#include <unistd.h>

#include <algorithm>
#include <cctype>

#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include <xxhash.h>

#include "relay_internal.h"
#include "ringmta/net/idna.h"
#include "ringmta/server/shaping.h"
#include "ringmta/core/assert.h"
#include "ringmta/core/clock.h"

namespace ringmta::server {

// ---- helpers

// Minimal JSON string escaping for texts that come from remote servers.
std::string json_escape(std::string_view text) {
  std::string out;
  for (const char c : text) {
    if (c == '"' || c == '\\') out += '\\';
    if (static_cast<unsigned char>(c) < 0x20) continue;
    out += c;
  }
  return out;
}

// The destination is the domain's A-label form (RFC 5890): DNS, --route, shaping and queues
// all see one spelling of "bücher.test". A domain without one (invalid IDNA) keeps its bytes
// and fails at the resolver (5.1.3), as any invalid name does.
std::string destination_of(std::string_view address, std::string_view hostname) {
  const auto at = address.rfind('@');
  const std::string_view domain = at == std::string_view::npos ? hostname : address.substr(at + 1);
  if (auto ascii = net::domain_to_ascii(domain)) return std::move(*ascii);
  std::string out(domain);
  std::transform(out.begin(), out.end(), out.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return out;
}

unsigned owner_of(std::string_view destination, unsigned shards) noexcept {
  return static_cast<unsigned>(XXH3_64bits(destination.data(), destination.size()) % shards);
}

recipient_report report_from(const smtp::parsed_reply& reply, const outbound::remote_host& remote,
                             std::uint16_t index, outcome_kind kind) {
  recipient_report out;
  out.index = index;
  out.kind = kind;
  out.reply_code = reply.code;
  if (reply.enhanced.present()) {
    out.status = {reply.enhanced.status_class, reply.enhanced.subject, reply.enhanced.detail};
  }
  out.text = reply.enhanced.present()
                 ? fmt::format("{} {}.{}.{} {}", reply.code, reply.enhanced.status_class,
                               reply.enhanced.subject, reply.enhanced.detail,
                               reply.one_line_text())
                 : fmt::format("{} {}", reply.code, reply.one_line_text());
  out.from_server = !reply.local;
  out.remote_dsn = remote.offers_dsn;
  if (remote.address != nullptr) {
    out.remote = fmt::format("{} [{}]", remote.name, remote.address->to_string());
    out.ip = remote.address->to_string();
  } else {
    out.remote = std::string(remote.name);
  }
  out.mx = std::string(remote.name);
  return out;
}

void note_tls(recipient_report& report, const outbound::tls_outcome& tls) {
  if (tls.mode != outbound::tls_mode::encrypted) {
    report.tls = "none";
    report.tls_note = tls.mode == outbound::tls_mode::fallback
                          ? fmt::format("{}: {}", outbound::describe(tls.mode), tls.detail)
                          : std::string(outbound::describe(tls.mode));
    return;
  }
  report.tls = std::string(tls.protocol);
  report.tls_cipher = std::string(tls.cipher);
  report.tls_bits = static_cast<std::uint16_t>(tls.cipher_bits);
  report.tls_verified = tls.verified;
  report.tls_resumed = tls.resumed;
}

outbound::tls_policy tls_policy_for(const relay_config& config, std::string_view destination) {
  if (config.tls_policies.empty()) return config.tls_default;
  const std::string name(destination);
  if (const auto exact = config.tls_policies.find(name); exact != config.tls_policies.end())
    return exact->second;
  // ".example.com" covers every name below it; the longest such suffix wins (Postfix's
  // smtp_tls_policy_maps convention).
  for (std::size_t dot = name.find('.'); dot != std::string::npos; dot = name.find('.', dot + 1)) {
    const auto parent = config.tls_policies.find(name.substr(dot));
    if (parent != config.tls_policies.end()) return parent->second;
  }
  return config.tls_default;
}

queue::failure failure_of(const recipient_report& report) noexcept {
  return queue::failure{report.reply_code, report.status, report.text};
}

namespace {

// The policies, and the client context with its CA store: read once here, at start-up, and
// shared read-only by every shard (never a certificate file read per connection).
void configure_tls(const config::settings& settings, relay_config& c) {
  c.tls_default = to_outbound(settings.relay_tls_policy);
  bool verifies = c.tls_default == outbound::tls_policy::verify;
  bool encrypts = c.tls_default != outbound::tls_policy::none;
  for (const auto& entry : settings.relay_tls_policy_for) {
    c.tls_policies[entry.domain] = to_outbound(entry.policy);
    verifies |= entry.policy == config::tls_policy::verify;
    encrypts |= entry.policy != config::tls_policy::none;
  }
  for (const auto& entry : settings.shaping) {  // [[shaping]] tls_policy
    if (!entry.tls) continue;
    verifies |= *entry.tls == config::tls_policy::verify;
    encrypts |= *entry.tls != config::tls_policy::none;
  }
  if (!encrypts) {
    c.tls_description = "outbound TLS off (policy none everywhere)";
    return;
  }
  tls::client_settings tls_settings;
  tls_settings.ca_file = settings.relay_tls_ca_file;
  // Without `verify` nothing needs trust anchors: a host without a system store still gets
  // opportunistic and required TLS (verified = false in every record).
  tls_settings.ca_required = verifies || !settings.relay_tls_ca_file.empty();
  auto loaded = tls::load_client_context(tls_settings);
  if (!loaded.context) {
    if (settings.relay_tls_ca_file.empty())
      throw config::error("outbound TLS (system CA store; give --tls-ca FILE): " + loaded.error);
    const auto origin = settings.origins.find("relay.tls.ca_file");  // FILE:LINE or the flag
    throw config::error(fmt::format("{}: relay.tls.ca_file: {}",
                                    origin != settings.origins.end() ? origin->second
                                                                     : "defaults",
                                    loaded.error));
  }
  c.outbound.tls_context = std::move(loaded.context);
  c.tls_description = fmt::format(
      "outbound TLS: policy {} by default, {} per-domain, CA store {}",
      outbound::describe(c.tls_default), c.tls_policies.size(),
      settings.relay_tls_ca_file.empty() ? "system" : settings.relay_tls_ca_file);
}

}  // namespace

relay_config make_relay_config(const config::settings& settings) {
  relay_config c;
  c.hostname = settings.hostname;
  c.delivery_port = settings.delivery_port;
  c.mime_downgrade = settings.mime_downgrade;
  if (!settings.relayhost.empty()) {
    c.has_relayhost = true;
    c.relayhost.mx = false;
    const auto colon = settings.relayhost.rfind(':');
    const bool bracketed = settings.relayhost.front() == '[';
    const auto close = settings.relayhost.find(']');
    if (colon != std::string::npos && (!bracketed || colon > close)) {
      c.relayhost.host = settings.relayhost.substr(0, colon);
      c.relayhost.port =
          static_cast<std::uint16_t>(std::stoul(settings.relayhost.substr(colon + 1)));
    } else {
      c.relayhost.host = settings.relayhost;
    }
    if (bracketed) c.relayhost.host = c.relayhost.host.substr(1, c.relayhost.host.size() - 2);
    c.relayhost.relayhost = true;
  }
  c.relayhost_auth = load_relayhost_auth(settings);
  c.relayhost_auth_plaintext = settings.relayhost_auth_plaintext;
  c.routes = settings.routes;
  c.site_rollup = settings.site_rollup;
  c.site_relearn_ms = std::int64_t{settings.site_relearn_s} * 1000;
  configure_tls(settings, c);
  auto& s = c.scheduler;
  s.retry_delays_ms.clear();
  for (const auto delay : settings.retry_schedule_s) s.retry_delays_ms.push_back(delay * 1000ll);
  s.lifetime_max_ms = settings.queue_lifetime_s * 1000ll;
  s.probe_backoff_max_ms = settings.probe_backoff_max_s * 1000ll;
  s.delay_warning_ms = settings.delay_warning_s * 1000ll;
  const auto& limits = settings.default_destination_limits;
  s.limits = limits_from(limits.connections_max, limits.messages_per_connection_max,
                         limits.messages_per_second_max);
  c.shaping = build_shaping_table(settings);
  c.egress = std::make_shared<const egress_table>(settings);
  std::string problem;
  c.classifier = events::bounce_classifier::load(settings.bounce_classes_file, problem);
  if (!c.classifier) {
    const auto origin = settings.origins.find("bounce.classes_file");
    throw config::error(fmt::format("{}: bounce.classes_file: {}",
                                    origin != settings.origins.end() ? origin->second
                                                                     : "defaults",
                                    problem));
  }
  s.random_seed = static_cast<std::uint64_t>(core::monotonic_ns());
  c.outbound.helo_name = settings.hostname;
  c.outbound.timeout_connect_ms = settings.timeout_connect_s * 1000;
  c.outbound.idle_timeout_ms = 2'000;
  c.outbound.receive_buffer_count = 4096;  // > connections: a reply never waits for a buffer
  c.dns.resolver.servers.clear();
  if (settings.resolvers.empty()) {
    // Like the C library: a missing /etc/resolv.conf, or one without a nameserver line,
    // means a resolver on this host.
    const auto loaded = dns::load_resolv_conf("/etc/resolv.conf", c.dns.resolver);
    if (!loaded || c.dns.resolver.servers.empty()) {
      c.dns.resolver.servers = {dns::server_address::parse("127.0.0.1:53").value()};
    }
  } else {
    for (const auto& server : settings.resolvers) {
      auto parsed = dns::server_address::parse(server.to_string());
      if (!parsed)
        throw config::error(fmt::format("relay.resolvers: {}: bad address", server.to_string()));
      c.dns.resolver.servers.push_back(parsed.value());
    }
  }
  if (const auto problem = c.dns.resolver.validate(); !problem.empty())
    throw config::error(fmt::format("relay.resolvers: {}", problem));
  return c;
}

// ---- cross-shard messages: a pointer whose ownership moves with the message

void relay::state::on_job_message(shard::mesh& target, std::vector<relay*>& shards,
                                  std::unique_ptr<routed_job> job) noexcept {
  shards[target.id()]->_state->accept_job(std::move(job));
}

void relay::state::on_outcome_message(shard::mesh& target, std::vector<relay*>& shards,
                                      std::unique_ptr<outcome_batch> batch) noexcept {
  shards[target.id()]->_state->on_outcomes(std::move(batch));
}

void relay::state::send(unsigned to, const shard::parcel& m) noexcept {
  if (!backlog.empty() || !peers.try_send(to, m)) backlog.emplace_back(to, m);
}

void relay::state::flush_backlog() noexcept {
  std::size_t sent = 0;
  for (; sent < backlog.size(); ++sent) {
    if (!peers.try_send(backlog[sent].first, backlog[sent].second)) break;
  }
  backlog.erase(backlog.begin(), backlog.begin() + static_cast<std::ptrdiff_t>(sent));
}

// After the last report of a message reaches its home, the home may free it at any moment:
// callers end their job in the scheduler (job_left) before reporting, and pass what they need.
void relay::state::report(spooled_message* message, unsigned home,
                          std::vector<recipient_report> reports) noexcept {
  if (reports.empty()) return;
  std::unique_ptr<outcome_batch> batch(new outcome_batch{message, std::move(reports)});
  send(home, shard::make_parcel<&on_outcome_message>(std::move(batch), *config.shards));
}

// ---- relay and its state

// The scheduler asks the shaping table for the limits of each destination it creates. Its
// shard-wide connection limit is the outbound's slots at most: a connection the outbound has
// no slot for is refused and offered again at once, a loop on the shard (issue 15: 171 s of
// CPU before a restart's first delivery with 4,096 against 1,024).
queue::scheduler_config relay::state::shaped(queue::scheduler_config config,
                                             std::uint32_t outbound_slots, state& self) {
  config.connections_max = std::min(config.connections_max, outbound_slots);
  config.limits_for = [&self](std::string_view destination) {
    return self.shape_of(destination).limits;
  };
  return config;
}

relay::state::state(relay& relay_self, const relay_config& relay_settings,
                    shard::host& shard_owner, shard::mesh& shard_peers,
                    spool::store& spool_store, relay_metrics& relay_counters, admin::log_buffer& log_buffer)
    : self(relay_self),
      config(relay_settings),
      live(std::make_shared<const relay_config>(relay_settings)),
      owner(shard_owner),
      peers(shard_peers),
      store(spool_store),
      metrics(relay_counters),
      log(log_buffer),
      scheduler(shaped(relay_settings.scheduler, relay_settings.outbound.connections_max, *this)),
      dns(shard_owner, relay_settings.dns),
      out(shard_owner, dns, relay_self, relay_settings.outbound),
      shaping(relay_settings.shaping) {
  next_session = admin::session_id_base(shard_peers.id(), true);
  if (!shaping) shaping = std::make_shared<const shaping_table>(config::settings{},
                                                                relay_settings.scheduler.limits);
}

relay::relay(const relay_config& config, shard::host& owner, shard::mesh& peers,
             spool::store& store, relay_metrics& metrics, admin::log_buffer& log)
    : _state(std::make_unique<state>(*this, config, owner, peers, store, metrics, log)) {}

relay::~relay() {
  if (_state->timer.armed()) _state->owner.timers().cancel(_state->timer);
  // DSNs waiting for a retry are not lost: their bounces were never marked, so a restart
  // bounces those recipients again (pending_dsn).
  if (_state->dsn_retry_timer.armed()) _state->owner.timers().cancel(_state->dsn_retry_timer);
  if (_state->eviction_timer.armed()) _state->owner.timers().cancel(_state->eviction_timer);
}

core::result<void> relay::start() noexcept {
  if (auto ready = _state->dns.start(); !ready) return ready;
  if (auto ready = _state->out.start(); !ready) return ready;
  auto dsn_reads = _state->owner.add_handler(_state->dsn_reads);
  if (!dsn_reads) return core::fail(dsn_reads.error());
  _state->dsn_read_kind = dsn_reads.value();
  auto envelope_reads = _state->owner.add_handler(_state->envelope_reader_handler);
  if (!envelope_reads) return core::fail(envelope_reads.error());
  _state->envelope_read_kind = envelope_reads.value();
  _state->owner.add_iteration_hook(*this);
  const unsigned shards = _state->live->shards ? static_cast<unsigned>(_state->live->shards->size())
                                               : 1;
  for (const auto& name : _state->live->suspended_at_start)
    if (owner_of(name, shards) == _state->peers.id())
      _state->scheduler.suspend(name, _state->owner.wall_ms());
  _state->restore_pauses();  // before the recovered jobs: they are queued under the pauses
  _state->recover();
  return {};
}

void relay::route(const spool::envelope& envelope, std::span<const spool::body_slice> body,
                  std::string_view pool) {
  _state->route(envelope, body, pool);
}
bool relay::on_committed(std::uint64_t ticket, int error) noexcept {
  return _state->on_committed(ticket, error);
}

void relay::begin_shutdown() noexcept {
  _state->shutting_down = true;
  _state->out.begin_shutdown();
}

bool relay::drained() const noexcept {
  return _state->out.drained() && _state->backlog.empty() && _state->dsn_reading.empty() &&
         _state->dsns.empty() && _state->dsn_tickets.empty() && _state->envelope_reads.empty();
}

void relay::stop() noexcept {
  _state->out.stop();
  _state->dns.stop();
}

void relay::update(std::shared_ptr<const relay_config> next) noexcept {
  auto& s = *_state;
  s.live = std::move(next);
  ++s.reloads;  // open connections retire at their next job (opened_before_reload)
  if (s.live->shaping) s.shaping = s.live->shaping;  // [[shaping]], [[reply_rule]] reload too
  s.scheduler.set_policy(s.live->scheduler);
  s.reshape_sites();
  s.release_own_way_members();
  s.out.set_timeout_connect_ms(s.live->outbound.timeout_connect_ms);
  // The reload's CA store (relay.tls.ca_file), or a context at all when TLS was off everywhere
  // at the start (make_relay_config builds none then): a policy reloaded to verify must not
  // meet the start's trust, or "TLS is not configured".
  s.out.set_tls_context(s.live->outbound.tls_context);
  s.poll();  // new limits may let a destination open connections now
}

void relay::before_wait() noexcept {
  _state->flush_backlog();
  _state->queue_envelope_reads();
  _state->continue_dsns();
  _state->poll();
  const outbound::outbound_counters& out = _state->out.counters();
  auto& m = _state->metrics;
  m.bodies_bdat.set_total(out.bodies_chunked);
  m.bodies_data.set_total(out.bodies_staged);
  m.bodies_spliced.set_total(out.bodies_spliced);
  m.bodies_copied.set_total(out.bodies_copied);
  m.body_bytes.set_total(out.body_bytes);
  m.connect_failures.set_total(out.connect_failures);
  m.outbound_timeouts.set_total(out.timeouts);
  m.tls_handshakes.set_total(out.tls_handshakes);
  m.tls_resumed.set_total(out.tls_resumed);
  m.tls_verified.set_total(out.tls_verified);
  for (std::size_t i = 0; i < m.tls_failures.size(); ++i)
    m.tls_failures[i].set_total(out.tls_failures[i]);
  m.tls_timeouts.set_total(out.tls_timeouts);
  m.tls_unavailable.set_total(out.tls_unavailable);
  m.tls_plaintext_retries.set_total(out.tls_plaintext_retries);
  m.tls_plaintext_remembered.set_total(out.tls_plaintext_remembered);
  m.tls_injections.set_total(out.tls_injections);
  m.bodies_encrypted.set_total(out.bodies_encrypted);
}

// ---- operator actions (admin API)

std::string relay::operate(std::string_view destination, std::string_view action) {
  auto& s = *_state;
  const std::int64_t now = s.owner.wall_ms();
  std::size_t jobs = 0;
  bool known = true;
  bool lifted = false;
  if (action == "suspend") {
    known = s.scheduler.suspend(destination, now);
  } else if (action == "resume") {  // the operator's: a reply rule's pause ends too
    known = s.scheduler.resume(destination, now);
    lifted = s.lift_everywhere(std::string(destination), now);
  } else if (action == "resume_suspension") {  // a timed suspension ended: the rules' stay
    known = s.scheduler.resume(destination, now);
  } else if (action == "flush") {
    jobs = s.scheduler.flush(destination, now);
  } else if (action == "bounce") {
    jobs = s.scheduler.bounce_all(destination, now);
  } else {
    return {};
  }
  s.log.set_time(now);
  s.log.record("operator").field("action", action).field("destination", destination)
      .field("jobs", static_cast<std::uint64_t>(jobs));
  s.poll();  // bounced jobs come out as events; flushed ones may go now
  // "lifted" (a reply rule's pause or throttle ended) only when it did: the admin API reads it.
  return fmt::format("{{\"destination\":\"{}\",\"action\":\"{}\",\"known\":{},\"jobs\":{}{}}}",
                     json_escape(destination), action, known ? "true" : "false", jobs,
                     lifted ? ",\"lifted\":true" : "");
}

namespace {
// Texts from remote servers may hold any bytes: invalid UTF-8 becomes U+FFFD, never bad JSON.
std::string dump(const nlohmann::json& value) {
  return value.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}
}  // namespace

std::string relay::destinations_json(std::size_t count_max) const {
  auto out = nlohmann::json::array();
  _state->scheduler.list_destinations(count_max, [&](const queue::destination_info& d) {
    out.push_back({{"destination", std::string(d.name)}, {"shard", _state->peers.id()},
                   {"suspended", d.suspended}, {"ready", d.ready}, {"scheduled", d.scheduled},
                   {"in_flight", d.in_flight}, {"held", d.held},
                   {"connections", d.connections},
                   {"connection_failures", d.connection_failures},
                   {"next_attempt_ms", d.next_attempt_ms},
                   {"backoff_until_ms", d.backoff_until_ms},
                   {"last_error_ms", d.last_error_ms}, {"last_error", std::string(d.last_error)}});
  });
  return dump(out);
}

std::string relay::queue_totals_json() const {
  std::uint64_t count = 0, ready = 0, scheduled = 0, in_flight = 0, connections = 0;
  _state->scheduler.list_destinations(SIZE_MAX, [&](const queue::destination_info& d) {
    ++count;
    ready += d.ready;
    scheduled += d.scheduled;
    in_flight += d.in_flight;
    connections += d.connections;
  });
  return fmt::format(R"({{"destinations":{},"ready":{},"scheduled":{},"in_flight":{},)"
                     R"("connections":{}}})", count, ready, scheduled, in_flight, connections);
}

std::string relay::egress_sources_json() const {
  auto out = nlohmann::json::array();
  if (_state->live->egress)
    for (const auto& source : _state->live->egress->sources()) out.push_back(source.name);
  return dump(out);
}

bool relay::knows(std::string_view destination) const {
  queue::destination_info info;
  return _state->scheduler.inspect(destination, info);
}

namespace {

// A listed job whose message's envelope is only in the spool: its home reads it back (at most
// this many per listing) and the admin API asks again (admin_api.cc, jobs_of).
constexpr std::size_t listing_reads_max = 1024;
constexpr std::string_view on_disk_text = "(on disk)";

// The envelope of a listed job's message, if resident (pinned: the home may evict it).
bool unpack_listed(const spooled_message& message, spool::envelope& envelope) {
  const packed_message::pin pinned(message.packed);
  if (pinned) envelope = message.envelope();
  return static_cast<bool>(pinned);
}

}  // namespace

std::string relay::jobs_json(std::string_view destination, std::size_t count_max) const {
  const auto& scheduler = _state->scheduler;
  std::vector<std::string> names;
  if (!destination.empty()) names.emplace_back(destination);
  else
    scheduler.list_destinations(100'000, [&](const queue::destination_info& d) {
      names.emplace_back(d.name);
    });
  auto out = nlohmann::json::array();
  std::vector<queue::job_view> jobs;
  std::size_t asked = 0;  // envelopes asked of their homes for this listing
  for (const auto& name : names) {
    if (jobs.size() >= count_max) break;
    const std::size_t first = jobs.size();
    scheduler.list_jobs(name, count_max - jobs.size(), jobs);
    queue::destination_info info;
    scheduler.inspect(name, info);
    const std::int64_t now = _state->owner.wall_ms();
    for (std::size_t i = first; i < jobs.size(); ++i) {
      const auto& j = jobs[i];
      spool::envelope envelope;
      spooled_message& message = message_of(j.message);  // the listed job keeps it
      const bool on_disk = !unpack_listed(message, envelope);
      if (on_disk && asked++ < listing_reads_max) _state->request_envelope(message, {});
      auto recipients = nlohmann::json::array();
      j.for_each_recipient([&](std::uint16_t index) {
        const bool known = index < envelope.recipients.size();
        recipients.push_back({{"index", index},
                              {"address", known ? envelope.recipients[index].address
                                          : on_disk ? std::string(on_disk_text)
                                                    : std::string()}});
      });
      // list_jobs: in flight, then ready, then scheduled; a suspended destination holds all;
      // a destination backing off after a connection failure holds even its ready jobs: they
      // wait for the backoff, and its error is why.
      const bool active = i - first < info.in_flight;
      const bool backing_off = info.backoff_until_ms > now;
      const char* state = active                    ? "active"
                          : j.held                  ? "held"
                          : info.suspended          ? "suspended"
                          : j.next_attempt_ms > now ? "deferred"
                          : backing_off             ? "deferred"
                                                    : "ready";
      std::int64_t next_attempt_ms = j.next_attempt_ms;
      std::string why(j.last_error);
      if (!active && backing_off) {
        next_attempt_ms = std::max(next_attempt_ms, info.backoff_until_ms);
        if (why.empty()) why = "destination backing off: " + std::string(info.last_error);
      }
      out.push_back({{"id", std::string(spool::format_message_id(message.id).data())},
                     {"destination", name},
                     {"state", state}, {"recipients", recipients},
                     {"sender", on_disk ? std::string(on_disk_text) : envelope.reverse_path},
                     {"on_disk", on_disk},
                     {"size", message.body_size()},
                     {"attempts", j.attempts}, {"received_s", j.received_seconds},
                     {"last_attempt_ms", j.last_attempt_ms},
                     {"next_attempt_ms", next_attempt_ms},
                     {"last_reply_code", j.last_reply_code}, {"last_error", why}});
    }
  }
  return dump(out);
}

// ---- owner role: jobs in, connections out

relay_route relay::state::route_for(std::string_view name) const {
  const std::string_view destination = split_egress(name).first;  // "example.com@ip2"
  for (const auto& fixed : live->routes) {
    if (fixed.destination == destination) return relay_route{false, fixed.host, fixed.port};
  }
  if (live->has_relayhost) return live->relayhost;
  return relay_route{true, std::string(destination), live->delivery_port};
}

// With mx entries in the table, a destination whose MX hosts are not known yet gets one
// connection: it learns them (learn_mx), and a site limit is never overrun by the first burst.
shape relay::state::shape_of(std::string_view destination) const {
  shape out = base_shape_of(destination);
  if (throttles.empty()) return out;
  const auto found = throttles.find(std::string(destination));
  if (found == throttles.end()) return out;
  const throttle& t = found->second;  // a reply rule lowers, never raises: rate nor burst
  auto& l = out.limits;
  const double rate = l.rate_messages == 0 ? 0.0 : l.rate_messages * 1000.0 / l.rate_period_ms;
  const std::optional<double> rule_rate =
      t.messages_per_second_max && *t.messages_per_second_max > 0 ? t.messages_per_second_max
                                                                   : std::nullopt;
  const bool rule_slower = rule_rate && (rate == 0 || *rule_rate < rate);
  const std::uint32_t connections =
      std::min(l.connections_max, t.connections_max.value_or(UINT32_MAX));
  auto limits = layered_limits(l, connections, std::nullopt,
                               rule_slower ? rule_rate : std::nullopt);
  // Each bound is the lower of the two, the burst too. 4 per second has a burst of 4; over
  // "18 per second, burst 3" it stays 3 (ringmta-sim seed 260995242623237: 4 transactions in
  // 69 ms under a throttle). "3 per second" over "9 per 8 s, burst 4" keeps the slower rate
  // with a burst of 3: 4 at once would be more than the rule's 3 in a second (seed 172000707).
  if (rule_rate && rate > 0)
    limits.rate_burst = std::min(l.rate_burst, limits_from(1, 0, *rule_rate).rate_burst);
  l = limits;
  return out;
}

shape relay::state::base_shape_of(std::string_view name) const {
  const std::string_view destination = split_egress(name).first;  // limits per source × domain
  if (!shaping->has_mx_entries()) return shaping->for_domain(destination);
  if (const auto found = mx_hosts.find(std::string(name)); found != mx_hosts.end()) {
    std::vector<std::string_view> hosts(found->second.begin(), found->second.end());
    return shaping->for_destination(destination, hosts);
  }
  shape out = shaping->for_domain(destination);
  if (route_for(destination).mx) out.limits.connections_max = 1;
  return out;
}

// ---- reply rules ([[reply_rule]]): a server's reply suspends, throttles or bounces

std::string relay::state::destination_name(queue::destination_id id) const {
  queue::destination_info info;
  return scheduler.inspect(id, info) ? std::string(info.name) : std::string();
}

const config::reply_rule_entry* relay::state::rule_for(const std::string& destination,
                                                       std::string_view reply) const noexcept {
  if (!shaping->has_reply_rules() || reply.empty()) return nullptr;
  std::vector<std::string_view> hosts;
  if (const auto found = mx_hosts.find(destination); found != mx_hosts.end())
    hosts.assign(found->second.begin(), found->second.end());
  return shaping->match_reply(split_egress(destination).first, hosts, reply);
}

// A rule fired by one domain's reply acts on its whole MX site (relay_site.cc): the members
// share the servers that said it.
void relay::state::apply_rule(const std::string& destination,
                              const config::reply_rule_entry& rule,
                              const recipient_report& why) noexcept {
  apply_rule_to(destination, rule, why);
  for (const auto& member : site_members(destination)) apply_rule_to(member, rule, why);
}

void relay::state::apply_rule_to(const std::string& destination,
                                 const config::reply_rule_entry& rule,
                                 const recipient_report& why) noexcept {
  const std::int64_t now = owner.wall_ms();
  const std::int64_t until = now + std::int64_t{rule.duration_s} * 1000;
  queue::destination_info info;
  if (rule.action == config::reply_action::bounce || !scheduler.inspect(destination, info))
    return;
  // The same 421 often ends the delivery and then the connection: one suspension.
  if (rule.action == config::reply_action::suspend && info.paused_until_ms > now) return;
  log.set_time(now);
  log.record("reply_rule").field("destination", destination).field("rule", rule.origin)
      .field("action", rule.action == config::reply_action::suspend ? "suspend" : "throttle")
      .field("until_ms", static_cast<std::uint64_t>(until)).field("reply", why.text);
  if (rule.action == config::reply_action::throttle) return throttle_by(destination, rule, until);
  const bool journaled =
      store.pause_destination(pause_of(destination, until, nullptr), now).ok();
  // The journal's pause record holds the waiting jobs too (queue_job after a restart): one
  // record per firing, not one per job. Without it (journal buffer full), each waiting
  // job's home records `until` as its retry time instead, as before issue 16.
  std::vector<queue::job_view> waiting;
  if (!journaled) waiting = jobs_waiting_within(destination, now, until);
  scheduler.pause(info.id, now, until, failure_of(why));
  drain_events(&why);
  // A job whose lifetime ends before `until` came out of the pause expired (bounced just
  // now, its message maybe freed: the key may name another one): report the jobs still
  // queued only (ringmta-sim seed 1049 --shards-max 3, an out-of-range recipient index).
  for (auto& job : waiting) {
    if (!scheduler.has_job(job.id)) continue;
    job.last_error = {};
    handle_event(queue::job_event{queue::event_kind::deferred, job, until}, &why);
  }
}

namespace {
template <typename T>
std::optional<T> lower_of(const std::optional<T>& a, const std::optional<T>& b) {
  if (!a || !b) return a ? a : b;
  return std::min(*a, *b);
}
}  // namespace

// The throttle of `destination` from now: `next` combined with one in force.
relay::state::throttle relay::state::add_throttle(const std::string& destination, throttle next,
                                                  std::int64_t now) noexcept {
  if (const auto found = throttles.find(destination);
      found != throttles.end() && found->second.until_ms > now) {
    const throttle& held = found->second;
    next = throttle{std::max(held.until_ms, next.until_ms),
                    lower_of(held.connections_max, next.connections_max),
                    lower_of(held.messages_per_second_max, next.messages_per_second_max)};
  }
  throttles[destination] = next;
  return next;
}

// A throttle firing while another holds the destination combines with it: each limit is the
// lowest either set, until the later end. A rule lowers, never raises: a second rule naming
// only a rate must not give back the connections the first took away (ringmta-sim seed 112
// --shards-max 3: a throttle without a rate replaced one of 5/s, 6 transactions in 63 ms).
void relay::state::throttle_by(const std::string& destination,
                               const config::reply_rule_entry& rule, std::int64_t until) noexcept {
  const std::int64_t now = owner.wall_ms();
  const throttle next = add_throttle(
      destination, throttle{until, rule.connections_max, rule.messages_per_second_max}, now);
  // The record carries the combined throttle: a restart brings back what was in force.
  // Without room in the journal the throttle ends at a crash.
  (void)store.pause_destination(pause_of(destination, next.until_ms, &next), now);
  scheduler.reshape(destination, shape_of(destination).limits);
}

// Jobs waiting for a retry between now and `until` (bounded, as destination-wide deferrals
// are): a pause moves them without an attempt, so no scheduler event tells their homes.
std::vector<queue::job_view> relay::state::jobs_waiting_within(const std::string& destination,
                                                               std::int64_t now,
                                                               std::int64_t until) const {
  constexpr std::size_t jobs_reported_max = 1000;
  std::vector<queue::job_view> waiting;
  scheduler.list_jobs(destination, jobs_reported_max, waiting);
  std::erase_if(waiting, [&](const queue::job_view& job) {
    return job.next_attempt_ms <= now || job.next_attempt_ms >= until;
  });
  return waiting;
}

// ---- reply-rule pauses across a restart (issue 16)

namespace {
const queue::failure recovered_pause_failure{0, {4, 4, 5},
                                             "destination suspended by a reply rule"};
}  // namespace

spool::destination_pause relay::state::pause_of(const std::string& destination,
                                                std::int64_t until_ms, const throttle* limits) {
  spool::destination_pause pause;
  pause.destination = destination;
  pause.until_ms = until_ms;
  if (limits == nullptr) return pause;  // a suspension
  pause.kind = spool::pause_kind::throttle;
  pause.connections_max = limits->connections_max.value_or(0);
  pause.messages_per_second_max = limits->messages_per_second_max.value_or(0);
  return pause;
}

// The pauses this shard's journal kept go to every shard (the typed cross-shard post): a
// domain's queue is on its owner or, rolled up, on its MX site's owner, which is known only
// once the site's lookup answers. Sent to the owner alone, a suspension held the domain's jobs
// there (queued_here) while the jobs routed before the post arrived had joined the site's
// owner already: two queues, each with the domain's connection limit (ringmta-sim seed
// 194000668 --shards-max 3: 5 connections under a limit of 4 when the suspension ended).
// Each shard applies it to the jobs it queues (queue_job) or already holds (restore_pause).
void relay::state::restore_pauses() noexcept {
  const auto shards = static_cast<unsigned>(config.shards ? config.shards->size() : 1);
  for (auto& pause : store.live_pauses(owner.wall_ms())) {
    for (unsigned shard = 0; shard < shards; ++shard) {
      if (shard == peers.id()) {
        restore_pause(pause);
        continue;
      }
      send(shard, shard::make_parcel<&on_pause_message>(
                      std::make_unique<spool::destination_pause>(pause), *config.shards));
    }
  }
}

void relay::state::on_pause_message(shard::mesh& target, std::vector<relay*>& shards,
                                    std::unique_ptr<spool::destination_pause> pause) noexcept {
  shards[target.id()]->_state->restore_pause(*pause);
}

// Owner side. The journal that kept it keeps carrying it in its snapshots until it expires
// (another shard's, after a change of the shard count): a later restart finds it again.
void relay::state::restore_pause(const spool::destination_pause& pause) noexcept {
  const std::int64_t now = owner.wall_ms();
  if (pause.until_ms <= now) return;
  const auto shards = static_cast<unsigned>(config.shards ? config.shards->size() : 1);
  if (owner_of(pause.destination, shards) == peers.id()) {  // once, though every shard has it
    log.set_time(now);
    log.record("reply_rule_recovered").field("destination", pause.destination)
        .field("action", pause.kind == spool::pause_kind::throttle ? "throttle" : "suspend")
        .field("until_ms", static_cast<std::uint64_t>(pause.until_ms));
  }
  if (pause.kind == spool::pause_kind::throttle) {
    // Another shard's store may hold an older record of the destination, still in force (it
    // held the queue before): combined, not replaced, or its earlier end would end the newer
    // throttle (ringmta-sim seed 16000030 --shards-max 3: 3 connections, 2 transactions in
    // 11 ms under a recovered "1 per 10 s" once the older record's end passed).
    add_throttle(pause.destination,
                 throttle{pause.until_ms,
                          pause.connections_max == 0 ? std::nullopt
                                                     : std::optional(pause.connections_max),
                          pause.messages_per_second_max <= 0
                              ? std::nullopt
                              : std::optional(pause.messages_per_second_max)},
                 now);
    scheduler.reshape(pause.destination, shape_of(pause.destination).limits);
    return;
  }
  queue::destination_info info;
  if (scheduler.inspect(pause.destination, info)) {  // jobs came first (another shard's post)
    scheduler.pause(info.id, now, pause.until_ms, recovered_pause_failure);
    drain_events(nullptr);
    return;
  }
  auto& until = recovered_pauses[pause.destination];
  until = std::max(until, pause.until_ms);
}

// The end of a recovered suspension of `destination` still ahead (0: none). Once the
// destination exists in the scheduler, queue_job hands the pause to it and forgets it here.
std::int64_t relay::state::recovered_pause_until(const std::string& destination,
                                                 std::int64_t now_ms) noexcept {
  const auto found = recovered_pauses.find(destination);
  if (found == recovered_pauses.end()) return 0;
  if (found->second > now_ms) return found->second;
  recovered_pauses.erase(found);
  return 0;
}

// ---- an operator's resume ends a reply rule's pause and throttle (issue 16)

// `ringmta-ctl resume DEST` means "send to it now" (KumoMTA cancels a TSA suspension; Postfix's
// flush unthrottles a dead destination). The pause may live on several shards: the scheduler's
// on the queue's holder, a recovered one not yet handed to the scheduler on the domain's owner,
// and its journal record in the store of the shard that fired it (after a restart, or a change
// of the shard count, not always the holder). Each shard lifts what it has, so a later restart
// does not bring the pause back.
bool relay::state::lift_everywhere(const std::string& destination, std::int64_t now) noexcept {
  const unsigned shards = config.shards ? static_cast<unsigned>(config.shards->size()) : 1;
  for (unsigned to = 0; to < shards; ++to) {
    if (to == peers.id()) continue;
    send(to, shard::make_parcel<&on_lift_message>(std::make_unique<std::string>(destination),
                                                  *config.shards));
  }
  return lift_rule_pauses(destination, now);
}

void relay::state::on_lift_message(shard::mesh& target, std::vector<relay*>& shards,
                                   std::unique_ptr<std::string> destination) noexcept {
  relay::state& s = *shards[target.id()]->_state;
  if (s.lift_rule_pauses(*destination, s.owner.wall_ms())) s.poll();
}

bool relay::state::lift_rule_pauses(const std::string& destination, std::int64_t now) noexcept {
  const bool paused = scheduler.lift_pause(destination, now);
  const bool recovered = recovered_pauses.erase(destination) != 0;
  const bool throttled = throttles.erase(destination) != 0;
  if (throttled) scheduler.reshape(destination, shape_of(destination).limits);
  const auto held = store.live_pauses(now);
  const bool journaled = std::any_of(held.begin(), held.end(), [&](const auto& pause) {
    return pause.destination == destination;
  });
  spool::destination_pause lift;
  lift.destination = destination;
  lift.kind = spool::pause_kind::lifted;
  // A journal without room: the record stays, and a restart brings the pause back (logged).
  const bool lift_journaled = !journaled || store.pause_destination(lift, now).ok();
  if (!paused && !recovered && !throttled && !journaled) return false;
  log.set_time(now);
  log.record("reply_rule_lifted").field("destination", destination).field("by", "operator")
      .field("suspend", paused || recovered).field("throttle", throttled)
      .field("journaled", lift_journaled);
  return true;
}

void relay::state::expire_throttles(std::int64_t now_ms) noexcept {
  for (auto it = throttles.begin(); it != throttles.end();) {
    if (it->second.until_ms > now_ms) {
      ++it;
      continue;
    }
    const std::string name = it->first;
    it = throttles.erase(it);
    scheduler.reshape(name, shape_of(name).limits);
  }
}

// The first ready connection of a destination tells its MX hosts: the MX layer of shaping
// ("*.google.com") applies from then on, to the live queue and to later connections.
void relay::state::learn_mx(const std::string& destination,
                            outbound::connection_handle connection) noexcept {
  if (mx_hosts.count(destination) != 0 || !route_for(destination).mx) return;
  std::vector<std::string> hosts;
  for (const auto& candidate : out.route_candidates(connection)) {
    if (std::find(hosts.begin(), hosts.end(), candidate.host_name) == hosts.end())
      hosts.push_back(candidate.host_name);
  }
  if (hosts.empty()) return;
  constexpr std::size_t destinations_max = 100'000;
  if (mx_hosts.size() >= destinations_max) mx_hosts.clear();  // relearned on next connections
  mx_hosts.emplace(destination, std::move(hosts));
  scheduler.reshape(destination, shape_of(destination).limits);
}

void relay::state::queue_job(std::unique_ptr<routed_job> job) noexcept {
  spooled_message& message = *job->message;
  const std::int64_t now = owner.wall_ms();
  queue::job_spec spec{message_key_of(message), message.received_seconds(), job->recipients,
                       job->attempts, job->not_before_ms};
  // A destination a reply rule suspended: the job waits for the end (no attempt), and its
  // home records that time, so a restart meanwhile does not send it early.
  // A suspension recovered from the journal holds it the same way (issue 16).
  const std::int64_t recovered_until =
      recovered_pauses.empty() ? 0 : recovered_pause_until(job->destination, now);
  std::int64_t paused_until = recovered_until;
  queue::destination_info info;
  if ((shaping->has_reply_rules() || recovered_until > 0) &&
      scheduler.inspect(job->destination, info))
    paused_until = std::max(paused_until, info.paused_until_ms);
  const bool paused = paused_until > std::max(now, job->not_before_ms);
  if (paused) spec.not_before_ms = paused_until;
  spec.held = (job->flags & spool::message_flag_held) != 0;  // an operator's hold, recovered
  const auto added = scheduler.add(job->destination, spec, now, queue::admission::forced);
  if (added.status != queue::add_status::added) {
    // Only a destination name the scheduler cannot hold gets here: a permanent failure.
    std::vector<recipient_report> reports;
    for (const std::uint16_t index : job->recipients) {
      recipient_report r;
      r.index = index;
      r.kind = outcome_kind::bounced;
      r.reply_code = 550;
      r.status = {5, 1, 2};
      r.text = fmt::format("550 5.1.2 destination '{}' cannot be queued", job->destination);
      reports.push_back(std::move(r));
    }
    return report(&message, message.home, std::move(reports));
  }
  if (!job->site.empty()) join_site(*job, added.destination);
  RINGMTA_ASSERT(added.jobs_added > 0);
  if (recovered_until > 0) {  // the scheduler holds the pause from now on
    recovered_pauses.erase(job->destination);
    scheduler.pause(added.destination, now, recovered_until, recovered_pause_failure);
  }
  metrics.queued_jobs.add(added.jobs_added);
  // An operator's bounce, recovered or met while the job waited for its site; a delete met
  // there (amend_resolving). Both set: the bounce came first (a deleted message takes no more
  // actions: act_on_message), and a bounced job is gone before a delete could find it.
  if ((job->flags & spool::message_flag_bounce) != 0)
    return bounce_now(job->destination, message, job->bounce_reason, now);
  if ((job->flags & spool::message_flag_deleted) != 0) {
    scheduler.remove_message(job->destination, message_key_of(message), now);
    return drain_events(nullptr);
  }
  if (paused) {
    std::vector<recipient_report> reports;
    for (const std::uint16_t index : job->recipients) {
      recipient_report r;
      r.index = index;
      r.kind = outcome_kind::deferred;
      r.attempts = job->attempts;
      r.next_attempt_ms = paused_until;
      r.status = {4, 4, 5};
      r.text = fmt::format("destination {} suspended by a reply rule", job->destination);
      reports.push_back(std::move(r));
    }
    report(&message, message.home, std::move(reports));
  }
  if (std::string key = idle_key(job->destination); idle.count(key) != 0)
    woken.push_back(std::move(key));
  poll();
}

// Gives the destination's ready jobs to its idle connections. True when a connection is still
// idle afterwards (the destination has no more ready work for it).
bool relay::state::serve_idle(const std::string& destination, std::int64_t now_ms) noexcept {
  const auto found = idle.find(destination);
  if (found == idle.end()) return false;
  auto& waiting = found->second;
  while (!waiting.empty()) {
    const idle_connection c = waiting.back();
    if (!out.can_deliver(c.handle)) {  // quitting (idle lifetime over) or lost: on_closed follows
      waiting.pop_back();
      continue;
    }
    if (opened_before_reload(c.cookie)) {  // on_closed follows
      waiting.pop_back();
      out.release(c.handle);
      continue;
    }
    const auto connection = queue::connection_id{static_cast<std::uint32_t>(c.cookie >> 32),
                                                 static_cast<std::uint32_t>(c.cookie)};
    const auto taken = scheduler.take_for_site(connection, now_ms);
    if (taken.status == queue::take_status::none) break;
    waiting.pop_back();
    if (taken.status == queue::take_status::job) {
      follow_job(c.cookie, taken.job);
      start_delivery(c.handle, c.cookie, taken.job);
    }
    else out.release(c.handle);  // close (per-connection limit, suspended) or throttled
  }
  const bool still_idle = !waiting.empty();
  if (!still_idle) idle.erase(found);
  return still_idle;
}

void relay::state::drop_idle(const std::string& destination, std::uint64_t cookie) noexcept {
  const auto found = idle.find(destination);
  if (found == idle.end()) return;
  std::erase_if(found->second, [&](const idle_connection& c) { return c.cookie == cookie; });
  if (found->second.empty()) idle.erase(found);
}

void relay::state::arm_timer(std::int64_t now_ms) noexcept {
  std::int64_t wakeup = scheduler.next_wakeup_ms();
  for (const auto& [name, t] : throttles) wakeup = std::min(wakeup, t.until_ms);
  auto& timers = owner.timers();
  if (timer.armed()) timers.cancel(timer);
  if (wakeup == queue::no_wakeup_ms) return;
  const std::int64_t delay = std::max<std::int64_t>(1, wakeup - now_ms);
  timers.schedule_at(timer, owner.now_ms() + static_cast<std::uint64_t>(delay));
}

void relay::state::poll() noexcept {
  const std::int64_t now = owner.wall_ms();
  if (!throttles.empty()) expire_throttles(now);
  queue::job_event event;
  while (scheduler.next_event(event)) handle_event(event, nullptr);
  for (const auto& destination : woken) serve_idle(destination, now);
  woken.clear();
  if (!shutting_down && scheduler.next_wakeup_ms() <= now) {
    requests.clear();
    scheduler.poll(now, requests);
    for (const auto& request : requests) {
      const std::string key = idle_key(std::string(request.name));
      if (idle.count(key) == 0) {
        open(request);
        continue;
      }
      // An idle connection to it (or to its site) is open already: use it, not a new one.
      scheduler.connection_closed(request.connection, now);
      serve_idle(key, now);
    }
    while (scheduler.next_event(event)) handle_event(event, nullptr);
  }
  arm_timer(now);
}

void relay::state::open(const queue::connect_request& request) noexcept {
  const std::uint64_t cookie =
      (std::uint64_t{request.connection.slot} << 32) | request.connection.generation;
  const relay_route where = route_for(request.name);
  const shape shaped = shape_of(request.name);
  const std::string_view domain = split_egress(request.name).first;  // without its source
  outbound::route target{where.mx ? outbound::route_kind::mx : outbound::route_kind::host,
                         where.mx ? domain : std::string_view(where.host), where.port,
                         shaped.tls_set ? shaped.tls : tls_policy_for(*live, domain)};
  target.helo_name = shaped.ehlo_name;
  bind_source(request.name, target);
  target.timeout_connect_ms = shaped.timeout_connect_ms;
  target.timeout_reply_ms = shaped.timeout_reply_ms;
  if (where.relayhost) {  // never an MX's: the password goes to the host it is for
    target.auth = live->relayhost_auth;
    target.auth_plaintext = live->relayhost_auth_plaintext;
  }
  auto opened = out.open_connection(cookie, target);
  if (!opened) {  // at the shard's connection limit: the scheduler offers it again later
    scheduler.connection_closed(request.connection, owner.wall_ms());
    return;
  }
  connection_names[cookie] = std::string(request.name);
  opened_connections[cookie] = opened_connection{next_session++, reloads};
  metrics.connections.add();
}

// The queue's source ("example.com@ip2"): its address to bind and its EHLO name. A source a
// reload removed leaves its queued mail to the kernel's choice of address, never stuck.
void relay::state::bind_source(std::string_view name, outbound::route& target) const noexcept {
  const auto source = split_egress(name).second;
  if (source.empty() || !has_pools()) return;
  const egress_table& egress = *live->egress;
  const auto index = egress.source_named(source);
  if (!index) return;
  const egress_source& chosen = egress.sources()[*index];
  target.source = &chosen.address;
  if (!chosen.ehlo_name.empty()) target.helo_name = chosen.ehlo_name;
}

namespace {
queue::connection_id connection_of(std::uint64_t cookie) noexcept {
  return {static_cast<std::uint32_t>(cookie >> 32), static_cast<std::uint32_t>(cookie)};
}
}  // namespace

void relay::on_ready(outbound::connection_handle connection, std::uint64_t destination) noexcept {
  auto& s = *_state;
  if (s.shutting_down || s.opened_before_reload(destination)) return s.out.release(connection);
  if (s.shaping->has_mx_entries()) {
    if (const auto name = s.connection_names.find(destination); name != s.connection_names.end())
      s.learn_mx(name->second, connection);
  }
  const auto taken = s.scheduler.take_for_site(connection_of(destination),
                                               s.owner.wall_ms());
  if (taken.status == queue::take_status::job) {
    s.follow_job(destination, taken.job);
    return s.start_delivery(connection, destination, taken.job);
  }
  const auto name = s.connection_names.find(destination);
  if (taken.status != queue::take_status::none || name == s.connection_names.end())
    return s.out.release(connection);
  // Nothing ready now: keep it for the destination's next job (connection reuse); the
  // outbound closes it after its idle timeout.
  s.idle[s.idle_key(name->second)].push_back({connection, destination});
}

std::uint64_t relay::state::session_of(std::uint64_t cookie) const noexcept {
  const auto found = opened_connections.find(cookie);
  return found != opened_connections.end() ? found->second.session : 0;
}

// A connection opened before the latest reload takes no more jobs: it may carry an older TLS
// policy or relay host (ringmta-sim: TLS POLICY BYPASSED after `policy_for` was tightened).
// Released, it closes with QUIT; the scheduler opens a new one for the queue's next job.
bool relay::state::opened_before_reload(std::uint64_t cookie) const noexcept {
  if (reloads == 0) return false;  // never reloaded: no lookup per job
  const auto found = opened_connections.find(cookie);
  return found != opened_connections.end() && found->second.configuration != reloads;
}

void relay::state::start_delivery(outbound::connection_handle connection, std::uint64_t cookie,
                                  const queue::job_view& job) noexcept {
  spooled_message& message = message_of(job.message);
  std::uint32_t slot;
  if (free_flights.empty()) {
    slot = static_cast<std::uint32_t>(flights.size());
    flights.push_back(std::make_unique<in_flight>());
  } else {
    slot = free_flights.back();
    free_flights.pop_back();
  }
  in_flight& flight = *flights[slot];
  RINGMTA_ASSERT(flight.phase == flight_phase::free && flight.converted.fd < 0);
  flight.phase = flight_phase::delivering;
  flight.job = job;
  flight.job.last_error = {};
  flight.message = &message;
  flight.indices.clear();
  job.for_each_recipient([&](std::uint16_t index) { flight.indices.push_back(index); });
  flight.results.assign(flight.indices.size(), recipient_report{});
  flight.session = session_of(cookie);
  flight.started_ms = owner.wall_ms();
  flight.connection = connection;
  flight.cookie = cookie;
  const packed_message::pin pinned(message.packed);  // the home cannot evict it meanwhile
  if (!pinned) return request_envelope(message, slot);  // on_envelope_reply continues
  flight.body = message.body();
  continue_delivery(slot, message.envelope());
}

void relay::state::continue_delivery(std::uint32_t slot,
                                     const spool::envelope& envelope) noexcept {
  in_flight& flight = *flights[slot];
  const auto& client =
      flight.storage.assign(envelope, flight.indices, flight.message->body_bytes);
  // RFC 6152 §3: 8-bit content to a server without 8BITMIME is converted (or bounced 5.6.3
  // by the client engine when conversion is off).
  if (client.body == smtp::client_body_type::eight_bit_mime &&
      !out.offers_8bitmime(flight.connection) && request_downgrade(slot)) {
    return;  // on_downgraded continues
  }
  hand_off(slot, client, flight.body);
}

void relay::state::hand_off(std::uint32_t slot, const smtp::client_envelope& envelope,
                            std::span<const spool::body_slice> body) noexcept {
  in_flight& flight = *flights[slot];
  flight.phase = flight_phase::delivering;
  const outbound::delivery delivery{envelope, body, slot};
  if (auto sent = out.deliver(flight.connection, delivery); !sent) {
    // Not ready after all: the job goes back to the queue as a transient failure.
    const auto connection = flight.connection;
    smtp::parsed_reply reply;
    reply.assign_local(451, {4, 3, 0}, "local delivery hand-off failed");
    fail_locally(slot, reply, outcome_kind::deferred);
    out.release(connection);
  }
}

void relay::state::fail_locally(std::uint32_t slot, const smtp::parsed_reply& reply,
                                outcome_kind kind) noexcept {
  in_flight& flight = *flights[slot];
  for (std::size_t i = 0; i < flight.indices.size(); ++i)
    flight.results[i] = report_from(reply, outbound::remote_host{}, flight.indices[i], kind);
  const auto outcome = kind == outcome_kind::bounced ? smtp::client_outcome::permanent_failure
                                                     : smtp::client_outcome::transient_failure;
  finish_delivery(slot, outbound::delivery_result{slot, outcome, &reply, {}});
}

void relay::on_recipient_result(outbound::connection_handle, std::uint64_t,
                                const outbound::recipient_result& result) noexcept {
  auto& s = *_state;
  RINGMTA_ASSERT(result.token < s.flights.size());
  in_flight& flight = *s.flights[result.token];
  RINGMTA_ASSERT(flight.phase == flight_phase::delivering &&
                 result.recipient_index < flight.results.size());
  const outcome_kind kind =
      result.outcome == smtp::client_outcome::accepted            ? outcome_kind::delivered
      : result.outcome == smtp::client_outcome::permanent_failure ? outcome_kind::bounced
                                                                  : outcome_kind::deferred;
  flight.results[result.recipient_index] =
      report_from(*result.reply, result.remote, flight.indices[result.recipient_index], kind);
}

void relay::on_delivery_done(outbound::connection_handle, std::uint64_t,
                             const outbound::delivery_result& result) noexcept {
  auto& s = *_state;
  RINGMTA_ASSERT(result.token < s.flights.size());
  s.finish_delivery(static_cast<std::uint32_t>(result.token), result);
}

// Turns one delivery's results into scheduler outcomes and a report to the message's home.
void relay::state::finish_delivery(std::uint32_t slot,
                                   const outbound::delivery_result& result) noexcept {
  in_flight& flight = *flights[slot];
  RINGMTA_ASSERT(flight.phase != flight_phase::free);  // converting: failed before sending
  const std::int64_t now = owner.wall_ms();
  std::uint64_t keep_mask = 0;
  bool all_permanent = true;
  const recipient_report* first_transient = nullptr;
  const bool rules = shaping->has_reply_rules();
  const std::string name =
      rules || has_pools() ? destination_name(flight.job.destination) : std::string();
  const std::string_view source = split_egress(name).second;
  const config::reply_rule_entry* fired = nullptr;
  recipient_report fired_by;
  for (std::size_t i = 0; i < flight.results.size(); ++i) {
    recipient_report& r = flight.results[i];
    // Accepted at RCPT: the reply to the end of data decides, and is the one worth logging
    // (it carries the next hop's queue id).
    if (r.kind == outcome_kind::delivered) {
      const auto kind = result.outcome == smtp::client_outcome::accepted ? outcome_kind::delivered
                        : result.outcome == smtp::client_outcome::permanent_failure
                            ? outcome_kind::bounced
                            : outcome_kind::deferred;
      r = report_from(*result.reply, result.remote, flight.indices[i], kind);
    }
    if (result.tls != nullptr) note_tls(r, *result.tls);
    if (rules && r.kind != outcome_kind::delivered) {
      if (const auto* rule = rule_for(name, r.text)) {
        if (rule->action == config::reply_action::bounce) {
          r.kind = outcome_kind::bounced;
          r.text += fmt::format(" (bounced by reply rule {})", rule->origin);
        } else if (fired == nullptr) {
          fired = rule;
          fired_by = r;
        }
      }
    }
    r.attempts = static_cast<std::uint16_t>(flight.job.attempts + 1);
    r.session = flight.session;
    r.source.assign(source);
    r.attempt_ms = now - flight.started_ms;
    if (r.kind == outcome_kind::deferred) {
      keep_mask |= std::uint64_t{1} << (flight.indices[i] - flight.job.first_recipient);
      if (first_transient == nullptr) first_transient = &r;
    }
    all_permanent &= r.kind == outcome_kind::bounced;
  }
  spooled_message* const message = flight.message;
  const unsigned home = message->home;
  bool job_gone = true;
  if (all_permanent && !flight.results.empty()) {
    scheduler.failed(flight.job.id, now, failure_of(flight.results.front()));
  } else if (keep_mask == 0) {
    scheduler.delivered(flight.job.id, now);
  } else {
    const auto deferred =
        scheduler.deferred(flight.job.id, now, failure_of(*first_transient), keep_mask);
    job_gone = deferred.status != queue::defer_status::scheduled &&
               deferred.status != queue::defer_status::held;
    for (auto& r : flight.results) {
      if (r.kind != outcome_kind::deferred) continue;
      r.attempts = deferred.attempts;
      r.next_attempt_ms = deferred.next_attempt_ms;
      if (deferred.status == queue::defer_status::removed_by_operator) {  // deleted meanwhile
        r.kind = outcome_kind::deleted;
        r.text = fmt::format("{} (deleted by the operator)", r.text);
      } else if (job_gone) {  // expired (or bounced by the operator) while it was on the wire
        r.kind = outcome_kind::bounced;
        r.text = fmt::format("{} (gave up: {})", r.text,
                             deferred.status == queue::defer_status::expired
                                 ? "queue lifetime expired" : "bounced by the operator");
        r.status = {4, 4, 7};
      }
    }
    if (deferred.delay_warning) {  // first time past delay_warning: a "delayed" DSN too
      const std::size_t count = flight.results.size();
      for (std::size_t i = 0; i < count; ++i) {
        if (flight.results[i].kind != outcome_kind::deferred) continue;
        flight.results.push_back(flight.results[i]);
        flight.results.back().kind = outcome_kind::delayed;
      }
    }
  }
  std::vector<recipient_report> reports;
  reports.swap(flight.results);
  flight.phase = flight_phase::free;
  flight.message = nullptr;
  if (flight.converted.fd >= 0) {  // the memfd of a 7-bit conversion (no disk behind it)
    ::close(flight.converted.fd);
    flight.converted = {};
  }
  free_flights.push_back(slot);
  if (job_gone) job_left();
  report(message, home, std::move(reports));
  if (fired != nullptr) apply_rule(name, *fired, fired_by);
}

void relay::state::job_left() noexcept { metrics.queued_jobs.add(-1); }

// The message's queued and held jobs at `destination` are bounced now, their events (and so
// their DSNs) drained with the operator's reason; jobs in flight bounce when they defer, with
// the transaction's own reply (finish_delivery). The message may be freed by the drain.
void relay::state::bounce_now(const std::string& destination, const spooled_message& message,
                              std::string_view reason, std::int64_t now_ms) noexcept {
  bouncing = operator_bounce{message.id, reason};
  scheduler.bounce_message(destination, message_key_of(message), now_ms);
  drain_events(nullptr);
  bouncing = {};
}

void relay::on_closed(outbound::connection_handle, std::uint64_t destination,
                      const outbound::close_result& result) noexcept {
  auto& s = *_state;
  const std::int64_t now = s.owner.wall_ms();
  const auto connection = connection_of(destination);
  auto name_entry = s.connection_names.find(destination);
  const std::string name = name_entry != s.connection_names.end() ? name_entry->second : "";
  if (name_entry != s.connection_names.end()) s.connection_names.erase(name_entry);
  const std::uint64_t session = s.session_of(destination);
  s.opened_connections.erase(destination);
  s.drop_idle(s.idle_key(name), destination);
  recipient_report why = report_from(*result.reply, result.remote, 0, outcome_kind::deferred);
  why.session = session;
  why.source.assign(split_egress(name).second);
  // A 421 greeting, or a connection the server ended with 4xx/5xx: reply rules may fire.
  const bool refused = result.reason == outbound::close_reason::destination_failed ||
                       result.reason == outbound::close_reason::lost;
  const config::reply_rule_entry* rule =
      refused && why.reply_code >= 400 ? s.rule_for(name, why.text) : nullptr;
  if (rule != nullptr && rule->action == config::reply_action::bounce) rule = nullptr;
  if (result.reason != outbound::close_reason::destination_failed) {
    s.scheduler.connection_closed(connection, now);
    if (rule != nullptr) s.apply_rule(name, *rule, why);
    return s.poll();
  }
  if (result.failure == smtp::client_outcome::permanent_failure) {
    // Null MX, NXDOMAIN, every server said 5xx: every job of the destination bounces now.
    s.scheduler.connection_closed(connection, now);
    s.permanent_failures[name] = why;
    s.scheduler.bounce_all(name, now);
  } else {
    // Each job this failure counted an attempt for comes out as one `deferred` event: its
    // home records it (attempts and retry time survive a restart) and logs it once.
    s.scheduler.connection_failed(connection, now, failure_of(why));
    s.drain_events(&why);
    if (rule != nullptr) s.apply_rule(name, *rule, why);
  }
  s.poll();
}

void relay::state::drain_events(const recipient_report* why) noexcept {
  queue::job_event event;
  while (scheduler.next_event(event)) handle_event(event, why);
}

void relay::state::handle_event(const queue::job_event& event,
                                const recipient_report* why) noexcept {
  spooled_message* const message = &message_of(event.job.message);
  const unsigned home = message->home;
  std::vector<recipient_report> reports;
  queue::destination_info info;
  scheduler.inspect(event.job.destination, info);
  const auto permanent = permanent_failures.find(std::string(info.name));
  event.job.for_each_recipient([&](std::uint16_t index) {
    recipient_report r;
    r.index = index;
    r.attempts = event.job.attempts;
    if (event.kind == queue::event_kind::deferred) {
      if (why != nullptr) r = *why;  // the reply and the remote host of the failure
      else r.text = std::string(event.job.last_error);
      r.index = index;
      r.attempts = event.job.attempts;
      r.kind = outcome_kind::deferred;
      r.next_attempt_ms = event.next_attempt_ms;
      if (why == nullptr) r.status = event.job.last_status;
    } else if (event.kind == queue::event_kind::delay_warning) {
      r.kind = outcome_kind::delayed;
      r.next_attempt_ms = event.next_attempt_ms;
      r.status =
          event.job.last_status.valid() ? event.job.last_status : queue::status_code{4, 0, 0};
      r.text = std::string(event.job.last_error);
    } else if (event.kind == queue::event_kind::removed_by_operator) {
      r.kind = outcome_kind::deleted;
      r.text = "deleted by the operator";
    } else if (event.kind == queue::event_kind::bounced_by_operator &&
               permanent != permanent_failures.end()) {
      r = permanent->second;
      r.index = index;
      r.kind = outcome_kind::bounced;
    } else {
      r.kind = outcome_kind::bounced;
      const bool expired = event.kind == queue::event_kind::expired;
      r.status = expired ? queue::status_code{4, 4, 7} : queue::status_code{5, 0, 0};
      r.reply_code = expired ? 0 : 550;
      r.text = expired ? fmt::format("delivery time expired; last error: {}", event.job.last_error)
                       : std::string("bounced by the operator");
      if (!expired && bouncing.id == message->id && !bouncing.reason.empty())
        r.text.append(": ").append(bouncing.reason);
    }
    reports.push_back(std::move(r));
  });
  if (event.kind == queue::event_kind::expired ||
      event.kind == queue::event_kind::bounced_by_operator ||
      event.kind == queue::event_kind::removed_by_operator)
    job_left();
  report(message, home, std::move(reports));
}

}  // namespace ringmta::server
