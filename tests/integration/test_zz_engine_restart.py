"""
The container engine goes away and comes back while takod runs: new jobs get 503 and
/health says degraded while it is down; afterwards takod reconnects by itself, prepares
new containers and runs jobs again. This restarts the machine's dockerd (the one
scripts/setup.sh started), so it runs last and alone.
"""
import os
import signal
import subprocess
import time
import unittest

from harness import Takod, pid_alive


def engine_answers():
    return subprocess.run(["curl", "-sf", "--max-time", "2", "--unix-socket",
                           "/var/run/docker.sock", "http://localhost/_ping"],
                          capture_output=True).returncode == 0


def dockerd_pid():
    try:
        with open("/var/run/docker.pid") as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return None


class EngineRestart(unittest.TestCase):
    def test_engine_down_then_back(self):
        pid = dockerd_pid()
        if not pid or not pid_alive(pid):
            self.skipTest("no dockerd pidfile: the engine is not one this suite started")
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmdline = [a.decode() for a in f.read().split(b"\0") if a]
        t = Takod(executors=2, acceptors=1).start()
        try:
            self.assertTrue(t.execute("print(1)")["success"])
            os.kill(pid, signal.SIGTERM)
            t.wait_for(lambda: not pid_alive(pid), timeout=60, what="dockerd to stop")
            # while it is down: a clear 503 for new jobs, and /health says so
            r = t.wait_for(lambda: (lambda x: x if x.status == 503 else None)(
                t.request("POST", "/execute", {"code": "print(2)"})), what="503 while the engine is down")
            self.assertIn("container engine is unavailable", r.json()["detail"])
            h = t.request("GET", "/health").json()
            self.assertEqual((h["status"], h["docker_available"]), ("degraded", False))
        finally:
            with open("/var/log/takod-dockerd.log", "ab") as log:
                subprocess.Popen(cmdline, stdout=log, stderr=log, start_new_session=True)
            deadline = time.time() + 90
            while not engine_answers() and time.time() < deadline:
                time.sleep(0.5)
        try:
            self.assertTrue(engine_answers(), "dockerd did not come back")
            # back: takod notices by itself and runs jobs again
            t.wait_for(lambda: t.request("GET", "/health").json()["status"] == "healthy",
                       timeout=60, what="healthy again")
            r = t.execute("print(3)")
            self.assertTrue(r["success"], r)
            self.assertEqual(r["stdout"], "3\n")
        finally:
            t.cleanup()


if __name__ == "__main__":
    unittest.main()
