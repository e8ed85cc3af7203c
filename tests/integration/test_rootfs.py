"""
test_rootfs.py — the OCI backend's image store (common/rootfs.c) against the real engine,
through tests/tools/rootfs_tool.c: code-executor:latest is unpacked once into a scratch
store (the second ensure is the fast path, same path), its marker, launcher, python3 and
mount points are there; an image rebuilt under its tag gets a new rootfs and prune removes
the old one and keeps the new; concurrent makers of one image end with one rootfs; nothing
is left behind (no temporary dir, no export container). Its own image only
(tako-rootfs-test:latest); code-executor:latest is never retagged.
"""
import os
import shutil
import subprocess
import tempfile
import unittest

TOOL = os.environ.get("ROOTFS_TOOL", os.path.join(os.path.dirname(__file__),
                                                 "../../build/tests/rootfs_tool"))
BASE = "code-executor:latest"
TEST_IMAGE = "tako-rootfs-test:latest"


def image_id(ref):
    return subprocess.run(["docker", "image", "inspect", "--format", "{{.Id}}", ref],
                          capture_output=True, text=True, check=True).stdout.strip()


def build(tag, run):
    """An image FROM code-executor:latest with one RUN step, tagged tag; its id."""
    ctx = tempfile.mkdtemp(prefix="tako-rootfs-ctx-")
    try:
        with open(os.path.join(ctx, "Dockerfile"), "w") as f:
            f.write(f"FROM {BASE}\nUSER root\nRUN {run}\n")
        subprocess.run(["docker", "build", "-q", "--network", "none", "-t", tag, ctx],
                       check=True, capture_output=True, timeout=300)
    finally:
        shutil.rmtree(ctx)
    return image_id(tag)


def export_containers():
    out = subprocess.run(["docker", "ps", "-aq", "--filter", "label=takod.rootfs"],
                         capture_output=True, text=True, check=True).stdout
    return out.split()


class RootfsTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="tako-rootfs-it-")
        self.store = os.path.join(self.tmp, "rootfs")
        self.images = []

    def tearDown(self):
        for i in self.images:
            subprocess.run(["docker", "image", "rm", "-f", i], capture_output=True)
        shutil.rmtree(self.tmp, ignore_errors=True)

    def tool(self, *args, ok=True):
        r = subprocess.run([TOOL, *args], capture_output=True, text=True, timeout=900)
        if ok:
            self.assertEqual(r.returncode, 0, r.stderr)
        return r

    def ensure(self, image):
        out = self.tool("ensure", self.store, image, "1000", "1000").stdout.split("\n")
        return out[0], int(out[1].split("=")[1])

    def leftovers(self):
        return [n for n in os.listdir(self.store) if n.startswith(".")]

    def test_unpack_once_then_fast_path(self):
        iid = image_id(BASE)
        path, ms1 = self.ensure(BASE)
        self.assertEqual(path, os.path.join(self.store, iid[len("sha256:"):]))
        with open(os.path.join(path, ".takod-rootfs")) as f:
            self.assertTrue(f.read().startswith(f"image={iid}\n"))
        self.assertTrue(os.access(os.path.join(path, "usr/local/bin/tako-launcher"), os.X_OK))
        for d in ("code", "input", "ctl", "proc", "dev", "sys", "tmp"):
            st = os.lstat(os.path.join(path, d))
            self.assertTrue(os.path.isdir(os.path.join(path, d)) and st.st_uid == 0, d)
        st = os.lstat(os.path.join(path, "output"))
        self.assertEqual((st.st_uid, st.st_gid, st.st_mode & 0o777), (1000, 1000, 0o755))
        self.assertEqual(os.stat(path).st_mode & 0o777, 0o755)  # the job can reach /
        self.assertEqual(os.stat(self.store).st_mode & 0o777, 0o700)  # host users cannot
        path2, ms2 = self.ensure(iid)  # by id this time: the same rootfs, at once
        self.assertEqual(path2, path)
        self.assertLess(ms2, 1000)
        self.assertEqual(self.tool("lookup", self.store, iid).stdout.strip(), path)
        self.assertEqual(self.tool("lookup", self.store, "sha256:" + "0" * 64, ok=False)
                         .returncode, 1)
        self.assertEqual(self.leftovers(), [])
        self.assertEqual(export_containers(), [])
        print(f"first unpack {ms1} ms, again {ms2} ms")
        # damaged since (its marker gone): not handed out, made again in its place
        os.unlink(os.path.join(path, ".takod-rootfs"))
        self.assertEqual(self.tool("lookup", self.store, iid, ok=False).returncode, 1)
        path3, _ = self.ensure(BASE)
        self.assertEqual(path3, path)
        self.assertTrue(os.path.isfile(os.path.join(path, ".takod-rootfs")))
        self.assertEqual(self.leftovers(), [])

    def test_rebuilt_tag_gets_a_new_rootfs_and_prune_removes_the_old(self):
        old = build(TEST_IMAGE, "touch /first")
        self.images.append(old)
        p_old, _ = self.ensure(TEST_IMAGE)
        self.assertTrue(os.path.exists(os.path.join(p_old, "first")))
        new = build(TEST_IMAGE, "touch /second")
        self.images.append(new)
        self.assertNotEqual(old, new)
        p_new, _ = self.ensure(TEST_IMAGE)
        self.assertNotEqual(p_new, p_old)
        self.assertTrue(os.path.exists(os.path.join(p_new, "second")))
        self.assertFalse(os.path.exists(os.path.join(p_new, "first")))
        p_base, _ = self.ensure(BASE)
        # the old id is still in the engine but untagged: kept only while asked to
        self.assertEqual(self.tool("prune", self.store, old).stdout.strip(), "0")
        self.assertTrue(os.path.isdir(p_old))
        self.assertEqual(self.tool("prune", self.store).stdout.strip(), "1")
        self.assertFalse(os.path.exists(p_old))
        self.assertTrue(os.path.isdir(p_new) and os.path.isdir(p_base))
        # the image gone from the engine: its rootfs goes too
        subprocess.run(["docker", "image", "rm", "-f", TEST_IMAGE], check=True,
                       capture_output=True)
        self.assertEqual(self.tool("prune", self.store).stdout.strip(), "1")
        self.assertEqual(sorted(os.listdir(self.store)), [os.path.basename(p_base)])

    def test_concurrent_makers_end_with_one_rootfs(self):
        iid = build(TEST_IMAGE, "touch /race")
        self.images.append(iid)
        procs = [subprocess.Popen([TOOL, "ensure", self.store, TEST_IMAGE, "1000", "1000"],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for _ in range(3)]
        paths = set()
        for p in procs:
            out, err = p.communicate(timeout=900)
            self.assertEqual(p.returncode, 0, err)
            paths.add(out.split("\n")[0])
        self.assertEqual(paths, {os.path.join(self.store, iid[len("sha256:"):])})
        self.assertEqual(os.listdir(self.store), [iid[len("sha256:"):]])
        self.assertEqual(export_containers(), [])

    def test_failures_name_the_object_and_leave_nothing(self):
        r = self.tool("ensure", self.store, "tako-rootfs-no-such-image:latest", "1000", "1000",
                      ok=False)
        self.assertEqual(r.returncode, 1)
        self.assertIn("tako-rootfs-no-such-image", r.stderr)
        # an image without python3 fails verification: no rootfs, no temp dir, no container
        self.images.append(build(TEST_IMAGE, "rm -f /usr/bin/python3*"))
        r = self.tool("ensure", self.store, TEST_IMAGE, "1000", "1000", ok=False)
        self.assertEqual(r.returncode, 1)
        self.assertIn("python3", r.stderr)
        self.assertEqual(os.listdir(self.store), [])
        self.assertEqual(export_containers(), [])

    def test_a_mount_point_that_is_a_symlink_is_refused(self):
        # a mount on /output -> /etc would land on the container's /etc
        self.images.append(build(TEST_IMAGE, "rm -rf /output && ln -s /etc /output"))
        r = self.tool("ensure", self.store, TEST_IMAGE, "1000", "1000", ok=False)
        self.assertEqual(r.returncode, 1)
        self.assertIn("output", r.stderr)
        self.assertIn("not a directory", r.stderr)
        self.assertEqual(os.listdir(self.store), [])
        self.assertEqual(export_containers(), [])


if __name__ == "__main__":
    unittest.main()
