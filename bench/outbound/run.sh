#!/usr/bin/env bash
# Runs outbound_bench in alternating rounds (staged, splice, copy) and prints the median of each
# mode's messages/s, body MiB/s and CPU us/message. Bounded: ROUNDS x modes x one run each.
#   bench/outbound/run.sh BUILD_DIR [SIZE MESSAGES CONNECTIONS [SINK]]
#   SINK: "smtp-sink" (default: the bench starts Postfix's smtp-sink) or "ringmta-sink"
#   (started here from BUILD_DIR/tools/sink, one thread, port chosen by the OS).
#   ROUNDS=3 MODES="staged splice copy"; the modes tls and tls-staged (STARTTLS) need
#   SINK=ringmta-sink: stunnel (protocol = smtp, a throwaway self-signed certificate) then
#   terminates TLS in front of it, and only those modes go through stunnel; or TLS_SINK=PATH,
#   a ringmta-sink that offers STARTTLS itself (--tls-cert), used for every mode.
set -euo pipefail
build=${1:?build directory}
size=${2:-1024}
messages=${3:-50000}
connections=${4:-4}
sink=${5:-smtp-sink}
rounds=${ROUNDS:-3}
modes=${MODES:-staged splice copy}
bench=$build/tests/integration/outbound/outbound_bench
[ -x "$build/bench/outbound/outbound_bench" ] && bench=$build/bench/outbound/outbound_bench

extra=()
sink_pid=
work=$(mktemp -d)
trap '[ -n "$sink_pid" ] && kill "$sink_pid" 2>/dev/null; wait 2>/dev/null; rm -rf "$work"' EXIT
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 \
  -subj /CN=sink.test -keyout "$work/key.pem" -out "$work/cert.pem" 2>/dev/null
sink_binary=$build/tools/sink/ringmta-sink
sink_tls=()
if [ -n "${TLS_SINK:-}" ]; then
  sink=ringmta-sink
  sink_binary=$TLS_SINK
  sink_tls=(--tls-cert "$work/cert.pem" --tls-key "$work/key.pem")
fi
if [ "$sink" = ringmta-sink ]; then
  "$sink_binary" --threads 1 --no-pin --listen 127.0.0.1:0 "${sink_tls[@]}" \
    --ready-file "$work/ready" >"$work/sink.log" 2>&1 &
  sink_pid=$!
  for _ in $(seq 50); do [ -s "$work/ready" ] && break; sleep 0.1; done
  extra=(--sink "$(head -1 "$work/ready")")
fi
tls_extra=("${extra[@]}")
stunnel_pid=
stunnel_needed=no
case " $modes " in *" tls"*) [ -n "${TLS_SINK:-}" ] || stunnel_needed=yes ;; esac
if [ $stunnel_needed = yes ]; then
  [ "$sink" = ringmta-sink ] || { echo "run.sh: TLS modes need SINK=ringmta-sink" >&2; exit 2; }
  tls_port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])')
  cat >"$work/stunnel.conf" <<CONF
foreground = yes
pid =
[smtp]
accept = 127.0.0.1:$tls_port
connect = $(head -1 "$work/ready")
protocol = smtp
cert = $work/cert.pem
key = $work/key.pem
CONF
  stunnel "$work/stunnel.conf" >"$work/stunnel.log" 2>&1 &
  stunnel_pid=$!
  for _ in $(seq 50); do ss -Hltn "sport = :$tls_port" | grep -q . && break; sleep 0.1; done
  tls_extra=(--sink "127.0.0.1:$tls_port")
  trap '[ -n "$sink_pid" ] && kill "$sink_pid" 2>/dev/null; kill "$stunnel_pid" 2>/dev/null
        wait 2>/dev/null; rm -rf "$work"' EXIT
fi

for round in $(seq "$rounds"); do
  for mode in $modes; do
    sink_args=("${extra[@]}")
    case $mode in tls*) sink_args=("${tls_extra[@]}") ;; esac
    "$bench" --messages "$messages" --size "$size" --connections "$connections" \
      --mode "$mode" "${sink_args[@]}" | sed -n 2p | sed "s/^/$mode /" >>"$work/results"
  done
  echo "round $round done" >&2
done

echo "size=$size messages=$messages connections=$connections sink=$sink rounds=$rounds"
for mode in $modes; do
  grep "^$mode " "$work/results" | awk -v mode="$mode" '
    { for (i = 1; i <= NF; i++) {
        if ($(i) == "messages/s,") rate[NR] = $(i - 1)
        if ($(i) == "MiB/s") mib[NR] = $(i - 1)
        if ($(i) == "us/message") cpu[NR] = $(i - 1)
      } }
    function median(a, n,   i, j, t) {
      for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (a[j] < a[i]) { t = a[i]; a[i] = a[j]; a[j] = t }
      return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
    }
    END { printf "%-10s median %8.0f messages/s %7.1f MiB/s %8.1f us CPU/message\n", mode,
          median(rate, NR), median(mib, NR), median(cpu, NR) }'
done
