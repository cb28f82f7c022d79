// Server and client contexts, and the process-wide ticket key ring (tls/context.h).
#include "ringmta/tls/context.h"

#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <algorithm>
#include <cstring>
#include <ctime>

#include <fmt/format.h>

#include "ringmta/core/assert.h"
#include "tls_internal.h"

namespace ringmta::tls {

bool parse_version(std::string_view text, version& out) noexcept {
  std::string lower;
  for (const char c : text) lower += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  if (lower == "tls1.2" || lower == "tlsv1.2" || lower == "1.2") {
    out = version::tls1_2;
    return true;
  }
  if (lower == "tls1.3" || lower == "tlsv1.3" || lower == "1.3") {
    out = version::tls1_3;
    return true;
  }
  return false;
}

std::string_view describe(version v) noexcept {
  return v == version::tls1_3 ? "TLSv1.3" : "TLSv1.2";
}

std::string take_openssl_errors() {
  std::string out;
  unsigned long code = 0;
  while ((code = ERR_get_error()) != 0) {
    const char* reason = ERR_reason_error_string(code);
    if (!out.empty()) out += "; ";
    out += reason != nullptr ? reason : fmt::format("error {:#x}", code);
  }
  return out.empty() ? std::string("unknown OpenSSL error") : out;
}

// ---- ticket_key_ring

ticket_key_ring::ticket_key_ring(std::uint32_t period_s) noexcept
    : _period_s(period_s == 0 ? 1 : period_s) {}

bool ticket_key_ring::read(std::size_t index, key& out) const noexcept {
  const slot& s = _slots[index % slot_count];
  for (int attempt = 0; attempt < 64; ++attempt) {
    const std::uint32_t before = s.sequence.load(std::memory_order_acquire);
    if (before == 0) return false;  // never written
    if (before & 1u) continue;      // being written
    std::uint64_t words_out[words];
    for (std::size_t i = 0; i < words; ++i)
      words_out[i] = s.data[i].load(std::memory_order_relaxed);
    std::atomic_thread_fence(std::memory_order_acquire);
    if (s.sequence.load(std::memory_order_relaxed) != before) continue;
    std::memcpy(out.name.data(), words_out, 16);
    std::memcpy(out.aes.data(), reinterpret_cast<const char*>(words_out) + 16, 32);
    std::memcpy(out.hmac.data(), reinterpret_cast<const char*>(words_out) + 48, 32);
    out.created_s = static_cast<std::int64_t>(words_out[10]);
    return true;
  }
  return false;
}

void ticket_key_ring::write(std::size_t index, const key& k) noexcept {
  slot& s = _slots[index % slot_count];
  std::uint64_t words_in[words];
  std::memcpy(words_in, k.name.data(), 16);
  std::memcpy(reinterpret_cast<char*>(words_in) + 16, k.aes.data(), 32);
  std::memcpy(reinterpret_cast<char*>(words_in) + 48, k.hmac.data(), 32);
  words_in[10] = static_cast<std::uint64_t>(k.created_s);
  const std::uint32_t before = s.sequence.load(std::memory_order_relaxed);
  s.sequence.store(before + 1, std::memory_order_relaxed);  // odd: readers retry
  std::atomic_thread_fence(std::memory_order_release);
  for (std::size_t i = 0; i < words; ++i) s.data[i].store(words_in[i], std::memory_order_relaxed);
  s.sequence.store(before + 2, std::memory_order_release);
}

bool ticket_key_ring::rotate_if_due(std::int64_t now_s) noexcept {
  const std::uint64_t generation = _generation.load(std::memory_order_acquire);
  key latest{};
  const bool have = generation > 0 && read(generation, latest);
  if (have && now_s - latest.created_s < _period_s && now_s >= latest.created_s) return false;
  bool expected = false;
  if (!_rotating.compare_exchange_strong(expected, true, std::memory_order_acquire)) return false;
  key fresh{};
  fresh.created_s = now_s;
  const bool random = RAND_bytes(fresh.name.data(), 16) == 1 &&
                      RAND_bytes(fresh.aes.data(), 32) == 1 &&
                      RAND_bytes(fresh.hmac.data(), 32) == 1;
  if (random && _generation.load(std::memory_order_relaxed) == generation) {
    write(generation + 1, fresh);  // the oldest slot: its key expired two periods ago
    _generation.store(generation + 1, std::memory_order_release);
    _rotations.fetch_add(1, std::memory_order_relaxed);
    // Erase the keys before the previous one from memory (forward secrecy): only the new
    // key and the previous one may decrypt.
    const key zero{};
    for (const std::uint64_t g : {generation - 1, generation - 2}) {
      if (g > 0 && g < generation) write(g, zero);  // (unsigned: g < generation skips wraps)
    }
  }
  OPENSSL_cleanse(&fresh, sizeof fresh);
  _rotating.store(false, std::memory_order_release);
  return random;
}

bool ticket_key_ring::current(std::int64_t now_s, key& out) const noexcept {
  const std::uint64_t generation = _generation.load(std::memory_order_acquire);
  if (generation == 0 || !read(generation, out)) return false;
  return out.created_s != 0 && now_s - out.created_s < 2 * std::int64_t{_period_s};
}

bool ticket_key_ring::find(const unsigned char* name, std::int64_t now_s, key& out,
                           bool& renew) const noexcept {
  const std::uint64_t generation = _generation.load(std::memory_order_acquire);
  for (std::uint64_t back = 0; back < 2 && back < generation; ++back) {
    if (!read(generation - back, out) || out.created_s == 0) continue;
    if (std::memcmp(out.name.data(), name, 16) != 0) continue;
    // A key decrypts for two periods after it was made: the bound on a ticket's lifetime.
    if (now_s - out.created_s >= 2 * std::int64_t{_period_s}) return false;
    renew = back != 0;
    return true;
  }
  return false;
}

// ---- the ticket callback (RFC 5077 §4 format, OpenSSL's EVP interface)

namespace {

int ticket_ex_index() {
  static const int index = SSL_CTX_get_ex_new_index(0, nullptr, nullptr, nullptr, nullptr);
  return index;
}

int ticket_callback(SSL* ssl, unsigned char key_name[16], unsigned char* iv,
                    EVP_CIPHER_CTX* cipher, EVP_MAC_CTX* mac, int encrypt) {
  auto* ring = static_cast<ticket_key_ring*>(
      SSL_CTX_get_ex_data(SSL_get_SSL_CTX(ssl), ticket_ex_index()));
  if (ring == nullptr) return -1;
  const std::int64_t now = static_cast<std::int64_t>(std::time(nullptr));
  ticket_key_ring::key k{};
  int result = 1;
  if (encrypt) {
    ring->rotate_if_due(now);
    if (!ring->current(now, k) || RAND_bytes(iv, EVP_MAX_IV_LENGTH) != 1) return -1;
    std::memcpy(key_name, k.name.data(), 16);
    if (EVP_EncryptInit_ex(cipher, EVP_aes_256_cbc(), nullptr, k.aes.data(), iv) != 1)
      result = -1;
  } else {
    bool renew = false;
    if (!ring->find(key_name, now, k, renew)) return 0;  // unknown or expired: full handshake
    // 2: valid, and the client gets a fresh ticket. Always: OpenSSL's TLS 1.3 client does not
    // reuse a ticket (RFC 8446 §C.4), so without a new one the next connection would pay a
    // full handshake; with it, an injector resumes on every connection. (`renew` would ask
    // for this only when the key is the previous one.)
    (void)renew;
    if (EVP_DecryptInit_ex(cipher, EVP_aes_256_cbc(), nullptr, k.aes.data(), iv) != 1)
      result = -1;
    else result = 2;
  }
  OSSL_PARAM params[] = {
      OSSL_PARAM_construct_octet_string(OSSL_MAC_PARAM_KEY, k.hmac.data(), k.hmac.size()),
      OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, const_cast<char*>("SHA256"), 0),
      OSSL_PARAM_construct_end()};
  if (result > 0 && EVP_MAC_CTX_set_params(mac, params) != 1) result = -1;
  OPENSSL_cleanse(&k, sizeof k);
  return result;
}

int proto_version(version v) { return v == version::tls1_3 ? TLS1_3_VERSION : TLS1_2_VERSION; }

// Shared by both roles: version floor, cipher lists, modes.
std::string configure_common(SSL_CTX* ctx, version min_version, const std::string& ciphers,
                             const std::string& suites) {
  SSL_CTX_set_min_proto_version(ctx, proto_version(min_version));
  // Renegotiation is an attack surface with no use in SMTP; compression enables CRIME.
  SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION |
                               SSL_OP_CIPHER_SERVER_PREFERENCE);
  // Idle connections give their record buffers back; write() may take less than offered.
  SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS | SSL_MODE_ENABLE_PARTIAL_WRITE |
                            SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
  if (!ciphers.empty() && SSL_CTX_set_cipher_list(ctx, ciphers.c_str()) != 1)
    return fmt::format("ciphers '{}': {}", ciphers, take_openssl_errors());
  if (!suites.empty() && SSL_CTX_set_ciphersuites(ctx, suites.c_str()) != 1)
    return fmt::format("ciphersuites '{}': {}", suites, take_openssl_errors());
  return {};
}

std::string describe_key(EVP_PKEY* key) {
  const int id = EVP_PKEY_get_base_id(key);
  if (id == EVP_PKEY_RSA) return fmt::format("RSA {}", EVP_PKEY_get_bits(key));
  if (id == EVP_PKEY_EC) {
    char group[64] = {};
    std::size_t length = 0;
    EVP_PKEY_get_utf8_string_param(key, OSSL_PKEY_PARAM_GROUP_NAME, group, sizeof group, &length);
    return fmt::format("ECDSA {}", group);
  }
  if (id == EVP_PKEY_ED25519) return "Ed25519";
  return fmt::format("key type {}", id);
}

// Opens `path` for a PEM read; a clear text when it cannot.
std::FILE* open_pem(const std::string& path, std::string& error) {
  std::FILE* file = std::fopen(path.c_str(), "r");
  if (file == nullptr) error = fmt::format("{}: cannot read: {}", path, std::strerror(errno));
  return file;
}

}  // namespace

struct server_context_loader {
  static std::string add_pair(server_context& c, const certificate_pair& pair,
                              std::vector<int>& key_types) {
    SSL_CTX* ctx = c._ctx;
    std::string error;
    std::FILE* key_file = open_pem(pair.key_file, error);
    if (key_file == nullptr) return error;
    EVP_PKEY* key = PEM_read_PrivateKey(key_file, nullptr, nullptr, nullptr);
    std::fclose(key_file);
    if (key == nullptr) {
      ERR_clear_error();
      return fmt::format("{}: not a PEM private key (or it is encrypted)", pair.key_file);
    }
    std::FILE* probe = open_pem(pair.certificate_file, error);
    if (probe == nullptr) {
      EVP_PKEY_free(key);
      return error;
    }
    std::fclose(probe);
    if (SSL_CTX_use_certificate_chain_file(ctx, pair.certificate_file.c_str()) != 1) {
      EVP_PKEY_free(key);
      return fmt::format("{}: not a PEM certificate chain: {}", pair.certificate_file,
                         take_openssl_errors());
    }
    const int type = EVP_PKEY_get_base_id(key);
    for (const int seen : key_types) {
      if (seen == type) {
        EVP_PKEY_free(key);
        return fmt::format("{}: a second {} certificate (one per key type: ECDSA, RSA, Ed25519)",
                           pair.certificate_file, describe_key(key).substr(0, 5));
      }
    }
    key_types.push_back(type);
    const bool used = SSL_CTX_use_PrivateKey(ctx, key) == 1 && SSL_CTX_check_private_key(ctx) == 1;
    const std::string described = describe_key(key);
    EVP_PKEY_free(key);
    if (!used) {
      ERR_clear_error();
      return fmt::format("{} and {}: the private key does not match the certificate",
                         pair.key_file, pair.certificate_file);
    }
    c._description += (c._description.empty() ? "" : " + ") + described;
    return {};
  }

  static server_load_result load(const server_settings& settings,
                                 std::shared_ptr<ticket_key_ring> keys) {
    if (settings.certificates.empty()) return {nullptr, "no certificate configured"};
    std::shared_ptr<server_context> c(new server_context());
    c->_keys = keys ? std::move(keys) : std::make_shared<ticket_key_ring>();
    c->_ctx = SSL_CTX_new(TLS_server_method());
    if (c->_ctx == nullptr) return {nullptr, "SSL_CTX_new: " + take_openssl_errors()};
    SSL_CTX* ctx = c->_ctx;
    std::string error = configure_common(ctx, settings.min_version, settings.ciphers,
                                         settings.ciphersuites);
    std::vector<int> key_types;
    for (const auto& pair : settings.certificates) {
      if (!error.empty()) break;
      error = add_pair(*c, pair, key_types);
    }
    if (!error.empty()) return {nullptr, error};
    static const unsigned char context_id[] = "ringmta";
    SSL_CTX_set_session_id_context(ctx, context_id, sizeof context_id - 1);
    // Stateless tickets only: no server-side session cache to lock or grow.
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
    SSL_CTX_set_num_tickets(ctx, settings.tickets_per_handshake);
    if (settings.tickets_per_handshake == 0) SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET);
    SSL_CTX_set_timeout(ctx, 2 * static_cast<long>(c->_keys->period_s()));
    SSL_CTX_set_ex_data(ctx, ticket_ex_index(), c->_keys.get());
    SSL_CTX_set_tlsext_ticket_key_evp_cb(ctx, ticket_callback);
    c->_keys->rotate_if_due(static_cast<std::int64_t>(std::time(nullptr)));
    if (settings.ask_client_certificate) {  // asked, never required, never verified
      SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, [](int, X509_STORE_CTX*) { return 1; });
    }
    return {std::move(c), {}};
  }
};

server_context::~server_context() { SSL_CTX_free(_ctx); }

server_load_result load_server_context(const server_settings& settings,
                                       std::shared_ptr<ticket_key_ring> keys) {
  auto result = server_context_loader::load(settings, std::move(keys));
  ERR_clear_error();
  return result;
}

struct client_context_loader {
  static client_load_result load(const client_settings& settings) {
    std::shared_ptr<client_context> c(new client_context());
    c->_ctx = SSL_CTX_new(TLS_client_method());
    if (c->_ctx == nullptr) return {nullptr, "SSL_CTX_new: " + take_openssl_errors()};
    SSL_CTX* ctx = c->_ctx;
    std::string error = configure_common(ctx, settings.min_version, settings.ciphers,
                                         settings.ciphersuites);
    if (!error.empty()) return {nullptr, error};
    if (!settings.ca_file.empty()) {
      std::FILE* probe = open_pem(settings.ca_file, error);
      if (probe == nullptr) return {nullptr, error};
      std::fclose(probe);
      if (SSL_CTX_load_verify_locations(ctx, settings.ca_file.c_str(), nullptr) != 1)
        return {nullptr, fmt::format("{}: not a PEM CA bundle: {}", settings.ca_file,
                                     take_openssl_errors())};
    } else {
      // The system store as one bundle, read now. Not SSL_CTX_set_default_verify_paths: its
      // hashed directory is searched on disk during each verification (a blocking read on a
      // shard, per connection, for every issuer not already loaded).
      const char* variable = std::getenv(X509_get_default_cert_file_env());
      const std::string bundle = variable != nullptr && *variable != '\0'
                                     ? std::string(variable)
                                     : std::string(X509_get_default_cert_file());
      std::FILE* probe = open_pem(bundle, error);
      if (probe == nullptr && settings.ca_required) return {nullptr, "system CA store: " + error};
      if (probe != nullptr) {
        std::fclose(probe);
        if (SSL_CTX_load_verify_locations(ctx, bundle.c_str(), nullptr) != 1)
          return {nullptr, fmt::format("system CA store {}: {}", bundle, take_openssl_errors())};
      }
    }
    // Sessions go to the per-shard client_session_cache through the new-session callback.
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
    SSL_CTX_sess_set_new_cb(ctx, detail::on_new_client_session);
    return {std::move(c), {}};
  }
};

client_context::~client_context() { SSL_CTX_free(_ctx); }

client_load_result load_client_context(const client_settings& settings) {
  auto result = client_context_loader::load(settings);
  ERR_clear_error();
  return result;
}

}  // namespace ringmta::tls
