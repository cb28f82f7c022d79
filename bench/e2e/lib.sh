# Helpers shared by the shell benchmarks of bench/e2e (sourced, not run).
free_port() {  # a TCP port free on 127.0.0.1 right now
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
now() { date +%s.%N; }
rate() {  # rate COUNT T0 T1: COUNT per second between the two `now` readings
  python3 -c "import sys; print(f'{int(sys.argv[1])/(float(sys.argv[3])-float(sys.argv[2])):.0f}')" \
    "$@"
}
