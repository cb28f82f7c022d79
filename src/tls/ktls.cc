// The kTLS probe (tls/ktls.h): a connected loopback socket pair, then TCP_ULP "tls" on one end.
#include "ringmta/tls/ktls.h"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include <fmt/format.h>

namespace ringmta::tls {

ktls_probe_result probe_ktls() noexcept {
  ktls_probe_result result;
  try {
    const int listener = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    const int client = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in at{};
    at.sin_family = AF_INET;
    at.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t length = sizeof at;
    int accepted = -1;
    // The ULP attaches only to an established connection (ENOTCONN otherwise).
    if (listener >= 0 && client >= 0 &&
        ::bind(listener, reinterpret_cast<sockaddr*>(&at), sizeof at) == 0 &&
        ::listen(listener, 1) == 0 &&
        ::getsockname(listener, reinterpret_cast<sockaddr*>(&at), &length) == 0 &&
        ::connect(client, reinterpret_cast<sockaddr*>(&at), sizeof at) == 0) {
      accepted = ::accept4(listener, nullptr, nullptr, SOCK_CLOEXEC);
    }
    if (accepted < 0) {
      result.detail = fmt::format("probe connection failed: {}", std::strerror(errno));
    } else if (::setsockopt(client, SOL_TCP, TCP_ULP, "tls", sizeof "tls") == 0) {
      result.available = true;
      result.detail = "TCP_ULP tls accepted (the userspace path is used all the same)";
    } else {
      const int error = errno;
      result.detail = fmt::format("TCP_ULP tls refused: {}{}; TLS runs in userspace",
                                  std::strerror(error),
                                  error == ENOENT ? " (no tls module in this kernel)" : "");
    }
    for (const int fd : {listener, client, accepted}) {
      if (fd >= 0) ::close(fd);
    }
  } catch (...) {  // fmt may throw on allocation; a probe never takes the daemon down
    result.detail = "probe failed";
  }
  return result;
}

}  // namespace ringmta::tls
