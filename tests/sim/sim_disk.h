// sim::disk: a simulated disk that performs spool::store operations in simulated time.
//
// One directory (a shard's) of files, each an inode with a DURABLE image (what survives a
// power loss) and the writes completed since its last sync (which, with the durable image,
// make its volatile image). A write changes the volatile image; datasync makes durable the
// writes that completed before it was issued; a directory fsync makes the current names
// durable. create_file and remove_file run as their real steps (sync_driver.cc): create
// (O_EXCL), fallocate, header write, fdatasync, directory fsync — and close, unlink, directory
// fsync — each with its own latency and chance of failure, so a crash can fall between them.
// Operations complete in any order unless linked (operation.h: IOSQE_IO_LINK semantics; a
// failed link cancels the rest of its chain with -ECANCELED).
//
// Faults (seeded): EIO/ENOSPC on writes, EIO on syncs and creation steps. crash() forgets every
// operation in flight and every write not synced — or, torn, keeps a random prefix of each
// file's unsynced writes cut at a 512-byte sector boundary. The real spool recovery reads the
// durable image through image() (a spool::recovery_io served from memory); materialize()
// writes the same image into a real directory (tests compare the two).
//
// Injected bugs (tools/sim --inject-bug): no_fsync completes datasync without making anything
// durable (the daemon's --unsafe-no-fsync); dir_fsync skips the directory fsync of create_file
// (a new file's name not made durable in its parent).
//
// fds: the store owns fds (it closes them), so each simulated file the disk opens is backed
// by a real fd on /dev/null, and so is each file recovery opens through image(); the files
// recovery hands on stay the disk's (no adopt() needed for them).
// Never: reads a clock, completes an operation before its simulated time, or makes durable
// anything a real disk would not have made durable (without an injected bug).
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "ringmta/core/result.h"
#include "ringmta/spool/operation.h"
#include "ringmta/spool/recovery_io.h"
#include "sim_random.h"
#include "sim_scheduler.h"

namespace ringmta::sim {

enum class disk_bug : std::uint8_t { none, no_fsync, dir_fsync };

struct disk_profile {
  std::int64_t write_ns_min = 20'000, write_ns_max = 2'000'000;
  std::int64_t sync_ns_min = 200'000, sync_ns_max = 10'000'000;
  std::int64_t step_ns_min = 50'000, step_ns_max = 5'000'000;  // create/remove steps
  double write_error = 0;  // probability a write fails (EIO or ENOSPC)
  double sync_error = 0;   // probability a datasync fails (EIO)
  double step_error = 0;   // probability one step of create_file/remove_file fails
};

struct disk_stats {
  std::uint64_t operations = 0;
  std::uint64_t bytes_written = 0;
  std::uint64_t syncs = 0;
  std::uint64_t faults = 0;
  std::uint64_t files_created = 0;
  std::uint64_t files_removed = 0;
  std::uint64_t torn_bytes_kept = 0;  // unsynced bytes that survived torn crashes
};

class disk {
 public:
  // (token, result) as store::complete takes them; a line for the event log.
  using completion_fn = std::function<void(std::uint64_t, std::int64_t)>;
  using note_fn = std::function<void(std::string_view)>;

  disk(scheduler& clock, random& random, disk_profile profile, disk_bug bug,
       completion_fn on_complete, note_fn note);
  ~disk();
  disk(const disk&) = delete;
  disk& operator=(const disk&) = delete;

  // In the order the store handed them out (links refer to that order).
  void submit(const spool::operation& op);
  void set_faults(bool enabled) noexcept { _faults = enabled; }
  std::size_t in_flight() const noexcept { return _ops.size(); }

  // Power loss: call after the store is destroyed (it closes the fds it owns).
  void crash(bool torn);
  // Makes `directory` hold the durable image, for the real recovery to read. The first call
  // into a directory needs it existing and empty; later calls into the same one write only the
  // files whose durable image changed since the last call (as new inodes: a descriptor recovery
  // kept open still reads what it read) and unlink the names no longer durable. Issue 16: a
  // restart every ~2 simulated seconds wrote every file of the spool again.
  core::result<void> materialize(const std::string& directory);
  // Recovery (over a materialized directory) opened `name` as `fd` and gave the fd to the store.
  void adopt(int fd, std::string_view name);
  // The durable image as spool::recover() reads it after a power loss: the names, sizes and
  // bytes materialize() would write (torn tails included), from memory, with the unwritten
  // tail past the last written page a hole as tmpfs reports it (SEEK_DATA / SEEK_HOLE at page
  // granularity), so recovery makes the calls it made over /dev/shm. Paths are taken by their
  // basename (any directory). A file it opens is the disk's at once, the store's when handed
  // on. Issue 16: a restart wrote and read back ~1.3 MB through ~130 syscalls.
  spool::recovery_io& image() noexcept { return _image_io; }
  // Whether bytes [offset, offset + length) of the file behind `fd` would survive a power loss
  // now; otherwise `why` says what is missing.
  bool durable(int fd, std::uint64_t offset, std::uint64_t length, std::string& why) const;
  std::string name_of(int fd) const;
  // What a read of the file behind `fd` returns now (the page cache: every completed write,
  // synced or not): up to `length` bytes at `offset` into `into`, the count, or -EBADF.
  std::int64_t read(int fd, std::uint64_t offset, void* into, std::uint32_t length) const;
  // The same bytes in place when they are all stored durable bytes that no completed write
  // overlaps (after a restart: every recovered body); empty otherwise (read() them).
  std::string_view durable_view(int fd, std::uint64_t offset, std::uint32_t length) const;
  const disk_stats& stats() const noexcept { return _stats; }

 private:
  struct pending_write {
    std::uint64_t offset;
    std::string bytes;
    std::uint64_t serial;  // completion order
  };
  struct inode {
    std::string name;
    std::string durable;  // durable bytes (zeros beyond, up to durable_size)
    std::uint64_t durable_size = 0;
    std::uint64_t size = 0;
    std::uint64_t version = 0;  // bumped when the durable image changes (materialize)
    std::vector<pending_write> pending;
  };
  struct image_file {  // what materialize last wrote under a name
    std::uint64_t inode = 0;
    std::uint64_t version = 0;
  };
  struct open_file {
    std::uint64_t inode = 0;
    bool store_owned = false;
  };
  struct flight;
  class image_io final : public spool::recovery_io {
   public:
    explicit image_io(disk& owner) noexcept : _disk(owner) {}
    core::result<void> list(const std::string& directory,
                            const std::function<void(std::string_view)>& each) override;
    core::result<std::uint64_t> size_of(const std::string& path) override;
    core::result<int> open_read(const std::string& path) override;
    void will_need(int) override {}
    std::int64_t seek_data(int fd, std::uint64_t offset) override;
    std::int64_t seek_hole(int fd, std::uint64_t offset) override;
    std::int64_t read_at(int fd, void* into, std::size_t bytes, std::uint64_t offset) override;
    std::string_view in_memory(int fd) override;
    void close(int fd) override { _disk.close_fd(fd); }

   private:
    const inode* durable_inode(const std::string& path) const;
    disk& _disk;
  };
  // Where the written pages of a durable image end: a real filesystem reports holes per page.
  static std::uint64_t data_end_of(const inode& file) noexcept;

  void start(std::uint64_t serial);
  void schedule_step(std::uint64_t serial, std::int64_t low_ns, std::int64_t high_ns);
  void step(std::uint64_t serial);
  std::int64_t do_write(flight& op);
  std::int64_t do_sync(flight& op);
  bool create_step(flight& op, std::int64_t& result);
  bool remove_step(flight& op, std::int64_t& result);
  void finish(std::uint64_t serial, std::int64_t result);
  void sync_inode(inode& file, std::uint64_t up_to_serial, std::uint64_t size);
  void sync_directory() noexcept;
  void close_fd(int fd);
  void close_abandoned_removals();
  void collect() noexcept;
  void keep_torn_prefix(inode& file);
  static void apply(inode& file, std::uint64_t offset, std::string_view bytes);
  core::result<void> write_image(const std::string& path, const inode& file) const;
  bool fault(double probability) noexcept;
  inode* inode_of(int fd) noexcept;

  scheduler& _clock;
  random& _random;
  disk_profile _profile;
  disk_bug _bug;
  completion_fn _on_complete;
  note_fn _note;
  bool _faults = true;
  std::map<std::string, std::uint64_t> _volatile_names;
  std::map<std::string, std::uint64_t> _durable_names;
  std::map<std::uint64_t, inode> _inodes;
  std::map<int, open_file> _fds;
  std::map<std::uint64_t, flight> _ops;  // by submission serial
  std::uint64_t _next_serial = 1;
  std::uint64_t _next_inode = 1;
  std::uint64_t _write_serial = 0;       // writes completed so far
  std::uint64_t _chain_prev = 0;         // serial of a link_next op the next one waits for
  int _chain_prev_outcome = 0;           // 0: in flight, 1: succeeded, -1: failed
  disk_stats _stats;
  std::string _image_directory;               // where materialize wrote last
  std::map<std::string, image_file> _image;  // and what it holds there
  image_io _image_io{*this};
};

}  // namespace ringmta::sim
