#include "ringmta/spool/file_store.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "format.h"

namespace ringmta::spool {

namespace {

constexpr std::uint32_t trailer_magic = 0x46534d52;  // "RMSF"
constexpr std::size_t trailer_bytes = 16;

int write_all(int fd, const char* data, std::size_t bytes) noexcept {
  while (bytes > 0) {
    const ssize_t wrote = ::write(fd, data, bytes);
    if (wrote < 0 && errno == EINTR) continue;
    if (wrote < 0) return errno;
    data += wrote;
    bytes -= static_cast<std::size_t>(wrote);
  }
  return 0;
}

}  // namespace

struct file_store::pending {
  std::uint32_t generation = 0;
  bool in_use = false;
  int fd = -1;
  int error = 0;
  message_id id = 0;
  std::uint64_t body_bytes = 0;
};

file_store::file_store(file_store_config config, message_id floor, int directory_fd)
    : _config(std::move(config)), _ids(_config.shard, floor), _directory_fd(directory_fd) {}

file_store::~file_store() {
  for (auto& message : _pending) {
    if (message.in_use && message.fd >= 0) ::close(message.fd);
  }
  for (auto& item : _batch) ::close(item.fd);
  if (_directory_fd >= 0) ::close(_directory_fd);
}

core::result<std::unique_ptr<file_store>> file_store::open(file_store_config config) {
  const std::string directory = config.directory;
  for (const auto& path : {directory, directory + "/tmp", directory + "/msg"}) {
    if (::mkdir(path.c_str(), 0750) != 0 && errno != EEXIST) return core::fail(errno);
  }
  message_id floor = 0;
  for (const char* sub : {"/tmp", "/msg"}) {
    const std::string path = config.directory + sub;
    DIR* directory = ::opendir(path.c_str());
    if (directory == nullptr) return core::fail(errno);
    while (const dirent* item = ::readdir(directory)) {
      const auto id = parse_message_id(item->d_name);
      if (!id) continue;
      floor = std::max(floor, *id);
      if (sub[1] == 't') ::unlink((path + "/" + item->d_name).c_str());  // never committed
    }
    ::closedir(directory);
  }
  const int directory_fd =
      ::open((config.directory + "/msg").c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (directory_fd < 0) return core::fail(errno);
  return std::unique_ptr<file_store>(new file_store(std::move(config), floor, directory_fd));
}

std::string file_store::temp_path(message_id id) const {
  return _config.directory + "/tmp/" + format_message_id(id).data();
}
std::string file_store::final_path(message_id id) const {
  return _config.directory + "/msg/" + format_message_id(id).data();
}

core::result<message_handle> file_store::begin(std::int64_t now_seconds) noexcept {
  std::uint32_t slot;
  if (!_free.empty()) {
    slot = _free.back();
    _free.pop_back();
  } else {
    slot = static_cast<std::uint32_t>(_pending.size());
    _pending.emplace_back();
  }
  auto& message = _pending[slot];
  message.id = _ids.next(now_seconds);
  message.fd = ::open(temp_path(message.id).c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC,
                      0640);
  if (message.fd < 0) {
    const int error = errno;
    _free.push_back(slot);
    return core::fail(error);
  }
  message.in_use = true;
  message.error = 0;
  message.body_bytes = 0;
  return message_handle{slot, message.generation};
}

message_id file_store::id_of(message_handle handle) const noexcept {
  return _pending[handle.slot].id;
}

core::result<void> file_store::append(message_handle handle, std::string_view wire) noexcept {
  auto& message = _pending[handle.slot];
  RINGMTA_ASSERT(message.in_use && message.generation == handle.generation);
  if (message.error == 0) message.error = write_all(message.fd, wire.data(), wire.size());
  if (message.error != 0) return core::fail(message.error);
  message.body_bytes += wire.size();
  return {};
}

void file_store::abort(message_handle handle) noexcept {
  auto& message = _pending[handle.slot];
  RINGMTA_ASSERT(message.in_use && message.generation == handle.generation);
  ::close(message.fd);
  ::unlink(temp_path(message.id).c_str());
  message.in_use = false;
  ++message.generation;
  _free.push_back(handle.slot);
}

int file_store::publish(const committed& item) noexcept {
  if (::rename(temp_path(item.id).c_str(), final_path(item.id).c_str()) != 0) return errno;
  return 0;
}

core::result<std::uint64_t> file_store::commit(message_handle handle,
                                               const envelope& value) noexcept {
  auto& message = _pending[handle.slot];
  RINGMTA_ASSERT(message.in_use && message.generation == handle.generation);
  std::string trailer;
  encode_envelope(value, trailer);
  char tail[trailer_bytes];
  format::store_le<std::uint64_t>(tail, message.body_bytes);
  format::store_le<std::uint32_t>(tail + 8, static_cast<std::uint32_t>(trailer.size()));
  format::store_le<std::uint32_t>(tail + 12, trailer_magic);
  trailer.append(tail, sizeof tail);
  int error = message.error;
  if (error == 0) error = write_all(message.fd, trailer.data(), trailer.size());
  const committed item{_next_ticket++, message.id, message.fd};
  message.in_use = false;
  ++message.generation;
  _free.push_back(handle.slot);
  if (error != 0) {
    ::close(item.fd);
    ::unlink(temp_path(item.id).c_str());
    return core::fail(error);
  }
  if (_config.mode != file_store_sync::each_message) {
    _batch.push_back(item);
    return item.ticket;
  }
  // RFC 5321 §6.1: the message must be on stable storage before the 250.
  if (::fdatasync(item.fd) != 0) error = errno;
  ::close(item.fd);
  if (error == 0) error = publish(item);
  if (error == 0 && ::fsync(_directory_fd) != 0) error = errno;
  if (error != 0) ::unlink(temp_path(item.id).c_str());
  _events.push_back(event{event_kind::committed, item.ticket, item.id, error});
  return item.ticket;
}

void file_store::flush() noexcept {
  if (_batch.empty()) return;
  int batch_error = 0;
  if (_config.mode == file_store_sync::batch_syncfs && ::syncfs(_directory_fd) != 0) {
    batch_error = errno;
  }
  std::vector<int> errors(_batch.size(), batch_error);
  for (std::size_t i = 0; i < _batch.size(); ++i) {
    if (errors[i] == 0 && _config.mode == file_store_sync::batch_fdatasync &&
        ::fdatasync(_batch[i].fd) != 0) {
      errors[i] = errno;
    }
    ::close(_batch[i].fd);
    if (errors[i] == 0) errors[i] = publish(_batch[i]);
  }
  const int directory_error = ::fsync(_directory_fd) == 0 ? 0 : errno;
  for (std::size_t i = 0; i < _batch.size(); ++i) {
    const int error = errors[i] != 0 ? errors[i] : directory_error;
    if (errors[i] != 0) ::unlink(temp_path(_batch[i].id).c_str());
    _events.push_back(event{event_kind::committed, _batch[i].ticket, _batch[i].id, error});
  }
  _batch.clear();
}

bool file_store::next_event(event& out) noexcept {
  if (_events.empty()) return false;
  out = _events.front();
  _events.pop_front();
  return true;
}

core::result<std::vector<message_id>> file_store::list() const {
  DIR* directory = ::opendir((_config.directory + "/msg").c_str());
  if (directory == nullptr) return core::fail(errno);
  std::vector<message_id> ids;
  while (const dirent* item = ::readdir(directory)) {
    if (const auto id = parse_message_id(item->d_name)) ids.push_back(*id);
  }
  ::closedir(directory);
  std::sort(ids.begin(), ids.end());
  return ids;
}

core::result<file_message> file_store::read(message_id id) const {
  const int fd = ::open(final_path(id).c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return core::fail(errno);
  std::string bytes;
  char buffer[65536];
  for (;;) {
    const ssize_t got = ::read(fd, buffer, sizeof buffer);
    if (got < 0 && errno == EINTR) continue;
    if (got <= 0) break;
    bytes.append(buffer, static_cast<std::size_t>(got));
  }
  ::close(fd);
  if (bytes.size() < trailer_bytes) return core::fail(EBADMSG);
  const char* tail = bytes.data() + bytes.size() - trailer_bytes;
  const auto body_bytes = format::load_le<std::uint64_t>(tail);
  const auto envelope_bytes = format::load_le<std::uint32_t>(tail + 8);
  if (format::load_le<std::uint32_t>(tail + 12) != trailer_magic ||
      body_bytes + envelope_bytes + trailer_bytes != bytes.size()) {
    return core::fail(EBADMSG);
  }
  auto value = decode_envelope(std::string_view(bytes).substr(body_bytes, envelope_bytes));
  if (!value) return core::fail(value.error());
  bytes.resize(body_bytes);
  return file_message{std::move(value.value()), std::move(bytes)};
}

}  // namespace ringmta::spool
