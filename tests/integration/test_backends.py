"""
executor.backend through the real takod, dockerd and PostgreSQL (issue #17): the OCI
backend says so in /health and in each job's runtime; a broken runtime binary (a fake
`crun` first on PATH that fails with words of its own) makes executor.backend = oci refuse
to start with an error naming the runtime and quoting it, and executor.backend = auto
start on the Docker backend, saying so at level crit ("OCI BACKEND UNAVAILABLE") and in
/health; and with no crun or runc to be found at all, the same two outcomes.
"""
import os
import shutil
import subprocess
import tempfile
import unittest

from harness import CRUN, Takod

FAKE_WORDS = "fake crun for takod's tests: broken on purpose"


# find_bin (common/sandbox_oci.c) searching the standard directories after PATH too:
# no PATH hides the runtime then, and the "missing" tests have nothing to test
UNHIDEABLE = ("takod found a runtime with PATH={path} (find_bin in common/sandbox_oci.c "
              "also searches /usr/local/sbin:...:/bin after PATH; proposed: only when PATH "
              "is unset)")


def start_failure(t, timeout=120):
    """Run takod until it exits (it must, at start): (exit code, what it said)."""
    try:
        p = subprocess.run(t.args(), env=t.env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        raise AssertionError(f"takod did not exit at start in {timeout}s: {e.stdout}{e.stderr}")
    return p.returncode, p.stdout + p.stderr + t.log()


class Backends(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="takod-backends-")
        self.addCleanup(shutil.rmtree, self.dir, True)
        self.fake_bin = os.path.join(self.dir, "bin")
        os.mkdir(self.fake_bin)
        with open(os.path.join(self.fake_bin, "crun"), "w") as f:
            f.write(f"#!/bin/sh\necho \"{FAKE_WORDS} (args: $*)\" >&2\nexit 1\n")
        os.chmod(os.path.join(self.fake_bin, "crun"), 0o755)
        self.empty_bin = os.path.join(self.dir, "empty")
        os.mkdir(self.empty_bin)

    def takod(self, *overrides, path=None):
        """A takod of this test's; path: its PATH."""
        env = dict(os.environ, PATH=path) if path else None
        t = Takod(*overrides, executors=1, acceptors=1, env=env)
        self.addCleanup(t.cleanup)
        return t

    def assert_no_leftovers(self, t):
        t.stop()
        self.assertEqual(t.containers(), [], t.log()[-4000:])
        # the OCI backend's state root goes too (oci_release), so instances come and go
        # without leaving a directory each under /run/takod
        self.assertFalse(os.path.exists(t.oci_state_base()), t.log()[-4000:])

    # ---- the OCI backend as it is chosen here ----
    def test_oci_backend_in_health_and_each_job(self):
        t = self.takod("executor.backend=oci").start()
        h = t.request("GET", "/health").json()
        self.assertEqual(h["backend"], "oci", h)
        self.assertIn(h["runtime"], ("crun", "runc"), h)
        r = t.execute("print('on oci')")
        self.assertEqual((r["status"], r["stdout"]), ("succeeded", "on oci\n"), r)
        self.assertEqual(r["runtime"], h["runtime"], r)
        self.assertIn("msg=\"executor.backend = oci: the OCI backend, runtime", t.log())
        self.assert_no_leftovers(t)

    def test_start_removes_a_half_created_container(self):
        """crun killed while it creates a container (its executor SIGKILLed) leaves a state
        directory with config.json and no status file: `crun list` does not show it, the
        start-up sweep must remove it all the same."""
        t = self.takod("executor.backend=oci").start()
        t.execute("print(1)")
        t.stop()
        root = os.path.join(t.oci_state_base(), "crun")
        half = os.path.join(root, "p4194304-e1-dead-1") # above any pid_max: nobody's
        os.makedirs(half)
        for name in ("config.json", "seccomp.bpf"):
            with open(os.path.join(half, name), "w") as f:
                f.write("{}" if name == "config.json" else "")
        self.assertIn("p4194304-e1-dead-1", t.oci_containers())
        # and the cgroup crun made for it before it died (delete cannot know its path)
        parent = "takod-" + os.path.basename(t.oci_state_base())
        v2 = os.path.exists("/sys/fs/cgroup/cgroup.controllers")
        cg = os.path.join("/sys/fs/cgroup", "" if v2 else "pids", parent, "p4194304-e1-dead-1")
        os.makedirs(cg)
        self.addCleanup(lambda: os.path.isdir(cg) and os.rmdir(cg))
        t2 = Takod("executor.backend=oci", executors=1, acceptors=1, data_dir=t.data_dir)
        self.addCleanup(t2.cleanup)
        t2.start()
        self.assertFalse(os.path.exists(half), t2.log()[-4000:])
        self.assertIn('msg="removed container" container=p4194304-e1-dead-1', t2.log())
        self.assertFalse(os.path.exists(cg), "the half-created container's cgroup is left")
        self.assert_no_leftovers(t2)
        self.assertFalse(os.path.exists(os.path.dirname(cg)), "the cgroup parent is left")

    def test_auto_picks_oci_here(self):
        t = self.takod("executor.backend=auto").start()
        self.assertEqual(t.request("GET", "/health").json()["backend"], "oci")
        self.assertNotIn("OCI BACKEND UNAVAILABLE", t.log())

    def test_docker_backend_when_asked(self):
        t = self.takod("executor.backend=docker").start()
        h = t.request("GET", "/health").json()
        self.assertEqual(h["backend"], "docker", h)
        r = t.execute("print('on docker')")
        self.assertEqual((r["status"], r["stdout"]), ("succeeded", "on docker\n"), r)
        # docker.runtime = auto: the engine's crun where setup.sh registered it
        self.assertEqual(r["runtime"], "crun" if CRUN else "runc", r)
        self.assertEqual(h["runtime"], r["runtime"], h)

    # ---- a broken runtime binary ----
    def test_broken_runtime_oci_refuses_to_start(self):
        t = self.takod("executor.backend=oci", path=f"{self.fake_bin}:{os.environ['PATH']}")
        code, out = start_failure(t)
        self.assertEqual(code, 2, out[-4000:])
        line = next((l for l in out.splitlines() if "executor.backend = oci" in l), "")
        self.assertIn("the OCI backend is not usable", line, out[-4000:])
        self.assertIn("crun", line)
        self.assertIn(FAKE_WORDS, line)  # the runtime's own words

    def test_broken_runtime_auto_falls_back_loudly(self):
        t = self.takod("executor.backend=auto", path=f"{self.fake_bin}:{os.environ['PATH']}")
        t.start()
        self.assert_fell_back(t, FAKE_WORDS)

    def assert_fell_back(self, t, why):
        h = t.request("GET", "/health").json()
        self.assertEqual(h["backend"], "docker", h)
        crit = [l for l in t.log().splitlines() if "OCI BACKEND UNAVAILABLE" in l]
        self.assertTrue(crit, t.log()[-4000:])
        self.assertIn("level=crit", crit[0])
        self.assertIn(why, crit[0])
        r = t.execute("print('fell back')")
        self.assertEqual((r["status"], r["stdout"]), ("succeeded", "fell back\n"), r)
        self.assertEqual(r["runtime"], h["runtime"], r)
        self.assert_no_leftovers(t)

    # ---- no runtime binary at all: PATH = an empty directory ----
    def test_missing_runtime_oci_refuses_to_start(self):
        t = self.takod("executor.backend=oci", path=self.empty_bin)
        try:
            t.start()
        except AssertionError as e:  # it exited at start, as it must
            out = str(e) + t.log()
            self.assertEqual(t.proc.returncode, 2, out[-4000:])
            line = next((l for l in out.splitlines() if "executor.backend = oci" in l), "")
            self.assertIn("no crun binary on PATH", line, out[-4000:])
            return
        self.assertEqual(t.request("GET", "/health").json()["backend"], "oci")
        self.skipTest(UNHIDEABLE.format(path=self.empty_bin))

    def test_missing_runtime_auto_falls_back_loudly(self):
        t = self.takod("executor.backend=auto", path=self.empty_bin)
        t.start()
        if t.request("GET", "/health").json()["backend"] == "oci":
            self.skipTest(UNHIDEABLE.format(path=self.empty_bin))
        self.assert_fell_back(t, "no crun binary on PATH")


if __name__ == "__main__":
    unittest.main()
