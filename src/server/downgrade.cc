// 8-bit to 7-bit conversion of a spooled message on a worker thread (server/downgrade.h).
#include "ringmta/server/downgrade.h"

#include <sys/mman.h>
#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <string>

#include "ringmta/spool/dot_stuffer.h"

namespace ringmta::server {

downgrade_request::~downgrade_request() {
  for (const spool::body_slice& piece : body)
    if (piece.fd >= 0) ::close(piece.fd);
}

bool duplicate_body(std::span<const spool::body_slice> body, downgrade_request& request) noexcept {
  request.body.reserve(body.size());
  for (const spool::body_slice& piece : body) {
    const int copy = ::fcntl(piece.fd, F_DUPFD_CLOEXEC, 0);
    if (copy < 0) return false;  // the request's destructor closes the ones made so far
    request.body.push_back({copy, piece.offset, piece.length});
  }
  return true;
}

std::string_view downgrade_result::reason() const noexcept {
  switch (outcome) {
    case downgrade_outcome::converted: return "converted to quoted-printable";
    case downgrade_outcome::unchanged: return "no 8-bit octets";
    case downgrade_outcome::refused: return mime::describe(refusal);
    case downgrade_outcome::signed_message:
      return "DKIM-signed: a conversion would break the signature";
    case downgrade_outcome::too_large: return "larger than 64 MiB, too large to convert";
    case downgrade_outcome::failed: return "cannot read the message from the spool";
  }
  return "unknown";
}

namespace {

int read_all(const downgrade_request& request, std::string& out) noexcept {
  std::size_t total = 0;
  for (const spool::body_slice& piece : request.body) total += piece.length;
  try {
    out.resize(total);
  } catch (...) {
    return ENOMEM;
  }
  std::size_t filled = 0;
  for (const spool::body_slice& piece : request.body) {
    for (std::uint32_t done = 0; done < piece.length;) {
      const ssize_t got = ::pread(piece.fd, out.data() + filled, piece.length - done,
                                  static_cast<off_t>(piece.offset + done));
      if (got < 0 && errno == EINTR) continue;
      if (got <= 0) return got < 0 ? errno : EIO;  // a short spool file
      done += static_cast<std::uint32_t>(got);
      filled += static_cast<std::size_t>(got);
    }
  }
  out.resize(spool::undo_dot_stuffing(out.data(), out.size()));
  return 0;
}

// The converted message in wire form in a memfd; -1 with errno on failure.
int write_memfd(std::string_view message, std::uint64_t& bytes) noexcept {
  std::string stuffed;
  try {
    stuffed.reserve(message.size() + message.size() / 64 + 16);
    spool::dot_stuffer stuffer;
    stuffer.feed(message, [&](std::string_view piece) { stuffed.append(piece); });
  } catch (...) {
    errno = ENOMEM;
    return -1;
  }
  const int fd = ::memfd_create("ringmta-downgrade", MFD_CLOEXEC);
  if (fd < 0) return -1;
  for (std::size_t done = 0; done < stuffed.size();) {
    const ssize_t put = ::write(fd, stuffed.data() + done, stuffed.size() - done);
    if (put < 0 && errno == EINTR) continue;
    if (put <= 0) {
      const int error = put < 0 ? errno : EIO;
      ::close(fd);
      errno = error;
      return -1;
    }
    done += static_cast<std::size_t>(put);
  }
  bytes = stuffed.size();
  return fd;
}

}  // namespace

std::unique_ptr<downgrade_result> run_downgrade(const downgrade_request& request) noexcept {
  std::unique_ptr<downgrade_result> result;
  try {
    result = std::make_unique<downgrade_result>();
  } catch (...) {
    return nullptr;  // the pool's caller answers a lost result (see relay_downgrade.cc)
  }
  result->shard = request.shard;
  result->flight = request.flight;
  result->job = request.job;
  std::uint64_t total = 0;
  for (const spool::body_slice& piece : request.body) total += piece.length;
  if (total > downgrade_bytes_max) {
    result->outcome = downgrade_outcome::too_large;
    return result;
  }
  std::string raw;
  std::string converted;
  if (const int error = read_all(request, raw); error != 0) {
    result->error = error;
    return result;
  }
  mime::downgrade_result done;
  try {
    done = mime::downgrade_to_7bit(raw, converted);
  } catch (...) {
    result->error = ENOMEM;
    return result;
  }
  if (done.dkim_signed && done.status == mime::downgrade_status::converted) {
    result->outcome = downgrade_outcome::signed_message;
  } else if (done.status == mime::downgrade_status::unchanged) {
    result->outcome = downgrade_outcome::unchanged;  // sent as it is, labelled 7bit
  } else if (done.status != mime::downgrade_status::converted) {
    result->outcome = downgrade_outcome::refused;
    result->refusal = done.status;
  } else if (result->fd = write_memfd(converted, result->bytes); result->fd < 0) {
    result->error = errno;
  } else {
    result->outcome = downgrade_outcome::converted;
  }
  return result;
}

}  // namespace ringmta::server
