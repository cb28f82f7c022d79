// ringmta-sim (run as tools/sim): replays one seeded simulation or searches seeds.
//
//   tools/sim --seed S [--seed S2 ...]  run these seeds (each replays exactly); prints digests
//   tools/sim --seconds N               run seeds from --first-seed (default: random) for N
//                                       wall seconds; prints seeds, events, simulated time
//   --inject-bug no-fsync|dir-fsync     a known durability bug on the simulated disk
//   --arrival-ms A                      mean time between client arrivals (default: per seed)
//   --inject-bug deliver-refused        a bug in the glue between the inbound sessions and
//                                       the relay: recipients refused at RCPT are routed too
//   --messages M  --no-crashes  --no-faults  --verbose (every event)
//   --no-outbound                       no relay (recipients marked at random)
//   --no-shaping                        no rates, reply rules, delay warnings or relay host
//                                       (the runs of seeds before session 12: older
//                                       regression seeds)
//   --shards-max N                      1-3 shards per seed (default 1: the regression seeds'
//                                       runs stay as they were; CI searches both)
//   --strict                            accepted, the default now: a message answered 452
//                                       that comes back is always a violation
//   --no-ack-check                      no durability check at the 250: crashes must find it
// Exit 0: no violation; 1: a violation (its seed, message and the events before it are
// printed); 2: bad arguments. Only this driver reads the wall clock (for --seconds).
#include <fmt/format.h>
#include <sys/random.h>
#include <sys/resource.h>

#include <fmt/ranges.h>

#include <chrono>
#include <regex>
#include <set>
#include <cstring>
#include <string>
#include <vector>

#include "sim_world.h"

namespace {

using ringmta::sim::disk_bug;

struct arguments {
  std::vector<std::uint64_t> seeds;
  double seconds = 0;
  std::uint64_t first_seed = 0;
  bool first_seed_given = false;
  ringmta::sim::options base;
};

int usage(const char* problem) {
  fmt::print(stderr, "tools/sim: {}\nusage: tools/sim [--seed S]... [--seconds N] "
             "[--first-seed S] [--inject-bug no-fsync|dir-fsync|deliver-refused] "
             "[--messages M] [--arrival-ms A] "
             "[--no-crashes] [--no-faults] [--no-outbound] [--no-shaping] [--shards-max N] "
             "[--strict] "
             "[--no-ack-check] "
             "[--verbose]\n",
             problem);
  return 2;
}

bool parse_number(const char* text, std::uint64_t& out) {
  char* end = nullptr;
  errno = 0;
  out = std::strtoull(text, &end, 0);
  return errno == 0 && end != text && *end == '\0';
}

using ringmta::sim::glue_bug;

const char* bug_name(const ringmta::sim::options& run) {
  if (run.bug == disk_bug::no_fsync) return "no-fsync";
  if (run.bug == disk_bug::dir_fsync) return "dir-fsync";
  switch (run.glue) {
    case glue_bug::deliver_refused: return "deliver-refused";
    case glue_bug::none: break;
  }
  return "";
}

int parse(int argc, char** argv, arguments& out) {
  for (int i = 1; i < argc; ++i) {
    const std::string_view flag(argv[i]);
    const bool has_value = i + 1 < argc;
    std::uint64_t number = 0;
    if (flag == "--seed" && has_value && parse_number(argv[++i], number)) {
      out.seeds.push_back(number);
    } else if (flag == "--seconds" && has_value && parse_number(argv[++i], number)) {
      out.seconds = static_cast<double>(number);
    } else if (flag == "--first-seed" && has_value && parse_number(argv[++i], number)) {
      out.first_seed = number;
      out.first_seed_given = true;
    } else if (flag == "--messages" && has_value && parse_number(argv[++i], number) &&
               number > 0 && number < 10'000'000) {
      out.base.messages = static_cast<std::uint32_t>(number);
    } else if (flag == "--arrival-ms" && has_value && parse_number(argv[++i], number) &&
               number > 0 && number < 3'600'000) {
      out.base.arrival_ms = static_cast<std::uint32_t>(number);
    } else if (flag == "--inject-bug" && has_value) {
      const std::string_view bug(argv[++i]);
      if (bug == "no-fsync") out.base.bug = disk_bug::no_fsync;
      else if (bug == "dir-fsync") out.base.bug = disk_bug::dir_fsync;
      else if (bug == "deliver-refused") out.base.glue = glue_bug::deliver_refused;
      else return usage("--inject-bug takes no-fsync, dir-fsync or deliver-refused");
    } else if (flag == "--no-crashes") {
      out.base.crashes = false;
    } else if (flag == "--no-outbound") {
      out.base.outbound = false;
    } else if (flag == "--no-shaping") {
      out.base.shaping = false;
    } else if (flag == "--shards-max" && has_value && parse_number(argv[++i], number) &&
               number >= 1 && number <= 3) {
      out.base.shards_max = static_cast<std::uint32_t>(number);
    } else if (flag == "--no-faults") {
      out.base.faults = false;
    } else if (flag == "--no-ack-check") {
      out.base.ack_check = false;
    } else if (flag == "--strict") {
      // The default now (RESURRECTED is always a violation); kept for old replay lines.
    } else if (flag == "--verbose") {
      out.base.verbose = true;
    } else {
      return usage(fmt::format("bad argument {}", flag).c_str());
    }
  }
  if (!out.seeds.empty() && out.seconds > 0) return usage("--seed excludes --seconds");
  if (out.seeds.empty() && out.seconds <= 0) out.seconds = 10;
  return 0;
}

// Tokens that name the things a violation is about: spool ids (16 hex digits), message keys
// ("sim.c12.t0"), remote MTAs' connections ("(r7)"), clients ("client 5 ").
std::vector<std::string> tokens_in(const std::string& text) {
  static const std::regex pattern(
      R"(\b[0-9a-f]{16}\b|sim\.c[0-9]+\.t[0-9]+|\(r[0-9]+\)|client [0-9]+ )");
  std::vector<std::string> out;
  for (auto it = std::sregex_iterator(text.begin(), text.end(), pattern);
       it != std::sregex_iterator(); ++it) {
    out.push_back(it->str());
  }
  return out;
}

// The shortest trace: the seed replayed twice (it replays exactly), first keeping the events
// that name what the violation names, then also those naming what those events name (the
// connections that carried the message, the ids of its DSNs), plus crashes and healing.
void print_related(const ringmta::sim::options& run, const std::string& violation) {
  std::set<std::string> tokens;
  for (auto& token : tokens_in(violation)) tokens.insert(token);
  if (tokens.empty()) return;
  for (int pass = 0; pass < 2; ++pass) {
    auto replay = run;
    replay.trace_filter.assign(tokens.begin(), tokens.end());
    for (const char* always : {"CRASH", "VIOLATION", "healed", "operator:"}) {
      replay.trace_filter.emplace_back(always);
    }
    const auto result = ringmta::sim::run(replay);
    if (pass == 1) {
      fmt::print("the {} events naming {}:\n", result.filtered_events.size(),
                 fmt::join(tokens, " "));
      for (const auto& line : result.filtered_events) fmt::print("  {}\n", line);
      return;
    }
    for (const auto& line : result.filtered_events) {
      if (line.find("CRASH") != std::string::npos) continue;
      for (auto& token : tokens_in(line)) tokens.insert(token);
    }
  }
}

void report_failure(const ringmta::sim::options& run, const ringmta::sim::outcome& result) {
  fmt::print("seed {}: VIOLATION: {}\nlast {} events:\n", run.seed, result.violation,
             result.last_events.size());
  for (const auto& line : result.last_events) fmt::print("  {}\n", line);
  fmt::print("replay: tools/sim --seed {} --messages {}{}{}{}{}{}{}{}{}\n", run.seed,
             run.messages,
             run.arrival_ms > 0 ? fmt::format(" --arrival-ms {}", run.arrival_ms) : "",
             *bug_name(run) != '\0' ? " --inject-bug " : "", bug_name(run),
             run.crashes ? "" : " --no-crashes", run.faults ? "" : " --no-faults",
             run.outbound ? "" : " --no-outbound", run.shaping ? "" : " --no-shaping",
             run.shards_max > 1 ? fmt::format(" --shards-max {}", run.shards_max) : "");
  print_related(run, result.violation);
  if (!run.ack_check) fmt::print("  (with --no-ack-check)\n");
}

void print_summary(std::uint64_t seed, const ringmta::sim::outcome& r) {
  fmt::print("seed {}: {} digest {:016x} events {} simulated {:.3f}s sessions {} "
             "acknowledged {} refused {} marks {} crashes {} verified {} adopted {} resurrected {} "
             "disk ops {} syncs {} faults {} | outbound connections {} deliveries {} (bodies checked {}) "
             "duplicates {} "
             "bounces {} dsns {} dns queries {} operator actions {} tls {} (broken {}, resumed {}) | "
             "shards {} parcels crossed {} (refused {}) | at suspended destinations {} "
             "reasons checked {} deleted {} | accepts {} (failed {}, refused {}) | rate checks {} rules fired {} "
             "delay dsns {} | throttles {} (connections checked {}) rule bounces {} paused across "
             "restarts {} | relay host auths {} (refused {}) | tls policy "
             "checks {} (verify {})\n",
             seed,
             r.ok ? "ok" : "FAILED", r.digest,
             r.events, static_cast<double>(r.simulated_ns) / 1e9, r.sessions, r.acknowledged,
             r.refused, r.delivered_marks, r.crashes, r.recovered_checked, r.adopted, r.resurrected,
             r.disk.operations, r.disk.syncs, r.disk.faults, r.outbound_connections,
             r.remote_deliveries, r.bodies_checked, r.duplicates, r.bounces, r.dsns, r.dns_queries,
             r.operator_actions, r.tls_sessions, r.tls_broken, r.tls_resumed, r.shards, r.parcels_crossed,
             r.parcels_refused, r.suspended_arrivals, r.reasons_checked, r.deletions,
             r.accepts, r.accepts_failed, r.refused_at_limit, r.rate_checks, r.rules_fired, r.delay_dsns,
             r.rules_throttled, r.throttle_checks, r.rule_bounces_checked, r.restart_pauses_checked,
             r.relayhost_auths, r.relayhost_auth_refused,
             r.tls_policy_checks, r.tls_verify_checks);
}

// CPU seconds of this process (user + system): on a loaded machine the wall clock also counts
// other processes' time, so both are printed.
double cpu_seconds() {
  rusage usage{};
  ::getrusage(RUSAGE_SELF, &usage);
  const auto seconds = [](const timeval& t) {
    return static_cast<double>(t.tv_sec) + static_cast<double>(t.tv_usec) / 1e6;
  };
  return seconds(usage.ru_utime) + seconds(usage.ru_stime);
}

// Simulated seconds per wall second and per CPU second, and events per wall second.
void print_speed(double simulated, std::uint64_t events, double wall, double cpu) {
  fmt::print("speed: {:.1f} simulated seconds in {:.2f} wall seconds ({:.0f}x real time, "
             "{:.0f} events/s), {:.2f} CPU seconds ({:.0f}x per CPU second)\n", simulated, wall,
             simulated / wall, static_cast<double>(events) / wall, cpu, simulated / cpu);
}

}  // namespace

int main(int argc, char** argv) {
  arguments args;
  if (const int bad = parse(argc, argv, args); bad != 0) return bad;
  const auto start = std::chrono::steady_clock::now();
  const double cpu_start = cpu_seconds();
  if (!args.seeds.empty()) {
    int status = 0;
    std::uint64_t events = 0;
    std::int64_t simulated_ns = 0;
    for (const auto seed : args.seeds) {
      auto run = args.base;
      run.seed = seed;
      const auto result = ringmta::sim::run(run);
      events += result.events;
      simulated_ns += result.simulated_ns;
      print_summary(seed, result);
      if (!result.ok) {
        report_failure(run, result);
        status = 1;
      }
    }
    print_speed(static_cast<double>(simulated_ns) / 1e9, events,
                std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(),
                cpu_seconds() - cpu_start);
    return status;
  }
  std::uint64_t seed = args.first_seed;
  if (!args.first_seed_given && ::getrandom(&seed, sizeof seed, 0) != sizeof seed) seed = 1;
  seed &= 0xffffffffffffull;  // short enough to type
  fmt::print("searching seeds from {} for {}s{}{}\n", seed, args.seconds,
             *bug_name(args.base) != '\0' ? ", injected bug " : "", bug_name(args.base));
  std::uint64_t seeds = 0, events = 0, acknowledged = 0, crashes = 0, deliveries = 0;
  std::uint64_t multi_shard = 0, crossed = 0, suspended_arrivals = 0, reasons = 0;
  std::uint64_t deletions = 0, rate_checks = 0, rules_fired = 0, delay_dsns = 0;
  std::uint64_t relayhost_seeds = 0, relayhost_auths = 0, relayhost_refused = 0;
  std::uint64_t tls_policy_checks = 0, tls_verify_checks = 0, shared_site_checks = 0;
  std::uint64_t shared_site_seeds = 0, certificate_refusals = 0;
  std::uint64_t mx_change_seeds = 0, mx_changes = 0, mx_change_shards = 0;
  std::uint64_t throttles = 0, throttle_checks = 0, rule_bounces = 0, restart_pauses = 0;
  std::int64_t simulated_ns = 0;
  double wall = 0;
  int status = 0;
  do {
    auto run = args.base;
    run.seed = seed++;
    const auto result = ringmta::sim::run(run);
    ++seeds;
    events += result.events;
    simulated_ns += result.simulated_ns;
    acknowledged += result.acknowledged;
    crashes += result.crashes;
    deliveries += result.remote_deliveries;
    multi_shard += result.shards > 1 ? 1 : 0;
    crossed += result.parcels_crossed;
    suspended_arrivals += result.suspended_arrivals;
    reasons += result.reasons_checked;
    deletions += result.deletions;
    rate_checks += result.rate_checks;
    rules_fired += result.rules_fired;
    delay_dsns += result.delay_dsns;
    throttles += result.rules_throttled;
    throttle_checks += result.throttle_checks;
    rule_bounces += result.rule_bounces_checked;
    restart_pauses += result.restart_pauses_checked;
    relayhost_seeds += result.relayhost_auths + result.relayhost_auth_refused > 0 ? 1 : 0;
    relayhost_auths += result.relayhost_auths;
    relayhost_refused += result.relayhost_auth_refused;
    tls_policy_checks += result.tls_policy_checks;
    tls_verify_checks += result.tls_verify_checks;
    shared_site_checks += result.shared_site_checks;
    shared_site_seeds += result.shared_site_checks > 0 ? 1 : 0;
    certificate_refusals += result.certificate_refusals_checked;
    mx_change_seeds += result.mx_set_changes > 0 ? 1 : 0;
    mx_change_shards += result.mx_set_changes > 0 && result.shards > 1 ? 1 : 0;
    mx_changes += result.mx_set_changes;
    wall = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    if (!result.ok) {
      report_failure(run, result);
      status = 1;
      break;
    }
  } while (wall < args.seconds);
  const double simulated = static_cast<double>(simulated_ns) / 1e9;
  fmt::print("explored {} seeds ({}..{}): {} events, {} messages acknowledged, {} remote "
             "deliveries, {} crashes, {} seeds of 2-3 shards ({} parcels crossed), {:.1f} "
             "simulated seconds in {:.2f} wall seconds ({:.0f}x real time, {:.0f} events/s); "
             "{} transactions at suspended destinations, {} bounce reasons checked, {} recipients "
             "deleted; {} transactions checked against a rate, {} reply rules fired, {} delayed "
             "DSN recipients checked; {} reply rules throttled ({} connections checked against "
             "them), {} recipients bounced by a rule checked, {} recipients held by a pause across "
             "a restart; {} seeds with a relay host: {} AUTHs ({} "
             "refused); {} RCPTs checked against a TLS policy ({} under verify; {} at another "
             "domain's MX host, a shared site, in {} seeds); {} certificate refusals "
             "checked against the policy; {} MX set changes in {} seeds ({} of 2-3 shards)\n",
             seeds, seed - seeds, seed - 1, events, acknowledged, deliveries, crashes,
             multi_shard, crossed, simulated, wall, simulated / wall,
             static_cast<double>(events) / wall, suspended_arrivals, reasons, deletions,
             rate_checks, rules_fired, delay_dsns, throttles, throttle_checks, rule_bounces,
             restart_pauses, relayhost_seeds, relayhost_auths,
             relayhost_refused, tls_policy_checks, tls_verify_checks, shared_site_checks,
             shared_site_seeds, certificate_refusals, mx_changes, mx_change_seeds,
             mx_change_shards);
  print_speed(simulated, events, wall, cpu_seconds() - cpu_start);
  return status;
}
