// The log writer thread and its outputs against real pipes, files and sockets.
#include "ringmta/admin/log_writer.h"

#include <fcntl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>

#include <fmt/format.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

namespace ringmta::admin {
namespace {

std::string read_available(int fd) {
  std::string out;
  char chunk[65536];
  for (;;) {
    const ssize_t got = ::read(fd, chunk, sizeof chunk);
    if (got <= 0) break;
    out.append(chunk, static_cast<std::size_t>(got));
  }
  return out;
}

// Reads until `needle` shows up or 10 s pass.
std::string read_until(int fd, std::string_view needle) {
  std::string out;
  ::fcntl(fd, F_SETFL, O_NONBLOCK);
  for (int i = 0; i < 1000 && out.find(needle) == std::string::npos; ++i) {
    out += read_available(fd);
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return out;
}

std::unique_ptr<log_output> console(int records_fd, int events_fd) {
  log_output_config config;
  config.records_fd = records_fd;
  config.events_fd = events_fd;
  std::string problem;
  return open_log_output(config, problem);
}

TEST(log_writer, hands_records_over_and_posts_events) {
  int records[2], events[2];
  ASSERT_EQ(::pipe(records), 0);
  ASSERT_EQ(::pipe(events), 0);
  log_writer writer(console(records[1], events[1]), 1, 64 * 1024, log_format::json);
  log_buffer buffer(log_format::json, 64 * 1024);
  buffer.record("received").field("id", "a1");
  EXPECT_TRUE(writer.hand_off(writer.channel(0), buffer));
  EXPECT_TRUE(buffer.pending().empty());
  writer.post("started", "hello");
  EXPECT_NE(read_until(records[0], "\"a1\"").find("\"event\":\"received\",\"id\":\"a1\""),
            std::string::npos);
  EXPECT_NE(read_until(events[0], "hello").find("\"event\":\"started\""), std::string::npos);
  EXPECT_TRUE(writer.stop());
  for (int fd : {records[0], records[1], events[0], events[1]}) ::close(fd);
}

// A reader that stops: the writer blocks on the pipe, the producer's hand-offs are refused,
// its bounded buffer drops records and counts them; once the reader is back, the next batch
// carries a record saying how many were dropped. The producer never blocks.
TEST(log_writer, a_stalled_output_drops_and_counts_but_never_blocks) {
  int pipe_fds[2];
  ASSERT_EQ(::pipe(pipe_fds), 0);
  ::fcntl(pipe_fds[1], F_SETPIPE_SZ, 4096);
  log_writer writer(console(pipe_fds[1], pipe_fds[1]), 1, 16 * 1024, log_format::json);
  log_buffer buffer(log_format::json, 16 * 1024);
  bool refused = false;
  for (int i = 0; i < 100000 && buffer.dropped_records() == 0; ++i) {
    buffer.record("received").field("n", i).field("padding", std::string(100, 'x'));
    refused |= !writer.hand_off(writer.channel(0), buffer);
  }
  EXPECT_TRUE(refused) << "the writer never fell behind a pipe nobody reads";
  ASSERT_GT(buffer.dropped_records(), 0u);
  const auto dropped = buffer.dropped_records();
  std::string text;
  std::thread reader([&] { text = read_until(pipe_fds[0], "log_records_dropped"); });
  bool handed = false;
  for (int i = 0; i < 1000 && !handed; ++i) {  // the reader drains: a hand-off goes through
    handed = writer.hand_off(writer.channel(0), buffer);
    if (!handed) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  ASSERT_TRUE(handed);
  buffer.record("after");  // the dropped-records notice went into this batch
  for (int i = 0; i < 1000 && !writer.hand_off(writer.channel(0), buffer); ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  reader.join();
  const auto at = text.find("{\"ts\"", text.rfind('\n', text.find("log_records_dropped")) + 1);
  const auto notice = nlohmann::json::parse(text.substr(at, text.find('\n', at) - at));
  EXPECT_EQ(notice["event"], "log_records_dropped");
  EXPECT_EQ(notice["records"].get<std::uint64_t>(), dropped);
  EXPECT_TRUE(writer.stop());
  ::close(pipe_fds[0]);
  ::close(pipe_fds[1]);
}

TEST(log_writer, file_output_reopens_after_a_rename) {
  char directory[] = "/tmp/ringmta-log-XXXXXX";
  ASSERT_NE(::mkdtemp(directory), nullptr);
  const std::string path = std::string(directory) + "/ringmta.log";
  log_output_config config;
  config.output = log_output_config::kind::file;
  config.file_path = path;
  std::string problem;
  auto output = open_log_output(config, problem);
  ASSERT_NE(output, nullptr) << problem;
  EXPECT_TRUE(output->write("one\n", log_stream::records));
  ASSERT_EQ(::rename(path.c_str(), (path + ".1").c_str()), 0);
  EXPECT_TRUE(output->write("two\n", log_stream::records));  // still the renamed file
  EXPECT_EQ(output->reopen(), "");
  EXPECT_TRUE(output->write("three\n", log_stream::events));
  auto slurp = [](const std::string& name) {
    std::string out;
    if (std::FILE* f = std::fopen(name.c_str(), "rb")) {
      char chunk[256];
      while (const std::size_t got = std::fread(chunk, 1, sizeof chunk, f)) out.append(chunk, got);
      std::fclose(f);
    }
    return out;
  };
  EXPECT_EQ(slurp(path + ".1"), "one\ntwo\n");
  EXPECT_EQ(slurp(path), "three\n");
  config.file_path = std::string(directory) + "/missing/ringmta.log";
  EXPECT_EQ(open_log_output(config, problem), nullptr);
  EXPECT_NE(problem.find("cannot open"), std::string::npos);
  std::system(("rm -rf " + std::string(directory)).c_str());
}

TEST(log_writer, syslog_output_sends_rfc5424_datagrams) {
  char directory[] = "/tmp/ringmta-syslog-XXXXXX";
  ASSERT_NE(::mkdtemp(directory), nullptr);
  const std::string path = std::string(directory) + "/log";
  const int server = ::socket(AF_UNIX, SOCK_DGRAM, 0);
  sockaddr_un address{};
  address.sun_family = AF_UNIX;
  std::snprintf(address.sun_path, sizeof address.sun_path, "%s", path.c_str());
  ASSERT_EQ(::bind(server, reinterpret_cast<sockaddr*>(&address), sizeof address), 0);
  log_output_config config;
  config.output = log_output_config::kind::syslog;
  config.syslog_socket = path;
  config.syslog_facility = syslog_facility_code("local3");
  config.hostname = "mx.example";
  std::string problem;
  auto output = open_log_output(config, problem);
  ASSERT_NE(output, nullptr) << problem;
  log_buffer buffer(log_format::json, 4096);
  buffer.set_time(1'700'000'000'123);
  buffer.record("deferred").field("id", "x");
  buffer.record("received").field("id", "y");
  EXPECT_TRUE(output->write(buffer.pending(), log_stream::records));
  char datagram[4096];
  const ssize_t first = ::recv(server, datagram, sizeof datagram, 0);
  ASSERT_GT(first, 0);
  EXPECT_EQ(std::string(datagram, static_cast<std::size_t>(first)),
            fmt::format("<{}>1 2023-11-14T22:13:20.123Z mx.example ringmta {} deferred - "
                        "{{\"ts\":\"2023-11-14T22:13:20.123Z\",\"event\":\"deferred\","
                        "\"id\":\"x\"}}",
                        19 * 8 + 4, ::getpid()));
  const ssize_t second = ::recv(server, datagram, sizeof datagram, 0);
  ASSERT_GT(second, 0);
  EXPECT_EQ(std::string(datagram, 6), fmt::format("<{}>1", 19 * 8 + 6));
  EXPECT_EQ(syslog_facility_code("mail"), 2);
  EXPECT_EQ(syslog_facility_code("local8"), -1);
  ::close(server);
  std::system(("rm -rf " + std::string(directory)).c_str());
}

TEST(log, session_ids_and_millisecond_seconds) {
  log_buffer buffer(log_format::json, 4096);
  buffer.set_time(0);
  buffer.record("x").hex_field("session", 0xabcull).seconds_field("delay", 1234)
      .seconds_field("short", 7).seconds_field("negative", -250);
  EXPECT_EQ(buffer.pending(),
            "{\"ts\":\"1970-01-01T00:00:00.000Z\",\"event\":\"x\",\"session\":"
            "\"0000000000000abc\",\"delay\":1.234,\"short\":0.007,\"negative\":-0.250}\n");
  const auto inbound = session_id_base(3, false), outbound = session_id_base(3, true);
  EXPECT_EQ(inbound >> 56, 3u);
  EXPECT_NE(inbound, outbound);
  EXPECT_EQ(outbound & (1ull << 55), 1ull << 55);
}

}  // namespace
}  // namespace ringmta::admin
