#!/usr/bin/env bash
# Heap census of idle connections: runs `idle-memory` against a gateway built with the
# system allocator under heaptrack, kills the gateway with SIGKILL while the connections
# are held (so heaptrack records everything live then as "leaked"), and ranks the live
# heap per connection by allocation site (benches/heap_census.py).
#
#   CARGO_INCREMENTAL=0 nice -n 15 cargo build --release -p longconn-gateway --bin gateway --no-default-features
#   cp target/release/gateway /tmp/census-gateway
#   CARGO_INCREMENTAL=0 nice -n 15 cargo build --release -p longconn-benches --bin idle-memory
#   flock -o /work/bench.lock unshare -n bash -c 'ip link set lo up; ulimit -n 20000;
#       benches/heap-census.sh /tmp/census-gateway quic 3000 /tmp/census'
#
# Arguments: gateway binary (system allocator: heaptrack does not see jemalloc's
# allocations), transport (tcp, ws, quic), connections, output directory. Needs
# heaptrack (apt-get install heaptrack) and c++filt (binutils). The figures include the
# process's fixed allocations (the endpoint's receive buffers, the runtime), which the
# script lists under "fixed"; the idle-memory RSS figure of this run is meaningless (it
# reads the wrapper's RSS).
set -euo pipefail
cd "$(dirname "$0")/.."
GATEWAY=$(realpath "$1")
TRANSPORT=${2:-quic}
CONNS=${3:-3000}
OUT=${4:-target/heap-census}
mkdir -p "$OUT"
OUT=$(realpath "$OUT")
WRAPPER="$OUT/heaptrack-gateway.sh"
cat > "$WRAPPER" <<WRAP
#!/usr/bin/env bash
heaptrack -o "$OUT/gateway" "$GATEWAY" "\$@" &
hpid=\$!
stop() {
    # The gateway is heaptrack's child; the interpreter is the other one.
    for child in \$(pgrep -P \$hpid -f "$GATEWAY"); do kill -KILL \$child; done
}
trap stop TERM
wait \$hpid
wait \$hpid
WRAP
chmod +x "$WRAPPER"
rm -f "$OUT"/gateway.zst
target/release/idle-memory --gateway "$WRAPPER" --transport "$TRANSPORT" \
    --conns "$CONNS" --concurrency 50 --settle-s 5
# heaptrack's interpreter finishes writing after the gateway is gone.
for _ in $(seq 1 60); do
    pgrep -f "heaptrack -o $OUT/gateway" >/dev/null || break
    sleep 1
done
heaptrack_print -f "$OUT/gateway.zst" -p 0 -a 0 -T 0 -l 0 \
    -F "$OUT/leaked.folded" --flamegraph-cost-type leaked >/dev/null
c++filt < "$OUT/leaked.folded" | sed -E 's/\[[0-9a-f]{16}\]//g' > "$OUT/leaked.txt"
python3 benches/heap_census.py "$OUT/leaked.txt" "$CONNS" | tee "$OUT/census.txt"
