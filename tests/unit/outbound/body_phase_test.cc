// The body transfer's transition table (body_phase.h): every pair of phases is either one of
// the legal transitions drawn in the header or refused, every phase can be reached from none and
// leads back to it, and open() names exactly the phases in which a reply comes before our ".".
#include "body_phase.h"

#include <gtest/gtest.h>

#include <set>
#include <utility>
#include <vector>

#include "phase_table.h"

namespace ringmta::outbound {
namespace {

using b = body_phase;
const std::vector<b> all = {b::none, b::wanted, b::waiting, b::transferring, b::sent, b::aborting};

const std::set<std::pair<b, b>> legal = {
    {b::none, b::wanted},
    {b::wanted, b::transferring},   {b::wanted, b::waiting},      {b::wanted, b::none},
    {b::waiting, b::wanted},        {b::waiting, b::none},
    {b::transferring, b::sent},     {b::transferring, b::aborting}, {b::transferring, b::none},
    {b::sent, b::none},
    {b::aborting, b::none},
};

TEST(body_phase, exactly_the_drawn_transitions_are_legal) {
  for (const b from : all) {
    for (const b to : all) {
      EXPECT_EQ(legal_transition(from, to), legal.count({from, to}) == 1)
          << phase_name(from) << " -> " << phase_name(to);
    }
  }
}

TEST(body_phase, no_phase_stays_in_place_and_none_skips_a_step) {
  for (const b phase : all) EXPECT_FALSE(legal_transition(phase, phase)) << phase_name(phase);
  EXPECT_FALSE(legal_transition(b::none, b::transferring));  // only after the 354
  EXPECT_FALSE(legal_transition(b::waiting, b::transferring));  // woken, then started by pump
  EXPECT_FALSE(legal_transition(b::wanted, b::sent));       // never sent without transferring
  EXPECT_FALSE(legal_transition(b::sent, b::aborting));     // nothing is in flight once sent
  EXPECT_FALSE(legal_transition(b::aborting, b::wanted));   // a given-up body is never resumed
  EXPECT_FALSE(legal_transition(b::wanted, b::aborting));   // nothing in flight before it starts
}

TEST(body_phase, every_phase_is_reachable_and_every_body_ends_in_none) {
  EXPECT_EQ(phase_tables::reachable(all, b::none, true).size(), all.size());
  EXPECT_EQ(phase_tables::reachable(all, b::none, false).size(), all.size());
}

TEST(body_phase, open_is_asked_for_and_not_yet_handed_on) {
  for (const b phase : all) {
    EXPECT_EQ(body_open(phase), phase == b::wanted || phase == b::waiting ||
                                    phase == b::transferring)
        << phase_name(phase);
  }
}

}  // namespace
}  // namespace ringmta::outbound
