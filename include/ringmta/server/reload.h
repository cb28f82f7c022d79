// server::reloader: applying a new configuration to a running daemon (SIGHUP, POST /reload).
//
// The extension point is a small registry of reloadable parts. A part registers a `prepare`
// function; on reload, every part builds and validates its new state from the new settings on
// the calling thread (the daemon's signal thread or the admin thread, never a shard), and
// returns the `install` step. Only when every part prepared without error are the install
// steps run, in registration order: a reload is applied whole or not at all, and a bad
// configuration leaves the running one untouched (a `reload_rejected` log record says why).
// Installing usually means handing an immutable snapshot to the shards through typed
// runtime::post messages (shard/typed_message.h); shards swap it in between two events, and
// every session or delivery in progress keeps the snapshot it started with (shared_ptr).
//
//   reloader.add({"tls", [&](const settings& next, const settings& running) {
//     auto contexts = load_certificates(next);       // throws config::error when bad
//     return [contexts, &runtime] { post_to_every_shard(runtime, contexts); };
//   }});
//
// Settings that cannot change live (reload_effect::restart in the settings table: listeners,
// shards, spool, ...) keep their running value; a changed one is reported in the outcome and
// in a `reload_restart_needed` record, not silently ignored.
// Thread-safe: concurrent reloads (a signal and an admin request) run one after the other.
#pragma once

#include <functional>
#include <mutex>
#include <string>
#include <vector>

#include "ringmta/config/settings.h"

namespace ringmta::server {

// The step that installs a prepared state; runs after every part prepared successfully.
using reload_install = std::function<void()>;

struct reloadable {
  std::string name;  // "shards", "log", later "tls", "dkim", "auth"
  // Builds and validates the part's state for `next` (`running` is the configuration in use).
  // Throws config::error to reject the whole reload. May return an empty function (nothing
  // to do).
  std::function<reload_install(const config::settings& next, const config::settings& running)>
      prepare;
};

struct reload_outcome {
  bool applied = false;
  std::string error;                         // why it was rejected
  std::vector<std::string> changed;          // keys applied live
  std::vector<std::string> restart_needed;   // keys changed but kept until a restart
  std::string json() const;                  // {"status":"reloaded",...} for the admin API
};

class reloader {
 public:
  // `load` reads the configuration again (file and the original flags); throws config::error.
  reloader(config::settings running, std::function<config::settings()> load);

  void add(reloadable part);
  // Loads, validates and applies a new configuration. Logging is the caller's (the outcome
  // says everything).
  reload_outcome reload();
  // The same with settings already loaded (tests, check-config style callers).
  reload_outcome apply(config::settings next);
  config::settings running() const;

 private:
  mutable std::mutex _mutex;
  config::settings _running;
  std::function<config::settings()> _load;
  std::vector<reloadable> _parts;
};

}  // namespace ringmta::server
