// ring_features::describe(): the start-up log line naming what the kernel gave us.
#include <fmt/format.h>

#include <string>

#include "ringmta/io/ring.h"

namespace ringmta::io {

std::string ring_features::describe() const {
  std::string setup;
  std::string available;
  std::string missing;
  auto add = [](std::string& list, const char* name) {
    if (!list.empty()) list += ' ';
    list += name;
  };
  auto op = [&](bool present, const char* name) { add(present ? available : missing, name); };
  if (single_issuer) add(setup, "SINGLE_ISSUER");
  if (defer_taskrun) add(setup, "DEFER_TASKRUN");
  if (coop_taskrun) add(setup, "COOP_TASKRUN|TASKRUN_FLAG");
  if (submit_all) add(setup, "SUBMIT_ALL");
  setup += fmt::format(" CQSIZE sq={} cq={}", sq_entries, cq_entries);
  if (registered_ring_fd) add(setup, "registered-ring-fd");
  if (fixed_file_count > 0) setup += fmt::format(" fixed-files={}", fixed_file_count);
  if (nodrop) add(setup, "NODROP");
  if (setup_enomem_retries > 0)
    setup += fmt::format(" (setup retried {}x after ENOMEM)", setup_enomem_retries);
  op(multishot_accept, "accept-multishot");
  op(multishot_recv, "recv-multishot");
  op(buffer_ring, "buffer-ring");
  op(buffer_ring_incremental, "buffer-ring-incremental");
  op(msg_ring, "msg-ring");
  op(msg_ring_fd, "msg-ring-fd");
  op(send_zc, "send-zc");
  op(sendmsg_zc, "sendmsg-zc");
  op(splice, "splice");
  op(multishot_timeout, "timeout-multishot");
  op(fixed_fd_install, "fixed-fd-install");
  op(socket_op, "socket");
  op(recv_bundle, "recv-bundle");
  return fmt::format("io_uring on Linux {}: setup {}; ops {}; missing {}", kernel_release, setup,
                     available, missing.empty() ? "none" : missing);
}

}  // namespace ringmta::io
