// outbound_bench: delivery throughput of one shard's outbound connections to Postfix's
// smtp-sink on loopback (or any sink given with --sink, e.g. ringmta-sink). One message of
// --size bytes is spooled (spool::sync_spool), then --messages deliveries of it go out over
// --connections reused connections (each delivers messages/connections in a row, then QUIT).
// Bounded by the message count and --limit-s.
//
// Reports messages/s, body MiB/s and the process CPU time per message (the shard thread plus
// the io-wq workers that run splices; smtp-sink is another process), for one body transfer
// mode: staged (read into the connection's buffer, one send with ".CRLF"), splice
// (file -> pipe -> socket) or copy (pooled buffer, read then send); and over STARTTLS (the
// sink given with --sink must offer it, e.g. stunnel in front of ringmta-sink): tls-staged
// (the staged path through the TLS session) or tls (large-body path: read from the page cache
// or the ring into a pooled buffer, encrypted in records, sent).
//
//   outbound_bench --messages 50000 --size 1024 --connections 4 --mode staged
#include <sys/resource.h>

#include <cstdio>
#include <string>

#include <CLI/CLI.hpp>

#include "harness.h"

namespace ringmta::outbound::test {
namespace {

double cpu_seconds() {
  rusage usage{};
  ::getrusage(RUSAGE_SELF, &usage);
  return static_cast<double>(usage.ru_utime.tv_sec + usage.ru_stime.tv_sec) +
         static_cast<double>(usage.ru_utime.tv_usec + usage.ru_stime.tv_usec) / 1e6;
}

int run(int argc, char** argv) {
  std::uint64_t messages = 20000;
  std::size_t size = 1024;
  std::uint32_t connections = 4;
  std::string mode = "staged";
  std::uint32_t limit_s = 120;
  bool pipelining = true;
  std::string external;
  CLI::App app{"outbound delivery throughput to smtp-sink"};
  app.add_option("--messages", messages, "deliveries in all")->check(CLI::Range(1, 10'000'000));
  app.add_option("--size", size, "message size in bytes")->check(CLI::Range(100, 64 << 20));
  app.add_option("--connections", connections, "connections (reused)")->check(CLI::Range(1, 512));
  app.add_option("--mode", mode, "staged | splice | copy | tls-staged | tls")
      ->check(CLI::IsMember({"staged", "splice", "copy", "tls-staged", "tls"}));
  app.add_option("--limit-s", limit_s, "give up after this long");
  app.add_flag("!--no-pipelining", pipelining, "do not use PIPELINING");
  app.add_option("--sink", external, "IPv4:PORT of a running sink instead of smtp-sink");
  CLI11_PARSE(app, argc, argv);

  postfix_sink sink;
  std::string sink_address = "127.0.0.1";
  std::uint16_t sink_port = 0;
  if (!external.empty()) {
    const auto at = core::endpoint::parse(external);
    if (!at || at->family() != AF_INET) {
      std::fprintf(stderr, "outbound_bench: --sink wants IPv4:PORT\n");
      return 1;
    }
    sink_address = at->address_string();
    sink_port = at->port();
  } else if (sink.start(sink_address)) {
    sink_port = sink.port();
  } else {
    std::fprintf(stderr, "outbound_bench: smtp-sink did not start\n");
    return 1;
  }
  harness_options options;
  options.count_only = true;
  options.config.helo_name = "bench.test";
  options.config.pipelining = pipelining;
  options.config.connections_max = connections;
  options.config.transfers_max = connections;
  const bool tls = mode.rfind("tls", 0) == 0;
  if (mode != "staged" && mode != "tls-staged") {
    options.config.copy_body_bytes_max = 0;  // every body takes that path
  } else {
    options.config.copy_body_bytes_max = static_cast<std::uint32_t>(size * 2);
  }
  if (mode == "copy") options.config.transfer = body_transfer::copy;
  if (tls) {
    if (external.empty()) {
      std::fprintf(stderr, "outbound_bench: --mode %s needs --sink with STARTTLS\n",
                   mode.c_str());
      return 1;
    }
    tls::client_settings settings;
    settings.ca_required = false;  // `required`: encrypted, not verified
    options.config.tls_context = tls::load_client_context(settings).context;
  }
  harness h(options);
  if (!h.started()) {
    std::fprintf(stderr, "outbound_bench: the shard did not start\n");
    return 1;
  }
  test_spool spool;
  const delivery& job = spool.add(make_message(size, 1), {"user@example.net"}).job;
  std::vector<std::vector<const delivery*>> queues(connections);
  for (std::uint64_t i = 0; i < messages; ++i) queues[i % connections].push_back(&job);

  const double cpu_before = cpu_seconds();
  const std::uint64_t start_ns = core::monotonic_ns();
  for (std::uint32_t c = 0; c < connections; ++c) {
    h.deliver(0, c,
              route{route_kind::host, sink_address, sink_port,
                    tls ? tls_policy::required : tls_policy::none},
              queues[c]);
  }
  bool finished = true;
  for (std::uint32_t c = 0; c < connections; ++c) {
    const std::uint64_t waited_ms = (core::monotonic_ns() - start_ns) / 1'000'000;
    const std::uint64_t left_ms = limit_s * 1000ull > waited_ms ? limit_s * 1000ull - waited_ms : 1;
    finished = h.log.wait_for(c, record::kind::closed, 1, left_ms) && finished;
  }
  const double seconds = static_cast<double>(core::monotonic_ns() - start_ns) / 1e9;
  const double cpu = cpu_seconds() - cpu_before;
  const auto counters = h.counters(0);
  const std::uint64_t accepted = h.embedder(0).accepted.load();
  const std::uint64_t failed = h.embedder(0).failed.load();
  std::printf(
      "mode=%s size=%zu connections=%u pipelining=%s messages=%llu accepted=%llu failed=%llu "
      "%s\n  elapsed %.3f s, %.0f messages/s, %.1f MiB/s of body, CPU %.1f us/message "
      "(%.0f%% of one core)\n  connects %llu, staged %llu, spliced %llu (%llu splices), "
      "copied %llu, encrypted %llu, TLS handshakes %llu\n",
      mode.c_str(), size, connections, pipelining ? "on" : "off",
      static_cast<unsigned long long>(messages), static_cast<unsigned long long>(accepted),
      static_cast<unsigned long long>(failed), finished ? "" : "(TIME LIMIT HIT)", seconds,
      static_cast<double>(accepted) / seconds,
      static_cast<double>(counters.body_bytes) / seconds / (1 << 20),
      cpu * 1e6 / static_cast<double>(std::max<std::uint64_t>(1, accepted)),
      100.0 * cpu / seconds, static_cast<unsigned long long>(counters.connect_attempts),
      static_cast<unsigned long long>(counters.bodies_staged),
      static_cast<unsigned long long>(counters.bodies_spliced),
      static_cast<unsigned long long>(counters.splices),
      static_cast<unsigned long long>(counters.bodies_copied),
      static_cast<unsigned long long>(counters.bodies_encrypted),
      static_cast<unsigned long long>(counters.tls_handshakes));
  return finished && failed == 0 && accepted == messages ? 0 : 1;
}

}  // namespace
}  // namespace ringmta::outbound::test

int main(int argc, char** argv) { return ringmta::outbound::test::run(argc, argv); }
