"""The OCI backend's runtime binary (issue #17; sandbox_oci.c sealed_copy): takod executes
crun from one sealed memfd copy of it, so crun skips the copy of itself it would otherwise
make in every start (its defence against CVE-2019-5736: a container writing the host's
runtime binary through /proc/<pid>/exe). The protection must stay what crun's own is: the
binary the runtime runs from is a memfd sealed against writes, growth, shrinking and
further seals, and nothing can open it for writing. ps still shows `crun --root ...`.
"""
import errno
import fcntl
import os
import unittest

from harness import Takod, descendants

F_GET_SEALS = 1034
SEALS = 0x1 | 0x2 | 0x4 | 0x8  # F_SEAL_SEAL | F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE


def runtime_runs(t):
    """pids of takod's `crun ... run` processes (a warm container's runtime waits in one)."""
    out = []
    for pid in descendants(t.proc.pid):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                args = f.read().split(b"\0")
        except OSError:
            continue
        if os.path.basename(args[0]) == b"crun" and b"run" in args:
            out.append(pid)
    return out


class SealedRuntime(unittest.TestCase):
    def setUp(self):
        if os.environ.get("TAKOD_TEST_OVERRIDES", "").find("executor.backend=docker") >= 0:
            self.skipTest("the Docker backend runs no runtime itself")
        self.t = Takod("executor.backend=oci", executors=1, acceptors=1)
        self.addCleanup(self.t.cleanup)
        self.t.start()
        health = self.t.request("GET", "/health").json()
        if health.get("runtime") != "crun":
            self.skipTest(f"runtime {health.get('runtime')!r}: the sealed copy is crun's")

    def test_crun_runs_from_a_sealed_copy_and_does_not_copy_itself(self):
        self.assertEqual(self.t.execute("print(1)")["stdout"], "1\n")
        pids = self.t.wait_for(lambda: runtime_runs(self.t), timeout=30,
                               what="the next warm container's crun run")
        pid = pids[0]
        exe = os.readlink(f"/proc/{pid}/exe")
        # crun's own copy would be "/memfd:crun_cloned:/proc/self/exe (deleted)"
        self.assertTrue(exe.startswith("/memfd:crun "), exe)
        with open(f"/proc/{pid}/cmdline", "rb") as f:  # what ps shows
            self.assertTrue(f.read().split(b"\0")[0].endswith(b"/crun"))
        fd = os.open(f"/proc/{pid}/exe", os.O_RDONLY)
        try:
            self.assertEqual(fcntl.fcntl(fd, F_GET_SEALS), SEALS)
        finally:
            os.close(fd)
        # not even root can write it: the seal forbids opening it for writing at all
        with self.assertRaises(OSError) as cm:
            os.close(os.open(f"/proc/{pid}/exe", os.O_WRONLY))
        self.assertIn(cm.exception.errno, (errno.EPERM, errno.ETXTBSY, errno.EACCES))
        # and the runtime holds no descriptor of it (the exec closed it)
        for name in os.listdir(f"/proc/{pid}/fd"):
            try:
                target = os.readlink(f"/proc/{pid}/fd/{name}")
            except OSError:
                continue
            self.assertFalse(target.startswith("/memfd:crun"), f"fd {name}: {target}")


if __name__ == "__main__":
    unittest.main()
