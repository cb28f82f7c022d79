// A steady-state transaction (MAIL, RCPT, DATA, 1 KiB body, end of data, pipelined or not)
// performs no heap allocation: operator new is counted for this whole test binary.
#include <atomic>
#include <cstdlib>
#include <new>
#include <string>

#include <gtest/gtest.h>

#include "allocation_counter.h"

#include "ringmta/smtp/server_session.h"


namespace ringmta::smtp {
namespace {

struct counting_handler final : server_handler {
  std::size_t body_bytes = 0;
  void on_body(std::string_view slice, body_form) noexcept override { body_bytes += slice.size(); }
};

TEST(allocation, steady_state_transactions_allocate_nothing) {
  server_config config;
  counting_handler handler;
  server_session session(config, handler);
  std::string body;
  while (body.size() < 1024) body += "Lorem ipsum dolor sit amet, consectetur adipiscing elit.\r\n";
  const std::string transaction =
      "MAIL FROM:<a@b.example> SIZE=2000 BODY=8BITMIME\r\n"
      "RCPT TO:<c@d.example> NOTIFY=SUCCESS ORCPT=rfc822;c+40d.example\r\n"
      "DATA\r\n" + body + ".\r\n";
  const std::string chunked = "MAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\nBDAT " +
                              std::to_string(body.size()) + " LAST\r\n" + body;
  session.start();
  session.feed("EHLO client.example\r\n");
  session.consume_output(session.output().size());

  const long before = static_cast<long>(::ringmta::testing::allocations());
  for (int i = 0; i < 100; ++i) {
    const std::string& input = i % 2 == 0 ? transaction : chunked;
    std::size_t at = 0;
    while (at < input.size()) {  // pipelined: whole; then in 7-octet pieces
      const std::size_t piece = i % 4 < 2 ? input.size() : 7;
      at += session.feed(std::string_view(input).substr(at, piece));
      session.consume_output(session.output().size());
    }
  }
  const long during = static_cast<long>(::ringmta::testing::allocations()) - before;
  EXPECT_EQ(during, 0);
  EXPECT_EQ(session.messages_accepted(), 100u);
  EXPECT_EQ(handler.body_bytes, 100 * body.size());
  // The counter works: an allocation outside the session is seen.
  auto* probe = new std::string(100, 'x');
  EXPECT_GT(static_cast<long>(::ringmta::testing::allocations()) - before, during);
  delete probe;
}

}  // namespace
}  // namespace ringmta::smtp
