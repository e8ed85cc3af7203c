#!/usr/bin/env bash
# setup-runtime.sh NAME: make an OCI runtime available to Docker under NAME, for takod's
# `docker.runtime`. NAME is
#   runsc  gVisor (docker.runtime = runsc): a user-space kernel between job and host;
#   crun   the C runtime (docker.runtime = crun, and what auto picks): runc's isolation
#          for 10-30 ms less CPU per container.
# As root; idempotent (each step checks before it acts):
#   1. installs the Debian package (runsc, crun) if its binary is missing (apt-get);
#   2. crun only: on a cgroup v1 host whose cgroup2 "unified" hierarchy still holds a
#      controller (hugetlb, on some VMs), mounts that controller as a v1 hierarchy under
#      /sys/fs/cgroup, as systemd's hybrid layout has it — crun refuses to run otherwise
#      ("cgroups in hybrid mode not supported"). A mount, so it is redone after a reboot
#      (scripts/setup.sh runs this every time; takod falls back to runc until then);
#   3. merges {"runtimes": {NAME: {"path": ..., "runtimeArgs": [...]}}} into
#      /etc/docker/daemon.json (or the file given to dockerd with --config-file), keeping
#      every other key; runsc gets ["--network=none"], crun none;
#   4. if GET /info does not list NAME yet, sends SIGHUP to the running dockerd (pid from
#      /var/run/docker.pid, else `pidof dockerd`) so it reloads daemon.json, and waits until
#      GET /info lists it in Runtimes;
#   5. runs a smoke test container under it if the executor image is present
#      (skip with --no-smoke).
# dockerd is never stopped or restarted. runsc's "--network=none" is required: without it
# runsc refuses to start containers on this kind of host ("cannot run with network enabled
# in root network namespace"), and takod runs every job with networking off anyway.
# Environment: DOCKER_SOCK (default /var/run/docker.sock), TAKOD_IMAGE (smoke-test image,
# default code-executor:latest), DOCKER_CONFIG_FILE (overrides the daemon.json path).
set -euo pipefail

SOCK=${DOCKER_SOCK:-/var/run/docker.sock}
IMAGE=${TAKOD_IMAGE:-code-executor:latest}
NAME=""
smoke=1
for arg in "$@"; do
    case "$arg" in
        --no-smoke) smoke=0 ;;
        -h | --help) sed -n '2,29p' "$0"; exit 0 ;;
        runsc | crun) NAME=$arg ;;
        *) echo "setup-runtime: unknown argument: $arg (want runsc or crun)" >&2; exit 2 ;;
    esac
done
case "$NAME" in
    runsc) BIN=/usr/bin/runsc; ARGS='["--network=none"]' ;;
    crun) BIN=/usr/bin/crun; ARGS='[]' ;;
    *) echo "usage: setup-runtime.sh runsc|crun [--no-smoke]" >&2; exit 2 ;;
esac

say() { echo "setup-runtime $NAME: $*"; }
die() { echo "setup-runtime $NAME: ERROR: $*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "run this as root (it installs a package and edits the Docker config)"
command -v python3 >/dev/null || die "python3 is required (it merges daemon.json)"
command -v curl >/dev/null || die "curl is required (it asks dockerd GET /info)"

# --- 1. the binary -----------------------------------------------------------------------
if [ -x "$BIN" ]; then
    say "$NAME present: $("$BIN" --version 2>/dev/null | head -1)"
else
    say "installing Debian package $NAME (apt-get)"
    export DEBIAN_FRONTEND=noninteractive
    if ! apt-get install -y -q --no-install-recommends "$NAME" >/dev/null 2>&1; then
        apt-get update -q >/dev/null || die "apt-get update failed"
        apt-get install -y -q --no-install-recommends "$NAME" >/dev/null ||
            die "apt-get install $NAME failed"
    fi
    [ -x "$BIN" ] || die "package $NAME installed but $BIN is missing"
    say "installed: $("$BIN" --version 2>/dev/null | head -1)"
fi

# --- 2. crun: no controller left in a hybrid host's unified hierarchy ----------------------
if [ "$NAME" = crun ] && [ "$(stat -f -c %T /sys/fs/cgroup 2>/dev/null)" = tmpfs ] &&
    [ -r /sys/fs/cgroup/unified/cgroup.controllers ]; then
    for c in $(cat /sys/fs/cgroup/unified/cgroup.controllers); do
        case "$c" in *[!a-z_]*) die "unexpected controller name '$c'" ;; esac
        if mountpoint -q "/sys/fs/cgroup/$c"; then
            continue
        fi
        mkdir -p "/sys/fs/cgroup/$c" ||
            die "mkdir /sys/fs/cgroup/$c failed (crun needs controller $c out of cgroup2)"
        mount -t cgroup -o "$c" cgroup "/sys/fs/cgroup/$c" ||
            die "mount -t cgroup -o $c failed: controller $c stays in the cgroup2 hierarchy, where crun cannot work with cgroup v1 (takod uses runc then)"
        say "mounted cgroup controller $c as a v1 hierarchy at /sys/fs/cgroup/$c (it was the only one in cgroup2's unified hierarchy, which crun refuses)"
    done
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

# --- 3. merge the runtime into daemon.json -----------------------------------------------
mkdir -p "$(dirname "$conf")"
result=$(python3 -c '
import json, os, sys, tempfile
path, name, binary, args = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
want = {"path": binary}
if args:
    want["runtimeArgs"] = args
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
if rt.get(name) == want:
    print("unchanged")
    sys.exit(0)
state = "updated" if name in rt else "added"
rt[name] = want
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
' "$conf" "$NAME" "$BIN" "$ARGS" 2>&1) || die "could not update $conf: $result"
case "$result" in
    unchanged) say "$conf already registers $NAME as wanted; left as is" ;;
    added) say "added runtimes.$NAME to $conf (other keys kept)" ;;
    updated) say "replaced runtimes.$NAME in $conf with path $BIN, arguments $ARGS (other keys kept)" ;;
    *) die "unexpected merge result: $result" ;;
esac

# --- 4. make the running dockerd load it -------------------------------------------------
runtimes() {
    curl -sf --max-time 5 --unix-socket "$SOCK" http://localhost/info 2>/dev/null |
        python3 -c 'import json, sys; print(" ".join(sorted(json.load(sys.stdin).get("Runtimes") or {})))' \
            2>/dev/null
}
has_runtime() { case " $(runtimes) " in *" $NAME "*) return 0 ;; esac; return 1; }

if [ -z "$dpid" ]; then
    die "no dockerd is running; $conf is ready and dockerd will load $NAME when it starts (then run this again to check)"
fi
if [ "$result" = unchanged ] && has_runtime; then
    say "dockerd (pid $dpid) already lists $NAME; no reload needed"
else
    say "sending SIGHUP to dockerd (pid $dpid) to reload $conf"
    kill -HUP "$dpid" || die "could not signal dockerd pid $dpid"
    ok=0
    for _ in $(seq 1 60); do
        if has_runtime; then ok=1; break; fi
        sleep 0.5
    done
    [ "$ok" = 1 ] || die "dockerd did not list $NAME in GET /info within 30 s after SIGHUP (Runtimes: $(runtimes)); its log says why (look for \"Error reloading configuration\"; /var/log/takod-dockerd.log when scripts/setup.sh started it)"
    say "dockerd reloaded; GET /info Runtimes: $(runtimes)"
fi

# --- 5. smoke test -----------------------------------------------------------------------
if [ "$smoke" = 1 ]; then
    if ! docker image inspect "$IMAGE" >/dev/null 2>&1; then
        say "image $IMAGE not present; smoke test skipped"
    else
        name="takod-$NAME-smoke-$$"
        out=$(timeout -k 5 120 docker run --rm --name "$name" --runtime "$NAME" --network none \
              --read-only --user 1000:1000 --tmpfs /tmp --cap-drop ALL \
              --security-opt no-new-privileges --pids-limit 200 --memory 256m "$IMAGE" \
              python3 -c 'import platform; print("ok", platform.release())' 2>&1) || {
            docker rm -f "$name" >/dev/null 2>&1 || true
            die "smoke test under $NAME failed: $out"
        }
        say "smoke test: docker run --runtime $NAME $IMAGE python3 -> $out"
    fi
fi
say "done: use it with docker.runtime = $NAME in tako.conf"
