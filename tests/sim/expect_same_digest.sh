#!/bin/sh
# Determinism: one seed run twice (two processes) gives the same event-log digest.
# Usage: expect_same_digest.sh SIM_BINARY SEED
first="$("$1" --seed "$2" | head -n 1)" || exit 1
second="$("$1" --seed "$2" | head -n 1)" || exit 1
echo "$first"
echo "$second"
digest() { printf '%s\n' "$1" | sed -n 's/.* digest \([0-9a-f]*\) .*/\1/p'; }
[ -n "$(digest "$first")" ] && [ "$(digest "$first")" = "$(digest "$second")" ] ||
  { echo "digests differ"; exit 1; }
