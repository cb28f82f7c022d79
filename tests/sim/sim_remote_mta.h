// sim::remote_mta: a remote MTA's side of one simulated connection (a stream_peer of
// sim_host.h) — the REAL smtp::server_session, answering 451/554 and dropping connections at
// the rates a test gives, recording what it accepted per (message key, recipient). Shared by
// the tests that run real delivery glue on a simulated host (sim_host_test: src/outbound;
// sim_relay_test: src/server's relay over src/outbound).
// A message's key is its Message-ID's local part "key.…" (find_key). outbound_config_for_sim:
// the client side those tests give src/outbound.
// Never: reads a clock; draws from anything but the random stream it is given.
#pragma once

#include <fmt/format.h>

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "ringmta/outbound/outbound.h"
#include "ringmta/smtp/server_session.h"
#include "sim_host.h"
#include "sim_random.h"

namespace ringmta::sim {

// What the remote MTAs received, and the log every run is compared by.
struct world_record {
  std::map<std::pair<std::string, std::string>, std::uint32_t> deliveries;  // (key, rcpt)
  std::map<std::string, std::string> bodies;                                 // key -> body
  std::string transcript;
};

inline std::string find_key(std::string_view body) {
  const auto at = body.find("<key.");
  if (at == std::string_view::npos) return {};
  const auto end = body.find('@', at);
  return end == std::string_view::npos ? std::string{}
                                       : std::string(body.substr(at + 1, end - at - 1));
}

// RFC 5321 §4.5.2 in reverse: what a DATA body (wire form) carries.
inline std::string unstuff(std::string_view wire) {
  std::string out;
  bool line_start = true;
  for (char c : wire) {
    if (line_start && c == '.') {
      line_start = false;
      continue;
    }
    out.push_back(c);
    line_start = c == '\n';
  }
  return out;
}

// How a remote MTA misbehaves (per seed; all zero in the runs without faults).
struct fault_rates {
  double temporary = 0;  // 451 to MAIL, RCPT, DATA or the end of data
  double permanent = 0;  // 554 to the same
  double drop = 0;       // closes the connection when bytes arrive (they are lost)
};

// A remote MTA's side of one connection: the real server engine, answering as the faults say.
class remote_mta final : public stream_peer, public smtp::server_handler {
 public:
  // stalls: accepts the connection and never says a word (the client's greeting timeout).
  remote_mta(world_record& record, std::string name, const smtp::extension_set& extensions,
             bool stalls, const fault_rates& faults, random& rng)
      : _record(record), _name(std::move(name)), _stalls(stalls), _faults(faults), _rng(rng) {
    _config.hostname = _name;
    _config.extensions = extensions;
    _config.extensions.binary_mime = false;
    _session = std::make_unique<smtp::server_session>(_config, *this);
  }

  void on_connected(sim_host& host, int fd) override {
    if (_stalls) return;
    _session->start();
    flush(host, fd);
  }
  void on_bytes(sim_host& host, int fd, std::string_view bytes) override {
    if (_stalls || _closed) return;
    if (_rng.chance(_faults.drop)) {
      _record.transcript += fmt::format("{} drops the connection\n", _name);
      _closed = true;
      return host.peer_close(fd);
    }
    std::string_view rest = bytes;
    for (int guard = 0; !rest.empty() && !_session->wants_close() && guard < 100000; ++guard) {
      rest.remove_prefix(_session->feed(rest));
      flush(host, fd);
    }
    if (_session->wants_close() && !_closed) {
      _closed = true;
      host.peer_close(fd);
    }
  }
  void on_client_gone(sim_host&, int) override { _closed = true; }

  smtp::verdict on_mail_from(const smtp::mailbox&, const smtp::mail_parameters&) noexcept override {
    _recipients.clear();
    _body.clear();
    return answer("MAIL");
  }
  smtp::verdict on_rcpt_to(const smtp::mailbox& to,
                           const smtp::rcpt_parameters&) noexcept override {
    smtp::verdict verdict = answer("RCPT");
    if (verdict.what() == smtp::verdict::kind::accept) _recipients.emplace_back(to.address);
    return verdict;
  }
  smtp::verdict on_data_start() noexcept override { return answer("DATA"); }
  void on_body(std::string_view slice, smtp::body_form form) noexcept override {
    _body.append(slice);
    _wire_form = form == smtp::body_form::wire;
  }
  smtp::verdict on_data_end(const smtp::body_summary&) noexcept override {
    smtp::verdict verdict = answer("end of data");
    if (verdict.what() != smtp::verdict::kind::accept) {
      _recipients.clear();
      _body.clear();
      return verdict;
    }
    const std::string body = _wire_form ? unstuff(_body) : _body;
    const std::string key = find_key(body);
    for (const auto& to : _recipients) ++_record.deliveries[{key, to}];
    _record.bodies[key] = body;
    _record.transcript += fmt::format("{} got {} for {} rcpt\n", _name, key, _recipients.size());
    _recipients.clear();
    _body.clear();
    return smtp::verdict::accept();
  }
  void on_reset() noexcept override {
    _recipients.clear();
    _body.clear();
  }

 private:
  smtp::verdict answer(const char* what) {
    if (_rng.chance(_faults.temporary)) {
      _record.transcript += fmt::format("{} answers {} with 451\n", _name, what);
      return smtp::verdict::respond(451, "4.3.0", "try again later");
    }
    if (_rng.chance(_faults.permanent)) {
      _record.transcript += fmt::format("{} answers {} with 554\n", _name, what);
      return smtp::verdict::respond(554, "5.7.1", "refused");
    }
    return smtp::verdict::accept();
  }

  void flush(sim_host& host, int fd) {
    const std::string_view output = _session->output();
    if (output.empty()) return;
    host.peer_send(fd, output);
    _session->consume_output(output.size());
  }

  world_record& _record;
  std::string _name;
  smtp::server_config _config;
  std::unique_ptr<smtp::server_session> _session;
  std::vector<std::string> _recipients;
  std::string _body;
  bool _wire_form = false;  // DATA (dot-stuffed) rather than BDAT (raw)
  bool _stalls = false;
  const fault_rates& _faults;
  random& _rng;
  bool _closed = false;
};

// src/outbound as the simulated tests run it: 16 connections, bodies copied in 4 KiB chunks
// (no pipes in the simulated kernel; bodies over 2 KiB take the copy path), no TLS.
// `receive_buffers` above the connections a test opens means a reply never waits for one.
inline outbound::outbound_config outbound_config_for_sim(std::uint32_t receive_buffers) {
  outbound::outbound_config config;
  config.helo_name = "mx.sim.example";
  config.ipv6 = false;
  config.connections_max = 16;
  config.idle_timeout_ms = 1'000;
  config.transfer = outbound::body_transfer::copy;
  config.copy_body_bytes_max = 2048;
  config.copy_chunk_bytes = 4096;
  config.receive_buffer_count = receive_buffers;
  config.tls_context = nullptr;
  return config;
}

}  // namespace ringmta::sim
