// libFuzzer target for the DNS resolver engine: the input scripts an embedder that starts
// lookups, lets time pass, and answers outstanding queries with bytes from the input. Some
// answers are raw bytes; others echo the query's header and question (right id and question)
// and append generated records, so the parser and the MX policy are reached deep down.
// Invariants checked: no crash or leak (ASan/LSan), every lookup ends exactly once and by its
// deadline, and every result is well-formed (ok => hosts with addresses; failure => no hosts,
// a failure kind and a text).
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "ringmta/dns/resolver.h"

namespace {

using namespace ringmta::dns;

class input {
 public:
  input(const std::uint8_t* data, std::size_t size) : _data(data), _size(size) {}
  bool empty() const { return _at >= _size; }
  std::uint8_t byte() { return _at < _size ? _data[_at++] : 0; }
  std::uint16_t u16() { return static_cast<std::uint16_t>(byte() << 8 | byte()); }
  std::vector<std::uint8_t> bytes(std::size_t count) {
    count = std::min(count, _size - std::min(_at, _size));
    std::vector<std::uint8_t> out(_data + _at, _data + _at + count);
    _at += count;
    return out;
  }

 private:
  const std::uint8_t* _data;
  std::size_t _size;
  std::size_t _at = 0;
};

void check(bool condition, const char* what) {
  if (!condition) {
    std::fprintf(stderr, "fuzz_dns: invariant broken: %s\n", what);
    std::abort();
  }
}

struct sent_packet {
  std::uint64_t exchange;
  std::uint32_t server;
  transport via;
  std::vector<std::uint8_t> bytes;  // the query without the TCP length prefix
};

const char* const names[] = {"example.test", "mx1.example.test", "mx2.example.test", "a.test",
                             "alias.test", "[127.0.0.1]", "[IPv6:::1]", "bad..name",
                             "deep.sub.example.test", "x"};

// A name in wire form: a pointer to the question (offset 12) or a few input-made labels.
void append_name(input& in, std::vector<std::uint8_t>& out) {
  const std::uint8_t choice = in.byte();
  if (choice % 3 == 0) {
    out.push_back(0xc0);
    out.push_back(12);
    return;
  }
  const int labels = choice % 4;
  for (int i = 0; i < labels; ++i) {
    const std::uint8_t length = in.byte() % 8;
    out.push_back(length == 0 ? 1 : length);
    for (int j = 0; j < (length == 0 ? 1 : length); ++j) out.push_back('a' + in.byte() % 3);
  }
  if (choice % 3 == 2) {  // end in a pointer to the question name: deep.a.example.test
    out.push_back(0xc0);
    out.push_back(12);
  } else {
    out.push_back(0);
  }
}

void append_record(input& in, std::vector<std::uint8_t>& out) {
  append_name(in, out);
  static const std::uint16_t types[] = {1, 28, 15, 5, 6, 16, 2, 41};
  const std::uint16_t type = types[in.byte() % 8];
  out.push_back(static_cast<std::uint8_t>(type >> 8));
  out.push_back(static_cast<std::uint8_t>(type));
  out.push_back(0);
  out.push_back(in.byte() % 8 == 0 ? 3 : 1);  // class IN, sometimes CH
  for (int i = 0; i < 4; ++i) out.push_back(in.byte());  // TTL
  std::vector<std::uint8_t> rdata;
  if (type == 1) rdata = in.bytes(4);
  if (type == 28) rdata = in.bytes(16);
  if (type == 15) {
    rdata.push_back(0);
    rdata.push_back(in.byte() % 4);
    if (in.byte() % 5 == 0) rdata.push_back(0);  // null MX
    else append_name(in, rdata);
  }
  if (type == 5 || type == 2) append_name(in, rdata);
  if (type == 6 || type == 16 || type == 41) rdata = in.bytes(in.byte() % 40);
  if (in.byte() % 16 == 0) rdata.resize(rdata.size() + in.byte() % 5);  // lie about length
  out.push_back(static_cast<std::uint8_t>(rdata.size() >> 8));
  out.push_back(static_cast<std::uint8_t>(rdata.size()));
  out.insert(out.end(), rdata.begin(), rdata.end());
}

// A reply that echoes the query's id and question, with generated answer/authority records.
std::vector<std::uint8_t> structured_reply(input& in, const std::vector<std::uint8_t>& query) {
  std::vector<std::uint8_t> out;
  std::size_t question_end = 12;  // header, then the question name and type/class
  while (question_end < query.size() && query[question_end] != 0)
    question_end += query[question_end] + 1u;
  question_end = std::min(question_end + 5, query.size());
  out.assign(query.begin(), query.begin() + static_cast<long>(question_end));
  if (out.size() < 12) return out;
  const std::uint8_t flags = in.byte();
  out[2] = static_cast<std::uint8_t>(0x81 | (flags & 0x02));  // QR, RD, maybe TC
  out[3] = static_cast<std::uint8_t>(0x80 | (flags >> 4) % 6);  // RA, rcode 0..5
  const std::uint8_t answers = in.byte() % 6;
  const std::uint8_t authority = in.byte() % 2;
  out[4] = 0;
  out[5] = 1;
  out[6] = 0;
  out[7] = answers;
  out[8] = 0;
  out[9] = authority;
  out[10] = out[11] = 0;
  for (int i = 0; i < answers + authority; ++i) append_record(in, out);
  return out;
}

struct driver {
  explicit driver(std::uint64_t seed)
      : r(make_config(), seeded_random(seed)) {}

  static resolver_config make_config() {
    resolver_config config;
    config.servers.push_back(server_address{ip_address::v4(127, 0, 0, 1), 53});
    config.servers.push_back(server_address{ip_address::v4(127, 0, 0, 2), 5353});
    config.timeout_ms = 1000;
    config.attempts = 2;
    config.queries_in_flight_max = 6;
    config.lookups_max = 6;
    config.cache_entries_max = 16;
    config.cache_bytes_max = 8192;
    config.mx_hosts_max = 4;
    config.lookup_timeout_ms = 20000;
    return config;
  }

  void drain() {
    while (action* a = r.next_action()) {
      if (a->kind == action_kind::send) {
        check(a->server_index < 2, "send to a configured server");
        check(a->bytes.size() >= 12, "send a whole message");
        std::size_t skip = 0;
        if (a->via == transport::tcp) {
          check((std::size_t{a->bytes[0]} << 8 | a->bytes[1]) == a->bytes.size() - 2,
                "TCP length prefix");
          skip = 2;
        }
        sent.push_back(sent_packet{a->exchange, a->server_index, a->via,
                                   std::vector<std::uint8_t>(a->bytes.begin() + skip,
                                                             a->bytes.end())});
        if (sent.size() > 64) sent.erase(sent.begin());
      } else if (a->kind == action_kind::lookup_done) {
        const mx_result& result = a->result;
        check(open.erase(a->lookup) == 1, "lookup finished once and was started");
        if (result.status == lookup_status::ok) {
          check(!result.hosts.empty(), "ok has hosts");
          for (const auto& host : result.hosts) {
            check(!host.addresses.empty(), "hosts have addresses");
            for (const auto& ip : host.addresses)
              check(ip.family == 4 || ip.family == 6, "address family");
          }
          check(result.failure == failure_kind::none, "ok has no failure");
        } else {
          check(result.hosts.empty(), "failure has no hosts");
          check(result.failure != failure_kind::none, "failure has a kind");
          check(!result.text.empty(), "failure has a text");
          const char code = result.enhanced_code()[0];
          check((result.status == lookup_status::permanent_failure) == (code == '5'),
                "permanent failures are 5.x.x, temporary 4.x.x");
        }
      }
    }
  }

  void start(input& in) {
    const std::string name = names[in.byte() % 10];
    const bool mx = in.byte() % 4 != 0;
    const auto id = mx ? r.start_mx_lookup(name, now_ms) : r.start_host_lookup(name, now_ms);
    open.insert(id);
    deadlines[id] = now_ms + 20000;
    drain();
  }

  void reply(input& in) {
    if (sent.empty()) return;
    const sent_packet& packet = sent[in.byte() % sent.size()];
    const std::uint8_t mode = in.byte();
    std::vector<std::uint8_t> message;
    if (mode % 3 == 0) {
      message = in.bytes(in.byte() % 64);
      if (mode % 2 == 0 && message.size() >= 2) {  // right id, garbage after it
        message[0] = packet.bytes[0];
        message[1] = packet.bytes[1];
      }
    } else {
      message = structured_reply(in, packet.bytes);
    }
    if (packet.via == transport::udp) {
      r.on_udp_packet(mode % 7 == 0 ? packet.server ^ 1 : packet.server, message, now_ms);
    } else {
      std::vector<std::uint8_t> framed{static_cast<std::uint8_t>(message.size() >> 8),
                                       static_cast<std::uint8_t>(message.size())};
      framed.insert(framed.end(), message.begin(), message.end());
      const std::size_t split = framed.size() / 2;
      r.on_tcp_data(packet.exchange, std::span(framed).subspan(0, split), now_ms);
      r.on_tcp_data(packet.exchange, std::span(framed).subspan(split), now_ms);
    }
    drain();
  }

  void step(input& in) {
    switch (in.byte() % 8) {
      case 0: start(in); break;
      case 1: case 2: case 3: reply(in); break;
      case 4:
        advance_time(in.u16() % 3000);
        break;
      case 5:
        if (!sent.empty()) {
          const sent_packet& packet = sent[in.byte() % sent.size()];
          if (packet.via == transport::tcp) r.on_tcp_closed(packet.exchange, now_ms);
          else r.on_send_failed(packet.exchange, now_ms);
          drain();
        }
        break;
      case 6:
        if (!open.empty() && in.byte() % 4 == 0) {
          const auto id = *open.begin();
          r.cancel(id);
          open.erase(id);
        }
        break;
      default: break;
    }
  }

  void advance_time(std::uint64_t ms) {
    now_ms += ms;
    r.on_time(now_ms);
    drain();
    for (const auto id : open) check(deadlines[id] > now_ms, "lookup ends by its deadline");
  }

  // Lets time run out: every lookup must end by its deadline.
  void finish() {
    for (int i = 0; i < 40 && !open.empty(); ++i) advance_time(1000);
    check(open.empty(), "every lookup ends by its deadline");
    check(r.lookups_in_flight() == 0, "no lookup left in flight");
  }

  resolver r;
  std::uint64_t now_ms = 1'000'000;
  std::vector<sent_packet> sent;
  std::set<std::uint64_t> open;
  std::map<std::uint64_t, std::uint64_t> deadlines;
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  input in(data, size);
  driver d(in.u16());
  d.start(in);
  for (int steps = 0; steps < 300 && !in.empty(); ++steps) d.step(in);
  d.finish();
  return 0;
}
