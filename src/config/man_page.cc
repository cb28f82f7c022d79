#include "ringmta/config/man_page.h"

#include <cctype>
#include <utility>

#include <fmt/format.h>

#include "ringmta/config/settings.h"

namespace ringmta::config {
namespace {

std::string_view trim(std::string_view text) {
  while (!text.empty() && (text.front() == ' ' || text.front() == '\t')) text.remove_prefix(1);
  while (!text.empty() && (text.back() == ' ' || text.back() == '\t' || text.back() == '\r'))
    text.remove_suffix(1);
  return text;
}

// Where a TOML comment starts on a line ('#' outside a string), or npos.
std::size_t comment_at(std::string_view line) {
  bool quoted = false;
  for (std::size_t i = 0; i < line.size(); ++i) {
    if (line[i] == '"' && (i == 0 || line[i - 1] != '\\')) quoted = !quoted;
    if (line[i] == '#' && !quoted) return i;
  }
  return std::string_view::npos;
}

// roff text: backslashes escaped, '-' as \- (so flags copy and paste), no line starting with
// a control character.
std::string roff(std::string_view text) {
  // The few non-ASCII characters our help texts use, as groff glyph names.
  static constexpr std::pair<std::string_view, std::string_view> glyphs[] = {
      {"\u00a7", "\\[sc]"}, {"\u2014", "\\[em]"}, {"\u2192", "\\[->]"}, {"\u2026", "..."}};
  std::string out;
  for (std::size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    bool replaced = false;
    for (const auto& [utf8, name] : glyphs) {
      if (text.substr(i, utf8.size()) != utf8) continue;
      out += name;
      i += utf8.size() - 1;
      replaced = true;
      break;
    }
    if (replaced) continue;
    if (c == '\\') out += "\\e";
    else if (c == '-') out += "\\-";
    else out += c;
  }
  if (!out.empty() && (out.front() == '.' || out.front() == '\'')) out.insert(0, "\\&");
  return out;
}

std::string sentence(std::string_view help) {
  std::string out = roff(help);
  if (!out.empty()) out[0] = static_cast<char>(std::toupper(static_cast<unsigned char>(out[0])));
  if (!out.empty() && out.back() != '.') out += '.';
  return out;
}

std::string default_of(const std::map<std::string, std::string>& defaults,
                       const std::string& key) {
  const auto found = defaults.find(key);
  return found == defaults.end() ? "see conf/ringmta.toml" : found->second;
}

std::string flag_usage(const setting_info& s) {
  // \% : never hyphenated (a flag must stay copyable).
  if (s.kind == setting_kind::boolean)
    return fmt::format("\\%\\fB{}\\fR[\\fB=true\\fR|\\fBfalse\\fR]", roff(s.flag));
  return fmt::format("\\%\\fB{}\\fR \\%\\fI{}\\fR", roff(s.flag), roff(s.value_name));
}

const char* const page8_head = R"(.SH NAME
ringmta \- mail transfer agent on a thread\-per\-core io_uring reactor
.SH SYNOPSIS
.B ringmta
[\fB\-\-config\fR \fIFILE\fR] [\fIOPTION\fR ...]
.br
.B ringmta spool ls
[\fIOPTION\fR ...] [\fB\-\-json\fR]
.br
.B ringmta spool cat
\fIID\fR [\fIOPTION\fR ...] [\fB\-\-wire\fR]
.br
.B ringmta spool export
\fIDIR\fR [\fIOPTION\fR ...]
.SH DESCRIPTION
.B ringmta
accepts mail by SMTP, stores every message durably (the 250 reply is sent only after the
message is on stable storage) and relays it onward by MX lookup, a per\-domain route or a
smarthost, retrying transient failures and returning delivery status notifications for
permanent ones.
.PP
Every setting is one TOML key in the configuration file (see
.BR ringmta.toml (5))
and one option below; options override the file. An invalid value is a start\-up error
naming the file, line and key (exit status 2).
.PP
The
.B spool
commands read a spool, even one a running daemon uses, and never change it.
.SH PRIVILEGES
Started as root,
.B ringmta
opens its listeners, its admin listener and its spool, hands the spool tree to the
\fB\-\-user\fR (default \fBringmta\fR), and runs as that user with no capabilities and
no_new_privs set. Started as another user holding CAP_NET_BIND_SERVICE (as the systemd unit
does), it binds its ports and drops that capability. It refuses to keep running as root
unless \fB\-\-allow\-root\fR is given. The configuration file, and any key file it names,
must be readable by the user for a reload.
.SH SYSTEMD
With NOTIFY_SOCKET set (Type=notify),
.B ringmta
sends READY=1 once its spool is recovered and its listeners are open, STATUS= lines,
STOPPING=1 on shutdown, and WATCHDOG=1 at half of WATCHDOG_USEC while every shard's event
loop keeps turning; a shard stuck for 5 seconds stops the pings, and \fB/health\fR on the
admin listener answers 503 naming it.
.SH OPTIONS
.TP
\fB\-\-config\fR \fIFILE\fR
The TOML configuration file (installed as /etc/ringmta/ringmta.toml).
.TP
\fB\-\-help\fR
Every option with its TOML key.
)";

const char* const page8_tail = R"(.SH SIGNALS
.TP
.BR SIGTERM ", " SIGINT
Stop accepting, let sessions finish for \fB\-\-shutdown\-grace\fR, answer 421 to the rest,
complete the spool's writes and exit 0.
.SH EXIT STATUS
0 after a clean stop; 2 for a configuration or start\-up error (the message says which
setting and what to do); 1 when a spool command fails.
.SH FILES
.TP
.I /etc/ringmta/ringmta.toml
The configuration (every key with its default).
.TP
.I /var/spool/ringmta
The spool: a directory per shard with segment files and a state journal.
.SH SEE ALSO
.BR ringmta.toml (5),
.BR systemd.service (5),
.BR sd_notify (3)
)";

const char* const page5_head = R"(.SH NAME
ringmta.toml \- configuration file of ringmta
.SH DESCRIPTION
The configuration of
.BR ringmta (8)
is a TOML file (/etc/ringmta/ringmta.toml) of the sections below. Every key has an option of
the same meaning, and options given to
.B ringmta
override the file. A key the daemon does not know, or a value it cannot use, is a start\-up
error naming the file, line and key (exit status 2). Sizes take k, M or G suffixes (binary
multiples); durations take s, m, h or d (and ms where noted); booleans are true or false.
)";

}  // namespace

std::map<std::string, std::string> documented_defaults(std::string_view conf_text) {
  std::map<std::string, std::string> out;
  std::string section;
  while (!conf_text.empty()) {
    const auto end = conf_text.find('\n');
    std::string_view line = trim(conf_text.substr(0, end));
    conf_text = end == std::string_view::npos ? std::string_view() : conf_text.substr(end + 1);
    const bool commented = !line.empty() && line.front() == '#';
    if (commented) line = trim(line.substr(1));
    if (line.starts_with("[[")) {  // an array of tables ([[dkim]]): one setting, a list
      const auto name = std::string(line.substr(2, line.find("]]") - 2));
      if (!out.count(name)) out[name] = "none";
      section = name;
      continue;
    }
    if (!commented && !line.empty() && line.front() == '[') {
      section = std::string(line.substr(1, line.find(']') - 1));
      out[section] = "an empty table";  // [relay.routes]: a setting that is a table
      continue;
    }
    const auto comment = comment_at(line);
    const auto equals = line.find('=');
    if (equals == std::string_view::npos || equals > comment) continue;
    const auto key = fmt::format("{}.{}", section, trim(line.substr(0, equals)));
    const auto value = trim(line.substr(equals + 1, comment == std::string_view::npos
                                                        ? std::string_view::npos
                                                        : comment - equals - 1));
    if (!commented) {
      out[key] = std::string(value);
    } else if (!out.count(key)) {
      const auto note = comment == std::string_view::npos ? std::string_view()
                                                          : line.substr(comment + 1);
      const auto said = note.find("default:");
      out[key] = said == std::string_view::npos ? "unset"
                                                : std::string(trim(note.substr(said + 8)));
    }
  }
  return out;
}

std::vector<std::string> missing_defaults(std::string_view conf_text) {
  const auto defaults = documented_defaults(conf_text);
  std::vector<std::string> out;
  for (const auto& s : describe())
    if (!defaults.count(s.key)) out.push_back(s.key);
  return out;
}

std::string man_page(int section, std::string_view conf_text, std::string_view version) {
  const auto defaults = documented_defaults(conf_text);
  const auto settings = describe();
  std::string out = fmt::format(".\\\" Generated from src/config/settings.cc by ringmta-man.\n"
                                ".TH {} {} \"\" \"ringmta {}\" \"{}\"\n",
                                section == 8 ? "RINGMTA" : "RINGMTA.TOML", section, version,
                                section == 8 ? "System Manager's Manual" : "File Formats");
  if (section == 8) {
    out += page8_head;
    for (const auto& s : settings)
      out += fmt::format(".TP\n{}\n{}\nTOML key \\%\\fB{}\\fR; default \\fB{}\\fR.\n",
                         flag_usage(s), sentence(s.help), roff(s.key),
                         roff(default_of(defaults, s.key)));
    return out + page8_tail;
  }
  out += page5_head;
  std::string current;
  for (const auto& s : settings) {
    const auto dot = s.key.find('.');
    if (dot == std::string::npos) {  // a top-level array of tables: [[dkim]]
      out += fmt::format(".SH [[{}]]\n.TP\none table each, default {}\n{}\nOption: {}\n",
                         roff(s.key), roff(default_of(defaults, s.key)), sentence(s.help),
                         flag_usage(s));
      current.clear();
      continue;
    }
    const std::string table = s.key.substr(0, dot);
    if (table != current) {
      out += fmt::format(".SH [{}]\n", table);
      current = table;
    }
    out += fmt::format(".TP\n\\fB{}\\fR = {}\n{}\nOption: {}\n", roff(s.key.substr(dot + 1)),
                       roff(default_of(defaults, s.key)), sentence(s.help), flag_usage(s));
  }
  return out + ".SH SEE ALSO\n.BR ringmta (8)\n";
}

}  // namespace ringmta::config
