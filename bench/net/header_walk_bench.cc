// Inbound header walk (issue 15 hot path): net::header_filter removes X-Ringmta-Pool and counts
// the Received: fields (RFC 5321 §6.3) in one pass over each header line, skipping to the next
// LF with memchr where no name can match. The reference is what it replaced, run side by side:
// the old filter (a byte-by-byte loop over the whole header block) followed by the old
// net::received_counter (a second pass), both kept here verbatim. The input is a realistic
// header block of a relayed message (five Received: fields, DKIM and ARC signatures,
// Authentication-Results: 3.3 KiB) and a 1 KiB body, fed whole and in 1448-byte pieces (one
// TCP segment per read). Results and the command: bench/README.md.
#include <benchmark/benchmark.h>

#include <cctype>
#include <cstdint>
#include <string>
#include <string_view>

#include "ringmta/core/assert.h"
#include "ringmta/net/header_filter.h"

namespace ringmta::net {
namespace {

// --- the reference: the two passes as they were before the walker ---
class old_header_filter {
 public:
  static constexpr std::size_t value_bytes_max = 128;
  // `field` without the colon, any case ("X-Ringmta-Pool").
  explicit old_header_filter(std::string_view field) {
    for (const char c : field)
      _name += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    _name += ':';
    if (_name.size() > sizeof _held_text) _name.resize(sizeof _held_text);  // names are short
    _value.reserve(value_bytes_max);  // feed() never allocates
  }
  void reset() noexcept {
    _in_headers = _line_start = true;
    _mode = mode::keep;
    _previous_dropped = _found = _capturing = false;
    _held = 0;
    _value.clear();
  }

  template <typename Emit>
  void feed(std::string_view bytes, Emit&& emit) {
    std::size_t run = 0;  // bytes[run, i) are to be emitted
    std::size_t i = 0;
    for (; i < bytes.size() && _in_headers; ++i) {
      const char c = bytes[i];
      if (_line_start) {
        _line_start = false;
        if (c == '\r' || c == '\n') {  // the empty line: the body follows, all of it kept
          _in_headers = false;
          break;
        }
        const bool continuation = c == ' ' || c == '\t';
        if (!(continuation && _previous_dropped)) {
          _previous_dropped = false;
          _capturing = false;
          _mode = mode::matching;
          _held = 0;
        }
      }
      if (_mode == mode::matching) {
        if (static_cast<char>(std::tolower(static_cast<unsigned char>(c))) == _name[_held]) {
          if (i > run) emit(bytes.substr(run, i - run));  // what precedes this line
          _held_text[_held] = c;                           // held back, in its own case
          run = i + 1;
          if (++_held == _name.size()) {
            _mode = mode::drop;
            _previous_dropped = true;
            _capturing = !_found;
            _found = true;
          }
          continue;
        }
        if (_held > 0) {  // not the field after all: give back what was held
          emit(std::string_view(_held_text, _held));
          _held = 0;
          run = i;
        }
        _mode = mode::keep;
      }
      if (_mode == mode::drop) {
        if (i > run) emit(bytes.substr(run, i - run));
        run = i + 1;
        if (_capturing && c != '\r' && c != '\n' && _value.size() < value_bytes_max) _value += c;
      }
      if (c == '\n') _line_start = true;
    }
    if (bytes.size() > run) emit(bytes.substr(run));
  }

  // End of the message: a line start held back is no field (no colon came): give it back.
  template <typename Emit>
  void finish(Emit&& emit) {
    if (_mode == mode::matching && _held > 0) emit(std::string_view(_held_text, _held));
    _held = 0;
    _mode = mode::keep;
  }

  bool found() const noexcept { return _found; }
  // The first field's value, unfolded and trimmed (at most value_bytes_max bytes).
  std::string_view value() const noexcept {
    std::string_view v = _value;
    while (!v.empty() && (v.front() == ' ' || v.front() == '\t')) v.remove_prefix(1);
    while (!v.empty() && (v.back() == ' ' || v.back() == '\t')) v.remove_suffix(1);
    return v;
  }

 private:
  enum class mode : unsigned char { keep, matching, drop };
  std::string _name;  // lowercase, with the colon
  char _held_text[64] = {};
  std::string _value;
  std::size_t _held = 0;
  mode _mode = mode::keep;
  bool _in_headers = true;
  bool _line_start = true;
  bool _previous_dropped = false;
  bool _found = false;
  bool _capturing = false;
};


class received_counter {
 public:
  void feed(std::string_view bytes) noexcept {
    static constexpr std::string_view name = "received:";
    for (std::size_t i = 0; i < bytes.size() && _in_headers; ++i) {
      const char c = bytes[i];
      if (_line_start) {
        if (c == '\r' || c == '\n') {
          _in_headers = false;
          return;
        }
        _line_start = false;
        _skip_line = false;
        _matched = 0;
      }
      if (c == '\n') {
        _line_start = true;
        continue;
      }
      if (_skip_line) {
        const std::size_t next = bytes.find('\n', i);
        if (next == std::string_view::npos) return;
        i = next - 1;
        continue;
      }
      const char lower = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
      if (lower != name[_matched]) {
        _skip_line = true;
        continue;
      }
      if (++_matched == name.size()) {
        ++_count;
        _skip_line = true;
      }
    }
  }
  std::uint32_t count() const noexcept { return _count; }

 private:
  bool _in_headers = true;
  bool _line_start = true;
  bool _skip_line = false;
  std::uint8_t _matched = 0;
  std::uint32_t _count = 0;
};

// --- input ---
std::string fold(std::string name, std::size_t bytes, char seed) {
  std::string field = name + ": ";
  for (std::size_t i = 0; i < bytes; ++i) {
    if (i % 72 == 71) field += "\r\n\t";
    field += static_cast<char>('a' + (i * 7 + seed) % 26);
  }
  return field + "\r\n";
}

const std::string& message() {
  static const std::string text = [] {
    std::string m;
    for (int hop = 0; hop < 5; ++hop) {
      m += "Received: from relay" + std::to_string(hop) + ".example.net (relay" +
           std::to_string(hop) + ".example.net [192.0.2." + std::to_string(hop + 10) +
           "])\r\n\tby mx" + std::to_string(hop) +
           ".example.org (Postfix) with ESMTPS id 4Xk2Lm5Qz1\r\n\tfor <bob@example.org>; "
           "Sat, 21 Nov 2026 21:55:35 +0000\r\n";
    }
    m += fold("DKIM-Signature", 620, 1);
    m += fold("ARC-Seal", 300, 2);
    m += fold("ARC-Message-Signature", 480, 3);
    m += fold("ARC-Authentication-Results", 220, 4);
    m += fold("Authentication-Results", 220, 5);
    m += "X-Ringmta-Pool: bulk\r\n";
    m += "From: Alice Example <alice@example.net>\r\nTo: Bob <bob@example.org>\r\n"
         "Subject: the quarterly report, as discussed\r\nDate: Sat, 21 Nov 2026 21:55:30 +0000\r\n"
         "Message-ID: <20261121215530.4Xk2Lm5Qz1@example.net>\r\nMIME-Version: 1.0\r\n"
         "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n";
    for (int line = 0; line < 13; ++line) m += std::string(76, 'b') + "\r\n";
    return m;
  }();
  return text;
}

constexpr std::size_t whole = 0;

template <typename Walk>
void feed_pieces(std::size_t piece, Walk&& walk) {
  const std::string_view input = message();
  if (piece == whole) piece = input.size();
  for (std::size_t at = 0; at < input.size(); at += piece) walk(input.substr(at, piece));
}

void two_passes(benchmark::State& state) {
  const auto piece = static_cast<std::size_t>(state.range(0));
  std::size_t out = 0;
  std::uint32_t hops = 0;
  for (auto _ : state) {
    old_header_filter filter("X-Ringmta-Pool");
    received_counter counter;
    filter.reset();
    feed_pieces(piece, [&](std::string_view bytes) {
      counter.feed(bytes);
      filter.feed(bytes, [&](std::string_view kept) { out += kept.size(); });
    });
    hops = counter.count();
    benchmark::DoNotOptimize(filter.value().data());
  }
  RINGMTA_ASSERT(hops == 5);
  benchmark::DoNotOptimize(out);
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * message().size()));
}

void one_pass(benchmark::State& state) {
  const auto piece = static_cast<std::size_t>(state.range(0));
  std::size_t out = 0;
  std::uint32_t hops = 0;
  for (auto _ : state) {
    header_filter filter("X-Ringmta-Pool");
    filter.reset();
    feed_pieces(piece, [&](std::string_view bytes) {
      filter.feed(bytes, [&](std::string_view kept) { out += kept.size(); });
    });
    hops = filter.received_fields();
    benchmark::DoNotOptimize(filter.value().data());
  }
  RINGMTA_ASSERT(hops == 5);
  benchmark::DoNotOptimize(out);
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * message().size()));
}

// Both give the same bytes, value and count before anything is timed.
bool same_results() {
  for (const std::size_t piece : {whole, std::size_t{1448}, std::size_t{1}}) {
    std::string a, b;
    old_header_filter old_filter("X-Ringmta-Pool");
    received_counter counter;
    header_filter filter("X-Ringmta-Pool");
    old_filter.reset();
    filter.reset();
    feed_pieces(piece, [&](std::string_view bytes) {
      counter.feed(bytes);
      old_filter.feed(bytes, [&](std::string_view kept) { a += kept; });
      filter.feed(bytes, [&](std::string_view kept) { b += kept; });
    });
    old_filter.finish([&](std::string_view kept) { a += kept; });
    filter.finish([&](std::string_view kept) { b += kept; });
    if (a != b || old_filter.value() != filter.value() ||
        counter.count() != filter.received_fields() || counter.count() != 5) {
      return false;
    }
  }
  return true;
}
const bool checked = [] {
  RINGMTA_ASSERT(same_results());
  return true;
}();

BENCHMARK(two_passes)->Arg(whole)->Arg(1448);
BENCHMARK(one_pass)->Arg(whole)->Arg(1448);

}  // namespace
}  // namespace ringmta::net

BENCHMARK_MAIN();
