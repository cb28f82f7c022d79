// loadkit options: parsers for the load tools' flag values (sizes, size distributions, fault
// rates, durations) and small helpers shared by ringmta-blast and ringmta-sink.
//
// Every parser returns std::nullopt (or false) on malformed input and never throws, so the tools
// turn bad flags into a clear message and exit status 2. Start-up only: these allocate.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace ringmta::loadkit {

// "1024", "1k" (1024), "64K", "1m" (1 MiB), "2g". Binary multiples.
std::optional<std::uint64_t> parse_bytes(std::string_view text);

// "250ms", "10s", "10" (seconds), "2m", "1h". Result in milliseconds.
std::optional<std::uint64_t> parse_duration_ms(std::string_view text);

struct size_choice {
  std::uint64_t bytes = 0;
  double weight = 1.0;
};

// A message size distribution:
//   "1k"               every message 1 KiB
//   "1k:64k"           uniform over 64 evenly spaced sizes from 1 KiB to 64 KiB (both ends)
//   "1k@9,64k@1"       a weighted list: 90 % 1 KiB, 10 % 64 KiB (weights need not sum to 1)
// Sizes are 2 .. 64 MiB. Returns the choices (at most 64 for a range).
std::optional<std::vector<size_choice>> parse_size_distribution(std::string_view text);

// Fault rates per SMTP step: "0.1" (end-of-data only), "rcpt=0.1", "rcpt=0.1,data=0.05".
// Each rate is a probability in [0, 1].
struct fault_rates {
  double rcpt = 0;
  double data = 0;
};
std::optional<fault_rates> parse_fault_rates(std::string_view text);

// Splits "a,b,c" (empty items are kept).
std::vector<std::string_view> split(std::string_view text, char separator);

}  // namespace ringmta::loadkit
