// `ringmta dkim keygen --domain D --selector S [--algorithm rsa|ed25519] [--bits N]
//  [--out FILE] [--force]`. See dkim/keygen.h.
#include "ringmta/dkim/keygen.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>

#include <fmt/format.h>

#include "ringmta/dkim/crypto.h"

namespace ringmta::dkim {

namespace {

constexpr const char* usage =
    "usage: ringmta dkim keygen --domain DOMAIN --selector SELECTOR [--algorithm rsa|ed25519]\n"
    "                           [--bits 1024-4096] [--out FILE] [--force]\n"
    "Writes the private key (default DOMAIN.SELECTOR.key, mode 0600) and prints the DNS TXT\n"
    "record to publish. Default: rsa, 2048 bits.\n";

int fail(const std::string& text) {
  std::fprintf(stderr, "ringmta: dkim keygen: %s\n%s", text.c_str(), usage);
  return 2;
}

bool write_key(const std::string& path, const std::string& pem, bool force, std::string& problem) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC | (force ? O_TRUNC : O_EXCL),
                        0600);
  if (fd < 0) {
    problem = fmt::format("{}: {}{}", path, std::strerror(errno),
                          errno == EEXIST ? " (use --force to replace it)" : "");
    return false;
  }
  bool ok = ::fchmod(fd, 0600) == 0;
  for (std::size_t done = 0; ok && done < pem.size();) {
    const ssize_t n = ::write(fd, pem.data() + done, pem.size() - done);
    ok = n > 0 || (n < 0 && errno == EINTR);
    if (n > 0) done += static_cast<std::size_t>(n);
  }
  ok = ok && ::fsync(fd) == 0;
  const int error = errno;
  ok = ::close(fd) == 0 && ok;
  if (!ok) problem = fmt::format("{}: {}", path, std::strerror(error));
  return ok;
}

}  // namespace

std::string zone_record(const std::string& domain, const std::string& selector,
                        const std::string& text) {
  std::string out = fmt::format("{}._domainkey.{}. IN TXT (", selector, domain);
  for (std::size_t at = 0; at < text.size(); at += 255)
    out += fmt::format(" \"{}\"", text.substr(at, 255));
  return out + " )";
}

int keygen_command(const std::vector<std::string>& args) {
  std::string domain, selector, out, algorithm_name = "rsa";
  unsigned bits = 2048;
  bool force = false;
  for (std::size_t i = 0; i < args.size(); ++i) {
    const std::string& flag = args[i];
    if (flag == "--force") {
      force = true;
      continue;
    }
    if (flag == "--help" || flag == "-h") {
      std::printf("%s", usage);
      return 0;
    }
    if (i + 1 == args.size()) return fail("missing value after " + flag);
    const std::string& value = args[++i];
    if (flag == "--domain") domain = value;
    else if (flag == "--selector") selector = value;
    else if (flag == "--out") out = value;
    else if (flag == "--algorithm") algorithm_name = value;
    else if (flag == "--bits") bits = static_cast<unsigned>(std::strtoul(value.c_str(), nullptr, 10));
    else return fail("unknown option " + flag);
  }
  if (domain.empty() || selector.empty()) return fail("--domain and --selector are required");
  if (algorithm_name != "rsa" && algorithm_name != "ed25519")
    return fail("--algorithm must be rsa or ed25519");
  const algorithm chosen = algorithm_name == "rsa" ? algorithm::rsa_sha256
                                                   : algorithm::ed25519_sha256;
  if (out.empty()) out = domain + "." + selector + ".key";
  std::string problem;
  const std::string pem = private_key::generate(chosen, bits, problem);
  if (pem.empty()) return fail(problem);
  auto key = private_key::from_text(pem, problem);
  if (key == nullptr) return fail(problem);
  if (!write_key(out, pem, force, problem)) {
    std::fprintf(stderr, "ringmta: dkim keygen: %s\n", problem.c_str());
    return 1;
  }
  std::error_code ignored;
  const std::string absolute = std::filesystem::absolute(out, ignored).string();
  std::printf("; %s key (%u bits) written to %s\n; publish this DNS record:\n%s\n\n"
              "# and add to ringmta.toml:\n[[dkim]]\ndomain = \"%s\"\nselector = \"%s\"\n"
              "key_file = \"%s\"\n",
              std::string(name_of(key->algorithm())).c_str(), key->bits(), absolute.c_str(),
              zone_record(domain, selector, key->dns_record()).c_str(), domain.c_str(),
              selector.c_str(), absolute.c_str());
  return 0;
}

}  // namespace ringmta::dkim
