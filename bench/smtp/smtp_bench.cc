// Google Benchmark suite for smtp::server_session: whole simulated sessions in memory
// (greeting, EHLO, MAIL, RCPT, DATA with a 1 KiB body, QUIT), pipelined and in lock-step, and
// DATA scanning throughput for 1 KiB, 64 KiB and 10 MiB bodies. Results: bench/smtp/README.md.
#include <string>

#include <benchmark/benchmark.h>

#include "ringmta/core/assert.h"
#include "ringmta/smtp/data_scanner.h"
#include "ringmta/smtp/server_session.h"

namespace ringmta::smtp {
namespace {

struct sink_handler final : server_handler {
  std::uint64_t body_bytes = 0;
  void on_body(std::string_view slice, body_form) noexcept override {
    body_bytes += slice.size();
  }
};

// Text lines of 76 characters + CRLF (RFC 2045 base64 / quoted-printable line length).
std::string text_body(std::size_t bytes, std::size_t line_bytes = 78) {
  std::string body;
  body.reserve(bytes);
  std::size_t column = 0;
  while (body.size() < bytes - 2) {
    if (column == line_bytes - 2) {
      body += "\r\n";
      column = 0;
    } else {
      body += static_cast<char>('A' + (body.size() * 7) % 26);
      ++column;
    }
  }
  body += "\r\n";
  return body;
}

const std::string& session_commands() {
  static const std::string commands =
      "EHLO client.example.org\r\nMAIL FROM:<alice@example.org>\r\n"
      "RCPT TO:<bob@example.net>\r\nDATA\r\n" + text_body(1024) + ".\r\nQUIT\r\n";
  return commands;
}

void drain(server_session& session) { session.consume_output(session.output().size()); }

// A whole session, the client side pipelined in one write (RFC 2920).
void session_pipelined(benchmark::State& state) {
  const server_config config;
  sink_handler handler;
  const std::string& input = session_commands();
  for (auto _ : state) {
    server_session session(config, handler);
    session.start();
    const std::size_t used = session.feed(input);
    benchmark::DoNotOptimize(session.output().data());
    drain(session);
    RINGMTA_ASSERT(used == input.size() && session.wants_close());
  }
  RINGMTA_ASSERT(handler.body_bytes == static_cast<std::uint64_t>(state.iterations()) * 1024);
  state.SetItemsProcessed(state.iterations());
  state.counters["sessions/s"] = benchmark::Counter(static_cast<double>(state.iterations()),
                                                    benchmark::Counter::kIsRate);
}
BENCHMARK(session_pipelined)->Name("session/pipelined/10M")->Iterations(10'000'000);
BENCHMARK(session_pipelined)->Name("session/pipelined");

// A whole session in lock-step: one command per feed(), output drained after each.
void session_lockstep(benchmark::State& state) {
  const server_config config;
  sink_handler handler;
  const std::string body = text_body(1024) + ".\r\n";
  const std::string_view steps[] = {"EHLO client.example.org\r\n",
                                    "MAIL FROM:<alice@example.org>\r\n",
                                    "RCPT TO:<bob@example.net>\r\n", "DATA\r\n", body, "QUIT\r\n"};
  for (auto _ : state) {
    server_session session(config, handler);
    session.start();
    drain(session);
    for (const std::string_view step : steps) {
      session.feed(step);
      benchmark::DoNotOptimize(session.output().data());
      drain(session);
    }
    RINGMTA_ASSERT(session.wants_close());
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(session_lockstep)->Name("session/lockstep");

// One transaction per iteration on a long-lived session, its body sent with DATA or as one
// "BDAT n LAST" chunk (whose content obeys the same line rules, without dot handling); bytes =
// body octets.
void scan_transactions(benchmark::State& state, std::size_t line_bytes, bool bdat) {
  const std::size_t size = static_cast<std::size_t>(state.range(0));
  server_config config;
  config.limits.message_bytes_max = 64u << 20;
  config.limits.text_line_bytes_max = 0;
  sink_handler handler;
  server_session session(config, handler);
  session.start();
  session.feed("EHLO client.example.org\r\n");
  drain(session);
  const std::string body = text_body(size, line_bytes);
  const std::string input =
      "MAIL FROM:<alice@example.org>\r\nRCPT TO:<bob@example.net>\r\n" +
      (bdat ? "BDAT " + std::to_string(body.size()) + " LAST\r\n" + body
            : "DATA\r\n" + body + ".\r\n");
  for (auto _ : state) {
    const std::size_t used = session.feed(input);
    drain(session);
    RINGMTA_ASSERT(used == input.size());
  }
  RINGMTA_ASSERT(session.messages_accepted() == static_cast<std::uint64_t>(state.iterations()));
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * size));
}
void data_scan(benchmark::State& state, std::size_t line_bytes) {
  scan_transactions(state, line_bytes, false);
}
void bdat_scan(benchmark::State& state, std::size_t line_bytes) {
  scan_transactions(state, line_bytes, true);
}
BENCHMARK_CAPTURE(data_scan, text_78, 78)->Name("data_scan/78_octet_lines")
    ->Arg(1 << 10)->Arg(64 << 10)->Arg(10 << 20);
BENCHMARK_CAPTURE(data_scan, long_998, 1000)->Name("data_scan/1000_octet_lines")
    ->Arg(1 << 10)->Arg(64 << 10)->Arg(10 << 20);
BENCHMARK_CAPTURE(bdat_scan, text_78, 78)->Name("bdat_scan/78_octet_lines")
    ->Arg(1 << 10)->Arg(64 << 10)->Arg(10 << 20);
BENCHMARK_CAPTURE(bdat_scan, long_998, 1000)->Name("bdat_scan/1000_octet_lines")
    ->Arg(1 << 10)->Arg(64 << 10)->Arg(10 << 20);

// The CR/LF/NUL search alone over a 10 MiB body of 78-octet lines, per variant.
template <const char* (*Scan)(const char*, const char*, bool&) noexcept>
void line_break_scan(benchmark::State& state) {
  const std::string body = text_body(10 << 20, static_cast<std::size_t>(state.range(0)));
  for (auto _ : state) {
    bool eight_bit = false;
    std::size_t lines = 0;
    const char* p = body.data();
    const char* const end = p + body.size();
    while ((p = Scan(p, end, eight_bit)) < end) {
      ++p;
      ++lines;
    }
    benchmark::DoNotOptimize(lines);
  }
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * body.size()));
}
BENCHMARK_TEMPLATE(line_break_scan, find_cr_lf_nul_portable)
    ->Name("scanner/portable")->Arg(78)->Arg(1000);
BENCHMARK_TEMPLATE(line_break_scan, find_cr_lf_nul_sse2)
    ->Name("scanner/sse2")->Arg(78)->Arg(1000);
BENCHMARK_TEMPLATE(line_break_scan, find_cr_lf_nul_avx2)
    ->Name("scanner/avx2")->Arg(78)->Arg(1000);

}  // namespace
}  // namespace ringmta::smtp

BENCHMARK_MAIN();
