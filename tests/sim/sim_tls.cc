#include "sim_tls.h"

#include <openssl/rand.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

namespace ringmta::sim {
namespace {

// The seeded stream behind OpenSSL's RAND_bytes: splitmix64 (no state shared with the world's
// own generator, so adding TLS to a run does not shift its other draws).
std::uint64_t g_rand_state = 0;

std::uint64_t next_random() noexcept {
  std::uint64_t z = (g_rand_state += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

int seeded_bytes(unsigned char* buffer, int length) {
  for (int i = 0; i < length; ++i) buffer[i] = static_cast<unsigned char>(next_random() >> 56);
  return 1;
}
int seeded_status() { return 1; }
int seeded_seed(const void*, int) { return 1; }
int seeded_add(const void*, int, double) { return 1; }

// RAND_METHOD is deprecated in OpenSSL 3.0 but still consulted first by RAND_bytes_ex and
// RAND_priv_bytes_ex (crypto/rand/rand_lib.c), which is all a deterministic replay needs.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
const RAND_METHOD seeded_method = {seeded_seed, seeded_bytes, nullptr, seeded_add, seeded_bytes,
                                   seeded_status};
#pragma GCC diagnostic pop

constexpr char key_pem[] = R"(-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg2Vgpvkrcp4LGFurc
SSWH3zcyYLfrpfki2NZsvcy8gYahRANCAAT7RYxunx90rdtwJBj9QHqee/L5Xzcm
hczFyKM/3fUNH6x0f/ry1FZvUDPn+R3KG0qe7zjLIEcTpEFfGSf18oAC
-----END PRIVATE KEY-----
)";
constexpr char certificate_pem[] = R"(-----BEGIN CERTIFICATE-----
MIIBnzCCAUWgAwIBAgIUZGss7h9Llu9RlCP82h51EdwvHO0wCgYIKoZIzj0EAwIw
GTEXMBUGA1UEAwwObXguc2ltLmV4YW1wbGUwIBcNMjYxMjA3MDU0NzM1WhgPMjEy
NjExMTMwNTQ3MzVaMBkxFzAVBgNVBAMMDm14LnNpbS5leGFtcGxlMFkwEwYHKoZI
zj0CAQYIKoZIzj0DAQcDQgAE+0WMbp8fdK3bcCQY/UB6nnvy+V83JoXMxcijP931
DR+sdH/68tRWb1Az5/kdyhtKnu84yyBHE6RBXxkn9fKAAqNpMGcwHQYDVR0OBBYE
FFBximER6IDU3J6Z+yWVUSCtuc9WMB8GA1UdIwQYMBaAFFBximER6IDU3J6Z+yWV
USCtuc9WMA8GA1UdEwEB/wQFMAMBAf8wFAYDVR0RBA0wC4IJKi5leGFtcGxlMAoG
CCqGSM49BAMCA0gAMEUCIQD4q4YcQE9AeKfWZbB9i7/kek6+//pyHlTGhg5hsh/g
fwIgInWuGsnGOTVEFqlyYNeT6cYuhoCTNuxkgX20Tmc/OWA=
-----END CERTIFICATE-----
)";

// The simulated CA (ECDSA P-256, the key above) that the outbound trusts, and two server
// certificates it signed with the same key: one naming every simulated MX host, each domain
// (an implicit MX's host name, RFC 5321 §5.1) and the relay host (RFC 6125 DNS-IDs), one
// naming a host that is not there. The self-signed one above is
// the third kind: no chain to the CA.
constexpr char ca_pem[] = R"(-----BEGIN CERTIFICATE-----
MIIBpzCCAU2gAwIBAgIUVKjOSnfVPXBd4ghOa/v4/WStMDowCgYIKoZIzj0EAwIw
IDEeMBwGA1UEAwwVcmluZ210YSBzaW11bGF0aW9uIENBMCAXDTI2MTIwNzE3NDkx
NFoYDzIxMjYxMTEzMTc0OTE0WjAgMR4wHAYDVQQDDBVyaW5nbXRhIHNpbXVsYXRp
b24gQ0EwWTATBgcqhkjOPQIBBggqhkjOPQMBBwNCAAT7RYxunx90rdtwJBj9QHqe
e/L5XzcmhczFyKM/3fUNH6x0f/ry1FZvUDPn+R3KG0qe7zjLIEcTpEFfGSf18oAC
o2MwYTAdBgNVHQ4EFgQUUHGKYRHogNTcnpn7JZVRIK25z1YwHwYDVR0jBBgwFoAU
UHGKYRHogNTcnpn7JZVRIK25z1YwDwYDVR0TAQH/BAUwAwEB/zAOBgNVHQ8BAf8E
BAMCAgQwCgYIKoZIzj0EAwIDSAAwRQIhAJ5vL691vbENUsi5idzLozcXKYb7YrkE
I/6ojS1rNFdBAiBykoT/5c0k4WcEKlSA09J6DasCyuLEWOU+ygT6x22zBw==
-----END CERTIFICATE-----
)";
constexpr char good_certificate_pem[] = R"(-----BEGIN CERTIFICATE-----
MIICbjCCAhSgAwIBAgIBAjAKBggqhkjOPQQDAjAgMR4wHAYDVQQDDBVyaW5nbXRh
IHNpbXVsYXRpb24gQ0EwIBcNMjYxMjA3MTc1NDE2WhgPMjEyNjExMTMxNzU0MTZa
MBwxGjAYBgNVBAMMEW14MS5yY3B0MC5leGFtcGxlMFkwEwYHKoZIzj0CAQYIKoZI
zj0DAQcDQgAE+0WMbp8fdK3bcCQY/UB6nnvy+V83JoXMxcijP931DR+sdH/68tRW
b1Az5/kdyhtKnu84yyBHE6RBXxkn9fKAAqOCAT8wggE7MIH5BgNVHREEgfEwge6C
EW14MS5yY3B0MC5leGFtcGxlghFteDIucmNwdDAuZXhhbXBsZYIRbXgxLnJjcHQx
LmV4YW1wbGWCEW14Mi5yY3B0MS5leGFtcGxlghFteDEucmNwdDIuZXhhbXBsZYIR
bXgyLnJjcHQyLmV4YW1wbGWCEm14MS5zZW5kZXIuZXhhbXBsZYISbXgyLnNlbmRl
ci5leGFtcGxlgg1yY3B0MC5leGFtcGxlgg1yY3B0MS5leGFtcGxlgg1yY3B0Mi5l
eGFtcGxlgg5zZW5kZXIuZXhhbXBsZYIVc21hcnRob3N0LnNpbS5leGFtcGxlMAkG
A1UdEwQCMAAwEwYDVR0lBAwwCgYIKwYBBQUHAwEwHQYDVR0OBBYEFFBximER6IDU
3J6Z+yWVUSCtuc9WMAoGCCqGSM49BAMCA0gAMEUCIBX8l9spf6H92UC1f6ZdAwB9
JH64HXGPo4MLTDAqYYxVAiEA/qC8O0YKW4gmHuwwNUVkmvMncyXN2sqyFKI2l5K1
IXY=
-----END CERTIFICATE-----
)";
constexpr char wrong_name_certificate_pem[] = R"(-----BEGIN CERTIFICATE-----
MIIBkzCCATigAwIBAgIBAzAKBggqhkjOPQQDAjAgMR4wHAYDVQQDDBVyaW5nbXRh
IHNpbXVsYXRpb24gQ0EwIBcNMjYxMjA3MTc0OTE0WhgPMjEyNjExMTMxNzQ5MTRa
MB8xHTAbBgNVBAMMFG14LmVsc2V3aGVyZS5pbnZhbGlkMFkwEwYHKoZIzj0CAQYI
KoZIzj0DAQcDQgAE+0WMbp8fdK3bcCQY/UB6nnvy+V83JoXMxcijP931DR+sdH/6
8tRWb1Az5/kdyhtKnu84yyBHE6RBXxkn9fKAAqNiMGAwHwYDVR0RBBgwFoIUbXgu
ZWxzZXdoZXJlLmludmFsaWQwCQYDVR0TBAIwADATBgNVHSUEDDAKBggrBgEFBQcD
ATAdBgNVHQ4EFgQUUHGKYRHogNTcnpn7JZVRIK25z1YwCgYIKoZIzj0EAwIDSQAw
RgIhAO1ja0fFraEbVsr3Gq9WYFi+opCvz6lr2aw4nYBFxYaXAiEAj9hWaUzWw7at
91ffKNACCIGnTLfuY+5p+aUbI5mhDu4=
-----END CERTIFICATE-----
)";

// The good certificate's names, valid 2026-12-01 to 2027-01-10: the simulated clock starts on
// 2027-01-15 (epoch_seconds), so it has expired by then — but not by the real clock of today's
// machines, so only an outbound that verifies at the time it is given (tls::client_options
// now_s), not at the machine's, refuses it.
constexpr char expired_certificate_pem[] = R"(-----BEGIN CERTIFICATE-----
MIICbDCCAhKgAwIBAgIBBDAKBggqhkjOPQQDAjAgMR4wHAYDVQQDDBVyaW5nbXRh
IHNpbXVsYXRpb24gQ0EwHhcNMjYxMjAxMDAwMDAwWhcNMjcwMTEwMDAwMDAwWjAc
MRowGAYDVQQDDBFteDEucmNwdDAuZXhhbXBsZTBZMBMGByqGSM49AgEGCCqGSM49
AwEHA0IABPtFjG6fH3St23AkGP1Aep578vlfNyaFzMXIoz/d9Q0frHR/+vLUVm9Q
M+f5HcobSp7vOMsgRxOkQV8ZJ/XygAKjggE/MIIBOzCB+QYDVR0RBIHxMIHughFt
eDEucmNwdDAuZXhhbXBsZYIRbXgyLnJjcHQwLmV4YW1wbGWCEW14MS5yY3B0MS5l
eGFtcGxlghFteDIucmNwdDEuZXhhbXBsZYIRbXgxLnJjcHQyLmV4YW1wbGWCEW14
Mi5yY3B0Mi5leGFtcGxlghJteDEuc2VuZGVyLmV4YW1wbGWCEm14Mi5zZW5kZXIu
ZXhhbXBsZYINcmNwdDAuZXhhbXBsZYINcmNwdDEuZXhhbXBsZYINcmNwdDIuZXhh
bXBsZYIOc2VuZGVyLmV4YW1wbGWCFXNtYXJ0aG9zdC5zaW0uZXhhbXBsZTAJBgNV
HRMEAjAAMBMGA1UdJQQMMAoGCCsGAQUFBwMBMB0GA1UdDgQWBBRQcYphEeiA1Nye
mfsllVEgrbnPVjAKBggqhkjOPQQDAgNIADBFAiEAy2QJbXaO/UTrh25jNNprhgRm
4wBswHGOWOUKFSH6Wb0CIA7pgoi6oE5xWyoZg1BdDt5qWsG0bNkItQH4y9sVKA4Z
-----END CERTIFICATE-----
)";

// The same, valid until 2027-01-15 08:01:30 (expiring_not_after_s): it expires during a run.
constexpr char expiring_certificate_pem[] = R"(-----BEGIN CERTIFICATE-----
MIICbDCCAhKgAwIBAgIBBTAKBggqhkjOPQQDAjAgMR4wHAYDVQQDDBVyaW5nbXRh
IHNpbXVsYXRpb24gQ0EwHhcNMjYxMjAxMDAwMDAwWhcNMjcwMTE1MDgwMTMwWjAc
MRowGAYDVQQDDBFteDEucmNwdDAuZXhhbXBsZTBZMBMGByqGSM49AgEGCCqGSM49
AwEHA0IABPtFjG6fH3St23AkGP1Aep578vlfNyaFzMXIoz/d9Q0frHR/+vLUVm9Q
M+f5HcobSp7vOMsgRxOkQV8ZJ/XygAKjggE/MIIBOzCB+QYDVR0RBIHxMIHughFt
eDEucmNwdDAuZXhhbXBsZYIRbXgyLnJjcHQwLmV4YW1wbGWCEW14MS5yY3B0MS5l
eGFtcGxlghFteDIucmNwdDEuZXhhbXBsZYIRbXgxLnJjcHQyLmV4YW1wbGWCEW14
Mi5yY3B0Mi5leGFtcGxlghJteDEuc2VuZGVyLmV4YW1wbGWCEm14Mi5zZW5kZXIu
ZXhhbXBsZYINcmNwdDAuZXhhbXBsZYINcmNwdDEuZXhhbXBsZYINcmNwdDIuZXhh
bXBsZYIOc2VuZGVyLmV4YW1wbGWCFXNtYXJ0aG9zdC5zaW0uZXhhbXBsZTAJBgNV
HRMEAjAAMBMGA1UdJQQMMAoGCCsGAQUFBwMBMB0GA1UdDgQWBBRQcYphEeiA1Nye
mfsllVEgrbnPVjAKBggqhkjOPQQDAgNIADBFAiEAm9XPyk9IGlvccSQ28/GBthBn
DsxGFtLS3SsXb4CyNFkCIFqGLZTMVcpRg16NnczP1rHrBI99aBOWmPtMEuC6WNUW
-----END CERTIFICATE-----
)";

struct fixed_contexts {
  std::shared_ptr<const tls::server_context> server[certificate_kinds];
  std::shared_ptr<const tls::client_context> client;
};

[[noreturn]] void fixture_broken(const char* what, const std::string& error) {
  std::fprintf(stderr, "sim: %s: %s\n", what, error.c_str());
  std::abort();  // a broken test fixture, not a simulated fault
}

// The loaders read files (the daemon's certificates are files): the PEMs are written once
// into a private temporary directory, loaded, and removed. The client trusts the simulated CA,
// not the machine's bundle: a run must not depend on the host's files. The servers share one
// ticket key ring, as a host that changes its certificate keeps its ticket keys.
fixed_contexts load_fixed_contexts() {
  char directory[] = "/tmp/ringmta-sim-tls-XXXXXX";
  if (::mkdtemp(directory) == nullptr) fixture_broken("mkdtemp", std::strerror(errno));
  const std::string path = directory;
  const std::string key_file = path + "/key.pem";
  const std::string ca_file = path + "/ca.pem";
  const std::string certificate_files[certificate_kinds] = {
      path + "/self-signed.pem", path + "/good.pem", path + "/wrong-name.pem",
      path + "/expired.pem", path + "/expiring.pem"};
  const char* const certificate_texts[certificate_kinds] = {
      certificate_pem, good_certificate_pem, wrong_name_certificate_pem,
      expired_certificate_pem, expiring_certificate_pem};
  const auto write = [](const std::string& file, const char* text) {
    std::FILE* f = std::fopen(file.c_str(), "w");
    if (f == nullptr) return false;
    const bool ok = std::fputs(text, f) >= 0;
    return std::fclose(f) == 0 && ok;
  };
  bool written = write(key_file, key_pem) && write(ca_file, ca_pem);
  for (std::size_t kind = 0; kind < certificate_kinds; ++kind)
    written = written && write(certificate_files[kind], certificate_texts[kind]);
  fixed_contexts made;
  std::string error = written ? "" : "cannot write the fixture's files";
  if (written) {
    const auto tickets = std::make_shared<tls::ticket_key_ring>();
    for (std::size_t kind = 0; kind < certificate_kinds; ++kind) {
      tls::server_settings settings;
      settings.certificates.push_back({certificate_files[kind], key_file});
      auto server = tls::load_server_context(settings, tickets);
      made.server[kind] = server.context;
      if (server.context == nullptr) error = server.error;
    }
    tls::client_settings trust;
    trust.ca_file = ca_file;
    auto client = tls::load_client_context(trust);
    made.client = client.context;
    if (client.context == nullptr) error = client.error;
  }
  for (const auto& file : certificate_files) ::unlink(file.c_str());
  ::unlink(key_file.c_str());
  ::unlink(ca_file.c_str());
  ::rmdir(directory);
  if (!error.empty()) fixture_broken("the simulated TLS contexts", error);
  return made;
}

const fixed_contexts& contexts() {
  static const fixed_contexts made = load_fixed_contexts();
  return made;
}

}  // namespace

std::string_view describe(certificate presented) noexcept {
  switch (presented) {
    case certificate::self_signed: return "a self-signed certificate";
    case certificate::good: return "a good certificate";
    case certificate::wrong_name: return "a certificate for another name";
    case certificate::expired: return "an expired certificate";
    case certificate::expiring: return "a certificate that expires at 90 s";
  }
  return "?";
}

void seed_openssl(std::uint64_t seed) {
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
  RAND_set_rand_method(&seeded_method);
#pragma GCC diagnostic pop
  // The contexts draw random numbers (ticket keys) once per process: always from the stream's
  // start, so a seed replayed alone and the same seed in the middle of a search agree.
  if (g_rand_state == 0) (void)contexts();
  g_rand_state = seed ^ 0x5eed0f7e15ull;
}

std::shared_ptr<const tls::server_context> simulated_server_context(certificate presented) {
  return contexts().server[static_cast<std::size_t>(presented)];
}

std::shared_ptr<const tls::client_context> simulated_client_context() {
  return contexts().client;
}

bool server_tls_pipe::feed(std::string_view bytes, std::string& out) {
  if (_tls != nullptr) return feed_ciphertext(bytes, out);
  std::string_view rest = bytes;
  for (int guard = 0; !rest.empty() && guard < 10000; ++guard) {
    rest.remove_prefix(_engine.feed(rest));
    flush(out);
    if (_engine.wants_close()) return true;
    if (_engine.awaiting_tls()) {
      // RFC 3207 §4: after the 220 the next octets are the ClientHello. Whatever the engine
      // was given behind STARTTLS it discarded (CVE-2011-0411); the rest here is TLS.
      if (_broken) {
        out.append("\x15\x03\x03\x00\x02\x02\x28");  // a handshake_failure alert record
        return false;
      }
      _tls = tls::session::accept(simulated_server_context(_presented));
      if (_tls == nullptr) return false;
      return rest.empty() || feed_ciphertext(rest, out);
    }
  }
  return true;
}

bool server_tls_pipe::feed_ciphertext(std::string_view bytes, std::string& out) {
  std::string_view rest = bytes;
  for (int guard = 0; guard < 10000; ++guard) {
    const std::size_t taken = _tls->feed(rest);
    rest.remove_prefix(taken);
    if (_tls->handshake_completed() && _engine.awaiting_tls()) _engine.tls_established();
    std::string_view plain = _tls->plaintext();
    if (!plain.empty()) {
      const std::size_t used = _engine.feed(plain);
      _tls->consume_plaintext(used);
    }
    flush(out);
    const std::string_view cipher = _tls->ciphertext();
    out.append(cipher);
    _tls->consume_ciphertext(cipher.size());
    if (_tls->state() == tls::state::failed || _tls->state() == tls::state::closed) return false;
    if (_engine.wants_close()) return true;
    if (taken == 0 && _tls->plaintext().empty()) break;
  }
  return true;
}

void server_tls_pipe::flush(std::string& out) {
  std::string_view output = _engine.output();
  if (output.empty()) return;
  if (_tls == nullptr || !_tls->established()) {
    out.append(output);  // plaintext SMTP (or the 220 to STARTTLS itself)
    _engine.consume_output(output.size());
    return;
  }
  _engine.consume_output(encrypt(*_tls, output, out));
}

std::size_t encrypt(tls::session& session, std::string_view plain, std::string& out) {
  std::size_t taken_all = 0;
  while (taken_all < plain.size() && session.established()) {
    const std::size_t taken = session.write(plain.substr(taken_all));
    taken_all += taken;
    const std::string_view cipher = session.ciphertext();
    out.append(cipher);
    session.consume_ciphertext(cipher.size());
    if (taken == 0 && cipher.empty()) break;  // nothing moves: the session is gone
  }
  return taken_all;
}

}  // namespace ringmta::sim
