// auth::credentials (passwd file, libcrypt) and auth::sender_map.
#include <gtest/gtest.h>

#include <stdexcept>
#include <string>

#include "ringmta/auth/credentials.h"

namespace ringmta::auth {
namespace {

TEST(credentials, every_scheme_verifies_and_wrong_passwords_fail) {
  for (const char* scheme : {"yescrypt", "bcrypt", "sha512"}) {
    const std::string hash = make_hash("correct horse", scheme);
    const std::string prefix = std::string(scheme) == "yescrypt" ? "$y$"
                               : std::string(scheme) == "bcrypt" ? "$2b$"
                                                                 : "$6$";
    EXPECT_EQ(hash.rfind(prefix, 0), 0u) << hash;
    const auto table = credentials::from_text("# users\n\nann:" + hash + "\n", "test");
    EXPECT_TRUE(table->verify("ann", "correct horse")) << scheme;
    EXPECT_FALSE(table->verify("ann", "correct horsf")) << scheme;
    EXPECT_FALSE(table->verify("ann", "")) << scheme;
    EXPECT_FALSE(table->verify("Ann", "correct horse")) << scheme;  // logins are exact
    EXPECT_FALSE(table->verify("nobody", "correct horse")) << scheme;
  }
}

TEST(credentials, dovecot_layout_prefix_and_extra_fields) {
  const std::string hash = make_hash("pw", "sha512");
  const auto table = credentials::from_text(
      "a@example.com:{SHA512-CRYPT}" + hash + ":1000:1000::/home/a::\n" + "b:{CRYPT}" + hash +
          "\n",
      "test");
  EXPECT_EQ(table->size(), 2u);
  EXPECT_TRUE(table->verify("a@example.com", "pw"));
  EXPECT_TRUE(table->verify("b", "pw"));
}

TEST(credentials, bad_files_name_the_line) {
  const std::string hash = make_hash("pw", "sha512");
  const auto error_of = [](const std::string& text) {
    try {
      credentials::from_text(text, "users.txt");
    } catch (const std::runtime_error& problem) {
      return std::string(problem.what());
    }
    return std::string();
  };
  EXPECT_EQ(error_of("\nno colon here\n").rfind("users.txt:2: expected user:hash", 0), 0u);
  EXPECT_NE(error_of("a:plaintext\n").find("users.txt:1: user a: not a hash"), std::string::npos);
  EXPECT_NE(error_of("a:{PLAIN}secret\n").find("only crypt(3)"), std::string::npos);
  EXPECT_NE(error_of("a:" + hash + "\na:" + hash + "\n").find("users.txt:2: user a listed twice"),
            std::string::npos);
  EXPECT_NE(error_of(":" + hash + "\n").find("users.txt:1"), std::string::npos);
  EXPECT_THROW(credentials::load_passwd_file("/nonexistent/users"), std::runtime_error);
}

TEST(sender_map, exact_domain_wildcard_and_default) {
  const auto map = sender_map::from_text(
      "# sender  logins\n"
      "info@example.com   alice, bob\n"
      "@example.org       carol\n",
      "map");
  EXPECT_TRUE(map->allows("alice", "info@example.com"));
  EXPECT_TRUE(map->allows("bob", "INFO@Example.COM"));
  EXPECT_FALSE(map->allows("carol", "info@example.com"));
  EXPECT_TRUE(map->allows("carol", "anyone@example.org"));
  EXPECT_TRUE(map->allows("carol", "x@EXAMPLE.ORG"));
  EXPECT_FALSE(map->allows("alice", "anyone@example.org"));
  EXPECT_FALSE(map->allows("carol", "carol@sub.example.org"));  // not a subdomain wildcard
  // Without an entry: only the login's own address.
  EXPECT_TRUE(map->allows("dave@example.net", "dave@EXAMPLE.net"));
  EXPECT_TRUE(map->allows("dave@example.net", "Dave@example.net"));
  EXPECT_FALSE(map->allows("dave@example.net", "eve@example.net"));
  EXPECT_FALSE(map->allows("dave", "dave@example.net"));
  EXPECT_THROW(sender_map::from_text("nobody-here\n", "map"), std::runtime_error);
  EXPECT_THROW(sender_map::from_text("a@b.c\n", "map"), std::runtime_error);
}

}  // namespace
}  // namespace ringmta::auth
