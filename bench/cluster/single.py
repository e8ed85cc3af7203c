#!/usr/bin/env python3
"""
single.py — does one node still behave and perform as before the shared queue? Two takod
binaries (--before, --after: e.g. a build of the commit before issue #18 and today's), each
started once with its own data dir and managed PostgreSQL, on the same machine at the same
time; rounds alternate between them (before, after, after, before, ...) so drift in the
machine's load falls on both. Per round: N back-to-back POST /execute (p50/p99 client
latency) and a closed loop of async submits + waits at concurrency C for a few seconds
(jobs/s). Prints both and the after/before ratios. stdlib only.

  python3 bench/cluster/single.py --before /tmp/oldsrc/build/takod --after build/takod
"""
import argparse
import json
import os
import statistics
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "tests", "integration"))
import harness  # noqa: E402


def start(binary, executors):
    harness.TAKOD_BIN = binary  # the class reads the module's name when it starts
    # each binary with its own tree's tako.conf (<tree>/build/takod → <tree>/conf/tako.conf)
    conf = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(binary))), "conf",
                        "tako.conf")
    t = harness.Takod(f"server.executors={executors}", conf=conf)
    t.start()
    return t


def latency(t, n):
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        r = t.request("POST", "/execute", {"code": "print(1)"})
        out.append((time.perf_counter() - t0) * 1000)
        assert r.status == 200 and r.json().get("success"), r.body[:200]
    return out


def throughput(t, conc, secs):
    done = [0]
    end = time.time() + secs
    lock = threading.Lock()

    def worker():
        while time.time() < end:
            r = t.request("POST", "/execute/async", {"code": "print(1)"})
            jid = r.json()["job_id"]
            w = t.request("GET", f"/jobs/{jid}/result?wait=true&timeout=60")
            if w.status == 200 and w.json().get("status") == "succeeded":
                with lock:
                    done[0] += 1
    ts = [threading.Thread(target=worker) for _ in range(conc)]
    t0 = time.time()
    [x.start() for x in ts]
    [x.join() for x in ts]
    return done[0] / (time.time() - t0)


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--before", required=True)
    ap.add_argument("--after", required=True)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("-n", type=int, default=60)
    ap.add_argument("-c", type=int, default=4)
    ap.add_argument("--secs", type=float, default=6)
    ap.add_argument("--executors", type=int, default=4)
    ap.add_argument("--json")
    a = ap.parse_args()
    nodes = {"before": start(a.before, a.executors), "after": start(a.after, a.executors)}
    lat = {k: [] for k in nodes}
    tput = {k: [] for k in nodes}
    try:
        for k in nodes:  # warm-up
            latency(nodes[k], 10)
        order = []
        for r in range(a.rounds):
            order += ["before", "after"] if r % 2 == 0 else ["after", "before"]
        for k in order:
            lat[k] += latency(nodes[k], a.n)
            tput[k].append(throughput(nodes[k], a.c, a.secs))
            print(f"  {k}: round done, {tput[k][-1]:.1f} jobs/s", flush=True)
    finally:
        for t in nodes.values():
            t.stop()
            t.cleanup()
    res = {}
    for k in nodes:
        res[k] = {"p50_ms": statistics.median(lat[k]), "p99_ms": pct(lat[k], 99),
                  "jobs_per_s": statistics.median(tput[k]), "n": len(lat[k])}
    print(f"\none node, before vs after (same run, {a.rounds} alternating rounds; "
          f"back-to-back n={a.n}/round; closed loop c={a.c}, {a.secs:.0f} s/round)")
    print("| binary | p50 ms | p99 ms | jobs/s (async, c=%d) |" % a.c)
    print("|---|---:|---:|---:|")
    for k in nodes:
        print(f"| {k} | {res[k]['p50_ms']:.1f} | {res[k]['p99_ms']:.1f} | {res[k]['jobs_per_s']:.1f} |")
    print(f"| after/before | {res['after']['p50_ms'] / res['before']['p50_ms']:.2f}x | "
          f"{res['after']['p99_ms'] / res['before']['p99_ms']:.2f}x | "
          f"{res['after']['jobs_per_s'] / res['before']['jobs_per_s']:.2f}x |")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(res, f, indent=1)


if __name__ == "__main__":
    main()
