/*
 * config.h — takod's configuration: one declarative table.
 *
 * Every key of tako.conf is one row of TK_CONFIG_TABLE below. Parsing, validation,
 * `takod -t` printing, `-o section.key=value` overrides and (later) reload diffing all
 * derive from the table, so adding a key is adding a row.
 *
 * Row: X(section, key, type, default, min, max, flags, help)
 *   type     STR | INT | SIZE | DOUBLE | BOOL | ENUM
 *            INT    int64_t, plain integer
 *            SIZE   int64_t bytes; the file may say 512, 64k, 512m, 2g (powers of 1024)
 *            DOUBLE double
 *            BOOL   bool; true/false, yes/no, on/off, 1/0
 *            ENUM   int index into the '|'-separated list given as `min` (a string)
 *            STR    char * (heap, owned by the struct)
 *   default  always a string, parsed like a value from the file
 *   min,max  bounds for INT/SIZE/DOUBLE (inclusive); for ENUM `min` is the choice list
 *   flags    CF_RELOAD (a HUP may change it) or CF_NORELOAD (shapes shm or sockets:
 *            needs a restart)
 *
 * The generated struct field for section `s`, key `k` is `s_k` (e.g. cfg->server_listen).
 */
#ifndef TAKO_CONFIG_H
#define TAKO_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define CF_RELOAD   0u
#define CF_NORELOAD 1u

/* clang-format off */
#define TK_CONFIG_TABLE(X) \
    X(server, listen, STR, "127.0.0.1:8000", 0, 0, CF_NORELOAD, \
      "address:port the HTTP API listens on (IPv4 or [IPv6])") \
    X(server, acceptors, INT, "2", 1, 64, CF_NORELOAD, \
      "HTTP acceptor processes") \
    X(server, executors, INT, "4", 1, 256, CF_NORELOAD, \
      "executor processes: jobs that run at the same time") \
    X(server, warm_containers, INT, "2", 1, 16, CF_RELOAD, \
      "containers each executor keeps started ahead of time. Jobs take them first; an " \
      "executor starts new ones only while no job waits, so a burst of up to executors x " \
      "this many jobs never waits for a container start") \
    X(server, container_starts, INT, "0", 0, 256, CF_RELOAD, \
      "containers being created and started at once, over all executors (0: one per CPU " \
      "online). A start is mostly the engine's CPU work: more at once only slow each other " \
      "down, and starts that end together leave gaps when none ends") \
    X(server, queue_size, INT, "1024", 8, 65536, CF_NORELOAD, \
      "jobs admitted at once (queued + running); more get 503. Rounded up to a power of 2") \
    X(server, data_dir, STR, "/var/lib/takod", 0, 0, CF_NORELOAD, \
      "state directory: job spool, managed PostgreSQL, pidfile") \
    X(server, spool_dir, STR, "", 0, 0, CF_NORELOAD, \
      "where jobs' files and the containers' bind-mounted directories live (nothing " \
      "durable: PostgreSQL has the record); empty means a private directory on /dev/shm " \
      "when it is a tmpfs, else <data_dir>") \
    X(server, pidfile, STR, "", 0, 0, CF_NORELOAD, \
      "pidfile path; empty means <data_dir>/takod.pid") \
    X(server, log_level, ENUM, "info", "debug|info|warn|error", 0, CF_RELOAD, \
      "lowest level logged") \
    X(server, log_file, STR, "", 0, 0, CF_RELOAD, \
      "log file; empty means standard error") \
    X(server, shutdown_timeout, INT, "30", 1, 3600, CF_RELOAD, \
      "seconds a graceful stop (QUIT) waits for running jobs") \
    X(server, max_retry_attempts, INT, "2", 0, 10, CF_RELOAD, \
      "times a job is run again after an infrastructure failure (its executor died)") \
    X(server, request_timeout, INT, "30", 1, 3600, CF_RELOAD, \
      "seconds a client may take to send one whole request, headers and body (slowloris bound)") \
    X(server, keepalive_timeout, INT, "5", 1, 3600, CF_RELOAD, \
      "seconds a connection may stay silent: idle between requests, or stalled mid-request or mid-reply") \
    X(server, max_connections, INT, "1024", 1, 1000000, CF_RELOAD, \
      "open client connections over all acceptors; more are answered 503 and closed") \
    X(server, node_id, STR, "", 0, 0, CF_NORELOAD, \
      "this node's name on its job records and in the nodes table (GET /nodes); empty " \
      "means <hostname>:<data_dir>. Unique among the nodes sharing one database") \
    X(server, max_connections_per_client, INT, "64", 1, 1000000, CF_RELOAD, \
      "open connections from one client address, over all acceptors; more get 503") \
    X(database, execution_record_ttl_days, INT, "30", 0, 36500, CF_RELOAD, \
      "job records older than this many days are deleted (0 keeps them forever)") \
    X(database, url, STR, "", 0, 0, CF_NORELOAD, \
      "libpq connection string; empty means takod runs its own PostgreSQL in <data_dir>/pg") \
    X(database, managed_user, STR, "postgres", 0, 0, CF_NORELOAD, \
      "unprivileged user the managed PostgreSQL runs as when takod runs as root") \
    X(database, pg_bindir, STR, "", 0, 0, CF_NORELOAD, \
      "directory with initdb and postgres; empty means the newest /usr/lib/postgresql/N/bin") \
    X(docker, socket, STR, "/var/run/docker.sock", 0, 0, CF_NORELOAD, \
      "Docker Engine API unix socket") \
    X(docker, image, STR, "code-executor:latest", 0, 0, CF_RELOAD, \
      "executor image for the default job type") \
    X(docker, runtime, ENUM, "auto", "runc|runsc|crun|auto", 0, CF_NORELOAD, \
      "container runtime: runc; crun (the same isolation, 10-30 ms less CPU per container); " \
      "runsc (gVisor: a user-space kernel between job and host); auto: crun when the " \
      "engine has it and a probe container runs under it, else runc") \
    X(docker, security_mode, ENUM, "permissive", "permissive|strict", 0, CF_NORELOAD, \
      "strict: refuse to start unless runtime = runsc is available; permissive: fall back " \
      "to runc with a warning") \
    X(docker, seccomp_profile, STR, "", 0, 0, CF_NORELOAD, \
      "seccomp profile (JSON) for every container; empty means the built-in default-deny " \
      "profile (conf/seccomp.json)") \
    X(docker, user, STR, "1000:1000", 0, 0, CF_RELOAD, \
      "uid:gid the job's program runs as inside the container (never root)") \
    X(executor, backend, ENUM, "auto", "auto|docker|oci", 0, CF_NORELOAD, \
      "how job containers are made: docker (the engine creates and starts each one); oci " \
      "(straight through crun, or runsc with docker.runtime = runsc, from an OCI bundle on " \
      "the image's unpacked rootfs: no engine on the job's path; needs root); auto: oci " \
      "when its probe container runs, else docker") \
    X(executor, rootfs_dir, STR, "", 0, 0, CF_NORELOAD, \
      "where the OCI backend keeps each image's unpacked read-only rootfs (one per image " \
      "id; several instances may share it); empty means <data_dir>/rootfs") \
    X(auth, api_keys, STR, "", 0, 0, CF_RELOAD, \
      "API keys, comma-separated, each at least 16 characters; empty means no authentication " \
      "(then takod listens on loopback only unless allow_unauthenticated_network_access)") \
    X(auth, admin_key, STR, "", 0, 0, CF_RELOAD, \
      "a key (at least 16 characters) that sees and manages every key's jobs") \
    X(auth, allow_unauthenticated_network_access, BOOL, "false", 0, 0, CF_NORELOAD, \
      "let takod listen on a non-loopback address without API keys") \
    X(auth, metrics_public, BOOL, "false", 0, 0, CF_RELOAD, \
      "serve GET /metrics without a key (GET /health is always open)") \
    X(auth, rate_limit_per_minute, INT, "6000", 0, 1000000, CF_RELOAD, \
      "requests per minute per key (per client IP without a key), shared by all acceptors; " \
      "0 turns the limit off") \
    X(auth, rate_limit_burst, INT, "200", 1, 1000000, CF_RELOAD, \
      "requests a key may send at once before the per-minute rate applies") \
    X(auth, max_concurrent_jobs, INT, "0", 0, 65536, CF_RELOAD, \
      "jobs one key may have running at once (0: no quota)") \
    X(auth, max_queued_jobs, INT, "0", 0, 65536, CF_RELOAD, \
      "jobs one key may have waiting at once (0: no quota)") \
    X(limits, timeout, INT, "30", 1, 86400, CF_RELOAD, \
      "default execution timeout, seconds") \
    X(limits, max_timeout, INT, "300", 1, 86400, CF_RELOAD, \
      "largest timeout a request may ask for, seconds") \
    X(limits, memory, SIZE, "512m", 6291456, 1099511627776, CF_RELOAD, \
      "container memory limit (swap is not allowed: memory+swap = memory)") \
    X(limits, cpus, DOUBLE, "1.0", 0.01, 256, CF_RELOAD, \
      "CPUs a container may use") \
    X(limits, pids, INT, "100", 8, 100000, CF_RELOAD, \
      "processes and threads a container may have") \
    X(limits, tmpfs_size, SIZE, "64m", 1048576, 17179869184, CF_RELOAD, \
      "size of the container's /tmp (tmpfs, noexec)") \
    X(limits, workspace_size, SIZE, "128m", 1048576, 17179869184, CF_RELOAD, \
      "size of a job's own tmpfs holding its /code, /input and /output (takod as root)") \
    X(limits, workspace_inodes, INT, "100000", 64, 10000000, CF_RELOAD, \
      "files and directories a job's /code, /input and /output may hold together") \
    X(limits, max_stdout_bytes, SIZE, "64k", 1024, 67108864, CF_RELOAD, \
      "stdout kept per job (head); the rest is dropped and flagged") \
    X(limits, max_stderr_bytes, SIZE, "64k", 1024, 67108864, CF_RELOAD, \
      "stderr kept per job (head); the rest is dropped and flagged") \
    X(limits, max_code_bytes, SIZE, "100000", 1, 16777216, CF_RELOAD, \
      "largest `code` accepted") \
    X(limits, max_input_bytes, SIZE, "1m", 2, 67108864, CF_RELOAD, \
      "largest `input_data` accepted (as JSON text)") \
    X(limits, max_payload_bytes, SIZE, "2m", 1024, 134217728, CF_RELOAD, \
      "largest request body; larger gets 413 before the body is read") \
    X(limits, max_page_bytes, SIZE, "16m", 65536, 1073741824, CF_RELOAD, \
      "bytes of stdout, stderr, output and artifact lists one GET /executions page carries") \
    X(limits, max_artifact_bytes, SIZE, "10m", 0, 1073741824, CF_RELOAD, \
      "largest single artifact kept from /output") \
    X(limits, max_total_artifact_bytes, SIZE, "50m", 0, 4294967296, CF_RELOAD, \
      "largest total of artifacts kept per job") \
    X(limits, max_artifacts, INT, "1000", 0, 10000, CF_RELOAD, \
      "most artifacts (files in /output) kept per job; the rest are skipped and reported") \
    X(environments, allow_runtime_requirements, BOOL, "false", 0, 0, CF_RELOAD, \
      "let a request name `requirements` (pip packages) to install before its job runs; " \
      "each distinct set is installed once into a cached image (docs/ENVIRONMENTS.md)") \
    X(environments, pip_index_url, STR, "", 0, 0, CF_RELOAD, \
      "package index pip installs requirements from (e.g. a local devpi); empty: none") \
    X(environments, wheelhouse, STR, "", 0, 0, CF_RELOAD, \
      "local directory of wheels pip installs requirements from (no index is asked); " \
      "without this and pip_index_url, job types' requirements map to Debian python3-* " \
      "packages and runtime requirements cannot be installed") \
    X(environments, max_requirement_images, INT, "20", 1, 100000, CF_RELOAD, \
      "cached runtime requirement images kept; a new one beyond it removes the oldest " \
      "(a later job with that set installs it again)") \
    X(environments, build_timeout, INT, "1800", 10, 86400, CF_RELOAD, \
      "seconds one job type image build (POST /job-types/NAME/build) may take") \
    X(callbacks, allow_private_addresses, BOOL, "false", 0, 0, CF_RELOAD, \
      "let callback_url reach loopback, link-local, private (RFC 1918, unique-local), " \
      "multicast and other non-global addresses; refused by default, at submit time for " \
      "literal addresses and localhost, and at connect time for every resolved address") \
    X(callbacks, connect_timeout_ms, INT, "2000", 100, 60000, CF_RELOAD, \
      "milliseconds one delivery attempt may take to connect to the receiver") \
    X(callbacks, timeout_ms, INT, "10000", 100, 300000, CF_RELOAD, \
      "milliseconds one delivery attempt may take in all (connect, send, answer)") \
    X(callbacks, max_attempts, INT, "5", 1, 20, CF_RELOAD, \
      "delivery attempts of one callback before it is recorded failed") \
    X(callbacks, backoff_ms, INT, "1000", 10, 3600000, CF_RELOAD, \
      "wait before the second attempt; it doubles for each further one (at most 1 hour)") \
    X(callbacks, max_in_flight, INT, "64", 1, 4096, CF_RELOAD, \
      "deliveries the callbacks process has in flight at once") \
    X(cluster, enabled, BOOL, "false", 0, 0, CF_NORELOAD, \
      "several nodes on one PostgreSQL (database.url): an async job this node has no free " \
      "executor for waits in PostgreSQL and any node's idle executor claims it; leases, " \
      "takeover of a dead node's jobs, cluster-wide quotas (docs/OPERATIONS.md)") \
    X(cluster, lease, INT, "10", 2, 3600, CF_NORELOAD, \
      "seconds a node's hold on a job lasts unless renewed (every lease/3); a job whose " \
      "lease ran out (its node died or was cut off) is run again by another node") \
    X(cluster, address, STR, "", 0, 0, CF_NORELOAD, \
      "how clients and operators reach this node, shown in GET /nodes; empty means " \
      "http://<server.listen>") \
    X(sessions, max_total, INT, "16", 0, 4096, CF_NORELOAD, \
      "live sessions (stateful interpreters, docs/SESSIONS.md) this server holds at once; " \
      "0 turns sessions off") \
    X(sessions, max_per_key, INT, "4", 1, 4096, CF_NORELOAD, \
      "live sessions one API key may hold at once") \
    X(sessions, idle_timeout, INT, "600", 1, 604800, CF_NORELOAD, \
      "default idle timeout of a session, seconds: no cell and no file call for this long " \
      "ends it") \
    X(sessions, max_lifetime, INT, "3600", 1, 604800, CF_NORELOAD, \
      "default and largest lifetime of a session, seconds (and the largest idle timeout)") \
    X(sessions, max_file_bytes, SIZE, "32m", 1, 1073741824, CF_NORELOAD, \
      "largest file one upload may put in a session's workspace (and what an acceptor " \
      "buffers of such a request)")
/* clang-format on */

/*
 * [job_type.NAME] sections: the environments jobs choose with `job_type`. One row per key,
 * X(key, type, default, min, max, help), with the types of TK_CONFIG_TABLE. The defaults
 * are those of a new section; the built-in types (Tako VM's) start from their own values
 * (config.c), and a section with a built-in's name changes only the keys it sets.
 * `default` is not a section: it is docker.image with the [limits].
 */
/* clang-format off */
#define TK_JOB_TYPE_TABLE(X) \
    X(requirements, STR, "", 0, 0, \
      "pip package names (a PEP 508 subset), comma-separated: installed with pip from " \
      "[environments] pip_index_url or wheelhouse; without either, each maps to Debian's " \
      "python3-NAME package") \
    X(packages, STR, "", 0, 0, \
      "Debian packages installed into the image, comma-separated") \
    X(base_image, STR, "", 0, 0, \
      "image the job type is built on; empty means docker.image") \
    X(environment, STR, "", 0, 0, \
      "environment variables of its jobs, KEY=VALUE, comma-separated") \
    X(preload, STR, "", 0, 0, \
      "Python modules its warm containers import before a job arrives, comma-separated " \
      "(e.g. pandas: about 450 ms a job does not wait for)") \
    X(memory_limit, SIZE, "512m", 6291456, 1099511627776, \
      "container memory limit (memory+swap = memory)") \
    X(cpu_limit, DOUBLE, "1.0", 0.01, 256, \
      "CPUs a container may use (capped at the machine's)") \
    X(timeout, INT, "30", 1, 86400, \
      "default execution timeout of its jobs, seconds (at most limits.max_timeout)") \
    X(startup_timeout, INT, "60", 1, 3600, \
      "seconds a job may wait for its container, runtime requirement install included") \
    X(network_enabled, BOOL, "false", 0, 0, \
      "give its containers a network (bridge); off means no network at all")
/* clang-format on */

#define TK_CF_CTYPE_STR    char *
#define TK_CF_CTYPE_INT    int64_t
#define TK_CF_CTYPE_SIZE   int64_t
#define TK_CF_CTYPE_DOUBLE double
#define TK_CF_CTYPE_BOOL   bool
#define TK_CF_CTYPE_ENUM   int

/* docker.runtime's and docker.security_mode's values, in their choices' order */
enum { TK_RUNTIME_RUNC, TK_RUNTIME_RUNSC, TK_RUNTIME_CRUN, TK_RUNTIME_AUTO };
enum { TK_SECURITY_PERMISSIVE, TK_SECURITY_STRICT };
/* executor.backend's values */
enum { TK_BACKEND_AUTO, TK_BACKEND_DOCKER, TK_BACKEND_OCI };

#define TK_JOB_TYPE_NAME_MAX 40 /* [a-z0-9][a-z0-9_-]*: also a Docker repository name */
#define TK_MAX_JOB_TYPES     32

struct tk_job_type {
    char name[TK_JOB_TYPE_NAME_MAX + 1];
#define TK_JT_FIELD(key, type, def, min, max, help) TK_CF_CTYPE_##type key;
    TK_JOB_TYPE_TABLE(TK_JT_FIELD)
#undef TK_JT_FIELD
    bool builtin; /* Tako VM's: default, data-processing, ml-inference */
};

struct tk_config {
#define TK_CF_FIELD(sec, key, type, def, min, max, flags, help) TK_CF_CTYPE_##type sec##_##key;
    TK_CONFIG_TABLE(TK_CF_FIELD)
#undef TK_CF_FIELD
    /* Derived after validation (not keys): */
    char listen_host[256]; /* without brackets */
    int listen_port;
    char *pidfile_path; /* server.pidfile or <data_dir>/takod.pid */
    /* job types: [0] is always `default` (docker.image, [limits]), then the other
     * built-ins, then the file's sections in order */
    struct tk_job_type job_types[TK_MAX_JOB_TYPES];
    size_t n_job_types;
};

/* The job type called `name` (no @version), or NULL. */
const struct tk_job_type *config_job_type(const struct tk_config *cfg, const char *name);

enum tk_log_level_idx { TK_LEVEL_DEBUG = 0, TK_LEVEL_INFO, TK_LEVEL_WARN, TK_LEVEL_ERROR };

/* Fill every field with its table default (strings are heap copies). */
void config_defaults(struct tk_config *cfg);

/*
 * Load `path` over the defaults, then apply `overrides` ("section.key=value", n of them),
 * then validate cross-key rules. A NULL path means defaults + overrides only.
 * Returns 0, or -EINVAL / -errno with a one-line reason in `err` of the form
 * "FILE:LINE: reason" (or "-o section.key: reason" for an override). On error `cfg` is
 * left freed and zeroed.
 */
int config_load(struct tk_config *cfg, const char *path, char *const *overrides, size_t n,
                char *err, size_t errlen);

/* Release the heap strings. Safe on a zeroed struct. */
void config_free(struct tk_config *cfg);

/* Deep copy. 0 or -ENOMEM. */
int config_copy(struct tk_config *dst, const struct tk_config *src);

/* Print the effective configuration as a valid tako.conf (with help and reload comments). */
void config_print(const struct tk_config *cfg, FILE *out);

/*
 * Keys whose value differs between `a` and `b` and that cannot change on reload: their
 * "section.key" names, comma-separated, into buf. Returns how many.
 */
int config_diff_noreload(const struct tk_config *a, const struct tk_config *b, char *buf,
                         size_t len);

/* For a reload: put back into `dst` the old values of every key that needs a restart
 * (so a HUP applies what it can and keeps the rest). 0 or -ENOMEM. */
int config_keep_noreload(struct tk_config *dst, const struct tk_config *old);

/* The name of choice `idx` of the ENUM key `name` ("docker.runtime"), into buf; NULL if
 * there is no such key or choice. */
const char *config_enum_name(const char *name, int idx, char *buf, size_t len);

/* Name of a server.log_level value, e.g. config_log_level_name(1) -> "info"; else "unknown". */
const char *config_log_level_name(int idx);

#endif
