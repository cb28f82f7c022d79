// ringmta's configuration: every setting with its safe default, loaded at start-up from a TOML
// file and then from command-line flags (flags win). Each setting has exactly one TOML key and
// one flag, declared once in src/config/settings.cc's table, so the two can never drift apart.
//
// Loading happens at start-up and on reload (SIGHUP, POST /reload), never on a shard thread: it
// may allocate and throws config::error with "where: key: what is wrong", where is "FILE:LINE"
// or "command line". Nothing on the data path reads this struct's strings; shards get
// immutable snapshots of what they need. Each row of the table says whether a change can take
// effect without a restart (reload_effect); describe() and render() expose the table to
// `ringmta check-config`, the reload and the tests that walk every setting.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "ringmta/core/endpoint.h"

namespace ringmta::config {

class error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

enum class bare_line_ending_policy : std::uint8_t { reject, normalize };
enum class long_line_policy : std::uint8_t { reject, fold };

// Whether shard threads are pinned to CPUs. automatic: only when the process's CPU set was
// reserved for it (narrower than the online CPUs, or isolated CPUs), see shard/pinning.h.
enum class pin_policy : std::uint8_t { automatic, on, off };

// A per-destination delivery route: "example.com = 192.0.2.7:2525" in [relay.routes].
struct route {
  std::string destination;  // domain (lowercase)
  std::string host;         // IP literal or host name to resolve (A/AAAA, no MX)
  std::uint16_t port = 25;
};

// Outbound TLS (RFC 3207) demanded of a destination's servers.
enum class tls_policy : std::uint8_t {
  none,           // never STARTTLS
  opportunistic,  // STARTTLS when offered, unverified; a failed handshake: plaintext retry
  required,       // STARTTLS or defer (4.7.x), unverified; never plaintext
  verify,         // required, and the chain and the MX host name (RFC 6125) must verify
};
// "example.com = verify" in [relay.tls.policy_for]; ".example.com" covers its subdomains.
struct tls_policy_entry {
  std::string domain;  // lowercase; a leading '.' matches subdomains only
  tls_policy policy = tls_policy::opportunistic;
};

struct destination_limits {
  std::uint32_t connections_max = 20;
  std::uint32_t messages_per_connection_max = 100;
  double messages_per_second_max = 0;  // 0: unlimited
};

// One DKIM signing key: a [[dkim]] table or --dkim DOMAIN:SELECTOR:KEYFILE (RFC 6376). The
// key file is read and checked when the key table is built (dkim/key_table.h), not here.
struct dkim_key {
  std::string domain;     // d=, lowercase
  std::string selector;   // s=
  std::string key_file;
  std::string algorithm;  // "rsa" or "ed25519"; empty: what the key file holds
  std::vector<std::string> headers;  // h= candidates, lowercase; empty: the default list
  std::string canonicalization = "relaxed/relaxed";  // header/body: relaxed or simple
  std::string origin;     // "FILE:LINE" or "command line", for start-up errors
};

// One [[shaping]] table or --shaping: per-destination delivery overrides (server/shaping.h).
// Exactly one of domain / mx says what it matches; every field left unset keeps what a less
// specific entry (or the global setting) gives.
struct shaping_entry {
  std::string domain;  // "example.com" exactly, ".example.com" its subdomains; lowercase
  std::string mx;      // MX host pattern, '*' matches any run: "*.google.com"; lowercase
  // Or the sender's domain (MAIL FROM), as `domain`: such an entry only chooses the egress
  // pool of the message (`pool`), the one thing decided per sender rather than per destination.
  std::string sender_domain;
  std::string pool;  // [[pool]] name (sender_domain entries only)
  std::optional<std::uint32_t> connections_max;
  std::optional<std::uint32_t> messages_per_connection_max;
  std::optional<double> messages_per_second_max;
  std::optional<std::uint32_t> timeout_connect_ms;
  std::optional<std::uint32_t> timeout_reply_ms;  // every reply wait but data blocks
  std::optional<std::vector<std::uint32_t>> retry_schedule_s;
  std::optional<std::uint32_t> queue_lifetime_s;
  std::optional<tls_policy> tls;
  std::optional<std::string> ehlo_name;
  std::string origin;  // "FILE:LINE" or "command line", for start-up errors and logs
};

// One [[source]] table or --source: a local address outbound connections bind() to, and the
// EHLO name they use from it (server/egress.h). The address must be local (checked when the
// egress table is built: a bind that fails is a start-up error).
struct source_entry {
  std::string name;        // [a-z0-9_-]+, unique
  core::endpoint address;  // port 0
  std::string ehlo_name;   // empty: the destination's (shaping) or the host name
  std::string origin;
};

// One [[pool]] table or --pool: a weighted set of sources (smooth weighted round robin).
// The pool named "default" is used when neither a sender_domain entry nor a trusted
// X-Ringmta-Pool header chooses one; without it, mail leaves from the kernel's choice.
struct pool_entry {
  std::string name;
  std::vector<std::pair<std::string, std::uint32_t>> sources;  // source name, weight >= 1
  std::string origin;
};

// One [[reply_rule]] table or --reply-rule: what a reply from a destination's servers does
// to the destination (server/shaping.h). `pattern` is an RE2 expression (linear time) searched
// in "CODE TEXT" ("421 4.7.0 try later", multi-line replies joined by spaces).
enum class reply_action : std::uint8_t {
  suspend,   // no delivery attempt to the destination for `duration`
  throttle,  // the destination's limits become these for `duration`
  bounce,    // the recipients the reply was about bounce now (even for a 4xx)
};
struct reply_rule_entry {
  std::string domain;   // as shaping_entry: "example.com", ".example.com"; or
  std::string mx;       // an MX host pattern; both empty: every destination
  std::string pattern;  // RE2, checked when the shaping table is built
  reply_action action = reply_action::suspend;
  std::uint32_t duration_s = 600;
  std::optional<std::uint32_t> connections_max;     // throttle
  std::optional<double> messages_per_second_max;    // throttle
  std::string origin;
};

struct settings {
  // [server]
  std::vector<core::endpoint> listen;  // default 0.0.0.0:25
  std::string hostname;                // default: the machine's host name
  std::uint32_t shards = 0;            // 0: one per core
  pin_policy pin_threads = pin_policy::automatic;  // shard i on the i-th allowed CPU
  std::vector<core::cidr> mynetworks;  // clients allowed to relay; default loopback
  bool proxy_protocol = false;         // listeners expect a PROXY v1/v2 header (HAProxy)
  std::vector<core::cidr> xclient_trusted;  // peers that may send XCLIENT; default none
  std::vector<core::cidr> proxy_trusted;  // peers whose PROXY header is believed; default loopback
  // Submission listeners (RFC 6409 port 587: AUTH before MAIL; RFC 8314 port 465: implicit TLS
  // and AUTH before MAIL).
  std::vector<core::endpoint> submission_listen;
  std::vector<core::endpoint> submissions_listen;
  std::string greeting_text = "ESMTP ringmta";

  // [limits] (RFC 5321 §4.5.3.1 minimums are respected: lines 512/1000, 100 recipients)
  std::uint64_t message_bytes_max = 50ull << 20;
  std::uint32_t recipients_max = 1000;
  std::uint32_t hops_max = 100;  // RFC 5321 §6.3: a loop shows as ever more Received: fields
  std::uint32_t sessions_per_shard_max = 20000;
  std::uint32_t sessions_per_client_max = 100;
  std::uint32_t errors_per_session_max = 20;
  bare_line_ending_policy bare_line_endings = bare_line_ending_policy::reject;
  long_line_policy long_lines = long_line_policy::fold;  // issue 17: docs/interop.md

  // [timeouts] server side, RFC 5321 §4.5.3.2 (seconds)
  std::uint32_t timeout_command_s = 300;
  std::uint32_t timeout_data_block_s = 180;
  std::uint32_t shutdown_grace_s = 30;
  std::uint32_t greeting_delay_ms = 0;  // > 0: wait, and reject clients that talk first

  // [spool]
  std::string spool_dir = "/var/spool/ringmta";
  bool unsafe_no_fsync = false;  // debug only: breaks "250 means durable"
  std::uint64_t spool_segment_bytes = 64ull << 20;  // size of each preallocated segment file
  // Recipient-state marks buffered per shard while the disk is busy; beyond, outcomes wait
  // in the relay's memory (ringmta_spool_marks_waiting) until the journal drains.
  std::uint64_t spool_journal_buffer_bytes = 4ull << 20;

  // [relay]
  std::vector<std::string> relay_domains;  // accepted for any client
  std::string relayhost;                   // smarthost "HOST:PORT"; empty: MX delivery
  std::string relayhost_auth;              // USER:PASSWORD file for AUTH to it; empty: none
  bool relayhost_auth_plaintext = false;   // AUTH to it even without TLS
  std::uint16_t delivery_port = 25;
  std::uint32_t timeout_connect_s = 30;     // outbound TCP connect
  bool mime_downgrade = true;  // 8-bit to a server without 8BITMIME: quoted-printable (RFC 6152)
  std::vector<core::endpoint> resolvers;   // empty: /etc/resolv.conf
  std::vector<route> routes;
  bool site_rollup = true;  // domains with the same MX hosts share one site queue (issue 15)
  std::uint32_t site_relearn_s = 3600;  // a domain's MX site is looked up again after this
  // [relay.tls]: outbound TLS (the CA store is read once at start-up)
  tls_policy relay_tls_policy = tls_policy::opportunistic;
  std::vector<tls_policy_entry> relay_tls_policy_for;  // per destination domain
  std::string relay_tls_ca_file;                       // PEM bundle; empty: the system store

  // [queue]
  std::uint32_t queue_lifetime_s = 5 * 24 * 3600;
  std::vector<std::uint32_t> retry_schedule_s = {60, 300, 900, 1800, 3600, 7200, 14400};
  std::uint32_t probe_backoff_max_s = 0;  // dead destinations: doubling probe wait, 0: off
  std::uint32_t delay_warning_s = 4 * 3600;  // "delayed" DSN once a job waited this; 0: never
  destination_limits default_destination_limits;
  std::vector<shaping_entry> shaping;  // [[shaping]] tables, in file order
  std::vector<reply_rule_entry> reply_rules;  // [[reply_rule]] tables, first match wins
  std::vector<source_entry> sources;  // [[source]] tables (egress addresses)
  std::vector<pool_entry> pools;      // [[pool]] tables

  // [[dkim]] keys and [signing]: DKIM signing of mail from mynetworks (and, once AUTH
  // exists, authenticated clients). See dkim/key_table.h for how a key is chosen.
  std::vector<dkim_key> dkim_keys;
  // Signing domain for mail whose From: domain has no key: "customer.example" (exact),
  // ".customer.example" (subdomains) or "*" (any) → signing domain.
  std::vector<std::pair<std::string, std::string>> dkim_fallback;
  std::vector<std::string> dkim_platform_domains;  // also sign every signed message as these
  std::uint64_t dkim_header_bytes_max = 256u << 10;  // header block of a message to sign
  bool dkim_timestamp = true;                        // t=
  std::uint32_t dkim_expire_s = 0;                   // x= = t= + this; 0: no x=
  // Hostile clients (issue 10)
  std::string postmaster;                      // alias for postmaster at our own names
  std::uint32_t min_data_rate_bytes = 500;     // DATA/BDAT bytes/s (Postfix smtpd_min_data_rate)
  std::uint32_t timeout_under_load_ms = 10'000;  // Postfix stress mode: smtpd_timeout 10s
  std::uint32_t load_threshold_percent = 80;   // of sessions_per_shard_max
  // [tls] (certificates are read and checked by the daemon at start-up: exit 2 naming the file)
  std::vector<std::string> tls_cert_files;  // paired in order with tls_key_files
  std::vector<std::string> tls_key_files;
  std::vector<core::endpoint> tls_listen;   // implicit TLS (RFC 8314)
  std::string tls_min_version = "TLS1.2";   // "TLS1.2" or "TLS1.3"
  std::string tls_ciphers;                  // empty: tls::default_ciphers
  std::string tls_ciphersuites;             // empty: tls::default_ciphersuites
  bool tls_ask_client_certificate = false;
  std::uint32_t tls_ticket_key_rotation_s = 3600;
  std::uint32_t timeout_tls_handshake_s = 60;

  // [auth] SMTP AUTH (RFC 4954), offered after TLS when a back-end is configured
  std::string auth_passwd_file;            // user:crypt-hash lines (Dovecot passwd-file)
  std::string auth_dovecot;                // Dovecot auth-client socket (instead of the file)
  std::string auth_sender_map;             // "address-or-@domain login,..." (Postfix style)
  bool auth_plaintext_loopback = false;    // also offer AUTH without TLS to loopback clients
  std::uint32_t auth_workers = 2;          // password-hashing threads
  std::uint32_t auth_queue_size = 256;     // checks waiting for a worker; beyond: 454 4.7.0
  std::uint32_t auth_failures_max = 10;    // per address or login, then locked out
  std::uint32_t auth_lockout_s = 600;      // lockout and failure memory

  // [admin]
  std::vector<core::endpoint> admin_listen;  // metrics, health, admin API; default 127.0.0.1:8025
  std::string log_format = "json";           // "json" or "text"
  std::string admin_socket;        // control socket; empty: SPOOL/admin.sock
  std::string admin_socket_group;  // its group (mode 0660); empty: the daemon's
  std::string admin_token_file;    // bearer token for the admin API over TCP; empty: none

  // Deployment and supervision (src/server/privileges.cc, service_notify.cc, liveness.cc)
  std::string user = "ringmta";  // [server] user: started as root, run as this user
  bool allow_root = false;       // [server] allow_root: keep running as root (no drop)
  bool debug_endpoints = false;  // [admin] debug_endpoints: POST /debug/... (tests only)
  // [log] outputs (a dedicated writer thread; shards never block on them)
  std::string log_output = "stdout";             // "stdout" (journald), "file" or "syslog"
  std::string log_file;                          // log_output = file: JSON lines, SIGUSR1 reopens
  std::string log_syslog_socket = "/dev/log";    // log_output = syslog: RFC 5424 datagrams
  std::string log_syslog_facility = "mail";      // mail, daemon, local0 … local7
  std::uint64_t log_buffer_bytes = 1ull << 20;   // per shard; records beyond it are dropped
  // [events] the webhook (src/events, issue 14): records posted in batches, at least once
  std::string events_url;                        // http(s)://host[:port]/path; empty: off
  std::vector<std::string> events_types;         // record types; empty: the default set
  std::uint32_t events_batch_size = 100;         // records per POST at most
  std::uint32_t events_interval_ms = 1000;       // a partial batch waits this long for more
  std::uint32_t events_timeout_ms = 10'000;      // connect, each read, each write
  std::uint32_t events_retry_max_ms = 60'000;    // backoff ceiling after failures
  std::uint64_t events_max_backlog_bytes = 1ull << 30;  // on disk; beyond: oldest dropped
  std::string events_authorization_file;         // its first line: the Authorization header
  // [bounce] classification of deferrals and bounces (events/bounce_class.h)
  std::string bounce_classes_file;               // TOML [[rule]] tables; empty: built-in rules

  // Where each key that was set came from: "FILE:LINE" or "command line (--flag)".
  std::map<std::string, std::string> origins;
};

enum class setting_kind : std::uint8_t { value, list, boolean };
enum class reload_effect : std::uint8_t {
  restart,  // read once at start-up: a changed value is reported by a reload, not applied
  live,     // a reload applies it to new sessions and new deliveries
};

// One row of the settings table, for tools, tests and the generated man pages.
struct setting_info {
  std::string key;         // "queue.retry_schedule"
  std::string flag;        // "--retry-schedule"
  std::string value_name;  // "DURATION,..." (empty for booleans)
  setting_kind kind = setting_kind::value;
  reload_effect reload = reload_effect::restart;
  std::string help;
};

std::vector<setting_info> describe();

// The value of `key` in `s` as TOML text that loads back to the same value ("300s", "[...]").
std::string show(const settings& s, const std::string& key);

// Every setting's effective value as a TOML document, by section; keys that were set carry a
// comment saying where. `ringmta check-config` prints it.
std::string render(const settings& s);

// Keys whose effective values differ between `before` and `after`, in table order.
std::vector<std::string> changed_keys(const settings& before, const settings& after);

// Sets `key` in `next` to its value in `current` (a reload keeps what needs a restart).
void keep_value(settings& next, const settings& current, const std::string& key);

// Defaults, then `path` (when not empty), then flags, then the checks that involve several
// keys. Throws config::error. argv[0] is skipped. `--config PATH` among the flags names the
// file.
settings load(int argc, const char* const* argv);

// The same steps on explicit inputs, for tests: `toml_text` as if it were file `origin`.
settings load_from(const std::string& toml_text, const std::string& origin,
                   const std::vector<std::string>& flags);

// "--listen ADDR:PORT (repeatable) [server.listen] ..." for --help.
std::string help_text();

}  // namespace ringmta::config
