// queue::dsn: the DSN is parsed back with a small MIME reader (below) to prove its structure:
// multipart/report with three parts, per-message and per-recipient fields, dot-stuffing,
// line lengths, what is returned (RET, size, 8-bit, SMTPUTF8), and the NOTIFY policy.
#include "ringmta/queue/dsn.h"

#include <gtest/gtest.h>

#include <map>
#include <random>
#include <string>
#include <vector>

namespace ringmta::queue {
namespace {

// ---------------------------------------------------------------- a small MIME reader

struct entity {
  std::vector<std::pair<std::string, std::string>> fields;  // unfolded, names lowercased
  std::string body;
  std::string field(std::string_view name) const {
    for (const auto& [key, value] : fields)
      if (key == name) return value;
    return {};
  }
};

std::string lower(std::string text) {
  for (char& c : text) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return text;
}

// Wire form to message: every line is CRLF-terminated and at most 998 octets; a leading "."
// is dropped (RFC 5321 §4.5.2). Fails the test on anything else.
std::string unstuff(const std::string& wire) {
  std::string out;
  std::size_t at = 0;
  while (at < wire.size()) {
    std::size_t end = wire.find("\r\n", at);
    EXPECT_NE(end, std::string::npos) << "line without CRLF at " << at;
    if (end == std::string::npos) break;
    std::string_view line(wire.data() + at, end - at);
    EXPECT_EQ(line.find('\n'), std::string_view::npos) << "bare LF";
    EXPECT_EQ(line.find('\r'), std::string_view::npos) << "bare CR";
    EXPECT_LE(line.size(), 998u) << "line too long";
    if (line.starts_with(".")) {
      EXPECT_TRUE(line.starts_with("..")) << "unstuffed dot: " << line;
      line.remove_prefix(1);
    }
    out.append(line).append("\r\n");
    at = end + 2;
  }
  return out;
}

entity parse_entity(std::string_view text) {
  entity out;
  std::size_t at = 0;
  while (at < text.size()) {
    std::size_t end = text.find("\r\n", at);
    if (end == std::string_view::npos) end = text.size();
    std::string_view line = text.substr(at, end - at);
    at = std::min(text.size(), end + 2);
    if (line.empty()) break;
    if ((line[0] == ' ' || line[0] == '\t') && !out.fields.empty()) {
      out.fields.back().second.append(line);  // unfold: drop the CRLF only
      continue;
    }
    std::size_t colon = line.find(':');
    EXPECT_NE(colon, std::string_view::npos) << "not a field: " << line;
    if (colon == std::string_view::npos) continue;
    std::string value(line.substr(colon + 1));
    out.fields.emplace_back(lower(std::string(line.substr(0, colon))),
                            value.starts_with(" ") ? value.substr(1) : value);
  }
  out.body = std::string(text.substr(at));
  return out;
}

std::string parameter(const std::string& content_type, const std::string& name) {
  std::size_t at = lower(content_type).find(name + "=");
  if (at == std::string::npos) return {};
  at += name.size() + 1;
  if (content_type[at] == '"') return content_type.substr(at + 1, content_type.find('"', at + 1) -
                                                                      at - 1);
  return content_type.substr(at, content_type.find(';', at) - at);
}

struct parsed_dsn {
  entity top;
  std::vector<entity> parts;
  std::vector<std::map<std::string, std::string>> status_groups;  // per-message, recipients
  std::string wire;
};

parsed_dsn parse_dsn(const std::string& wire) {
  parsed_dsn out;
  out.wire = wire;
  std::string message = unstuff(wire);
  out.top = parse_entity(message);
  std::string boundary = parameter(out.top.field("content-type"), "boundary");
  EXPECT_FALSE(boundary.empty());
  std::string delimiter = "\r\n--" + boundary;
  std::size_t at = message.find(delimiter);
  EXPECT_NE(at, std::string::npos);
  while (at != std::string::npos) {
    std::size_t start = at + delimiter.size();
    if (message.compare(start, 2, "--") == 0) break;  // close delimiter
    start = message.find("\r\n", start) + 2;
    std::size_t next = message.find(delimiter, start);
    EXPECT_NE(next, std::string::npos) << "unterminated part";
    if (next == std::string::npos) break;
    out.parts.push_back(parse_entity(std::string_view(message).substr(start, next - start)));
    at = next;
  }
  if (out.parts.size() >= 2) {
    // RFC 3464 §2.1: groups of fields separated by blank lines.
    const std::string& text = out.parts[1].body;
    std::size_t group = 0;
    while (group < text.size()) {
      std::size_t end = text.find("\r\n\r\n", group);
      end = end == std::string::npos ? text.size() : end + 2;
      entity fields = parse_entity(std::string_view(text).substr(group, end - group));
      if (!fields.fields.empty()) {
        std::map<std::string, std::string> map;
        for (auto& [key, value] : fields.fields) map[key] = value;
        out.status_groups.push_back(map);
      }
      group = end + 2;
    }
  }
  return out;
}

// ---------------------------------------------------------------- fixtures

std::string wire_message(std::size_t body_lines = 3, std::string_view extra = "") {
  std::string out =
      "Received: from client.example (client.example [192.0.2.1])\r\n"
      "\tby mx.example.net with ESMTP id 123\r\n"
      "From: Alice <alice@example.com>\r\n"
      "To: Bob <bob@example.org>\r\n"
      "Subject: hello\r\n"
      "\r\n";
  for (std::size_t i = 0; i < body_lines; ++i) out += "body line " + std::to_string(i) + "\r\n";
  out += "..a line that starts with a dot\r\n";
  out += extra;
  return out;
}

spool::envelope make_envelope() {
  spool::envelope envelope;
  envelope.id = 0x0123456789abcdefULL;
  envelope.reverse_path = "alice@example.com";
  envelope.envid = "QQ+2B314";
  envelope.received_seconds = 1'700'000'000;
  return envelope;
}

struct dsn_fixture {
  spool::envelope envelope = make_envelope();
  std::vector<dsn_recipient> recipients;
  std::string body = wire_message();
  std::vector<std::string_view> pieces;
  dsn_request request;

  dsn_fixture() {
    dsn_recipient bob;
    bob.address = "bob@example.org";
    bob.orcpt = "rfc822;bob+2Bx@example.org";
    bob.action = dsn_action::failed;
    bob.status = status_code{5, 1, 1};
    bob.remote_mta = "mx.example.org";
    bob.diagnostic = "550 5.1.1 <bob@example.org>: Recipient address rejected";
    bob.last_attempt_seconds = 1'700'000'100;
    recipients.push_back(bob);
  }
  dsn_request& make() {
    pieces = {body};
    request.reporting_mta = "mx.example.net";
    request.original = &envelope;
    request.recipients = recipients;
    request.original_body = pieces;
    request.original_body_bytes = body.size();
    request.dsn_id = 0x00000000000000ffULL;
    request.now_seconds = 1'700'000'200;
    return request;
  }
  parsed_dsn build(dsn_result* result_out = nullptr) {
    std::string out;
    auto result = build_dsn(make(), out);
    EXPECT_TRUE(result.ok()) << result.error_text();
    if (result.ok() && result_out != nullptr) *result_out = result.value();
    if (result.ok()) {
      EXPECT_EQ(result.value().bytes, out.size());
    }
    return parse_dsn(out);
  }
};

TEST(dsn, failed_report_structure) {
  dsn_fixture f;
  dsn_result result;
  parsed_dsn dsn = f.build(&result);
  EXPECT_EQ(dsn.top.field("from"), "Mail Delivery System <MAILER-DAEMON@mx.example.net>");
  EXPECT_EQ(dsn.top.field("to"), "<alice@example.com>");
  EXPECT_EQ(dsn.top.field("subject"), "Undelivered Mail Returned to Sender");
  EXPECT_EQ(dsn.top.field("auto-submitted"), "auto-replied");
  EXPECT_EQ(dsn.top.field("date"), "Tue, 14 Nov 2023 22:16:40 +0000");
  EXPECT_EQ(dsn.top.field("message-id"), "<00000000000000ff.dsn@mx.example.net>");
  EXPECT_EQ(dsn.top.field("mime-version"), "1.0");
  std::string type = dsn.top.field("content-type");
  EXPECT_TRUE(type.starts_with("multipart/report;")) << type;
  EXPECT_EQ(parameter(type, "report-type"), "delivery-status");
  EXPECT_EQ(dsn.top.field("content-transfer-encoding"), "7bit");
  ASSERT_EQ(dsn.parts.size(), 3u);
  EXPECT_EQ(dsn.parts[0].field("content-type"), "text/plain; charset=us-ascii");
  EXPECT_NE(dsn.parts[0].body.find("<bob@example.org> (failed): 550 5.1.1"), std::string::npos)
      << dsn.parts[0].body;
  EXPECT_EQ(dsn.parts[1].field("content-type"), "message/delivery-status");
  EXPECT_EQ(dsn.parts[2].field("content-type"), "message/rfc822");  // small: returned whole
  EXPECT_TRUE(result.returned_full);
  EXPECT_EQ(result.body, spool::body_type::seven_bit);
  EXPECT_FALSE(result.smtputf8);

  ASSERT_EQ(dsn.status_groups.size(), 2u);
  auto& message = dsn.status_groups[0];
  EXPECT_EQ(message["reporting-mta"], "dns; mx.example.net");
  EXPECT_EQ(message["original-envelope-id"], "QQ+314");  // xtext-decoded
  EXPECT_EQ(message["arrival-date"], "Tue, 14 Nov 2023 22:13:20 +0000");
  EXPECT_EQ(message["x-ringmta-queue-id"], "0123456789abcdef");
  auto& bob = dsn.status_groups[1];
  EXPECT_EQ(bob["original-recipient"], "rfc822; bob+x@example.org");
  EXPECT_EQ(bob["final-recipient"], "rfc822; bob@example.org");
  EXPECT_EQ(bob["action"], "failed");
  EXPECT_EQ(bob["status"], "5.1.1");
  EXPECT_EQ(bob["remote-mta"], "dns; mx.example.org");
  EXPECT_EQ(bob["diagnostic-code"],
            "smtp; 550 5.1.1 <bob@example.org>: Recipient address rejected");
  EXPECT_EQ(bob["last-attempt-date"], "Tue, 14 Nov 2023 22:15:00 +0000");
  EXPECT_EQ(bob.count("will-retry-until"), 0u);

  // The returned message is the original, byte for byte once unstuffed, dots included.
  std::string original = unstuff(f.body);
  EXPECT_EQ(dsn.parts[2].body, original);
  EXPECT_NE(dsn.wire.find("\r\n..a line that starts with a dot\r\n"), std::string::npos);
}

TEST(dsn, several_recipients_and_delayed) {
  dsn_fixture f;
  dsn_recipient carol;
  carol.address = "carol@example.org";
  carol.action = dsn_action::delayed;
  carol.diagnostic = "451 4.3.0 try later";
  carol.will_retry_until_seconds = 1'700'432'000;
  f.recipients.push_back(carol);
  dsn_recipient dave;
  dave.address = "dave@example.org";
  dave.action = dsn_action::delayed;  // no status given: 4.0.0
  f.recipients = {carol, dave};
  dsn_result result;
  parsed_dsn dsn = f.build(&result);
  EXPECT_EQ(dsn.top.field("subject"), "Delayed Mail (still being retried)");
  ASSERT_EQ(dsn.status_groups.size(), 3u);
  EXPECT_EQ(dsn.status_groups[1]["action"], "delayed");
  EXPECT_EQ(dsn.status_groups[1]["status"], "4.0.0");
  EXPECT_EQ(dsn.status_groups[1]["will-retry-until"], "Sun, 19 Nov 2023 22:13:20 +0000");
  EXPECT_EQ(dsn.status_groups[2]["final-recipient"], "rfc822; dave@example.org");
  // RFC 3461 §4.3: no failure reported, so only the headers come back.
  EXPECT_FALSE(result.returned_full);
  ASSERT_EQ(dsn.parts.size(), 3u);
  EXPECT_EQ(dsn.parts[2].field("content-type"), "text/rfc822-headers");
  EXPECT_EQ(dsn.parts[2].body.find("body line"), std::string::npos);
}

TEST(dsn, what_is_returned_follows_ret_and_size) {
  struct scenario {
    spool::dsn_return ret;
    std::size_t body_lines;
    bool full;
  };
  // A body line is 13 or 14 bytes: 3000 lines ~ 41 KiB, 10000 ~ 140 KiB, 80000 ~ 1.1 MiB.
  const scenario scenarios[] = {
      {spool::dsn_return::unspecified, 3000, true},
      {spool::dsn_return::unspecified, 10000, false},
      {spool::dsn_return::headers, 3, false},
      {spool::dsn_return::full, 10000, true},
      {spool::dsn_return::full, 80000, false},
  };
  for (const scenario& s : scenarios) {
    dsn_fixture f;
    f.envelope.ret = s.ret;
    f.body = wire_message(s.body_lines);
    dsn_result result;
    parsed_dsn dsn = f.build(&result);
    SCOPED_TRACE(std::to_string(static_cast<int>(s.ret)) + " " + std::to_string(f.body.size()));
    EXPECT_EQ(result.returned_full, s.full);
    EXPECT_EQ(dsn_original_bytes_needed(f.request),
              s.full ? f.body.size() : std::min<std::size_t>(f.body.size(), 64u << 10));
    ASSERT_EQ(dsn.parts.size(), 3u);
    if (s.full) {
      EXPECT_EQ(dsn.parts[2].field("content-type"), "message/rfc822");
      EXPECT_EQ(dsn.parts[2].body, unstuff(f.body));
    } else {
      EXPECT_EQ(dsn.parts[2].field("content-type"), "text/rfc822-headers");
      EXPECT_EQ(dsn.parts[2].body, unstuff(f.body.substr(0, f.body.find("\r\n\r\n") + 2)));
      EXPECT_LT(dsn.wire.size(), 8000u);
    }
  }
}

TEST(dsn, pieces_and_prefixes_give_the_same_result) {
  dsn_fixture whole;
  std::string expected;
  ASSERT_TRUE(build_dsn(whole.make(), expected).ok());
  dsn_fixture split;
  split.make();
  std::string_view body = split.body;
  std::vector<std::string_view> pieces;
  for (std::size_t at = 0; at < body.size(); at += 7) pieces.push_back(body.substr(at, 7));
  split.request.original_body = pieces;
  std::string out;
  ASSERT_TRUE(build_dsn(split.request, out).ok());
  EXPECT_EQ(out, expected);
  // Headers-only needs only a prefix: the embedder may read just that much.
  dsn_fixture large;
  large.envelope.ret = spool::dsn_return::headers;
  large.body = wire_message(20000);
  large.make();
  std::uint64_t needed = dsn_original_bytes_needed(large.request);
  EXPECT_EQ(needed, 64u << 10);
  std::vector<std::string_view> prefix = {std::string_view(large.body).substr(0, needed)};
  large.request.original_body = prefix;
  std::string from_prefix, from_whole;
  ASSERT_TRUE(build_dsn(large.request, from_prefix).ok());
  large.make();
  ASSERT_TRUE(build_dsn(large.request, from_whole).ok());
  EXPECT_EQ(from_prefix, from_whole);
}

TEST(dsn, long_values_are_folded_and_lines_bounded) {
  dsn_fixture f;
  std::string diagnostic = "550 5.7.1 ";
  for (int i = 0; i < 60; ++i) diagnostic += "word" + std::to_string(i) + " ";
  diagnostic += std::string(3000, 'x');  // no space to fold at
  diagnostic += "\r\nsecond line\x01";
  f.recipients[0].diagnostic = diagnostic;
  std::string address = std::string(300, 'a') + "@example.org";
  f.recipients[0].address = address;
  parsed_dsn dsn = f.build();  // unstuff() checks CRLF and <= 998 on every line
  std::size_t longest = 0, over_78 = 0;
  for (std::size_t at = 0; at < dsn.wire.size();) {
    std::size_t end = dsn.wire.find("\r\n", at);
    longest = std::max(longest, end - at);
    over_78 += end - at > 78;
    at = end + 2;
  }
  EXPECT_LE(longest, 998u);
  EXPECT_LE(over_78, 8u);  // only where no space allowed a fold
  std::string code = dsn.status_groups[1]["diagnostic-code"];
  EXPECT_TRUE(code.starts_with("smtp; 550 5.7.1 word0 word1")) << code;
  EXPECT_LE(code.size(), 6u + 900u + 8u);  // cut to diagnostic_bytes_max (+ fold spaces)
  EXPECT_EQ(code.find('\r'), std::string::npos);
  EXPECT_EQ(code.find('\x01'), std::string::npos);
  EXPECT_EQ(dsn.status_groups[1]["final-recipient"], "rfc822; " + address);
}

TEST(dsn, eight_bit_original_is_returned_as_8bit) {
  dsn_fixture f;
  f.body = wire_message(3, "caf\xc3\xa9 au lait\r\n");
  dsn_result result;
  parsed_dsn dsn = f.build(&result);
  EXPECT_EQ(result.body, spool::body_type::eight_bit_mime);
  EXPECT_FALSE(result.smtputf8);
  EXPECT_EQ(dsn.top.field("content-transfer-encoding"), "8bit");
  ASSERT_EQ(dsn.parts.size(), 3u);
  EXPECT_EQ(dsn.parts[2].field("content-type"), "message/rfc822");
  EXPECT_EQ(dsn.parts[2].field("content-transfer-encoding"), "8bit");
  EXPECT_EQ(dsn.parts[1].field("content-transfer-encoding"), "7bit");
  // A non-ASCII diagnostic is made ASCII outside global mode.
  f.recipients[0].diagnostic = "550 caf\xc3\xa9";
  dsn = f.build();
  EXPECT_EQ(dsn.status_groups[1]["diagnostic-code"], "smtp; 550 caf??");
}

TEST(dsn, smtputf8_uses_the_global_types) {
  dsn_fixture f;
  f.envelope.smtputf8 = true;
  f.envelope.reverse_path = "j\xc3\xbcrgen@example.com";
  f.recipients[0].address = "\xe5\xae\xa2\xe6\x88\xb7@example.org";
  f.body = "From: j\xc3\xbcrgen@example.com\r\nSubject: x\r\n\r\nhi\r\n";
  dsn_result result;
  parsed_dsn dsn = f.build(&result);
  EXPECT_TRUE(result.smtputf8);  // the DSN goes to a non-ASCII address
  EXPECT_EQ(result.body, spool::body_type::eight_bit_mime);
  EXPECT_EQ(parameter(dsn.top.field("content-type"), "report-type"), "global-delivery-status");
  ASSERT_EQ(dsn.parts.size(), 3u);
  EXPECT_EQ(dsn.parts[0].field("content-type"), "text/plain; charset=utf-8");
  EXPECT_EQ(dsn.parts[1].field("content-type"), "message/global-delivery-status");
  EXPECT_EQ(dsn.parts[1].field("content-transfer-encoding"), "8bit");
  EXPECT_EQ(dsn.parts[2].field("content-type"), "message/global");
  EXPECT_EQ(dsn.status_groups[1]["final-recipient"], "utf-8; \xe5\xae\xa2\xe6\x88\xb7@example.org");
  // Headers only in global mode: message/global-headers.
  f.envelope.ret = spool::dsn_return::headers;
  dsn = f.build();
  ASSERT_EQ(dsn.parts.size(), 3u);
  EXPECT_EQ(dsn.parts[2].field("content-type"), "message/global-headers");
  // An ASCII sender needs no SMTPUTF8 for the DSN itself (8BITMIME carries the parts).
  f.envelope.reverse_path = "juergen@example.com";
  f.build(&result);
  EXPECT_FALSE(result.smtputf8);
}

TEST(dsn, unsafe_original_falls_back_to_headers) {
  dsn_fixture f;
  f.body = wire_message(3, std::string(1200, 'y') + "\r\n");  // a body line over 998
  dsn_result result;
  parsed_dsn dsn = f.build(&result);
  EXPECT_FALSE(result.returned_full);
  EXPECT_FALSE(result.original_cut);
  ASSERT_EQ(dsn.parts.size(), 3u);
  EXPECT_EQ(dsn.parts[2].field("content-type"), "text/rfc822-headers");
  // A bad header line cuts the header section before it.
  f.body = "From: a@example.com\r\nX-Long: " + std::string(1200, 'z') +
           "\r\nSubject: s\r\n\r\nbody\r\n";
  dsn = f.build(&result);
  EXPECT_TRUE(result.original_cut);
  ASSERT_EQ(dsn.parts.size(), 3u);
  EXPECT_EQ(dsn.parts[2].body, "From: a@example.com\r\n");
  // Bare LF in the body: also headers only.
  f.body = "From: a@example.com\r\n\r\nbare\nlf\r\n";
  f.build(&result);
  EXPECT_FALSE(result.returned_full);
}

TEST(dsn, boundary_never_occurs_in_the_content) {
  dsn_fixture f;
  f.body = wire_message(3, "--=_ringmta_00000000000000ff_0\r\n=_ringmta_00000000000000ff_1\r\n");
  parsed_dsn dsn = f.build();
  std::string boundary = parameter(dsn.top.field("content-type"), "boundary");
  EXPECT_EQ(boundary, "=_ringmta_00000000000000ff_2");
  ASSERT_EQ(dsn.parts.size(), 3u);
  EXPECT_EQ(dsn.parts[2].body, unstuff(f.body));
}

TEST(dsn, success_report) {
  dsn_fixture f;
  f.recipients[0].action = dsn_action::relayed;
  f.recipients[0].status = status_code{2, 0, 0};
  f.recipients[0].diagnostic = "250 2.0.0 ok";
  dsn_result result;
  parsed_dsn dsn = f.build(&result);
  EXPECT_EQ(dsn.top.field("subject"), "Successful Mail Delivery Report");
  EXPECT_EQ(dsn.status_groups[1]["action"], "relayed");
  EXPECT_FALSE(result.returned_full);
  EXPECT_NE(dsn.parts[0].body.find("relayed"), std::string::npos) << dsn.parts[0].body;
  EXPECT_NE(dsn.parts[0].body.find("does not send"), std::string::npos) << dsn.parts[0].body;
}

// Issue 17: Remote-MTA is "dns; host.name"; a diagnostic that no server sent (an operator
// bounce) has an X- type, never "smtp;".
TEST(dsn, remote_mta_and_diagnostic_type) {
  dsn_fixture f;
  f.recipients[0].remote_mta = "mx.example.net";
  f.recipients[0].diagnostic = "550 5.1.1 no such user";
  parsed_dsn dsn = f.build();
  EXPECT_EQ(dsn.status_groups[1]["remote-mta"], "dns; mx.example.net");
  EXPECT_EQ(dsn.status_groups[1]["diagnostic-code"], "smtp; 550 5.1.1 no such user");
  dsn_fixture local;
  local.recipients[0].remote_mta = {};
  local.recipients[0].diagnostic = "bounced by the operator";
  local.recipients[0].diagnostic_type = "X-Ringmta";
  parsed_dsn bounced = local.build();
  EXPECT_EQ(bounced.status_groups[1]["diagnostic-code"], "X-Ringmta; bounced by the operator");
  EXPECT_EQ(bounced.status_groups[1].count("remote-mta"), 0u);
}

TEST(dsn, refuses_bad_requests) {
  dsn_fixture f;
  f.make();
  std::string out;
  f.envelope.reverse_path = "";  // RFC 5321 §4.5.5: never a DSN about a DSN
  auto result = build_dsn(f.request, out);
  EXPECT_FALSE(result.ok());
  EXPECT_EQ(result.error(), EINVAL);
  f.envelope.reverse_path = "alice@example.com";
  f.request.recipients = {};
  EXPECT_EQ(build_dsn(f.request, out).error(), EINVAL);
  std::vector<dsn_recipient> many(1001, f.recipients[0]);
  f.request.recipients = many;
  EXPECT_EQ(build_dsn(f.request, out).error(), E2BIG);
  f.request.original = nullptr;
  EXPECT_EQ(build_dsn(f.request, out).error(), EINVAL);
  EXPECT_TRUE(out.empty());
}

TEST(dsn, notify_policy) {
  using spool::notify_delay;
  using spool::notify_failure;
  using spool::notify_never;
  using spool::notify_success;
  const std::string_view sender = "alice@example.com";
  // Null reverse path: never, whatever NOTIFY says.
  for (auto action : {dsn_action::failed, dsn_action::delayed, dsn_action::delivered})
    EXPECT_FALSE(should_send_dsn("", notify_failure | notify_delay | notify_success, action));
  // Absent NOTIFY: FAILURE,DELAY.
  EXPECT_TRUE(should_send_dsn(sender, 0, dsn_action::failed));
  EXPECT_TRUE(should_send_dsn(sender, 0, dsn_action::delayed));
  EXPECT_FALSE(should_send_dsn(sender, 0, dsn_action::delivered));
  EXPECT_FALSE(should_send_dsn(sender, 0, dsn_action::relayed));
  // NEVER.
  EXPECT_FALSE(should_send_dsn(sender, notify_never, dsn_action::failed));
  EXPECT_FALSE(should_send_dsn(sender, notify_never, dsn_action::delayed));
  // Explicit lists.
  EXPECT_TRUE(should_send_dsn(sender, notify_success, dsn_action::delivered));
  EXPECT_TRUE(should_send_dsn(sender, notify_success, dsn_action::relayed));
  EXPECT_TRUE(should_send_dsn(sender, notify_success, dsn_action::expanded));
  EXPECT_FALSE(should_send_dsn(sender, notify_success, dsn_action::failed));
  EXPECT_TRUE(should_send_dsn(sender, notify_failure, dsn_action::failed));
  EXPECT_FALSE(should_send_dsn(sender, notify_failure, dsn_action::delayed));
  EXPECT_TRUE(should_send_dsn(sender, notify_delay, dsn_action::delayed));
  EXPECT_FALSE(should_send_dsn(sender, notify_delay, dsn_action::failed));
}

// Hostile inputs (random bytes with CR, LF, NUL, dots, 8-bit, long lines in the original,
// the diagnostic, the addresses): the output always parses and keeps every wire invariant.
TEST(dsn, random_inputs_keep_the_invariants) {
  std::mt19937_64 random(20240601);
  const char alphabet[] = {'a', ' ', '.', '\r', '\n', '\0', '\xc3', '\xa9', '-', '=', ':', '+'};
  auto random_text = [&](std::size_t length_max) {
    std::string text(std::uniform_int_distribution<std::size_t>(0, length_max)(random), 'a');
    for (char& c : text) {
      bool long_run = std::uniform_int_distribution<int>(0, 50)(random) == 0;
      c = long_run ? 'a' : alphabet[std::uniform_int_distribution<int>(0, 11)(random)];
    }
    return text;
  };
  int returned_full = 0;
  for (int round = 0; round < 2000 && !HasFailure(); ++round) {
    dsn_fixture f;
    std::string address = random_text(40) + "@x", diagnostic = random_text(1500);
    std::string remote = random_text(30), orcpt = "rfc822;" + random_text(30);
    f.recipients[0].address = address;
    f.recipients[0].diagnostic = diagnostic;
    f.recipients[0].remote_mta = remote;
    f.recipients[0].orcpt = orcpt;
    f.envelope.smtputf8 = round % 3 == 0;
    f.envelope.envid = random_text(20);
    f.envelope.ret = static_cast<spool::dsn_return>(round % 3);
    f.body = round % 2 ? wire_message(3, random_text(3000)) : random_text(3000);
    if (round % 4 == 3) {  // valid wire form with 8-bit, dots and spaces: returned whole
      std::string lines;
      for (char c : random_text(3000)) {
        if (lines.empty() || lines.ends_with("\n")) {
          if (c == '.') lines += '.';  // stuffed
        }
        lines += c == '\r' || c == '\n' || c == '\0' ? 'b' : c;
        if (std::uniform_int_distribution<int>(0, 60)(random) == 0) lines += "\r\n";
      }
      f.body = wire_message(3, lines + "\r\n");
    }
    dsn_result result;
    parsed_dsn dsn = f.build(&result);  // unstuff() checks CRLF, <= 998 and dots
    SCOPED_TRACE("round " + std::to_string(round));
    ASSERT_EQ(dsn.parts.size(), 3u);
    ASSERT_EQ(dsn.status_groups.size(), 2u);
    EXPECT_EQ(dsn.status_groups[1]["action"], "failed");
    returned_full += result.returned_full;
    if (result.returned_full) {
      std::string expected = f.body.ends_with("\r\n") || f.body.empty() ? f.body
                                                                         : f.body + "\r\n";
      EXPECT_EQ(dsn.parts[2].body, unstuff(expected));
    }
  }
  EXPECT_GT(returned_full, 200);  // the whole-message path was exercised too
}

TEST(dsn, dates) {
  EXPECT_EQ(format_rfc5322_date(0), "Thu, 01 Jan 1970 00:00:00 +0000");
  EXPECT_EQ(format_rfc5322_date(1'700'000'000), "Tue, 14 Nov 2023 22:13:20 +0000");
  EXPECT_EQ(format_rfc5322_date(951'782'400), "Tue, 29 Feb 2000 00:00:00 +0000");
  EXPECT_EQ(format_rfc5322_date(4'102'444'799), "Thu, 31 Dec 2099 23:59:59 +0000");
  EXPECT_EQ(format_rfc5322_date(-1), "Wed, 31 Dec 1969 23:59:59 +0000");
}

TEST(dsn, status_codes) {
  EXPECT_EQ(parse_status_code("5.1.1"), (status_code{5, 1, 1}));
  EXPECT_EQ(parse_status_code("4.7.999"), (status_code{4, 7, 999}));
  EXPECT_FALSE(parse_status_code("3.1.1"));
  EXPECT_FALSE(parse_status_code("5.1"));
  EXPECT_FALSE(parse_status_code("5.1.1 "));
  EXPECT_FALSE(parse_status_code("5.1000.1"));
  EXPECT_FALSE(parse_status_code(""));
  EXPECT_STREQ(format_status_code(status_code{2, 0, 0}).data(), "2.0.0");
  EXPECT_STREQ(format_status_code(status_code{}).data(), "");
}

}  // namespace
}  // namespace ringmta::queue
