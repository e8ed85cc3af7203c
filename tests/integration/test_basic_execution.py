"""
The Tako VM "Basic Execution" guide's examples (shared/reference/tako-vm-basic-execution.txt)
and the error paths of POST /execute, through the real takod, dockerd and PostgreSQL.
"""
import json
import time
import unittest

from harness import CRUN, Takod


class BasicExecution(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.t = Takod().start()

    @classmethod
    def tearDownClass(cls):
        cls.t.cleanup()

    def test_hello_world(self):
        r = self.t.execute("print('Hello, World!')", input_data={})
        self.assertTrue(r["success"])
        self.assertEqual(r["stdout"], "Hello, World!\n")
        self.assertEqual(r["stderr"], "")
        self.assertEqual(r["exit_code"], 0)
        self.assertIsNone(r["output"])
        self.assertIsNone(r["error"])
        self.assertEqual(r["job_type"], "default")
        # docker.runtime = auto: crun, which scripts/setup.sh registers (runc without it)
        self.assertEqual(r["runtime"], "crun" if CRUN else "runc")
        self.assertEqual(self.t.request("GET", "/health").json()["runtime"], r["runtime"])
        self.assertIsInstance(r["execution_time"], float)
        for k in ("queue_ms", "startup_ms", "execution_ms", "total_ms"):
            self.assertGreaterEqual(r["timing"][k], 0)

    def test_the_readme_example(self):
        r = self.t.execute("print(1 + 1)")
        self.assertEqual((r["success"], r["stdout"], r["exit_code"], r["output"]), (True, "2\n", 0, None))
        self.assertTrue(r["execution_id"])

    def test_input_data_is_readable(self):
        code = (
            "import json\n"
            "with open('/input/data.json') as f:\n"
            "    data = json.load(f)\n"
            "name = data['name']\n"
            "items = data['items']\n"
            "print(f'Processing {len(items)} items for {name}')\n"
        )
        r = self.t.execute(code, input_data={"name": "Alice", "items": [1, 2, 3, 4, 5]})
        self.assertTrue(r["success"], r)
        self.assertEqual(r["stdout"], "Processing 5 items for Alice\n")

    def test_result_json_becomes_output(self):
        code = (
            "import json\n"
            "with open('/input/data.json') as f:\n"
            "    data = json.load(f)\n"
            "result = {\n"
            "    'total': sum(data['values']),\n"
            "    'count': len(data['values']),\n"
            "    'average': sum(data['values']) / len(data['values'])\n"
            "}\n"
            "with open('/output/result.json', 'w') as f:\n"
            "    json.dump(result, f)\n"
        )
        r = self.t.execute(code, input_data={"values": [10, 20, 30, 40, 50]})
        self.assertEqual(r["output"], {"total": 150, "count": 5, "average": 30.0})

    def test_multiple_output_files_are_artifacts(self):
        code = (
            "import json\n"
            "with open('/input/data.json') as f:\n"
            "    data = json.load(f)\n"
            "with open('/output/result.json', 'w') as f:\n"
            "    json.dump({'status': 'complete'}, f)\n"
            "with open('/output/report.txt', 'w') as f:\n"
            "    f.write(f\"Processed {len(data['items'])} items\\n\")\n"
            "with open('/output/data.csv', 'w') as f:\n"
            "    f.write('id,value\\n')\n"
            "    for i, v in enumerate(data['items']):\n"
            "        f.write(f'{i},{v}\\n')\n"
        )
        r = self.t.execute(code, input_data={"items": [7, 8, 9]})
        self.assertEqual(r["output"], {"status": "complete"})
        arts = {a["name"]: a for a in r["artifacts"]}
        self.assertEqual(set(arts), {"report.txt", "data.csv"})
        self.assertEqual(arts["report.txt"]["size_bytes"], len("Processed 3 items\n"))
        self.assertEqual(arts["data.csv"]["content_type"], "text/csv")
        import hashlib
        self.assertEqual(arts["data.csv"]["sha256"],
                         hashlib.sha256(b"id,value\n0,7\n1,8\n2,9\n").hexdigest())
        # the bytes are kept with the record
        rows = self.t.sql("SELECT name, size_bytes, sha256, encode(data, 'escape') FROM artifacts"
                          f" WHERE job_id = '{r['execution_id']}' ORDER BY name")
        self.assertEqual(rows, [["data.csv", "21", arts["data.csv"]["sha256"], "id,value\n0,7\n1,8\n2,9\n"],
                                ["report.txt", "18", arts["report.txt"]["sha256"], "Processed 3 items\n"]])

    def test_print_debugging(self):
        code = (
            "import json\n"
            "print('Starting execution...')\n"
            "with open('/input/data.json') as f:\n"
            "    data = json.load(f)\n"
            "print(f'Got {len(data)} keys')\n"
            "for key, value in data.items():\n"
            "    print(f'  {key}: {value}')\n"
            "print('Done!')\n"
            "with open('/output/result.json', 'w') as f:\n"
            "    json.dump({'processed': True}, f)\n"
        )
        r = self.t.execute(code, input_data={"a": 1, "b": 2})
        self.assertEqual(r["stdout"], "Starting execution...\nGot 2 keys\n  a: 1\n  b: 2\nDone!\n")
        self.assertEqual(r["output"], {"processed": True})

    def test_failing_code(self):
        r = self.t.execute("x = 1 / 0")
        self.assertFalse(r["success"])
        self.assertEqual(r["status"], "failed")
        self.assertNotEqual(r["exit_code"], 0)
        self.assertIn("ZeroDivisionError", r["stderr"])
        self.assertEqual(r["error_type"], "zero_division_error")
        self.assertIn("division by zero", r["error"])

    def test_syntax_and_import_errors_are_typed(self):
        self.assertEqual(self.t.execute("def f(:\n  pass")["error_type"], "syntax_error")
        self.assertEqual(self.t.execute("import no_such_module_xyz")["error_type"], "import_error")

    def test_exit_code_is_reported(self):
        r = self.t.execute("import sys; print('bye'); sys.exit(3)")
        self.assertEqual((r["success"], r["exit_code"], r["stdout"]), (False, 3, "bye\n"))
        self.assertEqual(r["error_type"], "nonzero_exit")

    def test_timeout_is_enforced(self):
        t0 = time.time()
        r = self.t.execute("import time\nprint('start', flush=True)\ntime.sleep(60)", timeout=2)
        elapsed = time.time() - t0
        self.assertFalse(r["success"])
        self.assertEqual(r["status"], "timeout")
        self.assertEqual(r["error_type"], "execution_timeout")
        self.assertEqual(r["stdout"], "start\n")
        self.assertLess(elapsed, 15)

    def test_stdout_is_capped(self):
        r = self.t.execute("import sys\nsys.stdout.write('x' * 200000)")
        self.assertTrue(r["success"])
        self.assertEqual(len(r["stdout"]), 65536)
        self.assertTrue(r["stdout_truncated"])

    def test_sandbox_basics(self):
        code = (
            "import os, json, socket\n"
            "res = {'uid': os.getuid()}\n"
            "try:\n"
            "    open('/etc/x', 'w'); res['root_write'] = True\n"
            "except OSError:\n"
            "    res['root_write'] = False\n"
            "try:\n"
            "    socket.create_connection(('1.1.1.1', 80), timeout=2); res['net'] = True\n"
            "except OSError:\n"
            "    res['net'] = False\n"
            "open('/tmp/t', 'w').write('ok')\n"
            "json.dump(res, open('/output/result.json', 'w'))\n"
        )
        r = self.t.execute(code)
        self.assertTrue(r["success"], r)
        self.assertEqual(r["output"], {"uid": 1000, "root_write": False, "net": False})

    def test_runs_as_python3_main_py_would(self):
        """The launcher's interpreter is started before the job (docs/ENVIRONMENTS.md): the
        program still sees what `python3 /code/main.py` gives it."""
        code = ("import sys, os, atexit, pickle, dataclasses, multiprocessing as mp\n"
                "def sq(x):\n    return x * x\n"
                "@dataclasses.dataclass\nclass P:\n    a: int\n"
                "if __name__ == '__main__':\n"
                "    print(sys.argv, __file__, sys.path[0], sys.modules['__main__'].__file__)\n"
                "    with mp.Pool(2) as pool:\n        print(pool.map(sq, [1, 2, 3]))\n"
                "    print(pickle.loads(pickle.dumps(P(3))))\n"
                "    print(input())\n"
                "    atexit.register(lambda: print('atexit ran'))\n"
                "    open('/output/unclosed.txt', 'w').write('kept')\n")
        r = self.t.execute(code, stdin="from stdin\n")
        self.assertEqual(r["stdout"].splitlines(), [
            "['/code/main.py'] /code/main.py /code /code/main.py", "[1, 4, 9]", "P(a=3)",
            "from stdin", "atexit ran"], r)
        self.assertEqual([a["name"] for a in r["artifacts"]], ["unclosed.txt"])
        r = self.t.execute("def f():\n    raise KeyError('k')\nf()\n")
        self.assertTrue(r["stderr"].startswith(
            'Traceback (most recent call last):\n  File "/code/main.py", line 3, in <module>\n'),
            r["stderr"])
        self.assertEqual((r["exit_code"], r["error_type"]), (1, "key_error"))
        r = self.t.execute("x = (\n")
        self.assertTrue(r["stderr"].startswith('  File "/code/main.py", line 1\n'), r["stderr"])
        self.assertEqual(r["error_type"], "syntax_error")

    def test_record_is_in_postgresql(self):
        r = self.t.execute("print('audit me')", input_data={"k": "v"})
        rows = self.t.sql(
            "SELECT status, exit_code, stdout, code, input::text, mode, job_type,"
            " started_at IS NOT NULL, ended_at IS NOT NULL, timing ? 'total_ms'"
            f" FROM jobs WHERE id = '{r['execution_id']}'")
        self.assertEqual(rows, [["succeeded", "0", "audit me\n", "print('audit me')", '{"k": "v"}',
                                 "sync", "default", "t", "t", "t"]])

    def test_concurrent_jobs_see_their_own_input(self):
        import concurrent.futures
        code = "import json; print(json.load(open('/input/data.json'))['n'])"
        with concurrent.futures.ThreadPoolExecutor(8) as ex:
            results = list(ex.map(lambda n: self.t.execute(code, input_data={"n": n}), range(8)))
        self.assertEqual([r["stdout"] for r in results], [f"{n}\n" for n in range(8)])

    # ---- error paths ----
    def test_bad_json_is_400(self):
        r = self.t.request("POST", "/execute", raw=b'{"code": ')
        self.assertEqual(r.status, 400)
        body = r.json()
        self.assertIn("Invalid JSON", body["detail"])
        self.assertEqual(body["correlation_id"], r.headers["X-Correlation-ID"])

    def test_missing_code_is_422(self):
        r = self.t.request("POST", "/execute", {"input_data": {}})
        self.assertEqual(r.status, 422)
        self.assertEqual(r.json()["detail"][0]["loc"], ["body", "code"])

    def test_blank_code_unknown_field_bad_types_are_422(self):
        for body, field in [({"code": "   "}, "code"), ({"code": "1", "nope": 1}, "nope"),
                            ({"code": "1", "timeout": 0}, "timeout"),
                            ({"code": "1", "timeout": 301}, "timeout"),
                            ({"code": "1", "timeout": "5"}, "timeout"),
                            ({"code": "1", "input_data": [1]}, "input_data"),
                            ({"code": "1", "job_type": "gpu"}, "job_type"),
                            ({"code": 5}, "code")]:
            r = self.t.request("POST", "/execute", body)
            self.assertEqual(r.status, 422, body)
            self.assertIn(field, [e["loc"][-1] for e in r.json()["detail"]], body)

    def test_body_over_limit_is_413(self):
        r = self.t.request("POST", "/execute", raw=b'{"code": "' + b"x" * (3 << 20) + b'"}')
        self.assertEqual(r.status, 413)

    def test_unknown_route_and_wrong_method(self):
        r = self.t.request("GET", "/nope")
        self.assertEqual(r.status, 404)
        self.assertEqual(r.json()["detail"], "Not Found")
        r = self.t.request("GET", "/execute")
        self.assertEqual(r.status, 405)
        self.assertEqual(r.headers["Allow"], "POST")

    def test_headers(self):
        r = self.t.request("GET", "/health", headers={"X-Correlation-ID": "abc-123"})
        self.assertEqual(r.headers["X-Correlation-ID"], "abc-123")
        self.assertEqual(r.headers["X-Content-Type-Options"], "nosniff")
        self.assertEqual(r.headers["X-Frame-Options"], "DENY")
        self.assertEqual(r.headers["Content-Type"], "application/json")

    def test_health(self):
        h = self.t.request("GET", "/health").json()
        self.assertEqual(h["status"], "healthy")
        self.assertTrue(h["docker_available"])
        self.assertTrue(h["database_available"])
        self.assertEqual(h["queue_stats"]["max_workers"], 2)


if __name__ == "__main__":
    unittest.main()
