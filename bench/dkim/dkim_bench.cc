// DKIM signing cost per message, in memory, one core: dkim::message_signer over a 1 KiB and a
// 100 KiB message (CPU time of this thread; DATA wire form, fed in 16 KiB receive-buffer slices, header selection and
// over-signing, one signature) for RSA-2048 and Ed25519, against the bare signature of a
// header hash with the same key (private_key::sign, the OpenSSL call the signer makes) and a
// bare SHA-256 of the message (the hashing no signer can avoid). bench/dkim/run.sh runs this
// beside `openssl speed` and prints the shares. Best of ROUNDS rounds per line.
//   usage: dkim_bench [ROUNDS=5]
#include <time.h>

#include <cstdio>
#include <cstdlib>
#include <string>

#include "ringmta/dkim/signer.h"

using namespace ringmta::dkim;

namespace {

std::string make_message(std::size_t bytes) {
  std::string m =
      "From: Sender <news@bench.test>\r\nTo: <someone@example.net>\r\n"
      "Subject: a message of the benchmark, of the usual kind\r\n"
      "Date: Thu, 01 Jan 2026 00:00:00 +0000\r\nMessage-ID: <1234567890@bench.test>\r\n"
      "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n"
      "List-Unsubscribe: <https://bench.test/u/123>\r\n"
      "List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n\r\n";
  unsigned line = 0;
  while (m.size() < bytes) {
    char text[96];
    std::snprintf(text, sizeof text,
                  "%sLine %05u of the body: words and  some double  spaces, as mail has.\r\n",
                  line % 40 == 7 ? "." : "", line);
    m += text;
    ++line;
  }
  return m;
}

// This thread's CPU time: the machine is shared with other builds, and wall time would count
// the time the scheduler gave them.
double thread_cpu_us() {
  timespec now{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &now);
  return static_cast<double>(now.tv_sec) * 1e6 + static_cast<double>(now.tv_nsec) / 1e3;
}

template <typename Work>
double best_us(int rounds, int iterations, Work&& work) {
  double best = 1e30;
  for (int r = 0; r < rounds; ++r) {
    const double t0 = thread_cpu_us();
    for (int i = 0; i < iterations; ++i) work();
    const double us = (thread_cpu_us() - t0) / iterations;
    if (us < best) best = us;
  }
  return best;
}

}  // namespace

int main(int argc, char** argv) {
  const int rounds = argc > 1 ? std::atoi(argv[1]) : 5;
  std::printf("%-8s %-8s %12s %12s %12s %12s %10s\n", "key", "message", "signer_us", "sign_us",
              "sha256_us", "rest_us", "rest/total");
  for (const algorithm a : {algorithm::rsa_sha256, algorithm::ed25519_sha256}) {
    std::string problem;
    auto table = std::make_shared<key_table>();
    signing_key key;
    key.domain = "bench.test";
    key.selector = "s1";
    key.headers = default_signed_headers();
    key.oversigned = default_oversigned_headers();
    key.key = private_key::from_text(private_key::generate(a, 2048, problem), problem);
    if (key.key == nullptr) {
      std::fprintf(stderr, "key: %s\n", problem.c_str());
      return 1;
    }
    table->keys.push_back(key);
    const auto& signing = *table->keys.front().key;
    const int sign_iterations = a == algorithm::rsa_sha256 ? 300 : 3000;
    std::string signature;
    const digest hash{};
    const double sign_us = best_us(rounds, sign_iterations, [&] { signing.sign(hash, signature); });
    for (const std::size_t bytes : {std::size_t{1024}, std::size_t{100 * 1024}}) {
      const std::string message = make_message(bytes);
      message_signer signer;
      const double total_us = best_us(rounds, sign_iterations, [&] {
        signer.begin(table, "Received: from c (c [192.0.2.1]) by mx; Thu, 1 Jan 2026\r\n");
        for (std::size_t at = 0; at < message.size(); at += 16384)
          signer.feed(std::string_view(message).substr(at, 16384), true);
        if (signer.finish(1767225600) != sign_outcome::signed_ok) std::abort();
      });
      sha256 plain;
      const double sha_us = best_us(rounds, sign_iterations, [&] {
        plain.reset();
        plain.update(message);
        (void)plain.finish();
      });
      const double rest = total_us - sign_us - sha_us;
      std::printf("%-8s %-8s %12.1f %12.1f %12.1f %12.1f %9.1f%%\n",
                  a == algorithm::rsa_sha256 ? "rsa2048" : "ed25519",
                  bytes == 1024 ? "1KiB" : "100KiB", total_us, sign_us, sha_us, rest,
                  100.0 * rest / total_us);
    }
  }
  return 0;
}
