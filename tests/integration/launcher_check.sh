#!/usr/bin/env bash
# launcher_check.sh — drive image/launcher/tako-launcher (the warm-container entrypoint)
# through the docker CLI, as takod's executor will: per job a control directory with the
# go/done FIFOs, a hardened `docker run -d`, the go line, then done and /ctl/status.
#
# Checks: hello; exit code; stdout/stderr caps; timeout (SIGTERM, and SIGKILL when TERM is
# ignored); OOM; a grandchild holding the pipes (in and out of the process group); stdin;
# the host giving up (closing go); a bad go line; a program tampering with /ctl. Then
# measures the critical path (host writes go -> host reads done) of print(1) over N warm
# runs, against a cold `docker run --rm ... python3 -c 'print(1)'`.
#
# Needs root (the FIFOs and directories are made for uid 1000) and a running dockerd with
# the image. Exit 0: all passed; 1: a check failed; 77: cannot run here (skip).
# Environment:
#   TAKO_IMAGE          image (default code-executor:latest)
#   TAKO_LAUNCHER_BIN   bind-mount this launcher binary over the image's (for testing a
#                       fresh build without rebuilding the image)
#   TAKO_DOCKER_ARGS    extra `docker run` options for the warm containers, split on
#                       blanks (e.g. "--security-opt seccomp=conf/seccomp.json")
#   LATENCY_RUNS        warm runs measured (default 20; 0 skips the latency part)
#   COLD_RUNS           cold runs measured (default 10)
#   TAKO_OCI_BUNDLE_BIN the OCI mode: build/oci_bundle (tests/tools/oci_bundle.c). Each
#                       warm container is then a bundle whose config.json is takod's own
#                       rendering (oci_config_text, the OCI backend's defences; the process
#                       the launcher alone, as uid 1000 with no capabilities, as the docker
#                       mode's --user 1000:1000 --cap-drop ALL), started with `crun --root
#                       <this run's own state root> run --detach` under a small subreaper
#                       (as takod's executor is) that collects the launcher's exit status.
#                       The cold baseline is `crun run` of a bundle of python3 -c 'print(1)'.
#                       TAKO_LAUNCHER_BIN and TAKO_DOCKER_ARGS are docker-mode only.
#   TAKO_CONF           the OCI mode's configuration (default conf/tako.conf)
set -euo pipefail

IMAGE=${TAKO_IMAGE:-code-executor:latest}
LATENCY_RUNS=${LATENCY_RUNS:-20}
COLD_RUNS=${COLD_RUNS:-10}
PREFIX="tako-lchk-$$"
LAUNCHER=/usr/local/bin/tako-launcher

say() { printf 'launcher_check: %s\n' "$*"; }
skip() {
    say "SKIP: $*"
    exit 77
}

[ "$(id -u)" -eq 0 ] || skip "needs root"
command -v docker >/dev/null 2>&1 || skip "no docker CLI"
OCI_BUNDLE=${TAKO_OCI_BUNDLE_BIN:-}
CONF=${TAKO_CONF:-$(cd "$(dirname "$0")/../.." && pwd)/conf/tako.conf}
if [ -n "$OCI_BUNDLE" ]; then
    [ -x "$OCI_BUNDLE" ] || skip "TAKO_OCI_BUNDLE_BIN=$OCI_BUNDLE is not executable"
    command -v crun >/dev/null 2>&1 || skip "no crun on PATH (scripts/setup-runtime.sh crun)"
    [ -z "${TAKO_LAUNCHER_BIN:-}${TAKO_DOCKER_ARGS:-}" ] ||
        { say "TAKO_LAUNCHER_BIN and TAKO_DOCKER_ARGS are docker-mode only"; exit 1; }
fi
command -v python3 >/dev/null 2>&1 || skip "no python3 on the host"
timeout 20 docker info >/dev/null 2>&1 || skip "no docker engine answering"
docker image inspect "$IMAGE" >/dev/null 2>&1 || skip "image $IMAGE missing (scripts/build-image.sh)"

EXTRA_MOUNT=()
read -r -a EXTRA_ARGS <<<"${TAKO_DOCKER_ARGS:-}"
if [ -n "${TAKO_LAUNCHER_BIN:-}" ]; then
    [ -x "$TAKO_LAUNCHER_BIN" ] || { say "TAKO_LAUNCHER_BIN=$TAKO_LAUNCHER_BIN is not executable"; exit 1; }
    EXTRA_MOUNT=(-v "$(realpath "$TAKO_LAUNCHER_BIN"):$LAUNCHER:ro")
elif [ -z "$OCI_BUNDLE" ] &&
    ! timeout 60 docker run --rm --network none --user 1000:1000 "$IMAGE" "$LAUNCHER" --version \
    >/dev/null 2>&1; then
    say "FAIL: $IMAGE has no working $LAUNCHER (rebuild it with scripts/build-image.sh)"
    exit 1
fi

WORK=$(mktemp -d /tmp/tako-lchk.XXXXXX)
# the OCI mode's own instance: its state root /run/takod/<hash>/crun and cgroup parent
# takod-<hash> (oci_bundle prints both), touched by nothing else
OCI_INSTANCE="launcher-check:$WORK"
OCI_ROOT=""
OCI_CGROUP=""
cleanup() {
    if [ -n "$OCI_BUNDLE" ]; then
        if [ -n "$OCI_ROOT" ]; then
            timeout 30 crun --root "$OCI_ROOT" list -q 2>/dev/null |
                xargs -r -n1 timeout 30 crun --root "$OCI_ROOT" delete -f >/dev/null 2>&1 || true
            rm -rf -- "$(dirname "$OCI_ROOT")"
        fi
        jobs -p | xargs -r kill 2>/dev/null || true # the subreapers (ours, by pid)
        [ -n "$OCI_CGROUP" ] && find /sys/fs/cgroup -maxdepth 2 -type d -name "$OCI_CGROUP" \
            -exec rmdir {} + 2>/dev/null || true
    else
        docker ps -aq --filter "name=^/$PREFIX-" 2>/dev/null |
            xargs -r timeout 60 docker rm -f >/dev/null 2>&1 || true
    fi
    rm -rf -- "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP

# ---------------------------------------------------------------- the host's side

# host.py CTL_DIR GO_LINE|--close TIMEOUT_S SETTLE_S: what takod's executor will do.
# Opens done (O_NONBLOCK) first, waits until the launcher has opened go (ENXIO until
# then), optionally lets the container settle, writes the go line (or just closes go),
# and waits for "done\n". Prints "ready_ms=… t0_us=… t1_us=… elapsed_us=… done=0|1".
cat >"$WORK/host.py" <<'EOF'
import errno, os, select, sys, time
ctl, line, tmo, settle = sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4])
t_start = time.monotonic()
done = os.open(ctl + "/done", os.O_RDONLY | os.O_NONBLOCK)
while True:
    try:
        go = os.open(ctl + "/go", os.O_WRONLY | os.O_NONBLOCK)
        break
    except OSError as e:
        if e.errno != errno.ENXIO or time.monotonic() - t_start > 30:
            raise
        time.sleep(0.002)
ready_ms = (time.monotonic() - t_start) * 1000
time.sleep(settle)
t0 = time.monotonic_ns() // 1000
if line != "--close":
    os.write(go, (line + "\n").encode())
os.close(go)
buf, ok = b"", 0
p = select.poll()
p.register(done, select.POLLIN)
deadline = time.monotonic() + tmo
while line != "--close":
    left = deadline - time.monotonic()
    if left <= 0 or not p.poll(left * 1000):
        break
    chunk = os.read(done, 64)
    if not chunk:
        break
    buf += chunk
    if buf.endswith(b"\n"):
        ok = buf == b"done\n"
        break
t1 = time.monotonic_ns() // 1000
print(f"ready_ms={ready_ms:.1f} t0_us={t0} t1_us={t1} elapsed_us={t1 - t0} done={int(ok)}")
EOF

# ocirun.py ROOT DIR ID: the OCI mode's `start`, as takod's executor does it: a subreaper
# runs `crun run --detach`, writes DIR.run ("started", or "failed RC" and crun's words)
# once crun has returned, then reaps the launcher (the container's init, reparented to it)
# and writes its exit status to DIR.exit.
cat >"$WORK/ocirun.py" <<'EOF'
import ctypes, os, subprocess, sys
root, bundle, cid = sys.argv[1:4]
ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
def put(name, text):
    with open(bundle + name + ".tmp", "w") as f:
        f.write(text)
    os.rename(bundle + name + ".tmp", bundle + name)
# the container inherits crun's stdio: /dev/null, and crun's words through a file (a pipe
# would stay open as long as the launcher runs)
with open(bundle + ".crun-err", "w+") as err:
    r = subprocess.run(["crun", "--root", root, "run", "--detach", "--bundle", bundle, cid],
                       stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err,
                       timeout=60)
    if r.returncode != 0:
        err.seek(0)
        put(".run", "failed %d %s" % (r.returncode, err.read()))
        sys.exit(1)
put(".run", "started")
code = "unknown"
try:
    _, st = os.wait()
    code = str(os.WEXITSTATUS(st) if os.WIFEXITED(st) else 128 + os.WTERMSIG(st))
except ChildProcessError:
    pass
put(".exit", code)
EOF

# oci_bundle DIR ID MEMORY ARGV...: DIR/config.json from takod's renderer; sets OCI_ROOT.
oci_bundle() {
    local d=$1 id=$2 mem=$3 out kv
    shift 3
    out=$("$OCI_BUNDLE" -c "$CONF" -o "server.data_dir=$WORK/data" -o "docker.image=$IMAGE" \
        -i "$OCI_INSTANCE" -d "$d" -n "$id" -m $((${mem%m} * 1048576)) -u 1000:1000 -- "$@") ||
        return 1
    for kv in $out; do
        case $kv in
            root=*) OCI_ROOT=${kv#root=} ;;
            cgroup_parent=*) OCI_CGROUP=${kv#cgroup_parent=} ;;
        esac
    done
}

FAILS=0
PASSES=0
pass() {
    PASSES=$((PASSES + 1))
    say "ok   $*"
}
fail() {
    FAILS=$((FAILS + 1))
    say "FAIL $*"
}

# new_job NAME CODE [STDIN]: a fresh job directory, prepared as the host would.
new_job() {
    local d="$WORK/$1"
    mkdir -p "$d/code" "$d/input" "$d/output" "$d/ctl"
    printf '%s\n' "$2" >"$d/code/main.py"
    printf '{}' >"$d/input/data.json"
    [ $# -ge 3 ] && printf '%s' "$3" >"$d/input/stdin"
    chmod 0755 "$d/code" "$d/input"
    chmod 0644 "$d/code/main.py" "$d/input/"*
    mkfifo -m 0600 "$d/ctl/go" "$d/ctl/done"
    chown 1000:1000 "$d/output" "$d/ctl" "$d/ctl/go" "$d/ctl/done"
    chmod 0700 "$d/ctl"
}

# start NAME [MEMORY]: the warm container, created and started before the job arrives.
start() {
    local d="$WORK/$1" mem=${2:-256m}
    if [ -n "$OCI_BUNDLE" ]; then
        oci_bundle "$d" "$PREFIX-$1" "$mem" "$LAUNCHER" || return 1
        python3 "$WORK/ocirun.py" "$OCI_ROOT" "$d" "$PREFIX-$1" &
        local i
        for ((i = 0; i < 600; i++)); do
            [ -e "$d.run" ] && break
            sleep 0.01
        done
        [ "$(cat "$d.run" 2>/dev/null)" = started ] && return 0
        say "crun run $PREFIX-$1: $(cat "$d.run" 2>/dev/null || echo 'no answer in 6 s')"
        return 1
    fi
    timeout 60 docker run -d --name "$PREFIX-$1" \
        --network none --read-only --cap-drop ALL --security-opt no-new-privileges \
        --user 1000:1000 --tmpfs /tmp:rw,noexec,nosuid,size=64m --init \
        -v "$d/code:/code:ro" -v "$d/input:/input:ro" -v "$d/output:/output" \
        -v "$d/ctl:/ctl" "${EXTRA_MOUNT[@]}" "${EXTRA_ARGS[@]}" \
        --memory "$mem" --memory-swap "$mem" --pids-limit 100 \
        --log-opt max-size=1m --log-opt max-file=1 \
        "$IMAGE" "$LAUNCHER" >/dev/null
}

# go NAME LINE [TIMEOUT_S] [SETTLE_S]: sets HOST[...] from host.py's output.
declare -A HOST ST
go() {
    local out kv
    out=$(python3 "$WORK/host.py" "$WORK/$1/ctl" "$2" "${3:-20}" "${4:-0}") || return 1
    HOST=()
    for kv in $out; do HOST[${kv%%=*}]=${kv#*=}; done
}

# status NAME: parse ctl/status into ST[...] (a regular file, one bounded line).
status() {
    local f="$WORK/$1/ctl/status" line kv
    ST=()
    [ -f "$f" ] && [ ! -L "$f" ] || return 1
    [ "$(stat -c %s "$f")" -le 4096 ] || return 1
    IFS= read -r line <"$f" || return 1
    for kv in $line; do ST[${kv%%=*}]=${kv#*=}; done
}

# finish NAME: the container must exit 0 within 10 s; then it goes.
finish() {
    local rc i
    if [ -n "$OCI_BUNDLE" ]; then
        rc="(still running)"
        for ((i = 0; i < 1000; i++)); do
            [ -e "$WORK/$1.exit" ] && { rc=$(cat "$WORK/$1.exit"); break; }
            sleep 0.01
        done
        timeout 30 crun --root "$OCI_ROOT" delete -f "$PREFIX-$1" >/dev/null 2>&1 || true
    else
        rc=$(timeout 10 docker wait "$PREFIX-$1" 2>/dev/null) || rc="(still running)"
        timeout 60 docker rm -f "$PREFIX-$1" >/dev/null 2>&1 || true
    fi
    [ "$rc" = 0 ] || { fail "$1: container exit status $rc, want 0"; return 1; }
}

# expect NAME KEY=VALUE...: compare status fields.
expect() {
    local name=$1 kv bad=""
    shift
    for kv in "$@"; do
        [ "${ST[${kv%%=*}]:-<unset>}" = "${kv#*=}" ] || bad+=" ${kv%%=*}=${ST[${kv%%=*}]:-<unset>}(want ${kv#*=})"
    done
    if [ -z "$bad" ]; then return 0; fi
    fail "$name:$bad"
    return 1
}

# run_case NAME CODE GO_LINE [MEMORY] [STDIN]: the whole round trip; leaves ST, HOST set.
run_case() {
    local name=$1 code=$2 line=$3 mem=${4:-256m}
    if [ $# -ge 5 ]; then new_job "$name" "$code" "$5"; else new_job "$name" "$code"; fi
    start "$name" "$mem" || { fail "$name: docker run failed"; return 1; }
    go "$name" "$line" 20 || { fail "$name: host side failed"; return 1; }
    [ "${HOST[done]}" = 1 ] || { fail "$name: no done from the launcher"; finish "$name"; return 1; }
    finish "$name" || return 1
    status "$name" || { fail "$name: no valid ctl/status"; return 1; }
    return 0
}

out_of() { cat "$WORK/$1/ctl/stdout"; }
ms() { echo $((HOST[elapsed_us] / 1000)); }

say "image $IMAGE${TAKO_LAUNCHER_BIN:+, launcher $TAKO_LAUNCHER_BIN}${TAKO_DOCKER_ARGS:+, $TAKO_DOCKER_ARGS}${OCI_BUNDLE:+, OCI bundles ($OCI_BUNDLE) under crun}"

# 1. hello, with the nonce echoed
if run_case hello 'print("hello")' 'timeout_ms=30000 stdout_cap=65536 stderr_cap=65536 nonce=n0nce-1'; then
    if expect hello exit_code=0 signal=0 timed_out=0 oom=0 stdout_bytes=6 stdout_truncated=0 \
        stderr_bytes=0 nonce=n0nce-1 && [ "$(out_of hello)" = hello ]; then
        pass "hello (cgroup=${ST[cgroup]}, $(ms) ms)"
    else
        fail "hello: stdout '$(out_of hello)'"
    fi
fi

# 2. exit code 3; stdin is /dev/null by default; defaults for missing keys
if run_case exit3 'import sys
assert sys.stdin.read() == ""
sys.exit(3)' 'timeout_ms=30000'; then
    expect exit3 exit_code=3 signal=0 timed_out=0 && pass "exit code 3"
fi

# 3. output floods: 200000 bytes on stdout (cap 65536) and on stderr (cap 1000)
if run_case flood 'import sys
sys.stdout.write("x" * 200000)
sys.stderr.write("e" * 200000)' 'timeout_ms=30000 stdout_cap=65536 stderr_cap=1000'; then
    size=$(stat -c %s "$WORK/flood/ctl/stdout")
    esize=$(stat -c %s "$WORK/flood/ctl/stderr")
    if expect flood exit_code=0 stdout_bytes=200000 stdout_truncated=1 stderr_bytes=200000 \
        stderr_truncated=1 && [ "$size" = 65536 ] && [ "$esize" = 1000 ]; then
        pass "flood (stdout file $size, stderr file $esize bytes)"
    else
        fail "flood: stdout file $size, stderr file $esize bytes"
    fi
fi

# 4. timeout: SIGTERM at 1 s
if run_case sleep 'import time
time.sleep(60)' 'timeout_ms=1000'; then
    run_ms=$(((ST[end_us] - ST[start_us]) / 1000))
    if expect sleep timed_out=1 signal=15 exit_code=143 && [ "$(ms)" -lt 2000 ] &&
        [ "$run_ms" -ge 1000 ]; then
        pass "timeout (killed after $run_ms ms, done after $(ms) ms)"
    else
        fail "timeout: run $run_ms ms, done after $(ms) ms"
    fi
fi

# 4b. timeout with SIGTERM ignored: SIGKILL 1 s later
if run_case sleepterm 'import signal, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
time.sleep(60)' 'timeout_ms=1000'; then
    run_ms=$(((ST[end_us] - ST[start_us]) / 1000))
    if expect sleepterm timed_out=1 signal=9 exit_code=137 && [ "$run_ms" -ge 2000 ] &&
        [ "$(ms)" -lt 3000 ]; then
        pass "timeout, TERM ignored (SIGKILL after $run_ms ms, done after $(ms) ms)"
    else
        fail "timeout, TERM ignored: run $run_ms ms, done after $(ms) ms"
    fi
fi

# 5. memory bomb under 128 MiB
if run_case oom 'x = []
while True:
    x.append(bytearray(400 << 20))' 'timeout_ms=30000' 128m; then
    expect oom oom=1 signal=9 exit_code=137 timed_out=0 && pass "oom (${ST[cgroup]}, $(ms) ms)"
fi

# 6. a grandchild that sleeps forever holding stdout (same process group)
if run_case grandchild 'import os, time
if os.fork() == 0:
    time.sleep(1000)
print("parent done")' 'timeout_ms=30000'; then
    if expect grandchild exit_code=0 timed_out=0 && [ "$(out_of grandchild)" = "parent done" ] &&
        [ "$(ms)" -lt 2000 ]; then
        pass "grandchild holding the pipe (done after $(ms) ms)"
    else
        fail "grandchild: stdout '$(out_of grandchild)', $(ms) ms"
    fi
fi

# 6b. the same, escaped into its own session (not in the process group)
if run_case escaped 'import os, time
if os.fork() == 0:
    os.setsid()
    time.sleep(1000)
print("parent done")' 'timeout_ms=30000'; then
    if expect escaped exit_code=0 timed_out=0 && [ "$(ms)" -lt 2000 ]; then
        pass "escaped grandchild (setsid) holding the pipe (done after $(ms) ms)"
    else
        fail "escaped grandchild: $(ms) ms"
    fi
fi

# 7. stdin=1 feeds /input/stdin
if run_case stdin 'import sys
sys.stdout.write(sys.stdin.read())' 'timeout_ms=30000 stdin=1' 256m $'hello stdin\nline 2\n'; then
    if expect stdin exit_code=0 stdout_bytes=19 &&
        [ "$(out_of stdin)" = $'hello stdin\nline 2' ]; then
        pass "stdin"
    else
        fail "stdin: stdout '$(out_of stdin)'"
    fi
fi

# 8. the host gives up: closes go without a line -> the container exits 0, quickly
new_job giveup 'print("never")'
if start giveup && go giveup --close 5; then
    t0=$(date +%s%N)
    if finish giveup; then
        t=$((($(date +%s%N) - t0) / 1000000))
        if [ ! -e "$WORK/giveup/ctl/status" ] && [ ! -e "$WORK/giveup/ctl/stdout" ] && [ "$t" -lt 3000 ]; then
            pass "host gave up (container gone ${t} ms after go closed)"
        else
            fail "host gave up: a status was written, or exit took ${t} ms"
        fi
    fi
else
    fail "giveup: could not start or signal"
fi

# 9. a bad go line: error reported, nothing run, done still signalled
if run_case badline 'print("never")' 'timeout_ms=abc'; then
    expect badline error=bad_go_line exit_code=-1 && [ ! -s "$WORK/badline/ctl/stdout" ] &&
        pass "bad go line reported"
fi

# 10. the program tampers with /ctl: symlinks where the launcher writes, a fake status,
#     done replaced by a regular file. The launcher still reports to the host's FIFO,
#     never writes through the symlinks, and the nonce tells the host the status is real.
if run_case tamper 'import os
for n in ("stdout", "status.tmp", "status"):
    try: os.unlink("/ctl/" + n)
    except FileNotFoundError: pass
    os.symlink("/output/pwned-" + n, "/ctl/" + n)
os.unlink("/ctl/done")
open("/ctl/done", "w").write("done\n")
print("tampered")' 'timeout_ms=30000 nonce=real'; then
    if expect tamper exit_code=0 nonce=real && [ ! -L "$WORK/tamper/ctl/stdout" ] &&
        [ "$(out_of tamper)" = tampered ] &&
        [ -z "$(ls "$WORK/tamper/output")" ]; then
        pass "tampering with /ctl"
    else
        fail "tampering: output dir: $(ls "$WORK/tamper/output"), stdout '$(out_of tamper)'"
    fi
fi

# ---------------------------------------------------------------- latency

f() { awk '{ printf "%.1f", $1 / 1000 }' <<<"$1"; } # µs -> ms
pct() { # pct P < numbers: the P-th percentile (nearest rank)
    sort -n | awk -v p="$1" '{ v[NR] = $1 } END { i = int((p * NR + 99) / 100); if (i < 1) i = 1; print v[i] }'
}

if [ "$LATENCY_RUNS" -gt 0 ]; then
    : >"$WORK/warm.txt"
    : >"$WORK/react.txt"
    : >"$WORK/python.txt"
    : >"$WORK/report.txt"
    : >"$WORK/prep.txt"
    for i in $(seq 1 "$LATENCY_RUNS"); do
        n="lat$i"
        new_job "$n" 'print(1)'
        t0=$(date +%s%N)
        start "$n" || { fail "latency: docker run failed"; break; }
        t1=$(date +%s%N)
        # the container has been up a while when a job arrives: settle 0.2 s
        go "$n" 'timeout_ms=30000' 20 0.2 || { fail "latency: host side failed"; break; }
        finish "$n" || break
        status "$n" || { fail "latency: no status"; break; }
        if [ "${HOST[done]}" != 1 ] || [ "${ST[exit_code]}" != 0 ] || [ "$(out_of "$n")" != 1 ]; then
            fail "latency run $i: wrong result"
            break
        fi
        echo "${HOST[elapsed_us]}" >>"$WORK/warm.txt"
        echo $((ST[start_us] - HOST[t0_us])) >>"$WORK/react.txt"
        echo $((ST[end_us] - ST[start_us])) >>"$WORK/python.txt"
        echo $((HOST[t1_us] - ST[end_us])) >>"$WORK/report.txt"
        # off the critical path: docker run -d (crun run --detach), then until the launcher
        # waits on go
        awk -v r="${HOST[ready_ms]}" -v d=$(((t1 - t0) / 1000)) 'BEGIN { printf "%d\n", d + r * 1000 }' \
            >>"$WORK/prep.txt"
        rm -rf -- "${WORK:?}/$n" "${WORK:?}/$n".run "${WORK:?}/$n".exit "${WORK:?}/$n".crun-err
    done
    if [ "$(wc -l <"$WORK/warm.txt")" -eq "$LATENCY_RUNS" ]; then
        say "warm, go -> done, print(1), $LATENCY_RUNS runs: p50 $(f "$(pct 50 <"$WORK/warm.txt")") ms," \
            "p99 $(f "$(pct 99 <"$WORK/warm.txt")") ms"
        say "  of which (p50): go -> fork $(f "$(pct 50 <"$WORK/react.txt")") ms," \
            "python3 run $(f "$(pct 50 <"$WORK/python.txt")") ms," \
            "exit -> done read $(f "$(pct 50 <"$WORK/report.txt")") ms"
        say "  off the critical path (p50): docker run -d until the launcher waits on go" \
            "$(f "$(pct 50 <"$WORK/prep.txt")") ms"
        pass "latency: $LATENCY_RUNS warm runs"
    fi

    : >"$WORK/cold.txt"
    cold_what="docker run --rm ... python3 -c 'print(1)'"
    [ -n "$OCI_BUNDLE" ] && cold_what="crun run of a bundle of python3 -c 'print(1)'"
    for c in $(seq 1 "$COLD_RUNS"); do
        if [ -n "$OCI_BUNDLE" ]; then
            new_job "cold$c" 'print(1)'
            oci_bundle "$WORK/cold$c" "$PREFIX-cold$c" 256m python3 -c 'print(1)' ||
                { fail "cold: oci_bundle failed"; break; }
            t0=$(date +%s%N)
            out=$(timeout 60 crun --root "$OCI_ROOT" run --bundle "$WORK/cold$c" "$PREFIX-cold$c" \
                </dev/null) || { fail "cold crun run failed"; break; }
            t1=$(date +%s%N)
            timeout 30 crun --root "$OCI_ROOT" delete -f "$PREFIX-cold$c" >/dev/null 2>&1 || true
            [ "$out" = 1 ] || { fail "cold run printed '$out'"; break; }
            echo $(((t1 - t0) / 1000)) >>"$WORK/cold.txt"
            continue
        fi
        t0=$(date +%s%N)
        out=$(timeout 60 docker run --rm --network none --read-only --cap-drop ALL \
            --security-opt no-new-privileges --user 1000:1000 \
            --tmpfs /tmp:rw,noexec,nosuid,size=64m --init --memory 256m --memory-swap 256m \
            --pids-limit 100 "$IMAGE" python3 -c 'print(1)') || { fail "cold docker run failed"; break; }
        t1=$(date +%s%N)
        [ "$out" = 1 ] || { fail "cold run printed '$out'"; break; }
        echo $(((t1 - t0) / 1000)) >>"$WORK/cold.txt"
    done
    if [ "$(wc -l <"$WORK/cold.txt")" -eq "$COLD_RUNS" ] && [ "$COLD_RUNS" -gt 0 ]; then
        say "cold, $cold_what, $COLD_RUNS runs:" \
            "p50 $(f "$(pct 50 <"$WORK/cold.txt")") ms, p99 $(f "$(pct 99 <"$WORK/cold.txt")") ms"
    fi
fi

say "$PASSES passed, $FAILS failed"
[ "$FAILS" -eq 0 ]
