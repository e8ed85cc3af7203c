"""
Several takod nodes on one PostgreSQL (issue 18), all real processes on this machine: a
PostgreSQL server of the test's own on 127.0.0.1 (TCP, as a separate database server is
reached), three takod nodes A, B and C (cluster.enabled, cluster.lease = 3 s, their own
ports and data dirs, one dockerd), A with one executor and B and C with four each, and
Debian's haproxy in front of them on conf/haproxy.cfg.

Every job's status changes are recorded by a trigger of the test's own (test_transitions,
installed once A has migrated the database): a job "run twice to completion" is a job with
two terminal transitions there, whatever the record says at the end.

The cases run in order (their names are numbered) and each starts with all three nodes up
on their usual settings (setUp restarts what a failed case left down); the quota case runs
last, on nodes restarted with auth.max_concurrent_jobs = 2.
"""
import concurrent.futures
import http.client
import json
import os
import signal
import subprocess
import sys
import threading
import time
import unittest

from harness import HAPROXY_BIN, Haproxy, PgConn, Takod, TcpPostgres, kill_tree, pid_alive

LEASE = 3
KEY = "cluster-key-one-0123456789abcdef"
KEY2 = "cluster-key-two-0123456789abcdef"
ADMIN = "cluster-admin-0123456789abcdef"
TERMINAL = ("succeeded", "failed", "timeout", "oom", "cancelled")
NODE_IDS = {"a": "node-a", "b": "node-b", "c": "node-c"}
EXECUTORS = {"a": 1, "b": 4, "c": 4}

TRANSITIONS_SQL = """
CREATE TABLE IF NOT EXISTS test_transitions (
  job_id uuid NOT NULL, status text NOT NULL, node text, attempt integer,
  at timestamptz NOT NULL DEFAULT clock_timestamp());
CREATE OR REPLACE FUNCTION test_record_transition() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP = 'INSERT' OR NEW.status IS DISTINCT FROM OLD.status THEN
    INSERT INTO test_transitions (job_id, status, node, attempt)
    VALUES (NEW.id, NEW.status, NEW.node, NEW.attempt);
  END IF;
  RETURN NULL;
END $$;
DROP TRIGGER IF EXISTS test_transitions ON jobs;
CREATE TRIGGER test_transitions AFTER INSERT OR UPDATE OF status ON jobs
  FOR EACH ROW EXECUTE FUNCTION test_record_transition();
"""


def note(text):
    """A measurement in the test's output (not asserted on)."""
    print(f"\n  {text}", file=sys.stderr, flush=True)


def sq(ids):
    """A SQL array literal of job ids."""
    return "ARRAY[" + ",".join(f"'{i}'" for i in ids) + "]::uuid[]"


class Cluster(unittest.TestCase):
    pg = None
    lb = None
    nodes = {}
    extra = {}  # name -> the extra overrides its running process was started with

    # ---- the cluster ----
    @classmethod
    def make_node(cls, name):
        return Takod(f"database.url={cls.pg.conninfo}", "cluster.enabled=true",
                     f"cluster.lease={LEASE}", f"server.node_id={NODE_IDS[name]}",
                     f"auth.api_keys={KEY},{KEY2}", f"auth.admin_key={ADMIN}",
                     "auth.rate_limit_per_minute=0", executors=EXECUTORS[name], acceptors=2)

    @classmethod
    def start_node(cls, name, extra=()):
        """(Re)start a node on its own data dir and port, with extra overrides."""
        t = cls.nodes[name]
        base = [o for o in t.overrides if o not in cls.extra.get(name, ())]
        t.overrides = base + list(extra)
        cls.extra[name] = list(extra)
        t.start(timeout=90)
        return t

    @classmethod
    def setUpClass(cls):
        cls.pg = TcpPostgres().start()
        try:
            for name in "abc":
                cls.nodes[name] = cls.make_node(name)
            cls.start_node("a")  # the first node migrates the empty database
            cls.pg.sql(TRANSITIONS_SQL)
            cls.start_node("b")
            cls.start_node("c")
            if HAPROXY_BIN:
                cls.lb = Haproxy([(NODE_IDS[n], cls.nodes[n].url[len("http://"):]) for n in "abc"],
                                 default_server="inter 200ms fastinter 100ms downinter 200ms "
                                                "fall 1 rise 2").start()
        except BaseException:
            cls.tearDownClass()
            raise

    @classmethod
    def tearDownClass(cls):
        if cls.lb:
            cls.lb.cleanup()
        for t in cls.nodes.values():
            try:
                t.stop(signal.SIGTERM, timeout=30)
            except AssertionError:
                pass
            t.cleanup()
        if cls.pg:
            cls.pg.cleanup()

    def setUp(self):
        self.ensure_nodes()

    def ensure_nodes(self, extra=()):
        """Every node running, with exactly these extra overrides (restarted if not)."""
        for name, t in self.nodes.items():
            alive = t.proc is not None and t.proc.poll() is None
            if alive and self.extra.get(name, []) == list(extra):
                continue
            if alive:
                self.assertEqual(t.stop(signal.SIGQUIT, timeout=60), 0, t.log()[-4000:])
            else:
                t.stop()  # a node a failed case left dead: close its log
            self.start_node(name, extra)

    # ---- HTTP and SQL ----
    def call(self, node, method, path, body=None, key=KEY, timeout=60):
        t = self.nodes[node]
        return t.request(method, path, body, headers={"X-API-Key": key}, timeout=timeout)

    def ok(self, node, method, path, body=None, key=KEY, timeout=60):
        r = self.call(node, method, path, body, key=key, timeout=timeout)
        self.assertEqual(r.status, 200, (node, method, path, r.body[:2000]))
        return r.json()

    def submit(self, node, code, key=KEY, **fields):
        return self.ok(node, "POST", "/execute/async", {"code": code, **fields}, key=key)["job_id"]

    def sql(self, query):
        return self.pg.sql(query)

    def wait(self, cond, timeout, what):
        deadline = time.time() + timeout
        while time.time() < deadline:
            v = cond()
            if v:
                return v
            time.sleep(0.05)
        logs = "\n".join(f"--- node {n} ---\n{t.log()[-3000:]}" for n, t in self.nodes.items())
        raise AssertionError(f"timed out after {timeout}s waiting for {what}\n{logs}")

    def wait_terminal(self, ids, timeout):
        q = f"SELECT count(*) FROM jobs WHERE id = ANY({sq(ids)}) AND status IN {TERMINAL}"
        self.wait(lambda: int(self.sql(q)[0][0]) == len(ids), timeout,
                  f"{len(ids)} jobs to finish")
        return {r[0]: r[1:] for r in self.sql(
            f"SELECT id, status, node, attempt, extract(epoch FROM ended_at) FROM jobs"
            f" WHERE id = ANY({sq(ids)})")}

    def terminal_transitions(self, ids):
        """{job id: [(status, node), ...]} of the jobs' transitions into a final status."""
        out = {i: [] for i in ids}
        for jid, status, node in self.sql(
                f"SELECT job_id, status, coalesce(node, '') FROM test_transitions"
                f" WHERE job_id = ANY({sq(ids)}) AND status IN {TERMINAL} ORDER BY at"):
            out[jid].append((status, node))
        return out

    def assert_finished_once(self, ids):
        """Each job reached a final status exactly once, and that status is succeeded."""
        tt = self.terminal_transitions(ids)
        twice = {j: v for j, v in tt.items() if len(v) != 1 or v[0][0] != "succeeded"}
        self.assertEqual(twice, {}, "jobs without exactly one terminal transition (succeeded)")

    def running_on(self, node):
        return int(self.sql(f"SELECT count(*) FROM jobs WHERE node = '{NODE_IDS[node]}'"
                            " AND status = 'running'")[0][0])

    def idle(self, timeout=60):
        """Nothing queued or running anywhere in the cluster."""
        self.wait(lambda: self.sql("SELECT count(*) FROM jobs WHERE status IN"
                                   " ('queued', 'running')") == [["0"]], timeout,
                  "the cluster to be idle")

    def events(self, node, job_id, timeout=60):
        """GET /jobs/{id}/events with the key, read to its end (Takod.events)."""
        return self.nodes[node].events(job_id, timeout, headers={"X-API-Key": KEY})

    # ---- the cases ----
    def test_01_nodes_join_without_migrating_and_node_ids_are_unique(self):
        a, b, c = (self.nodes[n] for n in "abc")
        self.assertIn("applied migration", a.log())
        for t in (b, c):  # they found the schema A made: no migration of their own
            self.assertNotIn("applied migration", t.log())
        # a fourth node claiming B's node_id, on a data dir and port of its own
        d = Takod(f"database.url={self.pg.conninfo}", "cluster.enabled=true",
                  f"cluster.lease={LEASE}", "server.node_id=node-b", f"auth.api_keys={KEY}",
                  executors=1, acceptors=1)
        try:
            r = subprocess.run(d.args(), capture_output=True, text=True, timeout=60)
            self.assertEqual(r.returncode, 2, r.stderr[-3000:])
            self.assertIn('node_id "node-b" is in use by a live node', r.stderr)
            self.assertIn(f"pid {b.pid}", r.stderr)
        finally:
            d.cleanup()
        self.assertTrue(pid_alive(b.pid))
        self.assertEqual(b.request("GET", "/health").status, 200)

    def test_01b_health_and_nodes_show_the_cluster(self):
        for n, t in self.nodes.items():
            h = t.request("GET", "/health").json()
            self.assertEqual(h.get("node"), NODE_IDS[n], h)
            # the live node count is the settler's, refreshed every ~2 s
            self.wait(lambda: t.request("GET", "/health").json().get("cluster")
                      == {"enabled": True, "live_nodes": 3}, 10, f"{n}'s /health to count 3 nodes")
        nodes = self.ok("b", "GET", "/nodes", key=ADMIN)
        self.assertEqual(nodes["lease_s"], LEASE)
        got = {x["node_id"]: x for x in nodes["nodes"]}
        for n, t in self.nodes.items():
            x = got[NODE_IDS[n]]
            self.assertEqual((x["live"], x["cluster"], x["executors"], x["pid"], x["stopped_at"]),
                             (True, True, EXECUTORS[n], t.pid, None), x)
            self.assertEqual(x["address"], t.url, x)
        self.assertIn(self.call("b", "GET", "/nodes").status, (401, 403))  # not the admin key

    def test_02_async_jobs_sent_to_one_node_run_on_all(self):
        n_jobs = 300
        # what each node holds (claimed or running) while they run: never much more than
        # its executors (a claim takes only what the node has room for; the rest waits
        # unowned in PostgreSQL for whichever node is free first)
        held, stop = {}, threading.Event()

        def sample():
            db = PgConn(self.pg.conninfo)
            try:
                while not stop.is_set():
                    for node, n in db.sql("SELECT node, count(*) FROM jobs WHERE node IS NOT NULL"
                                          " AND status IN ('queued', 'running') GROUP BY node"):
                        held[node] = max(held.get(node, 0), int(n))
                    time.sleep(0.1)
            finally:
                db.close()

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        try:
            with concurrent.futures.ThreadPoolExecutor(8) as pool:
                ids = list(pool.map(lambda i: self.submit("a", f"print({i})"), range(n_jobs)))
            self.assertEqual(len(set(ids)), n_jobs)
            rec = self.wait_terminal(ids, timeout=150)
        finally:
            stop.set()
            sampler.join(30)
        note(f"most jobs one node held at once: {dict(sorted(held.items()))}")
        for n, node in NODE_IDS.items():  # slack: two acceptors' fast paths racing
            self.assertLessEqual(held.get(node, 0), EXECUTORS[n] + 2, f"{node} held too many: {held}")
        statuses = {v[0] for v in rec.values()}
        self.assertEqual(statuses, {"succeeded"}, [v for v in rec.values() if v[0] != "succeeded"][:5])
        attempts = {v[2] for v in rec.values()}
        self.assertEqual(attempts, {"1"}, "a job ran more than once")
        by_node = {}
        for v in rec.values():
            by_node[v[1]] = by_node.get(v[1], 0) + 1
        self.assertLessEqual(set(by_node), set(NODE_IDS.values()), by_node)
        on_bc = by_node.get("node-b", 0) + by_node.get("node-c", 0)
        self.assertGreater(on_bc, n_jobs // 2, f"most jobs should run on B and C: {by_node}")
        self.assertGreater(by_node.get("node-b", 0), 0, by_node)
        self.assertGreater(by_node.get("node-c", 0), 0, by_node)
        note(f"300 jobs sent to A ran on: {dict(sorted(by_node.items()))}")
        self.assert_finished_once(ids)
        runs = self.sql(f"SELECT job_id, count(*) FROM test_transitions WHERE job_id ="
                        f" ANY({sq(ids)}) AND status = 'running' GROUP BY job_id"
                        f" HAVING count(*) <> 1")
        self.assertEqual(runs, [], "jobs that started running more than once")
        # the record through the API says the same: node and stdout, asked of another node
        j = self.ok("c", "GET", f"/jobs/{ids[7]}/result")
        self.assertEqual((j["status"], j["stdout"], j["node"]), ("succeeded", "7\n", rec[ids[7]][1]))

    def test_03_read_routes_answer_through_any_node(self):
        code = ("import json\nprint('hello from b')\n"
                "open('/output/report.txt', 'w').write('r' * 1000)\n"
                "json.dump({'answer': 42}, open('/output/result.json', 'w'))\n")
        r = self.ok("b", "POST", "/execute", {"code": code})
        jid = r["execution_id"]
        self.assertEqual((r["success"], r["node"]), (True, "node-b"), r)
        for n in "ac":
            j = self.ok(n, "GET", f"/jobs/{jid}")
            self.assertEqual((j["status"], j["node"]), ("succeeded", "node-b"), j)
            res = self.ok(n, "GET", f"/jobs/{jid}/result")
            self.assertEqual((res["stdout"], res["output"], res["node"]),
                             ("hello from b\n", {"answer": 42}, "node-b"), res)
            page = self.ok(n, "GET", "/executions?limit=20")
            item = next(i for i in page["items"] if i["execution_id"] == jid)
            self.assertEqual(item["node"], "node-b", item)
            full = self.ok(n, "GET", f"/executions/{jid}?view=full")
            self.assertEqual([a["name"] for a in full["artifacts"]], ["report.txt"], full)
            art = self.call(n, "GET", f"/jobs/{jid}/artifacts/report.txt")
            self.assertEqual((art.status, art.body), (200, b"r" * 1000))
            # another key does not see it there either
            self.assertEqual(self.call(n, "GET", f"/jobs/{jid}", key=KEY2).status, 404)
        # a long-poll on C for a job that finishes on B
        late = self.submit("b", "import time\ntime.sleep(1.5)\nprint('late')")
        t0 = time.time()
        res = self.ok("c", "GET", f"/jobs/{late}/result?wait=true&timeout=60", timeout=90)
        self.assertEqual((res["status"], res["stdout"], res["node"]), ("succeeded", "late\n", "node-b"), res)
        self.assertGreater(time.time() - t0, 0.5, "the long-poll answered before the job had run")
        # the event stream on A of a job running on B: its status changes and its result
        ev = self.submit("b", "import time\ntime.sleep(1)\nprint('tick 1', flush=True)\n"
                              "time.sleep(1)\nprint('tick 2', flush=True)\n")
        status, ctype, events = self.events("a", ev)
        self.assertEqual((status, ctype), (200, "text/event-stream"))
        kinds = [e for e, _ in events]
        self.assertEqual(kinds[-1], "result", kinds)
        self.assertIn("running", [d.get("status") for e, d in events if e == "status"], events)
        final = events[-1][1]
        self.assertEqual((final["status"], final["stdout"], final["node"]),
                         ("succeeded", "tick 1\ntick 2\n", "node-b"), final)

    def test_04_sse_live_output_through_another_node(self):
        """The live output of a job running on B reaches a stream on C while it runs."""
        ev = self.submit("b", "import time\ntime.sleep(1)\nprint('tick 1', flush=True)\n"
                              "time.sleep(1.5)\nprint('tick 2', flush=True)\n")
        status, _, events = self.events("c", ev)
        self.assertEqual(status, 200)
        live = "".join(d for e, d in events if e == "stdout")
        self.assertEqual(live, "tick 1\ntick 2\n", [e for e, _ in events])

    def test_05_cancel_through_another_node(self):
        jid = self.submit("b", "import time\ntime.sleep(30)")
        self.wait(lambda: self.sql(f"SELECT status, node FROM jobs WHERE id = '{jid}'")
                  == [["running", "node-b"]], 30, "the job to run on B")
        t0 = time.time()
        r = self.ok("c", "POST", f"/jobs/{jid}/cancel")
        self.assertEqual((r["status"], r["job_id"]), ("cancelled", jid), r)
        self.wait(lambda: self.ok("a", "GET", f"/jobs/{jid}")["status"] == "cancelled", 3,
                  "the record to be cancelled")
        cancelled_after = time.time() - t0
        # B itself stopped it: its executor is free again, the job's program gone
        self.wait(lambda: self.ok("b", "GET", "/pool/stats")["running"] == 0,
                  5, "B's executor to stop the cancelled job")
        stopped_after = time.time() - t0
        note(f"cancel through C of a job on B: record cancelled after {cancelled_after:.2f} s,"
             f" B's executor free after {stopped_after:.2f} s")
        self.assertLess(cancelled_after, 2.0)
        self.assertLess(stopped_after, 3.0)
        tt = self.terminal_transitions([jid])[jid]
        self.assertEqual([s for s, _ in tt], ["cancelled"], tt)

    def test_06_a_killed_node_s_jobs_finish_elsewhere(self):
        b = self.nodes["b"]
        n_jobs = 16
        ids = [self.submit("a", "import time\ntime.sleep(2)\nprint('done')") for _ in range(n_jobs)]
        self.wait(lambda: self.running_on("b") >= 3, 30, "B to run some of the jobs")
        # what B holds: jobs it runs, and jobs it claimed and has not started yet
        held = {r[0]: r[1] for r in self.sql(
            "SELECT id, status FROM jobs WHERE node = 'node-b'"
            f" AND status IN ('queued', 'running') AND id = ANY({sq(ids)})")}
        with open(os.path.join(b.data_dir, "takod.pid")) as f:
            master = int(f.read())
        self.assertEqual(master, b.pid)
        t_kill = time.time()
        killed = kill_tree(master)
        b.proc.wait(10)
        self.assertGreater(len(killed), 5)
        self.wait(lambda: not [p for p in killed if pid_alive(p)], 10, "B's processes to be gone")
        # every job finishes, those B held on A or C, within a lease, the retry backoff, the
        # job's own 2 s and the queue ahead of it (generously: 2 cores)
        bound = LEASE + 2 + 2 + 20
        rec = self.wait_terminal(ids, timeout=bound + 30)
        self.assertEqual({v[0] for v in rec.values()}, {"succeeded"}, rec)
        for jid, was in held.items():
            status, node, attempt, ended = rec[jid]
            self.assertIn(node, ("node-a", "node-c"), (jid, was, rec[jid]))
            if was == "running":  # B's run counted as an attempt
                self.assertGreaterEqual(int(attempt), 2, (jid, was, rec[jid]))
            self.assertLess(float(ended) - t_kill, bound, (jid, was, rec[jid]))
        self.assert_finished_once(ids)
        tt = self.terminal_transitions(ids)
        self.assertEqual([j for j in held if tt[j][0][1] == "node-b"], [])
        # A and C say so: each job B held was taken over by one of them, and neither had
        # a start or a result refused by the fencing (no one ran a job another node owned)
        logs = self.nodes["a"].log() + self.nodes["c"].log()
        took = [line for line in logs.splitlines() if "took over a job" in line]
        self.assertEqual(sorted(j for j in held if any(f"job={j}" in line for line in took)),
                         sorted(held), took)
        fenced = [line for line in logs.splitlines()
                  if ("result not recorded" in line or "job not run here" in line)
                  and any(j in line for j in ids)]
        self.assertEqual(fenced, [])
        note(f"kill -9 of B ({len(killed)} processes): it held {len(held)} jobs"
             f" ({sorted(held.values())}); each finished on A or C, the last"
             f" {max(float(rec[j][3]) for j in held) - t_kill:.1f} s after the kill")
        # B comes back on the same data dir and node_id: its own dead pid does not block it
        b.stop()  # (it has exited: this closes its log)
        dead = tuple(f"p{p}-" for p in killed)
        left = [c for c in b.oci_containers() if c.startswith(dead)]
        migrations = b.log().count("applied migration")
        b.start(timeout=90)
        self.assertEqual(b.log().count("applied migration"), migrations)
        # and it removed what the killed run left: no container of a killed executor (the
        # OCI backend's ids begin p<executor pid>-; the engine's carry the instance label,
        # which the new run shares, and are swept by it as today)
        self.wait(lambda: not [c for c in b.oci_containers() if c.startswith(dead)], 30,
                  "B's restart to remove the killed run's containers")
        note(f"B restarted; the {len(left)} containers its killed run left are gone")
        self.assertEqual(self.sql("SELECT pid, stopped_at IS NULL FROM nodes WHERE node_id = 'node-b'"),
                         [[str(b.pid), "t"]])
        jid = self.ok("b", "POST", "/execute", {"code": "print('back')"})["execution_id"]
        self.assertEqual(self.ok("c", "GET", f"/jobs/{jid}")["node"], "node-b")

    @unittest.skipUnless(HAPROXY_BIN, "haproxy is not installed (scripts/setup.sh installs it)")
    def test_07_rolling_restart_through_haproxy_fails_no_request(self):
        lb = self.lb
        self.wait(lambda: all(s == "UP" for s in lb.servers().values()), 30,
                  "haproxy to see every node up")
        stop = threading.Event()
        failures, sync_ok, async_ids = [], [0], []
        lock = threading.Lock()

        def sync_client():
            while not stop.is_set():
                try:
                    r = lb.request("POST", "/execute", {"code": "print(1)"},
                                   headers={"X-API-Key": KEY}, timeout=60)
                    if r.status != 200 or r.json().get("success") is not True:
                        with lock:
                            failures.append(("sync", r.status, r.body[:300]))
                    else:
                        with lock:
                            sync_ok[0] += 1
                except OSError as e:
                    with lock:
                        failures.append(("sync", "error", repr(e)))

        def async_client():
            while not stop.is_set():
                try:
                    r = lb.request("POST", "/execute/async", {"code": "print(2)"},
                                   headers={"X-API-Key": KEY}, timeout=60)
                    if r.status != 200:
                        with lock:
                            failures.append(("async", r.status, r.body[:300]))
                    else:
                        with lock:
                            async_ids.append(r.json()["job_id"])
                except OSError as e:
                    with lock:
                        failures.append(("async", "error", repr(e)))
                time.sleep(0.02)

        threads = [threading.Thread(target=f, daemon=True)
                   for f in (sync_client, sync_client, async_client)]
        for th in threads:
            th.start()
        try:
            time.sleep(1)
            for name in "abc":
                t = self.nodes[name]
                self.assertEqual(t.stop(signal.SIGQUIT, timeout=60), 0, t.log()[-4000:])
                self.start_node(name)
                self.wait(lambda: lb.servers().get(NODE_IDS[name]) == "UP", 30,
                          f"haproxy to see {name} up again")
            time.sleep(1)
        finally:
            stop.set()
            for th in threads:
                th.join(90)
        note(f"rolling restart through haproxy: {sync_ok[0]} sync and {len(async_ids)} async"
             f" requests answered, {len(failures)} failed")
        self.assertEqual(failures, [], f"{len(failures)} failed requests; haproxy:\n{lb.log()[-3000:]}")
        self.assertGreater(sync_ok[0], 10)
        self.assertGreater(len(async_ids), 10)
        rec = self.wait_terminal(async_ids, timeout=60)
        self.assertEqual({v[0] for v in rec.values()}, {"succeeded"},
                         [(j, v) for j, v in rec.items() if v[0] != "succeeded"][:5])
        self.assert_finished_once(async_ids)

    def test_08_per_key_quota_holds_across_nodes(self):
        self.idle()
        self.ensure_nodes(extra=("auth.max_concurrent_jobs=2",))
        first = self.ok("a", "POST", "/execute", {"code": "print(0)"})["execution_id"]
        key_id = self.sql(f"SELECT api_key_id FROM jobs WHERE id = '{first}'")[0][0]
        self.assertTrue(key_id)
        samples, stop = [], threading.Event()
        accepted, refused, others = [], [0], []
        lock = threading.Lock()

        def sample():
            q = ("SELECT count(*) FILTER (WHERE status = 'running'),"
                 " count(*) FILTER (WHERE status IN ('queued', 'running'))"
                 f" FROM jobs WHERE api_key_id = '{key_id}'")
            db = PgConn(self.pg.conninfo)
            try:
                while not stop.is_set():
                    running, unfinished = db.sql(q)[0]
                    samples.append((int(running), int(unfinished)))
                    time.sleep(0.05)
            finally:
                db.close()

        def submitter(node, path):
            while not stop.is_set():
                try:
                    r = self.call(node, "POST", path, {"code": "import time\ntime.sleep(0.3)"})
                except OSError as e:
                    others.append((node, "error", repr(e)))
                    continue
                with lock:
                    if r.status == 200:
                        accepted.append((node, r.json().get("job_id") or r.json().get("execution_id")))
                    elif r.status == 429 and "Quota exceeded" in r.body.decode():
                        refused[0] += 1
                    else:
                        others.append((node, r.status, r.body[:300]))
                time.sleep(0.01 if r.status == 200 else 0.05)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        subs = [threading.Thread(target=submitter, args=(n, p), daemon=True)
                for n, p in (("a", "/execute/async"), ("b", "/execute/async"),
                             ("c", "/execute/async"), ("b", "/execute"))]
        for th in subs:
            th.start()
        time.sleep(8)
        stop.set()
        for th in subs + [sampler]:
            th.join(60)
        ids = [j for _, j in accepted]
        rec = self.wait_terminal(ids, timeout=60)
        note(f"quota across nodes: {len(ids)} jobs admitted, {refused[0]} refused (429); most"
             f" running at once {max(r for r, _ in samples)}, unfinished"
             f" {max(u for _, u in samples)} ({len(samples)} samples)")
        self.assertEqual(others, [])
        self.assertGreater(refused[0], 0, "the quota never refused a job")
        self.assertGreater(len(ids), 6)
        self.assertGreater(len(samples), 60)
        self.assertLessEqual(max(r for r, _ in samples), 2, "three running jobs of one key")
        self.assertLessEqual(max(u for _, u in samples), 2, "three unfinished jobs of one key")
        self.assertEqual({v[0] for v in rec.values()}, {"succeeded"})
        self.assertGreater(len({v[1] for v in rec.values()}), 1, "the jobs ran on one node only")


if __name__ == "__main__":
    unittest.main()
