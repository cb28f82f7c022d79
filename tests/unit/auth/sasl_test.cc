// auth::sasl_exchange and base64: PLAIN (RFC 4616), LOGIN, and the refusals.
#include <gtest/gtest.h>

#include <array>
#include <string>

#include "ringmta/auth/sasl.h"

namespace ringmta::auth {
namespace {

std::string b64(std::string_view bytes) {
  std::array<char, 1024> out;
  const auto length = encode_base64(bytes, out);
  return std::string(out.data(), length.value());
}

std::optional<std::string> unb64(std::string_view text) {
  std::array<char, 1024> out;
  const auto length = decode_base64(text, out);
  if (!length) return std::nullopt;
  return std::string(out.data(), *length);
}

TEST(base64, round_trips_and_rfc4648_vectors) {
  EXPECT_EQ(b64(""), "");
  EXPECT_EQ(b64("f"), "Zg==");
  EXPECT_EQ(b64("fo"), "Zm8=");
  EXPECT_EQ(b64("foobar"), "Zm9vYmFy");
  EXPECT_EQ(unb64("Zm9vYg=="), "foob");
  EXPECT_EQ(unb64("Zm9vYg"), "foob");  // padding optional
  EXPECT_EQ(unb64("AGFAYgBj"), std::string("\0a@b\0c", 6));
  for (std::string_view bad : {"Zm9vY", "Zm9v!mFy", "Zg=a", "Zh==", "Z===", "Zm9vYg=", "="}) {
    EXPECT_FALSE(unb64(bad)) << bad;
  }
  std::array<char, 2> small;
  EXPECT_FALSE(decode_base64("Zm9vYmFy", small));
}

TEST(sasl, plain_with_initial_response) {
  sasl_exchange x;
  const auto step = x.start("plain", b64(std::string("\0alice@example.com\0s3cret", 25)));
  ASSERT_EQ(step.what, sasl_step::kind::verify);
  EXPECT_EQ(x.user(), "alice@example.com");
  EXPECT_EQ(x.password(), "s3cret");
  EXPECT_EQ(x.mechanism_name(), "PLAIN");
  x.clear();
  EXPECT_EQ(x.password(), "");
}

TEST(sasl, plain_with_empty_challenge_and_same_authzid) {
  sasl_exchange x;
  auto step = x.start("PLAIN", "");
  ASSERT_EQ(step.what, sasl_step::kind::challenge);
  EXPECT_EQ(step.code, 334);
  EXPECT_EQ(step.text, "");
  step = x.respond(b64(std::string("bob\0bob\0pw", 10)));
  ASSERT_EQ(step.what, sasl_step::kind::verify);
  EXPECT_EQ(x.user(), "bob");
}

TEST(sasl, plain_refusals) {
  struct probe {
    std::string response;
    std::uint16_t code;
  };
  const probe probes[] = {
      {"not base64!", 501},
      {b64("no separators"), 501},
      {b64(std::string("\0user", 5)), 501},
      {b64(std::string("\0a\0b\0c", 6)), 501},        // a third NUL
      {b64(std::string("other\0bob\0pw", 12)), 535},  // acting for someone else
      {b64(std::string("\0\0pw", 4)), 535},           // empty login
      {b64(std::string("\0bob\0", 5)), 535},          // empty password
      {b64(std::string("\0b\tob\0pw", 8)), 535},      // control character in the login
      {b64(std::string(1, '\0') + std::string(256, 'u') + std::string("\0pw", 3)), 535},
  };
  for (const auto& p : probes) {
    sasl_exchange x;
    const auto step = x.start("PLAIN", "");
    ASSERT_EQ(step.what, sasl_step::kind::challenge);
    const auto refused = x.respond(p.response);
    EXPECT_EQ(refused.what, sasl_step::kind::refuse) << p.response;
    EXPECT_EQ(refused.code, p.code) << p.response;
    EXPECT_EQ(x.password(), "");
  }
}

TEST(sasl, login_two_challenges_or_initial_user) {
  sasl_exchange x;
  auto step = x.start("LOGIN", "");
  ASSERT_EQ(step.what, sasl_step::kind::challenge);
  EXPECT_EQ(step.text, "VXNlcm5hbWU6");
  step = x.respond(b64("carol"));
  ASSERT_EQ(step.what, sasl_step::kind::challenge);
  EXPECT_EQ(step.text, "UGFzc3dvcmQ6");
  step = x.respond(b64("hunter2"));
  ASSERT_EQ(step.what, sasl_step::kind::verify);
  EXPECT_EQ(x.user(), "carol");
  EXPECT_EQ(x.password(), "hunter2");

  sasl_exchange y;
  step = y.start("login", b64("dave"));  // the user as initial response (Outlook does this)
  ASSERT_EQ(step.what, sasl_step::kind::challenge);
  EXPECT_EQ(step.text, "UGFzc3dvcmQ6");
  EXPECT_EQ(y.respond("=").what, sasl_step::kind::refuse);  // an empty password
}

TEST(sasl, unknown_mechanism_and_response_without_exchange) {
  sasl_exchange x;
  EXPECT_EQ(x.start("CRAM-MD5", "").code, 504);
  EXPECT_EQ(x.respond(b64("x")).code, 503);
}

}  // namespace
}  // namespace ringmta::auth
