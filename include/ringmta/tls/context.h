// tls contexts: the immutable OpenSSL configuration that tls::session objects are made from.
//
// server_context: the certificates (several pairs, e.g. ECDSA and RSA: OpenSSL keeps one per
// key type in one SSL_CTX and picks the one the client's signature_algorithms allow), the
// version floor, the cipher lists, and session resumption with stateless tickets (RFC 8446
// §4.6.1, RFC 5077) whose keys come from a ticket_key_ring shared by the whole process (a
// client's next connection may land on any shard through SO_REUSEPORT).
// client_context: verification against a CA file or the system store, used by outbound
// delivery and by ringmta-blast; host-name checks and SNI are per session (session.h).
//
// Contexts are built at start-up or on reload (load_* read files: never call them on a shard
// thread), then shared read-only by every shard through shared_ptr<const ...>: a reload makes
// a new context for new sessions while running sessions keep the one they started with.
// Errors are values: a load returns a text naming the file and the problem (start-up turns it
// into exit status 2, a reload keeps the old context).
// Never: a context changed after it is published, an OpenSSL type in a caller's header (the
// SSL_CTX is reached through native()), a private key in an error text.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

struct ssl_ctx_st;  // OpenSSL's SSL_CTX

namespace ringmta::tls {

// RFC 8446 / RFC 5246. SSLv3, TLS 1.0 and 1.1 are never offered (RFC 8996).
enum class version : std::uint8_t { tls1_2, tls1_3 };
// "TLS1.2", "TLSv1.2", "1.2" (any case); false when not one of them.
bool parse_version(std::string_view text, version& out) noexcept;
std::string_view describe(version v) noexcept;

// Mozilla's "intermediate" TLS 1.2 list (ECDHE with AEAD only: no CBC, no RSA key exchange, no
// DHE that would need parameters), and OpenSSL's TLS 1.3 suites in its own order.
inline constexpr std::string_view default_ciphers =
    "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"
    "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305:"
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256";
inline constexpr std::string_view default_ciphersuites =
    "TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256:TLS_AES_128_GCM_SHA256";

// Session ticket keys for the whole process (all shards, every server_context made from it,
// so tickets survive a reload). A key encrypts new tickets for `period_s` after it was made and
// still decrypts for one more period, so a key lives at most 2 × period_s; older keys are
// erased from memory by rotate_if_due() (forward secrecy of resumed sessions is bounded by it).
// Lock-free: readers on any shard copy a slot under its sequence number; rotation (any thread,
// one at a time through a flag) overwrites the oldest of four slots, which no reader can still
// be using unless it stalled for two periods.
class ticket_key_ring {
 public:
  struct key {
    std::array<unsigned char, 16> name;
    std::array<unsigned char, 32> aes;   // AES-256-CBC
    std::array<unsigned char, 32> hmac;  // HMAC-SHA256
    std::int64_t created_s = 0;
  };
  explicit ticket_key_ring(std::uint32_t period_s = 3600) noexcept;
  std::uint32_t period_s() const noexcept { return _period_s; }
  // Makes a new current key when the current one is `period_s` old (or there is none); returns
  // whether it did. Cheap when nothing is due; call it from a timer and before encrypting.
  bool rotate_if_due(std::int64_t now_s) noexcept;
  // The key to encrypt a new ticket with. False if none (the random generator failed).
  bool current(std::int64_t now_s, key& out) const noexcept;
  // The key named `name` if it may still decrypt at now_s; `renew` when it is not the current
  // one (the client then gets a fresh ticket).
  bool find(const unsigned char* name, std::int64_t now_s, key& out, bool& renew) const noexcept;
  std::uint64_t rotations() const noexcept { return _rotations.load(std::memory_order_relaxed); }

 private:
  static constexpr std::size_t slot_count = 4;
  static constexpr std::size_t words = 11;  // 80 octets of key material + created_s
  struct slot {
    std::atomic<std::uint32_t> sequence{0};  // odd while being written
    std::array<std::atomic<std::uint64_t>, words> data{};
  };
  bool read(std::size_t index, key& out) const noexcept;
  void write(std::size_t index, const key& k) noexcept;

  std::uint32_t _period_s;
  std::array<slot, slot_count> _slots;
  std::atomic<std::uint64_t> _generation{0};  // slot of the current key = generation % 4
  std::atomic<bool> _rotating{false};
  std::atomic<std::uint64_t> _rotations{0};
};

struct certificate_pair {
  std::string certificate_file;  // PEM: the certificate, then its chain
  std::string key_file;          // PEM private key (RSA, ECDSA or Ed25519)
};

struct server_settings {
  std::vector<certificate_pair> certificates;  // at most one per key type
  version min_version = version::tls1_2;
  std::string ciphers{default_ciphers};            // TLS 1.2 (OpenSSL cipher list syntax)
  std::string ciphersuites{default_ciphersuites};  // TLS 1.3
  bool ask_client_certificate = false;  // request one (never required, never verified)
  std::uint32_t tickets_per_handshake = 1;  // TLS 1.3 NewSessionTicket messages; 0: no resumption
};

class server_context {
 public:
  ~server_context();
  server_context(const server_context&) = delete;
  server_context& operator=(const server_context&) = delete;

  ssl_ctx_st* native() const noexcept { return _ctx; }
  const ticket_key_ring& ticket_keys() const noexcept { return *_keys; }
  ticket_key_ring& ticket_keys_mutable() const noexcept { return *_keys; }
  // For a reload: the new context shares the ring, so tickets stay valid.
  std::shared_ptr<ticket_key_ring> ticket_key_ring_shared() const noexcept { return _keys; }
  // "ECDSA P-256 + RSA 2048" for the start-up log.
  const std::string& description() const noexcept { return _description; }

 private:
  friend struct server_context_loader;
  server_context() = default;
  ssl_ctx_st* _ctx = nullptr;
  std::shared_ptr<ticket_key_ring> _keys;
  std::string _description;
};

struct server_load_result {
  std::shared_ptr<const server_context> context;  // null on error
  std::string error;  // "FILE: what is wrong" when context is null
};
// Reads and checks every pair (readable, parseable, key matches certificate, one per key type),
// then builds the context. Blocking (file reads): start-up or a reload thread only.
server_load_result load_server_context(const server_settings& settings,
                                       std::shared_ptr<ticket_key_ring> keys);

struct client_settings {
  // PEM bundle; empty: the system store, read from its bundle file (SSL_CERT_FILE or
  // OpenSSL's default, /usr/lib/ssl/cert.pem), never looked up on disk per connection.
  std::string ca_file;
  // With an empty ca_file: whether a missing system bundle is an error. False for callers
  // that never demand verification (opportunistic TLS): nothing then verifies.
  bool ca_required = true;
  version min_version = version::tls1_2;
  std::string ciphers{default_ciphers};
  std::string ciphersuites{default_ciphersuites};
};

class client_context {
 public:
  ~client_context();
  client_context(const client_context&) = delete;
  client_context& operator=(const client_context&) = delete;
  ssl_ctx_st* native() const noexcept { return _ctx; }

 private:
  friend struct client_context_loader;
  client_context() = default;
  ssl_ctx_st* _ctx = nullptr;
};

struct client_load_result {
  std::shared_ptr<const client_context> context;
  std::string error;
};
client_load_result load_client_context(const client_settings& settings);

// The OpenSSL error queue as one line ("reason; reason"), then cleared. Start-up and tests.
std::string take_openssl_errors();

}  // namespace ringmta::tls
