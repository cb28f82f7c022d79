#include "sim_dns.h"

// First: without it ldns/common.h #defines bool, true and false as macros in C++.
#include <stdbool.h>  // NOLINT(modernize-deprecated-headers)
#include <ldns/ldns.h>
#include <fmt/format.h>

#include <algorithm>
#include <cstdlib>

#include "ringmta/dns/wire.h"
#include "sim_random.h"

namespace ringmta::sim {

std::vector<std::uint8_t> encode_reply(std::uint16_t id, const std::string& name,
                                       dns::record_type type, int rcode,
                                       const std::vector<std::string>& answer,
                                       std::uint64_t ttl) {
  ldns_pkt* packet = ldns_pkt_new();
  ldns_pkt_set_id(packet, id);
  ldns_pkt_set_qr(packet, true);
  ldns_pkt_set_rd(packet, true);
  ldns_pkt_set_ra(packet, true);
  ldns_pkt_set_rcode(packet, static_cast<std::uint8_t>(rcode));
  ldns_rr* question = ldns_rr_new();
  ldns_rr_set_owner(question, ldns_dname_new_frm_str(name.c_str()));
  ldns_rr_set_type(question, static_cast<ldns_rr_type>(type));
  ldns_rr_set_class(question, LDNS_RR_CLASS_IN);
  ldns_rr_set_question(question, true);
  ldns_pkt_push_rr(packet, LDNS_SECTION_QUESTION, question);
  for (const auto& text : answer) {
    ldns_rr* rr = nullptr;
    if (ldns_rr_new_frm_str(&rr, text.c_str(), 300, nullptr, nullptr) == LDNS_STATUS_OK) {
      ldns_pkt_push_rr(packet, LDNS_SECTION_ANSWER, rr);
    }
  }
  if (answer.empty() && rcode != LDNS_RCODE_SERVFAIL) {
    ldns_rr* soa = nullptr;
    const std::string text = fmt::format("example. {} IN SOA ns.example. h.example. 1 2 3 4 {}",
                                         ttl, ttl);
    if (ldns_rr_new_frm_str(&soa, text.c_str(), 300, nullptr, nullptr) == LDNS_STATUS_OK) {
      ldns_pkt_push_rr(packet, LDNS_SECTION_AUTHORITY, soa);
    }
  }
  std::uint8_t* wire = nullptr;
  std::size_t size = 0;
  std::vector<std::uint8_t> out;
  if (ldns_pkt2wire(&wire, packet, &size) == LDNS_STATUS_OK) out.assign(wire, wire + size);
  std::free(wire);
  ldns_pkt_free(packet);
  return out;
}

bool decode_query(const std::uint8_t* bytes, std::size_t size, std::uint16_t& id,
                  std::string& name, dns::record_type& type) {
  ldns_pkt* packet = nullptr;
  if (ldns_wire2pkt(&packet, bytes, size) != LDNS_STATUS_OK) return false;
  const ldns_rr* question = ldns_rr_list_rr(ldns_pkt_question(packet), 0);
  if (question == nullptr) {
    ldns_pkt_free(packet);
    return false;
  }
  id = ldns_pkt_id(packet);
  char* owner = ldns_rdf2str(ldns_rr_owner(question));
  name = dns::normalize_name(owner);
  std::free(owner);
  type = static_cast<dns::record_type>(ldns_rr_get_type(question));
  ldns_pkt_free(packet);
  return true;
}

std::vector<std::string_view> mx_change_plan::labels() const {
  if (!one_host) return {"mx1", "mx2"};
  return {kept_host == 0 ? "mx1" : "mx2"};
}

std::string mx_change_plan::describe(std::string_view domain_name) const {
  std::string at;
  for (const auto when : changes_ns)
    at += fmt::format("{}{:.1f}s", at.empty() ? "" : ",", static_cast<double>(when) / 1e9);
  return fmt::format("delivery: {}'s MX set becomes mx{} only (then both again, and so on) "
                     "after {} (site relearn {}s, idle queues forgotten after {}s)", domain_name,
                     kept_host + 1, at, relearn_s, idle_forget_ms / 1000);
}

mx_change_plan draw_mx_change(std::uint64_t seed, const std::vector<std::uint32_t>& candidates) {
  random draw(seed * 0x9e3779b97f4a7c15ull + 0x3c4a96e);
  mx_change_plan plan;
  if (candidates.empty() || !draw.chance(1.0 / 3)) return plan;
  plan.domain = candidates[draw.below(candidates.size())];
  plan.kept_host = static_cast<int>(draw.below(2));
  plan.relearn_s = static_cast<std::uint32_t>(draw.between(1, 8));
  const std::uint64_t changes = draw.between(1, 4);
  for (std::uint64_t i = 0; i < changes; ++i)
    plan.changes_ns.push_back(static_cast<std::int64_t>(draw.between(500, 30'000)) * 1'000'000);
  std::sort(plan.changes_ns.begin(), plan.changes_ns.end());
  plan.idle_forget_ms = static_cast<std::int64_t>(draw.between(1, 10)) * 1000;
  return plan;
}

}  // namespace ringmta::sim
