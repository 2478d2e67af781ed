#!/bin/bash
# End-to-end acceptance of issue 14 (control layer) on release builds. Run from the
# repository root after
#   cargo build --release -p longconn-gateway -p longconn-examples -p longconn-loadgen --bins
# as (fixed ports 7100/7180, 7200/7280, 7190 inside a private network namespace):
#   flock /work/bench.lock unshare -n bash -c 'ip link set lo up; longconn-control/examples/acceptance.sh'
# Prints PASS/FAIL per acceptance item (and the loadgen --control figures); exits 1 if
# any item failed. LOADGEN_CLIENTS (default 2000) sizes the loadgen run; 0 skips it.
set -u
bin=./target/release
for b in gateway control client loadgen; do
  [ -x "$bin/$b" ] || { echo "missing $bin/$b: build release first"; exit 2; }
done
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done; wait 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT
failed=0
result() { # name, 0/1, detail
  if [ "$2" = 0 ]; then echo "PASS  $1${3:+: $3}"; else echo "FAIL  $1${3:+: $3}"; failed=1; fi
}
wait_port() { for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$1) 2>/dev/null && return 0; sleep 0.1; done; return 1; }

dev_secret="longconn-development-secret-do-not-use"
new_secret="acceptance-rotation-secret-2026-12"
# Both gateways verify the old (dev) and the new (k2) key: step one of a rotation.
cat > "$work/gateway.toml" <<TOML
[[token_keys]]
id = "dev"
secret = "$dev_secret"
[[token_keys]]
id = "k2"
secret = "$new_secret"
TOML
"$bin/gateway" --config "$work/gateway.toml" --node-id 1 --tcp 127.0.0.1:7100 --http 127.0.0.1:7180 \
  --ws off --quic off >"$work/gw1.log" 2>&1 & pids+=($!)
"$bin/gateway" --config "$work/gateway.toml" --node-id 2 --tcp 127.0.0.1:7200 --http 127.0.0.1:7280 \
  --ws off --quic off >"$work/gw2.log" 2>&1 & gw2=$!; pids+=($gw2)

control_toml() { # signing key, extra key block, canary percent
cat <<TOML
listen = "127.0.0.1:7190"
apps = ["demo", "load"]
[limits]
reload_poll_ms = 200
[rate_limit]
per_second = 0.0
[tokens]
ttl_s = 3600
signing_key = "$1"
[[tokens.keys]]
id = "dev"
secret = "$dev_secret"
$2
[client]
heartbeat_ms = 30000
reconnect_base_ms = 100
reconnect_cap_ms = 1000
reaccess_after_failures = 3
[[nodes]]
id = 1
addrs = { tcp = "127.0.0.1:7100" }
[[nodes]]
id = 2
addrs = { tcp = "127.0.0.1:7200" }
[default]
transports = ["tcp"]
flags = {}
[[rules]]
name = "canary"
percent = $3
salt = "acceptance-2026-12"
flags = { canary = "on" }
TOML
}
k2_block="[[tokens.keys]]
id = \"k2\"
secret = \"$new_secret\""
control_toml dev "" 10 > "$work/control.toml"
"$bin/control" --config "$work/control.toml" >"$work/control.log" 2>&1 & pids+=($!)
wait_port 7100 && wait_port 7200 && wait_port 7190 || { echo "FAIL  start: services did not come up"; cat "$work"/*.log; exit 1; }

access() { curl -s -XPOST 127.0.0.1:7190/v1/access -d "{\"app\":\"demo\",\"device\":\"$1\",\"platform\":\"android\",\"app_version\":\"1.0.0\",\"sdk_version\":\"0.1.0\",\"network\":\"wifi\"}"; }
json() { python3 -c "import json,sys; d=json.load(sys.stdin); print($1)"; }
login() { # endpoint url, device, token -> 0 when the gateway accepts the token and echoes
  "$bin/client" --url "$1" --app demo --device "$2" --token "$3" --request 1:acceptance 2>&1 | grep -q "response business 1: acceptance"
}

# 1. curl /v1/access: a token the gateway accepts and endpoints that exist.
answer=$(access acc-device-1)
token=$(echo "$answer" | json 'd["token"]')
ok=0; detail=""
for url in $(echo "$answer" | json '" ".join(e["url"] for e in d["endpoints"])'); do
  port=${url##*:}
  (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null || { ok=1; detail="$url not listening"; }
  login "$url" acc-device-1 "$token" || { ok=1; detail="$detail; $url refused the token"; }
done
n=$(echo "$answer" | json 'len(d["endpoints"])')
[ "$n" -ge 1 ] || ok=1
result "access answer: token accepted by the gateway, endpoints exist" $ok "$n endpoints (${detail:-all listening, token accepted on each})"

# 2. A 10 % rule over 10,000 devices: within the binomial 99.9 % bound, same devices again.
split() { python3 - "$1" <<'PY'
import http.client, json, sys
c = http.client.HTTPConnection("127.0.0.1", 7190)
picked = []
for i in range(10000):
    body = json.dumps({"app": "demo", "device": f"canary-{i}", "platform": "android",
                       "app_version": "1.0.0", "sdk_version": "0.1.0"})
    c.request("POST", "/v1/access", body, {"content-type": "application/json"})
    a = json.loads(c.getresponse().read())
    if a["bucket"] == "canary":
        picked.append(i)
open(sys.argv[1], "w").write("\n".join(map(str, picked)))
print(len(picked))
PY
}
first=$(split "$work/split1"); second=$(split "$work/split2")
bound=$(python3 -c "import math; print(round(3.29*math.sqrt(10000*0.1*0.9), 1))")
same=$(cmp -s "$work/split1" "$work/split2" && echo 0 || echo 1)
inside=$(python3 -c "print(0 if abs($first-1000) <= $bound else 1)")
result "10 % rule over 10,000 devices" $(( inside | same )) "$first canary devices (expected 1000 ± $bound), repeat: $second, same devices: $([ $same = 0 ] && echo yes || echo no)"

# loadgen --control: 2,000 clients over the two gateways (before node 2 goes down).
if [ "${LOADGEN_CLIENTS:-2000}" -gt 0 ]; then
  "$bin/loadgen" --control http://127.0.0.1:7190 --app load --quiet --drain 1 \
    --source-ips 127.0.0.2-127.0.0.40 connect --connections "${LOADGEN_CLIENTS:-2000}" --rate 2000 --hold 2 \
    >"$work/loadgen.out" 2>"$work/loadgen.err"
  python3 - "$work/loadgen.out" <<'PY'
import json, sys
s = json.loads(open(sys.argv[1]).read().strip().splitlines()[-1])
p = s["phases"][0]; a = p["access"]
print(f"loadgen --control: {p['established']}/{p['connections']} logged in; /v1/access "
      f"p50 {a['latency_us']['p50']} us p99 {a['latency_us']['p99']} us ({a['answered']} answered, "
      f"{a['failed']} failed); connect p50 {p['connect_latency_us']['p50']} us p99 "
      f"{p['connect_latency_us']['p99']} us; spread {a['per_node']} (busiest {a['max_over_even']:.3f}x even)")
PY
fi

# 3. Key rotation: the control layer signs with k2 (dev still listed); old tokens stay valid.
old_token=$(access rot-device | json 'd["token"]')
version() { curl -s 127.0.0.1:7190/v1/rules | json 'd["version"]'; }
v0=$(version)
control_toml k2 "$k2_block" 10 > "$work/control.toml.new" && mv "$work/control.toml.new" "$work/control.toml"
for _ in $(seq 50); do [ "$(version)" != "$v0" ] && break; sleep 0.1; done
new_token=$(access rot-device | json 'd["token"]')
refresh=$(curl -s -o "$work/refresh" -w '%{http_code}' -XPOST 127.0.0.1:7190/v1/token/refresh -d "{\"token\":\"$old_token\"}")
ok=0
case "$old_token" in lc2.dev.*) ;; *) ok=1 ;; esac
case "$new_token" in lc2.k2.*) ;; *) ok=1 ;; esac
login tcp://127.0.0.1:7100 rot-device "$old_token" || ok=1
login tcp://127.0.0.1:7100 rot-device "$new_token" || ok=1
[ "$refresh" = 200 ] && grep -q '"lc2.k2.' "$work/refresh" || ok=1
result "key rotation keeps old tokens valid" $ok "rules v$v0 -> v$(version); old ${old_token:0:8}.. and new ${new_token:0:7}.. tokens both log in; refresh of the old one: HTTP $refresh"

# 4. An invalid rules file on reload is refused; the old rules keep serving.
v1=$(version)
before=$(access canary-7 | json 'd["bucket"]')
control_toml k2 "$k2_block" 150 > "$work/control.toml.new" && mv "$work/control.toml.new" "$work/control.toml"
sleep 1
rules=$(curl -s 127.0.0.1:7190/v1/rules)
err=$(echo "$rules" | json 'd.get("last_reload_error") or ""')
after_code=$(curl -s -o "$work/after" -w '%{http_code}' -XPOST 127.0.0.1:7190/v1/access -d '{"app":"demo","device":"canary-7","platform":"android","app_version":"1.0.0","sdk_version":"0.1.0"}')
after=$(json 'd["bucket"]' < "$work/after")
ok=0
[ "$(version)" = "$v1" ] || ok=1
echo "$err" | grep -q "line" || ok=1
echo "$err" | grep -q "percent" || ok=1
[ "$after_code" = 200 ] && [ "$after" = "$before" ] || ok=1
result "invalid rules file refused, old rules keep serving" $ok "version stays $v1, error: $err; /v1/access still $after_code, bucket $after"

# 5. The SDK bootstrapped from the control URL survives the first endpoint being down.
kill "$gw2"; wait "$gw2" 2>/dev/null
device=$(python3 - <<'PY'
import http.client, json
c = http.client.HTTPConnection("127.0.0.1", 7190)
for i in range(1000):
    body = json.dumps({"app": "demo", "device": f"fallback-{i}", "platform": "android",
                       "app_version": "1.0.0", "sdk_version": "0.1.0"})
    c.request("POST", "/v1/access", body, {"content-type": "application/json"})
    a = json.loads(c.getresponse().read())
    if a["endpoints"][0]["url"].endswith(":7200"):
        print(f"fallback-{i}")
        break
PY
)
out=$("$bin/client" --control http://127.0.0.1:7190 --app demo --device "$device" --request 1:survived 2>&1)
ok=0
echo "$out" | grep -q 'endpoints \["tcp://127.0.0.1:7200"' || ok=1
echo "$out" | grep -q "response business 1: survived" || ok=1
result "SDK from the control URL survives the first endpoint down" $ok "device $device, first endpoint tcp://127.0.0.1:7200 (stopped): $(echo "$out" | tail -1)"

exit $failed
