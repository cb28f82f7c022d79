// ringmta's configuration: every setting with its safe default, loaded at start-up from a TOML
// file and then from command-line flags (flags win). Each setting has exactly one TOML key and
// one flag, declared once in src/config/settings.cc's table, so the two can never drift apart.
//
// Start-up only: loading may allocate and throws config::error with "where: key: what is wrong".
// Nothing on the data path reads this struct's strings; shards copy what they need.
#pragma once

#include <cstdint>
#include <map>
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

struct settings {
  // [server]
  std::vector<core::endpoint> listen;  // default 0.0.0.0:25
  std::string hostname;                // default: the machine's host name
  std::uint32_t shards = 0;            // 0: one per core
  bool pin_threads = true;             // shard i runs on the i-th allowed CPU
  std::vector<core::cidr> mynetworks;  // clients allowed to relay; default loopback
  bool proxy_protocol = false;         // listeners expect a PROXY v1/v2 header (HAProxy)
  std::string greeting_text = "ESMTP ringmta";

  // [limits] (RFC 5321 §4.5.3.1 minimums are respected: lines 512/1000, 100 recipients)
  std::uint64_t message_bytes_max = 50ull << 20;
  std::uint32_t recipients_max = 1000;
  std::uint32_t hops_max = 100;  // RFC 5321 §6.3: a loop shows as ever more Received: fields
  std::uint32_t sessions_per_shard_max = 20000;
  std::uint32_t sessions_per_client_max = 100;
  std::uint32_t errors_per_session_max = 20;
  bare_line_ending_policy bare_line_endings = bare_line_ending_policy::reject;

  // [timeouts] server side, RFC 5321 §4.5.3.2 (seconds)
  std::uint32_t timeout_command_s = 300;
  std::uint32_t timeout_data_block_s = 180;
  std::uint32_t shutdown_grace_s = 30;
  std::uint32_t greeting_delay_ms = 0;  // > 0: wait, and reject clients that talk first

  // [spool]
  std::string spool_dir = "/var/spool/ringmta";
  bool unsafe_no_fsync = false;  // debug only: breaks "250 means durable"
  std::uint64_t spool_segment_bytes = 64ull << 20;  // size of each preallocated segment file

  // [relay]
  std::vector<std::string> relay_domains;  // accepted for any client
  std::string relayhost;                   // smarthost "HOST:PORT"; empty: MX delivery
  std::uint16_t delivery_port = 25;
  std::uint32_t timeout_connect_s = 30;     // outbound TCP connect
  std::vector<core::endpoint> resolvers;   // empty: /etc/resolv.conf
  std::vector<route> routes;
  // [relay.tls]: outbound TLS (the CA store is read once at start-up)
  tls_policy relay_tls_policy = tls_policy::opportunistic;
  std::vector<tls_policy_entry> relay_tls_policy_for;  // per destination domain
  std::string relay_tls_ca_file;                       // PEM bundle; empty: the system store

  // [queue]
  std::uint32_t queue_lifetime_s = 5 * 24 * 3600;
  std::vector<std::uint32_t> retry_schedule_s = {60, 300, 900, 1800, 3600, 7200, 14400};
  destination_limits default_destination_limits;

  // [admin]
  std::vector<core::endpoint> admin_listen;  // metrics, health, admin API; default 127.0.0.1:8025
  std::string log_format = "json";           // "json" or "text"
};

// Defaults, then `path` (when not empty), then flags. Throws config::error.
// argv[0] is skipped. `--config PATH` among the flags names the file.
settings load(int argc, const char* const* argv);

// The same steps on explicit inputs, for tests: `toml_text` as if it were file `origin`.
settings load_from(const std::string& toml_text, const std::string& origin,
                   const std::vector<std::string>& flags);

// "--listen ADDR:PORT (repeatable) [server.listen] ..." for --help.
std::string help_text();

}  // namespace ringmta::config
