#!/usr/bin/env bash
# Slow consumers (issue 16 item 3): one group of MEMBERS lean raw-protocol subscribers,
# RATE publishes/s for SECONDS through the HTTP API, run twice back to back on a fresh
# gateway each: without slow members, then with SLOW of them (1 %) that stop reading
# once joined (`loadgen multicast --slow-members`: socket kept open, never read, a 4 KiB
# receive buffer). The gateway runs its slow-consumer policy `disconnect` (config
# below; `max_queued_pushes` at its default 256): a member whose queue overflows gets
# `Kick {slow_consumer}`.
#
# Gateway on core 0 (`taskset -c 0`, accept limiter off as in the other fan-out
# benches), loadgen on core 1. Per run: p50/p99 latency and reach of the reading
# members, the gateway's peak RSS (VmHWM), its disconnect counters by reason
# (/metrics), and loadgen's account of the slow members (kicked, still open, when).
#
# From the repository root (needs fixed ports, 20,000 fds, curl, python3):
#   flock /work/bench.lock unshare -n bash -c 'ip link set lo up; ulimit -n 20000; benches/slow-consumers.sh'
# Environment: OUT (target/slow-consumers), MEMBERS (10000), SLOW (MEMBERS/100), RATE
# (20), SECONDS_ (30), PAYLOAD (1000 bytes), PUBLISHERS (2), POLICY (disconnect),
# BUILD=0 to run the binaries as built.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-target/slow-consumers}
MEMBERS=${MEMBERS:-10000}
SLOW=${SLOW:-$((MEMBERS / 100))}
RATE=${RATE:-20}
SECONDS_=${SECONDS_:-30}
PAYLOAD=${PAYLOAD:-1000}
PUBLISHERS=${PUBLISHERS:-2}
POLICY=${POLICY:-disconnect}
mkdir -p "$OUT"
rm -f "$OUT"/runs.jsonl
if [ "${BUILD:-1}" = 1 ]; then
    cargo build --release -p longconn-gateway --bin gateway -p longconn-loadgen --bin loadgen
fi
printf '[session]\nslow_consumer_policy = "%s"\n' "$POLICY" >"$OUT/gateway.toml"
# shellcheck source=benches/lib.sh
source benches/lib.sh

date -u +"%Y-%m-%dT%H:%M:%SZ" | tee "$OUT/date"
messages=$((RATE * SECONDS_))
n=0
for slow in 0 "$SLOW"; do
    first=$((2 + 40 * n)); last=$((first + 37)); n=$((n + 1))
    taskset -c 0 target/release/gateway --config "$OUT/gateway.toml" "${BENCH_GATEWAY_ARGS[@]}" \
        ${LONGCONN_API_KEY:+--api-key "$LONGCONN_API_KEY"} \
        >"$OUT/gateway-$slow.log" 2>&1 &
    PID=$!
    wait_port 127.0.0.1 7180
    wait_port 127.0.0.1 7100
    run="$OUT/run-$slow.json"
    timeout $((SECONDS_ + 180)) taskset -c 1 target/release/loadgen --quiet \
        --target raw://127.0.0.1:7100 --source-ips "127.0.0.$first-127.0.0.$last" \
        --publishers "$PUBLISHERS" --payload-size "$PAYLOAD" --server-pid "$PID" \
        --drain 3 --drain-limit 20 ${LONGCONN_API_KEY:+--api-key "$LONGCONN_API_KEY"} \
        multicast --members "$MEMBERS" --groups 1 --messages "$messages" --rate "$RATE" \
        --slow-members "$slow" | tail -n 1 >"$run" || echo '{}' >"$run"
    hwm=$(awk '/VmHWM/ {print $2}' "/proc/$PID/status")
    curl -s http://127.0.0.1:7180/metrics >"$OUT/metrics-$slow.txt" || true
    python3 - "$slow" "$hwm" "$run" "$OUT/metrics-$slow.txt" >>"$OUT/runs.jsonl" <<'EOF'
import json, re, sys
slow, hwm, path, metrics = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
s = json.load(open(path))
p = (s.get("phases") or [s])[0]
disc = {}
for line in open(metrics):
    m = re.match(r'longconn_disconnects_total\{([^}]*)\} (\S+)', line)
    if m:
        reason = re.search(r'reason="([^"]*)"', m.group(1)).group(1)
        disc[reason] = disc.get(reason, 0) + float(m.group(2))
print(json.dumps({"slow": slow, "peak_rss_kb": hwm, "disconnects": {k: int(v) for k, v in disc.items() if v},
                  **{k: p.get(k) for k in ("sent", "received", "expected", "reach_rate", "latency_us",
                                           "publish_rtt_us", "server_cpu_s", "slow_members", "errors")}}))
EOF
    stop_server
    sleep 5
done
python3 - "$OUT/runs.jsonl" <<'EOF'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
print("| slow members | publishes sent | reach (reading members) | p50 / p99 ms | publish RTT p50 / p99 ms"
      " | server CPU s | gateway peak RSS MB | disconnects by reason (gateway) | slow members: kicked / closed otherwise / still open / closed after s (first, median, last) |")
print("|---|---|---|---|---|---|---|---|---|")
for r in rows:
    lat, rtt, sm = r["latency_us"] or {}, r["publish_rtt_us"] or {}, r.get("slow_members") or {}
    when = sm.get("closed_after_s")
    print(f"| {r['slow']} | {r['sent'] or 0:,} | {r['reach_rate'] or 0:.4f}"
          f" | {lat.get('p50', 0) / 1000:,.1f} / {lat.get('p99', 0) / 1000:,.1f}"
          f" | {rtt.get('p50', 0) / 1000:,.1f} / {rtt.get('p99', 0) / 1000:,.1f}"
          f" | {r.get('server_cpu_s') or 0:.1f} | {r['peak_rss_kb'] / 1024:,.0f} | {r['disconnects'] or '-'}"
          f" | {sm.get('slow_consumer_kicks', '-')} / {sm.get('other_closes', '-')} / {sm.get('still_open', '-')}"
          f" / {', '.join(f'{x:.1f}' for x in when) if when else '-'} |")
if len(rows) == 2:
    a, b = rows[0]["latency_us"]["p99"], rows[1]["latency_us"]["p99"]
    print(f"p99 with slow members / without: {b / a:.2f}" if a else "no baseline p99")
EOF
