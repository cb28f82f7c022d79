#!/bin/sh
# A run with an injected bug must fail: exit 1 and a report (LOST MAIL by default), within the
# time meson gives it (60 s). Usage: expect_lost_mail.sh SIM_BINARY BUG [PATTERN [FLAGS...]]
# (PATTERN defaults to "VIOLATION: LOST MAIL"; FLAGS go to the simulator.)
sim="$1"
bug="$2"
pattern="${3:-VIOLATION: LOST MAIL}"
[ $# -ge 3 ] && shift 3 || shift $#
out="$("$sim" --seconds 50 --first-seed 1 --inject-bug "$bug" "$@")"
status=$?
printf '%s\n' "$out"
[ "$status" -eq 1 ] || { echo "expected exit 1, got $status"; exit 1; }
printf '%s\n' "$out" | grep -Eq "$pattern" || { echo "no report matching: $pattern"; exit 1; }
