/*
 * stress.c - many producers and consumers hammer one ring; every token must come
 * out exactly once, either delivered by pop_n or handed back by push_n.
 *
 * Built by tests/unit/test_ring_sanitize.py with ASan/UBSan and run under
 * valgrind; it is plain C so the sanitizers see the ring without Python.
 *
 *   cc -O1 -g -std=c11 -pthread -Wall -Wextra -Werror ringbuf.c stress.c -o stress
 *   ./stress [tokens_per_producer]      exit 0 = all checks passed
 */
#define _POSIX_C_SOURCE 200809L

#include "ringbuf.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PRODUCERS 4
#define CONSUMERS 3
#define MAX_BATCH 37 /* odd, so batches straddle the array end at varying offsets */
/* Tokens start just below a batch-number boundary, so pop_runs must split runs there. */
#define FIRST_TOKEN ((UINT64_C(1) << RING_BATCH_SHIFT) - 1000)

struct run {
    ring_t *ring;
    int policy;
    uint64_t per_producer;
    _Atomic uint8_t *seen;             /* one count per token; each must end at exactly 1 */
    _Atomic uint64_t handed_back;      /* tokens push_n returned to producers */
    _Atomic uint64_t delivered;        /* tokens pop_n returned to consumers */
};

struct producer {
    struct run *run;
    uint64_t first; /* tokens first .. first + per_producer - 1 */
};

static int failures;

#define CHECK(cond, ...)                                                                       \
    do {                                                                                       \
        if (!(cond)) {                                                                         \
            fprintf(stderr, "stress: FAILED %s:%d: ", __FILE__, __LINE__);                     \
            fprintf(stderr, __VA_ARGS__);                                                      \
            fputc('\n', stderr);                                                               \
            failures++;                                                                        \
        }                                                                                      \
    } while (0)

static void mark(struct run *run, const uint64_t *tokens, uint64_t n)
{
    for (uint64_t i = 0; i < n; i++)
        atomic_fetch_add_explicit(&run->seen[tokens[i] - FIRST_TOKEN], 1, memory_order_relaxed);
}

/* Mark the tokens of runs (first, length) and check that no run crosses a batch number. */
static uint64_t mark_runs(struct run *run, const uint64_t *runs, int64_t n_runs)
{
    uint64_t total = 0;
    for (int64_t i = 0; i < n_runs; i++) {
        uint64_t first = runs[2 * i], len = runs[2 * i + 1];
        if (len == 0 || first >> RING_BATCH_SHIFT != (first + len - 1) >> RING_BATCH_SHIFT) {
            fprintf(stderr, "stress: bad run %" PRIu64 "+%" PRIu64 "\n", first, len);
            abort();
        }
        for (uint64_t t = first; t < first + len; t++)
            mark(run, &t, 1);
        total += len;
    }
    return total;
}

static void *produce(void *arg)
{
    struct producer *p = arg;
    struct run *run = p->run;
    uint64_t tokens[MAX_BATCH], dropped[MAX_BATCH];
    uint64_t next = p->first, end = p->first + run->per_producer;
    unsigned batch = (unsigned)(p->first % MAX_BATCH) + 1;

    while (next < end) {
        uint64_t n = end - next < batch ? end - next : batch;
        size_t dropped_n = 0;
        int64_t rc;
        if (batch % 2 == 0) { /* alternate the two ways of pushing a batch */
            rc = ring_push_seq(run->ring, next, n, run->policy, -1, dropped, &dropped_n);
        } else {
            for (uint64_t i = 0; i < n; i++)
                tokens[i] = next + i;
            rc = ring_push_n(run->ring, tokens, n, run->policy, -1, dropped, &dropped_n);
        }
        if (rc < 0) {
            fprintf(stderr, "stress: push_n returned %" PRId64 "\n", rc);
            abort();
        }
        mark(run, dropped, dropped_n);
        atomic_fetch_add(&run->handed_back, dropped_n);
        /* A BLOCK push waits forever, so it stores everything. */
        if (run->policy == RING_BLOCK && (uint64_t)rc != n) {
            fprintf(stderr, "stress: BLOCK stored %" PRId64 " of %" PRIu64 "\n", rc, n);
            abort();
        }
        next += n;
        batch = batch % MAX_BATCH + 1;
    }
    return NULL;
}

static void *consume(void *arg)
{
    struct run *run = arg;
    uint64_t out[2 * MAX_BATCH];
    size_t max = 1;

    for (;;) {
        bool as_runs = max % 3 == 0; /* alternate the two ways of popping */
        int64_t rc = as_runs ? ring_pop_runs(run->ring, out, max, 50 * 1000 * 1000)
                             : ring_pop_n(run->ring, out, max, 50 * 1000 * 1000);
        if (rc == -EPIPE)
            return NULL; /* closed and drained */
        if (rc < 0) {
            fprintf(stderr, "stress: pop returned %" PRId64 "\n", rc);
            abort();
        }
        uint64_t taken = (uint64_t)rc;
        if (as_runs)
            taken = mark_runs(run, out, rc);
        else
            mark(run, out, taken);
        atomic_fetch_add(&run->delivered, taken);
        max = max % MAX_BATCH + 1;
    }
}

static void run_policy(int policy, uint64_t capacity, uint64_t start_pos, uint64_t per_producer)
{
    struct run run = {.policy = policy, .per_producer = per_producer};
    struct producer producers[PRODUCERS];
    pthread_t pt[PRODUCERS], ct[CONSUMERS];
    uint64_t total = PRODUCERS * per_producer;
    ring_stats_t st;

    CHECK(ring_new_at(capacity, start_pos, &run.ring) == 0, "ring_new_at");
    run.seen = calloc(total, sizeof *run.seen);
    CHECK(run.seen != NULL, "calloc");
    atomic_init(&run.handed_back, 0);
    atomic_init(&run.delivered, 0);

    for (int i = 0; i < CONSUMERS; i++)
        pthread_create(&ct[i], NULL, consume, &run);
    for (int i = 0; i < PRODUCERS; i++) {
        producers[i] = (struct producer){.run = &run, .first = FIRST_TOKEN + (uint64_t)i * per_producer};
        pthread_create(&pt[i], NULL, produce, &producers[i]);
    }
    for (int i = 0; i < PRODUCERS; i++)
        pthread_join(pt[i], NULL);
    ring_close(run.ring); /* consumers drain what is left, then see -EPIPE */
    for (int i = 0; i < CONSUMERS; i++)
        pthread_join(ct[i], NULL);

    for (uint64_t t = 0; t < total; t++)
        CHECK(run.seen[t] == 1, "policy %d: token %" PRIu64 " seen %u times", policy, t + FIRST_TOKEN,
              (unsigned)run.seen[t]);
    ring_stats(run.ring, &st);
    CHECK(st.length == 0 && ring_len(run.ring) == 0, "policy %d: not drained", policy);
    CHECK(st.dequeued == run.delivered, "policy %d: dequeued %" PRIu64 " != %" PRIu64, policy,
          st.dequeued, (uint64_t)run.delivered);
    CHECK(st.dropped + st.rejected == run.handed_back, "policy %d: handed back mismatch",
          policy);
    CHECK(run.delivered + run.handed_back == total, "policy %d: lost tokens", policy);
    CHECK(st.high_water <= st.capacity, "policy %d: high water over capacity", policy);
    free(run.seen);
    ring_free(run.ring);
}

static void *pop_forever(void *arg)
{
    uint64_t out[1];
    return (void *)(intptr_t)ring_pop_n(arg, out, 1, -1);
}

static void *push_forever(void *arg)
{
    uint64_t token = 7;
    return (void *)(intptr_t)ring_push_n(arg, &token, 1, RING_BLOCK, -1, NULL, NULL);
}

/* close() must wake a consumer blocked on an empty ring and a producer on a full one. */
static void close_wakes_waiters(void)
{
    ring_t *empty, *full;
    pthread_t c, p;
    void *rc_c, *rc_p;
    uint64_t token = 1;

    ring_new(1, &empty);
    ring_new(1, &full);
    ring_push_n(full, &token, 1, RING_BLOCK, 0, NULL, NULL);
    pthread_create(&c, NULL, pop_forever, empty);
    pthread_create(&p, NULL, push_forever, full);
    /* Let both reach their wait; close is correct even if they have not yet. */
    struct timespec pause = {0, 20 * 1000 * 1000};
    nanosleep(&pause, NULL);
    ring_close(empty);
    ring_close(full);
    pthread_join(c, &rc_c);
    pthread_join(p, &rc_p);
    CHECK((intptr_t)rc_c == -EPIPE, "blocked pop returned %" PRIdPTR, (intptr_t)rc_c);
    CHECK((intptr_t)rc_p == -EPIPE, "blocked push returned %" PRIdPTR, (intptr_t)rc_p);
    ring_free(empty);
    ring_free(full);
}

int main(int argc, char **argv)
{
    uint64_t per_producer = argc > 1 ? strtoull(argv[1], NULL, 10) : 100000;
    const uint64_t starts[] = {0, (UINT64_C(1) << 32) - 500, UINT64_MAX - 500};

    for (int policy = RING_BLOCK; policy <= RING_REJECT; policy++)
        for (size_t s = 0; s < sizeof starts / sizeof starts[0]; s++)
            run_policy(policy, 48, starts[s], per_producer);
    close_wakes_waiters();
    if (failures == 0)
        printf("stress: ok (%d policies x 3 start positions, %" PRIu64 " tokens each)\n",
               RING_REJECT + 1, PRODUCERS * per_producer);
    return failures == 0 ? 0 : 1;
}
