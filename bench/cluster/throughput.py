#!/usr/bin/env python3
"""throughput.py — takod nodes on one PostgreSQL behind haproxy, on this machine (issue #18).

  1. a PostgreSQL of its own (cluster_common.PgServer), then node 1, 2, 3 started in turn
     (cluster.enabled = true, database.url there, --executors each, their own ports and
     data dirs, one dockerd for all); after each start, haproxy (conf/haproxy.cfg, its bind and
     server lines replaced) in front of the nodes up so far, and a closed loop through it:
     --clients-per-node x N client threads, each sending `POST /execute {"code":
     "print(1)"}` back to back on one keep-alive connection for --seconds (20), after a
     warm-up. jobs/s = successful answers / the time to the last one; p50/p99 latency.
     With --modes sync,async the same loop also runs asynchronously (POST /execute/async,
     then GET /jobs/{id}/result?wait=true through haproxy: the jobs a node has no free
     executor for wait in PostgreSQL and any node's idle executor claims them).
  2. the added latency of the PostgreSQL path, with the three nodes up: an async job
     submitted to node 2 while it is idle goes through its shared-memory ring (the fast
     path); one submitted to node 1 while every executor of node 1 runs a long job waits
     unowned in PostgreSQL until node 2 or 3 claims it (woken by LISTEN/NOTIFY). Each is
     submitted, then long-polled on the node it was submitted to, one at a time (-n, 50):
     submit -> result p50/p99, and which node ran it (the record's `node`).

Every node shares the machine's CPUs and one dockerd: the engine and the cores cap the total,
so more nodes on one machine cannot add jobs/s; what this shows is the cost of the cluster
paths, not scale-out. Prints markdown on stdout, progress on stderr. Run as root.

    sudo python3 bench/cluster/throughput.py                       # about 2 minutes
    sudo python3 bench/cluster/throughput.py --modes sync,async --seconds 10
"""
import argparse
import http.client
import json
import os
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cluster_common import Haproxy, Node, PgServer, default_paths, log, machine, pct, request  # noqa: E402

CODE = "print(1)"
SLEEP_CODE = "import time\ntime.sleep(300)"


def ok_answer(st, body):
    return st == 200 and isinstance(body, dict) and body.get("success") is True and body.get("stdout") == "1\n"


def one_job(url, conn, mode, timing=None):
    """One job through `url` on keep-alive `conn`: (ok, seconds, node); the record's timing
    ({queue_ms, startup_ms, execution_ms, total_ms}) into `timing` when given."""
    t = time.perf_counter()
    if mode == "sync":
        st, body = request(url, "POST", "/execute", {"code": CODE}, conn=conn)
        return ok_answer(st, body), time.perf_counter() - t, (body or {}).get("node")
    st, body = request(url, "POST", "/execute/async", {"code": CODE}, conn=conn)
    if st != 200 or not isinstance(body, dict) or "job_id" not in body:
        return False, time.perf_counter() - t, None
    st, rec = request(url, "GET", f"/jobs/{body['job_id']}/result?wait=true&timeout=120", conn=conn)
    good = st == 200 and isinstance(rec, dict) and rec.get("status") == "succeeded" and rec.get("stdout") == "1\n"
    if good and timing is not None and isinstance(rec.get("timing"), dict):
        timing.update(rec["timing"])
    return good, time.perf_counter() - t, (rec or {}).get("node")


def closed_loop(url, clients, seconds, mode, warmup=2):
    """C client threads, each with one keep-alive connection, back to back until the deadline."""
    host = url.split("//", 1)[1]
    lat, errors, nodes = [], [0], {}
    lock = threading.Lock()
    box = {}
    start = threading.Barrier(clients + 1, action=lambda: box.update(t0=time.perf_counter()))

    def worker():
        conn = http.client.HTTPConnection(host, timeout=180)
        for _ in range(warmup):
            try:
                one_job(url, conn, mode)
            except OSError:
                conn.close()
                conn = http.client.HTTPConnection(host, timeout=180)
        start.wait()
        deadline = box["t0"] + seconds
        while time.perf_counter() < deadline:
            try:
                good, dt, node = one_job(url, conn, mode)
            except (OSError, http.client.HTTPException):
                good, dt, node = False, 0, None
                conn.close()
                conn = http.client.HTTPConnection(host, timeout=180)
            with lock:
                if good:
                    lat.append(dt)
                    nodes[node] = nodes.get(node, 0) + 1
                else:
                    errors[0] += 1
            if not good:
                time.sleep(0.25)
        with lock:
            box["end"] = max(box.get("end", 0), time.perf_counter())
        conn.close()

    ths = [threading.Thread(target=worker, daemon=True) for _ in range(clients)]
    for t in ths:
        t.start()
    start.wait()  # every client has warmed up; the barrier's action set t0
    for t in ths:
        t.join(timeout=seconds + 300)
    wall = box.get("end", box["t0"] + seconds) - box["t0"]
    return {"mode": mode, "clients": clients, "jobs": len(lat), "errors": errors[0], "seconds": wall,
            "jobs_per_s": len(lat) / wall if wall > 0 else 0, "p50_ms": (pct(lat, 50) or 0) * 1000,
            "p99_ms": (pct(lat, 99) or 0) * 1000, "by_node": nodes}


def latency(url, n, warmup):
    """Async submit -> result at concurrency 1 on `url`: (submit->result seconds, nodes that ran them)."""
    host = url.split("//", 1)[1]
    conn = http.client.HTTPConnection(host, timeout=180)
    lat, nodes, errors, queue, total = [], {}, 0, [], []
    for i in range(warmup + n):
        timing = {}
        good, dt, node = one_job(url, conn, "async", timing)
        if not good:
            errors += 1
            continue
        if i >= warmup:
            lat.append(dt)
            nodes[node] = nodes.get(node, 0) + 1
            if "queue_ms" in timing:
                queue.append(timing["queue_ms"])
                total.append(timing["total_ms"])
    conn.close()
    return {"n": len(lat), "errors": errors, "p50_ms": (pct(lat, 50) or 0) * 1000,
            "p90_ms": (pct(lat, 90) or 0) * 1000, "p99_ms": (pct(lat, 99) or 0) * 1000,
            "queue_p50_ms": pct(queue, 50) or 0, "queue_p99_ms": pct(queue, 99) or 0,
            "total_p50_ms": pct(total, 50) or 0, "total_p99_ms": pct(total, 99) or 0,
            "by_node": nodes}


def block_executors(node, count):
    """Occupy every executor of `node` with a long job submitted to it (each seen running there)."""
    ids = []
    for _ in range(count):
        st, body = request(node.url, "POST", "/execute/async", {"code": SLEEP_CODE, "timeout": 300})
        if st != 200:
            raise SystemExit(f"could not submit a blocking job to {node.name}: {st} {body}")
        jid = body["job_id"]
        ids.append(jid)
        deadline = time.time() + 60
        while time.time() < deadline:
            st, s = request(node.url, "GET", f"/jobs/{jid}")
            if st == 200 and s.get("status") == "running":
                break
            time.sleep(0.1)
        else:
            raise SystemExit(f"blocking job {jid} did not start on {node.name}")
        st, rec = request(node.url, "GET", f"/executions/{jid}")
        if rec.get("node") not in (None, node.name):
            log(f"warning: blocking job {jid} runs on {rec.get('node')}, not {node.name}")
    return ids


def main():
    takod, conf = default_paths()
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--takod", default=takod)
    ap.add_argument("--conf", default=conf)
    ap.add_argument("--nodes", type=int, default=3)
    ap.add_argument("--executors", type=int, default=2, help="server.executors of each node")
    ap.add_argument("--clients-per-node", type=int, default=4)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--modes", default="sync")
    ap.add_argument("-n", type=int, default=50, help="jobs per latency path")
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--pg-user", default="postgres")
    ap.add_argument("--json", help="also write the raw numbers here")
    ap.add_argument("-o", dest="overrides", action="append", default=[], help="extra takod -o for every node")
    a = ap.parse_args()
    if not os.access(a.takod, os.X_OK):
        raise SystemExit(f"{a.takod} is not built")
    modes = a.modes.split(",")

    pg = PgServer(a.pg_user).start()
    nodes, hap, rows, lat_rows = [], None, [], {}
    ok = False
    try:
        for i in range(1, a.nodes + 1):
            n = Node(a.takod, a.conf, pg.conninfo, f"node{i}",
                     overrides=["cluster.enabled=true", *a.overrides], executors=a.executors)
            log(f"starting {n.name} on {n.url}")
            nodes.append(n.start())
            if hap:
                hap.stop()
            hap = Haproxy(nodes).start()
            for mode in modes:
                r = closed_loop(hap.url, a.clients_per_node * len(nodes), a.seconds, mode)
                r["nodes"] = len(nodes)
                rows.append(r)
                log(f"{len(nodes)} node(s), {mode}: {r['jobs_per_s']:.1f} jobs/s, p50 {r['p50_ms']:.0f} ms, "
                    f"p99 {r['p99_ms']:.0f} ms, {r['errors']} errors, by node {r['by_node']}")
        backend = nodes[0].health.get("backend")
        if len(nodes) >= 2:
            log("latency: the shared-memory fast path (async, on an idle node 2)")
            lat_rows["fast path (shm ring)"] = latency(nodes[1].url, a.n, a.warmup)
            log(f"latency: the PostgreSQL path (node 1's {a.executors} executors busy)")
            blockers = block_executors(nodes[0], a.executors)
            try:
                lat_rows["PostgreSQL queue (claimed by another node)"] = latency(nodes[0].url, a.n, a.warmup)
            finally:
                for jid in blockers:
                    request(nodes[0].url, "POST", f"/jobs/{jid}/cancel")
            for k, v in lat_rows.items():
                log(f"{k}: p50 {v['p50_ms']:.1f} ms, p99 {v['p99_ms']:.1f} ms, record queue_ms p50 "
                    f"{v['queue_p50_ms']:.1f}, by node {v['by_node']}")
        ok = True
    finally:
        if hap:
            hap.stop()
        for n in nodes:
            n.stop(keep=not ok)
        pg.stop(keep=not ok)

    print(f"Machine: {machine()}; backend {backend}; {a.executors} executors per node; "
          f"{a.clients_per_node} clients per node; {a.seconds:g} s per point\n")
    print("| nodes | mode | clients | jobs/s | p50 ms | p99 ms | errors | jobs per node |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        per = ", ".join(f"{k}: {v}" for k, v in sorted(r["by_node"].items(), key=lambda kv: str(kv[0])))
        print(f"| {r['nodes']} | {r['mode']} | {r['clients']} | {r['jobs_per_s']:.1f} | {r['p50_ms']:.0f} | "
              f"{r['p99_ms']:.0f} | {r['errors']} | {per} |")
    if lat_rows:
        print("\n| async submit -> result (concurrency 1) | n | client p50 ms | p90 | p99 | "
              "record queue_ms p50 | p99 | record total_ms p50 | p99 | ran on |")
        print("|---|---|---|---|---|---|---|---|---|---|")
        for k, v in lat_rows.items():
            per = ", ".join(f"{n}: {c}" for n, c in sorted(v["by_node"].items(), key=lambda kv: str(kv[0])))
            print(f"| {k} | {v['n']} | {v['p50_ms']:.1f} | {v['p90_ms']:.1f} | {v['p99_ms']:.1f} | "
                  f"{v['queue_p50_ms']:.1f} | {v['queue_p99_ms']:.1f} | {v['total_p50_ms']:.1f} | "
                  f"{v['total_p99_ms']:.1f} | {per} |")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"machine": machine(), "backend": backend, "throughput": rows, "latency": lat_rows}, f, indent=2)


if __name__ == "__main__":
    main()
