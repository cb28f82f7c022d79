// ringmta-man: writes ringmta(8) or ringmta.toml(5) to stdout, generated from the settings
// table (src/config/man_page.h). Run by the build; not installed.
//   ringmta-man 8|5 CONF_FILE VERSION        the page
//   ringmta-man --missing CONF_FILE          keys CONF_FILE does not document (exit 1 if any)
#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>

#include "ringmta/config/man_page.h"

int main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: ringmta-man 8|5 CONF_FILE VERSION | --missing CONF_FILE\n");
    return 2;
  }
  std::ifstream file(argv[2]);
  if (!file) {
    std::fprintf(stderr, "ringmta-man: %s: %s\n", argv[2], std::strerror(errno));
    return 2;
  }
  std::ostringstream text;
  text << file.rdbuf();
  if (std::strcmp(argv[1], "--missing") == 0) {
    const auto missing = ringmta::config::missing_defaults(text.str());
    for (const auto& key : missing) std::printf("%s\n", key.c_str());
    return missing.empty() ? 0 : 1;
  }
  const int section = std::atoi(argv[1]);
  if ((section != 8 && section != 5) || argc < 4) {
    std::fprintf(stderr, "ringmta-man: section 8 or 5, and a version\n");
    return 2;
  }
  const auto page = ringmta::config::man_page(section, text.str(), argv[3]);
  std::fwrite(page.data(), 1, page.size(), stdout);
  return 0;
}
