// smtp::server_session: the receiving side of RFC 5321 as a pure state machine (sans-IO).
//
// The embedder feeds received bytes; the engine parses commands, calls a server_handler for
// each decision, and appends replies to a bounded output buffer that the embedder sends.
// It never makes a syscall, never reads a clock, never logs, never throws, and never allocates:
// every buffer is a fixed array inside the session (sizeof is about 12 KiB).
//
// Invariants the embedder can rely on:
// - Replies come out in command order (RFC 2920 §3.1). feed() handles as many pipelined
//   commands as it can in one call; the embedder sends output() in one write afterwards.
//   Each command's reply is produced before the next command is looked at, so commands after
//   a group-ending one (EHLO, DATA, BDAT, STARTTLS, AUTH, VRFY, NOOP, QUIT...) are handled
//   only after its reply exists; after STARTTLS and QUIT they are not handled at all.
// - feed() stops early (returns fewer octets than given) when a handler answered
//   verdict::pending() (awaiting_verdict()) or when the output buffer lacks room for the next
//   reply (output_full()). The embedder then calls resume() / drains output and feeds the rest
//   again; octets not consumed have not been acted on. After QUIT, a 421, or an accepted
//   STARTTLS (awaiting_tls()) every octet given is consumed and discarded.
// - Callbacks must not call back into the session (resume() comes later, from the embedder).
// - Body slices given to on_body() point into the buffer passed to the current feed() call, or
//   to static storage (a held-back "." or a normalized line ending); they are valid only during
//   the callback. The engine keeps no pointer into fed buffers after feed() returns; a partial
//   command line is copied into the session (at most its command's limit).
// - Only <CR><LF>.<CR><LF> ends DATA (RFC 5321 §4.1.1.4). A bare CR or bare LF in a message is
//   rejected at the end of data (550 5.6.0), or normalized to CRLF if configured; either way it
//   can never end the message or start another one (SMTP smuggling). NUL is rejected the same
//   way, or dropped. BDAT content obeys the same rules (it may be relayed over DATA) unless the
//   message is BODY=BINARYMIME, and a BDAT message not ending in CRLF gets one (RFC 3030 allows
//   it, DATA cannot carry it): every body handed over as text ends with CRLF.
// - After STARTTLS is accepted (220), every octet until tls_established() is discarded, so no
//   plaintext pipelined behind STARTTLS is ever processed (CVE-2011-0411).
// Never: a pointer into fed buffers kept across calls, a reply line over 512 octets, output
// beyond output_bytes_capacity, a handler call after wants_close().
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>

#include "ringmta/smtp/address.h"
#include "ringmta/smtp/parameters.h"
#include "ringmta/smtp/reply.h"
#include "ringmta/smtp/xclient.h"

namespace ringmta::smtp {

enum class bare_line_ending_policy : std::uint8_t {
  reject,     // 550 5.6.0 at end of data (commands: 500 5.5.2); the default
  normalize,  // bare CR / bare LF become CRLF in the body handed to the embedder
};

// A text line over text_line_bytes_max (RFC 5321 §4.5.3.1.6: 998 octets + CRLF).
enum class long_line_policy : std::uint8_t {
  reject,  // 550 5.6.0 at end of data: the content is never changed (the engine's default)
  // The body handed to the embedder gets a line break where a line reaches the limit, as
  // Postfix's smtp_line_length_limit: CRLF and a space in the header section (the field goes
  // on as folding, RFC 5322 §2.2.3), CRLF alone in the body (base64 and HTML URL parsers drop
  // it; a "." after it gets its stuffing dot in DATA, RFC 5321 §4.5.2). Only the line's octets
  // decide where (never the client's segmentation), and whatever signs the message (DKIM)
  // sees the folded octets, since it reads what the embedder stores.
  fold,
};

// What hitting each limit does (all keep the session in sync with the client):
// - command line longer than its command's limit (command_line_bytes_max, more for MAIL/RCPT
//   with extensions, auth_line_bytes_max for AUTH): 500 5.5.2 at once, rest of the line
//   skipped up to its LF (RFC 5321 §4.5.3.1.4, §4.5.3.1.10);
// - text line longer than text_line_bytes_max: the message is read to its end and refused
//   with 550 5.6.0 (§4.5.3.1.6), unless long_line_policy::fold breaks it (see there);
// - message over message_bytes_max (unstuffed octets): SIZE= over it gets 552 5.3.4 at MAIL;
//   otherwise the body is read and dropped to its end, then 552 5.3.4 (RFC 1870 §6.2);
// - recipients over recipients_max: 452 4.5.3 for each extra RCPT (§4.5.3.1.10);
// - errors_max 5xx replies: 421 4.7.0 and close;
// - BDAT whose size cannot be parsed: 501 5.5.4 and close (the chunk behind it cannot be
//   skipped, and reading it as commands would let message octets run as commands);
// - BDAT chunk larger than message_bytes_max on its own: 552 5.3.4 and close, for the same
//   reason (up to 2^64-1 octets cannot be read and discarded); chunks that fit alone but
//   overflow the message are read and dropped, then 552 5.3.4;
// - output: feed() pauses while output_full(), so a client that never reads costs no memory.
struct server_limits {
  // incl. CRLF, RFC 5321 §4.5.3.1.4; ≤ 640. MAIL and RCPT get more room for the parameters of
  // the extensions offered (server_session::line_limit).
  std::uint32_t command_line_bytes_max = 512;
  std::uint32_t text_line_bytes_max = 1000;       // incl. CRLF, §4.5.3.1.6; 0: unchecked
  std::uint64_t message_bytes_max = 50u << 20;    // advertised as SIZE (RFC 1870); 0: none
  std::uint32_t recipients_max = 1000;            // §4.5.3.1.8 asks for at least 100
  std::uint32_t errors_max = 20;                  // 5xx replies before 421 4.7.0; 0: no limit
  // AUTH command lines and SASL responses (RFC 4954 §4: 12288 octets suffice for deployed
  // mechanisms). Lines over command_line_capacity need long_line_storage (constructor).
  std::uint32_t auth_line_bytes_max = 12288;
};

struct server_config {
  std::string_view hostname = "localhost";        // views must outlive the session
  std::string_view greeting_text = "ESMTP ringmta";
  server_limits limits;
  extension_set extensions;
  bool starttls_offered = false;                  // advertise STARTTLS (RFC 3207)
  bool tls_active = false;                        // implicit TLS (port 465) or already started
  bool auth_offered = false;                      // advertise AUTH (RFC 4954)
  bool auth_requires_tls = true;                  // offer AUTH only once TLS is active
  std::string_view auth_mechanisms = "PLAIN LOGIN";
  bool vrfy_enabled = true;                       // false: VRFY gets 502 5.5.1
  bare_line_ending_policy bare_line_ending = bare_line_ending_policy::reject;
  long_line_policy long_lines = long_line_policy::reject;
};

enum class body_form : std::uint8_t {
  wire,  // DATA: dot-stuffed, CRLF line endings, the final ".\r\n" excluded
  raw,   // BDAT: the chunk octets (RFC 3030), after the line rules (normalize may rewrite)
};

enum class abort_reason : std::uint8_t {
  bare_lf,           // reject policy: a message line ended with LF alone
  bare_cr,           // reject policy: a CR not followed by LF
  nul,               // reject policy: a NUL octet (550 5.6.0)
  message_too_big,   // more than message_bytes_max (552 5.3.4)
  line_too_long,     // a text line over text_line_bytes_max (550 5.6.0)
  reset,             // RSET, HELO/EHLO or QUIT between BDAT chunks
  timeout,           // on_timeout() during a message
  shutdown,          // shutdown() during a message
  connection_lost,   // connection_lost() during a message
  refused,           // on_data_start refused a BDAT message: its later chunks get that reply
};
std::string_view describe(abort_reason reason) noexcept;

// Handed to on_data_end(): what the engine learned while scanning the body.
struct body_summary {
  body_form form = body_form::wire;
  body_type declared = body_type::unspecified;  // BODY= of MAIL
  std::uint64_t wire_bytes = 0;     // octets handed to on_body()
  std::uint64_t message_bytes = 0;  // after dot-unstuffing (what SIZE counts)
  std::uint64_t line_count = 0;     // line endings seen
  std::uint32_t chunk_count = 0;    // BDAT commands (0 for DATA)
  bool eight_bit = false;           // an octet above 127 was seen
  bool normalized = false;          // bare CR/LF were rewritten to CRLF, or NULs dropped
  bool final_crlf_added = false;    // BDAT: the message did not end with CRLF; one was added
  bool folded = false;              // long_line_policy::fold broke a line over the limit
};

// The current transaction; views stay valid until the next MAIL, RSET, HELO/EHLO or the end
// of data.
struct envelope_view {
  bool has_mail = false;
  std::string_view reverse_path;    // without brackets; empty for <>
  const mail_parameters* mail = nullptr;
  std::uint32_t recipient_count = 0;  // accepted RCPTs
};

// Implemented by the embedder. Called only from inside feed(), resume(), on_timeout(),
// shutdown(), connection_lost(); never after wants_close(). Every callback that returns a
// verdict may return verdict::pending(). Views are valid only during the call.
class server_handler {
 public:
  virtual ~server_handler() = default;
  virtual verdict on_helo(std::string_view domain, bool extended) noexcept;
  virtual verdict on_mail_from(const mailbox& reverse_path,
                               const mail_parameters& parameters) noexcept;
  virtual verdict on_rcpt_to(const mailbox& forward_path,
                             const rcpt_parameters& parameters) noexcept;
  // Before 354 for DATA, before the first chunk for BDAT.
  virtual verdict on_data_start() noexcept;
  virtual void on_body(std::string_view slice, body_form form) noexcept;
  // The message is complete; typically pending until the spool has it on stable storage.
  virtual verdict on_data_end(const body_summary& summary) noexcept;
  // The message will not be accepted: drop what was buffered. on_data_end() will not follow.
  // A DATA transaction ends with the failure reply at end of data; a BDAT one lasts until
  // its LAST chunk or RSET (which then calls on_reset()).
  virtual void on_data_aborted(abort_reason reason) noexcept;
  // A transaction (MAIL accepted) was cleared by RSET, HELO/EHLO or STARTTLS. Not called
  // after on_data_end(): the transaction ends there anyway.
  virtual void on_reset() noexcept;
  virtual verdict on_vrfy(std::string_view argument) noexcept;  // accept: 252 2.5.0
  virtual verdict on_starttls() noexcept;                       // accept: 220 2.0.0
  // AUTH (RFC 4954): a respond() with 334 continues the exchange (the next client line goes to
  // on_auth_response), 235 authenticates, 4xx/5xx fails. accept means 235.
  virtual verdict on_auth(std::string_view mechanism, std::string_view initial_response) noexcept;
  virtual verdict on_auth_response(std::string_view line) noexcept;
  // XCLIENT (Postfix XCLIENT_README), only when offer_xclient(true): accept resets the session
  // to its start (no HELO, no transaction; authenticated exactly when LOGIN gave a name) and
  // answers with the 220 greeting; a 4xx/5xx changes nothing. Views are valid during the call.
  virtual verdict on_xclient(const xclient_attributes& attributes) noexcept;
  // XCLIENT from a client it is not offered to: the engine answered 550 5.7.0 (for a record).
  virtual void on_xclient_refused() noexcept;
};

class server_session {
 public:
  static constexpr std::size_t output_bytes_capacity = 8192;
  static constexpr std::size_t command_line_capacity = 2048;

  // long_line_storage: room for AUTH lines over command_line_capacity (an embedder offering
  // AUTH passes auth_line_bytes_max octets; without it AUTH lines are cut at the capacity).
  // Must outlive the session.
  server_session(const server_config& config, server_handler& handler,
                 std::span<char> long_line_storage = {}) noexcept;
  server_session(const server_session&) = delete;
  server_session& operator=(const server_session&) = delete;

  // Whether this client may use XCLIENT (the embedder's trust decision, e.g. by address):
  // advertised in EHLO and accepted only then. Call before the first feed().
  void offer_xclient(bool offered) noexcept { _xclient_offered = offered; }

  // Writes the 220 greeting. Call once, before the first feed().
  void start() noexcept;
  // Writes a 554 greeting instead (RFC 5321 §3.1): every command but QUIT then gets 503.
  void start_refusing(std::string_view text = "No SMTP service here") noexcept;

  // Consumes received octets; returns how many (see the invariants above).
  std::size_t feed(std::string_view bytes) noexcept;
  // Answers the callback that returned pending (answer must not be pending itself). The reply
  // is appended in order; then feed() the octets it did not consume. Ignored once
  // wants_close() (on_timeout() or shutdown() cancelled the wait).
  void resume(const verdict& answer) noexcept;
  // The TLS handshake after STARTTLS completed: back to the pre-EHLO state (RFC 3207 §4.2).
  void tls_established() noexcept;
  void on_timeout() noexcept;       // 421 4.4.2 and close
  void shutdown() noexcept;         // 421 4.3.2 and close (SIGTERM)
  void connection_lost() noexcept;  // the peer went away: aborts a message in progress

  std::string_view output() const noexcept {
    return {_output.data() + _output_begin, _output_end - _output_begin};
  }
  void consume_output(std::size_t bytes) noexcept;

  bool wants_close() const noexcept { return _phase == phase::closed; }
  bool awaiting_verdict() const noexcept { return _pending != pending_kind::none; }
  bool awaiting_tls() const noexcept { return _phase == phase::tls_handshake; }
  // feed() stopped because output() must be drained first.
  bool output_full() const noexcept;
  bool in_message() const noexcept;  // inside DATA or between BDAT chunks
  // Between transactions in the command phase with nothing half-read or awaited: a session
  // that can be closed (421 on shutdown) without cutting anything short.
  bool idle() const noexcept;
  // Grows whenever a command line or a message (DATA end, BDAT chunk) is completed: what a
  // per-command deadline restarts on (a byte that completes nothing buys no time).
  std::uint64_t progress() const noexcept { return _progress; }

  std::string_view helo_name() const noexcept { return {_helo.data(), _helo_bytes}; }
  // RFC 3848 / RFC 6531 §3.7.3 "with" protocol for the Received: header.
  std::string_view protocol_name() const noexcept;
  bool tls_active() const noexcept { return _tls_active; }
  bool authenticated() const noexcept { return _authenticated; }
  envelope_view envelope() const noexcept;
  std::uint32_t error_count() const noexcept { return _errors; }
  std::uint64_t messages_accepted() const noexcept { return _messages_accepted; }

 private:
  enum class phase : std::uint8_t {
    not_started, command, skip_line, data, bdat_chunk, tls_handshake, closed };
  enum class pending_kind : std::uint8_t {
    none, helo, ehlo, mail, rcpt, data_start, bdat_start, data_end, vrfy, starttls, auth,
    auth_response, xclient };
  // line_start_after_nul: only NULs (dropped under normalize) since the line began.
  enum class data_state : std::uint8_t {
    line_start, line_start_after_nul, in_line, after_cr, dot, dot_cr };
  struct data_cursor {
    const char* p;    // next octet to look at
    const char* run;  // octets from here to p are not yet handed to on_body
    const char* end;
    bool dot_here;    // the held "." is in this buffer, at run
  };
  struct command_entry;
  void fold_long_line(data_cursor& c, const char* next_special) noexcept;

  // commands and verdicts (server_commands.cc, server_transaction.cc)
  void process_line(std::string_view line) noexcept;
  void dispatch(std::string_view line) noexcept;
  void greet(std::string_view argument, bool extended) noexcept;
  void command_ehlo(std::string_view argument) noexcept;
  void command_helo(std::string_view argument) noexcept;
  void command_mail(std::string_view argument) noexcept;
  void command_rcpt(std::string_view argument) noexcept;
  void command_data(std::string_view argument) noexcept;
  void command_bdat(std::string_view argument) noexcept;
  void command_rset(std::string_view argument) noexcept;
  void command_noop(std::string_view argument) noexcept;
  void command_quit(std::string_view argument) noexcept;
  void command_vrfy(std::string_view argument) noexcept;
  void command_expn(std::string_view argument) noexcept;
  void command_help(std::string_view argument) noexcept;
  void command_starttls(std::string_view argument) noexcept;
  void command_auth(std::string_view argument) noexcept;
  void auth_response_line(std::string_view line) noexcept;
  void command_xclient(std::string_view argument) noexcept;
  void apply_xclient(const verdict& answer) noexcept;
  bool auth_advertised() const noexcept;
  bool reject_parameters(const parameter_result& result) noexcept;
  bool reject_parameter_text(std::string_view text) noexcept;
  bool transaction_ready(std::uint16_t& code, std::string_view& enhanced,
                         std::string_view& text) const noexcept;
  void decide(pending_kind kind, const verdict& answer) noexcept;
  void apply(pending_kind kind, const verdict& answer) noexcept;
  void apply_auth(const verdict& answer) noexcept;
  void apply_bdat_start(bool ok, const verdict& answer) noexcept;
  void write_verdict(const verdict& answer, std::uint16_t code, std::string_view enhanced,
                     std::string_view text) noexcept;
  void write_ehlo_reply() noexcept;
  void clear_transaction(bool notify) noexcept;
  void abort_open_message() noexcept;
  void begin_message(body_form form) noexcept;
  void discard_chunk(std::uint16_t code, std::string_view enhanced,
                     std::string_view text) noexcept;
  void write_failure_reply() noexcept;
  void end_of_data() noexcept;
  void end_of_chunk() noexcept;

  // input framing, DATA and BDAT, lifecycle (server_session.cc)
  std::size_t feed_command(std::string_view bytes) noexcept;
  std::size_t line_limit(std::string_view head) const noexcept;
  std::size_t feed_skip(std::string_view bytes) noexcept;
  std::size_t feed_data(std::string_view bytes) noexcept;
  void data_after_cr(data_cursor& c, bool normalize) noexcept;
  void data_after_dot(data_cursor& c, bool normalize) noexcept;
  bool data_after_dot_cr(data_cursor& c, bool normalize) noexcept;
  std::size_t feed_bdat(std::string_view bytes) noexcept;
  void scan_bdat(std::string_view chunk) noexcept;
  void finish_bdat_message() noexcept;
  void data_nul(data_cursor& c, bool normalize) noexcept;
  void data_after_line_start_nul(data_cursor& c) noexcept;
  void emit_body(const char* begin, const char* end) noexcept;
  void emit_static(std::string_view bytes) noexcept;
  void end_line() noexcept;
  void normalized_line_end() noexcept;
  void emit_lone_dot_line() noexcept;
  void fail_message(abort_reason reason) noexcept;
  void check_error_limit() noexcept;
  void close_with(std::uint16_t code, std::string_view enhanced, std::string_view text,
                  abort_reason reason) noexcept;

  // output (server_reply.cc)
  // untrusted: the text comes from the embedder or echoes the client, so control characters
  // are replaced; the engine's own texts skip that pass.
  void write_reply(std::uint16_t code, std::string_view enhanced, std::string_view text,
                   bool untrusted = false) noexcept;
  void write_line(std::uint16_t code, bool more, std::string_view enhanced,
                  std::string_view text, bool untrusted) noexcept;
  char* reserve_output(std::size_t bytes) noexcept;
  std::size_t output_free() const noexcept;

  const server_config& _config;
  server_handler& _handler;
  std::span<char> _line_buffer;     // _line, or the embedder's long_line_storage
  std::size_t _mail_line_bytes_max = 0;  // MAIL's limit without AUTH= (line_limit)
  std::size_t _rcpt_line_bytes_max = 0;
  phase _phase = phase::not_started;
  pending_kind _pending = pending_kind::none;
  bool _refusing = false;
  bool _tls_active = false;
  std::uint64_t _message_bytes_max = 0;  // limits.message_bytes_max, 0 mapped to "none"
  bool _authenticated = false;
  bool _xclient_offered = false;
  bool _xclient_login = false;      // the pending XCLIENT named a LOGIN
  bool _extended = false;           // EHLO (not HELO) was accepted
  bool _auth_exchange = false;      // next command line is a SASL response
  bool _has_mail = false;
  bool _message_open = false;       // DATA in progress, or BDAT chunks of one message
  bool _smtputf8_used = false;      // current transaction said SMTPUTF8
  std::uint32_t _recipients = 0;
  std::uint32_t _errors = 0;
  std::uint64_t _messages_accepted = 0;
  std::uint64_t _progress = 0;

  // message in progress
  data_state _data_state = data_state::line_start;
  bool _message_failed = false;     // on_data_aborted was called; scanning to the end
  abort_reason _failure = abort_reason::reset;
  bool _bare_seen_last = false;     // the last line ending was normalized (not a real CRLF)
  bool _dot_nul_dropped = false;    // normalize: a NUL after the held line-start "." dropped
  bool _bdat_last = false;
  bool _bdat_discard = false;       // chunk is read and dropped (no transaction / rejected)
  std::uint64_t _bdat_remaining = 0;
  std::uint64_t _line_bytes = 0;
  std::uint64_t _stuffed_dots = 0;  // octets we added (stuffing dots, fold breaks): not sized
  bool _in_header_section = true;   // no empty line yet (where a fold break gets a space)
  bool _line_lead_dot = false;      // DATA: this line is stored with a stuffing dot before it
  body_summary _summary;
  mail_parameters _mail_parameters;

  // deferred reply of a discarded BDAT chunk (sent once the chunk is read, RFC 3030 §2)
  std::uint16_t _deferred_code = 0;
  std::array<char, 10> _deferred_enhanced;
  std::array<char, 200> _deferred_text;
  std::size_t _deferred_enhanced_bytes = 0;
  std::size_t _deferred_text_bytes = 0;

  std::size_t _line_bytes_buffered = 0;
  std::size_t _helo_bytes = 0;
  std::size_t _reverse_path_bytes = 0;
  std::size_t _output_begin = 0;
  std::size_t _output_end = 0;
  // Not value-initialized: only the first *_bytes octets of each are ever read, and a
  // session per connection should not start with a 12 KiB memset.
  std::array<char, command_line_capacity> _line;
  std::array<char, domain_bytes_max> _helo;
  std::array<char, path_bytes_max> _reverse_path;
  std::array<char, envid_bytes_max> _envid;
  std::array<char, orcpt_bytes_max> _orcpt;
  std::array<char, output_bytes_capacity> _output;
};

}  // namespace ringmta::smtp
