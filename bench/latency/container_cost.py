#!/usr/bin/env python3
"""
container_cost.py — what one container costs the machine, by lifecycle step and by
option. The Docker Engine API over its unix socket (v1.41), N containers per row; CPU is
the machine's busy time from /proc/stat (all processes: dockerd, containerd, shims, runc,
the kernel), divided by N.

    sudo python3 bench/latency/container_cost.py [-n 20] [--image code-executor:latest]
        [--runtimes runc,crun [--rounds 3]]

First the steps (create; start + run `/bin/true` + wait; remove), then a plain container
against ones with each of takod's options, to see which option costs what. Containers are
labelled takod.bench=1 and removed.
"""
import argparse
import copy
import http.client
import json
import os
import socket
import time


class Engine(http.client.HTTPConnection):
    def __init__(self, path):
        super().__init__("localhost")
        self.path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.connect(self.path)

    def call(self, method, path, body=None):
        self.request(method, "/v1.41" + path, body=json.dumps(body) if body is not None else None,
                     headers={"Content-Type": "application/json"})
        r = self.getresponse()
        data = r.read()
        if r.status >= 300:
            raise RuntimeError(f"{method} {path}: {r.status} {data[:200]!r}")
        return json.loads(data) if data else None


def busy_ms():
    v = list(map(int, open("/proc/stat").readline().split()[1:]))
    # user nice system irq softirq: not idle, iowait or steal (another VM's time)
    return (v[0] + v[1] + v[2] + v[5] + v[6]) * 1000 / os.sysconf("SC_CLK_TCK")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    ap.add_argument("-n", type=int, default=20)
    ap.add_argument("--image", default="code-executor:latest")
    ap.add_argument("--socket", default="/var/run/docker.sock")
    ap.add_argument("--seccomp", default=os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                      "..", "..", "conf", "seccomp.json"))
    ap.add_argument("--runtimes", default="",
                    help="also compare these runtimes (e.g. runc,crun) on a container with all "
                         "of takod's options, --rounds times each, interleaved")
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args()
    e = Engine(a.socket)
    base = {"Image": a.image, "Cmd": ["/bin/true"], "NetworkDisabled": True,
            "HostConfig": {"NetworkMode": "none"}, "Labels": {"takod.bench": "1"}}

    ids = []
    b0, t0 = busy_ms(), time.time()
    for _ in range(a.n):
        ids.append(e.call("POST", "/containers/create", base)["Id"])
    b1, t1 = busy_ms(), time.time()
    for i in ids:
        e.call("POST", f"/containers/{i}/start")
        e.call("POST", f"/containers/{i}/wait")
    b2, t2 = busy_ms(), time.time()
    for i in ids:
        e.call("DELETE", f"/containers/{i}?force=1&v=1")
    b3, t3 = busy_ms(), time.time()
    print(f"steps, N={a.n} (machine CPU ms per container, wall ms)")
    for name, b, t in (("create", b1 - b0, t1 - t0), ("start + run + wait", b2 - b1, t2 - t1),
                       ("remove", b3 - b2, t3 - t2)):
        print(f"  {name:22s} {b / a.n:6.1f} CPU  {t * 1000 / a.n:6.1f} wall")

    def variant(body):
        ids = []
        b0, t0 = busy_ms(), time.time()
        for _ in range(a.n):
            ids.append(e.call("POST", "/containers/create", body)["Id"])
            e.call("POST", f"/containers/{ids[-1]}/start")
            e.call("POST", f"/containers/{ids[-1]}/wait")
        b1, t1 = busy_ms(), time.time()
        for i in ids:
            e.call("DELETE", f"/containers/{i}?force=1&v=1")
        return (b1 - b0) / a.n, (t1 - t0) * 1000 / a.n

    seccomp = json.dumps(json.load(open(a.seccomp)))
    rows = [("plain (network none)", lambda b: None),
            ("+ Init", lambda b: b["HostConfig"].update(Init=True)),
            ("network host", lambda b: (b["HostConfig"].update(NetworkMode="host"),
                                        b.update(NetworkDisabled=False))),
            ("+ seccomp profile", lambda b: b["HostConfig"].update(SecurityOpt=["seccomp=" + seccomp])),
            ("+ read-only root, tmpfs", lambda b: b["HostConfig"].update(
                ReadonlyRootfs=True, Tmpfs={"/tmp": "rw,size=64m"})),
            ("+ memory, CPU, pids limits", lambda b: b["HostConfig"].update(
                Memory=512 << 20, NanoCpus=10 ** 9, PidsLimit=100)),
            ("+ private IPC", lambda b: b["HostConfig"].update(IpcMode="private"))]
    print(f"create + start + run + wait, by option, N={a.n}")
    for name, change in rows:
        b = copy.deepcopy(base)
        change(b)
        cpu, wall = variant(b)
        print(f"  {name:28s} {cpu:6.1f} CPU  {wall:6.1f} wall")

    runtimes = [r for r in a.runtimes.split(",") if r]
    if runtimes:
        full = copy.deepcopy(base)
        for _, change in rows[1:]:
            change(full)
        full["HostConfig"].update(NetworkMode="none", CapDrop=["ALL"])  # as takod
        full["HostConfig"]["SecurityOpt"].append("no-new-privileges")
        full.update(NetworkDisabled=True, User="1000:1000")
        cpus = {r: [] for r in runtimes}
        for _ in range(a.rounds):
            for r in runtimes:
                b = copy.deepcopy(full)
                b["HostConfig"]["Runtime"] = r
                cpus[r].append(variant(b)[0])
        print(f"create + start + run + wait with all of the options above, by runtime, "
              f"N={a.n}, {a.rounds} rounds interleaved (machine CPU ms per container)")
        for r, v in cpus.items():
            print(f"  {r:8s} median {sorted(v)[len(v) // 2]:6.1f}   rounds {' '.join('%.1f' % x for x in v)}")


if __name__ == "__main__":
    main()
