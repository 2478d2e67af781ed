#!/usr/bin/env python3
"""Turns the JSON lines benches/report.sh collected into the tables of docs/BENCHMARKS.md."""
import json
import sys
from pathlib import Path

out = Path(sys.argv[1] if len(sys.argv) > 1 else "target/report")


def lines(name):
    path = out / name
    if not path.exists():
        return []
    return [json.loads(l) for l in path.read_text().splitlines() if l.strip()]


def phase(summary):
    return summary["phases"][0] if summary.get("phases") else summary


print(f"Run: {(out / 'date').read_text().strip() if (out / 'date').exists() else '?'}\n")
if (out / "idle.txt").exists():
    print("Idle memory:\n```\n" + (out / "idle.txt").read_text().strip() + "\n```\n")

for name, label in [("connect.jsonl", "connect+login"),
                    ("unicast.jsonl", "batched unicast (raw receivers)"),
                    ("unicast-sdk.jsonl", "batched unicast (SDK receivers)"),
                    ("request.jsonl", "requests (echo)")]:
    for s in lines(name):
        p = phase(s)
        print(f"- {label}: {p['established']}/{p['connections']} connections, "
              f"{p['throughput_per_s']:,.0f}/s, reach {p['reach_rate']:.4f}, "
              + (f"latency p50 {p['latency_us']['p50']:,} us p99 {p['latency_us']['p99']:,} us, "
                 if name != "connect.jsonl" else "")
              + f"connect p50 {p['connect_latency_us']['p50']:,} us, "
              f"load CPU {s['load_cpu_s']:.1f} s, server CPU {p.get('server_cpu_s') or 0:.2f} s")
print()

step_s = float((out / "step_s").read_text()) if (out / "step_s").exists() else 10.0
peaks = {}
names = {"longconn": "longconn (raw subscribers)", "longconn-sdk": "longconn (SDK)"}
for system in ["longconn", "longconn-sdk", "nats", "mosquitto"]:
    rows = lines(f"fanout-{system}.jsonl")
    if not rows:
        continue
    print(f"Fan-out, {names.get(system, system)}:\n")
    print("| msgs/s | offered/s | deliveries/s | reach | p50 ms | p99 ms | server CPU s per M deliveries | load CPU s |")
    print("|---|---|---|---|---|---|---|---|")
    peak = None
    for s in rows:
        p = phase(s)
        members = p["established"]
        msgs_per_s = round(p["sent"] / step_s)
        offered = msgs_per_s * members
        # Deliveries over the offered window (or longer, if deliveries ran late): N
        # publishes at R/s span N/R seconds.
        active = p["received"] / p["throughput_per_s"] if p["throughput_per_s"] else 0.0
        window = max(active, p["sent"] / msgs_per_s if msgs_per_s else 0.0)
        got = p["received"] / window if window else 0.0
        cpu = p.get("server_cpu_s") or 0.0
        per_m = cpu / p["received"] * 1e6 if p["received"] else float("nan")
        print(f"| {msgs_per_s} | {offered:,} | {got:,.0f} | {p['reach_rate']:.4f} | "
              f"{p['latency_us']['p50'] / 1000:.1f} | {p['latency_us']['p99'] / 1000:.1f} | "
              f"{per_m:.1f} | {s['load_cpu_s']:.1f} |")
        if p["reach_rate"] >= 0.999 and got >= 0.9 * offered:
            peak = (msgs_per_s, got)
    peaks[system] = peak
    print()
print("Sustained peak (highest step with reach >= 99.9 % delivering >= 90 % of offered):")
for system, peak in peaks.items():
    print(f"- {system}: {'none' if peak is None else f'{peak[0]} msgs/s, {peak[1]:,.0f} deliveries/s'}")
if peaks.get("longconn-sdk") and peaks.get("nats"):
    print(f"- longconn (SDK) / nats-server: {peaks['longconn-sdk'][1] / peaks['nats'][1]:.2f}x")
if peaks.get("longconn") and peaks.get("nats"):
    print(f"- longconn / nats-server: {peaks['longconn'][1] / peaks['nats'][1]:.2f}x")
if peaks.get("longconn") and peaks.get("mosquitto"):
    print(f"- longconn / mosquitto: {peaks['longconn'][1] / peaks['mosquitto'][1]:.2f}x")
