#!/usr/bin/env bash
# Reconnect storm (issue 16 item 2): CLIENTS TCP clients (the Rust SDK, in PROCS loadgen
# worker processes, source addresses 127.0.0.2-127.0.0.40) hold their connections; at
# KILL_AT seconds after loadgen started the gateway is SIGKILLed and restarted DOWN
# seconds later on the same ports. The gateway's accept limiter stays ON (its default,
# 5000 connections/s: excess connects get `Close {try_later}` with a delay, which the
# SDK waits plus jitter), unlike the other bench scripts.
#
# Gateway on core 0 (`taskset -c 0`), loadgen on core 1. While the clients come back,
# the gateway's /healthz connection count is polled every 100 ms. Prints: time from the
# restart to all back (by /healthz, and by loadgen's timeline), the peak connect rate,
# the try_later refusals, and the connects per second after the restart (loadgen's
# `connect_timeline`, logins per 100 ms over all workers).
#
# From the repository root (needs fixed ports, 20,000 fds, curl, python3):
#   flock /work/bench.lock unshare -n bash -c 'ip link set lo up; ulimit -n 20000; benches/reconnect-storm.sh'
# Environment: OUT (target/reconnect-storm), CLIENTS (15000), PROCS (3), RATE (4000,
# the initial ramp, connects/s), HOLD (60), KILL_AT (15), DOWN (1), BUILD=0 to run the
# binaries as built.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-target/reconnect-storm}
CLIENTS=${CLIENTS:-15000}
PROCS=${PROCS:-3}
RATE=${RATE:-4000}
HOLD=${HOLD:-60}
KILL_AT=${KILL_AT:-15}
DOWN=${DOWN:-1}
mkdir -p "$OUT"
if [ "${BUILD:-1}" = 1 ]; then
    cargo build --release -p longconn-gateway --bin gateway -p longconn-loadgen --bin loadgen
fi
# shellcheck source=benches/lib.sh
source benches/lib.sh

start_gateway() { # log file
    taskset -c 0 target/release/gateway --ws off --quic off \
        ${LONGCONN_API_KEY:+--api-key "$LONGCONN_API_KEY"} >"$1" 2>&1 &
    PID=$!
}
connections() {
    curl -s --max-time 0.5 http://127.0.0.1:7180/healthz |
        python3 -c 'import json,sys; print(json.load(sys.stdin)["connections"])' 2>/dev/null || echo 0
}

date -u +"%Y-%m-%dT%H:%M:%SZ" | tee "$OUT/date"
start_gateway "$OUT/gateway-1.log"
wait_port 127.0.0.1 7100
wait_port 127.0.0.1 7180
taskset -c 1 target/release/loadgen --quiet --procs "$PROCS" \
    --target tcp://127.0.0.1:7100 --source-ips 127.0.0.2-127.0.0.40 \
    connect --connections "$CLIENTS" --rate "$RATE" --hold "$HOLD" \
    >"$OUT/loadgen.out" 2>"$OUT/loadgen.err" &
LG=$!
sleep "$KILL_AT"
before=$(connections)
echo "connected before the kill: $before"
kill -9 "$PID"; wait "$PID" 2>/dev/null || true; PID=""
killed_ms=$(date +%s%3N)
sleep "$DOWN"
start_gateway "$OUT/gateway-2.log"
restart_ms=$(date +%s%3N)
: >"$OUT/healthz.tsv"
back_ms=""
for _ in $(seq 1200); do # at most 120 s
    now=$(date +%s%3N); n=$(connections)
    printf '%s\t%s\n' "$((now - restart_ms))" "$n" >>"$OUT/healthz.tsv"
    if [ "$n" -ge "$CLIENTS" ]; then back_ms=$now; break; fi
    sleep 0.1
done
hwm=$(awk '/VmHWM/ {print $2}' "/proc/$PID/status")
wait "$LG" || echo "loadgen exited with $?"
tail -n 1 "$OUT/loadgen.out" >"$OUT/summary.json"
python3 - "$OUT/summary.json" "$killed_ms" "$restart_ms" "${back_ms:-0}" "$CLIENTS" "$before" "$hwm" <<'EOF'
import json, sys
s = json.load(open(sys.argv[1]))
killed, restart, back, clients, before, hwm = (int(x) for x in sys.argv[2:])
p = (s.get("phases") or [s])[0]
t, r = p.get("connect_timeline"), p.get("recovery") or {}
print(f"clients {clients}, connected before the kill {before}, gateway down {(restart - killed) / 1000:.1f} s")
print(f"/healthz: all {clients} back {(back - restart) / 1000:.1f} s after the restart" if back
      else "/healthz: NOT all back within 120 s")
print(f"loadgen: lost {r.get('lost')} of {r.get('before')}, all back after the loss: "
      f"{r.get('all_back_after_s')} s; peak {r.get('peak_connects_per_s')} logins/s "
      f"(1 s window), {r.get('peak_bucket_per_s')}/s in the busiest 100 ms; "
      f"try_later refusals {r.get('try_later')}; reconnects {p.get('reconnects')}; "
      f"connected at end {p.get('connected_at_end')}; gateway VmHWM {hwm / 1024:.0f} MB")
if t:
    o, b = t["origin_unix_ms"], t["bucket_ms"]
    if r.get("all_back_at_s") is not None:
        print(f"loadgen: all back {(o + r['all_back_at_s'] * 1000 - restart) / 1000:.1f} s after the restart")
    first = max(0, (restart - o) // b - 10)  # from 1 s before the restart
    last = min(len(t["logins"]), first + 20 * (1000 // b))
    print("connects per 100 ms from 1 s before the restart (logins / try_later):")
    for i in range(first, last, 10):
        row = " ".join(f"{t['logins'][j]:>4}/{t['try_later'][j]:<3}" for j in range(i, min(i + 10, last)))
        print(f"  t={(o + i * b - restart) / 1000:+5.1f}s  {row}")
    per_s = [sum(t["logins"][i:i + 10]) for i in range(first, len(t["logins"]), 10)]
    print("logins per second from 1 s before the restart:", per_s[:20])
EOF
