// Test helpers for the DNS engine: decode the queries it sends and build replies with ldns, and
// a harness that collects a resolver's actions the way an embedder would.
#pragma once

// First: without it ldns/common.h #defines bool, true and false as macros in C++.
#include <stdbool.h>  // NOLINT(modernize-deprecated-headers)
#include <ldns/ldns.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <map>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "ringmta/dns/resolver.h"
#include "ringmta/dns/wire.h"

namespace ringmta::dns::testing {

struct query_info {
  std::uint16_t id = 0;
  std::string name;  // lower-case, no trailing dot
  record_type type = record_type::a;
  bool rd = false;
  std::uint16_t edns_payload_bytes = 0;  // 0: no OPT record
};

// Decodes a query the resolver sent (TCP bytes keep their 2-byte length prefix).
inline query_info decode_query(const std::vector<std::uint8_t>& bytes, bool tcp) {
  query_info info;
  const std::size_t skip = tcp ? 2 : 0;
  if (tcp) {
    EXPECT_GE(bytes.size(), 2u);
    EXPECT_EQ(std::size_t{bytes[0]} << 8 | bytes[1], bytes.size() - 2);
  }
  ldns_pkt* packet = nullptr;
  EXPECT_EQ(ldns_wire2pkt(&packet, bytes.data() + skip, bytes.size() - skip), LDNS_STATUS_OK);
  if (packet == nullptr) return info;
  info.id = ldns_pkt_id(packet);
  info.rd = ldns_pkt_rd(packet);
  info.edns_payload_bytes = ldns_pkt_edns(packet) ? ldns_pkt_edns_udp_size(packet) : 0;
  const ldns_rr* question = ldns_rr_list_rr(ldns_pkt_question(packet), 0);
  char* owner = ldns_rdf2str(ldns_rr_owner(question));
  info.name = normalize_name(owner);
  std::free(owner);
  info.type = static_cast<record_type>(ldns_rr_get_type(question));
  ldns_pkt_free(packet);
  return info;
}

inline void push_rrs(ldns_pkt* packet, ldns_pkt_section section,
                     const std::vector<std::string>& records) {
  for (const auto& text : records) {
    ldns_rr* rr = nullptr;
    ASSERT_EQ(ldns_rr_new_frm_str(&rr, text.c_str(), 300, nullptr, nullptr), LDNS_STATUS_OK)
        << text;
    ldns_pkt_push_rr(packet, section, rr);
  }
}

struct reply_spec {
  ldns_pkt_rcode rcode = LDNS_RCODE_NOERROR;
  std::vector<std::string> answer;     // zone-file lines, e.g. "example.test. 300 IN MX 10 mx."
  std::vector<std::string> authority;
  std::vector<std::string> additional;
  bool truncated = false;
  bool tcp = false;  // prefix the RFC 1035 §4.2.2 length
};

// A reply to (id, name, type) built with ldns.
inline std::vector<std::uint8_t> make_reply(std::uint16_t id, const std::string& name,
                                            record_type type, const reply_spec& spec) {
  ldns_pkt* packet = ldns_pkt_new();
  ldns_pkt_set_id(packet, id);
  ldns_pkt_set_qr(packet, true);
  ldns_pkt_set_rd(packet, true);
  ldns_pkt_set_ra(packet, true);
  ldns_pkt_set_tc(packet, spec.truncated);
  ldns_pkt_set_rcode(packet, static_cast<std::uint8_t>(spec.rcode));
  ldns_rr* question = ldns_rr_new();
  ldns_rr_set_owner(question, ldns_dname_new_frm_str((name.empty() ? "." : name).c_str()));
  ldns_rr_set_type(question, static_cast<ldns_rr_type>(type));
  ldns_rr_set_class(question, LDNS_RR_CLASS_IN);
  ldns_rr_set_question(question, true);
  ldns_pkt_push_rr(packet, LDNS_SECTION_QUESTION, question);
  push_rrs(packet, LDNS_SECTION_ANSWER, spec.answer);
  push_rrs(packet, LDNS_SECTION_AUTHORITY, spec.authority);
  push_rrs(packet, LDNS_SECTION_ADDITIONAL, spec.additional);
  std::uint8_t* wire = nullptr;
  std::size_t size = 0;
  EXPECT_EQ(ldns_pkt2wire(&wire, packet, &size), LDNS_STATUS_OK);
  const std::size_t prefix = spec.tcp ? 2 : 0;
  std::vector<std::uint8_t> out(prefix + size);
  if (spec.tcp) {
    out[0] = static_cast<std::uint8_t>(size >> 8);
    out[1] = static_cast<std::uint8_t>(size & 0xff);
  }
  if (wire != nullptr) std::copy_n(wire, size, out.begin() + static_cast<long>(prefix));
  std::free(wire);
  ldns_pkt_free(packet);
  return out;
}

inline resolver_config test_config(std::size_t servers = 2) {
  resolver_config config;
  for (std::size_t i = 0; i < servers; ++i)
    config.servers.push_back(
        server_address{ip_address::v4(127, 0, 0, static_cast<std::uint8_t>(i + 1)), 53});
  config.timeout_ms = 1000;
  config.attempts = 2;
  return config;
}

struct sent_packet {
  std::uint64_t exchange = 0;
  std::uint32_t server = 0;
  transport via = transport::udp;
  std::vector<std::uint8_t> bytes;
  query_info query;
};

// Plays the embedder: records what the resolver asks to send, close, and the lookups' results.
struct harness {
  explicit harness(resolver_config config = test_config(), std::uint64_t seed = 1)
      : r(std::move(config), seeded_random(seed)) {}

  void drain() {
    while (action* a = r.next_action()) {
      if (a->kind == action_kind::send) {
        sent_packet packet{a->exchange, a->server_index, a->via,
                           std::vector<std::uint8_t>(a->bytes.begin(), a->bytes.end()), {}};
        packet.query = decode_query(packet.bytes, a->via == transport::tcp);
        sent.push_back(std::move(packet));
      } else if (a->kind == action_kind::close) {
        closed.push_back(a->exchange);
      } else {
        EXPECT_EQ(results.count(a->lookup), 0u) << "lookup finished twice";
        results[a->lookup] = std::move(a->result);
      }
    }
  }

  std::uint64_t mx(const std::string& domain) {
    const auto id = r.start_mx_lookup(domain, now_ms);
    drain();
    return id;
  }

  // Answers sent packet `index` over its transport.
  void answer(std::size_t index, reply_spec spec) {
    const sent_packet packet = sent.at(index);
    spec.tcp = packet.via == transport::tcp;
    const auto bytes = make_reply(packet.query.id, packet.query.name, packet.query.type, spec);
    if (spec.tcp)
      r.on_tcp_data(packet.exchange, bytes, now_ms);
    else
      r.on_udp_packet(packet.server, bytes, now_ms);
    drain();
  }

  // Index of the last packet sent for (name, type); fails the test when there is none.
  std::size_t find(const std::string& name, record_type type) const {
    for (std::size_t i = sent.size(); i > 0; --i)
      if (sent[i - 1].query.name == name && sent[i - 1].query.type == type) return i - 1;
    ADD_FAILURE() << "no query sent for " << name << " " << record_type_name(type);
    return 0;
  }

  std::size_t count(const std::string& name, record_type type) const {
    std::size_t n = 0;
    for (const auto& packet : sent) n += packet.query.name == name && packet.query.type == type;
    return n;
  }

  void advance_time(std::uint64_t ms) {
    now_ms += ms;
    r.on_time(now_ms);
    drain();
  }

  resolver r;
  std::uint64_t now_ms = 1'000'000;
  std::vector<sent_packet> sent;
  std::vector<std::uint64_t> closed;
  std::map<std::uint64_t, mx_result> results;
};

}  // namespace ringmta::dns::testing
