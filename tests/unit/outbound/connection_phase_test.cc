// The outbound connection's transition table (connection_phase.h): every pair of phases is
// either one of the legal transitions drawn in the header or refused, and every phase other than
// free can be reached from free and can reach free again.
#include "connection_phase.h"

#include <gtest/gtest.h>

#include <set>
#include <utility>
#include <vector>

#include "phase_table.h"

namespace ringmta::outbound {
namespace {

using p = connection_phase;
const std::vector<p> all = {p::free,    p::resolving,  p::unconnected, p::connecting, p::talking,
                            p::idle,    p::delivering, p::closing,     p::finished};

const std::set<std::pair<p, p>> legal = {
    {p::free, p::resolving},
    {p::resolving, p::unconnected},   {p::resolving, p::finished},
    {p::unconnected, p::connecting},  {p::unconnected, p::finished},
    {p::connecting, p::talking},      {p::connecting, p::closing},
    {p::talking, p::idle},            {p::talking, p::closing},
    {p::idle, p::delivering},         {p::idle, p::talking},        {p::idle, p::closing},
    {p::delivering, p::talking},      {p::delivering, p::closing},
    {p::closing, p::unconnected},
    {p::finished, p::free},
};

TEST(connection_phase, exactly_the_drawn_transitions_are_legal) {
  for (const p from : all) {
    for (const p to : all) {
      EXPECT_EQ(legal_transition(from, to), legal.count({from, to}) == 1)
          << phase_name(from) << " -> " << phase_name(to);
    }
  }
}

TEST(connection_phase, no_phase_stays_in_place_and_none_skips_the_lookup) {
  for (const p phase : all) EXPECT_FALSE(legal_transition(phase, phase)) << phase_name(phase);
  EXPECT_FALSE(legal_transition(p::free, p::connecting));   // a route is resolved first
  EXPECT_FALSE(legal_transition(p::talking, p::delivering));  // only a ready session delivers
  EXPECT_FALSE(legal_transition(p::closing, p::finished));  // the fd is closed first
  EXPECT_FALSE(legal_transition(p::delivering, p::idle));   // the next ready event says so
  EXPECT_FALSE(legal_transition(p::finished, p::resolving));  // a slot is released, then reused
}

TEST(connection_phase, every_phase_is_reachable_and_every_connection_ends_free) {
  EXPECT_EQ(phase_tables::reachable(all, p::free, true).size(), all.size());
  EXPECT_EQ(phase_tables::reachable(all, p::free, false).size(), all.size());
}

TEST(connection_phase, helpers_agree_with_the_phases) {
  for (const p phase : all) {
    EXPECT_EQ(active(phase), phase != p::free && phase != p::finished) << phase_name(phase);
    EXPECT_EQ(connected(phase), phase == p::talking || phase == p::idle || phase == p::delivering)
        << phase_name(phase);
  }
}

}  // namespace
}  // namespace ringmta::outbound
