// SMTP replies and the verdicts an embedder gives the server engine.
//
// A verdict answers one handler callback: accept (the engine writes the standard reply for that
// command), respond (a specific code, enhanced status code and text), or pending (the engine
// stops after the command and waits for server_session::resume()). Verdicts only carry views:
// the engine copies the text into its output before the callback or resume() returns, so the
// embedder's strings need to live only that long.
// Never: a verdict with a code outside 200..599 or an enhanced code of another class than the
// code (programmer errors, asserted).
#pragma once

#include <cstdint>
#include <string_view>

namespace ringmta::smtp {

// One reply: code 200..599, enhanced status code "C.SSS.DDD" (RFC 3463) or empty for the engine's
// default of that class, text whose lines are separated by '\n' (a multi-line reply, RFC 5321
// §4.2.1). Control characters in the text are replaced and long lines cut to the 512-octet reply
// line limit (RFC 5321 §4.5.3.1.5) when the engine writes it.
struct reply {
  std::uint16_t code = 0;
  std::string_view enhanced;
  std::string_view text;
};

class verdict {
 public:
  enum class kind : std::uint8_t { accept, respond, pending };

  static constexpr verdict accept() noexcept { return verdict(kind::accept, {}); }
  static constexpr verdict pending() noexcept { return verdict(kind::pending, {}); }
  static constexpr verdict respond(std::uint16_t code, std::string_view enhanced,
                                   std::string_view text) noexcept {
    return verdict(kind::respond, reply{code, enhanced, text});
  }

  constexpr kind what() const noexcept { return _kind; }
  constexpr bool is_pending() const noexcept { return _kind == kind::pending; }
  constexpr const reply& get_reply() const noexcept { return _reply; }

 private:
  constexpr verdict(kind k, reply r) noexcept : _kind(k), _reply(r) {}
  kind _kind;
  reply _reply;
};

// True when `enhanced` is "C.S.D" with C in {2,4,5}, S 1..3 digits, D 1..3 digits (RFC 3463 §2).
bool is_enhanced_code(std::string_view enhanced) noexcept;

}  // namespace ringmta::smtp
