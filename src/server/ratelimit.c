/* SPDX-License-Identifier: MIT */
/*
 * ratelimit.c: per-client token buckets for the server's rate limit.
 *
 * Each client address owns a bucket of `burst` tokens refilled at `rate`
 * tokens per second; a request takes one token or is refused with the time
 * until the next token (Retry-After). The buckets live in a fixed table of
 * SERVER_RL_SLOTS slots with open addressing over a short probe window, so
 * memory stays bounded whatever the number of clients.
 *
 * Eviction must not be a way to reset a bucket: if a new client could take
 * over the slot of the least recently seen one, a flood of fresh addresses
 * (cheap with IPv6, or with a spoofable header) would push every real
 * client out and hand it a full bucket again. So a newcomer takes only a
 * free slot, or the slot of a client whose bucket has refilled to `burst`
 * (that client would start again full anyway: forgetting it changes
 * nothing). When its whole window holds clients still paying for their
 * requests, the newcomer is charged to one shared overflow bucket: a flood
 * then throttles itself and nobody else. Keys are per IPv4 address or per
 * IPv6 /64 (guard.c). One mutex guards the table: the critical section is
 * a hash probe and a few float operations.
 */
#include "server_int.h"

#include <math.h>
#include <string.h>

#define RL_PROBE 8

enum ims_status server__rl_init(struct server_rl *rl, double rate, double burst)
{
    rl->rate = rate;
    rl->burst = burst < 1.0 ? 1.0 : burst;
    rl->slots = NULL;
    memset(&rl->overflow, 0, sizeof(rl->overflow));
    rl->overflow.tokens = rl->burst;
    atomic_init(&rl->n_overflow, 0);
    if (rate <= 0.0)
        return IMS_OK;
    rl->slots = ims_calloc(SERVER_RL_SLOTS, sizeof(*rl->slots));
    if (!rl->slots)
        return IMS_ERR_NOMEM;
    pthread_mutex_init(&rl->mu, NULL);
    return IMS_OK;
}

void server__rl_fini(struct server_rl *rl)
{
    if (rl->slots) {
        pthread_mutex_destroy(&rl->mu);
        ims_free(rl->slots);
        rl->slots = NULL;
    }
}

static uint64_t rl_hash(const char *s) { return ims_fnv1a64(s, strlen(s)); }

static double refilled(const struct server_rl *rl, const struct server_rl_slot *s, double now)
{
    double elapsed = now - s->last;
    return elapsed > 0 ? fmin(rl->burst, s->tokens + elapsed * rl->rate) : s->tokens;
}

bool server__rl_take(struct server_rl *rl, const char *client, double now, int *retry_after_s)
{
    if (!rl->slots)
        return true;
    char key[sizeof(rl->slots[0].key)];
    snprintf(key, sizeof(key), "%s", client);
    size_t base = (size_t)(rl_hash(key) % SERVER_RL_SLOTS);
    bool ok;
    pthread_mutex_lock(&rl->mu);
    struct server_rl_slot *slot = NULL, *victim = NULL;
    for (size_t i = 0; i < RL_PROBE; i++) {
        struct server_rl_slot *s = &rl->slots[(base + i) % SERVER_RL_SLOTS];
        if (s->key[0] && strcmp(s->key, key) == 0) {
            slot = s;
            break;
        }
        if (victim && victim->key[0] == '\0')
            continue; /* a free slot beats any reuse */
        if (s->key[0] == '\0' || refilled(rl, s, now) >= rl->burst)
            victim = s;
    }
    if (!slot && victim) {
        slot = victim;
        snprintf(slot->key, sizeof(slot->key), "%s", key);
        slot->tokens = rl->burst;
        slot->last = now;
    }
    if (!slot) {
        slot = &rl->overflow;
        atomic_fetch_add(&rl->n_overflow, 1);
    }
    slot->tokens = refilled(rl, slot, now);
    slot->last = now;
    if (slot->tokens >= 1.0) {
        slot->tokens -= 1.0;
        ok = true;
    } else {
        double wait = (1.0 - slot->tokens) / rl->rate;
        double secs = ceil(wait);
        *retry_after_s = secs < 1.0 ? 1 : secs > 86400.0 ? 86400 : (int)secs;
        ok = false;
    }
    pthread_mutex_unlock(&rl->mu);
    return ok;
}
