"""
Supervision and crash safety through the real binary: reload under load, graceful and
fast stops, kill -9 of every role mid-job, the -s commands, -d, and a bad config on HUP.
"""
import concurrent.futures
import os
import signal
import subprocess
import tempfile
import threading
import time
import unittest

from harness import CONF, TAKOD_BIN, WARM_CONTAINERS, Takod, pid_alive

SLEEP_JOB = "import time\nprint('start', flush=True)\ntime.sleep({s})\nprint('end')"


def in_thread(fn):
    box = {}

    def run():
        try:
            box["r"] = fn()
        except Exception as e:  # noqa: BLE001 - the test inspects it
            box["e"] = e
    th = threading.Thread(target=run, daemon=True)
    th.start()
    return th, box


class Supervision(unittest.TestCase):
    def setUp(self):
        self.t = Takod(executors=2, acceptors=2).start()

    def tearDown(self):
        self.t.cleanup()

    def running_container(self):
        return self.t.wait_running()

    def only_warm_containers(self, t, executors=2):
        """Each executor keeps its warm containers; nothing else may be left."""
        t.wait_for(lambda: len(t.containers()) == executors * WARM_CONTAINERS,
                   what="only the warm containers")

    def test_hup_under_load_fails_nothing_and_replaces_children(self):
        # the sessions process is not part of a generation: its sessions outlive a reload
        before = {k: v for k, v in self.t.roles().items()
                  if k.startswith("takod:") and k != "takod: sessions 0"}
        sessions_pid = self.t.roles().get("takod: sessions 0")
        self.assertIsNotNone(sessions_pid)
        stop = threading.Event()
        results, errors = [], []

        def client():
            while not stop.is_set():
                try:
                    r = self.t.request("POST", "/execute", {"code": "print('ok')"}, timeout=60)
                    results.append((r.status, r.json().get("stdout")))
                except Exception as e:  # noqa: BLE001
                    errors.append(repr(e))
        threads = [threading.Thread(target=client, daemon=True) for _ in range(4)]
        for th in threads:
            th.start()
        time.sleep(1.5)
        os.kill(self.t.pid, signal.SIGHUP)
        time.sleep(3)
        stop.set()
        for th in threads:
            th.join(60)
        self.assertEqual(errors, [])
        self.assertGreater(len(results), 4)
        self.assertTrue(all(r == (200, "ok\n") for r in results), results)
        def generation():
            return {k: v for k, v in self.t.roles().items()
                    if k.startswith("takod:") and k != "takod: sessions 0"}
        after = self.t.wait_for(
            lambda: (lambda r: r if len(r) == len(before) and
                     not set(r.values()) & set(before.values()) else None)(generation()),
            what="a new generation of children")
        self.assertEqual(sorted(after), sorted(before))
        self.assertEqual(self.t.roles().get("takod: sessions 0"), sessions_pid)
        with open(self.t.log_path, errors="replace") as f:  # the whole log, not its tail
            self.assertIn('msg="reloaded"', f.read())

    def test_kill_executor_mid_job_reruns_it(self):
        th, box = in_thread(lambda: self.t.request("POST", "/execute", {"code": SLEEP_JOB.format(s=2)}))
        self.running_container()
        execs = {k: v for k, v in self.t.roles().items() if "executor" in k}
        # kill every executor, so certainly the one running the job; all are respawned
        for pid in execs.values():
            os.kill(pid, signal.SIGKILL)
        th.join(120)
        self.assertNotIn("e", box, box.get("e"))
        r = box["r"].json()
        self.assertEqual(box["r"].status, 200)
        self.assertTrue(r["success"], r)  # run again in a fresh container
        self.assertEqual(r["stdout"], "start\nend\n")
        rows = self.t.sql(f"SELECT status, attempt FROM jobs WHERE id = '{r['execution_id']}'")
        self.assertEqual(rows[0][0], "succeeded")
        self.assertEqual(rows[0][1], "2")
        new = self.t.wait_for(lambda: len([k for k in self.t.roles() if "executor" in k]) == 2
                              and self.t.roles(), what="respawned executors")
        self.assertFalse(set(v for k, v in new.items() if "executor" in k) & set(execs.values()))
        self.only_warm_containers(self.t)

    def test_kill_executor_with_no_attempts_left_fails_the_job(self):
        t = Takod("server.max_retry_attempts=0", executors=1, acceptors=1).start()
        try:
            th, box = in_thread(lambda: t.request("POST", "/execute", {"code": SLEEP_JOB.format(s=30)}))
            t.wait_running()
            os.kill(t.roles()["takod: executor 0"], signal.SIGKILL)
            th.join(60)
            r = box["r"].json()
            self.assertEqual((r["status"], r["error_type"]), ("failed", "interrupted"))
            rows = t.sql(f"SELECT status, error->>'type' FROM jobs WHERE id = '{r['execution_id']}'")
            self.assertEqual(rows, [["failed", "interrupted"]])
            self.only_warm_containers(t, executors=1)
        finally:
            t.cleanup()

    @staticmethod
    def gauge(t, name):
        for line in t.request("GET", "/metrics").body.decode().splitlines():
            if line.startswith(name + " "):
                return int(line.split()[1])
        raise AssertionError(f"no {name} in /metrics")

    def pools_full_and_no_slot_held(self, t, executors):
        """Every pool full (all started), so no start is under way and no slot held."""
        t.wait_for(lambda: self.gauge(t, "takod_warm_containers") == executors * WARM_CONTAINERS,
                   what="every pool full")
        self.assertEqual(self.gauge(t, "takod_container_starts"), 0)

    def test_start_slots_bound_container_starts_over_all_executors(self):
        """server.container_starts = 1: while a burst refills every pool, at most one
        container is being prepared at any moment (takod_container_starts), and every job
        still runs; once idle, every pool is full again and no slot is held."""
        t = Takod("server.container_starts=1", "auth.rate_limit_per_minute=0", executors=3,
                  acceptors=1).start()
        try:
            stop, seen = threading.Event(), []

            def sample():
                while not stop.is_set():
                    seen.append(self.gauge(t, "takod_container_starts"))
                    time.sleep(0.005)
            th = threading.Thread(target=sample, daemon=True)
            th.start()
            with concurrent.futures.ThreadPoolExecutor(12) as ex:
                rs = list(ex.map(lambda i: t.execute(f"print({i})"), range(24)))
            self.pools_full_and_no_slot_held(t, 3)
            stop.set()
            th.join(30)
            self.assertEqual([r["stdout"] for r in rs], [f"{i}\n" for i in range(24)])
            self.assertTrue(seen)
            self.assertLessEqual(max(seen), 1, seen)
            self.assertIn(1, seen)  # the burst's refills did go through the slot
        finally:
            t.cleanup()

    def test_kill_executors_holding_start_slots_leaks_no_slot(self):
        """A start slot is held in the executor's shared-memory entry, which counts only
        while it lives: executors killed mid-refill (one slot, so one of them holds it)
        leave nothing held, and the respawned ones fill their pools and run jobs."""
        t = Takod("server.container_starts=1", executors=2, acceptors=1).start()
        try:
            for _ in range(3):
                with concurrent.futures.ThreadPoolExecutor(4) as ex:
                    rs = list(ex.map(lambda i: t.execute("print(1)"), range(4)))
                self.assertTrue(all(r["success"] for r in rs), rs)
                # the pools are refilling now: kill both executors, whichever holds the slot
                for k, pid in t.roles().items():
                    if "executor" in k:
                        os.kill(pid, signal.SIGKILL)
                t.wait_for(lambda: len([k for k in t.roles() if "executor" in k]) == 2,
                           what="respawned executors")
            self.pools_full_and_no_slot_held(t, 2)
            self.only_warm_containers(t, executors=2)
            r = t.execute("print('after')")
            self.assertEqual(r["stdout"], "after\n")
        finally:
            t.cleanup()

    def test_kill_acceptor_mid_job(self):
        th, box = in_thread(lambda: self.t.request("POST", "/execute", {"code": SLEEP_JOB.format(s=2)}))
        self.running_container()
        accs = {k: v for k, v in self.t.roles().items() if "acceptor" in k}
        for pid in accs.values():
            os.kill(pid, signal.SIGKILL)
        th.join(60)
        # the TCP connection died with its process: the client sees it closed
        self.assertIn("e", box)
        # the job itself ran to the end and is recorded
        rows = self.t.wait_for(lambda: self.t.sql(
            "SELECT status, stdout FROM jobs WHERE status NOT IN ('queued', 'running')"),
            what="the job's terminal record")
        self.assertEqual(rows, [["succeeded", "start\nend\n"]])
        self.t.wait_for(lambda: len([k for k in self.t.roles() if "acceptor" in k]) == 2,
                        what="respawned acceptors")
        self.assertTrue(self.t.execute("print(3)")["success"])
        # the slot the dead acceptor's job used was given back
        h = self.t.request("GET", "/health").json()
        self.assertEqual(h["queue_stats"]["pending"], 0)

    def test_quit_drains_an_in_flight_job(self):
        th, box = in_thread(lambda: self.t.request("POST", "/execute", {"code": SLEEP_JOB.format(s=2)}))
        self.running_container()
        os.kill(self.t.pid, signal.SIGQUIT)
        th.join(60)
        r = box["r"].json()
        self.assertTrue(r["success"], r)
        self.assertEqual(r["stdout"], "start\nend\n")
        self.assertEqual(self.t.stop(timeout=30), 0)
        self.assertEqual(self.t.containers(), [])

    def test_term_is_fast_and_answers_the_client(self):
        th, box = in_thread(lambda: self.t.request("POST", "/execute", {"code": SLEEP_JOB.format(s=60)}))
        self.running_container()
        time.sleep(0.3)
        children = self.t.children()
        t0 = time.time()
        os.kill(self.t.pid, signal.SIGTERM)
        th.join(30)
        code = self.t.stop(timeout=30)
        took = time.time() - t0
        self.assertEqual(code, 0)
        self.assertLess(took, 8)  # loose bound (~2 s expected); tests do not assert speed
        r = box["r"].json()
        self.assertEqual((r["status"], r["error_type"]), ("cancelled", "interrupted"), r)
        self.assertEqual(r["stdout"], "start\n")
        for p in children:
            self.assertFalse(pid_alive(p))
        self.assertEqual(self.t.containers(), [])


class Commands(unittest.TestCase):
    def test_s_commands_and_daemon_mode(self):
        t = Takod(executors=1, acceptors=1)
        args = t.args()
        try:
            r = subprocess.run(args + ["-d"], capture_output=True, text=True, timeout=120)
            self.assertEqual(r.returncode, 0, r.stderr)
            pidfile = os.path.join(t.data_dir, "takod.pid")
            with open(pidfile) as f:
                pid = int(f.read())
            self.assertTrue(pid_alive(pid))
            t.wait_for(lambda: t.request("GET", "/health").status == 200, what="health")
            self.assertTrue(t.execute("print(7)")["success"])
            log = os.path.join(t.data_dir, "takod.log")
            self.assertTrue(os.path.exists(log))
            # reopen: the rotated file stops growing, a new one appears
            os.rename(log, log + ".1")
            base = args[1:]
            self.assertEqual(subprocess.run([TAKOD_BIN] + base + ["-s", "reopen"]).returncode, 0)
            t.wait_for(lambda: os.path.exists(log), what="the reopened log file")
            # reload: a new generation
            self.assertEqual(subprocess.run([TAKOD_BIN] + base + ["-s", "reload"]).returncode, 0)
            t.wait_for(lambda: 'msg="reloaded"' in t.log_of(log), what="the reload")
            # quit
            self.assertEqual(subprocess.run([TAKOD_BIN] + base + ["-s", "quit"]).returncode, 0)
            t.wait_for(lambda: not pid_alive(pid), timeout=60, what="the daemon to exit")
            self.assertFalse(os.path.exists(pidfile))
            r = subprocess.run([TAKOD_BIN] + base + ["-s", "stop"], capture_output=True, text=True)
            self.assertEqual(r.returncode, 1)
            self.assertIn("not running", r.stderr)
        finally:
            subprocess.run([TAKOD_BIN] + args[1:] + ["-s", "stop"], capture_output=True)
            t.cleanup()

    def test_bad_config_on_hup_keeps_the_old_one(self):
        with open(CONF) as f:
            base_conf = f.read()
        with tempfile.NamedTemporaryFile("w", suffix=".conf", delete=False) as f:
            f.write(base_conf)
            path = f.name
        t = Takod(executors=1, acceptors=1, conf=path).start()
        try:
            before = t.roles()
            with open(path, "a") as f:
                f.write("\n[limits]\ncpus = many\n")
            os.kill(t.pid, signal.SIGHUP)
            t.wait_for(lambda: "reload failed; keeping the running configuration" in t.log(),
                       what="the reload error")
            self.assertIn(f"{path}:", t.log())
            self.assertEqual(t.roles(), before)
            self.assertTrue(t.execute("print(1)")["success"])
            # a key that needs a restart is reported and kept
            with open(path, "w") as f:
                f.write(base_conf + "\n[server]\nqueue_size = 64\n")
            os.kill(t.pid, signal.SIGHUP)
            t.wait_for(lambda: 'msg="reloaded"' in t.log(), what="the reload")
            self.assertIn("need a restart", t.log())
            self.assertIn("server.queue_size", t.log())
            self.assertEqual(t.request("GET", "/health").json()["queue_stats"]["max_queue_size"], 1024)
        finally:
            t.cleanup()
            os.unlink(path)

    def test_kill_master_then_restart_recovers(self):
        t = Takod(executors=1, acceptors=1).start()
        try:
            job = t.request("POST", "/execute/async", {"code": SLEEP_JOB.format(s=3)}).json()["job_id"]
            t.wait_running()
            children = t.children()
            os.kill(t.pid, signal.SIGKILL)
            t.proc.wait()
            for p in children:  # children and PostgreSQL die with the master
                t.wait_for(lambda p=p: not pid_alive(p), what=f"child {p} to die")
            t2 = Takod(data_dir=t.data_dir, executors=1, acceptors=1).start()
            try:
                # the async job it left running is run again after the start, to the end
                r = t2.request("GET", f"/jobs/{job}/result?wait=true&timeout=60&view=full").json()
                self.assertEqual((r["status"], r["stdout"]), ("succeeded", "start\nend\n"))
                self.assertEqual(r["attempt"], 2)
                # the dead run's containers were swept; only the new warm ones are left
                t2.wait_for(lambda: len(t2.containers()) == WARM_CONTAINERS, what="only the warm containers")
            finally:
                t2.stop()
        finally:
            t.cleanup()

if __name__ == "__main__":
    unittest.main()
