#!/usr/bin/env python3
"""takod job latency and throughput benchmark, with two Docker baselines.

One run measures, on this machine:

  1. takod, once per executor backend (--backends, default docker,oci: the Docker Engine
     API, or the OCI runtime straight on a bundle), each with its own takod
     (`-o executor.backend=B`), the same image and settings, phases 1a-1d in order:
  1a. concurrency 1 at offered rates below the machine's capacity (--rates, default 4
     and 8 jobs/s): the latency a client sees when the server is not saturated.
  1b. `print(1)` through POST /execute at concurrency 1, back to back (N requests after
     a warm-up): client-observed p50/p90/p99/mean, the p50/p99 of the server's own
     timing fields (queue_ms, startup_ms, execution_ms, total_ms), and CPU per job.
  1c. the paced diagnostic (1 s idle after each reply).
  1d. throughput (jobs/s), closed loop, at concurrency 1, 2, 4, 8 with
     server.executors = --executors (default 4), plus concurrency 8 with
     server.executors = 8 (on by default; --no-exec8), each with CPU per job.
  2. Baseline A: a cold `docker run --rm --network none IMAGE python3 -c 'print(1)'`:
     p50/p99 at concurrency 1 and throughput at 1, 2, 4, 8 (once, not per backend).
  3. Baseline B: the raw Docker Engine API cycle create/start/wait/logs/rm over
     /var/run/docker.sock (API v1.41), same image and command, NetworkMode none.
  CPU per job, in every window: the whole machine (/proc/stat, all processes);
  takod's own (the master and its descendants named takod*, see CpuProbe: never the
  OCI runtime or the containers, which are the executors' children); the managed
  PostgreSQL; the runtime and containers under takod; dockerd + containerd.
  The report ends with issue #17's targets, the OCI backend beside the Docker backend.

Python 3 standard library only. Talks to 127.0.0.1 and the Docker unix socket only.
Every loop is bounded in count and in time. Run as root (docker socket, /proc of root
processes). `--quick` is a smoke run of under three minutes; `--json FILE` also writes
the raw numbers.
"""

import argparse
import datetime
import hashlib
import http.client
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.abspath(os.path.join(HERE, "..", ".."))
CLK_TCK = os.sysconf("SC_CLK_TCK")
LABEL = "takod.bench"
CODE = "print(1)"
EXPECTED_STDOUT = "1\n"
API = "/v1.41"
ERROR_BACKOFF_S = 0.25


# ---------------------------------------------------------------------------- helpers

def log(msg):
    print("[%s] %s" % (time.strftime("%H:%M:%S"), msg), file=sys.stderr, flush=True)


def pct(values, p):
    """Percentile with linear interpolation between closest ranks (numpy's default)."""
    if not values:
        return None
    s = sorted(values)
    if len(s) == 1:
        return s[0]
    k = (len(s) - 1) * p / 100.0
    lo = int(k)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def summary(values):
    if not values:
        return {"n": 0}
    return {
        "n": len(values),
        "p50": pct(values, 50),
        "p90": pct(values, 90),
        "p99": pct(values, 99),
        "mean": sum(values) / len(values),
        "min": min(values),
        "max": max(values),
    }


def fmt(v, nd=1):
    if v is None:
        return "-"
    return ("%." + str(nd) + "f") % v


def free_port():
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


# ---------------------------------------------------------------------------- /proc

def read_stat(pid):
    """(comm, ppid, utime+stime ticks, cutime+cstime ticks) of a pid, or None if it is
    gone. The last is what its reaped children (and theirs) spent."""
    try:
        with open("/proc/%d/stat" % pid, "rb") as f:
            data = f.read().decode("utf-8", "replace")
    except OSError:
        return None
    lp = data.index("(")
    rp = data.rindex(")")
    comm = data[lp + 1:rp]
    rest = data[rp + 2:].split()
    # rest[0] = state (field 3), rest[1] = ppid (4), rest[11] = utime (14), rest[12] = stime
    # (15), rest[13] = cutime (16), rest[14] = cstime (17)
    return (comm, int(rest[1]), int(rest[11]) + int(rest[12]),
            int(rest[13]) + int(rest[14]))


def oncpu_ticks(pid, fallback):
    """A pid's time on a CPU, in clock ticks but exact: /proc/PID/schedstat counts it in
    nanoseconds, where utime+stime are sampled in whole ticks (10 ms). `fallback` (the
    ticks) if the kernel has no schedstat."""
    try:
        with open("/proc/%d/schedstat" % pid) as f:
            return int(f.read().split()[0]) * CLK_TCK / 1e9
    except (OSError, ValueError, IndexError):
        return fallback


def all_procs():
    out = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            st = read_stat(int(name))
            if st:
                out[int(name)] = st
    return out


def machine_cpu():
    """(busy ticks, total ticks, steal ticks) over all CPUs from /proc/stat.

    Busy is what this machine's processes and kernel ran: user, nice, system, irq and
    softirq. Steal -- time the hypervisor ran someone else's VM while ours wanted a CPU --
    is not ours and is kept apart: on a shared host it grows with our own load and, counted
    as busy, it made 'machine CPU per job' move with the neighbours (3-10 ms per job here)."""
    with open("/proc/stat") as f:
        parts = f.readline().split()
    vals = [int(x) for x in parts[1:9]]  # user nice system idle iowait irq softirq steal
    busy = vals[0] + vals[1] + vals[2] + vals[5] + vals[6]
    return busy, sum(vals), vals[7]


def descendants(procs, root):
    """Pids of root's descendants (not root itself), from a snapshot of all processes."""
    kids = {}
    for pid, st in procs.items():
        kids.setdefault(st[1], []).append(pid)
    out, todo = set(), list(kids.get(root, ()))
    while todo:
        pid = todo.pop()
        if pid not in out:
            out.add(pid)
            todo.extend(kids.get(pid, ()))
    return out


class CpuProbe:
    """Snapshots of CPU ticks of the process groups this benchmark reports.

    Under the master, three groups, so that takod's own CPU stays takod's whatever the
    backend runs as its children:
      takod     the master and every descendant whose comm starts with "takod"
                (acceptors, executors, the settler and the sweeper), on a CPU from
                /proc/PID/schedstat — a process's own time, never its children's;
      postgres  the managed PostgreSQL: a child of the master named postgres*, and its
                descendants;
      runtime   everything else below the master: under the OCI backend the runtime
                (crun, runc, runsc) and the containers' processes (the launcher and the
                job's python3), which the executors spawn and, as subreapers, reap. It
                counts the live ones' utime+stime plus what takod's processes have
                reaped (their cutime+cstime), so a container that lived only between two
                snapshots is still counted. Under the Docker backend it is ~0: the
                engine's shims own the containers."""

    def __init__(self, master_pid=None):
        self.master_pid = master_pid

    def snapshot(self):
        procs = all_procs()
        snap = {"t": time.perf_counter(), "takod": {}, "postgres": {}, "docker": {},
                "runtime": {}, "reaped": {}}
        m = self.master_pid
        if m and m in procs:
            pg = set()
            for pid, (comm, ppid, _t, _c) in procs.items():
                if ppid == m and comm.startswith("postgres"):
                    pg.add(pid)
                    pg |= descendants(procs, pid)
            for pid in {m} | descendants(procs, m):
                comm, ppid, ticks, cticks = procs[pid]
                if pid in pg:
                    snap["postgres"][pid] = (comm, ppid, oncpu_ticks(pid, ticks))
                elif pid == m or comm.startswith("takod"):
                    snap["takod"][pid] = (comm, ppid, oncpu_ticks(pid, ticks))
                    snap["reaped"][pid] = cticks
                else:
                    snap["runtime"][pid] = (comm, ppid, ticks)
        for pid, (comm, ppid, ticks, _c) in procs.items():
            if comm in ("dockerd", "containerd"):
                snap["docker"][pid] = (comm, ppid, ticks)
        snap["foreign"] = foreign_procs(procs, self.master_pid)
        snap["dockerd_pids"] = sorted(p for p, v in procs.items() if v[0] == "dockerd")
        snap["machine"] = machine_cpu()
        t = os.times()  # this benchmark's own process (the client threads), not its children
        snap["client"] = t.user + t.system
        snap["loadavg"] = open("/proc/loadavg").read().split()[:3]
        return snap

    @staticmethod
    def delta(a, b, jobs):
        """CPU ms per job between two snapshots, per group, plus pid-set changes."""
        out = {}
        for group in ("takod", "postgres", "docker", "runtime"):
            pa, pb = a[group], b[group]
            ticks = 0
            for pid, (_c, _p, t) in pb.items():
                ticks += t - (pa[pid][2] if pid in pa else 0)
            gone = sorted(set(pa) - set(pb))
            new = sorted(set(pb) - set(pa))
            roles = {}
            for pid, (c, _p, t) in pb.items():
                d = (t - (pa[pid][2] if pid in pa else 0)) * 1000.0 / CLK_TCK
                roles[c] = roles.get(c, 0.0) + d
            if group == "runtime":
                # the ones that ended in between are in their reaper's cutime now, with
                # what they had already spent at `a`: take that part out once
                for pid in gone:
                    ticks -= pa[pid][2]
                reaped = sum(c - a["reaped"].get(pid, 0) for pid, c in b["reaped"].items())
                ticks += reaped
                roles["(ended, reaped by takod)"] = reaped * 1000.0 / CLK_TCK
                gone, new = [], []  # one per job: expected, not worth a note
            ms = ticks * 1000.0 / CLK_TCK
            out[group] = {
                "by_comm_ms_per_job": {c: v / jobs for c, v in roles.items()} if jobs else {},
                "cpu_ms_total": ms,
                "cpu_ms_per_job": ms / jobs if jobs else None,
                "pids": len(pb),
                "pids_gone": gone,
                "pids_new": new,
            }
        wall = b["t"] - a["t"]
        fticks = 0
        per = {}
        for pid, (comm, t) in b["foreign"].items():
            d = t - (a["foreign"][pid][1] if pid in a["foreign"] else 0)
            fticks += d
            per[comm] = per.get(comm, 0) + d
        top = sorted(per.items(), key=lambda kv: -kv[1])[:3]
        out["foreign"] = {
            "cpu_pct_of_one_cpu": fticks * 100.0 / CLK_TCK / wall if wall > 0 else None,
            "top": ["%s %.1fs" % (c, t / CLK_TCK) for c, t in top if t >= CLK_TCK // 10],
        }
        busy = b["machine"][0] - a["machine"][0]
        total = b["machine"][1] - a["machine"][1]
        ms = busy * 1000.0 / CLK_TCK
        steal = (b["machine"][2] - a["machine"][2]) * 1000.0 / CLK_TCK
        out["machine"] = {
            "cpu_ms_total": ms,
            "cpu_ms_per_job": ms / jobs if jobs else None,
            "steal_ms_per_job": steal / jobs if jobs else None,
            "busy_fraction": busy / total if total else None,
            "wall_s": b["t"] - a["t"],
        }
        # the load generator runs on the same machine and is in "machine": say how much
        cl = (b["client"] - a["client"]) * 1000.0
        out["client"] = {"cpu_ms_total": cl, "cpu_ms_per_job": cl / jobs if jobs else None}
        out["loadavg_after"] = b["loadavg"]
        out["dockerd_pids"] = [a["dockerd_pids"], b["dockerd_pids"]]
        return out


def foreign_procs(procs, master_pid):
    """{pid: (comm, ticks)} of processes that are not part of what we measure: not this
    benchmark and its children (docker CLI), not takod and its PostgreSQL, not dockerd,
    containerd, the containerd shims and what runs under them, not kernel threads.
    Processes that started and ended between two snapshots are missed."""
    roots = {os.getpid()}
    if master_pid:
        roots.add(master_pid)
    for pid, (comm, ppid, _t, _c) in procs.items():
        if comm in ("dockerd", "containerd") or comm.startswith("containerd-shim"):
            roots.add(pid)
    ours = {}

    def is_ours(pid, depth=0):
        if pid in ours:
            return ours[pid]
        if pid in roots:
            ours[pid] = True
            return True
        st = procs.get(pid)
        if st is None or pid <= 2 or depth > 64:
            ours[pid] = pid == 2
            return ours[pid]
        ours[pid] = is_ours(st[1], depth + 1) or st[1] == 2
        return ours[pid]

    return {pid: (st[0], st[2]) for pid, st in procs.items() if not is_ours(pid)}


def wait_quiet(max_s, threshold=0.25):
    """Wait (at most max_s) until the machine is below `threshold` busy; returns busy.
    With no time left to wait (max_s 0) it only takes a short sample for the record."""
    t_end = time.monotonic() + max_s
    busy = machine_busy_fraction(1.5 if max_s > 0 else 0.5)
    while busy > threshold and time.monotonic() < t_end:
        busy = machine_busy_fraction(2.0)
    return busy


def machine_busy_fraction(seconds):
    a = machine_cpu()
    time.sleep(seconds)
    b = machine_cpu()
    return (b[0] - a[0]) / max(1, b[1] - a[1])


def top_foreign(seconds):
    """Long-lived processes outside what we measure (see foreign_procs) using CPU now."""
    a = foreign_procs(all_procs(), None)
    time.sleep(seconds)
    b = foreign_procs(all_procs(), None)
    rows = []
    for pid, (comm, t) in b.items():
        if pid in a:
            d = (t - a[pid][1]) * 1000.0 / CLK_TCK
            if d >= 50:
                rows.append((d / seconds / 10.0, pid, comm))  # percent of one CPU
    rows.sort(reverse=True)
    return [{"pct_cpu": round(r[0], 1), "pid": r[1], "comm": r[2]} for r in rows[:5]]


# ---------------------------------------------------------------------------- docker API

class UnixHTTPConnection(http.client.HTTPConnection):
    """http.client over a unix socket (the Docker Engine API)."""

    def __init__(self, path, timeout=60):
        super().__init__("localhost", timeout=timeout)
        self.unix_path = path

    def connect(self):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(self.timeout)
        s.connect(self.unix_path)
        self.sock = s


class DockerAPI:
    def __init__(self, sock_path, timeout=60):
        self.sock_path = sock_path
        self.timeout = timeout
        self.conn = UnixHTTPConnection(sock_path, timeout)

    def req(self, method, path, body=None):
        hdrs = {}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            hdrs["Content-Type"] = "application/json"
        try:
            self.conn.request(method, API + path, data, hdrs)
            r = self.conn.getresponse()
            return r.status, r.read()
        except Exception:
            self.conn.close()
            self.conn = UnixHTTPConnection(self.sock_path, self.timeout)
            raise

    def close(self):
        self.conn.close()


def demux_logs(raw):
    """Split Docker's multiplexed log stream (no TTY) into stdout, stderr bytes."""
    out, err = [], []
    i = 0
    while i + 8 <= len(raw):
        stream = raw[i]
        size = int.from_bytes(raw[i + 4:i + 8], "big")
        chunk = raw[i + 8:i + 8 + size]
        (err if stream == 2 else out).append(chunk)
        i += 8 + size
    return b"".join(out), b"".join(err)


def raw_cycle(api, image):
    """create/start/wait/logs/rm. Returns (ok, error string or None)."""
    st, body = api.req("POST", "/containers/create", {
        "Image": image,
        "Cmd": ["python3", "-c", CODE],
        "Labels": {LABEL: "1"},
        "AttachStdout": False,
        "AttachStderr": False,
        "HostConfig": {"NetworkMode": "none"},
    })
    if st != 201:
        return False, "create %d %s" % (st, body[:200])
    cid = json.loads(body)["Id"]
    err = None
    try:
        st, body = api.req("POST", "/containers/%s/start" % cid)
        if st not in (204, 304):
            return False, "start %d %s" % (st, body[:200])
        st, body = api.req("POST", "/containers/%s/wait" % cid)
        if st != 200:
            return False, "wait %d %s" % (st, body[:200])
        code = json.loads(body).get("StatusCode")
        st, body = api.req("GET", "/containers/%s/logs?stdout=1&stderr=1" % cid)
        if st != 200:
            return False, "logs %d %s" % (st, body[:200])
        out, _err = demux_logs(body)
        if code != 0 or out != EXPECTED_STDOUT.encode():
            err = "exit %s stdout %r" % (code, out[:100])
    finally:
        st, body = api.req("DELETE", "/containers/%s?force=1" % cid)
        if st != 204 and err is None:
            err = "rm %d %s" % (st, body[:200])
    return err is None, err


def cleanup_bench_containers(sock_path):
    """Force-remove every container carrying our label (ours only)."""
    removed = 0
    try:
        api = DockerAPI(sock_path, 30)
        q = json.dumps({"label": ["%s=1" % LABEL]})
        from urllib.parse import quote
        st, body = api.req("GET", "/containers/json?all=1&filters=" + quote(q))
        if st == 200:
            for c in json.loads(body)[:1000]:
                st2, _ = api.req("DELETE", "/containers/%s?force=1" % c["Id"])
                removed += st2 == 204
        api.close()
    except Exception as e:  # noqa: BLE001
        log("cleanup of labelled containers failed: %s" % e)
    return removed


# ---------------------------------------------------------------------------- docker run

def docker_run_once(image, timeout):
    cmd = ["docker", "run", "--rm", "--network", "none", "--label", "%s=1" % LABEL,
           image, "python3", "-c", CODE]
    try:
        p = subprocess.run(cmd, capture_output=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return False, "timeout"
    if p.returncode != 0 or p.stdout != EXPECTED_STDOUT.encode():
        return False, "rc %d stdout %r stderr %r" % (p.returncode, p.stdout[:80], p.stderr[:200])
    return True, None


# ---------------------------------------------------------------------------- takod

class Takod:
    def __init__(self, binary, conf, data_dir, executors, log_path, opts=()):
        self.binary = binary
        self.conf = conf
        self.data_dir = data_dir
        self.executors = executors
        self.log_path = log_path
        self.opts = list(opts)
        self.port = None
        self.proc = None

    def start(self, timeout=180, backend=None):
        """Start and wait until /health says the engine and the database are there; with
        `backend` (docker, oci), also that takod runs that executor backend (not another
        one it fell back to). Returns the /health object. The timeout allows the OCI
        backend's first unpacking of the image's rootfs."""
        self.port = free_port()
        args = [self.binary, "-c", self.conf,
                "-o", "server.listen=127.0.0.1:%d" % self.port,
                "-o", "server.data_dir=%s" % self.data_dir,
                "-o", "server.executors=%d" % self.executors,
                "-o", "server.log_level=warn"]
        for o in self.opts:
            args += ["-o", o]
        self.logf = open(self.log_path, "ab")
        self.logf.write(("\n# %s executors=%d: %s\n" % (
            datetime.datetime.now().isoformat(timespec="seconds"), self.executors,
            " ".join(args))).encode())
        self.logf.flush()
        self.proc = subprocess.Popen(args, stdout=self.logf, stderr=self.logf,
                                     stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("takod exited with %s during start-up; see %s"
                                   % (self.proc.returncode, self.log_path))
            try:
                c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
                c.request("GET", "/health")
                r = c.getresponse()
                body = r.read()
                c.close()
                if r.status == 200:
                    h = json.loads(body)
                    if h.get("docker_available") and h.get("database_available"):
                        if backend not in (None, "auto") and h.get("backend") != backend:
                            raise RuntimeError("takod runs backend %r, not %r; see %s" % (
                                h.get("backend"), backend, self.log_path))
                        return h
            except (OSError, http.client.HTTPException, ValueError):
                pass
            time.sleep(0.2)
        raise RuntimeError("takod did not become healthy in %ds" % timeout)

    def stop(self, timeout=20):
        if not self.proc or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            log("takod pid %d did not stop in %ds; SIGKILL" % (self.proc.pid, timeout))
            self.proc.kill()
            self.proc.wait(10)
        self.logf.close()
        return self.proc.returncode


class TakodClient:
    """One client thread's view: either one keep-alive connection, or one per request."""

    def __init__(self, port, keepalive, timeout=90):
        self.port = port
        self.keepalive = keepalive
        self.timeout = timeout
        self.conn = None
        self.connections = 0
        self.body = json.dumps({"code": CODE}).encode()

    def _new(self):
        self.connections += 1
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=self.timeout)

    def call(self):
        """Returns (latency_s, status, parsed json or None, error or None)."""
        if self.conn is None or not self.keepalive:
            if self.conn is not None:
                self.conn.close()
            self.conn = self._new()
        t0 = time.perf_counter()
        try:
            self.conn.request("POST", "/execute", self.body,
                              {"Content-Type": "application/json"})
            r = self.conn.getresponse()
            data = r.read()
            t1 = time.perf_counter()
            if r.will_close:
                self.conn.close()
                self.conn = None
        except (OSError, http.client.HTTPException) as e:
            t1 = time.perf_counter()
            self.conn.close()
            self.conn = None
            return t1 - t0, None, None, "%s: %s" % (type(e).__name__, e)
        try:
            j = json.loads(data)
        except ValueError:
            return t1 - t0, r.status, None, "bad json %r" % data[:200]
        return t1 - t0, r.status, j, None

    def close(self):
        if self.conn is not None:
            self.conn.close()


def takod_job_ok(status, j, err):
    if err:
        return False, err
    if status != 200:
        return False, "http %s %s" % (status, json.dumps(j)[:200] if j else "")
    if not j.get("success"):
        return False, "success=false status=%s error_type=%s" % (j.get("status"),
                                                                  j.get("error_type"))
    if j.get("stdout") != EXPECTED_STDOUT:
        return False, "stdout %r" % j.get("stdout")
    return True, None


# ---------------------------------------------------------------------------- runners

class Errors:
    def __init__(self):
        self.lock = threading.Lock()
        self.count = 0
        self.non200 = 0
        self.success_false = 0
        self.samples = []

    def add(self, msg):
        with self.lock:
            self.count += 1
            if msg.startswith("http "):
                self.non200 += 1
            elif msg.startswith("success=false"):
                self.success_false += 1
            if len(self.samples) < 10:
                self.samples.append(msg)

    def as_dict(self):
        return {"errors": self.count, "non_200": self.non200,
                "success_false": self.success_false, "samples": self.samples}


def make_takod_op(port, keepalive, timings_out=None):
    """Factory of per-thread operations for the closed-loop runner."""
    def factory():
        client = TakodClient(port, keepalive)

        def op():
            dt, status, j, err = client.call()
            ok, why = takod_job_ok(status, j, err)
            if ok and timings_out is not None and isinstance(j.get("timing"), dict):
                timings_out.append(j["timing"])
            return dt, ok, why

        return op, client.close
    return factory


def make_docker_run_op(image):
    def factory():
        def op():
            t0 = time.perf_counter()
            ok, why = docker_run_once(image, 120)
            return time.perf_counter() - t0, ok, why
        return op, lambda: None
    return factory


def make_raw_op(sock, image):
    def factory():
        api = DockerAPI(sock, 60)

        def op():
            t0 = time.perf_counter()
            try:
                ok, why = raw_cycle(api, image)
            except (OSError, http.client.HTTPException, ValueError) as e:
                ok, why = False, "%s: %s" % (type(e).__name__, e)
            return time.perf_counter() - t0, ok, why
        return op, api.close
    return factory


def sequential(factory, n, warmup, time_cap, gap_s=0.0):
    """Concurrency 1: warm-up, then n timed ops (gap_s of idle time after each).
    Returns (latencies_ms, Errors)."""
    op, close = factory()
    errs = Errors()
    lat = []
    deadline = time.monotonic() + time_cap
    try:
        for _ in range(warmup):
            if time.monotonic() > deadline:
                break
            op()
        for _ in range(n):
            if time.monotonic() > deadline:
                log("time cap reached after %d of %d" % (len(lat), n))
                break
            dt, ok, why = op()
            if ok:
                lat.append(dt * 1000.0)
            else:
                errs.add(why)
                time.sleep(ERROR_BACKOFF_S)
            if gap_s > 0:
                time.sleep(gap_s)
    finally:
        close()
    return lat, errs


def at_rate(factory, n, rate, time_cap):
    """Concurrency 1 at an offered rate: request i is due at t0 + i/rate and is sent then,
    or as soon as the one before it is answered if that is later (counted as late).
    Latency is from the send. Returns (latencies_ms, Errors, late)."""
    op, close = factory()
    errs = Errors()
    lat = []
    late = 0
    t0 = time.monotonic()
    deadline = t0 + time_cap
    try:
        for i in range(n):
            now = time.monotonic()
            if now > deadline:
                log("time cap reached after %d of %d" % (len(lat), n))
                break
            due = t0 + i / rate
            if now < due:
                time.sleep(due - now)
            elif now - due > 0.001:
                late += 1
            dt, ok, why = op()
            if ok:
                lat.append(dt * 1000.0)
            else:
                errs.add(why)
    finally:
        close()
    return lat, errs, late


def closed_loop(factory, conc, duration, max_per_thread=100000, grace=130):
    """C threads, each sending back to back until `duration` has passed.

    Throughput = successful ops / (time the last op ended - start). In-flight ops at the
    deadline are allowed to finish and are counted (so the window is slightly longer
    than `duration`)."""
    errs = Errors()
    lat = []
    lock = threading.Lock()
    ends = []
    ops = [factory() for _ in range(conc)]
    start_evt = threading.Event()
    t = {}

    def worker(op, close):
        start_evt.wait()
        my_lat = []
        last = t["start"]
        try:
            for _ in range(max_per_thread):
                if time.perf_counter() >= t["deadline"]:
                    break
                dt, ok, why = op()
                last = time.perf_counter()
                if ok:
                    my_lat.append(dt * 1000.0)
                else:
                    errs.add(why)
                    time.sleep(ERROR_BACKOFF_S)  # don't spin on fast failures (503s)
        finally:
            close()
            with lock:
                lat.extend(my_lat)
                ends.append(last)

    threads = [threading.Thread(target=worker, args=o, daemon=True) for o in ops]
    for th in threads:
        th.start()
    t["start"] = time.perf_counter()
    t["deadline"] = t["start"] + duration
    start_evt.set()
    for th in threads:
        th.join(max(1.0, t["deadline"] + grace - time.perf_counter()))
    hung = sum(th.is_alive() for th in threads)
    end = max(ends) if ends else time.perf_counter()
    elapsed = end - t["start"]
    return {
        "concurrency": conc,
        "duration_s": elapsed,
        "ok": len(lat),
        "jobs_per_s": len(lat) / elapsed if elapsed > 0 else None,
        "latency_ms": summary(lat),
        "hung_threads": hung,
        **errs.as_dict(),
    }


# ---------------------------------------------------------------------------- machine

def machine_info():
    info = {"nproc": os.cpu_count(), "kernel": platform.release()}
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                info["cpu_model"] = line.split(":", 1)[1].strip()
                break
        for line in open("/proc/meminfo"):
            if line.startswith("MemTotal"):
                info["mem_total_gib"] = round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    try:
        api = DockerAPI("/var/run/docker.sock", 10)
        st, body = api.req("GET", "/info")
        d = json.loads(body)
        info["docker_server"] = d.get("ServerVersion")
        info["docker_runtime"] = d.get("DefaultRuntime")
        info["cgroup"] = "v%s (%s driver)" % (d.get("CgroupVersion"), d.get("CgroupDriver"))
        info["storage_driver"] = d.get("Driver")
        api.close()
    except Exception as e:  # noqa: BLE001
        info["docker_error"] = str(e)
    return info


def run_takod_backend(a, backend, takod_bin, data_dir, keepalive, concs, quiet, res, running):
    """The whole takod phase under one executor backend (`-o executor.backend=BACKEND`,
    the same image and settings otherwise): the offered rates, back to back at c=1 with
    the server's timing and the CPU per job, the paced diagnostic, throughput at each
    concurrency, and the executors=8 point. Fills `res` (keys as a single-backend run's
    top level had them); running["takod"] is the takod to stop if we are interrupted."""
    opts = list(a.takod_opt) + ["executor.backend=%s" % backend]
    takod = running["takod"] = Takod(takod_bin, a.conf, data_dir, a.executors, a.log, opts)
    log("[%s] starting takod executors=%d (log %s)" % (backend, a.executors, a.log))
    res["takod_health"] = takod.start(backend=backend)
    log("[%s] takod says backend %s, runtime %s" % (
        backend, res["takod_health"].get("backend"), res["takod_health"].get("runtime")))
    probe = CpuProbe(takod.proc.pid)
    timings = []
    factory = make_takod_op(takod.port, keepalive, timings)
    # warm-up outside the measured window, then let the warm-up's container
    # removal/creation finish before the "before" snapshot
    op, close = factory()
    for _ in range(a.warmup):
        op()
    close()
    timings.clear()
    time.sleep(2.0)
    # first the offered rates, on full pools (the back-to-back run below drains them)
    res["takod_rates"] = []
    for rate in [float(x) for x in a.rates.split(",") if x.strip()]:
        pre = quiet()
        log("[%s] takod at %.1f jobs/s, concurrency 1: %d requests" % (backend, rate, a.rate_n))
        rtim = []
        rlat, rerrs, late = at_rate(make_takod_op(takod.port, keepalive, rtim),
                                    a.rate_n, rate, 60 + 3 * a.rate_n / rate)
        res["takod_rates"].append({"rate": rate, "latency_ms": summary(rlat),
                                   "raw_ms": rlat, "raw_timing": rtim, "late": late,
                                   "busy_at_start": pre, **rerrs.as_dict()})
        log("  p50 %s p99 %s ms, sent late %d" % (
            fmt(summary(rlat).get("p50")), fmt(summary(rlat).get("p99")), late))

    pre = quiet()
    log("[%s] takod latency: %d requests at concurrency 1" % (backend, a.n))
    s0 = probe.snapshot()
    lat, errs = sequential(factory, a.n, 0, 300)
    time.sleep(2.0)  # the last job's container rm + next create belong to it
    s1 = probe.snapshot()
    jobs = len(lat) + errs.count
    res["takod_latency"] = {
        "latency_ms": summary(lat),
        "server_timing_p50": {k: pct([t[k] for t in timings if k in t], 50)
                              for k in ("queue_ms", "startup_ms", "execution_ms",
                                        "total_ms")},
        "server_timing_p99": {k: pct([t[k] for t in timings if k in t], 99)
                              for k in ("queue_ms", "startup_ms", "execution_ms",
                                        "total_ms")},
        "cpu": CpuProbe.delta(s0, s1, jobs),
        "raw_ms": lat,
        "raw_timing": timings[:],
        "busy_at_start": pre,
        **errs.as_dict(),
    }
    if len(timings) == len(lat):
        res["takod_latency"]["outside_server_total_p50_ms"] = pct(
            [l - t["total_ms"] for l, t in zip(lat, timings)], 50)
    L = res["takod_latency"]["latency_ms"]
    c = res["takod_latency"]["cpu"]
    log("[%s] takod c=1: p50 %s p99 %s ms, errors %d, CPU per job: takod %.2f ms, "
        "machine %.1f ms" % (backend, fmt(L.get("p50")), fmt(L.get("p99")), errs.count,
                             c["takod"]["cpu_ms_per_job"] or -1,
                             c["machine"]["cpu_ms_per_job"] or -1))

    if a.paced_n > 0:
        pre = quiet()
        log("[%s] takod paced diagnostic: %d requests, %.1fs idle after each"
            % (backend, a.paced_n, a.paced_gap))
        ptim = []
        plat, perrs = sequential(make_takod_op(takod.port, keepalive, ptim),
                                 a.paced_n, 0, 120, gap_s=a.paced_gap)
        res["takod_paced"] = {
            "gap_s": a.paced_gap, "latency_ms": summary(plat), "raw_ms": plat,
            "busy_at_start": pre,
            "server_timing_p50": {k: pct([t[k] for t in ptim if k in t], 50)
                                  for k in ("queue_ms", "startup_ms",
                                            "execution_ms", "total_ms")},
            **perrs.as_dict()}
        if len(ptim) == len(plat):
            res["takod_paced"]["outside_server_total_p50_ms"] = pct(
                [l - t["total_ms"] for l, t in zip(plat, ptim)], 50)
        log("  p50 %s p99 %s ms" % (fmt(summary(plat).get("p50")),
                                   fmt(summary(plat).get("p99"))))

    def throughput(conc, executors):
        pre = quiet()
        log("[%s] takod throughput c=%d executors=%d for %.0fs" % (
            backend, conc, executors, a.duration))
        s0 = probe.snapshot()
        r = closed_loop(make_takod_op(takod.port, keepalive), conc, a.duration)
        s1 = probe.snapshot()
        r["executors"] = executors
        r["busy_at_start"] = pre
        r["cpu"] = CpuProbe.delta(s0, s1, r["ok"] + r["errors"])
        log("  %.2f jobs/s, p50 %s ms, errors %d, machine CPU %.1f ms/job" % (
            r["jobs_per_s"] or 0, fmt(r["latency_ms"].get("p50")), r["errors"],
            r["cpu"]["machine"]["cpu_ms_per_job"] or -1))
        return r

    res["takod_throughput"] = [throughput(c, a.executors) for c in concs]
    res["takod_exit"] = [takod.stop()]

    if not a.no_exec8 and a.executors != 8:
        takod = running["takod"] = Takod(takod_bin, a.conf, data_dir, 8, a.log, opts)
        log("[%s] restarting takod with executors=8" % backend)
        takod.start(backend=backend)
        probe = CpuProbe(takod.proc.pid)
        op, close = make_takod_op(takod.port, keepalive)()
        for _ in range(a.warmup):
            op()
        close()
        time.sleep(2.0)
        res["takod_throughput_exec8"] = throughput(max(concs), 8)
        res["takod_exit"].append(takod.stop())
    running["takod"] = None


# ---------------------------------------------------------------------------- main

def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="small counts: a smoke run < 3 min")
    ap.add_argument("--json", metavar="FILE", help="also write the raw numbers here")
    ap.add_argument("-n", type=int, default=100, help="takod latency requests (default 100)")
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--baseline-n", type=int, default=30,
                    help="docker run / raw API latency runs (default 30)")
    ap.add_argument("--duration", type=float, default=20.0,
                    help="seconds per throughput point (default 20)")
    ap.add_argument("--concurrency", default="1,2,4,8")
    ap.add_argument("--executors", type=int, default=4, help="server.executors (default 4)")
    ap.add_argument("--backends", default="docker,oci",
                    help="comma list of executor backends (executor.backend: docker, oci, "
                         "auto); the whole takod phase runs once under each, in this "
                         "order, each with its own takod (default docker,oci)")
    ap.add_argument("--no-exec8", action="store_true",
                    help="skip the extra concurrency-8 point with server.executors=8")
    ap.add_argument("--fresh-conn", action="store_true",
                    help="a new TCP connection per request (default: one keep-alive "
                         "connection per client thread)")
    ap.add_argument("--takod", default=os.path.join(REPO, "build", "takod"))
    ap.add_argument("--conf", default=os.path.join(REPO, "conf", "tako.conf"))
    ap.add_argument("-o", "--takod-opt", action="append", default=[], metavar="KEY=VALUE",
                    help="also pass -o KEY=VALUE to takod (repeatable), e.g. to measure a "
                         "setting: -o server.warm_containers=1")
    ap.add_argument("--image", default="code-executor:latest")
    ap.add_argument("--docker-sock", default="/var/run/docker.sock")
    ap.add_argument("--log", default=None,
                    help="takod's stderr (default /tmp/takod-bench-<time>.log, kept)")
    ap.add_argument("--skip", default="",
                    help="comma list of phases to skip: takod,dockerrun,raw")
    ap.add_argument("--wait-idle", type=float, default=60.0,
                    help="wait up to this many seconds for the machine to be quiet "
                         "(< 25%% busy) before starting (default 60; 0: don't)")
    ap.add_argument("--phase-wait", type=float, default=15.0,
                    help="before each phase, wait up to this many seconds for the machine "
                         "to be < 25%% busy (default 15; total capped by --wait-budget)")
    ap.add_argument("--wait-budget", type=float, default=90.0,
                    help="total seconds all quiet-waits may take (default 90)")
    ap.add_argument("--paced-n", type=int, default=30,
                    help="diagnostic: takod requests at concurrency 1 with --paced-gap of "
                         "idle time after each reply (default 30; 0: skip). Not used for "
                         "the targets.")
    ap.add_argument("--paced-gap", type=float, default=1.0)
    ap.add_argument("--rates", default="4,8",
                    help="takod at concurrency 1 at these offered rates (jobs/s, comma list; "
                         "'' skips): the load below the machine's capacity (default 4,8)")
    ap.add_argument("--rate-n", type=int, default=100, help="requests per rate (default 100)")
    a = ap.parse_args()
    if a.quick:  # two backends' takod phases and the baselines in under 3 minutes
        a.n, a.warmup, a.baseline_n, a.duration, a.paced_n = 20, 3, 5, 3.0, 3
        a.rate_n = 10
        a.wait_idle = min(a.wait_idle, 5.0)
        a.phase_wait, a.wait_budget = min(a.phase_wait, 2.0), min(a.wait_budget, 10.0)
    budget = {"left": a.wait_budget}

    def quiet():
        """Bounded wait for other load to pass; returns the busy fraction seen."""
        t0 = time.monotonic()
        busy = wait_quiet(max(0.0, min(a.phase_wait, budget["left"])))
        budget["left"] -= time.monotonic() - t0
        if busy > 0.25:
            log("  machine %.0f%% busy at phase start (not waiting longer)" % (busy * 100))
        return busy
    concs = [int(x) for x in a.concurrency.split(",") if x.strip()]
    skip = set(x.strip() for x in a.skip.split(",") if x.strip())
    backends = []
    for b in (x.strip() for x in a.backends.split(",")):
        if b and b not in backends:
            if b not in ("docker", "oci", "auto"):
                ap.error("--backends: %r is not docker, oci or auto" % b)
            backends.append(b)
    if not backends and "takod" not in skip:
        ap.error("--backends: none given (use --skip takod to skip takod)")
    keepalive = not a.fresh_conn
    if a.log is None:
        a.log = "/tmp/takod-bench-%s.log" % time.strftime("%Y%m%d-%H%M%S")

    t_run0 = time.monotonic()
    res = {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "command": " ".join([os.path.relpath(sys.argv[0], REPO)] + sys.argv[1:]),
        "machine": machine_info(),
        "params": {"n": a.n, "warmup": a.warmup, "baseline_n": a.baseline_n,
                   "duration_s": a.duration, "concurrency": concs,
                   "executors": a.executors, "exec8": not a.no_exec8,
                   "backends": backends if "takod" not in skip else [],
                   "client_connection": "keep-alive per client thread" if keepalive
                   else "fresh per request",
                   "image": a.image, "code": CODE, "clk_tck": CLK_TCK},
        "conditions": {},
    }
    log("machine: %s" % json.dumps(res["machine"]))

    # quietness before we start (other work on a 2-core box skews everything)
    if a.wait_idle > 0:
        t_end = time.monotonic() + a.wait_idle
        busy = machine_busy_fraction(2.0)
        while busy > 0.25 and time.monotonic() < t_end:
            log("machine %.0f%% busy before start; waiting" % (busy * 100))
            busy = machine_busy_fraction(3.0)
        res["conditions"]["busy_before_start"] = busy
        log("machine %.0f%% busy before start" % (busy * 100))
    res["conditions"]["foreign_before"] = top_foreign(1.0)

    data_dirs = []
    # Run a private copy of the binary: others may rebuild build/takod during the run.
    bin_dir = tempfile.mkdtemp(prefix="takod-bench-bin-", dir="/tmp")
    takod_bin = os.path.join(bin_dir, "takod")
    if "takod" not in skip:
        shutil.copy2(a.takod, takod_bin)
        with open(takod_bin, "rb") as f:
            res["takod_binary"] = {
                "path": a.takod,
                "sha256": hashlib.sha256(f.read()).hexdigest(),
                "mtime": datetime.datetime.fromtimestamp(
                    os.stat(a.takod).st_mtime).isoformat(timespec="seconds"),
            }
        try:
            res["takod_binary"]["git_head"] = subprocess.run(
                ["git", "-C", REPO, "rev-parse", "--short", "HEAD"], capture_output=True,
                text=True, timeout=10).stdout.strip()
            dirty = subprocess.run(["git", "-C", REPO, "status", "--porcelain", "-uno"],
                                   capture_output=True, text=True, timeout=10).stdout
            res["takod_binary"]["worktree_modified_files"] = len(dirty.splitlines())
        except (OSError, subprocess.SubprocessError):
            pass
    running = {"takod": None}
    stop_now = {"flag": False}

    def on_signal(signum, _frame):
        stop_now["flag"] = True
        raise KeyboardInterrupt()

    signal.signal(signal.SIGTERM, on_signal)

    try:
        # ------------------------------------------------------------ takod
        if "takod" not in skip:
            res["by_backend"] = {}
            for backend in backends:
                out = res["by_backend"][backend] = {}
                # a data dir of its own per backend (its PostgreSQL, spool, rootfs)
                data_dirs.append(tempfile.mkdtemp(prefix="takod-bench-%s-" % backend,
                                                  dir="/tmp"))
                try:
                    run_takod_backend(a, backend, takod_bin, data_dirs[-1], keepalive,
                                      concs, quiet, out, running)
                except RuntimeError as e:  # e.g. takod would not start: the next backend
                    log("[%s] takod phase failed: %s" % (backend, e))
                    out["error"] = str(e)
                    if running["takod"] is not None:
                        running["takod"].stop()
                        running["takod"] = None
            res["conditions"]["takod_log"] = a.log

        docker_probe = CpuProbe(None)
        # ------------------------------------------------------------ docker run
        if "dockerrun" not in skip:
            log("docker run: %d runs at concurrency 1" % a.baseline_n)
            fac = make_docker_run_op(a.image)
            op, close = fac()
            for _ in range(min(3, a.warmup)):
                op()
            time.sleep(1.0)
            pre = quiet()
            s0 = docker_probe.snapshot()
            lat, errs = sequential(fac, a.baseline_n, 0, 300)
            s1 = docker_probe.snapshot()
            res["docker_run_latency"] = {"busy_at_start": pre,"latency_ms": summary(lat), "raw_ms": lat,
                                         "cpu": CpuProbe.delta(s0, s1, len(lat) + errs.count),
                                         **errs.as_dict()}
            log("  p50 %s p99 %s ms, errors %d" % (
                fmt(summary(lat).get("p50")), fmt(summary(lat).get("p99")), errs.count))
            res["docker_run_throughput"] = []
            for c in concs:
                pre = quiet()
                log("docker run throughput c=%d for %.0fs" % (c, a.duration))
                s0 = docker_probe.snapshot()
                r = closed_loop(fac, c, a.duration)
                s1 = docker_probe.snapshot()
                r["cpu"] = CpuProbe.delta(s0, s1, r["ok"] + r["errors"])
                r["busy_at_start"] = pre
                res["docker_run_throughput"].append(r)
                log("  %.2f jobs/s, p50 %s ms, errors %d" % (
                    r["jobs_per_s"] or 0, fmt(r["latency_ms"].get("p50")), r["errors"]))

        # ------------------------------------------------------------ raw API
        if "raw" not in skip:
            log("raw Docker API cycle: %d runs at concurrency 1" % a.baseline_n)
            fac = make_raw_op(a.docker_sock, a.image)
            op, close = fac()
            for _ in range(min(3, a.warmup)):
                op()
            close()
            time.sleep(1.0)
            pre = quiet()
            s0 = docker_probe.snapshot()
            lat, errs = sequential(fac, a.baseline_n, 0, 300)
            s1 = docker_probe.snapshot()
            res["raw_api_latency"] = {"busy_at_start": pre,"latency_ms": summary(lat), "raw_ms": lat,
                                      "cpu": CpuProbe.delta(s0, s1, len(lat) + errs.count),
                                      **errs.as_dict()}
            log("  p50 %s p99 %s ms, errors %d" % (
                fmt(summary(lat).get("p50")), fmt(summary(lat).get("p99")), errs.count))
            res["raw_api_throughput"] = []
            for c in concs:
                pre = quiet()
                log("raw API throughput c=%d for %.0fs" % (c, a.duration))
                s0 = docker_probe.snapshot()
                r = closed_loop(fac, c, a.duration)
                s1 = docker_probe.snapshot()
                r["cpu"] = CpuProbe.delta(s0, s1, r["ok"] + r["errors"])
                r["busy_at_start"] = pre
                res["raw_api_throughput"].append(r)
                log("  %.2f jobs/s, p50 %s ms, errors %d" % (
                    r["jobs_per_s"] or 0, fmt(r["latency_ms"].get("p50")), r["errors"]))
    except KeyboardInterrupt:
        log("interrupted; cleaning up")
        res["interrupted"] = True
    finally:
        if running["takod"] is not None:
            running["takod"].stop()
        res["conditions"]["bench_containers_removed_at_end"] = \
            cleanup_bench_containers(a.docker_sock)
        for d in data_dirs:
            shutil.rmtree(d, ignore_errors=True)
        shutil.rmtree(bin_dir, ignore_errors=True)
        res["conditions"]["foreign_after"] = top_foreign(1.0)
        res["wall_s"] = time.monotonic() - t_run0

    res["takod_log_summary"] = summarize_log(a.log) if os.path.exists(a.log) else None
    report(res)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(res, f, indent=1)
        log("raw numbers written to %s" % a.json)
    failed = any(d.get("error") for d in (res.get("by_backend") or {}).values())
    return 1 if res.get("interrupted") or failed else 0


def summarize_log(path):
    counts = {}
    samples = []
    with open(path, errors="replace") as f:
        for line in f:
            if line.startswith("#") or not line.strip():
                continue
            lvl = "other"
            for word in line.split():
                if word.startswith("level="):
                    lvl = word[6:]
                    break
            counts[lvl] = counts.get(lvl, 0) + 1
            if len(samples) < 15:
                samples.append(line.rstrip()[:300])
    return {"path": path, "lines_by_level": counts, "first_lines": samples}


def report_backend(res, backend):
    """One backend's tables, as a single-backend run printed them: `res` is the run's
    results with that backend's takod keys on top; its "targets" are set."""
    P = print
    p = res["params"]
    tl = res.get("takod_latency")
    dl = res.get("docker_run_latency")
    rl = res.get("raw_api_latency")
    P("Latency at concurrency 1 (ms, client-observed)")
    P("| | N | p50 | p90 | p99 | mean | max | errors |")
    P("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, d in (("takod POST /execute (backend %s, executors=%d)" % (
            backend, p["executors"]), tl),
                    ("docker run --rm", dl), ("raw Engine API create/start/wait/logs/rm", rl)):
        if d:
            L = d["latency_ms"]
            P("| %s | %d | %s | %s | %s | %s | %s | %d |" % (
                name, L["n"], fmt(L.get("p50")), fmt(L.get("p90")), fmt(L.get("p99")),
                fmt(L.get("mean")), fmt(L.get("max")), d["errors"]))
    if tl:
        s = tl["server_timing_p50"]
        P()
        P("takod server timing, p50 (ms): queue %s, startup %s, execution %s, total %s; "
          "client minus total_ms p50 %s" % (
              fmt(s["queue_ms"]), fmt(s["startup_ms"]), fmt(s["execution_ms"]),
              fmt(s["total_ms"]), fmt(tl.get("outside_server_total_p50_ms"))))
        s = tl["server_timing_p99"]
        P("takod server timing, p99 (ms): queue %s, startup %s, execution %s, total %s" % (
            fmt(s["queue_ms"]), fmt(s["startup_ms"]), fmt(s["execution_ms"]),
            fmt(s["total_ms"])))
    pc = res.get("takod_paced")
    if pc:
        L = pc["latency_ms"]
        s = pc["server_timing_p50"]
        P()
        P("Diagnostic (not used for the targets): takod at concurrency 1 with %.1f s idle "
          "after each reply, N=%d: p50 %s, p90 %s, p99 %s, max %s ms, errors %d; server "
          "p50: queue %s, startup %s, execution %s, total %s; client minus total_ms p50 %s" % (
              pc["gap_s"], L["n"], fmt(L.get("p50")), fmt(L.get("p90")), fmt(L.get("p99")),
              fmt(L.get("max")), pc["errors"], fmt(s["queue_ms"]), fmt(s["startup_ms"]),
              fmt(s["execution_ms"]), fmt(s["total_ms"]),
              fmt(pc.get("outside_server_total_p50_ms"))))
    if res.get("takod_rates"):
        P()
        P("takod at concurrency 1 at an offered rate (one client; each request is due at a "
          "fixed time and sent then, or when the one before it is answered, then it is late)")
        P("| offered jobs/s | N | p50 | p90 | p99 | max | p99/p50 | sent late | errors |")
        P("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for r in res["takod_rates"]:
            L = r["latency_ms"]
            ratio = L["p99"] / L["p50"] if L.get("p50") else None
            P("| %g | %d | %s | %s | %s | %s | %s | %d | %d |" % (
                r["rate"], L["n"], fmt(L.get("p50")), fmt(L.get("p90")), fmt(L.get("p99")),
                fmt(L.get("max")), fmt(ratio, 2), r["late"], r["errors"]))
    P()
    P("Throughput (jobs/s, closed loop, %.0f s per point; p50 latency under load in ms)"
      % p["duration_s"])
    hdr = "| | " + " | ".join("c=%d" % c for c in p["concurrency"]) + " |"
    P(hdr)
    P("|---|" + "---:|" * len(p["concurrency"]))

    def row(name, lst):
        cells = []
        for r in lst:
            e = " (%d err)" % r["errors"] if r["errors"] else ""
            cells.append("%.2f [%s]%s" % (r["jobs_per_s"] or 0,
                                          fmt(r["latency_ms"].get("p50"), 0), e))
        P("| %s | %s |" % (name, " | ".join(cells)))

    if res.get("takod_throughput"):
        row("takod (%s), executors=%d" % (backend, p["executors"]), res["takod_throughput"])
    if res.get("takod_throughput_exec8"):
        r = res["takod_throughput_exec8"]
        cells = ["-"] * (len(p["concurrency"]) - 1)
        e = " (%d err)" % r["errors"] if r["errors"] else ""
        cells.append("%.2f [%s]%s" % (r["jobs_per_s"] or 0, fmt(r["latency_ms"].get("p50"), 0), e))
        P("| takod (%s), executors=8 | %s |" % (backend, " | ".join(cells)))
    if res.get("docker_run_throughput"):
        row("docker run --rm", res["docker_run_throughput"])
    if res.get("raw_api_throughput"):
        row("raw Engine API cycle", res["raw_api_throughput"])

    P()
    P("CPU per job at concurrency 1 (ms; takod and its PostgreSQL: time on a CPU from "
      "/proc/PID/schedstat; the rest: utime+stime and /proc/stat ticks)")
    P("| | takod's own (master + acceptors + executors + helpers) | its PostgreSQL "
      "| runtime + containers under takod (OCI: crun, the launcher, the job) "
      "| dockerd + containerd | whole machine (all CPUs, incl. runtimes, shims, the job, "
      "other load) | of which this benchmark's client | steal (not counted: another VM's "
      "time) |")
    P("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, d in (("takod (%s)" % backend, tl), ("docker run", dl), ("raw API", rl)):
        if d:
            c = d["cpu"]
            own = d is tl
            P("| %s | %s | %s | %s | %s | %s | %s | %s |" % (
                name,
                fmt(c["takod"]["cpu_ms_per_job"], 2) if own else "-",
                fmt(c["postgres"]["cpu_ms_per_job"], 2) if own else "-",
                fmt(c["runtime"]["cpu_ms_per_job"], 1) if own else "-",
                fmt(c["docker"]["cpu_ms_per_job"], 1),
                fmt(c["machine"]["cpu_ms_per_job"], 1),
                fmt((c.get("client") or {}).get("cpu_ms_per_job"), 1),
                fmt(c["machine"].get("steal_ms_per_job"), 1)))
    if tl:
        c = tl["cpu"]["takod"]
        P("takod CPU by process (ms/job): " + ", ".join(
            "%s %.2f" % (k, v) for k, v in sorted(c["by_comm_ms_per_job"].items())))
        r = tl["cpu"]["runtime"]["by_comm_ms_per_job"]
        if any(v >= 0.05 for v in r.values()):
            P("runtime + containers under takod by process (ms/job): " + ", ".join(
                "%s %.1f" % (k, v) for k, v in sorted(r.items()) if v >= 0.05))
        if c["pids_gone"] or c["pids_new"]:
            P("NOTE: takod's process set changed during the CPU window: gone %s new %s"
              % (c["pids_gone"], c["pids_new"]))

    # ratios and targets
    P()
    P("Ratios and the earlier targets (the Docker backend's; issue #17's are below)")
    P("| metric | value | target | met |")
    P("|---|---:|---|---|")

    def tgt(name, val, target, ok):
        P("| %s | %s | %s | %s |" % (name, val, target,
                                     "-" if ok is None else ("yes" if ok else "**no**")))

    res["targets"] = {}
    tp50 = tl["latency_ms"].get("p50") if tl else None
    tp99 = tl["latency_ms"].get("p99") if tl else None
    dp50 = dl["latency_ms"].get("p50") if dl else None
    rp50 = rl["latency_ms"].get("p50") if rl else None
    if tp50 is not None:
        ok = tp50 <= 80
        tgt("takod p50", "%.1f ms" % tp50, "<= 80 ms", ok)
        res["targets"]["p50_le_80ms"] = ok
    if tp50 and dp50:
        x = dp50 / tp50
        ok = x >= 4
        tgt("docker run p50 / takod p50", "%.2fx" % x, ">= 4x", ok)
        res["targets"]["p50_4x_docker_run"] = ok
    if tp50 and rp50:
        tgt("raw API p50 / takod p50", "%.2fx" % (rp50 / tp50), "(context)", None)
    if tp50 and tp99:
        x = tp99 / tp50
        ok = x <= 2
        tgt("takod p99 / p50", "%.2f" % x, "<= 2", ok)
        res["targets"]["p99_le_2x_p50"] = ok
    tt = res.get("takod_throughput") or []
    dt = res.get("docker_run_throughput") or []
    rt = res.get("raw_api_throughput") or []
    if tt and dt and tt[-1]["jobs_per_s"] and dt[-1]["jobs_per_s"]:
        c = tt[-1]["concurrency"]
        x = tt[-1]["jobs_per_s"] / dt[-1]["jobs_per_s"] * 100
        ok = x >= 90
        tgt("takod (executors=%d) / docker run throughput at c=%d" % (p["executors"], c),
            "%.0f%%" % x, ">= 90%", ok)
        res["targets"]["throughput_c8_ge_90pct"] = ok
        e8 = res.get("takod_throughput_exec8")
        if e8 and e8["jobs_per_s"]:
            x8 = e8["jobs_per_s"] / dt[-1]["jobs_per_s"] * 100
            tgt("takod (executors=8) / docker run throughput at c=%d" % c, "%.0f%%" % x8,
                ">= 90%", x8 >= 90)
            res["targets"]["throughput_c8_exec8_ge_90pct"] = x8 >= 90
        if rt and rt[-1]["jobs_per_s"]:
            tgt("takod (executors=%d) / raw API throughput at c=%d" % (p["executors"], c),
                "%.0f%%" % (tt[-1]["jobs_per_s"] / rt[-1]["jobs_per_s"] * 100),
                "(context)", None)
    if tl:
        v = tl["cpu"]["takod"]["cpu_ms_per_job"]
        ok = v is not None and v <= 2
        tgt("takod's own CPU per job", "%.2f ms" % v if v is not None else "-", "<= 2 ms", ok)
        res["targets"]["cpu_le_2ms"] = ok

def backend_views(res):
    """[(backend, view, out)]: for each backend run, the run's results with that backend's
    takod keys on top (what report_backend reads), and its own dict in res."""
    out = []
    for b, d in (res.get("by_backend") or {}).items():
        view = dict(res)
        view.update(d)
        out.append((b, view, d))
    return out


def measured_phases(res):
    """[(name, result)] of every measured phase, in run order, for errors and conditions."""
    out = []
    for b, d in (res.get("by_backend") or {}).items():
        for key in ("takod_rates", "takod_latency", "takod_paced", "takod_throughput",
                    "takod_throughput_exec8"):
            v = d.get(key)
            for r in (v if isinstance(v, list) else [v] if v else []):
                name = "%s: %s" % (b, key)
                if "rate" in r:
                    name += " %g/s" % r["rate"]
                if "concurrency" in r:
                    name += " c=%d" % r["concurrency"]
                out.append((name, r))
    for key in ("docker_run_latency", "docker_run_throughput", "raw_api_latency",
                "raw_api_throughput"):
        v = res.get(key)
        for r in (v if isinstance(v, list) else [v] if v else []):
            out.append((key + (" c=%d" % r["concurrency"] if "concurrency" in r else ""), r))
    return out


def report(res):
    P = print
    m = res["machine"]
    P()
    P("takod job latency and throughput (%s)" % res["date"])
    P("machine: %s x %s, %s GiB, kernel %s, Docker %s (default runtime %s: docker run's), "
      "cgroup %s" % (
          m.get("nproc"), m.get("cpu_model"), m.get("mem_total_gib"), m.get("kernel"),
          m.get("docker_server"), m.get("docker_runtime"), m.get("cgroup")))
    if res.get("takod_binary"):
        b = res["takod_binary"]
        P("takod binary: %s (mtime %s, sha256 %s…), repo HEAD %s with %s modified tracked "
          "files" % (b["path"], b["mtime"], b["sha256"][:12], b.get("git_head"),
                     b.get("worktree_modified_files")))
    p = res["params"]
    P("job: python3 -c %r / {\"code\": %r}; client: http.client, %s" % (
        CODE, CODE, p["client_connection"]))
    P("command: %s" % res.get("command"))

    views = backend_views(res)
    if not views:  # --skip takod: the baselines alone
        P()
        report_backend(dict(res), "-")
    for b, view, d in views:
        h = d.get("takod_health") or {}
        P()
        P("=== takod with executor.backend = %s (/health: backend %s, runtime %s) ===" % (
            b, h.get("backend", "-"), h.get("runtime", "-")))
        P()
        if d.get("error"):
            P("**the takod phase failed: %s**" % d["error"])
            P()
        report_backend(view, b)
        d["targets"] = view.get("targets", {})

    report_cpu_by_phase(res, views)
    report_issue17(res)

    # errors and conditions
    phases = measured_phases(res)
    P()
    total_err = sum(r["errors"] for _n, r in phases)
    P("errors (non-200, success=false, wrong stdout, transport): %d" % total_err)
    for name, r in phases:
        if r["errors"]:
            P("  %s: %d errors (non-200 %d, success=false %d), e.g. %s" % (
                name, r["errors"], r["non_200"], r["success_false"], r["samples"][:3]))
    cond = res["conditions"]
    if "busy_before_start" in cond:
        P("machine busy before start: %.0f%%" % (cond["busy_before_start"] * 100))
    if cond.get("foreign_before") or cond.get("foreign_after"):
        P("other processes using CPU: before %s; after %s" % (
            cond.get("foreign_before"), cond.get("foreign_after")))
    P()
    P("Conditions per phase (other engineers' work shares this machine): machine busy just "
      "before the phase; machine busy during it; CPU of long-lived processes outside the "
      "benchmark during it, in % of one CPU (short-lived ones are missed)")
    P("| phase | busy before | busy during | foreign CPU | top foreign | dockerd pid |")
    P("|---|---:|---:|---:|---|---|")
    for name, r in phases:
        if "cpu" not in r:
            continue
        c = r["cpu"]
        dp = c.get("dockerd_pids") or [[], []]
        if dp[0] == dp[1]:
            dps = ",".join(map(str, dp[1]))
        elif set(dp[0]) & set(dp[1]):
            dps = "%s -> %s (another dockerd came or went)" % (dp[0], dp[1])
        else:
            dps = "**%s -> %s (dockerd restarted)**" % (dp[0], dp[1])
        P("| %s | %s%% | %s%% | %s%% | %s | %s |" % (
            name, fmt((r.get("busy_at_start") or 0) * 100, 0),
            fmt((c["machine"]["busy_fraction"] or 0) * 100, 0),
            fmt(c["foreign"]["cpu_pct_of_one_cpu"], 0), ", ".join(c["foreign"]["top"]),
            dps))
    ls = res.get("takod_log_summary")
    if ls:
        P("takod log %s: lines by level %s" % (ls["path"], ls["lines_by_level"]))
        for line in ls["first_lines"][:5]:
            P("  " + line)
    P("bench containers left and removed at the end: %s" %
      cond.get("bench_containers_removed_at_end"))
    P("wall time: %.0f s" % res.get("wall_s", 0))


def report_cpu_by_phase(res, views):
    """Machine CPU per job (all processes, /proc/stat) and takod's own, in every phase
    that has a CPU window, one column per backend and per baseline."""
    p = res["params"]
    cols = [(b, view) for b, view, _d in views]
    base = [(n, res.get(k + "_latency"), res.get(k + "_throughput") or [])
            for n, k in (("docker run", "docker_run"), ("raw API", "raw_api"))
            if res.get(k + "_latency") or res.get(k + "_throughput")]
    if not cols and not base:
        return
    P = print
    P()
    P("CPU per job by phase (ms): the whole machine (all processes, /proc/stat) / takod's "
      "own (processes named takod*; not the runtime, the containers or PostgreSQL)")
    P("| phase | " + " | ".join("takod, %s backend" % b for b, _v in cols) +
      "".join(" | %s" % n for n, _l, _t in base) + " |")
    P("|---|" + "---:|" * (len(cols) + len(base)))

    def cell(r, own):
        if not r or "cpu" not in r:
            return "-"
        c = r["cpu"]
        if own:
            return "%s / %s" % (fmt(c["machine"]["cpu_ms_per_job"], 1),
                                fmt(c["takod"]["cpu_ms_per_job"], 2))
        return fmt(c["machine"]["cpu_ms_per_job"], 1)

    def conc(lst, cc):
        return next((r for r in lst if r.get("concurrency") == cc), None)

    P("| c=1 back to back (executors=%d) | %s |" % (p["executors"], " | ".join(
        [cell(v.get("takod_latency"), True) for _b, v in cols] +
        [cell(l, False) for _n, l, _t in base])))
    for cc in p["concurrency"]:
        P("| throughput c=%d (executors=%d) | %s |" % (cc, p["executors"], " | ".join(
            [cell(conc(v.get("takod_throughput") or [], cc), True) for _b, v in cols] +
            [cell(conc(t, cc), False) for _n, _l, t in base])))
    if any(v.get("takod_throughput_exec8") for _b, v in cols):
        P("| throughput c=%d (executors=8) | %s |" % (max(p["concurrency"]), " | ".join(
            [cell(v.get("takod_throughput_exec8"), True) for _b, v in cols] +
            ["-" for _ in base])))


def report_issue17(res):
    """Issue #17's targets: the OCI backend's value, the Docker backend's from the same
    run beside it, the same-run ratio, and whether the OCI value meets the target.
    Sets res["targets_issue17"]."""
    runs = {}
    for b, d in (res.get("by_backend") or {}).items():
        kind = (d.get("takod_health") or {}).get("backend") or b
        runs.setdefault(kind, d)
    oci, dk = runs.get("oci"), runs.get("docker")
    if not oci:
        return
    P = print
    p = res["params"]
    cmax = max(p["concurrency"])
    dl = res.get("docker_run_latency")
    drun_p50 = dl["latency_ms"].get("p50") if dl else None

    def get(run, *path):
        v = run
        for k in path:
            if v is None:
                return None
            if isinstance(k, int):
                v = v[k] if isinstance(v, list) and len(v) > k else None
            else:
                v = v.get(k) if isinstance(v, dict) else None
        return v

    def thr(run, exec8):
        if run is None:
            return None
        if exec8:
            return get(run, "takod_throughput_exec8", "jobs_per_s")
        r = next((r for r in run.get("takod_throughput") or []
                  if r.get("concurrency") == cmax), None)
        return r and r.get("jobs_per_s")

    def metrics(run):
        if run is None:
            return {}
        p50 = get(run, "takod_latency", "latency_ms", "p50")
        p99 = get(run, "takod_latency", "latency_ms", "p99")
        c8 = next((r for r in run.get("takod_throughput") or []
                   if r.get("concurrency") == cmax), None)
        return {
            # the throughput phase's keys before the back-to-back phase's: with
            # --concurrency 1 both are named _c1 and the later one (the target's) stays
            "machine_cpu_ms_per_job_c%d" % cmax: get(c8, "cpu", "machine", "cpu_ms_per_job"),
            "machine_cpu_ms_per_job_c1": get(run, "takod_latency", "cpu", "machine",
                                             "cpu_ms_per_job"),
            "throughput_c%d_jobs_per_s" % cmax: thr(run, False),
            "throughput_c%d_exec8_jobs_per_s" % cmax: thr(run, True),
            "p50_ms": p50,
            "p99_ms": p99,
            "p99_over_p50": p99 / p50 if p50 and p99 else None,
            "docker_run_p50_over_p50": drun_p50 / p50 if drun_p50 and p50 else None,
            "takod_cpu_ms_per_job_c%d" % cmax: get(c8, "cpu", "takod", "cpu_ms_per_job"),
            "takod_cpu_ms_per_job_c1": get(run, "takod_latency", "cpu", "takod",
                                           "cpu_ms_per_job"),
        }

    mo, md = metrics(oci), metrics(dk)
    k8, k8e = "throughput_c%d_jobs_per_s" % cmax, "throughput_c%d_exec8_jobs_per_s" % cmax
    x8 = mo[k8] / md[k8] if mo.get(k8) and md.get(k8) else None
    x8e = mo[k8e] / md[k8e] if mo.get(k8e) and md.get(k8e) else None
    mo["throughput_c%d_over_docker_backend" % cmax] = x8
    mo["throughput_c%d_exec8_over_docker_backend" % cmax] = x8e

    def le(v, lim):
        return None if v is None else v <= lim

    def ge(v, lim):
        return None if v is None else v >= lim

    def less(o, d):  # how many times less the OCI backend spends or waits
        if not o or not d:
            return "-"
        return "%.1f× less" % (d / o) if d >= o else "%.1f× more" % (o / d)

    def more(o, d):
        return "%.2f×" % (o / d) if o and d else "-"

    def ms(v, nd=1):
        return "-" if v is None else ("%." + str(nd) + "f ms") % v

    def jps(v):
        return "-" if v is None else "%.2f jobs/s" % v

    def tail(mm):
        if not mm.get("p99_over_p50"):
            return "-"
        return "%.2f (p99 %s)" % (mm["p99_over_p50"], ms(mm["p99_ms"]))

    rows = [
        ("machine CPU per trivial job, back to back (c=1)", "machine_cpu_le_30ms",
         ms(mo["machine_cpu_ms_per_job_c1"]), ms(md.get("machine_cpu_ms_per_job_c1")),
         less(mo["machine_cpu_ms_per_job_c1"], md.get("machine_cpu_ms_per_job_c1")),
         "≤ 30 ms (Docker backend: 130–195)", le(mo["machine_cpu_ms_per_job_c1"], 30)),
        ("machine CPU per job at c=%d, executors=%d" % (cmax, p["executors"]), None,
         ms(mo["machine_cpu_ms_per_job_c%d" % cmax]),
         ms(md.get("machine_cpu_ms_per_job_c%d" % cmax)),
         less(mo["machine_cpu_ms_per_job_c%d" % cmax],
              md.get("machine_cpu_ms_per_job_c%d" % cmax)), "(context)", None),
        ("throughput at c=%d, executors=%d" % (cmax, p["executors"]),
         "throughput_c8_ge_4x_docker_backend", jps(mo[k8]), jps(md.get(k8)),
         more(mo[k8], md.get(k8)), "≥ 4× the Docker backend's (≥ 40 jobs/s here)",
         ge(x8, 4)),
    ]
    if mo.get(k8e) or md.get(k8e):
        rows.append(("throughput at c=%d, executors=8" % cmax,
                     "throughput_c8_exec8_ge_4x_docker_backend", jps(mo[k8e]),
                     jps(md.get(k8e)), more(mo[k8e], md.get(k8e)),
                     "≥ 4× the Docker backend's", ge(x8e, 4)))
    rows += [
        ("back-to-back p50", "p50_le_20ms", ms(mo["p50_ms"]), ms(md.get("p50_ms")),
         less(mo["p50_ms"], md.get("p50_ms")), "≤ 20 ms", le(mo["p50_ms"], 20)),
        ("back-to-back p99 / p50", "p99_le_2x_p50", tail(mo), tail(md), "", "≤ 2",
         le(mo["p99_over_p50"], 2)),
        ("`docker run` p50 / takod p50 (docker run p50 %s)" % ms(drun_p50),
         "p50_12x_docker_run",
         "%s×" % fmt(mo["docker_run_p50_over_p50"], 2) if mo["docker_run_p50_over_p50"]
         else "-",
         "%s×" % fmt(md.get("docker_run_p50_over_p50"), 2)
         if md.get("docker_run_p50_over_p50") else "-", "", "≥ 12×",
         ge(mo["docker_run_p50_over_p50"], 12)),
        ("takod's own CPU per job (c=1)", "takod_cpu_le_2ms",
         ms(mo["takod_cpu_ms_per_job_c1"], 2), ms(md.get("takod_cpu_ms_per_job_c1"), 2), "",
         "≤ 2 ms", le(mo["takod_cpu_ms_per_job_c1"], 2)),
        ("takod's own CPU per job at c=%d" % cmax, None,
         ms(mo["takod_cpu_ms_per_job_c%d" % cmax], 2),
         ms(md.get("takod_cpu_ms_per_job_c%d" % cmax), 2), "", "(context)", None),
    ]
    P()
    P("Issue #17's targets: the OCI backend against the Docker backend, same run")
    P("| metric | OCI backend | Docker backend | same-run ratio | target (OCI backend) | met |")
    P("|---|---:|---:|---:|---|---|")
    met = {}
    for name, key, vo, vd, ratio, target, ok in rows:
        P("| %s | %s | %s | %s | %s | %s |" % (
            name, vo, vd, ratio or "-", target,
            "-" if ok is None else ("yes" if ok else "**no**")))
        if key:
            met[key] = ok
    res["targets_issue17"] = {"oci": mo, "docker": md, "docker_run_p50_ms": drun_p50,
                              "met": met}


if __name__ == "__main__":
    sys.exit(main())
