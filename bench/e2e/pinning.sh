#!/usr/bin/env bash
# --pin-threads: durable accept rate with the client on the same host, pinned against unpinned,
# alternating in one run (the machine may be busy: only side-by-side ratios count).
# Postfix's smtp-source (SESSIONS parallel sessions, MSGS messages of SIZE bytes) drives
# ringmta (fdatasync, spool on /var/tmp) in three placements:
#   shared    ringmta --shards 2 and the client on every CPU (the issue's case: an injector
#             beside its MTA on 2 cores)
#   spare     ringmta --shards 1 on every CPU: the shard leaves a core free
#   reserved  ringmta --shards 1 under taskset -c 1, the client under taskset -c 0: a CPU set
#             reserved for ringmta (what --pin-threads auto pins on)
# usage: bench/e2e/pinning.sh [MSGS=30000] [SESSIONS=50] [SIZE=1024]
#   ROUNDS=2 RINGMTA=build/src/ringmta PLACEMENTS="shared spare reserved" EXTRA_FLAGS=(ringmta)
set -euo pipefail
MSGS=${1:-30000}; SESS=${2:-50}; SIZE=${3:-1024}
cd "$(dirname "$0")/../.."
RINGMTA=${RINGMTA:-build/src/ringmta}
ROUNDS=${ROUNDS:-2}
WORK=$(mktemp -d /var/tmp/ringmta-pinning-XXXXXX)
SOURCE=$(command -v smtp-source || echo /usr/sbin/smtp-source)
ROOT_FLAG=""; [ "$(id -u)" != 0 ] || ROOT_FLAG=--allow-root  # a benchmark, not a deployment
pid=""
cleanup() { [ -z "$pid" ] || kill "$pid" 2>/dev/null || true; wait 2>/dev/null; rm -rf "$WORK"; }
trap cleanup EXIT

source bench/e2e/lib.sh  # free_port, now, rate

# run PLACEMENT PIN: prints msg/s
run() {
  local placement=$1 pin=$2 shards=2 server_cpus="" client_cpus="" port t0 t1
  case "$placement" in
    spare) shards=1 ;;
    reserved) shards=1; server_cpus="taskset -c 1"; client_cpus="taskset -c 0" ;;
  esac
  port=$(free_port)
  rm -rf "$WORK/spool"
  $server_cpus "$RINGMTA" --listen "127.0.0.1:$port" --admin-listen 127.0.0.1:0 \
    --spool "$WORK/spool" --resolver 127.0.0.1:9 --shards "$shards" --pin-threads "$pin" \
    --max-sessions-per-client 100000 --log-format json $ROOT_FLAG ${EXTRA_FLAGS:-} \
    >/dev/null 2>"$WORK/ringmta.err" &
  pid=$!
  sleep 1
  t0=$(now)
  timeout 600 $client_cpus "$SOURCE" -s "$SESS" -m "$MSGS" -l "$SIZE" -f a@client.test \
    -t b@example.com "127.0.0.1:$port" 2>>"$WORK/source.err"
  t1=$(now)
  kill -TERM "$pid"; wait "$pid" 2>/dev/null || true; pid=""
  rate "$MSGS" "$t0" "$t1"
}

# What --pin-threads auto decides in a placement (a start without load, the log record).
auto_choice() {
  local placement=$1 server_cpus="" shards=2 out
  case "$placement" in
    spare) shards=1 ;;
    reserved) shards=1; server_cpus="taskset -c 1" ;;
  esac
  rm -rf "$WORK/spool"
  out=$(timeout 3 $server_cpus "$RINGMTA" --listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 \
        --spool "$WORK/spool" --shards "$shards" --log-format json $ROOT_FLAG 2>&1 || true)
  echo "$out" | grep -m1 '"cpu_pinning"' | sed 's/.*"detail":"\([^"]*\)".*/\1/'
}

echo "# $(date -Is) $(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg); msgs=$MSGS sessions=$SESS size=$SIZE"
for placement in ${PLACEMENTS:-shared spare reserved}; do
  best_pinned=0; best_unpinned=0
  for round in $(seq "$ROUNDS"); do
    p=$(run "$placement" true); u=$(run "$placement" false)
    echo "$placement round $round: pinned $p msg/s, unpinned $u msg/s (load $(cut -d' ' -f1 /proc/loadavg))"
    [ "$p" -gt "$best_pinned" ] && best_pinned=$p
    [ "$u" -gt "$best_unpinned" ] && best_unpinned=$u
  done
  echo "$placement: best pinned $best_pinned, unpinned $best_unpinned msg/s;" \
       "pinned/unpinned = $(python3 -c "print(f'{$best_pinned/$best_unpinned:.2f}')");" \
       "auto: $(auto_choice "$placement")"
done
[ -s "$WORK/source.err" ] && { echo "smtp-source errors:"; sort "$WORK/source.err" | uniq -c | head; }
true
