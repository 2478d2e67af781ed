#!/usr/bin/env bash
# Issue 17 items 4 (logins/s) and 6 (request p99 at 50k/s), docs/BENCHMARKS.md
# "Requests and logins". The gateway runs on core 0 (taskset -c 0: one tokio worker),
# loadgen on core 1. Run it under the bench lock in its own network namespace:
#   flock -o /work/bench.lock unshare -n bash -c \
#       'ip link set lo up; ulimit -n 20000; benches/requests-logins.sh'
# Environment:
#   GATEWAY, LOADGEN   binaries (target/release/gateway, target/release/loadgen)
#   PARTS              "login request" (either or both)
#   CLIENTS            "raw sdk": raw:// (lean raw-protocol load) and/or the SDK
#   LOGINS             connections per login run (18000; one process, < 19k files)
#   LOGIN_RATE         asked logins/s (60000)
#   REQ_CONNS          connections per request run (200)
#   REQ_RATES          open-loop request rates, raw only ("50000"); 0 = closed loop
#   REQ_SECONDS        seconds per open-loop run (10)
#   OUT                where the JSON lines go (target/requests-logins)
# Each run prints one line: what, rate, latencies, server and load CPU per operation.
set -euo pipefail
cd "$(dirname "$0")/.."
GATEWAY=${GATEWAY:-target/release/gateway}
LOADGEN=${LOADGEN:-target/release/loadgen}
PARTS=${PARTS:-"login request"}
CLIENTS=${CLIENTS:-"raw sdk"}
LOGINS=${LOGINS:-18000}
LOGIN_RATE=${LOGIN_RATE:-60000}
REQ_CONNS=${REQ_CONNS:-200}
REQ_RATES=${REQ_RATES:-"50000"}
REQ_SECONDS=${REQ_SECONDS:-10}
OUT=${OUT:-target/requests-logins}
mkdir -p "$OUT"
# shellcheck source=benches/lib.sh
source benches/lib.sh

start_gateway() {
    stop_server
    taskset -c 0 "$GATEWAY" "${BENCH_GATEWAY_ARGS[@]}" >"$OUT/gateway.log" 2>&1 &
    PID=$!
    wait_port 127.0.0.1 7180
}

# CPU seconds of a process so far: the sum of its threads' run time in nanoseconds
# (/proc/PID/task/*/schedstat, first field), or utime + stime in clock ticks (10 ms:
# 0.5 us per login of 18,000, too coarse for A/B runs) where schedstat is missing.
# A thread that exits between two readings takes its time with it (the gateway's
# threads live as long as it does).
cpu_s() { # pid
    if [ -r "/proc/$1/schedstat" ]; then
        cat /proc/"$1"/task/*/schedstat 2>/dev/null | awk '{ ns += $1 } END { printf "%.6f\n", ns / 1e9 }'
    else
        awk -v hz="$(getconf CLK_TCK)" '{ print ($14 + $15) / hz }' "/proc/$1/stat"
    fi
}

# One JSON line from loadgen in, one readable line out. The server's CPU is the whole
# run's (for logins: connect, login, the 1 s hold and the close).
show() { # label server-cpu-seconds
    python3 -c '
import json, sys
label = sys.argv[1]
s = json.loads(sys.stdin.readline())
done = s["established"] if s["phase"] == "connect" or s.get("phases", [{}])[0].get("phase") == "connect" else s["received"]
p = s["phases"][0] if s.get("phases") else s
srv = float(sys.argv[2])
load = s.get("load_cpu_s") or 0
lat = s["connect_latency_us"] if "login" in label else s["latency_us"]
per = lambda cpu: cpu / done * 1e6 if done else 0
lp = lambda k: lat[k]
print("%s: %d done, failed %d, errors %d, %.0f/s, p50 %d us p99 %d us p999 %d us max %d us, "
      "server %.3f s (%.1f us/op), load %.2f s (%.1f us/op)" % (
      label, done, s["failed"], s["errors"], s["throughput_per_s"], lp("p50"), lp("p99"),
      lp("p999"), lp("max"), srv, per(srv), load, per(load)))
' "$1" "$2"
}

# Runs loadgen with "$@", keeps its JSON line, prints the readable line.
run() { # label jsonl loadgen-args...
    local label=$1 jsonl=$2 before after
    shift 2
    before=$(cpu_s "$PID")
    "${LG[@]}" "$@" | tail -1 >"$OUT/last.json"
    after=$(cpu_s "$PID")
    tee -a "$jsonl" <"$OUT/last.json" | show "$label" "$(echo "$after - $before" | bc -l)"
}

target_of() { # raw|sdk
    if [ "$1" = raw ]; then echo raw://127.0.0.1:7100; else echo tcp://127.0.0.1:7100; fi
}

LG=(taskset -c 1 "$LOADGEN" --quiet --source-ips 127.0.0.2-127.0.0.40)
date -u +"%Y-%m-%dT%H:%M:%SZ" | tee "$OUT/date"
for part in $PARTS; do
    for client in $CLIENTS; do
        case "$part" in
            login)
                start_gateway
                run "login $client" "$OUT/login-$client.jsonl" --target "$(target_of "$client")" \
                    connect --connections "$LOGINS" --rate "$LOGIN_RATE" --hold 1
                stop_server
                sleep "${LOGIN_PAUSE:-60}" # TIME_WAIT
                ;;
            request)
                start_gateway
                # Closed loop, as benches/report.sh row 5: 200 x 500, one at a time each.
                run "request $client closed loop" "$OUT/request-$client.jsonl" \
                    --target "$(target_of "$client")" \
                    request --connections "$REQ_CONNS" --requests 500 --business 1
                if [ "$client" = raw ]; then
                    for rate in $REQ_RATES; do
                        per_conn=$((rate * REQ_SECONDS / REQ_CONNS))
                        run "request $client open loop at $rate/s" "$OUT/request-$client.jsonl" \
                            --target "$(target_of "$client")" request --connections "$REQ_CONNS" \
                            --requests "$per_conn" --business 1 --rate "$rate"
                    done
                fi
                stop_server
                ;;
        esac
    done
done
