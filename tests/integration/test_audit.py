"""
The tamper-evident audit chain through the real server: GET /audit/verify and
`tako audit verify` report an intact chain, and the first edited, deleted or inserted
record after tampering with PostgreSQL directly; an exported checkpoint is checked.
"""
import os
import subprocess
import unittest

from harness import Takod

ADMIN = "admin-0123456789abcdef"
KEY = "user-0123456789abcdefg"
TAKO_BIN = os.environ.get("TAKO_BIN", os.path.join(os.path.dirname(os.environ.get(
    "TAKOD_BIN", "../../build/takod")), "tako"))


class Audit(unittest.TestCase):
    def setUp(self):
        self.t = Takod(f"auth.api_keys={KEY}", f"auth.admin_key={ADMIN}", executors=2).start()
        self.ids = [self.t.request("POST", "/execute", {"code": f"print({i})"},
                                   headers={"X-API-Key": KEY}).json()["execution_id"] for i in range(5)]

    def tearDown(self):
        self.t.cleanup()

    def verify(self, expect=None):
        path = "/audit/verify" + (f"?expect={expect}" if expect else "")
        r = self.t.request("GET", path, headers={"X-API-Key": ADMIN})
        self.assertEqual(r.status, 200, r.body)
        return r.json()

    def cli(self, *args):
        env = dict(os.environ, TAKO_URL=self.t.url, TAKO_API_KEY=ADMIN)
        return subprocess.run([TAKO_BIN, "audit", "verify", *args], capture_output=True,
                              text=True, timeout=60, env=env)

    def test_intact_chain_verifies_and_checkpoints_match(self):
        v = self.verify()
        self.assertTrue(v["ok"], v)
        self.assertIsNone(v["problem"])
        self.assertEqual(v["rows_checked"], 5)
        self.assertEqual(v["last_seq"], 5)
        cp = f"{v['last_seq']}:{v['last_hash']}"
        self.assertEqual(self.verify(cp)["checkpoint"], "match")
        r = self.cli(cp)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("verified", r.stdout)
        # a user key may not run it
        self.assertEqual(self.t.request("GET", "/audit/verify", headers={"X-API-Key": KEY}).status, 403)
        self.assertEqual(self.t.request("GET", "/audit/verify?expect=nope",
                                        headers={"X-API-Key": ADMIN}).status, 422)

    def test_an_edited_record_is_found(self):
        victim = self.ids[2]
        self.t.sql(f"UPDATE jobs SET stdout = 'forged' WHERE id = '{victim}'")
        v = self.verify()
        self.assertFalse(v["ok"])
        self.assertEqual((v["problem"]["kind"], v["problem"]["job_id"]), ("edited", victim))
        r = self.cli()
        self.assertEqual(r.returncode, 1)
        self.assertIn("edited", r.stdout)

    def test_a_deleted_record_is_found(self):
        seq = self.t.sql(f"SELECT audit_seq FROM jobs WHERE id = '{self.ids[1]}'")[0][0]
        self.t.sql(f"DELETE FROM jobs WHERE id = '{self.ids[1]}'")
        v = self.verify()
        self.assertEqual((v["ok"], v["problem"]["kind"], str(v["problem"]["audit_seq"])),
                         (False, "deleted", seq))

    def test_an_inserted_record_is_found(self):
        self.t.sql("ALTER TABLE jobs DISABLE TRIGGER USER")
        self.t.sql("INSERT INTO jobs (id, status, code, timeout_s, memory_bytes, cpus, node)"
                   " VALUES (gen_random_uuid(), 'succeeded', 'print(666)', 30, 1, 1, 'forged')")
        self.t.sql("ALTER TABLE jobs ENABLE TRIGGER USER")
        v = self.verify()
        self.assertEqual((v["ok"], v["problem"]["kind"]), (False, "inserted"))


if __name__ == "__main__":
    unittest.main()
