/*
 * sweeper.c — the sweeper process ("takod: sweeper 0"): the master's engine work, so the
 * master's loop never waits on dockerd. The master supervises it like any child.
 *
 *   - removes the containers of this instance whose executor is not alive: when the
 *     master bumps the sweep word (an executor died: its warm containers and the one of
 *     the job it ran go now, and again 3 s later, for a create the engine finished after
 *     its caller died), and every 60 s for anything else that leaked
 *     (recovery_sweep_containers);
 *   - every 10 s, looks which job types have a latest image, into shm for GET /job-types;
 *   - every 10 s, with the OCI backend, prunes its rootfs store: an image replaced under
 *     its tag or removed loses its unpacked copy, unless a container of ours runs it.
 * Each engine call is bounded (docker.c's timeouts): a hung engine delays only this
 * process; the executors notice it themselves (the circuit breaker, shm docker_ok).
 */
#include "tako/bgchild.h"
#include "tako/docker.h"
#include "tako/jobtypes.h"
#include "tako/log.h"
#include "tako/recovery.h"
#include "tako/sandbox.h"
#include "tako/sandbox_oci.h"
#include "tako/takod.h"
#include "tako/util.h"

#include <signal.h>
#include <stdio.h>
#include <string.h>

#define WAIT_MS   250 /* the longest sleep on the sweep word */
#define AGAIN_MS  3000
#define SWEEP_MS  60000
#define IMAGES_MS 10000

/* Which job types have a latest image, into shm for GET /job-types. */
static void refresh_job_type_images(void)
{
    struct docker *d = NULL;
    if (docker_open(&d, tk.cfg.docker_socket) < 0)
        return; /* the engine is down: keep what we knew */
    size_t n = tk.cfg.n_job_types;
    for (size_t i = 0; i < n && !bgchild_stop; i++) {
        char image[128];
        jobtype_image(&tk.cfg, &tk.cfg.job_types[i], "latest", image, sizeof image);
        int rc = docker_image_exists(d, image);
        if (rc < 0)
            break;
        snprintf(tk.shm->jt_images[i].name, sizeof tk.shm->jt_images[i].name, "%s",
                 tk.cfg.job_types[i].name);
        atomic_store(&tk.shm->jt_images[i].exists, (uint32_t)rc);
    }
    for (size_t i = n; i < TK_MAX_JOB_TYPES; i++)
        tk.shm->jt_images[i].name[0] = '\0';
    docker_close(d);
}

/* The OCI backend's rootfs store: those of images replaced (a rebuild under the same tag)
 * or removed go, except what this instance's containers run. */
static void prune_rootfs(void)
{
    struct docker *d = NULL;
    if (docker_open(&d, tk.cfg.docker_socket) < 0)
        return;
    oci_prune_rootfs(d, tk.rootfs_dir, tk.slots_dir);
    docker_close(d);
}

int sweeper_main(int slot)
{
    bgchild_signals(NULL);
    struct tk_proc *me = shm_proc(tk.shm, (uint32_t)tk.proc_idx);
    atomic_store(&me->ready, 1);
    log_info("msg=\"sweeper ready\" slot=%d", slot);
    /* The master removed every container at start; a respawned sweeper may have missed
     * an ask: sweep at once unless none was ever made. */
    uint32_t seen = 0;
    uint64_t again = 0, next_sweep = now_mono_ms() + SWEEP_MS, next_images = 0,
             next_prune = now_mono_ms() + IMAGES_MS;
    while (!bgchild_stop) {
        bgchild_round(me);
        uint64_t now = now_mono_ms();
        uint32_t word = atomic_load(&tk.shm->sweep_word);
        bool asked = word != seen;
        seen = word;
        if (asked || (again && now >= again) || now >= next_sweep) {
            recovery_sweep_containers();
            again = asked ? now_mono_ms() + AGAIN_MS : 0;
            if (now >= next_sweep)
                next_sweep = now + SWEEP_MS;
        }
        if (!bgchild_stop && now >= next_images) {
            refresh_job_type_images();
            next_images = now + IMAGES_MS;
        }
        if (!bgchild_stop && sandbox_backend == SANDBOX_OCI && now >= next_prune) {
            prune_rootfs();
            next_prune = now + IMAGES_MS;
        }
        futex_word_wait(&tk.shm->sweep_word, word, WAIT_MS);
    }
    log_info("msg=\"sweeper stopping\" slot=%d", slot);
    return TK_EXIT_OK;
}
