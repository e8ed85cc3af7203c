/*
 * main.c — takod's master process.
 *
 *   takod -c FILE [-o section.key=value]... [-t] [-d] [-s reload|quit|stop|reopen]
 *
 * Start-up order (fail fast, one clear line, exit 2 on anything fatal):
 *   config → log → data dir → bind the listening socket → (-d: daemonize) → pidfile
 *   (fcntl lock) → PostgreSQL (managed or database.url) → migrations → shared memory →
 *   Docker engine and image check → sweep leftover containers → re-queue or settle jobs a
 *   previous run left unfinished → fork acceptors and executors → supervise.
 *
 * The master runs no event loop and never touches HTTP, Docker or SQL on a hot path. Its
 * loop is a flat table of children driven by signalfd with a 250 ms tick; every
 * transition (reap, repair, respawn, reload, stop) happens in that one loop, as in
 * nginx's process cycle.
 *
 * The loop never blocks on the engine or the database: it reaps, repairs the rings and
 * the job table in shared memory, respawns and handles signals, nothing else. The
 * periodic work that talks to them is done by two children it supervises like the others:
 *   sweeper (workers/sweeper.c)  the engine: a dead executor's containers (the master
 *                                bumps the sweep word), leak sweeps every 60 s, job type
 *                                images every 10 s;
 *   settler (workers/settler.c)  the database: the jobs a dead process left (the master
 *                                repairs shared memory at once and puts the job on the
 *                                settle ring; the settler writes its record, then finishes
 *                                its transition — recovery.h), the spool replay every 2 s,
 *                                retention every hour.
 * A dead managed PostgreSQL is restarted without waiting for it (pgm_respawn, backoff).
 * Start-up (migrations, image check, recovery) and the end of a stop (what the settler
 * left, container removal, cancelling sync jobs) run outside the loop and may block.
 *
 * Signals: HUP reload (a new generation of children on the new config; the old one
 * drains), QUIT graceful stop, TERM/INT fast stop, USR1 reopen logs, CHLD reap.
 */
#include "tako/db.h"
#include "tako/dbspool.h"
#include "tako/docker.h"
#include "tako/jobs.h"
#include "tako/jobtypes.h"
#include "tako/log.h"
#include "tako/metrics.h"
#include "tako/nodes.h"
#include "tako/pgmanaged.h"
#include "tako/recovery.h"
#include "tako/sandbox.h"
#include "tako/sandbox_oci.h"
#include "tako/takod.h"
#include "tako/util.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <linux/magic.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/wait.h>
#include <unistd.h>

enum stop_mode { RUNNING = 0, STOP_GRACEFUL, STOP_FAST };

struct child {
    uint8_t role; /* enum tk_role */
    int slot;
    int generation; /* config generation it was started with */
    pid_t pid;      /* 0 = not running */
    int proc_idx;   /* its shm proc entry while running */
    bool respawn;   /* false once retiring, after a fatal exit, or while stopping */
    bool retiring;  /* an older generation draining after a reload */
    int fails;      /* consecutive quick failures (backoff) */
    uint64_t started_ms, next_spawn_ms;
};

static struct {
    struct child *children;
    int n_children, cap_children;
    int generation;
    pid_t pg_pid; /* managed PostgreSQL, 0 when external (or down) */
    bool pg_down; /* the managed PostgreSQL died: restart it at pg_next_ms */
    int pg_fails; /* consecutive quick deaths (backoff) */
    uint64_t pg_started_ms, pg_next_ms;
    int pidfile_fd;
    enum stop_mode stopping;
    uint64_t stop_deadline_ms;
    bool executors_told; /* graceful stop: QUIT sent to executors (after the acceptors) */
    bool callbacks_told; /* ...and to the callbacks, sweeper, settler (after the executors) */
    bool escalated;
    int exit_code;
    const char *conf_path;
    char **overrides;
    size_t n_over;
    int ready_fd; /* -d: tells the waiting parent that start-up finished */
    bool daemon;  /* -d: an empty server.log_file means <data_dir>/takod.log */
    sigset_t orig_mask;
} M = {.pidfile_fd = -1, .ready_fd = -1};

/* Each role's title, entry point and restart counter: one row per kind of child. */
static const struct {
    const char *name;
    int (*main)(int slot);
    enum metrics_role metric;
} roles[] = {
    [TK_ROLE_ACCEPTOR] = {"acceptor", acceptor_main, METRICS_ROLE_ACCEPTOR},
    [TK_ROLE_EXECUTOR] = {"executor", executor_main, METRICS_ROLE_EXECUTOR},
    [TK_ROLE_CALLBACKS] = {"callbacks", deliverer_main, METRICS_ROLE_CALLBACKS},
    [TK_ROLE_SWEEPER] = {"sweeper", sweeper_main, METRICS_ROLE_SWEEPER},
    [TK_ROLE_SETTLER] = {"settler", settler_main, METRICS_ROLE_SETTLER},
    [TK_ROLE_SESSIONS] = {"sessions", sessions_main, METRICS_ROLE_SESSIONS},
    [TK_ROLE_CLUSTER] = {"cluster", cluster_main, METRICS_ROLE_CLUSTER},
};

static const char *role_name(uint8_t role)
{
    return role < TK_ARRAY_LEN(roles) && roles[role].name ? roles[role].name : "?";
}

/* The spool may be in memory (/dev/shm): give it back when takod stops. */
static void remove_spool(void)
{
    if (!tk.spool_dir[0])
        return;
    sandbox_umount_under(tk.slots_dir);
    const char *dirs[] = {tk.spool_dir, tk.slots_dir, tk.quarantine_dir};
    for (size_t i = 0; i < TK_ARRAY_LEN(dirs); i++) {
        int rc = rm_rf(dirs[i]); /* iterative: bounded at any depth; logged, never fatal */
        if (rc < 0)
            log_error("msg=\"removing the spool failed; left in place\" dir=%s err=\"%s\"", dirs[i],
                      strerror(-rc));
    }
    char base[4096];
    snprintf(base, sizeof base, "%s", tk.spool_dir);
    char *slash = strrchr(base, '/');
    if (slash) {
        *slash = '\0';
        rmdir(base);
    }
}

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
    if (M.ready_fd >= 0) { /* -d: the parent prints it and exits 2 */
        ssize_t w = write(M.ready_fd, msg, strlen(msg));
        (void)w;
    }
    if (M.pg_pid > 0)
        pgm_stop(M.pg_pid, 5000);
    if (M.pidfile_fd >= 0) { /* the spool is ours only if we held the pidfile */
        remove_spool();
        unlink(tk.cfg.pidfile_path);
    }
    exit(TK_EXIT_FATAL);
}

static void usage(FILE *out)
{
    fprintf(out, "usage: takod -c FILE [-o section.key=value]... [-t | -s SIGNAL | -d]\n"
                 "  -c FILE    configuration file (INI; see conf/tako.conf)\n"
                 "  -o K=V     override one key, e.g. -o server.listen=127.0.0.1:9000\n"
                 "  -t         test the configuration, print the effective values, exit\n"
                 "  -s SIGNAL  send a running takod (found through its pidfile) a signal:\n"
                 "             reload (HUP), quit (graceful), stop (fast), reopen (logs)\n"
                 "  -d         run in the background (logs to server.log_file, or\n"
                 "             <data_dir>/takod.log when that is empty)\n"
                 "  -h         this help\n");
}

/* ---- start-up steps ---- */

/* server.log_file, or stderr; under -d stderr is /dev/null, so <data_dir>/takod.log. */
static int open_log(void)
{
    char path[4200];
    if (tk.cfg.server_log_file[0] || !M.daemon)
        return log_open(tk.cfg.server_log_file);
    snprintf(path, sizeof path, "%s/takod.log", tk.cfg.server_data_dir);
    return log_open(path);
}

static void open_pidfile(void)
{
    const char *path = tk.cfg.pidfile_path;
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0)
        die("open pidfile %s: %s", path, strerror(errno));
    struct flock fl = {.l_type = F_WRLCK, .l_whence = SEEK_SET};
    if (fcntl(fd, F_SETLK, &fl) < 0) {
        struct flock who = {.l_type = F_WRLCK, .l_whence = SEEK_SET};
        int holder = fcntl(fd, F_GETLK, &who) == 0 && who.l_type != F_UNLCK ? who.l_pid : 0;
        die("another takod is running (pid %d) with pidfile %s", holder, path);
    }
    char pid[32];
    int n = snprintf(pid, sizeof pid, "%d\n", (int)getpid());
    if (ftruncate(fd, 0) < 0 || pwrite(fd, pid, (size_t)n, 0) != n)
        die("write pidfile %s: %s", path, strerror(errno));
    M.pidfile_fd = fd;
}

/* takod -s NAME: signal the master that holds the pidfile's lock. */
static int send_signal(const char *name)
{
    static const struct {
        const char *name;
        int sig;
    } sigs[] = {{"reload", SIGHUP}, {"quit", SIGQUIT}, {"stop", SIGTERM}, {"reopen", SIGUSR1}};
    int sig = 0;
    for (size_t i = 0; i < TK_ARRAY_LEN(sigs); i++)
        if (!strcmp(name, sigs[i].name))
            sig = sigs[i].sig;
    if (!sig) {
        fprintf(stderr, "takod: -s %s: unknown signal (reload, quit, stop, reopen)\n", name);
        return TK_EXIT_FATAL;
    }
    const char *path = tk.cfg.pidfile_path;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        fprintf(stderr, "takod: takod is not running (no pidfile %s: %s)\n", path, strerror(errno));
        return 1;
    }
    struct flock who = {.l_type = F_WRLCK, .l_whence = SEEK_SET};
    if (fcntl(fd, F_GETLK, &who) < 0 || who.l_type == F_UNLCK) {
        fprintf(stderr, "takod: takod is not running (nobody holds the lock on %s)\n", path);
        close(fd);
        return 1;
    }
    close(fd);
    if (kill(who.l_pid, sig) < 0) {
        fprintf(stderr, "takod: kill %d: %s\n", (int)who.l_pid, strerror(errno));
        return 1;
    }
    return 0;
}

/* Is the address we are about to listen on loopback only? */
static bool loopback_only(const struct addrinfo *ai)
{
    if (ai->ai_family == AF_INET)
        return (ntohl(((const struct sockaddr_in *)ai->ai_addr)->sin_addr.s_addr) >> 24) == 127;
    if (ai->ai_family == AF_INET6)
        return IN6_IS_ADDR_LOOPBACK(&((const struct sockaddr_in6 *)ai->ai_addr)->sin6_addr);
    return false;
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
    bool open_auth = !tk.cfg.auth_api_keys[0] && !tk.cfg.auth_admin_key[0];
    if (open_auth && !tk.cfg.auth_allow_unauthenticated_network_access)
        for (struct addrinfo *ai = res; ai; ai = ai->ai_next)
            if (!loopback_only(ai))
                die("refusing to listen on %s without API keys: anyone who reaches it could "
                    "run code. Set auth.api_keys, or auth.allow_unauthenticated_network_access "
                    "= true if something else guards it",
                    tk.cfg.server_listen);
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

/*
 * -d: fork twice (no controlling terminal, not a session leader), stdio on /dev/null.
 * The first parent waits on a pipe until the daemon has started (or says why it could
 * not), so `takod -d` exits 0 only when takod is really serving.
 */
static void daemonize(void)
{
    int p[2];
    if (pipe2(p, O_CLOEXEC) < 0)
        die("pipe: %s", strerror(errno));
    pid_t pid = fork();
    if (pid < 0)
        die("fork: %s", strerror(errno));
    if (pid > 0) {
        close(p[1]);
        char msg[1024];
        ssize_t n = read(p[0], msg, sizeof msg - 1);
        if (n > 0 && !(n == 2 && !memcmp(msg, "ok", 2))) {
            msg[n] = '\0';
            fprintf(stderr, "takod: %s\n", msg);
            _exit(TK_EXIT_FATAL);
        }
        _exit(n == 2 ? 0 : TK_EXIT_FATAL);
    }
    close(p[0]);
    setsid();
    pid = fork();
    if (pid < 0)
        die("fork: %s", strerror(errno));
    if (pid > 0)
        _exit(0);
    M.ready_fd = p[1];
    umask(022); /* job spool files must stay readable by the container user */
    if (chdir("/") < 0)
        die("chdir /: %s", strerror(errno));
    M.daemon = true;
    if (open_log() < 0)
        die("cannot open the log file");
    int null = open("/dev/null", O_RDWR);
    if (null >= 0) {
        dup2(null, 0);
        dup2(null, 1);
        dup2(null, 2);
        if (null > 2)
            close(null);
    }
}

/* At start: write what a previous run spooled while PostgreSQL was down (the settler does
 * it every 2 s from then on). Quiet when it still is down. */
static void replay_spool(void)
{
    if (dbspool_count() == 0)
        return;
    char err[512];
    struct db *db = NULL;
    if (db_open(&db, tk.conninfo, err, sizeof err) < 0)
        return;
    dbspool_replay(db);
    db_close(db);
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
    char spool[4200];
    snprintf(spool, sizeof spool, "%s/dbspool", tk.cfg.server_data_dir);
    int rc = mkdir_p(spool, 0700);
    if (rc < 0)
        die("create %s: %s", spool, strerror(-rc));
    replay_spool(); /* records a previous run could not write */
    struct db *db = NULL;
    if (db_open(&db, tk.conninfo, err, sizeof err) < 0)
        die("database: %s", err);
    rc = nodes_register(db, err, sizeof err);
    db_close(db);
    if (rc < 0)
        die("%s", err);
    log_info("msg=\"node registered\" node=\"%s\" cluster=%s", tk.node,
             tk.cfg.cluster_enabled ? "on" : "off");
}

/* executor.backend: the OCI backend when it is asked for (or auto) and its probe
 * container runs; auto falls back to the engine loudly, oci refuses to start. */
static void choose_backend(struct docker *d, const struct sandbox_env *env)
{
    char msg[1024];
    int rc = sandbox_choose_backend(d, env, msg, sizeof msg);
    if (rc < 0) {
        docker_close(d);
        die("%s", msg);
    }
    if (rc == 1)
        log_crit("msg=\"%s\"", msg);
    else if (msg[0])
        log_info("msg=\"%s\"", msg);
    snprintf(tk.shm->backend, sizeof tk.shm->backend, "%s", sandbox_backend_name());
    /* A dead executor's containers' inits (its children, as their subreaper) come to us
     * rather than to the host's init: reap() takes them like any unknown child. */
    if (sandbox_backend == SANDBOX_OCI && prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) < 0)
        log_warn("msg=\"prctl PR_SET_CHILD_SUBREAPER failed\" err=\"%s\"", strerror(errno));
}

static void check_docker(void)
{
    struct docker *d = NULL;
    if (docker_open(&d, tk.cfg.docker_socket) < 0)
        die("cannot reach the Docker engine at %s: %s (start dockerd, or set docker.socket)",
            tk.cfg.docker_socket, docker_last_error(NULL));
    json_t *image = NULL;
    int rc = docker_image_inspect(d, tk.cfg.docker_image, &image);
    rc = rc == 0 ? 1 : rc == -ENOENT ? 0 : rc;
    char e[512];
    snprintf(e, sizeof e, "%s", docker_last_error(d));
    const char *pyver = json_string_value(json_object_get(
        json_object_get(json_object_get(image, "Config"), "Labels"), "takod.python_version"));
    snprintf(tk.shm->python_version, sizeof tk.shm->python_version, "%s", pyver ? pyver : "3");
    json_decref(image);
    atomic_store(&tk.shm->image_exists, rc == 1);
    char serr[512], rmsg[768] = "";
    int rrc = 0;
    if (rc == 1) {
        if (sandbox_load_seccomp(tk.cfg.docker_seccomp_profile, serr, sizeof serr) < 0) {
            docker_close(d);
            die("%s", serr);
        }
        struct sandbox_env env = {
            .cfg = &tk.cfg, .instance = tk.instance, .rootfs_dir = tk.rootfs_dir};
        rrc = sandbox_choose_runtime(d, &env, true, rmsg, sizeof rmsg);
        if (rrc >= 0)
            choose_backend(d, &env);
    }
    docker_close(d); /* no engine connection may cross fork */
    if (rc == 0)
        die("executor image %s not found: build it with `tako setup` (scripts/build-image.sh)",
            tk.cfg.docker_image);
    if (rc < 0)
        die("checking executor image %s: %s", tk.cfg.docker_image, e);
    if (rrc < 0)
        die("%s", rmsg);
    if (rrc == 1 && tk.cfg.docker_runtime == TK_RUNTIME_RUNSC)
        log_crit("msg=\"GVISOR UNAVAILABLE: running jobs under runc (security_mode = "
                 "permissive)\" why=\"%s\"",
                 rmsg);
    else if (rrc == 1)
        log_warn("msg=\"%s\"", rmsg);
    else if (rmsg[0])
        log_info("msg=\"%s\"", rmsg);
    snprintf(tk.shm->runtime, sizeof tk.shm->runtime, "%s",
             sandbox_backend == SANDBOX_OCI ? oci_runtime() : sandbox_runtime);
    atomic_store(&tk.shm->docker_ok, 1);
    atomic_store(&tk.shm->live_nodes, 1);
    recovery_remove_containers(NULL); /* a previous run's leftovers */
}

/*
 * The spool: jobs' files and the warm containers' directories. Nothing there is durable
 * (a restart rebuilds it from PostgreSQL) and every job creates and removes a dozen files
 * in it, so by default it lives on /dev/shm when that is a tmpfs: metadata operations there
 * cost a few microseconds instead of tens. It must be ours: a directory of our uid, mode
 * 0700, not a symlink — anything else in a world-writable /dev/shm is refused.
 */
static void choose_spool(void)
{
    char base[4096];
    struct statfs fs;
    if (tk.cfg.server_spool_dir[0]) {
        snprintf(base, sizeof base, "%s", tk.cfg.server_spool_dir);
    } else if (statfs("/dev/shm", &fs) == 0 && fs.f_type == TMPFS_MAGIC) {
        char hash[65];
        sha256_hex(tk.cfg.server_data_dir, strlen(tk.cfg.server_data_dir), hash);
        snprintf(base, sizeof base, "/dev/shm/takod-%u-%.16s", (unsigned)geteuid(), hash);
    } else {
        snprintf(base, sizeof base, "%s/spool", tk.cfg.server_data_dir);
    }
    if (mkdir(base, 0700) < 0 && errno != EEXIST && mkdir_p(base, 0700) < 0)
        die("create server.spool_dir %s: %s", base, strerror(errno));
    struct stat st;
    if (lstat(base, &st) < 0 || !S_ISDIR(st.st_mode) || st.st_uid != geteuid())
        die("server.spool_dir %s is not a directory of ours (a symlink, or someone else's); "
            "remove it or set server.spool_dir",
            base);
    if (chmod(base, 0700) < 0)
        die("chmod %s: %s", base, strerror(errno));
    snprintf(tk.spool_dir, sizeof tk.spool_dir, "%s/jobs", base);
    snprintf(tk.slots_dir, sizeof tk.slots_dir, "%s/slots", base);
    snprintf(tk.quarantine_dir, sizeof tk.quarantine_dir, "%s/quarantine", base);
    if (tk.cfg.executor_rootfs_dir[0])
        snprintf(tk.rootfs_dir, sizeof tk.rootfs_dir, "%s", tk.cfg.executor_rootfs_dir);
    else
        snprintf(tk.rootfs_dir, sizeof tk.rootfs_dir, "%s/rootfs", tk.cfg.server_data_dir);
}

/* ---- children ---- */

static struct child *add_child(uint8_t role, int slot)
{
    if (M.n_children == M.cap_children) {
        int cap = M.cap_children ? M.cap_children * 2 : 16;
        struct child *c = realloc(M.children, (size_t)cap * sizeof *c);
        if (!c)
            die("out of memory");
        M.children = c;
        M.cap_children = cap;
    }
    struct child *c = &M.children[M.n_children++];
    *c = (struct child){
        .role = role, .slot = slot, .generation = M.generation, .respawn = true, .proc_idx = -1};
    return c;
}

static void add_generation(void)
{
    for (int a = 0; a < tk.cfg.server_acceptors; a++)
        add_child(TK_ROLE_ACCEPTOR, a);
    for (int e = 0; e < tk.cfg.server_executors; e++)
        add_child(TK_ROLE_EXECUTOR, e);
    add_child(TK_ROLE_CALLBACKS, 0); /* callback_url deliveries, off the executors' path */
    add_child(TK_ROLE_SWEEPER, 0);   /* the master's engine work */
    add_child(TK_ROLE_SETTLER, 0);   /* the master's database work */
}

static void spawn(struct child *c)
{
    int idx = shm_proc_claim(tk.shm, -1, c->role, (uint16_t)c->slot);
    if (idx < 0) { /* two generations at most at once; a third waits */
        c->next_spawn_ms = now_mono_ms() + 500;
        return;
    }
    pid_t pid = fork();
    if (pid < 0) {
        log_error("msg=\"fork failed\" role=%s slot=%d err=\"%s\"", role_name(c->role), c->slot,
                  strerror(errno));
        atomic_store(&shm_proc(tk.shm, (uint32_t)idx)->pid, 0);
        c->next_spawn_ms = now_mono_ms() + 1000;
        return;
    }
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGTERM); /* a child is useless without its master */
        if (getppid() != tk.master_pid)
            _exit(1);
        sigprocmask(SIG_SETMASK, &M.orig_mask, NULL);
        signal(SIGPIPE, SIG_IGN);
        tk.proc_idx = idx;
        atomic_store(&shm_proc(tk.shm, (uint32_t)idx)->pid, getpid());
        char title[64];
        snprintf(title, sizeof title, "takod: %s %d", role_name(c->role), c->slot);
        proctitle_set(title);
        log_set_role(title + 7);
        if (M.pidfile_fd >= 0)
            close(M.pidfile_fd);
        if (M.ready_fd >= 0)
            close(M.ready_fd);
        uint8_t role = c->role;
        int slot = c->slot;
        if (role != TK_ROLE_ACCEPTOR && tk.listen_fd >= 0) {
            close(tk.listen_fd); /* a copy held here would queue connects nobody accepts */
            tk.listen_fd = -1;
        }
        free(M.children);
        exit(roles[role].main(slot));
    }
    atomic_store(&shm_proc(tk.shm, (uint32_t)idx)->pid, pid);
    c->pid = pid;
    c->proc_idx = idx;
    c->started_ms = now_mono_ms();
    log_debug("msg=\"spawned\" role=%s slot=%d pid=%d generation=%d", role_name(c->role), c->slot,
              (int)pid, c->generation);
}

static void signal_children(uint8_t role, int sig, bool retiring_only)
{
    for (int i = 0; i < M.n_children; i++) {
        struct child *c = &M.children[i];
        if (c->pid > 0 && (!role || c->role == role) && (!retiring_only || c->retiring))
            kill(c->pid, sig);
    }
}

static int live_children(uint8_t role)
{
    int n = 0;
    for (int i = 0; i < M.n_children; i++)
        n += M.children[i].pid > 0 && (!role || M.children[i].role == role);
    return n;
}

/* Children that can still serve (running or to be respawned) of a role. */
static int usable_children(uint8_t role)
{
    int n = 0;
    for (int i = 0; i < M.n_children; i++) {
        struct child *c = &M.children[i];
        n += c->role == role && !c->retiring && (c->pid > 0 || c->respawn);
    }
    return n;
}

static void begin_stop(enum stop_mode mode)
{
    if (M.stopping == STOP_FAST || M.stopping == mode)
        return;
    M.stopping = mode;
    for (int i = 0; i < M.n_children; i++)
        M.children[i].respawn = false;
    if (mode == STOP_GRACEFUL) {
        M.stop_deadline_ms = now_mono_ms() + (uint64_t)tk.cfg.server_shutdown_timeout * 1000;
        log_info("msg=\"stopping gracefully\" timeout_s=%lld",
                 (long long)tk.cfg.server_shutdown_timeout);
        /* acceptors first: they finish their requests, whose jobs the executors run; the
         * cluster process claims no more and gives back what has not started */
        signal_children(TK_ROLE_ACCEPTOR, SIGQUIT, false);
        signal_children(TK_ROLE_CLUSTER, SIGQUIT, false);
    } else {
        M.stop_deadline_ms = now_mono_ms() + 3000;
        M.escalated = false;
        log_info("msg=\"stopping fast\"");
        signal_children(0, SIGTERM, false);
    }
    /* No acceptor will be spawned again: the acceptors' copies are the only ones left, and
     * each closes its own once it has taken what is queued, so later connects are refused
     * rather than queued and reset at exit. */
    if (tk.listen_fd >= 0) {
        close(tk.listen_fd);
        tk.listen_fd = -1;
    }
}

/* HUP: a new generation on the new config; the old one drains and exits. */
static void reload(void)
{
    if (M.stopping)
        return;
    struct tk_config fresh;
    char err[1024];
    if (config_load(&fresh, M.conf_path, M.overrides, M.n_over, err, sizeof err) < 0) {
        log_error("msg=\"reload failed; keeping the running configuration\" err=\"%s\"", err);
        return;
    }
    char keys[1024];
    if (config_diff_noreload(&tk.cfg, &fresh, keys, sizeof keys) > 0) {
        log_warn("msg=\"these settings need a restart; keeping their running values\" keys=\"%s\"",
                 keys);
        if (config_keep_noreload(&fresh, &tk.cfg) < 0) {
            config_free(&fresh);
            log_error("msg=\"reload failed: out of memory\"");
            return;
        }
    }
    config_free(&tk.cfg);
    tk.cfg = fresh;
    log_set_level(tk.cfg.server_log_level);
    if (open_log() < 0)
        log_error("msg=\"cannot open the new log file; logging where it did\"");
    M.generation++;
    for (int i = 0; i < M.n_children; i++) {
        struct child *c = &M.children[i];
        if (c->role == TK_ROLE_SESSIONS)
            continue; /* its sessions outlive a reload (workers/sessions.h) */
        if (!c->retiring) {
            c->retiring = true;
            c->respawn = false;
        }
    }
    signal_children(0, SIGQUIT, true);
    add_generation();
    log_info("msg=\"reloaded\" generation=%d", M.generation);
}

/* Settle one dead child: recovery (recovery.h), then respawn with backoff or not. */
static void reap_one(struct child *c, pid_t pid, int st)
{
    const char *role = role_name(c->role);
    bool fatal = WIFEXITED(st) && WEXITSTATUS(st) == TK_EXIT_FATAL;
    bool clean = WIFEXITED(st) && WEXITSTATUS(st) == 0;
    if (WIFSIGNALED(st))
        log_warn("msg=\"child killed\" role=%s slot=%d pid=%d signal=%d", role, c->slot, (int)pid,
                 WTERMSIG(st));
    else if (!clean || (!M.stopping && !c->retiring))
        log_warn("msg=\"child exited\" role=%s slot=%d pid=%d code=%d", role, c->slot, (int)pid,
                 WEXITSTATUS(st));
    recovery_after_death(c->proc_idx, pid); /* shm now; SQL and containers handed on */
    if (!M.stopping && !c->retiring)
        metrics_restart(shm_metrics(tk.shm), roles[c->role].metric);
    c->pid = 0;
    c->proc_idx = -1;
    if (fatal && c->respawn) {
        c->respawn = false;
        log_crit("msg=\"child hit a fatal error; not respawning it (see the lines above)\" "
                 "role=%s slot=%d",
                 role, c->slot);
        if (!M.stopping &&
            (usable_children(TK_ROLE_ACCEPTOR) == 0 || usable_children(TK_ROLE_EXECUTOR) == 0)) {
            M.exit_code = TK_EXIT_FATAL;
            begin_stop(STOP_FAST);
        }
        return;
    }
    uint64_t now = now_mono_ms();
    c->fails = now - c->started_ms < 1000 ? c->fails + 1 : 0;
    uint64_t delay = c->fails ? 100u << (c->fails < 9 ? c->fails - 1 : 8) : 0;
    if (delay > 30000)
        delay = 30000;
    if (delay) /* ±10% jitter so a crowd of failing children does not move in step */
        delay = delay * (90 + (uint64_t)(now_real_us() % 21)) / 100;
    if (c->fails == 10)
        log_crit("msg=\"child keeps failing at start; retrying with backoff\" role=%s "
                 "slot=%d",
                 role, c->slot);
    c->next_spawn_ms = now + delay;
}

/* The managed PostgreSQL died (or would not start): again now, or after a backoff when
 * it keeps dying quickly (up to 30 s, as for the children). */
static void pg_schedule_restart(void)
{
    uint64_t now = now_mono_ms();
    M.pg_fails = M.pg_started_ms && now - M.pg_started_ms < 5000 ? M.pg_fails + 1 : 0;
    uint64_t delay = M.pg_fails ? 250u << (M.pg_fails < 7 ? M.pg_fails - 1 : 7) : 0;
    M.pg_down = true;
    M.pg_next_ms = now + (delay > 30000 ? 30000 : delay);
}

static void pg_restart(void)
{
    char err[512];
    M.pg_down = false;
    M.pg_started_ms = now_mono_ms();
    if (pgm_respawn(&tk.cfg, &M.pg_pid, err, sizeof err) < 0) {
        log_crit("msg=\"restarting the managed PostgreSQL failed\" err=\"%s\"", err);
        M.pg_pid = 0;
        pg_schedule_restart();
    }
}

static void reap(void)
{
    /*
     * Reap everything first, and take every dead process out of the live set before any
     * repair: a dead process must never be mistaken for a live owner of a ring position.
     * Then repair those that had won a position (WON records) before those that had only
     * tried (TRY): a TRY record is only judged after every winner's operation is complete.
     */
    struct dead {
        pid_t pid;
        int st;
    } dead[128];
    int n_dead = 0, st;
    pid_t pid;
    while (n_dead < (int)TK_ARRAY_LEN(dead) && (pid = waitpid(-1, &st, WNOHANG)) > 0) {
        dead[n_dead++] = (struct dead){pid, st};
        for (int i = 0; i < M.n_children; i++)
            if (M.children[i].pid == pid && M.children[i].proc_idx >= 0)
                atomic_store(&shm_proc(tk.shm, (uint32_t)M.children[i].proc_idx)->pid, 0);
    }
    for (int pass = 0; pass < 2; pass++)
        for (int k = 0; k < n_dead; k++) {
            struct child *c = NULL;
            for (int i = 0; i < M.n_children; i++)
                if (M.children[i].pid == dead[k].pid)
                    c = &M.children[i];
            if (!c)
                continue;
            unsigned op =
                RING_REC_OP(atomic_load(&shm_proc(tk.shm, (uint32_t)c->proc_idx)->intent.rec));
            bool won = op == RING_OP_ENQ_WON || op == RING_OP_DEQ_WON;
            if ((pass == 0) == won)
                reap_one(c, dead[k].pid, dead[k].st);
        }
    for (int k = 0; k < n_dead; k++) {
        pid = dead[k].pid;
        st = dead[k].st;
        if (pid == M.pg_pid) {
            log_error("msg=\"managed PostgreSQL exited\" status=%d", st);
            metrics_restart(shm_metrics(tk.shm), METRICS_ROLE_DATABASE);
            M.pg_pid = 0;
            pg_schedule_restart();
            continue;
        }
    }
    /* forget retired children that have exited */
    int k = 0;
    for (int i = 0; i < M.n_children; i++)
        if (!(M.children[i].retiring && M.children[i].pid == 0))
            M.children[k++] = M.children[i];
    M.n_children = k;
}

static void tick(void)
{
    uint64_t now = now_mono_ms();
    if (!M.stopping)
        for (int i = 0; i < M.n_children; i++) {
            struct child *c = &M.children[i];
            if (c->pid == 0 && c->respawn && now >= c->next_spawn_ms)
                spawn(c);
        }
    recovery_drain_orphans();
    if (!M.stopping && M.pg_down && now >= M.pg_next_ms)
        pg_restart();
    if (M.stopping == STOP_GRACEFUL && !M.executors_told && live_children(TK_ROLE_ACCEPTOR) == 0) {
        M.executors_told = true; /* every request answered: the executors may go */
        signal_children(TK_ROLE_EXECUTOR, SIGQUIT, false);
        signal_children(TK_ROLE_SESSIONS, SIGQUIT, false); /* its sessions end as lost */
    }
    if (M.stopping == STOP_GRACEFUL && M.executors_told && !M.callbacks_told &&
        live_children(TK_ROLE_EXECUTOR) == 0 && live_children(TK_ROLE_SESSIONS) == 0) {
        /* every job is recorded, its callback queued: the callbacks process hands back what
         * it still has in flight (PostgreSQL keeps it for the next start) and goes; the
         * sweeper and the settler (what it has not settled, finish_stop does) go too */
        M.callbacks_told = true;
        signal_children(TK_ROLE_CALLBACKS, SIGQUIT, false);
        signal_children(TK_ROLE_SWEEPER, SIGQUIT, false);
        signal_children(TK_ROLE_SETTLER, SIGQUIT, false);
    }
    if (M.stopping && now >= M.stop_deadline_ms && live_children(0) > 0) {
        if (M.stopping == STOP_GRACEFUL) {
            log_warn("msg=\"graceful stop timed out; stopping fast\" left=%d", live_children(0));
            begin_stop(STOP_FAST);
        } else {
            log_warn("msg=\"children slow to stop; killing them\" left=%d", live_children(0));
            signal_children(0, SIGKILL, false);
            M.stop_deadline_ms = now + 1000;
        }
    }
}

static void finish_stop(void)
{
    recovery_settle_left(); /* every child is gone: whatever the settler did not take */
    recovery_remove_containers(NULL);
    oci_release(); /* its state root, now empty (made by auto's probe too) */
    recovery_stop();
    if (M.pg_pid > 0)
        pgm_stop(M.pg_pid, 10000);
    M.pg_pid = 0;
    remove_spool();
    unlink(tk.cfg.pidfile_path);
    log_info("msg=\"stopped\"");
}

static int master_loop(void)
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
        tick();
        if (M.stopping && live_children(0) == 0)
            break;
        struct pollfd pfd = {.fd = sfd, .events = POLLIN};
        poll(&pfd, 1, 250);
        struct signalfd_siginfo si;
        while (read(sfd, &si, sizeof si) == (ssize_t)sizeof si) {
            switch (si.ssi_signo) {
            case SIGCHLD:
                break; /* reaped below */
            case SIGTERM:
            case SIGINT:
                begin_stop(STOP_FAST);
                break;
            case SIGQUIT:
                begin_stop(STOP_GRACEFUL);
                break;
            case SIGUSR1:
                log_reopen();
                signal_children(0, SIGUSR1, false);
                break;
            case SIGHUP:
                reload();
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
    bool test_only = false, daemon_mode = false;
    const char *signal_name = NULL;
    M.overrides = calloc((size_t)argc + 1, sizeof *M.overrides);
    int opt;
    while ((opt = getopt(argc, argv, "c:o:ts:dh")) != -1) {
        switch (opt) {
        case 'c':
            M.conf_path = optarg;
            break;
        case 'o':
            M.overrides[M.n_over++] = optarg;
            break;
        case 't':
            test_only = true;
            break;
        case 's':
            signal_name = optarg;
            break;
        case 'd':
            daemon_mode = true;
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
    if (config_load(&tk.cfg, M.conf_path, M.overrides, M.n_over, err, sizeof err) < 0) {
        fprintf(stderr, "takod: %s\n", err);
        return TK_EXIT_FATAL;
    }
    if (test_only) {
        config_print(&tk.cfg, stdout);
        fprintf(stderr,
                "takod: configuration %s is valid; keys marked \"restart\" are not applied by a "
                "reload (HUP)\n",
                M.conf_path ? M.conf_path : "(defaults)");
        return 0;
    }
    if (signal_name)
        return send_signal(signal_name);
    /* The overrides must survive proctitle_init (it moves argv); keep copies. */
    for (size_t i = 0; i < M.n_over; i++)
        M.overrides[i] = strdup(M.overrides[i]);
    if (M.conf_path)
        M.conf_path = strdup(M.conf_path);
    proctitle_init(argc, argv);
    proctitle_set("takod: master");
    log_set_role("master");
    log_set_level(tk.cfg.server_log_level);
    if (open_log() < 0)
        die("cannot open server.log_file %s", tk.cfg.server_log_file);

    gethostname(tk.node, sizeof tk.node - 1);
    /* a node is this host's takod on this data dir: two on one host stay apart */
    snprintf(tk.instance, sizeof tk.instance, "%s:%s", tk.node, tk.cfg.server_data_dir);
    snprintf(tk.node, sizeof tk.node, "%s",
             tk.cfg.server_node_id[0] ? tk.cfg.server_node_id : tk.instance);
    int rc = mkdir_p(tk.cfg.server_data_dir, 0755);
    if (rc < 0)
        die("create server.data_dir %s: %s", tk.cfg.server_data_dir, strerror(-rc));

    /* Block the signals the loop handles before any child exists, so none is lost. */
    sigset_t set;
    sigemptyset(&set);
    int sigs[] = {SIGCHLD, SIGTERM, SIGINT, SIGQUIT, SIGHUP, SIGUSR1};
    for (size_t i = 0; i < TK_ARRAY_LEN(sigs); i++)
        sigaddset(&set, sigs[i]);
    sigprocmask(SIG_BLOCK, &set, &M.orig_mask);
    signal(SIGPIPE, SIG_IGN);

    tk.listen_fd = bind_listen();
    if (daemon_mode)
        daemonize();
    tk.master_pid = getpid();
    open_pidfile();
    choose_spool();
    setup_database();

    rc = shm_create(&tk.shm, (uint32_t)tk.cfg.server_queue_size, (uint32_t)tk.cfg.server_acceptors,
                    (uint32_t)tk.cfg.server_executors);
    if (rc < 0)
        die("create shared memory: %s", strerror(-rc));
    tk.done_efd = calloc(tk.shm->n_procs, sizeof *tk.done_efd);
    for (uint32_t i = 0; tk.done_efd && i < tk.shm->n_procs; i++) {
        tk.done_efd[i] = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
        if (tk.done_efd[i] < 0)
            die("eventfd: %s", strerror(errno));
    }
    /* what the job modules need of this process (inherited by every child) */
    jobs_init(&(struct jobs_ctx){.shm = tk.shm,
                                 .done_efd = tk.done_efd,
                                 .spool_dir = tk.spool_dir,
                                 .quarantine_dir = tk.quarantine_dir,
                                 .node = tk.node,
                                 .fenced = tk.cfg.cluster_enabled});
    dbspool_init(tk.cfg.server_data_dir);
    check_docker();
    /* nothing in flight yet: whatever is there is stale. What cannot be removed is moved
     * to the quarantine, so the names are fresh; the quarantine is retried at each start. */
    sandbox_umount_under(tk.slots_dir);
    rm_rf_aside(tk.spool_dir, tk.quarantine_dir);
    rm_rf_aside(tk.slots_dir, tk.quarantine_dir);
    rc = rm_rf(tk.quarantine_dir);
    if (rc < 0)
        log_warn("msg=\"the spool's quarantine is not empty; remove it by hand\" dir=%s "
                 "err=\"%s\"",
                 tk.quarantine_dir, strerror(-rc));
    rc = mkdir_p(tk.spool_dir, 0700);
    if (rc == 0)
        rc = mkdir_p(tk.slots_dir, 0700);
    if (rc < 0)
        die("create spool dirs in %s: %s", tk.cfg.server_data_dir, strerror(-rc));
    if (recovery_startup() < 0)
        die("start-up recovery failed (see the lines above)");

    add_generation();
    add_child(TK_ROLE_SESSIONS, 0); /* once: not part of a reload's generations */
    if (tk.cfg.cluster_enabled)
        add_child(TK_ROLE_CLUSTER, 0); /* once, too: claims from the shared queue */
    log_info("msg=\"takod started\" version=%s listen=%s acceptors=%lld executors=%lld "
             "queue_size=%u database=%s pid=%d",
             TAKO_VERSION, tk.cfg.server_listen, (long long)tk.cfg.server_acceptors,
             (long long)tk.cfg.server_executors, tk.shm->n_jobs,
             tk.cfg.database_url[0] ? "external" : "managed", (int)getpid());
    if (M.ready_fd >= 0) {
        ssize_t w = write(M.ready_fd, "ok", 2);
        (void)w;
        close(M.ready_fd);
        M.ready_fd = -1;
    }
    return master_loop();
}
