#!/usr/bin/env python3
"""Helpers of scripts/bench.sh: parse load generator output, read process
figures from /proc and the admin /metrics, and print the summary table.

Every subcommand prints one value or one JSON object on standard output.
"""

import json
import os
import re
import statistics
import sys
import urllib.request


def h2load(path):
    """Parses h2load's text report."""
    text = open(path, encoding="utf-8", errors="replace").read()
    out = {}
    m = re.search(r"finished in ([\d.]+)(m?s), ([\d.]+) req/s", text)
    if m:
        seconds = float(m.group(1)) / (1000.0 if m.group(2) == "ms" else 1.0)
        out["seconds"] = seconds
        out["rps"] = float(m.group(3))
    m = re.search(
        r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, "
        r"(\d+) failed, (\d+) errored, (\d+) timeout",
        text,
    )
    if m:
        keys = ["total", "started", "done", "succeeded", "failed", "errored", "timeout"]
        out.update({k: int(v) for k, v in zip(keys, m.groups())})
    m = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", text)
    if m:
        out.update({k: int(v) for k, v in zip(["s2xx", "s3xx", "s4xx", "s5xx"], m.groups())})
    print(json.dumps(out))


def wrk(path):
    """Parses wrk's text report and the line printed by grpc-web.lua."""
    text = open(path, encoding="utf-8", errors="replace").read()
    out = {"non2xx": 0, "socket_errors": 0}
    m = re.search(r"(\d+) requests in ([\d.]+)(m?s)", text)
    if m:
        out["requests"] = int(m.group(1))
        out["seconds"] = float(m.group(2)) / (1000.0 if m.group(3) == "ms" else 1.0)
    m = re.search(r"Requests/sec:\s+([\d.]+)", text)
    if m:
        out["rps"] = float(m.group(1))
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    if m:
        out["non2xx"] = int(m.group(1))
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    if m:
        out["socket_errors"] = sum(int(g) for g in m.groups())
    m = re.search(r"grpc-web ok=(\d+) failed=(\d+) first=(.*)", text)
    if m:
        out["ok"] = int(m.group(1))
        out["failed"] = int(m.group(2))
        out["first"] = m.group(3).strip()
    print(json.dumps(out))


def get(path, dotted):
    """Prints one field of a JSON file (dotted path); empty when absent."""
    with open(path, encoding="utf-8") as f:
        lines = [line for line in f if line.strip().startswith("{")]
    value = json.loads(lines[-1]) if lines else {}
    for part in dotted.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    print("" if value is None else value)


def calls(url, component, method):
    """Sums valora_calls_total of one component and method: OK, Cancelled
    (the client went away, as load generators do with the calls in flight
    when their time is up) and any other code."""
    text = urllib.request.urlopen(url, timeout=5).read().decode()
    ok = cancelled = bad = 0.0
    for line in text.splitlines():
        if not line.startswith("valora_calls_total{"):
            continue
        labels, _, value = line.rpartition(" ")
        if f'component="{component}"' not in labels or f'method="{method}"' not in labels:
            continue
        if 'code="OK"' in labels:
            ok += float(value)
        elif 'code="Cancelled"' in labels:
            cancelled += float(value)
        else:
            bad += float(value)
    print(json.dumps({"ok": int(ok), "cancelled": int(cancelled), "bad": int(bad)}))


def cpu(*pids):
    """Sums utime and stime (clock ticks) of processes, all their threads."""
    total = 0
    for pid in pids:
        with open(f"/proc/{pid}/stat", encoding="utf-8") as f:
            fields = f.read().rpartition(")")[2].split()
        # Fields after the command: state is field 3, utime 14, stime 15.
        total += int(fields[11]) + int(fields[12])
    print(total)


def pss(*pids):
    """Sums the proportional set size (KiB) of processes."""
    total = 0
    for pid in pids:
        with open(f"/proc/{pid}/smaps_rollup", encoding="utf-8") as f:
            for line in f:
                if line.startswith("Pss:"):
                    total += int(line.split()[1])
    print(total)


# The rows of the summary: comparison, metric, side A, side B, how A and B
# compare ("ratio" A/B, "diff" A-B, "value" A alone), the target as
# (operator, bound) or None, and the row's label.
ROWS = [
    ("edge_vs_nginx", "cpu_us_per_call", "edge", "nginx", "ratio", ("<=", 1.0),
     "edge vs nginx, GetListing, TLS in, mTLS out: proxy CPU per call (us)"),
    ("edge_vs_nginx", "rps", "edge", "nginx", "ratio", (">=", 1.0),
     "edge vs nginx: throughput (calls/s)"),
    ("edge_vs_nginx", "cpu_util", "edge", "nginx", "ratio", None,
     "edge vs nginx: proxy core busy (share of core 0)"),
    ("latency", "unloaded_p50", "edge", "direct", "diff", ("<=", 100.0),
     "edge + mTLS hop vs direct to marketplace, 1 call in flight: added p50 (us)"),
    ("latency", "unloaded_p99", "edge", "direct", "diff", ("<=", 300.0),
     "edge + mTLS hop vs direct, 1 call in flight: added p99 (us)"),
    ("latency", "half_p50", "edge", "direct", "diff", ("<=", 100.0),
     "edge + mTLS hop vs direct, half of edge throughput: added p50 (us)"),
    ("latency", "half_p99", "edge", "direct", "diff", ("<=", 300.0),
     "edge + mTLS hop vs direct, half of edge throughput: added p99 (us)"),
    ("latency", "unloaded_p50", "nginx", "direct", "diff", None,
     "reference: nginx + mTLS hop vs direct, 1 call in flight: added p50 (us)"),
    ("latency", "unloaded_p99", "nginx", "direct", "diff", None,
     "reference: nginx + mTLS hop vs direct, 1 call in flight: added p99 (us)"),
    ("latency", "half_p50", "nginx", "direct", "diff", None,
     "reference: nginx + mTLS hop vs direct, half of edge throughput: added p50 (us)"),
    ("latency", "half_p99", "nginx", "direct", "diff", None,
     "reference: nginx + mTLS hop vs direct, half of edge throughput: added p99 (us)"),
    ("tls_vs_h2c", "rps", "tls", "h2c", "ratio", (">=", 0.9),
     "substitute for mTLS vs plaintext upstream: edge with TLS in vs h2c in, throughput"),
    ("tls_vs_h2c", "cpu_us_per_call", "tls", "h2c", "ratio", None,
     "edge with TLS in vs h2c in: proxy CPU per call (us)"),
    ("login_storm", "jwks_p99", "storm", "calm", "ratio", ("<=", 1.5),
     "GetJwks p99 during a login storm vs without (us)"),
    ("login_storm", "login_rps", "storm", "model", "ratio", (">=", 0.9),
     "login throughput vs cores / one argon2id hash (logins/s)"),
    ("grpc_web", "rps", "grpc_web", "grpc", "ratio", (">=", 0.7),
     "grpc-web (HTTP/1.1, binary) vs gRPC through the edge: throughput"),
    ("grpc_web", "cpu_us_per_call", "grpc_web", "grpc", "ratio", None,
     "grpc-web vs gRPC: edge CPU per call (us)"),
    ("rejections", "cpu_us_per_call", "accepted", "bad_key", "ratio", (">=", 2.0),
     "accepted vs bad-key calls: edge CPU per call (us)"),
    ("rejections", "cpu_us_per_call", "accepted", "over_limit", "ratio", (">=", 2.0),
     "accepted vs over-limit calls: edge CPU per call (us)"),
    ("tls_burst", "p99", "burst", "steady", "ratio", ("<=", 2.0),
     "steady GetListing p99 during new TLS connections vs without (us)"),
    ("tls_burst", "new_connections_per_s", "burst", None, "value", None,
     "new TLS connections per second during the burst"),
    ("memory", "pss_idle_kib", "edge", "nginx", "ratio", None,
     "memory: proxy idle, fresh process, resident (PSS, KiB)"),
    ("memory", "pss_per_1000_kib", "edge", "nginx", "ratio", None,
     "memory: proxy per 1000 idle TLS client connections, fresh process (PSS, KiB)"),
    ("memory", "pss_per_1000_again_kib", "edge", "nginx", "ratio", None,
     "memory: per 1000 idle TLS client connections again, after earlier ones closed (PSS, KiB)"),
]


def fmt(x):
    if x is None:
        return "-"
    if abs(x) >= 100:
        return f"{x:.0f}"
    if abs(x) >= 10:
        return f"{x:.1f}"
    return f"{x:.2f}"


def summary(results_path, out_json):
    """Prints the table of medians, per-round comparisons and their spread."""
    data = {}
    with open(results_path, encoding="utf-8") as f:
        for line in f:
            r = json.loads(line)
            data.setdefault((r["cmp"], r["metric"], r["side"]), {})[r["round"]] = r["value"]
    rows = []
    header = "| comparison | A | B | A vs B, median | per round, min-max | target | result |"
    print(header)
    print("|---|---|---|---|---|---|---|")
    for cmp, metric, a, b, kind, target, label in ROWS:
        va = data.get((cmp, metric, a), {})
        vb = data.get((cmp, metric, b), {}) if b else {}
        if not va:
            continue
        ma = statistics.median(va.values())
        mb = statistics.median(vb.values()) if vb else None
        per_round = []
        for rnd in sorted(va):
            if kind == "value":
                per_round.append(va[rnd])
            elif rnd in vb:
                if kind == "ratio":
                    per_round.append(va[rnd] / vb[rnd] if vb[rnd] else float("inf"))
                else:
                    per_round.append(va[rnd] - vb[rnd])
        med = statistics.median(per_round) if per_round else None
        unit = "x" if kind == "ratio" else ""
        result = "-"
        if target and med is not None:
            op, bound = target
            met = med <= bound if op == "<=" else med >= bound
            result = "met" if met else "NOT met"
        target_text = f"{'<=' if target[0] == '<=' else '>='} {fmt(target[1])}{unit}" if target else "-"
        a_text = f"{a} {fmt(ma)}"
        b_text = f"{b} {fmt(mb)}" if b else "-"
        cmp_text = f"{fmt(med)}{unit}" if kind != "value" else "-"
        spread = f"{fmt(min(per_round))}-{fmt(max(per_round))}{unit}" if per_round and kind != "value" else "-"
        print(f"| {label} | {a_text} | {b_text} | {cmp_text} | {spread} | {target_text} | {result} |")
        rows.append({
            "comparison": cmp, "metric": metric, "label": label, "a": a, "b": b,
            "a_median": ma, "b_median": mb, "kind": kind, "median": med,
            "min": min(per_round) if per_round else None,
            "max": max(per_round) if per_round else None,
            "rounds": len(per_round), "target": target, "result": result,
        })
    with open(out_json, "w", encoding="utf-8") as f:
        json.dump(rows, f, indent=1)


def main():
    command, args = sys.argv[1], sys.argv[2:]
    functions = {
        "h2load": h2load, "wrk": wrk, "get": get, "calls": calls,
        "cpu": cpu, "pss": pss, "summary": summary,
    }
    functions[command](*args)


if __name__ == "__main__":
    main()
