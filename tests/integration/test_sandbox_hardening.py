"""
Issue #15's sandbox items, through the real takod, dockerd and PostgreSQL, under every
runtime (runc, crun, runsc):

  4. the launcher's report channel (its stdout, the attach stream) cannot be reached by
     the job: not through /proc/1/fd, /proc/<pid>/fd, /proc/self/../1, inherited fds or
     /ctl — a forged status or live-output header is impossible, the result is the real one;
  5. live output (SSE) is capped by the same limit as stdout/stderr;
  6. every path but /tmp and /output is read-only for the job (a walk of the whole
     filesystem tries to create a file in every directory);
 10. an exception message that is not valid UTF-8 after truncation keeps its message.
"""
import json
import subprocess
import unittest

from harness import CRUN, Takod

# Tries every way to the launcher's report channel and writes a forged status line, a
# forged live-output header (that would swallow the real status) and 1.2 MB of forged
# live output wherever it gets; then prints the real output.
FORGE = r'''
import glob, json, os, sys
forged = b'\ntakod-status exit_code=0 signal=0 timed_out=0 oom=0 stdout_bytes=6 stderr_bytes=0 start_us=1 end_us=2 nonce=x\n'
flood = (b'\ntakod-out 1 60000\n' + b'F' * 60000) * 20
header = b'\ntakod-out 1 1000000\n'
opened = []
me = str(os.getpid())
null = os.stat('/dev/null').st_rdev
mem = []  # the launcher's memory holds the nonce
for p in glob.glob('/proc/[0-9]*/mem'):
    if p.split('/')[2] != me:
        try:
            with open(p, 'rb') as f:
                mem.append(p)
        except OSError:
            pass
paths = ['/proc/1/fd/0', '/proc/1/fd/1', '/proc/1/fd/2', '/proc/self/../1/fd/1',
         '/proc/1/mem', '/proc/1/environ', '/proc/1/cwd/x', '/proc/1/root/tmp/x']
paths += [p for p in glob.glob('/proc/[0-9]*/fd/*') + glob.glob('/proc/[0-9]*/task/*/fd/*')
          if p.split('/')[2] != me]
for p in paths:
    try:
        fd = os.open(p, os.O_WRONLY | os.O_NOCTTY | os.O_NONBLOCK)
    except OSError:
        continue
    if os.fstat(fd).st_rdev == null:  # gVisor lists the launcher's /dev/null: no channel
        os.close(fd)
        continue
    opened.append(p)
    for data in (forged, flood, header):
        try:
            os.write(fd, data)
        except OSError:
            pass
    os.close(fd)
wrote = []
for fd in range(3, 256):  # anything inherited
    try:
        os.write(fd, forged)
        wrote.append(fd)
    except OSError:
        pass
ctl = []
for name in ('status', 'status.tmp', 'stdout', 'done', 'x'):
    try:
        with open('/ctl/' + name, 'w') as f:
            f.write('exit_code=0 timed_out=0')
        ctl.append(name)
    except OSError:
        pass
sys.stdout.buffer.write(forged)  # its own stdout is framed: harmless text
sys.stdout.flush()
print(json.dumps({'opened': opened, 'wrote': wrote, 'ctl': ctl, 'mem': mem}))
print('the real output')
'''

# Walks the filesystem as the job's user and tries to create a file in every directory.
WALK = r'''
import json, os, stat
writable = []
def walk(d, depth):
    try:
        fd = os.open(os.path.join(d, '.tako-probe'), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.close(fd)
        os.unlink(os.path.join(d, '.tako-probe'))
        writable.append(d)
    except OSError:
        pass
    if depth > 12:
        return
    try:
        names = os.listdir(d)
    except OSError:
        return
    for n in names:
        p = os.path.join(d, n)
        if d == '/proc' and (n.isdigit() or n in ('self', 'thread-self')):
            continue  # the processes: their own dirs, not paths of the filesystem
        try:
            st = os.lstat(p)
        except OSError:
            continue
        if stat.S_ISDIR(st.st_mode):
            walk(p, depth + 1)
walk('/', 0)
print(json.dumps(writable))
'''


def read_events(t, job_id, timeout=120):
    status, _, events = t.events(job_id, timeout)
    assert status == 200, status
    return events


class _PerRuntime:
    runtime = None

    @classmethod
    def setUpClass(cls):
        if cls.runtime == "crun" and not CRUN:
            raise unittest.SkipTest("crun does not run containers here")
        if cls.runtime == "runsc":
            info = subprocess.run(["docker", "info", "--format", "{{json .Runtimes}}"],
                                  capture_output=True, text=True, timeout=30).stdout
            if "runsc" not in info:
                raise unittest.SkipTest("runsc is not registered")
        cls.t = Takod(f"docker.runtime={cls.runtime}", executors=1, acceptors=1).start()

    @classmethod
    def tearDownClass(cls):
        cls.t.cleanup()

    # ---- item 4 ----
    def test_report_channel_is_unreachable_and_the_result_is_real(self):
        r = self.t.execute(FORGE, timeout=60)
        self.assertEqual(r["runtime"], self.runtime)
        self.assertEqual((r["status"], r["exit_code"], r["error_type"]), ("succeeded", 0, None), r)
        lines = r["stdout"].splitlines()
        self.assertEqual(lines[-1], "the real output")
        got = json.loads(lines[-2])
        self.assertEqual(got, {"opened": [], "wrote": [], "ctl": [], "mem": []})
        self.assertFalse(r["stdout_truncated"])

    # ---- item 5 ----
    def test_live_output_is_capped_like_stdout(self):
        code = ("import os, sys, time\ntime.sleep(2)\n"
                "sys.stdout.write('o' * 200000)\nsys.stdout.flush()\n"
                "sys.stderr.write('e' * 200000)\nsys.stderr.flush()\n" +
                # only the forged live output, no forged status that would end the stream
                FORGE.replace("for data in (forged, flood, header):", "for data in (flood,):"))
        job = self.t.request("POST", "/execute/async", {"code": code, "timeout": 60}).json()["job_id"]
        events = read_events(self.t, job)
        live_out = "".join(d for e, d in events if e == "stdout")
        live_err = "".join(d for e, d in events if e == "stderr")
        self.assertGreater(len(live_out), 0)
        self.assertLessEqual(len(live_out), 65536)  # limits.max_stdout_bytes
        self.assertLessEqual(len(live_err), 65536)  # limits.max_stderr_bytes
        self.assertNotIn("F", live_out)
        result = events[-1][1]
        self.assertEqual(result["status"], "succeeded", result)
        self.assertEqual(len(result["stdout"]), 65536)
        self.assertTrue(result["stdout_truncated"])

    def test_live_output_never_splits_a_character(self):
        # odd offsets and 2-, 3- and 4-byte characters across the launcher's reads and
        # the executor's 4 KiB chunks: live output is the same text as stdout
        text = "x" + "\u00e9" * 3000 + "\u20ac" * 2000 + "\U0001F600" * 1500
        code = ("import sys, time\ntime.sleep(2)\n"
                f"t = {text!r}\n"
                "for i in range(0, len(t), 2777):\n"
                "    sys.stdout.write(t[i:i + 2777]); sys.stdout.flush(); time.sleep(0.01)\n")
        job = self.t.request("POST", "/execute/async", {"code": code, "timeout": 60}).json()["job_id"]
        events = read_events(self.t, job)
        live_out = "".join(d for e, d in events if e == "stdout")
        self.assertEqual(events[-1][1]["stdout"], text)
        self.assertEqual(live_out.count("\ufffd"), 0)  # no character cut in two
        self.assertTrue(live_out == text, "live output differs from stdout")

    # ---- item 6 ----
    def test_only_tmp_and_output_are_writable(self):
        r = self.t.execute(WALK, timeout=120)
        self.assertEqual(r["status"], "succeeded", r)
        writable = json.loads(r["stdout"])
        # /dev/shm: the job's own private IPC namespace's shared memory (ShmSize), which
        # multiprocessing needs (docs/SECURITY.md); nothing else outside /tmp and /output
        ok = ("/tmp", "/output", "/dev/shm")
        bad = [d for d in writable if not (d in ok or d.startswith(tuple(o + "/" for o in ok)))]
        self.assertEqual(bad, [], f"writable under {self.runtime}")
        self.assertIn("/tmp", writable)
        self.assertIn("/output", writable)


class Runc(_PerRuntime, unittest.TestCase):
    runtime = "runc"


class Crun(_PerRuntime, unittest.TestCase):
    runtime = "crun"


class Runsc(_PerRuntime, unittest.TestCase):
    runtime = "runsc"


class ErrorText(unittest.TestCase):
    """Item 10: an exception's message that is not valid UTF-8 once cut keeps its text."""

    @classmethod
    def setUpClass(cls):
        cls.t = Takod(executors=1, acceptors=1).start()

    @classmethod
    def tearDownClass(cls):
        cls.t.cleanup()

    def test_long_non_ascii_message_is_cut_on_a_character(self):
        r = self.t.execute("raise ValueError('\u00e9' * 1000)")
        self.assertEqual((r["status"], r["error_type"]), ("failed", "value_error"), r)
        self.assertIsNotNone(r["error"])
        self.assertTrue(r["error"].startswith("ValueError: \u00e9\u00e9\u00e9"), r["error"])
        self.assertNotIn("\ufffd", r["error"])  # cut between characters, none broken
        self.assertLessEqual(len(r["error"].encode()), 511)
        rec = self.t.request("GET", f"/jobs/{r['execution_id']}").json()
        self.assertEqual(rec.get("error", r["error"]), r["error"])

    def test_invalid_bytes_in_the_message_are_replaced(self):
        r = self.t.execute(
            "import sys\nsys.stderr.buffer.write(b'Traceback (most recent call last):\\n"
            "  File \"/code/main.py\", line 1\\nValueError: bad \\xff\\xfe bytes \\xe9\\n')\n"
            "sys.exit(1)")
        self.assertEqual(r["status"], "failed", r)
        self.assertEqual(r["error"], "ValueError: bad \ufffd\ufffd bytes \ufffd")

    def test_four_byte_characters_at_the_cut(self):
        # "RuntimeError: xy" is 16 bytes: 511 - 16 is no multiple of 4, the cut falls mid-character
        r = self.t.execute("raise RuntimeError('xy' + '\U0001F600' * 300)")
        self.assertIsNotNone(r["error"], r)
        self.assertTrue(r["error"].startswith("RuntimeError: xy\U0001F600"))
        self.assertEqual(len(r["error"].encode()), 16 + 4 * 123)
        self.assertNotIn("\ufffd", r["error"])


if __name__ == "__main__":
    unittest.main()
