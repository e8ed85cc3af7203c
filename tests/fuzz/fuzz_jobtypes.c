/*
 * fuzz_jobtypes — the job-type and requirements grammar (common/jobtypes.c): a job's
 * `job_type` reference (NAME[@VERSION]), its runtime `requirements` strings, and a job
 * type's lists as a config file gives them (requirements, packages, environment, preload,
 * base_image), then the Dockerfile generated from a type that passed the checks.
 * Input: fields separated by '\n' in that order: ref, requirements, packages,
 * environment, preload, base_image.
 */
#include "tako/config.h"
#include "tako/jobtypes.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct tk_config cfg;

static int each_requirement(const char *s, size_t len, void *arg)
{
    (void)jobtype_requirement_ok(s, len);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static int ready;
    if (!ready) {
        config_defaults(&cfg);
        ready = 1;
    }
    char *text = malloc(size + 1);
    if (!text)
        return 0;
    memcpy(text, data, size);
    text[size] = '\0';
    char *field[6] = {0};
    char *p = text;
    for (int i = 0; i < 6 && p; i++) {
        field[i] = p;
        p = strchr(p, '\n');
        if (p)
            *p++ = '\0';
    }
    char name[TK_JOB_TYPE_NAME_MAX + 1], version[JOBTYPE_REF_VERSION_MAX + 1];
    if (jobtype_parse_ref(field[0], name, version) == 0) {
        if (strlen(name) > TK_JOB_TYPE_NAME_MAX || strlen(version) > JOBTYPE_REF_VERSION_MAX)
            __builtin_trap();
        (void)jobtype_lookup(&cfg, field[0], NULL);
    }
    (void)jobtype_tag_ok(field[0]);
    /* the bytes of one requirement, NULs and all, as a JSON string may carry them */
    (void)jobtype_requirement_ok((const char *)data, size);
    if (field[1])
        jobtype_each(field[1], each_requirement, NULL);

    struct tk_job_type t = {.timeout = 30};
    snprintf(t.name, sizeof t.name, "fuzz");
    t.requirements = field[1];
    t.packages = field[2];
    t.environment = field[3];
    t.preload = field[4];
    t.base_image = field[5];
    char why[256];
    if (jobtype_check(&t, why, sizeof why) == 0) {
        char *df = jobtype_dockerfile(&cfg, &t);
        free(df);
    }
    free(text);
    return 0;
}
