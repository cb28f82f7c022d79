#include "ringmta/server/liveness.h"

#include <charconv>
#include <chrono>
#include <thread>

#include <fmt/format.h>

#include "ringmta/core/clock.h"
#include "ringmta/shard/typed_message.h"

namespace ringmta::server {
namespace {

constexpr std::uint32_t freeze_ms_max = 60'000;

std::optional<std::uint32_t> number(std::string_view text, std::uint32_t max) {
  std::uint32_t value = 0;
  const auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (text.empty() || error != std::errc() || end != text.data() + text.size() || value > max)
    return std::nullopt;
  return value;
}

// Deliberately blocks the shard's thread: the one place a shard may sleep, and only on request.
void freeze_shard(shard::shard&, std::uint32_t ms) noexcept {
  std::this_thread::sleep_for(std::chrono::milliseconds(ms));
}

}  // namespace

std::optional<std::string> stalled_shard(shard::runtime& running) {
  const std::uint64_t now_ms = core::monotonic_ns() / 1'000'000;
  for (unsigned id = 0; id < running.shard_count(); ++id) {
    const std::uint64_t turned = running.at(id).last_turn_ms();
    if (turned != 0 && now_ms > turned + shard_stall_ms)
      return fmt::format("shard {}: loop stalled {:.1f} s", id, (now_ms - turned) / 1000.0);
  }
  return std::nullopt;
}

admin::http_response health_response(shard::runtime* running, bool stopping) {
  if (stopping) return {503, "text/plain", "stopping\n"};
  if (running == nullptr) return {503, "text/plain", "starting\n"};
  if (auto stuck = stalled_shard(*running)) return {503, "text/plain", *stuck + "\n"};
  return {200, "text/plain", "ok\n"};
}

admin::http_response debug_request(shard::runtime& running, const admin::http_request& r) {
  constexpr std::string_view prefix = "/debug/freeze/";
  const std::string_view path = r.path;
  if (r.method != "POST" || path.substr(0, prefix.size()) != prefix)
    return {404, "text/plain", "POST /debug/freeze/SHARD?ms=N\n"};
  const auto id = number(path.substr(prefix.size()), running.shard_count() - 1);
  const auto ms_text = r.param("ms");  // the server parsed the query string
  const auto ms = ms_text.empty() ? std::nullopt : number(ms_text, freeze_ms_max);
  if (!id || !ms)
    return {400, "text/plain",
            fmt::format("expected /debug/freeze/SHARD?ms=N with SHARD < {} and N <= {}\n",
                        running.shard_count(), freeze_ms_max)};
  if (!shard::post_value<&freeze_shard>(running, *id, *ms)) return {503, "text/plain", "shard queue full\n"};
  return {200, "text/plain", fmt::format("shard {} frozen for {} ms\n", *id, *ms)};
}

}  // namespace ringmta::server
