#!/usr/bin/env bash
# DKIM signing cost in memory beside `openssl speed` in the same run (bench/README.md).
#   usage: bench/dkim/run.sh [BUILD=build] [ROUNDS=5]
set -eu
BUILD=${1:-build}; ROUNDS=${2:-5}
cd "$(dirname "$0")/../.."
ninja -C "$BUILD" bench/dkim/dkim_bench >/dev/null
echo "== openssl speed (bare signature, same machine, same run)"
openssl speed -seconds 3 rsa2048 ed25519 2>/dev/null | grep -E "^rsa 2048|Ed25519" | \
  awk '/^rsa/ {printf "rsa2048 sign: %.1f us\n", $4 * 1e6}
       /Ed25519/ {printf "ed25519 sign: %.1f us\n", 1e6 / $(NF-1)}'
openssl speed -seconds 3 -evp sha256 -bytes 102400 2>/dev/null | awk '/^sha256/ {printf "sha256 100 KiB: %.1f us\n", 102400 / ($NF * 1000) * 1e6}'
echo "== ringmta message signer (best of $ROUNDS rounds)"
"$BUILD/bench/dkim/dkim_bench" "$ROUNDS"
