// Checks shared by the unit tests of the outbound transition tables (connection_phase.h,
// body_phase.h): each phase enum has a constexpr legal_transition(from, to).
#pragma once

#include <set>
#include <vector>

namespace ringmta::outbound::phase_tables {

// Breadth-first over a transition table: the phases reachable from `start` (forward), or the
// phases from which `start` is reachable (backward).
template <typename phase>
std::set<phase> reachable(const std::vector<phase>& all, phase start, bool forward) {
  std::set<phase> seen{start};
  std::vector<phase> todo{start};
  while (!todo.empty()) {
    const phase at = todo.back();
    todo.pop_back();
    for (const phase other : all) {
      const bool edge = forward ? legal_transition(at, other) : legal_transition(other, at);
      if (edge && seen.insert(other).second) todo.push_back(other);
    }
  }
  return seen;
}

}  // namespace ringmta::outbound::phase_tables
