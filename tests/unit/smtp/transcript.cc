#include "transcript.h"

#include <cstdio>
#include <random>
#include <sstream>

namespace ringmta::smtp::testing {
namespace {

std::string expand_repeats(const std::string& text) {
  std::string out;
  std::size_t at = 0;
  while (true) {
    const std::size_t open = text.find("{{", at);
    if (open == std::string::npos) break;
    const std::size_t close = text.find("}}", open);
    const std::size_t star = text.find('*', open);
    if (close == std::string::npos || star == std::string::npos || star > close) break;
    out += text.substr(at, open - at);
    const long count = std::stol(text.substr(open + 2, star - open - 2));
    const std::string unit = text.substr(star + 1, close - star - 1);
    for (long i = 0; i < count; ++i) out += unit;
    at = close + 2;
  }
  return out + text.substr(at);
}

bool parse_verdict(std::istringstream& in, scripted_verdict& v) {
  std::string word;
  if (!(in >> word)) return false;
  if (word == "pending") {
    v.pending = true;
    if (!(in >> word)) return false;
  }
  if (word == "accept") return true;
  v.accept = false;
  v.code = static_cast<std::uint16_t>(std::stoi(word));
  in >> v.enhanced;
  if (v.enhanced == "-") v.enhanced.clear();
  std::getline(in, v.text);
  if (!v.text.empty() && v.text[0] == ' ') v.text.erase(0, 1);
  v.text = unescape(v.text);
  return true;
}

}  // namespace

std::string unescape(const std::string& raw) {
  const std::string text = expand_repeats(raw);
  std::string out;
  for (std::size_t i = 0; i < text.size(); ++i) {
    if (text[i] != '\\' || i + 1 >= text.size()) {
      out += text[i];
      continue;
    }
    const char c = text[++i];
    if (c == 'r') out += '\r';
    else if (c == 'n') out += '\n';
    else if (c == 't') out += '\t';
    else if (c == 'x' && i + 2 < text.size() + 1) {
      out += static_cast<char>(std::stoi(text.substr(i + 1, 2), nullptr, 16));
      i += 2;
    } else out += c;
  }
  return out;
}

std::string escape(std::string_view bytes) {
  std::string out;
  for (const char ch : bytes) {
    const unsigned char c = static_cast<unsigned char>(ch);
    if (c == '\r') out += "\\r";
    else if (c == '\n') out += "\\n";
    else if (c == '\\') out += "\\\\";
    else if (c < 32 || c > 126) {
      char hex[8];
      std::snprintf(hex, sizeof hex, "\\x%02x", c);
      out += hex;
    } else out += static_cast<char>(c);
  }
  return out;
}

transcript parse_transcript(const std::string& name, const std::string& text) {
  transcript t;
  t.name = name;
  t.steps.emplace_back();
  std::istringstream lines(text);
  std::string line;
  int number = 0;
  while (std::getline(lines, line)) {
    ++number;
    if (line.empty() || line[0] == '#') continue;
    const std::string rest = line.size() > 3 ? line.substr(3) : "";
    if (line.rfind("C:", 0) == 0) {
      t.steps.back().input += unescape(rest) + "\r\n";
    } else if (line.rfind("R:", 0) == 0) {
      t.steps.back().input += unescape(rest);
    } else if (line.rfind("S:", 0) == 0) {
      t.expected_output += unescape(rest) + "\r\n";
    } else if (line.rfind("E:", 0) == 0) {
      t.expected_events.push_back(expand_repeats(rest));
      t.check_events = true;
    } else if (line.rfind("V:", 0) == 0) {
      std::istringstream in(rest);
      std::string event;
      scripted_verdict v;
      if (!(in >> event) || !parse_verdict(in, v)) {
        t.error = "line " + std::to_string(number) + ": bad verdict";
        return t;
      }
      t.verdicts[event].push_back(v);
    } else if (line.rfind("!config", 0) == 0) {
      std::istringstream in(line.substr(7));
      std::string pair;
      while (in >> pair) {
        const std::size_t eq = pair.find('=');
        t.config[pair.substr(0, eq)] = eq == std::string::npos ? "1" : pair.substr(eq + 1);
      }
    } else if (line.rfind("!refuse", 0) == 0) {
      t.refuse = true;
      t.refuse_text = line.size() > 8 ? line.substr(8) : "No SMTP service here";
    } else if (line[0] == '!') {
      t.steps.back().action = line.substr(1);
      t.steps.emplace_back();
    } else {
      t.error = "line " + std::to_string(number) + ": unknown directive: " + line;
      return t;
    }
  }
  return t;
}

namespace {

// Records every handler call as one event string and answers from the script.
class recording_handler final : public server_handler {
 public:
  explicit recording_handler(const transcript& script) : _verdicts(script.verdicts) {}

  std::vector<std::string> events;
  verdict resume_answer = verdict::accept();
  std::string resume_text;  // storage for resume_answer's text

  verdict on_helo(std::string_view domain, bool extended) noexcept override {
    record(std::string(extended ? "ehlo " : "helo ") + escape(domain));
    return answer("helo");
  }
  verdict on_mail_from(const mailbox& box, const mail_parameters& p) noexcept override {
    std::string e = "mail <" + escape(box.address) + ">";
    if (p.has_size) e += " SIZE=" + std::to_string(p.size);
    if (p.body != body_type::unspecified) e += " BODY=" + std::string(to_string(p.body));
    if (p.smtputf8) e += " SMTPUTF8";
    if (p.ret == dsn_return::full) e += " RET=FULL";
    if (p.ret == dsn_return::headers) e += " RET=HDRS";
    if (!p.envid.empty()) e += " ENVID=" + escape(p.envid);
    if (!p.auth.empty()) e += " AUTH=" + escape(p.auth);
    record(e);
    return answer("mail");
  }
  verdict on_rcpt_to(const mailbox& box, const rcpt_parameters& p) noexcept override {
    std::string e = "rcpt <" + escape(box.address) + ">";
    if (box.is_postmaster) e += " postmaster";
    if (p.notify != 0) {
      e += " NOTIFY=";
      if (p.notify & notify_never) e += "NEVER";
      if (p.notify & notify_success) e += "S";
      if (p.notify & notify_failure) e += "F";
      if (p.notify & notify_delay) e += "D";
    }
    if (!p.orcpt_type.empty()) e += " ORCPT=" + escape(p.orcpt_type) + ";" + escape(p.orcpt);
    record(e);
    return answer("rcpt");
  }
  verdict on_data_start() noexcept override {
    record("data_start");
    return answer("data_start");
  }
  void on_body(std::string_view slice, body_form form) noexcept override {
    const std::string kind = form == body_form::wire ? "wire" : "raw";
    if (!_body_open || _body_kind != kind) {
      flush_body();
      _body_open = true;
      _body_kind = kind;
    }
    _body += slice;
  }
  verdict on_data_end(const body_summary& s) noexcept override {
    record("data_end wire=" + std::to_string(s.wire_bytes) + " message=" +
           std::to_string(s.message_bytes) + " lines=" + std::to_string(s.line_count) +
           " chunks=" + std::to_string(s.chunk_count) + " 8bit=" + (s.eight_bit ? "1" : "0") +
           " normalized=" + (s.normalized ? "1" : "0") +
           (s.final_crlf_added ? " final_crlf_added" : "") + (s.folded ? " folded" : "") +
           (s.declared == body_type::unspecified
                ? ""
                : " body=" + std::string(to_string(s.declared))));
    return answer("data_end");
  }
  void on_data_aborted(abort_reason reason) noexcept override {
    // Like an embedder: drop the partial body. How much of it arrived depends on the splits.
    _body.clear();
    _body_open = false;
    record("aborted " + std::string(describe(reason)));
  }
  void on_reset() noexcept override { record("reset"); }
  verdict on_vrfy(std::string_view argument) noexcept override {
    record("vrfy " + escape(argument));
    return answer("vrfy");
  }
  verdict on_starttls() noexcept override {
    record("starttls");
    return answer("starttls");
  }
  verdict on_auth(std::string_view mechanism, std::string_view initial) noexcept override {
    record("auth " + escape(mechanism) + (initial.empty() ? "" : " " + escape(initial)));
    return answer("auth");
  }
  verdict on_auth_response(std::string_view line) noexcept override {
    record("auth_response " + escape(line));
    return answer("auth_response");
  }
  verdict on_xclient(const xclient_attributes& a) noexcept override {
    std::string e = "xclient";
    const std::pair<const char*, const xclient_value*> fields[] = {
        {"NAME", &a.name}, {"ADDR", &a.address}, {"PORT", &a.port}, {"PROTO", &a.protocol},
        {"HELO", &a.helo}, {"LOGIN", &a.login}, {"DESTADDR", &a.destination_address},
        {"DESTPORT", &a.destination_port}};
    for (const auto& [name, value] : fields) {
      if (value->state == xclient_state::absent) continue;
      e += std::string(" ") + name + "=" +
           (value->given() ? escape(value->text) : std::string("[UNAVAILABLE]"));
    }
    if (a.address_v6) e += " v6";
    record(e);
    return answer("xclient");
  }
  void on_xclient_refused() noexcept override { record("xclient_refused"); }

  void flush_body() {
    if (!_body_open) return;
    if (_body.size() <= 300)
      events.push_back("body " + _body_kind + " \"" + escape(_body) + "\"");
    else
      events.push_back("body " + _body_kind + " " + std::to_string(_body.size()) + " octets");
    _body.clear();
    _body_open = false;
  }

 private:
  void record(std::string event) {
    flush_body();
    events.push_back(std::move(event));
  }
  verdict answer(const std::string& event) {
    auto found = _verdicts.find(event);
    if (found == _verdicts.end() || found->second.empty()) return verdict::accept();
    _current = found->second.front();
    found->second.pop_front();
    const verdict v = _current.accept ? verdict::accept()
                                      : verdict::respond(_current.code, _current.enhanced,
                                                         _current.text);
    if (!_current.pending) return v;
    resume_answer = v;
    return verdict::pending();
  }

  std::map<std::string, std::deque<scripted_verdict>> _verdicts;
  scripted_verdict _current;  // owns the text of the verdict last returned
  bool _body_open = false;
  std::string _body_kind;
  std::string _body;
};

std::string config_value(const transcript& t, const std::string& key, const std::string& dflt) {
  const auto found = t.config.find(key);
  return found == t.config.end() ? dflt : found->second;
}

struct config_holder {
  std::string hostname, greeting, mechanisms;
  server_config config;
};

void build_config(const transcript& t, config_holder& h) {
  auto flag = [&](const char* key, bool dflt) {
    return config_value(t, key, dflt ? "1" : "0") == "1";
  };
  auto number = [&](const char* key, std::uint64_t dflt) {
    return std::stoull(config_value(t, key, std::to_string(dflt)));
  };
  h.hostname = config_value(t, "hostname", "mx.example.net");
  h.greeting = config_value(t, "greeting", "ESMTP ringmta");
  for (auto& c : h.greeting) if (c == '_') c = ' ';
  h.mechanisms = config_value(t, "auth_mechanisms", "PLAIN,LOGIN");
  for (auto& c : h.mechanisms) if (c == ',') c = ' ';
  server_config& c = h.config;
  c.hostname = h.hostname;
  c.greeting_text = h.greeting;
  c.auth_mechanisms = h.mechanisms;
  c.limits.command_line_bytes_max =
      static_cast<std::uint32_t>(number("command_line_bytes_max", 512));
  c.limits.text_line_bytes_max = static_cast<std::uint32_t>(number("text_line_bytes_max", 1000));
  c.limits.message_bytes_max = number("message_bytes_max", 10485760);
  c.limits.recipients_max = static_cast<std::uint32_t>(number("recipients_max", 100));
  c.limits.errors_max = static_cast<std::uint32_t>(number("errors_max", 20));
  c.starttls_offered = flag("starttls", false);
  c.tls_active = flag("tls_active", false);
  c.auth_offered = flag("auth", false);
  c.auth_requires_tls = flag("auth_requires_tls", true);
  c.vrfy_enabled = flag("vrfy", true);
  c.bare_line_ending = config_value(t, "bare", "reject") == "normalize"
                           ? bare_line_ending_policy::normalize
                           : bare_line_ending_policy::reject;
  c.long_lines = config_value(t, "long_lines", "reject") == "fold" ? long_line_policy::fold
                                                                    : long_line_policy::reject;
  c.extensions.pipelining = flag("pipelining", true);
  c.extensions.size = flag("size", true);
  c.extensions.eight_bit_mime = flag("8bitmime", true);
  c.extensions.smtputf8 = flag("smtputf8", true);
  c.extensions.enhanced_status_codes = flag("enhancedstatuscodes", true);
  c.extensions.chunking = flag("chunking", true);
  c.extensions.binary_mime = flag("binarymime", true);
  c.extensions.dsn = flag("dsn", true);
}

std::vector<std::size_t> chunk_sizes(std::size_t total, split_mode mode, std::mt19937& rng) {
  std::vector<std::size_t> sizes;
  if (mode == split_mode::whole) {
    if (total > 0) sizes.push_back(total);
    return sizes;
  }
  std::uniform_int_distribution<std::size_t> pick(1, 40);
  std::size_t left = total;
  while (left > 0) {
    std::size_t n = mode == split_mode::bytewise ? 1 : pick(rng);
    if (n > left) n = left;
    sizes.push_back(n);
    left -= n;
  }
  return sizes;
}

// Plays the embedder: keeps what feed() did not consume, drains output, answers pending
// verdicts, and checks the session's promises while doing so.
void feed_step(server_session& session, recording_handler& handler, const std::string& input,
               split_mode mode, std::mt19937& rng, run_result& result) {
  std::string buffered;
  std::size_t at = 0;
  for (const std::size_t size : chunk_sizes(input.size(), mode, rng)) {
    buffered += input.substr(at, size);
    at += size;
    for (int rounds = 0; !buffered.empty(); ++rounds) {
      if (rounds > 100000) {
        result.failure = "feed() made no progress";
        return;
      }
      const std::size_t used = session.feed(buffered);
      if (used > buffered.size()) result.failure = "feed() consumed more than given";
      buffered.erase(0, used);
      const std::string_view out = session.output();
      result.output.append(out);
      session.consume_output(out.size());
      if (session.awaiting_verdict()) {
        handler.flush_body();
        session.resume(handler.resume_answer);
        continue;
      }
      if (used == 0 && !session.output_full()) break;  // needs more input (cannot happen)
      if (session.wants_close()) {
        buffered.clear();
        break;
      }
    }
  }
}

}  // namespace

run_result run_transcript(const transcript& script, split_mode mode, std::uint32_t seed) {
  run_result result;
  config_holder holder;
  build_config(script, holder);
  recording_handler handler(script);
  server_session session(holder.config, handler);
  session.offer_xclient(config_value(script, "xclient", "0") == "1");
  if (script.refuse) session.start_refusing(script.refuse_text);
  else session.start();
  std::mt19937 rng(seed);
  for (const transcript_step& step : script.steps) {
    feed_step(session, handler, step.input, mode, rng, result);
    if (step.action == "timeout") session.on_timeout();
    else if (step.action == "shutdown") session.shutdown();
    else if (step.action == "tls") session.tls_established();
    else if (step.action == "lost") session.connection_lost();
    else if (step.action == "closed" && !session.wants_close())
      result.failure += "expected the session to want close; ";
    else if (step.action == "open" && session.wants_close())
      result.failure += "expected the session to stay open; ";
    else if (!step.action.empty() && step.action != "closed" && step.action != "open")
      result.failure += "unknown action !" + step.action + "; ";
    const std::string_view out = session.output();
    result.output.append(out);
    session.consume_output(out.size());
  }
  handler.flush_body();
  result.events = handler.events;
  return result;
}

}  // namespace ringmta::smtp::testing
