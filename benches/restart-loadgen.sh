#!/usr/bin/env bash
# Loadgen exits on time when its gateway is SIGKILLed and restarted (issue 16 item 1).
# From the repository root, after a release build of gateway and loadgen:
#   flock /work/bench.lock unshare -n bash benches/restart-loadgen.sh
# Prints loadgen's wall time (hold is 20 s) and its JSON summary (reconnects,
# connected_at_end). Needs bc.
set -u
ip link set lo up; ulimit -n 20000
D=/tmp/lg-cert-$$; mkdir -p $D
G=target/release/gateway
$G --http off --dev-cert-dir $D >/dev/null 2>&1 & GP=$!
sleep 1.5
S=$(date +%s.%N)
target/release/loadgen --quiet --target quic://localhost:7102 --ca $D/cert.pem connect --connections 200 --rate 2000 --hold 20 > /tmp/lg-out.txt 2>&1 & LP=$!
sleep 6; kill -9 $GP; wait $GP 2>/dev/null; sleep 1
# restart with the same certificate
$G --http off --tls-cert $D/cert.pem --tls-key $D/key.pem >/dev/null 2>&1 & GP=$!
wait $LP; E=$(date +%s.%N)
echo "loadgen wall: $(echo "$E - $S" | bc) s"
tail -5 /tmp/lg-out.txt
kill $GP
