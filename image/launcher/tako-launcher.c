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
 * SESSION MODE (--stdio only). A go line with session=1 (and a nonce, required here)
 * makes the container a session: one persistent interpreter (the "driver", driver_py
 * below) runs cell after cell in one __main__ namespace until the host closes stdin. The
 * go line's timeout_ms/stdout_cap/stderr_cap are the cells' defaults; stdin is ignored.
 * The driver is the prestarted interpreter (PRESTART, so TAKO_PRELOAD applies): instead
 * of "go", BOOT gets "session LEN\n" and LEN bytes of driver source on fd 3, and runs it;
 * it runs as --user's uid, cwd /output, stdin /dev/null, stdout/stderr on pipes this
 * launcher drains, fd 3 its cell pipe and fd 4 its reply pipe (both close-on-exec in it).
 * The launcher stays the subreaper and the only writer of the host channel. Grammar
 * (every line ends with "\n"; numbers are decimal digits; N is the go line's nonce):
 *
 *   launcher -> host (proto_out)
 *     takod-ready nonce=N                     once, when the first driver is up and
 *                                             waiting (after its preloads)
 *     takod-out S LEN                         then LEN bytes: the running cell's stdout
 *                                             (S=1) or stderr (S=2), live, at most the
 *                                             cell's cap per stream in all; a driver's
 *                                             bytes while no cell runs are read, dropped
 *     takod-cellend n=C exit_code=E signal=G timed_out=0|1 interrupted=0|1 restarted=0|1
 *         oom=0|1 stdout_bytes=T stderr_bytes=T stdout_truncated=0|1 stderr_truncated=0|1
 *         start_us=U end_us=U reply=R nonce=N [error=WORD] [reply_error=too_big]
 *                                             then R bytes: the driver's reply (0: none)
 *     takod-status <the job status line's keys, exit_code=-1> nonce=N [error=WORD errno=E]
 *                                             last, when the session ends (EOF, a
 *                                             docker stop: error=terminated, a bad host
 *                                             frame: error=bad_cell, no driver:
 *                                             error=driver_start), then the launcher exits
 *   host -> launcher (proto_in), after the go line (it may follow in the same write)
 *     cell n=C code=L stdin=L [timeout_ms=T] [stdout_cap=B] [stderr_cap=B]
 *                                             then exactly L code bytes, then L stdin
 *                                             bytes (each L <= 16 MiB; C <= 10^18-1;
 *                                             limits as in the go line). Only when no
 *                                             cell is in flight (sent and not ended);
 *                                             a cell sent while the driver restarts waits
 *     interrupt                               SIGINT to the running cell; ignored when idle
 *     EOF                                     every process dies, takod-status, exit 0
 *   Anything else (an unknown or repeated key, a bad number, a NUL, a line over 1023
 *   bytes, a second cell in flight) is a bad frame: the session ends (error=bad_cell).
 *
 *   launcher -> driver (fd 3): "C LCODE LSTDIN\n", code, stdin.
 *   driver -> launcher (fd 4): "ready\n" once; per cell "run\n" when its code starts (an
 *     interrupt asked for before is sent then: the driver ignores SIGINT outside a cell's
 *     code, so a late one never hits the next cell), then "LEN\n" and LEN bytes of JSON
 *     {"status":"ok"|"error","value":repr|null,"error":{"type","message","traceback"}|null}
 *     relayed as opaque bytes: the program can write fd 4 too, so the reply is the
 *     untrusted program's own output. Over 1 MiB: dropped (reply=0 reply_error=too_big).
 *     A reply before the cell's "run" is dropped: it is the previous cell's own, late
 *     because that cell's program wrote a reply first and so ended it.
 *     A header that is not a number (or "ready" when not starting), or fd 3/4 closed by
 *     the program: the driver is replaced (error=driver_protocol when a cell was running).
 *
 * A cell's clock starts when its last byte has arrived and the driver is idle (start_us)
 * and stops at its reply or the driver's death (end_us). exit_code=-1 signal=0 while the
 * driver lives on; when it died during the cell, its exit status (128+signal, signal).
 * At timeout_ms, or on "interrupt", the driver's process group gets SIGINT: Python raises
 * KeyboardInterrupt in the cell, and the driver answers status error, type
 * KeyboardInterrupt (timed_out=1 or interrupted=1). No reply within 2000 ms: SIGKILL to
 * the group, a fresh driver (prestarted again, preloads again), and the cell ends once
 * it is ready, restarted=1, with no reply. The driver dying during a cell (os._exit, a
 * signal, the OOM killer: oom=1 from the cgroup counter read at the cell's start and
 * end) ends it the same way; dying between cells, it is replaced silently and the next
 * cellend says restarted=1. A driver that does not come up (120 s) ends the session
 * (error=driver_start; a cell waiting for it first ends with error=driver_start).
 * Processes a cell leaves (background subprocesses) live on between cells, bounded by
 * the pids limit; all of them die at the session's end (kill(-1) as in step 3).
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
    int session; /* SESSION MODE */
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
static int read_go(int fd, char *line, size_t size, struct result *r, int keep_open,
                   size_t *extra_off, size_t *extra_len)
{
    if (fd < 0)
        return -1;
    size_t len = 0;
    *extra_off = *extra_len = 0;
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
            *extra_off = (size_t)(nl - line) + 1; /* what came after it (SESSION MODE) */
            *extra_len = len - *extra_off;
            rc = 1;
            break;
        }
        if (len == size - 1) {
            fail(r, "bad_go_line", E2BIG);
            rc = -1;
            break;
        }
    }
    if (!keep_open)
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
        } else if (!strcmp(tok, "session")) {
            if (parse_num(val, 0, 1, &v) < 0)
                return -1;
            o->session = (int)v;
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
    "    head, _, rest = os.read(3, 256).partition(b'\\n')\n"
    "    words = head.decode('ascii', 'replace').split()\n"
    /* SESSION MODE: the launcher sends the driver's source instead of "go" */
    "    if words[:1] == ['session'] and len(words) == 2 and words[1].isdigit():\n"
    "        n = int(words[1])\n"
    "        while len(rest) < n:\n"
    "            b = os.read(3, n - len(rest))\n"
    "            if not b:\n"
    "                os._exit(125)\n"
    "            rest += b\n"
    "        return rest\n"
    "    os.close(3)\n"
    "    os.close(4)\n"
    "    if words[:1] != ['go']:\n"
    "        os._exit(125)\n"
    "    if 'stdin=1' in words:\n"
    "        fd = os.open('/input/stdin', os.O_RDONLY | os.O_NOFOLLOW)\n"
    "        os.dup2(fd, 0)\n"
    "        os.close(fd)\n"
    "_tako_s = _tako_boot()\n"
    "del _tako_boot\n"
    "if _tako_s is not None:\n"
    "    exec(compile(_tako_s, '<tako-session>', 'exec', dont_inherit=True),\n"
    "         {'__builtins__': __builtins__, '__name__': '_tako_session'})\n"
    "    os._exit(0)\n"
    "del _tako_s\n"
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
__attribute__((noreturn)) static void child(int in, int out, int err, int ep, int ctl, int rep,
                                            const sigset_t *mask)
{
    int e;
    setpgid(0, 0);
    if (dup2(in, 0) < 0 || dup2(out, 1) < 0 || dup2(err, 2) < 0)
        goto fail;
    if (rep >= 0 && (rep = fcntl(rep, F_DUPFD, 10)) < 0) /* out of the way of fd 3 */
        goto fail;
    if (ctl >= 0 && dup2(ctl, 3) < 0) /* dup2 clears close-on-exec on fd 3 */
        goto fail;
    if (rep >= 0 && (dup2(rep, 4) < 0 || close(rep) < 0)) /* the session driver's replies */
        goto fail;                                        /* (BOOT closes it in a job) */
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
    int out, err, ep, ctl, rep; /* read ends, the control pipe's write end, the reply pipe's
                                   read end (its fd 4: SESSION MODE) */
} pre = {-1, -1, -1, -1, -1, -1};

static void prestart(const sigset_t *mask)
{
    int out[2] = {-1, -1}, err[2] = {-1, -1}, ep[2] = {-1, -1}, cp[2] = {-1, -1};
    int rp[2] = {-1, -1};
    int in = open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (in < 0 || pipe2(out, O_CLOEXEC) < 0 || pipe2(err, O_CLOEXEC) < 0 ||
        pipe2(ep, O_CLOEXEC) < 0 || pipe2(cp, O_CLOEXEC) < 0 || pipe2(rp, O_CLOEXEC) < 0)
        goto out;
    pid_t pid = fork();
    if (pid == 0)
        child(in, out[1], err[1], ep[1], cp[0], rp[1], mask);
    if (pid < 0)
        goto out;
    setpgid(pid, pid);
    pre.pid = pid;
    pre.out = out[0];
    pre.err = err[0];
    pre.ep = ep[0];
    pre.ctl = cp[1];
    pre.rep = rp[0];
    out[0] = err[0] = ep[0] = cp[1] = rp[0] = -1;
out:;
    int fds[] = {in, out[0], out[1], err[0], err[1], ep[0], ep[1], cp[0], cp[1], rp[0], rp[1]};
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
    close(pre.rep);
    pre.pid = pre.out = pre.err = pre.ep = pre.ctl = pre.rep = -1;
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
        child(in, out[1], err[1], ep[1], -1, -1, mask);
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

/* The session driver (SESSION MODE), sent to BOOT over fd 3 and run there. */
static const char driver_py[] =
    "import os, sys, io, _ast, _signal\n"
    "def _tako_driver():\n"
    "    rd, wr = 3, 4\n"
    "    os.set_inheritable(rd, False)\n"
    "    os.set_inheritable(wr, False)\n"
    "    try:\n"
    "        os.chdir('/output')\n"
    "    except OSError:\n"
    "        pass\n"
    "    sys.argv = ['']\n"
    "    m = type(sys)('__main__')\n"
    "    m.__builtins__ = __builtins__\n"
    "    sys.modules['__main__'] = m\n"
    "    g = m.__dict__\n"
    "    busy = [False]\n"
    "    def on_int(signum, frame):\n"
    "        if busy[0]:\n"
    "            raise KeyboardInterrupt\n"
    "    buf = bytearray()\n"
    "    def fill():\n"
    "        b = os.read(rd, 1 << 20)\n"
    "        if not b:\n"
    "            os._exit(0)\n"
    "        buf.extend(b)\n"
    "    def take(n):\n"
    "        while len(buf) < n:\n"
    "            fill()\n"
    "        out = bytes(buf[:n])\n"
    "        del buf[:n]\n"
    "        return out\n"
    "    def line():\n"
    "        while True:\n"
    "            i = buf.find(b'\\n')\n"
    "            if i >= 0:\n"
    "                return take(i + 1)[:-1]\n"
    "            if len(buf) > 64:\n"
    "                os._exit(125)\n"
    "            fill()\n"
    "    def send(b):\n"
    "        b = b'%d\\n' % len(b) + b\n"
    "        while b:\n"
    "            b = b[os.write(wr, b):]\n"
    "    src = {}\n"
    "    def register():\n"
    "        lc = sys.modules.get('linecache')\n"
    "        if lc is not None and src:\n"
    "            for fn, text in src.items():\n"
    "                lc.cache[fn] = (len(text), None, text.splitlines(True), fn)\n"
    "            src.clear()\n"
    "    esc = {i: '\\\\u%04x' % i for i in range(32)}\n"
    "    esc[34] = '\\\\\"'\n"
    "    esc[92] = '\\\\\\\\'\n"
    "    def js(s):\n"
    "        return 'null' if s is None else '\"' + s.translate(esc) + '\"'\n"
    "    def cap(s, n=65536):\n"
    "        if len(s) > n // 4:\n"
    "            b = s.encode('utf-8', 'replace')\n"
    "            if len(b) > n:\n"
    "                s = b[:n].decode('utf-8', 'ignore')\n"
    "        return s\n"
    "    def text(f, n=65536):\n"
    "        try:\n"
    "            return cap(f(), n)\n"
    "        except BaseException:\n"
    "            return '<unprintable>'\n"
    "    def describe(e):\n"
    "        import linecache, traceback\n"
    "        register()\n"
    "        tb = e.__traceback__\n"
    "        while tb is not None and not tb.tb_frame.f_code.co_filename.startswith('<cell-'):\n"
    "            tb = tb.tb_next\n"
    "        t = text(lambda: ''.join(traceback.format_exception(type(e), e, tb)))\n"
    "        return '{\"type\":%s,\"message\":%s,\"traceback\":%s}' % (\n"
    "            js(text(lambda: type(e).__name__, 256)), js(text(lambda: str(e), 16384)), js(t))\n"
    "    os.write(wr, b'ready\\n')\n"
    "    while True:\n"
    "        n, cl, sl = (int(w) for w in line().split())\n"
    "        code, data = take(cl), take(sl)\n"
    "        fn = '<cell-%d>' % n\n"
    "        if cl <= 1 << 20:\n"
    "            src[fn] = code.decode('utf-8', 'replace')\n"
    "        register()\n"
    "        sys.stdin = io.TextIOWrapper(io.BytesIO(data), encoding='utf-8')\n"
    "        value = err = None\n"
    "        try:\n"
    "            _signal.signal(_signal.SIGINT, on_int)\n"
    "            try:\n"
    "                busy[0] = True\n"
    "                os.write(wr, b'run\\n')\n"
    "                tree = compile(code, fn, 'exec', 0x400, dont_inherit=True)\n"
    "                last = None\n"
    "                if tree.body and isinstance(tree.body[-1], _ast.Expr):\n"
    "                    last = _ast.Expression(tree.body.pop().value)\n"
    "                exec(compile(tree, fn, 'exec', dont_inherit=True), g)\n"
    "                if last is not None:\n"
    "                    v = eval(compile(last, fn, 'eval', dont_inherit=True), g)\n"
    "                    if v is not None:\n"
    "                        g['_'] = v\n"
    "                        value = cap(repr(v))\n"
    "            finally:\n"
    "                busy[0] = False\n"
    "        except BaseException as e:\n"
    "            value = None\n"
    "            err = e\n"
    "        del code, data\n"
    "        register()\n"
    "        for f in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):\n"
    "            try:\n"
    "                f.flush()\n"
    "            except BaseException:\n"
    "                pass\n"
    "        if err is None:\n"
    "            r = '{\"status\":\"ok\",\"value\":%s,\"error\":null}' % js(value)\n"
    "        else:\n"
    "            try:\n"
    "                r = '{\"status\":\"error\",\"value\":null,\"error\":%s}' % describe(err)\n"
    "            except BaseException:\n"
    "                r = '{\"status\":\"error\",\"value\":null,\"error\":{\"type\":\"Exception\",' "
    "\\\n"
    "                    '\"message\":\"<unprintable>\",\"traceback\":\"\"}}'\n"
    "            err = None\n"
    "        send(r.encode('utf-8', 'replace'))\n"
    "_tako_driver()\n";

/* ------------------------------------------------------------------- SESSION MODE */

#define CELL_LINE_MAX  1024
#define CELL_BYTES_MAX (16ULL << 20) /* code, and stdin, each */
#define REPLY_MAX      (1U << 20)
#define REPLY_LEN_MAX  (1ULL << 40) /* a length past this is not a reply, it is garbage */
#define INT_GRACE_US   2000000ULL   /* SIGINT -> SIGKILL and a fresh driver */
#define READY_US       120000000ULL /* a driver (preloads included) is up within this */

enum drv_state { DRV_NONE, DRV_STARTING, DRV_IDLE, DRV_RUNNING };

struct sess {
    const struct opts *o;
    int in, out, sfd;
    const sigset_t *mask;
    int ready_sent;
    /* from the host: a line, or the body of a cell */
    char line[CELL_LINE_MAX];
    size_t line_len;
    char *msg; /* the driver's message: "<n> <code> <stdin>\n" code stdin */
    size_t msg_len, msg_fill, msg_sent;
    int have_cell; /* msg is a whole cell, not yet ended */
    unsigned long long n, timeout_ms, cap[2];
    /* the driver */
    enum drv_state st;
    pid_t pid;
    int dout, derr, dcell, drep;
    unsigned long long ready_by;
    char rhead[24];
    size_t rhead_len;
    unsigned long long rneed; /* reply bytes still to come (0: reading a header) */
    int rskip;                /* the reply is too big: its bytes are read and dropped */
    char *reply;
    size_t reply_len;
    /* the cell being run */
    unsigned long long start_us, end_us, deadline, kill_at, total[2];
    int running;   /* its code runs: the driver said "run" */
    int int_early; /* "interrupt" came before the cell was handed to the driver */
    int sigint_sent, timed_out, interrupted, restarted, oom, exit_code, sig, too_big;
    long long oom0;
    const char *cell_error;
    int end_pending; /* the cell ended with the driver; reported once a fresh one is up */
};

static int sess_send(struct sess *S, const char *p, size_t n)
{
    if (S->out < 0)
        return -1;
    if (write_all(S->out, p, n) < 0) {
        S->out = -1; /* the host is gone; EOF on proto_in follows */
        return -1;
    }
    return 0;
}

/* Kill the driver's process group and reap the driver; its pipes are closed. */
static void drv_close(struct sess *S)
{
    int fds[] = {S->dout, S->derr, S->dcell, S->drep};
    for (size_t i = 0; i < sizeof fds / sizeof fds[0]; i++)
        if (fds[i] >= 0)
            close(fds[i]);
    S->dout = S->derr = S->dcell = S->drep = -1;
    S->rhead_len = 0;
    S->rneed = 0;
    S->rskip = 0;
    free(S->reply);
    S->reply = NULL;
    S->reply_len = 0;
}

/* Read what a driver output pipe has: the running cell's bytes go to the host as live
 * frames (up to the cell's cap), anything else is dropped. */
static void sess_drain(struct sess *S, int i)
{
    int *fd = i == 0 ? &S->dout : &S->derr;
    char chunk[65536];
    while (*fd >= 0) {
        ssize_t n = read(*fd, chunk, sizeof chunk);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno == EAGAIN)
            return;
        if (n <= 0) {
            close(*fd);
            *fd = -1;
            return;
        }
        if (S->st != DRV_RUNNING)
            continue;
        unsigned long long kept = S->total[i] < S->cap[i] ? S->cap[i] - S->total[i] : 0;
        size_t keep = kept < (unsigned long long)n ? (size_t)kept : (size_t)n;
        S->total[i] += (unsigned long long)n;
        if (keep > 0) {
            char head[48];
            int h = snprintf(head, sizeof head, "takod-out %d %zu\n", i + 1, keep);
            if (sess_send(S, head, (size_t)h) == 0)
                sess_send(S, chunk, keep);
        }
    }
}

static int sess_start_driver(struct sess *S)
{
    if (pre.pid > 0) {
        int st;
        if (waitpid(pre.pid, &st, WNOHANG) != 0) { /* the prestarted one died: anew */
            close(pre.out), close(pre.err), close(pre.ep), close(pre.ctl), close(pre.rep);
            pre.pid = pre.out = pre.err = pre.ep = pre.ctl = pre.rep = -1;
        }
    }
    if (pre.pid < 0)
        prestart(S->mask);
    if (pre.pid < 0)
        return -1;
    S->pid = pre.pid;
    S->dout = pre.out;
    S->derr = pre.err;
    S->dcell = pre.ctl;
    S->drep = pre.rep;
    close(pre.ep);
    pre.pid = pre.out = pre.err = pre.ep = pre.ctl = pre.rep = -1;
    char head[32];
    int h = snprintf(head, sizeof head, "session %zu\n", sizeof driver_py - 1);
    /* header and source fit in the empty pipe's buffer: this write does not block */
    if (write_all(S->dcell, head, (size_t)h) < 0 ||
        write_all(S->dcell, driver_py, sizeof driver_py - 1) < 0) {
        killpg(S->pid, SIGKILL);
        int st;
        while (waitpid(S->pid, &st, 0) < 0 && errno == EINTR)
            ;
        S->pid = -1;
        drv_close(S);
        return -1;
    }
    int fds[] = {S->dout, S->derr, S->dcell, S->drep};
    for (size_t i = 0; i < sizeof fds / sizeof fds[0]; i++)
        fcntl(fds[i], F_SETFL, O_NONBLOCK);
    S->st = DRV_STARTING;
    S->ready_by = mono_us() + READY_US;
    return 0;
}

static void sess_status(struct sess *S, const char *error, int err_no)
{
    const char *cg;
    (void)oom_kills(&cg);
    char line[STATUS_MAX];
    unsigned long long now = mono_us();
    int n = snprintf(line, sizeof line,
                     "takod-status exit_code=-1 signal=0 timed_out=0 oom=0 stdout_bytes=0 "
                     "stderr_bytes=0 stdout_truncated=0 stderr_truncated=0 start_us=%llu "
                     "end_us=%llu cgroup=%s nonce=%s",
                     now, now, cg, S->o->nonce);
    if (error)
        n += snprintf(line + n, sizeof line - (size_t)n, " error=%s errno=%d", error, err_no);
    n += snprintf(line + n, sizeof line - (size_t)n, "\n");
    sess_send(S, line, (size_t)n);
}

/* The end of the session: every process of it dies, the status line goes out. */
__attribute__((noreturn)) static void sess_finish(struct sess *S, const char *error, int err_no)
{
    if (S->pid > 0)
        kill_job(S->pid, SIGKILL);
    unsigned long long sweep_end = mono_us() + SWEEP_US;
    for (;;) {
        if (sweep_ok)
            kill(-1, SIGKILL);
        else if (S->pid > 0)
            killpg(S->pid, SIGKILL);
        int st;
        pid_t p;
        while ((p = waitpid(-1, &st, WNOHANG)) > 0)
            ;
        if (p < 0 && errno == ECHILD)
            break;
        if (!sweep_ok || mono_us() >= sweep_end)
            break;
        struct pollfd pfd = {.fd = S->sfd, .events = POLLIN};
        poll(&pfd, 1, 10);
        struct signalfd_siginfo si;
        while (read(S->sfd, &si, sizeof si) == (ssize_t)sizeof si)
            ;
    }
    drv_close(S);
    sess_status(S, error, err_no);
    exit(0);
}

static void sess_cellend(struct sess *S)
{
    const char *cg;
    long long oom1 = oom_kills(&cg);
    if (S->oom0 >= 0 && oom1 > S->oom0)
        S->oom = 1;
    char line[1024];
    int n = snprintf(line, sizeof line,
                     "takod-cellend n=%llu exit_code=%d signal=%d timed_out=%d interrupted=%d "
                     "restarted=%d oom=%d stdout_bytes=%llu stderr_bytes=%llu "
                     "stdout_truncated=%d stderr_truncated=%d start_us=%llu end_us=%llu "
                     "reply=%zu nonce=%s",
                     S->n, S->exit_code, S->sig, S->timed_out, S->interrupted, S->restarted, S->oom,
                     S->total[0], S->total[1], S->total[0] > S->cap[0], S->total[1] > S->cap[1],
                     S->start_us, S->end_us, S->reply ? S->reply_len : 0, S->o->nonce);
    if (S->cell_error)
        n += snprintf(line + n, sizeof line - (size_t)n, " error=%s", S->cell_error);
    if (S->too_big)
        n += snprintf(line + n, sizeof line - (size_t)n, " reply_error=too_big");
    n += snprintf(line + n, sizeof line - (size_t)n, "\n");
    if (sess_send(S, line, (size_t)n) == 0 && S->reply && S->reply_len)
        sess_send(S, S->reply, S->reply_len);
    free(S->reply);
    S->reply = NULL;
    S->reply_len = 0;
    free(S->msg);
    S->msg = NULL;
    S->have_cell = 0;
    S->end_pending = 0;
    S->restarted = 0;
    S->int_early = 0;
}

/* No driver comes up: a cell that waited for it ends, and so does the session. */
__attribute__((noreturn)) static void sess_no_driver(struct sess *S, int err_no)
{
    if (S->end_pending) {
        S->cell_error = "driver_start";
        sess_cellend(S);
    }
    sess_finish(S, "driver_start", err_no);
}

/* The driver is gone (exited, or killed here): a running cell ends with it, and a fresh
 * driver is started; the cell's end is reported when that one is ready. */
static void sess_driver_gone(struct sess *S, int status)
{
    unsigned long long now = mono_us();
    sess_drain(S, 0);
    sess_drain(S, 1);
    enum drv_state was = S->st;
    S->pid = -1;
    S->st = DRV_NONE;
    drv_close(S);
    if (was == DRV_STARTING)
        sess_no_driver(S, 0);
    S->restarted = 1;
    if (was == DRV_RUNNING) {
        S->end_us = now;
        if (WIFEXITED(status)) {
            S->exit_code = WEXITSTATUS(status);
        } else if (WIFSIGNALED(status)) {
            S->sig = WTERMSIG(status);
            S->exit_code = 128 + S->sig;
        }
        S->end_pending = 1;
    }
    if (sess_start_driver(S) < 0)
        sess_no_driver(S, errno);
}

static void sess_kill_driver(struct sess *S)
{
    killpg(S->pid, SIGKILL);
    kill(S->pid, SIGKILL);
    int st = 0;
    while (waitpid(S->pid, &st, 0) < 0 && errno == EINTR)
        ;
    sess_driver_gone(S, st);
}

/* Interrupt the running cell: SIGINT once its code runs (the driver said "run"; before,
 * the driver ignores SIGINT, so it would be lost), SIGKILL 2 s after the asking. */
static void sess_sigint(struct sess *S)
{
    if (S->running)
        killpg(S->pid, SIGINT);
    S->sigint_sent = 1;
    S->kill_at = mono_us() + INT_GRACE_US;
}

/* A whole cell has arrived and the driver is idle: run it. */
static void sess_dispatch(struct sess *S)
{
    S->st = DRV_RUNNING;
    S->total[0] = S->total[1] = 0;
    S->sigint_sent = S->timed_out = S->interrupted = S->oom = S->sig = S->too_big = 0;
    S->running = 0;
    S->exit_code = -1;
    S->cell_error = NULL;
    S->msg_sent = 0;
    S->kill_at = 0;
    S->oom0 = oom_kills(&(const char *){NULL});
    S->start_us = mono_us();
    S->end_us = S->start_us;
    S->deadline = S->start_us + S->timeout_ms * 1000ULL;
    if (S->int_early) {
        S->int_early = 0;
        S->interrupted = 1;
        sess_sigint(S);
    }
}

/* One line from the host: a cell's header, or "interrupt". 0, or -1 (malformed). */
static int sess_host_line(struct sess *S, char *line)
{
    if (!strcmp(line, "interrupt")) {
        if (S->st == DRV_RUNNING && !S->sigint_sent) {
            S->interrupted = 1;
            sess_sigint(S);
        } else if (S->have_cell && S->msg_fill == S->msg_len && !S->end_pending) {
            S->int_early = 1; /* the cell waits for its driver: interrupted as it starts */
        }
        return 0;
    }
    if (strncmp(line, "cell ", 5) != 0 || S->have_cell)
        return -1;
    unsigned long long n = 0, code = 0, in = 0;
    unsigned long long to = S->o->timeout_ms, c0 = S->o->cap[0], c1 = S->o->cap[1];
    int seen = 0;
    char *save = NULL;
    for (char *tok = strtok_r(line + 5, " ", &save); tok; tok = strtok_r(NULL, " ", &save)) {
        char *val = strchr(tok, '=');
        if (val == NULL)
            return -1;
        *val++ = '\0';
        int bit = 0, rc = 0;
        if (!strcmp(tok, "n"))
            bit = 1, rc = parse_num(val, 0, 999999999999999999ULL, &n);
        else if (!strcmp(tok, "code"))
            bit = 2, rc = parse_num(val, 0, CELL_BYTES_MAX, &code);
        else if (!strcmp(tok, "stdin"))
            bit = 4, rc = parse_num(val, 0, CELL_BYTES_MAX, &in);
        else if (!strcmp(tok, "timeout_ms"))
            bit = 8, rc = parse_num(val, 1, TIMEOUT_MS_MAX, &to);
        else if (!strcmp(tok, "stdout_cap"))
            bit = 16, rc = parse_num(val, 0, CAP_MAX, &c0);
        else if (!strcmp(tok, "stderr_cap"))
            bit = 32, rc = parse_num(val, 0, CAP_MAX, &c1);
        else
            return -1;
        if (rc < 0 || (seen & bit))
            return -1;
        seen |= bit;
    }
    if ((seen & 7) != 7)
        return -1;
    char head[80];
    int h = snprintf(head, sizeof head, "%llu %llu %llu\n", n, code, in);
    S->msg = malloc((size_t)h + code + in);
    if (S->msg == NULL)
        sess_finish(S, "nomem", ENOMEM);
    memcpy(S->msg, head, (size_t)h);
    S->msg_len = (size_t)h + code + in;
    S->msg_fill = (size_t)h;
    S->have_cell = 1;
    S->n = n;
    S->timeout_ms = to;
    S->cap[0] = c0;
    S->cap[1] = c1;
    return 0;
}

/* Bytes from the host. */
static void sess_host_bytes(struct sess *S, const char *p, size_t len)
{
    for (size_t i = 0; i < len;) {
        if (S->msg && S->msg_fill < S->msg_len) {
            size_t take = S->msg_len - S->msg_fill < len - i ? S->msg_len - S->msg_fill : len - i;
            memcpy(S->msg + S->msg_fill, p + i, take);
            S->msg_fill += take;
            i += take;
            continue;
        }
        char c = p[i++];
        if (c == '\0' || (c != '\n' && S->line_len == sizeof S->line - 1))
            sess_finish(S, "bad_cell", EINVAL);
        if (c != '\n') {
            S->line[S->line_len++] = c;
            continue;
        }
        S->line[S->line_len] = '\0';
        S->line_len = 0;
        if (sess_host_line(S, S->line) < 0)
            sess_finish(S, "bad_cell", EINVAL);
    }
}

/* Bytes from the driver's reply pipe: "ready\n", or "<len>\n" and len bytes. */
static void sess_reply_bytes(struct sess *S)
{
    char chunk[65536];
    for (;;) {
        ssize_t got = read(S->drep, chunk, sizeof chunk);
        if (got < 0 && errno == EINTR)
            continue;
        if (got < 0 && errno == EAGAIN)
            return;
        if (got <= 0) { /* the driver closed it: it cannot answer; it is ended here */
            close(S->drep);
            S->drep = -1;
            if (S->st == DRV_RUNNING && !S->sigint_sent)
                S->cell_error = "driver_protocol";
            sess_kill_driver(S);
            return;
        }
        for (size_t i = 0; i < (size_t)got;) {
            if (S->rneed > 0) {
                size_t take = S->rneed < (size_t)got - i ? (size_t)S->rneed : (size_t)got - i;
                if (!S->rskip) {
                    memcpy(S->reply + S->reply_len, chunk + i, take);
                    S->reply_len += take;
                }
                S->rneed -= take;
                i += take;
                if (S->rneed == 0)
                    goto reply_done;
                continue;
            }
            char c = chunk[i++];
            if (c != '\n') {
                if (S->rhead_len == sizeof S->rhead - 1)
                    goto garbage;
                S->rhead[S->rhead_len++] = c;
                continue;
            }
            S->rhead[S->rhead_len] = '\0';
            S->rhead_len = 0;
            if (!strcmp(S->rhead, "run")) {
                if (S->st != DRV_RUNNING || S->running)
                    goto garbage;
                S->running = 1;
                if (S->sigint_sent) /* asked for before the cell's code ran */
                    killpg(S->pid, SIGINT);
                continue;
            }
            if (!strcmp(S->rhead, "ready")) {
                if (S->st != DRV_STARTING)
                    goto garbage;
                S->st = DRV_IDLE;
                if (!S->ready_sent) {
                    char r[96];
                    int h = snprintf(r, sizeof r, "takod-ready nonce=%s\n", S->o->nonce);
                    sess_send(S, r, (size_t)h);
                    S->ready_sent = 1;
                }
                if (S->end_pending)
                    sess_cellend(S);
                continue;
            }
            unsigned long long len;
            if (parse_num(S->rhead, 0, REPLY_LEN_MAX, &len) < 0 || S->st == DRV_STARTING)
                goto garbage;
            free(S->reply);
            S->reply = NULL;
            S->reply_len = 0;
            S->rskip = len > REPLY_MAX;
            if (!S->rskip && len > 0 && (S->reply = malloc((size_t)len)) == NULL)
                S->rskip = 1;
            S->rneed = len;
            if (len == 0)
                goto reply_done;
            continue;
        reply_done:
            /* a cell's reply follows its "run": a reply before it is the last cell's,
             * late (its program forged one first, which ended that cell), and the
             * driver writes it before it reads the next cell, so it cannot be this one's */
            if (S->st == DRV_RUNNING && S->running) {
                S->end_us = mono_us();
                S->too_big = S->rskip;
                if (S->rskip) {
                    free(S->reply);
                    S->reply = NULL;
                }
                S->rskip = 0;
                /* everything the cell wrote came before its reply */
                sess_drain(S, 0);
                sess_drain(S, 1);
                sess_cellend(S);
                S->st = DRV_IDLE;
            } else { /* not a cell's: the program wrote it; dropped */
                free(S->reply);
                S->reply = NULL;
                S->reply_len = 0;
                S->rskip = 0;
            }
        }
    }
garbage: /* the reply channel is broken (the program wrote to it): a fresh driver */
    if (S->st == DRV_RUNNING && !S->sigint_sent)
        S->cell_error = "driver_protocol";
    sess_kill_driver(S);
}

/* Write what the running cell's message still has for the driver. */
static void sess_feed_driver(struct sess *S)
{
    while (S->msg_sent < S->msg_len) {
        ssize_t w = write(S->dcell, S->msg + S->msg_sent, S->msg_len - S->msg_sent);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0 && errno == EAGAIN)
            return;
        if (w < 0) { /* the driver's end is closed: it is ended here */
            if (!S->sigint_sent)
                S->cell_error = "driver_protocol";
            sess_kill_driver(S);
            return;
        }
        S->msg_sent += (size_t)w;
    }
}

__attribute__((noreturn)) static void run_session(const struct opts *o, int in, int out, int sfd,
                                                  const sigset_t *mask, const char *left,
                                                  size_t left_len)
{
    struct sess S = {.o = o,
                     .in = in,
                     .out = out,
                     .sfd = sfd,
                     .mask = mask,
                     .pid = -1,
                     .dout = -1,
                     .derr = -1,
                     .dcell = -1,
                     .drep = -1,
                     .exit_code = -1};
    /* proto_in stays blocking (it may share its file description with proto_out): it is
     * read once per poll() that finds it readable, which does not block */
    if (sess_start_driver(&S) < 0)
        sess_finish(&S, "driver_start", errno);
    sess_host_bytes(&S, left, left_len);
    for (;;) {
        if (S.st == DRV_IDLE && S.have_cell && S.msg_fill == S.msg_len && !S.end_pending) {
            sess_dispatch(&S);
            sess_feed_driver(&S);
            continue;
        }
        unsigned long long now = mono_us();
        if (S.st == DRV_STARTING && now >= S.ready_by)
            sess_no_driver(&S, ETIMEDOUT);
        if (S.st == DRV_RUNNING && !S.sigint_sent && now >= S.deadline) {
            S.timed_out = 1;
            sess_sigint(&S);
        }
        if (S.st == DRV_RUNNING && S.kill_at && now >= S.kill_at) {
            sess_kill_driver(&S);
            continue;
        }
        unsigned long long next = UINT64_MAX;
        if (S.st == DRV_STARTING)
            next = S.ready_by;
        if (S.st == DRV_RUNNING)
            next = S.sigint_sent ? S.kill_at : S.deadline;
        int wait_ms = -1;
        if (next != UINT64_MAX)
            wait_ms = next > now ? (int)((next - now + 999) / 1000) : 0;
        struct pollfd pfd[6] = {
            {.fd = sfd, .events = POLLIN},
            {.fd = S.in, .events = POLLIN},
            {.fd = S.dout, .events = POLLIN},
            {.fd = S.derr, .events = POLLIN},
            {.fd = S.drep, .events = POLLIN},
            {.fd = S.st == DRV_RUNNING && S.msg_sent < S.msg_len ? S.dcell : -1, .events = POLLOUT},
        };
        if (poll(pfd, 6, wait_ms) < 0 && errno != EINTR)
            sess_finish(&S, "poll", errno);
        if (pfd[0].revents) {
            struct signalfd_siginfo si;
            while (read(sfd, &si, sizeof si) == (ssize_t)sizeof si)
                if (si.ssi_signo != SIGCHLD)
                    sess_finish(&S, "terminated", 0); /* docker stop / kill */
            int st;
            pid_t p;
            while ((p = waitpid(-1, &st, WNOHANG)) > 0)
                if (p == S.pid)
                    sess_driver_gone(&S, st); /* an orphan of the session otherwise */
        }
        if (pfd[1].revents) {
            char chunk[65536];
            ssize_t n = read(S.in, chunk, sizeof chunk);
            if (n == 0)
                sess_finish(&S, NULL, 0); /* the host ended the session */
            if (n < 0 && errno != EINTR && errno != EAGAIN)
                sess_finish(&S, "proto_read", errno);
            if (n > 0)
                sess_host_bytes(&S, chunk, (size_t)n);
        }
        /* the pipes' fds may have changed (a fresh driver) since poll: only the same ones */
        if (pfd[2].revents && pfd[2].fd == S.dout)
            sess_drain(&S, 0);
        if (pfd[3].revents && pfd[3].fd == S.derr)
            sess_drain(&S, 1);
        if (pfd[4].revents && pfd[4].fd == S.drep)
            sess_reply_bytes(&S);
        if (pfd[5].revents && pfd[5].fd == S.dcell && S.st == DRV_RUNNING)
            sess_feed_driver(&S);
    }
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
    size_t extra_off = 0, extra_len = 0;
    int rc = read_go(stdio_mode ? proto_in : open_go(ctl, &r), line, sizeof line, &r, stdio_mode,
                     &extra_off, &extra_len);
    if (rc == 0)
        return 0; /* the host gave up on this container */
    int done = stdio_mode ? proto_out : open_done(ctl, 1);
    if (stdio_mode)
        live_fd = proto_out;

    if (rc > 0 && parse_go(line, &o) < 0)
        fail(&r, "bad_go_line", EINVAL);
    if (o.session && (!stdio_mode || o.nonce[0] == '\0'))
        fail(&r, "bad_go_line", EINVAL); /* a session needs --stdio and a nonce */
    if (stdio_mode && !(o.session && r.error == NULL))
        close(proto_in); /* a job: nothing more comes from the host */
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
        else if (o.session)
            run_session(&o, proto_in, proto_out, sfd, &old, line + extra_off, extra_len);
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
