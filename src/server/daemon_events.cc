// The daemon's events-out service. See daemon_events.h.
#include "daemon_events.h"

#include <fstream>

#include <fmt/format.h>

namespace ringmta::server {

namespace {

config::error setting_error(const config::settings& settings, const std::string& key,
                            std::string_view problem) {
  const auto found = settings.origins.find(key);
  return config::error(fmt::format("{}: {}: {}",
                                   found != settings.origins.end() ? found->second : "defaults",
                                   key, problem));
}

std::vector<std::string> types_of(const config::settings& settings) {
  if (!settings.events_types.empty()) return settings.events_types;
  const auto defaults = events::default_event_types();
  return {defaults.begin(), defaults.end()};
}

events::webhook_config webhook_config_of(const config::settings& settings) {
  events::webhook_config c;
  c.url = events::parse_endpoint_url(settings.events_url).value();  // checked by the table
  c.batch_size = settings.events_batch_size;
  c.interval_ms = settings.events_interval_ms;
  c.timeout_ms = settings.events_timeout_ms;
  c.retry_max_ms = settings.events_retry_max_ms;
  if (!settings.events_authorization_file.empty()) {
    std::ifstream in(settings.events_authorization_file);
    if (!in || !std::getline(in, c.authorization) || c.authorization.empty())
      throw setting_error(settings, "events.authorization_file",
                          fmt::format("cannot read a line from {}",
                                      settings.events_authorization_file));
    if (c.authorization.back() == '\r') c.authorization.pop_back();
  }
  return c;
}

}  // namespace

std::unique_ptr<event_service> open_events(const config::settings& settings,
                                           std::string& warning) {
  if (settings.events_url.empty()) return nullptr;
  auto service = std::make_unique<event_service>();
  const auto hook_config = webhook_config_of(settings);  // a bad token file stops us here
  std::string problem;
  std::shared_ptr<events::event_log> log = events::event_log::open(
      settings.spool_dir + "/events", settings.events_max_backlog_bytes, problem);
  if (!log) throw setting_error(settings, "events.url", problem);
  warning = problem;
  service->log = log;
  service->tap = std::make_shared<events::event_tap>(log, events::type_filter(types_of(settings)));
  return service;
}

void start_events(event_service& service, const config::settings& settings,
                  admin::log_writer& writer) {
  service.hook = std::make_unique<events::webhook>(service.log, writer,
                                                   webhook_config_of(settings));
  service.hook->start();
}

void register_events_metrics(admin::registry& registry, const event_service* service) {
  // Without a webhook the families are there too, at zero: one dashboard fits every daemon.
  static const events::event_log_counters no_log;
  static const events::webhook_counters no_hook;
  const auto& log = service ? service->log->counters() : no_log;
  const auto& hook = service && service->hook ? service->hook->counters() : no_hook;
  registry.add("ringmta_events_appended_total", "Records written to the webhook's event log",
               log.appended);
  registry.add("ringmta_events_append_failures_total",
               "Records the event log could not write (disk full, I/O error)",
               log.append_failures);
  registry.add("ringmta_events_dropped_total",
               "Records dropped unsent because events.max_backlog was reached", log.dropped);
  registry.add("ringmta_events_invalid_total", "Event log lines skipped as not JSON",
               log.invalid);
  registry.add("ringmta_events_backlog_bytes", "Event log bytes not yet acknowledged",
               log.backlog_bytes);
  registry.add("ringmta_events_batches_sent_total", "Webhook batches acknowledged (2xx)",
               hook.batches_sent);
  registry.add("ringmta_events_sent_total", "Records in acknowledged webhook batches",
               hook.records_sent);
  registry.add("ringmta_events_post_failures_total",
               "Webhook posts that failed (non-2xx, connection, timeout)", hook.failures);
  registry.add("ringmta_events_failing", "1 while the webhook endpoint fails", hook.failing);
}

void register_events_reload(reloader& reloads, event_service* service,
                            admin::log_writer& writer) {
  reloads.add({"events", [service, &writer](const config::settings& next,
                                            const config::settings& running) -> reload_install {
                 if (service == nullptr || next.events_url.empty()) {
                   if (next.events_url != running.events_url)
                     writer.post("warning", "events.url: turning the webhook on or off needs a "
                                            "restart");
                   return {};
                 }
                 auto hook_config = webhook_config_of(next);
                 auto tap = std::make_shared<events::event_tap>(
                     service->log, events::type_filter(types_of(next)));
                 const auto backlog = next.events_max_backlog_bytes;
                 return [service, &writer, hook_config, tap, backlog] {
                   service->log->set_max_backlog(backlog);
                   service->hook->update(hook_config);
                   service->tap = tap;
                   writer.set_tap(tap);
                 };
               }});
}

}  // namespace ringmta::server
