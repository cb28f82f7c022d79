// Fuzz target: the server side of tls::session fed arbitrary ciphertext in arbitrary splits.
// Input: byte 0 seeds the split sizes, the rest is what a client sent. Invariants: no crash,
// no leak, feed() never takes more than it is given, the state machine only moves forward, a
// failed or closed session discards input, plaintext never exceeds the staging capacity.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include <unistd.h>

#include "ringmta/core/assert.h"
#include "ringmta/tls/context.h"
#include "ringmta/tls/session.h"
#include "tls_test_pki.h"

namespace {

std::shared_ptr<const ringmta::tls::server_context> context() {
  static const auto made = [] {
    char pattern[] = "/tmp/ringmta-fuzz-tls-XXXXXX";
    const auto pki = ringmta::testing::make_test_pki(::mkdtemp(pattern));
    ringmta::tls::server_settings settings;
    settings.certificates = {{pki.ecdsa_cert, pki.ecdsa_key}, {pki.rsa_cert, pki.rsa_key}};
    auto loaded = ringmta::tls::load_server_context(settings, nullptr);
    RINGMTA_ASSERT(loaded.context != nullptr);
    return loaded.context;
  }();
  return made;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using ringmta::tls::state;
  if (size == 0) return 0;
  std::uint32_t seed = data[0] * 2654435761u + 1;
  std::string_view rest(reinterpret_cast<const char*>(data) + 1, size - 1);
  auto session = ringmta::tls::session::accept(context());
  RINGMTA_ASSERT(session != nullptr);
  for (int steps = 0; steps < 10000; ++steps) {
    seed = seed * 1103515245u + 12345u;
    const std::size_t piece = rest.empty() ? 0 : 1 + (seed >> 8) % rest.size();
    const std::size_t taken = session->feed(rest.substr(0, piece));
    RINGMTA_ASSERT(taken <= piece);
    rest.remove_prefix(taken);
    RINGMTA_ASSERT(session->plaintext().size() <= ringmta::tls::session::plaintext_capacity);
    if (session->state() == state::established && (seed & 1)) session->write("250 ok\r\n");
    session->consume_plaintext(session->plaintext().size());
    session->consume_ciphertext(session->ciphertext().size());
    if (seed % 7 == 0) session->trim();
    if (rest.empty() || session->state() == state::failed) break;
    if (taken == 0 && session->plaintext().empty() && session->ciphertext().empty()) break;
  }
  if (session->state() == state::failed || session->state() == state::closed) {
    RINGMTA_ASSERT(session->feed("more") == 4);  // final states discard
  }
  session->end_of_input();
  return 0;
}
