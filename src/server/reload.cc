// Reloading the configuration of a running daemon. See server/reload.h.
#include "ringmta/server/reload.h"

#include <algorithm>

#include <nlohmann/json.hpp>

namespace ringmta::server {

std::string reload_outcome::json() const {
  nlohmann::json out = {{"status", applied ? "reloaded" : "rejected"},
                        {"changed", changed},
                        {"restart_needed", restart_needed}};
  if (!applied) out["error"] = error;
  return out.dump();
}

reloader::reloader(config::settings running, std::function<config::settings()> load)
    : _running(std::move(running)), _load(std::move(load)) {}

void reloader::add(reloadable part) {
  std::lock_guard lock(_mutex);
  _parts.push_back(std::move(part));
}

config::settings reloader::running() const {
  std::lock_guard lock(_mutex);
  return _running;
}

reload_outcome reloader::reload() {
  config::settings next;
  try {
    next = _load();
  } catch (const config::error& problem) {
    reload_outcome rejected;
    rejected.error = problem.what();
    return rejected;
  }
  return apply(std::move(next));
}

reload_outcome reloader::apply(config::settings next) {
  std::lock_guard lock(_mutex);
  reload_outcome outcome;
  try {
    // What needs a restart keeps its running value, so that every part sees one consistent
    // configuration: the one that will actually be in effect.
    const auto rows = config::describe();
    for (const auto& key : config::changed_keys(_running, next)) {
      const auto row = std::find_if(rows.begin(), rows.end(),
                                    [&](const auto& info) { return info.key == key; });
      if (row != rows.end() && row->reload == config::reload_effect::live) {
        outcome.changed.push_back(key);
      } else {
        outcome.restart_needed.push_back(key);
        config::keep_value(next, _running, key);
      }
    }
    std::vector<reload_install> installs;
    for (const auto& part : _parts) {
      if (auto install = part.prepare(next, _running)) installs.push_back(std::move(install));
    }
    for (auto& install : installs) install();
  } catch (const config::error& problem) {
    outcome.error = problem.what();
    outcome.changed.clear();
    return outcome;
  }
  _running = std::move(next);
  outcome.applied = true;
  return outcome;
}

}  // namespace ringmta::server
