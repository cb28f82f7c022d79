// Test driver for smtp::client_session: plays a transcript of "S:" (server) and "C:" (client)
// lines against the engine and records what it did.
//
// Consecutive S: lines form one server turn; a turn is fed only after every command written so
// far was handed out (as a real server can only answer what it received), in chunks of
// `chunk_bytes` to exercise resumable parsing. Events are answered by a fixed policy: ready ->
// the next envelope or QUIT, send_body -> body_sent(), start_tls -> tls_started(). The test
// compares the client's bytes with the C: lines at every turn and the event log at the end.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

#include <fmt/format.h>

#include "ringmta/smtp/client_session.h"

namespace ringmta::smtp::client_testing {

inline std::string outcome_word(client_outcome outcome) {
  switch (outcome) {
    case client_outcome::accepted: return "accepted";
    case client_outcome::transient_failure: return "transient";
    case client_outcome::permanent_failure: return "permanent";
    case client_outcome::no_recipients: return "none";
  }
  return "?";
}

inline std::string reason_word(client_close_reason reason) {
  switch (reason) {
    case client_close_reason::quit: return "quit";
    case client_close_reason::greeting_rejected: return "greeting_rejected";
    case client_close_reason::hello_rejected: return "hello_rejected";
    case client_close_reason::tls_unavailable: return "tls_unavailable";
    case client_close_reason::tls_failed: return "tls_failed";
    case client_close_reason::auth_unavailable: return "auth_unavailable";
    case client_close_reason::auth_failed: return "auth_failed";
    case client_close_reason::service_closing: return "service_closing";
    case client_close_reason::reply_unexpected: return "reply_unexpected";
    case client_close_reason::protocol_error: return "protocol_error";
    case client_close_reason::peer_closed: return "peer_closed";
    case client_close_reason::timeout: return "timeout";
  }
  return "?";
}

inline std::string reply_words(const parsed_reply* reply) {
  if (reply == nullptr) return "null";
  std::string words = fmt::format("{}", reply->code);
  if (reply->enhanced.present()) {
    words += fmt::format(" {}.{}.{}", reply->enhanced.status_class, reply->enhanced.subject,
                         reply->enhanced.detail);
  }
  if (reply->local) words += " local";
  return words;
}

// One line per event: "ready", "rcpt 1 permanent 550 5.1.1", "body", "message accepted 250",
// "tls", "closed quit 221".
inline std::string event_line(const client_event& event) {
  switch (event.kind) {
    case client_event_kind::none: return "none";
    case client_event_kind::ready: return "ready";
    case client_event_kind::recipient_result:
      return fmt::format("rcpt {} {} {}", event.recipient_index, outcome_word(event.outcome),
                         reply_words(event.reply));
    case client_event_kind::send_body: return "body";
    case client_event_kind::message_result:
      return fmt::format("message {} {}", outcome_word(event.outcome), reply_words(event.reply));
    case client_event_kind::start_tls: return "tls";
    case client_event_kind::closed:
      return fmt::format("closed {} {}", reason_word(event.close_reason),
                         reply_words(event.reply));
  }
  return "?";
}

struct transcript_result {
  std::string client;             // every byte the engine wrote
  std::vector<std::string> events;
  std::string first_mismatch;     // empty when every C: line came where the transcript says
  std::vector<std::string> reply_texts;  // text of each recipient/message/closed reply
};

class transcript_driver {
 public:
  transcript_driver(const client_config& config, std::vector<client_envelope> envelopes)
      : _session(config), _envelopes(std::move(envelopes)) {}

  client_session& session() { return _session; }

  transcript_result run(std::string_view script, std::size_t chunk_bytes) {
    std::string expected_client;
    std::string server_turn;
    std::size_t pos = 0;
    while (pos < script.size()) {
      std::size_t end = script.find('\n', pos);
      if (end == std::string_view::npos) end = script.size();
      std::string_view line = script.substr(pos, end - pos);
      pos = end + 1;
      while (!line.empty() && line.front() == ' ') line.remove_prefix(1);
      if (line.empty()) continue;
      if (line.substr(0, 3) == "S: " || line == "S:") {
        server_turn += std::string(line.substr(line.size() > 3 ? 3 : 2)) + "\r\n";
      } else if (line.substr(0, 3) == "C: ") {
        play(server_turn, chunk_bytes);
        server_turn.clear();
        expected_client += std::string(line.substr(3)) + "\r\n";
        check(expected_client);
      } else if (line.substr(0, 7) == "S-RAW: ") {
        server_turn += unescape(line.substr(7));
      } else if (line == "EOF") {
        play(server_turn, chunk_bytes);
        server_turn.clear();
        _session.on_peer_closed();
        drain();
      } else if (line == "TIMEOUT") {
        play(server_turn, chunk_bytes);
        server_turn.clear();
        _session.on_timeout();
        drain();
      }
    }
    play(server_turn, chunk_bytes);
    check(expected_client);
    if (_result.first_mismatch.empty() && _result.client != expected_client) {
      _result.first_mismatch = "client wrote more than the transcript:\n" + _result.client;
    }
    return _result;
  }

 private:
  static std::string unescape(std::string_view text) {
    std::string out;
    for (std::size_t i = 0; i < text.size(); ++i) {
      if (text[i] == '\\' && i + 1 < text.size()) {
        const char c = text[++i];
        out += c == 'r' ? '\r' : c == 'n' ? '\n' : c == '0' ? '\0' : c;
      } else {
        out += text[i];
      }
    }
    return out;
  }

  void check(const std::string& expected_client) {
    take_output();
    if (!_result.first_mismatch.empty()) return;
    if (_result.client.size() < expected_client.size() ||
        _result.client.compare(0, expected_client.size(), expected_client) != 0) {
      _result.first_mismatch =
          fmt::format("expected client bytes:\n{}\nactual:\n{}", expected_client, _result.client);
    }
  }

  // Sends everything, as an embedder does: consuming output lets a pipelined batch continue.
  void take_output() {
    for (int rounds = 0; rounds < 10000 && !_session.output().empty(); ++rounds) {
      const std::string_view out = _session.output();
      _result.client += out;
      _session.consume_output(out.size());
    }
  }

  void play(std::string_view bytes, std::size_t chunk_bytes) {
    drain();
    while (!bytes.empty()) {
      std::string_view chunk = bytes.substr(0, chunk_bytes);
      bytes.remove_prefix(chunk.size());
      while (!chunk.empty()) {
        const std::size_t used = _session.feed(chunk);
        chunk.remove_prefix(used);
        const bool progressed = drain();
        if (used == 0 && !progressed) {
          _result.first_mismatch = "feed made no progress";
          return;
        }
      }
    }
  }

  bool drain() {
    bool any = false;
    for (;;) {
      const client_event event = _session.next_event();
      if (event.kind == client_event_kind::none) break;
      any = true;
      _result.events.push_back(event_line(event));
      if (event.reply != nullptr) _result.reply_texts.emplace_back(event.reply->text());
      react(event);
    }
    take_output();
    return any;
  }

  void react(const client_event& event) {
    switch (event.kind) {
      case client_event_kind::ready:
        if (_next_envelope < _envelopes.size()) {
          _session.start_transaction(_envelopes[_next_envelope++]);
        } else {
          _session.quit();
        }
        break;
      case client_event_kind::send_body: _session.body_sent(); break;
      case client_event_kind::start_tls: _session.tls_started(); break;
      default: break;
    }
  }

  client_session _session;
  std::vector<client_envelope> _envelopes;
  std::size_t _next_envelope = 0;
  transcript_result _result;
};

}  // namespace ringmta::smtp::client_testing
