/*
 * executor.c — one executor process: pops a job from the dispatch ring, runs it in a
 * warm container it prepared in advance (sandbox.h), collects what it produced, records
 * the result in PostgreSQL, and hands the completion to the acceptor that waits for it.
 * Then it removes that container, and refills its pool of warm containers while no job
 * waits.
 *
 * One job at a time; blocking calls (libcurl, libpq) are fine here because nothing else
 * shares this process — except the engine's two slow calls. A container's start (~100 ms
 * of dockerd, containerd and the runtime) and its removal are sent without waiting
 * (docker_start_async, docker_remove_async), one start in flight per executor, and their
 * answers are collected between jobs (progress). So an executor with a started container
 * takes a job at once, even while its next one is starting; an executor with none takes
 * no job until one is started, leaving the job to one that has. Signals only set flags
 * (no SA_RESTART), checked between steps, in the launcher wait (every 250 ms) and after
 * every futex sleep.
 */
#include "tako/db.h"
#include "tako/docker.h"
#include "tako/jobs.h"
#include "tako/jobtypes.h"
#include "tako/log.h"
#include "tako/dbspool.h"
#include "tako/metrics.h"
#include "tako/outputs.h"
#include "tako/result.h"
#include "tako/sandbox.h"
#include "tako/takod.h"
#include "tako/util.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <poll.h>
#include <unistd.h>

/*
 * TERM/INT: fast stop — the program in hand is killed, the job recorded as cancelled
 * (error.type "interrupted") and its client answered; then exit. QUIT: finish the job in
 * hand, then exit. USR1: reopen logs.
 */
static volatile sig_atomic_t stop_fast, stop_graceful, reopen_logs;

/* SIGIO: a start's answer came (its socket has O_ASYNC): end the executor's sleep on the
 * dispatch ring, where SIGIO is let in (ring_pop_wait_from), so the answer is taken and the
 * start slot passed on at once. Blocked everywhere else, so no other call sees EINTR. */
static void on_answer(int sig)
{
    (void)sig;
    ring_poke(shm_dispatch(tk.shm));
}

/* The engine's answer on fd raises SIGIO. */
static void answer_wakes(int fd)
{
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0 || fcntl(fd, F_SETOWN, getpid()) < 0 || fcntl(fd, F_SETFL, fl | O_ASYNC) < 0)
        log_warn("msg=\"fcntl O_ASYNC failed\" err=\"%s\"", strerror(errno));
}

static void on_signal(int sig)
{
    if (sig == SIGQUIT)
        stop_graceful = 1;
    else if (sig == SIGUSR1)
        reopen_logs = 1;
    else
        stop_fast = 1;
}

#define REMOVING_MAX   16    /* removals sent and not yet answered */
#define ANSWER_WAIT_MS 250   /* the longest wait for an answer or a slot (SIGIO, kicks end it) */
#define START_WAIT_MS  60000 /* a start the engine has not answered by then has failed */
#define WARM_MAX       17    /* server.warm_containers' maximum, and one of the sticky kind */
#define KIND_MAX       320
#define STICKY_MS      (300 * 1000) /* a job type's warm container outlives its last job so long */

struct exec_state {
    struct sandbox_env env; /* what its containers are made with (from tk) */
    int slot;
    struct tk_proc *me;
    struct docker *docker;
    struct db *db;
    struct warm pool[WARM_MAX];     /* started ahead of time, oldest first */
    char kinds[WARM_MAX][KIND_MAX]; /* what each was made as (see kind_of) */
    int n_pool;
    /* The last other kind of container this executor ran a job in (another job type, or
     * a requirements image): one of it is kept warm while jobs keep asking for it. */
    struct {
        char kind[KIND_MAX];
        char image[160]; /* what it is created from: an image id or a tako-req name */
        const struct tk_job_type *type;
        uint64_t used_ms;
    } sticky;
    struct {
        int fd;    /* the engine's answer to the DELETE (OCI: a pidfd of `delete`) */
        pid_t pid; /* OCI: that `delete` process */
        char id[65];
        char dir[4096];
    } removing[REMOVING_MAX];
    int n_removing;
    unsigned seq;      /* containers prepared so far (names their directories) */
    uint64_t gen;      /* this process's start (µs): directory names never repeat */
    int prepare_fails; /* consecutive: backoff, and the engine counts as down */
};

/* Hard-link (or copy) a job file into the warm container's directory. */
static int place_file(const char *from, const char *to)
{
    unlink(to);
    if (link(from, to) == 0)
        return 0;
    char *data = NULL;
    size_t len = 0;
    int rc = read_file(from, 256u << 20, &data, &len);
    if (rc == 0)
        rc = write_file(to, data, len, 0644);
    free(data);
    return rc;
}

static void removal_done(struct exec_state *st, int i, int timeout_ms);

/*
 * A used container goes (its program and launcher have exited): the removal is sent at
 * once and answered later (progress). At once, not when the executor is idle: removals
 * saved up go out together, and their burst of engine work delays the starts behind it.
 */
static void retire(struct exec_state *st, struct warm *w)
{
    while (st->n_removing == REMOVING_MAX) /* the engine lags: wait for the oldest */
        removal_done(st, 0, 10000);
    int fd;
    pid_t pid;
    if (sandbox_retire_async(st->docker, w, &fd, &pid) < 0) {
        sandbox_discard(st->docker, w); /* the blocking way logs what failed */
    } else {
        st->removing[st->n_removing].fd = fd; /* taken on a later wake: not urgent */
        st->removing[st->n_removing].pid = pid;
        memcpy(st->removing[st->n_removing].id, w->id, sizeof w->id);
        memcpy(st->removing[st->n_removing].dir, w->dir, sizeof w->dir);
        st->n_removing++;
    }
    sandbox_warm_init(w);
}

/* A removal's answer is in (or overdue): its directory goes too. */
static void removal_done(struct exec_state *st, int i, int timeout_ms)
{
    int rc = sandbox_retire_finish(st->docker, st->removing[i].fd, st->removing[i].pid, timeout_ms);
    if (rc < 0 && rc != -ENOENT)
        log_warn("msg=\"removing a container failed\" container=%.12s err=\"%s\"",
                 st->removing[i].id, docker_last_error(st->docker));
    sandbox_release_dir(&st->env, st->removing[i].dir); /* logs a failure */
    st->removing[i] = st->removing[--st->n_removing];
}

/*
 * A container's kind: "" for the default type; for any other, the image it was created
 * from (an image id, so a rebuilt tako-vm-NAME:latest is a new kind; or a tako-req name,
 * derived from its base's id) and the limits, network and environment it got. A job
 * takes a warm container only of exactly its kind.
 */
static void kind_of(const struct sandbox_spec *s, char kind[KIND_MAX])
{
    snprintf(kind, KIND_MAX, "%s|%lld|%g|%d|%s|%s", s->image, (long long)s->memory, s->cpus,
             (int)s->network, s->env ? s->env : "", s->preload ? s->preload : "");
}

/* Containers of `kind` in the pool: all of them, or only the started ones. */
static int pool_count(const struct exec_state *st, const char *kind, bool ready_only)
{
    int n = 0;
    for (int i = 0; i < st->n_pool; i++)
        n += !strcmp(st->kinds[i], kind) && (st->pool[i].ready || !ready_only);
    return n;
}

static int n_starting(const struct exec_state *st)
{
    int n = 0;
    for (int i = 0; i < st->n_pool; i++)
        n += st->pool[i].start_fd >= 0;
    return n;
}

/*
 * Start slots (server.container_starts). Preparing a container (create to the start's
 * answer) is mostly the engine's CPU work, ~100 ms of dockerd, containerd, its shim and
 * the runtime. Many at once only slow each other down, and they end in bunches: a job
 * then finds two containers ready, and the next one none for a whole start. So at most
 * server.container_starts preparations run at once over all executors, and they end
 * about evenly spaced.
 *
 * An executor's me->starting says whether it holds a slot. The count is over the live
 * executors (a dead one's pid is 0 at once), so a crash leaks no slot. A claim announces
 * itself (CLAIMING), counts the others that claim or hold, and holds if that leaves room,
 * else backs off (WAITING): the limit always holds, since of two simultaneous claimants
 * at least one sees the other. When all slots are held, the claimant waits for one to be
 * given back: the executor that gives one back wakes the others if one of them claims or
 * waits (it sees that mark, set before the claimant counted, or the claimant sees the
 * slot free). When only a simultaneous claim stood in the way, it looks again in a
 * moment. A job that needs a container of another kind is not held back: it
 * gets one at once (job_container).
 */
static int start_slots(void)
{
    static int online; /* sysconf reads sysfs each time: once per executor is enough */
    if (tk.cfg.server_container_starts > 0)
        return tk.cfg.server_container_starts;
    if (online == 0) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        online = n > 0 ? (int)n : 1;
    }
    return online;
}

/* The other live executors' marks, counted by TK_SLOT_* value. */
static void others_slots(const struct exec_state *st, int count[TK_SLOT_WAITING + 1])
{
    memset(count, 0, (TK_SLOT_WAITING + 1) * sizeof count[0]);
    for (uint32_t i = 0; i < tk.shm->n_procs; i++) {
        struct tk_proc *p = shm_proc(tk.shm, i);
        uint32_t s = atomic_load(&p->starting);
        if (p != st->me && p->role == TK_ROLE_EXECUTOR && atomic_load(&p->pid) > 0 &&
            s <= TK_SLOT_WAITING)
            count[s]++;
    }
}

/* 0: the slot is ours; -EBUSY: all are held (a release wakes us); -EAGAIN: another claim
 * came at the same moment (look again in a moment). */
static int slot_claim(struct exec_state *st)
{
    if (atomic_load(&st->me->starting) == TK_SLOT_HELD)
        return 0;
    atomic_store(&st->me->starting, TK_SLOT_CLAIMING);
    int count[TK_SLOT_WAITING + 1];
    others_slots(st, count);
    int held = count[TK_SLOT_HELD], taken = held + count[TK_SLOT_CLAIMING];
    if (taken < start_slots()) {
        atomic_store(&st->me->starting, TK_SLOT_HELD);
        return 0;
    }
    atomic_store(&st->me->starting, TK_SLOT_WAITING);
    return held < start_slots() ? -EAGAIN : -EBUSY;
}

static bool no_slot(int rc)
{
    return rc == -EBUSY || rc == -EAGAIN;
}

/* How long to wait for a slot after slot_claim said rc: until one is given back, or a
 * moment (1-3 ms, so two that collided do not collide again). */
static int slot_wait_ms(int rc)
{
    return rc == -EAGAIN ? 1 + (int)(now_mono_us() % 3) : ANSWER_WAIT_MS;
}

/* An executor with no container waits for a slot on the slot word, sampled (`seen`)
 * before it claimed; one with a container waits on the dispatch ring instead. */
static void slot_wait(uint32_t seen, int rc)
{
    futex_word_wait(&tk.shm->slot_word, seen, slot_wait_ms(rc));
}

/* The slot goes back once no preparation of ours is under way (and a wait for one ends);
 * executors that claim or wait for one (on the slot word without a container, on the
 * dispatch ring with one) look again. */
static void slot_sync(struct exec_state *st)
{
    uint32_t held = TK_SLOT_HELD, waiting = TK_SLOT_WAITING;
    if (n_starting(st) > 0 ||
        !atomic_compare_exchange_strong(&st->me->starting, &held, TK_SLOT_NONE)) {
        atomic_compare_exchange_strong(&st->me->starting, &waiting, TK_SLOT_NONE);
        return;
    }
    int count[TK_SLOT_WAITING + 1];
    others_slots(st, count);
    if (count[TK_SLOT_CLAIMING] + count[TK_SLOT_WAITING] > 0) {
        futex_word_wake(&tk.shm->slot_word);
        ring_kick(shm_dispatch(tk.shm));
    }
}

/* The started containers, for /metrics. */
static void publish_warm(struct exec_state *st)
{
    int n = 0;
    for (int i = 0; i < st->n_pool; i++)
        n += st->pool[i].ready;
    atomic_store(&st->me->warm, (uint32_t)n);
}

/* How the engine did: after a failure to prepare or start a container (the first, then
 * one in 30, is logged), and after a success. */
static void engine_failed(struct exec_state *st, const char *image)
{
    if (st->prepare_fails % 30 == 0)
        log_error("msg=\"preparing a container failed\" image=%s failures=%d err=\"%s\"", image,
                  st->prepare_fails + 1, docker_last_error(st->docker));
    st->prepare_fails++;
    if (st->prepare_fails >= 2)
        atomic_store(&tk.shm->docker_ok, 0); /* acceptors answer 503 meanwhile */
}

static void engine_worked(struct exec_state *st)
{
    if (st->prepare_fails)
        log_info("msg=\"container engine usable again\"");
    st->prepare_fails = 0;
    atomic_store(&tk.shm->docker_ok, 1);
}

/* A warm container of `kind` on its way: created, attached, its start sent. 0, no start
 * slot (-EBUSY, -EAGAIN: see slot_claim) or -errno. */
static int prepare_warm(struct exec_state *st, const struct sandbox_spec *spec, const char *kind)
{
    if (st->n_pool >= WARM_MAX)
        return 0;
    int rc = slot_claim(st);
    if (rc < 0)
        return rc;
    char dir[4200];
    snprintf(dir, sizeof dir, "%s/e%d-%llx-%u", tk.slots_dir, tk.proc_idx,
             (unsigned long long)st->gen, ++st->seq);
    rc = sandbox_prepare_async(st->docker, &st->env, &st->pool[st->n_pool], dir, spec);
    if (rc < 0)
        slot_sync(st);
    else /* the engine's answer, or the OCI runtime's pid FIFO */
        answer_wakes(st->pool[st->n_pool].start_fd);
    if (rc < 0 && spec) { /* a job type's: its image may be gone; not the engine's health */
        log_warn("msg=\"preparing a warm container of a job type failed\" image=%s err=\"%s\"",
                 spec->image, docker_last_error(st->docker));
        return rc;
    }
    if (rc < 0) {
        engine_failed(st, tk.cfg.docker_image);
        return rc;
    }
    snprintf(st->kinds[st->n_pool], KIND_MAX, "%s", kind);
    st->n_pool++; /* starting: counts for /metrics once started (start_done) */
    return 0;
}

/* At least one container of the default type, started or starting (started now if there
 * is none). -EBUSY or -EAGAIN: none, and no start slot (slot_claim). */
static int ensure_warm(struct exec_state *st)
{
    return pool_count(st, "", false) > 0 ? 0 : prepare_warm(st, NULL, "");
}

/* Entry i out of the pool, into *out (NULL: discarded). */
static void pool_remove(struct exec_state *st, int i, struct warm *out)
{
    if (out)
        *out = st->pool[i];
    else
        sandbox_discard(st->docker, &st->pool[i]);
    memmove(&st->pool[i], &st->pool[i + 1], (size_t)(st->n_pool - 1 - i) * sizeof st->pool[0]);
    memmove(st->kinds[i], st->kinds[i + 1], (size_t)(st->n_pool - 1 - i) * KIND_MAX);
    st->n_pool--;
    sandbox_warm_init(&st->pool[st->n_pool]);
    publish_warm(st);
    slot_sync(st);
}

/* Pool entry i's start was answered (or is overdue after wait_ms): ready, or gone. */
static void start_done(struct exec_state *st, int i, int wait_ms)
{
    if (sandbox_started(st->docker, &st->pool[i], wait_ms) == 0) {
        if (!st->kinds[i][0])
            engine_worked(st);
        publish_warm(st);
        slot_sync(st);
        return;
    }
    if (st->kinds[i][0]) { /* a job type's: the next job of it makes its own */
        log_warn("msg=\"starting a warm container of a job type failed\" err=\"%s\"",
                 docker_last_error(st->docker));
        if (!strcmp(st->kinds[i], st->sticky.kind))
            st->sticky.kind[0] = '\0';
    } else {
        engine_failed(st, tk.cfg.docker_image);
    }
    pool_remove(st, i, NULL); /* sandbox_discard keeps the cause in docker_last_error */
}

/*
 * Collect what the engine has answered: starts (the container is ready for a job, or
 * failed and goes) and removals. Waits up to wait_ms for the first answer when there is
 * something to wait for.
 */
static void progress(struct exec_state *st, int wait_ms)
{
    struct pollfd pfd[WARM_MAX + REMOVING_MAX];
    int owner[WARM_MAX + REMOVING_MAX], n = 0; /* >= 0: pool entry; < 0: -1 - removal */
    for (int i = 0; i < st->n_pool; i++)
        if (st->pool[i].start_fd >= 0) {
            pfd[n] = (struct pollfd){.fd = st->pool[i].start_fd, .events = POLLIN};
            owner[n++] = i;
        }
    for (int i = 0; i < st->n_removing; i++) {
        pfd[n] = (struct pollfd){.fd = st->removing[i].fd, .events = POLLIN};
        owner[n++] = -1 - i;
    }
    if (n == 0 || poll(pfd, (nfds_t)n, wait_ms) <= 0)
        return;
    /* highest index first: finishing one moves entries above it */
    for (int k = n - 1; k >= 0; k--) {
        if (!pfd[k].revents)
            continue;
        if (owner[k] >= 0)
            start_done(st, owner[k], 1000);
        else
            removal_done(st, -1 - owner[k], 1000);
    }
}

/*
 * The oldest warm container of `kind`, out of the pool, for a job: a started one, else
 * one still starting (waiting for it: it is the soonest a container can be had). 0 or
 * -ENOENT.
 */
static int take_warm(struct exec_state *st, const char *kind, struct warm *out)
{
    for (int i = 0; i < st->n_pool; i++)
        if (!strcmp(st->kinds[i], kind) && st->pool[i].ready) {
            pool_remove(st, i, out);
            return 0;
        }
    for (int i = 0; i < st->n_pool; i++)
        if (!strcmp(st->kinds[i], kind) && st->pool[i].start_fd >= 0) {
            start_done(st, i, START_WAIT_MS);
            return take_warm(st, kind, out); /* it is ready, or gone */
        }
    return -ENOENT;
}

/* The sticky kind's warm containers go (it changed, or STICKY_MS passed unused). A
 * requirements image they kept in use may now be over the cache's bound: prune again. */
static void drop_sticky(struct exec_state *st)
{
    bool dropped = false;
    for (int i = st->n_pool - 1; i >= 0; i--)
        if (st->sticky.kind[0] && !strcmp(st->kinds[i], st->sticky.kind)) {
            pool_remove(st, i, NULL);
            dropped = true;
        }
    if (dropped && !strncmp(st->sticky.image, "tako-req-", 9)) {
        int n = jobtype_prune_requirement_images(st->docker, &tk.cfg);
        if (n > 0)
            log_info("msg=\"removed old requirement images\" count=%d", n);
    }
    st->sticky.kind[0] = '\0';
}

/*
 * What the pool lacks, one container per call, while no job waits: the default type's
 * server.warm_containers first, then one of the sticky kind — until STICKY_MS pass
 * without a job of it, when its container goes. With dry_run, only says whether there
 * is such work.
 */
static bool fill_pool(struct exec_state *st, bool dry_run)
{
    bool expired = st->sticky.kind[0] && now_mono_ms() - st->sticky.used_ms > STICKY_MS;
    bool want_default = pool_count(st, "", false) < tk.cfg.server_warm_containers;
    bool want_sticky = st->sticky.kind[0] && !expired && pool_count(st, st->sticky.kind, false) < 1;
    if (dry_run)
        return expired || want_default || want_sticky;
    if (expired) {
        drop_sticky(st);
        return true;
    }
    int rc = 0;
    if (want_default) {
        rc = prepare_warm(st, NULL, "");
    } else if (want_sticky) {
        struct sandbox_spec spec;
        sandbox_type_spec(&spec, st->sticky.type, st->sticky.image);
        if (prepare_warm(st, &spec, st->sticky.kind) < 0)
            st->sticky.kind[0] = '\0'; /* not again: the next job of it makes its own */
        return true;
    }
    if (rc < 0)
        usleep(200 * 1000);
    return true;
}

/* Live output for GET /jobs/{id}/events: while someone streams the job, each chunk is
 * announced through PostgreSQL (NOTIFY takod_job "out <id> <stream> <base64>"), so any
 * acceptor can relay it. Only the kept head of each stream is sent (the caps bound it). */
struct live_ctx {
    struct exec_state *st;
    struct tk_job *job;
};

static void on_live_output(int stream, const char *data, size_t len, void *arg)
{
    struct live_ctx *lc = arg;
    if (atomic_load(&lc->job->watchers) == 0)
        return; /* nobody streams this job: no traffic */
    char payload[8000];
    int n = snprintf(payload, sizeof payload, "out %s %d ", lc->job->id, stream);
    if (n < 0 || len > 4096)
        return;
    EVP_EncodeBlock((unsigned char *)payload + n, (const unsigned char *)data, (int)len);
    const char *p[1] = {payload};
    PGresult *res = db_exec(lc->st->db, "SELECT pg_notify('takod_job', $1)", 1, p);
    PQclear(res);
}

/* Link the job's files into the warm container's directories: main.py, and everything
 * in input/ (data.json, stdin, extra files). Names were checked when the job came in. */
static int stage_files(const struct tk_job *job, const struct warm *w, bool *has_stdin)
{
    char dir[4096], from[4400], to[4400];
    spool_job_dir(dir, sizeof dir, job->id);
    snprintf(from, sizeof from, "%s/code/main.py", dir);
    snprintf(to, sizeof to, "%s/code/main.py", w->dir);
    int rc = place_file(from, to);
    if (rc < 0)
        return rc;
    snprintf(from, sizeof from, "%s/input", dir);
    DIR *d = opendir(from);
    if (!d)
        return -errno;
    *has_stdin = false;
    struct dirent *de;
    while (rc == 0 && (de = readdir(d)) != NULL) {
        if (de->d_name[0] == '.')
            continue;
        snprintf(from, sizeof from, "%s/input/%s", dir, de->d_name);
        snprintf(to, sizeof to, "%s/input/%s", w->dir, de->d_name);
        rc = place_file(from, to);
        *has_stdin |= !strcmp(de->d_name, "stdin");
    }
    closedir(d);
    return rc;
}

/* The job's runtime requirements (requirements.json in its spool dir): n strings into
 * reqs (the caller frees each), or 0 when it has none. */
static size_t read_requirements(const struct tk_job *job, char **reqs, size_t max)
{
    char dir[4096], path[4200];
    spool_job_dir(dir, sizeof dir, job->id);
    snprintf(path, sizeof path, "%s/requirements.json", dir);
    json_t *a = json_load_file(path, 0, NULL);
    size_t n = 0, i;
    json_t *v;
    json_array_foreach(a, i, v)
    {
        if (n < max && json_string_value(v))
            reqs[n++] = strdup(json_string_value(v));
    }
    json_decref(a);
    return n;
}

/*
 * The container for a job. A job of the default type without requirements takes a warm
 * one from the pool. Any other job takes the warm container of its exact kind (see
 * kind_of) if the pool has one, else gets one made now, for its type (image, limits,
 * network, environment) — after its requirements image is found or built — so that time
 * counts as its startup; that kind then stays warm (fill_pool). Returns 0 with *w set; 1 when the
 * job itself cannot run (err_type and err say why: an unknown type, an image not built,
 * requirements that do not install); or -errno for an infrastructure failure.
 */
static int job_container(struct exec_state *st, struct tk_job *job, struct warm *cold,
                         struct warm **w, int64_t *memory, char *err_type, char *err, size_t errlen)
{
    char version[JOBTYPE_REF_VERSION_MAX + 1], image[128], req_image[128];
    const struct tk_job_type *t = jobtype_lookup(&tk.cfg, job->job_type, version);
    if (!t) {
        snprintf(err_type, 32, "unknown_job_type");
        snprintf(err, errlen, "job type %s is not configured (any more)", job->job_type);
        return 1;
    }
    char *reqs[JOBTYPE_MAX_REQUIREMENTS];
    size_t n = read_requirements(job, reqs, JOBTYPE_MAX_REQUIREMENTS);
    *memory = t->memory_limit;
    if (t == &tk.cfg.job_types[0] && n == 0 && (!version[0] || !strcmp(version, "latest"))) {
        int rc;
        for (;;) {
            uint32_t seen = atomic_load(&tk.shm->slot_word);
            if (!no_slot(rc = ensure_warm(st)) || stop_fast)
                break;
            slot_wait(seen, rc);
        }
        if (rc == 0)
            take_warm(st, "", cold);
        *w = cold;
        return rc;
    }
    jobtype_image(&tk.cfg, t, version, image, sizeof image);
    json_t *info = NULL; /* its id names the container kind: a rebuild is another kind */
    int rc = docker_image_inspect(st->docker, image, &info);
    rc = rc == 0 ? 1 : rc == -ENOENT ? 0 : rc; /* 1 yes, 0 no, <0 the engine's trouble */
    if (rc == 1 && n == 0 && json_string_value(json_object_get(info, "Id")))
        snprintf(image, sizeof image, "%s", json_string_value(json_object_get(info, "Id")));
    json_decref(info);
    if (rc == 0) {
        snprintf(err_type, 32, "image_not_built");
        snprintf(err, errlen,
                 "job type %s has no image %s yet: build it with POST /job-types/%s/build", t->name,
                 image, t->name);
        rc = 1; /* the job's own trouble */
    } else if (rc == 1 && n > 0) {
        uint64_t budget_ms =
            (job->startup_timeout_s ? job->startup_timeout_s : (uint32_t)t->startup_timeout) *
            1000ull;
        uint64_t spent_ms = (now_mono_us() - job->created_mono_us) / 1000;
        bool built = false;
        rc = jobtype_requirements_image(
            st->docker, &tk.cfg, image, (const char *const *)reqs, n,
            (long)(budget_ms > spent_ms + 1000 ? budget_ms - spent_ms : 1000), req_image,
            sizeof req_image, &built, err, errlen);
        if (rc == 0 && built)
            log_info("msg=\"requirements installed\" job=%s image=%s", job->id, req_image);
        if (rc == 0) {
            /* by its id: a requirements image removed and built again under its name is
             * another kind (and, for the OCI backend, another rootfs) */
            json_t *ri = NULL;
            const char *rid = NULL;
            if (docker_image_inspect(st->docker, req_image, &ri) == 0)
                rid = json_string_value(json_object_get(ri, "Id"));
            snprintf(image, sizeof image, "%s", rid ? rid : req_image);
            json_decref(ri);
        } else if (rc != -ECONNREFUSED) {
            snprintf(err_type, 32, "dependency_error");
            rc = 1;
        }
    } else if (rc == 1) {
        rc = 0;
    }
    for (size_t i = 0; i < n; i++)
        free(reqs[i]);
    if (rc != 0)
        return rc; /* 1: the job's own trouble, <0: the engine's */
    struct sandbox_spec spec;
    sandbox_type_spec(&spec, t, image);
    char kind[KIND_MAX];
    kind_of(&spec, kind);
    /* from now on this kind is kept warm (fill_pool), for the next job like this one */
    if (strcmp(st->sticky.kind, kind)) {
        drop_sticky(st);
        snprintf(st->sticky.kind, sizeof st->sticky.kind, "%s", kind);
        snprintf(st->sticky.image, sizeof st->sticky.image, "%s", image);
        st->sticky.type = t;
    }
    st->sticky.used_ms = now_mono_ms();
    *w = cold;
    if (take_warm(st, kind, cold) == 0)
        return 0;
    char dir[4200];
    snprintf(dir, sizeof dir, "%s/e%d-%llx-%u", tk.slots_dir, tk.proc_idx,
             (unsigned long long)st->gen, ++st->seq);
    return sandbox_prepare(st->docker, &st->env, cold, dir, &spec);
}

/*
 * An infrastructure failure before the program ran (no container could be had): put the
 * job back on the dispatch ring after a backoff, if attempts remain. true if it did.
 */
static bool retry_later(struct exec_state *st, struct tk_job *job, uint32_t idx, uint32_t gen)
{
    if (stop_fast || job->attempt > (uint32_t)tk.cfg.server_max_retry_attempts)
        return false;
    metrics_retry(shm_metrics(tk.shm));
    log_warn("msg=\"no container for the job; queueing it again\" job=%s attempt=%u err=\"%s\"",
             job->id, job->attempt, docker_last_error(st->docker));
    struct jobs_db jdb = {.db = st->db};
    jobs_requeue(&jdb, idx, gen, &st->me->intent, 200u * job->attempt); /* backoff */
    return true;
}

static void run_job(struct exec_state *st, uint32_t idx, uint32_t gen)
{
    struct tk_job *job = shm_job(tk.shm, idx);
    struct jobs_db jdb = {.db = st->db};
    struct tk_result r;
    memset(&r, 0, sizeof r);
    r.t_popped_us = now_mono_us();
    uint64_t started_real_us = now_real_us();
    if (jobs_start(&jdb, idx, gen, &st->me->intent) < 0)
        return; /* a stale entry */

    char container[65] = "", err_type[32] = "", err[1536] = "";
    bool has_stdin = false;
    struct warm cold;
    sandbox_warm_init(&cold);
    struct warm *w = &cold; /* the job's container: from the pool, or made for it */
    int64_t memory = tk.cfg.limits_memory;
    int rc = job_container(st, job, &cold, &w, &memory, err_type, err, sizeof err);
    if (rc == 0)
        rc = stage_files(job, w, &has_stdin);
    if ((rc < 0 && !w->ready) && retry_later(st, job, idx, gen)) {
        sandbox_discard(st->docker, &cold);
        return;
    }
    if (rc != 0) {
        capbuf_init(&r.sb.out, 1024);
        capbuf_init(&r.sb.err, 1024);
        r.sb.exit_code = -1;
        r.status = "failed";
        if (rc == 1) { /* the pool's containers stay for the next jobs */
            result_set_error(&r, err_type, "startup", "%s", err);
        } else {
            result_set_error(&r, "docker_error", "startup", "could not prepare the container: %s",
                             w->ready ? strerror(-rc) : docker_last_error(st->docker));
        }
    } else {
        memcpy(container, w->id, sizeof container);
        struct live_ctx live = {st, job};
        memcpy(job->container_id, w->id, sizeof job->container_id);
        struct sandbox_job sj = {
            .timeout_ms = (int)job->timeout_s * 1000,
            .stdout_cap = (size_t)tk.cfg.limits_max_stdout_bytes,
            .stderr_cap = (size_t)tk.cfg.limits_max_stderr_bytes,
            .has_stdin = has_stdin,
            .stop = &stop_fast,
            .cancel = &job->cancel,
            .on_output = on_live_output,
            .output_arg = &live,
        };
        sandbox_run(st->docker, w, &sj, &r.sb);
        atomic_store(&job->finishing, 1); /* from here on a cancel is too late */
        if (r.sb.interrupted && job->acceptor_proc == TK_NO_ACCEPTOR) {
            /* an async job stopped by a fast stop: nobody waits for it, so it is not over —
             * it goes back to queued and runs again after the next start */
            log_info("msg=\"async job interrupted by the stop; it runs again at the next start\" "
                     "job=%s",
                     job->id);
            capbuf_free(&r.sb.out);
            capbuf_free(&r.sb.err);
            jobs_hand_back(&jdb, idx, &st->me->intent);
            sandbox_discard(st->docker, &cold);
            return;
        }
        if (r.sb.not_started) { /* the engine lost the warm container (restart?) */
            sandbox_discard(st->docker, w);
            while (st->n_pool > 0) /* started by the same engine: gone too (and a slot back) */
                pool_remove(st, st->n_pool - 1, NULL);
            capbuf_free(&r.sb.out);
            capbuf_free(&r.sb.err);
            if (retry_later(st, job, idx, gen))
                return;
        }
        char outdir[4200];
        snprintf(outdir, sizeof outdir, "%s/output", w->dir);
        if (outputs_collect(outdir, (size_t)tk.cfg.limits_max_artifact_bytes,
                            (size_t)tk.cfg.limits_max_total_artifact_bytes,
                            (size_t)tk.cfg.limits_max_artifacts, &r.outputs) < 0)
            log_warn("msg=\"collecting outputs failed\" job=%s dir=%s", job->id, outdir);
        result_classify(&r, &tk.cfg, job->timeout_s, memory);
    }
    r.t_done_us = now_mono_us();

    struct job_row row;
    struct result_values v;
    result_row(&r, job->id, job->job_type, job->created_mono_us, &row, &v);
    char ended_s[32], started_s[32];
    snprintf(ended_s, sizeof ended_s, "%llu", (unsigned long long)now_real_us());
    snprintf(started_s, sizeof started_s, "%llu", (unsigned long long)started_real_us);
    row.container_id = container[0] ? container : NULL;
    row.ended_at = ended_s;
    row.started_at = started_s;
    double queue_ms = json_real_value(json_object_get(v.timing, "queue_ms")),
           startup_ms = json_real_value(json_object_get(v.timing, "startup_ms")),
           exec_ms = json_real_value(json_object_get(v.timing, "execution_ms")),
           total_ms = json_real_value(json_object_get(v.timing, "total_ms"));
    log_info("msg=\"job finished\" job=%s status=%s exit=%d queue_ms=%.1f startup_ms=%.1f "
             "exec_ms=%.1f total_ms=%.1f",
             job->id, r.status, r.exit_code, queue_ms, startup_ms, exec_ms, total_ms);
    metrics_job(shm_metrics(tk.shm), r.status, r.error_type, queue_ms, startup_ms, exec_ms,
                total_ms);
    atomic_fetch_add(&st->me->jobs, 1);
    jobs_finish(&jdb, idx, gen, &row, &r.outputs, &st->me->intent);
    result_values_free(&v);

    /* After the reply is on its way: this container goes. The pool is refilled by the main
     * loop while no job waits; only an empty pool is refilled here, before the next job
     * (if a start slot is free; else the main loop waits for one). */
    retire(st, w);
    capbuf_free(&r.sb.out);
    capbuf_free(&r.sb.err);
    outputs_free(&r.outputs);
    if (!stop_fast && !stop_graceful)
        ensure_warm(st);
}

int executor_main(int slot)
{
    struct exec_state st = {.env = {.cfg = &tk.cfg,
                                    .instance = tk.instance,
                                    .quarantine_dir = tk.quarantine_dir,
                                    .rootfs_dir = tk.rootfs_dir},
                            .slot = slot,
                            .me = shm_proc(tk.shm, (uint32_t)tk.proc_idx),
                            .gen = now_real_us()};
    for (int i = 0; i < WARM_MAX; i++)
        sandbox_warm_init(&st.pool[i]);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal; /* no SA_RESTART: blocking calls return EINTR */
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGQUIT, &sa, NULL);
    sigaction(SIGUSR1, &sa, NULL);
    sa.sa_handler = on_answer;
    sigaction(SIGIO, &sa, NULL);
    sigset_t answers;
    sigemptyset(&answers);
    sigaddset(&answers, SIGIO);
    sigprocmask(SIG_BLOCK, &answers, NULL);

    int rc = docker_open(&st.docker, tk.cfg.docker_socket);
    if (rc < 0) {
        log_error("msg=\"docker_open failed\" socket=%s err=\"%s\"", tk.cfg.docker_socket,
                  docker_last_error(NULL));
        atomic_store(&tk.shm->docker_ok, 0);
        return 1; /* infrastructure: the master respawns with backoff */
    }
    char err[512];
    if (db_open(&st.db, tk.conninfo, err, sizeof err) < 0) {
        log_error("msg=\"database connect failed\" err=\"%s\"", err);
        docker_close(st.docker);
        return 1;
    }
    /* Ready means: the engine takes our containers. Retry while it refuses. */
    int backoff_ms = 100;
    uint32_t seen = atomic_load(&tk.shm->slot_word);
    while (
        !stop_fast && !stop_graceful &&
        ((rc = ensure_warm(&st)) < 0 || (progress(&st, 1000), pool_count(&st, "", false) == 0))) {
        if (no_slot(rc)) { /* the other executors' first starts come first */
            slot_wait(seen, rc);
            seen = atomic_load(&tk.shm->slot_word);
            continue;
        }
        usleep((useconds_t)backoff_ms * 1000);
        backoff_ms = backoff_ms * 2 > 5000 ? 5000 : backoff_ms * 2;
    }
    atomic_store(&st.me->ready, 1);
    log_info("msg=\"executor ready\" slot=%d backend=%s docker_api=%s runtime=%s", slot,
             sandbox_backend_name(), docker_api_version(st.docker), tk.shm->runtime);
    while (!stop_fast && !stop_graceful) {
        atomic_store(&st.me->heartbeat_ms, now_mono_ms());
        if (reopen_logs) {
            reopen_logs = 0;
            log_reopen();
        }
        /* sampled before looking: whatever changes after the look ends the sleep */
        uint32_t seen_ring = ring_seq(shm_dispatch(tk.shm));
        seen = atomic_load(&tk.shm->slot_word);
        progress(&st, 0);
        if ((rc = ensure_warm(&st)) < 0) {
            /* no container, and no start slot (wait for one) or the engine is failing:
             * no job for us meanwhile */
            if (no_slot(rc))
                slot_wait(seen, rc);
            else
                usleep(500 * 1000);
            continue;
        }
        if (pool_count(&st, "", true) == 0) {
            /* only starting: no job for us until it is started — another executor with a
             * started container takes it meanwhile */
            progress(&st, 250);
            continue;
        }
        /* Jobs come before containers: the pool is topped up only when no job waits, one
         * start at a time and with a start slot. A start's answer (SIGIO) and a slot given
         * back (a kick) end the wait; removals' answers are taken on the next wake. */
        bool busy = n_starting(&st) > 0;
        bool fill = !busy && fill_pool(&st, true);
        int claim = fill ? slot_claim(&st) : 0;
        fill = fill && claim == 0;
        uint64_t v;
        if (ring_pop_wait_from(shm_dispatch(tk.shm), &st.me->intent, &v,
                               fill                    ? 0
                               : claim < 0             ? slot_wait_ms(claim)
                               : busy || st.n_removing ? ANSWER_WAIT_MS
                                                       : 500,
                               &answers, seen_ring) != 0) {
            if (fill) {
                fill_pool(&st, false);
                slot_sync(&st); /* claimed for nothing (a kind dropped, a failure) */
                continue;
            }
            continue;
        }
        slot_sync(&st); /* a slot claimed for a fill that did not begin goes back */
        run_job(&st, shm_val_idx(v), shm_val_gen(v));
    }
    log_info("msg=\"executor stopping\" slot=%d", slot);
    while (st.n_removing > 0)
        removal_done(&st, 0, 10000);
    for (int i = 0; i < st.n_pool; i++)
        sandbox_discard(st.docker, &st.pool[i]);
    db_close(st.db);
    docker_close(st.docker);
    return TK_EXIT_OK;
}
