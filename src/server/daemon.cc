#include "ringmta/server/daemon.h"

#include "daemon_events.h"

#include <signal.h>
#include <sys/resource.h>
#include <grp.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <exception>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <future>
#include <optional>
#include <memory>
#include <thread>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "ringmta/admin/http_server.h"
#include "ringmta/admin/log.h"
#include "ringmta/admin/log_writer.h"
#include "ringmta/admin/metrics.h"
#include "ringmta/core/allocator.h"
#include "ringmta/core/clock.h"
#include "ringmta/server/admin_api.h"
#include "ringmta/server/inbound.h"
#include "ringmta/server/liveness.h"
#include "ringmta/server/privileges.h"
#include "ringmta/server/service_notify.h"
#include "ringmta/server/instance_lock.h"
#include "ringmta/server/relay.h"
#include "ringmta/server/reload.h"
#include "ringmta/server/signals.h"
#include "ringmta/server/suspensions.h"
#include "relay_internal.h"
#include "ringmta/server/spool_ring_driver.h"
#include "ringmta/shard/pinning.h"
#include "ringmta/shard/runtime.h"
#include "ringmta/shard/typed_message.h"
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

// The daemon's log writer while it runs; start-up and shutdown messages before and after it
// go straight to stderr.
admin::log_writer* g_log_writer = nullptr;

// A daemon event (start-up, signals, reload, shutdown): one record, from a thread that is not
// a shard (or a shard at start-up), through the writer so that it never waits for the output.
void log_event(admin::log_format format, std::string_view event, std::string_view detail) {
  if (g_log_writer != nullptr) return g_log_writer->post(event, detail);
  admin::log_buffer line(format, 8192);
  line.set_time(core::wall_milliseconds());
  line.record(event).field("detail", detail);
  admin::flush_to(line, STDERR_FILENO);
}

admin::log_format format_of(const config::settings& settings) {
  return settings.log_format == "json" ? admin::log_format::json : admin::log_format::text;
}

// Where a key's value came from, for start-up errors that name file, line and key.
std::string origin_of(const config::settings& settings, const std::string& key) {
  const auto found = settings.origins.find(key);
  return found != settings.origins.end() ? found->second : "defaults";
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
  admin::counter log_records_dropped;  // the shard's log buffer was full
};

// A reload's new configuration for one shard (typed message, see on_shard_update).
struct shard_update {
  std::shared_ptr<const inbound_config> inbound;
  std::shared_ptr<const relay_config> relay;
  admin::log_format format = admin::log_format::json;
  std::shared_ptr<std::atomic<unsigned>> applied;  // shards that took it
};

// Everything one shard runs. Created on the shard's thread (on_start), destroyed there too.
class shard_services final : public shard::iteration_hook {
 public:
  shard_services(shard::shard& owner, std::shared_ptr<const inbound_config> inbound_settings,
                 const relay_config& relay_settings, std::unique_ptr<spool::store> store,
                 bool unsafe_no_fsync, shard_metrics& metrics, admin::log_writer& writer,
                 std::size_t log_bytes, admin::log_format format)
      : _store(std::move(store)),
        _files(owner),
        _driver(owner, *_store, _files, unsafe_no_fsync),
        _log(format, log_bytes),
        _writer(writer),
        _log_channel(writer.channel(owner.id())),
        _format(format),
        _metrics(metrics),
        _front(std::move(inbound_settings), owner, *_store, _driver, metrics.inbound, _log),
        _relay(relay_settings, owner, owner, *_store, metrics.relay, _log) {}

  relay& delivery() noexcept { return _relay; }
  inbound& front() noexcept { return _front; }

  // On failure, says which part could not start (the error alone says too little), and which
  // settings are involved.
  core::result<void> start(shard::shard& owner) noexcept {
    auto failed = [&](const char* part, const core::result<void>& outcome) {
      if (outcome) return false;
      log_event(_format, "start_failed",
                fmt::format("shard {}: {}: {}", owner.id(), part, outcome.error_text()));
      return true;
    };
    if (auto ready = _driver.start(); failed("spool.dir, spool.segment_size: spool driver", ready))
      return ready;
    if (auto ready = _files.start(_driver); failed("spool.dir: spool file worker", ready))
      return ready;
    _driver.set_listener([this](const spool::event& done) {
      if (done.kind == spool::event_kind::marked) {
        _relay.on_marked(done.ticket, done.error);  // an operator action's journal record
        return;
      }
      if (done.kind != spool::event_kind::committed) return;
      if (_relay.on_committed(done.ticket, done.error)) return;  // a DSN being spooled
      _front.on_committed(done.ticket, done.error);
    });
    _front.set_accepted_listener(
        [this](const spool::envelope& envelope, std::span<const spool::body_slice> body,
               std::string_view pool) {
          _relay.route(envelope, body, pool);
        });
    owner.add_iteration_hook(*this);  // the spool's group commit: one flush per iteration
    if (auto ready = _front.start();
        failed("server.listen, limits.max_sessions_per_shard: listeners and buffers", ready))
      return ready;
    auto ready = _relay.start();
    failed("relay.resolvers: relay (DNS and outbound)", ready);
    return ready;
  }

  void before_wait(shard::shard&) noexcept override {
    _store->flush();  // group commit: one write + one fdatasync for this iteration's messages
    _driver.pump();
    _front.retry_waiting();
    _writer.hand_off(_log_channel, _log);  // never waits: a busy writer leaves them here
    _metrics.log_records_dropped.set_total(_log.dropped_records());
    _metrics.spool.mirror(_store->counters());
    _finished.store(_front.drained() && _relay.drained() && _store->idle() &&
                        _driver.operations_in_flight() == 0,
                    std::memory_order_relaxed);
  }

  // A reload, on this shard's thread: new sessions and deliveries use the new settings.
  void update(const shard_update& next) noexcept {
    _front.update(next.inbound);
    _relay.update(next.relay);
    _log.set_format(next.format);
  }

  void begin_shutdown(std::uint32_t grace_ms) noexcept {
    _front.begin_shutdown(grace_ms);
    _relay.begin_shutdown();
  }
  void stop() noexcept { _relay.stop(); }
  bool finished() const noexcept { return _finished.load(std::memory_order_relaxed); }

  // After the shard's thread has ended: its last records (the final iterations' disconnects)
  // go to the writer too, waiting at most a second for it.
  void flush_log() noexcept {
    for (int i = 0; i < 1000 && !_writer.hand_off(_log_channel, _log); ++i)
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }

 private:
  std::unique_ptr<spool::store> _store;
  spool_file_thread _files;  // segment creation and removal, off the shard thread
  spool_ring_driver _driver;
  admin::log_buffer _log;
  admin::log_writer& _writer;
  admin::log_channel& _log_channel;
  admin::log_format _format;
  shard_metrics& _metrics;
  inbound _front;
  relay _relay;
  std::atomic<bool> _finished{false};
};

std::vector<std::unique_ptr<shard_services>>* g_services = nullptr;

void on_shard_update(shard::shard& target, std::unique_ptr<shard_update> update) noexcept {
  (*g_services)[target.id()]->update(*update);
  update->applied->fetch_add(1, std::memory_order_release);
}

// A 7-bit conversion, from the downgrade worker to the shard of its delivery.
void on_downgraded(shard::shard& target, std::unique_ptr<downgrade_result> result) noexcept {
  (*g_services)[target.id()]->delivery().on_downgraded(std::move(result));
}

// A password check's result, from a verifier thread to the shard of its connection.
void on_auth_verified(shard::shard& target, std::unique_ptr<auth::verify_result> result) noexcept {
  (*g_services)[target.id()]->front().on_auth_result(std::move(result));
}

// The worker threads' way back to the shards (password checks, 7-bit conversions); null before
// the shards run and once they stop (then results are dropped: their connections are gone).
std::atomic<shard::runtime*> g_worker_runtime{nullptr};

// One conversion on the downgrade worker; the result always goes back to its shard (where the
// delivery waits), unless the shards are stopping.
void run_downgrade_job(std::unique_ptr<downgrade_request> request,
                       const core::work_pool<downgrade_request>& pool) {
  std::unique_ptr<downgrade_result> result = run_downgrade(*request);
  request.reset();  // closes its descriptors
  if (!result) return;  // out of memory: the delivery waits for the shutdown (documented)
  for (;;) {
    shard::runtime* runtime = g_worker_runtime.load(std::memory_order_acquire);
    if (runtime != nullptr) {
      const unsigned to = result->shard;
      if (shard::post<&on_downgraded>(*runtime, to, result)) return;  // with its memfd
    }
    if (runtime == nullptr || pool.stopping()) {
      if (result->fd >= 0) ::close(result->fd);
      return;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(1));  // the shard's inbox is full
  }
}

std::unique_ptr<auth::verifier> make_verifier(const config::settings& settings) {
  auth::throttle_settings throttle;
  throttle.failures_max = settings.auth_failures_max;
  throttle.lockout_ms = settings.auth_lockout_s * 1000;
  return std::make_unique<auth::verifier>(
      settings.auth_workers, settings.auth_queue_size, throttle,
      [](std::unique_ptr<auth::verify_result>& result) {
        shard::runtime* runtime = g_worker_runtime.load(std::memory_order_acquire);
        if (runtime == nullptr) return true;  // stopping: nobody waits for it any more
        // A full queue leaves `result` with the verifier, which retries.
        return shard::post<&on_auth_verified>(*runtime, result->reply_to.shard, result);
      });
}

// SMTP AUTH's back-end and sender map (read here: start-up or a reload, never a shard). A file
// that cannot be used is a start-up error naming the setting, or a rejected reload.
void set_auth(const config::settings& settings, inbound_config& c) {
  const auto fail = [&](const char* key, const std::exception& problem) {
    return config::error(fmt::format("{}: {}: {}", origin_of(settings, key), key, problem.what()));
  };
  try {
    if (!settings.auth_passwd_file.empty())
      c.auth_credentials = auth::credentials::load_passwd_file(settings.auth_passwd_file);
    if (!settings.auth_dovecot.empty())  // connected per check, on the verifier threads
      c.auth_credentials = std::make_shared<auth::dovecot_backend>(settings.auth_dovecot);
  } catch (const std::runtime_error& problem) {
    throw fail("auth.passwd_file", problem);
  }
  try {
    if (!settings.auth_sender_map.empty())
      c.auth_senders = auth::sender_map::load_file(settings.auth_sender_map);
  } catch (const std::runtime_error& problem) {
    throw fail("auth.sender_map", problem);
  }
  c.auth_plaintext_loopback = settings.auth_plaintext_loopback;
  c.engine.auth_offered = c.auth_credentials != nullptr;  // PLAIN LOGIN, after TLS
}

// The admin thread asks a shard's relay something and waits (bounded) for the answer.
struct admin_request {
  std::function<std::string(relay&)> work;
  std::promise<std::string> answer;
};

void on_admin_request(shard::shard& target, std::unique_ptr<admin_request> request) noexcept {
  try {
    request->answer.set_value(request->work((*g_services)[target.id()]->delivery()));
  } catch (...) {  // admin work may allocate; the shard keeps running whatever happens
  }
}

std::optional<std::string> ask_shard(shard::runtime& runtime, unsigned shard,
                                     std::function<std::string(relay&)> work) {
  auto request = std::make_unique<admin_request>();
  request->work = std::move(work);
  auto answer = request->answer.get_future();  // the future keeps the shared state alive
  if (!shard::post<&on_admin_request>(runtime, shard, request)) return std::nullopt;
  if (answer.wait_for(std::chrono::seconds(2)) != std::future_status::ready) return std::nullopt;
  return answer.get();
}

unsigned shard_count_for(const config::settings& settings) {
  if (settings.shards > 0) return settings.shards;
  const unsigned cores = std::thread::hardware_concurrency();
  return cores > 0 ? cores : 1;
}

// Every shard directory that holds queued mail must have a shard to serve it.
void check_spool_shards(const config::settings& settings, unsigned shards) {
  const std::string& spool_dir = settings.spool_dir;
  auto present = spool::shards_in(spool_dir);
  if (!present) return;  // a new spool: created below
  for (const std::uint32_t index : present.value()) {
    if (index < shards) continue;
    auto recovered = spool::recover(spool::shard_directory(spool_dir, index), index);
    if (recovered && !recovered.value().messages.empty())
      throw config::error(fmt::format(
          "{}: server.shards: {}: {} messages are queued in shard-{} but only {} shards are "
          "configured: start with --shards {} or more",
          origin_of(settings, "server.shards"), spool_dir, recovered.value().messages.size(),
          index, shards, index + 1));
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
  c.proxy_trusted = settings.proxy_trusted;
  c.xclient_trusted = settings.xclient_trusted;
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
  set_auth(settings, c);
  return c;
}

// Outbound TLS (RFC 3207): handshakes, failures by reason, resumptions, what opportunistic TLS
// fell back from, and STARTTLS replies followed by injected plaintext.
void register_tls_metrics(admin::registry& registry, const relay_metrics& m) {
  registry.add("ringmta_outbound_tls_handshakes_total", "Outbound TLS handshakes completed",
               m.tls_handshakes);
  registry.add("ringmta_outbound_tls_resumptions_total",
               "Outbound TLS handshakes resumed from the session cache", m.tls_resumed);
  registry.add("ringmta_outbound_tls_verified_total",
               "Outbound TLS handshakes whose chain and host name verified", m.tls_verified);
  const char* failures_help = "Outbound TLS handshakes that failed, by reason";
  for (std::size_t i = 0; i < m.tls_failures.size(); ++i) {
    const auto reason = tls::describe(static_cast<tls::failure>(i));
    if (reason == "none") continue;
    registry.add(fmt::format("ringmta_outbound_tls_failures_total{{reason=\"{}\"}}", reason),
                 failures_help, m.tls_failures[i]);
  }
  registry.add("ringmta_outbound_tls_failures_total{reason=\"timeout\"}", failures_help,
               m.tls_timeouts);
  registry.add("ringmta_outbound_tls_unavailable_total",
               "Servers without STARTTLS (or refusing it) where TLS was required",
               m.tls_unavailable);
  registry.add("ringmta_outbound_tls_plaintext_total{why=\"retry\"}",
               "Opportunistic TLS connections made in plaintext after a failed handshake",
               m.tls_plaintext_retries);
  registry.add("ringmta_outbound_tls_plaintext_total{why=\"remembered\"}",
               "Opportunistic TLS connections made in plaintext after a failed handshake",
               m.tls_plaintext_remembered);
  registry.add("ringmta_outbound_starttls_injections_total",
               "STARTTLS replies followed by plaintext before the handshake (discarded)",
               m.tls_injections);
}

// Outcomes by class (the bounce classifier's bounded set) and the delivery latency.
void register_outcome_metrics(admin::registry& registry, const relay_metrics& m) {
  const char* help = "Recipient outcomes by result and bounce class (delivered: class none)";
  registry.add("ringmta_deliveries_total{outcome=\"delivered\",class=\"none\"}", help,
               m.delivered);
  const auto classes = events::bounce_classifier::classes();
  RINGMTA_ASSERT(classes.size() == relay_metrics::class_count);
  for (std::size_t i = 0; i < classes.size(); ++i) {
    registry.add(fmt::format("ringmta_deliveries_total{{outcome=\"deferred\",class=\"{}\"}}",
                             classes[i]), help, m.deferred_by_class[i]);
    registry.add(fmt::format("ringmta_deliveries_total{{outcome=\"bounced\",class=\"{}\"}}",
                             classes[i]), help, m.bounced_by_class[i]);
  }
  registry.add("ringmta_delivery_latency_seconds",
               "From reception (250 to DATA) to delivery, per recipient delivered",
               m.delivery_latency);
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
  registry.add("ringmta_dsn_failed_total", "DSNs that could not be built (given up)",
               m.dsn_failed);
  registry.add("ringmta_dsn_retries_total",
               "DSNs the spool did not take, built again a second later (their bounces wait)",
               m.dsn_retries);
  registry.add("ringmta_dsn_original_read_failures_total",
               "Reads of a bounced message from the spool that failed (its DSN quotes less)",
               m.dsn_original_read_failures);
  registry.add("ringmta_outbound_connections_total", "Outbound SMTP connections opened",
               m.connections);
  registry.add("ringmta_queued_jobs", "Delivery jobs in the queues", m.queued_jobs);
  registry.add("ringmta_spool_marks_waiting",
               "Recipient states waiting for room in the spool journal (the disk is behind)",
               m.marks_waiting);
  registry.add("ringmta_relay_envelopes_resident",
               "Queued messages whose envelope is in memory (the others wait in the spool)",
               m.envelopes_resident);
  registry.add("ringmta_relay_envelope_reads_total",
               "Envelopes of waiting messages read back from the spool", m.envelope_reads);
  registry.add("ringmta_relay_envelope_read_failures_total",
               "Envelope reads from the spool that failed (a delivery deferred, or outcomes "
               "applied without their log records and DSNs)",
               m.envelope_read_failures);
  const char* downgrade_help = "8-bit messages for servers without 8BITMIME, by outcome";
  registry.add("ringmta_mime_downgrades_total{outcome=\"requested\"}", downgrade_help,
               m.downgrades_requested);
  registry.add("ringmta_mime_downgrades_total{outcome=\"converted\"}", downgrade_help,
               m.downgrades_converted);
  registry.add("ringmta_mime_downgrades_total{outcome=\"refused\"}", downgrade_help,
               m.downgrades_refused);
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
  registry.add("ringmta_outbound_bodies_total{path=\"tls\"}", bodies_help, m.bodies_encrypted);
  register_tls_metrics(registry, m);
  register_outcome_metrics(registry, m);
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
  const char* unanswered = "Messages whose client left before the spool's verdict, by outcome "
                           "(durable: delivered, and the client may send it again)";
  registry.add("ringmta_messages_unanswered_total{outcome=\"durable\"}", unanswered,
               m.unanswered_durable);
  registry.add("ringmta_messages_unanswered_total{outcome=\"failed\"}", unanswered,
               m.unanswered_failed);
  registry.add("ringmta_spool_short_appends_total",
               "Appends the spool took short after promising room (a spool bug: answered 452)",
               m.spool_short_appends);
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
  const char* auth_help = "SMTP AUTH attempts, by result";
  registry.add("ringmta_auth_total{result=\"success\"}", auth_help, m.auth_succeeded);
  registry.add("ringmta_auth_total{result=\"failure\"}", auth_help, m.auth_failed);
  registry.add("ringmta_auth_total{result=\"locked\"}", auth_help, m.auth_locked);
  registry.add("ringmta_auth_total{result=\"busy\"}", auth_help, m.auth_busy);
  registry.add("ringmta_auth_sender_denied_total",
               "MAIL FROM refused: the login may not use that sender (553 5.7.1)",
               m.auth_sender_denied);
  registry.add("ringmta_auth_required_total",
               "MAIL refused on a submission listener before AUTH (530 5.7.0)", m.auth_required);
  registry.add("ringmta_proxy_untrusted_total",
               "PROXY protocol connections closed: the peer is not in proxy_trusted",
               m.proxy_untrusted);
  registry.add("ringmta_xclient_total{result=\"accepted\"}",
               "XCLIENT commands: accepted from xclient_trusted, refused (550 5.7.0) otherwise",
               m.xclient_accepted);
  registry.add("ringmta_xclient_total{result=\"untrusted\"}",
               "XCLIENT commands: accepted from xclient_trusted, refused (550 5.7.0) otherwise",
               m.xclient_untrusted);
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

const char* log_dropped_help = "Log records dropped because the log output did not keep up";

void register_metrics(admin::registry& registry, const admin::log_writer_counters& m) {
  registry.add("ringmta_log_records_dropped_total", log_dropped_help, m.events_dropped);
  registry.add("ringmta_log_bytes_written_total", "Log bytes written to the log output",
               m.bytes_written);
  registry.add("ringmta_log_write_failures_total", "Log writes the output refused (bytes lost)",
               m.write_failures);
}

// ---- logs

admin::log_output_config log_output_of(const config::settings& settings) {
  admin::log_output_config c;
  if (settings.log_output == "file") c.output = admin::log_output_config::kind::file;
  if (settings.log_output == "syslog") c.output = admin::log_output_config::kind::syslog;
  c.file_path = settings.log_file;
  c.syslog_socket = settings.log_syslog_socket;
  c.syslog_facility = admin::syslog_facility_code(settings.log_syslog_facility);
  c.hostname = settings.hostname;
  return c;
}

// Opens the configured output, or throws naming the setting (start-up and reload).
std::unique_ptr<admin::log_output> open_log_output(const config::settings& settings) {
  std::string problem;
  auto output = admin::open_log_output(log_output_of(settings), problem);
  if (!output) {
    const std::string key = settings.log_output == "file" ? "log.file" : "log.syslog_socket";
    throw config::error(fmt::format("{}: {}: {}", origin_of(settings, key), key, problem));
  }
  return output;
}

bool log_output_changed(const config::settings& a, const config::settings& b) {
  return a.log_output != b.log_output || a.log_file != b.log_file ||
         a.log_syslog_socket != b.log_syslog_socket ||
         a.log_syslog_facility != b.log_syslog_facility;
}

// ---- reload

std::string joined(const std::vector<std::string>& items) {
  std::string out;
  for (const auto& item : items) out += (out.empty() ? "" : ",") + item;
  return out;
}

// Logs a reload's outcome: `reloaded` (with the keys changed) or `reload_rejected` (why),
// and `reload_restart_needed` for changed keys that keep their value until a restart.
void log_reload(admin::log_writer& writer, std::string_view trigger,
                const reload_outcome& outcome) {
  if (outcome.applied) {
    writer.post_record("reloaded", [&](admin::log_record& r) {
      r.field("trigger", trigger).field("changed", joined(outcome.changed));
    });
  } else {
    writer.post_record("reload_rejected", [&](admin::log_record& r) {
      r.field("trigger", trigger).field("error", outcome.error)
          .field("detail", "the running configuration stays in effect");
    });
  }
  if (!outcome.restart_needed.empty()) {
    writer.post_record("reload_restart_needed", [&](admin::log_record& r) {
      r.field("keys", joined(outcome.restart_needed))
          .field("detail", "changed, but these keep their running value until a restart");
    });
  }
}

// The inbound TLS context of `settings` and what it offers (STARTTLS, the implicit TLS engine).
// `keys`: the running ticket key ring on a reload, so clients keep resuming across it. A
// certificate that cannot be used throws config::error (exit 2 at start-up, a rejected reload).
void set_tls(const config::settings& settings, std::shared_ptr<tls::ticket_key_ring> keys,
             inbound_config& c) {
  auto loaded = load_tls_server_context(settings, std::move(keys));
  if (!loaded.error.empty()) throw config::error("tls: " + loaded.error);
  c.tls = loaded.context;
  c.engine.starttls_offered = c.tls != nullptr;
  c.engine_implicit_tls = c.engine;
  c.engine_implicit_tls.tls_active = true;  // RFC 8314: TLS from the first byte
  c.engine_plain_auth = c.engine;            // --auth-plaintext-loopback, loopback clients only
  c.engine_plain_auth.auth_requires_tls = false;
  c.timeout_tls_handshake_ms = settings.timeout_tls_handshake_s * 1000;
}

// What the shards need from a configuration: built on the daemon thread from `settings`,
// with the parts fixed at start-up (listeners, client table, loop-detection endpoints) taken
// from the first configuration.
struct shard_configuration {
  std::shared_ptr<const inbound_config> inbound;
  std::shared_ptr<const relay_config> relay;
};

shard_configuration build_shard_configuration(const config::settings& settings,
                                              const inbound_config& first_inbound,
                                              const relay_config& first_relay) {
  inbound_config front = make_inbound_config(settings);
  // What a reload can change: DKIM keys and certificates are read again here (a bad one
  // rejects the whole reload); listeners, the client table and our own addresses stay.
  front.dkim_keys = dkim::build_key_table(settings);
  set_tls(settings, first_inbound.tls ? first_inbound.tls->ticket_key_ring_shared() : nullptr,
          front);
  front.listen = first_inbound.listen;
  front.implicit_tls = first_inbound.implicit_tls;
  front.submission = first_inbound.submission;
  front.auth_verifier = first_inbound.auth_verifier;
  front.listener_fds = first_inbound.listener_fds;
  front.clients = first_inbound.clients;
  front.recipients.own_literals = first_inbound.recipients.own_literals;
  check_postmaster(front, format_of(settings));
  auto delivery = std::make_shared<relay_config>(make_relay_config(settings));
  delivery->outbound.self_endpoints = first_relay.outbound.self_endpoints;
  delivery->shards = first_relay.shards;
  delivery->downgrader = first_relay.downgrader;
  return {freeze(std::move(front)), std::move(delivery)};
}

// Hands a new configuration to every shard and waits (bounded) until each has taken it.
void post_to_shards(shard::runtime& runtime, const shard_configuration& next,
                    admin::log_format format) {
  const unsigned shards = runtime.shard_count();
  auto applied = std::make_shared<std::atomic<unsigned>>(0);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  for (unsigned shard = 0; shard < shards; ++shard) {
    auto update =
        std::make_unique<shard_update>(shard_update{next.inbound, next.relay, format, applied});
    while (!shard::post<&on_shard_update>(runtime, shard, update)) {
      if (std::chrono::steady_clock::now() > deadline) break;  // full: the shard is stuck
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
  }
  while (applied->load(std::memory_order_acquire) < shards &&
         std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  if (applied->load(std::memory_order_acquire) < shards)
    log_event(format, "warning",
              fmt::format("reload: {} of {} shards took the new configuration within 5 s",
                          applied->load(), shards));
}

// The two parts every daemon has: the shards' configuration, and the log output and format.
// (TLS certificates, DKIM keys and an AUTH password file register their own.)
void register_reloadables(reloader& reloads, shard::runtime& runtime, admin::log_writer& writer,
                          const inbound_config& first_inbound, const relay_config& first_relay) {
  reloads.add({"shards", [&](const config::settings& next, const config::settings&) {
                 auto built = build_shard_configuration(next, first_inbound, first_relay);
                 const auto format = format_of(next);
                 return reload_install([&runtime, built, format] {
                   post_to_shards(runtime, built, format);
                 });
               }});
  reloads.add({"log", [&](const config::settings& next, const config::settings& running) {
                 // Opened here, so that a path that cannot be opened rejects the reload.
                 auto output = std::make_shared<std::unique_ptr<admin::log_output>>();
                 if (log_output_changed(next, running)) *output = open_log_output(next);
                 const auto format = format_of(next);
                 return reload_install([&writer, output, format] {
                   writer.set_format(format);
                   if (*output) writer.replace_output(std::move(*output));
                 });
               }});
}

// Start-up: the TLS context, STARTTLS on every listener, the implicit TLS listeners, and the
// kTLS probe's answer (logged once).
void start_tls(const config::settings& settings, admin::log_format format, inbound_config& c) {
  set_tls(settings, nullptr, c);
  c.implicit_tls.assign(c.listen.size(), false);
  for (const auto& at : settings.tls_listen) {
    c.listen.push_back(at);
    c.implicit_tls.push_back(true);
  }
  // Submission (RFC 6409, port 587: STARTTLS then AUTH) and submissions (RFC 8314, port 465).
  c.submission.assign(c.listen.size(), false);
  for (const auto& at : settings.submission_listen) {
    c.listen.push_back(at);
    c.implicit_tls.push_back(false);
    c.submission.push_back(true);
  }
  for (const auto& at : settings.submissions_listen) {
    c.listen.push_back(at);
    c.implicit_tls.push_back(true);
    c.submission.push_back(true);
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

namespace {

// The spool of every shard, recovered before any connection is taken. The shards' spools are
// independent files: each is read and indexed on a thread of its own (start-up, before the
// shards run: nothing else waits), which cuts the time to the greeting with a large backlog
// (bench/README.md, "Backlog at scale"). Logged in shard order once all are read.
std::vector<std::unique_ptr<spool::store>> recover_spool(const config::settings& settings,
                                                          unsigned shards,
                                                          admin::log_format format) {
  struct shard_recovery {
    std::string directory;
    spool::recovery_report report;
    std::unique_ptr<spool::store> store;
    std::string error;
  };
  std::vector<shard_recovery> work(shards);
  for (unsigned shard = 0; shard < shards; ++shard) {
    if (auto made = spool::make_shard_directory(settings.spool_dir, shard); !made)
      throw config::error(fmt::format("{}: spool.dir: {}: cannot create spool directory: {}",
                                      origin_of(settings, "spool.dir"), settings.spool_dir,
                                      made.error_text()));
    work[shard].directory = spool::shard_directory(settings.spool_dir, shard);
  }
  {
    std::vector<std::jthread> readers;
    for (unsigned shard = 0; shard < shards; ++shard)
      readers.emplace_back([&one = work[shard], &settings, shard] {
        // An exception must not leave the thread (std::terminate): it becomes the start-up
        // error below, like a recovery that failed.
        try {
          auto recovered = spool::recover(one.directory, shard);
          if (!recovered) {
            one.error = recovered.error_text();
            return;
          }
          one.report = recovered.value().report;
          spool::store_config store_settings;
          store_settings.directory = one.directory;
          store_settings.shard = shard;
          store_settings.random_seed = spool::random_seed();
          store_settings.segment_bytes = settings.spool_segment_bytes;
          store_settings.journal_buffered_bytes_max = settings.spool_journal_buffer_bytes;
          one.store =
              std::make_unique<spool::store>(store_settings, std::move(recovered).value());
        } catch (const std::exception& e) {
          one.error = e.what();
        }
      });
  }  // joined here
  std::vector<std::unique_ptr<spool::store>> stores;
  for (unsigned shard = 0; shard < shards; ++shard) {
    shard_recovery& one = work[shard];
    if (!one.store)
      throw config::error(fmt::format("{}: spool.dir: {}: cannot read spool: {}",
                                      origin_of(settings, "spool.dir"), one.directory,
                                      one.error));
    const auto& report = one.report;
    log_event(format, "spool_recovered",
              fmt::format("shard {}: {} queued, {} segments, {} torn tails, {} corrupt regions, "
                          "{} incomplete",
                          shard, report.messages, report.segments, report.torn_tails,
                          report.corrupt_regions, report.incomplete_messages));
    for (const auto& problem : report.problems) log_event(format, "spool_problem", problem);
    stores.push_back(std::move(one.store));
  }
  return stores;
}

// The spool root exists and is ours: a second daemon on it exits here, before it reads or
// writes anything in it.
std::unique_ptr<spool_lock> lock_spool(const config::settings& settings) {
  if (auto made = spool::make_shard_directory(settings.spool_dir, 0); !made)
    throw config::error(fmt::format("{}: spool.dir: {}: cannot create: {}",
                                    origin_of(settings, "spool.dir"), settings.spool_dir,
                                    made.error_text()));
  return std::make_unique<spool_lock>(settings.spool_dir);
}

// The main thread's life after start-up: signals one at a time until one says stop. Returns
// that signal.
int serve_signals(const sigset_t& signals, reloader& reloads, admin::log_writer& writer) {
  for (;;) {
    int number = 0;
    if (sigwait(&signals, &number) != 0) continue;
    const signal_action action = action_of(number);
    writer.post_record("signal", [&](admin::log_record& r) {
      r.field("signal", signal_name(number)).field("action", action_name(action));
    });
    switch (action) {
      case signal_action::stop: return number;
      case signal_action::reload: log_reload(writer, "SIGHUP", reloads.reload()); break;
      case signal_action::reopen_logs: writer.reopen(); break;
      case signal_action::ignore: break;
    }
  }
}

// While sessions finish: logs are still reopened; a reload or a second stop is logged and
// ignored. Waits at most `wait_ms`.
void serve_signals_while_stopping(const sigset_t& signals, admin::log_writer& writer,
                                  std::uint32_t wait_ms) {
  const timespec wait{0, static_cast<long>(wait_ms) * 1'000'000};
  siginfo_t info{};
  const int number = sigtimedwait(&signals, &info, &wait);
  if (number <= 0) return;
  const signal_action action = action_of(number);
  writer.post_record("signal", [&](admin::log_record& r) {
    r.field("signal", signal_name(number))
        .field("action", action == signal_action::reopen_logs ? "reopen_logs"
                                                              : "ignored (stopping)");
  });
  if (action == signal_action::reopen_logs) writer.reopen();
}

// POST /reload: the same as SIGHUP, answering what changed (or why nothing did).
admin::http_response reload_api(reloader& reloads, admin::log_writer& writer,
                                const admin::http_request& r, bool running) {
  if (r.method != "POST")
    return admin::http_response{405, "application/json", "{\"error\":\"use POST\"}\n"};
  if (!running)
    return admin::http_response{503, "application/json", "{\"error\":\"not running\"}\n"};
  const auto outcome = reloads.reload();
  log_reload(writer, "admin", outcome);
  return admin::http_response{outcome.applied ? 200 : 400, "application/json",
                              outcome.json() + "\n"};
}

void begin_shutdown_on(shard::shard& target, std::uint32_t grace_ms) noexcept {
  (*g_services)[target.id()]->begin_shutdown(grace_ms);
}

// Stops accepting on every shard and waits until their sessions finished (the grace time,
// then 421 and a few seconds to close) and the spool's last writes and syncs completed.
// Returns whether all of them finished in time.
bool drain_shards(shard::runtime& runtime,
                  const std::vector<std::unique_ptr<shard_services>>& services,
                  std::uint32_t grace_s, const sigset_t& signals, admin::log_writer& writer) {
  for (unsigned shard = 0; shard < runtime.shard_count(); ++shard) {
    shard::post_value<&begin_shutdown_on>(runtime, shard, grace_s * 1000u);
  }
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(grace_s + 10);
  auto all_finished = [&] {
    for (const auto& s : services)
      if (s && !s->finished()) return false;
    return true;
  };
  while (!all_finished() && std::chrono::steady_clock::now() < deadline)
    serve_signals_while_stopping(signals, writer, 20);
  return all_finished();
}

// The control socket (issue 14): in the spool directory unless --admin-socket says otherwise;
// owned by the user we run as, in admin.socket_group, mode 0660.
void bind_control_socket(admin::http_server& server, const config::settings& settings,
                         const privilege_plan& plan) {
  admin::unix_socket_options socket;
  socket.path = settings.admin_socket.empty() ? settings.spool_dir + "/admin.sock"
                                              : settings.admin_socket;
  if (plan.what == privilege_plan::action::switch_user) {
    socket.owner = plan.uid;
    socket.group = plan.gid;
  }
  if (!settings.admin_socket_group.empty()) {
    const group* entry = ::getgrnam(settings.admin_socket_group.c_str());
    if (entry == nullptr)
      throw config::error(fmt::format("{}: admin.socket_group: no group {}",
                                      origin_of(settings, "admin.socket_group"),
                                      settings.admin_socket_group));
    socket.group = entry->gr_gid;
  }
  if (auto bound = server.bind_unix(socket); !bound)
    throw config::error(fmt::format("{}: admin.socket: cannot listen on {}: {}{}",
                                    origin_of(settings, "admin.socket"), socket.path,
                                    bound.error_text(),
                                    bound.error() == EADDRINUSE ? " (another daemon answers)"
                                                                : ""));
}

// The bearer token for the admin API over TCP: the file's first line, at least 16 bytes.
std::string read_admin_token(const config::settings& settings) {
  if (settings.admin_token_file.empty()) return {};
  std::ifstream in(settings.admin_token_file);
  std::string token;
  if (!in || !std::getline(in, token)) token.clear();
  while (!token.empty() && std::isspace(static_cast<unsigned char>(token.back()))) token.pop_back();
  if (token.size() < 16)
    throw config::error(fmt::format("{}: admin.token_file: {}: unreadable or shorter than 16 "
                                    "characters", origin_of(settings, "admin.token_file"),
                                    settings.admin_token_file));
  return token;
}

std::unique_ptr<suspension_table> load_suspensions(const config::settings& settings,
                                                   relay_config& delivery) {
  auto table = std::make_unique<suspension_table>(settings.spool_dir + "/suspensions.json");
  std::string problem;
  if (!table->load(problem)) throw config::error(problem);
  for (const auto& entry : table->all()) delivery.suspended_at_start.push_back(entry.destination);
  return table;
}

}  // namespace

void check_configuration(const config::settings& settings) {
  open_log_output(settings);
  make_relay_config(settings);
  inbound_config auth_tables;
  set_auth(settings, auth_tables);  // the passwd file and sender map parse
}

int run_daemon(const config::settings& settings, const daemon_hooks& hooks) {
  const auto format = format_of(settings);
  const unsigned shards = shard_count_for(settings);
  const privilege_plan privileges = plan_privileges(settings);  // refuse root early
  if (settings.unsafe_no_fsync)
    log_event(format, "warning",
              "--unsafe-no-fsync: 250 replies do not wait for fdatasync; mail is lost on a crash");
  raise_descriptor_limit(settings, shards, format);

  // Signals go to the main thread only: block them before any thread starts (the log writer,
  // after the privilege drop, is the first).
  const sigset_t signals = daemon_signals();
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  ::signal(SIGPIPE, SIG_IGN);
  // Opened as root (a log file under /var/log); written by the writer thread started below.
  auto log_output = open_log_output(settings);

  // DKIM keys: read and checked before anything starts (a bad key is a start-up error).
  auto dkim_keys = dkim::build_key_table(settings);
  for (const auto& key : dkim_keys->keys)
    log_event(format, "dkim_key",
              fmt::format("{} selector {}: {} {} bits from {}", key.domain, key.selector,
                          dkim::name_of(key.key->algorithm()), key.key->bits(), key.key_file));
  // Delivery settings first: a bad resolver or CA file is a start-up error before the spool
  // or any socket is touched.
  relay_config delivery = make_relay_config(settings);
  log_event(format, "outbound_tls", delivery.tls_description);

  // One daemon per spool and per address, then the spool: recover every shard before taking
  // any connection.
  const auto lock = lock_spool(settings);
  const std::string listen_key = fmt::format("{}: server.listen",
                                             origin_of(settings, "server.listen"));
  std::vector<core::endpoint> addresses = settings.listen;
  addresses.insert(addresses.end(), settings.tls_listen.begin(), settings.tls_listen.end());
  addresses.insert(addresses.end(), settings.submission_listen.begin(),
                   settings.submission_listen.end());
  addresses.insert(addresses.end(), settings.submissions_listen.begin(),
                   settings.submissions_listen.end());
  const listen_claim claimed(addresses, listen_key);
  check_spool_shards(settings, shards);
  auto stores = recover_spool(settings, shards, format);

  inbound_config front = make_inbound_config(settings);
  front.dkim_keys = std::move(dkim_keys);
  start_tls(settings, format, front);
  client_counters clients;
  front.clients = &clients;
  const auto verifier = make_verifier(settings);  // its threads start after the privilege drop
  front.auth_verifier = verifier.get();
  core::work_pool<downgrade_request> downgrader(1, downgrade_queue_max, run_downgrade_job);
  std::vector<core::endpoint> bound;
  auto listeners = open_listeners(front.listen, shards, bound);
  if (!listeners)
    throw config::error(fmt::format("{}: server.listen: cannot listen on {}: {}",
                                    origin_of(settings, "server.listen"),
                                    settings.listen.front().to_string(), listeners.error_text()));
  front.listener_fds = std::move(listeners).value();
  set_own_literals(front.recipients, bound);
  check_postmaster(front, format);
  std::vector<core::endpoint> chosen;  // ports the system picked: claimed now, for the record
  for (std::size_t i = 0; i < bound.size(); ++i)
    if (front.listen[i].port() == 0) chosen.push_back(bound[i]);
  const listen_claim claimed_chosen(chosen, listen_key, /*probe=*/false);
  const auto first_inbound = freeze(front);
  admin::http_server admin_server;
  if (auto admin_bound = admin_server.bind(settings.admin_listen); !admin_bound)
    throw config::error(fmt::format("{}: admin.listen: cannot listen on {}: {}",
                                    origin_of(settings, "admin.listen"),
                                    settings.admin_listen.front().to_string(),
                                    admin_bound.error_text()));
  const std::string admin_token = read_admin_token(settings);  // a root-only file is fine
  auto suspensions = load_suspensions(settings, delivery);
  if (settings.debug_endpoints)
    log_event(format, "warning", "--debug-endpoints: POST /debug/freeze/SHARD blocks shards");
  // Everything that needs root is open: the spool goes to --user, and so do we. Only then
  // does the first other thread start (the log writer): the drop covers one thread.
  const auto log_line = [format](std::string_view event, std::string_view detail) {
    log_event(format, event, detail);
  };
  hand_spool_over(privileges, settings.spool_dir, log_line);
  bind_control_socket(admin_server, settings, privileges);
  log_event(format, "privileges", drop_privileges(privileges, settings.spool_dir));
  std::string events_warning;  // SPOOL/events: after the drop, so that we own what we create
  const auto events_out = open_events(settings, events_warning);
  admin::log_writer writer(std::move(log_output), shards, settings.log_buffer_bytes, format,
                           events_out ? events_out->tap : nullptr);
  struct stop_webhook {  // before the writer goes: the webhook posts records to it
    event_service* events;
    ~stop_webhook() {
      if (events != nullptr && events->hook) events->hook->stop();
    }
  } stop_webhook_first{events_out.get()};
  g_log_writer = &writer;
  verifier->start();
  downgrader.start();
  struct unset_writer {
    ~unset_writer() { g_log_writer = nullptr; }
  } unset_writer_on_exit;

  // Metrics and the admin endpoint.
  std::vector<std::unique_ptr<shard_metrics>> metrics;
  admin::registry registry;
  for (unsigned shard = 0; shard < shards; ++shard) {
    metrics.push_back(std::make_unique<shard_metrics>());
    register_metrics(registry, metrics.back()->inbound);
    register_metrics(registry, metrics.back()->relay);
    register_metrics(registry, metrics.back()->spool);
    registry.add("ringmta_log_records_dropped_total", log_dropped_help,
                 metrics.back()->log_records_dropped);
  }
  register_metrics(registry, writer.counters());
  if (events_out) {
    start_events(*events_out, settings, writer);
    if (!events_warning.empty()) writer.post("warning", events_warning);
  }
  register_events_metrics(registry, events_out.get());
  std::atomic<bool> stopping{false};
  std::atomic<bool> runtime_ready{false};  // the queue API and reload need running shards
  shard::runtime* runtime_pointer = nullptr;
  std::function<config::settings()> load_settings = hooks.load_settings;
  if (!load_settings) load_settings = [settings] { return settings; };
  reloader reloads(settings, load_settings);
  admin_api api;
  api.shards = shards;
  api.token = admin_token;
  api.spool_dir = settings.spool_dir;
  api.started_ms = core::wall_milliseconds();
  api.suspensions = suspensions.get();
  api.writer = &writer;
  api.registry = &registry;
  api.running = [&] { return runtime_ready.load() && !stopping.load(); };
  api.ask = [&](unsigned shard, admin_api::shard_work work) -> std::optional<std::string> {
    if (!runtime_ready.load()) return std::nullopt;
    return ask_shard(*runtime_pointer, shard, std::move(work));
  };
  api.health = [&](const admin::http_request&) {
    return health_response(runtime_ready.load() ? runtime_pointer : nullptr, stopping.load());
  };
  api.reload = [&](const admin::http_request& r) {
    return reload_api(reloads, writer, r, runtime_ready.load() && !stopping.load());
  };
  api.debug = [&](const admin::http_request& r) {
    if (!settings.debug_endpoints || !runtime_ready.load())
      return admin::http_response{404, "text/plain", "not found\n"};
    return debug_request(*runtime_pointer, r);
  };
  if (auto started = admin_server.start([&api](const admin::http_request& r) {
        return api.serve(r);
      });
      !started)
    throw config::error(fmt::format("cannot start the admin endpoint: {}",
                                    started.error_text()));

  // Shards.
  delivery.outbound.self_endpoints = core::expand_wildcards(bound);  // MX loops (RFC 5321 §5.1)
  std::vector<relay*> relays(shards, nullptr);
  delivery.shards = &relays;
  delivery.downgrader = &downgrader;
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
  struct stop_workers {  // before the runtime goes: no result may be posted to it after
    auth::verifier& verifier;
    core::work_pool<downgrade_request>& downgrader;
    ~stop_workers() {
      g_worker_runtime.store(nullptr, std::memory_order_release);
      verifier.stop();
      downgrader.stop();
    }
  } stop_workers_first{*verifier, downgrader};
  std::string ring_description;
  auto started = runtime.start(
      [&](shard::shard& owner) -> core::result<void> {
        const unsigned id = owner.id();
        services[id] = std::make_unique<shard_services>(
            owner, first_inbound, delivery, std::move(stores[id]), settings.unsafe_no_fsync,
            *metrics[id], writer, settings.log_buffer_bytes, format);
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
  register_reloadables(reloads, runtime, writer, *first_inbound, delivery);
  register_events_reload(reloads, events_out.get(), writer);
  g_worker_runtime.store(&runtime, std::memory_order_release);
  runtime_pointer = &runtime;
  runtime_ready = true;
  // A timed suspension ends: resume the destination on its shard (the table drops it). Not an
  // operator's resume: a reply rule's pause that began meanwhile keeps its end.
  suspensions->start([&](const suspension& ended) {
    const auto name = ended.destination;
    api.ask(holder_of(api, name),
            [name](relay& owner) { return owner.operate(name, "resume_suspension"); });
    writer.post_record("suspension_ended", [&](admin::log_record& r) {
      r.field("destination", name).field("reason", ended.reason).field("by", ended.by);
    });
  });
  log_event(format, "started",
            fmt::format("ringmta {} shards, {}, {}; {}", shards, core::allocator_name(),
                        settings.unsafe_no_fsync ? "UNSAFE no fsync" : "fdatasync on",
                        ring_description));
  for (std::size_t i = 0; i < bound.size(); ++i)
    log_event(format,
              front.submission[i] ? (front.implicit_tls[i] ? "listening_submissions"
                                                           : "listening_submission")
              : front.implicit_tls[i] ? "listening_tls"
                                      : "listening",
              bound[i].to_string());
  for (const auto& at : admin_server.bound()) log_event(format, "admin_listening", at.to_string());
  log_event(format, "admin_socket", admin_server.unix_path());
  if (hooks.on_listening) hooks.on_listening(bound, admin_server.bound());
  service_notifier notifier(log_line);
  notifier.ready(fmt::format("accepting mail on {} ({} shards)", bound.front().to_string(),
                             shards),
                 [&runtime] { return stalled_shard(runtime); });

  const int signal_number = serve_signals(signals, reloads, writer);
  stopping = true;
  const std::uint32_t grace_s = reloads.running().shutdown_grace_s;
  notifier.stopping(fmt::format("stopping: sessions get {} s to finish", grace_s));
  log_event(format, "stopping",
            fmt::format("signal {}: grace {} s", signal_name(signal_number), grace_s));
  const bool clean = drain_shards(runtime, services, grace_s, signals, writer);
  suspensions->stop();
  runtime_ready = false;
  g_worker_runtime.store(nullptr, std::memory_order_release);
  verifier->stop();
  downgrader.stop();
  admin_server.stop();  // no admin request may reach a stopping shard
  runtime.request_stop();
  runtime.join();
  notifier.stop();
  for (auto& s : services)
    if (s) s->flush_log();
  services.clear();  // after join: no shard thread runs their handlers any more
  g_services = nullptr;
  log_event(format, "stopped", clean ? "clean" : "grace expired");
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
  // Why a recipient waits, as far as the spool knows: its attempts and next attempt (the
  // journal), and an operator suspension of its domain (SPOOL/suspensions.json). The last
  // reply is not journaled: `ringmta-ctl list` asks the running daemon for it.
  suspension_table suspensions(spool_directory + "/suspensions.json");
  std::string unreadable;
  if (!suspensions.load(unreadable)) std::fprintf(stderr, "ringmta: %s\n", unreadable.c_str());
  const auto why = [&](const spool::listed_recipient& r) {
    std::string out = spool::recipient_state_name(r.status.state);
    if (spool::is_final(r.status.state)) return out;
    if (r.status.attempts > 0) out += fmt::format(", {} attempts", r.status.attempts);
    if (r.status.next_attempt_seconds > now)
      out += fmt::format(", next in {} s", r.status.next_attempt_seconds - now);
    suspension held;
    if (suspensions.find(destination_of(r.address, ""), held))
      out += ", suspended" + (held.reason.empty() ? "" : ": " + held.reason);
    return out;
  };
  if (json) {
    auto out = nlohmann::json::array();
    for (const auto& m : listing.value().messages) {
      auto recipients = nlohmann::json::array();
      for (const auto& r : m.recipients) {
        suspension held;
        const bool suspended = suspensions.find(destination_of(r.address, ""), held);
        recipients.push_back({{"address", r.address},
                              {"state", spool::recipient_state_name(r.status.state)},
                              {"attempts", r.status.attempts},
                              {"next_attempt_s", r.status.next_attempt_seconds},
                              {"suspended", suspended},
                              {"why", why(r)}});
      }
      out.push_back({{"id", spool::format_message_id(m.id).data()},
                     {"shard", m.shard},
                     {"sender", m.sender},
                     {"recipients", recipients},
                     {"size", m.body_bytes},
                     {"held", m.held},
                     {"age_seconds", now - m.received_seconds}});
    }
    std::printf("%s\n", out.dump(1).c_str());
  } else {
    std::printf("%-16s %10s %8s  %-30s %s\n", "ID", "SIZE", "AGE", "SENDER", "RECIPIENTS");
    for (const auto& m : listing.value().messages) {
      std::string recipients;
      for (const auto& r : m.recipients)
        recipients += fmt::format("{}{} ({})", recipients.empty() ? "" : ", ", r.address, why(r));
      if (m.held) recipients = "HELD: " + recipients;  // ringmta-ctl release ID
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
