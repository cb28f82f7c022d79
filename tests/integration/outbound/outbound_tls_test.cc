// Outbound STARTTLS (RFC 3207) against the scripted Python sink with a certificate from a
// throwaway CA made at test time: each policy (opportunistic, required, verify) against servers
// that do TLS, refuse it, do not offer it, break the handshake or stall it; response injection
// after the 220; resumption from the per-shard cache; bodies of every path byte-exact over TLS.
#include <gtest/gtest.h>

#include <cstdlib>

#include "harness.h"
#include "tls_test_pki.h"

namespace ringmta::outbound::test {
namespace {

using kind = record::kind;
using smtp::client_outcome;

const testing::test_pki& pki() {
  static const testing::test_pki made = [] {
    char pattern[] = "/tmp/ringmta-outbound-tls-XXXXXX";
    return testing::make_test_pki(::mkdtemp(pattern), "mx.tls.test");
  }();
  return made;
}

std::shared_ptr<const tls::client_context> client_context(const std::string& ca) {
  tls::client_settings settings;
  settings.ca_file = ca;
  auto loaded = tls::load_client_context(settings);
  if (!loaded.context) std::abort();
  return loaded.context;
}

outbound_config tls_config(const std::string& ca = pki().ca_cert) {
  outbound_config config;
  config.helo_name = "client.test";
  config.timeout_connect_ms = 3000;
  config.timeout_greeting_ms = 10'000;
  config.timeout_hello_ms = 10'000;
  config.timeout_mail_ms = 10'000;
  config.timeout_rcpt_ms = 10'000;
  config.timeout_data_init_ms = 10'000;
  config.timeout_data_block_ms = 10'000;
  config.timeout_data_end_ms = 10'000;
  config.timeout_quit_ms = 5000;
  config.idle_timeout_ms = 1000;
  config.receive_buffer_count = 64;
  config.transfers_max = 4;
  config.tls_context = client_context(ca);
  return config;
}

std::vector<std::string> tls_flags(std::vector<std::string> more = {}) {
  std::vector<std::string> flags = {"--tls-cert", pki().ecdsa_cert, "--tls-key", pki().ecdsa_key};
  flags.insert(flags.end(), more.begin(), more.end());
  return flags;
}

route to(const char* address, std::uint16_t port, tls_policy policy) {
  return route{route_kind::host, address, port, policy};
}

std::string enhanced_of(const record& r) {
  return std::to_string(r.enhanced.status_class) + "." + std::to_string(r.enhanced.subject) +
         "." + std::to_string(r.enhanced.detail);
}

// ---- TLS delivered

TEST(outbound_tls, opportunistic_starttls_carries_every_body_path_byte_exact) {
  scripted_sink sink;
  ASSERT_TRUE(sink.start({"127.0.0.1"}, tls_flags()));
  harness h({1, tls_config(), {}});
  ASSERT_TRUE(h.started());
  test_spool spool;
  // Staged (one read, one TLS write), empty, and large bodies (read and encrypted in pieces:
  // no splice over TLS), one of them over several ring reads of the transfer buffer.
  const std::size_t sizes[] = {1000, 0, 70 * 1024, 3 * 1024 * 1024 + 17, 60 * 1024};
  std::vector<const delivery*> jobs;
  for (std::uint32_t i = 0; i < std::size(sizes); ++i) {
    const std::string text = sizes[i] == 0 ? std::string() : make_message(sizes[i], i);
    jobs.push_back(&spool.add(text, {"user" + std::to_string(i) + "@example.net"},
                              spool::body_type::seven_bit, 100 + i).job);
  }
  h.deliver(0, 1, to("127.0.0.1", sink.port(), tls_policy::opportunistic), jobs);
  ASSERT_TRUE(h.log.wait_for(1, kind::closed, 1));
  const auto deliveries = h.log.of(1, kind::delivery);
  ASSERT_EQ(deliveries.size(), std::size(sizes));
  for (std::uint32_t i = 0; i < std::size(sizes); ++i) {
    EXPECT_EQ(deliveries[i].outcome, client_outcome::accepted) << deliveries[i].text;
    EXPECT_EQ(deliveries[i].tls, tls_mode::encrypted);
    EXPECT_EQ(deliveries[i].tls_protocol, "TLSv1.3");
    // The certificate names 127.0.0.1 and chains to the CA: verified, though not demanded.
    EXPECT_TRUE(deliveries[i].tls_verified);
    const std::string expected = sizes[i] == 0 ? std::string() : make_message(sizes[i], i);
    EXPECT_TRUE(sink.body(i + 1) == expected) << "message " << i << " differs";
    EXPECT_EQ(sink.record(i + 1)["tls"][0], "TLSv1.3") << "message " << i;
  }
  EXPECT_EQ(sink.count("starttls"), 1u);
  EXPECT_EQ(sink.count("handshakes"), 1u);
  EXPECT_EQ(sink.count("ehlo"), 2u);  // RFC 3207 §4.2: EHLO again after the handshake
  EXPECT_EQ(sink.count("quits"), 1u);
  const auto counters = h.counters(0);
  EXPECT_EQ(counters.tls_handshakes, 1u);
  EXPECT_EQ(counters.tls_verified, 1u);
  EXPECT_EQ(counters.bodies_staged, 3u);
  EXPECT_EQ(counters.bodies_encrypted, 2u);
  EXPECT_EQ(counters.bodies_spliced, 0u);
}

TEST(outbound_tls, the_next_connection_resumes_from_the_shard_cache) {
  scripted_sink sink;
  ASSERT_TRUE(sink.start({"127.0.0.1"}, tls_flags()));
  harness h({1, tls_config(), {}});
  ASSERT_TRUE(h.started());
  test_spool spool;
  for (std::uint64_t destination = 1; destination <= 3; ++destination) {
    const auto& message = spool.add(make_message(500, 1), {"a@example.net"});
    h.deliver(0, destination, to("127.0.0.1", sink.port(), tls_policy::verify), {&message.job});
    ASSERT_TRUE(h.log.wait_for(destination, kind::closed, 1));
    const auto done = h.log.of(destination, kind::delivery);
    ASSERT_EQ(done.size(), 1u);
    EXPECT_EQ(done[0].outcome, client_outcome::accepted) << done[0].text;
    EXPECT_EQ(done[0].tls, tls_mode::encrypted);
    EXPECT_TRUE(done[0].tls_verified);
    EXPECT_EQ(done[0].tls_resumed, destination > 1) << destination;
  }
  EXPECT_EQ(sink.count("handshakes"), 3u);
  EXPECT_EQ(sink.count("resumed"), 2u);
  EXPECT_EQ(h.counters(0).tls_resumed, 2u);
}

// ---- response injection (RFC 3207 §5 mirrored)

TEST(outbound_tls, plaintext_after_the_220_is_discarded_and_ehlo_said_again) {
  scripted_sink sink;
  // Believed, the injected lines would answer the EHLO said after the handshake (the real
  // reply would then be unsolicited: a failed session) and claim PIPELINING, which this
  // server does not offer (pipelined commands would show as early ones).
  ASSERT_TRUE(sink.start({"127.0.0.1"},
                         tls_flags({"--no-pipelining", "--tls-inject",
                                    "250-injected\r\n250 PIPELINING"})));
  harness h({1, tls_config(), {}});
  ASSERT_TRUE(h.started());
  test_spool spool;
  const std::string text = make_message(2000, 3);
  h.deliver(0, 1, to("127.0.0.1", sink.port(), tls_policy::required),
            {&spool.add(text, {"a@example.net"}).job});
  ASSERT_TRUE(h.log.wait_for(1, kind::closed, 1));
  const auto done = h.log.of(1, kind::delivery);
  ASSERT_EQ(done.size(), 1u);
  EXPECT_EQ(done[0].outcome, client_outcome::accepted) << done[0].text;
  EXPECT_EQ(done[0].tls, tls_mode::encrypted);
  EXPECT_TRUE(sink.body(1) == text);
  EXPECT_EQ(sink.count("ehlo"), 2u);
  EXPECT_EQ(sink.count("early_commands"), 0u);
  EXPECT_EQ(h.counters(0).tls_injections, 1u);
}

// ---- failures under each policy

TEST(outbound_tls, verify_fails_a_certificate_for_another_name_and_sends_nothing) {
  scripted_sink sink;
  // The certificate names mx.tls.test, localhost and 127.0.0.1, not 127.0.0.2.
  ASSERT_TRUE(sink.start({"127.0.0.2"}, tls_flags()));
  harness h({1, tls_config(), {}});
  ASSERT_TRUE(h.started());
  test_spool spool;
  h.deliver(0, 1, to("127.0.0.2", sink.port(), tls_policy::verify),
            {&spool.add(make_message(500, 1), {"a@example.net"}).job});
  ASSERT_TRUE(h.log.wait_for(1, kind::closed, 1));
  const auto closed = h.log.of(1, kind::closed);
  EXPECT_EQ(closed[0].reason, close_reason::destination_failed);
  EXPECT_EQ(closed[0].outcome, client_outcome::transient_failure);
  EXPECT_EQ(closed[0].code, 451);
  EXPECT_EQ(enhanced_of(closed[0]), "4.7.5");
  EXPECT_NE(closed[0].text.find("certificate of 127.0.0.2 not verified: IP address mismatch"),
            std::string::npos) << closed[0].text;
  EXPECT_EQ(sink.count("mail"), 0u);
  EXPECT_EQ(sink.connections("127.0.0.2"), 1u);  // no plaintext retry under verify
  EXPECT_EQ(h.counters(0).tls_failures[static_cast<std::size_t>(tls::failure::certificate)], 1u);
}

TEST(outbound_tls, verify_fails_an_untrusted_chain) {
  scripted_sink sink;
  ASSERT_TRUE(sink.start({"127.0.0.1"}, tls_flags()));
  harness h({1, tls_config(pki().other_ca_cert), {}});
  ASSERT_TRUE(h.started());
  test_spool spool;
  h.deliver(0, 1, to("127.0.0.1", sink.port(), tls_policy::verify),
            {&spool.add(make_message(500, 1), {"a@example.net"}).job});
  ASSERT_TRUE(h.log.wait_for(1, kind::closed, 1));
  const auto closed = h.log.of(1, kind::closed);
  EXPECT_EQ(closed[0].outcome, client_outcome::transient_failure);
  EXPECT_EQ(enhanced_of(closed[0]), "4.7.5");
  EXPECT_NE(closed[0].text.find("unable to get local issuer certificate"), std::string::npos)
      << closed[0].text;
  EXPECT_EQ(sink.count("mail"), 0u);
}

TEST(outbound_tls, required_never_sends_in_plaintext) {
  // Not offered; refused with 454; offered but the handshake breaks: each a 4.7.x failure of
  // that server, and no MAIL ever reaches it.
  struct variant {
    std::vector<std::string> flags;
    const char* enhanced;
    const char* text;
  };
  const variant variants[] = {
      {{}, "4.7.4", "TLS is required, but STARTTLS was not offered"},
      {tls_flags({"--tls-reply", "454 4.7.0 TLS not available now"}), "4.7.0",
       "said to STARTTLS: 454 TLS not available now"},
      {tls_flags({"--tls-broken"}), "4.7.5", "TLS handshake failed (protocol)"},
  };
  for (const auto& v : variants) {
    scripted_sink sink;
    ASSERT_TRUE(sink.start({"127.0.0.1"}, v.flags));
    harness h({1, tls_config(), {}});
    ASSERT_TRUE(h.started());
    test_spool spool;
    h.deliver(0, 1, to("127.0.0.1", sink.port(), tls_policy::required),
              {&spool.add(make_message(500, 1), {"a@example.net"}).job});
    ASSERT_TRUE(h.log.wait_for(1, kind::closed, 1));
    const auto closed = h.log.of(1, kind::closed);
    EXPECT_EQ(closed[0].reason, close_reason::destination_failed) << v.text;
    EXPECT_EQ(closed[0].outcome, client_outcome::transient_failure) << v.text;
    EXPECT_EQ(closed[0].code, 451) << v.text;
    EXPECT_EQ(enhanced_of(closed[0]), v.enhanced) << closed[0].text;
    EXPECT_NE(closed[0].text.find(v.text), std::string::npos) << closed[0].text;
    EXPECT_EQ(sink.count("mail"), 0u) << v.text;
    EXPECT_EQ(sink.connections("127.0.0.1"), 1u) << v.text;
  }
}

TEST(outbound_tls, a_stalled_handshake_times_out) {
  scripted_sink sink;
  ASSERT_TRUE(sink.start({"127.0.0.1"}, tls_flags({"--tls-silent"})));
  auto config = tls_config();
  config.timeout_hello_ms = 500;
  harness h({1, config, {}});
  ASSERT_TRUE(h.started());
  test_spool spool;
  h.deliver(0, 1, to("127.0.0.1", sink.port(), tls_policy::required),
            {&spool.add(make_message(500, 1), {"a@example.net"}).job});
  ASSERT_TRUE(h.log.wait_for(1, kind::closed, 1));
  const auto closed = h.log.of(1, kind::closed);
  EXPECT_EQ(closed[0].outcome, client_outcome::transient_failure);
  EXPECT_NE(closed[0].text.find("TLS handshake timed out"), std::string::npos) << closed[0].text;
  EXPECT_EQ(h.counters(0).tls_timeouts, 1u);
}

// ---- opportunistic: a failed handshake is retried in plaintext, and remembered

TEST(outbound_tls, opportunistic_retries_a_failed_handshake_in_plaintext_and_remembers) {
  scripted_sink sink;
  ASSERT_TRUE(sink.start({"127.0.0.1"}, tls_flags({"--tls-broken"})));
  harness h({1, tls_config(), {}});
  ASSERT_TRUE(h.started());
  test_spool spool;
  const std::string first = make_message(3000, 1);
  h.deliver(0, 1, to("127.0.0.1", sink.port(), tls_policy::opportunistic),
            {&spool.add(first, {"a@example.net"}).job});
  ASSERT_TRUE(h.log.wait_for(1, kind::closed, 1));
  auto done = h.log.of(1, kind::delivery);
  ASSERT_EQ(done.size(), 1u);
  EXPECT_EQ(done[0].outcome, client_outcome::accepted) << done[0].text;
  EXPECT_EQ(done[0].tls, tls_mode::fallback);
  EXPECT_NE(done[0].tls_detail.find("TLS handshake failed (protocol)"), std::string::npos)
      << done[0].tls_detail;
  EXPECT_TRUE(sink.body(1) == first);
  EXPECT_EQ(sink.connections("127.0.0.1"), 2u);  // the failed handshake, then plaintext
  EXPECT_EQ(sink.count("starttls"), 1u);
  // The next connection goes plaintext at once: no second failed handshake first.
  h.deliver(0, 2, to("127.0.0.1", sink.port(), tls_policy::opportunistic),
            {&spool.add(make_message(3000, 2), {"b@example.net"}).job});
  ASSERT_TRUE(h.log.wait_for(2, kind::closed, 1));
  done = h.log.of(2, kind::delivery);
  ASSERT_EQ(done.size(), 1u);
  EXPECT_EQ(done[0].outcome, client_outcome::accepted);
  EXPECT_EQ(done[0].tls, tls_mode::fallback);
  EXPECT_EQ(sink.connections("127.0.0.1"), 3u);
  EXPECT_EQ(sink.count("starttls"), 1u);
  const auto counters = h.counters(0);
  EXPECT_EQ(counters.tls_failures[static_cast<std::size_t>(tls::failure::protocol)], 1u);
  EXPECT_EQ(counters.tls_plaintext_retries, 1u);
  EXPECT_EQ(counters.tls_plaintext_remembered, 1u);
  // ... but `required` to the same server still never goes plaintext.
  h.deliver(0, 3, to("127.0.0.1", sink.port(), tls_policy::required),
            {&spool.add(make_message(3000, 3), {"c@example.net"}).job});
  ASSERT_TRUE(h.log.wait_for(3, kind::closed, 1));
  EXPECT_EQ(h.log.of(3, kind::closed)[0].outcome, client_outcome::transient_failure);
  EXPECT_EQ(sink.count("mail"), 2u);
}

TEST(outbound_tls, opportunistic_goes_on_in_plaintext_when_starttls_is_absent_or_refused) {
  for (const bool offered : {false, true}) {
    scripted_sink sink;
    ASSERT_TRUE(sink.start({"127.0.0.1"},
                           offered ? tls_flags({"--tls-reply", "454 4.7.0 not now"})
                                   : std::vector<std::string>{}));
    harness h({1, tls_config(), {}});
    ASSERT_TRUE(h.started());
    test_spool spool;
    h.deliver(0, 1, to("127.0.0.1", sink.port(), tls_policy::opportunistic),
              {&spool.add(make_message(500, 1), {"a@example.net"}).job});
    ASSERT_TRUE(h.log.wait_for(1, kind::closed, 1));
    const auto done = h.log.of(1, kind::delivery);
    ASSERT_EQ(done.size(), 1u);
    EXPECT_EQ(done[0].outcome, client_outcome::accepted);
    EXPECT_EQ(done[0].tls, offered ? tls_mode::refused : tls_mode::not_offered);
    EXPECT_EQ(sink.connections("127.0.0.1"), 1u);
  }
}

TEST(outbound_tls, policy_none_never_says_starttls) {
  scripted_sink sink;
  ASSERT_TRUE(sink.start({"127.0.0.1"}, tls_flags()));
  harness h({1, tls_config(), {}});
  ASSERT_TRUE(h.started());
  test_spool spool;
  h.deliver(0, 1, to("127.0.0.1", sink.port(), tls_policy::none),
            {&spool.add(make_message(500, 1), {"a@example.net"}).job});
  ASSERT_TRUE(h.log.wait_for(1, kind::closed, 1));
  const auto done = h.log.of(1, kind::delivery);
  ASSERT_EQ(done.size(), 1u);
  EXPECT_EQ(done[0].tls, tls_mode::none_by_policy);
  EXPECT_EQ(sink.count("starttls"), 0u);
}

}  // namespace
}  // namespace ringmta::outbound::test
