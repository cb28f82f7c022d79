// Google Benchmark of the SMTP client engine alone (no sockets): one mail transaction against
// the canned in-memory server, pipelined and one command at a time, and the reply parser on a
// typical EHLO reply. Run: build-*/tests/unit/smtp_client/smtp_client_bench
#include <benchmark/benchmark.h>

#include "canned_server.h"
#include "ringmta/smtp/client_session.h"
#include "ringmta/smtp/reply_parser.h"

namespace ringmta::smtp {
namespace {

using client_testing::canned_loop_counts;
using client_testing::canned_server;
using client_testing::run_until_idle;

void transaction(benchmark::State& state, bool pipelining) {
  client_config config;
  config.helo_name = "client.example";
  client_session session(config);
  canned_server server(pipelining);
  canned_loop_counts counts;
  if (run_until_idle(session, server, counts) != client_event_kind::ready) {
    state.SkipWithError("no ready");
    return;
  }
  const client_recipient recipients[] = {
      {"a@example.org", {}, {}}, {"b@example.org", {}, {}}, {"c@example.org", {}, {}}};
  client_envelope envelope;
  envelope.reverse_path = "sender@example.com";
  envelope.recipients = recipients;
  envelope.size_bytes = 4096;
  for (auto _ : state) {
    session.start_transaction(envelope);
    if (run_until_idle(session, server, counts) != client_event_kind::ready) {
      state.SkipWithError("transaction did not end ready");
      return;
    }
  }
  state.SetItemsProcessed(static_cast<std::int64_t>(counts.accepted_messages));
  state.counters["session_bytes"] = static_cast<double>(sizeof(client_session));
}

void BM_client_transaction_pipelined(benchmark::State& state) { transaction(state, true); }
void BM_client_transaction_one_at_a_time(benchmark::State& state) { transaction(state, false); }

void BM_reply_parser_ehlo(benchmark::State& state) {
  constexpr std::string_view ehlo =
      "250-mx.example.org Hello client.example [192.0.2.1]\r\n250-SIZE 52428800\r\n"
      "250-8BITMIME\r\n250-PIPELINING\r\n250-PIPE_CONNECT\r\n250-AUTH PLAIN LOGIN\r\n"
      "250-CHUNKING\r\n250-STARTTLS\r\n250-SMTPUTF8\r\n250-DSN\r\n250 HELP\r\n";
  reply_parser parser;
  for (auto _ : state) {
    std::string_view rest = ehlo;
    while (!rest.empty()) {
      const auto step = parser.feed(rest);
      rest.remove_prefix(step.consumed);
    }
    benchmark::DoNotOptimize(parser.reply().code);
  }
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * ehlo.size()));
}

BENCHMARK(BM_client_transaction_pipelined);
BENCHMARK(BM_client_transaction_one_at_a_time);
BENCHMARK(BM_reply_parser_ehlo);

}  // namespace
}  // namespace ringmta::smtp

BENCHMARK_MAIN();
