// auth::sasl_exchange: the server side of the SASL mechanisms PLAIN (RFC 4616) and LOGIN
// (draft-murchison-sasl-login) inside SMTP AUTH (RFC 4954), as a pure state machine.
//
// The embedder hands it the AUTH command's mechanism and initial response, then each client
// line of the exchange; each step answers with a 334 challenge, a pair of credentials to
// verify, or a refusal (a reply code). Verifying the credentials is the embedder's business
// (a worker thread: hashes cost milliseconds). The "*" cancel line is the engine's
// (smtp::server_session) and never reaches here.
//
// Invariants: user() and password() are valid only in state verify, until clear(); clear()
// wipes the password octets. Base64 is RFC 4648 §4 with padding optional ("=" alone is an
// empty initial response, RFC 4954 §4). A user name never holds NUL or control characters.
// Never: a syscall, an allocation, a throw, a password copied anywhere but password_storage.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string_view>

namespace ringmta::auth {

// Decodes base64 text into `out`; the decoded length, or nothing when the text is not base64 or
// does not fit.
std::optional<std::size_t> decode_base64(std::string_view text, std::span<char> out) noexcept;
// Encodes `bytes` into `out` (padded); the encoded length, or nothing when it does not fit.
std::optional<std::size_t> encode_base64(std::string_view bytes, std::span<char> out) noexcept;

enum class sasl_mechanism : std::uint8_t { plain, login };

struct sasl_step {
  enum class kind : std::uint8_t {
    challenge,  // reply 334 with `text` (base64)
    verify,     // check user() and password(), then answer 235 or 535
    refuse,     // reply `code` `enhanced` `text`; the exchange is over
  };
  kind what = kind::refuse;
  std::uint16_t code = 0;
  std::string_view enhanced;
  std::string_view text;  // static storage
};

class sasl_exchange {
 public:
  static constexpr std::size_t user_bytes_max = 255;       // RFC 4616 §2: 255 octets
  static constexpr std::size_t password_bytes_max = 1024;  // generous; longer: refused
  // The longest decoded response handled: AUTH lines are at most 12288 octets (RFC 4954 §4).
  static constexpr std::size_t decoded_bytes_max = 9216;

  // AUTH MECHANISM [initial-response]; `mechanism` is one the server offered.
  sasl_step start(std::string_view mechanism, std::string_view initial_response) noexcept;
  // A client line during the exchange (not "*").
  sasl_step respond(std::string_view line) noexcept;
  void clear() noexcept;

  sasl_mechanism mechanism() const noexcept { return _mechanism; }
  std::string_view mechanism_name() const noexcept;
  std::string_view user() const noexcept { return {_user.data(), _user_bytes}; }
  std::string_view password() const noexcept { return {_password.data(), _password_bytes}; }

 private:
  enum class state : std::uint8_t { idle, plain_response, login_user, login_password, verify };
  sasl_step take_plain(std::string_view response) noexcept;
  sasl_step take_login_user(std::string_view response) noexcept;
  sasl_step take_login_password(std::string_view response) noexcept;
  std::optional<std::string_view> decode(std::string_view line) noexcept;
  sasl_step refuse(std::uint16_t code, std::string_view enhanced, std::string_view text) noexcept;

  state _state = state::idle;
  sasl_mechanism _mechanism = sasl_mechanism::plain;
  std::size_t _user_bytes = 0;
  std::size_t _password_bytes = 0;
  std::array<char, user_bytes_max> _user;
  std::array<char, password_bytes_max> _password;
  std::array<char, decoded_bytes_max> _decoded;
};

}  // namespace ringmta::auth
