// The daemon's signal table. See server/signals.h.
#include "ringmta/server/signals.h"

#include <string.h>

#include <fmt/format.h>

namespace ringmta::server {

namespace {

constexpr int handled[] = {SIGHUP,  SIGINT,  SIGQUIT, SIGTERM,   SIGUSR1, SIGUSR2, SIGPIPE,
                           SIGALRM, SIGCHLD, SIGTSTP, SIGTTIN,   SIGTTOU, SIGWINCH, SIGURG,
                           SIGXFSZ, SIGVTALRM, SIGPROF, SIGIO, SIGPWR};

}  // namespace

sigset_t daemon_signals() noexcept {
  sigset_t set;
  sigemptyset(&set);
  for (const int number : handled) sigaddset(&set, number);
  for (int number = SIGRTMIN; number <= SIGRTMAX; ++number) sigaddset(&set, number);
  return set;
}

signal_action action_of(int signal_number) noexcept {
  switch (signal_number) {
    case SIGTERM:
    case SIGINT:
    case SIGQUIT:
      return signal_action::stop;
    case SIGHUP:
      return signal_action::reload;
    case SIGUSR1:
      return signal_action::reopen_logs;
    default:
      return signal_action::ignore;
  }
}

const char* action_name(signal_action action) noexcept {
  switch (action) {
    case signal_action::stop: return "stop";
    case signal_action::reload: return "reload";
    case signal_action::reopen_logs: return "reopen_logs";
    case signal_action::ignore: break;
  }
  return "ignored";
}

std::string signal_name(int signal_number) {
  if (signal_number >= SIGRTMIN && signal_number <= SIGRTMAX)
    return signal_number == SIGRTMIN ? "RTMIN" : fmt::format("RTMIN+{}", signal_number - SIGRTMIN);
  const char* name = sigabbrev_np(signal_number);
  return name != nullptr ? name : fmt::format("{}", signal_number);
}

}  // namespace ringmta::server
