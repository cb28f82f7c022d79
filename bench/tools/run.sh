#!/usr/bin/env bash
# End-to-end benchmark of the load-testing rig: the ringmta-blast + ringmta-sink pair against
# Postfix's smtp-source + smtp-sink pair, 1 KiB bodies, the same concurrency, measured
# alternately (round-robin over the scenarios, ROUNDS times; medians reported), plus the
# kernel's ceiling for one connection per message (bench/tools/ceiling.c) and the cross pairs
# (blast -> smtp-sink, smtp-source -> ringmta-sink) that show which side limits.
# Results and how to read them: bench/tools/README.md.
#
# usage: bench/tools/run.sh [BUILD_DIR]      (default build-tools; run from the repository root)
#   ROUNDS=3  SESSIONS=50 (parallel sessions of both clients)  REUSE_MSGS=200000
#   CONN_MSGS=50000 (one message per connection)  CEILING_SECONDS=5  MILLION=1 (also the run of
#   1,000,000 sessions against ringmta-sink, with its full latency report)
set -euo pipefail
BUILD=${1:-build-tools}
ROUNDS=${ROUNDS:-3}; SESSIONS=${SESSIONS:-50}; REUSE_MSGS=${REUSE_MSGS:-200000}
CONN_MSGS=${CONN_MSGS:-50000}; CEILING_SECONDS=${CEILING_SECONDS:-5}; MILLION=${MILLION:-0}
BLAST=$BUILD/tools/blast/ringmta-blast
SINK=$BUILD/tools/sink/ringmta-sink
fail() { echo "bench/tools: $*" >&2; exit 1; }
[ -x "$BLAST" ] && [ -x "$SINK" ] || fail "build $BLAST and $SINK first (ninja -C $BUILD)"
command -v smtp-source >/dev/null && command -v smtp-sink >/dev/null || fail "postfix missing"
W=$(mktemp -d /tmp/ringmta-bench-tools.XXXXXX)
PIDS=()
cleanup() { set +e; for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done; wait 2>/dev/null; rm -rf "$W"; }
trap cleanup EXIT
trap 'exit 130' INT TERM
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done; fail "nothing on port $1"; }

cc -O2 -pthread -o "$W/ceiling" "$(dirname "$0")/ceiling.c"
"$SINK" --listen 127.0.0.1:0 --threads 2 --ready-file "$W/ready" >"$W/sink.out" 2>&1 & PIDS+=($!)
for _ in $(seq 100); do [ -s "$W/ready" ] && break; sleep 0.1; done
RINGMTA_SINK=$(head -1 "$W/ready"); [ -n "$RINGMTA_SINK" ] || fail "ringmta-sink did not start"
PF_PORT=$(free_port)
smtp-sink -u root "127.0.0.1:$PF_PORT" 1000 >/dev/null 2>&1 & PIDS+=($!)
CEIL_PORT=$(free_port)
"$W/ceiling" server "$CEIL_PORT" & PIDS+=($!)
wait_port "$PF_PORT"; wait_port "$CEIL_PORT"

echo "load before: $(uptime)"
timed() {  # NAME MESSAGES COMMAND...: appends "NAME msg/s" to results, fails on error
  local name=$1 n=$2; shift 2
  local t0 t1
  t0=$(date +%s.%N)
  "$@" >"$W/last.out" 2>&1 || fail "$name failed: $(tail -3 "$W/last.out")"
  t1=$(date +%s.%N)
  python3 -c "import sys; print(sys.argv[1], round(int(sys.argv[2])/(float(sys.argv[4])-float(sys.argv[3]))))" \
    "$name" "$n" "$t0" "$t1" | tee -a "$W/results"
}
PER=$((REUSE_MSGS / SESSIONS))
for round in $(seq "$ROUNDS"); do
  echo "round $round (load $(cut -d' ' -f1 /proc/loadavg))"
  timed postfix_pair_reuse "$REUSE_MSGS" smtp-source -d -s "$SESSIONS" -m "$REUSE_MSGS" -l 1024 \
    -f a@x.test -t b@y.test "127.0.0.1:$PF_PORT"
  timed ringmta_pair_reuse $((PER * SESSIONS)) "$BLAST" --quiet --target "$RINGMTA_SINK" \
    --sessions "$SESSIONS" --messages-per-session "$PER" --concurrency "$SESSIONS" --size 1024
  timed ringmta_pair_reuse_bdat $((PER * SESSIONS)) "$BLAST" --quiet --target "$RINGMTA_SINK" \
    --sessions "$SESSIONS" --messages-per-session "$PER" --concurrency "$SESSIONS" --size 1024 \
    --bdat
  timed postfix_pair_conn "$CONN_MSGS" smtp-source -s "$SESSIONS" -m "$CONN_MSGS" -l 1024 \
    -f a@x.test -t b@y.test "127.0.0.1:$PF_PORT"
  timed ringmta_pair_conn "$CONN_MSGS" "$BLAST" --quiet --target "$RINGMTA_SINK" \
    --sessions "$CONN_MSGS" --concurrency "$SESSIONS" --size 1024
  "$W/ceiling" client "$CEIL_PORT" "$SESSIONS" "$CEILING_SECONDS" | sed 's/^/ceiling_conn /' | tee -a "$W/results"
  timed blast_to_smtp_sink_reuse $((PER * SESSIONS)) "$BLAST" --quiet --target \
    "127.0.0.1:$PF_PORT" --sessions "$SESSIONS" --messages-per-session "$PER" \
    --concurrency "$SESSIONS" --size 1024
  timed smtp_source_to_ringmta_sink_reuse "$REUSE_MSGS" smtp-source -d -s "$SESSIONS" \
    -m "$REUSE_MSGS" -l 1024 -f a@x.test -t b@y.test "$RINGMTA_SINK"
  timed blast_to_smtp_sink_conn "$CONN_MSGS" "$BLAST" --quiet --target "127.0.0.1:$PF_PORT" \
    --sessions "$CONN_MSGS" --concurrency "$SESSIONS" --size 1024
  timed smtp_source_to_ringmta_sink_conn "$CONN_MSGS" smtp-source -s "$SESSIONS" \
    -m "$CONN_MSGS" -l 1024 -f a@x.test -t b@y.test "$RINGMTA_SINK"
done
echo "load after: $(uptime)"
python3 - "$W/results" <<'PY'
import statistics, sys
rates = {}
for line in open(sys.argv[1]):
    name, value = line.split()
    rates.setdefault(name, []).append(float(value))
med = {k: statistics.median(v) for k, v in rates.items()}
print("\nmedians (msg/s; ceiling: connect/greet/close cycles/s):")
for k, v in rates.items():
    print(f"  {k:36} {med[k]:>9.0f}   rounds: {' '.join(f'{x:.0f}' for x in v)}")
print(f"\nconnection reuse:   ringmta pair / postfix pair = {med['ringmta_pair_reuse'] / med['postfix_pair_reuse']:.2f}x (target >= 3)")
print(f"one msg per conn:   ringmta pair / postfix pair = {med['ringmta_pair_conn'] / med['postfix_pair_conn']:.2f}x (target >= 1.3)")
print(f"                    ringmta pair / trivial ceiling = {med['ringmta_pair_conn'] / med['ceiling_conn']:.2f}")
PY
if [ "$MILLION" = 1 ]; then
  echo; echo "1,000,000 sessions against ringmta-sink (load $(cut -d' ' -f1 /proc/loadavg)):"
  /usr/bin/time -f "blast cpu: user %U s, system %S s, wall %e s" \
    timeout 300 "$BLAST" --quiet --target "$RINGMTA_SINK" --sessions 1000000 --concurrency 100 \
    --size 1024 --duration 175s
  echo "load after: $(uptime)"
fi
kill -TERM "${PIDS[0]}"; wait "${PIDS[0]}" || true
tail -1 "$W/sink.out"
