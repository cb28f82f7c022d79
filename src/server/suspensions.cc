#include "ringmta/server/suspensions.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <fstream>
#include <optional>
#include <sstream>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "ringmta/core/clock.h"

namespace ringmta::server {
namespace {

core::result<void> write_durably(const std::string& path, const std::string& text) {
  const std::string temporary = path + ".tmp";
  const int fd = ::open(temporary.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0640);
  if (fd < 0) return core::fail(errno);
  std::string_view rest = text;
  while (!rest.empty()) {
    const ssize_t wrote = ::write(fd, rest.data(), rest.size());
    if (wrote < 0 && errno == EINTR) continue;
    if (wrote < 0) {
      const int error = errno;
      ::close(fd);
      return core::fail(error);
    }
    rest.remove_prefix(static_cast<std::size_t>(wrote));
  }
  if (::fdatasync(fd) != 0) {
    const int error = errno;
    ::close(fd);
    return core::fail(error);
  }
  ::close(fd);
  if (::rename(temporary.c_str(), path.c_str()) != 0) return core::fail(errno);
  const auto slash = path.rfind('/');
  const std::string directory = slash == std::string::npos ? "." : path.substr(0, slash + 1);
  const int dir = ::open(directory.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dir < 0) return core::fail(errno);
  const int synced = ::fsync(dir);
  ::close(dir);
  if (synced != 0) return core::fail(errno);
  return {};
}

}  // namespace

core::result<void> suspension_table::load(std::string& problem) {
  std::ifstream in(_path);
  if (!in) return {};
  std::stringstream text;
  text << in.rdbuf();
  const std::int64_t now = core::wall_milliseconds();
  try {
    const auto document = nlohmann::json::parse(text.str());
    std::lock_guard lock(_mutex);
    for (const auto& item : document.at("suspensions")) {
      suspension entry;
      entry.destination = item.at("destination").get<std::string>();
      entry.since_ms = item.value("since_ms", std::int64_t{0});
      entry.until_ms = item.value("until_ms", std::int64_t{0});
      entry.reason = item.value("reason", std::string());
      entry.by = item.value("by", std::string());
      if (entry.until_ms != 0 && entry.until_ms <= now) continue;
      _entries[entry.destination] = entry;
    }
  } catch (const std::exception& bad) {
    problem = fmt::format("{}: not a suspension table ({}): fix or remove it", _path, bad.what());
    return core::fail(EINVAL);
  }
  return {};
}

core::result<void> suspension_table::save_locked() {
  auto list = nlohmann::json::array();
  for (const auto& [name, e] : _entries)
    list.push_back({{"destination", name}, {"since_ms", e.since_ms}, {"until_ms", e.until_ms},
                    {"reason", e.reason}, {"by", e.by}});
  const nlohmann::json document = {{"suspensions", list}};
  return write_durably(_path, document.dump(1, ' ', false,
                                            nlohmann::json::error_handler_t::replace) + "\n");
}

core::result<void> suspension_table::put(const suspension& entry) {
  std::lock_guard lock(_mutex);
  const auto previous = _entries.find(entry.destination);
  std::optional<suspension> kept;
  if (previous != _entries.end()) kept = previous->second;
  _entries[entry.destination] = entry;
  auto saved = save_locked();
  if (!saved) {  // not durable: not done
    if (kept) _entries[entry.destination] = *kept;
    else _entries.erase(entry.destination);
    return saved;
  }
  _changed.notify_all();
  return {};
}

core::result<bool> suspension_table::erase(const std::string& destination) {
  std::lock_guard lock(_mutex);
  const auto found = _entries.find(destination);
  if (found == _entries.end()) return false;
  const suspension kept = found->second;
  _entries.erase(found);
  if (auto saved = save_locked(); !saved) {
    _entries[destination] = kept;
    return core::fail(saved.error());
  }
  _changed.notify_all();
  return true;
}

std::vector<suspension> suspension_table::all() const {
  std::lock_guard lock(_mutex);
  std::vector<suspension> out;
  for (const auto& [name, e] : _entries) out.push_back(e);
  return out;
}

bool suspension_table::find(const std::string& destination, suspension& out) const {
  std::lock_guard lock(_mutex);
  const auto found = _entries.find(destination);
  if (found == _entries.end()) return false;
  out = found->second;
  return true;
}

void suspension_table::start(std::function<void(const suspension&)> on_expired) {
  _on_expired = std::move(on_expired);
  _thread = std::thread([this] { run(); });
}

void suspension_table::stop() noexcept {
  {
    std::lock_guard lock(_mutex);
    _stopping = true;
  }
  _changed.notify_all();
  if (_thread.joinable()) _thread.join();
}

// Waits for the earliest end; an expired entry is resumed first, then removed from the file
// (a crash in between resumes it again at the next start: harmless).
void suspension_table::run() {
  std::unique_lock lock(_mutex);
  while (!_stopping) {
    std::int64_t earliest = 0;
    for (const auto& [name, e] : _entries)
      if (e.until_ms != 0 && (earliest == 0 || e.until_ms < earliest)) earliest = e.until_ms;
    const std::int64_t now = core::wall_milliseconds();
    if (earliest == 0 || earliest > now) {
      const auto wait = earliest == 0 ? std::chrono::milliseconds(60'000)
                                      : std::chrono::milliseconds(earliest - now);
      _changed.wait_for(lock, wait);
      continue;
    }
    std::vector<suspension> expired;
    for (const auto& [name, e] : _entries)
      if (e.until_ms != 0 && e.until_ms <= now) expired.push_back(e);
    lock.unlock();
    for (const auto& e : expired) _on_expired(e);
    lock.lock();
    for (const auto& e : expired) {
      const auto found = _entries.find(e.destination);
      if (found != _entries.end() && found->second.until_ms == e.until_ms) _entries.erase(found);
    }
    if (!save_locked()) _changed.wait_for(lock, std::chrono::seconds(1));  // disk: try again
  }
}

}  // namespace ringmta::server
