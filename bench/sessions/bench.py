#!/usr/bin/env python3
"""takod sessions benchmark (docs/SESSIONS.md, issue #19).

One run measures, on this machine, with a takod of its own:

  1. cell latency: `x += 1` on one warm session, back to back on one keep-alive
     connection (-n cells after --warmup): client-observed p50/p90/p99/mean and the
     server's own timing.execution_ms / timing.total_ms; the final `x` is checked.
  2. session creation: --create-n sessions made one after the other (POST /sessions →
     201, the interpreter up) and each closed at once (DELETE): p50/p99 of both.
  3. idle sessions one machine holds: --max sessions (takod runs with
     sessions.max_total = sessions.max_per_key = --max) created one after the other and
     left idle; memory per idle session from /proc/meminfo MemAvailable before and after
     (the whole machine: noisy when other work runs on it), the sum of the session
     containers' cgroup memory.current, and the sessions process's RSS; then every one is
     closed and the containers are checked gone.

Python 3 standard library only. Talks to 127.0.0.1 only (and reads /proc, /sys/fs/cgroup,
the OCI runtime's state list and `docker inspect` for the containers' cgroups). Every loop
is bounded in count and in time. Run as root, after a build: `python3 bench/sessions/bench.py`.
Prints a markdown report on stdout (progress on stderr); `--json FILE` also writes the raw
numbers.
"""

import argparse
import datetime
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
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.abspath(os.path.join(HERE, "..", ".."))


def log(msg):
    print("[%s] %s" % (time.strftime("%H:%M:%S"), msg), file=sys.stderr, flush=True)


def pct(values, p):
    """Percentile with linear interpolation between closest ranks (numpy's default)."""
    if not values:
        return None
    s = sorted(values)
    k = (len(s) - 1) * p / 100.0
    lo = int(k)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def fmt(v, nd=2):
    return "-" if v is None else ("%.*f" % (nd, v))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def meminfo(field="MemAvailable"):
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    return None


def rss_of(pid):
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def fnv1a(text):
    h = 1469598103934665603
    for b in text.encode():
        h = ((h ^ b) * 1099511628211) & 0xFFFFFFFFFFFFFFFF
    return h or 1


class Takod:
    def __init__(self, binary, conf, data_dir, log_path, opts):
        self.binary, self.conf, self.data_dir, self.log_path = binary, conf, data_dir, log_path
        self.opts = list(opts)
        self.port = free_port()
        self.proc = None

    def start(self, timeout=180):
        args = [self.binary, "-c", self.conf,
                "-o", "server.listen=127.0.0.1:%d" % self.port,
                "-o", "server.data_dir=%s" % self.data_dir,
                "-o", "server.log_level=warn"]
        for o in self.opts:
            args += ["-o", o]
        self.logf = open(self.log_path, "ab")
        self.logf.write(("\n# %s: %s\n" % (datetime.datetime.now().isoformat(timespec="seconds"),
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
                st, body = request(self.port, "GET", "/health", timeout=2)
                if st == 200:
                    h = json.loads(body)
                    if h.get("docker_available") and h.get("database_available"):
                        return h
            except (OSError, http.client.HTTPException, ValueError):
                pass
            time.sleep(0.2)
        raise RuntimeError("takod did not become healthy in %ds" % timeout)

    def stop(self, timeout=30):
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

    def child(self, title):
        """The pid of the master's child with this process title, or None."""
        for d in os.listdir("/proc"):
            if not d.isdigit():
                continue
            try:
                with open("/proc/%s/stat" % d) as f:
                    stat = f.read()
                if int(stat[stat.rindex(")") + 2:].split()[1]) != self.proc.pid:
                    continue
                with open("/proc/%s/cmdline" % d, "rb") as f:
                    if f.read().split(b"\0")[0].decode().strip() == title:
                        return int(d)
            except (OSError, ValueError):
                pass
        return None

    def session_container_pids(self):
        """{container id: init pid} of this takod's session containers (a session's
        container is made over a slot directory named s…, workers/sessions.c)."""
        instance = "%s:%s" % (socket.gethostname(), self.data_dir)
        base = "/run/takod/%016x" % fnv1a(instance)
        out = {}
        for rt in (os.listdir(base) if os.path.isdir(base) else []):
            if not os.path.isdir(os.path.join(base, rt)):
                continue
            listed = subprocess.run([rt, "--root", os.path.join(base, rt), "list", "--format",
                                     "json"], capture_output=True, text=True, timeout=30).stdout
            for c in json.loads(listed or "[]") or []:
                if os.path.basename(c.get("bundle", "")).startswith("s") and c.get("pid"):
                    out[c["id"]] = c["pid"]
        ids = subprocess.run(["docker", "ps", "-q", "--filter", "label=takod.instance=" + instance],
                             capture_output=True, text=True, timeout=30).stdout.split()
        if ids:
            res = subprocess.run(["docker", "inspect", "--format",
                                  "{{.Id}} {{.State.Pid}}{{range .Mounts}} {{.Source}}{{end}}",
                                  *ids], capture_output=True, text=True, timeout=30).stdout
            for line in res.splitlines():
                f = line.split()
                if any("/slots/s" in m for m in f[2:]):
                    out[f[0]] = int(f[1])
        return out


def cgroup_memory(pid):
    """(usage, rss) bytes of a process's memory cgroup: v2 memory.current and memory.stat
    anon, or v1 memory.usage_in_bytes and memory.stat total_rss; None where unreadable."""
    try:
        with open("/proc/%d/cgroup" % pid) as f:
            lines = f.read().splitlines()
    except OSError:
        return None, None
    for line in lines:  # v1 (or hybrid) first: its memory controller is where the charge is
        parts = line.split(":", 2)
        if len(parts) == 3 and "memory" in parts[1].split(","):
            d = "/sys/fs/cgroup/memory" + parts[2]
            return read_int(d + "/memory.usage_in_bytes"), stat_field(d + "/memory.stat", "total_rss")
    for line in lines:
        if line.startswith("0::"):
            d = "/sys/fs/cgroup" + line[3:]
            return read_int(d + "/memory.current"), stat_field(d + "/memory.stat", "anon")
    return None, None


def read_int(path):
    try:
        with open(path) as f:
            return int(f.read())
    except (OSError, ValueError):
        return None


def stat_field(path, name):
    try:
        with open(path) as f:
            for line in f:
                k, _, v = line.partition(" ")
                if k == name:
                    return int(v)
    except (OSError, ValueError):
        pass
    return None


def request(port, method, path, body=None, timeout=60, conn=None):
    own = conn is None
    c = conn or http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        data = json.dumps(body).encode() if body is not None else None
        c.request(method, path, data, {"Content-Type": "application/json"} if data else {})
        r = c.getresponse()
        return r.status, r.read()
    finally:
        if own:
            c.close()


def stats(values, scale=1000.0):
    return {"n": len(values), "p50": pct(values, 50) * scale, "p90": pct(values, 90) * scale,
            "p99": pct(values, 99) * scale, "mean": sum(values) / len(values) * scale,
            "max": max(values) * scale} if values else {"n": 0}


def bench_cells(port, n, warmup, time_cap):
    st, body = request(port, "POST", "/sessions", {})
    if st != 201:
        raise RuntimeError("POST /sessions: %d %s" % (st, body[:300]))
    sid = json.loads(body)["session_id"]
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    path = "/sessions/%s/execute" % sid
    lat, exec_ms, total_ms, errors, ok = [], [], [], 0, 0
    try:
        request(port, "POST", path, {"code": "x = 0"}, conn=conn)
        t_end = time.monotonic() + time_cap
        for i in range(warmup + n):
            if time.monotonic() > t_end:
                log("cells: time cap reached after %d" % i)
                break
            t0 = time.perf_counter()
            st, body = request(port, "POST", path, {"code": "x += 1"}, conn=conn)
            dt = time.perf_counter() - t0
            j = json.loads(body) if st == 200 else {}
            if st != 200 or j.get("status") != "ok":
                errors += 1
                continue
            ok += 1
            if i >= warmup:
                lat.append(dt)
                exec_ms.append(j["timing"]["execution_ms"] / 1000.0)
                total_ms.append(j["timing"]["total_ms"] / 1000.0)
        st, body = request(port, "POST", path, {"code": "x"}, conn=conn)
        final = json.loads(body).get("result") if st == 200 else None
    finally:
        conn.close()
        st, body = request(port, "DELETE", "/sessions/" + sid)
        if st != 200:
            raise RuntimeError("DELETE /sessions/%s: %d %s" % (sid, st, body[:300]))
    return {"client_ms": stats(lat), "server_execution_ms": stats(exec_ms),
            "server_total_ms": stats(total_ms), "errors": errors,
            "final_x": final, "expected_x": str(ok)}


def bench_create(port, n, time_cap):
    create, delete, errors = [], [], 0
    t_end = time.monotonic() + time_cap
    for i in range(n):
        if time.monotonic() > t_end:
            log("create: time cap reached after %d" % i)
            break
        t0 = time.perf_counter()
        st, body = request(port, "POST", "/sessions", {})
        t1 = time.perf_counter()
        if st != 201:
            errors += 1
            log("create: %d %s" % (st, body[:200]))
            time.sleep(0.5)
            continue
        create.append(t1 - t0)
        sid = json.loads(body)["session_id"]
        t0 = time.perf_counter()
        st, _ = request(port, "DELETE", "/sessions/" + sid)
        delete.append(time.perf_counter() - t0)
        if st != 200:
            errors += 1
    return {"create_ms": stats(create), "delete_ms": stats(delete), "errors": errors}


def bench_idle(t, k, settle_s, time_cap):
    port = t.port
    sess_pid = t.child("takod: sessions 0")
    time.sleep(settle_s)
    before = meminfo()
    rss_before = rss_of(sess_pid) if sess_pid else None
    ids, create, errors = [], [], 0
    t_end = time.monotonic() + time_cap
    for i in range(k):
        if time.monotonic() > t_end:
            log("idle: time cap reached after %d" % i)
            break
        t0 = time.perf_counter()
        st, body = request(port, "POST", "/sessions", {})
        if st != 201:
            errors += 1
            log("idle: create %d: %d %s" % (i, st, body[:200]))
            break
        create.append(time.perf_counter() - t0)
        ids.append(json.loads(body)["session_id"])
    # every session has run one cell: an interpreter that has really started
    for sid in ids:
        request(port, "POST", "/sessions/%s/execute" % sid, {"code": "x = 1"})
    time.sleep(settle_s)
    after = meminfo()
    pids = t.session_container_pids()
    mem = [cgroup_memory(p) for p in pids.values()]
    cg = [u for u, _ in mem if u is not None]
    rss = [r for _, r in mem if r is not None]
    rss_after = rss_of(sess_pid) if sess_pid else None
    held = len(ids)
    st, body = request(port, "GET", "/sessions")
    listed = json.loads(body)["count"] if st == 200 else None
    st_over, _ = request(port, "POST", "/sessions", {})  # one past max_total
    if st_over == 201:
        log("idle: a session past sessions.max_total was created")
    t0 = time.perf_counter()
    for sid in ids:
        st, body = request(port, "DELETE", "/sessions/" + sid)
        if st != 200:
            errors += 1
            log("idle: DELETE %s: %d %s" % (sid, st, body[:200]))
    delete_all_s = time.perf_counter() - t0
    deadline = time.monotonic() + 30
    while t.session_container_pids() and time.monotonic() < deadline:
        time.sleep(0.2)
    left = len(t.session_container_pids())
    return {
        "k": k, "held": held, "listed": listed, "errors": errors, "over_cap_status": st_over,
        "mem_available_before": before, "mem_available_after": after,
        "per_session_mem_available": (before - after) / held if held else None,
        "containers_seen": len(pids), "cgroup_sum": sum(cg) if cg else None,
        "cgroup_per_session": sum(cg) / len(cg) if cg else None,
        "cgroup_max": max(cg) if cg else None,
        "cgroup_rss_per_session": sum(rss) / len(rss) if rss else None,
        "sessions_rss_before": rss_before, "sessions_rss_after": rss_after,
        "create_ms": stats(create), "delete_all_s": delete_all_s, "containers_left": left,
    }


def machine_info():
    info = {"nproc": os.cpu_count(), "kernel": platform.release()}
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                info["cpu_model"] = line.split(":", 1)[1].strip()
                break
        info["mem_total_gib"] = round(meminfo("MemTotal") / 2 ** 30, 1)
    except (OSError, TypeError):
        pass
    return info


def mib(v):
    return "-" if v is None else "%.1f MiB" % (v / 2 ** 20)


def report(res):
    m, h = res["machine"], res["health"]
    out = ["## Sessions (issue #19)", "",
           "%s, %s CPUs, %s GiB RAM, kernel %s; takod backend %s, runtime %s; %s." % (
               m.get("cpu_model", "?"), m.get("nproc"), m.get("mem_total_gib"), m.get("kernel"),
               h.get("backend"), h.get("runtime"), res["when"]),
           "Command: `%s`" % res["command"], ""]
    c = res.get("cells")
    if c:
        out += ["### Cell latency: `x += 1` on a warm session (one keep-alive connection)", "",
                "| measure | n | p50 ms | p90 ms | p99 ms | mean ms | max ms |",
                "|---|---|---|---|---|---|---|"]
        for name, key in [("client-observed", "client_ms"),
                          ("server timing.total_ms", "server_total_ms"),
                          ("server timing.execution_ms", "server_execution_ms")]:
            s = c[key]
            out.append("| %s | %d | %s | %s | %s | %s | %s |" % (
                name, s["n"], fmt(s.get("p50"), 3), fmt(s.get("p90"), 3), fmt(s.get("p99"), 3),
                fmt(s.get("mean"), 3), fmt(s.get("max"), 3)))
        out += ["", "Errors: %d; final `x` = %s (expected %s)." % (
            c["errors"], c["final_x"], c["expected_x"]), ""]
    cr = res.get("create")
    if cr:
        out += ["### Session creation (one after the other, each closed at once)", "",
                "| measure | n | p50 ms | p90 ms | p99 ms | mean ms | max ms |",
                "|---|---|---|---|---|---|---|"]
        for name, key in [("POST /sessions → 201 (interpreter up)", "create_ms"),
                          ("DELETE /sessions/{id}", "delete_ms")]:
            s = cr[key]
            out.append("| %s | %d | %s | %s | %s | %s | %s |" % (
                name, s["n"], fmt(s.get("p50"), 1), fmt(s.get("p90"), 1), fmt(s.get("p99"), 1),
                fmt(s.get("mean"), 1), fmt(s.get("max"), 1)))
        out += ["", "Errors: %d." % cr["errors"], ""]
    i = res.get("idle")
    if i:
        out += ["### Idle sessions held (sessions.max_total = %d)" % i["k"], "",
                "| measure | value |", "|---|---|",
                "| sessions created and held idle (each ran one cell) | %d of %d (GET /sessions: %s) |"
                % (i["held"], i["k"], i["listed"]),
                "| one more past max_total | HTTP %s |" % i["over_cap_status"],
                "| creation p50 / p99 (filling up) | %s / %s ms |" % (
                    fmt(i["create_ms"].get("p50"), 1), fmt(i["create_ms"].get("p99"), 1)),
                "| MemAvailable before → after | %s → %s |" % (
                    mib(i["mem_available_before"]), mib(i["mem_available_after"])),
                "| **memory per idle session (MemAvailable delta / sessions)** | **%s** |"
                % mib(i["per_session_mem_available"]),
                "| containers' cgroup memory usage: sum over %d | %s |" % (
                    i["containers_seen"], mib(i["cgroup_sum"])),
                "| cgroup memory usage per session (mean / max) | %s / %s |" % (
                    mib(i["cgroup_per_session"]), mib(i["cgroup_max"])),
                "| cgroup anonymous memory (rss) per session, mean | %s |" % mib(
                    i["cgroup_rss_per_session"]),
                "| sessions process RSS before → after | %s → %s |" % (
                    mib(i["sessions_rss_before"]), mib(i["sessions_rss_after"])),
                "| closing all of them | %.2f s |" % i["delete_all_s"],
                "| session containers left after closing | %d |" % i["containers_left"], "",
                "MemAvailable is the whole machine's: other work on it moves it, so the per-session"
                " figure is approximate; the cgroup figures are the containers' own charge (usage:"
                " the interpreter, its page cache and tmpfs; rss: anonymous memory only), without the runtime's shim or kernel"
                " objects outside the cgroup.", ""]
    return "\n".join(out)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-n", type=int, default=1000, help="cells timed (default 1000)")
    ap.add_argument("--warmup", type=int, default=50, help="cells before timing (default 50)")
    ap.add_argument("--create-n", type=int, default=20, help="sessions created (default 20)")
    ap.add_argument("--max", type=int, default=64, help="idle sessions held (default 64)")
    ap.add_argument("--settle", type=float, default=3.0, help="s of quiet before a memory reading")
    ap.add_argument("--time-cap", type=float, default=300.0, help="s per phase at most")
    ap.add_argument("--skip", default="", help="comma list of phases to skip: cells,create,idle")
    ap.add_argument("--takod", default=os.path.join(REPO, "build", "takod"))
    ap.add_argument("--conf", default=os.path.join(REPO, "conf", "tako.conf"))
    ap.add_argument("-o", "--takod-opt", action="append", default=[], metavar="KEY=VALUE",
                    help="extra takod -o settings (e.g. executor.backend=docker)")
    ap.add_argument("--json", metavar="FILE", help="also write the raw numbers here")
    ap.add_argument("--log", default=None, help="takod's log (default: in its data dir, removed)")
    a = ap.parse_args()
    if not (1 <= a.max <= 4096 and 1 <= a.n <= 100000 and 0 <= a.warmup <= 10000
            and 1 <= a.create_n <= 1000):
        ap.error("--max 1..4096, -n 1..100000, --warmup 0..10000, --create-n 1..1000")
    skip = set(filter(None, a.skip.split(",")))
    data_dir = tempfile.mkdtemp(prefix="takod-bench-sessions-")
    log_path = a.log or os.path.join(data_dir, "takod.log")
    # the rate limit off: the cells phase alone sends more than its default burst
    opts = ["server.executors=1", "auth.rate_limit_per_minute=0", "sessions.max_total=%d" % a.max,
            "sessions.max_per_key=%d" % a.max, *a.takod_opt]
    t = Takod(a.takod, a.conf, data_dir, log_path, opts)
    res = {"when": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
           "command": " ".join(["python3", "bench/sessions/bench.py", *sys.argv[1:]]),
           "machine": machine_info(), "opts": opts}
    rc = 0
    try:
        log("starting takod (%s)" % " ".join(opts))
        res["health"] = t.start()
        if "cells" not in skip:
            log("cells: %d warm-up + %d `x += 1`" % (a.warmup, a.n))
            res["cells"] = bench_cells(t.port, a.n, a.warmup, a.time_cap)
        if "create" not in skip:
            log("create: %d sessions" % a.create_n)
            res["create"] = bench_create(t.port, a.create_n, a.time_cap)
        if "idle" not in skip:
            log("idle: %d sessions" % a.max)
            res["idle"] = bench_idle(t, a.max, a.settle, a.time_cap)
    except Exception as e:  # noqa: BLE001 -- reported, and the takod stopped
        log("failed: %s: %s" % (type(e).__name__, e))
        res["error"] = "%s: %s" % (type(e).__name__, e)
        rc = 1
    finally:
        t.stop()
        if not a.log and not os.environ.get("TAKO_KEEP") and rc == 0:
            shutil.rmtree(data_dir, ignore_errors=True)
        elif rc:
            log("takod's data dir kept: %s" % data_dir)
    if "health" in res:
        print(report(res))
    if res.get("error"):
        print("\n**The run failed:** %s" % res["error"])
    if a.json:
        with open(a.json, "w") as f:
            json.dump(res, f, indent=2)
    return rc


if __name__ == "__main__":
    sys.exit(main())
