#include "ringmta/dns/wire.h"

// First: without it ldns/common.h #defines bool, true and false as macros in C++.
#include <stdbool.h>  // NOLINT(modernize-deprecated-headers)
#include <ldns/ldns.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <limits>
#include <memory>

namespace ringmta::dns {

namespace {

struct ldns_pkt_deleter {
  void operator()(ldns_pkt* packet) const noexcept { ldns_pkt_free(packet); }
};
struct ldns_rdf_deleter {
  void operator()(ldns_rdf* rdf) const noexcept { ldns_rdf_deep_free(rdf); }
};
using pkt_ptr = std::unique_ptr<ldns_pkt, ldns_pkt_deleter>;
using rdf_ptr = std::unique_ptr<ldns_rdf, ldns_rdf_deleter>;

// Appends one label octet in presentation form, lower-cased; characters that would make the text
// ambiguous or unprintable are escaped as \DDD (RFC 4343 §2.1, RFC 1035 §5.1).
void append_label_octet(std::string& out, std::uint8_t octet) {
  const bool plain = (octet >= 'a' && octet <= 'z') || (octet >= '0' && octet <= '9') ||
                     octet == '-' || octet == '_' || (octet >= 'A' && octet <= 'Z');
  if (plain) {
    out.push_back(static_cast<char>(octet >= 'A' && octet <= 'Z' ? octet + ('a' - 'A') : octet));
    return;
  }
  out.push_back('\\');
  out.push_back(static_cast<char>('0' + octet / 100));
  out.push_back(static_cast<char>('0' + octet / 10 % 10));
  out.push_back(static_cast<char>('0' + octet % 10));
}

// An uncompressed wire-format name (as ldns stores a DNAME rdf) to our text form. Returns false
// when the labels run past the data.
bool dname_to_text(const ldns_rdf* rdf, std::string& out) {
  out.clear();
  if (rdf == nullptr || ldns_rdf_get_type(rdf) != LDNS_RDF_TYPE_DNAME) return false;
  const std::uint8_t* data = ldns_rdf_data(rdf);
  const std::size_t size = ldns_rdf_size(rdf);
  std::size_t at = 0;
  while (at < size) {
    const std::size_t length = data[at++];
    if (length == 0) return true;
    if (length > 63 || at + length > size) return false;
    if (!out.empty()) out.push_back('.');
    for (std::size_t i = 0; i < length; ++i) append_label_octet(out, data[at + i]);
    at += length;
  }
  return false;
}

bool owner_is(const ldns_rr* rr, std::string_view name, std::string& scratch) {
  return dname_to_text(ldns_rr_owner(rr), scratch) && scratch == name;
}

response_kind kind_of_rcode(ldns_pkt_rcode rcode) {
  switch (rcode) {
    case LDNS_RCODE_NOERROR:
    case LDNS_RCODE_NXDOMAIN: return response_kind::answer;
    case LDNS_RCODE_FORMERR: return response_kind::format_error;
    default: return response_kind::server_failure;  // SERVFAIL, NOTIMP, REFUSED, ...
  }
}

// RFC 1035 §7.3: a reply must echo our id and question. Error replies (FORMERR from a server
// without EDNS0, SERVFAIL) may carry no question; they only make us try elsewhere, so accept.
bool question_matches(const ldns_pkt* packet, std::string_view name, record_type type,
                      std::string& scratch) {
  const ldns_rr_list* question = ldns_pkt_question(packet);
  const std::size_t count = question == nullptr ? 0 : ldns_rr_list_rr_count(question);
  if (count == 0) return kind_of_rcode(ldns_pkt_get_rcode(packet)) != response_kind::answer;
  if (count != 1) return false;
  const ldns_rr* rr = ldns_rr_list_rr(question, 0);
  return ldns_rr_get_type(rr) == static_cast<ldns_rr_type>(type) &&
         ldns_rr_get_class(rr) == LDNS_RR_CLASS_IN && owner_is(rr, name, scratch);
}

// Adds the rdata of one RR of the asked type to the answer. False when the rdata is unusable.
bool add_record(const ldns_rr* rr, record_type type, answer& out, std::string& scratch) {
  if (type == record_type::mx) {
    if (ldns_rr_rd_count(rr) != 2) return false;
    const ldns_rdf* preference = ldns_rr_rdf(rr, 0);
    if (ldns_rdf_get_type(preference) != LDNS_RDF_TYPE_INT16 || ldns_rdf_size(preference) != 2)
      return false;
    if (!dname_to_text(ldns_rr_rdf(rr, 1), scratch)) return false;
    out.mx.push_back(mx_record{ldns_rdf2native_int16(preference), scratch});
    return true;
  }
  if (type == record_type::a || type == record_type::aaaa) {
    const std::size_t width = type == record_type::a ? 4 : 16;
    if (ldns_rr_rd_count(rr) != 1 || ldns_rdf_size(ldns_rr_rdf(rr, 0)) != width) return false;
    ip_address ip;
    ip.family = type == record_type::a ? 4 : 6;
    std::copy_n(ldns_rdf_data(ldns_rr_rdf(rr, 0)), width, ip.bytes.begin());
    out.addresses.push_back(ip);
    return true;
  }
  if (type == record_type::txt) {
    std::string text;  // RFC 7208 §3.3: the character-strings of one TXT RR are concatenated
    for (std::size_t i = 0; i < ldns_rr_rd_count(rr); ++i) {
      const ldns_rdf* part = ldns_rr_rdf(rr, i);
      const std::size_t size = ldns_rdf_size(part);
      if (size == 0 || ldns_rdf_data(part)[0] != size - 1) return false;
      text.append(reinterpret_cast<const char*>(ldns_rdf_data(part)) + 1, size - 1);
    }
    out.texts.push_back(std::move(text));
    return true;
  }
  return false;
}

// RFC 2308 §5: a negative answer may be cached for min(SOA TTL, SOA MINIMUM) of the authority
// section's SOA; without one it must not be cached.
std::uint32_t negative_ttl(const ldns_pkt* packet) {
  const ldns_rr_list* authority = ldns_pkt_authority(packet);
  const std::size_t count = authority == nullptr ? 0 : ldns_rr_list_rr_count(authority);
  for (std::size_t i = 0; i < count; ++i) {
    const ldns_rr* rr = ldns_rr_list_rr(authority, i);
    if (ldns_rr_get_type(rr) != LDNS_RR_TYPE_SOA || ldns_rr_rd_count(rr) != 7) continue;
    const ldns_rdf* minimum = ldns_rr_rdf(rr, 6);
    if (ldns_rdf_size(minimum) != 4) continue;
    return std::min(ldns_rr_ttl(rr), ldns_rdf2native_int32(minimum));
  }
  return 0;
}

bool has_soa(const ldns_pkt* packet) {
  const ldns_rr_list* authority = ldns_pkt_authority(packet);
  const std::size_t count = authority == nullptr ? 0 : ldns_rr_list_rr_count(authority);
  for (std::size_t i = 0; i < count; ++i)
    if (ldns_rr_get_type(ldns_rr_list_rr(authority, i)) == LDNS_RR_TYPE_SOA) return true;
  return false;
}

// Follows CNAME links in the answer section from `name`; returns the final owner name and lowers
// `ttl` to the smallest TTL on the way. Fails when the chain is longer than depth_max.
bool follow_cnames(const ldns_rr_list* answers, std::string_view name, std::uint32_t depth_max,
                   std::string& current, std::uint32_t& ttl, std::string& scratch) {
  current.assign(name);
  const std::size_t count = answers == nullptr ? 0 : ldns_rr_list_rr_count(answers);
  for (std::uint32_t depth = 0;; ++depth) {
    const ldns_rr* link = nullptr;
    for (std::size_t i = 0; i < count && link == nullptr; ++i) {
      const ldns_rr* rr = ldns_rr_list_rr(answers, i);
      if (ldns_rr_get_type(rr) == LDNS_RR_TYPE_CNAME && ldns_rr_get_class(rr) == LDNS_RR_CLASS_IN &&
          ldns_rr_rd_count(rr) == 1 && owner_is(rr, current, scratch))
        link = rr;
    }
    if (link == nullptr) return true;
    if (depth >= depth_max) return false;
    if (!dname_to_text(ldns_rr_rdf(link, 0), scratch)) return false;
    current = scratch;
    ttl = std::min(ttl, ldns_rr_ttl(link));
  }
}

void collect_answer(const ldns_pkt* packet, std::string_view name, record_type type,
                    std::uint32_t cname_depth_max, parsed_response& out) {
  std::string scratch;
  std::uint32_t ttl = std::numeric_limits<std::uint32_t>::max();
  answer& result = out.result;
  if (!follow_cnames(ldns_pkt_answer(packet), name, cname_depth_max, result.canonical_name, ttl,
                     scratch)) {
    out.kind = response_kind::server_failure;  // a CNAME loop or an absurdly long chain
    return;
  }
  const ldns_rr_list* answers = ldns_pkt_answer(packet);
  const std::size_t count = answers == nullptr ? 0 : ldns_rr_list_rr_count(answers);
  for (std::size_t i = 0; i < count; ++i) {
    const ldns_rr* rr = ldns_rr_list_rr(answers, i);
    if (ldns_rr_get_type(rr) != static_cast<ldns_rr_type>(type) ||
        ldns_rr_get_class(rr) != LDNS_RR_CLASS_IN || !owner_is(rr, result.canonical_name, scratch))
      continue;  // records for other names are not what we asked (no out-of-chain data)
    if (add_record(rr, type, result, scratch)) ttl = std::min(ttl, ldns_rr_ttl(rr));
  }
  const bool found = !result.mx.empty() || !result.addresses.empty() || !result.texts.empty();
  out.kind = response_kind::answer;
  if (found) {
    result.status = answer_status::ok;
    result.ttl_s = ttl;  // RFC 2181 §5.2: an RRset's records share a TTL; take the smallest
    return;
  }
  const bool nxdomain = ldns_pkt_get_rcode(packet) == LDNS_RCODE_NXDOMAIN;
  // A CNAME to a name the server did not answer for (an authoritative server pointing out of
  // its zones) and no SOA to say "no data": ask for the target ourselves.
  if (!nxdomain && result.canonical_name != name && !has_soa(packet)) {
    out.kind = response_kind::cname;
    out.next_name = result.canonical_name;
    result.ttl_s = ttl;
    return;
  }
  // RFC 6604 §2.1: with CNAMEs, NXDOMAIN and NODATA describe the last name of the chain.
  result.status = nxdomain ? answer_status::nxdomain : answer_status::nodata;
  result.ttl_s = std::min(ttl, negative_ttl(packet));
}

}  // namespace

std::string normalize_name(std::string_view name) {
  if (!name.empty() && name.back() == '.') name.remove_suffix(1);
  std::string out(name);
  for (char& c : out)
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c + ('a' - 'A'));
  return out;
}

core::result<void> build_query(std::uint16_t id, std::string_view name, record_type type,
                               std::uint16_t edns_payload_bytes, bool tcp,
                               std::vector<std::uint8_t>& out) {
  if (name.size() > 253 || name.find('\0') != std::string_view::npos) return core::fail(EINVAL);
  char text[256];
  name.copy(text, name.size());
  text[name.size()] = '\0';
  if (name.empty()) {
    text[0] = '.';
    text[1] = '\0';
  }
  rdf_ptr owner(ldns_dname_new_frm_str(text));
  if (owner == nullptr) return core::fail(EINVAL);
  // ldns_pkt_query_new takes ownership of the name.
  pkt_ptr packet(ldns_pkt_query_new(owner.release(), static_cast<ldns_rr_type>(type),
                                    LDNS_RR_CLASS_IN, LDNS_RD));
  if (packet == nullptr) return core::fail(ENOMEM);
  ldns_pkt_set_id(packet.get(), id);
  if (edns_payload_bytes != 0) ldns_pkt_set_edns_udp_size(packet.get(), edns_payload_bytes);
  std::uint8_t* wire = nullptr;
  std::size_t size = 0;
  if (ldns_pkt2wire(&wire, packet.get(), &size) != LDNS_STATUS_OK || wire == nullptr) {
    std::free(wire);
    return core::fail(EINVAL);
  }
  out.clear();
  if (tcp) {
    out.push_back(static_cast<std::uint8_t>(size >> 8));
    out.push_back(static_cast<std::uint8_t>(size & 0xff));
  }
  out.insert(out.end(), wire, wire + size);
  std::free(wire);
  return {};
}

int message_id(std::span<const std::uint8_t> message) noexcept {
  if (message.size() < dns_header_bytes) return -1;
  return message[0] << 8 | message[1];
}

parsed_response parse_response(std::span<const std::uint8_t> message, std::uint16_t id,
                               std::string_view name, record_type type,
                               std::uint32_t cname_depth_max) {
  parsed_response out;
  if (message_id(message) != id) {
    out.kind = response_kind::mismatch;
    return out;
  }
  ldns_pkt* raw = nullptr;
  if (ldns_wire2pkt(&raw, message.data(), message.size()) != LDNS_STATUS_OK) {
    ldns_pkt_free(raw);
    out.kind = response_kind::malformed;
    return out;
  }
  pkt_ptr packet(raw);
  std::string scratch;
  if (!ldns_pkt_qr(packet.get()) || ldns_pkt_get_opcode(packet.get()) != LDNS_PACKET_QUERY ||
      !question_matches(packet.get(), name, type, scratch)) {
    out.kind = response_kind::mismatch;
    return out;
  }
  if (ldns_pkt_tc(packet.get())) {
    out.kind = response_kind::truncated;
    return out;
  }
  out.kind = kind_of_rcode(ldns_pkt_get_rcode(packet.get()));
  if (out.kind == response_kind::answer) collect_answer(packet.get(), name, type, cname_depth_max,
                                                        out);
  return out;
}

}  // namespace ringmta::dns
