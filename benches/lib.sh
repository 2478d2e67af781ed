# Shared helpers for the whole-system bench scripts (sourced, not run).
# The caller sets PID to the server it started; stop_server runs on exit.

PID=""

# The gateway as the single-node benches run it: TCP only (plus HTTP), and no accept-rate
# limit, which would refuse a bench's connect burst with `try_later`.
BENCH_GATEWAY_ARGS=(--ws off --quic off --max-accept-rate off)

stop_server() {
    if [ -n "$PID" ]; then kill "$PID" 2>/dev/null || true; wait "$PID" 2>/dev/null || true; fi
    PID=""
}
trap stop_server EXIT

wait_port() { # host port
    for _ in $(seq 100); do
        if (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; then return 0; fi
        sleep 0.1
    done
    echo "server did not listen on $1:$2" >&2
    exit 1
}
