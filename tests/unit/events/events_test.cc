// events: the event log's file format and cursor, record conversion, the URL parser and the
// bounce classifier against real provider replies.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

#include <fmt/format.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "ringmta/events/bounce_class.h"
#include "ringmta/events/event_log.h"
#include "ringmta/events/record.h"
#include "ringmta/events/webhook.h"

namespace ringmta::events {
namespace {

namespace fs = std::filesystem;

struct temp_dir {
  fs::path path;
  temp_dir() {
    char pattern[] = "/tmp/ringmta-events-XXXXXX";
    path = ::mkdtemp(pattern);
  }
  ~temp_dir() { fs::remove_all(path); }
};

std::string record(int n) {
  return "{\"ts\":\"2026-12-06T12:00:00.000Z\",\"event\":\"delivered\",\"n\":" +
         std::to_string(n) + "}\n";
}

std::vector<int> numbers(const batch& b) {
  std::vector<int> out;
  for (const auto& r : nlohmann::json::parse(b.json)) out.push_back(r.at("n").get<int>());
  return out;
}

std::unique_ptr<event_log> open_log(const fs::path& dir, std::uint64_t backlog = 1u << 30) {
  std::string problem;
  auto log = event_log::open(dir.string(), backlog, problem);
  EXPECT_NE(log, nullptr) << problem;
  return log;
}

TEST(cursor, round_trips_and_refuses_garbage) {
  const position at{0x1f, 12345};
  EXPECT_EQ(format_cursor(at), "ringmta-events-cursor 1 31 12345\n");
  EXPECT_EQ(parse_cursor(format_cursor(at)), at);
  for (const char* bad : {"", "ringmta-events-cursor 1 31 12345", "ringmta-events-cursor 1 31\n",
                          "ringmta-events-cursor 2 1 2\n", "ringmta-events-cursor 1 -1 2\n",
                          "ringmta-events-cursor 1 1 2 3\n", "ringmta-events-cursor 1 1 x\n",
                          "ringmta-events-cursor 1 99999999999999999999 0\n"})
    EXPECT_FALSE(parse_cursor(bad)) << bad;
}

TEST(segment_names, are_sixteen_hex_digits) {
  EXPECT_EQ(segment_name(0xa1), "00000000000000a1.jsonl");
  EXPECT_EQ(parse_segment_name("00000000000000a1.jsonl"), 0xa1u);
  EXPECT_FALSE(parse_segment_name("00000000000000A1.jsonl"));
  EXPECT_FALSE(parse_segment_name("a1.jsonl"));
  EXPECT_FALSE(parse_segment_name("00000000000000a1.json"));
  EXPECT_FALSE(parse_segment_name("cursor"));
}

TEST(event_log, batches_in_order_and_acknowledges_durably) {
  temp_dir dir;
  auto log = open_log(dir.path);
  for (int n = 0; n < 5; ++n) log->append(record(n));
  auto first = log->read(3, 1 << 20);
  EXPECT_EQ(first.records, 3u);
  EXPECT_TRUE(first.full);
  EXPECT_EQ(numbers(first), (std::vector<int>{0, 1, 2}));
  // Each record carries its place in the log: the same after a restart.
  const auto parsed = nlohmann::json::parse(first.json);
  EXPECT_EQ(parsed[0].at("event_id"), fmt::format("{:x}-0", first.start.segment));
  EXPECT_EQ(parsed[0].at("event"), "delivered");
  // Not acknowledged: read again, the same batch.
  EXPECT_EQ(log->read(3, 1 << 20).json, first.json);
  ASSERT_TRUE(log->acknowledge(first.end));
  auto second = log->read(10, 1 << 20);
  EXPECT_EQ(numbers(second), (std::vector<int>{3, 4}));
  EXPECT_FALSE(second.full);
  // A restart resends from the cursor: only what was not acknowledged.
  log.reset();
  std::ifstream cursor(dir.path / "cursor");
  std::string text((std::istreambuf_iterator<char>(cursor)), {});
  EXPECT_EQ(parse_cursor(text), first.end);
  log = open_log(dir.path);
  auto again = log->read(10, 1 << 20);
  EXPECT_EQ(numbers(again), (std::vector<int>{3, 4}));
  EXPECT_EQ(nlohmann::json::parse(again.json), nlohmann::json::parse(second.json));
  log->append(record(5));  // the new segment follows
  ASSERT_TRUE(log->acknowledge(again.end));
  auto third = log->read(10, 1 << 20);
  EXPECT_EQ(numbers(third), (std::vector<int>{5}));
  ASSERT_TRUE(log->acknowledge(third.end));
  EXPECT_EQ(log->backlog_bytes(), 0u);
  EXPECT_TRUE(log->read(10, 1 << 20).empty());
  // Acknowledged segments are removed: only the one being written remains.
  int segments = 0;
  for (const auto& entry : fs::directory_iterator(dir.path))
    segments += parse_segment_name(entry.path().filename().string()).has_value();
  EXPECT_EQ(segments, 1);
}

TEST(event_log, restarts_with_nothing_to_send_leave_one_segment) {
  temp_dir dir;
  position last;
  for (int start = 0; start < 5; ++start) {
    auto log = open_log(dir.path);
    EXPECT_TRUE(log->read(10, 1 << 20).empty());
    last = log->cursor();
  }
  int segments = 0;
  for (const auto& entry : fs::directory_iterator(dir.path))
    segments += parse_segment_name(entry.path().filename().string()).has_value();
  EXPECT_EQ(segments, 1);
  // The cursor kept moving forward with the segment numbers (never reused).
  auto log = open_log(dir.path);
  log->append(record(7));
  EXPECT_GT(log->read(10, 1 << 20).start.segment, last.segment);
}

TEST(event_log, bytes_limit_a_batch_but_never_below_one_record) {
  temp_dir dir;
  auto log = open_log(dir.path);
  for (int n = 0; n < 4; ++n) log->append(record(n));
  auto one = log->read(100, 10);
  EXPECT_EQ(one.records, 1u);
  EXPECT_TRUE(one.full);
}

TEST(event_log, a_torn_tail_is_skipped_after_a_crash) {
  temp_dir dir;
  {
    auto log = open_log(dir.path);
    log->append(record(0));
  }
  // A power loss tore the last line: only part of it reached the disk.
  for (const auto& entry : fs::directory_iterator(dir.path)) {
    if (!parse_segment_name(entry.path().filename().string())) continue;
    std::ofstream(entry.path(), std::ios::app) << "{\"ts\":\"2026-12-06T12:0";
  }
  auto log = open_log(dir.path);
  log->append(record(1));
  auto b = log->read(10, 1 << 20);
  EXPECT_EQ(numbers(b), (std::vector<int>{0}));
  EXPECT_EQ(b.invalid, 1u);  // the tail: no record, skipped with the batch before it, counted
  ASSERT_TRUE(log->acknowledge(b.end));
  b = log->read(10, 1 << 20);
  EXPECT_EQ(numbers(b), (std::vector<int>{1}));
  EXPECT_EQ(log->counters().invalid.read(), 1u);
}

TEST(event_log, a_corrupt_cursor_resends_everything_kept) {
  temp_dir dir;
  {
    auto log = open_log(dir.path);
    log->append(record(0));
    log->append(record(1));
    ASSERT_TRUE(log->acknowledge(log->read(1, 1 << 20).end));
  }
  std::ofstream(dir.path / "cursor") << "garbage";
  std::string problem;
  auto log = event_log::open(dir.path.string(), 1u << 30, problem);
  ASSERT_NE(log, nullptr);
  EXPECT_NE(problem.find("not a cursor"), std::string::npos);
  EXPECT_EQ(numbers(log->read(10, 1 << 20)), (std::vector<int>{0, 1}));
}

TEST(event_log, the_backlog_limit_drops_the_oldest_and_counts_them) {
  temp_dir dir;
  auto log = open_log(dir.path, 1u << 20);  // 1 MiB: segments of 256 KiB
  const std::string padding(1000, 'x');
  int written = 0;
  for (; written < 3000; ++written) {
    log->append("{\"event\":\"delivered\",\"n\":" + std::to_string(written) + ",\"pad\":\"" +
                padding + "\"}\n");
  }
  EXPECT_LE(log->backlog_bytes(), 1u << 20);
  const auto dropped = log->counters().dropped.read();
  EXPECT_GT(dropped, 0u);
  EXPECT_EQ(log->take_dropped_report(), dropped);
  EXPECT_EQ(log->take_dropped_report(), 0u);
  // What is left is the newest, in order, none missing after the first kept.
  int expected = static_cast<int>(dropped);
  for (;;) {
    auto b = log->read(500, 1 << 22);
    if (b.empty()) break;
    for (const int n : numbers(b)) EXPECT_EQ(n, expected++);
    ASSERT_TRUE(log->acknowledge(b.end));
  }
  EXPECT_EQ(expected, written);
}

TEST(event_log, an_acknowledgement_behind_a_drop_does_not_move_the_cursor_back) {
  temp_dir dir;
  auto log = open_log(dir.path, 1u << 20);
  log->append(record(0));
  auto old = log->read(10, 1 << 20);
  const std::string padding(1000, 'y');
  for (int n = 1; n < 3000; ++n)
    log->append("{\"event\":\"delivered\",\"n\":" + std::to_string(n) + ",\"pad\":\"" + padding +
                "\"}\n");
  const position after_drop = log->cursor();
  ASSERT_GT(after_drop, old.end);
  EXPECT_TRUE(log->acknowledge(old.end));
  EXPECT_EQ(log->cursor(), after_drop);
}

TEST(records, json_lines_pass_and_invalid_utf8_is_replaced) {
  const std::string line = R"({"ts":"2026-12-06T12:00:00.000Z","event":"received","n":1})";
  EXPECT_EQ(record_to_json(line), line);
  const auto fixed = record_to_json("{\"event\":\"received\",\"from\":\"a\xff@b\"}");
  ASSERT_TRUE(fixed);
  EXPECT_EQ(nlohmann::json::parse(*fixed).at("from"), "a\xef\xbf\xbd@b");
  EXPECT_FALSE(record_to_json("{\"event\":"));
  EXPECT_EQ(valid_utf8("caf\xc3\xa9"), "caf\xc3\xa9");
  EXPECT_EQ(valid_utf8("\xc0\xaf"), "\xef\xbf\xbd\xef\xbf\xbd");      // overlong
  EXPECT_EQ(valid_utf8("\xed\xa0\x80"), "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd");  // surrogate
}

TEST(records, text_records_become_json_objects) {
  const auto json = record_to_json(
      "2026-12-06T12:00:00.000Z bounced id=0123456789abcdef to=\"a b@example.com\" "
      "attempt=2 delay=1.5 tls_verified=false reply=\"550 5.1.1 \\\"no\\\"\"");
  ASSERT_TRUE(json);
  const auto object = nlohmann::json::parse(*json);
  EXPECT_EQ(object.at("ts"), "2026-12-06T12:00:00.000Z");
  EXPECT_EQ(object.at("event"), "bounced");
  EXPECT_EQ(object.at("id"), "0123456789abcdef");
  EXPECT_EQ(object.at("to"), "a b@example.com");
  EXPECT_EQ(object.at("attempt"), 2);
  EXPECT_EQ(object.at("delay"), 1.5);
  EXPECT_EQ(object.at("tls_verified"), false);
  EXPECT_EQ(object.at("reply"), "550 5.1.1 \"no\"");
  EXPECT_FALSE(record_to_json("2026-12-06T12:00:00.000Z bounced to=\"unterminated"));
  EXPECT_FALSE(record_to_json("not a record"));
}

TEST(records, the_type_filter_keeps_the_chosen_types) {
  const type_filter some({"delivered", "bounced"});
  EXPECT_TRUE(some.wants("bounced"));
  EXPECT_FALSE(some.wants("connect"));
  EXPECT_TRUE(type_filter({"all"}).wants("connect"));
  for (const auto type : default_event_types()) {
    const auto known = known_event_types();
    EXPECT_NE(std::find(known.begin(), known.end(), type), known.end()) << type;
  }
}

TEST(records, the_tap_appends_only_wanted_records) {
  temp_dir dir;
  std::shared_ptr<event_log> log = open_log(dir.path);
  event_tap tap(log, type_filter({"delivered"}));
  tap.append(
      "{\"ts\":\"2026-12-06T12:00:00.000Z\",\"event\":\"connect\",\"n\":0}\n"
      "{\"ts\":\"2026-12-06T12:00:00.000Z\",\"event\":\"delivered\",\"n\":1}\n"
      "2026-12-06T12:00:00.001Z delivered n=2\n");
  EXPECT_EQ(numbers(log->read(10, 1 << 20)), (std::vector<int>{1, 2}));
}

TEST(endpoint_url, parses_what_operators_write) {
  auto url = parse_endpoint_url("http://127.0.0.1:8080/hooks/mail?x=1");
  ASSERT_TRUE(url);
  EXPECT_EQ(url->origin, "http://127.0.0.1:8080");
  EXPECT_EQ(url->path, "/hooks/mail?x=1");
  EXPECT_FALSE(url->https);
  url = parse_endpoint_url("https://events.example.com");
  ASSERT_TRUE(url);
  EXPECT_EQ(url->origin, "https://events.example.com");
  EXPECT_EQ(url->path, "/");
  EXPECT_TRUE(url->https);
  url = parse_endpoint_url("http://[::1]:9000/e");
  ASSERT_TRUE(url);
  EXPECT_EQ(url->origin, "http://[::1]:9000");
  for (const char* bad : {"", "ftp://x/", "http://", "http://:80/", "http://h:0/", "http://h:/",
                          "http://h:65536/", "http://user@h/", "http://h x/", "http://[::1/",
                          "http://h/a b", "127.0.0.1:8080"})
    EXPECT_FALSE(parse_endpoint_url(bad)) << bad;
}

// Real replies, as providers send them (joined onto one line as the relay logs them).
struct sample {
  std::uint16_t code;
  const char* status;
  const char* text;
  const char* klass;
};

TEST(bounce_classifier, classifies_real_provider_replies_with_the_shipped_rules) {
  std::string problem;
  const auto rules = bounce_classifier::load("", problem);
  ASSERT_NE(rules, nullptr) << problem;
  const sample samples[] = {
      {550, "5.1.1", "550 5.1.1 The email account that you tried to reach does not exist. "
                     "Please try double-checking the recipient's email address for typos or "
                     "unnecessary spaces. For more information, go to "
                     "https://support.google.com/mail/?p=NoSuchUser", "bad-mailbox"},
      {552, "5.2.2", "552 5.2.2 The recipient's inbox is out of storage space and inactive. "
                     "Please direct the recipient to https://support.google.com/mail/?p=OverQuotaPerm",
       "mailbox-full"},
      {452, "4.2.2", "452 4.2.2 The recipient's inbox is out of storage space. Please direct "
                     "the recipient to https://support.google.com/mail/?p=OverQuotaTemp",
       "mailbox-full"},
      {421, "4.7.28", "421 4.7.28 Gmail has detected an unusual rate of unsolicited mail "
                      "originating from your IP address. To protect our users from spam, mail "
                      "sent from your IP address has been temporarily rate limited.",
       "spam-block"},
      {550, "5.7.1", "550 5.7.1 Our system has detected that this message is likely "
                     "unsolicited mail. To reduce the amount of spam sent to Gmail, this "
                     "message has been blocked.", "spam-block"},
      {550, "5.7.26", "550 5.7.26 This mail is unauthenticated, which poses a security risk "
                      "to the sender and Gmail users, and has been blocked.", "policy"},
      {450, "4.2.1", "450 4.2.1 The user you are trying to contact is receiving mail at a "
                     "rate that prevents additional messages from being delivered.",
       "rate-limit"},
      {550, "5.7.1", "550 5.7.1 Service unavailable, Client host [192.0.2.1] blocked using "
                     "Spamhaus. To request removal from this list see "
                     "https://www.spamhaus.org/query/ip/192.0.2.1 (AS3130)", "spam-block"},
      {550, "5.4.1", "550 5.4.1 Recipient address rejected: Access denied. "
                     "[DB5EUR03FT012.eop-EUR03.prod.protection.outlook.com]", "bad-mailbox"},
      {421, "4.7.0", "421 4.7.0 [TSS04] Messages from 192.0.2.1 temporarily deferred due to "
                     "unexpected volume or user complaints - 4.16.55.1", "spam-block"},
      {554, "5.7.9", "554 5.7.9 Message not accepted for policy reasons.", "policy"},
      {550, "", "550 Requested action not taken: mailbox unavailable", "bad-mailbox"},
      {550, "5.2.1", "550 5.2.1 The email account that you tried to reach is disabled.",
       "inactive-mailbox"},
      {552, "5.3.4", "552 5.3.4 Your message exceeded Google's message size limits.",
       "content"},
      {554, "5.6.0", "554 5.6.0 Message contains invalid header", "content"},
      {0, "4.4.1", "connection refused by mx.example.com [192.0.2.1]:25", "routing"},
      {0, "", "no MX or address for example.invalid", "routing"},
      {500, "5.5.2", "500 5.5.2 Syntax error, command unrecognized", "protocol"},
      {503, "", "503 bad sequence of commands", "protocol"},
      {553, "5.1.3", "553 5.1.3 The recipient address <x@> is not a valid RFC 5321 address.",
       "bad-mailbox"},
      {550, "5.1.2", "550 5.1.2 Host unknown", "bad-domain"},
      {451, "4.3.0", "451 4.3.0 Temporary local problem", "other"},
  };
  for (const auto& s : samples)
    EXPECT_EQ(rules->classify(s.code, s.status, s.text), s.klass) << s.text;
}

TEST(bounce_classifier, the_first_matching_rule_wins_and_every_pattern_must_match) {
  std::string problem;
  const auto rules = bounce_classifier::parse(R"(
[[rule]]
class = "policy"
code = '554'
text = '(?i)policy'
[[rule]]
class = "protocol"
code = '5[0-9][0-9]'
)", "test.toml", problem);
  ASSERT_NE(rules, nullptr) << problem;
  EXPECT_EQ(rules->rule_count(), 2u);
  EXPECT_EQ(rules->classify(554, "", "554 rejected for POLICY reasons"), "policy");
  EXPECT_EQ(rules->classify(554, "", "554 no"), "protocol");
  EXPECT_EQ(rules->classify(450, "", "450 no"), "other");
  EXPECT_EQ(rules->classify(0, "", "local"), "other");
}

TEST(bounce_classifier, bad_rules_name_file_and_line) {
  const struct {
    const char* toml;
    const char* expected;
  } cases[] = {
      {"[[rule]]\nclass = \"nonsense\"\ntext = 'x'\n", "test.toml:1: rule.class: expected one of"},
      {"[[rule]]\nclass = \"policy\"\ntext = '('\n", "test.toml:1: rule.text: missing )"},
      {"[[rule]]\nclass = \"policy\"\n", "a rule needs"},
      {"[[rule]]\nclass = \"policy\"\nwhat = 'x'\n", "rule.what: unknown key"},
      {"[[rule]]\nclass = \"policy\"\ntext = 3\n", "expected a string"},
      {"rule = 3\n", "only [[rule]] tables"},
      {"[[rule]\n", "test.toml:1"},
  };
  for (const auto& c : cases) {
    std::string problem;
    EXPECT_EQ(bounce_classifier::parse(c.toml, "test.toml", problem), nullptr) << c.toml;
    EXPECT_NE(problem.find(c.expected), std::string::npos) << problem;
  }
  std::string problem;
  EXPECT_EQ(bounce_classifier::load("/nonexistent/rules.toml", problem), nullptr);
  EXPECT_NE(problem.find("cannot read"), std::string::npos);
}

TEST(bounce_classifier, the_shipped_file_is_the_builtin_rules) {
  std::ifstream in(std::string(RINGMTA_SOURCE_ROOT) + "/conf/bounce-classes.toml");
  std::string text((std::istreambuf_iterator<char>(in)), {});
  EXPECT_EQ(text, bounce_classifier::builtin_rules());
}

}  // namespace
}  // namespace ringmta::events
