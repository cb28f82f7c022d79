// ringmta: the daemon, `ringmta spool ls|cat|export` and `ringmta check-config`.
//
//   ringmta [--config FILE] [--listen ADDR:PORT ...] [--spool DIR] ...   run the MTA
//   ringmta spool ls [--spool DIR | --config FILE] [--json]              list queued mail
//   ringmta dkim keygen --domain D --selector S [--algorithm rsa|ed25519]   a DKIM key
//   ringmta check-config [--config FILE] [flags] [--json]                validate, print
//   ringmta --help | --version
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "ringmta/config/settings.h"
#include "ringmta/dkim/keygen.h"
#include "ringmta/server/daemon.h"

#ifndef RINGMTA_VERSION
#define RINGMTA_VERSION "unknown"
#endif

namespace {

void print_help() {
  std::printf(
      "usage: ringmta [--config FILE] [flags]      run the mail transfer agent\n"
      "       ringmta spool ls [flags] [--json]    list queued messages\n"
      "       ringmta spool cat ID [flags] [--wire] print a queued message\n"
      "       ringmta spool export DIR [flags]     write every queued message to DIR/<id>.eml\n"
      "       ringmta dkim keygen --domain D --selector S [--algorithm rsa|ed25519] [--bits N]\n"
      "                                            write a DKIM key, print its DNS record\n"
      "       ringmta check-config [flags] [--json] validate and print the effective settings\n"
      "       ringmta --version\n\n"
      "Signals: SIGHUP reloads the configuration, SIGUSR1 reopens the log file, SIGTERM stops.\n"
      "Every setting has a flag (flags override the file):\n%s",
      ringmta::config::help_text().c_str());
}

int spool_command(int argc, const char* const* argv) {
  // argv: ringmta spool ls [settings flags...] [--json]
  //       ringmta spool cat ID [settings flags...] [--wire]
  const bool list = argc >= 3 && std::strcmp(argv[2], "ls") == 0;
  const bool cat = argc >= 4 && std::strcmp(argv[2], "cat") == 0;
  const bool dump = argc >= 4 && std::strcmp(argv[2], "export") == 0;
  if (!list && !cat && !dump) {
    std::fprintf(stderr, "ringmta: usage: ringmta spool ls [--json] | ringmta spool cat ID | "
                         "ringmta spool export DIR\n");
    return 2;
  }
  bool json = false, wire = false;
  std::vector<const char*> rest = {argv[0]};
  for (int i = list ? 3 : 4; i < argc; ++i) {
    if (std::strcmp(argv[i], "--json") == 0) json = true;
    else if (std::strcmp(argv[i], "--wire") == 0) wire = true;
    else rest.push_back(argv[i]);
  }
  const auto settings = ringmta::config::load(static_cast<int>(rest.size()), rest.data());
  if (cat) return ringmta::server::cat_spool_command(settings.spool_dir, argv[3], wire);
  if (dump) return ringmta::server::export_spool_command(settings.spool_dir, argv[3], wire);
  return ringmta::server::list_spool_command(settings.spool_dir, json);
}

// `ringmta check-config`: loads the configuration as the daemon would, checks what start-up
// would check without starting (the log output opens, DNS resolvers are usable), and prints
// the effective settings as TOML (each key that was set says where) or JSON. Exit 0 or 2.
int check_config_command(int argc, const char* const* argv) {
  bool json = false;
  std::vector<const char*> rest = {argv[0]};
  for (int i = 2; i < argc; ++i) {
    if (std::strcmp(argv[i], "--json") == 0) json = true;
    else rest.push_back(argv[i]);
  }
  const auto settings = ringmta::config::load(static_cast<int>(rest.size()), rest.data());
  ringmta::server::check_configuration(settings);
  if (!json) {
    std::printf("%s", ringmta::config::render(settings).c_str());
    return 0;
  }
  auto out = nlohmann::json::array();
  for (const auto& info : ringmta::config::describe()) {
    const auto origin = settings.origins.find(info.key);
    out.push_back({{"key", info.key},
                   {"flag", info.flag},
                   {"kind", info.kind == ringmta::config::setting_kind::boolean ? "boolean"
                            : info.kind == ringmta::config::setting_kind::list  ? "list"
                                                                                 : "value"},
                   {"reload", info.reload == ringmta::config::reload_effect::live ? "live"
                                                                                  : "restart"},
                   {"value", ringmta::config::show(settings, info.key)},
                   {"origin", origin != settings.origins.end() ? origin->second : "defaults"}});
  }
  std::printf("%s\n", out.dump(1).c_str());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    if (argc > 2 && std::strcmp(argv[1], "dkim") == 0 && std::strcmp(argv[2], "keygen") == 0)
      return ringmta::dkim::keygen_command(std::vector<std::string>(argv + 3, argv + argc));
    for (int i = 1; i < argc; ++i) {
      if (std::strcmp(argv[i], "--help") == 0 || std::strcmp(argv[i], "-h") == 0) {
        print_help();
        return 0;
      }
      if (std::strcmp(argv[i], "--version") == 0) {
        std::printf("ringmta %s\n", RINGMTA_VERSION);
        return 0;
      }
    }
    if (argc > 1 && std::strcmp(argv[1], "spool") == 0) return spool_command(argc, argv);
    if (argc > 1 && std::strcmp(argv[1], "check-config") == 0)
      return check_config_command(argc, argv);
    const auto settings = ringmta::config::load(argc, argv);
    ringmta::server::daemon_hooks hooks;
    // A reload reads the same file again; the flags given at start still override it.
    hooks.load_settings = [argc, argv] { return ringmta::config::load(argc, argv); };
    return ringmta::server::run_daemon(settings, hooks);
  } catch (const ringmta::config::error& problem) {
    std::fprintf(stderr, "ringmta: %s\n", problem.what());
    return 2;
  }
}
