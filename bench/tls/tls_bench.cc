// TLS handshakes through the layer, in memory (no sockets, no kernel): a client tls::session and
// a server tls::session hand each other their flights until both are established, then the
// server sends one record. ECDSA P-256 and RSA-2048 server certificates, full handshakes and
// resumed ones (TLS 1.3 ticket from the per-shard client cache). items_per_second is
// handshakes per second of this thread doing both sides; the counters server_us and client_us
// are the thread CPU time spent inside each side's calls, per handshake: server_us is what an
// inbound handshake costs a ringmta shard. Results and command: bench/README.md.
#include <benchmark/benchmark.h>
#include <time.h>
#include <unistd.h>

#include "ringmta/tls/context.h"
#include "ringmta/tls/session.h"
#include "tls_test_pki.h"

namespace {

using namespace ringmta;

const testing::test_pki& pki() {
  static const testing::test_pki made = [] {
    char pattern[] = "/tmp/ringmta-tls-bench-XXXXXX";
    return testing::make_test_pki(::mkdtemp(pattern));
  }();
  return made;
}

std::uint64_t thread_cpu_ns() {
  timespec t{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
  return std::uint64_t(t.tv_sec) * 1'000'000'000u + std::uint64_t(t.tv_nsec);
}

std::shared_ptr<const tls::server_context> server(bool rsa) {
  tls::server_settings s;
  s.certificates = {rsa ? tls::certificate_pair{pki().rsa_cert, pki().rsa_key}
                        : tls::certificate_pair{pki().ecdsa_cert, pki().ecdsa_key}};
  return tls::load_server_context(s, nullptr).context;
}

// Moves every queued flight across until nothing moves; returns false if a side failed.
bool exchange(tls::session& client, tls::session& server, std::uint64_t& server_ns,
              std::uint64_t& client_ns) {
  for (int round = 0; round < 20; ++round) {
    bool moved = false;
    if (auto out = client.ciphertext(); !out.empty()) {
      const auto t0 = thread_cpu_ns();
      server.feed(out);
      server_ns += thread_cpu_ns() - t0;
      client.consume_ciphertext(out.size());
      moved = true;
    }
    if (auto out = server.ciphertext(); !out.empty()) {
      const auto t0 = thread_cpu_ns();
      client.feed(out);
      client.consume_plaintext(client.plaintext().size());
      client_ns += thread_cpu_ns() - t0;
      server.consume_ciphertext(out.size());
      moved = true;
    }
    if (!moved) break;
  }
  return client.established() && server.established();
}

void handshake(benchmark::State& state, bool rsa, bool resume) {
  const auto context = server(rsa);
  const auto client_context = tls::load_client_context(tls::client_settings{}).context;
  tls::client_session_cache cache;
  std::uint64_t server_ns = 0, client_ns = 0, resumed = 0;
  for (auto _ : state) {
    tls::client_options options;
    options.host = "mx.test.example";
    options.cache = resume ? &cache : nullptr;
    const auto c0 = thread_cpu_ns();
    auto client = tls::session::connect(client_context, options);
    client_ns += thread_cpu_ns() - c0;
    const auto s0 = thread_cpu_ns();
    auto s = tls::session::accept(context);
    server_ns += thread_cpu_ns() - s0;
    if (!exchange(*client, *s, server_ns, client_ns)) {
      state.SkipWithError("handshake failed");
      break;
    }
    const auto w0 = thread_cpu_ns();
    s->write("220 mx.test.example ESMTP\r\n");  // the tickets go out with the first record
    server_ns += thread_cpu_ns() - w0;
    exchange(*client, *s, server_ns, client_ns);
    resumed += s->resumed() ? 1 : 0;
  }
  const double n = double(state.iterations());
  state.SetItemsProcessed(state.iterations());
  state.counters["server_us"] = double(server_ns) / n / 1000.0;
  state.counters["client_us"] = double(client_ns) / n / 1000.0;
  state.counters["resumed"] = double(resumed) / n;
}

void ecdsa_full(benchmark::State& s) { handshake(s, false, false); }
void ecdsa_resumed(benchmark::State& s) { handshake(s, false, true); }
void rsa_full(benchmark::State& s) { handshake(s, true, false); }
void rsa_resumed(benchmark::State& s) { handshake(s, true, true); }
BENCHMARK(ecdsa_full)->MinTime(2);
BENCHMARK(ecdsa_resumed)->MinTime(2);
BENCHMARK(rsa_full)->MinTime(2);
BENCHMARK(rsa_resumed)->MinTime(2);

}  // namespace

BENCHMARK_MAIN();
