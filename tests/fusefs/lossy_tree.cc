// lossy_tree: see lossy_tree.h for the model. The rules that matter for power-loss tests:
// a name is durable once its directory was fsync'd (or, with dir_durability::file, once the
// file it names was fsync'd); contents and size once the file was fsync'd or fdatasync'd.
#include "lossy_tree.h"

#include <fcntl.h>
#include <linux/fs.h>
#include <time.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <utility>
#include <unordered_set>

#include "lossyfs_assert.h"

namespace ringmta::lossyfs {

namespace {

timespec now() noexcept {
  timespec value{};
  clock_gettime(CLOCK_REALTIME, &value);
  return value;
}

int check_name(std::string_view name) noexcept {
  if (name.empty() || name == "." || name == "..") return EINVAL;
  if (name.size() > name_bytes_max) return ENAMETOOLONG;
  return 0;
}

}  // namespace

// ---- file_contents ----------------------------------------------------------------------

std::size_t file_contents::read(std::uint64_t offset, std::size_t length, char* out) const {
  if (offset >= _size) return 0;
  length = static_cast<std::size_t>(std::min<std::uint64_t>(length, _size - offset));
  std::size_t done = 0;
  while (done < length) {
    const std::uint64_t position = offset + done;
    const std::size_t index = position / chunk_bytes;
    const std::size_t within = position % chunk_bytes;
    const std::size_t count = std::min(length - done, chunk_bytes - within);
    const auto& source = _chunks[index];
    if (source) {
      std::memcpy(out + done, source->data() + within, count);
    } else {
      std::memset(out + done, 0, count);
    }
    done += count;
  }
  return length;
}

// Copy-on-write: a chunk still shared with the durable state is cloned before it changes.
file_contents::chunk& file_contents::writable_chunk(std::size_t index) {
  auto& slot = _chunks[index];
  if (!slot) {
    slot = std::make_shared<chunk>();  // value-initialized: zeros
  } else if (slot.use_count() > 1) {
    slot = std::make_shared<chunk>(*slot);
  }
  return *slot;
}

void file_contents::write(std::uint64_t offset, const char* data, std::size_t length) {
  if (length == 0) return;
  if (offset + length > _size) resize(offset + length);
  std::size_t done = 0;
  while (done < length) {
    const std::uint64_t position = offset + done;
    const std::size_t within = position % chunk_bytes;
    const std::size_t count = std::min(length - done, chunk_bytes - within);
    std::memcpy(writable_chunk(position / chunk_bytes).data() + within, data + done, count);
    done += count;
  }
}

void file_contents::resize(std::uint64_t size) {
  const std::size_t count = (size + chunk_bytes - 1) / chunk_bytes;
  _chunks.resize(count);
  if (size < _size) {
    // Keep the invariant that bytes past the size are zero, so growing again reads zeros.
    const std::size_t tail = size % chunk_bytes;
    if (tail != 0 && _chunks[count - 1]) {
      std::memset(writable_chunk(count - 1).data() + tail, 0, chunk_bytes - tail);
    }
    if (count == 0) _chunks.shrink_to_fit();
  }
  _size = size;
}

void file_contents::zero_range(std::uint64_t offset, std::uint64_t length) {
  if (offset >= _size) return;
  const std::uint64_t end = std::min(_size, offset + length);
  while (offset < end) {
    const std::size_t index = offset / chunk_bytes;
    const std::size_t within = offset % chunk_bytes;
    const std::size_t count =
        static_cast<std::size_t>(std::min<std::uint64_t>(end - offset, chunk_bytes - within));
    if (count == chunk_bytes) {
      _chunks[index].reset();
    } else if (_chunks[index]) {
      std::memset(writable_chunk(index).data() + within, 0, count);
    }
    offset += count;
  }
}

// ---- lossy_tree: lifetime ---------------------------------------------------------------

lossy_tree::lossy_tree(tree_options options) : _options(options) {
  auto root = std::make_shared<node>();
  root->ino = root_ino;
  root->attr.mode = S_IFDIR | 0755;
  root->attr.atime = root->attr.mtime = root->attr.ctime = now();
  root->durable_attr = root->attr;
  root->nlink = 2;
  root->parent = root;
  root->lookup_count = 1;  // the kernel never forgets the root
  _nodes.emplace(root_ino, std::move(root));
}

lossy_tree::~lossy_tree() {
  // Directories own their children through shared pointers; a durable tree left over from
  // a half-durable cross-directory rename can form a cycle, so break every link explicitly.
  for (auto& [ino, entry] : _nodes) {
    entry->entries.clear();
    entry->durable_entries.clear();
  }
}

node_ref lossy_tree::find(std::uint64_t ino) const {
  const auto found = _nodes.find(ino);
  return found == _nodes.end() ? nullptr : found->second;
}

node_ref lossy_tree::new_node(mode_t mode, identity who) {
  auto created = std::make_shared<node>();
  created->ino = _next_ino++;
  created->attr.mode = mode;
  created->attr.uid = who.uid;
  created->attr.gid = who.gid;
  created->attr.atime = created->attr.mtime = created->attr.ctime = now();
  // A name made durable before the first fsync reveals an empty file with these attributes.
  created->durable_attr = created->attr;
  _nodes.emplace(created->ino, created);
  return created;
}

void lossy_tree::recharge(node& target) noexcept {
  const bool counted = !target.dead && target.is_file() &&
                       (target.nlink > 0 || target.open_count > 0);
  const std::uint64_t wanted = counted ? target.data.size() : 0;
  _bytes_used = _bytes_used - target.charged_bytes + wanted;
  target.charged_bytes = wanted;
}

// Frees a node once nothing refers to it: no name in any current or durable directory map,
// no kernel lookup and no open handle. The caller hands over its reference; with the table's
// own reference that makes two.
void lossy_tree::consider_collect(node_ref candidate) {
  if (!candidate || candidate->ino == root_ino) return;
  if (candidate.use_count() != 2 || candidate->lookup_count != 0 ||
      candidate->open_count != 0) {
    return;
  }
  _nodes.erase(candidate->ino);
  candidate->dead = true;
  recharge(*candidate);
  auto entries = std::move(candidate->entries);
  auto durable_entries = std::move(candidate->durable_entries);
  candidate->entries.clear();
  candidate->durable_entries.clear();
  for (auto* map : {&entries, &durable_entries}) {
    for (auto& [name, child] : *map) consider_collect(std::move(child));
  }
}

void lossy_tree::forget(std::uint64_t ino, std::uint64_t count) {
  node_ref target = find(ino);
  if (!target) return;
  target->lookup_count -= std::min(count, target->lookup_count);
  consider_collect(std::move(target));
}

void lossy_tree::released(node_ref target) {
  LOSSYFS_ASSERT(target && target->open_count > 0);
  --target->open_count;
  recharge(*target);
  consider_collect(std::move(target));
}

// ---- lossy_tree: namespace --------------------------------------------------------------

int lossy_tree::checked_directory(std::uint64_t ino, node_ref& out) const {
  out = find(ino);
  if (!out || out->dead) return ENOENT;
  if (!out->is_dir()) return ENOTDIR;
  return 0;
}

void lossy_tree::mark_dirty(node& dir, std::string_view name, node& child) {
  dir.dirty_names.emplace(name);
  if (_options.dirs == dir_durability::file) {
    child.pending_names.emplace_back(dir.weak_from_this(), std::string(name));
  }
}

void lossy_tree::add_entry(node& dir, std::string_view name, const node_ref& child) {
  dir.entries.emplace(std::string(name), child);
  if (child->is_dir()) {
    ++dir.nlink;  // the child's ".."
    child->parent = dir.weak_from_this();
  } else {
    ++child->nlink;
  }
  mark_dirty(dir, name, *child);
  dir.attr.mtime = dir.attr.ctime = child->attr.ctime = now();
  recharge(*child);
}

node_ref lossy_tree::remove_entry(node& dir, std::string_view name) {
  const auto found = dir.entries.find(name);
  LOSSYFS_ASSERT(found != dir.entries.end());
  node_ref child = std::move(found->second);
  dir.entries.erase(found);
  if (child->is_dir()) {
    --dir.nlink;
  } else {
    --child->nlink;
  }
  mark_dirty(dir, name, *child);
  dir.attr.mtime = dir.attr.ctime = child->attr.ctime = now();
  recharge(*child);
  return child;
}

int lossy_tree::lookup(std::uint64_t parent, std::string_view name, node_ref& out) {
  node_ref dir;
  if (const int error = checked_directory(parent, dir)) return error;
  if (name.size() > name_bytes_max) return ENAMETOOLONG;
  const auto found = dir->entries.find(name);
  if (found == dir->entries.end()) return ENOENT;
  out = found->second;
  return 0;
}

int lossy_tree::make_file(std::uint64_t parent, std::string_view name, mode_t mode,
                          identity who, node_ref& out) {
  node_ref dir;
  if (const int error = checked_directory(parent, dir)) return error;
  if (const int error = check_name(name)) return error;
  if (dir->entries.contains(name)) return EEXIST;
  out = new_node(S_IFREG | (mode & 07777), who);
  add_entry(*dir, name, out);
  return 0;
}

int lossy_tree::make_directory(std::uint64_t parent, std::string_view name, mode_t mode,
                               identity who, node_ref& out) {
  node_ref dir;
  if (const int error = checked_directory(parent, dir)) return error;
  if (const int error = check_name(name)) return error;
  if (dir->entries.contains(name)) return EEXIST;
  out = new_node(S_IFDIR | (mode & 07777), who);
  out->nlink = 2;
  add_entry(*dir, name, out);
  return 0;
}

int lossy_tree::link(std::uint64_t ino, std::uint64_t parent, std::string_view name,
                     node_ref& out) {
  node_ref dir;
  if (const int error = checked_directory(parent, dir)) return error;
  if (const int error = check_name(name)) return error;
  node_ref target = find(ino);
  if (!target || target->dead || target->nlink == 0) return ENOENT;
  if (target->is_dir()) return EPERM;
  if (dir->entries.contains(name)) return EEXIST;
  add_entry(*dir, name, target);
  out = std::move(target);
  return 0;
}

int lossy_tree::unlink(std::uint64_t parent, std::string_view name) {
  node_ref dir;
  if (const int error = checked_directory(parent, dir)) return error;
  const auto found = dir->entries.find(name);
  if (found == dir->entries.end()) return ENOENT;
  if (found->second->is_dir()) return EISDIR;
  consider_collect(remove_entry(*dir, name));
  return 0;
}

int lossy_tree::remove_directory(std::uint64_t parent, std::string_view name) {
  node_ref dir;
  if (const int error = checked_directory(parent, dir)) return error;
  const auto found = dir->entries.find(name);
  if (found == dir->entries.end()) return ENOENT;
  if (!found->second->is_dir()) return ENOTDIR;
  if (!found->second->entries.empty()) return ENOTEMPTY;
  node_ref removed = remove_entry(*dir, name);
  removed->nlink = 0;
  consider_collect(std::move(removed));
  return 0;
}

bool lossy_tree::is_ancestor(const node& maybe_ancestor, const node& dir) const {
  const node* walk = &dir;
  for (;;) {
    if (walk == &maybe_ancestor) return true;
    if (walk->ino == root_ino) return false;
    const node_ref up = walk->parent.lock();
    if (!up) return false;
    walk = up.get();  // kept alive by its own parent's entries
  }
}

int lossy_tree::rename(std::uint64_t parent, std::string_view name, std::uint64_t new_parent,
                       std::string_view new_name, unsigned flags) {
  if ((flags & ~(RENAME_NOREPLACE | RENAME_EXCHANGE)) != 0) return EINVAL;
  if ((flags & RENAME_NOREPLACE) && (flags & RENAME_EXCHANGE)) return EINVAL;
  node_ref from_dir, to_dir;
  if (const int error = checked_directory(parent, from_dir)) return error;
  if (const int error = checked_directory(new_parent, to_dir)) return error;
  if (const int error = check_name(new_name)) return error;
  const auto found = from_dir->entries.find(name);
  if (found == from_dir->entries.end()) return ENOENT;
  node_ref source = found->second;
  const auto existing = to_dir->entries.find(new_name);
  node_ref target = existing == to_dir->entries.end() ? nullptr : existing->second;
  if (source->is_dir() && is_ancestor(*source, *to_dir)) return EINVAL;
  if (flags & RENAME_EXCHANGE) {
    if (!target) return ENOENT;
    if (target->is_dir() && is_ancestor(*target, *from_dir)) return EINVAL;
    if (source == target) return 0;
    node_ref taken_source = remove_entry(*from_dir, name);
    node_ref taken_target = remove_entry(*to_dir, new_name);
    add_entry(*to_dir, new_name, taken_source);
    add_entry(*from_dir, name, taken_target);
    return 0;
  }
  if (target) {
    if (flags & RENAME_NOREPLACE) return EEXIST;
    if (source == target) return 0;  // POSIX: two links to one file, nothing happens
    if (source->is_dir() && !target->is_dir()) return ENOTDIR;
    if (!source->is_dir() && target->is_dir()) return EISDIR;
    if (target->is_dir() && !target->entries.empty()) return ENOTEMPTY;
  }
  node_ref replaced;
  if (target) {
    replaced = remove_entry(*to_dir, new_name);
    if (replaced->is_dir()) replaced->nlink = 0;
  }
  node_ref moved = remove_entry(*from_dir, name);
  add_entry(*to_dir, new_name, moved);
  consider_collect(std::move(replaced));
  return 0;
}

// ---- lossy_tree: contents ---------------------------------------------------------------

int lossy_tree::set_attributes(node& target, const attribute_change& change) {
  if (target.dead) return ESTALE;
  const timespec stamp = now();
  if (change.size) {
    if (target.is_dir()) return EISDIR;
    if (!target.is_file()) return EINVAL;
    const std::uint64_t size = target.data.size();
    if (change.size_bytes > size && _options.bytes_max != 0 &&
        change.size_bytes - size > _options.bytes_max - std::min(_bytes_used, _options.bytes_max)) {
      return ENOSPC;
    }
    target.data.resize(change.size_bytes);
    target.attr.mtime = stamp;
    recharge(target);
  }
  if (change.mode) target.attr.mode = (target.attr.mode & S_IFMT) | (change.values.mode & 07777);
  if (change.uid) target.attr.uid = change.values.uid;
  if (change.gid) target.attr.gid = change.values.gid;
  if (change.atime) target.attr.atime = change.atime_now ? stamp : change.values.atime;
  if (change.mtime) target.attr.mtime = change.mtime_now ? stamp : change.values.mtime;
  target.attr.ctime = stamp;
  return 0;
}

long lossy_tree::read(node& target, std::uint64_t offset, std::size_t length, char* out) {
  if (target.dead) return -ESTALE;
  if (target.is_dir()) return -EISDIR;
  return static_cast<long>(target.data.read(offset, length, out));
}

long lossy_tree::write(node& target, std::uint64_t offset, const char* data, std::size_t length,
                       bool append) {
  if (target.dead) return -ESTALE;
  if (!target.is_file()) return -EINVAL;
  const std::uint64_t size = target.data.size();
  if (append) offset = size;
  if (_options.bytes_max != 0 && offset + length > size) {
    // Like a real disk near full: a short write while room is left, then ENOSPC.
    const std::uint64_t room = _options.bytes_max - std::min(_bytes_used, _options.bytes_max);
    const std::uint64_t end_max = size + room;
    if (offset >= end_max) return -ENOSPC;
    length = static_cast<std::size_t>(std::min<std::uint64_t>(length, end_max - offset));
  }
  target.data.write(offset, data, length);
  target.attr.mtime = target.attr.ctime = now();
  recharge(target);
  return static_cast<long>(length);
}

int lossy_tree::allocate(node& target, int mode, std::uint64_t offset, std::uint64_t length) {
  if (target.dead) return ESTALE;
  if (!target.is_file()) return ENODEV;
  const bool keep_size = (mode & FALLOC_FL_KEEP_SIZE) != 0;
  const int kind = mode & ~FALLOC_FL_KEEP_SIZE;
  if (kind == FALLOC_FL_PUNCH_HOLE && !keep_size) return EINVAL;  // fallocate(2)
  if (kind != 0 && kind != FALLOC_FL_PUNCH_HOLE && kind != FALLOC_FL_ZERO_RANGE) {
    return EOPNOTSUPP;
  }
  if (kind != 0) target.data.zero_range(offset, length);
  const std::uint64_t size = target.data.size();
  if (!keep_size && kind != FALLOC_FL_PUNCH_HOLE && offset + length > size) {
    const std::uint64_t growth = offset + length - size;
    if (_options.bytes_max != 0 &&
        growth > _options.bytes_max - std::min(_bytes_used, _options.bytes_max)) {
      return ENOSPC;
    }
    target.data.resize(offset + length);
    recharge(target);
  }
  target.attr.mtime = target.attr.ctime = now();
  return 0;
}

// ---- lossy_tree: durability -------------------------------------------------------------

// Makes the current meaning of one name durable: points at what the name points at now, or
// is gone if the name is gone now.
void lossy_tree::commit_name(node& dir, const std::string& name) {
  node_ref dropped;
  const auto current = dir.entries.find(name);
  const auto durable = dir.durable_entries.find(name);
  if (current != dir.entries.end()) {
    if (durable != dir.durable_entries.end()) {
      dropped = std::exchange(durable->second, current->second);
    } else {
      dir.durable_entries.emplace(name, current->second);
    }
  } else if (durable != dir.durable_entries.end()) {
    dropped = std::move(durable->second);
    dir.durable_entries.erase(durable);
  }
  dir.dirty_names.erase(name);
  consider_collect(std::move(dropped));
}

// dir_durability::file: the names changed on this node's behalf become durable, and so do
// the names of the directories holding them, up to the root (ext4 commits the whole journal;
// this is the part of it that concerns the file).
void lossy_tree::commit_own_names(node& target, unsigned depth) {
  if (depth > 4096) return;  // deeper than any path the kernel can hand us
  auto pending = std::move(target.pending_names);
  target.pending_names.clear();
  for (auto& [weak_dir, name] : pending) {
    const node_ref dir = weak_dir.lock();
    if (!dir || dir->dead) continue;
    commit_name(*dir, name);
    commit_own_names(*dir, depth + 1);
  }
}

void lossy_tree::sync_file(node& target, bool data_only) {
  ++_counters.fsyncs;
  if (target.dead) return;
  if (target.is_file()) target.durable_data = target.data;  // shares chunks, copies pointers
  if (!data_only) target.durable_attr = target.attr;
  if (_options.dirs == dir_durability::file) commit_own_names(target, 0);
}

void lossy_tree::sync_directory(node& target) {
  ++_counters.fsyncdirs;
  if (target.dead || !target.is_dir()) return;
  auto names = std::move(target.dirty_names);
  target.dirty_names.clear();
  for (const std::string& name : names) commit_name(target, name);
  target.durable_attr = target.attr;
  if (_options.dirs == dir_durability::file) commit_own_names(target, 0);
}

void lossy_tree::sync_all() {
  std::vector<node_ref> all;
  all.reserve(_nodes.size());
  for (const auto& [ino, entry] : _nodes) all.push_back(entry);
  for (const node_ref& entry : all) {
    if (entry->dead) continue;
    if (entry->is_file()) entry->durable_data = entry->data;
    if (entry->is_dir()) {
      auto names = std::move(entry->dirty_names);
      entry->dirty_names.clear();
      for (const std::string& name : names) commit_name(*entry, name);
    }
    entry->durable_attr = entry->attr;
    entry->pending_names.clear();
  }
  for (node_ref& entry : all) consider_collect(std::move(entry));
}

// ---- lossy_tree: the crash --------------------------------------------------------------

// Replaces each reachable node's current state with its durable state and counts links anew.
void lossy_tree::revert_reachable(std::vector<node_ref>& reachable) {
  for (const node_ref& entry : reachable) {
    entry->attr = entry->durable_attr;
    entry->pending_names.clear();
    if (entry->is_dir()) {
      entry->entries = entry->durable_entries;
      entry->dirty_names.clear();
      entry->nlink = 2;
    } else {
      entry->data = entry->durable_data;
      entry->nlink = 0;
    }
  }
  for (const node_ref& entry : reachable) {
    if (!entry->is_dir()) continue;
    for (const auto& [name, child] : entry->entries) {
      if (child->is_dir()) {
        ++entry->nlink;
      } else {
        ++child->nlink;
      }
    }
  }
}

void lossy_tree::crash() {
  ++_counters.crashes;
  std::vector<node_ref> all;
  all.reserve(_nodes.size());
  for (const auto& [ino, entry] : _nodes) all.push_back(entry);

  // Walk the durable tree from the root. A half-durable cross-directory rename can leave a
  // directory durably named twice (or in a cycle); like fsck, keep only the first name.
  const node_ref root = find(root_ino);
  std::unordered_set<std::uint64_t> seen{root_ino};
  std::vector<node_ref> reachable{root};
  std::vector<node_ref> dropped;
  for (std::size_t next = 0; next < reachable.size(); ++next) {
    node& dir = *reachable[next];
    if (!dir.is_dir()) continue;
    for (auto it = dir.durable_entries.begin(); it != dir.durable_entries.end();) {
      const node_ref child = it->second;
      const bool first = seen.insert(child->ino).second;
      if (!first && child->is_dir()) {
        dropped.push_back(std::move(it->second));
        it = dir.durable_entries.erase(it);
        continue;
      }
      if (first) reachable.push_back(child);
      if (child->is_dir()) child->parent = dir.weak_from_this();
      ++it;
    }
  }
  revert_reachable(reachable);
  for (const node_ref& entry : all) {
    if (seen.contains(entry->ino)) continue;
    entry->dead = true;
    entry->nlink = 0;
    entry->entries.clear();
    entry->durable_entries.clear();
    entry->dirty_names.clear();
    entry->pending_names.clear();
    entry->data = {};
    entry->durable_data = {};
  }
  reachable.clear();
  dropped.clear();
  for (node_ref& entry : all) {
    recharge(*entry);
    consider_collect(std::move(entry));
  }
}

}  // namespace ringmta::lossyfs
