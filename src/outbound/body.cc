// The message body, from the spool's segment file to the socket, after the server's 354:
//   staged:  bodies up to copy_body_bytes_max are read into the connection's staging buffer and
//            sent with the ".CRLF" terminator in one send (one packet for a small message);
//   spliced: IORING_OP_SPLICE file -> pipe, then pipe -> socket, one splice in flight, up to
//            pipe_capacity bytes each; then the engine's ".CRLF" as a plain send;
//   copied:  (body_transfer::copy) read a chunk into a pooled buffer, send it, repeat; then
//            the engine's ".CRLF" as a plain send.
//   chunk:   (CHUNKING) a small body already in the page cache is read at once, unstuffed and
//            sent as "BDAT n LAST" plus chunk in the same send as MAIL and RCPT.
// The slices are in wire form already: nothing is re-stuffed (docs/design.md principle 3).
// A spool read failure or a short file ends the connection without the terminator (a partial
// message must never be completed) and reports 451 4.3.0 for the recipients.
#include <sys/uio.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include <fmt/format.h>

#include "outbound_internal.h"
#include "ringmta/core/assert.h"
#include "ringmta/spool/dot_stuffer.h"

namespace ringmta::outbound {

void connection::start_body() noexcept {
  RINGMTA_ASSERT(staged_begin == staged_end && !send_in_flight &&
                 body.phase() == body_phase::wanted);
  const auto& config = server.config();
  body.slice = 0;
  body.slice_done = 0;
  if (body.total <= config.copy_body_bytes_max &&
      body.total + 16 <= server.staging_bytes()) {
    body.how = body_progress::path::staged;
    body.staged = 0;
    body.enter(body_phase::transferring);
    ++server.counters().bodies_staged;
    return read_staged_step();
  }
  // Over TLS the bytes must pass through the session: no splice (no kTLS here), tls.cc.
  const bool encrypted = tls != tls_state::plaintext;
  const bool splice = !encrypted && config.transfer == body_transfer::splice;
  int error = 0;
  const auto slot = server.transfers().acquire(splice, error);
  if (!slot) {
    if (error != 0) return body_failed_locally(error);
    body.enter(body_phase::waiting);  // pump() starts again once a slot is free (resume_body)
    return server.wait_for_transfer(*this);
  }
  body.transfer = *slot;
  body.holds_transfer = true;
  body.enter(body_phase::transferring);
  body.in_pipe = 0;
  if (encrypted) {
    body.how = body_progress::path::encrypted;
    body.buffer_filled = body.buffer_sent = 0;
    ++server.counters().bodies_encrypted;
    return pump();
  }
  if (splice) {
    body.how = body_progress::path::spliced;
    ++server.counters().bodies_spliced;
    return splice_step();
  }
  body.how = body_progress::path::copied;
  body.buffer_filled = body.buffer_sent = 0;
  body.last_read = false;
  ++server.counters().bodies_copied;
  copy_step();
}

// Reads a small body for BDAT without blocking: read_cached fails unless the bytes are in the
// page cache (they almost always are: the message was just written). Otherwise, or on any
// error, the message goes with DATA and the ring reads it (and reports a failure) as usual.
bool connection::prefetch_chunk() noexcept {
  if (body.total == 0 || body.total > server.config().copy_body_bytes_max ||
      chunk_offset + body.total > server.staging_bytes() || staged_end != staged_begin ||
      send_in_flight) {
    return false;
  }
  char* const chunk = staging.get() + chunk_offset;
  std::uint64_t filled = 0;
  for (const spool::body_slice& piece : job.body) {
    for (std::uint64_t done = 0; done < piece.length;) {
      const auto got = server.descriptors().read_cached(
          piece.fd, chunk + filled, static_cast<std::size_t>(piece.length - done),
          piece.offset + done);
      if (!got || got.value() == 0) return false;
      done += got.value();
      filled += got.value();
    }
  }
  body.chunk_bytes = static_cast<std::uint32_t>(spool::undo_dot_stuffing(chunk, filled));
  body.how = body_progress::path::chunk_ready;
  body.chunked = true;
  ++server.counters().bodies_chunked;
  return true;
}

// Puts the engine's output (its tail ends with "BDAT n LAST"; empty if that went out already)
// right in front of the chunk. Nothing else may come between the command and the chunk.
void connection::stage_chunk() noexcept {
  const std::string_view out = session->output();
  RINGMTA_ASSERT(staged_begin == staged_end && out.size() <= chunk_offset);
  staged_begin = chunk_offset - static_cast<std::uint32_t>(out.size());
  std::memcpy(staging.get() + staged_begin, out.data(), out.size());
  staged_end = chunk_offset + body.chunk_bytes;
  session->consume_output(out.size());
  session->body_sent();
  body.how = body_progress::path::chunk_sending;
  server.counters().body_bytes += body.chunk_bytes;
}

void connection::resume_body() noexcept {
  body.enter(body_phase::wanted);
  server.defer(*this);  // pump() calls start_body() at the end of the iteration
}

bool next_bytes(const delivery& job, body_progress& body) noexcept {
  while (body.slice < job.body.size() && body.slice_done >= job.body[body.slice].length) {
    ++body.slice;
    body.slice_done = 0;
  }
  return body.slice < job.body.size();
}

// ---- staged: read everything into staging, then one send with ".CRLF"

// From the page cache at once when the bytes are there (the message was usually written a
// moment ago, as for BDAT's prefetch and the TLS path): no ring read, no completion and no loop
// iteration before the body goes out. Otherwise (EAGAIN: not cached, or an error or a short
// file, which the ring read then reports in its completion) the ring reads the slice's rest.
core::result<std::size_t> connection::read_body_bytes(char* into, std::uint32_t length) noexcept {
  const spool::body_slice& piece = job.body[body.slice];
  const std::uint64_t offset = piece.offset + body.slice_done;
  const auto got = server.descriptors().read_cached(piece.fd, into, length, offset);
  if (got && got.value() > 0) {
    body.slice_done += got.value();
    return got.value();
  }
  const auto queued = server.io().prep_read(piece.fd, into, length, offset,
                                            server.user_data(server.body_read_kind, *this));
  if (!queued) return core::fail(queued.error());
  body.step_in_flight = true;
  ++ops;
  return std::size_t{0};
}

void connection::read_staged_step() noexcept {
  while (next_bytes(job, body)) {
    const spool::body_slice& piece = job.body[body.slice];
    const auto got = read_body_bytes(staging.get() + body.staged,
                                     static_cast<std::uint32_t>(piece.length - body.slice_done));
    if (!got) return body_failed_locally(got.error());
    if (got.value() == 0) return;  // the ring reads it
    body.staged += static_cast<std::uint32_t>(got.value());
  }
  staged_begin = 0;
  staged_end = body.staged;
  body.enter(body_phase::sent);
  session->body_sent();  // the engine's ".CRLF" (RFC 5321 §4.1.1.4) follows the body's tail
  stage_output();
  server.counters().body_bytes += body.total;
  if (tls != tls_state::plaintext) return pump();  // through the TLS session (tls.cc)
  if (!send_staged()) process_events();
}

// ---- spliced: file -> pipe, then pipe -> socket

// One splice at a time, the second only once the first is known: the pipe then never waits
// for bytes that will not come. (A hard-linked pair left its second half waiting for good in
// an io-wq worker when the file ended early: in the test of a short spool file neither an
// async cancel nor a shutdown of the socket ended it.)
void connection::splice_step() noexcept {
  auto& ring = server.io();
  const transfer_pool::slot& pipe = server.transfers().at(body.transfer);
  if (body.in_pipe > 0) {  // pipe -> socket: may block on the peer (shutdown wakes it)
    const auto queued = ring.prep_splice(pipe.pipe_read, -1, fd, -1, body.in_pipe,
                                         server.user_data(server.splice_out_kind, *this));
    if (!queued) return body_failed_locally(queued.error());
  } else {
    if (!next_bytes(job, body)) return body_done();
    const spool::body_slice& piece = job.body[body.slice];
    const auto length = static_cast<std::uint32_t>(
        std::min<std::uint64_t>(piece.length - body.slice_done, pipe.pipe_capacity));
    // file -> pipe: the pipe is empty and at least `length` big, so it never waits for room.
    const auto queued = ring.prep_splice(
        piece.fd, static_cast<std::int64_t>(piece.offset + body.slice_done), pipe.pipe_write, -1,
        length, server.user_data(server.splice_in_kind, *this));
    if (!queued) return body_failed_locally(queued.error());
  }
  body.step_in_flight = true;
  ++ops;
  ++server.counters().splices;
}

void connection::on_splice_done(io::op_kind kind, std::int32_t result) noexcept {
  if (kind == server.splice_in_kind) {
    if (result <= 0) {  // the spool file ended early or could not be read
      return body_failed_locally(result < 0 ? -result : EIO);
    }
    body.slice_done += static_cast<std::uint32_t>(result);
    body.in_pipe = static_cast<std::uint32_t>(result);
    return splice_step();
  }
  if (result <= 0) {  // the socket failed: the connection is lost
    abort_body();
    session->on_peer_closed();
    process_events();
    return pump();
  }
  const auto sent = std::min<std::uint32_t>(static_cast<std::uint32_t>(result), body.in_pipe);
  body.in_pipe -= sent;
  server.counters().body_bytes += sent;
  restart_timer();  // RFC 5321 §4.5.3.2.5: per block moved
  splice_step();
}

// ---- copied: read a chunk, send it

void connection::copy_step() noexcept {
  auto& ring = server.io();
  transfer_pool::slot& buffer = server.transfers().at(body.transfer);
  if (body.buffer_sent < body.buffer_filled) {
    const auto queued = ring.prep_send(fd, buffer.buffer.get() + body.buffer_sent,
                                       body.buffer_filled - body.buffer_sent,
                                       server.user_data(server.body_send_kind, *this));
    if (!queued) return body_failed_locally(queued.error());
    body.step_in_flight = true;
    ++ops;
    return;
  }
  body.buffer_filled = body.buffer_sent = 0;
  if (!next_bytes(job, body)) return body_done();
  const spool::body_slice& piece = job.body[body.slice];
  const auto length = static_cast<std::uint32_t>(
      std::min<std::uint64_t>(piece.length - body.slice_done, server.transfers().buffer_bytes()));
  const auto queued = ring.prep_read(piece.fd, buffer.buffer.get(), length,
                                     piece.offset + body.slice_done,
                                     server.user_data(server.body_read_kind, *this));
  if (!queued) return body_failed_locally(queued.error());
  body.step_in_flight = true;
  ++ops;
}

// ---- completions

void connection::on_body_completion(io::op_kind kind, const io::completion& done) noexcept {
  body.step_in_flight = false;
  if (body.phase() == body_phase::aborting) {  // the pipe/buffer is free of the kernel now
    release_transfer(false);
    body.enter(body_phase::none);
    return pump();  // whatever waited for the step (closing, the next output)
  }
  if (_phase == connection_phase::closing) return abort_body();
  if (body.how == body_progress::path::spliced) return on_splice_done(kind, done.res);
  if (body.how == body_progress::path::encrypted) {  // a ring read for TLS (tls.cc)
    if (done.res <= 0) return body_failed_locally(done.res < 0 ? -done.res : EIO);
    body.slice_done += static_cast<std::uint32_t>(done.res);
    body.buffer_filled = static_cast<std::uint32_t>(done.res);
    body.buffer_sent = 0;
    restart_timer();
    return pump();
  }
  if (done.res <= 0) {
    if (kind == server.body_send_kind) {  // the socket failed
      abort_body();
      session->on_peer_closed();
      process_events();
      return pump();
    }
    return body_failed_locally(done.res < 0 ? -done.res : EIO);
  }
  const auto bytes = static_cast<std::uint32_t>(done.res);
  restart_timer();  // RFC 5321 §4.5.3.2.5: per block moved
  if (body.how == body_progress::path::staged) {
    body.slice_done += bytes;
    body.staged += bytes;
    return read_staged_step();
  }
  if (kind == server.body_send_kind) {
    body.buffer_sent += bytes;
    server.counters().body_bytes += bytes;
  } else {  // a chunk was read (short reads just make a smaller chunk)
    body.slice_done += bytes;
    body.buffer_filled = bytes;
  }
  copy_step();
}

// Every byte is in the socket: give the pipe/buffer back, let the engine add ".CRLF".
void connection::body_done() noexcept {
  release_transfer(body.in_pipe == 0);
  body.how = body_progress::path::none;
  body.enter(body_phase::sent);
  session->body_sent();  // pump() sends the ".CRLF" now
  restart_timer();
  pump();
}

void connection::release_transfer(bool clean) noexcept {
  if (!body.holds_transfer) return;
  body.holds_transfer = false;
  server.transfers().release(body.transfer, clean);  // unclean: a pipe may hold stale bytes
  server.transfer_released();
}

// A queued wait (phase waiting) is skipped when its turn comes (transfer_released).
void connection::abort_body() noexcept {
  body.how = body_progress::path::none;
  if (body.step_in_flight) {  // the kernel may still use the pipe/buffer: release on completion
    if (body.phase() != body_phase::aborting) body.enter(body_phase::aborting);
    if (_phase != connection_phase::closing && fd >= 0) {
      server.descriptors().shutdown(fd, SHUT_RDWR);  // unblock a waiting splice
    }
    return;
  }
  release_transfer(false);
  if (body.phase() != body_phase::none) body.enter(body_phase::none);
}

void connection::body_failed_locally(int error) noexcept {
  body_failed = true;
  local_reply.assign_local(
      451, smtp::reply_enhanced_code{4, 3, 0},
      fmt::format("cannot read the message from the spool: {}", std::strerror(error)));
  abort_body();
  // No ".CRLF" may follow a partial body: drop the connection (the server discards the
  // transaction, RFC 5321 §4.1.1.4); the engine fails the recipients transiently.
  session->on_peer_closed();
  process_events();
  pump();
}

}  // namespace ringmta::outbound
