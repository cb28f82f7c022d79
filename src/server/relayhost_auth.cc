// --relayhost-auth FILE: the user and password ringmta gives the relay host (SMTP AUTH, RFC
// 4954), read at start-up and on a reload (the reload thread, never a shard). Like Postfix's
// sasl_passwd, the file holds a secret: a file that others could read is refused, naming it,
// so that a mistake is found at start (exit 2) rather than left in place.
// Format: one line "USER:PASSWORD" (split at the first ':'; the password may hold ':'),
// comments (#) and empty lines aside; no NUL, each field at most 255 octets.
// Never: the password in an error message or a log record.
#include <sys/stat.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

#include <fmt/format.h>

#include "ringmta/server/relay.h"

namespace ringmta::server {

std::shared_ptr<const outbound::client_credentials> load_relayhost_auth(
    const config::settings& settings) {
  const std::string& path = settings.relayhost_auth;
  if (path.empty()) return nullptr;
  const auto origin = settings.origins.find("relay.relayhost_auth");
  const auto fail = [&](const std::string& problem) {
    return config::error(fmt::format("{}: relay.relayhost_auth: {}: {}",
                                     origin != settings.origins.end() ? origin->second
                                                                      : "defaults",
                                     path, problem));
  };
  struct stat about {};
  if (::stat(path.c_str(), &about) != 0) throw fail(std::strerror(errno));
  if (!S_ISREG(about.st_mode)) throw fail("not a regular file");
  if ((about.st_mode & (S_IRWXG | S_IRWXO)) != 0)
    throw fail(fmt::format("readable by others (mode {:04o}): it holds a password; chmod 600",
                           about.st_mode & 07777));
  std::ifstream in(path, std::ios::binary);
  if (!in) throw fail(std::strerror(errno));
  std::ostringstream text;
  text << in.rdbuf();
  auto credentials = std::make_shared<outbound::client_credentials>();
  std::istringstream lines(text.str());
  std::string line;
  bool found = false;
  for (int number = 1; std::getline(lines, line); ++number) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.empty() || line.front() == '#') continue;
    const auto where = fmt::format("line {}", number);
    if (found) throw fail(where + ": one USER:PASSWORD line only");
    const auto colon = line.find(':');
    if (colon == std::string::npos || colon == 0) throw fail(where + ": expected USER:PASSWORD");
    if (line.find('\0') != std::string::npos) throw fail(where + ": NUL character");
    credentials->user = line.substr(0, colon);
    credentials->password = line.substr(colon + 1);
    if (credentials->user.size() > smtp::client_auth_field_bytes_max ||
        credentials->password.size() > smtp::client_auth_field_bytes_max)
      throw fail(fmt::format("{}: user and password may have {} octets each", where,
                             smtp::client_auth_field_bytes_max));
    found = true;
  }
  volatile char* wipe = line.data();  // the last line read may be the password's
  for (std::size_t i = 0; i < line.size(); ++i) wipe[i] = 0;
  if (!found) throw fail("no USER:PASSWORD line");
  return credentials;
}

}  // namespace ringmta::server
