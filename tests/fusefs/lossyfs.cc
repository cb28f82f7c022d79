// lossyfs: a FUSE filesystem (libfuse3 low-level API) that keeps everything in memory and
// loses every write not yet made durable when the "power" fails. See README.md.
//
// The model lives in lossy_tree; this file only translates FUSE requests, under one mutex.
// Invariants: the kernel never caches anything that a crash could make stale (entry and
// attribute timeouts are 0, every open is direct_io, no writeback cache), so after a crash
// the next system call already sees the durable state. Handles opened before a crash answer
// EIO. The control file /.lossyfs-control (inode 2) is outside the "machine": it survives
// crashes and never appears in readdir.
// Never: keep a kernel-visible cache, reuse an inode number, block inside a request.
#ifndef FUSE_USE_VERSION
#define FUSE_USE_VERSION 312
#endif

#include <fuse_lowlevel.h>
#include <pthread.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstddef>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "lossy_tree.h"
#include "lossyfs_assert.h"

namespace ringmta::lossyfs {
namespace {

constexpr fuse_ino_t control_ino = 2;
constexpr std::string_view control_name = ".lossyfs-control";
constexpr std::size_t control_bytes_max = 4096;

struct directory_item {
  std::string name;
  fuse_ino_t ino;
  mode_t mode;
};

// One open file or directory. fuse_file_info::fh holds a pointer to it.
struct open_handle {
  node_ref target;             // null for the control file
  std::uint64_t epoch = 0;     // lossy_tree::epoch() when opened; a crash makes it stale
  int flags = 0;
  std::vector<directory_item> listing;  // readdir snapshot, taken at offset 0
};

struct filesystem {
  explicit filesystem(tree_options options) : tree(options) {}
  std::mutex lock;
  lossy_tree tree;
};

filesystem& of(fuse_req_t request) {
  return *static_cast<filesystem*>(fuse_req_userdata(request));
}

open_handle* handle_of(const fuse_file_info* info) {
  return info ? reinterpret_cast<open_handle*>(info->fh) : nullptr;
}

// A handle from before the last crash belongs to processes of the crashed "machine".
bool stale(const filesystem& fs, const open_handle* handle) {
  return handle && handle->target && handle->epoch != fs.tree.epoch();
}

void fill_stat(const node& target, struct stat& out) {
  out = {};
  out.st_ino = target.ino;
  out.st_mode = target.attr.mode;
  out.st_nlink = target.nlink;
  out.st_uid = target.attr.uid;
  out.st_gid = target.attr.gid;
  out.st_size = static_cast<off_t>(target.is_dir() ? 4096 : target.data.size());
  out.st_blksize = 4096;
  out.st_blocks = (out.st_size + 511) / 512;
  out.st_atim = target.attr.atime;
  out.st_mtim = target.attr.mtime;
  out.st_ctim = target.attr.ctime;
}

void fill_control_stat(struct stat& out) {
  out = {};
  out.st_ino = control_ino;
  out.st_mode = S_IFREG | 0600;
  out.st_nlink = 1;
  out.st_size = control_bytes_max;  // reads end early; the size only lets cat ask
  out.st_blksize = 4096;
}

// Timeouts 0: the kernel asks again every time, so a crash is visible at once.
fuse_entry_param entry_of(const node& target) {
  fuse_entry_param entry{};
  entry.ino = target.ino;
  entry.generation = 1;
  fill_stat(target, entry.attr);
  return entry;
}

bool is_control(fuse_ino_t parent, const char* name) {
  return parent == root_ino && control_name == name;
}

// A reply that fails (the request was interrupted) never reached the kernel, which will then
// send no forget for it: take the lookup back.
void reply_entry_locked(fuse_req_t request, filesystem& fs, const node_ref& target) {
  fs.tree.add_lookup(*target);
  const fuse_entry_param entry = entry_of(*target);
  if (fuse_reply_entry(request, &entry) != 0) fs.tree.forget(target->ino, 1);
}

std::string control_text(filesystem& fs) {
  const tree_counters& counters = fs.tree.counters();
  char text[512];
  std::snprintf(text, sizeof text,
                "pid %ld\ncrashes %llu\nfsyncs %llu\nfsyncdirs %llu\nnodes %llu\n"
                "bytes_used %llu\nbytes_max %llu\nlossy_dirs %s\n",
                static_cast<long>(getpid()), static_cast<unsigned long long>(counters.crashes),
                static_cast<unsigned long long>(counters.fsyncs),
                static_cast<unsigned long long>(counters.fsyncdirs),
                static_cast<unsigned long long>(fs.tree.node_count()),
                static_cast<unsigned long long>(fs.tree.bytes_used()),
                static_cast<unsigned long long>(fs.tree.bytes_max()),
                fs.tree.options().dirs == dir_durability::file ? "file" : "strict");
  return text;
}

// Commands written to the control file, separated by white space: "crash" and "sync".
int run_control(filesystem& fs, std::string_view commands) {
  std::size_t position = 0;
  while (position < commands.size()) {
    const std::size_t start = commands.find_first_not_of(" \t\r\n", position);
    if (start == std::string_view::npos) break;
    const std::size_t end = std::min(commands.find_first_of(" \t\r\n", start), commands.size());
    const std::string_view word = commands.substr(start, end - start);
    if (word == "crash") {
      fs.tree.crash();
      std::fprintf(stderr, "lossyfs: crash %llu (control file)\n",
                   static_cast<unsigned long long>(fs.tree.counters().crashes));
    } else if (word == "sync") {
      fs.tree.sync_all();
    } else {
      return EINVAL;
    }
    position = end;
  }
  return 0;
}

// ---- requests: names --------------------------------------------------------------------

void op_lookup(fuse_req_t request, fuse_ino_t parent, const char* name) {
  filesystem& fs = of(request);
  std::lock_guard guard(fs.lock);
  if (is_control(parent, name)) {
    fuse_entry_param entry{};
    entry.ino = control_ino;
    entry.generation = 1;
    fill_control_stat(entry.attr);
    fuse_reply_entry(request, &entry);
    return;
  }
  node_ref found;
  if (const int error = fs.tree.lookup(parent, name, found)) {
    fuse_reply_err(request, error);
    return;
  }
  reply_entry_locked(request, fs, found);
}

void op_forget(fuse_req_t request, fuse_ino_t ino, std::uint64_t count) {
  filesystem& fs = of(request);
  {
    std::lock_guard guard(fs.lock);
    if (ino != control_ino) fs.tree.forget(ino, count);
  }
  fuse_reply_none(request);
}

void op_forget_multi(fuse_req_t request, std::size_t count, fuse_forget_data* forgets) {
  filesystem& fs = of(request);
  {
    std::lock_guard guard(fs.lock);
    for (std::size_t i = 0; i < count; ++i) {
      if (forgets[i].ino != control_ino) fs.tree.forget(forgets[i].ino, forgets[i].nlookup);
    }
  }
  fuse_reply_none(request);
}

identity caller(fuse_req_t request) {
  const fuse_ctx* context = fuse_req_ctx(request);
  return {context->uid, context->gid};
}

void op_mknod(fuse_req_t request, fuse_ino_t parent, const char* name, mode_t mode, dev_t) {
  filesystem& fs = of(request);
  std::lock_guard guard(fs.lock);
  if (!S_ISREG(mode)) {
    fuse_reply_err(request, EPERM);  // devices, fifos and sockets are not needed by a spool
    return;
  }
  node_ref created;
  const int error = is_control(parent, name)
                        ? EEXIST
                        : fs.tree.make_file(parent, name, mode, caller(request), created);
  if (error) {
    fuse_reply_err(request, error);
    return;
  }
  reply_entry_locked(request, fs, created);
}

void op_mkdir(fuse_req_t request, fuse_ino_t parent, const char* name, mode_t mode) {
  filesystem& fs = of(request);
  std::lock_guard guard(fs.lock);
  node_ref created;
  const int error = is_control(parent, name)
                        ? EEXIST
                        : fs.tree.make_directory(parent, name, mode, caller(request), created);
  if (error) {
    fuse_reply_err(request, error);
    return;
  }
  reply_entry_locked(request, fs, created);
}

void op_unlink(fuse_req_t request, fuse_ino_t parent, const char* name) {
  filesystem& fs = of(request);
  std::lock_guard guard(fs.lock);
  fuse_reply_err(request, is_control(parent, name) ? EPERM : fs.tree.unlink(parent, name));
}

void op_rmdir(fuse_req_t request, fuse_ino_t parent, const char* name) {
  filesystem& fs = of(request);
  std::lock_guard guard(fs.lock);
  fuse_reply_err(request,
                 is_control(parent, name) ? ENOTDIR : fs.tree.remove_directory(parent, name));
}

void op_rename(fuse_req_t request, fuse_ino_t parent, const char* name, fuse_ino_t new_parent,
               const char* new_name, unsigned int flags) {
  filesystem& fs = of(request);
  std::lock_guard guard(fs.lock);
  if (is_control(parent, name) || is_control(new_parent, new_name)) {
    fuse_reply_err(request, EPERM);
    return;
  }
  fuse_reply_err(request, fs.tree.rename(parent, name, new_parent, new_name, flags));
}

void op_link(fuse_req_t request, fuse_ino_t ino, fuse_ino_t new_parent, const char* new_name) {
  filesystem& fs = of(request);
  std::lock_guard guard(fs.lock);
  node_ref linked;
  int error = EPERM;
  if (ino != control_ino) {
    error = is_control(new_parent, new_name) ? EEXIST
                                             : fs.tree.link(ino, new_parent, new_name, linked);
  }
  if (error) {
    fuse_reply_err(request, error);
    return;
  }
  reply_entry_locked(request, fs, linked);
}

// ---- requests: attributes ---------------------------------------------------------------

void op_getattr(fuse_req_t request, fuse_ino_t ino, fuse_file_info*) {
  filesystem& fs = of(request);
  std::lock_guard guard(fs.lock);
  struct stat attributes_out;
  if (ino == control_ino) {
    fill_control_stat(attributes_out);
  } else {
    const node_ref target = fs.tree.find(ino);
    if (!target || target->dead) {
      fuse_reply_err(request, ESTALE);
      return;
    }
    fill_stat(*target, attributes_out);
  }
  fuse_reply_attr(request, &attributes_out, 0.0);
}

attribute_change change_of(const struct stat& wanted, int to_set) {
  attribute_change change;
  change.mode = (to_set & FUSE_SET_ATTR_MODE) != 0;
  change.uid = (to_set & FUSE_SET_ATTR_UID) != 0;
  change.gid = (to_set & FUSE_SET_ATTR_GID) != 0;
  change.size = (to_set & FUSE_SET_ATTR_SIZE) != 0;
  change.atime = (to_set & (FUSE_SET_ATTR_ATIME | FUSE_SET_ATTR_ATIME_NOW)) != 0;
  change.mtime = (to_set & (FUSE_SET_ATTR_MTIME | FUSE_SET_ATTR_MTIME_NOW)) != 0;
  change.atime_now = (to_set & FUSE_SET_ATTR_ATIME_NOW) != 0;
  change.mtime_now = (to_set & FUSE_SET_ATTR_MTIME_NOW) != 0;
  change.values.mode = wanted.st_mode;
  change.values.uid = wanted.st_uid;
  change.values.gid = wanted.st_gid;
  change.values.atime = wanted.st_atim;
  change.values.mtime = wanted.st_mtim;
  change.size_bytes = static_cast<std::uint64_t>(std::max<off_t>(wanted.st_size, 0));
  return change;
}

void op_setattr(fuse_req_t request, fuse_ino_t ino, struct stat* wanted, int to_set,
                fuse_file_info* info) {
  filesystem& fs = of(request);
  std::lock_guard guard(fs.lock);
  struct stat attributes_out;
  if (ino == control_ino) {  // "echo crash >" truncates first: accept and ignore
    fill_control_stat(attributes_out);
    fuse_reply_attr(request, &attributes_out, 0.0);
    return;
  }
  const node_ref target = fs.tree.find(ino);
  int error = target ? 0 : ESTALE;
  if (!error && stale(fs, handle_of(info))) error = EIO;
  if (!error) error = fs.tree.set_attributes(*target, change_of(*wanted, to_set));
  if (error) {
    fuse_reply_err(request, error);
    return;
  }
  fill_stat(*target, attributes_out);
  fuse_reply_attr(request, &attributes_out, 0.0);
}

void op_statfs(fuse_req_t request, fuse_ino_t) {
  filesystem& fs = of(request);
  std::lock_guard guard(fs.lock);
  constexpr std::uint64_t block_bytes = 4096;
  constexpr std::uint64_t unlimited_blocks = 1ULL << 30;  // 4 TiB shown when size_max is unset
  const std::uint64_t total = fs.tree.bytes_max() ? fs.tree.bytes_max() / block_bytes
                                                  : unlimited_blocks;
  const std::uint64_t used = (fs.tree.bytes_used() + block_bytes - 1) / block_bytes;
  struct statvfs out {};
  out.f_bsize = block_bytes;
  out.f_frsize = block_bytes;
  out.f_blocks = total;
  out.f_bfree = out.f_bavail = total > used ? total - used : 0;
  out.f_files = 1ULL << 32;
  out.f_ffree = out.f_favail = out.f_files - fs.tree.node_count();
  out.f_namemax = name_bytes_max;
  fuse_reply_statfs(request, &out);
}

// ---- requests: files --------------------------------------------------------------------

open_handle* new_handle(filesystem& fs, node_ref target, int flags) {
  auto* handle = new open_handle;
  handle->epoch = fs.tree.epoch();
  handle->flags = flags;
  if (target) fs.tree.opened(*target);
  handle->target = std::move(target);
  return handle;
}

void op_create(fuse_req_t request, fuse_ino_t parent, const char* name, mode_t mode,
               fuse_file_info* info) {
  filesystem& fs = of(request);
  std::lock_guard guard(fs.lock);
  node_ref created;
  const int error = is_control(parent, name)
                        ? EEXIST
                        : fs.tree.make_file(parent, name, mode, caller(request), created);
  if (error) {
    fuse_reply_err(request, error);
    return;
  }
  fs.tree.add_lookup(*created);
  const fuse_entry_param entry = entry_of(*created);
  info->fh = reinterpret_cast<std::uint64_t>(new_handle(fs, created, info->flags));
  info->direct_io = 1;
  if (fuse_reply_create(request, &entry, info) != 0) {
    // The opener is gone (interrupted): the kernel will send no release and no forget.
    auto* handle = handle_of(info);
    fs.tree.released(std::move(handle->target));
    delete handle;
    fs.tree.forget(entry.ino, 1);
  }
}

void op_open(fuse_req_t request, fuse_ino_t ino, fuse_file_info* info) {
  filesystem& fs = of(request);
  std::lock_guard guard(fs.lock);
  node_ref target;
  if (ino != control_ino) {
    target = fs.tree.find(ino);
    int error = (!target || target->dead) ? ESTALE : target->is_dir() ? EISDIR : 0;
    if (!error && (info->flags & O_TRUNC) && target->data.size() != 0) {
      attribute_change truncate;
      truncate.size = true;
      error = fs.tree.set_attributes(*target, truncate);
    }
    if (error) {
      fuse_reply_err(request, error);
      return;
    }
  }
  info->fh = reinterpret_cast<std::uint64_t>(new_handle(fs, std::move(target), info->flags));
  info->direct_io = 1;
  if (fuse_reply_open(request, info) != 0) {
    auto* handle = handle_of(info);
    if (handle->target) fs.tree.released(std::move(handle->target));
    delete handle;
  }
}

void op_read(fuse_req_t request, fuse_ino_t, std::size_t size, off_t offset,
             fuse_file_info* info) {
  filesystem& fs = of(request);
  std::vector<char> buffer;
  {
    std::lock_guard guard(fs.lock);
    open_handle* handle = handle_of(info);
    if (!handle->target) {
      const std::string text = control_text(fs);
      const std::size_t start = std::min<std::size_t>(static_cast<std::size_t>(offset),
                                                      text.size());
      buffer.assign(text.begin() + static_cast<std::ptrdiff_t>(start), text.end());
      buffer.resize(std::min(buffer.size(), size));
    } else if (stale(fs, handle)) {
      fuse_reply_err(request, EIO);
      return;
    } else {
      buffer.resize(size);
      const long count = fs.tree.read(*handle->target, static_cast<std::uint64_t>(offset), size,
                                       buffer.data());
      if (count < 0) {
        fuse_reply_err(request, static_cast<int>(-count));
        return;
      }
      buffer.resize(static_cast<std::size_t>(count));
    }
  }
  fuse_reply_buf(request, buffer.data(), buffer.size());
}

void op_write(fuse_req_t request, fuse_ino_t, const char* data, std::size_t size, off_t offset,
              fuse_file_info* info) {
  filesystem& fs = of(request);
  std::lock_guard guard(fs.lock);
  open_handle* handle = handle_of(info);
  if (!handle->target) {
    const int error = run_control(fs, std::string_view(data, size));
    if (error) {
      fuse_reply_err(request, error);
    } else {
      fuse_reply_write(request, size);
    }
    return;
  }
  if (stale(fs, handle)) {
    fuse_reply_err(request, EIO);
    return;
  }
  const long count = fs.tree.write(*handle->target, static_cast<std::uint64_t>(offset), data,
                                   size, (handle->flags & O_APPEND) != 0);
  if (count < 0) {
    fuse_reply_err(request, static_cast<int>(-count));
  } else {
    fuse_reply_write(request, static_cast<std::size_t>(count));
  }
}

void op_flush(fuse_req_t request, fuse_ino_t, fuse_file_info*) {
  fuse_reply_err(request, 0);
}

void op_release(fuse_req_t request, fuse_ino_t, fuse_file_info* info) {
  filesystem& fs = of(request);
  {
    std::lock_guard guard(fs.lock);
    open_handle* handle = handle_of(info);
    if (handle->target) fs.tree.released(std::move(handle->target));
    delete handle;
  }
  fuse_reply_err(request, 0);
}

void op_fsync(fuse_req_t request, fuse_ino_t, int data_only, fuse_file_info* info) {
  filesystem& fs = of(request);
  std::lock_guard guard(fs.lock);
  open_handle* handle = handle_of(info);
  if (handle->target) {
    if (stale(fs, handle)) {
      fuse_reply_err(request, EIO);
      return;
    }
    fs.tree.sync_file(*handle->target, data_only != 0);
  }
  fuse_reply_err(request, 0);
}

void op_fallocate(fuse_req_t request, fuse_ino_t, int mode, off_t offset, off_t length,
                  fuse_file_info* info) {
  filesystem& fs = of(request);
  std::lock_guard guard(fs.lock);
  open_handle* handle = handle_of(info);
  int error = EINVAL;
  if (!handle->target) {
    error = ENODEV;
  } else if (stale(fs, handle)) {
    error = EIO;
  } else if (offset >= 0 && length > 0) {
    error = fs.tree.allocate(*handle->target, mode, static_cast<std::uint64_t>(offset),
                             static_cast<std::uint64_t>(length));
  }
  fuse_reply_err(request, error);
}

// ---- requests: directories --------------------------------------------------------------

void op_opendir(fuse_req_t request, fuse_ino_t ino, fuse_file_info* info) {
  filesystem& fs = of(request);
  std::lock_guard guard(fs.lock);
  node_ref target = fs.tree.find(ino);
  if (!target || target->dead || !target->is_dir()) {
    fuse_reply_err(request, !target || target->dead ? ESTALE : ENOTDIR);
    return;
  }
  info->fh = reinterpret_cast<std::uint64_t>(new_handle(fs, std::move(target), info->flags));
  if (fuse_reply_open(request, info) != 0) {
    auto* handle = handle_of(info);
    fs.tree.released(std::move(handle->target));
    delete handle;
  }
}

void take_listing(open_handle& handle) {
  const node& dir = *handle.target;
  handle.listing.clear();
  handle.listing.reserve(dir.entries.size() + 2);
  const node_ref parent = dir.parent.lock();
  handle.listing.push_back({".", dir.ino, S_IFDIR});
  handle.listing.push_back({"..", parent ? parent->ino : dir.ino, S_IFDIR});
  for (const auto& [name, child] : dir.entries) {
    handle.listing.push_back({name, child->ino, child->attr.mode});
  }
}

// Offsets index the snapshot taken at offset 0, so concurrent changes never skip a name.
void op_readdir(fuse_req_t request, fuse_ino_t, std::size_t size, off_t offset,
                fuse_file_info* info) {
  filesystem& fs = of(request);
  std::vector<char> buffer(size);
  std::size_t used = 0;
  {
    std::lock_guard guard(fs.lock);
    open_handle* handle = handle_of(info);
    if (stale(fs, handle)) {
      fuse_reply_err(request, EIO);
      return;
    }
    if (offset == 0 || handle->listing.empty()) take_listing(*handle);
    for (auto index = static_cast<std::size_t>(offset); index < handle->listing.size();
         ++index) {
      const directory_item& item = handle->listing[index];
      struct stat attributes_out {};
      attributes_out.st_ino = item.ino;
      attributes_out.st_mode = item.mode;
      const std::size_t wanted =
          fuse_add_direntry(request, buffer.data() + used, size - used, item.name.c_str(),
                            &attributes_out, static_cast<off_t>(index + 1));
      if (wanted > size - used) break;
      used += wanted;
    }
  }
  fuse_reply_buf(request, buffer.data(), used);
}

void op_releasedir(fuse_req_t request, fuse_ino_t, fuse_file_info* info) {
  op_release(request, 0, info);
}

void op_fsyncdir(fuse_req_t request, fuse_ino_t, int, fuse_file_info* info) {
  filesystem& fs = of(request);
  std::lock_guard guard(fs.lock);
  open_handle* handle = handle_of(info);
  if (stale(fs, handle)) {
    fuse_reply_err(request, EIO);
    return;
  }
  fs.tree.sync_directory(*handle->target);
  fuse_reply_err(request, 0);
}

void op_init(void*, fuse_conn_info* connection) {
  // Every write must reach us before write(2) returns, or a crash could not lose it.
  connection->want &= ~(FUSE_CAP_WRITEBACK_CACHE | FUSE_CAP_READDIRPLUS |
                        FUSE_CAP_SPLICE_READ | FUSE_CAP_SPLICE_WRITE | FUSE_CAP_SPLICE_MOVE);
  connection->max_write = 1024 * 1024;  // libfuse lowers it to what its buffers allow
}

fuse_lowlevel_ops make_operations() {
  fuse_lowlevel_ops operations{};
  operations.init = op_init;
  operations.lookup = op_lookup;
  operations.forget = op_forget;
  operations.forget_multi = op_forget_multi;
  operations.getattr = op_getattr;
  operations.setattr = op_setattr;
  operations.mknod = op_mknod;
  operations.mkdir = op_mkdir;
  operations.unlink = op_unlink;
  operations.rmdir = op_rmdir;
  operations.rename = op_rename;
  operations.link = op_link;
  operations.create = op_create;
  operations.open = op_open;
  operations.read = op_read;
  operations.write = op_write;
  operations.flush = op_flush;
  operations.release = op_release;
  operations.fsync = op_fsync;
  operations.fallocate = op_fallocate;
  operations.opendir = op_opendir;
  operations.readdir = op_readdir;
  operations.releasedir = op_releasedir;
  operations.fsyncdir = op_fsyncdir;
  operations.statfs = op_statfs;
  return operations;
}

// ---- process ----------------------------------------------------------------------------

// SIGUSR1 is blocked in every thread and taken here with sigwait, so the crash runs as
// ordinary code under the mutex. SIGUSR2 ends the thread at unmount.
void crash_on_signal(filesystem& fs) {
  sigset_t wanted;
  sigemptyset(&wanted);
  sigaddset(&wanted, SIGUSR1);
  sigaddset(&wanted, SIGUSR2);
  for (;;) {
    int signal_number = 0;
    if (sigwait(&wanted, &signal_number) != 0 || signal_number == SIGUSR2) return;
    std::lock_guard guard(fs.lock);
    fs.tree.crash();
    std::fprintf(stderr, "lossyfs: crash %llu (SIGUSR1)\n",
                 static_cast<unsigned long long>(fs.tree.counters().crashes));
  }
}

struct command_line {
  char* lossy_dirs = nullptr;
  char* size_max = nullptr;
};

const fuse_opt option_specs[] = {
    {"lossy_dirs=%s", offsetof(command_line, lossy_dirs), 0},
    {"size_max=%s", offsetof(command_line, size_max), 0},
    FUSE_OPT_END,
};

void print_usage(const char* program) {
  std::printf(
      "usage: %s [options] MOUNTPOINT\n\n"
      "lossyfs keeps files in memory and, on a crash, forgets all that was not fsync'd.\n"
      "    -o lossy_dirs=strict   names durable only after fsync of their directory (default)\n"
      "    -o lossy_dirs=file     fsync of a file also makes its names durable (ext4-like)\n"
      "    -o size_max=BYTES      ENOSPC past this many bytes of file data (suffix K, M, G)\n"
      "crash: kill -USR1 PID (asynchronous), or write \"crash\" to MOUNTPOINT/%s\n"
      "(synchronous; \"sync\" makes everything durable). Reading it shows counters.\n\n",
      program, std::string(control_name).c_str());
}

// BYTES with an optional K, M or G suffix (powers of 1024). False when malformed.
bool parse_bytes(const char* text, std::uint64_t& out) {
  char* end = nullptr;
  errno = 0;
  const unsigned long long value = std::strtoull(text, &end, 10);
  if (errno != 0 || end == text) return false;
  std::uint64_t scale = 1;
  if (*end == 'K' || *end == 'k') scale = 1ULL << 10;
  if (*end == 'M' || *end == 'm') scale = 1ULL << 20;
  if (*end == 'G' || *end == 'g') scale = 1ULL << 30;
  if (scale != 1) ++end;
  if (*end != '\0' || value > UINT64_MAX / scale) return false;
  out = value * scale;
  return true;
}

bool parse_tree_options(const command_line& cli, tree_options& out) {
  if (cli.lossy_dirs) {
    const std::string_view mode = cli.lossy_dirs;
    if (mode == "strict") {
      out.dirs = dir_durability::strict;
    } else if (mode == "file") {
      out.dirs = dir_durability::file;
    } else {
      std::fprintf(stderr, "lossyfs: lossy_dirs must be strict or file, not '%s'\n",
                   cli.lossy_dirs);
      return false;
    }
  }
  if (cli.size_max && (!parse_bytes(cli.size_max, out.bytes_max) || out.bytes_max == 0)) {
    std::fprintf(stderr, "lossyfs: size_max must be a positive byte count, not '%s'\n",
                 cli.size_max);
    return false;
  }
  return true;
}

int serve(fuse_session* session, const fuse_cmdline_opts& options, filesystem& fs) {
  if (fuse_set_signal_handlers(session) != 0) return 1;
  if (fuse_session_mount(session, options.mountpoint) != 0) {
    fuse_remove_signal_handlers(session);
    return 1;
  }
  fuse_daemonize(options.foreground);
  std::thread crasher(crash_on_signal, std::ref(fs));  // after the fork of fuse_daemonize
  int status = 0;
  if (options.singlethread) {
    status = fuse_session_loop(session);
  } else {
    fuse_loop_config* config = fuse_loop_cfg_create();
    fuse_loop_cfg_set_clone_fd(config, static_cast<unsigned>(options.clone_fd));
    if (options.max_threads <= 100000) {  // libfuse leaves it at UINT_MAX when not given
      fuse_loop_cfg_set_max_threads(config, options.max_threads);
    }
    if (options.max_idle_threads <= 100000) {
      fuse_loop_cfg_set_idle_threads(config, options.max_idle_threads);
    }
    status = fuse_session_loop_mt(session, config);
    fuse_loop_cfg_destroy(config);
  }
  pthread_kill(crasher.native_handle(), SIGUSR2);
  crasher.join();
  fuse_session_unmount(session);
  fuse_remove_signal_handlers(session);
  return status == 0 ? 0 : 1;
}

int run(int argc, char** argv) {
  fuse_args args = FUSE_ARGS_INIT(argc, argv);
  command_line cli;
  fuse_cmdline_opts options{};
  tree_options tree_config;
  if (fuse_opt_parse(&args, &cli, option_specs, nullptr) != 0 ||
      fuse_parse_cmdline(&args, &options) != 0 || !parse_tree_options(cli, tree_config)) {
    return 2;
  }
  if (options.show_help || options.show_version || !options.mountpoint) {
    print_usage(argv[0]);
    if (options.show_help) fuse_cmdline_help();
    if (!options.show_help && !options.show_version) std::fprintf(stderr, "no mountpoint\n");
    return options.mountpoint || options.show_help || options.show_version ? 0 : 2;
  }
  // The kernel checks permissions from our modes; root lets the MTA's own user in.
  fuse_opt_add_arg(&args, "-ofsname=lossyfs,subtype=lossyfs,default_permissions");
  if (geteuid() == 0) fuse_opt_add_arg(&args, "-oallow_other");
  sigset_t blocked;
  sigemptyset(&blocked);
  sigaddset(&blocked, SIGUSR1);
  sigaddset(&blocked, SIGUSR2);
  pthread_sigmask(SIG_BLOCK, &blocked, nullptr);  // every FUSE thread inherits this

  filesystem fs(tree_config);
  const fuse_lowlevel_ops operations = make_operations();
  fuse_session* session = fuse_session_new(&args, &operations, sizeof operations, &fs);
  int status = 1;
  if (session) {
    status = serve(session, options, fs);
    fuse_session_destroy(session);
  }
  std::free(options.mountpoint);
  std::free(cli.lossy_dirs);
  std::free(cli.size_max);
  fuse_opt_free_args(&args);
  return status;
}

}  // namespace
}  // namespace ringmta::lossyfs

int main(int argc, char** argv) { return ringmta::lossyfs::run(argc, argv); }
