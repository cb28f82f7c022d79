#include "ringmta/net/proxy_protocol.h"

#include <string>

#include <gtest/gtest.h>

namespace ringmta::net {
namespace {

using namespace std::string_literals;

const std::string v2_signature = "\r\n\r\n\0\r\nQUIT\n"s;

std::string v2_header(unsigned char command, unsigned char family, const std::string& body) {
  std::string header = v2_signature;
  header += static_cast<char>(0x20 | command);
  header += static_cast<char>(family);
  header += static_cast<char>(body.size() >> 8);
  header += static_cast<char>(body.size() & 0xff);
  return header + body;
}

TEST(proxy_v1, tcp4_header_then_smtp_bytes) {
  const std::string input = "PROXY TCP4 192.0.2.7 127.0.0.1 56324 25\r\nEHLO x\r\n";
  const auto result = parse_proxy_header(input);
  ASSERT_EQ(result.status, proxy_status::done) << result.problem;
  EXPECT_EQ(result.header_bytes, input.find("EHLO"));
  ASSERT_TRUE(result.has_addresses);
  EXPECT_EQ(result.source.to_string(), "192.0.2.7:56324");
  EXPECT_EQ(result.destination.to_string(), "127.0.0.1:25");
}

TEST(proxy_v1, tcp6_and_unknown) {
  const auto v6 = parse_proxy_header("PROXY TCP6 2001:db8::1 ::1 1000 2525\r\n");
  ASSERT_EQ(v6.status, proxy_status::done) << v6.problem;
  EXPECT_EQ(v6.source.to_string(), "[2001:db8::1]:1000");
  const auto unknown = parse_proxy_header("PROXY UNKNOWN ffff::1 ::1 1 2\r\n");
  ASSERT_EQ(unknown.status, proxy_status::done);
  EXPECT_FALSE(unknown.has_addresses);
}

TEST(proxy_v1, every_prefix_needs_more) {
  const std::string input = "PROXY TCP4 192.0.2.7 127.0.0.1 56324 25\r\n";
  for (std::size_t n = 0; n < input.size(); ++n)
    EXPECT_EQ(parse_proxy_header(input.substr(0, n)).status, proxy_status::need_more) << n;
}

TEST(proxy_v1, malformed_headers_are_invalid) {
  for (const std::string& bad : std::initializer_list<std::string>{
           "EHLO example.com\r\n", "PROXY TCP5 1.2.3.4 1.2.3.4 1 2\r\n",
           "PROXY TCP4 1.2.3.4 1.2.3.4 1\r\n", "PROXY TCP4 1.2.3.4 1.2.3.4 01 2\r\n",
           "PROXY TCP4 1.2.3.4 1.2.3.4 1 65536\r\n", "PROXY TCP4 ::1 1.2.3.4 1 2\r\n",
           "PROXY TCP6 1.2.3.4 ::1 1 2\r\n", "PROXY TCP4  1.2.3.4 1.2.3.4 1 2\r\n",
           "PROXY TCP4 1.2.3.4 1.2.3.4 1 2 3\r\n", "PROXY TCP4 1.2.3.4 1.2.3.4 1 2\n",
           "PROXY " + std::string(120, 'A')}) {
    EXPECT_EQ(parse_proxy_header(bad).status, proxy_status::invalid) << bad;
  }
}

TEST(proxy_v2, tcp4_with_tlvs) {
  std::string body = "\xc0\x00\x02\x07\x7f\x00\x00\x01\xdc\x04\x00\x19"s;
  body += "\x03\x00\x04\x01\x02\x03\x04"s;  // a CRC32C TLV we skip
  const std::string input = v2_header(1, 0x11, body) + "EHLO";
  const auto result = parse_proxy_header(input);
  ASSERT_EQ(result.status, proxy_status::done) << result.problem;
  EXPECT_EQ(result.header_bytes, input.size() - 4);
  EXPECT_EQ(result.source.to_string(), "192.0.2.7:56324");
  EXPECT_EQ(result.destination.to_string(), "127.0.0.1:25");
  for (std::size_t n = 0; n < input.size() - 4; ++n)
    EXPECT_EQ(parse_proxy_header(input.substr(0, n)).status, proxy_status::need_more) << n;
}

TEST(proxy_v2, tcp6_local_and_unspec) {
  std::string body(36, '\0');
  body[15] = 1;                   // source ::1
  body[31] = 2;                   // destination ::2
  body[32] = 0x04, body[33] = 0;  // port 1024
  body[34] = 0, body[35] = 25;
  const auto v6 = parse_proxy_header(v2_header(1, 0x21, body));
  ASSERT_EQ(v6.status, proxy_status::done);
  EXPECT_EQ(v6.source.to_string(), "[::1]:1024");
  EXPECT_EQ(v6.destination.to_string(), "[::2]:25");
  const auto local = parse_proxy_header(v2_header(0, 0x11, std::string(12, '\0')));
  ASSERT_EQ(local.status, proxy_status::done);
  EXPECT_FALSE(local.has_addresses);
  const auto unspec = parse_proxy_header(v2_header(1, 0x00, ""));
  ASSERT_EQ(unspec.status, proxy_status::done);
  EXPECT_FALSE(unspec.has_addresses);
}

TEST(proxy_v2, malformed_headers_are_invalid) {
  std::string bad_version = v2_header(1, 0x11, std::string(12, '\0'));
  bad_version[12] = 0x11;
  EXPECT_EQ(parse_proxy_header(bad_version).status, proxy_status::invalid);
  EXPECT_EQ(parse_proxy_header(v2_header(2, 0x11, std::string(12, '\0'))).status,
            proxy_status::invalid);
  EXPECT_EQ(parse_proxy_header(v2_header(1, 0x11, std::string(8, '\0'))).status,
            proxy_status::invalid);
  EXPECT_EQ(parse_proxy_header(v2_header(1, 0x41, std::string(12, '\0'))).status,
            proxy_status::invalid);
  EXPECT_EQ(parse_proxy_header(v2_header(1, 0x11, std::string(4000, '\0'))).status,
            proxy_status::invalid);
  EXPECT_EQ(parse_proxy_header("\r\n\r\nX").status, proxy_status::invalid);
}

// Issue 17 item 7: a header sent one byte per segment must complete, in v1 and v2, and bytes
// that come with the last piece are counted as trailing (an early talker).
TEST(proxy_reader, header_one_byte_per_piece) {
  const std::string v1 = "PROXY TCP4 192.0.2.7 192.0.2.1 4321 25\r\n";
  std::string body(12, '\0');
  body[0] = 10, body[3] = 9, body[8] = 0x10, body[11] = 25;
  for (const auto& header : {v1, v2_header(1, 0x11, body)}) {
    proxy_header_reader reader;
    proxy_result result;
    for (std::size_t i = 0; i + 1 < header.size(); ++i) {
      result = reader.feed(header.substr(i, 1));
      ASSERT_EQ(result.status, proxy_status::need_more) << i;
    }
    result = reader.feed(header.substr(header.size() - 1) + "EHLO");
    ASSERT_EQ(result.status, proxy_status::done) << result.problem;
    EXPECT_EQ(result.header_bytes, header.size());
    EXPECT_EQ(reader.trailing_bytes(), 4u);
    EXPECT_TRUE(result.has_addresses);
  }
}

TEST(proxy_reader, garbage_in_pieces_is_invalid_and_reset_starts_over) {
  proxy_header_reader reader;
  EXPECT_EQ(reader.feed("PRO").status, proxy_status::need_more);
  EXPECT_EQ(reader.feed("XZ").status, proxy_status::invalid);
  reader.reset();
  EXPECT_EQ(reader.feed("PROXY UNKNOWN\r\n").status, proxy_status::done);
  EXPECT_EQ(reader.trailing_bytes(), 0u);
}

}  // namespace
}  // namespace ringmta::net
