#include "ringmta/net/received_header.h"

#include <string>

#include <gtest/gtest.h>

namespace ringmta::net {
namespace {

std::string format(const received_fields& fields) {
  char out[received_header_bytes_max];
  return std::string(out, format_received_header(fields, out, sizeof out));
}

TEST(received_header, rfc5321_trace_format) {
  received_fields fields{"client.example", "192.0.2.7", "mx.example.com", "ESMTPS",
                         "0GXK3M2Q7A1", "bob@example.com", 1795298135};
  EXPECT_EQ(format(fields),
            "Received: from client.example ([192.0.2.7])\r\n"
            "\tby mx.example.com (ringmta) with ESMTPS id 0GXK3M2Q7A1\r\n"
            "\tfor <bob@example.com>;\r\n"
            "\tSat, 21 Nov 2026 21:55:35 +0000\r\n");
}

TEST(received_header, tls_line_as_postfix_writes_it) {
  received_fields fields{"client.example", "192.0.2.7", "mx.example.com", "ESMTPS",
                         "0GXK3M2Q7A1", "", 1795298135,
                         "(using TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits))"};
  EXPECT_EQ(format(fields),
            "Received: from client.example ([192.0.2.7])\r\n"
            "\t(using TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits))\r\n"
            "\tby mx.example.com (ringmta) with ESMTPS id 0GXK3M2Q7A1;\r\n"
            "\tSat, 21 Nov 2026 21:55:35 +0000\r\n");
}

TEST(received_header, hostile_helo_cannot_add_lines_or_comments) {
  received_fields fields{"evil)\r\nX-Injected: yes (", "2001:db8::1", "mx", "ESMTP", "Q1", "",
                         0};
  const auto header = format(fields);
  EXPECT_EQ(header.find("X-Injected: yes\r\n"), std::string::npos);
  EXPECT_NE(header.find("from evil___X-Injected:_yes__ ([2001:db8::1])"), std::string::npos)
      << header;
  EXPECT_EQ(header.find("for <"), std::string::npos);  // several or no recipients: no "for"
  EXPECT_NE(header.find("Thu, 01 Jan 1970 00:00:00 +0000\r\n"), std::string::npos);
}

// Issue 17 item 3: an SMTPUTF8 message keeps the UTF-8 address (RFC 6532), as Postfix and
// Exim do; malformed UTF-8 and CR/LF still become '_'; a non-SMTPUTF8 message stays ASCII.
TEST(received_header, utf8_for_clause_of_an_smtputf8_message) {
  received_fields fields{"client.example", "192.0.2.7", "mx.example.com", "UTF8SMTP", "Q1",
                         "b\xC3\xB6" "b@b\xC3\xBC" "cher.test", 0};
  fields.utf8 = true;
  EXPECT_NE(format(fields).find("\tfor <b\xC3\xB6" "b@b\xC3\xBC" "cher.test>;\r\n"),
            std::string::npos) << format(fields);
  fields.single_recipient = "x\xC3@y\xED\xA0\x80\r\n.test";  // cut sequence, surrogate, CRLF
  EXPECT_NE(format(fields).find("for <x_@y_____.test>"), std::string::npos) << format(fields);
  fields.utf8 = false;
  fields.single_recipient = "b\xC3\xB6" "b@example.com";
  EXPECT_NE(format(fields).find("for <b__b@example.com>"), std::string::npos);
}

TEST(received_header, oversized_fields_are_truncated_within_the_buffer) {
  const std::string huge(5000, 'a');
  received_fields fields{huge, huge, huge, huge, huge, huge, 0};
  char out[received_header_bytes_max];
  const auto length = format_received_header(fields, out, sizeof out);
  ASSERT_LE(length, sizeof out);
  const std::string header(out, length);
  EXPECT_EQ(header.substr(header.size() - 34), "\tThu, 01 Jan 1970 00:00:00 +0000\r\n");
}

}  // namespace
}  // namespace ringmta::net
