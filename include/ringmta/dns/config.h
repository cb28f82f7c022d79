// Resolver configuration: the servers to ask and every bound of the engine, plus a pure parser
// for resolv.conf(5) text.
//
// Invariants: a config accepted by validate() has 1..servers_max servers and non-zero bounds.
// Never: parse_resolv_conf opens no file; load_resolv_conf reads one, at start-up only.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "ringmta/core/result.h"
#include "ringmta/dns/types.h"

namespace ringmta::dns {

inline constexpr std::size_t servers_max = 8;  // glibc uses 3 (MAXNS); we allow a few more

struct resolver_config {
  std::vector<server_address> servers;
  std::uint32_t timeout_ms = 5000;   // per attempt (resolv.conf "timeout:", seconds)
  std::uint32_t attempts = 2;        // rounds over the servers (resolv.conf "attempts:")
  bool rotate = false;               // start each query at the next server (resolv.conf)
  // RFC 6891 §6.2.5; 1232 avoids IP fragmentation (DNS flag day 2020). 0 disables EDNS0.
  std::uint16_t edns_payload_bytes = 1232;

  std::size_t cache_entries_max = 10000;
  std::size_t cache_bytes_max = 4u << 20;
  std::uint32_t ttl_max_s = 86400;            // positive answers are cached at most this long
  std::uint32_t negative_ttl_max_s = 3600;    // RFC 2308 §5: one to three hours is sensible
  std::uint32_t queries_in_flight_max = 256;  // distinct (name, type) questions on the wire
  std::uint32_t lookups_max = 1024;           // mx/host lookups in progress
  // Lookups asked while lookups_max are in progress wait for a slot, oldest first, up to this
  // many (beyond it they fail at once, 4.3.0). A restart makes every destination due at once
  // (issue 15): four connections per destination ask together, far past lookups_max. 4096 is
  // the shard's default outbound connection slots (1024) x 4 connections a destination may
  // open, so a burst of connection starts waits instead of deferring jobs. 0: never wait.
  std::uint32_t lookups_waiting_max = 4096;
  std::uint32_t mx_hosts_max = 10;            // MX hosts whose addresses are resolved
  std::uint32_t cname_depth_max = 8;          // CNAME links followed for one question
  std::uint32_t lookup_timeout_ms = 30000;    // default deadline of an mx/host lookup
  bool ipv4 = true;                           // query A records of mail hosts
  bool ipv6 = true;                           // query AAAA records of mail hosts
  bool prefer_ipv6 = false;                   // order a host's AAAA before its A addresses

  // An error text for the first bad setting, or "" when the config is usable.
  std::string validate() const;
};

// Parses resolv.conf(5) text into `into`: "nameserver ADDR" lines (IPv4 or IPv6, at most
// servers_max; later ones are ignored like glibc ignores past MAXNS) and "options timeout:N
// attempts:N rotate". "search"/"domain" are ignored: RFC 5321 §5.1 wants fully-qualified names.
// Keeps into's other fields. Fails with EINVAL when no usable nameserver line is present.
core::result<void> parse_resolv_conf(std::string_view text, resolver_config& into);

// Start-up helper (the resolver itself never calls it): reads the file at `path` (normally
// /etc/resolv.conf, at most 64 KiB) and parses it. ENOENT/EACCES/... from the read, EINVAL
// when it names no usable nameserver, EFBIG when it is larger.
core::result<void> load_resolv_conf(const char* path, resolver_config& into);

}  // namespace ringmta::dns
