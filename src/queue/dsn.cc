// queue::dsn: RFC 3464 delivery status notifications in wire form. See dsn.h for the choices.
#include "ringmta/queue/dsn.h"

#include <fmt/format.h>

#include <algorithm>
#include <cerrno>

#include "ringmta/spool/message_id.h"

namespace ringmta::queue {

namespace {

constexpr std::size_t line_octets_max = 998;  // RFC 5322 §2.1.1, without CRLF
constexpr std::size_t fold_column = 78;       // RFC 5322 §2.1.1 SHOULD
constexpr std::size_t address_bytes_max = 512;
constexpr std::size_t field_bytes_max = 512;

bool is_ascii(std::string_view text) noexcept {
  return std::all_of(text.begin(), text.end(),
                     [](char c) { return static_cast<unsigned char>(c) < 0x80; });
}

int hex_value(char c) noexcept {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  return -1;
}

// RFC 3461 §4: xtext "+" 2HEXCHAR; a malformed escape stays as it is.
std::string xtext_decode(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (std::size_t i = 0; i < text.size(); ++i) {
    if (text[i] == '+' && i + 2 < text.size()) {
      int high = hex_value(text[i + 1]), low = hex_value(text[i + 2]);
      if (high >= 0 && low >= 0) {
        out.push_back(static_cast<char>(high * 16 + low));
        i += 2;
        continue;
      }
    }
    out.push_back(text[i]);
  }
  return out;
}

// A field value we can put on a line: control characters become spaces, non-ASCII becomes
// '?' unless UTF-8 is allowed (global mode), cut to `bytes_max` on a character boundary.
std::string clean(std::string_view text, bool utf8, std::size_t bytes_max) {
  std::string out;
  out.reserve(std::min(text.size(), bytes_max));
  for (char c : text) {
    auto byte = static_cast<unsigned char>(c);
    if (byte < 0x20 || byte == 0x7f) out.push_back(' ');
    else if (byte >= 0x80 && !utf8) out.push_back('?');
    else out.push_back(c);
  }
  if (out.size() > bytes_max) {
    std::size_t cut = bytes_max;
    while (cut > 0 && (static_cast<unsigned char>(out[cut]) & 0xc0) == 0x80) --cut;
    out.resize(cut);
  }
  return out;
}

// Appends `first` + `value` as lines of at most fold_column octets where spaces allow, never
// more than line_octets_max; continuation lines start with `indent` (folding whitespace for
// header fields, RFC 5322 §2.2.3; plain indentation for the human-readable text).
void put_folded(std::string& out, std::string_view first, std::string_view value,
                std::string_view indent) {
  std::string line(first);
  std::size_t at = 0;
  while (at < value.size()) {
    std::size_t space = value.find(' ', at + 1);
    std::size_t word_end = space == std::string_view::npos ? value.size() : space;
    std::string_view word = value.substr(at, word_end - at);
    bool line_has_text = line.size() > indent.size() && line != indent;
    if (line_has_text && line.size() + word.size() > fold_column && word.front() == ' ') {
      out.append(line).append("\r\n");
      line.assign(indent);
      word.remove_prefix(1);
    }
    // A word too long for any line is split (a space appears where it was cut).
    while (line.size() + word.size() > line_octets_max - 2) {
      std::size_t room = line_octets_max - 2 - line.size();
      line.append(word.substr(0, room));
      out.append(line).append("\r\n");
      line.assign(indent);
      word.remove_prefix(room);
    }
    line.append(word);
    at = word_end;
  }
  out.append(line).append("\r\n");
}

void put_field(std::string& out, std::string_view name, std::string_view value) {
  std::string first(name);
  first.append(": ");
  put_folded(out, first, value, " ");
}

// Appends CRLF-terminated `text`, doubling a "." at the start of each line (RFC 5321 §4.5.2).
void append_stuffed(std::string& out, std::string_view text) {
  bool line_start = true;
  for (char c : text) {
    if (line_start && c == '.') out.push_back('.');
    out.push_back(c);
    line_start = c == '\n';
  }
}

const char* action_name(dsn_action action) noexcept {
  switch (action) {
    case dsn_action::failed: return "failed";
    case dsn_action::delayed: return "delayed";
    case dsn_action::delivered: return "delivered";
    case dsn_action::relayed: return "relayed";
    case dsn_action::expanded: return "expanded";
  }
  return "failed";
}

status_code status_of(const dsn_recipient& recipient) noexcept {
  if (recipient.status.valid()) return recipient.status;
  switch (recipient.action) {
    case dsn_action::failed: return status_code{5, 0, 0};
    case dsn_action::delayed: return status_code{4, 0, 0};
    default: return status_code{2, 0, 0};
  }
}

// ---------------------------------------------------------------- the returned original

struct returned_part {
  std::string bytes;  // wire form, whole lines, ends with CRLF (or empty)
  bool full = false;
  bool cut = false;
  bool eight_bit = false;
};

bool wants_full(const dsn_request& request) noexcept {
  bool any_failed = std::any_of(request.recipients.begin(), request.recipients.end(),
                                [](const auto& r) { return r.action == dsn_action::failed; });
  // RFC 3461 §4.3: content only in a DSN that reports a failure.
  if (!any_failed || request.original == nullptr) return false;
  switch (request.original->ret) {
    case spool::dsn_return::headers: return false;
    case spool::dsn_return::full:
      return request.original_body_bytes <= request.policy.full_bytes_max_requested;
    case spool::dsn_return::unspecified:
      return request.original_body_bytes <= request.policy.full_bytes_max_default;
  }
  return false;
}

// Length of the line at `at` (up to and including its LF, or to the end), and whether it is
// a line SMTP may carry: CRLF-terminated, no other CR, no NUL, dot-stuffed, <= 998 octets
// unstuffed.
struct line_info {
  std::size_t length;
  std::size_t content;  // without the line ending
  bool safe;
};

line_info line_at(std::string_view text, std::size_t at) noexcept {
  std::size_t lf = text.find('\n', at);
  std::size_t end = lf == std::string_view::npos ? text.size() : lf + 1;
  std::string_view line = text.substr(at, end - at);
  bool crlf = line.size() >= 2 && line.ends_with("\r\n");
  std::string_view content = crlf ? line.substr(0, line.size() - 2) : line;
  if (lf != std::string_view::npos && !crlf) return {line.size(), content.size(), false};
  // A line starting with a single "." is not dot-stuffed wire form (the input is not what the
  // spool stores): never copy it verbatim into a wire-form DSN.
  bool stuffed = !content.starts_with(".") || content.starts_with("..");
  bool safe = stuffed && content.find('\r') == std::string_view::npos &&
              content.find('\0') == std::string_view::npos;
  std::size_t octets = content.size() - (content.starts_with("..") ? 1 : 0);
  return {line.size(), content.size(), safe && octets <= line_octets_max};
}

returned_part select_original(const dsn_request& request) {
  returned_part part;
  part.full = wants_full(request);
  std::uint64_t needed = dsn_original_bytes_needed(request);
  std::string text;
  for (std::string_view piece : request.original_body) {
    if (text.size() >= needed) break;
    text.append(piece.substr(0, static_cast<std::size_t>(needed - text.size())));
  }
  if (part.full && text.size() < request.original_body_bytes) part.full = false;  // not given
  if (part.full) {
    for (std::size_t at = 0; at < text.size() && part.full;) {
      line_info line = line_at(text, at);
      part.full = line.safe;
      at += line.length;
    }
  }
  if (part.full) {
    part.bytes = std::move(text);
    if (!part.bytes.empty() && !part.bytes.ends_with("\r\n")) part.bytes.append("\r\n");
  } else {
    // The header section: whole lines up to the empty line that ends it.
    std::size_t at = 0;
    bool ended = false;
    while (at < text.size()) {
      line_info line = line_at(text, at);
      bool last_partial = at + line.length == text.size() && !text.ends_with("\n") &&
                          text.size() < request.original_body_bytes;
      if (!line.safe || last_partial) {
        part.cut = true;
        break;
      }
      if (line.content == 0) {
        ended = true;
        break;
      }
      at += line.length;
    }
    if (!ended && !part.cut && text.size() < request.original_body_bytes) part.cut = true;
    part.bytes = text.substr(0, at);
    if (!part.bytes.empty() && !part.bytes.ends_with("\r\n")) part.bytes.append("\r\n");
  }
  part.eight_bit = !is_ascii(part.bytes);
  return part;
}

// ---------------------------------------------------------------- the generated parts

struct dsn_mode {
  bool global = false;      // RFC 6533 types (the original was SMTPUTF8)
};

std::string address_field(std::string_view address, bool global) {
  std::string value = clean(address, global, address_bytes_max);
  // RFC 6533 §3: "utf-8" address type for non-ASCII addresses.
  return (global && !is_ascii(value) ? "utf-8; " : "rfc822; ") + value;
}

std::string original_recipient_field(std::string_view orcpt, bool global) {
  std::size_t semicolon = orcpt.find(';');
  if (semicolon == std::string_view::npos || semicolon == 0) return {};
  std::string type = clean(orcpt.substr(0, semicolon), false, 32);
  std::string value = clean(xtext_decode(orcpt.substr(semicolon + 1)), global, address_bytes_max);
  return type + "; " + value;
}

void put_per_recipient(std::string& out, const dsn_recipient& recipient, bool global,
                       const dsn_policy& policy) {
  out.append("\r\n");  // RFC 3464 §2.1: a blank line before each per-recipient group
  if (!recipient.orcpt.empty()) {
    std::string original = original_recipient_field(recipient.orcpt, global);
    if (!original.empty()) put_field(out, "Original-Recipient", original);
  }
  put_field(out, "Final-Recipient", address_field(recipient.address, global));
  put_field(out, "Action", action_name(recipient.action));
  put_field(out, "Status", format_status_code(status_of(recipient)).data());
  if (!recipient.remote_mta.empty())
    put_field(out, "Remote-MTA", "dns; " + clean(recipient.remote_mta, false, field_bytes_max));
  if (!recipient.diagnostic.empty()) {
    put_field(out, "Diagnostic-Code",
              clean(recipient.diagnostic_type, false, 32) + "; " +
                  clean(recipient.diagnostic, global, policy.diagnostic_bytes_max));
  }
  if (recipient.last_attempt_seconds != 0)
    put_field(out, "Last-Attempt-Date", format_rfc5322_date(recipient.last_attempt_seconds));
  if (recipient.action == dsn_action::delayed && recipient.will_retry_until_seconds != 0)
    put_field(out, "Will-Retry-Until", format_rfc5322_date(recipient.will_retry_until_seconds));
}

std::string delivery_status(const dsn_request& request, bool global) {
  const spool::envelope& original = *request.original;
  std::string out;
  // RFC 3464 §2.2: per-message fields.
  put_field(out, "Reporting-MTA", "dns; " + clean(request.reporting_mta, false, field_bytes_max));
  put_field(out, "X-Ringmta-Queue-ID", spool::format_message_id(original.id).data());
  if (!original.envid.empty())
    put_field(out, "Original-Envelope-Id", clean(xtext_decode(original.envid), false, 100));
  if (original.received_seconds != 0)
    put_field(out, "Arrival-Date", format_rfc5322_date(original.received_seconds));
  for (const dsn_recipient& recipient : request.recipients)
    put_per_recipient(out, recipient, global, request.policy);
  return out;
}

struct report_kind {
  bool failed = false, delayed = false, success = false, relayed = false;
};

report_kind kind_of(std::span<const dsn_recipient> recipients) noexcept {
  report_kind kind;
  for (const auto& r : recipients) {
    kind.failed |= r.action == dsn_action::failed;
    kind.delayed |= r.action == dsn_action::delayed;
    kind.success |= r.action != dsn_action::failed && r.action != dsn_action::delayed;
    kind.relayed |= r.action == dsn_action::relayed;
  }
  return kind;
}

std::string human_text(const dsn_request& request, bool global, const returned_part& part) {
  report_kind kind = kind_of(request.recipients);
  std::string out;
  put_folded(out, "", "This is the mail system at host " +
                          clean(request.reporting_mta, false, field_bytes_max) + ".", "");
  out.append("\r\n");
  if (kind.failed) {
    put_folded(out, "", std::string("Your message could not be delivered to one or more of its "
                                    "recipients. This is a permanent error; the addresses are "
                                    "listed below. Attached are a delivery report and ") +
                            (part.full ? "your message." : "the headers of your message."), "");
  } else if (kind.delayed) {
    std::int64_t until = 0;
    for (const auto& r : request.recipients) until = std::max(until, r.will_retry_until_seconds);
    std::string text = "Your message has not been delivered yet to the recipients listed below. "
                       "The mail system keeps trying; you do not need to send it again.";
    if (until != 0) text += " It gives up after " + format_rfc5322_date(until) + ".";
    put_folded(out, "", text, "");
  } else if (kind.relayed) {  // RFC 3461 §5.2.2.2 (the subject stays Postfix's, as for success)
    put_folded(out, "", "Your message was relayed to the recipients listed below, as you asked "
                        "to be told. The next mail server does not send delivery reports, so "
                        "you will get no further notice of its delivery.", "");
  } else {
    put_folded(out, "", "Your message was delivered to the recipients listed below, as you "
                        "asked to be told.", "");
  }
  out.append("\r\n");
  for (const dsn_recipient& recipient : request.recipients) {
    std::string line = "<" + clean(recipient.address, global, address_bytes_max) + "> (" +
                       action_name(recipient.action) + "): ";
    if (!recipient.diagnostic.empty()) {
      line += clean(recipient.diagnostic, global, request.policy.diagnostic_bytes_max);
    } else {
      line += std::string("status ") + format_status_code(status_of(recipient)).data();
    }
    if (!recipient.remote_mta.empty())
      line += " (remote host " + clean(recipient.remote_mta, false, field_bytes_max) + ")";
    put_folded(out, "", line, "    ");
  }
  return out;
}

// "=_" cannot start a quoted-printable line and the id makes it unique per DSN; the loop
// makes sure no part contains it anyway (RFC 2046 §5.1.1).
std::string pick_boundary(const dsn_request& request,
                          std::initializer_list<std::string_view> parts) {
  for (unsigned attempt = 0;; ++attempt) {
    std::string boundary = fmt::format(
        "=_ringmta_{}_{}", spool::format_message_id(request.dsn_id).data(), attempt);
    bool clash = std::any_of(parts.begin(), parts.end(), [&](std::string_view part) {
      return part.find(boundary) != std::string_view::npos;
    });
    if (!clash) return boundary;
  }
}

}  // namespace

bool should_send_dsn(std::string_view reverse_path, std::uint8_t notify,
                     dsn_action action) noexcept {
  // RFC 5321 §4.5.5 and §6.1: a message with the null reverse path never gets a notification.
  if (reverse_path.empty()) return false;
  if ((notify & spool::notify_never) != 0) return false;
  // RFC 3461 §4.1: absent NOTIFY is FAILURE or FAILURE,DELAY at the MTA's choice: the latter.
  std::uint8_t asked = notify != 0 ? notify : spool::notify_failure | spool::notify_delay;
  switch (action) {
    case dsn_action::failed: return (asked & spool::notify_failure) != 0;
    case dsn_action::delayed: return (asked & spool::notify_delay) != 0;
    case dsn_action::delivered:
    case dsn_action::relayed:
    case dsn_action::expanded: return (asked & spool::notify_success) != 0;
  }
  return false;
}

std::uint64_t dsn_original_bytes_needed(const dsn_request& request) noexcept {
  if (wants_full(request)) return request.original_body_bytes;
  return std::min(request.original_body_bytes, request.policy.headers_bytes_max);
}

std::string format_rfc5322_date(std::int64_t epoch_seconds) {
  static constexpr const char* days[] = {"Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"};
  static constexpr const char* months[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                           "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
  std::int64_t day = epoch_seconds >= 0 ? epoch_seconds / 86400 : (epoch_seconds - 86399) / 86400;
  std::int64_t second_of_day = epoch_seconds - day * 86400;
  // Civil date from days since 1970-01-01 (proleptic Gregorian, era arithmetic).
  std::int64_t z = day + 719468;
  std::int64_t era = (z >= 0 ? z : z - 146096) / 146097;
  std::int64_t day_of_era = z - era * 146097;
  std::int64_t year_of_era =
      (day_of_era - day_of_era / 1460 + day_of_era / 36524 - day_of_era / 146096) / 365;
  std::int64_t day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
  std::int64_t month_index = (5 * day_of_year + 2) / 153;  // 0 = March
  std::int64_t day_of_month = day_of_year - (153 * month_index + 2) / 5 + 1;
  std::int64_t month = month_index < 10 ? month_index + 3 : month_index - 9;
  std::int64_t year = year_of_era + era * 400 + (month <= 2 ? 1 : 0);
  std::int64_t weekday = ((day % 7) + 7) % 7;
  return fmt::format("{}, {:02} {} {:04} {:02}:{:02}:{:02} +0000", days[weekday], day_of_month,
                     months[month - 1], year, second_of_day / 3600, second_of_day / 60 % 60,
                     second_of_day % 60);
}

core::result<dsn_result> build_dsn(const dsn_request& request, std::string& out) {
  if (request.original == nullptr || request.original->reverse_path.empty() ||
      request.recipients.empty() || request.reporting_mta.empty())
    return core::fail(EINVAL);
  if (request.recipients.size() > request.policy.recipients_max) return core::fail(E2BIG);
  const spool::envelope& original = *request.original;
  bool global = original.smtputf8;  // RFC 6533
  returned_part part = select_original(request);
  std::string status = delivery_status(request, global);
  std::string text = human_text(request, global, part);
  std::string boundary = pick_boundary(request, {status, text, part.bytes});
  bool text_8bit = !is_ascii(text), status_8bit = !is_ascii(status);
  bool any_8bit = text_8bit || status_8bit || part.eight_bit;
  std::string recipient = clean(original.reverse_path, true, address_bytes_max);
  report_kind kind = kind_of(request.recipients);

  std::string head;
  put_field(head, "Date", format_rfc5322_date(request.now_seconds));
  put_field(head, "From", "Mail Delivery System <MAILER-DAEMON@" +
                              clean(request.reporting_mta, false, field_bytes_max) + ">");
  put_field(head, "To", "<" + recipient + ">");
  put_field(head, "Subject", kind.failed    ? "Undelivered Mail Returned to Sender"
                             : kind.delayed ? "Delayed Mail (still being retried)"
                                            : "Successful Mail Delivery Report");
  put_field(head, "Message-ID",
            fmt::format("<{}.dsn@{}>", spool::format_message_id(request.dsn_id).data(),
                        clean(request.reporting_mta, false, field_bytes_max)));
  put_field(head, "Auto-Submitted", "auto-replied");  // RFC 3834 §5
  put_field(head, "MIME-Version", "1.0");
  put_field(head, "Content-Type",
            fmt::format("multipart/report; report-type={}; boundary=\"{}\"",
                        global ? "global-delivery-status" : "delivery-status", boundary));
  put_field(head, "Content-Transfer-Encoding", any_8bit ? "8bit" : "7bit");
  head.append("\r\nThis is a MIME-encapsulated message.\r\n");

  auto part_head = [&](std::string_view description, std::string_view type, bool eight_bit) {
    std::string h = "\r\n--" + boundary + "\r\n";
    put_field(h, "Content-Description", description);
    put_field(h, "Content-Type", type);
    put_field(h, "Content-Transfer-Encoding", eight_bit ? "8bit" : "7bit");
    h.append("\r\n");
    return h;
  };
  std::size_t start = out.size();
  append_stuffed(out, head);
  append_stuffed(out, part_head("Notification",
                                text_8bit ? "text/plain; charset=utf-8"
                                          : "text/plain; charset=us-ascii", text_8bit));
  append_stuffed(out, text);
  append_stuffed(out, part_head("Delivery report",
                                global ? "message/global-delivery-status"
                                       : "message/delivery-status", status_8bit));
  append_stuffed(out, status);
  std::string_view returned_type =
      part.full ? (global ? "message/global" : "message/rfc822")
                : (global ? "message/global-headers" : "text/rfc822-headers");
  append_stuffed(out, part_head(part.full ? "Undelivered Message" : "Message Headers",
                                returned_type, part.eight_bit));
  out.append(part.bytes);  // already in wire form
  append_stuffed(out, "\r\n--" + boundary + "--\r\n");

  dsn_result result;
  result.body = any_8bit ? spool::body_type::eight_bit_mime : spool::body_type::seven_bit;
  result.smtputf8 = !is_ascii(recipient);
  result.returned_full = part.full;
  result.original_cut = part.cut;
  result.bytes = out.size() - start;
  return result;
}

}  // namespace ringmta::queue
