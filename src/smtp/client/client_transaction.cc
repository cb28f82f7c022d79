// client_session: one mail transaction (RFC 5321 §3.3), with or without PIPELINING (RFC 2920).
//
// A transaction is a fixed sequence of steps: [RSET] MAIL, RCPT for each sendable recipient,
// DATA, then "." after the body; or, with a chunk (RFC 3030), "BDAT n LAST" in DATA's place,
// the chunk right behind it and no "." step. _send_step is the next step to write, _reply_step the step
// whose reply comes next; replies arrive in step order (RFC 2920 §3.1). Without PIPELINING a
// step is written only when every earlier one is answered (_send_step == _reply_step).
#include <algorithm>

#include "client_syntax.h"
#include "ringmta/core/assert.h"
#include "ringmta/smtp/client_session.h"

namespace ringmta::smtp {

namespace {

using namespace client_syntax;

bool ret_ok(std::string_view value) noexcept {
  // RFC 3461 §4.3: RET=FULL or RET=HDRS.
  return equals_upper(value, "FULL") || equals_upper(value, "HDRS");
}

}  // namespace

// RFC 6531 §3.2, RFC 5890: a server without SMTPUTF8 gets an address whose only non-ASCII
// part is its domain with the domain in A-labels; with SMTPUTF8 the address goes as received.
std::string_view client_session::sent_path(std::string_view path,
                                           std::string_view ascii) const noexcept {
  return !_extensions.smtputf8 && !ascii.empty() ? ascii : path;
}

client_session::recipient_problem client_session::check_recipient(
    std::uint32_t index) const noexcept {
  bool eight_bit = false;
  return check_recipient(index, eight_bit);
}

client_session::recipient_problem client_session::check_recipient(
    std::uint32_t index, bool& eight_bit) const noexcept {
  const client_recipient& recipient = _envelope.recipients[index];
  const std::string_view address = sent_path(recipient.address, recipient.address_ascii);
  if (address.empty() || !path_ok(address, eight_bit)) {
    return recipient_problem::bad_address;
  }
  // DSN parameters are only sent when the server offers DSN (RFC 3461 §4); only then they count.
  if (_extensions.dsn) {
    if (!recipient.notify.empty() && !parameter_ok(recipient.notify, client_notify_bytes_max)) {
      return recipient_problem::bad_parameter;
    }
    if (!recipient.orcpt.empty() && !parameter_ok(recipient.orcpt, client_orcpt_bytes_max)) {
      return recipient_problem::bad_parameter;
    }
  }
  return recipient_problem::none;
}

std::uint32_t client_session::skip_unsendable(std::uint32_t step) const noexcept {
  while (step >= step_first_rcpt && step < step_data() &&
         check_recipient(step - step_first_rcpt) != recipient_problem::none) {
    ++step;
  }
  return step;
}

client_phase client_session::phase_for_step(std::uint32_t step) const noexcept {
  if (step == step_rset) return client_phase::rset;
  if (step == step_mail) return client_phase::mail;
  if (step < step_data()) return client_phase::rcpt;
  if (step == step_data() && !_bdat) return client_phase::data;
  return client_phase::data_end;  // with BDAT: the reply to the chunk ends the message
}

void client_session::start_transaction(const client_envelope& envelope) noexcept {
  RINGMTA_ASSERT(_phase == client_phase::ready && !_transaction_active);
  RINGMTA_ASSERT(!event_pending());  // the previous transaction's results are all returned
  _envelope = envelope;
  _transaction_active = true;
  _needs_smtputf8 = _mail_failed = _stop_sending = _empty_body = false;
  _bdat = envelope.chunk_bytes != 0;
  RINGMTA_ASSERT(!_bdat || chunking_active());
  _chunk_pending = false;
  _accepted = 0;
  _report_next = _known_end = _replied_index = 0;
  _bulk_from = bulk_none;
  if (fail_locally(envelope)) return;
  // RFC 5321 §4.1.1.5: a transaction left open by a failure is cleared with RSET first.
  _send_step = _rset_needed ? step_rset : step_mail;
  _reply_step = _send_step;
  _rset_needed = false;
  _phase = phase_for_step(_reply_step);
  pump();
}

// Local rules that fail the whole message before any command is sent. Returns true when the
// message failed (results queued, session stays ready).
bool client_session::fail_locally(const client_envelope& envelope) noexcept {
  bool eight_bit = false;
  std::uint32_t sendable = 0;
  for (std::uint32_t i = 0; i < recipient_count(); ++i) {
    // One scan of each path: its bytes >= 0x80 are counted by the same check.
    if (check_recipient(i, eight_bit) == recipient_problem::none) ++sendable;
  }
  const bool reverse_path_ok =
      path_ok(sent_path(envelope.reverse_path, envelope.reverse_path_ascii), eight_bit);
  // RFC 6531 §3.2: non-ASCII addresses need SMTPUTF8 whatever the embedder said; to a server
  // without it, domains went as A-labels above, so only a non-ASCII local part counts.
  _needs_smtputf8 = envelope.smtputf8 || eight_bit;
  const bool dsn_ok = (envelope.dsn_ret.empty() || ret_ok(envelope.dsn_ret)) &&
                      (envelope.dsn_envid.empty() ||
                       parameter_ok(envelope.dsn_envid, client_envid_bytes_max));
  if (!reverse_path_ok) {
    _message_reply.assign_local(553, enhanced(5, 1, 7), "bad sender address syntax");
  } else if (!dsn_ok) {
    _message_reply.assign_local(501, enhanced(5, 5, 4), "invalid DSN parameter RET or ENVID");
  } else if (sendable == 0) {
    _message_reply.assign_local(554, enhanced(5, 5, 1), "no valid recipients");
    _known_end = recipient_count();  // each reports its own syntax failure
    _bulk_from = recipient_count();
    conclude(client_outcome::no_recipients, _message_reply, _rset_needed);
    return true;
  } else if (_extensions.size && _extensions.size_bytes_max != 0 &&
             envelope.size_bytes > _extensions.size_bytes_max) {
    // RFC 1870 §6 and RFC 3463 X.3.4: too big for this server; do not send it.
    _message_reply.assign_local(552, enhanced(5, 3, 4),
                                "message size exceeds the server's fixed maximum message size");
  } else if (envelope.body == client_body_type::eight_bit_mime && !_extensions.eight_bit_mime) {
    // RFC 6152 §3 and RFC 3463 X.6.3: 8-bit data to a 7-bit server. The relay converts such
    // messages before they get here (server/downgrade.h) unless the operator turned that off.
    _message_reply.assign_local(554, enhanced(5, 6, 3),
                                "8-bit message, but the server does not offer 8BITMIME");
  } else if (_needs_smtputf8 && !_extensions.smtputf8) {
    // RFC 6531 §3.2 and RFC 6533 X.6.7: non-ASCII envelope or headers need SMTPUTF8.
    _message_reply.assign_local(553, enhanced(5, 6, 7),
                                "SMTPUTF8 is required, but was not offered by the server");
  } else {
    return false;
  }
  fail_all_recipients(client_outcome::permanent_failure, _message_reply);
  conclude(client_outcome::permanent_failure, _bulk_reply, _rset_needed);
  return true;
}

void client_session::pump() noexcept {
  while (_transaction_active && !_stop_sending && _send_step <= step_data()) {
    if (!pipelining_active() && _send_step != _reply_step) return;  // RFC 5321 §4.3: in turn
    if (_send_step == step_data() && _reply_step == step_data() && _accepted == 0) {
      // Every RCPT is answered and none was accepted: DATA would only be refused.
      _stop_sending = true;
      _message_reply.assign_local(554, enhanced(5, 5, 1), "no valid recipients");
      conclude(client_outcome::no_recipients, _message_reply, true);
      return;
    }
    if (output_room() < client_command_bytes_max) return;  // more once output is consumed
    render_step(_send_step);
    _send_step = skip_unsendable(_send_step + 1);
  }
}

void client_session::render_step(std::uint32_t step) noexcept {
  RINGMTA_ASSERT(output_room() >= client_command_bytes_max);
  if (step == step_rset) {
    append("RSET\r\n");
  } else if (step == step_mail) {
    append("MAIL FROM:<");
    append(sent_path(_envelope.reverse_path, _envelope.reverse_path_ascii));
    append(">");
    if (_extensions.size && _envelope.size_bytes != 0) {  // RFC 1870 §3
      append(" SIZE=");
      append_number(_envelope.size_bytes);
    }
    if (_envelope.body == client_body_type::eight_bit_mime) append(" BODY=8BITMIME");
    if (_needs_smtputf8) append(" SMTPUTF8");  // RFC 6531 §3.4
    if (_extensions.dsn && !_envelope.dsn_ret.empty()) {  // RFC 3461 §4.3
      append(" RET=");
      append(_envelope.dsn_ret);
    }
    if (_extensions.dsn && !_envelope.dsn_envid.empty()) {  // RFC 3461 §4.4
      append(" ENVID=");
      append(_envelope.dsn_envid);
    }
    append("\r\n");
  } else if (step < step_data()) {
    const client_recipient& recipient = _envelope.recipients[step - step_first_rcpt];
    append("RCPT TO:<");
    append(sent_path(recipient.address, recipient.address_ascii));
    append(">");
    if (_extensions.dsn && !recipient.notify.empty()) {  // RFC 3461 §4.1
      append(" NOTIFY=");
      append(recipient.notify);
    }
    if (_extensions.dsn && !recipient.orcpt.empty()) {  // RFC 3461 §4.2
      append(" ORCPT=");
      append(recipient.orcpt);
    }
    append("\r\n");
  } else if (_bdat) {
    RINGMTA_ASSERT(step == step_data());
    append("BDAT ");  // RFC 3030 §2: the whole message as one last chunk
    append_number(_envelope.chunk_bytes);
    append(" LAST\r\n");
    _chunk_pending = true;  // the chunk must follow this CRLF before anything else
    queue(client_event_kind::send_body, client_outcome::accepted, client_close_reason::quit,
          nullptr);
  } else {
    RINGMTA_ASSERT(step == step_data());
    append("DATA\r\n");
  }
}

void client_session::on_transaction_reply(const parsed_reply& reply) noexcept {
  const std::uint32_t step = _reply_step;
  if (step == step_end()) {
    on_data_end_reply(reply);
  } else if (reply.code_class() == 3 && (step != step_data() || _bdat)) {
    // Only DATA may be answered with 3xx (RFC 5321 §4.3.2; RFC 3030 §2 for BDAT).
    fail_connection(client_close_reason::reply_unexpected, reply, false);
  } else if (step == step_rset) {
    if (!reply.positive()) {
      fail_connection(client_close_reason::reply_unexpected, reply, false);
      return;
    }
    _reply_step = step_mail;
  } else if (step == step_mail) {
    on_mail_reply(reply);
  } else if (step < step_data()) {
    on_rcpt_reply(reply, step - step_first_rcpt);
  } else if (_bdat) {
    on_bdat_reply(reply);
  } else {
    on_data_reply(reply);
  }
  if (!_transaction_active) return;
  if (_mail_failed && _reply_step == _send_step && _send_step <= step_data()) {
    // Every command written after the failed MAIL is answered and no more will be written.
    conclude(_bulk_outcome, _bulk_reply, false);
    return;
  }
  if (_reply_step < step_end()) _phase = phase_for_step(_reply_step);
  pump();
}

void client_session::on_mail_reply(const parsed_reply& reply) noexcept {
  _reply_step = skip_unsendable(step_first_rcpt);
  if (reply.positive()) return;
  // RFC 2920 §3.1: the RCPTs and DATA already in flight will be refused; each recipient takes
  // MAIL's reply, which says why, and nothing more is written.
  _mail_failed = true;
  _stop_sending = true;
  fail_all_recipients(outcome_of(reply), reply);
}

void client_session::on_rcpt_reply(const parsed_reply& reply, std::uint32_t index) noexcept {
  _reply_step = skip_unsendable(step_first_rcpt + index + 1);
  if (_mail_failed) return;  // already reported with MAIL's reply
  if (reply.positive()) ++_accepted;
  _replied_index = index;
  _replied_outcome = outcome_of(reply);
  // Everything before the next RCPT awaited is decided (skipped recipients included).
  _known_end = std::min(recipient_count(), _reply_step - step_first_rcpt);
}

void client_session::on_data_reply(const parsed_reply& reply) noexcept {
  if (reply.code == 354) {
    _reply_step = step_end();
    if (_mail_failed || _accepted == 0) {
      // RFC 2920 §3.1: DATA was accepted although no recipient was; end it with a lone ".".
      _empty_body = true;
      RINGMTA_ASSERT(output_room() >= 3);
      append(".\r\n");
      _phase = client_phase::data_end;
      return;
    }
    _phase = client_phase::body;
    queue(client_event_kind::send_body, client_outcome::accepted, client_close_reason::quit,
          nullptr);
    return;
  }
  if (reply.positive() || reply.code_class() == 3) {
    fail_connection(client_close_reason::reply_unexpected, reply, false);
    return;
  }
  // DATA refused: the server may still hold MAIL and the RCPTs, so RSET next time.
  if (_mail_failed) {
    conclude(_bulk_outcome, _bulk_reply, false);
  } else if (_accepted == 0) {
    conclude(client_outcome::no_recipients, reply, true);
  } else {
    conclude(outcome_of(reply), reply, true);
  }
}

void client_session::on_data_end_reply(const parsed_reply& reply) noexcept {
  if (_empty_body) {
    // The lone "." ended a transaction without recipients; whatever its reply, nothing was sent.
    if (_mail_failed) {
      conclude(_bulk_outcome, _bulk_reply, false);
    } else {
      _message_reply.assign_local(554, enhanced(5, 5, 1), "no valid recipients");
      conclude(client_outcome::no_recipients, _message_reply, false);
    }
    return;
  }
  if (reply.code_class() == 3) {
    fail_connection(client_close_reason::reply_unexpected, reply, false);
    return;
  }
  // RFC 5321 §4.2.5: 2xx means the server took responsibility for every accepted recipient.
  conclude(outcome_of(reply), reply, false);
}

// The reply to "BDAT n LAST": the chunk was read either way (RFC 3030 §2); 2xx delivers.
void client_session::on_bdat_reply(const parsed_reply& reply) noexcept {
  _reply_step = step_end();
  if (_mail_failed) {
    conclude(_bulk_outcome, _bulk_reply, false);  // BDAT was refused for want of MAIL
  } else if (_accepted == 0) {
    if (reply.positive()) {
      _message_reply.assign_local(554, enhanced(5, 5, 1), "no valid recipients");
      conclude(client_outcome::no_recipients, _message_reply, true);
    } else {
      conclude(client_outcome::no_recipients, reply, true);
    }
  } else if (reply.positive()) {
    conclude(client_outcome::accepted, reply, false);
  } else {
    conclude(outcome_of(reply), reply, true);  // RSET first next time, to be sure
  }
}

void client_session::fail_all_recipients(client_outcome outcome,
                                         const parsed_reply& reply) noexcept {
  _bulk_reply.copy_from(reply);
  _bulk_outcome = outcome;
  _bulk_from = _known_end;
  _known_end = recipient_count();
}

void client_session::conclude(client_outcome outcome, const parsed_reply& reply,
                              bool rset_needed) noexcept {
  _transaction_active = false;
  _stop_sending = true;
  _rset_needed = rset_needed;
  queue(client_event_kind::message_result, outcome, client_close_reason::quit, &reply);
  if (_phase != client_phase::closed) enter_ready();
}

}  // namespace ringmta::smtp
