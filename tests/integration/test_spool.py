"""
The host spool against hostile trees in /output (issue #15, items 7 and 8): a 60,000-deep
chain of directories and a wide tree are removed after the job without a crash, a
restart or a trace; a later job finds /output empty; the master stops and starts again
over it. And the artifact count is capped (limits.max_artifacts), reported as an
output_limit with the count skipped, and written in one batch.
"""
import json
import os
import signal
import subprocess
import tempfile
import time
import unittest

from harness import CRUN, Takod

DEEP = (
    "import os\n"
    "os.chdir('/output')\n"
    "for i in range(60000):\n"
    "    os.mkdir('d')\n"
    "    os.chdir('d')\n"
    "os.chdir('/output')\n"
    "for i in range(500):\n"
    "    os.mkdir(f'w{i}')\n"
    "    open(f'w{i}/f', 'w').close()\n"
    "    os.chmod(f'w{i}', 0o500)\n"
    "print('built')\n"
)


def remove(path):
    """rm -rf of a spool that may hold a 60,000-deep tree (shutil.rmtree recurses)."""
    subprocess.run(["rm", "-rf", "--one-file-system", path], timeout=300)


def executor_pids(t):
    return sorted(p for title, p in t.roles().items() if "executor" in title)


def spool_leftovers(spool):
    """Entries under the slot directories' output/ and in the quarantine (none expected)."""
    found = []
    slots = os.path.join(spool, "slots")
    for slot in os.listdir(slots) if os.path.isdir(slots) else []:
        out = os.path.join(slots, slot, "output")
        if os.path.isdir(out):
            found += [f"{slot}/output/{n}" for n in os.listdir(out)]
    q = os.path.join(spool, "quarantine")
    if os.path.isdir(q):
        found += [f"quarantine/{n}" for n in os.listdir(q)]
    return found


class RuncAndCrun:
    """test_runc and test_crun of a class whose check(runtime) is the test."""

    def test_runc(self):
        self.check("runc")

    @unittest.skipUnless(CRUN, "crun is not registered with the engine (scripts/setup-runtime.sh crun)")
    def test_crun(self):
        self.check("crun")


class DeepTrees(RuncAndCrun, unittest.TestCase):
    def check(self, runtime):
        spool = tempfile.mkdtemp(prefix="takod-it-hspool-", dir="/dev/shm")
        t = Takod(f"docker.runtime={runtime}", f"server.spool_dir={spool}", executors=2, acceptors=1)
        try:
            t.start()
            before = executor_pids(t)
            self.assertEqual(len(before), 2)
            r = t.execute(DEEP, timeout=300)
            self.assertEqual((r["status"], r["stdout"].strip()), ("succeeded", "built"), r)
            # the removal happens after the reply: wait for it, then nothing may be left
            t.wait_for(lambda: not spool_leftovers(spool), timeout=240, what="the spool to be clean")
            for _ in range(4):  # every executor, and whatever warm container follows
                r = t.execute("import os\nprint(sorted(os.listdir('/output')))")
                self.assertEqual(r["stdout"].strip(), "[]", r)
            self.assertEqual(t.request("GET", "/health").status, 200)
            self.assertEqual(executor_pids(t), before, "an executor was restarted")
            self.assertNotIn("level=crit", t.log())
            self.assertEqual(t.stop(signal.SIGTERM, timeout=120), 0, t.log()[-4000:])
            t.start()  # over the same data dir and spool
            self.assertTrue(t.execute("print(1)")["success"])
        finally:
            t.cleanup()
            remove(spool)


MANY = (
    "import os\n"
    "for i in range(50000):\n"
    "    open(f'/output/f{i}.txt', 'w').close()\n"
    "open('/output/named.txt', 'w').write('kept?')\n"
    "print('made')\n"
)


class ManyArtifacts(RuncAndCrun, unittest.TestCase):
    """limits.max_artifacts: 50,000 empty files keep 1,000, report the rest, one INSERT."""

    def check(self, runtime):
        spool = tempfile.mkdtemp(prefix="takod-it-hspool-", dir="/dev/shm")
        t = Takod(f"docker.runtime={runtime}", f"server.spool_dir={spool}", executors=1, acceptors=1)
        try:
            t.start()
            before = executor_pids(t)
            r = t.execute(MANY, timeout=300)
            self.assertEqual((r["status"], r["stdout"].strip()), ("succeeded", "made"), r)
            self.assertEqual(r["error_type"], "output_limit", r)
            self.assertIn("1000 kept, 49001 skipped", r["error"])
            self.assertEqual(len(r["artifacts"]), 1000)
            job = r["execution_id"]
            rec = t.request("GET", f"/jobs/{job}/result?view=full").json()
            self.assertEqual(rec["error"]["type"], "output_limit", rec["error"])
            self.assertEqual(rec["error"]["artifacts_skipped"], 49001, rec["error"])
            self.assertEqual(len(rec["artifacts"]), 1000)
            # one batched INSERT: every row written by the same transaction
            self.assertEqual(t.sql(f"SELECT count(*), count(DISTINCT xmin::text) FROM artifacts"
                                   f" WHERE job_id = '{job}'"), [["1000", "1"]])
            name = r["artifacts"][0]["name"]
            self.assertEqual(t.request("GET", f"/jobs/{job}/artifacts/{name}").status, 200)
            t.wait_for(lambda: not spool_leftovers(spool), timeout=240, what="the spool to be clean")
            self.assertEqual(executor_pids(t), before, "an executor was restarted")
            # under the cap nothing is reported
            r = t.execute("open('/output/a.txt', 'w').write('a')\nopen('/output/b.txt', 'w').write('b')")
            self.assertEqual((r["status"], r["error_type"], len(r["artifacts"])),
                             ("succeeded", None, 2), r)
        finally:
            t.cleanup()
            remove(spool)


WORKSPACE_PROBE = (
    "import json, os\n"
    "s = os.statvfs('/output')\n"
    "mi = open('/proc/self/mountinfo').read()\n"
    "n = 0\n"
    "try:\n"
    "    while n < 5000:\n"
    "        open(f'/output/f{n}', 'w').close()\n"
    "        n += 1\n"
    "except OSError as e:\n"
    "    err = e.errno\n"
    "print(json.dumps({'bytes': s.f_blocks * s.f_frsize, 'inodes': s.f_files, 'made': n,\n"
    "                  'mountinfo': [l for l in mi.splitlines() if ' /output ' in l]}))\n"
)


class Workspace(unittest.TestCase):
    """A job's directory is a tmpfs of its own (takod as root): sized, inode-limited,
    showing only the job's usage, no host path in mountinfo, dropped whole after."""

    def check(self, runtime, *more):
        spool = tempfile.mkdtemp(prefix="takod-it-hspool-", dir="/dev/shm")
        t = Takod(f"docker.runtime={runtime}", f"server.spool_dir={spool}", *more,
                  "limits.workspace_size=8m", "limits.workspace_inodes=1000",
                  "limits.max_artifacts=10", executors=1, acceptors=1)
        try:
            t.start()
            r = t.execute(WORKSPACE_PROBE)
            self.assertEqual(r["status"], "succeeded", r)
            p = json.loads(r["stdout"])
            self.assertEqual(p["bytes"], 8 << 20, p)
            self.assertLessEqual(p["inodes"], 1000, p)
            self.assertLess(p["made"], 1000, p)  # the inode cap held
            self.assertTrue(p["mountinfo"], p)
            for line in p["mountinfo"]:
                self.assertNotIn(spool, line)
                self.assertNotIn("/dev/shm", line)
            t.wait_for(lambda: not spool_leftovers(spool), timeout=120, what="the spool to be clean")
            with open("/proc/self/mountinfo") as f:
                mounts = [l.split()[4] for l in f]
            slots = os.path.join(spool, "slots")
            # only the warm containers' directories stay mounted, none of a finished job
            live = {os.path.join(slots, d) for d in os.listdir(slots)}
            under = {m[:-len("/ctl")] if m.endswith("/ctl") else m
                     for m in mounts if m.startswith(slots + "/")}
            self.assertTrue(under and under <= live, (under, live))
            self.assertEqual(t.stop(signal.SIGTERM, timeout=120), 0)
            with open("/proc/self/mountinfo") as f:
                self.assertNotIn(spool, f.read(), "a job's tmpfs outlived takod")
        finally:
            t.cleanup()
            remove(spool)

    @unittest.skipUnless(os.geteuid() == 0, "the per-job tmpfs needs takod to run as root")
    def test_runc(self):
        self.check("runc")

    @unittest.skipUnless(CRUN and os.geteuid() == 0, "crun is not registered, or not root")
    def test_crun(self):
        self.check("crun")

    @unittest.skipUnless(os.geteuid() == 0, "the per-job tmpfs needs takod to run as root")
    def test_runsc(self):
        self.check("runsc", "docker.security_mode=strict")


if __name__ == "__main__":
    unittest.main()
