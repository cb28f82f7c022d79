// The envelope the spool benches store: blast's shape (a short sender, client and HELO), with
// `recipients` recipients.
#pragma once

#include <string>

#include "ringmta/spool/envelope.h"

namespace ringmta::spool::bench {

inline envelope bench_envelope(message_id id, std::uint32_t recipients = 1) {
  envelope value;
  value.id = id;
  value.reverse_path = "sender@example.org";
  value.received_seconds = 1'700'000'000;
  value.client_address = "192.0.2.1";
  value.helo = "client.example";
  for (std::uint32_t i = 0; i < recipients; ++i) {
    const std::string local = i == 0 ? "rcpt" : "rcpt" + std::to_string(i);
    value.recipients.push_back({local + "@example.net", 0, ""});
  }
  return value;
}

}  // namespace ringmta::spool::bench
