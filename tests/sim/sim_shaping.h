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

  // Reply rules: whether this remote answers "421 4.7.0 [TSS04]" now (never without rules).
  bool says_tss04(std::uint32_t domain);
  bool has_rule() const { return _rule; }
  config::reply_action rule_action() const { return _rule_action; }
  // Whether the rule covers `domain`: by its name, or every one of its MX hosts (as the
  // simulated DNS names them) matches the rule's MX pattern (shaping.h mx_pattern_matches).
  bool rule_applies(std::uint32_t domain, const std::vector<std::string>& mx_hosts) const;
  // A `throttle` fired for `domain` now, until `until_ns`, while the relay had `connections`
  // open or opening there.
  void on_throttle(std::uint32_t domain, std::int64_t until_ns, std::uint32_t connections,
                   std::int64_t now_ns);
  // The connections a throttle in force allows at `domain` now (UINT32_MAX: none in force).
  std::uint32_t throttle_bound(std::uint32_t domain, std::int64_t now_ns);
  std::uint64_t throttles_checked() const { return _throttles_checked; }
  static constexpr std::string_view tss04_text =
      "[TSS04] Messages temporarily deferred due to unexpected volume";
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
  void draw_action(std::uint64_t seed);

  random _rng;
  std::vector<std::string> _domains;
  bool _rates = false;
  std::optional<sim_rate> _default_rate;
  // [[shaping]] messages_per_second_max per domain (as the config file says it).
  std::vector<std::optional<double>> _per_second;
  std::vector<rate_check> _checks;
  std::uint64_t _rate_checks = 0;
  // [[reply_rule]]: the domain it names ("" every destination), its pause, each domain's
  // remotes' chance of answering TSS04.
  bool _rule = false;
  std::string _rule_domain;
  std::string _rule_mx;  // an MX pattern instead of a domain ("*.rcpt1.example", "*.example")
  std::uint32_t _rule_duration_s = 0;
  config::reply_action _rule_action = config::reply_action::suspend;
  std::optional<std::uint32_t> _throttle_connections;
  std::optional<double> _throttle_per_second;
  std::vector<double> _tss04;
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
  };
  std::vector<throttle> _throttles;  // per domain; until_ns 0: none
  std::uint64_t _throttles_checked = 0;
  std::int64_t _delay_warning_ms = 0;
};

}  // namespace ringmta::sim::internal
