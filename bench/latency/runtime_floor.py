#!/usr/bin/env python3
"""
runtime_floor.py — what a job costs the machine through takod's OCI backend, against the
floor: the same container started by hand, `crun run` of takod's own bundle with
`python3 -c 'print(1)'` as the process, nothing else (no server, no database, no
launcher, no hand-over). Both in the same run, in alternating blocks.

    sudo python3 bench/latency/runtime_floor.py [--rounds 4] [-n 30]

It starts a takod of its own (`executor.backend=oci`), copies one of its warm containers'
config.json (every defence: namespaces, the precompiled seccomp filter, masked paths,
limits), changes only the process (python3 as uid 1000, the job's CPU share), the bind
mounts' sources (a scratch bundle's code/input/output) and the cgroup path (a parent of
its own), and runs it with crun from its path and from a sealed copy (as takod runs crun).
Machine CPU is /proc/stat's user + nice + system + irq + softirq over all CPUs (not
steal), less the machine's idle rate measured just before each block, per container or
job. The floor changes with the machine (a day's neighbours move it by 1.5x); the
difference and the ratio to takod's jobs measured beside it do not.

Needs root, dockerd, the image and build/takod. Traffic: 127.0.0.1 only; it removes its
own containers, state root and cgroups at the end.
"""
import argparse
import fcntl
import glob
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402  (Takod, TakodClient helpers, machine_cpu, summaries)

SEALS = fcntl.F_SEAL_SEAL | fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE


def busy_ticks():
    return bench.machine_cpu()[0]


def idle_rate(seconds=1.5):
    """The machine's busy ticks per second while we do nothing."""
    b0, t0 = busy_ticks(), time.monotonic()
    time.sleep(seconds)
    return (busy_ticks() - b0) / (time.monotonic() - t0)


def ms_per(ticks, count):
    return ticks * 1000.0 / bench.CLK_TCK / count


def sealed_crun(path):
    """A memfd copy of crun with the seals crun looks for (it then skips its own copy)."""
    fd = os.memfd_create("crun", os.MFD_ALLOW_SEALING)
    with open(path, "rb") as f:
        os.write(fd, f.read())
    fcntl.fcntl(fd, fcntl.F_ADD_SEALS, SEALS)
    return fd


def find_warm_config(data_dir, timeout=60):
    """config.json of one of this takod's warm containers (its rootfs is under data_dir)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        # the spool is on /dev/shm when it is a tmpfs, else <data_dir>/spool (choose_spool)
        for p in glob.glob("/dev/shm/takod-*/slots/*/config.json") + \
                glob.glob(os.path.join(data_dir, "spool", "slots", "*", "config.json")):
            try:
                c = json.load(open(p))
            except (OSError, ValueError):
                continue
            if c.get("root", {}).get("path", "").startswith(data_dir + "/"):
                return c
        time.sleep(0.2)
    raise RuntimeError("no warm container's config.json of this takod in %ds" % timeout)


def make_bundle(cfg, bundle, cg_parent):
    for d in ("code", "input", "output", "ctl"):
        os.makedirs(os.path.join(bundle, d), exist_ok=True)
    os.chown(os.path.join(bundle, "output"), 1000, 1000)
    cfg = json.loads(json.dumps(cfg))
    cfg["process"]["args"] = ["python3", "-c", "print(1)"]
    cfg["process"]["user"] = {"uid": 1000, "gid": 1000}
    cfg["process"]["cwd"] = "/output"
    cfg["process"]["terminal"] = False
    cfg["linux"]["resources"].get("cpu", {})["shares"] = 1024
    cfg["linux"]["cgroupsPath"] = "/%s/floor" % cg_parent
    for m in cfg["mounts"]:
        if m.get("type") == "bind" and m["destination"] in ("/code", "/input", "/output", "/ctl"):
            m["source"] = os.path.join(bundle, m["destination"].lstrip("/"))
    with open(os.path.join(bundle, "config.json"), "w") as f:
        json.dump(cfg, f)


def crun_block(argv0, pass_fds, root, bundle, n, tag):
    """n containers one after another; (machine busy ticks, wall seconds each)."""
    walls = []
    b0 = busy_ticks()
    for i in range(n):
        cid = "floor-%d-%s-%d" % (os.getpid(), tag, i)
        t = time.monotonic()
        r = subprocess.run([argv0, "--root", root, "run", "--bundle", bundle, cid],
                           stdin=subprocess.DEVNULL, capture_output=True, pass_fds=pass_fds,
                           timeout=60)
        walls.append(time.monotonic() - t)
        if r.returncode != 0 or r.stdout != b"1\n":
            raise RuntimeError("crun run: exit %d, stdout %r, stderr %r"
                               % (r.returncode, r.stdout[:200], r.stderr[:500]))
    return busy_ticks() - b0, walls


def takod_block(port, n):
    """n jobs back to back, then 2 s for the last job's container removal and the next
    one's start (they belong to it); (machine busy ticks, client latencies)."""
    op, close = bench.make_takod_op(port, True)()
    lat = []
    b0 = busy_ticks()
    for _ in range(n):
        dt, ok, why = op()
        lat.append(dt)
        if not ok:
            raise RuntimeError("takod job failed: %s" % (why,))
    close()
    time.sleep(2.0)
    return busy_ticks() - b0, lat


def cleanup_cgroup(parent):
    for ctl in glob.glob("/sys/fs/cgroup/*/%s" % parent) + glob.glob("/sys/fs/cgroup/%s" % parent):
        for d in sorted(glob.glob(ctl + "/*/"), reverse=True):
            try:
                os.rmdir(d)
            except OSError:
                pass
        try:
            os.rmdir(ctl)
        except OSError:
            pass


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("-n", type=int, default=30, help="containers / jobs per block")
    ap.add_argument("--takod", default=os.path.join(bench.REPO, "build", "takod"))
    ap.add_argument("--conf", default=os.path.join(bench.REPO, "conf", "tako.conf"))
    ap.add_argument("--executors", type=int, default=4)
    ap.add_argument("--json", metavar="FILE")
    a = ap.parse_args()
    crun = shutil.which("crun")
    if not crun:
        sys.exit("crun not found")
    work = tempfile.mkdtemp(prefix="takod-floor-", dir="/tmp")
    os.chmod(work, 0o755)  # the managed PostgreSQL (not root) lives under it
    data_dir = os.path.join(work, "data")
    root = os.path.join(work, "state")
    bundle = os.path.join(work, "bundle")
    cg_parent = "takod-floor-%d" % os.getpid()
    os.makedirs(root)
    takod = bench.Takod(a.takod, a.conf, data_dir, a.executors, os.path.join(work, "takod.log"),
                        ["executor.backend=oci"])
    res = {"machine": bench.machine_info(), "rounds": []}
    sfd = -1
    try:
        h = takod.start(backend="oci")
        bench.log("takod backend %s runtime %s; finding a warm bundle" % (h.get("backend"), h.get("runtime")))
        make_bundle(find_warm_config(data_dir), bundle, cg_parent)
        sfd = sealed_crun(crun)
        variants = [("crun from its path", crun, ()),
                    ("crun from a sealed copy", "/proc/self/fd/%d" % sfd, (sfd,))]
        # warm-up: the page cache, crun's and python's first runs, takod's pools
        for _, argv0, fds in variants:
            crun_block(argv0, fds, root, bundle, 3, "w")
        takod_block(takod.port, 5)
        for r in range(a.rounds):
            row = {}
            for name, argv0, fds in variants:
                rate = idle_rate()
                t = time.monotonic()
                ticks, walls = crun_block(argv0, fds, root, bundle, a.n, "r%d" % r)
                ticks -= rate * (time.monotonic() - t)
                row[name] = {"cpu_ms": ms_per(ticks, a.n),
                             "wall_p50_ms": bench.summary([w * 1000 for w in walls])["p50"]}
            rate = idle_rate()
            t = time.monotonic()
            ticks, lat = takod_block(takod.port, a.n)
            ticks -= rate * (time.monotonic() - t)
            row["takod job"] = {"cpu_ms": ms_per(ticks, a.n),
                                "wall_p50_ms": bench.summary([x * 1000 for x in lat])["p50"]}
            res["rounds"].append(row)
            bench.log("round %d: %s" % (r + 1, ", ".join(
                "%s %.1f ms" % (k, v["cpu_ms"]) for k, v in row.items())))
    except Exception:
        sys.stderr.write(open(os.path.join(work, "takod.log"), errors="replace").read()[-3000:])
        raise
    finally:
        takod.stop()
        if sfd >= 0:
            os.close(sfd)
        for st in glob.glob(os.path.join(root, "*")):
            subprocess.run([crun, "--root", root, "delete", "--force", os.path.basename(st)],
                           capture_output=True)
        cleanup_cgroup(cg_parent)
        shutil.rmtree(work, ignore_errors=True)

    names = list(res["rounds"][0].keys())
    print("\nMachine CPU per container or job (ms; wall p50 in brackets), %d each a block, "
          "blocks alternating" % a.n)
    print("| round | " + " | ".join(names) + " | takod job − sealed floor | takod job / sealed floor |")
    print("|---:|" + "---:|" * (len(names) + 2))
    for i, row in enumerate(res["rounds"]):
        f, j = row["crun from a sealed copy"]["cpu_ms"], row["takod job"]["cpu_ms"]
        print("| %d | " % (i + 1) + " | ".join(
            "%.1f [%.1f]" % (row[k]["cpu_ms"], row[k]["wall_p50_ms"]) for k in names) +
            " | %.1f | %.2f× |" % (j - f, j / f))
    mean = {k: sum(r[k]["cpu_ms"] for r in res["rounds"]) / len(res["rounds"]) for k in names}
    f, j = mean["crun from a sealed copy"], mean["takod job"]
    print("| mean | " + " | ".join("%.1f" % mean[k] for k in names) +
          " | %.1f | %.2f× |" % (j - f, j / f))
    print("machine: %s" % res["machine"])
    if a.json:
        with open(a.json, "w") as fh:
            json.dump(res, fh, indent=1)


if __name__ == "__main__":
    main()
