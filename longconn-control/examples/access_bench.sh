#!/bin/bash
# /v1/access throughput on one core (docs/BENCHMARKS.md, issue 14).
# The control binary (embedded defaults, rate limit off) is pinned to core 0, the
# access_load example to core 1; run from the repository root after
#   cargo build --release --bin control -p longconn-control --example access_load
# as: flock /work/bench.lock unshare -n longconn-control/examples/access_bench.sh
# Prints, per connection count, requests/s and requests per second of server CPU
# (the second figure holds even when other work shares the core).
set -eu
ip link set lo up
config=$(mktemp)
sed 's/per_second = 50.0/per_second = 0.0/' longconn-control/control.default.toml > "$config"
taskset -c 0 ./target/release/control --config "$config" >/dev/null 2>&1 &
pid=$!
sleep 1
cpu() { awk '{print $14+$15}' /proc/$pid/stat; }
tck=$(getconf CLK_TCK)
for c in ${CONNS:-16 32 64}; do
  before=$(cpu)
  out=$(taskset -c 1 ./target/release/examples/access_load 127.0.0.1:7190 "$c" "${SECONDS_PER_RUN:-10}")
  after=$(cpu)
  ok=$(echo "$out" | awk '{print $5}')
  echo "$out | server cpu $(echo "scale=2; ($after-$before)/$tck" | bc) s," \
    "$(echo "scale=0; $ok*$tck/($after-$before)" | bc) requests per server cpu-second"
done
kill -INT $pid
wait
rm -f "$config"
