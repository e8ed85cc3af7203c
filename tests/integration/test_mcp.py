"""
`tako mcp`: the Model Context Protocol server (clients/tako/mcp.c) driven over stdio by a
scripted MCP client — JSON-RPC 2.0, one message per line — against a real takod from the
harness: initialize and version negotiation, notifications, ping, tools/list and its
schemas, run_python end to end, and the protocol's errors (bad JSON, a batch, a bad id,
an unknown method, an unknown tool, bad arguments). The session tools run against the real
server once it has sessions (docs/SESSIONS.md); until then they are skipped.

Environment: TAKOD_BIN (the harness), TAKO_BIN (default: tako beside takod).
"""
import base64
import json
import os
import select
import subprocess
import time
import unittest

from harness import Takod

TAKO_BIN = os.environ.get("TAKO_BIN", os.path.join(os.path.dirname(os.path.abspath(
    os.environ.get("TAKOD_BIN", "../../build/takod"))), "tako"))
TOOLS = {"run_python", "session_create", "session_run", "session_upload", "session_download",
         "session_files", "session_close"}


def setUpModule():
    if not os.access(TAKO_BIN, os.X_OK):
        raise unittest.SkipTest(f"no tako binary at {TAKO_BIN} (build the tako target)")



class MCPClient:
    """A scripted MCP client: `tako mcp` as a subprocess, one JSON message per line."""

    def __init__(self, url, *extra):
        self.p = subprocess.Popen([TAKO_BIN, "mcp", "--url", url, *extra], stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.buf = b""
        self.next_id = 0

    def send_raw(self, line: bytes):
        self.p.stdin.write(line + b"\n")
        self.p.stdin.flush()

    def send(self, msg):
        self.send_raw(json.dumps(msg).encode())

    def read(self, timeout=120):
        """The next message on stdout (every line must be one JSON-RPC 2.0 message)."""
        deadline = time.monotonic() + timeout
        while b"\n" not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no answer from tako mcp in {timeout} s")
            r, _, _ = select.select([self.p.stdout], [], [], left)
            if r:
                chunk = os.read(self.p.stdout.fileno(), 1 << 20)
                if not chunk:
                    raise AssertionError("tako mcp closed its stdout: " + self.stderr())
                self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        msg = json.loads(line)
        assert msg.get("jsonrpc") == "2.0", msg
        return msg

    def silent(self, wait=0.5):
        """True when nothing arrives on stdout within `wait` seconds."""
        if b"\n" in self.buf:
            return False
        r, _, _ = select.select([self.p.stdout], [], [], wait)
        return not r

    def request(self, method, params=None, timeout=120):
        self.next_id += 1
        msg = {"jsonrpc": "2.0", "id": self.next_id, "method": method}
        if params is not None:
            msg["params"] = params
        self.send(msg)
        ans = self.read(timeout)
        assert ans.get("id") == self.next_id, ans
        return ans

    def initialize(self, version="2025-06-18"):
        ans = self.request("initialize", {"protocolVersion": version, "capabilities": {},
                                          "clientInfo": {"name": "test_mcp", "version": "1"}})
        self.send({"jsonrpc": "2.0", "method": "notifications/initialized"})
        return ans

    def call(self, name, timeout=300, **arguments):
        ans = self.request("tools/call", {"name": name, "arguments": arguments}, timeout)
        assert "result" in ans, ans
        return ans["result"]

    def stderr(self):
        return self.p.stderr.read().decode(errors="replace") if self.p.poll() is not None else ""

    def close(self):
        try:
            self.p.stdin.close()
        except OSError:
            pass
        try:
            rc = self.p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.p.kill()
            rc = self.p.wait()
        self.p.stdout.close()
        self.log = self.p.stderr.read().decode(errors="replace")
        self.p.stderr.close()
        return rc

    def close_ok(self, test):
        """Close; it must exit 0 (under ASan: no leak, no error)."""
        if self.p.stdout.closed:
            return
        rc = self.close()
        test.assertEqual(rc, 0, self.log[-4000:])


def text_of(result):
    parts = result["content"]
    assert all(p["type"] == "text" for p in parts), parts
    return "".join(p["text"] for p in parts)


class Protocol(unittest.TestCase):
    """The protocol itself; run_python against a real takod."""

    @classmethod
    def setUpClass(cls):
        cls.t = Takod().start()

    @classmethod
    def tearDownClass(cls):
        cls.t.cleanup()

    def setUp(self):
        self.c = MCPClient(self.t.url)
        self.addCleanup(self.c.close_ok, self)

    def test_initialize_negotiates_the_version(self):
        ans = self.c.initialize()["result"]
        self.assertEqual(ans["protocolVersion"], "2025-06-18")
        self.assertIn("tools", ans["capabilities"])
        self.assertEqual(ans["serverInfo"]["name"], "tako-mcp")
        self.assertTrue(ans["serverInfo"]["version"])
        # a notification is never answered
        self.assertTrue(self.c.silent())
        # an older version it supports is answered with itself; an unknown one with its own
        for asked, got in (("2025-03-26", "2025-03-26"), ("2024-11-05", "2024-11-05"),
                           ("1999-01-01", "2025-06-18")):
            c = MCPClient(self.t.url)
            try:
                self.assertEqual(c.initialize(asked)["result"]["protocolVersion"], got)
            finally:
                c.close_ok(self)

    def test_ping_and_exit_at_end_of_input(self):
        self.c.initialize()
        self.assertEqual(self.c.request("ping")["result"], {})
        self.c.p.stdin.close()
        self.assertEqual(self.c.p.wait(timeout=30), 0)
        self.assertEqual(self.c.p.stdout.read(), b"")  # nothing but the answers on stdout
        self.assertIn(b"tako mcp: serving takod at", self.c.p.stderr.read())  # logs: stderr

    def test_tools_list_has_every_tool_with_a_schema(self):
        self.c.initialize()
        tools = self.c.request("tools/list")["result"]["tools"]
        self.assertEqual({t["name"] for t in tools}, TOOLS)
        for t in tools:
            self.assertGreater(len(t["description"]), 40, t["name"])
            s = t["inputSchema"]
            self.assertEqual(s["type"], "object", t["name"])
            self.assertFalse(s["additionalProperties"], t["name"])
            for req in s.get("required", []):
                self.assertIn(req, s["properties"], t["name"])
            for name, p in s["properties"].items():
                self.assertIn(p["type"], ("string", "integer", "object"), (t["name"], name))
                self.assertTrue(p.get("description"), (t["name"], name))
        by = {t["name"]: t["inputSchema"] for t in tools}
        self.assertEqual(by["run_python"]["required"], ["code"])
        self.assertEqual(set(by["run_python"]["properties"]),
                         {"code", "input_data", "timeout", "job_type"})
        self.assertEqual(set(by["session_run"]["required"]), {"session_id", "code"})
        self.assertEqual(set(by["session_upload"]["properties"]),
                         {"session_id", "path", "content", "content_base64"})
        self.assertEqual(set(by["session_create"]["properties"]), {"job_type", "idle_timeout"})

    def test_run_python_end_to_end(self):
        self.c.initialize()
        code = ("import json\n"
                "data = json.load(open('/input/data.json'))\n"
                "print('sum', sum(data['xs']))\n"
                "json.dump({'total': sum(data['xs'])}, open('/output/result.json', 'w'))\n")
        res = self.c.call("run_python", code=code, input_data={"xs": [1, 2, 3]}, timeout=30)
        self.assertFalse(res["isError"], res)
        text = text_of(res)
        self.assertIn("status: succeeded", text)
        self.assertIn("sum 6", text)
        self.assertIn('{"total":6}', text)
        sc = res["structuredContent"]
        self.assertTrue(sc["success"], sc)
        self.assertEqual(sc["output"], {"total": 6})
        self.assertEqual(sc["stdout"], "sum 6\n")
        # the job is in takod's records like any other
        rec = self.t.request("GET", f"/executions/{sc['execution_id']}").json()
        self.assertEqual(rec["status"], "succeeded")

    def test_run_python_failure_is_a_tool_error_with_the_traceback(self):
        self.c.initialize()
        res = self.c.call("run_python", code="def f():\n    return 1 / 0\nf()\n")
        self.assertTrue(res["isError"], res)
        text = text_of(res)
        self.assertIn("ZeroDivisionError", text)
        self.assertIn("Traceback", text)
        self.assertFalse(res["structuredContent"]["success"])

    def test_run_python_refused_by_takod_is_a_tool_error(self):
        self.c.initialize()
        res = self.c.call("run_python", code="print(1)", job_type="no-such-job-type")
        self.assertTrue(res["isError"], res)
        self.assertIn("takod answered HTTP", text_of(res))
        self.assertGreaterEqual(res["structuredContent"]["status_code"], 400)

    def test_unknown_session_is_a_tool_error(self):
        # a 404 from takod, with or without sessions: a result with isError, not a crash
        self.c.initialize()
        sid = "00000000-0000-4000-8000-000000000000"
        for name, args in (("session_run", {"code": "1"}), ("session_files", {}),
                           ("session_download", {"path": "a.txt"}),
                           ("session_upload", {"path": "a.txt", "content": "x"}),
                           ("session_close", {})):
            r = self.c.call(name, session_id=sid, **args)
            self.assertTrue(r["isError"], (name, r))
            self.assertIn("HTTP 404", text_of(r), name)
            self.assertEqual(r["structuredContent"]["status_code"], 404)

    def test_unreachable_takod_is_a_tool_error(self):
        c = MCPClient("http://127.0.0.1:9")
        try:
            c.initialize()
            res = c.call("run_python", code="print(1)")
            self.assertTrue(res["isError"])
            self.assertIn("cannot reach takod", text_of(res))
        finally:
            c.close_ok(self)

    def test_bad_json_is_a_parse_error_and_the_server_goes_on(self):
        self.c.initialize()
        for raw in (b"{not json", b'{"jsonrpc": "2.0", "id": 1, "method": "ping"} trailing',
                    b'{"jsonrpc": "2.0", "id": 1, "id": 2, "method": "ping"}', b"\xff\xfe"):
            ans = self.c.send_raw(raw) or self.c.read()
            self.assertEqual(ans["error"]["code"], -32700, (raw, ans))
            self.assertIsNone(ans["id"])
        self.assertEqual(self.c.request("ping")["result"], {})

    def test_invalid_requests(self):
        self.c.initialize()
        cases = [
            ([{"jsonrpc": "2.0", "id": 1, "method": "ping"}], -32600),  # batches: not in 2025-06-18
            ("just a string", -32600),
            ({"jsonrpc": "2.0", "id": {"x": 1}, "method": "ping"}, -32600),  # bad id type
            ({"jsonrpc": "1.0", "id": 7, "method": "ping"}, -32600),
            ({"jsonrpc": "2.0", "id": 8}, -32600),  # no method
            ({"jsonrpc": "2.0", "id": 9, "method": 5}, -32600),
            ({"jsonrpc": "2.0", "id": 10, "method": "tools/list", "params": [1]}, -32602),
        ]
        for msg, code in cases:
            self.c.send(msg)
            ans = self.c.read()
            self.assertEqual(ans["error"]["code"], code, (msg, ans))
        # a notification of any name is never answered
        self.c.send({"jsonrpc": "2.0", "method": "notifications/cancelled",
                     "params": {"requestId": 1}})
        self.c.send({"jsonrpc": "2.0", "method": "no/such/notification"})
        self.assertTrue(self.c.silent())

    def test_unknown_method(self):
        self.c.initialize()
        ans = self.c.request("resources/list")
        self.assertEqual(ans["error"]["code"], -32601)
        self.assertIn("resources/list", ans["error"]["message"])
        ans = self.c.request("initialise")
        self.assertEqual(ans["error"]["code"], -32601)

    def test_unknown_tool(self):
        self.c.initialize()
        ans = self.c.request("tools/call", {"name": "rm_rf", "arguments": {}})
        self.assertEqual(ans["error"]["code"], -32602)
        self.assertIn("rm_rf", ans["error"]["message"])

    def test_bad_params(self):
        self.c.initialize()
        bad = [
            {"name": "run_python", "arguments": {}},  # code is required
            {"name": "run_python", "arguments": {"code": 5}},
            {"name": "run_python", "arguments": {"code": ""}},
            {"name": "run_python", "arguments": {"code": "1", "timeout": "30"}},
            {"name": "run_python", "arguments": {"code": "1", "timeout": 0}},
            {"name": "run_python", "arguments": {"code": "1", "timeout": 1.5}},
            {"name": "run_python", "arguments": {"code": "1", "input_data": [1]}},
            {"name": "run_python", "arguments": {"code": "1", "shell": True}},  # unknown
            {"name": "run_python", "arguments": "print(1)"},
            {"name": 3},
            {"arguments": {"code": "1"}},
            {"name": "session_run", "arguments": {"code": "1"}},  # session_id is required
        ]
        for params in bad:
            ans = self.c.request("tools/call", params)
            self.assertEqual(ans.get("error", {}).get("code"), -32602, (params, ans))
        ans = self.c.request("initialize", {"capabilities": {}})  # no protocolVersion
        self.assertEqual(ans["error"]["code"], -32602)


class SessionTools(unittest.TestCase):
    """The session tools against the real server (skipped until it has /sessions)."""

    @classmethod
    def setUpClass(cls):
        cls.t = Takod().start()

    @classmethod
    def tearDownClass(cls):
        cls.t.cleanup()

    def setUp(self):
        self.c = MCPClient(self.t.url)
        self.addCleanup(self.c.close_ok, self)
        self.c.initialize()

    def create(self, **args):
        res = self.c.call("session_create", **args)
        self.assertFalse(res["isError"], res)
        sid = res["structuredContent"]["session_id"]
        self.assertIn(sid, text_of(res))
        self.addCleanup(self.t.request, "DELETE", f"/sessions/{sid}")
        return sid

    def test_state_files_and_close(self):
        sid = self.create(idle_timeout=120)
        r = self.c.call("session_run", session_id=sid, code="import math\nx = 21\nprint('set')")
        self.assertFalse(r["isError"], r)
        self.assertIn("set", text_of(r))
        r = self.c.call("session_run", session_id=sid, code="x * 2")
        self.assertFalse(r["isError"], r)
        self.assertEqual(r["structuredContent"]["result"], "42")
        self.assertIn("42", text_of(r))
        self.assertEqual(r["structuredContent"]["execution_count"], 2)

        r = self.c.call("session_upload", session_id=sid, path="data/in.txt", content="héllo\n")
        self.assertFalse(r["isError"], r)
        blob = bytes(range(256))
        r = self.c.call("session_upload", session_id=sid, path="blob.bin",
                        content_base64=base64.b64encode(blob).decode())
        self.assertFalse(r["isError"], r)
        r = self.c.call("session_run", session_id=sid,
                        code="open('data/in.txt').read().upper() + str(len(open('blob.bin','rb').read()))")
        self.assertEqual(r["structuredContent"]["result"], repr("HÉLLO\n256"))
        r = self.c.call("session_run", session_id=sid,
                        code="open('out.csv', 'w').write('a,b\\n1,2\\n')")
        self.assertFalse(r["isError"], r)

        d = self.c.call("session_download", session_id=sid, path="out.csv")
        self.assertFalse(d["isError"], d)
        self.assertEqual(text_of(d), "a,b\n1,2\n")
        self.assertEqual(d["structuredContent"]["encoding"], "utf-8")
        d = self.c.call("session_download", session_id=sid, path="blob.bin")
        self.assertEqual(d["structuredContent"]["encoding"], "base64")
        self.assertEqual(base64.b64decode(d["structuredContent"]["content"]), blob)

        f = self.c.call("session_files", session_id=sid)
        self.assertFalse(f["isError"], f)
        names = {i["name"] for i in f["structuredContent"]["items"]}
        self.assertTrue({"data", "blob.bin", "out.csv"} <= names, names)

        r = self.c.call("session_close", session_id=sid)
        self.assertFalse(r["isError"], r)
        r = self.c.call("session_run", session_id=sid, code="x")
        self.assertTrue(r["isError"], r)
        self.assertIn("410", text_of(r))

    def test_cell_error_is_a_tool_error_and_the_session_lives_on(self):
        sid = self.create()
        r = self.c.call("session_run", session_id=sid, code="y = 1\n1 / 0")
        self.assertTrue(r["isError"], r)
        self.assertIn("ZeroDivisionError", text_of(r))
        self.assertEqual(r["structuredContent"]["status"], "error")
        r = self.c.call("session_run", session_id=sid, code="y + 1")
        self.assertFalse(r["isError"], r)
        self.assertEqual(r["structuredContent"]["result"], "2")

    def test_bad_paths_and_contents_are_tool_errors(self):
        sid = self.create()
        for args in ({"path": "../x", "content": "x"}, {"path": "/etc/x", "content": "x"},
                     {"path": "x"}, {"path": "x", "content": "a", "content_base64": "YQ=="},
                     {"path": "x", "content_base64": "not base64!"}):
            r = self.c.call("session_upload", session_id=sid, **args)
            self.assertTrue(r["isError"], (args, r))
        r = self.c.call("session_download", session_id=sid, path="missing.txt")
        self.assertTrue(r["isError"], r)
        self.assertIn("404", text_of(r))



if __name__ == "__main__":
    unittest.main()
