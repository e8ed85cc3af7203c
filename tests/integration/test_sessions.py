"""
Sessions (docs/SESSIONS.md, issue #19) through the real server: a real takod with its
managed PostgreSQL, the real engine or OCI runtime, the image's session-mode launcher.

Cells keep their state (variables, imports, files); a cell's result, output, stdin,
errors, timeouts, interrupts, crashes and restarts; the workspace's file routes and their
defences (traversal, symlinks the code made, caps); idle and lifetime expiry, DELETE and
the containers they remove; quotas, capacity and keys; the sessions process killed and
takod restarted; the audit trail, cell history, live events. One takod per class where
the tests allow it; every session a test makes is ended by it.
"""
import hashlib
import http.client
import json
import os
import shutil
import signal
import subprocess
import threading
import time
import unittest
import uuid

from harness import Takod, pid_alive

KEY_A = "sess-a-0123456789abcdef"
KEY_B = "sess-b-0123456789abcdef"
ADMIN = "sess-admin-0123456789abc"


def session_bundles(t):
    """The OCI backend's bundle directories of t's session containers."""
    out = []
    base = t.oci_state_base()
    for rt in t.oci_runtimes():
        listed = subprocess.run([rt, "--root", os.path.join(base, rt), "list", "--format", "json"],
                                capture_output=True, text=True, timeout=30).stdout
        out += [c["bundle"] for c in json.loads(listed or "[]") or []
                if os.path.basename(c.get("bundle", "")).startswith("s")]
    return out


def session_containers(t):
    """ids of t's session containers (either backend): a session's container is made over
    a slot directory named s<proc>-… (workers/sessions.c), an executor's e<n>-…."""
    ids = []
    base = t.oci_state_base()
    for rt in t.oci_runtimes():
        listed = subprocess.run([rt, "--root", os.path.join(base, rt), "list", "--format", "json"],
                                capture_output=True, text=True, timeout=30).stdout
        for c in json.loads(listed or "[]") or []:
            if os.path.basename(c.get("bundle", "")).startswith("s"):
                ids.append(c["id"])
    docker_ids = [i for i in t.containers() if not i.startswith("p")]
    if docker_ids:
        out = subprocess.run(["docker", "inspect", "--format",
                              "{{.Id}}{{range .Mounts}} {{.Source}}{{end}}", *docker_ids],
                             capture_output=True, text=True, timeout=30).stdout
        for line in out.splitlines():
            f = line.split()
            if any("/slots/s" in m for m in f[1:]):
                ids.append(f[0])
    return ids


class Client:
    """The session routes of one takod, as one key."""

    def __init__(self, t, key=None):
        self.t = t
        self.h = {"X-API-Key": key} if key else {}

    def req(self, method, path, body=None, raw=None, headers=None, timeout=120):
        h = dict(self.h)
        h.update(headers or {})
        return self.t.request(method, path, body, raw=raw, headers=h, timeout=timeout)

    def create(self, **fields):
        r = self.req("POST", "/sessions", fields)
        assert r.status == 201, (r.status, r.body)
        return r.json()["session_id"]

    def execute(self, sid, code, status=200, **fields):
        r = self.req("POST", f"/sessions/{sid}/execute", {"code": code, **fields})
        assert r.status == status, (r.status, r.body)
        return r.json()

    def get(self, sid):
        return self.req("GET", f"/sessions/{sid}")

    def delete(self, sid):
        return self.req("DELETE", f"/sessions/{sid}")

    def wait_busy(self, sid, timeout=30):
        return self.t.wait_for(lambda: self.get(sid).json().get("status") == "busy",
                               timeout=timeout, what=f"session {sid} busy")


class SessionCase(unittest.TestCase):
    """A session per test, on the class's takod, closed after it."""

    def setUp(self):
        self.c = Client(self.t)
        self.sessions = []

    def tearDown(self):
        for sid in self.sessions:
            self.c.delete(sid)

    def new(self, **fields):
        sid = self.c.create(**fields)
        self.sessions.append(sid)
        return sid

    def run_cell(self, sid, code, **fields):
        return self.c.execute(sid, code, **fields)

    def in_thread(self, fn, *args):
        box = {}

        def run():
            try:
                box["value"] = fn(*args)
            except BaseException as e:  # reported by join()
                box["error"] = e

        th = threading.Thread(target=run, daemon=True)
        th.start()

        def join(timeout=60):
            th.join(timeout)
            self.assertFalse(th.is_alive(), "the request did not end")
            if "error" in box:
                raise box["error"]
            return box["value"]
        return join


class Cells(SessionCase):
    @classmethod
    def setUpClass(cls):
        # (the rate limit off: the class sends more requests than its default burst)
        cls.t = Takod("sessions.max_per_key=16", "sessions.max_file_bytes=12m",
                      "auth.rate_limit_per_minute=0").start()

    @classmethod
    def tearDownClass(cls):
        cls.t.cleanup()

    def test_state_is_kept_across_cells(self):
        sid = self.new()
        self.assertEqual(self.run_cell(sid, "x = 41\nimport math")["status"], "ok")
        self.assertEqual(self.run_cell(sid, "with open('note.txt', 'w') as f: f.write('kept')")
                         ["status"], "ok")
        r = self.run_cell(sid, "x += 1\nprint(x, math.sqrt(16), open('note.txt').read())")
        self.assertEqual(r["status"], "ok", r)
        self.assertEqual(r["stdout"], "42 4.0 kept\n")
        self.assertEqual(r["execution_count"], 3)
        self.assertEqual(self.c.get(sid).json()["execution_count"], 3)

    def test_last_expression_is_result_and_underscore(self):
        sid = self.new()
        r = self.run_cell(sid, "a = [1, 2]\na + [3]")
        self.assertEqual(r["result"], "[1, 2, 3]")
        self.assertIsNone(self.run_cell(sid, "b = 1")["result"])  # an assignment has none
        r = self.run_cell(sid, "_ + [4]")  # _ is the last result
        self.assertEqual(r["result"], "[1, 2, 3, 4]")
        self.assertEqual(self.run_cell(sid, "'s'")["result"], "'s'")  # repr

    def test_stdout_and_stderr(self):
        sid = self.new()
        r = self.run_cell(sid, "import sys\nprint('out')\nprint('err', file=sys.stderr)")
        self.assertEqual((r["stdout"], r["stderr"]), ("out\n", "err\n"))
        self.assertFalse(r["stdout_truncated"] or r["stderr_truncated"])
        r = self.run_cell(sid, "print('second')")
        self.assertEqual((r["stdout"], r["stderr"]), ("second\n", ""))  # a cell's own output

    def test_stdin(self):
        sid = self.new()
        r = self.run_cell(sid, "import sys\nprint(sys.stdin.read().upper())", stdin="abc\ndef")
        self.assertEqual(r["stdout"], "ABC\nDEF\n", r)
        r = self.run_cell(sid, "print(repr(sys.stdin.read()))")  # without stdin: empty
        self.assertEqual(r["stdout"], "''\n", r)

    def test_failing_cell_keeps_the_session(self):
        sid = self.new()
        self.run_cell(sid, "v = 'alive'")
        r = self.run_cell(sid, "def f():\n    raise ValueError('bad value')\nf()")
        self.assertEqual(r["status"], "error", r)
        self.assertEqual(r["error"]["type"], "ValueError")
        self.assertEqual(r["error"]["message"], "bad value")
        self.assertIn('File "<cell-2>"', r["error"]["traceback"])
        self.assertIn("ValueError: bad value", r["error"]["traceback"])
        self.assertFalse(r["restarted"])
        self.assertEqual(self.run_cell(sid, "v")["result"], "'alive'")

    def test_syntax_error(self):
        sid = self.new()
        self.run_cell(sid, "w = 7")
        r = self.run_cell(sid, "def (:")
        self.assertEqual(r["status"], "error", r)
        self.assertEqual(r["error"]["type"], "SyntaxError")
        self.assertFalse(r["restarted"])
        self.assertEqual(self.run_cell(sid, "w")["result"], "7")

    def test_cell_timeout_keeps_state(self):
        sid = self.new()
        self.run_cell(sid, "kept = 'yes'")
        r = self.run_cell(sid, "while True: pass", timeout=1)
        self.assertEqual(r["status"], "timeout", r)
        self.assertTrue(r["timed_out"])
        self.assertFalse(r["restarted"], r)
        r = self.run_cell(sid, "kept")
        self.assertEqual((r["status"], r["result"]), ("ok", "'yes'"), r)

    def test_uninterruptible_cell_restarts_the_interpreter(self):
        sid = self.new()
        self.run_cell(sid, "gone = 1")
        self.run_cell(sid, "with open('stays.txt', 'w') as f: f.write('file')")
        r = self.run_cell(sid, "import signal\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\n"
                               "while True: pass", timeout=1)
        self.assertEqual(r["status"], "timeout", r)
        self.assertTrue(r["restarted"], r)
        r = self.run_cell(sid, "gone")
        self.assertEqual((r["status"], r["error"]["type"]), ("error", "NameError"), r)
        self.assertEqual(self.run_cell(sid, "open('stays.txt').read()")["result"], "'file'")

    def test_exit_crashes_and_restarts(self):
        sid = self.new()
        self.run_cell(sid, "gone = 1")
        r = self.run_cell(sid, "import os\nos._exit(3)")
        self.assertEqual(r["status"], "crashed", r)
        self.assertTrue(r["restarted"], r)
        self.assertIsNotNone(r["error"], r)
        r = self.run_cell(sid, "gone")
        self.assertEqual((r["status"], r["error"]["type"]), ("error", "NameError"), r)
        self.assertEqual(self.run_cell(sid, "1 + 1")["result"], "2")

    def test_out_of_memory_crashes_and_restarts(self):
        sid = self.new(memory="64m")
        self.assertEqual(self.c.get(sid).json()["memory_bytes"], 64 << 20)
        self.run_cell(sid, "gone = 1")
        r = self.run_cell(sid, "a = bytearray(200 << 20)")
        self.assertEqual((r["status"], r["error"]["type"], r["restarted"]), ("crashed", "oom", True), r)
        r = self.run_cell(sid, "gone")
        self.assertEqual(r["error"]["type"], "NameError", r)
        self.assertEqual(self.run_cell(sid, "len(bytearray(8 << 20))")["result"], str(8 << 20))

    def test_killed_interpreter_restarts(self):
        sid = self.new()
        r = self.run_cell(sid, "import os, signal\nos.kill(os.getpid(), signal.SIGKILL)")
        self.assertEqual((r["status"], r["error"]["type"], r["restarted"]), ("crashed", "killed", True), r)
        self.assertEqual(self.run_cell(sid, "'back'")["result"], "'back'")

    def test_output_is_capped(self):
        sid = self.new()
        r = self.run_cell(sid, "print('x' * (8 << 20))")
        self.assertEqual(r["status"], "ok", {k: r[k] for k in r if k != "stdout"})
        self.assertTrue(r["stdout_truncated"])
        self.assertLess(len(r["stdout"]), 8 << 20)
        r = self.run_cell(sid, "print('small')")
        self.assertEqual((r["stdout"], r["stdout_truncated"]), ("small\n", False))

    def test_busy_cell_and_file_calls_are_not_idle(self):
        sid = self.new(idle_timeout=1)
        r = self.run_cell(sid, "import time\ntime.sleep(2.5)\n'done'")  # longer than idle_timeout
        self.assertEqual(r["result"], "'done'", r)
        time.sleep(0.5)  # idle counts from the cell's end
        self.assertEqual(self.c.get(sid).json()["status"], "ready")
        t0 = time.time()
        while time.time() - t0 < 2.5:  # file calls keep it alive too
            self.assertEqual(self.c.req("GET", f"/sessions/{sid}/files").status, 200)
            time.sleep(0.3)
        self.assertEqual(self.c.get(sid).json()["status"], "ready")

    def test_interrupt_a_sleeping_cell(self):
        sid = self.new()
        self.run_cell(sid, "kept = 5")
        self.assertEqual(self.c.req("POST", f"/sessions/{sid}/interrupt").json(),
                         {"interrupted": False})  # idle
        t0 = time.time()
        join = self.in_thread(self.run_cell, sid, "import time\ntime.sleep(30)")
        self.c.wait_busy(sid)
        r = self.c.req("POST", f"/sessions/{sid}/interrupt")
        self.assertEqual((r.status, r.json()), (200, {"interrupted": True}), r.body)
        ans = join()
        self.assertLess(time.time() - t0, 25)
        self.assertEqual(ans["status"], "interrupted", ans)
        self.assertTrue(ans["interrupted"])
        self.assertFalse(ans["restarted"])
        self.assertEqual(self.run_cell(sid, "kept")["result"], "5")

    def test_interrupt_an_uninterruptible_cell_restarts(self):
        sid = self.new()
        self.run_cell(sid, "gone = 1")
        join = self.in_thread(self.run_cell, sid, "import signal, time\n"
                              "signal.signal(signal.SIGINT, signal.SIG_IGN)\n"
                              "open('armed', 'w').close()\n"
                              "while True: time.sleep(0.05)")
        self.t.wait_for(lambda: self.c.req("GET", f"/sessions/{sid}/files/armed").status == 200,
                        timeout=30, what="the cell ignoring SIGINT")
        self.assertEqual(self.c.req("POST", f"/sessions/{sid}/interrupt").json(), {"interrupted": True})
        ans = join()
        self.assertEqual((ans["status"], ans["restarted"]), ("interrupted", True), ans)
        self.assertEqual(self.run_cell(sid, "gone")["error"]["type"], "NameError")

    def test_cell_cut_by_delete_is_answered_and_recorded(self):
        sid = self.c.create()
        join = self.in_thread(self.c.req, "POST", f"/sessions/{sid}/execute",
                              {"code": "import time\ntime.sleep(30)"})
        self.c.wait_busy(sid)
        self.assertEqual(self.c.delete(sid).status, 200)
        r = join(20)
        self.assertEqual(r.status, 410, r.body)
        self.assertEqual(r.json()["status"], "closed")
        # every cell is a jobs row (docs/SESSIONS.md, Audit), the one cut short too
        self.t.wait_for(lambda: self.t.sql(f"SELECT id FROM jobs WHERE id = '{sid}'"), timeout=15,
                        what="the session's own row")
        time.sleep(0.5)
        self.assertEqual(self.t.sql(f"SELECT count(*) FROM jobs WHERE parent_id = '{sid}'"), [["1"]],
                         "the cell cut short by DELETE has no jobs row")

    def test_second_concurrent_cell_is_409(self):
        sid = self.new()
        join = self.in_thread(self.run_cell, sid, "import time\ntime.sleep(30)")
        self.c.wait_busy(sid)
        r = self.c.req("POST", f"/sessions/{sid}/execute", {"code": "1"})
        self.assertEqual(r.status, 409, r.body)
        self.assertIn("cell 1", r.json()["detail"])
        self.c.req("POST", f"/sessions/{sid}/interrupt")
        self.assertEqual(join()["status"], "interrupted")
        self.assertEqual(self.run_cell(sid, "2")["execution_count"], 2)  # the 409 was no cell

    def test_sessions_are_isolated(self):
        s1, s2 = self.new(), self.new()
        self.run_cell(s1, "secret = 'one'\nopen('mine.txt', 'w').write('one')")
        r = self.run_cell(s2, "secret")
        self.assertEqual((r["status"], r["error"]["type"]), ("error", "NameError"), r)
        r = self.run_cell(s2, "import os\nsorted(os.listdir('.'))")
        self.assertNotIn("mine.txt", r["result"])
        self.assertEqual(self.c.req("GET", f"/sessions/{s2}/files/mine.txt").status, 404)
        self.assertEqual(self.c.req("GET", f"/sessions/{s1}/files/mine.txt").body, b"one")

    def test_files_changed_and_output(self):
        sid = self.new()
        r = self.run_cell(sid, "import json\njson.dump({'answer': 42}, open('result.json', 'w'))\n"
                               "open('data.csv', 'w').write('a,b\\n1,2\\n')")
        self.assertEqual(r["output"], {"answer": 42}, r)
        changed = {f["path"]: f["size"] for f in r["files_changed"]}
        self.assertEqual(changed.get("data.csv"), 8, r)
        self.assertIn("result.json", changed)
        # a later cell that changes nothing reports nothing (after a clock tick: see
        # test_files_changed_back_to_back for the same without one)
        time.sleep(0.05)
        r = self.run_cell(sid, "1")
        self.assertEqual((r["files_changed"], r["output"]), ([], None), r)

    def test_files_changed_back_to_back(self):
        """A cell right after one that wrote a file does not report that file as its own.
        (files_changed compares mtimes with the cell's start on the coarse clock: a cell
        started within the same tick, ~4 ms, as the previous cell's write sees it.)"""
        sid = self.new()
        stale = []
        for i in range(20):
            self.run_cell(sid, f"open('f{i}.txt', 'w').write('x')")
            r = self.run_cell(sid, "1")
            if r["files_changed"]:
                stale.append(r["files_changed"])
        self.assertEqual(stale, [], f"{len(stale)} of 20 cells reported the previous cell's files")

    def test_upload_download_round_trip(self):
        sid = self.new()
        blob = os.urandom(10 << 20)
        sha = hashlib.sha256(blob).hexdigest()
        r = self.c.req("PUT", f"/sessions/{sid}/files/in/big.bin", raw=blob,
                       headers={"Content-Type": "application/octet-stream"})
        self.assertEqual(r.status, 201, r.body)
        self.assertEqual(r.json(), {"path": "in/big.bin", "size": len(blob), "sha256": sha})
        # the code sees it, and what the code writes comes back
        r = self.run_cell(sid, "import hashlib\nd = open('in/big.bin', 'rb').read()\n"
                               "open('out.bin', 'wb').write(d[::-1])\nhashlib.sha256(d).hexdigest()")
        self.assertEqual(r["result"], repr(sha), r)
        r = self.c.req("GET", f"/sessions/{sid}/files/in/big.bin")
        self.assertEqual(r.status, 200)
        self.assertEqual(r.headers["Content-Type"], "application/octet-stream")
        self.assertEqual(r.headers["ETag"], f'"{sha}"')
        self.assertEqual(r.body, blob)
        r = self.c.req("GET", f"/sessions/{sid}/files/out.bin")
        self.assertEqual(r.body, blob[::-1])
        r = self.c.req("GET", f"/sessions/{sid}/files/in/big.bin", headers={"If-None-Match": f'"{sha}"'})
        self.assertEqual((r.status, r.body), (304, b""))
        r = self.c.req("GET", f"/sessions/{sid}/files/in/big.bin", headers={"If-None-Match": '"0"'})
        self.assertEqual(r.status, 200)
        r = self.c.req("HEAD", f"/sessions/{sid}/files/out.bin")
        self.assertEqual(r.status, 200)
        self.assertEqual(r.headers["ETag"], '"%s"' % hashlib.sha256(blob[::-1]).hexdigest())
        # replaced whole
        r = self.c.req("PUT", f"/sessions/{sid}/files/in/big.bin", raw=b"\x00small")
        self.assertEqual(r.status, 201)
        self.assertEqual(self.c.req("GET", f"/sessions/{sid}/files/in/big.bin").body, b"\x00small")

    def test_listing_and_delete(self):
        sid = self.new()
        self.run_cell(sid, "import os\nos.makedirs('sub/deep')\nopen('sub/a.txt', 'w').write('abc')\n"
                           "open('top.txt', 'w').write('t')")
        r = self.c.req("GET", f"/sessions/{sid}/files")
        self.assertEqual(r.status, 200, r.body)
        top = {i["name"]: i for i in r.json()["items"]}
        self.assertEqual(top["sub"]["type"], "dir")
        self.assertEqual((top["top.txt"]["type"], top["top.txt"]["size"]), ("file", 1))
        self.assertFalse(r.json()["truncated"])
        r = self.c.req("GET", f"/sessions/{sid}/files?dir=sub")
        self.assertEqual(r.json()["dir"], "sub")
        items = {i["name"]: i for i in r.json()["items"]}
        self.assertEqual(set(items), {"a.txt", "deep"})
        self.assertEqual(items["a.txt"]["path"], "sub/a.txt")
        self.assertEqual(items["a.txt"]["size"], 3)
        # a non-empty directory: 409; a file; an empty directory; a missing one: 404
        self.assertEqual(self.c.req("DELETE", f"/sessions/{sid}/files/sub").status, 409)
        self.assertEqual(self.c.req("DELETE", f"/sessions/{sid}/files/sub/a.txt").status, 204)
        self.assertEqual(self.c.req("GET", f"/sessions/{sid}/files/sub/a.txt").status, 404)
        self.assertEqual(self.c.req("DELETE", f"/sessions/{sid}/files/sub/deep").status, 204)
        self.assertEqual(self.c.req("DELETE", f"/sessions/{sid}/files/sub").status, 204)
        self.assertEqual(self.c.req("DELETE", f"/sessions/{sid}/files/sub").status, 404)
        r = self.run_cell(sid, "sorted(os.listdir('.'))")
        self.assertEqual(r["result"], "['top.txt']", r)

    def test_path_traversal_is_422(self):
        sid = self.new()
        for p in ["../x", "%2e%2e/x", "a/../../x", "./x", "%2Fetc%2Fpasswd"]:
            for m in ("GET", "PUT", "DELETE"):
                r = self.c.req(m, f"/sessions/{sid}/files/{p}", raw=b"x" if m == "PUT" else None)
                self.assertEqual(r.status, 422, (m, p, r.status, r.body))
        # an absolute path (a leading '/' after files/)
        for m in ("GET", "PUT"):
            r = self.c.req(m, f"/sessions/{sid}/files//etc/passwd", raw=b"x" if m == "PUT" else None)
            self.assertEqual(r.status, 422, (m, r.status, r.body))
        r = self.c.req("GET", f"/sessions/{sid}/files?dir=../")
        self.assertEqual(r.status, 422, r.body)

    def test_symlinks_out_of_the_workspace_are_refused(self):
        sid = self.new()
        victim = f"/tmp/takod-sess-it-{uuid.uuid4().hex}"
        os.makedirs(victim)
        try:
            r = self.run_cell(sid, f"import os\nos.symlink('/etc/passwd', 'l')\n"
                                   f"os.symlink('{victim}', 'd')\nos.symlink('/etc', 'e')")
            self.assertEqual(r["status"], "ok", r)
            self.assertEqual(self.c.req("GET", f"/sessions/{sid}/files/l").status, 403)
            self.assertEqual(self.c.req("HEAD", f"/sessions/{sid}/files/l").status, 403)
            self.assertEqual(self.c.req("GET", f"/sessions/{sid}/files/e/passwd").status, 403)
            r = self.c.req("PUT", f"/sessions/{sid}/files/d/planted", raw=b"evil")
            self.assertEqual(r.status, 403, r.body)
            self.assertEqual(os.listdir(victim), [])  # nothing reached the host
            r = self.c.req("PUT", f"/sessions/{sid}/files/l", raw=b"evil")  # replaces the link
            self.assertIn(r.status, (201, 403), r.body)
            with open("/etc/passwd", "rb") as f:
                self.assertNotEqual(f.read(), b"evil")
            self.assertEqual(self.c.req("GET", f"/sessions/{sid}/files?dir=e").status, 403)
        finally:
            for n in os.listdir(victim):
                os.unlink(os.path.join(victim, n))
            os.rmdir(victim)

    def test_over_cap_upload_is_413(self):
        sid = self.new()
        r = self.c.req("PUT", f"/sessions/{sid}/files/big.bin", raw=b"\0" * ((12 << 20) + 1))
        self.assertEqual(r.status, 413, r.body)
        self.assertEqual(self.c.req("GET", f"/sessions/{sid}/files/big.bin").status, 404)
        self.assertEqual(self.run_cell(sid, "1")["status"], "ok")  # the session is fine

    def test_full_workspace_is_413(self):
        sid = self.new()
        # the code fills the workspace (files of 40 MiB: under the fsize ulimit) ...
        r = self.run_cell(sid, "import errno\nn = 0\ntry:\n    for i in range(16):\n"
                               "        with open(f'w{i}', 'wb') as f:\n"
                               "            for _ in range(40):\n"
                               "                f.write(b'\\0' * (1 << 20)); n += 1\n"
                               "except OSError as e:\n    err = e.errno\n(n, errno.errorcode[err])")
        self.assertEqual(r["status"], "ok", r)
        self.assertIn("'ENOSPC'", r["result"])
        r = self.c.req("PUT", f"/sessions/{sid}/files/more.bin", raw=b"x" * (1 << 20))
        self.assertEqual(r.status, 413, r.body)
        self.assertEqual(self.c.req("GET", f"/sessions/{sid}/files/more.bin").status, 404)
        # ... and room again once it deletes
        self.assertEqual(self.c.req("DELETE", f"/sessions/{sid}/files/w0").status, 204)
        self.assertEqual(self.c.req("PUT", f"/sessions/{sid}/files/more.bin", raw=b"x" * (1 << 20)).status, 201)

    def test_listing_sessions(self):
        s1, s2 = self.new(), self.new()
        r = self.c.req("GET", "/sessions")
        self.assertEqual(r.status, 200)
        ids = [i["session_id"] for i in r.json()["items"]]
        self.assertTrue({s1, s2} <= set(ids), ids)
        self.assertEqual(r.json()["count"], len(ids))
        got = self.c.get(s1).json()
        self.assertEqual((got["status"], got["workspace"]), ("ready", "/output"))
        self.assertEqual(self.c.delete(s1).status, 200)
        ids = [i["session_id"] for i in self.c.req("GET", "/sessions").json()["items"]]
        self.assertNotIn(s1, ids)
        self.assertIn(s2, ids)
        self.assertEqual(self.c.get(s1).json()["status"], "closed")  # from PostgreSQL
        self.assertEqual(self.c.get(str(uuid.uuid4())).status, 404)

    def test_delete_removes_the_container(self):
        before = set(session_containers(self.t))
        sid = self.new()
        mine = set(session_containers(self.t)) - before
        self.assertEqual(len(mine), 1, mine)
        r = self.c.delete(sid)
        self.assertEqual(r.status, 200, r.body)
        self.assertEqual((r.json()["status"], r.json()["end_reason"]), ("closed", "closed by the client"))
        self.t.wait_for(lambda: not (mine & set(session_containers(self.t))), timeout=15,
                        what="the session's container removed")
        r = self.c.req("POST", f"/sessions/{sid}/execute", {"code": "1"})
        self.assertEqual(r.status, 410, r.body)
        self.assertEqual((r.json()["status"], r.json()["end_reason"]), ("closed", "closed by the client"))
        self.assertEqual(self.c.req("GET", f"/sessions/{sid}/files").status, 410)
        self.assertEqual(self.c.delete(sid).status, 200)  # still the ended session, not a new end

    def test_idle_expiry(self):
        before = set(session_containers(self.t))
        sid = self.new(idle_timeout=2)
        mine = set(session_containers(self.t)) - before
        self.assertEqual(len(mine), 1)
        self.run_cell(sid, "x = 1")
        self.t.wait_for(lambda: self.c.get(sid).json()["status"] == "expired", timeout=15,
                        what="the session expired")
        self.t.wait_for(lambda: not (mine & set(session_containers(self.t))), timeout=15,
                        what="the expired session's container removed")
        r = self.c.req("POST", f"/sessions/{sid}/execute", {"code": "x"})
        self.assertEqual(r.status, 410, r.body)
        self.assertEqual(r.json()["status"], "expired")
        self.assertEqual(r.json()["end_reason"], "idle for 2 s")
        got = self.c.get(sid).json()
        self.assertEqual(got["end_reason"], "idle for 2 s")
        self.assertIsNotNone(got["ended_at"])

    def test_lifetime_expiry(self):
        before = set(session_containers(self.t))
        t0 = time.time()
        sid = self.new(max_lifetime=3)
        mine = set(session_containers(self.t)) - before
        status = 200
        while status == 200 and time.time() - t0 < 20:  # busy: never idle
            status = self.c.req("POST", f"/sessions/{sid}/execute", {"code": "1"}).status
            time.sleep(0.2)
        self.assertEqual(status, 410)
        self.assertGreaterEqual(time.time() - t0, 2.5)
        r = self.c.req("POST", f"/sessions/{sid}/execute", {"code": "1"})
        self.assertEqual((r.json()["status"], r.json()["end_reason"]),
                         ("expired", "max_lifetime of 3 s reached"))
        self.t.wait_for(lambda: not (mine & set(session_containers(self.t))), timeout=15,
                        what="the expired session's container removed")

    def test_cells_history_and_executions(self):
        sid = self.new()
        self.run_cell(sid, "print('one')")
        self.run_cell(sid, "1/0")
        self.run_cell(sid, "3")

        def history():
            r = self.c.req("GET", f"/sessions/{sid}/cells")
            self.assertEqual(r.status, 200, r.body)
            return r.json() if len(r.json()["items"]) == 3 else None
        h = self.t.wait_for(history, timeout=15, what="three cells recorded")
        items = h["items"]
        self.assertEqual([i["execution_count"] for i in items], [1, 2, 3])
        self.assertEqual([i["status"] for i in items], ["ok", "error", "ok"])
        self.assertEqual(items[0]["code"], "print('one')")
        self.assertEqual(items[0]["stdout"], "one\n")
        self.assertEqual(items[1]["error"]["type"], "ZeroDivisionError")
        self.assertEqual(items[2]["result"], "3")
        self.assertFalse(h["has_more"])
        r = self.c.req("GET", f"/sessions/{sid}/cells?limit=1&offset=1").json()
        self.assertEqual([i["execution_count"] for i in r["items"]], [2])
        self.assertTrue(r["has_more"])
        self.assertEqual(self.c.req("GET", f"/sessions/{sid}/cells?limit=nope").status, 422)
        # GET /executions lists jobs only
        self.t.execute("print('job')")
        ex = self.c.req("GET", "/executions").json()
        ids = [i.get("execution_id") or i.get("job_id") or i.get("id") for i in ex["items"]]
        cell_ids = {i["cell_id"] for i in items}
        self.assertEqual(len(ids), 1, ex)
        self.assertFalse(cell_ids & set(ids))
        self.assertNotIn(sid, ids)
        # ... unless mode= asks for cells (or sessions)
        ex = self.c.req("GET", "/executions?mode=cell&limit=1000").json()
        self.assertTrue(cell_ids <= {i.get("execution_id") for i in ex["items"]}, ex)
        self.assertEqual(self.c.req("GET", "/executions?mode=nope").status, 422)

    def test_events_stream(self):
        sid = self.new()
        conn = http.client.HTTPConnection("127.0.0.1", self.t.port, timeout=60)
        try:
            conn.request("GET", f"/sessions/{sid}/events")
            resp = conn.getresponse()
            self.assertEqual(resp.status, 200)
            self.assertTrue(resp.getheader("Content-Type").startswith("text/event-stream"))
            join = self.in_thread(self.run_cell, sid,
                                  "import sys, time\nprint('first', flush=True)\ntime.sleep(0.3)\n"
                                  "print('second', file=sys.stderr, flush=True)\n6 * 7")
            events, event = [], None
            deadline = time.time() + 60
            while time.time() < deadline:
                line = resp.readline()
                if not line:
                    break
                line = line.decode().rstrip("\n")
                if line.startswith("event: "):
                    event = line[7:]
                elif line.startswith("data: "):
                    events.append((event, json.loads(line[6:])))
                    if event == "result":
                        break
            ans = join()
        finally:
            conn.close()
        kinds = [e for e, _ in events]
        self.assertEqual(kinds[:2], ["session", "cell"], events)  # the session as it is, first
        self.assertEqual(events[0][1]["session_id"], sid)
        self.assertEqual(events[1][1]["execution_count"], 1)
        self.assertEqual(kinds[-1], "result", events)
        self.assertEqual(events[-1][1]["result"], "42")
        self.assertEqual(events[-1][1]["cell_id"], ans["cell_id"])
        self.assertEqual("".join(d for e, d in events if e == "stdout"), "first\n")
        self.assertEqual("".join(d for e, d in events if e == "stderr"), "second\n")

    def test_events_end_when_the_session_ends(self):
        sid = self.new()
        status, events = {}, []

        def read():
            conn = http.client.HTTPConnection("127.0.0.1", self.t.port, timeout=60)
            try:
                conn.request("GET", f"/sessions/{sid}/events")
                resp = conn.getresponse()
                status["code"] = resp.status
                event = None
                for raw in resp:  # to the stream's end
                    line = raw.decode().rstrip("\n")
                    if line.startswith("event: "):
                        event = line[7:]
                    elif line.startswith("data: "):
                        events.append((event, json.loads(line[6:])))
            finally:
                conn.close()
        th = threading.Thread(target=read, daemon=True)
        th.start()
        self.t.wait_for(lambda: "code" in status, timeout=30, what="the stream opened")
        time.sleep(0.2)
        self.c.delete(sid)
        th.join(30)
        self.assertFalse(th.is_alive(), "the stream did not end with the session")
        self.assertEqual(events[-1][0], "end", events)
        self.assertEqual(events[-1][1]["status"], "closed")

    def test_bad_requests(self):
        sid = self.new()
        self.assertEqual(self.c.req("POST", "/sessions", {"nope": 1}).status, 422)
        self.assertEqual(self.c.req("POST", "/sessions", {"idle_timeout": 0}).status, 422)
        self.assertEqual(self.c.req("POST", "/sessions", {"max_lifetime": 10 ** 9}).status, 422)
        self.assertEqual(self.c.req("POST", f"/sessions/{sid}/execute", {"code": ""}).status, 422)
        self.assertEqual(self.c.req("POST", f"/sessions/{sid}/execute", {"code": "1", "timeout": 0}).status, 422)
        self.assertEqual(self.c.req("POST", f"/sessions/{sid}/execute", raw=b"{").status, 400)
        self.assertEqual(self.c.req("POST", f"/sessions/{uuid.uuid4()}/execute", {"code": "1"}).status, 404)
        self.assertEqual(self.run_cell(sid, "'fine'")["result"], "'fine'")


class Audit(SessionCase):
    """Cells and sessions in the jobs table and the audit chain; keys, quotas, capacity."""

    @classmethod
    def setUpClass(cls):
        cls.t = Takod(f"auth.api_keys={KEY_A},{KEY_B}", f"auth.admin_key={ADMIN}",
                      "sessions.max_per_key=1", "sessions.max_total=2").start()

    @classmethod
    def tearDownClass(cls):
        cls.t.cleanup()

    def setUp(self):
        self.a, self.b, self.admin = Client(self.t, KEY_A), Client(self.t, KEY_B), Client(self.t, ADMIN)
        self.opened = []

    def tearDown(self):
        for c, sid in self.opened:
            c.delete(sid)

    def open(self, c):
        sid = c.create()
        self.opened.append((c, sid))
        return sid

    def test_keys_quota_and_capacity(self):
        self.assertEqual(Client(self.t).req("POST", "/sessions", {}).status, 401)
        sa = self.open(self.a)
        r = self.a.req("POST", "/sessions", {})
        self.assertEqual(r.status, 429, r.body)  # sessions.max_per_key = 1
        sb = self.open(self.b)
        r = self.admin.req("POST", "/sessions", {})
        self.assertEqual(r.status, 503, r.body)  # sessions.max_total = 2
        self.assertIn("Retry-After", r.headers)
        # a key sees only its own
        self.assertEqual([i["session_id"] for i in self.a.req("GET", "/sessions").json()["items"]], [sa])
        self.assertEqual(self.a.get(sb).status, 404)
        for method, path in [("POST", f"/sessions/{sb}/execute"), ("POST", f"/sessions/{sb}/interrupt"),
                             ("GET", f"/sessions/{sb}/files"), ("GET", f"/sessions/{sb}/cells"),
                             ("GET", f"/sessions/{sb}/events"), ("DELETE", f"/sessions/{sb}")]:
            r = self.a.req(method, path, {"code": "1"} if method == "POST" else None, timeout=10)
            self.assertEqual(r.status, 404, (method, path, r.body))
        # admin sees all, and may use them
        self.assertEqual({i["session_id"] for i in self.admin.req("GET", "/sessions").json()["items"]},
                         {sa, sb})
        self.assertEqual(self.admin.execute(sb, "'admin'")["result"], "'admin'")
        # an ended session is still another key's: 404, not 410
        self.assertEqual(self.b.delete(sb).status, 200)
        self.assertEqual(self.a.get(sb).status, 404)
        self.assertEqual(self.a.req("POST", f"/sessions/{sb}/execute", {"code": "1"}).status, 404)
        self.assertEqual(self.b.req("POST", f"/sessions/{sb}/execute", {"code": "1"}).status, 410)
        # room again
        self.open(self.admin)

    def test_cells_and_sessions_are_audited(self):
        sid = self.open(self.a)
        c1 = self.a.execute(sid, "print('hi')")["cell_id"]
        c2 = self.a.execute(sid, "1/0", stdin="in")["cell_id"]
        self.assertEqual(self.a.delete(sid).status, 200)
        rows = self.t.wait_for(lambda: (lambda r: r if len(r) == 3 else None)(self.t.sql(
            f"SELECT id, mode, coalesce(parent_id::text, ''), status, coalesce(api_key_id, ''),"
            f" coalesce(stdout, ''), coalesce(stdin, ''), code FROM jobs"
            f" WHERE id IN ('{sid}', '{c1}', '{c2}') OR parent_id = '{sid}' ORDER BY created_at")),
            timeout=15, what="the session's rows in jobs")
        by_id = {r[0]: r for r in rows}
        self.assertEqual(by_id[sid][1], "session")
        self.assertEqual(by_id[sid][3], "succeeded")  # closed
        self.assertEqual((by_id[c1][1], by_id[c1][2]), ("cell", sid))
        self.assertEqual((by_id[c2][1], by_id[c2][2]), ("cell", sid))
        self.assertEqual(by_id[c1][5], "hi\n")
        self.assertEqual((by_id[c1][7], by_id[c2][7], by_id[c2][6]), ("print('hi')", "1/0", "in"))
        self.assertEqual(by_id[c1][4], by_id[sid][4])
        self.assertNotEqual(by_id[sid][4], "")
        v = self.admin.req("GET", "/audit/verify")
        self.assertEqual(v.status, 200, v.body)
        self.assertTrue(v.json()["ok"], v.body)
        self.assertGreaterEqual(v.json()["rows_checked"], 3)
        # tampering with a cell's record is found, as with a job's
        self.t.sql(f"UPDATE jobs SET stdout = 'forged' WHERE id = '{c1}'")
        v = self.admin.req("GET", "/audit/verify").json()
        self.assertFalse(v["ok"])
        self.assertEqual((v["problem"]["kind"], v["problem"]["job_id"]), ("edited", c1))
        self.t.sql(f"UPDATE jobs SET stdout = 'hi\n' WHERE id = '{c1}'")
        self.assertTrue(self.admin.req("GET", "/audit/verify").json()["ok"])


class Crashes(unittest.TestCase):
    """The sessions process killed; takod restarted on the same data_dir."""

    def test_sessions_process_killed(self):
        t = Takod("sessions.max_per_key=16").start()
        try:
            c = Client(t)
            sid = c.create()
            c.execute(sid, "x = 1")
            mine = set(session_containers(t))
            self.assertEqual(len(mine), 1)
            bundles = session_bundles(t)
            old = t.roles()["takod: sessions 0"]
            # a client waiting on a cell gets an answer when the process dies under it
            t0 = time.time()
            box = {}
            th = threading.Thread(target=lambda: box.update(r=c.req(
                "POST", f"/sessions/{sid}/execute", {"code": "import time\ntime.sleep(30)"})), daemon=True)
            th.start()
            c.wait_busy(sid)
            os.kill(old, signal.SIGKILL)
            th.join(20)
            self.assertFalse(th.is_alive(), "the waiting client got no answer")
            self.assertEqual(box["r"].status, 503, box["r"].body)
            self.assertLess(time.time() - t0, 20)
            new = t.wait_for(lambda: (lambda p: p if p and p != old else None)(
                t.roles().get("takod: sessions 0")), timeout=30, what="the sessions process respawned")
            self.assertFalse(pid_alive(old))

            def answered():
                r = c.req("POST", f"/sessions/{sid}/execute", {"code": "x"}, timeout=10)
                return r if r.status != 503 else None
            r = t.wait_for(answered, timeout=30, what="the new sessions process answering")
            self.assertEqual(r.status, 410, r.body)
            self.assertEqual(r.json()["status"], "lost")
            self.assertTrue(r.json()["end_reason"])
            t.wait_for(lambda: not (mine & set(session_containers(t))), timeout=15,
                       what="the lost session's container removed")
            self.assertEqual(session_containers(t), [])
            for b in bundles:  # its slot directory too
                self.assertFalse(os.path.exists(b), b)
            # the new one works, and its records
            s2 = c.create()
            self.assertEqual(c.execute(s2, "40 + 2")["result"], "42")
            self.assertEqual(c.delete(s2).status, 200)
            self.assertEqual(t.roles()["takod: sessions 0"], new)
            rows = t.wait_for(lambda: t.sql(f"SELECT status FROM jobs WHERE id = '{sid}'"), timeout=15,
                              what="the lost session's audit row")
            self.assertEqual(rows, [["failed"]])
            self.assertTrue(t.request("GET", "/audit/verify").json()["ok"])
        finally:
            t.cleanup()
        self.assertEqual(session_containers(t), [])

    def test_takod_restart(self):
        t = Takod("sessions.max_per_key=16").start()
        data_dir = t.data_dir
        t2 = None
        try:
            c = Client(t)
            sid = c.create()
            c.execute(sid, "x = 1")
            self.assertEqual(t.stop(), 0)
            self.assertEqual(session_containers(t), [])
            t2 = Takod("sessions.max_per_key=16", data_dir=data_dir).start()
            c2 = Client(t2)
            r = c2.req("POST", f"/sessions/{sid}/execute", {"code": "x"})
            self.assertEqual(r.status, 410, r.body)
            self.assertEqual(r.json()["status"], "lost")
            self.assertIn("restart", r.json()["end_reason"])
            got = c2.get(sid).json()
            self.assertEqual((got["status"], got["execution_count"]), ("lost", 1))
            self.assertEqual(c2.req("GET", "/sessions").json()["count"], 0)
            self.assertTrue(t2.request("GET", "/audit/verify").json()["ok"])
        finally:
            if t2:
                t2.stop()
            t.stop()
            shutil.rmtree(data_dir, ignore_errors=True)


if __name__ == "__main__":
    unittest.main()
