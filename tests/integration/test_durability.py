"""
Nothing accepted is lost: records survive restarts; async jobs queued at a stop run after
the next start; synchronous jobs keep running through a PostgreSQL outage and their
records are written when it is back; old records are swept.
"""
import concurrent.futures
import json
import os
import shutil
import signal
import socket
import tempfile
import threading
import time
import unittest

from harness import ScratchPostgres, Takod


class Outage(unittest.TestCase):
    def test_postgres_down_10s_under_sync_load_loses_no_record(self):
        pg = ScratchPostgres().start()
        t = Takod(f"database.url={pg.conninfo}", executors=2, acceptors=2)
        try:
            t.start()
            stop = threading.Event()
            ids, errors, statuses = [], [], []

            def client(n):
                while not stop.is_set():
                    try:
                        r = t.request("POST", "/execute", {"code": f"print({n})"}, timeout=120)
                        statuses.append(r.status)
                        if r.status == 200:
                            ids.append(r.json()["execution_id"])
                    except Exception as e:  # noqa: BLE001
                        errors.append(repr(e))
                    time.sleep(0.05)
            threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(3)]
            for th in threads:
                th.start()
            time.sleep(2)
            pg.stop()
            down_at = len(ids)
            # while it is down: sync jobs still run; async submits fail fast; health says so
            t.wait_for(lambda: not t.request("GET", "/health").json()["database_available"],
                       what="database_available false")
            h = t.request("GET", "/health").json()
            self.assertEqual(h["status"], "degraded")
            t0 = time.time()
            a = t.request("POST", "/execute/async", {"code": "print(1)"})
            self.assertEqual(a.status, 503)
            self.assertLess(time.time() - t0, 2)
            time.sleep(10)
            during = len(ids) - down_at
            pg.start()
            time.sleep(3)
            stop.set()
            for th in threads:
                th.join(120)
            self.assertEqual(errors, [])
            self.assertGreater(during, 0, "no sync job completed during the outage")
            self.assertTrue(all(s == 200 for s in statuses), statuses)
            # every job a client got an answer for is in PostgreSQL, finished
            def all_recorded():
                rows = t.sql("SELECT id, status FROM jobs", conninfo=pg.conninfo)
                got = {r[0]: r[1] for r in rows}
                return all(got.get(i) == "succeeded" for i in ids)
            t.wait_for(all_recorded, timeout=60, what="every record written")
            self.assertEqual(len(set(ids)), len(ids))
        finally:
            t.cleanup()
            pg.cleanup()


class Restart(unittest.TestCase):
    def test_async_job_queued_at_term_runs_after_restart(self):
        t = Takod(executors=1, acceptors=1).start()
        try:
            # one job occupies the only executor; the second waits in the queue
            first = t.request("POST", "/execute/async",
                              {"code": "import time; time.sleep(3); print('first')"}).json()
            t.wait_running()
            second = t.request("POST", "/execute/async", {"code": "print('after restart')"}).json()
            self.assertEqual(second["status"], "queued")
            self.assertEqual(t.stop(signal.SIGTERM), 0)
            t2 = Takod(data_dir=t.data_dir, executors=1, acceptors=1).start()
            try:
                r = t2.request("GET", f"/jobs/{second['job_id']}/result?wait=true&timeout=60").json()
                self.assertEqual((r["status"], r["stdout"]), ("succeeded", "after restart\n"))
                # the running one was an async job too: run again after the restart
                r1 = t2.request("GET", f"/jobs/{first['job_id']}/result?wait=true&timeout=60").json()
                self.assertEqual((r1["status"], r1["stdout"]), ("succeeded", "first\n"))
            finally:
                t2.stop()
        finally:
            t.cleanup()

    def test_retention_sweeps_old_finished_records(self):
        t = Takod("database.execution_record_ttl_days=1", executors=1, acceptors=1).start()
        try:
            # an old finished record (inserted as such: editing a finished record is what the
            # audit chain catches, and retention never deletes past a problem)
            old = "11111111-2222-4333-8444-555555555555"
            t.sql("INSERT INTO jobs (id, status, code, timeout_s, memory_bytes, cpus, node,"
                  " created_at, started_at, ended_at) VALUES"
                  f" ('{old}', 'succeeded', 'print(1)', 30, 1, 1, 'n', now() - interval '3 days',"
                  " now() - interval '3 days', now() - interval '3 days')")
            new = t.execute("print('new')")["execution_id"]
            t.stop()
            t2 = Takod("database.execution_record_ttl_days=1", data_dir=t.data_dir, executors=1,
                       acceptors=1).start()  # sweeps at start
            try:
                t2.wait_for(lambda: t2.sql(f"SELECT count(*) FROM jobs WHERE id = '{old}'") == [["0"]],
                            what="the old record swept")
                self.assertEqual(t2.sql(f"SELECT count(*) FROM jobs WHERE id = '{new}'"), [["1"]])
                # and the chain still verifies from its anchor
                v = t2.request("GET", "/audit/verify").json()
                self.assertTrue(v["ok"], v)
            finally:
                t2.stop()
        finally:
            t.cleanup()


class PreparedStatements(unittest.TestCase):
    """An acceptor runs its job INSERT and record SELECT as statements prepared once per
    connection (common/pgq.c). When a migration (another node's, in a cluster) changes a
    column's type under one, PostgreSQL fails it on that connection for ever ("cached plan
    must not change result type"): the acceptor drops its statements and prepares them
    again, so at most one request sees the error."""

    def test_a_stale_prepared_statement_is_prepared_again(self):
        t = Takod(executors=1, acceptors=1)
        try:
            t.start()
            ids = [t.execute("print(1)")["execution_id"] for _ in range(2)]
            self.assertEqual(t.request("GET", f"/executions/{ids[0]}").status, 200)
            t.sql("ALTER TABLE jobs ALTER COLUMN stdout TYPE varchar")
            statuses = [t.request("GET", f"/executions/{ids[1]}").status for _ in range(3)]
            # the first read meets the stale plan (503, the database's error); the rest work
            self.assertEqual(statuses, [503, 200, 200], statuses)
            self.assertIn("preparing them again", t.log())
            # and the job INSERT, prepared on the same connection, still works
            self.assertEqual(t.execute("print(2)")["stdout"], "2\n")
        finally:
            t.cleanup()


class KeyedOutage(unittest.TestCase):
    """An idempotency key needs PostgreSQL's unique index to be honoured: while the database
    is away a keyed sync request is refused (503 database_unavailable), never run and
    spooled, so a repeat cannot run it twice and no client holds an id that never exists."""

    def test_keyed_sync_request_is_refused_while_postgres_is_down(self):
        pg = ScratchPostgres().start()
        t = Takod(f"database.url={pg.conninfo}", executors=1, acceptors=2)
        try:
            t.start()
            pg.stop()
            t.wait_for(lambda: not t.request("GET", "/health").json()["database_available"],
                       what="database_available false")
            body = {"code": "print('once')", "idempotency_key": "outage-key-0001"}
            for _ in range(2):  # the request and its repeat: neither runs
                r = t.request("POST", "/execute", body)
                self.assertEqual(r.status, 503, r.body)
                self.assertEqual(r.json()["error_type"], "database_unavailable", r.body)
                self.assertEqual(r.headers.get("Retry-After"), "1")
            # an unkeyed sync job still runs through the outage (its record is spooled)
            plain = t.request("POST", "/execute", {"code": "print('plain')"})
            self.assertEqual(plain.status, 200, plain.body)
            self.assertEqual(os.listdir(os.path.join(t.data_dir, "dbspool")) != [], True)
            pg.start()
            t.wait_for(lambda: t.request("GET", "/health").json()["database_available"],
                       timeout=60, what="database_available true")
            # the key was not used up: the first request that reaches the database runs it,
            # a repeat gets the same job, and its id exists
            first = t.request("POST", "/execute", body)
            self.assertEqual(first.status, 200, first.body)
            again = t.request("POST", "/execute", body)
            self.assertEqual(again.status, 200, again.body)
            self.assertEqual(first.json()["execution_id"], again.json()["execution_id"])
            self.assertEqual(t.request("GET", f"/executions/{first.json()['execution_id']}").status, 200)
            rows = t.sql("SELECT count(*) FROM jobs WHERE idempotency_key = 'outage-key-0001'",
                         conninfo=pg.conninfo)
            self.assertEqual(rows, [["1"]])
            # the spooled plain record was written, and nothing conflicted
            t.wait_for(lambda: t.sql(f"SELECT status FROM jobs WHERE id = '{plain.json()['execution_id']}'",
                                     conninfo=pg.conninfo) == [["succeeded"]],
                       timeout=60, what="the spooled record written")
            self.assertEqual([f for f in os.listdir(os.path.join(t.data_dir, "dbspool"))
                              if f.endswith(".conflict")], [])
        finally:
            t.cleanup()
            pg.cleanup()


class SpoolReplayConflict(unittest.TestCase):
    """A spooled INSERT that PostgreSQL does not take (its idempotency key belongs to another
    job) is not counted as written: it is kept as .conflict and logged, and so is its
    result, which has no row to finish."""

    def test_conflicting_spooled_insert_is_kept_not_counted_as_written(self):
        t = Takod(executors=1, acceptors=1).start()
        try:
            key = "replay-conflict-01"
            orig = t.execute("print('original')", idempotency_key=key)["execution_id"]
            ghost = "0f0f0f0f-1111-4222-8333-444444444444"
            spool = os.path.join(t.data_dir, "dbspool")
            os.makedirs(spool, exist_ok=True)
            params = [ghost, "default", "print('ghost')", "{}", "30", "268435456", "1", "n", None,
                      "corr-ghost", str(int(time.time() * 1e6)), "sync", key, "f" * 64, None, None,
                      "0" * 64, "0" * 64, None, None, None, None, None, None]
            final = [ghost, "succeeded", "0", "ghost\n", "", "false", "false", None, None,
                     '{"total_ms": 1}', "[]", "runc", None, str(int(time.time() * 1e6)),
                     str(int(time.time() * 1e6))]
            # the result first (a replay waits for its INSERT), each file whole (tmp + rename)
            for kind, doc in (("final", {"params": final, "artifacts": []}),
                              ("insert", {"params": params})):
                path = os.path.join(spool, f"{ghost}.{kind}")
                with open(path + ".tmp", "w") as f:
                    json.dump(doc, f)
                os.rename(path + ".tmp", path)
            t.wait_for(lambda: sorted(os.listdir(spool)) ==
                       [f"{ghost}.final.conflict", f"{ghost}.insert.conflict"],
                       timeout=60, what="both spooled files set aside as .conflict")
            self.assertEqual(t.sql(f"SELECT count(*) FROM jobs WHERE id = '{ghost}'"), [["0"]])
            self.assertIn("spooled job record conflicts with PostgreSQL", t.log())
            self.assertIn(f"idempotency_key={key}", t.log())
            # the original keeps its key; the server is healthy and replays nothing again
            self.assertEqual(t.sql(f"SELECT id FROM jobs WHERE idempotency_key = '{key}'"), [[orig]])
            self.assertEqual(t.request("GET", "/health").status, 200)
        finally:
            t.cleanup()


class SplitReplies(unittest.TestCase):
    """A query's result and the ReadyForQuery after it may reach takod in different reads
    (a busy server, a proxy, a TCP segment boundary): the result must not be dropped. Here
    a proxy between takod and PostgreSQL delivers every ReadyForQuery 5 ms after what came
    before it; before the fix every acceptor query was answered as failed (async submit
    503 although its row had been inserted)."""

    @staticmethod
    def _proxy(listen_dir, target, slow_up=False):
        """A unix-socket proxy: server bytes one message at a time with a pause before each
        ReadyForQuery ('Z'); client bytes as they come, or (slow_up) 8 KiB every 10 ms so
        a big statement takes several writes. Returns (stop, thread)."""
        path = os.path.join(listen_dir, ".s.PGSQL.5432")
        srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        srv.bind(path)
        os.chmod(path, 0o777)
        srv.listen(64)
        srv.settimeout(0.2)
        stop = threading.Event()

        def up(c, s):
            try:
                while (b := c.recv(8192 if slow_up else 65536)):
                    s.sendall(b)
                    if slow_up:
                        time.sleep(0.01)
            except OSError:
                pass
            finally:
                s.close()

        def down(s, c):
            buf = b""
            try:
                while (b := s.recv(65536)):
                    buf += b
                    while len(buf) >= 5:
                        n = int.from_bytes(buf[1:5], "big") + 1
                        if len(buf) < n:
                            break
                        if buf[:1] == b"Z":
                            time.sleep(0.005)
                        c.sendall(buf[:n])
                        buf = buf[n:]
            except OSError:
                pass
            finally:
                c.close()

        def accept():
            while not stop.is_set():
                try:
                    c, _ = srv.accept()
                except socket.timeout:
                    continue
                s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                s.connect(target)
                for f, a in ((up, (c, s)), (down, (s, c))):
                    threading.Thread(target=f, args=a, daemon=True).start()
            srv.close()
        th = threading.Thread(target=accept, daemon=True)
        th.start()
        return stop, th

    def test_results_split_from_their_ready_for_query_are_kept(self):
        self._run(slow_up=False)

    def test_a_big_statement_is_sent_whole_while_notifications_arrive(self):
        """A statement bigger than the socket buffer goes out in several writes; a
        notification (another job's end) waking the loop in between must not stop the
        sending (before the fix the acceptor then waited for reads only, and hung)."""
        self._run(slow_up=True)

    def _run(self, slow_up):
        pg = ScratchPostgres().start()
        pdir = tempfile.mkdtemp(prefix="takod-pgproxy-")
        os.chmod(pdir, 0o755)
        stop, th = self._proxy(pdir, os.path.join(pg.dir, ".s.PGSQL.5432"), slow_up)
        t = Takod(f"database.url=host={pdir} port=5432 dbname=postgres user=takod",
                  executors=2, acceptors=1)
        try:
            t.start()
            ids = []
            for i in range(6):
                r = t.request("POST", "/execute/async", {"code": f"print({i})"})
                self.assertEqual(r.status, 200, r.body)
                ids.append(r.json()["job_id"])
            if slow_up:  # one notification while a big INSERT is still being sent
                big = {"x": "y" * 900_000}
                for i in range(3):
                    done = []
                    sender = threading.Thread(target=lambda: done.append(t.request(
                        "POST", "/execute/async", {"code": "print(1)", "input_data": big},
                        timeout=60)), daemon=True)
                    sender.start()
                    time.sleep(0.2)
                    t.sql("NOTIFY takod_job, '00000000-0000-0000-0000-000000000000 running'",
                          pg.conninfo)
                    sender.join(60)
                    self.assertTrue(done, "the big submit got no answer: its INSERT hung")
                    self.assertEqual(done[0].status, 200, done[0].body)
                    ids.append(done[0].json()["job_id"])
            r = t.request("POST", f"/jobs/{ids[0]}/fork", {"code": "print('forked')"})
            self.assertEqual(r.status, 200, r.body)
            ids.append(r.json()["job_id"])
            for i, jid in enumerate(ids):
                r = t.request("GET", f"/jobs/{jid}/result?wait=true&timeout=60", timeout=90)
                self.assertEqual(r.status, 200, r.body)
                self.assertEqual(r.json()["status"], "succeeded", r.body)
            rows = t.sql("SELECT count(*) FROM jobs WHERE status = 'succeeded'", pg.conninfo)
            self.assertEqual(rows, [[str(len(ids))]])
        finally:
            t.stop()
            t.cleanup()
            stop.set()
            th.join(5)
            pg.cleanup()
            shutil.rmtree(pdir, ignore_errors=True)


if __name__ == "__main__":
    unittest.main()
