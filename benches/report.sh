#!/usr/bin/env bash
# Reproduces the benchmark report in docs/BENCHMARKS.md ("Report against peers"):
#   1. idle memory per connection at 15,000 connections (TCP, WS, QUIC) and the baseline;
#   2. connect and login rate;
#   3. group fan-out, 1 publisher, 10,000 members, 100-byte payloads, publish rate stepped
#      1..200 msgs/s, against the longconn gateway, nats-server and mosquitto;
#   4. batched unicast pushes/s; 5. upstream request RPS through the echo backend.
# The server under test runs on core 0 (taskset -c 0), the load on core 1.
# Needs nats-server and mosquitto (apt-get install -y nats-server mosquitto).
# Environment: OUT (target/report), STEPS ("1 5 10 20 50 100 200"), STEP_S (10),
# MEMBERS (10000), SKIP_IDLE=1 to skip part 1, SYSTEMS ("longconn longconn-sdk nats
# mosquitto"), PUBLISHERS (16: HTTP publishes in flight for longconn; one connection
# cannot offer more than ~1 / RTT publishes/s).
# The longconn rows are measured with loadgen's lean raw-protocol subscribers
# (`--target raw://...`, docs/LOADGEN.md), which cost the load side about what the
# peers' raw clients cost, so the figures measure the server; `longconn-sdk` (the
# "longconn (SDK)" rows) is the same gateway read by the full client SDK
# (`--target tcp://...`), as a second row. Batched unicast is measured both ways too.
# `--quick` (the regression guard, under 3 minutes once built): idle memory over TCP only,
# no part 2, fan-out at 10 and 100 msgs/s for 5 s each against longconn and nats-server.
set -euo pipefail
cd "$(dirname "$0")/.."
QUICK=0
case "${1:-}" in
    --quick) QUICK=1 ;;
    "") ;;
    *) echo "usage: benches/report.sh [--quick]" >&2; exit 2 ;;
esac
if [ "$QUICK" = 1 ]; then
    OUT=${OUT:-target/report-quick}
    STEPS=${STEPS:-"10 100"}
    STEP_S=${STEP_S:-5}
    SYSTEMS=${SYSTEMS:-"longconn nats"}
    IDLE_TRANSPORTS=${IDLE_TRANSPORTS:-tcp}
else
    OUT=${OUT:-target/report}
    STEPS=${STEPS:-"1 5 10 20 50 100 200"}
    STEP_S=${STEP_S:-10}
    SYSTEMS=${SYSTEMS:-"longconn longconn-sdk nats mosquitto"}
    IDLE_TRANSPORTS=${IDLE_TRANSPORTS:-"tcp ws quic"}
fi
MEMBERS=${MEMBERS:-10000}
PUBLISHERS=${PUBLISHERS:-16}
mkdir -p "$OUT"
rm -f "$OUT"/*.jsonl
cargo build --release -p longconn-gateway --bin gateway -p longconn-loadgen --bin loadgen \
    -p longconn-benches --bin idle-memory
LG=(taskset -c 1 target/release/loadgen --quiet --source-ips 127.0.0.2-127.0.0.40 --publishers "$PUBLISHERS")
# shellcheck source=benches/lib.sh
source benches/lib.sh # (the working directory is the repository root here)

start_server() { # system
    case "$1" in
        longconn)
            taskset -c 0 target/release/gateway "${BENCH_GATEWAY_ARGS[@]}" >"$OUT/gateway.log" 2>&1 &
            PID=$!; wait_port 127.0.0.1 7180; TARGET=raw://127.0.0.1:7100 ;;
        longconn-sdk) # the same gateway, read by the client SDK
            start_server longconn; TARGET=tcp://127.0.0.1:7100 ;;
        nats)
            taskset -c 0 nats-server -a 127.0.0.1 -p 4222 >"$OUT/nats.log" 2>&1 &
            PID=$!; wait_port 127.0.0.1 4222; TARGET=nats://127.0.0.1:4222 ;;
        mosquitto)
            printf 'listener 1883 127.0.0.1\nallow_anonymous true\nallow_duplicate_messages true\nmax_queued_messages 100000\n' \
                >"$OUT/mosquitto.conf"
            taskset -c 0 mosquitto -c "$OUT/mosquitto.conf" >"$OUT/mosquitto.log" 2>&1 &
            PID=$!; wait_port 127.0.0.1 1883; TARGET=mqtt://127.0.0.1:1883 ;;
    esac
}

date -u +"%Y-%m-%dT%H:%M:%SZ" >"$OUT/date"
echo "$STEP_S" >"$OUT/step_s"

if [ "${SKIP_IDLE:-0}" != 1 ]; then
    echo "== 1. idle memory" >&2
    rm -f "$OUT/idle.txt"
    for transport in $IDLE_TRANSPORTS; do
        target/release/idle-memory --transport "$transport" --conns 15000 | tee -a "$OUT/idle.txt"
        # TIME_WAIT; the quick mode's fan-out connects from other source addresses.
        [ "$QUICK" = 1 ] || sleep 60
    done
fi

if [ "$QUICK" != 1 ]; then
    echo "== 2. connect rate, 4. unicast, 5. requests (longconn)" >&2
    start_server longconn
    "${LG[@]}" --server-pid "$PID" connect --connections 10000 --rate 20000 --hold 1 \
        | tail -1 >>"$OUT/connect.jsonl"
    "${LG[@]}" --target raw://127.0.0.1:7100 --server-pid "$PID" unicast --devices 10000 \
        --messages 10 --rate 200000 | tail -1 >>"$OUT/unicast.jsonl"
    "${LG[@]}" --server-pid "$PID" unicast --devices 10000 --messages 10 --rate 200000 \
        | tail -1 >>"$OUT/unicast-sdk.jsonl"
    "${LG[@]}" --server-pid "$PID" request --connections 200 --requests 500 --business 1 \
        | tail -1 >>"$OUT/request.jsonl"
    stop_server
fi

echo "== 3. fan-out steps" >&2
for system in $SYSTEMS; do
    start_server "$system"
    for rate in $STEPS; do
        echo "   $system at $rate msgs/s" >&2
        "${LG[@]}" --target "$TARGET" --server-pid "$PID" multicast --members "$MEMBERS" \
            --groups 1 --messages $((rate * STEP_S)) --rate "$rate" \
            | tail -1 >>"$OUT/fanout-$system.jsonl"
    done
    stop_server
    [ "$QUICK" = 1 ] || sleep 20
done

python3 benches/report.py "$OUT"
