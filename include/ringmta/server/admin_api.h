// The admin API behind ringmta-ctl (issue 14): routes, access, operator actions and their
// log records. Runs on the admin server's worker threads (admin/http_server.h), never on a
// shard: shards are asked through their message queues (`ask`), bounded in time.
//
// Access: requests through the UNIX control socket are the operator's (its mode 0660 and
// group decide who may connect). On TCP only /metrics and /health are open; everything else
// needs "Authorization: Bearer TOKEN" with the token of admin.token_file, and without a token
// file TCP serves no API at all (403).
//
// Routes (JSON in and out, errors as {"error": "..."}):
//   GET  /status                             version, uptime, shards, spool use, counters
//   GET  /queue                              destinations (suspensions with until/reason/by)
//   GET  /queue/messages?domain=&state=&older_than=&limit=   queued jobs
//   GET  /queue/DEST                         one destination; 404 when unknown
//   POST /queue/DEST/suspend?duration=1h&reason=TEXT[&force=1]   persistent (suspensions.h)
//   POST /queue/DEST/resume | retry | flush | bounce[?reason=TEXT]
//   POST /messages/ID/hold | release | delete | retry | bounce[?reason=TEXT]   one message;
//        answered once the action is journaled (durable); 404 for an unknown id
//   POST /messages/ACTION?domain=D | ?state=deferred   every message queued there (bulk)
//   GET  /messages/ID/body                   the whole message (message/rfc822)
//   POST /reload, /debug/... (handed to the daemon)
// With [[source]]s a bare domain DEST (and ?domain=) is its queue on every source
// ("example.com@s3"; egress.h queues_of), "example.com@s3" that queue only; a destination
// action's answer lists the queues it reached ("queues").
// Unknown destinations are 404 (a typo never creates a destination; suspend of one with no
// mail yet needs force=1). Every request that changes something is logged ("admin_action")
// with who asked: "unix" plus the user ringmta-ctl names, or the TCP peer.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>

#include "ringmta/admin/http_server.h"

namespace ringmta::admin {
class log_writer;
class registry;
}  // namespace ringmta::admin

namespace ringmta::server {

class relay;
class suspension_table;

struct admin_api {
  using shard_work = std::function<std::string(relay&)>;
  unsigned shards = 1;
  std::string token;  // empty: no API over TCP
  std::string spool_dir;
  std::int64_t started_ms = 0;
  suspension_table* suspensions = nullptr;
  admin::log_writer* writer = nullptr;
  const admin::registry* registry = nullptr;
  // Runs `work` on the shard's relay; nullopt when it did not answer in time (or stopping).
  std::function<std::optional<std::string>(unsigned shard, shard_work work)> ask;
  std::function<bool()> running;  // shards started and not stopping
  std::function<admin::http_response(const admin::http_request&)> health, reload, debug;

  admin::http_response serve(const admin::http_request& request) const;
};

// The shard that holds a destination's queue: its owner (hash of the name), or, when the
// destination was rolled up into an MX site, the site's owner (relay::holder_of).
unsigned holder_of(const admin_api& api, const std::string& destination);

// "90", "90s", "15m", "1h", "2d" → seconds; nullopt when malformed or zero.
std::optional<std::int64_t> parse_duration_s(std::string_view text);

}  // namespace ringmta::server
