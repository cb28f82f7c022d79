// What the daemon does with each signal it can receive (issue 9: SIGHUP, SIGUSR1 and SIGUSR2
// ended the process without a log line, so a logrotate `kill -HUP` killed the MTA).
//
//   SIGTERM, SIGINT, SIGQUIT   stop: stop accepting, let sessions finish, exit 0
//   SIGHUP                     reload the configuration (server/reload.h)
//   SIGUSR1                    reopen log files (logrotate)
//   everything else that would end or stop the process (SIGUSR2, SIGPIPE, SIGALRM, SIGTSTP,
//   SIGTTIN, SIGTTOU, SIGXFSZ, SIGVTALRM, SIGPROF, SIGIO, SIGPWR, real-time signals) and the
//   harmless ones (SIGCHLD, SIGWINCH, SIGURG): ignored on purpose, with a log record.
// All of them are blocked in every thread before the first thread starts, and taken one by one
// by the daemon's main thread with sigwait, so none interrupts a shard. A SIGPIPE a thread
// raises itself (a write to a closed pipe) stays pending on that thread and the write fails
// with EPIPE instead. Signals that report faults (SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGABRT,
// SIGSYS, SIGTRAP) keep their default action: a core dump is the right end for a bug.
#pragma once

#include <signal.h>

#include <cstdint>
#include <string>

namespace ringmta::server {

enum class signal_action : std::uint8_t { stop, reload, reopen_logs, ignore };

// The signals the daemon takes with sigwait.
sigset_t daemon_signals() noexcept;
signal_action action_of(int signal_number) noexcept;
const char* action_name(signal_action action) noexcept;
// "HUP", "USR1", "RTMIN+3".
std::string signal_name(int signal_number);

}  // namespace ringmta::server
