// Transcript files (tests/transcripts/*.txt) for smtp::server_session: parsing and running.
//
// Format, one directive per line ('#' starts a comment line):
//   !config key=value ...   session configuration (before the first C:/R: line)
//   !refuse [text]          start with a 554 greeting instead of 220
//   C: text                 client sends text + CRLF      R: text   client sends text only
//   S: text                 server replies text + CRLF
//   E: event                handler event expected (checked when the file has any E: line)
//   V: event verdict        the next call of that handler event answers verdict:
//                           accept | CODE ENH text | pending accept | pending CODE ENH text
//   !timeout !shutdown !tls !lost   embedder events, after all input above was fed
//   !closed  !open          the session wants (or does not want) to close at this point
// In C:, R:, S: text: \r \n \t \\ \xHH escapes, and {{N*text}} repeats text N times.
// Each transcript runs with its input fed whole, byte by byte, and in seeded random splits;
// every run must give exactly the expected replies and events.
#pragma once

#include <cstdint>
#include <deque>
#include <map>
#include <string>
#include <vector>

#include "ringmta/smtp/server_session.h"

namespace ringmta::smtp::testing {

struct scripted_verdict {
  bool pending = false;
  bool accept = true;
  std::uint16_t code = 0;
  std::string enhanced;
  std::string text;
};

struct transcript_step {
  std::string input;   // fed before the action
  std::string action;  // "", "timeout", "shutdown", "tls", "lost", "closed", "open"
};

struct transcript {
  std::string name;
  std::map<std::string, std::string> config;
  bool refuse = false;
  std::string refuse_text;
  std::vector<transcript_step> steps;
  std::string expected_output;
  std::vector<std::string> expected_events;
  bool check_events = false;
  std::map<std::string, std::deque<scripted_verdict>> verdicts;
  std::string error;  // parse error, empty when fine
};

transcript parse_transcript(const std::string& name, const std::string& text);
std::string unescape(const std::string& text);  // \r \n \t \\ \xHH and {{N*text}}
std::string escape(std::string_view bytes);      // the inverse, for messages and events

// How the input of each step is cut into feed() calls.
enum class split_mode { whole, bytewise, random };

struct run_result {
  std::string output;
  std::vector<std::string> events;
  std::string failure;  // an invariant broken while running (not a mismatch)
};

run_result run_transcript(const transcript& script, split_mode mode, std::uint32_t seed);

}  // namespace ringmta::smtp::testing
