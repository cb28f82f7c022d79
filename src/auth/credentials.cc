// auth::credentials and auth::sender_map (see auth/credentials.h).
#include "ringmta/auth/credentials.h"

#include <crypt.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>
#include <stdexcept>

#include <fmt/format.h>
#include <openssl/crypto.h>

namespace ringmta::auth {
namespace {

std::string read_file(const std::string& path) {
  std::ifstream file(path);
  if (!file)
    throw std::runtime_error(fmt::format("{}: cannot read: {}", path, std::strerror(errno)));
  std::ostringstream text;
  text << file.rdbuf();
  return text.str();
}

std::string_view trim(std::string_view text) {
  while (!text.empty() && (text.front() == ' ' || text.front() == '\t')) text.remove_prefix(1);
  while (!text.empty() && (text.back() == ' ' || text.back() == '\t' || text.back() == '\r'))
    text.remove_suffix(1);
  return text;
}

std::string lowercase(std::string_view text) {
  std::string out(text);
  std::transform(out.begin(), out.end(), out.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return out;
}

// Calls `line_fn(line, number)` for every line that is not empty or a comment.
template <typename LineFn>
void each_line(std::string_view text, LineFn line_fn) {
  std::size_t number = 0;
  while (!text.empty()) {
    const std::size_t end = text.find('\n');
    std::string_view line = trim(text.substr(0, end));
    text.remove_prefix(end == std::string_view::npos ? text.size() : end + 1);
    ++number;
    if (line.empty() || line.front() == '#') continue;
    line_fn(line, number);
  }
}

// Dovecot's scheme prefixes for crypt(3) hashes; other schemes (PLAIN, SSHA...) are refused.
std::string_view strip_scheme(std::string_view hash, bool& known) {
  known = true;
  if (hash.empty() || hash.front() != '{') return hash;
  const std::size_t close = hash.find('}');
  const std::string_view scheme = hash.substr(0, close + 1);
  known = scheme == "{CRYPT}" || scheme == "{BLF-CRYPT}" || scheme == "{SHA512-CRYPT}" ||
          scheme == "{SHA256-CRYPT}" || scheme == "{MD5-CRYPT}";
  return close == std::string_view::npos ? hash : hash.substr(close + 1);
}

// One crypt_data per thread (it is ~32 KiB; crypt_r keeps its scratch state there).
crypt_data& thread_crypt_data() {
  thread_local std::unique_ptr<crypt_data> data = std::make_unique<crypt_data>();
  return *data;
}

}  // namespace

std::shared_ptr<const credentials> credentials::load_passwd_file(const std::string& path) {
  return from_text(read_file(path), path);
}

std::shared_ptr<const credentials> credentials::from_text(std::string_view text,
                                                          const std::string& origin) {
  auto table = std::make_shared<credentials>();
  table->_origin = origin;
  each_line(text, [&](std::string_view line, std::size_t number) {
    const auto fail = [&](std::string_view what) {
      throw std::runtime_error(fmt::format("{}:{}: {}", origin, number, what));
    };
    const std::size_t colon = line.find(':');
    if (colon == std::string_view::npos || colon == 0) fail("expected user:hash");
    const std::string user(line.substr(0, colon));
    std::string_view rest = line.substr(colon + 1);
    bool known = true;
    const std::string hash(strip_scheme(rest.substr(0, rest.find(':')), known));
    if (!known) fail("only crypt(3) hashes ({CRYPT}, $y$, $2b$, $6$) are supported");
    if (hash.empty() || crypt_checksalt(hash.c_str()) != CRYPT_SALT_OK)
      fail(fmt::format("user {}: not a hash libcrypt accepts (make one with `ringmta passwd "
                       "{}`)", user, user));
    if (!table->_hashes.emplace(user, hash).second) fail(fmt::format("user {} listed twice", user));
    if (table->_dummy_hash.empty()) table->_dummy_hash = hash;
  });
  return table;
}

bool credentials::verify(std::string_view user, std::string_view password) const noexcept {
  try {
    const auto found = _hashes.find(std::string(user));
    const std::string& hash = found != _hashes.end() ? found->second : _dummy_hash;
    if (hash.empty()) return false;
    const std::string phrase(password);
    crypt_data& data = thread_crypt_data();
    const char* computed = crypt_r(phrase.c_str(), hash.c_str(), &data);
    OPENSSL_cleanse(const_cast<char*>(phrase.data()), phrase.size());
    const bool same = computed != nullptr && computed[0] != '*' &&
                      std::strlen(computed) == hash.size() &&
                      CRYPTO_memcmp(computed, hash.data(), hash.size()) == 0;
    OPENSSL_cleanse(data.output, sizeof data.output);
    return same && found != _hashes.end();
  } catch (...) {  // allocation failure: the login fails, the worker keeps running
    return false;
  }
}

std::shared_ptr<const sender_map> sender_map::load_file(const std::string& path) {
  return from_text(read_file(path), path);
}

std::shared_ptr<const sender_map> sender_map::from_text(std::string_view text,
                                                        const std::string& origin) {
  auto map = std::make_shared<sender_map>();
  each_line(text, [&](std::string_view line, std::size_t number) {
    const std::size_t space = line.find_first_of(" \t");
    const std::string_view key = line.substr(0, space);
    std::string_view logins = space == std::string_view::npos ? "" : trim(line.substr(space));
    if (key.find('@') == std::string_view::npos || logins.empty())
      throw std::runtime_error(fmt::format(
          "{}:{}: expected `address-or-@domain login[, login...]`", origin, number));
    auto& owners = map->_owners[lowercase(key)];
    while (!logins.empty()) {
      const std::size_t comma = logins.find_first_of(", \t");
      const std::string_view login = logins.substr(0, comma);
      if (!login.empty()) owners.emplace_back(login);
      logins.remove_prefix(comma == std::string_view::npos ? logins.size() : comma + 1);
    }
  });
  return map;
}

bool sender_map::allows(std::string_view login, std::string_view sender) const noexcept {
  try {
    const std::string key = lowercase(sender);
    const auto owns = [&](const std::string& lookup) {
      const auto found = _owners.find(lookup);
      if (found == _owners.end()) return false;
      return std::find(found->second.begin(), found->second.end(), login) != found->second.end();
    };
    const std::size_t at = key.rfind('@');
    if (owns(key)) return true;
    if (at != std::string::npos && owns(key.substr(at))) return true;
    return sender_is_login(login, sender);
  } catch (...) {
    return false;
  }
}

// Case-insensitive throughout: local parts are case-sensitive in principle (RFC 5321 §2.4), but
// no mail system hands Alice@ and alice@ to different people, and users type either.
bool sender_is_login(std::string_view login, std::string_view sender) noexcept {
  if (sender.find('@') == std::string_view::npos || login.size() != sender.size()) return false;
  for (std::size_t i = 0; i < sender.size(); ++i)
    if (std::tolower(static_cast<unsigned char>(login[i])) !=
        std::tolower(static_cast<unsigned char>(sender[i])))
      return false;
  return true;
}

std::string make_hash(std::string_view password, std::string_view scheme) {
  const char* prefix = scheme == "bcrypt" ? "$2b$" : scheme == "sha512" ? "$6$" : "$y$";
  char setting[CRYPT_GENSALT_OUTPUT_SIZE];
  if (crypt_gensalt_rn(prefix, 0, nullptr, 0, setting, sizeof setting) == nullptr)
    throw std::runtime_error(fmt::format("crypt_gensalt: {}", std::strerror(errno)));
  crypt_data& data = thread_crypt_data();
  const std::string phrase(password);
  const char* hash = crypt_r(phrase.c_str(), setting, &data);
  OPENSSL_cleanse(const_cast<char*>(phrase.data()), phrase.size());
  if (hash == nullptr || hash[0] == '*') throw std::runtime_error("crypt failed");
  std::string out(hash);
  OPENSSL_cleanse(data.output, sizeof data.output);
  return out;
}

}  // namespace ringmta::auth
