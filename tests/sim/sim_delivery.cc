#include "sim_delivery.h"

// First: without it ldns/common.h #defines bool, true and false as macros in C++.
#include <stdbool.h>  // NOLINT(modernize-deprecated-headers)
#include <ldns/ldns.h>
#include <arpa/inet.h>
#include <fmt/format.h>
#include <netinet/in.h>
#include <xxhash.h>

#include <algorithm>
#include <deque>
#include <cstdlib>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "ringmta/auth/sasl.h"
#include "ringmta/config/settings.h"
#include "ringmta/dns/wire.h"
#include "ringmta/queue/dsn.h"
#include "ringmta/server/egress.h"
#include <nlohmann/json.hpp>
#include "sim_dns.h"
#include "sim_shaping.h"
#include "sim_tls.h"

namespace ringmta::server {
// The shard owning a destination (relay_internal.h): where the admin API asks (holder_of).
unsigned owner_of(std::string_view destination, unsigned shards) noexcept;
}  // namespace ringmta::server

namespace ringmta::sim::internal {
namespace {

constexpr std::int64_t ms_ns = 1'000'000;
constexpr std::uint32_t client_timeout_ms = 60'000;  // every phase (RFC 5321 §4.5.3.2: minutes)
// From the relay's open to the connect that reaches a remote MTA: DNS retries, then each MX
// host in turn, each up to a few timeouts.
constexpr std::int64_t connection_setup_ns_max = 10 * 60'000 * ms_ns;
// After the heal no remote, resolver or disk fails any more: an attempt begun later succeeds.
// Attempts begun before it may still end in a deferral this long after (a connection's setup,
// then a transaction's phases, each up to client_timeout_ms).
constexpr std::int64_t heal_grace_ns = connection_setup_ns_max + 5 * client_timeout_ms * ms_ns;
constexpr std::string_view our_name = "mx.sim.example";
constexpr std::uint32_t domain_count = 4;  // rcpt0..rcpt2.example and sender.example
constexpr std::string_view domain_names[domain_count] = {"rcpt0.example", "rcpt1.example",
                                                         "rcpt2.example", "sender.example"};

// "sim.c12.t0" from "Message-ID: <sim.c12.t0@sim.example>" (the first one: a DSN's own
// Message-ID has another form, the original's is in its returned header section).
std::string message_key(std::string_view body) {
  const auto at = body.find("<sim.c");
  if (at == std::string_view::npos) return {};
  const auto end = body.find('@', at);
  return end == std::string_view::npos ? std::string{}
                                       : std::string(body.substr(at + 1, end - at - 1));
}

// Each Final-Recipient of a DSN (RFC 3464 §2.3.2).
std::vector<std::string> final_recipients(std::string_view body) {
  constexpr std::string_view field = "Final-Recipient: rfc822;";
  std::vector<std::string> out;
  for (auto at = body.find(field); at != std::string_view::npos; at = body.find(field, at + 1)) {
    std::size_t from = at + field.size();
    while (from < body.size() && body[from] == ' ') ++from;
    out.emplace_back(body.substr(from, body.find('\r', from) - from));
  }
  return out;
}

// Each recipient of a DSN with its Action (RFC 3464 §2.3.2, §2.3.3): "failed", "delayed", ...
std::vector<std::pair<std::string, std::string>> reported_actions(std::string_view body) {
  constexpr std::string_view field = "\r\nAction: ";
  std::vector<std::pair<std::string, std::string>> out;
  std::size_t from = 0;
  for (const auto& rcpt : final_recipients(body)) {
    from = body.find(field, body.find(rcpt, from));
    if (from == std::string_view::npos) break;
    from += field.size();
    out.emplace_back(rcpt, body.substr(from, body.find('\r', from) - from));
  }
  return out;
}

// The index of an address's domain in domain_names; domain_count when it is none of them.
std::uint32_t domain_of(std::string_view address) {
  const auto domain = address.substr(address.find('@') + 1);
  const auto* named = std::find(std::begin(domain_names), std::end(domain_names), domain);
  return static_cast<std::uint32_t>(named - std::begin(domain_names));
}

// A number field of one JSON log record (0 when absent).
std::int64_t log_number(std::string_view line, std::string_view name) {
  const std::string key = fmt::format("\"{}\":", name);
  const auto at = line.find(key);
  if (at == std::string_view::npos) return 0;
  return std::strtoll(std::string(line.substr(at + key.size(), 24)).c_str(), nullptr, 10);
}

// A domain's MX host names as the simulated DNS gives them (an implicit MX: the domain itself).
std::vector<std::string> mx_hosts_of(std::uint32_t domain, int mode) {
  const std::string name(domain_names[domain]);
  if (mode == 1) return {name};
  if (mode != 0) return {};
  return {fmt::format("mx1.{}", name), fmt::format("mx2.{}", name)};
}

// A string field of one JSON log record ("" when absent); the values read here (ids,
// addresses, event names) hold no escaped quote.
std::string_view log_field(std::string_view line, std::string_view name) {
  const std::string key = fmt::format("\"{}\":\"", name);
  const auto at = line.find(key);
  if (at == std::string_view::npos) return {};
  const auto from = at + key.size();
  const auto end = line.find('"', from);
  return end == std::string_view::npos ? std::string_view{} : line.substr(from, end - from);
}

// The test's ledger of a durable message: survives crashes.
// A body's size and XXH3 (BODY ALTERED).
struct body_digest {
  std::size_t bytes = 0;
  std::uint64_t xxh3 = 0;
  bool operator==(const body_digest&) const = default;
};

body_digest digest_of(std::string_view body) {
  return {body.size(), XXH3_64bits(body.data(), body.size())};
}

struct ledger_entry {
  std::string key;  // the client's Message-ID, or (a DSN) the original's it quotes
  std::string reverse_path;
  std::vector<std::string> recipients;
  std::vector<std::uint8_t> notify;
  bool dsn = false;
  // The body as the client's message must reach every remote MTA (messages only): what the
  // spool holds in wire form (the Received: field the inbound added, then the client's body
  // dot-stuffed), its size and XXH3. BODY ALTERED compares each delivery with it.
  body_digest body;
  // Every recipient was found final at a recovery, so all are in final_durable already: later
  // recoveries skip re-inserting them (issue 16: a tenth of a crash-heavy run's instructions).
  bool finals_recorded = false;
};

struct remote_host {
  std::string name;
  std::uint32_t domain = 0;
  smtp::extension_set extensions;
  std::uint64_t message_bytes_max = 0;
  bool starttls = false;  // offers STARTTLS (RFC 3207): sim_tls.h
  double tls_broken = 0;  // a connection's handshake fails (the client falls back to plaintext)
  double refuse = 0, greet_reject = 0, drop = 0, stall = 0, temporary = 0, permanent = 0;
  bool relayhost = false;  // the relay host: every destination's mail, AUTH required
  certificate presented = certificate::self_signed;  // until healed (tls_policy_plan)
  // Another domain whose MX records name this host too (a shared MX site: shared_site_plan);
  // domain_count when none.
  std::uint32_t shared_by = domain_count;
};

// A relay host receiving all mail (relay_config::relayhost, a ~quarter of the seeds), with
// STARTTLS (RFC 3207) and AUTH PLAIN/LOGIN (RFC 4954) required before MAIL. Drawn from a stream
// of its own: seeds without one draw and log exactly what they did before.
struct relayhost_plan {
  // The daemon's --relayhost-auth file: right, or wrong until the operator fixes it (a reload).
  enum class password : std::uint8_t { right, wrong };
  bool on = false;
  bool plaintext = false;    // relayhost_auth_plaintext: AUTH even without TLS
  bool login_only = false;   // offers LOGIN only, else PLAIN LOGIN (the client prefers PLAIN)
  password configured = password::right;
  std::int64_t fix_after_ns = 0;  // a wrong password's fix (a reload), after the first start
  double auth_temporary = 0;      // 454 4.7.0 to AUTH, until healed
  // In some seeds a reload adds the relay host (MX routing before) or removes it (after).
  bool routed = false;             // every destination goes to it now (relay_config)
  std::int64_t switch_after_ns = 0;  // the reload that adds or removes it, after the first start
  std::int64_t switched_ns = 0;      // when it did
  bool mx_used() const noexcept { return !on || switch_after_ns > 0; }
  // Whether a job the relay took after `taken_after_ns` went to the relay host; unknown
  // (nullopt) for a job taken around the reload.
  std::optional<bool> routed_for_job(std::int64_t taken_after_ns) const noexcept {
    if (switched_ns > taken_after_ns) return std::nullopt;
    return routed;
  }
};
constexpr std::string_view relayhost_name = "smarthost.sim.example";

// TLS policies ([relay.tls.policy_for]) in about a third of the seeds: each domain keeps
// opportunistic TLS or demands it (`required`: STARTTLS or wait, RFC 3207 §4.1 never plaintext
// instead) or a verified certificate (`verify`: the chain to the simulated CA and the MX host's
// name, or the relay host's, RFC 6125). Their MTAs offer STARTTLS more often, and under
// `verify` present a good certificate or, with faults, one for another name or a self-signed
// one until the heal (the operator renews it). In half of them a reload makes one domain's
// policy stricter during the run. Drawn from a stream of its own after every other: a seed
// without policies draws, logs and replays exactly as before.
struct tls_policy_plan {
  bool on = false;
  static constexpr auto opportunistic = outbound::tls_policy::opportunistic;
  static_assert(domain_count == 4, "one initializer per domain below");
  outbound::tls_policy fallback = opportunistic;  // tls_default
  // Opportunistic unless drawn: an entry that defers to tls_default (resolve). Written out, as
  // `= {}` would make them `none` (the enum's first value), which resolve keeps: with the relay
  // host's `required` default and no policies drawn, the MX hosts were held to nothing, never
  // offered STARTTLS after the heal, and their mail waited for its lifetime (found by DEFERRED
  // AFTER HEAL, seed 182000201 --shards-max 3).
  outbound::tls_policy policy[domain_count] = {opportunistic, opportunistic, opportunistic,
                                               opportunistic};  // in force
  outbound::tls_policy eventual[domain_count] = {opportunistic, opportunistic, opportunistic,
                                                 opportunistic};  // after the reload
  outbound::tls_policy previous[domain_count] = {opportunistic, opportunistic, opportunistic,
                                                 opportunistic};  // before the reload
  std::int64_t changed_ns[domain_count] = {};        // when the reload changed it
  std::uint32_t tightened = domain_count;            // the domain the reload makes stricter
  std::int64_t tighten_after_ns = 0;                 // after the first start
  std::uint32_t weakened = domain_count;             // the domain a reload makes weaker
  std::int64_t weaken_after_ns = 0;                  // after the first start

  outbound::tls_policy resolve(outbound::tls_policy entry) const noexcept {
    return entry != outbound::tls_policy::opportunistic ? entry : fallback;
  }
  outbound::tls_policy for_destination(std::uint32_t domain) const noexcept {
    return domain < domain_count ? resolve(policy[domain]) : fallback;
  }
  outbound::tls_policy eventually(std::uint32_t domain) const noexcept {
    return domain < domain_count ? resolve(eventual[domain]) : fallback;
  }
  // The policy a job taken after `taken_after_ns` was given: the one in force then, or (taken
  // around the reload) the weaker of the one before it and the one after.
  outbound::tls_policy for_job(std::uint32_t domain, std::int64_t taken_after_ns) const noexcept {
    if (domain < domain_count && changed_ns[domain] > taken_after_ns)
      return std::min(resolve(previous[domain]), for_destination(domain));  // none < … < verify
    return for_destination(domain);
  }
  bool demands_tls(outbound::tls_policy wanted) const noexcept {
    return wanted == outbound::tls_policy::required || wanted == outbound::tls_policy::verify;
  }
};
// An MX site shared by two domains (issue 16; relay_site.cc rolls domains with equal MX sets
// into one site, whose connections carry any member's jobs) in about a sixth of the shaping
// seeds: the `sharer`'s MX records name the `owner`'s two hosts. Mostly the sharer demands TLS
// (`required` or `verify`) where the owner is opportunistic: its mail must not ride the owner's
// connections (relay_site.cc connects_its_own_way; docs/notes.md, session 13 late). Only in
// seeds without a relay host (it would carry every domain anyway) and without a reply rule (its
// pauses and cues are per domain at the domain's own hosts). Drawn from a stream of its own
// after every other: a seed without it draws, logs and replays exactly as before.
struct shared_site_plan {
  std::uint32_t sharer = domain_count, owner = domain_count;
  bool on() const noexcept { return sharer < domain_count; }
  // The domain whose MX host names `domain`'s MX records give.
  std::uint32_t mx_domain(std::uint32_t domain) const noexcept {
    return domain == sharer ? owner : domain;
  }
};
constexpr std::string_view relayhost_user = "sim-relay";
constexpr std::string_view relayhost_password = "sim-secret";

// The relay host's MTA: its extensions, STARTTLS (always unless AUTH may go in the clear) and
// with faults its own rates of refusing, dropping, answering 451/554 and breaking TLS.
remote_host relayhost_mta(random& draw, bool plaintext, bool faults) {
  remote_host host;
  host.name = std::string(relayhost_name);
  host.domain = domain_count;
  host.relayhost = true;
  host.extensions.pipelining = draw.chance(0.7);
  host.extensions.eight_bit_mime = draw.chance(0.7);
  host.extensions.size = draw.chance(0.7);
  host.extensions.chunking = draw.chance(0.5);
  host.extensions.binary_mime = false;
  host.message_bytes_max = 8u << 20;
  host.starttls = !plaintext || draw.chance(0.5);
  if (!faults) return host;
  host.refuse = static_cast<double>(draw.below(10)) / 100;
  host.drop = static_cast<double>(draw.below(3)) / 100;
  host.temporary = static_cast<double>(draw.below(10)) / 100;
  host.permanent = static_cast<double>(draw.below(3)) / 100;
  host.tls_broken = host.starttls ? static_cast<double>(draw.below(10)) / 100 : 0.0;
  return host;
}

}  // namespace

struct delivery::state {
  // A remote MTA's side of one connection: the real server engine, random answers, and the
  // network's faults as bytes arrive (a drop loses them and closes; a stall never answers).
  struct remote_peer final : stream_peer, smtp::server_handler {
    remote_peer(state& owner, remote_host& host, std::uint64_t connection_number,
                bool tls_broken, std::uint32_t limit)
        : s(owner), remote(host), number(connection_number), limit_at_open(limit),
          presented(owner.presented_by(host)), tls_broken(tls_broken) {
      config.hostname = remote.name;
      config.extensions = remote.extensions;
      config.limits.message_bytes_max = remote.message_bytes_max;
      config.starttls_offered = owner.offers_starttls(remote);
      // AUTH is advertised before TLS too: a client that would send its password in the clear
      // is seen doing it (relay_auth), not kept from it by a 538.
      config.auth_offered = remote.relayhost;
      config.auth_requires_tls = false;
      config.auth_mechanisms = owner.relayhost.login_only ? "LOGIN" : "PLAIN LOGIN";
      server = std::make_unique<smtp::server_session>(config, *this);
      pipe = std::make_unique<server_tls_pipe>(*server, tls_broken, presented);
    }
    ~remote_peer() override { gone(); }
    void on_connected(sim_host& host, int fd) override;
    void on_bytes(sim_host& host, int fd, std::string_view bytes) override;
    void on_client_gone(sim_host&, int) override {
      // The outbound ends a handshake it refuses without an alert (connection.cc
      // fail_tls_handshake): the connection closes mid-handshake.
      if (pipe != nullptr && pipe->handshaking() && !stalled) s.check_certificate_refusal(*this);
      if (server != nullptr && !server->wants_close()) server->connection_lost();
      pipe.reset();
      server.reset();
      gone();
    }
    void hang_up(sim_host& host, int fd) {
      pipe.reset();
      server.reset();
      gone();
      host.peer_close(fd);
    }
    // The connection no longer counts against its destination's limit (once).
    void gone() {
      if (counted) s.connection_gone(remote.domain, limit_at_open);
      counted = false;
    }
    void flush(sim_host& host, int fd);
    smtp::verdict answer(const char* what);
    smtp::verdict on_helo(std::string_view, bool) noexcept override { return answer("HELO"); }
    smtp::verdict on_mail_from(const smtp::mailbox& from,
                               const smtp::mail_parameters&) noexcept override {
      if (remote.relayhost && !server->authenticated()) return s.unauthenticated_mail(*this);
      reverse_path.assign(from.address);
      recipients.clear();
      body.clear();
      taken_after_ns = last_mail_ns;
      rate_checked = false;
      last_mail_ns = s.w.clock().now_ns();
      smtp::verdict verdict = answer("MAIL");
      s.told_tss04_early(*this);
      return verdict;
    }
    smtp::verdict on_rcpt_to(const smtp::mailbox& to,
                             const smtp::rcpt_parameters&) noexcept override;
    smtp::verdict on_data_start() noexcept override {
      smtp::verdict verdict = answer("DATA");
      s.told_tss04_early(*this);
      return verdict;
    }
    void on_body(std::string_view slice, smtp::body_form form) noexcept override {
      body.append(slice);
      body_form = form;
    }
    smtp::verdict on_data_end(const smtp::body_summary&) noexcept override;
    std::uint32_t destination_of_peer() const { return s.destination_of(*this); }
    void on_reset() noexcept override { recipients.clear(); body.clear(); }
    smtp::verdict on_auth(std::string_view mechanism,
                          std::string_view initial_response) noexcept override {
      return s.relay_auth(*this, sasl.start(mechanism, initial_response));
    }
    smtp::verdict on_auth_response(std::string_view line) noexcept override {
      return s.relay_auth(*this, sasl.respond(line));
    }
    state& s;
    remote_host& remote;
    std::uint64_t number;  // for the notes: the remote's own count of connections
    std::uint32_t limit_at_open;  // the destination's connections_max when it connected
    certificate presented;        // what its STARTTLS handshake shows (sim_tls.h)
    bool tls_broken;              // answers the ClientHello with garbage (server_tls_pipe)
    std::int64_t accepted_ns = 0;  // when it accepted the connection
    bool counted = true;
    smtp::server_config config;  // the session keeps a reference
    std::unique_ptr<smtp::server_session> server;
    std::unique_ptr<server_tls_pipe> pipe;  // plaintext until STARTTLS, then TLS (sim_tls.h)
    auth::sasl_exchange sasl;  // the relay host's side of AUTH (the daemon's own machine)
    bool stalled = false;
    int said_cue = -1;  // the last answer was this reply rules' cue (shaping::cues)
    // The relay took this transaction's job after taken_after_ns (the connection's accept, or
    // its previous MAIL) and before last_mail_ns (this MAIL).
    std::int64_t last_mail_ns = 0, taken_after_ns = 0;
    bool rate_checked = false;  // at the transaction's first RCPT
    // The relay chose this transaction's job after this: the connection's accept, or the end of
    // its previous message (a reload before it must hold for the job).
    std::int64_t ready_after_ns = 0;
    std::string reverse_path;
    std::vector<std::string> recipients;
    std::string body;
    smtp::body_form body_form = smtp::body_form::wire;  // raw: it came by BDAT (RFC 3030)
  };

  state(world& owner, std::uint64_t seed);
  void note(std::string_view text) { w.note(text); }
  // The operator's next step (a person outside the process: crashes do not reset it; a
  // restart is immediate, so there is always a relay to talk to).
  template <typename F> void later(std::int64_t delay_ns, F&& action) {
    w.clock().after(delay_ns, [this, action = std::forward<F>(action)] {
      if (relay != nullptr && !w.failed_now()) action();
    });
  }
  server::relay_config make_config() const;
  // DNS
  std::vector<std::uint8_t> dns_reply(std::uint16_t id, const std::string& name,
                                      dns::record_type type, bool& drop);
  std::vector<std::string> dns_datagram(std::string_view query);
  // connections
  std::unique_ptr<stream_peer> connect_remote(const core::endpoint& address);
  void connection_gone(std::uint32_t domain, std::uint32_t limit);
  void delivered_remotely(remote_peer& h);
  std::uint32_t destination_of(const remote_peer& h) const;
  std::uint32_t destination_of(const remote_peer& h, std::string_view recipient) const;
  // the relay host (relayhost_plan)
  void draw_relayhost(std::uint64_t seed);
  void draw_relayhost_switch(std::uint64_t seed);
  void switch_relayhost();
  void check_route(const remote_peer& h, std::string_view recipient);
  void configure_relayhost(server::relay_config& config) const;
  smtp::verdict relay_auth(remote_peer& h, const auth::sasl_step& step);
  smtp::verdict unauthenticated_mail(const remote_peer& h);
  void check_transient_bounce(spool::message_id id, std::string_view to,
                              std::string_view reply);
  void fix_credentials();
  void push_config();
  void check_rate(const remote_peer& h, std::string_view recipient);
  // TLS policies (tls_policy_plan)
  void draw_tls_policies(std::uint64_t seed);
  void prepare_hosts_for_policies(random& draw, std::string& drawn);
  void draw_shared_site(std::uint64_t seed);
  void draw_mx_change(std::uint64_t seed);
  void change_mx_set();
  void change_tls_policy(std::uint32_t d);
  void draw_tls_weakening(std::uint64_t seed);
  void draw_expired_certificates(std::uint64_t seed);
  void check_certificate_refusal(const remote_peer& h);
  bool demands_tls(const remote_host& host) const;
  bool demands_verify(const remote_host& host) const;
  bool offers_starttls(const remote_host& host) const;
  certificate presented_by(const remote_host& host) const;
  certificate verified_as(const remote_peer& h) const;
  void check_tls_policy(const remote_peer& h, std::string_view recipient);
  // operator
  void operator_tick();
  void operate(std::string_view destination, std::string_view action);
  void act(spool::message_id id, std::string_view action, std::string_view reason = "sim");
  void bounce(spool::message_id id);
  void suspend(std::string_view destination);
  void note_in_flight(const std::string& destination);
  std::set<std::pair<std::string, std::string>> on_wire(const std::string& destination);
  void check_suspension(const remote_peer& h);
  void check_pause(const remote_peer& h);
  void on_reply_rule(std::string_view line);
  void on_throttle(std::uint32_t d, std::int64_t until_ns, const shaping::sim_rule& rule);
  const shaping::sim_rule* rule_for(std::uint32_t d, std::string_view reply) const;
  void check_pause_kept(const std::string& destination, bool its_own_record);
  void draw_rule_resume(std::uint32_t d);
  void check_rule_bounce(spool::message_id id, std::string_view event, std::string_view to,
                         std::string_view reply);
  std::uint32_t connections_at(const std::string& destination) const;
  void check_delay_dsn(spool::message_id dsn, std::string_view key, std::string_view rcpt);
  void check_reason_logged(spool::message_id id, std::string_view to, std::string_view reply);
  void check_reason_in_dsn(spool::message_id dsn, std::string_view body);
  void check_body(const remote_peer& h, const std::string& key);
  void check_dsn_body(const remote_peer& h, const std::string& key);
  void check_envelope(const remote_peer& h, const std::string& key);
  void check_failure_dsn(spool::message_id dsn, std::string_view key, std::string_view rcpt);
  void check_dsn_addressed(const remote_peer& h, const std::string& key, std::string_view rcpt);
  static body_digest delivered_digest(const remote_peer& h);
  void check_not_deleted_before(const remote_peer& h, const std::string& key);
  void poll_action_tickets();
  void check_deferral_after_heal(spool::message_id id, std::string_view to,
                                 std::string_view reply);
  void on_deleted(spool::message_id id, std::string_view to);
  void check_not_deleted(spool::message_id id, std::string_view to, std::string_view event);
  void forget_process();  // a crash: what only the dead process knew
  void restart_pauses(const std::vector<const spool::store*>& stores);
  void hold(spool::message_id id);
  void reload();
  // the end
  bool reported(const ledger_entry& entry, std::uint16_t r) const;

  world& w;
  random rng;
  shaping shape;  // rates, reply rules, delay warnings: a random stream of their own
  server::relay* relay = nullptr;
  bool operator_started = false;
  std::vector<server::relay*>* relays = nullptr;  // every shard's relay (relay_config.shards)
  std::vector<remote_host> hosts;
  relayhost_plan relayhost;
  tls_policy_plan tls_plan;
  shared_site_plan shared_site;
  mx_change_plan mx_change;  // sim_dns.h
  std::vector<int> domain_mode;  // 0 MX, 1 implicit MX, 2 null MX, 3 NXDOMAIN
  double dns_timeout = 0, dns_servfail = 0;
  // The relay's settings (scheduler limits, retry schedule, lifetime: the operator reloads)
  std::vector<std::int64_t> retry_delays_ms;
  std::int64_t lifetime_ms = 0;
  queue::destination_limits limits;
  bool pipelining = true, chunking = true;
  std::uint64_t scheduler_seed = 1, dns_seed = 1;
  std::int64_t operator_mean_ns = 0;
  // Suspended destinations (kept across restarts, as the daemon does), each with the (key,
  // recipient) slots of the jobs in flight when it was suspended: a transaction already on the
  // wire may finish; any other reaching the destination's MTAs is SUSPENSION IGNORED
  // (queue::scheduler never hands a suspended destination's job to a connection).
  std::map<std::string, std::set<std::pair<std::string, std::string>>> suspended;
  std::set<spool::message_id> held;       // journaled in the spool: survive restarts too
  // Every message ever held: a release that a crash caught before its journal record was
  // durable leaves the hold in the spool (the API would have answered with an error, and the
  // operator asked again); healing releases them all once more.
  std::set<spool::message_id> ever_held;
  // The API's poll of message actions' tickets (asked about once): ticket, message, action.
  struct action_ticket {
    std::uint64_t ticket;
    spool::message_id id;
    std::string action;
    server::relay* home;  // its home shard's relay (the restart forgets these tickets)
  };
  std::vector<action_ticket> action_tickets;
  // Deletes the API would have acknowledged (the ticket "ok": journaled), with when the
  // operator's poll saw it: every recovery must find the message deleted or gone (LOST DELETE),
  // and no job of it taken after that reaches a remote MTA (DELIVERED AFTER DELETE).
  std::map<spool::message_id, std::int64_t> deletes_acknowledged;
  std::uint64_t next_remote_connection = 1;
  // per destination domain: open connections, and the limits they were opened under
  // (the relay host's after the domains': it carries them all)
  std::vector<std::uint32_t> open_count = std::vector<std::uint32_t>(domain_count + 1, 0);
  std::vector<std::multiset<std::uint32_t>> open_limits =
      std::vector<std::multiset<std::uint32_t>>(domain_count + 1);
  std::deque<std::pair<std::int64_t, std::uint32_t>> retired_limits;  // (replaced at, limit)
  // the ledger (outlives crashes): what the final check compares the mailboxes with
  std::map<spool::message_id, ledger_entry> ledger;
  std::map<std::pair<std::string, std::string>, std::uint32_t> mailbox;      // key, rcpt
  std::map<std::pair<std::string, std::string>, std::uint32_t> dsn_mailbox;  // key, rcpt
  std::set<std::pair<std::string, std::string>> final_durable;  // key, rcpt
  // Durable DSNs reporting on (key, rcpt), and the DSNs the relay bounced (never reported on).
  std::map<std::pair<std::string, std::string>, std::vector<spool::message_id>> dsn_reports;
  std::set<spool::message_id> dsn_bounced;
  // The operator's bounce reasons (REASON LOST): per message bounced with a reason, the
  // reason; per (key, recipient) whose `bounced` record named it, the reason its DSN must name.
  // Destinations bounced as a whole meanwhile (no reason: either bounce may come first).
  std::uint64_t reasons_given = 0;
  std::map<spool::message_id, std::string> bounce_reasons;
  std::map<std::pair<std::string, std::string>, std::string> dsn_reasons;
  std::set<std::string> domains_bounced;
  // Deletes (docs/notes.md, "Per-message actions": deleted mail gets no DSN; a transaction on
  // the wire finishes first, a job that defers then is deleted). Per (id, recipient) the relay
  // logged `deleted` in this process: no later delivered or bounced record, no transaction at
  // a remote MTA and no DSN about it (a crash before its mark was durable may bring it back:
  // then recovery's states decide, DUPLICATE). Ever deleted (logged or recovered): accounted
  // for at the end; a deleted DSN reports its original as the operator chose.
  std::set<std::pair<spool::message_id, std::string>> deleted_now;
  std::set<std::pair<std::string, std::string>> deleted_slots_now;  // key, rcpt (not DSNs)
  std::set<std::pair<std::string, std::string>> deleted_ever;
  std::set<spool::message_id> dsn_deleted;
  // Delay warnings (RFC 3464 §2.3.3 "delayed", queue::scheduler: once per job): the messages
  // by key; per (key, recipient) the relay's delivered record (no delay DSN after it) and the
  // delayed DSNs made durable by this process.
  std::map<std::string, spool::message_id> keys;
  // The DSNs spooled about each message (by its key): size and XXH3 of each body (BODY ALTERED).
  std::map<std::string, std::vector<body_digest>> dsn_bodies;
  std::set<std::pair<std::string, std::string>> delivered_logged;
  // (key, rcpt) whose delay notice the relay logged before any delivery of it (this process).
  std::set<std::pair<std::string, std::string>> noticed_undelivered;
  void on_delay_notice(spool::message_id id, std::string_view to);
  std::map<std::pair<std::string, std::string>, std::uint32_t> delays_now;
  // Reply rules' `bounce` (this process): (key, recipient) a remote answered [TSS04] at the
  // end of data under a bounce rule that covers it, the addresses it answered so at RCPT, and
  // the (key, recipient) the relay logged bounced (DELIVERED AFTER BOUNCE).
  std::map<std::pair<std::string, std::string>, std::int64_t> told_tss04;  // (slot, when)
  std::uint64_t told_tss04_unnamed = 0;  // recipients of transactions told before their body
  // An operator's resume of a destination a reply rule paused or throttled (session 15): a
  // stream of its own, so a seed without rules replays as before.
  random resume_rng;
  std::set<std::string> unjournaled_pauses;  // suspensions whose record the journal had no room for
  void told_tss04_early(const remote_peer& h);
  std::set<std::pair<std::string, std::string>> bounced_now;
};

delivery::state::state(world& owner, std::uint64_t seed)
    : w(owner),
      rng(seed * 0x9e3779b97f4a7c15ull + 0x0b0d),
      shape(seed, owner.settings().shaping, owner.settings().faults,
            std::vector<std::string>(std::begin(domain_names), std::end(domain_names))),
      resume_rng(seed * 0x9e3779b97f4a7c15ull + 0x2e5e3e) {
  const bool faults = w.settings().faults;
  for (std::uint32_t d = 0; d < domain_count; ++d) {
    const std::uint64_t draw = rng.below(100);
    domain_mode.push_back(draw < 75 ? 0 : draw < 90 ? 1 : draw < 95 ? 2 : 3);
    for (int h = 1; h <= 2; ++h) {
      remote_host host;
      host.domain = d;
      host.name = fmt::format("mx{}.{}", h, domain_names[d]);
      host.extensions.pipelining = rng.chance(0.7);
      host.extensions.eight_bit_mime = rng.chance(0.7);
      host.extensions.size = rng.chance(0.7);
      host.extensions.chunking = rng.chance(0.5);
      host.extensions.binary_mime = false;
      host.message_bytes_max = rng.chance(0.2) ? 64u << 10 : 8u << 20;
      host.starttls = rng.chance(0.3);
      if (faults) {
        host.refuse = static_cast<double>(rng.below(20)) / 100;
        host.greet_reject = static_cast<double>(rng.below(10)) / 100;
        host.drop = static_cast<double>(rng.below(5)) / 100;
        host.stall = static_cast<double>(rng.below(3)) / 100;
        host.temporary = static_cast<double>(rng.below(10)) / 100;
        host.permanent = static_cast<double>(rng.below(4)) / 100;
        host.tls_broken = host.starttls ? static_cast<double>(rng.below(10)) / 100 : 0.0;
      }
      hosts.push_back(std::move(host));
    }
  }
  if (faults) {
    dns_timeout = static_cast<double>(rng.below(15)) / 100;
    dns_servfail = static_cast<double>(rng.below(15)) / 100;
  }
  const std::int64_t base = static_cast<std::int64_t>(rng.between(1, 30)) * 1000;
  retry_delays_ms = {base, base * 2, base * 4, base * 8};
  lifetime_ms = static_cast<std::int64_t>(rng.between(60, 1800)) * 1000;
  limits.connections_max = static_cast<std::uint32_t>(rng.between(1, 4));
  limits.messages_per_connection_max = static_cast<std::uint32_t>(rng.between(1, 20));
  limits.recipients_per_transaction_max = static_cast<std::uint32_t>(rng.between(1, 3));
  pipelining = rng.chance(0.8);
  chunking = rng.chance(0.7);
  scheduler_seed = rng.next() | 1;
  dns_seed = rng.next();
  operator_mean_ns = static_cast<std::int64_t>(rng.between(2, 60)) * 1000 * ms_ns;
  note(fmt::format("delivery: dns timeout {} servfail {} domains {},{},{},{} retry {}s "
                   "lifetime {}s connections {} messages/connection {} recipients/transaction "
                   "{}", dns_timeout, dns_servfail, domain_mode[0], domain_mode[1],
                   domain_mode[2], domain_mode[3], base / 1000, lifetime_ms / 1000,
                   limits.connections_max, limits.messages_per_connection_max,
                   limits.recipients_per_transaction_max));
  if (const auto drawn = shape.describe(); !drawn.empty()) note(drawn);
  draw_relayhost(seed);
  draw_tls_policies(seed);
  draw_shared_site(seed);
  draw_tls_weakening(seed);
  draw_expired_certificates(seed);
  draw_mx_change(seed);
}

// After every other draw (mx_change_plan): a domain with MX records of its own, in seeds with
// shaping (not the --no-shaping runs of older regression seeds), without a relay host (its
// routes skip rollup) and outside a shared MX site (its hosts count two domains' connections);
// only in runs that may have several shards (--shards-max 2 or 3, where a changed site may
// have another owner), so the default runs keep their digests (seeds 1 and 100).
void delivery::state::draw_mx_change(std::uint64_t seed) {
  if (!w.settings().shaping || relayhost.on || w.settings().shards_max < 2) return;
  std::vector<std::uint32_t> candidates;
  for (std::uint32_t d = 0; d < 3; ++d) {  // rcpt0..rcpt2
    if (domain_mode[d] == 0 && shared_site.owner != d && shared_site.sharer != d)
      candidates.push_back(d);
  }
  mx_change = sim::draw_mx_change(seed, candidates);
  if (mx_change.on()) note(mx_change.describe(domain_names[mx_change.domain]));
}

// The simulated DNS answers the domain's MX query with the other set from now on; the relay
// sees it at its next relearn (or the next lookup its cache lets through).
void delivery::state::change_mx_set() {
  mx_change.one_host = !mx_change.one_host;
  ++w.counters().mx_set_changes;
  note(fmt::format("dns: {}'s MX set is now {}", domain_names[mx_change.domain],
                   mx_change.one_host ? fmt::format("mx{} only", mx_change.kept_host + 1)
                                      : std::string("mx1 and mx2")));
}

// After every other draw, from a stream of its own: a seed without a relay host runs as before.
// --no-shaping (the runs of the seeds found before session 12) has none either: regression
// seeds 1000 and 5041 would draw one and replay another run.
void delivery::state::draw_relayhost(std::uint64_t seed) {
  random draw(seed * 0x9e3779b97f4a7c15ull + 0x5ec7e7);
  relayhost.on = draw.chance(0.25) && w.settings().shaping;
  if (!relayhost.on) return;
  relayhost.plaintext = draw.chance(0.2);
  relayhost.login_only = draw.chance(0.3);
  hosts.push_back(relayhost_mta(draw, relayhost.plaintext, w.settings().faults));
  relayhost.routed = true;
  draw_relayhost_switch(seed);
  if (w.settings().faults) {
    if (draw.chance(0.4)) {
      relayhost.configured = relayhost_plan::password::wrong;
      relayhost.fix_after_ns = static_cast<std::int64_t>(draw.between(5, 300)) * 1000 * ms_ns;
    }
    relayhost.auth_temporary = draw.chance(0.5) ? static_cast<double>(draw.below(40)) / 100 : 0;
    // Half the wrong passwords outlive messages (a lifetime of 20-90 s): their bounces must be
    // expiries (AUTH BOUNCED), and their DSNs wait for the fix like all mail.
    if (relayhost.fix_after_ns > 0 && draw.chance(0.5))
      lifetime_ms = static_cast<std::int64_t>(draw.between(20, 90)) * 1000;
  }
  note(fmt::format("delivery: relay host {} AUTH {}{}, password {}, 454 to AUTH {}, lifetime {}s",
                   relayhost_name, relayhost.login_only ? "LOGIN" : "PLAIN LOGIN",
                   relayhost.plaintext ? " (plaintext allowed)" : "",
                   relayhost.fix_after_ns > 0
                       ? fmt::format("wrong for {}s", relayhost.fix_after_ns / 1000 / ms_ns)
                       : "right",
                   relayhost.auth_temporary, lifetime_ms / 1000));
}

// A third of the relay host seeds (a stream of their own) switch routes by a reload 5-120 s
// after the first start: half start with MX routing and add the relay host, half remove it.
// The TLS default stays `required` all along (unless AUTH may go in the clear), as an
// operator's [relay.tls] would: the MX hosts are held to it too.
void delivery::state::draw_relayhost_switch(std::uint64_t seed) {
  random draw(seed * 0x9e3779b97f4a7c15ull + 0x5e17c4);
  if (!draw.chance(1.0 / 3)) return;
  relayhost.routed = draw.chance(0.5);
  relayhost.switch_after_ns = static_cast<std::int64_t>(draw.between(5, 120)) * 1000 * ms_ns;
  note(fmt::format("delivery: a reload {} the relay host after {}s",
                   relayhost.routed ? "removes" : "adds",
                   relayhost.switch_after_ns / 1000 / ms_ns));
}

// The operator adds or removes the relay host and reloads (relay::update on every shard;
// without a relay now, the next process starts with it).
void delivery::state::switch_relayhost() {
  relayhost.routed = !relayhost.routed;
  relayhost.switched_ns = w.clock().now_ns();
  note(fmt::format("operator: relay host {} (reload)", relayhost.routed ? "added" : "removed"));
  if (relay != nullptr) push_config();
}

// At each RCPT: a job the relay took while the relay host was configured goes there, and
// only then (RELAYHOST BYPASSED, RELAYHOST AFTER REMOVAL); a job taken around the reload may
// go either way.
void delivery::state::check_route(const remote_peer& h, std::string_view recipient) {
  if (!relayhost.on) return;
  const auto routed = relayhost.routed_for_job(h.ready_after_ns);
  if (!routed || *routed == h.remote.relayhost) return;
  if (*routed) {
    w.fail(fmt::format("RELAYHOST BYPASSED: r{} sent RCPT <{}> to {} while every destination's "
                       "mail goes to the relay host {}", h.number, recipient, h.remote.name,
                       relayhost_name));
  } else {
    w.fail(fmt::format("RELAYHOST AFTER REMOVAL: r{} sent RCPT <{}> to the relay host {} after "
                       "a reload removed it", h.number, recipient, relayhost_name));
  }
}

// After the relay host's draw (its TLS default is a policy's fallback), from a stream of its
// own; not under --no-shaping (the runs of the older regression seeds).
void delivery::state::draw_tls_policies(std::uint64_t seed) {
  random draw(seed * 0x9e3779b97f4a7c15ull + 0x7150c1e5);
  if (relayhost.on && !relayhost.plaintext) tls_plan.fallback = outbound::tls_policy::required;
  tls_plan.on = draw.chance(0.35) && w.settings().shaping;
  if (!tls_plan.on) return;
  constexpr outbound::tls_policy choices[] = {
      outbound::tls_policy::opportunistic, outbound::tls_policy::opportunistic,
      outbound::tls_policy::required, outbound::tls_policy::verify};
  std::string drawn;
  for (std::uint32_t d = 0; d < domain_count; ++d) {
    tls_plan.policy[d] = tls_plan.eventual[d] = choices[draw.below(4)];
    drawn += fmt::format(" {}={}", domain_names[d], outbound::describe(tls_plan.policy[d]));
  }
  if (draw.chance(0.5)) {  // a reload makes one domain stricter
    const auto d = static_cast<std::uint32_t>(draw.below(domain_count));
    const auto now = tls_plan.policy[d];
    if (now != outbound::tls_policy::verify) {
      tls_plan.tightened = d;
      tls_plan.eventual[d] = now == outbound::tls_policy::opportunistic && draw.chance(0.5)
                                 ? outbound::tls_policy::required
                                 : outbound::tls_policy::verify;
      tls_plan.tighten_after_ns = static_cast<std::int64_t>(draw.between(5, 120)) * 1000 * ms_ns;
      drawn += fmt::format(" | {} becomes {} by a reload after {}s", domain_names[d],
                           outbound::describe(tls_plan.eventual[d]),
                           tls_plan.tighten_after_ns / 1000 / ms_ns);
    }
  }
  prepare_hosts_for_policies(draw, drawn);
  note(fmt::format("delivery: TLS policies{}", drawn));
}

// The MTAs of domains that demand TLS mostly offer it (the rest once healed); under `verify`
// they present a good certificate, or with faults one for another name or a self-signed one.
void delivery::state::prepare_hosts_for_policies(random& draw, std::string& drawn) {
  const bool faults = w.settings().faults;
  for (auto& host : hosts) {
    if (demands_tls(host) && !host.starttls) {
      host.starttls = !faults || draw.chance(0.5);  // the rest offer it once healed
      if (faults && host.starttls) host.tls_broken = static_cast<double>(draw.below(10)) / 100;
    }
    if (!demands_verify(host)) continue;
    const std::uint64_t kind = faults ? draw.below(20) : 0;
    host.presented = kind < 14 ? certificate::good
                     : kind < 17 ? certificate::wrong_name : certificate::self_signed;
    if (host.presented != certificate::good)
      drawn += fmt::format(" | {}: {}", host.name, describe(host.presented));
  }
  for (const auto& host : hosts) {
    if (demands_tls(host) && !host.starttls) drawn += fmt::format(" | {}: no STARTTLS", host.name);
  }
}

// Certificate expiry (issue 16), last of the draws, from a stream of its own: with faults, in a
// third of the policy seeds, each MTA of a `verify` domain that presents a good certificate
// presents, with a chance of 1 in 3, an expired one or one that expires at 90 s (half each),
// until the heal (the operator renews it: presented_by). Expired by the simulated clock, not by
// the machine's (sim_tls.h): a relay that verifies at the machine's time accepts it, and
// UNVERIFIED TLS says so; one that resumes a session verified before the expiry after it too
// (verified_as).
void delivery::state::draw_expired_certificates(std::uint64_t seed) {
  random draw(seed * 0x9e3779b97f4a7c15ull + 0xe8b12ed);
  if (!tls_plan.on || !w.settings().faults || !draw.chance(1.0 / 3)) return;
  std::string drawn;
  for (auto& host : hosts) {
    if (!demands_verify(host) || host.presented != certificate::good || !draw.chance(1.0 / 3))
      continue;
    host.presented = draw.chance(0.5) ? certificate::expired : certificate::expiring;
    drawn += fmt::format(" | {}: {}", host.name, describe(host.presented));
  }
  if (!drawn.empty()) note(fmt::format("delivery: expired certificates{}", drawn));
}

// A reload that makes a domain's policy weaker (issue 16): in half the policy seeds without a
// tightening, after 5-120 s, a `verify` domain whose MTAs present a certificate that does not
// verify (with faults; the reason an operator gives up on verifying; they offer STARTTLS and
// do not break it) becomes `required` or
// opportunistic. Its mail then goes (the certificates stay as they are after the heal), and a
// connection the relay opens after the reload never refuses their certificate
// (check_certificate_refusal). Last of the draws, from a stream of its own.
void delivery::state::draw_tls_weakening(std::uint64_t seed) {
  random draw(seed * 0x9e3779b97f4a7c15ull + 0x3eaca5e);
  if (!tls_plan.on || relayhost.on || tls_plan.tightened < domain_count || !draw.chance(0.5))
    return;
  const auto start = static_cast<std::uint32_t>(draw.below(domain_count));
  for (std::uint32_t i = 0; i < domain_count; ++i) {
    const std::uint32_t d = (start + i) % domain_count;
    if (tls_plan.policy[d] != outbound::tls_policy::verify || shared_site.owner == d ||
        shared_site.sharer == d)
      continue;
    tls_plan.weakened = d;
    tls_plan.eventual[d] =
        draw.chance(0.5) ? outbound::tls_policy::required : outbound::tls_policy::opportunistic;
    tls_plan.weaken_after_ns = static_cast<std::int64_t>(draw.between(5, 120)) * 1000 * ms_ns;
    std::string drawn;
    if (w.settings().faults) {
      for (auto& host : hosts) {
        if (host.relayhost || host.domain != d) continue;
        host.starttls = true;  // the handshakes happen: the certificate is what fails
        host.tls_broken = 0;
        host.presented = draw.chance(0.5) ? certificate::wrong_name : certificate::self_signed;
        drawn += fmt::format(" | {}: {}", host.name, describe(host.presented));
      }
    }
    note(fmt::format("delivery: {} becomes {} by a reload after {}s{}", domain_names[d],
                     outbound::describe(tls_plan.eventual[d]),
                     tls_plan.weaken_after_ns / 1000 / ms_ns, drawn));
    return;
  }
}

// After every other draw, from a stream of its own (shared_site_plan). Both domains must have
// MX records (mode 0). Three times in four the sharer demands TLS and the owner does not (a
// reload's tightening of either keeps the policies drawn: it is the case of its own).
void delivery::state::draw_shared_site(std::uint64_t seed) {
  random draw(seed * 0x9e3779b97f4a7c15ull + 0x5a7e51e);
  if (!draw.chance(0.3) || !w.settings().shaping || relayhost.on || shape.has_rule()) return;
  const auto owner = static_cast<std::uint32_t>(draw.below(3));  // rcpt0..rcpt2
  const auto sharer = static_cast<std::uint32_t>((owner + 1 + draw.below(2)) % 3);
  if (domain_mode[owner] != 0 || domain_mode[sharer] != 0) return;
  shared_site.owner = owner;
  shared_site.sharer = sharer;
  hosts[owner * 2].shared_by = hosts[owner * 2 + 1].shared_by = sharer;
  std::string drawn;
  if (draw.chance(0.75) && tls_plan.tightened != owner && tls_plan.tightened != sharer) {
    tls_plan.on = true;
    tls_plan.policy[owner] = tls_plan.eventual[owner] = outbound::tls_policy::opportunistic;
    tls_plan.policy[sharer] = tls_plan.eventual[sharer] =
        draw.chance(0.5) ? outbound::tls_policy::verify : outbound::tls_policy::required;
    drawn = fmt::format(", {} = {}, {} = {}", domain_names[sharer],
                        outbound::describe(tls_plan.policy[sharer]), domain_names[owner],
                        outbound::describe(tls_plan.policy[owner]));
  }
  prepare_hosts_for_policies(draw, drawn);
  note(fmt::format("delivery: {} shares the MX hosts of {}{}", domain_names[sharer],
                   domain_names[owner], drawn));
}

// Whether some destination's mail to `host` must go over TLS (verified), as the relay decides:
// an MX host serves its domain, the relay host (when there is one, the only host the relay
// connects to) every destination.
bool delivery::state::demands_tls(const remote_host& host) const {
  if (!tls_plan.on && tls_plan.fallback == outbound::tls_policy::opportunistic) return false;
  if (!(host.relayhost ? relayhost.on : relayhost.mx_used())) return false;
  if (!host.relayhost) {
    return tls_plan.demands_tls(tls_plan.eventually(host.domain)) ||
           (host.shared_by < domain_count &&
            tls_plan.demands_tls(tls_plan.eventually(host.shared_by)));
  }
  for (std::uint32_t d = 0; d < domain_count; ++d)
    if (tls_plan.demands_tls(tls_plan.eventually(d))) return true;
  return false;
}
bool delivery::state::demands_verify(const remote_host& host) const {
  if (!tls_plan.on || !(host.relayhost ? relayhost.on : relayhost.mx_used())) return false;
  for (std::uint32_t d = 0; d < domain_count; ++d) {
    if ((host.relayhost || host.domain == d || host.shared_by == d) &&
        tls_plan.eventually(d) == outbound::tls_policy::verify)
      return true;
  }
  return false;
}

// What a connection to `host` meets now: once healed, STARTTLS and a good certificate wherever
// a policy demands them (the operator fixed the server), so everything drains.
bool delivery::state::offers_starttls(const remote_host& host) const {
  return host.starttls || (w.healed() && demands_tls(host));
}
certificate delivery::state::presented_by(const remote_host& host) const {
  return w.healed() && demands_verify(host) ? certificate::good : host.presented;
}

// What a verifying client must make of the certificate a connection presents: the expiring one
// is good before its end and expired after it (at the connection's accept; its handshake
// follows within the network's delay). Within 5 s of the end either: `expiring` (no check).
certificate delivery::state::verified_as(const remote_peer& h) const {
  if (h.presented != certificate::expiring) return h.presented;
  constexpr std::int64_t margin_ns = 5'000 * ms_ns;
  const std::int64_t end_ns = (expiring_not_after_s - epoch_seconds) * 1000 * ms_ns;
  if (h.accepted_ns < end_ns - margin_ns) return certificate::good;
  if (h.accepted_ns > end_ns + margin_ns) return certificate::expired;
  return certificate::expiring;
}

// The operator makes a domain's TLS policy stricter or weaker and reloads (relay::update on
// every shard; without a relay now, the next process starts with it).
void delivery::state::change_tls_policy(std::uint32_t d) {
  tls_plan.previous[d] = tls_plan.policy[d];
  tls_plan.policy[d] = tls_plan.eventual[d];
  tls_plan.changed_ns[d] = w.clock().now_ns();
  note(fmt::format("operator: {} = {} (reload)", domain_names[d],
                   outbound::describe(tls_plan.policy[d])));
  if (relay != nullptr) push_config();
}

// At each RCPT: the destination's policy holds on this connection. Plaintext where TLS is
// demanded (RFC 3207 §4.1: a client that requires TLS must not fall back), or TLS with a
// certificate that does not verify for the host under `verify`, is a violation.
void delivery::state::check_tls_policy(const remote_peer& h, std::string_view recipient) {
  if (!tls_plan.on) return;
  const std::uint32_t destination = destination_of(h, recipient);
  const outbound::tls_policy wanted = tls_plan.for_job(destination, h.ready_after_ns);
  if (!tls_plan.demands_tls(wanted)) return;
  ++w.counters().tls_policy_checks;
  if (destination != h.remote.domain && !h.remote.relayhost) ++w.counters().shared_site_checks;
  const std::string_view name =
      destination < domain_count ? domain_names[destination] : std::string_view("?");
  if (!h.server->tls_active()) {
    w.fail(fmt::format("TLS POLICY BYPASSED: r{} sent RCPT <{}> to {} in plaintext, but {} "
                       "demands TLS ({})", h.number, recipient, h.remote.name, name,
                       outbound::describe(wanted)));
    return;
  }
  if (wanted != outbound::tls_policy::verify) return;
  ++w.counters().tls_verify_checks;
  const certificate seen = verified_as(h);
  if (seen != certificate::good && seen != certificate::expiring) {
    const bool resumed = h.pipe != nullptr && h.pipe->resumed();
    w.fail(fmt::format("UNVERIFIED TLS: r{} sent RCPT <{}> to {} over TLS{} with {}{}, but {} "
                       "= verify", h.number, recipient, h.remote.name, resumed ? " (resumed)" : "",
                       describe(h.presented),
                       h.presented == certificate::expiring ? ", expired then" : "", name));
  }
}

// A TLS handshake the client ended (closed mid-handshake; the host's pipe not broken nor
// stalled, its certificate not one that verifies): the client verified it, so the connection was opened for
// a destination whose policy is `verify` (VERIFIED WITHOUT VERIFY otherwise: a reload that
// weakened the policy was not applied, or opportunistic TLS verifies, against RFC 7435 §3).
// Only at a domain's first MX host (mx1, or the implicit MX): the relay's open, which reads
// the policy, came at most a DNS lookup before its connect (first_connect_ns_max), so a
// connection accepted later than that after a reload was opened after it.
void delivery::state::check_certificate_refusal(const remote_peer& h) {
  const remote_host& host = h.remote;
  // (No relay: a crash is tearing the connections down, world::crash.)
  const certificate seen = verified_as(h);
  if (relay == nullptr || h.tls_broken || seen == certificate::good ||
      seen == certificate::expiring || host.relayhost ||
      host.shared_by < domain_count || &host != &hosts[host.domain * 2])
    return;
  constexpr std::int64_t first_connect_ns_max = 60'000 * ms_ns;
  const std::uint32_t d = host.domain;
  if (tls_plan.changed_ns[d] > 0 && h.accepted_ns - tls_plan.changed_ns[d] < first_connect_ns_max)
    return;  // opened around the reload: under either policy
  ++w.counters().certificate_refusals_checked;
  const outbound::tls_policy policy = tls_plan.for_destination(d);
  if (policy == outbound::tls_policy::verify) return;
  w.fail(fmt::format("VERIFIED WITHOUT VERIFY: r{} at {} (accepted {:.3f}s) ended the TLS "
                     "handshake at {}, but {} = {}{}", h.number, host.name,
                     static_cast<double>(h.accepted_ns) / 1e9, describe(h.presented),
                     domain_names[d], outbound::describe(policy),
                     tls_plan.changed_ns[d] > 0
                         ? fmt::format(" since a reload at {:.3f}s",
                                       static_cast<double>(tls_plan.changed_ns[d]) / 1e9)
                         : ""));
}

// Every destination to the relay host (relay.cc route_for), with --relayhost-auth's credentials
// as the file holds them now. TLS required (never plaintext, RFC 3207 §4.1) unless the operator
// allowed AUTH without it: with opportunistic TLS the outbound sends no credentials at all.
void delivery::state::configure_relayhost(server::relay_config& config) const {
  if (!relayhost.on) return;
  if (!relayhost.plaintext) config.tls_default = outbound::tls_policy::required;
  if (!relayhost.routed) return;
  config.has_relayhost = true;
  config.relayhost = server::relay_route{false, std::string(relayhost_name), 25, true};
  auto credentials = std::make_shared<outbound::client_credentials>();
  credentials->user = std::string(relayhost_user);
  credentials->password = relayhost.configured == relayhost_plan::password::right
                              ? std::string(relayhost_password) : "sim-secret-typo";
  config.relayhost_auth = std::move(credentials);
  config.relayhost_auth_plaintext = relayhost.plaintext;
}

// The daemon's relay settings where the simulation draws them; the rest are its defaults
// (MX routing, opportunistic TLS, MX site rollup).
server::relay_config delivery::state::make_config() const {
  server::relay_config config;
  config.hostname = std::string(our_name);
  config.tls_default = outbound::tls_policy::opportunistic;
  config.scheduler.limits = limits;
  config.scheduler.retry_delays_ms = retry_delays_ms;
  config.scheduler.lifetime_max_ms = lifetime_ms;
  config.scheduler.delay_warning_ms = 0;
  config.scheduler.random_seed = scheduler_seed;
  config.egress = std::make_shared<const server::egress_table>(config::settings{});
  for (const auto& [name, allowed] : suspended) config.suspended_at_start.push_back(name);
  auto& out = config.outbound;
  out.helo_name = std::string(our_name);
  out.pipelining = pipelining;
  out.chunking = chunking;
  out.ipv6 = false;
  out.connections_max = 64;  // > connections_max per destination, as the daemon has it
  // Every phase waits client_timeout_ms (the RFC's minutes would only slow the run).
  out.timeout_connect_ms = out.timeout_greeting_ms = out.timeout_hello_ms = out.timeout_mail_ms =
      out.timeout_rcpt_ms = out.timeout_data_init_ms = out.timeout_data_block_ms =
          out.timeout_data_end_ms = out.timeout_quit_ms = client_timeout_ms;
  out.idle_timeout_ms = client_timeout_ms;
  out.transfer = outbound::body_transfer::copy;  // no pipes in sim_host
  out.tls_context = simulated_client_context();
  out.receive_buffer_count = 64;
  config.dns.resolver.servers = {dns::server_address{dns::ip_address::v4(192, 0, 2, 53), 53},
                                 dns::server_address{dns::ip_address::v4(192, 0, 2, 54), 53}};
  config.dns.resolver.timeout_ms = 2000;
  config.dns.resolver.attempts = 2;
  config.dns.resolver.ipv6 = false;
  config.dns.random = dns::seeded_random(dns_seed);
  shape.configure(config);
  configure_relayhost(config);
  if (mx_change.on()) {
    config.site_relearn_ms = std::int64_t{mx_change.relearn_s} * 1000;
    config.scheduler.idle_forget_ms = mx_change.idle_forget_ms;
    // (A ready connection kept for reuse keeps its destination busy until it closes.)
    config.outbound.idle_timeout_ms = 2000;
  }
  for (std::uint32_t d = 0; d < domain_count && tls_plan.on; ++d) {
    if (tls_plan.policy[d] != outbound::tls_policy::opportunistic)
      config.tls_policies.emplace(domain_names[d], tls_plan.policy[d]);
  }
  return config;
}

// ---- DNS: a simulated server answering with ldns-built packets

std::vector<std::uint8_t> delivery::state::dns_reply(std::uint16_t id, const std::string& name,
                                                     dns::record_type type, bool& drop) {
  drop = false;
  const bool healed = w.healed();
  if (!healed && rng.chance(dns_timeout)) {
    drop = true;
    return {};
  }
  ldns_pkt_rcode rcode = LDNS_RCODE_NOERROR;
  std::vector<std::string> answer;
  int domain = -1;
  for (std::uint32_t d = 0; d < domain_count; ++d) {
    const std::string_view zone = domain_names[d];
    if (name == zone || (name.size() > zone.size() &&
                         name.compare(name.size() - zone.size() - 1, std::string::npos,
                                      fmt::format(".{}", zone)) == 0)) {
      domain = static_cast<int>(d);
    }
  }
  std::uint64_t ttl = rng.below(300);  // changing TTLs: the cache expires at random
  // A domain whose MX set changes has a short TTL (as an operator sets before a change): the
  // relay's relearn sees the new set, not its cached answer.
  if (mx_change.on() && domain == static_cast<int>(mx_change.domain)) ttl %= 3;
  if (!healed && rng.chance(dns_servfail)) {
    rcode = LDNS_RCODE_SERVFAIL;
  } else if (relayhost.on && name == relayhost_name) {  // its address: after the domains' MTAs
    if (type == dns::record_type::a)
      answer.push_back(fmt::format("{}. {} IN A 198.51.100.{}", name, ttl, hosts.size()));
  } else if (domain < 0 || domain_mode[domain] == 3) {
    rcode = LDNS_RCODE_NXDOMAIN;
  } else {
    const int mode = domain_mode[domain];
    const bool apex = name.find('.') == name.rfind('.') || name.rfind("rcpt", 0) == 0 ||
                      name.rfind("sender", 0) == 0;
    if (type == dns::record_type::mx && apex) {
      if (mode == 0) {
        const auto d = static_cast<std::uint32_t>(domain);
        const std::string_view hosts_zone =
            shared_site.mx_domain(d) == d ? std::string_view(name)
                                          : domain_names[shared_site.mx_domain(d)];
        if (mx_change.domain == d) {
          for (const auto label : mx_change.labels())
            answer.push_back(fmt::format("{}. {} IN MX {} {}.{}.", name, ttl,
                                         label == "mx1" ? 10 : 20, label, hosts_zone));
        } else {
          answer.push_back(fmt::format("{}. {} IN MX 10 mx1.{}.", name, ttl, hosts_zone));
          answer.push_back(fmt::format("{}. {} IN MX 20 mx2.{}.", name, ttl, hosts_zone));
        }
      } else if (mode == 2) {
        answer.push_back(fmt::format("{}. {} IN MX 0 .", name, ttl));
      }
    } else if (type == dns::record_type::a) {
      // mx1/mx2 have addresses; the apex only for an implicit MX (mode 1): host 1's.
      const int host = name.rfind("mx1.", 0) == 0 ? 0 : name.rfind("mx2.", 0) == 0 ? 1
                       : (apex && mode == 1) ? 0 : -1;
      if (host >= 0) {
        answer.push_back(fmt::format("{}. {} IN A 198.51.100.{}", name, ttl,
                                     domain * 2 + host + 1));
      }
    }
  }
  return encode_reply(id, name, type, rcode, answer, ttl);
}

// A query from the real dns_client, as the simulated server at 192.0.2.53/54 sees it.
std::vector<std::string> delivery::state::dns_datagram(std::string_view query) {
  ++w.counters().dns_queries;
  std::uint16_t id = 0;
  std::string name;
  dns::record_type type{};
  if (!decode_query(reinterpret_cast<const std::uint8_t*>(query.data()), query.size(), id, name,
                    type)) {
    w.fail("the resolver sent a query ldns cannot decode");
    return {};
  }
  bool drop = false;
  auto reply = dns_reply(id, name, type, drop);
  note(fmt::format("dns {} {}: {}", name, dns::record_type_name(type),
                   drop ? "no answer" : fmt::format("{} bytes", reply.size())));
  if (drop) return {};
  return {std::string(reply.begin(), reply.end())};
}

// ---- connections: the simulated network's side of a connect to 198.51.100.N

std::unique_ptr<stream_peer> delivery::state::connect_remote(const core::endpoint& address) {
  const auto* in = reinterpret_cast<const sockaddr_in*>(address.sockaddr_pointer());
  const std::size_t index = (ntohl(in->sin_addr.s_addr) & 0xff) - 1u;
  if (address.family() != AF_INET || index >= hosts.size()) return nullptr;
  remote_host& remote = hosts[index];
  // (A connection the relay opened before a reload added the relay host may still connect;
  // it takes no job: check_route.)
  if (relayhost.routed && !remote.relayhost &&
      w.clock().now_ns() - relayhost.switched_ns > connection_setup_ns_max) {
    w.fail(fmt::format("RELAYHOST BYPASSED: a connection to {} while every destination's mail "
                       "goes to the relay host {}", remote.name, relayhost_name));
  }
  if (!w.healed() && rng.chance(remote.refuse)) {
    note(fmt::format("{} refuses a connection", remote.name));
    return nullptr;
  }
  ++w.counters().outbound_connections;
  // Open connections to the destination's MTAs against its limit: the one in force, or a
  // higher one that a connection still open was opened under, or that was in force when the
  // relay may have opened this one (a reload lowers it; resolving and trying MX hosts in turn
  // takes up to a few timeouts between the relay's open and this connect). The relay host
  // carries every destination's connections: at most each one's limit.
  const std::uint32_t d = remote.domain;
  std::uint32_t limit = limits.connections_max;
  if (!open_limits[d].empty()) limit = std::max(limit, *open_limits[d].rbegin());
  while (!retired_limits.empty() &&
         w.clock().now_ns() - retired_limits.front().first > connection_setup_ns_max) {
    retired_limits.pop_front();
  }
  for (const auto& [when, retired] : retired_limits) limit = std::max(limit, retired);
  const std::uint32_t throttled =
      remote.relayhost ? UINT32_MAX : shape.throttle_bound(d, w.clock().now_ns());
  // A shared MX site's hosts: the site's connections and the stricter member's own (it is not
  // rolled up, connects_its_own_way), or two domains' when their site lookups failed.
  const std::uint32_t carried = remote.relayhost ? domain_count
                                : remote.shared_by < domain_count ? 2 : 1;
  const std::uint32_t bound = carried > 1 ? limit * carried : std::min(limit, throttled);
  w.counters().throttle_checks = shape.throttles_checked();
  if (++open_count[d] > bound) {
    w.fail(fmt::format("CONNECTION LIMIT: {} connections open to {} (limit {}{})", open_count[d],
                       remote.relayhost ? relayhost_name : domain_names[d], bound,
                       bound == throttled ? ", a reply rule's throttle" : ""));
  }
  open_limits[d].insert(limits.connections_max);
  // (A connection to the relay host is for no destination in particular until its RCPT.)
  const std::string storm = remote.relayhost ? std::string()
                                             : shape.on_connect(std::string(domain_names[d]),
                                                                limit, w.clock().now_ns());
  if (!storm.empty()) w.fail(fmt::format("PAUSE IGNORED: {}", storm));
  const bool tls_broken = !w.healed() && rng.chance(remote.tls_broken);
  return std::make_unique<remote_peer>(*this, remote, next_remote_connection++, tls_broken,
                                       limits.connections_max);
}

void delivery::state::connection_gone(std::uint32_t domain, std::uint32_t limit) {
  --open_count[domain];
  open_limits[domain].erase(open_limits[domain].find(limit));
}

void delivery::state::remote_peer::on_connected(sim_host& host, int fd) {
  s.note(fmt::format("{} accepts connection (r{})", remote.name, number));
  last_mail_ns = ready_after_ns = accepted_ns = s.w.clock().now_ns();
  if (!s.w.healed() && s.rng.chance(remote.greet_reject)) {
    server->start_refusing("busy");
  } else {
    server->start();
  }
  flush(host, fd);
}

void delivery::state::remote_peer::on_bytes(sim_host& host, int fd, std::string_view bytes) {
  if (server == nullptr || stalled) return;
  if (!s.w.healed() && s.rng.chance(remote.drop)) {
    s.note(fmt::format("r{} dropped by {}", number, remote.name));
    hang_up(host, fd);
    return;
  }
  if (!s.w.healed() && s.rng.chance(remote.stall)) {
    s.note(fmt::format("r{} {} stalls", number, remote.name));
    stalled = true;
    return;
  }
  const bool was_encrypted = server->tls_active();
  std::string out;
  const bool open = pipe->feed(bytes, out);
  if (!out.empty()) host.peer_send(fd, out);
  if (server->tls_active() && !was_encrypted) {
    ++s.w.counters().tls_sessions;
    if (pipe->resumed()) ++s.w.counters().tls_resumed;  // counted, not noted: digests stay
    s.note(fmt::format("r{} TLS established", number));
  }
  if (!open) {
    if (!server->tls_active()) ++s.w.counters().tls_broken;
    s.note(fmt::format("r{} TLS ends the connection ({})", number,
                       server->tls_active() ? "closed" : "handshake failed"));
  }
  if (!open || server->wants_close()) hang_up(host, fd);
}

void delivery::state::remote_peer::flush(sim_host& host, int fd) {
  std::string out;
  pipe->flush(out);
  if (!out.empty()) host.peer_send(fd, out);
}

// ---- the remote MTA's answers and its mailboxes

smtp::verdict delivery::state::remote_peer::answer(const char* what) {
  said_cue = -1;
  if (s.w.healed()) return smtp::verdict::accept();
  // Yahoo's volume deferral and a rate limit: reply rules' cues (a domain's MTAs only)
  if (const int c = remote.relayhost ? -1 : s.shape.says_cue(remote.domain); c >= 0) {
    const shaping::cue& cue = shaping::cues[c];
    s.note(fmt::format("r{} {} answers {} with {} {}", number, remote.name, what, cue.code,
                       cue.name));
    said_cue = c;
    return smtp::verdict::respond(cue.code, cue.status, cue.text);
  }
  if (s.rng.chance(remote.temporary)) {
    s.note(fmt::format("r{} {} answers {} with 451", number, remote.name, what));
    return smtp::verdict::respond(451, "4.3.0", "try again later");
  }
  if (s.rng.chance(remote.permanent)) {
    s.note(fmt::format("r{} {} answers {} with 554", number, remote.name, what));
    return smtp::verdict::respond(554, "5.7.1", "refused");
  }
  return smtp::verdict::accept();
}

smtp::verdict delivery::state::remote_peer::on_rcpt_to(
    const smtp::mailbox& to, const smtp::rcpt_parameters&) noexcept {
  if (is_bad(to.address)) {
    s.w.fail(fmt::format("REFUSED RECIPIENT: {} was refused 5xx at RCPT by our server but "
                         "reached {} (r{})", to.address, remote.name, number));
  }
  if (!rate_checked) s.check_rate(*this, to.address);
  s.check_tls_policy(*this, to.address);
  s.check_route(*this, to.address);
  rate_checked = true;
  smtp::verdict verdict = answer("RCPT");
  if (verdict.what() == smtp::verdict::kind::accept) recipients.emplace_back(to.address);
  s.told_tss04_early(*this);
  return verdict;
}

smtp::verdict delivery::state::remote_peer::on_data_end(const smtp::body_summary&) noexcept {
  s.check_suspension(*this);
  s.check_pause(*this);
  smtp::verdict verdict = answer("end of data");
  if (verdict.what() == smtp::verdict::kind::accept) s.delivered_remotely(*this);
  if (said_cue >= 0 && s.rule_for(destination_of_peer(), shaping::reply_of(said_cue))) {
    for (const auto& rcpt : recipients)
      s.told_tss04[{message_key(body), rcpt}] = s.w.clock().now_ns();
  }
  recipients.clear();
  body.clear();
  ready_after_ns = s.w.clock().now_ns();
  return verdict;
}

void delivery::state::delivered_remotely(remote_peer& h) {
  const std::string key = message_key(h.body);
  const bool report = h.reverse_path.empty() &&
                      h.body.find("multipart/report") != std::string::npos;
  if (report && !h.recipients.empty()) check_dsn_body(h, key);
  if (!report && !h.recipients.empty()) {
    check_body(h, key);
    check_envelope(h, key);
    check_not_deleted_before(h, key);
  }
  for (const auto& rcpt : h.recipients) {
    ++w.counters().remote_deliveries;
    if (report) {  // each Final-Recipient of the DSN: bounced and reported to the sender
      check_dsn_addressed(h, key, rcpt);
      for (const auto& final_rcpt : final_recipients(h.body)) {
        ++dsn_mailbox[{key, final_rcpt}];
        note(fmt::format("{} receives a DSN about {} for {}", h.remote.name, key, final_rcpt));
      }
      continue;
    }
    const auto slot = std::make_pair(key, rcpt);
    if (deleted_slots_now.count(slot) != 0) {
      w.fail(fmt::format("DELETED, THEN DELIVERED: {} reached {} for {} (r{}) after the relay "
                         "logged it deleted", key, h.remote.name, rcpt, h.number));
    }
    if (bounced_now.count(slot) != 0) {
      w.fail(fmt::format("DELIVERED AFTER BOUNCE: {} reached {} for {} (r{}) after the relay "
                         "logged it bounced", key, h.remote.name, rcpt, h.number));
    }
    if (final_durable.count(slot) != 0) {
      w.fail(fmt::format("DUPLICATE: {} delivered to {} again (r{}) after a recovery found its "
                         "final state", key, rcpt, h.number));
    }
    if (mailbox[slot]++ > 0) ++w.counters().duplicates;
    note(fmt::format("{} delivers {} to {} (r{})", h.remote.name, key, rcpt, h.number));
  }
}

// The destination a transaction at a remote MTA is for: the MTA's domain, or at the relay host
// its first recipient's (a job's recipients share a destination); domain_count for none.
std::uint32_t delivery::state::destination_of(const remote_peer& h) const {
  return h.recipients.empty() ? destination_of(h, {}) : destination_of(h, h.recipients.front());
}

// The destination of one recipient at a remote MTA: the MTA's domain, or (the relay host, a
// shared MX site's host) the recipient's; domain_count for none.
std::uint32_t delivery::state::destination_of(const remote_peer& h,
                                              std::string_view recipient) const {
  if (!h.remote.relayhost && h.remote.shared_by == domain_count) return h.remote.domain;
  return recipient.empty() ? domain_count : domain_of(recipient);
}

// ---- the relay host: AUTH (RFC 4954) with the daemon's credentials

// A step of the relay host's SASL exchange (auth::sasl_exchange, the daemon's own server side):
// a challenge or refusal as it says; credentials are checked against the relay host's account,
// after a possible 454 4.7.0 (RFC 4954 §6: temporary failure) while faults last. Credentials on
// a connection without TLS are UNAUTHENTICATED RELAY unless relayhost_auth_plaintext.
smtp::verdict delivery::state::relay_auth(remote_peer& h, const auth::sasl_step& step) {
  if (step.what == auth::sasl_step::kind::challenge)
    return smtp::verdict::respond(334, "", step.text);
  if (step.what == auth::sasl_step::kind::refuse) {
    note(fmt::format("r{} {} refuses AUTH: {} {}", h.number, h.remote.name, step.code,
                     step.text));
    return smtp::verdict::respond(step.code, step.enhanced, step.text);
  }
  const bool right = h.sasl.user() == relayhost_user && h.sasl.password() == relayhost_password;
  h.sasl.clear();
  if (!h.server->tls_active() && !relayhost.plaintext) {
    w.fail(fmt::format("UNAUTHENTICATED RELAY: r{} sent the relay host credentials without "
                       "TLS (relayhost_auth_plaintext is off)", h.number));
  }
  if (!w.healed() && rng.chance(relayhost.auth_temporary)) {
    note(fmt::format("r{} {} answers AUTH with 454", h.number, h.remote.name));
    ++w.counters().relayhost_auth_refused;
    return smtp::verdict::respond(454, "4.7.0", "Temporary authentication failure");
  }
  if (!right) {
    note(fmt::format("r{} {} answers AUTH with 535", h.number, h.remote.name));
    ++w.counters().relayhost_auth_refused;
    return smtp::verdict::respond(535, "5.7.8", "Authentication credentials invalid");
  }
  note(fmt::format("r{} {} authenticates {} ({})", h.number, h.remote.name, relayhost_user,
                   h.server->tls_active() ? "TLS" : "plaintext"));
  ++w.counters().relayhost_auths;
  return smtp::verdict::accept();
}

// MAIL at the relay host on a connection that did not authenticate with the right credentials:
// the daemon must never try it (smtp::client_session ends such a session before MAIL).
smtp::verdict delivery::state::unauthenticated_mail(const remote_peer& h) {
  w.fail(fmt::format("UNAUTHENTICATED RELAY: r{} sent MAIL to the relay host {} without "
                     "authenticating", h.number, h.remote.name));
  return smtp::verdict::respond(530, "5.7.0", "Authentication required");
}

// DELIVERED AFTER DELETE: the relay took this transaction's job (after h.taken_after_ns) once
// the operator had seen the message's delete acknowledged — journaled, and sent to the shards
// that queue its jobs (action_state says "pending" until then), so every job of it had been
// removed or was on the wire already. Only a job on the wire at the delete may still deliver.
// (DELETED, THEN DELIVERED needs the relay's `deleted` record: a job the delete never reached
// logs none.)
void delivery::state::check_not_deleted_before(const remote_peer& h, const std::string& key) {
  const auto id = keys.find(key);
  if (id == keys.end()) return;
  const auto deleted = deletes_acknowledged.find(id->second);
  if (deleted == deletes_acknowledged.end() || h.taken_after_ns <= deleted->second) return;
  w.fail(fmt::format("DELIVERED AFTER DELETE: {} ({:016x}) reached {} (r{}): its job was taken "
                     "after {:.3f}s, its delete acknowledged at {:.3f}s", key, id->second,
                     h.remote.name, h.number, static_cast<double>(h.taken_after_ns) / 1e9,
                     static_cast<double>(deleted->second) / 1e9));
}

// DEFERRED AFTER HEAL: once nothing fails any more, an attempt must not end in a deferral (the
// faults it could be blamed on are gone): a relay that keeps deferring then — a body it cannot
// read back, a state it cannot leave — would drain only by bouncing everything at the end of
// its lifetime, which UNDELIVERED accepts as "bounced with a DSN". Attempts begun before the
// heal may still fail within heal_grace_ns.
void delivery::state::check_deferral_after_heal(spool::message_id id, std::string_view to,
                                                std::string_view reply) {
  if (!w.healed() || w.clock().now_ns() - w.healed_ns() <= heal_grace_ns) return;
  w.fail(fmt::format("DEFERRED AFTER HEAL: {:016x} for <{}> deferred {:.1f} s after the faults "
                     "were healed: {}", id, to,
                     static_cast<double>(w.clock().now_ns() - w.healed_ns()) / 1e9, reply));
}

// Failures the daemon promises are transient (attempt_plan.cc summary: "transient whatever the
// server said"): AUTH the relay host refuses (535 5.7.8, or 454 for now) — the mail waits for
// the operator's fix of the credentials — and TLS a policy demands that did not happen (no
// STARTTLS, a failed handshake, a certificate that does not verify) — the mail waits for the
// server's fix. Such mail bounces only when its lifetime ends (relay.cc: "delivery time
// expired; last error: ...", or "... (gave up: queue lifetime expired)" for a job on the wire
// then) or by the operator. A `bounced` record naming AUTH or TLS otherwise broke it: AUTH
// BOUNCED, TLS BOUNCED. The same for every other transient failure (session 15): a bounce whose
// reply is a 4xx, or quotes a server's 4xx ("said: 4..."), made a transient failure permanent
// (RFC 5321 §4.2.1: 4yz is "Transient Negative Completion") unless the lifetime ended, the
// operator bounced it or a reply rule did ("(bounced by reply rule ...)", checked by BOUNCE
// RULE): TRANSIENT BOUNCED.
void delivery::state::check_transient_bounce(spool::message_id id, std::string_view to,
                                             std::string_view reply) {
  for (const std::string_view allowed : {"delivery time expired", "bounced by the operator"})
    if (reply.substr(0, allowed.size()) == allowed) return;
  if (reply.find(" (gave up: ") != std::string_view::npos) return;
  const bool auth = relayhost.on && reply.find("AUTH") != std::string_view::npos;
  const bool tls = reply.find("TLS") != std::string_view::npos;
  const bool transient =
      reply.substr(0, 1) == "4" || reply.find(" said: 4") != std::string_view::npos;
  const bool by_rule = reply.find(" (bounced by reply rule ") != std::string_view::npos;
  if (transient && !auth && !tls && !by_rule) {
    w.fail(fmt::format("TRANSIENT BOUNCED: {:016x} for <{}> bounced for a transient failure "
                       "(the mail waits for the next attempt, until its lifetime ends): {}", id,
                       to, reply));
    return;
  }
  if (!auth && !tls) return;
  if (auth) {
    w.fail(fmt::format("AUTH BOUNCED: {:016x} for <{}> bounced for an AUTH failure at the relay "
                       "host (a transient one: the mail waits for the credentials' fix): {}",
                       id, to, reply));
  } else {
    w.fail(fmt::format("TLS BOUNCED: {:016x} for <{}> bounced for a TLS failure (a transient "
                       "one: the mail waits for the server's STARTTLS or certificate): {}", id,
                       to, reply));
  }
}

// The operator corrects the --relayhost-auth file and reloads (relay::update): connections
// opened from now on carry the right password. Also at the heal, or (no relay at a crash) for
// the next process's configuration.
void delivery::state::fix_credentials() {
  if (relayhost.configured == relayhost_plan::password::right) return;
  relayhost.configured = relayhost_plan::password::right;
  note("operator: relay host credentials fixed (reload)");
  if (relay != nullptr) push_config();
}

// A reload: every shard's relay takes the settings in force (relay::update).
void delivery::state::push_config() {
  auto next = std::make_shared<server::relay_config>(make_config());
  next->shards = relays;
  for (auto* shard : *relays) shard->update(next);
}

// ---- operator actions, through the relay's admin entry points (admin_api.cc calls the same)

// On the shard holding the destination's queue, found as the admin API finds it: its owner
// (hash), then the owner's answer (holder_of: the shard of its MX site).
void delivery::state::operate(std::string_view destination, std::string_view action) {
  const auto shards = static_cast<unsigned>(relays->size());
  const unsigned owner = server::owner_of(destination, shards);
  server::relay* holder = (*relays)[(*relays)[owner]->holder_of(destination)];
  note(fmt::format("operator: {} {}: {}", action, destination,
                   holder->operate(destination, action)));
  if (action == "bounce") domains_bounced.emplace(destination);
  if (action == "flush") shape.released(std::string(destination), {});
  // An operator's resume ends a reply rule's pause and throttle too (relay.cc
  // lift_rule_pauses): mail may go at once.
  const std::uint32_t d = domain_of(fmt::format("@{}", destination));
  if (action == "resume" && d < domain_count) shape.lifted(d, w.clock().now_ns());
}

void delivery::state::act(spool::message_id id, std::string_view action,
                          std::string_view reason) {
  // On the message's home shard, as the admin API asks (the id's shard bits).
  server::relay& home = *(*relays)[spool::message_id_shard(id)];
  const std::string answer = home.act_on_message(id, action, reason, "operator");
  note(fmt::format("operator: {} {:016x}: {}", action, id, answer));
  const auto at = answer.find("\"ticket\":");
  if (at != std::string::npos) {
    action_tickets.push_back({std::strtoull(answer.c_str() + at + 9, nullptr, 10), id,
                              std::string(action), &home});
  }
  if (action == "bounce" && answer.find("\"found\":true") != std::string::npos)
    bounce_reasons[id] = std::string(reason);
  const auto entry = ledger.find(id);
  if ((action == "retry" || action == "release") && entry != ledger.end())
    shape.released({}, entry->second.key);
}

// `ringmta-ctl bounce --reason`: a reason of its own per action, one word (a DSN folds its
// diagnostic at spaces only), so the DSN can be told to name it.
void delivery::state::bounce(spool::message_id id) {
  act(id, "bounce", fmt::format("sim-reason-{}", ++reasons_given));
}

void delivery::state::suspend(std::string_view destination) {
  const std::string name(destination);
  if (suspended.count(name) != 0) return;
  operate(destination, "suspend");
  note_in_flight(name);
  later(static_cast<std::int64_t>(rng.between(1, 120)) * 1000 * ms_ns, [this, name] {
    if (suspended.erase(name) != 0) operate(name, "resume");
  });
}

// What may still reach a destination just suspended: the jobs the shards have on the wire
// for it (the admin API's job listing, "active"), by the ledger's key and recipient.
void delivery::state::note_in_flight(const std::string& destination) {
  auto& allowed = suspended[destination];
  allowed.merge(on_wire(destination));
  note(fmt::format("operator: {} suspended with {} recipient(s) on the wire", destination,
                   allowed.size()));
}

// The (key, recipient) slots of the jobs the shards have on the wire for a destination (the
// admin API's job listing, "active"). The listing names the in-flight jobs first; only those
// are asked for: listing a waiting job whose envelope is on disk makes its home read it back
// (for the operator's next look), so a listing of the whole queue at each reply rule changed
// the run it checks, and cost more than the rest of the run's checks (s13-simspeed).
std::set<std::pair<std::string, std::string>> delivery::state::on_wire(
    const std::string& destination) {
  std::set<std::pair<std::string, std::string>> allowed;
  for (auto* shard : *relays) {
    std::size_t in_flight = 0;
    for (const auto& d : nlohmann::json::parse(shard->destinations_json(100'000))) {
      if (d.at("destination") == destination) in_flight = d.at("in_flight").get<std::size_t>();
    }
    if (in_flight == 0) continue;
    for (const auto& job : nlohmann::json::parse(shard->jobs_json(destination, in_flight))) {
      if (job.at("state") != "active") continue;
      const auto id = std::strtoull(job.at("id").get<std::string>().c_str(), nullptr, 16);
      const auto found = ledger.find(id);
      if (found == ledger.end()) continue;
      for (const auto& recipient : job.at("recipients")) {
        const auto index = recipient.at("index").get<std::size_t>();
        if (index < found->second.recipients.size())
          allowed.emplace(found->second.key, found->second.recipients[index]);
      }
    }
  }
  return allowed;
}

// A transaction reaching a suspended destination's MTA (at its end of data, where the body
// names the message): every recipient's job must have been on the wire at the suspension.
void delivery::state::check_suspension(const remote_peer& h) {
  const std::uint32_t d = destination_of(h);
  if (d >= domain_count) return;
  const auto found = suspended.find(std::string(domain_names[d]));
  if (found == suspended.end()) return;
  const std::string key = message_key(h.body);
  ++w.counters().suspended_arrivals;
  for (const auto& rcpt : h.recipients) {
    if (found->second.count({key, rcpt}) != 0) continue;
    w.fail(fmt::format("SUSPENSION IGNORED: {} for {} reached {} (r{}) while the operator's "
                       "suspension of {} held, and was not on the wire when it began", key,
                       rcpt, h.remote.name, h.number, found->first));
    return;
  }
}

// A transaction started at a remote MTA (its MAIL FROM) against its destination's rate: the
// domain of its first recipient (another destination may share the MTA: a refused recipient's
// domain mx1.rcptN.example under --inject-bug deliver-refused resolves to it).
void delivery::state::check_rate(const remote_peer& h, std::string_view recipient) {
  const std::uint32_t d = domain_of(recipient);
  if (d >= domain_count) return;
  const std::string_view domain = domain_names[d];
  // Checked in arrival order: every transaction counted so far arrived by now.
  const std::string why = shape.on_transaction(d, h.taken_after_ns, w.clock().now_ns());
  w.counters().rate_checks = shape.rate_checks();
  if (why.empty()) return;
  w.fail(fmt::format("RATE LIMIT: {} (r{}) for {}: {}", h.remote.name, h.number, domain, why));
}

// A transaction reaching an MTA of a destination a reply rule paused (at its end of data).
void delivery::state::check_pause(const remote_peer& h) {
  const std::uint32_t d = destination_of(h);
  if (d >= domain_count) return;
  const std::string destination(domain_names[d]);
  const std::string why =
      shape.check_pause(destination, message_key(h.body), h.recipients, w.clock().now_ns());
  if (why.empty()) return;
  w.fail(fmt::format("PAUSE IGNORED: {} (r{}): {}", h.remote.name, h.number, why));
}

// The relay's "reply_rule" record (relay.cc apply_rule_to): the destination takes nothing new
// until until_ms (a suspend), but what was on the wire then.
// Several rules (session 15): the record must name the rule the daemon's order makes win for
// its reply's cue at that destination (the first match: shaping.cc match_reply), with its
// action.
void delivery::state::on_reply_rule(std::string_view line) {
  std::string destination(log_field(line, "destination"));
  destination = destination.substr(0, destination.find('@'));  // without its egress source
  const std::uint32_t d = domain_of(fmt::format("@{}", destination));
  const std::string_view action = log_field(line, "action");
  const auto* rule = rule_for(d, log_field(line, "reply"));
  if (d >= domain_count || rule == nullptr) {
    return w.fail(fmt::format("RULE MISAPPLIED: the relay applied its reply rule to {}, which "
                              "the rule does not name: {}", destination, line));
  }
  constexpr const char* actions[] = {"suspend", "throttle", "bounce"};
  const char* rule_action = actions[static_cast<int>(rule->action)];
  if (log_field(line, "rule") != rule->origin || action != rule_action) {
    return w.fail(fmt::format("RULE MISAPPLIED: the first rule matching the reply at {} is {} "
                              "({}), but the relay applied: {}", destination, rule->origin,
                              rule_action, line));
  }
  const std::int64_t until_ms = log_number(line, "until_ms");
  if (until_ms == 0) return;
  const std::int64_t until_ns = (until_ms - epoch_seconds * 1000) * ms_ns;
  if (action == "throttle") {
    on_throttle(d, until_ns, *rule);
    return check_pause_kept(destination, false);
  }
  if (action != "suspend") return;
  auto allowed = on_wire(destination);
  note(fmt::format("reply rule pauses {} for {} ms with {} recipient(s) on the wire",
                   destination, (until_ns - w.clock().now_ns()) / ms_ns, allowed.size()));
  ++w.counters().rules_fired;
  shape.on_pause(destination, until_ns, std::move(allowed));
  check_pause_kept(destination, true);
  draw_rule_resume(d);
  // The pause is one journal record (session 14): PAUSE IGNORED holds it across restarts for
  // every transaction to the destination (sim_shaping.h). The per-job reports the relay made
  // before (PAUSE NOT JOURNALED checked them) are gone but for a journal without room.
}

// A throttle (relay.cc apply_rule_to): the connections open or opening then stay (the
// scheduler closes none), no new one beyond the rule's limit, the rule's rate (sim_shaping.h).
void delivery::state::on_throttle(std::uint32_t d, std::int64_t until_ns,
                                  const shaping::sim_rule& rule) {
  const std::string destination(domain_names[d]);
  const std::uint32_t connections = connections_at(destination);
  note(fmt::format("reply rule throttles {} for {} ms ({} connection(s) open or opening)",
                   destination, (until_ns - w.clock().now_ns()) / ms_ns, connections));
  ++w.counters().rules_throttled;
  shape.on_throttle(d, until_ns, connections, w.clock().now_ns(), rule);
  draw_rule_resume(d);
}

// PAUSE NOT KEPT: a suspension in force is one journal record (store::pause_destination); a
// later record of the same destination (a throttle by another rule) must not replace it, or a
// restart sends its mail into the servers that asked for the pause. Read from the stores'
// memory (what their journals and snapshots carry), right after each record; a suspension
// whose own record found no room (ENOBUFS: the relay reports its jobs instead) is skipped.
void delivery::state::check_pause_kept(const std::string& destination, bool its_own_record) {
  const std::int64_t until_ns = shape.live_pause_until(destination, w.clock().now_ns());
  if (until_ns == 0) return;
  if (!its_own_record && unjournaled_pauses.count(destination) != 0) return;
  bool kept = false;
  for (const auto* store : w.live_stores()) {
    for (const auto& pause : store->pauses()) {
      if (pause.kind != spool::pause_kind::suspend ||
          pause.destination.substr(0, pause.destination.find('@')) != destination)
        continue;
      kept = kept || (pause.until_ms - epoch_seconds * 1000) * ms_ns >= until_ns;
    }
  }
  if (its_own_record) {
    if (kept) unjournaled_pauses.erase(destination);
    else unjournaled_pauses.insert(destination);
    return;
  }
  if (kept) return;
  w.fail(fmt::format("PAUSE NOT KEPT: the spools no longer hold the suspension of {} ({} ms "
                     "left) after another rule's record: a restart would send its mail now",
                     destination, (until_ns - w.clock().now_ns()) / ms_ns));
}

// The operator resumes a destination a reply rule just paused or throttled (a third of the
// firings, 1-30 s later): the pause and the throttle end (relay.cc lift_rule_pauses), and so
// does the journal's record (a restart after it must not bring the pause back).
void delivery::state::draw_rule_resume(std::uint32_t d) {
  if (!resume_rng.chance(0.3)) return;
  const std::string name(domain_names[d]);
  const auto delay = static_cast<std::int64_t>(resume_rng.between(1, 30)) * 1000 * ms_ns;
  later(delay, [this, name] {
    if (suspended.count(name) == 0) operate(name, "resume");
  });
}

// The scheduler's connections (open and starting) of a destination, on every shard (as
// `ringmta-ctl destinations` lists them).
std::uint32_t delivery::state::connections_at(const std::string& destination) const {
  std::uint32_t count = 0;
  for (auto* shard : *relays) {
    for (const auto& entry : nlohmann::json::parse(shard->destinations_json(100'000))) {
      if (entry.at("destination") == destination)
        count += entry.at("connections").get<std::uint32_t>();
    }
  }
  return count;
}

const shaping::sim_rule* delivery::state::rule_for(std::uint32_t d,
                                                   std::string_view reply) const {
  if (d >= domain_count) return nullptr;
  return shape.winner(d, reply, mx_hosts_of(d, domain_mode[d]));
}

// Reply rules' `bounce` (relay.cc finish_delivery): a recipient whose own reply matched (at
// RCPT, or the end of data for every recipient of the transaction) bounces now, with the
// rule named; the relay deferring one it heard [TSS04] about, or bouncing by the rule one no
// server said it about, broke it. A recipient logged bounced is never delivered after, in this
// process (DELIVERED AFTER BOUNCE).
// [TSS04] at MAIL, RCPT or DATA: a 421 closes the connection (RFC 5321 §3.8), and the client
// takes it as the reply for every recipient of the transaction not yet settled, accepted ones
// too (smtp::client_session): up to a transaction's recipients, whose names this remote may
// not have seen (pipelined RCPTs after it are not read).
void delivery::state::told_tss04_early(const remote_peer& h) {
  const std::uint32_t d = h.remote.domain;
  if (h.said_cue >= 0 && !h.remote.relayhost && shape.covered(d, mx_hosts_of(d, domain_mode[d])))
    told_tss04_unnamed += limits.recipients_per_transaction_max;
}

void delivery::state::check_rule_bounce(spool::message_id id, std::string_view event,
                                        std::string_view to, std::string_view reply) {
  const auto entry = ledger.find(id);
  if (entry == ledger.end() || entry->second.dsn) return;
  const auto slot = std::make_pair(entry->second.key, std::string(to));
  const auto told_at = told_tss04.find(slot);
  const bool told = told_at != told_tss04.end();
  // Told before a reload that changed the rules: the relay may have read it under either.
  const bool told_now = told && told_at->second > shape.rules_changed_ns();
  if (told) told_tss04.erase(told_at);
  constexpr std::string_view by_rule_text = "(bounced by reply rule ";
  const auto by_rule_at = reply.find(by_rule_text);
  const bool by_rule = by_rule_at != std::string_view::npos;
  if (event == "bounced") bounced_now.insert(slot);
  const auto* rule = rule_for(domain_of(to), reply);
  const bool bounces = rule != nullptr && rule->action == config::reply_action::bounce;
  if (told_now && event == "deferred" && bounces) {
    return w.fail(fmt::format("BOUNCE RULE IGNORED: {:016x} ({}) for <{}> deferred on a reply "
                              "its bounce rule matches: {}", id, slot.first, to, reply));
  }
  if (!by_rule) return;
  const std::string_view named = reply.substr(by_rule_at + by_rule_text.size());
  if ((!told && told_tss04_unnamed == 0) || !bounces ||
      named.substr(0, named.find(')')) != rule->origin) {
    return w.fail(fmt::format("BOUNCE RULE MISAPPLIED: {:016x} ({}) for <{}> bounced by the "
                              "reply rule, but no server said a cue whose first matching rule "
                              "({}) bounces: {}", id, slot.first, to,
                              rule == nullptr ? "none" : rule->origin, reply));
  }
  if (!told) --told_tss04_unnamed;
  ++w.counters().rule_bounces_checked;
}

// A "delayed" DSN made durable about (key, rcpt): the sender asked for it (RFC 3461 §4.1:
// NOTIFY absent means FAILURE,DELAY here; NEVER, or a list without DELAY, means none; the
// null reverse path never gets one: RFC 5321 §4.5.5), the relay had not logged the recipient
// delivered (in this process) nor a recovery found it final, and this process sent no other
// (the scheduler's "warned" flag is per job in memory: a restart may warn again; a DSN adopted
// by recovery is checked for NOTIFY only).
void delivery::state::check_delay_dsn(spool::message_id dsn, std::string_view key,
                                      std::string_view rcpt) {
  ++w.counters().delay_dsns;
  const auto slot = std::make_pair(std::string(key), std::string(rcpt));
  const auto id = keys.find(slot.first);
  if (id == keys.end()) return;  // the original is not the world's: nothing to compare
  const ledger_entry& original = ledger.at(id->second);
  const auto r = std::find(original.recipients.begin(), original.recipients.end(), rcpt);
  if (r == original.recipients.end()) {
    return w.fail(fmt::format("DELAY DSN: {:016x} reports {} for <{}>, not a recipient of it",
                              dsn, key, rcpt));
  }
  const std::uint8_t notify = original.notify[r - original.recipients.begin()];
  const bool wanted = !original.reverse_path.empty() && (notify & smtp::notify_never) == 0 &&
                      (notify == 0 || (notify & smtp::notify_delay) != 0);
  const bool adopted = relay == nullptr;  // recovery found it: the dead process's decision
  // The notice is decided when the relay logs it (`delayed`); its DSN is built and spooled
  // after the original is read, so a delivery may be logged meanwhile (seed 97000152
  // --shards-max 3: 640 ms between): only a notice decided after the delivery is wrong.
  const bool decided_before_delivery = noticed_undelivered.count(slot) != 0;
  const char* problem = !wanted   ? "whose sender did not ask for delay notices"
                        : adopted ? nullptr
                        : delivered_logged.count(slot) != 0 && !decided_before_delivery
                            ? "after the relay logged it delivered"
                        : final_durable.count(slot) != 0 ? "after a recovery found it final"
                        : ++delays_now[slot] > 1
                            ? "a second time in one process" : nullptr;
  if (problem != nullptr) {
    w.fail(fmt::format("DELAY DSN: {:016x} reports {} for <{}> delayed {} (NOTIFY bits {}, "
                       "reverse path <{}>)", dsn, key, rcpt, problem, notify,
                       original.reverse_path));
  }
}

// UNWANTED DSN: a failure report made durable about (key, rcpt) that its sender did not ask
// for (RFC 3461 §4.1: NOTIFY=NEVER, or a list without FAILURE; absent means FAILURE,DELAY) or
// that goes to the null reverse path (RFC 5321 §4.5.5: never a DSN about a DSN), or about an
// address that was not a recipient of the message.
void delivery::state::check_failure_dsn(spool::message_id dsn, std::string_view key,
                                        std::string_view rcpt) {
  const auto id = keys.find(std::string(key));
  if (id == keys.end()) return;  // the original is not the world's: nothing to compare
  const ledger_entry& original = ledger.at(id->second);
  const auto r = std::find(original.recipients.begin(), original.recipients.end(), rcpt);
  if (r == original.recipients.end()) {
    return w.fail(fmt::format("UNWANTED DSN: {:016x} reports {} failed for <{}>, not a "
                              "recipient of it", dsn, key, rcpt));
  }
  const std::uint8_t notify = original.notify[r - original.recipients.begin()];
  const bool wanted = !original.reverse_path.empty() && (notify & smtp::notify_never) == 0 &&
                      (notify == 0 || (notify & smtp::notify_failure) != 0);
  if (wanted) return;
  w.fail(fmt::format("UNWANTED DSN: {:016x} reports {} failed for <{}>, whose sender did not "
                     "ask for failure reports (NOTIFY bits {}, reverse path <{}>)", dsn, key,
                     rcpt, notify, original.reverse_path));
}

// The relay's `delayed` record: a delay notice decided for (message, recipient); whether the
// relay had logged the recipient delivered before deciding it is what check_delay_dsn needs.
void delivery::state::on_delay_notice(spool::message_id id, std::string_view to) {
  const auto found = ledger.find(id);
  if (found == ledger.end()) return;
  const auto slot = std::make_pair(found->second.key, std::string(to));
  if (delivered_logged.count(slot) == 0) noticed_undelivered.insert(slot);
}

// A `bounced` record of a message the operator bounced with a reason: unless its destination
// was bounced as a whole too (no reason), the record names the reason, and so must its DSN.
void delivery::state::check_reason_logged(spool::message_id id, std::string_view to,
                                          std::string_view reply) {
  const auto reason = bounce_reasons.find(id);
  const auto entry = ledger.find(id);
  constexpr std::string_view by_operator = "bounced by the operator";  // relay.cc handle_event
  const bool operators = reply.substr(0, by_operator.size()) == by_operator;
  // Bounced otherwise (an expiry, a 5xx): a crash lost the operator's bounce before it was
  // durable (seed 31048: torn with the journal write in flight), and the DSN now due reports
  // this bounce, not the reason of the lost one.
  if (!operators && entry != ledger.end()) dsn_reasons.erase({entry->second.key, std::string(to)});
  if (reason == bounce_reasons.end() || entry == ledger.end() || entry->second.dsn || !operators ||
      domains_bounced.count(std::string(to.substr(to.find('@') + 1))) != 0) {
    return;
  }
  if (reply.find(reason->second) == std::string_view::npos) {
    return w.fail(fmt::format("REASON LOST: {:016x} ({}) bounced for <{}> by the operator "
                              "with reason {}, but the relay's record says \"{}\"", id,
                              entry->second.key, to, reason->second, reply));
  }
  dsn_reasons[{entry->second.key, std::string(to)}] = reason->second;
}

// The size and XXH3 of a delivered body in the spool's wire form: DATA's is (dot-stuffed,
// RFC 5321 §4.5.2), BDAT's raw octets are that unstuffed (RFC 3030 §2), so they are stuffed
// again.
body_digest delivery::state::delivered_digest(const remote_peer& h) {
  if (h.body_form != smtp::body_form::raw) return digest_of(h.body);
  return digest_of(dot_stuff(h.body));
}

// BODY ALTERED: a remote MTA accepted a message whose body is not, octet for octet, what the
// inbound answered 250 for (RFC 5321 §2.3.10: the content is delivered unchanged but for trace
// fields added at reception), in either transfer. Catches a body read at the wrong offset or
// length after a restart, a slice skipped or sent twice, a transfer cut short and taken for
// whole.
void delivery::state::check_body(const remote_peer& h, const std::string& key) {
  const auto id = keys.find(key);
  if (id == keys.end()) return;  // not a client's message (no Message-ID of the world's)
  const auto entry = ledger.find(id->second);
  if (entry == ledger.end() || entry->second.body.bytes == 0) return;
  ++w.counters().bodies_checked;
  const body_digest got = delivered_digest(h);
  if (got == entry->second.body) return;
  w.fail(fmt::format("BODY ALTERED: {} reached {} (r{}, by {}) as {} octets, the spool took {} "
                     "octets with another XXH3", key, h.remote.name, h.number,
                     h.body_form == smtp::body_form::raw ? "BDAT" : "DATA", got.bytes,
                     entry->second.body.bytes));
}

// ENVELOPE ALTERED: a message reaches a remote MTA from its own sender and only for its own
// recipients (those the inbound accepted). A recipient of another message, or another sender,
// would be mail delivered to someone it was not addressed to: jobs of two messages mixed in one
// transaction, a recipient index read against the wrong envelope.
void delivery::state::check_envelope(const remote_peer& h, const std::string& key) {
  const auto id = keys.find(key);
  if (id == keys.end()) return;
  const auto entry = ledger.find(id->second);
  if (entry == ledger.end()) return;
  const auto& recipients = entry->second.recipients;
  if (h.reverse_path != entry->second.reverse_path) {
    return w.fail(fmt::format("ENVELOPE ALTERED: {} reached {} (r{}) from <{}>, its sender is "
                              "<{}>", key, h.remote.name, h.number, h.reverse_path,
                              entry->second.reverse_path));
  }
  for (const auto& rcpt : h.recipients) {
    if (std::find(recipients.begin(), recipients.end(), rcpt) != recipients.end()) continue;
    return w.fail(fmt::format("ENVELOPE ALTERED: {} reached {} (r{}) for <{}>, not one of its "
                              "recipients", key, h.remote.name, h.number, rcpt));
  }
}

// The same for a DSN: the remote MTA got, octet for octet, one of the DSNs about the message
// that the relay spooled (several may quote one message: a delay notice, a failure report).
void delivery::state::check_dsn_body(const remote_peer& h, const std::string& key) {
  const auto spooled = dsn_bodies.find(key);
  if (spooled == dsn_bodies.end()) return;  // not known to the world (commit reported failed)
  ++w.counters().bodies_checked;
  const body_digest got = delivered_digest(h);
  if (std::find(spooled->second.begin(), spooled->second.end(), got) != spooled->second.end())
    return;
  w.fail(fmt::format("BODY ALTERED: a DSN about {} reached {} (r{}, by {}) as {} octets, unlike "
                     "each of the {} the relay spooled about it", key, h.remote.name, h.number,
                     h.body_form == smtp::body_form::raw ? "BDAT" : "DATA", got.bytes,
                     spooled->second.size()));
}

// DSN MISADDRESSED: a DSN goes to the reverse path of the message it reports on (RFC 3461
// §6.2 / RFC 5321 §4.5.5: to the MAIL FROM address, from the null reverse path), and to nobody
// else. Before, a DSN counted as "reached the sender" at whichever address it was delivered.
void delivery::state::check_dsn_addressed(const remote_peer& h, const std::string& key,
                                          std::string_view rcpt) {
  const auto id = keys.find(key);
  if (id == keys.end()) return;
  const auto entry = ledger.find(id->second);
  if (entry == ledger.end() || entry->second.reverse_path == rcpt) return;
  w.fail(fmt::format("DSN MISADDRESSED: a DSN about {} reached {} (r{}) for <{}>, but its "
                     "sender was <{}>", key, h.remote.name, h.number, rcpt,
                     entry->second.reverse_path));
}

// A DSN made durable: it names the reason of each recipient it reports that the operator
// bounced with one (RFC 3464 §2.3.6: the diagnostic; docs/notes.md, "Per-message actions").
void delivery::state::check_reason_in_dsn(spool::message_id dsn, std::string_view body) {
  const std::string key = message_key(body);
  for (const auto& [rcpt, action] : reported_actions(body)) {
    if (deleted_slots_now.count({key, rcpt}) != 0) {
      return w.fail(fmt::format("DELETED, THEN BOUNCED: DSN {:016x} reports {} for <{}>, which "
                                "the relay logged deleted (deleted mail gets no DSN)", dsn, key,
                                rcpt));
    }
    // A delay notice the relay decided before the bounce may become durable after it (seed
    // 171001528 --shards-max 3: decided at a restart, the operator's bounce 1 s later): it
    // reports "delayed", not the bounce, and names no reason.
    const auto want = dsn_reasons.find({key, rcpt});
    if (want == dsn_reasons.end() || action == "delayed") continue;
    if (body.find(want->second) == std::string_view::npos) {
      return w.fail(fmt::format("REASON LOST: DSN {:016x} about {} for <{}> does not name the "
                                "operator's reason {}", dsn, key, rcpt, want->second));
    }
    ++w.counters().reasons_checked;
    dsn_reasons.erase(want);
  }
}

// The operator's bounce reasons outlive a crash (the spool journals them with the bounce: a
// reason record, docs/spool.md), so the reasons expected stay across it.
void delivery::state::forget_process() {
  for (auto& [name, allowed] : suspended) allowed.clear();  // a new relay has nothing on the wire
  domains_bounced.clear();
  deleted_now.clear();
  deleted_slots_now.clear();
  delays_now.clear();
  delivered_logged.clear();  // a delivery whose mark was lost is tried again: a new story
  noticed_undelivered.clear();
  told_tss04.clear();
  told_tss04_unnamed = 0;
  bounced_now.clear();
  shape.forget_pauses();
}

// The pauses running at a crash, after the recovery: each destination's recipients recovered
// deferred, with their journaled retry times (sim_shaping.h, PAUSE IGNORED across restarts).
void delivery::state::restart_pauses(const std::vector<const spool::store*>& stores) {
  for (const auto& destination : shape.kept_pauses()) {
    std::vector<shaping::recovered_slot> deferred;
    for (const auto& [id, entry] : ledger) {
      const spool::message_entry* found = stores.at(spool::message_id_shard(id))->find(id);
      if (entry.dsn || found == nullptr || found->status != spool::message_status::queued)
        continue;
      for (std::size_t r = 0; r < entry.recipients.size(); ++r) {
        const auto status = found->recipients[r];
        const std::uint32_t d = domain_of(entry.recipients[r]);
        if (status.state != spool::recipient_state::deferred || d >= domain_count ||
            domain_names[d] != destination) {
          continue;
        }
        deferred.emplace_back(entry.key, entry.recipients[r],
                              (status.next_attempt_seconds - epoch_seconds) * 1000 * ms_ns);
      }
    }
    std::int64_t journaled_until_ns = 0;  // the pause record a spool recovered (issue 16)
    for (const auto* store : stores) {
      for (const auto& pause : store->pauses()) {
        if (pause.kind != spool::pause_kind::suspend ||
            pause.destination.substr(0, pause.destination.find('@')) != destination)
          continue;
        journaled_until_ns = std::max(journaled_until_ns,
                                      (pause.until_ms - epoch_seconds * 1000) * ms_ns);
      }
    }
    shape.restart_pauses(destination, deferred, w.clock().now_ns(), journaled_until_ns);
  }
  w.counters().restart_pauses_checked =
      shape.restart_pauses_checked() + shape.journaled_pauses_kept();
  for (const auto* store : stores) {  // throttles: restored when the new relay runs (attach)
    for (const auto& pause : store->pauses()) {
      const std::uint32_t d =
          domain_of(fmt::format("@{}", pause.destination.substr(0, pause.destination.find('@'))));
      if (pause.kind == spool::pause_kind::throttle && d < domain_count)
        shape.recovered_throttle(d, (pause.until_ms - epoch_seconds * 1000) * ms_ns);
    }
  }
}

void delivery::state::on_deleted(spool::message_id id, std::string_view to) {
  const auto entry = ledger.find(id);
  if (entry == ledger.end()) return;
  deleted_now.emplace(id, to);
  if (entry->second.dsn) {
    dsn_deleted.insert(id);
    return;
  }
  deleted_slots_now.emplace(entry->second.key, to);
  deleted_ever.emplace(entry->second.key, to);
}

void delivery::state::check_not_deleted(spool::message_id id, std::string_view to,
                                        std::string_view event) {
  if (deleted_now.count({id, std::string(to)}) == 0) return;
  w.fail(fmt::format("DELETED, THEN {}: {:016x} for <{}>: the relay logged it deleted, then {}",
                     event == "delivered" ? "DELIVERED" : "BOUNCED", id, to, event));
}

void delivery::state::hold(spool::message_id id) {
  if (!held.insert(id).second) return;
  ever_held.insert(id);
  act(id, "hold");
  later(static_cast<std::int64_t>(rng.between(1, 120)) * 1000 * ms_ns, [this, id] {
    if (held.erase(id) != 0) act(id, "release");
  });
}

// A reload: a new retry schedule and connection limit (queued jobs keep their times).
void delivery::state::reload() {
  if (const auto rates = shape.reload(w.clock().now_ns()); !rates.empty()) note(rates);
  if (const auto rules = shape.reload_rules(w.clock().now_ns()); !rules.empty()) note(rules);
  const std::int64_t base = static_cast<std::int64_t>(rng.between(1, 30)) * 1000;
  retry_delays_ms = {base, base * 3, base * 9};
  retired_limits.emplace_back(w.clock().now_ns(), limits.connections_max);
  limits.connections_max = static_cast<std::uint32_t>(rng.between(1, 4));
  push_config();
  note(fmt::format("operator: reload (retry {}s, connections {})", base / 1000,
                   limits.connections_max));
}

// The API's poll of earlier message actions: their journal records landed (or failed). Run
// as each action's record becomes durable, and at the operator's every step (an action whose
// jobs waited for their envelope's read answers "pending" until it is sent to them).
void delivery::state::poll_action_tickets() {
  std::erase_if(action_tickets, [this](const action_ticket& asked) {
    const std::string answer = asked.home->action_state(asked.ticket);
    if (answer == "ok" && asked.action == "delete")
      deletes_acknowledged.emplace(asked.id, w.clock().now_ns());
    return answer != "pending";
  });
}

void delivery::on_action_durable() {
  if (_state->relay != nullptr) _state->poll_action_tickets();
}

void delivery::state::operator_tick() {
  if (w.healed()) return;
  ++w.counters().operator_actions;
  poll_action_tickets();
  const std::string_view destination = domain_names[rng.below(domain_count)];
  const std::uint64_t action = rng.below(100);
  const spool::message_id message = w.random_queued_message(rng);
  if (action < 18) {
    suspend(destination);
  } else if (action < 30 && message != 0) {
    bounce(message);
  } else if (action < 38 && message != 0) {
    hold(message);
  } else if (action < 44 && message != 0) {
    act(message, "delete");
  } else if (action < 50 && message != 0) {
    act(message, "retry");
  } else if (action < 54) {
    operate(destination, "bounce");
  } else if (action < 80) {
    for (const auto name : domain_names) operate(name, "flush");
  } else {
    reload();
  }
  w.wake_process();
  later(static_cast<std::int64_t>(rng.between(1, 2 * 1000)) * operator_mean_ns / 1000,
        [this] { operator_tick(); });
}

// ---- the end: every recipient delivered or reported

// A DSN about the recipient was made durable, and reached the sender or was bounced itself.
bool delivery::state::reported(const ledger_entry& entry, std::uint16_t r) const {
  const auto slot = std::make_pair(entry.key, entry.recipients[r]);
  if (dsn_mailbox.count(slot) != 0) return true;
  const auto dsns = dsn_reports.find(slot);
  if (dsns == dsn_reports.end()) return false;
  return std::any_of(dsns->second.begin(), dsns->second.end(),
                     [this](spool::message_id dsn) {
                       return dsn_bounced.count(dsn) != 0 || dsn_deleted.count(dsn) != 0;
                     });
}

// ---- delivery: the world's view

delivery::delivery(world& owner, std::uint64_t seed)
    : _state(std::make_unique<state>(owner, seed)) {}
delivery::~delivery() = default;

sim_network delivery::network() {
  sim_network network;
  network.connect = [this](const core::endpoint& address) {
    return _state->connect_remote(address);
  };
  network.datagram = [this](const core::endpoint&, std::string_view query) {
    return _state->dns_datagram(query);
  };
  return network;
}

server::relay_config delivery::relay_config(std::vector<server::relay*>& relays) {
  server::relay_config config = _state->make_config();
  config.shards = &relays;
  _state->relays = &relays;
  return config;
}

void delivery::attach(server::relay* relay) {
  state& s = *_state;
  s.relay = relay;
  s.action_tickets.clear();  // a new relay knows none of them
  // The new scheduler's buckets start full; the pauses are forgotten.
  s.shape.restart(s.w.clock().now_ns());
  if (relay != nullptr) s.shape.restore_throttles(s.w.clock().now_ns());
  if (relay == nullptr) s.forget_process();
  if (relay != nullptr && !s.operator_started) {
    s.operator_started = true;
    s.later(static_cast<std::int64_t>(s.rng.between(1, 2) * s.operator_mean_ns),
            [&s] { s.operator_tick(); });
    if (s.relayhost.fix_after_ns > 0) s.later(s.relayhost.fix_after_ns, [&s] {
      s.fix_credentials();
    });
    if (s.relayhost.switch_after_ns > 0) {
      s.w.clock().after(s.relayhost.switch_after_ns, [&s] {
        if (!s.w.failed_now()) s.switch_relayhost();
      });
    }
    if (s.tls_plan.tighten_after_ns > 0) {
      s.w.clock().after(s.tls_plan.tighten_after_ns, [&s] {
        if (!s.w.failed_now()) s.change_tls_policy(s.tls_plan.tightened);
      });
    }
    if (s.tls_plan.weaken_after_ns > 0) {
      s.w.clock().after(s.tls_plan.weaken_after_ns, [&s] {
        if (!s.w.failed_now()) s.change_tls_policy(s.tls_plan.weakened);
      });
    }
    for (const auto when : s.mx_change.changes_ns) {
      s.w.clock().after(when, [&s] {
        if (!s.w.failed_now()) s.change_mx_set();
      });
    }
  }
}

void delivery::on_message(spool::message_id id, const expected_message& message) {
  state& s = *_state;
  const bool dsn = message.client_address == "local";
  ledger_entry entry{dsn ? message_key(message.body_wire) : message.key, message.reverse_path,
                     message.recipients, message.notify, dsn};
  entry.notify.resize(entry.recipients.size(), 0);
  if (dsn) {
    for (const auto& [rcpt, action] : reported_actions(message.body_wire)) {
      if (action == "delayed") {
        s.check_delay_dsn(id, entry.key, rcpt);
      } else {  // a final report (failed)
        s.check_failure_dsn(id, entry.key, rcpt);
        s.dsn_reports[{entry.key, rcpt}].push_back(id);
      }
    }
    s.check_reason_in_dsn(id, message.body_wire);
    s.dsn_bodies[entry.key].push_back(digest_of(message.body_wire));
  } else {
    entry.body = digest_of(message.body_wire);
    s.keys.emplace(entry.key, id);
  }
  s.ledger.emplace(id, std::move(entry));
}

void delivery::on_recovered(const std::vector<const spool::store*>& stores) {
  state& s = *_state;
  for (auto& [id, entry] : s.ledger) {
    const spool::message_entry* found = stores.at(spool::message_id_shard(id))->find(id);
    const bool deleted = found != nullptr && (found->flags & spool::message_flag_deleted) != 0;
    // (A message found final may have had its journal compacted: nothing open is left.)
    if (found != nullptr && found->status == spool::message_status::queued && !deleted &&
        s.deletes_acknowledged.count(id) != 0) {
      return s.w.fail(fmt::format("LOST DELETE: {:016x} ({}): its delete was acknowledged "
                                  "(journaled), yet it is recovered without it", id, entry.key));
    }
    bool all_final = true;
    for (std::size_t r = 0; r < entry.recipients.size(); ++r) {
      const auto state = found == nullptr ? spool::recipient_state::delivered
                                          : found->recipients[r].state;
      all_final = all_final && spool::is_final(state);
      // A delete is the last word for every recipient still open (spool/recovery.cc).
      if (state == spool::recipient_state::deleted ||
          (deleted && !spool::is_final(state))) {
        s.on_deleted(id, entry.recipients[r]);
      }
      // Not recovered: every recipient was final and the spool reclaimed it.
      if (!entry.dsn && !entry.finals_recorded && spool::is_final(state))
        s.final_durable.insert({entry.key, entry.recipients[r]});
    }
    entry.finals_recorded = all_final;
  }
  s.restart_pauses(stores);
}

void delivery::on_log_record(std::string_view line) {
  state& s = *_state;
  const std::string_view event = log_field(line, "event");
  if (event == "reply_rule") return s.on_reply_rule(line);
  static constexpr std::string_view relay_events[] = {
      "delivered", "bounced", "deferred", "delayed", "deleted", "dsn_queued", "dsn_failed",
      "spool_read_failed",
      "envelope_read_failed", "queue_recovered"};
  if (std::find(std::begin(relay_events), std::end(relay_events), event) ==
      std::end(relay_events)) {
    return;
  }
  const std::string_view id_text = log_field(line, "id");
  const spool::message_id id = std::strtoull(std::string(id_text).c_str(), nullptr, 16);
  const std::string_view to = log_field(line, "to");
  if (event == "delayed") return s.on_delay_notice(id, to);  // not noted: digests stay
  s.note(fmt::format("relay {} {} {} {}", event, id_text, log_field(line, "to"),
                     log_field(line, "mx")));
  if (event == "delivered" || event == "bounced") s.check_not_deleted(id, to, event);
  if (event == "delivered" || event == "bounced" || event == "deferred") {
    s.check_rule_bounce(id, event, to, log_field(line, "reply"));
  }
  if (event == "deferred") s.check_deferral_after_heal(id, to, log_field(line, "reply"));
  if (const auto found = s.ledger.find(id); event == "delivered" && found != s.ledger.end())
    s.delivered_logged.emplace(found->second.key, to);
  if (event == "deleted") {
    ++s.w.counters().deletions;
    s.on_deleted(id, to);
  } else if (event == "bounced") {
    ++s.w.counters().bounces;
    s.check_reason_logged(id, to, log_field(line, "reply"));
    s.check_transient_bounce(id, to, log_field(line, "reply"));
    const auto found = s.ledger.find(id);
    if (found != s.ledger.end() && found->second.dsn) s.dsn_bounced.insert(id);
  } else if (event == "dsn_queued") {
    ++s.w.counters().dsns;
  }
}

void delivery::heal() {
  state& s = *_state;
  s.fix_credentials();
  if (s.relay == nullptr) return;
  for (const auto& [name, allowed] : s.suspended) s.operate(name, "resume");
  s.suspended.clear();
  for (const auto id : s.ever_held) s.act(id, "release");
  s.held.clear();
  for (const auto name : domain_names) s.operate(name, "flush");
}

std::string delivery::busy_reason(const std::vector<const spool::store*>& stores) const {
  const state& s = *_state;
  if (s.relay == nullptr) return "no relay";
  for (std::size_t shard = 0; shard < s.relays->size(); ++shard) {
    const std::string totals = (*s.relays)[shard]->queue_totals_json();
    if (totals.find(R"("ready":0,"scheduled":0,"in_flight":0,"connections":0})") ==
        std::string::npos) {
      return fmt::format("shard {}'s queues: {}", shard, totals);
    }
  }
  std::uint32_t open = 0;
  for (const auto count : s.open_count) open += count;
  if (open != 0) return fmt::format("{} connection(s) open at remote MTAs", open);
  std::string queued;
  for (const auto* store : stores) {
    store->for_each_message([&](const spool::message_entry& entry) {
      if (queued.empty() && entry.status != spool::message_status::final)
        queued = fmt::format("message {:016x} still queued in the spool (flags {})", entry.id,
                             entry.flags);
    });
  }
  for (std::size_t shard = 0; shard < s.relays->size() && !queued.empty(); ++shard)
    queued += fmt::format("; shard {}'s jobs: {}", shard, (*s.relays)[shard]->jobs_json("", 4));
  return queued;
}

void delivery::check_final(const std::vector<const spool::store*>& stores) {
  const state& s = *_state;
  bool queued = false;
  for (const auto* store : stores) {
    store->for_each_message([&](const spool::message_entry& entry) {
      if (!queued && entry.status != spool::message_status::final) {
        queued = true;
        s.w.fail(fmt::format("LIVENESS: message {:016x} still queued after the queue drained "
                             "and the last restart", entry.id));
      }
    });
  }
  for (const auto& [id, entry] : s.ledger) {
    if (entry.dsn || queued) continue;
    for (std::uint16_t r = 0; r < entry.recipients.size(); ++r) {
      const auto& address = entry.recipients[r];
      if (s.mailbox.count({entry.key, address}) != 0 ||
          s.deleted_ever.count({entry.key, address}) != 0 ||
          !queue::should_send_dsn(entry.reverse_path, entry.notify[r],
                                  queue::dsn_action::failed) ||
          s.reported(entry, r)) {
        continue;
      }
      const bool stored = s.dsn_reports.count({entry.key, address}) != 0;
      s.w.fail(fmt::format("UNDELIVERED: message {:016x} ({}) recipient {} <{}> was neither "
                           "delivered nor bounced with a DSN to <{}>{}", id, entry.key, r,
                           address, entry.reverse_path,
                           stored ? " (its DSN never arrived)" : " (no DSN was stored)"));
      return;
    }
  }
}

}  // namespace ringmta::sim::internal
