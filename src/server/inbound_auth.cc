// SMTP AUTH on an inbound connection (RFC 4954): the SASL exchange (auth::sasl_exchange), the
// password check handed to the verifier's worker threads while the session waits on a pending
// verdict, the answer (delayed after a failure, see auth/verifier.h), submission's "AUTH before
// MAIL" (RFC 6409 §4.3) and which envelope senders a login may use (RFC 6409 §6.1).
// Never: a hash on this (shard) thread, a password in a log record or kept after the check.
#include <netinet/in.h>
#include <sys/socket.h>

#include <fmt/format.h>

#include "inbound_internal.h"

namespace ringmta::server {
namespace {

constexpr std::string_view invalid_text = "Authentication credentials invalid";
constexpr std::uint32_t auth_failures_per_session_max = 3;  // then 421 4.7.0 and close

bool is_loopback(const core::endpoint& at) noexcept {
  if (at.family() == AF_INET) {
    const auto& v4 = reinterpret_cast<const sockaddr_in*>(at.sockaddr_pointer())->sin_addr;
    return (ntohl(v4.s_addr) >> 24) == 127;
  }
  if (at.family() == AF_INET6) {
    const auto& v6 = reinterpret_cast<const sockaddr_in6*>(at.sockaddr_pointer())->sin6_addr;
    if (IN6_IS_ADDR_V4MAPPED(&v6)) return v6.s6_addr[12] == 127;
    return IN6_IS_ADDR_LOOPBACK(&v6);
  }
  return false;
}

}  // namespace

bool connection::auth_plaintext_allowed() const noexcept {
  return settings->auth_plaintext_loopback && is_loopback(peer);
}

smtp::verdict connection::on_auth(std::string_view mechanism,
                                  std::string_view initial_response) noexcept {
  if (!settings->auth_credentials || settings->auth_verifier == nullptr)
    return smtp::verdict::respond(454, "4.7.0", "Temporary authentication failure");
  if (!sasl) sasl = std::make_unique<auth::sasl_exchange>();
  return auth_step(sasl->start(mechanism, initial_response));
}

smtp::verdict connection::on_auth_response(std::string_view line) noexcept {
  if (!sasl) return smtp::verdict::respond(503, "5.5.1", "No authentication exchange");
  return auth_step(sasl->respond(line));
}

smtp::verdict connection::auth_step(const auth::sasl_step& step) noexcept {
  switch (step.what) {
    case auth::sasl_step::kind::challenge:
      return smtp::verdict::respond(334, "", step.text);
    case auth::sasl_step::kind::refuse:
      sasl.reset();
      if (step.code == 535) server.metrics().auth_failed.add();
      return smtp::verdict::respond(step.code, step.enhanced, step.text);
    case auth::sasl_step::kind::verify:
      break;
  }
  auth_mechanism = sasl->mechanism_name();
  auto request = std::make_unique<auth::verify_request>();
  request->user.assign(sasl->user());
  request->password.assign(sasl->password());
  sasl.reset();  // wipes the password (sasl_exchange::clear)
  request->client = envelope.client_address;
  request->table = settings->auth_credentials;
  request->reply_to = {server.shard_id(), slot, generation};
  const std::string user = request->user;
  if (!settings->auth_verifier->submit(std::move(request))) {  // RFC 4954 §6: 454
    server.metrics().auth_busy.add();
    log_auth(user, "busy");
    return smtp::verdict::respond(454, "4.7.0",
                                  "Temporary authentication failure, try again later");
  }
  return smtp::verdict::pending();
}

void connection::on_auth_result(std::unique_ptr<auth::verify_result> result) noexcept {
  if (ending() || !session || !session->awaiting_verdict()) return;
  auth_held = std::move(result);
  if (auth_held->outcome == auth::verify_outcome::failure && auth_held->delay_ms > 0)
    return schedule(timer_purpose::auth_delay, auth_held->delay_ms);  // growing delays
  answer_auth();
}

void connection::answer_auth() noexcept {
  if (!auth_held) return;
  const auto result = std::move(auth_held);
  auto& metrics = server.metrics();
  switch (result->outcome) {
    case auth::verify_outcome::success:
      login = result->user;
      metrics.auth_succeeded.add();
      log_auth(login, "success");
      session->resume(smtp::verdict::accept());
      break;
    case auth::verify_outcome::failure:
      metrics.auth_failed.add();
      log_auth(result->user, "failure");
      rejection_detail = result->user;
      // Three failures in one session: it is guessing, not mistyping.
      if (++auth_failures >= auth_failures_per_session_max) {
        if (end_reason == nullptr) end_reason = "authentication failures";
        session->resume(smtp::verdict::respond(421, "4.7.0",
                                               "Too many failed authentication attempts"));
      } else {
        session->resume(smtp::verdict::respond(535, "5.7.8", invalid_text));
      }
      break;
    case auth::verify_outcome::locked:
      metrics.auth_locked.add();
      log_auth(result->user, "locked");
      session->resume(smtp::verdict::respond(
          454, "4.7.0", "Too many authentication failures, try again later"));
      break;
    case auth::verify_outcome::unavailable:
      metrics.auth_busy.add();
      log_auth(result->user, "unavailable");
      session->resume(smtp::verdict::respond(454, "4.7.0", "Temporary authentication failure"));
      break;
  }
  restart_timer();
  pump();
}

void connection::log_auth(std::string_view user, std::string_view result) noexcept {
  auto& log = server.log();
  log.set_time(server.host().wall_ms());
  log.record("auth")
      .hex_field("session", session_id)
      .field("client", peer.to_chars(client_text, sizeof client_text))
      .field("login", user)
      .field("mechanism", auth_mechanism)
      .field("result", result);
}

// RFC 6409 §4.3: a submission listener takes mail from authenticated clients only; §6.1: the
// login must own the envelope sender (Postfix reject_sender_login_mismatch). The null sender
// is a notification's and belongs to no one.
std::optional<smtp::verdict> connection::check_sender(const smtp::mailbox& reverse_path) noexcept {
  if (!session->authenticated()) {
    if (!submission) return std::nullopt;
    server.metrics().auth_required.add();
    return smtp::verdict::respond(530, "5.7.0", "Authentication required");
  }
  if (reverse_path.address.empty()) return std::nullopt;
  const auto& map = settings->auth_senders;
  const bool owned = map ? map->allows(login, reverse_path.address)
                         : auth::sender_is_login(login, reverse_path.address);
  if (owned) return std::nullopt;
  server.metrics().auth_sender_denied.add();
  rejection_detail = fmt::format("{} (login {})", reverse_path.address, login);
  return smtp::verdict::respond(553, "5.7.1",
                                "Sender address rejected: not owned by the authenticated user");
}

}  // namespace ringmta::server
