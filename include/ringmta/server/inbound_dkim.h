// DKIM signing on the receive path: the inbound's counters for it and their registration.
// The glue itself (connection::dkim_*) lives in src/server/inbound_dkim.cc; the signer in
// src/dkim. Signing happens on the shard, inside the end-of-data step (docs/notes.md says why).
#pragma once

#include "ringmta/admin/metrics.h"

namespace ringmta::server {

struct dkim_metrics {
  admin::counter signatures_rsa;      // rsa-sha256 signatures made
  admin::counter signatures_ed25519;  // ed25519-sha256 signatures made
  admin::counter failures;            // OpenSSL failed to sign: 451 4.7.0
  admin::counter refused_header;      // header block over the limit: 552 5.3.4
  admin::counter refused_content;     // bare CR/LF or not exactly one From:: 550 5.6.0
};

void register_metrics(admin::registry& registry, const dkim_metrics& m);

}  // namespace ringmta::server
