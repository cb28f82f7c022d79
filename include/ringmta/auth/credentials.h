// auth::credentials: who may log in (a passwd file in Dovecot's layout, hashes in crypt(3)
// form checked with libcrypt) and which envelope senders each login may use.
//
// Files are read on the thread that loads the configuration (start-up, SIGHUP, POST /reload),
// never on a shard; a table is immutable once built and shared through shared_ptr by the
// inbound snapshot and the verifier threads, so a reload never changes one under a check.
// verify() costs what the hash scheme costs (yescrypt, bcrypt: milliseconds by design): call it
// on a worker thread only.
//
// Passwd file: one `user:hash[:ignored fields]` per line (Dovecot passwd-file), `#` comments,
// the hash optionally prefixed `{CRYPT}`, `{BLF-CRYPT}`, `{SHA512-CRYPT}`, `{SHA256-CRYPT}`;
// any hash libcrypt accepts (crypt_checksalt): yescrypt `$y$`, bcrypt `$2b$`, sha512-crypt `$6$`.
// Sender map (Postfix smtpd_sender_login_maps): `address-or-@domain  login[, login...]`.
// Never: a password stored or logged; a throw out of verify().
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace ringmta::auth {

enum class check_result : std::uint8_t {
  accepted,
  refused,      // wrong password or unknown login
  unavailable,  // the back-end could not answer (454 4.7.0)
};

// Where logins are checked: a passwd file, or a Dovecot auth service. check() runs on a
// verifier thread and may block there (hash, socket), never on a shard.
class backend {
 public:
  virtual ~backend() = default;
  // `client`: the client's address (Dovecot's rip, for its own logs and penalties).
  virtual check_result check(std::string_view user, std::string_view password,
                             std::string_view client) const noexcept = 0;
};

class credentials final : public backend {
 public:
  // Throws std::runtime_error "FILE:LINE: what is wrong" for an unreadable file, a line
  // without ':', a duplicate user or a hash libcrypt does not accept.
  static std::shared_ptr<const credentials> load_passwd_file(const std::string& path);
  static std::shared_ptr<const credentials> from_text(std::string_view text,
                                                      const std::string& origin);

  // True when `password` matches the user's hash. An unknown user costs one hash too (a dummy
  // of the strongest scheme in the file), so timing does not tell which logins exist.
  bool verify(std::string_view user, std::string_view password) const noexcept;
  check_result check(std::string_view user, std::string_view password,
                     std::string_view) const noexcept override {
    return verify(user, password) ? check_result::accepted : check_result::refused;
  }
  std::size_t size() const noexcept { return _hashes.size(); }
  const std::string& origin() const noexcept { return _origin; }

 private:
  std::unordered_map<std::string, std::string> _hashes;  // user → crypt hash
  std::string _dummy_hash;
  std::string _origin;
};

// Dovecot's authentication protocol (auth client protocol 1.1) over its UNIX socket, as
// Postfix's smtpd_sasl_type = dovecot speaks it: one connection per check (handshake, one AUTH
// PLAIN request, OK or FAIL), with a deadline on every read and write.
class dovecot_backend final : public backend {
 public:
  explicit dovecot_backend(std::string socket_path, std::uint32_t timeout_ms = 10'000)
      : _socket_path(std::move(socket_path)), _timeout_ms(timeout_ms) {}
  check_result check(std::string_view user, std::string_view password,
                     std::string_view client) const noexcept override;
  const std::string& socket_path() const noexcept { return _socket_path; }

 private:
  std::string _socket_path;
  std::uint32_t _timeout_ms;
};

// Which envelope senders a login may use (RFC 6409 §6.1: the submission server may check).
class sender_map {
 public:
  static std::shared_ptr<const sender_map> load_file(const std::string& path);
  static std::shared_ptr<const sender_map> from_text(std::string_view text,
                                                     const std::string& origin);

  // `sender` (an address, not empty) may be used by `login`: listed for the address, or for
  // "@domain". Without an entry for either, only a login equal to the address may use it.
  bool allows(std::string_view login, std::string_view sender) const noexcept;

 private:
  std::unordered_map<std::string, std::vector<std::string>> _owners;  // lowercase key
};

// Without a map: a login may use exactly its own address (ignoring case).
bool sender_is_login(std::string_view login, std::string_view sender) noexcept;

// A new crypt(3) hash of `password`: yescrypt by default, "bcrypt" ($2b$) or "sha512" ($6$).
// Throws std::runtime_error when libcrypt cannot make one.
std::string make_hash(std::string_view password, std::string_view scheme = "yescrypt");

}  // namespace ringmta::auth
