// packed_message (src/server/relay_internal.h): what a queued message keeps of its envelope
// and body location must unpack to exactly what was packed (but the fields it leaves to
// spooled_message or the spool: id, arrival second, client address, helo), in the memory
// issue 15 counts on.
#include <gtest/gtest.h>

#include <algorithm>

#include <atomic>
#include <cstdint>
#include <limits>
#include <memory>
#include <random>
#include <thread>
#include <string>
#include <vector>

#include "relay_internal.h"

namespace ringmta::server {
namespace {

spool::envelope sample() {
  spool::envelope e;
  e.id = 0x0123456789abcdefULL;
  e.reverse_path = "bounces+x@sender.example";
  e.size_declared = 123456;
  e.body = spool::body_type::eight_bit_mime;
  e.smtputf8 = true;
  e.ret = spool::dsn_return::headers;
  e.envid = "env-42";
  e.recipients = {{"a@one.example", spool::notify_failure | spool::notify_delay,
                   "rfc822;a@one.example"},
                  {"b@two.example", 0, ""},
                  {"ü@drei.example", spool::notify_never, ""}};
  e.received_seconds = 1'765'000'000;
  e.client_address = "[2001:db8::1]:5000";
  e.helo = "client.example";
  return e;
}

// What unpacking gives back for `e`: everything but the two fields the spool alone keeps.
spool::envelope unpackable(spool::envelope e) {
  e.client_address.clear();
  e.helo.clear();
  return e;
}

void expect_body(const packed_message& packed, const std::vector<spool::body_slice>& body) {
  const auto unpacked = packed.body();
  ASSERT_EQ(unpacked.size(), body.size());
  for (std::size_t i = 0; i < body.size(); ++i) {
    EXPECT_EQ(unpacked[i].fd, body[i].fd) << i;
    EXPECT_EQ(unpacked[i].offset, body[i].offset) << i;
    EXPECT_EQ(unpacked[i].length, body[i].length) << i;
  }
}

void expect_round_trip(const spool::envelope& envelope,
                       const std::vector<spool::body_slice>& body) {
  packed_message packed;
  packed.pack(envelope, body);
  EXPECT_EQ(packed.envelope(envelope.id, envelope.received_seconds), unpackable(envelope));
  expect_body(packed, body);
}

TEST(packed_message, unpacks_the_envelope_and_body_slices_it_packed) {
  // Offsets past 4 GiB and at the 64-bit limit, lengths at the 32-bit limit, a negative fd
  // and the largest one.
  const std::vector<spool::body_slice> body = {{7, 5'000'000'000ULL, 4096},
                                               {12, 0, 0xfffffff0u},
                                               {-1, 1, 2},
                                               {std::numeric_limits<int>::max(),
                                                std::numeric_limits<std::uint64_t>::max(),
                                                std::numeric_limits<std::uint32_t>::max()}};
  expect_round_trip(sample(), body);
}

TEST(packed_message, an_empty_body_and_null_reverse_path) {
  spool::envelope envelope = sample();
  envelope.reverse_path.clear();  // <>: a DSN
  envelope.recipients.resize(1);
  expect_round_trip(envelope, {});
}

TEST(packed_message, every_flag_combination_and_absent_parameters) {
  for (unsigned body = 0; body <= 3; ++body) {
    for (unsigned ret = 0; ret <= 2; ++ret) {
      for (const bool smtputf8 : {false, true}) {
        for (const bool parameters : {false, true}) {  // SIZE and ENVID given or absent
          spool::envelope e = sample();
          e.body = static_cast<spool::body_type>(body);
          e.ret = static_cast<spool::dsn_return>(ret);
          e.smtputf8 = smtputf8;
          e.size_declared = parameters ? std::numeric_limits<std::uint64_t>::max() : 0;
          e.envid = parameters ? "x" : "";
          SCOPED_TRACE(testing::Message() << body << ' ' << ret << ' ' << smtputf8 << ' '
                                          << parameters);
          expect_round_trip(e, {{3, 10, 20}});
        }
      }
    }
  }
}

TEST(packed_message, many_recipients_every_notify_value_and_many_slices) {
  spool::envelope e = sample();
  e.recipients.clear();
  // 65,535 recipients (the spool's maximum); notify takes every byte value, not only the
  // RFC 3461 bits (the spool stores whatever byte it read); ORCPT on every third; addresses
  // long enough for two-byte lengths on some.
  for (std::size_t i = 0; i < spool::envelope_recipients_max; ++i) {
    const auto notify = static_cast<std::uint8_t>(i % 256);
    std::string address = "r" + std::to_string(i) + "@d" + std::to_string(i % 97) + ".example";
    if (i % 1000 == 0) address.append(300, 'x');
    e.recipients.push_back({address, notify, i % 3 == 0 ? "rfc822;" + address : ""});
  }
  std::vector<spool::body_slice> body;
  for (std::uint32_t i = 0; i < 1000; ++i)
    body.push_back({static_cast<int>(i % 40), std::uint64_t{i} << 27, i * 4099});
  expect_round_trip(e, body);
}

// The memory issue 15 counts on: a typical backlog message fits a 56-byte allocation (the
// spool's encoding took ~121 bytes: a 128-byte one).
TEST(packed_message, a_typical_backlog_message_takes_at_most_56_bytes) {
  spool::envelope e;
  e.id = 42;
  e.reverse_path = "sender@blast.example";  // 20 bytes
  e.recipients = {{"user7@dest0042.example", 0, ""}};
  e.received_seconds = 1'765'000'000;
  e.client_address = "127.0.0.1";
  e.helo = "blast.example";
  // A 1 KiB body near the end of a 64 MiB spool segment (store.h: segment_bytes).
  const std::vector<spool::body_slice> body = {{17, (64u << 20) - 2048, 1024}};
  packed_message packed;
  EXPECT_EQ(packed.bytes(), 0u);
  packed.pack(e, body);
  EXPECT_LE(packed.bytes(), 56u);
  EXPECT_EQ(packed.envelope(e.id, e.received_seconds), unpackable(e));
}

std::string random_text(std::mt19937_64& random, std::size_t size_max) {
  std::string out(std::uniform_int_distribution<std::size_t>(0, size_max)(random), '\0');
  for (char& c : out) c = static_cast<char>(random());  // any byte, NUL included
  return out;
}

// Property: any envelope and body round-trip. Seeded: a failure replays.
TEST(packed_message, random_envelopes_round_trip) {
  std::mt19937_64 random(20261207);
  const auto below = [&](std::uint64_t bound) { return random() % bound; };
  // Numbers of every varint length: a random bit count, then random bits below it.
  const auto number = [&] {
    const unsigned bits = static_cast<unsigned>(below(65));
    return bits == 0 ? 0 : random() >> (64 - bits);
  };
  for (int round = 0; round < 3000; ++round) {
    spool::envelope e;
    e.id = random();
    e.received_seconds = static_cast<std::int64_t>(random());
    e.reverse_path = random_text(random, 300);
    e.size_declared = number();
    e.body = static_cast<spool::body_type>(below(4));
    e.ret = static_cast<spool::dsn_return>(below(3));
    e.smtputf8 = below(2) == 1;
    e.envid = below(2) == 1 ? random_text(random, 100) : "";
    e.recipients.resize(below(20));
    for (auto& r : e.recipients)
      r = {random_text(random, 200), static_cast<std::uint8_t>(random()),
           below(2) == 1 ? random_text(random, 200) : ""};
    std::vector<spool::body_slice> body(below(8));
    for (auto& slice : body)
      slice = {static_cast<int>(static_cast<std::uint32_t>(number())), number(),
               static_cast<std::uint32_t>(number())};
    SCOPED_TRACE(round);
    expect_round_trip(e, body);
  }
}

// spooled_message keeps the envelope's arrival second as a lag behind received_ms: exact for
// a commit a moment later, a recovered message (same second), and a clock stepped back.
TEST(spooled_message, keeps_the_arrival_second_exactly) {
  const std::int64_t seconds = 1'765'000'000;
  const struct {
    std::int64_t ms;
    std::int64_t envelope_seconds;
  } cases[] = {{seconds * 1000 + 999, seconds},      {seconds * 1000, seconds},
               {(seconds + 3) * 1000 + 1, seconds}, {(seconds - 2) * 1000 + 500, seconds},
               {0, 0},                               {123, -5}};
  for (const auto& c : cases) {
    spooled_message message;
    message.set_received(c.ms, c.envelope_seconds);
    EXPECT_EQ(message.received_ms(), c.ms);
    EXPECT_EQ(message.received_seconds(), c.envelope_seconds) << c.ms;
  }
  static_assert(sizeof(spooled_message) == 32);
}

// The 32-byte message (issue 15): each packed field at its bound. A clock stepped by more than
// the lag's 12 days between the envelope and the 250 keeps the arrival second exact and moves
// received_ms to the bound (only the log's delay counts from there).
TEST(spooled_message, packed_fields_hold_their_bounds) {
  const std::int64_t seconds = 1'765'000'000;
  const std::int64_t lag_max = (std::int64_t{1} << 20) - 1;
  for (const std::int64_t step : {lag_max, -lag_max, lag_max + 1, std::int64_t{30 * 86'400},
                                  std::int64_t{-4'000'000}}) {
    spooled_message message;
    message.set_received((seconds + step) * 1000 + 250, seconds);
    EXPECT_EQ(message.received_seconds(), seconds) << step;
    const std::int64_t kept = std::clamp(step, -lag_max, lag_max);
    EXPECT_EQ(message.received_ms(), kept == step ? (seconds + step) * 1000 + 250
                                                  : (seconds + kept) * 1000)
        << step;
  }
  spooled_message message;
  message.body_bytes = (std::uint64_t{1} << 40) - 1;
  message.recipients_open = 65'535;
  message.home = 255;
  message.set_received(std::int64_t{4'102'444'800} * 1000, 4'102'444'800);  // 2100-01-01
  EXPECT_EQ(message.body_size(), (std::uint64_t{1} << 40) - 1);
  EXPECT_EQ(message.recipients_open, 65'535u);
  EXPECT_EQ(message.home, 255u);
  EXPECT_EQ(message.received_seconds(), 4'102'444'800);
}

// Eviction (relay_envelopes.cc): the bytes leave memory; a read back packs them again.
TEST(packed_message, evicted_reading_and_resident_again) {
  const auto e = sample();
  const std::vector<spool::body_slice> body = {{7, 4096, 900}};
  packed_message packed;
  EXPECT_EQ(packed.state(), envelope_state::evicted);  // never packed (a recovered message)
  packed.pack(e, body);
  EXPECT_EQ(packed.state(), envelope_state::resident);
  EXPECT_TRUE(packed.evict());
  EXPECT_EQ(packed.state(), envelope_state::evicted);
  EXPECT_EQ(packed.bytes(), 0u);
  EXPECT_FALSE(packed.evict());  // nothing left to evict
  packed.set_reading();
  EXPECT_EQ(packed.state(), envelope_state::reading);
  EXPECT_FALSE(packed_message::pin(packed));  // no bytes to hold while reading
  packed.read_failed();
  EXPECT_EQ(packed.state(), envelope_state::evicted);
  packed.set_reading();
  packed.pack(e, body);  // the read's result
  EXPECT_EQ(packed.state(), envelope_state::resident);
  EXPECT_EQ(packed.envelope(e.id, e.received_seconds), unpackable(e));
  expect_body(packed, body);
  packed_message reset;
  packed = std::move(reset);  // the slab's reset of a freed message frees the bytes
  EXPECT_EQ(packed.state(), envelope_state::evicted);
}

// Another shard unpacks under a pin: the home cannot evict then, and at most 7 pins are held
// (an eighth reader asks the home instead).
TEST(packed_message, a_pinned_message_is_not_evicted) {
  packed_message packed;
  packed.pack(sample(), {});
  {
    std::vector<std::unique_ptr<packed_message::pin>> pins;
    for (int i = 0; i < 7; ++i) {
      pins.push_back(std::make_unique<packed_message::pin>(packed));
      EXPECT_TRUE(*pins.back()) << i;
    }
    EXPECT_FALSE(packed_message::pin(packed));
    EXPECT_FALSE(packed.evict());
    pins.pop_back();
    EXPECT_TRUE(packed_message::pin(packed));
    pins.clear();
  }
  EXPECT_TRUE(packed.evict());
}

// One thread pins and unpacks (an owner), another evicts and packs again (the home): every
// unpack under a pin sees the whole envelope, and both sides get their way many times.
TEST(packed_message, pins_and_evictions_on_two_threads) {
  const auto e = sample();
  const std::vector<spool::body_slice> body = {{3, 1 << 20, 1024}};
  packed_message packed;
  packed.pack(e, body);
  std::atomic<bool> stop{false};
  std::atomic<std::uint64_t> unpacked{0};
  std::uint64_t wrong = 0, evicted = 0;
  std::thread owner([&] {
    while (!stop.load(std::memory_order_relaxed)) {
      const packed_message::pin pinned(packed);
      if (!pinned) continue;
      wrong += packed.envelope(e.id, e.received_seconds) != unpackable(e);
      unpacked.fetch_add(1, std::memory_order_relaxed);
    }
  });
  // Until both sides got their way often (on a loaded machine the owner may start late).
  while (evicted < 1000 || unpacked.load(std::memory_order_relaxed) < 1000) {
    if (packed.evict()) {
      ++evicted;
      packed.set_reading();
      packed.pack(e, body);
    }
    std::this_thread::yield();
  }
  stop = true;
  owner.join();
  EXPECT_EQ(wrong, 0u);
}

}  // namespace
}  // namespace ringmta::server
