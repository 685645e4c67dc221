/* SPDX-License-Identifier: MIT */
/*
 * index_batch_policy.c: when concurrent exact searches share a scan
 * (issue 11 item 3).
 *
 * Sharing a scan (vindex.c, search_coalesced) saves memory bandwidth: one
 * pass over the rows serves every query of the batch. But it also makes the
 * batch's searches wait for the scan before them and runs them on one core.
 * Measured on 2 cores over 100k x 512 (bench_index --concurrency): always
 * sharing won at 16 clients (1,684 vs 1,047 q/s) and lost at 4 (985 vs
 * 1,202), where two independent scans used both cores. So the policy is by
 * queue depth: while fewer scans run than there are cores, a search starts
 * its own scan at once (exactly the "never" path); once every core scans, a
 * new search queues and the next scan to end takes the whole queue as one
 * batch. Below the core count it is "never"; above it, batches form only
 * from searches that would otherwise have waited for a core anyway.
 */
#include "index_int.h"

#include <pthread.h>
#include <unistd.h>

int index__batch_max_runners = 0;

static int cores;
static pthread_once_t cores_once = PTHREAD_ONCE_INIT;

static void read_cores(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    cores = n < 1 ? 1 : n > 1024 ? 1024 : (int)n;
}

int index__batch_runners(void)
{
    if (index__batch_enabled == 1)
        return 1;
    if (index__batch_max_runners > 0)
        return index__batch_max_runners;
    pthread_once(&cores_once, read_cores);
    return cores;
}
