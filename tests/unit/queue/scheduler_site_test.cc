// queue::scheduler MX sites: one connection limit for every member, connections carried
// across members, per-member suspension, leaving the site when forgotten.
#include <algorithm>

#include <gtest/gtest.h>

#include <map>
#include <string>
#include <vector>

#include "ringmta/queue/scheduler.h"

namespace ringmta::queue {
namespace {

constexpr std::int64_t t0 = 1'700'000'000'000;

struct site_harness {
  scheduler queue{[] {
    scheduler_config config;
    config.jitter_permille = 0;
    config.delay_warning_ms = 0;
    config.limits.connections_max = 10;
    return config;
  }()};
  std::vector<std::uint16_t> recipients{0};
  void add(std::string_view destination, spool::message_id id) {
    job_spec spec;
    spec.message = id;
    spec.received_seconds = t0 / 1000;
    spec.recipients = recipients;
    ASSERT_EQ(queue.add(destination, spec, t0).status, add_status::added);
  }
  std::vector<connect_request> poll() {
    std::vector<connect_request> out;
    queue.poll(t0, out);
    return out;
  }
  // Takes (take_for_site) and delivers until the connection gets no job: whose jobs it carried.
  std::vector<std::string> deliver_all(connection_id connection) {
    std::vector<std::string> carried;
    for (;;) {
      const auto taken = queue.take_for_site(connection, t0);
      if (taken.status != take_status::job) return carried;
      destination_info info;
      if (!queue.inspect(taken.job.destination, info)) return carried;
      carried.emplace_back(info.name);
      queue.delivered(taken.job.id, t0);
    }
  }
  destination_limits site_limits(std::uint32_t connections, std::uint32_t per_connection = 0) {
    destination_limits limits;
    limits.connections_max = connections;
    limits.messages_per_connection_max = per_connection;
    return limits;
  }
};

TEST(scheduler_site, members_share_the_site_connection_limit) {
  site_harness h;
  for (spool::message_id id = 1; id <= 6; ++id) h.add(id % 2 ? "gmail.test" : "googlemail.test", id);
  ASSERT_TRUE(h.queue.join_site("gmail.test", "mx1.g.test,mx2.g.test", h.site_limits(2)));
  ASSERT_TRUE(h.queue.join_site("googlemail.test", "mx1.g.test,mx2.g.test", h.site_limits(2)));
  EXPECT_FALSE(h.queue.join_site("unknown.test", "x", h.site_limits(2)));
  const auto opened = h.poll();
  ASSERT_EQ(opened.size(), 2u);  // not 2 × 3 (each member alone would open 3)
  EXPECT_TRUE(h.poll().empty());
  // One ends: a member held by the limit opens one again.
  h.queue.connection_closed(opened[0].connection, t0);
  EXPECT_LE(h.queue.next_wakeup_ms(), t0);
  EXPECT_EQ(h.poll().size(), 1u);
  EXPECT_TRUE(h.poll().empty());
}

TEST(scheduler_site, a_connection_carries_every_members_jobs) {
  site_harness h;
  h.add("gmail.test", 1);
  h.add("googlemail.test", 2);
  h.add("googlemail.test", 3);
  ASSERT_TRUE(h.queue.join_site("gmail.test", "g", h.site_limits(1)));
  ASSERT_TRUE(h.queue.join_site("googlemail.test", "g", h.site_limits(1)));
  auto opened = h.poll();
  ASSERT_EQ(opened.size(), 1u);
  std::vector<spool::message_id> carried;
  std::vector<std::string> by;
  for (;;) {
    const auto taken = h.queue.take_for_site(opened[0].connection, t0);
    if (taken.status != take_status::job) {
      EXPECT_EQ(taken.status, take_status::none);
      break;
    }
    carried.push_back(taken.job.message);
    destination_info info;
    ASSERT_TRUE(h.queue.inspect(taken.job.destination, info));
    by.emplace_back(info.name);
    EXPECT_EQ(h.queue.site_of(taken.job.destination), "g");
    h.queue.delivered(taken.job.id, t0);
  }
  EXPECT_EQ(carried.size(), 3u);
  EXPECT_NE(std::find(by.begin(), by.end(), "gmail.test"), by.end());
  EXPECT_NE(std::find(by.begin(), by.end(), "googlemail.test"), by.end());
  // take_for_connection alone never crosses members.
  h.add("gmail.test", 4);
  h.add("googlemail.test", 5);
  const auto first = h.queue.take_for_connection(opened[0].connection, t0);
  ASSERT_EQ(first.status, take_status::job);
  h.queue.delivered(first.job.id, t0);
  EXPECT_EQ(h.queue.take_for_connection(opened[0].connection, t0).status, take_status::none);
}

// A reload gave googlemail.test a TLS policy of its own (relay_site.cc
// release_own_way_members): the site's connection no longer carries its jobs, nor does its own
// connection carry the others'; it leaves the site when its connection ends.
TEST(scheduler_site, a_leaving_member_is_carried_no_more_and_leaves_when_idle) {
  site_harness h;
  h.add("gmail.test", 1);
  h.add("googlemail.test", 2);
  ASSERT_TRUE(h.queue.join_site("gmail.test", "g", h.site_limits(2)));
  ASSERT_TRUE(h.queue.join_site("googlemail.test", "g", h.site_limits(2)));
  EXPECT_FALSE(h.queue.leave_site("unknown.test", t0));
  const auto opened = h.poll();
  ASSERT_EQ(opened.size(), 2u);
  const auto& leaving = opened[0].name == "googlemail.test" ? opened[0] : opened[1];
  const auto& staying = opened[0].name == "googlemail.test" ? opened[1] : opened[0];
  ASSERT_EQ(staying.name, "gmail.test");
  ASSERT_TRUE(h.queue.leave_site("googlemail.test", t0));
  EXPECT_EQ(h.queue.site_of(std::string_view("googlemail.test")), "g");  // its connection is open
  h.add("googlemail.test", 3);
  h.add("gmail.test", 4);
  // Each connection takes its own destination's jobs only, two each.
  const std::vector<std::string> twice_gmail{"gmail.test", "gmail.test"};
  const std::vector<std::string> twice_googlemail{"googlemail.test", "googlemail.test"};
  EXPECT_EQ(h.deliver_all(staying.connection), twice_gmail);
  EXPECT_EQ(h.deliver_all(leaving.connection), twice_googlemail);
  h.queue.connection_closed(leaving.connection, t0);
  EXPECT_EQ(h.queue.site_of(std::string_view("googlemail.test")), "");
  EXPECT_EQ(h.queue.members_of_site("g"), std::vector<std::string>{"gmail.test"});
  // A member without connections leaves at once.
  h.queue.connection_closed(staying.connection, t0);
  EXPECT_EQ(h.queue.site_of(std::string_view("gmail.test")), "g");
  ASSERT_TRUE(h.queue.leave_site("gmail.test", t0));
  EXPECT_FALSE(h.queue.has_sites());
}

// A member that waited for the site's one connection (held on the site's waiting list, no
// wakeup of its own) and leaves the site looks for a connection of its own at once
// (ringmta-sim seed 197000189: it was never woken again).
TEST(scheduler_site, a_member_waiting_for_the_site_gets_its_own_connection_when_it_leaves) {
  site_harness h;
  h.add("gmail.test", 1);
  h.add("googlemail.test", 2);
  ASSERT_TRUE(h.queue.join_site("gmail.test", "g", h.site_limits(1)));
  ASSERT_TRUE(h.queue.join_site("googlemail.test", "g", h.site_limits(1)));
  const auto opened = h.poll();
  ASSERT_EQ(opened.size(), 1u);  // the site's one connection; the other member waits for it
  const std::string waiting = opened[0].name == "gmail.test" ? "googlemail.test" : "gmail.test";
  EXPECT_TRUE(h.poll().empty());
  ASSERT_TRUE(h.queue.leave_site(waiting, t0));
  const auto own = h.poll();
  ASSERT_EQ(own.size(), 1u);
  EXPECT_EQ(own[0].name, waiting);
}

TEST(scheduler_site, suspension_stays_per_member_and_site_per_connection_limit_closes) {
  site_harness h;
  h.add("gmail.test", 1);
  h.add("googlemail.test", 2);
  h.add("googlemail.test", 3);
  ASSERT_TRUE(h.queue.join_site("gmail.test", "g", h.site_limits(1, 2)));
  ASSERT_TRUE(h.queue.join_site("googlemail.test", "g", h.site_limits(1, 2)));
  ASSERT_TRUE(h.queue.suspend("googlemail.test", t0));
  auto opened = h.poll();
  ASSERT_EQ(opened.size(), 1u);
  EXPECT_EQ(opened[0].name, "gmail.test");
  auto taken = h.queue.take_for_site(opened[0].connection, t0);
  ASSERT_EQ(taken.status, take_status::job);
  EXPECT_EQ(taken.job.message, 1u);
  h.queue.delivered(taken.job.id, t0);
  EXPECT_EQ(h.queue.take_for_site(opened[0].connection, t0).status, take_status::none);
  ASSERT_TRUE(h.queue.resume("googlemail.test", t0));
  taken = h.queue.take_for_site(opened[0].connection, t0);
  ASSERT_EQ(taken.status, take_status::job);
  h.queue.delivered(taken.job.id, t0);
  // Two messages on this connection: the site's per-connection limit closes it.
  EXPECT_EQ(h.queue.take_for_site(opened[0].connection, t0).status, take_status::close);
  h.queue.connection_closed(opened[0].connection, t0);
  EXPECT_EQ(h.poll().size(), 1u);
}

TEST(scheduler_site, forgotten_members_leave_and_the_site_ends) {
  site_harness h;
  h.add("a.test", 1);
  ASSERT_TRUE(h.queue.join_site("a.test", "s", h.site_limits(1)));
  auto opened = h.poll();
  ASSERT_EQ(opened.size(), 1u);
  auto taken = h.queue.take_for_site(opened[0].connection, t0);
  ASSERT_EQ(taken.status, take_status::job);
  EXPECT_EQ(h.queue.site_of(taken.job.destination), "s");
  h.queue.delivered(taken.job.id, t0);
  h.queue.connection_closed(opened[0].connection, t0);
  std::vector<connect_request> out;
  h.queue.poll(t0 + 2 * 3'600'000, out);  // past idle_forget_ms: a.test is forgotten
  destination_info info;
  EXPECT_FALSE(h.queue.inspect("a.test", info));
  EXPECT_FALSE(h.queue.reshape_site("s", h.site_limits(3)));
  h.add("b.test", 2);
  ASSERT_TRUE(h.queue.join_site("b.test", "s", h.site_limits(3)));
  EXPECT_TRUE(h.queue.reshape_site("s", h.site_limits(3)));
}

// The relay keeps no destination → site map of its own: it asks these (idle connection keys,
// reply rules applied to every member, reloads reshaping every site).
TEST(scheduler_site, membership_by_name_members_and_site_names) {
  site_harness h;
  EXPECT_FALSE(h.queue.has_sites());
  h.add("a.test", 1);
  h.add("b.test", 2);
  h.add("c.test", 3);
  h.add("alone.test", 4);
  ASSERT_TRUE(h.queue.join_site("a.test", "s", h.site_limits(2)));
  ASSERT_TRUE(h.queue.join_site("b.test", "s", h.site_limits(2)));
  ASSERT_TRUE(h.queue.join_site("c.test", "t", h.site_limits(2)));
  EXPECT_TRUE(h.queue.has_sites());
  EXPECT_EQ(h.queue.site_of(std::string_view("a.test")), "s");
  EXPECT_EQ(h.queue.site_of(std::string_view("c.test")), "t");
  EXPECT_EQ(h.queue.site_of(std::string_view("alone.test")), "");
  EXPECT_EQ(h.queue.site_of(std::string_view("unknown.test")), "");
  EXPECT_EQ(h.queue.site_members("a.test"), std::vector<std::string>{"b.test"});
  EXPECT_TRUE(h.queue.site_members("c.test").empty());
  EXPECT_TRUE(h.queue.site_members("alone.test").empty());
  auto names = h.queue.site_names();
  std::sort(names.begin(), names.end());
  EXPECT_EQ(names, (std::vector<std::string>{"s", "t"}));
  ASSERT_TRUE(h.queue.join_site("c.test", "s", h.site_limits(2)));  // t ends with its member
  EXPECT_EQ(h.queue.site_names(), std::vector<std::string>{"s"});
  auto members = h.queue.site_members("c.test");
  std::sort(members.begin(), members.end());
  EXPECT_EQ(members, (std::vector<std::string>{"a.test", "b.test"}));
}

// Issue 15: the site's rate applies to its members together. Two members, each with more
// mail than the site may send, no rate of their own: simulated time in 10 ms steps, the
// connections kept while throttled (as the relay does), every take delivered at once.
TEST(scheduler_site, members_share_the_site_rate) {
  site_harness h;
  for (spool::message_id id = 1; id <= 40; ++id) h.add(id % 2 ? "gmail.test" : "googlemail.test", id);
  destination_limits limits = h.site_limits(4);
  limits.rate_messages = 2;  // 2 per second, 2 banked
  limits.rate_period_ms = 1000;
  limits.rate_burst = 2;
  ASSERT_TRUE(h.queue.join_site("gmail.test", "g", limits));
  ASSERT_TRUE(h.queue.join_site("googlemail.test", "g", limits));
  std::vector<connection_id> open;
  std::vector<std::int64_t> sent_ms;
  std::map<std::string, int> by_member;
  constexpr std::int64_t span_ms = 5000;
  for (std::int64_t now = t0; now < t0 + span_ms; now += 10) {
    std::vector<connect_request> requests;
    h.queue.poll(now, requests);
    for (const auto& request : requests) open.push_back(request.connection);
    EXPECT_LE(open.size(), 4u);  // the site's connection limit holds too
    for (std::size_t i = 0; i < open.size();) {
      const auto taken = h.queue.take_for_site(open[i], now);
      if (taken.status == take_status::job) {
        sent_ms.push_back(now);
        destination_info info;
        ASSERT_TRUE(h.queue.inspect(taken.job.destination, info));
        ++by_member[std::string(info.name)];
        h.queue.delivered(taken.job.id, now);
        continue;  // the same connection asks again
      }
      if (taken.status == take_status::throttled) {
        EXPECT_GT(taken.retry_at_ms, now);
        ++i;
        continue;
      }
      h.queue.connection_closed(open[i], now);
      open.erase(open.begin() + static_cast<std::ptrdiff_t>(i));
    }
  }
  // A token bucket of 2 per second with 2 banked: any 1-second window holds at most 2 + 2.
  for (std::size_t i = 0; i < sent_ms.size(); ++i) {
    std::size_t in_window = 0;
    for (std::size_t j = i; j < sent_ms.size() && sent_ms[j] < sent_ms[i] + 1000; ++j) ++in_window;
    EXPECT_LE(in_window, 4u) << "window starting at +" << sent_ms[i] - t0 << " ms";
  }
  // 2 banked + 2 per second over 5 s: 12 at most for the two members together (each alone
  // would have had all 20 at once), and the site kept sending at its rate.
  EXPECT_LE(sent_ms.size(), 12u);
  EXPECT_GE(sent_ms.size(), 10u);
  EXPECT_GE(by_member["gmail.test"], 4);
  EXPECT_GE(by_member["googlemail.test"], 4);
}

}  // namespace
}  // namespace ringmta::queue
