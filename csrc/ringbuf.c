/*
 * ringbuf.c - the bounded token FIFO described in ringbuf.h.
 *
 * Memory ordering: the slots, head and tail are only ever touched with `lock`
 * held, and the mutex's own acquire (lock) / release (unlock) orders them. The
 * two atomics below exist only so that ring_len and ring_is_closed can answer
 * without the lock. Each is written under the lock and publishes no other
 * memory: a lock-free reader never goes on to read a slot on the strength of
 * what it saw. So every atomic access is relaxed and there are no
 * acquire/release pairs to match, by design; adding a lock-free read of the
 * slots would change that.
 */
#define _POSIX_C_SOURCE 200809L

#include "ringbuf.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct ring {
    pthread_mutex_t lock;
    pthread_cond_t not_empty; /* pop_n waits here; a push that stores signals it */
    pthread_cond_t not_full;  /* BLOCK push_n and wait_not_full wait here; a pop broadcasts */
    uint64_t mask;            /* capacity - 1; immutable after ring_new */
    uint64_t head;            /* guarded by lock: position of the next push */
    uint64_t tail;            /* guarded by lock: position of the next pop */
    unsigned pop_waiters;     /* guarded by lock: threads inside wait on not_empty */
    unsigned push_waiters;    /* guarded by lock: threads inside wait on not_full */
    bool closed;              /* guarded by lock: the authoritative closed flag */
    /* Relaxed: a lock-free copy of head - tail for ring_len; nothing is read through it. */
    _Atomic uint64_t length;
    /* Relaxed: a lock-free copy of `closed` for ring_is_closed; set once, never cleared. */
    _Atomic int closed_hint;
    ring_stats_t counters; /* guarded by lock; length and capacity filled in by ring_stats */
    uint64_t slots[];      /* guarded by lock */
};

static uint64_t min_u64(uint64_t a, uint64_t b) { return a < b ? a : b; }

static uint64_t round_up_pow2(uint64_t v)
{
    /* Smear the highest set bit of v - 1 rightwards, then add one. v >= 1. */
    v--;
    v |= v >> 1;
    v |= v >> 2;
    v |= v >> 4;
    v |= v >> 8;
    v |= v >> 16;
    v |= v >> 32;
    return v + 1;
}

static uint64_t capacity_of(const struct ring *r) { return r->mask + 1; }

/* Unsigned subtraction keeps this exact when head has wrapped past 2^64 and tail has not. */
static uint64_t used_of(const struct ring *r) { return r->head - r->tail; }

/* Copy n tokens into the slots starting at position pos; the run may wrap the array end. */
static void copy_in(struct ring *r, uint64_t pos, const uint64_t *src, uint64_t n)
{
    uint64_t off = pos & r->mask;
    uint64_t first = min_u64(n, capacity_of(r) - off);
    memcpy(&r->slots[off], src, first * sizeof *src);
    memcpy(&r->slots[0], src + first, (n - first) * sizeof *src);
}

/* Copy n tokens out of the slots starting at position pos; the run may wrap the array end. */
static void copy_out(const struct ring *r, uint64_t pos, uint64_t *dst, uint64_t n)
{
    uint64_t off = pos & r->mask;
    uint64_t first = min_u64(n, capacity_of(r) - off);
    memcpy(dst, &r->slots[off], first * sizeof *dst);
    memcpy(dst + first, &r->slots[0], (n - first) * sizeof *dst);
}

/* Publish the new length after head or tail moved; called with lock held. */
static void update_length(struct ring *r)
{
    uint64_t used = used_of(r);
    if (used > r->counters.high_water)
        r->counters.high_water = used;
    /* Relaxed: a snapshot for ring_len; the mutex orders everything else. */
    atomic_store_explicit(&r->length, used, memory_order_relaxed);
}

/* Store n tokens at head (they fit) and wake consumers; called with lock held. */
static void store(struct ring *r, const uint64_t *tokens, uint64_t n)
{
    if (n == 0)
        return;
    copy_in(r, r->head, tokens, n);
    r->head += n;
    r->counters.enqueued += n;
    update_length(r);
    /* One new token can satisfy one consumer; more may satisfy several. */
    if (r->pop_waiters > 0) {
        if (n == 1)
            pthread_cond_signal(&r->not_empty);
        else
            pthread_cond_broadcast(&r->not_empty);
    }
}

/* Drop the n tokens at tail (already read) and wake producers; called with lock held. */
static void release(struct ring *r, uint64_t n)
{
    if (n == 0)
        return;
    r->tail += n;
    r->counters.dequeued += n;
    update_length(r);
    /* Broadcast, not signal: a wait_not_full waiter consumes no slot, so a
     * signal that woke only it could leave a blocked producer asleep beside
     * free room. */
    if (r->push_waiters > 0)
        pthread_cond_broadcast(&r->not_full);
}

/* Turn a relative timeout into an absolute CLOCK_MONOTONIC deadline. */
static void deadline_after(int64_t timeout_ns, struct timespec *deadline)
{
    clock_gettime(CLOCK_MONOTONIC, deadline);
    deadline->tv_sec += (time_t)(timeout_ns / 1000000000);
    deadline->tv_nsec += (long)(timeout_ns % 1000000000);
    if (deadline->tv_nsec >= 1000000000) {
        deadline->tv_sec += 1;
        deadline->tv_nsec -= 1000000000;
    }
}

/*
 * Wait once on cv (lock held). Returns 0 when woken, so the caller re-checks
 * its predicate; 1 when the deadline has passed; or a negative errno. The
 * caller checks its predicate before looking at a timeout, so a wake-up that
 * races with the deadline is never lost.
 */
static int wait_once(struct ring *r, pthread_cond_t *cv, unsigned *waiters,
                     const struct timespec *deadline)
{
    int rc;
    (*waiters)++;
    if (deadline == NULL)
        rc = pthread_cond_wait(cv, &r->lock);
    else
        rc = pthread_cond_timedwait(cv, &r->lock, deadline);
    (*waiters)--;
    if (rc == ETIMEDOUT)
        return 1;
    return -rc;
}

static int init_sync(struct ring *r)
{
    pthread_condattr_t attr;
    int rc = pthread_condattr_init(&attr);
    if (rc != 0)
        return -rc;
    /* Monotonic, so a wall-clock jump neither cuts nor stretches a timeout. */
    rc = pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    if (rc == 0 && (rc = pthread_mutex_init(&r->lock, NULL)) == 0) {
        if ((rc = pthread_cond_init(&r->not_empty, &attr)) == 0) {
            if ((rc = pthread_cond_init(&r->not_full, &attr)) != 0)
                pthread_cond_destroy(&r->not_empty);
        }
        if (rc != 0)
            pthread_mutex_destroy(&r->lock);
    }
    pthread_condattr_destroy(&attr);
    return -rc;
}

int ring_new_at(uint64_t capacity, uint64_t start_pos, ring_t **out)
{
    struct ring *r;
    uint64_t slots;
    int rc;

    if (out == NULL || capacity == 0 || capacity > RING_MAX_CAPACITY)
        return -EINVAL;
    slots = round_up_pow2(capacity);
    if (slots > (SIZE_MAX - sizeof *r) / sizeof r->slots[0])
        return -ENOMEM; /* only reachable where size_t is 32 bits */
    r = calloc(1, sizeof *r + (size_t)slots * sizeof r->slots[0]);
    if (r == NULL)
        return -ENOMEM;
    rc = init_sync(r);
    if (rc != 0) {
        free(r);
        return rc;
    }
    r->mask = slots - 1;
    r->head = start_pos;
    r->tail = start_pos;
    atomic_init(&r->length, 0);
    atomic_init(&r->closed_hint, 0);
    *out = r;
    return 0;
}

int ring_new(uint64_t capacity, ring_t **out) { return ring_new_at(capacity, 0, out); }

void ring_free(ring_t *r)
{
    if (r == NULL)
        return;
    pthread_cond_destroy(&r->not_full);
    pthread_cond_destroy(&r->not_empty);
    pthread_mutex_destroy(&r->lock);
    free(r);
}

/* DROP_OLDEST: evict from tail until the batch fits; every token is either stored or handed back. */
static uint64_t push_drop_oldest(struct ring *r, const uint64_t *tokens, uint64_t n,
                                 uint64_t *out_dropped, size_t *out_dropped_n)
{
    uint64_t cap = capacity_of(r);
    uint64_t used = used_of(r);
    uint64_t keep = min_u64(n, cap);                        /* the newest `keep` new tokens */
    uint64_t evict = used + keep > cap ? used + keep - cap : 0; /* <= used, as keep <= cap */
    uint64_t skipped = n - keep; /* new tokens that are older than the newest `cap` */

    copy_out(r, r->tail, out_dropped, evict);
    r->tail += evict;
    memcpy(out_dropped + evict, tokens, skipped * sizeof *tokens);
    *out_dropped_n = (size_t)(evict + skipped);
    r->counters.dropped += evict + skipped;
    store(r, tokens + skipped, keep);
    return keep;
}

/* BLOCK: store what fits, then wait for room; stops on timeout or close. Returns the count stored. */
static uint64_t push_block(struct ring *r, const uint64_t *tokens, uint64_t n, int64_t timeout_ns,
                           int *err)
{
    struct timespec deadline;
    bool timed_out = false;
    uint64_t stored = 0;

    if (timeout_ns > 0)
        deadline_after(timeout_ns, &deadline);
    for (;;) {
        /* Checked before storing: a close that woke this wait must not let it store more. */
        if (r->closed) {
            *err = -EPIPE; /* reported only if nothing was stored */
            return stored;
        }
        uint64_t k = min_u64(capacity_of(r) - used_of(r), n - stored);
        store(r, tokens + stored, k);
        stored += k;
        if (stored == n)
            return stored;
        if (timeout_ns == 0 || timed_out) {
            r->counters.rejected += n - stored;
            return stored;
        }
        int rc = wait_once(r, &r->not_full, &r->push_waiters, timeout_ns > 0 ? &deadline : NULL);
        if (rc < 0) {
            *err = rc;
            return stored;
        }
        timed_out = rc == 1;
    }
}

int64_t ring_push_n(ring_t *r, const uint64_t *tokens, size_t n, int policy, int64_t timeout_ns,
                    uint64_t *out_dropped, size_t *out_dropped_n)
{
    uint64_t stored = 0, handed_back_n = 0;
    int err = 0;

    if (r == NULL || (n > 0 && tokens == NULL) || (out_dropped != NULL && out_dropped_n == NULL))
        return -EINVAL;
    if (policy == RING_DROP_OLDEST && n > 0 && out_dropped == NULL)
        return -EINVAL; /* evicted tokens must go somewhere: nothing disappears silently */
    if (policy < RING_BLOCK || policy > RING_REJECT)
        return -EINVAL;
    if (out_dropped_n != NULL)
        *out_dropped_n = 0;

    pthread_mutex_lock(&r->lock);
    if (r->closed || n == 0) {
        int64_t rc = r->closed ? -EPIPE : 0; /* n == 0 touches no buffer */
        pthread_mutex_unlock(&r->lock);
        return rc;
    }
    switch (policy) {
    case RING_BLOCK:
        stored = push_block(r, tokens, n, timeout_ns, &err);
        break;
    case RING_DROP_NEWEST:
        stored = min_u64(capacity_of(r) - used_of(r), n);
        store(r, tokens, stored);
        r->counters.dropped += n - stored;
        break;
    case RING_REJECT:
        stored = n <= capacity_of(r) - used_of(r) ? n : 0;
        store(r, tokens, stored);
        r->counters.rejected += n - stored;
        break;
    case RING_DROP_OLDEST: {
        size_t dropped_n = 0;
        stored = push_drop_oldest(r, tokens, n, out_dropped, &dropped_n);
        handed_back_n = dropped_n;
        break;
    }
    }
    pthread_mutex_unlock(&r->lock);

    /* For the prefix policies the tokens handed back are exactly tokens[stored .. n). */
    if (policy != RING_DROP_OLDEST && out_dropped != NULL) {
        handed_back_n = n - stored;
        memcpy(out_dropped, tokens + stored, handed_back_n * sizeof *tokens);
    }
    if (out_dropped_n != NULL)
        *out_dropped_n = (size_t)handed_back_n;
    if (err != 0 && stored == 0)
        return err;
    return (int64_t)stored;
}

/*
 * Lock the ring and wait up to timeout_ns until it holds a token. Returns 1
 * with the lock held when there is one; otherwise unlocks and returns 0
 * (timeout, or max is 0), -EPIPE (closed and empty) or another negative errno.
 */
static int lock_when_not_empty(struct ring *r, size_t max, int64_t timeout_ns)
{
    struct timespec deadline;
    bool timed_out = false;

    if (timeout_ns > 0)
        deadline_after(timeout_ns, &deadline);
    pthread_mutex_lock(&r->lock);
    while (used_of(r) == 0) {
        int rc = 0;
        if (r->closed)
            rc = -EPIPE;
        else if (max == 0 || timeout_ns == 0 || timed_out)
            rc = 0;
        else if ((rc = wait_once(r, &r->not_empty, &r->pop_waiters,
                                 timeout_ns > 0 ? &deadline : NULL)) >= 0) {
            timed_out = rc == 1;
            continue;
        }
        pthread_mutex_unlock(&r->lock);
        return rc;
    }
    return 1;
}

int64_t ring_pop_n(ring_t *r, uint64_t *out, size_t max, int64_t timeout_ns)
{
    uint64_t k;

    if (r == NULL || (max > 0 && out == NULL))
        return -EINVAL;
    int rc = lock_when_not_empty(r, max, timeout_ns);
    if (rc <= 0)
        return rc;
    k = min_u64(used_of(r), max);
    copy_out(r, r->tail, out, k);
    release(r, k);
    pthread_mutex_unlock(&r->lock);
    return (int64_t)k;
}

int64_t ring_pop_runs(ring_t *r, uint64_t *out, size_t max, int64_t timeout_ns)
{
    uint64_t k, runs = 0, last = 0;

    if (r == NULL || (max > 0 && out == NULL))
        return -EINVAL;
    int rc = lock_when_not_empty(r, max, timeout_ns);
    if (rc <= 0)
        return rc;
    k = min_u64(used_of(r), max);
    for (uint64_t i = 0; i < k; i++) {
        uint64_t token = r->slots[(r->tail + i) & r->mask];
        bool extends = runs > 0 && token == last + 1 &&
                       token >> RING_BATCH_SHIFT == out[2 * (runs - 1)] >> RING_BATCH_SHIFT;
        if (extends) {
            out[2 * runs - 1]++;
        } else {
            out[2 * runs] = token;
            out[2 * runs + 1] = 1;
            runs++;
        }
        last = token;
    }
    release(r, k);
    pthread_mutex_unlock(&r->lock);
    return (int64_t)runs;
}

int64_t ring_push_seq(ring_t *r, uint64_t first, size_t n, int policy, int64_t timeout_ns,
                      uint64_t *out_dropped, size_t *out_dropped_n)
{
    uint64_t on_stack[256];
    uint64_t *tokens = on_stack;
    int64_t rc;

    if (n == 0)
        return ring_push_n(r, NULL, 0, policy, timeout_ns, out_dropped, out_dropped_n);
    if (n > sizeof on_stack / sizeof on_stack[0] && (tokens = malloc(n * sizeof *tokens)) == NULL)
        return -ENOMEM;
    for (size_t i = 0; i < n; i++)
        tokens[i] = first + i;
    rc = ring_push_n(r, tokens, n, policy, timeout_ns, out_dropped, out_dropped_n);
    if (tokens != on_stack)
        free(tokens);
    return rc;
}

int ring_push_one(ring_t *r, uint64_t token, int policy, int64_t timeout_ns)
{
    uint64_t handed_back;
    size_t handed_back_n;

    if (policy == RING_DROP_OLDEST)
        return -EINVAL;
    /* A real buffer, not NULL: the compiler cannot see that DROP_OLDEST was ruled out. */
    return (int)ring_push_n(r, &token, 1, policy, timeout_ns, &handed_back, &handed_back_n);
}

int64_t ring_pop_one(ring_t *r, int64_t timeout_ns)
{
    uint64_t token;
    int64_t rc = ring_pop_n(r, &token, 1, timeout_ns);
    if (rc == 1)
        return (int64_t)token;
    return rc == 0 ? -ETIMEDOUT : rc;
}

int64_t ring_wait_not_full(ring_t *r, int64_t timeout_ns)
{
    struct timespec deadline;
    bool timed_out = false;
    int64_t result;

    if (r == NULL)
        return -EINVAL;
    if (timeout_ns > 0)
        deadline_after(timeout_ns, &deadline);

    pthread_mutex_lock(&r->lock);
    for (;;) {
        if (r->closed) {
            result = -EPIPE;
            break;
        }
        if (used_of(r) < capacity_of(r)) {
            result = (int64_t)(capacity_of(r) - used_of(r));
            break;
        }
        if (timeout_ns == 0 || timed_out) {
            result = 0;
            break;
        }
        int rc = wait_once(r, &r->not_full, &r->push_waiters, timeout_ns > 0 ? &deadline : NULL);
        if (rc < 0) {
            result = rc;
            break;
        }
        timed_out = rc == 1;
    }
    pthread_mutex_unlock(&r->lock);
    return result;
}

int ring_close(ring_t *r)
{
    if (r == NULL)
        return -EINVAL;
    pthread_mutex_lock(&r->lock);
    r->closed = true;
    /* Relaxed: a lock-free copy for ring_is_closed; waiters learn of the close under the lock. */
    atomic_store_explicit(&r->closed_hint, 1, memory_order_relaxed);
    pthread_cond_broadcast(&r->not_empty);
    pthread_cond_broadcast(&r->not_full);
    pthread_mutex_unlock(&r->lock);
    return 0;
}

uint64_t ring_len(const ring_t *r)
{
    /* Relaxed: a snapshot; the caller takes nothing from the slots on the strength of it. */
    return atomic_load_explicit(&r->length, memory_order_relaxed);
}

int ring_is_closed(const ring_t *r)
{
    /* Relaxed: a snapshot; push and pop re-read the flag under the lock. */
    return atomic_load_explicit(&r->closed_hint, memory_order_relaxed);
}

uint64_t ring_capacity(const ring_t *r) { return capacity_of(r); }

int ring_stats(ring_t *r, ring_stats_t *out)
{
    if (r == NULL || out == NULL)
        return -EINVAL;
    pthread_mutex_lock(&r->lock);
    *out = r->counters;
    out->length = used_of(r);
    out->capacity = capacity_of(r);
    pthread_mutex_unlock(&r->lock);
    return 0;
}
