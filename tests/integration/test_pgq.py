"""
pgq (common/pgq.c), the acceptors' asynchronous PostgreSQL client, against a real
PostgreSQL of the test's own: its listener sees every notification without more traffic
on the connection. A notification that comes in the same read as a query's result and
after its ReadyForQuery is parsed by libpq only when pgq collects that result (after pgq
drained the read's notifications); pgq must drain them again when the query ends, or the
notification waits in libpq until the next byte arrives — a long-poll
(GET /jobs/{id}/result?wait=true) whose job's "finished" notification met a busy
connection then hung until its timeout (408). tests/tools/pgq_notify.c makes the case,
through a proxy (Coalescer) that hands the client what the server sent in one write per
100 ms, so the result and the notification behind it are one read.
"""
import os
import select
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import unittest

from harness import PG_BIN, ScratchPostgres

TOOL = os.environ.get("TAKO_PGQ_NOTIFY")


class Coalescer:
    """A unix-socket proxy in front of PostgreSQL: client to server at once; server to
    client gathered and written every `every` seconds, one write."""

    def __init__(self, server_path, every=0.1):
        self.server_path, self.every = server_path, every
        self.dir = tempfile.mkdtemp(prefix="takod-pgproxy-")
        os.chmod(self.dir, 0o755)
        self.lsock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.lsock.bind(os.path.join(self.dir, ".s.PGSQL.5432"))
        self.lsock.listen(8)
        self.stop = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        self.lsock.settimeout(0.2)
        while not self.stop:
            try:
                c, _ = self.lsock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.connect(self.server_path)
            threading.Thread(target=self._pump, args=(c, s), daemon=True).start()

    def _pump(self, c, s):
        held, due = b"", None
        try:
            while not self.stop:
                wait = 0.2 if due is None else max(0.0, due - time.monotonic())
                r, _, _ = select.select([c, s], [], [], wait)
                if c in r:
                    data = c.recv(65536)
                    if not data:
                        return
                    s.sendall(data)
                if s in r:
                    data = s.recv(65536)
                    if not data:
                        return
                    held += data
                    if due is None:
                        due = time.monotonic() + self.every
                if due is not None and time.monotonic() >= due:
                    c.sendall(held)
                    held, due = b"", None
        except OSError:
            pass
        finally:
            c.close()
            s.close()

    def close(self):
        self.stop = True
        self.lsock.close()
        shutil.rmtree(self.dir, ignore_errors=True)


@unittest.skipUnless(TOOL and PG_BIN and os.geteuid() == 0,
                     "needs the pgq_notify tool, PostgreSQL's server binaries and root")
class Listener(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.pg = ScratchPostgres().start()

    @classmethod
    def tearDownClass(cls):
        cls.pg.cleanup()

    def run_tool(self, *args):
        p = subprocess.run([TOOL, *args], capture_output=True, text=True, timeout=60)
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        self.assertEqual(p.stdout.split()[0], "up", p.stdout)
        self.assertEqual(p.stdout.count("notify "), 3, p.stdout)

    def test_own_notification_before_ready_for_query(self):
        self.run_tool(self.pg.conninfo)

    def test_notification_behind_a_result_in_the_same_read(self):
        proxy = Coalescer(os.path.join(self.pg.dir, ".s.PGSQL.5432"))
        self.addCleanup(proxy.close)
        self.run_tool(self.pg.conninfo.replace(f"host={self.pg.dir}", f"host={proxy.dir}"),
                      self.pg.conninfo)


if __name__ == "__main__":
    unittest.main()
