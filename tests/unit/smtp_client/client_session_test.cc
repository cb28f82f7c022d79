// Transcript tests of smtp::client_session: each transcript is played whole and split into
// chunks of every size from 1 byte up, and must give the same commands and events every time.
#include "ringmta/smtp/client_session.h"

#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "transcript.h"

namespace ringmta::smtp {
namespace {

using client_testing::transcript_driver;
using client_testing::transcript_result;

using strings = std::vector<std::string>;

client_config config_default() {
  client_config config;
  config.helo_name = "client.example";
  return config;
}

const client_recipient three_recipients[] = {
    {"a@example.org", {}, {}}, {"b@example.org", {}, {}}, {"c@example.org", {}, {}}};
const client_recipient one_recipient[] = {{"a@example.org", {}, {}}};

client_envelope envelope_of(std::span<const client_recipient> recipients,
                            std::uint64_t size_bytes = 0) {
  client_envelope envelope;
  envelope.reverse_path = "sender@example.com";
  envelope.recipients = recipients;
  envelope.size_bytes = size_bytes;
  return envelope;
}

// Plays `script` whole and at every chunk size up to its length; all runs must agree.
transcript_result play(std::string_view script, const std::vector<client_envelope>& envelopes,
                       const client_config& config = config_default()) {
  transcript_driver whole_driver(config, envelopes);
  transcript_result whole = whole_driver.run(script, 1 << 20);
  EXPECT_EQ(whole.first_mismatch, "");
  for (std::size_t chunk = 1; chunk < 80; ++chunk) {
    transcript_driver driver(config, envelopes);
    const transcript_result split = driver.run(script, chunk);
    EXPECT_EQ(split.first_mismatch, "") << "chunk " << chunk;
    EXPECT_EQ(split.client, whole.client) << "chunk " << chunk;
    EXPECT_EQ(split.events, whole.events) << "chunk " << chunk;
    if (split.events != whole.events) break;
  }
  return whole;
}

constexpr std::string_view greeting_and_ehlo_plain = R"(
S: 220 mx.example ESMTP
C: EHLO client.example
S: 250-mx.example
S: 250 ENHANCEDSTATUSCODES
)";

constexpr std::string_view greeting_and_ehlo_pipelining = R"(
S: 220-mx.example ESMTP
S: 220 2.0.0 multi-line banner
C: EHLO client.example
S: 250-mx.example hello
S: 250-PIPELINING
S: 250-SIZE 10000
S: 250-8BITMIME
S: 250 ENHANCEDSTATUSCODES
)";

// --- greeting -----------------------------------------------------------------------------

TEST(client_session_greeting, rejected_554_sends_quit_and_reports) {
  const auto result = play(R"(
S: 554 5.7.1 no service for you
C: QUIT
)", {});
  EXPECT_EQ(result.events, (strings{"closed greeting_rejected 554 5.7.1"}));
  EXPECT_EQ(result.reply_texts, (strings{"no service for you"}));
}

TEST(client_session_greeting, transient_4xx_is_rejected_too) {
  const auto result = play("S: 450 busy, try later\nC: QUIT\n", {});
  EXPECT_EQ(result.events, (strings{"closed greeting_rejected 450"}));
}

TEST(client_session_greeting, service_closing_421_closes_without_quit) {
  const auto result = play("S: 421 4.3.2 shutting down\n", {});
  EXPECT_EQ(result.events, (strings{"closed service_closing 421 4.3.2"}));
  EXPECT_EQ(result.client, "");
}

TEST(client_session_greeting, peer_closing_before_greeting) {
  const auto result = play("S-RAW: 220 partial\nEOF\n", {});
  ASSERT_EQ(result.events, (strings{"closed peer_closed 421 4.4.2 local"}));
  EXPECT_EQ(result.reply_texts,
            (strings{"connection closed by the server in the middle of a reply"}));
}

TEST(client_session_greeting, timeout_reports_the_phase) {
  transcript_driver driver(config_default(), {});
  EXPECT_EQ(driver.session().phase(), client_phase::greeting);
  const auto result = driver.run("TIMEOUT\n", 1);
  EXPECT_EQ(result.events, (strings{"closed timeout 421 4.4.2 local"}));
  EXPECT_EQ(result.reply_texts, (strings{"timeout waiting for the greeting"}));
}

// --- EHLO / HELO --------------------------------------------------------------------------

TEST(client_session_hello, ehlo_refused_falls_back_to_helo_without_pipelining) {
  const client_envelope envelope = envelope_of(three_recipients);
  const auto result = play(R"(
S: 220 old.example SMTP
C: EHLO client.example
S: 502 command not implemented
C: HELO client.example
S: 250 old.example
C: MAIL FROM:<sender@example.com>
S: 250 ok
C: RCPT TO:<a@example.org>
S: 250 ok
C: RCPT TO:<b@example.org>
S: 250 ok
C: RCPT TO:<c@example.org>
S: 250 ok
C: DATA
S: 354 go ahead
C: .
S: 250 queued
C: QUIT
S: 221 bye
)", {envelope});
  EXPECT_EQ(result.events, (strings{"ready", "rcpt 0 accepted 250", "rcpt 1 accepted 250",
                                    "rcpt 2 accepted 250", "body", "message accepted 250",
                                    "ready", "closed quit 221"}));
}

TEST(client_session_hello, ehlo_and_helo_refused) {
  const auto result = play(R"(
S: 220 mx.example
C: EHLO client.example
S: 500 what?
C: HELO client.example
S: 501 5.5.2 no
C: QUIT
)", {});
  EXPECT_EQ(result.events, (strings{"closed hello_rejected 501 5.5.2"}));
}

TEST(client_session_hello, ehlo_transient_failure_does_not_fall_back) {
  const auto result = play(R"(
S: 220 mx.example
C: EHLO client.example
S: 451 4.3.0 later
C: QUIT
)", {});
  EXPECT_EQ(result.events, (strings{"closed hello_rejected 451 4.3.0"}));
}

TEST(client_session_hello, extensions_are_parsed) {
  transcript_driver driver(config_default(), {});
  const auto result = driver.run(R"(
S: 220 mx.example ESMTP
C: EHLO client.example
S: 250-mx.example greets client.example
S: 250-pipelining
S: 250-SIZE 35882577
S: 250-8BITMIME
S: 250-SMTPUTF8
S: 250-ENHANCEDSTATUSCODES
S: 250-CHUNKING
S: 250-BINARYMIME
S: 250-DSN
S: 250-STARTTLS
S: 250-X-UNKNOWN whatever
S: 250-AUTH=LOGIN
S: 250 AUTH PLAIN LOGIN XOAUTH2
C: QUIT
)", 3);
  EXPECT_EQ(result.first_mismatch, "");
  const client_extensions& ext = driver.session().extensions();
  EXPECT_TRUE(ext.esmtp);
  EXPECT_TRUE(ext.pipelining);
  EXPECT_TRUE(ext.size);
  EXPECT_EQ(ext.size_bytes_max, 35882577u);
  EXPECT_TRUE(ext.eight_bit_mime);
  EXPECT_TRUE(ext.smtputf8);
  EXPECT_TRUE(ext.enhanced_status_codes);
  EXPECT_TRUE(ext.chunking);
  EXPECT_TRUE(ext.binary_mime);
  EXPECT_TRUE(ext.dsn);
  EXPECT_TRUE(ext.starttls);
  EXPECT_TRUE(ext.auth);
  EXPECT_EQ(ext.auth_mechanisms(), "PLAIN LOGIN XOAUTH2");
  EXPECT_TRUE(driver.session().pipelining_active());
  EXPECT_EQ(driver.session().phase(), client_phase::quit);  // no envelopes: the driver quit
}

TEST(client_session_hello, size_without_number_means_no_limit) {
  client_extensions ext;
  ext.parse_line("SIZE");
  EXPECT_TRUE(ext.size);
  EXPECT_EQ(ext.size_bytes_max, 0u);
  ext.parse_line("SIZE 99999999999999999999999");  // overflow: no usable limit
  EXPECT_EQ(ext.size_bytes_max, 0u);
  ext.parse_line("SIZE 12x");
  EXPECT_EQ(ext.size_bytes_max, 0u);
  ext.parse_line("SIZE 52428800");
  EXPECT_EQ(ext.size_bytes_max, 52428800u);
}

TEST(client_session_hello, pipelining_can_be_disabled_by_config) {
  client_config config = config_default();
  config.pipelining = false;
  const client_envelope envelope = envelope_of(one_recipient);
  const auto result = play(std::string(greeting_and_ehlo_pipelining) + R"(
C: MAIL FROM:<sender@example.com>
S: 250 2.1.0 ok
C: RCPT TO:<a@example.org>
S: 250 2.1.5 ok
C: DATA
S: 354 go
C: .
S: 250 2.0.0 queued
C: QUIT
S: 221 2.0.0 bye
)", {envelope}, config);
  EXPECT_EQ(result.events.back(), "closed quit 221 2.0.0");
}

// --- transactions ------------------------------------------------------------------------------

TEST(client_session_transaction, one_at_a_time_with_mixed_recipient_results) {
  const client_envelope envelope = envelope_of(three_recipients);
  const auto result = play(std::string(greeting_and_ehlo_plain) + R"(
C: MAIL FROM:<sender@example.com>
S: 250 2.1.0 Ok
C: RCPT TO:<a@example.org>
S: 250 2.1.5 Ok
C: RCPT TO:<b@example.org>
S: 550-5.1.1 <b@example.org>: Recipient address rejected:
S: 550 5.1.1 User unknown in local recipient table
C: RCPT TO:<c@example.org>
S: 450 4.2.1 mailbox busy
C: DATA
S: 354 End data with <CR><LF>.<CR><LF>
C: .
S: 250 2.0.0 Ok: queued as ABC123
C: QUIT
S: 221 2.0.0 Bye
)", {envelope});
  EXPECT_EQ(result.events,
            (strings{"ready", "rcpt 0 accepted 250 2.1.5", "rcpt 1 permanent 550 5.1.1",
                     "rcpt 2 transient 450 4.2.1", "body", "message accepted 250 2.0.0",
                     "ready", "closed quit 221 2.0.0"}));
  EXPECT_EQ(result.reply_texts[1],
            "<b@example.org>: Recipient address rejected:\nUser unknown in local recipient table");
}

TEST(client_session_transaction, pipelined_batch_with_mixed_recipient_results) {
  const client_envelope envelope = envelope_of(three_recipients, 1234);
  const auto result = play(std::string(greeting_and_ehlo_pipelining) + R"(
C: MAIL FROM:<sender@example.com> SIZE=1234
C: RCPT TO:<a@example.org>
C: RCPT TO:<b@example.org>
C: RCPT TO:<c@example.org>
C: DATA
S: 250 2.1.0 Ok
S: 550 5.1.1 unknown
S: 250 2.1.5 Ok
S: 452 4.5.3 too many recipients
S: 354 go ahead
C: .
S: 250 2.0.0 queued
C: QUIT
S: 221 2.0.0 bye
)", {envelope});
  EXPECT_EQ(result.events,
            (strings{"ready", "rcpt 0 permanent 550 5.1.1", "rcpt 1 accepted 250 2.1.5",
                     "rcpt 2 transient 452 4.5.3", "body", "message accepted 250 2.0.0",
                     "ready", "closed quit 221 2.0.0"}));
}

TEST(client_session_transaction, non_pipelined_mail_failure_fails_every_recipient) {
  const client_envelope envelope = envelope_of(three_recipients);
  const auto result = play(std::string(greeting_and_ehlo_plain) + R"(
C: MAIL FROM:<sender@example.com>
S: 451 4.3.0 temporary sender problem
C: MAIL FROM:<sender@example.com>
S: 250 ok
C: RCPT TO:<a@example.org>
S: 250 ok
C: DATA
S: 354 go
C: .
S: 250 ok
C: QUIT
S: 221 bye
)", {envelope, envelope_of(one_recipient)});
  EXPECT_EQ(result.events,
            (strings{"ready", "rcpt 0 transient 451 4.3.0", "rcpt 1 transient 451 4.3.0",
                     "rcpt 2 transient 451 4.3.0", "message transient 451 4.3.0", "ready",
                     "rcpt 0 accepted 250", "body", "message accepted 250", "ready",
                     "closed quit 221"}));
}

TEST(client_session_transaction, pipelined_mail_failure_swallows_the_batch_replies) {
  const client_envelope envelope = envelope_of(three_recipients);
  const auto result = play(std::string(greeting_and_ehlo_pipelining) + R"(
C: MAIL FROM:<sender@example.com>
C: RCPT TO:<a@example.org>
C: RCPT TO:<b@example.org>
C: RCPT TO:<c@example.org>
C: DATA
S: 550 5.7.1 sender rejected
S: 503 5.5.1 need MAIL
S: 503 5.5.1 need MAIL
S: 503 5.5.1 need MAIL
S: 503 5.5.1 need MAIL
C: MAIL FROM:<sender@example.com>
C: RCPT TO:<a@example.org>
C: DATA
S: 250 ok
S: 250 ok
S: 354 go
C: .
S: 250 ok
C: QUIT
S: 221 bye
)", {envelope, envelope_of(one_recipient)});
  EXPECT_EQ(result.events,
            (strings{"ready", "rcpt 0 permanent 550 5.7.1", "rcpt 1 permanent 550 5.7.1",
                     "rcpt 2 permanent 550 5.7.1", "message permanent 550 5.7.1", "ready",
                     "rcpt 0 accepted 250", "body", "message accepted 250", "ready",
                     "closed quit 221"}));
}

TEST(client_session_transaction, pipelined_no_recipient_but_354_sends_a_lone_dot) {
  // RFC 2920 §3.1: DATA accepted although every RCPT failed: end it with "." and no body.
  const client_envelope envelope = envelope_of(three_recipients);
  const auto result = play(std::string(greeting_and_ehlo_pipelining) + R"(
C: MAIL FROM:<sender@example.com>
C: RCPT TO:<a@example.org>
C: RCPT TO:<b@example.org>
C: RCPT TO:<c@example.org>
C: DATA
S: 250 ok
S: 550 5.1.1 no
S: 550 5.1.1 no
S: 450 4.2.0 later
S: 354 go
C: .
S: 554 5.5.1 no valid recipients
C: MAIL FROM:<sender@example.com>
C: RCPT TO:<a@example.org>
C: DATA
S: 250 ok
S: 250 ok
S: 354 go
C: .
S: 250 ok
C: QUIT
S: 221 bye
)", {envelope, envelope_of(one_recipient)});
  EXPECT_EQ(result.events,
            (strings{"ready", "rcpt 0 permanent 550 5.1.1", "rcpt 1 permanent 550 5.1.1",
                     "rcpt 2 transient 450 4.2.0", "message none 554 5.5.1 local", "ready",
                     "rcpt 0 accepted 250", "body", "message accepted 250", "ready",
                     "closed quit 221"}));
}

TEST(client_session_transaction, pipelined_data_refused_needs_rset_next_time) {
  const client_envelope envelope = envelope_of(one_recipient);
  const auto result = play(std::string(greeting_and_ehlo_pipelining) + R"(
C: MAIL FROM:<sender@example.com>
C: RCPT TO:<a@example.org>
C: DATA
S: 250 ok
S: 250 ok
S: 554 5.3.0 no DATA today
C: RSET
C: MAIL FROM:<sender@example.com>
C: RCPT TO:<a@example.org>
C: DATA
S: 250 flushed
S: 250 ok
S: 250 ok
S: 354 go
C: .
S: 452 4.3.1 insufficient storage
C: QUIT
S: 221 bye
)", {envelope, envelope});
  EXPECT_EQ(result.events,
            (strings{"ready", "rcpt 0 accepted 250", "message permanent 554 5.3.0", "ready",
                     "rcpt 0 accepted 250", "body", "message transient 452 4.3.1", "ready",
                     "closed quit 221"}));
}

TEST(client_session_transaction, pipelined_no_recipients_and_data_refused) {
  const client_envelope envelope = envelope_of(one_recipient);
  const auto result = play(std::string(greeting_and_ehlo_pipelining) + R"(
C: MAIL FROM:<sender@example.com>
C: RCPT TO:<a@example.org>
C: DATA
S: 250 ok
S: 550 5.1.1 no
S: 554 5.5.1 no valid recipients
C: QUIT
S: 221 bye
)", {envelope});
  EXPECT_EQ(result.events, (strings{"ready", "rcpt 0 permanent 550 5.1.1",
                                    "message none 554 5.5.1", "ready", "closed quit 221"}));
}

TEST(client_session_transaction, non_pipelined_no_recipients_skips_data_then_rsets) {
  const client_envelope envelope = envelope_of(one_recipient);
  const auto result = play(std::string(greeting_and_ehlo_plain) + R"(
C: MAIL FROM:<sender@example.com>
S: 250 ok
C: RCPT TO:<a@example.org>
S: 550 5.1.1 no
C: RSET
S: 250 ok
C: MAIL FROM:<sender@example.com>
S: 250 ok
C: RCPT TO:<a@example.org>
S: 550 5.1.1 no
C: QUIT
S: 221 bye
)", {envelope, envelope});
  EXPECT_EQ(result.events,
            (strings{"ready", "rcpt 0 permanent 550 5.1.1", "message none 554 5.5.1 local",
                     "ready", "rcpt 0 permanent 550 5.1.1", "message none 554 5.5.1 local",
                     "ready", "closed quit 221"}));
}

TEST(client_session_transaction, rset_refused_ends_the_connection) {
  const client_envelope envelope = envelope_of(one_recipient);
  const auto result = play(std::string(greeting_and_ehlo_plain) + R"(
C: MAIL FROM:<sender@example.com>
S: 250 ok
C: RCPT TO:<a@example.org>
S: 550 5.1.1 no
C: RSET
S: 500 what
)", {envelope, envelope});
  EXPECT_EQ(result.events,
            (strings{"ready", "rcpt 0 permanent 550 5.1.1", "message none 554 5.5.1 local",
                     "ready", "rcpt 0 transient 500", "message transient 500",
                     "closed reply_unexpected 500"}));
}

TEST(client_session_transaction, final_reply_failures) {
  const client_envelope envelope = envelope_of(one_recipient);
  const auto result = play(std::string(greeting_and_ehlo_plain) + R"(
C: MAIL FROM:<sender@example.com>
S: 250 ok
C: RCPT TO:<a@example.org>
S: 250 ok
C: DATA
S: 354 go
C: .
S: 554 5.7.1 spam
C: MAIL FROM:<sender@example.com>
S: 250 ok
C: RCPT TO:<a@example.org>
S: 250 ok
C: DATA
S: 451 4.3.0 not now
C: RSET
S: 250 ok
C: MAIL FROM:<sender@example.com>
S: 250 ok
C: RCPT TO:<a@example.org>
S: 250 ok
C: DATA
S: 354 go
C: .
S: 451 4.3.0 local error
C: QUIT
S: 221 bye
)", {envelope, envelope, envelope});
  EXPECT_EQ(result.events,
            (strings{"ready", "rcpt 0 accepted 250", "body", "message permanent 554 5.7.1",
                     "ready", "rcpt 0 accepted 250", "message transient 451 4.3.0", "ready",
                     "rcpt 0 accepted 250", "body", "message transient 451 4.3.0", "ready",
                     "closed quit 221"}));
}

TEST(client_session_transaction, many_recipients_pipelined_through_a_small_output_buffer) {
  // 200 long recipients do not fit the output buffer at once: the batch is written as the
  // embedder consumes output, and every recipient still gets exactly one result.
  std::vector<std::string> addresses;
  for (int i = 0; i < 200; ++i) addresses.push_back(fmt::format("{:0>200}@example.org", i));
  std::vector<client_recipient> recipients;
  for (const auto& address : addresses) recipients.push_back({address, {}, {}});
  std::string script =
      std::string(greeting_and_ehlo_pipelining) + "C: MAIL FROM:<sender@example.com>\n";
  for (const auto& address : addresses) script += "C: RCPT TO:<" + address + ">\n";
  script += "C: DATA\nS: 250 ok\n";
  for (int i = 0; i < 200; ++i) script += i % 2 == 0 ? "S: 250 ok\n" : "S: 550 no\n";
  script += "S: 354 go\nC: .\nS: 250 queued\nC: QUIT\nS: 221 bye\n";
  transcript_driver driver(config_default(), {envelope_of(recipients)});
  const auto result = driver.run(script, 17);
  EXPECT_EQ(result.first_mismatch, "");
  ASSERT_EQ(result.events.size(), 1u + 200u + 4u);
  for (int i = 0; i < 200; ++i) {
    EXPECT_EQ(result.events[1 + i], fmt::format("rcpt {} {}", i,
                                                i % 2 == 0 ? "accepted 250" : "permanent 550"));
  }
  EXPECT_EQ(result.events[202], "message accepted 250");
}

TEST(client_session_transaction, output_consumed_in_small_pieces) {
  // A transport that takes 97 bytes at a time: the batch is compacted and continued in the
  // fixed output buffer, and the byte stream is exactly the commands in order.
  std::vector<std::string> addresses;
  for (int i = 0; i < 60; ++i) addresses.push_back(fmt::format("{:x>230}{:02}@example.org", "", i));
  std::vector<client_recipient> recipients;
  for (const auto& address : addresses) recipients.push_back({address, {}, {}});
  client_session session(config_default());
  std::string sent;
  auto send_some = [&] {
    const std::string_view out = session.output();
    const std::size_t bytes = std::min<std::size_t>(97, out.size());
    sent.append(out.substr(0, bytes));
    session.consume_output(bytes);
  };
  session.feed("220 mx\r\n");
  while (!session.output().empty()) send_some();
  session.feed("250-mx\r\n250 PIPELINING\r\n");
  ASSERT_EQ(session.next_event().kind, client_event_kind::ready);
  session.start_transaction(envelope_of(recipients));
  for (int rounds = 0; rounds < 10000 && !session.output().empty(); ++rounds) send_some();
  std::string expected = "EHLO client.example\r\nMAIL FROM:<sender@example.com>\r\n";
  for (const auto& address : addresses) expected += "RCPT TO:<" + address + ">\r\n";
  expected += "DATA\r\n";
  EXPECT_EQ(sent, expected);
  EXPECT_EQ(session.phase(), client_phase::mail);
}

TEST(client_session_tls, plaintext_fed_after_start_tls_event_is_rejected) {
  client_config config = config_default();
  config.tls = client_tls_policy::required;
  client_session session(config);
  session.feed("220 mx\r\n");
  session.consume_output(session.output().size());
  session.feed("250-mx\r\n250 STARTTLS\r\n");
  session.consume_output(session.output().size());
  ASSERT_EQ(session.feed("220 go\r\n"), 8u);
  ASSERT_EQ(session.next_event().kind, client_event_kind::start_tls);
  // The embedder wrongly hands more plaintext to the engine instead of to TLS.
  EXPECT_EQ(session.feed("250 injected\r\n"), 14u);
  const client_event closed = session.next_event();
  EXPECT_EQ(closed.kind, client_event_kind::closed);
  EXPECT_EQ(closed.close_reason, client_close_reason::protocol_error);
}

TEST(client_session_transaction, connection_reuse_for_several_messages) {
  const client_envelope envelope = envelope_of(one_recipient);
  std::string script(greeting_and_ehlo_pipelining);
  for (int i = 0; i < 5; ++i) {
    script += R"(
C: MAIL FROM:<sender@example.com>
C: RCPT TO:<a@example.org>
C: DATA
S: 250 ok
S: 250 ok
S: 354 go
C: .
S: 250 queued
)";
  }
  script += "C: QUIT\nS: 221 bye\n";
  const auto result = play(script, std::vector<client_envelope>(5, envelope));
  strings expected{"ready"};
  for (int i = 0; i < 5; ++i) {
    expected.insert(expected.end(),
                    {"rcpt 0 accepted 250", "body", "message accepted 250", "ready"});
  }
  expected.emplace_back("closed quit 221");
  EXPECT_EQ(result.events, expected);
}

// --- local rules -------------------------------------------------------------------------------

TEST(client_session_rules, message_over_the_server_size_fails_without_being_sent) {
  const auto result = play(std::string(greeting_and_ehlo_pipelining) + R"(
C: MAIL FROM:<sender@example.com> SIZE=10000
C: RCPT TO:<a@example.org>
C: DATA
S: 250 ok
S: 250 ok
S: 354 go
C: .
S: 250 ok
C: QUIT
S: 221 bye
)", {envelope_of(three_recipients, 10001), envelope_of(one_recipient, 10000)});
  EXPECT_EQ(result.events,
            (strings{"ready", "rcpt 0 permanent 552 5.3.4 local",
                     "rcpt 1 permanent 552 5.3.4 local", "rcpt 2 permanent 552 5.3.4 local",
                     "message permanent 552 5.3.4 local", "ready", "rcpt 0 accepted 250", "body",
                     "message accepted 250", "ready", "closed quit 221"}));
}

TEST(client_session_rules, eight_bit_body_needs_8bitmime) {
  client_envelope eight_bit = envelope_of(one_recipient);
  eight_bit.body = client_body_type::eight_bit_mime;
  // Plain server: refused locally (RFC 6152); then the 8BITMIME server gets BODY=8BITMIME.
  const auto plain = play(std::string(greeting_and_ehlo_plain) + R"(
C: QUIT
S: 221 bye
)", {eight_bit});
  EXPECT_EQ(plain.events,
            (strings{"ready", "rcpt 0 permanent 554 5.6.3 local",
                     "message permanent 554 5.6.3 local", "ready", "closed quit 221"}));
  const auto capable = play(std::string(greeting_and_ehlo_pipelining) + R"(
C: MAIL FROM:<sender@example.com> BODY=8BITMIME
C: RCPT TO:<a@example.org>
C: DATA
S: 250 ok
S: 250 ok
S: 354 go
C: .
S: 250 ok
C: QUIT
S: 221 bye
)", {eight_bit});
  EXPECT_EQ(capable.events.size(), 6u);
}

// Issue 17 item 2: a non-ASCII domain with an ASCII local part goes as its A-label form to a
// server without SMTPUTF8 (no SMTPUTF8 parameter), and as received to one that offers it.
TEST(client_session_rules, a_label_domain_to_a_server_without_smtputf8) {
  const client_recipient idn[] = {
      {"bob@b\xC3\xBC" "cher.test", {}, {}, "bob@xn--bcher-kva.test"}};
  const auto plain = play(std::string(greeting_and_ehlo_pipelining) + R"(
C: MAIL FROM:<sender@example.com>
C: RCPT TO:<bob@xn--bcher-kva.test>
C: DATA
S: 250 ok
S: 250 ok
S: 354 go
C: .
S: 250 ok
C: QUIT
S: 221 bye
)", {envelope_of(idn)});
  EXPECT_EQ(plain.first_mismatch, "");
  EXPECT_EQ(plain.events.back(), "closed quit 221");
  const auto offered = play(R"(
S: 220 mx
C: EHLO client.example
S: 250-mx
S: 250 SMTPUTF8
C: MAIL FROM:<sender@example.com> SMTPUTF8
S: 250 ok
C: RCPT TO:<bob@b)" "\xC3\xBC" R"(cher.test>
S: 250 ok
C: DATA
S: 354 go
C: .
S: 250 ok
C: QUIT
S: 221 bye
)", {envelope_of(idn)});
  EXPECT_EQ(offered.first_mismatch, "");
  EXPECT_EQ(offered.events.back(), "closed quit 221");
}

TEST(client_session_rules, smtputf8_required_but_not_offered) {
  const client_recipient utf8_recipient[] = {{"j\xC3\xB6rg@example.org", {}, {}}};
  client_envelope flagged = envelope_of(one_recipient);
  flagged.smtputf8 = true;
  const auto refused = play(std::string(greeting_and_ehlo_pipelining) + R"(
C: QUIT
S: 221 bye
)", {envelope_of(utf8_recipient), flagged});
  EXPECT_EQ(refused.events,
            (strings{"ready", "rcpt 0 permanent 553 5.6.7 local",
                     "message permanent 553 5.6.7 local", "ready",
                     "rcpt 0 permanent 553 5.6.7 local", "message permanent 553 5.6.7 local",
                     "ready", "closed quit 221"}));
  const auto offered = play(R"(
S: 220 mx
C: EHLO client.example
S: 250-mx
S: 250 SMTPUTF8
C: MAIL FROM:<sender@example.com> SMTPUTF8
S: 250 ok
C: RCPT TO:<j)" "\xC3\xB6" R"(rg@example.org>
S: 250 ok
C: DATA
S: 354 go
C: .
S: 250 ok
C: QUIT
S: 221 bye
)", {envelope_of(utf8_recipient)});
  EXPECT_EQ(offered.events.back(), "closed quit 221");
}

TEST(client_session_rules, dsn_parameters_only_when_offered) {
  const client_recipient dsn_recipients[] = {
      {"a@example.org", "SUCCESS,FAILURE", "rfc822;a@example.org"},
      {"b@example.org", "NEVER", {}}};
  client_envelope envelope = envelope_of(dsn_recipients);
  envelope.dsn_ret = "HDRS";
  envelope.dsn_envid = "QQ314159";
  const auto with_dsn = play(R"(
S: 220 mx
C: EHLO client.example
S: 250-mx
S: 250-PIPELINING
S: 250 DSN
C: MAIL FROM:<sender@example.com> RET=HDRS ENVID=QQ314159
C: RCPT TO:<a@example.org> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;a@example.org
C: RCPT TO:<b@example.org> NOTIFY=NEVER
C: DATA
S: 250 ok
S: 250 ok
S: 250 ok
S: 354 go
C: .
S: 250 ok
C: QUIT
S: 221 bye
)", {envelope});
  EXPECT_EQ(with_dsn.events.size(), 7u);
  const auto without_dsn = play(std::string(greeting_and_ehlo_pipelining) + R"(
C: MAIL FROM:<sender@example.com>
C: RCPT TO:<a@example.org>
C: RCPT TO:<b@example.org>
C: DATA
S: 250 ok
S: 250 ok
S: 250 ok
S: 354 go
C: .
S: 250 ok
C: QUIT
S: 221 bye
)", {envelope});
  EXPECT_EQ(without_dsn.events.size(), 7u);
}

TEST(client_session_rules, bad_recipient_syntax_is_never_sent) {
  // A CR LF in an address would inject a command: the recipient fails locally instead.
  const client_recipient recipients[] = {{"a@example.org", {}, {}},
                                         {"x@example.org>\r\nRSET", {}, {}},
                                         {"", {}, {}},
                                         {"c@example.org", {}, {}}};
  const auto result = play(std::string(greeting_and_ehlo_pipelining) + R"(
C: MAIL FROM:<sender@example.com>
C: RCPT TO:<a@example.org>
C: RCPT TO:<c@example.org>
C: DATA
S: 250 ok
S: 250 ok
S: 250 ok
S: 354 go
C: .
S: 250 ok
C: QUIT
S: 221 bye
)", {envelope_of(recipients)});
  EXPECT_EQ(result.events,
            (strings{"ready", "rcpt 0 accepted 250", "rcpt 1 permanent 553 5.1.3 local",
                     "rcpt 2 permanent 553 5.1.3 local", "rcpt 3 accepted 250", "body",
                     "message accepted 250", "ready", "closed quit 221"}));
}

TEST(client_session_rules, bad_sender_or_all_bad_recipients_fail_locally) {
  client_envelope bad_sender = envelope_of(one_recipient);
  bad_sender.reverse_path = "evil>\r\nDATA";
  const client_recipient bad[] = {{"no\nway", {}, {}}};
  const auto result = play(std::string(greeting_and_ehlo_pipelining) + R"(
C: QUIT
S: 221 bye
)", {bad_sender, envelope_of(bad)});
  EXPECT_EQ(result.events,
            (strings{"ready", "rcpt 0 permanent 553 5.1.7 local",
                     "message permanent 553 5.1.7 local", "ready",
                     "rcpt 0 permanent 553 5.1.3 local", "message none 554 5.5.1 local", "ready",
                     "closed quit 221"}));
}

TEST(client_session_rules, null_reverse_path) {
  client_envelope bounce = envelope_of(one_recipient);
  bounce.reverse_path = "";
  const auto result = play(std::string(greeting_and_ehlo_plain) + R"(
C: MAIL FROM:<>
S: 250 ok
C: RCPT TO:<a@example.org>
S: 250 ok
C: DATA
S: 354 go
C: .
S: 250 ok
C: QUIT
S: 221 bye
)", {bounce});
  EXPECT_EQ(result.events.back(), "closed quit 221");
}

// --- failures of the connection ------------------------------------------------------------

TEST(client_session_failure, malformed_reply_mid_transaction) {
  const auto result = play(std::string(greeting_and_ehlo_pipelining) + R"(
C: MAIL FROM:<sender@example.com>
C: RCPT TO:<a@example.org>
C: RCPT TO:<b@example.org>
C: RCPT TO:<c@example.org>
C: DATA
S: 250 ok
S: 250 ok
S-RAW: 250 bare line feed\n
)", {envelope_of(three_recipients)});
  EXPECT_EQ(result.events,
            (strings{"ready", "rcpt 0 accepted 250", "rcpt 1 transient 421 4.5.0 local",
                     "rcpt 2 transient 421 4.5.0 local", "message transient 421 4.5.0 local",
                     "closed protocol_error 421 4.5.0 local"}));
  EXPECT_EQ(result.reply_texts.back(), "malformed reply: bare LF in reply");
}

TEST(client_session_failure, malformed_replies_of_every_kind_close_the_connection) {
  for (const std::string_view bad :
       {"S-RAW: 250-a\\r\\n251 b\\r\\n", "S-RAW: 99 x\\r\\n", "S-RAW: 250 a\\0b\\r\\n",
        "S-RAW: 250 a\\rb\\r\\n", "S-RAW: 250+a\\r\\n"}) {
    transcript_driver driver(config_default(), {});
    const auto result = driver.run(std::string("S: 220 mx\nC: EHLO client.example\n") +
                                       std::string(bad) + "\n", 2);
    EXPECT_EQ(result.events.size(), 1u) << bad;
    EXPECT_EQ(result.events.back(), "closed protocol_error 421 4.5.0 local") << bad;
  }
  // A reply line of 100 kB never becomes 100 kB of memory.
  transcript_driver driver(config_default(), {});
  const auto result =
      driver.run("S: 220 mx\nC: EHLO client.example\nS: 250-" + std::string(100000, 'x'), 4096);
  EXPECT_EQ(result.events, (strings{"closed protocol_error 421 4.5.0 local"}));
  EXPECT_EQ(result.reply_texts.back(), "malformed reply: reply line longer than 512 bytes");
}

TEST(client_session_failure, too_many_lines_in_one_reply) {
  client_config config = config_default();
  config.reply_lines_max = 4;
  transcript_driver driver(config, {});
  const auto result = driver.run(
      "S: 220 mx\nC: EHLO client.example\nS: 250-a\nS: 250-b\nS: 250-c\nS: 250-d\nS: 250 e\n", 5);
  EXPECT_EQ(result.events, (strings{"closed protocol_error 421 4.5.0 local"}));
}

TEST(client_session_failure, service_closing_mid_transaction) {
  const auto result = play(std::string(greeting_and_ehlo_plain) + R"(
C: MAIL FROM:<sender@example.com>
S: 250 ok
C: RCPT TO:<a@example.org>
S: 250 ok
C: RCPT TO:<b@example.org>
S: 421 4.4.2 idle too long
)", {envelope_of(three_recipients)});
  EXPECT_EQ(result.events,
            (strings{"ready", "rcpt 0 accepted 250", "rcpt 1 transient 421 4.4.2",
                     "rcpt 2 transient 421 4.4.2", "message transient 421 4.4.2",
                     "closed service_closing 421 4.4.2"}));
}

TEST(client_session_failure, peer_closes_during_body_and_after_dot) {
  const auto during_body = play(std::string(greeting_and_ehlo_pipelining) + R"(
C: MAIL FROM:<sender@example.com>
C: RCPT TO:<a@example.org>
C: DATA
S: 250 ok
S: 250 ok
S: 354 go
C: .
EOF
)", {envelope_of(one_recipient)});
  // The driver answers send_body at once, so the connection ends waiting for the final reply:
  // the message is deferred (it may have been delivered: RFC 1047).
  EXPECT_EQ(during_body.events,
            (strings{"ready", "rcpt 0 accepted 250", "body", "message transient 421 4.4.2 local",
                     "closed peer_closed 421 4.4.2 local"}));
  EXPECT_EQ(during_body.reply_texts.back(),
            "connection closed by the server waiting for the reply to end of data");
}

TEST(client_session_failure, timeout_mid_pipeline) {
  const auto result = play(std::string(greeting_and_ehlo_pipelining) + R"(
C: MAIL FROM:<sender@example.com>
C: RCPT TO:<a@example.org>
C: RCPT TO:<b@example.org>
C: RCPT TO:<c@example.org>
C: DATA
S: 250 ok
S: 250 ok
TIMEOUT
)", {envelope_of(three_recipients)});
  EXPECT_EQ(result.events,
            (strings{"ready", "rcpt 0 accepted 250", "rcpt 1 transient 421 4.4.2 local",
                     "rcpt 2 transient 421 4.4.2 local", "message transient 421 4.4.2 local",
                     "closed timeout 421 4.4.2 local"}));
  EXPECT_EQ(result.reply_texts.back(), "timeout waiting for the reply to RCPT");
}

TEST(client_session_failure, unsolicited_replies) {
  // Nothing asked: a 250 is a protocol violation, a 421 a shutdown notice (RFC 5321 §3.8).
  for (const bool shutdown : {false, true}) {
    client_session session(config_default());
    session.feed("220 mx\r\n");
    session.consume_output(session.output().size());
    session.feed("250 mx\r\n");
    EXPECT_EQ(session.next_event().kind, client_event_kind::ready);
    session.feed(shutdown ? "421 4.4.2 idle too long, bye\r\n" : "250 surprise\r\n");
    const client_event closed = session.next_event();
    EXPECT_EQ(closed.kind, client_event_kind::closed);
    EXPECT_EQ(closed.close_reason, shutdown ? client_close_reason::service_closing
                                            : client_close_reason::reply_unexpected);
    EXPECT_EQ(closed.reply->text(), shutdown ? "idle too long, bye" : "surprise");
  }
}

TEST(client_session_failure, unexpected_codes) {
  const auto mail_354 = play(std::string(greeting_and_ehlo_plain) + R"(
C: MAIL FROM:<sender@example.com>
S: 354 what
)", {envelope_of(one_recipient)});
  EXPECT_EQ(mail_354.events,
            (strings{"ready", "rcpt 0 transient 354", "message transient 354",
                     "closed reply_unexpected 354"}));
  const auto data_250 = play(std::string(greeting_and_ehlo_plain) + R"(
C: MAIL FROM:<sender@example.com>
S: 250 ok
C: RCPT TO:<a@example.org>
S: 250 ok
C: DATA
S: 250 what
)", {envelope_of(one_recipient)});
  EXPECT_EQ(data_250.events,
            (strings{"ready", "rcpt 0 accepted 250", "message transient 250",
                     "closed reply_unexpected 250"}));
}

// --- STARTTLS ----------------------------------------------------------------------------------

TEST(client_session_tls, opportunistic_starttls_then_ehlo_again) {
  client_config config = config_default();
  config.tls = client_tls_policy::opportunistic;
  transcript_driver driver(config, {envelope_of(one_recipient)});
  const auto result = driver.run(R"(
S: 220 mx
C: EHLO client.example
S: 250-mx
S: 250-SIZE 100
S: 250 STARTTLS
C: STARTTLS
S: 220 2.0.0 ready to start TLS
C: EHLO client.example
S: 250-mx
S: 250 PIPELINING
C: MAIL FROM:<sender@example.com>
C: RCPT TO:<a@example.org>
C: DATA
S: 250 ok
S: 250 ok
S: 354 go
C: .
S: 250 ok
C: QUIT
S: 221 bye
)", 3);
  EXPECT_EQ(result.first_mismatch, "");
  EXPECT_EQ(result.events, (strings{"tls", "ready", "rcpt 0 accepted 250", "body",
                                    "message accepted 250", "ready", "closed quit 221"}));
  EXPECT_TRUE(driver.session().tls_active());
  EXPECT_FALSE(driver.session().extensions().size);  // forgotten after STARTTLS (RFC 3207 §4.2)
}

TEST(client_session_tls, opportunistic_goes_on_in_plaintext_when_refused_or_absent) {
  client_config config = config_default();
  config.tls = client_tls_policy::opportunistic;
  const auto refused = play(R"(
S: 220 mx
C: EHLO client.example
S: 250-mx
S: 250 STARTTLS
C: STARTTLS
S: 454 4.7.0 TLS not available
C: QUIT
S: 221 bye
)", {}, config);
  EXPECT_EQ(refused.events, (strings{"ready", "closed quit 221"}));
  const auto absent = play(std::string(greeting_and_ehlo_plain) + "C: QUIT\nS: 221 bye\n", {},
                           config);
  EXPECT_EQ(absent.events, (strings{"ready", "closed quit 221"}));
}

TEST(client_session_tls, required_but_unavailable) {
  client_config config = config_default();
  config.tls = client_tls_policy::required;
  const auto absent = play(std::string(greeting_and_ehlo_plain) + "C: QUIT\n", {}, config);
  EXPECT_EQ(absent.events, (strings{"closed tls_unavailable 421 4.7.4 local"}));
  const auto refused = play(R"(
S: 220 mx
C: EHLO client.example
S: 250-mx
S: 250 STARTTLS
C: STARTTLS
S: 454 4.7.0 TLS not available
C: QUIT
)", {}, config);
  EXPECT_EQ(refused.events, (strings{"closed tls_unavailable 454 4.7.0"}));
}

// --- AUTH to a relay host (RFC 4954) ------------------------------------------------------

client_config auth_config(client_auth_mode mode) {
  client_config config = config_default();
  config.tls = client_tls_policy::required;
  config.auth = {mode, "relay", "s3cret"};
  return config;
}

constexpr std::string_view starttls_prefix = R"(
S: 220 mx
C: EHLO client.example
S: 250-mx
S: 250-AUTH PLAIN LOGIN
S: 250 STARTTLS
C: STARTTLS
S: 220 2.0.0 go ahead
C: EHLO client.example
)";

TEST(client_session_auth, plain_with_initial_response_after_tls) {
  transcript_driver driver(auth_config(client_auth_mode::over_tls), {envelope_of(one_recipient)});
  const auto result = driver.run(std::string(starttls_prefix) + R"(
S: 250-mx
S: 250 AUTH LOGIN PLAIN
C: AUTH PLAIN AHJlbGF5AHMzY3JldA==
S: 235 2.7.0 Authentication successful
C: MAIL FROM:<sender@example.com>
S: 250 ok
C: RCPT TO:<a@example.org>
S: 250 ok
C: DATA
S: 354 go
C: .
S: 250 ok
C: QUIT
S: 221 bye
)", 5);
  EXPECT_EQ(result.first_mismatch, "");
  EXPECT_EQ(result.events, (strings{"tls", "ready", "rcpt 0 accepted 250", "body",
                                    "message accepted 250", "ready", "closed quit 221"}));
  EXPECT_TRUE(driver.session().authenticated());
}

TEST(client_session_auth, login_when_plain_is_not_offered) {
  transcript_driver driver(auth_config(client_auth_mode::over_tls), {});
  const auto result = driver.run(std::string(starttls_prefix) + R"(
S: 250-mx
S: 250 AUTH LOGIN CRAM-MD5
C: AUTH LOGIN
S: 334 VXNlcm5hbWU6
C: cmVsYXk=
S: 334 UGFzc3dvcmQ6
C: czNjcmV0
S: 235 2.7.0 ok
C: QUIT
S: 221 bye
)", 7);
  EXPECT_EQ(result.first_mismatch, "");
  EXPECT_EQ(result.events, (strings{"tls", "ready", "closed quit 221"}));
}

// 535 ends the connection before MAIL: the embedder defers (attempt_plan: never a bounce).
TEST(client_session_auth, refused_credentials_end_the_connection) {
  transcript_driver driver(auth_config(client_auth_mode::over_tls), {});
  const auto result = driver.run(std::string(starttls_prefix) + R"(
S: 250-mx
S: 250 AUTH PLAIN
C: AUTH PLAIN AHJlbGF5AHMzY3JldA==
S: 535 5.7.8 Authentication credentials invalid
C: QUIT
)", 4);
  EXPECT_EQ(result.first_mismatch, "");
  EXPECT_EQ(result.events, (strings{"tls", "closed auth_failed 535 5.7.8"}));
  EXPECT_FALSE(driver.session().authenticated());
}

// Never in plaintext unless forced; never to a server without AUTH; never under a policy that
// cannot protect them (refused): the session ends before anything is sent.
TEST(client_session_auth, credentials_are_never_sent_unprotected) {
  const std::string plain_server = R"(
S: 220 mx
C: EHLO client.example
S: 250-mx
S: 250 AUTH PLAIN LOGIN
)";
  client_config config = auth_config(client_auth_mode::over_tls);
  config.tls = client_tls_policy::none;
  auto result = play(plain_server + "C: QUIT\n", {}, config);
  EXPECT_EQ(result.events, (strings{"closed auth_unavailable 454 4.7.0 local"}));
  EXPECT_EQ(result.client.find("AUTH"), std::string::npos);
  config.auth.mode = client_auth_mode::refused;
  result = play(plain_server + "C: QUIT\n", {}, config);
  EXPECT_EQ(result.events, (strings{"closed auth_unavailable 454 4.7.0 local"}));
  config.auth.mode = client_auth_mode::plaintext;
  result = play(plain_server + "C: AUTH PLAIN AHJlbGF5AHMzY3JldA==\nS: 235 ok\nC: QUIT\n", {},
                config);
  EXPECT_EQ(result.events, strings{"ready"});
  const auto no_auth = play(R"(
S: 220 mx
C: EHLO client.example
S: 250 mx
C: QUIT
)", {}, config);
  EXPECT_EQ(no_auth.events, (strings{"closed auth_unavailable 454 4.7.0 local"}));
  const auto no_mechanism = play(R"(
S: 220 mx
C: EHLO client.example
S: 250-mx
S: 250 AUTH CRAM-MD5 GSSAPI
C: QUIT
)", {}, config);
  EXPECT_EQ(no_mechanism.events, (strings{"closed auth_unavailable 454 4.7.0 local"}));
}

// RFC 3207 §5 mirrored (response injection): a server, or someone in the path, answering
// "220 ready\r\n250 injected" in one packet. What follows the 220 is dropped; the replies after
// the handshake answer the new EHLO only.
TEST(client_session_tls, plaintext_after_starttls_reply_is_discarded) {
  client_config config = config_default();
  config.tls = client_tls_policy::required;
  transcript_driver driver(config, {envelope_of(one_recipient)});
  const auto result = driver.run(R"(
S: 220 mx
C: EHLO client.example
S: 250-mx
S: 250 STARTTLS
C: STARTTLS
S: 220 go ahead
S: 250-injected
S: 250 PIPELINING
C: EHLO client.example
S: 250 mx
C: MAIL FROM:<sender@example.com>
S: 250 ok
C: RCPT TO:<a@example.org>
S: 250 ok
C: DATA
S: 354 go
C: .
S: 250 ok
C: QUIT
S: 221 bye
)", 1 << 20);
  EXPECT_EQ(result.first_mismatch, "");
  EXPECT_EQ(result.events, (strings{"tls", "ready", "rcpt 0 accepted 250", "body",
                                    "message accepted 250", "ready", "closed quit 221"}));
  EXPECT_TRUE(driver.session().tls_active());
  // The injected PIPELINING was never believed: commands went one at a time.
  EXPECT_FALSE(driver.session().extensions().pipelining);
  EXPECT_EQ(driver.session().tls_discarded_bytes(),
            std::string_view("250-injected\r\n250 PIPELINING\r\n").size());
}

TEST(client_session_tls, discarded_bytes_are_counted_per_connection) {
  client_config config = config_default();
  config.tls = client_tls_policy::opportunistic;
  client_session session(config);
  session.feed("220 mx\r\n");
  session.consume_output(session.output().size());
  session.feed("250-mx\r\n250 STARTTLS\r\n");
  session.consume_output(session.output().size());
  EXPECT_EQ(session.feed("220 go\r\n250 injected\r\n"), 22u);  // all taken, most dropped
  EXPECT_EQ(session.next_event().kind, client_event_kind::start_tls);
  EXPECT_EQ(session.tls_discarded_bytes(), 14u);
  session.reset(client_tls_policy::none);
  EXPECT_EQ(session.tls_discarded_bytes(), 0u);
  EXPECT_EQ(session.tls_policy(), client_tls_policy::none);
  // The plaintext retry: STARTTLS offered, never used.
  session.feed("220 mx\r\n");
  session.consume_output(session.output().size());
  session.feed("250-mx\r\n250 STARTTLS\r\n");
  EXPECT_EQ(session.next_event().kind, client_event_kind::ready);
  EXPECT_EQ(session.output(), "");
  EXPECT_FALSE(session.tls_active());
}

TEST(client_session_tls, handshake_failure) {
  client_config config = config_default();
  config.tls = client_tls_policy::required;
  client_session session(config);
  ASSERT_EQ(session.feed("220 mx\r\n"), 8u);
  session.consume_output(session.output().size());
  const std::string_view ehlo_reply = "250-mx\r\n250 STARTTLS\r\n";
  ASSERT_EQ(session.feed(ehlo_reply), ehlo_reply.size());
  ASSERT_EQ(session.output(), "STARTTLS\r\n");
  session.consume_output(session.output().size());
  ASSERT_EQ(session.feed("220 go\r\n"), 8u);
  EXPECT_EQ(session.next_event().kind, client_event_kind::start_tls);
  EXPECT_EQ(session.phase(), client_phase::tls_handshake);
  session.tls_failed("TLS handshake failed: certificate verify failed: hostname mismatch");
  const client_event closed = session.next_event();
  EXPECT_EQ(closed.kind, client_event_kind::closed);
  EXPECT_EQ(closed.close_reason, client_close_reason::tls_failed);
  EXPECT_EQ(closed.reply->code, 421);
  EXPECT_EQ(closed.reply->enhanced.subject, 7);
  EXPECT_EQ(closed.reply->enhanced.detail, 5);
  EXPECT_EQ(closed.reply->text(),
            "TLS handshake failed: certificate verify failed: hostname mismatch");
  EXPECT_EQ(session.next_event().kind, client_event_kind::none);
  EXPECT_EQ(session.output(), "");
}

// --- phases and the API contract -------------------------------------------------------------

TEST(client_session_api, phases_follow_the_replies_awaited) {
  client_session session(config_default());
  const client_envelope envelope = envelope_of(one_recipient);
  auto send_all = [&] { session.consume_output(session.output().size()); };
  EXPECT_EQ(session.phase(), client_phase::greeting);
  session.feed("220 mx\r\n");
  EXPECT_EQ(session.phase(), client_phase::ehlo);
  send_all();
  session.feed("250 mx\r\n");
  EXPECT_EQ(session.next_event().kind, client_event_kind::ready);
  EXPECT_EQ(session.phase(), client_phase::ready);
  session.start_transaction(envelope);
  EXPECT_EQ(session.phase(), client_phase::mail);
  EXPECT_EQ(session.output(), "MAIL FROM:<sender@example.com>\r\n");
  send_all();
  session.feed("250 ok\r\n");
  EXPECT_EQ(session.phase(), client_phase::rcpt);
  send_all();
  // A reply that produced an event stops feed(): nothing more is taken until it is returned.
  EXPECT_EQ(session.feed("250 ok\r\n354 go\r\n"), 8u);
  EXPECT_EQ(session.feed("354 go\r\n"), 0u);
  EXPECT_EQ(session.next_event().kind, client_event_kind::recipient_result);
  EXPECT_EQ(session.phase(), client_phase::data);
  send_all();
  EXPECT_EQ(session.feed("354 go\r\n"), 8u);
  EXPECT_EQ(session.next_event().kind, client_event_kind::send_body);
  EXPECT_EQ(session.phase(), client_phase::body);
  session.body_sent();
  EXPECT_EQ(session.output(), ".\r\n");
  EXPECT_EQ(session.phase(), client_phase::data_end);
  send_all();
  session.feed("250 ok\r\n");
  EXPECT_EQ(session.next_event().kind, client_event_kind::message_result);
  EXPECT_EQ(session.next_event().kind, client_event_kind::ready);
  session.quit();
  EXPECT_EQ(session.phase(), client_phase::quit);
  send_all();
  session.feed("221 bye\r\n");
  EXPECT_EQ(session.next_event().kind, client_event_kind::closed);
  EXPECT_EQ(session.phase(), client_phase::closed);
  // After closing, input is discarded and further calls are harmless.
  EXPECT_EQ(session.feed("250 more\r\n"), 10u);
  session.on_peer_closed();
  session.on_timeout();
  session.quit();
  EXPECT_EQ(session.next_event().kind, client_event_kind::none);
}

TEST(client_session_api, reply_before_its_command_was_sent_is_unexpected) {
  client_session session(config_default());
  session.feed("220 mx\r\n");
  // EHLO is still in output(): a reply now cannot be an answer to it.
  session.feed("250 mx\r\n");
  const client_event event = session.next_event();
  EXPECT_EQ(event.kind, client_event_kind::closed);
  EXPECT_EQ(event.close_reason, client_close_reason::reply_unexpected);
}

TEST(client_session_api, closing_discards_commands_not_yet_sent) {
  client_session session(config_default());
  session.feed("220 mx\r\n");
  session.consume_output(session.output().size());
  session.feed("250-mx\r\n250 PIPELINING\r\n");
  ASSERT_EQ(session.next_event().kind, client_event_kind::ready);
  session.start_transaction(envelope_of(three_recipients));
  const std::string_view mail = "MAIL FROM:<sender@example.com>\r\n";
  ASSERT_EQ(session.output().substr(0, mail.size()), mail);
  session.consume_output(mail.size());  // only MAIL went out; the RCPTs and DATA wait
  session.feed("421 4.3.2 shutting down\r\n");
  std::vector<client_event_kind> kinds;
  for (auto event = session.next_event(); event.kind != client_event_kind::none;
       event = session.next_event()) {
    kinds.push_back(event.kind);
  }
  EXPECT_EQ(kinds.size(), 5u);  // 3 recipient results, message result, closed
  EXPECT_EQ(kinds.back(), client_event_kind::closed);
  EXPECT_EQ(session.output(), "");
}

TEST(client_session_api, reset_starts_a_new_connection) {
  client_session session(config_default());
  session.feed("554 go away\r\n");
  EXPECT_EQ(session.next_event().kind, client_event_kind::closed);
  session.reset();
  EXPECT_EQ(session.phase(), client_phase::greeting);
  EXPECT_EQ(session.output(), "");
  session.feed("220 mx\r\n");
  EXPECT_EQ(session.output(), "EHLO client.example\r\n");
}

// --- CHUNKING (RFC 3030): the message as one BDAT LAST chunk --------------------------------

constexpr std::string_view greeting_and_ehlo_chunking = R"(
S: 220 mx.example ESMTP
C: EHLO client.example
S: 250-mx.example hello
S: 250-PIPELINING
S: 250-CHUNKING
S: 250-8BITMIME
S: 250 ENHANCEDSTATUSCODES
)";

client_envelope chunked(client_envelope envelope, std::uint64_t chunk_bytes) {
  envelope.chunk_bytes = chunk_bytes;
  return envelope;
}

TEST(client_session_chunking, pipelined_bdat_sends_the_chunk_without_waiting) {
  // MAIL, RCPTs and BDAT go in one batch and the body follows at once ("body" comes before
  // any reply); the reply to BDAT ends the message.
  const auto result = play(std::string(greeting_and_ehlo_chunking) + R"(
C: MAIL FROM:<sender@example.com>
C: RCPT TO:<a@example.org>
C: RCPT TO:<b@example.org>
C: RCPT TO:<c@example.org>
C: BDAT 1200 LAST
S: 250 2.1.0 Ok
S: 250 2.1.5 Ok
S: 550 5.1.1 unknown
S: 250 2.1.5 Ok
S: 250 2.0.0 queued as X
C: MAIL FROM:<sender@example.com>
C: RCPT TO:<a@example.org>
C: BDAT 7 LAST
S: 250 2.1.0 Ok
S: 250 2.1.5 Ok
S: 250 2.0.0 queued as Y
C: QUIT
S: 221 2.0.0 bye
)", {chunked(envelope_of(three_recipients), 1200), chunked(envelope_of(one_recipient), 7)});
  EXPECT_EQ(result.events,
            (strings{"ready", "body", "rcpt 0 accepted 250 2.1.5", "rcpt 1 permanent 550 5.1.1",
                     "rcpt 2 accepted 250 2.1.5", "message accepted 250 2.0.0", "ready", "body",
                     "rcpt 0 accepted 250 2.1.5", "message accepted 250 2.0.0", "ready",
                     "closed quit 221 2.0.0"}));
}

TEST(client_session_chunking, bdat_and_data_mix_on_one_connection) {
  const auto result = play(std::string(greeting_and_ehlo_chunking) + R"(
C: MAIL FROM:<sender@example.com>
C: RCPT TO:<a@example.org>
C: DATA
S: 250 ok
S: 250 ok
S: 354 go
C: .
S: 250 ok
C: MAIL FROM:<sender@example.com>
C: RCPT TO:<a@example.org>
C: BDAT 3 LAST
S: 250 ok
S: 250 ok
S: 250 ok
C: QUIT
S: 221 bye
)", {envelope_of(one_recipient), chunked(envelope_of(one_recipient), 3)});
  EXPECT_EQ(result.events,
            (strings{"ready", "rcpt 0 accepted 250", "body", "message accepted 250", "ready",
                     "body", "rcpt 0 accepted 250", "message accepted 250", "ready",
                     "closed quit 221"}));
}

TEST(client_session_chunking, refused_bdat_fails_the_message_and_rsets_next_time) {
  const auto result = play(std::string(greeting_and_ehlo_chunking) + R"(
C: MAIL FROM:<sender@example.com>
C: RCPT TO:<a@example.org>
C: BDAT 10 LAST
S: 250 ok
S: 250 ok
S: 452 4.3.1 insufficient storage
C: RSET
C: MAIL FROM:<sender@example.com>
C: RCPT TO:<a@example.org>
C: BDAT 10 LAST
S: 250 flushed
S: 250 ok
S: 250 ok
S: 554 5.6.0 content rejected
C: QUIT
S: 221 bye
)", {chunked(envelope_of(one_recipient), 10), chunked(envelope_of(one_recipient), 10)});
  EXPECT_EQ(result.events,
            (strings{"ready", "body", "rcpt 0 accepted 250", "message transient 452 4.3.1",
                     "ready", "body", "rcpt 0 accepted 250", "message permanent 554 5.6.0",
                     "ready", "closed quit 221"}));
}

TEST(client_session_chunking, pipelined_mail_failure_takes_the_bdat_refusal_too) {
  const auto result = play(std::string(greeting_and_ehlo_chunking) + R"(
C: MAIL FROM:<sender@example.com>
C: RCPT TO:<a@example.org>
C: RCPT TO:<b@example.org>
C: BDAT 5 LAST
S: 550 5.7.1 sender rejected
S: 503 5.5.1 need MAIL
S: 503 5.5.1 need MAIL
S: 503 5.5.1 need MAIL
C: MAIL FROM:<sender@example.com>
C: RCPT TO:<a@example.org>
C: BDAT 5 LAST
S: 250 ok
S: 250 ok
S: 250 ok
C: QUIT
S: 221 bye
)", {chunked(envelope_of(std::span(three_recipients).first(2)), 5),
     chunked(envelope_of(one_recipient), 5)});
  EXPECT_EQ(result.events,
            (strings{"ready", "body", "rcpt 0 permanent 550 5.7.1", "rcpt 1 permanent 550 5.7.1",
                     "message permanent 550 5.7.1", "ready", "body", "rcpt 0 accepted 250",
                     "message accepted 250", "ready", "closed quit 221"}));
}

TEST(client_session_chunking, no_recipient_accepted) {
  // The chunk went out with the batch; the server refuses BDAT (or, oddly, accepts it): either
  // way nothing was delivered and RSET clears the transaction.
  const auto result = play(std::string(greeting_and_ehlo_chunking) + R"(
C: MAIL FROM:<sender@example.com>
C: RCPT TO:<a@example.org>
C: BDAT 4 LAST
S: 250 ok
S: 550 5.1.1 no
S: 554 5.5.1 no valid recipients
C: RSET
C: MAIL FROM:<sender@example.com>
C: RCPT TO:<a@example.org>
C: BDAT 4 LAST
S: 250 ok
S: 250 ok
S: 550 5.1.1 no
S: 250 ok
C: QUIT
S: 221 bye
)", {chunked(envelope_of(one_recipient), 4), chunked(envelope_of(one_recipient), 4)});
  EXPECT_EQ(result.events,
            (strings{"ready", "body", "rcpt 0 permanent 550 5.1.1", "message none 554 5.5.1",
                     "ready", "body", "rcpt 0 permanent 550 5.1.1",
                     "message none 554 5.5.1 local", "ready", "closed quit 221"}));
}

TEST(client_session_chunking, without_pipelining_bdat_waits_its_turn) {
  const auto result = play(R"(
S: 220 mx.example ESMTP
C: EHLO client.example
S: 250-mx.example
S: 250 CHUNKING
C: MAIL FROM:<sender@example.com>
S: 250 ok
C: RCPT TO:<a@example.org>
S: 550 no
C: RCPT TO:<b@example.org>
S: 250 ok
C: BDAT 99 LAST
S: 250 ok
C: MAIL FROM:<sender@example.com>
S: 250 ok
C: RCPT TO:<a@example.org>
S: 550 no
C: QUIT
S: 221 bye
)", {chunked(envelope_of(std::span(three_recipients).first(2)), 99),
     chunked(envelope_of(one_recipient), 99)});
  EXPECT_EQ(result.events,
            (strings{"ready", "rcpt 0 permanent 550", "rcpt 1 accepted 250", "body",
                     "message accepted 250", "ready", "rcpt 0 permanent 550",
                     "message none 554 5.5.1 local", "ready", "closed quit 221"}));
}

TEST(client_session_chunking, a_3xx_reply_to_bdat_is_unexpected) {
  const auto result = play(std::string(greeting_and_ehlo_chunking) + R"(
C: MAIL FROM:<sender@example.com>
C: RCPT TO:<a@example.org>
C: BDAT 4 LAST
S: 250 ok
S: 250 ok
S: 354 go ahead
)", {chunked(envelope_of(one_recipient), 4)});
  EXPECT_EQ(result.events,
            (strings{"ready", "body", "rcpt 0 accepted 250", "message transient 354",
                     "closed reply_unexpected 354"}));
}

TEST(client_session_chunking, only_when_offered_and_allowed) {
  client_config config = config_default();
  transcript_driver offered(config, {});
  (void)offered.run(greeting_and_ehlo_chunking, 1 << 20);
  EXPECT_TRUE(offered.session().chunking_active());
  transcript_driver not_offered(config, {});
  (void)not_offered.run(greeting_and_ehlo_pipelining, 1 << 20);
  EXPECT_FALSE(not_offered.session().chunking_active());
  config.chunking = false;
  transcript_driver refused(config, {});
  (void)refused.run(greeting_and_ehlo_chunking, 1 << 20);
  EXPECT_FALSE(refused.session().chunking_active());
}

TEST(client_session_api_death, misuse_asserts) {
  EXPECT_DEATH(
      {
        client_session session(config_default());
        session.start_transaction(envelope_of(one_recipient));
      },
      "assertion failed");
  EXPECT_DEATH(
      {
        client_session session(config_default());
        session.body_sent();
      },
      "assertion failed");
  EXPECT_DEATH(  // a chunk for a server that does not offer CHUNKING
      {
        client_session session(config_default());
        session.feed("220 mx\r\n");
        session.next_event();
        session.consume_output(session.output().size());
        session.feed("250 mx\r\n");
        while (session.next_event().kind != client_event_kind::none) {
        }
        session.start_transaction(chunked(envelope_of(one_recipient), 10));
      },
      "assertion failed");
  EXPECT_DEATH(
      {
        client_config config;
        config.helo_name = "bad name\r\n";
        client_session session(config);
      },
      "assertion failed");
}

TEST(client_session_api, describes_every_value) {
  for (int i = 0; i <= static_cast<int>(client_phase::closed); ++i) {
    EXPECT_FALSE(describe(static_cast<client_phase>(i)).empty());
  }
  for (int i = 0; i <= static_cast<int>(client_close_reason::timeout); ++i) {
    EXPECT_FALSE(describe(static_cast<client_close_reason>(i)).empty());
  }
  for (int i = 0; i <= static_cast<int>(client_outcome::no_recipients); ++i) {
    EXPECT_FALSE(describe(static_cast<client_outcome>(i)).empty());
  }
}

}  // namespace
}  // namespace ringmta::smtp
