// Writes sample DSNs (wire form, as build_dsn makes them) into a directory, one file per
// scenario, for dsn_check.py to parse with Python's email package.
#include <cstdio>
#include <string>
#include <vector>

#include "ringmta/queue/dsn.h"

namespace {

using namespace ringmta;

struct scenario {
  const char* name;
  bool smtputf8 = false;
  spool::dsn_return ret = spool::dsn_return::unspecified;
  std::size_t body_lines = 3;
  std::string extra_body;
  std::vector<queue::dsn_action> actions = {queue::dsn_action::failed};
  std::string diagnostic = "550 5.1.1 <bob@example.org>: Recipient address rejected";
};

bool write(const std::string& directory, const scenario& s) {
  spool::envelope envelope;
  envelope.id = 0x0123456789abcdefULL;
  envelope.reverse_path = s.smtputf8 ? "j\xc3\xbcrgen@example.com" : "alice@example.com";
  envelope.smtputf8 = s.smtputf8;
  envelope.ret = s.ret;
  envelope.envid = "ENV+2B1";
  envelope.received_seconds = 1'700'000'000;
  std::string body = "From: Alice <alice@example.com>\r\nTo: bob@example.org\r\n"
                     "Subject: sample " + std::string(s.name) + "\r\nMessage-ID: <m1@example.com>"
                     "\r\n\r\n";
  for (std::size_t i = 0; i < s.body_lines; ++i) body += "line " + std::to_string(i) + "\r\n";
  body += "..leading dot\r\n" + s.extra_body;
  std::vector<queue::dsn_recipient> recipients;
  std::vector<std::string> addresses;
  for (std::size_t i = 0; i < s.actions.size(); ++i)
    addresses.push_back((s.smtputf8 ? "\xe5\xae\xa2" : "user") + std::to_string(i) +
                        "@example.org");
  for (std::size_t i = 0; i < s.actions.size(); ++i) {
    queue::dsn_recipient r;
    r.address = addresses[i];
    r.orcpt = i == 0 ? "rfc822;first+2Bx@example.org" : "";
    r.action = s.actions[i];
    r.status = r.action == queue::dsn_action::failed    ? queue::status_code{5, 1, 1}
               : r.action == queue::dsn_action::delayed ? queue::status_code{4, 3, 0}
                                                        : queue::status_code{2, 0, 0};
    r.remote_mta = "mx.example.org";
    r.diagnostic = s.diagnostic;
    r.last_attempt_seconds = 1'700'000'100;
    r.will_retry_until_seconds = 1'700'432'000;
    recipients.push_back(r);
  }
  std::vector<std::string_view> pieces = {body};
  queue::dsn_request request;
  request.reporting_mta = "mx.example.net";
  request.original = &envelope;
  request.recipients = recipients;
  request.original_body = pieces;
  request.original_body_bytes = body.size();
  request.dsn_id = 0xff;
  request.now_seconds = 1'700'000'200;
  std::string out;
  auto result = queue::build_dsn(request, out);
  if (!result.ok()) return false;
  std::FILE* file = std::fopen((directory + "/" + s.name + ".eml").c_str(), "wb");
  if (file == nullptr) return false;
  bool ok = std::fwrite(out.data(), 1, out.size(), file) == out.size();
  return std::fclose(file) == 0 && ok;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: dsn_samples DIRECTORY\n");
    return 2;
  }
  std::vector<scenario> scenarios(7);
  scenarios[0].name = "failed";
  scenarios[1].name = "delayed";
  scenarios[1].actions = {queue::dsn_action::delayed, queue::dsn_action::delayed};
  scenarios[1].diagnostic = "451 4.3.0 try later";
  scenarios[2].name = "eight_bit";
  scenarios[2].extra_body = "caf\xc3\xa9\r\n";
  scenarios[3].name = "global";
  scenarios[3].smtputf8 = true;
  scenarios[3].extra_body = "caf\xc3\xa9\r\n";
  scenarios[4].name = "headers_only";
  scenarios[4].ret = spool::dsn_return::headers;
  scenarios[5].name = "large";
  scenarios[5].body_lines = 20000;
  scenarios[6].name = "mixed_long";
  scenarios[6].actions = {queue::dsn_action::failed, queue::dsn_action::delivered,
                          queue::dsn_action::delayed};
  scenarios[6].diagnostic = "550 5.7.1 " + std::string(2000, 'x') + " end";
  for (const scenario& s : scenarios) {
    if (!write(argv[1], s)) {
      std::fprintf(stderr, "dsn_samples: %s failed\n", s.name);
      return 1;
    }
  }
  return 0;
}
