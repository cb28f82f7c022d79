// The inbound connection's transition table (inbound_phase.h): exactly the drawn transitions are
// legal, and each lifecycle a client can cause (plain, PROXY, greeting delay, refused, early
// talker, implicit TLS) is a legal walk from free back to free.
#include "inbound_phase.h"

#include <gtest/gtest.h>

#include <set>
#include <utility>
#include <vector>

namespace ringmta::server {
namespace {

using p = inbound_phase;
const std::vector<p> all = {p::free,     p::accepted, p::proxy,   p::greeting_delay,
                            p::session,  p::refusing, p::closing, p::closed};

const std::set<std::pair<p, p>> legal = {
    {p::free, p::accepted},
    {p::accepted, p::proxy},          {p::accepted, p::greeting_delay}, {p::accepted, p::session},
    {p::accepted, p::refusing},       {p::accepted, p::closing},
    {p::proxy, p::greeting_delay},    {p::proxy, p::session},           {p::proxy, p::refusing},
    {p::proxy, p::closing},
    {p::greeting_delay, p::session},  {p::greeting_delay, p::refusing},
    {p::greeting_delay, p::closing},
    {p::session, p::closing},
    {p::refusing, p::closing},
    {p::closing, p::closed},
    {p::closed, p::free},
};

TEST(inbound_phase, exactly_the_drawn_transitions_are_legal) {
  for (const p from : all) {
    for (const p to : all) {
      EXPECT_EQ(legal_transition(from, to), legal.count({from, to}) == 1)
          << phase_name(from) << " -> " << phase_name(to);
    }
  }
}

bool legal_walk(const std::vector<p>& walk) {
  for (std::size_t i = 0; i + 1 < walk.size(); ++i)
    if (!legal_transition(walk[i], walk[i + 1])) return false;
  return walk.front() == p::free && walk.back() == p::free;
}

TEST(inbound_phase, every_client_lifecycle_is_a_legal_walk) {
  const std::vector<std::vector<p>> lifecycles = {
      {p::free, p::accepted, p::session, p::closing, p::closed, p::free},  // plain, implicit TLS
      {p::free, p::accepted, p::proxy, p::session, p::closing, p::closed, p::free},
      {p::free, p::accepted, p::proxy, p::closing, p::closed, p::free},  // untrusted, bad header
      {p::free, p::accepted, p::greeting_delay, p::session, p::closing, p::closed, p::free},
      {p::free, p::accepted, p::greeting_delay, p::refusing, p::closing, p::closed, p::free},
      {p::free, p::accepted, p::refusing, p::closing, p::closed, p::free},  // client limit
      {p::free, p::accepted, p::proxy, p::refusing, p::closing, p::closed, p::free},
  };
  for (const auto& walk : lifecycles) EXPECT_TRUE(legal_walk(walk));
}

TEST(inbound_phase, shortcuts_are_refused) {
  EXPECT_FALSE(legal_transition(p::free, p::session));       // a slot is accepted first
  EXPECT_FALSE(legal_transition(p::session, p::greeting_delay));  // a greeting goes once
  EXPECT_FALSE(legal_transition(p::session, p::refusing));   // a session ends by its own 421
  EXPECT_FALSE(legal_transition(p::closing, p::free));       // the fd is closed first
  EXPECT_FALSE(legal_transition(p::closed, p::closing));     // no way back
  for (const p phase : all) EXPECT_FALSE(legal_transition(phase, phase)) << phase_name(phase);
}

TEST(inbound_phase, greeted_means_protocol_bytes) {
  for (const p phase : all)
    EXPECT_EQ(greeted(phase), phase == p::session || phase == p::refusing) << phase_name(phase);
}

}  // namespace
}  // namespace ringmta::server
