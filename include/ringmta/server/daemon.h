// The ringmta daemon: from validated settings to running shards and back to exit status.
//
// Start-up (blocking, may throw config::error for what the settings cannot give): recover every
// shard's spool, open the listeners (SO_REUSEPORT, one socket per shard), start the admin
// endpoint (/metrics, /health, /queue, /reload), then start the shards, each with its spool
// store, its ring driver and its inbound SMTP server. Before all that, the spool is locked and
// the listening addresses claimed (server/instance_lock.h), and the log writer thread starts
// (admin/log_writer.h). The calling thread then serves signals (server/signals.h): SIGHUP
// reloads (server/reload.h), SIGUSR1 reopens the log file, and SIGTERM/SIGINT/SIGQUIT stop:
// stop accepting, let sessions finish for shutdown_grace, answer 421 to the rest, let the
// spool finish its writes, exit 0.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "ringmta/config/settings.h"
#include "ringmta/core/endpoint.h"
#include "ringmta/tls/context.h"

namespace ringmta::server {

struct daemon_hooks {
  // Called once the listeners are bound (tests read the ports chosen for port 0).
  std::function<void(const std::vector<core::endpoint>& smtp,
                     const std::vector<core::endpoint>& admin)>
      on_listening;
  // Reads the configuration again for a reload (SIGHUP, POST /reload): the file and the flags
  // the daemon was started with. Empty: a reload re-applies the start-up settings.
  std::function<config::settings()> load_settings;
};

// The inbound TLS context of `settings` (--tls-cert/--tls-key pairs, --tls-min-version, cipher
// lists): reads and checks every file, so it blocks; call it at start-up or on a reload
// thread, never on a shard. No certificate: null context, empty error. A bad file: null
// context and "FILE: problem". For a reload pass the running context's ticket key ring
// (server_context::ticket_key_ring_shared()) so clients keep resuming across it; the reload's
// inbound snapshot carries the new context to every shard.
tls::server_load_result load_tls_server_context(const config::settings& settings,
                                                std::shared_ptr<tls::ticket_key_ring> keys);
// What start-up would refuse beyond the settings' own checks (the log output cannot be opened,
// unusable DNS resolvers), without starting anything: throws config::error. check-config.
void check_configuration(const config::settings& settings);

// Returns the process exit status.
int run_daemon(const config::settings& settings, const daemon_hooks& hooks = {});

// `ringmta spool ls`: prints the queued messages of a spool directory. Returns exit status.
int list_spool_command(const std::string& spool_directory, bool json);

// `ringmta spool cat ID`: writes a queued message as received (unstuffed; `wire`: as stored,
// dot-stuffed), our Received: header first. Read-only. Returns exit status.
int cat_spool_command(const std::string& spool_directory, const std::string& id, bool wire);

// `ringmta spool export DIR`: writes every queued message to DIR/<id>.eml as `spool cat` would.
int export_spool_command(const std::string& spool_directory, const std::string& out_directory,
                         bool wire);

}  // namespace ringmta::server
