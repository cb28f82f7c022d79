// An in-memory SMTP server with canned replies, for allocation tests and benchmarks of
// smtp::client_session: it reads the client's command lines and answers each one (250, 354 to
// DATA, 221 to QUIT), as a pipelining server would. Fixed buffers only: it allocates nothing.
#pragma once

#include <cstddef>
#include <cstring>
#include <string_view>

#include "ringmta/smtp/client_session.h"

namespace ringmta::smtp::client_testing {

class canned_server {
 public:
  // The greeting is queued at once, as a server sends it on accepting the connection.
  explicit canned_server(bool pipelining) : _pipelining(pipelining) { queue(greeting()); }

  std::string_view greeting() const { return "220 canned.example ESMTP\r\n"; }
  std::string_view ehlo_reply() const {
    return _pipelining ? "250-canned.example\r\n250-PIPELINING\r\n250-SIZE 100000000\r\n"
                         "250-8BITMIME\r\n250-DSN\r\n250 ENHANCEDSTATUSCODES\r\n"
                       : "250-canned.example\r\n250-SIZE 100000000\r\n250 8BITMIME\r\n";
  }

  // Takes the client's output and queues one reply per complete command line.
  void receive(std::string_view commands) {
    for (const char c : commands) {
      if (_line_bytes < sizeof(_line)) _line[_line_bytes++] = c;
      if (c != '\n') continue;
      answer({_line, _line_bytes});
      _line_bytes = 0;
    }
  }

  std::string_view replies() const {
    return {_replies + _reply_begin, _reply_bytes - _reply_begin};
  }
  void consume_replies(std::size_t bytes) {
    _reply_begin += bytes;
    if (_reply_begin == _reply_bytes) _reply_begin = _reply_bytes = 0;
  }
  std::size_t messages() const { return _messages; }

 private:
  void answer(std::string_view line) {
    if (line.substr(0, 4) == "EHLO") {
      queue(ehlo_reply());
    } else if (line.substr(0, 4) == "MAIL") {
      queue("250 2.1.0 Ok\r\n");
    } else if (line.substr(0, 4) == "RCPT") {
      queue("250 2.1.5 Ok\r\n");
    } else if (line == "DATA\r\n") {
      queue("354 End data with <CR><LF>.<CR><LF>\r\n");
    } else if (line == ".\r\n") {
      ++_messages;
      queue("250 2.0.0 Ok: queued as 4F2kLx0Hx3z1\r\n");
    } else if (line == "QUIT\r\n") {
      queue("221 2.0.0 Bye\r\n");
    } else {
      queue("250 2.0.0 Ok\r\n");
    }
  }

  void queue(std::string_view reply) {
    if (_reply_bytes + reply.size() > sizeof(_replies)) return;
    std::memcpy(_replies + _reply_bytes, reply.data(), reply.size());
    _reply_bytes += reply.size();
  }

  bool _pipelining;
  char _line[1100];
  std::size_t _line_bytes = 0;
  char _replies[16384];
  std::size_t _reply_begin = 0;
  std::size_t _reply_bytes = 0;
  std::size_t _messages = 0;
};

// Runs client and canned server against each other until the client is idle (ready) or
// closed; the body is "sent" as soon as asked. Counts recipient results and message results.
struct canned_loop_counts {
  std::size_t recipient_results = 0;
  std::size_t message_results = 0;
  std::size_t accepted_messages = 0;
};

inline client_event_kind run_until_idle(client_session& session, canned_server& server,
                                        canned_loop_counts& counts) {
  for (int rounds = 0; rounds < 100000; ++rounds) {
    for (client_event event = session.next_event(); event.kind != client_event_kind::none;
         event = session.next_event()) {
      if (event.kind == client_event_kind::recipient_result) ++counts.recipient_results;
      if (event.kind == client_event_kind::message_result) {
        ++counts.message_results;
        if (event.outcome == client_outcome::accepted) ++counts.accepted_messages;
      }
      if (event.kind == client_event_kind::send_body) session.body_sent();
      if (event.kind == client_event_kind::ready || event.kind == client_event_kind::closed) {
        return event.kind;
      }
    }
    while (!session.output().empty()) {
      const std::string_view out = session.output();
      server.receive(out);
      session.consume_output(out.size());
    }
    const std::string_view replies = server.replies();
    if (replies.empty()) return client_event_kind::none;  // stuck: the caller's test fails
    // The session stops after a reply that made an event; the rest is fed after the events.
    server.consume_replies(session.feed(replies));
  }
  return client_event_kind::none;
}

}  // namespace ringmta::smtp::client_testing
