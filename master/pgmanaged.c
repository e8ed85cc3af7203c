/*
 * pgmanaged.c — run a private PostgreSQL for takod (see pgmanaged.h).
 */
#include "tako/pgmanaged.h"
#include "tako/log.h"
#include "tako/util.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <libpq-fe.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

struct pg_user {
    bool drop; /* switch to uid/gid in the child */
    uid_t uid;
    gid_t gid;
};

/* The newest /usr/lib/postgresql/N/bin that has a postgres binary. */
static int find_bindir(const char *configured, char *out, size_t len)
{
    if (configured && *configured) {
        snprintf(out, len, "%s", configured);
        return 0;
    }
    DIR *d = opendir("/usr/lib/postgresql");
    int best = -1;
    if (d) {
        struct dirent *de;
        while ((de = readdir(d)) != NULL) {
            int v = atoi(de->d_name);
            char p[512];
            snprintf(p, sizeof p, "/usr/lib/postgresql/%s/bin/postgres", de->d_name);
            if (v > best && access(p, X_OK) == 0)
                best = v;
        }
        closedir(d);
    }
    if (best < 0)
        return -ENOENT;
    snprintf(out, len, "/usr/lib/postgresql/%d/bin", best);
    return 0;
}

/* In a forked child: become the database user, stdout/stderr to the log, then exec. */
static void child_exec(const struct pg_user *u, const char *logpath, char *const argv[])
{
    int fd = open(logpath, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640);
    if (fd >= 0) {
        if (u->drop && fchown(fd, u->uid, u->gid) < 0) {
            /* the log stays root's; postgres writes through the inherited fd anyway */
        }
        dup2(fd, 1);
        dup2(fd, 2);
    }
    int devnull = open("/dev/null", O_RDONLY);
    if (devnull >= 0)
        dup2(devnull, 0);
    if (u->drop && (setgroups(0, NULL) < 0 || setgid(u->gid) < 0 || setuid(u->uid) < 0)) {
        fprintf(stderr, "takod: cannot switch to the database user: %s\n", strerror(errno));
        _exit(127);
    }
    execv(argv[0], argv);
    fprintf(stderr, "takod: exec %s failed: %s\n", argv[0], strerror(errno));
    _exit(127);
}

static int run_wait(const struct pg_user *u, const char *logpath, char *const argv[])
{
    pid_t pid = fork();
    if (pid < 0)
        return -errno;
    if (pid == 0) {
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        child_exec(u, logpath, argv);
    }
    int st;
    while (waitpid(pid, &st, 0) < 0)
        if (errno != EINTR)
            return -errno;
    return WIFEXITED(st) && WEXITSTATUS(st) == 0 ? 0 : -EIO;
}

static int own_dir(const char *path, const struct pg_user *u)
{
    int rc = mkdir_p(path, 0700);
    if (rc < 0)
        return rc;
    if (u->drop && chown(path, u->uid, u->gid) < 0)
        return -errno;
    if (chmod(path, 0700) < 0)
        return -errno;
    return 0;
}

/* Where the cluster lives and who runs it. */
struct pg_paths {
    char bindir[512], pgdir[4200], sockdir[4200], logpath[4200];
    struct pg_user u;
};

/* The binaries, the database user, the directories; with may_init, initdb if the cluster
 * does not exist yet (blocking: at start-up only). 0 or -errno with why. */
static int prepare(const struct tk_config *cfg, bool may_init, struct pg_paths *pp, char *err,
                   size_t errlen)
{
    char path[4700];
    if (find_bindir(cfg->database_pg_bindir, pp->bindir, sizeof pp->bindir) < 0) {
        snprintf(err, errlen,
                 "no PostgreSQL server binaries in /usr/lib/postgresql/*/bin: install the "
                 "postgresql package or set database.url");
        return -ENOENT;
    }
    struct pg_user u = {0};
    if (geteuid() == 0) {
        struct passwd *pw = getpwnam(cfg->database_managed_user);
        if (!pw || pw->pw_uid == 0) {
            snprintf(err, errlen,
                     "database.managed_user '%s' is not an unprivileged user on this system "
                     "(PostgreSQL refuses to run as root)",
                     cfg->database_managed_user);
            return -EINVAL;
        }
        u = (struct pg_user){true, pw->pw_uid, pw->pw_gid};
    }
    pp->u = u;
    snprintf(pp->pgdir, sizeof pp->pgdir, "%s/pg", cfg->server_data_dir);
    snprintf(pp->sockdir, sizeof pp->sockdir, "%s/pgsock", cfg->server_data_dir);
    snprintf(pp->logpath, sizeof pp->logpath, "%s/postgresql.log", cfg->server_data_dir);
    if (strlen(pp->sockdir) > 90) {
        snprintf(err, errlen, "server.data_dir is too long for a unix socket path (%s)",
                 pp->sockdir);
        return -ENAMETOOLONG;
    }
    /* The database user must be able to reach <data_dir>/pg: traverse (not read) access. */
    struct stat dst;
    if (u.drop && stat(cfg->server_data_dir, &dst) == 0 && !(dst.st_mode & S_IXOTH)) {
        if (chmod(cfg->server_data_dir, (dst.st_mode & 07777) | S_IXOTH) < 0) {
            snprintf(err, errlen, "chmod o+x %s (the database user must reach %s): %s",
                     cfg->server_data_dir, pp->pgdir, strerror(errno));
            return -errno;
        }
        log_info("msg=\"made data_dir traversable for the database user\" dir=%s",
                 cfg->server_data_dir);
    }
    int rc = own_dir(pp->pgdir, &u);
    if (rc == 0)
        rc = own_dir(pp->sockdir, &u);
    if (rc < 0) {
        snprintf(err, errlen, "prepare %s: %s", pp->pgdir, strerror(-rc));
        return rc;
    }
    snprintf(path, sizeof path, "%s/PG_VERSION", pp->pgdir);
    if (access(path, F_OK) != 0) {
        if (!may_init) {
            snprintf(err, errlen, "%s is not a PostgreSQL cluster any more", pp->pgdir);
            return -ENOENT;
        }
        log_info("msg=\"initialising the managed PostgreSQL\" dir=%s", pp->pgdir);
        char initdb[600];
        snprintf(initdb, sizeof initdb, "%s/initdb", pp->bindir);
        char *argv[] = {initdb,
                        "-D",
                        pp->pgdir,
                        "-U",
                        "takod",
                        "-A",
                        "trust",
                        "-E",
                        "UTF8",
                        "--locale=C.UTF-8",
                        "--no-instructions",
                        NULL};
        if (run_wait(&u, pp->logpath, argv) < 0) {
            snprintf(err, errlen, "initdb %s failed; see %s", pp->pgdir, pp->logpath);
            return -EIO;
        }
    }
    return 0;
}

/* Fork the postmaster; it does not wait for it to accept connections. */
static int spawn_postmaster(const struct pg_paths *pp, pid_t *pid_out, char *err, size_t errlen)
{
    char postgres[600];
    snprintf(postgres, sizeof postgres, "%s/postgres", pp->bindir);
    char sockopt[4300];
    snprintf(sockopt, sizeof sockopt, "unix_socket_directories=%s", pp->sockdir);
    struct pg_user u = pp->u;
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid < 0) {
        snprintf(err, errlen, "fork: %s", strerror(errno));
        return -errno;
    }
    if (pid == 0) {
        setpgid(0, 0); /* the master decides when it stops, not a terminal's ^C */
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        if (u.drop && (setgroups(0, NULL) < 0 || setgid(u.gid) < 0 || setuid(u.uid) < 0))
            _exit(127);
        prctl(PR_SET_PDEATHSIG, SIGQUIT); /* after setuid, which clears it */
        if (getppid() != parent)
            _exit(1);
        struct pg_user none_u = {0};
        char *argv[] = {postgres, "-D", (char *)pp->pgdir, "-c", "listen_addresses=", "-c",
                        sockopt,  "-c", "port=5432",       NULL};
        child_exec(&none_u, pp->logpath, argv);
    }
    *pid_out = pid;
    return 0;
}

int pgm_start(const struct tk_config *cfg, pid_t *pid_out, char *conninfo, size_t clen, char *err,
              size_t errlen)
{
    struct pg_paths pp;
    pid_t pid;
    int rc = prepare(cfg, true, &pp, err, errlen);
    if (rc == 0)
        rc = spawn_postmaster(&pp, &pid, err, errlen);
    if (rc < 0)
        return rc;
    const char *sockdir = pp.sockdir, *logpath = pp.logpath;
    snprintf(conninfo, clen, "host=%s port=5432 dbname=takod user=takod", sockdir);
    char admin[4400];
    snprintf(admin, sizeof admin, "host=%s port=5432 dbname=postgres user=takod connect_timeout=2",
             sockdir);
    for (int i = 0; i < 300; i++) { /* up to 30 s */
        int st;
        if (waitpid(pid, &st, WNOHANG) == pid) {
            snprintf(err, errlen, "the managed PostgreSQL exited at start; see %s", logpath);
            return -EIO;
        }
        if (PQping(admin) == PQPING_OK)
            break;
        usleep(100 * 1000);
    }
    PGconn *c = PQconnectdb(admin);
    if (PQstatus(c) != CONNECTION_OK) {
        snprintf(err, errlen, "the managed PostgreSQL does not answer: %s", PQerrorMessage(c));
        PQfinish(c);
        pgm_stop(pid, 5000);
        return -ETIMEDOUT;
    }
    PGresult *r = PQexec(c, "SELECT 1 FROM pg_database WHERE datname = 'takod'");
    bool exists = PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1;
    PQclear(r);
    if (!exists) {
        r = PQexec(c, "CREATE DATABASE takod");
        if (PQresultStatus(r) != PGRES_COMMAND_OK) {
            snprintf(err, errlen, "CREATE DATABASE takod: %s", PQresultErrorMessage(r));
            PQclear(r);
            PQfinish(c);
            pgm_stop(pid, 5000);
            return -EIO;
        }
        PQclear(r);
    }
    PQfinish(c);
    *pid_out = pid;
    log_info("msg=\"managed PostgreSQL ready\" pid=%d socket_dir=%s", (int)pid, sockdir);
    return 0;
}

int pgm_respawn(const struct tk_config *cfg, pid_t *pid_out, char *err, size_t errlen)
{
    struct pg_paths pp;
    int rc = prepare(cfg, false, &pp, err, errlen);
    if (rc == 0)
        rc = spawn_postmaster(&pp, pid_out, err, errlen);
    if (rc == 0)
        log_info("msg=\"managed PostgreSQL restarted\" pid=%d socket_dir=%s", (int)*pid_out,
                 pp.sockdir);
    return rc;
}

void pgm_stop(pid_t pid, int timeout_ms)
{
    if (pid <= 0)
        return;
    kill(pid, SIGINT); /* fast shutdown: abort transactions, checkpoint, exit */
    for (int waited = 0; waited < timeout_ms; waited += 50) {
        if (waitpid(pid, NULL, WNOHANG) == pid)
            return;
        usleep(50 * 1000);
    }
    log_warn("msg=\"managed PostgreSQL slow to stop; immediate shutdown\" pid=%d", (int)pid);
    kill(pid, SIGQUIT);
    for (int waited = 0; waited < 5000; waited += 50) {
        if (waitpid(pid, NULL, WNOHANG) == pid)
            return;
        usleep(50 * 1000);
    }
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
}
