"""The launcher's SESSION MODE (image/launcher/tako-launcher.c) against the real engine.

Compiles the launcher (gcc -static, as scripts/build-image.sh does), bind-mounts it over
the image's own (code-executor:latest is never rebuilt here) and drives the protocol over
`docker run -i` stdin/stdout with the defences takod uses (root launcher with only
SETUID/SETGID/KILL, the program as uid 1000, --network none, a read-only root, tmpfs /tmp).
Containers are named tako-lsess-<pid>-<n> and removed.
"""

import json
import os
import re
import secrets
import select
import shutil
import signal
import subprocess
import tempfile
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.join(os.environ.get("TAKO_SOURCE_DIR", os.path.join(HERE, "..", "..")),
                   "image", "launcher", "tako-launcher.c")
IMAGE = os.environ.get("TAKO_IMAGE", "code-executor:latest")
PREFIX = "tako-lsess-%d" % os.getpid()

CELLEND_KEYS = ["n", "exit_code", "signal", "timed_out", "interrupted", "restarted", "oom",
                "stdout_bytes", "stderr_bytes", "stdout_truncated", "stderr_truncated",
                "start_us", "end_us", "reply", "nonce"]


def _skip_reason():
    if shutil.which("docker") is None:
        return "no docker CLI"
    if shutil.which(os.environ.get("CC", "gcc")) is None:
        return "no C compiler to build the launcher"
    if os.geteuid() != 0:
        return "needs root (the bind-mounted directories are made for uid 1000)"
    try:
        if subprocess.run(["docker", "image", "inspect", IMAGE], capture_output=True,
                          timeout=30).returncode != 0:
            return "image %s missing (scripts/build-image.sh)" % IMAGE
    except (OSError, subprocess.TimeoutExpired) as e:
        return "no docker engine answering: %s" % e
    return None


class ProtoError(AssertionError):
    pass


class Session:
    """One container running `tako-launcher --stdio --user 1000:1000` in session mode."""

    counter = 0

    def __init__(self, launcher, workdir, env=None, memory="512m", go_extra=""):
        Session.counter += 1
        self.name = "%s-%d" % (PREFIX, Session.counter)
        self.dir = tempfile.mkdtemp(prefix="lsess-", dir=workdir)
        self.ctl = os.path.join(self.dir, "ctl")
        self.output = os.path.join(self.dir, "output")
        for d in (self.ctl, self.output):
            os.mkdir(d)
            os.chown(d, 1000, 1000)
        self.nonce = secrets.token_hex(16)
        cmd = ["docker", "run", "-i", "--rm", "--name", self.name,
               "--label", "takod.test=launcher_session",
               "--user", "0:0", "--cap-drop", "ALL", "--cap-add", "SETUID",
               "--cap-add", "SETGID", "--cap-add", "KILL",
               "--security-opt", "no-new-privileges", "--network", "none", "--read-only",
               "--tmpfs", "/tmp:rw,noexec,nosuid,size=64m", "--init",
               "--memory", memory, "--memory-swap", memory, "--pids-limit", "100",
               "-v", "%s:/ctl" % self.ctl, "-v", "%s:/output" % self.output,
               "-v", "%s:/usr/local/bin/tako-launcher:ro" % launcher]
        for k, v in (env or {}).items():
            cmd += ["-e", "%s=%s" % (k, v)]
        cmd += [IMAGE, "/usr/local/bin/tako-launcher", "--stdio", "--user", "1000:1000"]
        self.p = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE)
        self.buf = b""
        self.transcript = b""  # every byte the launcher wrote, for the C codec's check
        self.n = 0
        self.n_unended = 0  # cells the session ended before they did
        self.send(("session=1 nonce=%s%s\n" % (self.nonce, go_extra)).encode())

    def send(self, data):
        self.p.stdin.write(data)
        self.p.stdin.flush()

    def _fill(self, deadline):
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("no frame from %s in time (have %r)" % (self.name, self.buf[:200]))
        r, _, _ = select.select([self.p.stdout], [], [], left)
        if not r:
            raise TimeoutError("no frame from %s in time (have %r)" % (self.name, self.buf[:200]))
        b = os.read(self.p.stdout.fileno(), 65536)
        if not b:
            raise EOFError("launcher stdout closed (have %r)" % self.buf[:200])
        self.buf += b
        self.transcript += b

    def _take(self, n, deadline):
        while len(self.buf) < n:
            self._fill(deadline)
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def _line(self, deadline):
        while b"\n" not in self.buf:
            if len(self.buf) > 2048:
                raise ProtoError("line too long: %r" % self.buf[:100])
            self._fill(deadline)
        line, self.buf = self.buf.split(b"\n", 1)
        return line.decode("ascii")

    @staticmethod
    def _kv(words):
        kv = {}
        for w in words:
            k, sep, v = w.partition("=")
            if not sep or k in kv:
                raise ProtoError("bad pair %r" % w)
            kv[k] = v
        return kv

    def frame(self, timeout=30):
        """('ready', kv) | ('out', stream, bytes) | ('cellend', kv, reply) | ('status', kv)"""
        deadline = time.monotonic() + timeout
        line = self._line(deadline)
        words = line.split(" ")
        if words[0] == "takod-out":
            if len(words) != 3 or words[1] not in ("1", "2") or not words[2].isdigit():
                raise ProtoError("bad out frame %r" % line)
            return ("out", int(words[1]), self._take(int(words[2]), deadline))
        kv = self._kv(words[1:])
        if kv.get("nonce") != self.nonce:
            raise ProtoError("wrong nonce in %r" % line)
        if words[0] == "takod-ready":
            if set(kv) != {"nonce"}:
                raise ProtoError("bad ready %r" % line)
            return ("ready", kv)
        if words[0] == "takod-cellend":
            if list(kv)[:len(CELLEND_KEYS)] != CELLEND_KEYS or \
                    not set(kv) - set(CELLEND_KEYS) <= {"error", "reply_error"}:
                raise ProtoError("bad cellend %r" % line)
            for k in CELLEND_KEYS[:-1]:
                if not re.fullmatch(r"-?[0-9]+", kv[k]):
                    raise ProtoError("bad number %r in %r" % (k, line))
                kv[k] = int(kv[k])
            return ("cellend", kv, self._take(kv["reply"], deadline))
        if words[0] == "takod-status":
            return ("status", kv)
        raise ProtoError("unknown frame %r" % line)

    def ready(self, timeout=60):
        f = self.frame(timeout)
        if f[0] != "ready":
            raise ProtoError("expected ready, got %r" % (f,))

    def start_cell(self, code, stdin=b"", timeout_ms=20000, stdout_cap=65536, stderr_cap=65536):
        self.n += 1
        if isinstance(code, str):
            code = code.encode()
        if isinstance(stdin, str):
            stdin = stdin.encode()
        self.send(b"cell n=%d timeout_ms=%d stdout_cap=%d stderr_cap=%d code=%d stdin=%d\n"
                  % (self.n, timeout_ms, stdout_cap, stderr_cap, len(code), len(stdin))
                  + code + stdin)

    def finish_cell(self, timeout=60):
        out, err = b"", b""
        while True:
            f = self.frame(timeout)
            if f[0] == "out":
                if f[1] == 1:
                    out += f[2]
                else:
                    err += f[2]
                continue
            if f[0] != "cellend":
                raise ProtoError("expected cellend, got %r" % (f,))
            kv, reply = f[1], f[2]
            if kv["n"] != self.n:
                raise ProtoError("cellend for %d, ran %d" % (kv["n"], self.n))
            try:
                parsed = json.loads(reply) if reply else None
            except ValueError:
                parsed = {"status": "unparsed"}  # the program wrote the reply itself
            return {"end": kv, "reply": parsed, "raw_reply": reply, "stdout": out, "stderr": err}

    def cell(self, code, **kw):
        timeout = kw.pop("wait", 60)
        self.start_cell(code, **kw)
        return self.finish_cell(timeout)

    def close(self, timeout=10):
        """EOF: the launcher ends the session. Returns (seconds, frames after EOF)."""
        t0 = time.monotonic()
        try:
            self.p.stdin.close()
        except BrokenPipeError:
            pass
        frames = []
        try:
            while True:
                frames.append(self.frame(timeout))
        except (EOFError, TimeoutError):
            pass
        try:
            self.p.wait(timeout)
        except subprocess.TimeoutExpired:
            pass
        return time.monotonic() - t0, frames

    def destroy(self):
        if self.p.poll() is None:
            subprocess.run(["docker", "rm", "-f", self.name], capture_output=True, timeout=60)
            try:
                self.p.wait(30)
            except subprocess.TimeoutExpired:
                self.p.kill()
        if not self.p.stdout.closed:
            try:
                self.transcript += self.p.stdout.read()
            except (OSError, ValueError):
                pass
        for f in (self.p.stdin, self.p.stdout, self.p.stderr):
            try:
                f.close()
            except OSError:
                pass


@unittest.skipIf(_skip_reason() is not None, _skip_reason() or "")
class LauncherSessionTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.work = tempfile.mkdtemp(prefix="tako-lsess-")
        os.chmod(cls.work, 0o755)
        cls.launcher = os.environ.get("TAKO_LAUNCHER_BIN") or os.path.join(cls.work,
                                                                           "tako-launcher")
        if not os.environ.get("TAKO_LAUNCHER_BIN"):
            subprocess.run([os.environ.get("CC", "gcc"), "-std=c11", "-static", "-O2", "-s",
                            "-Wall", "-Wextra", "-Werror", "-o", cls.launcher, SRC],
                           check=True, timeout=300)
        cls.sessions = []

    @classmethod
    def tearDownClass(cls):
        for s in cls.sessions:
            s.destroy()
        shutil.rmtree(cls.work, ignore_errors=True)

    def session(self, **kw):
        s = Session(self.launcher, self.work, **kw)
        self.track(s)
        s.ready()
        return s

    def track(self, s):
        self.sessions.append(s)
        self.addCleanup(self.check_transcript, s)  # runs after destroy (cleanups are LIFO)
        self.addCleanup(s.destroy)

    def check_transcript(self, s):
        """The host-side C codec (common/session_proto.c) parses what the launcher wrote."""
        tool = os.environ.get("TAKO_SESSION_PROTO_CHECK")
        if not tool:
            return
        p = subprocess.run([tool, s.nonce], input=s.transcript, capture_output=True,
                           timeout=60)
        self.assertEqual(p.returncode, 0, "session_proto_check: %r on %r" %
                         (p.stderr, s.transcript[:300]))
        events = p.stdout.decode().splitlines()
        self.assertEqual(events[:1], ["ready"], events[:5])
        self.assertEqual(sum(e.startswith("cellend ") for e in events), s.n - s.n_unended,
                         events)

    def ok(self, r, value=None):
        self.assertIsNotNone(r["reply"], r)
        self.assertEqual(r["reply"]["status"], "ok", r)
        self.assertEqual(r["reply"]["value"], value, r)
        self.assertEqual(r["end"]["restarted"], 0, r)
        return r

    def error(self, r, etype):
        self.assertIsNotNone(r["reply"], r)
        self.assertEqual(r["reply"]["status"], "error", r)
        self.assertEqual(r["reply"]["error"]["type"], etype, r)
        return r["reply"]["error"]

    def test_state_imports_files(self):
        s = self.session()
        self.ok(s.cell("x = 1"))
        self.ok(s.cell("x += 1"))
        self.ok(s.cell("x"), "2")
        self.ok(s.cell("import math"))
        self.ok(s.cell("math.sqrt(16)"), "4.0")
        self.ok(s.cell("_ * 2"), "8.0")  # the last value is _
        self.ok(s.cell("__name__"), "'__main__'")
        self.ok(s.cell("import os; os.getcwd(), os.getuid()"), "('/output', 1000)")
        self.ok(s.cell("open('f.txt', 'w').write('hello')"), "5")
        self.ok(s.cell("open('f.txt').read()"), "'hello'")
        with open(os.path.join(s.output, "f.txt")) as f:
            self.assertEqual(f.read(), "hello")
        self.ok(s.cell("def f(a):\n    return a * 3\n"))
        self.ok(s.cell("f(14)"), "42")
        self.ok(s.cell("None"))  # a None value is no value
        self.ok(s.cell(""))
        self.ok(s.cell("y = 5\ny"), "5")

    def test_errors(self):
        s = self.session()
        e = self.error(s.cell("x = 1\n1 / 0"), "ZeroDivisionError")
        self.assertEqual(e["message"], "division by zero")
        self.assertTrue(e["traceback"].startswith("Traceback (most recent call last):\n"
                                                  '  File "<cell-1>", line 2'), e)
        self.assertIn("1 / 0", e["traceback"])  # the cell's lines are shown
        self.assertNotIn("tako", e["traceback"])  # no driver frames
        self.ok(s.cell("x"), "1")  # a failing cell then a working one; its state stays
        e = self.error(s.cell("def g():\n    raise ValueError('bad')\n"
                              "try:\n    g()\nexcept ValueError as e:\n    raise KeyError(1) from e"),
                       "KeyError")
        self.assertIn("ValueError: bad", e["traceback"])
        self.assertIn("raise ValueError('bad')", e["traceback"])
        e = self.error(s.cell("x = (1 +\n"), "SyntaxError")
        self.assertIn('File "<cell-4>", line 1', e["traceback"])
        self.assertNotIn("Traceback", e["traceback"])
        e = self.error(s.cell("if True:\nprint(1)"), "IndentationError")
        self.assertIn("expected an indented block", e["message"])
        self.error(s.cell("import sys; sys.exit(4)"), "SystemExit")  # the session lives on
        self.ok(s.cell("x + 1"), "2")
        r = s.cell("class C:\n    def __repr__(self): return 'x' * 200000\nC()")
        self.assertEqual(r["reply"]["value"], "x" * 65536)  # repr capped at 64 KiB
        e = self.error(s.cell("class D:\n    def __repr__(self): raise OSError('no')\nD()"),
                       "OSError")
        self.assertEqual(e["message"], "no")

    def test_output_caps_stdin(self):
        s = self.session()
        r = self.ok(s.cell("import sys\nprint('out')\nprint('err', file=sys.stderr)"))
        self.assertEqual((r["stdout"], r["stderr"]), (b"out\n", b"err\n"))
        self.assertEqual((r["end"]["stdout_bytes"], r["end"]["stderr_bytes"]), (4, 4))
        r = self.ok(s.cell("print('a' * 99999, end='')", stdout_cap=1000))
        self.assertEqual(r["stdout"], b"a" * 1000)
        self.assertEqual((r["end"]["stdout_bytes"], r["end"]["stdout_truncated"]), (99999, 1))
        self.assertEqual(r["end"]["stderr_truncated"], 0)
        r = self.ok(s.cell("import sys; sys.stderr.write('e' * 5000)", stderr_cap=10), "5000")
        self.assertEqual(r["stderr"], b"e" * 10)
        self.assertEqual(r["end"]["stderr_truncated"], 1)
        r = self.ok(s.cell("import sys; sys.stdin.read()", stdin="line1\nline2\n"),
                    repr("line1\nline2\n"))
        self.ok(s.cell("input()", stdin="héllo\n"), "'héllo'")
        self.ok(s.cell("sys.stdin.read()"), "''")  # no stdin: empty
        # a big cell and big stdin pass whole
        big = "z = '" + "q" * 3000000 + "'\nlen(z)"
        self.ok(s.cell(big), "3000000")
        self.ok(s.cell("len(sys.stdin.read())", stdin="w" * 5000000), "5000000")
        # the value of a print-only cell is None and its output is the cell's
        r = self.ok(s.cell("for i in range(3): print(i)"))
        self.assertEqual(r["stdout"], b"0\n1\n2\n")
        # output between cells (a background thread) is dropped, not given to a cell
        self.ok(s.cell("import threading, time\n"
                       "def bg():\n    time.sleep(0.3); print('late')\n"
                       "threading.Thread(target=bg).start()"))
        time.sleep(0.8)
        r = self.ok(s.cell("print('now')"))
        self.assertEqual(r["stdout"], b"now\n")

    def test_timeout_and_interrupt(self):
        s = self.session()
        self.ok(s.cell("x = 7"))
        r = s.cell("while True: pass", timeout_ms=500)
        self.error(r, "KeyboardInterrupt")
        self.assertEqual((r["end"]["timed_out"], r["end"]["restarted"]), (1, 0), r)
        self.ok(s.cell("x"), "7")  # state kept
        r = s.cell("import time\ntime.sleep(30)", timeout_ms=400)
        e = self.error(r, "KeyboardInterrupt")
        self.assertIn("time.sleep(30)", e["traceback"])
        self.assertEqual(r["end"]["timed_out"], 1)
        self.assertLess(r["end"]["end_us"] - r["end"]["start_us"], 3000000)
        # the interrupt line
        s.start_cell("import time\nfor i in range(600): time.sleep(0.05)")
        time.sleep(0.5)
        s.send(b"interrupt\n")
        r = s.finish_cell()
        self.error(r, "KeyboardInterrupt")
        self.assertEqual((r["end"]["interrupted"], r["end"]["timed_out"], r["end"]["restarted"]),
                         (1, 0, 0), r)
        s.send(b"interrupt\n")  # idle: ignored
        self.ok(s.cell("x"), "7")
        # an interrupt right behind the cell, before its code runs, still interrupts it
        s.n += 1
        code = b"import time\ntime.sleep(20)"
        s.send(b"cell n=%d code=%d stdin=0\n%sinterrupt\n" % (s.n, len(code), code))
        r = s.finish_cell()
        self.error(r, "KeyboardInterrupt")
        self.assertEqual((r["end"]["interrupted"], r["end"]["restarted"]), (1, 0), r)
        # interrupts racing a cell's end never reach the next cell
        for i in range(30):
            s.start_cell("x + %d" % i)
            if i % 2:
                time.sleep(0.001 * (i % 5))
            s.send(b"interrupt\n")
            r = s.finish_cell()
            self.assertEqual(r["end"]["restarted"], 0, r)
            self.assertIn(r["reply"]["status"], ("ok", "error"), r)
            self.ok(s.cell("x"), "7")
        # a cell that ignores SIGINT: killed 2 s later, a fresh interpreter
        t0 = time.monotonic()
        r = s.cell("import signal\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\nwhile True: pass",
                   timeout_ms=300)
        self.assertLess(time.monotonic() - t0, 15)
        self.assertIsNone(r["reply"], r)
        self.assertEqual((r["end"]["timed_out"], r["end"]["restarted"], r["end"]["signal"],
                          r["end"]["exit_code"]), (1, 1, 9, 137), r)
        e = self.error(s.cell("x"), "NameError")  # fresh state
        self.ok(s.cell("x = 8; x"), "8")

    def test_crash_restarts(self):
        s = self.session()
        self.ok(s.cell("x = 1\nopen('keep.txt', 'w').write('k')"), "1")
        r = s.cell("import os, sys\nprint('bye'); sys.stdout.flush()\nos._exit(3)")
        self.assertIsNone(r["reply"], r)
        self.assertEqual(r["stdout"], b"bye\n")
        self.assertEqual((r["end"]["exit_code"], r["end"]["signal"], r["end"]["restarted"]),
                         (3, 0, 1), r)
        self.error(s.cell("x"), "NameError")
        self.ok(s.cell("open('keep.txt').read()"), "'k'")  # the workspace stays
        r = s.cell("import os, signal; os.kill(os.getpid(), signal.SIGSEGV)")
        self.assertEqual((r["end"]["signal"], r["end"]["restarted"]), (11, 1), r)
        self.ok(s.cell("1 + 1"), "2")
        # the driver dying between cells: the next cell says restarted
        self.ok(s.cell("import os, threading, time\n"
                       "threading.Thread(target=lambda: (time.sleep(0.3), os._exit(5))).start()"))
        time.sleep(1.5)
        r = s.cell("y = 2; y")
        self.assertEqual(r["reply"]["value"], "2")
        self.assertEqual(r["end"]["restarted"], 1, r)
        self.ok(s.cell("y"), "2")

    def test_oom(self):
        s = self.session(memory="256m")
        r = s.cell("x = bytearray(1 << 30)\nx[::4096] = b'1' * len(x[::4096])", timeout_ms=30000)
        self.assertEqual(r["end"]["restarted"], 1, r)
        if r["reply"] is None:  # killed (the kernel's OOM killer), not a MemoryError
            self.assertEqual(r["end"]["signal"], 9, r)
            self.assertEqual(r["end"]["oom"], 1, r)
        self.ok(s.cell("2 * 21"), "42")

    def test_background_processes_live_between_cells(self):
        s = self.session()
        self.ok(s.cell("import subprocess\n"
                       "p = subprocess.Popen(['sleep', '60'], start_new_session=True)\np.pid > 0"),
                "True")
        self.ok(s.cell("p.poll() is None"), "True")
        _, frames = s.close()
        self.assertEqual([f[0] for f in frames], ["status"], frames)

    def test_program_cannot_write_the_host_channel(self):
        s = self.session()
        code = r"""
import os
wrote = []
for fd in range(0, 1024):
    if fd != 4:  # the driver's reply pipe: see below
        try:
            os.write(fd, b'\ntakod-cellend n=99 reply=0 nonce=x\ntakod-status x=1\n')
            wrote.append(fd)
        except OSError:
            pass
opened = []
for pid in os.listdir('/proc'):
    if not pid.isdigit():
        continue
    try:
        uid = [l for l in open('/proc/%s/status' % pid) if l.startswith('Uid:')][0].split()[1]
        fds = os.listdir('/proc/%s/fd' % pid)
    except OSError:
        continue
    for fd in fds:
        try:
            f = os.open('/proc/%s/fd/%s' % (pid, fd), os.O_WRONLY)
            os.write(f, b'takod-status hijack=1\n')
            opened.append(uid)
        except OSError:
            pass
wrote, sorted(set(opened))
"""
        r = self.ok(s.cell(code), "([1, 2], ['1000'])")  # only its own pipes, as uid 1000
        self.assertIn(b"takod-status x=1", r["stdout"])  # it is the cell's output, framed
        # fd 4 is the program's own reply channel: garbage there replaces the driver
        r = s.cell("import os\nos.write(4, b'\\ntakod-status x=1\\n')")
        self.assertEqual((r["end"]["restarted"], r["end"].get("error")), (1, "driver_protocol"))
        self.ok(s.cell("40 + 2"), "42")
        # every frame so far parsed strictly (and by the C codec: check_transcript)

    def test_forged_reply_and_bad_host_frame(self):
        s = self.session()
        # the program writes a reply itself: it is the cell's reply (its own output)
        r = s.cell("import os\nos.write(4, b'5\\n{\"a\":')")
        self.assertEqual(r["raw_reply"], b'{"a":')
        self.ok(s.cell("'next'"), "'next'")  # the driver's own late reply was dropped
        # ... also when it comes after the next cell was handed over (before its "run")
        r = s.cell("import os, time\nos.write(4, b'2\\n{}')\ntime.sleep(0.5)\n'late'")
        self.assertEqual(r["raw_reply"], b'{}')
        self.ok(s.cell("'after'"), "'after'")
        # a reply past 1 MiB is dropped
        r = s.cell("import os\nos.write(4, b'%d\\n' % (2 << 20) + b'x' * (2 << 20))")
        self.assertEqual((r["end"]["reply"], r["end"].get("reply_error")), (0, "too_big"), r)
        self.ok(s.cell("1"), "1")
        s.send(b"cell n=9 code=abc stdin=0\n")
        f = s.frame()
        self.assertEqual(f[0], "status")
        self.assertEqual(f[1].get("error"), "bad_cell")
        s.p.wait(10)

    def test_eof_ends_quickly(self):
        s = self.session()
        self.ok(s.cell("import subprocess\nsubprocess.Popen(['sleep', '100'])\n1"), "1")
        s.start_cell("import time\ntime.sleep(100)")
        s.n_unended += 1
        time.sleep(0.3)
        took, frames = s.close()
        self.assertLess(took, 2.0)
        self.assertEqual(frames[-1][0], "status", frames)
        self.assertNotIn("error", frames[-1][1])
        self.assertEqual(s.p.returncode, 0)
        out = subprocess.run(["docker", "ps", "-aq", "--filter", "name=" + s.name],
                             capture_output=True, text=True, timeout=30).stdout
        self.assertEqual(out.strip(), "")

    def test_preload_and_go_line_leftover(self):
        # TAKO_PRELOAD applies to the driver; a cell sent with the go line is not lost
        s = Session(self.launcher, self.work, env={"TAKO_PRELOAD": "json,decimal"})
        self.track(s)
        s.start_cell("import sys; 'json' in sys.modules, 'decimal' in sys.modules")
        s.ready()
        self.ok(s.finish_cell(), "(True, True)")

    def test_job_mode_unchanged(self):
        # a go line without session=1 is a version-1 job
        d = tempfile.mkdtemp(dir=self.work)
        for sub in ("ctl", "output", "code", "input"):
            os.mkdir(os.path.join(d, sub))
        os.chown(os.path.join(d, "output"), 1000, 1000)  # /ctl is root's, as takod makes it
        with open(os.path.join(d, "code", "main.py"), "w") as f:
            f.write("import os\nprint('hi', sorted(os.listdir('/proc/self/fd')))\n")
        name = "%s-job" % PREFIX
        p = subprocess.run(
            ["docker", "run", "-i", "--rm", "--name", name, "--user", "0:0", "--cap-drop", "ALL",
             "--cap-add", "SETUID", "--cap-add", "SETGID", "--cap-add", "KILL",
             "--network", "none", "--read-only", "--init",
             "-v", "%s/ctl:/ctl" % d, "-v", "%s/output:/output" % d, "-v", "%s/code:/code:ro" % d,
             "-v", "%s/input:/input:ro" % d,
             "-v", "%s:/usr/local/bin/tako-launcher:ro" % self.launcher, IMAGE,
             "/usr/local/bin/tako-launcher", "--stdio", "--user", "1000:1000"],
            input=b"timeout_ms=10000 nonce=abc\n", capture_output=True, timeout=60)
        rest, out = p.stdout, b""
        while rest.startswith(b"takod-out 1 "):
            head, rest = rest.split(b"\n", 1)
            n = int(head.split()[2])
            out, rest = out + rest[:n], rest[n:]
        self.assertEqual(out, b"hi ['0', '1', '2', '3']\n")  # no fd 4 left to the program
        self.assertRegex(p.stdout, rb"\ntakod-status exit_code=0 [^\n]* nonce=abc\n$")
        self.assertNotIn(b"error=", p.stdout)
        # session=1 needs a nonce
        p = subprocess.run(
            ["docker", "run", "-i", "--rm", "--name", name, "--user", "0:0", "--cap-drop", "ALL",
             "--cap-add", "SETUID", "--cap-add", "SETGID", "--cap-add", "KILL",
             "--network", "none", "--read-only", "--init", "-v", "%s/ctl:/ctl" % d,
             "-v", "%s:/usr/local/bin/tako-launcher:ro" % self.launcher, IMAGE,
             "/usr/local/bin/tako-launcher", "--stdio", "--user", "1000:1000"],
            input=b"session=1\n", capture_output=True, timeout=60)
        self.assertRegex(p.stdout, rb"takod-status exit_code=-1 .*error=bad_go_line")


if __name__ == "__main__":
    unittest.main()
