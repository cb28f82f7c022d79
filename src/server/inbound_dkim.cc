// DKIM signing on the receive path (issue 13): the glue between an inbound connection and
// dkim::message_signer. The signer sees every body slice before it is spooled (the same
// buffers, no copy), signs at the end of data, and the fields go into the same group commit
// as the message (spool::store::commit's header prefix). The signature is CPU work on the
// shard, like a TLS handshake (docs/notes.md: measured, and why not a worker thread).
#include <fmt/format.h>

#include "inbound_internal.h"

namespace ringmta::server {

void register_metrics(admin::registry& registry, const dkim_metrics& m) {
  const char* help = "DKIM signatures made, by algorithm";
  registry.add("ringmta_dkim_signatures_total{algorithm=\"rsa-sha256\"}", help, m.signatures_rsa);
  registry.add("ringmta_dkim_signatures_total{algorithm=\"ed25519-sha256\"}", help,
               m.signatures_ed25519);
  registry.add("ringmta_dkim_failures_total", "Messages answered 451 4.7.0: signing failed",
               m.failures);
  const char* refused = "Messages to sign refused at end of data";
  registry.add("ringmta_dkim_refused_total{reason=\"header_size\"}", refused, m.refused_header);
  registry.add("ringmta_dkim_refused_total{reason=\"content\"}", refused, m.refused_content);
}

// Who gets signed: our own clients (mynetworks) and, once AUTH exists, authenticated ones —
// never mail relayed in from the world (it is somebody else's to sign).
// HOOK for AUTH (being built separately): session->authenticated() is true only after a
// successful AUTH; whoever adds AUTH may restrict it further (e.g. to the user's domains).
bool connection::signs_for_client() const noexcept {
  return relay_allowed || (session && session->authenticated());
}

void connection::dkim_begin() noexcept {
  const auto& keys = settings->dkim_keys;  // the session's snapshot: SIGHUP reloads keys
  if (dkim) dkim->clear();
  if (keys == nullptr || keys->empty() || !signs_for_client()) return;
  if (!dkim) dkim = std::make_unique<dkim::message_signer>();
  // Our Received: field is part of the header block the recipient sees, ahead of the
  // client's fields: the signer sees it too, so h= can never disagree with the delivery.
  dkim->begin(keys, received_header);
}

void connection::dkim_feed(std::string_view slice, smtp::body_form form) noexcept {
  if (dkim && dkim->active()) dkim->feed(slice, form == smtp::body_form::wire);
}

std::optional<smtp::verdict> connection::dkim_finish() noexcept {
  if (!dkim || !dkim->active()) return std::nullopt;
  auto& counters = server.metrics().dkim;
  // Replies are static texts: a verdict's view must outlive this call (smtp/reply.h).
  switch (dkim->finish(server.host().wall_ms() / 1000)) {
    case dkim::sign_outcome::not_signed:
    case dkim::sign_outcome::signed_ok:
      return std::nullopt;
    case dkim::sign_outcome::header_too_large:
      counters.refused_header.add();
      return smtp::verdict::respond(552, "5.3.4", "Message header too large to be DKIM-signed");
    case dkim::sign_outcome::bare_line_ending:
      counters.refused_content.add();
      return smtp::verdict::respond(
          550, "5.6.0", "Message has a bare CR or LF: lines must end with CRLF to be signed");
    case dkim::sign_outcome::no_single_from:
      counters.refused_content.add();
      return smtp::verdict::respond(
          550, "5.6.0", "Message needs exactly one From: field to be signed (RFC 5322 3.6)");
    case dkim::sign_outcome::failed:
      counters.failures.add();
      return smtp::verdict::respond(451, "4.7.0", "DKIM signing failed, try again later");
  }
  return std::nullopt;
}

std::string_view connection::dkim_fields() const noexcept {
  return dkim ? dkim->fields() : std::string_view();
}

// The message is durable and signed: count the signatures and name them in the log record
// (dkim_domain and dkim_selector list one entry per signature, in order).
void connection::dkim_accepted(admin::log_record& record) noexcept {
  if (dkim_fields().empty()) return;
  auto& counters = server.metrics().dkim;
  char domains[512];
  char selectors[256];
  std::size_t domains_used = 0;
  std::size_t selectors_used = 0;
  for (const dkim::signing_key* key : dkim->chosen()) {
    (key->key->algorithm() == dkim::algorithm::rsa_sha256 ? counters.signatures_rsa
                                                          : counters.signatures_ed25519)
        .add();
    const char* separator = domains_used == 0 ? "" : ",";
    domains_used += fmt::format_to_n(domains + domains_used, sizeof domains - domains_used,
                                     "{}{}", separator, key->domain).size;
    selectors_used += fmt::format_to_n(selectors + selectors_used,
                                       sizeof selectors - selectors_used, "{}{}", separator,
                                       key->selector).size;
    domains_used = std::min(domains_used, sizeof domains);
    selectors_used = std::min(selectors_used, sizeof selectors);
  }
  record.field("dkim_domain", std::string_view(domains, domains_used))
      .field("dkim_selector", std::string_view(selectors, selectors_used));
}

}  // namespace ringmta::server
