#include "sim_disk.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

namespace ringmta::sim {

struct disk::flight {
  spool::operation op;  // its pointers stay valid until the completion is reported
  std::string name;     // basename of op.path
  std::uint32_t step = 0;
  int fd = -1;          // create_file: the fd opened by its first step
  std::uint64_t inode = 0;
  std::uint64_t issue_serial = 0;  // datasync: writes completed when it was issued
  std::uint64_t issue_size = 0;
  std::uint64_t next_linked = 0;   // an op waiting for this one (link_next)
};

namespace {

const char* kind_name(spool::operation_kind kind) noexcept {
  switch (kind) {
    case spool::operation_kind::write: return "write";
    case spool::operation_kind::datasync: return "datasync";
    case spool::operation_kind::create_file: return "create";
    case spool::operation_kind::remove_file: return "remove";
  }
  return "?";
}

std::string basename_of(const char* path) {
  if (path == nullptr) return {};
  const std::string_view text(path);
  const auto slash = text.rfind('/');
  return std::string(slash == std::string_view::npos ? text : text.substr(slash + 1));
}

}  // namespace

disk::disk(scheduler& clock, random& random, disk_profile profile, disk_bug bug,
           completion_fn on_complete, note_fn note)
    : _clock(clock),
      _random(random),
      _profile(profile),
      _bug(bug),
      _on_complete(std::move(on_complete)),
      _note(std::move(note)) {}

disk::~disk() {
  close_abandoned_removals();
  for (const auto& [fd, file] : _fds) {
    if (!file.store_owned) ::close(fd);
  }
}

bool disk::fault(double probability) noexcept {
  if (!_faults || probability <= 0 || !_random.chance(probability)) return false;
  ++_stats.faults;
  return true;
}

disk::inode* disk::inode_of(int fd) noexcept {
  const auto found = _fds.find(fd);
  if (found == _fds.end()) return nullptr;
  const auto node = _inodes.find(found->second.inode);
  return node == _inodes.end() ? nullptr : &node->second;
}

void disk::submit(const spool::operation& op) {
  const std::uint64_t serial = _next_serial++;
  flight& entry = _ops[serial];
  entry.op = op;
  entry.name = basename_of(op.path);
  const std::uint64_t predecessor = _chain_prev;
  const int outcome = _chain_prev_outcome;
  _chain_prev = op.link_next ? serial : 0;
  _chain_prev_outcome = 0;
  if (predecessor == 0 || outcome == 1) return start(serial);
  if (outcome == 0) {
    _ops.at(predecessor).next_linked = serial;
    return;
  }
  _clock.after(0, [this, serial] { finish(serial, -ECANCELED); });
}

void disk::start(std::uint64_t serial) {
  flight& op = _ops.at(serial);
  switch (op.op.kind) {
    case spool::operation_kind::write:
      return schedule_step(serial, _profile.write_ns_min, _profile.write_ns_max);
    case spool::operation_kind::datasync: {
      op.issue_serial = _write_serial;
      const inode* file = inode_of(op.op.fd);
      op.issue_size = file != nullptr ? file->size : 0;
      return schedule_step(serial, _profile.sync_ns_min, _profile.sync_ns_max);
    }
    case spool::operation_kind::create_file:
    case spool::operation_kind::remove_file:
      return schedule_step(serial, _profile.step_ns_min, _profile.step_ns_max);
  }
}

void disk::schedule_step(std::uint64_t serial, std::int64_t low_ns, std::int64_t high_ns) {
  const auto delay = static_cast<std::int64_t>(
      _random.between(static_cast<std::uint64_t>(low_ns), static_cast<std::uint64_t>(high_ns)));
  _clock.after(delay, [this, serial] { step(serial); });
}

void disk::step(std::uint64_t serial) {
  const auto found = _ops.find(serial);
  if (found == _ops.end()) return;  // forgotten by a crash
  flight& op = found->second;
  std::int64_t result = 0;
  switch (op.op.kind) {
    case spool::operation_kind::write: return finish(serial, do_write(op));
    case spool::operation_kind::datasync: return finish(serial, do_sync(op));
    case spool::operation_kind::create_file:
      if (create_step(op, result)) return finish(serial, result);
      break;
    case spool::operation_kind::remove_file:
      if (remove_step(op, result)) return finish(serial, result);
      break;
  }
  ++op.step;
  schedule_step(serial, _profile.step_ns_min, _profile.step_ns_max);
}

std::int64_t disk::do_write(flight& op) {
  inode* file = inode_of(op.op.fd);
  if (file == nullptr) return -EBADF;
  if (fault(_profile.write_error)) return _random.chance(0.5) ? -EIO : -ENOSPC;
  std::string bytes;
  bytes.reserve(op.op.bytes);
  for (std::uint32_t i = 0; i < op.op.iovec_count; ++i) {
    bytes.append(static_cast<const char*>(op.op.iovecs[i].iov_base), op.op.iovecs[i].iov_len);
  }
  file->size = std::max(file->size, op.op.offset + bytes.size());
  _stats.bytes_written += bytes.size();
  const auto length = static_cast<std::int64_t>(bytes.size());
  file->pending.push_back(pending_write{op.op.offset, std::move(bytes), ++_write_serial});
  return length;
}

std::int64_t disk::do_sync(flight& op) {
  inode* file = inode_of(op.op.fd);
  if (file == nullptr) return -EBADF;
  ++_stats.syncs;
  if (fault(_profile.sync_error)) return -EIO;
  if (_bug == disk_bug::no_fsync) return 0;  // --unsafe-no-fsync: reported, not done
  sync_inode(*file, op.issue_serial, op.issue_size);
  return 0;
}

void disk::sync_inode(inode& file, std::uint64_t up_to_serial, std::uint64_t size) {
  auto keep = file.pending.begin();
  for (auto& write : file.pending) {
    if (write.serial <= up_to_serial) {
      apply(file, write.offset, write.bytes);
    } else {
      *keep++ = std::move(write);
    }
  }
  file.pending.erase(keep, file.pending.end());
  if (size <= file.durable_size) return;
  file.durable_size = size;
  ++file.version;
}

void disk::apply(inode& file, std::uint64_t offset, std::string_view bytes) {
  if (file.durable.size() < offset + bytes.size()) file.durable.resize(offset + bytes.size());
  std::memcpy(file.durable.data() + offset, bytes.data(), bytes.size());
  file.durable_size = std::max(file.durable_size, offset + bytes.size());
  ++file.version;
}

void disk::sync_directory() noexcept {
  _durable_names = _volatile_names;
  collect();
}

// The steps of sync_driver.cc's perform_create_file; a failed step gives up as it does
// (close, unlink). Returns true when the operation is over.
bool disk::create_step(flight& op, std::int64_t& result) {
  auto give_up = [&](int error) {
    close_fd(op.fd);
    const auto named = _volatile_names.find(op.name);
    if (named != _volatile_names.end() && named->second == op.inode) _volatile_names.erase(named);
    collect();
    result = -error;
    return true;
  };
  switch (op.step) {
    case 0: {  // open(O_CREAT | O_EXCL)
      if (_volatile_names.count(op.name) != 0) {
        result = -EEXIST;
        return true;
      }
      op.fd = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
      if (op.fd < 0) {
        result = -errno;
        return true;
      }
      op.inode = _next_inode++;
      _inodes[op.inode].name = op.name;
      _volatile_names[op.name] = op.inode;
      _fds[op.fd] = open_file{op.inode, false};
      return false;
    }
    case 1:  // fallocate
      if (fault(_profile.step_error)) return give_up(ENOSPC);
      _inodes.at(op.inode).size = std::max(_inodes.at(op.inode).size, op.op.bytes);
      return false;
    case 2: {  // header write
      if (fault(_profile.step_error)) return give_up(EIO);
      inode& file = _inodes.at(op.inode);
      const std::string_view header(static_cast<const char*>(op.op.header), op.op.header_bytes);
      file.size = std::max<std::uint64_t>(file.size, header.size());
      file.pending.push_back(pending_write{0, std::string(header), ++_write_serial});
      return false;
    }
    case 3: {  // fdatasync (a blocking helper: not the ring's datasync, so no_fsync spares it)
      if (fault(_profile.step_error)) return give_up(EIO);
      inode& file = _inodes.at(op.inode);
      sync_inode(file, _write_serial, file.size);
      return false;
    }
    default:  // fsync of the directory
      if (fault(_profile.step_error)) return give_up(EIO);
      if (_bug != disk_bug::dir_fsync) sync_directory();
      _fds.at(op.fd).store_owned = true;
      ++_stats.files_created;
      result = op.fd;
      return true;
  }
}

// perform_remove_file: close, unlink, fsync of the directory.
bool disk::remove_step(flight& op, std::int64_t& result) {
  switch (op.step) {
    case 0:
      if (op.op.fd >= 0) close_fd(op.op.fd);
      return false;
    case 1:
      _volatile_names.erase(op.name);
      collect();
      return false;
    default:
      if (fault(_profile.step_error)) {
        result = -EIO;
        return true;
      }
      sync_directory();
      ++_stats.files_removed;
      result = 0;
      return true;
  }
}

void disk::close_fd(int fd) {
  if (_fds.erase(fd) != 0) ::close(fd);
}

void disk::finish(std::uint64_t serial, std::int64_t result) {
  const auto found = _ops.find(serial);
  if (found == _ops.end()) return;
  const flight op = std::move(found->second);
  _ops.erase(found);
  ++_stats.operations;
  const bool ok = result >= 0 && (op.op.kind != spool::operation_kind::write ||
                                  static_cast<std::uint64_t>(result) == op.op.bytes);
  if (_chain_prev == serial) _chain_prev_outcome = ok ? 1 : -1;
  const std::string name = op.op.kind == spool::operation_kind::write ||
                                   op.op.kind == spool::operation_kind::datasync
                               ? name_of(op.op.fd)
                               : op.name;
  _note(fmt::format("disk {} {} @{}+{} -> {}", kind_name(op.op.kind), name, op.op.offset,
                    op.op.bytes, result));
  _on_complete(op.op.token, result);
  if (op.next_linked == 0) return;
  if (ok) return start(op.next_linked);
  _clock.after(0, [this, next = op.next_linked] { finish(next, -ECANCELED); });
}

// The inodes no name and no descriptor refers to are gone. The references are gathered once
// (a search per inode over every name and descriptor was quadratic: with a queue held by a
// paused destination, 6-15% of a run's instructions, at every directory sync and removal).
void disk::collect() noexcept {
  std::vector<std::uint64_t> used;
  used.reserve(_volatile_names.size() + _durable_names.size() + _fds.size());
  for (const auto* names : {&_volatile_names, &_durable_names}) {
    for (const auto& [name, number] : *names) used.push_back(number);
  }
  for (const auto& [fd, file] : _fds) used.push_back(file.inode);
  std::sort(used.begin(), used.end());
  std::erase_if(_inodes, [&](const auto& entry) {
    return !std::binary_search(used.begin(), used.end(), entry.first);
  });
}

void disk::keep_torn_prefix(inode& file) {
  const std::size_t kept = _random.below(file.pending.size() + 1);
  for (std::size_t i = 0; i < kept; ++i) {
    apply(file, file.pending[i].offset, file.pending[i].bytes);
    _stats.torn_bytes_kept += file.pending[i].bytes.size();
  }
  if (kept == file.pending.size()) return;
  const auto& cut = file.pending[kept];  // survives up to a sector boundary inside it
  const std::uint64_t first_sector = cut.offset / 512 + 1;
  const std::uint64_t end_sector = (cut.offset + cut.bytes.size()) / 512;
  if (end_sector < first_sector) return;
  const std::uint64_t boundary = _random.between(first_sector, end_sector) * 512;
  if (boundary >= cut.offset + cut.bytes.size()) return;
  apply(file, cut.offset, std::string_view(cut.bytes).substr(0, boundary - cut.offset));
  _stats.torn_bytes_kept += boundary - cut.offset;
}

// The store leaves the descriptor of a file it is removing to the operation's close step (its
// destructor skips it): when that step never runs, the process's death closes it. Without
// this, every crash during a removal leaked a real descriptor, and a search's later seeds saw
// other descriptor numbers than the same seed run alone (their digests differed; once they
// reached 100, sim_host's descriptors).
void disk::close_abandoned_removals() {
  for (const auto& [serial, op] : _ops) {
    if (op.op.kind == spool::operation_kind::remove_file && op.step == 0 && op.op.fd >= 0)
      close_fd(op.op.fd);
  }
}

void disk::crash(bool torn) {
  close_abandoned_removals();
  _ops.clear();
  _chain_prev = 0;
  _chain_prev_outcome = 0;
  for (const auto& [fd, file] : _fds) {
    if (!file.store_owned) ::close(fd);
  }
  _fds.clear();
  _volatile_names = _durable_names;
  collect();
  for (auto& [number, file] : _inodes) {
    if (torn) keep_torn_prefix(file);
    file.pending.clear();
    file.size = file.durable_size;
  }
}

core::result<void> disk::materialize(const std::string& directory) {
  if (directory != _image_directory) _image.clear();  // a new directory: empty
  _image_directory = directory;
  for (auto it = _image.begin(); it != _image.end();) {
    const auto named = _durable_names.find(it->first);
    const bool current = named != _durable_names.end() && named->second == it->second.inode &&
                         _inodes.at(named->second).version == it->second.version;
    if (current) {
      ++it;
      continue;
    }
    if (::unlink((directory + "/" + it->first).c_str()) != 0) return core::fail(errno);
    it = _image.erase(it);
  }
  for (const auto& [name, number] : _durable_names) {
    if (_image.count(name) != 0) continue;  // written before, unchanged since
    const inode& file = _inodes.at(number);
    if (auto written = write_image(directory + "/" + name, file); !written) {
      _image.clear();
      _image_directory.clear();
      return written;
    }
    _image[name] = image_file{number, file.version};
  }
  return {};
}

core::result<void> disk::write_image(const std::string& path, const inode& file) const {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0640);
  if (fd < 0) return core::fail(errno);
  const std::uint64_t bytes = std::min<std::uint64_t>(file.durable.size(), file.durable_size);
  const bool ok = ::pwrite(fd, file.durable.data(), bytes, 0) == static_cast<ssize_t>(bytes) &&
                  ::ftruncate(fd, static_cast<off_t>(file.durable_size)) == 0;
  const int error = errno;
  ::close(fd);
  if (!ok) return core::fail(error);
  return {};
}

void disk::adopt(int fd, std::string_view name) {
  const auto named = _volatile_names.find(std::string(name));
  if (named == _volatile_names.end()) return;
  _fds[fd] = open_file{named->second, true};
}

// tmpfs and ext4 (4 KiB blocks) report data and holes per page: materialize's one pwrite of
// the stored bytes makes every page it touches data, its ftruncate to the durable size leaves
// the rest a hole (the preallocated, never synced tail of a segment).
std::uint64_t disk::data_end_of(const inode& file) noexcept {
  constexpr std::uint64_t page_bytes = 4096;
  const std::uint64_t stored = std::min<std::uint64_t>(file.durable.size(), file.durable_size);
  const std::uint64_t pages_end = (stored + page_bytes - 1) / page_bytes * page_bytes;
  return std::min(pages_end, file.durable_size);
}

core::result<void> disk::image_io::list(const std::string&,
                                        const std::function<void(std::string_view)>& each) {
  for (const auto& [name, number] : _disk._durable_names) each(name);
  return {};
}

const disk::inode* disk::image_io::durable_inode(const std::string& path) const {
  const auto named = _disk._durable_names.find(basename_of(path.c_str()));
  return named == _disk._durable_names.end() ? nullptr : &_disk._inodes.at(named->second);
}

core::result<std::uint64_t> disk::image_io::size_of(const std::string& path) {
  const inode* file = durable_inode(path);
  if (file == nullptr) return core::fail(ENOENT);
  return file->durable_size;
}

core::result<int> disk::image_io::open_read(const std::string& path) {
  const auto named = _disk._durable_names.find(basename_of(path.c_str()));
  if (named == _disk._durable_names.end()) return core::fail(ENOENT);
  const int fd = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  if (fd < 0) return core::fail(errno);
  _disk._fds[fd] = open_file{named->second, true};  // the store's once recovery hands it on
  return fd;
}

// lseek's SEEK_DATA and SEEK_HOLE over the durable image (one run of data, then a hole).
std::int64_t disk::image_io::seek_data(int fd, std::uint64_t offset) {
  const inode* file = _disk.inode_of(fd);
  if (file == nullptr) return -EBADF;
  if (offset >= file->durable_size || offset >= data_end_of(*file)) return -ENXIO;
  return static_cast<std::int64_t>(offset);
}

std::int64_t disk::image_io::seek_hole(int fd, std::uint64_t offset) {
  const inode* file = _disk.inode_of(fd);
  if (file == nullptr) return -EBADF;
  if (offset >= file->durable_size) return -ENXIO;
  return static_cast<std::int64_t>(std::max(offset, data_end_of(*file)));
}

std::int64_t disk::image_io::read_at(int fd, void* into, std::size_t bytes, std::uint64_t offset) {
  const inode* file = _disk.inode_of(fd);
  if (file == nullptr) return -EBADF;
  if (offset >= file->durable_size) return 0;
  const std::uint64_t taken = std::min<std::uint64_t>(bytes, file->durable_size - offset);
  const std::uint64_t stored = std::min<std::uint64_t>(file->durable.size(), offset + taken);
  const std::uint64_t copied = stored > offset ? stored - offset : 0;
  auto* out = static_cast<char*>(into);
  if (copied != 0) std::memcpy(out, file->durable.data() + offset, copied);
  std::memset(out + copied, 0, taken - copied);
  return static_cast<std::int64_t>(taken);
}

// The stored bytes in place (past them the image holds zeros, which read_at supplies).
std::string_view disk::image_io::in_memory(int fd) {
  const inode* file = _disk.inode_of(fd);
  if (file == nullptr) return {};
  const std::uint64_t stored = std::min<std::uint64_t>(file->durable.size(), file->durable_size);
  return std::string_view(file->durable).substr(0, stored);
}

bool disk::durable(int fd, std::uint64_t offset, std::uint64_t length, std::string& why) const {
  const auto found = _fds.find(fd);
  if (found == _fds.end()) {
    why = fmt::format("fd {} is not a file of the simulated disk", fd);
    return false;
  }
  const inode& file = _inodes.at(found->second.inode);
  const auto named = _durable_names.find(file.name);
  if (named == _durable_names.end() || named->second != found->second.inode) {
    why = fmt::format("the directory entry of {} is not durable", file.name);
    return false;
  }
  if (offset + length > file.durable_size) {
    why = fmt::format("{} is durable up to {} only, not {}", file.name, file.durable_size,
                      offset + length);
    return false;
  }
  for (const auto& write : file.pending) {
    if (write.offset < offset + length && offset < write.offset + write.bytes.size()) {
      why = fmt::format("{} @{}+{} is written but not synced", file.name, write.offset,
                        write.bytes.size());
      return false;
    }
  }
  for (const auto& [serial, op] : _ops) {
    if (op.op.kind == spool::operation_kind::write && op.op.fd == fd &&
        op.op.offset < offset + length && offset < op.op.offset + op.op.bytes) {
      why = fmt::format("{} @{}+{} is still being written", file.name, op.op.offset,
                        op.op.bytes);
      return false;
    }
  }
  return true;
}

// The page cache: the durable bytes (zeros past them), then every completed write in
// completion order (`pending` keeps it: appended as they complete, filtered in place by syncs).
// Only the bytes asked for are assembled, not a copy of the whole file (issue 16).
std::int64_t disk::read(int fd, std::uint64_t offset, void* into, std::uint32_t length) const {
  const auto found = _fds.find(fd);
  if (found == _fds.end()) return -EBADF;
  const inode& file = _inodes.at(found->second.inode);
  std::uint64_t size = std::max(file.size, file.durable_size);
  for (const auto& write : file.pending) size = std::max(size, write.offset + write.bytes.size());
  if (offset >= size) return 0;
  const auto taken = static_cast<std::uint32_t>(std::min<std::uint64_t>(length, size - offset));
  const std::uint64_t end = offset + taken;
  auto* out = static_cast<char*>(into);
  const std::uint64_t stored = std::min<std::uint64_t>(file.durable.size(), end);
  const std::uint64_t copied = stored > offset ? stored - offset : 0;
  if (copied != 0) std::memcpy(out, file.durable.data() + offset, copied);
  std::memset(out + copied, 0, taken - copied);
  for (const auto& write : file.pending) {
    const std::uint64_t from = std::max(offset, write.offset);
    const std::uint64_t to = std::min(end, write.offset + write.bytes.size());
    if (from < to)
      std::memcpy(out + (from - offset), write.bytes.data() + (from - write.offset), to - from);
  }
  return taken;
}

std::string_view disk::durable_view(int fd, std::uint64_t offset, std::uint32_t length) const {
  const auto found = _fds.find(fd);
  if (found == _fds.end()) return {};
  const inode& file = _inodes.at(found->second.inode);
  if (offset > file.durable.size() || length > file.durable.size() - offset) return {};
  for (const auto& write : file.pending)
    if (write.offset < offset + length && offset < write.offset + write.bytes.size()) return {};
  return std::string_view(file.durable).substr(offset, length);
}

std::string disk::name_of(int fd) const {
  const auto found = _fds.find(fd);
  if (found == _fds.end()) return fmt::format("fd{}", fd);
  return _inodes.at(found->second.inode).name;
}

}  // namespace ringmta::sim
