#!/usr/bin/env python3
"""
burst.py — bursts after idle time: how long do N simultaneous requests take when takod has
been idle, for each server.warm_containers value asked for? This is the load an agent that
fans out sends, and what the warm-container pool is for (bench.py measures sustained load).

    sudo python3 bench/latency/burst.py                      # warm_containers 1 and 2
    sudo python3 bench/latency/burst.py --warm 1,2,4 --burst 8 --reps 6 --idle 4

Each setting gets its own takod (tests/integration/harness.py: a fresh data_dir and managed
PostgreSQL, 4 executors), then `reps` bursts of `burst` concurrent POST /execute
{"code": "print(1)"}, `idle` seconds apart. Prints client latency and server queue_ms,
p50 and max, per setting. Loopback only; the takod it starts is stopped at the end.
"""
import argparse
import concurrent.futures
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..",
                                "tests", "integration"))
from harness import Takod  # noqa: E402


def run(warm, burst, reps, idle, executors):
    t = Takod(f"server.warm_containers={warm}", executors=executors).start()
    out = []
    try:
        time.sleep(idle + 1)  # every pool full

        def one(_):
            t0 = time.perf_counter()
            r = t.request("POST", "/execute", {"code": "print(1)"})
            body = r.json()
            if r.status != 200 or body.get("stdout") != "1\n":
                raise RuntimeError(f"bad answer: {r.status} {r.body[:200]!r}")
            return (time.perf_counter() - t0) * 1000, body["timing"]["queue_ms"]

        for _ in range(reps):
            with concurrent.futures.ThreadPoolExecutor(burst) as ex:
                out += list(ex.map(one, range(burst)))
            time.sleep(idle)
    finally:
        t.cleanup()
    lat = sorted(x[0] for x in out)
    q = sorted(x[1] for x in out)
    return len(lat), lat[len(lat) // 2], lat[-1], q[len(q) // 2], q[-1]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    ap.add_argument("--warm", default="1,2", help="server.warm_containers values (default 1,2)")
    ap.add_argument("--burst", type=int, default=8, help="concurrent requests per burst (8)")
    ap.add_argument("--reps", type=int, default=6, help="bursts per setting (6)")
    ap.add_argument("--idle", type=float, default=4, help="seconds between bursts (4)")
    ap.add_argument("--executors", type=int, default=4, help="server.executors (4)")
    a = ap.parse_args()
    print(f"bursts of {a.burst} after {a.idle:g} s idle, {a.reps} per setting, "
          f"executors={a.executors}")
    print("| warm_containers | jobs | latency p50 | latency max | queue_ms p50 | queue_ms max |")
    print("|---:|---:|---:|---:|---:|---:|")
    for w in (int(x) for x in a.warm.split(",")):
        n, p50, mx, q50, qmx = run(w, a.burst, a.reps, a.idle, a.executors)
        print(f"| {w} | {n} | {p50:.0f} ms | {mx:.0f} ms | {q50:.0f} | {qmx:.0f} |", flush=True)


if __name__ == "__main__":
    main()
