// TLS in the simulation (issue 16: "TLS connections run in the simulator too"): the daemon's
// outbound STARTTLS (src/outbound/tls.cc over tls::session, OpenSSL through memory BIOs) meets
// simulated MTAs that run the server side of the same tls::session.
//
// Replays stay exact: OpenSSL's random numbers (client and server randoms, key shares, ECDSA
// nonces, session tickets) come from the seed (seed_openssl: RAND_set_rand_method, which
// OpenSSL 3.0 still consults before its own generator), so every handshake of a run is the
// same octets in the same sizes at every replay. The certificates are fixed (ECDSA P-256, one
// key): a self-signed one (*.example), what every simulated MTA presents unless a `verify`
// policy is drawn (opportunistic TLS verifies nothing, RFC 7435), and two signed by the
// simulated CA the outbound trusts: one naming every simulated MX host and the relay host,
// one naming another host (sim_delivery.cc, TLS policies: RFC 6125's check through the daemon's
// own tls::session).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "ringmta/smtp/server_session.h"
#include "ringmta/tls/context.h"
#include "ringmta/tls/session.h"

namespace ringmta::sim {

// Every OpenSSL random number from now on comes from `seed`'s stream (process-wide).
void seed_openssl(std::uint64_t seed);

// What a simulated server presents.
enum class certificate : std::uint8_t {
  self_signed,  // no chain to the simulated CA
  good,         // the CA's, naming every simulated MX host and the relay host
  wrong_name,   // the CA's, naming a host that is not there
  expired,      // the CA's, naming every host, expired five days before the simulated clock starts
  expiring,     // the CA's, naming every host, valid until 90 s after the clock starts
};
inline constexpr std::size_t certificate_kinds = 5;
// The end of the `expiring` certificate's validity: epoch_seconds (2027-01-15 08:00:00) + 90.
inline constexpr std::int64_t expiring_not_after_s = 1'800'000'090;
std::string_view describe(certificate presented) noexcept;

// The contexts, built once per process.
std::shared_ptr<const tls::server_context> simulated_server_context(
    certificate presented = certificate::self_signed);
std::shared_ptr<const tls::client_context> simulated_client_context();

// Encrypts `plain` with an established session, appending its records to `out`; returns the
// octets taken (all of them unless the session failed).
std::size_t encrypt(tls::session& session, std::string_view plain, std::string& out);

// A simulated MTA's SMTP engine behind TLS once STARTTLS was accepted: ciphertext from the
// network in, the engine's replies encrypted out. Until the engine's 220 to STARTTLS it is a
// plain pipe; `broken` makes it answer the ClientHello with garbage (a middlebox that strips
// TLS, or a broken server: the client's opportunistic fallback to plaintext is exercised).
class server_tls_pipe {
 public:
  server_tls_pipe(smtp::server_session& engine, bool broken,
                  certificate presented = certificate::self_signed)
      : _engine(engine), _broken(broken), _presented(presented) {}

  // Octets from the client; appends what goes back to `out`. False: close the connection
  // (the handshake failed, or the client closed TLS).
  bool feed(std::string_view bytes, std::string& out);
  // The engine's pending output (the greeting, a reply), encrypted once TLS is up.
  void flush(std::string& out);
  bool encrypted() const noexcept { return _tls != nullptr; }
  bool resumed() const noexcept { return _tls != nullptr && _tls->resumed(); }
  // The handshake began and has not completed (a client that ends it here refused it).
  bool handshaking() const noexcept { return _tls != nullptr && !_tls->handshake_completed(); }

 private:
  bool feed_ciphertext(std::string_view bytes, std::string& out);
  smtp::server_session& _engine;
  bool _broken;
  certificate _presented;
  std::unique_ptr<tls::session> _tls;
};

}  // namespace ringmta::sim
