// sim::internal::shaping: the relay's shaping as the seed draws it (issue 16 item 3), and the
// checks of what the daemon promises about it, seen on the simulated network:
// - RATE LIMIT: per destination, the transactions its remote MTAs see start (MAIL FROM) never
//   outrun the token bucket the relay was configured with (queue::destination_limits: burst +
//   rate × window), in any window (counted at the first RCPT: the recipient names the
//   destination). The scheduler charges a token when it hands a job to a connection
//   (take_for_connection), seen from the remote between two bounds (rate_check).
//   What the daemon promises across changes (docs/simulation.md, "Shaping"): a restart starts
//   every bucket full (the scheduler lives in memory: a crash may give a fresh burst), and a
//   reload that changes a destination's rate may too (the banked units are carried over and
//   capped at the new burst).
// - PAUSE IGNORED: after a reply rule's `suspend` fired for a destination (the relay's
//   "reply_rule" record), no transaction reaches its MTAs until the pause ends, but those on
//   the wire when it fired. Across a restart the daemon keeps the pause as one journal record
//   (issue 16: store::pause_destination): when a spool recovered it, no mail at all goes to
//   the destination before the end, old or ARRIVING after the restart, unless the operator
//   flushed it or retried/released the message since. When the record was lost (a crash
//   before its batch was durable), or the journal had no room (the relay then reports each
//   job the pause moved, PAUSE NOT JOURNALED in sim_delivery.cc), only a recipient recovered
//   deferred to the pause's end (or later) must wait.
// - THROTTLE: after a rule's `throttle` fired, until its end (or a restart: the daemon keeps
//   throttles in memory), the destination's rate is the lower of its own and the rule's, and
//   its connections at most the rule's connections_max or as many as the relay had open or
//   opening when it fired (those are not closed).
// - Reply rules' `bounce` and MX patterns: sim_delivery.cc (BOUNCE RULE, RULE MISAPPLIED).
// - Several rules (session 15): up to three, over two cues ("421 4.7.0 [TSS04]" and "451
//   4.7.28 [RL28]") with patterns that may overlap; the daemon takes the first rule in the
//   config's order whose destination and pattern match (shaping.cc match_reply), so each
//   check asks `winner`. Overlapping throttles of one destination: each limit is the lowest any
//   of them set, until the last one ends (a rule lowers, never raises). A reload may add,
//   remove or change rules: pauses and throttles already issued keep their end (KumoMTA's TSA
//   keeps suspensions it issued; docs/operations.md). An operator's resume ends both
//   (`lifted`).
// The settings go through the daemon's own path: [[shaping]] entries and [[reply_rule]] in
// config::settings, built into the relay's shaping_table; the default rate is the scheduler's
// default limits (the global setting).
// Never: draws from the world's or the delivery's random stream (a stream of its own, so a
// seed that draws no shaping runs exactly as before it existed).
#pragma once

#include <cstdint>
#include <deque>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <tuple>
#include <utility>
#include <vector>

#include "ringmta/config/settings.h"
#include "ringmta/server/relay.h"
#include "sim_random.h"

namespace ringmta::sim::internal {

// A destination's rate as the scheduler applies it (messages per period, burst banked).
struct sim_rate {
  std::uint32_t messages = 0;  // 0: none
  std::uint32_t period_ms = 1000;
  std::uint32_t burst = 1;
  bool operator==(const sim_rate&) const = default;
};

// Windows longer than this are not checked (a bucket's burst is long spent by then).
inline constexpr std::int64_t rate_horizon_ns = 60'000'000'000;

// One destination's check. The scheduler takes a token when it hands a job to a connection;
// the remote cannot see that moment, only bounds of it: after the connection's previous MAIL
// (or its accept: the job is taken once the last one is done) and before its first RCPT
// arrives (an envelope read may come between: up to 343 ms seen); checked then, with the
// recipient's domain (two destinations may share an MTA). Transactions whose bounds both lie
// in a window [a, b] were taken in it, so there can be at most burst + rate × (b − a) of them
// (+1 ms: the scheduler's clock is whole milliseconds). Only bounds after the last restart or
// change of rate count (a fresh bucket).
class rate_check {
 public:
  void set(const sim_rate& rate, std::int64_t now_ns);  // the rate in force from now
  void restart(std::int64_t now_ns);  // a new process: its buckets start full
  // A transaction reaches a remote MTA now, taken no earlier than `after_ns` (every one
  // counted before arrived by now): empty when within the rate, else why not.
  std::string on_transaction(std::int64_t after_ns, std::int64_t now_ns);

 private:
  sim_rate _rate;
  std::int64_t _epoch_ns = 0;
  std::deque<std::int64_t> _taken_after;  // lower bounds of the recent transactions
};

class shaping {
 public:
  // `enabled` false: nothing is drawn (the run of a seed before shaping existed).
  shaping(std::uint64_t seed, bool enabled, bool faults, std::vector<std::string> domains);

  // Sets the relay's shaping table, default rate and delay warning (when the seed drew them).
  void configure(server::relay_config& config) const;
  std::string describe() const;  // for the event log; empty when nothing was drawn
  bool rates() const { return _rates; }
  bool delay_warnings() const { return _delay_warning_ms > 0; }
  // A reload: new rates (when the seed has rates); returns a note, or empty.
  std::string reload(std::int64_t now_ns);
  void restart(std::int64_t now_ns);
  // A transaction for `domain` reaches a remote MTA now (its first RCPT), taken by the relay
  // no earlier than `after_ns`: a violation or empty.
  std::string on_transaction(std::uint32_t domain, std::int64_t after_ns, std::int64_t now_ns);
  std::uint64_t rate_checks() const { return _rate_checks; }

  // Reply rules. The remotes' cues: what a remote answers to ask for less mail.
  struct cue {
    int code;
    const char* status;
    std::string_view text;
    std::string_view name;  // for the event log
  };
  static constexpr cue cues[] = {
      {421, "4.7.0", "[TSS04] Messages temporarily deferred due to unexpected volume", "TSS04"},
      {451, "4.7.28", "[RL28] Unusual rate of mail from your address, slow down", "RL28"}};
  // The cue a remote of `domain` answers now (-1: none; never without rules).
  int says_cue(std::uint32_t domain);
  static std::string reply_of(int c);  // "CODE X.Y.Z text", as the relay reads a reply
  bool has_rule() const { return !_rules.empty(); }
  struct sim_rule {
    std::string domain;  // the destination it names ("" every one, unless `mx`)
    std::string mx;      // an MX pattern instead ("*.rcpt1.example", "*.example")
    std::uint32_t duration_s = 0;
    config::reply_action action = config::reply_action::suspend;
    std::optional<std::uint32_t> connections;
    std::optional<double> per_second;
    unsigned cues = 1;  // bit c: the rule's pattern matches cue c
    std::string origin;
  };
  // The rule the daemon applies to `reply` from a server of `domain` (the first match in the
  // config's order, its pattern searched case-insensitively: shaping.cc match_reply), nullptr:
  // none. A rule covers `domain` by its name, or when every one of its MX hosts (as the
  // simulated DNS names them) matches the rule's MX pattern (shaping.h mx_pattern_matches).
  const sim_rule* winner(std::uint32_t domain, std::string_view reply,
                         const std::vector<std::string>& mx_hosts) const;
  // Whether any rule covers `domain` (whatever the reply).
  bool covered(std::uint32_t domain, const std::vector<std::string>& mx_hosts) const;
  std::int64_t rules_changed_ns() const { return _rules_changed_ns; }
  // A reload may change the rules (a stream of its own): a note, or empty.
  std::string reload_rules(std::int64_t now_ns);
  // A `throttle` by `rule` fired for `domain` now, until `until_ns`, while the relay had
  // `connections` open or opening there.
  void on_throttle(std::uint32_t domain, std::int64_t until_ns, std::uint32_t connections,
                   std::int64_t now_ns, const sim_rule& rule);
  // An operator's resume of `domain`'s destination: its pause and throttle end now.
  void lifted(std::uint32_t domain, std::int64_t now_ns);
  // The end (ns) of the suspension running for `destination` that was not recovered after a
  // restart (0: none).
  std::int64_t live_pause_until(const std::string& destination, std::int64_t now_ns) const;
  // The connections a throttle in force allows at `domain` now (UINT32_MAX: none in force).
  std::uint32_t throttle_bound(std::uint32_t domain, std::int64_t now_ns);
  // Across a restart (session 15): a spool recovered a throttle record of `domain` ending at
  // `until_ns`; once the new process runs (restore_throttles), a throttle in force at the
  // crash whose record came back holds again, with no connection open.
  void recovered_throttle(std::uint32_t domain, std::int64_t until_ns);
  void restore_throttles(std::int64_t now_ns);
  std::uint64_t throttles_restored() const { return _throttles_restored; }
  std::uint64_t throttles_checked() const { return _throttles_checked; }
  // The relay paused `destination` until `until_ns`; `on_wire` (key, recipient) may still
  // arrive meanwhile.
  void on_pause(const std::string& destination, std::int64_t until_ns,
                std::set<std::pair<std::string, std::string>> on_wire);
  // A transaction's end of data at a remote MTA of `destination`: a violation or empty.
  std::string check_pause(const std::string& destination, std::string_view key,
                          const std::vector<std::string>& recipients, std::int64_t now_ns);
  // A crash: what was on the wire is gone; each pause still running is kept for restart().
  void forget_pauses();
  // After a recovery: `deferred` lists each (key, recipient, journaled retry in ms) of a
  // destination recovered deferred; those deferred to a kept pause's last second or later
  // must wait for its end.
  using recovered_slot = std::tuple<std::string, std::string, std::int64_t>;
  // `journaled_until_ns`: the end of the destination's pause a spool recovered (0: none).
  void restart_pauses(const std::string& destination,
                      const std::vector<recovered_slot>& deferred, std::int64_t now_ns,
                      std::int64_t journaled_until_ns);
  std::uint64_t journaled_pauses_kept() const { return _journaled_kept; }
  std::vector<std::string> kept_pauses() const;
  // The operator flushed `destination` (empty: every one) or retried/released the message
  // `key`: its recipients may go now.
  void released(const std::string& destination, const std::string& key);
  std::uint64_t restart_pauses_checked() const { return _restart_checked; }
  // A connection reaches an MTA of `destination` now, `opening_max` at most being opened when
  // a pause began: a violation or empty (a pause opens none; those on their way may connect,
  // twice with a TLS fallback).
  std::string on_connect(const std::string& destination, std::uint32_t opening_max,
                         std::int64_t now_ns);

 private:
  sim_rate draw_rate();
  sim_rate expected(std::uint32_t domain) const;
  sim_rate throttled(std::uint32_t domain) const;
  void apply_rates(std::int64_t now_ns);
  void draw_action(std::uint64_t seed, sim_rule& rule);
  void draw_action_of(random& draw, sim_rule& rule);
  void draw_more_rules(std::uint64_t seed);
  sim_rule draw_rule(random& draw);
  bool applies(const sim_rule& rule, std::uint32_t domain,
               const std::vector<std::string>& mx_hosts) const;
  std::string describe_rules() const;

  random _rng;
  std::vector<std::string> _domains;
  bool _rates = false;
  std::optional<sim_rate> _default_rate;
  // [[shaping]] messages_per_second_max per domain (as the config file says it).
  std::vector<std::optional<double>> _per_second;
  std::vector<rate_check> _checks;
  std::uint64_t _rate_checks = 0;
  // [[reply_rule]] in the config's order; each domain's remotes' chance of answering each cue
  // (the second cue, rules beyond the first and their reloads: streams of their own).
  std::vector<sim_rule> _rules;
  std::vector<double> _tss04;
  std::vector<double> _rl28;
  random _cue_rng;
  random _reload_rng;
  std::uint32_t _rules_drawn = 0;
  std::int64_t _rules_changed_ns = -1;
  bool _throttle_rates = false;  // a rule with a rate was configured at some time
  struct pause {
    std::int64_t until_ns = 0;
    std::set<std::pair<std::string, std::string>> on_wire;
    std::uint32_t connects = 0;
    // After a restart: only these (key, recipient) are held (their journaled retry times).
    bool restarted = false;
    std::set<std::pair<std::string, std::string>> recovered;
    // After a restart that recovered the pause's record: everything is held, but the messages
    // the operator retried or released (by key) since.
    bool journaled = false;
    std::set<std::string> released_keys;
  };
  std::uint64_t _journaled_kept = 0;
  std::map<std::string, pause> _paused;
  std::uint64_t _restart_checked = 0;
  struct throttle {
    std::int64_t until_ns = 0;
    std::uint32_t connections_then = 0;
    std::optional<std::uint32_t> connections;  // the lowest the throttles in force set
    std::optional<double> per_second;
  };
  std::vector<throttle> _throttles;  // per domain; until_ns 0: none
  std::vector<throttle> _throttles_at_crash;
  std::vector<std::int64_t> _throttles_recovered;  // the end of each domain's recovered record
  std::uint64_t _throttles_restored = 0;
  std::uint64_t _throttles_checked = 0;
  std::int64_t _delay_warning_ms = 0;
};

}  // namespace ringmta::sim::internal
