#!/usr/bin/env bash
# Accept rate, side by side in one run: Postfix's smtp-source (SESSIONS parallel sessions, one
# message of SIZE bytes per connection, MSGS messages) against
#   smtp-sink  (Postfix's sink: stores nothing — the client/kernel ceiling),
#   ringmta    (durable: every 250 after fdatasync, spool on /var/tmp),
#   Postfix    (../shared/peers/postfix.sh, its accept rate; skipped if PEERS is not there).
# smtp-sink and ringmta alternate ROUNDS times; the best round of each is reported.
# usage: bench/e2e/accept.sh [MSGS=50000] [SESSIONS=50] [SIZE=1024]
#   RINGMTA=build/src/ringmta  ROUNDS=2  PEERS=../shared/peers  SHARDS=2  REUSE=1 (smtp-source -d)
set -euo pipefail
MSGS=${1:-50000}; SESS=${2:-50}; SIZE=${3:-1024}
cd "$(dirname "$0")/../.."
RINGMTA=${RINGMTA:-build/src/ringmta}
ROUNDS=${ROUNDS:-2}
PEERS=${PEERS:-../shared/peers}
SHARDS=${SHARDS:-2}
ROOT_FLAG=""; [ "$(id -u)" != 0 ] || ROOT_FLAG=--allow-root  # a benchmark, not a deployment
WORK=$(mktemp -d /var/tmp/ringmta-accept-XXXXXX)
SOURCE=$(command -v smtp-source || echo /usr/sbin/smtp-source)
SINK=$(command -v smtp-sink || echo /usr/sbin/smtp-sink)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null; rm -rf "$WORK"; }
trap cleanup EXIT

source bench/e2e/lib.sh  # free_port, now, rate
load() {  # $1 port; prints msg/s
  local t0 t1
  t0=$(now)
  timeout 600 "$SOURCE" ${REUSE:+-d} -s "$SESS" -m "$MSGS" -l "$SIZE" -f a@client.test \
    -t b@example.com "127.0.0.1:$1" 2>>"$WORK/source.err"
  t1=$(now)
  rate "$MSGS" "$t0" "$t1"
}

run_sink() {
  local port; port=$(free_port)
  "$SINK" -u root "127.0.0.1:$port" 1000 >/dev/null 2>&1 & local pid=$!; pids+=("$pid")
  sleep 0.5
  load "$port"
  kill "$pid"; wait "$pid" 2>/dev/null || true
}

run_ringmta() {
  local port; port=$(free_port)
  rm -rf "$WORK/spool"
  "$RINGMTA" --listen "127.0.0.1:$port" --admin-listen 127.0.0.1:0 --spool "$WORK/spool" \
    --resolver 127.0.0.1:9 \
    --shards "$SHARDS" --max-sessions-per-client 100000 --log-format text $ROOT_FLAG \
    >/dev/null 2>"$WORK/ringmta.err" & local pid=$!; pids+=("$pid")
  sleep 1
  load "$port"
  kill -TERM "$pid"; wait "$pid" 2>/dev/null || true
  local queued
  queued=$("$RINGMTA" spool ls --spool "$WORK/spool" | tail -1 | cut -d' ' -f1)
  [ "$queued" = "$MSGS" ] || echo "ringmta: WARNING: $queued of $MSGS messages in the spool" >&2
}

echo "# $(date -Is) $(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg); msgs=$MSGS sessions=$SESS size=$SIZE${REUSE:+ reuse(-d)}"
best_sink=0; best_ringmta=0
for round in $(seq "$ROUNDS"); do
  s=$(run_sink); r=$(run_ringmta)
  echo "round $round: smtp-sink $s msg/s, ringmta $r msg/s"
  [ "$s" -gt "$best_sink" ] && best_sink=$s
  [ "$r" -gt "$best_ringmta" ] && best_ringmta=$r
done
postfix=""
if [ -x "$PEERS/postfix.sh" ] && [ -z "${REUSE:-}" ]; then
  line=$("$PEERS/postfix.sh" "$MSGS" "$SESS" "$SIZE" 2>/dev/null | grep '^postfix:' || true)
  postfix=$(echo "$line" | sed -n 's/.*accepted [0-9]* msgs in [0-9.]*s = \([0-9]*\) msg\/s.*/\1/p')
  echo "$line"
fi
[ -s "$WORK/source.err" ] && { echo "smtp-source errors:"; sort "$WORK/source.err" | uniq -c | head; }
echo "smtp-sink (stores nothing): $best_sink msg/s"
echo "ringmta (fdatasync, $SHARDS shards): $best_ringmta msg/s = $(python3 -c "print(f'{$best_ringmta/$best_sink:.2f}')")x smtp-sink"
if [ -n "$postfix" ]; then
  echo "postfix (accept): $postfix msg/s; ringmta = $(python3 -c "print(f'{$best_ringmta/$postfix:.1f}')")x postfix"
fi
