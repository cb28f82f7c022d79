// Runs every tests/transcripts/*.txt against smtp::server_session: input whole, byte by byte
// and in seeded random splits; each run must give exactly the transcript's replies and events.
#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <gtest/gtest.h>

#include "transcript.h"

namespace ringmta::smtp::testing {
namespace {

std::vector<std::string> transcript_files() {
  std::vector<std::string> files;
  for (const auto& entry : std::filesystem::directory_iterator(RINGMTA_TRANSCRIPT_DIR)) {
    if (entry.path().extension() == ".txt") files.push_back(entry.path().string());
  }
  std::sort(files.begin(), files.end());
  return files;
}

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

std::string join_lines(const std::vector<std::string>& lines) {
  std::string out;
  for (const auto& line : lines) out += "  " + line + "\n";
  return out;
}

class transcript_test : public ::testing::TestWithParam<std::string> {};

TEST_P(transcript_test, replies_and_events_match_for_every_split) {
  const std::string path = GetParam();
  const transcript script = parse_transcript(path, read_file(path));
  ASSERT_TRUE(script.error.empty()) << script.error;
  ASSERT_FALSE(script.expected_output.empty()) << "a transcript must expect replies";
  struct variant {
    split_mode mode;
    std::uint32_t seed;
    const char* name;
  };
  const variant variants[] = {{split_mode::whole, 0, "whole"},  {split_mode::bytewise, 0, "bytes"},
                              {split_mode::random, 1, "seed 1"}, {split_mode::random, 2, "seed 2"},
                              {split_mode::random, 3, "seed 3"}, {split_mode::random, 4, "seed 4"},
                              {split_mode::random, 5, "seed 5"}};
  for (const variant& v : variants) {
    const run_result result = run_transcript(script, v.mode, v.seed);
    EXPECT_EQ(result.failure, "") << v.name;
    EXPECT_EQ(escape(result.output), escape(script.expected_output))
        << "replies differ (" << v.name << "); got:\n" << result.output;
    if (script.check_events) {
      EXPECT_EQ(result.events, script.expected_events)
          << "events differ (" << v.name << "); got:\n" << join_lines(result.events);
    }
    if (::testing::Test::HasFailure()) break;  // one variant's report is enough
  }
}

std::string test_name(const ::testing::TestParamInfo<std::string>& info) {
  std::string name = std::filesystem::path(info.param).stem().string();
  for (char& c : name) {
    if (!std::isalnum(static_cast<unsigned char>(c))) c = '_';
  }
  return name;
}

INSTANTIATE_TEST_SUITE_P(transcripts, transcript_test, ::testing::ValuesIn(transcript_files()),
                         test_name);

TEST(transcript_format, escapes_round_trip) {
  EXPECT_EQ(unescape("a\\r\\n\\x00\\\\{{3*ab}}"), std::string("a\r\n\0\\ababab", 11));
  EXPECT_EQ(escape(std::string("\r\n\x01", 3)), "\\r\\n\\x01");
}

}  // namespace
}  // namespace ringmta::smtp::testing
