// `ringmta dkim keygen`: makes a DKIM key pair, writes the private key (PEM, mode 0600, never
// over an existing file unless --force) and prints the DNS TXT record to publish and the
// [[dkim]] table to configure. A command-line tool: blocking I/O is fine here.
#pragma once

#include <string>
#include <vector>

namespace ringmta::dkim {

// args: what follows "ringmta dkim keygen". Returns the exit status (2: bad usage).
int keygen_command(const std::vector<std::string>& args);

// The zone-file line for a TXT record: "SEL._domainkey.DOMAIN. IN TXT ( "..." "..." )",
// split into strings of at most 255 octets (RFC 1035 §3.3.14).
std::string zone_record(const std::string& domain, const std::string& selector,
                        const std::string& text);

}  // namespace ringmta::dkim
