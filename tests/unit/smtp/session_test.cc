// server_session API behaviour that transcripts cannot express: output back-pressure, pending
// verdicts cancelled by shutdown, zero-copy body slices, protocol names, envelope queries.
#include <array>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "ringmta/smtp/server_session.h"

namespace ringmta::smtp {
namespace {

struct slice_record {
  const char* data;
  std::size_t size;
};

class probe_handler final : public server_handler {
 public:
  bool hold_data_end = false;
  int aborted = 0;
  int data_ends = 0;
  std::vector<slice_record> slices;
  std::string body;
  body_summary last_summary;

  void on_body(std::string_view slice, body_form) noexcept override {
    slices.push_back({slice.data(), slice.size()});
    body.append(slice);
  }
  verdict on_data_end(const body_summary& summary) noexcept override {
    ++data_ends;
    last_summary = summary;
    return hold_data_end ? verdict::pending() : verdict::accept();
  }
  void on_data_aborted(abort_reason) noexcept override { ++aborted; }
  verdict on_auth(std::string_view, std::string_view) noexcept override {
    return verdict::accept();
  }
};

std::string drain(server_session& session) {
  std::string out(session.output());
  session.consume_output(out.size());
  return out;
}

TEST(server_session, pipelined_input_pauses_when_output_is_full) {
  server_config config;
  probe_handler handler;
  server_session session(config, handler);
  session.start();
  drain(session);
  std::string input;
  for (int i = 0; i < 2000; ++i) input += "NOOP\r\n";
  // The client never reads: feed pauses instead of growing the output without bound.
  const std::size_t used = session.feed(input);
  EXPECT_LT(used, input.size());
  EXPECT_TRUE(session.output_full());
  EXPECT_FALSE(session.awaiting_verdict());
  EXPECT_LE(session.output().size(), server_session::output_bytes_capacity);
  EXPECT_EQ(session.feed(std::string_view(input).substr(used)), 0u);  // still paused
  // Draining lets it go on; every command gets exactly one reply, in order.
  std::string replies = drain(session);
  std::size_t at = used;
  for (int rounds = 0; at < input.size() && rounds < 1000; ++rounds) {
    at += session.feed(std::string_view(input).substr(at));
    replies += drain(session);
  }
  EXPECT_EQ(at, input.size());
  std::string expected;
  for (int i = 0; i < 2000; ++i) expected += "250 2.0.0 Ok\r\n";
  EXPECT_EQ(replies, expected);
}

TEST(server_session, feed_consumes_nothing_while_a_verdict_is_pending) {
  server_config config;
  probe_handler handler;
  handler.hold_data_end = true;
  server_session session(config, handler);
  session.start();
  const std::string input =
      "EHLO c\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\nDATA\r\nhi\r\n.\r\nQUIT\r\n";
  const std::size_t used = session.feed(input);
  EXPECT_EQ(std::string_view(input).substr(used), "QUIT\r\n");
  EXPECT_TRUE(session.awaiting_verdict());
  EXPECT_EQ(session.feed("QUIT\r\n"), 0u);
  EXPECT_EQ(handler.data_ends, 1);
  session.resume(verdict::respond(250, "2.0.0", "Ok: queued as ABC"));
  EXPECT_FALSE(session.awaiting_verdict());
  EXPECT_EQ(session.messages_accepted(), 1u);
  EXPECT_EQ(session.feed("QUIT\r\n"), 6u);
  const std::string out = drain(session);
  EXPECT_NE(out.find("250 2.0.0 Ok: queued as ABC\r\n221 2.0.0"), std::string::npos) << out;
  EXPECT_TRUE(session.wants_close());
}

TEST(server_session, shutdown_cancels_a_pending_verdict) {
  server_config config;
  probe_handler handler;
  handler.hold_data_end = true;
  server_session session(config, handler);
  session.start();
  session.feed("EHLO c\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\nDATA\r\nhi\r\n.\r\n");
  ASSERT_TRUE(session.awaiting_verdict());
  drain(session);
  session.shutdown();
  EXPECT_TRUE(session.wants_close());
  EXPECT_FALSE(session.awaiting_verdict());
  EXPECT_EQ(drain(session), "421 4.3.2 localhost Service shutting down\r\n");
  session.resume(verdict::accept());  // too late: ignored
  EXPECT_EQ(drain(session), "");
  EXPECT_EQ(session.feed("NOOP\r\n"), 6u);  // discarded
  EXPECT_EQ(drain(session), "");
}

TEST(server_session, body_slices_point_into_the_fed_buffer) {
  server_config config;
  probe_handler handler;
  server_session session(config, handler);
  session.start();
  session.feed("EHLO c\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\nDATA\r\n");
  const std::string part1 = "line one\r\n..stuffed\r\n";
  const std::string part2 = "\r\n.";  // ends with a held-back dot
  const std::string part3 = "tail\r\n.\r\n";
  for (const std::string* part : {&part1, &part2, &part3}) {
    const std::size_t before = handler.slices.size();
    EXPECT_EQ(session.feed(*part), part->size());
    for (std::size_t i = before; i < handler.slices.size(); ++i) {
      const slice_record s = handler.slices[i];
      const bool inside = s.data >= part->data() && s.data + s.size <= part->data() + part->size();
      const bool held_dot = s.size == 1 && *s.data == '.';  // static storage
      EXPECT_TRUE(inside || held_dot) << "slice " << i;
    }
  }
  EXPECT_EQ(handler.body, "line one\r\n..stuffed\r\n\r\n.tail\r\n");
  EXPECT_EQ(handler.last_summary.message_bytes, handler.body.size() - 2);
  EXPECT_EQ(handler.last_summary.line_count, 4u);
}

TEST(server_session, protocol_name_follows_rfc3848) {
  server_config config;
  config.auth_offered = true;
  config.starttls_offered = true;
  probe_handler handler;
  server_session session(config, handler);
  session.start();
  session.feed("HELO c\r\n");
  EXPECT_EQ(session.protocol_name(), "SMTP");
  EXPECT_EQ(session.helo_name(), "c");
  session.feed("EHLO d.example\r\n");
  EXPECT_EQ(session.protocol_name(), "ESMTP");
  session.feed("STARTTLS\r\nignored\r\n");
  EXPECT_TRUE(session.awaiting_tls());
  session.tls_established();
  EXPECT_EQ(session.helo_name(), "");
  session.feed("EHLO d.example\r\n");
  EXPECT_EQ(session.protocol_name(), "ESMTPS");
  session.feed("AUTH PLAIN AGFAYgBj\r\n");
  EXPECT_TRUE(session.authenticated());
  EXPECT_EQ(session.protocol_name(), "ESMTPSA");
  session.feed("MAIL FROM:<a@b.example> SMTPUTF8 SIZE=42\r\n");
  EXPECT_EQ(session.protocol_name(), "UTF8SMTPSA");
  const envelope_view envelope = session.envelope();
  EXPECT_TRUE(envelope.has_mail);
  EXPECT_EQ(envelope.reverse_path, "a@b.example");
  EXPECT_EQ(envelope.mail->size, 42u);
  session.feed("RCPT TO:<x@y.example>\r\nRCPT TO:<z@y.example>\r\n");
  EXPECT_EQ(session.envelope().recipient_count, 2u);
  session.feed("RSET\r\n");
  EXPECT_FALSE(session.envelope().has_mail);
  EXPECT_EQ(session.protocol_name(), "ESMTPSA");
}

class xclient_handler final : public server_handler {
 public:
  verdict answer = verdict::accept();
  std::string login;
  verdict on_xclient(const xclient_attributes& a) noexcept override {
    login.assign(a.login.text);
    return answer;
  }
};

// XCLIENT LOGIN authenticates (Received: says ESMTPA after EHLO); XCLIENT without LOGIN, or
// with LOGIN=[UNAVAILABLE], leaves the session unauthenticated; TLS survives it; a pending
// verdict holds the greeting until resume().
TEST(server_session, xclient_login_decides_authentication) {
  server_config config;
  config.tls_active = true;
  xclient_handler handler;
  server_session session(config, handler);
  session.offer_xclient(true);
  session.start();
  drain(session);
  session.feed("XCLIENT LOGIN=alice ADDR=192.0.2.7\r\nEHLO c.example\r\n");
  EXPECT_EQ(handler.login, "alice");
  EXPECT_TRUE(session.authenticated());
  EXPECT_EQ(session.protocol_name(), "ESMTPSA");
  session.feed("XCLIENT ADDR=192.0.2.8\r\n");
  EXPECT_FALSE(session.authenticated());
  session.feed("XCLIENT LOGIN=[UNAVAILABLE]\r\nEHLO c.example\r\n");
  EXPECT_FALSE(session.authenticated());
  EXPECT_EQ(session.protocol_name(), "ESMTPS");
  drain(session);
  handler.answer = verdict::pending();
  EXPECT_EQ(session.feed("XCLIENT LOGIN=bob\r\nNOOP\r\n"), 19u);
  EXPECT_TRUE(session.awaiting_verdict());
  EXPECT_EQ(drain(session), "");
  session.resume(verdict::accept());
  EXPECT_TRUE(session.authenticated());
  EXPECT_EQ(drain(session), "220 localhost ESMTP ringmta\r\n");
}

TEST(server_session, unparsable_bdat_size_closes_the_connection) {
  // The chunk behind a BDAT with a bad size cannot be found: its octets must never be read as
  // commands (here a smuggled MAIL/RCPT/DATA), so the session replies 501 and ends.
  for (const char* bad : {"BDAT", "BDAT x", "BDAT 5 LASTX", "BDAT -1", "BDAT +5",
                          "BDAT 99999999999999999999999", "BDAT 5 LAST more"}) {
    server_config config;
    probe_handler handler;
    server_session session(config, handler);
    session.start();
    drain(session);
    session.feed("EHLO c\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\n");
    drain(session);
    session.feed(std::string(bad) + "\r\nMAIL FROM:<evil@x.example>\r\nRCPT TO:<v@x.example>\r\n");
    const std::string out = drain(session);
    EXPECT_EQ(out.substr(0, 10), "501 5.5.4 ") << bad;
    EXPECT_NE(out.find("cannot be skipped"), std::string::npos) << bad;
    EXPECT_EQ(out.find("250"), std::string::npos) << bad << ": nothing after it was run";
    EXPECT_TRUE(session.wants_close()) << bad;
  }
}

TEST(server_session, connection_lost_aborts_the_message) {
  server_config config;
  probe_handler handler;
  server_session session(config, handler);
  session.start();
  session.feed("EHLO c\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\nDATA\r\nhalf");
  EXPECT_TRUE(session.in_message());
  session.connection_lost();
  EXPECT_EQ(handler.aborted, 1);
  EXPECT_TRUE(session.wants_close());
  EXPECT_FALSE(session.in_message());
}

TEST(server_session, replies_from_the_embedder_are_sanitized_and_bounded) {
  struct evil_handler final : server_handler {
    std::string text = std::string(700, 'x') + "\r\nline two\x01\n" + std::string(3000, 'y');
    verdict on_rcpt_to(const mailbox&, const rcpt_parameters&) noexcept override {
      return verdict::respond(550, "5.1.1", text);
    }
  } handler;
  server_config config;
  server_session session(config, handler);
  session.start();
  session.feed("EHLO c\r\nMAIL FROM:<a@b.example>\r\n");
  drain(session);
  session.feed("RCPT TO:<c@d.example>\r\n");
  const std::string out = drain(session);
  std::size_t at = 0;
  int lines = 0;
  while (at < out.size()) {
    const std::size_t end = out.find("\r\n", at);
    ASSERT_NE(end, std::string::npos);
    EXPECT_LE(end + 2 - at, 512u);
    EXPECT_EQ(out.substr(at, 3), "550");
    for (std::size_t i = at; i < end; ++i) EXPECT_GE(static_cast<unsigned char>(out[i]), 0x20);
    at = end + 2;
    ++lines;
  }
  EXPECT_GE(lines, 2);
  EXPECT_EQ(out[out.rfind("550") + 3], ' ');  // the last line ends the reply
}

}  // namespace
}  // namespace ringmta::smtp

namespace ringmta::smtp {
namespace {

// RFC 5321 §4.5.3.1.4 with extensions: MAIL and RCPT get room for their parameters, other
// commands keep 512, AUTH lines get auth_line_bytes_max when storage for them is given.
TEST(server_session, command_line_limit_depends_on_the_command) {
  server_config config;
  config.auth_offered = true;
  config.auth_requires_tls = false;
  probe_handler handler;
  std::array<char, 12288> long_lines;
  server_session session(config, handler, long_lines);
  session.start();
  session.feed("EHLO c.example\r\nMAIL FROM:<a@b.example>\r\n");
  drain(session);
  const std::string orcpt = "rfc822;" + std::string(480, 'o');
  session.feed("RCPT TO:<x@y.example> NOTIFY=SUCCESS,FAILURE,DELAY ORCPT=" + orcpt + "\r\n");
  EXPECT_EQ(drain(session).substr(0, 3), "250");  // 558 octets
  session.feed("RCPT TO:<x@y.example> ORCPT=rfc822;" + std::string(1100, 'o') + "\r\n");
  EXPECT_EQ(drain(session).substr(0, 9), "500 5.5.2");
  session.feed("NOOP " + std::string(520, 'n') + "\r\n");
  EXPECT_EQ(drain(session).substr(0, 9), "500 5.5.2");
  session.feed("RSET\r\nAUTH PLAIN " + std::string(9000, 'A') + "\r\n");
  EXPECT_EQ(drain(session), "250 2.0.0 Ok\r\n235 2.7.0 Authentication successful\r\n");
  // Fed one octet at a time the limits are the same (the partial line is buffered).
  server_session slow(config, handler, long_lines);
  slow.start();
  const std::string input = "EHLO c.example\r\nAUTH PLAIN " + std::string(12000, 'A') +
                            "\r\nNOOP " + std::string(600, 'n') + "\r\n";
  for (const char c : input) slow.feed(std::string_view(&c, 1));
  const std::string out = drain(slow);
  EXPECT_NE(out.find("235 2.7.0"), std::string::npos) << out;
  EXPECT_NE(out.find("500 5.5.2"), std::string::npos) << out;
}

}  // namespace
}  // namespace ringmta::smtp
