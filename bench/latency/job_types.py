#!/usr/bin/env python3
"""
job_types.py — startup of a job type other than default: the first job of the type after
takod starts (a container made for it) against the next ones (the warm container its
executor keeps for the last other kind it ran). The type's image must be built already
(POST /job-types/NAME/build or `tako build NAME`); this builds it if it is missing.

    sudo python3 bench/latency/job_types.py [--job-type data-processing] [-n 10] [--gap 1.5]

One executor, so every job meets the same pool. Prints each job's server-side
startup_ms and total_ms. Loopback only; the takod it starts is stopped at the end.
"""
import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..",
                                "tests", "integration"))
from harness import Takod  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    ap.add_argument("--job-type", default="data-processing")
    ap.add_argument("-n", type=int, default=10, help="jobs (default 10)")
    ap.add_argument("--gap", type=float, default=1.5, help="idle seconds between jobs")
    ap.add_argument("--code", default="import pandas\nprint(pandas.Series([1, 2]).sum())\n")
    a = ap.parse_args()
    t = Takod(executors=1).start()
    try:
        jt = t.request("GET", f"/job-types/{a.job_type}").json()
        if not jt.get("image_exists"):
            b = t.request("POST", f"/job-types/{a.job_type}/build", timeout=1800)
            print(f"built {a.job_type}: HTTP {b.status}", flush=True)
        rows = []
        for i in range(a.n):
            r = t.request("POST", "/execute", {"code": a.code, "job_type": a.job_type}).json()
            if r.get("status") != "succeeded":
                raise SystemExit(f"job {i} failed: {r}")
            rows.append((r["timing"]["startup_ms"], r["timing"]["total_ms"]))
            time.sleep(a.gap)
    finally:
        t.cleanup()
    print(f"job type {a.job_type}, {a.n} jobs {a.gap:g} s apart, executors=1")
    print("| job | startup_ms | total_ms |")
    print("|---:|---:|---:|")
    for i, (s, tot) in enumerate(rows):
        print(f"| {i + 1} | {s:.1f} | {tot:.1f} |")
    rest = [s for s, _ in rows[1:]]
    if rest:
        print(f"first job startup {rows[0][0]:.1f} ms; the others: median "
              f"{statistics.median(rest):.1f} ms, max {max(rest):.1f} ms")


if __name__ == "__main__":
    main()
