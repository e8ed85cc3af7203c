"""
takod's extensions beyond Tako VM: callbacks (callback_url) and the event stream
(GET /jobs/{id}/events with status changes and live output).
"""
import http.client
import http.server
import json
import threading
import time
import unittest

from harness import Takod


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
        cls.t = Takod(executors=2).start()
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
        conn = http.client.HTTPConnection("127.0.0.1", self.t.port, timeout=timeout)
        conn.request("GET", f"/jobs/{job_id}/events")
        resp = conn.getresponse()
        self.assertEqual(resp.status, 200)
        self.assertEqual(resp.getheader("Content-Type"), "text/event-stream")
        events, event = [], None
        for raw in resp:
            line = raw.decode().rstrip("\n")
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: "):
                events.append((event, json.loads(line[6:])))
        conn.close()
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


if __name__ == "__main__":
    unittest.main()
