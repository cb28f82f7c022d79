#!/bin/sh
# A run with an injected durability bug must fail: exit 1 and a LOST MAIL report, within the
# time meson gives it (60 s). Usage: expect_lost_mail.sh SIM_BINARY BUG
out="$("$1" --seconds 50 --first-seed 1 --inject-bug "$2")"
status=$?
printf '%s\n' "$out"
[ "$status" -eq 1 ] || { echo "expected exit 1, got $status"; exit 1; }
printf '%s\n' "$out" | grep -q "VIOLATION: LOST MAIL" || { echo "no LOST MAIL report"; exit 1; }
