"""
takod as a process: configuration checks, process titles, the pidfile lock, fatal
start-up errors, the managed and the external PostgreSQL, and a TERM that leaves no
process, container or pidfile behind.
"""
import os
import signal
import subprocess
import tempfile
import threading
import time
import unittest

from harness import CONF, TAKOD_BIN, Takod, pid_alive


def run_takod(*args, timeout=60):
    return subprocess.run([TAKOD_BIN, *args], capture_output=True, text=True, timeout=timeout)


class ConfigChecks(unittest.TestCase):
    def test_t_prints_the_effective_config(self):
        r = run_takod("-t", "-c", CONF, "-o", "server.executors=7")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("[server]", r.stdout)
        self.assertIn("executors = 7", r.stdout)
        self.assertIn('image = "code-executor:latest"', r.stdout)
        # what -t prints is itself a valid config
        with tempfile.NamedTemporaryFile("w", suffix=".conf") as f:
            f.write(r.stdout)
            f.flush()
            r2 = run_takod("-t", "-c", f.name)
            self.assertEqual(r2.returncode, 0, r2.stderr)
            self.assertEqual(r2.stdout, r.stdout)

    def test_unknown_key_names_file_and_line(self):
        with tempfile.NamedTemporaryFile("w", suffix=".conf") as f:
            f.write("[server]\n# comment\nexecutors = 2\nexecutorz = 3\n")
            f.flush()
            r = run_takod("-t", "-c", f.name)
        self.assertEqual(r.returncode, 2)
        self.assertIn(f"{f.name}:4:", r.stderr)
        self.assertIn("server.executorz", r.stderr)

    def test_bad_value_and_bad_override(self):
        with tempfile.NamedTemporaryFile("w", suffix=".conf") as f:
            f.write("[limits]\ncpus = lots\n")
            f.flush()
            r = run_takod("-t", "-c", f.name)
        self.assertEqual(r.returncode, 2)
        self.assertIn(":2:", r.stderr)
        r = run_takod("-t", "-c", CONF, "-o", "limits.timeout=0")
        self.assertEqual(r.returncode, 2)
        self.assertIn("limits.timeout", r.stderr)
        r = run_takod("-t", "-c", CONF, "-o", "nodots")
        self.assertEqual(r.returncode, 2)

    def test_missing_config_file(self):
        r = run_takod("-t", "-c", "/nonexistent/tako.conf")
        self.assertEqual(r.returncode, 2)
        self.assertIn("/nonexistent/tako.conf", r.stderr)


class FatalStartup(unittest.TestCase):
    def test_missing_image_is_a_clear_error(self):
        t = Takod("docker.image=takod-no-such-image:1")
        try:
            with self.assertRaises(AssertionError) as cm:
                t.start(timeout=60)
            self.assertEqual(t.proc.returncode, 2)
            self.assertIn("executor image takod-no-such-image:1 not found", str(cm.exception))
            # the managed database it had started is stopped again
            self.assertFalse(os.path.exists(os.path.join(t.data_dir, "pg", "postmaster.pid")))
        finally:
            t.cleanup()

    def test_unreachable_engine_is_a_clear_error(self):
        t = Takod("docker.socket=/nonexistent/docker.sock")
        try:
            with self.assertRaises(AssertionError) as cm:
                t.start(timeout=60)
            self.assertEqual(t.proc.returncode, 2)
            self.assertIn("cannot reach the Docker engine", str(cm.exception))
        finally:
            t.cleanup()


class Running(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.t = Takod(executors=2, acceptors=2).start()

    @classmethod
    def tearDownClass(cls):
        cls.t.cleanup()

    def test_process_titles(self):
        titles = sorted(self.t.cmdline(p) for p in self.t.children())
        self.assertEqual(self.t.cmdline(self.t.pid).strip(), "takod: master")
        self.assertIn("takod: acceptor 0", titles)
        self.assertIn("takod: acceptor 1", titles)
        self.assertIn("takod: executor 0", titles)
        self.assertIn("takod: executor 1", titles)
        self.assertIn("takod: callbacks 0", titles)
        self.assertIn("takod: sessions 0", titles)
        self.assertTrue(any("postgres" in x for x in titles), titles)

    def test_pidfile_holds_a_lock(self):
        with open(os.path.join(self.t.data_dir, "takod.pid")) as f:
            self.assertEqual(int(f.read()), self.t.pid)
        r = run_takod("-c", CONF, "-o", f"server.data_dir={self.t.data_dir}",
                      "-o", "server.listen=127.0.0.1:1")
        self.assertEqual(r.returncode, 2)
        self.assertIn(f"another takod is running (pid {self.t.pid})", r.stderr)

    def test_second_node_on_the_same_database_url(self):
        node2 = Takod(f"database.url={self.t.conninfo}", executors=1, acceptors=1)
        try:
            node2.start()
            r = node2.execute("print('from node 2')")
            self.assertTrue(r["success"])
            rows = self.t.sql(f"SELECT status FROM jobs WHERE id = '{r['execution_id']}'")
            self.assertEqual(rows, [["succeeded"]])
            # it did not start a database of its own
            self.assertFalse(os.path.exists(os.path.join(node2.data_dir, "pg")))
        finally:
            node2.cleanup()


class Stop(unittest.TestCase):
    def test_term_leaves_nothing_behind(self):
        t = Takod(executors=2).start()
        try:
            children = t.children()
            self.assertGreaterEqual(len(children), 5)
            # a job in flight when TERM arrives
            def client():
                try:
                    t.request("POST", "/execute", {"code": "import time; time.sleep(60)"})
                except OSError:
                    pass  # answering clients waiting at a fast stop is the supervision issue's
            th = threading.Thread(target=client)
            th.daemon = True
            th.start()
            t.wait_running()
            t0 = time.time()
            code = t.stop(signal.SIGTERM, timeout=30)
            self.assertEqual(code, 0, t.log())
            self.assertLess(time.time() - t0, 15)
            for p in children:
                self.assertFalse(pid_alive(p), f"child {p} still alive")
            self.assertEqual(t.containers(), [])
            self.assertFalse(os.path.exists(os.path.join(t.data_dir, "takod.pid")))
            self.assertFalse(os.path.exists(os.path.join(t.data_dir, "pg", "postmaster.pid")))
        finally:
            t.cleanup()

    def test_records_survive_a_restart(self):
        t = Takod().start()
        try:
            r = t.execute("print('persist')")
            t.stop()
            t2 = Takod(data_dir=t.data_dir).start()
            try:
                rows = t2.sql(f"SELECT status, stdout FROM jobs WHERE id = '{r['execution_id']}'")
                self.assertEqual(rows, [["succeeded", "persist\n"]])
            finally:
                t2.stop()
        finally:
            t.cleanup()


if __name__ == "__main__":
    unittest.main()
