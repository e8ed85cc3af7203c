"""
The executor's sandbox, one test per limit and defence, through the real takod and
dockerd: timeout, memory, fork bomb, output floods, /output caps, symlinks, network,
filesystem, uid and capabilities, seccomp, cancel, isolation between concurrent jobs,
warm containers, and gVisor (runsc).
"""
import concurrent.futures
import json
import subprocess
import threading
import time
import unittest

from harness import CRUN, WARM_CONTAINERS, Takod


def code_result(lines):
    """Python source that runs `lines` and dumps the dict `res` to result.json."""
    return "import json, os\nres = {}\n" + lines + "\njson.dump(res, open('/output/result.json', 'w'))\n"


class Sandbox(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.t = Takod("limits.memory=128m", executors=2).start()

    @classmethod
    def tearDownClass(cls):
        cls.t.cleanup()

    def test_timeout_ends_near_the_limit(self):
        r = self.t.execute("import time\nwhile True: time.sleep(0.1)", timeout=2)
        self.assertEqual(r["status"], "timeout")
        self.assertEqual(r["exit_code"], 124)
        # the launcher stops it at the limit (TERM, KILL 1 s later at most)
        self.assertLess(r["timing"]["execution_ms"], 2000 + 1500)
        self.assertGreaterEqual(r["timing"]["execution_ms"], 1900)

    def test_timeout_even_when_term_is_ignored(self):
        r = self.t.execute("import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
                           "time.sleep(30)", timeout=1)
        self.assertEqual(r["status"], "timeout")
        self.assertLess(r["timing"]["execution_ms"], 1000 + 2500)

    def test_memory_bomb_is_oom(self):
        r = self.t.execute("x = []\nwhile True: x.append(bytearray(16 << 20))", timeout=30)
        self.assertEqual(r["status"], "oom", r)
        self.assertEqual(r["error_type"], "oom")
        self.assertFalse(r["success"])

    def test_fork_bomb_is_contained_and_the_next_job_is_fine(self):
        r = self.t.execute(
            "import os, time\npids = 0\ntry:\n    while True:\n        if os.fork() == 0:\n"
            "            time.sleep(30)\n            os._exit(0)\n        pids += 1\n"
            "except OSError as e:\n    print('fork failed after', pids, e.errno)\n", timeout=10)
        self.assertIn("fork failed after", r["stdout"])
        n = int(r["stdout"].split()[3])
        self.assertLess(n, 100)  # limits.pids
        nxt = self.t.execute("print('fine')")
        self.assertEqual((nxt["success"], nxt["stdout"]), (True, "fine\n"))

    def test_stdout_flood_is_capped_with_the_flag(self):
        r = self.t.execute("import sys\nfor _ in range(100):\n    sys.stdout.write('y' * 100000)\n"
                           "sys.stderr.write('e' * 70000)")
        self.assertTrue(r["success"])
        self.assertEqual(len(r["stdout"]), 65536)
        self.assertEqual(len(r["stderr"]), 65536)
        self.assertTrue(r["stdout_truncated"])
        self.assertTrue(r["stderr_truncated"])
        self.assertEqual(r["error_type"], "output_limit")

    def test_huge_output_file_is_capped(self):
        r = self.t.execute(code_result(
            "try:\n    with open('/output/big.bin', 'wb') as f:\n"
            "        for _ in range(200):\n            f.write(b'z' * (1 << 20))\n"
            "    res['wrote'] = True\nexcept OSError as e:\n    res['errno'] = e.errno\n"
            "open('/output/small.txt', 'w').write('ok')"), timeout=60)
        # the file size limit stops the write (EFBIG), and nothing over the caps is kept
        self.assertEqual(r["output"], {"errno": 27})
        names = {a["name"]: a["size_bytes"] for a in r["artifacts"]}
        self.assertEqual(names.get("small.txt"), 2)
        self.assertNotIn("big.bin", names)

    def test_symlink_artifacts_are_not_followed(self):
        r = self.t.execute(
            "import os\nos.symlink('/etc/passwd', '/output/passwd')\n"
            "os.symlink('/output/real.txt', '/output/link.txt')\n"
            "open('/output/real.txt', 'w').write('real')\nos.mkdir('/output/sub')\n"
            "open('/output/sub/inner.txt', 'w').write('x')\nopen('/output/.hidden', 'w').write('h')\n"
            "os.symlink('/etc/shadow', '/output/result.json')\n")
        self.assertTrue(r["success"], r)
        self.assertEqual([a["name"] for a in r["artifacts"]], ["real.txt"])
        self.assertIsNone(r["output"])
        self.assertNotIn("root:", json.dumps(r))

    def test_network_is_blocked(self):
        r = self.t.execute(code_result(
            "import socket\nfor host in [('1.1.1.1', 53), ('172.17.0.1', 2375)]:\n"
            "    try:\n        socket.create_connection(host, timeout=2)\n"
            "        res[host[0]] = 'open'\n    except OSError as e:\n        res[host[0]] = 'blocked'\n"
            "res['ifaces'] = sorted(os.listdir('/sys/class/net'))"))
        self.assertEqual(r["output"], {"1.1.1.1": "blocked", "172.17.0.1": "blocked", "ifaces": ["lo"]})

    def test_writes_outside_output_and_tmp_fail(self):
        r = self.t.execute(code_result(
            "for p in ['/etc/x', '/usr/x', '/code/x', '/input/x', '/home/x', '/x']:\n"
            "    try:\n        open(p, 'w').write('x'); res[p] = 'written'\n"
            "    except OSError:\n        res[p] = 'denied'\n"
            "open('/tmp/ok', 'w').write('ok'); res['/tmp'] = 'written'\n"
            "import subprocess\nopen('/tmp/s.sh', 'w').write('#!/bin/sh\\necho hi\\n')\nos.chmod('/tmp/s.sh', 0o755)\n"
            "try:\n    subprocess.run(['/tmp/s.sh']); res['tmp_exec'] = 'ran'\n"
            "except OSError:\n    res['tmp_exec'] = 'denied'"))
        out = r["output"]
        self.assertEqual({k: v for k, v in out.items() if k.startswith("/") and k != "/tmp"},
                         {p: "denied" for p in ['/etc/x', '/usr/x', '/code/x', '/input/x', '/home/x', '/x']})
        self.assertEqual(out["/tmp"], "written")
        self.assertEqual(out["tmp_exec"], "denied")  # /tmp is noexec

    def test_uid_and_capabilities(self):
        r = self.t.execute(code_result(
            "st = dict(l.split(':\\t', 1) for l in open('/proc/self/status').read().splitlines() if ':\\t' in l)\n"
            "res.update(uid=os.getuid(), gid=os.getgid(), capeff=st['CapEff'].strip(),\n"
            "           capprm=st['CapPrm'].strip(), nnp=st['NoNewPrivs'].strip(), seccomp=st['Seccomp'].strip())"))
        self.assertEqual(r["output"], {"uid": 1000, "gid": 1000, "capeff": "0000000000000000",
                                       "capprm": "0000000000000000", "nnp": "1", "seccomp": "2"})

    def test_seccomp_blocks_unshare_and_keyctl(self):
        r = self.t.execute(code_result(
            "import ctypes, errno\nlibc = ctypes.CDLL(None, use_errno=True)\n"
            "def call(nr, *args):\n    rc = libc.syscall(nr, *args)\n"
            "    return 'ok' if rc >= 0 else errno.errorcode[ctypes.get_errno()]\n"
            "res['unshare_user'] = call(272, 0x10000000)\nres['keyctl'] = call(250, 0, -3)\n"
            "res['ptrace'] = call(101, 0, 0, 0, 0)\nres['bpf'] = call(321, 0, 0, 0)\n"
            "res['io_uring_setup'] = call(425, 1, 0)\nres['getpid'] = call(39)"))
        self.assertEqual(r["output"], {"unshare_user": "EPERM", "keyctl": "EPERM", "ptrace": "EPERM",
                                       "bpf": "EPERM", "io_uring_setup": "EPERM", "getpid": "ok"})

    def test_the_32_bit_syscall_abi_is_closed(self):
        # int 0x80 from a 64-bit process: no 32-bit architecture in the seccomp filter, so
        # the kernel kills the caller (SIGSYS) instead of running i386 getpid
        r = self.t.execute(
            "import ctypes, mmap\n"
            "code = bytes([0xb8, 20, 0, 0, 0, 0xcd, 0x80, 0xc3])  # mov eax, 20; int 0x80; ret\n"
            "m = mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)\n"
            "m.write(code)\n"
            "f = ctypes.CFUNCTYPE(ctypes.c_int)(ctypes.addressof(ctypes.c_char.from_buffer(m)))\n"
            "print('i386 getpid', f())\n")
        self.assertEqual((r["status"], r["stdout"], r["exit_code"]), ("failed", "", 128 + 31), r)

    def test_threads_and_multiprocessing_work(self):
        r = self.t.execute(
            "import multiprocessing, threading\n"
            "def sq(x):\n    return x * x\n"
            "if __name__ == '__main__':\n"
            "    with multiprocessing.Pool(2) as p:\n        print(sum(p.map(sq, range(10))))\n"
            "    t = threading.Thread(target=print, args=('thread',)); t.start(); t.join()\n")
        self.assertTrue(r["success"], r)
        self.assertEqual(r["stdout"], "285\nthread\n")

    def test_cancel_kills_the_running_program(self):
        box = {}
        th = threading.Thread(target=lambda: box.setdefault("r", self.t.request(
            "POST", "/execute", {"code": "import os, time\nos.write(1, b'started\\n')\ntime.sleep(60)"})))
        th.start()
        job_id = self.t.wait_running()[0][0]
        # "running" is recorded as its container gets the job: let the program print its
        # line first (one write: print's two could be cut between them)
        time.sleep(0.5)
        t0 = time.time()
        c = self.t.request("POST", f"/jobs/{job_id}/cancel")
        self.assertEqual(c.status, 200)
        self.assertEqual(c.json(), {"status": "cancelled", "job_id": job_id})
        th.join(30)
        r = box["r"].json()
        self.assertEqual((r["status"], r["error_type"]), ("cancelled", "cancelled"))
        self.assertEqual(r["stdout"], "started\n")
        self.assertLess(time.time() - t0, 10)
        rows = self.t.sql(f"SELECT status FROM jobs WHERE id = '{job_id}'")
        self.assertEqual(rows, [["cancelled"]])
        # finished jobs and unknown ids: 404
        self.assertEqual(self.t.request("POST", f"/jobs/{job_id}/cancel").status, 404)
        self.assertEqual(self.t.request("POST", "/jobs/not-a-uuid/cancel").status, 404)
        self.assertEqual(self.t.request("GET", f"/jobs/{job_id}/cancel").status, 405)

    def test_concurrent_jobs_each_see_only_their_own_input(self):
        code = code_result(
            "d = json.load(open('/input/data.json'))\nres['n'] = d['n']\n"
            "res['seen'] = sorted(os.listdir('/input')) + sorted(os.listdir('/output'))\n"
            "open('/output/mine-%d.txt' % d['n'], 'w').write(str(d['n']))")
        with concurrent.futures.ThreadPoolExecutor(24) as ex:
            rs = list(ex.map(lambda n: self.t.execute(code, input_data={"n": n}), range(24)))
        for n, r in enumerate(rs):
            self.assertEqual(r["output"], {"n": n, "seen": ["data.json"]}, r)
            self.assertEqual([a["name"] for a in r["artifacts"]], [f"mine-{n}.txt"])

    def test_containers_are_warm_and_never_reused(self):
        # every executor holds its prepared containers; each job gets a fresh one
        self.t.wait_for(lambda: len(self.t.containers()) == 2 * WARM_CONTAINERS,
                        what="the warm containers")
        ids = set()
        for _ in range(4):
            # the host name is the container's (the engine's id; the OCI backend's hash of its
            # id): /proc/self/cgroup no longer names it once the cgroup namespace is private
            r = self.t.execute("import socket\nprint(socket.gethostname())")
            ids.add(r["stdout"])
        self.assertEqual(len(ids), 4)
        r = self.t.execute("print(1)")
        self.assertLess(r["timing"]["startup_ms"], 50)  # no container start on the path


HARDENING_PROBE = code_result(
    "st = dict(l.split(':\\t', 1) for l in open('/proc/self/status').read().splitlines() if ':\\t' in l)\n"
    "res.update(uid=os.getuid(), capeff=st['CapEff'].strip(), nnp=st['NoNewPrivs'].strip(),\n"
    "           seccomp=st['Seccomp'].strip())\n"
    "import ctypes, errno\nlibc = ctypes.CDLL(None, use_errno=True)\n"
    "res['unshare'] = errno.errorcode.get(ctypes.get_errno()) if libc.unshare(0x10000000) else 'ok'\n"
    "try:\n    open('/etc/x', 'w')\nexcept OSError as e:\n    res['rootfs'] = errno.errorcode[e.errno]\n")
HARDENED = {"uid": 1000, "capeff": "0000000000000000", "nnp": "1", "seccomp": "2",
            "unshare": "EPERM", "rootfs": "EROFS"}


class Runtimes(unittest.TestCase):
    """docker.runtime: runc and crun give the same defences (runsc: Gvisor below)."""

    def check(self, runtime):
        t = Takod(f"docker.runtime={runtime}", "limits.memory=64m", executors=1, acceptors=1)
        try:
            t.start()
            self.assertEqual(t.request("GET", "/health").json()["runtime"], runtime)
            r = t.execute(HARDENING_PROBE)
            self.assertEqual((r["runtime"], r["output"]), (runtime, HARDENED), r)
            r = t.execute("x = bytearray(256 << 20)\nprint(len(x))")
            self.assertEqual(r["status"], "oom", r)
            r = t.execute("import time\ntime.sleep(30)", timeout=1)
            self.assertEqual(r["status"], "timeout", r)
            r = t.execute("import os, time\nn = 0\ntry:\n    while n < 400:\n"
                          "        if os.fork() == 0:\n            time.sleep(5)\n            os._exit(0)\n"
                          "        n += 1\nexcept OSError:\n    pass\nprint(n)\n")
            self.assertTrue(50 < int(r["stdout"]) < 100, r)  # limits.pids = 100 holds
            self.assertEqual(t.sql(f"SELECT runtime FROM jobs WHERE id = '{r['execution_id']}'"),
                             [[runtime]])
        finally:
            t.cleanup()

    def test_runc(self):
        self.check("runc")

    @unittest.skipUnless(CRUN, "crun is not registered with the engine (scripts/setup-runtime.sh crun)")
    def test_crun(self):
        self.check("crun")


class Gvisor(unittest.TestCase):
    def test_runsc_path(self):
        info = subprocess.run(["docker", "info", "--format", "{{json .Runtimes}}"],
                              capture_output=True, text=True, timeout=30).stdout
        self.assertIn("runsc", info, "scripts/setup-gvisor.sh should have registered runsc")
        t = Takod("docker.runtime=runsc", "docker.security_mode=strict", executors=1, acceptors=1)
        try:
            t.start()
            r = t.execute(code_result(
                "import platform\nres['kernel'] = platform.release()\nres['uid'] = os.getuid()\n"
                "open('/output/a.txt', 'w').write('a')"))
            self.assertTrue(r["success"], r)
            self.assertEqual(r["runtime"], "runsc")
            self.assertEqual(r["output"]["uid"], 1000)
            self.assertNotEqual(r["output"]["kernel"], subprocess.run(
                ["uname", "-r"], capture_output=True, text=True).stdout.strip())  # gVisor's kernel
            self.assertEqual([a["name"] for a in r["artifacts"]], ["a.txt"])
            r = t.execute("import time\ntime.sleep(30)", timeout=1)
            self.assertEqual(r["status"], "timeout")
            rows = t.sql(f"SELECT runtime FROM jobs WHERE id = '{r['execution_id']}'")
            self.assertEqual(rows, [["runsc"]])
        finally:
            t.cleanup()

    def test_strict_without_runsc_refuses_to_start(self):
        t = Takod("docker.security_mode=strict", executors=1, acceptors=1)
        try:
            with self.assertRaises(AssertionError) as cm:
                t.start(timeout=60)
            self.assertEqual(t.proc.returncode, 2)
            self.assertIn("strict requires docker.runtime = runsc", str(cm.exception))
        finally:
            t.cleanup()


if __name__ == "__main__":
    unittest.main()
