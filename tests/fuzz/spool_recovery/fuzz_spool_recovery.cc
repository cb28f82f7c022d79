// Fuzz target: spool recovery on hostile files. The input becomes a segment file (and, when
// asked, a journal file) in a scratch shard directory, then spool::recover() rebuilds the
// queue. Half the runs first "repair" every record checksum in the input, so mutations reach
// the commit, envelope, range and journal decoders instead of stopping at the checksum.
// Invariants: no crash, no unbounded allocation (libFuzzer's RSS limit), every recovered
// message lies inside the files that were written, and recovery never writes to the files.
// Operator action records (hold, release, delete, bounce; corpus journal_actions*): flags
// are only the known bits, a deleted message is final with every recipient final, a held
// one is never deleted too, and a queued message has a recipient still open.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <string>

#include "../../../src/spool/format.h"
#include "ringmta/core/assert.h"
#include "ringmta/spool/recovery.h"

namespace {

namespace format = ringmta::spool::format;

const std::string& scratch() {
  static const std::string directory = [] {
    char pattern[] = "/tmp/fuzz-spool-XXXXXX";
    const char* made = ::mkdtemp(pattern);
    RINGMTA_ASSERT(made != nullptr);
    return std::string(made);
  }();
  return directory;
}

// Recomputes the checksum of every record whose header and payload fit in `bytes`.
void repair_checksums(std::string& bytes) {
  if (bytes.size() < format::first_record_offset) return;
  format::record_header header;
  if (!format::decode_header(bytes.data(), header)) return;
  const std::string file_header(bytes.data() + format::header_bytes, format::file_header_bytes);
  format::encode_record(bytes.data(), header.type, header.id, file_header, 0);
  const std::uint64_t salt = format::decode_file_header(file_header.data()).salt;
  std::size_t offset = format::first_record_offset;
  while (offset + format::header_bytes <= bytes.size()) {
    if (!format::decode_header(bytes.data() + offset, header)) return;
    const std::size_t end = offset + format::header_bytes + header.payload_bytes;
    if (end > bytes.size()) return;
    const std::string payload(bytes.data() + offset + format::header_bytes, header.payload_bytes);
    format::encode_record(bytes.data() + offset, header.type, header.id, payload,
                          format::seed(salt, offset));
    offset = end;  // records follow back to back
  }
}

void write_file(const std::string& path, const std::string& bytes) {
  const int fd = ::open(path.c_str(), O_CREAT | O_TRUNC | O_WRONLY | O_CLOEXEC, 0600);
  RINGMTA_ASSERT(fd >= 0);
  RINGMTA_ASSERT(::write(fd, bytes.data(), bytes.size()) == static_cast<ssize_t>(bytes.size()));
  ::close(fd);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 1) return 0;
  const std::uint8_t mode = data[0];
  std::string segment(reinterpret_cast<const char*>(data) + 1, size - 1);
  std::string journal;
  if (mode & 2) {  // the second half is a journal file
    journal = segment.substr(segment.size() / 2);
    segment.resize(segment.size() / 2);
  }
  if (mode & 1) {
    repair_checksums(segment);
    repair_checksums(journal);
  }
  const std::string& directory = scratch();
  ::unlink((directory + "/" + ringmta::spool::journal_file_name(2)).c_str());
  write_file(directory + "/" + ringmta::spool::segment_file_name(1), segment);
  if (mode & 2) write_file(directory + "/" + ringmta::spool::journal_file_name(2), journal);

  auto recovered = ringmta::spool::recover(directory, 0);
  RINGMTA_ASSERT(recovered.ok());
  namespace spool = ringmta::spool;
  for (const auto& message : recovered.value().messages) {
    RINGMTA_ASSERT(message.commit_segment == 1);
    RINGMTA_ASSERT(message.commit_offset + message.commit_bytes <= segment.size());
    RINGMTA_ASSERT((message.flags & ~(spool::message_flag_held | spool::message_flag_deleted |
                                      spool::message_flag_bounce)) == 0);
    bool open = false;
    for (const auto& recipient : message.recipients) {
      RINGMTA_ASSERT(static_cast<std::uint8_t>(recipient.state) <= spool::recipient_state_max);
      open |= !spool::is_final(recipient.state);
    }
    RINGMTA_ASSERT(open == (message.status == spool::message_status::queued));
    if (message.flags & spool::message_flag_deleted) {
      RINGMTA_ASSERT(message.status == spool::message_status::final);
      RINGMTA_ASSERT((message.flags & spool::message_flag_held) == 0);
    }
  }
  struct stat after {};
  RINGMTA_ASSERT(::stat((directory + "/" + ringmta::spool::segment_file_name(1)).c_str(),
                        &after) == 0);
  RINGMTA_ASSERT(static_cast<std::size_t>(after.st_size) == segment.size());  // read-only
  return 0;
}
