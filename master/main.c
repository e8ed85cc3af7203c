/*
 * main.c — takod's master process.
 *
 *   takod -c FILE [-o section.key=value]... [-t]
 *
 * Start-up order (fail fast, one clear line, exit 2 on anything fatal):
 *   config → log → data dir → pidfile (fcntl lock) → bind the listening socket →
 *   PostgreSQL (managed or database.url) → migrations → Docker engine and image check →
 *   sweep leftover containers and settle jobs a previous run left unfinished →
 *   shared memory and eventfds → fork acceptors and executors → supervise.
 *
 * The master runs no event loop and never touches HTTP, Docker or SQL on a hot path. Its
 * loop is a flat state table of children, driven by signalfd with a 250 ms tick: every
 * transition (reap, respawn, stop) happens in that one loop, as in nginx's process cycle.
 */
#include "tako/db.h"
#include "tako/docker.h"
#include "tako/log.h"
#include "tako/pgmanaged.h"
#include "tako/takod.h"
#include "tako/util.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <netdb.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

enum child_role { CHILD_ACCEPTOR = TK_ROLE_ACCEPTOR, CHILD_EXECUTOR = TK_ROLE_EXECUTOR };

struct child {
    enum child_role role;
    int slot;
    pid_t pid;    /* 0 = not running */
    int proc_idx; /* its shm proc entry while running */
    bool respawn; /* false after a fatal exit or while stopping */
    int fails;    /* consecutive quick failures */
    uint64_t started_ms, next_spawn_ms;
};

static struct {
    struct child *children;
    int n_children;
    pid_t pg_pid; /* managed PostgreSQL, 0 when external */
    int pidfile_fd;
    bool stopping;
    int stop_signal;
    uint64_t stop_deadline_ms;
    int exit_code;
} M = {.pidfile_fd = -1};

static void die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void die(const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    fprintf(stderr, "takod: %s\n", msg);
    log_crit("msg=\"fatal\" err=\"%s\"", msg);
    if (M.pg_pid > 0)
        pgm_stop(M.pg_pid, 5000);
    exit(TK_EXIT_FATAL);
}

static void usage(FILE *out)
{
    fprintf(out, "usage: takod -c FILE [-o section.key=value]... [-t]\n"
                 "  -c FILE   configuration file (INI; see conf/tako.conf)\n"
                 "  -o K=V    override one key, e.g. -o server.listen=127.0.0.1:9000\n"
                 "  -t        test the configuration, print the effective values, exit\n"
                 "  -h        this help\n");
}

/* ---- start-up steps ---- */

static void open_pidfile(void)
{
    const char *path = tk.cfg.pidfile_path;
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0)
        die("open pidfile %s: %s", path, strerror(errno));
    struct flock fl = {.l_type = F_WRLCK, .l_whence = SEEK_SET};
    if (fcntl(fd, F_SETLK, &fl) < 0) {
        char buf[32] = "";
        ssize_t n = pread(fd, buf, sizeof buf - 1, 0);
        buf[n > 0 ? n : 0] = '\0';
        buf[strcspn(buf, "\n")] = '\0';
        die("another takod is running (pid %s) with pidfile %s", buf[0] ? buf : "?", path);
    }
    char pid[32];
    int n = snprintf(pid, sizeof pid, "%d\n", (int)getpid());
    if (ftruncate(fd, 0) < 0 || pwrite(fd, pid, (size_t)n, 0) != n)
        die("write pidfile %s: %s", path, strerror(errno));
    M.pidfile_fd = fd;
}

static int bind_listen(void)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC,
                             .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
    struct addrinfo *res = NULL;
    char port[16];
    snprintf(port, sizeof port, "%d", tk.cfg.listen_port);
    int rc = getaddrinfo(tk.cfg.listen_host, port, &hints, &res);
    if (rc != 0)
        die("server.listen %s: cannot resolve: %s", tk.cfg.server_listen, gai_strerror(rc));
    int fd = -1, err = 0;
    for (struct addrinfo *ai = res; ai && fd < 0; ai = ai->ai_next) {
        fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd < 0) {
            err = errno;
            continue;
        }
        int one = 1;
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        if (bind(fd, ai->ai_addr, ai->ai_addrlen) < 0 || listen(fd, 511) < 0) {
            err = errno;
            close(fd);
            fd = -1;
        }
    }
    freeaddrinfo(res);
    if (fd < 0)
        die("listen on %s: %s", tk.cfg.server_listen, strerror(err));
    return fd;
}

static void setup_database(void)
{
    char err[1024];
    if (tk.cfg.database_url[0]) {
        snprintf(tk.conninfo, sizeof tk.conninfo, "%s", tk.cfg.database_url);
    } else if (pgm_start(&tk.cfg, &M.pg_pid, tk.conninfo, sizeof tk.conninfo, err, sizeof err) <
               0) {
        die("managed PostgreSQL: %s", err);
    }
    if (db_migrate(tk.conninfo, err, sizeof err) < 0)
        die("database: %s", err);
}

/* Remove containers a previous run of this instance left behind. */
static void sweep_containers(struct docker *d)
{
    char label[600];
    snprintf(label, sizeof label, "takod.instance=%s", tk.instance);
    json_t *ids = NULL;
    if (docker_list_by_label(d, label, &ids) < 0) {
        log_warn("msg=\"listing leftover containers failed\" err=\"%s\"", docker_last_error(d));
        return;
    }
    size_t i;
    json_t *id;
    json_array_foreach(ids, i, id)
    {
        int rc = docker_remove(d, json_string_value(id));
        if (rc < 0 && rc != -ENOENT)
            log_warn("msg=\"docker_remove failed\" container=%.12s err=\"%s\"",
                     json_string_value(id), docker_last_error(d));
        else
            log_info("msg=\"removed leftover container\" container=%.12s", json_string_value(id));
    }
    json_decref(ids);
}

static void check_docker(void)
{
    struct docker *d = NULL;
    if (docker_open(&d, tk.cfg.docker_socket) < 0)
        die("cannot reach the Docker engine at %s: %s (start dockerd, or set docker.socket)",
            tk.cfg.docker_socket, docker_last_error(NULL));
    int rc = docker_image_exists(d, tk.cfg.docker_image);
    if (rc == 0) {
        docker_close(d);
        die("executor image %s not found: build it with scripts/build-image.sh",
            tk.cfg.docker_image);
    }
    if (rc < 0) {
        char e[512];
        snprintf(e, sizeof e, "%s", docker_last_error(d));
        docker_close(d);
        die("checking executor image %s: %s", tk.cfg.docker_image, e);
    }
    atomic_store(&tk.shm->docker_ok, 1);
    sweep_containers(d);
    docker_close(d); /* no curl handle may cross fork */
}

/* Jobs this node left queued or running when it last stopped can't be resumed from shm:
 * settle them so no client polls forever (retry policy comes with supervision). */
static void settle_interrupted_jobs(void)
{
    char err[512];
    struct db *db = NULL;
    if (db_open(&db, tk.conninfo, err, sizeof err) < 0)
        die("database: %s", err);
    const char *p[1] = {tk.node};
    PGresult *r = db_exec(db,
                          "UPDATE jobs SET status = 'failed', ended_at = now(), error ="
                          " '{\"type\":\"interrupted\",\"message\":\"takod stopped before the job"
                          " finished\",\"phase\":\"execution\"}'::jsonb"
                          " WHERE node = $1 AND status IN ('queued', 'running')",
                          1, p);
    if (!r)
        die("settling interrupted jobs: %s", db_last_error(db));
    if (atoi(PQcmdTuples(r)) > 0)
        log_warn("msg=\"jobs interrupted by the previous stop marked failed\" count=%s",
                 PQcmdTuples(r));
    PQclear(r);
    db_close(db);
}

/* ---- children ---- */

static void spawn(struct child *c, const sigset_t *orig_mask)
{
    int idx = shm_proc_claim(tk.shm, -1, (uint8_t)c->role, (uint16_t)c->slot);
    if (idx < 0) {
        log_crit("msg=\"proc table full\" role=%d slot=%d", c->role, c->slot);
        return;
    }
    if (c->role == CHILD_ACCEPTOR)
        atomic_fetch_add(&tk.shm->acceptor_gen[c->slot], 1);
    pid_t pid = fork();
    if (pid < 0) {
        log_error("msg=\"fork failed\" role=%d slot=%d err=\"%s\"", c->role, c->slot,
                  strerror(errno));
        atomic_store(&shm_proc(tk.shm, (uint32_t)idx)->pid, 0);
        c->next_spawn_ms = now_mono_ms() + 1000;
        return;
    }
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGTERM); /* a child is useless without its master */
        if (getppid() != tk.master_pid)
            _exit(1);
        sigprocmask(SIG_SETMASK, orig_mask, NULL);
        signal(SIGPIPE, SIG_IGN);
        tk.proc_idx = idx;
        atomic_store(&shm_proc(tk.shm, (uint32_t)idx)->pid, getpid());
        char title[64];
        snprintf(title, sizeof title, "takod: %s %d",
                 c->role == CHILD_ACCEPTOR ? "acceptor" : "executor", c->slot);
        proctitle_set(title);
        log_set_role(title + 7);
        if (M.pidfile_fd >= 0)
            close(M.pidfile_fd);
        exit(c->role == CHILD_ACCEPTOR ? acceptor_main(c->slot) : executor_main(c->slot));
    }
    atomic_store(&shm_proc(tk.shm, (uint32_t)idx)->pid, pid);
    c->pid = pid;
    c->proc_idx = idx;
    c->started_ms = now_mono_ms();
    log_debug("msg=\"spawned\" role=%s slot=%d pid=%d",
              c->role == CHILD_ACCEPTOR ? "acceptor" : "executor", c->slot, (int)pid);
}

/* Finish any ring operation the dead process left half-done (ring.h). */
static void repair_rings(int dead_idx)
{
    struct tk_proc *dead = shm_proc(tk.shm, (uint32_t)dead_idx);
    struct ring_intent *live[TK_MAX_ACCEPTORS * 8];
    size_t n_live = 0;
    for (uint32_t i = 0; i < tk.shm->n_procs && n_live < TK_ARRAY_LEN(live); i++)
        if ((int)i != dead_idx && atomic_load(&shm_proc(tk.shm, i)->pid) != 0)
            live[n_live++] = &shm_proc(tk.shm, i)->intent;
    struct ring *rings[2 + TK_MAX_ACCEPTORS];
    size_t n = 0;
    rings[n++] = shm_dispatch(tk.shm);
    rings[n++] = shm_free(tk.shm);
    for (uint32_t a = 0; a < tk.shm->n_acceptors; a++)
        rings[n++] = shm_done(tk.shm, a);
    for (size_t i = 0; i < n; i++) {
        uint64_t rec;
        for (int tries = 0;
             ring_repair(rings[i], &dead->intent, live, n_live, &rec) == -EAGAIN && tries < 1000;
             tries++)
            usleep(100);
        if (rec != RING_NONE)
            log_warn("msg=\"repaired a ring cell a dead process held\" ring=%u value=%llu",
                     rings[i]->id, (unsigned long long)rec);
    }
}

static void reap(void)
{
    int st;
    pid_t pid;
    while ((pid = waitpid(-1, &st, WNOHANG)) > 0) {
        if (pid == M.pg_pid) {
            log_error("msg=\"managed PostgreSQL exited\" status=%d", st);
            M.pg_pid = 0;
            if (!M.stopping) {
                char err[512];
                if (pgm_start(&tk.cfg, &M.pg_pid, tk.conninfo, sizeof tk.conninfo, err,
                              sizeof err) < 0)
                    log_crit("msg=\"restarting the managed PostgreSQL failed\" err=\"%s\"", err);
            }
            continue;
        }
        struct child *c = NULL;
        for (int i = 0; i < M.n_children; i++)
            if (M.children[i].pid == pid)
                c = &M.children[i];
        if (!c)
            continue;
        const char *role = c->role == CHILD_ACCEPTOR ? "acceptor" : "executor";
        bool fatal = WIFEXITED(st) && WEXITSTATUS(st) == TK_EXIT_FATAL;
        bool clean = WIFEXITED(st) && WEXITSTATUS(st) == 0;
        if (WIFSIGNALED(st))
            log_warn("msg=\"child killed\" role=%s slot=%d pid=%d signal=%d", role, c->slot,
                     (int)pid, WTERMSIG(st));
        else if (!clean || !M.stopping)
            log_warn("msg=\"child exited\" role=%s slot=%d pid=%d code=%d", role, c->slot, (int)pid,
                     WEXITSTATUS(st));
        repair_rings(c->proc_idx);
        struct tk_proc *p = shm_proc(tk.shm, (uint32_t)c->proc_idx);
        ring_intent_init(&p->intent);
        atomic_store(&p->pid, 0);
        c->pid = 0;
        if (fatal) {
            c->respawn = false;
            log_crit("msg=\"child hit a fatal error; not respawning it\" role=%s slot=%d", role,
                     c->slot);
            if (!M.stopping) {
                M.stopping = true;
                M.stop_signal = SIGTERM;
                M.exit_code = TK_EXIT_FATAL;
                M.stop_deadline_ms = now_mono_ms() + 3000;
            }
            continue;
        }
        uint64_t now = now_mono_ms();
        c->fails = now - c->started_ms < 1000 ? c->fails + 1 : 0;
        uint64_t delay = 100u << (c->fails < 8 ? c->fails : 8);
        if (delay > 30000)
            delay = 30000;
        c->next_spawn_ms = now + (c->fails ? delay : 0);
    }
}

static void signal_children(int sig)
{
    for (int i = 0; i < M.n_children; i++)
        if (M.children[i].pid > 0)
            kill(M.children[i].pid, sig);
}

static int live_children(void)
{
    int n = 0;
    for (int i = 0; i < M.n_children; i++)
        n += M.children[i].pid > 0;
    return n;
}

static void begin_stop(int sig)
{
    if (M.stopping && sig == SIGQUIT)
        return;
    M.stopping = true;
    M.stop_signal = sig;
    uint64_t grace = sig == SIGQUIT ? (uint64_t)tk.cfg.server_shutdown_timeout * 1000 : 3000;
    M.stop_deadline_ms = now_mono_ms() + grace;
    log_info("msg=\"stopping\" mode=%s", sig == SIGQUIT ? "graceful" : "fast");
    signal_children(sig == SIGQUIT ? SIGQUIT : SIGTERM);
}

static void finish_stop(void)
{
    struct docker *d = NULL;
    if (docker_open(&d, tk.cfg.docker_socket) == 0) {
        sweep_containers(d);
        docker_close(d);
    }
    if (M.pg_pid > 0)
        pgm_stop(M.pg_pid, 10000);
    M.pg_pid = 0;
    unlink(tk.cfg.pidfile_path);
    log_info("msg=\"stopped\"");
}

static int master_loop(const sigset_t *orig_mask)
{
    sigset_t set;
    sigemptyset(&set);
    int sigs[] = {SIGCHLD, SIGTERM, SIGINT, SIGQUIT, SIGHUP, SIGUSR1};
    for (size_t i = 0; i < TK_ARRAY_LEN(sigs); i++)
        sigaddset(&set, sigs[i]);
    int sfd = signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK);
    if (sfd < 0)
        die("signalfd: %s", strerror(errno));
    for (;;) {
        uint64_t now = now_mono_ms();
        if (!M.stopping)
            for (int i = 0; i < M.n_children; i++) {
                struct child *c = &M.children[i];
                if (c->pid == 0 && c->respawn && now >= c->next_spawn_ms)
                    spawn(c, orig_mask);
            }
        if (M.stopping && live_children() == 0)
            break;
        if (M.stopping && now >= M.stop_deadline_ms) {
            log_warn("msg=\"children slow to stop; killing them\" left=%d", live_children());
            signal_children(SIGKILL);
            M.stop_deadline_ms = now + 1000;
        }
        struct pollfd pfd = {.fd = sfd, .events = POLLIN};
        poll(&pfd, 1, 250);
        struct signalfd_siginfo si;
        while (read(sfd, &si, sizeof si) == (ssize_t)sizeof si) {
            switch (si.ssi_signo) {
            case SIGCHLD:
                break; /* reaped below */
            case SIGTERM:
            case SIGINT:
            case SIGQUIT:
                begin_stop((int)si.ssi_signo);
                break;
            case SIGUSR1:
                log_reopen();
                signal_children(SIGUSR1);
                break;
            case SIGHUP:
                log_warn("msg=\"reload is not supported yet; restart takod to apply changes\"");
                break;
            }
        }
        reap();
    }
    close(sfd);
    finish_stop();
    return M.exit_code;
}

int main(int argc, char **argv)
{
    const char *conf_path = NULL;
    bool test_only = false;
    char **overrides = calloc((size_t)argc + 1, sizeof *overrides);
    size_t n_over = 0;
    int opt;
    while ((opt = getopt(argc, argv, "c:o:th")) != -1) {
        switch (opt) {
        case 'c':
            conf_path = optarg;
            break;
        case 'o':
            overrides[n_over++] = optarg;
            break;
        case 't':
            test_only = true;
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return TK_EXIT_FATAL;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "takod: unexpected argument '%s'\n", argv[optind]);
        usage(stderr);
        return TK_EXIT_FATAL;
    }
    char err[1024];
    if (config_load(&tk.cfg, conf_path, overrides, n_over, err, sizeof err) < 0) {
        fprintf(stderr, "takod: %s\n", err);
        return TK_EXIT_FATAL;
    }
    if (test_only) {
        config_print(&tk.cfg, stdout);
        fprintf(stderr, "takod: configuration %s is valid\n", conf_path ? conf_path : "(defaults)");
        return 0;
    }
    proctitle_init(argc, argv);
    proctitle_set("takod: master");
    log_set_role("master");
    log_set_level(tk.cfg.server_log_level);
    if (log_open(tk.cfg.server_log_file) < 0)
        die("cannot open server.log_file %s", tk.cfg.server_log_file);

    tk.master_pid = getpid();
    gethostname(tk.node, sizeof tk.node - 1);
    snprintf(tk.instance, sizeof tk.instance, "%s:%s", tk.node, tk.cfg.server_data_dir);
    int rc = mkdir_p(tk.cfg.server_data_dir, 0755);
    if (rc < 0)
        die("create server.data_dir %s: %s", tk.cfg.server_data_dir, strerror(-rc));
    snprintf(tk.spool_dir, sizeof tk.spool_dir, "%s/jobs", tk.cfg.server_data_dir);

    /* Block the signals the loop handles before any child exists, so none is lost. */
    sigset_t set, orig;
    sigemptyset(&set);
    int sigs[] = {SIGCHLD, SIGTERM, SIGINT, SIGQUIT, SIGHUP, SIGUSR1};
    for (size_t i = 0; i < TK_ARRAY_LEN(sigs); i++)
        sigaddset(&set, sigs[i]);
    sigprocmask(SIG_BLOCK, &set, &orig);
    signal(SIGPIPE, SIG_IGN);

    open_pidfile();
    tk.listen_fd = bind_listen();
    setup_database();
    settle_interrupted_jobs();

    rc = shm_create(&tk.shm, (uint32_t)tk.cfg.server_queue_size, (uint32_t)tk.cfg.server_acceptors,
                    (uint32_t)tk.cfg.server_executors);
    if (rc < 0)
        die("create shared memory: %s", strerror(-rc));
    check_docker();
    rm_rf(tk.spool_dir); /* nothing in flight yet: whatever is there is stale */
    rc = mkdir_p(tk.spool_dir, 0700);
    if (rc < 0)
        die("create spool dir %s: %s", tk.spool_dir, strerror(-rc));
    for (int a = 0; a < tk.cfg.server_acceptors; a++) {
        tk.done_efd[a] = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
        if (tk.done_efd[a] < 0)
            die("eventfd: %s", strerror(errno));
    }

    M.n_children = (int)(tk.cfg.server_acceptors + tk.cfg.server_executors);
    M.children = calloc((size_t)M.n_children, sizeof *M.children);
    int k = 0;
    for (int a = 0; a < tk.cfg.server_acceptors; a++)
        M.children[k++] = (struct child){.role = CHILD_ACCEPTOR, .slot = a, .respawn = true};
    for (int e = 0; e < tk.cfg.server_executors; e++)
        M.children[k++] = (struct child){.role = CHILD_EXECUTOR, .slot = e, .respawn = true};

    log_info("msg=\"takod started\" version=%s listen=%s acceptors=%lld executors=%lld "
             "queue_size=%u database=%s",
             TAKO_VERSION, tk.cfg.server_listen, (long long)tk.cfg.server_acceptors,
             (long long)tk.cfg.server_executors, tk.shm->n_jobs,
             tk.cfg.database_url[0] ? "external" : "managed");
    int code = master_loop(&orig);
    free(overrides);
    return code;
}
