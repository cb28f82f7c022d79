// Man pages generated from the settings table, so the documentation cannot drift from the code:
// ringmta(8) lists every flag, ringmta.toml(5) every TOML key, each with its help text and the
// default that conf/ringmta.toml documents (that file is checked against the built-in defaults
// by tests/unit/config). The build runs tools/man (ringmta-man) to write both pages.
//
// Never: invents a default. A key that conf/ringmta.toml does not mention is listed in
// missing_defaults() and shown as "see conf/ringmta.toml"; the man page test fails on it.
#pragma once

#include <map>
#include <string>
#include <string_view>
#include <vector>

namespace ringmta::config {

// Key path → the default as conf/ringmta.toml writes it ("[\"0.0.0.0:25\"]", "\"50M\"").
// A commented-out key ("# hostname = ...  # default: this machine's host name") gives the
// text after "default:" in its comment, or "unset".
std::map<std::string, std::string> documented_defaults(std::string_view conf_text);

// Keys of the settings table that conf_text does not document.
std::vector<std::string> missing_defaults(std::string_view conf_text);

// roff (man(7) macros). section 8: ringmta(8); section 5: ringmta.toml(5).
std::string man_page(int section, std::string_view conf_text, std::string_view version);

}  // namespace ringmta::config
