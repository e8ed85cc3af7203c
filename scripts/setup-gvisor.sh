#!/usr/bin/env bash
# setup-gvisor.sh: make gVisor's runsc available to Docker as the runtime "runsc", for
# takod's `docker.runtime = runsc`. As root; idempotent (each step checks before it acts):
#   1. installs Debian's `runsc` package if /usr/bin/runsc is missing (apt-get);
#   2. merges {"runtimes": {"runsc": {"path": "/usr/bin/runsc",
#      "runtimeArgs": ["--network=none"]}}} into /etc/docker/daemon.json (or the file given
#      to dockerd with --config-file), keeping every other key;
#   3. if GET /info does not list runsc yet, sends SIGHUP to the running dockerd (pid from
#      /var/run/docker.pid, else `pidof dockerd`) so it reloads daemon.json, and waits until
#      GET /info lists runsc in Runtimes;
#   4. runs a smoke test container under runsc if the executor image is present
#      (skip with --no-smoke).
# dockerd is never stopped or restarted. "--network=none" is required: without it runsc
# refuses to start containers on this kind of host ("cannot run with network enabled in root
# network namespace"), and takod runs every job with networking off anyway.
# Environment: DOCKER_SOCK (default /var/run/docker.sock), TAKOD_IMAGE (smoke-test image,
# default code-executor:latest), DOCKER_CONFIG_FILE (overrides the daemon.json path).
set -euo pipefail

RUNSC=/usr/bin/runsc
SOCK=${DOCKER_SOCK:-/var/run/docker.sock}
IMAGE=${TAKOD_IMAGE:-code-executor:latest}
smoke=1
for arg in "$@"; do
    case "$arg" in
        --no-smoke) smoke=0 ;;
        -h | --help) sed -n '2,19p' "$0"; exit 0 ;;
        *) echo "setup-gvisor: unknown argument: $arg" >&2; exit 2 ;;
    esac
done

say() { echo "setup-gvisor: $*"; }
die() { echo "setup-gvisor: ERROR: $*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "run this as root (it installs a package and edits the Docker config)"
command -v python3 >/dev/null || die "python3 is required (it merges daemon.json)"
command -v curl >/dev/null || die "curl is required (it asks dockerd GET /info)"

# --- 1. the runsc binary -----------------------------------------------------------------
if [ -x "$RUNSC" ]; then
    say "runsc present: $("$RUNSC" --version 2>/dev/null | head -1)"
else
    say "installing Debian package runsc (apt-get)"
    export DEBIAN_FRONTEND=noninteractive
    if ! apt-get install -y -q --no-install-recommends runsc >/dev/null 2>&1; then
        apt-get update -q >/dev/null || die "apt-get update failed"
        apt-get install -y -q --no-install-recommends runsc >/dev/null ||
            die "apt-get install runsc failed"
    fi
    [ -x "$RUNSC" ] || die "package runsc installed but $RUNSC is missing"
    say "installed: $("$RUNSC" --version 2>/dev/null | head -1)"
fi

# --- the running dockerd, if any ---------------------------------------------------------
dpid=""
if [ -r /var/run/docker.pid ]; then
    p=$(cat /var/run/docker.pid 2>/dev/null || true)
    if [ -n "$p" ] && [ "$(cat "/proc/$p/comm" 2>/dev/null)" = dockerd ]; then
        dpid=$p
    fi
fi
if [ -z "$dpid" ]; then
    pids=$(pidof dockerd || true)
    case "$pids" in
        "") ;;
        *\ *) die "several dockerd processes ($pids) and no usable /var/run/docker.pid" ;;
        *) dpid=$pids ;;
    esac
fi

# The config file dockerd reads: --config-file on its command line, else the default.
conf=${DOCKER_CONFIG_FILE:-}
if [ -z "$conf" ] && [ -n "$dpid" ]; then
    conf=$(tr '\0' '\n' <"/proc/$dpid/cmdline" | awk '
        f { print; exit } /^--config-file=/ { sub(/^--config-file=/, ""); print; exit }
        /^--config-file$/ { f = 1 }')
fi
conf=${conf:-/etc/docker/daemon.json}

# --- 2. merge the runtime into daemon.json -----------------------------------------------
mkdir -p "$(dirname "$conf")"
result=$(python3 -c '
import json, os, sys, tempfile
path, runsc = sys.argv[1], sys.argv[2]
want = {"path": runsc, "runtimeArgs": ["--network=none"]}
cfg = {}
if os.path.exists(path):
    text = open(path, encoding="utf-8").read()
    if text.strip():
        try:
            cfg = json.loads(text)
        except ValueError as e:
            sys.exit("%s is not valid JSON (%s); fix it by hand first" % (path, e))
if not isinstance(cfg, dict):
    sys.exit("%s does not hold a JSON object" % path)
rt = cfg.setdefault("runtimes", {})
if not isinstance(rt, dict):
    sys.exit("%s: \"runtimes\" is not an object" % path)
if rt.get("runsc") == want:
    print("unchanged")
    sys.exit(0)
state = "updated" if "runsc" in rt else "added"
rt["runsc"] = want
mode = os.stat(path).st_mode & 0o777 if os.path.exists(path) else 0o644
fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path) or ".", prefix=".daemon.json.")
with os.fdopen(fd, "w", encoding="utf-8") as f:
    json.dump(cfg, f, indent=2, sort_keys=True)
    f.write("\n")
    f.flush()
    os.fsync(f.fileno())
os.chmod(tmp, mode)
os.replace(tmp, path)
print(state)
' "$conf" "$RUNSC" 2>&1) || die "could not update $conf: $result"
case "$result" in
    unchanged) say "$conf already registers runsc with --network=none; left as is" ;;
    added) say "added runtimes.runsc to $conf (other keys kept)" ;;
    updated) say "replaced runtimes.runsc in $conf with path $RUNSC, --network=none (other keys kept)" ;;
    *) die "unexpected merge result: $result" ;;
esac

# --- 3. make the running dockerd load it -------------------------------------------------
runtimes() {
    curl -sf --max-time 5 --unix-socket "$SOCK" http://localhost/info 2>/dev/null |
        python3 -c 'import json, sys; print(" ".join(sorted(json.load(sys.stdin).get("Runtimes") or {})))' \
            2>/dev/null
}
has_runsc() { case " $(runtimes) " in *" runsc "*) return 0 ;; esac; return 1; }

if [ -z "$dpid" ]; then
    die "no dockerd is running; $conf is ready and dockerd will load runsc when it starts (then run this again to check)"
fi
if [ "$result" = unchanged ] && has_runsc; then
    say "dockerd (pid $dpid) already lists runsc; no reload needed"
else
    say "sending SIGHUP to dockerd (pid $dpid) to reload $conf"
    kill -HUP "$dpid" || die "could not signal dockerd pid $dpid"
    ok=0
    for _ in $(seq 1 60); do
        if has_runsc; then ok=1; break; fi
        sleep 0.5
    done
    [ "$ok" = 1 ] || die "dockerd did not list runsc in GET /info within 30 s after SIGHUP (Runtimes: $(runtimes)); its log says why (look for \"Error reloading configuration\"; /var/log/takod-dockerd.log when scripts/setup.sh started it)"
    say "dockerd reloaded; GET /info Runtimes: $(runtimes)"
fi

# --- 4. smoke test -----------------------------------------------------------------------
if [ "$smoke" = 1 ]; then
    if ! docker image inspect "$IMAGE" >/dev/null 2>&1; then
        say "image $IMAGE not present; smoke test skipped"
    else
        name="takod-gvisor-smoke-$$"
        out=$(timeout -k 5 120 docker run --rm --name "$name" --runtime runsc --network none \
              --read-only --user 1000:1000 --tmpfs /tmp "$IMAGE" \
              python3 -c 'import platform; print("ok", platform.release())' 2>&1) || {
            docker rm -f "$name" >/dev/null 2>&1 || true
            die "smoke test under runsc failed: $out"
        }
        say "smoke test: docker run --runtime runsc $IMAGE python3 -> $out"
    fi
fi
say "done: use it with docker.runtime = runsc in tako.conf"
