#!/usr/bin/env bash
# seccomp_check.sh: check conf/seccomp.json against the real dockerd and executor image.
#
#   tests/integration/seccomp_check.sh            (as root, or a user in the docker group)
#
# Environment: TAKOD_SECCOMP_PROFILE (default conf/seccomp.json), TAKOD_IMAGE
# (default code-executor:latest), DOCKER_SOCK (default /var/run/docker.sock),
# TAKOD_EXTRA_RUN_ARGS (extra `docker run` arguments, e.g. "--runtime runsc"),
# TAKOD_URL (e.g. http://127.0.0.1:8000: run the in-container programs as jobs of that
# takod instead, see below).
#
# What it checks:
#   1. static: the file is valid JSON, default-deny with EPERM, the required arches, no
#      dangerous syscall in an unconditional ALLOW rule, clone/personality only with Docker's
#      argument filters, clone3 -> ENOSYS, size;
#   2. in a container run with takod's flags and the profile: ordinary Python works;
#   3. in the same kind of container: the dangerous syscalls fail with EPERM (clone3: ENOSYS
#      on purpose, so glibc falls back to clone);
#   4. the profile also loads when runc applies it before dropping privileges (no
#      no-new-privileges);
#   5. the profile is accepted inline through the Engine API (HostConfig.SecurityOpt).
# An unconfined control run prints, for information only, what the same dangerous calls do
# without the profile.
#
# With TAKOD_URL, checks 2 and 3 submit the same programs as jobs to that running takod
# (POST /execute, code = the program's text; the result's stdout carries the lines), so
# the profile is checked as that takod's backend really applies it (the OCI backend's
# config.json, tests/integration/seccomp_check_oci.py). Checks 4 and 5 and the control are
# about `docker run` and the Engine API: skipped in that mode (the OCI backend always sets
# no_new_privileges and never goes through the engine).
#
# Prints one PASS/FAIL line per check and "N passed, N failed"; exits 1 on any failure,
# 2 when the environment is missing. Every container carries the label takod.test=<tag>
# and is removed on exit. Every docker call is bounded by `timeout`.
set -u -o pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
profile=${TAKOD_SECCOMP_PROFILE:-$root/conf/seccomp.json}
image=${TAKOD_IMAGE:-code-executor:latest}
sock=${DOCKER_SOCK:-/var/run/docker.sock}
read -r -a extra <<<"${TAKOD_EXTRA_RUN_ARGS:-}"
tag="takod-seccomp-check-$$"
api="http://localhost/v1.41"

passed=0
failed=0
work=""

cleanup() {
    local ids
    ids=$(timeout 30 docker ps -aq --filter "label=takod.test=$tag" 2>/dev/null || true)
    if [ -n "$ids" ]; then
        # shellcheck disable=SC2086
        timeout 60 docker rm -f $ids >/dev/null 2>&1 || true
    fi
    [ -n "$work" ] && rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

pass() { echo "PASS $*"; passed=$((passed + 1)); }
fail() { echo "FAIL $*"; failed=$((failed + 1)); }
die() { echo "seccomp_check: $*" >&2; exit 2; }

command -v docker >/dev/null || die "docker CLI not found"
command -v python3 >/dev/null || die "python3 not found"
command -v curl >/dev/null || die "curl not found"
[ -r "$profile" ] || die "profile not readable: $profile"
takod_url=${TAKOD_URL:-}
timeout 20 docker image inspect "$image" >/dev/null 2>&1 || die "image $image not found"
# a runtime asked for in TAKOD_EXTRA_RUN_ARGS that this engine cannot use: nothing to check
for ((i = 0; i < ${#extra[@]}; i++)); do
    if [ "${extra[$i]}" = --runtime ] && [ $((i + 1)) -lt ${#extra[@]} ]; then
        rt=${extra[$((i + 1))]}
        if ! timeout 60 docker run --rm --runtime "$rt" --network none "$image" /bin/true \
            >/dev/null 2>&1; then
            echo "seccomp_check: SKIP: runtime $rt cannot start a container here" \
                "(scripts/setup-runtime.sh $rt)"
            exit 77
        fi
    fi
done

work=$(mktemp -d /tmp/takod-seccomp.XXXXXX)
chmod 755 "$work"

# ---------------------------------------------------------------------------------------
# 1. Static checks on the profile text.
# ---------------------------------------------------------------------------------------
echo "== static checks: $profile"
python3 - "$profile" <<'PY' > "$work/static.out" 2>&1
import json, sys
path = sys.argv[1]
text = open(path, encoding="utf-8").read()
def out(ok, name, detail=""):
    print(("PASS " if ok else "FAIL ") + name + (": " + detail if detail else ""))
try:
    p = json.loads(text)
except ValueError as e:
    out(False, "profile is valid JSON", str(e)); sys.exit(0)
out(True, "profile is valid JSON")
size = len(text.encode())
out(size <= 65536, "profile size", "%d bytes (%d compact)" % (size, len(json.dumps(p, separators=(",", ":")))))
out(p.get("defaultAction") == "SCMP_ACT_ERRNO" and p.get("defaultErrnoRet") == 1,
    "default action is ERRNO(EPERM)", "%s/%s" % (p.get("defaultAction"), p.get("defaultErrnoRet")))
arches = set()
for a in p.get("archMap", []):
    arches.add(a["architecture"]); arches.update(a.get("subArchitectures") or [])
arches.update(p.get("architectures", []))
# 64-bit only: no 32-bit ABI (x86, x32, arm) in the filter, so the kernel kills a process
# that uses one (SIGSYS), and libseccomp compiles one filter instead of three per container
out(arches == {"SCMP_ARCH_X86_64", "SCMP_ARCH_AARCH64"}, "architectures x86_64 and aarch64 only",
    ",".join(sorted(arches)))
blocked = """ptrace mount umount umount2 unshare setns keyctl add_key request_key bpf perf_event_open
userfaultfd io_uring_setup io_uring_enter io_uring_register kexec_load kexec_file_load init_module
finit_module delete_module pivot_root chroot swapon swapoff reboot open_by_handle_at name_to_handle_at
process_vm_readv process_vm_writev acct quotactl quotactl_fd lookup_dcookie fsopen fsmount fsconfig
fspick move_mount open_tree mount_setattr fanotify_init kcmp pidfd_getfd process_madvise syslog
iopl ioperm modify_ldt uselib settimeofday clock_settime stime vhangup sethostname setdomainname
socketcall""".split()
bad, conditional = [], {}
for r in p.get("syscalls", []):
    names = r.get("names") or ([r["name"]] if "name" in r else [])
    if r.get("action") != "SCMP_ACT_ALLOW":
        continue
    for n in names:
        if r.get("args"):
            conditional.setdefault(n, []).append(r["args"])
        elif n in blocked or n in ("clone", "clone3", "personality", "socket"):
            bad.append(n)
out(not bad, "no dangerous syscall allowed unconditionally", ",".join(sorted(set(bad))) or "none")
hidden = sorted(n for n in conditional if n in blocked)
out(not hidden, "no dangerous syscall allowed with arguments", ",".join(hidden) or "none")
NS = 0x7E020000  # CLONE_NEWNS|NEWCGROUP|NEWUTS|NEWIPC|NEWUSER|NEWPID|NEWNET
ok = all(len(a) == 1 and a[0]["index"] == 0 and a[0]["op"] == "SCMP_CMP_MASKED_EQ"
         and (a[0]["value"] & NS) == NS and a[0].get("valueTwo", 0) == 0
         for a in conditional.get("clone", []))
out(ok and "clone" in conditional, "clone allowed only without namespace flags",
    "mask 0x%x" % NS)
safe = {0, 8, 0x20000, 0x20008, 0xffffffff}
vals = [a[0]["value"] for a in conditional.get("personality", []) if a[0]["op"] == "SCMP_CMP_EQ"]
ok = len(vals) == len(conditional.get("personality", [])) and set(vals) <= safe
out(ok, "personality allowed only for Docker's safe values", ",".join(hex(v) for v in vals))
c3 = [r for r in p["syscalls"] if "clone3" in r.get("names", [])]
out(len(c3) == 1 and c3[0]["action"] == "SCMP_ACT_ERRNO" and c3[0].get("errnoRet") == 38,
    "clone3 returns ENOSYS (38)")
PY
while IFS= read -r line; do
    case "$line" in
        PASS\ *) pass "static: ${line#PASS }" ;;
        FAIL\ *) fail "static: ${line#FAIL }" ;;
        *) echo "  $line" ;;
    esac
done <"$work/static.out"

# ---------------------------------------------------------------------------------------
# In-container programs. They print "PASS name", "FAIL name: why", "SKIP name: why" or
# "INFO ..." lines and a final "DONE" (its absence means the program died).
# ---------------------------------------------------------------------------------------
cat >"$work/positive.py" <<'PY'
import os, sys, traceback

def check(name):
    def deco(fn):
        try:
            r = fn()
            if isinstance(r, str) and r.startswith("SKIP"):
                print("SKIP %s: %s" % (name, r[5:]))
            else:
                print("PASS %s%s" % (name, ": " + r if isinstance(r, str) and r else ""))
        except Exception as e:
            print("FAIL %s: %s: %s" % (name, type(e).__name__, e))
            traceback.print_exc(file=sys.stderr)
        sys.stdout.flush()
        return fn
    return deco

def status():
    return dict(l.split(":\t", 1) for l in open("/proc/self/status").read().splitlines() if ":\t" in l)

@check("seccomp filter active (Seccomp: 2)")
def _():
    s = status()
    assert s["Seccomp"].strip() == "2", s["Seccomp"]
    return "filters=%s NoNewPrivs=%s CapEff=%s" % (s.get("Seccomp_filters", "?").strip(),
                                                 s["NoNewPrivs"].strip(), s["CapEff"].strip())

@check("read /proc/self/status")
def _():
    assert "Pid" in status()

@check("json round trip")
def _():
    import json
    d = {"a": [1, 2.5, None, True], "b": "\u00e9"}
    assert json.loads(json.dumps(d)) == d

@check("threading (8 threads, lock, event)")
def _():
    import threading
    lock, n, ev = threading.Lock(), [0], threading.Event()
    def work():
        ev.wait(5)
        for _ in range(1000):
            with lock:
                n[0] += 1
    ts = [threading.Thread(target=work) for _ in range(8)]
    [t.start() for t in ts]; ev.set(); [t.join(10) for t in ts]
    assert n[0] == 8000, n[0]

@check("concurrent.futures ThreadPoolExecutor")
def _():
    from concurrent.futures import ThreadPoolExecutor
    with ThreadPoolExecutor(4) as ex:
        assert list(ex.map(lambda x: x * x, range(10))) == [x * x for x in range(10)]

@check("subprocess python3")
def _():
    import subprocess
    r = subprocess.run([sys.executable, "-c", "print(6*7)"], capture_output=True, timeout=30)
    assert r.returncode == 0 and r.stdout == b"42\n", (r.returncode, r.stdout, r.stderr[-300:])

@check("multiprocessing.Pool(2).map")
def _():
    import multiprocessing
    with multiprocessing.Pool(2) as p:
        assert p.map(abs, [-1, -2, -3]) == [1, 2, 3]

@check("os.fork + waitpid")
def _():
    pid = os.fork()
    if pid == 0:
        os._exit(7)
    _, st = os.waitpid(pid, 0)
    assert os.WIFEXITED(st) and os.WEXITSTATUS(st) == 7, st

@check("time, sleep, monotonic")
def _():
    import time
    t = time.monotonic(); time.sleep(0.05)
    assert time.monotonic() - t >= 0.04 and time.time() > 1.6e9
    time.process_time(); time.perf_counter_ns()

@check("random, os.urandom, secrets (getrandom)")
def _():
    import random, secrets
    assert len(os.urandom(32)) == 32 and len(secrets.token_hex(8)) == 16
    random.seed(); random.random(); random.SystemRandom().random()

@check("hashlib")
def _():
    import hashlib
    assert hashlib.sha256(b"abc").hexdigest().startswith("ba7816bf")
    hashlib.pbkdf2_hmac("sha256", b"pw", b"salt", 1000)

@check("sqlite3 :memory:")
def _():
    try:
        import sqlite3
    except ImportError:
        return "SKIP sqlite3 not in the image"
    c = sqlite3.connect(":memory:")
    c.execute("create table t(x)"); c.executemany("insert into t values (?)", [(i,) for i in range(100)])
    assert c.execute("select sum(x) from t").fetchone()[0] == 4950

@check("mmap anonymous and file-backed, mremap-sized growth")
def _():
    import mmap, tempfile
    m = mmap.mmap(-1, 1 << 24); m[0:4] = b"abcd"; m.close()
    with tempfile.TemporaryFile(dir="/tmp") as f:
        f.write(b"x" * 8192); f.flush()
        m = mmap.mmap(f.fileno(), 8192); assert m[0:1] == b"x"; m.resize(16384); m.close()
    b = bytearray()
    for _ in range(64):
        b += b"y" * 65536

@check("asyncio event loop (epoll, socketpair)")
def _():
    import asyncio
    async def main():
        await asyncio.sleep(0.01)
        r, w = await asyncio.open_connection(sock=__import__("socket").socketpair()[0])
        w.close()
        return 5
    assert asyncio.run(main()) == 5

@check("socket AF_UNIX/AF_INET creation (network is off)")
def _():
    import socket
    socket.socket(socket.AF_UNIX, socket.SOCK_STREAM).close()
    socket.socket(socket.AF_INET, socket.SOCK_STREAM).close()

@check("signals and itimer")
def _():
    import signal
    hit = []
    signal.signal(signal.SIGALRM, lambda *a: hit.append(1))
    signal.setitimer(signal.ITIMER_REAL, 0.02)
    import time; time.sleep(0.2)
    assert hit

@check("sched_getaffinity, os.cpu_count, resource")
def _():
    import resource
    assert os.sched_getaffinity(0) and os.cpu_count()
    resource.getrlimit(resource.RLIMIT_NOFILE); resource.getrusage(resource.RUSAGE_SELF)

@check("personality query (0xffffffff) allowed")
def _():
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    libc.personality.argtypes = [ctypes.c_ulong]
    r = libc.personality(0xFFFFFFFF)
    assert r >= 0, ctypes.get_errno()
    return "persona=0x%x" % r

@check("numpy matmul with OpenBLAS threads")
def _():
    try:
        import numpy as np
    except ImportError:
        return "SKIP numpy not in the image"
    a = np.random.rand(300, 300)
    assert np.allclose(np.linalg.inv(a @ a.T + 300 * np.eye(300)) @ (a @ a.T + 300 * np.eye(300)),
                       np.eye(300), atol=1e-6)

print("DONE")
PY

cat >"$work/negative.py" <<'PY'
# Every call here must fail with EPERM (clone3: ENOSYS). argv[1] == "control" only reports.
import ctypes, errno, mmap, os, platform, signal, sys

control = len(sys.argv) > 1 and sys.argv[1] == "control"
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
machine = platform.machine()
# syscall numbers: x86_64 <asm/unistd_64.h>; aarch64 <asm-generic/unistd.h>
NR = {
    "x86_64": dict(ptrace=101, personality=135, unshare=272, setns=308, keyctl=250, add_key=248,
                   request_key=249, bpf=321, perf_event_open=298, userfaultfd=323,
                   io_uring_setup=425, io_uring_enter=426, io_uring_register=427, mount=165,
                   umount2=166, pivot_root=155, chroot=161, swapon=167, swapoff=168, reboot=169,
                   kexec_load=246, init_module=175, finit_module=313, delete_module=176,
                   open_by_handle_at=304, name_to_handle_at=303, process_vm_readv=310,
                   process_vm_writev=311, acct=163, quotactl=179, lookup_dcookie=212, clone=56,
                   clone3=435, socket=41, fsopen=430, modify_ldt=154),
    "aarch64": dict(ptrace=117, personality=92, unshare=97, setns=268, keyctl=219, add_key=217,
                    request_key=218, bpf=280, perf_event_open=241, userfaultfd=282,
                    io_uring_setup=425, io_uring_enter=426, io_uring_register=427, mount=40,
                    umount2=39, pivot_root=41, chroot=51, swapon=224, swapoff=225, reboot=142,
                    kexec_load=104, init_module=105, finit_module=273, delete_module=106,
                    open_by_handle_at=265, name_to_handle_at=264, process_vm_readv=270,
                    process_vm_writev=271, acct=89, quotactl=60, lookup_dcookie=18, clone=220,
                    clone3=435, socket=198, fsopen=430),
}.get(machine)
if NR is None:
    print("FAIL syscall table: unsupported machine %s" % machine); print("DONE"); sys.exit(0)

def sc(name, *args):
    ctypes.set_errno(0)
    conv = [ctypes.c_long(a) if isinstance(a, int) else a for a in args]
    r = libc.syscall(ctypes.c_long(NR[name]), *conv)
    return r, ctypes.get_errno()

def report(name, r, e, want=errno.EPERM):
    got = "ok(%d)" % r if r >= 0 else errno.errorcode.get(e, str(e))
    if control:
        print("INFO unconfined %s -> %s" % (name, got))
    elif r == -1 and e == want:
        print("PASS %s -> %s" % (name, got))
    else:
        print("FAIL %s -> %s (want %s)" % (name, got, errno.errorcode[want]))
    sys.stdout.flush()

def in_child(fn):
    """Run fn in a forked child (it may succeed and change this process); return (r, errno)."""
    rfd, wfd = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            r, e = fn()
            os.write(wfd, ("%d %d" % (r, e)).encode())
        finally:
            os._exit(0)
    os.close(wfd)
    data = os.read(rfd, 64).decode(); os.close(rfd)
    _, st = os.waitpid(pid, 0)
    if not data:
        return -2, -(os.WTERMSIG(st) if os.WIFSIGNALED(st) else 0)
    r, e = data.split()
    return int(r), int(e)

buf = ctypes.create_string_buffer(256)
CLONE_NEWNS, CLONE_NEWUSER, CLONE_NEWNET, CLONE_NEWPID = 0x20000, 0x10000000, 0x40000000, 0x20000000
SIGCHLD = 17

report("unshare(CLONE_NEWUSER)", *in_child(lambda: sc("unshare", CLONE_NEWUSER)))
report("unshare(CLONE_NEWNS)", *in_child(lambda: sc("unshare", CLONE_NEWNS)))
report("unshare(CLONE_NEWNET)", *in_child(lambda: sc("unshare", CLONE_NEWNET)))

def clone_ns(flags):
    r, e = sc("clone", flags | SIGCHLD, 0, 0, 0, 0)
    if r == 0:
        os._exit(0)      # the new child, if the call was allowed
    if r > 0:
        os.waitpid(r, 0)
    return r, e
report("clone(CLONE_NEWUSER)", *in_child(lambda: clone_ns(CLONE_NEWUSER)))
report("clone(CLONE_NEWPID|CLONE_NEWNET)", *in_child(lambda: clone_ns(CLONE_NEWPID | CLONE_NEWNET)))
# size 0: were clone3 allowed, the kernel would answer EINVAL instead of creating a child
report("clone3", *sc("clone3", buf, 0), want=errno.ENOSYS)

fd = os.open("/proc/self/ns/net", os.O_RDONLY)
report("setns(netns fd)", *sc("setns", fd, 0)); os.close(fd)
report("keyctl(GET_KEYRING_ID)", *sc("keyctl", 0, -3, 0))
report("add_key(user)", *sc("add_key", b"user", b"takod", b"x", 1, -2))
report("request_key(user)", *sc("request_key", b"user", b"takod", None, 0))
report("ptrace(PTRACE_TRACEME)", *in_child(lambda: sc("ptrace", 0, 0, 0, 0)))
report("mount(tmpfs)", *sc("mount", b"none", b"/tmp", b"tmpfs", 0, None))
report("umount2(/tmp)", *sc("umount2", b"/tmp", 2))
report("pivot_root", *sc("pivot_root", b"/tmp", b"/tmp"))
report("chroot(/)", *sc("chroot", b"/"))
report("fsopen(tmpfs)", *sc("fsopen", b"tmpfs", 0))
attr = ctypes.create_string_buffer(128)
report("bpf(BPF_MAP_CREATE)", *sc("bpf", 0, attr, 72))
pe = ctypes.create_string_buffer(128)
ctypes.c_uint32.from_buffer(pe, 0).value = 1          # PERF_TYPE_SOFTWARE
ctypes.c_uint32.from_buffer(pe, 4).value = 128        # attr size
ctypes.c_uint64.from_buffer(pe, 40).value = 0x60      # exclude_kernel|exclude_hv
report("perf_event_open(sw cpu-clock, self)", *sc("perf_event_open", pe, 0, -1, -1, 0))
report("userfaultfd(UFFD_USER_MODE_ONLY)", *sc("userfaultfd", 0x80000 | 1))
params = ctypes.create_string_buffer(120)
report("io_uring_setup(1)", *sc("io_uring_setup", 1, params))
report("io_uring_enter", *sc("io_uring_enter", 0, 0, 0, 0, None, 0))
report("io_uring_register", *sc("io_uring_register", 0, 0, None, 0))
report("personality(READ_IMPLIES_EXEC 0x0400000)", *in_child(lambda: sc("personality", 0x0400000)))
report("personality(ADDR_NO_RANDOMIZE 0x0040000)", *in_child(lambda: sc("personality", 0x0040000)))
iov = ctypes.create_string_buffer(16)
report("process_vm_readv(self)", *sc("process_vm_readv", os.getpid(), iov, 0, iov, 0, 0))
report("process_vm_writev(self)", *sc("process_vm_writev", os.getpid(), iov, 0, iov, 0, 0))
mid = ctypes.c_int(0)
ctypes.c_uint32.from_buffer(buf, 0).value = 128
report("name_to_handle_at(/tmp)", *sc("name_to_handle_at", -100, b"/tmp", buf, ctypes.byref(mid), 0))
report("open_by_handle_at", *sc("open_by_handle_at", -100, buf, 0))
report("kexec_load", *sc("kexec_load", 0, 0, None, 0))
report("init_module", *sc("init_module", None, 0, b""))
report("finit_module", *sc("finit_module", -1, b"", 0))
report("delete_module", *sc("delete_module", b"takod_nonexistent", 0))
report("swapon", *sc("swapon", b"/tmp/none", 0))
report("swapoff", *sc("swapoff", b"/tmp/none"))
report("reboot(bad magic)", *sc("reboot", 0, 0, 0, None))
report("acct(NULL)", *sc("acct", None))
report("quotactl", *sc("quotactl", 0, None, 0, None))
report("lookup_dcookie", *sc("lookup_dcookie", 0, buf, 16))
for fam, fname in ((40, "AF_VSOCK"), (38, "AF_ALG"), (17, "AF_PACKET")):
    report("socket(%s)" % fname, *sc("socket", fam, 1 if fam != 17 else 3, 0))
if machine == "x86_64":
    report("modify_ldt(read)", *sc("modify_ldt", 0, buf, 16))
    # The 32-bit ABI (int 0x80): no SCMP_ARCH_X86 in the filter, so the kernel kills the
    # caller with SIGSYS whatever the call (unconfined, i386 getpid works).
    def int80(nr):
        def run():
            code = (b"\x53"                          # push rbx
                    + b"\xb8" + nr.to_bytes(4, "little")  # mov eax, nr
                    + b"\x31\xdb\x31\xc9\x31\xd2\x31\xf6\x31\xff"  # zero ebx ecx edx esi edi
                    + b"\xcd\x80\x5b\xc3")           # int 0x80; pop rbx; ret
            m = mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
            m.write(code)
            addr = ctypes.addressof(ctypes.c_char.from_buffer(m))
            r = ctypes.CFUNCTYPE(ctypes.c_int)(addr)()
            return (r, 0) if r >= 0 else (-1, -r)
        return run
    for nr, what in ((20, "getpid"), (26, "ptrace(TRACEME)"), (102, "socketcall")):
        r, e = in_child(int80(nr))
        got = ("killed by signal %d" % -e if r == -2 else
               "ok" if r >= 0 else errno.errorcode.get(e, e))
        if control:
            print("INFO unconfined i386 %s -> %s" % (what, got))
        else:
            print("%s i386 %s via int 0x80 killed by SIGSYS -> %s" % (
                "PASS" if r == -2 and -e == signal.SIGSYS else "FAIL", what, got))
print("DONE")
PY
chmod 644 "$work"/*.py

# shellcheck disable=SC2054  # the commas are tmpfs mount options
run_args=(--rm --label "takod.test=$tag" --network none --read-only --cap-drop ALL
          --security-opt no-new-privileges --security-opt "seccomp=$profile" --user 1000:1000
          --tmpfs /tmp:rw,noexec,nosuid,size=64m --init --memory 512m --pids-limit 200
          -v "$work:/check:ro" ${extra[@]+"${extra[@]}"})

# takod_job PROGRAM OUT ERR: PROGRAM's text as a job of $takod_url; its stdout to OUT,
# its stderr (and what went wrong) to ERR; returns the job's exit code (1: no result).
takod_job() {
    python3 - "$takod_url" "$1" "$2" "$3" <<'PY'
import json, sys, urllib.error, urllib.request
url, prog, out, err = sys.argv[1:5]
body = json.dumps({"code": open(prog, encoding="utf-8").read(), "timeout": 120}).encode()
req = urllib.request.Request(url + "/execute", data=body, method="POST",
                             headers={"Content-Type": "application/json"})
try:
    with urllib.request.urlopen(req, timeout=180) as r:
        res = json.load(r)
except (OSError, ValueError) as e:
    body = e.read().decode(errors="replace") if isinstance(e, urllib.error.HTTPError) else ""
    open(err, "w").write("POST %s/execute: %s %s\n" % (url, e, body)); sys.exit(1)
open(out, "w").write(res.get("stdout") or "")
open(err, "w").write((res.get("stderr") or "") + "job %s: status=%s runtime=%s error=%s\n" % (
    res.get("job_id"), res.get("status"), res.get("runtime"), json.dumps(res.get("error"))))
code = res.get("exit_code")
sys.exit(code if isinstance(code, int) and 0 <= code < 256 else 1)
PY
}

# run_checks LABEL PROGRAM [ARGS...]: counts PASS/FAIL lines; FAIL if no DONE line.
run_checks() {
    local label=$1; shift
    local outf="$work/$label.out" rc
    if [ -n "$takod_url" ]; then
        takod_job "$work/$(basename "$1")" "$outf" "$work/$label.err"
    else
        timeout -k 10 180 docker run "${run_args[@]}" --name "$tag-$label" "$image" \
            python3 "$@" >"$outf" 2>"$work/$label.err"
    fi
    rc=$?
    local done=0
    while IFS= read -r line; do
        case "$line" in
            PASS\ *) pass "$label: ${line#PASS }" ;;
            FAIL\ *) fail "$label: ${line#FAIL }" ;;
            DONE) done=1 ;;
            *) echo "  $label: $line" ;;
        esac
    done <"$outf"
    if [ "$done" != 1 ] || [ "$rc" != 0 ]; then
        fail "$label: program finished (rc=$rc, DONE=$done)"
        sed 's/^/    stderr: /' "$work/$label.err" | tail -20
    fi
}

echo "== python under the profile ($image${takod_url:+, as jobs of $takod_url})"
run_checks works /check/positive.py
echo "== dangerous syscalls under the profile"
run_checks blocked /check/negative.py
if [ -n "$takod_url" ]; then
    echo "== no-nnp, Engine API and control checks: docker only, skipped with TAKOD_URL"
    echo "$passed passed, $failed failed"
    [ "$failed" = 0 ]
    exit
fi

echo "== profile applied before privileges are dropped (no no-new-privileges)"
out=$(timeout -k 10 120 docker run --rm --label "takod.test=$tag" --name "$tag-nonnp" \
      --network none --read-only --cap-drop ALL --security-opt "seccomp=$profile" \
      --user 1000:1000 --init ${extra[@]+"${extra[@]}"} "$image" \
      python3 -c 'print([l.split()[1] for l in open("/proc/self/status") if l.startswith(("Seccomp:", "NoNewPrivs:"))])' 2>&1)
if [ "$out" = "['0', '2']" ]; then
    pass "no-nnp: container starts, Seccomp=2, NoNewPrivs=0"
else
    fail "no-nnp: got: $out"
fi

# ---------------------------------------------------------------------------------------
# Inline through the Engine API, as the executor passes it.
# ---------------------------------------------------------------------------------------
echo "== inline profile through the Engine API ($api)"
python3 - "$profile" "$image" "$tag" >"$work/body.json" <<'PY'
import json, sys
profile, image, tag = sys.argv[1:4]
text = open(profile, encoding="utf-8").read()
prog = r'''
import ctypes, errno, threading, os
s = open("/proc/self/status").read()
libc = ctypes.CDLL(None, use_errno=True)
ok = []
ok.append("Seccomp:\t2" in s)
t = threading.Thread(target=lambda: None); t.start(); t.join(); ok.append(True)
ok.append(libc.ptrace(0, 0, 0, 0) == -1 and ctypes.get_errno() == errno.EPERM)
ok.append(libc.syscall(435, 0, 0) == -1 and ctypes.get_errno() == errno.ENOSYS)
print("API-CHECK", " ".join(str(x) for x in ok))
'''
body = {
    "Image": image, "Cmd": ["python3", "-c", prog], "User": "1000:1000",
    "NetworkDisabled": True, "Labels": {"takod.test": tag},
    "HostConfig": {
        "NetworkMode": "none", "ReadonlyRootfs": True, "CapDrop": ["ALL"],
        "SecurityOpt": ["no-new-privileges", "seccomp=" + text],
        "Init": True, "Memory": 268435456, "MemorySwap": 268435456, "PidsLimit": 100,
        "Tmpfs": {"/tmp": "rw,noexec,nosuid,size=64m"}, "AutoRemove": False,
    },
}
json.dump(body, sys.stdout)
PY
echo "  body.json: $(wc -c <"$work/body.json") bytes, SecurityOpt[1] = \"seccomp=\" + $(wc -c <"$profile") bytes of profile text"

# api METHOD PATH [curl args...]: sets $resp (the body) and $code (the HTTP status).
code=000
resp=""
api() {
    local method=$1 path=$2 out
    shift 2
    if out=$(curl -sS --max-time 60 --unix-socket "$sock" -X "$method" -w '\n%{http_code}' \
                  "$@" "$api$path" 2>&1); then
        code=${out##*$'\n'}
        resp=${out%$'\n'*}
    else
        code=000
        resp=$out
    fi
}

api POST "/containers/create?name=$tag-api" -H 'Content-Type: application/json' \
    -d @"$work/body.json"
if [ "$code" = 201 ]; then
    cid=$(printf '%s' "$resp" | python3 -c 'import json,sys; print(json.load(sys.stdin)["Id"])')
    pass "api: create with inline seccomp -> 201 (${cid:0:12})"
    api POST "/containers/$cid/start"
    if [ "$code" = 204 ]; then pass "api: start -> 204"; else fail "api: start -> $code $resp"; fi
    api POST "/containers/$cid/wait?condition=not-running"
    status=$(printf '%s' "$resp" | python3 -c 'import json,sys; print(json.load(sys.stdin)["StatusCode"])' 2>/dev/null)
    if [ "$code" = 200 ] && [ "$status" = 0 ]; then
        pass "api: wait -> 200, StatusCode 0"
    else
        fail "api: wait -> $code $resp"
    fi
    # logs: binary multiplexed frames (8-byte header), so straight to a file
    curl -sS --max-time 60 --unix-socket "$sock" -o "$work/api.logs" \
        "$api/containers/$cid/logs?stdout=1&stderr=1" || true
    logs=$(python3 - "$work/api.logs" <<'PY'
import sys
b = open(sys.argv[1], "rb").read(); out = []
while len(b) >= 8:
    n = int.from_bytes(b[4:8], "big"); out.append(b[8:8 + n].decode(errors="replace")); b = b[8 + n:]
print("".join(out).strip())
PY
)
    if [ "$logs" = "API-CHECK True True True True" ]; then
        pass "api: logs: Seccomp=2, thread ok, ptrace EPERM, clone3 ENOSYS"
    else
        fail "api: logs: $logs"
    fi
    api GET "/containers/$cid/json"
    same=$(printf '%s' "$resp" | python3 -c '
import json, sys
so = json.load(sys.stdin)["HostConfig"]["SecurityOpt"]
print(any(o == "seccomp=" + open(sys.argv[1], encoding="utf-8").read() for o in so))' "$profile" 2>&1)
    if [ "$same" = True ]; then
        pass "api: inspect shows the profile text in HostConfig.SecurityOpt"
    else
        fail "api: inspect: $same"
    fi
    api DELETE "/containers/$cid?force=1&v=1"
    if [ "$code" = 204 ]; then pass "api: delete -> 204"; else fail "api: delete -> $code $resp"; fi
else
    fail "api: create -> $code $resp"
fi

# ---------------------------------------------------------------------------------------
# Control (information only): the same dangerous calls without any seccomp profile.
# ---------------------------------------------------------------------------------------
echo "== control, not counted: the same calls with seccomp=unconfined (what the profile adds)"
timeout -k 10 120 docker run --rm --label "takod.test=$tag" --name "$tag-control" \
    --network none --read-only --cap-drop ALL --security-opt no-new-privileges \
    --security-opt seccomp=unconfined --user 1000:1000 --tmpfs /tmp:rw,noexec,nosuid,size=64m \
    --init -v "$work:/check:ro" ${extra[@]+"${extra[@]}"} "$image" \
    python3 /check/negative.py control 2>&1 | grep -v '^DONE$' | sed 's/^/  /'

echo "$passed passed, $failed failed"
[ "$failed" = 0 ]
