"""
seccomp_check_oci.py — seccomp_check.sh's in-container programs as jobs of a real takod on
the OCI backend (executor.backend = oci), so conf/seccomp.json is checked as that backend
really applies it: rendered into the bundle's config.json and loaded by the runtime, not
by `docker run`. Starts takod (harness.Takod), runs the script with TAKOD_URL, stops takod.
The exit status is the script's (77: cannot run here). Also checks that the jobs ran on
the OCI backend (/health says "backend": "oci"), and that the filter crun loads is the one
crun would build itself: takod compiles the profile once and passes it precompiled
(annotation run.oci.seccomp_bpf_data, sandbox_oci.c seccomp_compile) instead of
linux.seccomp; a container crun creates from the same config.json with the profile as
linux.seccomp (takod's renderer, tests/tools/oci_bundle -s) must get the same bytes.
"""
import base64
import copy
import glob
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import Takod, descendants  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))


def check_precompiled(t):
    """0 when a warm container's annotation equals crun's own compilation, else 1."""
    mine = None
    deadline = time.monotonic() + 30
    while mine is None and time.monotonic() < deadline:
        # a container's id starts with its executor's pid (sandbox_oci.c container_id)
        ours = ["p%d-" % pid for pid in descendants(t.proc.pid)]
        for path in glob.glob(os.path.join(t.oci_state_base(), "crun", "*", "config.json")):
            if not os.path.basename(os.path.dirname(path)).startswith(tuple(ours) or ("-",)):
                continue
            try:
                with open(path) as f:
                    cfg = json.load(f)
            except (OSError, ValueError):
                continue  # a container going away meanwhile
            mine = cfg
            break
        else:
            time.sleep(0.2)
    if mine is None:
        print("FAIL no warm container of this takod found under %s" % t.oci_state_base())
        return 1
    data = mine.get("annotations", {}).get("run.oci.seccomp_bpf_data")
    if not data:
        print("FAIL a job's config.json lacks run.oci.seccomp_bpf_data")
        return 1
    if "seccomp" in mine.get("linux", {}):
        print("FAIL a job's config.json has linux.seccomp as well as the precompiled filter")
        return 1
    if "seccomp filter: precompiled" not in open(t.log_path, errors="replace").read():
        print("FAIL takod's log does not say the seccomp filter goes precompiled")
        return 1
    given = base64.b64decode(data)
    work = tempfile.mkdtemp(prefix="takod-scmp-")
    cid = "scmpcheck%d" % os.getpid()
    root = os.path.join(work, "root")
    bundle_root = None
    try:
        # the profile as takod renders it for crun to compile (oci_bundle -s)
        ref = os.path.join(work, "ref")
        os.makedirs(ref)
        over = [o for o in t.overrides if o.split("=", 1)[0] in (
            "server.data_dir", "executor.rootfs_dir", "docker.seccomp_profile",
            "docker.image")]
        argv = [os.environ["TAKO_OCI_BUNDLE_BIN"], "-c", t.conf, "-i", cid, "-d", ref,
                "-n", cid, "-s"]
        for o in over:
            argv += ["-o", o]
        p = subprocess.run(argv + ["--", "/bin/true"], capture_output=True, text=True,
                           timeout=120)
        if p.returncode != 0:
            print("FAIL oci_bundle -s: %s" % p.stderr.strip()[:400])
            return 1
        for kv in p.stdout.split():
            if kv.startswith("root="):
                bundle_root = kv[5:]
        with open(os.path.join(ref, "config.json")) as f:
            profile = json.load(f)["linux"].get("seccomp")
        if not profile:
            print("FAIL oci_bundle -s rendered no linux.seccomp")
            return 1
        cfg = copy.deepcopy(mine)
        del cfg["annotations"]["run.oci.seccomp_bpf_data"]
        cfg["linux"]["seccomp"] = profile
        cfg["process"]["args"] = ["/bin/true"]
        cfg["linux"]["cgroupsPath"] = "/" + cid
        # the job's directories (its slot) go with the warm container whenever takod
        # replaces it: this container binds empty ones of its own instead
        for i, m in enumerate(cfg.get("mounts", [])):
            if m.get("type") == "bind" and "/slots/" in m.get("source", ""):
                m["source"] = os.path.join(work, "mnt%d" % i)
                os.makedirs(m["source"])
        os.makedirs(os.path.join(work, "bundle"))
        with open(os.path.join(work, "bundle", "config.json"), "w") as f:
            json.dump(cfg, f)
        # stdio to files: the created container holds them open until it is deleted
        with open(os.path.join(work, "err"), "w+b") as err:
            p = subprocess.run(["crun", "--root", root, "create", "--bundle",
                                os.path.join(work, "bundle"), cid],
                               stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                               stderr=err, timeout=60)
            err.seek(0)
            if p.returncode != 0:
                print("FAIL crun create: %s" % err.read().decode(errors="replace")[:400])
                return 1
        with open(os.path.join(root, cid, "seccomp.bpf"), "rb") as f:
            built = f.read()
    finally:
        subprocess.run(["crun", "--root", root, "delete", "--force", cid],
                       capture_output=True, timeout=60)
        shutil.rmtree(work, ignore_errors=True)
        # oci_bundle's state root for instance cid: /run/takod/<its hash>/crun, empty
        if bundle_root and bundle_root.startswith("/run/takod/"):
            shutil.rmtree(os.path.dirname(bundle_root), ignore_errors=True)
    if built != given:
        print("FAIL the precompiled filter (%d bytes) differs from crun's own (%d bytes)"
              % (len(given), len(built)))
        return 1
    print("ok   the precompiled seccomp filter is crun's own, byte for byte (%d BPF "
          "instructions)" % (len(given) // 8), flush=True)
    return 0


# A crun before 0.18 runs a container with no filter at all when the profile comes only as
# run.oci.seccomp_bpf_data. This one is the real crun, handed each config.json without it.
IGNORING_CRUN = r"""#!/bin/bash
bundle=
prev=
for a in "$@"; do
    [ "$prev" = --bundle ] && bundle=$a
    prev=$a
done
if [ -n "$bundle" ] && [ -f "$bundle/config.json" ]; then
    python3 -I -S -c '
import json, sys
p = sys.argv[1] + "/config.json"
c = json.load(open(p))
c.get("annotations", {}).pop("run.oci.seccomp_bpf_data", None)
json.dump(c, open(p, "w"))' "$bundle" || exit 125
fi
exec %s "$@"
"""


def check_ignoring_crun(profile):
    """0 when a takod whose crun ignores the annotation says so loudly and still filters."""
    real = shutil.which("crun")
    wrap = tempfile.mkdtemp(prefix="takod-oldcrun-")
    try:
        with open(os.path.join(wrap, "crun"), "w") as f:
            f.write(IGNORING_CRUN % real)
        os.chmod(os.path.join(wrap, "crun"), 0o755)
        env = dict(os.environ, PATH=wrap + ":" + os.environ.get("PATH", "/usr/bin:/bin"))
        t = Takod("executor.backend=oci", f"docker.seccomp_profile={profile}", executors=1,
                  acceptors=1, env=env)
        try:
            t.start()
            log = open(t.log_path, errors="replace").read()
            if "ignores run.oci.seccomp_bpf_data" not in log:
                print("FAIL a crun that ignores the annotation: takod did not say so")
                return 1
            r = t.request("POST", "/execute", {"code": (
                "print([l.split()[1] for l in open('/proc/self/status') "
                "if l.startswith('Seccomp:')][0])")}).json()
            if r.get("stdout", "").strip() != "2":
                print("FAIL a crun that ignores the annotation: the job ran with Seccomp %r"
                      % r.get("stdout"))
                return 1
        finally:
            t.cleanup()
    finally:
        shutil.rmtree(wrap, ignore_errors=True)
    print("ok   a crun that ignores the precompiled filter: takod says so and gives it the "
          "profile as linux.seccomp (the job runs filtered)", flush=True)
    return 0


def main():
    if os.geteuid() != 0:
        print("seccomp_check_oci: SKIP: the OCI backend needs root")
        return 77
    # the profile the script's static checks read is the one takod applies
    profile = os.environ.get("TAKOD_SECCOMP_PROFILE",
                             os.path.join(HERE, "..", "..", "conf", "seccomp.json"))
    t = Takod("executor.backend=oci", f"docker.seccomp_profile={os.path.abspath(profile)}",
              executors=1, acceptors=1)
    try:
        t.start()
        health = t.request("GET", "/health").json()
        backend = health.get("backend")
        print(f"seccomp_check_oci: takod {t.url}, backend {backend}, runtime {health.get('runtime')}",
              flush=True)
        if backend != "oci":
            print(f"FAIL takod's /health says backend {backend!r}, want 'oci'")
            return 1
        if health.get("runtime") == "crun" and check_precompiled(t) != 0:
            return 1
        env = dict(os.environ, TAKOD_URL=t.url)
        rc = subprocess.run(["bash", os.path.join(HERE, "seccomp_check.sh")], env=env,
                            timeout=540).returncode
    finally:
        t.cleanup()
    if rc == 0 and health.get("runtime") == "crun":
        rc = check_ignoring_crun(os.path.abspath(profile))
    return rc


if __name__ == "__main__":
    sys.exit(main())
