// The daemon's events-out service (issue 14): the event log in SPOOL/events, the writer's tap
// that fills it, and the webhook thread that empties it. Built at start-up when events.url is
// set; a reload changes the endpoint, types, batching, timeouts and backlog limit live
// (turning the webhook on or off needs a restart: the log writer is built with its tap).
//
// Order: open_events() before the log writer (its tap sees the first record), start() after,
// and the service is destroyed before the writer (the webhook posts records to it).
#pragma once

#include <memory>

#include "ringmta/admin/log_writer.h"
#include "ringmta/admin/metrics.h"
#include "ringmta/config/settings.h"
#include "ringmta/events/event_log.h"
#include "ringmta/events/record.h"
#include "ringmta/events/webhook.h"
#include "ringmta/server/reload.h"

namespace ringmta::server {

struct event_service {
  std::shared_ptr<events::event_log> log;
  std::shared_ptr<events::event_tap> tap;
  std::unique_ptr<events::webhook> hook;
};

// nullptr when events.url is empty; throws config::error naming the key when the spool's
// events directory or the authorization file cannot be used. `warning` gets a corrupt cursor.
std::unique_ptr<event_service> open_events(const config::settings& settings,
                                           std::string& warning);
// The webhook thread starts.
void start_events(event_service& service, const config::settings& settings,
                  admin::log_writer& writer);
// The webhook's and the event log's counters (zero without a webhook: `service` nullptr).
void register_events_metrics(admin::registry& registry, const event_service* service);
// Registers the "events" reloadable part (endpoint, types, batching, limits).
void register_events_reload(reloader& reloads, event_service* service,
                            admin::log_writer& writer);

}  // namespace ringmta::server
