// tls::session pairs talking in memory: handshakes with both key types, random splits of the
// byte streams, resumption with the ticket key ring and the client cache, verification
// failures, the version floor, flow control and start-up errors.
#include <gtest/gtest.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <unistd.h>

#include <cstdlib>
#include <ctime>
#include <fstream>
#include <random>
#include <string>

#include "ringmta/tls/context.h"
#include "ringmta/tls/session.h"
#include "tls_test_pki.h"

namespace ringmta::tls {
namespace {

const testing::test_pki& pki() {
  static const testing::test_pki made = [] {
    char pattern[] = "/tmp/ringmta-tls-test-XXXXXX";
    return testing::make_test_pki(::mkdtemp(pattern));
  }();
  return made;
}

std::shared_ptr<const server_context> server(version floor = version::tls1_2,
                                             std::shared_ptr<ticket_key_ring> keys = nullptr) {
  server_settings settings;
  settings.certificates = {{pki().ecdsa_cert, pki().ecdsa_key}, {pki().rsa_cert, pki().rsa_key}};
  settings.min_version = floor;
  auto loaded = load_server_context(settings, std::move(keys));
  EXPECT_EQ(loaded.error, "");
  return loaded.context;
}

std::shared_ptr<const client_context> client(const std::string& ca) {
  client_settings settings;
  settings.ca_file = ca;
  auto loaded = load_client_context(settings);
  EXPECT_EQ(loaded.error, "");
  return loaded.context;
}

// Moves ciphertext between two sessions in random pieces; plaintext goes into `received_*`.
struct wire {
  session& a;
  session& b;
  std::mt19937 random{42};
  std::string a_to_b, b_to_a;  // in flight
  std::string at_a, at_b;      // plaintext delivered

  std::size_t piece(std::size_t available) {
    if (available == 0) return 0;
    std::uniform_int_distribution<std::size_t> d(1, std::min<std::size_t>(available, 700));
    return d(random);
  }
  bool move(session& from, std::string& in_flight, session& to, std::string& delivered) {
    bool progress = false;
    if (const auto out = from.ciphertext(); !out.empty()) {
      const std::size_t n = piece(out.size());
      in_flight.append(out.substr(0, n));
      from.consume_ciphertext(n);
      progress = true;
    }
    const std::size_t n = piece(in_flight.size());
    const std::size_t taken = to.feed(std::string_view(in_flight).substr(0, n));
    in_flight.erase(0, taken);
    progress |= taken > 0 || !to.plaintext().empty();
    delivered.append(to.plaintext());
    to.consume_plaintext(to.plaintext().size());
    return progress;
  }
  // Runs until nothing moves any more (bounded).
  void run() {
    for (int idle = 0, rounds = 0; idle < 50 && rounds < 200000; ++rounds) {
      const bool p = move(a, a_to_b, b, at_b) | move(b, b_to_a, a, at_a);
      idle = p ? 0 : idle + 1;
    }
  }
};

TEST(tls_session, handshake_and_data_with_random_splits) {
  auto s = session::accept(server());
  client_options options;
  options.host = "mx.test.example";
  options.verify = true;
  auto c = session::connect(client(pki().ca_cert), options);
  ASSERT_TRUE(s && c);
  EXPECT_FALSE(c->ciphertext().empty());  // the ClientHello
  wire w{*c, *s};
  w.run();
  ASSERT_EQ(c->state(), state::established) << c->error_detail();
  ASSERT_EQ(s->state(), state::established) << s->error_detail();
  EXPECT_EQ(s->protocol(), "TLSv1.3");
  EXPECT_EQ(s->cipher(), "TLS_AES_256_GCM_SHA384");
  EXPECT_EQ(s->cipher_bits(), 256);
  EXPECT_TRUE(c->peer_verified());
  EXPECT_FALSE(s->peer_certificate());
  std::string big;
  for (int i = 0; i < 5000; ++i) big += "line " + std::to_string(i) + " of the message\r\n";
  std::string_view rest = big;  // > 100 KiB: several records, write() takes it in pieces
  std::string reply = "250 2.0.0 Ok\r\n";
  while (!rest.empty()) {
    rest.remove_prefix(c->write(rest));
    w.run();
  }
  EXPECT_EQ(s->write(reply), reply.size());
  w.run();
  EXPECT_EQ(w.at_b, big);
  EXPECT_EQ(w.at_a, reply);
  c->close();
  w.run();
  EXPECT_EQ(s->state(), state::closed);
}

TEST(tls_session, certificate_chosen_by_signature_algorithms) {
  for (const char* sigalgs : {"rsa_pss_rsae_sha256:RSA+SHA256", "ECDSA+SHA256"}) {
    const bool rsa = std::string(sigalgs).find("rsa") == 0;
    for (const int max : {TLS1_2_VERSION, TLS1_3_VERSION}) {
      auto ctx = client(pki().ca_cert);
      SSL_CTX_set1_sigalgs_list(ctx->native(), sigalgs);
      SSL_CTX_set_max_proto_version(ctx->native(), max);
      auto s = session::accept(server());
      client_options options;
      options.host = "mx.test.example";
      options.verify = true;
      auto c = session::connect(ctx, options);
      wire w{*c, *s};
      w.run();
      ASSERT_EQ(c->state(), state::established) << sigalgs << " " << c->error_detail();
      EXPECT_EQ(c->protocol(), max == TLS1_2_VERSION ? "TLSv1.2" : "TLSv1.3");
      X509* cert = SSL_get0_peer_certificate(c->native());
      ASSERT_NE(cert, nullptr);
      EXPECT_EQ(EVP_PKEY_get_base_id(X509_get0_pubkey(cert)), rsa ? EVP_PKEY_RSA : EVP_PKEY_EC)
          << sigalgs;
    }
  }
}

// One client handshake to "mx.test.example" through `cache` (now_s: the caller's clock, 0:
// none), with a first reply exchanged once established (TLS 1.3 tickets arrive with the first
// data): how the client's side ended, and whether it resumed.
struct handshake_outcome {
  state end = state::handshake;
  bool resumed = false;
};
handshake_outcome handshake_through(const std::shared_ptr<const server_context>& context,
                                    const std::shared_ptr<const client_context>& ctx,
                                    client_session_cache& cache, std::int64_t now_s,
                                    bool verify) {
  auto s = session::accept(context);
  client_options options;
  options.host = "mx.test.example";
  options.verify = verify;
  options.cache = &cache;
  options.now_s = now_s;
  auto c = session::connect(ctx, options);
  wire w{*c, *s};
  w.run();
  if (c->state() == state::established) {
    s->write("220 hello\r\n");
    w.run();
  }
  return {c->state(), c->resumed()};
}

// The same without verification, which must succeed: whether the client resumed.
bool resumes_through(const std::shared_ptr<const server_context>& context,
                     const std::shared_ptr<const client_context>& ctx,
                     client_session_cache& cache, std::int64_t now_s = 0) {
  const handshake_outcome outcome = handshake_through(context, ctx, cache, now_s, false);
  EXPECT_EQ(outcome.end, state::established);
  return outcome.resumed;
}

TEST(tls_session, resumption_with_tickets_and_client_cache) {
  auto keys = std::make_shared<ticket_key_ring>(3600);
  auto context = server(version::tls1_2, keys);
  auto ctx = client(pki().ca_cert);
  client_session_cache cache;
  auto connect_once = [&](bool& resumed_server, bool& resumed_client) {
    auto s = session::accept(context);
    client_options options;
    options.host = "mx.test.example";
    options.cache = &cache;
    auto c = session::connect(ctx, options);
    wire w{*c, *s};
    w.run();
    ASSERT_EQ(c->state(), state::established);
    // TLS 1.3 tickets come after the handshake: they arrive with the first data exchanged.
    s->write("220 hello\r\n");
    w.run();
    resumed_server = s->resumed();
    resumed_client = c->resumed();
  };
  bool server_side = true, client_side = true;
  connect_once(server_side, client_side);
  EXPECT_FALSE(server_side);
  EXPECT_EQ(cache.size(), 1u);
  connect_once(server_side, client_side);
  EXPECT_TRUE(server_side);
  EXPECT_TRUE(client_side);
  // A reload keeps the key ring: tickets from the old context resume with the new one.
  context = server(version::tls1_2, keys);
  connect_once(server_side, client_side);
  EXPECT_TRUE(server_side);
  // A new ring (another process) cannot read the ticket: a full handshake, no failure.
  context = server(version::tls1_2, std::make_shared<ticket_key_ring>(3600));
  connect_once(server_side, client_side);
  EXPECT_FALSE(server_side);
}

// The cache's expiry runs on the caller's clock (a shard's, or a simulated one), whatever
// time OpenSSL stamped into the session: a session stored at the caller's t resumes at
// t + 10 s and is gone once its timeout has passed on that clock. (It compared OpenSSL's stamp
// with the caller's clock: in the simulation, years apart, no session ever resumed.) The
// caller's clock is 20 days ahead: beyond the 7-day timeout from OpenSSL's stamp, within the
// test certificate's 30 days (no session resumes past its certificate's end).
TEST(tls_session, client_cache_expiry_follows_the_callers_clock) {
  auto keys = std::make_shared<ticket_key_ring>(3600);
  auto context = server(version::tls1_2, keys);
  auto ctx = client(pki().ca_cert);
  client_session_cache cache;
  const std::int64_t simulated_s = static_cast<std::int64_t>(::time(nullptr)) + 20 * 86400;
  auto resumes_at = [&](std::int64_t now_s) {
    return resumes_through(context, ctx, cache, now_s);
  };
  EXPECT_FALSE(resumes_at(simulated_s));
  ASSERT_EQ(cache.size(), 1u);
  EXPECT_TRUE(resumes_at(simulated_s + 10));
  // Each handshake stored a fresh session (tickets are single use in TLS 1.3); its timeout
  // counts from when it was stored, on the same clock.
  EXPECT_EQ(cache.find("mx.test.example", simulated_s + 20 + 7 * 24 * 3600), nullptr);
  EXPECT_EQ(cache.size(), 0u);
}

// A session verified before the server's certificate ended is not resumed after the end: a
// resumption shows no certificate, so the client would go on trusting one it must refuse now
// (ringmta-sim: an MTA's certificate that expires during the run). A full handshake then
// fails verification, as a new connection's would.
TEST(tls_session, no_resumption_past_the_certificates_end) {
  auto keys = std::make_shared<ticket_key_ring>(3600);
  auto context = server(version::tls1_2, keys);
  auto ctx = client(pki().ca_cert);
  client_session_cache cache;
  std::int64_t not_after = 0;
  {
    std::FILE* f = std::fopen(pki().ecdsa_cert.c_str(), "r");
    ASSERT_NE(f, nullptr);
    X509* cert = PEM_read_X509(f, nullptr, nullptr, nullptr);
    std::fclose(f);
    ASSERT_NE(cert, nullptr);
    std::tm end{};
    ASSERT_EQ(ASN1_TIME_to_tm(X509_get0_notAfter(cert), &end), 1);
    X509_free(cert);
    not_after = static_cast<std::int64_t>(timegm(&end));
  }
  auto connect_at = [&](std::int64_t now_s, bool& resumed) {
    const handshake_outcome outcome = handshake_through(context, ctx, cache, now_s, true);
    resumed = outcome.resumed;
    return outcome.end;
  };
  bool resumed = true;
  EXPECT_EQ(connect_at(not_after - 120, resumed), state::established);
  EXPECT_FALSE(resumed);
  EXPECT_EQ(connect_at(not_after - 60, resumed), state::established);
  EXPECT_TRUE(resumed);  // before the end: resumed as usual
  EXPECT_EQ(connect_at(not_after + 60, resumed), state::failed);
  EXPECT_FALSE(resumed);
}

// A reload's new trust store empties the cache (outbound::set_tls_context): no session
// verified under the old one resumes unchecked.
TEST(tls_session, client_cache_clear_forgets_every_session) {
  auto keys = std::make_shared<ticket_key_ring>(3600);
  auto context = server(version::tls1_2, keys);
  auto ctx = client(pki().ca_cert);
  client_session_cache cache;
  auto resumes = [&] { return resumes_through(context, ctx, cache); };
  EXPECT_FALSE(resumes());
  EXPECT_TRUE(resumes());
  ASSERT_EQ(cache.size(), 1u);
  cache.clear();
  EXPECT_EQ(cache.size(), 0u);
  EXPECT_EQ(cache.find("mx.test.example", 0), nullptr);
  EXPECT_FALSE(resumes());
}

TEST(ticket_key_ring, keys_rotate_and_expire) {
  ticket_key_ring ring(100);
  EXPECT_TRUE(ring.rotate_if_due(1000));
  EXPECT_FALSE(ring.rotate_if_due(1050));  // not due
  ticket_key_ring::key first{}, found{};
  ASSERT_TRUE(ring.current(1050, first));
  bool renew = true;
  EXPECT_TRUE(ring.find(first.name.data(), 1050, found, renew));
  EXPECT_FALSE(renew);
  EXPECT_TRUE(ring.rotate_if_due(1100));
  ticket_key_ring::key second{};
  ASSERT_TRUE(ring.current(1100, second));
  EXPECT_NE(first.name, second.name);
  EXPECT_TRUE(ring.find(first.name.data(), 1150, found, renew));  // previous: still decrypts
  EXPECT_TRUE(renew);
  EXPECT_FALSE(ring.find(first.name.data(), 1200, found, renew));  // two periods old: gone
  EXPECT_TRUE(ring.rotate_if_due(1200));
  EXPECT_TRUE(ring.rotate_if_due(1300));
  EXPECT_FALSE(ring.find(first.name.data(), 1300, found, renew));  // erased
  EXPECT_EQ(ring.rotations(), 4u);
}

TEST(tls_session, untrusted_chain_and_wrong_host_fail_verification) {
  struct verify_case {
    std::string ca;
    const char* host;
  };
  for (const verify_case& v : {verify_case{pki().other_ca_cert, "mx.test.example"},
                               verify_case{pki().ca_cert, "wrong.example"}}) {
    auto s = session::accept(server());
    client_options options;
    options.host = v.host;
    options.verify = true;
    auto c = session::connect(client(v.ca), options);
    wire w{*c, *s};
    w.run();
    EXPECT_EQ(c->state(), state::failed);
    EXPECT_EQ(c->error(), failure::certificate) << c->error_detail();
    EXPECT_EQ(s->state(), state::failed);  // the client's alert
    EXPECT_EQ(s->error(), failure::certificate) << s->error_detail();
  }
  // Without `verify` the same handshake succeeds and says the peer is not verified.
  auto s = session::accept(server());
  client_options options;
  options.host = "wrong.example";
  auto c = session::connect(client(pki().ca_cert), options);
  wire w{*c, *s};
  w.run();
  EXPECT_EQ(c->state(), state::established);
  EXPECT_FALSE(c->peer_verified());
}

// Validity is checked at client_options::now_s (the shard's clock), not at OpenSSL's reading
// of the machine's: the test certificates are valid from an hour ago for 30 days.
TEST(tls_session, certificate_validity_is_checked_at_the_time_given) {
  const std::int64_t now = static_cast<std::int64_t>(::time(nullptr));
  struct time_case {
    std::int64_t now_s;
    bool verifies;
  };
  for (const time_case& t : {time_case{now, true}, time_case{now + 31 * 86400, false},
                             time_case{now - 2 * 86400, false}, time_case{0, true}}) {
    auto s = session::accept(server());
    client_options options;
    options.host = "mx.test.example";
    options.verify = true;
    options.now_s = t.now_s;
    auto c = session::connect(client(pki().ca_cert), options);
    wire w{*c, *s};
    w.run();
    if (t.verifies) {
      EXPECT_EQ(c->state(), state::established) << t.now_s << ": " << c->error_detail();
      EXPECT_TRUE(c->peer_verified());
    } else {
      EXPECT_EQ(c->state(), state::failed) << t.now_s;
      EXPECT_EQ(c->error(), failure::certificate) << c->error_detail();
    }
  }
}

TEST(tls_session, version_floor) {
  auto s = session::accept(server(version::tls1_3));
  auto ctx = client(pki().ca_cert);
  SSL_CTX_set_max_proto_version(ctx->native(), TLS1_2_VERSION);
  client_options options;
  options.host = "mx.test.example";
  auto c = session::connect(ctx, options);
  wire w{*c, *s};
  w.run();
  EXPECT_EQ(s->state(), state::failed);
  EXPECT_EQ(s->error(), failure::version) << s->error_detail();
  EXPECT_EQ(c->error(), failure::version) << c->error_detail();
}

TEST(tls_session, plaintext_and_garbage_fail_as_protocol_errors) {
  for (std::string_view input : {std::string_view("EHLO client.example\r\n"),
                                 std::string_view("\x16\x03\x01\x00\x05garbage", 13)}) {
    auto s = session::accept(server());
    EXPECT_EQ(s->feed(input), input.size());
    EXPECT_EQ(s->state(), state::failed);
    EXPECT_EQ(s->error(), failure::protocol) << s->error_detail();
  }
  auto s = session::accept(server());
  s->end_of_input();
  EXPECT_EQ(s->error(), failure::truncated);
}

TEST(tls_session, feed_stops_while_plaintext_is_not_taken) {
  auto s = session::accept(server());
  client_options options;
  options.host = "mx.test.example";
  auto c = session::connect(client(pki().ca_cert), options);
  wire w{*c, *s};
  w.run();
  ASSERT_TRUE(s->established());
  std::string stream;
  const std::string data(60000, 'x');
  for (std::string_view rest = data; !rest.empty();) {
    rest.remove_prefix(c->write(rest));
    stream.append(c->ciphertext());
    c->consume_ciphertext(c->ciphertext().size());
  }
  const std::size_t taken = s->feed(stream);
  EXPECT_LT(taken, stream.size());  // staging full: the rest stays with the embedder
  EXPECT_EQ(s->plaintext().size(), session::plaintext_capacity);
  std::string received;
  std::string_view rest = std::string_view(stream).substr(taken);
  for (int i = 0; i < 100 && received.size() < data.size(); ++i) {
    received.append(s->plaintext());
    s->consume_plaintext(s->plaintext().size());
    rest.remove_prefix(s->feed(rest));
  }
  EXPECT_EQ(received, data);
  s->trim();  // idle: the staging buffers go
  EXPECT_TRUE(s->plaintext().empty());
}

TEST(tls_context, startup_errors_name_the_file) {
  const std::string dir = pki().directory;
  const auto error_of = [](const certificate_pair& pair) {
    server_settings settings;
    settings.certificates = {pair};
    return load_server_context(settings, nullptr).error;
  };
  EXPECT_NE(error_of({dir + "/missing.pem", pki().ecdsa_key}).find("missing.pem: cannot read"),
            std::string::npos);
  EXPECT_NE(error_of({pki().ecdsa_cert, pki().ecdsa_cert}).find("not a PEM private key"),
            std::string::npos);
  EXPECT_NE(error_of({pki().ecdsa_key, pki().ecdsa_key}).find("not a PEM certificate"),
            std::string::npos);
  EXPECT_NE(error_of({pki().rsa_cert, pki().ecdsa_key}).find("does not match"),
            std::string::npos);
  server_settings two_ecdsa;
  two_ecdsa.certificates = {{pki().ecdsa_cert, pki().ecdsa_key},
                            {pki().ecdsa_cert, pki().ecdsa_key}};
  EXPECT_NE(load_server_context(two_ecdsa, nullptr).error.find("second"), std::string::npos);
  server_settings ciphers;
  ciphers.certificates = {{pki().ecdsa_cert, pki().ecdsa_key}};
  ciphers.ciphers = "NO-SUCH-CIPHER";
  EXPECT_NE(load_server_context(ciphers, nullptr).error.find("NO-SUCH-CIPHER"),
            std::string::npos);
  auto loaded = load_server_context(
      server_settings{{{pki().ecdsa_cert, pki().ecdsa_key}, {pki().rsa_cert, pki().rsa_key}}},
      nullptr);
  EXPECT_EQ(loaded.context->description(), "ECDSA prime256v1 + RSA 2048");
}

// The system store is read from its bundle file when the context is made (never from the
// hashed directory during a handshake): pointing SSL_CERT_FILE at our test CA makes exactly it
// trusted, and a missing bundle is a start-up error naming it.
TEST(tls_context, system_store_is_the_bundle_file_loaded_at_start) {
  const char* saved = std::getenv("SSL_CERT_FILE");
  const std::string previous = saved != nullptr ? saved : "";
  ::setenv("SSL_CERT_FILE", pki().ca_cert.c_str(), 1);
  const auto trusting = load_client_context(client_settings{});
  ::setenv("SSL_CERT_FILE", (pki().directory + "/no-bundle.pem").c_str(), 1);
  const auto missing = load_client_context(client_settings{});
  client_settings optional;
  optional.ca_required = false;
  const auto without_anchors = load_client_context(optional);
  if (saved != nullptr) ::setenv("SSL_CERT_FILE", previous.c_str(), 1);
  else ::unsetenv("SSL_CERT_FILE");
  EXPECT_EQ(missing.context, nullptr);
  EXPECT_NE(missing.error.find("system CA store: " + pki().directory + "/no-bundle.pem"),
            std::string::npos) << missing.error;
  EXPECT_NE(without_anchors.context, nullptr) << "opportunistic TLS needs no trust anchors";
  ASSERT_NE(trusting.context, nullptr) << trusting.error;
  auto s = session::accept(server());
  client_options options;
  options.host = "mx.test.example";
  options.verify = true;
  auto c = session::connect(trusting.context, options);
  wire w{*c, *s};
  w.run();
  EXPECT_EQ(c->state(), state::established) << c->error_detail();
  EXPECT_TRUE(c->peer_verified());
}

}  // namespace
}  // namespace ringmta::tls
