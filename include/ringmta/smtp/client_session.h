// smtp::client_session: the pure SMTP client engine (RFC 5321, with PIPELINING, SIZE, 8BITMIME,
// SMTPUTF8, DSN, ENHANCEDSTATUSCODES, CHUNKING and STARTTLS). One object per outgoing connection.
//
// Bytes in, commands and events out. The embedder owns the socket, the clock and the message
// body; the engine owns the protocol:
//   feed(bytes)          server bytes received (returns how many it took; see the loop below)
//   next_event()         what happened: ready, recipient_result, send_body, message_result,
//                        start_tls, closed (poll until none)
//   output()             command bytes to send; consume_output(n) once n of them are handed
//                        to the transport (copied or submitted, not when the send completes)
//   start_transaction()  on `ready`: send one message; or quit()
//   body_sent()          on `send_body`: the embedder has written the whole body
//   tls_started() / tls_failed()   on `start_tls`: bytes after the 220 in the same feed()
//                        are discarded (injection); from then on bytes go to TLS, not here
//   on_timeout() / on_peer_closed()  embedder-observed events (phase() picks the timeout)
//
// Embedder loop:
//   for each chunk received: while (!chunk.empty()) { n = feed(chunk); chunk.remove_prefix(n);
//     drain(); }  where drain() handles next_event() until it returns none, then sends output().
//   feed() stops after any reply that produced an event and takes nothing while an event is
//   pending, so a reply referenced by an event stays valid until the next call into the engine.
//
// Outcomes: every recipient of a transaction gets exactly one recipient_result, in index order;
// then exactly one message_result, then `ready` (or `closed`). A recipient whose result is
// `accepted` shares the fate of the message_result; a failed one is final. Every connection
// ends with exactly one `closed`.
//
// The body is never seen here: on send_body the embedder writes the message in SMTP wire form
// (dot-stuffed, ending in CRLF) straight from the spool, then calls body_sent(), and the engine
// emits the ".\r\n" terminator (RFC 5321 §4.1.1.4). Sending the terminator in the same write
// as the body's tail (or with TCP_NODELAY) avoids a Nagle / delayed-ACK stall per message.
// With CHUNKING (RFC 3030) the embedder may instead hand over the message as one chunk: it
// sets envelope.chunk_bytes to the size of the raw (unstuffed) message; the engine writes
// "BDAT <size> LAST" as the last command and emits send_body at once (no 354 to wait for),
// the embedder sends exactly that many octets right after the command's CRLF and calls
// body_sent(); the reply to BDAT ends the transaction. With PIPELINING the whole message is
// one write: MAIL, RCPTs, BDAT and the body.
//
// Choices: after PIPELINING's DATA got 354 with no recipient accepted, the engine sends a lone
// "." (RFC 2920 §3.1), which ends the transaction without RSET. A transaction that failed with
// MAIL accepted (no recipient, DATA refused) is cleared lazily: RSET goes first in the next
// transaction's batch, never before QUIT. A connection lost after "." defers the message,
// which may deliver it twice (RFC 1047). A BDAT that failed (its chunk read and discarded by
// the server, RFC 3030 §2) is followed by RSET in the next transaction.
//
// Invariants: no syscalls, no clock reads, no logging, no exceptions, no heap allocation (all
// buffers are fixed members, ~10 KiB a session); every command is one CRLF-terminated line of
// at most client_command_bytes_max, and nothing from an envelope can add a CR or LF to it;
// without PIPELINING at most one command is unanswered. A reply can only answer a command
// already handed out through consume_output(); anything else is unexpected. A peer's
// malformed or unexpected bytes end the connection with a clear reason; they never reach an
// assertion. Misuse of the API by the embedder (e.g. start_transaction() when not ready) is a
// programmer error and asserts.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>

#include "ringmta/smtp/client_extensions.h"
#include "ringmta/smtp/reply_parser.h"

namespace ringmta::smtp {

inline constexpr std::size_t client_output_bytes_max = 4096;
// Longest command this client writes: RCPT TO:<254 bytes> NOTIFY=… ORCPT=<500 bytes> CRLF.
inline constexpr std::size_t client_command_bytes_max = 1024;
inline constexpr std::size_t client_path_bytes_max = 254;    // RFC 5321 §4.5.3.1.3 (256 with <>)
inline constexpr std::size_t client_orcpt_bytes_max = 500;   // RFC 3461 §4.2
inline constexpr std::size_t client_envid_bytes_max = 100;   // RFC 3461 §4.4
inline constexpr std::size_t client_notify_bytes_max = 32;   // "SUCCESS,FAILURE,DELAY" is 21
inline constexpr std::size_t client_helo_name_bytes_max = 255;

enum class client_tls_policy : std::uint8_t {
  none,           // never send STARTTLS
  opportunistic,  // STARTTLS when offered; carry on in plaintext when not offered or refused
  required,       // STARTTLS or close (tls_unavailable)
};

// SMTP AUTH to the server (RFC 4954), for a relay host that wants a login: PLAIN (RFC 4616)
// with an initial response when the server offers it, else LOGIN; after the EHLO that follows
// STARTTLS, before the first transaction. A refusal (535, 454...) or a server that cannot take
// the credentials safely ends the connection before MAIL (auth_failed / auth_unavailable): the
// embedder defers, it never sends the message unauthenticated.
enum class client_auth_mode : std::uint8_t {
  off,        // no credentials: never AUTH
  over_tls,   // AUTH once TLS is active; a session without TLS ends (auth_unavailable)
  plaintext,  // AUTH even without TLS: the operator forced it
  refused,    // credentials exist but this connection's TLS policy cannot protect them: end
              // the session before AUTH (auth_unavailable), nothing is sent
};

struct client_auth {
  client_auth_mode mode = client_auth_mode::off;
  std::string_view user;      // ≤ 255 octets each, no NUL (PLAIN's separator, RFC 4616 §2)
  std::string_view password;
};
inline constexpr std::size_t client_auth_field_bytes_max = 255;

struct client_config {
  std::string_view helo_name;  // our name for EHLO/HELO; its storage outlives the session
  client_tls_policy tls = client_tls_policy::none;
  client_auth auth;  // views owned by the embedder, valid while the session uses them
  bool pipelining = true;  // use PIPELINING (RFC 2920) when the server offers it
  bool chunking = true;    // allow BDAT (RFC 3030) when the server offers CHUNKING
  std::uint16_t reply_lines_max = reply_lines_max_default;
};

enum class client_body_type : std::uint8_t {
  seven_bit,       // plain ASCII body: no BODY= parameter
  eight_bit_mime,  // needs 8BITMIME (RFC 6152): BODY=8BITMIME
};

struct client_recipient {
  std::string_view address;  // forward path without <>, e.g. "user@example.org"
  std::string_view notify;   // DSN NOTIFY value ("SUCCESS,FAILURE") or empty (RFC 3461 §4.1)
  std::string_view orcpt;    // DSN ORCPT value, already xtext ("rfc822;user@example.org") or empty
  // The address with its domain in A-labels ("bob@xn--bcher-kva.test" for "bob@bücher.test"),
  // sent instead to a server without SMTPUTF8 (RFC 6531 §3.2, RFC 5890); empty: none exists
  // (ASCII already, or a non-ASCII local part: such an address needs SMTPUTF8).
  std::string_view address_ascii;
};

// One message to send. Every view (and the recipients array) is owned by the embedder and must
// stay valid from start_transaction() until its message_result event has been returned.
struct client_envelope {
  std::string_view reverse_path;  // without <>; empty for the null reverse path <>
  std::string_view reverse_path_ascii;  // like client_recipient::address_ascii
  std::span<const client_recipient> recipients;
  std::uint64_t size_bytes = 0;   // body size in wire form, for SIZE= (RFC 1870); 0 = unknown
  client_body_type body = client_body_type::seven_bit;
  bool smtputf8 = false;          // needs SMTPUTF8 (RFC 6531); also implied by 8-bit addresses
  std::string_view dsn_ret;       // "FULL" / "HDRS" or empty (RFC 3461 §4.3)
  std::string_view dsn_envid;     // xtext or empty (RFC 3461 §4.4)
  // Nonzero: send the message with "BDAT chunk_bytes LAST" (needs chunking_active()); the
  // embedder then sends exactly this many octets of the raw message, NOT dot-stuffed.
  std::uint64_t chunk_bytes = 0;
};

// What the engine waits for; the embedder arms the matching timeout (RFC 5321 §4.5.3.2).
enum class client_phase : std::uint8_t {
  greeting,       // the 220 banner (§4.5.3.2.1: 5 min)
  ehlo,           // the reply to EHLO (5 min)
  helo,           // the reply to HELO, after EHLO was refused (5 min)
  starttls,       // the reply to STARTTLS (5 min)
  auth,           // the reply to AUTH or to a SASL response (5 min)
  tls_handshake,  // the embedder runs the TLS handshake, then calls tls_started()
  ready,          // idle between transactions: start_transaction() or quit()
  rset,           // the reply to RSET (5 min)
  mail,           // the reply to MAIL (§4.5.3.2.2: 5 min)
  rcpt,           // the reply to a RCPT (§4.5.3.2.3: 5 min)
  data,           // the 354 to DATA (§4.5.3.2.4: 2 min)
  body,           // the embedder writes the body (§4.5.3.2.5: 3 min per send)
  data_end,       // the reply to "." (§4.5.3.2.6: 10 min)
  quit,           // the reply to QUIT
  closed,         // over: send what output() still holds, then close the socket
};

enum class client_event_kind : std::uint8_t {
  none,              // nothing until more input or another call
  ready,             // idle: start_transaction() or quit()
  recipient_result,  // recipient_index, outcome, reply
  send_body,         // write the body now, then body_sent()
  message_result,    // outcome, reply: the transaction is over
  start_tls,         // the server said 220 to STARTTLS: handshake, then tls_started()
  closed,            // close_reason, reply: flush output() (best effort), close the socket
};

enum class client_outcome : std::uint8_t {
  accepted,           // RCPT accepted (fate follows the message) / message accepted
  transient_failure,  // retry later (4xx, or the connection failed)
  permanent_failure,  // bounce (5xx, or a local rule such as SIZE)
  no_recipients,      // message only: every recipient failed; their results say why
};

enum class client_close_reason : std::uint8_t {
  quit,               // normal end after QUIT
  greeting_rejected,  // 4xx/5xx banner: try the next MX (RFC 5321 §5.1, §3.1)
  hello_rejected,     // EHLO and HELO refused (or EHLO answered 4xx)
  tls_unavailable,    // TLS required but STARTTLS not offered or refused
  tls_failed,         // the embedder reported a failed handshake
  auth_unavailable,   // credentials to send, but no TLS (over_tls), no AUTH offered, no
                      // mechanism in common, or the TLS policy refuses them (refused)
  auth_failed,        // the server refused AUTH (535 5.7.8, 454...): its reply says why
  service_closing,    // the server sent 421 (RFC 5321 §3.8)
  reply_unexpected,   // a well-formed reply that is not allowed here (e.g. unsolicited)
  protocol_error,     // malformed reply, or plaintext fed after start_tls (embedder's TLS)
  peer_closed,        // the connection ended without QUIT
  timeout,            // the embedder's timer for phase() fired
};

struct client_event {
  client_event_kind kind = client_event_kind::none;
  client_outcome outcome = client_outcome::accepted;
  client_close_reason close_reason = client_close_reason::quit;
  std::uint32_t recipient_index = 0;  // recipient_result: index into envelope.recipients
  // recipient_result, message_result, closed: never null. The server's reply, or one made
  // locally (reply->local). For failures of the connection the outcome is transient whatever
  // the reply's class. Valid until the next call into the session.
  const parsed_reply* reply = nullptr;
};

std::string_view describe(client_phase phase) noexcept;
std::string_view describe(client_close_reason reason) noexcept;
std::string_view describe(client_outcome outcome) noexcept;

class client_session {
 public:
  explicit client_session(const client_config& config) noexcept;
  client_session(const client_session&) = delete;
  client_session& operator=(const client_session&) = delete;

  // Starts over for a new connection (same config): waits for the greeting again.
  void reset() noexcept;
  // The same with another TLS policy for this connection (per destination, or a plaintext
  // retry after a failed handshake).
  void reset(client_tls_policy tls) noexcept;
  // ...and another EHLO/HELO name (per destination); its storage outlives the session's use.
  void reset(client_tls_policy tls, std::string_view helo_name) noexcept;
  // Credentials for this connection and the next ones (until set again); call before the
  // greeting arrives. Checked: user and password ≤ client_auth_field_bytes_max, no NUL/CR/LF.
  void set_auth(const client_auth& auth) noexcept;
  bool authenticated() const noexcept { return _authenticated; }

  std::size_t feed(std::string_view bytes) noexcept;
  client_event next_event() noexcept;

  std::string_view output() const noexcept {
    return {_output + _output_begin, static_cast<std::size_t>(_output_end - _output_begin)};
  }
  void consume_output(std::size_t bytes) noexcept;

  void start_transaction(const client_envelope& envelope) noexcept;
  void body_sent() noexcept;
  void tls_started() noexcept;
  // `why` becomes the text of the closing reply (local 421 4.7.5); copied.
  void tls_failed(std::string_view why = {}) noexcept;
  void quit() noexcept;
  void on_timeout() noexcept;
  void on_peer_closed() noexcept;

  client_phase phase() const noexcept { return _phase; }
  const client_extensions& extensions() const noexcept { return _extensions; }
  bool tls_active() const noexcept { return _tls_active; }
  client_tls_policy tls_policy() const noexcept { return _config.tls; }
  // Octets the server sent after its 220 to STARTTLS and before the handshake: discarded
  // (response injection, RFC 3207 §5). Counted per connection; reset() clears it.
  std::uint64_t tls_discarded_bytes() const noexcept { return _tls_discarded; }
  bool pipelining_active() const noexcept {
    return _config.pipelining && _extensions.pipelining;
  }
  // Whether a transaction may use BDAT (envelope.chunk_bytes); known once ready.
  bool chunking_active() const noexcept { return _config.chunking && _extensions.chunking; }
  // "BDAT n LAST" is in output() (or already handed out) and the chunk must follow it next;
  // the embedder may send it with the command without waiting for the send_body event.
  bool chunk_due() const noexcept { return _chunk_pending; }
  bool event_pending() const noexcept {
    return _report_next < _known_end || _queue_count != 0;
  }

 private:
  struct queued_event {
    client_event_kind kind;
    client_outcome outcome;
    client_close_reason close_reason;
    const parsed_reply* reply;
  };
  enum class recipient_problem : std::uint8_t { none, bad_address, bad_parameter };
  static constexpr std::uint8_t queue_capacity = 4;

  // Connection setup.
  void on_reply_line() noexcept;
  void on_reply(const parsed_reply& reply) noexcept;
  void on_setup_reply(const parsed_reply& reply) noexcept;
  void after_hello() noexcept;
  void start_auth() noexcept;
  void on_auth_reply(const parsed_reply& reply) noexcept;
  void write_base64_command(std::string_view prefix, std::string_view first,
                            std::string_view second = {}) noexcept;
  void enter_ready() noexcept;
  void fail_connection(client_close_reason reason, const parsed_reply& reply,
                       bool send_quit) noexcept;
  void fail_connection_local(client_close_reason reason, std::uint16_t code,
                             reply_enhanced_code enhanced, std::string_view text,
                             bool send_quit = false) noexcept;

  // Transactions.
  bool fail_locally(const client_envelope& envelope) noexcept;
  void on_transaction_reply(const parsed_reply& reply) noexcept;
  void on_mail_reply(const parsed_reply& reply) noexcept;
  void on_rcpt_reply(const parsed_reply& reply, std::uint32_t index) noexcept;
  void on_data_reply(const parsed_reply& reply) noexcept;
  void on_data_end_reply(const parsed_reply& reply) noexcept;
  void on_bdat_reply(const parsed_reply& reply) noexcept;
  void pump() noexcept;
  void render_step(std::uint32_t step) noexcept;
  void fail_all_recipients(client_outcome outcome, const parsed_reply& reply) noexcept;
  void conclude(client_outcome outcome, const parsed_reply& reply, bool rset_needed) noexcept;
  recipient_problem check_recipient(std::uint32_t index) const noexcept;
  // The same; `eight_bit` set when the path sent has a byte >= 0x80 (before a refused one).
  recipient_problem check_recipient(std::uint32_t index, bool& eight_bit) const noexcept;
  std::string_view sent_path(std::string_view path, std::string_view ascii) const noexcept;
  std::uint32_t skip_unsendable(std::uint32_t step) const noexcept;
  client_phase phase_for_step(std::uint32_t step) const noexcept;
  client_event report_recipient(std::uint32_t index) noexcept;

  // Steps of one transaction: RSET, MAIL, RCPT 0..n-1, DATA, "." (RFC 2920 batch order); with
  // BDAT the DATA step is "BDAT n LAST" plus the chunk, and its reply ends the transaction.
  static constexpr std::uint32_t step_rset = 0;
  static constexpr std::uint32_t step_mail = 1;
  static constexpr std::uint32_t step_first_rcpt = 2;
  std::uint32_t step_data() const noexcept { return step_first_rcpt + recipient_count(); }
  std::uint32_t step_end() const noexcept { return step_data() + 1; }
  std::uint32_t recipient_count() const noexcept {
    return static_cast<std::uint32_t>(_envelope.recipients.size());
  }

  // Output.
  std::size_t output_room() noexcept;
  void append(std::string_view text) noexcept;
  void append_number(std::uint64_t value) noexcept;
  void write_command(std::string_view verb, std::string_view argument) noexcept;
  void queue(client_event_kind kind, client_outcome outcome, client_close_reason reason,
             const parsed_reply* reply) noexcept;

  client_config _config;
  reply_parser _parser;
  client_extensions _extensions;
  client_phase _phase = client_phase::greeting;
  bool _tls_active = false;
  std::uint64_t _tls_discarded = 0;
  // Where the AUTH exchange is (phase auth): what the next reply answers.
  enum class auth_stage : std::uint8_t {
    none, plain, login_start, login_user, login_password };
  auth_stage _auth_stage = auth_stage::none;
  bool _authenticated = false;
  bool _rset_needed = false;  // a failed transaction left server state: RSET first next time
  std::uint32_t _unanswered = 0;  // commands handed out (lines consumed) minus replies received

  // Current transaction.
  client_envelope _envelope;
  bool _transaction_active = false;
  bool _needs_smtputf8 = false;
  bool _mail_failed = false;
  bool _stop_sending = false;
  bool _empty_body = false;  // "." sent without a body: 354 came but no recipient was accepted
  bool _bdat = false;          // this transaction ends with BDAT LAST instead of DATA
  bool _chunk_pending = false; // BDAT written; the embedder has not called body_sent() yet
  std::uint32_t _send_step = 0;   // next step to write
  std::uint32_t _reply_step = 0;  // step whose reply comes next
  std::uint32_t _accepted = 0;

  // Recipient reports: [_report_next, _known_end) are known and not yet returned.
  std::uint32_t _report_next = 0;
  std::uint32_t _known_end = 0;
  static constexpr std::uint32_t bulk_none = UINT32_MAX;
  std::uint32_t _bulk_from = bulk_none;  // from here on results are _bulk_outcome/_bulk_reply
  std::uint32_t _replied_index = 0;  // the recipient whose RCPT reply is _parser.reply()
  client_outcome _replied_outcome = client_outcome::accepted;
  client_outcome _bulk_outcome = client_outcome::transient_failure;

  queued_event _queue[queue_capacity];
  std::uint8_t _queue_head = 0;
  std::uint8_t _queue_count = 0;

  std::uint16_t _output_begin = 0;
  std::uint16_t _output_end = 0;
  char _output[client_output_bytes_max];

  parsed_reply _bulk_reply;   // MAIL's failure or the connection's failure, shared by many
  parsed_reply _local_reply;  // one recipient's local failure (bad syntax)
  parsed_reply _close_reply;  // the reply of the closed event
  parsed_reply _message_reply;  // a local message outcome (e.g. no valid recipients)
};

}  // namespace ringmta::smtp
