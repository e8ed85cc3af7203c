"""The OCI backend's image rootfs through takod (issue #17): a tag rebuilt to a new image
gets a new unpacked rootfs, its jobs run the new image, and the old rootfs is pruned.

The test builds its own image (FROM the executor image, one marker file) under its own
tag, runs a takod whose docker.image is that tag and whose rootfs store is its own, and
removes its images at the end. It never touches code-executor:latest.
"""
import os
import shutil
import subprocess
import tempfile
import unittest

from harness import Takod

TAG = "tako-oci-rebuild-test:latest"
BASE = os.environ.get("TAKOD_TEST_IMAGE", "code-executor:latest")


def build(marker):
    dockerfile = (f"FROM {BASE}\nUSER root\nRUN echo {marker} > /etc/takod-test-marker\n"
                  "USER 1000:1000\n")
    subprocess.run(["docker", "build", "--network", "none", "-q", "-t", TAG, "-"],
                   input=dockerfile, text=True, check=True, capture_output=True, timeout=300)
    out = subprocess.run(["docker", "image", "inspect", "--format", "{{.Id}}", TAG],
                         capture_output=True, text=True, check=True, timeout=30).stdout
    return out.strip()


class RebuiltImage(unittest.TestCase):
    def setUp(self):
        if os.environ.get("TAKOD_TEST_OVERRIDES", "").find("executor.backend=docker") >= 0:
            self.skipTest("the Docker backend has no rootfs store")
        self.store = tempfile.mkdtemp(prefix="takod-rootfs-it-")
        self.addCleanup(shutil.rmtree, self.store, ignore_errors=True)
        self.addCleanup(subprocess.run, ["docker", "rmi", "-f", TAG], capture_output=True)

    def rootfs_ids(self):
        return sorted(n for n in os.listdir(self.store) if len(n) == 64)

    def test_a_rebuilt_tag_gets_a_new_rootfs_and_the_old_one_goes(self):
        first = build("one")
        t = Takod(f"docker.image={TAG}", f"executor.rootfs_dir={self.store}", executors=1,
                  acceptors=1)
        self.addCleanup(t.cleanup)
        t.start()
        if t.request("GET", "/health").json().get("backend") != "oci":
            self.skipTest("auto did not pick the OCI backend here")
        probe = "print(open('/etc/takod-test-marker').read().strip())"
        self.assertEqual(t.execute(probe)["stdout"], "one\n")
        self.assertEqual(self.rootfs_ids(), [first.split(":")[1]])
        second = build("two")  # the tag moves; the first image is left untagged
        self.assertNotEqual(first, second)
        # within the executor's look-up period (10 s) its next containers are the new
        # image's; the warm ones made before may still run the old one meanwhile
        t.wait_for(lambda: t.execute(probe)["stdout"] == "two\n", timeout=60,
                   what="a job on the rebuilt image")
        self.assertIn(second.split(":")[1], self.rootfs_ids())
        # once no container of ours runs the old image, the sweeper prunes its rootfs
        t.wait_for(lambda: t.execute(probe) and self.rootfs_ids() == [second.split(":")[1]],
                   timeout=90, what="the old rootfs pruned")
        self.assertEqual(t.execute(probe)["stdout"], "two\n")
        with open(os.path.join(self.store, second.split(":")[1], ".takod-rootfs")) as f:
            self.assertIn(f"image={second}", f.read())


if __name__ == "__main__":
    unittest.main()
