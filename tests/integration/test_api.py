"""
The REST API (issue 5) through the real takod, dockerd and PostgreSQL: one test per
endpoint and per error path, then every response received during the run is validated
against the OpenAPI document the server serves at /openapi.json (docs/openapi.json).

Servers: Api (2 executors: most tests), SingleExecutor (1 executor, 8 slots, no retries:
queued-job cancel, a full queue, /health while starting, the dead-letter queue) and Keys
(API keys and a small rate limit: 401, ownership, 429); OpenApiCheck unit-tests the
validator without a server. ZzContract runs last (unittest sorts classes by name) and
validates every response recorded by the others. The rate limit is turned off for Api and
SingleExecutor (they send far more than its burst).
"""
import base64
import concurrent.futures
import datetime
import hashlib
import http.client
import json
import os
import re
import signal
import subprocess
import threading
import time
import unittest

import openapi_check as oc
from harness import CONF, SOURCE_DIR, TAKOD_BIN, Takod

SLEEP = "import time\nprint('start', flush=True)\ntime.sleep({s})\nprint('end')"
NOT_A_UUID = "not-a-uuid"
UNKNOWN_UUID = "00000000-0000-4000-8000-000000000000"


def _accepted(override):
    """Does this takod know a config key? (Lets the tests run before and after it exists.)"""
    try:
        r = subprocess.run([TAKOD_BIN, "-t", "-c", CONF, "-o", override], capture_output=True, timeout=60)
    except OSError:
        return False
    return r.returncode == 0


QUIET = [o for o in ("auth.rate_limit_per_minute=0",) if _accepted(o)]

RECORDED = []  # (method, path, status, headers, body) of every response received
SPECS = []  # the document as each server served it
_lock = threading.Lock()


def ts(s):
    return datetime.datetime.fromisoformat(s).timestamp()


def metric(text, name, **labels):
    """The value of one sample in Prometheus text (0 when absent)."""
    want = ",".join(f'{k}="{v}"' for k, v in labels.items())
    pat = re.escape(name) + (r"\{" + re.escape(want) + r"\}" if labels else "") + r" (\S+)$"
    for line in text.splitlines():
        m = re.match(pat, line)
        if m:
            return float(m.group(1))
    return 0.0


def start_watching_health(t, seen, timeout=90):
    """Takod.start(), keeping every /health answer (the 503s before ready included)."""
    t.logf = open(t.log_path, "ab")
    t.proc = subprocess.Popen(t.args(), stdout=t.logf, stderr=subprocess.STDOUT)
    deadline = time.time() + timeout
    while time.time() < deadline:
        if t.proc.poll() is not None:
            raise AssertionError(f"takod exited with {t.proc.returncode} at start:\n{t.log()}")
        try:
            r = t.request("GET", "/health", timeout=2)
            seen.append(r)
            with _lock:
                RECORDED.append(("GET", "/health", r.status, r.headers, r.body))
            if r.status == 200:
                return t
        except OSError:
            pass
        time.sleep(0.02)
    raise AssertionError(f"takod did not become healthy in {timeout}s:\n{t.log()}")


class Client:
    """Mixin: HTTP through self.t with every response recorded for ZzContract."""

    t = None

    def call(self, method, path, body=None, raw=None, headers=None, timeout=120):
        r = self.t.request(method, path, body, raw=raw, headers=headers, timeout=timeout)
        with _lock:
            RECORDED.append((method, path, r.status, r.headers, r.body))
        return r

    def ok(self, method, path, body=None, status=200, **kw):
        r = self.call(method, path, body, **kw)
        self.assertEqual(r.status, status, r.body[:2000])
        return r.json() if r.headers.get("Content-Type", "").startswith("application/json") else r

    def error(self, method, path, status, body=None, detail=None, **kw):
        """An error response: status, {detail, correlation_id} matching the header."""
        r = self.call(method, path, body, **kw)
        self.assertEqual(r.status, status, r.body[:2000])
        self.assertTrue(r.headers["Content-Type"].startswith("application/json"))
        j = r.json()
        self.assertIn("detail", j)
        self.assertEqual(j["correlation_id"], r.headers["X-Correlation-ID"])
        if detail is not None:
            self.assertIn(detail, j["detail"] if isinstance(j["detail"], str) else json.dumps(j["detail"]))
        return j

    def submit(self, code, **fields):
        return self.ok("POST", "/execute/async", {"code": code, **fields})["job_id"]

    def result(self, job_id, timeout=120, view=None):
        q = f"?wait=true&timeout={min(timeout, 300)}" + (f"&view={view}" if view else "")
        return self.ok("GET", f"/jobs/{job_id}/result{q}", timeout=timeout + 30)

    def status(self, job_id):
        return self.ok("GET", f"/jobs/{job_id}")["status"]

    def wait_status(self, job_id, statuses, timeout=60):
        statuses = (statuses,) if isinstance(statuses, str) else statuses
        return self.t.wait_for(lambda: self.status(job_id) in statuses, timeout=timeout,
                               what=f"job {job_id} to be {statuses}")

    def cancel_quiet(self, job_id):
        try:
            self.t.request("POST", f"/jobs/{job_id}/cancel", timeout=30)
        except OSError:
            pass

    def idle(self, timeout=90):
        """Wait until nothing is queued or running (stale dispatch entries included)."""
        def quiet():
            p = self.t.request("GET", "/pool/stats").json()
            return p["pending"] == 0 and p["running"] == 0
        self.t.wait_for(quiet, timeout=timeout, what="an idle pool")


# ---------------------------------------------------------------------------------------
# The validator itself (no server)
# ---------------------------------------------------------------------------------------

class OpenApiCheck(unittest.TestCase):
    SPEC = {
        "openapi": "3.0.3", "info": {"title": "t", "version": "1"},
        "paths": {"/things/{id}": {
            "parameters": [{"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}],
            "get": {"responses": {
                "200": {"description": "ok", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Thing"}}}},
                "404": {"description": "no", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Err"}}}},
            }}}},
        "components": {"schemas": {
            "Thing": {"type": "object", "additionalProperties": False, "required": ["n", "tags"],
                      "properties": {"n": {"type": "integer", "minimum": 0, "maximum": 10},
                                     "x": {"type": "number", "nullable": True},
                                     "name": {"type": "string", "minLength": 2, "pattern": "^[a-z]+$"},
                                     "kind": {"type": "string", "enum": ["a", "b"]},
                                     "tags": {"type": "array", "items": {"type": "string"}},
                                     "sub": {"oneOf": [{"type": "string"}, {"$ref": "#/components/schemas/Err"}]}}},
            "Err": {"type": "object", "required": ["detail"], "additionalProperties": False,
                    "properties": {"detail": {"type": "string"}}},
        }},
    }

    def bad(self, body, where, status=200):
        with self.assertRaises(AssertionError) as cm:
            oc.validate_response(self.SPEC, "GET", "/things/{id}", status, body)
        self.assertIn(where, str(cm.exception))
        return str(cm.exception)

    def test_valid_bodies_pass(self):
        oc.validate_response(self.SPEC, "GET", "/things/{id}", 200,
                             {"n": 3, "x": None, "name": "ab", "kind": "a", "tags": ["q"], "sub": {"detail": "d"}})
        oc.validate_response(self.SPEC, "GET", "/things/{id}", 200, {"n": 0, "x": 1.5, "tags": []})
        oc.validate_response(self.SPEC, "GET", "/things/{id}", 404, {"detail": "gone"})
        oc.check_document(self.SPEC)

    def test_wrong_type(self):
        self.assertIn("expected integer", self.bad({"n": "3", "tags": []}, "$.n"))
        self.bad({"n": 1.5, "tags": []}, "$.n")  # a float is not an integer
        self.bad({"n": True, "tags": []}, "$.n")  # nor is a boolean
        self.bad({"n": 1, "tags": ["a", 2]}, "$.tags[1]")
        self.bad({"n": 1, "tags": [], "x": None, "sub": 5}, "$.sub")

    def test_missing_required_field(self):
        self.assertIn("'tags'", self.bad({"n": 1}, "$: missing required property"))

    def test_extra_field_with_additional_properties_false(self):
        self.assertIn("not allowed", self.bad({"n": 1, "tags": [], "surprise": 1}, "$.surprise"))
        self.bad({"n": 1, "tags": [], "sub": {"detail": "d", "more": 1}}, "$.sub")

    def test_null_enum_range_length_pattern(self):
        self.bad({"n": None, "tags": []}, "$.n: null")
        self.bad({"n": 11, "tags": []}, "above the maximum")
        self.bad({"n": -1, "tags": []}, "below the minimum")
        self.bad({"n": 1, "tags": [], "kind": "c"}, "$.kind")
        self.bad({"n": 1, "tags": [], "name": "a"}, "$.name")
        self.bad({"n": 1, "tags": [], "name": "AB"}, "$.name")

    def test_undocumented_status_and_path(self):
        self.bad({"detail": "x"}, "status 500 is not documented", status=500)
        with self.assertRaises(AssertionError):
            oc.validate_response(self.SPEC, "GET", "/nowhere", 200, {})
        self.assertEqual(oc.find_template(self.SPEC, "/things/12?x=1"), "/things/{id}")
        self.assertIsNone(oc.find_template(self.SPEC, "/things/12/more"))

    def test_rest_of_path_parameter(self):
        spec = {"paths": {
            "/b/{id}/files": {"get": {"responses": {}}},
            "/b/{id}/files/{path}": {"parameters": [
                {"name": "id", "in": "path", "required": True, "schema": {"type": "string"}},
                {"name": "path", "in": "path", "required": True, "x-rest-of-path": True,
                 "schema": {"type": "string"}}], "get": {"responses": {}}},
            "/c/{id}": {"get": {"responses": {}}}}}
        self.assertEqual(oc.find_template(spec, "/b/1/files/d/e/f.txt?x=1"), "/b/{id}/files/{path}")
        self.assertEqual(oc.find_template(spec, "/b/1/files/f"), "/b/{id}/files/{path}")
        self.assertEqual(oc.find_template(spec, "/b/1/files"), "/b/{id}/files")
        self.assertIsNone(oc.find_template(spec, "/b/1/files/"))
        self.assertIsNone(oc.find_template(spec, "/c/1/2"))  # only the marked parameter spans segments


# ---------------------------------------------------------------------------------------
# Most endpoints: one server with two executors
# ---------------------------------------------------------------------------------------

class Api(Client, unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.t = Takod(*QUIET, executors=2, acceptors=2).start()
        r = cls.t.request("GET", "/openapi.json")
        RECORDED.append(("GET", "/openapi.json", r.status, r.headers, r.body))
        SPECS.append(r.json())

    @classmethod
    def tearDownClass(cls):
        cls.t.cleanup()

    # ---- the document ----
    def test_openapi_document_is_served_and_covers_every_route(self):
        served = self.ok("GET", "/openapi.json")
        with open(os.path.join(SOURCE_DIR, "docs", "openapi.json")) as f:
            self.assertEqual(served, json.load(f), "the binary serves a stale docs/openapi.json")
        oc.check_document(served)
        with open(os.path.join(SOURCE_DIR, "workers", "routes.c")) as f:
            table = re.findall(r'\{EVHTTP_REQ_(\w+), "([^"]+)", api_\w+\}', f.read())
        self.assertGreater(len(table), 15)
        for method, pattern in table:
            names = iter(["a", "b", "c"])
            concrete = re.sub(r"\{\}", lambda m: next(names), pattern)
            concrete = concrete.replace("{*}", "d/e.txt")  # the rest of the path: several segments
            tmpl = oc.find_template(served, concrete)
            self.assertIsNotNone(tmpl, f"{method} {pattern} is not documented")
            self.assertIn(method.lower(), served["paths"][tmpl], f"{method} {pattern} is not documented")

    # ---- POST /execute ----
    def test_execute_sync_success_and_user_error(self):
        r = self.ok("POST", "/execute", {"code": "print(6 * 7)"})
        self.assertEqual((r["success"], r["stdout"], r["exit_code"], r["status"]), (True, "42\n", 0, "succeeded"))
        self.assertEqual(r["execution_id"], r["job_id"])
        r = self.ok("POST", "/execute", {"code": "1/0"})
        self.assertEqual((r["success"], r["status"], r["error_type"]), (False, "failed", "zero_division_error"))
        self.assertEqual(r["exit_code"], 1)
        self.assertIn("division", r["error"])

    # ---- async lifecycle ----
    def test_async_lifecycle(self):
        jid = self.submit(SLEEP.format(s=1.5), input_data={"a": 1})
        seen = set()
        deadline = time.time() + 60
        while time.time() < deadline:
            st = self.ok("GET", f"/jobs/{jid}")
            seen.add(st["status"])
            if st["status"] == "succeeded":
                break
            self.assertIn(st["status"], ("queued", "running"))
            time.sleep(0.05)
        self.assertIn("running", seen)
        self.assertEqual(st["status"], "succeeded")
        self.assertEqual(st["job_id"], jid)
        self.assertIsNotNone(st["started_at"])
        self.assertIsNotNone(st["ended_at"])
        self.assertIsNone(st["queue_position"])
        self.assertGreaterEqual(st["duration_ms"], 1400)
        rec = self.ok("GET", f"/jobs/{jid}/result")
        self.assertEqual((rec["execution_id"], rec["status"], rec["stdout"], rec["exit_code"]),
                         (jid, "succeeded", "start\nend\n", 0))
        self.assertEqual(rec["mode"], "async")
        self.assertEqual(rec["job_version"], "default@latest")
        self.assertNotIn("artifacts", rec)  # slim

    def test_result_without_wait_in_progress(self):
        jid = self.submit(SLEEP.format(s=5))
        self.addCleanup(self.cancel_quiet, jid)
        r = self.ok("GET", f"/jobs/{jid}/result")
        self.assertEqual(r["job_id"], jid)
        self.assertIn(r["status"], ("queued", "running"))
        self.assertEqual(r["message"], "Job still in progress")
        r = self.ok("GET", f"/jobs/{jid}/result?wait=false")
        self.assertEqual(r["message"], "Job still in progress")

    def test_long_poll_returns_on_completion(self):
        jid = self.submit(SLEEP.format(s=1))
        t0 = time.time()
        r = self.call("GET", f"/jobs/{jid}/result?wait=true&timeout=60", timeout=90)
        back = time.time()
        self.assertEqual(r.status, 200, r.body)
        rec = r.json()
        self.assertEqual(rec["status"], "succeeded")
        delay = back - ts(rec["ended_at"])
        print(f"\n    long-poll: returned {delay * 1000:.1f} ms after the record's ended_at "
              f"(waited {back - t0:.2f} s)")
        self.assertGreater(back - t0, 0.9)  # it did wait for the job
        self.assertLess(delay, 0.5)  # generous: the target is 100 ms

    def test_long_poll_expires_with_408(self):
        jid = self.submit(SLEEP.format(s=10))
        self.addCleanup(self.cancel_quiet, jid)
        t0 = time.time()
        self.error("GET", f"/jobs/{jid}/result?wait=true&timeout=1", 408, detail="Timeout waiting for job")
        took = time.time() - t0
        self.assertGreater(took, 0.9)
        self.assertLess(took, 10)

    def test_result_query_out_of_range_is_422(self):
        jid = UNKNOWN_UUID
        for q in ("wait=true&timeout=0", "wait=true&timeout=301", "timeout=abc", "wait=maybe", "view=huge",
                  "timeout=nan"):
            j = self.error("GET", f"/jobs/{jid}/result?{q}", 422)
            self.assertEqual(j["detail"][0]["loc"][0], "query")
        self.error("GET", f"/jobs/{jid}/result?wait=true&timeout=1", 404)

    # ---- view=full ----
    def test_view_full_fields(self):
        code = ("import json, sys\nprint('out')\nprint('err', file=sys.stderr)\n"
                "open('/output/a.txt', 'w').write('hello')\n"
                "json.dump({'ok': True}, open('/output/result.json', 'w'))\n")
        r = self.ok("POST", "/execute", {"code": code, "input_data": {"k": [1, 2]},
                                         "idempotency_key": "view-full-key-1"})
        jid = r["execution_id"]
        full = self.ok("GET", f"/jobs/{jid}/result?view=full")
        for k in ("job_ref", "artifacts", "resource_usage", "code_hash", "input_hash", "parent_execution_id",
                  "relationship", "stdout_truncated", "stderr_truncated", "idempotency_key", "attempt",
                  "timing", "runtime", "error", "output", "stdout", "stderr", "job_version"):
            self.assertIn(k, full)
        self.assertEqual(full["output"], {"ok": True})
        self.assertEqual((full["stdout"], full["stderr"]), ("out\n", "err\n"))
        self.assertEqual(full["code_hash"], hashlib.sha256(code.encode()).hexdigest())
        self.assertRegex(full["input_hash"], "^[0-9a-f]{64}$")
        self.assertEqual(full["idempotency_key"], "view-full-key-1")
        self.assertEqual((full["parent_execution_id"], full["relationship"]), (None, None))
        self.assertEqual((full["stdout_truncated"], full["stderr_truncated"]), (False, False))
        self.assertEqual(full["attempt"], 1)
        self.assertEqual(full["artifacts"], [{"name": "a.txt", "size_bytes": 5, "content_type": "text/plain",
                                              "sha256": hashlib.sha256(b"hello").hexdigest()}])
        self.assertIn("wall_time_ms", full["resource_usage"])
        for k in ("queue_ms", "startup_ms", "execution_ms", "total_ms"):
            self.assertGreaterEqual(full["timing"][k], 0)
        slim = self.ok("GET", f"/jobs/{jid}/result?view=slim")
        self.assertNotIn("artifacts", slim)
        self.assertEqual(self.ok("GET", f"/executions/{jid}?view=full"), full)

    # ---- cancel ----
    def test_cancel_running_job(self):
        jid = self.submit(SLEEP.format(s=30))
        self.addCleanup(self.cancel_quiet, jid)
        self.wait_status(jid, "running")
        t0 = time.time()
        r = self.ok("POST", f"/jobs/{jid}/cancel")
        self.assertEqual(r, {"status": "cancelled", "job_id": jid})
        rec = self.result(jid, timeout=30)
        print(f"\n    cancel of a running job: recorded cancelled after {time.time() - t0:.2f} s")
        self.assertEqual(rec["status"], "cancelled")
        self.assertEqual(rec["error"]["type"], "cancelled")
        self.assertLess(time.time() - t0, 10)
        self.assertNotIn("end", rec["stdout"] or "")
        # finished now: cancel is a 404 (eventually: see test_cancel_right_after_completion_is_404)
        self.t.wait_for(lambda: self.call("POST", f"/jobs/{jid}/cancel").status == 404, timeout=10,
                        what="cancel of the finished job to be a 404")
        self.error("POST", f"/jobs/{jid}/cancel", 404, detail="Job not found or already completed")

    def test_cancel_right_after_completion_is_404(self):
        """The record says succeeded (the long-poll answered): a cancel now must be a 404,
        never a 200 {"status": "cancelled"} for a job that was not cancelled. Timing-dependent:
        it tries 40 times."""
        wrong = []
        for _ in range(40):
            jid = self.submit("print(1)")
            self.assertEqual(self.result(jid)["status"], "succeeded")
            r = self.call("POST", f"/jobs/{jid}/cancel")
            if r.status != 404:
                wrong.append((jid, r.status, r.body, self.status(jid)))
        self.assertEqual(wrong, [], "cancel of a job whose record is final was answered as if cancelled")

    def test_cancel_unknown_or_finished_job_is_404(self):
        self.error("POST", f"/jobs/{UNKNOWN_UUID}/cancel", 404, detail="Job not found or already completed")
        self.error("POST", f"/jobs/{NOT_A_UUID}/cancel", 404)
        done = self.ok("POST", "/execute", {"code": "print(1)"})["execution_id"]
        self.error("POST", f"/jobs/{done}/cancel", 404, detail="already completed")

    # ---- rerun and fork ----
    PARENT = ("import json, sys\nd = json.load(open('/input/data.json'))\n"
              "print(d['x'], sys.stdin.read().strip())\n")

    def test_rerun_reproduces_code_input_stdin_and_timeout(self):
        parent = self.submit(self.PARENT, input_data={"x": 41}, stdin="from-stdin\n", timeout=7)
        p = self.result(parent, view="full")
        self.assertEqual(p["stdout"], "41 from-stdin\n")
        r = self.ok("POST", f"/jobs/{parent}/rerun", {})
        self.assertEqual((r["status"], r["parent_execution_id"], r["relationship"]), ("queued", parent, "rerun"))
        child = self.result(r["job_id"], view="full")
        self.assertEqual(child["stdout"], "41 from-stdin\n")
        self.assertEqual((child["parent_execution_id"], child["relationship"]), (parent, "rerun"))
        self.assertEqual(self.t.sql(f"SELECT timeout_s, job_type FROM jobs WHERE id = '{r['job_id']}'"),
                         [["7", "default"]])
        # a timeout in the body wins; no body at all is allowed too
        r2 = self.ok("POST", f"/jobs/{parent}/rerun", {"timeout": 9, "job_type": "default"})
        self.result(r2["job_id"])
        self.assertEqual(self.t.sql(f"SELECT timeout_s FROM jobs WHERE id = '{r2['job_id']}'"), [["9"]])
        r3 = self.call("POST", f"/jobs/{parent}/rerun")
        self.assertEqual(r3.status, 200, r3.body)
        self.result(r3.json()["job_id"])
        # same code and same input: the same hashes
        self.assertEqual(child["code_hash"], p["code_hash"])
        self.assertEqual(child["input_hash"], p["input_hash"], "same input, different input_hash")

    def test_input_data_bytes_are_kept_as_sent_through_rerun_and_fork(self):
        """/input/data.json is the request's input_data byte for byte (key order, spacing,
        number spelling, escapes), for the job, its rerun and its fork."""
        raw_input = ('{"b": 1,  "a": [1, 2.50, {"z":true}],\n "e\\u0301": "\\u00e9",'
                     ' "n": 1.0E+2, "z": null}')
        code = "import sys; sys.stdout.write(open('/input/data.json').read())"
        body = ('{"code": ' + json.dumps(code) + ', "input_data":  ' + raw_input + '  }').encode()
        r = self.call("POST", "/execute/async", raw=body)
        self.assertEqual(r.status, 200, r.body)
        parent = r.json()["job_id"]
        p = self.result(parent, view="full")
        self.assertEqual(p["stdout"], raw_input)
        rerun = self.ok("POST", f"/jobs/{parent}/rerun", {})["job_id"]
        self.assertEqual(self.result(rerun)["stdout"], raw_input)
        fork = self.ok("POST", f"/jobs/{parent}/fork", {"code": code + "; print()"})["job_id"]
        self.assertEqual(self.result(fork)["stdout"], raw_input + "\n")
        self.assertEqual(self.result(rerun, view="full")["input_hash"], p["input_hash"])

    def test_rerun_reproduces_input_files(self):
        """API.md: a rerun is a new job with the same code and input; files (ext) are input."""
        code = "print(open('/input/extra.txt').read())"
        parent = self.submit(code, files={"extra.txt": base64.b64encode(b"payload").decode()})
        self.assertEqual(self.result(parent)["stdout"], "payload\n")
        child = self.ok("POST", f"/jobs/{parent}/rerun", {})["job_id"]
        rec = self.result(child)
        self.assertEqual((rec["status"], rec["stdout"]), ("succeeded", "payload\n"),
                         f"the rerun lost the parent's input files: {rec['error']}")

    def test_rerun_errors(self):
        running = self.submit(SLEEP.format(s=10))
        self.addCleanup(self.cancel_quiet, running)
        self.error("POST", f"/jobs/{running}/rerun", 400, {}, detail="not finished")
        self.error("POST", f"/jobs/{UNKNOWN_UUID}/rerun", 404, {}, detail="Job not found")
        self.error("POST", f"/jobs/{NOT_A_UUID}/rerun", 404, {})
        j = self.error("POST", f"/jobs/{running}/rerun", 422, {"code": "print(1)", "timeout": 0})
        self.assertEqual(sorted(tuple(e["loc"]) for e in j["detail"]), [("body", "code"), ("body", "timeout")])
        self.error("POST", f"/jobs/{running}/rerun", 400, raw=b"{not json")

    def test_fork_new_code_same_input(self):
        parent = self.submit(self.PARENT, input_data={"x": 41})
        p = self.result(parent, view="full")
        code = "import json\nprint(json.load(open('/input/data.json'))['x'] * 2)\n"
        r = self.ok("POST", f"/jobs/{parent}/fork", {"code": code, "timeout": 5})
        self.assertEqual((r["status"], r["parent_execution_id"], r["relationship"]), ("queued", parent, "fork"))
        child = self.result(r["job_id"], view="full")
        self.assertEqual(child["stdout"], "82\n")
        self.assertEqual((child["parent_execution_id"], child["relationship"]), (parent, "fork"))
        self.assertNotEqual(child["code_hash"], p["code_hash"])
        self.assertEqual(child["input_hash"], p["input_hash"], "same input, different input_hash")

    def test_fork_errors(self):
        j = self.error("POST", f"/jobs/{UNKNOWN_UUID}/fork", 422, {})
        self.assertEqual(j["detail"][0]["loc"], ["body", "code"])
        self.error("POST", f"/jobs/{UNKNOWN_UUID}/fork", 422, {"code": "  \n"})
        self.error("POST", f"/jobs/{UNKNOWN_UUID}/fork", 422, {"code": "print(1)", "input_data": {}})
        self.error("POST", f"/jobs/{UNKNOWN_UUID}/fork", 404, {"code": "print(1)"}, detail="Job not found")
        self.error("POST", f"/jobs/{NOT_A_UUID}/fork", 404, {"code": "print(1)"})
        self.error("POST", f"/jobs/{UNKNOWN_UUID}/fork", 400, raw=b"[1,")

    # ---- events (ext) ----
    def test_events_stream_of_a_finished_job(self):
        spec = SPECS[0]
        jid = self.ok("POST", "/execute", {"code": "print('ev')"})["execution_id"]
        r = self.call("GET", f"/jobs/{jid}/events", timeout=30)
        self.assertEqual(r.status, 200)
        self.assertEqual(r.headers["Content-Type"], "text/event-stream")
        events = re.findall(r"event: (\w+)\ndata: (.*)\n\n", r.body.decode())
        self.assertEqual([e for e, _ in events], ["status", "result"])
        oc.validate(spec, spec["components"]["schemas"]["JobEvent"], json.loads(events[0][1]))
        rec = json.loads(events[1][1])
        oc.validate(spec, spec["components"]["schemas"]["ExecutionRecordFull"], rec)
        self.assertEqual((rec["execution_id"], rec["stdout"]), (jid, "ev\n"))
        self.error("GET", f"/jobs/{UNKNOWN_UUID}/events", 404)
        self.error("GET", f"/jobs/{NOT_A_UUID}/events", 404)

    # ---- artifacts ----
    def test_artifacts_download_head_and_304(self):
        data = b"a,b\n1,2\n"
        code = f"open('/output/report.csv', 'wb').write({data!r})\nopen('/output/.hidden', 'w').write('x')"
        jid = self.ok("POST", "/execute", {"code": code})["execution_id"]
        sha = hashlib.sha256(data).hexdigest()
        r = self.call("GET", f"/jobs/{jid}/artifacts/report.csv")
        self.assertEqual(r.status, 200)
        self.assertEqual(r.body, data)
        self.assertEqual(r.headers["ETag"], f'"{sha}"')
        self.assertEqual(r.headers["Content-Length"], str(len(data)))
        self.assertEqual(r.headers["Content-Type"], "text/csv")
        self.assertIn("report.csv", r.headers["Content-Disposition"])
        h = self.call("HEAD", f"/jobs/{jid}/artifacts/report.csv")
        self.assertEqual(h.status, 200)
        self.assertEqual(h.body, b"")
        self.assertEqual((h.headers["Content-Length"], h.headers["ETag"], h.headers["Content-Type"]),
                         (str(len(data)), f'"{sha}"', "text/csv"))
        for inm in (f'"{sha}"', f'W/"{sha}"', f'"other", "{sha}"', "*"):
            n = self.call("GET", f"/jobs/{jid}/artifacts/report.csv", headers={"If-None-Match": inm})
            self.assertEqual(n.status, 304, inm)
            self.assertEqual(n.body, b"")
            self.assertEqual(n.headers["ETag"], f'"{sha}"')
        n = self.call("HEAD", f"/jobs/{jid}/artifacts/report.csv", headers={"If-None-Match": f'"{sha}"'})
        self.assertEqual(n.status, 304)
        n = self.call("GET", f"/jobs/{jid}/artifacts/report.csv", headers={"If-None-Match": '"nope"'})
        self.assertEqual((n.status, n.body), (200, data))

    def test_artifact_errors(self):
        jid = self.ok("POST", "/execute", {"code": "open('/output/f.txt', 'w').write('x')"})["execution_id"]
        self.error("GET", f"/jobs/{jid}/artifacts/missing.txt", 404, detail="Artifact not found")
        self.error("GET", f"/jobs/{jid}/artifacts/..%2Fetc", 400, detail="Invalid artifact path")
        self.error("GET", f"/jobs/{jid}/artifacts/..%2F..%2Fetc%2Fpasswd", 400)
        self.error("GET", f"/jobs/{jid}/artifacts/.hidden", 400)
        self.error("GET", f"/jobs/{jid}/artifacts/a%20b", 400)
        self.error("GET", f"/jobs/{UNKNOWN_UUID}/artifacts/f.txt", 404, detail="Job not found")
        self.error("GET", f"/jobs/{NOT_A_UUID}/artifacts/f.txt", 404)
        h = self.call("HEAD", f"/jobs/{jid}/artifacts/missing.txt")
        self.assertEqual((h.status, h.body), (404, b""))

    # ---- history ----
    def test_executions_pagination_filters_and_order(self):
        a = self.ok("POST", "/execute", {"code": "print('a')"})["execution_id"]
        b = self.ok("POST", "/execute", {"code": "raise ValueError('b')"})["execution_id"]
        page = self.ok("GET", "/executions?limit=1000")
        total = page["count"]
        self.assertGreaterEqual(total, 2)
        self.assertFalse(page["has_more"])
        self.assertEqual((page["limit"], page["offset"]), (1000, 0))
        ids = [i["execution_id"] for i in page["items"]]
        self.assertLess(ids.index(b), ids.index(a), "newest first")
        created = [ts(i["created_at"]) for i in page["items"]]
        self.assertEqual(created, sorted(created, reverse=True))
        self.assertEqual(self.t.sql("SELECT count(*) FROM jobs"), [[str(total)]])
        one = self.ok("GET", "/executions?limit=1")
        self.assertEqual((one["count"], one["has_more"], one["items"][0]["execution_id"]), (1, True, ids[0]))
        last = self.ok("GET", f"/executions?limit=1&offset={total - 1}")
        self.assertEqual((last["count"], last["has_more"], last["items"][0]["execution_id"]), (1, False, ids[-1]))
        two = self.ok("GET", f"/executions?limit=2&offset=1")
        self.assertEqual([i["execution_id"] for i in two["items"]], ids[1:3])
        past = self.ok("GET", f"/executions?offset={total}")
        self.assertEqual((past["items"], past["count"], past["has_more"], past["offset"]), ([], 0, False, total))
        self.assertEqual(self.ok("GET", "/executions?offset=999999")["items"], [])
        for q in ("limit=0", "limit=1001", "limit=-1", "limit=abc", "offset=-1", "offset=x", "status=bogus",
                  "view=everything"):
            j = self.error("GET", f"/executions?{q}", 422)
            self.assertEqual(j["detail"][0]["loc"][0], "query")
        failed = self.ok("GET", "/executions?status=failed&limit=1000")["items"]
        self.assertIn(b, [i["execution_id"] for i in failed])
        self.assertTrue(all(i["status"] == "failed" for i in failed))
        ok = self.ok("GET", "/executions?status=succeeded&limit=1000")["items"]
        self.assertIn(a, [i["execution_id"] for i in ok])
        self.assertNotIn(b, [i["execution_id"] for i in ok])
        self.assertEqual(self.ok("GET", "/executions?job_type=default&limit=1000")["count"], total)
        self.assertEqual(self.ok("GET", "/executions?job_type=nope")["items"], [])
        full = self.ok("GET", "/executions?limit=2&view=full")
        self.assertTrue(all("artifacts" in i and "attempt" in i for i in full["items"]))

    def test_execution_by_id(self):
        jid = self.ok("POST", "/execute", {"code": "print('x')"})["execution_id"]
        rec = self.ok("GET", f"/executions/{jid}")
        self.assertEqual((rec["execution_id"], rec["status"], rec["stdout"]), (jid, "succeeded", "x\n"))
        self.assertEqual(rec, self.ok("GET", f"/jobs/{jid}/result"))
        self.assertIn("artifacts", self.ok("GET", f"/executions/{jid}?view=full"))
        self.error("GET", f"/executions/{UNKNOWN_UUID}", 404, detail="Execution not found")
        self.error("GET", f"/executions/{NOT_A_UUID}", 404)
        self.error("GET", f"/executions/{jid}?view=x", 422)
        # an unfinished job's record is served too
        running = self.submit(SLEEP.format(s=5))
        self.addCleanup(self.cancel_quiet, running)
        self.assertIn(self.ok("GET", f"/executions/{running}")["status"], ("queued", "running"))

    def test_job_status_unknown(self):
        self.error("GET", f"/jobs/{UNKNOWN_UUID}", 404, detail="Job not found")
        self.error("GET", f"/jobs/{UNKNOWN_UUID}/result", 404, detail="Job not found")

    # ---- environments and operations ----
    def test_job_types(self):
        types = self.ok("GET", "/job-types")
        self.assertEqual([t["name"] for t in types], ["default", "data-processing", "ml-inference"])
        one = self.ok("GET", "/job-types/default")
        self.assertEqual(one, types[0])
        for k in ("requirements", "python_version", "memory_limit", "cpu_limit", "timeout", "network_enabled",
                  "image_exists", "version", "versions", "image"):
            self.assertIn(k, one)
        self.assertEqual((one["timeout"], one["memory_limit"], one["image_exists"]), (30, "512m", True))
        dp = self.ok("GET", "/job-types/data-processing")
        self.assertEqual((dp["requirements"], dp["memory_limit"], dp["cpu_limit"], dp["timeout"], dp["image"]),
                         (["pandas", "numpy"], "1g", 2.0, 60, "tako-vm-data-processing:latest"))
        ml = self.ok("GET", "/job-types/ml-inference")
        self.assertEqual((ml["requirements"], ml["memory_limit"], ml["timeout"]),
                         (["numpy", "scikit-learn"], "2g", 120))
        self.error("GET", "/job-types/nope", 404, detail="Job type not found")
        self.error("POST", "/job-types/nope/build", 404, detail="Job type not found")
        self.error("POST", "/job-types/default/build", 400)
        j = self.error("POST", "/execute", 422, {"code": "print(1)", "job_type": "nope"})
        self.assertEqual(j["detail"][0]["type"], "unknown_job_type")
        self.assertIn("data-processing", j["detail"][0]["msg"])
        j = self.error("POST", "/execute", 422, {"code": "print(1)", "job_type": "data-processing@0123456789ab"})
        self.assertEqual(j["detail"][0]["type"], "unknown_version")

    def test_audit_verify(self):
        """(ext) The record chain verifies; a malformed checkpoint is a 422."""
        self.ok("POST", "/execute", {"code": "print('chained')"})
        v = self.ok("GET", "/audit/verify")
        self.assertTrue(v["ok"], v)
        self.assertIsNone(v["problem"])
        self.assertGreaterEqual(v["rows_checked"], 1)
        cp = self.ok("GET", f"/audit/verify?expect={v['last_seq']}:{v['last_hash']}")
        self.assertEqual(cp["checkpoint"], "match")  # later jobs chain after it
        self.error("GET", "/audit/verify?expect=nope", 422)

    def test_health_and_pool_stats(self):
        h = self.ok("GET", "/health")
        self.assertEqual(h["status"], "healthy")
        self.assertTrue(h["docker_available"] and h["database_available"])
        self.assertEqual(h["queue_stats"]["max_workers"], 2)
        self.assertEqual(h["queue_stats"]["max_queue_size"], 1024)
        self.assertTrue(h["version"])
        p = self.ok("GET", "/pool/stats")
        self.assertEqual(set(p), {"pending", "running", "max_workers", "max_queue_size"})
        self.assertEqual((p["max_workers"], p["max_queue_size"]), (2, 1024))

    def test_nodes_lists_this_node_and_its_jobs(self):
        """(ext) GET /nodes: a single node lists itself (the `nodes` table), live, under /health's
        node id; a running job of it is counted on it."""
        h = self.ok("GET", "/health")
        self.assertEqual(h["cluster"], {"enabled": False, "live_nodes": 1})
        self.assertTrue(h["node"].endswith(":" + self.t.data_dir), h["node"])  # <host>:<data_dir>
        page = self.ok("GET", "/nodes")
        self.assertGreaterEqual(page["lease_s"], 2)
        self.assertEqual(page["queued_unowned"], 0)
        mine = [n for n in page["nodes"] if n["node_id"] == h["node"]]
        self.assertEqual(len(mine), 1, page)
        n = mine[0]
        self.assertEqual((n["live"], n["stopped_at"], n["cluster"], n["executors"], n["pid"]),
                         (True, None, False, 2, self.t.pid), n)
        self.assertLessEqual(ts(n["started_at"]), ts(n["last_seen"]))
        jid = self.submit(SLEEP.format(s=30))
        self.addCleanup(self.cancel_quiet, jid)
        self.wait_status(jid, "running")
        counted = self.t.wait_for(
            lambda: [x for x in self.ok("GET", "/nodes")["nodes"]
                     if x["node_id"] == h["node"] and x["running"] >= 1],
            timeout=10, what="the running job counted on this node")
        self.assertEqual(counted[0]["queued"], 0)
        self.ok("POST", f"/jobs/{jid}/cancel")

    def test_dlq_endpoints_empty(self):
        s = self.ok("GET", "/dlq/stats")
        self.assertEqual(s, {"total": 0, "by_error_type": {}})
        page = self.ok("GET", "/dlq")
        self.assertEqual(page, {"items": [], "limit": 100, "offset": 0, "has_more": False, "count": 0})
        self.error("GET", "/dlq?limit=0", 422)
        self.error("GET", "/dlq?offset=-5", 422)
        self.error("DELETE", f"/dlq/{UNKNOWN_UUID}", 404, detail="DLQ entry not found")
        self.error("DELETE", f"/dlq/{NOT_A_UUID}", 404)

    def test_dlq_entry_without_its_record_can_be_removed(self):
        """Retention (database.execution_record_ttl_days) deletes job records but not their
        DLQ entries; such an entry is listed and counted, so DELETE must remove it."""
        entry = self.t.sql("INSERT INTO dlq (job_id, job_data, error_type, error_message) VALUES"
                           " (gen_random_uuid(), '{\"job_type\": \"default\", \"mode\": \"async\","
                           " \"timeout\": 30, \"code_hash\": null, \"input_hash\": null}',"
                           " 'interrupted', 'simulated: its record was deleted by retention') RETURNING id")[0][0]
        self.addCleanup(self.t.sql, f"DELETE FROM dlq WHERE id = '{entry}'")
        self.assertIn(entry, [e["id"] for e in self.ok("GET", "/dlq")["items"]])
        self.assertEqual(self.ok("GET", "/dlq/stats")["total"], 1)
        self.assertEqual(self.ok("DELETE", f"/dlq/{entry}"), {"status": "removed", "entry_id": entry})

    def test_metrics_counters_move(self):
        before = self.ok("GET", "/metrics")
        self.assertTrue(before.headers["Content-Type"].startswith("text/plain"))
        text0 = before.body.decode()
        self.ok("GET", "/health")
        self.ok("POST", "/execute", {"code": "print(1)"})
        text1 = self.ok("GET", "/metrics").body.decode()
        req = dict(name="takod_http_requests_total")
        self.assertGreater(metric(text1, **req, method="GET", route="/health", code="200"),
                           metric(text0, **req, method="GET", route="/health", code="200"))
        self.assertGreater(metric(text1, **req, method="POST", route="/execute", code="200"),
                           metric(text0, **req, method="POST", route="/execute", code="200"))
        self.assertGreaterEqual(metric(text1, "takod_jobs_total", status="succeeded"),
                                metric(text0, "takod_jobs_total", status="succeeded") + 1)
        self.assertGreaterEqual(metric(text1, "takod_job_phase_seconds_count", phase="total"),
                                metric(text0, "takod_job_phase_seconds_count", phase="total") + 1)
        self.assertGreater(metric(text1, "takod_jobs_admitted_total"), metric(text0, "takod_jobs_admitted_total"))
        self.assertEqual(metric(text1, "takod_executors"), 2)
        for name in ("takod_ring_depth", "takod_free_slots", "takod_warm_containers", "takod_container_starts",
                     "takod_process_restarts_total",
                     "takod_job_errors_total", "takod_job_phase_seconds_bucket"):
            self.assertIn(name, text1)

    def test_metrics_label_is_the_request_method(self):
        """A PUT /execute (405) must not be counted as a POST."""
        self.error("PUT", "/execute", 405)
        text = self.ok("GET", "/metrics").body.decode()
        # a method no route has is counted under route="other", never as the route's method
        self.assertGreaterEqual(metric(text, "takod_http_requests_total", method="other", route="other",
                                       code="405"), 1, [l for l in text.splitlines() if '"405"' in l])
        self.assertEqual(metric(text, "takod_http_requests_total", method="POST", route="/execute",
                                code="405"), 0)

    # ---- idempotency ----
    def test_idempotency_concurrent_async_submits_make_one_job(self):
        body = {"code": "print('once')", "idempotency_key": "conc-key-0001"}
        with concurrent.futures.ThreadPoolExecutor(20) as pool:
            rs = list(pool.map(lambda _: self.call("POST", "/execute/async", body), range(20)))
        self.assertEqual([r.status for r in rs], [200] * 20, [r.body for r in rs if r.status != 200])
        ids = {r.json()["job_id"] for r in rs}
        self.assertEqual(len(ids), 1, ids)
        jid = ids.pop()
        self.assertEqual(self.t.sql("SELECT id FROM jobs WHERE idempotency_key = 'conc-key-0001'"), [[jid]])
        self.assertEqual(self.result(jid)["stdout"], "once\n")
        # the same request again: the same job, with its current status
        again = self.ok("POST", "/execute/async", body)
        self.assertEqual(again, {"job_id": jid, "status": "succeeded"})
        # a different payload with the key: 409 naming the job
        j = self.error("POST", "/execute/async", 409, {"code": "print('twice')", "idempotency_key": "conc-key-0001"})
        self.assertIn(jid, j["detail"])
        self.assertEqual(j["existing_job_id"], jid)
        j = self.error("POST", "/execute/async", 409, {**body, "timeout": 5})
        self.assertIn(jid, j["detail"])
        self.assertEqual(self.t.sql("SELECT count(*) FROM jobs WHERE idempotency_key = 'conc-key-0001'"), [["1"]])

    def test_idempotency_on_sync_execute(self):
        body = {"code": "import random\nprint(random.random())", "idempotency_key": "sync-key-0001"}
        first = self.ok("POST", "/execute", body)
        second = self.ok("POST", "/execute", body)
        self.assertEqual(second["execution_id"], first["execution_id"])
        self.assertEqual(second["stdout"], first["stdout"])
        self.assertEqual((second["success"], second["status"]), (True, "succeeded"))
        j = self.error("POST", "/execute", 409, {**body, "code": "print(2)"})
        self.assertIn(first["execution_id"], j["detail"])
        self.assertEqual(self.t.sql("SELECT count(*) FROM jobs WHERE idempotency_key = 'sync-key-0001'"), [["1"]])
        # a sync duplicate of a job still running waits for it
        slow = {"code": SLEEP.format(s=1), "idempotency_key": "sync-key-0002"}
        box = {}
        th = threading.Thread(target=lambda: box.setdefault("r", self.ok("POST", "/execute", slow)))
        th.start()
        self.t.wait_for(lambda: self.t.sql("SELECT 1 FROM jobs WHERE idempotency_key = 'sync-key-0002'"),
                        what="the first sync job's record")
        dup = self.ok("POST", "/execute", slow)
        th.join(60)
        self.assertEqual(dup["execution_id"], box["r"]["execution_id"])
        self.assertEqual(dup["stdout"], "start\nend\n")

    def test_idempotency_key_rules(self):
        for key in ("short", "x" * 256, "has space!", 12345678):
            j = self.error("POST", "/execute/async", 422, {"code": "print(1)", "idempotency_key": key})
            self.assertEqual(j["detail"][0]["loc"], ["body", "idempotency_key"])

    # ---- headers and errors ----
    def test_correlation_id_echo_and_security_headers(self):
        for method, path, body in (("GET", "/health", None), ("POST", "/execute", {"code": ""}),
                                   ("GET", "/nowhere", None), ("DELETE", "/health", None)):
            r = self.call(method, path, body, headers={"X-Correlation-ID": "trace-abc.123_X"})
            self.assertEqual(r.headers["X-Correlation-ID"], "trace-abc.123_X", path)
            self.assertEqual(r.headers["X-Content-Type-Options"], "nosniff")
            self.assertEqual(r.headers["X-Frame-Options"], "DENY")
            if r.status >= 400:
                self.assertEqual(r.json()["correlation_id"], "trace-abc.123_X")
        r = self.call("GET", "/health")
        self.assertRegex(r.headers["X-Correlation-ID"], "^[0-9a-f-]{36}$")
        for bad in ("has space", "x" * 65, "semi;colon"):
            r = self.call("GET", "/health", headers={"X-Correlation-ID": bad})
            self.assertRegex(r.headers["X-Correlation-ID"], "^[0-9a-f-]{36}$", bad)
        r = self.call("POST", "/execute", {"code": "print('corr')"}, headers={"X-Correlation-ID": "job-corr-1"})
        self.assertEqual(self.t.sql(f"SELECT correlation_id FROM jobs WHERE id = '{r.json()['execution_id']}'"),
                         [["job-corr-1"]])

    def test_422_lists_each_bad_field(self):
        body = {"code": "", "input_data": [1], "timeout": 0, "startup_timeout": 5, "job_type": "gpu",
                "requirements": ["numpy"], "idempotency_key": "short", "stdin": 5,
                "files": {"../x": "aGk="}, "bogus": 1}
        j = self.error("POST", "/execute", 422, body)
        locs = sorted(tuple(e["loc"]) for e in j["detail"])
        self.assertEqual(locs, sorted(("body", k) for k in body))
        for e in j["detail"]:
            self.assertTrue(e["msg"] and e["type"], e)
        j = self.error("POST", "/execute/async", 422, {"input_data": {}})
        self.assertEqual(j["detail"], [{"loc": ["body", "code"], "msg": "Field required", "type": "missing"}])
        for bad in ({"code": 5}, {"code": "   \n\t"}, {"code": "x" * 100001}, {"code": "print(1)", "timeout": 301},
                    {"code": "print(1)", "timeout": "5"}, {"code": "print(1)", "timeout": 1.5},
                    {"code": "print(1)", "job_type": "default@v2"}, {"code": "print(1)", "files": {"data.json": ""}},
                    {"code": "print(1)", "files": {"a": "not base64!"}}):
            self.error("POST", "/execute", 422, bad)
        self.error("POST", "/execute", 422, raw=b'["code"]')

    def test_bad_bodies_are_400(self):
        self.error("POST", "/execute", 400, raw=b"\xff\xfe{", detail="Invalid JSON")
        self.error("POST", "/execute", 400, raw=b'{"code": "print(\xff)"}')  # not UTF-8 inside a string
        self.error("POST", "/execute/async", 400, raw=b'{"code": "x",')
        self.error("POST", "/execute", 400, raw=b'{"code": "x", "code": "y"}')  # duplicate key
        self.error("POST", "/execute", 400, raw=b"")

    def test_payload_too_large_is_413(self):
        r = self.call("POST", "/execute", raw=b'{"code": "' + b"#" * (2 * 1024 * 1024 + 10) + b'"}')
        self.assertEqual(r.status, 413)
        # within evhttp's own bound (the largest body a route takes: a session file's upload,
        # while sessions are on) routes.c answers with JSON; beyond it libevent writes the
        # reply itself (text/html, no X-Correlation-ID)
        if r.headers.get("Content-Type", "").startswith("application/json"):
            self.assertEqual(r.json()["detail"], "Request body too large (limits.max_payload_bytes)")
            self.assertEqual(r.json()["correlation_id"], r.headers["X-Correlation-ID"])

    def test_unknown_route_and_wrong_method(self):
        j = self.error("GET", "/nowhere", 404, detail="Not Found")
        self.error("GET", "/jobs", 404)
        self.error("GET", "/jobs/a/b/c/d", 404)
        for method, path, allow in (("PUT", "/execute", "POST"), ("GET", "/execute", "POST"),
                                    ("DELETE", f"/jobs/{UNKNOWN_UUID}", "GET"), ("POST", "/health", "GET"),
                                    ("GET", f"/dlq/{UNKNOWN_UUID}", "DELETE"),
                                    ("PATCH", f"/jobs/{UNKNOWN_UUID}/artifacts/x", "GET, HEAD"),
                                    ("GET", f"/jobs/{UNKNOWN_UUID}/cancel", "POST"), ("POST", "/metrics", "GET")):
            r = self.call(method, path)
            self.assertEqual(r.status, 405, (method, path))
            self.assertEqual(r.headers["Allow"], allow, (method, path))
            self.assertEqual(r.json()["detail"], "Method Not Allowed")

    def test_ids_that_are_not_uuids_are_404(self):
        for bad in (NOT_A_UUID, "1", "00000000-0000-4000-8000-00000000000Z", "%27%3B--"):
            self.error("GET", f"/jobs/{bad}", 404)
            self.error("GET", f"/jobs/{bad}/events", 404)
            self.error("GET", f"/jobs/{bad}/result", 404)
            self.error("GET", f"/jobs/{bad}/result?wait=true&timeout=1", 404)
            self.error("POST", f"/jobs/{bad}/cancel", 404)
            self.error("POST", f"/jobs/{bad}/rerun", 404, {})
            self.error("POST", f"/jobs/{bad}/fork", 404, {"code": "print(1)"})
            self.error("GET", f"/jobs/{bad}/artifacts/x.txt", 404)
            self.error("GET", f"/executions/{bad}", 404)
            self.error("DELETE", f"/dlq/{bad}", 404)

    # ---- extensions ----
    def test_stdin_is_fed_to_the_program(self):
        r = self.ok("POST", "/execute", {"code": "import sys\nprint(sys.stdin.read().upper(), end='')",
                                         "stdin": "hello\nworld\n"})
        self.assertEqual(r["stdout"], "HELLO\nWORLD\n")
        r = self.ok("POST", "/execute", {"code": "import sys\nprint(repr(sys.stdin.read()))"})
        self.assertEqual(r["stdout"], "''\n")

    def test_files_appear_under_input(self):
        blob = bytes(range(256))
        code = ("import os, hashlib\nprint(sorted(os.listdir('/input')))\n"
                "print(open('/input/notes.txt').read())\n"
                "print(hashlib.sha256(open('/input/blob.bin', 'rb').read()).hexdigest())\n")
        r = self.ok("POST", "/execute", {"code": code, "files": {
            "notes.txt": base64.b64encode(b"hi there").decode(), "blob.bin": base64.b64encode(blob).decode()}})
        self.assertTrue(r["success"], r)
        lines = r["stdout"].splitlines()
        self.assertEqual(lines[0], "['blob.bin', 'data.json', 'notes.txt']")
        self.assertEqual(lines[1], "hi there")
        self.assertEqual(lines[2], hashlib.sha256(blob).hexdigest())


# ---------------------------------------------------------------------------------------
# One executor, eight slots, no retries: queued jobs, a full queue, the dead-letter queue
# ---------------------------------------------------------------------------------------

class SingleExecutor(Client, unittest.TestCase):
    SLOTS = 8

    starting = []  # /health answers seen while the server came up

    @classmethod
    def setUpClass(cls):
        cls.t = Takod("server.queue_size=8", "server.max_retry_attempts=0", *QUIET, executors=1, acceptors=1)
        start_watching_health(cls.t, cls.starting)
        SPECS.append(cls.t.request("GET", "/openapi.json").json())

    @classmethod
    def tearDownClass(cls):
        cls.t.cleanup()

    def setUp(self):
        self.idle()

    def test_health_is_503_starting_until_ready(self):
        early = [r for r in self.starting if r.status != 200]
        if not early:
            self.skipTest("takod was ready at its first /health")
        for r in early:
            self.assertEqual(r.status, 503)
            self.assertEqual(r.json(), {"status": "starting", "version": r.json()["version"]})
        self.assertEqual(self.ok("GET", "/health")["status"], "healthy")

    def fill(self):
        """One running and SLOTS-1 queued sleeping jobs: every slot taken."""
        ids = [self.submit(SLEEP.format(s=60)) for _ in range(self.SLOTS)]
        for j in ids:
            self.addCleanup(self.cancel_quiet, j)
        self.wait_status(ids[0], "running")
        return ids

    def drain(self, ids):
        for j in ids[1:] + ids[:1]:  # the queued ones first, so none of them starts
            self.cancel_quiet(j)
        self.idle()

    def test_cancel_queued_job(self):
        running = self.submit(SLEEP.format(s=60))
        self.addCleanup(self.cancel_quiet, running)
        queued = self.submit(SLEEP.format(s=60))
        self.addCleanup(self.cancel_quiet, queued)
        self.wait_status(running, "running")
        st = self.ok("GET", f"/jobs/{queued}")
        self.assertEqual((st["status"], st["queue_position"], st["started_at"]), ("queued", 0, None))
        box = {}
        waiter = threading.Thread(target=lambda: box.setdefault(
            "r", self.call("GET", f"/jobs/{queued}/result?wait=true&timeout=60&view=full", timeout=90)))
        waiter.start()
        time.sleep(0.3)
        self.assertEqual(self.ok("POST", f"/jobs/{queued}/cancel"), {"status": "cancelled", "job_id": queued})
        waiter.join(30)
        self.assertFalse(waiter.is_alive(), "the long-poll on the cancelled job was not answered")
        rec = box["r"].json()
        self.assertEqual((rec["status"], rec["error"]["type"], rec["started_at"]), ("cancelled", "cancelled", None))
        self.assertEqual(self.status(queued), "cancelled")
        self.assertEqual(self.status(running), "running")  # the other job is untouched
        self.ok("POST", f"/jobs/{running}/cancel")
        self.assertEqual(self.result(running)["status"], "cancelled")
        self.error("POST", f"/jobs/{queued}/cancel", 404)
        self.idle()
        self.assertEqual(self.t.sql(f"SELECT started_at IS NULL, attempt FROM jobs WHERE id = '{queued}'"),
                         [["t", "0"]], "the cancelled queued job must never have run")

    def test_cancelled_queued_jobs_do_not_block_new_ones(self):
        """Cancel every queued job, then fill the freed slots: every new job must run."""
        ids = self.fill()
        for j in ids[1:]:
            self.ok("POST", f"/jobs/{j}/cancel")
        fresh = [self.submit(f"print({i})") for i in range(self.SLOTS - 1)]
        for j in fresh:
            self.addCleanup(self.cancel_quiet, j)
        self.ok("POST", f"/jobs/{ids[0]}/cancel")
        deadline = time.time() + 30
        while time.time() < deadline:
            states = [self.status(j) for j in fresh]
            if all(s == "succeeded" for s in states):
                break
            time.sleep(0.25)
        self.assertEqual(states, ["succeeded"] * len(fresh),
                         f"pool: {self.t.request('GET', '/pool/stats').json()}")

    def test_queue_full_is_503_and_the_key_is_not_burned(self):
        ids = self.fill()
        body = {"code": "print('keyed')", "idempotency_key": "full-queue-key-1"}
        self.error("POST", "/execute/async", 503, body, detail="queue is full")
        self.error("POST", "/execute", 503, {"code": "print(1)", "idempotency_key": "full-queue-key-2"})
        self.error("POST", f"/jobs/{ids[0]}/fork", 503, {"code": "print(1)"})
        self.assertEqual(self.t.sql("SELECT count(*) FROM jobs WHERE idempotency_key LIKE 'full-queue-key-%'"),
                         [["0"]])
        self.drain(ids)
        r = self.ok("POST", "/execute/async", body)
        self.assertEqual(r["status"], "queued")
        self.assertEqual(self.result(r["job_id"])["stdout"], "keyed\n")
        s = self.ok("POST", "/execute", {"code": "print(1)", "idempotency_key": "full-queue-key-2"})
        self.assertTrue(s["success"])
        self.assertEqual(self.t.sql("SELECT count(*) FROM jobs WHERE idempotency_key LIKE 'full-queue-key-%'"),
                         [["2"]])

    def test_duplicate_key_while_queue_full_returns_the_existing_job(self):
        body = {"code": "print('first')", "idempotency_key": "dup-full-key-1"}
        jid = self.submit(**body)
        self.result(jid)
        ids = self.fill()
        r = self.call("POST", "/execute/async", body)
        self.drain(ids)
        self.assertEqual(r.status, 200, f"same key and payload should name job {jid}: {r.body}")
        self.assertEqual(r.json(), {"job_id": jid, "status": "succeeded"})

    def test_metrics_count_503_under_its_code(self):
        ids = self.fill()
        before = metric(self.t.request("GET", "/metrics").body.decode(), "takod_jobs_rejected_total")
        self.error("POST", "/execute/async", 503, {"code": "print(1)"})
        text = self.ok("GET", "/metrics").body.decode()
        self.drain(ids)
        self.assertEqual(metric(text, "takod_jobs_rejected_total"), before + 1)
        self.assertGreaterEqual(
            metric(text, "takod_http_requests_total", method="POST", route="/execute/async", code="503"), 1,
            [line for line in text.splitlines() if "/execute/async" in line])

    def test_dead_letter_queue(self):
        base = self.ok("GET", "/dlq/stats")["total"]
        jid = self.submit(SLEEP.format(s=60))
        self.addCleanup(self.cancel_quiet, jid)
        self.wait_status(jid, "running")
        time.sleep(0.3)
        os.kill(self.t.roles()["takod: executor 0"], signal.SIGKILL)
        rec = self.result(jid, timeout=60)
        self.assertEqual((rec["status"], rec["error"]["type"]), ("failed", "interrupted"))
        entry = self.t.wait_for(lambda: [e for e in self.ok("GET", "/dlq")["items"] if e["job_id"] == jid],
                                what="the DLQ entry")[0]
        self.assertEqual(entry["error_type"], "interrupted")
        self.assertEqual(entry["job_data"]["mode"], "async")
        self.assertNotIn("code", entry["job_data"])  # redacted
        stats = self.ok("GET", "/dlq/stats")
        self.assertEqual(stats["total"], base + 1)
        self.assertGreaterEqual(stats["by_error_type"]["interrupted"], 1)
        self.assertIn(entry["id"], [e["id"] for e in self.ok("GET", "/dlq?error_type=interrupted")["items"]])
        self.assertEqual(self.ok("GET", "/dlq?error_type=docker_error")["items"], [])
        page = self.ok("GET", "/dlq?limit=1")
        self.assertEqual((page["count"], page["limit"]), (1, 1))
        self.assertEqual(self.ok("DELETE", f"/dlq/{entry['id']}"), {"status": "removed", "entry_id": entry["id"]})
        self.error("DELETE", f"/dlq/{entry['id']}", 404, detail="DLQ entry not found")
        self.assertEqual(self.ok("GET", "/dlq/stats")["total"], base)
        # the executor is back: a job runs again
        self.t.wait_for(lambda: "takod: executor 0" in self.t.roles(), what="the executor respawned")
        r = self.ok("POST", "/execute", {"code": "print('back')"}, timeout=120)
        self.assertEqual(r["stdout"], "back\n")


# ---------------------------------------------------------------------------------------
# API keys and the rate limit: 401, ownership (404 for another key's job), 429
# ---------------------------------------------------------------------------------------

@unittest.skipUnless(_accepted("auth.api_keys=k-0123456789abcdef"), "this takod has no API keys")
class Keys(Client, unittest.TestCase):
    K1, K2 = "key-one-0123456789abcdef", "key-two-0123456789abcdef"

    @classmethod
    def setUpClass(cls):
        cls.t = Takod(f"auth.api_keys={cls.K1},{cls.K2}", "auth.rate_limit_per_minute=60",
                      "auth.rate_limit_burst=5", executors=1, acceptors=1).start()
        SPECS.append(cls.t.request("GET", "/openapi.json", headers={"X-API-Key": cls.K1}).json())

    @classmethod
    def tearDownClass(cls):
        cls.t.cleanup()

    def test_a_key_owns_its_jobs(self):
        jid = self.ok("POST", "/execute", {"code": "print('mine')"}, headers={"X-API-Key": self.K1})["execution_id"]
        self.assertEqual(self.ok("GET", f"/jobs/{jid}", headers={"Authorization": f"Bearer {self.K1}"})["status"],
                         "succeeded")
        self.error("GET", f"/jobs/{jid}", 404, headers={"Authorization": f"Bearer {self.K2}"})
        self.assertNotIn(jid, [i["execution_id"] for i in
                               self.ok("GET", "/executions", headers={"X-API-Key": self.K2})["items"]])

    def test_missing_or_wrong_key_is_401(self):
        self.assertEqual(self.ok("GET", "/health")["status"], "healthy")  # always open
        for headers, detail in (({}, "Missing API key"), ({"X-API-Key": "wrong-key-0123456789"}, "Invalid API key")):
            r = self.call("GET", "/executions", headers=headers)
            self.assertEqual(r.status, 401, r.body)
            self.assertEqual(r.headers["WWW-Authenticate"], 'Bearer realm="takod"')
            self.assertIn(detail, r.json()["detail"])
        self.error("GET", "/metrics", 401)

    def test_nodes_needs_the_admin_key(self):
        """(ext) With keys on, GET /nodes is the admin key's (here there is none: 403 for all)."""
        self.error("GET", "/nodes", 403, headers={"X-API-Key": self.K1}, detail="admin key")
        self.error("GET", "/nodes", 401)

    def test_rate_limit_is_429_with_retry_after(self):
        seen = []
        for _ in range(20):  # burst 5: the sixth request at the latest is refused
            r = self.call("GET", "/pool/stats", headers={"X-API-Key": self.K2})
            seen.append(r.status)
            if r.status == 429:
                break
            self.assertRegex(r.headers["X-RateLimit-Limit"], r"^[0-9]+$")
        self.assertEqual(seen[-1], 429, seen)
        self.assertGreaterEqual(int(r.headers["Retry-After"]), 1)
        self.assertEqual(r.headers["X-RateLimit-Remaining"], "0")
        self.assertEqual(r.json()["detail"], "Rate limit exceeded; slow down")


# ---------------------------------------------------------------------------------------
# Sessions (ext, docs/SESSIONS.md): API keys (ownership), small quotas and a small file cap
# ---------------------------------------------------------------------------------------

@unittest.skipUnless(_accepted("sessions.max_per_key=2"), "this takod has no sessions")
class Sessions(Client, unittest.TestCase):
    K1, K2 = "sess-one-0123456789abcdef", "sess-two-0123456789abcdef"
    FILE_CAP = 4096

    @classmethod
    def setUpClass(cls):
        cls.t = Takod(f"auth.api_keys={cls.K1},{cls.K2}", *QUIET, "sessions.max_per_key=2",
                      "sessions.max_total=3", f"sessions.max_file_bytes={cls.FILE_CAP}",
                      executors=1, acceptors=1).start()
        SPECS.append(cls.t.request("GET", "/openapi.json", headers={"X-API-Key": cls.K1}).json())

    @classmethod
    def tearDownClass(cls):
        cls.t.cleanup()

    def call(self, method, path, body=None, raw=None, headers=None, timeout=120):
        """K1's request unless the headers say otherwise."""
        return super().call(method, path, body, raw=raw,
                            headers={"X-API-Key": self.K1} if headers is None else headers, timeout=timeout)

    def schema(self, name, value):
        spec = SPECS[0]
        oc.validate(spec, spec["components"]["schemas"][name], value)

    def create(self, key=None, **fields):
        s = self.ok("POST", "/sessions", fields, status=201, headers={"X-API-Key": key or self.K1})
        self.addCleanup(self.close_quiet, s["session_id"], key or self.K1)
        return s

    def close_quiet(self, sid, key):
        try:
            self.t.request("DELETE", f"/sessions/{sid}", headers={"X-API-Key": key}, timeout=30)
        except OSError:
            pass

    def cell(self, sid, code, **fields):
        return self.ok("POST", f"/sessions/{sid}/execute", {"code": code, **fields})

    def wait_busy(self, sid):
        self.t.wait_for(lambda: self.ok("GET", f"/sessions/{sid}")["status"] == "busy", timeout=30,
                        what=f"session {sid} busy")

    def test_session_lifecycle_cells_history_and_410_after_delete(self):
        s = self.create(idle_timeout=120, max_lifetime=600, memory="256m", cpus=0.5)
        sid = s["session_id"]
        self.assertEqual((s["status"], s["job_type"], s["idle_timeout"], s["max_lifetime"], s["memory_bytes"],
                          s["cpus"], s["execution_count"], s["workspace"], s["ended_at"], s["end_reason"]),
                         ("ready", "default", 120, 600, 256 << 20, 0.5, 0, "/output", None, None))
        self.assertAlmostEqual(ts(s["expires_at"]) - ts(s["created_at"]), 600, delta=1)
        self.assertIn(sid, [i["session_id"] for i in self.ok("GET", "/sessions")["items"]])
        self.assertEqual(self.ok("GET", f"/sessions/{sid}")["status"], "ready")
        a = self.cell(sid, "x = 40")
        self.assertEqual((a["status"], a["execution_count"], a["result"], a["error"]), ("ok", 1, None, None))
        b = self.cell(sid, "x += 2\nprint('x is', x)\nx")
        self.assertEqual((b["status"], b["execution_count"], b["stdout"], b["result"]), ("ok", 2, "x is 42\n", "42"))
        c = self.cell(sid, "1/0")
        self.assertEqual((c["status"], c["error"]["type"], c["result"]), ("error", "ZeroDivisionError", None))
        self.assertIn("ZeroDivisionError", c["error"]["traceback"])
        d = self.cell(sid, "import sys\nsys.stdin.read().upper()", stdin="abc", timeout=10)
        self.assertEqual((d["status"], d["result"]), ("ok", "'ABC'"))
        e = self.cell(sid, "import json\njson.dump({'k': x}, open('result.json', 'w'))")
        self.assertEqual((e["output"], [f["path"] for f in e["files_changed"]]), ({"k": 42}, ["result.json"]))
        self.assertEqual(self.ok("GET", f"/sessions/{sid}")["execution_count"], 5)
        # the history, from PostgreSQL (each cell is written just after its answer)
        page = self.t.wait_for(lambda: (lambda p: p if p["count"] == 5 else None)(
            self.ok("GET", f"/sessions/{sid}/cells")), what="five cells recorded")
        self.assertEqual([i["execution_count"] for i in page["items"]], [1, 2, 3, 4, 5])
        self.assertEqual((page["items"][1]["code"], page["items"][1]["result"]), ("x += 2\nprint('x is', x)\nx", "42"))
        self.assertEqual(page["items"][1]["cell_id"], b["cell_id"])
        two = self.ok("GET", f"/sessions/{sid}/cells?limit=2&offset=1")
        self.assertEqual(([i["execution_count"] for i in two["items"]], two["has_more"], two["limit"], two["offset"]),
                         ([2, 3], True, 2, 1))
        for q in ("limit=0", "limit=1001", "offset=-1", "limit=x"):
            j = self.error("GET", f"/sessions/{sid}/cells?{q}", 422)
            self.assertEqual(j["detail"][0]["loc"][0], "query")
        # ended: read from PostgreSQL; anything asked of it is a 410
        ended = self.ok("DELETE", f"/sessions/{sid}")
        self.assertEqual((ended["session_id"], ended["status"], ended["end_reason"], ended["execution_count"]),
                         (sid, "closed", "closed by the client", 5))
        self.assertIsNotNone(ended["ended_at"])
        self.assertEqual(self.ok("GET", f"/sessions/{sid}"), ended)
        self.assertEqual(self.ok("DELETE", f"/sessions/{sid}"), ended)  # as it is
        self.assertNotIn(sid, [i["session_id"] for i in self.ok("GET", "/sessions")["items"]])
        for method, path, body in (("POST", "/execute", {"code": "x"}), ("POST", "/interrupt", None),
                                   ("GET", "/events", None), ("GET", "/files", None),
                                   ("GET", "/files/result.json", None), ("DELETE", "/files/result.json", None)):
            j = self.error(method, f"/sessions/{sid}{path}", 410, body, detail="The session has ended (closed)")
            self.assertEqual((j["status"], j["end_reason"]), ("closed", "closed by the client"))
        self.error("PUT", f"/sessions/{sid}/files/a.txt", 410, raw=b"x")
        h = self.call("HEAD", f"/sessions/{sid}/files/result.json")
        self.assertEqual((h.status, h.body), (410, b""))
        self.assertEqual(self.ok("GET", f"/sessions/{sid}/cells")["count"], 5)
        self.t.wait_for(lambda: self.t.sql(f"SELECT mode, status FROM jobs WHERE id = '{sid}'")
                        == [["session", "succeeded"]], what="the session's audit record")

    def test_busy_cell_is_409_interrupt_and_timeout(self):
        sid = self.create()["session_id"]
        box = {}
        code = "import time\nopen('started', 'w').close()\ntime.sleep(30)"
        runner = threading.Thread(target=lambda: box.setdefault("r", self.call(
            "POST", f"/sessions/{sid}/execute", {"code": code}, timeout=60)))
        runner.start()
        self.wait_busy(sid)
        self.error("POST", f"/sessions/{sid}/execute", 409, {"code": "1"}, detail="The session is running cell 1")
        # interrupt once the cell's code runs: an interrupt that reaches the launcher before
        # its driver runs the cell is lost today (the cell runs to its end; reported)
        self.t.wait_for(lambda: self.call("GET", f"/sessions/{sid}/files/started").status == 200,
                        what="the cell to start")
        self.assertEqual(self.ok("POST", f"/sessions/{sid}/interrupt"), {"interrupted": True})
        runner.join(30)
        self.assertFalse(runner.is_alive(), "the interrupted cell was not answered")
        a = box["r"].json()
        self.assertEqual((box["r"].status, a["status"], a["interrupted"], a["error"]["type"]),
                         (200, "interrupted", True, "KeyboardInterrupt"))
        self.assertEqual(self.ok("POST", f"/sessions/{sid}/interrupt"), {"interrupted": False})
        t = self.cell(sid, "import time\ntime.sleep(30)", timeout=1)
        self.assertEqual((t["status"], t["timed_out"], t["error"]["type"]), ("timeout", True, "execution_timeout"))
        self.assertEqual(self.cell(sid, "'still here'")["result"], "'still here'")

    def test_events_stream_of_a_session(self):
        sid = self.create()["session_id"]
        path = f"/sessions/{sid}/events"
        conn = http.client.HTTPConnection("127.0.0.1", self.t.port, timeout=60)
        self.addCleanup(conn.close)
        conn.request("GET", path, headers={"X-API-Key": self.K1})
        resp = conn.getresponse()
        self.assertEqual(resp.status, 200)
        self.assertEqual(resp.getheader("Content-Type"), "text/event-stream")
        first = b""
        while not first.endswith(b"\n\n"):  # the `session` event: the watcher is in place
            first += resp.readline()
        answer = self.cell(sid, "print('live', flush=True)\n6 * 7")
        closed = self.ok("DELETE", f"/sessions/{sid}")
        text = (first + resp.read()).decode()
        with _lock:
            RECORDED.append(("GET", path, resp.status, resp.headers, text.encode()))
        events = re.findall(r"event: (\w+)\ndata: (.*)\n\n", text)
        names = [e for e, _ in events]
        self.assertEqual([e for i, e in enumerate(names) if e != "stdout" or names[i - 1] != "stdout"],
                         ["session", "cell", "stdout", "result", "end"], text)  # output comes in pieces
        data = {e: json.loads(v) for e, v in events}
        live = "".join(json.loads(v) for e, v in events if e == "stdout")
        self.schema("Session", data["session"])
        self.schema("SessionCellEvent", data["cell"])
        self.assertEqual((data["session"]["session_id"], data["cell"]["execution_count"], live), (sid, 1, "live\n"))
        self.schema("CellResult", data["result"])
        self.assertEqual(data["result"], answer)
        self.schema("Session", data["end"])
        self.assertEqual((data["end"]["status"], data["end"]["end_reason"], data["end"]["execution_count"]),
                         (closed["status"], closed["end_reason"], 1))

    def test_workspace_files(self):
        sid = self.create()["session_id"]
        base = f"/sessions/{sid}/files"
        blob = bytes(range(256)) * 4
        sha = hashlib.sha256(blob).hexdigest()
        self.assertEqual(self.ok("PUT", f"{base}/dir/sub/b.bin", raw=blob, status=201),
                         {"path": "dir/sub/b.bin", "size": len(blob), "sha256": sha})
        r = self.call("GET", f"{base}/dir/sub/b.bin")
        self.assertEqual((r.status, r.body, r.headers["ETag"], r.headers["Content-Type"]),
                         (200, blob, f'"{sha}"', "application/octet-stream"))
        for inm in (f'"{sha}"', sha):
            n = self.call("GET", f"{base}/dir/sub/b.bin", headers={"X-API-Key": self.K1, "If-None-Match": inm})
            self.assertEqual((n.status, n.body, n.headers["ETag"]), (304, b"", f'"{sha}"'))
        n = self.call("GET", f"{base}/dir/sub/b.bin", headers={"X-API-Key": self.K1, "If-None-Match": '"nope"'})
        self.assertEqual((n.status, n.body), (200, blob))
        h = self.call("HEAD", f"{base}/dir/sub/b.bin")
        self.assertEqual((h.status, h.body, h.headers["ETag"], h.headers["Content-Length"]),
                         (200, b"", f'"{sha}"', str(len(blob))))
        h = self.call("HEAD", f"{base}/dir/sub/b.bin", headers={"X-API-Key": self.K1, "If-None-Match": f'"{sha}"'})
        self.assertEqual(h.status, 304)
        # the code sees the upload; what it writes is listed, changed and downloadable
        a = self.cell(sid, "import os\nopen('made.txt', 'w').write('by the cell')\n"
                           "os.symlink('/etc/passwd', 'out')\nlen(open('dir/sub/b.bin', 'rb').read())")
        self.assertEqual(a["result"], str(len(blob)))
        self.assertIn({"path": "made.txt", "size": 11}, a["files_changed"])
        self.assertEqual(self.call("GET", f"{base}/made.txt").body, b"by the cell")
        top = self.ok("GET", base)
        self.assertEqual((top["dir"], top["truncated"]), ("", False))
        kinds = {i["name"]: i["type"] for i in top["items"]}
        self.assertEqual((kinds["dir"], kinds["made.txt"], kinds["out"]), ("dir", "file", "symlink"))
        sub = self.ok("GET", f"{base}?dir=dir/sub")
        self.assertEqual([(i["name"], i["path"], i["size"]) for i in sub["items"]],
                         [("b.bin", "dir/sub/b.bin", len(blob))])
        # the errors
        self.error("GET", f"{base}/out", 403, detail="outside")
        self.error("GET", f"{base}/nope.txt", 404, detail="No such file")
        h = self.call("HEAD", f"{base}/nope.txt")
        self.assertEqual((h.status, h.body), (404, b""))
        self.error("GET", f"{base}/dir", 409)
        self.error("GET", f"{base}?dir=nope", 404)
        self.error("GET", f"{base}?dir=made.txt", 409)
        j = self.error("GET", f"{base}?dir=../etc", 422)
        self.assertEqual(j["detail"][0]["loc"], ["query", "dir"])
        for bad in ("a/../b", "./x", "a//b"):
            j = self.error("GET", f"{base}/{bad}", 422)
            self.assertEqual(j["detail"][0]["loc"], ["path", "path"])
        self.error("PUT", f"{base}/./x", 422, raw=b"x")
        self.error("DELETE", f"{base}/a/../made.txt", 422)
        self.error("PUT", f"{base}/made.txt/inside", 409, raw=b"x")
        self.error("PUT", f"{base}/big.bin", 413, raw=b"x" * (self.FILE_CAP + 1), detail="sessions.max_file_bytes")
        self.ok("PUT", f"{base}/edge.bin", raw=b"x" * self.FILE_CAP, status=201)
        self.error("DELETE", f"{base}/dir", 409, detail="not empty")
        r = self.call("DELETE", f"{base}/dir/sub/b.bin")
        self.assertEqual((r.status, r.body), (204, b""))
        self.error("DELETE", f"{base}/dir/sub/b.bin", 404)
        self.assertEqual(self.call("DELETE", f"{base}/dir/sub").status, 204)
        self.assertEqual(self.ok("GET", f"{base}?dir=dir")["items"], [])

    def test_ownership_quotas_and_unknown_sessions(self):
        s1, s2 = self.create()["session_id"], self.create()["session_id"]
        j = self.error("POST", "/sessions", 429, {}, detail="Quota exceeded")
        self.assertIn("sessions.max_per_key", j["detail"])
        # another key's session does not exist for it
        k2 = {"X-API-Key": self.K2}
        self.error("GET", f"/sessions/{s1}", 404, headers=k2, detail="Session not found")
        self.error("POST", f"/sessions/{s1}/execute", 404, {"code": "1"}, headers=k2)
        self.error("DELETE", f"/sessions/{s1}", 404, headers=k2)
        self.error("GET", f"/sessions/{s1}/cells", 404, headers=k2)
        self.assertNotIn(s1, [i["session_id"] for i in self.ok("GET", "/sessions", headers=k2)["items"]])
        self.assertEqual(sorted(i["session_id"] for i in self.ok("GET", "/sessions")["items"]), sorted([s1, s2]))
        # the server's total: K1's two and K2's one
        self.create(key=self.K2)
        r = self.call("POST", "/sessions", {}, headers=k2)
        self.assertEqual(r.status, 503, r.body)
        self.assertIn("sessions.max_total", r.json()["detail"])
        self.assertGreaterEqual(int(r.headers["Retry-After"]), 1)
        self.ok("DELETE", f"/sessions/{s2}")
        self.close_quiet(s1, self.K1)
        # no key
        r = self.call("GET", "/sessions", headers={})
        self.assertEqual((r.status, r.headers["WWW-Authenticate"]), (401, 'Bearer realm="takod"'))
        self.assertEqual(self.call("POST", f"/sessions/{s1}/execute", {"code": "1"}, headers={}).status, 401)
        # unknown ids, and ids that are not UUIDs
        for sid in (UNKNOWN_UUID, NOT_A_UUID):
            for method, path, body in (("GET", "", None), ("DELETE", "", None), ("POST", "/execute", {"code": "1"}),
                                       ("POST", "/interrupt", None), ("GET", "/events", None),
                                       ("GET", "/cells", None), ("GET", "/files", None),
                                       ("GET", "/files/a/b.txt", None), ("DELETE", "/files/a.txt", None)):
                self.error(method, f"/sessions/{sid}{path}", 404, body, detail="Session not found")
            self.error("PUT", f"/sessions/{sid}/files/a.txt", 404, raw=b"x")
        r = self.call("PUT", "/sessions")
        self.assertEqual((r.status, r.headers["Allow"]), (405, "POST, GET"))
        self.assertEqual(self.call("POST", f"/sessions/{UNKNOWN_UUID}/files/x").status, 405)

    def test_bad_bodies_are_400_and_422(self):
        for body, field in (({"bogus": 1}, "bogus"), ({"memory": "1t"}, "memory"), ({"memory": "2g"}, "memory"),
                            ({"idle_timeout": 0}, "idle_timeout"), ({"max_lifetime": 10 ** 9}, "max_lifetime"),
                            ({"cpus": 0}, "cpus"), ({"cpus": 64}, "cpus"), ({"job_type": "nope"}, "job_type"),
                            ({"job_type": 5}, "job_type")):
            j = self.error("POST", "/sessions", 422, body)
            self.assertEqual(j["detail"][0]["loc"], ["body", field], body)
        self.error("POST", "/sessions", 422, raw=b"[1]")
        self.error("POST", "/sessions", 400, raw=b"{nope", detail="Invalid JSON body")
        self.assertEqual(self.ok("GET", "/sessions")["count"], 0)  # none of them made one
        sid = self.create()["session_id"]
        for body, field in (({}, "code"), ({"code": ""}, "code"), ({"code": 5}, "code"),
                            ({"code": "1", "timeout": 0}, "timeout"), ({"code": "1", "timeout": 301}, "timeout"),
                            ({"code": "1", "stdin": 5}, "stdin"), ({"code": "1", "extra": 1}, "extra")):
            j = self.error("POST", f"/sessions/{sid}/execute", 422, body)
            self.assertIn(["body", field], [e["loc"] for e in j["detail"]], body)
        self.error("POST", f"/sessions/{sid}/execute", 400, raw=b"{nope")
        self.assertEqual(self.ok("GET", f"/sessions/{sid}")["execution_count"], 0)


# ---------------------------------------------------------------------------------------
# Last: every response received validates against /openapi.json as served
# ---------------------------------------------------------------------------------------

class ZzContract(unittest.TestCase):
    def test_every_response_validates_against_openapi(self):
        if not SPECS or not RECORDED:
            self.skipTest("no server test ran")
        for s in SPECS[1:]:
            self.assertEqual(s, SPECS[0])
        spec = SPECS[0]
        failures, seen = [], set()
        for method, path, status, headers, body in RECORDED:
            ctype = headers.get("Content-Type", "")
            where = f"{method} {path} → {status}"
            try:
                if status != 413:
                    for h, want in (("X-Content-Type-Options", "nosniff"), ("X-Frame-Options", "DENY")):
                        assert headers.get(h) == want, f"{h} is {headers.get(h)!r}"
                    assert headers.get("X-Correlation-ID"), "no X-Correlation-ID"
                body_json = None
                if ctype.startswith("application/json") and method != "HEAD" and body:
                    body_json = json.loads(body)
                tmpl = oc.find_template(spec, path)
                if tmpl is None:  # an unknown route
                    assert status == 404, "unknown route answered with " + str(status)
                    oc.validate(spec, spec["components"]["responses"]["NotFound"]["content"]
                                ["application/json"]["schema"], body_json)
                    continue
                seen.add((method, tmpl))
                oc.validate_response(spec, method, tmpl, status, body_json, content_type=ctype, headers=headers)
            except (AssertionError, ValueError) as e:
                failures.append(f"{where}: {e}\n      body: {body[:300]!r}")
        documented = {(m.upper(), p) for p, item in spec["paths"].items() for m in item if m != "parameters"}
        missing = documented - seen
        print(f"\n    validated {len(RECORDED)} responses over {len(seen & documented)} of "
              f"{len(documented)} operations; {len(failures)} mismatches")
        self.assertEqual(failures, [], "\n  " + "\n  ".join(failures[:30]))
        self.assertEqual(missing, set(), "operations no test exercised")


if __name__ == "__main__":
    unittest.main()
