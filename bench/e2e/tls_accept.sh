#!/usr/bin/env bash
# Accept rate with STARTTLS, side by side in one run, all driven by ringmta-blast --starttls
# (smtp-source has no TLS): SIZE-byte bodies, PER messages per connection, SESS connections:
#   sink     ringmta-sink --tls-cert (stores nothing: the TLS blast->sink ceiling)
#   ringmta  durable (fdatasync before 250), spool on /var/tmp, 2 shards
#   postfix  a private Postfix (tests/integration/tools/postfix_instance.sh) with
#            smtpd_tls_security_level=may and the same certificate, relaying to a plain sink
# The three alternate ROUNDS times; the best round of each is reported, with the ratios.
# Then inbound handshakes over sockets: ringmta with only an ECDSA P-256 or only an RSA-2048
# certificate, one message per connection, full (--no-tls-resume) and resumed handshakes:
# handshakes/s and ringmta's CPU per handshake (utime+stime from /proc over the run).
# usage: bench/e2e/tls_accept.sh [MSGS=20000] [SESS=50] [SIZE=1k] [PER=1]
#   BUILD=build  ROUNDS=2  HANDSHAKES=1 (0 skips the handshake part)
set -euo pipefail
MSGS=${1:-20000}; SESS=${2:-50}; SIZE=${3:-1k}; PER=${4:-1}
cd "$(dirname "$0")/../.."
BUILD=${BUILD:-build}
ROUNDS=${ROUNDS:-2}
RINGMTA=$BUILD/src/ringmta; BLAST=$BUILD/tools/blast/ringmta-blast
ROOT_FLAG=""; [ "$(id -u)" != 0 ] || ROOT_FLAG=--allow-root  # a benchmark, not a deployment
SINK=$BUILD/tools/sink/ringmta-sink
WORK=$(mktemp -d /var/tmp/ringmta-tls-accept-XXXXXX)
chmod 755 "$WORK"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  bash tests/integration/tools/postfix_instance.sh stop "$WORK/pf" 2>/dev/null || true
  wait 2>/dev/null; rm -rf "$WORK"
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
/usr/bin/python3 - "$WORK" <<'PY' >/dev/null
import sys; sys.path.insert(0, "tests/integration/daemon"); import tls_pki; tls_pki.make(sys.argv[1])
PY
CERTS=(--tls-cert "$WORK/ecdsa.pem" --tls-key "$WORK/ecdsa.key")

# blast --starttls against $1 with $2 messages; prints "msg/s handshakes resumed failures".
load() {
  local sessions=$(( $2 / PER ))
  timeout 600 "$BLAST" --target "127.0.0.1:$1" --starttls --sessions "$sessions" \
    --messages-per-session "$PER" --concurrency "$SESS" --size "$SIZE" --threads 2 --no-pin \
    --json --quiet ${BLAST_ARGS:-} > "$WORK/blast.json" || true
  python3 -c 'import json, sys; r = json.load(open(sys.argv[1])); t = r["tls"]
print(round(r["rates"]["messages_per_s"]), t["handshakes"], t["resumed"], t["failures"],
      r["messages"]["accepted"])' "$WORK/blast.json"
}

run_sink() {
  "$SINK" --listen 127.0.0.1:0 --threads 2 --no-pin --ready-file "$WORK/sink.ready" \
    "${CERTS[@]}" >/dev/null 2>&1 & local pid=$!; pids+=("$pid")
  while [ ! -s "$WORK/sink.ready" ]; do sleep 0.05; done
  local port; port=$(cut -d: -f2 "$WORK/sink.ready" | head -1); rm -f "$WORK/sink.ready"
  load "$port" "$MSGS"
  kill "$pid"; wait "$pid" 2>/dev/null || true
}

start_ringmta() {  # $@: certificate flags; sets RPORT, RPID
  RPORT=$(free_port); rm -rf "$WORK/spool"
  "$RINGMTA" --listen "127.0.0.1:$RPORT" --admin-listen 127.0.0.1:0 --spool "$WORK/spool" \
    --resolver 127.0.0.1:9 --shards 2 --pin-threads false --max-sessions-per-client 100000 \
    --log-format text $ROOT_FLAG "$@" >/dev/null 2>"$WORK/ringmta.err" & RPID=$!; pids+=("$RPID")
  sleep 1
}

run_ringmta() {
  start_ringmta "${CERTS[@]}"
  load "$RPORT" "$MSGS"
  kill -TERM "$RPID"; wait "$RPID" 2>/dev/null || true
}

run_postfix() {
  local relay sink_pid port
  "$SINK" --listen 127.0.0.1:0 --threads 1 --no-pin --ready-file "$WORK/pfsink.ready" \
    >/dev/null 2>&1 & sink_pid=$!; pids+=("$sink_pid")
  while [ ! -s "$WORK/pfsink.ready" ]; do sleep 0.05; done
  relay=$(cut -d: -f2 "$WORK/pfsink.ready" | head -1); rm -f "$WORK/pfsink.ready"
  port=$(free_port)
  cat > "$WORK/pf.cf" <<CF
smtpd_tls_security_level = may
smtpd_tls_cert_file = $WORK/ecdsa.pem
smtpd_tls_key_file = $WORK/ecdsa.key
default_process_limit = 200
CF
  bash tests/integration/tools/postfix_instance.sh start "$WORK/pf" "$port" "$relay" \
    "$WORK/pf.cf" >/dev/null
  sleep 1
  load "$port" "$(( MSGS / 4 ))"   # Postfix is slower: fewer messages, the same rate measure
  bash tests/integration/tools/postfix_instance.sh stop "$WORK/pf"
  kill "$sink_pid"; wait "$sink_pid" 2>/dev/null || true
  rm -rf "$WORK/pf"
}

echo "# $(date -Is) $(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg); msgs=$MSGS sessions=$SESS size=$SIZE per_connection=$PER, STARTTLS, ECDSA P-256"
best() { [ "${1%% *}" -gt "${2%% *}" ] && echo "$1" || echo "$2"; }
bs="0"; br="0"; bp="0"
for round in $(seq "$ROUNDS"); do
  s=$(run_sink); r=$(run_ringmta); p=$(run_postfix)
  echo "round $round (msg/s handshakes resumed failures accepted): sink $s | ringmta $r | postfix $p"
  bs=$(best "$s" "$bs"); br=$(best "$r" "$br"); bp=$(best "$p" "$bp")
done
s=${bs%% *}; r=${br%% *}; p=${bp%% *}
echo "blast->sink (TLS): $s msg/s"
echo "ringmta (TLS, fdatasync): $r msg/s = $(python3 -c "print(f'{$r/max($s,1):.2f}')")x the TLS blast->sink pair"
echo "postfix (TLS): $p msg/s; ringmta = $(python3 -c "print(f'{$r/max($p,1):.1f}')")x postfix"

[ "${HANDSHAKES:-1}" = 0 ] && exit 0
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
echo "# inbound handshakes over sockets: one message per connection, 1 KiB, $SESS connections"
for key in ecdsa rsa; do
  for resume in --no-tls-resume --tls-resume; do
    start_ringmta --tls-cert "$WORK/$key.pem" --tls-key "$WORK/$key.key"
    before=$(cpu_ticks "$RPID"); t0=$(date +%s.%N)
    out=$(PER=1 BLAST_ARGS="$resume" load "$RPORT" 5000)
    t1=$(date +%s.%N); after=$(cpu_ticks "$RPID")
    kill -TERM "$RPID"; wait "$RPID" 2>/dev/null || true
    python3 - "$key" "$resume" "$out" "$before" "$after" "$t0" "$t1" "$(getconf CLK_TCK)" <<'PY'
import sys
key, resume, out, before, after, t0, t1, hz = sys.argv[1:]
rate, handshakes, resumed, failures, accepted = map(float, out.split())
cpu_us = (int(after) - int(before)) / int(hz) * 1e6
print(f"{key:5} {'resumed' if resume == '--tls-resume' else 'full   '}: "
      f"{handshakes / (float(t1) - float(t0)):6.0f} handshakes/s, {resumed:.0f}/{handshakes:.0f} "
      f"resumed, ringmta CPU {cpu_us / max(handshakes, 1):6.0f} us per connection "
      f"(handshake + one message, fdatasync wait excluded)")
PY
  done
done
