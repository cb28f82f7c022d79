// outbound delivery helpers: xtext, NOTIFY keywords and the engine envelope built from a
// spooled envelope (recipient subset and order, DSN parameters, body type, limits).
#include "ringmta/outbound/delivery.h"

#include <gtest/gtest.h>

#include <string>

namespace ringmta::outbound {
namespace {

TEST(xtext, encodes_plus_equals_and_non_printables) {
  std::string out;
  append_xtext(out, "a+b=c d\x01\xc3\xa9~!");
  EXPECT_EQ(out, "a+2Bb+3Dc+20d+01+C3+A9~!");
}

TEST(notify_keywords, lists_rfc3461_keywords) {
  EXPECT_EQ(notify_keywords(0), "");
  EXPECT_EQ(notify_keywords(spool::notify_never), "NEVER");
  EXPECT_EQ(notify_keywords(spool::notify_success | spool::notify_failure), "SUCCESS,FAILURE");
  EXPECT_EQ(notify_keywords(spool::notify_delay | spool::notify_failure), "FAILURE,DELAY");
  EXPECT_EQ(notify_keywords(spool::notify_success | spool::notify_failure | spool::notify_delay),
            "SUCCESS,FAILURE,DELAY");
}

spool::envelope sample() {
  spool::envelope value;
  value.reverse_path = "sender@example.org";
  value.body = spool::body_type::binary_mime;
  value.smtputf8 = true;
  value.ret = spool::dsn_return::headers;
  value.envid = "id 1+2";
  value.recipients = {
      {"a@example.net", spool::notify_success | spool::notify_failure, "rfc822;a+x@example.net"},
      {"b@example.net", 0, ""},
      {"c@example.net", spool::notify_never, "utf-8;c\\x{E9}@example.net"},
  };
  return value;
}

TEST(envelope_storage, builds_the_engine_envelope_for_a_recipient_subset) {
  envelope_storage storage;
  const std::uint16_t chosen[] = {2, 0};
  const smtp::client_envelope& built = storage.assign(sample(), chosen, 1234);
  EXPECT_EQ(built.reverse_path, "sender@example.org");
  EXPECT_EQ(built.size_bytes, 1234u);
  // BINARYMIME is stored in DATA wire form: it goes out as 8BITMIME.
  EXPECT_EQ(built.body, smtp::client_body_type::eight_bit_mime);
  EXPECT_TRUE(built.smtputf8);
  EXPECT_EQ(built.dsn_ret, "HDRS");
  EXPECT_EQ(built.dsn_envid, "id+201+2B2");
  ASSERT_EQ(built.recipients.size(), 2u);
  EXPECT_EQ(built.recipients[0].address, "c@example.net");
  EXPECT_EQ(built.recipients[0].notify, "NEVER");
  EXPECT_EQ(built.recipients[0].orcpt, "utf-8;c\\x{E9}@example.net");  // kept as it came
  EXPECT_EQ(built.recipients[1].address, "a@example.net");
  EXPECT_EQ(built.recipients[1].notify, "SUCCESS,FAILURE");
  EXPECT_EQ(built.recipients[1].orcpt, "rfc822;a+2Bx@example.net");
}

// RFC 6531 §3.2: for a next hop without SMTPUTF8, an address whose only non-ASCII part is its
// domain has an A-label form; an ASCII address needs none, a non-ASCII local part has none.
TEST(envelope_storage, gives_a_label_forms_only_to_non_ascii_domains) {
  spool::envelope value = sample();
  value.reverse_path = "s@b\xc3\xbc" "cher.example";
  value.recipients = {{"a@example.net", 0, ""},
                      {"b@m\xc3\xbcller.example", 0, ""},
                      {"j\xc3\xb6rg@m\xc3\xbcller.example", 0, ""}};
  envelope_storage storage;
  const std::uint16_t all[] = {0, 1, 2};
  const auto& built = storage.assign(value, all, 10);
  EXPECT_EQ(built.reverse_path_ascii, "s@xn--bcher-kva.example");
  ASSERT_EQ(built.recipients.size(), 3u);
  EXPECT_EQ(built.recipients[0].address_ascii, "");
  EXPECT_EQ(built.recipients[1].address_ascii, "b@xn--mller-kva.example");
  EXPECT_EQ(built.recipients[2].address_ascii, "");
}

TEST(envelope_storage, drops_advisory_parameters_that_grow_too_long) {
  spool::envelope value = sample();
  value.envid = std::string(60, '+');  // 180 bytes encoded: over RFC 3461's 100
  value.recipients[1].orcpt = "rfc822;" + std::string(200, '=');  // 600 encoded: over 500
  value.body = spool::body_type::unspecified;
  envelope_storage storage;
  const std::uint16_t chosen[] = {1};
  const auto& built = storage.assign(value, chosen, 10);
  EXPECT_TRUE(built.dsn_envid.empty());
  EXPECT_TRUE(built.recipients[0].orcpt.empty());
  EXPECT_EQ(built.body, smtp::client_body_type::seven_bit);
  // Reassigning reuses the storage and leaves no stale view behind.
  const std::uint16_t all[] = {0, 1, 2};
  const auto& again = storage.assign(sample(), all, 5);
  ASSERT_EQ(again.recipients.size(), 3u);
  EXPECT_EQ(again.recipients[1].address, "b@example.net");
  EXPECT_EQ(again.recipients[1].notify, "");
}

TEST(close_reason, has_a_description) {
  EXPECT_EQ(describe(close_reason::destination_failed), "destination failed");
  EXPECT_EQ(describe(close_reason::idle_timeout), "idle timeout");
}

}  // namespace
}  // namespace ringmta::outbound
