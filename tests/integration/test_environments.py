"""
Environments through the real takod, dockerd and PostgreSQL: job types configured in
tako.conf and built with POST /job-types/NAME/build, their limits and environment, pinned
versions, images not built yet, and runtime requirements installed once into a cached
image from a wheelhouse of wheels made here (no network but the Debian mirror).
"""
import base64
import fcntl
import hashlib
import os
import shutil
import signal
import subprocess
import time
import tempfile
import unittest
import zipfile

from harness import CONF, Takod

TYPES = """
[job_type.envtest]
environment = "TAKO_ENVTEST=hello, OTHER=x y"
memory_limit = 96m
cpu_limit = 0.5
timeout = 7

[job_type.pintest]
packages = "{pin_packages}"

[job_type.neverbuilt]
packages = "python3-six"

[job_type.nettest]
network_enabled = true

[job_type.brokenpkg]
packages = "no-such-package-zz"

[job_type.versioned]
requirements = "numpy>=1.24"

[job_type.preloadtest]
preload = "colorsys, this, no_such_module_zz"
"""


def requirement_images():
    out = subprocess.run(["docker", "images", "-q", "--filter", "label=takod.requirements"],
                         capture_output=True, text=True, check=True).stdout
    return out.split()


def make_wheel(dirpath, name, version, body):
    """A pure-Python wheel, written by hand (what `pip wheel` would make for one module)."""
    files = {
        f"{name}.py": body,
        f"{name}-{version}.dist-info/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
        f"{name}-{version}.dist-info/WHEEL":
            "Wheel-Version: 1.0\nGenerator: takod-test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = []
    for path, text in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(text.encode())}")
    record.append(f"{name}-{version}.dist-info/RECORD,,")
    files[f"{name}-{version}.dist-info/RECORD"] = "\n".join(record) + "\n"
    with zipfile.ZipFile(os.path.join(dirpath, f"{name}-{version}-py3-none-any.whl"), "w") as z:
        for path, text in files.items():
            z.writestr(path, text)


class Base(unittest.TestCase):
    OVERRIDES = ()
    EXECUTORS = 2

    @classmethod
    def setUpClass(cls):
        cls.dir = tempfile.mkdtemp(prefix="takod-env-")
        cls.conf = os.path.join(cls.dir, "tako.conf")
        cls.write_conf("")
        cls.prepare()
        cls.t = Takod(*cls.OVERRIDES, *cls.overrides(), conf=cls.conf,
                      executors=cls.EXECUTORS).start()

    @classmethod
    def prepare(cls):
        pass

    @classmethod
    def overrides(cls):
        return ()

    @classmethod
    def write_conf(cls, pin_packages):
        with open(CONF) as f:
            base = f.read()
        with open(cls.conf, "w") as f:
            f.write(base + TYPES.format(pin_packages=pin_packages))

    @classmethod
    def tearDownClass(cls):
        cls.t.cleanup()
        shutil.rmtree(cls.dir, True)

    def ok(self, method, path, body=None, timeout=120):
        r = self.t.request(method, path, body, timeout=timeout)
        self.assertEqual(r.status, 200, r.body[:2000])
        return r.json()

    def build(self, name, query=""):
        b = self.ok("POST", f"/job-types/{name}/build{query}", timeout=900)
        self.assertEqual((b["status"], b["job_type"]), ("built", name))
        self.assertRegex(b["version"], r"^[0-9a-f]{12}$")
        self.assertEqual(b["image_ref"], f"tako-vm-{name}:{b['version']}")
        self.assertTrue(b["digest"].startswith("sha256:" + b["version"]))
        return b

    def run_job(self, code, **fields):
        return self.ok("POST", "/execute", {"code": code, **fields}, timeout=600)



class Environments(Base):
    """Job types; no pip index nor wheelhouse: requirements are Debian's python3-* packages."""

    def test_data_processing_runs_pandas(self):
        self.build("data-processing")
        jt = self.ok("GET", "/job-types/data-processing")
        self.assertTrue(jt["image_exists"])
        self.assertEqual(jt["memory_limit"], "1g")
        code = ("import json, pandas as pd\n"
                "df = pd.DataFrame(json.load(open('/input/data.json'))['rows'])\n"
                "json.dump({'sum': int(df['x'].sum())}, open('/output/result.json', 'w'))\n")
        r = self.run_job(code, input_data={"rows": [{"x": 1}, {"x": 20}, {"x": 300}]},
                         job_type="data-processing")
        self.assertEqual((r["status"], r["output"]), ("succeeded", {"sum": 321}), r)
        rec = self.t.sql(f"SELECT timeout_s, memory_bytes FROM jobs WHERE id = '{r['job_id']}'")
        self.assertEqual(rec, [["60", str(1 << 30)]])

    def test_a_type_in_use_is_kept_warm(self):
        """After a job of a type, its executor starts one more container of that type while
        idle: the next job of the type runs in a container that existed before it came."""
        self.build("data-processing")
        code = "import pandas\nprint(pandas.Series([1, 2]).sum())\n"
        first = self.run_job(code, job_type="data-processing")
        self.assertEqual(first["stdout"], "3\n", first)

        def images():  # [id, status, image id], either backend's containers
            return self.t.container_states()
        dp_id = subprocess.run(["docker", "image", "inspect", "--format", "{{.Id}}",
                                "tako-vm-data-processing:latest"], capture_output=True,
                               text=True).stdout.strip()
        # each executor keeps its own: with two, the second job may land on the other one,
        # which then warms one too; by the third job both have one
        hits = 0
        for _ in range(3):
            self.t.wait_for(lambda: [c for c in images() if c[1] == "running" and c[2] == dp_id],
                            what="a warm data-processing container")
            time.sleep(0.5)  # the other executor's, if it is starting one
            warm = {c[0] for c in images() if c[1] == "running" and c[2] == dp_id}
            r = self.run_job(code, job_type="data-processing")
            self.assertEqual(r["stdout"], "3\n", r)
            used = self.t.sql(f"SELECT container_id FROM jobs WHERE id = '{r['job_id']}'")[0][0]
            hits += used in warm
        self.assertGreaterEqual(hits, 2)

    def test_ml_inference_runs_sklearn(self):
        self.build("ml-inference")
        code = ("from sklearn.linear_model import LinearRegression\n"
                "m = LinearRegression().fit([[0], [1], [2]], [1, 3, 5])\n"
                "print(round(float(m.predict([[10]])[0]), 3))\n")
        r = self.run_job(code, job_type="ml-inference")
        self.assertEqual((r["status"], r["stdout"]), ("succeeded", "21.0\n"), r)

    def test_configured_type_limits_and_environment(self):
        self.build("envtest")
        code = "import os\nprint(os.environ['TAKO_ENVTEST'], os.environ['OTHER'])\n"
        r = self.run_job(code, job_type="envtest")
        self.assertEqual((r["status"], r["stdout"]), ("succeeded", "hello x y\n"), r)
        rec = self.t.sql(f"SELECT timeout_s, memory_bytes FROM jobs WHERE id = '{r['job_id']}'")
        self.assertEqual(rec, [["7", str(96 << 20)]])  # the type's default timeout
        # its 96m memory limit, not the default's 512m
        r = self.run_job("x = bytearray(200 << 20)\nprint(len(x))\n", job_type="envtest")
        self.assertEqual(r["status"], "oom", r)
        self.assertEqual(self.run_job("x = bytearray(200 << 20)\nprint(len(x))\n")["status"],
                         "succeeded")
        r = self.run_job("import time\ntime.sleep(20)\n", job_type="envtest")
        self.assertEqual(r["status"], "timeout", r)  # after its own 7 s
        r = self.run_job("import socket\nsocket.create_connection(('1.1.1.1', 53), timeout=2)\n",
                         job_type="envtest")
        self.assertEqual(r["status"], "failed")  # network_enabled is off

    def test_preload(self):
        """A type's preload is imported before the job comes; what importing prints (the
        `this` module prints the Zen of Python) is not the job's output, and a module that
        does not import is skipped."""
        self.build("preloadtest")
        probe = "import sys\nprint('colorsys' in sys.modules, 'this' in sys.modules)\n"
        for _ in range(2):  # a container made for the job, then the warm one
            r = self.run_job(probe, job_type="preloadtest")
            self.assertEqual((r["status"], r["stdout"], r["stderr"]), ("succeeded", "True True\n", ""), r)
            time.sleep(1)
        self.assertEqual(self.run_job(probe)["stdout"], "False False\n")  # default: none
        jt = self.ok("GET", "/job-types/preloadtest")
        self.assertEqual(jt["preload"], ["colorsys", "this", "no_such_module_zz"])

    def test_network_enabled_type_has_a_network(self):
        self.build("nettest")
        probe = "import os\nprint(sorted(os.listdir('/sys/class/net')))\n"
        r = self.run_job(probe, job_type="nettest")
        self.assertEqual(r["status"], "succeeded", r)
        self.assertIn("eth0", r["stdout"])  # a bridge interface
        self.assertEqual(self.run_job(probe)["stdout"], "['lo']\n")  # default: none at all

    def test_pinned_version_runs_that_image(self):
        b1 = self.build("pintest", "?version_tag=first-1.0")
        v1 = b1["version"]
        self.assertEqual(b1["version_tag"], "first-1.0")
        # the type changes (python3-six added) and is rebuilt: a new version
        self.write_conf("python3-six")
        os.kill(self.t.pid, signal.SIGHUP)
        self.t.wait_for(lambda: self.t.log().count('msg="reloaded"') >= 1, what="the reload")
        self.t.wait_for(lambda: "python3-six" in self.ok("GET", "/job-types/pintest")["packages"],
                        what="the new configuration")
        r = self.t.request("POST", "/job-types/pintest/build?version_tag=first-1.0")
        self.assertEqual(r.status, 409, r.body)  # a tag never moves to another build
        self.assertEqual(self.t.request("POST", "/job-types/pintest/build?version_tag=latest").status, 422)
        v2 = self.build("pintest")["version"]
        self.assertNotEqual(v1, v2)
        jt = self.ok("GET", "/job-types/pintest")
        self.assertEqual(jt["version"], v2)
        self.assertEqual({v["version"] for v in jt["versions"]}, {v1, v2})
        probe = "import importlib.util\nprint(importlib.util.find_spec('six') is not None)\n"
        r = self.run_job(probe, job_type=f"pintest@{v1}")
        self.assertEqual(r["stdout"], "False\n")
        rec = self.ok("GET", f"/executions/{r['job_id']}")
        self.assertEqual(rec["job_version"], f"pintest@{v1}")
        for ref in ("pintest@first-1.0", f"pintest@sha256:{v1}"):  # a tag, Tako VM's form
            r = self.run_job(probe, job_type=ref)
            self.assertEqual(r["stdout"], "False\n", ref)
            self.assertEqual(self.t.sql(f"SELECT job_type FROM jobs WHERE id = '{r['job_id']}'"),
                             [[f"pintest@{v1}"]])
        self.assertEqual(self.run_job(probe, job_type=f"pintest@{v2}")["stdout"], "True\n")
        self.assertEqual(self.run_job(probe, job_type="pintest")["stdout"], "True\n")
        self.assertEqual(self.run_job(probe, job_type="pintest@latest")["stdout"], "True\n")
        r = self.t.request("POST", "/execute", {"code": probe, "job_type": "pintest@0123456789ab"})
        self.assertEqual(r.status, 422)
        self.assertEqual(r.json()["detail"][0]["type"], "unknown_version")
        r = self.t.request("POST", "/execute", {"code": probe, "job_type": "pintest@v1"})
        self.assertEqual(r.status, 422)

    def test_unknown_type_is_422_and_unbuilt_type_fails_clearly(self):
        r = self.t.request("POST", "/execute", {"code": "print(1)", "job_type": "no-such-type"})
        self.assertEqual(r.status, 422)
        self.assertEqual(r.json()["detail"][0]["type"], "unknown_job_type")
        self.assertFalse(self.ok("GET", "/job-types/neverbuilt")["image_exists"])
        r = self.run_job("print(1)", job_type="neverbuilt")
        self.assertEqual((r["status"], r["error_type"]), ("failed", "image_not_built"), r)
        self.assertIn("POST /job-types/neverbuilt/build", r["error"])
        # the warm default container was not spent on it
        self.assertEqual(self.run_job("print(2)")["stdout"], "2\n")

    def test_failed_builds_say_why(self):
        # apt cannot find the package: a 500 in apt's own words, and no image
        r = self.t.request("POST", "/job-types/brokenpkg/build", timeout=600)
        self.assertEqual(r.status, 500, r.body)
        j = r.json()
        self.assertIn("Build of job type brokenpkg failed", j["detail"])
        self.assertIn("Unable to locate package no-such-package-zz", j["detail"])
        self.assertIn("no-such-package-zz", j["log_tail"])
        self.assertFalse(self.ok("GET", "/job-types/brokenpkg")["image_exists"])
        # a version specifier with neither a pip index nor a wheelhouse: refused before
        # anything runs, saying what to configure
        r = self.t.request("POST", "/job-types/versioned/build", timeout=600)
        self.assertEqual(r.status, 400, r.body)
        self.assertIn("environments.pip_index_url or environments.wheelhouse", r.json()["detail"])

    def test_one_build_at_a_time(self):
        lock = os.path.join(self.t.data_dir, "builds", "neverbuilt.lock")
        os.makedirs(os.path.dirname(lock), exist_ok=True)
        with open(lock, "w") as f:
            fcntl.flock(f, fcntl.LOCK_EX)  # as a running build holds it
            r = self.t.request("POST", "/job-types/neverbuilt/build")
        self.assertEqual(r.status, 409, r.body)



class RuntimeRequirements(Base):
    """Runtime requirements from a wheelhouse of wheels made here."""
    OVERRIDES = ("environments.allow_runtime_requirements=true",
                 "environments.max_requirement_images=1")
    EXECUTORS = 1  # one warm container per kind at most: the cache test is exact

    @classmethod
    def prepare(cls):
        cls.wheels = os.path.join(cls.dir, "wheels")
        os.mkdir(cls.wheels)
        # a fresh name per run, so the cached requirements image is built here, not reused
        cls.pkg = "takoenv" + hashlib.sha256(cls.dir.encode()).hexdigest()[:8]
        make_wheel(cls.wheels, cls.pkg, "1.0", "VALUE = 42\n")
        make_wheel(cls.wheels, cls.pkg + "b", "2.0", "VALUE = 43\n")

    @classmethod
    def overrides(cls):
        return (f"environments.wheelhouse={cls.wheels}",)

    def test_runtime_requirements_installed_once(self):
        code = f"import {self.pkg}\nprint({self.pkg}.VALUE)\n"
        first = self.run_job(code, requirements=[self.pkg], timeout=30)
        self.assertEqual((first["status"], first["stdout"]), ("succeeded", "42\n"), first)
        second = self.run_job(code, requirements=[self.pkg], timeout=30)
        self.assertEqual((second["status"], second["stdout"]), ("succeeded", "42\n"), second)
        s1, s2 = first["timing"]["startup_ms"], second["timing"]["startup_ms"]
        print(f"\n    requirements: startup {s1:.0f} ms first, {s2:.0f} ms with the cached image")
        self.assertLess(s2 * 5, s1)
        # a rerun keeps the requirements
        rr = self.ok("POST", f"/jobs/{first['job_id']}/rerun", {})
        done = self.ok("GET", f"/jobs/{rr['job_id']}/result?wait=true&timeout=60", timeout=90)
        self.assertEqual(done["stdout"], "42\n", done)
        # a package the wheelhouse lacks: dependency_error in pip's words
        r = self.run_job("print(1)", requirements=["no-such-package-zz"])
        self.assertEqual((r["status"], r["error_type"]), ("failed", "dependency_error"), r)
        self.assertIn("no-such-package-zz", r["error"])
        self.assertIn("ERROR", r["error"])

    def test_z_cache_is_bounded(self):
        """max_requirement_images = 1: a second set's image removes the first's."""
        code = f"import {self.pkg}\nprint({self.pkg}.VALUE)\n"
        self.assertEqual(self.run_job(code, requirements=[self.pkg])["stdout"], "42\n")
        before = set(requirement_images())
        other = f"import {self.pkg}b\nprint({self.pkg}b.VALUE)\n"
        self.assertEqual(self.run_job(other, requirements=[self.pkg + "b"])["stdout"], "43\n")
        after = set(requirement_images())
        # the first set's warm container went when the second set came, and its image
        # with it
        self.assertEqual(len(after), 1, after)
        self.assertFalse(before & after, (before, after))
        again = self.run_job(code, requirements=[self.pkg])  # installed again
        self.assertEqual(again["stdout"], "42\n")


if __name__ == "__main__":
    unittest.main()
