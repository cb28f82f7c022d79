// The file-per-message baseline and the spool listing.
#include <gtest/gtest.h>

#include <filesystem>

#include "ringmta/spool/file_store.h"
#include "ringmta/spool/listing.h"
#include "spool_test_util.h"

namespace ringmta::spool {
namespace {

using test::make_body;
using test::make_envelope;
using test::small_config;
using test::temp_dir;

class file_store_modes : public ::testing::TestWithParam<file_store_sync> {};

TEST_P(file_store_modes, round_trip_and_uncommitted_files_vanish) {
  temp_dir dir;
  file_store_config config{dir.path() + "/files", 0, GetParam()};
  std::map<message_id, std::pair<envelope, std::string>> expected;
  {
    auto opened = file_store::open(config);
    ASSERT_TRUE(opened.ok()) << opened.error_text();
    auto& files = *opened.value();
    auto abandoned = files.begin(10).value();
    ASSERT_TRUE(files.append(abandoned, "never committed\r\n").ok());
    for (std::uint32_t i = 0; i < 20; ++i) {
      auto handle = files.begin(10).value();
      const std::string body = make_body(i * 997, i);
      ASSERT_TRUE(files.append(handle, std::string_view(body).substr(0, body.size() / 2)).ok());
      ASSERT_TRUE(files.append(handle, std::string_view(body).substr(body.size() / 2)).ok());
      const message_id id = files.id_of(handle);
      auto value = make_envelope(id, 1 + i % 3, i);
      ASSERT_TRUE(files.commit(handle, value).ok());
      expected[id] = {value, body};
    }
    files.flush();
    std::size_t durable = 0;
    event item;
    while (files.next_event(item)) durable += item.error == 0 ? 1 : 0;
    EXPECT_EQ(durable, 20u);
    // `abandoned` is left open: a crash before its commit.
  }
  auto reopened = file_store::open(config);
  ASSERT_TRUE(reopened.ok());
  auto ids = reopened.value()->list();
  ASSERT_TRUE(ids.ok());
  EXPECT_EQ(ids.value().size(), expected.size());
  for (const auto& [id, message] : expected) {
    auto stored = reopened.value()->read(id);
    ASSERT_TRUE(stored.ok()) << stored.error_text();
    EXPECT_EQ(stored.value().envelope, message.first);
    EXPECT_EQ(stored.value().body, message.second);
  }
  EXPECT_TRUE(std::filesystem::is_empty(config.directory + "/tmp"));
}

INSTANTIATE_TEST_SUITE_P(all, file_store_modes,
                         ::testing::Values(file_store_sync::each_message,
                                           file_store_sync::batch_fdatasync,
                                           file_store_sync::batch_syncfs));

TEST(spool_listing, lists_queued_messages_of_every_shard) {
  temp_dir dir;
  message_id finished = 0;
  for (std::uint32_t shard = 0; shard < 3; ++shard) {
    auto spool = sync_spool::open(small_config(dir.shard(shard), shard));
    ASSERT_TRUE(spool.ok());
    auto& s = *spool.value();
    for (std::uint32_t i = 0; i < 4; ++i) {
      auto handle = s.begin(1000 + i).value();
      ASSERT_TRUE(s.append(handle, make_body(100 * (i + 1), i)).ok());
      const message_id id = s.core().id_of(handle);
      ASSERT_TRUE(s.commit(handle, make_envelope(id, 2, shard * 10 + i)).ok());
      if (shard == 1 && i == 0) finished = id;
    }
    s.flush();
    if (shard == 1) {
      ASSERT_TRUE(s.mark(finished, 0, {recipient_state::delivered, 1, 0}).ok());
      ASSERT_TRUE(s.mark(finished, 1, {recipient_state::bounced, 1, 0}).ok());
      auto handle = s.begin(1000).value();
      ASSERT_TRUE(s.append(handle, "x\r\n").ok());
      const message_id id = s.core().id_of(handle);
      ASSERT_TRUE(s.commit(handle, make_envelope(id, 2, 77)).ok());
      // Not durable yet: delivery cannot see it.
      EXPECT_EQ(s.mark(id, 1, {recipient_state::deferred, 3, 4242}).error(), ENOENT);
      s.flush();
      ASSERT_TRUE(s.mark(id, 1, {recipient_state::deferred, 3, 4242}).ok());
      s.flush();
    }
  }
  std::filesystem::create_directory(dir.path() + "/not-a-shard");
  auto listing = list_spool(dir.path());
  ASSERT_TRUE(listing.ok()) << listing.error_text();
  EXPECT_TRUE(listing.value().problems.empty());
  const auto& messages = listing.value().messages;
  ASSERT_EQ(messages.size(), 12u);  // 3 × 4, minus the finished one, plus the deferred one
  bool saw_deferred = false;
  for (const auto& message : messages) {
    EXPECT_NE(message.id, finished);
    EXPECT_EQ(message.recipients.size(), 2u);
    EXPECT_GT(message.body_bytes, 0u);
    EXPECT_GE(message.received_seconds, 1'700'000'000);
    if (message.recipients[1].status.state == recipient_state::deferred) {
      saw_deferred = true;
      EXPECT_EQ(message.recipients[1].status.next_attempt_seconds, 4242);
      EXPECT_EQ(message.shard, 1u);
    }
  }
  EXPECT_TRUE(saw_deferred);
  EXPECT_FALSE(list_spool(dir.path() + "/missing").ok());
}

TEST(spool_shards_in, names_only_the_shard_directories_in_order) {
  temp_dir dir;
  for (const char* name : {"shard-10", "shard-2", "shard-0", "shard-", "shard-x1", "shard-1x",
                           "shards-3", "shard-99999999"})
    std::filesystem::create_directory(dir.path() + "/" + name);
  auto shards = shards_in(dir.path());
  ASSERT_TRUE(shards.ok()) << shards.error_text();
  EXPECT_EQ(shards.value(), (std::vector<std::uint32_t>{0, 2, 10}));
  EXPECT_EQ(shards_in(dir.path() + "/missing").error(), ENOENT);
}

}  // namespace
}  // namespace ringmta::spool
