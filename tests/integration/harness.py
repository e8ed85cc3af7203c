"""
harness.py — drive the real takod binary in integration tests (PgBouncer's test/utils.py
in spirit): start it on a free loopback port with a fresh data_dir (so it runs its own
managed PostgreSQL), talk HTTP to it with the standard library, query its database with
psql, send it signals, and check that nothing is left behind.

Environment (set by ctest, see tests/CMakeLists.txt):
  TAKOD_BIN        the takod binary under test
  TAKO_SOURCE_DIR  the source tree (for conf/tako.conf)
"""
import glob
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request

TAKOD_BIN = os.environ.get("TAKOD_BIN", os.path.join(os.path.dirname(__file__), "../../build/takod"))
SOURCE_DIR = os.environ.get("TAKO_SOURCE_DIR", os.path.join(os.path.dirname(__file__), "../.."))
CONF = os.path.join(SOURCE_DIR, "conf", "tako.conf")
WARM_CONTAINERS = 2  # server.warm_containers' default: each executor's started containers


def _engine_runtimes():
    out = subprocess.run(["docker", "info", "--format", "{{json .Runtimes}}"],
                         capture_output=True, text=True, timeout=30).stdout
    try:
        return set(json.loads(out or "{}"))
    except ValueError:
        return set()


def _crun_works():
    """crun registered with the engine (scripts/setup.sh does it) and able to start a
    container here: what docker.runtime = auto's probe finds, so takod uses it."""
    if "crun" not in _engine_runtimes():
        return False
    r = subprocess.run(["docker", "run", "--rm", "--runtime", "crun", "--network", "none",
                        "--label", "takod.test=crun-probe", "code-executor:latest", "/bin/true"],
                       capture_output=True, timeout=60)
    return r.returncode == 0


CRUN = _crun_works()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Response:
    def __init__(self, status, headers, body):
        self.status = status
        self.headers = headers
        self.body = body

    def json(self):
        return json.loads(self.body)


ROOTFS_DIR = os.environ.get("TAKOD_TEST_ROOTFS_DIR", "/var/tmp/takod-test-rootfs")


class Takod:
    """One takod process with its own data_dir (and managed PostgreSQL)."""

    def __init__(self, *overrides, data_dir=None, executors=2, acceptors=2, conf=CONF, env=None):
        self.conf = conf
        self.env = env  # the process's environment (None: this one's)
        self.port = free_port()
        self.own_dir = data_dir is None
        self.data_dir = data_dir or tempfile.mkdtemp(prefix="takod-it-")
        self.overrides = [
            f"server.listen=127.0.0.1:{self.port}",
            f"server.data_dir={self.data_dir}",
            f"server.executors={executors}",
            f"server.acceptors={acceptors}",
            # one store of unpacked image rootfs for every takod of a run (the OCI backend's;
            # keyed by image id, so instances share it safely): one unpack, not one per test
            f"executor.rootfs_dir={ROOTFS_DIR}",
            # TAKOD_TEST_OVERRIDES: extra "-o" settings for every takod of a run (e.g.
            # docker.image=code-executor:mine to test a launcher change on its own tag)
            *os.environ.get("TAKOD_TEST_OVERRIDES", "").split(),
            *overrides,
        ]
        self.log_path = os.path.join(self.data_dir, "takod.log")
        self.proc = None
        self.url = f"http://127.0.0.1:{self.port}"

    def args(self):
        a = [TAKOD_BIN, "-c", self.conf]
        for o in self.overrides:
            a += ["-o", o]
        return a

    def start(self, timeout=90):
        self.logf = open(self.log_path, "ab")  # closed in stop()
        self.proc = subprocess.Popen(self.args(), stdout=self.logf, stderr=subprocess.STDOUT,
                                     env=self.env)
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"takod exited with {self.proc.returncode} at start:\n{self.log()[-8000:]}")
            try:
                if self.request("GET", "/health", timeout=2).status == 200:
                    return self
            except OSError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"takod did not become healthy in {timeout}s:\n{self.log()[-8000:]}")

    def log(self):
        return self.log_of(self.log_path)

    @staticmethod
    def log_of(path):
        try:
            with open(path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    @property
    def pid(self):
        return self.proc.pid

    def roles(self):
        """{title: pid} of the master's children ("takod: executor 0", ...)."""
        out = {}
        for p in self.children():
            try:
                out.setdefault(self.cmdline(p).strip(), p)
            except OSError:
                pass
        return out

    def wait_for(self, cond, timeout=30, what="condition"):
        deadline = time.time() + timeout
        while time.time() < deadline:
            v = cond()
            if v:
                return v
            time.sleep(0.05)
        raise AssertionError(f"timed out waiting for {what}:\n{self.log()[-8000:]}")

    def children(self):
        """pids whose parent is the master (acceptors, executors, postgres)."""
        return _children_by_ppid().get(self.pid, [])

    def cmdline(self, pid):
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().split(b"\0")[0].decode()

    def stop(self, sig=signal.SIGTERM, timeout=30):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError(f"takod did not stop on signal {sig} in {timeout}s")
        if getattr(self, "logf", None):
            self.logf.close()
        return self.proc.returncode if self.proc else None

    def cleanup(self):
        self.stop()
        if self.own_dir and not os.environ.get("TAKO_KEEP"):
            shutil.rmtree(self.data_dir, ignore_errors=True)
            # a takod a test killed leaves its (empty) state root: the instance, named by
            # this data dir, never starts again to remove it
            base = self.oci_state_base()
            parent = "takod-" + os.path.basename(base)  # its cgroup parent (v2, v1)
            cgroups = glob.glob("/sys/fs/cgroup/" + parent) + \
                glob.glob("/sys/fs/cgroup/*/" + parent)
            for d in [os.path.join(base, rt) for rt in self.oci_runtimes()] + [base] + cgroups:
                try:
                    os.rmdir(d)
                except OSError:
                    pass  # not empty: what a test's assertions should have caught

    # ---- HTTP ----
    def request(self, method, path, body=None, raw=None, headers=None, timeout=120):
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        h = {"Content-Type": "application/json"}
        h.update(headers or {})
        req = urllib.request.Request(self.url + path, data=data, method=method, headers=h)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                return Response(r.status, r.headers, r.read())
        except urllib.error.HTTPError as e:
            return Response(e.code, e.headers, e.read())

    def events(self, job_id, timeout=120, headers=None):
        """GET /jobs/{id}/events read to its end: (status, Content-Type, [(event, data)])."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            conn.request("GET", f"/jobs/{job_id}/events", headers=headers or {})
            resp = conn.getresponse()
            events, event = [], None
            if resp.status == 200:
                for raw in resp:
                    line = raw.decode().rstrip("\n")
                    if line.startswith("event: "):
                        event = line[7:]
                    elif line.startswith("data: "):
                        events.append((event, json.loads(line[6:])))
            return resp.status, resp.getheader("Content-Type"), events
        finally:
            conn.close()

    def execute(self, code, **fields):
        body = {"code": code, **fields}
        r = self.request("POST", "/execute", body)
        assert r.status == 200, (r.status, r.body)
        return r.json()

    # ---- PostgreSQL ----
    @property
    def conninfo(self):
        return f"host={self.data_dir}/pgsock port=5432 dbname=takod user=takod"

    def sql(self, query, conninfo=None):
        """Rows of a query as lists of strings (psql -At; fields split on \\x1f, rows on \\x1e)."""
        out = subprocess.run(
            ["psql", conninfo or self.conninfo, "-XAtq", "-F", "\x1f", "-R", "\x1e", "-c", query],
            check=True, capture_output=True, text=True, timeout=30,
        ).stdout
        if out.endswith("\n"):
            out = out[:-1]  # psql ends its output with one newline
        return [row.split("\x1f") for row in out.split("\x1e") if row]

    def wait_running(self, timeout=60):
        """Wait until some job's record says it is running (its program has been started)."""
        return self.wait_for(lambda: self.sql("SELECT id FROM jobs WHERE status = 'running'"),
                             timeout=timeout, what="a running job")

    # ---- Docker and the OCI runtime ----
    def containers(self):
        """ids of this instance's containers (any state): the engine's, carrying its label,
        and the OCI backend's, under its state root (see oci_state_root)."""
        label = f"takod.instance={socket.gethostname()}:{self.data_dir}"
        out = subprocess.run(["docker", "ps", "-aq", "--filter", f"label={label}"],
                             capture_output=True, text=True, timeout=30).stdout
        return out.split() + self.oci_containers()

    def oci_state_base(self):
        """/run/takod/<FNV-1a of the instance label>: the OCI backend's state roots, one per
        runtime (common/sandbox_oci.c, oci_setup)."""
        h = 1469598103934665603
        for b in f"{socket.gethostname()}:{self.data_dir}".encode():
            h = ((h ^ b) * 1099511628211) & 0xFFFFFFFFFFFFFFFF
        return f"/run/takod/{h or 1:016x}"

    def container_states(self):
        """[id, status, image id] of this instance's containers, either backend's: the
        engine's inspect; the OCI runtime's list, the image id from the bundle's rootfs
        (<rootfs store>/<hex of the image id>)."""
        out, rows = [], []
        ids = self.containers()
        docker_ids = [i for i in ids if not i.startswith("p")]
        if docker_ids:
            out = subprocess.run(["docker", "inspect", "--format", "{{.Id}} {{.State.Status}} "
                                  "{{.Config.Image}}", *docker_ids], capture_output=True,
                                 text=True, timeout=30).stdout
            rows = [line.split() for line in out.splitlines()]
        base = self.oci_state_base()
        for rt in self.oci_runtimes():
            listed = subprocess.run([rt, "--root", os.path.join(base, rt), "list", "--format",
                                     "json"], capture_output=True, text=True, timeout=30).stdout
            for c in json.loads(listed or "[]") or []:
                try:
                    with open(os.path.join(c["bundle"], "config.json")) as f:
                        root = json.load(f)["root"]["path"]
                except (OSError, ValueError, KeyError):
                    continue
                rows.append([c["id"], c["status"], "sha256:" + os.path.basename(root)])
        return rows

    def oci_runtimes(self):
        """The runtimes with a state root under oci_state_base() (its directories)."""
        base = self.oci_state_base()
        return [rt for rt in (os.listdir(base) if os.path.isdir(base) else [])
                if os.path.isdir(os.path.join(base, rt))]

    def oci_containers(self):
        """The runtime's list, and crun's state directories it does not list: one a
        runtime killed while creating it leaves without a status file."""
        base, ids = self.oci_state_base(), []
        for rt in self.oci_runtimes():
            root = os.path.join(base, rt)
            out = subprocess.run([rt, "--root", root, "list", "-q"],
                                 capture_output=True, text=True, timeout=30).stdout
            ids += out.split()
            if rt == "crun" and os.path.isdir(root):
                ids += [d for d in os.listdir(root) if d not in ids
                        and os.path.isdir(os.path.join(root, d))]
        return ids


def pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ")[1][0] != "Z"
    except OSError:
        return False


PG_BIN = next((f"/usr/lib/postgresql/{v}/bin" for v in sorted(
    (d for d in os.listdir("/usr/lib/postgresql") if d.isdigit()), key=int, reverse=True)
    if os.path.exists(f"/usr/lib/postgresql/{v}/bin/postgres")), None) if os.path.isdir(
    "/usr/lib/postgresql") else None


class ScratchPostgres:
    """A PostgreSQL cluster of the test's own (as the postgres user; unix socket only), for
    tests that stop and start the database under a running takod (database.url)."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="takod-pg-")
        os.chmod(self.dir, 0o755)
        self.data = os.path.join(self.dir, "data")
        shutil.chown(self.dir, "postgres")
        self._pg(["initdb", "-D", self.data, "-U", "takod", "-A", "trust", "-E", "UTF8",
                  "--locale=C.UTF-8", "--no-instructions"])
        self.conninfo = f"host={self.dir} port=5432 dbname=postgres user=takod"

    def _pg(self, args, check=True):
        cmd = ["runuser", "-u", "postgres", "--", os.path.join(PG_BIN, args[0]), *args[1:]]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=check)

    def start(self):
        self._pg(["pg_ctl", "-D", self.data, "-w", "-l", os.path.join(self.dir, "log"), "-o",
                  f"-k {self.dir} -c listen_addresses= -c port=5432", "start"])
        return self

    def stop(self):
        self._pg(["pg_ctl", "-D", self.data, "-w", "-m", "fast", "stop"], check=False)

    def cleanup(self):
        self.stop()
        if not os.environ.get("TAKO_KEEP"):
            shutil.rmtree(self.dir, ignore_errors=True)


class TcpPostgres(ScratchPostgres):
    """A ScratchPostgres that also listens on 127.0.0.1:<a free port> (trust auth, as
    initdb -A trust sets it for loopback TCP too): the shared database of several takod
    nodes (database.url), reached the way a separate database server would be."""

    def __init__(self, max_connections=200):
        super().__init__()
        self.port = free_port()
        self.max_connections = max_connections
        self.conninfo = f"host=127.0.0.1 port={self.port} dbname=postgres user=takod"

    def start(self):
        self._pg(["pg_ctl", "-D", self.data, "-w", "-l", os.path.join(self.dir, "log"), "-o",
                  f"-k {self.dir} -c listen_addresses=127.0.0.1 -c port={self.port} "
                  f"-c max_connections={self.max_connections}", "start"])
        return self

    def sql(self, query):
        """Rows of a query as lists of strings (as Takod.sql)."""
        out = subprocess.run(
            ["psql", self.conninfo, "-XAtq", "-F", "\x1f", "-R", "\x1e", "-c", query],
            check=True, capture_output=True, text=True, timeout=30,
        ).stdout
        if out.endswith("\n"):
            out = out[:-1]
        return [row.split("\x1f") for row in out.split("\x1e") if row]


def http_request(base_url, method, path, body=None, raw=None, headers=None, timeout=120):
    """One HTTP request to any server (as Takod.request does to its takod): a Response,
    HTTP errors included; connection errors raise OSError."""
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    h = {"Content-Type": "application/json"}
    h.update(headers or {})
    req = urllib.request.Request(base_url + path, data=data, method=method, headers=h)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return Response(r.status, r.headers, r.read())
    except urllib.error.HTTPError as e:
        return Response(e.code, e.headers, e.read())


def _children_by_ppid():
    """{ppid: [pid, ...]} of every process now, from /proc."""
    children = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                stat = f.read()
            ppid = int(stat[stat.rindex(")") + 2:].split()[1])
        except (OSError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(d))
    return children


def descendants(pid):
    """Every process below pid (children, their children, ...), from /proc."""
    children = _children_by_ppid()
    out, todo = [], [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


def kill_tree(pid):
    """SIGKILL a process and everything below it, as the machine's crash would: the tree is
    frozen first (SIGSTOP, repeated until no new process appears), so that nothing in it
    reacts before all of it is gone (no child sees its parent die and stops cleanly, no
    master respawns a child). Returns the pids killed."""
    frozen = set()
    todo = [pid]
    for _ in range(20):
        for p in todo:
            try:
                os.kill(p, signal.SIGSTOP)
            except ProcessLookupError:
                pass
            frozen.add(p)
        todo = [p for p in descendants(pid) if p not in frozen]
        if not todo:
            break
    for p in frozen:
        try:
            os.kill(p, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return sorted(frozen)


HAPROXY_BIN = shutil.which("haproxy") or ("/usr/sbin/haproxy" if os.path.exists("/usr/sbin/haproxy")
                                          else None)
HAPROXY_CONF = os.path.join(SOURCE_DIR, "conf", "haproxy.cfg")


class Haproxy:
    """Debian's haproxy in the foreground (-db) on a free loopback port, in front of some
    servers, on a config made from conf/haproxy.cfg: its frontend's bind and its backend's
    server lines replaced by ours, a stats socket added (for servers()), and, if given, its
    default-server line replaced (e.g. faster health checks)."""

    def __init__(self, servers, default_server=None, template=HAPROXY_CONF):
        self.dir = tempfile.mkdtemp(prefix="takod-haproxy-")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.sock = os.path.join(self.dir, "admin.sock")
        self.cfg = os.path.join(self.dir, "haproxy.cfg")
        self.log_path = os.path.join(self.dir, "haproxy.log")
        self.proc = None
        lines, placed = [], False
        with open(template) as f:
            for line in f.read().splitlines():
                word = line.split()[0] if line.split() else ""
                if word == "global":
                    lines += [line, f"    stats socket {self.sock} mode 600 level admin"]
                elif word == "bind":
                    lines.append(f"    bind 127.0.0.1:{self.port}")
                elif word == "default-server" and default_server:
                    lines.append(f"    default-server {default_server}")
                elif word == "server":
                    if not placed:
                        lines += [f"    server {name} {addr} check" for name, addr in servers]
                        placed = True
                else:
                    lines.append(line)
        with open(self.cfg, "w") as f:
            f.write("\n".join(lines) + "\n")

    def start(self, timeout=30):
        self.logf = open(self.log_path, "ab")
        self.proc = subprocess.Popen([HAPROXY_BIN, "-db", "-f", self.cfg], stdout=self.logf,
                                     stderr=subprocess.STDOUT)
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"haproxy exited with {self.proc.returncode}:\n{self.log()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return self
            except OSError:
                time.sleep(0.05)
        raise AssertionError(f"haproxy did not listen in {timeout}s:\n{self.log()}")

    def log(self):
        return Takod.log_of(self.log_path)

    def admin(self, command):
        """One command on the stats socket; its answer."""
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(10)
            s.connect(self.sock)
            s.sendall(command.encode() + b"\n")
            out = b""
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                out += chunk
        return out.decode()

    def servers(self):
        """{server name: status ("UP", "DOWN", "UP 1/2", ...)} of the backend's servers."""
        out = {}
        rows = self.admin("show stat").splitlines()
        if not rows:
            return out
        head = rows[0].lstrip("# ").split(",")
        for row in rows[1:]:
            f = dict(zip(head, row.split(",")))
            if f.get("svname") not in (None, "FRONTEND", "BACKEND") and f.get("pxname"):
                out[f["svname"]] = f.get("status", "")
        return out

    def request(self, method, path, body=None, raw=None, headers=None, timeout=120):
        return http_request(self.url, method, path, body, raw, headers, timeout)

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if getattr(self, "logf", None):
            self.logf.close()

    def cleanup(self):
        self.stop()
        if not os.environ.get("TAKO_KEEP"):
            shutil.rmtree(self.dir, ignore_errors=True)


class PgConn:
    """One libpq connection kept open (through ctypes: the standard library has no
    PostgreSQL client), for queries sent often, where a psql per query costs too much."""

    def __init__(self, conninfo):
        import ctypes
        import ctypes.util
        lib = ctypes.CDLL(ctypes.util.find_library("pq") or "libpq.so.5")
        lib.PQconnectdb.restype = ctypes.c_void_p
        lib.PQconnectdb.argtypes = [ctypes.c_char_p]
        lib.PQstatus.argtypes = [ctypes.c_void_p]
        lib.PQerrorMessage.restype = ctypes.c_char_p
        lib.PQerrorMessage.argtypes = [ctypes.c_void_p]
        lib.PQexec.restype = ctypes.c_void_p
        lib.PQexec.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
        lib.PQresultStatus.argtypes = [ctypes.c_void_p]
        lib.PQresultErrorMessage.restype = ctypes.c_char_p
        lib.PQresultErrorMessage.argtypes = [ctypes.c_void_p]
        lib.PQntuples.argtypes = [ctypes.c_void_p]
        lib.PQnfields.argtypes = [ctypes.c_void_p]
        lib.PQgetvalue.restype = ctypes.c_char_p
        lib.PQgetvalue.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_int]
        lib.PQgetisnull.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_int]
        lib.PQclear.argtypes = [ctypes.c_void_p]
        lib.PQfinish.argtypes = [ctypes.c_void_p]
        self.lib = lib
        self.conn = lib.PQconnectdb(conninfo.encode())
        if lib.PQstatus(self.conn) != 0:  # CONNECTION_OK
            err = lib.PQerrorMessage(self.conn).decode()
            lib.PQfinish(self.conn)
            self.conn = None
            raise OSError(f"connect {conninfo}: {err}")

    def sql(self, query):
        """Rows of a query as lists of strings (None for NULL)."""
        lib = self.lib
        res = lib.PQexec(self.conn, query.encode())
        try:
            if lib.PQresultStatus(res) not in (1, 2):  # PGRES_COMMAND_OK, PGRES_TUPLES_OK
                raise OSError(f"{query}: {(lib.PQresultErrorMessage(res) or b'').decode()}")
            return [[None if lib.PQgetisnull(res, i, j) else lib.PQgetvalue(res, i, j).decode()
                     for j in range(lib.PQnfields(res))] for i in range(lib.PQntuples(res))]
        finally:
            lib.PQclear(res)

    def close(self):
        if self.conn:
            self.lib.PQfinish(self.conn)
            self.conn = None
