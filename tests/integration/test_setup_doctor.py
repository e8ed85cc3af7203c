"""
`tako setup` (build the executor image, idempotently) and `tako doctor` (one PASS/WARN/FAIL
line per thing takod needs), through the real tako binary and the real dockerd.

A dead engine is simulated without touching the real one: docker.socket (-o) points at a
unix socket that is bound but never listened on (connect: refused), or at no file at all.
Building a missing image uses its own tags (takod-setup-test*), removed at the end; it
reuses the cached takod-base:<codename>, so it takes seconds, not a debootstrap.
"""
import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
import unittest

from harness import CRUN, SOURCE_DIR, TAKOD_BIN, Takod

TAKO_BIN = os.environ.get("TAKO_BIN", os.path.join(os.path.dirname(TAKOD_BIN), "tako"))
TEST_IMAGE = "takod-setup-test:latest"
TEST_IMAGE2 = "takod-setup-test2:latest"
LOCAL_BASE = "takod-setup-test-base:local"  # a "registry" image only the engine has


def tako(*args, timeout=600, env=None):
    e = dict(os.environ, TAKO_SOURCE_DIR=SOURCE_DIR)
    e.update(env or {})
    return subprocess.run([TAKO_BIN, *args], capture_output=True, text=True, timeout=timeout,
                          env=e, cwd=tempfile.gettempdir())


def docker(*args):
    return subprocess.run(["docker", *args], capture_output=True, text=True, timeout=120)


def image_exists(name):
    return docker("image", "inspect", name).returncode == 0


def host_codename():
    with open("/etc/os-release") as f:
        for line in f:
            if line.startswith("VERSION_CODENAME="):
                return line.split("=", 1)[1].strip().strip('"')
    return ""


def lines_of(out, status, check):
    """The lines of doctor's text output that give `check` the verdict `status`."""
    return [ln for ln in out.splitlines() if ln.startswith(f"{status}  {check}:")]


class DeadSocket:
    """A unix socket that is bound but never listened on: connect() is refused."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="tako-dead-")
        self.path = os.path.join(self.dir, "docker.sock")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(self.path)

    def close(self):
        self.sock.close()
        shutil.rmtree(self.dir, ignore_errors=True)


class CliTest(unittest.TestCase):
    """The tako binary is needed; a dead engine socket is at hand (cls.dead)."""

    @classmethod
    def setUpClass(cls):
        if not os.access(TAKO_BIN, os.X_OK):
            raise unittest.SkipTest(f"no tako binary at {TAKO_BIN}")
        cls.dead = DeadSocket()

    @classmethod
    def tearDownClass(cls):
        cls.dead.close()


class Setup(CliTest):
    @classmethod
    def tearDownClass(cls):
        super().tearDownClass()
        for img in (TEST_IMAGE, TEST_IMAGE2, LOCAL_BASE):
            docker("rmi", img)  # by name: only untags a shared image

    def test_up_to_date_is_fast_and_says_so(self):
        t0 = time.monotonic()
        r = tako("setup")
        took = time.monotonic() - t0
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertRegex(r.stdout, r"^code-executor:latest is up to date \([0-9a-f]{12}\)\n$")
        self.assertRegex(r.stderr, r"\[\s*\d+s\] ")  # progress lines carry the elapsed time
        self.assertLess(took, 60, "an up-to-date image must not be rebuilt")

    def test_up_to_date_json(self):
        r = tako("--json", "setup")
        self.assertEqual(r.returncode, 0, r.stderr)
        j = json.loads(r.stdout)
        self.assertEqual((j["image"], j["status"]), ("code-executor:latest", "up_to_date"))
        self.assertRegex(j["id"], r"^[0-9a-f]{12}$")

    def test_help_and_usage_errors(self):
        r = tako("setup", "--help")
        self.assertEqual(r.returncode, 0)
        for opt in ("--force", "--image", "--mirror", "--registry-base"):
            self.assertIn(opt, r.stdout)
        self.assertIn("setup", tako("--help").stdout)
        for bad in (["setup", "--bogus"], ["setup", "extra"], ["setup", "--image"],
                    ["setup", "--output", "x"], ["doctor", "--force"]):
            r = tako(*bad)
            self.assertEqual(r.returncode, 2, (bad, r.stderr))
            self.assertIn("tako", r.stderr)

    def test_no_engine(self):
        for path in (self.dead.path, os.path.join(self.dead.dir, "missing.sock")):
            r = tako("setup", "-o", f"docker.socket={path}", timeout=60)
            self.assertEqual(r.returncode, 3, r.stderr)
            self.assertIn(f"no Docker engine answers at unix://{path}", r.stderr)
            self.assertIn("dockerd", r.stderr)
            self.assertEqual(len(r.stderr.strip().splitlines()), 1, r.stderr)

    def test_recipe_lookup(self):
        """$TAKO_SOURCE_DIR first; without the recipe there, a warning and the tree tako was
        built from (which this test cannot take away: then "build recipe not found")."""
        empty = tempfile.mkdtemp(prefix="tako-norecipe-")
        try:
            r = tako("setup", env={"TAKO_SOURCE_DIR": empty})
            self.assertIn(f"TAKO_SOURCE_DIR={empty} has no scripts/build-image.sh", r.stderr)
            if r.returncode != 0:
                self.assertIn("build recipe not found: set TAKO_SOURCE_DIR", r.stderr)
            else:
                self.assertIn("is up to date", r.stdout)
        finally:
            shutil.rmtree(empty)

    def test_bad_config_is_a_usage_error(self):
        r = tako("setup", "-o", "docker.nope=1")
        self.assertEqual(r.returncode, 2, r.stderr)
        self.assertIn("docker.nope", r.stderr)

    def test_builds_a_missing_image(self):
        """Builds into test tags: the registry path falls back (no registry here, or no such
        image in it), a local copy of the registry base is used, and a second run of each is
        a no-op."""
        codename = host_codename()
        if not image_exists(f"takod-base:{codename}"):
            self.skipTest(f"takod-base:{codename} is not cached (a debootstrap would take minutes)")
        docker("rmi", TEST_IMAGE)
        # --registry-base that cannot be pulled and is not local: warning, then debootstrap's path
        r = tako("setup", "--image", TEST_IMAGE, "--registry-base", "takod-setup-no-such-base:1")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("falling back to debootstrap", r.stderr)
        self.assertRegex(r.stdout, rf"^{TEST_IMAGE} built \([0-9a-f]{{12}}\) in \d+ s\n$")
        self.assertTrue(image_exists(TEST_IMAGE))
        labels = json.loads(docker("image", "inspect", "--format", "{{json .Config.Labels}}",
                                   TEST_IMAGE).stdout)
        self.assertEqual(labels["org.opencontainers.image.base.name"], f"takod-base:{codename}")
        self.assertTrue(labels["takod.launcher.sha256"])
        r = tako("setup", "--image", TEST_IMAGE)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn(f"{TEST_IMAGE} is up to date", r.stdout)
        # the image works: the launcher runs as the sandbox user
        run = docker("run", "--rm", "--network", "none", "--user", "1000:1000", TEST_IMAGE,
                     "python3", "-c", "print(6 * 7)")
        self.assertEqual(run.stdout, "42\n", run.stderr)

        # --registry-base whose pull fails but which the engine has: built on that copy
        self.assertEqual(docker("tag", f"takod-base:{codename}", LOCAL_BASE).returncode, 0)
        r = tako("setup", "--image", TEST_IMAGE2, "--registry-base", LOCAL_BASE)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("using the copy the engine has", r.stderr)
        self.assertNotIn("debootstrap", r.stderr.replace("no debootstrap", ""))
        labels = json.loads(docker("image", "inspect", "--format", "{{json .Config.Labels}}",
                                   TEST_IMAGE2).stdout)
        self.assertEqual(labels["org.opencontainers.image.base.name"], LOCAL_BASE)
        r = tako("setup", "--image", TEST_IMAGE2, "--registry-base", LOCAL_BASE)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn(f"{TEST_IMAGE2} is up to date", r.stdout)
        self.assertNotIn("pulling", r.stderr)  # current: not even a pull

        for img in (TEST_IMAGE, TEST_IMAGE2, LOCAL_BASE):
            self.assertEqual(docker("rmi", img).returncode, 0)


def checks_by_name(j):
    return {c["name"]: c for c in j["checks"]}


class Doctor(CliTest):
    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="tako-doctor-")
        self.data_dir = os.path.join(self.dir, "data")
        os.mkdir(self.data_dir)

    def tearDown(self):
        shutil.rmtree(self.dir, ignore_errors=True)

    def conf(self, text):
        path = os.path.join(self.dir, "tako.conf")
        with open(path, "w") as f:
            f.write(text)
        return path

    def test_dead_engine(self):
        r = tako("doctor", "-o", f"docker.socket={self.dead.path}", "-o",
                 f"server.data_dir={self.data_dir}", timeout=120)
        self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
        out = r.stdout.splitlines()
        fail = lines_of(r.stdout, "FAIL", "engine")
        self.assertEqual(len(fail), 1, r.stdout)
        self.assertIn(f"unix://{self.dead.path}", fail[0])
        nxt = out[out.index(fail[0]) + 1]
        self.assertRegex(nxt, r"^\s+fix: .*dockerd")
        self.assertTrue(lines_of(r.stdout, "PASS", "config"), r.stdout)

        r = tako("--json", "doctor", "-o", f"docker.socket={self.dead.path}", "-o",
                 f"server.data_dir={self.data_dir}", timeout=120)
        self.assertEqual(r.returncode, 1)
        j = json.loads(r.stdout)
        self.assertIs(j["ok"], False)
        checks = {c["name"]: c for c in j["checks"]}
        self.assertEqual(set(checks["engine"]), {"name", "status", "detail", "fix"})
        self.assertEqual(checks["engine"]["status"], "FAIL")
        self.assertIn("dockerd", checks["engine"]["fix"])
        self.assertEqual(checks["config"]["status"], "PASS")
        self.assertIsNone(checks["config"]["fix"])

    def test_healthy(self):
        path = self.conf(f"[server]\ndata_dir = {self.data_dir}\n")
        r = tako("doctor", "-c", path, timeout=120)
        for check in ("config", "engine", "image", "data dir", "disk space"):
            self.assertEqual(len(lines_of(r.stdout, "PASS", check)), 1, (check, r.stdout))
        self.assertIn(path, lines_of(r.stdout, "PASS", "config")[0])
        # takod is not running on this data_dir: its own PostgreSQL is not up, a WARN
        warn = lines_of(r.stdout, "WARN", "database")
        self.assertEqual(len(warn), 1, r.stdout)
        self.assertIn("managed PostgreSQL not running (takod starts it", warn[0])
        self.assertNotIn("FAIL", r.stdout)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        for line in r.stdout.splitlines():
            self.assertRegex(line, r"^(PASS|WARN|FAIL)  [a-z ]+: |^      fix: ")

        roots = set(os.listdir("/run/takod")) if os.path.isdir("/run/takod") else set()
        r = tako("--json", "doctor", "-c", path, timeout=120)
        self.assertEqual(r.returncode, 0)
        # the backend check's probe ran under a state root of its own, gone after it
        left = (set(os.listdir("/run/takod")) if os.path.isdir("/run/takod") else set()) - roots
        self.assertEqual(left, set(), "tako doctor left a state root under /run/takod")
        j = json.loads(r.stdout)
        self.assertIs(j["ok"], True)
        self.assertEqual([c["name"] for c in j["checks"]],
                         ["config", "engine", "image", "job types", "runsc", "runtime",
                          "backend", "database", "data dir", "disk space"])
        self.assertIn(checks_by_name(j)["job types"]["status"], ("PASS", "WARN"))
        rt = checks_by_name(j)["runtime"]
        if CRUN:  # docker.runtime = auto, and crun works here (its probe container ran)
            self.assertEqual(rt["status"], "PASS", rt)
            self.assertIn("jobs run under crun (docker.runtime = auto)", rt["detail"])
        r = tako("--json", "doctor", "-c", path, "-o", "docker.runtime=runc", timeout=120)
        rt = checks_by_name(json.loads(r.stdout))["runtime"]
        self.assertEqual((rt["status"], rt["detail"]),
                         ("PASS", "jobs run under runc (docker.runtime = runc)"))
        # executor.backend: auto picks the OCI backend where its probe container runs (as
        # root, crun installed); docker is always the engine
        be = checks_by_name(j)["backend"]
        if CRUN and os.geteuid() == 0:
            self.assertEqual(be["status"], "PASS", be)
            self.assertIn("made by the oci backend, runtime crun (executor.backend = auto)",
                          be["detail"])
        r = tako("--json", "doctor", "-c", path, "-o", "executor.backend=docker", timeout=120)
        be = checks_by_name(json.loads(r.stdout))["backend"]
        self.assertEqual((be["status"], be["detail"]),
                         ("PASS", "jobs' containers are made by the docker backend "
                                  "(executor.backend = docker)"))

    def test_job_type_without_image_warns(self):
        conf = os.path.join(self.dir, "jt.conf")
        with open(conf, "w") as f:
            f.write("[job_type.doctor-never-built]\npackages = python3-six\n")
        r = tako("--json", "doctor", "-c", conf, timeout=120)
        c = checks_by_name(json.loads(r.stdout))["job types"]
        self.assertEqual(c["status"], "WARN", c)
        self.assertIn("doctor-never-built", c["detail"])
        self.assertIn("tako build NAME", c["fix"])

    def test_missing_image_and_data_dir(self):
        fresh = os.path.join(self.dir, "not", "yet")
        r = tako("doctor", "-o", "docker.image=takod-doctor-no-such-image:1", "-o",
                 f"server.data_dir={fresh}", timeout=120)
        self.assertEqual(r.returncode, 1, r.stdout)
        fail = lines_of(r.stdout, "FAIL", "image")
        self.assertEqual(len(fail), 1, r.stdout)
        self.assertIn("takod-doctor-no-such-image:1", fail[0])
        self.assertIn("tako setup", r.stdout)
        ok = lines_of(r.stdout, "PASS", "data dir")
        self.assertEqual(len(ok), 1, r.stdout)
        self.assertIn("does not exist yet", ok[0])
        self.assertFalse(os.path.exists(fresh), "doctor must not create data_dir")

    def test_invalid_config(self):
        path = self.conf("[server]\nlisten = 127.0.0.1:8123\nno_such_key = 1\n")
        r = tako("doctor", "-c", path, timeout=120)
        self.assertEqual(r.returncode, 1, r.stdout)
        fail = lines_of(r.stdout, "FAIL", "config")
        self.assertEqual(len(fail), 1, r.stdout)
        self.assertIn(f"{path}:3:", fail[0])
        self.assertIn("no_such_key", fail[0])
        self.assertRegex(r.stdout, r"\n\s+fix: .*takod -t")
        # the other checks still ran, on the built-in defaults
        self.assertTrue(lines_of(r.stdout, "PASS", "engine"), r.stdout)

        r = tako("doctor", "-c", os.path.join(self.dir, "missing.conf"), timeout=120)
        self.assertEqual(r.returncode, 1)
        self.assertTrue(lines_of(r.stdout, "FAIL", "config"), r.stdout)

    def test_running_takod_database(self):
        """With takod up on the data_dir, its managed PostgreSQL answers: PASS."""
        # its own data_dir (mkdtemp, made traversable for the database user by takod)
        t = Takod(executors=1, acceptors=1).start()
        try:
            path = self.conf(f"[server]\ndata_dir = {t.data_dir}\n")
            r = tako("doctor", "-c", path, timeout=120)
            ok = lines_of(r.stdout, "PASS", "database")
            self.assertEqual(len(ok), 1, r.stdout)
            self.assertIn("managed PostgreSQL", ok[0])
            self.assertIn(f"{t.data_dir}/pgsock", ok[0])
            self.assertEqual(r.returncode, 0, r.stdout)
        finally:
            t.cleanup()

    def test_nodes_of_a_running_takod(self):
        """With takod up (pidfile) at server.listen, a last check lists its nodes (GET /nodes):
        one here, live; with keys on it needs the admin key (the configuration's, or
        --api-key); a --url nobody answers is a WARN, never a FAIL."""
        admin = "doctor-admin-key-0123456789"
        t = Takod("auth.api_keys=doctor-user-key-0123456789", f"auth.admin_key={admin}",
                  executors=1, acceptors=1).start()
        try:
            node = t.request("GET", "/health").json()["node"]
            base = f"[server]\ndata_dir = {t.data_dir}\nlisten = 127.0.0.1:{t.port}\n"
            path = self.conf(base + f"[auth]\nadmin_key = {admin}\n")
            r = tako("doctor", "-c", path, timeout=120)
            ok = lines_of(r.stdout, "PASS", "nodes")
            self.assertEqual(len(ok), 1, r.stdout)
            self.assertIn("1 node(s)", ok[0])
            self.assertIn("1 live, 0 stale, 0 stopped", ok[0])
            out = r.stdout.splitlines()
            self.assertRegex(out[out.index(ok[0]) + 1],
                             rf"^      node {node}: live, 0 running, 0 queued, 1 executors, pid {t.pid} on ")
            r = tako("--json", "doctor", "-c", path, timeout=120)
            j = json.loads(r.stdout)
            self.assertEqual(j["checks"][-1]["name"], "nodes")
            self.assertEqual([n["node_id"] for n in j["nodes"]["nodes"]], [node])
            # no admin key in the configuration: a WARN that says how to give it
            path = self.conf(base)
            r = tako("--json", "doctor", "-c", path, timeout=120)
            c = checks_by_name(json.loads(r.stdout))["nodes"]
            self.assertEqual(c["status"], "WARN", c)
            self.assertIn("HTTP 401", c["detail"])
            self.assertIn("--api-key", c["fix"])
            r = tako("--json", "--api-key", admin, "doctor", "-c", path, timeout=120)
            self.assertEqual(checks_by_name(json.loads(r.stdout))["nodes"]["status"], "PASS")
            self.assertEqual(r.returncode, 0, r.stdout)
            # a node that stopped cleanly is listed; one neither stopped nor seen within the
            # lease (died, or cut off from PostgreSQL) is STALE: a WARN naming it
            t.sql("INSERT INTO nodes (node_id, host, pid, executors, cluster, started_at, last_seen,"
                  " stopped_at) VALUES ('gone-clean', 'elsewhere', 1, 2, true, now() - interval"
                  " '1 hour', now() - interval '1 hour', now() - interval '1 hour'), ('gone-dead',"
                  " 'elsewhere', 2, 4, true, now() - interval '1 hour', now() - interval '1 minute',"
                  " NULL)")
            r = tako("--api-key", admin, "doctor", "-c", path, timeout=120)
            warn = lines_of(r.stdout, "WARN", "nodes")
            self.assertEqual(len(warn), 1, r.stdout)
            self.assertIn("3 node(s)", warn[0])
            self.assertIn("1 live, 1 stale, 1 stopped", warn[0])
            self.assertIn("      node gone-dead: STALE, 0 running, 0 queued, 4 executors, cluster, "
                          "pid 2 on elsewhere\n", r.stdout)
            self.assertIn("      node gone-clean: stopped,", r.stdout)
            self.assertRegex(r.stdout, r"fix: start the stale node again.*\(gone-dead\)")
            self.assertEqual(r.returncode, 0, r.stdout)  # a WARN, not a FAIL
        finally:
            t.cleanup()
        # nobody there: WARN, exit 0 when nothing else failed
        port = t.port
        r = tako("--json", "--url", f"http://127.0.0.1:{port}", "doctor", "-c",
                 self.conf(f"[server]\ndata_dir = {self.data_dir}\n"), timeout=120)
        c = checks_by_name(json.loads(r.stdout))["nodes"]
        self.assertEqual(c["status"], "WARN", c)
        self.assertIn("does not answer", c["detail"])

    def test_database_url(self):
        r = tako("doctor", "-o", f"server.data_dir={self.data_dir}", "-o",
                 "database.url=host=127.0.0.1 port=1 dbname=x user=x password=secret-pw",
                 timeout=120)
        self.assertEqual(r.returncode, 1, r.stdout)
        fail = lines_of(r.stdout, "FAIL", "database")
        self.assertEqual(len(fail), 1, r.stdout)
        self.assertNotIn("secret-pw", r.stdout + r.stderr)


if __name__ == "__main__":
    unittest.main()
