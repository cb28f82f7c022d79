#include "ringmta/server/daemon.h"

#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <future>
#include <optional>
#include <memory>
#include <thread>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "ringmta/admin/http_server.h"
#include "ringmta/admin/log.h"
#include "ringmta/admin/metrics.h"
#include "ringmta/core/allocator.h"
#include "ringmta/core/clock.h"
#include "ringmta/server/inbound.h"
#include "ringmta/server/liveness.h"
#include "ringmta/server/privileges.h"
#include "ringmta/server/service_notify.h"
#include "ringmta/server/relay.h"
#include "relay_internal.h"
#include "ringmta/server/spool_ring_driver.h"
#include "ringmta/shard/pinning.h"
#include "ringmta/shard/runtime.h"
#include "ringmta/spool/listing.h"
#include "ringmta/spool/recovery.h"
#include "ringmta/spool/store.h"
#include "ringmta/spool/sync_driver.h"
#include "ringmta/tls/ktls.h"

namespace ringmta::server {
namespace {

// Descriptors besides inbound sessions, per shard: outbound connections (outbound::config
// connections_max) and splice pipes (2 x transfers_max), DNS sockets; spool segments and
// journals (a segment holds up to 64 MiB, so hundreds of GiB queued stay below this).
constexpr std::uint64_t outbound_descriptors_per_shard = 1024 + 2 * 64 + 8;
constexpr std::uint64_t spool_descriptors_per_shard = 256;

// Start-up and shutdown messages: one line each on stderr, in the configured format.
void log_event(admin::log_format format, std::string_view event, std::string_view detail) {
  admin::log_buffer line(format, 8192);
  line.set_time(core::wall_milliseconds());
  line.record(event).field("detail", detail);
  admin::flush_to(line, STDERR_FILENO);
}

// The spool's running counters, mirrored once per loop iteration (the store is shard-local).
struct spool_metrics {
  admin::counter flushes;
  admin::counter datasyncs;
  admin::counter bytes_written;
  admin::counter segments_created;
  admin::counter segments_removed;
  admin::counter journal_snapshots;

  void mirror(const spool::store_stats& s) noexcept {
    flushes.set_total(s.flushes);
    datasyncs.set_total(s.datasyncs);
    bytes_written.set_total(s.bytes_written);
    segments_created.set_total(s.segments_created);
    segments_removed.set_total(s.segments_removed);
    journal_snapshots.set_total(s.journal_snapshots);
  }
};

struct shard_metrics {
  inbound_metrics inbound;
  relay_metrics relay;
  spool_metrics spool;
};

// Everything one shard runs. Created on the shard's thread (on_start), destroyed there too.
class shard_services final : public shard::iteration_hook {
 public:
  shard_services(shard::shard& owner, const inbound_config& inbound_settings,
                 const relay_config& relay_settings, std::unique_ptr<spool::store> store,
                 bool unsafe_no_fsync, shard_metrics& metrics, admin::log_format format)
      : _store(std::move(store)),
        _driver(owner, *_store, unsafe_no_fsync),
        _log(format),
        _format(format),
        _spool_metrics(metrics.spool),
        _front(inbound_settings, owner, *_store, _driver, metrics.inbound, _log),
        _relay(relay_settings, owner, *_store, metrics.relay, _log) {}

  relay& delivery() noexcept { return _relay; }

  // On failure, says which part could not start (the error alone says too little).
  core::result<void> start(shard::shard& owner) noexcept {
    auto failed = [&](const char* part, const core::result<void>& outcome) {
      if (outcome) return false;
      log_event(_format, "start_failed",
                fmt::format("shard {}: {}: {}", owner.id(), part, outcome.error_text()));
      return true;
    };
    if (auto ready = _driver.start(); failed("spool driver", ready)) return ready;
    _driver.set_listener([this](const spool::event& done) {
      if (done.kind != spool::event_kind::committed) return;
      if (_relay.on_committed(done.ticket, done.error)) return;  // a DSN being spooled
      _front.on_committed(done.ticket, done.error);
    });
    _front.set_accepted_listener(
        [this](const spool::envelope& envelope, std::span<const spool::body_slice> body) {
          _relay.route(envelope, body);
        });
    owner.add_iteration_hook(*this);  // the spool's group commit: one flush per iteration
    if (auto ready = _front.start(); failed("listeners and receive buffers", ready)) return ready;
    auto ready = _relay.start();
    failed("relay (DNS and outbound)", ready);
    return ready;
  }

  void before_wait(shard::shard&) noexcept override {
    _store->flush();  // group commit: one write + one fdatasync for this iteration's messages
    _driver.pump();
    _front.retry_waiting();
    if (!_log.pending().empty()) admin::flush_to(_log, STDOUT_FILENO);
    _spool_metrics.mirror(_store->counters());
    _finished.store(_front.drained() && _relay.drained() && _store->idle() &&
                        _driver.operations_in_flight() == 0,
                    std::memory_order_relaxed);
  }

  // Reload: new TLS sessions of this shard use `context` (on the shard's thread).
  void set_tls_context(std::shared_ptr<const tls::server_context> context) noexcept {
    _front.set_tls_context(std::move(context));
  }

  void begin_shutdown(std::uint32_t grace_ms) noexcept {
    _front.begin_shutdown(grace_ms);
    _relay.begin_shutdown();
  }
  void stop() noexcept { _relay.stop(); }
  bool finished() const noexcept { return _finished.load(std::memory_order_relaxed); }

 private:
  std::unique_ptr<spool::store> _store;
  spool_ring_driver _driver;
  admin::log_buffer _log;
  admin::log_format _format;
  spool_metrics& _spool_metrics;
  inbound _front;
  relay _relay;
  std::atomic<bool> _finished{false};
};

std::vector<std::unique_ptr<shard_services>>* g_services = nullptr;

// The admin thread asks a shard's relay something and waits (bounded) for the answer.
struct admin_request {
  std::function<std::string(relay&)> work;
  std::promise<std::string> answer;
};

void on_admin_request(shard::shard& target, const shard::message& m) noexcept {
  auto* request = reinterpret_cast<std::shared_ptr<admin_request>*>(m.words[0]);
  try {
    (*request)->answer.set_value((*request)->work((*g_services)[target.id()]->delivery()));
  } catch (...) {  // admin work may allocate; the shard keeps running whatever happens
  }
  delete request;
}

std::optional<std::string> ask_shard(shard::runtime& runtime, unsigned shard,
                                     std::function<std::string(relay&)> work) {
  auto request = std::make_shared<admin_request>();
  request->work = std::move(work);
  auto answer = request->answer.get_future();
  shard::message m{};
  m.handler = &on_admin_request;
  auto* owned = new std::shared_ptr<admin_request>(request);
  m.words[0] = reinterpret_cast<std::uintptr_t>(owned);
  if (!runtime.post(shard, m)) {
    delete owned;
    return std::nullopt;
  }
  if (answer.wait_for(std::chrono::seconds(2)) != std::future_status::ready) return std::nullopt;
  return answer.get();
}

// GET /queue: every shard's destinations. POST /queue/DESTINATION/ACTION: suspend, resume,
// flush (retry now) or bounce (every queued message of the destination, with a DSN).
admin::http_response queue_api(shard::runtime& runtime, unsigned shards,
                               const admin::http_request& r) {
  const auto fail = [](int status, std::string text) {
    return admin::http_response{status, "application/json",
                                "{\"error\":\"" + json_escape(text) + "\"}\n"};
  };
  if (r.method == "GET" && (r.path == "/queue" || r.path == "/queue/")) {
    std::string out = "[";
    for (unsigned shard = 0; shard < shards; ++shard) {
      auto part = ask_shard(runtime, shard, [](relay& owner) {
        return owner.destinations_json(1000);
      });
      if (!part) return fail(503, "shard did not answer");
      if (part->size() > 2) out += (out.size() > 1 ? "," : "") + part->substr(1, part->size() - 2);
    }
    return {200, "application/json", out + "]\n"};
  }
  if (r.method != "POST") return fail(405, "use GET /queue or POST /queue/DESTINATION/ACTION");
  const std::string rest = r.path.substr(std::string("/queue/").size());
  const auto slash = rest.find('/');
  if (slash == std::string::npos) return fail(404, "POST /queue/DESTINATION/ACTION");
  const std::string destination = destination_of("@" + rest.substr(0, slash), "");
  const std::string action = rest.substr(slash + 1);
  auto answer = ask_shard(runtime, owner_of(destination, shards),
                          [destination, action](relay& owner) {
                            return owner.operate(destination, action);
                          });
  if (!answer) return fail(503, "shard did not answer");
  if (answer->empty()) return fail(400, "unknown action: " + action);
  return {200, "application/json", *answer + "\n"};
}

unsigned shard_count_for(const config::settings& settings) {
  if (settings.shards > 0) return settings.shards;
  const unsigned cores = std::thread::hardware_concurrency();
  return cores > 0 ? cores : 1;
}

// Every shard directory that holds queued mail must have a shard to serve it.
void check_spool_shards(const std::string& spool_dir, unsigned shards) {
  auto present = spool::shards_in(spool_dir);
  if (!present) return;  // a new spool: created below
  for (const std::uint32_t index : present.value()) {
    if (index < shards) continue;
    auto recovered = spool::recover(spool::shard_directory(spool_dir, index), index);
    if (recovered && !recovered.value().messages.empty())
      throw config::error(fmt::format(
          "{}: {} messages are queued in shard-{} but only {} shards are configured: start "
          "with --shards {} or more",
          spool_dir, recovered.value().messages.size(), index, shards, index + 1));
  }
}

inbound_config make_inbound_config(const config::settings& settings) {
  inbound_config c;
  c.listen = settings.listen;
  c.hostname = settings.hostname;
  c.greeting_text = settings.greeting_text;
  c.relay.mynetworks = settings.mynetworks;
  c.relay.relay_domains = settings.relay_domains;
  c.proxy_protocol = settings.proxy_protocol;
  c.sessions_per_shard_max = settings.sessions_per_shard_max;
  c.sessions_per_client_max = settings.sessions_per_client_max;
  c.timeout_command_ms = settings.timeout_command_s * 1000;
  c.timeout_data_block_ms = settings.timeout_data_block_s * 1000;
  c.greeting_delay_ms = settings.greeting_delay_ms;
  c.hops_max = settings.hops_max;
  c.min_data_rate_bytes = settings.min_data_rate_bytes;
  c.timeout_under_load_ms = settings.timeout_under_load_ms;
  c.load_threshold_percent = settings.load_threshold_percent;
  c.recipients.hostname = settings.hostname;
  c.recipients.postmaster = settings.postmaster;
  for (const auto& r : settings.routes) c.recipients.routed.push_back(r.destination);
  auto& engine = c.engine;
  engine.limits.message_bytes_max = settings.message_bytes_max;
  engine.limits.recipients_max = std::min<std::uint32_t>(settings.recipients_max, 65535);
  engine.limits.errors_max = settings.errors_per_session_max;
  // No BINARYMIME: relaying such a message needs the next hop to take BINARYMIME over BDAT
  // for the whole body, which delivery does not promise (bodies over 64 KiB go with DATA);
  // DATA would break binary content. Clients send binary data encoded (RFC 2045) instead.
  engine.extensions.binary_mime = false;
  engine.bare_line_ending = settings.bare_line_endings == config::bare_line_ending_policy::reject
                                ? smtp::bare_line_ending_policy::reject
                                : smtp::bare_line_ending_policy::normalize;
  engine.long_lines = settings.long_lines == config::long_line_policy::fold
                          ? smtp::long_line_policy::fold
                          : smtp::long_line_policy::reject;
  return c;
}

void register_metrics(admin::registry& registry, const relay_metrics& m) {
  registry.add("ringmta_recipients_routed_total", "Recipients handed to delivery queues",
               m.routed_recipients);
  registry.add("ringmta_recipients_delivered_total", "Recipients delivered", m.delivered);
  registry.add("ringmta_recipients_deferred_total", "Delivery attempts deferred (4xx)",
               m.deferred);
  registry.add("ringmta_recipients_bounced_total", "Recipients bounced (5xx or expired)",
               m.bounced);
  registry.add("ringmta_dsn_queued_total", "Delivery status notifications spooled", m.dsn_queued);
  registry.add("ringmta_dsn_failed_total", "DSNs that could not be spooled", m.dsn_failed);
  registry.add("ringmta_outbound_connections_total", "Outbound SMTP connections opened",
               m.connections);
  registry.add("ringmta_queued_jobs", "Delivery jobs in the queues", m.queued_jobs);
  const char* bodies_help = "Message bodies sent, by how they left the spool";
  registry.add("ringmta_outbound_bodies_total{path=\"bdat\"}", bodies_help, m.bodies_bdat);
  registry.add("ringmta_outbound_bodies_total{path=\"data\"}", bodies_help, m.bodies_data);
  registry.add("ringmta_outbound_bodies_total{path=\"splice\"}", bodies_help, m.bodies_spliced);
  registry.add("ringmta_outbound_bodies_total{path=\"copy\"}", bodies_help, m.bodies_copied);
  registry.add("ringmta_outbound_body_bytes_total", "Body bytes handed to the kernel",
               m.body_bytes);
  registry.add("ringmta_outbound_connect_failures_total",
               "Outbound connects refused, unreachable or timed out", m.connect_failures);
  registry.add("ringmta_outbound_timeouts_total", "Outbound SMTP replies that timed out",
               m.outbound_timeouts);
}

void register_metrics(admin::registry& registry, const spool_metrics& m) {
  registry.add("ringmta_spool_flushes_total", "Group commits (one write flight each)", m.flushes);
  registry.add("ringmta_spool_datasyncs_total", "fdatasync calls completed", m.datasyncs);
  registry.add("ringmta_spool_bytes_written_total", "Bytes written to segments and journals",
               m.bytes_written);
  registry.add("ringmta_spool_segments_created_total", "Segment files created",
               m.segments_created);
  registry.add("ringmta_spool_segments_removed_total", "Segment files removed (all final)",
               m.segments_removed);
  registry.add("ringmta_spool_journal_snapshots_total", "Journal compactions",
               m.journal_snapshots);
}

void register_metrics(admin::registry& registry, const inbound_metrics& m) {
  registry.add("ringmta_connections_accepted_total", "SMTP connections accepted",
               m.connections_accepted);
  registry.add("ringmta_connections_refused_total{reason=\"shard_limit\"}",
               "SMTP connections refused with 421", m.connections_refused_shard_limit);
  registry.add("ringmta_connections_refused_total{reason=\"client_limit\"}",
               "SMTP connections refused with 421", m.connections_refused_client_limit);
  registry.add("ringmta_early_talkers_total", "Clients that sent before the greeting",
               m.early_talkers);
  registry.add("ringmta_session_timeouts_total", "Sessions closed by a timeout", m.timeouts);
  registry.add("ringmta_messages_accepted_total", "Messages answered 250 (durable)",
               m.messages_accepted);
  registry.add("ringmta_messages_rejected_total", "Messages rejected during DATA/BDAT",
               m.messages_rejected);
  registry.add("ringmta_message_bytes_total", "Bytes of accepted messages", m.message_bytes);
  registry.add("ringmta_recipients_accepted_total", "Recipients accepted",
               m.recipients_accepted);
  registry.add("ringmta_relay_denied_total", "Recipients refused: relay access denied",
               m.relay_denied);
  registry.add("ringmta_recipients_duplicate_total",
               "RCPTs folded into an earlier one of the same transaction", m.recipients_duplicate);
  registry.add("ringmta_recipients_unknown_total",
               "Recipients at our own names refused (no mailbox, no --postmaster)",
               m.recipients_unknown);
  registry.add("ringmta_spool_failures_total", "Messages answered 452 for a spool failure",
               m.spool_failures);
  registry.add("ringmta_sessions", "Open SMTP sessions", m.sessions);
  registry.add("ringmta_accept_pauses_total",
               "Listener paused: accept failed for want of descriptors or memory", m.accept_pauses);
  registry.add("ringmta_load_episodes_total",
               "Times a shard went above --load-threshold (shorter timeouts)", m.load_episodes);
  registry.add("ringmta_commit_latency_seconds", "End of data to durable (fdatasync done)",
               m.commit_latency);
  register_metrics(registry, m.dkim);
  registry.add("ringmta_tls_handshakes_total{direction=\"in\"}",
               "TLS handshakes completed (STARTTLS and implicit TLS)", m.tls_handshakes);
  registry.add("ringmta_tls_resumptions_total{direction=\"in\"}",
               "TLS handshakes that resumed a session (ticket)", m.tls_resumed);
  const char* failures = "TLS handshakes that failed, by reason";
  for (std::size_t reason = 1; reason < m.tls_failures.size(); ++reason) {
    registry.add(fmt::format("ringmta_tls_handshake_failures_total{{direction=\"in\","
                             "reason=\"{}\"}}",
                             tls::describe(static_cast<tls::failure>(reason))),
                 failures, m.tls_failures[reason]);
  }
  registry.add("ringmta_tls_handshake_failures_total{direction=\"in\",reason=\"timeout\"}",
               failures, m.tls_timeouts);
}

// The address literals that name this host (RFC 5321 §4.1.3): "[192.0.2.1]", "[ipv6:::1]".
void set_own_literals(recipient_policy& policy, const std::vector<core::endpoint>& bound) {
  for (const auto& at : core::expand_wildcards(bound)) {
    const std::string address = at.address_string();
    policy.own_literals.push_back(address.find(':') == std::string::npos
                                      ? "[" + address + "]"
                                      : "[ipv6:" + address + "]");
  }
}

// --postmaster must lead to a mailbox elsewhere: at one of our own names it would loop.
void check_postmaster(const inbound_config& front, admin::log_format format) {
  const std::string& alias = front.recipients.postmaster;
  if (alias.empty()) {
    log_event(format, "warning",
              "no --postmaster: RCPT TO:<postmaster> and postmaster@" +
                  front.recipients.hostname + " are refused (RFC 5321 4.5.1 requires them)");
    return;
  }
  const std::string_view domain = std::string_view(alias).substr(alias.rfind('@') + 1);
  if (front.recipients.is_own_name(domain, front.relay))
    throw config::error(fmt::format("--postmaster {}: {} is one of our own names, which have no "
                                    "mailboxes: give a mailbox on another host",
                                    alias, domain));
}

// One descriptor per session, outbound connection, splice pipe end and spool file: raise the
// soft RLIMIT_NOFILE to what the limits need (never beyond the hard limit, never lower), and
// say so when that is not enough. At the limit the listeners pause (inbound.cc), they do not
// spin, but clients then wait for a greeting: a lower --max-sessions-per-shard answers 421.
void raise_descriptor_limit(const config::settings& settings, unsigned shards,
                            admin::log_format format) {
  const std::uint64_t per_shard = std::uint64_t{settings.sessions_per_shard_max} +
                                  outbound_descriptors_per_shard + spool_descriptors_per_shard;
  const std::uint64_t needed = per_shard * shards + 64;  // listeners, admin, stdio, DNS
  rlimit files{};
  if (::getrlimit(RLIMIT_NOFILE, &files) != 0) return;
  if (files.rlim_cur < needed && files.rlim_cur < files.rlim_max) {
    files.rlim_cur = files.rlim_max == RLIM_INFINITY ? needed
                                                     : std::min<rlim_t>(needed, files.rlim_max);
    ::setrlimit(RLIMIT_NOFILE, &files);
    ::getrlimit(RLIMIT_NOFILE, &files);
  }
  if (files.rlim_cur >= needed) return;
  log_event(format, "warning",
            fmt::format("RLIMIT_NOFILE is {} but the limits need {} descriptors ({} shards x "
                        "({} sessions + {} outbound + {} spool) + 64): at the limit accepting "
                        "pauses; lower --max-sessions-per-shard to about {} or raise the hard "
                        "limit (LimitNOFILE=)",
                        files.rlim_cur, needed, shards, settings.sessions_per_shard_max,
                        outbound_descriptors_per_shard, spool_descriptors_per_shard,
                        files.rlim_cur > 64 + shards * (per_shard - settings.sessions_per_shard_max)
                            ? (files.rlim_cur - 64) / shards -
                                  (per_shard - settings.sessions_per_shard_max)
                            : 0));
}

sigset_t termination_signals() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  return set;
}

// The inbound TLS context, STARTTLS on every listener, the implicit TLS listeners, and the kTLS
// probe's answer (logged once). A certificate that cannot be used is a start-up error (exit 2).
void start_tls(const config::settings& settings, admin::log_format format, inbound_config& c) {
  c.implicit_tls.assign(c.listen.size(), false);
  auto loaded = load_tls_server_context(settings, nullptr);
  if (!loaded.error.empty()) throw config::error("tls: " + loaded.error);
  c.tls = loaded.context;
  c.engine.starttls_offered = c.tls != nullptr;
  c.engine_implicit_tls = c.engine;
  c.engine_implicit_tls.tls_active = true;  // RFC 8314: TLS from the first byte
  c.timeout_tls_handshake_ms = settings.timeout_tls_handshake_s * 1000;
  for (const auto& at : settings.tls_listen) {
    c.listen.push_back(at);
    c.implicit_tls.push_back(true);
  }
  if (!c.tls) return;
  const auto ktls = tls::probe_ktls();
  log_event(format, "tls", fmt::format("certificates: {}; minimum {}; kTLS: {}",
                                       c.tls->description(), settings.tls_min_version,
                                       ktls.detail));
}

}  // namespace

tls::server_load_result load_tls_server_context(const config::settings& settings,
                                                std::shared_ptr<tls::ticket_key_ring> keys) {
  if (settings.tls_cert_files.empty()) return {};
  tls::server_settings s;
  for (std::size_t i = 0; i < settings.tls_cert_files.size(); ++i)
    s.certificates.push_back({settings.tls_cert_files[i], settings.tls_key_files.at(i)});
  if (!tls::parse_version(settings.tls_min_version, s.min_version))
    return {nullptr, "bad minimum version " + settings.tls_min_version};
  if (!settings.tls_ciphers.empty()) s.ciphers = settings.tls_ciphers;
  if (!settings.tls_ciphersuites.empty()) s.ciphersuites = settings.tls_ciphersuites;
  s.ask_client_certificate = settings.tls_ask_client_certificate;
  if (!keys) keys = std::make_shared<tls::ticket_key_ring>(settings.tls_ticket_key_rotation_s);
  return tls::load_server_context(s, std::move(keys));
}

int run_daemon(const config::settings& settings, const daemon_hooks& hooks) {
  const auto format =
      settings.log_format == "json" ? admin::log_format::json : admin::log_format::text;
  const unsigned shards = shard_count_for(settings);
  const privilege_plan privileges = plan_privileges(settings);  // refuse root early
  if (settings.unsafe_no_fsync)
    log_event(format, "warning",
              "--unsafe-no-fsync: 250 replies do not wait for fdatasync; mail is lost on a crash");

  raise_descriptor_limit(settings, shards, format);

  // Signals go to the main thread only: block them before any thread starts.
  const sigset_t signals = termination_signals();
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  ::signal(SIGPIPE, SIG_IGN);

  // DKIM keys: read and checked before anything starts (a bad key is a start-up error).
  auto dkim_keys = dkim::build_key_table(settings);
  for (const auto& key : dkim_keys->keys)
    log_event(format, "dkim_key",
              fmt::format("{} selector {}: {} {} bits from {}", key.domain, key.selector,
                          dkim::name_of(key.key->algorithm()), key.key->bits(), key.key_file));

  // Spool: recover every shard before taking any connection.
  check_spool_shards(settings.spool_dir, shards);
  std::vector<std::unique_ptr<spool::store>> stores;
  for (unsigned shard = 0; shard < shards; ++shard) {
    if (auto made = spool::make_shard_directory(settings.spool_dir, shard); !made)
      throw config::error(fmt::format("{}: cannot create spool directory: {}",
                                      settings.spool_dir, made.error_text()));
    const std::string directory = spool::shard_directory(settings.spool_dir, shard);
    auto recovered = spool::recover(directory, shard);
    if (!recovered)
      throw config::error(fmt::format("{}: cannot read spool: {}", directory,
                                      recovered.error_text()));
    const auto& report = recovered.value().report;
    log_event(format, "spool_recovered",
              fmt::format("shard {}: {} queued, {} segments, {} torn tails, {} corrupt regions, "
                          "{} incomplete",
                          shard, report.messages, report.segments, report.torn_tails,
                          report.corrupt_regions, report.incomplete_messages));
    for (const auto& problem : report.problems) log_event(format, "spool_problem", problem);
    spool::store_config store_settings;
    store_settings.directory = directory;
    store_settings.shard = shard;
    store_settings.random_seed = spool::random_seed();
    store_settings.segment_bytes = settings.spool_segment_bytes;
    stores.push_back(
        std::make_unique<spool::store>(store_settings, std::move(recovered).value()));
  }

  inbound_config front = make_inbound_config(settings);
  front.dkim_keys = std::move(dkim_keys);
  front.engine.hostname = front.hostname;
  front.engine.greeting_text = front.greeting_text;
  start_tls(settings, format, front);
  client_counters clients;
  front.clients = &clients;
  std::vector<core::endpoint> bound;
  auto listeners = open_listeners(front.listen, shards, bound);
  if (!listeners)
    throw config::error(fmt::format("cannot listen on {}: {}", settings.listen.front().to_string(),
                                    listeners.error_text()));
  front.listener_fds = std::move(listeners).value();
  set_own_literals(front.recipients, bound);
  check_postmaster(front, format);
  admin::http_server admin_server;
  if (auto admin_bound = admin_server.bind(settings.admin_listen); !admin_bound)
    throw config::error(fmt::format("cannot listen on {} (admin): {}",
                                    settings.admin_listen.front().to_string(),
                                    admin_bound.error_text()));
  if (settings.debug_endpoints)
    log_event(format, "warning", "--debug-endpoints: POST /debug/freeze/SHARD blocks shards");
  // Everything that needs root is open: the spool goes to --user, and so do we.
  const auto log_line = [format](std::string_view event, std::string_view detail) {
    log_event(format, event, detail);
  };
  hand_spool_over(privileges, settings.spool_dir, log_line);
  log_event(format, "privileges", drop_privileges(privileges, settings.spool_dir));

  // Metrics and the admin endpoint.
  std::vector<std::unique_ptr<shard_metrics>> metrics;
  admin::registry registry;
  for (unsigned shard = 0; shard < shards; ++shard) {
    metrics.push_back(std::make_unique<shard_metrics>());
    register_metrics(registry, metrics.back()->inbound);
    register_metrics(registry, metrics.back()->relay);
    register_metrics(registry, metrics.back()->spool);
  }
  std::atomic<bool> stopping{false};
  std::atomic<bool> runtime_ready{false};  // the queue API needs running shards
  shard::runtime* runtime_pointer = nullptr;
  if (!settings.admin_listen.empty()) {
    auto started = admin_server.start([&](const admin::http_request& r) {
      if (r.path == "/metrics")
        return admin::http_response{200, "text/plain; version=0.0.4", registry.render_prometheus()};
      if (r.path == "/health")
        return health_response(runtime_ready.load() ? runtime_pointer : nullptr, stopping.load());
      if (r.path.rfind("/queue", 0) == 0 && runtime_ready.load())
        return queue_api(*runtime_pointer, shards, r);
      if (r.path.rfind("/debug/", 0) == 0 && settings.debug_endpoints && runtime_ready.load())
        return debug_request(*runtime_pointer, r);
      return admin::http_response{404, "text/plain", "not found\n"};
    });
    if (!started)
      throw config::error(fmt::format("cannot start the admin endpoint: {}",
                                      started.error_text()));
  }

  // Shards.
  relay_config delivery = make_relay_config(settings);
  delivery.outbound.self_endpoints = core::expand_wildcards(bound);  // MX loops (RFC 5321 §5.1)
  std::vector<relay*> relays(shards, nullptr);
  delivery.shards = &relays;
  std::vector<std::unique_ptr<shard_services>> services(shards);
  g_services = &services;
  shard::runtime_options options;
  options.shard_count = shards;
  const auto pinning = shard::choose_pinning(
      settings.pin_threads == config::pin_policy::automatic
          ? std::nullopt
          : std::optional<bool>(settings.pin_threads == config::pin_policy::on),
      shard::read_cpu_view());
  options.pin_threads = pinning.pin;
  log_event(format, "cpu_pinning", pinning.reason);
  options.ring.sq_entries = 4096;
  shard::runtime runtime(options);
  std::string ring_description;
  auto started = runtime.start(
      [&](shard::shard& owner) -> core::result<void> {
        const unsigned id = owner.id();
        services[id] = std::make_unique<shard_services>(owner, front, delivery,
                                                        std::move(stores[id]),
                                                        settings.unsafe_no_fsync, *metrics[id],
                                                        format);
        relays[id] = &services[id]->delivery();
        if (id == 0) ring_description = owner.ring().features().describe();
        return services[id]->start(owner);
      },
      // Objects outlive the threads (in-flight ops may still complete); sockets close here.
      [&](shard::shard& owner) { services[owner.id()]->stop(); });
  if (!started) {
    // The shards have stopped; their services hold timers on the shards' wheels: destroy them
    // before the runtime goes.
    services.clear();
    throw config::error(fmt::format("cannot start shards ({}): {}", runtime.start_failure(),
                                    started.error_text()));
  }
  runtime_pointer = &runtime;
  runtime_ready = true;
  log_event(format, "started",
            fmt::format("ringmta {} shards, {}, {}; {}", shards, core::allocator_name(),
                        settings.unsafe_no_fsync ? "UNSAFE no fsync" : "fdatasync on",
                        ring_description));
  for (std::size_t i = 0; i < bound.size(); ++i)
    log_event(format, front.implicit_tls[i] ? "listening_tls" : "listening", bound[i].to_string());
  for (const auto& at : admin_server.bound()) log_event(format, "admin_listening", at.to_string());
  if (hooks.on_listening) hooks.on_listening(bound, admin_server.bound());
  service_notifier notifier(log_line);
  notifier.ready(fmt::format("accepting mail on {} ({} shards)", bound.front().to_string(),
                             shards),
                 [&runtime] { return stalled_shard(runtime); });

  int signal_number = 0;
  sigwait(&signals, &signal_number);
  stopping = true;
  notifier.stopping(fmt::format("stopping: sessions get {} s to finish", settings.shutdown_grace_s));
  log_event(format, "stopping", fmt::format("signal {}: grace {} s", signal_number,
                                            settings.shutdown_grace_s));
  for (unsigned shard = 0; shard < shards; ++shard) {
    shard::message begin{};
    begin.handler = [](shard::shard& target, const shard::message& m) noexcept {
      (*g_services)[target.id()]->begin_shutdown(static_cast<std::uint32_t>(m.words[0]));
    };
    begin.words[0] = settings.shutdown_grace_s * 1000ull;
    runtime.post(shard, begin);
  }
  // Sessions get the grace time, then 421 and a few seconds to close; the spool's last writes
  // and syncs complete before the shards stop.
  const auto deadline = std::chrono::steady_clock::now() +
                        std::chrono::seconds(settings.shutdown_grace_s + 10);
  auto all_finished = [&] {
    for (const auto& s : services)
      if (s && !s->finished()) return false;
    return true;
  };
  while (!all_finished() && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  runtime_ready = false;
  admin_server.stop();  // no admin request may reach a stopping shard
  runtime.request_stop();
  runtime.join();
  notifier.stop();
  services.clear();  // after join: no shard thread runs their handlers any more
  g_services = nullptr;
  log_event(format, "stopped", all_finished() ? "clean" : "grace expired");
  return 0;
}

namespace {

// Reads queued messages of one shard directory without changing anything on disk: a store
// over the recovered files answers read(); its own start-up operations (a new segment, a
// journal snapshot) are never performed.
class spool_reader {
 public:
  static core::result<std::unique_ptr<spool_reader>> open(const std::string& spool_directory,
                                                          std::uint32_t shard) {
    const std::string directory = spool::shard_directory(spool_directory, shard);
    auto recovered = spool::recover(directory, shard);
    if (!recovered) return core::fail(recovered.error());
    spool::store_config settings;
    settings.directory = directory;
    settings.shard = shard;
    return std::unique_ptr<spool_reader>(
        new spool_reader(std::make_unique<spool::store>(settings, std::move(recovered).value())));
  }

  std::vector<spool::message_id> queued() const {
    std::vector<spool::message_id> ids;
    _store->for_each_message([&](const spool::message_entry& entry) {
      if (entry.status == spool::message_status::queued) ids.push_back(entry.id);
    });
    std::sort(ids.begin(), ids.end());
    return ids;
  }

  // The message as stored (wire form) or, unless `wire`, as the client sent it.
  core::result<std::string> message(spool::message_id id, bool wire) const {
    auto stored = _store->read(id);
    if (!stored) return core::fail(stored.error());
    std::string body;
    for (const auto& slice : stored.value().body) {
      const std::size_t at = body.size();
      body.resize(at + slice.length);
      if (::pread(slice.fd, body.data() + at, slice.length, static_cast<off_t>(slice.offset)) !=
          static_cast<ssize_t>(slice.length))
        return core::fail(EIO);
    }
    if (!wire) body.resize(spool::undo_dot_stuffing(body.data(), body.size()));  // RFC 5321 §4.5.2
    return body;
  }

 private:
  explicit spool_reader(std::unique_ptr<spool::store> store) : _store(std::move(store)) {}
  std::unique_ptr<spool::store> _store;
};

}  // namespace

int cat_spool_command(const std::string& spool_directory, const std::string& id_text, bool wire) {
  const auto id = spool::parse_message_id(id_text);
  if (!id) {
    std::fprintf(stderr, "ringmta: '%s' is not a message id (16 hex digits)\n", id_text.c_str());
    return 2;
  }
  auto reader = spool_reader::open(spool_directory, spool::message_id_shard(*id));
  auto message = reader ? reader.value()->message(*id, wire)
                        : core::result<std::string>(core::fail(reader.error()));
  if (!message) {
    std::fprintf(stderr, "ringmta: %s: %s\n", id_text.c_str(), message.error_text());
    return 1;
  }
  std::fwrite(message.value().data(), 1, message.value().size(), stdout);
  return 0;
}

int export_spool_command(const std::string& spool_directory, const std::string& out_directory,
                         bool wire) {
  std::size_t written = 0, failed = 0;
  auto shards = spool::shards_in(spool_directory);
  if (!shards) {
    std::fprintf(stderr, "ringmta: %s: %s\n", spool_directory.c_str(), shards.error_text());
    return 1;
  }
  std::error_code made;  // DIR is created (with its parents) like `mkdir -p`
  std::filesystem::create_directories(out_directory, made);
  if (made) {
    std::fprintf(stderr, "ringmta: %s: cannot create: %s\n", out_directory.c_str(),
                 made.message().c_str());
    return 1;
  }
  for (const std::uint32_t shard : shards.value()) {
    auto reader = spool_reader::open(spool_directory, shard);
    if (!reader) {
      std::fprintf(stderr, "ringmta: shard-%u: %s\n", shard, reader.error_text());
      ++failed;
      continue;
    }
    for (const spool::message_id id : reader.value()->queued()) {
      const auto name = spool::format_message_id(id);
      auto message = reader.value()->message(id, wire);
      const std::string path = out_directory + "/" + name.data() + ".eml";
      std::FILE* out = message ? std::fopen(path.c_str(), "wb") : nullptr;
      bool ok = out != nullptr && std::fwrite(message.value().data(), 1, message.value().size(),
                                              out) == message.value().size();
      const int error = errno;
      if (out != nullptr && std::fclose(out) != 0) ok = false;
      if (ok) {
        ++written;
        continue;
      }
      std::fprintf(stderr, "ringmta: %s: cannot export: %s\n",
                   message ? path.c_str() : name.data(),
                   message ? std::strerror(error != 0 ? error : errno) : message.error_text());
      ++failed;
    }
  }
  std::printf("%zu messages exported to %s\n", written, out_directory.c_str());
  return failed == 0 ? 0 : 1;
}

// `text` padded with spaces to `width` columns, counting UTF-8 code points rather than octets
// (printf's %-30s counts octets, so a UTF-8 sender shifted every column after it).
static std::string padded_columns(std::string_view text, std::size_t width) {
  const auto points = static_cast<std::size_t>(std::count_if(text.begin(), text.end(), [](char c) {
    return (static_cast<unsigned char>(c) & 0xc0) != 0x80;  // not a continuation octet
  }));
  std::string out(text);
  if (points < width) out.append(width - points, ' ');
  return out;
}

int list_spool_command(const std::string& spool_directory, bool json) {
  auto listing = spool::list_spool(spool_directory);
  if (!listing) {
    std::fprintf(stderr, "ringmta: %s: %s\n", spool_directory.c_str(), listing.error_text());
    return 1;
  }
  const std::int64_t now = core::wall_seconds();
  if (json) {
    auto out = nlohmann::json::array();
    for (const auto& m : listing.value().messages) {
      auto recipients = nlohmann::json::array();
      for (const auto& r : m.recipients)
        recipients.push_back({{"address", r.address},
                              {"state", spool::recipient_state_name(r.status.state)},
                              {"attempts", r.status.attempts}});
      out.push_back({{"id", spool::format_message_id(m.id).data()},
                     {"shard", m.shard},
                     {"sender", m.sender},
                     {"recipients", recipients},
                     {"size", m.body_bytes},
                     {"age_seconds", now - m.received_seconds}});
    }
    std::printf("%s\n", out.dump(1).c_str());
  } else {
    std::printf("%-16s %10s %8s  %-30s %s\n", "ID", "SIZE", "AGE", "SENDER", "RECIPIENTS");
    for (const auto& m : listing.value().messages) {
      std::string recipients;
      for (const auto& r : m.recipients)
        recipients += fmt::format("{}{} ({})", recipients.empty() ? "" : ", ", r.address,
                                  spool::recipient_state_name(r.status.state));
      std::printf("%-16s %10llu %7llds  %s %s\n", spool::format_message_id(m.id).data(),
                  static_cast<unsigned long long>(m.body_bytes),
                  static_cast<long long>(now - m.received_seconds),
                  padded_columns(m.sender.empty() ? "<>" : m.sender, 30).c_str(),
                  recipients.c_str());
    }
    std::printf("%zu messages queued\n", listing.value().messages.size());
  }
  for (const auto& problem : listing.value().problems)
    std::fprintf(stderr, "ringmta: %s\n", problem.c_str());
  return 0;
}

}  // namespace ringmta::server
