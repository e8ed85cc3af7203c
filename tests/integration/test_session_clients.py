"""
The sessions clients end to end against a real takod (docs/SESSIONS.md): the Python SDK's
tako_vm.Session, the `tako session ...` subcommands and `tako repl` with piped standard
input. The parts that need no server (help texts, usage errors, the SDK's path checks)
always run; the rest is skipped until the server has /sessions.

Environment: TAKOD_BIN (the harness), TAKO_BIN (default: tako beside takod), and the
source tree's SDK on the path (added below when PYTHONPATH does not have it).
"""
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import unittest

from harness import Takod

# the SDK of this source tree (the one the test is in)
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..",
                                "clients", "python"))
import tako_vm  # noqa: E402
from tako_vm import (CellError, CellResult, ClientError, ServerError, Session,  # noqa: E402
                     SessionBusyError, SessionEndedError, SessionLimitError,
                     SessionUnavailableError, TakoVM, ValidationError)

TAKO_BIN = os.environ.get("TAKO_BIN", os.path.join(os.path.dirname(os.path.abspath(
    os.environ.get("TAKOD_BIN", "../../build/takod"))), "tako"))


def tako(*args, url=None, input=None, timeout=300, cwd=None):
    """Run the CLI: (exit code, stdout, stderr)."""
    env = dict(os.environ)
    env.pop("TAKO_API_KEY", None)
    if url:
        env["TAKO_URL"] = url
    p = subprocess.run([TAKO_BIN, *args], capture_output=True, text=True, env=env, input=input,
                       timeout=timeout, cwd=cwd)
    return p.returncode, p.stdout, p.stderr


class Offline(unittest.TestCase):
    """No server needed: help, usage errors, the SDK's own checks."""

    def setUp(self):
        if not os.access(TAKO_BIN, os.X_OK):
            self.skipTest(f"no tako binary at {TAKO_BIN}")

    def test_help_texts(self):
        rc, out, _ = tako("--help")
        self.assertEqual(rc, 0)
        for word in ("session new", "session run", "repl", "mcp"):
            self.assertIn(word, out)
        rc, out, _ = tako("session", "--help")
        self.assertEqual(rc, 0)
        for sub in ("new", "run ID", "put ID", "get ID", "ls", "rm ID", "cells ID"):
            self.assertIn(sub, out)
        self.assertIn("Exit:", out)
        rc, out, _ = tako("repl", "--help")
        self.assertEqual(rc, 0)
        self.assertIn(":quit", out)
        rc, out, _ = tako("mcp", "--help")
        self.assertEqual(rc, 0)
        self.assertIn("mcpServers", out)

    def test_usage_errors_exit_2(self):
        url = "http://127.0.0.1:9"  # never reached: each is refused before any request
        for args in (["session"], ["session", "bogus"], ["session", "new", "extra"],
                     ["session", "new", "--stdin", "x"], ["session", "new", "--cpus", "0"],
                     ["session", "new", "--timeout", "abc"], ["session", "new", "-e", "X=1"],
                     ["session", "run"], ["session", "run", "ID", "/no/such/file.py"],
                     ["session", "put", "ID", "-"], ["session", "put", "ID", "/etc/hostname", "../x"],
                     ["session", "get", "ID", "/abs"], ["session", "get", "ID", "a/./b"],
                     ["session", "ls", "ID", "../up"], ["session", "cells", "ID", "--limit", "0"],
                     ["repl", "a", "b"], ["repl", "--timeout", "0"], ["mcp", "extra"],
                     ["mcp", "--json"]):
            rc, _, err = tako(*args, url=url)
            self.assertEqual(rc, 2, (args, err))
            self.assertIn("tako", err)

    def test_unreachable_server_exits_3(self):
        rc, _, err = tako("session", "new", url="http://127.0.0.1:9")
        self.assertEqual(rc, 3, err)
        self.assertIn("cannot reach takod", err)
        rc, _, err = tako("repl", url="http://127.0.0.1:9", input="1\n")
        self.assertEqual(rc, 3, err)

    def test_sdk_checks_workspace_paths_before_sending(self):
        s = Session(TakoVM("http://127.0.0.1:9"), _info={"session_id": "x"})
        for bad in ("", "/etc/passwd", "a/../b", "./a", "a//b", "x" * 256, "a\0b"):
            with self.assertRaises(ValidationError, msg=bad):
                s.download(bad)
        with self.assertRaises(ValidationError):
            s.run("")

    def test_sdk_cell_result_and_errors(self):
        ok = CellResult.from_response({"status": "ok", "result": "42", "execution_count": 1})
        self.assertTrue(ok.ok)
        self.assertIs(ok.raise_for_error(), ok)
        bad = CellResult.from_response({
            "status": "error", "execution_count": 2, "stdout": "x\n",
            "error": {"type": "ZeroDivisionError", "message": "division by zero",
                      "traceback": "Traceback (most recent call last):\n..."}})
        with self.assertRaises(CellError) as cm:
            bad.raise_for_error()
        e = cm.exception
        self.assertEqual((e.type, e.message, e.status), ("ZeroDivisionError", "division by zero",
                                                         "error"))
        self.assertTrue(e.traceback.startswith("Traceback"))
        self.assertEqual(e.stdout, "x\n")
        self.assertIsInstance(e, tako_vm.ExecutionError)
        self.assertTrue(issubclass(SessionBusyError, ClientError))
        self.assertTrue(issubclass(SessionEndedError, ClientError))
        self.assertTrue(issubclass(SessionLimitError, ClientError))
        self.assertTrue(issubclass(SessionUnavailableError, ServerError))


class UnknownSession(unittest.TestCase):
    """A session id takod does not know is a 404 — before and after the server has
    sessions — for the SDK (ClientError) and the CLI (exit 1)."""

    SID = "00000000-0000-4000-8000-000000000000"

    @classmethod
    def setUpClass(cls):
        if not os.access(TAKO_BIN, os.X_OK):
            raise unittest.SkipTest(f"no tako binary at {TAKO_BIN}")
        cls.t = Takod().start()

    @classmethod
    def tearDownClass(cls):
        cls.t.cleanup()

    def test_sdk(self):
        c = TakoVM(self.t.url)
        with self.assertRaises(ClientError) as cm:
            Session.attach(self.SID, c)
        self.assertEqual(cm.exception.status_code, 404)
        s = Session(c, _info={"session_id": self.SID})
        for call in (lambda: s.run("1"), lambda: s.files(), lambda: s.download("a"),
                     lambda: s.upload("a", b"x"), lambda: s.remove("a"), lambda: s.cells(),
                     lambda: s.interrupt()):
            with self.assertRaises(ClientError) as cm:
                call()
            self.assertEqual(cm.exception.status_code, 404)

    def test_cli(self):
        for args in (["session", "run", self.SID], ["session", "ls", self.SID],
                     ["session", "get", self.SID, "a.txt", "-o", "-"],
                     ["session", "put", self.SID, "-", "a.txt"], ["session", "rm", self.SID],
                     ["session", "cells", self.SID], ["session", "info", self.SID],
                     ["repl", self.SID]):
            rc, _, err = tako(*args, url=self.t.url, input="1\n")
            self.assertEqual(rc, 1, (args, err))
            self.assertIn("HTTP 404", err, args)


class Live(unittest.TestCase):
    """Against the real server (skipped until it has /sessions)."""

    @classmethod
    def setUpClass(cls):
        if not os.access(TAKO_BIN, os.X_OK):
            raise unittest.SkipTest(f"no tako binary at {TAKO_BIN}")
        cls.t = Takod().start()
        cls.client = TakoVM(cls.t.url, timeout=None)

    @classmethod
    def tearDownClass(cls):
        cls.t.cleanup()

    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="tako-session-test-")
        self.addCleanup(shutil.rmtree, self.dir, True)

    def live_ids(self):
        return {s["session_id"] for s in self.client.list_sessions()}

    # ---- the SDK ----

    def test_sdk_session_env(self):
        with self.client.session(idle_timeout=60, env={"GREETING": "hello there"}) as s:
            self.assertEqual(s.run("import os; os.environ['GREETING']").result, "'hello there'")
        with self.assertRaises(ClientError):  # 422: PATH is not the session's to set
            self.client.session(env={"PATH": "/tmp"})

    def test_sdk_session_keeps_state_and_files(self):
        with self.client.session(idle_timeout=120) as s:
            self.assertIn(s.id, self.live_ids())
            self.assertEqual(s.run("import math\nx = 21").status, "ok")
            r = s.run("x * 2")
            self.assertTrue(r.ok, r)
            self.assertEqual(r.result, "42")
            self.assertEqual(r.execution_count, 2)
            r = s.run("print(input())", stdin="from stdin\n")
            self.assertEqual(r.stdout, "from stdin\n")

            info = s.upload("data/in.bin", bytes(range(256)))
            self.assertEqual(info["sha256"], hashlib.sha256(bytes(range(256))).hexdigest())
            local = os.path.join(self.dir, "local.txt")
            with open(local, "w") as f:
                f.write("from a file\n")
            s.upload("local.txt", local)
            r = s.run("open('local.txt').read() + str(len(open('data/in.bin','rb').read()))")
            self.assertEqual(r.result, repr("from a file\n256"))

            s.run("open('out.csv', 'w').write('a,b\\n1,2\\n')").raise_for_error()
            self.assertEqual(s.download("out.csv"), b"a,b\n1,2\n")
            dest = os.path.join(self.dir, "out.csv")
            s.download("out.csv", to=dest)
            with open(dest, "rb") as f:
                self.assertEqual(f.read(), b"a,b\n1,2\n")
            names = {e["name"] for e in s.files()}
            self.assertTrue({"data", "local.txt", "out.csv"} <= names, names)
            self.assertEqual([e["name"] for e in s.files("data")], ["in.bin"])
            s.remove("out.csv")
            self.assertNotIn("out.csv", {e["name"] for e in s.files()})
            with self.assertRaises(ClientError) as cm:
                s.download("out.csv")
            self.assertEqual(cm.exception.status_code, 404)

            self.assertFalse(s.interrupt())  # idle
            self.assertIn(s.info()["status"], ("ready", "busy"))
            cells = s.cells()["items"]
            self.assertGreaterEqual(len(cells), 5)
            self.assertEqual(cells[0]["code"], "import math\nx = 21")
        self.assertTrue(s.closed)
        self.assertNotIn(s.id, self.live_ids())
        with self.assertRaises(SessionEndedError) as cm:
            Session.attach(s.id, self.client).run("x")
        self.assertEqual(cm.exception.status_code, 410)
        self.assertEqual(cm.exception.status, "closed")
        self.assertTrue(cm.exception.end_reason)
        s.close()  # closing again is no error

    def test_sdk_cell_error_and_context_manager_closes_on_exception(self):
        sid = None
        with self.assertRaises(CellError) as cm:
            with Session(self.client) as s:
                sid = s.id
                s.run("y = 5").raise_for_error()
                r = s.run("def f():\n    return 1 / 0\nf()")
                self.assertFalse(r.ok)
                self.assertEqual(r.error["type"], "ZeroDivisionError")
                self.assertEqual(s.run("y").result, "5")  # the session lives on
                r.raise_for_error()
        self.assertEqual(cm.exception.type, "ZeroDivisionError")
        self.assertIn("Traceback", cm.exception.traceback)
        self.assertNotIn(sid, self.live_ids())

    def test_sdk_busy_session_is_409(self):
        with self.client.session() as s:
            done = []
            th = threading.Thread(target=lambda: done.append(
                s.run("import time\ntime.sleep(3)\n'slept'")))
            th.start()
            try:
                deadline = time.time() + 30
                while s.info()["status"] != "busy" and time.time() < deadline:
                    time.sleep(0.05)
                with self.assertRaises(SessionBusyError) as cm:
                    s.run("1")
                self.assertEqual(cm.exception.status_code, 409)
            finally:
                th.join(60)
            self.assertEqual(done[0].result, "'slept'")

    def test_sdk_interrupt(self):
        with self.client.session() as s:
            done = []
            th = threading.Thread(target=lambda: done.append(
                s.run("import time\nwhile True:\n    time.sleep(0.1)")))
            th.start()
            try:
                deadline = time.time() + 30
                while s.info()["status"] != "busy" and time.time() < deadline:
                    time.sleep(0.05)
                self.assertTrue(s.interrupt())
            finally:
                th.join(60)
            self.assertEqual(done[0].status, "interrupted")
            self.assertTrue(done[0].interrupted)
            self.assertEqual(s.run("1 + 1").result, "2")

    def test_module_level_session(self):
        tako_vm.configure(self.t.url)
        with tako_vm.session() as s:
            self.assertEqual(s.run("6 * 7").result, "42")
            self.assertIn(s.id, {x["session_id"] for x in tako_vm.list_sessions()})

    def test_sdk_expired_session_is_410_with_its_reason(self):
        s = self.client.session(idle_timeout=1)
        self.addCleanup(s.close)
        deadline = time.time() + 60
        while s.info()["status"] in ("ready", "busy") and time.time() < deadline:
            time.sleep(0.5)
        self.assertEqual(s.info()["status"], "expired")
        with self.assertRaises(SessionEndedError) as cm:
            s.run("1")
        self.assertEqual(cm.exception.status, "expired")
        self.assertIn("idle", cm.exception.end_reason)

    def test_sdk_cell_timeout(self):
        with self.client.session() as s:
            r = s.run("import time\ntime.sleep(30)", timeout=1)
            self.assertEqual(r.status, "timeout")
            self.assertTrue(r.timed_out)
            with self.assertRaises(CellError) as cm:
                r.raise_for_error()
            self.assertEqual(cm.exception.status, "timeout")
            self.assertEqual(s.run("'alive'").result, "'alive'")

    # ---- the CLI ----

    def cli(self, *args, **kw):
        return tako(*args, url=self.t.url, **kw)

    def new_session(self, *args):
        rc, out, err = self.cli("session", "new", *args)
        self.assertEqual(rc, 0, err)
        sid = out.strip()
        self.addCleanup(self.t.request, "DELETE", f"/sessions/{sid}")
        return sid

    def test_cli_session_lifecycle(self):
        sid = self.new_session("--timeout", "120")
        rc, out, err = self.cli("session", "run", sid, input="x = 21\nprint('set')\n")
        self.assertEqual((rc, out), (0, "set\n"), err)
        code = os.path.join(self.dir, "cell.py")
        with open(code, "w") as f:
            f.write("x * 2\n")
        rc, out, err = self.cli("session", "run", sid, code)
        self.assertEqual((rc, out), (0, "42\n"), err)
        rc, out, err = self.cli("session", "run", sid, "--json", input="x + 1")
        self.assertEqual(rc, 0, err)
        self.assertEqual(json.loads(out)["result"], "22")

        rc, out, err = self.cli("session", "run", sid, input="def f():\n    raise KeyError('k')\nf()\n")
        self.assertEqual(rc, 1)
        self.assertIn("Traceback", err)
        self.assertIn("KeyError", err)

        local = os.path.join(self.dir, "in.txt")
        with open(local, "w") as f:
            f.write("uploaded\n")
        rc, out, err = self.cli("session", "put", sid, local, "sub/in.txt")
        self.assertEqual(rc, 0, err)
        rc, out, err = self.cli("session", "put", sid, "-", "piped.txt", input="piped\n")
        self.assertEqual(rc, 0, err)
        rc, out, err = self.cli("session", "run", sid,
                                input="open('sub/in.txt').read() + open('piped.txt').read()")
        self.assertEqual(out, repr("uploaded\npiped\n") + "\n", err)
        rc, out, err = self.cli("session", "get", sid, "sub/in.txt", "-o", "-")
        self.assertEqual((rc, out), (0, "uploaded\n"), err)
        dl = os.path.join(self.dir, "dl")
        os.mkdir(dl)
        rc, out, err = self.cli("session", "get", sid, "sub/in.txt", cwd=dl)  # to ./in.txt
        self.assertEqual(rc, 0, err)
        with open(os.path.join(dl, "in.txt")) as f:
            self.assertEqual(f.read(), "uploaded\n")
        rc, _, err = self.cli("session", "get", sid, "piped.txt", "-o", local)
        self.assertEqual(rc, 2, err)  # exists: --force
        rc, _, err = self.cli("session", "get", sid, "piped.txt", "-o", local, "--force")
        self.assertEqual(rc, 0, err)

        rc, out, err = self.cli("session", "ls", sid)
        self.assertEqual(rc, 0, err)
        self.assertIn("piped.txt", out)
        self.assertIn("sub/", out)
        rc, out, err = self.cli("session", "ls", sid, "sub")
        self.assertIn("in.txt", out)
        rc, out, err = self.cli("session", "ls")
        self.assertIn(sid, out)
        rc, out, err = self.cli("session", "cells", sid)
        self.assertEqual(rc, 0, err)
        self.assertIn("[1]", out)
        rc, out, _ = self.cli("session", "cells", sid, "--json")
        self.assertGreaterEqual(len(json.loads(out)["items"]), 4)
        rc, _, err = self.cli("session", "rm", sid, "piped.txt")
        self.assertEqual(rc, 0, err)
        rc, _, err = self.cli("session", "get", sid, "piped.txt", "-o", "-")
        self.assertEqual(rc, 1, err)  # 404

        rc, out, err = self.cli("session", "rm", sid)
        self.assertEqual(rc, 0, err)
        self.assertIn("closed", out)
        rc, _, err = self.cli("session", "run", sid, input="x")
        self.assertEqual(rc, 1)
        self.assertIn("410", err)
        rc, out, _ = self.cli("session", "ls")
        self.assertNotIn(sid, out)

    def test_cli_new_json_and_options(self):
        rc, out, err = self.cli("session", "new", "--json", "--job-type", "default",
                                "--timeout", "90", "--max-lifetime", "300")
        self.assertEqual(rc, 0, err)
        s = json.loads(out)
        self.addCleanup(self.t.request, "DELETE", f"/sessions/{s['session_id']}")
        self.assertEqual((s["idle_timeout"], s["max_lifetime"], s["job_type"]),
                         (90, 300, "default"))
        rc, out, err = self.cli("session", "info", s["session_id"])
        self.assertEqual(rc, 0, err)
        self.assertEqual(json.loads(out)["status"], "ready")
        rc, _, err = self.cli("session", "new", "--job-type", "no-such-type")
        self.assertEqual(rc, 1, err)  # 422

    def test_cli_cell_timeout_exits_1(self):
        sid = self.new_session()
        rc, _, err = self.cli("session", "run", sid, "-t", "1", input="import time\ntime.sleep(30)")
        self.assertEqual(rc, 1, err)
        self.assertIn("timeout", err)

    # ---- the REPL ----

    def test_repl_with_piped_stdin(self):
        before = self.live_ids()
        script = ("x = 1\n"
                  "def f(a):\n"
                  "    return a + x\n"
                  "\n"
                  "f(41)\n"
                  "class A:\n"
                  "    def m(self):\n"
                  "        return 'm'\n"
                  "\n"
                  "    def n(self):\n"
                  "        return 'n'\n"
                  "A().n()\n"
                  "for i in range(2):\n"
                  "    print('i', i)\n"
                  "y = [1,\n"
                  "     2]\n"
                  "sum(y)\n"
                  "1 / 0\n"
                  "print('after the error')\n"
                  ":quit\n"
                  "print('never')\n")
        rc, out, err = self.cli("repl", input=script)
        self.assertEqual(rc, 0, err)
        self.assertEqual(out, "42\n'n'\ni 0\ni 1\n3\nafter the error\n", err)
        self.assertIn("ZeroDivisionError", err)
        self.assertIn("closed", err)
        self.assertNotIn("never", out)
        self.assertEqual(self.live_ids() - before, set())  # the REPL closed its session

    def test_repl_joins_an_existing_session_and_leaves_it_open(self):
        sid = self.new_session()
        rc, _, err = self.cli("session", "run", sid, input="z = 'kept'")
        self.assertEqual(rc, 0, err)
        rc, out, err = self.cli("repl", sid, input="z\n")
        self.assertEqual((rc, out), (0, "'kept'\n"), err)
        self.assertIn(sid, self.live_ids())

    def test_repl_interactive_pipe_runs_a_block_at_its_blank_line(self):
        # a program driving the REPL through a pipe: it waits for each answer
        env = dict(os.environ, TAKO_URL=self.t.url)
        p = subprocess.Popen([TAKO_BIN, "repl"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, env=env)
        try:
            p.stdin.write("def g():\n    return 'g'\n\n")
            p.stdin.flush()
            time.sleep(0.5)
            p.stdin.write("g()\n")
            p.stdin.flush()
            self.assertEqual(p.stdout.readline(), "'g'\n")
            p.stdin.close()
            self.assertEqual(p.wait(60), 0)
        finally:
            if p.poll() is None:
                p.kill()
                p.wait()
            p.stdout.close()
            p.stderr.close()

    def test_repl_ctrl_c_interrupts_the_running_cell(self):
        env = dict(os.environ, TAKO_URL=self.t.url)
        p = subprocess.Popen([TAKO_BIN, "repl"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, env=env)
        try:
            p.stdin.write("import time\nwhile True:\n    time.sleep(0.1)\n\n")
            p.stdin.flush()
            time.sleep(3)  # the cell is running
            p.send_signal(signal.SIGINT)
            time.sleep(1)
            p.stdin.write("'after'\n")
            p.stdin.flush()
            self.assertEqual(p.stdout.readline(), "'after'\n")
            p.stdin.close()
            self.assertEqual(p.wait(60), 0)
            err = p.stderr.read()
            self.assertIn("interrupt", err)
            self.assertIn("KeyboardInterrupt", err)
        finally:
            if p.poll() is None:
                p.kill()
                p.wait()
            p.stdout.close()
            p.stderr.close()


class Limits(unittest.TestCase):
    """sessions.max_total: a full server is 503 (SessionUnavailableError, CLI exit 3);
    max_total = 0 turns sessions off."""

    def start(self, *overrides):
        t = Takod(*overrides)
        self.addCleanup(t.cleanup)
        t.start()
        return t

    def test_full_server_is_503(self):
        t = self.start("sessions.max_total=1")
        c = TakoVM(t.url)
        with c.session() as s:
            with self.assertRaises(SessionUnavailableError) as cm:
                c.session()
            self.assertEqual(cm.exception.status_code, 503)
            rc, _, err = tako("session", "new", url=t.url)
            self.assertEqual(rc, 3, err)
            self.assertEqual(s.run("1 + 1").result, "2")

    def test_sessions_off_is_503(self):
        t = self.start("sessions.max_total=0")
        with self.assertRaises(SessionUnavailableError):
            TakoVM(t.url).session()


if __name__ == "__main__":
    unittest.main()
