/*
 * tako-launcher.c — entrypoint of a warm takod executor container.
 *
 * takod keeps each executor's next container created and started before a job arrives.
 * The container runs this launcher, which waits until the job's files are in place, runs
 * the program once, enforces the wall-time limit, captures capped stdout/stderr, and
 * reports back through files and FIFOs in a bind-mounted control directory. So the job's
 * critical path is only: write files -> signal the launcher -> python runs -> read the
 * result. Container create/start/remove stay off that path, and a container still never
 * runs a second job: the launcher exits after one.
 *
 * Build (static, no dependencies; scripts/build-image.sh does this):
 *
 *     gcc -std=c11 -static -O2 -s -o image/launcher/tako-launcher \
 *         image/launcher/tako-launcher.c
 *
 * PROTOCOL (version 1)
 * --------------------
 *
 * The host prepares these bind mounts for each warm container:
 *
 *     /code    ro   main.py
 *     /input   ro   data.json, and stdin when the job has one
 *     /output  rw   owned by uid 1000, the program's files
 *     /ctl     rw   owned by uid 1000, this protocol
 *
 * Before starting the container, the host creates two FIFOs in /ctl, mode 0600, owned by
 * uid 1000 (root opens them anyway):
 *
 *     /ctl/go     host writes, launcher reads
 *     /ctl/done   launcher writes, host reads
 *
 * 1. The launcher opens /ctl/go for reading; this blocks until the host opens it for
 *    writing. The host then writes one line (at most 1023 bytes, so one atomic write)
 *    of space-separated key=value pairs, and closes it:
 *
 *        timeout_ms=30000 stdout_cap=65536 stderr_cap=65536 stdin=1 nonce=Zx81...\n
 *
 *    timeout_ms  wall time of the program, 1..86400000             (default 30000)
 *    stdout_cap  bytes of stdout kept, 0..16777216                 (default 65536)
 *    stderr_cap  bytes of stderr kept, 0..16777216                 (default 65536)
 *    stdin       1: /input/stdin is the program's stdin, else /dev/null  (default 0)
 *    nonce       optional, 1..64 of [A-Za-z0-9_-]; echoed in the status (see TRUST)
 *
 *    Unknown keys are ignored; a malformed value or line is an error (step 5). EOF
 *    before a full line means the host gave up on this container: the launcher exits 0
 *    without running anything.
 *
 * 2. It runs `python3 -u /code/main.py` (execvp, so PATH is searched; argv[0] "python3";
 *    cwd /tmp) in a new process group, stdout and stderr each on a pipe. Both pipes are
 *    drained with poll() all the time, so the program never blocks on a full pipe; the
 *    first stdout_cap/stderr_cap bytes are kept, the rest is counted and dropped.
 *
 * 3. Limits. The wall clock starts at fork (CLOCK_MONOTONIC). At timeout_ms the job gets
 *    SIGTERM, and SIGKILL 1000 ms later if it has not exited. Once the program itself has
 *    exited, the pipes are drained for at most 200 ms more (a grandchild may hold them
 *    open), then everything left is killed. The launcher is a child subreaper, so it reaps
 *    every orphan of the job; inside a container (PID 1 is docker-init/tini, or the
 *    launcher itself) it finally kills every process it can signal — kill(-1), which in
 *    the container's PID namespace is exactly the job's leftovers — and reaps them all,
 *    so nothing of the job outlives the report. OOM kills are detected from the
 *    container's memory cgroup counter `oom_kill N` (v2 /sys/fs/cgroup/memory.events,
 *    v1 /sys/fs/cgroup/memory/memory.oom_control) read before and after the run.
 *
 * 4. Results: /ctl/stdout and /ctl/stderr (the kept bytes), then /ctl/status, written as
 *    /ctl/status.tmp and renamed, one line of key=value pairs:
 *
 *        exit_code=N signal=S timed_out=0|1 oom=0|1 stdout_bytes=TOTAL
 *        stderr_bytes=TOTAL stdout_truncated=0|1 stderr_truncated=0|1 start_us=T0
 *        end_us=T1 cgroup=v1|v2|none [nonce=...] [error=WORD errno=E]
 *
 *    exit_code is the exit status, or 128+signal when a signal ended the program (signal
 *    is then that signal, else 0); -1 if the program never ran. start_us/end_us are
 *    CLOCK_MONOTONIC microseconds at fork and at the program's exit: the same clock as
 *    the host's, since containers share the kernel. cgroup=none means OOM kills could
 *    not be counted (oom is then 0; ask Docker's State.OOMKilled instead).
 *
 * 5. It writes "done\n" to /ctl/done and exits 0. If the launcher itself fails, the
 *    status carries error=WORD (no blanks; e.g. bad_go_line, exec) and errno=E, and done
 *    is still signalled.
 *
 * The host should open /ctl/done (O_RDONLY|O_NONBLOCK) *before* writing the go line: the
 * launcher then opens its end right after reading the line, before the program runs, and
 * holds it, so the program cannot swap the FIFO; and the launcher never blocks on it.
 * Otherwise the launcher opens it at the end, blocking until the host does.
 *
 * PRESTART (--stdio mode). The interpreter is started before the go line, so a job does
 * not wait for Python to start (nor, with TAKO_PRELOAD, for the modules a job type names
 * to import: pandas takes ~450 ms). The launcher forks `python3 -u -c BOOT` with the
 * program's pipes and a control pipe on fd 3; BOOT imports TAKO_PRELOAD's modules (their
 * output discarded), then blocks reading fd 3. At go, the launcher writes "go stdin=0|1"
 * there and starts the clock; BOOT points fd 0 at /input/stdin when asked, sets argv and
 * sys.path as `python3 /code/main.py` would, and runs /code/main.py as a fresh __main__
 * module, printing an uncaught exception's traceback from main.py's frame on, as Python
 * does.
 * If the prestarted interpreter is gone by then (a preload was killed, say), the program
 * is started the plain way. Everything after (limits, capture, the report) is the same.
 *
 * TRUST. With --user UID:GID (what takod uses: the container runs the launcher as root
 * with only CAP_SETUID, CAP_SETGID and CAP_KILL, and /ctl is root's), the program runs
 * as that uid, with no groups and no capabilities: it cannot open the launcher's
 * descriptors (the report channel) through /proc/<pid>/fd, read its memory, signal it,
 * or write to /ctl — under runc, crun and gVisor alike (gVisor ignores non-dumpable for
 * /proc/<pid>/fd; the uid is what holds there). Without --user the program runs with the
 * launcher's uid, so it can write to /ctl, signal or
 * kill the launcher, write "done" itself, and leave junk (symlinks, FIFOs, huge files)
 * anywhere in /ctl and /output. The launcher defends what it can: it never follows a
 * symlink when it creates a file (unlink, then O_CREAT|O_EXCL|O_NOFOLLOW), it writes every
 * result only after all of the job's processes are dead, and it makes itself
 * non-dumpable so the program cannot read the nonce out of its memory. The host must
 * still treat everything in /ctl as untrusted input: open with O_NOFOLLOW, accept only
 * regular files, read at most a bounded size (status: 4 KiB; outputs: their cap), parse
 * the status strictly (known keys, decimal numbers, one line), require its nonce to
 * match, and keep its own deadline (timeout + kill grace + slack) with the container's
 * exit as a fallback, because a killed launcher reports nothing. A "done" the program
 * wrote itself comes with no valid status: keep reading /ctl/done until the deadline
 * (the launcher's own "done" follows, written only after every job process is dead).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <grp.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define PROTOCOL_VERSION 1
#define GO_LINE_MAX      1024
#define TIMEOUT_MS_MAX   86400000ULL
#define CAP_MAX          (16ULL << 20)
#define KILL_GRACE_US    1000000ULL /* SIGTERM -> SIGKILL */
#define DRAIN_GRACE_US   200000ULL  /* program exited -> stop reading its pipes */
#define SWEEP_US         1000000ULL /* at most this long killing and reaping leftovers */
#define STATUS_MAX       1024

struct opts {
    unsigned long long timeout_ms;
    unsigned long long cap[2]; /* stdout, stderr */
    int stdin_file;
    char nonce[65];
};

/* One captured stream: the first `cap` bytes in `buf`, `total` counted. */
struct stream {
    int fd; /* read end of the pipe, -1 once closed */
    char *buf;
    size_t len, alloc, cap;
    unsigned long long total;
};

struct result {
    int ran;       /* the program was started */
    int exit_code; /* exit status, 128+signal, or -1 */
    int signal;
    int timed_out;
    int oom;
    const char *cgroup;
    unsigned long long start_us, end_us;
    const char *error; /* NULL, or one word */
    int err_no;
};

static int sweep_ok; /* kill(-1) is confined to this container's leftovers */

static unsigned long long mono_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (unsigned long long)ts.tv_sec * 1000000ULL + (unsigned long long)ts.tv_nsec / 1000;
}

static void fail(struct result *r, const char *what, int err)
{
    if (r->error == NULL) { /* the first error is the interesting one */
        r->error = what;
        r->err_no = err;
    }
}

/* ------------------------------------------------------------------ small I/O helpers */

static int write_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0)
            return -1;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/* Read a small file (procfs, cgroupfs) into buf, NUL-terminated. */
static int read_small(const char *path, char *buf, size_t size)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0)
        return -1;
    size_t len = 0;
    while (len + 1 < size) {
        ssize_t n = read(fd, buf + len, size - 1 - len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        len += (size_t)n;
    }
    close(fd);
    buf[len] = '\0';
    return 0;
}

/* Create ctl/name afresh and fill it. Whatever the program left under that name
 * (a symlink, a FIFO, a file) is unlinked first; O_EXCL|O_NOFOLLOW refuses anything that
 * reappears. A directory there makes this fail, and the host sees no valid file. */
static int create_file(int ctl, const char *name, const char *data, size_t len)
{
    if (unlinkat(ctl, name, 0) < 0 && errno != ENOENT)
        return -1;
    int fd = openat(ctl, name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
    if (fd < 0)
        return -1;
    int rc = write_all(fd, data, len);
    int e = errno;
    if (close(fd) < 0 && rc == 0)
        return -1;
    errno = e;
    return rc;
}

/* ------------------------------------------------------------------------ cgroup OOM */

/* The `oom_kill N` counter of this container's memory cgroup, or -1 when none is
 * visible. Docker mounts the container's own cgroup at /sys/fs/cgroup (v2, private
 * cgroup namespace) or /sys/fs/cgroup/memory (v1). */
static long long oom_kills(const char **which)
{
    static const struct {
        const char *path, *name;
    } src[] = {
        {"/sys/fs/cgroup/memory.events", "v2"},
        {"/sys/fs/cgroup/memory/memory.oom_control", "v1"},
    };
    char buf[4096];
    for (size_t i = 0; i < sizeof src / sizeof src[0]; i++) {
        if (read_small(src[i].path, buf, sizeof buf) < 0)
            continue;
        char *line = buf;
        while (line) {
            long long v;
            if (sscanf(line, "oom_kill %lld", &v) == 1) {
                *which = src[i].name;
                return v;
            }
            line = strchr(line, '\n');
            if (line)
                line++;
        }
    }
    *which = "none";
    return -1;
}

/* ------------------------------------------------------------------- the go line */

/* Open ctl/go (FIFO mode). -1 on error, with the reason in r. */
static int open_go(int ctl, struct result *r)
{
    int fd = openat(ctl, "go", O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0) {
        fail(r, "go_open", errno);
        return -1;
    }
    struct stat st;
    if (fstat(fd, &st) < 0 || !S_ISFIFO(st.st_mode)) {
        fail(r, "go_not_fifo", 0);
        close(fd);
        return -1;
    }
    return fd;
}

/* Read one line from fd (ctl/go, or stdin in --stdio mode) and close it. Returns 1 with
 * the line (without '\n'), 0 on EOF before a full line (the host gave up), -1 on error.
 * Reads byte-sized chunks up to the newline only, so nothing after the line is eaten. */
static int read_go(int fd, char *line, size_t size, struct result *r)
{
    if (fd < 0)
        return -1;
    size_t len = 0;
    int rc = 0;
    for (;;) {
        ssize_t n = read(fd, line + len, size - 1 - len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            fail(r, "go_read", errno);
            rc = -1;
            break;
        }
        if (n == 0)
            break; /* EOF without a full line */
        char *nl = memchr(line + len, '\n', (size_t)n);
        len += (size_t)n;
        if (nl) {
            *nl = '\0';
            rc = 1;
            break;
        }
        if (len == size - 1) {
            fail(r, "bad_go_line", E2BIG);
            rc = -1;
            break;
        }
    }
    close(fd);
    return rc;
}

/* A decimal number in [lo, hi], digits only. */
static int parse_num(const char *s, unsigned long long lo, unsigned long long hi,
                     unsigned long long *out)
{
    unsigned long long v = 0;
    if (*s == '\0' || strlen(s) > 18)
        return -1;
    for (; *s; s++) {
        if (*s < '0' || *s > '9')
            return -1;
        v = v * 10 + (unsigned long long)(*s - '0');
    }
    if (v < lo || v > hi)
        return -1;
    *out = v;
    return 0;
}

static int parse_go(char *line, struct opts *o)
{
    char *save = NULL;
    for (char *tok = strtok_r(line, " ", &save); tok; tok = strtok_r(NULL, " ", &save)) {
        char *val = strchr(tok, '=');
        if (val == NULL)
            return -1;
        *val++ = '\0';
        unsigned long long v;
        if (!strcmp(tok, "timeout_ms")) {
            if (parse_num(val, 1, TIMEOUT_MS_MAX, &o->timeout_ms) < 0)
                return -1;
        } else if (!strcmp(tok, "stdout_cap")) {
            if (parse_num(val, 0, CAP_MAX, &o->cap[0]) < 0)
                return -1;
        } else if (!strcmp(tok, "stderr_cap")) {
            if (parse_num(val, 0, CAP_MAX, &o->cap[1]) < 0)
                return -1;
        } else if (!strcmp(tok, "stdin")) {
            if (parse_num(val, 0, 1, &v) < 0)
                return -1;
            o->stdin_file = (int)v;
        } else if (!strcmp(tok, "nonce")) {
            size_t n = strspn(val, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
                                   "0123456789_-");
            if (n == 0 || val[n] != '\0' || n >= sizeof o->nonce)
                return -1;
            memcpy(o->nonce, val, n + 1);
        } /* unknown keys are ignored: newer hosts may send more */
    }
    return 0;
}

/* ------------------------------------------------------------------ running the job */

/* Signal the whole job: every process we may signal when that is confined to this
 * container, else the program's process group and the program itself. */
static void kill_job(pid_t pid, int sig)
{
    if (sweep_ok) {
        kill(-1, sig); /* never the caller, never PID 1 */
        return;
    }
    killpg(pid, sig);
    kill(pid, sig);
}

/* kill(-1) is safe only inside the container's own PID namespace: there PID 1 is
 * Docker's init (tini) or the launcher itself. Run by hand on a host, it is neither. */
static int in_container(void)
{
    char comm[64];
    if (getpid() == 1)
        return 1;
    if (read_small("/proc/1/comm", comm, sizeof comm) < 0)
        return 0;
    return !strcmp(comm, "docker-init\n") || !strcmp(comm, "tini\n");
}

/* Read what the pipe has now. Returns 0 at EOF (and closes it), 1 otherwise. */
/* --stdio: the kept bytes also go to the host as they arrive ("takod-out S N\n" + N
 * bytes on the protocol channel; S is 1 for stdout, 2 for stderr), for live output. */
static int live_fd = -1;

static void live_send(const struct stream *s, int which, const char *p, size_t n)
{
    if (live_fd < 0 || n == 0)
        return;
    char head[48];
    int h = snprintf(head, sizeof head, "takod-out %d %zu\n", which, n);
    if (write_all(live_fd, head, (size_t)h) < 0 || write_all(live_fd, p, n) < 0)
        live_fd = -1; /* the host stopped listening: keep running, stop streaming */
    (void)s;
}

static int stream_drain(struct stream *s, struct result *r, int which)
{
    char chunk[65536];
    for (;;) {
        ssize_t n = read(s->fd, chunk, sizeof chunk);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno == EAGAIN)
            return 1;
        if (n <= 0) {
            close(s->fd);
            s->fd = -1;
            return 0;
        }
        s->total += (unsigned long long)n;
        size_t keep = s->cap - s->len < (size_t)n ? s->cap - s->len : (size_t)n;
        if (keep > 0 && s->len + keep > s->alloc) {
            size_t want = s->alloc ? s->alloc : 65536;
            while (want < s->len + keep)
                want *= 2;
            if (want > s->cap)
                want = s->cap;
            char *p = realloc(s->buf, want);
            if (p == NULL) {
                fail(r, "nomem", ENOMEM);
                s->cap = s->len; /* keep counting, stop keeping */
                keep = 0;
            } else {
                s->buf = p;
                s->alloc = want;
            }
        }
        if (keep > 0) {
            memcpy(s->buf + s->len, chunk, keep);
            s->len += keep;
            live_send(s, which, chunk, keep);
        }
    }
}

/* Reap every exited child; note the program's status. */
static void reap(pid_t pid, struct result *r, int *exited)
{
    int st;
    pid_t p;
    while ((p = waitpid(-1, &st, WNOHANG)) > 0) {
        if (p != pid)
            continue; /* an orphan of the job, reparented to us */
        *exited = 1;
        r->end_us = mono_us();
        if (WIFEXITED(st)) {
            r->exit_code = WEXITSTATUS(st);
        } else if (WIFSIGNALED(st)) {
            r->signal = WTERMSIG(st);
            r->exit_code = 128 + r->signal;
        }
    }
}

/* The prestarted interpreter's bootstrap (see PRESTART). */
static const char boot_py[] =
    /* Only what site already loaded: every import here is CPU each job pays for while
     * its container is made (traceback alone pulls in re and tokenize, ~10 ms). */
    "import os, sys\n"
    "def _tako_boot():\n"
    "    null = os.open('/dev/null', os.O_WRONLY)\n"
    "    saved = (os.dup(1), os.dup(2))\n"
    "    os.dup2(null, 1)\n"
    "    os.dup2(null, 2)\n"
    "    for m in os.environ.get('TAKO_PRELOAD', '').split(','):\n"
    "        if m.strip():\n"
    "            try:\n"
    "                __import__(m.strip())\n"
    "            except BaseException:\n"
    "                pass\n"
    "    os.dup2(saved[0], 1)\n"
    "    os.dup2(saved[1], 2)\n"
    "    for fd in saved + (null,):\n"
    "        os.close(fd)\n"
    "    words = os.read(3, 256).decode('ascii', 'replace').split()\n"
    "    os.close(3)\n"
    "    if words[:1] != ['go']:\n"
    "        os._exit(125)\n"
    "    if 'stdin=1' in words:\n"
    "        fd = os.open('/input/stdin', os.O_RDONLY | os.O_NOFOLLOW)\n"
    "        os.dup2(fd, 0)\n"
    "        os.close(fd)\n"
    "_tako_boot()\n"
    "del _tako_boot\n"
    "sys.argv = ['/code/main.py']\n"
    "sys.path[0] = '/code'\n"
    /* as `python3 /code/main.py` runs it, without runpy's 6 ms of imports and lookups */
    "m = type(sys)('__main__')\n"
    "m.__file__ = '/code/main.py'\n"
    "m.__builtins__ = __builtins__\n"
    "m.__spec__ = m.__package__ = m.__cached__ = None\n"
    "sys.modules['__main__'] = m\n"
    "try:\n"
    "    with open('/code/main.py', 'rb') as f:\n"
    "        src = f.read()\n"
    "    exec(compile(src, '/code/main.py', 'exec', dont_inherit=True), m.__dict__)\n"
    "except SystemExit:\n"
    "    raise\n"
    "except BaseException as e:\n"
    "    tb = e.__traceback__\n"
    "    while tb is not None and tb.tb_frame.f_code.co_filename != '/code/main.py':\n"
    "        tb = tb.tb_next\n"
    /* the hook python3 itself calls (C, or the program's own): the same text, chained
     * exceptions and carets included, with nothing to import. The C hook prints the
     * exception's own __traceback__, so that is trimmed too. */
    "    e = e.with_traceback(tb)\n"
    "    sys.excepthook(type(e), e, tb)\n"
    "    if isinstance(e, KeyboardInterrupt):\n" /* as python3 ends then: by SIGINT */
    "        import signal\n"
    "        signal.signal(signal.SIGINT, signal.SIG_DFL)\n"
    "        sys.stdout.flush(), sys.stderr.flush()\n"
    "        os.kill(os.getpid(), signal.SIGINT)\n"
    "    sys.exit(1)\n";

/* --user UID:GID: the program's uid and gid; (uid_t)-1: the launcher's own. */
static uid_t run_uid = (uid_t)-1;
static gid_t run_gid = (gid_t)-1;

/* In the child, between fork and exec: only async-signal-safe calls. On failure,
 * the errno goes to the parent through the close-on-exec pipe `ep`. ctl >= 0: the
 * prestarted interpreter, whose control pipe becomes fd 3. */
__attribute__((noreturn)) static void child(int in, int out, int err, int ep, int ctl,
                                            const sigset_t *mask)
{
    int e;
    setpgid(0, 0);
    if (dup2(in, 0) < 0 || dup2(out, 1) < 0 || dup2(err, 2) < 0)
        goto fail;
    if (ctl >= 0 && dup2(ctl, 3) < 0) /* dup2 clears close-on-exec on fd 3 */
        goto fail;
    if (chdir("/tmp") < 0)
        goto fail;
    signal(SIGPIPE, SIG_DFL);
    sigprocmask(SIG_SETMASK, mask, NULL);
    /* --user: the program runs as another uid than the launcher (see TRUST), with no
     * supplementary groups and, having left uid 0, no capabilities. */
    if (run_uid != (uid_t)-1 &&
        (setgroups(0, NULL) < 0 || setresgid(run_gid, run_gid, run_gid) < 0 ||
         setresuid(run_uid, run_uid, run_uid) < 0))
        goto fail;
    /* Make the job, not the launcher, the OOM killer's choice. Raising the score needs
     * no privilege, but writing it needs a dumpable process; exec resets that anyway. */
    prctl(PR_SET_DUMPABLE, 1, 0, 0, 0);
    int fd = open("/proc/self/oom_score_adj", O_WRONLY | O_CLOEXEC);
    if (fd >= 0) {
        (void)!write(fd, "1000", 4);
        close(fd);
    }
    char *argv[] = {"python3", "-u", "/code/main.py", NULL};
    char *boot[] = {"python3", "-u", "-c", (char *)boot_py, NULL};
    execvp(argv[0], ctl >= 0 ? boot : argv);
fail:
    e = errno;
    (void)!write(ep, &e, sizeof e);
    _exit(127);
}

/* The interpreter started before the go line (PRESTART); pid -1 when there is none. */
static struct {
    pid_t pid;
    int out, err, ep, ctl; /* read ends, and the control pipe's write end */
} pre = {-1, -1, -1, -1, -1};

static void prestart(const sigset_t *mask)
{
    int out[2] = {-1, -1}, err[2] = {-1, -1}, ep[2] = {-1, -1}, cp[2] = {-1, -1};
    int in = open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (in < 0 || pipe2(out, O_CLOEXEC) < 0 || pipe2(err, O_CLOEXEC) < 0 ||
        pipe2(ep, O_CLOEXEC) < 0 || pipe2(cp, O_CLOEXEC) < 0)
        goto out;
    pid_t pid = fork();
    if (pid == 0)
        child(in, out[1], err[1], ep[1], cp[0], mask);
    if (pid < 0)
        goto out;
    setpgid(pid, pid);
    pre.pid = pid;
    pre.out = out[0];
    pre.err = err[0];
    pre.ep = ep[0];
    pre.ctl = cp[1];
    out[0] = err[0] = ep[0] = cp[1] = -1;
out:;
    int fds[] = {in, out[0], out[1], err[0], err[1], ep[0], ep[1], cp[0], cp[1]};
    for (size_t i = 0; i < sizeof fds / sizeof fds[0]; i++)
        if (fds[i] >= 0)
            close(fds[i]);
}

/* At go: the prestarted interpreter, told to run the program, if it is still there. Its
 * pid, or -1 (then its pipes are closed and the program is started the plain way). */
static pid_t prestart_go(const struct opts *o, int *out, int *err, int *ep)
{
    if (pre.pid < 0)
        return -1;
    int st;
    char msg[32];
    int n = snprintf(msg, sizeof msg, "go stdin=%d\n", o->stdin_file ? 1 : 0);
    pid_t pid = pre.pid;
    if (waitpid(pid, &st, WNOHANG) != 0 || write_all(pre.ctl, msg, (size_t)n) < 0) {
        kill(-pid, SIGKILL);
        while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
            ;
        pid = -1;
        close(pre.out);
        close(pre.err);
        close(pre.ep);
    } else {
        *out = pre.out;
        *err = pre.err;
        *ep = pre.ep;
    }
    close(pre.ctl);
    pre.pid = pre.out = pre.err = pre.ep = pre.ctl = -1;
    return pid;
}

static void run_job(const struct opts *o, struct stream s[2], int sfd, const sigset_t *mask,
                    struct result *r)
{
    int out[2] = {-1, -1}, err[2] = {-1, -1}, ep[2] = {-1, -1}, in = -1;
    long long oom0 = oom_kills(&r->cgroup);
    r->start_us = mono_us();
    pid_t pid = prestart_go(o, &out[0], &err[0], &ep[0]);
    if (pid > 0)
        goto started;

    if (o->stdin_file)
        in = open("/input/stdin", O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    else
        in = open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (in < 0) {
        fail(r, o->stdin_file ? "stdin_open" : "devnull_open", errno);
        return;
    }
    if (pipe2(out, O_CLOEXEC) < 0 || pipe2(err, O_CLOEXEC) < 0 || pipe2(ep, O_CLOEXEC) < 0) {
        fail(r, "pipe", errno);
        goto out;
    }

    r->start_us = mono_us();
    pid = fork();
    if (pid < 0) {
        fail(r, "fork", errno);
        goto out;
    }
    if (pid == 0)
        child(in, out[1], err[1], ep[1], -1, mask);
    setpgid(pid, pid); /* also here: no window where the group does not exist */
    close(out[1]);
    close(err[1]);
    close(ep[1]);
    out[1] = err[1] = ep[1] = -1;

started:;
    int e;
    ssize_t n;
    while ((n = read(ep[0], &e, sizeof e)) < 0 && errno == EINTR)
        ;
    if (n == (ssize_t)sizeof e)
        fail(r, "exec", e); /* the child exits 127; still reaped below */
    else
        r->ran = 1;

    s[0].fd = out[0];
    s[1].fd = err[0];
    out[0] = err[0] = -1;
    for (int i = 0; i < 2; i++)
        fcntl(s[i].fd, F_SETFL, O_NONBLOCK);

    unsigned long long deadline = r->start_us + o->timeout_ms * 1000ULL;
    unsigned long long kill_at = 0, drain_until = 0;
    int exited = 0, killed = 0;
    for (;;) {
        unsigned long long now = mono_us();
        if (!exited && !r->timed_out && now >= deadline) {
            r->timed_out = 1;
            kill_job(pid, SIGTERM);
            kill_at = now + KILL_GRACE_US;
        }
        if (!killed && ((kill_at && now >= kill_at) || (exited && now >= drain_until))) {
            kill_job(pid, SIGKILL);
            killed = 1;
        }
        if (exited && (killed || (s[0].fd < 0 && s[1].fd < 0)))
            break;

        unsigned long long next = UINT64_MAX;
        if (!exited && !r->timed_out)
            next = deadline;
        if (kill_at && !killed && kill_at < next)
            next = kill_at;
        if (exited && drain_until < next)
            next = drain_until;
        int wait_ms = -1;
        if (next != UINT64_MAX)
            wait_ms = next > now ? (int)((next - now + 999) / 1000) : 0;

        struct pollfd pfd[3] = {{.fd = sfd, .events = POLLIN},
                                {.fd = s[0].fd, .events = POLLIN},
                                {.fd = s[1].fd, .events = POLLIN}};
        if (poll(pfd, 3, wait_ms) < 0 && errno != EINTR) {
            fail(r, "poll", errno);
            break; /* the sweep below still kills and reaps everything */
        }
        if (pfd[0].revents) {
            struct signalfd_siginfo si;
            while (read(sfd, &si, sizeof si) == (ssize_t)sizeof si) {
                if (si.ssi_signo != SIGCHLD && !killed) {
                    /* docker stop / kill: end the job now, still report */
                    fail(r, "terminated", 0);
                    kill_job(pid, SIGKILL);
                    killed = 1;
                }
            }
            int was = exited;
            reap(pid, r, &exited);
            if (exited && !was)
                drain_until = mono_us() + DRAIN_GRACE_US;
        }
        for (int i = 0; i < 2; i++)
            if (s[i].fd >= 0 && pfd[1 + i].revents)
                stream_drain(&s[i], r, i + 1);
    }

    /* Whatever is still buffered in the pipes was written before the kill: keep it. */
    for (int i = 0; i < 2; i++) {
        if (s[i].fd >= 0 && stream_drain(&s[i], r, i + 1)) {
            close(s[i].fd);
            s[i].fd = -1;
        }
    }

    /* Leave nothing of the job alive: kill and reap until no child (and, being the
     * subreaper, no orphan) remains. Outside a container only the group is killed. */
    unsigned long long sweep_end = mono_us() + SWEEP_US;
    for (;;) {
        kill_job(pid, SIGKILL);
        int st;
        pid_t p;
        while ((p = waitpid(-1, &st, WNOHANG)) > 0)
            ;
        if (p < 0 && errno == ECHILD)
            break;
        if (!sweep_ok || mono_us() >= sweep_end)
            break; /* a process stuck in the kernel; the container's end takes it */
        struct pollfd pfd = {.fd = sfd, .events = POLLIN};
        poll(&pfd, 1, 10);
        struct signalfd_siginfo si;
        while (read(sfd, &si, sizeof si) == (ssize_t)sizeof si)
            ;
    }

    long long oom1 = oom_kills(&r->cgroup);
    r->oom = oom0 >= 0 && oom1 > oom0;
out:
    if (in >= 0)
        close(in);
    int fds[] = {out[0], out[1], err[0], err[1], ep[0], ep[1]};
    for (size_t i = 0; i < sizeof fds / sizeof fds[0]; i++)
        if (fds[i] >= 0)
            close(fds[i]);
}

/* ------------------------------------------------------------------------ reporting */

static int open_done(int ctl, int nonblock)
{
    int fd = openat(ctl, "done", O_WRONLY | O_CLOEXEC | O_NOFOLLOW | (nonblock ? O_NONBLOCK : 0));
    if (fd < 0)
        return -1;
    struct stat st;
    if (fstat(fd, &st) < 0 || !S_ISFIFO(st.st_mode)) {
        close(fd);
        errno = EINVAL;
        return -1;
    }
    if (nonblock)
        fcntl(fd, F_SETFL, 0);
    return fd;
}

/* Write /ctl/stdout, /ctl/stderr, /ctl/status; the status line goes to out too. */
static size_t report(int ctl, const struct opts *o, struct stream s[2], struct result *r, char *out,
                     size_t outlen)
{
    static const char *names[2] = {"stdout", "stderr"};
    for (int i = 0; i < 2; i++)
        if (create_file(ctl, names[i], s[i].buf ? s[i].buf : "", s[i].len) < 0)
            fail(r, "write_output", errno);

    char line[STATUS_MAX];
    int n = snprintf(line, sizeof line,
                     "exit_code=%d signal=%d timed_out=%d oom=%d stdout_bytes=%llu "
                     "stderr_bytes=%llu stdout_truncated=%d stderr_truncated=%d "
                     "start_us=%llu end_us=%llu cgroup=%s",
                     r->ran ? r->exit_code : -1, r->signal, r->timed_out, r->oom, s[0].total,
                     s[1].total, s[0].total > s[0].len, s[1].total > s[1].len, r->start_us,
                     r->end_us, r->cgroup ? r->cgroup : "none");
    if (o->nonce[0])
        n += snprintf(line + n, sizeof line - (size_t)n, " nonce=%s", o->nonce);
    if (r->error)
        n += snprintf(line + n, sizeof line - (size_t)n, " error=%s errno=%d", r->error, r->err_no);
    n += snprintf(line + n, sizeof line - (size_t)n, "\n");

    if (create_file(ctl, "status.tmp", line, (size_t)n) < 0 ||
        renameat(ctl, "status.tmp", ctl, "status") < 0)
        fprintf(stderr, "tako-launcher: writing /ctl/status: %s\n", strerror(errno));
    size_t len = (size_t)n < outlen ? (size_t)n : outlen;
    memcpy(out, line, len);
    return len;
}

/*
 * --stdio mode (what takod uses; works under gVisor too, where a sandbox cannot open a
 * host FIFO): the go line arrives on the container's stdin and the status line leaves on
 * its stdout, prefixed "takod-status ", through the executor's attach connection to the
 * Docker engine. The launcher keeps both as private descriptors and points fds 0-2 at
 * /dev/null, so the program never inherits the protocol channel. /ctl still receives
 * stdout, stderr and status as files.
 */
int main(int argc, char **argv)
{
    int stdio_mode = 0;
    if (argc > 1) {
        if (!strcmp(argv[1], "--version")) {
            printf("tako-launcher protocol %d\n", PROTOCOL_VERSION);
            return 0;
        }
        unsigned long long u, g;
        char *colon = argc == 4 ? strchr(argv[3], ':') : NULL;
        if (colon)
            *colon = '\0';
        if (!strcmp(argv[1], "--stdio") &&
            (argc == 2 || (argc == 4 && !strcmp(argv[2], "--user") && colon &&
                           parse_num(argv[3], 1, 4294967294ULL, &u) == 0 &&
                           parse_num(colon + 1, 0, 4294967294ULL, &g) == 0))) {
            stdio_mode = 1;
            if (argc == 4) {
                run_uid = (uid_t)u;
                run_gid = (gid_t)g;
            }
        } else {
            fprintf(stderr, "usage: tako-launcher [--version | --stdio [--user UID:GID]]  "
                            "(protocol: see the source)\n");
            return 2;
        }
    }
    int proto_in = -1, proto_out = -1;
    if (stdio_mode) {
        proto_in = fcntl(0, F_DUPFD_CLOEXEC, 3);
        proto_out = fcntl(1, F_DUPFD_CLOEXEC, 3);
        int null = open("/dev/null", O_RDWR);
        if (proto_in < 0 || proto_out < 0 || null < 0)
            return 1;
        dup2(null, 0);
        dup2(null, 1);
        if (null > 2)
            close(null);
    }
    struct opts o = {.timeout_ms = 30000, .cap = {65536, 65536}};
    struct stream s[2] = {{.fd = -1}, {.fd = -1}};
    struct result r = {.exit_code = -1};
    sigset_t mask, old;
    sigprocmask(SIG_SETMASK, NULL, &old);

    int fd;
    while ((fd = open("/dev/null", O_RDWR)) >= 0 && fd <= 2)
        ; /* fds 0-2 open, so no pipe below lands on them */
    if (fd > 2)
        close(fd);
    signal(SIGPIPE, SIG_IGN); /* the host may close /ctl/done early */
    prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
    sweep_ok = in_container();

    int ctl = open("/ctl", O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (ctl < 0) {
        fprintf(stderr, "tako-launcher: /ctl: %s\n", strerror(errno));
        return 1;
    }

    if (stdio_mode)
        prestart(&old);
    char line[GO_LINE_MAX];
    int rc = read_go(stdio_mode ? proto_in : open_go(ctl, &r), line, sizeof line, &r);
    if (rc == 0)
        return 0; /* the host gave up on this container */
    int done = stdio_mode ? proto_out : open_done(ctl, 1);
    if (stdio_mode)
        live_fd = proto_out;

    if (rc > 0 && parse_go(line, &o) < 0)
        fail(&r, "bad_go_line", EINVAL);
    if (r.error == NULL) {
        s[0].cap = (size_t)o.cap[0];
        s[1].cap = (size_t)o.cap[1];
        /* SIGCHLD and the stop signals arrive on a signalfd, so one poll() waits for
         * the pipes, the program's exit and the deadlines together. */
        sigemptyset(&mask);
        sigaddset(&mask, SIGCHLD);
        sigaddset(&mask, SIGTERM);
        sigaddset(&mask, SIGINT);
        sigaddset(&mask, SIGHUP);
        sigprocmask(SIG_BLOCK, &mask, &old);
        int sfd = signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC);
        /* Subreaper: orphans of the job are reaped here. gVisor (2022) does not implement
         * it; there tini, PID 1, reaps them and the final kill(-1) sweep still applies. */
        if (sfd >= 0)
            (void)prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
        if (sfd < 0)
            fail(&r, "signalfd", errno);
        else
            run_job(&o, s, sfd, &old, &r);
        if (sfd >= 0)
            close(sfd);
    }

    char status[STATUS_MAX];
    size_t status_len = report(ctl, &o, s, &r, status, sizeof status);
    if (stdio_mode) {
        if (write_all(done, "takod-status ", 13) < 0 || write_all(done, status, status_len) < 0)
            return 1;
        close(done);
        return 0;
    }
    if (done < 0) {
        sigprocmask(SIG_SETMASK, &old, NULL); /* a stop signal may end the wait */
        done = open_done(ctl, 0);             /* blocks until the host opens its end */
    }
    if (done < 0 || write_all(done, "done\n", 5) < 0) {
        fprintf(stderr, "tako-launcher: signalling /ctl/done: %s\n", strerror(errno));
        return 1;
    }
    close(done);
    return 0;
}
