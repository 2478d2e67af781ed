#!/usr/bin/env bash
# Issue 13 item 10: NODES gateway instances on one Redis, on this machine
# (examples/cluster/cluster.sh), loaded by loadgen spread over every node.
#
#   benches/cluster.sh [all]      every step below, one after another
#   benches/cluster.sh STEP       one step: connect | unicast | unicast-small |
#                                 unicast-single | fanout
#
#   connect         CONNS logged-in TCP connections over NODES nodes, held HOLD_S s:
#                   gateway RSS per connection (sum over nodes, before and while held),
#                   Redis memory per route, Redis CPU while the connections idle
#   unicast         CONNS devices on every node, batched unicast through node 1's HTTP
#                   API only: pushes/s, reach, p50/p99, `unknown`; Redis CPU per 1,000
#                   pushes (loadgen --server-pid on redis-server: utime+stime from Go to
#                   the end of the phase)
#   unicast-small   the same with SMALL devices (fits one process)
#   unicast-single  the same SMALL load on one gateway, memory routes (no Redis): the
#                   ratio's denominator
#   fanout          FANOUT_GROUPS group(s) with CONNS raw-protocol members spread over
#                   every node, publishes through node 1: deliveries/s, reach, and Redis
#                   commands per publish (INFO commandstats before/after the run)
#
# Each step starts its own cluster (or gateway) inside `unshare -n` (fixed ports, its
# own loopback) and stops it; with LOCK set, each step holds `flock $LOCK`. Steps are
# separated by GAP_S seconds (TIME_WAIT, and other users of the machine). Results:
# $OUT/<step>.json, and a table on stdout at the end.
#
# Environment (defaults in brackets): CONNS [100000], NODES [6], PROCS [6] loadgen
# processes (each holds at most 20,000 fds), SOURCES [60] source addresses per step
# (127.0.<step>.2 ..), CONNECT_RATE [3000]/s, HOLD_S [40] (the samples are taken
# while held: at least IDLE_S + 10), IDLE_S [10] s of Redis CPU sampled while idle, SMALL [15000],
# UNI_MESSAGES [5], UNI_RATE [150000] pushes/s offered, BATCH [500], PUBLISHERS [8]
# HTTP calls in flight, FANOUT_GROUPS [1], FANOUT_MESSAGES [20], FANOUT_RATE [2]
# publishes/s, FANOUT_PUBLISHERS [4] publishes in flight, GAP_S [60], LOCK [unset], BUILD [1], OUT [target/bench-cluster].
# RECV [sdk]: the unicast receivers, `sdk` (the Rust SDK) or `raw` (loadgen's lean
# raw-protocol receivers). PERF [0]: `1` records node 1 (`perf record -p`), `all` every
# process on the machine (`perf record -a`), for PERF_S [8] s starting PERF_DELAY [3] s
# after every receiver is in; the data goes to $OUT/<step>/perf.data. GATEWAY_BIN
# [target/release/gateway] and LOADGEN_BIN [target/release/loadgen] pick the binaries
# (A/B runs against a saved copy).
set -euo pipefail
cd "$(dirname "$0")/.."
CONNS=${CONNS:-100000}
NODES=${NODES:-6}
PROCS=${PROCS:-6}
SOURCES=${SOURCES:-60}
CONNECT_RATE=${CONNECT_RATE:-3000}
HOLD_S=${HOLD_S:-40}
IDLE_S=${IDLE_S:-10}
SMALL=${SMALL:-15000}
UNI_MESSAGES=${UNI_MESSAGES:-5}
UNI_RATE=${UNI_RATE:-150000}
BATCH=${BATCH:-500}
PUBLISHERS=${PUBLISHERS:-8}
FANOUT_GROUPS=${FANOUT_GROUPS:-1}
FANOUT_MESSAGES=${FANOUT_MESSAGES:-20}
FANOUT_RATE=${FANOUT_RATE:-2}
FANOUT_PUBLISHERS=${FANOUT_PUBLISHERS:-4}
GAP_S=${GAP_S:-60}
OUT=${OUT:-target/bench-cluster}
GATEWAY_BIN=${GATEWAY_BIN:-target/release/gateway}
LOADGEN_BIN=${LOADGEN_BIN:-target/release/loadgen}
RECV=${RECV:-sdk}
PERF=${PERF:-0}
PERF_S=${PERF_S:-8}
PERF_DELAY=${PERF_DELAY:-3}
export CONNS NODES PROCS SOURCES CONNECT_RATE HOLD_S IDLE_S SMALL UNI_MESSAGES UNI_RATE BATCH \
    PUBLISHERS FANOUT_GROUPS FANOUT_MESSAGES FANOUT_RATE FANOUT_PUBLISHERS OUT RECV PERF PERF_S \
    GATEWAY_BIN LOADGEN_BIN \
    PERF_DELAY
REDIS_PORT=6390
mkdir -p "$OUT"

# ---- outside the namespace -------------------------------------------------------

run_step() { # step number
    local cmd=(unshare -n bash -c 'ip link set lo up && exec "$0" --inside "$1" "$2"' "$PWD/benches/cluster.sh" "$1" "$2")
    echo "== $1 ($(date -u +%H:%M:%SZ))" >&2
    if [ -n "${LOCK:-}" ]; then flock "$LOCK" "${cmd[@]}"; else "${cmd[@]}"; fi
}

table() {
    python3 - "$OUT" <<'PY'
import json, os, sys
out = sys.argv[1]
def load(name):
    p = os.path.join(out, name + ".json")
    return json.load(open(p)) if os.path.exists(p) else None
c = load("connect")
if c:
    print(f"connect: {c['established']:,} of {c['conns']:,} logged in over {c['nodes']} nodes "
          f"({c['held']:,} held at the sample), connect p50/p99 {c['connect_p50_ms']:.1f}/"
          f"{c['connect_p99_ms']:.1f} ms; gateway RSS {c['rss_before_kb']/1024:,.0f} -> "
          f"{c['rss_held_kb']/1024:,.0f} MB = {c['bytes_per_conn']:,.0f} B per connection "
          f"(user space, all nodes); Redis {c['redis_bytes_per_route']:,.0f} B per route "
          f"({c['routes']:,} keys); Redis CPU while they idle: {c['redis_idle_cpu_per_s']:.3f} s/s"
          f" ({c['idle_held']:,} still held at its end); gateways' CPU while they idle:"
          f" {c.get('gateways_idle_cpu_per_s', 0):.3f} s/s (all nodes)")
print("| run | devices | nodes | pushes sent | received/s | reach | unknown | p50 / p99 ms | batch RTT p50 / p99 ms | Redis CPU s per 1,000 pushes | CPU µs per push: gateways / Redis / loadgen |")
print("|---|---|---|---|---|---|---|---|---|---|---|")
for name in ("unicast", "unicast-small", "unicast-single"):
    r = load(name)
    if not r: continue
    p = r["phases"][0]; lat = p["latency_us"]; rtt = p.get("publish_rtt_us") or {}
    cpu = r.get("redis_cpu_per_1000")
    print(f"| {name} | {p['established']:,} | {r['nodes']} | {p['sent']:,} | {p['throughput_per_s']:,.0f}"
          f" | {p['reach_rate']:.4f} | {p.get('unknown', 0)} | {lat['p50']/1000:.1f} / {lat['p99']/1000:.1f}"
          f" | {rtt.get('p50', 0)/1000:.1f} / {rtt.get('p99', 0)/1000:.1f}"
          f" | {'-' if cpu is None else f'{cpu:.4f}'}"
          f" | {' / '.join(f'{v:.2f}' for v in (r.get('cpu_us_per_push') or {}).values()) or '-'} |")
a, b = load("unicast-small"), load("unicast-single")
if a and b:
    ta, tb = a["phases"][0]["throughput_per_s"], b["phases"][0]["throughput_per_s"]
    print(f"cluster / single node, {a['phases'][0]['established']:,} devices: {ta / tb:.2f} x pushes/s")
f = load("fanout")
if f:
    p = f["phases"][0]; lat = p["latency_us"]
    print(f"fanout: {p['sent']} publishes to {p['established']:,} members over {f['nodes']} nodes:"
          f" {p['received']:,}/{p['expected']:,} delivered (reach {p['reach_rate']:.4f}),"
          f" {p['throughput_per_s']:,.0f} deliveries/s, p50/p99 {lat['p50']/1000:.1f}/{lat['p99']/1000:.1f} ms;"
          f" per publish: " + ", ".join(f"{k} {v:.2f}" for k, v in sorted(f["commands_per_publish"].items())))
PY
}

if [ "${1:-}" != --inside ]; then
    if [ "${BUILD:-1}" = 1 ]; then
        nice -n 19 cargo build --release -p longconn-gateway --bin gateway -p longconn-loadgen --bin loadgen
    fi
    date -u +"%Y-%m-%dT%H:%M:%SZ" >"$OUT/date"
    steps=${1:-all}
    [ "$steps" = all ] && steps="connect unicast unicast-small unicast-single fanout"
    n=0
    for step in $steps; do
        if [ "$n" -gt 0 ]; then sleep "$GAP_S"; fi
        n=$((n + 1))
        run_step "$step" "$n"
    done
    table
    exit 0
fi

# ---- inside the namespace: one step ------------------------------------------------

STEP=$2
N=$3
SRC="127.0.$N.2-127.0.$N.$((SOURCES + 1))"
DIR="$OUT/$STEP"
mkdir -p "$DIR"
LG=("$LOADGEN_BIN" --quiet --source-ips "$SRC" --procs "$PROCS" --drain 3 --drain-limit 20
    --connect-rate "$CONNECT_RATE")
TARGETS=""; APIS=""
for k in $(seq "$NODES"); do
    TARGETS="$TARGETS${TARGETS:+,}tcp://127.0.0.1:$((7100 + 10 * k))"
    APIS="$APIS${APIS:+,}http://127.0.0.1:$((7108 + 10 * k))"
done
API1=http://127.0.0.1:7118
GW_PIDS=()
REDIS_PID=""

cluster_up() { # nodes
    K=$1 DIR="$DIR/cluster" REDIS_PORT=$REDIS_PORT BIN=$GATEWAY_BIN GATEWAY_ARGS="--max-accept-rate off ${GATEWAY_ARGS:-}" \
        examples/cluster/cluster.sh start >&2
    REDIS_PID=$(awk '$1 == "redis" {print $2}' "$DIR/cluster/pids")
    mapfile -t GW_PIDS < <(awk '$1 ~ /^node-/ {print $2}' "$DIR/cluster/pids")
}
cluster_down() { DIR="$DIR/cluster" examples/cluster/cluster.sh stop >&2; }

rss_kb() { # pids...: summed VmRSS
    local sum=0 pid
    for pid in "$@"; do
        sum=$((sum + $(awk '/VmRSS/ {print $2}' "/proc/$pid/status")))
    done
    echo "$sum"
}
redis() { redis-cli -p "$REDIS_PORT" "$@"; }
ticks_by_pid() { # pid...: "pid utime+stime" (clock ticks), one line per live process
    local pid
    for pid in "$@"; do
        [ -r "/proc/$pid/stat" ] || continue
        awk -v pid="$pid" '{ sub(/^.*\) /, ""); print pid, $12 + $13 }' "/proc/$pid/stat" 2>/dev/null || true
    done
}

connections() { # summed /healthz connection counts (cheap: no interpreter per call)
    local sum=0 k n
    for k in $(seq "$NODES"); do
        n=$(curl -sf -m 5 "http://127.0.0.1:$((7108 + 10 * k))/healthz" |
            grep -o '"connections":[0-9]*' | cut -d: -f2) || n=0
        sum=$((sum + ${n:-0}))
    done
    echo "$sum"
}
cpu_ticks() { # utime + stime of a process, clock ticks (100/s)
    awk '{sub(/.*\) /, ""); print $12 + $13}' "/proc/$1/stat"
}
commandstats() { redis info commandstats | tr -d '\r' | grep '^cmdstat_'; }

case "$STEP" in
connect)
    cluster_up "$NODES"
    sleep 1
    rss_before=$(rss_kb "${GW_PIDS[@]}")
    redis_before=$(redis info memory | tr -d '\r' | awk -F: '$1 == "used_memory" {print $2}')
    timeout $((CONNS / CONNECT_RATE + HOLD_S + 180)) "${LG[@]}" --target "$TARGETS" \
        connect --connections "$CONNS" --rate "$CONNECT_RATE" --hold "$HOLD_S" \
        >"$DIR/loadgen.out" 2>"$DIR/loadgen.err" &
    lg=$!
    # Sample once every connection is in, or the count stopped growing for 3 samples
    # (the ramp is over: the rest failed). Every sample is logged.
    last=-1; still=0; held=0
    while kill -0 "$lg" 2>/dev/null; do
        sleep 1
        held=$(connections)
        echo "$(date -u +%T) $held" >>"$DIR/samples"
        if [ "$held" -ge "$CONNS" ]; then break; fi
        if [ "$held" -gt 0 ] && [ "$held" -le "$last" ]; then still=$((still + 1)); else still=0; fi
        last=$held
        if [ "$still" -ge 3 ]; then break; fi
    done
    sleep 1
    held=$(connections)
    rss_held=$(rss_kb "${GW_PIDS[@]}")
    redis_held=$(redis info memory | tr -d '\r' | awk -F: '$1 == "used_memory" {print $2}')
    routes=$(redis dbsize)
    # Redis's own CPU while the connections sit idle (route refreshes, heartbeats).
    idle_from=$(cpu_ticks "$REDIS_PID"); gw_from=$(ticks_by_pid "${GW_PIDS[@]}" | awk '{t += $2} END {print t}')
    sleep "$IDLE_S"
    idle_to=$(cpu_ticks "$REDIS_PID"); gw_to=$(ticks_by_pid "${GW_PIDS[@]}" | awk '{t += $2} END {print t}')
    idle_held=$(connections)
    wait "$lg" || true
    tail -n 1 "$DIR/loadgen.out" >"$DIR/summary.json"
    cluster_down
    python3 - "$DIR/summary.json" "$held" "$rss_before" "$rss_held" "$redis_before" "$redis_held" \
        "$routes" "$((idle_to - idle_from))" "$IDLE_S" "$idle_held" "$((gw_to - gw_from))" \
        >"$OUT/connect.json" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))
held, rb, rh, mb, mh, routes, idle_ticks, idle_s, idle_held, gw_ticks = (int(x) for x in sys.argv[2:])
import os
print(json.dumps({"conns": int(os.environ["CONNS"]), "nodes": int(os.environ["NODES"]),
    "established": s["established"], "held": held, "rss_before_kb": rb, "rss_held_kb": rh,
    "bytes_per_conn": (rh - rb) * 1024 / max(held, 1),
    "redis_bytes_per_route": (mh - mb) / max(held, 1), "routes": routes,
    "redis_idle_cpu_per_s": idle_ticks / 100 / idle_s, "idle_held": idle_held,
    "gateways_idle_cpu_per_s": gw_ticks / 100 / idle_s,
    "connect_p50_ms": s["connect_latency_us"]["p50"] / 1000,
    "connect_p99_ms": s["connect_latency_us"]["p99"] / 1000, "summary": s}))
PY
    ;;
unicast | unicast-small | unicast-single)
    devices=$CONNS; nodes=$NODES; targets=$TARGETS
    [ "$STEP" != unicast ] && devices=$SMALL
    if [ "$STEP" = unicast-single ]; then
        nodes=1; targets=tcp://127.0.0.1:7110
        "$GATEWAY_BIN" --node-id 1 --tcp 127.0.0.1:7110 --ws off --quic off --max-accept-rate off \
            --http 127.0.0.1:7118 >"$DIR/gateway.log" 2>&1 &
        GW_PIDS=($!)
        for _ in $(seq 100); do curl -sf "$API1/healthz" >/dev/null && break; sleep 0.1; done
        server=(--server-pid "${GW_PIDS[0]}")
    else
        cluster_up "$NODES"
        server=(--server-pid "$REDIS_PID")
    fi
    case "$RECV" in
        sdk) ;;
        raw) targets=${targets//tcp:/raw:} ;;
        *) echo "RECV must be sdk or raw, not '$RECV'" >&2; exit 2 ;;
    esac
    timeout $((devices / 1000 + 300)) "${LG[@]}" --target "$targets" --api "$API1" \
        --batch "$BATCH" --publishers "$PUBLISHERS" "${server[@]}" \
        unicast --devices "$devices" --messages "$UNI_MESSAGES" --rate "$UNI_RATE" \
        >"$DIR/loadgen.out" 2>"$DIR/loadgen.err" &
    lg=$!
    # The pushes start once every receiver is in (`Go`): wait for the connections, then
    # take the CPU the gateways, Redis and loadgen use from there to loadgen's exit.
    for _ in $(seq 1200); do [ "$(connections)" -ge "$devices" ] && break; sleep 0.25; done
    cpu_pids="${GW_PIDS[*]} ${REDIS_PID:-} $(pgrep -d ' ' -f "$LOADGEN_BIN" || true)"
    ticks_by_pid $cpu_pids >"$DIR/cpu.before"
    if [ "$PERF" = 1 ]; then
        sleep "$PERF_DELAY"
        perf record -e cpu-clock -F 999 -g -p "${GW_PIDS[0]}" -o "$DIR/perf.data" \
            -- sleep "$PERF_S" >"$DIR/perf.log" 2>&1 || true
    elif [ "$PERF" = all ]; then
        # Every process on the machine during the push phase (by comm and symbol).
        sleep "$PERF_DELAY"
        perf record -e cpu-clock -F 499 -g -a -o "$DIR/perf.data" \
            -- sleep "$PERF_S" >"$DIR/perf.log" 2>&1 || true
    fi
    # Sampled until loadgen is gone; a process's last sample counts (the workers exit
    # before the driver).
    : >"$DIR/cpu.after"
    while kill -0 "$lg" 2>/dev/null; do
        ticks_by_pid $cpu_pids >>"$DIR/cpu.after"
        sleep 0.2
    done
    wait "$lg" || true
    if [ "$STEP" = unicast-single ]; then
        kill -TERM "${GW_PIDS[0]}"; wait "${GW_PIDS[0]}" || true
    else
        cluster_down
    fi
    python3 - "$DIR/loadgen.out" "$nodes" "$STEP" "$DIR" "${GW_PIDS[*]}" "${REDIS_PID:-}" \
        >"$OUT/$STEP.json" <<'PY'
import json, os, sys
s = json.loads(open(sys.argv[1]).read().strip().splitlines()[-1])
p = s["phases"][0]
s["nodes"] = int(sys.argv[2])
cpu = p.get("server_cpu_s")
# --server-pid is redis-server in a cluster: its CPU per 1,000 pushes sent.
if sys.argv[3] != "unicast-single" and cpu is not None and p["sent"]:
    s["redis_cpu_per_1000"] = cpu / p["sent"] * 1000
# CPU seconds per 1,000 pushes from "all connected" to loadgen's exit, by role.
def ticks(path):
    if not os.path.exists(path):
        return {}
    return {l.split()[0]: int(l.split()[1]) for l in open(path) if len(l.split()) == 2}
before, after = ticks(os.path.join(sys.argv[4], "cpu.before")), ticks(os.path.join(sys.argv[4], "cpu.after"))
gateways, redis = set(sys.argv[5].split()), {sys.argv[6]} - {""}
hz = os.sysconf("SC_CLK_TCK")
role = {"gateways": 0.0, "redis": 0.0, "loadgen": 0.0}
for pid, t in after.items():
    if pid in before:
        r = "gateways" if pid in gateways else "redis" if pid in redis else "loadgen"
        role[r] += (t - before[pid]) / hz
if after and p["sent"]:
    s["push_phase_cpu_s"] = role
    s["cpu_us_per_push"] = {r: v / p["sent"] * 1e6 for r, v in role.items()}
print(json.dumps(s))
PY
    ;;
fanout)
    cluster_up "$NODES"
    commandstats >"$DIR/commandstats.before"
    raw_targets=${TARGETS//tcp:/raw:}
    timeout $((CONNS / 1000 + 300)) "${LG[@]}" --target "$raw_targets" --api "$API1" \
        --server-pid "$REDIS_PID" --publishers "$FANOUT_PUBLISHERS" \
        multicast --members "$CONNS" --groups "$FANOUT_GROUPS" --messages "$FANOUT_MESSAGES" \
        --rate "$FANOUT_RATE" >"$DIR/loadgen.out" 2>"$DIR/loadgen.err" || true
    commandstats >"$DIR/commandstats.after"
    cluster_down
    python3 - "$DIR/loadgen.out" "$DIR/commandstats.before" "$DIR/commandstats.after" \
        "$NODES" >"$OUT/fanout.json" <<'PY'
import json, sys
s = json.loads(open(sys.argv[1]).read().strip().splitlines()[-1])
def calls(path):
    out = {}
    for line in open(path):
        name, rest = line.strip().split(":", 1)
        fields = dict(kv.split("=") for kv in rest.split(","))
        out[name.removeprefix("cmdstat_")] = int(fields["calls"])
    return out
before, after = calls(sys.argv[2]), calls(sys.argv[3])
sent = max(s["phases"][0]["sent"], 1)
delta = {k: after[k] - before.get(k, 0) for k in after if after[k] != before.get(k, 0)}
s["nodes"] = int(sys.argv[4])
s["commands"] = delta
s["commands_per_publish"] = {k: v / sent for k, v in delta.items()
                             if k in ("publish", "spublish", "smembers", "hincrby")}
print(json.dumps(s))
PY
    ;;
*)
    echo "unknown step '$STEP'" >&2; exit 2 ;;
esac
