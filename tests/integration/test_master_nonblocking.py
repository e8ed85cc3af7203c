"""
The master's loop never blocks on the engine (issue #16): with dockerd hung — takod's
docker.socket is a proxy of this test's own that stops answering — a kill -9'd acceptor
and executor are reaped and respawned within a bound, and /health still answers. When the
engine answers again, jobs run.
"""
import os
import shutil
import signal
import socket
import tempfile
import threading
import time
import unittest

from harness import Takod

ENGINE = "/var/run/docker.sock"
BOUND_S = 8  # the old master sat in a 30 s engine call after an executor's death


class EngineProxy:
    """A unix socket forwarding to the real engine; paused, it accepts and answers nothing
    (the bytes in flight wait), as a hung dockerd does. Only this test's takod uses it."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="takod-engine-")
        self.path = os.path.join(self.dir, "engine.sock")
        self.flowing = threading.Event()
        self.flowing.set()
        self.closed = False
        self.srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.srv.bind(self.path)
        self.srv.listen(128)
        threading.Thread(target=self._accept, daemon=True).start()

    def pause(self):
        self.flowing.clear()

    def resume(self):
        self.flowing.set()

    def _accept(self):
        while not self.closed:
            try:
                c, _ = self.srv.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    def _serve(self, c):
        self.flowing.wait()
        up = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            up.connect(ENGINE)
        except OSError:
            c.close()
            return
        other = threading.Thread(target=self._pump, args=(c, up), daemon=True)
        other.start()
        self._pump(up, c)
        other.join()
        up.close()
        c.close()

    def _pump(self, src, dst):
        try:
            while True:
                data = src.recv(65536)
                self.flowing.wait()  # paused: nothing goes through, nothing is answered
                if not data:
                    dst.shutdown(socket.SHUT_WR)
                    return
                dst.sendall(data)
        except OSError:
            for s in (src, dst):  # the other direction ends too
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self):
        self.closed = True
        self.resume()
        self.srv.close()
        shutil.rmtree(self.dir, ignore_errors=True)


class HungEngine(unittest.TestCase):
    def test_master_respawns_and_health_answers_while_the_engine_hangs(self):
        proxy = EngineProxy()
        t = Takod(f"docker.socket={proxy.path}", executors=1, acceptors=2)
        try:
            t.start()
            self.assertTrue(t.execute("print(1)")["success"])
            proxy.pause()
            time.sleep(0.5)
            before = t.roles()
            victims = [before["takod: executor 0"], before["takod: acceptor 0"]]
            for pid in victims:
                os.kill(pid, signal.SIGKILL)
            t0 = time.time()
            t.wait_for(lambda: all(r in t.roles() and t.roles()[r] not in victims
                                   for r in ("takod: executor 0", "takod: acceptor 0")),
                       timeout=BOUND_S, what="the killed executor and acceptor respawned")
            # the master is not stuck: it answers signals too (reopen the logs)
            os.kill(t.pid, signal.SIGUSR1)
            h = t.request("GET", "/health", timeout=BOUND_S)
            self.assertIn(h.status, (200, 503))
            self.assertIn("status", h.json())
            self.assertLess(time.time() - t0, 2 * BOUND_S)
            # a second death while the engine still hangs: respawned again
            again = t.roles()["takod: acceptor 1"]
            os.kill(again, signal.SIGKILL)
            t.wait_for(lambda: t.roles().get("takod: acceptor 1") not in (None, again),
                       timeout=BOUND_S, what="the second acceptor respawned")
            proxy.resume()
            r = t.execute("print(2)")
            self.assertEqual((r["success"], r["stdout"]), (True, "2\n"), r)
        finally:
            proxy.resume()
            t.cleanup()
            proxy.close()


if __name__ == "__main__":
    unittest.main()
