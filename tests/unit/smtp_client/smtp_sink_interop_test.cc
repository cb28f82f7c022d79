// Interop of smtp::client_session with a real peer: Postfix's smtp-sink on loopback, driven by
// a small blocking-socket embedder. Several messages over one connection, with PIPELINING and
// without, soft-rejected recipients, a refused end of data, a server that leaves with 421, and
// an 8-bit message to a server without 8BITMIME. smtp-sink's dump file shows what it received.
//
// The sink runs on a port the kernel picked (bound to port 0, then released and handed to
// smtp-sink; a start that loses the port to someone else is retried). Every wait is bounded:
// sockets have 10 s timeouts and loops have fixed round limits. Skips when smtp-sink is absent.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <fmt/format.h>
#include <gtest/gtest.h>

#include "ringmta/smtp/client_session.h"

extern char** environ;

namespace ringmta::smtp {
namespace {

std::uint16_t free_loopback_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return 0;
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  address.sin_port = 0;
  socklen_t length = sizeof(address);
  std::uint16_t port = 0;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)) == 0 &&
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length) == 0) {
    port = ntohs(address.sin_port);
  }
  ::close(fd);
  return port;
}

int connect_loopback(std::uint16_t port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  address.sin_port = htons(port);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)) != 0) {
    ::close(fd);
    return -1;
  }
  // The body and the "." go out in two sends: without NODELAY, Nagle holds the "." for the
  // peer's delayed ACK (~40 ms a message).
  const int one = 1;
  ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  timeval timeout{10, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout));
  ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, sizeof(timeout));
  return fd;
}

// smtp-sink as a child process; stopped (SIGTERM, then SIGKILL) by pid when the test ends.
class smtp_sink {
 public:
  explicit smtp_sink(std::vector<std::string> flags) {
    const char* program = std::getenv("SMTP_SINK");
    if (program == nullptr || ::access(program, X_OK) != 0) return;
    char directory_template[] = "/tmp/ringmta-smtp-sink-XXXXXX";
    if (::mkdtemp(directory_template) == nullptr) return;
    _directory = directory_template;
    _dump_path = _directory + "/dump";
    for (int attempt = 0; attempt < 5 && _port == 0; ++attempt) start(program, flags);
  }
  ~smtp_sink() {
    stop();
    if (!_directory.empty()) {
      std::remove(_dump_path.c_str());
      ::rmdir(_directory.c_str());
    }
  }

  bool available() const { return std::getenv("SMTP_SINK") != nullptr; }
  std::uint16_t port() const { return _port; }
  std::string dump() const {
    std::ifstream in(_dump_path);
    std::stringstream text;
    text << in.rdbuf();
    return text.str();
  }

 private:
  void start(const char* program, const std::vector<std::string>& flags) {
    const std::uint16_t port = free_loopback_port();
    if (port == 0) return;
    std::vector<std::string> args{"smtp-sink"};
    if (::geteuid() == 0) args.insert(args.end(), {"-u", "root"});  // required as root
    args.insert(args.end(), {"-D", _dump_path});
    args.insert(args.end(), flags.begin(), flags.end());
    args.push_back(fmt::format("127.0.0.1:{}", port));
    args.emplace_back("100");
    std::vector<char*> argv;
    for (auto& arg : args) argv.push_back(arg.data());
    argv.push_back(nullptr);
    if (::posix_spawn(&_pid, program, nullptr, nullptr, argv.data(), environ) != 0) {
      _pid = -1;
      return;
    }
    for (int wait = 0; wait < 250; ++wait) {  // at most ~5 s for it to listen
      const int fd = connect_loopback(port);
      if (fd >= 0) {
        ::close(fd);
        _port = port;
        return;
      }
      int status = 0;
      if (::waitpid(_pid, &status, WNOHANG) == _pid) {  // it exited: the port was taken
        _pid = -1;
        return;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    stop();
  }

  void stop() {
    if (_pid <= 0) return;
    ::kill(_pid, SIGTERM);
    for (int wait = 0; wait < 100; ++wait) {
      int status = 0;
      if (::waitpid(_pid, &status, WNOHANG) == _pid) {
        _pid = -1;
        return;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    ::kill(_pid, SIGKILL);
    ::waitpid(_pid, nullptr, 0);
    _pid = -1;
  }

  pid_t _pid = -1;
  std::uint16_t _port = 0;
  std::string _directory;
  std::string _dump_path;
};

struct message {
  client_envelope envelope;
  std::string body;  // wire form: dot-stuffed, ends in CRLF
};

struct session_log {
  std::vector<std::string> recipients;  // "<message>:<index> <outcome> <code>"
  std::vector<std::string> messages;    // "<outcome> <code>"
  std::string closed;                   // "<reason> <code>"
  client_extensions extensions;
};

bool send_all(int fd, std::string_view bytes) {
  while (!bytes.empty()) {
    const ssize_t sent = ::send(fd, bytes.data(), bytes.size(), MSG_NOSIGNAL);
    if (sent <= 0) return false;
    bytes.remove_prefix(static_cast<std::size_t>(sent));
  }
  return true;
}

// The blocking embedder: one connection, the messages in order, then QUIT.
session_log deliver(std::uint16_t port, const client_config& config,
                    const std::vector<message>& messages) {
  session_log log;
  const int fd = connect_loopback(port);
  if (fd < 0) {
    log.closed = "connect failed";
    return log;
  }
  client_session session(config);
  std::size_t next = 0;
  bool closed = false;
  bool io_failed = false;
  auto flush = [&] {
    const std::string_view out = session.output();
    if (!out.empty() && !send_all(fd, out)) io_failed = true;
    session.consume_output(out.size());  // handed to the kernel
  };
  auto drain = [&] {
    for (client_event event = session.next_event(); event.kind != client_event_kind::none;
         event = session.next_event()) {
      switch (event.kind) {
        case client_event_kind::ready:
          if (next < messages.size()) {
            session.start_transaction(messages[next++].envelope);
          } else {
            session.quit();
          }
          break;
        case client_event_kind::send_body:
          flush();
          if (!send_all(fd, messages[next - 1].body)) io_failed = true;
          session.body_sent();
          break;
        case client_event_kind::recipient_result:
          log.recipients.push_back(fmt::format("{}:{} {} {}", next - 1, event.recipient_index,
                                               describe(event.outcome), event.reply->code));
          break;
        case client_event_kind::message_result:
          log.messages.push_back(
              fmt::format("{} {}", describe(event.outcome), event.reply->code));
          break;
        case client_event_kind::closed:
          log.closed = fmt::format("{} {}", describe(event.close_reason), event.reply->code);
          log.extensions = session.extensions();
          closed = true;
          break;
        default:
          break;
      }
      flush();
    }
    flush();
  };
  char buffer[4096];
  for (int rounds = 0; rounds < 10000 && !closed; ++rounds) {
    const ssize_t received = ::recv(fd, buffer, sizeof(buffer), 0);
    if (received == 0 || io_failed) {
      session.on_peer_closed();
    } else if (received < 0) {
      if (errno == EAGAIN || errno == EWOULDBLOCK) {
        session.on_timeout();
      } else {
        session.on_peer_closed();
      }
    } else {
      std::string_view chunk(buffer, static_cast<std::size_t>(received));
      while (!chunk.empty() && !closed) {
        chunk.remove_prefix(session.feed(chunk));
        drain();
      }
    }
    drain();
  }
  ::close(fd);
  return log;
}

client_config plain_config() {
  client_config config;
  config.helo_name = "client.example";
  return config;
}

std::size_t count(const std::string& text, std::string_view needle) {
  std::size_t found = 0;
  for (std::size_t pos = text.find(needle); pos != std::string::npos;
       pos = text.find(needle, pos + needle.size())) {
    ++found;
  }
  return found;
}

const client_recipient two_recipients[] = {
    {"alice@example.org", "SUCCESS,FAILURE", "rfc822;alice@example.org"},
    {"bob@example.org", {}, {}}};

std::vector<message> numbered_messages(int how_many) {
  std::vector<message> messages;
  for (int i = 0; i < how_many; ++i) {
    message m;
    m.envelope.reverse_path = "sender@example.com";
    m.envelope.recipients = two_recipients;
    m.envelope.dsn_envid = "ENVID42";
    m.envelope.dsn_ret = "HDRS";
    m.body = fmt::format(
        "Subject: interop message {}\r\n\r\nbody of message {}\r\n..a stuffed dot line\r\n", i,
        i);
    m.envelope.size_bytes = m.body.size();
    messages.push_back(std::move(m));
  }
  return messages;
}

#define REQUIRE_SINK(sink)                                                       \
  do {                                                                           \
    if (!(sink).available()) GTEST_SKIP() << "smtp-sink not found (SMTP_SINK)";  \
    ASSERT_NE((sink).port(), 0) << "smtp-sink did not start";                    \
  } while (0)

void expect_all_delivered(const session_log& log, std::size_t messages) {
  EXPECT_EQ(log.closed, "quit 221");
  ASSERT_EQ(log.messages.size(), messages);
  for (const auto& m : log.messages) EXPECT_EQ(m, "accepted 250");
  ASSERT_EQ(log.recipients.size(), 2 * messages);
  for (std::size_t i = 0; i < log.recipients.size(); ++i) {
    EXPECT_EQ(log.recipients[i], fmt::format("{}:{} accepted 250", i / 2, i % 2));
  }
}

TEST(smtp_sink_interop, several_messages_pipelined_over_one_connection) {
  smtp_sink sink({});
  REQUIRE_SINK(sink);
  const auto messages = numbered_messages(5);
  const session_log log = deliver(sink.port(), plain_config(), messages);
  expect_all_delivered(log, 5);
  EXPECT_TRUE(log.extensions.pipelining);
  EXPECT_TRUE(log.extensions.dsn);
  const std::string dump = sink.dump();
  for (int i = 0; i < 5; ++i) {
    EXPECT_NE(dump.find(fmt::format("body of message {}", i)), std::string::npos) << dump;
  }
  // smtp-sink records the MAIL and RCPT arguments: DSN parameters went through.
  EXPECT_EQ(count(dump, "X-Mail-Args: <sender@example.com> RET=HDRS ENVID=ENVID42"), 5u)
      << dump;
  EXPECT_EQ(count(dump, "X-Rcpt-Args: <alice@example.org> NOTIFY=SUCCESS,FAILURE "
                        "ORCPT=rfc822;alice@example.org"), 5u) << dump;
  EXPECT_EQ(count(dump, "X-Rcpt-Args: <bob@example.org>"), 5u) << dump;
}

TEST(smtp_sink_interop, several_messages_without_pipelining) {
  smtp_sink sink({"-p"});
  REQUIRE_SINK(sink);
  const session_log log = deliver(sink.port(), plain_config(), numbered_messages(3));
  expect_all_delivered(log, 3);
  EXPECT_FALSE(log.extensions.pipelining);
  EXPECT_EQ(count(sink.dump(), "X-Client-Addr:"), 3u);
}

TEST(smtp_sink_interop, pipelining_disabled_by_config) {
  smtp_sink sink({});
  REQUIRE_SINK(sink);
  client_config config = plain_config();
  config.pipelining = false;
  const session_log log = deliver(sink.port(), config, numbered_messages(2));
  expect_all_delivered(log, 2);
}

TEST(smtp_sink_interop, soft_rejected_recipients_then_rset_and_reuse) {
  // -r RCPT: every RCPT gets 450; no DATA is sent, RSET clears the transaction each time.
  smtp_sink sink({"-r", "RCPT"});
  REQUIRE_SINK(sink);
  const session_log log = deliver(sink.port(), plain_config(), numbered_messages(3));
  EXPECT_EQ(log.closed, "quit 221");
  ASSERT_EQ(log.messages.size(), 3u);
  for (const auto& m : log.messages) EXPECT_EQ(m, "no recipients accepted 554");
  ASSERT_EQ(log.recipients.size(), 6u);
  for (const auto& r : log.recipients) {
    EXPECT_NE(r.find("transient failure 450"), std::string::npos) << r;
  }
}

TEST(smtp_sink_interop, refused_end_of_data) {
  smtp_sink sink({"-f", "."});
  REQUIRE_SINK(sink);
  const session_log log = deliver(sink.port(), plain_config(), numbered_messages(2));
  EXPECT_EQ(log.closed, "quit 221");
  EXPECT_EQ(log.messages, (std::vector<std::string>{"permanent failure 500",
                                                    "permanent failure 500"}));
}

TEST(smtp_sink_interop, server_leaves_with_421_at_rcpt) {
  smtp_sink sink({"-Q", "RCPT"});
  REQUIRE_SINK(sink);
  const session_log log = deliver(sink.port(), plain_config(), numbered_messages(1));
  EXPECT_EQ(log.closed, "service closing (421) 421");
  ASSERT_EQ(log.recipients.size(), 2u);
  EXPECT_EQ(log.recipients[0], "0:0 transient failure 421");
  EXPECT_EQ(log.recipients[1], "0:1 transient failure 421");
  EXPECT_EQ(log.messages, (std::vector<std::string>{"transient failure 421"}));
}

TEST(smtp_sink_interop, eight_bit_message_to_a_seven_bit_server) {
  smtp_sink sink({"-8"});
  REQUIRE_SINK(sink);
  auto messages = numbered_messages(2);
  messages[0].envelope.body = client_body_type::eight_bit_mime;
  messages[0].body = "Subject: caf\xC3\xA9\r\n\r\n8-bit body\r\n";
  const session_log log = deliver(sink.port(), plain_config(), messages);
  EXPECT_EQ(log.closed, "quit 221");
  EXPECT_EQ(log.messages, (std::vector<std::string>{"permanent failure 554", "accepted 250"}));
  EXPECT_EQ(count(sink.dump(), "X-Client-Addr:"), 1u);  // the 8-bit one was never sent
}

}  // namespace
}  // namespace ringmta::smtp
