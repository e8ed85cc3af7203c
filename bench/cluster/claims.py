#!/usr/bin/env python3
"""claims.py — claims per second of the shared queue's claim statement (issue #18).

  1. a PostgreSQL of its own (cluster_common.PgServer: initdb as `postgres` on a temp dir,
     127.0.0.1, a free port, the server's default durability settings);
  2. the schema from a real takod: one node started with database.url pointing there
     (its migrations run), then stopped;
  3. --rows (100,000) queued, unowned jobs (`print(1)`, created a millisecond apart);
  4. for each claimer count in --threads (1, 2, 4, 8) and each --batch (1, 4): every row
     handed back to the queue (node NULL) and the table vacuumed, then build/claim_bench
     runs JOBSTORE_SQL_CLAIM back to back on that many connections for --seconds (10) or
     until the queue is empty: claims/s, round trips/s and the per-call p50/p99.

The claim is the statement takod's cluster process runs (a copy in claim_bench.c, named
there); claim_bench is C with libpq so the client costs next to nothing. Prints a markdown
table on stdout, progress on stderr. Run as root (initdb as another user, takod).

    sudo python3 bench/cluster/claims.py                 # about 2.5 minutes
    sudo python3 bench/cluster/claims.py --json out.json --threads 1,4 --seconds 5
"""
import argparse
import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cluster_common import REPO, Node, PgServer, default_paths, log, machine  # noqa: E402

FILL_SQL = """
INSERT INTO jobs (id, status, mode, job_type, code, input, timeout_s, memory_bytes, cpus, node, created_at)
SELECT gen_random_uuid(), 'queued', 'async', 'default', 'print(1)', '{{}}', 30, 268435456, 1, NULL,
       now() - make_interval(secs => ({rows} - g) / 1000.0)
  FROM generate_series(1, {rows}) g
"""
RESET_SQL = "UPDATE jobs SET node = NULL, lease_until = NULL WHERE node IS NOT NULL"


def main():
    takod, conf = default_paths()
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--takod", default=takod)
    ap.add_argument("--conf", default=conf)
    ap.add_argument("--claim-bench", default=os.path.join(REPO, "build", "bench", "claim_bench"))
    ap.add_argument("--rows", type=int, default=100000)
    ap.add_argument("--threads", default="1,2,4,8")
    ap.add_argument("--batch", default="1,4", help="rows per claim (LIMIT $3): comma list")
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--no-async-commit", action="store_true",
                    help="leave out the extra points with synchronous_commit = off")
    ap.add_argument("--pg-user", default="postgres")
    ap.add_argument("--json", help="also write the raw numbers here")
    ap.add_argument("-o", dest="overrides", action="append", default=[],
                    help="extra takod -o for the schema node (e.g. executor.backend=docker)")
    a = ap.parse_args()
    for path in (a.takod, a.claim_bench):
        if not os.access(path, os.X_OK):
            raise SystemExit(f"{path} is not built (cmake --build build)")
    threads = [int(x) for x in a.threads.split(",")]
    batches = [int(x) for x in a.batch.split(",")]

    pg = PgServer(a.pg_user).start()
    results = []
    ok = False
    try:
        log("the schema: a takod node runs its migrations, then stops")
        n = Node(a.takod, a.conf, pg.conninfo, "bench-schema", overrides=a.overrides, executors=1).start()
        n.stop()
        migration = pg.query("SELECT max(version) FROM schema_migrations")
        log(f"schema at migration {migration}; {a.rows} queued unowned rows")
        pg.psql(FILL_SQL.format(rows=a.rows))
        pg.psql("VACUUM ANALYZE jobs")
        points = [(b, t, "on") for b in batches for t in threads]
        if not a.no_async_commit:  # how much of a claim is its commit's WAL flush
            points += [(batches[0], t, "off") for t in threads]
        for b, t, sync in points:
            pg.psql(RESET_SQL)
            pg.psql("VACUUM ANALYZE jobs")
            left = int(pg.query("SELECT count(*) FROM jobs WHERE status = 'queued' AND node IS NULL"))
            conninfo = pg.conninfo + ("" if sync == "on" else " options='-c synchronous_commit=off'")
            r = subprocess.run([a.claim_bench, conninfo, str(t), str(a.seconds), str(b)],
                               capture_output=True, text=True, timeout=a.seconds + 120)
            if r.returncode != 0:
                raise SystemExit(f"claim_bench failed: {r.stderr}")
            res = json.loads(r.stdout)
            res["queue_rows"] = left
            res["synchronous_commit"] = sync
            claimed = int(pg.query("SELECT count(*) FROM jobs WHERE node LIKE 'bench-%'"))
            if claimed != res["claims"]:  # a row claimed twice would be counted twice there
                raise SystemExit(f"rows claimed per PostgreSQL {claimed} != rows returned {res['claims']}")
            if res["max_rows"] > b:
                raise SystemExit(f"a claim with LIMIT {b} returned {res['max_rows']} rows")
            results.append(res)
            log(f"batch {b}, {t} claimer(s), synchronous_commit {sync}: {res['claims_per_s']:.0f} claims/s, "
                f"{res['calls_per_s']:.0f} calls/s, p50 {res['p50_ms']:.2f} ms, p99 {res['p99_ms']:.2f} ms"
                + (" (queue drained)" if res["drained"] else ""))
        version = pg.version()
        settings = {k: pg.query(f"SHOW {k}") for k in ("fsync", "synchronous_commit", "shared_buffers", "wal_sync_method")}
        ok = True
    finally:
        pg.stop(keep=not ok)

    print(f"Machine: {machine()}")
    print(f"PostgreSQL {version}: " + ", ".join(f"{k}={v}" for k, v in settings.items()))
    print(f"Queue: {a.rows} queued unowned rows, schema at migration {migration}; {a.seconds:g} s per point\n")
    print("| synchronous_commit | rows per claim | claimers | claims/s | claim statements/s | p50 ms | p99 ms |")
    print("|---|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['synchronous_commit']} | {r['batch']} | {r['threads']} | {r['claims_per_s']:.0f} | {r['calls_per_s']:.0f} | "
              f"{r['p50_ms']:.2f} | {r['p99_ms']:.2f} |" + (" drained" if r["drained"] else ""))
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"machine": machine(), "postgresql": version, "settings": settings, "rows": a.rows, "results": results}, f, indent=2)


if __name__ == "__main__":
    main()
