#!/usr/bin/env bash
# A longconn cluster on one machine: one redis-server and K gateway instances on
# Redis (node ids 1..K), each on its own ports, advertising its own addresses.
#
#   examples/cluster/cluster.sh [run]   start, print the endpoints, then wait: type
#                                       `stop` (or Ctrl-C) to stop everything
#   examples/cluster/cluster.sh start   start in the background, print the endpoints
#   examples/cluster/cluster.sh status  /healthz of every node, redis PING
#   examples/cluster/cluster.sh stop    stop what `start` started
#
# Stopping sends SIGTERM to every gateway at once (each drains: deregisters its routes
# and its node entry, then exits), waits for them (STOP_WAIT_S, then SIGKILL with a
# message), then stops Redis the same way.
#
# Environment (defaults in brackets):
#   K [3]               gateway instances, 1..50
#   HOST [127.0.0.1]    address every listener binds and advertises
#   BASE_PORT [7100]    node k listens on TCP BASE_PORT+10k, WebSocket BASE_PORT+10k+1,
#                       HTTP BASE_PORT+10k+8 (node 1: 7110, 7111, 7118)
#   REDIS_PORT [6390]   redis-server's port (not 6379, to stay clear of a system Redis)
#   BIN [target/release/gateway]   the gateway binary (build it first:
#                       cargo build --release -p longconn-gateway --bin gateway)
#   DIR [target/cluster]           logs and pid files
#   GATEWAY_ARGS []     extra flags for every gateway (e.g. "--max-connections 30000")
#   READY_WAIT_S [30], STOP_WAIT_S [40]
set -euo pipefail
cd "$(dirname "$0")/../.."

K=${K:-3}
HOST=${HOST:-127.0.0.1}
BASE_PORT=${BASE_PORT:-7100}
REDIS_PORT=${REDIS_PORT:-6390}
BIN=${BIN:-target/release/gateway}
DIR=${DIR:-target/cluster}
GATEWAY_ARGS=${GATEWAY_ARGS:-}
READY_WAIT_S=${READY_WAIT_S:-30}
STOP_WAIT_S=${STOP_WAIT_S:-40}

die() { echo "cluster: $*" >&2; exit 1; }

tcp_port() { echo $((BASE_PORT + 10 * $1)); }
ws_port() { echo $((BASE_PORT + 10 * $1 + 1)); }
http_port() { echo $((BASE_PORT + 10 * $1 + 8)); }

port_open() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }

healthy() { # node
    local port; port=$(http_port "$1")
    if command -v curl >/dev/null; then
        curl -sf "http://$HOST:$port/healthz" >/dev/null
    else
        exec 3<>"/dev/tcp/$HOST/$port" 2>/dev/null || return 1
        printf 'GET /healthz HTTP/1.0\r\nHost: %s\r\n\r\n' "$HOST" >&3
        local line; IFS= read -r -t 2 line <&3 || line=""
        exec 3>&-
        [[ $line == *" 200 "* ]]
    fi
}

check() {
    [[ $K =~ ^[0-9]+$ ]] && ((K >= 1 && K <= 50)) || die "K must be 1..50, not '$K'"
    [ -x "$BIN" ] || die "no gateway binary at $BIN (cargo build --release -p longconn-gateway --bin gateway)"
    command -v redis-server >/dev/null || die "redis-server is not installed (apt-get install redis-server)"
    "$BIN" --help | grep -q -- '--redis ' ||
        die "$BIN has no --redis flag: build a gateway with cluster support"
    if [ -f "$DIR/pids" ]; then
        local pid
        while read -r _ pid; do
            if kill -0 "$pid" 2>/dev/null; then
                die "a cluster from $DIR is still running (pid $pid): examples/cluster/cluster.sh stop"
            fi
        done <"$DIR/pids"
    fi
    port_open "$HOST" "$REDIS_PORT" && die "port $REDIS_PORT is taken (REDIS_PORT=...)"
    local k
    for k in $(seq "$K"); do
        for p in $(tcp_port "$k") $(ws_port "$k") $(http_port "$k"); do
            port_open "$HOST" "$p" && die "port $p (node $k) is taken (BASE_PORT=...)"
        done
    done
    return 0
}

start() {
    check
    mkdir -p "$DIR"
    : >"$DIR/pids"
    # Each child in a session of its own: Ctrl-C reaches only this script, which stops
    # the gateways first and Redis last.
    setsid redis-server --bind "$HOST" --port "$REDIS_PORT" --save '' --appendonly no \
        --daemonize no --logfile "$PWD/$DIR/redis.log" &
    echo "redis $!" >>"$DIR/pids"
    for _ in $(seq 100); do
        redis-cli -h "$HOST" -p "$REDIS_PORT" ping >/dev/null 2>&1 && break
        sleep 0.1
    done
    redis-cli -h "$HOST" -p "$REDIS_PORT" ping >/dev/null 2>&1 ||
        { stop; die "redis-server did not answer PING (see $DIR/redis.log)"; }
    local k
    for k in $(seq "$K"); do
        local tcp ws http
        tcp="$HOST:$(tcp_port "$k")"; ws="$HOST:$(ws_port "$k")"; http="$HOST:$(http_port "$k")"
        # shellcheck disable=SC2086 # GATEWAY_ARGS is a list of flags
        setsid "$BIN" --node-id "$k" --redis "redis://$HOST:$REDIS_PORT/" \
            --tcp "$tcp" --ws "$ws" --quic off --http "$http" \
            --advertise "tcp=$tcp,ws=$ws" $GATEWAY_ARGS >"$DIR/node-$k.log" 2>&1 &
        echo "node-$k $!" >>"$DIR/pids"
    done
    local deadline=$((SECONDS + READY_WAIT_S)) waiting
    while :; do
        waiting=""
        for k in $(seq "$K"); do
            healthy "$k" || waiting="$waiting $k"
        done
        [ -z "$waiting" ] && break
        for k in $waiting; do
            pid=$(awk -v n="node-$k" '$1 == n {print $2}' "$DIR/pids")
            if ! kill -0 "$pid" 2>/dev/null; then
                echo "cluster: node $k exited; its log ($DIR/node-$k.log):" >&2
                tail -n 20 "$DIR/node-$k.log" >&2
                stop; exit 1
            fi
        done
        if ((SECONDS >= deadline)); then
            echo "cluster: nodes$waiting did not answer /healthz within ${READY_WAIT_S} s" >&2
            stop; exit 1
        fi
        sleep 0.2
    done
    endpoints
}

endpoints() {
    echo "redis   redis://$HOST:$REDIS_PORT/"
    local k
    for k in $(seq "$K"); do
        echo "node $k  tcp://$HOST:$(tcp_port "$k")  ws://$HOST:$(ws_port "$k")/ws  http://$HOST:$(http_port "$k")"
    done
    local targets="" apis=""
    for k in $(seq "$K"); do
        targets="$targets${targets:+,}tcp://$HOST:$(tcp_port "$k")"
        apis="$apis${apis:+,}http://$HOST:$(http_port "$k")"
    done
    echo "loadgen --target $targets --api $apis ..."
}

# SIGTERM to every process named in the pid file whose name matches $1, then wait.
stop_group() { # pattern
    local name pid pids=()
    while read -r name pid; do
        [[ $name == $1 ]] || continue
        kill -0 "$pid" 2>/dev/null || continue
        kill -TERM "$pid" 2>/dev/null && pids+=("$pid:$name")
    done <"$DIR/pids"
    local deadline=$((SECONDS + STOP_WAIT_S)) entry
    for entry in "${pids[@]}"; do
        pid=${entry%%:*}
        while kill -0 "$pid" 2>/dev/null; do
            if ((SECONDS >= deadline)); then
                echo "cluster: ${entry#*:} (pid $pid) still running after ${STOP_WAIT_S} s: SIGKILL" >&2
                kill -KILL "$pid" 2>/dev/null || true
                break
            fi
            sleep 0.1
        done
        wait "$pid" 2>/dev/null || true
    done
}

stop() {
    [ -f "$DIR/pids" ] || { echo "cluster: nothing started from $DIR"; return 0; }
    stop_group 'node-*'
    stop_group redis
    rm -f "$DIR/pids"
    echo "cluster: stopped"
}

status() {
    [ -f "$DIR/pids" ] || die "nothing started from $DIR"
    local name pid state
    while read -r name pid; do
        if ! kill -0 "$pid" 2>/dev/null; then
            state="exited"
        elif [ "$name" = redis ]; then
            state=$(redis-cli -h "$HOST" -p "$REDIS_PORT" ping 2>/dev/null || echo "no PING")
        else
            healthy "${name#node-}" && state="healthy" || state="not answering /healthz"
        fi
        echo "$name (pid $pid): $state"
    done <"$DIR/pids"
}

run() {
    trap 'echo; stop; exit 0' INT TERM
    start
    echo "cluster: running; type 'stop' or press Ctrl-C to stop"
    local line
    while :; do
        if ! IFS= read -r line; then
            # No terminal (stdin closed): wait for a signal instead.
            while :; do sleep 1; done
        fi
        [ "$line" = stop ] && break
        [ -n "$line" ] && echo "cluster: type 'stop' to stop"
    done
    trap - INT TERM
    stop
}

case "${1:-run}" in
    run) run ;;
    start) start ;;
    stop) stop ;;
    status) status ;;
    *) die "usage: $0 [run|start|status|stop]" ;;
esac
