// tls::session: one TLS connection (server or client role) as a sans-IO state machine over
// OpenSSL 3.0. Ciphertext in, plaintext out; plaintext in, ciphertext out. The embedder (the
// inbound connection, outbound delivery, ringmta-blast, ringmta-sink) owns the socket and moves
// the bytes with the ring; this object never makes an I/O syscall, never blocks, never logs.
//
// How a connection drives it (both roles; the client's first flight exists right after
// connect(), the server's after the ClientHello is fed):
//
//   on receive(bytes):  n = s.feed(bytes)        // keep bytes[n..] and feed them again later
//                       engine.feed(s.plaintext()); s.consume_plaintext(what the engine took)
//   to send plaintext:  n = s.write(text)        // may take fewer: send ciphertext, retry
//   whenever:           if (!s.ciphertext().empty()) send it; s.consume_ciphertext(sent)
//   state():            handshake → established → closed, or → failed (error() says why)
//
// feed() consumes input only while the plaintext staging has room: a peer that sends faster
// than the engine reads is held back in the embedder's receive buffer (TCP flow control), never
// in growing memory. After the engine consumed plaintext, feed({}) continues with what OpenSSL
// already holds. Memory is bounded: a 16 KiB plaintext staging buffer and a 20 KiB ciphertext
// buffer, both allocated on first use and released by trim() when empty (an idle TLS connection
// keeps only OpenSSL's own state: SSL_MODE_RELEASE_BUFFERS frees its record buffers too).
//
// The BIO is our own (not a BIO_s_mem pair): it reads straight from the view given to feed()
// and writes into the fixed ciphertext buffer, so no unbounded BUF_MEM grows behind our back,
// ciphertext is copied once less, and "how much did you take" is exact (docs/notes.md).
//
// Invariants: state transitions are asserted (failed and closed are final); plaintext and
// ciphertext views are valid until the next call into the session; write() never makes
// OpenSSL hold a half-written record (it encrypts only what fits the ciphertext buffer), so it
// never has to be retried with the same arguments. Peer misbehaviour is error() (a value),
// never an assertion.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>

#include "ringmta/tls/context.h"

struct ssl_st;          // OpenSSL's SSL
struct ssl_session_st;  // OpenSSL's SSL_SESSION

namespace ringmta::tls {

enum class state : std::uint8_t {
  handshake,    // keys being agreed; plaintext() stays empty
  established,  // application data both ways
  closed,       // the peer sent close_notify (or we did and it answered): no more data
  failed,       // fatal error (error() says why): send ciphertext() (an alert), then close
};
std::string_view describe(state s) noexcept;

// Why a session failed: the reasons /metrics counts handshake failures by.
enum class failure : std::uint8_t {
  none,
  protocol,          // malformed records or messages (garbage, plaintext where TLS is due)
  version,           // no protocol version in common (e.g. a TLS 1.0 client)
  cipher,            // no cipher suite or group in common
  certificate,       // the peer's certificate failed verification (chain or host name)
  alert,             // the peer aborted with an alert
  truncated,         // the peer's data ended without close_notify during the handshake
  internal,          // out of memory, random generator, or another local problem
  count_
};
std::string_view describe(failure f) noexcept;

// Per-shard cache of client sessions for resumption (TLS 1.3 tickets, TLS 1.2 tickets), one
// per destination key (e.g. the MX host name). Bounded: at capacity, the entry least recently
// stored is dropped. Owned and used by one shard's thread only.
class client_session_cache {
 public:
  explicit client_session_cache(std::size_t entries_max = 1024);
  ~client_session_cache();
  client_session_cache(const client_session_cache&) = delete;
  client_session_cache& operator=(const client_session_cache&) = delete;

  // A session still valid for `key` at `now_s` (borrowed: valid until the next store or
  // erase), or null: not past its timeout nor its server certificate's end (a resumption
  // shows no certificate). now_s 0: no timeout check, the certificate at the machine's time.
  ssl_session_st* find(std::string_view key, std::int64_t now_s) noexcept;
  // Takes ownership of one reference to `session`, valid for its timeout from `now_s`. Expiry
  // is measured on the caller's clock (the shard's), not on the time OpenSSL stamped into the
  // session (its own clock): a cache must not mix two clocks (in the simulation they differ,
  // and no session was ever resumed). now_s 0: from OpenSSL's stamp.
  void store(std::string_view key, ssl_session_st* session, std::int64_t now_s) noexcept;
  void erase(std::string_view key) noexcept;
  void clear() noexcept;  // every session (a new trust store: none may resume unchecked)
  std::size_t size() const noexcept { return _entries.size(); }

 private:
  struct entry {
    ssl_session_st* session = nullptr;
    std::uint64_t stored = 0;     // store() count: the oldest entry goes first
    std::int64_t expires_s = 0;   // on the clock of store()'s now_s
  };
  std::unordered_map<std::string, entry> _entries;
  std::size_t _entries_max;
  std::uint64_t _clock = 0;
};

struct client_options {
  std::string_view host;       // SNI (unless an address literal) and the RFC 6125 name checked
  bool verify = false;         // fail the handshake unless chain and host name verify
  client_session_cache* cache = nullptr;  // resume from / store into it (may be null)
  std::string_view cache_key;  // defaults to host
  std::int64_t now_s = 0;      // cache expiry, certificate validity; 0: OpenSSL's clock
};

class session {
 public:
  static constexpr std::size_t plaintext_capacity = 16 * 1024;
  static constexpr std::size_t ciphertext_capacity = 20 * 1024;

  // Server role. Null when OpenSSL cannot allocate (the embedder closes the connection).
  static std::unique_ptr<session> accept(std::shared_ptr<const server_context> context) noexcept;
  // Client role; ciphertext() holds the ClientHello on return.
  static std::unique_ptr<session> connect(std::shared_ptr<const client_context> context,
                                          const client_options& options) noexcept;
  ~session();
  session(const session&) = delete;
  session& operator=(const session&) = delete;

  // Ciphertext received from the peer; returns how many octets were taken (see above).
  std::size_t feed(std::string_view ciphertext) noexcept;
  std::string_view plaintext() const noexcept {
    return {_buffers ? _buffers->plain + _plain_begin : nullptr, _plain_end - _plain_begin};
  }
  void consume_plaintext(std::size_t bytes) noexcept;

  // Encrypts application data; returns how many octets were taken (0 when the ciphertext buffer
  // is full: send it first). Only when established().
  std::size_t write(std::string_view plaintext) noexcept;
  std::string_view ciphertext() const noexcept {
    return {_buffers ? _buffers->cipher + _cipher_begin : nullptr, _cipher_end - _cipher_begin};
  }
  void consume_ciphertext(std::size_t bytes) noexcept;

  // Sends close_notify (RFC 8446 §6.1); the state becomes closed.
  void close() noexcept;
  // The peer's TCP stream ended: during the handshake a failure (truncated), afterwards closed.
  void end_of_input() noexcept;
  // Frees the staging buffers while both are empty (the connection is idle).
  void trim() noexcept;

  tls::state state() const noexcept { return _state; }
  bool established() const noexcept { return _state == tls::state::established; }
  // The handshake finished (even if the peer closed at once, in the same flight).
  bool handshake_completed() const noexcept { return _handshake_completed; }
  failure error() const noexcept { return _error; }
  // OpenSSL's reason for a failure ("wrong version number", "certificate verify failed: ...").
  std::string_view error_detail() const noexcept { return _detail; }

  // Known once established.
  std::string_view protocol() const noexcept;  // "TLSv1.3"
  std::string_view cipher() const noexcept;    // "TLS_AES_256_GCM_SHA384"
  int cipher_bits(int* algorithm_bits = nullptr) const noexcept;
  bool resumed() const noexcept;
  bool peer_certificate() const noexcept;  // the peer presented one
  bool peer_verified() const noexcept;     // ... and it verified (chain + host name if given)
  bool is_server() const noexcept { return _server; }
  // The SSL itself, for diagnostics and tests only (never to drive I/O).
  ssl_st* native() const noexcept { return _ssl; }

  // For the OpenSSL callbacks (session.cc).
  void on_new_client_session(ssl_session_st* s) noexcept;

 private:
  struct buffers {
    char plain[plaintext_capacity];
    char cipher[ciphertext_capacity];
  };
  session() = default;
  bool ensure_buffers() noexcept;
  void advance() noexcept;
  void handshake_step() noexcept;
  void read_step() noexcept;
  void fail(failure reason) noexcept;
  void set_state(tls::state next) noexcept;
  friend struct bio_access;

  ssl_st* _ssl = nullptr;
  std::shared_ptr<const server_context> _server_context;
  std::shared_ptr<const client_context> _client_context;
  client_session_cache* _cache = nullptr;
  std::string _cache_key;
  std::int64_t _now_s = 0;  // client_options::now_s: when a new session is stored
  std::unique_ptr<buffers> _buffers;
  // The view feed() was given, read by the BIO.
  const char* _input = nullptr;
  std::size_t _input_size = 0;
  std::size_t _input_taken = 0;
  std::size_t _plain_begin = 0, _plain_end = 0;
  std::size_t _cipher_begin = 0, _cipher_end = 0;
  tls::state _state = tls::state::handshake;
  failure _error = failure::none;
  bool _server = false;
  bool _want_write = false;
  bool _handshake_completed = false;  // OpenSSL stopped because the ciphertext buffer was full
  std::string_view _detail;  // static text from OpenSSL's error tables
};

}  // namespace ringmta::tls
