// ringmta-sink: command line, listening sockets, signals and reports. The SMTP work happens in
// sink_shard (sink.h), one per shard thread; this thread only waits for signals.
//
// Exit status: 0 after SIGTERM/SIGINT (or --duration) with no corrupt, duplicate or missing
// message; 1 when any was seen; 2 for a usage error; 3 when it could not start (bind, rings).
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <bit>
#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iostream>
#include <thread>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "loadkit/options.h"
#include "ringmta/core/clock.h"
#include "sink/sink.h"

namespace ringmta::sink {
namespace {

struct cli_options {
  std::vector<std::string> listen{"127.0.0.1:2526"};
  std::vector<std::string> tls_listen;  // implicit TLS (RFC 8314)
  std::vector<std::string> tls_cert, tls_key;
  std::string tempfail = "0", permfail = "0", duration;
  std::vector<std::string> expect_ids;
  std::string stats_file, ready_file;
  bool json = false;
  bool no_pin = false;
  bool no_pipelining = false, no_8bitmime = false, no_chunking = false, no_smtputf8 = false;
  bool no_dsn = false, no_size = false, no_enhanced = false, normalize = false;
};

// A listening socket with SO_REUSEPORT, so every shard can have its own on the same port.
core::result<int> open_listener(const core::endpoint& at) {
  const int fd = ::socket(at.family(), SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return core::fail(errno);
  const int one = 1;
  ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  ::setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);
  if (::bind(fd, at.sockaddr_pointer(), at.length) != 0 || ::listen(fd, 4096) != 0) {
    const int error = errno;
    ::close(fd);
    return core::fail(error);
  }
  return fd;
}

// Opens threads x listeners sockets; port 0 is resolved by the first and reused by the rest.
bool open_listeners(const std::vector<std::string>& specs, unsigned threads,
                    std::vector<std::vector<int>>& per_shard, std::vector<std::string>& bound) {
  per_shard.assign(threads, {});
  for (const std::string& spec : specs) {
    auto at = core::endpoint::parse(spec);
    if (!at) {
      std::cerr << "ringmta-sink: --listen " << spec << ": not ADDRESS:PORT\n";
      return false;
    }
    for (unsigned i = 0; i < threads; ++i) {
      auto fd = open_listener(*at);
      if (!fd) {
        std::cerr << "ringmta-sink: cannot listen on " << at->to_string() << ": "
                  << fd.error_text() << "\n";
        return false;
      }
      if (i == 0) {
        sockaddr_storage actual{};
        socklen_t length = sizeof actual;
        ::getsockname(fd.value(), reinterpret_cast<sockaddr*>(&actual), &length);
        *at = core::endpoint::from_sockaddr(reinterpret_cast<sockaddr*>(&actual), length);
        bound.push_back(at->to_string());
      }
      per_shard[i].push_back(fd.value());
    }
  }
  return true;
}

void apply_extensions(const cli_options& cli, sink_config& config) {
  smtp::extension_set& e = config.server.extensions;
  e.pipelining = !cli.no_pipelining;
  e.eight_bit_mime = !cli.no_8bitmime;
  e.chunking = !cli.no_chunking;
  e.binary_mime = !cli.no_chunking && !cli.no_8bitmime;
  // RFC 6531 §3.1: a server offering SMTPUTF8 must also offer 8BITMIME; offering it alone made
  // Postfix send BODY=8BITMIME and get 555.
  e.smtputf8 = !cli.no_smtputf8 && !cli.no_8bitmime;
  e.dsn = !cli.no_dsn;
  e.size = !cli.no_size;
  e.enhanced_status_codes = !cli.no_enhanced;
  config.server.hostname = config.hostname;
  config.server.greeting_text = "ESMTP ringmta-sink";
  config.server.starttls_offered = config.tls != nullptr;
  config.server_implicit_tls = config.server;
  config.server_implicit_tls.tls_active = true;
  config.server.bare_line_ending =
      cli.normalize ? smtp::bare_line_ending_policy::normalize
                    : smtp::bare_line_ending_policy::reject;
}

}  // namespace

int run(int argc, char** argv);

}  // namespace ringmta::sink

int main(int argc, char** argv) { return ringmta::sink::run(argc, argv); }

namespace ringmta::sink {
namespace {

using shard_table = std::vector<std::unique_ptr<sink_shard>>;

// Counters summed over shards, ids merged, missing computed against --expect-ids.
nlohmann::json build_stats(const shard_table& shards, const std::vector<loadkit::id_tracker>& ids,
                           const std::vector<loadkit::id_range>& expected, double elapsed_s) {
  nlohmann::json j;
  const auto sum = [&](const loadkit::counter sink_counters::*member) {
    std::uint64_t total = 0;
    for (const auto& s : shards) total += (s->counters().*member).get();
    return total;
  };
#define RINGMTA_SINK_FIELD(name) j[#name] = sum(&sink_counters::name)
  RINGMTA_SINK_FIELD(connections);
  RINGMTA_SINK_FIELD(connections_refused);
  RINGMTA_SINK_FIELD(connections_closed);
  RINGMTA_SINK_FIELD(timeouts);
  RINGMTA_SINK_FIELD(transactions);
  RINGMTA_SINK_FIELD(recipients);
  RINGMTA_SINK_FIELD(rcpt_tempfail);
  RINGMTA_SINK_FIELD(rcpt_permfail);
  RINGMTA_SINK_FIELD(messages);
  RINGMTA_SINK_FIELD(accepted);
  RINGMTA_SINK_FIELD(data_tempfail);
  RINGMTA_SINK_FIELD(data_permfail);
  RINGMTA_SINK_FIELD(disconnects);
  RINGMTA_SINK_FIELD(aborted);
  RINGMTA_SINK_FIELD(message_bytes);
  RINGMTA_SINK_FIELD(wire_bytes);
  RINGMTA_SINK_FIELD(integrity_ok);
  RINGMTA_SINK_FIELD(integrity_corrupt);
  RINGMTA_SINK_FIELD(untagged);
  RINGMTA_SINK_FIELD(id_malformed);
  RINGMTA_SINK_FIELD(saved);
  RINGMTA_SINK_FIELD(save_errors);
  RINGMTA_SINK_FIELD(enobufs);
  RINGMTA_SINK_FIELD(tls_handshakes);
  RINGMTA_SINK_FIELD(tls_resumed);
  RINGMTA_SINK_FIELD(tls_failures);
#undef RINGMTA_SINK_FIELD
  loadkit::id_tracker merged;
  for (const auto& tracker : ids) merged.merge(tracker);
  j["distinct_ids"] = merged.distinct();
  j["duplicates"] = merged.duplicates();
  j["untracked_ids"] = merged.untracked();
  std::uint64_t missing = 0;
  nlohmann::json ranges = nlohmann::json::array();
  for (const auto& range : expected) {
    const std::uint64_t absent = merged.missing(range.run, range.first, range.last);
    missing += absent;
    ranges.push_back({{"run", range.run}, {"first", range.first}, {"last", range.last},
                      {"missing", absent}});
  }
  j["missing"] = missing;
  j["expected"] = ranges;
  j["elapsed_s"] = elapsed_s;
  // msg/s over the busy time (first to last accepted message), not the sink's lifetime: a sink
  // started long before the load would otherwise report a fraction of the real rate.
  std::uint64_t first = 0, last = 0;
  for (const auto& s : shards) {
    const std::uint64_t f = s->counters().first_accept_ns.get();
    if (f != 0 && (first == 0 || f < first)) first = f;
    last = std::max(last, s->counters().last_accept_ns.get());
  }
  const double busy_s = last > first ? double(last - first) / 1e9 : 0.0;
  const auto accepted = j["accepted"].get<std::uint64_t>();
  j["busy_s"] = busy_s;
  j["messages_per_s"] = busy_s > 0 ? double(accepted > 0 ? accepted - 1 : 0) / busy_s : 0.0;
  j["lifetime_messages_per_s"] = elapsed_s > 0 ? double(accepted) / elapsed_s : 0;
  return j;
}

std::string stats_text(const nlohmann::json& j) {
  return fmt::format(
      "ringmta-sink: {} connections ({} refused), {} messages ({} accepted, {} tempfail, {} "
      "permfail, {} dropped, {} aborted), {} recipients, {} bytes; integrity: {} ok, {} corrupt, "
      "{} untagged; ids: {} distinct, {} duplicate, {} missing; {:.0f} msg/s over {:.2f} s busy "
      "({:.1f} s up); tls: {} handshakes, {} resumed, {} failed\n",
      j["connections"].get<std::uint64_t>(), j["connections_refused"].get<std::uint64_t>(),
      j["messages"].get<std::uint64_t>(), j["accepted"].get<std::uint64_t>(),
      j["data_tempfail"].get<std::uint64_t>(), j["data_permfail"].get<std::uint64_t>(),
      j["disconnects"].get<std::uint64_t>(), j["aborted"].get<std::uint64_t>(),
      j["recipients"].get<std::uint64_t>(), j["message_bytes"].get<std::uint64_t>(),
      j["integrity_ok"].get<std::uint64_t>(), j["integrity_corrupt"].get<std::uint64_t>(),
      j["untagged"].get<std::uint64_t>(), j["distinct_ids"].get<std::uint64_t>(),
      j["duplicates"].get<std::uint64_t>(), j["missing"].get<std::uint64_t>(),
      j["messages_per_s"].get<double>(), j["busy_s"].get<double>(), j["elapsed_s"].get<double>(),
      j["tls_handshakes"].get<std::uint64_t>(), j["tls_resumed"].get<std::uint64_t>(),
      j["tls_failures"].get<std::uint64_t>());
}

void write_stats_file(const std::string& path, const nlohmann::json& j) {
  if (path.empty()) return;
  const std::string temporary = path + ".tmp";
  {
    std::ofstream out(temporary, std::ios::trunc);
    out << j.dump(2) << "\n";
    if (!out) return;
  }
  std::rename(temporary.c_str(), path.c_str());
}

// Asks every shard for a copy of its id tracker (on its own thread) and waits, bounded.
std::vector<loadkit::id_tracker> snapshot_ids(shard::runtime& rt, shard_table& shards) {
  snapshot_request request;
  request.trackers.resize(shards.size());
  request.remaining = static_cast<unsigned>(shards.size());
  for (unsigned i = 0; i < shards.size(); ++i) {
    shard::message m;
    m.handler = &sink_shard::on_snapshot;
    m.words[0] = reinterpret_cast<std::uint64_t>(&request);
    m.words[1] = reinterpret_cast<std::uint64_t>(&shards);
    if (!rt.post(i, m)) {
      std::lock_guard lock(request.mutex);
      --request.remaining;
    }
  }
  const std::uint64_t deadline = core::monotonic_ns() + 5'000'000'000ull;
  bool warned = false;
  for (;;) {
    {
      std::lock_guard lock(request.mutex);
      if (request.remaining == 0) return std::move(request.trackers);
    }
    // A shard that does not answer in 5 s is wedged; the message keeps `request` alive, so
    // waiting longer is the only safe choice.
    if (!warned && core::monotonic_ns() > deadline) {
      std::cerr << "ringmta-sink: still waiting for a shard's statistics\n";
      warned = true;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
}

void add_flags(CLI::App& app, cli_options& cli, sink_config& config) {
  app.option_defaults()->always_capture_default();  // --help shows every default
  app.add_option("--listen", cli.listen, "ADDRESS:PORT to listen on (repeatable; port 0: any)");
  app.add_option("--threads", config.threads, "shards (threads)")->check(CLI::Range(1, 64));
  app.add_option("--tls-cert", cli.tls_cert,
                 "PEM certificate chain (repeatable, paired with --tls-key): offer STARTTLS");
  app.add_option("--tls-key", cli.tls_key, "PEM private key of each --tls-cert");
  app.add_option("--tls-listen", cli.tls_listen,
                 "ADDRESS:PORT for implicit TLS (RFC 8314; repeatable; port 0: any)");
  app.add_option("--tempfail-rate", cli.tempfail,
                 "4xx probability: P (end of data) or rcpt=P,data=P");
  app.add_option("--permfail-rate", cli.permfail,
                 "5xx probability: P (end of data) or rcpt=P,data=P");
  app.add_option("--disconnect-rate", config.disconnect_rate,
                 "probability of closing at end of data instead of replying")
      ->check(CLI::Range(0.0, 1.0));
  app.add_option("--reply-delay-ms", config.reply_delay_ms, "delay of every end-of-data reply (at least this many ms)");
  app.add_option("--max-connections", config.max_connections,
                 "concurrent connections; more get 421")->check(CLI::Range(1u, 1u << 20));
  app.add_option("--idle-timeout-ms", config.idle_timeout_ms, "421 after this long idle");
  app.add_option("--seed", config.seed, "seed of the fault injection");
  app.add_option("--save-dir", config.save_dir, "write each accepted message to DIR");
  app.add_option("--hostname", config.hostname, "name in the greeting and EHLO reply");
  app.add_option("--expect-ids", cli.expect_ids, "RUN:FIRST-LAST ids that must arrive");
  app.add_option("--stats-file", cli.stats_file, "JSON stats, rewritten on SIGUSR1 and exit");
  app.add_option("--ready-file", cli.ready_file, "written with the bound addresses once ready");
  app.add_option("--duration", cli.duration, "exit after this long (e.g. 30s)");
  app.add_option("--recv-buffers", config.recv_buffers, "provided buffers per shard (2^n)");
  app.add_option("--recv-buffer-bytes", config.recv_buffer_bytes, "size of each buffer");
  app.add_option("--message-bytes-max", config.server.limits.message_bytes_max, "SIZE limit");
  app.add_flag("--no-pin", cli.no_pin,
               "do not pin thread i to the i-th allowed CPU (taskset still applies)");
  app.add_flag("--json", cli.json, "print stats as JSON (stdout) on SIGUSR1 and exit");
  app.add_flag("--no-pipelining", cli.no_pipelining, "do not offer PIPELINING");
  app.add_flag("--no-8bitmime", cli.no_8bitmime, "do not offer 8BITMIME (nor BINARYMIME, nor SMTPUTF8)");
  app.add_flag("--no-chunking", cli.no_chunking, "do not offer CHUNKING (BDAT)");
  app.add_flag("--no-smtputf8", cli.no_smtputf8, "do not offer SMTPUTF8");
  app.add_flag("--no-dsn", cli.no_dsn, "do not offer DSN");
  app.add_flag("--no-size", cli.no_size, "do not offer SIZE");
  app.add_flag("--no-enhancedstatuscodes", cli.no_enhanced, "do not offer ENHANCEDSTATUSCODES");
  app.add_flag("--normalize-line-endings", cli.normalize,
               "turn bare CR/LF into CRLF instead of rejecting the message");
}

}  // namespace

int run(int argc, char** argv) {
  CLI::App app{"ringmta-sink: SMTP sink for load tests (tools/README.md)"};
  cli_options cli;
  sink_config config;
  config.threads = std::max(1u, std::thread::hardware_concurrency());
  add_flags(app, cli, config);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    const int code = app.exit(e);
    return code == 0 ? 0 : 2;
  }
  const auto tempfail = loadkit::parse_fault_rates(cli.tempfail);
  const auto permfail = loadkit::parse_fault_rates(cli.permfail);
  if (!tempfail || !permfail || tempfail->rcpt + permfail->rcpt > 1 ||
      tempfail->data + permfail->data > 1) {
    std::cerr << "ringmta-sink: bad --tempfail-rate/--permfail-rate (P or rcpt=P,data=P; "
                 "tempfail + permfail <= 1 per step)\n";
    return 2;
  }
  config.tempfail = *tempfail;
  config.permfail = *permfail;
  std::vector<loadkit::id_range> expected;
  for (const std::string& text : cli.expect_ids) {
    loadkit::id_range range;
    if (!loadkit::parse_id_range(text, range)) {
      std::cerr << "ringmta-sink: bad --expect-ids " << text << " (want RUN:FIRST-LAST)\n";
      return 2;
    }
    expected.push_back(range);
  }
  std::uint64_t duration_ms = 0;
  if (!cli.duration.empty()) {
    const auto parsed = loadkit::parse_duration_ms(cli.duration);
    if (!parsed) {
      std::cerr << "ringmta-sink: bad --duration " << cli.duration << "\n";
      return 2;
    }
    duration_ms = *parsed;
  }
  if (!std::has_single_bit(config.recv_buffers) || config.recv_buffers > 32768 ||
      config.recv_buffer_bytes < 512) {
    std::cerr << "ringmta-sink: --recv-buffers must be a power of two <= 32768, "
                 "--recv-buffer-bytes >= 512\n";
    return 2;
  }
  if (cli.tls_cert.size() != cli.tls_key.size() ||
      (!cli.tls_listen.empty() && cli.tls_cert.empty())) {
    std::cerr << "ringmta-sink: give one --tls-key per --tls-cert; --tls-listen needs them\n";
    return 2;
  }
  if (!cli.tls_cert.empty()) {
    tls::server_settings tls_settings;
    for (std::size_t i = 0; i < cli.tls_cert.size(); ++i)
      tls_settings.certificates.push_back({cli.tls_cert[i], cli.tls_key[i]});
    auto loaded = tls::load_server_context(tls_settings, nullptr);
    if (!loaded.context) {
      std::cerr << "ringmta-sink: TLS: " << loaded.error << "\n";
      return 2;
    }
    config.tls = loaded.context;
  }
  apply_extensions(cli, config);
  config.implicit_tls.assign(cli.listen.size(), false);
  config.implicit_tls.resize(cli.listen.size() + cli.tls_listen.size(), true);
  cli.listen.insert(cli.listen.end(), cli.tls_listen.begin(), cli.tls_listen.end());

  // Signals are taken by this thread alone (sigtimedwait); shards inherit the blocked mask.
  sigset_t signals;
  sigemptyset(&signals);
  for (const int s : {SIGINT, SIGTERM, SIGUSR1, SIGHUP}) sigaddset(&signals, s);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  std::signal(SIGPIPE, SIG_IGN);

  std::vector<std::vector<int>> listen_fds;
  std::vector<std::string> bound;
  if (!open_listeners(cli.listen, config.threads, listen_fds, bound)) return 3;

  shard::runtime_options options;
  options.shard_count = config.threads;
  options.pin_threads = !cli.no_pin;
  options.ring.sq_entries = 1024;
  shard::runtime rt(options);
  shard_table shards;
  for (unsigned i = 0; i < config.threads; ++i) {
    shards.push_back(std::make_unique<sink_shard>(config, i, std::move(listen_fds[i])));
    for (const auto& range : expected) shards.back()->reserve_ids(range);
  }
  const std::uint64_t started_ns = core::monotonic_ns();
  auto started = rt.start([&](shard::shard& s) { return shards[s.id()]->start(s); },
                          [&](shard::shard& s) { shards[s.id()]->stop(); });
  if (!started) {
    std::cerr << "ringmta-sink: cannot start shards: " << started.error_text() << "\n";
    return 3;
  }
  std::cerr << "ringmta-sink: listening on";
  for (const auto& b : bound) std::cerr << " " << b;
  std::cerr << " (" << config.threads << " threads)" << std::endl;
  if (!cli.ready_file.empty()) {
    std::ofstream ready(cli.ready_file + ".tmp");
    for (const auto& b : bound) ready << b << "\n";
    ready.close();
    std::rename((cli.ready_file + ".tmp").c_str(), cli.ready_file.c_str());
  }

  const auto elapsed_s = [&] { return double(core::monotonic_ns() - started_ns) / 1e9; };
  const auto report = [&](const std::vector<loadkit::id_tracker>& ids) {
    const nlohmann::json j = build_stats(shards, ids, expected, elapsed_s());
    write_stats_file(cli.stats_file, j);
    if (cli.json) {
      std::cout << j.dump() << std::endl;
    } else {
      std::cout << stats_text(j) << std::flush;
    }
    return j;
  };
  for (;;) {
    timespec wait{0, 200'000'000};
    siginfo_t info{};
    const int s = sigtimedwait(&signals, &info, &wait);
    if (s == SIGUSR1 || s == SIGHUP) {
      report(snapshot_ids(rt, shards));
      continue;
    }
    if (s == SIGINT || s == SIGTERM) break;
    if (duration_ms != 0 && core::monotonic_ns() - started_ns >= duration_ms * 1'000'000) break;
  }
  rt.request_stop();
  rt.join();
  std::vector<loadkit::id_tracker> ids;
  for (const auto& s : shards) ids.push_back(s->ids());
  const nlohmann::json j = report(ids);
  shards.clear();  // buffer rings go before the rings they are registered on
  const bool clean = j["integrity_corrupt"].get<std::uint64_t>() == 0 &&
                     j["duplicates"].get<std::uint64_t>() == 0 &&
                     j["missing"].get<std::uint64_t>() == 0;
  return clean ? 0 : 1;
}

}  // namespace ringmta::sink
