// DKIM signing with real keys: RFC 8463's example reproduced byte for byte (Ed25519 is
// deterministic), key checks, the key table's choice, and the message signer's outcomes.
#include <gtest/gtest.h>

#include <openssl/evp.h>
#include <openssl/pem.h>

#include <span>
#include <string>
#include <vector>

#include "ringmta/dkim/crypto.h"
#include "ringmta/dkim/key_table.h"
#include "ringmta/dkim/signature.h"
#include "ringmta/dkim/signer.h"

namespace ringmta::dkim {
namespace {

// RFC 8463 Appendix A: the Ed25519 key of RFC 8032 §7.1 test 1 and the example message.
constexpr std::string_view rfc8463_key = "nWGxne/9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A=";
constexpr std::string_view rfc8463_public = "11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=";
constexpr std::string_view rfc8463_headers =
    "From: Joe SixPack <joe@football.example.com>\r\n"
    "To: Suzie Q <suzie@shopping.example.net>\r\n"
    "Subject: Is dinner ready?\r\n"
    "Date: Fri, 11 Jul 2003 21:00:37 -0700 (PDT)\r\n"
    "Message-ID: <20030712040037.46341.5F8J@football.example.com>\r\n";
constexpr std::string_view rfc8463_body =
    "Hi.\r\n\r\nWe lost the game.  Are you hungry yet?\r\n\r\nJoe.\r\n";
// The Ed25519 signature field of Appendix A.3 with its b= value removed (§3.7).
constexpr std::string_view rfc8463_field =
    "DKIM-Signature: v=1; a=ed25519-sha256; c=relaxed/relaxed;\r\n"
    " d=football.example.com; i=@football.example.com;\r\n"
    " q=dns/txt; s=brisbane; t=1528637909; h=from : to :\r\n"
    " subject : date : message-id : from : subject : date;\r\n"
    " bh=2jUSOH9NhtVGCQWNr9BrIAPreKQjO6Sn7XIkfJVOzv8=;\r\n"
    " b=";
constexpr std::string_view rfc8463_signature =
    "/gCrinpcQOoIfuHNQIbq4pgh9kyIK3AQUdt9OdqQehSwhEIug4D11BusFa3bT3FY5OsU7ZbnKELq+eXdp1Q1Dw==";

std::string base64(const digest& d) {
  std::string out;
  append_base64(d, out);
  return out;
}

std::string body_hash(canonicalization mode, std::string_view text) {
  body_canonicalizer canon;
  canon.reset(mode, false);
  sha256 hash;
  canon.feed(text, hash);
  canon.finish(hash);
  return base64(hash.finish());
}

std::shared_ptr<const private_key> key_from(std::string_view text) {
  std::string problem;
  auto key = private_key::from_text(text, problem);
  EXPECT_NE(key, nullptr) << problem;
  return key;
}

TEST(dkim_rfc8463, body_hashes) {
  EXPECT_EQ(body_hash(canonicalization::relaxed, rfc8463_body),
            "2jUSOH9NhtVGCQWNr9BrIAPreKQjO6Sn7XIkfJVOzv8=");
  EXPECT_EQ(body_hash(canonicalization::simple, rfc8463_body),  // dkimpy's simple/simple copy
            "4bLNXImK9drULnmePzZNEBleUanJCX5PIsDIFoH4KTQ=");
  EXPECT_EQ(body_hash(canonicalization::simple, ""), "frcCV1k9oG9oKj3dpUqdJg1PxRT2RSN/XKdLCPjaYaY=");
  EXPECT_EQ(body_hash(canonicalization::relaxed, ""), "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=");
}

TEST(dkim_rfc8463, ed25519_signature_is_the_rfc_one) {
  auto key = key_from(rfc8463_key);
  ASSERT_NE(key, nullptr);
  EXPECT_EQ(key->algorithm(), algorithm::ed25519_sha256);
  EXPECT_EQ(key->dns_record(), "v=DKIM1; k=ed25519; p=" + std::string(rfc8463_public));
  std::vector<header_field> fields;
  for_each_field(rfc8463_headers, [&](const header_field& f) { fields.push_back(f); });
  std::string input;
  append_signed_headers(canonicalization::relaxed, fields,
                        "from : to : subject : date : message-id : from : subject : date", input);
  canonicalize_header(canonicalization::relaxed, header_field{"DKIM-Signature", rfc8463_field},
                      input, false);
  sha256 hash;
  hash.update(input);
  std::string signature;
  ASSERT_TRUE(key->sign(hash.finish(), signature));
  std::string text;
  append_base64(std::span(reinterpret_cast<const unsigned char*>(signature.data()),
                          signature.size()),
                text);
  EXPECT_EQ(text, rfc8463_signature);
}

TEST(dkim_keys, checks_at_load) {
  std::string problem;
  EXPECT_EQ(private_key::from_text("not a key", problem), nullptr);
  EXPECT_NE(problem.find("neither"), std::string::npos) << problem;
  problem.clear();
  EXPECT_EQ(private_key::from_text("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
                                   problem),
            nullptr);
  EXPECT_FALSE(problem.empty());
  // A 512-bit RSA key is refused (RFC 8301), a 1024-bit one taken.
  EVP_PKEY* small = EVP_PKEY_Q_keygen(nullptr, nullptr, "RSA", size_t{512});
  ASSERT_NE(small, nullptr);
  BIO* out = BIO_new(BIO_s_mem());
  PEM_write_bio_PrivateKey(out, small, nullptr, nullptr, 0, nullptr, nullptr);
  char* data = nullptr;
  const long length = BIO_get_mem_data(out, &data);
  problem.clear();
  EXPECT_EQ(private_key::from_text(std::string_view(data, static_cast<std::size_t>(length)),
                                   problem),
            nullptr);
  EXPECT_NE(problem.find("512 bits"), std::string::npos) << problem;
  BIO_free(out);
  EVP_PKEY_free(small);
  const std::string pem = private_key::generate(algorithm::rsa_sha256, 1024, problem);
  auto rsa = key_from(pem);
  ASSERT_NE(rsa, nullptr);
  EXPECT_EQ(rsa->bits(), 1024u);
  EXPECT_EQ(rsa->dns_record().rfind("v=DKIM1; k=rsa; p=MI", 0), 0u);
  EXPECT_TRUE(private_key::generate(algorithm::rsa_sha256, 8192, problem).empty());
}

std::shared_ptr<key_table> table_with(std::vector<std::pair<std::string, std::string>> keys) {
  auto table = std::make_shared<key_table>();
  for (auto& [domain, text] : keys) {
    signing_key made;
    made.domain = domain;
    made.selector = "sel";
    made.headers = default_signed_headers();
    made.oversigned = default_oversigned_headers();
    made.key = key_from(text);
    table->keys.push_back(std::move(made));
  }
  return table;
}

TEST(dkim_keys, choice_by_from_domain_fallback_and_platform) {
  auto table = table_with({{"a.test", std::string(rfc8463_key)},
                           {"esp.test", std::string(rfc8463_key)},
                           {"platform.test", std::string(rfc8463_key)}});
  std::vector<const signing_key*> chosen;
  table->choose("a.test", chosen);
  ASSERT_EQ(chosen.size(), 1u);
  EXPECT_EQ(chosen[0]->domain, "a.test");
  chosen.clear();
  table->choose("b.test", chosen);
  EXPECT_TRUE(chosen.empty());
  EXPECT_FALSE(table->signs_without_author());
  table->fallback = {{".customer.test", "esp.test"}, {"*", "platform.test"}};
  table->choose("news.customer.test", chosen);
  ASSERT_EQ(chosen.size(), 1u);
  EXPECT_EQ(chosen[0]->domain, "esp.test");
  chosen.clear();
  table->choose("other.test", chosen);
  ASSERT_EQ(chosen.size(), 1u);
  EXPECT_EQ(chosen[0]->domain, "platform.test");
  EXPECT_TRUE(table->signs_without_author());
  table->fallback.clear();
  table->platform_domains = {"platform.test"};
  chosen.clear();
  table->choose("a.test", chosen);
  ASSERT_EQ(chosen.size(), 2u);  // the author's and the platform's
  EXPECT_EQ(chosen[1]->domain, "platform.test");
}

// Feeds `message` in pieces of `step` octets.
sign_outcome sign(message_signer& signer, std::shared_ptr<const key_table> table,
                  std::string_view message, bool stuffed, std::size_t step = 7) {
  signer.begin(std::move(table), "Received: from x by y; Thu, 1 Jan 2026 00:00:00 +0000\r\n");
  for (std::size_t at = 0; at < message.size(); at += step)
    signer.feed(message.substr(at, step), stuffed);
  return signer.finish(1700000000);
}

TEST(dkim_signer, signs_and_refuses_what_it_cannot_sign) {
  auto table = table_with({{"football.example.com", std::string(rfc8463_key)}});
  message_signer signer;
  const std::string message = std::string(rfc8463_headers) + "\r\n" + std::string(rfc8463_body);
  ASSERT_EQ(sign(signer, table, message, false), sign_outcome::signed_ok);
  std::string fields(signer.fields());
  for (std::size_t fold; (fold = fields.find("\r\n\t")) != std::string::npos;)
    fields.erase(fold, 3);
  EXPECT_EQ(fields.rfind("DKIM-Signature: v=1; a=ed25519-sha256; c=relaxed/relaxed;", 0), 0u);
  EXPECT_NE(fields.find("bh=2jUSOH9NhtVGCQWNr9BrIAPreKQjO6Sn7XIkfJVOzv8=;"), std::string::npos);
  EXPECT_NE(fields.find("h=from:from:reply-to:subject:subject:date:to:to:cc:"), std::string::npos)
      << fields;
  // The same message in DATA wire form (a stuffed dot line) hashes the unstuffed body.
  const std::string dotted = std::string(rfc8463_headers) + "\r\n..dot\r\n";
  ASSERT_EQ(sign(signer, table, dotted, true), sign_outcome::signed_ok);
  EXPECT_NE(std::string(signer.fields()).find("bh=" + body_hash(canonicalization::relaxed,
                                                                ".dot\r\n")),
            std::string::npos);

  EXPECT_EQ(sign(signer, table, "From: x@other.test\r\n\r\nbody\r\n", false),
            sign_outcome::not_signed);
  EXPECT_EQ(sign(signer, table, "From: x@football.example.com\r\n\r\nbare\nlf\r\n", false),
            sign_outcome::bare_line_ending);
  EXPECT_EQ(sign(signer, table,
                 "From: x@football.example.com\r\nFrom: y@football.example.com\r\n\r\n", false),
            sign_outcome::not_signed);  // two From: and no "*" key: nothing applies
  table->fallback = {{"*", "football.example.com"}};
  EXPECT_EQ(sign(signer, table,
                 "From: x@football.example.com\r\nFrom: y@football.example.com\r\n\r\n", false),
            sign_outcome::no_single_from);
  table->header_bytes_max = 4096;
  const std::string huge = "From: x@football.example.com\r\nX-Big: " + std::string(5000, 'a') +
                           "\r\n\r\nbody\r\n";
  EXPECT_EQ(sign(signer, table, huge, false), sign_outcome::header_too_large);
  // Headers only, no empty line and no final CRLF: all header, empty body.
  EXPECT_EQ(sign(signer, table, "From: x@football.example.com\r\nSubject: s", false),
            sign_outcome::signed_ok);
}

}  // namespace
}  // namespace ringmta::dkim
