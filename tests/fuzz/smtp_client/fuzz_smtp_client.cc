// libFuzzer target for smtp::client_session and smtp::reply_parser.
//
// The input is a config byte and a program of operations: feed a canned reply line (so that
// the fuzzer reaches deep states quickly), feed raw bytes, send part of the output, hold the
// output back, time out, close the connection (or start a new one). Events are answered from
// the program's bytes: start a transaction with one of a few envelopes (valid, invalid
// addresses, 8-bit, SMTPUTF8, oversized, DSN; as DATA or, with CHUNKING, one BDAT chunk) or
// QUIT; complete or fail TLS. The config byte also chooses whether AUTH credentials are set
// (and how they may be sent).
//
// Invariants (abort on violation): every command written is a known verb, one line ending in
// CRLF, at most client_command_bytes_max long, with no other CR or LF; without PIPELINING at
// most one command is waiting in output; every transaction gets exactly one recipient_result
// per recipient in index order, then exactly one message_result; `ready` never comes during a
// transaction; every connection ends with exactly one `closed` and nothing after it; feed()
// always makes progress once events are drained. Separately, the reply parser must give the
// same replies whatever the split of its input.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string_view>

#include "ringmta/smtp/client_session.h"
#include "ringmta/smtp/reply_parser.h"

namespace {

using namespace ringmta::smtp;

#define FUZZ_CHECK(condition)                                                    \
  do {                                                                           \
    if (!(condition)) {                                                          \
      std::fprintf(stderr, "fuzz_smtp_client: invariant failed: %s (line %d)\n", \
                   #condition, __LINE__);                                        \
      std::abort();                                                              \
    }                                                                            \
  } while (0)

constexpr std::string_view canned_lines[] = {
    "220 mx.example ESMTP", "220-mx.example", "250 ok", "250-mx.example", "250-PIPELINING",
    "250-SIZE 1000", "250-SIZE", "250-8BITMIME", "250-SMTPUTF8", "250-DSN", "250-STARTTLS",
    "250-ENHANCEDSTATUSCODES", "250-AUTH PLAIN LOGIN", "250 CHUNKING", "354 go ahead",
    "221 2.0.0 bye", "421 4.4.2 closing", "450 4.2.0 busy", "451 4.3.0 later",
    "452 4.5.3 too many recipients", "500 what", "502 5.5.1 no", "503 5.5.1 bad sequence",
    "550 5.1.1 unknown", "552 5.3.4 too big", "554 5.7.1 no", "250 2.1.5 ok",
    "220 2.0.0 ready for TLS", "250 PIPELINING", "334 VXNlcm5hbWU6", "250-",
    "235 2.7.0 ok", "535 5.7.8 bad credentials", "250-AUTH LOGIN", "454 4.7.0 later",
};

const client_recipient valid_three[] = {
    {"a@example.org", "SUCCESS,FAILURE", "rfc822;a@example.org"},
    {"b@example.org", {}, {}},
    {"c@example.org", "NEVER", {}}};
const client_recipient mixed[] = {{"x@example.org", {}, {}},
                                  {"bad>\r\nRSET", {}, {}},
                                  {"", {}, {}},
                                  {"y@example.org", "bad notify", {}}};
const client_recipient all_bad[] = {{"a\nb", {}, {}}};
const client_recipient utf8[] = {{"j\xC3\xB6rg@example.org", {}, {}}};

// 40 recipients of ~230 bytes: more than the output buffer holds, so a pipelined batch is
// written piecewise as output is consumed.
struct long_recipient_list {
  char addresses[40][240];
  client_recipient recipients[40];
  long_recipient_list() {
    for (int i = 0; i < 40; ++i) {
      std::memset(addresses[i], 'a' + i % 26, 220);
      std::snprintf(addresses[i] + 220, 20, "%02d@example.org", i);
      recipients[i] = {std::string_view(addresses[i]), {}, {}};
    }
  }
};
const long_recipient_list long_recipients;

client_envelope make_envelope(std::uint8_t choice) {
  client_envelope envelope;
  envelope.reverse_path = "sender@example.com";
  envelope.recipients = valid_three;
  switch (choice % 10) {
    case 0: break;
    case 1: envelope.recipients = mixed; break;
    case 2: envelope.recipients = all_bad; break;
    case 3: envelope.recipients = utf8; break;
    case 4: envelope.body = client_body_type::eight_bit_mime; envelope.size_bytes = 500; break;
    case 5: envelope.size_bytes = 5000; envelope.dsn_ret = "FULL"; break;
    case 6: envelope.reverse_path = ""; envelope.dsn_envid = "ID+2B1"; break;
    case 7: envelope.recipients = {}; break;
    case 8: envelope.recipients = long_recipients.recipients; break;
    case 9: envelope.dsn_envid = "bad envid"; envelope.dsn_ret = "NONE"; break;
  }
  return envelope;
}

bool known_command(std::string_view line) {
  for (const std::string_view verb : {"EHLO ", "HELO ", "MAIL FROM:<", "RCPT TO:<", "BDAT "}) {
    if (line.substr(0, verb.size()) == verb) return true;
  }
  // AUTH to a relay host with the fixed credentials relay / s3cret (RFC 4954, 4616).
  return line == "STARTTLS" || line == "DATA" || line == "RSET" || line == "QUIT" ||
         line == "." || line == "AUTH PLAIN AHJlbGF5AHMzY3JldA==" || line == "AUTH LOGIN" ||
         line == "cmVsYXk=" || line == "czNjcmV0";
}

class harness {
 public:
  explicit harness(const client_config& config) : _session(config) {}

  void feed(std::string_view bytes) {
    while (!bytes.empty()) {
      const std::size_t used = _session.feed(bytes);
      FUZZ_CHECK(used <= bytes.size());
      bytes.remove_prefix(used);
      const bool any = drain();
      FUZZ_CHECK(used > 0 || any);  // progress once events are drained
    }
    drain();
  }

  void send_output(std::size_t bytes) {
    const std::string_view out = _session.output();
    bytes = bytes < out.size() ? bytes : out.size();
    for (std::size_t i = 0; i < bytes; ++i) check_output_byte(out[i]);
    _session.consume_output(bytes);
    drain();
  }

  // Returns events and, unless output is held, sends everything (which may let a pipelined
  // batch go on); true when there was an event.
  bool drain() {
    bool any = false;
    for (int rounds = 0; rounds < 100000; ++rounds) {
      bool events = false;
      for (client_event event = _session.next_event(); event.kind != client_event_kind::none;
           event = _session.next_event()) {
        events = true;
        on_event(event);
      }
      any = any || events;
      // Without PIPELINING the engine writes one command and waits for its reply.
      if (!_session.pipelining_active() && _session.phase() != client_phase::closed) {
        std::size_t lines = 0;
        for (const char c : _session.output()) lines += c == '\n';
        FUZZ_CHECK(lines <= 1);
      }
      const std::string_view out = _session.output();
      if (_hold || out.empty()) return any;
      for (const char c : out) check_output_byte(c);
      _session.consume_output(out.size());
    }
    FUZZ_CHECK(false);  // output that never ends
    return any;
  }

  void set_choice(std::uint8_t choice) { _choice = choice; }
  void toggle_hold() { _hold = !_hold; }
  client_session& session() { return _session; }

  void end_of_connection() {
    _session.on_peer_closed();
    drain();
    FUZZ_CHECK(_closed);
    FUZZ_CHECK(!_in_transaction);
  }

  void restart() {
    FUZZ_CHECK(_closed);
    _session.reset();
    _closed = false;
    _line_bytes = 0;
  }

 private:
  void on_event(const client_event& event) {
    if (_trace) {
      std::fprintf(stderr, "event %d index %u outcome %d reason %d reply %d\n",
                   static_cast<int>(event.kind), event.recipient_index,
                   static_cast<int>(event.outcome), static_cast<int>(event.close_reason),
                   event.reply != nullptr ? event.reply->code : 0);
    }
    FUZZ_CHECK(!_closed);  // nothing after closed
    switch (event.kind) {
      case client_event_kind::ready:
        FUZZ_CHECK(!_in_transaction);
        FUZZ_CHECK(_session.phase() == client_phase::ready);
        if (_choice == 7 || _choice == 31) {
          _session.quit();
        } else {
          _envelope = make_envelope(_choice);
          // When CHUNKING is on, every third choice sends the message as one BDAT chunk.
          if (_session.chunking_active() && _choice % 3 == 0) _envelope.chunk_bytes = 1 + _choice;
          _choice = 7;  // one transaction per operation, then QUIT: no endless local failures
          _in_transaction = true;
          _next_recipient = 0;
          _session.start_transaction(_envelope);
        }
        break;
      case client_event_kind::recipient_result:
        FUZZ_CHECK(_in_transaction);
        FUZZ_CHECK(event.recipient_index == _next_recipient);
        FUZZ_CHECK(event.recipient_index < _envelope.recipients.size());
        FUZZ_CHECK(event.outcome != client_outcome::no_recipients);
        check_reply(event.reply);
        ++_next_recipient;
        break;
      case client_event_kind::message_result:
        FUZZ_CHECK(_in_transaction);
        FUZZ_CHECK(_next_recipient == _envelope.recipients.size());
        check_reply(event.reply);
        _in_transaction = false;
        break;
      case client_event_kind::send_body:
        FUZZ_CHECK(_in_transaction);
        // DATA: after the 354; BDAT: as soon as the command is written, whatever is awaited.
        FUZZ_CHECK(_session.phase() == client_phase::body || _envelope.chunk_bytes != 0);
        _session.body_sent();
        break;
      case client_event_kind::start_tls:
        FUZZ_CHECK(_session.phase() == client_phase::tls_handshake);
        if (_choice % 4 == 0) {
          _session.tls_failed();
        } else {
          _session.tls_started();
          _line_bytes = 0;
        }
        break;
      case client_event_kind::closed:
        FUZZ_CHECK(!_in_transaction);
        check_reply(event.reply);
        FUZZ_CHECK(_session.phase() == client_phase::closed);
        _closed = true;
        break;
      case client_event_kind::none:
        break;
    }
  }

  static void check_reply(const parsed_reply* reply) {
    FUZZ_CHECK(reply != nullptr);
    FUZZ_CHECK(reply->code >= 200 && reply->code <= 599);
    FUZZ_CHECK(reply->text().size() <= reply_text_bytes_max);
  }

  void check_output_byte(char c) {
    FUZZ_CHECK(_line_bytes < client_command_bytes_max);
    _line[_line_bytes++] = c;
    if (c != '\n') return;
    const std::string_view line(_line, _line_bytes);
    _line_bytes = 0;
    FUZZ_CHECK(line.size() >= 3 && line[line.size() - 2] == '\r');
    const std::string_view command = line.substr(0, line.size() - 2);
    if (_trace) {
      std::fprintf(stderr, "C: %.*s\n", static_cast<int>(command.size()), command.data());
    }
    FUZZ_CHECK(command.find('\r') == std::string_view::npos);
    FUZZ_CHECK(command.find('\n') == std::string_view::npos);
    FUZZ_CHECK(known_command(command));
  }

  // FUZZ_SMTP_CLIENT_TRACE=1 prints commands and events, to read a crashing input.
  const bool _trace = std::getenv("FUZZ_SMTP_CLIENT_TRACE") != nullptr;
  client_session _session;
  client_envelope _envelope;
  std::uint8_t _choice = 0;
  bool _hold = false;
  bool _closed = false;
  bool _in_transaction = false;
  std::size_t _next_recipient = 0;
  char _line[client_command_bytes_max];
  std::size_t _line_bytes = 0;
};

// The reply parser gives the same replies whole and split at every `chunk` bytes.
void check_parser_splits(std::string_view bytes, std::size_t chunk, std::uint16_t lines_max) {
  reply_parser whole(lines_max);
  reply_parser split(lines_max);
  std::string_view rest_whole = bytes;
  std::string_view rest_split = bytes;
  std::string_view piece;
  for (int replies = 0; replies < 100000; ++replies) {
    // Next reply (or error, or end) from the whole parser...
    reply_parser::status whole_status = reply_parser::status::need_more;
    while (!rest_whole.empty()) {
      const auto step = whole.feed(rest_whole);
      rest_whole.remove_prefix(step.consumed);
      whole_status = step.what;
      if (whole_status == reply_parser::status::reply_done ||
          whole_status == reply_parser::status::failed) {
        break;
      }
    }
    // ...and from the split one.
    reply_parser::status split_status = reply_parser::status::need_more;
    for (;;) {
      if (piece.empty()) {
        if (rest_split.empty()) break;
        piece = rest_split.substr(0, chunk);
        rest_split.remove_prefix(piece.size());
      }
      const auto step = split.feed(piece);
      piece.remove_prefix(step.consumed);
      split_status = step.what;
      if (split_status == reply_parser::status::reply_done ||
          split_status == reply_parser::status::failed) {
        break;
      }
    }
    const bool whole_ended = whole_status != reply_parser::status::reply_done;
    const bool split_ended = split_status != reply_parser::status::reply_done;
    FUZZ_CHECK(whole_ended == split_ended);
    if (whole_ended) {
      FUZZ_CHECK(whole.error() == split.error());
      return;
    }
    FUZZ_CHECK(whole.reply().code == split.reply().code);
    FUZZ_CHECK(whole.reply().enhanced == split.reply().enhanced);
    FUZZ_CHECK(whole.reply().line_count == split.reply().line_count);
    FUZZ_CHECK(whole.reply().text() == split.reply().text());
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 2) return 0;
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  const auto config_byte = static_cast<std::uint8_t>(input[0]);
  const std::uint16_t lines_max = static_cast<std::uint16_t>(2 + (config_byte >> 4) * 4);
  check_parser_splits(input.substr(1), 1 + (static_cast<std::uint8_t>(input[1]) % 13),
                      lines_max);

  client_config config;
  config.helo_name = "client.example";
  config.pipelining = (config_byte & 1) != 0;
  config.tls = static_cast<client_tls_policy>((config_byte >> 1) % 3);
  config.reply_lines_max = lines_max;
  // Credentials in some runs: AUTH off, over TLS only, in plaintext, refused by policy.
  config.auth = {static_cast<client_auth_mode>((config_byte >> 1) / 3 % 4), "relay", "s3cret"};
  harness run(config);

  std::size_t pos = 1;
  auto next_byte = [&]() -> std::uint8_t {
    return pos < size ? static_cast<std::uint8_t>(input[pos++]) : 0;
  };
  while (pos < size) {
    const std::uint8_t op = next_byte();
    run.set_choice(static_cast<std::uint8_t>(op >> 3));
    switch (op % 8) {
      case 0:
      case 1:
      case 2: {  // a canned reply line, in one piece or split in two
        const std::string_view line = canned_lines[next_byte() % std::size(canned_lines)];
        char bytes[64];
        std::memcpy(bytes, line.data(), line.size());
        std::memcpy(bytes + line.size(), "\r\n", 2);
        const std::string_view whole(bytes, line.size() + 2);
        const std::size_t cut = (op >> 3) % (whole.size() + 1);
        run.feed(whole.substr(0, cut));
        run.feed(whole.substr(cut));
        break;
      }
      case 3: {  // raw bytes
        const std::size_t length = 1 + next_byte() % 64;
        const std::size_t take = length < size - pos ? length : size - pos;
        run.feed(input.substr(pos, take));
        pos += take;
        break;
      }
      case 4: run.send_output(next_byte()); break;
      case 5: run.toggle_hold(); break;
      case 6:
        run.session().on_timeout();
        run.drain();
        break;
      case 7:
        if (run.session().phase() == client_phase::closed) {
          run.restart();
        } else {
          run.end_of_connection();
        }
        break;
    }
  }
  if (run.session().phase() != client_phase::closed) run.end_of_connection();
  return 0;
}
