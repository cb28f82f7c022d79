// tls::session over OpenSSL with our own BIO (tls/session.h), and the client session cache.
#include "ringmta/tls/session.h"

#include <arpa/inet.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <algorithm>
#include <cstring>
#include <ctime>
#include <new>

#include "ringmta/core/assert.h"
#include "tls_internal.h"

namespace ringmta::tls {

namespace {
// The largest record expansion write() leaves room for: header, IV, MAC, padding, tag.
constexpr std::size_t record_overhead_max = 512;
constexpr std::size_t record_plaintext_max = 16384;  // RFC 8446 §5.1
}  // namespace

std::string_view describe(state s) noexcept {
  switch (s) {
    case state::handshake: return "handshake";
    case state::established: return "established";
    case state::closed: return "closed";
    case state::failed: return "failed";
  }
  return "?";
}

std::string_view describe(failure f) noexcept {
  switch (f) {
    case failure::none: return "none";
    case failure::protocol: return "protocol";
    case failure::version: return "version";
    case failure::cipher: return "cipher";
    case failure::certificate: return "certificate";
    case failure::alert: return "alert";
    case failure::truncated: return "truncated";
    case failure::internal: return "internal";
    case failure::count_: break;
  }
  return "?";
}

// ---- the BIO: reads the view given to feed(), writes into the ciphertext buffer

struct bio_access {
  static session& of(BIO* bio) noexcept { return *static_cast<session*>(BIO_get_data(bio)); }

  static int read(BIO* bio, char* out, std::size_t wanted, std::size_t* got) {
    session& s = of(bio);
    BIO_clear_retry_flags(bio);
    const std::size_t available = s._input_size - s._input_taken;
    if (available == 0) {
      BIO_set_retry_read(bio);
      *got = 0;
      return 0;
    }
    const std::size_t n = std::min(wanted, available);
    std::memcpy(out, s._input + s._input_taken, n);
    s._input_taken += n;
    *got = n;
    return 1;
  }

  static int write(BIO* bio, const char* in, std::size_t length, std::size_t* put) {
    session& s = of(bio);
    BIO_clear_retry_flags(bio);
    *put = 0;
    if (!s.ensure_buffers()) return 0;
    // Ciphertext never moves while queued (the embedder may be sending from it): appends go
    // to the tail, and the buffer restarts only once it was drained.
    if (s._cipher_begin == s._cipher_end) s._cipher_begin = s._cipher_end = 0;
    const std::size_t room = session::ciphertext_capacity - s._cipher_end;
    if (room == 0) {
      s._want_write = true;
      BIO_set_retry_write(bio);
      return 0;
    }
    const std::size_t n = std::min(room, length);
    std::memcpy(s._buffers->cipher + s._cipher_end, in, n);
    s._cipher_end += n;
    *put = n;
    return 1;
  }

  static long control(BIO*, int command, long, void*) {
    return command == BIO_CTRL_FLUSH ? 1 : 0;  // nothing is buffered inside the BIO
  }

  static int create(BIO* bio) {
    BIO_set_init(bio, 1);
    return 1;
  }

  static BIO_METHOD* method() noexcept {
    static BIO_METHOD* const m = [] {
      BIO_METHOD* made = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "ringmta");
      RINGMTA_ASSERT(made != nullptr);
      BIO_meth_set_read_ex(made, read);
      BIO_meth_set_write_ex(made, write);
      BIO_meth_set_ctrl(made, control);
      BIO_meth_set_create(made, create);
      return made;
    }();
    return m;
  }

  // SSL_new + our BIO + the back pointer; false when OpenSSL is out of memory.
  static bool attach(session& s, SSL_CTX* ctx) noexcept {
    s._ssl = SSL_new(ctx);
    if (s._ssl == nullptr) return false;
    BIO* bio = BIO_new(method());
    if (bio == nullptr) return false;
    BIO_set_data(bio, &s);
    SSL_set_bio(s._ssl, bio, bio);  // one reference, owned by the SSL
    SSL_set_ex_data(s._ssl, detail::session_ex_index(), &s);
    return true;
  }
};

namespace detail {

int session_ex_index() noexcept {
  static const int index = SSL_get_ex_new_index(0, nullptr, nullptr, nullptr, nullptr);
  return index;
}

int on_new_client_session(SSL* ssl, SSL_SESSION* received) {
  auto* owner = static_cast<session*>(SSL_get_ex_data(ssl, session_ex_index()));
  if (owner == nullptr) return 0;
  owner->on_new_client_session(received);
  return 1;  // we keep the reference (or released it)
}

}  // namespace detail

// ---- creation

std::unique_ptr<session> session::accept(std::shared_ptr<const server_context> context) noexcept {
  RINGMTA_ASSERT(context != nullptr);
  std::unique_ptr<session> s(new (std::nothrow) session());
  if (!s) return nullptr;
  s->_server = true;
  s->_server_context = std::move(context);
  if (!bio_access::attach(*s, s->_server_context->native())) return nullptr;
  SSL_set_accept_state(s->_ssl);
  return s;
}

namespace {
bool is_address_literal(const std::string& host) noexcept {
  unsigned char address[16];
  return inet_pton(AF_INET, host.c_str(), address) == 1 ||
         inet_pton(AF_INET6, host.c_str(), address) == 1;
}

// A resumption shows no certificate: a session whose server certificate has ended since it was
// verified must not be resumed, or the client goes on trusting a certificate it would refuse
// now (RFC 8446 §4.6.1 lets a ticket live up to 7 days; certificates end inside that): the
// cache drops it like an expired entry, and a full handshake checks the certificate. At the
// caller's time (now_s, the shard's clock), else the machine's.
bool peer_certificate_current(SSL_SESSION* cached, std::int64_t now_s) noexcept {
  const X509* peer = SSL_SESSION_get0_peer(cached);
  if (peer == nullptr) return true;
  std::time_t at = now_s > 0 ? static_cast<std::time_t>(now_s) : std::time(nullptr);
  return X509_cmp_time(X509_get0_notAfter(peer), &at) > 0;
}

}  // namespace

std::unique_ptr<session> session::connect(std::shared_ptr<const client_context> context,
                                          const client_options& options) noexcept {
  RINGMTA_ASSERT(context != nullptr);
  std::unique_ptr<session> s(new (std::nothrow) session());
  if (!s) return nullptr;
  s->_client_context = std::move(context);
  if (!bio_access::attach(*s, s->_client_context->native())) return nullptr;
  SSL* ssl = s->_ssl;
  SSL_set_connect_state(ssl);
  std::string host(options.host);
  if (!host.empty() && host.back() == '.') host.pop_back();  // an MX name as DNS gives it
  if (!host.empty()) {
    const bool literal = is_address_literal(host);
    // RFC 6066 §3: SNI carries host names only, never address literals.
    if (!literal) SSL_set_tlsext_host_name(ssl, host.c_str());
    // RFC 6125: the name is checked even without `verify`, so peer_verified() can be logged.
    X509_VERIFY_PARAM* param = SSL_get0_param(ssl);
    X509_VERIFY_PARAM_set_hostflags(param, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
    if (literal) X509_VERIFY_PARAM_set1_ip_asc(param, host.c_str());
    else X509_VERIFY_PARAM_set1_host(param, host.c_str(), host.size());
  }
  SSL_set_verify(ssl, options.verify ? SSL_VERIFY_PEER : SSL_VERIFY_NONE, nullptr);
  // Validity periods are checked at the caller's time (the shard's clock, simulated in
  // ringmta-sim), not at a time OpenSSL reads itself: the clock is passed in, never read.
  if (options.now_s > 0) X509_VERIFY_PARAM_set_time(SSL_get0_param(ssl), options.now_s);
  s->_cache = options.cache;
  s->_cache_key = options.cache_key.empty() ? host : std::string(options.cache_key);
  s->_now_s = options.now_s;
  if (s->_cache != nullptr) {
    if (SSL_SESSION* cached = s->_cache->find(s->_cache_key, options.now_s)) {
      SSL_set_session(ssl, cached);
    }
  }
  s->advance();  // the ClientHello
  return s;
}

session::~session() {
  if (_ssl != nullptr) {
    SSL_set_ex_data(_ssl, detail::session_ex_index(), nullptr);
    // SMTP ends with QUIT, rarely with close_notify; without this SSL_free would mark the
    // session (and the tickets cached from it) not resumable. Failed sessions stay marked.
    if (_state != tls::state::failed)
      SSL_set_shutdown(_ssl, SSL_SENT_SHUTDOWN | SSL_RECEIVED_SHUTDOWN);
    SSL_free(_ssl);
  }
}

bool session::ensure_buffers() noexcept {
  if (!_buffers) _buffers.reset(new (std::nothrow) buffers);
  return _buffers != nullptr;
}

void session::trim() noexcept {
  if (_buffers && _plain_begin == _plain_end && _cipher_begin == _cipher_end) {
    _buffers.reset();
    _plain_begin = _plain_end = _cipher_begin = _cipher_end = 0;
  }
}

// ---- state

void session::set_state(tls::state next) noexcept {
  // handshake → established | closed | failed; established → closed | failed; the rest final.
  RINGMTA_ASSERT(_state == tls::state::handshake || _state == tls::state::established);
  RINGMTA_ASSERT(next != tls::state::handshake);
  RINGMTA_ASSERT(next != tls::state::established || _state == tls::state::handshake);
  _state = next;
}

namespace {

failure classify(unsigned long code, SSL* ssl, std::string_view& detail) noexcept {
  const char* reason = ERR_reason_error_string(code);
  detail = reason != nullptr ? reason : "unknown error";
  if (code == 0) return failure::internal;
  if (ERR_GET_LIB(code) != ERR_LIB_SSL) return failure::internal;
  switch (ERR_GET_REASON(code)) {
    case SSL_R_UNSUPPORTED_PROTOCOL:
    case SSL_R_VERSION_TOO_LOW:
    case SSL_R_TLSV1_ALERT_PROTOCOL_VERSION:
      return failure::version;
    case SSL_R_NO_SHARED_CIPHER:
    case SSL_R_NO_CIPHERS_AVAILABLE:
    case SSL_R_NO_SHARED_GROUPS:
    case SSL_R_NO_SUITABLE_KEY_SHARE:
    case SSL_R_NO_SUITABLE_SIGNATURE_ALGORITHM:
      return failure::cipher;
    case SSL_R_CERTIFICATE_VERIFY_FAILED:
      detail = X509_verify_cert_error_string(SSL_get_verify_result(ssl));
      return failure::certificate;
    case SSL_R_SSLV3_ALERT_BAD_CERTIFICATE:
    case SSL_R_SSLV3_ALERT_UNSUPPORTED_CERTIFICATE:
    case SSL_R_SSLV3_ALERT_CERTIFICATE_REVOKED:
    case SSL_R_SSLV3_ALERT_CERTIFICATE_EXPIRED:
    case SSL_R_SSLV3_ALERT_CERTIFICATE_UNKNOWN:
    case SSL_R_TLSV1_ALERT_UNKNOWN_CA:
      return failure::certificate;
    default:
      break;
  }
  if (ERR_GET_REASON(code) >= SSL_AD_REASON_OFFSET) return failure::alert;
  return failure::protocol;
}

}  // namespace

void session::fail(failure reason) noexcept {
  _error = reason;
  set_state(tls::state::failed);
}

void session::handshake_step() noexcept {
  ERR_clear_error();
  const int done = SSL_do_handshake(_ssl);
  if (done == 1) {
    _handshake_completed = true;
    return set_state(tls::state::established);
  }
  const int error = SSL_get_error(_ssl, done);
  if (error == SSL_ERROR_WANT_READ || error == SSL_ERROR_WANT_WRITE) return;
  const failure reason = classify(ERR_peek_last_error(), _ssl, _detail);
  ERR_clear_error();
  fail(reason);
}

void session::read_step() noexcept {
  while (_state == tls::state::established && ensure_buffers()) {
    if (_plain_begin == _plain_end) _plain_begin = _plain_end = 0;
    if (_plain_end == plaintext_capacity && _plain_begin > 0) {  // the engine keeps no pointer
      std::memmove(_buffers->plain, _buffers->plain + _plain_begin, _plain_end - _plain_begin);
      _plain_end -= _plain_begin;
      _plain_begin = 0;
    }
    const std::size_t room = plaintext_capacity - _plain_end;
    if (room == 0) return;  // the engine must take some first
    std::size_t got = 0;
    ERR_clear_error();
    if (SSL_read_ex(_ssl, _buffers->plain + _plain_end, room, &got) == 1) {
      _plain_end += got;
      continue;
    }
    const int error = SSL_get_error(_ssl, 0);
    if (error == SSL_ERROR_WANT_READ || error == SSL_ERROR_WANT_WRITE) return;
    if (error == SSL_ERROR_ZERO_RETURN) return set_state(tls::state::closed);  // close_notify
    const failure reason = classify(ERR_peek_last_error(), _ssl, _detail);
    ERR_clear_error();
    return fail(reason);
  }
  if (_state == tls::state::established && !_buffers) fail(failure::internal);
}

void session::advance() noexcept {
  if (_state == tls::state::handshake) handshake_step();
  if (_state == tls::state::established) read_step();
}

// ---- data

std::size_t session::feed(std::string_view ciphertext) noexcept {
  if (_state == tls::state::failed || _state == tls::state::closed) return ciphertext.size();
  _input = ciphertext.data();
  _input_size = ciphertext.size();
  _input_taken = 0;
  advance();
  const std::size_t taken = _input_taken;
  _input = nullptr;
  _input_size = _input_taken = 0;
  // After a failure or close_notify nothing more is read: the rest is discarded.
  if (_state == tls::state::failed || _state == tls::state::closed) return ciphertext.size();
  return taken;
}

void session::consume_plaintext(std::size_t bytes) noexcept {
  RINGMTA_ASSERT(bytes <= _plain_end - _plain_begin);
  _plain_begin += bytes;
}

void session::consume_ciphertext(std::size_t bytes) noexcept {
  RINGMTA_ASSERT(bytes <= _cipher_end - _cipher_begin);
  _cipher_begin += bytes;
  if (_cipher_begin == _cipher_end) _cipher_begin = _cipher_end = 0;
  if (_want_write) {  // OpenSSL waited for room: let it continue (no new input)
    _want_write = false;
    feed({});
  }
}

std::size_t session::write(std::string_view plaintext) noexcept {
  if (_state != tls::state::established || !ensure_buffers()) return 0;
  std::size_t total = 0;
  while (total < plaintext.size() && _state == tls::state::established) {
    if (_cipher_begin == _cipher_end) _cipher_begin = _cipher_end = 0;
    const std::size_t room = ciphertext_capacity - _cipher_end;
    if (room <= record_overhead_max) break;  // send what is queued first
    const std::size_t chunk =
        std::min({plaintext.size() - total, room - record_overhead_max, record_plaintext_max});
    std::size_t written = 0;
    ERR_clear_error();
    if (SSL_write_ex(_ssl, plaintext.data() + total, chunk, &written) == 1) {
      total += written;
      continue;
    }
    // A record that did not fit would have to be retried with the same arguments; the room
    // check above rules that out, so any failure here is final.
    const int error = SSL_get_error(_ssl, 0);
    const failure reason = error == SSL_ERROR_WANT_WRITE || error == SSL_ERROR_WANT_READ
                               ? failure::internal
                               : classify(ERR_peek_last_error(), _ssl, _detail);
    ERR_clear_error();
    fail(reason);
  }
  return total;
}

void session::close() noexcept {
  if (_state == tls::state::established) {
    ERR_clear_error();
    SSL_shutdown(_ssl);  // queues close_notify (RFC 8446 §6.1); its answer is not awaited
    ERR_clear_error();
    set_state(tls::state::closed);
  } else if (_state == tls::state::handshake) {
    set_state(tls::state::closed);
  }
}

void session::end_of_input() noexcept {
  if (_state == tls::state::handshake) {
    _detail = "connection closed during the handshake";
    fail(failure::truncated);
  } else if (_state == tls::state::established) {
    set_state(tls::state::closed);  // without close_notify: SMTP's own QUIT ends the data
  }
}

// ---- what was agreed

std::string_view session::protocol() const noexcept {
  return _state == tls::state::handshake ? std::string_view() : SSL_get_version(_ssl);
}

std::string_view session::cipher() const noexcept {
  const SSL_CIPHER* c = SSL_get_current_cipher(_ssl);
  return c != nullptr ? SSL_CIPHER_get_name(c) : "";
}

int session::cipher_bits(int* algorithm_bits) const noexcept {
  const SSL_CIPHER* c = SSL_get_current_cipher(_ssl);
  int algorithm = 0;
  const int bits = c != nullptr ? SSL_CIPHER_get_bits(c, &algorithm) : 0;
  if (algorithm_bits != nullptr) *algorithm_bits = algorithm;
  return bits;
}

bool session::resumed() const noexcept { return SSL_session_reused(_ssl) == 1; }

bool session::peer_certificate() const noexcept {
  return SSL_get0_peer_certificate(_ssl) != nullptr;
}

bool session::peer_verified() const noexcept {
  return peer_certificate() && SSL_get_verify_result(_ssl) == X509_V_OK;
}

void session::on_new_client_session(ssl_session_st* received) noexcept {
  if (_cache == nullptr || _cache_key.empty()) {
    SSL_SESSION_free(received);
    return;
  }
  _cache->store(_cache_key, received, _now_s);
}

// ---- client_session_cache

client_session_cache::client_session_cache(std::size_t entries_max)
    : _entries_max(entries_max == 0 ? 1 : entries_max) {
  _entries.reserve(_entries_max);
}

client_session_cache::~client_session_cache() { clear(); }

ssl_session_st* client_session_cache::find(std::string_view key, std::int64_t now_s) noexcept {
  const auto found = _entries.find(std::string(key));
  if (found == _entries.end()) return nullptr;
  SSL_SESSION* s = found->second.session;
  if (SSL_SESSION_is_resumable(s) != 1 || (now_s != 0 && now_s >= found->second.expires_s) ||
      !peer_certificate_current(s, now_s)) {
    SSL_SESSION_free(s);
    _entries.erase(found);
    return nullptr;
  }
  return s;
}

void client_session_cache::store(std::string_view key, ssl_session_st* session,
                                 std::int64_t now_s) noexcept {
  const std::int64_t from = now_s != 0 ? now_s : static_cast<std::int64_t>(SSL_SESSION_get_time(session));
  const std::int64_t expires_s = from + static_cast<std::int64_t>(SSL_SESSION_get_timeout(session));
  std::string name(key);
  auto found = _entries.find(name);
  if (found != _entries.end()) {
    SSL_SESSION_free(found->second.session);
    found->second = {session, ++_clock, expires_s};
    return;
  }
  if (_entries.size() >= _entries_max) {  // drop the entry stored longest ago
    auto oldest = std::min_element(_entries.begin(), _entries.end(), [](auto& a, auto& b) {
      return a.second.stored < b.second.stored;
    });
    SSL_SESSION_free(oldest->second.session);
    _entries.erase(oldest);
  }
  _entries.emplace(std::move(name), entry{session, ++_clock, expires_s});
}

void client_session_cache::clear() noexcept {
  for (auto& [key, e] : _entries) SSL_SESSION_free(e.session);
  _entries.clear();
}

void client_session_cache::erase(std::string_view key) noexcept {
  const auto found = _entries.find(std::string(key));
  if (found == _entries.end()) return;
  SSL_SESSION_free(found->second.session);
  _entries.erase(found);
}

}  // namespace ringmta::tls
