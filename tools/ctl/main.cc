// ringmta-ctl: the operator's tool (as postqueue/postsuper or kcli): the queue by destination
// and by message, suspensions, retries, bounces, reload and status, through the daemon's
// admin API on its control socket (SPOOL/admin.sock unless the daemon was told otherwise).
//
// Exit status (scripts rely on it; see ringmta-ctl(1)):
//   0 done; 1 the daemon refused (bad request, could not record); 2 usage error;
//   3 no such destination or message (404); 4 the daemon cannot be reached or did not answer.
// --json prints the daemon's JSON answer as is (one document on stdout), for every command.
//
// HTTP over a UNIX socket is written here (one request, Connection: close): Debian 12's
// cpp-httplib 0.11 client cannot connect to a UNIX socket.
#include <pwd.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cerrno>
#include <cstring>
#include <ctime>
#include <iostream>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

namespace {

using json = nlohmann::json;

enum exit_code : int { done = 0, refused = 1, usage = 2, not_found = 3, unreachable = 4 };

struct answer {
  int status = 0;  // 0: no answer
  std::string body;
  std::string problem;
};

std::string percent_encoded(std::string_view text) {
  std::string out;
  for (const unsigned char c : text) {
    const bool unreserved = std::isalnum(c) || c == '-' || c == '.' || c == '_' || c == '~';
    out += unreserved ? std::string(1, static_cast<char>(c)) : fmt::format("%{:02X}", c);
  }
  return out;
}

std::string operator_name() {
  const passwd* entry = ::getpwuid(::getuid());
  return entry != nullptr ? entry->pw_name : std::to_string(::getuid());
}

answer request(const std::string& socket_path, const std::string& method, const std::string& path,
               const std::map<std::string, std::string>& query, int timeout_s) {
  answer out;
  sockaddr_un address{};
  address.sun_family = AF_UNIX;
  if (socket_path.size() >= sizeof address.sun_path) {
    out.problem = socket_path + ": path too long";
    return out;
  }
  std::memcpy(address.sun_path, socket_path.data(), socket_path.size());
  const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  const timeval timeout{timeout_s, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
  ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, sizeof timeout);
  if (::connect(fd, reinterpret_cast<const sockaddr*>(&address), sizeof address) != 0) {
    out.problem = fmt::format("cannot connect to {}: {} (is ringmta running? --socket or --spool "
                              "names its control socket)", socket_path, std::strerror(errno));
    ::close(fd);
    return out;
  }
  std::string target = path;
  char separator = '?';
  for (const auto& [key, value] : query) {
    target += fmt::format("{}{}={}", separator, key, percent_encoded(value));
    separator = '&';
  }
  const std::string head = fmt::format(
      "{} {} HTTP/1.1\r\nHost: ringmta\r\nConnection: close\r\nX-Ringmta-Operator: {}\r\n"
      "Content-Length: 0\r\n\r\n", method, target, operator_name());
  std::string raw;
  if (::send(fd, head.data(), head.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(head.size())) {
    char chunk[16384];
    for (ssize_t got; (got = ::recv(fd, chunk, sizeof chunk, 0)) > 0;)
      raw.append(chunk, static_cast<std::size_t>(got));
  }
  ::close(fd);
  const auto header_end = raw.find("\r\n\r\n");
  if (raw.rfind("HTTP/1.", 0) != 0 || header_end == std::string::npos) {
    out.problem = "no answer from the daemon (timed out or closed)";
    return out;
  }
  out.status = std::atoi(raw.c_str() + raw.find(' ') + 1);
  out.body = raw.substr(header_end + 4);
  return out;
}

// Display width of UTF-8 text: code points (continuation bytes take no column).
std::size_t width_of(std::string_view text) {
  std::size_t columns = 0;
  for (const unsigned char c : text) columns += (c & 0xC0) != 0x80;
  return columns;
}

void print_table(const std::vector<std::string>& titles,
                 const std::vector<std::vector<std::string>>& rows) {
  std::vector<std::size_t> widths(titles.size());
  for (std::size_t i = 0; i < titles.size(); ++i) widths[i] = width_of(titles[i]);
  for (const auto& row : rows)
    for (std::size_t i = 0; i < row.size(); ++i) widths[i] = std::max(widths[i], width_of(row[i]));
  const auto line = [&](const std::vector<std::string>& cells) {
    std::string out;
    for (std::size_t i = 0; i < cells.size(); ++i) {
      out += cells[i];
      if (i + 1 < cells.size()) out += std::string(widths[i] - width_of(cells[i]) + 2, ' ');
    }
    std::cout << out << "\n";
  };
  line(titles);
  for (const auto& row : rows) line(row);
}

std::string when(std::int64_t ms) {
  if (ms <= 0) return "-";
  const std::time_t seconds = ms / 1000;
  std::tm local{};
  ::localtime_r(&seconds, &local);
  char text[32];
  std::strftime(text, sizeof text, "%Y-%m-%d %H:%M:%S", &local);
  return text;
}

std::string age(std::int64_t seconds) {
  if (seconds < 120) return fmt::format("{}s", seconds);
  if (seconds < 7200) return fmt::format("{}m", seconds / 60);
  if (seconds < 172800) return fmt::format("{}h", seconds / 3600);
  return fmt::format("{}d", seconds / 86400);
}

struct context {
  std::string socket;
  std::string spool = "/var/spool/ringmta";
  bool json_output = false;
  int timeout_s = 30;
  std::string socket_path() const { return socket.empty() ? spool + "/admin.sock" : socket; }
};

// The exit code of a request that failed (after printing why), nullopt when it succeeded.
// `out` is the answer's JSON (an error text that is not JSON becomes {"error": text}).
std::optional<int> failure(const context& c, const answer& got, json& out) {
  if (got.status == 0) {
    std::cerr << "ringmta-ctl: " << got.problem << "\n";
    return unreachable;
  }
  try {
    out = json::parse(got.body);
  } catch (const std::exception&) {
    out = json{{"error", got.body}};
  }
  if (got.status == 200) return std::nullopt;
  if (c.json_output) std::cout << out.dump(2) << "\n";
  std::cerr << "ringmta-ctl: " << out.value("error", got.body) << "\n";
  if (got.status == 404) return not_found;
  if (got.status == 503) return unreachable;
  return refused;
}

// Sends one request; prints the error and returns the exit code when it failed.
std::optional<int> call(const context& c, const std::string& method, const std::string& path,
                        const std::map<std::string, std::string>& query, json& out) {
  return failure(c, request(c.socket_path(), method, path, query, c.timeout_s), out);
}

int show_queue(const context& c) {
  json out;
  if (auto failed = call(c, "GET", "/queue", {}, out)) return *failed;
  if (c.json_output) return std::cout << out.dump(2) << "\n", done;
  std::vector<std::vector<std::string>> rows;
  for (const auto& d : out) {
    std::string suspended = "-";
    if (d.value("suspended", false))
      suspended = d.value("suspended_until_ms", std::int64_t{0}) > 0
                      ? "until " + when(d.value("suspended_until_ms", std::int64_t{0}))
                      : "yes";
    rows.push_back({d.value("destination", ""), std::to_string(d.value("ready", 0)),
                    std::to_string(d.value("scheduled", 0)),
                    std::to_string(d.value("in_flight", 0)), std::to_string(d.value("held", 0)),
                    std::to_string(d.value("connections", 0)),
                    when(d.value("next_attempt_ms", std::int64_t{0})), suspended,
                    d.value("last_error", "")});
  }
  print_table({"DESTINATION", "READY", "SCHEDULED", "ACTIVE", "HELD", "CONNS", "NEXT ATTEMPT",
               "SUSPENDED", "LAST ERROR"}, rows);
  return done;
}

int show_messages(const context& c, const std::map<std::string, std::string>& query) {
  json out;
  if (auto failed = call(c, "GET", "/queue/messages", query, out)) return *failed;
  if (c.json_output) return std::cout << out.dump(2) << "\n", done;
  const std::int64_t now = std::time(nullptr);
  std::vector<std::vector<std::string>> rows;
  for (const auto& j : out) {
    const std::string reply = j.value("last_error", "");  // the reply with its code
    std::string recipients;
    for (const auto& r : j.value("recipients", json::array()))
      recipients += (recipients.empty() ? "" : ",") + r.value("address", "");
    const std::string sender = j.value("sender", "");
    rows.push_back({j.value("id", ""), sender.empty() ? "<>" : sender, recipients,
                    j.value("state", ""), std::to_string(j.value("size", 0)),
                    age(now - j.value("received_s", now)), std::to_string(j.value("attempts", 0)),
                    when(j.value("next_attempt_ms", std::int64_t{0})), reply});
  }
  print_table({"ID", "SENDER", "RECIPIENTS", "STATE", "SIZE", "AGE", "ATTEMPTS", "NEXT ATTEMPT",
               "LAST REPLY"}, rows);
  return done;
}

int show_message(const context& c, const std::string& id) {
  json out;
  if (auto failed = call(c, "GET", "/queue/messages", {{"id", id}, {"limit", "100000"}}, out))
    return *failed;
  if (out.empty()) {
    std::cerr << "ringmta-ctl: no queued message " << id << "\n";
    return not_found;
  }
  if (c.json_output) return std::cout << out.dump(2) << "\n", done;
  const auto& first = out.front();
  std::cout << "id:        " << id << "\nsender:    <" << first.value("sender", "") << ">\n"
            << "size:      " << first.value("size", 0) << " bytes\nreceived:  "
            << when(first.value("received_s", std::int64_t{0}) * 1000) << "\n";
  for (const auto& j : out) {
    std::cout << "\ndestination " << j.value("destination", "") << ": " << j.value("state", "")
              << ", " << j.value("attempts", 0) << " attempt(s), last "
              << when(j.value("last_attempt_ms", std::int64_t{0})) << ", next "
              << when(j.value("next_attempt_ms", std::int64_t{0})) << "\n";
    if (!j.value("last_error", "").empty())
      std::cout << "  last reply: " << j.value("last_error", "") << "\n";
    for (const auto& r : j.value("recipients", json::array()))
      std::cout << "  <" << r.value("address", "") << ">\n";
  }
  return done;
}

int print_status(const json& s) {
  const auto q = s.value("queue", json::object());
  std::cout << fmt::format(
      "ringmta {}, pid {}, up {}, {} shards\n"
      "spool {}: {} bytes used, {} bytes free\n"
      "queue: {} destinations, {} ready, {} scheduled, {} active, {} connections; "
      "{} suspensions\n",
      s.value("version", "?"), s.value("pid", 0), age(s.value("uptime_s", std::int64_t{0})),
      s.value("shards", 0), s.value("spool_dir", ""), s.value("spool_bytes", std::uint64_t{0}),
      s.value("spool_free_bytes", std::uint64_t{0}), q.value("destinations", 0),
      q.value("ready", 0), q.value("scheduled", 0), q.value("in_flight", 0),
      q.value("connections", 0), s.value("suspensions", 0));
  return done;
}

// Per-message actions: one request per id (each answered once journaled); the exit status
// is the worst of them (an unknown id: 3).
int act_on_ids(const context& c, const std::vector<std::string>& ids, const std::string& action,
               const std::map<std::string, std::string>& query, const std::string& done_text) {
  int status = done;
  json all = json::array();
  context quiet = c;  // --json: one document on stdout, failures included in it
  quiet.json_output = false;
  for (const auto& id : ids) {
    json out;
    if (auto failed = call(quiet, "POST", "/messages/" + percent_encoded(id) + "/" + action,
                           query, out)) {
      status = std::max(status, *failed);
      const std::string why = out.is_object() ? out.value("error", "") : "no answer";
      if (c.json_output) all.push_back({{"id", id}, {"error", why}});
      continue;
    }
    if (c.json_output) all.push_back(out);
    else std::cout << id << ": " << done_text << "\n";
  }
  if (c.json_output) std::cout << all.dump(2) << "\n";
  return status;
}

// Bulk: every message queued for a domain (or every deferred one).
int act_on_selection(const context& c, const std::string& action,
                     const std::map<std::string, std::string>& query,
                     const std::string& done_text) {
  json out;
  if (auto failed = call(c, "POST", "/messages/" + action, query, out)) return *failed;
  if (c.json_output) return std::cout << out.dump(2) << "\n", done;
  for (const auto& id : out.value("messages", json::array()))
    std::cout << id.get<std::string>() << ": " << done_text << "\n";
  std::cout << out.value("messages", json::array()).size() << " message(s) " << done_text
            << "\n";
  return done;
}

// The whole message as the spool holds it (headers and body).
int show_body(const context& c, const std::string& id) {
  const answer got = request(c.socket_path(), "GET", "/messages/" + percent_encoded(id) + "/body",
                             {}, c.timeout_s);
  if (got.status != 200) {
    json out;
    return failure(c, got, out).value_or(refused);
  }
  if (c.json_output) std::cout << json{{"id", id}, {"message", got.body}}.dump(2) << "\n";
  else std::cout << got.body;
  return done;
}

// The queues a destination action reached: with egress pools a domain is one queue per
// source ("example.com@s1"); printed when they are not just the name itself.
std::string queues_text(const json& out) {
  const json queues = out.value("queues", json::array());
  if (queues.size() == 1 && queues[0] == out.value("destination", "")) return {};
  std::string text;
  for (const auto& queue : queues) text += (text.empty() ? "" : " ") + queue.get<std::string>();
  return " (queues: " + text + ")";
}

int act(const context& c, const std::string& path,
        const std::map<std::string, std::string>& query, const std::string& done_text) {
  json out;
  if (auto failed = call(c, "POST", path, query, out)) return *failed;
  if (c.json_output) std::cout << out.dump(2) << "\n";
  else std::cout << done_text << out.value("jobs", 0) << " job(s)" << queues_text(out) << "\n";
  return done;
}

}  // namespace

int main(int argc, char** argv) {
  context c;
  CLI::App app{"ringmta-ctl: queue control for the ringmta daemon (see ringmta-ctl(1))"};
  app.require_subcommand(1);
  app.add_option("--socket", c.socket, "the daemon's control socket (default: SPOOL/admin.sock)");
  app.add_option("--spool", c.spool, "the daemon's spool directory")->capture_default_str();
  app.add_flag("--json", c.json_output, "print the daemon's JSON answer");
  app.add_option("--timeout", c.timeout_s, "seconds to wait for the daemon")
      ->check(CLI::Range(1, 3600))->capture_default_str();

  auto* queue = app.add_subcommand("queue", "destinations: ready, scheduled, active, suspended");
  std::string domain, state, older_than, reason, duration;
  bool force = false;
  auto* list = app.add_subcommand("list", "queued messages (one line per destination job)");
  std::string sender;
  list->add_option("--domain", domain, "only this destination");
  list->add_option("--sender", sender, "only senders containing this text");
  list->add_option("--state", state, "deferred|ready|active|suspended|held")
      ->check(CLI::IsMember({"deferred", "ready", "active", "suspended", "held"}));
  list->add_option("--older-than", older_than, "received longer ago than this (30m, 4h, 2d)");
  std::string target;
  auto* show = app.add_subcommand("show", "one queued message: envelope, per-destination state");
  show->add_option("ID", target, "queue id (from list)")->required();
  bool body = false;
  show->add_flag("--body", body, "print the whole message (headers and body) from the spool");
  std::vector<std::string> ids;
  bool all_deferred = false;
  auto* remove = app.add_subcommand("delete", "delete messages without a DSN (as postsuper -d)");
  remove->add_option("ID", ids, "queue ids (from list)");
  remove->add_option("--domain", domain, "every message queued for this destination");
  remove->add_flag("--all-deferred", all_deferred, "every message with a deferred recipient");
  auto* hold = app.add_subcommand("hold", "hold messages: never tried until released (persistent)");
  hold->add_option("ID", ids, "queue ids")->required();
  auto* release = app.add_subcommand("release", "release held messages: tried now");
  release->add_option("ID", ids, "queue ids")->required();
  auto* suspend = app.add_subcommand("suspend", "stop deliveries to a destination (persistent)");
  suspend->add_option("DOMAIN", target, "destination")->required();
  suspend->add_option("--duration", duration, "resume by itself after this (15m, 1h, 2d)");
  suspend->add_option("--reason", reason, "recorded with the suspension");
  suspend->add_flag("--force", force, "suspend a destination that has no mail queued yet");
  auto* resume = app.add_subcommand("resume", "end a suspension");
  resume->add_option("DOMAIN", target, "destination")->required();
  auto* retry = app.add_subcommand("retry", "try messages or a destination's mail now");
  retry->add_option("ID", ids, "queue ids");
  retry->add_option("--domain", target, "destination");
  auto* bounce = app.add_subcommand("bounce", "bounce messages or a destination's mail (DSNs)");
  bounce->add_option("ID", ids, "queue ids");
  bounce->add_option("--domain", target, "destination");
  bounce->add_option("--reason", reason, "text for the log and the DSN");
  auto* reload = app.add_subcommand("reload", "reload the configuration (as SIGHUP)");
  auto* status = app.add_subcommand("status", "version, uptime, shards, spool use, queue");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? done : usage;
  }
  if (queue->parsed()) return show_queue(c);
  if (list->parsed()) {
    std::map<std::string, std::string> query;
    if (!domain.empty()) query["domain"] = domain;
    if (!state.empty()) query["state"] = state;
    if (!older_than.empty()) query["older_than"] = older_than;
    if (!sender.empty()) query["sender"] = sender;
    return show_messages(c, query);
  }
  if (show->parsed()) return body ? show_body(c, target) : show_message(c, target);
  const auto one_selection = [&](std::size_t selections) {
    if (selections == 1) return true;
    std::cerr << "ringmta-ctl: name message ids or one selection (--domain, --all-deferred)\n";
    return false;
  };
  if (remove->parsed()) {
    if (!one_selection(!ids.empty() + !domain.empty() + all_deferred)) return usage;
    if (!ids.empty()) return act_on_ids(c, ids, "delete", {}, "deleted");
    std::map<std::string, std::string> selection{{"state", "deferred"}};
    if (!domain.empty()) selection = {{"domain", domain}};
    return act_on_selection(c, "delete", selection, "deleted");
  }
  if (hold->parsed()) return act_on_ids(c, ids, "hold", {}, "held");
  if (release->parsed()) return act_on_ids(c, ids, "release", {}, "released");
  if ((retry->parsed() || bounce->parsed()) && !one_selection(!ids.empty() + !target.empty()))
    return usage;
  if (retry->parsed() && !ids.empty()) return act_on_ids(c, ids, "retry", {}, "retrying");
  if (bounce->parsed() && !ids.empty()) {
    std::map<std::string, std::string> query;
    if (!reason.empty()) query["reason"] = reason;
    return act_on_ids(c, ids, "bounce", query, "bounced");
  }
  if (suspend->parsed()) {
    std::map<std::string, std::string> query;
    if (!duration.empty()) query["duration"] = duration;
    if (!reason.empty()) query["reason"] = reason;
    if (force) query["force"] = "1";
    json out;
    if (auto failed = call(c, "POST", "/queue/" + percent_encoded(target) + "/suspend", query, out))
      return *failed;
    if (c.json_output) std::cout << out.dump(2) << "\n";
    else std::cout << target << ": suspended" << (duration.empty() ? "" : " for " + duration)
                   << queues_text(out) << "\n";
    return done;
  }
  if (resume->parsed())
    return act(c, "/queue/" + percent_encoded(target) + "/resume", {}, target + ": resumed, ");
  if (retry->parsed())
    return act(c, "/queue/" + percent_encoded(target) + "/retry", {}, target + ": retrying ");
  if (bounce->parsed()) {
    std::map<std::string, std::string> query;
    if (!reason.empty()) query["reason"] = reason;
    return act(c, "/queue/" + percent_encoded(target) + "/bounce", query, target + ": bounced ");
  }
  json out;
  if (reload->parsed()) {
    if (auto failed = call(c, "POST", "/reload", {}, out)) return *failed;
  } else if (status->parsed()) {
    if (auto failed = call(c, "GET", "/status", {}, out)) return *failed;
    if (!c.json_output) return print_status(out);
  }
  std::cout << out.dump(2) << "\n";
  return done;
}
