// The DNS resolver engine: a pure state machine that turns "where does mail for this domain go?"
// into DNS packets to send and, from the replies, an ordered list of MX hosts with addresses.
//
// The embedder (the shard's reactor, a test driver, the fuzzer) moves the bytes:
//   id = r.start_mx_lookup("example.test", now_ms);
//   loop: while (action* a = r.next_action()) { send a->bytes / close / use a->result }
//         r.on_udp_packet(server_index, bytes, now_ms) | r.on_tcp_data(exchange, bytes, now_ms)
//         | r.on_tcp_closed(exchange, now_ms) | r.on_send_failed(exchange, now_ms)
//         | r.on_time(now_ms) when now_ms >= r.next_deadline_ms()
// UDP replies are matched to queries by server, id and question (RFC 5452 §9); the embedder
// passes only datagrams whose source is servers[server_index] (a connected UDP socket per server
// and query gives that, and a random source port). For `transport::tcp` the embedder opens one
// connection per `send` (bytes are already length-framed, RFC 1035 §4.2.2), passes what it reads
// to on_tcp_data, and closes it on a `close` action.
//
// Policy (RFC 5321 §5.1):
// - MX hosts are ordered by preference, equal preferences shuffled with the injected random
//   source; at most mx_hosts_max hosts get their A/AAAA resolved.
// - Host addresses always come from A/AAAA questions of their own (answered from the cache when
//   fresh), never from the additional section: glue in a stub's reply is only as trustworthy
//   as the recursive server anyway, and separate questions give each RRset its own TTL.
// - No MX (NODATA) -> implicit MX: the domain's own A/AAAA, preference 0. Null MX (RFC 7505)
//   -> 5.1.10. NXDOMAIN -> 5.1.2. No host with an address -> 5.4.4, unless some host failed
//   temporarily -> 4.4.3. SERVFAIL/REFUSED/malformed everywhere or timeouts -> 4.4.3.
//   A host whose address lookup failed is skipped while other hosts have addresses.
// - A question tries servers in turn (rotated with `rotate`), attempts rounds, timeout_ms each:
//   at most attempts x servers x timeout_ms. SERVFAIL and friends move on at once; TC retries
//   the same server over TCP; FORMERR retries once without EDNS0 (RFC 6891 §7).
// - CNAMEs are followed inside a reply; a chain the server did not finish (an authoritative
//   server pointing outside its zones) is chased with a new question, cname_depth_max deep.
//
// Invariants: every lookup ends in exactly one lookup_done action (unless cancelled), by its
// deadline at the latest; at most queries_in_flight_max questions are on the wire, each asked
// once however many lookups want it (coalescing); at most lookups_max lookups ask questions,
// up to lookups_waiting_max more wait for one of them to end (FIFO; their deadline counts from
// when they were asked, so a caller's wait is bounded the same); memory is bounded by the
// config.
// Never: makes a syscall, reads a clock, throws, or blocks. ldns allocates inside wire.cc only.
#pragma once

#include <cstdint>
#include <deque>
#include <limits>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "ringmta/dns/cache.h"
#include "ringmta/dns/config.h"
#include "ringmta/dns/mx_policy.h"
#include "ringmta/dns/types.h"

namespace ringmta::dns {

enum class transport : std::uint8_t { udp, tcp };

enum class action_kind : std::uint8_t {
  send,         // send `bytes` to config.servers[server_index] over `via` (TCP: new connection)
  close,        // close the TCP connection of `exchange`
  lookup_done,  // lookup `lookup` finished; `result` says how
};

struct action {
  action_kind kind = action_kind::send;
  std::uint64_t exchange = 0;       // send/close: one transmission; TCP: its connection
  std::uint32_t server_index = 0;   // send/close
  transport via = transport::udp;   // send/close
  std::span<const std::uint8_t> bytes;  // send: valid until the next call into the resolver
  std::uint64_t lookup = 0;         // lookup_done
  mx_result result;                 // lookup_done; the embedder may move it out
  std::vector<std::uint8_t> storage;  // owns `bytes` (keeps its capacity across actions)
};

struct resolver_counters {
  std::uint64_t udp_sent = 0;
  std::uint64_t tcp_sent = 0;
  std::uint64_t timeouts = 0;          // attempts that got no reply in time
  std::uint64_t mismatched = 0;        // replies ignored: unknown id, wrong server or question
  std::uint64_t server_failures = 0;   // SERVFAIL/REFUSED/malformed/closed attempts
  std::uint64_t truncated = 0;         // TC replies retried over TCP
  std::uint64_t cache_hits = 0;
  std::uint64_t cache_misses = 0;
  std::uint64_t coalesced = 0;         // questions that joined one already on the wire
  std::uint64_t lookups_started = 0;
  std::uint64_t lookups_done = 0;
};

class resolver {
 public:
  static constexpr std::uint64_t no_deadline = std::numeric_limits<std::uint64_t>::max();

  // `config` must pass validate() (asserted); `random` supplies query ids and MX shuffles.
  resolver(resolver_config config, random_source random);
  ~resolver();
  resolver(const resolver&) = delete;
  resolver& operator=(const resolver&) = delete;

  // RFC 5321 §5.1 route for `domain` (a name, or an address literal "[192.0.2.1]"): MX, then the
  // A/AAAA of each MX host, or the domain's own A/AAAA when it has no MX. Finishes by
  // `deadline_ms` (default now + lookup_timeout_ms) with a temporary failure at the latest.
  // With lookups_max in progress it waits for one to end; with lookups_waiting_max waiting
  // too it fails at once (failure_kind::overloaded).
  std::uint64_t start_mx_lookup(std::string_view domain, std::uint64_t now_ms,
                                std::uint64_t deadline_ms = 0);
  // The addresses of one host (a smarthost): the result has one host of preference 0.
  std::uint64_t start_host_lookup(std::string_view host, std::uint64_t now_ms,
                                  std::uint64_t deadline_ms = 0);
  // Forgets a lookup (asking or waiting): no lookup_done comes for it. Its questions still
  // finish into the cache. A lookup waiting for a slot may start in its place: drain actions.
  void cancel(std::uint64_t lookup) noexcept;

  void on_udp_packet(std::uint32_t server_index, std::span<const std::uint8_t> bytes,
                     std::uint64_t now_ms);
  void on_tcp_data(std::uint64_t exchange, std::span<const std::uint8_t> bytes,
                   std::uint64_t now_ms);
  // The TCP connection of `exchange` failed or ended before a whole reply.
  void on_tcp_closed(std::uint64_t exchange, std::uint64_t now_ms);
  // Sending `exchange` failed (e.g. ECONNREFUSED from an ICMP port unreachable).
  void on_send_failed(std::uint64_t exchange, std::uint64_t now_ms);
  void on_time(std::uint64_t now_ms);

  // When on_time must next be called; no_deadline when nothing is waiting. The top of a heap
  // of deadlines, not a scan of the slots: the embedder asks after every event.
  std::uint64_t next_deadline_ms() const noexcept;

  // The next thing to do, or nullptr. Drain until nullptr after every call. An action stays
  // valid until next_action() returns nullptr, so the embedder may call into the resolver while
  // handling one (e.g. start the next lookup on lookup_done); new actions queue behind.
  action* next_action() noexcept;

  const resolver_counters& counters() const noexcept { return _counters; }
  const resolver_config& config() const noexcept { return _config; }
  const dns::cache& answer_cache() const noexcept { return _cache; }
  std::size_t queries_in_flight() const noexcept { return _queries_active; }
  std::size_t lookups_in_flight() const noexcept { return _lookups_active; }  // with waiting
  std::size_t lookups_waiting() const noexcept { return _lookups_active - _lookups_running; }

 private:
  struct query;
  struct lookup;
  struct need;
  // A query attempt's or a lookup's deadline. Entries are never removed when their owner
  // moves on (a reply, a new attempt, a cancel): they go stale and are skipped at the top.
  struct deadline_entry {
    std::uint64_t at_ms = 0;
    std::uint64_t key = 0;   // the query's exchange or the lookup's id: unique, never reused
    bool is_query = false;
  };
  struct deadline_later {
    bool operator()(const deadline_entry& a, const deadline_entry& b) const noexcept {
      return a.at_ms > b.at_ms;
    }
  };

  std::uint64_t start_lookup(bool mx, std::string_view name, std::uint64_t now_ms,
                             std::uint64_t deadline_ms);
  void begin(lookup& l, std::uint64_t now_ms);
  void start_waiting(std::uint64_t now_ms);
  void release_lookup(std::uint64_t lookup) noexcept;
  class entry_point;  // the on_* functions' time and their start_waiting() at the end
  // Questions
  void ask(lookup& owner, std::uint64_t owner_id, need& wanted, std::uint64_t now_ms);
  std::uint32_t start_query(std::string_view name, record_type type, std::uint64_t now_ms);
  void next_attempt(std::uint32_t slot, std::uint64_t now_ms);
  void transmit(std::uint32_t slot, std::uint32_t server, bool tcp, std::uint64_t now_ms);
  void handle_reply(std::uint32_t slot, std::span<const std::uint8_t> message, bool tcp,
                    std::uint64_t now_ms);
  void attempt_failed(std::uint32_t slot, answer_status why, std::uint64_t now_ms);
  void finish_query(std::uint32_t slot, answer result, std::uint64_t now_ms);
  void close_tcp(query& q);
  std::uint16_t fresh_id() noexcept;
  void release_query(std::uint32_t slot) noexcept;
  // Lookups
  void advance(std::uint64_t lookup_id, std::uint64_t now_ms);
  bool plan_addresses(lookup& l, std::uint64_t now_ms);
  void complete(std::uint64_t lookup_id, mx_result result);
  mx_result mx_outcome(const lookup& l) const;
  mx_result host_outcome(const lookup& l) const;
  lookup* find_lookup(std::uint64_t lookup_id) noexcept;
  void wake_blocked(std::uint64_t now_ms);
  action& push_action(action_kind kind);
  // Deadlines
  void push_deadline(std::uint64_t at_ms, std::uint64_t key, bool is_query);
  bool deadline_live(const deadline_entry& entry) const noexcept;
  void rebuild_deadlines();

  resolver_config _config;
  random_source _random;
  dns::cache _cache;
  std::vector<query> _queries;
  std::vector<std::uint16_t> _query_by_id;  // DNS id -> query slot + 1 (0: none)
  std::vector<std::uint32_t> _free_queries;
  std::size_t _queries_active = 0;
  std::vector<lookup> _lookups;
  std::vector<std::uint32_t> _free_lookups;
  std::size_t _lookups_active = 0;   // slots in use: asking or waiting
  std::size_t _lookups_running = 0;  // of those, asking questions: at most lookups_max
  std::deque<std::uint64_t> _waiting;  // lookup ids waiting for a running slot, oldest first
  std::uint64_t _last_now_ms = 0;      // cancel() has no clock: it starts waiters at this time
  std::deque<std::uint64_t> _blocked;  // lookups waiting for a free query slot, oldest first
  // Min-heap on at_ms; mutable: next_deadline_ms() drops the stale entries it finds on top.
  // At most 2 x (active queries + lookups) + 64 entries: rebuilt from the slots past that.
  mutable std::vector<deadline_entry> _deadlines;
  std::vector<deadline_entry> _due_scratch;  // on_time: the due entries, taken off the heap
  std::deque<action> _actions;  // stable addresses; [_action_next, _action_count) are pending
  std::size_t _action_count = 0;
  std::size_t _action_next = 0;
  std::uint64_t _exchange_sequence = 0;
  std::uint64_t _lookup_sequence = 0;
  std::uint32_t _rotate_next = 0;
  std::vector<std::uint64_t> _waiters_scratch;
  std::string _name_scratch;
  resolver_counters _counters;
};

}  // namespace ringmta::dns
