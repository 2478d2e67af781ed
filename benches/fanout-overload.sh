#!/usr/bin/env bash
# Fan-out overload (issue 19): one group of 10,000 members, 100-byte payloads, publish
# rate stepped past the gateway's peak. Shows whether delivery collapses or plateaus.
#
# Per step and system: a fresh server on core 0 (`taskset -c 0`): the release gateway
# (`max_queued_pushes = 8192`) or nats-server (`-a 127.0.0.1 -p 4222`, its defaults, as
# benches/report.sh runs it); `loadgen multicast` on core 1: 10,000 subscribers (for
# the gateway lean raw-protocol ones, `--target raw://...`: plain TCP, Login with the
# development token, JoinGroup, frames read with the core codec; for nats-server
# `--target nats://...`, one subject per group), publishes through `POST
# /v1/push/groups/{group}` (nats: PUB) over PUBLISHERS connections for STEP_S seconds.
# At each rate every system runs in turn, so they share the machine's state of the
# moment. Each step uses its own source addresses, so no wait for TIME_WAIT is needed
# between steps. Prints one row per step and system.
#
# Environment: OUT (target/fanout-overload), STEPS ("100 150 200 300 400"), SYSTEMS
# ("longconn nats"), STEP_S (10), MEMBERS (10000), PUBLISHERS (4), BUILD=0 to run the
# binaries as built, PERF=1 to `perf record -g` the server for PERF_S (8) seconds of
# each step, starting PERF_DELAY (5) seconds after the loadgen starts (after the
# logins). SERVER_CPUS (0) and LOAD_CPUS (1): the `taskset -c` lists of the server and of
# loadgen (SERVER_CPUS=0,1 LOAD_CPUS=0,1 for a two-core run). The last column is the share of core 0 that niced processes (other sessions'
# builds) took during the step: a run is only comparable when it is near 0. GATEWAY
# (target/release/gateway) and LOADGEN (target/release/loadgen) pick the binaries (A/B
# runs against a saved copy, with BUILD=0). LOAD_STAT=1 runs loadgen under `perf stat`
# (task clock, recvfrom and epoll_wait calls, context switches) into
# $OUT/loadstat-SYSTEM-RATE.csv: the load side's reads per delivery. Needs nats-server
# for the nats system (apt-get install -y nats-server).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-target/fanout-overload}
STEPS=${STEPS:-"100 150 200 300 400"}
SYSTEMS=${SYSTEMS:-"longconn nats"}
STEP_S=${STEP_S:-10}
MEMBERS=${MEMBERS:-10000}
GATEWAY=${GATEWAY:-target/release/gateway}
LOADGEN=${LOADGEN:-target/release/loadgen}
PUBLISHERS=${PUBLISHERS:-4}
PERF=${PERF:-0}
PERF_S=${PERF_S:-8}
PERF_DELAY=${PERF_DELAY:-5}
SERVER_CPUS=${SERVER_CPUS:-0}
LOAD_CPUS=${LOAD_CPUS:-1}
mkdir -p "$OUT"
rm -f "$OUT"/steps.jsonl
if [ "${BUILD:-1}" = 1 ]; then
    cargo build --release -p longconn-gateway --bin gateway -p longconn-loadgen --bin loadgen
fi
printf '[session]\nmax_queued_pushes = 8192\n' >"$OUT/gateway.toml"
# shellcheck source=benches/lib.sh
source benches/lib.sh # (the working directory is the repository root here)

date -u +"%Y-%m-%dT%H:%M:%SZ" | tee "$OUT/date"
start_server() { # system rate
    case "$1" in
        longconn)
            # LONGCONN_API_KEY=ID:SECRET: the push API needs that key (--api-key).
            taskset -c "$SERVER_CPUS" "$GATEWAY" --config "$OUT/gateway.toml" "${BENCH_GATEWAY_ARGS[@]}" \
                ${LONGCONN_API_KEY:+--api-key "$LONGCONN_API_KEY"} \
                >"$OUT/gateway-$2.log" 2>&1 &
            PID=$!
            wait_port 127.0.0.1 7180
            wait_port 127.0.0.1 7100
            TARGET=raw://127.0.0.1:7100 ;;
        nats)
            taskset -c "$SERVER_CPUS" nats-server -a 127.0.0.1 -p 4222 >"$OUT/nats-$2.log" 2>&1 &
            PID=$!
            wait_port 127.0.0.1 4222
            TARGET=nats://127.0.0.1:4222 ;;
        *) echo "unknown system $1" >&2; exit 1 ;;
    esac
}

n=0
for rate in $STEPS; do
  for system in $SYSTEMS; do
    # 38 source addresses per step: 127.0.0.2-39, 127.0.0.42-79, ...
    first=$((2 + 40 * (n % 6))); last=$((first + 37)); n=$((n + 1))
    start_server "$system" "$rate"
    PERF_PID=""
    if [ "$PERF" = 1 ]; then
        (sleep "$PERF_DELAY"; perf record -e cpu-clock -F 999 -g -p "$PID" \
            -o "$OUT/perf-$system-$rate.data" -- sleep "$PERF_S" >/dev/null 2>&1) &
        PERF_PID=$!
    fi
    messages=$(python3 -c "print(int($rate * $STEP_S))")
    step="$OUT/step-$system-$rate.json"
    # Core 0's jiffies (user nice system idle): how much of it other processes took.
    cpu0_before=$(awk '$1 == "cpu0" {print $2, $3, $4, $5}' /proc/stat)
    load_wrap=()
    if [ "${LOAD_STAT:-0}" = 1 ]; then
        load_wrap=(perf stat -x, -o "$OUT/loadstat-$system-$rate.csv" -e
            task-clock,syscalls:sys_enter_recvfrom,syscalls:sys_enter_epoll_wait,context-switches --)
    fi
    timeout $((STEP_S + 120)) "${load_wrap[@]}" taskset -c "$LOAD_CPUS" "$LOADGEN" --quiet \
        --target "$TARGET" --source-ips "127.0.0.$first-127.0.0.$last" \
        --publishers "$PUBLISHERS" --server-pid "$PID" --drain 3 --drain-limit 20 \
        ${LONGCONN_API_KEY:+--api-key "$LONGCONN_API_KEY"} \
        multicast --members "$MEMBERS" --groups 1 --messages "$messages" --rate "$rate" \
        | tail -n 1 >"$step" || echo '{}' >"$step"
    hwm=$(awk '/VmHWM/ {print $2}' "/proc/$PID/status")
    cpu0_after=$(awk '$1 == "cpu0" {print $2, $3, $4, $5}' /proc/stat)
    # Share of core 0 spent in niced processes (other sessions' builds) during the step.
    niced=$(python3 -c "b='$cpu0_before'.split(); a='$cpu0_after'.split(); d=[int(x)-int(y) for x,y in zip(a,b)]; print(round(d[1]/max(1,sum(d)),3))")
    if [ -n "$PERF_PID" ]; then wait "$PERF_PID" || true; fi
    python3 - "$system" "$rate" "$hwm" "$step" "$niced" >>"$OUT/steps.jsonl" <<'EOF2'
import json, sys
system, rate, hwm, path = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
niced = float(sys.argv[5])
s = json.load(open(path))
p = (s.get("phases") or [s])[0]
print(json.dumps({"system": system, "rate": rate, "peak_rss_kb": hwm, "core0_niced": niced, **{k: p.get(k) for k in (
    "sent", "received", "expected", "errors", "reach_rate", "throughput_per_s", "latency_us",
    "publish_rtt_us", "server_cpu_s", "load_cpu_s")}}))
EOF2
    stop_server
    sleep 5
  done
done

python3 - "$OUT/steps.jsonl" "$STEP_S" "$MEMBERS" <<'EOF'
import json, sys
step_s, members = float(sys.argv[2]), int(sys.argv[3])
print("| system | publishes/s | offered deliveries/s | publishes sent | refused or failed | delivered/s"
      " | reach | p50 / p99 ms | publish RTT p50 / p99 ms | server CPU s | CPU s per M deliveries"
      " | peak RSS MB | core 0 niced |")
print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
for line in open(sys.argv[1]):
    r = json.loads(line)
    lat, rtt = r["latency_us"] or {}, r["publish_rtt_us"] or {}
    cpu, got = r["server_cpu_s"] or 0, r["received"] or 0
    per_m = cpu / (got / 1e6) if got else float("nan")
    print(f"| {r['system']} | {r['rate']} | {r['rate'] * members:,}"
          f" | {r['sent'] or 0:,} of {int(r['rate'] * step_s):,} | {r.get('errors') or 0:,}"
          f" | {r['throughput_per_s'] or 0:,.0f} | {r['reach_rate'] or 0:.3f}"
          f" | {lat.get('p50', 0) / 1000:,.0f} / {lat.get('p99', 0) / 1000:,.0f}"
          f" | {rtt.get('p50', 0) / 1000:,.1f} / {rtt.get('p99', 0) / 1000:,.1f}"
          f" | {cpu:.1f} | {per_m:.2f} | {r['peak_rss_kb'] / 1024:,.0f}"
          f" | {r.get('core0_niced', 0):.0%} |")
EOF
