#!/usr/bin/env bash
# Soak (issue 16 item 7): the release gateway (core 0) under DURATION seconds of churn
# from `soak-churn` (core 1): a resident pool of SDK clients (TCP and WebSocket), clients
# replaced, group leaves/joins, unicast pushes and group publishes (HTTP API), echo
# requests, kicks. Every INTERVAL seconds: the gateway's VmRSS, open fds
# (/proc/PID/fd), alive tokio tasks (`longconn_runtime_alive_tasks`) and sessions online
# (/metrics). At the end the churn closes every client; once the sessions are gone the
# tasks and fds are compared with the idle gateway's, and the RSS trend after the
# warm-up is fitted (least squares). Needs fixed ports: run it in a network namespace
# and under the bench lock:
#   cargo build --release -p longconn-gateway --bin gateway -p longconn-benches --bin soak-churn
#   flock /work/bench.lock unshare -n bash -c \
#       'ip link set lo up; ulimit -n 20000; DURATION=1800 benches/soak.sh'
# Knobs (environment): DURATION (1800), INTERVAL (60), WARMUP (minutes left out of the
# trend, 5), CHURN_ARGS (extra soak-churn flags, e.g. "--resident 1000").
# Output in $OUT (target/soak): samples.jsonl, churn.log, gateway.log, summary.json; the
# last lines printed are the verdict, PASS or FAIL with the thresholds.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-target/soak}
DURATION=${DURATION:-1800}
INTERVAL=${INTERVAL:-60}
WARMUP=${WARMUP:-5}
read -r -a CHURN_EXTRA <<<"${CHURN_ARGS:-}"
mkdir -p "$OUT"
rm -f "$OUT"/samples.jsonl "$OUT"/summary.json
# shellcheck source=benches/lib.sh
source benches/lib.sh
CHURN=""
stop_all() {
    if [ -n "$CHURN" ]; then kill "$CHURN" 2>/dev/null || true; wait "$CHURN" 2>/dev/null || true; fi
    stop_server
}
trap stop_all EXIT

date -u +"%Y-%m-%dT%H:%M:%SZ" >"$OUT/date"
taskset -c 0 target/release/gateway --quic off >"$OUT/gateway.log" 2>&1 &
PID=$!
wait_port 127.0.0.1 7180
wait_port 127.0.0.1 7100
wait_port 127.0.0.1 7101

T0=$(date +%s)
# sample PHASE: one JSON line in samples.jsonl.
sample() {
    local rss fds scrape
    rss=$(awk '/^VmRSS:/ {print $2}' "/proc/$PID/status")
    fds=$(find "/proc/$PID/fd" -mindepth 1 -maxdepth 1 | wc -l)
    scrape=$(curl -sf 127.0.0.1:7180/metrics)
    awk -v phase="$1" -v t="$(($(date +%s) - T0))" -v rss="$rss" -v fds="$fds" '
        /^longconn_runtime_alive_tasks / {tasks = $2}
        /^longconn_sessions_online[{ ]/ {online += $2}
        /^longconn_groups[{ ]/ {groups += $2}
        /^longconn_group_members[{ ]/ {members += $2}
        END {printf "{\"phase\":\"%s\",\"t\":%d,\"rss_kb\":%d,\"fds\":%d,\"tasks\":%d,\"online\":%d,\"groups\":%d,\"members\":%d}\n",
             phase, t, rss, fds, tasks, online, groups, members}' <<<"$scrape" | tee -a "$OUT/samples.jsonl" >&2
}
sleep_until() { # seconds since T0
    local d=$((T0 + $1 - $(date +%s)))
    if [ "$d" -gt 0 ]; then sleep "$d"; fi
}
online() {
    curl -sf 127.0.0.1:7180/metrics | awk '/^longconn_sessions_online[{ ]/ {s += $2} END {print s + 0}'
}

sleep 2
sample idle
taskset -c 1 target/release/soak-churn --duration "$DURATION" --progress "$INTERVAL" \
    "${CHURN_EXTRA[@]}" >"$OUT/churn.log" 2>&1 &
CHURN=$!
until grep -q '^ready' "$OUT/churn.log"; do
    if ! kill -0 "$CHURN" 2>/dev/null; then
        echo "soak-churn exited before its pool was ready:" >&2
        cat "$OUT/churn.log" >&2
        exit 1
    fi
    sleep 0.2
done
T0=$(date +%s)
sample start
for ((t = INTERVAL; t < DURATION - 5; t += INTERVAL)); do
    sleep_until "$t"
    sample churn
done
sleep_until $((DURATION - 5))
sample end
wait "$CHURN" || echo "soak-churn exited with an error" >&2
CHURN=""
for _ in $(seq 120); do
    [ "$(online)" = 0 ] && break
    sleep 0.5
done
# Closed sessions' last frames and the HTTP keep-alive sockets: let them settle.
sleep 5
sample drained

python3 - "$OUT" "$WARMUP" "$DURATION" <<'PY'
import json, sys
out, warmup, duration = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
rows = [json.loads(l) for l in open(f"{out}/samples.jsonl") if l.strip()]
by = {r["phase"]: r for r in rows}
totals = None
for line in open(f"{out}/churn.log"):
    if line.startswith("totals "):
        totals = json.loads(line[len("totals "):])
# Trend: RSS over the samples after the warm-up, minutes as x.
trend = [r for r in rows if r["phase"] in ("churn", "end") and r["t"] / 60 >= warmup]
SLOPE_LIMIT_REL = 0.05  # projected growth over the window, of the window's mean RSS
TASK_SLACK, FD_SLACK = 5, 5
checks = []
if len(trend) >= 3:
    xs = [r["t"] / 60 for r in trend]
    ys = [r["rss_kb"] for r in trend]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)
    span = xs[-1] - xs[0]
    rel = slope * span / my
    checks.append((rel <= SLOPE_LIMIT_REL,
                   f"RSS trend minutes {xs[0]:.0f}-{xs[-1]:.0f}: slope {slope:+.1f} KB/min, "
                   f"projected {slope * span:+.0f} KB = {rel * 100:+.2f} % of the mean "
                   f"{my / 1024:.1f} MiB (limit +{SLOPE_LIMIT_REL * 100:.0f} %)"))
else:
    slope = rel = None
    checks.append((False, f"RSS trend: only {len(trend)} samples after the {warmup:g}-minute warm-up"))
idle, start, end, drained = by["idle"], by["start"], by["end"], by["drained"]
checks.append((drained["online"] == 0, f"sessions online after the churn: {drained['online']} (want 0)"))
checks.append((drained["tasks"] <= idle["tasks"] + TASK_SLACK,
               f"tasks: idle {idle['tasks']}, drained {drained['tasks']} (limit idle + {TASK_SLACK}); "
               f"loaded: start {start['tasks']} with {start['online']} sessions, "
               f"end {end['tasks']} with {end['online']} sessions"))
checks.append((drained["fds"] <= idle["fds"] + FD_SLACK,
               f"fds: idle {idle['fds']}, drained {drained['fds']} (limit idle + {FD_SLACK}); "
               f"loaded: start {start['fds']}, end {end['fds']}"))
checks.append((drained["groups"] == 0 and drained["members"] == 0,
               f"groups after the churn: {drained['groups']} groups, {drained['members']} members (want 0)"))
ok = all(c for c, _ in checks) and totals is not None
json.dump({"samples": rows, "slope_kb_per_min": slope, "relative_growth": rel,
           "checks": [{"ok": c, "what": w} for c, w in checks], "churn": totals, "pass": ok},
          open(f"{out}/summary.json", "w"), indent=1)
print("| phase | t (s) | RSS (MiB) | fds | tasks | sessions | groups | members |")
print("|---|---|---|---|---|---|---|---|")
for r in rows:
    print(f"| {r['phase']} | {r['t']} | {r['rss_kb'] / 1024:.1f} | {r['fds']} | {r['tasks']} "
          f"| {r['online']} | {r['groups']} | {r['members']} |")
print(f"churn: {json.dumps(totals)}")
for c, w in checks:
    print(("ok    " if c else "FAIL  ") + w)
print("PASS" if ok else "FAIL")
sys.exit(0 if ok else 1)
PY
