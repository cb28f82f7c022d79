// server::known_site (src/server/known_site.h): after a relearn found another MX set, the jobs
// go to the old site's owner until it reports the domain's queue gone there, per egress source.
#include <gtest/gtest.h>

#include "known_site.h"

namespace ringmta::server {
namespace {

constexpr std::string_view both = "mx1.example,mx2.example";
constexpr std::string_view one = "mx2.example";
constexpr std::string_view other = "mx.elsewhere.example";

TEST(known_site, a_relearned_set_that_did_not_change_keeps_the_site) {
  known_site known;
  known.learn(both, 1000);
  known.learn(both, 5000);
  EXPECT_EQ(known.site, both);
  EXPECT_EQ(known.learned_ms, 5000);
  EXPECT_FALSE(known.via_old_site(""));
  EXPECT_EQ(known.holder_for(""), both);
}

TEST(known_site, a_changed_set_routes_through_the_old_site_until_its_queue_is_gone) {
  known_site known;
  known.learn(both, 1000);
  known.learn(one, 2000);
  EXPECT_EQ(known.site, one);
  EXPECT_TRUE(known.via_old_site(""));
  EXPECT_EQ(known.holder_for(""), both);  // the admin API's holder_of too
  known.old_queue_gone(both, "");
  EXPECT_FALSE(known.via_old_site(""));
  EXPECT_EQ(known.holder_for(""), one);
}

TEST(known_site, each_egress_source_moves_when_its_own_old_queue_is_gone) {
  known_site known;
  known.learn(both, 1000);
  known.learn(one, 2000);
  known.old_queue_gone(both, "ip2");
  EXPECT_FALSE(known.via_old_site("ip2"));
  EXPECT_TRUE(known.via_old_site(""));
  EXPECT_TRUE(known.via_old_site("ip3"));
}

TEST(known_site, a_report_about_another_site_moves_nothing) {
  known_site known;
  known.learn(both, 1000);
  known.learn(one, 2000);
  known.old_queue_gone(other, "");
  EXPECT_TRUE(known.via_old_site(""));
}

TEST(known_site, a_third_set_before_the_move_keeps_the_queue_holding_site) {
  known_site known;
  known.learn(both, 1000);
  known.learn(one, 2000);
  known.learn(other, 3000);  // nothing moved: every queue is still on both's owner
  EXPECT_EQ(known.holder_for(""), both);
  EXPECT_EQ(known.site, other);
}

TEST(known_site, a_change_after_the_move_follows_the_queue_to_the_site_in_use) {
  known_site known;
  known.learn(both, 1000);
  known.learn(one, 2000);
  known.old_queue_gone(both, "");  // the queue is now on one's owner
  known.learn(other, 3000);
  EXPECT_EQ(known.holder_for(""), one);
  EXPECT_TRUE(known.via_old_site(""));
}

TEST(known_site, going_back_before_the_move_takes_the_old_site_directly) {
  known_site known;
  known.learn(both, 1000);
  known.learn(one, 2000);
  known.learn(both, 3000);  // the queue never left both's owner
  EXPECT_FALSE(known.via_old_site(""));
  EXPECT_EQ(known.holder_for(""), both);
}

TEST(known_site, going_back_after_the_move_follows_the_queue_back) {
  known_site known;
  known.learn(both, 1000);
  known.learn(one, 2000);
  known.old_queue_gone(both, "");
  known.learn(both, 3000);
  EXPECT_EQ(known.holder_for(""), one);
  known.old_queue_gone(one, "");
  EXPECT_EQ(known.holder_for(""), both);
}

}  // namespace
}  // namespace ringmta::server
