// auth::dovecot_backend: Dovecot's auth client protocol 1.1 over its UNIX socket (see
// auth/credentials.h). Runs on a verifier thread: blocking calls with deadlines are fine here.
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstring>
#include <optional>
#include <string>

#include <fmt/format.h>
#include <openssl/crypto.h>

#include "ringmta/auth/credentials.h"
#include "ringmta/auth/sasl.h"

namespace ringmta::auth {
namespace {

constexpr std::size_t line_bytes_max = 16384;  // handshake lines are short; replies too
constexpr int handshake_lines_max = 1000;

class auth_socket {
 public:
  explicit auth_socket(int fd) : _fd(fd) {}
  ~auth_socket() {
    if (_fd >= 0) ::close(_fd);
  }
  bool send_all(std::string_view bytes) const {
    while (!bytes.empty()) {
      const ssize_t sent = ::send(_fd, bytes.data(), bytes.size(), MSG_NOSIGNAL);
      if (sent <= 0) return false;
      bytes.remove_prefix(static_cast<std::size_t>(sent));
    }
    return true;
  }
  // The next line without its LF; nothing on EOF, a timeout or an over-long line.
  std::optional<std::string> read_line() {
    for (;;) {
      const std::size_t end = _buffer.find('\n');
      if (end != std::string::npos) {
        std::string line = _buffer.substr(0, end);
        _buffer.erase(0, end + 1);
        return line;
      }
      if (_buffer.size() > line_bytes_max) return std::nullopt;
      char chunk[4096];
      const ssize_t got = ::recv(_fd, chunk, sizeof chunk, 0);
      if (got <= 0) return std::nullopt;
      _buffer.append(chunk, static_cast<std::size_t>(got));
    }
  }

 private:
  int _fd;
  std::string _buffer;
};

int connect_to(const std::string& path, std::uint32_t timeout_ms) {
  sockaddr_un address{};
  address.sun_family = AF_UNIX;
  if (path.size() >= sizeof address.sun_path) return -1;
  std::memcpy(address.sun_path, path.data(), path.size());
  const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  const timeval deadline{static_cast<time_t>(timeout_ms / 1000),
                         static_cast<suseconds_t>(timeout_ms % 1000) * 1000};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &deadline, sizeof deadline);
  ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &deadline, sizeof deadline);
  if (::connect(fd, reinterpret_cast<const sockaddr*>(&address), sizeof address) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

// The server's handshake: VERSION (major 1), MECH, SPID, CUID, COOKIE lines, then DONE.
bool read_handshake(auth_socket& s) {
  for (int i = 0; i < handshake_lines_max; ++i) {
    const auto line = s.read_line();
    if (!line) return false;
    if (line->rfind("VERSION\t", 0) == 0 && line->rfind("VERSION\t1\t", 0) != 0) return false;
    if (*line == "DONE") return true;
  }
  return false;
}

// A field value may hold no TAB or LF (the protocol's separators).
bool clean(std::string_view value) {
  return value.find_first_of("\t\n\r") == std::string_view::npos;
}

}  // namespace

check_result dovecot_backend::check(std::string_view user, std::string_view password,
                                    std::string_view client) const noexcept {
  try {
    if (!clean(client)) return check_result::unavailable;
    auth_socket s(connect_to(_socket_path, _timeout_ms));
    const std::string hello = fmt::format("VERSION\t1\t1\nCPID\t{}\n", ::getpid());
    if (!s.send_all(hello) || !read_handshake(s)) return check_result::unavailable;
    // RFC 4616 PLAIN, as Postfix passes it on: [authzid] NUL authcid NUL passwd.
    std::string plain;
    plain.reserve(user.size() + password.size() + 2);
    plain.append(1, '\0').append(user).append(1, '\0').append(password);
    std::string encoded((plain.size() + 2) / 3 * 4, '\0');
    const auto length = encode_base64(plain, encoded);
    OPENSSL_cleanse(plain.data(), plain.size());
    // "secured": the session is TLS (or a loopback client the operator allowed), so a Dovecot
    // with disable_plaintext_auth still answers.
    std::string request = fmt::format("AUTH\t1\tPLAIN\tservice=smtp\tnologin\tsecured\trip={}\t"
                                      "resp={}\n",
                                      client, std::string_view(encoded.data(), length.value()));
    OPENSSL_cleanse(encoded.data(), encoded.size());
    const bool sent = s.send_all(request);
    OPENSSL_cleanse(request.data(), request.size());
    if (!sent) return check_result::unavailable;
    const auto reply = s.read_line();
    if (!reply) return check_result::unavailable;
    if (reply->rfind("OK\t1", 0) == 0) return check_result::accepted;
    if (reply->rfind("FAIL\t1", 0) == 0)  // "temp": Dovecot's back-end failed, not the password
      return reply->find("\ttemp") != std::string::npos ? check_result::unavailable
                                                        : check_result::refused;
    return reply->rfind("CONT\t1", 0) == 0 ? check_result::refused : check_result::unavailable;
  } catch (...) {
    return check_result::unavailable;
  }
}

}  // namespace ringmta::auth
