#!/usr/bin/env bash
# What the metrics cost (issue 15 item 8): the gateway with metrics (default) and with
# --no-metrics, alternating, ROUNDS rounds each: login rate (`loadgen connect`) and
# group fan-out throughput (`loadgen multicast`, offered above what the machine
# delivers so the figure is the ceiling). Needs fixed ports: run it in a network
# namespace and under the bench lock:
#   flock /work/bench.lock unshare -n bash -c 'ip link set lo up; benches/metrics-cost.sh'
# Output: one JSON line per run in $OUT/{connect,fanout}-{on,off}.jsonl.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-target/metrics-cost}
ROUNDS=${ROUNDS:-3}
CONNS=${CONNS:-10000}
MEMBERS=${MEMBERS:-10000}
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
        taskset -c 0 target/release/gateway --ws off --quic off --max-accept-rate off "${flag[@]}" \
            >"$OUT/gateway-$mode.log" 2>&1 &
        PID=$!
        wait_port 127.0.0.1 7180
        echo "== round $round, metrics $mode" >&2
        "${LG[@]}" --server-pid "$PID" connect --connections "$CONNS" --rate 50000 --hold 0.5 \
            | tail -1 >>"$OUT/connect-$mode.jsonl"
        "${LG[@]}" --server-pid "$PID" multicast --members "$MEMBERS" --groups 1 \
            --messages 100 --rate 20 | tail -1 >>"$OUT/fanout-$mode.jsonl"
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
for kind, key in [("connect", "throughput_per_s"), ("fanout", "throughput_per_s")]:
    on = [r[key] for r in runs(f"{kind}-on")]
    off = [r[key] for r in runs(f"{kind}-off")]
    m_on, m_off = statistics.median(on), statistics.median(off)
    print(f"{kind}: on {m_on:,.0f}/s (runs {[round(x) for x in on]}), "
          f"off {m_off:,.0f}/s (runs {[round(x) for x in off]}), on/off {m_on / m_off:.3f}")
PY
