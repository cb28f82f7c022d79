#include "ringmta/server/admin_api.h"

#include <sys/resource.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <set>
#include <thread>

#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include <openssl/crypto.h>

#include "relay_internal.h"
#include "ringmta/admin/log_writer.h"
#include "ringmta/admin/metrics.h"
#include "ringmta/core/clock.h"
#include "ringmta/server/egress.h"
#include "ringmta/server/relay.h"
#include "ringmta/server/suspensions.h"
#include "ringmta/spool/listing.h"
#include "ringmta/spool/recovery.h"

#ifndef RINGMTA_VERSION
#define RINGMTA_VERSION "unknown"
#endif

namespace ringmta::server {
namespace {

using json = nlohmann::json;
using admin::http_request;
using admin::http_response;

// Remote texts may hold any bytes: invalid UTF-8 becomes U+FFFD, never invalid JSON.
http_response reply(int status, const json& body) {
  return {status, "application/json",
          body.dump(-1, ' ', false, json::error_handler_t::replace) + "\n"};
}
http_response error(int status, const std::string& text) {
  return reply(status, json{{"error", text}});
}

std::optional<http_response> refuse(const http_request& r, const std::string& token) {
  if (r.local_socket || r.path == "/metrics" || r.path == "/health") return std::nullopt;
  if (token.empty())
    return error(403, "the admin API is served on the control socket (ringmta-ctl); "
                      "set admin.token_file to open it on admin.listen");
  const std::string expected = "Bearer " + token;
  if (r.authorization.size() != expected.size() ||
      CRYPTO_memcmp(r.authorization.data(), expected.data(), expected.size()) != 0)
    return error(401, "Authorization: Bearer TOKEN required (admin.token_file)");
  return std::nullopt;
}

std::string who(const http_request& r) {
  const std::string user = r.operator_name.empty() ? "" : " user " + r.operator_name.substr(0, 64);
  return r.local_socket ? "unix" + user : "tcp " + r.peer + user;
}

std::string lowercase(std::string text) {
  std::transform(text.begin(), text.end(), text.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return text;
}

// Every shard's answer to `work`, parsed as a JSON array and concatenated.
std::optional<json> gather(const admin_api& api, const admin_api::shard_work& work) {
  json all = json::array();
  for (unsigned shard = 0; shard < api.shards; ++shard) {
    auto part = api.ask(shard, work);
    if (!part) return std::nullopt;
    for (auto& item : json::parse(*part)) all.push_back(std::move(item));
  }
  return all;
}

void add_suspension(const admin_api& api, json& destination) {
  suspension entry;
  if (!api.suspensions->find(destination.value("destination", ""), entry)) return;
  destination["suspended_until_ms"] = entry.until_ms;
  destination["suspended_since_ms"] = entry.since_ms;
  destination["suspend_reason"] = entry.reason;
  destination["suspended_by"] = entry.by;
}

}  // namespace

unsigned holder_of(const admin_api& api, const std::string& destination) {
  const unsigned owner = owner_of(destination, api.shards);
  const auto answer = api.ask(owner, [destination](relay& r) {
    return std::to_string(r.holder_of(destination));
  });
  if (!answer) return owner;
  const unsigned holder = static_cast<unsigned>(std::strtoul(answer->c_str(), nullptr, 10));
  return holder < api.shards ? holder : owner;
}

namespace {

http_response destinations(const admin_api& api) {
  auto all = gather(api, [](relay& owner) { return owner.destinations_json(100'000); });
  if (!all) return error(503, "a shard did not answer");
  for (auto& d : *all) add_suspension(api, d);
  return reply(200, *all);
}

std::optional<json> destination(const admin_api& api, const std::string& name) {
  auto part = api.ask(holder_of(api, name), [name](relay& owner) {
    if (!owner.knows(name)) return std::string("[]");
    return owner.destinations_json(100'000);
  });
  if (!part) return json();  // null: no answer
  for (auto& d : json::parse(*part))
    if (d.value("destination", "") == name) {
      add_suspension(api, d);
      return d;
    }
  return std::nullopt;
}

// The queues `name` addresses (egress.h queues_of): with [[source]]s configured a bare domain
// is its queue on every source ("example.com@s3"), those with mail or a suspension and, for a
// suspension (`configured`), every configured source's; "example.com@s3" is that queue only.
// nullopt: a shard did not answer.
std::optional<std::vector<std::string>> queues_named(const admin_api& api,
                                                     const std::string& name, bool configured) {
  const auto sources = api.ask(0, [](relay& owner) { return owner.egress_sources_json(); });
  if (!sources) return std::nullopt;
  const json names = json::parse(*sources);
  if (names.empty() || !split_egress(name).second.empty()) return std::vector<std::string>{name};
  auto all = gather(api, [](relay& owner) { return owner.destinations_json(100'000); });
  if (!all) return std::nullopt;
  std::vector<std::string> existing;
  for (const auto& d : *all) existing.push_back(d.value("destination", ""));
  for (const auto& entry : api.suspensions->all()) existing.push_back(entry.destination);
  return queues_of(name, configured ? names.get<std::vector<std::string>>()
                                    : std::vector<std::string>{}, existing);
}

// Queued jobs (at most `limit` per queue) of every queue `domain` addresses; all when empty.
std::optional<json> jobs_once(const admin_api& api, const std::string& domain,
                              std::size_t limit) {
  const auto work = [limit](std::string name) {
    return [name, limit](relay& owner) { return owner.jobs_json(name, limit); };
  };
  if (domain.empty()) return gather(api, work(""));
  const auto queues = queues_named(api, domain, false);
  if (!queues) return std::nullopt;
  json all = json::array();
  for (const auto& queue : *queues) {
    auto part = api.ask(holder_of(api, queue), work(queue));
    if (!part) return std::nullopt;
    for (auto& job : json::parse(*part)) all.push_back(std::move(job));
  }
  return all;
}

// The same, once the envelopes of the listed messages are in memory: a waiting message's is
// only in the spool (relay_envelopes.cc), and listing it asks its home to read it back, so
// the shards are asked again until none is "on_disk" (2 s at most; then those show
// "(on disk)" for their addresses).
std::optional<json> jobs_of(const admin_api& api, const std::string& domain, std::size_t limit) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(2);
  for (;;) {
    auto all = jobs_once(api, domain, limit);
    if (!all || std::chrono::steady_clock::now() >= deadline ||
        std::none_of(all->begin(), all->end(),
                     [](const json& job) { return job.value("on_disk", false); }))
      return all;
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
}

http_response messages(const admin_api& api, const http_request& r) {
  const std::string domain = lowercase(r.param("domain"));
  const std::string state = r.param("state");
  const std::string sender = lowercase(r.param("sender"));
  const std::string id = r.param("id");
  const std::size_t limit = std::min<std::size_t>(
      std::strtoull(r.param("limit", "1000").c_str(), nullptr, 10), 100'000);
  if (!state.empty() && state != "deferred" && state != "active" && state != "ready" &&
      state != "suspended" && state != "held")
    return error(400, "state: deferred, active, ready, suspended or held");
  std::int64_t older_than_s = 0;
  if (!r.param("older_than").empty()) {
    auto parsed = parse_duration_s(r.param("older_than"));
    if (!parsed) return error(400, "older_than: a duration such as 30m, 4h or 2d");
    older_than_s = *parsed;
  }
  auto all = jobs_of(api, domain, limit);
  if (!all) return error(503, "a shard did not answer");
  const std::int64_t now_s = core::wall_milliseconds() / 1000;
  json out = json::array();
  for (auto& job : *all) {
    if (!state.empty() && job.value("state", "") != state) continue;
    if (!id.empty() && job.value("id", "") != id) continue;
    if (!sender.empty() && lowercase(job.value("sender", "")).find(sender) == std::string::npos)
      continue;
    if (older_than_s > 0 && now_s - job.value("received_s", now_s) < older_than_s) continue;
    if (out.size() >= limit) break;
    out.push_back(std::move(job));
  }
  return reply(200, out);
}

// Every queue of `queues` (recorded first: a restart applies it) is suspended on its holder.
http_response suspend(const admin_api& api, const http_request& r, const std::string& name,
                      const std::vector<std::string>& queues, bool known) {
  if (!known && r.param("force") != "1")
    return error(404, fmt::format("no queue for {}: check the name (force=1 suspends a "
                                  "destination with no mail yet)", name));
  suspension entry;
  entry.since_ms = core::wall_milliseconds();
  entry.reason = r.param("reason");
  entry.by = who(r);
  if (!r.param("duration").empty()) {
    auto seconds = parse_duration_s(r.param("duration"));
    if (!seconds) return error(400, "duration: a duration such as 90s, 15m, 1h or 2d");
    entry.until_ms = entry.since_ms + *seconds * 1000;
  }
  for (const auto& queue : queues) {
    entry.destination = queue;
    if (auto saved = api.suspensions->put(entry); !saved)
      return error(500, fmt::format("cannot record the suspension: {}", saved.error_text()));
  }
  for (const auto& queue : queues)
    if (!api.ask(holder_of(api, queue),
                 [queue](relay& owner) { return owner.operate(queue, "suspend"); }))
      return error(503, "recorded, but a shard did not answer: applies at restart");
  return reply(200, json{{"destination", name}, {"action", "suspend"}, {"queues", queues},
                         {"until_ms", entry.until_ms}, {"reason", entry.reason}});
}

// A destination action on every queue the name addresses that has mail or a suspension; the
// answer lists them ("queues") and sums their jobs.
http_response act(const admin_api& api, const http_request& r, const std::string& name,
                  const std::string& action) {
  if (r.method != "POST") return error(405, "use POST /queue/DESTINATION/ACTION");
  const std::string operation = action == "retry" ? "flush" : action;
  if (operation != "suspend" && operation != "resume" && operation != "flush" &&
      operation != "bounce")
    return error(400, "unknown action " + action + ": suspend, resume, retry, bounce");
  const auto queues = queues_named(api, name, operation == "suspend");
  if (!queues) return error(503, "a shard did not answer");
  std::vector<std::string> known;
  for (const auto& queue : *queues) {
    const auto found = destination(api, queue);
    if (found && found->is_null()) return error(503, "the shard did not answer");
    if (found) known.push_back(queue);
  }
  if (operation == "suspend") return suspend(api, r, name, *queues, !known.empty());
  std::vector<std::string> affected;
  std::size_t jobs = 0;
  for (const auto& queue : *queues) {
    bool was_suspended = false;
    if (operation == "resume") {
      auto erased = api.suspensions->erase(queue);
      if (!erased) return error(500, fmt::format("cannot record: {}", erased.error_text()));
      was_suspended = erased.value();
    }
    const bool listed =
        was_suspended || std::find(known.begin(), known.end(), queue) != known.end();
    // A resume also ends a reply rule's pause, which a queue without mail may still have (a
    // pause recovered from the journal waits there for the domain's first job).
    if (!listed && operation != "resume") continue;
    auto answer = api.ask(holder_of(api, queue), [queue, operation](relay& owner) {
      return owner.operate(queue, operation);
    });
    if (!answer) return error(503, "the shard did not answer");
    const json answered = json::parse(*answer);
    if (!listed && !answered.value("lifted", false)) continue;
    jobs += answered.value("jobs", std::size_t{0});
    affected.push_back(queue);
  }
  if (affected.empty()) return error(404, "no queue for " + name);
  return reply(200, json{{"destination", name}, {"action", action}, {"known", !known.empty()},
                         {"jobs", jobs}, {"queues", affected}});
}

std::uint64_t spool_bytes(const std::string& directory) {
  std::uint64_t total = 0;
  std::error_code ignored;
  for (auto it = std::filesystem::recursive_directory_iterator(directory, ignored);
       it != std::filesystem::recursive_directory_iterator(); it.increment(ignored)) {
    if (it->is_regular_file(ignored)) total += it->file_size(ignored);
  }
  return total;
}

http_response status(const admin_api& api) {
  json out = {{"version", RINGMTA_VERSION}, {"pid", ::getpid()}, {"shards", api.shards},
              {"uptime_s", (core::wall_milliseconds() - api.started_ms) / 1000},
              {"spool_dir", api.spool_dir}, {"spool_bytes", spool_bytes(api.spool_dir)}};
  struct statvfs disk{};
  if (::statvfs(api.spool_dir.c_str(), &disk) == 0)
    out["spool_free_bytes"] = static_cast<std::uint64_t>(disk.f_bavail) * disk.f_frsize;
  out["suspensions"] = api.suspensions->all().size();
  // Summed on each shard: the per-destination list is never built for a status poll.
  json queue = {{"destinations", 0}, {"ready", 0}, {"scheduled", 0}, {"in_flight", 0},
                {"connections", 0}};
  bool answered = true;
  for (unsigned shard = 0; shard < api.shards; ++shard) {
    const auto part = api.ask(shard, [](relay& owner) { return owner.queue_totals_json(); });
    answered = part.has_value();
    if (!answered) break;
    const json totals = json::parse(*part);  // named: items() must not outlive it
    for (const auto& [key, value] : totals.items())
      queue[key] = queue[key].get<std::uint64_t>() + value.get<std::uint64_t>();
  }
  if (answered) out["queue"] = queue;
  return reply(200, out);
}

// Prometheus label values: backslash, quote and newline escaped.
std::string label(std::string_view text) {
  std::string out;
  for (const char c : text) {
    if (c == '\\' || c == '"') out += '\\';
    if (c == '\n') out += "\\n";
    else out += c;
  }
  return out;
}

// Scrape-time metrics the shards' registry does not hold: build info, the process (RSS, open
// descriptors, CPU, start time) and the queue depth of the top `top` destinations (bounded
// label cardinality: the rest is summed in destination="other").
std::string process_and_queue_metrics(const admin_api& api, std::size_t top) {
  std::string out = fmt::format(
      "# HELP ringmta_build_info Version of the running daemon\n# TYPE ringmta_build_info gauge\n"
      "ringmta_build_info{{version=\"{}\"}} 1\n", label(RINGMTA_VERSION));
  long pages = 0, resident = 0;
  if (FILE* statm = std::fopen("/proc/self/statm", "r")) {
    if (std::fscanf(statm, "%ld %ld", &pages, &resident) != 2) resident = 0;
    std::fclose(statm);
  }
  std::size_t fds = 0;
  std::error_code ignored;
  for (auto it = std::filesystem::directory_iterator("/proc/self/fd", ignored);
       it != std::filesystem::directory_iterator(); it.increment(ignored))
    ++fds;
  rusage usage{};
  ::getrusage(RUSAGE_SELF, &usage);
  const double cpu = static_cast<double>(usage.ru_utime.tv_sec + usage.ru_stime.tv_sec) +
                     (usage.ru_utime.tv_usec + usage.ru_stime.tv_usec) / 1e6;
  out += fmt::format(
      "# HELP process_resident_memory_bytes Resident set size\n"
      "# TYPE process_resident_memory_bytes gauge\nprocess_resident_memory_bytes {}\n"
      "# HELP process_open_fds Open file descriptors\n# TYPE process_open_fds gauge\n"
      "process_open_fds {}\n"
      "# HELP process_cpu_seconds_total User and system CPU time\n"
      "# TYPE process_cpu_seconds_total counter\nprocess_cpu_seconds_total {:.3f}\n"
      "# HELP process_start_time_seconds Start time since the epoch\n"
      "# TYPE process_start_time_seconds gauge\nprocess_start_time_seconds {}\n",
      resident * ::sysconf(_SC_PAGESIZE), fds, cpu, api.started_ms / 1000);
  if (!api.running()) return out;
  auto all = gather(api, [](relay& owner) { return owner.destinations_json(100'000); });
  if (!all) return out;
  std::vector<std::pair<std::uint64_t, std::string>> depths;
  for (const auto& d : *all)
    depths.emplace_back(d.value("ready", 0u) + d.value("scheduled", 0u) + d.value("in_flight", 0u),
                        d.value("destination", ""));
  std::sort(depths.begin(), depths.end(), std::greater<>());
  out += "# HELP ringmta_destination_queue_depth Queued jobs of the largest destinations\n"
         "# TYPE ringmta_destination_queue_depth gauge\n";
  std::uint64_t other = 0;
  for (std::size_t i = 0; i < depths.size(); ++i) {
    if (i < top)
      out += fmt::format("ringmta_destination_queue_depth{{destination=\"{}\"}} {}\n",
                         label(depths[i].second), depths[i].first);
    else other += depths[i].first;
  }
  out += fmt::format("ringmta_destination_queue_depth{{destination=\"other\"}} {}\n", other);
  out += fmt::format("# HELP ringmta_suspended_destinations Operator suspensions in force\n"
                     "# TYPE ringmta_suspended_destinations gauge\n"
                     "ringmta_suspended_destinations {}\n", api.suspensions->all().size());
  return out;
}

http_response queue(const admin_api& api, const http_request& r) {
  if (r.path == "/queue" || r.path == "/queue/") {
    if (r.method != "GET") return error(405, "use GET /queue");
    return destinations(api);
  }
  if (r.path == "/queue/messages") {
    if (r.method != "GET") return error(405, "use GET /queue/messages");
    return messages(api, r);
  }
  const std::string rest = r.path.substr(std::string("/queue/").size());
  const auto slash = rest.find('/');
  const std::string name = lowercase(rest.substr(0, slash));
  if (name.empty() || name.size() > 255 || name.find_first_of(" \t\r\n") != std::string::npos)
    return error(400, "bad destination name");
  if (slash == std::string::npos) {
    if (r.method != "GET") return error(405, "use GET /queue/DESTINATION");
    const auto found = destination(api, name);
    if (found && found->is_null()) return error(503, "the shard did not answer");
    if (!found) return error(404, "no queue for " + name);
    return reply(200, *found);
  }
  return act(api, r, name, rest.substr(slash + 1));
}

// ---- per-message actions: /messages/ID/ACTION, /messages/ID/body, /messages/ACTION?domain=

// Polls the home shard until the action's journal record is durable (10 s at most): an
// acknowledged action survives SIGKILL. A flush takes one loop iteration and one fdatasync.
std::optional<std::string> wait_durable(const admin_api& api, unsigned home,
                                        std::uint64_t ticket) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (std::chrono::steady_clock::now() < deadline) {
    auto state = api.ask(home, [ticket](relay& owner) { return owner.action_state(ticket); });
    if (!state) return std::nullopt;
    if (*state != "pending") return state;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  return std::nullopt;
}

http_response act_on_message(const admin_api& api, const http_request& r, spool::message_id id,
                             const std::string& action) {
  const std::string text = spool::format_message_id(id).data();
  const unsigned home = spool::message_id_shard(id);
  if (home >= api.shards) return error(404, "no queued message " + text);
  const std::string reason = r.param("reason").substr(0, 200);
  const std::string by = who(r);
  auto answer = api.ask(home, [id, action, reason, by](relay& owner) {
    return owner.act_on_message(id, action, reason, by);
  });
  if (!answer) return error(503, "the shard did not answer");
  if (answer->empty())
    return error(400, "unknown action " + action + ": hold, release, delete, retry, bounce");
  json out = json::parse(*answer);
  if (!out.value("found", false)) return error(404, "no queued message " + text);
  if (out.contains("error")) return error(500, out.value("error", ""));
  if (const auto ticket = out.value("ticket", std::uint64_t{0}); ticket != 0) {
    const auto state = wait_durable(api, home, ticket);
    if (!state) return error(503, "journaled, but the spool did not report it durable in time");
    if (*state != "ok") return error(500, *state);
  }
  out.erase("ticket");
  return reply(200, out);
}

// Bulk: every queued message with a job at ?domain=D, or with a deferred job (?state=deferred).
// Whole messages (as postsuper -d): their recipients at other destinations too.
http_response act_on_messages(const admin_api& api, const http_request& r,
                              const std::string& action) {
  const std::string domain = lowercase(r.param("domain"));
  const std::string state = r.param("state");
  if (domain.empty() && state != "deferred")
    return error(400, "name the messages: ?domain=DOMAIN or ?state=deferred");
  auto jobs = jobs_once(api, domain, 100'000);  // ids only: no envelopes needed
  if (!jobs) return error(503, "a shard did not answer");
  std::set<std::string> ids;
  for (const auto& job : *jobs)
    if (state.empty() || job.value("state", "") == state) ids.insert(job.value("id", ""));
  json done = json::array();
  json failed = json::array();
  for (const auto& text : ids) {
    const auto id = spool::parse_message_id(text);
    if (!id) continue;
    const auto answer = act_on_message(api, r, *id, action);
    if (answer.status == 200) done.push_back(text);
    else if (answer.status != 404) failed.push_back({{"id", text}, {"status", answer.status}});
  }  // a 404: the message left meanwhile (delivered, deleted)
  json out = {{"action", action}, {"messages", done}, {"failed", failed}};
  return reply(failed.empty() ? 200 : 500, out);
}

// The whole message from the home shard's segment files, read here (the shard only says
// where): `ringmta-ctl show ID --body`.
http_response message_text(const admin_api& api, spool::message_id id) {
  const std::string text = spool::format_message_id(id).data();
  const unsigned home = spool::message_id_shard(id);
  if (home >= api.shards) return error(404, "no queued message " + text);
  auto answer = api.ask(home, [id](relay& owner) { return owner.message_location_json(id); });
  if (!answer) return error(503, "the shard did not answer");
  if (answer->empty()) return error(404, "no queued message " + text);
  const json where = json::parse(*answer);
  spool::message_location location;
  location.id = id;
  location.commit_segment = where.value("commit_segment", 0u);
  location.commit_offset = where.value("commit_offset", std::uint64_t{0});
  location.commit_bytes = where.value("commit_bytes", 0u);
  auto read = spool::read_message_text(spool::shard_directory(api.spool_dir, home), location,
                                       std::uint64_t{1} << 30);
  if (!read && read.error() == ENOENT) return error(404, "no queued message " + text);
  if (!read) return error(500, fmt::format("cannot read {}: {}", text, read.error_text()));
  return {200, "message/rfc822", std::move(read.value())};
}

http_response message_route(const admin_api& api, const http_request& r) {
  const std::string rest = r.path.substr(std::string("/messages/").size());
  const auto slash = rest.find('/');
  if (slash == std::string::npos) {  // /messages/ACTION?domain=D | state=deferred
    if (r.method != "POST") return error(405, "use POST /messages/ACTION?domain=DOMAIN");
    if (rest != "hold" && rest != "release" && rest != "delete" && rest != "retry" &&
        rest != "bounce")
      return error(400, "unknown action " + rest + ": hold, release, delete, retry, bounce");
    return act_on_messages(api, r, rest);
  }
  const auto id = spool::parse_message_id(rest.substr(0, slash));
  if (!id) return error(400, "bad message id " + rest.substr(0, slash));
  const std::string action = rest.substr(slash + 1);
  if (action == "body") {
    if (r.method != "GET") return error(405, "use GET /messages/ID/body");
    return message_text(api, *id);
  }
  if (r.method != "POST") return error(405, "use POST /messages/ID/ACTION");
  return act_on_message(api, r, *id, action);
}

}  // namespace

std::optional<std::int64_t> parse_duration_s(std::string_view text) {
  if (text.empty() || text.size() > 12 || !std::isdigit(static_cast<unsigned char>(text[0])))
    return std::nullopt;
  std::int64_t number = 0;
  std::size_t i = 0;
  for (; i < text.size() && std::isdigit(static_cast<unsigned char>(text[i])); ++i)
    number = number * 10 + (text[i] - '0');
  const std::string_view unit = text.substr(i);
  std::int64_t scale = 0;
  if (unit.empty() || unit == "s") scale = 1;
  else if (unit == "m") scale = 60;
  else if (unit == "h") scale = 3600;
  else if (unit == "d") scale = 86400;
  if (scale == 0 || number == 0 || number > 10 * 365 * 86400 / scale) return std::nullopt;
  return number * scale;
}

http_response admin_api::serve(const http_request& r) const {
  if (auto refused = refuse(r, token)) return *refused;
  http_response out;
  if (r.path == "/health") return health(r);
  if (r.path == "/metrics")
    return {200, "text/plain; version=0.0.4",
            registry->render_prometheus() + process_and_queue_metrics(*this, 20)};
  if (r.path == "/reload") out = reload(r);
  else if (r.path.rfind("/debug/", 0) == 0) out = debug(r);
  else if (!running()) out = error(503, "not running");
  else if (r.path == "/status") out = status(*this);
  else if (r.path.rfind("/queue", 0) == 0) out = queue(*this, r);
  else if (r.path.rfind("/messages/", 0) == 0) out = message_route(*this, r);
  else out = error(404, "not found: " + r.path);
  if (r.method != "GET" && r.method != "HEAD") {
    std::string query;
    for (const auto& [key, value] : r.query)
      query += fmt::format("{}{}={}", query.empty() ? "" : "&", key, value);
    writer->post_record("admin_action", [&](admin::log_record& record) {
      record.field("method", r.method).field("path", r.path).field("query", query)
          .field("by", who(r)).field("status", out.status);
    });
  }
  return out;
}

}  // namespace ringmta::server
