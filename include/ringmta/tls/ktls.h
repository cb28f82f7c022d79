// kTLS probe: whether this kernel can take TLS records over (TCP_ULP "tls", Linux ≥ 4.13 with
// the tls module). Start-up only: it opens a loopback connection to try the socket option, so
// it makes syscalls and must never run on a shard. ringmta logs the answer once; the sessions
// always use the userspace path (tls/session.h) today.
#pragma once

#include <string>

namespace ringmta::tls {

struct ktls_probe_result {
  bool available = false;
  std::string detail;  // "TCP_ULP tls accepted" or why not ("ENOENT: no tls module", ...)
};

ktls_probe_result probe_ktls() noexcept;

}  // namespace ringmta::tls
