"""
seccomp_check_oci.py — seccomp_check.sh's in-container programs as jobs of a real takod on
the OCI backend (executor.backend = oci), so conf/seccomp.json is checked as that backend
really applies it: rendered into the bundle's config.json and loaded by the runtime, not
by `docker run`. Starts takod (harness.Takod), runs the script with TAKOD_URL, stops takod.
The exit status is the script's (77: cannot run here). Also checks that the jobs ran on
the OCI backend (/health says "backend": "oci").
"""
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import Takod  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))


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
        env = dict(os.environ, TAKOD_URL=t.url)
        return subprocess.run(["bash", os.path.join(HERE, "seccomp_check.sh")], env=env,
                              timeout=540).returncode
    finally:
        t.cleanup()


if __name__ == "__main__":
    sys.exit(main())
