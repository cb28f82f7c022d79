// outbound::outbound and outbound::dns_client against real peers on loopback: the scripted
// Python sink (byte-exact bodies, per-recipient replies, pipelining observations, faults),
// Postfix's smtp-sink, and NSD serving MX zones whose hosts are 127.0.0.x addresses.
#include <gtest/gtest.h>

#include <fcntl.h>

#include "harness.h"

namespace ringmta::outbound::test {
namespace {

using kind = record::kind;
using smtp::client_outcome;

outbound_config test_config() {
  outbound_config config;
  config.helo_name = "client.test";
  config.timeout_connect_ms = 3000;
  config.timeout_greeting_ms = 10'000;
  config.timeout_hello_ms = 10'000;
  config.timeout_mail_ms = 10'000;
  config.timeout_rcpt_ms = 10'000;
  config.timeout_data_init_ms = 10'000;
  config.timeout_data_block_ms = 10'000;
  config.timeout_data_end_ms = 10'000;
  config.timeout_quit_ms = 5000;
  config.idle_timeout_ms = 1000;
  config.receive_buffer_count = 64;
  config.transfers_max = 4;
  return config;
}

route literal(const char* address, std::uint16_t port) {
  return route{route_kind::host, address, port};
}

std::string code_of(const record& r) {
  return std::to_string(r.code) + " " + std::to_string(r.enhanced.status_class) + "." +
         std::to_string(r.enhanced.subject) + "." + std::to_string(r.enhanced.detail);
}

// ---- the scripted sink: reuse, byte-exactness, splice and staged paths

TEST(outbound, delivers_several_messages_over_one_connection_byte_exact) {
  scripted_sink sink;
  ASSERT_TRUE(sink.start({"127.0.0.1"}));
  harness h({1, test_config(), {}});
  ASSERT_TRUE(h.started());
  test_spool spool;
  // Sizes cover the staged path (one read, one send), several splice pairs and an empty body.
  const std::size_t sizes[] = {1000, 0, 70 * 1024, 3 * 1024 * 1024 + 17, 60 * 1024};
  std::vector<const delivery*> jobs;
  for (std::uint32_t i = 0; i < std::size(sizes); ++i) {
    const std::string text = sizes[i] == 0 ? std::string() : make_message(sizes[i], i);
    jobs.push_back(&spool.add(text, {"user" + std::to_string(i) + "@example.net"},
                              spool::body_type::seven_bit, 100 + i).job);
  }
  h.deliver(0, 1, literal("127.0.0.1", sink.port()), jobs);
  ASSERT_TRUE(h.log.wait_for(1, kind::closed, 1));
  const auto deliveries = h.log.of(1, kind::delivery);
  ASSERT_EQ(deliveries.size(), std::size(sizes));
  for (std::uint32_t i = 0; i < std::size(sizes); ++i) {
    EXPECT_EQ(deliveries[i].token, 100 + i);
    EXPECT_EQ(deliveries[i].outcome, client_outcome::accepted) << deliveries[i].text;
    EXPECT_EQ(deliveries[i].code, 250);
    EXPECT_EQ(deliveries[i].host, "[127.0.0.1]");
    EXPECT_EQ(deliveries[i].address, "127.0.0.1:" + std::to_string(sink.port()));
    const std::string expected = sizes[i] == 0 ? std::string() : make_message(sizes[i], i);
    EXPECT_EQ(sink.body(i + 1).size(), expected.size()) << "message " << i;
    EXPECT_TRUE(sink.body(i + 1) == expected) << "message " << i << " differs";
    EXPECT_EQ(sink.record(i + 1)["connection"], 1);
  }
  const auto closed = h.log.of(1, kind::closed);
  EXPECT_EQ(closed[0].reason, close_reason::released);
  EXPECT_EQ(closed[0].deliveries, std::size(sizes));
  EXPECT_EQ(sink.connections("127.0.0.1"), 1u);
  EXPECT_EQ(sink.count("quits"), 1u);
  const auto counters = h.counters(0);
  EXPECT_EQ(counters.connections_opened, 1u);
  EXPECT_EQ(counters.bodies_staged, 3u);  // 1000, 0 and 60 KiB (<= copy_body_bytes_max)
  EXPECT_EQ(counters.bodies_spliced, 2u);
  EXPECT_GT(counters.splices, 4u);
}

TEST(outbound, copy_transfer_is_byte_exact_too) {
  scripted_sink sink;
  ASSERT_TRUE(sink.start({"127.0.0.1"}));
  auto config = test_config();
  config.transfer = body_transfer::copy;
  config.copy_chunk_bytes = 64 * 1024;
  harness h({1, config, {}});
  ASSERT_TRUE(h.started());
  test_spool spool;
  const std::string text = make_message(1024 * 1024 + 3, 7);
  h.deliver(0, 1, literal("127.0.0.1", sink.port()), {&spool.add(text, {"a@example.net"}).job});
  ASSERT_TRUE(h.log.wait_for(1, kind::closed, 1));
  ASSERT_EQ(h.log.of(1, kind::delivery).size(), 1u);
  EXPECT_EQ(h.log.of(1, kind::delivery)[0].outcome, client_outcome::accepted);
  EXPECT_TRUE(sink.body(1) == text);
  EXPECT_EQ(h.counters(0).bodies_copied, 1u);
}

// ---- pipelining (RFC 2920) on and off

TEST(outbound, pipelines_only_when_offered) {
  for (const bool offered : {true, false}) {
    scripted_sink sink;
    std::vector<std::string> flags;
    if (!offered) flags.push_back("--no-pipelining");
    ASSERT_TRUE(sink.start({"127.0.0.1"}, flags));
    harness h({1, test_config(), {}});
    ASSERT_TRUE(h.started());
    test_spool spool;
    std::vector<const delivery*> jobs;
    for (std::uint32_t i = 0; i < 3; ++i) {
      jobs.push_back(&spool.add(make_message(500, i), {"a@example.net", "b@example.net"}).job);
    }
    h.deliver(0, 1, literal("127.0.0.1", sink.port()), jobs);
    ASSERT_TRUE(h.log.wait_for(1, kind::closed, 1));
    for (const auto& d : h.log.of(1, kind::delivery)) {
      EXPECT_EQ(d.outcome, client_outcome::accepted);
    }
    EXPECT_EQ(sink.count("messages"), 3u);
    if (offered) {
      EXPECT_GT(sink.count("pipelined_commands"), 0u);  // MAIL, RCPTs and DATA in one batch
    } else {
      EXPECT_EQ(sink.count("early_commands"), 0u) << "a command went out before its turn";
    }
  }
}

// ---- per-recipient results

TEST(outbound, reports_each_recipient_and_delivers_to_the_accepted_ones) {
  scripted_sink sink;
  ASSERT_TRUE(sink.start({"127.0.0.1"}, {"--reject-rcpt", "bad=550 5.1.1 no such user",
                                         "--reject-rcpt", "full=452 4.2.2 mailbox full"}));
  harness h({1, test_config(), {}});
  ASSERT_TRUE(h.started());
  test_spool spool;
  const std::string text = make_message(2000, 3);
  const auto& job = spool.add(text, {"ok1@example.net", "bad@example.net", "full@example.net",
                                     "ok2@example.net"}).job;
  h.deliver(0, 1, literal("127.0.0.1", sink.port()), {&job});
  ASSERT_TRUE(h.log.wait_for(1, kind::closed, 1));
  const auto recipients = h.log.of(1, kind::recipient);
  ASSERT_EQ(recipients.size(), 4u);
  EXPECT_EQ(recipients[0].outcome, client_outcome::accepted);
  EXPECT_EQ(recipients[1].outcome, client_outcome::permanent_failure);
  EXPECT_EQ(code_of(recipients[1]), "550 5.1.1");
  EXPECT_EQ(recipients[1].text, "no such user");
  EXPECT_EQ(recipients[2].outcome, client_outcome::transient_failure);
  EXPECT_EQ(code_of(recipients[2]), "452 4.2.2");
  EXPECT_EQ(recipients[3].outcome, client_outcome::accepted);
  for (std::uint32_t i = 0; i < 4; ++i) EXPECT_EQ(recipients[i].index, i);
  ASSERT_EQ(h.log.of(1, kind::delivery).size(), 1u);
  EXPECT_EQ(h.log.of(1, kind::delivery)[0].outcome, client_outcome::accepted);
  EXPECT_EQ(sink.record(1)["rcpts"].size(), 2u);
  EXPECT_TRUE(sink.body(1) == text);
}

// ---- local refusals passed through: 8BITMIME (5.6.3) and SIZE (5.3.4)

TEST(outbound, eight_bit_body_to_a_seven_bit_server_fails_permanently_and_reuses) {
  scripted_sink sink;
  ASSERT_TRUE(sink.start({"127.0.0.1"}, {"--no-8bitmime", "--size", "100000"}));
  harness h({1, test_config(), {}});
  ASSERT_TRUE(h.started());
  test_spool spool;
  const auto& eight = spool.add(make_message(800, 1, true), {"a@example.net"},
                                spool::body_type::eight_bit_mime, 1).job;
  const auto& big = spool.add(make_message(200'000, 2), {"a@example.net"},
                              spool::body_type::seven_bit, 2).job;
  const auto& plain = spool.add(make_message(800, 3), {"a@example.net"},
                                spool::body_type::seven_bit, 3).job;
  h.deliver(0, 1, literal("127.0.0.1", sink.port()), {&eight, &big, &plain});
  ASSERT_TRUE(h.log.wait_for(1, kind::closed, 1));
  const auto recipients = h.log.of(1, kind::recipient);
  ASSERT_EQ(recipients.size(), 3u);
  EXPECT_EQ(recipients[0].outcome, client_outcome::permanent_failure);
  EXPECT_EQ(code_of(recipients[0]), "554 5.6.3");
  EXPECT_TRUE(recipients[0].local);
  EXPECT_EQ(recipients[1].outcome, client_outcome::permanent_failure);
  EXPECT_EQ(code_of(recipients[1]), "552 5.3.4");
  EXPECT_EQ(recipients[2].outcome, client_outcome::accepted);
  const auto deliveries = h.log.of(1, kind::delivery);
  ASSERT_EQ(deliveries.size(), 3u);
  EXPECT_EQ(deliveries[0].outcome, client_outcome::permanent_failure);
  EXPECT_EQ(deliveries[1].outcome, client_outcome::permanent_failure);
  EXPECT_EQ(deliveries[2].outcome, client_outcome::accepted);
  EXPECT_EQ(sink.count("messages"), 1u);  // only the last one was sent at all
  EXPECT_EQ(sink.connections("127.0.0.1"), 1u);
}

// ---- Postfix smtp-sink

TEST(outbound, smtp_sink_takes_many_messages_over_one_connection) {
  postfix_sink sink;
  ASSERT_TRUE(sink.start("127.0.0.1"));
  harness h({1, test_config(), {}});
  ASSERT_TRUE(h.started());
  test_spool spool;
  std::vector<const delivery*> jobs;
  for (std::uint32_t i = 0; i < 20; ++i) {
    jobs.push_back(&spool.add(make_message(1024, i), {"a@example.net"}, spool::body_type::seven_bit,
                              i).job);
  }
  h.deliver(0, 1, literal("127.0.0.1", sink.port()), jobs);
  ASSERT_TRUE(h.log.wait_for(1, kind::closed, 1));
  const auto deliveries = h.log.of(1, kind::delivery);
  ASSERT_EQ(deliveries.size(), 20u);
  for (const auto& d : deliveries) EXPECT_EQ(d.outcome, client_outcome::accepted) << d.text;
  const auto counters = h.counters(0);
  EXPECT_EQ(counters.connect_attempts, 1u);
  EXPECT_EQ(counters.sessions_ready, 1u);
  EXPECT_EQ(h.log.of(1, kind::closed)[0].reason, close_reason::released);
}

TEST(outbound, smtp_sink_variants_no_pipelining_no_8bitmime_rejected_dot_and_hangup) {
  struct variant {
    std::vector<std::string> flags;
    bool eight_bit;
    client_outcome expected;
    const char* code;  // reply code and enhanced code, "" to skip
  };
  const variant variants[] = {
      {{"-p"}, false, client_outcome::accepted, ""},
      {{"-8"}, true, client_outcome::permanent_failure, "554 5.6.3"},
      {{"-f", "."}, false, client_outcome::permanent_failure, ""},
      {{"-r", "."}, false, client_outcome::transient_failure, ""},
      {{"-q", "."}, false, client_outcome::transient_failure, ""},  // hangs up after "."
  };
  for (const auto& v : variants) {
    postfix_sink sink;
    ASSERT_TRUE(sink.start("127.0.0.1", v.flags));
    harness h({1, test_config(), {}});
    ASSERT_TRUE(h.started());
    test_spool spool;
    const auto& job = spool.add(make_message(3000, 1, v.eight_bit), {"a@example.net"},
                                v.eight_bit ? spool::body_type::eight_bit_mime
                                            : spool::body_type::seven_bit).job;
    h.deliver(0, 1, literal("127.0.0.1", sink.port()), {&job});
    ASSERT_TRUE(h.log.wait_for(1, kind::closed, 1)) << v.flags[0];
    const auto deliveries = h.log.of(1, kind::delivery);
    ASSERT_EQ(deliveries.size(), 1u) << v.flags[0];
    EXPECT_EQ(deliveries[0].outcome, v.expected) << v.flags[0] << ": " << deliveries[0].text;
    if (*v.code != 0) {
      EXPECT_EQ(code_of(deliveries[0]), v.code);
    }
  }
}

// ---- faults inside DATA and a spool that cannot be read

TEST(outbound, a_reply_or_hangup_inside_the_body_never_counts_as_delivered) {
  for (const char* fault : {"--reply-in-data", "--close-in-data"}) {
    scripted_sink sink;
    std::vector<std::string> flags = {fault};
    if (std::string(fault) == "--reply-in-data") flags.push_back("554 5.7.0 go away");
    ASSERT_TRUE(sink.start({"127.0.0.1"}, flags));
    harness h({1, test_config(), {}});
    ASSERT_TRUE(h.started());
    test_spool spool;
    const auto& job = spool.add(make_message(2 * 1024 * 1024, 5), {"a@example.net"}).job;
    const auto& next = spool.add(make_message(100, 6), {"a@example.net"}).job;
    h.deliver(0, 1, literal("127.0.0.1", sink.port()), {&job, &next});
    ASSERT_TRUE(h.log.wait_for(1, kind::closed, 1)) << fault;
    // The first delivery fails; if the whole body and "." were in the socket buffers before
    // the fault, the connection is reused for the second, which fails too (the peer is gone).
    const auto deliveries = h.log.of(1, kind::delivery);
    ASSERT_GE(deliveries.size(), 1u) << fault;
    for (const auto& d : deliveries) EXPECT_NE(d.outcome, client_outcome::accepted) << fault;
    EXPECT_EQ(h.log.of(1, kind::closed)[0].reason, close_reason::lost) << fault;
    EXPECT_EQ(sink.count("messages"), 0u);
  }
}

TEST(outbound, an_unreadable_body_fails_transiently_without_the_final_dot) {
  scripted_sink sink;
  ASSERT_TRUE(sink.start({"127.0.0.1"}));
  harness h({1, test_config(), {}});
  ASSERT_TRUE(h.started());
  temp_dir dir;
  const std::string path = dir.path() + "/short";
  std::ofstream(path) << std::string(5000, 'x') << "\r\n";
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  ASSERT_GE(fd, 0);
  // Slices that claim more bytes than the file has: the staged path and the splice path.
  const spool::body_slice small[] = {{fd, 0, 20'000}};
  const spool::body_slice large[] = {{fd, 0, 500'000}};
  const smtp::client_recipient to[] = {{"a@example.net", {}, {}}};
  delivery jobs[2];
  for (int i = 0; i < 2; ++i) {
    jobs[i].envelope.reverse_path = "s@example.org";
    jobs[i].envelope.recipients = to;
    jobs[i].body = i == 0 ? std::span<const spool::body_slice>(small)
                          : std::span<const spool::body_slice>(large);
    jobs[i].token = static_cast<std::uint64_t>(i);
    h.deliver(0, 10 + i, literal("127.0.0.1", sink.port()), {&jobs[i]});
  }
  for (int i = 0; i < 2; ++i) {
    ASSERT_TRUE(h.log.wait_for(10 + i, kind::closed, 1));
    const auto deliveries = h.log.of(10 + i, kind::delivery);
    ASSERT_EQ(deliveries.size(), 1u);
    EXPECT_EQ(deliveries[0].outcome, client_outcome::transient_failure);
    EXPECT_EQ(code_of(deliveries[0]), "451 4.3.0") << deliveries[0].text;
    // The recipient was accepted by RCPT: it shares the delivery's (transient) fate.
    EXPECT_EQ(h.log.of(10 + i, kind::recipient)[0].outcome, client_outcome::accepted);
  }
  EXPECT_EQ(sink.count("messages"), 0u);  // no partial message was completed with "."
  ::close(fd);
}

// ---- idle lifetime, limits, two shards

TEST(outbound, an_idle_connection_says_quit_after_its_idle_lifetime) {
  scripted_sink sink;
  ASSERT_TRUE(sink.start({"127.0.0.1"}));
  auto config = test_config();
  config.idle_timeout_ms = 200;
  harness h({1, config, {}});
  ASSERT_TRUE(h.started());
  h.run(0, [](harness::shard_parts& parts) { parts.embedder->keep_idle = true; });
  test_spool spool;
  h.deliver(0, 1, literal("127.0.0.1", sink.port()), {&spool.add(make_message(100, 1),
                                                                 {"a@example.net"}).job});
  ASSERT_TRUE(h.log.wait_for(1, kind::closed, 1));
  const auto closed = h.log.of(1, kind::closed)[0];
  EXPECT_EQ(closed.reason, close_reason::idle_timeout);
  EXPECT_EQ(closed.deliveries, 1u);
  EXPECT_EQ(h.log.of(1, kind::ready).size(), 2u);  // after EHLO, after the delivery
  EXPECT_EQ(sink.count("quits"), 1u);
}

TEST(outbound, refuses_connections_beyond_the_limit_and_bad_routes) {
  auto config = test_config();
  config.connections_max = 2;
  harness h({1, config, {}});
  ASSERT_TRUE(h.started());
  int refused = 0;
  int invalid = 0;
  h.run(0, [&](harness::shard_parts& parts) {
    for (int i = 0; i < 3; ++i) {
      // Port 9 on loopback: refused, so the connections end by themselves.
      auto opened = parts.out->open_connection(100 + i, literal("127.0.0.1", 9));
      if (!opened && opened.error() == EAGAIN) ++refused;
    }
    auto bad = parts.out->open_connection(200, route{route_kind::mx, "", 25});
    if (!bad && bad.error() == EINVAL) ++invalid;
  });
  EXPECT_EQ(refused, 1);
  EXPECT_EQ(invalid, 1);
  ASSERT_TRUE(h.log.wait_for(100, kind::closed, 1));
  const auto closed = h.log.of(100, kind::closed)[0];
  EXPECT_EQ(closed.reason, close_reason::destination_failed);
  EXPECT_EQ(closed.outcome, client_outcome::transient_failure);
  EXPECT_EQ(code_of(closed), "451 4.4.1");
  EXPECT_FALSE(closed.ever_ready);
}

// At the limit, the slot of a closing connection is free when the embedder hears of the close:
// the next connection opens from on_closed (it used to be refused, EAGAIN, for want of that
// very slot), and the close result stays intact although the new connection took the slot.
TEST(outbound, a_connection_opened_from_on_closed_takes_the_slot_at_the_limit) {
  auto config = test_config();
  config.connections_max = 1;
  harness h({1, config, {}});
  ASSERT_TRUE(h.started());
  std::vector<int> reopened;  // errno of each open from on_closed (0: opened)
  h.embedder(0).on_close_first = [&](std::uint64_t destination) {
    if (destination >= 103) return;
    auto opened = h.embedder(0).out->open_connection(destination + 1, literal("127.0.0.1", 9));
    reopened.push_back(opened ? 0 : opened.error());
  };
  h.run(0, [&](harness::shard_parts& parts) {
    // Port 9 on loopback: refused, so each connection ends by itself.
    ASSERT_TRUE(parts.out->open_connection(100, literal("127.0.0.1", 9)));
  });
  ASSERT_TRUE(h.log.wait_for(103, kind::closed, 1));
  EXPECT_EQ(reopened, (std::vector<int>{0, 0, 0}));
  for (std::uint64_t destination = 100; destination <= 103; ++destination) {
    const auto closed = h.log.of(destination, kind::closed);
    ASSERT_EQ(closed.size(), 1u) << destination;
    EXPECT_EQ(code_of(closed[0]), "451 4.4.1") << destination;
    EXPECT_EQ(closed[0].address, "127.0.0.1:9") << destination;
    EXPECT_EQ(closed[0].reason, close_reason::destination_failed) << destination;
  }
}

TEST(outbound, release_and_shutdown_end_connections_that_are_not_ready_yet_or_idle) {
  scripted_sink sink;  // .1 serves; .6 accepts and never greets
  ASSERT_TRUE(sink.start({"127.0.0.1", "127.0.0.6"}, {"--silent", "127.0.0.6"}));
  harness h({1, test_config(), {}});  // greeting timeout 10 s: nothing here may wait for it
  ASSERT_TRUE(h.started());
  h.run(0, [](harness::shard_parts& parts) { parts.embedder->keep_idle = true; });
  test_spool spool;
  // 1: waits for a greeting that never comes, then the embedder gives up on it.
  connection_handle waiting{};
  h.run(0, [&](harness::shard_parts& parts) {
    waiting = parts.out->open_connection(1, literal("127.0.0.6", sink.port())).value();
  });
  const std::uint64_t deadline = now_ms() + 10'000;
  while (sink.connections("127.0.0.6") == 0 && now_ms() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  h.run(0, [&](harness::shard_parts& parts) { parts.out->release(waiting); });
  ASSERT_TRUE(h.log.wait_for(1, kind::closed, 1, 5000));
  EXPECT_EQ(h.log.of(1, kind::closed)[0].reason, close_reason::released);
  EXPECT_FALSE(h.log.of(1, kind::closed)[0].ever_ready);
  // 2: idle after a delivery (keep_idle), 3: waiting for a greeting again; then shutdown.
  h.deliver(0, 2, literal("127.0.0.1", sink.port()),
            {&spool.add(make_message(100, 1), {"a@example.net"}).job});
  ASSERT_TRUE(h.log.wait_for(2, kind::ready, 2));
  h.run(0, [&](harness::shard_parts& parts) {
    (void)parts.out->open_connection(3, literal("127.0.0.6", sink.port())).value();
  });
  bool refused = false;
  h.run(0, [&](harness::shard_parts& parts) {
    parts.out->begin_shutdown();
    refused = parts.out->open_connection(4, literal("127.0.0.1", sink.port())).error() ==
              ESHUTDOWN;
  });
  EXPECT_TRUE(refused);
  ASSERT_TRUE(h.log.wait_for(2, kind::closed, 1, 5000));
  ASSERT_TRUE(h.log.wait_for(3, kind::closed, 1, 5000));
  EXPECT_EQ(h.log.of(2, kind::closed)[0].reason, close_reason::shutdown);
  EXPECT_EQ(h.log.of(2, kind::closed)[0].deliveries, 1u);
  EXPECT_EQ(h.log.of(3, kind::closed)[0].reason, close_reason::shutdown);
  bool drained = false;
  h.run(0, [&](harness::shard_parts& parts) { drained = parts.out->drained(); });
  EXPECT_TRUE(drained);
  EXPECT_EQ(sink.count("quits"), 1u);  // the idle one said QUIT; the others were never ready
}

TEST(outbound, binds_the_configured_source_address) {
  scripted_sink sink;
  ASSERT_TRUE(sink.start({"127.0.0.1"}));
  auto config = test_config();
  config.source_ipv4 = core::endpoint::parse("127.0.0.9:0");
  harness h({1, config, {}});
  ASSERT_TRUE(h.started());
  test_spool spool;
  h.deliver(0, 1, literal("127.0.0.1", sink.port()),
            {&spool.add(make_message(300, 1), {"a@example.net"}).job});
  ASSERT_TRUE(h.log.wait_for(1, kind::closed, 1));
  EXPECT_EQ(h.log.of(1, kind::delivery)[0].outcome, client_outcome::accepted);
  EXPECT_EQ(sink.record(1)["peer"], "127.0.0.9");
}

TEST(outbound, a_reply_timeout_is_a_transient_failure) {
  postfix_sink sink;
  // Answers DATA after 3 s; without PIPELINING, so MAIL and RCPT are answered at once.
  ASSERT_TRUE(sink.start("127.0.0.1", {"-p", "-w", "3"}));
  auto config = test_config();
  config.timeout_data_init_ms = 300;  // RFC 5321 §4.5.3.2.4, shortened
  harness h({1, config, {}});
  ASSERT_TRUE(h.started());
  test_spool spool;
  h.deliver(0, 1, literal("127.0.0.1", sink.port()),
            {&spool.add(make_message(300, 1), {"a@example.net"}).job});
  ASSERT_TRUE(h.log.wait_for(1, kind::closed, 1));
  ASSERT_EQ(h.log.of(1, kind::delivery).size(), 1u);
  EXPECT_EQ(h.log.of(1, kind::delivery)[0].outcome, client_outcome::transient_failure);
  EXPECT_EQ(h.log.of(1, kind::closed)[0].reason, close_reason::lost);
  EXPECT_EQ(h.counters(0).timeouts, 1u);
}

TEST(outbound, more_large_bodies_than_pipes_take_turns) {
  scripted_sink sink;
  ASSERT_TRUE(sink.start({"127.0.0.1"}));
  auto config = test_config();
  config.transfers_max = 2;  // six connections, two pipes
  config.pipe_bytes = 64 * 1024;
  harness h({1, config, {}});
  ASSERT_TRUE(h.started());
  test_spool spool;
  std::vector<std::string> texts;
  std::vector<const delivery*> jobs[6];
  for (std::uint32_t i = 0; i < 18; ++i) {
    texts.push_back(make_message(200 * 1024 + i, 40 + i));
    jobs[i % 6].push_back(&spool.add(texts.back(), {"a@example.net"},
                                     spool::body_type::seven_bit, i).job);
  }
  for (std::uint64_t d = 0; d < 6; ++d) {
    h.deliver(0, 100 + d, literal("127.0.0.1", sink.port()), jobs[d]);
  }
  std::map<std::string, int> expected;
  for (const auto& text : texts) ++expected[text];
  for (std::uint64_t d = 0; d < 6; ++d) {
    ASSERT_TRUE(h.log.wait_for(100 + d, kind::closed, 1));
    for (const auto& r : h.log.of(100 + d, kind::delivery)) {
      EXPECT_EQ(r.outcome, client_outcome::accepted) << r.text;
    }
  }
  std::map<std::string, int> received;
  for (unsigned n = 1; n <= 18; ++n) ++received[sink.body(n)];
  EXPECT_TRUE(received == expected) << "a body was lost, duplicated or mixed up";
  const auto counters = h.counters(0);
  EXPECT_EQ(counters.bodies_spliced, 18u);
  std::printf("transfer waits: %llu\n", static_cast<unsigned long long>(counters.transfer_waits));
}

TEST(outbound, two_shards_deliver_side_by_side) {
  postfix_sink sink;
  ASSERT_TRUE(sink.start("127.0.0.1"));
  harness h({2, test_config(), {}});
  ASSERT_TRUE(h.started());
  test_spool spool;
  std::vector<const delivery*> jobs[2];
  for (std::uint32_t i = 0; i < 20; ++i) {
    jobs[i % 2].push_back(&spool.add(make_message(4000, i), {"a@example.net"}).job);
  }
  for (unsigned s = 0; s < 2; ++s) {
    h.deliver(s, 1 + s, literal("127.0.0.1", sink.port()), jobs[s]);
  }
  for (unsigned s = 0; s < 2; ++s) {
    ASSERT_TRUE(h.log.wait_for(1 + s, kind::closed, 1));
    const auto deliveries = h.log.of(1 + s, kind::delivery);
    ASSERT_EQ(deliveries.size(), 10u);
    for (const auto& d : deliveries) {
      EXPECT_EQ(d.outcome, client_outcome::accepted);
      EXPECT_EQ(d.shard, s);
    }
  }
}

}  // namespace
}  // namespace ringmta::outbound::test
