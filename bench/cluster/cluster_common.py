"""cluster_common.py — what bench/cluster's two drivers share (Python 3 standard library).

  PgServer   a PostgreSQL of the bench's own: initdb on a temp dir as an unprivileged
             user (the `postgres` account Debian's package makes, or --pg-user), listening
             on 127.0.0.1 and a free port, trust authentication, the server's defaults
             otherwise (fsync and synchronous_commit on: commits cost what they cost)
  Node       one takod node (its own port and data dir) with database.url pointing there
  Haproxy    Debian's haproxy in front of some nodes (conf/haproxy.cfg, addresses replaced)

Every wait is bounded; every process started is stopped by pid (stop()).
"""
import http.client
import json
import os
import pwd
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


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pct(values, p):
    """Percentile with linear interpolation between closest ranks (numpy's default)."""
    if not values:
        return None
    s = sorted(values)
    k = (len(s) - 1) * p / 100.0
    lo = int(k)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def pg_bindir():
    best = None
    for v in os.listdir("/usr/lib/postgresql"):
        if os.access(f"/usr/lib/postgresql/{v}/bin/postgres", os.X_OK) and v.isdigit():
            if best is None or int(v) > int(best):
                best = v
    if best is None:
        raise SystemExit("no PostgreSQL server binaries under /usr/lib/postgresql (apt-get install postgresql)")
    return f"/usr/lib/postgresql/{best}/bin"


def machine():
    model = "?"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo") as f:
        mem_kb = int(f.readline().split()[1])
    return f"{os.cpu_count()} CPUs ({model}), {mem_kb / 1048576:.0f} GiB RAM, {os.uname().release}"


class PgServer:
    def __init__(self, user="postgres", base=None):
        self.user = user
        pw = pwd.getpwnam(user)
        self.uid, self.gid = pw.pw_uid, pw.pw_gid
        self.bindir = pg_bindir()
        self.dir = tempfile.mkdtemp(prefix="takod-bench-pg-", dir=base or "/var/tmp")
        os.chown(self.dir, self.uid, self.gid)
        os.chmod(self.dir, 0o700)
        self.pgdata = os.path.join(self.dir, "pg")
        self.port = free_port()
        self.proc = None
        self.conninfo = f"host=127.0.0.1 port={self.port} dbname=takod user=takod"

    def _as_user(self):
        os.setgid(self.gid)
        os.setgroups([])
        os.setuid(self.uid)

    def start(self, timeout=60):
        r = subprocess.run([f"{self.bindir}/initdb", "-D", self.pgdata, "-U", "takod", "-A", "trust",
                            "-E", "UTF8", "--no-sync"], capture_output=True, text=True,
                           preexec_fn=self._as_user, cwd=self.dir, timeout=120)
        if r.returncode != 0:
            raise SystemExit(f"initdb failed: {r.stderr}")
        self.logf = open(os.path.join(self.dir, "postgresql.log"), "ab")
        self.proc = subprocess.Popen(
            [f"{self.bindir}/postgres", "-D", self.pgdata, "-c", "listen_addresses=127.0.0.1",
             "-c", f"port={self.port}", "-c", f"unix_socket_directories={self.dir}",
             "-c", "max_connections=200"],
            stdout=self.logf, stderr=subprocess.STDOUT, preexec_fn=self._as_user, cwd=self.dir)
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"postgres exited with {self.proc.returncode}; see {self.dir}/postgresql.log")
            if self.psql("SELECT 1", db="postgres", check=False).returncode == 0:
                break
            time.sleep(0.2)
        else:
            raise SystemExit("postgres did not accept connections in time")
        self.psql("CREATE DATABASE takod", db="postgres")
        log(f"PostgreSQL ({self.bindir}) on 127.0.0.1:{self.port}, data {self.pgdata}")
        return self

    def psql(self, sql, db="takod", check=True, timeout=600):
        r = subprocess.run(["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-At", "-h", "127.0.0.1",
                            "-p", str(self.port), "-U", "takod", "-d", db, "-c", sql],
                           capture_output=True, text=True, timeout=timeout)
        if check and r.returncode != 0:
            raise SystemExit(f"psql failed: {sql[:200]}\n{r.stderr}")
        return r

    def query(self, sql):
        return self.psql(sql).stdout.strip()

    def version(self):
        return self.query("SHOW server_version")

    def stop(self, keep=False):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)  # fast shutdown
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if not keep:
            shutil.rmtree(self.dir, ignore_errors=True)


class Node:
    """One takod node: its own port and data dir, database.url on the bench's PostgreSQL."""

    def __init__(self, takod, conf, conninfo, name, overrides=(), executors=2, acceptors=1,
                 rootfs_dir=None, base=None):
        self.takod, self.name = takod, name
        self.port = free_port()
        self.data_dir = tempfile.mkdtemp(prefix=f"takod-bench-{name}-", dir=base or "/var/tmp")
        self.url = f"http://127.0.0.1:{self.port}"
        self.args = [takod, "-c", conf]
        for o in (f"server.listen=127.0.0.1:{self.port}", f"server.data_dir={self.data_dir}",
                  f"server.executors={executors}", f"server.acceptors={acceptors}",
                  f"server.node_id={name}", f"database.url={conninfo}",
                  "auth.rate_limit_per_minute=0",
                  f"executor.rootfs_dir={rootfs_dir or '/var/tmp/takod-bench-rootfs'}",
                  *overrides):
            self.args += ["-o", o]
        self.proc = None

    def start(self, timeout=120):
        self.logf = open(os.path.join(self.data_dir, "takod.log"), "ab")
        self.proc = subprocess.Popen(self.args, stdout=self.logf, stderr=subprocess.STDOUT)
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"takod {self.name} exited with {self.proc.returncode}; see "
                                 f"{self.data_dir}/takod.log:\n{self.log_tail()}")
            try:
                st, body = request(self.url, "GET", "/health", timeout=2)
                if st == 200:
                    self.health = body
                    return self
            except OSError:
                pass
            time.sleep(0.2)
        raise SystemExit(f"takod {self.name} not healthy in {timeout}s:\n{self.log_tail()}")

    def log_tail(self, n=4000):
        try:
            with open(os.path.join(self.data_dir, "takod.log"), "rb") as f:
                return f.read()[-n:].decode("utf-8", "replace")
        except OSError:
            return ""

    def stop(self, keep=False, timeout=60):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if not keep:
            shutil.rmtree(self.data_dir, ignore_errors=True)


class Haproxy:
    """haproxy in front of `nodes` on 127.0.0.1:<free port>: conf/haproxy.cfg (the sample the
    docs recommend) with its bind and server lines replaced, or a plain round robin when the
    tree has none."""

    def __init__(self, nodes, base=None):
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="takod-bench-haproxy-", dir=base or "/var/tmp")
        self.cfg = os.path.join(self.dir, "haproxy.cfg")
        servers = [f"    server {n.name} 127.0.0.1:{n.port} check" for n in nodes]
        sample = os.path.join(REPO, "conf", "haproxy.cfg")
        if os.path.exists(sample):
            out = []
            with open(sample) as f:
                for line in f:
                    w = line.split()
                    if w[:1] == ["bind"]:
                        line = f"    bind 127.0.0.1:{self.port}\n"
                    elif w[:1] == ["server"]:
                        if servers:
                            line = "\n".join(servers) + "\n"
                            servers = []
                        else:
                            continue
                    out.append(line)
            text = "".join(out)
        else:
            text = f"""global
    maxconn 4096
defaults
    mode http
    timeout connect 5s
    timeout client 330s
    timeout server 330s
frontend takod
    bind 127.0.0.1:{self.port}
    default_backend nodes
backend nodes
    balance roundrobin
    option httpchk GET /health
    default-server inter 1s fall 2 rise 2
""" + "\n".join(servers) + "\n"
        with open(self.cfg, "w") as f:
            f.write(text)
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = None

    def start(self, timeout=30):
        logf = open(os.path.join(self.dir, "haproxy.log"), "ab")
        self.proc = subprocess.Popen(["haproxy", "-db", "-f", self.cfg], stdout=logf, stderr=logf)
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"haproxy exited with {self.proc.returncode}; see {self.dir}/haproxy.log")
            try:
                if request(self.url, "GET", "/health", timeout=2)[0] == 200:
                    return self
            except OSError:
                pass
            time.sleep(0.2)
        raise SystemExit("haproxy did not answer in time")

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


def request(url, method, path, body=None, timeout=120, conn=None):
    """(status, parsed JSON body or None). With conn (an http.client connection), keep-alive."""
    host = url.split("//", 1)[1]
    c = conn or http.client.HTTPConnection(host, timeout=timeout)
    data = json.dumps(body).encode() if body is not None else None
    headers = {"Content-Type": "application/json"} if data else {}
    try:
        c.request(method, path, body=data, headers=headers)
        r = c.getresponse()
        raw = r.read()
    finally:
        if conn is None:
            c.close()
    try:
        return r.status, json.loads(raw) if raw else None
    except ValueError:
        return r.status, None


def default_paths():
    takod = os.environ.get("TAKOD_BIN", os.path.join(REPO, "build", "takod"))
    conf = os.path.join(REPO, "conf", "tako.conf")
    return takod, conf
