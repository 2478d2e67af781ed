#!/usr/bin/env bash
# What the metrics cost (issue 15 item 8): the gateway with metrics (default) and with
# --no-metrics, alternating, ROUNDS rounds each: login rate (`loadgen connect`) and
# group fan-out throughput (`loadgen multicast` with lean raw-protocol subscribers, so
# the gateway rather than the load side sets the pace; FANOUT_RATE publishes/s to
# MEMBERS members, by default close to what one core delivers). Each figure is reported
# twice: the rate, and the gateway's CPU seconds per unit of work (per login,
# per million deliveries), which does not depend on which side was the bottleneck. Needs fixed ports: run it in a network
# namespace and under the bench lock:
#   flock /work/bench.lock unshare -n bash -c 'ip link set lo up; benches/metrics-cost.sh'
# Output: one JSON line per run in $OUT/{connect,fanout}-{on,off}.jsonl.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-target/metrics-cost}
ROUNDS=${ROUNDS:-3}
CONNS=${CONNS:-10000}
MEMBERS=${MEMBERS:-10000}
FANOUT_RATE=${FANOUT_RATE:-250}
FANOUT_SECONDS=${FANOUT_SECONDS:-8}
mkdir -p "$OUT"
rm -f "$OUT"/*.jsonl
LG=(taskset -c 1 target/release/loadgen --quiet --source-ips 127.0.0.2-127.0.0.40)
# shellcheck source=benches/lib.sh
source benches/lib.sh
date -u +"%Y-%m-%dT%H:%M:%SZ" >"$OUT/date"
for round in $(seq "$ROUNDS"); do
    for mode in on off; do
        flag=()
        [ "$mode" = off ] && flag=(--no-metrics)
        taskset -c 0 target/release/gateway "${BENCH_GATEWAY_ARGS[@]}" "${flag[@]}" \
            >"$OUT/gateway-$mode.log" 2>&1 &
        PID=$!
        wait_port 127.0.0.1 7180
        echo "== round $round, metrics $mode" >&2
        "${LG[@]}" --server-pid "$PID" connect --connections "$CONNS" --rate 50000 --hold 0.5 \
            | tail -1 >>"$OUT/connect-$mode.jsonl"
        "${LG[@]}" --server-pid "$PID" --target raw://127.0.0.1:7100 --publishers 16 \
            multicast --members "$MEMBERS" --groups 1 \
            --messages $((FANOUT_RATE * FANOUT_SECONDS)) --rate "$FANOUT_RATE" \
            | tail -1 >>"$OUT/fanout-$mode.jsonl"
        if [ "$mode" = on ]; then
            curl -sf 127.0.0.1:7180/metrics >"$OUT/scrape.txt" || true
        fi
        kill -TERM "$PID"
        wait "$PID" || true
        PID=""
        sleep 2
    done
done
python3 - "$OUT" <<'PY'
import json, statistics, sys
out = sys.argv[1]
def runs(name):
    return [json.loads(l) for l in open(f"{out}/{name}.jsonl") if l.strip()]
def phase(r):
    return (r.get("phases") or [r])[0]
# CPU cost per unit: gateway CPU seconds per 1,000 logins / per million deliveries.
for kind, per, unit in [("connect", 1e6, "CPU us per login"), ("fanout", 1e6, "CPU s per M deliveries")]:
    on = [phase(r) for r in runs(f"{kind}-on")]
    off = [phase(r) for r in runs(f"{kind}-off")]
    rate_on = [p["throughput_per_s"] for p in on]
    rate_off = [p["throughput_per_s"] for p in off]
    m_on, m_off = statistics.median(rate_on), statistics.median(rate_off)
    print(f"{kind}: on {m_on:,.0f}/s (runs {[round(x) for x in rate_on]}), "
          f"off {m_off:,.0f}/s (runs {[round(x) for x in rate_off]}), on/off {m_on / m_off:.3f}")
    cost_on = [p["server_cpu_s"] / max(1, p["received"] if kind == "fanout" else p["established"]) * per for p in on]
    cost_off = [p["server_cpu_s"] / max(1, p["received"] if kind == "fanout" else p["established"]) * per for p in off]
    c_on, c_off = statistics.median(cost_on), statistics.median(cost_off)
    print(f"{kind}: {unit}: on {c_on:.3f} (runs {[round(x, 3) for x in cost_on]}), "
          f"off {c_off:.3f} (runs {[round(x, 3) for x in cost_off]}), on/off {c_on / c_off:.3f}")
PY
