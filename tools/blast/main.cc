// ringmta-blast: command line, run control (progress line, --duration, drain) and the report.
// The SMTP work happens in blast_shard (blast.h), one per shard thread.
//
// Exit status: 0 when every message was accepted and no session failed; 1 when some messages or
// sessions failed but at least one message was accepted; 2 for a usage error; 3 when nothing was
// accepted at all (target unreachable, or everything rejected); 4 when the shards cannot start;
// 5 when an open-loop run (--rate) achieved less than --rate-tolerance of the requested rate.
#include <signal.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <csignal>
#include <ctime>
#include <iostream>
#include <thread>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "blast/blast.h"
#include "loadkit/integrity.h"
#include "loadkit/report.h"
#include "ringmta/core/clock.h"

namespace ringmta::blast {
namespace {

using shard_table = std::vector<std::unique_ptr<blast_shard>>;

struct cli_options {
  std::vector<std::string> targets;
  std::string size = "1k", pipelining = "auto", duration, drain = "5s", timeout = "30s";
  std::string from = "blast{n}@blast.test", to = "rcpt{r}@{domain}";
  bool json = false;
  bool no_pin = false;
  bool quiet = false;
  bool starttls = false, implicit_tls = false, no_tls_resume = false;
  std::string latency_prefix;   // --latency-hgrm: percentile tables for plotting
  double rate_tolerance = 0.9;  // --rate: achieved/requested below this fails the run
};

std::atomic<bool> interrupted{false};
void on_interrupt(int) { interrupted.store(true); }

std::uint64_t sum(const shard_table& shards, const loadkit::counter blast_counters::*member) {
  std::uint64_t total = 0;
  for (const auto& s : shards) total += (s->counters().*member).get();
  return total;
}

std::uint64_t errors_total(const shard_table& shards) {
  std::uint64_t total = 0;
  for (const auto& s : shards) {
    for (const auto& e : s->counters().errors) total += e.get();
  }
  return total;
}

void add_flags(CLI::App& app, cli_options& cli, blast_config& config) {
  app.option_defaults()->always_capture_default();  // --help shows every default
  app.add_option("--target", cli.targets, "ADDRESS:PORT of the server (repeatable: round-robin)")
      ->required();
  app.add_option("--sessions", config.sessions, "total sessions (connections); 0: unbounded");
  app.add_option("--concurrency", config.concurrency, "sessions open at once")
      ->check(CLI::Range(1u, 1u << 20));
  app.add_option("--messages-per-session", config.messages_per_session,
                 "messages sent over each connection")->check(CLI::Range(1u, 1u << 24));
  app.add_option("--recipients", config.recipients, "recipients per message")
      ->check(CLI::Range(1u, 1000u));
  app.add_option("--size", cli.size, "body size: 1k | 1k:64k (uniform) | 1k@9,64k@1 (weighted)");
  app.add_option("--domains", config.domains, "recipient domains d0.<suffix> .. d<D-1>.<suffix>")
      ->check(CLI::Range(1u, 1u << 24));
  app.add_option("--domain-suffix", config.domain_suffix, "suffix of the recipient domains");
  app.add_option("--pipelining", cli.pipelining, "on | off | auto")
      ->check(CLI::IsMember({"on", "off", "auto"}));
  app.add_flag("--bdat", config.bdat,
               "send with BDAT (CHUNKING) when offered: the whole transaction in one write");
  app.add_option("--rate", config.rate, "open loop: messages started per second (0: closed loop)")
      ->check(CLI::Range(0.0, 1e7));
  app.add_option("--duration", cli.duration, "stop starting work after this long (e.g. 30s)");
  app.add_option("--drain", cli.drain, "after --duration: time for open sessions to finish");
  app.add_option("--timeout", cli.timeout, "a connection with no progress this long fails");
  app.add_option("--threads", config.threads, "shards (threads); default: cores")
      ->check(CLI::Range(1u, 64u));
  app.add_option("--from", cli.from, "sender pattern ({n} {s})");
  app.add_option("--to", cli.to, "recipient pattern ({n} {r} {d} {domain} {s})");
  app.add_option("--ehlo", config.ehlo, "name sent in EHLO");
  app.add_option("--run-id", config.run, "run name in X-Blast-Id (default: random)");
  app.add_flag("--no-pin", cli.no_pin,
               "do not pin thread i to the i-th allowed CPU (taskset still applies)");
  app.add_flag("--json", cli.json, "print the summary as JSON on stdout");
  app.add_flag("--starttls", cli.starttls, "STARTTLS after EHLO (RFC 3207), then EHLO again");
  app.add_flag("--tls", cli.implicit_tls, "implicit TLS from the first byte (RFC 8314, port 465)");
  app.add_flag("--tls-resume,!--no-tls-resume", config.tls_resume,
               "offer the previous connection's session ticket (resumption)");
  app.add_option("--latency-hgrm", cli.latency_prefix,
                 "write PREFIX.<latency>.hgrm percentile tables (HdrHistogram format)");
  app.add_option("--rate-tolerance", cli.rate_tolerance,
                 "--rate: a run achieving less than this share of the rate fails (exit 5)")
      ->check(CLI::Range(0.0, 1.0));
  app.add_flag("--quiet", cli.quiet, "no progress line");
}

}  // namespace

int run(int argc, char** argv);

}  // namespace ringmta::blast

int main(int argc, char** argv) { return ringmta::blast::run(argc, argv); }

namespace ringmta::blast {
namespace {

bool configure(const cli_options& cli, blast_config& config) {
  for (const std::string& text : cli.targets) {
    auto at = core::endpoint::parse(text);
    if (!at) {
      std::cerr << "ringmta-blast: --target " << text << ": not ADDRESS:PORT\n";
      return false;
    }
    config.targets.push_back(*at);
  }
  const auto sizes = loadkit::parse_size_distribution(cli.size);
  if (!sizes) {
    std::cerr << "ringmta-blast: bad --size " << cli.size << "\n";
    return false;
  }
  config.pipelining = cli.pipelining == "on"    ? pipelining_mode::on
                      : cli.pipelining == "off" ? pipelining_mode::off
                                                : pipelining_mode::automatic;
  const auto duration = cli.duration.empty() ? std::optional<std::uint64_t>(0)
                                             : loadkit::parse_duration_ms(cli.duration);
  const auto drain = loadkit::parse_duration_ms(cli.drain);
  const auto timeout = loadkit::parse_duration_ms(cli.timeout);
  if (!duration || !drain || !timeout || *timeout == 0 || *timeout > 3'600'000) {
    std::cerr << "ringmta-blast: bad --duration, --drain or --timeout\n";
    return false;
  }
  config.duration_ms = *duration;
  config.drain_ms = *drain;
  config.timeout_ms = static_cast<std::uint32_t>(*timeout);
  if (config.sessions == 0 && config.duration_ms == 0) {
    std::cerr << "ringmta-blast: give --sessions and/or --duration: every run is bounded\n";
    return false;
  }
  config.from = address_pattern::parse(cli.from);
  config.to = address_pattern::parse(cli.to);
  if (!config.from || !config.to) {
    std::cerr << "ringmta-blast: bad --from/--to pattern (placeholders: {n} {r} {d} {domain} "
                 "{s})\n";
    return false;
  }
  if (cli.starttls && cli.implicit_tls) {
    std::cerr << "ringmta-blast: --starttls and --tls exclude each other\n";
    return false;
  }
  config.tls = cli.starttls       ? tls_mode::starttls
               : cli.implicit_tls ? tls_mode::implicit
                                  : tls_mode::off;
  if (config.tls != tls_mode::off) {
    auto loaded = tls::load_client_context(tls::client_settings{});
    if (!loaded.context) {
      std::cerr << "ringmta-blast: TLS: " << loaded.error << "\n";
      return false;
    }
    config.tls_context = loaded.context;
  }
  if (config.run.empty()) {
    config.run = fmt::format("{:08x}", static_cast<std::uint32_t>(
                                           core::monotonic_ns() * 0x9e3779b97f4a7c15ull >> 32));
  }
  if (!loadkit::valid_run(config.run)) {
    std::cerr << "ringmta-blast: --run-id must be 1..32 of [A-Za-z0-9_.]\n";
    return false;
  }
  if (config.concurrency < config.threads) config.threads = config.concurrency;
  if (config.sessions != 0 && config.sessions < config.threads) {
    config.threads = static_cast<unsigned>(config.sessions);
  }
  std::time_t now = std::time(nullptr);
  char date[64];
  std::tm tm{};
  gmtime_r(&now, &tm);
  std::strftime(date, sizeof date, "%a, %d %b %Y %H:%M:%S +0000", &tm);  // RFC 5322 §3.3
  config.date = date;
  prepare_bodies(config, *sizes);
  return true;
}

void progress(const shard_table& shards, double elapsed, std::uint64_t& last_messages,
              std::uint64_t& last_sessions) {
  const std::uint64_t messages = sum(shards, &blast_counters::messages_accepted);
  const std::uint64_t sessions =
      sum(shards, &blast_counters::sessions_done) + sum(shards, &blast_counters::sessions_failed);
  const std::uint64_t failed = sum(shards, &blast_counters::messages_tempfail) +
                               sum(shards, &blast_counters::messages_permfail) +
                               sum(shards, &blast_counters::messages_no_recipients);
  std::uint64_t open = sum(shards, &blast_counters::open);
  std::cerr << fmt::format("\r[{:6.1f}s] {:8} msg/s {:7} sess/s | accepted {} failed {} "
                           "errors {} open {}   ",
                           elapsed, messages - last_messages, sessions - last_sessions, messages,
                           failed, errors_total(shards), open)
            << std::flush;
  last_messages = messages;
  last_sessions = sessions;
}

// Runs until every shard is done, --duration (+ --drain) passes, or SIGINT/SIGTERM.
void control(const blast_config& config, blast_shared& shared, const shard_table& shards,
             bool show_progress) {
  std::uint64_t last_messages = 0, last_sessions = 0;
  std::uint64_t next_progress = shared.start_ns + 1'000'000'000;
  std::uint64_t stop_at = 0;
  for (;;) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
    const std::uint64_t now = core::monotonic_ns();
    if (shared.shards_finished.load(std::memory_order_acquire) == shards.size()) break;
    if (stop_at == 0 && (interrupted.load() ||
                         (config.duration_ms != 0 &&
                          now - shared.start_ns >= config.duration_ms * 1'000'000))) {
      shared.stop_starting.store(true);
      stop_at = now + (interrupted.load() ? 0 : config.drain_ms * 1'000'000);
    }
    if (stop_at != 0 && now >= stop_at) break;
    if (show_progress && now >= next_progress) {
      progress(shards, double(now - shared.start_ns) / 1e9, last_messages, last_sessions);
      next_progress += 1'000'000'000;
    }
  }
  if (show_progress) std::cerr << "\n";
}

}  // namespace

namespace {

nlohmann::json codes_json(const std::array<std::uint64_t, 600>& codes) {
  nlohmann::json j = nlohmann::json::object();
  for (std::size_t code = 0; code < codes.size(); ++code) {
    if (codes[code] != 0) j[std::to_string(code)] = codes[code];
  }
  return j;
}

nlohmann::json build_report(const blast_config& config, const shard_table& shards,
                            const blast_results& merged, double elapsed) {
  nlohmann::json j;
  j["run"] = config.run;
  nlohmann::json targets = nlohmann::json::array();
  for (const auto& t : config.targets) targets.push_back(t.to_string());
  j["targets"] = targets;
  j["threads"] = config.threads;
  j["concurrency"] = config.concurrency;
  j["elapsed_s"] = elapsed;
  const auto get = [&](const loadkit::counter blast_counters::*m) { return sum(shards, m); };
  j["sessions"] = {{"started", get(&blast_counters::sessions_started)},
                   {"completed", get(&blast_counters::sessions_done)},
                   {"failed", get(&blast_counters::sessions_failed)}};
  j["messages"] = {{"started", get(&blast_counters::messages_started)},
                   {"accepted", get(&blast_counters::messages_accepted)},
                   {"tempfail", get(&blast_counters::messages_tempfail)},
                   {"permfail", get(&blast_counters::messages_permfail)},
                   {"no_recipients", get(&blast_counters::messages_no_recipients)},
                   {"sent_with_bdat", get(&blast_counters::messages_bdat)},
                   {"bdat_fallback_sessions", get(&blast_counters::bdat_fallbacks)}};
  j["tls"] = {{"mode", config.tls == tls_mode::starttls   ? "starttls"
                       : config.tls == tls_mode::implicit ? "implicit"
                                                          : "off"},
              {"resume", config.tls_resume},
              {"handshakes", get(&blast_counters::tls_handshakes)},
              {"resumed", get(&blast_counters::tls_resumed)},
              {"failures", get(&blast_counters::tls_failures)}};
  j["recipients"] = {{"accepted", get(&blast_counters::recipients_accepted)},
                     {"tempfail", get(&blast_counters::recipients_tempfail)},
                     {"permfail", get(&blast_counters::recipients_permfail)}};
  j["message_bytes"] = get(&blast_counters::body_bytes);
  const double seconds = elapsed > 0 ? elapsed : 1e-9;
  j["rates"] = {{"messages_per_s", double(get(&blast_counters::messages_accepted)) / seconds},
                {"sessions_per_s", double(get(&blast_counters::sessions_done)) / seconds}};
  j["replies"] = {{"rcpt", codes_json(merged.rcpt_codes)}, {"data", codes_json(merged.data_codes)}};
  nlohmann::json errors = nlohmann::json::object();
  for (std::size_t k = 0; k < static_cast<std::size_t>(error_kind::count_); ++k) {
    std::uint64_t n = 0;
    for (const auto& s : shards) n += s->counters().errors[k].get();
    if (n != 0) errors[std::string(describe(static_cast<error_kind>(k)))] = n;
  }
  j["errors"] = errors;
  j["latency"] = {{"connect", loadkit::latency_json(merged.connect)},
                  {"ehlo", loadkit::latency_json(merged.ehlo)},
                  {"data", loadkit::latency_json(merged.data)},
                  {"message", loadkit::latency_json(merged.message)},
                  {"session", loadkit::latency_json(merged.session)},
                  {"tls_handshake", loadkit::latency_json(merged.tls)}};
  // The rate achieved while work was being started (the drain after --duration excluded).
  const double active = config.duration_ms != 0
                            ? std::min(seconds, double(config.duration_ms) / 1000.0) : seconds;
  const double achieved = double(get(&blast_counters::messages_accepted)) / active;
  j["open_loop"] = {{"rate", config.rate}, {"late_starts", merged.late_starts},
                    {"achieved_rate", config.rate > 0 ? achieved : 0.0},
                    {"message_latency_from", config.rate > 0 ? "intended start" : "start"}};
  return j;
}

void print_text(const nlohmann::json& j, const blast_results& merged) {
  std::string out = fmt::format(
      "ringmta-blast run {} against {} in {:.2f} s ({} threads)\n",
      j["run"].get<std::string>(), j["targets"].dump(), j["elapsed_s"].get<double>(),
      j["threads"].get<unsigned>());
  const auto& m = j["messages"];
  const auto& s = j["sessions"];
  out += fmt::format(
      "  messages: {} started, {} accepted, {} tempfail, {} permfail, {} no recipients\n",
      m["started"].get<std::uint64_t>(), m["accepted"].get<std::uint64_t>(),
      m["tempfail"].get<std::uint64_t>(), m["permfail"].get<std::uint64_t>(),
      m["no_recipients"].get<std::uint64_t>());
  out += fmt::format("  sessions: {} started, {} completed, {} failed\n",
                     s["started"].get<std::uint64_t>(), s["completed"].get<std::uint64_t>(),
                     s["failed"].get<std::uint64_t>());
  out += fmt::format("  rates: {:.0f} msg/s, {:.0f} sessions/s, {} message bytes\n",
                     j["rates"]["messages_per_s"].get<double>(),
                     j["rates"]["sessions_per_s"].get<double>(),
                     j["message_bytes"].get<std::uint64_t>());
  out += fmt::format("  replies: rcpt {} data {}\n", j["replies"]["rcpt"].dump(),
                     j["replies"]["data"].dump());
  out += fmt::format("  errors: {}\n", j["errors"].dump());
  if (j["tls"]["mode"] != "off") {
    out += fmt::format("  tls ({}, resume {}): {} handshakes, {} resumed, {} failed\n",
                       j["tls"]["mode"].get<std::string>(), j["tls"]["resume"].get<bool>() ? "on"
                                                                                          : "off",
                       j["tls"]["handshakes"].get<std::uint64_t>(),
                       j["tls"]["resumed"].get<std::uint64_t>(),
                       j["tls"]["failures"].get<std::uint64_t>());
  }
  if (j["messages"]["bdat_fallback_sessions"].get<std::uint64_t>() > 0) {
    out += fmt::format("  --bdat: {} sessions sent with DATA (no CHUNKING or PIPELINING)\n",
                       j["messages"]["bdat_fallback_sessions"].get<std::uint64_t>());
  }
  out += loadkit::latency_header() + "\n";
  out += loadkit::latency_line("connect->greeting", merged.connect) + "\n";
  out += loadkit::latency_line("ehlo", merged.ehlo) + "\n";
  out += loadkit::latency_line("end of data->reply", merged.data) + "\n";
  out += loadkit::latency_line(j["open_loop"]["rate"].get<double>() > 0 ? "message (intended)"
                                                                        : "message",
                               merged.message) + "\n";
  out += loadkit::latency_line("session", merged.session) + "\n";
  if (merged.tls.count() > 0) out += loadkit::latency_line("tls handshake", merged.tls) + "\n";
  if (j["open_loop"]["rate"].get<double>() > 0) {
    out += fmt::format("  open loop at {:.0f} msg/s: achieved {:.0f} msg/s, {} messages started > "
                       "1 ms late\n",
                       j["open_loop"]["rate"].get<double>(),
                       j["open_loop"]["achieved_rate"].get<double>(),
                       j["open_loop"]["late_starts"].get<std::uint64_t>());
  }
  std::cout << out << std::flush;
}

int exit_status(const nlohmann::json& j, double tolerance) {
  const auto accepted = j["messages"]["accepted"].get<std::uint64_t>();
  const auto started = j["messages"]["started"].get<std::uint64_t>();
  const auto failed_sessions = j["sessions"]["failed"].get<std::uint64_t>();
  if (accepted == 0) return 3;
  const double rate = j["open_loop"]["rate"].get<double>();
  if (rate > 0 && j["open_loop"]["achieved_rate"].get<double>() < tolerance * rate) return 5;
  if (accepted != started || failed_sessions != 0) return 1;
  return 0;
}

}  // namespace

int run(int argc, char** argv) {
  CLI::App app{"ringmta-blast: SMTP load generator (tools/README.md)"};
  cli_options cli;
  blast_config config;
  config.threads = std::max(1u, std::thread::hardware_concurrency());
  add_flags(app, cli, config);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    const int code = app.exit(e);
    return code == 0 ? 0 : 2;
  }
  if (!configure(cli, config)) return 2;
  std::signal(SIGPIPE, SIG_IGN);
  std::signal(SIGINT, on_interrupt);
  std::signal(SIGTERM, on_interrupt);

  blast_shared shared;
  shared.sessions_left.store(static_cast<std::int64_t>(config.sessions));
  shard::runtime_options options;
  options.shard_count = config.threads;
  options.pin_threads = !cli.no_pin;
  options.ring.sq_entries = 1024;
  shard::runtime rt(options);
  shard_table shards;
  for (unsigned i = 0; i < config.threads; ++i) {
    shards.push_back(std::make_unique<blast_shard>(config, shared, i));
  }
  shared.start_ns = core::monotonic_ns();
  auto started = rt.start([&](shard::shard& s) { return shards[s.id()]->start(s); },
                          [&](shard::shard& s) { shards[s.id()]->stop(); });
  if (!started) {
    std::cerr << "ringmta-blast: cannot start shards: " << started.error_text() << "\n";
    return 4;
  }
  control(config, shared, shards, !cli.quiet && ::isatty(STDERR_FILENO) == 1);
  const double elapsed = double(core::monotonic_ns() - shared.start_ns) / 1e9;
  rt.request_stop();
  rt.join();
  blast_results merged;
  for (const auto& s : shards) {
    const blast_results& r = s->results();
    merged.connect.merge(r.connect);
    merged.ehlo.merge(r.ehlo);
    merged.data.merge(r.data);
    merged.message.merge(r.message);
    merged.session.merge(r.session);
    merged.tls.merge(r.tls);
    for (std::size_t i = 0; i < 600; ++i) {
      merged.rcpt_codes[i] += r.rcpt_codes[i];
      merged.data_codes[i] += r.data_codes[i];
    }
    merged.late_starts += r.late_starts;
  }
  const nlohmann::json report = build_report(config, shards, merged, elapsed);
  if (cli.json) {
    std::cout << report.dump(2) << std::endl;
  } else {
    print_text(report, merged);
  }
  const int status = exit_status(report, cli.rate_tolerance);
  if (status == 5) {
    std::cerr << fmt::format("ringmta-blast: open loop achieved {:.0f} of {:.0f} msg/s ({:.0f} %), "
                             "below --rate-tolerance {:.0f} %: the target (or this machine) "
                             "could not keep up\n",
                             report["open_loop"]["achieved_rate"].get<double>(), config.rate,
                             100 * report["open_loop"]["achieved_rate"].get<double>() / config.rate,
                             100 * cli.rate_tolerance);
  }
  if (report["messages"]["bdat_fallback_sessions"].get<std::uint64_t>() > 0) {
    std::cerr << "ringmta-blast: --bdat: the server did not offer CHUNKING and PIPELINING; "
              << report["messages"]["bdat_fallback_sessions"].get<std::uint64_t>()
              << " sessions sent with DATA\n";
  }
  if (!cli.latency_prefix.empty()) {
    for (const auto& [name, h] : {std::pair<const char*, const loadkit::histogram*>{
                                      "connect", &merged.connect},
                                  {"ehlo", &merged.ehlo}, {"data", &merged.data},
                                  {"message", &merged.message}, {"session", &merged.session},
                                  {"tls_handshake", &merged.tls}}) {
      if (h->count() == 0) continue;
      const std::string path = cli.latency_prefix + "." + name + ".hgrm";
      if (!loadkit::write_percentile_table(path, *h))
        std::cerr << "ringmta-blast: cannot write " << path << "\n";
    }
  }
  if (status == 3) {
    std::cerr << "ringmta-blast: no message was accepted (errors: " << report["errors"].dump()
              << ", replies: " << report["replies"].dump() << ")\n";
  }
  shards.clear();  // buffer rings go before the rings they are registered on
  return status;
}

}  // namespace ringmta::blast
