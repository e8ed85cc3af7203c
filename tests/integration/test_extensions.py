"""
takod's extensions beyond Tako VM: callbacks (callback_url) and the event stream
(GET /jobs/{id}/events with status changes and live output).
"""
import http.server
import json
import os
import signal
import socket
import threading
import time
import unittest

from harness import Takod


def metric(text, name, **labels):
    want = name + ("{" + ",".join(f'{k}="{v}"' for k, v in labels.items()) + "}" if labels else "")
    for line in text.splitlines():
        if line.startswith(want + " "):
            return float(line.split()[-1])
    return 0.0


class Receiver(http.server.BaseHTTPRequestHandler):
    got = []
    fail_first = 0

    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if Receiver.fail_first > 0:
            Receiver.fail_first -= 1
            self.send_response(500)
            self.end_headers()
            return
        Receiver.got.append((self.path, self.headers["Content-Type"], json.loads(body)))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args):
        pass


class Extensions(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        # the receiver is on 127.0.0.1: private addresses must be allowed (they are not by
        # default: see CallbackAddresses)
        cls.t = Takod("callbacks.allow_private_addresses=true", "callbacks.backoff_ms=200",
                      executors=2).start()
        cls.httpd = http.server.HTTPServer(("127.0.0.1", 0), Receiver)
        cls.port = cls.httpd.server_address[1]
        threading.Thread(target=cls.httpd.serve_forever, daemon=True).start()

    @classmethod
    def tearDownClass(cls):
        cls.httpd.shutdown()
        cls.t.cleanup()

    def test_callback_receives_the_result_after_a_retry(self):
        Receiver.got.clear()
        Receiver.fail_first = 1
        r = self.t.request("POST", "/execute/async", {
            "code": "print('called back')", "callback_url": f"http://127.0.0.1:{self.port}/hook?x=1"})
        job = r.json()["job_id"]
        self.t.wait_for(lambda: Receiver.got, timeout=30, what="the callback")
        path, ctype, body = Receiver.got[0]
        self.assertEqual((path, ctype), ("/hook?x=1", "application/json"))
        self.assertEqual((body["execution_id"], body["stdout"], body["status"]),
                         (job, "called back\n", "succeeded"))
        self.t.wait_for(lambda: self.t.sql(f"SELECT callback_status FROM jobs WHERE id = '{job}'")
                        == [["delivered"]], what="callback_status delivered")

    def assert_same_answer(self, got, want, what):
        self.assertEqual(sorted(got), sorted(want), what)
        for k in want:
            self.assertEqual(got[k], want[k], f"{what}: {k}")

    def test_callback_body_is_the_jobs_answer_field_for_field(self):
        # The one answer builder (job_answer) writes both: POST /execute's body (from the
        # run's result), a repeat of the request's (from the record) and the callback's
        # (from the record, when it is sent). Field for field equal, for a job that
        # succeeded, one that failed and one cancelled while it ran.
        got = {}

        class Keep(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                got[self.path] = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args):
                pass
        httpd = http.server.HTTPServer(("127.0.0.1", 0), Keep)
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
        url = f"http://127.0.0.1:{httpd.server_address[1]}"
        try:
            ok = ("import json\nprint('out')\nopen('/output/a.txt', 'w').write('hello')\n"
                  "json.dump({'n': 1.5, 's': '\u00e9', 'l': [1, {'k': None}], 'f': 0.1 + 0.2},"
                  " open('/output/result.json', 'w'))\n")
            failed = "print('before')\nraise ValueError('bad value')\n"
            for name, code, status in (("ok", ok, "succeeded"), ("failed", failed, "failed")):
                body = {"code": code, "callback_url": f"{url}/{name}",
                        "idempotency_key": f"callback-answer-{name}"}
                r = self.t.request("POST", "/execute", body)
                self.assertEqual(r.status, 200, r.body)
                answer = r.json()
                self.assertEqual(answer["status"], status, answer)
                cb = self.t.wait_for(lambda: got.get(f"/{name}"), timeout=60, what=f"{name}'s callback")
                self.assert_same_answer(cb, answer, f"{name}: callback vs POST /execute")
                again = self.t.request("POST", "/execute", body)  # answered from the record
                self.assertEqual(again.status, 200, again.body)
                self.assert_same_answer(again.json(), cb, f"{name}: a repeat vs the callback")
            # reals as every answer writes them (9 significant digits: reply_json's)
            self.assertEqual(got["/ok"]["output"], {"n": 1.5, "s": "\u00e9", "l": [1, {"k": None}], "f": 0.3})
            self.assertEqual([a["name"] for a in got["/ok"]["artifacts"]], ["a.txt"])
            self.assertEqual((got["/failed"]["error_type"], got["/failed"]["exit_code"]), ("value_error", 1))

            body = {"code": "import time\nprint('started', flush=True)\ntime.sleep(120)\n",
                    "callback_url": f"{url}/cancelled", "idempotency_key": "callback-answer-cancelled"}
            job = self.t.request("POST", "/execute/async", body).json()["job_id"]
            self.t.wait_for(lambda: self.t.sql(f"SELECT status FROM jobs WHERE id = '{job}'") == [["running"]],
                            timeout=60, what="the job running")
            self.assertEqual(self.t.request("POST", f"/jobs/{job}/cancel").status, 200)
            cb = self.t.wait_for(lambda: got.get("/cancelled"), timeout=60, what="the cancelled job's callback")
            self.assertEqual((cb["job_id"], cb["status"], cb["success"], cb["error_type"]),
                             (job, "cancelled", False, "cancelled"), cb)
            again = self.t.request("POST", "/execute", body)  # the same request, sync: the record's answer
            self.assertEqual(again.status, 200, again.body)
            self.assert_same_answer(again.json(), cb, "cancelled: a repeat vs the callback")
            rec = self.t.request("GET", f"/jobs/{job}/result?view=full").json()
            for k in ("job_id", "execution_id", "status", "stdout", "stderr", "exit_code", "output",
                      "timing", "runtime", "job_type", "stdout_truncated", "stderr_truncated", "artifacts"):
                self.assertEqual(cb[k], rec[k], f"cancelled: callback vs GET /jobs/{{id}}/result: {k}")
            self.assertEqual((cb["error"], cb["error_type"]), (rec["error"]["message"], rec["error"]["type"]))
        finally:
            httpd.shutdown()
            httpd.server_close()

    def test_callback_to_nowhere_is_recorded_failed(self):
        r = self.t.request("POST", "/execute/async", {
            "code": "print(1)", "callback_url": "http://127.0.0.1:1/nothing-listens"})
        job = r.json()["job_id"]
        self.t.wait_for(lambda: self.t.sql(f"SELECT callback_status FROM jobs WHERE id = '{job}'")
                        == [["failed"]], timeout=60, what="callback_status failed")

    def test_bad_callback_url_is_422(self):
        for url in ["ftp://x/y", "not a url", "http://x/" + "a" * 3000, 5]:
            r = self.t.request("POST", "/execute", {"code": "print(1)", "callback_url": url})
            self.assertEqual(r.status, 422, url)
            self.assertEqual(r.json()["detail"][0]["loc"], ["body", "callback_url"])

    def read_events(self, job_id, timeout=60):
        status, ctype, events = self.t.events(job_id, timeout)
        self.assertEqual(status, 200)
        self.assertEqual(ctype, "text/event-stream")
        return events

    def test_events_stream_status_live_output_and_result(self):
        code = ("import sys, time\ntime.sleep(1)\nprint('first', flush=True)\ntime.sleep(0.5)\n"
                "sys.stderr.write('oops\\n')\nprint('second')")
        job = self.t.request("POST", "/execute/async", {"code": code}).json()["job_id"]
        events = self.read_events(job)
        kinds = [e for e, _ in events]
        self.assertEqual(kinds[0], "status")
        self.assertEqual(kinds[-1], "result")
        self.assertEqual(events[-1][1]["stdout"], "first\nsecond\n")
        self.assertIn({"job_id": job, "status": "succeeded"}, [d for e, d in events if e == "status"])
        live_out = "".join(d for e, d in events if e == "stdout")
        live_err = "".join(d for e, d in events if e == "stderr")
        self.assertIn("first", live_out)  # streamed while it ran
        self.assertEqual(live_err, "oops\n")

    def test_events_of_a_finished_job_and_unknown_job(self):
        r = self.t.execute("print('done')")
        events = self.read_events(r["execution_id"])
        self.assertEqual([e for e, _ in events], ["status", "result"])
        self.assertEqual(events[1][1]["stdout"], "done\n")
        self.assertEqual(self.t.request("GET", "/jobs/00000000-0000-4000-8000-000000000000/events").status, 404)
        self.assertEqual(self.t.request("GET", "/jobs/nope/events").status, 404)


class Hanging:
    """A receiver that accepts, reads the request and never answers."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.lock = threading.Lock()
        self.conns = []      # connections whose request has been read
        self.closed = 0      # of those, closed by takod (EOF)
        self.stopping = False
        threading.Thread(target=self.accept, daemon=True).start()

    def accept(self):
        while not self.stopping:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self.serve, args=(c,), daemon=True).start()

    def serve(self, c):
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = c.recv(65536)
            if not chunk:
                c.close()
                return
            data += chunk
        with self.lock:
            self.conns.append(c)
        while True:  # never answer; notice when takod gives up on us
            try:
                if not c.recv(65536):
                    break
            except OSError:
                break
        with self.lock:
            self.closed += 1

    def open_count(self):
        with self.lock:
            return len(self.conns) - self.closed

    def close(self):
        self.stopping = True
        self.sock.close()
        with self.lock:
            for c in self.conns:
                try:
                    c.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                c.close()


class Flaky(http.server.BaseHTTPRequestHandler):
    """Answers 500 to the first `fail_first` POSTs, then 204; records when each came."""
    times = []
    fail_first = 0

    def do_POST(self):
        self.rfile.read(int(self.headers["Content-Length"]))
        Flaky.times.append(time.monotonic())
        code = 500 if len(Flaky.times) <= Flaky.fail_first else 204
        self.send_response(code)
        self.end_headers()

    def log_message(self, *args):
        pass


class CallbackDelivery(unittest.TestCase):
    """Item 9 of issue #15: delivery is never on an executor's path."""

    BACKOFF_MS = 400

    @classmethod
    def setUpClass(cls):
        # a long attempt bound, so the hanging deliveries stay in flight for the whole test
        cls.t = Takod("callbacks.allow_private_addresses=true", "callbacks.timeout_ms=120000",
                      "callbacks.connect_timeout_ms=5000",
                      f"callbacks.backoff_ms={cls.BACKOFF_MS}", "callbacks.max_attempts=4",
                      executors=2).start()

    @classmethod
    def tearDownClass(cls):
        cls.t.cleanup()

    def record(self, job):
        r = self.t.request("GET", f"/jobs/{job}/result?view=full")
        self.assertEqual(r.status, 200, r.body)
        return r.json()

    def test_hanging_receivers_do_not_delay_an_unrelated_job(self):
        hang = Hanging()
        try:
            url = f"http://127.0.0.1:{hang.port}/hook"
            jobs = [self.t.request("POST", "/execute/async", {"code": f"print({i})", "callback_url": url})
                    .json()["job_id"] for i in range(8)]
            for j in jobs:
                self.t.wait_for(lambda: self.t.sql(f"SELECT status FROM jobs WHERE id = '{j}'")
                                == [["succeeded"]], timeout=120, what=f"job {j} done")
            # all eight are in flight at once, none answered (two executors could hold two)
            self.t.wait_for(lambda: hang.open_count() == 8, timeout=60,
                            what="eight deliveries hanging at once")
            r = self.t.execute("print('unrelated')")
            self.assertEqual((r["status"], r["stdout"]), ("succeeded", "unrelated\n"), r)
            # ...and it finished while every one of them still hangs
            self.assertEqual(hang.open_count(), 8)
            self.assertEqual(hang.closed, 0)
            for j in jobs:
                cb = self.record(j)["callback"]
                self.assertEqual((cb["url"], cb["status"], cb["attempts"]), (url, "pending", 1), cb)
        finally:
            hang.close()

    def test_retries_back_off_and_are_recorded(self):
        Flaky.times.clear()
        Flaky.fail_first = 2
        httpd = http.server.HTTPServer(("127.0.0.1", 0), Flaky)
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
        try:
            m0 = self.t.request("GET", "/metrics").body.decode()
            url = f"http://127.0.0.1:{httpd.server_address[1]}/flaky"
            job = self.t.request("POST", "/execute/async", {"code": "print(1)", "callback_url": url}).json()["job_id"]
            cb = self.t.wait_for(lambda: (lambda c: c if c["status"] == "delivered" else None)(
                self.record(job).get("callback", {"status": None})), timeout=90, what="delivered")
            self.assertEqual(cb["attempts"], 3, cb)
            self.assertEqual(cb["last_http_status"], 204, cb)
            self.assertIsNone(cb["last_error"], cb)
            self.assertIsNotNone(cb["delivered_at"], cb)
            self.assertEqual(len(Flaky.times), 3)
            # exponential backoff: at least backoff_ms, then at least twice that (lower bounds
            # only: a slow machine only makes the gaps longer)
            gaps = [b - a for a, b in zip(Flaky.times, Flaky.times[1:])]
            self.assertGreaterEqual(gaps[0], 0.9 * self.BACKOFF_MS / 1000, gaps)
            self.assertGreaterEqual(gaps[1], 0.9 * 2 * self.BACKOFF_MS / 1000, gaps)
            self.assertEqual(self.t.sql(f"SELECT callback_status FROM jobs WHERE id = '{job}'"),
                             [["delivered"]])
            m1 = self.t.request("GET", "/metrics").body.decode()
            self.assertGreaterEqual(metric(m1, "takod_callback_attempts_total", outcome="retry"),
                                    metric(m0, "takod_callback_attempts_total", outcome="retry") + 2)
            self.assertGreaterEqual(metric(m1, "takod_callback_attempts_total", outcome="delivered"),
                                    metric(m0, "takod_callback_attempts_total", outcome="delivered") + 1)
        finally:
            httpd.shutdown()
            httpd.server_close()

    def test_a_job_cancelled_before_it_ran_still_calls_back(self):
        # No executor finishes this job: the acceptor settles it. Its callback goes anyway
        # (the database queues it whoever writes the final status).
        Flaky.times.clear()
        Flaky.fail_first = 0
        got = []

        class Keep(Flaky):
            def do_POST(self):
                got.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
                self.send_response(204)
                self.end_headers()
        httpd = http.server.HTTPServer(("127.0.0.1", 0), Keep)
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
        try:
            busy = [self.t.request("POST", "/execute/async", {"code": "import time; time.sleep(20)"})
                    .json()["job_id"] for _ in range(2)]  # both executors
            self.t.wait_for(lambda: self.t.sql("SELECT count(*) FROM jobs WHERE status = 'running'")
                            == [["2"]], timeout=60, what="both executors busy")
            url = f"http://127.0.0.1:{httpd.server_address[1]}/cancelled"
            job = self.t.request("POST", "/execute/async", {"code": "print(1)", "callback_url": url}).json()["job_id"]
            self.assertEqual(self.t.request("POST", f"/jobs/{job}/cancel").status, 200)
            self.t.wait_for(lambda: got, timeout=60, what="the cancelled job's callback")
            self.assertEqual((got[0]["job_id"], got[0]["status"], got[0]["success"], got[0]["error_type"]),
                             (job, "cancelled", False, "cancelled"), got[0])
            self.t.wait_for(lambda: self.record(job)["callback"]["status"] == "delivered", what="recorded")
            for b in busy:
                self.t.request("POST", f"/jobs/{b}/cancel")
        finally:
            httpd.shutdown()
            httpd.server_close()

    def test_a_dead_receiver_fails_after_max_attempts_with_the_reason(self):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()  # nothing listens there now
        job = self.t.request("POST", "/execute/async", {
            "code": "print(1)", "callback_url": f"http://127.0.0.1:{port}/gone"}).json()["job_id"]
        cb = self.t.wait_for(lambda: (lambda c: c if c["status"] == "failed" else None)(
            self.record(job).get("callback", {"status": None})), timeout=120, what="failed")
        self.assertEqual(cb["attempts"], 4, cb)
        self.assertIn("connect", cb["last_error"].lower(), cb)


class CallbackProcessDeath(unittest.TestCase):
    """The callbacks process killed mid-delivery: respawned, and the delivery goes again."""

    def test_kill_9_mid_delivery_is_retried_after_the_lease(self):
        t = Takod("callbacks.allow_private_addresses=true", "callbacks.timeout_ms=2000",
                  executors=1).start()
        hang = Hanging()  # the first attempt hangs here...
        try:
            got = []

            class Ok(http.server.BaseHTTPRequestHandler):
                def do_POST(self):
                    got.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
                    self.send_response(204)
                    self.end_headers()

                def log_message(self, *args):
                    pass
            httpd = http.server.HTTPServer(("127.0.0.1", 0), Ok)
            threading.Thread(target=httpd.serve_forever, daemon=True).start()
            job = t.request("POST", "/execute/async", {
                "code": "print(1)", "callback_url": f"http://127.0.0.1:{hang.port}/hook"}).json()["job_id"]
            t.wait_for(lambda: hang.open_count() == 1, timeout=60, what="the delivery in flight")
            os.kill(t.roles()["takod: callbacks 0"], signal.SIGKILL)
            # ...then the receiver moves (as if it came back): the retry must find it there
            t.sql(f"UPDATE callback_deliveries SET url = 'http://127.0.0.1:{httpd.server_address[1]}/hook'"
                  f" WHERE job_id = '{job}'")
            t.wait_for(lambda: got, timeout=120, what="the delivery sent again after its lease")
            self.assertEqual(got[0]["job_id"], job)
            self.assertEqual(t.sql(f"SELECT state, attempts FROM callback_deliveries WHERE job_id = '{job}'"),
                             [["delivered", "2"]])
            t.wait_for(lambda: "takod: callbacks 0" in t.roles(), what="the callbacks process respawned")
            m = t.request("GET", "/metrics").body.decode()
            self.assertGreaterEqual(metric(m, "takod_process_restarts_total", role="callbacks"), 1)
            httpd.shutdown()
            httpd.server_close()
        finally:
            hang.close()
            t.cleanup()


def loopback_name():
    """A name that is not localhost but resolves to a loopback address (/etc/hosts)."""
    names = [socket.gethostname()]
    try:
        with open("/etc/hosts") as f:
            for line in f:
                parts = line.split("#")[0].split()
                if parts and parts[0].startswith("127."):
                    names += parts[1:]
    except OSError:
        pass
    for n in names:
        if "localhost" in n.lower():
            continue
        try:
            if socket.gethostbyname(n).startswith("127."):
                return n
        except OSError:
            pass
    return None


class CallbackAddresses(unittest.TestCase):
    """Item 11 of issue #15: callbacks may not reach internal addresses (SSRF), by default."""

    @classmethod
    def setUpClass(cls):
        cls.t = Takod("callbacks.backoff_ms=200", executors=1).start()

    @classmethod
    def tearDownClass(cls):
        cls.t.cleanup()

    def test_private_callback_url_is_422_by_default(self):
        urls = ["http://127.0.0.1:8000/x", "http://127.1/x", "http://2130706433/", "http://0x7f.0.0.1/",
                "http://localhost/x", "http://LOCALHOST./x", "http://hooks.localhost/x",
                "http://[::1]/x", "http://[::ffff:127.0.0.1]/x", "http://[::ffff:7f00:1]/x",
                "http://0.0.0.0/", "http://[::]/", "http://10.1.2.3/", "http://172.16.0.1/",
                "http://192.168.1.1/", "http://169.254.169.254/latest/meta-data/",
                "http://100.64.0.1/", "http://[fd00::1]/", "http://[fe80::1%25eth0]/",
                "http://224.0.0.1/", "http://255.255.255.255/", "http://[ff02::1]/",
                "http://[64:ff9b::a00:1]/", "http://[2002:7f00:1::]/", "https://user@127.0.0.1:443/x"]
        before = self.t.sql("SELECT count(*) FROM jobs")
        for url in urls:
            r = self.t.request("POST", "/execute/async", {"code": "print(1)", "callback_url": url})
            self.assertEqual(r.status, 422, url)
            d = r.json()["detail"][0]
            self.assertEqual(d["loc"], ["body", "callback_url"], url)
            self.assertIn("callbacks.allow_private_addresses", d["msg"], url)
        # nothing was recorded for them
        self.assertEqual(self.t.sql("SELECT count(*) FROM jobs"), before)
        # a public name or address is taken (it is never reached here: .invalid)
        r = self.t.request("POST", "/execute/async", {"code": "print(1)",
                                                      "callback_url": "https://hooks.example.invalid/x"})
        self.assertEqual(r.status, 200, r.body)

    def test_a_name_resolving_to_loopback_is_refused_at_connect_time(self):
        name = loopback_name()
        if not name:
            self.skipTest("no name in /etc/hosts resolves to 127.x here")
        Flaky.times.clear()
        Flaky.fail_first = 0
        httpd = http.server.HTTPServer(("127.0.0.1", 0), Flaky)
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
        try:
            m0 = self.t.request("GET", "/metrics").body.decode()
            url = f"http://{name}:{httpd.server_address[1]}/hook"
            r = self.t.request("POST", "/execute/async", {"code": "print(1)", "callback_url": url})
            self.assertEqual(r.status, 200, r.body)  # a name: only connect time can tell
            job = r.json()["job_id"]
            cb = self.t.wait_for(lambda: (lambda c: c if c["status"] == "failed" else None)(
                self.t.request("GET", f"/jobs/{job}/result?view=full").json().get("callback", {"status": None})),
                timeout=60, what="the refusal recorded")
            self.assertEqual(cb["attempts"], 1, cb)  # a refusal is final, not retried
            self.assertIn("refused", cb["last_error"], cb)
            self.assertIn("127.", cb["last_error"], cb)
            self.assertEqual(Flaky.times, [])  # the receiver never heard of it
            m1 = self.t.request("GET", "/metrics").body.decode()
            self.assertGreaterEqual(metric(m1, "takod_callback_attempts_total", outcome="refused"),
                                    metric(m0, "takod_callback_attempts_total", outcome="refused") + 1)
        finally:
            httpd.shutdown()
            httpd.server_close()


if __name__ == "__main__":
    unittest.main()
