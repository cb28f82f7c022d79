#include "ringmta/spool/sync_driver.h"

#include <fcntl.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>

#include "ringmta/core/assert.h"

namespace ringmta::spool {

namespace {

std::int64_t sync_directory(const char* directory) noexcept {
  const int fd = ::open(directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return -errno;
  const int rc = ::fsync(fd);
  const int error = errno;
  ::close(fd);
  return rc == 0 ? 0 : -error;
}

}  // namespace

std::int64_t perform_write(const operation& op) noexcept {
  std::uint64_t done = 0;
  std::uint32_t index = 0;
  std::uint64_t skip = 0;  // bytes of iovecs[index] already written
  while (index < op.iovec_count) {
    iovec local[64];
    std::uint32_t count = 0;
    for (std::uint32_t i = index; i < op.iovec_count && count < 64; ++i, ++count) {
      local[count] = op.iovecs[i];
      if (i == index) {
        local[count].iov_base = static_cast<char*>(local[count].iov_base) + skip;
        local[count].iov_len -= skip;
      }
    }
    const ssize_t wrote = ::pwritev(op.fd, local, static_cast<int>(count),
                                    static_cast<off_t>(op.offset + done));
    if (wrote < 0) {
      if (errno == EINTR) continue;
      return -errno;
    }
    if (wrote == 0 && op.bytes > done) return -EIO;
    done += static_cast<std::uint64_t>(wrote);
    std::uint64_t left = static_cast<std::uint64_t>(wrote);
    while (index < op.iovec_count && left >= op.iovecs[index].iov_len - skip) {
      left -= op.iovecs[index].iov_len - skip;
      skip = 0;
      ++index;
    }
    skip += left;
  }
  return static_cast<std::int64_t>(done);
}

std::int64_t perform_datasync(const operation& op) noexcept {
  return ::fdatasync(op.fd) == 0 ? 0 : -errno;
}

std::int64_t perform_create_file(const operation& op) noexcept {
  const int fd = ::open(op.path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0640);
  if (fd < 0) return -errno;
  auto give_up = [&](int error) -> std::int64_t {
    ::close(fd);
    ::unlink(op.path);
    return -error;
  };
  // Preallocating moves ENOSPC here, away from the writes of acknowledged batches, and keeps
  // the file size (metadata) unchanged by appends so fdatasync stays a data-only flush.
  if (op.bytes > 0 && ::fallocate(fd, 0, 0, static_cast<off_t>(op.bytes)) != 0 &&
      errno != EOPNOTSUPP) {
    return give_up(errno);
  }
  std::uint32_t done = 0;
  while (done < op.header_bytes) {
    const ssize_t wrote = ::pwrite(fd, static_cast<const char*>(op.header) + done,
                                   op.header_bytes - done, done);
    if (wrote < 0 && errno == EINTR) continue;
    if (wrote <= 0) return give_up(wrote < 0 ? errno : EIO);
    done += static_cast<std::uint32_t>(wrote);
  }
  if (::fdatasync(fd) != 0) return give_up(errno);
  const std::int64_t synced = sync_directory(op.directory);
  if (synced < 0) return give_up(static_cast<int>(-synced));
  return fd;
}

std::int64_t perform_remove_file(const operation& op) noexcept {
  if (op.fd >= 0) ::close(op.fd);
  if (::unlink(op.path) != 0 && errno != ENOENT) return -errno;
  return sync_directory(op.directory);
}

std::int64_t perform(const operation& op) noexcept {
  switch (op.kind) {
    case operation_kind::write: return perform_write(op);
    case operation_kind::datasync: return perform_datasync(op);
    case operation_kind::create_file: return perform_create_file(op);
    case operation_kind::remove_file: return perform_remove_file(op);
  }
  return -EINVAL;
}

std::size_t run_operations(store& target) noexcept {
  std::size_t count = 0;
  operation op;
  bool cancel_next = false;  // a linked predecessor failed: io_uring would cancel this one
  while (target.next_operation(op)) {
    const std::int64_t result = cancel_next ? -ECANCELED : perform(op);
    const bool short_write =
        op.kind == operation_kind::write && static_cast<std::uint64_t>(result) != op.bytes;
    const bool failed = result < 0 || short_write;
    cancel_next = op.link_next && failed;
    target.complete(op.token, result);
    ++count;
  }
  return count;
}

std::uint64_t random_seed() noexcept {
  std::uint64_t value = 0;
  if (::getrandom(&value, sizeof value, 0) != sizeof value) {
    value = static_cast<std::uint64_t>(::getpid()) * 0x9e3779b97f4a7c15ull;  // never in practice
  }
  return value;
}

sync_spool::sync_spool(std::unique_ptr<store> target, recovery_report report)
    : _store(std::move(target)), _report(std::move(report)) {}

core::result<std::unique_ptr<sync_spool>> sync_spool::open(store_config config) {
  if (::mkdir(config.directory.c_str(), 0750) != 0 && errno != EEXIST) return core::fail(errno);
  auto recovered = recover(config.directory, config.shard);
  if (!recovered) return core::fail(recovered.error());
  if (config.random_seed == 0) config.random_seed = random_seed();
  recovery_report report = recovered.value().report;
  auto target = std::make_unique<store>(std::move(config), std::move(recovered.value()));
  std::unique_ptr<sync_spool> spool(new sync_spool(std::move(target), std::move(report)));
  spool->run();
  return spool;
}

void sync_spool::run() noexcept {
  run_operations(*_store);
  event item;
  while (_store->next_event(item)) _events.push_back(item);
}

core::result<message_handle> sync_spool::begin(std::int64_t now_seconds) noexcept {
  return _store->begin(now_seconds);
}

core::result<void> sync_spool::append(message_handle handle, std::string_view wire) noexcept {
  for (int stalls = 0; !wire.empty();) {
    auto taken = _store->append(handle, wire);
    if (!taken) return core::fail(taken.error());
    wire.remove_prefix(taken.value());
    if (taken.value() == 0) {
      if (++stalls > 3) return core::fail(EAGAIN);  // nothing moves even after running
      _store->flush();
    }
    run();
  }
  return {};
}

core::result<void> sync_spool::append_raw(message_handle handle, std::string_view raw) noexcept {
  for (int stalls = 0; !raw.empty();) {
    auto taken = _store->append_raw(handle, raw);
    if (!taken) return core::fail(taken.error());
    raw.remove_prefix(taken.value());
    if (taken.value() == 0) {
      if (++stalls > 3) return core::fail(EAGAIN);
      _store->flush();
    }
    run();
  }
  return {};
}

core::result<std::uint64_t> sync_spool::commit(message_handle handle, const envelope& value,
                                               std::vector<body_slice>* body,
                                               std::string_view header_prefix) noexcept {
  for (int attempt = 0;; ++attempt) {
    auto ticket = _store->commit(handle, value, body, header_prefix);
    if (ticket || ticket.error() != EAGAIN || attempt == 3) {
      run();
      return ticket;
    }
    _store->flush();
    run();
  }
}

core::result<std::uint64_t> sync_spool::mark(message_id id, std::uint16_t recipient,
                                             recipient_status status) noexcept {
  return _store->mark(id, recipient, status);
}

void sync_spool::flush() noexcept {
  // A flush can leave work behind (a batch that filled while another was in flight, a journal
  // waiting for its file): repeat while operations keep coming, boundedly.
  for (int round = 0; round < 8; ++round) {
    _store->flush();
    if (run_operations(*_store) == 0) break;
  }
  run();
}

std::vector<event> sync_spool::take_events() {
  std::vector<event> out;
  out.swap(_events);
  return out;
}

}  // namespace ringmta::spool
