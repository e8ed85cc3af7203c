"""
The Python SDK (clients/python/tako_vm): the examples of the Tako VM SDK reference
(shared/reference/tako-vm-python-sdk.txt) run as written — each as its own script, with only
the server URL changed — against a real takod, then the rest of the surface: send/send_raw,
the async lifecycle, history, metadata, errors, retries, and Sandbox (library mode, through
the tako CLI).
"""
import dataclasses
import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import unittest
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Dict, List, Optional

import clientlib
import tako_vm
from tako_vm import (APIError, ClientError, ExecutionError, ExecutionResult, Sandbox,
                     SandboxResult, ServerError, TakoVM, TakoVMError, TransportError,
                     ValidationError)

SDK_PATH = os.path.dirname(os.path.dirname(os.path.abspath(tako_vm.__file__)))

# ---- the reference's examples, verbatim ----

QUICK_START = '''
from dataclasses import dataclass
import tako_vm

tako_vm.configure("http://localhost:8000")

@dataclass
class Input:
    x: int
    y: int

@dataclass
class Output:
    result: int

def add(input: Input) -> Output:
    return Output(result=input.x + input.y)

result = tako_vm.send(add, Input(10, 20))
print(result.result)  # 30
'''

CONFIGURE = '''
import tako_vm
tako_vm.configure(
    base_url="http://localhost:8000",
    timeout=30
)
'''

LIST_JOB_TYPES = '''
import tako_vm
tako_vm.configure("http://localhost:8000")
job_types = tako_vm.list_job_types()
for jt in job_types:
    print(jt["name"], jt["requirements"])
'''

GET_JOB_TYPE = '''
import tako_vm
tako_vm.configure("http://localhost:8000")
jt = tako_vm.get_job_type("data-processing")
print(jt["memory_limit"])  # "1g"
'''

SANDBOX_QUICK_START = '''
from tako_vm import Sandbox

with Sandbox() as sb:
    result = sb.run("print(1 + 1)")
    print(result.stdout)  # "2"
'''

SANDBOX_DEPENDENCIES = '''
from tako_vm import Sandbox

with Sandbox() as sb:
    result = sb.run("""
import pandas as pd
print(pd.__version__)
""", requirements=["pandas"])
    print(result.stdout)
'''

SANDBOX_LOCAL_PACKAGES = '''
from tako_vm import Sandbox

# Mount local packages into the sandbox
sb = Sandbox(package_dirs=["./my_utils"])
result = sb.run("from my_utils import helper; helper.process()")
'''

SANDBOX_CLASS = '''
from tako_vm import Sandbox

sandbox = Sandbox(
    image="code-executor:latest",  # Docker image
    timeout=30,                     # Default timeout
    memory_limit="512m",            # Memory limit
    cpu_limit=1.0,                  # CPU limit
    network_enabled=False,          # Allow network access
    package_dirs=[],                # Local packages to mount
    auto_build=True,                # Auto-build image if missing
)
'''

# ---- dataclasses and functions the in-process tests send (module level: real source) ----


@dataclass
class Input:
    x: int
    y: int


@dataclass
class Output:
    result: int


def add(input: Input) -> Output:
    return Output(result=input.x + input.y)


@dataclass
class Point:
    x: float
    y: float


@dataclass
class Shape:
    name: str
    points: List[Point]
    tags: Dict[str, str] = field(default_factory=dict)


@dataclass
class Stats:
    name: str
    n: int
    centroid: Point
    spread: Optional[float] = None


def describe(shape: Shape) -> Stats:
    import statistics  # imports go inside the function

    xs = [p.x for p in shape.points]
    ys = [p.y for p in shape.points]
    return Stats(name=shape.name.upper(), n=len(shape.points),
                 centroid=Point(statistics.mean(xs), statistics.mean(ys)),
                 spread=max(xs) - min(xs) if xs else None)


def divide(input: Input) -> Output:
    print("dividing", input.x, "by", input.y)
    return Output(result=input.x // input.y)


def wrong_shape(input: Input) -> Output:
    return {"not_result": input.x}


def run_example(src, url=None, cwd=None, timeout=300):
    """Run one example as its own script (PYTHONPATH: the SDK); (rc, stdout, stderr)."""
    if url:
        src = src.replace("http://localhost:8000", url)
    d = cwd or tempfile.mkdtemp(prefix="tako-sdk-example-")
    path = os.path.join(d, "example.py")
    with open(path, "w") as f:
        f.write(textwrap.dedent(src))
    env = dict(os.environ)
    env["PYTHONPATH"] = SDK_PATH + os.pathsep + env.get("PYTHONPATH", "")
    env["TAKO_BIN"] = clientlib.TAKO_BIN
    try:
        p = subprocess.run([sys.executable, path], capture_output=True, text=True, cwd=d,
                           env=env, timeout=timeout)
    finally:
        if cwd is None:
            shutil.rmtree(d, ignore_errors=True)
    return p.returncode, p.stdout, p.stderr


def need_tako():
    if not clientlib.tako_available():
        raise unittest.SkipTest(f"no tako binary at {clientlib.TAKO_BIN} (needed by Sandbox)")


class WithServer(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.t = clientlib.start_takod()
        cls.url = cls.t.url
        cls.vm = TakoVM(cls.url)

    @classmethod
    def tearDownClass(cls):
        cls.t.cleanup()


class ReferenceExamples(WithServer):
    """Each example of tako-vm-python-sdk.txt, run as written (only the URL differs)."""

    def test_quick_start(self):
        rc, out, err = run_example(QUICK_START, self.url)
        self.assertEqual(rc, 0, err)
        self.assertEqual(out, "30\n")

    def test_configure(self):
        rc, out, err = run_example(CONFIGURE, self.url)
        self.assertEqual((rc, out), (0, ""), err)

    def test_list_job_types(self):
        rc, out, err = run_example(LIST_JOB_TYPES, self.url)
        self.assertEqual(rc, 0, err)
        self.assertIn("default []", out.splitlines())

    def test_get_job_type(self):
        rc, out, err = run_example(GET_JOB_TYPE, self.url)
        self.assertEqual((rc, out), (0, "1g\n"), err)


class SandboxExamples(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        need_tako()

    def test_sandbox_quick_start(self):
        rc, out, err = run_example(SANDBOX_QUICK_START)
        self.assertEqual(rc, 0, err)
        self.assertEqual(out, "2\n\n")  # result.stdout is "2\n", print adds one

    def test_sandbox_with_dependencies_runs(self):
        # Runs as written: "pandas" is installed (Debian's python3-pandas, no pip index
        # here) into an image cached for this set, and the job imports it.
        rc, out, err = run_example(SANDBOX_DEPENDENCIES)
        self.assertEqual(rc, 0, err)
        self.assertRegex(out, r"^\d+\.\d+\.\d+\n\n$")

    def test_sandbox_with_local_packages(self):
        d = tempfile.mkdtemp(prefix="tako-sdk-example-")
        self.addCleanup(shutil.rmtree, d, True)
        os.mkdir(os.path.join(d, "my_utils"))
        with open(os.path.join(d, "my_utils", "__init__.py"), "w"):
            pass
        with open(os.path.join(d, "my_utils", "helper.py"), "w") as f:
            f.write("def process():\n    print('processed')\n")
        rc, out, err = run_example(SANDBOX_LOCAL_PACKAGES + "print(result.stdout, end='')\n",
                                   cwd=d)
        self.assertEqual((rc, out), (0, "processed\n"), err)

    def test_sandbox_class(self):
        rc, out, err = run_example(SANDBOX_CLASS)
        self.assertEqual((rc, out), (0, ""), err)


class Send(WithServer):
    def test_send_returns_the_output_dataclass(self):
        out = self.vm.send(add, Input(10, 20))
        self.assertEqual(out, Output(result=30))

    def test_module_level_functions_use_configure(self):
        tako_vm.configure(self.url)
        self.assertEqual(tako_vm.send(add, Input(1, 2)).result, 3)
        r = tako_vm.send_raw(add, Input(1, 2))
        self.assertIsInstance(r, ExecutionResult)
        self.assertTrue(r.success)
        self.assertEqual(r.output, {"result": 3})

    def test_nested_dataclasses_and_imports_inside(self):
        shape = Shape("tri", [Point(0, 0), Point(4, 0), Point(2, 3)], {"k": "v"})
        s = self.vm.send(describe, shape)
        self.assertEqual(s, Stats(name="TRI", n=3, centroid=Point(2.0, 1.0), spread=4.0))
        self.assertIsInstance(s.centroid, Point)

    def test_function_and_classes_defined_locally(self):
        @dataclass
        class Req:
            words: List[str]

        @dataclass
        class Resp:
            counts: Dict[str, int]
            longest: str

        def count(req: Req) -> Resp:
            from collections import Counter
            c = Counter(req.words)
            return Resp(counts=dict(c), longest=max(req.words, key=len))

        r = self.vm.send(count, Req(["a", "bb", "a"]))
        self.assertEqual(r, Resp(counts={"a": 2, "bb": 1}, longest="bb"))

    def test_send_raises_execution_error_send_raw_does_not(self):
        with self.assertRaises(ExecutionError) as cm:
            self.vm.send(divide, Input(1, 0))
        e = cm.exception
        self.assertIsInstance(e, TakoVMError)
        self.assertEqual(e.exit_code, 1)
        self.assertEqual(e.error_type, "zero_division_error")
        self.assertIn("ZeroDivisionError", e.stderr)
        self.assertEqual(e.stdout, "dividing 1 by 0\n")
        r = self.vm.send_raw(divide, Input(1, 0))
        self.assertFalse(r.success)
        self.assertEqual(r.exit_code, 1)
        self.assertIn("ZeroDivisionError", r.error)
        self.assertTrue(r.job_id)
        self.assertTrue(r.correlation_id)

    def test_timeout_is_an_execution_error(self):
        def sleepy(input: Input) -> Output:
            import time
            time.sleep(30)
            return Output(result=0)

        with self.assertRaises(ExecutionError) as cm:
            self.vm.send(sleepy, Input(0, 0), timeout=1)
        self.assertEqual(cm.exception.error_type, "execution_timeout")

    def test_validation_errors(self):
        with self.assertRaises(ValidationError):
            self.vm.send(add, 42)
        with self.assertRaises(ValidationError):
            self.vm.send(add, Point(1, 2))  # wrong dataclass
        with self.assertRaises(ValidationError):
            self.vm.send(lambda i: i, Input(1, 2))
        with self.assertRaises(ValidationError):
            self.vm.send(wrong_shape, Input(1, 2))
        r = self.vm.send_raw(wrong_shape, Input(1, 2))
        self.assertTrue(r.success)
        self.assertEqual(r.output, {"not_result": 1})
        self.assertIn("Output", r.deserialization_error)

    def test_dict_input_is_accepted(self):
        self.assertEqual(self.vm.send(add, {"x": 2, "y": 5}), Output(7))


class Lifecycle(WithServer):
    def test_execute_input_and_result_json(self):
        code = ("import json\n"
                "data = json.load(open('/input/data.json'))\n"
                "json.dump({'total': sum(data['values'])}, open('/output/result.json', 'w'))\n")
        r = self.vm.execute(code, {"values": [1, 2, 3]})
        self.assertTrue(r.success, r)
        self.assertEqual(r.output, {"total": 6})

    def test_submit_get_status_get_result(self):
        job_id = self.vm.submit_code("print('hello')", timeout=10)
        st = self.vm.get_status(job_id)
        self.assertEqual(st["job_id"], job_id)
        self.assertIn(st["status"], ("queued", "running", "succeeded"))
        rec = self.vm.get_result(job_id, timeout=60)
        self.assertEqual((rec["status"], rec["stdout"]), ("succeeded", "hello\n"))
        full = self.vm.get_result(job_id, view="full")
        self.assertIn("code_hash", full)
        job_id2 = self.vm.submit(add, Input(2, 3))
        self.assertEqual(self.vm.get_result(job_id2)["output"], {"result": 5})
        res = self.vm.wait(job_id2)
        self.assertEqual((res.success, res.output), (True, {"result": 5}))

    def test_get_result_without_wait_and_408(self):
        job_id = self.vm.submit_code("import time\ntime.sleep(30)")
        r = self.vm.get_result(job_id, wait=False)
        self.assertIn(r["status"], ("queued", "pending", "running"))
        with self.assertRaises(ClientError) as cm:
            self.vm.get_result(job_id, timeout=1)
        self.assertEqual(cm.exception.status_code, 408)
        self.vm.cancel(job_id)

    def test_idempotency_key(self):
        a = self.vm.submit_code("print(1)", idempotency_key="sdk-idem-key-0001")
        b = self.vm.submit_code("print(1)", idempotency_key="sdk-idem-key-0001")
        self.assertEqual(a, b)
        with self.assertRaises(ClientError) as cm:
            self.vm.submit_code("print(2)", idempotency_key="sdk-idem-key-0001")
        self.assertEqual(cm.exception.status_code, 409)
        c = self.vm.submit_code("print(1)")  # a fresh automatic key
        self.assertNotEqual(a, c)

    def test_cancel(self):
        job_id = self.vm.submit_code("import time\nprint('up', flush=True)\ntime.sleep(60)")
        deadline = time.time() + 60
        while self.vm.get_status(job_id)["status"] != "running" and time.time() < deadline:
            time.sleep(0.2)
        r = self.vm.cancel(job_id)
        self.assertEqual(r["status"], "cancelled")
        self.assertEqual(self.vm.get_result(job_id)["status"], "cancelled")
        # once finished, a cancel is a 404 (takod may still answer 200 for a moment after
        # the record says cancelled, while its executor hands the job back)
        deadline = time.time() + 10
        while True:
            try:
                self.vm.cancel(job_id)
            except ClientError as e:
                self.assertEqual(e.status_code, 404)
                break
            self.assertLess(time.time(), deadline, "cancel of a finished job never 404s")
            time.sleep(0.2)

    def test_rerun_and_fork(self):
        code = "import json\nd = json.load(open('/input/data.json'))\nprint(d['n'] * 2)"
        job_id = self.vm.submit_code(code, {"n": 21})
        self.assertEqual(self.vm.get_result(job_id)["stdout"], "42\n")
        again = self.vm.rerun(job_id)
        self.assertNotEqual(again, job_id)
        self.assertEqual(self.vm.get_result(again)["stdout"], "42\n")
        forked = self.vm.fork(job_id, "import json\nprint(json.load(open('/input/data.json'))['n'] + 1)")
        rec = self.vm.get_result(forked, view="full")
        self.assertEqual(rec["stdout"], "22\n")
        self.assertEqual((rec.get("parent_execution_id"), rec.get("relationship")),
                         (job_id, "fork"))

    def test_download_artifact(self):
        job_id = self.vm.submit_code("open('/output/data.bin', 'wb').write(bytes(range(256)))")
        rec = self.vm.get_result(job_id, view="full")
        self.assertEqual([a["name"] for a in rec["artifacts"]], ["data.bin"])
        self.assertEqual(self.vm.download_artifact(job_id, "data.bin"), bytes(range(256)))
        with self.assertRaises(ClientError) as cm:
            self.vm.download_artifact(job_id, "missing.bin")
        self.assertEqual(cm.exception.status_code, 404)

    def test_list_and_get_executions(self):
        ok = self.vm.submit_code("print('listed')")
        self.vm.get_result(ok)
        env = self.vm.list_executions(limit=100)
        for k in ("items", "limit", "offset", "has_more", "count"):
            self.assertIn(k, env)
        self.assertIn(ok, [i.get("execution_id") for i in env["items"]])
        env = self.vm.list_executions(status="succeeded", limit=5)
        self.assertTrue(all(i["status"] == "succeeded" for i in env["items"]))
        self.assertLessEqual(len(env["items"]), 5)
        rec = self.vm.get_execution(ok)
        self.assertEqual((rec["execution_id"], rec["stdout"]), (ok, "listed\n"))
        with self.assertRaises(ClientError) as cm:
            self.vm.get_execution("00000000-0000-4000-8000-000000000000")
        self.assertEqual(cm.exception.status_code, 404)

    def test_job_types_and_health(self):
        names = [jt["name"] for jt in self.vm.list_job_types()]
        self.assertIn("default", names)
        jt = self.vm.get_job_type("default")
        self.assertEqual(jt["memory_limit"], "512m")
        with self.assertRaises(ClientError):
            self.vm.get_job_type("no-such-type")
        h = self.vm.health()
        self.assertEqual(h["status"], "healthy")
        self.assertIn("queue_stats", h)

    def test_build_job_type(self):
        r = self.vm.build_job_type("data-processing")
        self.assertEqual((r["status"], r["job_type"]), ("built", "data-processing"))
        self.assertRegex(r["version"], r"^[0-9a-f]{12}$")
        jt = self.vm.get_job_type("data-processing")
        self.assertTrue(jt["image_exists"])
        self.assertEqual(jt["version"], r["version"])
        res = self.vm.execute("import pandas\nprint(pandas.Series([4, 5]).sum())",
                              job_type=f"data-processing@{r['version']}")
        self.assertEqual(res.stdout, "9\n")
        with self.assertRaises(ClientError) as cm:  # default is `tako setup`'s image
            self.vm.build_job_type("default")
        self.assertEqual(cm.exception.status_code, 400)

    def test_api_errors_carry_status_detail_and_correlation_id(self):
        with self.assertRaises(ClientError) as cm:
            self.vm.get_status("no-such-job")
        e = cm.exception
        self.assertIsInstance(e, APIError)
        self.assertEqual(e.status_code, 404)
        self.assertIn("not found", str(e.detail).lower())
        self.assertTrue(e.correlation_id)
        with self.assertRaises(ClientError) as cm:
            self.vm.execute("   ")
        self.assertEqual(cm.exception.status_code, 422)
        self.assertIsInstance(cm.exception.detail, list)


class Transport(unittest.TestCase):
    def test_server_down_is_a_transport_error(self):
        vm = TakoVM(f"http://127.0.0.1:{clientlib.harness.free_port()}", max_retries=1)
        with self.assertRaises(TransportError):
            vm.health()
        with self.assertRaises(TransportError):
            vm.send(add, Input(1, 2))
        with self.assertRaises(TakoVMError):
            vm.submit_code("print(1)")

    def test_bad_base_url(self):
        with self.assertRaises(ValueError):
            TakoVM("localhost:8000")


class _Stub(BaseHTTPRequestHandler):
    """Answers 503 to the first `fail` requests, then a canned answer; records bodies."""

    def log_message(self, *a):
        pass

    def _answer(self):
        srv = self.server
        n = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(n) if n else b""
        srv.seen.append((self.command, self.path, body, dict(self.headers)))
        if len(srv.seen) <= srv.fail:
            code, data = srv.fail_code, {"detail": "busy"}
        else:
            code, data = 200, {"job_id": "stub-job", "status": "queued"}
        raw = json.dumps(data).encode()
        self.send_response(code)
        if code == 429:
            self.send_header("Retry-After", "1")
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    do_GET = do_POST = _answer


class Retries(unittest.TestCase):
    def stub(self, fail, fail_code=503):
        srv = ThreadingHTTPServer(("127.0.0.1", 0), _Stub)
        srv.seen, srv.fail, srv.fail_code = [], fail, fail_code
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        self.addCleanup(srv.server_close)
        self.addCleanup(srv.shutdown)
        return srv, TakoVM(f"http://127.0.0.1:{srv.server_address[1]}", api_key="k-123")

    def test_submit_retries_with_the_same_idempotency_key(self):
        srv, vm = self.stub(fail=2)
        self.assertEqual(vm.submit_code("print(1)"), "stub-job")
        keys = [json.loads(b)["idempotency_key"] for _, _, b, _ in srv.seen]
        self.assertEqual(len(keys), 3)
        self.assertEqual(len(set(keys)), 1)
        self.assertRegex(keys[0], r"^[A-Za-z0-9_-]{8,255}$")
        self.assertEqual(srv.seen[0][3].get("X-API-Key"), "k-123")

    def test_sync_execute_is_never_retried(self):
        srv, vm = self.stub(fail=5)
        with self.assertRaises(ServerError) as cm:
            vm.execute("print(1)")
        self.assertTrue(cm.exception.retryable)
        self.assertEqual(len(srv.seen), 1)

    def test_rate_limited_requests_wait_for_retry_after(self):
        srv, vm = self.stub(fail=1, fail_code=429)
        t0 = time.monotonic()
        self.assertEqual(vm.submit_code("print(1)"), "stub-job")
        self.assertGreaterEqual(time.monotonic() - t0, 0.9)
        self.assertEqual(len(srv.seen), 2)
        srv, vm = self.stub(fail=9, fail_code=429)
        with self.assertRaises(ClientError) as cm:
            vm.execute("print(1)")  # never retried
        self.assertEqual((cm.exception.status_code, len(srv.seen)), (429, 1))

    def test_gets_are_retried(self):
        srv, vm = self.stub(fail=1)
        self.assertEqual(vm.get_status("x")["job_id"], "stub-job")
        self.assertEqual(len(srv.seen), 2)


class SandboxMode(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        need_tako()

    def test_print(self):
        self.assertEqual(Sandbox().run("print(1 + 1)").stdout, "2\n")

    def test_result_fields_input_and_output(self):
        code = ("import json\n"
                "d = json.load(open('/input/data.json'))\n"
                "json.dump({'sum': sum(d['v'])}, open('/output/result.json', 'w'))\n"
                "open('/output/note.txt', 'w').write('hi')\n")
        with Sandbox() as sb:
            r = sb.run(code, input_data={"v": [1, 2, 3]})
        self.assertIsInstance(r, SandboxResult)
        self.assertEqual((r.success, r.exit_code, r.output, r.error), (True, 0, {"sum": 6}, None))
        self.assertIsInstance(r.duration_ms, int)
        self.assertEqual([a["name"] for a in r.artifacts], ["note.txt"])
        names = {f.name for f in dataclasses.fields(SandboxResult)}
        self.assertLessEqual({"stdout", "stderr", "exit_code", "success", "output", "error",
                              "duration_ms"}, names)

    def test_failure_and_timeout(self):
        with Sandbox(timeout=2) as sb:
            r = sb.run("import sys\nprint('x', file=sys.stderr)\nraise ValueError('bad')")
            self.assertFalse(r.success)
            self.assertEqual((r.exit_code, r.error_type), (1, "value_error"))
            self.assertIn("ValueError: bad", r.error)
            self.assertIn("x\n", r.stderr)
            r = sb.run("import time\ntime.sleep(30)")
            self.assertEqual((r.success, r.status, r.exit_code), (False, "timeout", 124))
            r = sb.run("import time\ntime.sleep(3)\nprint('ok')", timeout=10)
            self.assertEqual((r.success, r.stdout), (True, "ok\n"))

    def test_limits(self):
        r = Sandbox(memory_limit="64m").run("x = bytearray(300 << 20)")
        self.assertEqual(r.status, "oom")
        with self.assertRaises(ValidationError):
            Sandbox(memory_limit="lots").run("print(1)")

    def test_requirements(self):
        r = Sandbox().run("import pandas\nprint(pandas.Series([2, 3]).sum())", requirements=["pandas"])
        self.assertEqual((r.success, r.stdout), (True, "5\n"), r.error)
        r = Sandbox().run("print(1)", requirements=["no-such-package-zz"])
        self.assertFalse(r.success)
        self.assertEqual(r.error_type, "dependency_error")
        with self.assertRaises(ValidationError):
            Sandbox().run("print(1)", requirements=["x; rm -rf /"])

    def test_missing_image_raises(self):
        with self.assertRaises(TakoVMError) as cm:
            Sandbox(image="tako-no-such-image:0").run("print(1)")
        self.assertIn("tako setup", str(cm.exception))

    def test_closed_sandbox_refuses(self):
        sb = Sandbox()
        with sb:
            pass
        with self.assertRaises(TakoVMError):
            sb.run("print(1)")

    def test_module_function(self):
        self.assertEqual(tako_vm.sandbox_run("print('m')").stdout, "m\n")


if __name__ == "__main__":
    unittest.main()
