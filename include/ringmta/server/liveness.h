// Is every shard's loop turning? The shard runtime keeps a heartbeat per shard (the time its
// loop last began an iteration; an idle shard still turns every idle_wait_ms_max = 1 s). A
// heartbeat older than shard_stall_ms means the shard is stuck: /health answers 503 and the
// systemd watchdog is no longer pinged.
//
// The debug endpoint (only with --debug-endpoints, for tests) freezes a shard's loop for real:
// POST /debug/freeze/SHARD?ms=N posts a message whose handler sleeps N ms on that shard's
// thread, so tests see exactly what a stuck shard looks like from outside.
// Never: lets a debug request through without --debug-endpoints; freezes longer than 60 s.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "ringmta/admin/http_server.h"
#include "ringmta/shard/runtime.h"

namespace ringmta::server {

inline constexpr std::uint64_t shard_stall_ms = 5000;

// nullopt when every shard turned within shard_stall_ms; else "shard 1: loop stalled 7.1 s".
std::optional<std::string> stalled_shard(shard::runtime& running);

// GET /health: 503 "starting" before the shards run (running == nullptr), "stopping" once
// shutdown began, "shard N: loop stalled …" when one is stuck, else 200 "ok".
admin::http_response health_response(shard::runtime* running, bool stopping);

// POST /debug/freeze/SHARD?ms=N (see above); 404 for any other /debug path.
admin::http_response debug_request(shard::runtime& running, const admin::http_request& r);

}  // namespace ringmta::server
