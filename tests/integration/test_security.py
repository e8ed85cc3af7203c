"""
API security through the real server: keys (X-API-Key and Bearer), 401s, job ownership
between keys, the admin key, the rate limit shared by all acceptors (and metering key
guessing), per-key quotas, and refusing to listen publicly without keys.
"""
import http.client
import subprocess
import time
import unittest

from harness import CONF, TAKOD_BIN, Takod, free_port

KEY_A = "key-a-0123456789abcdef"
KEY_B = "key-b-0123456789abcdef"
ADMIN = "admin-0123456789abcdef"


def H(key):
    return {"X-API-Key": key}


class Keys(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.t = Takod(f"auth.api_keys={KEY_A},{KEY_B}", f"auth.admin_key={ADMIN}",
                      "auth.rate_limit_per_minute=0", executors=2, acceptors=2).start()
        # a finished job of key A with an artifact, and a running one
        r = cls.t.request("POST", "/execute", {"code": "open('/output/f.txt','w').write('A')"},
                          headers=H(KEY_A))
        assert r.status == 200, r.body
        cls.job = r.json()["execution_id"]

    @classmethod
    def tearDownClass(cls):
        cls.t.cleanup()

    def test_missing_and_wrong_keys_are_401(self):
        for headers in [{}, H("wrong-key-0123456789"), {"Authorization": "Bearer nope-nope-nope-nope"}]:
            r = self.t.request("POST", "/execute", {"code": "print(1)"}, headers=headers)
            self.assertEqual(r.status, 401, headers)
            self.assertTrue(r.headers["WWW-Authenticate"].startswith("Bearer"))
            self.assertIn("correlation_id", r.json())
        self.assertEqual(self.t.request("GET", "/executions").status, 401)
        self.assertEqual(self.t.request("GET", "/metrics").status, 401)

    def test_health_stays_open(self):
        self.assertEqual(self.t.request("GET", "/health").status, 200)

    def test_bearer_and_header_both_work(self):
        r = self.t.request("POST", "/execute", {"code": "print(2)"},
                           headers={"Authorization": f"Bearer {KEY_B}"})
        self.assertEqual((r.status, r.json()["stdout"]), (200, "2\n"))
        self.assertEqual(self.t.request("GET", "/metrics", headers=H(KEY_A)).status, 200)

    def test_the_record_keeps_the_key_id_not_the_key(self):
        rows = self.t.sql(f"SELECT api_key_id FROM jobs WHERE id = '{self.job}'")
        self.assertEqual(len(rows[0][0]), 16)
        dump = self.t.sql("SELECT row_to_json(j)::text FROM jobs j")
        self.assertFalse(any(KEY_A in r[0] or KEY_B in r[0] for r in dump))

    def test_another_key_gets_404_everywhere(self):
        j = self.job
        for method, path, body in [
                ("GET", f"/jobs/{j}", None), ("GET", f"/jobs/{j}/result", None),
                ("GET", f"/jobs/{j}/result?view=full", None), ("GET", f"/executions/{j}", None),
                ("GET", f"/jobs/{j}/artifacts/f.txt", None), ("HEAD", f"/jobs/{j}/artifacts/f.txt", None),
                ("GET", f"/jobs/{j}/events", None), ("POST", f"/jobs/{j}/cancel", {}),
                ("POST", f"/jobs/{j}/rerun", {}), ("POST", f"/jobs/{j}/fork", {"code": "print(3)"})]:
            r = self.t.request(method, path, body, headers=H(KEY_B))
            self.assertEqual(r.status, 404, (method, path, r.body))
        # the owner and the admin see it
        for key in (KEY_A, ADMIN):
            self.assertEqual(self.t.request("GET", f"/jobs/{j}", headers=H(key)).status, 200)
            self.assertEqual(self.t.request("GET", f"/jobs/{j}/artifacts/f.txt", headers=H(key)).body, b"A")

    def test_executions_list_only_your_own(self):
        b = self.t.request("POST", "/execute", {"code": "print('b')"}, headers=H(KEY_B)).json()
        ids_b = [i["execution_id"] for i in self.t.request("GET", "/executions", headers=H(KEY_B)).json()["items"]]
        ids_a = [i["execution_id"] for i in self.t.request("GET", "/executions", headers=H(KEY_A)).json()["items"]]
        ids_admin = [i["execution_id"] for i in self.t.request("GET", "/executions", headers=H(ADMIN)).json()["items"]]
        self.assertIn(b["execution_id"], ids_b)
        self.assertNotIn(self.job, ids_b)
        self.assertIn(self.job, ids_a)
        self.assertNotIn(b["execution_id"], ids_a)
        self.assertTrue({self.job, b["execution_id"]} <= set(ids_admin))

    def test_cancel_of_another_keys_running_job_is_404(self):
        j = self.t.request("POST", "/execute/async", {"code": "import time; time.sleep(20)"},
                           headers=H(KEY_A)).json()["job_id"]
        self.t.wait_for(lambda: self.t.request("GET", f"/jobs/{j}", headers=H(KEY_A)).json()["status"] == "running",
                        what="running")
        self.assertEqual(self.t.request("POST", f"/jobs/{j}/cancel", {}, headers=H(KEY_B)).status, 404)
        self.assertEqual(self.t.request("POST", f"/jobs/{j}/cancel", {}, headers=H(KEY_A)).status, 200)

    def test_idempotency_keys_are_per_api_key(self):
        body = {"code": "print('idem')", "idempotency_key": "same-key-123"}
        a = self.t.request("POST", "/execute/async", body, headers=H(KEY_A)).json()
        b = self.t.request("POST", "/execute/async", body, headers=H(KEY_B)).json()
        self.assertNotEqual(a["job_id"], b["job_id"])


class RateLimit(unittest.TestCase):
    def test_limit_holds_across_acceptors_and_meters_key_guessing(self):
        t = Takod(f"auth.api_keys={KEY_A}", "auth.rate_limit_per_minute=60", "auth.rate_limit_burst=5",
                  executors=1, acceptors=2).start()
        try:
            codes = []
            for _ in range(10):  # new connection each time: both acceptors serve them
                c = http.client.HTTPConnection("127.0.0.1", t.port, timeout=30)
                c.request("GET", "/pool/stats", headers=H(KEY_A))
                resp = c.getresponse()
                codes.append((resp.status, resp.getheader("X-RateLimit-Limit"),
                              resp.getheader("Retry-After")))
                resp.read()
                c.close()
            ok = [c for c in codes if c[0] == 200]
            limited = [c for c in codes if c[0] == 429]
            self.assertTrue(5 <= len(ok) <= 6, codes)  # burst 5 (+1 if a second passed)
            self.assertTrue(limited, codes)
            self.assertEqual(limited[0][1], "5")  # the bucket
            self.assertGreaterEqual(int(limited[0][2]), 1)
            # wrong keys spend the IP's tokens: after the burst, 429 instead of 401
            seen = [t.request("GET", "/pool/stats", headers=H(f"guess-{i:016d}")).status
                    for i in range(8)]
            self.assertIn(401, seen)
            self.assertEqual(seen[-1], 429)
        finally:
            t.cleanup()


class Quotas(unittest.TestCase):
    def test_queued_quota_is_429(self):
        t = Takod(f"auth.api_keys={KEY_A},{KEY_B}", "auth.max_queued_jobs=1",
                  "auth.rate_limit_per_minute=0", executors=1, acceptors=1).start()
        try:
            sleep = {"code": "import time; time.sleep(15)"}
            r1 = t.request("POST", "/execute/async", sleep, headers=H(KEY_A))
            t.wait_running()
            r2 = t.request("POST", "/execute/async", sleep, headers=H(KEY_A))
            r3 = t.request("POST", "/execute/async", sleep, headers=H(KEY_A))
            self.assertEqual((r1.status, r2.status, r3.status), (200, 200, 429))
            self.assertIn("auth.max_queued_jobs", r3.json()["detail"])
            # another key is not affected
            self.assertEqual(t.request("POST", "/execute/async", {"code": "print(1)"},
                                       headers=H(KEY_B)).status, 200)
        finally:
            t.cleanup()


class Listening(unittest.TestCase):
    def run_takod(self, *overrides):
        args = [TAKOD_BIN, "-t", "-c", CONF]
        for o in overrides:
            args += ["-o", o]
        return subprocess.run(args, capture_output=True, text=True, timeout=60)

    def test_public_listen_without_keys_is_refused(self):
        t = Takod(f"server.listen=0.0.0.0:{free_port()}", executors=1, acceptors=1)
        try:
            with self.assertRaises(AssertionError) as cm:
                t.start(timeout=60)
            self.assertEqual(t.proc.returncode, 2)
            self.assertIn("refusing to listen on 0.0.0.0", str(cm.exception))
        finally:
            t.cleanup()

    def test_short_keys_are_a_config_error(self):
        r = self.run_takod("auth.api_keys=short")
        self.assertEqual(r.returncode, 2)
        self.assertIn("auth.api_keys", r.stderr)
        self.assertEqual(self.run_takod(f"auth.api_keys={KEY_A}, {KEY_B}").returncode, 0)


if __name__ == "__main__":
    unittest.main()
