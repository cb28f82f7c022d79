// outbound delivery vocabulary: where a connection goes (route), what one delivery carries
// (envelope + wire-form body slices + the embedder's token), what comes back (per recipient, per
// delivery, per connection), and the handler the embedder implements to receive it.
//
// Outcomes reuse smtp::client_outcome: accepted / transient_failure (retry later) /
// permanent_failure (bounce) / no_recipients (delivery only: every recipient failed; their own
// results say why). Every reply handed out is a smtp::parsed_reply: the server's, or one made
// locally (reply.local), always with a code, and an enhanced code when one applies.
//
// Invariants: results reference memory that is valid only during the callback (copy what you
// keep). envelope_storage owns every byte the engine's envelope points to.
// Never: a delivery result without its recipient results before it; a callback from inside an
// outbound API call (see outbound.h).
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "ringmta/core/endpoint.h"
#include "ringmta/smtp/client_session.h"
#include "ringmta/spool/envelope.h"
#include "ringmta/spool/store.h"

namespace ringmta::outbound {

// A connection as the embedder names it; stale handles are refused (generation checked).
struct connection_handle {
  std::uint32_t slot = 0;
  std::uint32_t generation = 0;
  friend bool operator==(const connection_handle&, const connection_handle&) = default;
};

enum class route_kind : std::uint8_t {
  mx,    // RFC 5321 §5.1: MX lookup of `name` (or its address literal), implicit MX
  host,  // one host (smarthost, transport route): address literal or a name (A/AAAA only)
};

// What a connection demands of TLS (RFC 3207 STARTTLS), chosen per destination by the embedder.
enum class tls_policy : std::uint8_t {
  none,           // never STARTTLS
  opportunistic,  // STARTTLS when offered, unverified; a failed handshake is retried once in
                  // plaintext on the same server (and remembered for a while: outbound.h)
  required,       // STARTTLS or a 4.7.x failure of that server, unverified; never plaintext
  verify,         // required, and the chain and the server's name (RFC 6125) must verify
};
std::string_view describe(tls_policy policy) noexcept;

// Credentials for SMTP AUTH to a relay host (--relayhost-auth): immutable once loaded (start-up
// or reload, never on a shard), shared by the connections that use them; the password is
// wiped when the last one lets go.
struct client_credentials {
  std::string user;
  std::string password;
  client_credentials() = default;
  client_credentials(const client_credentials&) = delete;
  client_credentials& operator=(const client_credentials&) = delete;
  ~client_credentials() {
    volatile char* wipe = password.data();
    for (std::size_t i = 0; i < password.size(); ++i) wipe[i] = 0;
  }
};

struct route {
  route_kind kind = route_kind::mx;
  std::string_view name;  // domain, host name, "[192.0.2.1]", "[IPv6:2001:db8::1]" or an IP
  std::uint16_t port = 25;
  // `verify` checks the MX host name (kind mx) or this route's host name (kind host, e.g. a
  // smarthost): the name the connection was told to reach, never one the server claims.
  tls_policy tls = tls_policy::opportunistic;
  // Per-destination shaping (server/shaping.h); copied by open_connection.
  std::string_view helo_name;            // empty: outbound_config::helo_name
  std::uint32_t timeout_connect_ms = 0;  // 0: outbound_config's
  std::uint32_t timeout_reply_ms = 0;    // 0: outbound_config's; else every reply wait
  // Egress source (server/egress.h): bind() to it before connect (port 0, chosen at connect);
  // null: outbound_config's source_ipv4/6. Copied by open_connection. Used only for an
  // address of its family (an IPv4 source never binds an IPv6 socket).
  const core::endpoint* source = nullptr;
  // AUTH to this host (a relayhost only, never an MX: the password goes to the host it is for).
  // Used under tls required/verify once TLS is up, or always with auth_plaintext; otherwise
  // the connection ends before MAIL and the mail is deferred (smtp::client_auth_mode).
  std::shared_ptr<const client_credentials> auth;
  bool auth_plaintext = false;
};

// How the connection that carried a delivery was protected (for delivery records).
enum class tls_mode : std::uint8_t {
  none_by_policy,   // tls_policy::none
  not_offered,      // opportunistic: the server did not offer STARTTLS
  refused,          // opportunistic: the server answered STARTTLS with 4xx/5xx
  fallback,         // opportunistic: a handshake with this server failed (now or recently):
                    // plaintext retry; `detail` says why
  encrypted,        // TLS
};
std::string_view describe(tls_mode mode) noexcept;

struct tls_outcome {
  tls_mode mode = tls_mode::none_by_policy;
  std::string_view protocol;  // encrypted: "TLSv1.3"
  std::string_view cipher;    // encrypted: "TLS_AES_256_GCM_SHA384"
  int cipher_bits = 0;
  bool verified = false;  // the chain and the host name verified (whatever the policy asked)
  bool resumed = false;   // an abbreviated handshake from the per-shard session cache
  std::string_view detail;  // fallback: the handshake failure
};

// One message (or some of its recipients) to send over a ready connection. Every view (the
// envelope's, the recipients array, the body slices) must stay valid until on_delivery_done.
struct delivery {
  smtp::client_envelope envelope;           // size_bytes 0: the sum of the body slices
  std::span<const spool::body_slice> body;  // wire form (dot-stuffed, CRLF), no final ".CRLF"
  std::uint64_t token = 0;                  // the embedder's: handed back with every result
};

// The server a result came from. name is the MX host (or literal) and address its IP:port;
// address is nullptr (and name may be empty) when no server was reached.
struct remote_host {
  std::string_view name;
  const core::endpoint* address = nullptr;
  // The server offered DSN (RFC 3461): NOTIFY/ORCPT/ENVID/RET went on with the message, so
  // success reports are its job, not ours (RFC 3461 §5.2.2).
  bool offers_dsn = false;
};

struct recipient_result {
  std::uint64_t token = 0;
  std::uint32_t recipient_index = 0;  // into delivery.envelope.recipients
  smtp::client_outcome outcome = smtp::client_outcome::accepted;  // never no_recipients
  const smtp::parsed_reply* reply = nullptr;  // never null
  remote_host remote;
};

struct delivery_result {
  std::uint64_t token = 0;
  // accepted: the server took the message for every recipient reported accepted;
  // transient/permanent: those recipients failed with it; no_recipients: none was accepted.
  smtp::client_outcome outcome = smtp::client_outcome::accepted;
  const smtp::parsed_reply* reply = nullptr;  // the reply to "." (or why it failed); never null
  remote_host remote;
  const tls_outcome* tls = nullptr;  // the connection's protection; never null
};

enum class close_reason : std::uint8_t {
  released,            // the embedder called release(): QUIT was sent
  idle_timeout,        // ready and unused for idle_timeout_ms: QUIT was sent
  destination_failed,  // never became ready: DNS or every address failed (see failure)
  lost,                // failed after it was ready: peer closed, timeout, 421, protocol error
  shutdown,            // outbound::begin_shutdown() / stop()
};
std::string_view describe(close_reason reason) noexcept;

struct close_result {
  close_reason reason = close_reason::released;
  bool ever_ready = false;        // a delivery could have been attempted
  std::uint32_t deliveries = 0;   // deliveries finished on this connection
  std::uint32_t addresses_tried = 0;
  // destination_failed: transient_failure (retry the destination later) or permanent_failure
  // (bounce its messages: null MX 5.1.10, NXDOMAIN 5.1.2, every server said 5xx); else accepted.
  smtp::client_outcome failure = smtp::client_outcome::accepted;
  const smtp::parsed_reply* reply = nullptr;  // why it closed; never null
  remote_host remote;                         // the last server tried
};

// Implemented by the embedder (the queue), called on the shard's thread from completions and
// timers only. A callback may call any outbound API, for any connection.
class delivery_handler {
 public:
  // The connection can take a delivery: after the greeting and EHLO/HELO, and after each
  // delivery. Call deliver() or release() (now or later; idle_timeout_ms closes it).
  virtual void on_ready(connection_handle connection, std::uint64_t destination) noexcept = 0;
  // One per recipient of a delivery, in index order, before its on_delivery_done.
  virtual void on_recipient_result(connection_handle connection, std::uint64_t destination,
                                   const recipient_result& result) noexcept = 0;
  virtual void on_delivery_done(connection_handle connection, std::uint64_t destination,
                                const delivery_result& result) noexcept = 0;
  // Exactly once per opened connection; the handle is stale afterwards.
  virtual void on_closed(connection_handle connection, std::uint64_t destination,
                         const close_result& result) noexcept = 0;

 protected:
  ~delivery_handler() = default;
};

// RFC 3461 §4: xtext ("+" and "=" and anything outside "!".."~" become "+XX").
void append_xtext(std::string& out, std::string_view text);

// Builds the engine's envelope for some recipients of a spooled message and owns its bytes:
// keep it alive and unchanged until the delivery's on_delivery_done. NOTIFY bits become the
// RFC 3461 keyword list; ENVID and ORCPT (kept decoded in the spool) are xtext-encoded again,
// and dropped when the encoded form exceeds the RFC 3461 limits (they are advisory).
// BODY=BINARYMIME cannot go over DATA: it is sent as 8BITMIME (the body is in DATA wire form).
class envelope_storage {
 public:
  envelope_storage() = default;
  envelope_storage(const envelope_storage&) = delete;  // the views point into this object
  envelope_storage& operator=(const envelope_storage&) = delete;

  // recipients: indexes into value.recipients, in the order results will be reported.
  // body_bytes: the wire-form body size (the sum of the slices), for SIZE=.
  const smtp::client_envelope& assign(const spool::envelope& value,
                                      std::span<const std::uint16_t> recipients,
                                      std::uint64_t body_bytes);
  const smtp::client_envelope& envelope() const noexcept { return _envelope; }

 private:
  std::string _reverse_path;
  std::string _reverse_path_ascii;  // with an A-label domain, when that differs (net/idna.h)
  std::string _envid;
  std::vector<std::string> _addresses;
  std::vector<std::string> _addresses_ascii;
  std::vector<std::string> _orcpts;
  std::vector<smtp::client_recipient> _recipients;
  smtp::client_envelope _envelope;
};

// The NOTIFY keyword list for notify bits (RFC 3461 §4.1), "" when bits is 0.
std::string_view notify_keywords(std::uint8_t bits) noexcept;

}  // namespace ringmta::outbound
