// One daemon per spool and per listening address (issue 9: a second ringmta on the same spool
// unlinked the first one's live segment and journal files, and lost mail it had answered 250;
// a second one on the same address silently took half of the connections via SO_REUSEPORT).
//
// spool_lock: an exclusive flock on DIR/lock, taken before recovery and held (the descriptor
// stays open, close-on-exec) until the process ends; the kernel releases it even after
// SIGKILL. The file holds the owner's pid so the refusal can name it. Readers
// (`ringmta spool ls|cat|export`) never take it and never write.
//
// listen_claim: before the SO_REUSEPORT listeners are opened, each address is claimed twice:
// an abstract unix socket "ringmta-listen:ADDR:PORT" (atomic, released by the kernel when the
// process ends, and connectable to learn the owner's pid) against another ringmta starting at
// the same moment, and a probe bind without SO_REUSEPORT, which fails when anything at all
// (another ringmta, or another MTA) already listens there.
//
// Start-up only; blocking calls are fine here. Never: a lock file that outlives its owner.
#pragma once

#include <string>
#include <vector>

#include "ringmta/core/endpoint.h"

namespace ringmta::server {

class spool_lock {
 public:
  // Locks `spool_directory` (which must exist) or throws config::error
  // "spool DIR is in use by pid N".
  explicit spool_lock(const std::string& spool_directory);
  ~spool_lock();
  spool_lock(const spool_lock&) = delete;
  spool_lock& operator=(const spool_lock&) = delete;

 private:
  int _fd = -1;
};

class listen_claim {
 public:
  // Claims every address with a fixed port (port 0 is always a fresh one), or throws
  // config::error naming `key`, the address and, for another ringmta, its pid. `probe`:
  // also check that nothing listens there (false for addresses we have just bound
  // ourselves: the ports the system chose for port 0, claimed so others can name us).
  listen_claim(const std::vector<core::endpoint>& addresses, const std::string& key,
               bool probe = true);
  ~listen_claim();
  listen_claim(const listen_claim&) = delete;
  listen_claim& operator=(const listen_claim&) = delete;

 private:
  void claim(const std::vector<core::endpoint>& addresses, const std::string& key, bool probe);
  std::vector<int> _fds;
};

}  // namespace ringmta::server
