// lossy_tree: the in-memory filesystem behind lossyfs, with a "current" and a "durable" state.
//
// Reads see the current state. A file's durable state (contents, size, and with fsync its
// attributes) is copied from the current one by fsync/fdatasync. A directory's durable entries
// are copied from its current entries by fsyncdir (strict POSIX); with dir_durability::file an
// fsync of a file also makes the names that point to it (and its new ancestors) durable, as
// ext4's journal does. crash() throws away everything not durable: the tree becomes what is
// reachable from the root through durable entries, and every open handle goes stale.
//
// Invariants: inode numbers are never reused, so a kernel cache can never confuse two files;
// bytes past a file's size inside its last chunk are zero; bytes_used() is the sum of the
// current sizes of files that have a name or are open.
// Not thread-safe: the FUSE glue (lossyfs.cc) holds one mutex around every call. Knows
// nothing of FUSE and never does I/O. Errors are positive errno values, 0 is success.
#pragma once

#include <sys/stat.h>
#include <sys/types.h>

#include <array>
#include <cstdint>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace ringmta::lossyfs {

// Whether fsync of a file also makes its directory entries durable.
enum class dir_durability { strict, file };

inline constexpr std::uint64_t root_ino = 1;          // FUSE_ROOT_ID
inline constexpr std::uint64_t first_free_ino = 3;    // 2 is kept for the control file
inline constexpr std::size_t name_bytes_max = 255;

// File contents in fixed chunks shared copy-on-write between the current and durable states,
// so fsync costs one pointer copy per chunk, not a copy of the data. A null chunk reads as zeros.
class file_contents {
 public:
  static constexpr std::size_t chunk_bytes = 16 * 1024;

  std::uint64_t size() const noexcept { return _size; }
  // Copies up to length bytes at offset into out; returns the count (0 at or past the end).
  std::size_t read(std::uint64_t offset, std::size_t length, char* out) const;
  void write(std::uint64_t offset, const char* data, std::size_t length);
  void resize(std::uint64_t size);
  void zero_range(std::uint64_t offset, std::uint64_t length);

 private:
  using chunk = std::array<char, chunk_bytes>;
  chunk& writable_chunk(std::size_t index);

  std::vector<std::shared_ptr<chunk>> _chunks;
  std::uint64_t _size = 0;
};

struct attributes {
  mode_t mode = 0;
  uid_t uid = 0;
  gid_t gid = 0;
  timespec atime{};
  timespec mtime{};
  timespec ctime{};
};

struct node;
using node_ref = std::shared_ptr<node>;

struct node : std::enable_shared_from_this<node> {
  std::uint64_t ino = 0;
  attributes attr;           // current
  attributes durable_attr;   // as of the last fsync (files) or fsyncdir (directories)
  std::uint32_t nlink = 0;   // current names (+ "." and subdirectories' ".." for directories)
  // Regular files.
  file_contents data;
  file_contents durable_data;
  // Directories. Sorted maps give readdir and crash recovery a stable order.
  std::map<std::string, node_ref, std::less<>> entries;
  std::map<std::string, node_ref, std::less<>> durable_entries;
  std::set<std::string, std::less<>> dirty_names;  // changed since the last fsyncdir
  std::weak_ptr<node> parent;                      // directories: the current parent
  // Directory entries changed on this node's behalf, for dir_durability::file.
  std::vector<std::pair<std::weak_ptr<node>, std::string>> pending_names;
  // Lifetime: kept while a name (current or durable), a kernel lookup or an open handle holds it.
  std::uint64_t lookup_count = 0;
  std::uint32_t open_count = 0;
  std::uint64_t charged_bytes = 0;  // this file's share of bytes_used()
  bool dead = false;                // lost in a crash; only the kernel's references remain

  bool is_dir() const noexcept { return S_ISDIR(attr.mode); }
  bool is_file() const noexcept { return S_ISREG(attr.mode); }
};

struct tree_options {
  dir_durability dirs = dir_durability::strict;
  std::uint64_t bytes_max = 0;  // 0: no limit
};

struct tree_counters {
  std::uint64_t crashes = 0;
  std::uint64_t fsyncs = 0;
  std::uint64_t fsyncdirs = 0;
};

struct identity {
  uid_t uid = 0;
  gid_t gid = 0;
};

// Which attributes set_attributes changes (a subset of FUSE_SET_ATTR_*, kept FUSE-free).
struct attribute_change {
  bool mode = false, uid = false, gid = false, size = false;
  bool atime = false, mtime = false, atime_now = false, mtime_now = false;
  attributes values;
  std::uint64_t size_bytes = 0;
};

class lossy_tree {
 public:
  explicit lossy_tree(tree_options options);
  lossy_tree(const lossy_tree&) = delete;
  lossy_tree& operator=(const lossy_tree&) = delete;
  ~lossy_tree();

  // Every handle remembers the epoch it was opened in; a crash starts a new epoch.
  std::uint64_t epoch() const noexcept { return _counters.crashes; }
  const tree_counters& counters() const noexcept { return _counters; }
  std::uint64_t bytes_used() const noexcept { return _bytes_used; }
  std::uint64_t bytes_max() const noexcept { return _options.bytes_max; }
  const tree_options& options() const noexcept { return _options; }
  std::size_t node_count() const noexcept { return _nodes.size(); }

  // Null when the inode is unknown (already forgotten).
  node_ref find(std::uint64_t ino) const;
  int lookup(std::uint64_t parent, std::string_view name, node_ref& out);
  int make_file(std::uint64_t parent, std::string_view name, mode_t mode, identity who,
                node_ref& out);
  int make_directory(std::uint64_t parent, std::string_view name, mode_t mode, identity who,
                     node_ref& out);
  int link(std::uint64_t ino, std::uint64_t parent, std::string_view name, node_ref& out);
  int unlink(std::uint64_t parent, std::string_view name);
  int remove_directory(std::uint64_t parent, std::string_view name);
  // flags: RENAME_NOREPLACE, RENAME_EXCHANGE (linux/fs.h values).
  int rename(std::uint64_t parent, std::string_view name, std::uint64_t new_parent,
             std::string_view new_name, unsigned flags);

  int set_attributes(node& target, const attribute_change& change);
  // Returns bytes read (>= 0) or -errno.
  long read(node& target, std::uint64_t offset, std::size_t length, char* out);
  // Returns bytes written (> 0; short when the size limit is near) or -errno (ENOSPC).
  long write(node& target, std::uint64_t offset, const char* data, std::size_t length,
             bool append);
  int allocate(node& target, int mode, std::uint64_t offset, std::uint64_t length);
  void sync_file(node& target, bool data_only);
  void sync_directory(node& target);
  // Makes everything durable, as sync(2) would on a real disk.
  void sync_all();
  // The power failure: everything not durable is lost.
  void crash();

  // Kernel reference counting (FUSE lookup/forget) and open handles.
  void add_lookup(node& target) noexcept { ++target.lookup_count; }
  void forget(std::uint64_t ino, std::uint64_t count);
  void opened(node& target) noexcept { ++target.open_count; recharge(target); }
  // Takes the handle's reference so that an unlinked file can be freed on its last close.
  void released(node_ref target);

 private:
  node_ref new_node(mode_t mode, identity who);
  int checked_directory(std::uint64_t ino, node_ref& out) const;
  void add_entry(node& dir, std::string_view name, const node_ref& child);
  node_ref remove_entry(node& dir, std::string_view name);
  void mark_dirty(node& dir, std::string_view name, node& child);
  void commit_name(node& dir, const std::string& name);
  void commit_own_names(node& target, unsigned depth);
  bool is_ancestor(const node& maybe_ancestor, const node& dir) const;
  void recharge(node& target) noexcept;
  void consider_collect(node_ref candidate);
  void revert_reachable(std::vector<node_ref>& reachable);

  tree_options _options;
  tree_counters _counters;
  std::uint64_t _next_ino = first_free_ino;
  std::uint64_t _bytes_used = 0;
  std::unordered_map<std::uint64_t, node_ref> _nodes;
};

}  // namespace ringmta::lossyfs
