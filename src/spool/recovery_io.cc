// The kernel's recovery_io: the calls recover() made directly before it took the interface.
#include "ringmta/spool/recovery_io.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>

namespace ringmta::spool {

namespace {

class posix_io final : public recovery_io {
 public:
  core::result<void> list(const std::string& directory,
                          const std::function<void(std::string_view)>& each) override {
    DIR* listed = ::opendir(directory.c_str());
    if (listed == nullptr) return core::fail(errno);
    while (const dirent* item = ::readdir(listed)) each(item->d_name);
    ::closedir(listed);
    return {};
  }

  core::result<std::uint64_t> size_of(const std::string& path) override {
    struct stat info {};
    if (::stat(path.c_str(), &info) != 0) return core::fail(errno);
    return static_cast<std::uint64_t>(info.st_size);
  }

  core::result<int> open_read(const std::string& path) override {
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return core::fail(errno);
    return fd;
  }

  void will_need(int fd) override { (void)::posix_fadvise(fd, 0, 0, POSIX_FADV_WILLNEED); }

  std::int64_t seek_data(int fd, std::uint64_t offset) override {
    return seek(fd, offset, SEEK_DATA);
  }

  std::int64_t seek_hole(int fd, std::uint64_t offset) override {
    return seek(fd, offset, SEEK_HOLE);
  }

  std::int64_t read_at(int fd, void* into, std::size_t bytes, std::uint64_t offset) override {
    const ssize_t got = ::pread(fd, into, bytes, static_cast<off_t>(offset));
    return got < 0 ? -errno : got;
  }

  std::string_view in_memory(int) override { return {}; }

  void close(int fd) override { ::close(fd); }

 private:
  static std::int64_t seek(int fd, std::uint64_t offset, int whence) {
    const off_t found = ::lseek(fd, static_cast<off_t>(offset), whence);
    return found < 0 ? -errno : found;
  }
};

}  // namespace

recovery_io& posix_recovery_io() noexcept {
  static posix_io io;
  return io;
}

}  // namespace ringmta::spool
