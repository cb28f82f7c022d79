// An echo server on one ring: multishot accept, multishot recv from a provided buffer ring,
// send straight from the received buffer (held until the send completes), with several real
// clients on loopback. The group is kept small so receives run out of buffers (-ENOBUFS) and
// must be re-armed: the flow the daemon's connection layer will follow.
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <deque>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include "ringmta/io/buffer_ring.h"
#include "ringmta/io/ring.h"
#include "ringmta/io/slot_table.h"
#include "support.h"

namespace ringmta::io {
namespace {

constexpr op_kind kind_accept = 16, kind_recv = 17, kind_send = 18, kind_close = 19;
constexpr std::uint16_t group = 1;

struct connection {
  int fd = -1;
  bool receiving = false;  // a multishot recv is armed
  bool ended = false;      // EOF or error: no more input
  bool starved = false;    // the recv ended with -ENOBUFS: re-arm once buffers are back
  bool sending = false;    // one send in flight (sends on a stream socket must not overlap)
  struct piece {
    std::uint16_t buffer_id;
    std::span<std::byte> bytes;
  };
  std::deque<piece> output;
};

struct echo_server {
  ring r;
  buffer_ring buffers;
  slot_table<connection> connections{64};
  int listen_fd = -1;
  int closed = 0;
  std::uint64_t enobufs = 0;
  std::uint64_t received_bytes = 0;

  void arm_recv(std::uint32_t slot, connection& c) {
    ASSERT_TRUE(r.prep_recv_multishot(c.fd, group, connections.user_data(
        kind_recv, {slot, connections.generation(slot)})).ok());
    c.receiving = true;
    c.starved = false;
  }
  void send_next(std::uint32_t slot, connection& c) {
    if (c.sending || c.output.empty()) return;
    const auto& head = c.output.front();
    ASSERT_TRUE(r.prep_send(c.fd, head.bytes.data(), static_cast<std::uint32_t>(head.bytes.size()),
                            pack_user_data(kind_send, connections.generation(slot), slot)).ok());
    c.sending = true;
  }
  void on_recv(const completion& done) {
    connection* c = connections.get(done.tag());
    std::span<std::byte> bytes;
    if (done.has_buffer()) bytes = buffers.consume(done);
    if (c == nullptr || bytes.empty()) {  // stale, or EOF carrying a buffer: give it back
      if (done.has_buffer()) buffers.recycle(done.buffer_id());
      if (c == nullptr) return;
    } else {
      received_bytes += bytes.size();
      c->output.push_back({done.buffer_id(), bytes});
    }
    if (!done.more()) {
      c->receiving = false;
      if (done.res == -ENOBUFS) {
        c->starved = true;
        ++enobufs;
        buffers.note_enobufs();
      } else if (done.res <= 0) {
        c->ended = true;
      }
    }
    send_next(done.tag().slot, *c);
  }
  void on_send(const completion& done) {
    connection* c = connections.get(done.tag());
    ASSERT_NE(c, nullptr);
    c->sending = false;
    ASSERT_GT(done.res, 0) << "send failed";
    auto& head = c->output.front();
    head.bytes = head.bytes.subspan(static_cast<std::size_t>(done.res));  // partial send: rest
    if (head.bytes.empty()) {
      buffers.recycle(head.buffer_id);
      c->output.pop_front();
    }
    send_next(done.tag().slot, *c);
  }
  void on_completion(const completion& done) {
    switch (done.kind()) {
      case kind_accept: {
        ASSERT_GE(done.res, 0);
        auto h = connections.acquire();
        ASSERT_TRUE(h.has_value());
        connection& c = *connections.get(h->slot, h->generation);
        c.fd = done.res;
        const int one = 1;  // echo pieces as they come: no Nagle wait for the client's ACK
        setsockopt(c.fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        arm_recv(h->slot, c);
        if (!done.more()) {
          ASSERT_TRUE(r.prep_accept(listen_fd, pack_user_data(kind_accept, 0, 0), true).ok());
        }
        break;
      }
      case kind_recv: on_recv(done); break;
      case kind_send: on_send(done); break;
      case kind_close: ++closed; break;
      default: FAIL() << "unexpected kind " << int(done.kind());
    }
  }
  // After each batch: re-arm starved receives, close finished connections, publish recycles.
  void housekeeping() {
    buffers.flush();  // first: a starved receive can only be re-armed on published buffers
    for (std::uint32_t slot = 0; slot < connections.capacity(); ++slot) {
      connection* c = connections.get(slot, connections.generation(slot));
      if (c == nullptr) continue;
      if (c->starved && buffers.buffers_out() < buffers.buffer_count()) arm_recv(slot, *c);
      if (c->ended && !c->receiving && !c->sending && c->output.empty()) {
        ASSERT_TRUE(r.prep_close(c->fd, pack_user_data(kind_close, 0, slot)).ok());
        connections.release(slot);
      }
    }
  }
  void run(int client_count, std::atomic<bool>& ready) {
    struct release_clients {  // whatever happens here, the clients must not wait forever
      std::atomic<bool>& ready;
      ~release_clients() { ready = true; }
    } guard{ready};
    RINGMTA_INIT_OR_SKIP(r, ring_options{});
    if (!r.features().multishot_accept || !r.features().buffer_ring) {
      ready = true;
      GTEST_SKIP() << "kernel lacks multishot accept or buffer rings";
    }
    buffer_ring_options options;
    options.group_id = group;
    options.buffer_count = 16;
    options.buffer_bytes = 512;
    options.recycle_batch = 4;
    ASSERT_TRUE(buffers.init(r, options).ok());
    ASSERT_TRUE(r.prep_accept(listen_fd, pack_user_data(kind_accept, 0, 0), true).ok());
    ready = true;
    const std::uint64_t deadline = core::monotonic_ns() + 60'000'000'000ull;
    while (closed < client_count && core::monotonic_ns() < deadline) {
      ASSERT_TRUE(r.submit_and_wait(1, 100'000'000).ok());
      r.for_each_completion([&](const completion& done) { on_completion(done); });
      housekeeping();
    }
  }
};

TEST(echo, concurrent_clients_get_their_bytes_back) {
  constexpr int client_count = 8;
  constexpr int messages_per_client = 300;
  std::uint16_t port = 0;
  echo_server server;
  server.listen_fd = test::listen_loopback(&port);
  ASSERT_GE(server.listen_fd, 0);
  std::atomic<bool> ready{false};
  std::thread server_thread([&] { server.run(client_count, ready); });
  while (!ready) std::this_thread::yield();
  std::atomic<int> mismatches{0}, completed{0};
  std::atomic<std::uint64_t> sent_bytes{0};
  std::vector<std::thread> clients;
  for (int k = 0; k < client_count; ++k) {
    clients.emplace_back([&, k] {
      const int fd = test::connect_loopback(port);
      if (fd < 0) {
        ++mismatches;
        return;
      }
      std::string message, back;
      for (int i = 0; i < messages_per_client; ++i) {
        const std::size_t size = 1 + static_cast<std::size_t>(i * 97 + k * 13) % 3000;
        message.assign(size, '\0');
        for (std::size_t j = 0; j < size; ++j) {
          message[j] = static_cast<char>('a' + (j + i + k) % 26);
        }
        if (write(fd, message.data(), size) != static_cast<ssize_t>(size)) break;
        back.assign(size, '\0');
        if (test::read_full(fd, back.data(), size) != size || back != message) {
          ++mismatches;
          break;
        }
        sent_bytes += size;
      }
      ++completed;
      close(fd);
    });
  }
  for (auto& t : clients) t.join();
  server_thread.join();
  close(server.listen_fd);
  if (::testing::Test::IsSkipped()) return;
  EXPECT_EQ(mismatches.load(), 0);
  EXPECT_EQ(completed.load(), client_count);
  EXPECT_EQ(server.closed, client_count);
  EXPECT_EQ(server.received_bytes, sent_bytes.load());
  EXPECT_EQ(server.buffers.buffers_held(), 0u);
  EXPECT_EQ(server.connections.live_count(), 0u);
  std::printf("echoed %llu bytes; -ENOBUFS re-arms: %llu; enters: %llu\n",
              static_cast<unsigned long long>(server.received_bytes),
              static_cast<unsigned long long>(server.enobufs),
              static_cast<unsigned long long>(server.r.counters().enters));
}

}  // namespace
}  // namespace ringmta::io
